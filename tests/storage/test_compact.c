/* tests/storage/test_compact.c - tests storage/compact.c and the compaction
 * hooks of plog.c and store.c, through the public API and rv_store_compact. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rivven.h"
#include "storage/compact.h"
#include "storage/part.h"
#include "storage/seg.h"
#include "tests/support/rt.h"

static char dir[1024];

static void setup(void)
{
    strcpy(dir, "/tmp/rivven-compact-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(compact, .init = setup, .fini = teardown, .timeout = 240);
TestSuite(compact_bench, .init = setup, .fini = teardown, .timeout = 1200);

/* ---- the store ----------------------------------------------------------------------- */

struct env {
    rv_runtime_t *rt;
    rv_store_t *st;
    struct rv_store_config cfg;
};

static struct env env_open_cfg(const struct rv_store_config *scfg)
{
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    cfg.shard_count = 2;
    cfg.allow_oversubscribe = true;
    cfg.data_dir = dir;
    struct env e = {0};
    int rc = rv_runtime_open(&e.rt, &cfg);
    cr_assert_eq(rc, 0, "runtime: %s", rv_err_msg());
    rc = rv_store_open(&e.st, e.rt, scfg);
    cr_assert_eq(rc, 0, "store: %s: %s", rv_strerror(rc), rv_err_msg());
    e.cfg = *scfg;
    return e;
}

static struct env env_open(void)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    return env_open_cfg(&scfg);
}

static void env_close(struct env *e)
{
    rv_store_close(e->st);
    rv_runtime_close(e->rt);
}

/* A compacted topic of one partition; settings as name/value pairs (NULL-ended). */
static void make_topic(struct env *e, const char *name, const char *const *settings)
{
    struct rv_topic_config tc;
    rv_topic_config_init(&tc);
    cr_assert_eq(rv_topic_config_set(&tc, "cleanup.policy", "compact"), 0);
    cr_assert_eq(rv_topic_config_set(&tc, "segment.bytes", "8192"), 0);
    for (size_t i = 0; settings != NULL && settings[i] != NULL; i += 2)
        cr_assert_eq(rv_topic_config_set(&tc, settings[i], settings[i + 1]), 0, "%s: %s",
                     settings[i], rv_err_msg());
    int rc = rv_topic_create(e->st, name, &tc);
    cr_assert_eq(rc, 0, "create %s: %s", name, rv_err_msg());
}

static void part_dir(char *out, size_t len, const char *topic)
{
    snprintf(out, len, "%s/topics/%s/0", dir, topic);
}

/* ---- the model: what each offset holds --------------------------------------------- */

#define MODEL_MAX 200000

struct model {
    int32_t key[MODEL_MAX]; /* key id of the record at an offset */
    int32_t seq[MODEL_MAX]; /* its value's sequence number, -1: a tombstone */
    int64_t count;          /* offsets produced */
};

static struct model *model_new(void)
{
    struct model *m = calloc(1, sizeof(*m));
    cr_assert_not_null(m);
    return m;
}

static int key_text(char *buf, size_t len, int32_t key)
{
    return snprintf(buf, len, "key-%05d", key);
}

static int value_text(char *buf, size_t len, int32_t seq)
{
    return snprintf(buf, len, "value-%d-%0*d", seq, seq % 40, seq);
}

/* Produce n records as one batch: keys[i] (value seqs[i], -1 for a tombstone). */
static void produce(struct env *e, struct model *m, const char *topic, const int32_t *keys,
                    const int32_t *seqs, uint32_t n)
{
    struct rv_record recs[64];
    char kbuf[64][32], vbuf[64][96];
    cr_assert_leq(n, 64u);
    for (uint32_t i = 0; i < n; i++) {
        int kl = key_text(kbuf[i], sizeof(kbuf[i]), keys[i]);
        int vl = seqs[i] < 0 ? -1 : value_text(vbuf[i], sizeof(vbuf[i]), seqs[i]);
        recs[i] =
            (struct rv_record){.key = kbuf[i], .key_len = kl, .value = vbuf[i], .value_len = vl};
    }
    int64_t base = rv_produce_sync(e->st, topic, 0, recs, n, RV_ACKS_LEADER);
    cr_assert_eq(base, m->count, "produce: %lld (%s)", (long long)base, rv_err_msg());
    for (uint32_t i = 0; i < n; i++) {
        cr_assert_lt(m->count, MODEL_MAX);
        m->key[m->count] = keys[i];
        m->seq[m->count] = seqs[i];
        m->count++;
    }
}

