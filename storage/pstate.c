/*
 * storage/pstate.c - the idempotent producers of one partition log (see
 * pstate.h).
 *
 * Owned by the partition log on its owner shard. A producer is a malloc'd
 * struct pstate_producer, found by id through the hash map and linked in an
 * LRU list (by its last batch) that bounds how many a partition keeps. Its
 * confirmed batches are a ring of RV_PSTATE_BATCHES. Batches in flight live
 * in one ring per partition (struct pstate_pending), in append order, which
 * is the order the WAL completes them in; each producer counts its own and
 * remembers the epoch and last sequence of its newest one.
 *
 * Invariants (rv_pstate_check):
 *   - every producer is in the map and in the LRU list, once;
 *   - a producer's pending_count is the number of its entries in the ring,
 *     and its pending_epoch/pending_last_seq are those of the newest;
 *   - a producer with epoch RV_PSTATE_NO_EPOCH has no confirmed batch.
 */
#include "storage/pstate.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/clock.h"
#include "core/crc32c.h"
#include "core/err.h"
#include "core/sys.h"
#include "core/trace.h"
#include "rivven.h"
#include "storage/idx.h"

#define PSTATE_PENDING_MIN  16u
#define PSTATE_SNAP_MAGIC   "RVPS"
#define PSTATE_SNAP_VERSION 1
#define PSTATE_SNAP_MAX                                                                            \
    (RV_PSTATE_SNAP_HEADER_BYTES + (size_t)RV_PSTATE_PRODUCERS_MAX * RV_PSTATE_SNAP_PRODUCER_BYTES)
#define PSTATE_TMP_SUFFIX  RV_PSTATE_SNAP_SUFFIX ".tmp"
#define PSTATE_NAME_DIGITS 20

RV_STATIC_ASSERT(RV_PSTATE_BATCHES < 256);
RV_STATIC_ASSERT((RV_PSTATE_PENDING_MAX & (RV_PSTATE_PENDING_MAX - 1)) == 0);
RV_STATIC_ASSERT((PSTATE_PENDING_MIN & (PSTATE_PENDING_MIN - 1)) == 0);

struct pstate_producer {
    int64_t id;
    int16_t epoch;       /* confirmed; RV_PSTATE_NO_EPOCH: known by id only */
    uint8_t batch_count; /* confirmed batches in the ring */
    uint8_t batch_head;  /* ring index of the oldest */
    struct rv_pstate_batch batches[RV_PSTATE_BATCHES];
    int32_t coordinator_epoch; /* transactions (later): -1 */
    int64_t last_seen_ms;      /* wall clock when its last batch was appended or recovered */
    int64_t txn_first_offset;  /* first offset of its open transaction, -1 */
    uint32_t pending_count;    /* its batches in flight */
    int16_t pending_epoch;     /* of the newest in flight */
    int32_t pending_last_seq;
    struct pstate_producer *lru_prev;
    struct pstate_producer *lru_next;
};

struct pstate_pending {
    struct pstate_producer *p;
    struct rv_pstate_batch b;
    int16_t epoch;
    bool is_txn;
    bool is_control;
};

/* ---- small helpers -------------------------------------------------------------------------- */

int32_t rv_pstate_seq_add(int32_t seq, int32_t delta)
{
    RV_ASSERT(delta >= 0);
    if (seq > INT32_MAX - delta)
        return delta - (INT32_MAX - seq) - 1;
    return seq + delta;
}

/* Kafka's inSequence: next follows last, wrapping from INT32_MAX to 0. */
static bool pstate_in_sequence(int32_t last, int32_t next)
{
    return (int64_t)next == (int64_t)last + 1 || (next == 0 && last == INT32_MAX);
}

static const struct rv_pstate_batch *pstate_newest(const struct pstate_producer *p)
{
    if (p->batch_count == 0)
        return NULL;
    return &p->batches[(p->batch_head + p->batch_count - 1) % RV_PSTATE_BATCHES];
}

static bool pstate_is_unknown(const struct pstate_producer *p)
{
    return p->epoch == RV_PSTATE_NO_EPOCH && p->batch_count == 0 && p->pending_count == 0;
}

static struct pstate_pending *pstate_pending_at(const struct rv_pstate *ps, uint32_t i)
{
    RV_ASSERT(i < ps->pending_count);
    return &ps->pending[(ps->pending_head + i) & (ps->pending_cap - 1)];
}

static void pstate_lru_unlink(struct rv_pstate *ps, struct pstate_producer *p)
{
    if (p->lru_prev != NULL)
        p->lru_prev->lru_next = p->lru_next;
    else
        ps->lru_oldest = p->lru_next;
    if (p->lru_next != NULL)
        p->lru_next->lru_prev = p->lru_prev;
    else
        ps->lru_newest = p->lru_prev;
    p->lru_prev = p->lru_next = NULL;
}

static void pstate_lru_append(struct rv_pstate *ps, struct pstate_producer *p)
{
    p->lru_prev = ps->lru_newest;
    p->lru_next = NULL;
    if (ps->lru_newest != NULL)
        ps->lru_newest->lru_next = p;
    else
        ps->lru_oldest = p;
    ps->lru_newest = p;
}

static void pstate_lru_touch(struct rv_pstate *ps, struct pstate_producer *p)
{
    if (ps->lru_newest == p)
        return;
    pstate_lru_unlink(ps, p);
    pstate_lru_append(ps, p);
}

