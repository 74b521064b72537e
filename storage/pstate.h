/*
 * storage/pstate.h - the idempotent producers of one partition log: per
 * producer its epoch and its last RV_PSTATE_BATCHES batches, so a partition
 * answers a retried batch with its original offset instead of writing it
 * twice, and refuses gaps and stale epochs (Kafka's ProducerStateManager).
 *
 * Owner: the partition log (storage/plog.c) embeds one; everything runs on
 * the log's owner shard, except rv_pstate_load and the snapshot file
 * functions, which block (opening a log, helper threads).
 *
 * Two layers of state per producer:
 *
 *   confirmed  batches that are in the log (applied: below its end); this is
 *              what a snapshot holds and what a restart rebuilds
 *   in flight  batches checked and handed to the WAL but not yet applied
 *              (rv_pstate_assign); the newest of them is what the next batch
 *              of the producer must follow. The WAL completes a log's appends
 *              in order, so they leave the partition's FIFO at its head:
 *              rv_pstate_confirm (applied) or rv_pstate_abort (the WAL write
 *              failed: forgotten, the confirmed state is untouched)
 *
 * Checking a batch of producer P (rv_pstate_check_batch), in Kafka's order:
 *   - P unknown (never seen, or its last batch is below the log start):
 *     taken at any sequence (Kafka 2.5+, KIP-360);
 *   - epoch below P's: -ESTALE (INVALID_PRODUCER_EPOCH);
 *   - same epoch, same sequence range as one of P's last 5 batches in the
 *     log: RV_PSTATE_DUPLICATE with that batch's base offset; as one of P's
 *     batches in flight: -EAGAIN (answer once it is in the log);
 *   - same epoch, first sequence not the last one + 1 (wrapping at
 *     INT32_MAX to 0): -EILSEQ (OUT_OF_ORDER_SEQUENCE_NUMBER);
 *   - a newer epoch must start at sequence 0: -EILSEQ otherwise.
 *
 * Snapshots: DIR/<offset, 20 digits>.snapshot holds the confirmed state of
 * every producer as of log offset `offset` (a log end), little-endian, with a
 * CRC-32C; a restart reads the newest usable one and scans only the batches
 * at or past its offset. One that is corrupt, or beyond the recovered log end
 * (a power loss cut the segment tail), is not used: the state is then rebuilt
 * by scanning the log from its start.
 *
 *   u8[4] "RVPS"  u32 crc32c (of every byte after it)  u16 version (1)
 *   u16 0  u32 producer count  i64 offset  i64 0
 *   per producer (RV_PSTATE_SNAP_PRODUCER_BYTES): i64 id, i16 epoch,
 *     u8 flags (0), u8 batch count, i32 coordinator epoch, i64 last seen (ms),
 *     i64 first offset of the open transaction (-1: none), then 5 batches
 *     (oldest first, count valid): i32 first seq, i32 last seq,
 *     i64 base offset, i32 last offset delta, i64 max timestamp
 *
 * Transactions (a later issue) fit here: epochs are per producer, batches
 * carry the transactional attribute, and each producer keeps the first offset
 * of its open transaction (set by a transactional batch, cleared by a control
 * batch). Nothing reads them yet.
 */
#ifndef RV_STORAGE_PSTATE_H
#define RV_STORAGE_PSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/assert.h"
#include "core/hmap.h"
#include "storage/batch.h"
#include "storage/seg.h"

/* Limits and constants. */

#define RV_PSTATE_BATCHES       5          /* batches remembered per producer (Kafka's) */
#define RV_PSTATE_NO_EPOCH      (-1)       /* a producer known by id only */
#define RV_PSTATE_PENDING_MAX   4096       /* batches in flight per partition */
#define RV_PSTATE_PRODUCERS_MAX (1u << 16) /* producers per partition (LRU beyond) */
/* A producer with no batch for this long is forgotten at a snapshot (Kafka's
 * producer.id.expiration.ms default). Measured by the broker's clock when
 * its last batch was appended, or recovered at a start, not by the batches'
 * own timestamps: a producer writing old CreateTime records keeps its state. */
#define RV_PSTATE_EXPIRE_MS (24ll * 3600 * 1000)
/* A snapshot is due once the state changed and this much was appended or this
 * much time passed since the last one. */
#define RV_PSTATE_SNAP_BYTES          (64ull << 20)
#define RV_PSTATE_SNAP_MS             30000
#define RV_PSTATE_SNAP_HEADER_BYTES   32
#define RV_PSTATE_SNAP_PRODUCER_BYTES (32 + RV_PSTATE_BATCHES * 28)
#define RV_PSTATE_SNAP_SUFFIX         ".snapshot"

/* rv_pstate_check_batch's answer for a batch already in the log. */
#define RV_PSTATE_DUPLICATE 1

/* Types. */