/* count records over key_count keys, batch records a batch, in a scrambled order. */
static void produce_many(struct env *e, struct model *m, const char *topic, uint32_t count,
                         int32_t key_count, uint32_t batch)
{
    for (uint32_t i = 0; i < count; i += batch) {
        int32_t keys[64], seqs[64];
        uint32_t n = count - i < batch ? count - i : batch;
        for (uint32_t j = 0; j < n; j++) {
            uint32_t k = i + j;
            keys[j] = (int32_t)((k * 7919u + k / 3) % (uint32_t)key_count);
            seqs[j] = (int32_t)m->count + (int32_t)j;
        }
        produce(e, m, topic, keys, seqs, n);
    }
    /* acks=leader completes before the WAL write; the log shows it after. */
    for (int w = 0; w < 5000 && rv_list_offset(e->st, topic, 0, RV_OFFSET_LATEST) < m->count; w++)
        usleep(1000);
    cr_assert_eq(rv_list_offset(e->st, topic, 0, RV_OFFSET_LATEST), m->count);
}

/* The base of the active (last) segment. */
static uint64_t active_base(const char *topic)
{
    char path[1200];
    part_dir(path, sizeof(path), topic);
    uint64_t *bases = NULL;
    uint32_t count = 0;
    cr_assert_eq(rv_seg_list(path, &bases, &count), 0);
    cr_assert_gt(count, 0u);
    uint64_t b = bases[count - 1];
    free(bases);
    return b;
}

/* What compaction must leave: below `upto`, the latest offset of every key
 * (tombstones only while is_tombstone_kept); from `upto` on, everything. */
static bool *model_expect(const struct model *m, int64_t upto, bool is_tombstone_kept)
{
    bool *keep = calloc((size_t)m->count + 1, sizeof(*keep));
    int32_t *latest = malloc(MODEL_MAX * sizeof(*latest));
    cr_assert(keep != NULL && latest != NULL);
    for (int32_t k = 0; k < MODEL_MAX; k++)
        latest[k] = -1;
    for (int64_t o = 0; o < upto; o++)
        latest[m->key[o]] = (int32_t)o;
    for (int64_t o = 0; o < m->count; o++) {
        bool is_latest = o >= upto || latest[m->key[o]] == (int32_t)o;
        keep[o] = is_latest && (o >= upto || m->seq[o] >= 0 || is_tombstone_kept);
    }
    free(latest);
    return keep;
}

/* One past the last offset of the batches a fetch returned (0: none). */
static int64_t fetched_batches_end(const rv_fetch_result_t *res)
{
    int64_t end = 0;
    for (uint32_t i = 0; i < rv_fetch_batch_ranges(res); i++) {
        uint32_t len;
        const uint8_t *bytes = rv_fetch_batch_range(res, i, &len);
        struct rv_batch_iter it;
        struct rv_batch_view v;
        rv_batch_iter_init(&it, bytes, len, 1 << 20);
        while (rv_batch_iter_next(&it, &v) == 1)
            end = rv_batch_last_offset(&v) + 1 > end ? rv_batch_last_offset(&v) + 1 : end;
    }
    return end;
}

/* Read everything from `from` and check it against the model: every record
 * holds what was produced at its offset, offsets increase, and the offsets
 * read are exactly those `keep` says (NULL: do not check which). */
static uint32_t read_check(struct env *e, const struct model *m, const char *topic, int64_t from,
                           const bool *keep)
{
    int64_t offset = from;
    int64_t next_expected = from;
    uint32_t n = 0;
    for (int guard = 0; guard < 100000; guard++) {
        int64_t before = offset;
        rv_fetch_result_t *res = NULL;
        int rc = rv_fetch_sync(e->st, topic, 0, offset, 64 << 10, &res);
        cr_assert_eq(rc, 0, "fetch at %lld: %s", (long long)offset, rv_strerror(rc));
        struct rv_record_view v;
        while ((rc = rv_fetch_next(res, &v)) == 1) {
            cr_assert_geq(v.offset, offset, "offsets increase");
            cr_assert_lt(v.offset, m->count);
            if (keep != NULL) {
                while (next_expected < v.offset) {
                    cr_assert(!keep[next_expected], "offset %lld should have been kept",
                              (long long)next_expected);
                    next_expected++;
                }
                cr_assert(keep[v.offset], "offset %lld (key %d, seq %d) should be gone",
                          (long long)v.offset, m->key[v.offset], m->seq[v.offset]);
                next_expected = v.offset + 1;
            }
            char want[96];
            int kl = key_text(want, sizeof(want), m->key[v.offset]);
            cr_assert_eq(v.key_len, kl);
            cr_assert(memcmp(v.key, want, (size_t)kl) == 0, "key at %lld", (long long)v.offset);
            if (m->seq[v.offset] < 0) {
                cr_assert_eq(v.value_len, -1, "a tombstone at %lld", (long long)v.offset);
            } else {
                int wl = value_text(want, sizeof(want), m->seq[v.offset]);
                cr_assert_eq(v.value_len, wl, "value length at %lld", (long long)v.offset);
                cr_assert(memcmp(v.value, want, (size_t)wl) == 0, "value at %lld",
                          (long long)v.offset);
            }
            offset = v.offset + 1;
            n++;
        }
        cr_assert_eq(rc, 0);
        int64_t hw = rv_fetch_high_watermark(res);
        int64_t batch_end = fetched_batches_end(res);
        if (batch_end > offset) /* as consumers do: past compacted-away records too */
            offset = batch_end;
        rv_fetch_release(res);
        cr_assert_eq(hw, m->count, "high watermark");
        if (offset >= hw)
            break;
        cr_assert_gt(offset, before, "no progress at offset %lld", (long long)before);
    }
    cr_assert_eq(offset, m->count, "read to the end: stopped at %lld", (long long)offset);
    if (keep != NULL) {
        for (; next_expected < m->count; next_expected++)
            cr_assert(!keep[next_expected], "offset %lld missing at the end",
                      (long long)next_expected);
    }
    return n;
}

