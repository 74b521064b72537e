/* tests/storage/test_seg.c - tests storage/seg.c: segment listing, scanning, recovery. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/sys.h"
#include "storage/batch.h"
#include "storage/seg.h"

#define BASE          5000u
#define INTERVAL      4096u
#define MAX_BATCH     (8u << 20)
#define BATCHES_MAX   4000u
#define LOG_BYTES_MAX (64u << 20)
#define SEED          0xc0ffee5eedull

static char dir[] = "/tmp/rivven-seg-XXXXXX";

static void setup(void)
{
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    rv_sys_fault_clear();
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(seg, .init = setup, .fini = teardown);
TestSuite(seg_fault, .init = setup, .fini = teardown);

/* LeakSanitizer's check, linked in ASan builds only. Tests call it at their
 * end: Criterion neither sees a leak report at exit nor fails a test for an
 * assertion in .fini. */
int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

static void assert_no_leaks(void)
{
    if (__lsan_do_recoverable_leak_check != NULL)
        cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "LeakSanitizer found leaks");
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A batch as the test wrote it. */
struct model_batch {
    uint64_t pos;
    uint64_t size;
    uint64_t first;
    uint64_t last;
    int64_t max_ts;
};

/* The log the test wrote: its bytes and batches. */
struct model {
    uint8_t *bytes;
    uint64_t size;
    struct model_batch *b;
    uint32_t count;
};

/* Build one uncompressed batch of `records` records with values of value_bytes
 * at out; returns its size. */
static size_t build_batch(uint8_t *out, size_t cap, uint64_t base, uint32_t records, int64_t *ts,
                          uint64_t *s, size_t value_bytes)
{
    struct rv_batch_params p = {
        .base_offset = (int64_t)base,
        .base_timestamp = RV_BATCH_NO_TIMESTAMP,
        .producer_id = RV_BATCH_NO_PRODUCER_ID,
        .producer_epoch = -1,
        .base_sequence = RV_BATCH_NO_SEQUENCE,
    };
    struct rv_batch_builder b;
    cr_assert_eq(rv_batch_builder_init(&b, out, cap, &p), 0);
    static uint8_t value[2u << 20];
    for (uint32_t i = 0; i < records; i++) {
        *ts += (int64_t)(rng_next(s) % 100) - 40;
        value[0] = (uint8_t)i;
        cr_assert_eq(rv_batch_builder_add(&b, *ts, "k", 1, value, (int32_t)value_bytes, NULL, 0),
                     0);
    }
    size_t len;
    cr_assert_eq(rv_batch_builder_finish(&b, &len), 0);
    return len;
}

/* Append a batch to m with base offset `base`; value_bytes 0 picks a random size. */
static void model_add(struct model *m, uint64_t base, uint32_t records, int64_t *ts, uint64_t *s,
                      size_t value_bytes)
{
    cr_assert_lt(m->count, BATCHES_MAX);
    if (value_bytes == 0)
        value_bytes = rng_next(s) % 300;
    size_t cap = LOG_BYTES_MAX - m->size;
    size_t len = build_batch(m->bytes + m->size, cap, base, records, ts, s, value_bytes);
    struct rv_batch_view v;
    cr_assert_eq(rv_batch_parse(m->bytes + m->size, len, MAX_BATCH, &v), (int)len);
    m->b[m->count++] =
        (struct model_batch){m->size, len, base, base + records - 1, v.max_timestamp};
    m->size += len;
}

/* A model of n random batches starting at base (offset gaps sometimes). */
static struct model model_make(uint32_t n, uint64_t seed)
{
    struct model m = {malloc(LOG_BYTES_MAX), 0, calloc(BATCHES_MAX, sizeof(struct model_batch)), 0};
    cr_assert(m.bytes != NULL && m.b != NULL);
    uint64_t s = seed;
    uint64_t next = BASE;
    int64_t ts = 1700000000000;
    for (uint32_t i = 0; i < n; i++) {
        model_add(&m, next, 1 + (uint32_t)(rng_next(&s) % 8), &ts, &s, 0);
        next = m.b[i].last + 1 + (rng_next(&s) % 5 == 0 ? rng_next(&s) % 7 : 0);
    }
    return m;
}

static void model_free(struct model *m)
{
    free(m->bytes);
    free(m->b);
}

static void path_of(char *out, size_t len, uint64_t base, const char *suffix)
{
    cr_assert_eq(rv_idx_file_name(out, len, dir, base, suffix), 0);
}

