/*
 * shards/runtime.c - the embedding API of rivven.h, first part: opening and
 * closing a runtime, tasks, cross-shard calls, timers, file I/O, statistics.
 *
 * One runtime per process at a time: pools and buffers send memory home
 * through the process-wide poster of core/ctx.h, which this runtime installs.
 *
 * Closing is a distributed termination problem: a shard that looks idle can
 * be handed work by a message still in a ring. rv_runtime_close therefore
 * waits until two consecutive snapshots of every shard's counters are equal,
 * every shard reports itself quiet, and messages sent equal messages received
 * (Mattern's double counting); only then are the shards told to exit.
 */
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/assert.h"
#include "core/clock.h"
#include "core/ctx.h"
#include "core/err.h"
#include "core/sys.h"
#include "core/topo.h"
#include "core/trace.h"
#include "shards/shard_impl.h"

static _Atomic(rv_runtime_t *) runtime_current;
static struct sigaction stall_old_action;
#define STALL_SIGNAL (SIGRTMIN + 3)

void rv_runtime_config_init(struct rv_runtime_config *cfg)
{
    *cfg = (struct rv_runtime_config){
        .io_backend = RV_IO_AUTO,
        .poll_us = 50,
        .stall_ms = 25,
        .mailbox_slots = 4096,
        .io_depth = 256,
        .pool_bytes = 64ull << 20,
        .offload_threads = 2,
    };
}

int rv_shard_self(void)
{
    struct rv_shard *s = rv_shard_current();
    return s == NULL ? -1 : (int)s->id;
}

/* ---- opening ---------------------------------------------------------------- */

static int runtime_env_backend(struct rv_runtime_config *cfg)
{
    const char *env = getenv("RIVVEN_IO_BACKEND");
    if (cfg->io_backend != RV_IO_AUTO || env == NULL || env[0] == '\0')
        return 0; /* an explicit choice in the config wins */
    if (strcmp(env, "uring") == 0 || strcmp(env, "io_uring") == 0)
        cfg->io_backend = RV_IO_URING;
    else if (strcmp(env, "epoll") == 0)
        cfg->io_backend = RV_IO_EPOLL;
    else if (strcmp(env, "auto") == 0)
        cfg->io_backend = RV_IO_AUTO;
    else
        return rv_errf(-EINVAL, "RIVVEN_IO_BACKEND=%s: expected uring, epoll or auto", env);
    return 0;
}

static int runtime_check_config(const struct rv_runtime_config *cfg)
{
    uint32_t slots = cfg->mailbox_slots;
    if (slots < 2 || (slots & (slots - 1)) != 0 || slots > (1u << 20))
        return rv_errf(-EINVAL, "mailbox_slots %u: must be a power of two in [2, 2^20]", slots);
    if (cfg->io_depth == 0 || cfg->io_depth > 32768)
        return rv_errf(-EINVAL, "io_depth %u: must be in [1, 32768]", cfg->io_depth);
    if (cfg->io_backend != RV_IO_AUTO && cfg->io_backend != RV_IO_URING &&
        cfg->io_backend != RV_IO_EPOLL)
        return rv_errf(-EINVAL, "io_backend %d: unknown", (int)cfg->io_backend);
    if (cfg->offload_threads > 64)
        return rv_errf(-EINVAL, "offload_threads %u: at most 64", cfg->offload_threads);
    if (cfg->shard_count > RV_SHARD_COUNT_MAX)
        return rv_errf(-EINVAL, "shard_count %u: at most %u", cfg->shard_count, RV_SHARD_COUNT_MAX);
    return 0;
}