static struct pstate_producer *pstate_find(const struct rv_pstate *ps, int64_t id)
{
    uint64_t val;
    if (!ps->has_map || !rv_hmap_get(&ps->producers, (uint64_t)id, &val))
        return NULL;
    return (struct pstate_producer *)(uintptr_t)val;
}

static void pstate_remove(struct rv_pstate *ps, struct pstate_producer *p)
{
    RV_ASSERT(p->pending_count == 0);
    bool had = rv_hmap_del(&ps->producers, (uint64_t)p->id, NULL);
    RV_ASSERT(had);
    pstate_lru_unlink(ps, p);
    free(p);
}

/* A new producer, unknown until a batch of it is confirmed. At the cap the
 * least recently used one without a batch in flight makes room. */
static int pstate_add(struct rv_pstate *ps, int64_t id, struct pstate_producer **out)
{
    RV_ASSERT(id >= 0);
    if (!ps->has_map) {
        int rc = rv_hmap_init(&ps->producers, 0, true);
        if (rc < 0)
            return rc;
        ps->has_map = true;
    }
    if (rv_hmap_count(&ps->producers) >= RV_PSTATE_PRODUCERS_MAX) {
        struct pstate_producer *old = ps->lru_oldest;
        if (old == NULL || old->pending_count > 0)
            return rv_errf(-ENOBUFS, "pstate: %u producers, none idle", RV_PSTATE_PRODUCERS_MAX);
        pstate_remove(ps, old);
    }
    struct pstate_producer *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    p->id = id;
    p->epoch = RV_PSTATE_NO_EPOCH;
    p->coordinator_epoch = -1;
    p->txn_first_offset = -1;
    p->last_seen_ms = -1; /* no batch yet */
    int rc = rv_hmap_put(&ps->producers, (uint64_t)id, (uint64_t)(uintptr_t)p);
    if (rc < 0) {
        free(p);
        return rc;
    }
    pstate_lru_append(ps, p);
    *out = p;
    return 0;
}

/* Room for one more batch in flight (before it is handed to the WAL, so
 * rv_pstate_assign cannot fail). */
static int pstate_pending_reserve(struct rv_pstate *ps)
{
    if (ps->pending_count < ps->pending_cap)
        return 0;
    if (ps->pending_cap >= RV_PSTATE_PENDING_MAX)
        return -ENOBUFS; /* backpressure: the WAL drains them */
    uint32_t cap = ps->pending_cap == 0 ? PSTATE_PENDING_MIN : ps->pending_cap * 2;
    struct pstate_pending *ring = malloc(cap * sizeof(*ring));
    if (ring == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < ps->pending_count; i++)
        ring[i] = *pstate_pending_at(ps, i);
    free(ps->pending);
    ps->pending = ring;
    ps->pending_cap = cap;
    ps->pending_head = 0;
    return 0;
}

static void pstate_push_batch(struct pstate_producer *p, const struct rv_pstate_batch *b)
{
    if (p->batch_count == RV_PSTATE_BATCHES) {
        p->batch_head = (uint8_t)((p->batch_head + 1) % RV_PSTATE_BATCHES);
        p->batch_count--;
    }
    p->batches[(p->batch_head + p->batch_count) % RV_PSTATE_BATCHES] = *b;
    p->batch_count++;
}

/* The confirmed state follows one batch in the log (Kafka's
 * ProducerAppendInfo without the checks): a new epoch starts afresh. */
static void pstate_follow(struct pstate_producer *p, int16_t epoch, const struct rv_pstate_batch *b,
                          bool is_txn, bool is_control)
{
    if (epoch != p->epoch) {
        p->epoch = epoch;
        p->batch_count = 0;
        p->batch_head = 0;
        p->txn_first_offset = -1;
    }
    p->last_seen_ms = rv_clock_wall_ms();
    if (is_control) { /* a transaction marker ends the open transaction */
        p->txn_first_offset = -1;
        return;
    }
    pstate_push_batch(p, b);
    if (is_txn && p->txn_first_offset < 0)
        p->txn_first_offset = b->base_offset;
}

