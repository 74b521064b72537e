/* tests/storage/test_idx.c - tests storage/idx.c: the offset and time index. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/sys.h"
#include "storage/idx.h"

#define BASE      1000u
#define BATCHES   3000u
#define LOG_BYTES (1u << 30)
#define SEED      0x5eed1dcafull

static char dir[] = "/tmp/rivven-idx-XXXXXX";

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

TestSuite(idx, .init = setup, .fini = teardown);
TestSuite(idx_fault, .init = setup, .fini = teardown);
/* Death tests make no directory: an abort skips .fini. */
TestSuite(idx_death);

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

/* A batch as the test appended it. */
struct model_batch {
    uint64_t first;
    uint64_t last;
    uint32_t pos;
    uint32_t bytes;
    int64_t max_ts;
};

/* Note `n` random batches (gaps in offsets, sizes 61..4096, timestamps that
 * wander up and down) into idx and the model array. */
static void fill_random(struct rv_idx *idx, struct model_batch *m, uint32_t n, uint64_t seed)
{
    uint64_t s = seed;
    uint64_t next = idx->base_offset + rng_next(&s) % 3;
    uint32_t pos = 0;
    int64_t ts = 1000000;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t records = 1 + (uint32_t)(rng_next(&s) % 20);
        m[i] = (struct model_batch){next, next + records - 1, pos,
                                    61 + (uint32_t)(rng_next(&s) % 4036), 0};
        ts += (int64_t)(rng_next(&s) % 200) - 80;
        m[i].max_ts = ts;
        cr_assert_eq(rv_idx_note_batch(idx, m[i].first, m[i].pos, m[i].bytes, m[i].max_ts), 0);
        pos += m[i].bytes;
        next = m[i].last + 1 + (rng_next(&s) % 4 == 0 ? rng_next(&s) % 5 : 0);
    }
}

static void path_of(char *out, size_t len, const char *suffix)
{
    cr_assert_eq(rv_idx_file_name(out, len, dir, BASE, suffix), 0);
}