static void write_file(uint64_t base, const char *suffix, const void *bytes, size_t len)
{
    char path[256];
    path_of(path, sizeof(path), base, suffix);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(bytes, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

static off_t file_size(uint64_t base, const char *suffix)
{
    char path[256];
    path_of(path, sizeof(path), base, suffix);
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

static void remove_file(uint64_t base, const char *suffix)
{
    char path[256];
    path_of(path, sizeof(path), base, suffix);
    cr_assert_eq(unlink(path), 0);
}

/* Whether the .log on disk equals the first `size` model bytes exactly. */
static bool log_matches(const struct model *m, uint64_t size)
{
    char path[256];
    path_of(path, sizeof(path), BASE, ".log");
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    uint8_t *buf = malloc(size + 1);
    size_t n = fread(buf, 1, size + 1, f);
    fclose(f);
    bool is_same = n == size && memcmp(buf, m->bytes, size) == 0;
    free(buf);
    return is_same;
}

/* Recover segment BASE in a fresh struct. */
static int recover(struct rv_seg *seg, enum rv_seg_scan_mode mode, struct rv_seg_recovery *rep)
{
    rv_seg_init(seg, BASE, INTERVAL);
    return rv_seg_recover(seg, dir, mode, MAX_BATCH, rep);
}

/* The number of batches of m that end at or before byte `pos`. */
static uint32_t batches_before(const struct model *m, uint64_t pos)
{
    uint32_t k = 0;
    while (k < m->count && m->b[k].pos + m->b[k].size <= pos)
        k++;
    return k;
}

/* Assert that seg holds exactly the first k batches of m. */
static void assert_holds(const struct rv_seg *seg, const struct model *m, uint32_t k)
{
    uint64_t size = k ? m->b[k - 1].pos + m->b[k - 1].size : 0;
    int64_t max_ts = -1;
    for (uint32_t i = 0; i < k; i++)
        max_ts = m->b[i].max_ts > max_ts ? m->b[i].max_ts : max_ts;
    cr_assert_eq(seg->size_bytes, size, "%" PRIu64 " != %" PRIu64, seg->size_bytes, size);
    cr_assert_eq(seg->next_offset, k ? m->b[k - 1].last + 1 : BASE);
    cr_assert_eq(seg->max_timestamp_ms, max_ts);
    cr_assert_eq(file_size(BASE, ".log"), (off_t)size);
    cr_assert(log_matches(m, size));
}

static void assert_same_index(const struct rv_idx *a, const struct rv_idx *b)
{
    cr_assert_eq(a->count, b->count);
    cr_assert_eq(a->tcount, b->tcount);
    for (uint32_t i = 0; i < a->count; i++) {
        cr_assert_eq(a->entries[i].rel_offset, b->entries[i].rel_offset);
        cr_assert_eq(a->entries[i].pos, b->entries[i].pos);
    }
    for (uint32_t i = 0; i < a->tcount; i++) {
        cr_assert_eq(a->tentries[i].timestamp_ms, b->tentries[i].timestamp_ms);
        cr_assert_eq(a->tentries[i].rel_offset, b->tentries[i].rel_offset);
    }
}

Test(seg, clean_segment_recovers_the_same_in_tail_and_full_mode)
{
    struct model m = model_make(500, SEED);
    write_file(BASE, ".log", m.bytes, m.size);
    struct rv_seg full;
    struct rv_seg tail;
    struct rv_seg_recovery rf;
    struct rv_seg_recovery rt;
    cr_assert_eq(recover(&full, RV_SEG_SCAN_FULL, &rf), 0);
    assert_holds(&full, &m, m.count);
    cr_assert_eq(rf.batches, m.count);
    cr_assert_eq(rf.scanned_bytes, m.size);
    cr_assert_eq(rf.truncated_bytes, 0);
    cr_assert_eq(rf.tail_error, 0);
    cr_assert_gt(full.idx.count, 10);
    cr_assert_eq(file_size(BASE, ".index"), (off_t)full.idx.count * RV_IDX_ENTRY_BYTES);
    cr_assert_eq(recover(&tail, RV_SEG_SCAN_TAIL, &rt), 0);
    assert_holds(&tail, &m, m.count);
    assert_same_index(&full.idx, &tail.idx);
    cr_assert_not(rt.is_index_rebuilt);
    cr_assert_lt(rt.batches, 40, "tail mode checks only the tail");
    cr_assert_lt(rt.scanned_bytes, 2 * INTERVAL + 4096);
    cr_assert_eq(rt.truncated_bytes, 0);
    rv_seg_fini(&full);
    rv_seg_fini(&tail);
    model_free(&m);
    assert_no_leaks();
}

Test(seg, tail_recovery_leaves_a_clean_index_untouched)
{
    struct model m = model_make(100, SEED);
    write_file(BASE, ".log", m.bytes, m.size);
    struct rv_seg seg;
    struct rv_seg_recovery rep;
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_FULL, &rep), 0);
    rv_seg_fini(&seg);
    char path[256];
    path_of(path, sizeof(path), BASE, ".index");
    struct stat before;
    cr_assert_eq(stat(path, &before), 0);
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_TAIL, &rep), 0);
    struct stat after;
    cr_assert_eq(stat(path, &after), 0);
    cr_assert_eq(before.st_ino, after.st_ino, "not replaced");
    rv_seg_fini(&seg);
    model_free(&m);
    assert_no_leaks();
}