static struct rv_pstate_batch pstate_batch_of(const struct rv_batch_view *v, int64_t base_offset,
                                              int64_t max_timestamp)
{
    return (struct rv_pstate_batch){
        .first_seq = v->base_sequence,
        .last_seq = v->base_sequence >= 0
                        ? rv_pstate_seq_add(v->base_sequence, v->last_offset_delta)
                        : v->base_sequence,
        .base_offset = base_offset,
        .offset_delta = v->last_offset_delta,
        .max_timestamp = max_timestamp,
    };
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

void rv_pstate_init(struct rv_pstate *ps)
{
    RV_ASSERT(ps != NULL);
    *ps = (struct rv_pstate){.snap_offset = -1};
}

void rv_pstate_fini(struct rv_pstate *ps)
{
    if (ps == NULL)
        return;
    RV_ASSERT(ps->pending_count == 0);
    struct pstate_producer *p = ps->lru_oldest;
    while (p != NULL) {
        struct pstate_producer *next = p->lru_next;
        free(p);
        p = next;
    }
    if (ps->has_map)
        rv_hmap_fini(&ps->producers);
    free(ps->pending);
    rv_pstate_init(ps);
}

/* ---- the append path (owner shard) ---------------------------------------------------------- */

int rv_pstate_check_batch(struct rv_pstate *ps, const struct rv_batch_view *v, int64_t log_start,
                          struct rv_pstate_dup *out_dup)
{
    RV_ASSERT(rv_pstate_is_tracked(v));
    RV_DASSERT(rv_pstate_check(ps));
    int rc = pstate_pending_reserve(ps);
    if (rc < 0)
        return rc;
    int64_t id = v->producer_id;
    struct pstate_producer *p = pstate_find(ps, id);
    if (p != NULL && p->pending_count == 0 && p->batch_count > 0) {
        const struct rv_pstate_batch *last = pstate_newest(p);
        if (last->base_offset + last->offset_delta < log_start) {
            /* Its batches were deleted (retention, DeleteRecords): Kafka
             * forgets such a producer. */
            p->epoch = RV_PSTATE_NO_EPOCH;
            p->batch_count = 0;
            p->batch_head = 0;
            p->txn_first_offset = -1;
        }
    }
    if (p == NULL || pstate_is_unknown(p)) {
        /* As Kafka since 2.5 (KIP-360): a producer this partition does not
         * know (never seen, or its batches deleted by retention or
         * DeleteRecords, or expired) is taken at any sequence; refusing it
         * (UNKNOWN_PRODUCER_ID) is fatal to librdkafka for a retried batch. */
        return p != NULL ? 0 : pstate_add(ps, id, &p);
    }
    bool has_pending = p->pending_count > 0;
    int16_t epoch = has_pending ? p->pending_epoch : p->epoch;
    if (v->producer_epoch < epoch)
        return rv_errf(-ESTALE, "producer %" PRId64 ": epoch %d is older than its epoch %d", id,
                       v->producer_epoch, epoch);
    if (v->producer_epoch != epoch) {
        if (v->base_sequence != 0)
            return rv_errf(-EILSEQ,
                           "producer %" PRId64 ": a new epoch %d starts at sequence %" PRId32
                           ", not 0",
                           id, v->producer_epoch, v->base_sequence);
        return 0;
    }
    int32_t first = v->base_sequence;
    int32_t last = first >= 0 ? rv_pstate_seq_add(first, v->last_offset_delta) : first;
    for (uint32_t i = 0; i < p->batch_count && p->epoch == epoch; i++) {
        const struct rv_pstate_batch *b = &p->batches[(p->batch_head + i) % RV_PSTATE_BATCHES];
        if (b->first_seq == first && b->last_seq == last) {
            *out_dup = (struct rv_pstate_dup){.base_offset = b->base_offset,
                                              .last_offset = b->base_offset + b->offset_delta,
                                              .max_timestamp = b->max_timestamp};
            return RV_PSTATE_DUPLICATE;
        }
    }
    for (uint32_t i = 0; i < ps->pending_count && has_pending; i++) {
        const struct pstate_pending *e = pstate_pending_at(ps, i);
        if (e->p == p && e->epoch == epoch && e->b.first_seq == first && e->b.last_seq == last)
            return -EAGAIN; /* the original is on its way: answer as it is answered */
    }
    const struct rv_pstate_batch *newest = pstate_newest(p);
    int32_t last_seq = has_pending      ? p->pending_last_seq
                       : newest != NULL ? newest->last_seq
                                        : RV_BATCH_NO_SEQUENCE;
    if (first < 0 || !pstate_in_sequence(last_seq, first))
        return rv_errf(
            -EILSEQ, "producer %" PRId64 " epoch %d: sequence %" PRId32 " does not follow %" PRId32,
            id, epoch, first, last_seq);
    return 0;
}

void rv_pstate_assign(struct rv_pstate *ps, const struct rv_batch_view *v, int64_t base_offset,
                      int64_t max_timestamp)
{
    RV_ASSERT(rv_pstate_is_tracked(v));
    RV_ASSERT(ps->pending_count < ps->pending_cap); /* reserved by the check */
    struct pstate_producer *p = pstate_find(ps, v->producer_id);
    RV_ASSERT(p != NULL); /* made by the check */
    uint32_t i = (ps->pending_head + ps->pending_count) & (ps->pending_cap - 1);
    ps->pending[i] = (struct pstate_pending){
        .p = p,
        .b = pstate_batch_of(v, base_offset, max_timestamp),
        .epoch = v->producer_epoch,
        .is_txn = rv_batch_is_transactional(v),
        .is_control = rv_batch_is_control(v),
    };
    ps->pending_count++;
    p->pending_count++;
    p->pending_epoch = v->producer_epoch;
    p->pending_last_seq = ps->pending[i].b.last_seq;
    pstate_lru_touch(ps, p);
}

/* Forget the pending entry at ring position i (0: the head). */
static struct pstate_pending pstate_pending_take(struct rv_pstate *ps, uint32_t i)
{
    struct pstate_pending e = *pstate_pending_at(ps, i);
    for (uint32_t k = i; k > 0; k--)
        *pstate_pending_at(ps, k) = *pstate_pending_at(ps, k - 1);
    ps->pending_head = (ps->pending_head + 1) & (ps->pending_cap - 1);
    ps->pending_count--;
    struct pstate_producer *p = e.p;
    RV_ASSERT(p->pending_count > 0);
    p->pending_count--;
    for (uint32_t k = ps->pending_count; k > 0 && p->pending_count > 0; k--) {
        const struct pstate_pending *n = pstate_pending_at(ps, k - 1);
        if (n->p == p) { /* its newest in flight */
            p->pending_epoch = n->epoch;
            p->pending_last_seq = n->b.last_seq;
            break;
        }
    }
    return e;
}

void rv_pstate_confirm(struct rv_pstate *ps, int64_t base_offset)
{
    RV_ASSERT(ps->pending_count > 0);
    /* The WAL completes a log's appends in order: the oldest is the one. */
    RV_ASSERT(pstate_pending_at(ps, 0)->b.base_offset == base_offset);
    struct pstate_pending e = pstate_pending_take(ps, 0);
    pstate_follow(e.p, e.epoch, &e.b, e.is_txn, e.is_control);
    ps->is_dirty = true;
    RV_DASSERT(rv_pstate_check(ps));
}

void rv_pstate_note_applied(struct rv_pstate *ps, uint32_t size_bytes)
{
    ps->bytes_since_snap += size_bytes;
}

void rv_pstate_abort(struct rv_pstate *ps, int64_t base_offset)
{
    for (uint32_t i = 0; i < ps->pending_count; i++) {
        if (pstate_pending_at(ps, i)->b.base_offset != base_offset)
            continue;
        struct pstate_pending e = pstate_pending_take(ps, i);
        if (pstate_is_unknown(e.p) && e.p->last_seen_ms < 0)
            pstate_remove(ps, e.p); /* made for this batch alone */
        RV_DASSERT(rv_pstate_check(ps));
        return;
    }
    RV_ASSERT(!"rv_pstate_abort: no such batch in flight");
}

int rv_pstate_replay(struct rv_pstate *ps, const struct rv_batch_view *v)
{
    ps->bytes_since_snap += v->size_bytes;
    if (!rv_pstate_is_tracked(v))
        return 0;
    struct pstate_producer *p = pstate_find(ps, v->producer_id);
    if (p == NULL) {
        int rc = pstate_add(ps, v->producer_id, &p);
        if (rc < 0)
            return rc;
    }
    struct rv_pstate_batch b = pstate_batch_of(v, v->base_offset, v->max_timestamp);
    pstate_follow(p, v->producer_epoch, &b, rv_batch_is_transactional(v), rv_batch_is_control(v));
    pstate_lru_touch(ps, p);
    ps->is_dirty = true;
    return 0;
}

/* ---- snapshots ------------------------------------------------------------------------------ */

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)v);
    put16(p + 2, (uint16_t)(v >> 16));
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)get16(p) | (uint32_t)get16(p + 2) << 16;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

