/* tests/storage/test_store.c - tests storage/store.c + plog.c through the public API. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "rivven.h"
#include "shards/io.h"
#include "storage/part.h"
#include "storage/seg.h"
#include "tests/support/rt.h"

static char dir[1024];

static void setup(void)
{
    strcpy(dir, "/tmp/rivven-store-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[4096];
    if (strstr(dir, "/small/") != NULL) /* a failed full-disk test */
        *strstr(dir, "/small/") = '\0';
    snprintf(cmd, sizeof(cmd), "umount %s/small 2>/dev/null; rm -rf %s", dir, dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(store, .init = setup, .fini = teardown, .timeout = 120);

struct env {
    rv_runtime_t *rt;
    rv_store_t *st;
};

static struct env env_open_cfg(uint32_t shards, const struct rv_store_config *scfg)
{
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    cfg.shard_count = shards;
    cfg.allow_oversubscribe = true;
    cfg.data_dir = dir;
    struct env e = {0};
    int rc = rv_runtime_open(&e.rt, &cfg);
    cr_assert_eq(rc, 0, "runtime: %s", rv_err_msg());
    struct rv_store_config sc = *scfg;
    if (sc.wal_io == RV_WAL_IO_AUTO && sc.segment_io == RV_WAL_IO_AUTO)
        sc.wal_io = sc.segment_io = test_wal_io(); /* meson runs the suite each way */
    rc = rv_store_open(&e.st, e.rt, &sc);
    cr_assert_eq(rc, 0, "store: %s: %s", rv_strerror(rc), rv_err_msg());
    return e;
}

static struct env env_open(uint32_t shards)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    return env_open_cfg(shards, &scfg);
}

static void env_close(struct env *e)
{
    rv_store_close(e->st);
    rv_runtime_close(e->rt);
}

static void make_topic(struct env *e, const char *name, int32_t partitions, const char *k,
                       const char *v)
{
    struct rv_topic_config tc;
    rv_topic_config_init(&tc);
    tc.partitions = partitions;
    if (k != NULL)
        cr_assert_eq(rv_topic_config_set(&tc, k, v), 0, "%s", rv_err_msg());
    int rc = rv_topic_create(e->st, name, &tc);
    cr_assert_eq(rc, 0, "create %s: %s", name, rv_err_msg());
}

static int64_t produce_one(struct env *e, const char *topic, int32_t p, uint32_t i,
                           enum rv_acks acks)
{
    char key[32], val[128];
    int kl = snprintf(key, sizeof(key), "key-%u", i);
    int vl = snprintf(val, sizeof(val), "value-%u-%0*u", i, (int)(i % 50), i);
    struct rv_record r = {.key = key, .key_len = kl, .value = val, .value_len = vl};
    return rv_produce_sync(e->st, topic, p, &r, 1, acks);
}

/* Wait until partition p of topic shows `end` records (acks none/leader
 * complete before their WAL write; the log shows them after it). */
static void wait_visible(struct env *e, const char *topic, int32_t p, int64_t end)
{
    for (int w = 0; w < 5000 && rv_list_offset(e->st, topic, p, RV_OFFSET_LATEST) < end; w++)
        usleep(1000);
    cr_assert_eq(rv_list_offset(e->st, topic, p, RV_OFFSET_LATEST), end);
}

/* Read every record from `from` and check values; returns how many. */
static uint32_t read_all(struct env *e, const char *topic, int32_t p, int64_t from, uint32_t first)
{
    int64_t offset = from;
    uint32_t n = 0;
    for (int guard = 0; guard < 100000; guard++) {
        rv_fetch_result_t *res = NULL;
        int rc = rv_fetch_sync(e->st, topic, p, offset, 64 << 10, &res);
        cr_assert_eq(rc, 0, "fetch at %lld: %s", (long long)offset, rv_strerror(rc));
        struct rv_record_view v;
        int got = 0;
        while ((rc = rv_fetch_next(res, &v)) == 1) {
            char want[128];
            uint32_t i = first + (uint32_t)(v.offset - from);
            int wl = snprintf(want, sizeof(want), "value-%u-%0*u", i, (int)(i % 50), i);
            cr_assert_eq(v.offset, offset, "offsets are contiguous");
            cr_assert_eq(v.value_len, wl);
            cr_assert(memcmp(v.value, want, (size_t)wl) == 0, "value of offset %lld",
                      (long long)v.offset);
            offset++;
            n++;
            got++;
        }
        cr_assert_eq(rc, 0);
        int64_t hw = rv_fetch_high_watermark(res);
        rv_fetch_release(res);
        if (offset >= hw)
            break;
        cr_assert_gt(got, 0, "progress");
    }
    return n;
}

Test(store, produce_fetch_and_survive_a_restart)
{
    struct env e = env_open(2);
    make_topic(&e, "orders", 3, NULL, NULL);
    for (uint32_t i = 0; i < 300; i++) {
        /* Each partition's last append is acks=all: once it completes, all of
         * the partition's appends are visible (leader completes earlier). */
        int64_t off = produce_one(&e, "orders", (int32_t)(i % 3), i / 3 + (i % 3) * 1000,
                                  i % 2 || i >= 297 ? RV_ACKS_ALL : RV_ACKS_LEADER);
        cr_assert_eq(off, (int64_t)(i / 3), "offset of record %u: %lld (%s)", i, (long long)off,
                     rv_err_msg());
    }
    for (int32_t p = 0; p < 3; p++)
        cr_assert_eq(read_all(&e, "orders", p, 0, (uint32_t)p * 1000), 100);
    env_close(&e);

    e = env_open(2);
    for (int32_t p = 0; p < 3; p++) {
        cr_assert_eq(read_all(&e, "orders", p, 0, (uint32_t)p * 1000), 100, "after restart");
        cr_assert_eq(rv_list_offset(e.st, "orders", p, RV_OFFSET_LATEST), 100);
        cr_assert_eq(rv_list_offset(e.st, "orders", p, RV_OFFSET_EARLIEST), 0);
    }
    cr_assert_eq(produce_one(&e, "orders", 1, 1100, RV_ACKS_ALL), 100, "appends continue");
    env_close(&e);
}

Test(store, a_different_shard_count_still_finds_everything)
{
    struct env e = env_open(3);
    make_topic(&e, "moves", 4, NULL, NULL);
    for (uint32_t i = 0; i < 40; i++)
        cr_assert_geq(
            produce_one(&e, "moves", (int32_t)(i % 4), i / 4 + (i % 4) * 1000, RV_ACKS_ALL), 0);
    env_close(&e);
    e = env_open(1);
    for (int32_t p = 0; p < 4; p++)
        cr_assert_eq(read_all(&e, "moves", p, 0, (uint32_t)p * 1000), 10);
    env_close(&e);
}

Test(store, topic_administration_errors_are_clear)
{
    struct env e = env_open(1);
    struct rv_topic_config tc;
    rv_topic_config_init(&tc);
    cr_assert_eq(rv_topic_create(e.st, "", &tc), -EINVAL);
    cr_assert_eq(rv_topic_create(e.st, "..", &tc), -EINVAL);
    cr_assert_eq(rv_topic_create(e.st, "bad/name", &tc), -EINVAL);
    char longname[300];
    memset(longname, 'a', 250);
    longname[250] = '\0';
    cr_assert_eq(rv_topic_create(e.st, longname, &tc), -EINVAL);
    cr_assert_eq(rv_topic_create(e.st, "ok.topic_1-x", &tc), 0);
    cr_assert_eq(rv_topic_create(e.st, "ok.topic_1-x", &tc), -EEXIST);
    cr_assert_eq(rv_topic_config_set(&tc, "retention.ms", "soon"), -EINVAL);
    cr_assert_eq(rv_topic_config_set(&tc, "no.such.setting", "1"), -ENOENT);
    cr_assert_eq(rv_topic_config_set(&tc, "compression.type", "brotli"), -EINVAL);
    cr_assert_eq(rv_topic_config_set(&tc, "compression", "lz4"), 0, "the issue's name for it");
    cr_assert_str_eq(tc.compression, "lz4");
    cr_assert_eq(rv_topic_config_set(&tc, "compression", "none"), 0);
    tc.partitions = 0;
    cr_assert_eq(rv_topic_create(e.st, "zero", &tc), -EINVAL);
    cr_assert_eq(produce_one(&e, "missing", 0, 0, RV_ACKS_ALL), -ENOENT);
    cr_assert_eq(produce_one(&e, "ok.topic_1-x", 1, 0, RV_ACKS_ALL), -ENOENT, "partition 1");
    rv_fetch_result_t *res;
    cr_assert_eq(rv_fetch_sync(e.st, "ok.topic_1-x", 0, 5, 1000, &res), -ERANGE);
    cr_assert_eq(rv_topic_delete(e.st, "missing"), -ENOENT);
    char **names;
    uint32_t count;
    cr_assert_eq(rv_topic_list(e.st, &names, &count), 0);
    cr_assert_eq(count, 1);
    cr_assert_str_eq(names[0], "ok.topic_1-x");
    rv_topic_list_free(names, count);
    cr_assert_eq(rv_topic_delete(e.st, "ok.topic_1-x"), 0);
    cr_assert_eq(produce_one(&e, "ok.topic_1-x", 0, 0, RV_ACKS_ALL), -ENOENT);
    cr_assert_eq(rv_topic_create(e.st, "ok.topic_1-x", &tc.partitions == 0 ? &tc : &tc), -EINVAL);
    env_close(&e);
    e = env_open(1);
    cr_assert_eq(rv_topic_list(e.st, &names, &count), 0);
    cr_assert_eq(count, 0, "deleted topics stay deleted");
    rv_topic_list_free(names, count);
    env_close(&e);
}

/* A topic deleted while the process died between removing its description
 * (the commit point) and its files, or whose files could not all be removed:
 * a topic created again under the name starts empty, never with the old
 * records. */
Test(store, a_deleted_topics_leftovers_never_come_back)
{
    struct env e = env_open(1);
    make_topic(&e, "gone", 1, NULL, NULL);
    make_topic(&e, "donor", 1, NULL, NULL);
    for (uint32_t i = 0; i < 10; i++) {
        cr_assert_eq(produce_one(&e, "gone", 0, i, RV_ACKS_ALL), i);
        cr_assert_eq(produce_one(&e, "donor", 0, i, RV_ACKS_ALL), i);
    }
    env_close(&e);
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "rm %s/meta/topics/gone.topic", dir); /* the crash */
    cr_assert_eq(system(cmd), 0);
    e = env_open(1);
    char path[2048];
    snprintf(path, sizeof(path), "%s/topics/gone", dir);
    struct stat sb;
    cr_assert_neq(stat(path, &sb), 0, "the leftovers were removed at open");
    make_topic(&e, "gone", 1, NULL, NULL);
    cr_assert_eq(produce_one(&e, "gone", 0, 100, RV_ACKS_ALL), 0, "starts at offset 0");
    cr_assert_eq(read_all(&e, "gone", 0, 0, 100), 1, "only the new record");
    /* Leftovers that appear while the store runs (a removal that failed). */
    snprintf(cmd, sizeof(cmd),
             "mkdir -p %s/topics/ghost && cp -a %s/topics/donor/0 %s/topics/ghost/0", dir, dir,
             dir);
    cr_assert_eq(system(cmd), 0);
    make_topic(&e, "ghost", 1, NULL, NULL);
    cr_assert_eq(rv_list_offset(e.st, "ghost", 0, RV_OFFSET_LATEST), 0, "empty");
    cr_assert_eq(produce_one(&e, "ghost", 0, 0, RV_ACKS_ALL), 0);
    cr_assert_eq(read_all(&e, "ghost", 0, 0, 0), 1);
    env_close(&e);
    /* Without a catalog directory at all the topics are no orphans: the open
     * refuses, and deletes nothing. */
    snprintf(cmd, sizeof(cmd), "mv %s/meta %s/meta.away", dir, dir);
    cr_assert_eq(system(cmd), 0);
    struct rv_runtime_config rc;
    rv_runtime_config_init(&rc);
    rc.shard_count = 1;
    rc.allow_oversubscribe = true;
    rc.data_dir = dir;
    rv_runtime_t *rt = NULL;
    cr_assert_eq(rv_runtime_open(&rt, &rc), 0);
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    rv_store_t *st = NULL;
    cr_assert_eq(rv_store_open(&st, rt, &scfg), -EUCLEAN);
    cr_assert(strstr(rv_err_msg(), "missing") != NULL, "%s", rv_err_msg());
    rv_runtime_close(rt);
    snprintf(path, sizeof(path), "%s/topics/donor/0", dir);
    cr_assert_eq(stat(path, &sb), 0, "nothing was deleted");
    snprintf(cmd, sizeof(cmd), "mv %s/meta.away %s/meta", dir, dir);
    cr_assert_eq(system(cmd), 0);
    e = env_open(1);
    cr_assert_eq(read_all(&e, "donor", 0, 0, 0), 10);
    env_close(&e);
}