static void verify_dir(void)
{
    const char *ctl = getenv("RIVVENCTL");
    if (ctl == NULL)
        return;
    char out[1100], cmd[3400];
    snprintf(out, sizeof(out), "%s-verify.out", dir);
    snprintf(cmd, sizeof(cmd), "%s verify %s > %s 2>&1", ctl, dir, out);
    cr_assert_eq(system(cmd), 0, "rivvenctl verify failed (see %s)", out);
    /* Offset gaps are what compaction leaves: verify must not call them out. */
    snprintf(cmd, sizeof(cmd), "grep -q 'offset gap' %s", out);
    cr_assert_neq(system(cmd), 0, "verify warns about compaction's offset gaps (see %s)", out);
    unlink(out);
}

/* Every batch written and rolled: close the store and open it again. */
static void settle(struct env *e)
{
    struct rv_store_config cfg = e->cfg;
    env_close(e);
    *e = env_open_cfg(&cfg);
}

/* The offset below which the last pass compacted (its point file), or -1. */
static int64_t clean_point(const char *topic)
{
    char path[1300];
    part_dir(path, sizeof(path), topic);
    strcat(path, "/" RV_COMPACT_POINT_FILE);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long long v = -1;
    if (fscanf(f, "%lld", &v) != 1)
        v = -1;
    fclose(f);
    return v;
}

static uint32_t segment_count(struct env *e, const char *topic)
{
    struct rv_partition_info info;
    cr_assert_eq(rv_partition_info(e->st, topic, 0, &info), 0);
    return info.segments;
}

/* ---- tests ---------------------------------------------------------------------------- */

Test(compact, overwritten_keys_keep_their_latest_value_at_their_offset)
{
    struct env e = env_open();
    make_topic(&e, "kv", NULL);
    struct model *m = model_new();
    produce_many(&e, m, "kv", 6000, 50, 10);
    settle(&e);
    uint32_t before = segment_count(&e, "kv");
    cr_assert_gt(before, 10u);
    int64_t freed = rv_store_compact(e.st, "kv", 0);
    cr_assert_gt(freed, 0, "freed %lld: %s", (long long)freed, rv_err_msg());
    cr_assert_eq(clean_point("kv"), (int64_t)active_base("kv"));
    bool *keep = model_expect(m, clean_point("kv"), true);
    read_check(&e, m, "kv", 0, keep);
    read_check(&e, m, "kv", 1234, NULL); /* from an offset compaction removed */
    /* The next pass merges the small segments the first one left. */
    cr_assert_geq(rv_store_compact(e.st, "kv", 0), 0);
    uint32_t after = segment_count(&e, "kv");
    cr_assert_lt(after, before / 2, "small segments merge (%u -> %u)", before, after);
    read_check(&e, m, "kv", 0, keep);
    cr_assert_eq(rv_store_compact(e.st, "kv", 0), 0, "nothing changes any more");
    cr_assert_eq(segment_count(&e, "kv"), after);
    env_close(&e);

    e = env_open();
    read_check(&e, m, "kv", 0, keep); /* the compacted segments and indexes recover */
    cr_assert_eq(rv_list_offset(e.st, "kv", 0, RV_OFFSET_EARLIEST), 0, "the log start stays");
    env_close(&e);
    verify_dir();
    free(keep);
    free(m);
}

/* 1000 records of 100 keys, tombstones for keys 0..39 (two per batch), then
 * 2000 records of 30 other keys so the tombstones' segments close; settled.
 * The model of what was written (the caller frees it). */
static struct model *produce_with_tombstones(struct env *e, const char *topic)
{
    struct model *m = model_new();
    produce_many(e, m, topic, 1000, 100, 20);
    for (int32_t k = 0; k < 40; k += 2) {
        int32_t keys[2] = {k, k + 1};
        int32_t seqs[2] = {-1, -1};
        produce(e, m, topic, keys, seqs, 2);
    }
    for (uint32_t i = 0; i < 2000; i += 10) {
        int32_t keys[10], seqs[10];
        for (uint32_t j = 0; j < 10; j++) {
            keys[j] = 1000 + (int32_t)((i + j) % 30);
            seqs[j] = (int32_t)m->count + (int32_t)j;
        }
        produce(e, m, topic, keys, seqs, 10);
    }
    settle(e);
    return m;
}