bool rv_pstate_snapshot_due(const struct rv_pstate *ps, int64_t now_ms)
{
    if (ps->is_snapping)
        return false;
    if (ps->bytes_since_snap >= RV_PSTATE_SNAP_BYTES)
        return true;
    return ps->is_dirty && (ps->snap_ms == 0 || now_ms - ps->snap_ms >= RV_PSTATE_SNAP_MS);
}

bool rv_pstate_needs_snapshot(const struct rv_pstate *ps)
{
    return !ps->is_snapping && (ps->is_dirty || ps->bytes_since_snap >= RV_PSTATE_SNAP_BYTES / 16);
}

/* Whether p is worth keeping at log start log_start and time now_ms. */
static bool pstate_is_live(const struct pstate_producer *p, int64_t log_start, int64_t now_ms)
{
    if (p->pending_count > 0)
        return true;
    const struct rv_pstate_batch *last = pstate_newest(p);
    if (last == NULL)
        return false; /* unknown, or only markers: nothing to check against */
    if (last->base_offset + last->offset_delta < log_start)
        return false;
    return now_ms - p->last_seen_ms <= RV_PSTATE_EXPIRE_MS;
}

static void pstate_encode_producer(uint8_t *q, const struct pstate_producer *p)
{
    put64(q, (uint64_t)p->id);
    put16(q + 8, (uint16_t)p->epoch);
    q[10] = 0; /* flags */
    q[11] = p->batch_count;
    put32(q + 12, (uint32_t)p->coordinator_epoch);
    put64(q + 16, (uint64_t)p->last_seen_ms);
    put64(q + 24, (uint64_t)p->txn_first_offset);
    uint8_t *bq = q + 32;
    for (uint32_t i = 0; i < RV_PSTATE_BATCHES; i++, bq += 28) {
        struct rv_pstate_batch b = {0};
        if (i < p->batch_count)
            b = p->batches[(p->batch_head + i) % RV_PSTATE_BATCHES];
        put32(bq, (uint32_t)b.first_seq);
        put32(bq + 4, (uint32_t)b.last_seq);
        put64(bq + 8, (uint64_t)b.base_offset);
        put32(bq + 16, (uint32_t)b.offset_delta);
        put64(bq + 20, (uint64_t)b.max_timestamp);
    }
}