/* The WAL's group size is the store's to set (rivven.wal.group.bytes): bounded
 * and aligned, or the open says why. */
Test(store, wal_group_bytes_is_checked)
{
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    cfg.shard_count = 1;
    cfg.allow_oversubscribe = true;
    cfg.data_dir = dir;
    rv_runtime_t *rt = NULL;
    cr_assert_eq(rv_runtime_open(&rt, &cfg), 0);
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    rv_store_t *st = NULL;
    scfg.wal_group_bytes = 5000;
    cr_assert_eq(rv_store_open(&st, rt, &scfg), -EINVAL);
    cr_assert(strstr(rv_err_msg(), "wal_group_bytes") != NULL, "%s", rv_err_msg());
    scfg.wal_group_bytes = (uint32_t)(scfg.wal_file_bytes / 2);
    cr_assert_eq(rv_store_open(&st, rt, &scfg), -EINVAL);
    rv_runtime_close(rt);
    scfg.wal_group_bytes = 8192;
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, "g", 1, NULL, NULL);
    struct rv_record recs[64];
    static char vals[64][1000];
    for (int i = 0; i < 64; i++) {
        int n =
            snprintf(vals[i], sizeof(vals[i]), "value-%u-%0*u", (unsigned)i, i % 50, (unsigned)i);
        memset(vals[i] + n, 'x', sizeof(vals[i]) - (size_t)n); /* a 64 KB batch: over a group */
        recs[i] = (struct rv_record){.key_len = -1, .value = vals[i], .value_len = sizeof(vals[i])};
    }
    cr_assert_eq(rv_produce_sync(e.st, "g", 0, recs, 64, RV_ACKS_ALL), 0, "%s", rv_err_msg());
    cr_assert_eq(rv_produce_sync(e.st, "g", 0, recs, 1, RV_ACKS_ALL), 64);
    env_close(&e);
    e = env_open_cfg(1, &scfg);
    cr_assert_eq(rv_list_offset(e.st, "g", 0, RV_OFFSET_LATEST), 65);
    env_close(&e);
}

Test(store, every_codec_round_trips)
{
    struct env e = env_open(1);
    const char *codecs[] = {"gzip", "snappy", "lz4", "zstd", "none"};
    for (int c = 0; c < 5; c++) {
        char name[32];
        snprintf(name, sizeof(name), "t-%s", codecs[c]);
        make_topic(&e, name, 1, "compression.type", codecs[c]);
        struct rv_record recs[50];
        char vals[50][64];
        for (int i = 0; i < 50; i++) {
            int n = snprintf(vals[i], sizeof(vals[i]), "value-%u-%0*u", (unsigned)i, i % 50,
                             (unsigned)i);
            recs[i] =
                (struct rv_record){.key = NULL, .key_len = -1, .value = vals[i], .value_len = n};
        }
        cr_assert_eq(rv_produce_sync(e.st, name, 0, recs, 50, RV_ACKS_ALL), 0, "%s", codecs[c]);
        cr_assert_eq(read_all(&e, name, 0, 0, 0), 50, "%s", codecs[c]);
    }
    env_close(&e);
}

/* acks none and leader complete at the in-memory append, before the WAL
 * write (held back here by a long group window); the log shows records once
 * they are in the WAL: until then a fetch of an acknowledged offset is empty
 * (not out of range), and an acks=all append completes only after the write,
 * with everything before it visible. */
Test(store, acks_none_and_leader_complete_before_the_wal_write)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.wal_group_window_us = 1000000;
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, "early", 1, NULL, NULL);
    cr_assert_eq(produce_one(&e, "early", 0, 0, RV_ACKS_NONE), 0);
    cr_assert_eq(produce_one(&e, "early", 0, 1, RV_ACKS_LEADER), 1);
    cr_assert_eq(rv_list_offset(e.st, "early", 0, RV_OFFSET_LATEST), 0, "not in the WAL yet");
    for (int64_t off = 0; off <= 2; off++) {
        rv_fetch_result_t *res = NULL;
        cr_assert_eq(rv_fetch_sync(e.st, "early", 0, off, 1 << 20, &res), 0,
                     "offset %lld is acknowledged, not out of range", (long long)off);
        struct rv_record_view v;
        cr_assert_eq(rv_fetch_next(res, &v), 0, "nothing to read before the WAL write");
        cr_assert_eq(rv_fetch_high_watermark(res), 0);
        rv_fetch_release(res);
    }
    rv_fetch_result_t *res = NULL;
    cr_assert_eq(rv_fetch_sync(e.st, "early", 0, 3, 1 << 20, &res), -ERANGE, "never assigned");
    cr_assert_eq(produce_one(&e, "early", 0, 2, RV_ACKS_ALL), 2);
    cr_assert_eq(rv_list_offset(e.st, "early", 0, RV_OFFSET_LATEST), 3);
    cr_assert_eq(read_all(&e, "early", 0, 0, 0), 3);
    env_close(&e);
}

Test(store, small_segments_roll_and_old_data_comes_from_disk)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.hot_bytes = 16 << 10; /* tiny hot tier: early offsets are read from segments */
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, "rolls", 1, "segment.bytes", "4096");
    /* acks=none completes before its WAL write, and the log shows a batch
     * only after that: the last append is acks=all, which completes after
     * every earlier one is in the WAL (and so visible). */
    for (uint32_t i = 0; i < 2000; i++)
        cr_assert_eq(
            produce_one(&e, "rolls", 0, i, i % 10 && i != 1999 ? RV_ACKS_NONE : RV_ACKS_ALL), i);
    struct rv_partition_info info;
    cr_assert_eq(rv_partition_info(e.st, "rolls", 0, &info), 0);
    cr_assert_gt(info.segments, 3, "segments: %u", info.segments);
    cr_assert_eq(info.high_watermark, 2000);
    cr_assert_eq(read_all(&e, "rolls", 0, 0, 0), 2000);
    cr_assert_eq(read_all(&e, "rolls", 0, 1234, 1234), 766, "from the middle");
    env_close(&e);
    e = env_open_cfg(1, &scfg);
    cr_assert_eq(read_all(&e, "rolls", 0, 0, 0), 2000);
    env_close(&e);
}

static int scan_count(void *arg, const struct rv_batch_view *batch, uint64_t pos)
{
    (void)batch;
    (void)pos;
    (*(uint32_t *)arg)++;
    return 0;
}

/* Every segment of topic/partition holds valid batches and nothing after
 * them (no padding left by direct writes); returns how many segments. */
static uint32_t check_segments_end_at_their_data(const char *topic, int32_t p)
{
    char pdir[1100];
    snprintf(pdir, sizeof(pdir), "%.900s/topics/%s/%d", dir, topic, p);
    DIR *d = opendir(pdir);
    cr_assert_not_null(d, "%s", pdir);
    struct dirent *de;
    uint32_t segs = 0;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n < 4 || strcmp(de->d_name + n - 4, ".log") != 0)
            continue;
        char path[1400];
        snprintf(path, sizeof(path), "%s/%s", pdir, de->d_name);
        int fd = open(path, O_RDONLY);
        cr_assert_geq(fd, 0);
        struct stat sb;
        cr_assert_eq(fstat(fd, &sb), 0);
        uint32_t batches = 0;
        uint64_t stop = 0;
        int rc = rv_seg_scan_file(fd, 0, 1 << 20, scan_count, &batches, &stop);
        close(fd);
        cr_assert_eq(rc, 0, "%s: %s at byte %llu of %lld", path, rv_strerror(rc),
                     (unsigned long long)stop, (long long)sb.st_size);
        cr_assert_eq(stop, (uint64_t)sb.st_size, "%s ends at its data", path);
        segs++;
    }
    closedir(d);
    return segs;
}

/* Direct segment writes (the default where the filesystem takes O_DIRECT):
 * appends that end inside a 4 KiB block are rewritten with the next ones,
 * also after the idle sweep closed the descriptor (the block is read back);
 * rolls and a clean close leave each file exactly at its data, and every
 * record reads back from the disk, before and after a restart. */
Test(store, direct_segments_rewrite_their_last_block_and_end_at_their_data)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.hot_bytes = 8 << 10;         /* reads come from the segments */
    scfg.checkpoint_interval_ms = 10; /* the sweep closes idle descriptors every 20 ms */
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, "tail", 1, "segment.bytes", "7000");
    int base = test_count_fds();
    uint32_t i = 0;
    for (uint32_t round = 0; round < 6; round++) {
        for (uint32_t k = 0; k < 37; k++, i++)
            cr_assert_eq(produce_one(&e, "tail", 0, i, k % 5 ? RV_ACKS_LEADER : RV_ACKS_ALL), i);
        wait_visible(&e, "tail", 0, i);
        int now = test_count_fds();
        for (int w = 0; w < 500 && now > base; w++) {
            usleep(10000); /* until the sweep closes the segment */
            now = test_count_fds();
        }
        cr_assert_leq(now, base, "the sweep closed the segment (%d open, base %d)", now, base);
    }
    cr_assert_eq(read_all(&e, "tail", 0, 0, 0), i);
    struct rv_partition_info info;
    cr_assert_eq(rv_partition_info(e.st, "tail", 0, &info), 0);
    cr_assert_gt(info.segments, 2, "it rolled: %u segments", info.segments);
    env_close(&e);
    cr_assert_eq(check_segments_end_at_their_data("tail", 0), info.segments);
    e = env_open_cfg(1, &scfg);
    cr_assert_eq(read_all(&e, "tail", 0, 0, 0), i);
    cr_assert_eq(read_all(&e, "tail", 0, 100, 100), i - 100, "from the middle");
    env_close(&e);
}

#define BURST_VALUE    60000u
#define BURST_PRODUCES 48
#define BURST_PER      8

static _Atomic int burst_done;
static _Atomic int64_t burst_result[BURST_PRODUCES];

static void burst_cb(void *arg, int64_t base)
{
    atomic_store(&burst_result[(intptr_t)arg], base);
    atomic_fetch_add(&burst_done, 1);
}

static void burst_value(uint8_t *out, uint32_t seq)
{
    for (uint32_t j = 0; j < BURST_VALUE; j++)
        out[j] = (uint8_t)(seq * 131u + j / 7u);
}

/* Every record of the burst reads back once, with its bytes (from the disk). */
static void burst_check(struct env *e, const char *topic)
{
    static uint8_t want[BURST_VALUE];
    static bool seen[BURST_PRODUCES * BURST_PER];
    memset(seen, 0, sizeof(seen));
    int64_t offset = 0;
    while (offset < BURST_PRODUCES * BURST_PER) {
        rv_fetch_result_t *res = NULL;
        cr_assert_eq(rv_fetch_sync(e->st, topic, 0, offset, 1 << 20, &res), 0);
        struct rv_record_view v;
        int got = 0;
        while (rv_fetch_next(res, &v) == 1) {
            cr_assert_eq(v.offset, offset);
            cr_assert_eq(v.key_len, (int32_t)sizeof(uint32_t));
            uint32_t seq;
            memcpy(&seq, v.key, sizeof(seq));
            cr_assert_lt(seq, BURST_PRODUCES * BURST_PER);
            cr_assert_not(seen[seq], "record %u once", seq);
            seen[seq] = true;
            cr_assert_eq(v.value_len, (int32_t)BURST_VALUE);
            burst_value(want, seq);
            cr_assert(memcmp(v.value, want, BURST_VALUE) == 0, "bytes of record %u", seq);
            offset++;
            got++;
        }
        rv_fetch_release(res);
        cr_assert_gt(got, 0, "progress at %lld", (long long)offset);
    }
}

/* A burst of large batches queues megabytes behind the segment's write in
 * flight: direct writes then gather several pool blocks at once (and split
 * batches across them); every byte reads back from the disk, also after a
 * restart. */
