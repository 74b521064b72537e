/*
 * storage/plog.c - a partition log on its owner shard (see plog.h).
 *
 * State of the active segment's file:
 *
 *   WRITABLE --(a batch would pass segment.bytes or segment.ms)--> ROLLING
 *   ROLLING: applies queue; once in-flight writes finished, a helper thread
 *            fsyncs the old file, saves its index and creates the next file
 *   ROLLING --(new file open)--> WRITABLE (queued batches are written)
 *   any write error --> FAILED (sticky: appends get -EIO until reopened; the
 *            data is safe in the WAL and replayed into the segment at start)
 */
#include "storage/plog.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/pool.h"
#include "core/sys.h"
#include "core/trace.h"
#include "storage/batch.h"
#include "storage/compact.h"
#include "storage/pstate.h"

#define PLOG_READ_MIN   (64u << 10)
#define PLOG_READ_MAX   ((1u << 20) - 64)
#define PLOG_START_FILE "log-start"
/* A helper job that met EMFILE/ENFILE (out of descriptors) runs again after this. */
#define PLOG_EMFILE_RETRY_US 10000
/* Below this size an unloaded active segment's index is not saved: the next
 * load scans what its saved index does not cover, which for a small segment
 * costs less than the two fdatasyncs, two renames and the directory fsync of
 * a save (about 2 ms per partition on this project's VM); the retention probe
 * reads such a small file's batch headers when it has no time index. */
#define PLOG_UNLOAD_SCAN_MAX (1u << 20)

enum plog_state {
    PLOG_WRITABLE = 0,
    PLOG_ROLLING,
    PLOG_FAILED,
};

struct hot_entry {
    struct hot_entry *prev; /* partition list, ascending offsets */
    struct hot_entry *next;
    struct hot_entry *lru_prev; /* shard-wide, oldest first */
    struct hot_entry *lru_next;
    struct rv_plog *log;
    rv_buf_t *buf; /* our reference */
    const uint8_t *bytes;
    uint32_t len;
    bool is_on_disk;              /* its segment write completed */
    bool is_noted;                /* in the active segment's accounting (pos is set) */
    bool is_malloced;             /* allocated outside the pool (the pool was exhausted) */
    bool is_uncounted;            /* never written (its log failed): out of `unwritten` */
    uint64_t pos;                 /* where its segment write goes */
    struct hot_entry *retry_next; /* the log's writes to retry (disk full) */
    int64_t base;
    int64_t last;
    int64_t max_ts;
};

struct rv_hot {
    uint64_t budget_bytes;
    struct hot_entry *oldest;
    struct hot_entry *newest;
    struct rv_hot_stats stats;
};

/* An append between rv_plog_append and its WAL completion; also a queued
 * segment write while the log rolls. */
struct append_op {
    struct rv_plog *log;
    struct append_op *next; /* the roll queue */
    rv_buf_t *buf;
    uint8_t *bytes;
    uint32_t len;
    int64_t base;
    int64_t last;
    int64_t max_ts;
    rv_plog_append_fn *done;
    void *arg;
    bool is_tracked;     /* an idempotent producer's: in the producer state (pstate.h) */
    bool is_ack_pending; /* acks none/leader: done runs from ack_timer (plog_early_ack) */
    bool is_acked;       /* done ran already; the WAL's completion does not call it again */
    bool is_early;       /* counted in the shard's early_bytes */
    rv_timer_id ack_timer;
};

#define PLOG_DW_BLOCKS 4 /* pool blocks (up to 1 MiB each) one direct write gathers */

/* Direct segment writes (an active segment opened with O_DIRECT; see "direct
 * segment writes" below). The file's bytes go to the disk from a 4 KiB-aligned
 * staging block of the shard's pool, one write in flight per log; a write that
 * ends inside a block is padded with zeros there, and the next write starts at
 * that block again, with its bytes kept in `tail`. */
struct plog_dw {
    struct hot_entry *first; /* the first entry not yet on disk (NULL: none) */
    struct hot_entry *next;  /* the first entry not yet wholly copied into a write */
    uint32_t next_done;      /* bytes of `next` copied already */
    uint64_t end;            /* file position up to which bytes went into writes */
    uint8_t *tail;           /* pool block: the file's bytes from end rounded down to
                                a block to end, when end is inside a block */
    bool has_tail;           /* tail is known (false after a reopen, until read) */
    bool is_held;            /* a write waits to be issued again (ring, pool or disk full) */
    bool is_padded;          /* the file holds zeros past size_bytes (cut at roll, close) */
    uint32_t nblk;           /* pool blocks of the prepared write (0: none), or 1 for
                                the block a tail read goes to */
    void *blks[PLOG_DW_BLOCKS];
    struct iovec iov[PLOG_DW_BLOCKS]; /* their aligned parts: whole blocks but the last */
    uint64_t pos;                     /* where the write goes (aligned) */
    uint32_t len;                     /* its length (whole 4 KiB blocks) */
    uint32_t valid;                   /* bytes of it that are the file's data */
};

struct plog_waiter {
    rv_plog_offset_fn *done;
    void *arg;
};

enum plog_load {
    PLOG_LOADED = 0, /* segments recovered: usable */
    PLOG_UNLOADED,   /* created lazily at start: nothing read yet */
    PLOG_LOADING,    /* a helper thread is recovering it */
    PLOG_LOAD_FAILED,
    PLOG_UNLOADING, /* idle: a helper saves what a reload needs, then it is let go */
};

/* Log compaction (storage/compact.h): at most one pass per log; its files
 * are built by helper slices, then swapped in while closed segments wait. */
struct plog_compact_job;
struct plog_compact {
    struct plog_compact_job *job;  /* the pass in flight, or NULL */
    struct rv_compact_point point; /* compacted below; the next tombstone horizon */
    int64_t retry_ms;              /* after a failed pass: no other before (wall clock) */
    uint32_t gen;                  /* moves when a swap starts: older reads of closed
                                      segments are read again */
    bool is_swapping;              /* a helper is replacing closed segments' files */
};

/* A call waiting for a lazily opened log to load. */
struct plog_pending {
    rv_task_fn *fn;
    void *arg;
    struct plog_pending *next;
};

struct rv_plog {
    uint8_t load; /* enum plog_load */
    int load_err; /* why loading failed */
    struct plog_pending *pending_head;
    struct plog_pending *pending_tail;
    char *dir;
    uint64_t key;
    struct rv_plog_config cfg;
    struct rv_plog_shard *shard; /* NULL until attached */
    int fd;                      /* active segment, read-write */
    bool is_fd_direct;           /* fd was opened with O_DIRECT: writes go through dw */
    struct plog_dw dw;
    uint8_t state; /* enum plog_state */
    int64_t log_start;
    int64_t leo;         /* applied: visible to fetches */
    int64_t next_offset; /* assigned */
    struct rv_seg *segs; /* ascending; the last is active */
    uint32_t seg_count;
    uint32_t seg_cap;
    struct hot_entry *hot_first;
    struct hot_entry *hot_last;
    struct append_op *roll_head; /* applies waiting for the roll */
    struct append_op *roll_tail;
    uint32_t writes_inflight;  /* segment writes in the ring */
    uint32_t jobs;             /* helper jobs and async I/O chains in flight */
    uint32_t appends_inflight; /* in the WAL */
    bool is_dirty;             /* written since the last sync */
    bool is_roll_job;          /* the roll's helper job is running */
    bool is_syncing;           /* a checkpoint fdatasync is in flight */
    bool is_disk_full;         /* a write or roll failed with ENOSPC: retrying */
    bool is_opening;           /* waiting for a descriptor slot, or opening through the ring */
    bool has_slot;             /* holds a slot of the shard's budget for fd (open or opening) */
    bool is_evicting;          /* syncing to give the descriptor back to a waiter */
    bool is_ckpt_sync;         /* the sync in flight is the checkpoint's */
    bool is_roll_created;      /* a roll that met EMFILE already created the next file */
    bool is_probing;           /* a helper looks for expired data of the unloaded log */
    struct rv_plog *lru_prev;  /* the shard's logs holding a descriptor */
    struct rv_plog *lru_next;
    struct rv_plog_fd_waiter fd_wait;
    uint64_t sync_writes;         /* writes_total when the sync in flight was issued */
    uint32_t fd_users;            /* fetches reading through fd */
    uint64_t writes_total;        /* segment writes issued (idle detection) */
    uint64_t writes_at_sweep;     /* writes_total at the last idle sweep */
    bool is_retry_armed;          /* the retry timer is pending */
    struct hot_entry *retry_head; /* segment writes that failed with ENOSPC */
    struct plog_waiter ckpt;      /* a checkpoint waiting for writes to drain */
    bool has_ckpt;
    struct rv_pstate pstate; /* idempotent producers (storage/pstate.h) */
    struct plog_compact compact;
    uint32_t uses;          /* calls for the log (rv_plog_note_use; idle unload) */
    uint32_t uses_at_sweep; /* uses at the last idle sweep that saw them move */
    int64_t used_ms;        /* when that sweep ran (wall clock; 0: not yet seen) */
    /* Durable: segments below durable_base whole, durable_base's first
     * durable_size bytes (a sync or a roll said so). A failed log is cut back
     * to it and rebuilt from the WAL (rv_plog_recover). */
    uint64_t durable_base;
    uint64_t durable_size;
    uint64_t sync_base; /* the active segment and its size when the sync in flight began */
    uint64_t sync_size;
    /* A failed log rebuilt from the WAL: its records of [from, to) in wal_dir. */
    bool needs_recovery;
    char *recover_wal_dir;
    uint64_t recover_from_lsn;
    uint64_t recover_to_lsn;
    uint64_t recover_batches; /* replayed by the last recovery (its message) */
    /* A configuration change that waits until no helper job reads cfg. */
    struct rv_plog_config *pending_cfg;
    /* Kept across an unload (the files do not say them): */
    bool was_loaded;           /* log_start and leo hold the last loaded values */
    uint64_t kept_size_bytes;  /* the segments' bytes when it unloaded */
    uint64_t kept_active_base; /* the active segment then, and its first append's time */
    int64_t kept_active_created_ms;
};

static void plog_cfg_settle(struct rv_plog *log);

/* ---- small helpers ------------------------------------------------------------------------ */

static struct rv_seg *plog_active(struct rv_plog *log)
{
    RV_ASSERT(log->seg_count > 0);
    return &log->segs[log->seg_count - 1];
}

static int plog_seg_push(struct rv_plog *log, uint64_t base)
{
    if (log->seg_count == log->seg_cap) {
        uint32_t cap = log->seg_cap ? log->seg_cap * 2 : 2;
        struct rv_seg *s = realloc(log->segs, cap * sizeof(*s));
        if (s == NULL)
            return -ENOMEM;
        log->segs = s;
        log->seg_cap = cap;
    }
    rv_seg_init(&log->segs[log->seg_count++], base, log->cfg.index_interval);
    return 0;
}

static int plog_path(char *out, size_t len, const struct rv_plog *log, uint64_t base,
                     const char *suffix)
{
    return rv_idx_file_name(out, len, log->dir, base, suffix);
}

static void *plog_pool_get(struct rv_plog *log, size_t size)
{
    return rv_pool_get(log->shard->pool, size);
}

/* Some write of the log waits to be written again (ENOSPC, a full ring or pool). */
static bool plog_has_held_writes(const struct rv_plog *log)
{
    return log->retry_head != NULL || log->dw.is_held;
}

/* ---- blocking open, replay, sync (start-up / helper threads) ------------------------------- */

static int plog_read_start(struct rv_plog *log)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/" PLOG_START_FILE, log->dir);
    if (n < 0 || (size_t)n >= sizeof(path))
        return -ENAMETOOLONG;
    int fd = rv_sys_open(path, O_RDONLY, 0);
    if (fd == -ENOENT)
        return 0;
    if (fd < 0)
        return rv_errf(fd, "%s: open", path);
    char text[32] = {0};
    ssize_t r = rv_sys_pread(fd, text, sizeof(text) - 1, 0);
    (void)rv_sys_close(fd); /* read-only */
    char *end = NULL;
    long long v = r > 0 ? strtoll(text, &end, 10) : -1;
    if (r <= 0 || v < 0 || end == text)
        return rv_errf(-EBADMSG, "%s: not a log start offset", path);
    log->log_start = v;
    return 0;
}

static int plog_open_segments(struct rv_plog *log)
{
    uint64_t *bases = NULL;
    uint32_t count = 0;
    int rc = rv_compact_recover(log->dir, &log->compact.point); /* an interrupted pass first */
    if (rc == 0)
        rc = rv_seg_list(log->dir, &bases, &count);
    if (rc < 0)
        return rc;
    if (count == 0) {
        rc = rv_seg_create(log->dir, (uint64_t)log->log_start);
        if (rc == 0)
            rc = plog_seg_push(log, (uint64_t)log->log_start);
        free(bases);
        return rc;
    }
    for (uint32_t i = 0; i < count && rc == 0; i++) {
        rc = plog_seg_push(log, bases[i]);
        if (rc < 0)
            break;
        /* Only the active segment can end in a torn write; damage in a closed
         * one is kept, and its offsets up to the next segment are read through
         * it, so a read there fails instead of skipping them. */
        bool is_closed = i + 1 < count;
        struct rv_seg_recovery rep;
        rc = rv_seg_recover(&log->segs[i], log->dir,
                            is_closed ? RV_SEG_SCAN_CLOSED : RV_SEG_SCAN_TAIL,
                            log->cfg.max_batch_bytes, &rep);
        if (rc == 0 && rep.truncated_bytes > 0 && !rep.is_zero_tail)
            rv_warn("log %s: segment %" PRIu64 ": cut %" PRIu64 " invalid bytes", log->dir,
                    bases[i], rep.truncated_bytes);
        if (rc == 0 && log->segs[i].is_damaged && log->segs[i].next_offset < bases[i + 1])
            log->segs[i].next_offset = bases[i + 1];
    }
    free(bases);
    return rc;
}

static void plog_fd_granted(struct rv_plog_fd_waiter *w, int err);

static int plog_open_active_fd(struct rv_plog *log)
{
    char path[PATH_MAX];
    int rc = plog_path(path, sizeof(path), log, plog_active(log)->base_offset, ".log");
    if (rc < 0)
        return rc;
    int fd = rv_sys_open(path, O_RDWR, 0);
    if (fd < 0)
        return rv_errf(fd, "%s: open", path);
    log->fd = fd;
    return 0;
}

int rv_plog_create(rv_plog_t **out, const char *dir, uint64_t key, const struct rv_plog_config *cfg)
{
    struct rv_plog *log = calloc(1, sizeof(*log));
    if (log == NULL || (log->dir = strdup(dir)) == NULL) {
        free(log);
        return -ENOMEM;
    }
    log->key = key;
    log->cfg = *cfg;
    log->fd = -1;
    log->fd_wait.fn = plog_fd_granted;
    log->load = PLOG_UNLOADED;
    rv_pstate_init(&log->pstate);
    *out = log;
    return 0;
}

/* Recover the log's files into its fields; `load` is left to the caller, so a
 * helper thread never writes the field its shard reads. */
static int plog_recover_cut(struct rv_plog *log);
static int plog_recover_replay(struct rv_plog *log);

