/*
 * rivven.h - the public interface of librivven, the embeddable rivven engine.
 *
 * rivven runs one pinned thread per core, a "shard", each with its own event
 * loop (io_uring, or epoll where io_uring is unavailable), its own memory and
 * its own data. Shards never share mutable state: work moves between them as
 * messages over lock-free mailboxes. An application opens a runtime, then runs
 * its own tasks on the shards (rv_runtime_submit), calls across shards
 * (rv_shard_call), sets timers and does file I/O without blocking a core.
 *
 * Threading: functions marked "shard only" must be called on a shard thread
 * (from a task, timer or completion callback). The others may be called from
 * any thread. Callbacks always run on a shard thread, never inside the call
 * that registered them.
 *
 * Errors: functions returning int give 0 (or a count) on success and a
 * negative errno on failure; rv_strerror() names it and rv_err_msg() holds a
 * sentence about the last failure on the calling thread.
 *
 * Build: cc app.c $(pkg-config --cflags --libs rivven)
 */
#ifndef RIVVEN_H
#define RIVVEN_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RIVVEN_VERSION_MAJOR 0
#define RIVVEN_VERSION_MINOR 1
#define RIVVEN_VERSION_PATCH 0

/* ---- Errors -------------------------------------------------------------- */

/* "ENOSPC: No space left on device" for -ENOSPC. Never NULL. */
const char *rv_strerror(int err);
/* The message of the last failure on the calling thread ("" if none). */
const char *rv_err_msg(void);

/* ---- Runtime ------------------------------------------------------------- */

/* An open runtime: the shards, their threads and mailboxes. Opaque. */
typedef struct rv_runtime rv_runtime_t;

enum rv_io_backend {
    RV_IO_AUTO = 0,  /* io_uring when the kernel allows it, else epoll */
    RV_IO_URING = 1, /* io_uring only: open fails if unavailable */
    RV_IO_EPOLL = 2, /* the portable backend: epoll + plain syscalls */
};

struct rv_runtime_config {
    uint32_t shard_count;          /* 0: one per CPU of cpuset */
    const char *cpuset;            /* CPUs to run on, e.g. "0-3,8"; NULL: the process's */
    enum rv_io_backend io_backend; /* AUTO: env RIVVEN_IO_BACKEND=uring|epoll, else io_uring */
    const char *data_dir;          /* created if missing; must be writable; NULL: none */
    uint32_t poll_us;              /* busy-poll this long before sleeping (default 50) */
    uint32_t stall_ms;             /* report loop turns longer than this (default 25; 0 off) */
    uint32_t mailbox_slots;        /* messages per shard pair ring (default 4096, power of 2) */
    uint32_t io_depth;             /* in-flight file ops per shard (default 256) */
    uint64_t pool_bytes;           /* buffer pool budget per shard (default 64 MiB) */
    uint32_t offload_threads;      /* helper threads for blocking work (default 2, max 64) */
    bool allow_oversubscribe;      /* allow more shards than CPUs (tests only) */
};

/* Fill cfg with the defaults above. */
void rv_runtime_config_init(struct rv_runtime_config *cfg);

/*
 * Start the shards and return the runtime in *out. Errors (nothing is left
 * running and *out is untouched): -EINVAL for a bad cpuset, a shard count above
 * the CPUs of the cpuset (without allow_oversubscribe) or a bad option;
 * -EACCES/-EROFS/-ENOTDIR for an unusable data_dir; -ENOSYS when io_uring was
 * demanded but is unavailable; -EBUSY when this process already has a runtime
 * open; -ENOMEM. Any thread that is not a shard.
 */
int rv_runtime_open(rv_runtime_t **out, const struct rv_runtime_config *cfg);

/*
 * Stop the runtime: refuse new outside submissions, let the shards drain their
 * mailboxes, tasks and in-flight I/O until the whole runtime is quiet, then
 * join every thread and free everything. Timers not yet due are dropped
 * without running. NULL is a no-op. Not from a shard thread.
 */
void rv_runtime_close(rv_runtime_t *rt);