Test(compact, tombstones_go_after_delete_retention_ms)
{
    struct env e = env_open();
    const char *const settings[] = {"delete.retention.ms", "400", NULL};
    make_topic(&e, "tomb", settings);
    struct model *m = produce_with_tombstones(&e, "tomb");
    int64_t upto = (int64_t)active_base("tomb");
    cr_assert_gt(upto, 1040, "the tombstones are in closed segments");
    cr_assert_gt(rv_store_compact(e.st, "tomb", 0), 0);
    cr_assert_eq(clean_point("tomb"), upto);
    bool *keep = model_expect(m, upto, true);
    read_check(&e, m, "tomb", 0, keep); /* tombstones stay, what they deleted is gone */
    free(keep);
    usleep(600 * 1000);
    cr_assert_gt(rv_store_compact(e.st, "tomb", 0), 0);
    keep = model_expect(m, upto, false);
    read_check(&e, m, "tomb", 0, keep); /* past the horizon: the tombstones are gone too */
    env_close(&e);
    e = env_open();
    read_check(&e, m, "tomb", 0, keep);
    env_close(&e);
    verify_dir();
    free(keep);
    free(m);
}

Test(compact, compressed_batches_are_compacted)
{
    const char *codecs[] = {"gzip", "snappy", "lz4", "zstd"};
    struct env e = env_open();
    struct model *ms[4];
    for (int c = 0; c < 4; c++) {
        char name[32];
        snprintf(name, sizeof(name), "z-%s", codecs[c]);
        const char *const settings[] = {"compression.type", codecs[c], NULL};
        make_topic(&e, name, settings);
        ms[c] = model_new();
        produce_many(&e, ms[c], name, 4000, 60, 25);
    }
    settle(&e);
    for (int c = 0; c < 4; c++) {
        char name[32];
        snprintf(name, sizeof(name), "z-%s", codecs[c]);
        cr_assert_gt(rv_store_compact(e.st, name, 0), 0, "%s: %s", codecs[c], rv_err_msg());
        bool *keep = model_expect(ms[c], clean_point(name), true);
        read_check(&e, ms[c], name, 0, keep);
        free(keep);
    }
    env_close(&e);
    e = env_open();
    for (int c = 0; c < 4; c++) {
        char name[32];
        snprintf(name, sizeof(name), "z-%s", codecs[c]);
        bool *keep = model_expect(ms[c], clean_point(name), true);
        read_check(&e, ms[c], name, 0, keep);
        free(keep);
        free(ms[c]);
    }
    env_close(&e);
    verify_dir();
}

Test(compact, more_keys_than_the_map_holds_take_several_passes)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.compact_map_entries = RV_COMPACT_MAP_ENTRIES_MIN; /* 1024 keys a pass */
    struct env e = env_open_cfg(&scfg);
    make_topic(&e, "wide", NULL);
    struct model *m = model_new();
    produce_many(&e, m, "wide", 3000, 2500, 10); /* 2500 keys, some written twice */
    produce_many(&e, m, "wide", 3000, 2500, 10);
    settle(&e);
    int64_t upto = (int64_t)active_base("wide");
    int64_t prev = 0;
    int passes = 0;
    while (clean_point("wide") < upto) {
        cr_assert_lt(passes++, 20, "passes make progress");
        cr_assert_geq(rv_store_compact(e.st, "wide", 0), 0, "%s", rv_err_msg());
        int64_t point = clean_point("wide");
        cr_assert_gt(point, prev, "pass %d moved the clean point", passes);
        prev = point;
        bool *keep = model_expect(m, point, true);
        read_check(&e, m, "wide", 0, keep);
        free(keep);
    }
    cr_assert_geq(passes, 3, "%d passes for 2500 keys", passes);
    env_close(&e);
    verify_dir();
    free(m);
}

Test(compact, records_without_a_key_are_refused)
{
    struct env e = env_open();
    make_topic(&e, "nokey", NULL);
    const char *const settings[] = {"compression.type", "lz4", NULL};
    make_topic(&e, "nokey-lz4", settings);
    struct rv_record r[2] = {{.key = "k", .key_len = 1, .value = "v", .value_len = 1},
                             {.key = NULL, .key_len = -1, .value = "v", .value_len = 1}};
    cr_assert_eq(rv_produce_sync(e.st, "nokey", 0, r, 2, RV_ACKS_LEADER), -EINVAL);
    cr_assert_eq(rv_produce_sync(e.st, "nokey-lz4", 0, r, 2, RV_ACKS_LEADER), -EINVAL);
    cr_assert_eq(rv_produce_sync(e.st, "nokey", 0, r, 1, RV_ACKS_LEADER), 0);
    cr_assert_eq(rv_produce_sync(e.st, "nokey-lz4", 0, r, 1, RV_ACKS_LEADER), 0);
    env_close(&e);
}

