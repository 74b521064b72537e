/*
 * storage/store.c - the storage engine of rivven.h: topics, placement,
 * recovery, checkpoints, retention, and the produce/fetch entry points.
 *
 * Ownership: every partition log belongs to one shard (a stable hash of the
 * topic name and the partition) and is only touched there; a call from any
 * other thread travels to the owner as a task. Each shard has its own WAL,
 * buffer pool and hot tier (struct store_shard). The topic catalog is the one
 * shared structure: read-mostly, guarded by a reader-writer lock that only
 * topic administration ever takes for writing.
 *
 * Start-up (rv_store_open, blocking): read the catalog, open every partition
 * log (recovering its segments), replay every shard WAL from its checkpoint
 * into the logs, sync what the replay wrote and move the checkpoints, then
 * hand each log to its shard. Replaying every WAL into every log before the
 * shards start means a changed shard count needs nothing special.
 *
 * Checkpoint (per shard, every checkpoint_interval_ms): take the LSN below
 * which every WAL record has been applied, fdatasync every log written since
 * the last checkpoint, record the LSN in DATA/wal/shard-<n>/checkpoint, and
 * delete the WAL files it covers.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/hmap.h"
#include "core/pool.h"
#include "core/sys.h"
#include "core/trace.h"
#include "storage/batch.h"
#include "storage/compact.h"
#include "storage/part.h"
#include "storage/plog.h"
#include "storage/topic.h"
#include "storage/wal.h"

#define STORE_CKPT_FILE "checkpoint"

struct store_topic {
    char *name;
    uint32_t id;
    uint64_t name_hash;
    struct rv_topic_config cfg;
    bool is_deleted;
};

struct store_shard {
    rv_store_t *st;
    uint32_t id;
    struct rv_plog_shard ps; /* wal, pool, hot tier */
    struct rv_hmap logs;     /* WAL key -> rv_plog_t * */
    rv_timer_id ckpt_timer;
    rv_timer_id retention_timer;
    rv_timer_id sweep_timer;
    bool is_closing;
    bool is_ckpt_running;
    uint32_t ckpt_pending;
    int ckpt_err;
    uint64_t ckpt_target;   /* LSN the running checkpoint covers */
    uint64_t ckpt_lsn;      /* LSN of the last checkpoint on disk */
    bool is_ckpt_failing;   /* the last checkpoint failed or was held back: no early ones */
    uint64_t ckpts;         /* checkpoints written */
    uint64_t ckpt_failures; /* checkpoints that failed or were held back */
    uint32_t probe_cursor;  /* where the retention pass goes on probing unloaded logs */
};

/* Unloaded logs whose files a retention pass has a helper look at: at most
 * this many per pass and shard, the next pass going on from there. */
#define STORE_PROBES_PER_PASS 1024

struct rv_store {
    rv_runtime_t *rt;
    char *dir;
    struct rv_store_config cfg;
    uint32_t n;
    uint32_t fds_per_shard; /* the descriptor budget of each shard's logs */
    bool is_seg_direct;     /* active segments written with O_DIRECT (cfg.segment_io) */
    struct store_shard *shards;
    pthread_rwlock_t lock;         /* the catalog below */
    _Atomic uint64_t catalog_gen;  /* moves with every catalog change */
    struct store_route_cache *rcs; /* [n]: each shard's, for rv_store_lookup */
    struct store_topic **topics;
    uint32_t topic_count;
    uint32_t topic_cap;
    uint32_t next_id;
};

/* The largest segment_backlog_bytes: half of what the shard's pool has beyond twice the
 * hot tier (1 GiB), the rest staying free for the WAL and for staging the
 * segment writes that drain the backlog. */
#define STORE_BACKLOG_MAX (512ull << 20)

void rv_store_config_init(struct rv_store_config *cfg)
{
    *cfg = (struct rv_store_config){
        .hot_bytes = 64ull << 20,
        .wal_file_bytes = 64ull << 20,
        .wal_group_window_us = 0,
        .checkpoint_interval_ms = 2000,
        .retention_check_ms = 30000,
        .compact_map_entries = RV_COMPACT_MAP_ENTRIES_DEFAULT,
        .idle_unload_ms = 300000,
    };
}

/* ---- small helpers ----------------------------------------------------------------------- */

/* How the segments under topics_dir are written (cfg.segment_io): AUTO takes
 * O_DIRECT where the filesystem does (a probe file), DIRECT insists on it. */
static int store_seg_io(rv_store_t *st, const char *topics_dir)
{
    st->is_seg_direct = st->cfg.segment_io != RV_WAL_IO_BUFFERED;
    if (!st->is_seg_direct)
        return 0;
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/.direct-probe", topics_dir);
    if (n < 0 || (size_t)n >= sizeof(path))
        return -ENAMETOOLONG;
    int fd = rv_sys_open(path, O_RDWR | O_CREAT | O_DIRECT, 0644);
    if (fd >= 0) {
        (void)rv_sys_close(fd); /* nothing written */
        (void)rv_sys_unlink(path);
        return 0;
    }
    if (fd == -EINVAL && st->cfg.segment_io == RV_WAL_IO_AUTO) {
        rv_info("store: %s refuses O_DIRECT; segments are written through the page cache",
                topics_dir);
        st->is_seg_direct = false;
        return 0;
    }
    return rv_errf(fd, "store: %s: O_DIRECT probe", path);
}

#define STORE_FDS_MIN 4 /* a shard's logs may always hold this many descriptors */

/* The descriptor budget of each shard's partition logs: configured, or half
 * of RLIMIT_NOFILE (the other half for sockets, WAL files, the rings and the
 * rest of the process) shared by the shards. Opening past the budget waits
 * for a descriptor to close; so does an EMFILE when the guess was too high. */
static uint32_t store_fd_budget(const struct rv_store_config *cfg, uint32_t shards)
{
    if (cfg->fds_per_shard > 0)
        return cfg->fds_per_shard;
    struct rlimit rl;
    uint64_t limit = 1024; /* the usual soft limit, if the kernel will not say */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        limit = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 30) ? (1u << 30) : rl.rlim_cur;
    uint64_t per_shard = limit / 2 / (shards > 0 ? shards : 1);
    return per_shard < STORE_FDS_MIN ? STORE_FDS_MIN : (uint32_t)per_shard;
}

static uint64_t store_key(uint32_t topic_id, int32_t partition)
{
    return (uint64_t)topic_id << 32 | (uint32_t)partition;
}

static uint32_t store_owner(const rv_store_t *st, uint64_t name_hash, int32_t partition)
{
    return (uint32_t)((name_hash + (uint64_t)partition) % st->n);
}

static void store_plog_config(const struct rv_topic_config *cfg, struct rv_plog_config *out)
{
    /* Kafka: a compacted topic deletes by retention only when its policy says delete too. */
    bool is_compact = strstr(cfg->cleanup_policy, "compact") != NULL;
    bool is_delete = strstr(cfg->cleanup_policy, "delete") != NULL;
    *out = (struct rv_plog_config){
        .segment_bytes = (uint64_t)cfg->segment_bytes,
        .segment_ms = cfg->segment_ms,
        .retention_ms = cfg->retention_ms,
        .retention_bytes = cfg->retention_bytes,
        .index_interval = (uint32_t)cfg->index_interval_bytes,
        .max_batch_bytes = RV_TOPIC_BATCH_MAX, /* accept what a lower limit once let in */
        .is_log_append_time = strcmp(cfg->timestamp_type, "LogAppendTime") == 0,
        .is_compact = is_compact,
        .min_cleanable_dirty_ratio = cfg->min_cleanable_dirty_ratio,
        .delete_retention_ms = cfg->delete_retention_ms,
        .has_ts_bounds = true,
        .ts_before_max_ms = cfg->timestamp_before_max_ms,
        .ts_after_max_ms = cfg->timestamp_after_max_ms,
    };
    if (!is_delete)
        out->retention_ms = out->retention_bytes = -1;
}

