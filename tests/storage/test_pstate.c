/*
 * tests/storage/test_pstate.c - tests storage/pstate.c: duplicates, gaps,
 * epochs, sequence wrap-around, batches in flight, snapshots (round trip,
 * corrupt, stale) and rebuilding from segment files; then the same checks
 * through a partition log (storage/plog.c) on a shard, across a reopen.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/pool.h"
#include "core/sys.h"
#include "storage/batch.h"
#include "storage/plog.h"
#include "storage/pstate.h"
#include "storage/seg.h"
#include "storage/wal.h"
#include "tests/support/rt.h"

static char dir[64];

static void setup(void)
{
    strcpy(dir, "/tmp/rivven-pstate-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(pstate, .init = setup, .fini = teardown, .timeout = 60);

/* A batch of `count` records of producer pid/epoch from sequence seq, at
 * base offset `base`, into out; returns its size and parses it into *v. */
static size_t build(uint8_t *out, size_t cap, int64_t pid, int16_t epoch, int32_t seq, int count,
                    int64_t base, uint16_t attributes, struct rv_batch_view *v)
{
    struct rv_batch_params params = {.base_offset = base,
                                     .base_timestamp = RV_BATCH_NO_TIMESTAMP,
                                     .producer_id = pid,
                                     .producer_epoch = epoch,
                                     .base_sequence = seq,
                                     .attributes = attributes};
    struct rv_batch_builder b;
    cr_assert_eq(rv_batch_builder_init(&b, out, cap, &params), 0);
    for (int i = 0; i < count; i++)
        cr_assert_eq(rv_batch_builder_add(&b, 1700000000000 + i, "k", 1, "v", 1, NULL, 0), 0);
    size_t len = 0;
    cr_assert_eq(rv_batch_builder_finish(&b, &len), 0);
    cr_assert_gt(rv_batch_parse(out, len, cap, v), 0);
    return len;
}

/* The view of a batch (no bytes kept): enough for the state. */
static struct rv_batch_view view(int64_t pid, int16_t epoch, int32_t seq, int count)
{
    static uint8_t buf[4096];
    struct rv_batch_view v;
    build(buf, sizeof(buf), pid, epoch, seq, count, 0, 0, &v);
    return v;
}

/* Check, assign at *end and confirm: the batch is in the log. */
static void append(struct rv_pstate *ps, int64_t *end, int64_t pid, int16_t epoch, int32_t seq,
                   int count)
{
    struct rv_batch_view v = view(pid, epoch, seq, count);
    struct rv_pstate_dup dup;
    int rc = rv_pstate_check_batch(ps, &v, 0, &dup);
    cr_assert_eq(rc, 0, "pid %lld epoch %d seq %d: %d %s", (long long)pid, epoch, seq, rc,
                 rv_err_msg());
    rv_pstate_assign(ps, &v, *end, v.max_timestamp);
    rv_pstate_confirm(ps, *end);
    *end += count;
    cr_assert(rv_pstate_check(ps));
}

static int check(struct rv_pstate *ps, int64_t pid, int16_t epoch, int32_t seq, int count,
                 struct rv_pstate_dup *dup)
{
    struct rv_batch_view v = view(pid, epoch, seq, count);
    return rv_pstate_check_batch(ps, &v, 0, dup);
}

Test(pstate, a_duplicate_of_one_of_the_last_five_gets_its_original_offset)
{
    struct rv_pstate ps;
    rv_pstate_init(&ps);
    int64_t end = 100;
    for (int i = 0; i < 6; i++)
        append(&ps, &end, 7, 0, i * 5, 5); /* offsets 100..129 */
    struct rv_pstate_dup dup;
    cr_assert_eq(check(&ps, 7, 0, 25, 5, &dup), RV_PSTATE_DUPLICATE);
    cr_assert_eq(dup.base_offset, 125);
    cr_assert_eq(dup.last_offset, 129);
    cr_assert_eq(check(&ps, 7, 0, 5, 5, &dup), RV_PSTATE_DUPLICATE);
    cr_assert_eq(dup.base_offset, 105);
    /* The sixth batch from the end is forgotten (Kafka keeps five). */
    cr_assert_eq(check(&ps, 7, 0, 0, 5, &dup), -EILSEQ);
    /* The same first sequence with another length is no duplicate. */
    cr_assert_eq(check(&ps, 7, 0, 25, 4, &dup), -EILSEQ);
    /* Another producer's state is its own. */
    cr_assert_eq(check(&ps, 8, 0, 25, 5, &dup), 0, "an unknown producer: any sequence");
    struct rv_pstate_info info;
    cr_assert(rv_pstate_get(&ps, 7, &info));
    cr_assert_eq(info.batch_count, 5);
    cr_assert_eq(info.batches[0].first_seq, 5);
    cr_assert_eq(info.batches[4].last_seq, 29);
    rv_pstate_fini(&ps);
}

Test(pstate, gaps_and_rewinds_are_out_of_order)
{
    struct rv_pstate ps;
    rv_pstate_init(&ps);
    int64_t end = 0;
    append(&ps, &end, 1, 3, 0, 10);
    struct rv_pstate_dup dup;
    cr_assert_eq(check(&ps, 1, 3, 11, 1, &dup), -EILSEQ, "a gap");
    cr_assert_eq(check(&ps, 1, 3, 9, 1, &dup), -EILSEQ, "a rewind");
    cr_assert_eq(check(&ps, 1, 3, -1, 1, &dup), -EILSEQ, "no sequence");
    cr_assert_eq(check(&ps, 1, 3, 10, 1, &dup), 0);
    rv_pstate_fini(&ps);
}

Test(pstate, unknown_producers_are_taken_at_any_sequence)
{
    struct rv_pstate ps;
    rv_pstate_init(&ps);
    struct rv_pstate_dup dup;
    cr_assert_eq(check(&ps, 42, 0, 5, 1, &dup), 0, "Kafka >= 2.5: any sequence");
    int64_t end = 0;
    append(&ps, &end, 42, 0, 5, 1);
    cr_assert_eq(check(&ps, 42, 0, 6, 1, &dup), 0, "then in sequence");
    cr_assert_eq(check(&ps, 42, 0, 8, 1, &dup), -EILSEQ, "and a gap is a gap");
    rv_pstate_fini(&ps);
}

