/* tests/shards/test_runtime.c - tests shards/runtime.c: open, close, config errors. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/topo.h"
#include "tests/support/rt.h"

TestSuite(runtime, .timeout = 120);

struct where {
    int shard;
    int cpu;
};

static void where_fn(void *p)
{
    struct where *w = p;
    w->shard = rv_shard_self();
    w->cpu = sched_getcpu();
}

Test(runtime, default_is_one_pinned_shard_per_allowed_cpu)
{
    struct rv_cpuset allowed;
    cr_assert_eq(rv_topo_allowed_cpus(&allowed), 0);
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    rv_runtime_t *rt = NULL;
    cr_assert_eq(rv_runtime_open(&rt, &cfg), 0, "%s", rv_err_msg());
    uint32_t n = rv_runtime_shard_count(rt);
    cr_assert_eq(n, rv_cpuset_count(&allowed));
    cr_assert_neq(rv_runtime_io_backend(rt), RV_IO_AUTO);
    for (uint32_t i = 0; i < n; i++) {
        struct where w = {-1, -1};
        test_run_on(rt, i, where_fn, &w);
        cr_assert_eq(w.shard, (int)i);
        cr_assert_eq(w.cpu, rv_runtime_shard_cpu(rt, i), "shard %u runs on its pinned cpu", i);
    }
    cr_assert_eq(rv_shard_self(), -1, "the test thread is not a shard");
    rv_runtime_close(rt);
}

static int open_with(const char *cpuset, uint32_t shards, const char *data_dir)
{
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    cfg.cpuset = cpuset;
    cfg.shard_count = shards;
    cfg.data_dir = data_dir;
    rv_runtime_t *rt = NULL;
    int rc = rv_runtime_open(&rt, &cfg);
    if (rc == 0)
        rv_runtime_close(rt);
    else
        cr_assert_null(rt, "failed open leaves *out untouched");
    return rc;
}

Test(runtime, invalid_cpuset_is_a_clear_error)
{
    cr_assert_eq(open_with("0-", 0, NULL), -EINVAL);
    cr_assert(strstr(rv_err_msg(), "cpuset") != NULL, "message names the cpuset: %s", rv_err_msg());
    cr_assert_eq(open_with("3-1", 0, NULL), -EINVAL);
    cr_assert_eq(open_with("banana", 0, NULL), -EINVAL);
    cr_assert_eq(open_with("1023", 0, NULL), -EINVAL, "a cpu this process cannot use");
    cr_assert(strstr(rv_err_msg(), "1023") != NULL, "%s", rv_err_msg());
}

Test(runtime, more_shards_than_cores_is_refused)
{
    struct rv_cpuset allowed;
    cr_assert_eq(rv_topo_allowed_cpus(&allowed), 0);
    cr_assert_eq(open_with(NULL, rv_cpuset_count(&allowed) + 1, NULL), -EINVAL);
    cr_assert(strstr(rv_err_msg(), "shards") != NULL, "%s", rv_err_msg());
    cr_assert_eq(open_with("0", 2, NULL), -EINVAL);
}

Test(runtime, unusable_data_dir_is_a_clear_error)
{
    /* Root can write anywhere, so use a path below a regular file. */
    cr_assert_eq(open_with(NULL, 1, "/dev/null/rivven"), -ENOTDIR);
    cr_assert(strstr(rv_err_msg(), "/dev/null/rivven") != NULL, "%s", rv_err_msg());
    if (geteuid() != 0) {
        char ro[] = "/tmp/rivven-ro-XXXXXX";
        cr_assert_not_null(mkdtemp(ro));
        chmod(ro, 0500);
        cr_assert_eq(open_with(NULL, 1, ro), -EACCES);
        rmdir(ro);
    }
}

Test(runtime, data_dir_is_created_when_missing)
{
    char base[] = "/tmp/rivven-dd-XXXXXX";
    cr_assert_not_null(mkdtemp(base));
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/a/b", base);
    cr_assert_eq(open_with(NULL, 1, dir), 0, "%s", rv_err_msg());
    struct stat st;
    cr_assert_eq(stat(dir, &st), 0);
    cr_assert(S_ISDIR(st.st_mode));
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
    cr_assert_eq(system(cmd), 0);
}

Test(runtime, bad_options_are_refused)
{
    struct rv_runtime_config cfg;
    rv_runtime_t *rt = NULL;
    rv_runtime_config_init(&cfg);
    cfg.mailbox_slots = 100;
    cr_assert_eq(rv_runtime_open(&rt, &cfg), -EINVAL);
    rv_runtime_config_init(&cfg);
    cfg.io_depth = 0;
    cr_assert_eq(rv_runtime_open(&rt, &cfg), -EINVAL);
    rv_runtime_config_init(&cfg);
    setenv("RIVVEN_IO_BACKEND", "bogus", 1);
    cr_assert_eq(rv_runtime_open(&rt, &cfg), -EINVAL);
    cr_assert(strstr(rv_err_msg(), "RIVVEN_IO_BACKEND") != NULL, "%s", rv_err_msg());
    unsetenv("RIVVEN_IO_BACKEND");
    cr_assert_null(rt);
}

Test(runtime, only_one_runtime_per_process)
{
    rv_runtime_t *rt = test_rt_open(1);
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    cfg.shard_count = 1;
    rv_runtime_t *second = NULL;
    cr_assert_eq(rv_runtime_open(&second, &cfg), -EBUSY);
    cr_assert_null(second);
    rv_runtime_close(rt);
    rt = test_rt_open(1); /* and the slot is free again after close */
    rv_runtime_close(rt);
}

/* Close with messages and I/O in flight: everything started completes. */
#define CHAIN_HOPS 2000
#define CHAINS     8

