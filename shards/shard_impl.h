/*
 * shards/shard_impl.h - the layout of a shard and of a runtime, shared by the
 * files of shards/ (and its tests). Nothing outside shards/ looks inside.
 *
 * Ownership: a struct rv_shard belongs to its thread. Other threads touch only
 * the fields marked "shared", all atomics: the sleeping flag, the stall
 * watchdog's turn stamps, the quiescence flag and the statistics (written by
 * the owner with relaxed stores, read by anyone).
 *
 * Mailboxes: rt->rings[from * n + to] is the SPSC ring from shard `from` to
 * shard `to`; the owner of `from` is its only producer and the owner of `to` its
 * only consumer. A sender that finds a ring full parks messages in a private
 * overflow queue for that peer and retries at each flush, so no shard ever
 * blocks on another (two full rings in opposite directions cannot deadlock).
 */
#ifndef RV_SHARDS_SHARD_IMPL_H
#define RV_SHARDS_SHARD_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/assert.h"
#include "core/mpsc.h"
#include "core/pool.h"
#include "core/spsc.h"
#include "rivven.h"
#include "shards/io.h"
#include "shards/timer.h"

#define RV_SHARD_COUNT_MAX      256
#define RV_SHARD_TASKS_PER_TURN 1024 /* local tasks run per loop turn, at most */
#define RV_SHARD_MSGS_PER_PEER  256  /* messages taken from one peer per turn */
#define RV_SHARD_EXT_PER_TURN   256  /* outside submissions taken per turn */

enum rv_msg_kind {
    RV_MSG_TASK = 1, /* run fn(arg) */
    RV_MSG_CALL,     /* run fn(arg), then send RV_MSG_REPLY to origin */
    RV_MSG_REPLY,    /* run reply(arg) */
};

/* A mailbox message: a fixed 32-byte slot, copied into the ring. */
struct rv_msg {
    rv_task_fn *fn;
    void *arg;
    rv_task_fn *reply;
    uint32_t kind;   /* enum rv_msg_kind */
    uint32_t origin; /* shard that made the call */
};
RV_STATIC_ASSERT(sizeof(struct rv_msg) == 32);

/* A submission from a thread outside the runtime (malloc'd, freed by the shard). */
struct rv_ext_msg {
    struct rv_mpsc_node node;
    rv_task_fn *fn;
    void *arg;
};

/* What one shard sends to one peer. */
struct rv_outbox {
    struct rv_spsc *ring;    /* rt->rings[self * n + peer] */
    struct rv_msg *overflow; /* FIFO of messages that did not fit */
    uint32_t overflow_head;  /* first unsent */
    uint32_t overflow_len;   /* entries in use from overflow_head */
    uint32_t overflow_cap;
    bool is_dirty; /* committed but unpublished slots */
};

/* Statistics: written by the owner (relaxed load + store: a plain add), read
 * by anyone with relaxed loads. */
struct rv_shard_counters {
    _Atomic uint64_t loop_turns;
    _Atomic uint64_t tasks_run;
    _Atomic uint64_t msgs_sent;
    _Atomic uint64_t msgs_received;
    _Atomic uint64_t wakeups_sent;
    _Atomic uint64_t sleeps;
    _Atomic uint64_t stalls;
    _Atomic uint64_t io_completed;
    _Atomic uint64_t timers_fired;
};

struct rv_shard {
    uint32_t id;
    int cpu;  /* pinned CPU */
    int node; /* its NUMA node */
    rv_runtime_t *rt;
    pthread_t thread;
    int start_rc;        /* 0 or the -errno that stopped this shard's start */
    char start_msg[256]; /* and what rv_err_msg() said then (for rv_runtime_open's caller) */
    int wake_fd;         /* eventfd; created and closed by the runtime, outlives the thread */

    struct rv_io io;
    rv_pool_t *pool;
    struct rv_timers timers;

    /* Local task FIFO (ring buffer, grows by doubling). */
    struct rv_msg *tasks;
    uint32_t task_head;
    uint32_t task_len;
    uint32_t task_cap;