Test(compact, a_topic_that_does_not_compact_is_left_alone)
{
    struct env e = env_open();
    struct rv_topic_config tc;
    rv_topic_config_init(&tc);
    cr_assert_eq(rv_topic_create(e.st, "plain", &tc), 0);
    cr_assert_eq(rv_store_compact(e.st, "plain", 0), -EINVAL);
    struct rv_record r = {.key = NULL, .key_len = -1, .value = "v", .value_len = 1};
    cr_assert_eq(rv_produce_sync(e.st, "plain", 0, &r, 1, RV_ACKS_LEADER), 0, "null keys ok");
    env_close(&e);
}

Test(compact, the_settings_round_trip)
{
    struct rv_topic_config tc;
    rv_topic_config_init(&tc);
    cr_assert_eq(tc.delete_retention_ms, 86400000);
    cr_assert_float_eq(tc.min_cleanable_dirty_ratio, 0.5, 1e-9);
    cr_assert_eq(rv_topic_config_set(&tc, "min.cleanable.dirty.ratio", "0.25"), 0);
    cr_assert_eq(rv_topic_config_set(&tc, "min.cleanable.dirty.ratio", "1.5"), -EINVAL);
    cr_assert_eq(rv_topic_config_set(&tc, "delete.retention.ms", "-1"), -EINVAL);
    cr_assert_eq(rv_topic_config_set(&tc, "delete.retention.ms", "1000"), 0);
    cr_assert_eq(rv_topic_config_set(&tc, "cleanup.policy", "compact,delete"), 0);
    char buf[32];
    cr_assert_eq(rv_topic_config_get(&tc, "min.cleanable.dirty.ratio", buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "0.25");
    struct env e = env_open();
    cr_assert_eq(rv_topic_create(e.st, "cfg", &tc), 0);
    env_close(&e);
    e = env_open();
    struct rv_topic_config got;
    cr_assert_eq(rv_topic_describe(e.st, "cfg", &got), 0);
    cr_assert_eq(got.delete_retention_ms, 1000);
    cr_assert_float_eq(got.min_cleanable_dirty_ratio, 0.25, 1e-9);
    cr_assert_str_eq(got.cleanup_policy, "compact,delete");
    env_close(&e);
}

Test(compact, passes_run_by_themselves_once_the_dirty_ratio_is_reached)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.retention_check_ms = 50;
    struct env e = env_open_cfg(&scfg);
    const char *const settings[] = {"min.cleanable.dirty.ratio", "0.3", NULL};
    make_topic(&e, "auto", settings);
    struct model *m = model_new();
    produce_many(&e, m, "auto", 3000, 20, 10);
    int waited_ms = 0;
    while (clean_point("auto") < 0 && waited_ms < 10000) {
        usleep(20 * 1000);
        waited_ms += 20;
    }
    cr_assert_gt(clean_point("auto"), 0, "compacted by the retention tick");
    read_check(&e, m, "auto", 0, NULL);
    env_close(&e);
    e = env_open_cfg(&scfg);
    cr_assert_geq(rv_store_compact(e.st, "auto", 0), 0, "a forced pass");
    bool *keep = model_expect(m, clean_point("auto"), true);
    read_check(&e, m, "auto", 0, keep);
    free(keep);
    env_close(&e);
    free(m);
}

Test(compact, compact_and_delete_still_deletes_by_size)
{
    struct env e = env_open();
    const char *const settings[] = {"cleanup.policy", "compact,delete", "retention.bytes", "20000",
                                    NULL};
    make_topic(&e, "both", settings);
    struct model *m = model_new();
    produce_many(&e, m, "both", 3000, 2000, 10);
    cr_assert_geq(rv_store_compact(e.st, "both", 0), 0);
    env_close(&e);
    struct rv_store_config cfg;
    rv_store_config_init(&cfg);
    cfg.retention_check_ms = 50;
    e = env_open_cfg(&cfg);
    int waited_ms = 0;
    while (rv_list_offset(e.st, "both", 0, RV_OFFSET_EARLIEST) == 0 && waited_ms < 10000) {
        usleep(20 * 1000);
        waited_ms += 20;
    }
    cr_assert_gt(rv_list_offset(e.st, "both", 0, RV_OFFSET_EARLIEST), 0, "retention ran");
    env_close(&e);
    free(m);
}

/* ---- reads while passes swap files ------------------------------------------------------ */

struct reader {
    struct env *e;
    const struct model *m;
    _Atomic bool is_done;
    _Atomic uint64_t rounds;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    while (!atomic_load(&r->is_done)) {
        read_check(r->e, r->m, "live", 0, NULL);
        atomic_fetch_add(&r->rounds, 1);
    }
    return NULL;
}