static int store_part_dir(char *out, size_t len, const rv_store_t *st, const char *topic,
                          int32_t partition)
{
    int n = snprintf(out, len, "%s/topics/%s/%d", st->dir, topic, partition);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int store_wal_dir(char *out, size_t len, const char *dir, uint32_t shard)
{
    int n = snprintf(out, len, "%s/wal/shard-%u", dir, shard);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Blocking work over many partitions (the final sync at close, creating a
 * topic's logs) runs on a few threads at once: their fsyncs overlap, which
 * the disk takes much better than one after the other. Outside threads only. */
#define STORE_PAR_THREADS 8
#define STORE_PAR_MIN     16 /* items per thread, at least */

typedef void store_par_fn(void *ctx, uint32_t i);

struct store_par {
    store_par_fn *fn;
    void *ctx;
    uint32_t count;
    uint32_t first;
    uint32_t stride;
};

static void *store_par_main(void *p)
{
    struct store_par *w = p;
    for (uint32_t i = w->first; i < w->count; i += w->stride)
        w->fn(w->ctx, i);
    return NULL;
}

/* fn(ctx, i) for every i < count, on up to STORE_PAR_THREADS threads (the
 * caller's among them); each i runs exactly once, in no particular order. */
static void store_parallel(uint32_t count, store_par_fn *fn, void *ctx)
{
    uint32_t threads = count / STORE_PAR_MIN + 1;
    threads = threads > STORE_PAR_THREADS ? STORE_PAR_THREADS : threads;
    struct store_par w[STORE_PAR_THREADS];
    pthread_t tids[STORE_PAR_THREADS];
    bool is_started[STORE_PAR_THREADS] = {false};
    for (uint32_t t = 0; t < threads; t++)
        w[t] =
            (struct store_par){.fn = fn, .ctx = ctx, .count = count, .first = t, .stride = threads};
    for (uint32_t t = 1; t < threads; t++)
        is_started[t] = pthread_create(&tids[t], NULL, store_par_main, &w[t]) == 0;
    (void)store_par_main(&w[0]);
    for (uint32_t t = 1; t < threads; t++) {
        if (is_started[t])
            (void)pthread_join(tids[t], NULL); /* joinable, ours: cannot fail */
        else
            (void)store_par_main(&w[t]); /* no thread: do its share here */
    }
}

/* Run fn(arg) on a shard and wait (outside threads only). */
struct store_wait {
    rv_task_fn *fn;
    void *arg;
    sem_t done;
};

static void store_wait_run(void *p)
{
    struct store_wait *w = p;
    w->fn(w->arg);
}

static void store_wait_post(struct store_wait *w)
{
    sem_post(&w->done);
}

/* fn(w) runs on the shard and must call store_wait_post(w) (now or later)
 * exactly once. w is the first member of the caller's argument struct, so fn
 * receives that struct. */
static int store_run_wait(rv_store_t *st, uint32_t shard, rv_task_fn *fn, struct store_wait *w)
{
    w->fn = fn;
    w->arg = w;
    sem_init(&w->done, 0, 0);
    int rc = rv_runtime_submit(st->rt, shard, store_wait_run, w);
    if (rc == 0) {
        while (sem_wait(&w->done) < 0 && errno == EINTR)
            ;
    }
    sem_destroy(&w->done);
    return rc;
}

/* ---- the shards' route caches --------------------------------------------------------------- */

/*
 * The broker routes every partition of every request (rv_store_lookup). So
 * that this takes no lock, each shard keeps a small direct-mapped cache of
 * what it routed (by topic name); an entry holds while the catalog's
 * generation is the one it was filled at. Only its shard touches it.
 */
#define STORE_ROUTE_SLOTS 1024u /* per shard, a power of two */

struct store_route_entry {
    uint64_t gen; /* catalog generation when filled; 0: empty */
    uint64_t name_hash;
    uint32_t id;
    int32_t partitions;
    int32_t max_batch;
    bool is_log_append_time;
    uint8_t name_len;
    char name[RV_TOPIC_NAME_MAX + 1];
};

struct store_route_cache {
    struct store_route_entry slots[STORE_ROUTE_SLOTS];
};

static struct store_route_cache *store_route_caches_new(uint32_t n)
{
    return calloc(n, sizeof(struct store_route_cache));
}

/* ---- the catalog (lock held by the caller) ------------------------------------------------ */

/* Every change of the catalog moves its generation (under the write lock), so
 * the shards' route caches (rv_store_lookup) know when an entry is stale. */
static void catalog_unlock_write(rv_store_t *st)
{
    atomic_fetch_add_explicit(&st->catalog_gen, 1, memory_order_release);
    pthread_rwlock_unlock(&st->lock);
}

static struct store_topic *catalog_find(rv_store_t *st, const char *name)
{
    for (uint32_t i = 0; i < st->topic_count; i++) {
        if (!st->topics[i]->is_deleted && strcmp(st->topics[i]->name, name) == 0)
            return st->topics[i];
    }
    return NULL;
}

static struct store_topic *catalog_find_id(rv_store_t *st, uint32_t id)
{
    for (uint32_t i = 0; i < st->topic_count; i++) {
        if (st->topics[i]->id == id)
            return st->topics[i];
    }
    return NULL;
}

static int catalog_add(rv_store_t *st, const char *name, uint32_t id,
                       const struct rv_topic_config *cfg, struct store_topic **out)
{
    if (st->topic_count == st->topic_cap) {
        uint32_t cap = st->topic_cap ? st->topic_cap * 2 : 16;
        struct store_topic **t = realloc(st->topics, cap * sizeof(*t));
        if (t == NULL)
            return -ENOMEM;
        st->topics = t;
        st->topic_cap = cap;
    }
    struct store_topic *t = calloc(1, sizeof(*t));
    if (t == NULL || (t->name = strdup(name)) == NULL) {
        free(t);
        return -ENOMEM;
    }
    t->id = id;
    t->cfg = *cfg;
    t->name_hash = rv_hmap_hash_bytes(name, strlen(name));
    st->topics[st->topic_count++] = t;
    if (id >= st->next_id)
        st->next_id = id + 1;
    if (out != NULL)
        *out = t;
    return 0;
}

static void catalog_remove(rv_store_t *st, struct store_topic *t)
{
    for (uint32_t i = 0; i < st->topic_count; i++) {
        if (st->topics[i] == t) {
            st->topics[i] = st->topics[--st->topic_count];
            break;
        }
    }
    free(t->name);
    free(t);
}

/* What a request needs to know about its topic, copied under the read lock. */
struct store_route {
    uint64_t key;
    uint32_t owner;
    enum rv_codec codec;
    int32_t max_batch;
};

static int store_route(rv_store_t *st, const char *topic, int32_t partition, struct store_route *r)
{
    pthread_rwlock_rdlock(&st->lock);
    struct store_topic *t = catalog_find(st, topic);
    int rc = 0;
    if (t == NULL || partition < 0 || partition >= t->cfg.partitions) {
        rc = -ENOENT;
    } else {
        r->key = store_key(t->id, partition);
        r->owner = store_owner(st, t->name_hash, partition);
        r->codec = rv_topic_codec(&t->cfg);
        r->max_batch = t->cfg.max_message_bytes;
    }
    pthread_rwlock_unlock(&st->lock);
    return rc == 0 ? 0 : rv_errf(rc, "unknown topic or partition %s-%d", topic, partition);
}

/* ---- per-shard checkpoint and retention (owner shard) ---------------------------------------- */

static void ckpt_tick(void *arg);

static void ckpt_arm(struct store_shard *ss)
{
    if (ss->is_closing)
        return;
    if (rv_timer_add((uint64_t)ss->st->cfg.checkpoint_interval_ms * 1000, ckpt_tick, ss,
                     &ss->ckpt_timer) < 0)
        rv_warn("store: shard %u cannot arm its checkpoint timer", ss->id);
}

/* A checkpoint starts early once the WAL keeps more files than this: it bounds
 * the WAL's disk use and the replay after a crash, and the released files come
 * back as spares without being zero-filled (storage/wal.c), which a
 * checkpoint every checkpoint_interval_ms alone would leave to gigabytes of
 * WAL at full speed. */
#define STORE_CKPT_WAL_FILES 4

static void ckpt_on_wal_roll(void *ctx, uint32_t files)
{
    struct store_shard *ss = ctx;
    /* A checkpoint that failed, or that a failed log holds back, would fail
     * again at every roll (and keep the sweep from starting the rebuild it
     * waits for): the timed ones go on meanwhile. */
    if (files <= STORE_CKPT_WAL_FILES || ss->is_closing || ss->is_ckpt_running ||
        ss->is_ckpt_failing)
        return;
    /* The new timer first: without one, the pending timer stays. */
    rv_timer_id early;
    if (rv_timer_add(0, ckpt_tick, ss, &early) < 0)
        return;
    (void)rv_timer_cancel(ss->ckpt_timer); /* -ENOENT: none was pending (it could not be armed) */
    ss->ckpt_timer = early;
}

static int store_write_ckpt(const char *dir, uint32_t shard, uint64_t lsn)
{
    char wdir[PATH_MAX], path[PATH_MAX + 32], tmp[PATH_MAX + 32];
    int rc = store_wal_dir(wdir, sizeof(wdir), dir, shard);
    if (rc < 0)
        return rc;
    snprintf(path, sizeof(path), "%s/" STORE_CKPT_FILE, wdir);
    snprintf(tmp, sizeof(tmp), "%s/" STORE_CKPT_FILE ".tmp", wdir);
    char text[32];
    int len = snprintf(text, sizeof(text), "%" PRIu64 "\n", lsn);
    int fd = rv_sys_open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return fd;
    ssize_t w = rv_sys_pwrite(fd, text, (size_t)len, 0);
    rc = w == len ? rv_sys_fdatasync(fd) : (w < 0 ? (int)w : -ENOSPC);
    int crc = rv_sys_close(fd);
    if (rc == 0)
        rc = crc;
    if (rc == 0)
        rc = rv_sys_rename(tmp, path);
    return rc < 0 ? rc : rv_sys_fsync_dir(wdir);
}

static uint64_t store_read_ckpt(const char *dir, uint32_t shard)
{
    char path[PATH_MAX];
    if (store_wal_dir(path, sizeof(path), dir, shard) < 0)
        return 0;
    strncat(path, "/" STORE_CKPT_FILE, sizeof(path) - strlen(path) - 1);
    int fd = rv_sys_open(path, O_RDONLY, 0);
    if (fd < 0)
        return 0; /* no checkpoint yet: replay everything */
    char text[32] = {0};
    ssize_t n = rv_sys_pread(fd, text, sizeof(text) - 1, 0);
    (void)rv_sys_close(fd); /* read-only */
    return n > 0 ? strtoull(text, NULL, 10) : 0;
}

struct ckpt_job {
    struct store_shard *ss;
    uint64_t lsn;
    int rc;
};

static void ckpt_file_work(void *arg)
{
    struct ckpt_job *job = arg;
    job->rc = store_write_ckpt(job->ss->st->dir, job->ss->id, job->lsn);
}

static void ckpt_file_done(void *arg)
{
    struct ckpt_job *job = arg;
    struct store_shard *ss = job->ss;
    ss->is_ckpt_running = false;
    ss->is_ckpt_failing = job->rc < 0;
    ss->ckpts += job->rc == 0;
    ss->ckpt_failures += job->rc < 0;
    if (job->rc < 0) {
        rv_warn("store: shard %u checkpoint file: %s", ss->id, rv_strerror(job->rc));
    } else {
        ss->ckpt_lsn = job->lsn;
        rv_wal_release(ss->ps.wal, job->lsn);
    }
    free(job);
    ckpt_arm(ss);
}

static void ckpt_logs_synced(struct store_shard *ss)
{
    struct ckpt_job *job = malloc(sizeof(*job));
    if (ss->ckpt_err < 0 || job == NULL ||
        (*job = (struct ckpt_job){.ss = ss, .lsn = ss->ckpt_target},
         rv_offload(ckpt_file_work, job, ckpt_file_done) < 0)) {
        if (ss->ckpt_err == -EAGAIN) /* a failed log being rebuilt holds it back */
            rv_debug("store: shard %u checkpoint waits for a log's rebuild", ss->id);
        else if (ss->ckpt_err < 0)
            rv_warn("store: shard %u checkpoint: %s", ss->id, rv_strerror(ss->ckpt_err));
        free(job);
        ss->is_ckpt_running = false;
        ss->is_ckpt_failing = true;
        ss->ckpt_failures++;
        ckpt_arm(ss);
    }
}

static void ckpt_log_done(void *arg, int64_t res)
{
    struct store_shard *ss = arg;
    if (res < 0 && ss->ckpt_err == 0)
        ss->ckpt_err = (int)res;
    if (--ss->ckpt_pending == 0)
        ckpt_logs_synced(ss);
}

static void ckpt_tick(void *arg)
{
    struct store_shard *ss = arg;
    uint64_t target = rv_wal_complete_lsn(ss->ps.wal);
    if (ss->is_closing || ss->is_ckpt_running || target == ss->ckpt_lsn) {
        ckpt_arm(ss);
        return;
    }
    ss->is_ckpt_running = true;
    ss->ckpt_target = target;
    ss->ckpt_err = 0;
    ss->ckpt_pending = 1; /* held until every log was asked */
    uint32_t cursor = 0;
    uint64_t key, val;
    while (rv_hmap_next(&ss->logs, &cursor, &key, &val)) {
        ss->ckpt_pending++;
        rv_plog_checkpoint((rv_plog_t *)(uintptr_t)val, ckpt_log_done, ss);
    }
    ckpt_log_done(ss, 0);
}

static void retention_tick(void *arg)
{
    struct store_shard *ss = arg;
    if (ss->is_closing)
        return;
    int64_t now = rv_clock_wall_ms();
    uint32_t cursor = 0;
    uint64_t key, val;
    while (rv_hmap_next(&ss->logs, &cursor, &key, &val)) {
        rv_plog_enforce_retention((rv_plog_t *)(uintptr_t)val, now);
        rv_plog_compact((rv_plog_t *)(uintptr_t)val, false, now, NULL, NULL); /* when due */
    }
    uint32_t probes = 0, seen = 0, wraps = 0, count = rv_hmap_count(&ss->logs);
    while (probes < STORE_PROBES_PER_PASS && seen < count && wraps < 2) {
        if (!rv_hmap_next(&ss->logs, &ss->probe_cursor, &key, &val)) {
            ss->probe_cursor = 0; /* round again from the start */
            wraps++;
            continue;
        }
        seen++;
        probes += rv_plog_probe_retention((rv_plog_t *)(uintptr_t)val, now);
    }
    if (rv_timer_add((uint64_t)ss->st->cfg.retention_check_ms * 1000, retention_tick, ss,
                     &ss->retention_timer) < 0)
        rv_warn("store: shard %u cannot arm its retention timer", ss->id);
}

/* Close the descriptors of logs that stayed clean and unused since the last
 * sweep, so idle partitions hold no descriptor; unload the logs unused for
 * idle_unload_ms, so they hold no memory beyond their handle either; rebuild
 * failed logs from the WAL. */
static void sweep_tick(void *arg)
{
    struct store_shard *ss = arg;
    if (ss->is_closing)
        return;
    rv_plog_fds_sweep(&ss->ps); /* only the logs holding one */
    int64_t now = rv_clock_wall_ms();
    bool is_unloading = ss->st->cfg.idle_unload_ms != RV_IDLE_UNLOAD_NEVER;
    char wal_dir[PATH_MAX];
    bool has_wal_dir = store_wal_dir(wal_dir, sizeof(wal_dir), ss->st->dir, ss->id) == 0;
    uint32_t cursor = 0;
    uint64_t key, val;
    while (rv_hmap_next(&ss->logs, &cursor, &key, &val)) {
        rv_plog_t *log = (rv_plog_t *)(uintptr_t)val;
        /* A failed log is rebuilt from the WAL since the last checkpoint,
         * which it holds back until then. */
        /* Not while a checkpoint is being written: it may release WAL files
         * below the LSN the rebuild would start from. */
        if (has_wal_dir && rv_plog_needs_recovery(log) && !ss->is_ckpt_running)
            (void)rv_plog_recover(log, wal_dir, ss->ckpt_lsn, rv_wal_complete_lsn(ss->ps.wal));
        else if (is_unloading)
            (void)rv_plog_unload_idle(log, now, (int64_t)ss->st->cfg.idle_unload_ms);
    }
    if (rv_timer_add((uint64_t)ss->st->cfg.checkpoint_interval_ms * 2000, sweep_tick, ss,
                     &ss->sweep_timer) < 0)
        rv_warn("store: shard %u cannot arm its descriptor sweep", ss->id);
}

/* ---- shard set-up and tear-down (owner shard) --------------------------------------------- */

struct attach_args {
    struct store_wait w;
    struct store_shard *ss;
    rv_plog_t **logs; /* logs to attach (owned by this shard) */
    uint32_t count;
    int rc;
};

static void shard_attach_logs(void *p)
{
    struct attach_args *a = p;
    struct store_shard *ss = a->ss;
    for (uint32_t i = 0; i < a->count && a->rc == 0; i++) {
        rv_plog_attach(a->logs[i], &ss->ps);
        a->rc = rv_hmap_put(&ss->logs, rv_plog_key(a->logs[i]), (uint64_t)(uintptr_t)a->logs[i]);
    }
    store_wait_post(&a->w);
}

static void shard_setup(void *p)
{
    struct attach_args *a = p;
    struct store_shard *ss = a->ss;
    /* Room beyond the hot tier: a pool chunk keeps its first size class for
     * good, so a mix of batch sizes needs headroom (untouched blocks cost no
     * RSS). */
    struct rv_pool_opts po = {.owner_shard = (int)ss->id,
                              .bytes_max = 2 * ss->st->cfg.hot_bytes + (1ull << 30),
                              .numa_node = -1};
    a->rc = rv_pool_create(&ss->ps.pool, &po);
    rv_plog_fds_init(&ss->ps, ss->st->fds_per_shard);
    ss->ps.compact_map_entries = ss->st->cfg.compact_map_entries;
    ss->ps.is_seg_direct = ss->st->is_seg_direct;
    ss->ps.unwritten_max = ss->st->cfg.segment_backlog_bytes; /* 0: the default */
    if (a->rc == 0)
        a->rc = rv_hot_create(&ss->ps.hot, ss->st->cfg.hot_bytes);
    if (a->rc == 0)
        a->rc = rv_hmap_init(&ss->logs, 64, true);
    if (a->rc == 0) {
        ckpt_arm(ss);
        if (rv_timer_add((uint64_t)ss->st->cfg.retention_check_ms * 1000, retention_tick, ss,
                         &ss->retention_timer) < 0)
            rv_warn("store: shard %u cannot arm its retention timer", ss->id);
        if (rv_timer_add((uint64_t)ss->st->cfg.checkpoint_interval_ms * 2000, sweep_tick, ss,
                         &ss->sweep_timer) < 0)
            rv_warn("store: shard %u cannot arm its descriptor sweep", ss->id);
    }
    store_wait_post(&a->w);
}

/* Wait on the shard until its logs and WAL have nothing in flight. */
static void shard_quiesce(void *p)
{
    struct attach_args *a = p;
    struct store_shard *ss = a->ss;
    if (!ss->is_closing) {
        ss->is_closing = true;
        (void)rv_timer_cancel(ss->ckpt_timer);      /* may have fired: fine */
        (void)rv_timer_cancel(ss->retention_timer); /* likewise */
        (void)rv_timer_cancel(ss->sweep_timer);     /* likewise */
        rv_plog_fds_closing(&ss->ps); /* an opener the kernel starves fails, never hangs */
    }
    bool is_idle = ss->ps.wal == NULL || rv_wal_is_idle(ss->ps.wal);
    is_idle &= !ss->is_ckpt_running;
    is_idle &= rv_plog_fds_is_idle(&ss->ps); /* closes in flight come back first */
    uint32_t cursor = 0;
    uint64_t key, val;
    while (is_idle && rv_hmap_next(&ss->logs, &cursor, &key, &val))
        is_idle = rv_plog_is_idle((rv_plog_t *)(uintptr_t)val);
    if (is_idle) {
        rv_plog_fds_close_all(&ss->ps); /* the final sync opens what it needs */
        store_wait_post(&a->w);
        return;
    }
    if (rv_timer_add(500, shard_quiesce, a, NULL) < 0)
        store_wait_post(&a->w); /* cannot wait: close proceeds */
}

static void shard_teardown(void *p)
{
    struct attach_args *a = p;
    struct store_shard *ss = a->ss;
    if (a->rc == 0) { /* first visit: close the logs and the hot tier */
        const struct rv_plog_fds *f = &ss->ps.fds;
        if (f->waits > 0 || f->emfiles > 0)
            rv_info("store: shard %u: descriptor budget %u: at most %u open, %" PRIu64
                    " opens waited, %" PRIu64 " closed to make room, %" PRIu64 " EMFILE",
                    ss->id, f->budget, f->used_max, f->waits, f->evictions, f->emfiles);
        rv_plog_fds_fini(&ss->ps); /* before the logs its waiters would name */
        uint32_t cursor = 0;
        uint64_t key, val;
        while (rv_hmap_next(&ss->logs, &cursor, &key, &val))
            rv_plog_close((rv_plog_t *)(uintptr_t)val);
        rv_hmap_fini(&ss->logs);
        rv_hot_destroy(ss->ps.hot);
        ss->ps.hot = NULL;
        free(ss->ps.scratch);
        ss->ps.scratch = NULL;
        a->rc = 1;
    }
    /* Buffers released on other threads may still be on their way home. */
    if (ss->ps.pool != NULL && rv_pool_in_use_bytes(ss->ps.pool) > 0 && a->count++ < 2000 &&
        rv_timer_add(1000, shard_teardown, a, NULL) == 0)
        return;
    if (ss->ps.pool != NULL && rv_pool_in_use_bytes(ss->ps.pool) == 0)
        rv_pool_destroy(ss->ps.pool);
    else if (ss->ps.pool != NULL)
        rv_warn("store: shard %u: %zu buffer bytes never released; leaking the pool", ss->id,
                rv_pool_in_use_bytes(ss->ps.pool));
    ss->ps.pool = NULL;
    rv_wal_close(ss->ps.wal);
    ss->ps.wal = NULL;
    store_wait_post(&a->w);
}

/* ---- open: catalog, logs, WAL replay ------------------------------------------------------- */

#define RECOVERY_FDS_MAX 256 /* replayed logs holding a descriptor at once */

struct recovery {
    rv_store_t *st;
    rv_plog_t *open_logs[RECOVERY_FDS_MAX]; /* ring of logs the replay opened */
    uint32_t open_next;
    uint32_t open_max;      /* RECOVERY_FDS_MAX, or less under a small descriptor budget */
    struct rv_hmap logs;    /* key -> log, every partition */
    struct rv_hmap touched; /* keys the replay wrote to */
    uint64_t replayed;
    uint64_t skipped;
};

static int recovery_replay(void *arg, const struct rv_wal_record *rec)
{
    struct recovery *r = arg;
    uint64_t val;
    if (rec->type != RV_WAL_BATCH || !rv_hmap_get(&r->logs, rec->key, &val)) {
        r->skipped++; /* a deleted topic's batch */
        return 0;
    }
    rv_plog_t *log = (rv_plog_t *)(uintptr_t)val;
    bool had_fd = rv_plog_has_fd(log);
    int rc = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = rv_plog_load(log); /* written since the checkpoint: open it now */
        if (rc == 0)
            rc = rv_plog_replay(log, rec->payload, rec->len);
        if (rc != -EMFILE && rc != -ENFILE)
            break;
        /* Out of descriptors: give back every one the replay holds, once
         * (loading and replaying again from where they stopped is safe). */
        rv_info("store: replay: out of descriptors; closing those replayed logs hold");
        for (uint32_t i = 0; i < RECOVERY_FDS_MAX; i++) {
            if (r->open_logs[i] != NULL && r->open_logs[i] != log)
                rv_plog_park_fd_blocking(r->open_logs[i]);
            r->open_logs[i] = NULL;
        }
    }
    if (!had_fd && rv_plog_has_fd(log)) {
        /* Bound the descriptors a replay into many partitions holds. */
        rv_plog_t **slot = &r->open_logs[r->open_next++ % r->open_max];
        if (*slot != NULL && *slot != log)
            rv_plog_park_fd_blocking(*slot);
        *slot = log;
    }
    if (rc < 0) {
        rv_warn("store: replaying lsn %" PRIu64 ": %s", rec->lsn, rv_err_msg());
        return rc == -EBADMSG ? 0 : rc; /* a bad batch is skipped; I/O errors stop */
    }
    r->replayed++;
    return rv_hmap_put(&r->touched, rec->key, 1);
}

static int store_load_catalog(rv_store_t *st)
{
    char **names = NULL;
    uint32_t count = 0;
    int rc = rv_topic_meta_list(st->dir, &names, &count);
    for (uint32_t i = 0; i < count; i++) {
        uint32_t id;
        struct rv_topic_config cfg;
        if (rc == 0)
            rc = rv_topic_meta_load(st->dir, names[i], &id, &cfg);
        if (rc == 0 && catalog_find_id(st, id) != NULL)
            rc = rv_errf(-EBADMSG, "topic %s: id %u used twice", names[i], id);
        if (rc == 0)
            rc = catalog_add(st, names[i], id, &cfg, NULL);
        free(names[i]);
    }
    free(names);
    return rc;
}

static int store_remove_tree(const char *path);

/* DATA/topics/<name> of a topic the catalog does not hold: what a deletion
 * left when the process died between removing the description (the commit
 * point) and removing the files. Removed, so a topic created again under that
 * name starts empty. */
static int store_remove_orphans(rv_store_t *st)
{
    char dir[PATH_MAX], meta[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/topics", st->dir);
    snprintf(meta, sizeof(meta), "%s/meta/topics", st->dir);
    DIR *d = opendir(dir);
    if (d == NULL)
        return errno == ENOENT ? 0 : rv_errf(-errno, "%s: opendir", dir);
    /* Without a catalog directory at all (a partial restore, a missing
     * mount), the topics are not orphans: refuse rather than delete them. */
    struct stat sb;
    bool has_meta = stat(meta, &sb) == 0 && S_ISDIR(sb.st_mode);
    int rc = 0;
    bool is_removed = false;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || catalog_find(st, de->d_name) != NULL)
            continue;
        char path[PATH_MAX];
        int n = snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (n < 0 || (size_t)n >= sizeof(path))
            continue;
        if (!has_meta) {
            rc = rv_errf(-EUCLEAN,
                         "%s holds topic data but %s is missing: not starting (restore the "
                         "catalog, or remove %s to start empty)",
                         dir, meta, dir);
            break;
        }
        rv_warn("%s: left by a deleted topic; removing it", path);
        int rm = store_remove_tree(path);
        if (rm < 0) /* tried again at the next start, and before a create of the name */
            rv_warn("%s: remove: %s", path, rv_strerror(rm));
        is_removed = true;
    }
    closedir(d);
    if (rc == 0 && is_removed && rv_sys_fsync_dir(dir) < 0)
        rv_warn("%s: sync after removing what deleted topics left", dir);
    return rc;
}

static int store_open_logs(rv_store_t *st, struct recovery *r)
{
    for (uint32_t i = 0; i < st->topic_count; i++) {
        struct store_topic *t = st->topics[i];
        struct rv_plog_config pcfg;
        store_plog_config(&t->cfg, &pcfg);
        for (int32_t p = 0; p < t->cfg.partitions; p++) {
            char dir[PATH_MAX];
            rv_plog_t *log;
            int rc = store_part_dir(dir, sizeof(dir), st, t->name, p);
            if (rc == 0) /* lazy: loads on first use, or when the WAL replays into it */
                rc = rv_plog_create(&log, dir, store_key(t->id, p), &pcfg);
            if (rc == 0)
                rc = rv_hmap_put(&r->logs, store_key(t->id, p), (uint64_t)(uintptr_t)log);
            if (rc < 0)
                return rv_errf(rc, "topic %s partition %d: %s", t->name, p, rv_err_msg());
        }
    }
    return 0;
}

static uint32_t store_wal_dirs(const rv_store_t *st)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/wal", st->dir);
    uint32_t n = st->n;
    DIR *d = opendir(path);
    if (d == NULL)
        return n;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        unsigned k;
        if (sscanf(de->d_name, "shard-%u", &k) == 1 && k + 1 > n && k < 4096)
            n = k + 1;
    }
    closedir(d);
    return n;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path) < 0 ? -errno : 0;
}