uint32_t rv_runtime_shard_count(const rv_runtime_t *rt);
/* The backend in use (never RV_IO_AUTO). */
enum rv_io_backend rv_runtime_io_backend(const rv_runtime_t *rt);
/* The CPU shard `shard` is pinned to. */
int rv_runtime_shard_cpu(const rv_runtime_t *rt, uint32_t shard);
/* The data directory, or NULL. */
const char *rv_runtime_data_dir(const rv_runtime_t *rt);
/* The calling thread's shard id, or -1 when it is not a shard. */
int rv_shard_self(void);

/* ---- Tasks and cross-shard calls ------------------------------------------ */

typedef void rv_task_fn(void *arg);

/*
 * Run fn(arg) on `shard` soon. From a shard this travels through the
 * mailbox (or the local task queue for the shard itself); from any other
 * thread through the shard's MPSC queue. -EINVAL for a bad shard, -ESHUTDOWN
 * once rv_runtime_close started (outside threads), -ENOMEM.
 */
int rv_runtime_submit(rv_runtime_t *rt, uint32_t shard, rv_task_fn *fn, void *arg);

/*
 * Shard only. Run fn(arg) on shard `target`, then reply(arg) back on the calling
 * shard (reply may be NULL). arg is the caller's: keep it alive until reply
 * runs. Calls to one target run in the order they were made, and so do their
 * replies. -EINVAL for a bad target or when not on a shard, -ENOMEM.
 */
int rv_shard_call(uint32_t target, rv_task_fn *fn, void *arg, rv_task_fn *reply);

/* ---- Timers (shard only) -------------------------------------------------- */

typedef uint64_t rv_timer_id;

/* Run fn(arg) on this shard after delay_us microseconds. Stores its id in
 * *out (may be NULL). -EINVAL when not on a shard, -ENOMEM. */
int rv_timer_add(uint64_t delay_us, rv_task_fn *fn, void *arg, rv_timer_id *out);
/* Cancel a timer of this shard that has not run. -ENOENT when it already ran,
 * was cancelled or never existed. */
int rv_timer_cancel(rv_timer_id id);

/* ---- Asynchronous file I/O (shard only) ----------------------------------- */

/* Completion: res is the syscall's result (bytes, a descriptor, 0) or -errno. */
typedef void rv_io_fn(void *arg, int64_t res);

/*
 * Each call queues one operation on the calling shard's I/O backend and returns
 * 0; cb(arg, res) runs later on the same shard. buf must stay valid until cb.
 * Errors at queue time (cb is then never called): -EINVAL when not on a shard,
 * -EAGAIN when io_depth operations are already in flight (backpressure),
 * -ESHUTDOWN after the shard stopped. A short read or write is reported as is.
 */
int rv_file_open(const char *path, int flags, mode_t mode, rv_io_fn *cb, void *arg);
int rv_file_read(int fd, void *buf, uint32_t len, uint64_t pos, rv_io_fn *cb, void *arg);
int rv_file_write(int fd, const void *buf, uint32_t len, uint64_t pos, rv_io_fn *cb, void *arg);
int rv_file_fdatasync(int fd, rv_io_fn *cb, void *arg);
int rv_file_fallocate(int fd, int mode, uint64_t pos, uint64_t len, rv_io_fn *cb, void *arg);
int rv_file_close(int fd, rv_io_fn *cb, void *arg);
/* Gather write: iov (iovcnt entries, <= IOV_MAX) and what it points to must stay
 * valid until cb. */
struct iovec;
int rv_file_writev(int fd, const struct iovec *iov, int iovcnt, uint64_t pos, rv_io_fn *cb,
                   void *arg);

/* ---- Blocking work off the shard ------------------------------------------ */

/*
 * Shard only. Run work(arg) on one of the runtime's helper threads (for calls
 * that may block: creating directories, opening files by name, renames,
 * fsyncing directories, a blocking client library), then done(arg) back on the
 * calling shard. A shard with offloaded work in flight counts as busy, so
 * rv_runtime_close waits for it. -EINVAL when not on a shard, -ENOMEM.
 */
int rv_offload(rv_task_fn *work, void *arg, rv_task_fn *done);

/* ---- Statistics ------------------------------------------------------------ */