int rv_pstate_snapshot_encode(struct rv_pstate *ps, int64_t offset, int64_t log_start,
                              int64_t now_ms, uint8_t **out, size_t *out_len)
{
    RV_ASSERT(offset >= 0 && !ps->is_snapping);
    uint32_t count = 0;
    for (struct pstate_producer *p = ps->lru_oldest; p != NULL; p = p->lru_next)
        count += pstate_is_live(p, log_start, now_ms) && p->batch_count > 0;
    size_t len = RV_PSTATE_SNAP_HEADER_BYTES + (size_t)count * RV_PSTATE_SNAP_PRODUCER_BYTES;
    uint8_t *buf = calloc(1, len);
    if (buf == NULL)
        return -ENOMEM;
    /* Forget the dead first: they are not in the snapshot either. */
    struct pstate_producer *p = ps->lru_oldest;
    while (p != NULL) {
        struct pstate_producer *next = p->lru_next;
        if (!pstate_is_live(p, log_start, now_ms))
            pstate_remove(ps, p);
        p = next;
    }
    memcpy(buf, PSTATE_SNAP_MAGIC, 4);
    put16(buf + 8, PSTATE_SNAP_VERSION);
    put32(buf + 12, count);
    put64(buf + 16, (uint64_t)offset);
    uint8_t *q = buf + RV_PSTATE_SNAP_HEADER_BYTES;
    uint32_t n = 0;
    for (p = ps->lru_oldest; p != NULL; p = p->lru_next) {
        if (p->batch_count == 0)
            continue; /* in flight only: not in the log yet */
        RV_ASSERT(n < count);
        pstate_encode_producer(q, p);
        q += RV_PSTATE_SNAP_PRODUCER_BYTES;
        n++;
    }
    RV_ASSERT(n == count);
    put32(buf + 4, rv_crc32c(0, buf + 8, len - 8));
    ps->is_dirty = false;
    ps->is_snapping = true;
    ps->bytes_since_snap = 0;
    ps->snap_ms = now_ms;
    *out = buf;
    *out_len = len;
    return 0;
}

void rv_pstate_snapshot_done(struct rv_pstate *ps, int64_t offset, int err)
{
    RV_ASSERT(ps->is_snapping);
    ps->is_snapping = false;
    if (err < 0)
        ps->is_dirty = true; /* the next checkpoint tries again (bytes_since_snap too) */
    else
        ps->snap_offset = offset;
}

int rv_pstate_snapshot_decode(struct rv_pstate *ps, const uint8_t *buf, size_t len,
                              int64_t log_start, int64_t *out_offset)
{
    RV_ASSERT(ps->pending_count == 0 && rv_pstate_producer_count(ps) == 0);
    if (len < RV_PSTATE_SNAP_HEADER_BYTES || memcmp(buf, PSTATE_SNAP_MAGIC, 4) != 0)
        return rv_errf(-EBADMSG, "snapshot: no header");
    uint32_t count = get32(buf + 12);
    if (count > RV_PSTATE_PRODUCERS_MAX ||
        len != RV_PSTATE_SNAP_HEADER_BYTES + (size_t)count * RV_PSTATE_SNAP_PRODUCER_BYTES)
        return rv_errf(-EBADMSG, "snapshot: %u producers in %zu bytes", count, len);
    if (get32(buf + 4) != rv_crc32c(0, buf + 8, len - 8))
        return rv_errf(-EBADMSG, "snapshot: CRC mismatch");
    if (get16(buf + 8) != PSTATE_SNAP_VERSION)
        return rv_errf(-EBADMSG, "snapshot: version %u", get16(buf + 8));
    int64_t offset = (int64_t)get64(buf + 16);
    if (offset < 0)
        return rv_errf(-EBADMSG, "snapshot: offset %" PRId64, offset);
    const uint8_t *q = buf + RV_PSTATE_SNAP_HEADER_BYTES;
    int rc = 0;
    for (uint32_t i = 0; i < count && rc == 0; i++, q += RV_PSTATE_SNAP_PRODUCER_BYTES) {
        int64_t id = (int64_t)get64(q);
        uint32_t batch_count = q[11];
        if (id < 0 || (int16_t)get16(q + 8) < 0 || batch_count == 0 ||
            batch_count > RV_PSTATE_BATCHES || pstate_find(ps, id) != NULL) {
            rc = rv_errf(-EBADMSG, "snapshot: producer %u is invalid", i);
            break;
        }
        struct rv_pstate_batch bs[RV_PSTATE_BATCHES];
        const uint8_t *bq = q + 32;
        for (uint32_t k = 0; k < batch_count; k++, bq += 28) {
            bs[k] = (struct rv_pstate_batch){.first_seq = (int32_t)get32(bq),
                                             .last_seq = (int32_t)get32(bq + 4),
                                             .base_offset = (int64_t)get64(bq + 8),
                                             .offset_delta = (int32_t)get32(bq + 16),
                                             .max_timestamp = (int64_t)get64(bq + 20)};
            if (bs[k].base_offset < 0 || bs[k].offset_delta < 0 ||
                bs[k].base_offset > offset - 1 - bs[k].offset_delta)
                rc = rv_errf(-EBADMSG, "snapshot: producer %u: a batch beyond the snapshot", i);
        }
        if (rc < 0 ||
            bs[batch_count - 1].base_offset + bs[batch_count - 1].offset_delta < log_start)
            continue; /* deleted since: unknown again */
        struct pstate_producer *p;
        rc = pstate_add(ps, id, &p);
        if (rc < 0)
            break;
        p->epoch = (int16_t)get16(q + 8);
        p->coordinator_epoch = (int32_t)get32(q + 12);
        p->last_seen_ms = (int64_t)get64(q + 16);
        p->txn_first_offset = (int64_t)get64(q + 24);
        for (uint32_t k = 0; k < batch_count; k++)
            pstate_push_batch(p, &bs[k]);
    }
    if (rc < 0) {
        rv_pstate_fini(ps);
        return rc;
    }
    ps->snap_offset = offset;
    *out_offset = offset;
    return 0;
}