struct chain {
    uint32_t hops_left;
    int fd;
    char byte;
};

static _Atomic uint64_t chain_hops_done;
static _Atomic uint64_t chain_writes_done;

static void chain_write_done(void *p, int64_t res)
{
    cr_assert_eq(res, 1);
    atomic_fetch_add(&chain_writes_done, 1);
    (void)p;
}

static void chain_hop(void *p)
{
    struct chain *c = p;
    atomic_fetch_add(&chain_hops_done, 1);
    if (c->hops_left % 100 == 0) {
        int rc = rv_file_write(c->fd, &c->byte, 1, c->hops_left, chain_write_done, c);
        cr_assert_eq(rc, 0);
    }
    if (c->hops_left-- == 0)
        return;
    uint32_t next = (uint32_t)(rv_shard_self() + 1) % 3;
    cr_assert_eq(rv_shard_call(next, chain_hop, c, NULL), 0);
}

Test(runtime, close_drains_messages_and_io_in_flight)
{
    rv_runtime_t *rt = test_rt_open(3);
    char path[] = "/tmp/rivven-drain-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    static struct chain chains[CHAINS];
    atomic_store(&chain_hops_done, 0);
    atomic_store(&chain_writes_done, 0);
    for (int i = 0; i < CHAINS; i++) {
        chains[i] = (struct chain){.hops_left = CHAIN_HOPS, .fd = fd, .byte = 'x'};
        cr_assert_eq(rv_runtime_submit(rt, (uint32_t)i % 3, chain_hop, &chains[i]), 0);
    }
    rv_runtime_close(rt); /* at once: the chains are still running */
    cr_assert_eq(atomic_load(&chain_hops_done), (uint64_t)CHAINS * (CHAIN_HOPS + 1));
    cr_assert_eq(atomic_load(&chain_writes_done), (uint64_t)CHAINS * (CHAIN_HOPS / 100 + 1));
    close(fd);
    unlink(path);
}

/* Blocking work runs on a helper thread and completes back on the shard. */
struct offload_case {
    int work_shard;
    int done_shard;
    _Atomic int done_count;
    struct test_signal done;
};

static void offload_work(void *p)
{
    struct offload_case *c = p;
    c->work_shard = rv_shard_self();
    usleep(50000); /* a blocking call: fine here, never on a shard */
}

static void offload_done(void *p)
{
    struct offload_case *c = p;
    c->done_shard = rv_shard_self();
    atomic_fetch_add(&c->done_count, 1);
}

static void offload_start(void *p)
{
    cr_assert_eq(rv_offload(offload_work, p, offload_done), 0);
}

Test(runtime, offload_runs_off_shard_and_close_waits_for_it)
{
    rv_runtime_t *rt = test_rt_open(2);
    struct offload_case c = {.work_shard = 99, .done_shard = -1};
    test_run_on(rt, 1, offload_start, &c);
    rv_runtime_close(rt); /* the job is still sleeping on its helper */
    cr_assert_eq(atomic_load(&c.done_count), 1);
    cr_assert_eq(c.work_shard, -1, "work ran on a helper thread");
    cr_assert_eq(c.done_shard, 1, "done ran on the calling shard");
    cr_assert_eq(rv_offload(offload_work, &c, offload_done), -EINVAL, "not on a shard");
}

/* ---- mailbox depth -------------------------------------------------------------------------- */

struct depth_probe {
    rv_runtime_t *rt;
    _Atomic int is_held;    /* shard 1 spins in a task while set */
    _Atomic int is_holding; /* ... and it does */
    _Atomic int ran;
};

static void depth_hold(void *arg)
{
    struct depth_probe *p = arg;
    atomic_store(&p->is_holding, 1);
    while (atomic_load(&p->is_held))
        sched_yield(); /* a test stands in for a busy shard */
}

static void depth_noop(void *arg)
{
    struct depth_probe *p = arg;
    atomic_fetch_add(&p->ran, 1);
}

static void depth_send(void *arg)
{
    struct depth_probe *p = arg;
    for (int i = 0; i < 10; i++)
        cr_assert_eq(rv_runtime_submit(p->rt, 1, depth_noop, p), 0);
}

Test(runtime, stats_count_the_messages_waiting_in_a_shards_mailboxes)
{
    rv_runtime_t *rt = test_rt_open(2);
    struct depth_probe p = {.rt = rt, .is_held = 1};
    cr_assert_eq(rv_runtime_submit(rt, 1, depth_hold, &p), 0);
    /* Only once shard 1 is held: before, it would run some of them first. */
    for (int i = 0; i < 2000 && !atomic_load(&p.is_holding); i++)
        usleep(1000);
    cr_assert(atomic_load(&p.is_holding));
    test_run_on(rt, 0, depth_send, &p); /* 10 messages from shard 0 to busy shard 1 */
    struct rv_shard_stats st;
    for (int i = 0; i < 2000; i++) { /* published at shard 0's next flush */
        cr_assert_eq(rv_runtime_shard_stats(rt, 1, &st), 0);
        if (st.mailbox_depth == 10)
            break;
        usleep(1000);
    }
    cr_assert_eq(st.mailbox_depth, 10);
    atomic_store(&p.is_held, 0);
    for (int i = 0; i < 2000 && atomic_load(&p.ran) < 10; i++)
        usleep(1000);
    cr_assert_eq(atomic_load(&p.ran), 10);
    for (int i = 0; i < 2000; i++) { /* released once the shard consumed them */
        cr_assert_eq(rv_runtime_shard_stats(rt, 1, &st), 0);
        if (st.mailbox_depth == 0)
            break;
        usleep(1000);
    }
    cr_assert_eq(st.mailbox_depth, 0);
    rv_runtime_close(rt);
}
