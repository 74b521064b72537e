/*
 * shards/shard.c - a shard's thread: start-up on its own core and the reactor
 * loop.
 *
 * One turn of the loop:
 *   1. reap I/O completions (and submit what was queued)  rv_io_poll
 *   2. run ready local tasks                              rv_msg_run_tasks
 *   3. drain inbound mailboxes and outside submissions    rv_msg_drain
 *   4. run expired timers                                 rv_timers_run
 *   5. flush outbound mailboxes (publish, wake peers)     rv_msg_flush
 * A turn that found work starts the next one at once. An idle shard keeps
 * polling for poll_us (waking a sleeping core costs tens of microseconds),
 * then announces that it sleeps, checks its inbound side once more and sleeps
 * in the backend until a completion, a peer's signal or the next timer.
 *
 *   RUNNING --rv_runtime_close--> CLOSING (drain until the runtime is quiet)
 *           --close sees quiet--> EXIT (leave the loop, release, thread ends)
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/ctx.h"
#include "core/err.h"
#include "core/topo.h"
#include "core/trace.h"
#include "shards/shard_impl.h"

static _Thread_local struct rv_shard *shard_tls;

struct rv_shard *rv_shard_current(void)
{
    return shard_tls;
}

static int shard_init(struct rv_shard *s)
{
    const struct rv_runtime_config *cfg = &s->rt->cfg;
    int rc = rv_topo_pin_self((unsigned)s->cpu);
    if (rc < 0)
        return rv_errf(rc, "shard %u: pin to cpu %d", s->id, s->cpu);
    /* Best effort: memory policy only; a failure costs locality, not correctness. */
    if (rv_topo_prefer_node(s->node) < 0)
        rv_debug("shard %u: cannot prefer numa node %d", s->id, s->node);
    rc = rv_io_init(&s->io, cfg->io_backend, cfg->io_depth, s->wake_fd);
    if (rc < 0)
        return rc;
    struct rv_pool_opts po = {
        .owner_shard = (int)s->id,
        .bytes_max = (size_t)cfg->pool_bytes,
        .numa_node = s->node,
    };
    rc = rv_pool_create(&s->pool, &po);
    if (rc < 0)
        goto err_io;
    rc = rv_msg_init(s);
    if (rc < 0)
        goto err_pool;
    rv_timers_init(&s->timers);
    return 0;

err_pool:
    rv_pool_destroy(s->pool);
    s->pool = NULL;
err_io:
    rv_io_fini(&s->io);
    return rc;
}

static void shard_fini(struct rv_shard *s)
{
    rv_timers_fini(&s->timers);
    rv_msg_fini(s);
    rv_pool_destroy(s->pool);
    s->pool = NULL;
    rv_io_fini(&s->io);
}

static bool shard_is_locally_quiet(struct rv_shard *s)
{
    return s->task_len == 0 && !rv_msg_has_outbound(s) && s->io.inflight == 0 &&
           s->io.done_head == NULL && s->offload_inflight == 0;
}

/* Sleep in the backend unless something arrived after the announcement. */
static void shard_try_sleep(struct rv_shard *s, uint64_t now_ns)
{
    atomic_store_explicit(&s->sleeping, 1, memory_order_relaxed);
    /* seq_cst fence: our flag store is ordered before the ring reads below
     * (pairs with the fence in rv_shard_wake). */
    atomic_thread_fence(memory_order_seq_cst);
    if (rv_msg_has_inbound(s) || atomic_load(&s->rt->state) == RV_RT_EXIT) {
        atomic_store_explicit(&s->sleeping, 0, memory_order_relaxed);
        return;
    }
    uint64_t deadline = rv_timers_next_deadline(&s->timers);
    uint64_t timeout =
        deadline == UINT64_MAX ? UINT64_MAX : (deadline > now_ns ? deadline - now_ns : 0);
    atomic_store_explicit(&s->turn_start_ns, 0, memory_order_relaxed);
    rv_shard_count_add(&s->stats.sleeps, 1);
    int done = rv_io_wait(&s->io, timeout);
    atomic_store_explicit(&s->sleeping, 0, memory_order_relaxed);
    if (done > 0)
        rv_shard_count_add(&s->stats.io_completed, (uint64_t)done);
}