static int store_remove_tree(const char *path)
{
    int rc = nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc < 0 ? -errno : rc;
}

/* Replay every WAL directory; keep the WALs of existing shards. */
static int store_replay_wals(rv_store_t *st, struct recovery *r)
{
    uint32_t dirs = store_wal_dirs(st);
    int rc = 0;
    for (uint32_t k = 0; k < dirs && rc == 0; k++) {
        char wdir[PATH_MAX];
        rc = store_wal_dir(wdir, sizeof(wdir), st->dir, k);
        struct rv_wal_config wc;
        rv_wal_config_init(&wc);
        wc.dir = wdir;
        wc.file_bytes = st->cfg.wal_file_bytes;
        wc.group_bytes_max =
            st->cfg.wal_group_bytes != 0
                ? st->cfg.wal_group_bytes
                : (uint32_t)(wc.file_bytes / 4 < (1u << 20) ? wc.file_bytes / 4 : (1u << 20));
        wc.group_window_us = st->cfg.wal_group_window_us;
        wc.io = st->cfg.wal_io;
        if (k < st->n) {
            wc.on_roll = ckpt_on_wal_roll;
            wc.on_roll_ctx = &st->shards[k];
        }
        uint64_t from = store_read_ckpt(st->dir, k);
        rv_wal_t *wal = NULL;
        struct rv_wal_report rep;
        if (rc == 0)
            rc = rv_wal_open(&wal, &wc, from, recovery_replay, r, &rep);
        if (rc < 0)
            break;
        if (rep.records > 0 || rep.cut_bytes > 0)
            rv_info("store: wal shard-%u: replayed %" PRIu64 " records from lsn %" PRIu64 "%s", k,
                    rep.records, from, rep.cut_bytes ? " (cut a torn tail)" : "");
        if (k < st->n) {
            st->shards[k].ps.wal = wal;
        } else {
            rv_wal_close(wal);
        }
    }
    return rc;
}

