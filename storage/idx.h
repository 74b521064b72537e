/*
 * storage/idx.h - the sparse offset index and time index of one segment.
 *
 * In memory: growable arrays, appended as the segment grows (amortised, not per
 * record: one entry per index_interval bytes). On disk, Kafka's layouts:
 *   <base>.index      8-byte entries: int32 BE relative offset, int32 BE position
 *   <base>.timeindex 12-byte entries: int64 BE timestamp, int32 BE relative offset
 * Relative offset = offset - segment base offset (fits 32 bits: a segment never
 * spans more than 2^31 offsets). An offset entry names the first offset of a
 * batch and that batch's byte position; entries strictly increase in both.
 * A time entry (ts, rel) says: records with timestamp >= ts are at offsets >=
 * base + rel; timestamps strictly increase.
 *
 * Owned by the shard that owns the partition; no locking.
 */
#ifndef RV_STORAGE_IDX_H
#define RV_STORAGE_IDX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/assert.h"

#define RV_IDX_ENTRY_BYTES  8
#define RV_TIDX_ENTRY_BYTES 12

struct rv_idx_entry {
    uint32_t rel_offset; /* first offset of the batch - segment base */
    uint32_t pos;        /* byte position of the batch in the .log file */
};

struct rv_tidx_entry {
    int64_t timestamp_ms; /* largest batch max timestamp before the next entry's
                             offset (the last entry: of all); strictly increasing */
    uint32_t rel_offset;  /* an offset at or before the first record with ts >= it */
};

struct rv_idx {
    uint64_t base_offset;
    uint32_t interval_bytes;   /* add an offset entry after this many bytes */
    uint32_t bytes_since_last; /* bytes appended since the last offset entry */
    struct rv_idx_entry *entries;
    uint32_t count;
    uint32_t cap;
    struct rv_tidx_entry *tentries;
    uint32_t tcount;
    uint32_t tcap;
    uint32_t changes;       /* bumped by every change of the entries */
    uint32_t saved_changes; /* `changes` when the files last matched the entries */
};

/* Whether the files hold what the entries say (nothing to save). An index
 * that was never saved nor loaded counts as saved while it is empty. */
static inline bool rv_idx_is_saved(const struct rv_idx *idx)
{
    return idx->changes == idx->saved_changes;
}

/* Lifecycle: an empty index. Cannot fail (arrays grow on first append). */
void rv_idx_init(struct rv_idx *idx, uint64_t base_offset, uint32_t interval_bytes);
void rv_idx_fini(struct rv_idx *idx);
/* Forget every entry, keep the memory. */
void rv_idx_reset(struct rv_idx *idx);

/*
 * Account for a batch appended at byte `pos` whose first offset is `first`,
 * with max timestamp max_ts_ms, size `bytes`. Adds an offset entry when
 * interval_bytes have passed since the last one (the very first batch always
 * gets one). When max_ts_ms exceeds the last time entry, a time entry at the
 * last offset entry's offset holds it (the existing one there is raised), so
 * the time index is as sparse as the offset index. Batches come in order;
 * noting the batch of the last offset entry again (tail recovery starts
 * there) adds no offset entry and re-notes the time entries from there on.
 * -ENOMEM when an array cannot grow (the index stays valid, only sparser).
 */
RV_MUST_CHECK int rv_idx_note_batch(struct rv_idx *idx, uint64_t first, uint32_t pos,
                                    uint32_t bytes, int64_t max_ts_ms);

/* The byte position to start scanning at for `offset`: the position of the
 * last entry whose offset <= offset (0 when none). */
uint32_t rv_idx_lookup(const struct rv_idx *idx, uint64_t offset);
/* The offset to start scanning at for timestamp ts: the offset of the first
 * time entry with timestamp >= ts, or -1 when every entry is older (the
 * caller then scans from the last entry's offset or answers "none"). */
int64_t rv_idx_lookup_time(const struct rv_idx *idx, int64_t ts_ms);
/* Drop entries at or past byte position `pos` / at or past `offset` (after a
 * truncation). */
void rv_idx_truncate(struct rv_idx *idx, uint64_t offset, uint32_t pos);

/* Files (blocking: call at start-up or through rv_offload). */

/* Write both index files for segment `base` in dir_path (.index, .timeindex),
 * replacing old ones crash-safely: each goes to "<name>.tmp", is fdatasynced
 * and renamed over <name>; then the directory is fsynced. On failure each file
 * holds its old or its new entries, whole, and no .tmp is left. The caller
 * records success with idx->saved_changes = (changes when it saved). */
RV_MUST_CHECK int rv_idx_save(const struct rv_idx *idx, const char *dir_path);
/*
 * Load both files, checking that entries increase, relative offsets and
 * positions fit (positions < log_size_bytes), and every entry names a batch
 * boundary only as far as the file layout allows (the caller verifies the tail
 * by scanning). Returns 0; -ENOENT when a file is missing; -EBADMSG when a file
 * is invalid (the caller rebuilds by scanning the .log). On error idx is reset.
 */
RV_MUST_CHECK int rv_idx_load(struct rv_idx *idx, const char *dir_path, uint64_t log_size_bytes);

/* "<dir>/<base as 20 digits><suffix>" into out; -ENAMETOOLONG. */
RV_MUST_CHECK int rv_idx_file_name(char *out, size_t len, const char *dir_path, uint64_t base,
                                   const char *suffix);

#endif /* RV_STORAGE_IDX_H */
