/*
 * storage/plog.h - one partition's log on its owner shard: offsets, segments,
 * the hot tier, appends through the shard WAL, fetches, retention.
 *
 * Append path (owner shard, no copy of the batch bytes):
 *
 *   rv_plog_append: validate, stamp the base offset in place (next_offset),
 *     hand the bytes to the shard WAL (group commit)
 *   acks none/leader: the append completes on the next reactor turn, in
 *     memory (docs/architecture.md, "Acks")
 *   WAL group done (written; synced too when any append of the group asked
 *     for acks=all): apply, i.e. write the batch to the active segment
 *     through the ring, note it in the index, put it in the hot tier, move
 *     the log end offset, then complete an acks=all append
 *   WAL failure: the append fails and its offsets are taken back (a failed
 *     group fails every later group too, so they come back as a suffix); one
 *     that completed already is lost (a warning says so)
 *
 * So everything a consumer can see is in the WAL first, and an acks=all
 * append completes only after its group's fdatasync. Offsets from the log
 * end to next_offset are in range for a fetch but hold nothing yet.
 *
 * The hot tier keeps whole batches (references to their pool buffers) so
 * tailing consumers never read the disk; a per-shard byte budget evicts the
 * oldest batches first, never one whose segment write has not completed.
 *
 * Offsets: log_start <= (hot and segment data) < leo <= next_offset; next
 * offsets are assigned but not yet applied. The high watermark is the leo
 * (a single copy: what is applied is what is committed).
 */
#ifndef RV_STORAGE_PLOG_H
#define RV_STORAGE_PLOG_H

#include <stdbool.h>
#include <stdint.h>

#include "core/assert.h"
#include "core/buf.h"
#include "rivven.h"
#include "storage/seg.h"
#include "storage/wal.h"

typedef struct rv_plog rv_plog_t;
struct rv_hot;

/* What a log needs from its topic's configuration. */
struct rv_plog_config {
    uint64_t segment_bytes;   /* roll after this many bytes */
    int64_t segment_ms;       /* roll a segment this old (<= 0: never) */
    int64_t retention_ms;     /* delete segments older (< 0: keep) */
    int64_t retention_bytes;  /* delete oldest segments beyond (< 0: no limit) */
    uint32_t index_interval;  /* bytes between offset index entries */
    uint32_t max_batch_bytes; /* largest batch accepted */
    bool is_log_append_time;  /* stamp batches with the broker's clock */
    /* CreateTime, when has_ts_bounds: refuse a record timestamp more than
     * this before / after the broker's clock (INT64_MAX: no bound). */
    bool has_ts_bounds;
    int64_t ts_before_max_ms;
    int64_t ts_after_max_ms;
    /* Compaction (storage/compact.h). */
    bool is_compact;                  /* cleanup.policy holds compact */
    double min_cleanable_dirty_ratio; /* a pass is due once this share of closed bytes is dirty */
    int64_t delete_retention_ms;      /* tombstones stay this long after their first pass */
};

/*
 * The shard's descriptor budget for partition logs. Every active-segment
 * descriptor a log holds and every descriptor a fetch opens takes a slot.
 * At the budget, the least recently used descriptor of a quiet log is closed
 * (a dirty one is fdatasynced through the ring first) and the opener waits
 * for the slot instead of failing. EMFILE/ENFILE from the kernel counts as
 * "at the budget": the opener waits, the usable slots shrink to what is open
 * until a retry timer restores them. No mutex, no blocking call: it lives on
 * the owner shard and closes through the ring.
 */
struct rv_plog_fd_waiter;
/* err 0: a slot is the waiter's now; -ESHUTDOWN: the shard is closing and the
 * kernel has no descriptor to give. */
typedef void rv_plog_fd_fn(struct rv_plog_fd_waiter *w, int err);

struct rv_plog_fd_waiter {
    struct rv_plog_fd_waiter *next;
    rv_plog_fd_fn *fn;
};