Test(store, a_burst_of_large_batches_reads_back_from_the_segment)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.hot_bytes = 64 << 10; /* reads come from the segment */
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, "burst", 1, NULL, NULL);
    static uint8_t vals[BURST_PER][BURST_VALUE];
    static uint32_t keys[BURST_PER];
    for (int i = 0; i < BURST_PRODUCES; i++)
        atomic_store(&burst_result[i], -ENOBUFS);
    for (int round = 0; round < 200; round++) { /* -ENOBUFS (the WAL is full): again */
        int sent = 0;
        atomic_store(&burst_done, 0);
        for (int i = 0; i < BURST_PRODUCES; i++) {
            if (atomic_load(&burst_result[i]) != -ENOBUFS)
                continue;
            struct rv_record recs[BURST_PER];
            for (int k = 0; k < BURST_PER; k++) {
                keys[k] = (uint32_t)(i * BURST_PER + k);
                burst_value(vals[k], keys[k]);
                recs[k] = (struct rv_record){.key = &keys[k],
                                             .key_len = sizeof(keys[k]),
                                             .value = vals[k],
                                             .value_len = BURST_VALUE};
            }
            int rc = rv_produce(e.st, "burst", 0, recs, BURST_PER, RV_ACKS_NONE, burst_cb,
                                (void *)(intptr_t)i);
            cr_assert_eq(rc, 0, "%s", rv_strerror(rc));
            sent++;
        }
        if (sent == 0)
            break;
        for (int w = 0; w < 5000 && atomic_load(&burst_done) < sent; w++)
            usleep(1000);
        cr_assert_eq(atomic_load(&burst_done), sent);
    }
    for (int i = 0; i < BURST_PRODUCES; i++)
        cr_assert_geq(atomic_load(&burst_result[i]), 0, "produce %d: %s", i,
                      rv_strerror((int)atomic_load(&burst_result[i])));
    wait_visible(&e, "burst", 0, BURST_PRODUCES * BURST_PER);
    burst_check(&e, "burst");
    env_close(&e);
    cr_assert_eq(check_segments_end_at_their_data("burst", 0), 1);
    e = env_open_cfg(1, &scfg);
    burst_check(&e, "burst");
    env_close(&e);
}

/* A direct segment's last block is read back before the next write; a file
 * shorter than the data the log knows (damaged behind its back) fails the log
 * with -EIO instead of writing over what is missing. */
Test(store, a_direct_segment_shorter_than_its_data_fails_the_log)
{
    if (test_wal_io() == RV_WAL_IO_BUFFERED)
        cr_skip_test("segments are written through the page cache in this run");
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.checkpoint_interval_ms = 10; /* the sweep closes idle descriptors every 20 ms */
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, "short", 1, NULL, NULL);
    int base = test_count_fds();
    for (uint32_t i = 0; i < 10; i++)
        cr_assert_eq(produce_one(&e, "short", 0, i, RV_ACKS_ALL), i);
    int now = test_count_fds();
    for (int w = 0; w < 500 && now > base; w++) {
        usleep(10000);
        now = test_count_fds();
    }
    cr_assert_leq(now, base, "the sweep closed the segment");
    char path[1100];
    snprintf(path, sizeof(path), "%.900s/topics/short/0/%020d.log", dir, 0);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0, "%s", path);
    cr_assert_gt(sb.st_size, 100);
    cr_assert_eq(truncate(path, 20), 0); /* the data ends inside the first block */
    /* Acknowledged from the WAL; the segment's reopen finds the file short. */
    cr_assert_eq(produce_one(&e, "short", 0, 10, RV_ACKS_ALL), 10);
    int64_t rc = 0;
    for (int w = 0; w < 500 && rc >= 0; w++) {
        rc = produce_one(&e, "short", 0, 11, RV_ACKS_ALL);
        if (rc >= 0)
            usleep(10000);
    }
    /* Failed (-EIO); its rebuild then finds the file shorter than what a
     * sync made durable, which the WAL cannot give back (checkpointed data
     * is no longer there): it refuses (-EBADMSG) instead of going on with a
     * hole, and keeps refusing. */
    cr_assert(rc == -EIO || rc == -EBADMSG, "the log failed: %s",
              rc < 0 ? rv_strerror((int)rc) : "no error");
    for (int w = 0; w < 300 && rc == -EIO; w++) {
        usleep(10000);
        rc = produce_one(&e, "short", 0, 11, RV_ACKS_ALL);
    }
    cr_assert_eq(rc, -EBADMSG, "the rebuild refused: %s", rv_strerror((int)rc));
    usleep(300 * 1000);
    cr_assert_eq(produce_one(&e, "short", 0, 11, RV_ACKS_ALL), -EBADMSG, "and still does");
    env_close(&e);
}

Test(store, delete_records_moves_the_log_start_durably)
{
    struct env e = env_open(1);
    make_topic(&e, "trim", 1, "segment.bytes", "2048");
    for (uint32_t i = 0; i < 500; i++)
        cr_assert_eq(produce_one(&e, "trim", 0, i, RV_ACKS_ALL), i);
    struct rv_partition_info before;
    cr_assert_eq(rv_partition_info(e.st, "trim", 0, &before), 0);
    cr_assert_eq(rv_delete_records(e.st, "trim", 0, 300), 300);
    cr_assert_eq(rv_delete_records(e.st, "trim", 0, 900), -ERANGE, "beyond the high watermark");
    struct rv_partition_info after;
    cr_assert_eq(rv_partition_info(e.st, "trim", 0, &after), 0);
    cr_assert_eq(after.log_start, 300);
    cr_assert_lt(after.segments, before.segments, "whole segments below were deleted");
    rv_fetch_result_t *res;
    cr_assert_eq(rv_fetch_sync(e.st, "trim", 0, 299, 1000, &res), -ERANGE);
    cr_assert_eq(read_all(&e, "trim", 0, 300, 300), 200);
    env_close(&e);
    e = env_open(1);
    cr_assert_eq(rv_list_offset(e.st, "trim", 0, RV_OFFSET_EARLIEST), 300, "after restart");
    env_close(&e);
}

/* Time retention: a partition nobody writes to any more still lets its data
 * expire; its active segment is rolled once its newest record passed
 * retention.ms, then deleted like any closed segment (as Kafka does). */
/* The wall clock in ms (record timestamps). */
static int64_t wall_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static int64_t produce_at(struct env *e, const char *topic, uint32_t i, int64_t ts_ms)
{
    char val[128];
    int vl = snprintf(val, sizeof(val), "value-%u-%0*u", i, (int)(i % 50), i);
    struct rv_record r = {.key_len = -1, .value = val, .value_len = vl, .timestamp_ms = ts_ms};
    return rv_produce_sync(e->st, topic, 0, &r, 1, RV_ACKS_ALL);
}

Test(store, retention_by_time_expires_a_quiet_partition_whole)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.retention_check_ms = 20;
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, "aged", 1, "segment.bytes", "2048");
    struct rv_topic_config tc;
    cr_assert_eq(rv_topic_describe(e.st, "aged", &tc), 0);
    cr_assert_eq(rv_topic_config_set(&tc, "retention.ms", "60000"), 0);
    cr_assert_eq(rv_topic_alter(e.st, "aged", &tc), 0);
    int64_t now_ms = wall_ms();
    for (uint32_t i = 0; i < 60; i++) /* an hour old: past retention.ms */
        cr_assert_eq(produce_at(&e, "aged", i, now_ms - 3600 * 1000), i);
    for (uint32_t i = 60; i < 100; i++) /* new: kept */
        cr_assert_eq(produce_at(&e, "aged", i, now_ms), i);
    struct rv_partition_info info = {0};
    for (int i = 0; i < 1000 && info.log_start < 20; i++) {
        usleep(10000);
        cr_assert_eq(rv_partition_info(e.st, "aged", 0, &info), 0);
    }
    usleep(200000); /* ten more passes */
    cr_assert_eq(rv_partition_info(e.st, "aged", 0, &info), 0);
    cr_assert_geq(info.log_start, 20, "old segments went: start %lld", (long long)info.log_start);
    cr_assert_leq(info.log_start, 60, "a segment with new records stays: start %lld",
                  (long long)info.log_start);
    cr_assert_eq(read_all(&e, "aged", 0, info.log_start, (uint32_t)info.log_start),
                 100 - (uint32_t)info.log_start);
    /* Now the partition goes quiet with only old data in its active segment. */
    make_topic(&e, "quiet", 1, NULL, NULL);
    cr_assert_eq(rv_topic_describe(e.st, "quiet", &tc), 0);
    cr_assert_eq(rv_topic_config_set(&tc, "retention.ms", "60000"), 0);
    cr_assert_eq(rv_topic_alter(e.st, "quiet", &tc), 0);
    for (uint32_t i = 0; i < 10; i++)
        cr_assert_eq(produce_at(&e, "quiet", i, now_ms - 3600 * 1000), i);
    info = (struct rv_partition_info){0};
    for (int i = 0; i < 1000 && info.log_start < 10; i++) {
        usleep(10000);
        cr_assert_eq(rv_partition_info(e.st, "quiet", 0, &info), 0);
    }
    cr_assert_eq(info.log_start, 10, "the active segment was rolled and deleted");
    cr_assert_eq(info.high_watermark, 10, "offsets go on from there");
    cr_assert_eq(produce_at(&e, "quiet", 10, now_ms), 10);
    cr_assert_eq(read_all(&e, "quiet", 0, 10, 10), 1);
    env_close(&e);
}

/* Bytes of the .log files of dir/topics/<topic>/0 (without loading it). */
static long log_bytes_on_disk(const char *topic)
{
    char path[2048];
    snprintf(path, sizeof(path), "%s/topics/%s/0", dir, topic);
    DIR *d = opendir(path);
    cr_assert_not_null(d, "%s", path);
    long total = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        char file[4096];
        struct stat sb;
        snprintf(file, sizeof(file), "%s/%s", path, de->d_name);
        if (n > 4 && strcmp(de->d_name + n - 4, ".log") == 0 && stat(file, &sb) == 0)
            total += (long)sb.st_size;
    }
    closedir(d);
    return total;
}

/* The segment bases of partition 0 of topic, up to max of them; how many. */
static uint32_t segment_bases(const char *topic, uint64_t *out, uint32_t max)
{
    char pdir[2048];
    snprintf(pdir, sizeof(pdir), "%s/topics/%s/0", dir, topic);
    uint64_t *bases = NULL;
    uint32_t count = 0;
    cr_assert_eq(rv_seg_list(pdir, &bases, &count), 0);
    for (uint32_t i = 0; i < count && i < max; i++)
        out[i] = bases[i];
    free(bases);
    return count;
}

/* The path of segment base of partition 0 of topic. */
static void segment_path(char *out, size_t len, const char *topic, uint64_t base)
{
    snprintf(out, len, "%s/topics/%s/0/%020llu.log", dir, topic, (unsigned long long)base);
}

/* Flip a bit of the byte at pos of path, behind the store's back. */
static void flip_bit(const char *path, long pos)
{
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0, "%s", path);
    uint8_t b;
    cr_assert_eq(pread(fd, &b, 1, pos), 1);
    b ^= 0x40;
    cr_assert_eq(pwrite(fd, &b, 1, pos), 1);
    close(fd);
}

/* A batch damaged on disk behind the store's back (bit rot): a fetch whose
 * read meets it before the offset asked for is refused with -EBADMSG (Kafka's
 * CORRUPT_MESSAGE), never answered empty (a consumer would ask again
 * forever); what precedes it, and later segments, are served. */
Test(store, a_damaged_batch_on_disk_is_an_error_for_fetches)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.hot_bytes = 8 << 10; /* reads come from the segments */
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, "rot", 1, "segment.bytes", "2048");
    for (uint32_t i = 0; i < 400; i++) /* 36 KiB: the first segments left the hot tier */
        cr_assert_eq(produce_one(&e, "rot", 0, i, RV_ACKS_ALL), i);
    uint64_t bases[3];
    cr_assert_geq(segment_bases("rot", bases, 3), 3u);
    uint64_t base = bases[1]; /* a closed segment */
    uint64_t next = bases[2];
    char path[4096];
    segment_path(path, sizeof(path), "rot", base);
    flip_bit(path, 70); /* inside the first batch's record */
    rv_fetch_result_t *res = NULL;
    int frc = rv_fetch_sync(e.st, "rot", 0, (int64_t)base, 64 << 10, &res);
    cr_assert_eq(frc, -EBADMSG, "%d %s", frc, rv_strerror(frc));
    cr_assert_eq(rv_fetch_sync(e.st, "rot", 0, (int64_t)base - 1, 64 << 10, &res), 0);
    struct rv_record_view v;
    cr_assert_eq(rv_fetch_next(res, &v), 1, "the batch before is served");
    cr_assert_eq(v.offset, (int64_t)base - 1);
    rv_fetch_release(res);
    /* A read from where the index points for offset base+1 meets the damaged
     * batch first: refused too. The next segment reads fine. */
    cr_assert_eq(rv_fetch_sync(e.st, "rot", 0, (int64_t)base + 1, 64 << 10, &res), -EBADMSG);
    cr_assert_eq(read_all(&e, "rot", 0, (int64_t)next, (uint32_t)next), 400 - next);
    env_close(&e);
}