Test(compact, reads_from_the_start_go_on_while_passes_swap_files)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.hot_bytes = 64 << 10; /* most reads come from the disk */
    struct env e = env_open_cfg(&scfg);
    make_topic(&e, "live", NULL);
    struct model *m = model_new();
    produce_many(&e, m, "live", 4000, 40, 10);
    settle(&e);
    struct reader r = {.e = &e, .m = m};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, reader_main, &r), 0);
    for (int pass = 0; pass < 20; pass++) {
        int64_t rc = rv_store_compact(e.st, "live", 0);
        cr_assert_geq(rc, 0, "pass %d: %s", pass, rv_strerror((int)rc));
        usleep(5000);
    }
    atomic_store(&r.is_done, true);
    pthread_join(t, NULL);
    cr_assert_gt(atomic_load(&r.rounds), 0);
    bool *keep = model_expect(m, clean_point("live"), true);
    read_check(&e, m, "live", 0, keep);
    env_close(&e);
    free(keep);
    free(m);
}

/* ---- crashes in the middle of a swap ---------------------------------------------------- */

/* Build a pass over the closed segments of topic's partition with the store
 * closed, as a helper would: every output is a .cleaned file afterwards. */
static rv_compact_t *build_offline(const char *topic)
{
    char path[1200];
    part_dir(path, sizeof(path), topic);
    uint64_t *bases = NULL;
    uint32_t count = 0;
    cr_assert_eq(rv_seg_list(path, &bases, &count), 0);
    cr_assert_gt(count, 2u);
    struct rv_seg *segs = calloc(count, sizeof(*segs));
    for (uint32_t i = 0; i < count; i++) {
        struct rv_seg_recovery rep;
        rv_seg_init(&segs[i], bases[i], 4096);
        cr_assert_eq(rv_seg_recover(&segs[i], path, RV_SEG_SCAN_TAIL, 1 << 20, &rep), 0);
    }
    struct rv_compact_opts o = {.dir = path,
                                .segs = segs,
                                .seg_count = count - 1,
                                .next_base = bases[count - 1],
                                .point = {0, RV_COMPACT_NO_HORIZON},
                                .segment_bytes = 40000, /* groups of about 5 */
                                .index_interval = 4096,
                                .max_batch_bytes = 1 << 20,
                                .map_entries_max = RV_COMPACT_MAP_ENTRIES_DEFAULT,
                                .delete_retention_ms = 1000,
                                .now_ms = 0};
    rv_compact_t *c = NULL;
    cr_assert_eq(rv_compact_create(&c, &o), 0);
    int rc;
    while ((rc = rv_compact_step(c)) == 1)
        ;
    cr_assert_eq(rc, 0, "build: %s", rv_err_msg());
    cr_assert_gt(rv_compact_output_count(c), 1u);
    for (uint32_t i = 0; i < count; i++)
        rv_seg_fini(&segs[i]);
    free(segs);
    free(bases);
    return c;
}

static void out_path(char *buf, size_t len, const char *topic, const struct rv_compact_output *o,
                     const char *suffix)
{
    char path[1200];
    part_dir(path, sizeof(path), topic);
    snprintf(buf, len, "%s/%020" PRIu64 ".%020" PRIu64 "%s", path, o->seg.base_offset, o->end,
             suffix);
}

static uint32_t count_files(const char *topic, const char *suffix)
{
    char path[1200];
    part_dir(path, sizeof(path), topic);
    return test_count_files(path, suffix);
}

Test(compact, a_crash_before_the_commit_leaves_the_log_as_it_was)
{
    struct env e = env_open();
    make_topic(&e, "crash1", NULL);
    struct model *m = model_new();
    produce_many(&e, m, "crash1", 3000, 30, 10);
    env_close(&e);
    rv_compact_t *c = build_offline("crash1");
    cr_assert_eq(count_files("crash1", ".log.cleaned"), rv_compact_output_count(c));
    rv_compact_destroy(c); /* the crash: .cleaned files stay */
    e = env_open();
    bool *keep = model_expect(m, 0, true); /* everything */
    read_check(&e, m, "crash1", 0, keep);
    cr_assert_eq(count_files("crash1", ".log.cleaned"), 0u, "recovery removed them");
    env_close(&e);
    verify_dir();
    free(keep);
    free(m);
}

/* What the swap removes before its last rename: the old segments' indexes
 * and the .log files but the first. */
static void remove_old_files(const char *path, uint64_t base, uint64_t end)
{
    uint64_t *bases = NULL;
    uint32_t count = 0;
    cr_assert_eq(rv_seg_list(path, &bases, &count), 0);
    for (uint32_t i = 0; i < count; i++) {
        if (bases[i] < base || bases[i] >= end)
            continue;
        char file[1400];
        snprintf(file, sizeof(file), "%s/%020" PRIu64 ".index", path, bases[i]);
        (void)unlink(file);
        snprintf(file, sizeof(file), "%s/%020" PRIu64 ".timeindex", path, bases[i]);
        (void)unlink(file);
        snprintf(file, sizeof(file), "%s/%020" PRIu64 ".log", path, bases[i]);
        if (bases[i] != base)
            cr_assert_eq(unlink(file), 0);
    }
    free(bases);
}