struct rv_plog_fds {
    uint32_t budget;   /* slots (configured) */
    uint32_t limit;    /* slots usable now: budget, or less after EMFILE */
    uint32_t used;     /* slots taken: open, being opened or being closed */
    uint32_t evicting; /* slots an eviction (sync, close) is freeing */
    uint32_t waiting;  /* waiters queued */
    uint32_t closing;  /* closes in flight in the ring (their slots are taken) */
    uint32_t retry_us; /* next delay of the EMFILE retry timer */
    bool is_retry_armed;
    bool is_pumping;
    bool is_closing; /* the store is closing: EMFILE with nothing to free fails */
    rv_timer_id retry_timer;
    rv_plog_t *lru_oldest; /* logs holding a descriptor, least recently used first */
    rv_plog_t *lru_newest;
    struct rv_plog_fd_waiter *wait_head;
    struct rv_plog_fd_waiter *wait_tail;
    uint64_t evictions; /* descriptors closed to make room */
    uint64_t waits;     /* openers that waited for a slot */
    uint64_t emfiles;   /* EMFILE/ENFILE answers from the kernel */
    uint32_t used_max;
};

/* The shard context every log of a shard shares. */
struct rv_plog_shard {
    rv_wal_t *wal;
    rv_pool_t *pool;
    struct rv_hot *hot; /* the shard's hot tier */
    uint32_t shard;
    uint8_t *scratch;   /* decompressed records of the batch being appended */
    size_t scratch_cap; /* grows on demand up to RV_PLOG_SCRATCH_MAX */
    /* Called after an append moved a log's end (NULL: none). */
    void (*on_append)(void *ctx, uint64_t key);
    void *on_append_ctx;
    struct rv_plog_fds fds;       /* rv_plog_fds_init before any log is attached */
    bool is_seg_direct;           /* active segments are opened with O_DIRECT and written
                                     from aligned staging blocks (plog.c) */
    uint64_t early_bytes;         /* acks none/leader batches completed (or about to be)
                                     before their WAL write, not yet written */
    uint64_t early_ack_max;       /* the bound on early_bytes (0: RV_PLOG_EARLY_ACK_MAX) */
    uint64_t unload_index_min;    /* an idle unload saves the active segment's index from
                                     this size on (0: 1 MiB; smaller ones are scanned at
                                     the next load instead) */
    uint64_t unwritten_max;       /* the bound on the hot tier's unwritten bytes
                                     (0: RV_PLOG_UNWRITTEN_MAX) */
    uint32_t compact_map_entries; /* keys a compaction pass may map (0: the default) */
    uint64_t unloads;             /* idle logs unloaded (rv_plog_unload_idle) */
    uint32_t compactions;         /* compaction passes in flight */
};

#define RV_PLOG_SCRATCH_MAX (64u << 20) /* a batch may not expand past this */
/* At most this many bytes of a shard's acks none/leader appends complete
 * before their WAL write; past it they complete with the write, which paces
 * producers by the disk (instead of refusals) and bounds what a crash of the
 * process can take of acknowledged data. */
#define RV_PLOG_EARLY_ACK_MAX (4u << 20)
/* Appends are refused with -ENOBUFS (retry) while a shard holds this many
 * bytes of batches that are in the WAL but not yet written to their segment.
 * Without the bound, segment writes slower than the WAL let the backlog grow
 * until it fills the shard's pool, and then the segment writes, which need
 * pool blocks to stage their bytes, could never run again. */
#define RV_PLOG_UNWRITTEN_MAX (64u << 20)

typedef void rv_plog_append_fn(void *arg, int64_t base_offset_or_err);

/* A fetch answer: up to RV_FETCH_SLICES ranges of whole batches. */
#define RV_FETCH_SLICES 64
struct rv_fetch_slice {
    rv_buf_t *buf; /* a reference, released with the result */
    const uint8_t *bytes;
    uint32_t len;
};

struct rv_plog_fetch {
    int err; /* 0, -ERANGE (offset out of range), -EIO */
    int64_t high_watermark;
    int64_t log_start;
    uint32_t slice_count;
    struct rv_fetch_slice slices[RV_FETCH_SLICES];
};

typedef void rv_plog_fetch_fn(void *arg, struct rv_plog_fetch *res);

/* Lifecycle. */

/* Create a log object for dir without touching the disk (lazy start-up): it
 * loads on first use through rv_plog_when_ready, or with rv_plog_load. */
RV_MUST_CHECK int rv_plog_create(rv_plog_t **out, const char *dir, uint64_t key,
                                 const struct rv_plog_config *cfg);
/* Load (recover) a created log with blocking I/O; 0 if already loaded. */
RV_MUST_CHECK int rv_plog_load(rv_plog_t *log);
/* Loaded, or failed to load (calls then return that error). */
bool rv_plog_is_ready(const rv_plog_t *log);
/* 0 when loaded, else why it is not (-EAGAIN while loading). */
int rv_plog_load_error(const rv_plog_t *log);
/* Owner shard: run fn(arg) once the log is ready, loading it on a helper
 * thread first if needed (fn may run before this returns). -ENOMEM. */