/* One batch of a producer, as remembered. */
struct rv_pstate_batch {
    int32_t first_seq;
    int32_t last_seq;     /* first_seq + offset_delta, wrapped */
    int64_t base_offset;  /* its first offset in the log */
    int32_t offset_delta; /* lastOffsetDelta: last offset - base offset */
    int64_t max_timestamp;
};

struct pstate_producer;
struct pstate_pending;

/* The state of one partition (fields private to storage/pstate.c). */
struct rv_pstate {
    struct rv_hmap producers;           /* producer id -> struct pstate_producer * */
    bool has_map;                       /* producers is initialised (first producer) */
    struct pstate_producer *lru_oldest; /* by last batch, for the cap */
    struct pstate_producer *lru_newest;
    struct pstate_pending *pending; /* ring of batches in flight, oldest at head */
    uint32_t pending_cap;
    uint32_t pending_head;
    uint32_t pending_count;
    int64_t snap_offset;       /* offset of the last snapshot read or written, -1 */
    int64_t snap_ms;           /* wall clock of the last snapshot (0: none since start) */
    uint64_t bytes_since_snap; /* bytes appended since (every batch) */
    bool is_dirty;             /* confirmed state changed since the last snapshot */
    bool is_snapping;          /* a snapshot write is in flight (one at a time) */
};

/* A duplicate's original (rv_pstate_check_batch). */
struct rv_pstate_dup {
    int64_t base_offset;
    int64_t last_offset;
    int64_t max_timestamp;
};

/* What rv_pstate_load did (logs and tests). */
struct rv_pstate_load_report {
    int64_t snap_offset;     /* the snapshot used, or -1 (rebuilt from the log start) */
    uint32_t snaps_rejected; /* corrupt, or beyond the log end */
    uint64_t batches;        /* batches scanned after the snapshot */
    uint64_t scanned_bytes;
    uint32_t producers;
};

/* The producer state one producer has (queries, tests). */
struct rv_pstate_info {
    int16_t epoch;
    uint32_t batch_count;
    struct rv_pstate_batch batches[RV_PSTATE_BATCHES]; /* oldest first */
    uint32_t pending_count;
    int64_t last_seen_ms;     /* wall clock of its last batch (appended, or recovered) */
    int64_t txn_first_offset; /* -1: no open transaction */
};

/* Lifecycle. */

/* An empty state (allocates nothing until the first producer). */
void rv_pstate_init(struct rv_pstate *ps);
/* Free everything. The state must have nothing in flight. NULL ok. */
void rv_pstate_fini(struct rv_pstate *ps);

/* Operations (owner shard). */

/* Whether a batch carries producer state (an idempotent or transactional
 * producer's: producer id >= 0). Only those go through check and assign. */
static inline bool rv_pstate_is_tracked(const struct rv_batch_view *v)
{
    return v->producer_id >= 0;
}

/*
 * Check batch v (tracked), about to be appended at the log end, against its
 * producer's state (see the top of this file). log_start: the log's start
 * offset (a producer whose last batch lies below it is unknown again).
 * Returns 0 (append it, then call rv_pstate_assign once the WAL took it, or
 * nothing if it did not: check changes nothing a later check would see),
 * RV_PSTATE_DUPLICATE (do not append; *out_dup is the original), -EAGAIN (a
 * duplicate of a batch in flight: ask again once it completed), -ESRCH,
 * -ESTALE, -EILSEQ (refused, with rv_errf context), -ENOBUFS (too many
 * batches in flight), -ENOMEM.
 */
RV_MUST_CHECK int rv_pstate_check_batch(struct rv_pstate *ps, const struct rv_batch_view *v,
                                        int64_t log_start, struct rv_pstate_dup *out_dup);

/* The batch v that rv_pstate_check_batch just accepted was handed to the WAL at
 * base_offset (max_timestamp: its max timestamp as written): it is in flight
 * now. Cannot fail (check reserved the room). */
void rv_pstate_assign(struct rv_pstate *ps, const struct rv_batch_view *v, int64_t base_offset,
                      int64_t max_timestamp);

/* The oldest batch in flight (at base_offset) is in the log. */
void rv_pstate_confirm(struct rv_pstate *ps, int64_t base_offset);

/* A batch of size_bytes (tracked or not) is in the log now: snapshots move
 * with the log even when no producer writes to it, so a restart never scans
 * more than about RV_PSTATE_SNAP_BYTES. */
void rv_pstate_note_applied(struct rv_pstate *ps, uint32_t size_bytes);

/* The batch in flight at base_offset failed (the WAL write): forget it. */
void rv_pstate_abort(struct rv_pstate *ps, int64_t base_offset);

/*
 * A batch read back from the log (recovery: a segment scan or WAL replay),
 * in offset order: its producer's confirmed state follows it without checks.
 * Untracked batches are ignored. 0 or -ENOMEM.
 */