Test(pstate, epochs_stale_fenced_and_new_ones_start_at_zero)
{
    struct rv_pstate ps;
    rv_pstate_init(&ps);
    int64_t end = 0;
    append(&ps, &end, 5, 2, 0, 3);
    struct rv_pstate_dup dup;
    cr_assert_eq(check(&ps, 5, 1, 3, 1, &dup), -ESTALE);
    cr_assert_eq(check(&ps, 5, 1, 0, 3, &dup), -ESTALE, "an old epoch's duplicate too");
    cr_assert_eq(check(&ps, 5, 3, 3, 1, &dup), -EILSEQ, "a new epoch from sequence 3");
    append(&ps, &end, 5, 3, 0, 2); /* bumped */
    cr_assert_eq(check(&ps, 5, 2, 3, 1, &dup), -ESTALE);
    cr_assert_eq(check(&ps, 5, 3, 0, 2, &dup), RV_PSTATE_DUPLICATE);
    cr_assert_eq(dup.base_offset, 3);
    struct rv_pstate_info info;
    cr_assert(rv_pstate_get(&ps, 5, &info));
    cr_assert_eq(info.epoch, 3);
    cr_assert_eq(info.batch_count, 1, "a new epoch forgets the old batches");
    rv_pstate_fini(&ps);
}

Test(pstate, sequences_wrap_at_int32_max)
{
    struct rv_pstate ps;
    rv_pstate_init(&ps);
    cr_assert_eq(rv_pstate_seq_add(INT32_MAX, 1), 0);
    cr_assert_eq(rv_pstate_seq_add(INT32_MAX - 1, 3), 1);
    cr_assert_eq(rv_pstate_seq_add(5, 0), 5);
    int64_t end = 0;
    append(&ps, &end, 9, 0, 0, 1);
    /* Jump near the end through a new epoch's state, then wrap. */
    struct rv_pstate_dup dup;
    append(&ps, &end, 9, 1, 0, 1);
    for (int32_t s = 1; s < 3; s++)
        append(&ps, &end, 9, 1, s, 1);
    /* Replay a batch that ends at INT32_MAX - 1 (as a log written long ago would). */
    struct rv_batch_view v = view(9, 1, INT32_MAX - 3, 3);
    v.base_offset = end;
    cr_assert_eq(rv_pstate_replay(&ps, &v), 0);
    end += 3;
    cr_assert_eq(check(&ps, 9, 1, INT32_MAX, 3, &dup), 0, "INT32_MAX follows INT32_MAX - 1");
    append(&ps, &end, 9, 1, INT32_MAX, 3); /* INT32_MAX, 0, 1 */
    struct rv_pstate_info info;
    cr_assert(rv_pstate_get(&ps, 9, &info));
    cr_assert_eq(info.batches[info.batch_count - 1].last_seq, 1);
    cr_assert_eq(check(&ps, 9, 1, 2, 2, &dup), 0, "after the wrap: 2");
    cr_assert_eq(check(&ps, 9, 1, INT32_MAX, 3, &dup), RV_PSTATE_DUPLICATE);
    cr_assert_eq(check(&ps, 9, 1, 0, 2, &dup), -EILSEQ);
    /* A batch ending exactly at INT32_MAX is followed by 0. */
    append(&ps, &end, 10, 0, 0, 1);
    v = view(10, 0, INT32_MAX - 1, 2);
    v.base_offset = end;
    cr_assert_eq(rv_pstate_replay(&ps, &v), 0);
    end += 2;
    cr_assert_eq(check(&ps, 10, 0, 0, 2, &dup), 0);
    cr_assert_eq(check(&ps, 10, 0, 1, 1, &dup), -EILSEQ);
    rv_pstate_fini(&ps);
}

Test(pstate, batches_in_flight_are_followed_retried_and_undone)
{
    struct rv_pstate ps;
    rv_pstate_init(&ps);
    int64_t end = 0;
    append(&ps, &end, 3, 0, 0, 2); /* seq 0..1 at 0..1 */
    struct rv_pstate_dup dup;
    struct rv_batch_view a = view(3, 0, 2, 2);
    cr_assert_eq(rv_pstate_check_batch(&ps, &a, 0, &dup), 0);
    rv_pstate_assign(&ps, &a, 2, 0);
    struct rv_batch_view b = view(3, 0, 4, 2);
    cr_assert_eq(rv_pstate_check_batch(&ps, &b, 0, &dup), 0, "follows the one in flight");
    rv_pstate_assign(&ps, &b, 4, 0);
    cr_assert_eq(rv_pstate_pending_count(&ps), 2);
    cr_assert_eq(check(&ps, 3, 0, 2, 2, &dup), -EAGAIN, "a retry of one in flight waits");
    cr_assert_eq(check(&ps, 3, 0, 6, 1, &dup), 0);
    cr_assert_eq(check(&ps, 3, 0, 4, 1, &dup), -EILSEQ);
    /* A new epoch in flight fences the old one already. */
    struct rv_batch_view c = view(3, 1, 0, 1);
    cr_assert_eq(rv_pstate_check_batch(&ps, &c, 0, &dup), 0);
    rv_pstate_assign(&ps, &c, 6, 0);
    cr_assert_eq(check(&ps, 3, 0, 6, 1, &dup), -ESTALE);
    cr_assert(rv_pstate_check(&ps));
    /* The WAL: the first is written, then the rest fails (oldest first). */
    rv_pstate_confirm(&ps, 2);
    rv_pstate_abort(&ps, 4);
    cr_assert_eq(check(&ps, 3, 1, 1, 1, &dup), 0, "still behind the new epoch in flight");
    rv_pstate_abort(&ps, 6);
    cr_assert_eq(rv_pstate_pending_count(&ps), 0);
    cr_assert(rv_pstate_check(&ps));
    /* Back to what is in the log: seq 0..3 of epoch 0. */
    cr_assert_eq(check(&ps, 3, 0, 4, 2, &dup), 0);
    cr_assert_eq(check(&ps, 3, 0, 2, 2, &dup), RV_PSTATE_DUPLICATE);
    cr_assert_eq(dup.base_offset, 2);
    cr_assert_eq(check(&ps, 3, 1, 0, 1, &dup), 0);
    /* A new producer whose only batch failed leaves nothing behind. */
    struct rv_batch_view d = view(77, 0, 0, 1);
    cr_assert_eq(rv_pstate_check_batch(&ps, &d, 0, &dup), 0);
    rv_pstate_assign(&ps, &d, 4, 0);
    rv_pstate_abort(&ps, 4);
    cr_assert(!rv_pstate_get(&ps, 77, &(struct rv_pstate_info){0}));
    rv_pstate_fini(&ps);
}