Test(seg, empty_segment_recovers_empty)
{
    cr_assert_eq(rv_seg_create(dir, BASE), 0);
    cr_assert_eq(rv_seg_create(dir, BASE), -EEXIST);
    struct rv_seg seg;
    struct rv_seg_recovery rep;
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_TAIL, &rep), 0);
    cr_assert_eq(seg.next_offset, BASE);
    cr_assert_eq(seg.size_bytes, 0);
    cr_assert_eq(seg.max_timestamp_ms, -1);
    cr_assert(rep.is_index_rebuilt, "index files were missing");
    cr_assert_eq(file_size(BASE, ".index"), 0);
    cr_assert_eq(file_size(BASE, ".timeindex"), 0);
    rv_seg_fini(&seg);
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_TAIL, &rep), 0);
    cr_assert_not(rep.is_index_rebuilt);
    rv_seg_fini(&seg);
    assert_no_leaks();
}

Test(seg, missing_log_is_enoent)
{
    struct rv_seg seg;
    struct rv_seg_recovery rep;
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_TAIL, &rep), -ENOENT);
    rv_seg_fini(&seg);
    assert_no_leaks();
}

/* Recover in TAIL mode after damaging the index with `damage`, and check that
 * the index was rebuilt to what a full scan makes. */
static void check_rebuild(void (*damage)(const struct model *m, const struct rv_idx *idx))
{
    struct model m = model_make(300, SEED + 1);
    write_file(BASE, ".log", m.bytes, m.size);
    struct rv_seg full;
    struct rv_seg seg;
    struct rv_seg_recovery rep;
    cr_assert_eq(recover(&full, RV_SEG_SCAN_FULL, &rep), 0);
    damage(&m, &full.idx);
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_TAIL, &rep), 0);
    cr_assert(rep.is_index_rebuilt);
    cr_assert_eq(rep.batches, m.count);
    assert_holds(&seg, &m, m.count);
    assert_same_index(&full.idx, &seg.idx);
    rv_seg_fini(&seg);
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_TAIL, &rep), 0);
    cr_assert_not(rep.is_index_rebuilt, "the rebuilt index was saved");
    assert_same_index(&full.idx, &seg.idx);
    rv_seg_fini(&seg);
    rv_seg_fini(&full);
    model_free(&m);
}

static void damage_delete_index(const struct model *m, const struct rv_idx *idx)
{
    remove_file(BASE, ".index");
}

static void damage_delete_timeindex(const struct model *m, const struct rv_idx *idx)
{
    remove_file(BASE, ".timeindex");
}

static void damage_garbage_index(const struct model *m, const struct rv_idx *idx)
{
    uint8_t junk[77];
    memset(junk, 0xa5, sizeof(junk));
    write_file(BASE, ".index", junk, sizeof(junk));
}

static void damage_garbage_timeindex(const struct model *m, const struct rv_idx *idx)
{
    uint8_t junk[24];
    memset(junk, 0x11, sizeof(junk)); /* two equal timestamps: not increasing */
    write_file(BASE, ".timeindex", junk, sizeof(junk));
}

/* A well-formed index whose last entry points into the middle of a batch. */
static void damage_entry_mid_batch(const struct model *m, const struct rv_idx *idx)
{
    const struct model_batch *b = &m->b[m->count - 2];
    uint32_t rel = (uint32_t)(b->first - BASE);
    uint32_t pos = (uint32_t)(b->pos + 7);
    uint8_t e[16] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int k = 0; k < 4; k++) {
        e[8 + k] = (uint8_t)(rel >> (24 - 8 * k));
        e[12 + k] = (uint8_t)(pos >> (24 - 8 * k));
    }
    write_file(BASE, ".index", e, sizeof(e));
}

/* A well-formed index whose last entry names a batch with a lower offset than
 * the batch's own (higher would fail the offsets-go-forward check anyway). */
static void damage_entry_wrong_offset(const struct model *m, const struct rv_idx *idx)
{
    const struct model_batch *b = &m->b[m->count / 2];
    uint32_t rel = (uint32_t)(b->first - BASE - 1);
    uint32_t pos = (uint32_t)b->pos;
    uint8_t e[16] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int k = 0; k < 4; k++) {
        e[8 + k] = (uint8_t)(rel >> (24 - 8 * k));
        e[12 + k] = (uint8_t)(pos >> (24 - 8 * k));
    }
    write_file(BASE, ".index", e, sizeof(e));
}

Test(seg, index_is_rebuilt_when_deleted)
{
    check_rebuild(damage_delete_index);
    assert_no_leaks();
}

Test(seg, index_is_rebuilt_when_time_index_deleted)
{
    check_rebuild(damage_delete_timeindex);
    assert_no_leaks();
}

Test(seg, index_is_rebuilt_when_garbage)
{
    check_rebuild(damage_garbage_index);
    assert_no_leaks();
}

Test(seg, index_is_rebuilt_when_time_index_garbage)
{
    check_rebuild(damage_garbage_timeindex);
    assert_no_leaks();
}

Test(seg, index_is_rebuilt_when_last_entry_is_mid_batch)
{
    check_rebuild(damage_entry_mid_batch);
    assert_no_leaks();
}

Test(seg, index_is_rebuilt_when_last_entry_has_wrong_offset)
{
    check_rebuild(damage_entry_wrong_offset);
    assert_no_leaks();
}