RV_MUST_CHECK int rv_plog_when_ready(rv_plog_t *log, rv_task_fn *fn, void *arg);

/*
 * Open the log in dir (created if missing) with blocking I/O: recover its
 * segments (the last one fully), read its log start offset. For start-up and
 * helper threads. key is the WAL key of the partition.
 */
RV_MUST_CHECK int rv_plog_open(rv_plog_t **out, const char *dir, uint64_t key,
                               const struct rv_plog_config *cfg);
/* Apply a replayed WAL batch with blocking I/O (recovery, before serving).
 * Batches below the log end are skipped (already in a segment); the others
 * feed the producer state too. */
RV_MUST_CHECK int rv_plog_replay(rv_plog_t *log, const uint8_t *batch, uint32_t len);
/* Make everything written durable with blocking I/O: fdatasync the active
 * segment and save its index, then write the producer snapshot if it is
 * behind (storage/pstate.h). */
RV_MUST_CHECK int rv_plog_sync_blocking(rv_plog_t *log);
/* Attach to the owner shard (after open/replay, on that shard). */
void rv_plog_attach(rv_plog_t *log, struct rv_plog_shard *shard);
/* Close: the log must be idle (rv_plog_is_idle). Frees everything. NULL ok. */
void rv_plog_close(rv_plog_t *log);

/* Operations (owner shard). */

/*
 * Append one batch held in buf (a pool buffer of the owner shard, not frozen;
 * batch points into it). Takes a reference on buf. done gets the base offset
 * or -errno: -EBADMSG/-EINVAL/-EMSGSIZE/-EPROTONOSUPPORT for a bad batch,
 * -EDOM for a record timestamp outside the topic's bounds
 * (message.timestamp.before/after.max.ms, CreateTime topics)
 * (done is not called: the error is returned), -EIO after a storage failure,
 * -ENOBUFS when the WAL is saturated (returned).
 *
 * A batch of an idempotent producer (producer id >= 0) is checked against
 * the partition's producer state first (storage/pstate.h): refused with
 * -EILSEQ (out of order sequence), -ESTALE (stale epoch), -ESRCH (unknown
 * producer not starting at sequence 0), or -EAGAIN (a retry of a batch still
 * in flight: try again shortly); a duplicate of one of the producer's last
 * five batches in the log is not written again: done gets the original's
 * base offset (stamped in the batch too) on a later turn.
 */
RV_MUST_CHECK int rv_plog_append(rv_plog_t *log, rv_buf_t *buf, uint8_t *batch, uint32_t len,
                                 int acks, rv_plog_append_fn *done, void *arg);

/* rv_plog_append for the broker's own records (consumer group state and
 * committed offsets): small, and never refused because client produces
 * filled the shard's segment backlog (RV_PLOG_UNWRITTEN_MAX), so a producer
 * at full speed cannot hold a group's offset commits back. They still wait
 * for WAL room (-ENOBUFS). */
RV_MUST_CHECK int rv_plog_append_internal(rv_plog_t *log, rv_buf_t *buf, uint8_t *batch,
                                          uint32_t len, int acks, rv_plog_append_fn *done,
                                          void *arg);

/* The same for a batch this process built (rv_batch_builder, as rv_produce
 * does): its CRC and records are not checked again. Never for received bytes. */
RV_MUST_CHECK int rv_plog_append_built(rv_plog_t *log, rv_buf_t *buf, uint8_t *batch, uint32_t len,
                                       int acks, rv_plog_append_fn *done, void *arg);

/*
 * Checking a large compressed batch off the shard. rv_plog_append decompresses
 * a compressed batch to check its records, which for a big one takes the shard
 * for milliseconds. A caller may instead take the log's check parameters on
 * the owner (rv_plog_check_params), run rv_plog_check_records on a helper
 * thread (rv_offload), and then append with rv_plog_append_checked, which
 * skips that part (the CRC, the header and the producer state are still
 * checked on the shard).
 */
struct rv_plog_check {
    uint32_t max_batch_bytes;
    bool is_compact; /* records without a key are refused */
};
/* What the check found that the append needs: the records' timestamps. */
struct rv_plog_checked {
    int64_t min_timestamp; /* smallest other than -1, or -1 */
    int64_t max_timestamp; /* largest, or -1 */
};
/* Owner shard. */
void rv_plog_check_params(const rv_plog_t *log, struct rv_plog_check *out);
/* Any thread, blocking: what rv_plog_append checks of the records of a
 * compressed batch (decompression bounded by RV_PLOG_SCRATCH_MAX, the record
 * walk, dense offsets, keys of a compacted topic), in memory of its own. 0
 * with *out filled, or the -errno rv_plog_append would return. */