Test(pstate, producers_below_the_log_start_are_unknown_again)
{
    struct rv_pstate ps;
    rv_pstate_init(&ps);
    int64_t end = 0;
    append(&ps, &end, 1, 0, 0, 10); /* 0..9 */
    append(&ps, &end, 2, 0, 0, 10); /* 10..19 */
    struct rv_pstate_dup dup;
    struct rv_batch_view v = view(1, 0, 10, 1);
    cr_assert_eq(rv_pstate_check_batch(&ps, &v, 10, &dup), 0, "forgotten: any sequence");
    v = view(2, 0, 10, 1);
    cr_assert_eq(rv_pstate_check_batch(&ps, &v, 10, &dup), 0);
    v = view(1, 0, 0, 1);
    cr_assert_eq(rv_pstate_check_batch(&ps, &v, 10, &dup), 0, "it may start again");
    rv_pstate_fini(&ps);
}

static bool info_eq(const struct rv_pstate_info *a, const struct rv_pstate_info *b)
{
    if (a->epoch != b->epoch || a->batch_count != b->batch_count ||
        a->pending_count != b->pending_count || a->last_seen_ms != b->last_seen_ms ||
        a->txn_first_offset != b->txn_first_offset)
        return false;
    for (uint32_t i = 0; i < a->batch_count; i++) {
        const struct rv_pstate_batch *x = &a->batches[i], *y = &b->batches[i];
        if (x->first_seq != y->first_seq || x->last_seq != y->last_seq ||
            x->base_offset != y->base_offset || x->offset_delta != y->offset_delta ||
            x->max_timestamp != y->max_timestamp)
            return false;
    }
    return true;
}

Test(pstate, snapshot_round_trip_and_corruption)
{
    struct rv_pstate ps;
    rv_pstate_init(&ps);
    int64_t end = 0;
    for (int64_t pid = 0; pid < 50; pid++) {
        for (int i = 0; i < (int)(pid % 7) + 1; i++)
            append(&ps, &end, pid, (int16_t)(pid % 3), i * 2, 2);
    }
    /* A transactional batch opens a transaction: the state keeps its start. */
    uint8_t tb[4096];
    struct rv_batch_view tv;
    build(tb, sizeof(tb), 1000, 0, 0, 1, 0, RV_BATCH_ATTR_TRANSACTIONAL, &tv);
    struct rv_pstate_dup dup;
    cr_assert_eq(rv_pstate_check_batch(&ps, &tv, 0, &dup), 0);
    rv_pstate_assign(&ps, &tv, end, tv.max_timestamp);
    rv_pstate_confirm(&ps, end);
    int64_t txn_at = end++;
    cr_assert(rv_pstate_snapshot_due(&ps, 1));
    uint8_t *buf;
    size_t len;
    cr_assert_eq(rv_pstate_snapshot_encode(&ps, end, 0, rv_clock_wall_ms(), &buf, &len), 0);
    cr_assert(!rv_pstate_snapshot_due(&ps, 1), "one at a time");
    rv_pstate_snapshot_done(&ps, end, 0);
    cr_assert_eq(len, RV_PSTATE_SNAP_HEADER_BYTES + 51 * RV_PSTATE_SNAP_PRODUCER_BYTES);
    struct rv_pstate back;
    rv_pstate_init(&back);
    int64_t off = -1;
    cr_assert_eq(rv_pstate_snapshot_decode(&back, buf, len, 0, &off), 0, "%s", rv_err_msg());
    cr_assert_eq(off, end);
    cr_assert_eq(rv_pstate_producer_count(&back), 51);
    cr_assert(rv_pstate_check(&back));
    for (int64_t pid = 0; pid < 50; pid++) {
        struct rv_pstate_info a, b;
        cr_assert(rv_pstate_get(&ps, pid, &a));
        cr_assert(rv_pstate_get(&back, pid, &b));
        cr_assert(info_eq(&a, &b), "producer %lld", (long long)pid);
    }
    struct rv_pstate_info t;
    cr_assert(rv_pstate_get(&back, 1000, &t));
    cr_assert_eq(t.txn_first_offset, txn_at);
    cr_assert_eq(check(&back, 6, 0, 14, 2, &dup), 0, "producer 6 wrote seq 0..13");
    cr_assert_eq(check(&back, 6, 0, 12, 2, &dup), RV_PSTATE_DUPLICATE);
    /* Producers below the log start are not brought back. */
    struct rv_pstate cut;
    rv_pstate_init(&cut);
    cr_assert_eq(rv_pstate_snapshot_decode(&cut, buf, len, end - 1, &off), 0);
    cr_assert_eq(rv_pstate_producer_count(&cut), 1);
    rv_pstate_fini(&cut);
    /* Every flipped byte and every cut is refused, leaving the state empty. */
    for (size_t i = 0; i < len; i += 7) {
        buf[i] ^= 0x40;
        struct rv_pstate bad;
        rv_pstate_init(&bad);
        cr_assert_eq(rv_pstate_snapshot_decode(&bad, buf, len, 0, &off), -EBADMSG, "byte %zu", i);
        cr_assert_eq(rv_pstate_producer_count(&bad), 0);
        rv_pstate_fini(&bad);
        buf[i] ^= 0x40;
    }
    for (size_t n = 0; n < len; n += 97) {
        struct rv_pstate bad;
        rv_pstate_init(&bad);
        cr_assert_eq(rv_pstate_snapshot_decode(&bad, buf, n, 0, &off), -EBADMSG, "%zu bytes", n);
        rv_pstate_fini(&bad);
    }
    free(buf);
    rv_pstate_fini(&back);
    rv_pstate_fini(&ps);
}

Test(pstate, expired_producers_are_dropped_at_a_snapshot)
{
    struct rv_pstate ps;
    rv_pstate_init(&ps);
    int64_t end = 0;
    append(&ps, &end, 1, 0, 0, 1); /* by the broker's clock, not the batch's (2023) */
    int64_t now = rv_clock_wall_ms();
    uint8_t *kept;
    size_t kept_len;
    cr_assert_eq(rv_pstate_snapshot_encode(&ps, end, 0, now, &kept, &kept_len), 0);
    rv_pstate_snapshot_done(&ps, end, 0);
    cr_assert_eq(rv_pstate_producer_count(&ps), 1, "old CreateTime records do not expire it");
    free(kept);
    uint8_t *buf;
    size_t len;
    cr_assert_eq(rv_pstate_snapshot_encode(&ps, end, 0, now + RV_PSTATE_EXPIRE_MS + 10, &buf, &len),
                 0);
    rv_pstate_snapshot_done(&ps, end, -EIO);
    cr_assert(rv_pstate_snapshot_due(&ps, now + RV_PSTATE_EXPIRE_MS + 10 + RV_PSTATE_SNAP_MS),
              "a failed write leaves it dirty");
    cr_assert_eq(len, RV_PSTATE_SNAP_HEADER_BYTES);
    cr_assert_eq(rv_pstate_producer_count(&ps), 0);
    free(buf);
    rv_pstate_fini(&ps);
}