Test(seg, torn_tail_keeps_exactly_the_complete_batches)
{
    struct model m = model_make(150, SEED + 2);
    write_file(BASE, ".log", m.bytes, m.size);
    struct rv_seg seg;
    struct rv_seg_recovery rep;
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_FULL, &rep), 0);
    rv_seg_fini(&seg);
    uint64_t s = SEED + 3;
    for (uint32_t round = 0; round < 200; round++) {
        uint64_t cut = rng_next(&s) % (m.size + 1);
        if (round < 3)
            cut = round == 0 ? 0 : round == 1 ? m.size : m.size - 1;
        enum rv_seg_scan_mode mode = round % 2 ? RV_SEG_SCAN_TAIL : RV_SEG_SCAN_FULL;
        /* The index the last round left stays: TAIL mode meets entries past
         * the cut, a torn batch at its last entry, or a long tail to check. */
        write_file(BASE, ".log", m.bytes, cut);
        uint32_t k = batches_before(&m, cut);
        cr_assert_eq(recover(&seg, mode, &rep), 0, "round %u cut %" PRIu64, round, cut);
        assert_holds(&seg, &m, k);
        uint64_t kept = k ? m.b[k - 1].pos + m.b[k - 1].size : 0;
        cr_assert_eq(rep.truncated_bytes, cut - kept, "round %u", round);
        cr_assert_eq(rep.tail_error, cut > kept ? -ENODATA : 0);
        rv_seg_fini(&seg);
        /* What recovery kept recovers cleanly again. */
        cr_assert_eq(recover(&seg, RV_SEG_SCAN_TAIL, &rep), 0);
        assert_holds(&seg, &m, k);
        cr_assert_eq(rep.truncated_bytes, 0);
        rv_seg_fini(&seg);
    }
    model_free(&m);
    assert_no_leaks();
}

/* Flip one byte of batch k (in the CRC-checked part) and recover in `mode`:
 * batch k and everything after it must go. */
static void check_flip(uint32_t k, enum rv_seg_scan_mode mode, uint64_t seed)
{
    struct model m = model_make(200, seed);
    write_file(BASE, ".log", m.bytes, m.size);
    struct rv_seg seg;
    struct rv_seg_recovery rep;
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_FULL, &rep), 0);
    rv_seg_fini(&seg);
    uint64_t s = seed;
    const struct model_batch *b = &m.b[k];
    uint64_t at = b->pos + RV_BATCH_MAGIC_POS + rng_next(&s) % (b->size - RV_BATCH_MAGIC_POS);
    uint8_t *bad = malloc(m.size);
    memcpy(bad, m.bytes, m.size);
    bad[at] ^= (uint8_t)(1u << (rng_next(&s) % 8));
    write_file(BASE, ".log", bad, m.size);
    free(bad);
    cr_assert_eq(recover(&seg, mode, &rep), 0);
    assert_holds(&seg, &m, k);
    cr_assert_eq(rep.truncated_bytes, m.size - b->pos, "byte %" PRIu64, at);
    cr_assert_lt(rep.tail_error, 0);
    rv_seg_fini(&seg);
    model_free(&m);
}

Test(seg, flipped_byte_in_last_batch_cuts_it)
{
    for (uint32_t i = 0; i < 30; i++) {
        check_flip(199, RV_SEG_SCAN_TAIL, SEED + 10 + i);
        check_flip(199, RV_SEG_SCAN_FULL, SEED + 50 + i);
    }
    assert_no_leaks();
}

Test(seg, flipped_byte_in_middle_batch_cuts_from_there_in_full_mode)
{
    for (uint32_t i = 0; i < 30; i++)
        check_flip(20 + i * 5, RV_SEG_SCAN_FULL, SEED + 100 + i);
    assert_no_leaks();
}

Test(seg, offsets_going_backwards_cut_the_log)
{
    struct model m = model_make(0, SEED);
    uint64_t s = SEED;
    int64_t ts = 1000;
    model_add(&m, BASE, 5, &ts, &s, 0);      /* 5000..5004 */
    model_add(&m, BASE + 5, 5, &ts, &s, 0);  /* 5005..5009 */
    model_add(&m, BASE + 20, 1, &ts, &s, 0); /* a gap is fine */
    model_add(&m, BASE + 20, 3, &ts, &s, 0); /* below the next offset 5021 */
    model_add(&m, BASE + 30, 3, &ts, &s, 0);
    write_file(BASE, ".log", m.bytes, m.size);
    struct rv_seg seg;
    struct rv_seg_recovery rep;
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_FULL, &rep), 0);
    assert_holds(&seg, &m, 3);
    cr_assert_eq(rep.tail_error, -EBADMSG);
    cr_assert_eq(rep.batches, 3);
    rv_seg_fini(&seg);
    model_free(&m);
    assert_no_leaks();
}

Test(seg, batch_below_the_segment_base_is_cut)
{
    struct model m = model_make(0, SEED);
    uint64_t s = SEED;
    int64_t ts = 1000;
    model_add(&m, BASE - 1, 5, &ts, &s, 0);
    write_file(BASE, ".log", m.bytes, m.size);
    struct rv_seg seg;
    struct rv_seg_recovery rep;
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_TAIL, &rep), 0);
    assert_holds(&seg, &m, 0);
    rv_seg_fini(&seg);
    model_free(&m);
    assert_no_leaks();
}