static uint32_t shard_turn(struct rv_shard *s, uint64_t now_ns)
{
    uint32_t work = 0;
    int done = rv_io_poll(&s->io);
    if (done > 0) {
        rv_shard_count_add(&s->stats.io_completed, (uint64_t)done);
        work += (uint32_t)done;
    }
    work += rv_msg_run_tasks(s);
    work += rv_msg_drain(s);
    uint32_t fired = rv_timers_run(&s->timers, now_ns);
    if (fired > 0) {
        rv_shard_count_add(&s->stats.timers_fired, fired);
        work += fired;
    }
    rv_msg_flush(s);
    return work;
}

static void shard_check_stall(struct rv_shard *s, uint64_t start_ns)
{
    uint64_t stall_ns = (uint64_t)s->rt->cfg.stall_ms * 1000000ull;
    if (stall_ns == 0)
        return; /* no clock read when the detector is off */
    uint64_t took = rv_clock_now_ns() - start_ns;
    if (took <= stall_ns)
        return;
    rv_shard_count_add(&s->stats.stalls, 1);
    rv_warn("reactor stall: loop turn took %llu us (threshold %u ms)",
            (unsigned long long)(took / 1000), s->rt->cfg.stall_ms);
}

static void shard_loop(struct rv_shard *s)
{
    uint64_t poll_ns = (uint64_t)s->rt->cfg.poll_us * 1000ull;
    uint64_t idle_since = 0;
    while (atomic_load_explicit(&s->rt->state, memory_order_acquire) != RV_RT_EXIT) {
        uint64_t now = rv_clock_now_ns();
        atomic_store_explicit(&s->turn_start_ns, now, memory_order_relaxed);
        atomic_store_explicit(&s->turn_seq,
                              atomic_load_explicit(&s->turn_seq, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        /* A turn may do work, so it is not quiet: clear a quiet flag before
         * the turn moves any counter, or rv_runtime_close could pair the stale
         * flag with this turn's counters and take a write in flight for
         * quiet. The release fence orders the clear before those counter
         * stores for a reader that sees them (runtime_snapshot). Only on the
         * quiet-to-busy edge: a busy shard pays one relaxed load. */
        if (atomic_load_explicit(&s->is_quiet, memory_order_relaxed)) {
            atomic_store_explicit(&s->is_quiet, false, memory_order_relaxed);
            atomic_thread_fence(memory_order_release);
        }
        uint32_t work = shard_turn(s, now);
        rv_shard_count_add(&s->stats.loop_turns, 1);
        shard_check_stall(s, now);
        /* seq_cst: the counters above are visible before a quiet flag that
         * rv_runtime_close reads (see runtime_is_quiet). */
        atomic_store(&s->is_quiet, work == 0 && shard_is_locally_quiet(s));
        if (work > 0 || s->task_len > 0) {
            idle_since = 0;
            continue;
        }
        if (idle_since == 0)
            idle_since = now;
        /* Poll only while nothing but the mailboxes can wake us: with file I/O
         * in flight, sleeping in the ring lets the kernel's io-wq worker
         * (pinned to our CPU) run, and its completion wakes us anyway. Socket
         * requests do not count: they wait on peers (an accept or a receive is
         * in flight for as long as the server runs), not on io-wq. */
        bool is_polling = now - idle_since < poll_ns && s->io.inflight == s->io.sock_inflight;
        if (is_polling || rv_msg_has_outbound(s) || s->io.done_head != NULL) {
            rv_cpu_relax();
            continue;
        }
        shard_try_sleep(s, now);
        idle_since = 0;
    }
}

void *rv_shard_main(void *arg)
{
    struct rv_shard *s = arg;
    shard_tls = s;
    rv_ctx_set_shard_id((int)s->id);
    char name[16]; /* top -H and perf tell the shards apart (15 characters at most) */
    snprintf(name, sizeof(name), "rv-shard-%u", s->id);
    (void)pthread_setname_np(pthread_self(), name);
    s->start_rc = shard_init(s);
    if (s->start_rc < 0) {
        snprintf(s->start_msg, sizeof(s->start_msg), "%s", rv_err_msg());
        rv_error("shard %u failed to start: %s", s->id, s->start_msg);
    }
    pthread_barrier_wait(&s->rt->ready);
    pthread_barrier_wait(&s->rt->go);
    if (s->start_rc == 0) {
        if (!s->rt->is_start_failed) {
            rv_debug("shard %u running on cpu %d (node %d), io %s", s->id, s->cpu, s->node,
                     s->io.ops->name);
            shard_loop(s);
        }
        shard_fini(s);
    }
    shard_tls = NULL;
    rv_ctx_set_shard_id(-1);
    return NULL;
}