struct rv_shard_stats {
    uint64_t loop_turns;    /* reactor loop iterations */
    uint64_t tasks_run;     /* local tasks, mailbox tasks, calls and replies */
    uint64_t msgs_sent;     /* mailbox messages sent to other shards */
    uint64_t msgs_received; /* mailbox and MPSC messages received */
    uint64_t wakeups_sent;  /* eventfd signals to sleeping peers */
    uint64_t sleeps;        /* times the shard slept in the kernel */
    uint64_t stalls;        /* loop turns longer than stall_ms */
    uint64_t io_completed;  /* file operations completed */
    uint64_t timers_fired;  /* timers that ran */
    uint64_t mailbox_depth; /* messages from other shards published and not yet run */
};

/* A snapshot of a shard's counters (any thread; values may be slightly stale).
 * -EINVAL for a bad shard. */
int rv_runtime_shard_stats(const rv_runtime_t *rt, uint32_t shard, struct rv_shard_stats *out);

/* ---- Storage: topics, produce, fetch (second part) ------------------------- */

/*
 * The durable log engine on top of a runtime that has a data_dir. Topics have
 * partitions; each partition lives on one shard (a stable hash of topic and
 * partition) and every call for it travels to that shard. Records are stored
 * as Kafka RecordBatch v2, appended through the shard's write-ahead log with
 * group commit.
 */
typedef struct rv_store rv_store_t;

enum rv_acks {
    RV_ACKS_NONE = 0,   /* complete once appended in memory, before the WAL write: lost
                           if the process dies first; fetches see it after that write */
    RV_ACKS_LEADER = 1, /* the same on a single node */
    RV_ACKS_ALL = -1,   /* complete once the WAL group holding it is fdatasynced (and it
                           and everything before it is visible to fetches) */
};

#define RV_OFFSET_LATEST                                                                           \
    (-1)                        /* rv_list_offset: the high watermark (the log end once
                                   acks none/leader appends reached the WAL) */
#define RV_OFFSET_EARLIEST (-2) /* rv_list_offset: the log start */

/* How each shard's WAL writes (rv_store_config.wal_io), and how partitions'
 * active segments are written (rv_store_config.segment_io). */
enum rv_wal_io {
    RV_WAL_IO_AUTO = 0,     /* direct where the filesystem takes O_DIRECT, else buffered */
    RV_WAL_IO_DIRECT = 1,   /* O_DIRECT: opening fails where the filesystem refuses it */
    RV_WAL_IO_BUFFERED = 2, /* through the page cache, then fdatasync */
};

struct rv_store_config {
    uint64_t hot_bytes;              /* hot tier budget per shard (default 64 MiB) */
    uint64_t wal_file_bytes;         /* preallocated WAL file size (default 64 MiB) */
    uint32_t wal_group_window_us;    /* wait this long for a group to fill (default 0) */
    uint32_t wal_group_bytes;        /* close a group at this size: a multiple of 4096, at
                                        most wal_file_bytes / 4 (0, the default: 1 MiB,
                                        or wal_file_bytes / 4 if smaller) */
    uint32_t checkpoint_interval_ms; /* sync segments and trim the WAL (default 2000) */
    uint32_t retention_check_ms;     /* how often retention runs (default 30000) */
    uint32_t fds_per_shard;          /* partition log descriptors each shard may hold open
                                        (0, the default: half of RLIMIT_NOFILE, shared) */
    uint32_t compact_map_entries;    /* keys one compaction pass maps (default 524288: at
                                        most 24 MiB; more dirty keys take more passes) */
    enum rv_wal_io wal_io;           /* default RV_WAL_IO_AUTO (see docs/architecture.md) */
    enum rv_wal_io segment_io;       /* default RV_WAL_IO_AUTO: direct segment writes from
                                        aligned staging blocks, no page-cache copy */
    uint32_t idle_unload_ms;         /* a partition unused this long (no produce, fetch,
                                        offsets by time or delete records) gives back its
                                        memory and descriptor, and loads again on next use
                                        (default 300000; RV_IDLE_UNLOAD_NEVER: never) */
    uint64_t segment_backlog_bytes;  /* a shard's batches in the WAL but not yet in their
                                        segments, past which appends get -ENOBUFS until
                                        the segment writes catch up (0, the default:
                                        64 MiB; at most 512 MiB) */
};

#define RV_IDLE_UNLOAD_NEVER UINT32_MAX

void rv_store_config_init(struct rv_store_config *cfg);