RV_MUST_CHECK int rv_plog_check_records(const struct rv_plog_check *c, const uint8_t *batch,
                                        uint32_t len, struct rv_plog_checked *out);
/* rv_plog_append for a batch whose records rv_plog_check_records accepted,
 * with what it found (the timestamps are still checked against the topic's
 * bounds, and the batch's maxTimestamp set from them, on the shard). */
RV_MUST_CHECK int rv_plog_append_checked(rv_plog_t *log, rv_buf_t *buf, uint8_t *batch,
                                         uint32_t len, int acks,
                                         const struct rv_plog_checked *checked,
                                         rv_plog_append_fn *done, void *arg);

/* Fetch batches from `offset`, up to about max_bytes (always at least one
 * whole batch). done runs on this shard, possibly before the call returns. */
void rv_plog_fetch(rv_plog_t *log, int64_t offset, uint32_t max_bytes, rv_plog_fetch_fn *done,
                   void *arg);
/* Release the references of a fetch answer (any thread). */
void rv_plog_fetch_release(struct rv_plog_fetch *res);

/* The first offset whose record timestamp is >= ts_ms, or -1 (none). Async:
 * may read the disk. */
typedef void rv_plog_offset_fn(void *arg, int64_t offset_or_err);
void rv_plog_offset_for_time(rv_plog_t *log, int64_t ts_ms, rv_plog_offset_fn *done, void *arg);

/* Move the log start to offset (<= high watermark; -ERANGE otherwise) and
 * delete whole segments below it. done gets the new log start or -errno once
 * the new start is durable. */
void rv_plog_delete_records(rv_plog_t *log, int64_t offset, rv_plog_offset_fn *done, void *arg);

/* Apply retention (time and size) now; deletes in the background. */
void rv_plog_enforce_retention(rv_plog_t *log, int64_t now_ms);

/*
 * Compact the closed segments of a log whose topic compacts (storage/compact.h)
 * on helper threads: when a pass is due (dirty ratio, a tombstone's horizon;
 * one pass per shard at a time), or now when is_forced. done (NULL: none) gets
 * the bytes the pass freed (0 when none ran) or -errno: -EINVAL (the topic
 * does not compact), -EBUSY (a pass is running), -EIO, -ESTALE (retention
 * dropped its segments meanwhile), -ECANCELED (the store is closing). Reads of
 * closed segments wait while the new files are swapped in.
 */
void rv_plog_compact(rv_plog_t *log, bool is_forced, int64_t now_ms, rv_plog_offset_fn *done,
                     void *arg);

/* Make segment data durable up to now (checkpoint): done(arg, 0 or -errno).
 * Writes the producer snapshot too when one is due (a helper job). */
void rv_plog_checkpoint(rv_plog_t *log, rv_plog_offset_fn *done, void *arg);

/* Close the active segment's descriptor if the log is clean (synced) and had
 * no write since the previous call; the next write or read opens it again.
 * True when it closed one. Called by the shard's periodic sweep. */
bool rv_plog_close_idle_fd(rv_plog_t *log);
/* Close the active segment's descriptor now if the log is clean and nothing
 * uses it (e.g. after rv_plog_sync_blocking). True when it closed one. */
bool rv_plog_release_fd(rv_plog_t *log);
/* Recovery only (blocking, before the shards serve): close the descriptor even
 * if the log is dirty; rv_plog_sync_blocking reopens the file to sync it. */
void rv_plog_park_fd_blocking(rv_plog_t *log);
bool rv_plog_has_fd(const rv_plog_t *log);

/* The shard's descriptor budget (owner shard). budget >= 1 slots. */
void rv_plog_fds_init(struct rv_plog_shard *shard, uint32_t budget);
/* The store is closing: from now on an opener that meets EMFILE while the
 * shard holds nothing it could close fails with -ESHUTDOWN instead of waiting
 * for the kernel (its data is in the WAL). */
void rv_plog_fds_closing(struct rv_plog_shard *shard);
/* No waiter, no close in flight: the budget is quiet (for tear-down). */
bool rv_plog_fds_is_idle(const struct rv_plog_shard *shard);
/* The shard is quiet and closing: close every log's descriptor now, dirty or
 * not (a dirty log is synced later through a descriptor of its own), so the
 * blocking final sync has the process's descriptors to itself. */
