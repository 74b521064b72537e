/*
 * tools/rivven-demo.c - the runtime demo: one pinned shard per core, every
 * shard calls every other shard, each shard writes and syncs a file in the data
 * directory through its own I/O backend, then the demo prints what happened.
 *
 *   rivven-demo [--data-dir DIR] [--shards N] [--cpuset LIST] [--calls N]
 *               [--io-backend auto|uring|epoll]
 *
 * This is the program the README starts until the broker exists.
 */
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "rivven.h"

#define DEMO_SHARDS_MAX 256

struct demo {
    rv_runtime_t *rt;
    uint32_t shards;
    uint32_t calls; /* per ordered pair */
    const char *dir;
    sem_t done;
    _Atomic uint32_t shards_done;
    _Atomic uint64_t wrong_shard;
};

/* One shard's part. Touched only by that shard. */
struct demo_shard {
    struct demo *d;
    uint32_t id;
    uint64_t replies;
    uint64_t expected;
    uint64_t calls_served; /* calls that ran here (atomic: peers' fn runs here only) */
    bool is_io_done;
    int64_t io_result;
    int fd;
    char path[512];
    char line[128];
};

static struct demo_shard demo_shards[DEMO_SHARDS_MAX];

static void demo_finish_one(struct demo_shard *ds)
{
    if (ds->replies == ds->expected && ds->is_io_done) {
        if (atomic_fetch_add(&ds->d->shards_done, 1) + 1 == ds->d->shards)
            sem_post(&ds->d->done);
    }
}

static void demo_call_fn(void *arg)
{
    struct demo_shard *caller = arg;
    int self = rv_shard_self();
    demo_shards[self].calls_served++; /* runs on shard `self`: its own counter */
    (void)caller;
}

static void demo_call_reply(void *arg)
{
    struct demo_shard *ds = arg;
    if (rv_shard_self() != (int)ds->id)
        atomic_fetch_add(&ds->d->wrong_shard, 1);
    ds->replies++;
    demo_finish_one(ds);
}

static void demo_io_closed(void *arg, int64_t res)
{
    struct demo_shard *ds = arg;
    if (res < 0 && ds->io_result >= 0)
        ds->io_result = res;
    ds->is_io_done = true;
    demo_finish_one(ds);
}

static void demo_io_synced(void *arg, int64_t res)
{
    struct demo_shard *ds = arg;
    ds->io_result = res;
    if (rv_file_close(ds->fd, demo_io_closed, ds) < 0)
        demo_io_closed(ds, -EIO);
}

static void demo_io_written(void *arg, int64_t res)
{
    struct demo_shard *ds = arg;
    if (res < 0) {
        ds->io_result = res;
        demo_io_synced(ds, res);
        return;
    }
    if (rv_file_fdatasync(ds->fd, demo_io_synced, ds) < 0)
        demo_io_synced(ds, -EIO);
}

static void demo_io_opened(void *arg, int64_t res)
{
    struct demo_shard *ds = arg;
    if (res < 0) {
        ds->io_result = res;
        ds->is_io_done = true;
        demo_finish_one(ds);
        return;
    }
    ds->fd = (int)res;
    int n = snprintf(ds->line, sizeof(ds->line), "hello from shard %u\n", ds->id);
    if (rv_file_write(ds->fd, ds->line, (uint32_t)n, 0, demo_io_written, ds) < 0)
        demo_io_written(ds, -EIO);
}

static void demo_start(void *arg)
{
    struct demo_shard *ds = arg;
    struct demo *d = ds->d;
    for (uint32_t round = 0; round < d->calls; round++) {
        for (uint32_t peer = 0; peer < d->shards; peer++) {
            if (peer != ds->id && rv_shard_call(peer, demo_call_fn, ds, demo_call_reply) < 0)
                ds->expected--; /* out of memory: reported as missing replies */
        }
    }
    snprintf(ds->path, sizeof(ds->path), "%s/demo-shard-%u.txt", d->dir, ds->id);
    if (rv_file_open(ds->path, O_WRONLY | O_CREAT | O_TRUNC, 0644, demo_io_opened, ds) < 0)
        demo_io_opened(ds, -EAGAIN);
}