/*
 * Open the storage engine in the runtime's data_dir, recovering what is there
 * (segments, then the WAL since the last checkpoint). Blocking; any thread that
 * is not a shard. -EINVAL when the runtime has no data_dir, -EBADMSG for a
 * data directory rivven cannot read, I/O errors. On failure nothing stays open.
 */
int rv_store_open(rv_store_t **out, rv_runtime_t *rt, const struct rv_store_config *cfg);

/* Finish in-flight appends, make everything durable, close. Every fetch result
 * must have been released. Blocking; not from a shard. NULL is a no-op. */
void rv_store_close(rv_store_t *st);

#define RV_TOPIC_NAME_MAX 249

struct rv_topic_config {
    int32_t partitions;           /* default 1 */
    int64_t retention_ms;         /* retention.ms: default 7 days; -1 keeps forever */
    int64_t retention_bytes;      /* retention.bytes: per partition; -1 no limit */
    int64_t segment_bytes;        /* segment.bytes: default 1 GiB */
    int64_t segment_ms;           /* segment.ms: default 7 days */
    int32_t max_message_bytes;    /* max.message.bytes: largest batch (default 1048512) */
    int32_t index_interval_bytes; /* index.interval.bytes: default 4096 */
    char compression[16];         /* compression.type: producer|none|gzip|snappy|lz4|zstd */
    char cleanup_policy[16];      /* cleanup.policy: delete|compact|compact,delete */
    char timestamp_type[16];      /* message.timestamp.type: CreateTime|LogAppendTime */
    /* delete.retention.ms: tombstones of a compacted topic stay this long after
     * compaction first kept them (default 1 day). */
    int64_t delete_retention_ms;
    /* min.cleanable.dirty.ratio: compact once this share of the closed segments
     * is new (default 0.5). */
    double min_cleanable_dirty_ratio;
    /* message.timestamp.before.max.ms / after.max.ms (CreateTime topics): a
     * batch with a record timestamp more than this before / after the broker's
     * clock is refused (-EDOM; Kafka's INVALID_TIMESTAMP). Defaults as Kafka 4:
     * no bound before (INT64_MAX), one hour after. The older
     * message.timestamp.difference.max.ms sets both. */
    int64_t timestamp_before_max_ms;
    int64_t timestamp_after_max_ms;
};

void rv_topic_config_init(struct rv_topic_config *cfg);
/* Set one setting by its Kafka name ("retention.ms", ...). -ENOENT for an
 * unknown name, -EINVAL for a bad value (rv_err_msg says which). */
int rv_topic_config_set(struct rv_topic_config *cfg, const char *name, const char *value);
/* The value of a setting by its Kafka name, as text into buf. -ENOENT. */
int rv_topic_config_get(const struct rv_topic_config *cfg, const char *name, char *buf, size_t len);

/* Blocking topic administration (not from a shard). Names follow Kafka's
 * rules: 1..249 of [a-zA-Z0-9._-], not "." or "..". -EINVAL (bad name or
 * config), -EEXIST, -ENOENT. */
int rv_topic_create(rv_store_t *st, const char *name, const struct rv_topic_config *cfg);
int rv_topic_delete(rv_store_t *st, const char *name);
int rv_topic_describe(rv_store_t *st, const char *name, struct rv_topic_config *out);
/* Change settings of a topic (not its partition count). */
int rv_topic_alter(rv_store_t *st, const char *name, const struct rv_topic_config *cfg);
/* Every topic name, malloc'd; free with rv_topic_list_free. */
int rv_topic_list(rv_store_t *st, char ***out_names, uint32_t *out_count);
void rv_topic_list_free(char **names, uint32_t count);

struct rv_partition_info {
    int64_t log_start;      /* first offset still stored */
    int64_t high_watermark; /* next offset; what consumers may read up to */
    uint64_t size_bytes;
    uint32_t segments;
    uint32_t shard; /* the owner */
};
/* Blocking. -ENOENT for an unknown topic or partition. */
int rv_partition_info(rv_store_t *st, const char *topic, int32_t partition,
                      struct rv_partition_info *out);

struct rv_record_header {
    const char *key;
    int32_t key_len;
    const void *value;
    int32_t value_len; /* -1: null */
};

struct rv_record {
    const void *key;
    int32_t key_len; /* -1: null key */
    const void *value;
    int32_t value_len;    /* -1: null value (a tombstone) */
    int64_t timestamp_ms; /* 0: now */
    const struct rv_record_header *headers;
    uint32_t header_count;
};