static void write_file(const char *suffix, const void *bytes, size_t len)
{
    char path[256];
    path_of(path, sizeof(path), suffix);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(bytes, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

static off_t file_size(const char *suffix)
{
    char path[256];
    path_of(path, sizeof(path), suffix);
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    return st.st_size;
}

static void assert_same(const struct rv_idx *a, const struct rv_idx *b)
{
    cr_assert_eq(a->count, b->count);
    cr_assert_eq(a->tcount, b->tcount);
    for (uint32_t i = 0; i < a->count; i++) {
        cr_assert_eq(a->entries[i].rel_offset, b->entries[i].rel_offset, "entry %u", i);
        cr_assert_eq(a->entries[i].pos, b->entries[i].pos, "entry %u", i);
    }
    for (uint32_t i = 0; i < a->tcount; i++) {
        cr_assert_eq(a->tentries[i].timestamp_ms, b->tentries[i].timestamp_ms, "tentry %u", i);
        cr_assert_eq(a->tentries[i].rel_offset, b->tentries[i].rel_offset, "tentry %u", i);
    }
}

Test(idx, an_empty_index_allocates_nothing)
{
    struct rv_idx idx;
    rv_idx_init(&idx, BASE, 4096);
    cr_assert_null(idx.entries);
    cr_assert_null(idx.tentries);
    cr_assert_eq(idx.cap + idx.tcap, 0);
    cr_assert_eq(rv_idx_lookup(&idx, BASE + 5), 0);
    cr_assert_eq(rv_idx_lookup_time(&idx, 0), -1);
    rv_idx_fini(&idx);
    rv_idx_fini(NULL);
    assert_no_leaks();
}

Test(idx, first_batch_gets_an_entry_then_one_per_interval)
{
    struct rv_idx idx;
    rv_idx_init(&idx, BASE, 1000);
    /* 400-byte batches: entries at batch 0, then after >= 1000 bytes: 3, 6, ... */
    for (uint32_t i = 0; i < 10; i++)
        cr_assert_eq(rv_idx_note_batch(&idx, BASE + i * 10, i * 400, 400, 50 + i), 0);
    cr_assert_eq(idx.count, 4);
    uint32_t want[] = {0, 3, 6, 9};
    for (uint32_t i = 0; i < 4; i++) {
        cr_assert_eq(idx.entries[i].rel_offset, want[i] * 10);
        cr_assert_eq(idx.entries[i].pos, want[i] * 400);
    }
    cr_assert_leq(idx.cap, 8, "small arrays for small segments");
    rv_idx_fini(&idx);
    assert_no_leaks();
}

Test(idx, arrays_grow_by_doubling)
{
    struct rv_idx idx;
    rv_idx_init(&idx, BASE, 0);
    uint32_t caps_seen = 0;
    uint32_t last_cap = 0;
    for (uint32_t i = 0; i < 1000; i++) {
        cr_assert_eq(rv_idx_note_batch(&idx, BASE + i, i * 100, 100, i), 0);
        if (idx.cap != last_cap) {
            if (last_cap != 0)
                cr_assert_eq(idx.cap, last_cap * 2);
            last_cap = idx.cap;
            caps_seen++;
        }
    }
    cr_assert_eq(idx.count, 1000, "interval 0 indexes every batch");
    cr_assert_eq(idx.tcount, 1000);
    cr_assert_geq(caps_seen, 8);
    cr_assert_lt(idx.cap, 2048);
    rv_idx_fini(&idx);
    assert_no_leaks();
}

Test(idx, renoting_the_last_indexed_batch_adds_nothing)
{
    struct rv_idx idx;
    rv_idx_init(&idx, BASE, 0);
    cr_assert_eq(rv_idx_note_batch(&idx, BASE, 0, 100, 10), 0);
    cr_assert_eq(rv_idx_note_batch(&idx, BASE + 5, 100, 100, 20), 0);
    cr_assert_eq(rv_idx_note_batch(&idx, BASE + 5, 100, 100, 20), 0);
    cr_assert_eq(idx.count, 2);
    cr_assert_eq(idx.tcount, 2);
    cr_assert_eq(idx.bytes_since_last, 100);
    rv_idx_fini(&idx);
    assert_no_leaks();
}

Test(idx_death, out_of_order_batch_aborts, .signal = SIGABRT)
{
    struct rv_idx idx;
    rv_idx_init(&idx, BASE, 0);
    cr_assert_eq(rv_idx_note_batch(&idx, BASE + 10, 500, 100, 10), 0);
    int rc = rv_idx_note_batch(&idx, BASE + 5, 600, 100, 10);
    cr_assert_fail("returned %d", rc);
}

Test(idx, lookup_matches_brute_force)
{
    static struct model_batch m[BATCHES];
    struct rv_idx idx;
    rv_idx_init(&idx, BASE, 4096);
    fill_random(&idx, m, BATCHES, SEED);
    cr_assert_gt(idx.count, 100);
    cr_assert_lt(idx.count, BATCHES / 2, "sparse");
    uint64_t s = SEED;
    for (uint32_t q = 0; q < 20000; q++) {
        uint64_t off = BASE + rng_next(&s) % (m[BATCHES - 1].last - BASE + 10);
        uint32_t want = 0;
        for (uint32_t i = 0; i < idx.count; i++) {
            if (BASE + idx.entries[i].rel_offset <= off)
                want = idx.entries[i].pos;
        }
        uint32_t got = rv_idx_lookup(&idx, off);
        cr_assert_eq(got, want, "offset %" PRIu64, off);
        /* The answer is a batch boundary at or before the batch holding off. */
        for (uint32_t i = 0; i < BATCHES; i++) {
            if (m[i].last >= off) {
                cr_assert_leq(got, m[i].pos);
                break;
            }
        }
    }
    cr_assert_eq(rv_idx_lookup(&idx, 0), 0, "below the base");
    cr_assert_eq(rv_idx_lookup(&idx, UINT64_MAX), idx.entries[idx.count - 1].pos);
    rv_idx_fini(&idx);
    assert_no_leaks();
}

Test(idx, lookup_time_matches_brute_force)
{
    static struct model_batch m[BATCHES];
    struct rv_idx idx;
    rv_idx_init(&idx, BASE, 4096);
    fill_random(&idx, m, BATCHES, SEED + 1);
    cr_assert_leq(idx.tcount, idx.count, "as sparse as the offset index");
    int64_t ts_max = m[0].max_ts;
    int64_t ts_min = m[0].max_ts;
    for (uint32_t i = 1; i < BATCHES; i++) {
        ts_max = m[i].max_ts > ts_max ? m[i].max_ts : ts_max;
        ts_min = m[i].max_ts < ts_min ? m[i].max_ts : ts_min;
    }
    for (int64_t ts = ts_min - 10; ts <= ts_max + 10; ts++) {
        /* The first batch that may hold a record with timestamp >= ts. */
        int64_t first_match = -1;
        for (uint32_t i = 0; i < BATCHES && first_match < 0; i++) {
            if (m[i].max_ts >= ts)
                first_match = (int64_t)m[i].first;
        }
        int64_t got = rv_idx_lookup_time(&idx, ts);
        if (first_match < 0) {
            cr_assert_eq(got, -1, "ts %" PRId64, ts);
            continue;
        }
        cr_assert_geq(got, (int64_t)BASE, "ts %" PRId64, ts);
        cr_assert_leq(got, first_match, "ts %" PRId64 ": never past a match", ts);
    }
    rv_idx_fini(&idx);
    assert_no_leaks();
}

Test(idx, truncate_drops_entries_at_or_past_the_cut)
{
    struct rv_idx idx;
    rv_idx_init(&idx, BASE, 0);
    for (uint32_t i = 0; i < 10; i++)
        cr_assert_eq(rv_idx_note_batch(&idx, BASE + i * 10, i * 100, 100, i), 0);
    rv_idx_truncate(&idx, BASE + 50, 500);
    cr_assert_eq(idx.count, 5);
    cr_assert_eq(idx.tcount, 5);
    cr_assert_eq(idx.entries[4].rel_offset, 40);
    cr_assert_eq(idx.bytes_since_last, 100);
    rv_idx_truncate(&idx, BASE + 100, 250); /* the position decides here */
    cr_assert_eq(idx.count, 3);
    cr_assert_eq(idx.tcount, 5, "time entries are cut by offset only");
    rv_idx_truncate(&idx, 0, 0);
    cr_assert_eq(idx.count + idx.tcount, 0);
    cr_assert_eq(rv_idx_note_batch(&idx, BASE, 0, 100, 1), 0, "usable after a cut");
    cr_assert_eq(idx.count, 1);
    rv_idx_fini(&idx);
    assert_no_leaks();
}

/* What decides whether the files went stale: only changes of the entries
 * count, and a loaded index matches its files. */
Test(idx, changes_count_only_what_the_files_hold)
{
    struct rv_idx idx;
    rv_idx_init(&idx, BASE, 1000);
    cr_assert(rv_idx_is_saved(&idx), "empty: nothing to save");
    cr_assert_eq(rv_idx_note_batch(&idx, BASE, 0, 100, 10), 0);
    cr_assert_not(rv_idx_is_saved(&idx), "a first entry");
    uint32_t c = idx.changes;
    cr_assert_eq(rv_idx_note_batch(&idx, BASE + 1, 100, 100, 5), 0);
    cr_assert_eq(idx.changes, c, "no entry and no new maximum: the files hold the same");
    cr_assert_eq(rv_idx_note_batch(&idx, BASE + 2, 200, 100, 20), 0);
    cr_assert_gt(idx.changes, c, "a raised time entry");
    c = idx.changes;
    cr_assert_eq(rv_idx_note_batch(&idx, BASE, 0, 100, 10), 0); /* noted again by a tail scan */
    cr_assert_gt(idx.changes, c, "the time entry went back to 10 for now: counted");
    cr_assert_eq(rv_idx_save(&idx, dir), 0);
    idx.saved_changes = idx.changes;
    cr_assert(rv_idx_is_saved(&idx));
    rv_idx_truncate(&idx, BASE + 5, 300);
    cr_assert(rv_idx_is_saved(&idx), "a cut past every entry changes nothing");
    rv_idx_truncate(&idx, BASE, 0);
    cr_assert_not(rv_idx_is_saved(&idx));
    struct rv_idx back;
    rv_idx_init(&back, BASE, 1000);
    cr_assert_eq(rv_idx_load(&back, dir, 300), 0);
    cr_assert(rv_idx_is_saved(&back), "loaded: the files hold it");
    rv_idx_fini(&back);
    rv_idx_fini(&idx);
    assert_no_leaks();
}

Test(idx, save_load_round_trip)
{
    static struct model_batch m[BATCHES];
    struct rv_idx idx;
    struct rv_idx back;
    rv_idx_init(&idx, BASE, 4096);
    fill_random(&idx, m, BATCHES, SEED + 2);
    cr_assert_eq(rv_idx_save(&idx, dir), 0);
    cr_assert_eq(file_size(".index"), (off_t)idx.count * RV_IDX_ENTRY_BYTES);
    cr_assert_eq(file_size(".timeindex"), (off_t)idx.tcount * RV_TIDX_ENTRY_BYTES);
    cr_assert_eq(file_size(".index.tmp"), -1, "no temporary file left");
    cr_assert_eq(file_size(".timeindex.tmp"), -1);
    rv_idx_init(&back, BASE, 4096);
    cr_assert_eq(rv_idx_load(&back, dir, m[BATCHES - 1].pos + m[BATCHES - 1].bytes), 0);
    assert_same(&idx, &back);
    cr_assert_eq(rv_idx_lookup(&back, m[BATCHES / 2].first),
                 rv_idx_lookup(&idx, m[BATCHES / 2].first));
    /* A loaded index keeps growing. */
    struct model_batch *l = &m[BATCHES - 1];
    cr_assert_eq(rv_idx_note_batch(&back, l->last + 1, l->pos + l->bytes, 100, INT64_MAX), 0);
    rv_idx_fini(&idx);
    rv_idx_fini(&back);
    assert_no_leaks();
}

Test(idx, files_use_kafka_big_endian_layout)
{
    struct rv_idx idx;
    rv_idx_init(&idx, BASE, 0);
    cr_assert_eq(rv_idx_note_batch(&idx, BASE + 0x01020304, 0x0a0b0c0d, 100, 0x1122334455667788),
                 0);
    cr_assert_eq(rv_idx_save(&idx, dir), 0);
    char path[256];
    uint8_t b[16];
    path_of(path, sizeof(path), ".index");
    FILE *f = fopen(path, "rb");
    cr_assert_eq(fread(b, 1, sizeof(b), f), 8);
    fclose(f);
    uint8_t want[] = {1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d};
    cr_assert_arr_eq(b, want, 8);
    path_of(path, sizeof(path), ".timeindex");
    f = fopen(path, "rb");
    cr_assert_eq(fread(b, 1, sizeof(b), f), 12);
    fclose(f);
    uint8_t twant[] = {0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 1, 2, 3, 4};
    cr_assert_arr_eq(b, twant, 12);
    rv_idx_fini(&idx);
    assert_no_leaks();
}

Test(idx, empty_index_round_trips)
{
    struct rv_idx idx;
    rv_idx_init(&idx, BASE, 4096);
    cr_assert_eq(rv_idx_save(&idx, dir), 0);
    cr_assert_eq(file_size(".index"), 0);
    cr_assert_eq(rv_idx_load(&idx, dir, 0), 0);
    cr_assert_eq(idx.count + idx.tcount, 0);
    rv_idx_fini(&idx);
    assert_no_leaks();
}

Test(idx, save_replaces_an_older_index)
{
    struct rv_idx idx;
    rv_idx_init(&idx, BASE, 0);
    for (uint32_t i = 0; i < 50; i++)
        cr_assert_eq(rv_idx_note_batch(&idx, BASE + i, i * 100, 100, i), 0);
    cr_assert_eq(rv_idx_save(&idx, dir), 0);
    rv_idx_truncate(&idx, BASE + 10, 1000);
    cr_assert_eq(rv_idx_save(&idx, dir), 0);
    cr_assert_eq(file_size(".index"), 10 * RV_IDX_ENTRY_BYTES);
    cr_assert_eq(file_size(".timeindex"), 10 * RV_TIDX_ENTRY_BYTES);
    rv_idx_fini(&idx);
    assert_no_leaks();
}

Test(idx, load_missing_file_returns_enoent)
{
    struct rv_idx idx;
    rv_idx_init(&idx, BASE, 0);
    cr_assert_eq(rv_idx_load(&idx, dir, 100), -ENOENT);
    write_file(".index", "", 0);
    cr_assert_eq(rv_idx_load(&idx, dir, 100), -ENOENT, "the time index is missing");
    rv_idx_fini(&idx);
    assert_no_leaks();
}

/* Write offset entries (rel, pos pairs) and time entries (ts, rel pairs) as
 * given, then load them against a log of log_bytes. */
static int load_raw(const uint32_t *off, size_t off_count, const int64_t *tim, size_t tim_count,
                    uint64_t log_bytes)
{
    uint8_t buf[256];
    size_t n = 0;
    for (size_t i = 0; i < off_count; i++) {
        for (int k = 0; k < 4; k++)
            buf[n++] = (uint8_t)(off[i] >> (24 - 8 * k));
    }
    write_file(".index", buf, n);
    n = 0;
    for (size_t i = 0; i < tim_count; i++) {
        uint64_t v = (uint64_t)tim[i];
        int bytes = i % 2 == 0 ? 8 : 4;
        for (int k = 0; k < bytes; k++)
            buf[n++] = (uint8_t)(v >> (8 * (bytes - 1 - k)));
    }
    write_file(".timeindex", buf, n);
    struct rv_idx idx;
    rv_idx_init(&idx, BASE, 0);
    cr_assert_eq(rv_idx_note_batch(&idx, BASE, 0, 10, 0), 0);
    int rc = rv_idx_load(&idx, dir, log_bytes);
    if (rc < 0)
        cr_assert_eq(idx.count + idx.tcount, 0, "reset on error");
    rv_idx_fini(&idx);
    return rc;
}

Test(idx, load_accepts_a_valid_hand_written_index)
{
    uint32_t off[] = {0, 0, 5, 100, 9, 300};
    int64_t tim[] = {10, 0, 20, 5};
    cr_assert_eq(load_raw(off, 6, tim, 4, 400), 0);
    assert_no_leaks();
}

Test(idx, load_rejects_corrupt_index_files)
{
    uint32_t dec_rel[] = {0, 0, 5, 100, 5, 300};
    uint32_t dec_pos[] = {0, 0, 5, 100, 9, 100};
    uint32_t past_log[] = {0, 0, 5, 400};
    uint32_t huge_rel[] = {0x80000000u, 0};
    int64_t tim_ok[] = {10, 0};
    int64_t tim_dec_ts[] = {10, 0, 10, 5};
    int64_t tim_dec_rel[] = {10, 5, 20, 5};
    int64_t tim_huge_rel[] = {10, 0x80000000ll};
    cr_assert_eq(load_raw(dec_rel, 6, tim_ok, 2, 400), -EBADMSG, "offsets must increase");
    cr_assert_eq(load_raw(dec_pos, 6, tim_ok, 2, 400), -EBADMSG, "positions must increase");
    cr_assert_eq(load_raw(past_log, 4, tim_ok, 2, 400), -EBADMSG, "position past the log");
    cr_assert_eq(load_raw(huge_rel, 2, tim_ok, 2, 400), -EBADMSG, "relative offset > int32");
    cr_assert_eq(load_raw(past_log, 2, tim_dec_ts, 4, 400), -EBADMSG, "timestamps increase");
    cr_assert_eq(load_raw(past_log, 2, tim_dec_rel, 4, 400), -EBADMSG, "time offsets increase");
    cr_assert_eq(load_raw(past_log, 2, tim_huge_rel, 2, 400), -EBADMSG);
    cr_assert_eq(load_raw(past_log, 2, tim_ok, 2, 0), -EBADMSG, "entries of an empty log");
    assert_no_leaks();
}

Test(idx, load_rejects_sizes_that_are_not_whole_entries)
{
    write_file(".index", "\0\0\0\0\0\0\0\0\0", 9);
    write_file(".timeindex", "", 0);
    struct rv_idx idx;
    rv_idx_init(&idx, BASE, 0);
    cr_assert_eq(rv_idx_load(&idx, dir, 100), -EBADMSG);
    write_file(".index", "\0\0\0\0\0\0\0\0", 8);
    cr_assert_eq(rv_idx_load(&idx, dir, 100), 0);
    write_file(".timeindex", "\0\0\0\0\0\0\0\0", 8);
    cr_assert_eq(rv_idx_load(&idx, dir, 100), -EBADMSG);
    rv_idx_fini(&idx);
    assert_no_leaks();
}

Test(idx, load_rejects_random_garbage)
{
    uint64_t s = SEED + 3;
    uint8_t buf[240];
    uint32_t rejected = 0;
    for (uint32_t round = 0; round < 200; round++) {
        for (size_t i = 0; i < sizeof(buf); i++)
            buf[i] = (uint8_t)rng_next(&s);
        size_t len = 8 + rng_next(&s) % (sizeof(buf) - 8);
        write_file(round % 2 ? ".index" : ".timeindex", buf, len);
        write_file(round % 2 ? ".timeindex" : ".index", "", 0);
        struct rv_idx idx;
        rv_idx_init(&idx, BASE, 0);
        int rc = rv_idx_load(&idx, dir, LOG_BYTES);
        cr_assert(rc == 0 || rc == -EBADMSG);
        rejected += rc == -EBADMSG;
        rv_idx_fini(&idx);
    }
    cr_assert_gt(rejected, 180);
    assert_no_leaks();
}

Test(idx, file_name_is_twenty_digits)
{
    char out[64];
    cr_assert_eq(rv_idx_file_name(out, sizeof(out), "/d", 42, ".index"), 0);
    cr_assert_str_eq(out, "/d/00000000000000000042.index");
    cr_assert_eq(rv_idx_file_name(out, 10, "/d", 42, ".index"), -ENAMETOOLONG);
    assert_no_leaks();
}

Test(idx_fault, failed_save_leaves_old_or_new_index)
{
    struct rv_idx old_idx;
    struct rv_idx new_idx;
    rv_idx_init(&old_idx, BASE, 0);
    rv_idx_init(&new_idx, BASE, 0);
    for (uint32_t i = 0; i < 20; i++) {
        cr_assert_eq(rv_idx_note_batch(&old_idx, BASE + i, i * 100, 100, i), 0);
        cr_assert_eq(rv_idx_note_batch(&new_idx, BASE + i * 2, i * 100, 100, i + 50), 0);
    }
    uint32_t n = 1;
    for (;; n++) {
        cr_assert_eq(rv_idx_save(&old_idx, dir), 0);
        rv_sys_fault_fail_nth(n, -EIO);
        int rc = rv_idx_save(&new_idx, dir);
        bool has_fired = rv_sys_fault_fired();
        rv_sys_fault_clear();
        if (!has_fired) {
            cr_assert_eq(rc, 0);
            break;
        }
        cr_assert_eq(rc, -EIO, "round %u", n);
        cr_assert_eq(file_size(".index.tmp"), -1, "round %u: no .tmp left", n);
        cr_assert_eq(file_size(".timeindex.tmp"), -1, "round %u", n);
        /* Each file holds the old or the new entries, whole. */
        struct rv_idx back;
        rv_idx_init(&back, BASE, 0);
        cr_assert_eq(rv_idx_load(&back, dir, 2000), 0, "round %u", n);
        cr_assert(back.entries[1].rel_offset == 1 || back.entries[1].rel_offset == 2);
        cr_assert(back.tentries[0].timestamp_ms == 0 || back.tentries[0].timestamp_ms == 50);
        rv_idx_fini(&back);
    }
    cr_assert_geq(n, 10, "every syscall of the save was failed once");
    rv_idx_fini(&old_idx);
    rv_idx_fini(&new_idx);
    assert_no_leaks();
}

Test(idx_fault, failed_load_resets_the_index)
{
    struct rv_idx idx;
    rv_idx_init(&idx, BASE, 0);
    for (uint32_t i = 0; i < 20; i++)
        cr_assert_eq(rv_idx_note_batch(&idx, BASE + i, i * 100, 100, i), 0);
    cr_assert_eq(rv_idx_save(&idx, dir), 0);
    uint32_t n = 1;
    for (;; n++) {
        struct rv_idx back;
        rv_idx_init(&back, BASE, 0);
        rv_sys_fault_fail_nth(n, -EIO);
        int rc = rv_idx_load(&back, dir, 2000);
        bool has_fired = rv_sys_fault_fired();
        rv_sys_fault_clear();
        if (rc == 0)
            assert_same(&idx, &back); /* only a close failed: nothing is lost */
        else
            cr_assert_eq(back.count + back.tcount, 0);
        rv_idx_fini(&back);
        if (!has_fired)
            break;
        if (rc != 0)
            cr_assert_eq(rc, -EIO, "round %u", n);
    }
    cr_assert_geq(n, 6);
    rv_idx_fini(&idx);
    assert_no_leaks();
}