/* DIR/<offset>.snapshot (suffix: the snapshot's or the temporary one). */
static int pstate_snap_path(char *out, size_t len, const char *dir, int64_t offset,
                            const char *suffix)
{
    return rv_idx_file_name(out, len, dir, (uint64_t)offset, suffix);
}

/* The offset of a snapshot file name "<20 digits>.snapshot"; -1 otherwise
 * (a temporary one too, with *is_tmp set). */
static int64_t pstate_snap_name(const char *name, bool *is_tmp)
{
    size_t n = strlen(name);
    *is_tmp = n == PSTATE_NAME_DIGITS + strlen(PSTATE_TMP_SUFFIX) &&
              strcmp(name + PSTATE_NAME_DIGITS, PSTATE_TMP_SUFFIX) == 0;
    if (!*is_tmp && (n != PSTATE_NAME_DIGITS + strlen(RV_PSTATE_SNAP_SUFFIX) ||
                     strcmp(name + PSTATE_NAME_DIGITS, RV_PSTATE_SNAP_SUFFIX) != 0))
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < PSTATE_NAME_DIGITS; i++) {
        if (name[i] < '0' || name[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    return v > INT64_MAX ? -1 : (int64_t)v;
}

/* The snapshot offsets of dir, descending, into a malloc'd array (*out,
 * *count); temporary files are removed. */
static int pstate_snap_list(const char *dir, int64_t **out, uint32_t *count)
{
    int fd = rv_sys_open(dir, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0)
        return rv_errf(fd, "snapshot: open directory %s", dir);
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        int rc = -errno;
        (void)rv_sys_close(fd); /* read-only */
        return rv_errf(rc, "snapshot: fdopendir %s", dir);
    }
    int64_t *offs = NULL;
    uint32_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        bool is_tmp;
        int64_t off = pstate_snap_name(de->d_name, &is_tmp);
        if (off < 0)
            continue;
        if (is_tmp) { /* a write that did not finish */
            char path[PATH_MAX];
            if (pstate_snap_path(path, sizeof(path), dir, off, PSTATE_TMP_SUFFIX) == 0)
                (void)rv_sys_unlink(path); /* never renamed: nothing refers to it */
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 4;
            int64_t *grown = realloc(offs, cap * sizeof(*offs));
            if (grown == NULL) {
                rc = -ENOMEM;
                break;
            }
            offs = grown;
        }
        offs[n++] = off;
    }
    closedir(d); /* read-only; closes fd */
    if (rc < 0) {
        free(offs);
        return rc;
    }
    for (uint32_t i = 1; i < n; i++) { /* a handful: insertion sort, descending */
        int64_t x = offs[i];
        uint32_t k = i;
        for (; k > 0 && offs[k - 1] < x; k--)
            offs[k] = offs[k - 1];
        offs[k] = x;
    }
    *out = offs;
    *count = n;
    return 0;
}

static int pstate_snap_remove(const char *dir, int64_t offset)
{
    char path[PATH_MAX];
    int rc = pstate_snap_path(path, sizeof(path), dir, offset, RV_PSTATE_SNAP_SUFFIX);
    if (rc == 0)
        rc = rv_sys_unlink(path);
    return rc == -ENOENT ? 0 : rc;
}

int rv_pstate_snapshot_write(const char *dir, int64_t offset, const uint8_t *buf, size_t len)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    int rc = pstate_snap_path(path, sizeof(path), dir, offset, RV_PSTATE_SNAP_SUFFIX);
    if (rc == 0)
        rc = pstate_snap_path(tmp, sizeof(tmp), dir, offset, PSTATE_TMP_SUFFIX);
    if (rc < 0)
        return rv_errf(rc, "snapshot: name too long in %s", dir);
    int fd = rv_sys_open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return rv_errf(fd, "%s: create", tmp);
    ssize_t w = rv_sys_pwrite(fd, buf, len, 0);
    rc = w < 0 ? (int)w : (size_t)w != len ? -ENOSPC : rv_sys_fdatasync(fd);
    int close_rc = rv_sys_close(fd);
    if (rc == 0)
        rc = close_rc;
    if (rc == 0)
        rc = rv_sys_rename(tmp, path);
    if (rc == 0)
        rc = rv_sys_fsync_dir(dir);
    if (rc < 0) {
        (void)rv_sys_unlink(tmp); /* nothing refers to it; a rename that failed left it */
        return rv_errf(rc, "%s: write", path);
    }
    /* The new one is durable: the older ones are not needed any more. */
    int64_t *offs = NULL;
    uint32_t n = 0;
    if (pstate_snap_list(dir, &offs, &n) == 0) {
        for (uint32_t i = 0; i < n; i++) {
            if (offs[i] < offset && pstate_snap_remove(dir, offs[i]) < 0)
                rv_debug("snapshot: cannot remove %s/%020" PRId64 RV_PSTATE_SNAP_SUFFIX, dir,
                         offs[i]);
        }
        free(offs);
    }
    return 0;
}

struct pstate_snap_job {
    struct rv_pstate *ps;
    const char *dir;
    int64_t offset;
    uint8_t *buf;
    size_t len;
    int rc;
    rv_pstate_saved_fn *done;
    void *arg;
};

static void pstate_snap_work(void *arg)
{
    struct pstate_snap_job *job = arg;
    job->rc = rv_pstate_snapshot_write(job->dir, job->offset, job->buf, job->len);
}

