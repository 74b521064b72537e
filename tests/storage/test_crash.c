/*
 * tests/storage/test_crash.c - durability under SIGKILL, and recovery from torn
 * and corrupt files.
 *
 * A child process produces with acks=all and writes every acknowledged
 * (partition, offset, sequence) to a pipe; the parent kills it with SIGKILL at
 * a random moment, reopens the data directory and checks that every
 * acknowledged record is there, at its offset, with its bytes, and that
 * offsets are contiguous.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rivven.h"
#include "tests/support/rt.h"

#define CRASH_ITERATIONS 50
#define PARTS            2

static char dir[64];

static void setup(void)
{
    strcpy(dir, "/tmp/rivven-crash-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(crash, .init = setup, .fini = teardown, .timeout = 600);

struct env {
    rv_runtime_t *rt;
    rv_store_t *st;
};

static uint32_t ckpt_ms = 20;               /* checkpoints race with the kills too */
static uint32_t fds_per_shard;              /* 0: derived from RLIMIT_NOFILE */
static uint64_t wal_file_bytes = 256 << 10; /* small: the WAL rolls */

static int env_open(struct env *e, uint32_t shards)
{
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    cfg.shard_count = shards;
    cfg.allow_oversubscribe = true;
    cfg.data_dir = dir;
    int rc = rv_runtime_open(&e->rt, &cfg);
    if (rc < 0)
        return rc;
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.checkpoint_interval_ms = ckpt_ms;
    scfg.wal_file_bytes = wal_file_bytes;
    scfg.wal_io = test_wal_io();
    scfg.segment_io = test_wal_io();
    scfg.fds_per_shard = fds_per_shard;
    rc = rv_store_open(&e->st, e->rt, &scfg);
    if (rc < 0)
        rv_runtime_close(e->rt);
    return rc;
}

static void env_close(struct env *e)
{
    rv_store_close(e->st);
    rv_runtime_close(e->rt);
}

/* rivvenctl verify over the data directory (when the build made rivvenctl). */
static void verify_dir(int iter)
{
    const char *ctl = getenv("RIVVENCTL");
    if (ctl == NULL)
        return;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s verify %s > /tmp/rivvenctl-verify.out 2>&1", ctl, dir);
    int rc = system(cmd);
    cr_assert_eq(rc, 0, "iteration %d: rivvenctl verify failed (see /tmp/rivvenctl-verify.out)",
                 iter);
}

static int value_of(char *buf, size_t len, uint32_t seq)
{
    return snprintf(buf, len, "record-%u-%0*u", seq, (int)(seq % 200), seq);
}

struct ack {
    int32_t partition;
    uint32_t seq;
    int64_t offset;
};

/* The child: produce forever, report every acknowledgement. Never returns. */
static void child_produce(int fd, uint32_t first_seq)
{
    struct env e;
    if (env_open(&e, 2) < 0)
        _exit(3);
    for (uint32_t seq = first_seq;; seq++) {
        char v[256];
        int n = value_of(v, sizeof(v), seq);
        struct rv_record r = {.key_len = -1, .value = v, .value_len = n};
        int32_t p = (int32_t)(seq % PARTS);
        int64_t off = rv_produce_sync(e.st, "durable", p, &r, 1, RV_ACKS_ALL);
        if (off < 0)
            _exit(4);
        struct ack a = {.partition = p, .seq = seq, .offset = off};
        if (write(fd, &a, sizeof(a)) != (ssize_t)sizeof(a))
            _exit(5);
    }
}

static struct ack acks[400000];
static uint32_t ack_count;

/* Every record of a partition, checked for contiguity; returns the count and
 * fills seq_at[offset]. */