/* The CPUs to run on: the cpuset option, restricted to what the process may use. */
static int runtime_cpus(const struct rv_runtime_config *cfg, struct rv_cpuset *out)
{
    struct rv_cpuset allowed;
    int rc = rv_topo_allowed_cpus(&allowed);
    if (rc < 0)
        return rv_errf(rc, "sched_getaffinity");
    if (cfg->cpuset == NULL) {
        *out = allowed;
        return 0;
    }
    rc = rv_cpuset_parse(cfg->cpuset, out);
    if (rc < 0)
        return rc; /* rv_cpuset_parse said what is wrong */
    for (unsigned i = 0; i < rv_cpuset_count(out); i++) {
        int cpu = rv_cpuset_nth(out, i);
        if (!rv_cpuset_has(&allowed, (unsigned)cpu))
            return rv_errf(-EINVAL, "cpuset \"%s\": cpu %d is not available to this process",
                           cfg->cpuset, cpu);
    }
    return 0;
}

/* Create data_dir if needed and prove it writable. */
static int runtime_check_data_dir(const char *dir)
{
    int rc = rv_sys_mkdir_p(dir, 0755);
    if (rc < 0)
        return rv_errf(rc, "data dir %s: cannot create", dir);
    char probe[PATH_MAX];
    int n = snprintf(probe, sizeof(probe), "%s/.rivven-probe-%d", dir, (int)getpid());
    if (n < 0 || (size_t)n >= sizeof(probe))
        return rv_errf(-ENAMETOOLONG, "data dir %s: path too long", dir);
    int fd = rv_sys_open(probe, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    if (fd < 0)
        return rv_errf(fd, "data dir %s: not writable", dir);
    (void)rv_sys_close(fd); /* probe only */
    (void)rv_sys_unlink(probe);
    return 0;
}

static void runtime_free(rv_runtime_t *rt)
{
    if (rt->shards != NULL) {
        for (uint32_t i = 0; i < rt->n; i++) {
            if (rt->shards[i] != NULL && rt->shards[i]->wake_fd >= 0)
                close(rt->shards[i]->wake_fd);
            free(rt->shards[i]);
        }
    }
    if (rt->rings != NULL) {
        for (size_t i = 0; i < (size_t)rt->n * rt->n; i++)
            rv_spsc_fini(&rt->rings[i]);
    }
    free(rt->shards);
    free(rt->rings);
    free(rt->data_dir);
    free(rt);
}

static int runtime_alloc(rv_runtime_t *rt, const struct rv_cpuset *cpus)
{
    uint32_t n = rt->n;
    rt->shards = calloc(n, sizeof(*rt->shards));
    rt->rings = calloc((size_t)n * n, sizeof(*rt->rings));
    if (rt->shards == NULL || rt->rings == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < (size_t)n * n; i++) {
        /* The diagonal (a shard to itself) stays unused; a tiny ring keeps
         * indexing uniform. */
        uint32_t slots = i / n == i % n ? 2 : rt->cfg.mailbox_slots;
        int rc = rv_spsc_init(&rt->rings[i], slots, sizeof(struct rv_msg));
        if (rc < 0)
            return rc;
    }
    unsigned ncpu = rv_cpuset_count(cpus);
    for (uint32_t i = 0; i < n; i++) {
        struct rv_shard *s = NULL;
        if (posix_memalign((void **)&s, RV_CACHELINE, sizeof(*s)) != 0)
            return -ENOMEM;
        memset(s, 0, sizeof(*s));
        rt->shards[i] = s;
        s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s->wake_fd < 0)
            return rv_errf(-errno, "eventfd");
        s->id = i;
        s->rt = rt;
        s->cpu = rv_cpuset_nth(cpus, i % ncpu);
        s->node = rv_topo_cpu_node((unsigned)s->cpu);
    }
    return 0;
}

static void stall_signal_handler(int sig)
{
    (void)sig;
    static const char msg[] = "rivven: stalled shard backtrace:\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)w;
    rv_assert_backtrace();
}