/* Make the replayed data durable in the segments and move every checkpoint
 * past what was replayed; drop WAL directories of shards that no longer exist. */
static int store_settle(rv_store_t *st, struct recovery *r)
{
    uint32_t cursor = 0;
    uint64_t key, val;
    int rc = 0;
    while (rc == 0 && rv_hmap_next(&r->touched, &cursor, &key, &val)) {
        uint64_t logv;
        if (rv_hmap_get(&r->logs, key, &logv)) {
            rv_plog_t *log = (rv_plog_t *)(uintptr_t)logv;
            rc = rv_plog_sync_blocking(log);
            /* Synced: give the descriptor back, so replaying into many
             * partitions does not hold one each (the next use reopens it). */
            (void)rv_plog_release_fd(log); /* false only if still in use: none is here */
        }
    }
    uint32_t dirs = store_wal_dirs(st);
    for (uint32_t k = 0; k < dirs && rc == 0; k++) {
        if (k < st->n) {
            uint64_t end = rv_wal_end_lsn(st->shards[k].ps.wal);
            rc = store_write_ckpt(st->dir, k, end);
            st->shards[k].ckpt_lsn = end;
        } else {
            char wdir[PATH_MAX];
            rc = store_wal_dir(wdir, sizeof(wdir), st->dir, k);
            if (rc == 0)
                rc = store_remove_tree(wdir);
        }
    }
    return rc;
}

static int store_attach_all(rv_store_t *st, struct recovery *r)
{
    int rc = 0;
    for (uint32_t k = 0; k < st->n && rc == 0; k++) {
        struct attach_args a = {.ss = &st->shards[k]};
        rc = store_run_wait(st, k, shard_setup, &a.w);
        rc = rc < 0 ? rc : a.rc;
    }
    for (uint32_t k = 0; k < st->n && rc == 0; k++) {
        struct attach_args a = {.ss = &st->shards[k]};
        a.logs = malloc((rv_hmap_count(&r->logs) + 1) * sizeof(*a.logs));
        if (a.logs == NULL)
            return -ENOMEM;
        for (uint32_t i = 0; i < st->topic_count; i++) {
            struct store_topic *t = st->topics[i];
            for (int32_t p = 0; p < t->cfg.partitions; p++) {
                uint64_t val;
                if (store_owner(st, t->name_hash, p) == k &&
                    rv_hmap_get(&r->logs, store_key(t->id, p), &val))
                    a.logs[a.count++] = (rv_plog_t *)(uintptr_t)val;
            }
        }
        rc = store_run_wait(st, k, shard_attach_logs, &a.w);
        rc = rc < 0 ? rc : a.rc;
        free(a.logs);
    }
    return rc;
}

static void store_free(rv_store_t *st)
{
    for (uint32_t i = 0; i < st->topic_count; i++) {
        free(st->topics[i]->name);
        free(st->topics[i]);
    }
    free(st->topics);
    free(st->shards);
    free(st->rcs);
    free(st->dir);
    pthread_rwlock_destroy(&st->lock);
    free(st);
}

static void recovery_fini(struct recovery *r, bool is_failed)
{
    if (is_failed) {
        uint32_t cursor = 0;
        uint64_t key, val;
        while (rv_hmap_next(&r->logs, &cursor, &key, &val))
            rv_plog_close((rv_plog_t *)(uintptr_t)val);
    }
    rv_hmap_fini(&r->logs);
    rv_hmap_fini(&r->touched);
}

int rv_store_open(rv_store_t **out, rv_runtime_t *rt, const struct rv_store_config *cfg)
{
    RV_ASSERT(out != NULL && rt != NULL && cfg != NULL);
    const char *dir = rv_runtime_data_dir(rt);
    if (dir == NULL)
        return rv_errf(-EINVAL, "rv_store_open: the runtime has no data_dir");
    if (rv_shard_self() >= 0)
        return rv_errf(-EINVAL, "rv_store_open: not from a shard");
    if (cfg->wal_group_bytes != 0 &&
        (cfg->wal_group_bytes % 4096 != 0 || cfg->wal_group_bytes > cfg->wal_file_bytes / 4))
        return rv_errf(-EINVAL,
                       "rv_store_open: wal_group_bytes %u: a multiple of 4096, at most a quarter "
                       "of wal_file_bytes (%llu)",
                       cfg->wal_group_bytes, (unsigned long long)cfg->wal_file_bytes);
    if (cfg->segment_backlog_bytes > STORE_BACKLOG_MAX)
        return rv_errf(-EINVAL, "rv_store_open: segment_backlog_bytes %llu: at most %llu",
                       (unsigned long long)cfg->segment_backlog_bytes,
                       (unsigned long long)STORE_BACKLOG_MAX);
    rv_store_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return -ENOMEM;
    pthread_rwlock_init(&st->lock, NULL);
    st->rt = rt;
    st->cfg = *cfg;
    st->n = rv_runtime_shard_count(rt);
    st->fds_per_shard = store_fd_budget(cfg, st->n);
    st->dir = strdup(dir);
    st->shards = calloc(st->n, sizeof(*st->shards));
    st->rcs = store_route_caches_new(st->n);
    struct recovery r = {.st = st, .open_max = RECOVERY_FDS_MAX};
    if ((uint64_t)st->fds_per_shard * st->n < r.open_max) /* before the shards serve: all theirs */
        r.open_max = st->fds_per_shard * st->n;
    int rc = st->dir && st->shards && st->rcs ? 0 : -ENOMEM;
    for (uint32_t k = 0; k < st->n && rc == 0; k++)
        st->shards[k] = (struct store_shard){.st = st, .id = k};
    if (rc == 0)
        rc = rv_hmap_init(&r.logs, 64, true);
    if (rc == 0)
        rc = rv_hmap_init(&r.touched, 64, true);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/topics", dir);
    if (rc == 0)
        rc = rv_sys_mkdir_p(path, 0755);
    if (rc == 0)
        rc = store_seg_io(st, path);
    if (rc == 0)
        rc = store_load_catalog(st);
    if (rc == 0)
        rc = store_remove_orphans(st);
    if (rc == 0)
        rc = store_open_logs(st, &r);
    if (rc == 0)
        rc = store_replay_wals(st, &r);
    if (rc == 0)
        rc = store_settle(st, &r);
    if (rc == 0)
        rc = store_attach_all(st, &r);
    if (rc < 0) {
        /* Not attached yet when we fail before store_attach_all finished its
         * first pass; a half-attached store is closed the normal way. */
        recovery_fini(&r, true);
        for (uint32_t k = 0; k < st->n; k++)
            rv_wal_close(st->shards[k].ps.wal);
        store_free(st);
        return rc;
    }
    if (r.replayed > 0)
        rv_info("store: recovered %" PRIu64 " batches from the WAL (%" PRIu64 " skipped)",
                r.replayed, r.skipped);
    recovery_fini(&r, false);
    *out = st;
    return 0;
}

/* The final sync of rv_store_close: every log of every shard. */
struct close_sync {
    rv_plog_t **logs;
    uint32_t *shards; /* each log's shard */
    int *rcs;         /* each log's result */
    uint32_t count;
};