Test(seg, offsets_past_what_the_index_can_hold_cut_the_log)
{
    struct model m = model_make(0, SEED);
    uint64_t s = SEED;
    int64_t ts = 1000;
    model_add(&m, BASE, 3, &ts, &s, 0);
    model_add(&m, BASE + INT32_MAX - 1, 2, &ts, &s, 0); /* last relative offset: INT32_MAX */
    model_add(&m, BASE + INT32_MAX + 1, 1, &ts, &s, 0);
    write_file(BASE, ".log", m.bytes, m.size);
    struct rv_seg seg;
    struct rv_seg_recovery rep;
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_FULL, &rep), 0);
    assert_holds(&seg, &m, 2);
    cr_assert_eq(rep.tail_error, -EBADMSG);
    rv_seg_fini(&seg);
    model_free(&m);
    assert_no_leaks();
}

Test(seg, tail_recovery_saves_the_index_it_extended)
{
    struct model m = model_make(400, SEED + 9);
    write_file(BASE, ".log", m.bytes, m.b[100].pos);
    struct rv_seg seg;
    struct rv_seg_recovery rep;
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_FULL, &rep), 0);
    uint32_t count_before = seg.idx.count;
    rv_seg_fini(&seg);
    /* Batches appended after the index was saved, as by a crash before a roll. */
    write_file(BASE, ".log", m.bytes, m.size);
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_TAIL, &rep), 0);
    assert_holds(&seg, &m, m.count);
    cr_assert_not(rep.is_index_rebuilt);
    cr_assert_gt(rep.batches, 290);
    cr_assert_gt(seg.idx.count, count_before);
    cr_assert_eq(file_size(BASE, ".index"), (off_t)seg.idx.count * RV_IDX_ENTRY_BYTES);
    cr_assert_eq(file_size(BASE, ".timeindex"), (off_t)seg.idx.tcount * RV_TIDX_ENTRY_BYTES);
    rv_seg_fini(&seg);
    model_free(&m);
    assert_no_leaks();
}

Test(seg, zero_filled_tail_is_cut)
{
    struct model m = model_make(50, SEED + 4);
    uint64_t size = m.size;
    memset(m.bytes + size, 0, 8192);
    write_file(BASE, ".log", m.bytes, size + 8192);
    struct rv_seg seg;
    struct rv_seg_recovery rep;
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_TAIL, &rep), 0);
    assert_holds(&seg, &m, m.count);
    cr_assert_eq(rep.truncated_bytes, 8192);
    cr_assert_eq(rep.tail_error, -EBADMSG);
    cr_assert_not(rep.is_zero_tail, "more zeros than a direct write pads: reported as damage");
    rv_seg_fini(&seg);
    model_free(&m);
    assert_no_leaks();
}

/* The zeros a direct write pads its last block with, left by a crash, are
 * cut as padding (not reported as damage); other bytes there are damage. */
Test(seg, a_direct_writes_padding_is_cut_as_padding)
{
    struct model m = model_make(50, SEED + 5);
    uint64_t size = m.size;
    uint32_t pad = 4096 - (uint32_t)(size % 4096);
    memset(m.bytes + size, 0, pad);
    write_file(BASE, ".log", m.bytes, size + pad);
    struct rv_seg seg;
    struct rv_seg_recovery rep;
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_TAIL, &rep), 0);
    assert_holds(&seg, &m, m.count);
    cr_assert_eq(rep.truncated_bytes, pad);
    cr_assert(rep.is_zero_tail);
    rv_seg_fini(&seg);
    m.bytes[size + pad / 2] = 0x5a;
    write_file(BASE, ".log", m.bytes, size + pad);
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_TAIL, &rep), 0);
    cr_assert_eq(rep.truncated_bytes, pad);
    cr_assert_not(rep.is_zero_tail, "a non-zero byte: damage");
    rv_seg_fini(&seg);
    model_free(&m);
    assert_no_leaks();
}

Test(seg, batches_larger_than_the_read_window_are_read_whole)
{
    struct model m = model_make(0, SEED);
    uint64_t s = SEED;
    int64_t ts = 1000;
    uint64_t next = BASE;
    for (uint32_t i = 0; i < 12; i++) {
        size_t value = i % 3 == 1 ? (3u << 19) + i : 100; /* 1.5 MiB every third batch */
        model_add(&m, next, i % 3 == 1 ? 2 : 4, &ts, &s, value);
        next = m.b[i].last + 1;
    }
    write_file(BASE, ".log", m.bytes, m.size);
    struct rv_seg seg;
    struct rv_seg_recovery rep;
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_FULL, &rep), 0);
    assert_holds(&seg, &m, m.count);
    rv_seg_fini(&seg);
    /* A limit below the big batches cuts at the first of them. */
    rv_seg_init(&seg, BASE, INTERVAL);
    cr_assert_eq(rv_seg_recover(&seg, dir, RV_SEG_SCAN_FULL, 1u << 20, &rep), 0);
    assert_holds(&seg, &m, 1);
    cr_assert_eq(rep.tail_error, -EMSGSIZE);
    rv_seg_fini(&seg);
    model_free(&m);
    assert_no_leaks();
}

