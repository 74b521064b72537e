/* tests/storage/test_plog.c - tests storage/plog.c's append checks directly. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/crc32c.h"
#include "core/pool.h"
#include "core/sys.h"
#include "shards/io.h"
#include "shards/timer.h"
#include "storage/batch.h"
#include "storage/plog.h"
#include "storage/wal.h"
#include "tests/support/rt.h"

static char dir[64];

static void setup(void)
{
    strcpy(dir, "/tmp/rivven-plog-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(plog, .init = setup, .fini = teardown, .timeout = 60);

/* Build a batch of 3 records, compressed with codec, into out. */
static size_t build(uint8_t *out, size_t cap, enum rv_codec codec)
{
    static uint8_t tmp[4096];
    struct rv_batch_params params = {.base_timestamp = RV_BATCH_NO_TIMESTAMP,
                                     .producer_id = RV_BATCH_NO_PRODUCER_ID,
                                     .base_sequence = RV_BATCH_NO_SEQUENCE,
                                     .producer_epoch = -1};
    struct rv_batch_builder b;
    cr_assert_eq(rv_batch_builder_init(&b, codec == RV_CODEC_NONE ? out : tmp,
                                       codec == RV_CODEC_NONE ? cap : sizeof(tmp), &params),
                 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(rv_batch_builder_add(&b, 1000 + i, "k", 1, "value-value-value", 17, NULL, 0),
                     0);
    size_t len = 0;
    if (codec == RV_CODEC_NONE)
        cr_assert_eq(rv_batch_builder_finish(&b, &len), 0);
    else
        cr_assert_eq(rv_batch_builder_finish_compressed(&b, codec, rv_codec_default_level(codec),
                                                        out, cap, &len),
                     0);
    return len;
}

static void fix_crc(uint8_t *batch, size_t len)
{
    uint32_t crc = rv_crc32c(0, batch + RV_BATCH_ATTRIBUTES_POS, len - RV_BATCH_ATTRIBUTES_POS);
    batch[RV_BATCH_CRC_POS] = (uint8_t)(crc >> 24);
    batch[RV_BATCH_CRC_POS + 1] = (uint8_t)(crc >> 16);
    batch[RV_BATCH_CRC_POS + 2] = (uint8_t)(crc >> 8);
    batch[RV_BATCH_CRC_POS + 3] = (uint8_t)crc;
}

struct plog_case {
    rv_wal_t *wal;
    struct rv_plog_shard sh;
    rv_plog_t *log;
    int rc_corrupt;    /* compressed records that do not decompress */
    int rc_not_dense;  /* an offset delta skips */
    int rc_two;        /* two batches in one append */
    int rc_ok;         /* a valid compressed batch */
    int64_t ok_offset; /* its completion */
    struct test_signal done;
};

static void plog_ok_done(void *arg, int64_t base)
{
    struct plog_case *c = arg;
    c->ok_offset = base;
    test_signal_post(&c->done);
}

static void never_done(void *arg, int64_t base)
{
    (void)arg;
    (void)base;
    cr_assert_fail("a refused append completed");
}

/* On the owner shard: append a copy of bytes (a pool buffer of sh) to log;
 * rv_plog_append's result. */
static int append_bytes(struct rv_plog_shard *sh, rv_plog_t *log, const uint8_t *bytes, size_t len,
                        int acks, rv_plog_append_fn *fn, void *arg)
{
    rv_buf_t *buf;
    cr_assert_eq(rv_buf_alloc(sh->pool, len, &buf), 0);
    memcpy(rv_buf_data(buf), bytes, len);
    rv_buf_set_len(buf, len);
    int rc = rv_plog_append(log, buf, rv_buf_data(buf), (uint32_t)len, acks, fn, arg);
    rv_buf_put(buf);
    return rc;
}

static int append_copy(struct plog_case *c, const uint8_t *bytes, size_t len, rv_plog_append_fn *fn)
{
    return append_bytes(&c->sh, c->log, bytes, len, RV_ACKS_ALL, fn, c);
}

/* On shard 0: the shard context of a test log (pool of pool_bytes, 1 MiB hot
 * tier, 16 descriptors), attached. */
static void shard_setup(struct rv_plog_shard *sh, rv_wal_t *wal, rv_plog_t *log, size_t pool_bytes,
                        bool is_seg_direct)
{
    struct rv_pool_opts po = {.owner_shard = 0, .bytes_max = pool_bytes, .numa_node = -1};
    cr_assert_eq(rv_pool_create(&sh->pool, &po), 0);
    cr_assert_eq(rv_hot_create(&sh->hot, 1 << 20), 0);
    sh->wal = wal;
    sh->is_seg_direct = is_seg_direct;
    rv_plog_fds_init(sh, 16);
    rv_plog_attach(log, sh);
}

static void plog_run(void *arg)
{
    struct plog_case *c = arg;
    shard_setup(&c->sh, c->wal, c->log, 16 << 20, false);
    static uint8_t b[8192];
    size_t len = build(b, sizeof(b), RV_CODEC_LZ4);
    b[len - 3] ^= 0x5a; /* inside the compressed records */
    fix_crc(b, len);
    c->rc_corrupt = append_copy(c, b, len, never_done);
    len = build(b, sizeof(b), RV_CODEC_NONE);
    /* The second record's offsetDelta (a zigzag varint 1 = 0x02) becomes 2. */
    struct rv_batch_view v;
    cr_assert_gt(rv_batch_parse(b, len, sizeof(b), &v), 0);
    size_t first_len = 1 + (size_t)(b[RV_BATCH_HEADER_BYTES] >> 1); /* varint length + body */
    uint8_t *second = b + RV_BATCH_HEADER_BYTES + first_len;
    cr_assert_eq(second[3], 0x02, "layout: length, attributes, ts delta, offset delta");
    second[3] = 0x04;
    fix_crc(b, len);
    c->rc_not_dense = append_copy(c, b, len, never_done);
    len = build(b, sizeof(b), RV_CODEC_NONE);
    memcpy(b + len, b, len);
    c->rc_two = append_copy(c, b, 2 * len, never_done);
    len = build(b, sizeof(b), RV_CODEC_ZSTD);
    c->rc_ok = append_copy(c, b, len, plog_ok_done);
}

/* Close everything on the owner shard once the log is idle. */
static void plog_cleanup(void *arg)
{
    struct plog_case *c = arg;
    if (c->log == NULL || !rv_plog_is_idle(c->log) || !rv_wal_is_idle(c->wal))
        return;
    if (!rv_plog_fds_is_idle(&c->sh))
        return;
    rv_plog_fds_fini(&c->sh);
    rv_plog_close(c->log);
    c->log = NULL;
    rv_hot_destroy(c->sh.hot);
    rv_pool_destroy(c->sh.pool);
    free(c->sh.scratch);
    rv_wal_close(c->wal);
}

/* The test's WAL in dir/wal (1 MiB files, 256 KiB groups, the given window),
 * replaying into fn (NULL: none). rv_wal_open's result. */
static int wal_open_test(rv_wal_t **wal, uint32_t window_us, rv_wal_replay_fn *fn, void *arg)
{
    char wdir[128];
    snprintf(wdir, sizeof(wdir), "%s/wal", dir);
    struct rv_wal_config wc;
    rv_wal_config_init(&wc);
    wc.dir = wdir;
    wc.file_bytes = 1 << 20;
    wc.group_bytes_max = 1 << 18;
    wc.group_window_us = window_us;
    return rv_wal_open(wal, &wc, 0, fn, arg, NULL);
}

/* That WAL and a log in dir/t/0, segments of segment_bytes. */
static void open_wal_and_log_window(rv_wal_t **wal, rv_plog_t **log, uint32_t segment_bytes,
                                    uint32_t window_us)
{
    cr_assert_eq(wal_open_test(wal, window_us, NULL, NULL), 0, "%s", rv_err_msg());
    char pdir[128];
    snprintf(pdir, sizeof(pdir), "%s/t/0", dir);
    struct rv_plog_config pc = {.segment_bytes = segment_bytes,
                                .retention_ms = -1,
                                .retention_bytes = -1,
                                .index_interval = 4096,
                                .max_batch_bytes = 1 << 20};
    cr_assert_eq(rv_plog_open(log, pdir, 1, &pc), 0);
}

static void open_wal_and_log(rv_wal_t **wal, rv_plog_t **log, uint32_t segment_bytes)
{
    open_wal_and_log_window(wal, log, segment_bytes, 0);
}

/* Run cleanup on shard 0 until it has closed *log (it sets it to NULL). */
static void close_when_idle(rv_runtime_t *rt, void (*cleanup)(void *), void *arg,
                            rv_plog_t *const *log)
{
    for (int i = 0; i < 1000 && *log != NULL; i++) {
        test_run_on(rt, 0, cleanup, arg);
        if (*log != NULL)
            usleep(1000);
    }
    cr_assert_null(*log, "the log became idle");
}

Test(plog, append_refuses_bad_compressed_records_sparse_offsets_and_two_batches)
{
    rv_runtime_t *rt = test_rt_open(1);
    struct plog_case c = {0};
    test_signal_init(&c.done);
    open_wal_and_log(&c.wal, &c.log, 1 << 20);
    test_run_on(rt, 0, plog_run, &c);
    cr_assert_eq(c.rc_corrupt, -EBADMSG, "%s", rv_strerror(c.rc_corrupt));
    cr_assert_eq(c.rc_not_dense, -EINVAL, "%s", rv_strerror(c.rc_not_dense));
    cr_assert_eq(c.rc_two, -EINVAL, "%s", rv_strerror(c.rc_two));
    cr_assert_eq(c.rc_ok, 0, "%s", rv_strerror(c.rc_ok));
    test_signal_wait(&c.done);
    cr_assert_eq(c.ok_offset, 0, "the refused appends took no offsets");
    close_when_idle(rt, plog_cleanup, &c, &c.log);
    rv_runtime_close(rt);
}

/* rv_plog_check_records: what an append checks of compressed records, on any
 * thread (the test's). */
Test(plog, check_records_off_the_shard_finds_what_append_would)
{
    struct rv_plog_check c = {.max_batch_bytes = 1 << 20, .is_compact = false};
    struct rv_plog_checked out;
    static uint8_t b[8192];
    size_t len = build(b, sizeof(b), RV_CODEC_GZIP);
    cr_assert_eq(rv_plog_check_records(&c, b, (uint32_t)len, &out), 0);
    cr_assert_eq(out.min_timestamp, 1000, "the records' timestamps, for the append");
    cr_assert_eq(out.max_timestamp, 1002);
    c.is_compact = true;
    cr_assert_eq(rv_plog_check_records(&c, b, (uint32_t)len, &out), 0, "every record has a key");
    b[len - 10] ^= 0x5a; /* inside the compressed records */
    fix_crc(b, len);
    int rc = rv_plog_check_records(&c, b, (uint32_t)len, &out);
    cr_assert(rc == -EBADMSG || rc == -EINVAL, "%s", rv_strerror(rc));
    cr_assert_eq(rv_plog_check_records(&c, b, (uint32_t)len - 1, &out), -EBADMSG, "a cut batch");
    c.max_batch_bytes = 64;
    len = build(b, sizeof(b), RV_CODEC_ZSTD);
    cr_assert_eq(rv_plog_check_records(&c, b, (uint32_t)len, &out), -EMSGSIZE);
    /* A compacted topic refuses records without a key (uncompressed too). */
    static uint8_t tmp[4096];
    struct rv_batch_params params = {.base_timestamp = RV_BATCH_NO_TIMESTAMP,
                                     .producer_id = RV_BATCH_NO_PRODUCER_ID,
                                     .base_sequence = RV_BATCH_NO_SEQUENCE,
                                     .producer_epoch = -1};
    struct rv_batch_builder bb;
    cr_assert_eq(rv_batch_builder_init(&bb, tmp, sizeof(tmp), &params), 0);
    cr_assert_eq(rv_batch_builder_add(&bb, 1000, NULL, -1, "v", 1, NULL, 0), 0);
    cr_assert_eq(rv_batch_builder_finish_compressed(
                     &bb, RV_CODEC_LZ4, rv_codec_default_level(RV_CODEC_LZ4), b, sizeof(b), &len),
                 0);
    c = (struct rv_plog_check){.max_batch_bytes = 1 << 20, .is_compact = true};
    cr_assert_eq(rv_plog_check_records(&c, b, (uint32_t)len, &out), -EINVAL);
    c.is_compact = false;
    cr_assert_eq(rv_plog_check_records(&c, b, (uint32_t)len, &out), 0);
}

/* A direct segment write whose staging block the pool cannot give: the write
 * waits (held, retried) instead of failing the log, and lands once blocks
 * come back; the file then holds exactly the batch. */
struct dw_case {
    rv_wal_t *wal;
    struct rv_plog_shard sh;
    rv_plog_t *log;
    void *held[2048]; /* pool blocks the test holds back */
    uint32_t held_count;
    uint8_t batch[16384];
    size_t batch_len;
    size_t spend_size;     /* the pool blocks spent: 8192 (0) or another size */
    size_t pool_bytes;     /* the shard pool's budget: 16 MiB (0) or this */
    bool is_fail_expected; /* the log fails: its final sync does too */
    int rc;
    int64_t offset;
    struct test_signal done;
};

static void dw_appended(void *arg, int64_t base)
{
    struct dw_case *c = arg;
    c->offset = base;
    test_signal_post(&c->done);
}

/* The shard's pool (small, so the test can spend it), hot tier, direct I/O. */
static void dw_setup(struct dw_case *c)
{
    shard_setup(&c->sh, c->wal, c->log, c->pool_bytes != 0 ? c->pool_bytes : 16 << 20, true);
}

/* Spend the pool's staging-sized blocks, then append the batch (acks=all:
 * it completes once applied, i.e. after its segment write was prepared). */
static void dw_spend_and_append(struct dw_case *c)
{
    rv_buf_t *buf;
    cr_assert_eq(rv_buf_alloc(c->sh.pool, c->batch_len, &buf), 0);
    memcpy(rv_buf_data(buf), c->batch, c->batch_len);
    rv_buf_set_len(buf, c->batch_len);
    /* Hold a block of every small class (what an append takes, the 4 KiB
     * tail block, and 8 KiB: their chunks stay carved), then every block of
     * the spent size the budget allows. */
    void *small[8];
    for (int i = 0; i < 8; i++)
        cr_assert_not_null(small[i] = rv_pool_get(c->sh.pool, (size_t)64 << i));
    size_t spend = c->spend_size != 0 ? c->spend_size : 8192;
    void *b;
    while (c->held_count < 2048 && (b = rv_pool_get(c->sh.pool, spend)) != NULL)
        c->held[c->held_count++] = b;
    cr_assert(c->held_count > 0 && c->held_count < 2048, "the budget ran out: %u blocks",
              c->held_count);
    for (int i = 0; i < 8; i++) /* held: a wholly free chunk would be given to them */
        c->held[c->held_count++] = small[i];
    c->rc = rv_plog_append(c->log, buf, rv_buf_data(buf), (uint32_t)c->batch_len, RV_ACKS_ALL,
                           dw_appended, c);
    rv_buf_put(buf);
}

static void dw_start(void *arg)
{
    struct dw_case *c = arg;
    dw_setup(c);
    dw_spend_and_append(c);
}

static void dw_sync(void *arg)
{
    struct dw_case *c = arg;
    c->rc = rv_plog_sync_blocking(c->log);
}

static void dw_release(void *arg)
{
    struct dw_case *c = arg;
    while (c->held_count > 0)
        rv_pool_put(c->held[--c->held_count]);
}

static void dw_cleanup(void *arg)
{
    struct dw_case *c = arg;
    if (c->log == NULL || !rv_plog_is_idle(c->log) || !rv_wal_is_idle(c->wal) ||
        !rv_plog_fds_is_idle(&c->sh))
        return;
    int rc = rv_plog_sync_blocking(c->log); /* cuts the zeros */
    if (c->is_fail_expected)
        cr_assert_lt(rc, 0, "a failed log's sync says so");
    else
        cr_assert_eq(rc, 0, "%s", rv_err_msg());
    rv_plog_fds_fini(&c->sh);
    rv_plog_close(c->log);
    c->log = NULL;
    rv_hot_destroy(c->sh.hot);
    rv_pool_destroy(c->sh.pool);
    free(c->sh.scratch);
    rv_wal_close(c->wal);
}

/* A fresh dw_case (static: it is large) with its WAL and log open; seg gets
 * the path of the log's first segment. */
static struct dw_case *dw_case_open(char *seg, size_t len)
{
    static struct dw_case c;
    memset(&c, 0, sizeof(c));
    test_signal_init(&c.done);
    snprintf(seg, len, "%s/t/0/%020d.log", dir, 0);
    open_wal_and_log(&c.wal, &c.log, 1 << 20);
    return &c;
}

static long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

Test(plog, a_direct_write_waits_for_staging_blocks_instead_of_failing)
{
    rv_runtime_t *rt = test_rt_open(1);
    char seg[256];
    struct dw_case *c = dw_case_open(seg, sizeof(seg));
    c->batch_len = build(c->batch, sizeof(c->batch), RV_CODEC_NONE);
    test_run_on(rt, 0, dw_start, c);
    cr_assert_eq(c->rc, 0, "%s", rv_strerror(c->rc));
    test_signal_wait(&c->done);
    cr_assert_eq(c->offset, 0, "acknowledged (acks=all: in the WAL, applied)");
    usleep(50000); /* many retries */
    cr_assert_eq(file_size(seg), 0, "nothing written while the pool has no block");
    test_run_on(rt, 0, dw_sync, c);
    cr_assert_eq(c->rc, -EIO, "a sync while a write is held does not pass for durable: %s",
                 rv_strerror(c->rc));
    test_run_on(rt, 0, dw_release, c);
    for (int i = 0; i < 1000 && file_size(seg) <= 0; i++)
        usleep(1000);
    cr_assert_eq(file_size(seg), 4096, "written, padded to its block");
    close_when_idle(rt, dw_cleanup, c, &c->log);
    rv_runtime_close(rt);
    cr_assert_eq(file_size(seg), (long)c->batch_len, "the zeros were cut at the sync");
    FILE *f = fopen(seg, "rb");
    cr_assert_not_null(f);
    static uint8_t got[4096];
    cr_assert_eq(fread(got, 1, c->batch_len, f), c->batch_len);
    fclose(f);
    cr_assert(memcmp(got, c->batch, c->batch_len) == 0, "the file holds the batch");
}

/* A roll waits for a held direct write of the old segment: held (the pool
 * spent) when an append needs a new segment, the first batch still lands in
 * the old file and the second alone in the new one. (Before, the roll went
 * ahead and the retry wrote the old batch into the new segment.) */
struct rr_case {
    struct dw_case c;
    rv_buf_t *buf2;
    int rc2;
    int64_t offset2;
    struct test_signal done2;
};

static void rr_appended2(void *arg, int64_t base)
{
    struct rr_case *r = arg;
    r->offset2 = base;
    test_signal_post(&r->done2);
}

static void rr_start(void *arg)
{
    struct rr_case *r = arg;
    struct dw_case *c = &r->c;
    dw_setup(c);
    cr_assert_eq(rv_buf_alloc(c->sh.pool, c->batch_len, &r->buf2), 0); /* before it is spent */
    dw_spend_and_append(c);
}

static void rr_second(void *arg)
{
    struct rr_case *r = arg;
    memcpy(rv_buf_data(r->buf2), r->c.batch, r->c.batch_len);
    rv_buf_set_len(r->buf2, r->c.batch_len);
    r->rc2 = rv_plog_append(r->c.log, r->buf2, rv_buf_data(r->buf2), (uint32_t)r->c.batch_len,
                            RV_ACKS_ALL, rr_appended2, r);
    rv_buf_put(r->buf2);
}

Test(plog, a_roll_waits_for_a_held_direct_write)
{
    rv_runtime_t *rt = test_rt_open(1);
    static struct rr_case r;
    memset(&r, 0, sizeof(r));
    struct dw_case *c = &r.c;
    test_signal_init(&c->done);
    test_signal_init(&r.done2);
    char seg0[256], seg1[256];
    snprintf(seg0, sizeof(seg0), "%s/t/0/%020d.log", dir, 0);
    snprintf(seg1, sizeof(seg1), "%s/t/0/%020d.log", dir, 3);
    c->batch_len = build(c->batch, sizeof(c->batch), RV_CODEC_NONE);
    open_wal_and_log(&c->wal, &c->log, (uint32_t)c->batch_len + 1); /* a batch a segment */
    test_run_on(rt, 0, rr_start, &r);
    cr_assert_eq(c->rc, 0, "%s", rv_strerror(c->rc));
    test_signal_wait(&c->done);
    usleep(20000);
    cr_assert_eq(file_size(seg0), 0, "held");
    test_run_on(rt, 0, rr_second, &r);
    cr_assert_eq(r.rc2, 0, "%s", rv_strerror(r.rc2));
    test_signal_wait(&r.done2);
    cr_assert_eq(r.offset2, 3);
    usleep(50000); /* a roll that did not wait would run now */
    test_run_on(rt, 0, dw_release, c);
    close_when_idle(rt, dw_cleanup, c, &c->log);
    rv_runtime_close(rt);
    cr_assert_eq(file_size(seg0), (long)c->batch_len, "the first batch is in segment 0");
    cr_assert_eq(file_size(seg1), (long)c->batch_len, "segment 3 holds only the second");
    FILE *f = fopen(seg0, "rb");
    cr_assert_not_null(f);
    static uint8_t got[4096];
    cr_assert_eq(fread(got, 1, c->batch_len, f), c->batch_len);
    fclose(f);
    cr_assert(memcmp(got, c->batch, c->batch_len) == 0, "segment 0 holds the first batch");
}

/* A batch larger than a block, with no staging block of the size it needs
 * (a fragmented pool) but smaller ones to spare: written in 4 KiB steps
 * instead of waiting for a large block. */
Test(plog, a_direct_write_without_a_large_block_goes_in_smaller_steps)
{
    rv_runtime_t *rt = test_rt_open(1);
    char seg[256];
    struct dw_case *c = dw_case_open(seg, sizeof(seg));
    static char value[3000];
    memset(value, 'v', sizeof(value));
    struct rv_batch_params params = {.base_timestamp = RV_BATCH_NO_TIMESTAMP,
                                     .producer_id = RV_BATCH_NO_PRODUCER_ID,
                                     .base_sequence = RV_BATCH_NO_SEQUENCE,
                                     .producer_epoch = -1};
    struct rv_batch_builder b;
    cr_assert_eq(rv_batch_builder_init(&b, c->batch, sizeof(c->batch), &params), 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(rv_batch_builder_add(&b, 1000 + i, NULL, -1, value, sizeof(value), NULL, 0),
                     0);
    cr_assert_eq(rv_batch_builder_finish(&b, &c->batch_len), 0);
    cr_assert_gt(c->batch_len, 12000u);
    c->spend_size = 16384; /* every block of 16 KiB and up; 8 KiB ones remain */
    test_run_on(rt, 0, dw_start, c);
    cr_assert_eq(c->rc, 0, "%s", rv_strerror(c->rc));
    test_signal_wait(&c->done);
    for (int i = 0; i < 1000 && file_size(seg) < (long)c->batch_len; i++)
        usleep(1000);
    cr_assert_geq(file_size(seg), (long)c->batch_len, "written without a large block");
    test_run_on(rt, 0, dw_release, c);
    close_when_idle(rt, dw_cleanup, c, &c->log);
    rv_runtime_close(rt);
    cr_assert_eq(file_size(seg), (long)c->batch_len);
    FILE *f = fopen(seg, "rb");
    cr_assert_not_null(f);
    static uint8_t got[16384];
    cr_assert_eq(fread(got, 1, c->batch_len, f), c->batch_len);
    fclose(f);
    cr_assert(memcmp(got, c->batch, c->batch_len) == 0, "the file holds the batch");
}

/* Read a whole file into out (at most cap bytes); its length. */
static size_t read_file(const char *path, uint8_t *out, size_t cap)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    size_t n = fread(out, 1, cap, f);
    fclose(f);
    return n;
}

/* The retry timer of a held direct write cannot be armed (no memory for one
 * more timer): nothing would ever retry the write, so the log fails instead
 * (its data is in the WAL), drops the held write, refuses appends, says so at
 * its final sync and still closes; the WAL still replays the batch. */
static void tf_arm(void *arg)
{
    (void)arg;
    rv_timers_fault_fail_nth(1); /* the held write's next retry arms the next timer */
}

static void tf_append_again(void *arg)
{
    struct dw_case *c = arg;
    c->rc = append_bytes(&c->sh, c->log, c->batch, c->batch_len, RV_ACKS_NONE, never_done, c);
}

static int count_cb(void *arg, const struct rv_wal_record *rec)
{
    (void)rec;
    (*(uint32_t *)arg)++;
    return 0;
}

Test(plog, a_retry_timer_that_cannot_be_armed_fails_the_log_and_it_still_closes)
{
    rv_runtime_t *rt = test_rt_open(1);
    char seg[256];
    struct dw_case *c = dw_case_open(seg, sizeof(seg));
    c->batch_len = build(c->batch, sizeof(c->batch), RV_CODEC_NONE);
    test_run_on(rt, 0, dw_start, c);
    cr_assert_eq(c->rc, 0, "%s", rv_strerror(c->rc));
    test_signal_wait(&c->done);
    usleep(5000); /* held: retried every 200 us */
    test_run_on(rt, 0, tf_arm, NULL);
    usleep(20000);
    test_run_on(rt, 0, dw_release, c);
    test_run_on(rt, 0, tf_append_again, c);
    cr_assert_eq(c->rc, -EIO, "the failed log refuses appends: %s", rv_strerror(c->rc));
    c->is_fail_expected = true;
    close_when_idle(rt, dw_cleanup, c, &c->log);
    rv_runtime_close(rt);
    cr_assert_eq(file_size(seg), 0, "the dropped write never reached the segment");
    uint32_t replayed = 0;
    cr_assert_eq(wal_open_test(&c->wal, 0, count_cb, &replayed), 0, "%s", rv_err_msg());
    rv_wal_close(c->wal);
    cr_assert_eq(replayed, 1, "the batch comes back from the WAL");
}

/* Segment writes that fall behind the WAL (held back here by a ring that
 * answers EAGAIN) hold appends back once the shard's unwritten bytes reach
 * their bound: appends get -ENOBUFS (retry), nothing is lost, and appends go
 * on once the writes catch up; the broker's own records
 * (rv_plog_append_internal) pass the bound. Without the bound the backlog grew until it
 * filled the shard's pool, and then the segment writes, which stage their
 * bytes in pool blocks, could never run again (a store that never closed). */
struct ub_case {
    struct dw_case c;
    bool is_direct;
    uint64_t unwritten_max; /* 0: two batches */
    bool is_internal;       /* ub_append appends with rv_plog_append_internal */
    bool is_idle;
    struct rv_hot_stats hs;
};

static void ub_append(void *arg)
{
    struct ub_case *u = arg;
    struct dw_case *c = &u->c;
    if (c->sh.pool == NULL) {
        shard_setup(&c->sh, c->wal, c->log, 16 << 20, u->is_direct);
        c->sh.unwritten_max = u->unwritten_max != 0 ? u->unwritten_max : 2 * c->batch_len;
    }
    c->offset = -1;
    if (!u->is_internal) {
        c->rc = append_bytes(&c->sh, c->log, c->batch, c->batch_len, RV_ACKS_ALL, dw_appended, c);
        return;
    }
    rv_buf_t *buf;
    cr_assert_eq(rv_buf_alloc(c->sh.pool, c->batch_len, &buf), 0);
    memcpy(rv_buf_data(buf), c->batch, c->batch_len);
    rv_buf_set_len(buf, c->batch_len);
    c->rc = rv_plog_append_internal(c->log, buf, rv_buf_data(buf), (uint32_t)c->batch_len,
                                    RV_ACKS_ALL, dw_appended, c);
    rv_buf_put(buf);
}

static void ub_stats(void *arg)
{
    struct ub_case *u = arg;
    rv_hot_get_stats(u->c.sh.hot, &u->hs);
    u->is_idle = rv_plog_is_idle(u->c.log);
}

/* Append the first batch (it opens the segment) and wait for its write. */
static void ub_first_written(rv_runtime_t *rt, struct ub_case *u)
{
    test_run_on(rt, 0, ub_append, u);
    cr_assert_eq(u->c.rc, 0, "%s", rv_strerror(u->c.rc));
    test_signal_wait(&u->c.done);
    for (int i = 0; i < 2000 && (u->hs.batches == 0 || u->hs.unwritten != 0); i++) {
        test_run_on(rt, 0, ub_stats, u);
        if (u->hs.unwritten != 0)
            usleep(1000);
    }
    cr_assert_eq(u->hs.unwritten, 0, "written");
}

static void unwritten_bound_run(bool is_direct)
{
    rv_runtime_t *rt = test_rt_open(1);
    static struct ub_case u;
    memset(&u, 0, sizeof(u));
    u.is_direct = is_direct;
    struct dw_case *c = &u.c;
    test_signal_init(&c->done);
    char seg[256];
    snprintf(seg, sizeof(seg), "%s/t/0/%020d.log", dir, 0);
    open_wal_and_log(&c->wal, &c->log, 1 << 20);
    c->batch_len = build(c->batch, sizeof(c->batch), RV_CODEC_NONE);
    /* The first batch opens and writes the segment. */
    ub_first_written(rt, &u);
    int fd = test_fd_of(seg);
    cr_assert_geq(fd, 0, "the segment is open");
    /* Its writes stall; two more batches reach the WAL and wait in memory. */
    rv_io_fault_fail_fd(fd, 1u << RV_IO_OP_WRITE | 1u << RV_IO_OP_WRITEV, -EAGAIN, 1u << 30);
    for (int64_t want = 3; want <= 6; want += 3) {
        test_run_on(rt, 0, ub_append, &u);
        cr_assert_eq(c->rc, 0, "%s", rv_strerror(c->rc));
        test_signal_wait(&c->done);
        cr_assert_eq(c->offset, want, "acknowledged from the WAL");
    }
    test_run_on(rt, 0, ub_stats, &u);
    cr_assert_eq(u.hs.unwritten, 2 * c->batch_len, "both wait for their segment write");
    test_run_on(rt, 0, ub_append, &u);
    cr_assert_eq(c->rc, -ENOBUFS, "at the bound, appends wait: %s", rv_strerror(c->rc));
    test_run_on(rt, 0, ub_stats, &u);
    cr_assert_eq(u.hs.unwritten_full, 1);
    usleep(20000);
    test_run_on(rt, 0, ub_append, &u);
    cr_assert_eq(c->rc, -ENOBUFS, "still behind");
    /* The broker's own records (a group's offset commit) still go in. */
    u.is_internal = true;
    test_run_on(rt, 0, ub_append, &u);
    cr_assert_eq(c->rc, 0, "an internal append passes the bound: %s", rv_strerror(c->rc));
    test_signal_wait(&c->done);
    cr_assert_eq(c->offset, 9);
    u.is_internal = false;
    /* The writes go through: the backlog drains and appends are taken again. */
    rv_io_fault_fail_fd(-1, 0, 0, 0);
    for (int i = 0; i < 2000 && u.hs.unwritten != 0; i++) {
        test_run_on(rt, 0, ub_stats, &u);
        if (u.hs.unwritten != 0)
            usleep(1000);
    }
    cr_assert_eq(u.hs.unwritten, 0, "the backlog was written");
    test_run_on(rt, 0, ub_append, &u);
    cr_assert_eq(c->rc, 0, "%s", rv_strerror(c->rc));
    test_signal_wait(&c->done);
    cr_assert_eq(c->offset, 12);
    close_when_idle(rt, dw_cleanup, c, &c->log);
    rv_runtime_close(rt);
    /* The segment holds the five batches in order. */
    cr_assert_eq(file_size(seg), 5 * (long)c->batch_len);
    FILE *f = fopen(seg, "rb");
    cr_assert_not_null(f);
    static uint8_t got[5 * 16384];
    cr_assert_eq(fread(got, 1, 5 * c->batch_len, f), 5 * c->batch_len);
    fclose(f);
    for (int i = 0; i < 5; i++) {
        uint64_t base = 0;
        for (int j = 0; j < 8; j++)
            base = base << 8 | got[(size_t)i * c->batch_len + (size_t)j];
        cr_assert_eq(base, 3u * (uint64_t)i, "batch %d", i);
        cr_assert(memcmp(got + (size_t)i * c->batch_len + 8, c->batch + 8, c->batch_len - 8) == 0);
    }
}

/* A roll that waits for a segment write which then fails: the log fails, and
 * the batches queued behind the roll are released (never written; the WAL
 * has them) and leave the shard's unwritten bytes. Before, nothing released
 * them: the log was never idle, so it was never rebuilt and never closed,
 * and its bytes counted against every append of the shard for good. */
static void roll_then_fail_run(bool is_direct)
{
    rv_runtime_t *rt = test_rt_open(1);
    static struct ub_case u;
    memset(&u, 0, sizeof(u));
    u.is_direct = is_direct;
    u.unwritten_max = 1 << 20;
    struct dw_case *c = &u.c;
    test_signal_init(&c->done);
    c->batch_len = build(c->batch, sizeof(c->batch), RV_CODEC_NONE);
    char seg[256];
    snprintf(seg, sizeof(seg), "%s/t/0/%020d.log", dir, 0);
    /* Two batches fill a segment: the third rolls. */
    open_wal_and_log(&c->wal, &c->log, (uint32_t)(2 * c->batch_len + 1));
    ub_first_written(rt, &u);
    int fd = test_fd_of(seg);
    cr_assert_geq(fd, 0, "the segment is open");
    uint32_t writes = 1u << RV_IO_OP_WRITE | 1u << RV_IO_OP_WRITEV;
    rv_io_fault_fail_fd(fd, writes, -EAGAIN, 1u << 30); /* the second batch's write waits */
    for (int64_t want = 3; want <= 6; want += 3) {      /* the third waits for the roll */
        test_run_on(rt, 0, ub_append, &u);
        cr_assert_eq(c->rc, 0, "%s", rv_strerror(c->rc));
        test_signal_wait(&c->done);
        cr_assert_eq(c->offset, want);
    }
    test_run_on(rt, 0, ub_stats, &u);
    cr_assert_eq(u.hs.unwritten, 2 * c->batch_len);
    cr_assert_not(u.is_idle, "a write and a roll wait");
    rv_io_fault_fail_fd(fd, writes, -EIO, 1); /* the waiting write fails */
    for (int i = 0; i < 2000 && !(u.is_idle && u.hs.unwritten == 0); i++) {
        test_run_on(rt, 0, ub_stats, &u);
        if (!(u.is_idle && u.hs.unwritten == 0))
            usleep(1000);
    }
    cr_assert_not(rv_io_fault_pending(), "the write failed");
    rv_io_fault_fail_fd(-1, 0, 0, 0);
    cr_assert(u.is_idle, "the failed log became idle (the queue behind the roll was released)");
    cr_assert_eq(u.hs.unwritten, 0, "nothing of it counts against the shard's appends");
    test_run_on(rt, 0, ub_append, &u);
    cr_assert_eq(c->rc, -EIO, "the failed log refuses appends: %s", rv_strerror(c->rc));
    c->is_fail_expected = true;
    close_when_idle(rt, dw_cleanup, c, &c->log);
    rv_runtime_close(rt);
    uint32_t replayed = 0;
    cr_assert_eq(wal_open_test(&c->wal, 0, count_cb, &replayed), 0, "%s", rv_err_msg());
    rv_wal_close(c->wal);
    cr_assert_eq(replayed, 3, "the WAL holds all three batches for the rebuild");
}

Test(plog, a_direct_write_that_fails_while_a_roll_waits_releases_the_queue)
{
    roll_then_fail_run(true);
}

Test(plog, a_buffered_write_that_fails_while_a_roll_waits_releases_the_queue)
{
    roll_then_fail_run(false);
}

Test(plog, appends_wait_while_direct_segment_writes_are_behind)
{
    unwritten_bound_run(true);
}

Test(plog, appends_wait_while_buffered_segment_writes_are_behind)
{
    unwritten_bound_run(false);
}

/* After a reopen, the block a direct segment ends in is read back before the
 * next write rewrites it; when the pool has no block for that read, it waits
 * and tries again (before, the log failed), and the file then holds both
 * batches. */
static void tr_append(void *arg)
{
    struct dw_case *c = arg;
    dw_setup(c);
    c->rc = append_bytes(&c->sh, c->log, c->batch, c->batch_len, RV_ACKS_ALL, dw_appended, c);
}

Test(plog, a_tail_read_waits_for_a_staging_block)
{
    rv_runtime_t *rt = test_rt_open(1);
    char seg[256];
    struct dw_case *c = dw_case_open(seg, sizeof(seg));
    c->batch_len = build(c->batch, sizeof(c->batch), RV_CODEC_NONE);
    cr_assert_neq(c->batch_len % 4096, 0, "the segment ends inside a block");
    test_run_on(rt, 0, tr_append, c);
    cr_assert_eq(c->rc, 0, "%s", rv_strerror(c->rc));
    test_signal_wait(&c->done);
    close_when_idle(rt, dw_cleanup, c, &c->log);
    cr_assert_eq(file_size(seg), (long)c->batch_len);
    /* Reopened: the second append needs the tail block read first. */
    open_wal_and_log(&c->wal, &c->log, 1 << 20);
    c->pool_bytes = 12 << 20; /* a chunk for each small class, the rest spent */
    c->spend_size = 4096;     /* every block a tail read could use */
    test_run_on(rt, 0, dw_start, c);
    cr_assert_eq(c->rc, 0, "%s", rv_strerror(c->rc));
    test_signal_wait(&c->done);
    cr_assert_eq(c->offset, 3);
    usleep(50000); /* many retries */
    cr_assert_eq(file_size(seg), (long)c->batch_len, "nothing written before the tail is read");
    test_run_on(rt, 0, dw_release, c);
    close_when_idle(rt, dw_cleanup, c, &c->log);
    rv_runtime_close(rt);
    static uint8_t got[16384];
    cr_assert_eq(read_file(seg, got, sizeof(got)), 2 * c->batch_len);
    cr_assert(memcmp(got, c->batch, c->batch_len) == 0, "the first batch is intact");
    uint8_t *second = got + c->batch_len;
    cr_assert(memcmp(second + 8, c->batch + 8, c->batch_len - 8) == 0, "then the second");
}

/* acks=leader completes at the in-memory append; when the WAL write then
 * fails, the acknowledged batch is lost (as an unreplicated write on a failed
 * Kafka leader) and its offset is assigned again. */
struct lost_case {
    struct plog_case c;
    int rc;
    int64_t bases[2];
    _Atomic uint32_t first_calls; /* completions of the first append */
    bool is_idle;
    struct test_signal acked[2];
};

static void lost_done0(void *arg, int64_t base)
{
    struct lost_case *l = arg;
    l->bases[0] = base;
    atomic_fetch_add(&l->first_calls, 1);
    test_signal_post(&l->acked[0]);
}

static void lost_done1(void *arg, int64_t base)
{
    struct lost_case *l = arg;
    l->bases[1] = base;
    test_signal_post(&l->acked[1]);
}

static int lost_append(struct lost_case *l, int acks, rv_plog_append_fn *fn)
{
    static uint8_t b[8192];
    size_t len = build(b, sizeof(b), RV_CODEC_NONE);
    return append_bytes(&l->c.sh, l->c.log, b, len, acks, fn, l);
}

static void lost_first(void *arg)
{
    struct lost_case *l = arg;
    shard_setup(&l->c.sh, l->c.wal, l->c.log, 16 << 20, false);
    rv_sys_fault_fail_nth(1, -ENOSPC); /* the next file call: the WAL's write */
    l->rc = lost_append(l, RV_ACKS_LEADER, lost_done0);
}

static void lost_idle(void *arg)
{
    struct lost_case *l = arg;
    l->is_idle = rv_plog_is_idle(l->c.log) && rv_wal_is_idle(l->c.wal);
}

static void lost_second(void *arg)
{
    struct lost_case *l = arg;
    l->rc = lost_append(l, RV_ACKS_ALL, lost_done1);
}

Test(plog, an_acknowledged_batch_whose_wal_write_fails_is_lost_and_its_offset_reused)
{
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    cfg.shard_count = 1;
    cfg.io_backend = RV_IO_EPOLL; /* file syscalls go through the fault shim */
    rv_runtime_t *rt = NULL;
    cr_assert_eq(rv_runtime_open(&rt, &cfg), 0);
    static struct lost_case l;
    memset(&l, 0, sizeof(l));
    test_signal_init(&l.acked[0]);
    test_signal_init(&l.acked[1]);
    open_wal_and_log(&l.c.wal, &l.c.log, 1 << 20);
    test_run_on(rt, 0, lost_first, &l);
    cr_assert_eq(l.rc, 0, "%s", rv_strerror(l.rc));
    test_signal_wait(&l.acked[0]);
    cr_assert_eq(l.bases[0], 0, "acknowledged before the WAL write");
    for (int i = 0; i < 2000 && !l.is_idle; i++) {
        test_run_on(rt, 0, lost_idle, &l);
        if (!l.is_idle)
            usleep(1000);
    }
    cr_assert(l.is_idle);
    cr_assert(rv_sys_fault_fired(), "the WAL write failed");
    cr_assert_eq(atomic_load(&l.first_calls), 1, "completed once, not again by the failure");
    cr_assert_eq(l.bases[0], 0);
    rv_sys_fault_clear();
    test_run_on(rt, 0, lost_second, &l);
    cr_assert_eq(l.rc, 0, "%s", rv_strerror(l.rc));
    test_signal_wait(&l.acked[1]);
    cr_assert_eq(l.bases[1], 0, "the lost batch's offset is assigned again");
    close_when_idle(rt, plog_cleanup, &l.c, &l.c.log);
    rv_runtime_close(rt);
}

/* Past the shard's budget of early completions (here one batch), an acks=none
 * append completes with its WAL write instead (held back here by a 1 s group
 * window), which paces producers by the disk. */
struct budget_case {
    struct plog_case c;
    int rcs[3];
    struct budget_slot {
        struct budget_case *b;
        int64_t base;
    } slots[3];
    _Atomic uint32_t done_count;
    bool is_timer_fault; /* no budget limit; the first append's early timer fails */
    struct test_signal all;
};

static void budget_done(void *arg, int64_t base)
{
    struct budget_slot *slot = arg;
    slot->base = base;
    if (atomic_fetch_add(&slot->b->done_count, 1) + 1 == 3)
        test_signal_post(&slot->b->all);
}

static void budget_run(void *arg)
{
    struct budget_case *b = arg;
    shard_setup(&b->c.sh, b->c.wal, b->c.log, 16 << 20, false);
    static uint8_t batch[8192];
    size_t len = build(batch, sizeof(batch), RV_CODEC_NONE);
    if (b->is_timer_fault)
        rv_timers_fault_fail_nth(2); /* the WAL's window timer, then the first early ack */
    else
        b->c.sh.early_ack_max = len; /* one batch */
    for (int i = 0; i < 3; i++) {
        b->slots[i] = (struct budget_slot){.b = b, .base = -1};
        b->rcs[i] =
            append_bytes(&b->c.sh, b->c.log, batch, len, RV_ACKS_NONE, budget_done, &b->slots[i]);
    }
}

static void budget_case_run(bool is_timer_fault)
{
    rv_runtime_t *rt = test_rt_open(1);
    static struct budget_case b;
    memset(&b, 0, sizeof(b));
    b.is_timer_fault = is_timer_fault;
    test_signal_init(&b.all);
    /* The WAL writes a second after the first append. */
    open_wal_and_log_window(&b.c.wal, &b.c.log, 1 << 20, 1000000);
    test_run_on(rt, 0, budget_run, &b);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(b.rcs[i], 0, "%s", rv_strerror(b.rcs[i]));
    for (int i = 0; i < 200 && atomic_load(&b.done_count) == 0; i++)
        usleep(1000);
    usleep(100000);
    if (is_timer_fault) {
        cr_assert_eq(atomic_load(&b.done_count), 2, "the two with a timer completed early");
        cr_assert_eq(b.slots[0].base, -1, "the one without waits for the WAL write");
    } else {
        cr_assert_eq(atomic_load(&b.done_count), 1, "only the first completed before the write");
        cr_assert_eq(b.slots[0].base, 0);
    }
    test_signal_wait(&b.all);
    cr_assert_eq(b.slots[0].base, 0);
    cr_assert_eq(b.slots[1].base, 3);
    cr_assert_eq(b.slots[2].base, 6);
    close_when_idle(rt, plog_cleanup, &b.c, &b.c.log);
    rv_runtime_close(rt);
}

Test(plog, past_the_early_budget_an_append_completes_with_its_wal_write)
{
    budget_case_run(false);
}

Test(plog, an_append_without_a_timer_for_its_early_ack_completes_with_its_wal_write)
{
    budget_case_run(true);
}

/* A retention roll of a quiet log (segment.ms passed) whose helper meets
 * EMFILE at each of its calls in turn: appends and checkpoints go on working
 * after it (a roll that left the log without a descriptor once made the next
 * checkpoint sync descriptor -1). */
struct rr2_case {
    struct plog_case c;
    int rc;
    uint32_t nth;
    bool is_idle;
    int ckpt_rc;
    int64_t acked;
    struct test_signal ack, ckpt;
};

static void rr2_acked(void *arg, int64_t base)
{
    struct rr2_case *r = arg;
    r->acked = base;
    test_signal_post(&r->ack);
}

static void rr2_setup(void *arg)
{
    struct rr2_case *r = arg;
    shard_setup(&r->c.sh, r->c.wal, r->c.log, 16 << 20, false);
    struct rv_plog_config pc = {.segment_bytes = 1 << 20,
                                .segment_ms = 1,
                                .retention_ms = -1,
                                .retention_bytes = -1,
                                .index_interval = 4096,
                                .max_batch_bytes = 1 << 20};
    rv_plog_set_config(r->c.log, &pc);
}

static void rr2_append(void *arg)
{
    struct rr2_case *r = arg;
    static uint8_t b[8192];
    size_t len = build(b, sizeof(b), RV_CODEC_NONE);
    r->rc = append_copy(&r->c, b, len, rr2_acked);
}

static void rr2_idle(void *arg)
{
    struct rr2_case *r = arg;
    r->is_idle = rv_plog_is_idle(r->c.log);
}

static void rr2_roll(void *arg)
{
    struct rr2_case *r = arg;
    rv_sys_fault_fail_nth(r->nth, -EMFILE);
    rv_plog_enforce_retention(r->c.log, rv_clock_wall_ms());
}

static void rr2_ckpt_done(void *arg, int64_t res)
{
    struct rr2_case *r = arg;
    r->ckpt_rc = (int)res;
    test_signal_post(&r->ckpt);
}

static void rr2_ckpt(void *arg)
{
    struct rr2_case *r = arg;
    rv_plog_checkpoint(r->c.log, rr2_ckpt_done, r);
}

static void rr2_wait_idle(rv_runtime_t *rt, struct rr2_case *r)
{
    r->is_idle = false;
    for (int i = 0; i < 2000 && !r->is_idle; i++) {
        test_run_on(rt, 0, rr2_idle, r);
        if (!r->is_idle)
            usleep(1000);
    }
    cr_assert(r->is_idle, "the log became idle");
}

static void rr2_checkpoint(rv_runtime_t *rt, struct rr2_case *r)
{
    test_run_on(rt, 0, rr2_ckpt, r);
    test_signal_wait(&r->ckpt);
    cr_assert_eq(r->ckpt_rc, 0, "checkpoint after call %u: %s", r->nth, rv_strerror(r->ckpt_rc));
}

Test(plog, a_retention_roll_that_meets_emfile_leaves_the_log_working)
{
    rv_runtime_t *rt = test_rt_open(1);
    static struct rr2_case r;
    memset(&r, 0, sizeof(r));
    test_signal_init(&r.ack);
    test_signal_init(&r.ckpt);
    open_wal_and_log(&r.c.wal, &r.c.log, 1 << 20);
    test_run_on(rt, 0, rr2_setup, &r);
    int64_t next = 0;
    uint32_t fired = 0;
    for (r.nth = 1; r.nth <= 24; r.nth++) {
        test_run_on(rt, 0, rr2_append, &r);
        cr_assert_eq(r.rc, 0, "%s", rv_strerror(r.rc));
        test_signal_wait(&r.ack);
        cr_assert_eq(r.acked, next);
        next += 3;
        rr2_wait_idle(rt, &r);
        rr2_checkpoint(rt, &r); /* clean: a quiet log's roll needs that */
        usleep(2000);           /* segment.ms (1) passed */
        test_run_on(rt, 0, rr2_roll, &r);
        usleep(20000);
        rr2_wait_idle(rt, &r);
        fired += rv_sys_fault_fired();
        rv_sys_fault_clear();
        rr2_checkpoint(rt, &r);
    }
    cr_assert_gt(fired, 3, "the faults reached the roll's calls");
    close_when_idle(rt, plog_cleanup, &r.c, &r.c.log);
    rv_runtime_close(rt);
}

/* A producer's maxTimestamp that is not its records' largest is set right
 * (and the CRC with it) as Kafka's broker does, for a batch compressed or
 * not: the time index and time retention go by it. */
struct mt_case {
    struct dw_case *c;
    uint8_t batches[3][4096];
    size_t lens[3];
    struct rv_plog_checked checked; /* of batches[2], checked as off the shard */
};

static void mt_append(void *arg)
{
    struct mt_case *m = arg;
    struct dw_case *c = m->c;
    shard_setup(&c->sh, c->wal, c->log, 16 << 20, false);
    for (int i = 0; i < 2; i++) {
        c->rc =
            append_bytes(&c->sh, c->log, m->batches[i], m->lens[i], RV_ACKS_ALL, dw_appended, c);
        cr_assert_eq(c->rc, 0, "%s", rv_strerror(c->rc));
    }
    rv_buf_t *buf;
    cr_assert_eq(rv_buf_alloc(c->sh.pool, m->lens[2], &buf), 0);
    memcpy(rv_buf_data(buf), m->batches[2], m->lens[2]);
    rv_buf_set_len(buf, m->lens[2]);
    c->rc = rv_plog_append_checked(c->log, buf, rv_buf_data(buf), (uint32_t)m->lens[2], RV_ACKS_ALL,
                                   &m->checked, dw_appended, c);
    rv_buf_put(buf);
    cr_assert_eq(c->rc, 0, "%s", rv_strerror(c->rc));
}

static void set_max_ts(uint8_t *batch, size_t len, int64_t ts)
{
    for (int i = 0; i < 8; i++)
        batch[RV_BATCH_MAX_TIMESTAMP_POS + i] = (uint8_t)((uint64_t)ts >> (56 - 8 * i));
    fix_crc(batch, len);
}

Test(plog, a_wrong_max_timestamp_is_set_right)
{
    rv_runtime_t *rt = test_rt_open(1);
    char seg[256];
    static struct mt_case m;
    m.c = dw_case_open(seg, sizeof(seg));
    m.lens[0] = build(m.batches[0], sizeof(m.batches[0]), RV_CODEC_NONE);
    m.lens[1] = build(m.batches[1], sizeof(m.batches[1]), RV_CODEC_ZSTD);
    m.lens[2] = build(m.batches[2], sizeof(m.batches[2]), RV_CODEC_LZ4);
    set_max_ts(m.batches[0], m.lens[0], 5000); /* past the records' (1000..1002) */
    set_max_ts(m.batches[1], m.lens[1], 500);  /* before them */
    set_max_ts(m.batches[2], m.lens[2], 7);
    struct rv_plog_check params = {.max_batch_bytes = 1 << 20};
    cr_assert_eq(rv_plog_check_records(&params, m.batches[2], (uint32_t)m.lens[2], &m.checked), 0);
    test_run_on(rt, 0, mt_append, &m);
    for (int i = 0; i < 3; i++)
        test_signal_wait(&m.c->done);
    close_when_idle(rt, dw_cleanup, m.c, &m.c->log);
    rv_runtime_close(rt);
    static uint8_t got[8192];
    cr_assert_eq(read_file(seg, got, sizeof(got)), m.lens[0] + m.lens[1] + m.lens[2]);
    struct rv_batch_view v;
    cr_assert_eq(rv_batch_parse(got, m.lens[0], 1 << 20, &v), (int)m.lens[0], "its CRC holds");
    cr_assert_eq(v.max_timestamp, 1002);
    cr_assert_eq(rv_batch_parse(got + m.lens[0], m.lens[1], 1 << 20, &v), (int)m.lens[1]);
    cr_assert_eq(v.max_timestamp, 1002, "compressed too");
    cr_assert_eq(rv_batch_parse(got + m.lens[0] + m.lens[1], m.lens[2], 1 << 20, &v),
                 (int)m.lens[2]);
    cr_assert_eq(v.max_timestamp, 1002, "and checked off the shard");
}