static void close_sync_one(void *ctx, uint32_t i)
{
    struct close_sync *cs = ctx;
    cs->rcs[i] = rv_plog_sync_blocking(cs->logs[i]);
}

void rv_store_close(rv_store_t *st)
{
    if (st == NULL)
        return;
    RV_ASSERT(rv_shard_self() < 0);
    for (uint32_t k = 0; k < st->n; k++) {
        struct attach_args a = {.ss = &st->shards[k]};
        (void)store_run_wait(st, k, shard_quiesce, &a.w); /* only -ESHUTDOWN: a bug */
    }
    /* Every shard is idle for storage now: sync from here (blocking is fine),
     * every log of every shard on a few threads. */
    struct close_sync cs = {0};
    for (uint32_t k = 0; k < st->n; k++)
        cs.count += rv_hmap_count(&st->shards[k].logs);
    cs.logs = malloc((cs.count + 1) * sizeof(*cs.logs));
    cs.shards = malloc((cs.count + 1) * sizeof(*cs.shards));
    cs.rcs = calloc(cs.count + 1, sizeof(*cs.rcs));
    int alloc_rc = cs.logs != NULL && cs.shards != NULL && cs.rcs != NULL ? 0 : -ENOMEM;
    uint32_t n = 0;
    for (uint32_t k = 0; k < st->n && alloc_rc == 0; k++) {
        uint32_t cursor = 0;
        uint64_t key, val;
        while (rv_hmap_next(&st->shards[k].logs, &cursor, &key, &val)) {
            cs.logs[n] = (rv_plog_t *)(uintptr_t)val;
            cs.shards[n++] = k;
        }
    }
    if (alloc_rc == 0)
        store_parallel(cs.count, close_sync_one, &cs);
    for (uint32_t k = 0; k < st->n; k++) {
        struct store_shard *ss = &st->shards[k];
        int rc = alloc_rc; /* no memory: no checkpoint, the WAL is replayed */
        for (uint32_t i = 0; i < n && rc == 0; i++)
            rc = cs.shards[i] == k ? cs.rcs[i] : 0;
        if (rc == 0 && ss->ps.wal != NULL)
            rc = store_write_ckpt(st->dir, k, rv_wal_end_lsn(ss->ps.wal));
        if (rc < 0)
            rv_warn("store: shard %u: final sync failed (%s); the WAL will be replayed", k,
                    rv_strerror(rc));
        struct attach_args a = {.ss = ss};
        (void)store_run_wait(st, k, shard_teardown, &a.w);
    }
    free(cs.logs);
    free(cs.shards);
    free(cs.rcs);
    store_free(st);
}

/* ---- produce -------------------------------------------------------------------------------- */

struct produce_op {
    rv_store_t *st;
    uint64_t key;
    uint8_t *batch; /* malloc'd; copied into a pool buffer on the owner */
    rv_buf_t *buf;  /* or built in the owner's pool already (a call on the owner) */
    uint32_t len;
    int acks;
    rv_produce_fn *cb;
    void *arg;
};

static size_t produce_bound(const struct rv_record *recs, uint32_t count)
{
    size_t n = RV_BATCH_HEADER_BYTES;
    for (uint32_t i = 0; i < count; i++) {
        n += RV_BATCH_RECORD_OVERHEAD_MAX + (recs[i].key_len > 0 ? (size_t)recs[i].key_len : 0) +
             (recs[i].value_len > 0 ? (size_t)recs[i].value_len : 0);
        for (uint32_t h = 0; h < recs[i].header_count; h++) {
            const struct rv_record_header *hd = &recs[i].headers[h];
            n += 10 + (hd->key_len > 0 ? (size_t)hd->key_len : 0) +
                 (hd->value_len > 0 ? (size_t)hd->value_len : 0);
        }
    }
    return n;
}

static int produce_add(struct rv_batch_builder *b, const struct rv_record *r, int64_t now)
{
    struct rv_batch_record_header hs[64];
    if (r->header_count > RV_ARRAY_LEN(hs))
        return rv_errf(-EINVAL, "produce: %u headers (at most 64)", r->header_count);
    for (uint32_t h = 0; h < r->header_count; h++)
        hs[h] = (struct rv_batch_record_header){.key = (const uint8_t *)r->headers[h].key,
                                                .key_len = r->headers[h].key_len,
                                                .value = r->headers[h].value,
                                                .value_len = r->headers[h].value_len};
    if ((r->key_len > 0 && r->key == NULL) || (r->value_len > 0 && r->value == NULL) ||
        r->key_len < -1 || r->value_len < -1)
        return rv_errf(-EINVAL, "produce: a record's key or value does not match its length");
    return rv_batch_builder_add(b, r->timestamp_ms > 0 ? r->timestamp_ms : now, r->key, r->key_len,
                                r->value, r->value_len, hs, r->header_count);
}

/* Build one batch (compressed as the topic says) into a malloc'd buffer, or
 * into `into` (cap bytes, uncompressed topics only) when given. */
static int produce_build(const struct store_route *rt, const struct rv_record *recs, uint32_t count,
                         uint8_t *into, size_t cap, uint8_t **out, uint32_t *out_len)
{
    if (count == 0)
        return rv_errf(-EINVAL, "produce: no records");
    RV_ASSERT(into == NULL || rt->codec == RV_CODEC_NONE);
    uint8_t *buf = into != NULL ? into : malloc(cap);
    if (buf == NULL)
        return -ENOMEM;
    struct rv_batch_params params = {.base_timestamp = RV_BATCH_NO_TIMESTAMP,
                                     .producer_id = RV_BATCH_NO_PRODUCER_ID,
                                     .base_sequence = RV_BATCH_NO_SEQUENCE,
                                     .producer_epoch = -1};
    struct rv_batch_builder b;
    int64_t now = rv_clock_wall_ms();
    int rc = rv_batch_builder_init(&b, buf, cap, &params);
    for (uint32_t i = 0; i < count && rc == 0; i++)
        rc = produce_add(&b, &recs[i], now);
    if (rc < 0) {
        if (into == NULL)
            free(buf);
        return rc;
    }
    size_t len = 0;
    uint8_t *res = buf;
    if (rt->codec == RV_CODEC_NONE) {
        rc = rv_batch_builder_finish(&b, &len);
    } else {
        size_t zcap = rv_batch_compressed_bound(rt->codec, b.pos);
        res = malloc(zcap);
        rc = res == NULL ? -ENOMEM
                         : rv_batch_builder_finish_compressed(
                               &b, rt->codec, rv_codec_default_level(rt->codec), res, zcap, &len);
        free(buf);
    }
    if (rc == 0 && len > (size_t)rt->max_batch)
        rc = rv_errf(-EMSGSIZE, "produce: batch of %zu bytes over max.message.bytes %d", len,
                     rt->max_batch);
    if (rc < 0) {
        if (into == NULL)
            free(res);
        return rc;
    }
    *out = res;
    *out_len = (uint32_t)len;
    return 0;
}

/* On the owner shard, an uncompressed batch is built straight into a buffer
 * of the shard's pool: no copy and no malloc for it (0, or -errno; 1 when the
 * pool has no block that size: build it the other way). */
static int produce_build_owned(rv_store_t *st, const struct store_route *rt,
                               const struct rv_record *recs, uint32_t count, size_t cap,
                               struct produce_op *op)
{
    rv_buf_t *buf;
    if (rv_buf_alloc(st->shards[rt->owner].ps.pool, cap, &buf) < 0)
        return 1;
    uint8_t *batch;
    int rc = produce_build(rt, recs, count, rv_buf_data(buf), cap, &batch, &op->len);
    if (rc < 0) {
        rv_buf_put(buf);
        return rc;
    }
    rv_buf_set_len(buf, op->len);
    op->buf = buf;
    return 0;
}

static void produce_done(void *arg, int64_t base)
{
    struct produce_op *op = arg;
    op->cb(op->arg, base);
    free(op);
}

static void produce_on_owner(void *arg)
{
    struct produce_op *op = arg;
    struct store_shard *ss = &op->st->shards[rv_shard_self()];
    uint64_t val;
    rv_buf_t *buf = NULL;
    int rc = rv_hmap_get(&ss->logs, op->key, &val) ? 0 : -ENOENT;
    if (rc == 0 && !rv_plog_is_ready((rv_plog_t *)(uintptr_t)val)) {
        rc = rv_plog_when_ready((rv_plog_t *)(uintptr_t)val, produce_on_owner, op);
        if (rc == 0)
            return; /* runs again once the log is loaded */
    }
    if (rc == 0 && op->buf != NULL) {
        buf = op->buf; /* built here already */
        op->buf = NULL;
    } else if (rc == 0) {
        rc = rv_buf_alloc(ss->ps.pool, op->len, &buf);
        if (rc == 0) {
            memcpy(rv_buf_data(buf), op->batch, op->len);
            rv_buf_set_len(buf, op->len);
        }
    }
    if (rc == 0) {
        uint8_t *data = rv_buf_data(buf);
        /* Built by produce_build: valid by construction, not checked again. */
        rc = rv_plog_append_built((rv_plog_t *)(uintptr_t)val, buf, data, op->len, op->acks,
                                  produce_done, op);
        rv_buf_put(buf); /* the log holds its own reference */
    }
    free(op->batch);
    op->batch = NULL;
    if (op->buf != NULL) { /* not appended (no such log) */
        rv_buf_put(op->buf);
        op->buf = NULL;
    }
    if (rc < 0)
        produce_done(op, rc);
}

int rv_produce(rv_store_t *st, const char *topic, int32_t partition, const struct rv_record *recs,
               uint32_t count, enum rv_acks acks, rv_produce_fn *cb, void *arg)
{
    RV_ASSERT(cb != NULL);
    struct store_route route;
    int rc = store_route(st, topic, partition, &route);
    if (rc < 0)
        return rc;
    struct produce_op *op = malloc(sizeof(*op));
    if (op == NULL)
        return -ENOMEM;
    *op = (struct produce_op){.st = st, .key = route.key, .acks = acks, .cb = cb, .arg = arg};
    size_t cap = count > 0 ? produce_bound(recs, count) : 0;
    rc = 1;
    if (rv_shard_self() == (int)route.owner && route.codec == RV_CODEC_NONE && count > 0)
        rc = produce_build_owned(st, &route, recs, count, cap, op);
    if (rc == 1)
        rc = produce_build(&route, recs, count, NULL, cap, &op->batch, &op->len);
    if (rc == 0) /* a task even on the owner: cb never runs inside this call */
        rc = rv_runtime_submit(st->rt, route.owner, produce_on_owner, op);
    if (rc < 0) {
        free(op->batch);
        if (op->buf != NULL)
            rv_buf_put(op->buf);
        free(op);
    }
    return rc;
}

struct sync_wait {
    sem_t sem;
    int64_t result;
    rv_fetch_result_t *res;
};

static void sync_produce_done(void *arg, int64_t result)
{
    struct sync_wait *w = arg;
    w->result = result;
    sem_post(&w->sem);
}

static void sync_wait(struct sync_wait *w)
{
    while (sem_wait(&w->sem) < 0 && errno == EINTR)
        ;
    sem_destroy(&w->sem);
}

