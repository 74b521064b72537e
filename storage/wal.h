/*
 * storage/wal.h - the write-ahead log of one shard, with group commit.
 *
 * Every append of every partition of a shard goes to that shard's WAL first;
 * an acks=all append completes only when the group commit holding it is on
 * disk (one fdatasync for every append of the group, whatever its partition).
 *
 * Files: DATA/wal/shard-<n>/<start lsn, 20 digits>.wal, preallocated to
 * file_bytes. The LSN is a byte position in the shard's endless WAL stream; a
 * record at LSN x sits at byte x - start in the file named start. A record is
 *
 *   u32 crc32c   CRC-32C of everything after this field (header and payload)
 *   u32 len      payload bytes
 *   u8  type     RV_WAL_* (what the payload is)
 *   u8  flags    0
 *   u16 reserved 0
 *   u64 lsn      its own LSN (catches stale bytes in reused space)
 *   u64 key      the partition it belongs to (storage/plog.h), or 0
 *   ... payload
 *
 * little-endian. Replay reads records in order from a checkpoint LSN and stops
 * at the first one that is not valid: all-zero bytes are the clean end of a
 * preallocated file, and so is the first invalid record of a file where the
 * next file starts (a reused file rolled before it was full: its old records
 * follow); anything else is a torn or corrupt tail, which is cut (reported),
 * together with any later file.
 *
 * Group commit: appends made during one reactor turn join the open group; a
 * group is written with one write when a write slot is free (buffered: one
 * group at a time, when the previous one finished; direct I/O: up to
 * RV_WAL_DIRECT_WRITES groups at once), or with group_window_us after that
 * long if it is still small. Groups complete strictly in LSN order; one that
 * asked for a sync waits for an fdatasync issued after its write completed
 * (one fdatasync covers every group written by then). At most RV_WAL_GROUPS
 * groups are open or in flight; beyond that appends get -ENOBUFS
 * (backpressure). A failed write fails every append of its group and of every
 * later group (once no write is in flight), takes their LSNs back, and zeros
 * are written over every byte a write was issued for from that group on
 * before anything else is written there: nothing refused can come back at
 * replay. A failed fdatasync is sticky: the WAL refuses every later append
 * with -EIO (a failed fsync cannot be retried safely: the kernel may have
 * dropped the dirty pages); so is a failure to write those zeros.
 *
 * Direct I/O (cfg.io, the default where the filesystem takes O_DIRECT): the
 * records of a group are copied into the group's 4 KiB-aligned staging buffer
 * as they are appended, and the group is written with O_DIRECT, so the WAL
 * never enters the page cache (it is read back only at recovery). Every group
 * then starts and ends on a 4 KiB boundary of its file: a group is closed with
 * an RV_WAL_PAD record (zeros) up to the next boundary, which replay skips.
 * At open the current file is cut at the end LSN and extended again, so no
 * stale group can follow new appends (after a power loss a group may be
 * missing while a later one of the several written at once reached the disk);
 * an end off a boundary (left by a buffered WAL or a cut tail) starts a new
 * file at that LSN instead. One copy either way: direct I/O trades
 * the kernel's copy into the page cache (and its reclaim and writeback) for
 * ours into the staging buffer; docs/benchmarks.md has the measurement.
 *
 * Rolling: when a group does not fit in the current file, the file is
 * fdatasynced, the spare file (preallocated in the background) is renamed to
 * its LSN name, and writing continues there. A file is deleted once a
 * checkpoint covers all of it (rv_wal_release); under direct I/O up to
 * RV_WAL_RECYCLE_MAX of them are kept instead (free-<lsn>.wal.tmp) and become
 * the next spares: their blocks are written already, so direct writes go over
 * them at full speed with no zero-filling of new files. Their old records are
 * never replayed (each record holds its own LSN); a clean close writes a zero
 * block where the records end, and after a crash replay cuts the old bytes
 * there as a torn tail.
 *
 * Threads: rv_wal_open and rv_wal_close block and run before/after the shard
 * serves; everything else runs on the owner shard only.
 */