typedef void rv_produce_fn(void *arg, int64_t base_offset_or_err);

/*
 * Append records to a partition as one batch (compressed as the topic says).
 * The records are copied before the call returns. cb(arg, base offset or
 * -errno) runs later on the partition's shard. Errors at call time (cb is not
 * called): -ENOENT (unknown topic/partition), -EMSGSIZE (batch over
 * max.message.bytes), -EINVAL, -ENOMEM, -ESHUTDOWN. Later through cb: -EIO,
 * -ENOSPC (disk full), -ENOBUFS (the WAL, or the segment writes behind it,
 * saturated: retry), -EDOM (a record timestamp outside
 * message.timestamp.before/after.max.ms). Any thread.
 */
int rv_produce(rv_store_t *st, const char *topic, int32_t partition, const struct rv_record *recs,
               uint32_t count, enum rv_acks acks, rv_produce_fn *cb, void *arg);
/* Blocking rv_produce for threads outside the runtime: the base offset or -errno.
 * Backpressure (-ENOBUFS) is waited out, as a Kafka producer blocks on a full
 * buffer, for up to RV_PRODUCE_SYNC_BLOCK_MS; -ENOBUFS only after that. */
#define RV_PRODUCE_SYNC_BLOCK_MS 60000
int64_t rv_produce_sync(rv_store_t *st, const char *topic, int32_t partition,
                        const struct rv_record *recs, uint32_t count, enum rv_acks acks);

/* The answer of a fetch: whole batches starting at the one holding the
 * offset, read with rv_fetch_next, released with rv_fetch_release. */
typedef struct rv_fetch_result rv_fetch_result_t;

struct rv_record_view {
    int64_t offset;
    int64_t timestamp_ms;
    const void *key; /* valid until the next rv_fetch_next or release */
    int32_t key_len; /* -1: null */
    const void *value;
    int32_t value_len; /* -1: null */
    uint32_t header_count;
};

/* res (NULL when err < 0) belongs to the callback, which must release it. */
typedef void rv_fetch_fn(void *arg, rv_fetch_result_t *res, int err);

/*
 * Read from `offset` up to about max_bytes (at least one batch when there is
 * one). Errors: -ERANGE when offset is below the log start or beyond the high
 * watermark, -ENOENT, -EIO. cb runs on the partition's shard. Any thread.
 */
int rv_fetch(rv_store_t *st, const char *topic, int32_t partition, int64_t offset,
             uint32_t max_bytes, rv_fetch_fn *cb, void *arg);
/* Blocking rv_fetch for threads outside the runtime. */
int rv_fetch_sync(rv_store_t *st, const char *topic, int32_t partition, int64_t offset,
                  uint32_t max_bytes, rv_fetch_result_t **out);
/* The next record at or after the requested offset: 1, 0 at the end, -EBADMSG
 * for a batch that does not decode (never returned as data). */
int rv_fetch_next(rv_fetch_result_t *res, struct rv_record_view *out);
int64_t rv_fetch_high_watermark(const rv_fetch_result_t *res);
int64_t rv_fetch_log_start(const rv_fetch_result_t *res);
/* The raw batches, for callers that forward them (index i < count). */
uint32_t rv_fetch_batch_ranges(const rv_fetch_result_t *res);
const void *rv_fetch_batch_range(const rv_fetch_result_t *res, uint32_t i, uint32_t *len);
/* Any thread. NULL is a no-op. */
void rv_fetch_release(rv_fetch_result_t *res);

/* Blocking: the offset for `when` (RV_OFFSET_EARLIEST, RV_OFFSET_LATEST, or a
 * timestamp in ms: the first offset whose timestamp is >= it, or -1 when none
 * is), or -errno. */
int64_t rv_list_offset(rv_store_t *st, const char *topic, int32_t partition, int64_t when);
/* Blocking: move the log start to `offset` (<= high watermark) and delete the
 * segments wholly below it. The new log start, or -ERANGE, -ENOENT, -EIO. */
int64_t rv_delete_records(rv_store_t *st, const char *topic, int32_t partition, int64_t offset);

#ifdef __cplusplus
}
#endif

#endif /* RIVVEN_H */