RV_MUST_CHECK int rv_pstate_replay(struct rv_pstate *ps, const struct rv_batch_view *v);

/* Snapshots. */

/* Whether a snapshot is worth writing now (none in flight, and either
 * RV_PSTATE_SNAP_BYTES were appended since the last one, or the state
 * changed and RV_PSTATE_SNAP_MS passed or there was none since start). */
bool rv_pstate_snapshot_due(const struct rv_pstate *ps, int64_t now_ms);

/* Whether the last snapshot is behind (the state changed, or more than
 * RV_PSTATE_SNAP_BYTES / 16 were appended since) and none is in flight: what
 * a closing or recovered log writes. */
bool rv_pstate_needs_snapshot(const struct rv_pstate *ps);

/*
 * Encode the confirmed state as of log offset `offset` (the log end, with no
 * batch at or past it confirmed) into a malloc'd buffer (*out, *out_len; the
 * caller frees it). Producers whose last batch lies below log_start, and
 * those expired at now_ms, are dropped first. Marks the state clean and a
 * snapshot in flight until rv_pstate_snapshot_done. -ENOMEM (nothing
 * changed).
 */
RV_MUST_CHECK int rv_pstate_snapshot_encode(struct rv_pstate *ps, int64_t offset, int64_t log_start,
                                            int64_t now_ms, uint8_t **out, size_t *out_len);

/* The snapshot write of rv_pstate_snapshot_encode finished with err (0 or
 * -errno; a failed one leaves the state dirty for the next try). */
void rv_pstate_snapshot_done(struct rv_pstate *ps, int64_t offset, int err);

typedef void rv_pstate_saved_fn(void *arg, int err);

/*
 * Owner shard: snapshot the state as of log offset `offset` (encoded here)
 * and write it to dir on a helper thread (rv_offload); done(arg, 0 or
 * -errno) runs back on this shard once written (a failure is logged). dir
 * must stay valid until then. Returns 0, or -errno when nothing was started.
 */
RV_MUST_CHECK int rv_pstate_snapshot_start(struct rv_pstate *ps, const char *dir, int64_t offset,
                                           int64_t log_start, int64_t now_ms,
                                           rv_pstate_saved_fn *done, void *arg);

/* Blocking (close, recovery): encode and write the snapshot as of `offset`
 * now. 0 or -errno (logged). */
RV_MUST_CHECK int rv_pstate_snapshot_save(struct rv_pstate *ps, const char *dir, int64_t offset,
                                          int64_t log_start, int64_t now_ms);

/*
 * Blocking (helper thread, close): write buf as DIR/<offset>.snapshot through
 * "<name>.tmp" (fdatasync, rename, fsync the directory), then remove older
 * snapshots of dir. 0 or -errno (no file of that name is left half written).
 */
RV_MUST_CHECK int rv_pstate_snapshot_write(const char *dir, int64_t offset, const uint8_t *buf,
                                           size_t len);

/*
 * Decode a snapshot (untrusted bytes) into ps, which must be empty; producers
 * whose last batch lies below log_start are skipped. Sets *out_offset.
 * -EBADMSG (corrupt: nothing is kept), -ENOMEM.
 */
RV_MUST_CHECK int rv_pstate_snapshot_decode(struct rv_pstate *ps, const uint8_t *buf, size_t len,
                                            int64_t log_start, int64_t *out_offset);

/*
 * Blocking (opening a log): rebuild the state of the log in dir, whose
 * recovered segments are segs[0..seg_count) holding log_start..log_end: the
 * newest snapshot at or below log_end that decodes, then every batch at or
 * past its offset (all of them from log_start when none is usable). Stale
 * snapshots (beyond log_end) and leftover temporary files are removed. ps
 * must be empty. 0 or -errno (I/O, -ENOMEM); a corrupt snapshot is reported,
 * not an error. report may be NULL.
 */
RV_MUST_CHECK int rv_pstate_load(struct rv_pstate *ps, const char *dir, const struct rv_seg *segs,
                                 uint32_t seg_count, int64_t log_start, int64_t log_end,
                                 uint32_t max_batch_bytes, struct rv_pstate_load_report *report);

/* Queries. */

/* Producers with state (known or in flight). */
uint32_t rv_pstate_producer_count(const struct rv_pstate *ps);
/* Batches in flight. */
uint32_t rv_pstate_pending_count(const struct rv_pstate *ps);
/* Copy producer `id`'s state; false when there is none. */
bool rv_pstate_get(const struct rv_pstate *ps, int64_t id, struct rv_pstate_info *out);
/* The sequence `delta` after seq, wrapping from INT32_MAX to 0 as Kafka's. */
int32_t rv_pstate_seq_add(int32_t seq, int32_t delta);
/* Invariants (debug checks). */
bool rv_pstate_check(const struct rv_pstate *ps);

#endif /* RV_STORAGE_PSTATE_H */