static int plog_load_data(struct rv_plog *log)
{
    if (log->needs_recovery) { /* a failed log: back to what is durable first */
        int rc = plog_recover_cut(log);
        if (rc < 0)
            return rc;
    }
    log->log_start = 0; /* what the files say, even after an unload */
    int rc = rv_sys_mkdir_p(log->dir, 0755);
    if (rc == 0)
        rc = plog_read_start(log);
    if (rc == 0)
        rc = plog_open_segments(log);
    if (rc < 0) {
        for (uint32_t i = 0; i < log->seg_count; i++)
            rv_seg_fini(&log->segs[i]);
        log->seg_count = 0;
        return rc;
    }
    /* segment.ms counts from the active segment's first append, which a
     * restart forgets: from its last write (the file's mtime) instead, so a
     * time roll comes late rather than never. */
    struct rv_seg *act = plog_active(log);
    char path[PATH_MAX];
    struct stat sb;
    if (act->size_bytes > 0 && log->kept_active_created_ms > 0 &&
        act->base_offset == log->kept_active_base)
        act->created_ms = log->kept_active_created_ms; /* unloaded since: known exactly */
    if (act->size_bytes > 0 && act->created_ms == 0 &&
        plog_path(path, sizeof(path), log, act->base_offset, ".log") == 0 && stat(path, &sb) == 0)
        act->created_ms = (int64_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000;
    /* No descriptor until the log is used: an idle partition holds none. */
    struct rv_seg *first = &log->segs[0];
    if ((uint64_t)log->log_start < first->base_offset)
        log->log_start = (int64_t)first->base_offset;
    log->leo = log->next_offset = (int64_t)plog_active(log)->next_offset;
    if (log->leo < log->log_start) /* everything was deleted: start there */
        log->leo = log->next_offset = log->log_start;
    /* What a load finds is durable: synced by a checkpoint, or by the
     * recovery that wrote it (replay, rv_plog_recover). */
    log->durable_base = act->base_offset;
    log->durable_size = act->size_bytes;
    /* The producers' state: its snapshot and the batches after it. */
    struct rv_pstate_load_report rep;
    rc = rv_pstate_load(&log->pstate, log->dir, log->segs, log->seg_count, log->log_start, log->leo,
                        log->cfg.max_batch_bytes, &rep);
    if (rc < 0) {
        for (uint32_t i = 0; i < log->seg_count; i++)
            rv_seg_fini(&log->segs[i]);
        log->seg_count = 0;
        return rc;
    }
    if (rep.batches > 0 || rep.snaps_rejected > 0)
        rv_debug("log %s: %u producers from the snapshot at %" PRId64 " and %" PRIu64
                 " batches after it",
                 log->dir, rep.producers, rep.snap_offset, rep.batches);
    return log->needs_recovery ? plog_recover_replay(log) : 0;
}

int rv_plog_load(rv_plog_t *log)
{
    if (log->load == PLOG_LOADED)
        return 0;
    int rc = plog_load_data(log);
    if (rc == 0)
        log->load = PLOG_LOADED;
    return rc;
}

int rv_plog_open(rv_plog_t **out, const char *dir, uint64_t key, const struct rv_plog_config *cfg)
{
    rv_plog_t *log;
    int rc = rv_plog_create(&log, dir, key, cfg);
    if (rc < 0)
        return rc;
    rc = rv_plog_load(log);
    if (rc < 0) {
        rv_plog_close(log);
        return rc;
    }
    *out = log;
    return 0;
}

/* ---- lazy loading on the owner shard ---------------------------------------------------- */

struct load_job {
    struct rv_plog *log;
    int rc;
    char msg[256]; /* the helper's rv_err_msg() when rc < 0 */
};

static void plog_load_work(void *arg)
{
    struct load_job *job = arg;
    rv_err_clear();
    job->rc = plog_load_data(job->log); /* the shard leaves the log alone meanwhile */
    if (job->rc < 0)
        snprintf(job->msg, sizeof(job->msg), "%s", rv_err_msg());
}

static bool plog_is_emfile(int64_t err);
static void plog_load_done(void *arg);

static void plog_load_retry(void *arg)
{
    struct load_job *job = arg;
    if (rv_offload(plog_load_work, job, plog_load_done) == 0)
        return; /* still counted in jobs */
    job->rc = -ENOMEM;
    plog_load_done(job);
}

/* Run the calls that waited for the log to be ready. */
static void plog_load_done_run_pending(struct rv_plog *log)
{
    struct plog_pending *p = log->pending_head;
    log->pending_head = log->pending_tail = NULL;
    while (p != NULL) {
        struct plog_pending *next = p->next;
        p->fn(p->arg);
        free(p);
        p = next;
    }
}

static void plog_load_done(void *arg)
{
    struct load_job *job = arg;
    struct rv_plog *log = job->log;
    log->jobs--;
    if (plog_is_emfile(job->rc) && !log->shard->fds.is_closing &&
        rv_timer_add(PLOG_EMFILE_RETRY_US, plog_load_retry, job, NULL) == 0) {
        rv_debug("log %s: out of descriptors while loading; trying again", log->dir);
        log->jobs++; /* the process is out of descriptors for now: not the log's fault */
        return;
    }
    log->load = PLOG_LOADED; /* on the shard: ordered after the helper's writes */
    log->used_ms = 0;        /* a full idle period before an unload, however it loaded */
    if (job->rc == 0 && log->needs_recovery) {
        rv_warn("log %s: rebuilt from the WAL after a failed write (%" PRIu64
                " batches written again); appends resume",
                log->dir, log->recover_batches);
        log->needs_recovery = false;
        free(log->recover_wal_dir);
        log->recover_wal_dir = NULL;
    }
    if (job->rc < 0) {
        log->load = PLOG_LOAD_FAILED;
        log->load_err = job->rc;
        rv_error("log %s: cannot open: %s", log->dir,
                 job->msg[0] != '\0' ? job->msg : rv_strerror(job->rc));
    }
    free(job);
    plog_cfg_settle(log); /* a change made while it loaded */
    plog_load_done_run_pending(log);
}

bool rv_plog_is_ready(const rv_plog_t *log)
{
    return log->load == PLOG_LOADED || log->load == PLOG_LOAD_FAILED;
}

/* Start loading an unloaded log on a helper. -ENOMEM. */
static int plog_load_start(struct rv_plog *log)
{
    struct load_job *job = malloc(sizeof(*job));
    log->load = PLOG_LOADING; /* before the helper can finish */
    if (job == NULL || (*job = (struct load_job){.log = log},
                        rv_offload(plog_load_work, job, plog_load_done) < 0)) {
        log->load = PLOG_UNLOADED;
        free(job);
        return -ENOMEM;
    }
    log->jobs++;
    return 0;
}

int rv_plog_when_ready(rv_plog_t *log, rv_task_fn *fn, void *arg)
{
    if (rv_plog_is_ready(log)) {
        if (fn != NULL)
            fn(arg);
        return 0;
    }
    if (fn == NULL) /* no one to call back: load it, nothing more */
        return log->load == PLOG_UNLOADED ? plog_load_start(log) : 0;
    struct plog_pending *p = malloc(sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    *p = (struct plog_pending){.fn = fn, .arg = arg};
    if (log->load == PLOG_UNLOADED && plog_load_start(log) < 0) {
        free(p);
        return -ENOMEM;
    }
    if (log->pending_tail != NULL)
        log->pending_tail->next = p;
    else
        log->pending_head = p;
    log->pending_tail = p;
    return 0;
}

/* Cut the zeros direct writes left past segment `base`'s `size` bytes
 * (blocking; through fd, or a descriptor of its own when fd < 0), and sync
 * when is_sync. A file shorter than size is an error: never grown, which
 * would hide bytes that were not written. Without the sync a crash may bring
 * the zeros back, which recovery cuts as any torn tail. */
static int plog_cut_padding(const struct rv_plog *log, uint64_t base, int fd, uint64_t size,
                            bool is_sync)
{
    char path[PATH_MAX];
    int own = -1;
    int rc = plog_path(path, sizeof(path), log, base, ".log");
    if (rc == 0 && fd < 0) {
        own = rv_sys_open(path, O_RDWR, 0);
        rc = own < 0 ? rv_errf(own, "%s: open", path) : 0;
        fd = own;
    }
    struct stat st;
    if (rc == 0)
        rc = rv_sys_fstat(fd, &st);
    if (rc == 0 && (uint64_t)st.st_size < size)
        rc = rv_errf(-EIO, "%s: %lld bytes, shorter than the %llu written to it", path,
                     (long long)st.st_size, (unsigned long long)size);
    if (rc == 0 && (uint64_t)st.st_size > size)
        rc = rv_sys_ftruncate(fd, (off_t)size);
    if (rc == 0 && is_sync)
        rc = rv_sys_fdatasync(fd);
    if (own >= 0)
        (void)rv_sys_close(own); /* synced above, or the error says so */
    return rc;
}

/* Save the active segment's index if the files went stale (blocking). */
static int plog_save_index(struct rv_plog *log)
{
    struct rv_idx *idx = &plog_active(log)->idx;
    if (rv_idx_is_saved(idx))
        return 0;
    uint32_t changes = idx->changes;
    int rc = rv_idx_save(idx, log->dir);
    if (rc == 0)
        idx->saved_changes = changes;
    return rc;
}

/* Create the next segment file and open it (blocking). */
/* fdatasync the segment `base` through a descriptor of its own (blocking). */
static int plog_sync_path(const struct rv_plog *log, uint64_t base)
{
    char path[PATH_MAX];
    int rc = plog_path(path, sizeof(path), log, base, ".log");
    int fd = rc == 0 ? rv_sys_open(path, O_RDWR, 0) : rc;
    if (fd < 0)
        return rv_errf(fd, "%s: open to sync", path);
    rc = rv_sys_fdatasync(fd);
    (void)rv_sys_close(fd); /* the sync decides */
    return rc < 0 ? rv_errf(rc, "%s: fdatasync", path) : 0;
}

static int plog_roll_blocking(struct rv_plog *log, uint64_t base)
{
    /* A descriptor parked by recovery was closed dirty: sync the file anyway,
     * or a power loss could take what the WAL no longer holds. */
    int rc = log->fd >= 0 ? rv_sys_fdatasync(log->fd)
                          : plog_sync_path(log, plog_active(log)->base_offset);
    if (rc == 0)
        rc = plog_save_index(log);
    if (rc == 0)
        rc = rv_seg_create(log->dir, base);
    if (rc == 0)
        rc = rv_sys_fsync_dir(log->dir);
    if (rc < 0)
        return rc;
    if (log->fd >= 0)
        (void)rv_sys_close(log->fd); /* synced above */
    log->fd = -1;
    rc = plog_seg_push(log, base);
    if (rc == 0) { /* the old segment is synced whole, the new one empty */
        log->durable_base = base;
        log->durable_size = 0;
    }
    return rc < 0 ? rc : plog_open_active_fd(log);
}

static bool plog_needs_roll(struct rv_plog *log, uint32_t len, int64_t now_ms)
{
    struct rv_seg *s = plog_active(log);
    if (s->size_bytes == 0)
        return false;
    if (s->size_bytes + len > log->cfg.segment_bytes)
        return true;
    return log->cfg.segment_ms > 0 && s->created_ms > 0 &&
           now_ms - s->created_ms >= log->cfg.segment_ms;
}

/* Account for a batch written at the end of the active segment. */
static void plog_note_written(struct rv_plog *log, uint64_t pos, uint32_t len, int64_t base,
                              int64_t last, int64_t max_ts)
{
    struct rv_seg *s = plog_active(log);
    if (rv_idx_note_batch(&s->idx, (uint64_t)base, (uint32_t)pos, len, max_ts) < 0)
        rv_debug("log %s: index entry dropped (no memory)", log->dir);
    if (s->size_bytes == 0)
        s->created_ms = rv_clock_wall_ms();
    s->size_bytes = pos + len;
    s->next_offset = (uint64_t)last + 1;
    if (max_ts > s->max_timestamp_ms)
        s->max_timestamp_ms = max_ts;
    log->is_dirty = true;
}

int rv_plog_replay(rv_plog_t *log, const uint8_t *batch, uint32_t len)
{
    struct rv_batch_view v;
    int n = rv_batch_parse(batch, len, log->cfg.max_batch_bytes, &v);
    if (n < 0)
        return rv_errf(n, "log %s: replayed batch is invalid", log->dir);
    int64_t last = rv_batch_last_offset(&v);
    if (last < log->leo)
        return 0; /* already in the segment */
    if (v.base_offset < log->leo)
        return rv_errf(-EBADMSG,
                       "log %s: replayed batch %" PRId64 "..%" PRId64
                       " overlaps the log end %" PRId64,
                       log->dir, v.base_offset, last, log->leo);
    if (v.base_offset > log->leo)
        rv_warn("log %s: offsets %" PRId64 "..%" PRId64 " missing before replayed batch", log->dir,
                log->leo, v.base_offset - 1);
    int rc = 0;
    if (plog_needs_roll(log, len, rv_clock_wall_ms()))
        rc = plog_roll_blocking(log, (uint64_t)v.base_offset);
    if (rc == 0 && log->fd < 0)
        rc = plog_open_active_fd(log);
    uint64_t pos = plog_active(log)->size_bytes;
    ssize_t w = rc == 0 ? rv_sys_pwrite(log->fd, batch, len, (off_t)pos) : rc;
    if (w < 0 || (uint32_t)w != len)
        return rv_errf(w < 0 ? (int)w : -ENOSPC, "log %s: replay write", log->dir);
    plog_note_written(log, pos, len, v.base_offset, last, v.max_timestamp);
    log->leo = log->next_offset = last + 1;
    return rv_pstate_replay(&log->pstate, &v);
}

/* Whether every applied batch is in the active segment's file (written, not
 * necessarily synced): a producer snapshot at the log end matches the files. */
static bool plog_is_settled(struct rv_plog *log)
{
    return log->state == PLOG_WRITABLE && log->writes_inflight == 0 && log->roll_head == NULL &&
           !plog_has_held_writes(log) && log->seg_count > 0 &&
           plog_active(log)->next_offset == (uint64_t)log->leo;
}

/* Write the producers' snapshot now if it is behind (blocking: close and
 * recovery, after the segment sync). A failure is only logged: the next
 * start rebuilds the state from the log. */
static void plog_pstate_save_blocking(struct rv_plog *log)
{
    if (!rv_pstate_needs_snapshot(&log->pstate) || !plog_is_settled(log))
        return;
    if (rv_pstate_snapshot_save(&log->pstate, log->dir, log->leo, log->log_start,
                                rv_clock_wall_ms()) < 0)
        return; /* logged; the next start rebuilds the state from the log */
}

static int plog_sync_blocking(struct rv_plog *log);

int rv_plog_sync_blocking(rv_plog_t *log)
{
    if (log->needs_recovery) /* its data since the checkpoint is in the WAL alone */
        return rv_errf(-EIO, "log %s: waits for its rebuild from the WAL", log->dir);
    return log->load == PLOG_LOADED ? plog_sync_blocking(log) : 0;
}

/* Everything written is on disk now (a blocking sync). */
static void plog_note_durable(struct rv_plog *log)
{
    log->durable_base = plog_active(log)->base_offset;
    log->durable_size = plog_active(log)->size_bytes;
}

/* rv_plog_sync_blocking whatever the load state (a recovery's load). */
static int plog_sync_blocking(struct rv_plog *log)
{
    if (log->state == PLOG_FAILED)
        return -EIO;
    if (plog_has_held_writes(log) || log->writes_inflight > 0)
        return rv_errf(-EIO, "log %s: writes still held (the WAL has them)", log->dir);
    if (log->dw.is_padded) { /* direct writes' zeros past the data: cut, synced */
        struct rv_seg *act = plog_active(log);
        int rc = plog_cut_padding(log, act->base_offset, log->fd, act->size_bytes, true);
        if (rc < 0)
            return rc;
        log->dw.is_padded = false;
    }
    if (!log->is_dirty) { /* synced already: at most a stale index to save */
        int rc = plog_save_index(log);
        if (rc == 0)
            plog_pstate_save_blocking(log);
        if (rc == 0 && log->roll_head == NULL && log->writes_inflight == 0)
            plog_note_durable(log);
        return rc;
    }
    int fd = log->fd;
    int rc = 0;
    if (fd < 0) { /* closed dirty by recovery: a descriptor for this sync only */
        char path[PATH_MAX];
        rc = plog_path(path, sizeof(path), log, plog_active(log)->base_offset, ".log");
        fd = rc == 0 ? rv_sys_open(path, O_RDWR, 0) : rc;
        rc = fd < 0 ? rv_errf(fd, "%s: open", path) : 0;
    }
    if (rc == 0)
        rc = rv_sys_fdatasync(fd); /* syncs the file, whichever descriptor wrote */
    if (fd >= 0 && fd != log->fd)
        (void)rv_sys_close(fd); /* synced above, or the sync failed and says so */
    if (rc == 0)
        rc = plog_save_index(log);
    if (rc == 0) {
        log->is_dirty = false;
        plog_note_durable(log); /* blocking callers hold nothing in flight */
        plog_pstate_save_blocking(log);
    }
    return rc;
}

/* ---- the hot tier ---------------------------------------------------------------------------- */

int rv_hot_create(struct rv_hot **out, uint64_t budget_bytes)
{
    struct rv_hot *hot = calloc(1, sizeof(*hot));
    if (hot == NULL)
        return -ENOMEM;
    hot->budget_bytes = budget_bytes;
    *out = hot;
    return 0;
}

void rv_hot_destroy(struct rv_hot *hot)
{
    if (hot == NULL)
        return;
    RV_ASSERT(hot->oldest == NULL); /* every log was closed first */
    free(hot);
}

void rv_hot_get_stats(const struct rv_hot *hot, struct rv_hot_stats *out)
{
    *out = hot->stats;
}

static void hot_unlink(struct rv_hot *hot, struct hot_entry *e)
{
    struct rv_plog *log = e->log;
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        log->hot_first = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        log->hot_last = e->prev;
    if (e->lru_prev != NULL)
        e->lru_prev->lru_next = e->lru_next;
    else
        hot->oldest = e->lru_next;
    if (e->lru_next != NULL)
        e->lru_next->lru_prev = e->lru_prev;
    else
        hot->newest = e->lru_prev;
    hot->stats.bytes -= e->len;
    hot->stats.batches--;
    if (!e->is_on_disk && !e->is_uncounted)
        hot->stats.unwritten -= e->len;
    rv_buf_put(e->buf);
    if (e->is_malloced)
        free(e);
    else
        rv_pool_put(e);
}

/* Evict the oldest batches beyond the budget; never one not yet on disk. */
static void hot_trim(struct rv_hot *hot)
{
    struct hot_entry *e = hot->oldest;
    while (hot->stats.bytes > hot->budget_bytes && e != NULL) {
        struct hot_entry *next = e->lru_next;
        if (e->is_on_disk) {
            hot_unlink(hot, e);
            hot->stats.evicted++;
        }
        e = next;
    }
}

/* e's segment write completed (or is given up: the WAL holds the batch). */
static void hot_set_on_disk(struct hot_entry *e)
{
    if (e->is_on_disk)
        return;
    e->is_on_disk = true;
    if (!e->is_uncounted)
        e->log->shard->hot->stats.unwritten -= e->len;
}

/* e's log failed before its write: it is never written (the WAL has it and
 * the rebuild brings it back), so it leaves the shard's unwritten bytes, but
 * stays pinned: the segment does not hold it. */
static void hot_set_uncounted(struct hot_entry *e)
{
    if (e->is_on_disk || e->is_uncounted)
        return;
    e->is_uncounted = true;
    e->log->shard->hot->stats.unwritten -= e->len;
}

static struct hot_entry *hot_add(struct rv_plog *log, struct append_op *op)
{
    struct rv_hot *hot = log->shard->hot;
    struct hot_entry *e = plog_pool_get(log, sizeof(*e));
    bool is_malloced = e == NULL;
    if (is_malloced)
        e = malloc(sizeof(*e)); /* the segment write needs it: never skip it */
    if (e == NULL)
        return NULL;
    *e = (struct hot_entry){
        .log = log,
        .buf = op->buf,
        .bytes = op->bytes,
        .len = op->len,
        .base = op->base,
        .last = op->last,
        .max_ts = op->max_ts,
        .is_malloced = is_malloced,
    };
    rv_buf_get(op->buf);
    e->prev = log->hot_last;
    if (log->hot_last != NULL)
        log->hot_last->next = e;
    else
        log->hot_first = e;
    log->hot_last = e;
    e->lru_prev = hot->newest;
    if (hot->newest != NULL)
        hot->newest->lru_next = e;
    else
        hot->oldest = e;
    hot->newest = e;
    hot->stats.bytes += e->len;
    hot->stats.batches++;
    hot->stats.unwritten += e->len;
    return e;
}

/* Drop this log's hot batches below `offset` (those on disk). */
static void hot_drop_below(struct rv_plog *log, int64_t offset)
{
    struct hot_entry *e = log->hot_first;
    while (e != NULL && e->last < offset) {
        struct hot_entry *next = e->next;
        if (e->is_on_disk)
            hot_unlink(log->shard->hot, e);
        e = next;
    }
}

/* ---- the shard's descriptor budget (see plog.h) ----------------------------------------------- */

#define FDS_RETRY_MIN_US 1000   /* first wait after EMFILE before the slots come back */
#define FDS_RETRY_MAX_US 100000 /* longest wait while EMFILE keeps coming */
#define FDS_SCAN_MAX     16     /* least recently used logs looked at for a victim */

static void plog_fail(struct rv_plog *log, int err);
static void plog_dw_forget(struct rv_plog *log);
static void plog_ckpt_try(struct rv_plog *log);
static void plog_roll_flush_queue(struct rv_plog *log);
static int plog_sync_issue(struct rv_plog *log, bool is_ckpt);

static bool plog_is_emfile(int64_t err)
{
    return err == -EMFILE || err == -ENFILE;
}

static void fds_lru_add(struct rv_plog_fds *f, struct rv_plog *log)
{
    log->lru_prev = f->lru_newest;
    log->lru_next = NULL;
    if (f->lru_newest != NULL)
        f->lru_newest->lru_next = log;
    else
        f->lru_oldest = log;
    f->lru_newest = log;
}

static void fds_lru_del(struct rv_plog_fds *f, struct rv_plog *log)
{
    if (log->lru_prev != NULL)
        log->lru_prev->lru_next = log->lru_next;
    else
        f->lru_oldest = log->lru_next;
    if (log->lru_next != NULL)
        log->lru_next->lru_prev = log->lru_prev;
    else
        f->lru_newest = log->lru_prev;
    log->lru_prev = log->lru_next = NULL;
}

/* The log used its descriptor: it becomes the most recently used. */
static void fds_lru_touch(struct rv_plog_fds *f, struct rv_plog *log)
{
    if (f->lru_newest != log) {
        fds_lru_del(f, log);
        fds_lru_add(f, log);
    }
}

static void fds_took(struct rv_plog_fds *f)
{
    f->used++;
    if (f->used > f->used_max)
        f->used_max = f->used;
}

/* Hand free slots to the waiters, oldest first. A waiter's callback may take
 * or give back slots itself: the loop re-reads everything. */
static void fds_pump(struct rv_plog_fds *f)
{
    if (f->is_pumping)
        return;
    f->is_pumping = true;
    while (f->wait_head != NULL && f->used < f->limit) {
        struct rv_plog_fd_waiter *w = f->wait_head;
        f->wait_head = w->next;
        if (f->wait_head == NULL)
            f->wait_tail = NULL;
        f->waiting--;
        fds_took(f);
        w->fn(w, 0);
    }
    f->is_pumping = false;
}

static void fds_put(struct rv_plog_fds *f)
{
    RV_ASSERT(f->used > 0);
    f->used--;
    fds_pump(f);
}

static bool fds_need_room(const struct rv_plog_fds *f)
{
    return f->waiting > f->evicting;
}

static bool plog_fd_evict(struct rv_plog *log);

/* Free slots for the waiters: evict quiet logs from the least recently used
 * end, and else `quiet` (a log that just went quiet; NULL: none). */
static void fds_make_room(struct rv_plog_fds *f, struct rv_plog *quiet)
{
    /* Collected first: an eviction may run callbacks that reorder the list. */
    struct rv_plog *victims[FDS_SCAN_MAX];
    uint32_t n = 0;
    for (struct rv_plog *log = f->lru_oldest; log != NULL && n < FDS_SCAN_MAX; log = log->lru_next)
        victims[n++] = log;
    for (uint32_t i = 0; i < n && fds_need_room(f); i++)
        (void)plog_fd_evict(victims[i]);
    if (quiet != NULL && fds_need_room(f))
        (void)plog_fd_evict(quiet);
}

/* A slot now (true), or w is queued for one (false). */
static bool fds_take(struct rv_plog_fds *f, struct rv_plog_fd_waiter *w)
{
    if (f->wait_head == NULL && f->used < f->limit) {
        fds_took(f);
        return true;
    }
    w->next = NULL;
    if (f->wait_tail != NULL)
        f->wait_tail->next = w;
    else
        f->wait_head = w;
    f->wait_tail = w;
    f->waiting++;
    f->waits++;
    fds_make_room(f, NULL);
    return false;
}

static void fds_retry_tick(void *arg)
{
    struct rv_plog_fds *f = arg;
    f->is_retry_armed = false;
    f->limit = f->budget; /* the kernel may have descriptors again: try */
    fds_pump(f);
    if (fds_need_room(f))
        fds_make_room(f, NULL);
}

/*
 * The kernel answered EMFILE/ENFILE to an open that held a slot: the budget
 * is more than the process can have now. The slot goes back, the usable slots
 * shrink to those taken (the next close makes room for exactly one), a timer
 * restores them later, and w waits first in line. False when the store is
 * closing and nothing of this shard could ever be closed to make room: the
 * caller fails instead of waiting for the kernel.
 */
static bool fds_emfile(struct rv_plog_fds *f, struct rv_plog_fd_waiter *w)
{
    RV_ASSERT(f->used > 0);
    f->used--;
    f->emfiles++;
    if (f->is_closing && f->used == 0) {
        fds_pump(f);
        return false;
    }
    if (f->emfiles == 1 || f->retry_us == FDS_RETRY_MIN_US)
        rv_warn("storage: the process is out of descriptors (%u open for partition logs on "
                "this shard, budget %u); opens wait for one to close",
                f->used, f->budget);
    f->limit = f->used;
    w->next = f->wait_head;
    f->wait_head = w;
    if (f->wait_tail == NULL)
        f->wait_tail = w;
    f->waiting++;
    if (!f->is_retry_armed) {
        if (rv_timer_add(f->retry_us, fds_retry_tick, f, &f->retry_timer) == 0)
            f->is_retry_armed = true;
        else
            f->limit = f->budget; /* no timer: no waiting on one */
        f->retry_us = f->retry_us * 2 > FDS_RETRY_MAX_US ? FDS_RETRY_MAX_US : f->retry_us * 2;
    }
    fds_make_room(f, NULL);
    return true;
}

static void fds_closed(void *arg, int64_t res)
{
    (void)res; /* nothing dirty was left behind the descriptor (see callers) */
    struct rv_plog_fds *f = arg;
    RV_ASSERT(f->closing > 0);
    f->closing--;
    fds_put(f);
}

static void fds_closed_evicted(void *arg, int64_t res)
{
    struct rv_plog_fds *f = arg;
    RV_ASSERT(f->evicting > 0);
    f->evicting--;
    fds_closed(f, res);
}

/* Close the log's descriptor through the ring; its slot comes free when the
 * close completes. The log must be quiet and clean, or failed. */
static void plog_fd_drop(struct rv_plog *log, bool is_eviction)
{
    struct rv_plog_fds *f = &log->shard->fds;
    RV_ASSERT(log->has_slot && log->fd >= 0);
    int fd = log->fd;
    log->fd = -1;
    plog_dw_forget(log);
    log->has_slot = false;
    fds_lru_del(f, log);
    f->closing++;
    if (is_eviction) {
        f->evicting++;
        f->evictions++;
    }
    rv_io_fn *done = is_eviction ? fds_closed_evicted : fds_closed;
    if (rv_file_close(fd, done, f) < 0) {
        (void)rv_sys_close(fd); /* the ring is full: close here (nothing dirty) */
        done(f, 0);
    }
}

/* Nothing uses the descriptor and nothing is about to. */
static bool plog_fd_is_quiet(const struct rv_plog *log)
{
    return log->fd >= 0 && log->has_slot && log->fd_users == 0 && log->writes_inflight == 0 &&
           !log->is_syncing && !plog_has_held_writes(log) && log->roll_head == NULL &&
           !log->is_opening && !log->is_roll_job && log->state != PLOG_ROLLING &&
           !log->is_disk_full && !log->has_ckpt;
}

/* Give the log's descriptor back for a waiter: close it, fdatasyncing a dirty
 * log first. True when an eviction started. */
static bool plog_fd_evict(struct rv_plog *log)
{
    struct rv_plog_fds *f = &log->shard->fds;
    if (log->is_evicting || !plog_fd_is_quiet(log))
        return false;
    if (log->is_dirty && log->state == PLOG_WRITABLE) {
        if (plog_sync_issue(log, false) < 0)
            return false; /* the ring is full: the next quiet log or completion tries */
        log->is_evicting = true;
        f->evicting++;
        return true;
    }
    plog_fd_drop(log, true); /* clean, or failed: the WAL has its data */
    return true;
}

/* The log may have gone quiet: if openers wait, it may give its slot. */
static void plog_fd_went_quiet(struct rv_plog *log)
{
    struct rv_plog_fds *f = &log->shard->fds;
    if (fds_need_room(f))
        fds_make_room(f, log);
}

void rv_plog_fds_init(struct rv_plog_shard *shard, uint32_t budget)
{
    shard->fds = (struct rv_plog_fds){
        .budget = budget > 0 ? budget : 1,
        .limit = budget > 0 ? budget : 1,
        .retry_us = FDS_RETRY_MIN_US,
    };
}

void rv_plog_fds_closing(struct rv_plog_shard *shard)
{
    shard->fds.is_closing = true;
}

bool rv_plog_fds_is_idle(const struct rv_plog_shard *shard)
{
    return shard->fds.wait_head == NULL && shard->fds.closing == 0;
}

void rv_plog_fds_close_all(struct rv_plog_shard *shard)
{
    struct rv_plog_fds *f = &shard->fds;
    while (f->lru_oldest != NULL) {
        struct rv_plog *log = f->lru_oldest;
        RV_ASSERT(rv_plog_is_idle(log) && log->fd >= 0);
        fds_lru_del(f, log);
        (void)rv_sys_close(log->fd); /* idle: dirty pages stay for the final sync */
        log->fd = -1;
        plog_dw_forget(log);
        log->has_slot = false;
        f->used--;
    }
}

void rv_plog_fds_fini(struct rv_plog_shard *shard)
{
    struct rv_plog_fds *f = &shard->fds;
    if (f->is_retry_armed)
        (void)rv_timer_cancel(f->retry_timer); /* pending: it never runs now */
    f->is_retry_armed = false;
    while (f->wait_head != NULL) { /* none after a quiesce; fail any, never hang */
        struct rv_plog_fd_waiter *w = f->wait_head;
        f->wait_head = w->next;
        f->waiting--;
        w->fn(w, -ESHUTDOWN);
    }
    f->wait_tail = NULL;
}

void rv_plog_attach(rv_plog_t *log, struct rv_plog_shard *shard)
{
    log->shard = shard;
    if (log->fd >= 0) { /* kept from recovery: it takes a slot, over the budget if need be */
        log->has_slot = true;
        fds_took(&shard->fds);
        fds_lru_add(&shard->fds, log);
    }
}

void rv_plog_fds_sweep(struct rv_plog_shard *shard)
{
    struct rv_plog_fds *f = &shard->fds;
    struct rv_plog *log = f->lru_oldest;
    while (log != NULL) {
        struct rv_plog *next = log->lru_next; /* closing unlinks log, nothing else */
        (void)rv_plog_close_idle_fd(log);
        log = next;
    }
    if (!f->is_retry_armed && f->wait_head == NULL)
        f->retry_us = FDS_RETRY_MIN_US;
}

/* ---- append and apply ---------------------------------------------------------------------- */

static void plog_fail(struct rv_plog *log, int err)
{
    if (log->state != PLOG_FAILED)
        rv_error("log %s: segment write or sync failed: %s; appends refused until it is "
                 "rebuilt from the WAL (which holds the data)",
                 log->dir, rv_strerror(err));
    log->state = PLOG_FAILED;
}

static void plog_write_done(void *arg, int64_t res);
static void plog_fd_open_start(struct rv_plog *log);
static void plog_dw_issue(struct rv_plog *log);
static void plog_dw_abandon(struct rv_plog *log);

#define PLOG_RETRY_US 100000 /* how often a full disk is tried again */

/* Retry every failed write (and a failed roll) now. */
static void plog_retry_tick(void *arg)
{
    struct rv_plog *log = arg;
    log->is_retry_armed = false;
    log->jobs--;
    struct hot_entry *e = log->retry_head;
    log->retry_head = NULL;
    log->is_disk_full = false; /* until a retry fails again */
    while (e != NULL) {
        struct hot_entry *next = e->retry_next; /* a failed retry relinks e */
        log->writes_inflight++;
        int rc = rv_file_write(log->fd, e->bytes, e->len, e->pos, plog_write_done, e);
        if (rc < 0)
            plog_write_done(e, rc);
        e = next;
    }
    if (log->dw.is_held && log->writes_inflight == 0) {
        if (log->state == PLOG_FAILED)
            plog_dw_abandon(log);
        else
            plog_dw_issue(log); /* the held direct write, or the one the pool refused */
    }
    if (log->fd < 0 && log->roll_head != NULL && log->state == PLOG_WRITABLE)
        plog_fd_open_start(log); /* an open the ring had no room for */
    plog_ckpt_try(log);          /* continues a roll or a checkpoint that waited */
    if (!log->is_disk_full && log->state == PLOG_WRITABLE)
        plog_roll_flush_queue(log);
    plog_fd_went_quiet(log);
}

#define PLOG_BUSY_US 200 /* how soon an operation the ring had no room for is retried */

/* Arm the retry timer. Without one (no memory) nothing would ever retry: the
 * log fails instead (its data is in the WAL) and a held direct write is
 * dropped, so the log can still close and its final sync says it failed. */
static void plog_retry_arm(struct rv_plog *log, uint64_t delay_us)
{
    if (log->is_retry_armed)
        return;
    if (rv_timer_add(delay_us, plog_retry_tick, log, NULL) == 0) {
        log->is_retry_armed = true;
        log->jobs++;
        return;
    }
    plog_fail(log, -ENOMEM);
    if (log->dw.is_held && log->writes_inflight == 0)
        plog_dw_abandon(log);
    while (log->retry_head != NULL) { /* buffered writes that waited: never written now */
        struct hot_entry *e = log->retry_head;
        log->retry_head = e->retry_next;
        hot_set_on_disk(e); /* the WAL has it; the hot tier may drop it */
        rv_buf_put(e->buf); /* the write's reference */
    }
    log->is_disk_full = false;
    plog_roll_flush_queue(log); /* releases what waited for a roll or room */
}

/* The ring had no room (io_depth operations in flight): try again very soon.
 * Backpressure, not a failure. e is a write to retry, or NULL. */
static void plog_retry_after(struct rv_plog *log, struct hot_entry *e, uint64_t delay_us)
{
    if (e != NULL) {
        e->retry_next = log->retry_head;
        log->retry_head = e;
    }
    plog_retry_arm(log, delay_us);
}

static void plog_later(struct rv_plog *log, struct hot_entry *e)
{
    plog_retry_after(log, e, PLOG_BUSY_US);
}

/* A write (e) or a roll (e NULL) failed for lack of space. */
static void plog_disk_full(struct rv_plog *log, struct hot_entry *e)
{
    if (!log->is_disk_full) {
        rv_warn("log %s: disk full; holding writes and retrying every %d ms", log->dir,
                PLOG_RETRY_US / 1000);
        rv_wal_drop_kept(log->shard->wal); /* the WAL's kept files give some room back */
    }
    log->is_disk_full = true;
    if (e != NULL) {
        e->retry_next = log->retry_head;
        log->retry_head = e;
    }
    plog_retry_arm(log, PLOG_RETRY_US);
}

static void plog_write_done(void *arg, int64_t res)
{
    struct hot_entry *e = arg;
    struct rv_plog *log = e->log;
    RV_ASSERT(log->writes_inflight > 0);
    log->writes_inflight--;
    int err = res < 0 ? (int)res : (uint32_t)res != e->len ? -ENOSPC : 0;
    if (err == -EAGAIN && log->state != PLOG_FAILED) {
        plog_later(log, e); /* the ring was full: not an I/O error */
        return;
    }
    if (err == -ENOSPC && log->state != PLOG_FAILED) {
        /* Disk full: keep the batch (and its place in the file) and write it
         * again later; later batches wait in memory meanwhile. */
        plog_disk_full(log, e);
        return;
    }
    if (err < 0)
        plog_fail(log, err);
    hot_set_on_disk(e);
    rv_buf_put(e->buf); /* the write's reference */
    hot_trim(log->shard->hot);
    plog_ckpt_try(log);
    plog_fd_went_quiet(log);
}

/* ---- direct segment writes ---------------------------------------------------------------------
 *
 * An active segment opened with O_DIRECT (rv_plog_shard.is_seg_direct) takes
 * no page-cache copy on the shard's thread: its applied batches stay in the
 * hot tier (pinned: not on disk yet) and are copied, in file order, into the
 * 4 KiB-aligned parts of up to PLOG_DW_BLOCKS pool blocks (one writev); one
 * write is in flight per log, and what arrives meanwhile goes out with the
 * next one. A write that ends inside a 4 KiB block pads it with zeros, and the
 * next write starts at that block again (its bytes are kept in dw.tail: the
 * same bytes, so a torn rewrite leaves them intact). The zeros past the data
 * are cut at roll and at close; after a crash, recovery cuts them as padding
 * (storage/seg.c). After a reopen the tail block is read back before the first
 * write. A held write (ring, pool or disk full) is issued again by the retry
 * timer, and a roll waits for it. Redpanda's segment appender works the same
 * way (aligned chunks, the head rewritten). */

#define PLOG_DW_ALIGN 4096u /* the block every direct write starts and ends on */

static uint64_t dw_align_down(uint64_t v)
{
    return v & ~(uint64_t)(PLOG_DW_ALIGN - 1);
}

/* A pool block for direct I/O of up to `want` bytes (at most 1 MiB less a
 * block): its 4 KiB-aligned part in *data and *cap. NULL when the pool is spent. */
static void *plog_dw_block(struct rv_plog *log, uint64_t want, uint8_t **data, uint32_t *cap)
{
    want += PLOG_DW_ALIGN; /* room to align */
    void *blk = rv_pool_get(log->shard->pool, want < RV_POOL_BLOCK_MAX ? want : RV_POOL_BLOCK_MAX);
    if (blk == NULL)
        return NULL;
    *data = (uint8_t *)(((uintptr_t)blk + PLOG_DW_ALIGN - 1) & ~(uintptr_t)(PLOG_DW_ALIGN - 1));
    *cap = (uint32_t)dw_align_down((uint64_t)((uint8_t *)blk + rv_pool_block_size(blk) - *data));
    return blk;
}

static void plog_dw_put_blocks(struct plog_dw *dw)
{
    for (uint32_t i = 0; i < dw->nblk; i++)
        rv_pool_put(dw->blks[i]);
    dw->nblk = 0;
}

/* Copy the entries' next bytes into data[n..cap); returns the new n. */
static uint32_t plog_dw_copy(struct plog_dw *dw, uint8_t *data, uint32_t n, uint32_t cap)
{
    while (dw->next != NULL && n < cap) {
        struct hot_entry *e = dw->next;
        uint32_t take = e->len - dw->next_done;
        take = take < cap - n ? take : cap - n;
        memcpy(data + n, e->bytes + dw->next_done, take);
        n += take;
        dw->next_done += take;
        if (dw->next_done == e->len) {
            dw->next = e->next != NULL && e->next->is_noted ? e->next : NULL;
            dw->next_done = 0;
        }
    }
    return n;
}

/* Copy the next bytes to write (the tail block first, then entries) into up
 * to PLOG_DW_BLOCKS staging blocks. -ENOBUFS when the pool has none. */
static int plog_dw_prepare(struct rv_plog *log)
{
    struct plog_dw *dw = &log->dw;
    RV_ASSERT(dw->next != NULL && dw->has_tail && dw->nblk == 0);
    RV_ASSERT(dw->next->pos + dw->next_done == dw->end);
    uint64_t pos = dw_align_down(dw->end);
    uint32_t carry = (uint32_t)(dw->end - pos);
    uint64_t left = carry + (plog_active(log)->size_bytes - dw->end); /* to write */
    if (dw->tail == NULL && (dw->tail = rv_pool_get(log->shard->pool, PLOG_DW_ALIGN)) == NULL)
        return -ENOBUFS;
    uint64_t total = 0;
    while (dw->nblk < PLOG_DW_BLOCKS && dw->next != NULL) {
        uint8_t *data;
        uint32_t cap;
        void *blk = plog_dw_block(log, left - total, &data, &cap);
        if (blk == NULL && dw->nblk == 0 && left > PLOG_DW_ALIGN) {
            /* No block that size (a fragmented pool): a smaller write still
             * makes progress, where waiting for a large one might not. */
            blk = plog_dw_block(log, PLOG_DW_ALIGN, &data, &cap);
        }
        if (blk == NULL)
            break; /* a shorter write, or none */
        RV_ASSERT(cap > carry);
        uint32_t n = 0;
        if (dw->nblk == 0) {
            memcpy(data, dw->tail, carry);
            n = carry;
        }
        n = plog_dw_copy(dw, data, n, cap);
        dw->blks[dw->nblk] = blk;
        dw->iov[dw->nblk++] = (struct iovec){.iov_base = data, .iov_len = n};
        total += n;
        if (n < cap)
            break; /* nothing more to write */
    }
    if (dw->nblk == 0)
        return -ENOBUFS;
    struct iovec *last = &dw->iov[dw->nblk - 1];
    uint8_t *data = last->iov_base;
    uint32_t n = (uint32_t)last->iov_len;
    uint32_t padded = (uint32_t)dw_align_down(n + PLOG_DW_ALIGN - 1);
    memset(data + n, 0, padded - n);
    last->iov_len = padded;
    uint32_t rest = n % PLOG_DW_ALIGN;
    memcpy(dw->tail, data + n - rest, rest); /* the next write starts with these */
    dw->end = pos + total;
    dw->pos = pos;
    dw->valid = (uint32_t)total;
    dw->len = (uint32_t)(total + padded - n);
    return 0;
}

static void plog_dw_done(void *arg, int64_t res);

/* Issue the prepared write, or prepare one from what waits. */
static void plog_dw_issue(struct rv_plog *log)
{
    struct plog_dw *dw = &log->dw;
    RV_ASSERT(log->writes_inflight == 0 && log->fd >= 0);
    dw->is_held = false;
    if (dw->nblk == 0 && plog_dw_prepare(log) < 0) {
        dw->is_held = true; /* the pool is spent: backpressure, tried again shortly */
        plog_later(log, NULL);
        return;
    }
    if (dw->valid < dw->len)
        dw->is_padded = true;
    log->writes_inflight++;
    int rc = dw->nblk == 1
                 ? rv_file_write(log->fd, dw->iov[0].iov_base, dw->len, dw->pos, plog_dw_done, log)
                 : rv_file_writev(log->fd, dw->iov, (int)dw->nblk, dw->pos, plog_dw_done, log);
    if (rc < 0)
        plog_dw_done(log, rc);
}

/* Mark the entries wholly in the file below `written` as on disk. */
static void plog_dw_mark(struct rv_plog *log, uint64_t written)
{
    struct hot_entry *e = log->dw.first;
    while (e != NULL && e->is_noted && !e->is_on_disk && e->pos + e->len <= written) {
        hot_set_on_disk(e);
        e = e->next;
    }
    log->dw.first = e != NULL && e->is_noted && !e->is_on_disk ? e : NULL;
}

/* A failed log writes nothing more: let the hot tier drop what waited (the
 * WAL has it and replays it at the next start). */
static void plog_dw_abandon(struct rv_plog *log)
{
    struct plog_dw *dw = &log->dw;
    for (struct hot_entry *e = dw->first; e != NULL; e = e->next) {
        if (e->is_noted)
            hot_set_on_disk(e);
    }
    plog_dw_put_blocks(dw);
    dw->first = dw->next = NULL;
    dw->is_held = false;
}

static void plog_dw_done(void *arg, int64_t res)
{
    struct rv_plog *log = arg;
    struct plog_dw *dw = &log->dw;
    RV_ASSERT(log->writes_inflight > 0);
    log->writes_inflight--;
    int err = res < 0 ? (int)res : (uint32_t)res != dw->len ? -ENOSPC : 0;
    if (log->state != PLOG_FAILED && (err == -EAGAIN || err == -ENOSPC)) {
        /* The ring was full, or the disk: the same write goes again later
         * (a short write too: the range is rewritten whole). */
        dw->is_held = true;
        if (err == -EAGAIN)
            plog_later(log, NULL);
        else
            plog_disk_full(log, NULL);
        return;
    }
    if (err < 0)
        plog_fail(log, err);
    if (log->state == PLOG_FAILED) {
        plog_dw_abandon(log);
    } else {
        plog_dw_mark(log, dw->pos + dw->valid);
        plog_dw_put_blocks(dw);
        if (dw->next != NULL)
            plog_dw_issue(log); /* what arrived meanwhile */
    }
    hot_trim(log->shard->hot);
    plog_ckpt_try(log);
    plog_fd_went_quiet(log);
}

/* A batch was noted at the end of a direct segment: write it now, or with
 * the next write if one is in flight. */
static void plog_dw_note(struct rv_plog *log, struct hot_entry *e)
{
    struct plog_dw *dw = &log->dw;
    if (dw->first == NULL)
        dw->first = e;
    if (dw->next == NULL) {
        dw->next = e;
        dw->next_done = 0;
    }
    if (log->writes_inflight == 0 && !dw->is_held)
        plog_dw_issue(log);
}

/* The descriptor is gone: the tail block is read again at the next open. */
static void plog_dw_forget(struct rv_plog *log)
{
    RV_ASSERT(log->dw.nblk == 0 && log->dw.next == NULL);
    rv_pool_put(log->dw.tail);
    log->dw.tail = NULL;
    log->dw.has_tail = false;
    log->is_fd_direct = false;
}

/* Write one applied batch at the end of the active segment. */
static void plog_write(struct rv_plog *log, struct append_op *op, struct hot_entry *e)
{
    struct rv_seg *s = plog_active(log);
    uint64_t pos = s->size_bytes;
    plog_note_written(log, pos, op->len, op->base, op->last, op->max_ts);
    if (e == NULL)
        plog_fail(log, -ENOMEM); /* sticky: the WAL replays it at the next start */
    if (e != NULL && log->state == PLOG_FAILED)
        hot_set_uncounted(e);
    if (e == NULL || log->state == PLOG_FAILED)
        return;
    e->pos = pos;
    e->is_noted = true;
    log->writes_total++;
    fds_lru_touch(&log->shard->fds, log);
    if (log->is_fd_direct) {
        plog_dw_note(log, e);
        return;
    }
    rv_buf_get(op->buf); /* held by the write until it completes */
    log->writes_inflight++;
    int rc = rv_file_write(log->fd, op->bytes, op->len, pos, plog_write_done, e);
    if (rc < 0)
        plog_write_done(e, rc);
}

static void plog_roll_start(struct rv_plog *log, uint64_t base);

static void plog_fd_open_issue(struct rv_plog *log);

static void plog_fd_open_retry(void *arg)
{
    plog_fd_open_issue(arg);
}

/* The active segment's descriptor is usable: write what waited. */
static void plog_fd_ready(struct rv_plog *log)
{
    log->jobs--;
    log->is_opening = false;
    plog_roll_flush_queue(log);
    plog_ckpt_try(log);
    plog_fd_went_quiet(log); /* a roll may have taken the queue: nothing to write */
}

static void plog_dw_tail_read(void *arg);

static void plog_dw_tail_done(void *arg, int64_t n)
{
    struct rv_plog *log = arg;
    struct plog_dw *dw = &log->dw;
    uint32_t rest = (uint32_t)(dw->end % PLOG_DW_ALIGN);
    if (n >= 0 && (uint64_t)n < rest) {
        rv_error("log %s: the active segment is shorter than the %" PRIu64 " bytes it holds",
                 log->dir, dw->end);
        n = -EIO;
    }
    if (n < 0) {
        plog_fail(log, (int)n);
    } else {
        memcpy(dw->tail, dw->iov[0].iov_base, rest);
        dw->has_tail = true;
    }
    plog_dw_put_blocks(dw);
    plog_fd_ready(log);
}

/* Read the block the active segment ends in (a direct write rewrites it). */
static void plog_dw_tail_read(void *arg)
{
    struct rv_plog *log = arg;
    struct plog_dw *dw = &log->dw;
    rv_pool_t *pool = log->shard->pool;
    if (dw->tail == NULL)
        dw->tail = rv_pool_get(pool, PLOG_DW_ALIGN);
    if (dw->nblk == 0 && dw->tail != NULL) {
        uint8_t *data;
        uint32_t cap;
        void *blk = plog_dw_block(log, PLOG_DW_ALIGN, &data, &cap);
        if (blk != NULL) {
            dw->blks[0] = blk;
            dw->iov[0] = (struct iovec){.iov_base = data, .iov_len = PLOG_DW_ALIGN};
            dw->nblk = 1;
        }
    }
    int rc = -ENOBUFS;
    if (dw->nblk == 1)
        rc = rv_file_read(log->fd, dw->iov[0].iov_base, PLOG_DW_ALIGN, dw_align_down(dw->end),
                          plog_dw_tail_done, log);
    if (rc == 0)
        return;
    if ((rc == -EAGAIN || rc == -ENOBUFS) &&
        rv_timer_add(PLOG_BUSY_US, plog_dw_tail_read, log, NULL) == 0)
        return; /* the ring or the pool is full: shortly */
    plog_dw_tail_done(log, rc);
}

static void plog_fd_opened(void *arg, int64_t res)
{
    struct rv_plog *log = arg;
    struct rv_plog_fds *f = &log->shard->fds;
    if (plog_is_emfile(res)) {
        log->has_slot = false;
        if (fds_emfile(f, &log->fd_wait))
            return; /* waits first in line: "at the budget", not a failure */
        res = -ESHUTDOWN;
    }
    if (res < 0) {
        log->jobs--;
        log->is_opening = false;
        if (log->has_slot) {
            log->has_slot = false;
            fds_put(f);
        }
        plog_fail(log, (int)res);
        plog_roll_flush_queue(log); /* releases them: the WAL replays them at start */
        return;
    }
    log->fd = (int)res;
    fds_lru_add(f, log);
    log->is_fd_direct = log->shard->is_seg_direct;
    if (log->is_fd_direct) {
        struct plog_dw *dw = &log->dw;
        RV_ASSERT(dw->first == NULL && dw->next == NULL && dw->nblk == 0);
        dw->end = plog_active(log)->size_bytes; /* everything before is written */
        if (dw->end % PLOG_DW_ALIGN == 0)
            dw->has_tail = true;
        if (!dw->has_tail) {
            plog_dw_tail_read(log); /* still opening until it is read */
            return;
        }
    }
    plog_fd_ready(log);
}

/* Open the active segment through the ring, holding a slot. */
static void plog_fd_open_issue(struct rv_plog *log)
{
    char path[PATH_MAX];
    int rc = plog_path(path, sizeof(path), log, plog_active(log)->base_offset, ".log");
    if (rc == 0)
        rc = rv_file_open(path, O_RDWR | (log->shard->is_seg_direct ? O_DIRECT : 0), 0,
                          plog_fd_opened, log);
    if (rc == -EAGAIN && rv_timer_add(PLOG_BUSY_US, plog_fd_open_retry, log, NULL) == 0)
        return; /* the ring is full: keep the slot and open shortly */
    if (rc < 0)
        plog_fd_opened(log, rc);
}

static void plog_fd_granted(struct rv_plog_fd_waiter *w, int err)
{
    struct rv_plog *log = (struct rv_plog *)((char *)w - offsetof(struct rv_plog, fd_wait));
    if (err < 0) {
        plog_fd_opened(log, err);
        return;
    }
    log->has_slot = true;
    plog_fd_open_issue(log);
}

/* Get the active segment's descriptor (a lazily opened or swept log): take a
 * slot of the shard's budget, or wait for one, then open through the ring. */
static void plog_fd_open_start(struct rv_plog *log)
{
    if (log->is_opening)
        return;
    log->is_opening = true;
    log->jobs++;
    if (fds_take(&log->shard->fds, &log->fd_wait)) {
        log->has_slot = true;
        plog_fd_open_issue(log);
    }
}

static void plog_apply(struct rv_plog *log, struct append_op *op)
{
    struct hot_entry *e = hot_add(log, op);
    log->leo = op->last + 1;
    if (log->shard->on_append != NULL)
        log->shard->on_append(log->shard->on_append_ctx, log->key);
    if (log->state == PLOG_WRITABLE && plog_needs_roll(log, op->len, rv_clock_wall_ms()))
        plog_roll_start(log, (uint64_t)op->base);
    if (log->state == PLOG_WRITABLE && log->fd < 0)
        plog_fd_open_start(log);
    if (log->state == PLOG_ROLLING || log->is_disk_full || log->fd < 0 || log->is_opening) {
        /* Keep the op (and its buffer) until the new segment exists, the
         * descriptor is ready or the disk has room again. Dirty already: a
         * checkpoint must wait for its write and sync, or it would pass a
         * batch that is in memory alone. */
        log->is_dirty = true;
        op->next = NULL;
        op->arg = e; /* its hot entry, for the write completion */
        if (log->roll_tail != NULL)
            log->roll_tail->next = op;
        else
            log->roll_head = op;
        log->roll_tail = op;
        return;
    }
    plog_write(log, op, e);
    rv_buf_put(op->buf);
    rv_pool_put(op);
}

/* acks none/leader: the append completes on the turn after it was taken, in
 * memory, before its WAL write (plog.h, "Acks"). */
static void plog_early_ack(void *arg)
{
    struct append_op *op = arg;
    op->is_ack_pending = false;
    op->is_acked = true;
    op->done(op->arg, op->base);
}

static void plog_wal_done(void *arg, int64_t lsn_or_err)
{
    struct append_op *op = arg;
    struct rv_plog *log = op->log;
    RV_ASSERT(log->appends_inflight > 0);
    log->appends_inflight--;
    if (op->is_ack_pending && rv_timer_cancel(op->ack_timer) == 0)
        op->is_ack_pending = false; /* the WAL came first: done runs now, as for acks=all */
    RV_ASSERT(!op->is_ack_pending);
    if (op->is_early) {
        RV_ASSERT(log->shard->early_bytes >= op->len);
        log->shard->early_bytes -= op->len;
    }
    rv_plog_append_fn *done = op->is_acked ? NULL : op->done;
    void *done_arg = op->arg;
    int64_t base = op->base;
    if (lsn_or_err < 0) {
        /* This and every later append of the log failed together: their
         * offsets were never visible and are assigned again. An append that
         * completed already (acks none/leader) is lost, as a leader's
         * acknowledged but unreplicated write is in Kafka. */
        if (log->next_offset > base)
            log->next_offset = base;
        if (op->is_tracked)
            rv_pstate_abort(&log->pstate, base);
        rv_buf_put(op->buf);
        rv_pool_put(op);
        if (done != NULL)
            done(done_arg, lsn_or_err);
        else
            rv_warn("log %s: offsets from %" PRId64 " were acknowledged without acks=all and are "
                    "lost: the WAL write failed (%s)",
                    log->dir, base, rv_strerror((int)lsn_or_err));
        return;
    }
    if (op->is_tracked)
        rv_pstate_confirm(&log->pstate, base);
    rv_pstate_note_applied(&log->pstate, op->len);
    plog_apply(log, op);
    if (done != NULL)
        done(done_arg, base);
}

/* A duplicate's answer, on a later turn as a written batch's would be. */
static void plog_dup_done(void *arg)
{
    struct append_op *op = arg;
    struct rv_plog *log = op->log;
    RV_ASSERT(log->appends_inflight > 0);
    log->appends_inflight--;
    op->done(op->arg, op->base);
    rv_buf_put(op->buf); /* after done: its bytes may still be read there */
    rv_pool_put(op);
}

/* A retried batch of an idempotent producer that is in the log already: not
 * written again; done gets the original's base offset, which is also stamped
 * in the caller's bytes (and, under LogAppendTime, its timestamp), as a
 * written batch's would be. */
static int plog_append_duplicate(struct rv_plog *log, rv_buf_t *buf, uint8_t *batch,
                                 const struct rv_pstate_dup *dup, rv_plog_append_fn *done,
                                 void *arg)
{
    struct append_op *op = plog_pool_get(log, sizeof(*op));
    if (op == NULL)
        return -ENOBUFS;
    *op = (struct append_op){
        .log = log, .buf = buf, .base = dup->base_offset, .done = done, .arg = arg};
    if (rv_timer_add(0, plog_dup_done, op, NULL) < 0) {
        rv_pool_put(op);
        return -ENOBUFS;
    }
    rv_buf_get(buf);
    rv_batch_set_base_offset(batch, dup->base_offset);
    if (log->cfg.is_log_append_time)
        rv_batch_set_log_append_time(batch, dup->max_timestamp);
    log->appends_inflight++;
    rv_debug("log %s: a retried batch, answered with its original offset %" PRId64, log->dir,
             dup->base_offset);
    return 0;
}

/* What a producer sends must be whole: a compressed batch's records are
 * decompressed (bounded) and walked like an uncompressed one's, and offsets
 * must be dense (0..count-1), as Kafka's produce path demands. */
static int plog_check_records(struct rv_plog *log, struct rv_batch_view *v)
{
    if (rv_batch_codec(v) == RV_CODEC_NONE && !v->has_dense_offsets)
        return rv_errf(-EINVAL, "append: record offsets are not dense");
    if (rv_batch_codec(v) == RV_CODEC_NONE) /* a compacted topic refuses records without key */
        return log->cfg.is_compact ? rv_compact_check_keys(v, v->records, v->records_bytes) : 0;
    struct rv_plog_shard *sh = log->shard;
    size_t n = 0;
    int rc = rv_codec_decompress_grow(rv_batch_codec(v), v->records, v->records_bytes, &sh->scratch,
                                      &sh->scratch_cap, RV_PLOG_SCRATCH_MAX, &n);
    if (rc < 0)
        return rv_errf(rc, "append: compressed records do not decompress");
    rc = rv_batch_validate_records(v, sh->scratch, n);
    if (rc < 0)
        return rv_errf(rc, "append: invalid compressed records");
    if (!v->has_dense_offsets)
        return rv_errf(-EINVAL, "append: record offsets are not dense");
    return log->cfg.is_compact ? rv_compact_check_keys(v, sh->scratch, n) : 0;
}

void rv_plog_check_params(const rv_plog_t *log, struct rv_plog_check *out)
{
    *out = (struct rv_plog_check){.max_batch_bytes = log->cfg.max_batch_bytes,
                                  .is_compact = log->cfg.is_compact};
}

int rv_plog_check_records(const struct rv_plog_check *c, const uint8_t *batch, uint32_t len,
                          struct rv_plog_checked *out_checked)
{
    struct rv_batch_view v;
    int n = rv_batch_parse(batch, len, c->max_batch_bytes, &v);
    if (n < 0)
        return n;
    *out_checked = (struct rv_plog_checked){.min_timestamp = v.records_min_timestamp,
                                            .max_timestamp = v.records_max_timestamp};
    if (rv_batch_codec(&v) == RV_CODEC_NONE) /* walked by the parse already */
        return !v.has_dense_offsets ? rv_errf(-EINVAL, "append: record offsets are not dense")
               : c->is_compact      ? rv_compact_check_keys(&v, v.records, v.records_bytes)
                                    : 0;
    uint8_t *scratch = NULL;
    size_t cap = 0, out = 0;
    int rc = rv_codec_decompress_grow(rv_batch_codec(&v), v.records, v.records_bytes, &scratch,
                                      &cap, RV_PLOG_SCRATCH_MAX, &out);
    if (rc < 0)
        rc = rv_errf(rc, "append: compressed records do not decompress");
    if (rc == 0 && (rc = rv_batch_validate_records(&v, scratch, out)) < 0)
        rc = rv_errf(rc, "append: invalid compressed records");
    if (rc == 0 && !v.has_dense_offsets)
        rc = rv_errf(-EINVAL, "append: record offsets are not dense");
    if (rc == 0 && c->is_compact)
        rc = rv_compact_check_keys(&v, scratch, out);
    free(scratch);
    *out_checked = (struct rv_plog_checked){.min_timestamp = v.records_min_timestamp,
                                            .max_timestamp = v.records_max_timestamp};
    return rc;
}

enum plog_append_kind {
    PLOG_APPEND_RECEIVED, /* everything is checked */
    PLOG_APPEND_BUILT,    /* ours: neither the CRC nor the records */
    PLOG_APPEND_CHECKED,  /* received, records checked by rv_plog_check_records */
    PLOG_APPEND_INTERNAL, /* the broker's own records: checked, never held back by
                             the segment backlog of client produces */
};

/* Whether the shard's batches waiting for their segment writes are at their
 * bound (plog.h, RV_PLOG_UNWRITTEN_MAX): appends wait until writes catch up. */
static bool plog_unwritten_is_full(struct rv_plog_shard *sh)
{
    uint64_t max = sh->unwritten_max != 0 ? sh->unwritten_max : RV_PLOG_UNWRITTEN_MAX;
    if (sh->hot->stats.unwritten < max)
        return false;
    sh->hot->stats.unwritten_full++;
    return true;
}

static int plog_append(rv_plog_t *log, rv_buf_t *buf, uint8_t *batch, uint32_t len, int acks,
                       rv_plog_append_fn *done, void *arg, enum plog_append_kind kind,
                       const struct rv_plog_checked *checked);

int rv_plog_append(rv_plog_t *log, rv_buf_t *buf, uint8_t *batch, uint32_t len, int acks,
                   rv_plog_append_fn *done, void *arg)
{
    return plog_append(log, buf, batch, len, acks, done, arg, PLOG_APPEND_RECEIVED, NULL);
}

int rv_plog_append_internal(rv_plog_t *log, rv_buf_t *buf, uint8_t *batch, uint32_t len, int acks,
                            rv_plog_append_fn *done, void *arg)
{
    return plog_append(log, buf, batch, len, acks, done, arg, PLOG_APPEND_INTERNAL, NULL);
}

int rv_plog_append_built(rv_plog_t *log, rv_buf_t *buf, uint8_t *batch, uint32_t len, int acks,
                         rv_plog_append_fn *done, void *arg)
{
    return plog_append(log, buf, batch, len, acks, done, arg, PLOG_APPEND_BUILT, NULL);
}

int rv_plog_append_checked(rv_plog_t *log, rv_buf_t *buf, uint8_t *batch, uint32_t len, int acks,
                           const struct rv_plog_checked *checked, rv_plog_append_fn *done,
                           void *arg)
{
    return plog_append(log, buf, batch, len, acks, done, arg, PLOG_APPEND_CHECKED, checked);
}

/* A CreateTime record timestamp outside the topic's bounds, against the
 * broker's clock: -EDOM, as Kafka's INVALID_TIMESTAMP. Records without a
 * timestamp (-1) are not checked. */
static int plog_check_timestamps(const struct rv_plog *log, int64_t min_ts, int64_t max_ts)
{
    const struct rv_plog_config *c = &log->cfg;
    if (!c->has_ts_bounds || c->is_log_append_time ||
        (c->ts_before_max_ms == INT64_MAX && c->ts_after_max_ms == INT64_MAX))
        return 0;
    int64_t now = rv_clock_wall_ms();
    if (min_ts >= 0 && now - min_ts > c->ts_before_max_ms)
        return rv_errf(-EDOM,
                       "append: a record timestamp %" PRId64 " is %" PRId64
                       " ms before the broker's clock (message.timestamp.before.max.ms %" PRId64
                       ")",
                       min_ts, now - min_ts, c->ts_before_max_ms);
    if (max_ts >= 0 && max_ts - now > c->ts_after_max_ms)
        return rv_errf(-EDOM,
                       "append: a record timestamp %" PRId64 " is %" PRId64
                       " ms after the broker's clock (message.timestamp.after.max.ms %" PRId64 ")",
                       max_ts, max_ts - now, c->ts_after_max_ms);
    return 0;
}

static int plog_append(rv_plog_t *log, rv_buf_t *buf, uint8_t *batch, uint32_t len, int acks,
                       rv_plog_append_fn *done, void *arg, enum plog_append_kind kind,
                       const struct rv_plog_checked *checked)
{
    bool is_built = kind == PLOG_APPEND_BUILT;
    RV_ASSERT(log->shard != NULL);
    log->uses++;
    plog_cfg_settle(log);
    if (log->load != PLOG_LOADED)
        return log->load == PLOG_LOAD_FAILED ? log->load_err : -EAGAIN;
    if (log->state == PLOG_FAILED)
        return -EIO;
    if (log->is_disk_full)
        return rv_errf(-ENOSPC, "log %s: the disk is full; appends resume once it has room",
                       log->dir);
    /* Refuse before validating: a refused batch is retried, and validation
     * (CRC and a walk over its records) is the expensive part. */
    if (!rv_wal_has_room(log->shard->wal, len))
        return -ENOBUFS;
    if (kind != PLOG_APPEND_INTERNAL && plog_unwritten_is_full(log->shard))
        return -ENOBUFS;
    struct rv_batch_view v;
    int n = is_built ? rv_batch_parse_built(batch, len, &v)
                     : rv_batch_parse(batch, len, log->cfg.max_batch_bytes, &v);
    if (n < 0)
        return n;
    if ((uint32_t)n != len)
        return rv_errf(-EINVAL, "append: %u bytes hold more than one batch", len);
    if (len > log->cfg.max_batch_bytes)
        return rv_errf(-EMSGSIZE, "append: a batch of %u bytes", len);
    /* Built batches are valid by construction; a compacted topic still checks
     * keys. A checked one's compressed records were checked off the shard. */
    bool is_checked = kind == PLOG_APPEND_CHECKED && rv_batch_codec(&v) != RV_CODEC_NONE;
    int rc = is_checked || (is_built && !log->cfg.is_compact) ? 0 : plog_check_records(log, &v);
    if (rc < 0)
        return rc;
    if (is_checked && checked != NULL) { /* what the check off the shard found */
        v.records_min_timestamp = checked->min_timestamp;
        v.records_max_timestamp = checked->max_timestamp;
    }
    rc = plog_check_timestamps(log, v.records_min_timestamp, v.records_max_timestamp);
    if (rc < 0)
        return rc;
    bool is_tracked = rv_pstate_is_tracked(&v);
    if (is_tracked) { /* an idempotent producer's: its sequence and epoch */
        struct rv_pstate_dup dup;
        rc = rv_pstate_check_batch(&log->pstate, &v, log->log_start, &dup);
        if (rc == RV_PSTATE_DUPLICATE)
            return plog_append_duplicate(log, buf, batch, &dup, done, arg);
        if (rc < 0)
            return rc;
    }
    struct append_op *op = plog_pool_get(log, sizeof(*op));
    if (op == NULL)
        return -ENOBUFS;
    int64_t base = log->next_offset;
    rv_batch_set_base_offset(batch, base);
    int64_t max_ts = v.max_timestamp;
    if (log->cfg.is_log_append_time) {
        max_ts = rv_clock_wall_ms();
        rv_batch_set_log_append_time(batch, max_ts);
    } else if (!is_built && v.record_count > 0 && v.records_max_timestamp != v.max_timestamp) {
        /* The producer's maxTimestamp is not its records' largest: set it, as
         * Kafka's broker does (the time index and retention go by it). Known
         * for every batch whose records were walked, here or off the shard. */
        max_ts = v.records_max_timestamp;
        rv_batch_set_max_timestamp(batch, max_ts);
    }
    *op = (struct append_op){.log = log,
                             .buf = buf,
                             .bytes = batch,
                             .len = len,
                             .base = base,
                             .last = base + v.last_offset_delta,
                             .max_ts = max_ts,
                             .done = done,
                             .arg = arg,
                             .is_tracked = is_tracked};
    rc = rv_wal_append(log->shard->wal, RV_WAL_BATCH, log->key, batch, len, acks == RV_ACKS_ALL,
                       plog_wal_done, op);
    if (rc < 0) {
        rv_pool_put(op);
        return rc;
    }
    if (is_tracked)
        rv_pstate_assign(&log->pstate, &v, base, max_ts);
    rv_buf_get(buf);
    log->next_offset = op->last + 1;
    log->appends_inflight++;
    /* Past the shard's budget, or without a timer (no memory), it completes
     * with its WAL write instead. */
    struct rv_plog_shard *sh = log->shard;
    uint64_t early_max = sh->early_ack_max != 0 ? sh->early_ack_max : RV_PLOG_EARLY_ACK_MAX;
    if (acks != RV_ACKS_ALL && sh->early_bytes + len <= early_max &&
        rv_timer_add(0, plog_early_ack, op, &op->ack_timer) == 0) {
        op->is_ack_pending = op->is_early = true;
        sh->early_bytes += len;
    }
    return 0;
}

/* ---- rolling (owner shard + one helper job) ------------------------------------------------- */

struct roll_job {
    struct rv_plog *log;
    uint64_t base;
    int old_fd;
    int new_fd;
    uint64_t old_base;  /* the old segment */
    uint64_t old_size;  /* its data: a padded file is cut to it */
    bool is_old_padded; /* direct writes left zeros past old_size */
    bool is_direct;     /* open the new file with O_DIRECT */
    int rc;
    bool is_created;      /* the next segment file exists (made by this or an earlier try) */
    uint32_t idx_changes; /* the old index's changes when copied */
    struct rv_idx idx;    /* a copy of the old segment's index, saved by the helper */
};

static void plog_roll_work(void *arg)
{
    struct roll_job *job = arg;
    struct rv_plog *log = job->log;
    job->rc = job->is_old_padded
                  ? plog_cut_padding(log, job->old_base, job->old_fd, job->old_size, true)
                  : 0;
    if (job->rc == 0)
        job->rc = job->old_fd >= 0 ? rv_sys_fdatasync(job->old_fd) : 0; /* closed: clean */
    if (job->rc == 0 && !rv_idx_is_saved(&job->idx))
        job->rc = rv_idx_save(&job->idx, log->dir);
    if (job->rc == 0 && !job->is_created) {
        job->rc = rv_seg_create(log->dir, job->base);
        job->is_created = job->rc == 0;
    }
    if (job->rc == 0)
        job->rc = rv_sys_fsync_dir(log->dir);
    if (job->rc < 0 || job->old_fd < 0)
        return; /* without a descriptor before, the next one comes through the budget */
    char path[PATH_MAX];
    job->rc = plog_path(path, sizeof(path), log, job->base, ".log");
    job->new_fd =
        job->rc == 0 ? rv_sys_open(path, O_RDWR | (job->is_direct ? O_DIRECT : 0), 0) : job->rc;
    if (plog_is_emfile(job->new_fd))
        job->rc = 0; /* rolled; the descriptor comes through the budget */
    else if (job->new_fd < 0)
        job->rc = job->new_fd;
}

static void plog_roll_start(struct rv_plog *log, uint64_t base);

static void plog_roll_flush_queue(struct rv_plog *log)
{
    /* A failed log writes nothing more: the held batches are released (they
     * are in the WAL and come back at the next start). */
    bool is_failed = log->state == PLOG_FAILED;
    while (log->roll_head != NULL &&
           (is_failed || (log->state == PLOG_WRITABLE && !log->is_disk_full && log->fd >= 0 &&
                          !log->is_opening))) {
        struct append_op *op = log->roll_head;
        if (!is_failed && plog_needs_roll(log, op->len, rv_clock_wall_ms())) {
            /* What waited for this roll fills the new segment too: roll again. */
            plog_roll_start(log, (uint64_t)op->base);
            return;
        }
        log->roll_head = op->next;
        if (log->roll_head == NULL)
            log->roll_tail = NULL;
        plog_write(log, op, op->arg);
        rv_buf_put(op->buf);
        rv_pool_put(op);
    }
}

static void plog_roll_done(void *arg)
{
    struct roll_job *job = arg;
    struct rv_plog *log = job->log;
    log->jobs--;
    log->is_roll_job = false;
    rv_idx_fini(&job->idx);
    log->is_roll_created = job->rc < 0 && job->is_created; /* a retry must not create it again */
    if (job->rc == -ENOSPC || plog_is_emfile(job->rc)) {
        if (job->new_fd >= 0)
            (void)rv_sys_close(job->new_fd); /* none normally */
        bool is_emfile = plog_is_emfile(job->rc);
        free(job);
        if (is_emfile) /* out of descriptors: not the disk's fault, appends go on */
            plog_retry_after(log, NULL, PLOG_EMFILE_RETRY_US);
        else
            plog_disk_full(log, NULL); /* the roll is tried again with the writes */
        return;
    }
    if (job->rc < 0 || plog_seg_push(log, job->base) < 0) {
        if (job->new_fd >= 0)
            (void)rv_sys_close(job->new_fd);
        plog_fail(log, job->rc < 0 ? job->rc : -ENOMEM);
        plog_roll_flush_queue(log); /* accounted only; replayed at start */
        free(job);
        plog_fd_went_quiet(log);
        return;
    }
    log->segs[log->seg_count - 2].idx.saved_changes = job->idx_changes; /* saved by the helper */
    if (job->old_fd >= 0)
        (void)rv_sys_close(job->old_fd);           /* synced by the helper */
    log->fd = job->new_fd >= 0 ? job->new_fd : -1; /* the old descriptor's slot goes to it */
    if (job->is_old_padded)
        log->dw.is_padded = false; /* cut by the helper */
    log->is_fd_direct = log->fd >= 0 && job->is_direct;
    log->dw.end = 0; /* the new segment is empty */
    log->dw.has_tail = true;
    if (log->fd < 0 && log->has_slot) {
        log->has_slot = false; /* the helper could not open it: the budget will */
        fds_lru_del(&log->shard->fds, log);
        fds_put(&log->shard->fds);
    }
    log->state = PLOG_WRITABLE;
    log->durable_base = job->base; /* the old segment was synced whole, the new is empty */
    log->durable_size = 0;
    /* The helper synced every write of the old segment, the new one has none
     * yet. What waited for the roll keeps it dirty: it is written below, or,
     * without a descriptor yet, once one opens, and a checkpoint meanwhile
     * must wait for that write and its sync. */
    if (!log->is_syncing)
        log->is_dirty = log->roll_head != NULL;
    free(job);
    if (log->fd < 0 && log->roll_head != NULL)
        plog_fd_open_start(log);
    plog_roll_flush_queue(log);
    plog_ckpt_try(log);
    plog_fd_went_quiet(log);
}

static int idx_copy(struct rv_idx *dst, const struct rv_idx *src)
{
    *dst = *src;
    dst->entries = NULL;
    dst->tentries = NULL;
    dst->cap = dst->tcap = 0;
    size_t eb = (size_t)src->count * sizeof(*src->entries);
    size_t tb = (size_t)src->tcount * sizeof(*src->tentries);
    dst->entries = eb ? malloc(eb) : NULL;
    dst->tentries = tb ? malloc(tb) : NULL;
    if ((eb && dst->entries == NULL) || (tb && dst->tentries == NULL)) {
        rv_idx_fini(dst);
        return -ENOMEM;
    }
    if (eb)
        memcpy(dst->entries, src->entries, eb);
    if (tb)
        memcpy(dst->tentries, src->tentries, tb);
    dst->cap = src->count;
    dst->tcap = src->tcount;
    return 0;
}

/* Continue a roll once the old segment has no write in flight. */
static void plog_roll_continue(struct rv_plog *log)
{
    RV_ASSERT(log->dw.first == NULL && log->dw.nblk == 0 && !plog_has_held_writes(log));
    struct roll_job *job = calloc(1, sizeof(*job));
    int rc = job != NULL ? idx_copy(&job->idx, &plog_active(log)->idx) : -ENOMEM;
    if (rc == 0) {
        job->log = log;
        job->base = plog_active(log)->next_offset;
        job->old_fd = log->fd;
        job->new_fd = -1;
        job->old_base = plog_active(log)->base_offset;
        job->old_size = plog_active(log)->size_bytes;
        job->is_old_padded = log->dw.is_padded;
        job->is_direct = log->shard->is_seg_direct;
        job->is_created = log->is_roll_created;
        job->idx_changes = plog_active(log)->idx.changes;
        rc = rv_offload(plog_roll_work, job, plog_roll_done);
    }
    if (rc < 0) {
        if (job != NULL)
            rv_idx_fini(&job->idx);
        free(job);
        plog_fail(log, rc);
        plog_roll_flush_queue(log);
        return;
    }
    log->jobs++;
    log->is_roll_job = true;
}

static void plog_roll_start(struct rv_plog *log, uint64_t base)
{
    (void)base;                /* the new segment starts at the old one's end */
    log->state = PLOG_ROLLING; /* a waiting checkpoint resumes after the roll */
    /* Every write of the old segment lands first, held ones too (a retry goes
     * to the descriptor and position of the segment it was made for). */
    if (log->writes_inflight == 0 && !plog_has_held_writes(log) && !log->is_syncing &&
        !log->is_opening)
        plog_roll_continue(log);
}

/* ---- syncs: checkpoints and evictions ------------------------------------------------------- */

/* A sync of the active segment completed: the checkpoint's, an eviction's,
 * or both in turn; see who is next. */
static void plog_sync_done(void *arg, int64_t res)
{
    struct rv_plog *log = arg;
    struct rv_plog_fds *f = &log->shard->fds;
    log->jobs--;
    log->is_syncing = false;
    bool is_ckpt = log->is_ckpt_sync;
    log->is_ckpt_sync = false;
    if (res < 0)
        plog_fail(log, (int)res);
    else if (log->writes_total == log->sync_writes && log->roll_head == NULL)
        log->is_dirty = false; /* no write was issued after the sync: all are durable */
    /* Even when a write issued after this sync failed the log meanwhile: the
     * bytes the sync covered were all written before it began, and a
     * checkpoint may pass them now, so the rebuild must keep them (before, it
     * cut them, and the WAL no longer had them: a gap). */
    if (res >= 0 && (log->sync_base > log->durable_base ||
                     (log->sync_base == log->durable_base && log->sync_size > log->durable_size))) {
        log->durable_base = log->sync_base; /* earlier segments were synced at their roll */
        log->durable_size = log->sync_size; /* the writes done when it began are on disk */
    }
    if (is_ckpt) {
        struct plog_waiter w = log->ckpt;
        log->has_ckpt = false;
        w.done(w.arg, res < 0 ? res : 0);
    }
    if (log->is_evicting) {
        log->is_evicting = false;
        RV_ASSERT(f->evicting > 0);
        f->evicting--;
        if (fds_need_room(f) && plog_fd_is_quiet(log) && !log->is_dirty)
            plog_fd_drop(log, true);
    }
    plog_ckpt_try(log); /* a roll or a checkpoint may have waited for this sync */
    plog_fd_went_quiet(log);
}

/* fdatasync the active segment through the ring. -EAGAIN: the ring is full. */
static int plog_sync_issue(struct rv_plog *log, bool is_ckpt)
{
    RV_ASSERT(log->fd >= 0 && !log->is_syncing);
    int rc = rv_file_fdatasync(log->fd, plog_sync_done, log);
    if (rc < 0)
        return rc;
    log->jobs++;
    log->is_syncing = true;
    log->is_ckpt_sync = is_ckpt;
    log->sync_writes = log->writes_total;
    log->sync_base = plog_active(log)->base_offset;
    log->sync_size = log->writes_inflight == 0 ? plog_active(log)->size_bytes : 0;
    return 0;
}

static void plog_snap_done(void *arg, int err)
{
    struct rv_plog *log = arg;
    (void)err; /* logged; the next checkpoint tries again */
    log->jobs--;
}

/* Checkpoints: write the producers' snapshot through a helper when one is
 * due and the segment file holds everything applied. */
static void plog_pstate_snapshot(struct rv_plog *log)
{
    int64_t now = rv_clock_wall_ms();
    if (rv_pstate_snapshot_due(&log->pstate, now) && plog_is_settled(log) &&
        rv_pstate_snapshot_start(&log->pstate, log->dir, log->leo, log->log_start, now,
                                 plog_snap_done, log) == 0)
        log->jobs++; /* the log stays open until it is written */
}

static void plog_ckpt_try(struct rv_plog *log)
{
    if (log->writes_inflight > 0 || log->is_syncing || plog_has_held_writes(log) || log->is_opening)
        return;
    if (log->state == PLOG_FAILED && log->roll_head != NULL && !log->is_roll_job) {
        /* A roll waited for the write or sync that failed the log: it never
         * comes, so what queued behind it is released here (never written:
         * the WAL has it), or the log would never be idle, rebuilt or closed. */
        plog_roll_flush_queue(log);
    }
    if (log->state == PLOG_ROLLING) {
        if (!log->is_roll_job)
            plog_roll_continue(log);
        return; /* a waiting checkpoint resumes when the roll is done */
    }
    if (!log->has_ckpt)
        return;
    if (log->state == PLOG_FAILED) {
        log->has_ckpt = false;
        log->ckpt.done(log->ckpt.arg, -EIO);
        return;
    }
    if (!log->is_dirty) { /* an eviction's sync covered every write */
        log->has_ckpt = false;
        log->ckpt.done(log->ckpt.arg, 0);
        return;
    }
    if (log->fd < 0) { /* dirty without a descriptor (a roll that met EMFILE): get one */
        if (log->state == PLOG_WRITABLE)
            plog_fd_open_start(log); /* ready, it tries again */
        return;
    }
    plog_pstate_snapshot(log); /* quiet now: every applied batch is written */
    int rc = plog_sync_issue(log, true);
    if (rc == -EAGAIN) { /* the ring is full: try again shortly */
        plog_later(log, NULL);
        return;
    }
    if (rc < 0) {
        plog_fail(log, rc);
        log->has_ckpt = false;
        log->ckpt.done(log->ckpt.arg, rc);
    }
}

void rv_plog_checkpoint(rv_plog_t *log, rv_plog_offset_fn *done, void *arg)
{
    plog_cfg_settle(log);
    if (log->needs_recovery) { /* its data since the last checkpoint is in the WAL alone */
        done(arg, -EAGAIN);
        return;
    }
    if (log->load != PLOG_LOADED) {
        done(arg, 0); /* not opened since start: clean */
        return;
    }
    plog_pstate_snapshot(log);
    if (!log->is_dirty || log->has_ckpt) {
        done(arg, log->has_ckpt ? -EBUSY : 0);
        return;
    }
    log->ckpt = (struct plog_waiter){.done = done, .arg = arg};
    log->has_ckpt = true;
    plog_ckpt_try(log);
}

/* ---- fetch ---------------------------------------------------------------------------------- */

static void fetch_add_slice(struct rv_plog_fetch *res, rv_buf_t *buf, const uint8_t *bytes,
                            uint32_t len)
{
    RV_ASSERT(res->slice_count < RV_FETCH_SLICES);
    rv_buf_get(buf);
    res->slices[res->slice_count++] =
        (struct rv_fetch_slice){.buf = buf, .bytes = bytes, .len = len};
}

void rv_plog_fetch_release(struct rv_plog_fetch *res)
{
    for (uint32_t i = 0; i < res->slice_count; i++)
        rv_buf_put(res->slices[i].buf);
    res->slice_count = 0;
}

/* Answer from memory if the hot tier holds `offset`. */
static bool fetch_from_hot(struct rv_plog *log, int64_t offset, uint32_t max_bytes,
                           struct rv_plog_fetch *res)
{
    struct hot_entry *e = log->hot_last;
    if (e == NULL || log->hot_first->base > offset)
        return false;
    while (e->prev != NULL && e->prev->last >= offset)
        e = e->prev; /* tailing consumers are near the end: walk back */
    uint32_t bytes = 0;
    for (; e != NULL && res->slice_count < RV_FETCH_SLICES; e = e->next) {
        if (bytes > 0 && bytes + e->len > max_bytes)
            break;
        fetch_add_slice(res, e->buf, e->bytes, e->len);
        bytes += e->len;
    }
    log->shard->hot->stats.hits++;
    return true;
}

struct fetch_op {
    struct rv_plog *log;
    int64_t offset;
    uint32_t max_bytes;
    uint32_t seg_index;
    uint64_t seg_base;
    uint64_t seg_next; /* the segment's end offset when the fetch started */
    uint64_t pos;
    uint32_t want;
    int fd;
    bool is_own_fd;
    bool has_slot;        /* a slot of the shard's budget, for its own descriptor */
    bool is_log_fd;       /* reading through the log's descriptor (counted in fd_users) */
    bool has_retried;     /* read again at the first batch, whole */
    bool is_damaged_seg;  /* the segment kept damaged bytes at open (rv_seg.is_damaged) */
    uint32_t compact_gen; /* the log's compaction generation when planned */
    struct rv_plog_fd_waiter fd_wait;
    rv_buf_t *buf;
    rv_plog_fetch_fn *done;
    void *arg;
    struct rv_plog_fetch res;
};

static void fetch_finish(struct fetch_op *op, int err);

#define PLOG_SWAP_WAIT_US 1000 /* reads of closed segments wait this long for a swap */

/* A read of a closed segment planned before a compaction swap started, or
 * during it: its index position may not match the files any more. */
static bool fetch_is_stale(const struct fetch_op *op)
{
    const struct rv_plog *log = op->log;
    return !op->is_log_fd && (log->compact.is_swapping || log->compact.gen != op->compact_gen);
}

static void fetch_again(void *arg)
{
    struct fetch_op *op = arg;
    struct rv_plog *log = op->log;
    log->jobs--;
    rv_plog_fetch(log, op->offset, op->max_bytes, op->done, op->arg);
    rv_pool_put(op);
}

/* Fetch again once the swap is done (op holds nothing but its request now).
 * -ENOBUFS when no timer: the caller answers with an error instead. */
static int fetch_later(struct fetch_op *op)
{
    rv_plog_fetch_release(&op->res);
    op->res.err = -ENOBUFS;
    uint64_t delay_us = op->log->compact.is_swapping ? PLOG_SWAP_WAIT_US : 0;
    return rv_timer_add(delay_us, fetch_again, op, NULL); /* jobs stays counted till then */
}

static void fetch_closed(void *arg, int64_t res)
{
    (void)res; /* read-only descriptor */
    struct fetch_op *op = arg;
    op->is_own_fd = false;
    fetch_finish(op, op->res.err);
}

static void fetch_finish(struct fetch_op *op, int err)
{
    struct rv_plog *log = op->log;
    op->res.err = err;
    if (op->is_own_fd && op->fd >= 0) {
        if (rv_file_close(op->fd, fetch_closed, op) == 0)
            return;
        (void)rv_sys_close(op->fd); /* ring full: close directly */
        op->is_own_fd = false;
    }
    if (op->has_slot) {
        op->has_slot = false;
        fds_put(&log->shard->fds);
    }
    if (op->buf != NULL)
        rv_buf_put(op->buf);
    if (fetch_is_stale(op) && fetch_later(op) == 0)
        return; /* a compaction swapped files under it: read them again */
    if (op->is_log_fd)
        log->fd_users--;
    op->res.high_watermark = log->leo;
    op->res.log_start = log->log_start;
    log->jobs--;
    if (op->is_log_fd)
        plog_fd_went_quiet(log);
    op->done(op->arg, &op->res);
    rv_pool_put(op);
}

static void fetch_read(struct fetch_op *op);

/* Pick the batches of the read buffer that the fetch wants. */
static void fetch_read_done(void *arg, int64_t n)
{
    struct fetch_op *op = arg;
    if (n < 0) {
        fetch_finish(op, (int)n);
        return;
    }
    const uint8_t *data = rv_buf_cdata(op->buf);
    struct rv_batch_iter it;
    rv_batch_iter_init(&it, data, (size_t)n, op->log->cfg.max_batch_bytes);
    struct rv_batch_view v;
    const uint8_t *first = NULL;
    size_t bytes = 0;
    int64_t prev_last = (int64_t)op->seg_base - 1;
    int rc;
    while ((rc = rv_batch_iter_next(&it, &v)) == 1) {
        /* The CRC does not cover the base offset: check it against the
         * segment, so a damaged one is never served. */
        if (v.base_offset <= prev_last || rv_batch_last_offset(&v) >= (int64_t)op->seg_next) {
            rv_warn("log %s: segment %" PRIu64 " holds a batch with offsets %" PRId64 "..%" PRId64
                    " out of place at byte %" PRIu64 "; not served",
                    op->log->dir, op->seg_base, v.base_offset, rv_batch_last_offset(&v),
                    op->pos + (uint64_t)(v.bytes - data));
            rc = -EBADMSG;
            break;
        }
        prev_last = rv_batch_last_offset(&v);
        if (rv_batch_last_offset(&v) < op->offset)
            continue;
        if (first == NULL)
            first = v.bytes;
        else if (bytes + v.size_bytes > op->max_bytes)
            break;
        bytes = (size_t)(v.bytes + v.size_bytes - first);
    }
    if (first != NULL) {
        rv_buf_freeze(op->buf);
        fetch_add_slice(&op->res, op->buf, first, (uint32_t)bytes);
        fetch_finish(op, 0);
        return;
    }
    size_t used = (size_t)n - rv_batch_iter_rest_bytes(&it);
    if (rc == 0 && rv_batch_iter_rest_bytes(&it) >= RV_BATCH_LOG_OVERHEAD_BYTES &&
        !op->has_retried) {
        /* The batch we need did not fit: read it whole. */
        const uint8_t *p = data + used;
        uint32_t blen = (uint32_t)p[8] << 24 | (uint32_t)p[9] << 16 | (uint32_t)p[10] << 8 | p[11];
        op->pos += used;
        op->want = blen + RV_BATCH_LOG_OVERHEAD_BYTES;
        op->has_retried = true;
        rv_buf_put(op->buf);
        op->buf = NULL;
        fetch_read(op);
        return;
    }
    if (rc == 0 && op->is_damaged_seg)
        rc = -ENODATA; /* the segment's data for this offset is missing (cut short) */
    if (rc < 0 && !fetch_is_stale(op)) { /* the batch holding or preceding it is damaged */
        rv_error("log %s: segment %" PRIu64 ": a damaged batch at byte %" PRIu64
                 " holds or precedes offset %" PRId64 "; not served (%s)",
                 op->log->dir, op->seg_base, op->pos + used, op->offset, rv_strerror(rc));
        fetch_finish(op, -EBADMSG); /* Kafka's CORRUPT_MESSAGE, not an empty answer */
        return;
    }
    fetch_finish(op, 0); /* nothing at or after the offset here (yet) */
}

static void fetch_read_issue(void *arg)
{
    struct fetch_op *op = arg;
    int rc = rv_file_read(op->fd, rv_buf_data(op->buf), op->want, op->pos, fetch_read_done, op);
    if (rc == -EAGAIN && rv_timer_add(PLOG_BUSY_US, fetch_read_issue, op, NULL) == 0)
        return; /* the ring is full: read again shortly */
    if (rc < 0)
        fetch_finish(op, rc);
}

static void fetch_read(struct fetch_op *op)
{
    if (op->want > PLOG_READ_MAX)
        op->want = PLOG_READ_MAX;
    int rc = rv_buf_alloc(op->log->shard->pool, op->want, &op->buf);
    if (rc < 0) {
        fetch_finish(op, rc);
        return;
    }
    fetch_read_issue(op);
}

static void fetch_opened(void *arg, int64_t fd)
{
    struct fetch_op *op = arg;
    if (plog_is_emfile(fd)) {
        op->has_slot = false;
        if (fds_emfile(&op->log->shard->fds, &op->fd_wait))
            return; /* waits first in line for a descriptor */
        fd = -ESHUTDOWN;
    }
    if (fd < 0) {
        fetch_finish(op, (int)fd); /* e.g. deleted by retention meanwhile */
        return;
    }
    op->fd = (int)fd;
    op->is_own_fd = true;
    fetch_read(op);
}

/* Open the segment read-only through the ring, holding a slot. */
static void fetch_open_issue(void *arg)
{
    struct fetch_op *op = arg;
    char path[PATH_MAX];
    int rc = plog_path(path, sizeof(path), op->log, op->seg_base, ".log");
    if (rc == 0)
        rc = rv_file_open(path, O_RDONLY, 0, fetch_opened, op);
    if (rc == -EAGAIN && rv_timer_add(PLOG_BUSY_US, fetch_open_issue, op, NULL) == 0)
        return; /* the ring is full: open shortly */
    if (rc < 0)
        fetch_finish(op, rc);
}

static void fetch_granted(struct rv_plog_fd_waiter *w, int err)
{
    struct fetch_op *op = (struct fetch_op *)((char *)w - offsetof(struct fetch_op, fd_wait));
    if (err < 0) {
        fetch_finish(op, err);
        return;
    }
    op->has_slot = true;
    fetch_open_issue(op);
}

static void fetch_from_disk(struct rv_plog *log, int64_t offset, uint32_t max_bytes,
                            rv_plog_fetch_fn *done, void *arg)
{
    uint32_t i = log->seg_count - 1;
    while (i > 0 && log->segs[i].base_offset > (uint64_t)offset)
        i--;
    while (i + 1 < log->seg_count &&
           (log->segs[i].next_offset <= (uint64_t)offset || log->segs[i].size_bytes == 0))
        i++; /* an offset in a gap between segments (compaction leaves some): the next one */
    struct fetch_op *op = plog_pool_get(log, sizeof(*op));
    if (op == NULL) {
        struct rv_plog_fetch res = {.err = -ENOBUFS};
        done(arg, &res);
        return;
    }
    struct rv_seg *s = &log->segs[i];
    uint64_t pos = rv_idx_lookup(&s->idx, (uint64_t)offset);
    uint64_t avail = s->size_bytes > pos ? s->size_bytes - pos : 0;
    uint64_t want = (uint64_t)max_bytes + log->cfg.index_interval;
    want = want < PLOG_READ_MIN ? PLOG_READ_MIN : want;
    *op = (struct fetch_op){.log = log,
                            .offset = offset,
                            .max_bytes = max_bytes,
                            .seg_index = i,
                            .seg_base = s->base_offset,
                            .pos = pos,
                            .want = (uint32_t)(want < avail ? want : avail),
                            .fd = -1,
                            .compact_gen = log->compact.gen,
                            .done = done,
                            .arg = arg};
    op->seg_next = s->next_offset;
    op->is_damaged_seg = s->is_damaged;
    log->jobs++;
    if (i + 1 < log->seg_count && log->compact.is_swapping && fetch_later(op) == 0)
        return; /* its files are being replaced */
    log->shard->hot->stats.misses++;
    if (op->want == 0) {
        fetch_finish(op, 0);
        return;
    }
    if (i == log->seg_count - 1 && log->state != PLOG_ROLLING && log->fd >= 0 &&
        !log->is_fd_direct) { /* a direct descriptor reads only aligned blocks */
        op->fd = log->fd;
        op->is_log_fd = true;
        log->fd_users++;
        fds_lru_touch(&log->shard->fds, log);
        fetch_read(op);
        return;
    }
    op->fd_wait.fn = fetch_granted;
    if (fds_take(&log->shard->fds, &op->fd_wait)) {
        op->has_slot = true;
        fetch_open_issue(op);
    }
}

void rv_plog_fetch(rv_plog_t *log, int64_t offset, uint32_t max_bytes, rv_plog_fetch_fn *done,
                   void *arg)
{
    struct rv_plog_fetch res = {0};
    log->uses++;
    plog_cfg_settle(log);
    if (log->load != PLOG_LOADED) {
        res.err = log->load == PLOG_LOAD_FAILED ? log->load_err : -EAGAIN;
        done(arg, &res);
        return;
    }
    res.high_watermark = log->leo; /* read once loaded: a helper may be loading it */
    res.log_start = log->log_start;
    /* Offsets from the log end to the next one to assign are acknowledged
     * appends (acks none/leader) not yet in the WAL: nothing to read yet. */
    if (offset < log->log_start || offset > log->next_offset) {
        res.err = -ERANGE;
        done(arg, &res);
        return;
    }
    if (offset >= log->leo || fetch_from_hot(log, offset, max_bytes, &res)) {
        done(arg, &res);
        return;
    }
    fetch_from_disk(log, offset, max_bytes, done, arg);
}

/* ---- offsets by timestamp ---------------------------------------------------------------- */

/* The first offset with timestamp >= ts inside one batch (uncompressed batches
 * are walked; a compressed one answers with its base offset). */
static int64_t batch_offset_for_time(const struct rv_batch_view *v, int64_t ts)
{
    if (v->max_timestamp < ts)
        return -1;
    if (rv_batch_codec(v) != RV_CODEC_NONE || rv_batch_has_log_append_time(v))
        return v->base_offset;
    struct rv_batch_record_iter it;
    rv_batch_record_iter_init(&it, v, v->records, v->records_bytes);
    struct rv_batch_record r;
    while (rv_batch_record_iter_next(&it, &r) == 1) {
        if (r.timestamp_ms >= ts)
            return r.offset;
    }
    return v->base_offset;
}

static int64_t hot_offset_for_time(struct rv_plog *log, int64_t ts)
{
    for (struct hot_entry *e = log->hot_first; e != NULL; e = e->next) {
        if (e->max_ts < ts)
            continue;
        struct rv_batch_view v;
        if (rv_batch_parse(e->bytes, e->len, log->cfg.max_batch_bytes, &v) > 0)
            return batch_offset_for_time(&v, ts);
    }
    return -1;
}

struct time_job {
    struct rv_plog *log;
    int64_t ts;
    uint64_t pos;
    uint64_t seg_base;
    bool is_active; /* the active segment: its file may end in zeros or unwritten bytes */
    int64_t found;  /* -1: none */
    int rc;
    int64_t hot_found;
    uint32_t compact_gen; /* the log's compaction generation when planned */
    rv_plog_offset_fn *done;
    void *arg;
};

static int time_scan_batch(void *arg, const struct rv_batch_view *v, uint64_t pos)
{
    (void)pos;
    struct time_job *job = arg;
    job->found = batch_offset_for_time(v, job->ts);
    return job->found >= 0 ? 1 : 0;
}

static void time_work(void *arg)
{
    struct time_job *job = arg;
    char path[PATH_MAX];
    job->rc = plog_path(path, sizeof(path), job->log, job->seg_base, ".log");
    int fd = job->rc == 0 ? rv_sys_open(path, O_RDONLY, 0) : job->rc;
    if (fd < 0) {
        job->rc = fd;
        return;
    }
    uint64_t stop;
    int rc =
        rv_seg_scan_file(fd, job->pos, job->log->cfg.max_batch_bytes, time_scan_batch, job, &stop);
    /* A torn tail just ends the scan, and so does a batch that does not parse
     * at the active segment's end (a write in flight, or a direct write's
     * zeros past the data); a read error stays an error. */
    bool is_end = rc == -ENODATA ||
                  (job->is_active && (rc == -EBADMSG || rc == -EMSGSIZE || rc == -EPROTONOSUPPORT));
    job->rc = rc < 0 && !is_end ? rc : 0;
    (void)rv_sys_close(fd); /* read-only */
}

static void time_done(void *arg);

static void time_again(void *arg)
{
    struct time_job *job = arg;
    job->log->jobs--;
    rv_plog_offset_for_time(job->log, job->ts, job->done, job->arg);
    free(job);
}

static void time_retry(void *arg)
{
    struct time_job *job = arg;
    if (rv_offload(time_work, job, time_done) == 0)
        return; /* still counted in jobs */
    job->rc = -ENOMEM;
    time_done(job);
}

static void time_done(void *arg)
{
    struct time_job *job = arg;
    job->log->jobs--;
    if (plog_is_emfile(job->rc) && !job->log->shard->fds.is_closing &&
        rv_timer_add(PLOG_EMFILE_RETRY_US, time_retry, job, NULL) == 0) {
        job->log->jobs++; /* out of descriptors for now: read again shortly */
        job->found = -1;
        return;
    }
    struct plog_compact *pc = &job->log->compact;
    if ((pc->is_swapping || pc->gen != job->compact_gen) &&
        rv_timer_add(PLOG_SWAP_WAIT_US, time_again, job, NULL) == 0) {
        job->log->jobs++; /* a compaction replaced the file it read: look again */
        return;
    }
    int64_t best = job->found;
    if (job->hot_found >= 0 && (best < 0 || job->hot_found < best))
        best = job->hot_found;
    job->done(job->arg, job->rc < 0 ? job->rc : best);
    free(job);
}

int rv_plog_load_error(const rv_plog_t *log)
{
    return log->load == PLOG_LOADED ? 0 : log->load == PLOG_LOAD_FAILED ? log->load_err : -EAGAIN;
}

void rv_plog_offset_for_time(rv_plog_t *log, int64_t ts_ms, rv_plog_offset_fn *done, void *arg)
{
    log->uses++;
    if (log->load != PLOG_LOADED) {
        done(arg, rv_plog_load_error(log));
        return;
    }
    int64_t hot = hot_offset_for_time(log, ts_ms);
    uint32_t i = 0;
    while (i < log->seg_count && log->segs[i].max_timestamp_ms < ts_ms)
        i++;
    if (i == log->seg_count ||
        (log->hot_first != NULL && (uint64_t)log->hot_first->base <= log->segs[i].base_offset)) {
        done(arg, hot); /* the hot tier holds all of that segment */
        return;
    }
    struct rv_seg *s = &log->segs[i];
    int64_t start = rv_idx_lookup_time(&s->idx, ts_ms);
    uint64_t pos = rv_idx_lookup(&s->idx, start >= 0 ? (uint64_t)start : s->base_offset);
    struct time_job *job = calloc(1, sizeof(*job));
    if (job == NULL) {
        done(arg, -ENOMEM);
        return;
    }
    *job = (struct time_job){.log = log,
                             .ts = ts_ms,
                             .pos = pos,
                             .seg_base = s->base_offset,
                             .is_active = i + 1 == log->seg_count,
                             .found = -1,
                             .hot_found = hot,
                             .compact_gen = log->compact.gen,
                             .done = done,
                             .arg = arg};
    if (rv_offload(time_work, job, time_done) < 0) {
        free(job);
        done(arg, -ENOMEM);
        return;
    }
    log->jobs++;
}

/* ---- deleting: retention and delete_records ------------------------------------------------ */

struct delete_job {
    struct rv_plog *log;
    uint64_t *bases; /* segments to remove */
    uint32_t count;
    int64_t new_start; /* >= 0: persist as the log start first */
    int rc;
    rv_plog_offset_fn *done;
    void *arg;
};

static int plog_write_start(const char *dir, int64_t start)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/" PLOG_START_FILE, dir);
    int m = snprintf(tmp, sizeof(tmp), "%s/" PLOG_START_FILE ".tmp", dir);
    if (n < 0 || (size_t)n >= sizeof(path) || m < 0 || (size_t)m >= sizeof(tmp))
        return -ENAMETOOLONG;
    char text[32];
    int len = snprintf(text, sizeof(text), "%" PRId64 "\n", start);
    int fd = rv_sys_open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return fd;
    ssize_t w = rv_sys_pwrite(fd, text, (size_t)len, 0);
    int rc = w == len ? rv_sys_fdatasync(fd) : (w < 0 ? (int)w : -ENOSPC);
    int crc = rv_sys_close(fd);
    if (rc == 0)
        rc = crc;
    if (rc == 0)
        rc = rv_sys_rename(tmp, path);
    return rc < 0 ? rc : rv_sys_fsync_dir(dir);
}

static void delete_work(void *arg)
{
    struct delete_job *job = arg;
    if (job->new_start >= 0)
        job->rc = plog_write_start(job->log->dir, job->new_start);
    for (uint32_t i = 0; i < job->count && job->rc == 0; i++)
        job->rc = rv_seg_remove(job->log->dir, job->bases[i]);
}

static void delete_done(void *arg)
{
    struct delete_job *job = arg;
    job->log->jobs--;
    if (job->rc < 0)
        rv_warn("log %s: deleting old segments: %s", job->log->dir, rv_strerror(job->rc));
    if (job->done != NULL)
        job->done(job->arg, job->rc < 0 ? job->rc : job->log->log_start);
    free(job->bases);
    free(job);
}

/* Drop the first `count` segments (never the active one) and delete their files. */
static void plog_drop_segments(struct rv_plog *log, uint32_t count, int64_t persist_start,
                               rv_plog_offset_fn *done, void *arg)
{
    RV_ASSERT(count < log->seg_count);
    struct delete_job *job = calloc(1, sizeof(*job));
    uint64_t *bases = count ? malloc(count * sizeof(*bases)) : NULL;
    if (job == NULL || (count && bases == NULL)) {
        free(job);
        free(bases);
        if (done != NULL)
            done(arg, -ENOMEM);
        return;
    }
    for (uint32_t i = 0; i < count; i++) {
        bases[i] = log->segs[i].base_offset;
        rv_seg_fini(&log->segs[i]);
    }
    memmove(log->segs, log->segs + count, (log->seg_count - count) * sizeof(*log->segs));
    log->seg_count -= count;
    if ((int64_t)log->segs[0].base_offset > log->log_start)
        log->log_start = (int64_t)log->segs[0].base_offset;
    hot_drop_below(log, log->log_start);
    *job = (struct delete_job){.log = log,
                               .bases = bases,
                               .count = count,
                               .new_start = persist_start,
                               .done = done,
                               .arg = arg};
    if (rv_offload(delete_work, job, delete_done) < 0) {
        job->rc = -ENOMEM;
        log->jobs++;
        delete_done(job);
        return;
    }
    log->jobs++;
}

void rv_plog_delete_records(rv_plog_t *log, int64_t offset, rv_plog_offset_fn *done, void *arg)
{
    log->uses++;
    if (log->load != PLOG_LOADED) {
        done(arg, rv_plog_load_error(log));
        return;
    }
    if (offset < 0 || offset > log->leo) {
        done(arg, -ERANGE);
        return;
    }
    if (offset <= log->log_start) {
        done(arg, log->log_start);
        return;
    }
    log->log_start = offset;
    uint32_t count = 0;
    /* During a compaction swap the segments stay; retention drops them later. */
    while (!log->compact.is_swapping && count + 1 < log->seg_count &&
           log->segs[count].next_offset <= (uint64_t)offset)
        count++;
    plog_drop_segments(log, count, offset, done, arg);
}

void rv_plog_enforce_retention(rv_plog_t *log, int64_t now_ms)
{
    plog_cfg_settle(log);
    if (log->load != PLOG_LOADED || log->compact.is_swapping)
        return; /* never opened since start, or a compaction is replacing segments */
    uint32_t count = 0;
    uint64_t total = rv_plog_size_bytes(log);
    while (count + 1 < log->seg_count) {
        const struct rv_seg *s = &log->segs[count];
        /* A segment compaction emptied has no timestamp: it goes with age. One
         * damaged from its start has none either: it goes with the next one. */
        int64_t ts = s->max_timestamp_ms;
        if (ts < 0 && s->is_damaged)
            ts = log->segs[count + 1].max_timestamp_ms;
        bool is_old = log->cfg.retention_ms >= 0 &&
                      (s->size_bytes == 0 || (ts >= 0 && ts < now_ms - log->cfg.retention_ms));
        bool is_over = log->cfg.retention_bytes >= 0 &&
                       total - s->size_bytes >= (uint64_t)log->cfg.retention_bytes;
        /* Below the log start: delete_records left it during a compaction swap. */
        bool is_gone = s->size_bytes > 0 && s->next_offset <= (uint64_t)log->log_start;
        if (!is_old && !is_over && !is_gone)
            break;
        total -= s->size_bytes;
        count++;
    }
    if (count > 0) {
        int64_t start = (int64_t)log->segs[count].base_offset;
        plog_drop_segments(log, count, start > log->log_start ? start : -1, NULL, NULL);
    }
    /* The active segment of a quiet log too: rolled once it is older than
     * segment.ms or its newest record passed retention.ms (as Kafka rolls an
     * expired active segment), so the next pass deletes it like any closed
     * one and a partition nobody writes to still lets its data expire. */
    struct rv_seg *a = plog_active(log);
    bool is_expired = log->cfg.retention_ms >= 0 && a->max_timestamp_ms >= 0 &&
                      a->max_timestamp_ms < now_ms - log->cfg.retention_ms;
    if (log->state == PLOG_WRITABLE && !log->is_disk_full && !log->is_dirty && a->size_bytes > 0 &&
        log->writes_inflight == 0 && log->appends_inflight == 0 && log->roll_head == NULL &&
        !log->is_opening && !log->is_syncing && !plog_has_held_writes(log) &&
        (is_expired || plog_needs_roll(log, 0, now_ms))) {
        rv_debug("log %s: rolling its quiet active segment (%s)", log->dir,
                 is_expired ? "retention.ms" : "segment.ms");
        plog_roll_start(log, a->next_offset);
    }
}

/* ---- retention of logs not loaded since start ------------------------------------------------ */

/* A log opened lazily and never used since start holds nothing in memory, so
 * the retention pass above skips it; a helper looks at its files instead, and
 * a log with something to delete is loaded (and then stays loaded). */
struct probe_job {
    struct rv_plog *log;
    int64_t retention_ms;
    int64_t retention_bytes;
    int64_t now_ms;
    bool is_due;
};

static uint64_t probe_be(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | p[i];
    return v;
}

/* The largest maxTimestamp of the batches in a small segment file (read
 * whole; headers only, no CRC: a probe only decides whether to load the
 * log), or fallback when it has none or cannot be read. */
static int64_t plog_probe_scan_newest(const char *path, uint64_t size, int64_t fallback)
{
    uint8_t *buf = malloc(size > 0 ? size : 1);
    int fd = buf != NULL ? rv_sys_open(path, O_RDONLY, 0) : -ENOMEM;
    ssize_t n = fd >= 0 ? rv_sys_pread(fd, buf, size, 0) : -1;
    if (fd >= 0)
        (void)rv_sys_close(fd); /* read-only */
    int64_t newest = -1;
    uint64_t pos = 0;
    while (n > 0 && pos + RV_BATCH_HEADER_BYTES <= (uint64_t)n) {
        uint64_t len = RV_BATCH_LOG_OVERHEAD_BYTES + probe_be(buf + pos + RV_BATCH_LENGTH_POS, 4);
        if (len < RV_BATCH_HEADER_BYTES || pos + len > (uint64_t)n)
            break; /* direct writes' zeros, or a torn tail */
        int64_t ts = (int64_t)probe_be(buf + pos + RV_BATCH_MAX_TIMESTAMP_POS, 8);
        newest = ts > newest ? ts : newest;
        pos += len;
    }
    free(buf);
    return newest >= 0 ? newest : fallback;
}

/* About the newest record time of segment base (its .log's stat in sb): the
 * last time index entry, which retention's record timestamps bound from
 * below (a false "old" only costs a load); without a time index (an idle
 * unload saves none for a small segment), the batches of a small file; else
 * the file's last write. */
static int64_t plog_probe_newest_ms(const struct rv_plog *log, uint64_t base, const struct stat *sb)
{
    int64_t ms = (int64_t)sb->st_mtim.tv_sec * 1000 + sb->st_mtim.tv_nsec / 1000000;
    char path[PATH_MAX];
    if (rv_idx_file_name(path, sizeof(path), log->dir, base, ".timeindex") < 0)
        return ms;
    int fd = rv_sys_open(path, O_RDONLY, 0);
    struct stat ts;
    uint8_t e[12];
    bool has_entry = fd >= 0 && rv_sys_fstat(fd, &ts) == 0 && ts.st_size >= 12 &&
                     ts.st_size % 12 == 0 &&
                     rv_sys_pread(fd, e, sizeof(e), ts.st_size - 12) == (ssize_t)sizeof(e);
    if (fd >= 0)
        (void)rv_sys_close(fd); /* read-only */
    if (has_entry)
        return (int64_t)probe_be(e, 8);
    if ((uint64_t)sb->st_size < PLOG_UNLOAD_SCAN_MAX &&
        plog_path(path, sizeof(path), log, base, ".log") == 0)
        return plog_probe_scan_newest(path, (uint64_t)sb->st_size, ms);
    return ms;
}

static void plog_probe_work(void *arg) /* a helper thread, blocking */
{
    struct probe_job *job = arg;
    uint64_t *bases = NULL;
    uint32_t count = 0;
    if (rv_seg_list(job->log->dir, &bases, &count) < 0)
        count = 0; /* not readable: loading it would say why */
    uint64_t total = 0, oldest_bytes = 0;
    int64_t oldest_ms = -1;
    for (uint32_t i = 0; i < count; i++) {
        char path[PATH_MAX];
        struct stat sb;
        if (plog_path(path, sizeof(path), job->log, bases[i], ".log") < 0 || stat(path, &sb) < 0)
            continue;
        total += (uint64_t)sb.st_size;
        if (i == 0) {
            oldest_bytes = (uint64_t)sb.st_size;
            oldest_ms = plog_probe_newest_ms(job->log, bases[0], &sb);
        }
    }
    free(bases);
    job->is_due =
        (job->retention_ms >= 0 && oldest_ms >= 0 && oldest_ms < job->now_ms - job->retention_ms) ||
        (job->retention_bytes >= 0 && count > 1 &&
         total - oldest_bytes >= (uint64_t)job->retention_bytes);
}

static void plog_retention_loaded(void *arg)
{
    struct rv_plog *log = arg;
    if (log->load == PLOG_LOADED)
        rv_plog_enforce_retention(log, rv_clock_wall_ms());
}

static void plog_probe_done(void *arg)
{
    struct probe_job *job = arg;
    struct rv_plog *log = job->log;
    log->jobs--;
    log->is_probing = false;
    if (job->is_due && log->load == PLOG_UNLOADED) {
        rv_debug("log %s: data past its retention; loading it", log->dir);
        if (rv_plog_when_ready(log, plog_retention_loaded, log) < 0)
            rv_warn("log %s: cannot load it to apply retention (no memory)", log->dir);
    }
    free(job);
}

bool rv_plog_probe_retention(rv_plog_t *log, int64_t now_ms)
{
    if (log->load != PLOG_UNLOADED || log->is_probing ||
        (log->cfg.retention_ms < 0 && log->cfg.retention_bytes < 0))
        return false;
    struct probe_job *job = malloc(sizeof(*job));
    if (job == NULL)
        return false;
    *job = (struct probe_job){.log = log,
                              .retention_ms = log->cfg.retention_ms,
                              .retention_bytes = log->cfg.retention_bytes,
                              .now_ms = now_ms};
    if (rv_offload(plog_probe_work, job, plog_probe_done) < 0) {
        free(job);
        return false;
    }
    log->jobs++;
    log->is_probing = true;
    return true;
}

/* ---- compaction: slices and the swap on helpers, the segment list here --------------------- */

#define PLOG_COMPACT_PER_SHARD 1     /* passes in flight per shard: the helpers roll logs too */
#define PLOG_COMPACT_RETRY_MS  60000 /* after a failed pass, the next one waits this long */

struct plog_compact_job {
    struct rv_plog *log;
    rv_compact_t *c;
    int rc;
    bool is_forced;
    int64_t started_ms;
    uint64_t bytes_before;
    rv_plog_offset_fn *done; /* a forced pass's caller, or NULL */
    void *arg;
};

static void plog_compact_step_work(void *arg)
{
    struct plog_compact_job *job = arg;
    job->rc = rv_compact_step(job->c);
}

static void plog_compact_swap_work(void *arg)
{
    struct plog_compact_job *job = arg;
    job->rc = rv_compact_swap(job->c);
}

static void plog_compact_discard_work(void *arg)
{
    struct plog_compact_job *job = arg;
    rv_compact_discard(job->c);
}

static void plog_compact_finish(struct plog_compact_job *job)
{
    struct rv_plog *log = job->log;
    RV_ASSERT(log->compact.job == job && log->shard->compactions > 0);
    log->compact.job = NULL;
    log->shard->compactions--;
    int64_t result = job->rc;
    uint64_t after = rv_plog_size_bytes(log);
    if (job->rc < 0) {
        log->compact.retry_ms = rv_clock_wall_ms() + PLOG_COMPACT_RETRY_MS;
        if (job->rc != -ESTALE && job->rc != -ECANCELED)
            rv_warn("log %s: compaction failed: %s (%s)", log->dir, rv_strerror(job->rc),
                    rv_err_msg());
    } else {
        const struct rv_compact_stats *st = rv_compact_get_stats(job->c);
        result = job->bytes_before > after ? (int64_t)(job->bytes_before - after) : 0;
        rv_info("log %s: compacted below offset %" PRIu64
                ": %u segments replaced by %u, read %" PRIu64 " bytes, wrote %" PRIu64
                ", %u keys, %" PRIu64 " of %" PRIu64 " records dropped (%" PRIu64
                " tombstones) in %" PRId64 " ms",
                log->dir, st->map_end, st->segments_in, st->segments_out, st->bytes_read,
                st->bytes_written, st->keys, st->records_dropped, st->records_read,
                st->tombstones_dropped, rv_clock_wall_ms() - job->started_ms);
    }
    if (job->done != NULL)
        job->done(job->arg, result);
    rv_compact_destroy(job->c);
    free(job);
}

static void plog_compact_discarded(void *arg)
{
    struct plog_compact_job *job = arg;
    job->log->jobs--;
    plog_compact_finish(job);
}

/* Give the pass up: remove its .cleaned files on a helper, then finish. */
static void plog_compact_abandon(struct plog_compact_job *job, int err)
{
    job->rc = err;
    if (rv_offload(plog_compact_discard_work, job, plog_compact_discarded) == 0) {
        job->log->jobs++;
        return;
    }
    plog_compact_finish(job); /* the next start's recovery removes the files */
}

/* Put the swapped outputs in the segment list in place of what they replace
 * (in place: nothing to allocate once the files are swapped). */
static void plog_compact_install(struct rv_plog *log, rv_compact_t *c)
{
    uint32_t r = 0;
    uint32_t w = 0;
    int64_t end = -1;
    for (uint32_t k = 0; k < rv_compact_output_count(c); k++) {
        const struct rv_compact_output *o = rv_compact_output_get(c, k);
        if (!o->is_swapped)
            break;
        RV_ASSERT(o->first >= r && o->first + o->count < log->seg_count);
        while (r < o->first)
            log->segs[w++] = log->segs[r++];
        for (uint32_t i = 0; i < o->count; i++)
            rv_seg_fini(&log->segs[r + i]);
        r += o->count;
        rv_compact_output_take(c, k, &log->segs[w++]);
        end = (int64_t)o->end;
    }
    while (r < log->seg_count)
        log->segs[w++] = log->segs[r++];
    log->seg_count = w;
    if (end >= 0)
        hot_drop_below(log, end); /* those batches are older than what the files hold now */
}

static void plog_compact_swapped(void *arg)
{
    struct plog_compact_job *job = arg;
    struct rv_plog *log = job->log;
    log->jobs--;
    log->compact.is_swapping = false;
    plog_compact_install(log, job->c);
    if (job->rc == 0) {
        log->compact.point = rv_compact_next_point(job->c);
    } else if (rv_compact_is_committed(job->c)) {
        /* Between two states on disk: reopening the log completes the swap. */
        rv_error("log %s: compaction swap failed after its commit: %s; reopen the log", log->dir,
                 rv_strerror(job->rc));
        plog_fail(log, job->rc);
    } else {
        plog_compact_abandon(job, job->rc);
        return;
    }
    plog_compact_finish(job);
}

/* The outputs still replace the segments they were built from: retention or
 * delete_records may have dropped some meanwhile (then the pass is void). */
static bool plog_compact_matches(const struct rv_plog *log, const rv_compact_t *c)
{
    for (uint32_t k = 0; k < rv_compact_output_count(c); k++) {
        const struct rv_compact_output *o = rv_compact_output_get(c, k);
        uint32_t next = o->first + o->count;
        if (next >= log->seg_count || log->segs[o->first].base_offset != o->seg.base_offset ||
            log->segs[next].base_offset != o->end)
            return false;
    }
    return true;
}

static void plog_compact_stepped(void *arg)
{
    struct plog_compact_job *job = arg;
    struct rv_plog *log = job->log;
    log->jobs--;
    if (job->rc > 0 && log->shard->fds.is_closing)
        job->rc = -ECANCELED; /* the store is closing: the next start tries again */
    if (job->rc > 0) {
        if (rv_offload(plog_compact_step_work, job, plog_compact_stepped) == 0) {
            log->jobs++;
            return;
        }
        job->rc = -ENOMEM;
    }
    if (job->rc == 0 && (!plog_compact_matches(log, job->c) || log->state == PLOG_FAILED))
        job->rc = -ESTALE;
    if (job->rc < 0) {
        plog_compact_abandon(job, job->rc);
        return;
    }
    if (rv_compact_output_count(job->c) == 0) { /* nothing would change */
        log->compact.point = rv_compact_next_point(job->c);
        plog_compact_finish(job);
        return;
    }
    log->compact.is_swapping = true; /* reads of closed segments wait */
    log->compact.gen++;              /* and those in flight read again */
    if (rv_offload(plog_compact_swap_work, job, plog_compact_swapped) == 0) {
        log->jobs++;
        return;
    }
    log->compact.is_swapping = false;
    plog_compact_abandon(job, -ENOMEM);
}

/* 0: a pass started; 1: none is due; -errno. */
static int plog_compact_start(struct rv_plog *log, bool is_forced, int64_t now_ms)
{
    uint32_t closed = log->seg_count > 0 ? log->seg_count - 1 : 0;
    if (log->load != PLOG_LOADED || !log->cfg.is_compact)
        return log->load == PLOG_LOADED ? -EINVAL : rv_plog_load_error(log);
    if (log->compact.job != NULL || log->state == PLOG_FAILED)
        return log->state == PLOG_FAILED ? -EIO : -EBUSY;
    /* A closed segment kept damaged at open (RV_SEG_SCAN_CLOSED) cannot be
     * read whole: passes end before it (what follows waits until retention or
     * an operator removes it). */
    for (uint32_t i = 0; i < closed; i++) {
        if (log->segs[i].is_damaged) {
            closed = i;
            break;
        }
    }
    if (closed == 0)
        return 1;
    if (!is_forced &&
        (now_ms < log->compact.retry_ms || log->shard->compactions >= PLOG_COMPACT_PER_SHARD ||
         !rv_compact_is_due(log->segs, closed, &log->compact.point,
                            log->cfg.min_cleanable_dirty_ratio, now_ms)))
        return 1;
    uint32_t map_max = log->shard->compact_map_entries;
    struct rv_compact_opts o = {
        .dir = log->dir,
        .segs = log->segs,
        .seg_count = closed,
        .next_base = log->segs[closed].base_offset,
        .point = log->compact.point,
        .segment_bytes = log->cfg.segment_bytes,
        .index_interval = log->cfg.index_interval,
        .max_batch_bytes = log->cfg.max_batch_bytes,
        .map_entries_max =
            map_max >= RV_COMPACT_MAP_ENTRIES_MIN ? map_max : RV_COMPACT_MAP_ENTRIES_DEFAULT,
        .delete_retention_ms = log->cfg.delete_retention_ms,
        .now_ms = now_ms,
    };
    struct plog_compact_job *job = calloc(1, sizeof(*job));
    int rc = job != NULL ? rv_compact_create(&job->c, &o) : -ENOMEM;
    if (rc == 0) {
        job->log = log;
        job->is_forced = is_forced;
        job->started_ms = rv_clock_wall_ms();
        job->bytes_before = rv_plog_size_bytes(log);
        rc = rv_offload(plog_compact_step_work, job, plog_compact_stepped);
    }
    if (rc < 0) {
        if (job != NULL)
            rv_compact_destroy(job->c);
        free(job);
        return rc;
    }
    log->compact.job = job;
    log->shard->compactions++;
    log->jobs++;
    return 0;
}

void rv_plog_compact(rv_plog_t *log, bool is_forced, int64_t now_ms, rv_plog_offset_fn *done,
                     void *arg)
{
    RV_ASSERT(log->shard != NULL);
    int rc = plog_compact_start(log, is_forced, now_ms);
    if (rc == 0) {
        log->compact.job->done = done;
        log->compact.job->arg = arg;
        return;
    }
    if (done != NULL)
        done(arg, rc > 0 ? 0 : rc);
}

/* ---- idle descriptors ------------------------------------------------------------------------ */

bool rv_plog_close_idle_fd(rv_plog_t *log)
{
    bool is_quiet = log->writes_total == log->writes_at_sweep;
    log->writes_at_sweep = log->writes_total;
    return is_quiet && rv_plog_release_fd(log);
}

bool rv_plog_release_fd(rv_plog_t *log)
{
    if (log->fd < 0 || log->is_dirty || log->fd_users > 0 || log->writes_inflight > 0 ||
        log->state != PLOG_WRITABLE || log->is_syncing || plog_has_held_writes(log) ||
        log->roll_head != NULL || log->is_opening)
        return false;
    /* Clean (synced) and unused: nothing can be lost by closing. */
    if (log->has_slot) {
        plog_fd_drop(log, false); /* through the ring; the slot comes back after */
        return true;
    }
    (void)rv_sys_close(log->fd); /* recovery, before the shards: no budget yet */
    log->fd = -1;
    plog_dw_forget(log);
    return true;
}

void rv_plog_park_fd_blocking(rv_plog_t *log)
{
    if (log->fd < 0)
        return;
    (void)rv_sys_close(log->fd); /* dirty pages stay in the page cache */
    log->fd = -1;                /* rv_plog_sync_blocking reopens to sync */
    plog_dw_forget(log);
}

bool rv_plog_has_fd(const rv_plog_t *log)
{
    return log->fd >= 0;
}

/* ---- configuration, queries, close --------------------------------------------------------- */

/* Apply a waiting configuration change once no helper job reads cfg. */
static void plog_cfg_settle(struct rv_plog *log)
{
    if (log->pending_cfg == NULL || log->jobs > 0)
        return;
    log->cfg = *log->pending_cfg;
    free(log->pending_cfg);
    log->pending_cfg = NULL;
}

void rv_plog_set_config(rv_plog_t *log, const struct rv_plog_config *cfg)
{
    if (log->jobs == 0) {
        free(log->pending_cfg); /* an older change that waited: this one wins */
        log->pending_cfg = NULL;
        log->cfg = *cfg;
        return;
    }
    /* A helper may be reading cfg (a load, a look by time, a probe): the
     * change waits for it; the next call on the log applies it. */
    if (log->pending_cfg == NULL && (log->pending_cfg = malloc(sizeof(*cfg))) == NULL) {
        rv_warn("log %s: no memory to hold a configuration change; applied now", log->dir);
        log->cfg = *cfg;
        return;
    }
    *log->pending_cfg = *cfg;
}

int64_t rv_plog_log_start(const rv_plog_t *log)
{
    return log->log_start;
}

int64_t rv_plog_high_watermark(const rv_plog_t *log)
{
    return log->leo;
}

uint64_t rv_plog_size_bytes(const rv_plog_t *log)
{
    if (log->load != PLOG_LOADED)
        return log->was_loaded ? log->kept_size_bytes : 0;
    uint64_t total = 0;
    for (uint32_t i = 0; i < log->seg_count; i++)
        total += log->segs[i].size_bytes;
    return total;
}

uint32_t rv_plog_segment_count(const rv_plog_t *log)
{
    return log->seg_count;
}

/* ---- rebuilding a failed log from the WAL ------------------------------------------------ */

/* Remove segment `base`'s files. */
static int plog_remove_segment(const struct rv_plog *log, uint64_t base)
{
    static const char *const suffixes[] = {".log", ".index", ".timeindex"};
    for (size_t i = 0; i < RV_ARRAY_LEN(suffixes); i++) {
        char path[PATH_MAX];
        int rc = plog_path(path, sizeof(path), log, base, suffixes[i]);
        if (rc == 0 && (rc = rv_sys_unlink(path)) < 0 && rc != -ENOENT)
            return rv_errf(rc, "%s: remove", path);
    }
    return 0;
}

/* Helper, before the load: cut the files back to the durable point. A
 * segment a roll made after it goes, the durable segment is cut to its
 * durable size (what the page cache held past it may never reach the disk
 * after a failed write or sync) and its indexes go too, so the load rebuilds
 * them from the data that is left. */
static int plog_recover_cut(struct rv_plog *log)
{
    uint64_t *bases = NULL;
    uint32_t count = 0;
    int rc = rv_seg_list(log->dir, &bases, &count);
    for (uint32_t i = 0; i < count && rc == 0; i++) {
        if (bases[i] > log->durable_base)
            rc = plog_remove_segment(log, bases[i]);
    }
    free(bases);
    char path[PATH_MAX];
    if (rc == 0)
        rc = plog_path(path, sizeof(path), log, log->durable_base, ".log");
    int fd = rc == 0 ? rv_sys_open(path, O_RDWR, 0) : rc;
    if (fd < 0 && rc == 0)
        rc = rv_errf(fd, "%s: open to cut", path);
    struct stat sb;
    if (fd >= 0 && rv_sys_fstat(fd, &sb) == 0 && (uint64_t)sb.st_size < log->durable_size) {
        (void)rv_sys_close(fd); /* read only so far */
        return rv_errf(-EBADMSG, "%s: %lld bytes, shorter than the %" PRIu64 " made durable", path,
                       (long long)sb.st_size, log->durable_size);
    }
    if (fd >= 0) {
        rc = rv_sys_ftruncate(fd, (off_t)log->durable_size);
        if (rc == 0)
            rc = rv_sys_fdatasync(fd);
        (void)rv_sys_close(fd); /* the calls above decide */
        if (rc < 0)
            rc = rv_errf(rc, "%s: cut at %" PRIu64, path, log->durable_size);
    }
    static const char *const idx_suffixes[] = {".index", ".timeindex"};
    for (size_t i = 0; i < RV_ARRAY_LEN(idx_suffixes) && rc == 0; i++) {
        rc = plog_path(path, sizeof(path), log, log->durable_base, idx_suffixes[i]);
        if (rc == 0 && (rc = rv_sys_unlink(path)) == -ENOENT)
            rc = 0;
        if (rc < 0)
            rc = rv_errf(rc, "%s: remove", path);
    }
    if (rc == 0 && (rc = rv_sys_fsync_dir(log->dir)) < 0)
        rc = rv_errf(rc, "log %s: sync the directory", log->dir);
    return rc;
}

struct recover_scan {
    struct rv_plog *log;
    uint64_t batches;
};

static int plog_recover_one(void *arg, const struct rv_wal_record *rec)
{
    struct recover_scan *r = arg;
    if (rec->type != RV_WAL_BATCH || rec->key != r->log->key)
        return 0;
    int64_t leo = r->log->leo;
    struct rv_batch_view v;
    if (rv_batch_parse(rec->payload, rec->len, r->log->cfg.max_batch_bytes, &v) > 0 &&
        v.base_offset > leo)
        return rv_errf(-EIO,
                       "log %s: rebuilding: offsets %" PRId64 "..%" PRId64
                       " are in neither the segment nor the WAL (lsn %" PRIu64 ")",
                       r->log->dir, leo, v.base_offset - 1, rec->lsn);
    int rc = rv_plog_replay(r->log, rec->payload, rec->len);
    if (rc == -EBADMSG) { /* skipped, as at start-up */
        rv_warn("log %s: rebuilding: lsn %" PRIu64 ": %s", r->log->dir, rec->lsn, rv_err_msg());
        return 0;
    }
    r->batches += rc == 0 && r->log->leo > leo;
    return rc;
}

/* Helper, after the load: write the WAL's batches of this log since the
 * last checkpoint again (those the cut files still hold are skipped), make
 * them durable, and give the descriptor back. On failure the load's state
 * is freed again. */
static int plog_recover_replay(struct rv_plog *log)
{
    struct recover_scan r = {.log = log};
    int rc = rv_wal_scan(log->recover_wal_dir, log->recover_from_lsn, log->recover_to_lsn,
                         plog_recover_one, &r);
    if (rc == 0)
        rc = plog_sync_blocking(log);
    if (log->fd >= 0)
        (void)rv_sys_close(log->fd); /* synced, or failing anyway */
    log->fd = -1;
    log->recover_batches = r.batches;
    if (rc < 0) {
        for (uint32_t i = 0; i < log->seg_count; i++)
            rv_seg_fini(&log->segs[i]);
        log->seg_count = 0;
        rv_pstate_fini(&log->pstate);
        rv_pstate_init(&log->pstate);
    }
    return rc;
}

static void plog_unload_data(struct rv_plog *log);

bool rv_plog_needs_recovery(const rv_plog_t *log)
{
    return log->needs_recovery || (log->load == PLOG_LOADED && log->state == PLOG_FAILED);
}

bool rv_plog_recover(rv_plog_t *log, const char *wal_dir, uint64_t from_lsn, uint64_t to_lsn)
{
    if (log->needs_recovery) { /* an earlier try could not start or failed: again */
        if (log->load != PLOG_UNLOADED && log->load != PLOG_LOAD_FAILED)
            return false; /* loading now */
        /* No checkpoint passed meanwhile (this log refuses them): the
         * shard's checkpoint is still where the log's data starts. */
        log->recover_from_lsn = from_lsn;
        log->recover_to_lsn = to_lsn;
        log->load = PLOG_UNLOADED;
        log->load_err = 0;
        return plog_load_start(log) == 0;
    }
    if (log->load != PLOG_LOADED || log->state != PLOG_FAILED)
        return false;
    /* Nothing in flight, nothing held: what it had is in the WAL. */
    if (!rv_plog_is_idle(log) || log->fd_users > 0 || log->is_syncing || log->is_opening ||
        log->is_evicting || log->is_probing || log->compact.job != NULL ||
        log->compact.is_swapping || plog_has_held_writes(log) || log->dw.nblk != 0 ||
        log->dw.first != NULL || log->dw.next != NULL)
        return false;
    if (log->fd >= 0 && log->has_slot)
        plog_fd_drop(log, false); /* through the ring; the slot comes back after */
    else if (log->fd >= 0) {
        (void)rv_sys_close(log->fd);
        log->fd = -1;
        plog_dw_forget(log);
    }
    if (log->has_slot)
        return false; /* being opened: the next sweep */
    char *dir = strdup(wal_dir);
    if (dir == NULL)
        return false;
    free(log->recover_wal_dir);
    log->recover_wal_dir = dir;
    log->recover_from_lsn = from_lsn;
    log->recover_to_lsn = to_lsn;
    log->needs_recovery = true;
    rv_warn("log %s: rebuilding from segment %" PRIu64 " byte %" PRIu64
            " and the WAL's lsn %" PRIu64 "..%" PRIu64 " after a failed write",
            log->dir, log->durable_base, log->durable_size, from_lsn, to_lsn);
    plog_unload_data(log);
    (void)plog_load_start(log); /* without memory now: the next sweep starts it */
    return true;
}

/* ---- unloading an idle log ------------------------------------------------------------------ */

struct unload_job {
    struct rv_plog *log;
    int rc;
};

/* An unload that could not be done: the next try a whole idle period later,
 * not at every sweep. */
static void plog_unload_later(struct rv_plog *log)
{
    log->uses_at_sweep = log->uses;
    log->used_ms = rv_clock_wall_ms();
}

void rv_plog_note_use(rv_plog_t *log)
{
    log->uses++;
}

bool rv_plog_has_offsets(const rv_plog_t *log)
{
    return log->load == PLOG_LOADED ||
           (log->was_loaded && (log->load == PLOG_UNLOADED || log->load == PLOG_UNLOADING));
}

/* Helper, while the shard leaves the log alone (PLOG_UNLOADING): what makes
 * the next load quick and exact. Direct writes' zeros past the data are cut
 * (no sync: the log is clean, its data synced, and a crash that brought the
 * zeros back would have recovery cut them), the active segment's index is
 * saved if the segment is large (else the load would scan the segment from
 * its last saved entry) and the producers' snapshot written when it is behind
 * (else the load would read the batches after it again). */
static void plog_unload_work(void *arg)
{
    struct unload_job *job = arg;
    struct rv_plog *log = job->log;
    int rc = 0;
    struct rv_seg *act = plog_active(log);
    if (log->dw.is_padded)
        rc = plog_cut_padding(log, act->base_offset, -1, act->size_bytes, false);
    uint64_t index_min =
        log->shard->unload_index_min != 0 ? log->shard->unload_index_min : PLOG_UNLOAD_SCAN_MAX;
    if (rc == 0 && act->size_bytes >= index_min)
        rc = plog_save_index(log);
    if (rc == 0)
        plog_pstate_save_blocking(log);
    job->rc = rc;
}

/* Give back everything a load built: the log is as if never opened. */
static void plog_unload_data(struct rv_plog *log)
{
    RV_ASSERT(log->fd < 0 && !log->has_slot && log->dw.nblk == 0);
    while (log->hot_first != NULL)
        hot_unlink(log->shard->hot, log->hot_first);
    plog_dw_forget(log);
    /* What a reload cannot read back: segment.ms counts from the active
     * segment's first append (the file has its last write's time only), and
     * the figures the metrics show meanwhile. */
    log->kept_active_base = plog_active(log)->base_offset;
    log->kept_active_created_ms = plog_active(log)->created_ms;
    log->kept_size_bytes = rv_plog_size_bytes(log);
    log->was_loaded = true;
    for (uint32_t i = 0; i < log->seg_count; i++)
        rv_seg_fini(&log->segs[i]);
    free(log->segs);
    log->segs = NULL;
    log->seg_count = log->seg_cap = 0;
    rv_pstate_fini(&log->pstate);
    rv_pstate_init(&log->pstate);
    log->compact = (struct plog_compact){.retry_ms = log->compact.retry_ms};
    log->dw = (struct plog_dw){0};
    log->next_offset = log->leo; /* log_start and leo stay for the metrics */
    log->state = PLOG_WRITABLE;
    log->is_roll_created = false; /* a rebuild's cut removed a roll's half-made file */
    log->is_disk_full = false;
    log->is_dirty = false;
    log->load = PLOG_UNLOADED;
}

static void plog_unload_done(void *arg)
{
    struct unload_job *job = arg;
    struct rv_plog *log = job->log;
    log->jobs--;
    if (job->rc < 0)
        rv_warn("log %s: stays loaded: cannot save what a reload needs: %s", log->dir,
                rv_strerror(job->rc));
    if (job->rc < 0 || log->pending_head != NULL || log->shard->fds.is_closing) {
        log->load = PLOG_LOADED; /* wanted again meanwhile, or the save failed: keep it */
        plog_unload_later(log);
        plog_load_done_run_pending(log);
    } else {
        plog_unload_data(log);
        log->shard->unloads++;
    }
    free(job);
}

bool rv_plog_unload_idle(rv_plog_t *log, int64_t now_ms, int64_t idle_ms)
{
    if (log->uses != log->uses_at_sweep || log->used_ms == 0) {
        log->uses_at_sweep = log->uses;
        log->used_ms = now_ms;
        return false;
    }
    if (log->load != PLOG_LOADED || now_ms - log->used_ms < idle_ms)
        return false;
    /* Clean (the WAL needs nothing of it), and nothing in flight or held. */
    if (log->state != PLOG_WRITABLE || log->is_dirty || !rv_plog_is_idle(log) ||
        log->fd_users > 0 || log->is_syncing || log->is_evicting || log->is_opening ||
        log->is_disk_full || log->is_probing || log->compact.job != NULL ||
        log->compact.is_swapping || plog_has_held_writes(log))
        return false;
    /* A pass that is due waits for its turn (one per shard at a time); a kept
     * tombstone's horizon makes one due later, which only a loaded log sees. */
    if (log->cfg.is_compact &&
        (log->compact.point.horizon_ms != RV_COMPACT_NO_HORIZON ||
         (log->seg_count > 1 &&
          rv_compact_is_due(log->segs, log->seg_count - 1, &log->compact.point,
                            log->cfg.min_cleanable_dirty_ratio, now_ms))))
        return false;
    if (log->fd >= 0 && !rv_plog_release_fd(log))
        return false;
    if (log->has_slot)
        return false;
    struct unload_job *job = malloc(sizeof(*job));
    if (job == NULL) {
        plog_unload_later(log);
        return false;
    }
    *job = (struct unload_job){.log = log};
    log->load = PLOG_UNLOADING; /* calls wait as for a load; nothing touches the log */
    if (rv_offload(plog_unload_work, job, plog_unload_done) < 0) {
        log->load = PLOG_LOADED;
        plog_unload_later(log);
        free(job);
        return false;
    }
    log->jobs++;
    return true;
}

bool rv_plog_is_idle(const rv_plog_t *log)
{
    return log->writes_inflight == 0 && log->jobs == 0 && log->appends_inflight == 0 &&
           log->roll_head == NULL && !log->has_ckpt && !log->is_retry_armed &&
           log->pending_head == NULL;
}

uint64_t rv_plog_key(const rv_plog_t *log)
{
    return log->key;
}

void rv_plog_close(rv_plog_t *log)
{
    if (log == NULL)
        return;
    RV_ASSERT(rv_plog_is_idle(log));
    if (log->shard != NULL)
        plog_dw_abandon(log); /* a write held without its retry timer (no memory for one) */
    while (log->hot_first != NULL)
        hot_unlink(log->shard->hot, log->hot_first);
    if (log->fd >= 0)
        (void)rv_sys_close(log->fd); /* synced by the caller, or replayed from the WAL */
    if (log->shard != NULL)
        plog_dw_forget(log);
    if (log->has_slot) {
        fds_lru_del(&log->shard->fds, log);
        fds_put(&log->shard->fds);
    }
    for (uint32_t i = 0; i < log->seg_count; i++)
        rv_seg_fini(&log->segs[i]);
    free(log->segs);
    rv_pstate_fini(&log->pstate);
    free(log->recover_wal_dir);
    free(log->pending_cfg);
    free(log->dir);
    free(log);
}