void rv_plog_fds_close_all(struct rv_plog_shard *shard);
/* Tear down (before the logs are closed): cancel the retry timer; a waiter
 * left (none after a quiesce) gets -ESHUTDOWN. */
void rv_plog_fds_fini(struct rv_plog_shard *shard);
/* The periodic sweep: close the descriptor of every log that stayed clean
 * and had no write since the previous sweep (rv_plog_close_idle_fd), looking
 * only at the logs that hold one. */
void rv_plog_fds_sweep(struct rv_plog_shard *shard);

/* A log not loaded since start (lazy): look at its files on a helper and
 * load it when retention has something to delete (the oldest segment's last
 * time index entry, or its mtime, before retention.ms; or the segments past
 * retention.bytes); the
 * retention pass then applies. true if a look started. Owner shard. */
bool rv_plog_probe_retention(rv_plog_t *log, int64_t now_ms);

/*
 * The idle sweep's look at a loaded log (owner shard). A log counts as used
 * by appends, fetches, offset look-ups by time and record deletes. Once
 * idle_ms passed since a sweep last saw it used, and it is clean (synced, so
 * the WAL needs nothing of it) with nothing in flight, its descriptor is
 * closed and a helper saves what a reload needs (the active segment's index,
 * the producers' snapshot); then everything the load built is freed (closed
 * segments' indexes, producer state, hot batches) and the log is as if not
 * opened since start: the next call loads it again on a helper. Calls that
 * arrive meanwhile wait as for a load and keep it loaded. True when an
 * unload started.
 */
bool rv_plog_unload_idle(rv_plog_t *log, int64_t now_ms, int64_t idle_ms);
/*
 * A failed log (a segment write or sync that failed; appends get -EIO) is
 * rebuilt from the WAL: rv_plog_needs_recovery says it waits for that, and
 * rv_plog_recover (owner shard; the store's sweep) starts it once nothing is
 * in flight. The segment files are cut back to the last point a sync or roll
 * made durable, then loaded on a helper, the WAL's records of this log in
 * [from_lsn, to_lsn) of wal_dir (from the shard's last checkpoint to its
 * completed end) are written again and synced, and appends resume. Calls
 * meanwhile wait as for a load. Until it is done the log refuses checkpoints
 * (-EAGAIN), so the WAL keeps what it needs; a rebuild that fails leaves it
 * failed to load (calls get the error) and is tried again at the next call.
 * True when a rebuild started.
 */
bool rv_plog_needs_recovery(const rv_plog_t *log);
bool rv_plog_recover(rv_plog_t *log, const char *wal_dir, uint64_t from_lsn, uint64_t to_lsn);

/* A call for the log (the store's entry points): it is in use. */
void rv_plog_note_use(rv_plog_t *log);
/* Whether rv_plog_log_start, rv_plog_high_watermark and rv_plog_size_bytes
 * answer: loaded, or unloaded after a load (then they give the values it had
 * when it unloaded, which nothing can change meanwhile). */
bool rv_plog_has_offsets(const rv_plog_t *log);

/* Change the configuration (alter configs). */
void rv_plog_set_config(rv_plog_t *log, const struct rv_plog_config *cfg);

/* Queries (owner shard). */
int64_t rv_plog_log_start(const rv_plog_t *log);
int64_t rv_plog_high_watermark(const rv_plog_t *log);
uint64_t rv_plog_size_bytes(const rv_plog_t *log);
uint32_t rv_plog_segment_count(const rv_plog_t *log);
bool rv_plog_is_idle(const rv_plog_t *log);
uint64_t rv_plog_key(const rv_plog_t *log);

/* The shard's hot tier. */
RV_MUST_CHECK int rv_hot_create(struct rv_hot **out, uint64_t budget_bytes);
void rv_hot_destroy(struct rv_hot *hot);
struct rv_hot_stats {
    uint64_t bytes;
    uint64_t batches;
    uint64_t hits;   /* fetches answered from memory */
    uint64_t misses; /* fetches that read the disk */
    uint64_t evicted;
    uint64_t unwritten;      /* bytes of batches whose segment write has not completed */
    uint64_t unwritten_full; /* appends refused because `unwritten` was at its bound */
};
void rv_hot_get_stats(const struct rv_hot *hot, struct rv_hot_stats *out);

#endif /* RV_STORAGE_PLOG_H */