static void *runtime_watchdog(void *arg)
{
    rv_runtime_t *rt = arg;
    uint64_t stall_ns = (uint64_t)rt->cfg.stall_ms * 1000000ull;
    uint64_t *reported = calloc(rt->n, sizeof(*reported));
    uint64_t tick_ns = stall_ns / 2 < 5000000ull ? stall_ns / 2 : 5000000ull;
    struct timespec tick = {.tv_sec = 0, .tv_nsec = (long)(tick_ns ? tick_ns : 1000000)};
    while (!atomic_load(&rt->watchdog_stop)) {
        nanosleep(&tick, NULL);
        uint64_t now = rv_clock_now_ns();
        for (uint32_t i = 0; i < rt->n && reported != NULL; i++) {
            struct rv_shard *s = rt->shards[i];
            uint64_t start = atomic_load_explicit(&s->turn_start_ns, memory_order_relaxed);
            uint64_t seq = atomic_load_explicit(&s->turn_seq, memory_order_relaxed);
            if (start == 0 || now < start || now - start <= stall_ns || reported[i] == seq)
                continue;
            reported[i] = seq; /* one backtrace per stalled turn */
            rv_warn("shard %u: loop turn running for %llu ms (threshold %u ms)", i,
                    (unsigned long long)((now - start) / 1000000), rt->cfg.stall_ms);
            pthread_kill(s->thread, STALL_SIGNAL);
        }
    }
    free(reported);
    return NULL;
}