static uint32_t read_partition(struct env *e, int32_t p, uint32_t *seq_at, uint32_t cap)
{
    int64_t offset = rv_list_offset(e->st, "durable", p, RV_OFFSET_EARLIEST);
    cr_assert_eq(offset, 0);
    int64_t hw = rv_list_offset(e->st, "durable", p, RV_OFFSET_LATEST);
    uint32_t n = 0;
    while (offset < hw) {
        rv_fetch_result_t *res;
        int rc = rv_fetch_sync(e->st, "durable", p, offset, 256 << 10, &res);
        cr_assert_eq(rc, 0, "fetch %d@%lld: %s", p, (long long)offset, rv_strerror(rc));
        struct rv_record_view v;
        int64_t before = offset;
        while ((rc = rv_fetch_next(res, &v)) == 1) {
            cr_assert_eq(v.offset, offset, "contiguous offsets in partition %d", p);
            uint32_t seq = 0;
            cr_assert_eq(sscanf(v.value, "record-%u-", &seq), 1);
            char want[256];
            int wl = value_of(want, sizeof(want), seq);
            cr_assert_eq(v.value_len, wl);
            cr_assert(memcmp(v.value, want, (size_t)wl) == 0, "bytes of %d@%lld", p,
                      (long long)offset);
            cr_assert_lt((uint64_t)offset, cap);
            seq_at[offset] = seq;
            offset++;
            n++;
        }
        cr_assert_eq(rc, 0, "no corrupt record is ever returned");
        rv_fetch_release(res);
        cr_assert_gt(offset, before, "fetch at %lld below the high watermark %lld made no progress",
                     (long long)before, (long long)hw);
    }
    return n;
}

static uint32_t seq_at[PARTS][400000];

Test(crash, acknowledged_records_survive_sigkill)
{
    struct env e;
    cr_assert_eq(env_open(&e, 2), 0, "%s", rv_err_msg());
    struct rv_topic_config tc;
    rv_topic_config_init(&tc);
    tc.partitions = PARTS;
    tc.segment_bytes = 64 << 10; /* rolls race with the kills */
    cr_assert_eq(rv_topic_create(e.st, "durable", &tc), 0);
    env_close(&e);

    unsigned seed = (unsigned)getpid();
    printf("crash test seed %u\n", seed);
    uint32_t next_seq = 0;
    ack_count = 0;
    for (int iter = 0; iter < CRASH_ITERATIONS; iter++) {
        int fds[2];
        cr_assert_eq(pipe(fds), 0);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            close(fds[0]);
            child_produce(fds[1], next_seq);
        }
        close(fds[1]);
        usleep(5000 + (useconds_t)(rand_r(&seed) % 60000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        cr_assert(WIFSIGNALED(status), "child ended on its own: status %d", status);
        struct ack a;
        while (read(fds[0], &a, sizeof(a)) == (ssize_t)sizeof(a)) {
            cr_assert_lt(ack_count, 400000);
            acks[ack_count++] = a;
            if (a.seq >= next_seq)
                next_seq = a.seq + 1;
        }
        close(fds[0]);
        next_seq += 1000000; /* unacknowledged sequence numbers are never reused */

        cr_assert_eq(env_open(&e, 2), 0, "reopen after kill %d: %s", iter, rv_err_msg());
        for (int32_t p = 0; p < PARTS; p++)
            read_partition(&e, p, seq_at[p], 400000);
        for (uint32_t i = 0; i < ack_count; i++) {
            cr_assert_eq(seq_at[acks[i].partition][acks[i].offset], acks[i].seq,
                         "iteration %d: acknowledged seq %u at %d@%lld lost or replaced", iter,
                         acks[i].seq, acks[i].partition, (long long)acks[i].offset);
        }
        env_close(&e);
        verify_dir(iter);
    }
    cr_assert_gt(ack_count, 100, "the children acknowledged something (%u)", ack_count);
}

/* ---- torn and corrupt files ----------------------------------------------------------------- */

static int damage_files(const char *sub, const char *suffix, unsigned *seed, bool is_truncate)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, sub);
    DIR *d = opendir(path);
    if (d == NULL)
        return 0;
    struct dirent *de;
    int damaged = 0;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name), s = strlen(suffix);
        if (n <= s || strcmp(de->d_name + n - s, suffix) != 0)
            continue;
        char file[512];
        snprintf(file, sizeof(file), "%s/%s", path, de->d_name);
        struct stat st;
        if (stat(file, &st) < 0 || st.st_size < 100)
            continue;
        off_t pos = (off_t)(rand_r(seed) % (unsigned)st.st_size);
        if (is_truncate) {
            cr_assert_eq(truncate(file, pos), 0);
        } else {
            int fd = open(file, O_RDWR);
            uint8_t b;
            cr_assert_eq(pread(fd, &b, 1, pos), 1);
            b ^= (uint8_t)(1 + rand_r(seed) % 255);
            cr_assert_eq(pwrite(fd, &b, 1, pos), 1);
            close(fd);
        }
        damaged++;
    }
    closedir(d);
    return damaged;
}