Test(compact, a_crash_after_the_commit_completes_the_swap_at_the_next_open)
{
    struct env e = env_open();
    make_topic(&e, "crash2", NULL);
    struct model *m = model_new();
    produce_many(&e, m, "crash2", 3000, 30, 10);
    env_close(&e);
    uint64_t upto = active_base("crash2");
    rv_compact_t *c = build_offline("crash2");
    uint32_t n = rv_compact_output_count(c);
    char from[1400], to[1400], path[1200];
    part_dir(path, sizeof(path), "crash2");
    for (uint32_t i = 0; i < n; i++) {
        const struct rv_compact_output *o = rv_compact_output_get(c, i);
        out_path(from, sizeof(from), "crash2", o, RV_COMPACT_CLEANED_SUFFIX);
        out_path(to, sizeof(to), "crash2", o, RV_COMPACT_SWAP_SUFFIX);
        cr_assert_eq(rename(from, to), 0); /* committed */
        if (i % 3 == 1)                    /* the crash came after some old files were removed */
            remove_old_files(path, o->seg.base_offset, o->end);
        if (i % 3 == 2) { /* ... or even after the rename over the first old file */
            remove_old_files(path, o->seg.base_offset, o->end);
            snprintf(from, sizeof(from), "%s/%020" PRIu64 ".log", path, o->seg.base_offset);
            cr_assert_eq(rename(to, from), 0);
        }
    }
    rv_compact_destroy(c);
    e = env_open();
    bool *keep = model_expect(m, (int64_t)upto, true);
    read_check(&e, m, "crash2", 0, keep);
    cr_assert_eq(count_files("crash2", ".log.swap"), 0u, "recovery completed them");
    env_close(&e);
    verify_dir();
    free(keep);
    free(m);
}

/* ---- a measurement (RIVVEN_COMPACT_BENCH=1) ---------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 100 MB of 100-byte records over 1000 keys in 16 MiB segments, then a pass
 * (every closed segment is read and rewritten), then a second pass with
 * nothing dirty (the small segments the first left merge). */
Test(compact_bench, one_hundred_megabytes_of_small_records)
{
    if (getenv("RIVVEN_COMPACT_BENCH") == NULL)
        cr_skip_test("set RIVVEN_COMPACT_BENCH=1 to measure");
    struct env e = env_open();
    struct rv_topic_config tc;
    rv_topic_config_init(&tc);
    cr_assert_eq(rv_topic_config_set(&tc, "cleanup.policy", "compact"), 0);
    const char *codec = getenv("RIVVEN_COMPACT_BENCH_CODEC");
    /* Compressed, the 100 MB take a few: smaller segments, so most of it is closed. */
    cr_assert_eq(rv_topic_config_set(&tc, "segment.bytes", codec != NULL ? "4194304" : "16777216"),
                 0);
    const char *keys_env = getenv("RIVVEN_COMPACT_BENCH_KEYS");
    uint32_t key_count = keys_env != NULL ? (uint32_t)atoi(keys_env) : 1000;
    cr_assert_gt(key_count, 0u);
    if (codec != NULL)
        cr_assert_eq(rv_topic_config_set(&tc, "compression.type", codec), 0);
    cr_assert_eq(rv_topic_create(e.st, "bench", &tc), 0);
    enum { BATCH = 500 };
    static struct rv_record recs[BATCH];
    static char keys[BATCH][24], vals[BATCH][80];
    uint64_t total = 0;
    uint32_t seq = 0;
    double t0 = now_s();
    while (total < 100ull << 20) {
        for (int i = 0; i < BATCH; i++, seq++) {
            int kl = snprintf(keys[i], sizeof(keys[i]), "key-%04u", (seq * 7919u) % key_count);
            uint64_t x = seq * 0x9e3779b97f4a7c15ull; /* half the value is noise */
            memset(vals[i], 'a' + (int)(seq % 26), sizeof(vals[i]));
            for (int b = 0; b < 40; b++, x = x * 6364136223846793005ull + 1442695040888963407ull)
                vals[i][b] = (char)('0' + (x >> 59));
            recs[i] = (struct rv_record){
                .key = keys[i], .key_len = kl, .value = vals[i], .value_len = 80};
            total += (uint64_t)kl + 80 + 10; /* about 100 bytes a record on disk */
        }
        cr_assert_geq(rv_produce_sync(e.st, "bench", 0, recs, BATCH, RV_ACKS_LEADER), 0);
    }
    double t1 = now_s();
    if (getenv("RIVVEN_COMPACT_BENCH_COLD") != NULL) { /* the segments come from the disk */
        struct rv_store_config cfg = e.cfg;
        env_close(&e);
        cr_assert_eq(system("sync && echo 3 > /proc/sys/vm/drop_caches"), 0, "drop caches");
        e = env_open_cfg(&cfg);
    }
    struct rv_partition_info before;
    cr_assert_eq(rv_partition_info(e.st, "bench", 0, &before), 0);
    t1 = now_s();
    int64_t freed = rv_store_compact(e.st, "bench", 0);
    double t2 = now_s();
    cr_assert_gt(freed, 0);
    struct rv_partition_info after;
    cr_assert_eq(rv_partition_info(e.st, "bench", 0, &after), 0);
    int64_t again = rv_store_compact(e.st, "bench", 0);
    double t3 = now_s();
    printf("compact bench (%s, %u keys): %u records, %.1f MB in %u segments, produced in %.2f s\n"
           "  first pass: %.3f s (%.0f MB/s of log), %.1f MB -> %.3f MB in %u segments\n"
           "  second pass (nothing dirty): %.3f s, freed %lld bytes\n",
           codec != NULL ? codec : "none", key_count, seq, (double)before.size_bytes / 1e6,
           before.segments, t1 - t0, t2 - t1, (double)before.size_bytes / 1e6 / (t2 - t1),
           (double)before.size_bytes / 1e6, (double)after.size_bytes / 1e6, after.segments, t3 - t2,
           (long long)again);
    env_close(&e);
}