/* The first batch of m holding an offset >= off, or m->count. */
static uint32_t model_find_offset(const struct model *m, uint64_t off)
{
    uint32_t k = 0;
    while (k < m->count && m->b[k].last < off)
        k++;
    return k;
}

/* Scan state for finding the batch that holds an offset. */
struct find {
    uint64_t offset;
    uint64_t pos;
    uint32_t visited;
};

static int find_offset(void *arg, const struct rv_batch_view *batch, uint64_t pos)
{
    struct find *f = arg;
    f->visited++;
    if ((uint64_t)rv_batch_last_offset(batch) < f->offset)
        return 0;
    f->pos = pos;
    return 1;
}

static void check_lookups(const struct rv_seg *seg, const struct model *m, uint64_t seed)
{
    char path[256];
    path_of(path, sizeof(path), BASE, ".log");
    int fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0);
    uint64_t s = seed;
    for (uint32_t q = 0; q < 3000; q++) {
        uint64_t off = BASE + rng_next(&s) % (m->b[m->count - 1].last - BASE + 5);
        uint32_t k = model_find_offset(m, off);
        struct find f = {off, UINT64_MAX, 0};
        uint64_t stop;
        int rc =
            rv_seg_scan_file(fd, rv_idx_lookup(&seg->idx, off), MAX_BATCH, find_offset, &f, &stop);
        if (k == m->count) {
            cr_assert_eq(rc, 0, "offset %" PRIu64 " is past the end", off);
            cr_assert_eq(stop, m->size);
            continue;
        }
        cr_assert_eq(rc, 1);
        cr_assert_eq(f.pos, m->b[k].pos, "offset %" PRIu64, off);
        cr_assert_eq(stop, f.pos);
        cr_assert_leq(f.visited, 2 + INTERVAL / 61, "the index keeps scans short");
    }
    int64_t ts_lo = m->b[0].max_ts - 500;
    int64_t ts_hi = m->b[0].max_ts + 500;
    for (uint32_t i = 0; i < m->count; i++)
        ts_hi = m->b[i].max_ts + 50 > ts_hi ? m->b[i].max_ts + 50 : ts_hi;
    for (int64_t ts = ts_lo; ts <= ts_hi; ts += 1 + (int64_t)(rng_next(&s) % 7)) {
        uint32_t k = 0;
        while (k < m->count && m->b[k].max_ts < ts)
            k++;
        int64_t got = rv_idx_lookup_time(&seg->idx, ts);
        if (k == m->count) {
            cr_assert_eq(got, -1, "ts %" PRId64, ts);
            continue;
        }
        cr_assert_geq(got, (int64_t)BASE);
        cr_assert_leq(got, (int64_t)m->b[k].first, "ts %" PRId64 ": not past the first match", ts);
    }
    close(fd);
}

Test(seg, lookups_match_a_brute_force_scan)
{
    struct model m = model_make(3000, SEED + 5);
    write_file(BASE, ".log", m.bytes, m.size);
    struct rv_seg seg;
    struct rv_seg_recovery rep;
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_FULL, &rep), 0);
    check_lookups(&seg, &m, SEED + 6);
    rv_seg_fini(&seg);
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_TAIL, &rep), 0);
    cr_assert_not(rep.is_index_rebuilt);
    check_lookups(&seg, &m, SEED + 7);
    rv_seg_fini(&seg);
    model_free(&m);
    assert_no_leaks();
}

/* Counts batches; stops (returning 7) at batch `stop_at`. */
struct counter {
    uint32_t seen;
    uint32_t stop_at;
};

static int count_batches(void *arg, const struct rv_batch_view *batch, uint64_t pos)
{
    struct counter *c = arg;
    if (c->seen == c->stop_at)
        return 7;
    c->seen++;
    return 0;
}

Test(seg, scan_file_visits_batches_and_stops_where_asked)
{
    struct model m = model_make(40, SEED + 8);
    write_file(BASE, ".log", m.bytes, m.size);
    char path[256];
    path_of(path, sizeof(path), BASE, ".log");
    int fd = open(path, O_RDONLY);
    struct counter c = {0, UINT32_MAX};
    uint64_t stop = 0;
    cr_assert_eq(rv_seg_scan_file(fd, 0, MAX_BATCH, count_batches, &c, &stop), 0);
    cr_assert_eq(c.seen, 40);
    cr_assert_eq(stop, m.size);
    c = (struct counter){0, 10};
    cr_assert_eq(rv_seg_scan_file(fd, m.b[5].pos, MAX_BATCH, count_batches, &c, &stop), 7);
    cr_assert_eq(stop, m.b[15].pos);
    cr_assert_eq(rv_seg_scan_file(fd, m.size + 1, MAX_BATCH, count_batches, &c, &stop), -EINVAL);
    close(fd);
    m.bytes[m.b[30].pos + 40] ^= 1;
    write_file(BASE, ".log", m.bytes, m.size);
    fd = open(path, O_RDONLY);
    c = (struct counter){0, UINT32_MAX};
    cr_assert_eq(rv_seg_scan_file(fd, 0, MAX_BATCH, count_batches, &c, &stop), -EBADMSG);
    cr_assert_eq(c.seen, 30);
    cr_assert_eq(stop, m.b[30].pos);
    close(fd);
    model_free(&m);
    assert_no_leaks();
}