#ifndef RV_STORAGE_WAL_H
#define RV_STORAGE_WAL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/assert.h"
#include "rivven.h"

#define RV_WAL_HEADER_BYTES  28
#define RV_WAL_GROUPS        8
#define RV_WAL_GROUP_RECORDS 512
#define RV_WAL_RECORD_MAX    (64u << 20) /* payload bytes */
#define RV_WAL_DIRECT_ALIGN  4096u       /* direct I/O: groups start and end on this */
#define RV_WAL_DIRECT_WRITES 4           /* direct I/O: group writes in flight at once */
#define RV_WAL_RECYCLE_MAX   16          /* direct I/O: released files kept for reuse */

enum rv_wal_type {
    RV_WAL_BATCH = 1, /* payload: one Kafka RecordBatch v2 of partition `key` */
    RV_WAL_META = 2,  /* payload: a catalog change (storage/store.c) */
    RV_WAL_PAD = 3,   /* payload: zeros up to the next direct I/O boundary; skipped */
};

typedef struct rv_wal rv_wal_t;

struct rv_wal_config {
    const char *dir;          /* the shard's WAL directory (created if missing) */
    uint64_t file_bytes;      /* size of each preallocated file (default 64 MiB) */
    uint32_t group_bytes_max; /* close a group at this size (default 1 MiB) */
    uint32_t group_window_us; /* wait this long for more appends (default 0) */
    enum rv_wal_io io;        /* RV_WAL_IO_* of rivven.h (default AUTO); direct I/O needs
                                 file_bytes to be a multiple of RV_WAL_DIRECT_ALIGN */
    /* Called on the shard each time the WAL moved to a new file, with the
     * number of files it keeps (those not yet released); NULL: not called. */
    void (*on_roll)(void *ctx, uint32_t files);
    void *on_roll_ctx;
};

/* One replayed record (RV_WAL_PAD records are not). payload is valid only
 * during the callback. */
struct rv_wal_record {
    uint64_t lsn;
    uint64_t key;
    uint8_t type;
    const uint8_t *payload;
    uint32_t len;
};

/* Return 0 to go on, or a -errno to stop replay (rv_wal_open fails with it). */
typedef int rv_wal_replay_fn(void *arg, const struct rv_wal_record *rec);

struct rv_wal_report {
    uint64_t records;       /* records replayed (lsn >= from) */
    uint64_t end_lsn;       /* where the next record goes */
    uint64_t cut_bytes;     /* torn/corrupt tail bytes discarded (0 if clean) */
    uint32_t files_removed; /* later files dropped after a cut */
    int cut_reason;         /* 0, or -EBADMSG for a corrupt record */
};

/*
 * Read the records of [from_lsn, to_lsn) of the WAL in dir while it is live
 * (blocking; a helper thread): fn for each, in LSN order. For a partition log
 * that lost segment writes and is rebuilt from the WAL. The range must be
 * written (below rv_wal_complete_lsn) and kept (at or above the released
 * LSN): its files are listed, opened and read on their own, never changed.
 * 0, -EBADMSG when a record of the range is missing or invalid, -errno.
 */
RV_MUST_CHECK int rv_wal_scan(const char *dir, uint64_t from_lsn, uint64_t to_lsn,
                              rv_wal_replay_fn *fn, void *arg);

/* Completion of one append: the record's LSN (>= 0) once written (and synced
 * if asked), or -errno. Runs on the owner shard. */
typedef void rv_wal_done_fn(void *arg, int64_t lsn_or_err);

/* Lifecycle (blocking). */

void rv_wal_config_init(struct rv_wal_config *cfg);

/*
 * Open the WAL in cfg->dir: replay every valid record with lsn >= from_lsn
 * through fn (may be NULL), cut an invalid tail, make sure a current file and
 * a spare exist, and return the WAL ready to append at the end. Returns 0,
 * or -errno (the replay callback's error, I/O errors, -EBADMSG for a WAL file
 * whose name does not parse). On failure nothing is left open.
 */