int64_t rv_produce_sync(rv_store_t *st, const char *topic, int32_t partition,
                        const struct rv_record *recs, uint32_t count, enum rv_acks acks)
{
    if (rv_shard_self() >= 0)
        return rv_errf(-EINVAL, "rv_produce_sync: not from a shard (it would wait forever)");
    uint64_t give_up_ns = rv_clock_now_ns() + (uint64_t)RV_PRODUCE_SYNC_BLOCK_MS * 1000000;
    uint32_t pause_us = 50;
    for (;;) {
        struct sync_wait w;
        sem_init(&w.sem, 0, 0);
        int rc = rv_produce(st, topic, partition, recs, count, acks, sync_produce_done, &w);
        if (rc < 0) {
            sem_destroy(&w.sem);
            return rc;
        }
        sync_wait(&w);
        /* -ENOBUFS: refused before anything was written (WAL or segment
         * writes saturated), so trying again cannot duplicate it. */
        if (w.result != -ENOBUFS || rv_clock_now_ns() >= give_up_ns)
            return w.result;
        usleep(pause_us);
        pause_us = pause_us < 10000 ? pause_us * 2 : pause_us;
    }
}

/* ---- fetch ---------------------------------------------------------------------------------- */

struct rv_fetch_result {
    struct rv_plog_fetch f;
    int64_t offset; /* requested: records below it are skipped */
    uint32_t slice; /* next slice to open */
    bool has_slice;
    bool has_batch;
    struct rv_batch_iter bit;
    struct rv_batch_view batch;
    struct rv_batch_record_iter rit;
    uint8_t *scratch; /* decompressed records of the current batch */
    size_t scratch_cap;
};

struct fetch_op {
    rv_store_t *st;
    uint64_t key;
    int64_t offset;
    uint32_t max_bytes;
    rv_fetch_fn *cb;
    void *arg;
};

static void fetch_done(void *arg, struct rv_plog_fetch *f)
{
    struct fetch_op *op = arg;
    int err = f->err;
    rv_fetch_result_t *res = err == 0 ? calloc(1, sizeof(*res)) : NULL;
    if (err == 0 && res == NULL)
        err = -ENOMEM;
    if (err < 0) {
        rv_plog_fetch_release(f);
        op->cb(op->arg, NULL, err);
    } else {
        res->f = *f; /* the references move to the result */
        res->offset = op->offset;
        for (uint32_t i = 0; i < res->f.slice_count; i++)
            rv_buf_freeze(res->f.slices[i].buf); /* read-only from here, on any thread */
        op->cb(op->arg, res, 0);
    }
    free(op);
}

static void fetch_on_owner(void *arg)
{
    struct fetch_op *op = arg;
    struct store_shard *ss = &op->st->shards[rv_shard_self()];
    uint64_t val;
    if (!rv_hmap_get(&ss->logs, op->key, &val)) {
        struct rv_plog_fetch f = {.err = -ENOENT};
        fetch_done(op, &f);
        return;
    }
    rv_plog_t *log = (rv_plog_t *)(uintptr_t)val;
    if (!rv_plog_is_ready(log) && rv_plog_when_ready(log, fetch_on_owner, op) == 0)
        return; /* runs again once the log is loaded */
    rv_plog_fetch(log, op->offset, op->max_bytes, fetch_done, op);
}

int rv_fetch(rv_store_t *st, const char *topic, int32_t partition, int64_t offset,
             uint32_t max_bytes, rv_fetch_fn *cb, void *arg)
{
    RV_ASSERT(cb != NULL);
    struct store_route route;
    int rc = store_route(st, topic, partition, &route);
    if (rc < 0)
        return rc;
    struct fetch_op *op = malloc(sizeof(*op));
    if (op == NULL)
        return -ENOMEM;
    *op = (struct fetch_op){.st = st,
                            .key = route.key,
                            .offset = offset,
                            .max_bytes = max_bytes ? max_bytes : 1,
                            .cb = cb,
                            .arg = arg};
    rc = rv_runtime_submit(st->rt, route.owner, fetch_on_owner, op);
    if (rc < 0)
        free(op);
    return rc;
}

static void sync_fetch_done(void *arg, rv_fetch_result_t *res, int err)
{
    struct sync_wait *w = arg;
    w->res = res;
    w->result = err;
    sem_post(&w->sem);
}

int rv_fetch_sync(rv_store_t *st, const char *topic, int32_t partition, int64_t offset,
                  uint32_t max_bytes, rv_fetch_result_t **out)
{
    if (rv_shard_self() >= 0)
        return rv_errf(-EINVAL, "rv_fetch_sync: not from a shard (it would wait forever)");
    struct sync_wait w = {0};
    sem_init(&w.sem, 0, 0);
    int rc = rv_fetch(st, topic, partition, offset, max_bytes, sync_fetch_done, &w);
    if (rc < 0) {
        sem_destroy(&w.sem);
        return rc;
    }
    sync_wait(&w);
    if (w.result < 0)
        return (int)w.result;
    *out = w.res;
    return 0;
}

/* Decompress the current batch's records into the result's scratch buffer. */
static int fetch_decompress(rv_fetch_result_t *res)
{
    struct rv_batch_view *v = &res->batch;
    size_t n = 0;
    int rc = rv_codec_decompress_grow(rv_batch_codec(v), v->records, v->records_bytes,
                                      &res->scratch, &res->scratch_cap, 64u << 20, &n);
    if (rc == 0)
        rc = rv_batch_validate_records(v, res->scratch, n);
    if (rc == 0)
        rv_batch_record_iter_init(&res->rit, v, res->scratch, n);
    return rc;
}

/* Open the next batch worth reading: 1, 0 at the end, -errno. */
static int fetch_next_batch(rv_fetch_result_t *res)
{
    for (;;) {
        if (!res->has_slice) {
            if (res->slice >= res->f.slice_count)
                return 0;
            const struct rv_fetch_slice *s = &res->f.slices[res->slice++];
            rv_batch_iter_init(&res->bit, s->bytes, s->len, RV_TOPIC_BATCH_MAX);
            res->has_slice = true;
        }
        int rc = rv_batch_iter_next(&res->bit, &res->batch);
        if (rc == 0) {
            res->has_slice = false;
            continue;
        }
        if (rc < 0)
            return rc;
        if (rv_batch_is_control(&res->batch) || rv_batch_last_offset(&res->batch) < res->offset)
            continue;
        if (rv_batch_codec(&res->batch) == RV_CODEC_NONE) {
            rv_batch_record_iter_init(&res->rit, &res->batch, res->batch.records,
                                      res->batch.records_bytes);
        } else {
            rc = fetch_decompress(res);
            if (rc < 0)
                return rc;
        }
        return 1;
    }
}

int rv_fetch_next(rv_fetch_result_t *res, struct rv_record_view *out)
{
    for (;;) {
        if (!res->has_batch) {
            int rc = fetch_next_batch(res);
            if (rc <= 0)
                return rc < 0 ? -EBADMSG : 0;
            res->has_batch = true;
        }
        struct rv_batch_record r;
        int rc = rv_batch_record_iter_next(&res->rit, &r);
        if (rc == 0) {
            res->has_batch = false;
            continue;
        }
        if (rc < 0)
            return -EBADMSG;
        if (r.offset < res->offset)
            continue;
        *out = (struct rv_record_view){.offset = r.offset,
                                       .timestamp_ms = r.timestamp_ms,
                                       .key = r.key,
                                       .key_len = r.key_len,
                                       .value = r.value,
                                       .value_len = r.value_len,
                                       .header_count = r.header_count};
        return 1;
    }
}

int64_t rv_fetch_high_watermark(const rv_fetch_result_t *res)
{
    return res->f.high_watermark;
}

int64_t rv_fetch_log_start(const rv_fetch_result_t *res)
{
    return res->f.log_start;
}

uint32_t rv_fetch_batch_ranges(const rv_fetch_result_t *res)
{
    return res->f.slice_count;
}

const void *rv_fetch_batch_range(const rv_fetch_result_t *res, uint32_t i, uint32_t *len)
{
    RV_ASSERT(i < res->f.slice_count);
    *len = res->f.slices[i].len;
    return res->f.slices[i].bytes;
}

void rv_fetch_release(rv_fetch_result_t *res)
{
    if (res == NULL)
        return;
    rv_plog_fetch_release(&res->f);
    free(res->scratch);
    free(res);
}

/* ---- blocking partition calls: list offsets, delete records, info ----------------------------- */

enum part_call_kind {
    PART_LIST_OFFSET,
    PART_DELETE_RECORDS,
    PART_INFO,
    PART_COMPACT,
};

struct part_call {
    struct store_wait w;
    rv_store_t *st;
    uint64_t key;
    uint8_t kind;
    int64_t arg; /* the "when" or the offset */
    int64_t result;
    struct rv_partition_info info;
};

static void part_call_done(void *arg, int64_t result)
{
    struct part_call *c = arg;
    c->result = result;
    store_wait_post(&c->w);
}

static void part_call_run(void *arg)
{
    struct part_call *c = arg;
    struct store_shard *ss = &c->st->shards[rv_shard_self()];
    uint64_t val;
    if (!rv_hmap_get(&ss->logs, c->key, &val)) {
        part_call_done(c, -ENOENT);
        return;
    }
    rv_plog_t *log = (rv_plog_t *)(uintptr_t)val;
    rv_plog_note_use(log);
    if (!rv_plog_is_ready(log) && rv_plog_when_ready(log, part_call_run, c) == 0)
        return; /* runs again once the log is loaded */
    if (rv_plog_load_error(log) < 0) {
        part_call_done(c, rv_plog_load_error(log));
        return;
    }
    switch (c->kind) {
    case PART_LIST_OFFSET:
        if (c->arg == RV_OFFSET_EARLIEST)
            part_call_done(c, rv_plog_log_start(log));
        else if (c->arg == RV_OFFSET_LATEST)
            part_call_done(c, rv_plog_high_watermark(log));
        else
            rv_plog_offset_for_time(log, c->arg, part_call_done, c);
        break;
    case PART_DELETE_RECORDS: rv_plog_delete_records(log, c->arg, part_call_done, c); break;
    case PART_COMPACT: rv_plog_compact(log, true, rv_clock_wall_ms(), part_call_done, c); break;
    default:
        c->info = (struct rv_partition_info){.log_start = rv_plog_log_start(log),
                                             .high_watermark = rv_plog_high_watermark(log),
                                             .size_bytes = rv_plog_size_bytes(log),
                                             .segments = rv_plog_segment_count(log),
                                             .shard = ss->id};
        part_call_done(c, 0);
    }
}

static int64_t part_call(rv_store_t *st, const char *topic, int32_t partition, struct part_call *c)
{
    if (rv_shard_self() >= 0)
        return rv_errf(-EINVAL, "blocking storage call from a shard");
    struct store_route route;
    int rc = store_route(st, topic, partition, &route);
    if (rc < 0)
        return rc;
    c->st = st;
    c->key = route.key;
    rc = store_run_wait(st, route.owner, part_call_run, &c->w);
    return rc < 0 ? rc : c->result;
}

int64_t rv_list_offset(rv_store_t *st, const char *topic, int32_t partition, int64_t when)
{
    struct part_call c = {.kind = PART_LIST_OFFSET, .arg = when};
    if (when < RV_OFFSET_EARLIEST)
        return rv_errf(-EINVAL, "list offset: %lld is neither a timestamp nor earliest/latest",
                       (long long)when);
    return part_call(st, topic, partition, &c);
}

int64_t rv_delete_records(rv_store_t *st, const char *topic, int32_t partition, int64_t offset)
{
    struct part_call c = {.kind = PART_DELETE_RECORDS, .arg = offset};
    return part_call(st, topic, partition, &c);
}

