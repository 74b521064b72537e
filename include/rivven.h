/*
 * rivven.h - the public interface of librivven, the embeddable rivven engine.
 *
 * rivven runs one pinned thread per core, a "shard", each with its own event
 * loop (io_uring, or epoll where io_uring is unavailable), its own memory and
 * its own data. Shards never share mutable state: work moves between them as
 * messages over lock-free mailboxes. An application opens a runtime, then runs
 * its own tasks on the shards (rv_runtime_submit), calls across shards
 * (rv_shard_call), sets timers and does file I/O without blocking a core.
 *
 * Threading: functions marked "shard only" must be called on a shard thread
 * (from a task, timer or completion callback). The others may be called from
 * any thread. Callbacks always run on a shard thread, never inside the call
 * that registered them.
 *
 * Errors: functions returning int give 0 (or a count) on success and a
 * negative errno on failure; rv_strerror() names it and rv_err_msg() holds a
 * sentence about the last failure on the calling thread.
 *
 * Build: cc app.c $(pkg-config --cflags --libs rivven)
 */
#ifndef RIVVEN_H
#define RIVVEN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RIVVEN_VERSION_MAJOR 0
#define RIVVEN_VERSION_MINOR 1
#define RIVVEN_VERSION_PATCH 0

/* ---- Errors -------------------------------------------------------------- */

/* "ENOSPC: No space left on device" for -ENOSPC. Never NULL. */
const char *rv_strerror(int err);
/* The message of the last failure on the calling thread ("" if none). */
const char *rv_err_msg(void);

/* ---- Runtime ------------------------------------------------------------- */

/* An open runtime: the shards, their threads and mailboxes. Opaque. */
typedef struct rv_runtime rv_runtime_t;

enum rv_io_backend {
    RV_IO_AUTO = 0,  /* io_uring when the kernel allows it, else epoll */
    RV_IO_URING = 1, /* io_uring only: open fails if unavailable */
    RV_IO_EPOLL = 2, /* the portable backend: epoll + plain syscalls */
};

struct rv_runtime_config {
    uint32_t shard_count;          /* 0: one per CPU of cpuset */
    const char *cpuset;            /* CPUs to run on, e.g. "0-3,8"; NULL: the process's */
    enum rv_io_backend io_backend; /* AUTO: env RIVVEN_IO_BACKEND=uring|epoll, else io_uring */
    const char *data_dir;          /* created if missing; must be writable; NULL: none */
    uint32_t poll_us;              /* busy-poll this long before sleeping (default 50) */
    uint32_t stall_ms;             /* report loop turns longer than this (default 25; 0 off) */
    uint32_t mailbox_slots;        /* messages per shard pair ring (default 4096, power of 2) */
    uint32_t io_depth;             /* in-flight file ops per shard (default 256) */
    uint64_t pool_bytes;           /* buffer pool budget per shard (default 64 MiB) */
    uint32_t offload_threads;      /* helper threads for blocking work (default 2, max 64) */
    bool allow_oversubscribe;      /* allow more shards than CPUs (tests only) */
};

/* Fill cfg with the defaults above. */
void rv_runtime_config_init(struct rv_runtime_config *cfg);

/*
 * Start the shards and return the runtime in *out. Errors (nothing is left
 * running and *out is untouched): -EINVAL for a bad cpuset, a shard count above
 * the CPUs of the cpuset (without allow_oversubscribe) or a bad option;
 * -EACCES/-EROFS/-ENOTDIR for an unusable data_dir; -ENOSYS when io_uring was
 * demanded but is unavailable; -EBUSY when this process already has a runtime
 * open; -ENOMEM. Any thread that is not a shard.
 */
int rv_runtime_open(rv_runtime_t **out, const struct rv_runtime_config *cfg);

/*
 * Stop the runtime: refuse new outside submissions, let the shards drain their
 * mailboxes, tasks and in-flight I/O until the whole runtime is quiet, then
 * join every thread and free everything. Timers not yet due are dropped
 * without running. NULL is a no-op. Not from a shard thread.
 */
void rv_runtime_close(rv_runtime_t *rt);

uint32_t rv_runtime_shard_count(const rv_runtime_t *rt);
/* The backend in use (never RV_IO_AUTO). */
enum rv_io_backend rv_runtime_io_backend(const rv_runtime_t *rt);
/* The CPU shard `shard` is pinned to. */
int rv_runtime_shard_cpu(const rv_runtime_t *rt, uint32_t shard);
/* The data directory, or NULL. */
const char *rv_runtime_data_dir(const rv_runtime_t *rt);
/* The calling thread's shard id, or -1 when it is not a shard. */
int rv_shard_self(void);