/* Damage found at open in a closed segment (synced at its roll, so not a torn
 * write) is kept, not cut: the file keeps its bytes, and reads of the offsets
 * it held, up to the next segment, fail with -EBADMSG instead of skipping
 * them silently. A closed segment cut short the same. */
Test(store, damage_in_a_closed_segment_is_kept_and_reported)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.hot_bytes = 8 << 10;
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, "old", 1, "segment.bytes", "2048");
    for (uint32_t i = 0; i < 200; i++)
        cr_assert_eq(produce_one(&e, "old", 0, i, RV_ACKS_ALL), i);
    env_close(&e);
    uint64_t bases[5];
    cr_assert_geq(segment_bases("old", bases, 5), 5u);
    uint64_t b1 = bases[1], b2 = bases[2], b3 = bases[3], b4 = bases[4];
    char p1[4096], p2[4096];
    segment_path(p1, sizeof(p1), "old", b1);
    segment_path(p2, sizeof(p2), "old", b3);
    struct stat sb;
    cr_assert_eq(stat(p1, &sb), 0);
    long size1 = (long)sb.st_size;
    flip_bit(p1, size1 - 10); /* in the last batch's record */
    cr_assert_eq(stat(p2, &sb), 0);
    cr_assert_eq(truncate(p2, sb.st_size / 2), 0); /* segment b3 cut short */
    e = env_open_cfg(1, &scfg);
    cr_assert_eq(rv_list_offset(e.st, "old", 0, RV_OFFSET_LATEST), 200);
    cr_assert_eq(stat(p1, &sb), 0);
    cr_assert_eq((long)sb.st_size, size1, "the damaged closed segment was not cut");
    rv_fetch_result_t *res = NULL;
    cr_assert_eq(rv_fetch_sync(e.st, "old", 0, (int64_t)b2 - 1, 64 << 10, &res), -EBADMSG,
                 "the damaged batch is not served, nor skipped");
    cr_assert_eq(rv_fetch_sync(e.st, "old", 0, (int64_t)b1, 64 << 10, &res), 0);
    struct rv_record_view v;
    cr_assert_eq(rv_fetch_next(res, &v), 1, "what precedes the damage reads");
    cr_assert_eq(v.offset, (int64_t)b1);
    rv_fetch_release(res);
    cr_assert_eq(rv_fetch_sync(e.st, "old", 0, (int64_t)b4 - 1, 64 << 10, &res), -EBADMSG,
                 "offsets the cut segment lost are an error, not skipped");
    cr_assert_eq(rv_fetch_sync(e.st, "old", 0, (int64_t)b2, 64 << 10, &res), 0);
    rv_fetch_release(res);
    cr_assert_eq(read_all(&e, "old", 0, (int64_t)b4, (uint32_t)b4), 200 - b4, "later segments");
    env_close(&e);
}

/* A closed segment damaged from its first batch has no timestamp: time
 * retention takes it with the next segment's (it used to stop there for good). */
Test(store, a_segment_damaged_from_its_start_still_expires)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.retention_check_ms = 3600 * 1000;
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, "rot0", 1, "segment.bytes", "2048");
    int64_t now_ms = wall_ms();
    for (uint32_t i = 0; i < 100; i++)
        cr_assert_eq(produce_at(&e, "rot0", i, now_ms - 3600 * 1000), i);
    env_close(&e);
    uint64_t bases[4];
    cr_assert_geq(segment_bases("rot0", bases, 4), 4u);
    char p1[4096];
    segment_path(p1, sizeof(p1), "rot0", bases[1]);
    flip_bit(p1, 30); /* inside its first batch */
    scfg.retention_check_ms = 20;
    e = env_open_cfg(1, &scfg);
    struct rv_topic_config tc;
    cr_assert_eq(rv_topic_describe(e.st, "rot0", &tc), 0);
    cr_assert_eq(rv_topic_config_set(&tc, "retention.ms", "60000"), 0);
    cr_assert_eq(rv_topic_alter(e.st, "rot0", &tc), 0);
    cr_assert_eq(rv_list_offset(e.st, "rot0", 0, RV_OFFSET_LATEST), 100); /* loads it */
    struct rv_partition_info info = {0};
    for (int i = 0; i < 500 && info.log_start < 100; i++) {
        usleep(10000);
        cr_assert_eq(rv_partition_info(e.st, "rot0", 0, &info), 0);
    }
    cr_assert_eq(info.log_start, 100, "every expired segment went, the damaged one too");
    env_close(&e);
}

/* Records an hour old (CreateTime) written now into partition 0 of "lazy",
 * from offset first, with the retention check off; reopened with it on, the
 * files go without the partition being used (and without its time indexes
 * when is_timeindex_gone). */
static void lazy_old_records_expire(struct rv_store_config *scfg, uint32_t first, int64_t now_ms,
                                    bool is_timeindex_gone)
{
    scfg->retention_check_ms = 3600 * 1000;
    struct env e = env_open_cfg(1, scfg);
    for (uint32_t i = first; i < first + 100; i++)
        cr_assert_eq(produce_at(&e, "lazy", i, now_ms - 3600 * 1000), i);
    env_close(&e);
    if (is_timeindex_gone) {
        char cmd[4096];
        snprintf(cmd, sizeof(cmd), "rm -f %s/topics/lazy/0/*.timeindex", dir);
        cr_assert_eq(system(cmd), 0);
    }
    cr_assert_gt(log_bytes_on_disk("lazy"), 0);
    scfg->retention_check_ms = 20;
    e = env_open_cfg(1, scfg);
    for (int i = 0; i < 500 && log_bytes_on_disk("lazy") > 0; i++)
        usleep(10000);
    cr_assert_eq(log_bytes_on_disk("lazy"), 0, "old records in new files went too%s",
                 is_timeindex_gone ? ", without time indexes" : "");
    env_close(&e);
}

/* A partition nobody has used since start is not loaded; retention looks at
 * its files from a helper and loads it when something is due. */
Test(store, retention_reaches_partitions_not_loaded_since_start)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.retention_check_ms = 3600 * 1000;
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, "lazy", 1, "segment.bytes", "2048");
    struct rv_topic_config tc;
    cr_assert_eq(rv_topic_describe(e.st, "lazy", &tc), 0);
    cr_assert_eq(rv_topic_config_set(&tc, "retention.ms", "60000"), 0);
    cr_assert_eq(rv_topic_alter(e.st, "lazy", &tc), 0);
    int64_t now_ms = wall_ms();
    for (uint32_t i = 0; i < 100; i++)
        cr_assert_eq(produce_at(&e, "lazy", i, now_ms - 3600 * 1000), i);
    env_close(&e);
    cr_assert_gt(log_bytes_on_disk("lazy"), 0);
    char cmd[4096]; /* written two hours ago, as far as the files tell */
    snprintf(cmd, sizeof(cmd), "touch -d '2 hours ago' %s/topics/lazy/0/*.log", dir);
    cr_assert_eq(system(cmd), 0);
    scfg.retention_check_ms = 20;
    e = env_open_cfg(1, &scfg);
    for (int i = 0; i < 500 && log_bytes_on_disk("lazy") > 0; i++)
        usleep(10000);
    cr_assert_eq(log_bytes_on_disk("lazy"), 0, "every expired segment went, untouched");
    cr_assert_eq(rv_list_offset(e.st, "lazy", 0, RV_OFFSET_EARLIEST), 100);
    cr_assert_eq(rv_list_offset(e.st, "lazy", 0, RV_OFFSET_LATEST), 100);
    env_close(&e);
    /* Files written just now, records an hour old (their CreateTime): the
     * time index says so; without time indexes (an idle unload saves none for
     * a small segment), the probe reads the small files' batch headers. */
    lazy_old_records_expire(&scfg, 100, now_ms, false);
    lazy_old_records_expire(&scfg, 200, now_ms, true);
}

/* segment.ms counts from the active segment's first append; after a restart,
 * from its last write (before, a restart made it never roll by time). */
Test(store, segment_ms_rolls_after_a_restart_too)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.retention_check_ms = 3600 * 1000; /* only appends roll here */
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, "timed", 1, "segment.ms", "300");
    cr_assert_eq(produce_one(&e, "timed", 0, 0, RV_ACKS_ALL), 0);
    usleep(400000);
    cr_assert_eq(produce_one(&e, "timed", 0, 1, RV_ACKS_ALL), 1);
    struct rv_partition_info info = {0};
    for (int i = 0; i < 1000 && info.segments < 2; i++) { /* the roll ends after the append */
        usleep(1000);
        cr_assert_eq(rv_partition_info(e.st, "timed", 0, &info), 0);
    }
    cr_assert_eq(info.segments, 2, "rolled by time");
    env_close(&e);
    e = env_open_cfg(1, &scfg);
    usleep(400000);
    cr_assert_eq(produce_one(&e, "timed", 0, 2, RV_ACKS_ALL), 2);
    for (int i = 0; i < 1000 && info.segments < 3; i++) {
        usleep(1000);
        cr_assert_eq(rv_partition_info(e.st, "timed", 0, &info), 0);
    }
    cr_assert_eq(info.segments, 3, "rolled by time after the restart");
    cr_assert_eq(read_all(&e, "timed", 0, 0, 0), 3);
    env_close(&e);
    /* A quiet partition's segment older than segment.ms is rolled by the
     * retention pass, without an append. */
    scfg.retention_check_ms = 20;
    e = env_open_cfg(1, &scfg);
    cr_assert_eq(rv_list_offset(e.st, "timed", 0, RV_OFFSET_LATEST), 3); /* loads it */
    for (int i = 0; i < 1000 && info.segments < 4; i++) {
        usleep(10000);
        cr_assert_eq(rv_partition_info(e.st, "timed", 0, &info), 0);
    }
    cr_assert_eq(info.segments, 4, "rolled without an append");
    cr_assert_eq(read_all(&e, "timed", 0, 0, 0), 3);
    env_close(&e);
}

Test(store, retention_by_bytes_deletes_old_segments)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.retention_check_ms = 20;
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, "keep", 1, "segment.bytes", "2048");
    struct rv_topic_config tc;
    cr_assert_eq(rv_topic_describe(e.st, "keep", &tc), 0);
    cr_assert_eq(rv_topic_config_set(&tc, "retention.bytes", "8192"), 0);
    cr_assert_eq(rv_topic_alter(e.st, "keep", &tc), 0);
    for (uint32_t i = 0; i < 600; i++)
        cr_assert_eq(produce_one(&e, "keep", 0, i, RV_ACKS_LEADER), i);
    wait_visible(&e, "keep", 0, 600);
    struct rv_partition_info info = {0};
    for (int i = 0; i < 1000 && (info.log_start == 0 || info.size_bytes > 8192 + 2048); i++) {
        usleep(10000); /* retention runs every 20 ms */
        cr_assert_eq(rv_partition_info(e.st, "keep", 0, &info), 0);
    }
    cr_assert_gt(info.log_start, 0, "retention moved the log start");
    cr_assert_leq(info.size_bytes, 8192 + 2048 + 1024, "size %llu, start %lld, segs %u",
                  (unsigned long long)info.size_bytes, (long long)info.log_start, info.segments);
    cr_assert_eq(read_all(&e, "keep", 0, info.log_start, (uint32_t)info.log_start),
                 600 - (uint32_t)info.log_start);
    env_close(&e);
}

Test(store, offsets_by_timestamp)
{
    struct env e = env_open(1);
    make_topic(&e, "times", 1, "segment.bytes", "1024");
    for (uint32_t i = 0; i < 100; i++) {
        char v[16];
        int n = snprintf(v, sizeof(v), "v%u", i);
        struct rv_record r = {.key_len = -1,
                              .value = v,
                              .value_len = n,
                              .timestamp_ms = 1700000000000 + (int64_t)i * 1000};
        cr_assert_eq(rv_produce_sync(e.st, "times", 0, &r, 1, RV_ACKS_ALL), i);
    }
    cr_assert_eq(rv_list_offset(e.st, "times", 0, 1700000000000), 0);
    cr_assert_eq(rv_list_offset(e.st, "times", 0, 1700000042000), 42);
    cr_assert_eq(rv_list_offset(e.st, "times", 0, 1700000042500), 43);
    cr_assert_eq(rv_list_offset(e.st, "times", 0, 1800000000000), -1, "none that late");
    env_close(&e);
    e = env_open(1);
    cr_assert_eq(rv_list_offset(e.st, "times", 0, 1700000077000), 77, "from disk after restart");
    env_close(&e);
}