Test(crash, torn_and_corrupt_files_recover_to_valid_data)
{
    unsigned seed =
        getenv("RIVVEN_SEED") ? (unsigned)atoi(getenv("RIVVEN_SEED")) : (unsigned)getpid() * 7;
    printf("corruption test seed %u\n", seed);
    for (int round = 0; round < 12; round++) {
        struct env e;
        cr_assert_eq(env_open(&e, 1), 0, "round %d open: %s", round, rv_err_msg());
        if (round == 0) {
            struct rv_topic_config tc;
            rv_topic_config_init(&tc);
            tc.partitions = PARTS;
            tc.segment_bytes = 16 << 10;
            cr_assert_eq(rv_topic_create(e.st, "durable", &tc), 0);
        }
        for (uint32_t i = 0; i < 300; i++) {
            char v[256];
            int n = value_of(v, sizeof(v), (uint32_t)round * 1000 + i);
            struct rv_record r = {.key_len = -1, .value = v, .value_len = n};
            int64_t off = rv_produce_sync(e.st, "durable", (int32_t)(i % PARTS), &r, 1,
                                          i % 3 ? RV_ACKS_LEADER : RV_ACKS_ALL);
            cr_assert_geq(off, 0, "round %d: %s", round, rv_strerror((int)off));
        }
        env_close(&e); /* the kill test above covers unclean ends */
        bool is_truncate = rand_r(&seed) % 2;
        int hit = damage_files("topics/durable/0", ".log", &seed, is_truncate);
        hit += damage_files("wal/shard-0", ".wal", &seed, !is_truncate);
        cr_assert_eq(env_open(&e, 1), 0, "round %d reopen after damage: %s", round, rv_err_msg());
        for (int32_t p = 0; p < PARTS; p++) {
            int64_t start = rv_list_offset(e.st, "durable", p, RV_OFFSET_EARLIEST);
            int64_t hw = rv_list_offset(e.st, "durable", p, RV_OFFSET_LATEST);
            cr_assert_geq(hw, start);
            int64_t offset = start;
            while (offset < hw) {
                rv_fetch_result_t *res;
                int rc = rv_fetch_sync(e.st, "durable", p, offset, 256 << 10, &res);
                /* Damage before the active segment's tail (which open scans)
                 * is found when a read meets it: refused, never served. */
                if (rc == -EBADMSG)
                    break;
                cr_assert_eq(rc, 0, "%s", rv_strerror(rc));
                struct rv_record_view v;
                int got = 0;
                while ((rc = rv_fetch_next(res, &v)) == 1) {
                    cr_assert_geq(v.offset, offset, "round %d p%d: offset %lld after %lld", round,
                                  p, (long long)v.offset, (long long)offset);
                    uint32_t seq;
                    cr_assert_eq(sscanf(v.value, "record-%u-", &seq), 1, "valid bytes only");
                    char want[256];
                    int wl = value_of(want, sizeof(want), seq);
                    cr_assert(v.value_len == wl && memcmp(v.value, want, (size_t)wl) == 0);
                    offset = v.offset + 1;
                    got++;
                }
                cr_assert_eq(rc, 0, "a corrupt record was returned");
                rv_fetch_release(res);
                if (got == 0)
                    break; /* a gap the damage left: the rest is unreadable by design */
            }
        }
        env_close(&e);
        (void)hit;
    }
}