static int demo_parse(int argc, char **argv, struct rv_runtime_config *cfg, struct demo *d)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("usage: rivven-demo [--data-dir DIR] [--shards N] [--cpuset LIST]\n"
                   "                   [--calls N] [--io-backend auto|uring|epoll]\n");
            exit(0);
        }
        if (v == NULL) {
            fprintf(stderr, "rivven-demo: %s needs a value (see --help)\n", a);
            return -EINVAL;
        }
        i++;
        if (strcmp(a, "--data-dir") == 0)
            d->dir = v;
        else if (strcmp(a, "--shards") == 0)
            cfg->shard_count = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--cpuset") == 0)
            cfg->cpuset = v;
        else if (strcmp(a, "--calls") == 0)
            d->calls = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--io-backend") == 0)
            cfg->io_backend = strcmp(v, "epoll") == 0   ? RV_IO_EPOLL
                              : strcmp(v, "uring") == 0 ? RV_IO_URING
                                                        : RV_IO_AUTO;
        else {
            fprintf(stderr, "rivven-demo: unknown option %s (see --help)\n", a);
            return -EINVAL;
        }
    }
    return 0;
}

static void demo_report(struct demo *d, uint64_t elapsed_ns)
{
    printf("\n%-6s %-4s %12s %12s %12s %10s %8s  %s\n", "shard", "cpu", "calls_made",
           "calls_served", "msgs_recv", "wakeups", "sleeps", "file");
    for (uint32_t i = 0; i < d->shards; i++) {
        struct demo_shard *ds = &demo_shards[i];
        struct rv_shard_stats st;
        if (rv_runtime_shard_stats(d->rt, i, &st) < 0)
            continue;
        printf("%-6u %-4d %12llu %12llu %12llu %10llu %8llu  %s (%s)\n", i,
               rv_runtime_shard_cpu(d->rt, i), (unsigned long long)ds->replies,
               (unsigned long long)ds->calls_served, (unsigned long long)st.msgs_received,
               (unsigned long long)st.wakeups_sent, (unsigned long long)st.sleeps, ds->path,
               ds->io_result < 0 ? rv_strerror((int)ds->io_result) : "written, fdatasync ok");
    }
    uint64_t total = 0;
    for (uint32_t i = 0; i < d->shards; i++)
        total += demo_shards[i].replies;
    printf("\n%llu cross-shard calls answered in %.1f ms (%.2f M calls/s, each a message "
           "there and a reply back)\n",
           (unsigned long long)total, (double)elapsed_ns / 1e6,
           elapsed_ns ? (double)total * 1e3 / (double)elapsed_ns : 0.0);
}

int main(int argc, char **argv)
{
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    struct demo d = {.calls = 100000, .dir = "./data"};
    if (demo_parse(argc, argv, &cfg, &d) < 0)
        return 2;
    cfg.data_dir = d.dir;
    int rc = rv_runtime_open(&d.rt, &cfg);
    if (rc < 0) {
        fprintf(stderr, "rivven-demo: cannot start the runtime: %s\n", rv_err_msg());
        return 1;
    }
    d.shards = rv_runtime_shard_count(d.rt);
    if (d.shards > DEMO_SHARDS_MAX) {
        fprintf(stderr, "rivven-demo: at most %d shards\n", DEMO_SHARDS_MAX);
        rv_runtime_close(d.rt);
        return 2;
    }
    const char *backend = rv_runtime_io_backend(d.rt) == RV_IO_URING ? "io_uring" : "epoll";
    printf("rivven runtime demo: %u shards (one per core), io backend %s, data dir %s\n", d.shards,
           backend, d.dir);
    printf("every shard calls every other shard %u times; each shard writes and fdatasyncs "
           "a file\n",
           d.calls);
    sem_init(&d.done, 0, 0);
    for (uint32_t i = 0; i < d.shards; i++) {
        demo_shards[i] = (struct demo_shard){
            .d = &d, .id = i, .fd = -1, .expected = (uint64_t)d.calls * (d.shards - 1)};
    }
    uint64_t t0 = rv_clock_now_ns();
    for (uint32_t i = 0; i < d.shards; i++) {
        if (rv_runtime_submit(d.rt, i, demo_start, &demo_shards[i]) < 0) {
            fprintf(stderr, "rivven-demo: submit: %s\n", rv_err_msg());
            rv_runtime_close(d.rt);
            return 1;
        }
    }
    while (sem_wait(&d.done) < 0 && errno == EINTR)
        ;
    uint64_t elapsed = rv_clock_now_ns() - t0;
    demo_report(&d, elapsed);
    int failed = atomic_load(&d.wrong_shard) != 0;
    for (uint32_t i = 0; i < d.shards; i++)
        failed |= demo_shards[i].io_result < 0;
    rv_runtime_close(d.rt);
    printf("%s\n", failed ? "demo FAILED" : "demo ok: runtime closed cleanly");
    return failed ? 1 : 0;
}