Test(seg, list_ignores_junk_names)
{
    const char *names[] = {
        "00000000000000000100.log",
        "00000000000000000007.log",
        "09223372036854775807.log",
        "00000000000000000100.index",
        "00000000000000000100.timeindex",
        "00000000000000000100.index.tmp",
        "00000000000000000008.log.tmp",
        "0000000000000000000x.log",
        "123.log",
        "000000000000000000123.log",
        "09223372036854775808.log",
        "99999999999999999999.log",
        "leader-epoch-checkpoint",
        ".log",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char path[256];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        fclose(f);
    }
    char sub[256];
    snprintf(sub, sizeof(sub), "%s/00000000000000000001.index", dir);
    cr_assert_eq(mkdir(sub, 0755), 0, "a directory is no segment either");
    snprintf(sub, sizeof(sub), "%s/00000000000000000002.log", dir);
    cr_assert_eq(mkdir(sub, 0755), 0);
    uint64_t *bases = NULL;
    uint32_t count = 0;
    cr_assert_eq(rv_seg_list(dir, &bases, &count), 0);
    cr_assert_eq(count, 3);
    cr_assert_eq(bases[0], 7);
    cr_assert_eq(bases[1], 100);
    cr_assert_eq(bases[2], (uint64_t)INT64_MAX);
    free(bases);
    assert_no_leaks();
}

Test(seg, list_sorts_many_segments)
{
    uint64_t s = SEED;
    for (uint32_t i = 0; i < 100; i++)
        cr_assert_eq(rv_seg_create(dir, rng_next(&s) % 1000000000), 0);
    uint64_t *bases = NULL;
    uint32_t count = 0;
    cr_assert_eq(rv_seg_list(dir, &bases, &count), 0);
    cr_assert_eq(count, 100);
    for (uint32_t i = 1; i < count; i++)
        cr_assert_lt(bases[i - 1], bases[i]);
    free(bases);
    assert_no_leaks();
}

Test(seg, list_of_empty_or_missing_directory)
{
    uint64_t *bases = (uint64_t *)&bases;
    uint32_t count = 99;
    cr_assert_eq(rv_seg_list(dir, &bases, &count), 0);
    cr_assert_eq(count, 0);
    free(bases);
    char missing[256];
    snprintf(missing, sizeof(missing), "%s/nope", dir);
    cr_assert_eq(rv_seg_list(missing, &bases, &count), -ENOENT);
    assert_no_leaks();
}

Test(seg, remove_deletes_the_three_files_and_tolerates_missing_ones)
{
    struct model m = model_make(20, SEED);
    write_file(BASE, ".log", m.bytes, m.size);
    struct rv_seg seg;
    struct rv_seg_recovery rep;
    cr_assert_eq(recover(&seg, RV_SEG_SCAN_FULL, &rep), 0);
    rv_seg_fini(&seg);
    cr_assert_eq(rv_seg_create(dir, BASE + 100), 0);
    cr_assert_geq(file_size(BASE, ".timeindex"), 0);
    cr_assert_eq(rv_seg_remove(dir, BASE), 0);
    cr_assert_eq(file_size(BASE, ".log"), -1);
    cr_assert_eq(file_size(BASE, ".index"), -1);
    cr_assert_eq(file_size(BASE, ".timeindex"), -1);
    cr_assert_eq(file_size(BASE + 100, ".log"), 0, "other segments stay");
    cr_assert_eq(rv_seg_remove(dir, BASE), 0);
    cr_assert_eq(rv_seg_remove(dir, BASE + 100), 0);
    uint64_t *bases = NULL;
    uint32_t count = 1;
    cr_assert_eq(rv_seg_list(dir, &bases, &count), 0);
    cr_assert_eq(count, 0);
    free(bases);
    model_free(&m);
    assert_no_leaks();
}

/* Open descriptors of this process. */
static int fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

/* How to damage the files before a fault round. */
enum scenario {
    SCENARIO_CLEAN_TAIL,
    SCENARIO_CLEAN_FULL,
    SCENARIO_NO_INDEX,
    SCENARIO_TORN_TAIL,
    SCENARIO_CORRUPT_MIDDLE,
};

/* Put the files of `sc` in place; returns how many batches recovery keeps. */
static uint32_t scenario_files(const struct model *m, const struct rv_idx *idx, enum scenario sc)
{
    uint64_t size = m->size;
    uint32_t k = m->count;
    write_file(BASE, ".log", m->bytes, size);
    if (sc == SCENARIO_TORN_TAIL) {
        k = m->count - 3;
        write_file(BASE, ".log", m->bytes, m->b[k].pos + 30);
    }
    if (sc == SCENARIO_CORRUPT_MIDDLE) {
        k = m->count / 2;
        uint8_t *bad = malloc(size);
        memcpy(bad, m->bytes, size);
        bad[m->b[k].pos + 70] ^= 0x40;
        write_file(BASE, ".log", bad, size);
        free(bad);
    }
    cr_assert_eq(rv_idx_save(idx, dir), 0);
    if (sc == SCENARIO_NO_INDEX)
        remove_file(BASE, ".index");
    return k;
}