/* ---- rebuilding from segment files -------------------------------------------------------- */

/* Write `n` batches of 2 records (producers 1..3 in turn) into segments of 4 batches each under dir; fills segs. */
static uint32_t write_segments(struct rv_seg *segs, int n)
{
    int32_t seq[4] = {0};
    uint32_t count = 0;
    int fd = -1;
    uint64_t pos = 0;
    for (int i = 0; i < n; i++) {
        int64_t base = 2 * i;
        if (i % 4 == 0) {
            if (fd >= 0)
                close(fd);
            cr_assert_eq(rv_seg_create(dir, (uint64_t)base), 0);
            char path[PATH_MAX];
            snprintf(path, sizeof(path), "%s/%020lld.log", dir, (long long)base);
            fd = open(path, O_WRONLY);
            cr_assert_geq(fd, 0);
            pos = 0;
            count++;
        }
        int64_t pid = 1 + i % 3;
        uint8_t b[4096];
        struct rv_batch_view v;
        size_t len = build(b, sizeof(b), pid, 0, seq[pid], 2, base, 0, &v);
        seq[pid] += 2;
        cr_assert_eq(pwrite(fd, b, len, (off_t)pos), (ssize_t)len);
        pos += len;
    }
    close(fd);
    uint64_t *bases;
    uint32_t got;
    cr_assert_eq(rv_seg_list(dir, &bases, &got), 0);
    cr_assert_eq(got, count);
    for (uint32_t i = 0; i < count; i++) {
        rv_seg_init(&segs[i], bases[i], 64); /* an index entry every batch or so */
        struct rv_seg_recovery rep;
        cr_assert_eq(rv_seg_recover(&segs[i], dir, RV_SEG_SCAN_FULL, 1 << 20, &rep), 0);
    }
    free(bases);
    return count;
}

static void expect_state(const struct rv_pstate *ps, int n)
{
    /* Producer p wrote batches i = p-1, p+2, ... with sequences 0, 2, ... */
    for (int64_t pid = 1; pid <= 3; pid++) {
        int batches = (n - (int)pid + 3) / 3;
        struct rv_pstate_info info;
        cr_assert(rv_pstate_get(ps, pid, &info), "producer %lld", (long long)pid);
        uint32_t want = batches < RV_PSTATE_BATCHES ? (uint32_t)batches : RV_PSTATE_BATCHES;
        cr_assert_eq(info.batch_count, want, "producer %lld", (long long)pid);
        const struct rv_pstate_batch *last = &info.batches[info.batch_count - 1];
        cr_assert_eq(last->last_seq, 2 * batches - 1);
        cr_assert_eq(last->base_offset, 2 * (pid - 1 + 3 * (batches - 1)));
    }
}

Test(pstate, load_reads_the_snapshot_and_scans_only_what_follows)
{
    enum { N = 30 };
    struct rv_seg segs[16];
    uint32_t count = write_segments(segs, N);
    /* No snapshot: everything is scanned. */
    struct rv_pstate ps;
    rv_pstate_init(&ps);
    struct rv_pstate_load_report rep;
    cr_assert_eq(rv_pstate_load(&ps, dir, segs, count, 0, 2 * N, 1 << 20, &rep), 0, "%s",
                 rv_err_msg());
    cr_assert_eq(rep.snap_offset, -1);
    cr_assert_eq(rep.batches, N);
    expect_state(&ps, N);
    /* A snapshot of the state as of 2 * 20 (batches 0..19), built by replay. */
    struct rv_pstate half;
    rv_pstate_init(&half);
    struct rv_pstate_load_report hrep;
    cr_assert_eq(rv_pstate_load(&half, dir, segs, count, 0, 2 * 20, 1 << 20, &hrep), 0);
    cr_assert_eq(hrep.batches, 20);
    uint8_t *buf;
    size_t len;
    cr_assert_eq(rv_pstate_snapshot_encode(&half, 40, 0, rv_clock_wall_ms(), &buf, &len), 0);
    cr_assert_eq(rv_pstate_snapshot_write(dir, 40, buf, len), 0);
    free(buf);
    rv_pstate_snapshot_done(&half, 40, 0);
    rv_pstate_fini(&half);
    rv_pstate_fini(&ps);
    rv_pstate_init(&ps);
    cr_assert_eq(rv_pstate_load(&ps, dir, segs, count, 0, 2 * N, 1 << 20, &rep), 0);
    cr_assert_eq(rep.snap_offset, 40);
    cr_assert_eq(rep.batches, N - 20, "only the batches after the snapshot");
    expect_state(&ps, N);
    /* A newer snapshot replaces the older one. */
    cr_assert_eq(rv_pstate_snapshot_encode(&ps, 2 * N, 0, rv_clock_wall_ms(), &buf, &len), 0);
    cr_assert_eq(rv_pstate_snapshot_write(dir, 2 * N, buf, len), 0);
    rv_pstate_snapshot_done(&ps, 2 * N, 0);
    free(buf);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%020d.snapshot", dir, 40);
    cr_assert_neq(access(path, F_OK), 0, "the older snapshot was removed");
    rv_pstate_fini(&ps);
    rv_pstate_init(&ps);
    cr_assert_eq(rv_pstate_load(&ps, dir, segs, count, 0, 2 * N, 1 << 20, &rep), 0);
    cr_assert_eq(rep.snap_offset, 2 * N);
    cr_assert_eq(rep.batches, 0);
    expect_state(&ps, N);
    rv_pstate_fini(&ps);
    /* Corrupt it: the state is rebuilt by scanning the whole log. */
    snprintf(path, sizeof(path), "%s/%020d.snapshot", dir, 2 * N);
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    uint8_t x;
    cr_assert_eq(pread(fd, &x, 1, 40), 1);
    x ^= 1;
    cr_assert_eq(pwrite(fd, &x, 1, 40), 1);
    close(fd);
    rv_pstate_init(&ps);
    cr_assert_eq(rv_pstate_load(&ps, dir, segs, count, 0, 2 * N, 1 << 20, &rep), 0);
    cr_assert_eq(rep.snap_offset, -1);
    cr_assert_eq(rep.snaps_rejected, 1);
    cr_assert_eq(rep.batches, N);
    expect_state(&ps, N);
    rv_pstate_fini(&ps);
    /* A snapshot beyond the log end (the log lost its tail) is removed. */
    cr_assert_eq(unlink(path), 0);
    struct rv_pstate full;
    rv_pstate_init(&full);
    cr_assert_eq(rv_pstate_load(&full, dir, segs, count, 0, 2 * N, 1 << 20, &rep), 0);
    cr_assert_eq(rv_pstate_snapshot_encode(&full, 2 * N, 0, rv_clock_wall_ms(), &buf, &len), 0);
    cr_assert_eq(rv_pstate_snapshot_write(dir, 2 * N, buf, len), 0);
    free(buf);
    rv_pstate_snapshot_done(&full, 2 * N, 0);
    rv_pstate_fini(&full);
    rv_pstate_init(&ps);
    cr_assert_eq(rv_pstate_load(&ps, dir, segs, count, 0, 2 * 25, 1 << 20, &rep), 0);
    cr_assert_eq(rep.snap_offset, -1);
    cr_assert_eq(rep.snaps_rejected, 1);
    cr_assert_eq(rep.batches, 25);
    expect_state(&ps, 25);
    cr_assert_neq(access(path, F_OK), 0, "the stale snapshot was removed");
    rv_pstate_fini(&ps);
    /* A leftover temporary file is removed too. */
    snprintf(path, sizeof(path), "%s/%020d.snapshot.tmp", dir, 7);
    fd = open(path, O_WRONLY | O_CREAT, 0644);
    cr_assert_geq(fd, 0);
    close(fd);
    rv_pstate_init(&ps);
    cr_assert_eq(rv_pstate_load(&ps, dir, segs, count, 0, 2 * N, 1 << 20, &rep), 0);
    cr_assert_neq(access(path, F_OK), 0);
    rv_pstate_fini(&ps);
    for (uint32_t i = 0; i < count; i++)
        rv_seg_fini(&segs[i]);
}