/* Produce one record into each of `wide` partitions in a child and kill it
 * with nothing checkpointed: reopening replays the WAL into all of them. */
static void produce_wide_and_kill(int32_t wide)
{
    struct env e;
    ckpt_ms = 600000;          /* no checkpoint: everything is replayed */
    wal_file_bytes = 16 << 20; /* nor an early one for a WAL of many files */
    cr_assert_eq(env_open(&e, 1), 0, "%s", rv_err_msg());
    struct rv_topic_config tc;
    rv_topic_config_init(&tc);
    tc.partitions = wide;
    cr_assert_eq(rv_topic_create(e.st, "wide", &tc), 0);
    env_close(&e);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        if (env_open(&e, 1) < 0)
            _exit(3);
        for (int32_t p = 0; p < wide; p++) {
            char v[256];
            int n = value_of(v, sizeof(v), (uint32_t)p);
            struct rv_record r = {.key_len = -1, .value = v, .value_len = n};
            if (rv_produce_sync(e.st, "wide", p, &r, 1, RV_ACKS_ALL) != 0)
                _exit(4);
        }
        char c = 1;
        if (write(fds[1], &c, 1) != 1)
            _exit(5);
        pause(); /* killed here, with everything acknowledged and nothing checkpointed */
        _exit(6);
    }
    char c;
    cr_assert_eq(read(fds[0], &c, 1), 1, "the child produced everything");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(fds[0]);
    close(fds[1]);
    ckpt_ms = 20;
}

static void check_wide(struct env *e, int32_t wide, int32_t step)
{
    for (int32_t p = 0; p < wide; p += step) {
        rv_fetch_result_t *res;
        cr_assert_eq(rv_fetch_sync(e->st, "wide", p, 0, 1 << 16, &res), 0);
        struct rv_record_view v;
        cr_assert_eq(rv_fetch_next(res, &v), 1, "partition %d", p);
        char want[256];
        int wl = value_of(want, sizeof(want), (uint32_t)p);
        cr_assert(v.value_len == wl && memcmp(v.value, want, (size_t)wl) == 0);
        rv_fetch_release(res);
    }
}

/* Replaying the WAL into many partitions after a kill holds only a bounded
 * number of descriptors, and every record comes back. */
Test(crash, replay_into_many_partitions_bounds_descriptors)
{
    enum { WIDE = 400 };
    produce_wide_and_kill(WIDE);
    int base = test_count_fds();
    struct env e;
    cr_assert_eq(env_open(&e, 1), 0, "reopen: %s", rv_err_msg());
    cr_assert_lt(test_count_fds(), base + 300, "replay parked descriptors (%d open, base %d)",
                 test_count_fds(), base);
    check_wide(&e, WIDE, 7);
    env_close(&e);
}

/* The same under RLIMIT_NOFILE 128 with a budget far above it: the replay
 * meets EMFILE, gives its descriptors back and goes on; serving afterwards
 * waits for descriptors instead of failing. */
Test(crash, replay_under_a_low_descriptor_limit)
{
    enum { WIDE = 400 };
    produce_wide_and_kill(WIDE);
    /* The page cache did not make it: every batch comes from the WAL. */
    for (int32_t p = 0; p < WIDE; p++) {
        char path[256];
        snprintf(path, sizeof(path), "%s/topics/wide/%d/%020d.log", dir, p, 0);
        cr_assert_eq(truncate(path, 0), 0, "%s", path);
    }
    struct rlimit saved, rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &saved), 0);
    rl = saved;
    rl.rlim_cur = 128;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    fds_per_shard = 100000;
    struct env e;
    cr_assert_eq(env_open(&e, 1), 0, "reopen: %s", rv_err_msg());
    check_wide(&e, WIDE, 1);
    env_close(&e);
    fds_per_shard = 0;
    cr_assert_eq(env_open(&e, 1), 0, "reopen with the derived budget: %s", rv_err_msg());
    check_wide(&e, WIDE, 1);
    env_close(&e);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &saved), 0);
}
