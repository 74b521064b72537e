/*
 * storage/seg.h - segment files of a partition log: naming, listing, scanning,
 * recovery and removal.
 *
 * A partition directory holds segments "<base offset, 20 digits>.log" with
 * their ".index" and ".timeindex" (storage/idx.h). A .log file is Kafka
 * RecordBatch v2 batches back to back, exactly as they travel on the wire.
 *
 * Everything here is blocking file work: it runs when a log is opened, or on a
 * helper thread through rv_offload. The hot path (appending and reading at
 * known positions) goes through the shard's ring in storage/plog.c and only
 * uses the struct below as bookkeeping.
 */
#ifndef RV_STORAGE_SEG_H
#define RV_STORAGE_SEG_H

#include <stdbool.h>
#include <stdint.h>

#include "core/assert.h"
#include "storage/batch.h"
#include "storage/idx.h"

#define RV_SEG_NAME_DIGITS 20

struct rv_seg {
    uint64_t base_offset;     /* first offset the segment may hold */
    uint64_t next_offset;     /* one past the last offset held (== base when empty) */
    uint64_t size_bytes;      /* bytes of valid batches */
    int64_t max_timestamp_ms; /* largest batch max timestamp, -1 when empty */
    int64_t created_ms;       /* wall clock of the first append (segment.ms rolls) */
    bool is_damaged;          /* RV_SEG_SCAN_CLOSED found a damaged batch and kept it:
                                 reads meeting it fail (storage/plog.c) */
    struct rv_idx idx;        /* offset and time index */
};

/* What recovery found and did, for logs and tests. */
struct rv_seg_recovery {
    uint64_t batches;         /* valid batches in the scanned range */
    uint64_t scanned_bytes;   /* bytes read and checked */
    uint64_t truncated_bytes; /* invalid tail cut off (0 when clean) */
    uint64_t damaged_bytes;   /* RV_SEG_SCAN_CLOSED: bytes from the first invalid batch
                                 to the end, kept in the file (not cut) */
    bool is_zero_tail;        /* what was cut was zeros only: the padding of a direct
                                 write (storage/plog.c) after a crash, not damage */
    bool is_index_rebuilt;    /* rebuilt from the log: FULL mode, or the index files
                                 were missing, invalid or did not match the log */
    int tail_error;           /* why the scan stopped early: 0; -ENODATA (the file
                                 ends inside a batch); -EBADMSG (corrupt, or offsets
                                 go backwards or leave the segment); or another
                                 rv_batch_parse code (-EMSGSIZE...) */
};

enum rv_seg_scan_mode {
    RV_SEG_SCAN_TAIL, /* trust the index; check batches after its last entry */
    RV_SEG_SCAN_FULL, /* check every batch (unclean shutdown, active segment) */
    /* TAIL for a closed segment (synced at its roll, so damage there is not a
     * torn write): an invalid batch is reported but not cut; the file keeps
     * its bytes, size_bytes covers them and is_damaged is set. Zeros after the
     * data (a direct write's padding) are cut as in TAIL. */
    RV_SEG_SCAN_CLOSED,
};

/* Called for each valid batch in order; return non-zero to stop the scan. */
typedef int rv_seg_batch_fn(void *arg, const struct rv_batch_view *batch, uint64_t pos);

/* Lifecycle of the bookkeeping struct (no file is touched). */
void rv_seg_init(struct rv_seg *seg, uint64_t base_offset, uint32_t index_interval_bytes);
void rv_seg_fini(struct rv_seg *seg);

/*
 * Bases of the segments in dir_path, ascending, into a malloc'd array (*out,
 * *count; free() it). Files that are not segment logs are ignored; a segment
 * name that does not parse is logged and ignored. -ENOENT when the directory
 * does not exist.
 */
RV_MUST_CHECK int rv_seg_list(const char *dir_path, uint64_t **out, uint32_t *count);

/* Create an empty segment file (and nothing else). -EEXIST if it exists. */
RV_MUST_CHECK int rv_seg_create(const char *dir_path, uint64_t base_offset);

/*
 * Open and recover segment `seg->base_offset` in dir_path: load its index
 * (rebuild from the .log when missing or invalid, and save it), scan the
 * batches the mode asks for, truncate the file after the last valid batch
 * (fsynced), and fill next_offset, size_bytes, max_timestamp_ms. A batch
 * "is valid" when rv_batch_parse accepts it and its base offset is at least
 * the previous batch's next offset. Never leaves a corrupt tail in place.
 * max_batch_bytes bounds what a batch may claim (a batch above it is cut: pass
 * the largest size ever accepted, not a lowered current limit). TAIL mode
 * falls back to a full scan when the index is missing, invalid, or its last
 * entry does not name a valid batch with that offset. The index files are
 * saved when the index was rebuilt or the tail changed. Returns 0 or -errno
 * (-ENOENT: no .log; -EFBIG: a .log of 4 GiB or more; -EIO...); on failure the
 * counters are untouched and the index is empty, and running recovery again
 * gives the result a successful run would have given.
 */
RV_MUST_CHECK int rv_seg_recover(struct rv_seg *seg, const char *dir_path,
                                 enum rv_seg_scan_mode mode, uint32_t max_batch_bytes,
                                 struct rv_seg_recovery *report);

/* Visit every valid batch of a .log file from byte position `pos`; stops at
 * the first invalid one (returned as its rv_batch_parse code, or -ENODATA when
 * the file ends inside it), at the end (0), or when fn returns non-zero (that
 * value). *stop_pos is then the position of that invalid batch, the end, or
 * the batch fn stopped at. A read error is returned as its -errno; -EINVAL when
 * pos is past the end. "Valid" here is rv_batch_parse's verdict only (offsets
 * are the caller's to check). Reads with pread in 1 MiB windows (a batch larger
 * than that whole, up to max_batch_bytes). Used by verify and dump. */
RV_MUST_CHECK int rv_seg_scan_file(int fd, uint64_t pos, uint32_t max_batch_bytes,
                                   rv_seg_batch_fn *fn, void *arg, uint64_t *stop_pos);

/* Remove the .log, .index and .timeindex of a segment (missing files are fine),
 * then fsync the directory. */
RV_MUST_CHECK int rv_seg_remove(const char *dir_path, uint64_t base_offset);

#endif /* RV_STORAGE_SEG_H */