RV_MUST_CHECK int rv_wal_open(rv_wal_t **out, const struct rv_wal_config *cfg, uint64_t from_lsn,
                              rv_wal_replay_fn *fn, void *arg, struct rv_wal_report *report);

/* Close files and free. No append may be in flight (rv_wal_is_idle). NULL ok. */
void rv_wal_close(rv_wal_t *wal);

/* Operations (owner shard). */

/*
 * Append one record. payload must stay valid until done runs. needs_sync asks
 * for the group to be fdatasynced before done. Returns 0 (done will run), or
 * -EIO after a failed fsync, -ENOBUFS when every group is busy, -EMSGSIZE for a
 * payload over RV_WAL_RECORD_MAX (or one that does not fit in a file), -ENOMEM
 * when direct I/O cannot grow a staging buffer for it; done is not called then.
 */
RV_MUST_CHECK int rv_wal_append(rv_wal_t *wal, enum rv_wal_type type, uint64_t key,
                                const void *payload, uint32_t len, bool needs_sync,
                                rv_wal_done_fn *done, void *arg);

/* Every file that ends at or before `lsn` is no longer needed (a checkpoint
 * covers it): delete it in the background. */
void rv_wal_release(rv_wal_t *wal, uint64_t lsn);

/* Queries. */
uint64_t rv_wal_end_lsn(const rv_wal_t *wal);     /* next LSN to be assigned */
uint64_t rv_wal_durable_lsn(const rv_wal_t *wal); /* everything below is synced */
/* Every record below has completed (its callback ran): a checkpoint LSN. */
uint64_t rv_wal_complete_lsn(const rv_wal_t *wal);
bool rv_wal_is_idle(const rv_wal_t *wal); /* nothing open or in flight */
/* Whether an append of len bytes would find a group now (else -ENOBUFS): for
 * callers that check before they do expensive work on a record. */
bool rv_wal_has_room(const rv_wal_t *wal, uint32_t len);
bool rv_wal_is_failed(const rv_wal_t *wal);
bool rv_wal_is_direct(const rv_wal_t *wal); /* writing with O_DIRECT */

/* The disk is full: remove the released files kept for reuse (in the
 * background); spares are made anew until files are released again. Owner
 * shard. Called by the WAL on its own ENOSPC, and by the partition logs'. */
void rv_wal_drop_kept(rv_wal_t *wal);
uint32_t rv_wal_file_count(const rv_wal_t *wal);

/* Histogram bounds of the stats: bucket i counts values <= bound i; one more
 * bucket counts the rest. */
#define RV_WAL_SYNC_BUCKETS  14 /* fdatasync latency, bounds rv_wal_sync_le_us */
#define RV_WAL_GROUP_BUCKETS 10 /* records per group written, bounds 1, 2, 4 ... 512 */
extern const uint32_t rv_wal_sync_le_us[RV_WAL_SYNC_BUCKETS];

struct rv_wal_stats {
    uint64_t appends;
    uint64_t groups;              /* gather writes issued */
    uint64_t syncs;               /* fdatasyncs issued */
    uint64_t bytes;               /* record bytes written (padding included) */
    uint64_t pad_bytes;           /* of which RV_WAL_PAD records (direct I/O alignment) */
    uint64_t writes_inflight_max; /* the most group writes in flight at once */
    uint64_t rolls;
    uint64_t spares_recycled; /* spares made from released files (direct I/O) */
    uint64_t failures;        /* appends failed by I/O errors */
    /* Group fdatasyncs that succeeded: their latency. */
    uint64_t sync_ns_sum;
    uint64_t sync_buckets[RV_WAL_SYNC_BUCKETS + 1];
    /* Groups written: their record counts (group commit sizes). */
    uint64_t group_records_sum;
    uint64_t group_buckets[RV_WAL_GROUP_BUCKETS + 1];
};
void rv_wal_get_stats(const rv_wal_t *wal, struct rv_wal_stats *out);

#endif /* RV_STORAGE_WAL_H */