static int runtime_start_watchdog(rv_runtime_t *rt)
{
    if (rt->cfg.stall_ms == 0)
        return 0;
    /* Load libgcc's unwinder now: backtrace() may allocate on first use, which
     * must not happen inside the signal handler. */
    void *frames[2];
    (void)backtrace(frames, 2);
    struct sigaction sa = {.sa_handler = stall_signal_handler, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    if (sigaction(STALL_SIGNAL, &sa, &stall_old_action) < 0)
        return rv_errf(-errno, "sigaction(stall signal)");
    int rc = pthread_create(&rt->watchdog, NULL, runtime_watchdog, rt);
    if (rc != 0) {
        sigaction(STALL_SIGNAL, &stall_old_action, NULL);
        return rv_errf(-rc, "pthread_create(watchdog)");
    }
    rt->has_watchdog = true;
    return 0;
}

static void runtime_stop_watchdog(rv_runtime_t *rt)
{
    if (!rt->has_watchdog)
        return;
    atomic_store(&rt->watchdog_stop, 1);
    pthread_join(rt->watchdog, NULL);
    sigaction(STALL_SIGNAL, &stall_old_action, NULL);
    rt->has_watchdog = false;
}

static int runtime_post(int shard, rv_ctx_task_fn *fn, void *arg)
{
    rv_runtime_t *rt = atomic_load(&runtime_current);
    if (rt == NULL)
        return -ESHUTDOWN;
    return rv_runtime_submit(rt, (uint32_t)shard, fn, arg);
}

/* Start every shard thread; on failure join the started ones. */
static int runtime_start_threads(rv_runtime_t *rt)
{
    uint32_t started = 0;
    int rc = 0;
    pthread_barrier_init(&rt->ready, NULL, rt->n + 1);
    pthread_barrier_init(&rt->go, NULL, rt->n + 1);
    for (; started < rt->n; started++) {
        int e =
            pthread_create(&rt->shards[started]->thread, NULL, rv_shard_main, rt->shards[started]);
        if (e != 0) {
            rc = rv_errf(-e, "pthread_create(shard %u)", started);
            break;
        }
    }
    if (started < rt->n) {
        /* The barriers count n + 1: stand in for the threads that never started. */
        rt->is_start_failed = true;
        for (uint32_t i = started; i < rt->n; i++)
            rt->shards[i]->start_rc = rc;
        pthread_barrier_destroy(&rt->ready);
        pthread_barrier_destroy(&rt->go);
        pthread_barrier_init(&rt->ready, NULL, started + 1);
        pthread_barrier_init(&rt->go, NULL, started + 1);
    }
    pthread_barrier_wait(&rt->ready);
    for (uint32_t i = 0; i < started && rc == 0; i++) {
        rc = rt->shards[i]->start_rc;
        if (rc < 0) /* the reason was recorded on the shard's thread: say it here */
            rc = rv_errf(rc, "shard %u: %s", i, rt->shards[i]->start_msg);
    }
    rt->is_start_failed = rc < 0;
    pthread_barrier_wait(&rt->go);
    if (rc < 0) {
        for (uint32_t i = 0; i < started; i++)
            pthread_join(rt->shards[i]->thread, NULL);
    }
    return rc;
}

int rv_runtime_open(rv_runtime_t **out, const struct rv_runtime_config *user_cfg)
{
    RV_ASSERT(out != NULL);
    RV_ASSERT(user_cfg != NULL);
    if (rv_shard_current() != NULL)
        return rv_errf(-EINVAL, "rv_runtime_open called from a shard");
    rv_runtime_t *rt = calloc(1, sizeof(*rt));
    if (rt == NULL)
        return -ENOMEM;
    rt->cfg = *user_cfg;
    struct rv_cpuset cpus;
    int rc = runtime_env_backend(&rt->cfg);
    if (rc == 0)
        rc = runtime_check_config(&rt->cfg);
    if (rc == 0)
        rc = runtime_cpus(&rt->cfg, &cpus);
    if (rc < 0)
        goto err_free;
    unsigned ncpu = rv_cpuset_count(&cpus);
    rt->n = rt->cfg.shard_count == 0 ? ncpu : rt->cfg.shard_count;
    if (rt->n > ncpu && !rt->cfg.allow_oversubscribe) {
        rc = rv_errf(-EINVAL, "%u shards but only %u cpus available (one shard per core)", rt->n,
                     ncpu);
        goto err_free;
    }
    if (rt->n > RV_SHARD_COUNT_MAX) {
        rc = rv_errf(-EINVAL, "%u shards: at most %u", rt->n, RV_SHARD_COUNT_MAX);
        goto err_free;
    }
    if (rt->cfg.data_dir != NULL) {
        rc = runtime_check_data_dir(rt->cfg.data_dir);
        if (rc < 0)
            goto err_free;
        rt->data_dir = strdup(rt->cfg.data_dir);
        if (rt->data_dir == NULL) {
            rc = -ENOMEM;
            goto err_free;
        }
    }
    rt->cfg.data_dir = rt->data_dir;
    rt->cfg.cpuset = NULL; /* not kept: the caller's string */
    rc = runtime_alloc(rt, &cpus);
    if (rc < 0)
        goto err_free;
    rv_runtime_t *expected = NULL;
    if (!atomic_compare_exchange_strong(&runtime_current, &expected, rt)) {
        rc = rv_errf(-EBUSY, "a rivven runtime is already open in this process");
        goto err_free;
    }
    rv_ctx_set_poster(runtime_post);
    rc = rv_offload_start(rt);
    if (rc == 0)
        rc = runtime_start_threads(rt);
    if (rc < 0)
        goto err_stop_offload;
    rc = runtime_start_watchdog(rt);
    if (rc < 0) {
        rv_runtime_close(rt);
        return rc;
    }
    rv_info("runtime open: %u shards, io %s%s%s", rt->n, rt->shards[0]->io.ops->name,
            rt->data_dir ? ", data dir " : "", rt->data_dir ? rt->data_dir : "");
    *out = rt;
    return 0;

err_stop_offload:
    rv_offload_stop(rt);
    rv_ctx_set_poster(NULL);
    atomic_store(&runtime_current, NULL);
err_free:
    runtime_free(rt);
    return rc;
}

/* ---- closing ---------------------------------------------------------------- */

struct runtime_snapshot {
    uint64_t sent;
    uint64_t received;
    uint64_t activity;
    bool is_all_quiet;
};

static void runtime_snapshot(rv_runtime_t *rt, struct runtime_snapshot *snap)
{
    *snap = (struct runtime_snapshot){.is_all_quiet = true};
    for (uint32_t i = 0; i < rt->n; i++) {
        struct rv_shard *s = rt->shards[i];
        /* seq_cst loads, quiet flag first: pairs with the store in shard_loop. */
        snap->is_all_quiet &= atomic_load(&s->is_quiet) != 0;
        snap->sent += atomic_load(&s->stats.msgs_sent);
        snap->received += atomic_load(&s->stats.msgs_received);
        snap->activity += atomic_load(&s->stats.tasks_run) + atomic_load(&s->stats.io_completed) +
                          atomic_load(&s->stats.timers_fired);
    }
    snap->sent += atomic_load(&rt->ext_sent);
}

static bool runtime_is_quiet(rv_runtime_t *rt)
{
    struct runtime_snapshot a, b;
    runtime_snapshot(rt, &a);
    if (!a.is_all_quiet || a.sent != a.received)
        return false;
    runtime_snapshot(rt, &b);
    return b.is_all_quiet && memcmp(&a, &b, sizeof(a)) == 0;
}

static void runtime_wake_all(rv_runtime_t *rt)
{
    for (uint32_t i = 0; i < rt->n; i++)
        rv_shard_wake(rt->shards[i]);
}

void rv_runtime_close(rv_runtime_t *rt)
{
    if (rt == NULL)
        return;
    RV_ASSERT(rv_shard_current() == NULL);
    atomic_store(&rt->state, RV_RT_CLOSING);
    runtime_wake_all(rt);
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 200000};
    uint64_t start = rv_clock_now_ns();
    bool is_warned = false;
    while (!runtime_is_quiet(rt)) {
        /* Sleeping shards only report quiet after a turn: nudge them. */
        runtime_wake_all(rt);
        nanosleep(&pause, NULL);
        if (!is_warned && rv_clock_now_ns() - start > 5000000000ull) {
            rv_warn("runtime close: still draining after 5 s");
            is_warned = true;
        }
    }
    atomic_store(&rt->state, RV_RT_EXIT);
    runtime_wake_all(rt);
    for (uint32_t i = 0; i < rt->n; i++)
        pthread_join(rt->shards[i]->thread, NULL);
    runtime_stop_watchdog(rt);
    rv_offload_stop(rt);
    pthread_barrier_destroy(&rt->ready);
    pthread_barrier_destroy(&rt->go);
    rv_ctx_set_poster(NULL);
    atomic_store(&runtime_current, NULL);
    rv_info("runtime closed");
    runtime_free(rt);
}