static void pstate_snap_written(void *arg)
{
    struct pstate_snap_job *job = arg;
    if (job->rc < 0)
        rv_warn("%s: producer snapshot at %" PRId64 ": %s", job->dir, job->offset,
                rv_strerror(job->rc));
    rv_pstate_snapshot_done(job->ps, job->offset, job->rc);
    rv_pstate_saved_fn *done = job->done;
    void *done_arg = job->arg;
    int rc = job->rc;
    free(job->buf);
    free(job);
    done(done_arg, rc);
}

int rv_pstate_snapshot_start(struct rv_pstate *ps, const char *dir, int64_t offset,
                             int64_t log_start, int64_t now_ms, rv_pstate_saved_fn *done, void *arg)
{
    RV_ASSERT(done != NULL);
    struct pstate_snap_job *job = malloc(sizeof(*job));
    if (job == NULL)
        return -ENOMEM;
    *job =
        (struct pstate_snap_job){.ps = ps, .dir = dir, .offset = offset, .done = done, .arg = arg};
    int rc = rv_pstate_snapshot_encode(ps, offset, log_start, now_ms, &job->buf, &job->len);
    if (rc < 0) {
        free(job);
        return rc;
    }
    rc = rv_offload(pstate_snap_work, job, pstate_snap_written);
    if (rc < 0) {
        rv_pstate_snapshot_done(ps, offset, rc);
        free(job->buf);
        free(job);
    }
    return rc;
}

int rv_pstate_snapshot_save(struct rv_pstate *ps, const char *dir, int64_t offset,
                            int64_t log_start, int64_t now_ms)
{
    uint8_t *buf;
    size_t len;
    int rc = rv_pstate_snapshot_encode(ps, offset, log_start, now_ms, &buf, &len);
    if (rc == 0) {
        rc = rv_pstate_snapshot_write(dir, offset, buf, len);
        free(buf);
        rv_pstate_snapshot_done(ps, offset, rc);
    }
    if (rc < 0)
        rv_warn("%s: producer snapshot at %" PRId64 ": %s", dir, offset, rv_strerror(rc));
    return rc;
}