/* A full disk: produce fails with a clear error, nothing acknowledged is lost,
 * and producing works again once space is freed. Needs a small tmpfs (root). */
Test(store, full_disk_fails_cleanly_and_recovers_when_space_returns)
{
    char mnt[1024];
    snprintf(mnt, sizeof(mnt), "%.1000s/small", dir);
    cr_assert_eq(mkdir(mnt, 0755), 0);
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "mount -t tmpfs -o size=6m tmpfs %s 2>/dev/null", mnt);
    if (system(cmd) != 0) {
        cr_skip_test("cannot mount a small tmpfs here (needs root)");
    }
    char filler[1100];
    snprintf(filler, sizeof(filler), "%s/filler", mnt);
    snprintf(cmd, sizeof(cmd), "dd if=/dev/zero of=%s bs=1M count=2 status=none", filler);
    cr_assert_eq(system(cmd), 0);
    char data[1100];
    snprintf(data, sizeof(data), "%s/data", mnt);
    char saved[1024];
    strcpy(saved, dir);
    snprintf(dir, sizeof(dir), "%.1000s", data); /* env_open uses dir as the data dir */
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.wal_file_bytes = 512 << 10;
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, "full", 1, "segment.bytes", "262144");
    static char big[2000];
    memset(big, 'x', sizeof(big));
    int64_t acked = 0, err = 0;
    for (int i = 0; i < 5000 && err == 0; i++) {
        struct rv_record r = {.key_len = -1, .value = big, .value_len = sizeof(big)};
        int64_t off = rv_produce_sync(e.st, "full", 0, &r, 1, RV_ACKS_ALL);
        if (off < 0)
            err = off;
        else
            acked = off + 1;
    }
    cr_assert_eq(err, -ENOSPC, "the disk filled up: %s", rv_strerror((int)err));
    cr_assert_gt(acked, 100);
    cr_assert_eq(unlink(filler), 0); /* free 2 MiB */
    int64_t off = -1;
    for (int i = 0; i < 300 && off < 0; i++) {
        struct rv_record r = {.key_len = -1, .value = big, .value_len = 100};
        off = rv_produce_sync(e.st, "full", 0, &r, 1, RV_ACKS_ALL);
        if (off < 0)
            usleep(20000);
    }
    cr_assert_eq(off, acked, "producing works again at the next offset: %s",
                 off < 0 ? rv_strerror((int)off) : "ok");
    env_close(&e);
    e = env_open_cfg(1, &scfg);
    rv_fetch_result_t *res;
    int64_t n = 0, offset = 0;
    while (offset <= acked) {
        cr_assert_eq(rv_fetch_sync(e.st, "full", 0, offset, 1 << 20, &res), 0);
        struct rv_record_view v;
        int got = 0;
        while (rv_fetch_next(res, &v) == 1) {
            cr_assert_eq(v.offset, offset);
            offset++;
            n++;
            got++;
        }
        rv_fetch_release(res);
        cr_assert_gt(got, 0);
    }
    cr_assert_eq(n, acked + 1, "every acknowledged record survived");
    env_close(&e);
    strcpy(dir, saved);
    snprintf(cmd, sizeof(cmd), "umount %s", mnt);
    cr_assert_eq(system(cmd), 0);
}

/* Idle partitions hold no descriptor: opening is lazy, and a sweep closes
 * the descriptors of logs that stayed clean; the next write or read reopens. */
Test(store, idle_partitions_hold_no_descriptor)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.checkpoint_interval_ms = 10; /* sweeps every 20 ms */
    struct env e = env_open_cfg(1, &scfg);
    int base = test_count_fds();
    make_topic(&e, "many", 200, NULL, NULL);
    cr_assert_lt(test_count_fds(), base + 10, "creating partitions opens no descriptor");
    for (uint32_t p = 0; p < 200; p++)
        cr_assert_eq(produce_one(&e, "many", (int32_t)p, p, RV_ACKS_ALL), 0);
    int now = test_count_fds();
    for (int i = 0; i < 1000 && now >= base + 10; i++) {
        usleep(10000);
        now = test_count_fds();
    }
    cr_assert_lt(now, base + 10, "the sweep closed idle descriptors (%d open, base %d)", now, base);
    for (uint32_t p = 0; p < 200; p += 7) {
        cr_assert_eq(read_all(&e, "many", (int32_t)p, 0, p), 1, "a read reopens the segment");
        cr_assert_eq(produce_one(&e, "many", (int32_t)p, p + 1, RV_ACKS_ALL), 1, "so does a write");
        cr_assert_eq(read_all(&e, "many", (int32_t)p, 0, p), 2);
    }
    env_close(&e);
    e = env_open_cfg(1, &scfg);
    cr_assert_lt(test_count_fds(), base + 10, "reopening opens no partition descriptor");
    env_close(&e);
}

/* With a tiny io_depth the ring is often full: segment writes, opens, syncs
 * and reads are retried (backpressure), never failed. */
static _Atomic int busy_done;
static _Atomic int busy_errors;

static void busy_cb(void *arg, int64_t res)
{
    (void)arg;
    if (res < 0)
        atomic_fetch_add(&busy_errors, 1);
    atomic_fetch_add(&busy_done, 1);
}

Test(store, a_full_ring_is_backpressure_not_failure)
{
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    cfg.shard_count = 1;
    cfg.data_dir = dir;
    cfg.io_depth = 4;
    struct env e = {0};
    cr_assert_eq(rv_runtime_open(&e.rt, &cfg), 0);
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.checkpoint_interval_ms = 5;
    cr_assert_eq(rv_store_open(&e.st, e.rt, &scfg), 0, "%s", rv_err_msg());
    make_topic(&e, "busy", 16, "segment.bytes", "8192");
    atomic_store(&busy_done, 0);
    atomic_store(&busy_errors, 0);
    int sent = 0;
    for (uint32_t round = 0; round < 40; round++) {
        for (int32_t p = 0; p < 16; p++) {
            char v[128];
            uint32_t i = round;
            int n = snprintf(v, sizeof(v), "value-%u-%0*u", i, (int)(i % 50), i);
            struct rv_record r = {.key_len = -1, .value = v, .value_len = n};
            cr_assert_eq(rv_produce(e.st, "busy", p, &r, 1, round % 2 ? RV_ACKS_ALL : RV_ACKS_NONE,
                                    busy_cb, NULL),
                         0);
            sent++;
        }
    }
    for (int i = 0; i < 3000 && atomic_load(&busy_done) < sent; i++)
        usleep(2000);
    cr_assert_eq(atomic_load(&busy_done), sent);
    cr_assert_eq(atomic_load(&busy_errors), 0, "no append failed");
    for (int32_t p = 0; p < 16; p++)
        cr_assert_eq(read_all(&e, "busy", p, 0, 0), 40);
    env_close(&e);
    e = env_open(1);
    for (int32_t p = 0; p < 16; p++)
        cr_assert_eq(read_all(&e, "busy", p, 0, 0), 40, "after a restart");
    env_close(&e);
}

/* ---- the descriptor budget ------------------------------------------------------------------- */

/* Bursts from the test thread: every partition gets one append, then one
 * fetch, all in flight at once; the callbacks (on the shards) only count and
 * check, the test thread asserts. */
#define WIDE_MAX 4000

static _Atomic int wide_acked;
static _Atomic int wide_errors;
static _Atomic int wide_first_error;
static _Atomic int wide_fetched;
static _Atomic int wide_fetch_ok[WIDE_MAX];

static void wide_produce_cb(void *arg, int64_t res)
{
    if (res != (int64_t)(intptr_t)arg) { /* the offset every partition is at */
        atomic_fetch_add(&wide_errors, 1);
        int zero = 0;
        atomic_compare_exchange_strong(&wide_first_error, &zero, (int)res);
    }
    atomic_fetch_add(&wide_acked, 1);
}

static void wide_fetch_cb(void *arg, rv_fetch_result_t *res, int err)
{
    uint32_t p = (uint32_t)(uintptr_t)arg;
    struct rv_record_view v;
    if (err == 0 && rv_fetch_next(res, &v) == 1) {
        char want[128];
        int wl = snprintf(want, sizeof(want), "value-%u-%0*u", p, (int)(p % 50), p);
        bool is_ok = v.offset == 0 && v.value_len == wl && memcmp(v.value, want, (size_t)wl) == 0;
        atomic_store(&wide_fetch_ok[p], is_ok ? 1 : -2);
    } else {
        atomic_store(&wide_fetch_ok[p], err < 0 ? err : -1);
    }
    rv_fetch_release(res);
    atomic_fetch_add(&wide_fetched, 1);
}

static int wide_max_fds; /* the most descriptors seen while waiting (0: not counted) */

/* Wait until *count reaches n; sample the open descriptors meanwhile if asked. */
static void wide_wait(_Atomic int *count, int n, bool is_counting)
{
    for (int i = 0; i < 60000 && atomic_load(count) < n; i++) {
        if (is_counting) {
            int now = test_count_fds();
            wide_max_fds = now > wide_max_fds ? now : wide_max_fds;
        }
        usleep(500);
    }
    cr_assert_eq(atomic_load(count), n, "every callback came (%d of %d)", atomic_load(count), n);
}

static void wide_produce(struct env *e, const char *topic, uint32_t parts, int64_t offset,
                         bool is_counting)
{
    atomic_store(&wide_acked, 0);
    atomic_store(&wide_errors, 0);
    atomic_store(&wide_first_error, 0);
    for (uint32_t p = 0; p < parts; p++) {
        char val[128];
        int vl = snprintf(val, sizeof(val), "value-%u-%0*u", p, (int)(p % 50), p);
        struct rv_record r = {.key_len = -1, .value = val, .value_len = vl};
        int rc = rv_produce(e->st, topic, (int32_t)p, &r, 1, RV_ACKS_ALL, wide_produce_cb,
                            (void *)(intptr_t)offset);
        cr_assert_eq(rc, 0, "produce %u: %s", p, rv_strerror(rc));
    }
    wide_wait(&wide_acked, (int)parts, is_counting);
    cr_assert_eq(atomic_load(&wide_errors), 0, "no append failed (%d did; first: %s)",
                 atomic_load(&wide_errors), rv_strerror(atomic_load(&wide_first_error)));
}

static void wide_fetch(struct env *e, const char *topic, uint32_t parts, bool is_counting)
{
    atomic_store(&wide_fetched, 0);
    for (uint32_t p = 0; p < parts; p++) {
        atomic_store(&wide_fetch_ok[p], 0);
        int rc =
            rv_fetch(e->st, topic, (int32_t)p, 0, 1 << 16, wide_fetch_cb, (void *)(uintptr_t)p);
        cr_assert_eq(rc, 0, "fetch %u: %s", p, rv_strerror(rc));
    }
    wide_wait(&wide_fetched, (int)parts, is_counting);
    for (uint32_t p = 0; p < parts; p++)
        cr_assert_eq(atomic_load(&wide_fetch_ok[p]), 1, "partition %u fetched its record (%d: %s)",
                     p, atomic_load(&wide_fetch_ok[p]),
                     rv_strerror(atomic_load(&wide_fetch_ok[p])));
}

static struct rlimit saved_nofile;

static void nofile_lower(rlim_t soft)
{
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &saved_nofile), 0);
    struct rlimit rl = saved_nofile;
    rl.rlim_cur = soft;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

static void nofile_restore(void)
{
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &saved_nofile), 0);
}

/* Thousands of partitions written and read at once under RLIMIT_NOFILE 256:
 * the shards' budget (derived from the limit) makes openers wait for a
 * descriptor instead of failing, and close returns. A small hot tier sends
 * the reads to the disk. */
Test(store, many_partitions_under_a_low_descriptor_limit, .timeout = 300)
{
    enum { WIDE = 3000 };
    nofile_lower(256);
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.hot_bytes = 64 << 10;
    struct env e = env_open_cfg(2, &scfg);
    make_topic(&e, "wide", WIDE, NULL, NULL);
    wide_produce(&e, "wide", WIDE, 0, false);
    wide_fetch(&e, "wide", WIDE, false);
    for (uint32_t p = 0; p < WIDE; p += 97)
        cr_assert_eq(read_all(&e, "wide", (int32_t)p, 0, p), 1, "partition %u", p);
    env_close(&e);
    e = env_open_cfg(2, &scfg);
    wide_fetch(&e, "wide", WIDE, false);
    env_close(&e);
    nofile_restore();
}