static void check_recover_faults(enum scenario sc)
{
    struct model m = model_make(400, SEED + 20 + sc);
    write_file(BASE, ".log", m.bytes, m.size);
    struct rv_seg full;
    struct rv_seg_recovery rep;
    cr_assert_eq(recover(&full, RV_SEG_SCAN_FULL, &rep), 0);
    enum rv_seg_scan_mode mode =
        sc == SCENARIO_CLEAN_TAIL || sc == SCENARIO_NO_INDEX || sc == SCENARIO_TORN_TAIL
            ? RV_SEG_SCAN_TAIL
            : RV_SEG_SCAN_FULL;
    int fds = fd_count();
    uint32_t n = 1;
    for (;; n++) {
        uint32_t k = scenario_files(&m, &full.idx, sc);
        struct rv_seg seg;
        rv_seg_init(&seg, BASE, INTERVAL);
        rv_sys_fault_fail_nth(n, -EIO);
        int rc = rv_seg_recover(&seg, dir, mode, MAX_BATCH, &rep);
        bool has_fired = rv_sys_fault_fired();
        rv_sys_fault_clear();
        cr_assert_eq(fd_count(), fds, "scenario %d round %u: no descriptor leaks", sc, n);
        if (rc != 0) {
            cr_assert(has_fired);
            cr_assert_eq(rc, -EIO, "scenario %d round %u: %d", sc, n, rc);
            cr_assert_eq(seg.next_offset, BASE, "untouched on failure");
            cr_assert_eq(seg.size_bytes, 0);
            cr_assert_eq(seg.idx.count + seg.idx.tcount, 0);
        } else {
            assert_holds(&seg, &m, k);
        }
        rv_seg_fini(&seg);
        /* Whatever the failure left on disk recovers to the same result. */
        cr_assert_eq(recover(&seg, mode, &rep), 0, "scenario %d round %u", sc, n);
        assert_holds(&seg, &m, k);
        rv_seg_fini(&seg);
        if (!has_fired)
            break;
    }
    cr_assert_geq(n, 5, "scenario %d: the syscalls of recovery were failed one by one", sc);
    rv_seg_fini(&full);
    model_free(&m);
}

Test(seg_fault, recover_clean_tail_fails_cleanly_at_every_syscall)
{
    check_recover_faults(SCENARIO_CLEAN_TAIL);
    assert_no_leaks();
}

Test(seg_fault, recover_clean_full_fails_cleanly_at_every_syscall)
{
    check_recover_faults(SCENARIO_CLEAN_FULL);
    assert_no_leaks();
}

Test(seg_fault, recover_without_index_fails_cleanly_at_every_syscall)
{
    check_recover_faults(SCENARIO_NO_INDEX);
    assert_no_leaks();
}

Test(seg_fault, recover_torn_tail_fails_cleanly_at_every_syscall)
{
    check_recover_faults(SCENARIO_TORN_TAIL);
    assert_no_leaks();
}

Test(seg_fault, recover_corrupt_middle_fails_cleanly_at_every_syscall)
{
    check_recover_faults(SCENARIO_CORRUPT_MIDDLE);
    assert_no_leaks();
}

Test(seg_fault, list_create_and_remove_fail_cleanly)
{
    int fds = fd_count();
    for (uint32_t n = 1;; n++) {
        rv_sys_fault_fail_nth(n, -EIO);
        int rc = rv_seg_create(dir, BASE);
        bool has_fired = rv_sys_fault_fired();
        rv_sys_fault_clear();
        cr_assert(rc == 0 || rc == -EIO);
        cr_assert_eq(file_size(BASE, ".log"), rc == 0 ? 0 : -1, "round %u", n);
        if (!has_fired)
            break;
        if (rc == 0)
            remove_file(BASE, ".log");
    }
    cr_assert_eq(fd_count(), fds);
    for (uint32_t n = 1;; n++) {
        uint64_t *bases = NULL;
        uint32_t count = 0;
        rv_sys_fault_fail_nth(n, -EIO);
        int rc = rv_seg_list(dir, &bases, &count);
        bool has_fired = rv_sys_fault_fired();
        rv_sys_fault_clear();
        cr_assert(rc == -EIO || (rc == 0 && count == 1 && bases[0] == BASE));
        free(rc == 0 ? bases : NULL);
        if (!has_fired)
            break;
    }
    cr_assert_eq(fd_count(), fds);
    for (uint32_t n = 1;; n++) {
        rv_sys_fault_fail_nth(n, -EIO);
        int rc = rv_seg_remove(dir, BASE);
        bool has_fired = rv_sys_fault_fired();
        rv_sys_fault_clear();
        cr_assert(rc == 0 || rc == -EIO);
        if (!has_fired)
            break;
        cr_assert_eq(rc, -EIO);
    }
    cr_assert_eq(file_size(BASE, ".log"), -1);
    cr_assert_eq(fd_count(), fds);
    assert_no_leaks();
}