    struct rv_outbox *out; /* [shard_count] */
    uint32_t *dirty_peers; /* peers with work at the next flush */
    uint32_t dirty_count;

    struct rv_mpsc ext;        /* from threads outside the runtime */
    uint32_t offload_inflight; /* rv_offload jobs not yet back */
    uint32_t offload_next;     /* round-robin over helper threads */

    /* Shared: set just before sleeping in the kernel; a peer that publishes
     * and then sees it set clears it and signals io.wake_fd. */
    _Atomic int sleeping RV_ALIGNED_CACHE;
    /* Shared with the stall watchdog. */
    _Atomic uint64_t turn_start_ns RV_ALIGNED_CACHE; /* 0 while sleeping */
    _Atomic uint64_t turn_seq;
    /* Shared with rv_runtime_close: nothing local to do (see runtime.c). */
    _Atomic int is_quiet;
    struct rv_shard_counters stats;
};

enum rv_runtime_state {
    RV_RT_RUNNING = 0,
    RV_RT_CLOSING, /* no new outside submissions; shards drain */
    RV_RT_EXIT,    /* the runtime is quiet: leave the loop */
};

struct rv_runtime {
    struct rv_runtime_config cfg;
    char *data_dir;
    uint32_t n;
    struct rv_shard **shards; /* [n], each on its own cache lines */
    struct rv_spsc *rings;    /* [n * n] */
    _Atomic int state;        /* enum rv_runtime_state */
    _Atomic uint64_t ext_sent;
    pthread_barrier_t ready; /* every shard initialised (or failed) */
    pthread_barrier_t go;    /* the opener's verdict is in */
    bool is_start_failed;
    struct rv_offload_worker *offload; /* [offload_count] helper threads */
    uint32_t offload_count;
    pthread_t watchdog;
    bool has_watchdog;
    _Atomic int watchdog_stop;
};

/* The calling thread's shard, or NULL. */
struct rv_shard *rv_shard_current(void);

static inline void rv_shard_count_add(_Atomic uint64_t *c, uint64_t n)
{
    /* Single writer: a relaxed load and store compile to a plain add. */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* shard.c */
void *rv_shard_main(void *arg);
void rv_shard_wake(struct rv_shard *s);

/* offload.c */
struct rv_offload_worker;
RV_MUST_CHECK int rv_offload_start(rv_runtime_t *rt);
void rv_offload_stop(rv_runtime_t *rt);

/* runtime.c: queue fn(arg) on shard s from any thread, even while closing
 * (completions of work the runtime already accepted must still arrive). */
void rv_runtime_post_internal(rv_runtime_t *rt, struct rv_shard *s, rv_task_fn *fn, void *arg);

/* runtime.c: a request for one I/O operation of the calling shard (what names
 * the caller in the error); -EINVAL off a shard, -ESHUTDOWN, -EAGAIN when
 * io_depth operations are in flight. Then fill it and rv_shard_io_queue it. */
RV_MUST_CHECK int rv_shard_io_req(struct rv_io_req **out, enum rv_io_op op, int fd, rv_io_fn *cb,
                                  void *arg, const char *what);
RV_MUST_CHECK int rv_shard_io_queue(struct rv_io_req *req);

/* msg.c */
RV_MUST_CHECK int rv_msg_init(struct rv_shard *s);
void rv_msg_fini(struct rv_shard *s);
RV_MUST_CHECK int rv_msg_send(struct rv_shard *s, uint32_t target, const struct rv_msg *m);
RV_MUST_CHECK int rv_msg_task_push(struct rv_shard *s, const struct rv_msg *m);
uint32_t rv_msg_run_tasks(struct rv_shard *s);
uint32_t rv_msg_drain(struct rv_shard *s);
void rv_msg_flush(struct rv_shard *s);
bool rv_msg_has_inbound(struct rv_shard *s);
bool rv_msg_has_outbound(const struct rv_shard *s);

#endif /* RV_SHARDS_SHARD_IMPL_H */