/* ---- queries ---------------------------------------------------------------- */

uint32_t rv_runtime_shard_count(const rv_runtime_t *rt)
{
    return rt->n;
}

enum rv_io_backend rv_runtime_io_backend(const rv_runtime_t *rt)
{
    return rt->shards[0]->io.kind;
}

int rv_runtime_shard_cpu(const rv_runtime_t *rt, uint32_t shard)
{
    return shard < rt->n ? rt->shards[shard]->cpu : -EINVAL;
}

const char *rv_runtime_data_dir(const rv_runtime_t *rt)
{
    return rt->data_dir;
}

int rv_runtime_shard_stats(const rv_runtime_t *rt, uint32_t shard, struct rv_shard_stats *out)
{
    if (shard >= rt->n)
        return -EINVAL;
    const struct rv_shard_counters *c = &rt->shards[shard]->stats;
#define STAT(f) out->f = atomic_load_explicit(&c->f, memory_order_relaxed)
    STAT(loop_turns);
    STAT(tasks_run);
    STAT(msgs_sent);
    STAT(msgs_received);
    STAT(wakeups_sent);
    STAT(sleeps);
    STAT(stalls);
    STAT(io_completed);
    STAT(timers_fired);
#undef STAT
    /* The shard's inbound rings: published by their producers, not yet released
     * by the shard (both indexes are atomics any thread may read). */
    out->mailbox_depth = 0;
    for (uint32_t p = 0; p < rt->n; p++) {
        const struct rv_spsc *r = &rt->rings[(size_t)p * rt->n + shard];
        uint32_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
        uint32_t head = atomic_load_explicit(&r->head, memory_order_acquire);
        out->mailbox_depth += tail - head;
    }
    return 0;
}

/* ---- tasks and calls -------------------------------------------------------- */