/* fds_per_shard is a ceiling: while thousands of appends and reads are in
 * flight, the process holds at most the budget of every shard (plus WAL
 * files, helper jobs' passing files and the like) open. */
Test(store, the_descriptor_budget_is_honored, .timeout = 300)
{
    enum { WIDE = 1500, BUDGET = 20 };
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.hot_bytes = 64 << 10;
    scfg.fds_per_shard = BUDGET;
    struct env e = env_open_cfg(2, &scfg);
    make_topic(&e, "wide", WIDE, NULL, NULL);
    int base = test_count_fds();
    wide_max_fds = 0;
    wide_produce(&e, "wide", WIDE, 0, true);
    wide_fetch(&e, "wide", WIDE, true);
    wide_produce(&e, "wide", WIDE, 1, true);
    cr_assert_gt(wide_max_fds, 0);
    cr_log_info("descriptors: base %d, at most %d", base, wide_max_fds);
    cr_assert_leq(wide_max_fds, base + 2 * BUDGET + 12,
                  "at most the budget open (%d seen, base %d, budget 2 x %d)", wide_max_fds, base,
                  BUDGET);
    env_close(&e);
}

/* A budget above what the kernel allows: EMFILE is "at the budget" (the
 * opener waits for a descriptor to close), never a failed append or fetch. */
Test(store, emfile_waits_instead_of_failing, .timeout = 300)
{
    enum { WIDE = 2000 };
    nofile_lower(256);
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.hot_bytes = 64 << 10;
    scfg.fds_per_shard = 100000;
    struct env e = env_open_cfg(2, &scfg);
    make_topic(&e, "wide", WIDE, NULL, NULL);
    wide_produce(&e, "wide", WIDE, 0, false);
    wide_fetch(&e, "wide", WIDE, false);
    wide_produce(&e, "wide", WIDE, 1, false);
    env_close(&e);
    e = env_open_cfg(2, &scfg);
    wide_fetch(&e, "wide", WIDE, false);
    env_close(&e);
    nofile_restore();
}

/* Closing while thousands of appends wait for a descriptor: close finishes
 * them (they are drained, not dropped) and returns; everything is there after
 * a restart. */
Test(store, close_with_openers_waiting_returns, .timeout = 300)
{
    enum { WIDE = 1000 };
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.fds_per_shard = 4;
    struct env e = env_open_cfg(2, &scfg);
    make_topic(&e, "wide", WIDE, NULL, NULL);
    atomic_store(&wide_acked, 0);
    atomic_store(&wide_errors, 0);
    for (uint32_t p = 0; p < WIDE; p++) {
        char val[128];
        int vl = snprintf(val, sizeof(val), "value-%u-%0*u", p, (int)(p % 50), p);
        struct rv_record r = {.key_len = -1, .value = val, .value_len = vl};
        cr_assert_eq(rv_produce(e.st, "wide", (int32_t)p, &r, 1, p % 2 ? RV_ACKS_ALL : RV_ACKS_NONE,
                                wide_produce_cb, (void *)(intptr_t)0),
                     0);
    }
    env_close(&e); /* right away: most appends still wait for a descriptor */
    cr_assert_eq(atomic_load(&wide_acked), WIDE, "every append completed");
    cr_assert_eq(atomic_load(&wide_errors), 0);
    e = env_open_cfg(2, &scfg);
    wide_fetch(&e, "wide", WIDE, false);
    env_close(&e);
}

static ino_t inode_of(const char *path)
{
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0, "%s", path);
    return sb.st_ino;
}

/* Closing saves an index only when its entries changed: reading a partition
 * and closing again leaves its index files alone (a save replaces them). */
Test(store, close_saves_only_changed_indexes)
{
    struct env e = env_open(2);
    make_topic(&e, "t", 4, NULL, NULL);
    for (uint32_t p = 0; p < 4; p++)
        cr_assert_eq(produce_one(&e, "t", (int32_t)p, p, RV_ACKS_ALL), 0);
    env_close(&e);
    char idx_path[1200], tidx_path[1200];
    snprintf(idx_path, sizeof(idx_path), "%s/topics/t/1/%020d.index", dir, 0);
    snprintf(tidx_path, sizeof(tidx_path), "%s/topics/t/1/%020d.timeindex", dir, 0);
    ino_t idx_ino = inode_of(idx_path);
    ino_t tidx_ino = inode_of(tidx_path);
    e = env_open(2);
    cr_assert_eq(read_all(&e, "t", 1, 0, 1), 1, "loads the log");
    env_close(&e);
    cr_assert_eq(inode_of(idx_path), idx_ino, "the unchanged index was not saved again");
    cr_assert_eq(inode_of(tidx_path), tidx_ino);
    e = env_open(2);
    cr_assert_eq(produce_one(&e, "t", 1, 2, RV_ACKS_ALL), 1);
    env_close(&e);
    cr_assert_neq(inode_of(tidx_path), tidx_ino, "a changed index is saved");
    e = env_open(2);
    cr_assert_eq(read_all(&e, "t", 1, 0, 1), 2);
    env_close(&e);
}

/* ---- the broker's routing (storage/part.h) -------------------------------------------------- */

struct route_probe {
    rv_store_t *st;
    const char *topic;
    int32_t partition;
    int rc;
    struct rv_part_ref ref;
};

static void route_probe_run(void *arg)
{
    struct route_probe *p = arg;
    p->rc = rv_store_lookup(p->st, p->topic, strlen(p->topic), p->partition, &p->ref);
}

static int route_on(struct env *e, uint32_t shard, const char *topic, int32_t partition,
                    struct rv_part_ref *out)
{
    struct route_probe p = {.st = e->st, .topic = topic, .partition = partition};
    test_run_on(e->rt, shard, route_probe_run, &p);
    if (out != NULL)
        *out = p.ref;
    return p.rc;
}

Test(store, routes_cached_on_a_shard_follow_every_catalog_change)
{
    struct env e = env_open(2);
    make_topic(&e, "routed", 2, NULL, NULL);
    struct rv_part_ref a, b;
    for (int i = 0; i < 2; i++) { /* the second time from the shard's cache */
        cr_assert_eq(route_on(&e, 0, "routed", 1, &a), 0);
        cr_assert_eq(route_on(&e, 0, "routed", 2, NULL), -ERANGE);
    }
    cr_assert_eq(route_on(&e, 1, "routed", 1, &b), 0);
    cr_assert_eq(a.key, b.key, "every shard routes alike");
    cr_assert_eq(a.owner, b.owner);
    cr_assert_eq(a.partitions, 2);
    /* More partitions: the cached count is not trusted any more. */
    cr_assert_eq(rv_topic_add_partitions(e.st, "routed", 4), 0, "%s", rv_err_msg());
    cr_assert_eq(route_on(&e, 0, "routed", 3, &a), 0);
    cr_assert_eq(a.partitions, 4);
    /* Deleted, then made again: gone, then a new topic (a new id). */
    uint64_t old_key = a.key;
    cr_assert_eq(rv_topic_delete(e.st, "routed"), 0);
    cr_assert_eq(route_on(&e, 0, "routed", 3, NULL), -ENOENT);
    make_topic(&e, "routed", 4, NULL, NULL);
    cr_assert_eq(route_on(&e, 0, "routed", 3, &a), 0);
    cr_assert_neq(a.key, old_key, "the new topic's own id");
    /* Names that cannot be topics. */
    cr_assert_eq(route_on(&e, 0, "", 0, NULL), -EINVAL);
    env_close(&e);
}

/* ---- idle partitions give their memory back ------------------------------------------------ */

struct stats_arg {
    rv_store_t *st;
    struct rv_store_shard_stats s;
};

static void stats_on_shard(void *arg)
{
    struct stats_arg *a = arg;
    rv_store_shard_stats(a->st, &a->s);
}

static struct rv_store_shard_stats shard0_stats(struct env *e)
{
    struct stats_arg a = {.st = e->st};
    test_run_on(e->rt, 0, stats_on_shard, &a);
    return a.s;
}

struct each_arg {
    rv_store_t *st;
    uint32_t known;
    int64_t hw_sum;
};

static void each_log(void *arg, uint64_t key, rv_plog_t *log)
{
    struct each_arg *a = arg;
    (void)key;
    if (log == NULL)
        return;
    a->known++;
    a->hw_sum += rv_plog_high_watermark(log);
}

static void each_on_shard(void *arg)
{
    struct each_arg *a = arg;
    rv_store_each_log(a->st, each_log, a);
}

/* Partitions unused for idle_unload_ms are unloaded (segments' indexes,
 * producer state and hot batches freed; no descriptor), and the next call
 * loads them again: every record reads back, appends go on at the right
 * offset, offsets by time and the log start are as before. One kept busy
 * stays loaded. */
Test(store, idle_partitions_give_back_their_memory)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.checkpoint_interval_ms = 10; /* sweeps every 20 ms */
    scfg.idle_unload_ms = 1000;       /* the busy partition never waits that long, even on a
                                         loaded machine */
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, "idle", 3, "segment.bytes", "4096");
    for (uint32_t i = 0; i < 600; i++)
        cr_assert_eq(produce_one(&e, "idle", 0, i, i == 599 ? RV_ACKS_ALL : RV_ACKS_NONE), i);
    for (uint32_t i = 0; i < 5; i++) {
        cr_assert_eq(produce_one(&e, "idle", 1, i, RV_ACKS_ALL), i);
        cr_assert_eq(produce_one(&e, "idle", 2, i, RV_ACKS_ALL), i);
    }
    cr_assert_eq(rv_delete_records(e.st, "idle", 1, 2), 2);
    int64_t by_time = rv_list_offset(e.st, "idle", 0, 0); /* first record's time or later */
    cr_assert_eq(by_time, 0);
    struct rv_partition_info before;
    cr_assert_eq(rv_partition_info(e.st, "idle", 0, &before), 0);

    /* Partition 2 is kept busy; 0 and 1 go idle. */
    struct rv_store_shard_stats s = shard0_stats(&e);
    cr_assert_eq(s.logs_loaded, 3);
    cr_assert_gt(s.hot.batches, 600, "partition 0's batches are in the hot tier");
    for (int64_t t0 = wall_ms();
         wall_ms() - t0 < 20000 && (s = shard0_stats(&e)).logs_unloaded < 2;) {
        cr_assert_eq(read_all(&e, "idle", 2, 0, 0), 5);
        usleep(1000);
    }
    cr_assert_eq(s.logs_unloaded, 2, "the idle partitions were unloaded");
    cr_assert_eq(s.logs_loaded, 1, "the busy one was not");
    cr_assert_eq(s.fds_used, 0, "no descriptor is held for the idle ones");
    cr_assert_lt(s.hot.batches, 20, "their hot batches were freed (%llu left)",
                 (unsigned long long)s.hot.batches);
    struct each_arg ea = {.st = e.st};
    test_run_on(e.rt, 0, each_on_shard, &ea);
    cr_assert_eq(ea.known, 3, "the metrics still see every partition's offsets");
    cr_assert_eq(ea.hw_sum, 600 + 5 + 5);

    /* Back on first use, exactly as they were. */
    cr_assert_eq(read_all(&e, "idle", 0, 0, 0), 600);
    cr_assert_eq(read_all(&e, "idle", 0, 345, 345), 255);
    struct rv_partition_info after;
    cr_assert_eq(rv_partition_info(e.st, "idle", 0, &after), 0);
    cr_assert_gt(after.segments, 3, "closed segments came back: %u", after.segments);
    cr_assert_geq(after.segments, before.segments); /* writes queued behind a roll land late */
    cr_assert_eq(after.high_watermark, 600);
    cr_assert_eq(rv_list_offset(e.st, "idle", 1, RV_OFFSET_EARLIEST), 2, "the log start");
    cr_assert_eq(produce_one(&e, "idle", 1, 5, RV_ACKS_ALL), 5, "appends go on");
    cr_assert_eq(rv_list_offset(e.st, "idle", 0, 0), 0, "offsets by time");
    cr_assert_eq(produce_one(&e, "idle", 0, 600, RV_ACKS_ALL), 600);
    cr_assert_eq(read_all(&e, "idle", 0, 590, 590), 11);

    /* Unloaded again, then a restart: nothing lost. */
    for (int64_t t0 = wall_ms(); wall_ms() - t0 < 20000 && shard0_stats(&e).logs_loaded > 0;)
        usleep(1000);
    cr_assert_eq(shard0_stats(&e).logs_loaded, 0);
    env_close(&e);
    e = env_open_cfg(1, &scfg);
    cr_assert_eq(read_all(&e, "idle", 0, 0, 0), 601);
    cr_assert_eq(read_all(&e, "idle", 1, 2, 2), 4);
    env_close(&e);
}