/* Read a whole snapshot file (bounded) into a malloc'd buffer. */
static int pstate_snap_read(const char *dir, int64_t offset, uint8_t **out, size_t *out_len)
{
    char path[PATH_MAX];
    int rc = pstate_snap_path(path, sizeof(path), dir, offset, RV_PSTATE_SNAP_SUFFIX);
    if (rc < 0)
        return rc;
    int fd = rv_sys_open(path, O_RDONLY, 0);
    if (fd < 0)
        return rv_errf(fd, "%s: open", path);
    struct stat st;
    rc = rv_sys_fstat(fd, &st);
    uint8_t *buf = NULL;
    size_t len = rc == 0 ? (size_t)st.st_size : 0;
    if (rc == 0 && (st.st_size < 0 || len > PSTATE_SNAP_MAX))
        rc = rv_errf(-EBADMSG, "%s: %lld bytes", path, (long long)st.st_size);
    if (rc == 0 && (buf = malloc(len + 1)) == NULL)
        rc = -ENOMEM;
    if (rc == 0) {
        ssize_t r = rv_sys_pread(fd, buf, len, 0);
        rc = r < 0              ? rv_errf((int)r, "%s: read", path)
             : (size_t)r != len ? rv_errf(-EBADMSG, "%s: short read", path)
                                : 0;
    }
    (void)rv_sys_close(fd); /* read-only */
    if (rc < 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    *out_len = len;
    return 0;
}

/* ---- rebuilding from the log (blocking) ------------------------------------------------------ */

struct pstate_scan {
    struct rv_pstate *ps;
    int64_t from; /* batches ending below were in the snapshot */
    int64_t end;  /* the log end */
    uint64_t batches;
    uint64_t tracked; /* of them, batches of producers */
    uint64_t bytes;
};

static int pstate_scan_batch(void *arg, const struct rv_batch_view *v, uint64_t pos)
{
    (void)pos;
    struct pstate_scan *s = arg;
    if (v->base_offset >= s->end)
        return 1; /* past the recovered end: none should be */
    if (rv_batch_last_offset(v) < s->from)
        return 0;
    s->batches++;
    s->tracked += rv_pstate_is_tracked(v);
    s->bytes += v->size_bytes;
    int rc = rv_pstate_replay(s->ps, v);
    return rc < 0 ? rc : 0;
}

static int pstate_scan_segment(struct pstate_scan *s, const char *dir, const struct rv_seg *seg,
                               uint32_t max_batch_bytes)
{
    if (seg->size_bytes == 0 || (int64_t)seg->next_offset <= s->from)
        return 0;
    uint64_t pos =
        (int64_t)seg->base_offset < s->from ? rv_idx_lookup(&seg->idx, (uint64_t)s->from) : 0;
    if (pos >= seg->size_bytes)
        pos = 0; /* an index that does not fit the file: scan it all */
    char path[PATH_MAX];
    int rc = rv_idx_file_name(path, sizeof(path), dir, seg->base_offset, ".log");
    if (rc < 0)
        return rc;
    int fd = rv_sys_open(path, O_RDONLY, 0);
    if (fd < 0)
        return rv_errf(fd, "%s: open", path);
    uint64_t stop = 0;
    rc = rv_seg_scan_file(fd, pos, max_batch_bytes, pstate_scan_batch, s, &stop);
    (void)rv_sys_close(fd); /* read-only */
    if (rc == 1)
        rc = 0;
    if (rc == -ENOMEM || rc == -EIO)
        return rv_errf(rc, "%s: producer state scan", path);
    if (rc < 0) /* recovery cut the active segment's tail: a corrupt older one is reported */
        rv_warn("%s: producer state scan stopped at byte %" PRIu64 ": %s", path, stop,
                rv_strerror(rc));
    return 0;
}

int rv_pstate_load(struct rv_pstate *ps, const char *dir, const struct rv_seg *segs,
                   uint32_t seg_count, int64_t log_start, int64_t log_end, uint32_t max_batch_bytes,
                   struct rv_pstate_load_report *report)
{
    RV_ASSERT(rv_pstate_producer_count(ps) == 0 && ps->pending_count == 0);
    struct rv_pstate_load_report rep = {.snap_offset = -1};
    int64_t *offs = NULL;
    uint32_t n = 0;
    int rc = pstate_snap_list(dir, &offs, &n);
    if (rc < 0)
        return rc;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        if (offs[i] > log_end) { /* the log lost its tail since: stale */
            rep.snaps_rejected++;
            rv_info("%s: producer snapshot at %" PRId64 " is past the log end %" PRId64
                    "; removing it",
                    dir, offs[i], log_end);
            rc = pstate_snap_remove(dir, offs[i]);
            continue;
        }
        if (rep.snap_offset >= 0)
            continue; /* an older one: the next snapshot write removes it */
        uint8_t *buf = NULL;
        size_t len = 0;
        int64_t off = -1;
        int r = pstate_snap_read(dir, offs[i], &buf, &len);
        if (r == 0)
            r = rv_pstate_snapshot_decode(ps, buf, len, log_start, &off);
        free(buf);
        if (r == -ENOMEM || r == -EIO) {
            rc = r;
        } else if (r < 0 || off != offs[i]) {
            if (r == 0)
                rv_pstate_fini(ps); /* a file renamed by hand: its name is the offset */
            rep.snaps_rejected++;
            rv_warn("%s: producer snapshot at %" PRId64 " is unusable (%s); trying older ones", dir,
                    offs[i], r < 0 ? rv_err_msg() : "its offset differs from its name");
        } else {
            rep.snap_offset = off;
        }
    }
    free(offs);
    if (rc < 0) {
        rv_pstate_fini(ps);
        return rc;
    }
    struct pstate_scan s = {.ps = ps,
                            .from = rep.snap_offset > log_start ? rep.snap_offset : log_start,
                            .end = log_end};
    for (uint32_t i = 0; i < seg_count && rc == 0; i++)
        rc = pstate_scan_segment(&s, dir, &segs[i], max_batch_bytes);
    if (rc < 0) {
        rv_pstate_fini(ps);
        return rc;
    }
    /* A snapshot is due soon when the scan found producers, or when there
     * was none to start from (even an empty one spares the next start a
     * scan of the whole log); otherwise after RV_PSTATE_SNAP_BYTES more. */
    ps->is_dirty = s.tracked > 0 || (rep.snap_offset < 0 && s.bytes > 0);
    ps->bytes_since_snap = s.bytes;
    rep.batches = s.batches;
    rep.scanned_bytes = s.bytes;
    rep.producers = rv_pstate_producer_count(ps);
    if (report != NULL)
        *report = rep;
    return 0;
}

/* ---- queries -------------------------------------------------------------------------------- */

uint32_t rv_pstate_producer_count(const struct rv_pstate *ps)
{
    return ps->has_map ? rv_hmap_count(&ps->producers) : 0;
}

uint32_t rv_pstate_pending_count(const struct rv_pstate *ps)
{
    return ps->pending_count;
}

bool rv_pstate_get(const struct rv_pstate *ps, int64_t id, struct rv_pstate_info *out)
{
    const struct pstate_producer *p = pstate_find(ps, id);
    if (p == NULL)
        return false;
    *out = (struct rv_pstate_info){.epoch = p->epoch,
                                   .batch_count = p->batch_count,
                                   .pending_count = p->pending_count,
                                   .last_seen_ms = p->last_seen_ms,
                                   .txn_first_offset = p->txn_first_offset};
    for (uint32_t i = 0; i < p->batch_count; i++)
        out->batches[i] = p->batches[(p->batch_head + i) % RV_PSTATE_BATCHES];
    return true;
}

bool rv_pstate_check(const struct rv_pstate *ps)
{
    uint32_t n = 0;
    for (const struct pstate_producer *p = ps->lru_oldest; p != NULL; p = p->lru_next, n++) {
        if (pstate_find(ps, p->id) != p)
            return false;
        if (p->epoch == RV_PSTATE_NO_EPOCH && p->batch_count != 0)
            return false;
        uint32_t pending = 0;
        const struct pstate_pending *newest = NULL;
        for (uint32_t i = 0; i < ps->pending_count; i++) {
            const struct pstate_pending *e = pstate_pending_at(ps, i);
            if (e->p == p) {
                pending++;
                newest = e;
            }
        }
        if (pending != p->pending_count)
            return false;
        if (newest != NULL &&
            (newest->epoch != p->pending_epoch || newest->b.last_seq != p->pending_last_seq))
            return false;
    }
    return n == rv_pstate_producer_count(ps);
}