/* A closed segment kept damaged at open: compaction passes end before it and
 * go on working (every pass used to fail on it, for good). */
Test(compact, a_damaged_closed_segment_bounds_the_passes)
{
    struct env e = env_open();
    make_topic(&e, "dmg", NULL);
    struct model *m = model_new();
    produce_many(&e, m, "dmg", 6000, 50, 10);
    settle(&e);
    env_close(&e);
    char pdir[1300];
    part_dir(pdir, sizeof(pdir), "dmg");
    uint64_t *bases = NULL;
    uint32_t count = 0;
    cr_assert_eq(rv_seg_list(pdir, &bases, &count), 0);
    cr_assert_geq(count, 5u);
    uint64_t damaged = bases[count - 3];
    char p[1400];
    snprintf(p, sizeof(p), "%s/%020llu.log", pdir, (unsigned long long)damaged);
    free(bases);
    struct stat sb;
    cr_assert_eq(stat(p, &sb), 0);
    FILE *f = fopen(p, "r+b");
    cr_assert_not_null(f);
    fseek(f, sb.st_size - 10, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, sb.st_size - 10, SEEK_SET);
    fputc(ch ^ 0x40, f);
    fclose(f);
    e = env_open();
    int64_t r1 = rv_store_compact(e.st, "dmg", 0);
    cr_assert_geq(r1, 0, "a pass before the damage: %lld (%s)", (long long)r1, rv_err_msg());
    int64_t point = clean_point("dmg");
    cr_assert_gt(point, 0, "something was compacted");
    cr_assert_leq(point, (int64_t)damaged, "not past the damaged segment");
    cr_assert_geq(rv_store_compact(e.st, "dmg", 0), 0, "and again");
    env_close(&e);
    free(m);
}

/* Bytes of partition 0's segment files (looking is not a use of the log). */
static uint64_t log_bytes(const char *topic)
{
    char pdir[1100], path[1400];
    part_dir(pdir, sizeof(pdir), topic);
    DIR *d = opendir(pdir);
    cr_assert_not_null(d, "%s", pdir);
    struct dirent *de;
    uint64_t total = 0;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        struct stat sb;
        snprintf(path, sizeof(path), "%s/%s", pdir, de->d_name);
        if (n > 4 && strcmp(de->d_name + n - 4, ".log") == 0 && stat(path, &sb) == 0)
            total += (uint64_t)sb.st_size;
    }
    closedir(d);
    return total;
}

/* A compacted partition nobody uses after a pass that kept tombstones is not
 * unloaded while their horizon is ahead: the retention pass then compacts
 * it past the horizon by itself (an unloaded log would never be compacted
 * again, and the tombstones would stay). */
Test(compact, tombstones_expire_on_a_partition_left_idle)
{
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    scfg.retention_check_ms = 50;
    scfg.checkpoint_interval_ms = 10; /* the idle sweep every 20 ms */
    scfg.idle_unload_ms = 100;
    struct env e = env_open_cfg(&scfg);
    const char *const settings[] = {"delete.retention.ms", "1000", NULL};
    make_topic(&e, "idletomb", settings);
    struct model *m = produce_with_tombstones(&e, "idletomb");
    int64_t upto = (int64_t)active_base("idletomb");
    cr_assert_gt(rv_store_compact(e.st, "idletomb", 0), 0, "keeps the tombstones");
    /* Past the horizon, nobody using the partition: the pass that drops the
     * tombstones shrinks the files (watched from outside: no use of the log). */
    uint64_t kept = log_bytes("idletomb");
    for (int w = 0; w < 1500 && log_bytes("idletomb") >= kept; w++)
        usleep(10 * 1000);
    bool *keep = model_expect(m, upto, false);
    read_check(&e, m, "idletomb", 0, keep); /* the tombstones went by themselves */
    free(keep);
    env_close(&e);
    free(m);
}