/* ---- through a partition log on a shard -------------------------------------------------- */

#define LOG_RESULTS 16

struct lcase {
    rv_wal_t *wal;
    struct rv_plog_shard sh;
    rv_plog_t *log;
    char wdir[128];
    char pdir[128];
    /* one step's appends: what rv_plog_append returned, what done got */
    int rcs[LOG_RESULTS];
    int64_t bases[LOG_RESULTS];
    uint32_t count;
    uint32_t dones;
    struct test_signal done;
    int64_t hw;
    /* the step to run on the shard */
    struct {
        int64_t pid;
        int16_t epoch;
        int32_t seq;
        int n;
    } batches[LOG_RESULTS];
    uint32_t batch_count;
};

static struct lcase *lcase_current;

/* done of every append: arg is the step's result slot. */
static void lcase_done_signal(void *arg, int64_t base)
{
    int64_t *slot = arg;
    *slot = base;
    lcase_current->dones++;
    test_signal_post(&lcase_current->done);
}

/* On the shard: append the step's batches in one turn. */
static void lcase_append(void *arg)
{
    struct lcase *c = arg;
    for (uint32_t i = 0; i < c->batch_count; i++) {
        uint8_t b[4096];
        struct rv_batch_view v;
        size_t len = build(b, sizeof(b), c->batches[i].pid, c->batches[i].epoch, c->batches[i].seq,
                           c->batches[i].n, 0, 0, &v);
        rv_buf_t *buf;
        cr_assert_eq(rv_buf_alloc(c->sh.pool, len, &buf), 0);
        memcpy(rv_buf_data(buf), b, len);
        rv_buf_set_len(buf, len);
        c->bases[i] = -1000;
        c->rcs[i] = rv_plog_append(c->log, buf, rv_buf_data(buf), (uint32_t)len, RV_ACKS_ALL,
                                   lcase_done_signal, &c->bases[i]);
        rv_buf_put(buf);
        c->count += c->rcs[i] == 0;
    }
    c->batch_count = 0;
}

static void lcase_hw(void *arg)
{
    struct lcase *c = arg;
    c->hw = rv_plog_high_watermark(c->log);
}

/* Append the batches {pid, epoch, seq, n}... in one shard turn; wait for the
 * accepted ones. */
#define STEP(rt, c, ...)                                                                           \
    do {                                                                                           \
        const int spec_[][4] = {__VA_ARGS__};                                                      \
        (c)->count = (c)->dones = 0;                                                               \
        for (size_t i_ = 0; i_ < sizeof(spec_) / sizeof(spec_[0]); i_++)                           \
            (c)->batches[(c)->batch_count++] = (typeof((c)->batches[0])){                          \
                spec_[i_][0], (int16_t)spec_[i_][1], spec_[i_][2], spec_[i_][3]};                  \
        test_run_on(rt, 0, lcase_append, c);                                                       \
        for (uint32_t k_ = 0; k_ < (c)->count; k_++)                                               \
            test_signal_wait(&(c)->done);                                                          \
    } while (0)

static void lcase_setup(void *arg)
{
    struct lcase *c = arg;
    struct rv_pool_opts po = {.owner_shard = 0, .bytes_max = 16 << 20, .numa_node = -1};
    cr_assert_eq(rv_pool_create(&c->sh.pool, &po), 0);
    cr_assert_eq(rv_hot_create(&c->sh.hot, 1 << 20), 0);
    c->sh.wal = c->wal;
    c->sh.unload_index_min = 1; /* an unload saves even these small logs' indexes */
    rv_plog_fds_init(&c->sh, 16);
    rv_plog_attach(c->log, &c->sh);
}

static void lcase_cleanup(void *arg)
{
    struct lcase *c = arg;
    if (c->log == NULL || !rv_plog_is_idle(c->log) || !rv_wal_is_idle(c->wal) ||
        !rv_plog_fds_is_idle(&c->sh))
        return;
    rv_plog_fds_fini(&c->sh);
    rv_plog_close(c->log);
    c->log = NULL;
    rv_hot_destroy(c->sh.hot);
    rv_pool_destroy(c->sh.pool);
    free(c->sh.scratch);
    c->sh = (struct rv_plog_shard){0};
    rv_wal_close(c->wal);
    c->wal = NULL;
}

