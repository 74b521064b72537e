/*
 * storage/compact.h - log compaction (cleanup.policy=compact): keep only the
 * latest record of every key in a partition log's closed segments, as Kafka's
 * log cleaner does, tombstones included for delete.retention.ms.
 *
 * Who runs what:
 *
 *   owner shard   decides a pass is due (rv_compact_is_due), creates the job
 *                 from its segment list, hands the job to a helper thread
 *                 slice by slice, checks the list did not change meanwhile,
 *                 then has the swap run and installs the new segments
 *                 (storage/plog.c)
 *   helper        rv_compact_step (bounded slices of blocking file I/O) and
 *                 rv_compact_swap / rv_compact_discard
 *
 * A job is owned by one thread at a time (handed over through rv_offload);
 * nothing here locks.
 *
 * A pass, in Kafka's terms:
 *
 *   [ clean: compacted before | dirty: appended since | active segment ]
 *   segs[0].base          clean_offset            next_base
 *
 *   1. map: key digest (128-bit murmur3 of the key) -> latest offset, over
 *      the dirty records, capped at map_entries_max keys; when full it stops
 *      at a batch boundary (map_end) and the rest waits for the next pass
 *   2. write: every closed segment below map_end, in groups of adjacent
 *      segments that fit segment.bytes together (small ones merge), is
 *      rewritten into "<base>.<end>.log.cleaned" keeping a record when
 *        - its offset is at or past map_end (not covered by the map), or
 *        - the map holds no later offset for its key, and it is not a
 *          tombstone whose delete horizon has passed
 *      (records without a key are dropped: a compacted topic refuses them
 *      at append time). A batch whose records all stay is copied as it is;
 *      one that lost records is rebuilt with the survivors' bytes, keeping
 *      its base offset, lastOffsetDelta, producer fields and codec (offsets
 *      are preserved and may have gaps, which readers skip); an empty one is
 *      dropped. Control batches stay as they are.
 *   3. swap, per output segment "<base>.<end>": rename .cleaned to .swap
 *      (the commit point), fsync the directory, remove the index files of
 *      every old segment whose base lies in [base, end) and the .log files
 *      other than base's, fsync, rename .swap over <base>.log, fsync, save
 *      the new index files. Then the point file records the new clean
 *      offset. After a crash, rv_compact_recover removes .cleaned files
 *      (never committed) and completes every .swap the same way (the old
 *      segments' index files are gone, so recovery rebuilds the index).
 *
 * Tombstones (null values) are kept delete.retention.ms after the pass that
 * first kept them: that pass stamps the batch with a delete horizon (KIP-534:
 * attribute bit 6 set, baseTimestamp = now + delete.retention.ms, record
 * timestamp deltas re-encoded against it so record timestamps stay what they
 * were); a later pass drops its tombstones once the horizon has passed, and
 * the earliest pending horizon makes a pass due by itself.
 */
#ifndef RV_STORAGE_COMPACT_H
#define RV_STORAGE_COMPACT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/assert.h"
#include "storage/batch.h"
#include "storage/seg.h"

/* Limits and constants. */

#define RV_COMPACT_POINT_FILE          "compact-point" /* clean offset and next horizon */
#define RV_COMPACT_MAP_ENTRIES_DEFAULT (1u << 19)      /* keys per pass (map <= 24 MiB) */
#define RV_COMPACT_MAP_ENTRIES_MIN     1024u
#define RV_COMPACT_STEP_BYTES          (16u << 20)    /* input one helper slice reads, at most */
#define RV_COMPACT_NO_HORIZON          INT64_MAX      /* no tombstone waits for its horizon */
#define RV_COMPACT_CLEANED_SUFFIX      ".log.cleaned" /* "<base>.<end>" + suffix */
#define RV_COMPACT_SWAP_SUFFIX         ".log.swap"

/* Types. */

typedef struct rv_compact rv_compact_t; /* one pass over one log */

/* What a log keeps between passes (the point file). */
struct rv_compact_point {
    uint64_t clean_offset; /* offsets below were compacted by an earlier pass */
    int64_t horizon_ms;    /* earliest delete horizon of a kept tombstone, or NO_HORIZON */
};

struct rv_compact_opts {
    const char *dir;           /* the partition directory (copied) */
    const struct rv_seg *segs; /* the closed segments, ascending (fields copied) */
    uint32_t seg_count;        /* >= 1 */
    uint64_t next_base;        /* base of the segment after them (the active one) */
    struct rv_compact_point point;
    uint64_t segment_bytes;      /* an output segment holds at most this much input */
    uint32_t index_interval;     /* of the new indexes */
    uint32_t max_batch_bytes;    /* what a batch may claim when read */
    uint32_t map_entries_max;    /* keys the map may hold (>= RV_COMPACT_MAP_ENTRIES_MIN) */
    int64_t delete_retention_ms; /* tombstones live this long after their first pass */
    int64_t now_ms;              /* the pass's clock */
};