static int runtime_push_ext(rv_runtime_t *rt, struct rv_shard *target, rv_task_fn *fn, void *arg)
{
    struct rv_ext_msg *e = malloc(sizeof(*e));
    if (e == NULL)
        return -ENOMEM;
    e->fn = fn;
    e->arg = arg;
    /* Counted before the push so rv_runtime_close never sees the receipt
     * without the send. */
    atomic_fetch_add(&rt->ext_sent, 1);
    rv_mpsc_push(&target->ext, &e->node);
    rv_shard_wake(target);
    return 0;
}

static int runtime_submit_outside(rv_runtime_t *rt, struct rv_shard *target, rv_task_fn *fn,
                                  void *arg)
{
    if (atomic_load(&rt->state) != RV_RT_RUNNING)
        return -ESHUTDOWN;
    return runtime_push_ext(rt, target, fn, arg);
}

void rv_runtime_post_internal(rv_runtime_t *rt, struct rv_shard *s, rv_task_fn *fn, void *arg)
{
    /* Losing a completion would leave its shard busy forever. */
    int rc = runtime_push_ext(rt, s, fn, arg);
    RV_ASSERT(rc == 0);
}

int rv_runtime_submit(rv_runtime_t *rt, uint32_t shard, rv_task_fn *fn, void *arg)
{
    RV_ASSERT(fn != NULL);
    if (shard >= rt->n)
        return rv_errf(-EINVAL, "submit: shard %u of %u", shard, rt->n);
    struct rv_shard *self = rv_shard_current();
    if (self == NULL || self->rt != rt)
        return runtime_submit_outside(rt, rt->shards[shard], fn, arg);
    struct rv_msg m = {.fn = fn, .arg = arg, .kind = RV_MSG_TASK, .origin = self->id};
    return shard == self->id ? rv_msg_task_push(self, &m) : rv_msg_send(self, shard, &m);
}

int rv_shard_call(uint32_t target, rv_task_fn *fn, void *arg, rv_task_fn *reply)
{
    RV_ASSERT(fn != NULL);
    struct rv_shard *self = rv_shard_current();
    if (self == NULL)
        return rv_errf(-EINVAL, "rv_shard_call outside a shard");
    if (target >= self->rt->n)
        return rv_errf(-EINVAL, "rv_shard_call: shard %u of %u", target, self->rt->n);
    struct rv_msg m = {
        .fn = fn, .arg = arg, .reply = reply, .kind = RV_MSG_CALL, .origin = self->id};
    return target == self->id ? rv_msg_task_push(self, &m) : rv_msg_send(self, target, &m);
}

/* ---- timers ----------------------------------------------------------------- */

int rv_timer_add(uint64_t delay_us, rv_task_fn *fn, void *arg, rv_timer_id *out)
{
    RV_ASSERT(fn != NULL);
    struct rv_shard *self = rv_shard_current();
    if (self == NULL)
        return rv_errf(-EINVAL, "rv_timer_add outside a shard");
    uint64_t now = rv_clock_now_ns();
    uint64_t delay_ns = delay_us > (UINT64_MAX - now) / 1000 ? UINT64_MAX - now : delay_us * 1000;
    return rv_timers_add(&self->timers, now + delay_ns, fn, arg, out);
}

int rv_timer_cancel(rv_timer_id id)
{
    struct rv_shard *self = rv_shard_current();
    if (self == NULL)
        return rv_errf(-EINVAL, "rv_timer_cancel outside a shard");
    return rv_timers_cancel(&self->timers, id);
}

/* ---- file I/O --------------------------------------------------------------- */

int rv_shard_io_req(struct rv_io_req **out, enum rv_io_op op, int fd, rv_io_fn *cb, void *arg,
                    const char *what)
{
    RV_ASSERT(cb != NULL);
    struct rv_shard *self = rv_shard_current();
    if (self == NULL)
        return rv_errf(-EINVAL, "%s outside a shard", what);
    if (atomic_load_explicit(&self->rt->state, memory_order_relaxed) == RV_RT_EXIT)
        return -ESHUTDOWN;
    struct rv_io_req *req = rv_io_req_get(&self->io);
    if (req == NULL)
        return -EAGAIN; /* io_depth operations in flight */
    req->op = (uint8_t)op;
    req->fd = fd;
    req->cb = cb;
    req->cb_arg = arg;
    *out = req;
    return 0;
}