/* ---- Tasks and cross-shard calls ------------------------------------------ */

typedef void rv_task_fn(void *arg);

/*
 * Run fn(arg) on `shard` soon. From a shard this travels through the
 * mailbox (or the local task queue for the shard itself); from any other
 * thread through the shard's MPSC queue. -EINVAL for a bad shard, -ESHUTDOWN
 * once rv_runtime_close started (outside threads), -ENOMEM.
 */
int rv_runtime_submit(rv_runtime_t *rt, uint32_t shard, rv_task_fn *fn, void *arg);

/*
 * Shard only. Run fn(arg) on shard `target`, then reply(arg) back on the calling
 * shard (reply may be NULL). arg is the caller's: keep it alive until reply
 * runs. Calls to one target run in the order they were made, and so do their
 * replies. -EINVAL for a bad target or when not on a shard, -ENOMEM.
 */
int rv_shard_call(uint32_t target, rv_task_fn *fn, void *arg, rv_task_fn *reply);

/* ---- Timers (shard only) -------------------------------------------------- */

typedef uint64_t rv_timer_id;

/* Run fn(arg) on this shard after delay_us microseconds. Stores its id in
 * *out (may be NULL). -EINVAL when not on a shard, -ENOMEM. */
int rv_timer_add(uint64_t delay_us, rv_task_fn *fn, void *arg, rv_timer_id *out);
/* Cancel a timer of this shard that has not run. -ENOENT when it already ran,
 * was cancelled or never existed. */
int rv_timer_cancel(rv_timer_id id);

/* ---- Asynchronous file I/O (shard only) ----------------------------------- */

/* Completion: res is the syscall's result (bytes, a descriptor, 0) or -errno. */
typedef void rv_io_fn(void *arg, int64_t res);

/*
 * Each call queues one operation on the calling shard's I/O backend and returns
 * 0; cb(arg, res) runs later on the same shard. buf must stay valid until cb.
 * Errors at queue time (cb is then never called): -EINVAL when not on a shard,
 * -EAGAIN when io_depth operations are already in flight (backpressure),
 * -ESHUTDOWN after the shard stopped. A short read or write is reported as is.
 */
int rv_file_open(const char *path, int flags, mode_t mode, rv_io_fn *cb, void *arg);
int rv_file_read(int fd, void *buf, uint32_t len, uint64_t pos, rv_io_fn *cb, void *arg);
int rv_file_write(int fd, const void *buf, uint32_t len, uint64_t pos, rv_io_fn *cb, void *arg);
int rv_file_fdatasync(int fd, rv_io_fn *cb, void *arg);
int rv_file_fallocate(int fd, int mode, uint64_t pos, uint64_t len, rv_io_fn *cb, void *arg);
int rv_file_close(int fd, rv_io_fn *cb, void *arg);
/* Gather write: iov (iovcnt entries, <= IOV_MAX) and what it points to must stay
 * valid until cb. */
struct iovec;
int rv_file_writev(int fd, const struct iovec *iov, int iovcnt, uint64_t pos, rv_io_fn *cb,
                   void *arg);

/* ---- Blocking work off the shard ------------------------------------------ */

/*
 * Shard only. Run work(arg) on one of the runtime's helper threads (for calls
 * that may block: creating directories, opening files by name, renames,
 * fsyncing directories, a blocking client library), then done(arg) back on the
 * calling shard. A shard with offloaded work in flight counts as busy, so
 * rv_runtime_close waits for it. -EINVAL when not on a shard, -ENOMEM.
 */
int rv_offload(rv_task_fn *work, void *arg, rv_task_fn *done);

/* ---- Statistics ------------------------------------------------------------ */

struct rv_shard_stats {
    uint64_t loop_turns;    /* reactor loop iterations */
    uint64_t tasks_run;     /* local tasks, mailbox tasks, calls and replies */
    uint64_t msgs_sent;     /* mailbox messages sent to other shards */
    uint64_t msgs_received; /* mailbox and MPSC messages received */
    uint64_t wakeups_sent;  /* eventfd signals to sleeping peers */
    uint64_t sleeps;        /* times the shard slept in the kernel */
    uint64_t stalls;        /* loop turns longer than stall_ms */
    uint64_t io_completed;  /* file operations completed */
    uint64_t timers_fired;  /* timers that ran */
};

/* A snapshot of a shard's counters (any thread; values may be slightly stale).
 * -EINVAL for a bad shard. */
int rv_runtime_shard_stats(const rv_runtime_t *rt, uint32_t shard, struct rv_shard_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* RIVVEN_H */