/* ---- timestamp bounds ------------------------------------------------------------------------ */

/* message.timestamp.before/after.max.ms refuse a CreateTime record whose
 * timestamp is too far from the broker's clock (-EDOM, Kafka's
 * INVALID_TIMESTAMP) and write nothing; the default lets old records in and
 * refuses those over an hour ahead; LogAppendTime is never refused; the
 * older difference.max.ms sets both; the bounds survive a restart. */
Test(store, record_timestamps_outside_the_topics_bounds_are_refused)
{
    struct env e = env_open(1);
    make_topic(&e, "dflt", 1, NULL, NULL);
    cr_assert_eq(produce_at(&e, "dflt", 0, 1000), 0, "no bound before by default");
    cr_assert_eq(produce_at(&e, "dflt", 0, wall_ms() + 2 * 3600 * 1000), -EDOM, "2 h ahead");
    cr_assert_eq(produce_at(&e, "dflt", 0, wall_ms() + 60 * 1000), 1, "a minute ahead is fine");

    struct rv_topic_config tc;
    rv_topic_config_init(&tc);
    cr_assert_eq(rv_topic_config_set(&tc, "message.timestamp.before.max.ms", "60000"), 0);
    cr_assert_eq(rv_topic_config_set(&tc, "message.timestamp.after.max.ms", "0"), 0);
    cr_assert_eq(rv_topic_create(e.st, "tight", &tc), 0, "%s", rv_err_msg());
    cr_assert_eq(produce_at(&e, "tight", 0, wall_ms() - 3600 * 1000), -EDOM, "an hour old");
    cr_assert_eq(produce_at(&e, "tight", 0, wall_ms() + 10000), -EDOM, "ahead");
    cr_assert_eq(produce_at(&e, "tight", 0, 0), 0, "0 is now (rv_produce's default)");
    cr_assert_eq(rv_list_offset(e.st, "tight", 0, RV_OFFSET_LATEST), 1, "nothing refused was kept");

    rv_topic_config_init(&tc);
    cr_assert_eq(rv_topic_config_set(&tc, "message.timestamp.difference.max.ms", "1000"), 0);
    cr_assert_eq(tc.timestamp_before_max_ms, 1000);
    cr_assert_eq(tc.timestamp_after_max_ms, 1000);
    cr_assert_eq(rv_topic_config_set(&tc, "message.timestamp.before.max.ms", "-1"), -EINVAL);
    cr_assert_eq(rv_topic_config_set(&tc, "message.timestamp.type", "LogAppendTime"), 0);
    cr_assert_eq(rv_topic_create(e.st, "stamped", &tc), 0, "%s", rv_err_msg());
    cr_assert_eq(produce_at(&e, "stamped", 0, 1000), 0, "LogAppendTime: the broker's clock");
    env_close(&e);

    e = env_open(1);
    cr_assert_eq(produce_at(&e, "tight", 0, wall_ms() - 3600 * 1000), -EDOM, "after a restart too");
    env_close(&e);
}

/* ---- rv_produce on the owner shard ------------------------------------------------------------ */

struct owned_case {
    struct env *e;
    int rc_small;
    int rc_big;
    int64_t base;
    struct test_signal done;
};

static void owned_done(void *arg, int64_t base)
{
    struct owned_case *o = arg;
    o->base = base;
    test_signal_post(&o->done);
}

static void owned_run(void *arg)
{
    struct owned_case *o = arg;
    static char big[3000];
    memset(big, 'x', sizeof(big));
    struct rv_record r[3];
    for (int i = 0; i < 3; i++) {
        static char vals[3][32];
        int n = snprintf(vals[i], sizeof(vals[i]), "value-%u-%0*u", 7 + i, (7 + i) % 50, 7 + i);
        r[i] = (struct rv_record){.key_len = -1, .value = vals[i], .value_len = n};
    }
    o->rc_small = rv_produce(o->e->st, "owned", 0, r, 3, RV_ACKS_ALL, owned_done, o);
    cr_assert_eq(o->base, -100, "the callback comes later, not inside rv_produce");
    struct rv_record b[2] = {{.key_len = -1, .value = big, .value_len = sizeof(big)},
                             {.key_len = -1, .value = big, .value_len = sizeof(big)}};
    o->rc_big = rv_produce(o->e->st, "owned", 0, b, 2, RV_ACKS_ALL, owned_done, o);
}

/* On the partition's own shard an uncompressed batch is built straight into
 * the shard's pool: the callback still comes later (never inside the call),
 * the records read back, and a batch over max.message.bytes is refused at
 * call time, as from any other thread. */
Test(store, produce_on_the_owner_shard_builds_in_place)
{
    struct env e = env_open(1);
    make_topic(&e, "owned", 1, "max.message.bytes", "4096");
    for (uint32_t i = 0; i < 7; i++)
        cr_assert_eq(produce_one(&e, "owned", 0, i, RV_ACKS_ALL), i);
    struct owned_case o = {.e = &e, .base = -100};
    test_signal_init(&o.done);
    test_run_on(e.rt, 0, owned_run, &o);
    cr_assert_eq(o.rc_small, 0);
    cr_assert_eq(o.rc_big, -EMSGSIZE, "%s", rv_strerror(o.rc_big));
    test_signal_wait(&o.done);
    cr_assert_eq(o.base, 7);
    cr_assert_eq(read_all(&e, "owned", 0, 0, 0), 10);
    env_close(&e);
}

/* segment.ms counts from the active segment's first append, also when the
 * partition unloads between writes (its files only know the last write's
 * time). */
Test(store, segment_ms_rolls_a_partition_that_unloads_between_writes)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.checkpoint_interval_ms = 10; /* the idle sweep every 20 ms */
    scfg.retention_check_ms = 3600 * 1000;
    scfg.idle_unload_ms = 100;
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, "paced", 1, "segment.ms", "600");
    uint64_t unloads = 0;
    for (uint32_t i = 0; i < 10; i++) {
        cr_assert_eq(produce_one(&e, "paced", 0, i, RV_ACKS_ALL), i);
        usleep(300000);
        unloads = shard0_stats(&e).logs_unloaded;
    }
    cr_assert_gt(unloads, 3, "it unloaded between writes (%llu)", (unsigned long long)unloads);
    struct rv_partition_info info = {0};
    cr_assert_eq(rv_partition_info(e.st, "paced", 0, &info), 0);
    cr_assert_geq(info.segments, 3, "segment.ms rolled it (%u segments)", info.segments);
    cr_assert_eq(read_all(&e, "paced", 0, 0, 0), 10);
    env_close(&e);
}

/* ---- a failed log is rebuilt from the WAL ---------------------------------------------------- */

/* The descriptor this process holds on partition 0's segment `base` of
 * topic, or -1. */
static int segment_fd(const char *topic, uint64_t base)
{
    char want[1200];
    snprintf(want, sizeof(want), "%.900s/topics/%s/0/%020llu.log", dir, topic,
             (unsigned long long)base);
    return test_fd_of(want);
}

/* The base of partition 0's newest segment file of topic. */
static uint64_t active_base_of(const char *topic)
{
    char pdir[1100];
    snprintf(pdir, sizeof(pdir), "%.900s/topics/%s/0", dir, topic);
    DIR *d = opendir(pdir);
    cr_assert_not_null(d);
    struct dirent *de;
    uint64_t best = 0;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        unsigned long long b;
        if (n == 24 && strcmp(de->d_name + 20, ".log") == 0 &&
            sscanf(de->d_name, "%20llu", &b) == 1 && b > best)
            best = b;
    }
    closedir(d);
    return best;
}

static uint64_t ckpt_lsn_on_disk(void)
{
    char path[1100];
    snprintf(path, sizeof(path), "%.900s/wal/shard-0/checkpoint", dir);
    FILE *f = fopen(path, "r");
    unsigned long long v = 0;
    if (f != NULL && fscanf(f, "%llu", &v) != 1)
        v = 0;
    if (f != NULL)
        fclose(f);
    return v;
}

/* Produce record i until it is taken (a failed log refuses with -EIO until
 * it is rebuilt); how many refusals. */
static uint32_t produce_until_taken(struct env *e, const char *topic, uint32_t i)
{
    uint32_t refused = 0;
    int64_t rc;
    while (((rc = produce_one(e, topic, 0, i, RV_ACKS_ALL)) == -EIO || rc == -EISDIR) &&
           refused < 2000) {
        refused++;
        usleep(5000);
    }
    cr_assert_eq(rc, i, "record %u: %s", i, rc < 0 ? rv_strerror((int)rc) : "another offset");
    return refused;
}

/* A segment write (is_sync false) or a segment fdatasync (true) that fails
 * with EIO fails the log: appends get -EIO. The sweep then cuts the log back
 * to what a sync made durable and writes the WAL's records since the last
 * checkpoint again: appends resume, every acknowledged record is there at
 * its offset (the one whose write failed too), the checkpoint moves on again
 * (so the WAL is recycled), and all of it survives a restart. */
/* What stands in a rebuild's way until the test clears it: nothing, a
 * directory where the active segment's index is (its removal fails), or one
 * where the segment itself is (its open for the cut fails). */
enum rebuild_block {
    REBUILD_FREE = 0,
    REBUILD_BLOCK_INDEX,
    REBUILD_BLOCK_SEGMENT,
};