int64_t rv_store_compact(rv_store_t *st, const char *topic, int32_t partition)
{
    struct part_call c = {.kind = PART_COMPACT};
    return part_call(st, topic, partition, &c);
}

int rv_partition_info(rv_store_t *st, const char *topic, int32_t partition,
                      struct rv_partition_info *out)
{
    struct part_call c = {.kind = PART_INFO};
    int64_t rc = part_call(st, topic, partition, &c);
    if (rc == 0)
        *out = c.info;
    return (int)rc;
}

/* ---- topic administration (blocking, outside threads) --------------------------------------- */

struct topic_call {
    struct store_wait w;
    struct store_shard *ss;
    uint32_t topic_id;
    rv_plog_t **logs;
    uint32_t count;
    struct rv_plog_config pcfg;
    int rc;
};

static void topic_attach(void *p)
{
    struct topic_call *c = p;
    for (uint32_t i = 0; i < c->count && c->rc == 0; i++) {
        rv_plog_attach(c->logs[i], &c->ss->ps);
        c->rc = rv_hmap_put(&c->ss->logs, rv_plog_key(c->logs[i]), (uint64_t)(uintptr_t)c->logs[i]);
    }
    store_wait_post(&c->w);
}

/* Remove the topic's logs once idle, closing them. */
static void topic_detach(void *p)
{
    struct topic_call *c = p;
    struct store_shard *ss = c->ss;
    uint32_t cursor = 0;
    uint64_t key, val;
    while (rv_hmap_next(&ss->logs, &cursor, &key, &val)) {
        if ((uint32_t)(key >> 32) == c->topic_id && !rv_plog_is_idle((rv_plog_t *)(uintptr_t)val)) {
            if (rv_timer_add(1000, topic_detach, c, NULL) == 0)
                return; /* appends or reads still in flight: look again shortly */
        }
    }
    cursor = 0;
    while (rv_hmap_next(&ss->logs, &cursor, &key, &val)) {
        if ((uint32_t)(key >> 32) != c->topic_id)
            continue;
        (void)rv_hmap_del(&ss->logs, key, NULL); /* found just now */
        rv_plog_close((rv_plog_t *)(uintptr_t)val);
        cursor = 0; /* deletion moves entries: start over */
    }
    store_wait_post(&c->w);
}

static void topic_reconfigure(void *p)
{
    struct topic_call *c = p;
    uint32_t cursor = 0;
    uint64_t key, val;
    while (rv_hmap_next(&c->ss->logs, &cursor, &key, &val)) {
        if ((uint32_t)(key >> 32) == c->topic_id)
            rv_plog_set_config((rv_plog_t *)(uintptr_t)val, &c->pcfg);
    }
    store_wait_post(&c->w);
}

/* Creating a topic's logs, on a few threads. */
struct topic_create {
    rv_store_t *st;
    const char *name;
    uint32_t id;
    int32_t first;
    struct rv_plog_config pcfg;
    rv_plog_t **logs;
    int *rcs;
};

static void topic_create_one(void *ctx, uint32_t i)
{
    struct topic_create *tc = ctx;
    int32_t p = tc->first + (int32_t)i;
    char dir[PATH_MAX];
    int rc = store_part_dir(dir, sizeof(dir), tc->st, tc->name, p);
    /* Made here without syncing the topic directory: the caller syncs it once
     * for all (rv_plog_open then finds it and syncs only what it creates). */
    if (rc == 0)
        rc = rv_sys_mkdir(dir, 0755);
    if (rc == 0 || rc == -EEXIST)
        rc = rv_plog_open(&tc->logs[p], dir, store_key(tc->id, p), &tc->pcfg);
    tc->rcs[i] = rc;
}

/* Create and open partitions first.. of a topic (its directory, and in each a
 * first segment), durably. */
static int topic_create_logs(rv_store_t *st, const char *name, uint32_t id,
                             const struct rv_topic_config *cfg, int32_t first, rv_plog_t **logs)
{
    struct topic_create tc = {.st = st, .name = name, .id = id, .first = first, .logs = logs};
    store_plog_config(cfg, &tc.pcfg);
    uint32_t count = (uint32_t)(cfg->partitions - first);
    char tdir[PATH_MAX];
    int n = snprintf(tdir, sizeof(tdir), "%s/topics/%s", st->dir, name);
    int rc = n < 0 || (size_t)n >= sizeof(tdir) ? -ENAMETOOLONG : 0;
    if (rc == 0 && first == 0) { /* a new topic: nothing of an older one may remain */
        int rm = store_remove_tree(tdir);
        if (rm == 0)
            rv_warn("%s: left by a deleted topic; removed", tdir);
        else if (rm != -ENOENT)
            rc = rv_errf(rm, "%s: remove what a deleted topic left", tdir);
    }
    if (rc == 0)
        rc = rv_sys_mkdir_p(tdir, 0755);
    tc.rcs = rc == 0 ? calloc(count + 1, sizeof(*tc.rcs)) : NULL;
    if (rc == 0 && tc.rcs == NULL)
        rc = -ENOMEM;
    if (rc == 0)
        store_parallel(count, topic_create_one, &tc);
    for (uint32_t i = 0; i < count && rc == 0; i++) {
        rc = tc.rcs[i];
        if (rc < 0)
            rc =
                rv_errf(rc, "topic %s partition %d: %s", name, first + (int32_t)i, rv_strerror(rc));
    }
    free(tc.rcs);
    if (rc == 0)
        rc = rv_sys_fsync_dir(tdir); /* the new partition directories */
    return rc;
}

/* Open every partition of a new topic and hand each to its shard. */
static int topic_open_all(rv_store_t *st, const char *name, uint32_t id, uint64_t name_hash,
                          const struct rv_topic_config *cfg, int32_t first)
{
    rv_plog_t **logs = calloc((size_t)cfg->partitions, sizeof(*logs));
    if (logs == NULL)
        return -ENOMEM;
    int rc = topic_create_logs(st, name, id, cfg, first, logs);
    for (uint32_t k = 0; k < st->n && rc == 0; k++) {
        struct topic_call c = {.ss = &st->shards[k]};
        c.logs = malloc((size_t)cfg->partitions * sizeof(*c.logs));
        if (c.logs == NULL) {
            rc = -ENOMEM;
            break;
        }
        for (int32_t p = first; p < cfg->partitions; p++) {
            if (store_owner(st, name_hash, p) == k) {
                c.logs[c.count++] = logs[p];
                logs[p] = NULL; /* the shard owns it now */
            }
        }
        rc = store_run_wait(st, k, topic_attach, &c.w);
        rc = rc < 0 ? rc : c.rc;
        free(c.logs);
    }
    for (int32_t p = 0; p < cfg->partitions; p++)
        rv_plog_close(logs[p]); /* those never handed over */
    free(logs);
    return rc;
}

static void topic_detach_all(rv_store_t *st, uint32_t id)
{
    for (uint32_t k = 0; k < st->n; k++) {
        struct topic_call c = {.ss = &st->shards[k], .topic_id = id};
        (void)store_run_wait(st, k, topic_detach, &c.w); /* -ESHUTDOWN only: a bug */
    }
}

int rv_topic_create(rv_store_t *st, const char *name, const struct rv_topic_config *cfg)
{
    if (rv_shard_self() >= 0)
        return rv_errf(-EINVAL, "rv_topic_create: not from a shard");
    if (!rv_topic_name_is_valid(name))
        return rv_errf(-EINVAL,
                       "topic name \"%s\": 1..%d characters of [a-zA-Z0-9._-], not "
                       "\".\" or \"..\"",
                       name, RV_TOPIC_NAME_MAX);
    int rc = rv_topic_config_check(cfg);
    if (rc < 0)
        return rc;
    pthread_rwlock_wrlock(&st->lock);
    struct store_topic *t = NULL;
    rc = catalog_find(st, name) != NULL ? -EEXIST : 0;
    if (rc == 0)
        rc = catalog_add(st, name, st->next_id, cfg, &t);
    if (rc == 0)
        t->is_deleted = true; /* invisible until every partition is ready */
    catalog_unlock_write(st);
    if (rc < 0)
        return rc == -EEXIST ? rv_errf(rc, "topic %s already exists", name) : rc;
    rc = rv_topic_meta_save(st->dir, name, t->id, cfg);
    if (rc == 0)
        rc = topic_open_all(st, name, t->id, t->name_hash, cfg, 0);
    pthread_rwlock_wrlock(&st->lock);
    if (rc == 0)
        t->is_deleted = false;
    catalog_unlock_write(st);
    if (rc < 0) {
        int err = rc;
        topic_detach_all(st, t->id);
        if (rv_topic_meta_remove(st->dir, name) < 0) /* best effort: already failing */
            rv_warn("topic %s: could not remove its half-made description", name);
        pthread_rwlock_wrlock(&st->lock);
        catalog_remove(st, t);
        catalog_unlock_write(st);
        return err;
    }
    return 0;
}

int rv_topic_delete(rv_store_t *st, const char *name)
{
    if (rv_shard_self() >= 0)
        return rv_errf(-EINVAL, "rv_topic_delete: not from a shard");
    pthread_rwlock_wrlock(&st->lock);
    struct store_topic *t = catalog_find(st, name);
    if (t != NULL)
        t->is_deleted = true; /* no new request reaches it */
    catalog_unlock_write(st);
    if (t == NULL)
        return rv_errf(-ENOENT, "no topic %s", name);
    int rc = rv_topic_meta_remove(st->dir, name);
    topic_detach_all(st, t->id);
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/topics/%s", st->dir, name);
    int rm = store_remove_tree(dir);
    if (rm < 0 && rm != -ENOENT) /* the next start, or a create of the name, removes it */
        rv_warn("topic %s: removing %s: %s", name, dir, rv_strerror(rm));
    snprintf(dir, sizeof(dir), "%s/topics", st->dir);
    if (rm == 0 && rv_sys_fsync_dir(dir) < 0)
        rv_warn("topic %s: sync %s after the removal", name, dir);
    pthread_rwlock_wrlock(&st->lock);
    catalog_remove(st, t);
    catalog_unlock_write(st);
    return rc;
}

int rv_topic_describe(rv_store_t *st, const char *name, struct rv_topic_config *out)
{
    pthread_rwlock_rdlock(&st->lock);
    struct store_topic *t = catalog_find(st, name);
    if (t != NULL)
        *out = t->cfg;
    pthread_rwlock_unlock(&st->lock);
    return t != NULL ? 0 : rv_errf(-ENOENT, "no topic %s", name);
}

int rv_topic_alter(rv_store_t *st, const char *name, const struct rv_topic_config *cfg)
{
    if (rv_shard_self() >= 0)
        return rv_errf(-EINVAL, "rv_topic_alter: not from a shard");
    int rc = rv_topic_config_check(cfg);
    if (rc < 0)
        return rc;
    pthread_rwlock_wrlock(&st->lock);
    struct store_topic *t = catalog_find(st, name);
    uint32_t id = t != NULL ? t->id : 0;
    if (t == NULL)
        rc = rv_errf(-ENOENT, "no topic %s", name);
    else if (cfg->partitions != t->cfg.partitions)
        rc = rv_errf(-EINVAL, "topic %s: partitions cannot change here", name);
    else if ((rc = rv_topic_meta_save(st->dir, name, id, cfg)) == 0)
        t->cfg = *cfg;
    catalog_unlock_write(st);
    if (rc < 0)
        return rc;
    for (uint32_t k = 0; k < st->n; k++) {
        struct topic_call c = {.ss = &st->shards[k], .topic_id = id};
        store_plog_config(cfg, &c.pcfg);
        (void)store_run_wait(st, k, topic_reconfigure, &c.w); /* -ESHUTDOWN only */
    }
    return 0;
}

