/*
 * storage/part.h - the storage engine's interface for the broker (net/): find a
 * partition once, then work on its log on the owner shard without blocking.
 *
 * The public API (rivven.h) serves embedders: it builds batches from records
 * and blocks outside threads. The broker instead receives whole RecordBatches
 * and runs on the shards, so it routes a request itself (one mailbox message
 * per owner shard), and on the owner calls the partition log (storage/plog.h)
 * directly with the received buffer: no copy of the batch bytes.
 *
 *   any thread:   rv_store_lookup -> (key, owner shard)
 *   owner shard:  rv_store_log(key) -> rv_plog_t *, loading a lazy log first
 *
 * Topic administration (rivven.h's rv_topic_* and rv_topic_add_partitions
 * below) blocks: the broker runs it on a helper thread (rv_offload).
 */
#ifndef RV_STORAGE_PART_H
#define RV_STORAGE_PART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/assert.h"
#include "core/pool.h"
#include "rivven.h"
#include "storage/plog.h"

/* A partition as the broker routes it. */
struct rv_part_ref {
    uint64_t key;       /* WAL key: topic id << 32 | partition */
    uint32_t owner;     /* the shard that owns its log */
    int32_t partitions; /* of its topic */
    int32_t max_batch;  /* max.message.bytes */
    bool is_log_append_time;
};

/* What the broker needs of a topic. */
struct rv_store_topic_info {
    uint32_t id;
    int32_t partitions;
    struct rv_topic_config cfg;
};

/* Called on the owner shard after a log's end moved (an append applied). */
typedef void rv_store_append_hook(void *ctx, uint64_t key);

/* ---- any thread ------------------------------------------------------------------------ */

/*
 * Route topic[0..len) partition p. 0, or -ENOENT (no such topic, or being
 * created or deleted), -ERANGE (partition outside the topic), -EINVAL (a name
 * that cannot be a topic). Takes the catalog's read lock briefly.
 */
RV_MUST_CHECK int rv_store_lookup(rv_store_t *st, const char *topic, size_t len, int32_t p,
                                  struct rv_part_ref *out);

/* Describe topic[0..len): 0, -ENOENT, or -EBUSY while it is being created or
 * deleted. */
RV_MUST_CHECK int rv_store_topic_info(rv_store_t *st, const char *topic, size_t len,
                                      struct rv_store_topic_info *out);

/* Find a topic by its id: copies its name (RV_TOPIC_NAME_MAX + 1 bytes). 0 or -ENOENT. */
RV_MUST_CHECK int rv_store_topic_by_id(rv_store_t *st, uint32_t id, char *name,
                                       struct rv_store_topic_info *out);

/* The shard count the store places partitions over. */
uint32_t rv_store_shard_count(const rv_store_t *st);

/*
 * Grow a topic to `partitions` partitions (never shrink: -EINVAL). Blocking;
 * not from a shard. -ENOENT for no such topic.
 */
RV_MUST_CHECK int rv_topic_add_partitions(rv_store_t *st, const char *name, int32_t partitions);

/*
 * Compact a partition of a compacted topic now (storage/compact.h), whether or
 * not a pass is due, and wait for it: the bytes it freed, or -errno (-EINVAL:
 * the topic does not compact; -EBUSY: a pass is running). Blocking; not from
 * a shard. For tests, benchmarks and tools.
 */
int64_t rv_store_compact(rv_store_t *st, const char *topic, int32_t partition);

/* ---- the calling shard ------------------------------------------------------------------- */

/*
 * The log of `key` if this shard owns it. Returns 0 and sets *out when it is
 * loaded; 1 when it is loading: retry(arg) runs on this shard once it is
 * ready (call again then); -ENOENT (not here, or deleted), or the error that
 * loading it met.
 */
RV_MUST_CHECK int rv_store_log(rv_store_t *st, uint64_t key, rv_task_fn *retry, void *arg,
                               rv_plog_t **out);

/* This shard's buffer pool (the one appends must come from). */
rv_pool_t *rv_store_pool(rv_store_t *st);

/* Call hook(ctx, key) on this shard after every append applied to one of its
 * logs (long-polling fetches wait on it). One hook per shard; NULL removes. */
void rv_store_set_append_hook(rv_store_t *st, rv_store_append_hook *hook, void *ctx);

/* This shard's storage counters (read-only; for metrics). */
struct rv_store_shard_stats {
    struct rv_wal_stats wal;
    struct rv_hot_stats hot;
    uint32_t logs;                /* partition logs this shard owns */
    uint32_t logs_loaded;         /* of them, opened (a log opens on first use) */
    uint64_t logs_unloaded;       /* logs given back after idle_unload_ms unused */
    uint32_t fds_used;            /* descriptor budget: slots taken */
    uint32_t fds_budget;          /* slots configured */
    uint64_t fds_evictions;       /* descriptors closed to make room */
    uint64_t fds_waits;           /* openers that waited for a slot */
    uint64_t checkpoints;         /* checkpoints written (the WAL released up to them) */
    uint64_t checkpoint_failures; /* checkpoints that failed or a failed log held back */
};
void rv_store_shard_stats(rv_store_t *st, struct rv_store_shard_stats *out);

/* Call fn(arg, key, log) for every partition log of this shard, log NULL when
 * its offsets are not known (not opened since start, or loading; nothing is
 * opened for this). A log unloaded when idle is passed with the offsets it
 * had (rv_plog_has_offsets): only its queries may be used. fn must not add
 * or remove logs. */
typedef void rv_store_log_fn(void *arg, uint64_t key, rv_plog_t *log);
void rv_store_each_log(rv_store_t *st, rv_store_log_fn *fn, void *arg);

#endif /* RV_STORAGE_PART_H */