/* The test logs' configuration: no retention, 1 MiB batches. */
static struct rv_plog_config lcase_config(uint64_t segment_bytes)
{
    return (struct rv_plog_config){.segment_bytes = segment_bytes,
                                   .retention_ms = -1,
                                   .retention_bytes = -1,
                                   .index_interval = 4096,
                                   .max_batch_bytes = 1 << 20};
}

static void lcase_open(rv_runtime_t *rt, struct lcase *c)
{
    snprintf(c->wdir, sizeof(c->wdir), "%s/wal", dir);
    snprintf(c->pdir, sizeof(c->pdir), "%s/t/0", dir);
    struct rv_wal_config wc;
    rv_wal_config_init(&wc);
    wc.dir = c->wdir;
    wc.file_bytes = 1 << 20;
    wc.group_bytes_max = 1 << 18;
    /* The WAL of the previous round is not replayed: its batches are in the
     * segment (written before the close, as the page cache keeps them). */
    cr_assert_eq(rv_wal_open(&c->wal, &wc, 0, NULL, NULL, NULL), 0);
    struct rv_plog_config pc = lcase_config(1 << 20);
    cr_assert_eq(rv_plog_open(&c->log, c->pdir, 1, &pc), 0, "%s", rv_err_msg());
    test_run_on(rt, 0, lcase_setup, c);
}

static void lcase_idle(void *arg)
{
    struct lcase *c = arg;
    c->hw = rv_plog_is_idle(c->log) && rv_wal_is_idle(c->wal) ? 1 : 0;
}

/* Close the log once idle (sync first when is_clean: a SIGTERM; without, a
 * kill -9 whose page cache survived). */
static void lcase_sync(void *arg)
{
    struct lcase *c = arg;
    cr_assert_eq(rv_plog_sync_blocking(c->log), 0);
}

static void lcase_close(rv_runtime_t *rt, struct lcase *c, bool is_clean)
{
    if (is_clean) {
        for (int i = 0; i < 2000; i++) {
            test_run_on(rt, 0, lcase_idle, c);
            if (c->hw == 1)
                break;
            usleep(1000);
        }
        test_run_on(rt, 0, lcase_sync, c);
    }
    for (int i = 0; i < 2000 && c->log != NULL; i++) {
        test_run_on(rt, 0, lcase_cleanup, c);
        if (c->log != NULL)
            usleep(1000);
    }
    cr_assert_null(c->log, "the log became idle");
}

static int snapshot_count(const char *pdir, int64_t *out_offset)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd),
             "ls %s | grep -c '\\.snapshot$' > %s/count; ls %s | grep "
             "'\\.snapshot$' | head -1 | cut -c1-20 > %s/offset",
             pdir, dir, pdir, dir);
    if (system(cmd) < 0)
        return -1;
    char path[128];
    snprintf(path, sizeof(path), "%s/count", dir);
    FILE *f = fopen(path, "r");
    int n = -1;
    if (f != NULL && fscanf(f, "%d", &n) != 1)
        n = -1;
    if (f != NULL)
        fclose(f);
    snprintf(path, sizeof(path), "%s/offset", dir);
    f = fopen(path, "r");
    long long off = -1;
    if (f != NULL && fscanf(f, "%lld", &off) != 1)
        off = -1;
    if (f != NULL)
        fclose(f);
    *out_offset = off;
    return n;
}

static void lcase_checkpoint_done(void *arg, int64_t res)
{
    (void)arg;
    (void)res;
}

static void lcase_checkpoint(void *arg)
{
    struct lcase *c = arg;
    rv_plog_checkpoint(c->log, lcase_checkpoint_done, c);
}

Test(pstate, a_log_checks_sequences_answers_retries_and_keeps_the_state_across_reopens)
{
    rv_runtime_t *rt = test_rt_open(1);
    struct lcase c = {0};
    lcase_current = &c;
    test_signal_init(&c.done);
    lcase_open(rt, &c);
    STEP(rt, &c, {1, 0, 0, 3});
    cr_assert_eq(c.rcs[0], 0);
    cr_assert_eq(c.bases[0], 0);
    STEP(rt, &c, {1, 0, 0, 3});
    cr_assert_eq(c.rcs[0], 0, "a retry is answered");
    cr_assert_eq(c.bases[0], 0, "with its original offset");
    test_run_on(rt, 0, lcase_hw, &c);
    cr_assert_eq(c.hw, 3, "and not written again");
    STEP(rt, &c, {1, 0, 5, 1}, {1, 0, 6, 1}, {1, -1, 3, 1});
    cr_assert_eq(c.rcs[0], -EILSEQ);
    cr_assert_eq(c.rcs[1], -EILSEQ);
    cr_assert_eq(c.rcs[2], -ESTALE);
    /* Two in flight, and a retry of the second while it is. */
    STEP(rt, &c, {1, 0, 3, 2}, {1, 0, 5, 2}, {1, 0, 5, 2}, {1, 0, 9, 1});
    cr_assert_eq(c.rcs[0], 0);
    cr_assert_eq(c.rcs[1], 0);
    cr_assert_eq(c.rcs[2], -EAGAIN, "answered once the original is");
    cr_assert_eq(c.rcs[3], -EILSEQ, "checked against the batches in flight");
    cr_assert_eq(c.bases[0], 3);
    cr_assert_eq(c.bases[1], 5);
    STEP(rt, &c, {1, 0, 5, 2});
    cr_assert_eq(c.bases[0], 5);
    /* A new epoch, and the old one fenced. */
    STEP(rt, &c, {1, 1, 0, 2}, {1, 0, 7, 1});
    cr_assert_eq(c.bases[0], 7);
    cr_assert_eq(c.rcs[1], -ESTALE);
    /* A checkpoint writes the snapshot (at the log end, 9) on a helper. */
    test_run_on(rt, 0, lcase_checkpoint, &c);
    int64_t off = -1;
    for (int i = 0; i < 2000 && snapshot_count(c.pdir, &off) != 1; i++)
        usleep(1000);
    cr_assert_eq(snapshot_count(c.pdir, &off), 1);
    cr_assert_eq(off, 9);
    /* Two batches after it, then a close without a sync or a snapshot. */
    STEP(rt, &c, {1, 1, 2, 1}, {3, 0, 0, 1});
    cr_assert_eq(c.bases[0], 9);
    cr_assert_eq(c.bases[1], 10);
    lcase_close(rt, &c, false);
    lcase_open(rt, &c);
    STEP(rt, &c, {1, 1, 2, 1}, {1, 1, 0, 2}, {3, 0, 0, 1}, {1, 0, 7, 1}, {1, 1, 3, 1});
    cr_assert_eq(c.bases[0], 9, "a retry of a batch after the snapshot");
    cr_assert_eq(c.bases[1], 7, "a retry of a batch in the snapshot");
    cr_assert_eq(c.bases[2], 10);
    cr_assert_eq(c.rcs[3], -ESTALE);
    cr_assert_eq(c.bases[4], 11);
    /* A clean close writes the snapshot at the end: nothing to scan after. */
    lcase_close(rt, &c, true);
    cr_assert_eq(snapshot_count(c.pdir, &off), 1);
    cr_assert_eq(off, 12, "off %lld", (long long)off);
    lcase_open(rt, &c);
    STEP(rt, &c, {1, 1, 3, 1}, {1, 1, 4, 1});
    cr_assert_eq(c.bases[0], 11);
    cr_assert_eq(c.bases[1], 12);
    lcase_close(rt, &c, true);
    rv_runtime_close(rt);
}