/* One new segment replacing opts.segs[first, first + count). */
struct rv_compact_output {
    uint32_t first;
    uint32_t count;
    uint64_t end;      /* the base of the segment after them */
    bool is_swapped;   /* in place on disk */
    struct rv_seg seg; /* its bookkeeping and index (the shard takes it) */
};

struct rv_compact_stats {
    uint64_t bytes_read;      /* of the segments below map_end (all are read) */
    uint64_t bytes_written;   /* of the segments that replace changed ones */
    uint64_t records_read;    /* records of rewritten batches looked at */
    uint64_t records_dropped; /* superseded, expired tombstones, no key */
    uint64_t tombstones_dropped;
    uint64_t null_keys_dropped;
    uint64_t batches_rebuilt;
    uint64_t batches_dropped;
    uint32_t keys;         /* in the map */
    uint32_t segments_in;  /* replaced (one where nothing changes stays) */
    uint32_t segments_out; /* written in their place */
    uint64_t map_end;      /* offsets below are compacted now */
};

/* Lifecycle (the owner shard, or any thread for tests and tools). */

/* Plan a pass: copies what it needs of opts. -ENOMEM, -EINVAL. On failure
 * *out is untouched. */
RV_MUST_CHECK int rv_compact_create(rv_compact_t **out, const struct rv_compact_opts *opts);
/* Free the job: closes its files, removes none (see rv_compact_discard).
 * Index memory of outputs the shard did not take is freed. NULL is a no-op. */
void rv_compact_destroy(rv_compact_t *c);

/* Operations (blocking: a helper thread, or tests and tools). */

/* One slice: read at most RV_COMPACT_STEP_BYTES, building the map then the
 * .cleaned files. Returns 1 (call again), 0 (built: every output is written
 * and fdatasynced), or -errno (the job failed; discard it). */
RV_MUST_CHECK int rv_compact_step(rv_compact_t *c);
/* Put the built outputs in place (see the file comment) and write the point
 * file. Returns 0 or -errno. After an error rv_compact_is_committed says
 * whether some output was committed: then the log's files are between two
 * states that only recovery (reopening the log) settles. */
RV_MUST_CHECK int rv_compact_swap(rv_compact_t *c);
/* Remove the .cleaned files of an abandoned job (best effort). */
void rv_compact_discard(rv_compact_t *c);

/* Queries. */

bool rv_compact_is_committed(const rv_compact_t *c);
uint32_t rv_compact_output_count(const rv_compact_t *c);
/* Output i; the caller may move its seg out (then it must zero seg.idx's
 * arrays so destroy does not free them: rv_compact_output_take). */
const struct rv_compact_output *rv_compact_output_get(const rv_compact_t *c, uint32_t i);
/* Move output i's segment bookkeeping (and its index memory) to *out. */
void rv_compact_output_take(rv_compact_t *c, uint32_t i, struct rv_seg *out);
/* The point to keep after a successful swap, and the pass's counters. */
struct rv_compact_point rv_compact_next_point(const rv_compact_t *c);
const struct rv_compact_stats *rv_compact_get_stats(const rv_compact_t *c);

/*
 * Owner shard: whether a pass is due for closed segments segs[0, count) with
 * the log's point: a tombstone's horizon has passed, or the dirty bytes
 * (segments ending past the clean offset) are at least min_dirty_ratio of all
 * closed bytes (and some are dirty).
 */
bool rv_compact_is_due(const struct rv_seg *segs, uint32_t count,
                       const struct rv_compact_point *point, double min_dirty_ratio,
                       int64_t now_ms);

/* Recovery (blocking, before the log's segments are listed): remove .cleaned
 * files, complete every .swap, and read the point file into *out (a missing
 * one, or one that does not parse, reads as nothing cleaned, no horizon).
 * -errno from the file system. */
RV_MUST_CHECK int rv_compact_recover(const char *dir, struct rv_compact_point *out);

/* Append validation for a compacted topic: every record of the batch has a
 * key (control batches are not looked at). records/len: the batch's records,
 * decompressed. 0, or -EINVAL (Kafka: INVALID_RECORD). */
RV_MUST_CHECK int rv_compact_check_keys(const struct rv_batch_view *v, const uint8_t *records,
                                        size_t len);

#endif /* RV_STORAGE_COMPACT_H */