static void failed_write_is_rebuilt_in(const char *topic, bool is_sync, enum rebuild_block block,
                                       const char *segment_bytes)
{
    bool is_blocked = block != REBUILD_FREE;
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.checkpoint_interval_ms = 100; /* sweeps every 200 ms */
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, topic, 1, segment_bytes != NULL ? "segment.bytes" : NULL, segment_bytes);
    /* Written until a checkpoint passed (so part of the log is durable and
     * the WAL is replayed from past its start), the segment held open. With
     * small segments, until several rolled. */
    uint32_t n = 0;
    int fd = -1;
    struct rv_partition_info info = {0};
    uint32_t rolls_wanted = segment_bytes != NULL ? 3 : 1;
    for (; n < 20000 && (fd < 0 || ckpt_lsn_on_disk() == 0 || info.segments < rolls_wanted); n++) {
        cr_assert_eq(produce_one(&e, topic, 0, n, RV_ACKS_ALL), n);
        cr_assert_eq(rv_partition_info(e.st, topic, 0, &info), 0);
        fd = segment_fd(topic, info.segments > 1 ? active_base_of(topic) : 0);
    }
    cr_assert_geq(fd, 0, "the shard holds the segment open while it is written");
    cr_assert_gt(ckpt_lsn_on_disk(), 0);
    char idx[1200], seg[1200], cmd[4000];
    snprintf(idx, sizeof(idx), "%.900s/topics/%s/0/%020llu.index", dir, topic,
             (unsigned long long)active_base_of(topic));
    snprintf(seg, sizeof(seg), "%.900s/topics/%s/0/%020llu.log", dir, topic,
             (unsigned long long)active_base_of(topic));
    if (block == REBUILD_BLOCK_INDEX) { /* the rebuild cannot remove the index */
        snprintf(cmd, sizeof(cmd), "rm -f %s && mkdir -p %s/in-the-way", idx, idx);
        cr_assert_eq(system(cmd), 0);
    } else if (block == REBUILD_BLOCK_SEGMENT) { /* nor open the segment to cut it */
        snprintf(cmd, sizeof(cmd), "mv %s %s.away && mkdir -p %s/in-the-way", seg, seg, seg);
        cr_assert_eq(system(cmd), 0);
    }
    /* The next segment write fails, or the sync of the next checkpoint: the
     * earlier batches' writes are done first (else one of them meets the
     * fault, and the produce below is refused). */
    for (int w = 0; w < 3000 && shard0_stats(&e).hot.unwritten != 0; w++)
        usleep(1000);
    cr_assert_eq(shard0_stats(&e).hot.unwritten, 0);
    uint32_t ops =
        is_sync ? 1u << RV_IO_OP_FDATASYNC : 1u << RV_IO_OP_WRITE | 1u << RV_IO_OP_WRITEV;
    rv_io_fault_fail_fd(fd, ops, -EIO, 1);
    int64_t taken = produce_one(&e, topic, 0, n, RV_ACKS_ALL);
    cr_assert_eq(taken, n, "acknowledged from the WAL: %s",
                 taken < 0 ? rv_strerror((int)taken) : "another offset");
    n++;
    for (int w = 0; w < 5000 && rv_io_fault_pending(); w++)
        usleep(1000);
    cr_assert_not(rv_io_fault_pending(), "the fault met a write or sync of the segment");
    rv_io_fault_fail_fd(-1, 0, 0, 0);
    uint64_t ckpt_then = ckpt_lsn_on_disk();
    if (is_blocked) {
        /* The rebuild fails (and is tried again): calls get its error, and
         * the checkpoint stays where it was, so the WAL keeps the data. */
        int64_t rc = -EIO;
        for (int w = 0; w < 3000 && rc != -EISDIR; w++) {
            rc = produce_one(&e, topic, 0, n, RV_ACKS_ALL);
            if (rc == n) { /* in before the failed write's completion failed the log */
                n++;
                continue;
            }
            if (rc != -EIO)
                break;
            usleep(1000);
        }
        cr_assert_eq(rc, -EISDIR, "the failed rebuild's error: %s",
                     rc < 0 ? rv_strerror((int)rc) : "taken");
        usleep(500 * 1000); /* checkpoint ticks every 100 ms */
        cr_assert_eq(ckpt_lsn_on_disk(), ckpt_then, "no checkpoint while the log waits");
        if (block == REBUILD_BLOCK_SEGMENT) {
            /* One atomic swap: a rebuild never finds the segment missing. */
            char away[1300];
            snprintf(away, sizeof(away), "%s.away", seg);
            cr_assert_eq(renameat2(AT_FDCWD, away, AT_FDCWD, seg, RENAME_EXCHANGE), 0, "%s",
                         strerror(errno));
        }
        snprintf(cmd, sizeof(cmd), "rm -rf %s%s", block == REBUILD_BLOCK_INDEX ? idx : seg,
                 block == REBUILD_BLOCK_INDEX ? "" : ".away");
        cr_assert_eq(system(cmd), 0);
    }
    uint32_t refused = 0;
    for (uint32_t k = 0; k < 50; k++, n++)
        refused += produce_until_taken(&e, topic, n);
    cr_assert_gt(refused, 0, "the failed log refused appends for a while");
    cr_assert_eq(read_all(&e, topic, 0, 0, 0), n, "every acknowledged record, at its offset");
    uint64_t ckpt_now = ckpt_lsn_on_disk();
    for (int w = 0; w < 3000 && ckpt_now <= ckpt_then; w++) {
        usleep(1000);
        ckpt_now = ckpt_lsn_on_disk();
    }
    cr_assert_gt(ckpt_now, ckpt_then, "checkpoints go on after the rebuild");
    uint64_t unwritten = shard0_stats(&e).hot.unwritten;
    for (int w = 0; w < 3000 && unwritten != 0; w++) {
        usleep(1000);
        unwritten = shard0_stats(&e).hot.unwritten;
    }
    cr_assert_eq(unwritten, 0, "the failure left no bytes counted against the shard's appends");
    env_close(&e);
    e = env_open_cfg(1, &scfg);
    cr_assert_eq(read_all(&e, topic, 0, 0, 0), n);
    cr_assert_eq(produce_one(&e, topic, 0, n, RV_ACKS_ALL), n);
    env_close(&e);
}

static void failed_write_is_rebuilt(const char *topic, bool is_sync, enum rebuild_block block)
{
    failed_write_is_rebuilt_in(topic, is_sync, block, NULL);
}

/* The same after several rolls since the log was loaded: the durable point
 * followed them, and the cut keeps every rolled segment. */
Test(store, a_failed_log_that_rolled_is_rebuilt_from_the_wal)
{
    failed_write_is_rebuilt_in("failr", false, REBUILD_FREE, "65536");
    failed_write_is_rebuilt_in("failrs", true, REBUILD_FREE, "65536");
}

Test(store, a_log_whose_segment_write_fails_is_rebuilt_from_the_wal)
{
    failed_write_is_rebuilt("failw", false, REBUILD_FREE);
}

Test(store, a_log_whose_segment_sync_fails_is_rebuilt_from_the_wal)
{
    failed_write_is_rebuilt("fails", true, REBUILD_FREE);
}

/* A rebuild that fails (the index cannot be removed, or the segment cannot
 * be opened to cut it) leaves the log failed to load (calls get the error),
 * holds the checkpoint back, and is tried again until it works. */
Test(store, a_rebuild_that_fails_is_tried_again_and_holds_the_wal)
{
    failed_write_is_rebuilt("failb", false, REBUILD_BLOCK_INDEX);
    failed_write_is_rebuilt("failo", false, REBUILD_BLOCK_SEGMENT);
}

/* segment_backlog_bytes: while a shard's segment writes are behind (held back
 * here by a ring that answers EAGAIN), rv_produce is refused with -ENOBUFS
 * and rv_produce_sync waits until the writes catch up instead of returning
 * it; a bound past the pool's room is refused at open. */
struct backlog_clear {
    pthread_t thread;
    uint32_t after_ms;
};

static void *backlog_clear_main(void *arg)
{
    struct backlog_clear *b = arg;
    usleep(b->after_ms * 1000);
    rv_io_fault_fail_fd(-1, 0, 0, 0);
    return NULL;
}

struct produce_wait {
    struct test_signal done;
    int64_t base;
};

static void produce_result(void *arg, int64_t base)
{
    struct produce_wait *r = arg;
    r->base = base;
    test_signal_post(&r->done);
}

Test(store, produce_waits_while_the_segment_writes_are_behind)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.segment_backlog_bytes = 1; /* one unwritten batch holds appends back */
    struct env e = env_open_cfg(1, &scfg);
    /* A bound past the pool's room is refused before the open touches anything. */
    struct rv_store_config too_big = scfg;
    too_big.segment_backlog_bytes = (512ull << 20) + 1;
    rv_store_t *st = NULL;
    cr_assert_eq(rv_store_open(&st, e.rt, &too_big), -EINVAL);
    cr_assert(strstr(rv_err_msg(), "segment_backlog_bytes") != NULL, "%s", rv_err_msg());
    cr_assert_null(st);
    make_topic(&e, "backlog", 1, NULL, NULL);
    cr_assert_eq(produce_one(&e, "backlog", 0, 0, RV_ACKS_ALL), 0);
    int fd = -1;
    for (int w = 0; w < 2000 && (fd < 0 || shard0_stats(&e).hot.unwritten != 0); w++) {
        fd = segment_fd("backlog", 0);
        usleep(1000);
    }
    cr_assert_geq(fd, 0, "the segment is open");
    rv_io_fault_fail_fd(fd, 1u << RV_IO_OP_WRITE | 1u << RV_IO_OP_WRITEV, -EAGAIN, 1u << 30);
    cr_assert_eq(produce_one(&e, "backlog", 0, 1, RV_ACKS_ALL), 1, "in the WAL, not the segment");
    cr_assert_gt(shard0_stats(&e).hot.unwritten, 0);
    struct produce_wait r;
    test_signal_init(&r.done);
    struct rv_record rec = {.key = "k", .key_len = 1, .value = "v", .value_len = 1};
    cr_assert_eq(rv_produce(e.st, "backlog", 0, &rec, 1, RV_ACKS_ALL, produce_result, &r), 0);
    test_signal_wait(&r.done);
    cr_assert_eq(r.base, -ENOBUFS, "refused while the segment is behind: %s",
                 r.base < 0 ? rv_strerror((int)r.base) : "taken");
    cr_assert_gt(shard0_stats(&e).hot.unwritten_full, 0);
    /* The writes resume 300 ms from now; the blocking produce waits for it. */
    struct backlog_clear clear = {.after_ms = 300};
    uint64_t t0 = rv_clock_now_ns();
    cr_assert_eq(pthread_create(&clear.thread, NULL, backlog_clear_main, &clear), 0);
    cr_assert_eq(produce_one(&e, "backlog", 0, 2, RV_ACKS_ALL), 2, "taken once writes resumed");
    cr_assert_geq(rv_clock_now_ns() - t0, 250ull * 1000000, "it waited for the writes");
    pthread_join(clear.thread, NULL);
    cr_assert_eq(read_all(&e, "backlog", 0, 0, 0), 3);
    env_close(&e);
}

/* Past STORE_CKPT_WAL_FILES WAL files a checkpoint starts early, whatever
 * checkpoint_interval_ms says: the WAL keeps a bounded number of files (here
 * a few 1 MiB ones while 12 MiB go through it, with an hour between timed
 * checkpoints). */
static uint32_t wal_files_on_disk(void)
{
    char path[1100];
    snprintf(path, sizeof(path), "%.900s/wal/shard-0", dir);
    return test_count_files(path, ".wal");
}

/* One rv_produce_sync of 16 records of 16 KiB to partition 0 of topic,
 * expected at offset base. */
static void produce_256k(struct env *e, const char *topic, int64_t base)
{
    static char value[16384];
    memset(value, 'w', sizeof(value));
    struct rv_record recs[16];
    for (int i = 0; i < 16; i++)
        recs[i] = (struct rv_record){.value = value, .value_len = (int32_t)sizeof(value)};
    cr_assert_eq(rv_produce_sync(e->st, topic, 0, recs, 16, RV_ACKS_ALL), base);
}

Test(store, a_growing_wal_is_checkpointed_before_its_interval)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.wal_file_bytes = 1 << 20;
    scfg.checkpoint_interval_ms = 3600 * 1000;
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, "walgrow", 1, NULL, NULL);
    uint32_t most = 0;
    for (int i = 0; i < 48; i++) { /* 256 KiB each: 12 MiB in all */
        produce_256k(&e, "walgrow", 16 * i);
        uint32_t files = wal_files_on_disk();
        most = files > most ? files : most;
    }
    cr_assert_gt(ckpt_lsn_on_disk(), 0, "checkpointed without waiting an hour");
    cr_assert_leq(most, 8, "the WAL kept at most %u files", most);
    env_close(&e);
    e = env_open_cfg(1, &scfg);
    cr_assert_eq(rv_list_offset(e.st, "walgrow", 0, RV_OFFSET_LATEST), 48 * 16);
    env_close(&e);
}

/* A checkpoint that fails (a directory where its file goes) is not tried
 * again at every WAL roll: early checkpoints wait for a timed one to
 * succeed, then resume. */
Test(store, a_failing_checkpoint_is_not_retried_at_every_wal_roll)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.wal_file_bytes = 1 << 20;
    scfg.checkpoint_interval_ms = 4000;
    struct env e = env_open_cfg(1, &scfg);
    make_topic(&e, "ckfail", 1, NULL, NULL);
    char tmp[1100], cmd[1300];
    snprintf(tmp, sizeof(tmp), "%.900s/wal/shard-0/checkpoint.tmp", dir);
    snprintf(cmd, sizeof(cmd), "mkdir -p %s/in-the-way", tmp);
    cr_assert_eq(system(cmd), 0);
    int64_t next = 0;
    for (int i = 0; i < 48; i++, next += 16) /* 12 MiB: a dozen WAL rolls */
        produce_256k(&e, "ckfail", next);
    struct rv_store_shard_stats s = shard0_stats(&e);
    cr_assert_geq(s.wal.rolls, 8);
    cr_assert_geq(s.checkpoint_failures, 1, "the early checkpoint failed");
    cr_assert_leq(s.checkpoint_failures, 3, "%llu failures over %llu rolls: retried at each",
                  (unsigned long long)s.checkpoint_failures, (unsigned long long)s.wal.rolls);
    cr_assert_eq(s.checkpoints, 0);
    /* Out of the way: the next timed checkpoint works, and early ones resume. */
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
    cr_assert_eq(system(cmd), 0);
    for (int w = 0; w < 6000 && shard0_stats(&e).checkpoints == 0; w++)
        usleep(1000);
    s = shard0_stats(&e);
    cr_assert_geq(s.checkpoints, 1, "the timed checkpoint");
    for (int i = 0; i < 48; i++, next += 16)
        produce_256k(&e, "ckfail", next);
    for (int w = 0; w < 3000 && shard0_stats(&e).checkpoints <= s.checkpoints; w++)
        usleep(1000);
    cr_assert_gt(shard0_stats(&e).checkpoints, s.checkpoints, "early checkpoints again");
    env_close(&e);
}