int rv_topic_list(rv_store_t *st, char ***out_names, uint32_t *out_count)
{
    pthread_rwlock_rdlock(&st->lock);
    uint32_t n = 0;
    char **names = calloc(st->topic_count + 1, sizeof(*names));
    int rc = names != NULL ? 0 : -ENOMEM;
    for (uint32_t i = 0; i < st->topic_count && rc == 0; i++) {
        if (st->topics[i]->is_deleted)
            continue;
        names[n] = strdup(st->topics[i]->name);
        rc = names[n] != NULL ? 0 : -ENOMEM;
        n += rc == 0;
    }
    pthread_rwlock_unlock(&st->lock);
    if (rc < 0) {
        rv_topic_list_free(names, n);
        return rc;
    }
    *out_names = names;
    *out_count = n;
    return 0;
}

void rv_topic_list_free(char **names, uint32_t count)
{
    if (names == NULL)
        return;
    for (uint32_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
}

/* ---- the broker's interface (storage/part.h) ------------------------------------------------- */

uint32_t rv_store_shard_count(const rv_store_t *st)
{
    return st->n;
}

/* Copy a wire topic name into a C string: false when it cannot be a topic. */
static bool store_name(char *out, const char *topic, size_t len)
{
    if (len == 0 || len > RV_TOPIC_NAME_MAX || memchr(topic, '\0', len) != NULL)
        return false;
    memcpy(out, topic, len);
    out[len] = '\0';
    return true;
}

static uint64_t store_name_key(const char *name, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)name[i]) * 0x100000001b3ull;
    return h;
}

/* This shard's cached route for name[0..len), or NULL (a miss, or stale). */
static const struct store_route_entry *store_route_cached(rv_store_t *st, const char *name,
                                                          size_t len, uint64_t key)
{
    int self = rv_shard_self();
    if (self < 0 || (uint32_t)self >= st->n)
        return NULL;
    const struct store_route_entry *e = &st->rcs[self].slots[key & (STORE_ROUTE_SLOTS - 1)];
    uint64_t gen = atomic_load_explicit(&st->catalog_gen, memory_order_acquire);
    if (e->gen != gen + 1 || e->name_len != len || memcmp(e->name, name, len) != 0)
        return NULL;
    return e;
}

/* Fill this shard's entry from t (read lock held; gen read under it). */
static void store_route_fill(rv_store_t *st, const struct store_topic *t, size_t len, uint64_t key)
{
    int self = rv_shard_self();
    if (self < 0 || (uint32_t)self >= st->n)
        return;
    struct store_route_entry *e = &st->rcs[self].slots[key & (STORE_ROUTE_SLOTS - 1)];
    *e = (struct store_route_entry){
        .gen = atomic_load_explicit(&st->catalog_gen, memory_order_acquire) + 1,
        .name_hash = t->name_hash,
        .id = t->id,
        .partitions = t->cfg.partitions,
        .max_batch = t->cfg.max_message_bytes,
        .is_log_append_time = strcmp(t->cfg.timestamp_type, "LogAppendTime") == 0,
        .name_len = (uint8_t)len,
    };
    memcpy(e->name, t->name, len);
}

int rv_store_lookup(rv_store_t *st, const char *topic, size_t len, int32_t p,
                    struct rv_part_ref *out)
{
    char name[RV_TOPIC_NAME_MAX + 1];
    if (!store_name(name, topic, len))
        return -EINVAL;
    uint64_t key = store_name_key(name, len);
    const struct store_route_entry *e = store_route_cached(st, name, len, key);
    if (e != NULL) { /* the common case: no lock */
        if (p < 0 || p >= e->partitions)
            return -ERANGE;
        *out = (struct rv_part_ref){.key = store_key(e->id, p),
                                    .owner = store_owner(st, e->name_hash, p),
                                    .partitions = e->partitions,
                                    .max_batch = e->max_batch,
                                    .is_log_append_time = e->is_log_append_time};
        return 0;
    }
    pthread_rwlock_rdlock(&st->lock);
    struct store_topic *t = catalog_find(st, name);
    int rc = 0;
    if (t == NULL || t->is_deleted) {
        rc = -ENOENT;
    } else if (p < 0 || p >= t->cfg.partitions) {
        store_route_fill(st, t, len, key);
        rc = -ERANGE;
    } else {
        store_route_fill(st, t, len, key);
        *out = (struct rv_part_ref){.key = store_key(t->id, p),
                                    .owner = store_owner(st, t->name_hash, p),
                                    .partitions = t->cfg.partitions,
                                    .max_batch = t->cfg.max_message_bytes,
                                    .is_log_append_time =
                                        strcmp(t->cfg.timestamp_type, "LogAppendTime") == 0};
    }
    pthread_rwlock_unlock(&st->lock);
    return rc;
}

int rv_store_topic_info(rv_store_t *st, const char *topic, size_t len,
                        struct rv_store_topic_info *out)
{
    char name[RV_TOPIC_NAME_MAX + 1];
    if (!store_name(name, topic, len))
        return -ENOENT;
    pthread_rwlock_rdlock(&st->lock);
    struct store_topic *t = catalog_find(st, name);
    /* A topic being created or deleted exists, but not for requests yet. */
    int rc = t == NULL ? -ENOENT : t->is_deleted ? -EBUSY : 0;
    if (rc == 0)
        *out = (struct rv_store_topic_info){
            .id = t->id, .partitions = t->cfg.partitions, .cfg = t->cfg};
    pthread_rwlock_unlock(&st->lock);
    return rc;
}

int rv_store_topic_by_id(rv_store_t *st, uint32_t id, char *name, struct rv_store_topic_info *out)
{
    pthread_rwlock_rdlock(&st->lock);
    struct store_topic *t = catalog_find_id(st, id);
    int rc = t == NULL || t->is_deleted ? -ENOENT : 0;
    if (rc == 0) {
        snprintf(name, RV_TOPIC_NAME_MAX + 1, "%s", t->name);
        *out = (struct rv_store_topic_info){
            .id = t->id, .partitions = t->cfg.partitions, .cfg = t->cfg};
    }
    pthread_rwlock_unlock(&st->lock);
    return rc;
}

int rv_store_log(rv_store_t *st, uint64_t key, rv_task_fn *retry, void *arg, rv_plog_t **out)
{
    int self = rv_shard_self();
    RV_ASSERT(self >= 0 && (uint32_t)self < st->n);
    uint64_t val;
    if (!rv_hmap_get(&st->shards[self].logs, key, &val))
        return -ENOENT;
    rv_plog_t *log = (rv_plog_t *)(uintptr_t)val;
    rv_plog_note_use(log); /* keeps it loaded (idle unload) */
    if (!rv_plog_is_ready(log)) {
        int rc = rv_plog_when_ready(log, retry, arg);
        return rc < 0 ? rc : 1;
    }
    int rc = rv_plog_load_error(log);
    if (rc < 0)
        return rc;
    *out = log;
    return 0;
}

rv_pool_t *rv_store_pool(rv_store_t *st)
{
    int self = rv_shard_self();
    RV_ASSERT(self >= 0 && (uint32_t)self < st->n);
    return st->shards[self].ps.pool;
}

void rv_store_set_append_hook(rv_store_t *st, rv_store_append_hook *hook, void *ctx)
{
    int self = rv_shard_self();
    RV_ASSERT(self >= 0 && (uint32_t)self < st->n);
    st->shards[self].ps.on_append = hook;
    st->shards[self].ps.on_append_ctx = ctx;
}

static bool store_log_is_open(const rv_plog_t *log)
{
    return rv_plog_is_ready(log) && rv_plog_load_error(log) == 0;
}

void rv_store_shard_stats(rv_store_t *st, struct rv_store_shard_stats *out)
{
    int self = rv_shard_self();
    RV_ASSERT(self >= 0 && (uint32_t)self < st->n);
    const struct store_shard *ss = &st->shards[self];
    *out = (struct rv_store_shard_stats){.logs = ss->logs.count,
                                         .fds_used = ss->ps.fds.used,
                                         .fds_budget = ss->ps.fds.budget,
                                         .fds_evictions = ss->ps.fds.evictions,
                                         .fds_waits = ss->ps.fds.waits,
                                         .logs_unloaded = ss->ps.unloads,
                                         .checkpoints = ss->ckpts,
                                         .checkpoint_failures = ss->ckpt_failures};
    if (ss->ps.wal != NULL)
        rv_wal_get_stats(ss->ps.wal, &out->wal);
    if (ss->ps.hot != NULL)
        rv_hot_get_stats(ss->ps.hot, &out->hot);
    uint32_t cursor = 0;
    uint64_t key, val;
    while (rv_hmap_next(&ss->logs, &cursor, &key, &val))
        out->logs_loaded += store_log_is_open((rv_plog_t *)(uintptr_t)val);
}

void rv_store_each_log(rv_store_t *st, rv_store_log_fn *fn, void *arg)
{
    int self = rv_shard_self();
    RV_ASSERT(self >= 0 && (uint32_t)self < st->n);
    uint32_t cursor = 0;
    uint64_t key, val;
    while (rv_hmap_next(&st->shards[self].logs, &cursor, &key, &val)) {
        rv_plog_t *log = (rv_plog_t *)(uintptr_t)val;
        fn(arg, key, rv_plog_has_offsets(log) ? log : NULL);
    }
}

int rv_topic_add_partitions(rv_store_t *st, const char *name, int32_t partitions)
{
    if (rv_shard_self() >= 0)
        return rv_errf(-EINVAL, "rv_topic_add_partitions: not from a shard");
    pthread_rwlock_wrlock(&st->lock);
    struct store_topic *t = catalog_find(st, name);
    int rc = 0;
    struct rv_topic_config cfg;
    if (t == NULL || t->is_deleted) {
        rc = rv_errf(-ENOENT, "no topic %s", name);
    } else if (partitions <= t->cfg.partitions || partitions > RV_TOPIC_PARTITIONS_MAX) {
        rc =
            rv_errf(-EINVAL, "topic %s has %d partitions: cannot go to %d (only up, to at most %d)",
                    name, t->cfg.partitions, partitions, RV_TOPIC_PARTITIONS_MAX);
    } else {
        cfg = t->cfg;
        cfg.partitions = partitions;
        rc = rv_topic_meta_save(st->dir, name, t->id, &cfg);
    }
    uint32_t id = rc == 0 ? t->id : 0;
    uint64_t name_hash = rc == 0 ? t->name_hash : 0;
    int32_t first = rc == 0 ? t->cfg.partitions : 0;
    catalog_unlock_write(st);
    if (rc < 0)
        return rc;
    /* The new logs exist on their shards before requests can route to them. */
    rc = topic_open_all(st, name, id, name_hash, &cfg, first);
    if (rc < 0)
        return rc; /* the description says more: the next start opens the rest */
    pthread_rwlock_wrlock(&st->lock);
    t = catalog_find(st, name);
    if (t != NULL && t->id == id)
        t->cfg.partitions = partitions;
    catalog_unlock_write(st);
    return 0;
}