static void arm_wal_fault(void *arg)
{
    struct lcase *c = arg;
    rv_sys_fault_fail_nth(1, -ENOSPC); /* the next call: the WAL's gather write */
    lcase_append(c);
}

Test(pstate, a_failed_wal_write_takes_the_batches_in_flight_back)
{
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    cfg.shard_count = 1;
    cfg.io_backend = RV_IO_EPOLL; /* file syscalls go through the fault shim */
    rv_runtime_t *rt = NULL;
    cr_assert_eq(rv_runtime_open(&rt, &cfg), 0);
    struct lcase c = {0};
    lcase_current = &c;
    test_signal_init(&c.done);
    lcase_open(rt, &c);
    STEP(rt, &c, {1, 0, 0, 2});
    cr_assert_eq(c.bases[0], 0);
    /* Two in flight and a new producer's first, all in the failing group
     * (once the first batch's segment write is done: the fault hits the
     * next file call). */
    for (int i = 0; i < 2000; i++) {
        test_run_on(rt, 0, lcase_idle, &c);
        if (c.hw == 1)
            break;
        usleep(1000);
    }
    c.count = c.dones = 0;
    const int spec[][4] = {{1, 0, 2, 2}, {1, 1, 0, 1}, {2, 0, 0, 1}};
    for (size_t i = 0; i < 3; i++)
        c.batches[c.batch_count++] =
            (typeof(c.batches[0])){spec[i][0], (int16_t)spec[i][1], spec[i][2], spec[i][3]};
    test_run_on(rt, 0, arm_wal_fault, &c);
    for (uint32_t k = 0; k < c.count; k++)
        test_signal_wait(&c.done);
    cr_assert(rv_sys_fault_fired());
    cr_assert_eq(c.count, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(c.bases[i], -ENOSPC, "append %d", i);
    /* The state is what the log holds: epoch 0 up to sequence 1. */
    STEP(rt, &c, {1, 0, 0, 2}, {1, 0, 3, 1}, {2, 0, 5, 1}, {1, 0, 2, 2}, {2, 0, 6, 1});
    cr_assert_eq(c.bases[0], 0, "still a duplicate");
    cr_assert_eq(c.rcs[1], -EILSEQ);
    /* Had its failed batch stayed, producer 2 would be held to sequence 1. */
    cr_assert_eq(c.bases[2], 2, "the new producer is unknown again: any sequence");
    cr_assert_eq(c.bases[3], 3, "the failed batch goes in again");
    cr_assert_eq(c.bases[4], 5);
    lcase_close(rt, &c, true);
    rv_runtime_close(rt);
}

/* ---- unloading an idle log ------------------------------------------------------------------- */

struct ucase {
    struct lcase *c;
    bool started;  /* rv_plog_unload_idle said it started */
    bool is_ready; /* rv_plog_is_ready after it */
    uint64_t unloads;
    int waited; /* the call queued while unloading ran */
    int ckpt_rc;
    bool skip_ckpt; /* ucase_try: no checkpoint first */
};

/* On the shard: a checkpoint (the log must be clean), then two sweeps' looks
 * with no idle time: the first notes the uses, the second may start. */
static void ucase_ckpt_done(void *arg, int64_t res)
{
    ((struct ucase *)arg)->ckpt_rc = (int)res;
}

static void ucase_try(void *arg)
{
    struct ucase *u = arg;
    if (!u->skip_ckpt)
        rv_plog_checkpoint(u->c->log, ucase_ckpt_done, u);
    int64_t now = rv_clock_wall_ms();
    u->started = rv_plog_unload_idle(u->c->log, now, 0);
    u->started = rv_plog_unload_idle(u->c->log, now, 0) || u->started;
}

static void ucase_waited(void *arg)
{
    ((struct ucase *)arg)->waited++;
}

static void lcase_wait_idle(rv_runtime_t *rt, struct lcase *c)
{
    for (int i = 0; i < 2000; i++) {
        test_run_on(rt, 0, lcase_idle, c);
        if (c->hw == 1)
            return;
        usleep(1000);
    }
    cr_assert_fail("the log never became idle");
}

/* Start an unload and, in the same turn, a call that needs the log. */
static void ucase_try_and_want(void *arg)
{
    struct ucase *u = arg;
    ucase_try(u);
    if (u->started)
        cr_assert_eq(rv_plog_when_ready(u->c->log, ucase_waited, u), 0);
}

static void ucase_state(void *arg)
{
    struct ucase *u = arg;
    u->is_ready = rv_plog_is_ready(u->c->log);
    u->unloads = u->c->sh.unloads;
}

/* A runtime and the test log on it, for the unload cases. */
static rv_runtime_t *ucase_open(struct lcase *c)
{
    rv_runtime_t *rt = test_rt_open(1);
    lcase_current = c;
    test_signal_init(&c->done);
    lcase_open(rt, c);
    return rt;
}

static void ucase_start(rv_runtime_t *rt, struct ucase *u, void (*fn)(void *))
{
    for (int i = 0; i < 2000; i++) {
        test_run_on(rt, 0, fn, u);
        if (u->started)
            return;
        usleep(1000);
    }
    cr_assert_fail("the idle log never started to unload");
}

/* Wait until the unload (or its refusal) is over: the log is ready again, or
 * the shard counted one more unload. */
static void ucase_settle(rv_runtime_t *rt, struct ucase *u, uint64_t unloads_before)
{
    for (int i = 0; i < 2000; i++) {
        test_run_on(rt, 0, ucase_state, u);
        if (u->is_ready || u->unloads > unloads_before)
            return;
        usleep(1000);
    }
    cr_assert_fail("the unload never ended");
}

/* On the shard: the step's appends once the log is loaded (again). */
static void lcase_append_when_ready(void *arg)
{
    struct lcase *c = arg;
    cr_assert_eq(rv_plog_when_ready(c->log, lcase_append, c), 0);
}

static void lcase_step_done(void *arg)
{
    struct lcase *c = arg;
    c->hw = c->batch_count == 0 ? 1 : 0; /* lcase_append ran */
}

/* STEP through a log that may be unloaded: it loads first. */
static void lcase_step_loading(rv_runtime_t *rt, struct lcase *c, int64_t pid, int16_t epoch,
                               int32_t seq, int n)
{
    c->count = c->dones = 0;
    c->batches[0] = (typeof(c->batches[0])){pid, epoch, seq, n};
    c->batch_count = 1;
    test_run_on(rt, 0, lcase_append_when_ready, c);
    c->hw = 0;
    for (int i = 0; i < 2000 && c->hw == 0; i++) {
        test_run_on(rt, 0, lcase_step_done, c);
        if (c->hw == 0)
            usleep(1000);
    }
    cr_assert_eq(c->hw, 1, "the log loaded and took the step");
    for (uint32_t k = 0; k < c->count; k++)
        test_signal_wait(&c->done);
}

/* An idle, clean log gives back what its load built and loads again on the
 * next call: the producers' state (sequences, a retry's original offset) and
 * the offsets come back from the files, the index and the snapshot saved by
 * the unload. A call that arrives while it unloads keeps it loaded. A failed
 * save keeps it loaded too, and working. */
Test(pstate, an_idle_log_unloads_and_comes_back_with_its_producers)
{
    struct lcase c = {0};
    struct ucase u = {.c = &c};
    rv_runtime_t *rt = ucase_open(&c);
    /* Over 4096 bytes, so the active segment's index has an entry to save. */
    STEP(rt, &c, {1, 0, 0, 200}, {1, 0, 200, 200}, {1, 0, 400, 200});
    cr_assert_eq(c.bases[2], 400);

    /* Written but not synced (no checkpoint yet): it stays, whatever the idle time. */
    lcase_wait_idle(rt, &c);
    u.skip_ckpt = true;
    test_run_on(rt, 0, ucase_try, &u);
    cr_assert_not(u.started, "a log with unsynced writes is not unloaded");
    u.skip_ckpt = false;

    /* The save fails (a directory where the index file goes: the rename over
     * it fails, whatever the I/O backend): it stays loaded. */
    char idx_path[256], cmd[600];
    snprintf(idx_path, sizeof(idx_path), "%s/%020d.index", c.pdir, 0);
    snprintf(cmd, sizeof(cmd), "rm -f %s && mkdir -p %s/in-the-way", idx_path, idx_path);
    cr_assert_eq(system(cmd), 0);
    ucase_start(rt, &u, ucase_try);
    ucase_settle(rt, &u, 0);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", idx_path);
    cr_assert_eq(system(cmd), 0);
    cr_assert(u.is_ready, "a failed save keeps the log loaded");
    cr_assert_eq(u.unloads, 0);
    STEP(rt, &c, {1, 0, 600, 1});
    cr_assert_eq(c.bases[0], 600, "and working");

    /* A call while it unloads: it stays loaded, and the call runs. */
    u.started = false;
    ucase_start(rt, &u, ucase_try_and_want);
    ucase_settle(rt, &u, 0);
    cr_assert(u.is_ready, "wanted during the unload: still loaded");
    cr_assert_eq(u.unloads, 0);
    cr_assert_eq(u.waited, 1, "the waiting call ran");

    /* Now it unloads. */
    u.started = false;
    ucase_start(rt, &u, ucase_try);
    ucase_settle(rt, &u, 0);
    cr_assert_not(u.is_ready, "unloaded");
    cr_assert_eq(u.unloads, 1);
    int64_t off = -1;
    cr_assert_eq(snapshot_count(c.pdir, &off), 1);
    cr_assert_eq(off, 601, "the unload wrote the producers' snapshot at the end");

    /* A retry of the last batch gets its original offset; the next sequence
     * follows; an old epoch is still fenced after a new one. */
    lcase_step_loading(rt, &c, 1, 0, 600, 1);
    cr_assert_eq(c.rcs[0], 0);
    cr_assert_eq(c.bases[0], 600, "a retry across the unload");
    test_run_on(rt, 0, lcase_hw, &c);
    cr_assert_eq(c.hw, 601, "not written again");
    STEP(rt, &c, {1, 0, 601, 2}, {1, 0, 700, 1});
    cr_assert_eq(c.bases[0], 601);
    cr_assert_eq(c.rcs[1], -EILSEQ, "gaps are still refused");
    lcase_close(rt, &c, true);
    rv_runtime_close(rt);
}

/* A configuration change while a helper job reads the log's configuration
 * (here: an idle unload's save) waits for the job, then applies: the log
 * reloaded afterwards rolls at the new, small segment size. */
static void ucase_try_and_reconfigure(void *arg)
{
    struct ucase *u = arg;
    ucase_try(u);
    if (u->started) {
        struct rv_plog_config pc = lcase_config(1024);
        rv_plog_set_config(u->c->log, &pc);
    }
}

static void lcase_segments(void *arg)
{
    struct lcase *c = arg;
    c->hw = rv_plog_segment_count(c->log);
}

Test(pstate, a_config_change_during_a_helper_job_applies_after_it)
{
    struct lcase c = {0};
    struct ucase u = {.c = &c};
    rv_runtime_t *rt = ucase_open(&c);
    STEP(rt, &c, {1, 0, 0, 200});
    ucase_start(rt, &u, ucase_try_and_reconfigure);
    ucase_settle(rt, &u, 0);
    cr_assert_eq(u.unloads, 1);
    for (int32_t i = 0; i < 3; i++)
        lcase_step_loading(rt, &c, 1, 0, 200 + 200 * i, 200);
    /* The roll ends after the append that started it was acknowledged. */
    test_run_on(rt, 0, lcase_segments, &c);
    for (int w = 0; w < 3000 && c.hw < 2; w++) {
        usleep(1000);
        test_run_on(rt, 0, lcase_segments, &c);
    }
    cr_assert_geq(c.hw, 2, "rolled at 1024 bytes (1 MiB before): %lld segments", (long long)c.hw);
    lcase_close(rt, &c, true);
    rv_runtime_close(rt);
}