int rv_shard_io_queue(struct rv_io_req *req)
{
    return rv_io_queue(&rv_shard_current()->io, req);
}

static int file_req(struct rv_io_req **out, enum rv_io_op op, int fd, rv_io_fn *cb, void *arg)
{
    return rv_shard_io_req(out, op, fd, cb, arg, "file I/O");
}

static int file_queue(struct rv_io_req *req)
{
    return rv_shard_io_queue(req);
}

int rv_file_open(const char *path, int flags, mode_t mode, rv_io_fn *cb, void *arg)
{
    struct rv_io_req *req = NULL;
    int rc = file_req(&req, RV_IO_OP_OPEN, AT_FDCWD, cb, arg);
    if (rc < 0)
        return rc;
    req->flags = flags;
    req->mode = mode;
    /* Copied: the caller's path may be gone before the ring reads it. */
    req->buf = strdup(path);
    if (req->buf == NULL) {
        req->op = RV_IO_OP_CLOSE; /* nothing to free on the way back */
        req->fd = -1;
        rv_io_complete(&rv_shard_current()->io, req, -ENOMEM);
        return 0;
    }
    return file_queue(req);
}

int rv_file_read(int fd, void *buf, uint32_t len, uint64_t pos, rv_io_fn *cb, void *arg)
{
    struct rv_io_req *req = NULL;
    int rc = file_req(&req, RV_IO_OP_READ, fd, cb, arg);
    if (rc < 0)
        return rc;
    req->buf = buf;
    req->len = len;
    req->pos = pos;
    return file_queue(req);
}

int rv_file_write(int fd, const void *buf, uint32_t len, uint64_t pos, rv_io_fn *cb, void *arg)
{
    struct rv_io_req *req = NULL;
    int rc = file_req(&req, RV_IO_OP_WRITE, fd, cb, arg);
    if (rc < 0)
        return rc;
    req->buf = (void *)buf; /* read-only for writes */
    req->len = len;
    req->pos = pos;
    return file_queue(req);
}

int rv_file_fdatasync(int fd, rv_io_fn *cb, void *arg)
{
    struct rv_io_req *req = NULL;
    int rc = file_req(&req, RV_IO_OP_FDATASYNC, fd, cb, arg);
    return rc < 0 ? rc : file_queue(req);
}

int rv_file_fallocate(int fd, int mode, uint64_t pos, uint64_t len, rv_io_fn *cb, void *arg)
{
    struct rv_io_req *req = NULL;
    int rc = file_req(&req, RV_IO_OP_FALLOCATE, fd, cb, arg);
    if (rc < 0)
        return rc;
    req->flags = mode;
    req->pos = pos;
    req->len64 = len;
    return file_queue(req);
}

int rv_file_writev(int fd, const struct iovec *iov, int iovcnt, uint64_t pos, rv_io_fn *cb,
                   void *arg)
{
    if (iovcnt <= 0 || iovcnt > IOV_MAX)
        return rv_errf(-EINVAL, "rv_file_writev: %d iovecs", iovcnt);
    struct rv_io_req *req = NULL;
    int rc = file_req(&req, RV_IO_OP_WRITEV, fd, cb, arg);
    if (rc < 0)
        return rc;
    req->buf = (void *)iov; /* read-only */
    req->len = (uint32_t)iovcnt;
    req->pos = pos;
    return file_queue(req);
}

int rv_file_close(int fd, rv_io_fn *cb, void *arg)
{
    struct rv_io_req *req = NULL;
    int rc = file_req(&req, RV_IO_OP_CLOSE, fd, cb, arg);
    return rc < 0 ? rc : file_queue(req);
}
