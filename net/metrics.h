/*
 * net/metrics.h - the broker's counters: kept per shard with plain integers,
 * collected over the mailboxes, written in the Prometheus text format.
 *
 * Counting (hot path, on a shard): every shard has its own counters, reached
 * through a thread-local pointer set by rv_metrics_open. The rv_metrics_on_*
 * hooks add to the calling shard's counters: no atomics, no locks, nothing
 * shared. On a thread without counters (tests without a broker, a shard
 * before rv_metrics_open or after rv_metrics_close) they do nothing.
 *
 * Collecting (any thread that is not a shard, e.g. the admin HTTP thread):
 * rv_metrics_collect sends one task to every shard, which copies its counters
 * into a snapshot, and, once the shard serves a store, its storage counters
 * (WAL, hot tier, descriptors) and the offsets of its open partition logs
 * (storage/part.h; a log not opened since the start is counted but not
 * opened for this), then answers. The collector names the topics from the
 * catalog and keeps at most RV_METRICS_PARTITIONS_MAX partitions. The
 * runtime's own counters come from rv_runtime_shard_stats. Nothing is read
 * from another shard's memory.
 *
 * Writing: rv_metrics_format turns a snapshot into the text exposition format
 * 0.0.4 (# HELP, # TYPE, one family at a time, labels shard="N", api, topic,
 * partition; base units; counters end in _total; histograms as _bucket{le},
 * _sum, _count). docs/operations.md ("Monitoring") lists the families.
 *
 * Threading: the hooks run on shards; rv_metrics_open, _close, _set_serving
 * and _collect block and run on threads outside the runtime.
 */
#ifndef RV_NET_METRICS_H
#define RV_NET_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/assert.h"
#include "rivven.h"
#include "storage/part.h"
#include "storage/plog.h"

struct rv_kp_struct_desc;

#define RV_METRICS_API_SLOTS       89    /* Kafka API keys 0..87, then "unknown" */
#define RV_METRICS_LATENCY_BUCKETS 16    /* finite bounds; one more bucket is +Inf */
#define RV_METRICS_PARTITIONS_MAX  10000 /* partitions reported per scrape */
#define RV_METRICS_WAIT_MS         5000  /* a shard that does not answer a scrape by then */

/* The upper bounds of the request latency buckets, in seconds. */
extern const double rv_metrics_latency_le[RV_METRICS_LATENCY_BUCKETS];

/* One Kafka API on one shard. */
struct rv_metrics_api {
    uint64_t requests; /* completed: answered, answered with nothing (acks=0), or failed */
    uint64_t errors;   /* answered with a non-zero error code, or failed (connection closed) */
    uint64_t sum_ns;   /* of their latencies, from the frame received to the answer */
    uint64_t buckets[RV_METRICS_LATENCY_BUCKETS + 1]; /* per bucket (not cumulative); last +Inf */
};

/* Data of one topic through one shard. */
struct rv_metrics_topic {
    uint32_t topic_id;
    uint64_t bytes_in;    /* batch bytes appended (produce, on the owner shard) */
    uint64_t records_in;  /* records of those batches (their headers' record counts) */
    uint64_t batches_in;  /* batches appended */
    uint64_t bytes_out;   /* batch bytes answered to fetches (on the connection's shard) */
    uint64_t records_out; /* records of those batches */
    char name[RV_TOPIC_NAME_MAX + 1]; /* snapshots only: "" when the topic is gone */
};

/* One open partition log, read on its owner shard. */
struct rv_metrics_part {
    uint32_t topic_index; /* in the snapshot's topic_names */
    int32_t partition;
    uint32_t shard; /* the owner */
    int64_t log_start;
    int64_t log_end; /* the high watermark: the next offset */
    uint64_t size_bytes;
};

/* What one shard reported. */
struct rv_metrics_shard_snap {
    bool has_counters; /* the shard had counters (rv_metrics_open) */
    bool is_serving;   /* recovered and listening (rv_metrics_set_serving) */
    uint64_t delay_ns; /* from the scrape's task sent to it running there */
    struct rv_metrics_api apis[RV_METRICS_API_SLOTS];
    struct rv_metrics_topic *topics; /* malloc'd */
    uint32_t topic_count;
    uint64_t conns_accepted;
    uint64_t conns_closed;
    uint64_t checks_offloaded; /* large compressed batches checked on a helper thread */
    struct rv_shard_stats rt;  /* the runtime's counters of the shard */
    bool has_storage;          /* it serves a store: storage below is filled */
    struct rv_store_shard_stats storage;
};

struct rv_metrics_snapshot {
    uint32_t shard_count;
    struct rv_metrics_shard_snap *shards; /* [shard_count] */
    bool is_ready;                        /* every shard serves */
    char **topic_names;                   /* malloc'd; NULL entries: topics gone */
    uint32_t topic_name_count;
    struct rv_metrics_part *parts; /* open logs, sorted by topic name, then partition */
    uint32_t part_count;
    bool is_parts_capped; /* more open logs than RV_METRICS_PARTITIONS_MAX: parts is a prefix */
};

/* ---- lifecycle (blocking, outside the runtime) ------------------------------------- */

/* Give every shard of rt its counters (zeroed). -ENOMEM (then none has any),
 * -ESHUTDOWN. */
RV_MUST_CHECK int rv_metrics_open(rv_runtime_t *rt);
/* Free every shard's counters; the hooks do nothing afterwards. */
void rv_metrics_close(rv_runtime_t *rt);
/* Every shard recovered and listens, serving st (ready); NULL: not serving. */
void rv_metrics_set_serving(rv_runtime_t *rt, rv_store_t *st);

/* ---- hooks (the calling shard's counters) ------------------------------------------ */

/* The start of a request: its time, or 0 when this shard counts nothing. */
uint64_t rv_metrics_on_request_start(void);
/* A request completed (api_key < 0: its header did not parse); is_failed: it
 * closes the connection. */
void rv_metrics_on_request_done(int16_t api_key, uint64_t start_ns, bool is_failed);
/* A response (desc, msg at version) is about to be sent: counts an error when
 * any ErrorCode field in it is not 0. */
void rv_metrics_on_response(int16_t api_key, const struct rv_kp_struct_desc *desc, const void *msg,
                            int16_t version);
/* A batch of `len` bytes at `batch` was appended to a partition (WAL key:
 * topic id << 32 | partition). */
void rv_metrics_on_produced(uint64_t part_key, const uint8_t *batch, uint32_t len);
/* Fetched batches (whole ones) go out for a partition. */
void rv_metrics_on_fetched(uint64_t part_key, const struct rv_fetch_slice *slices, uint32_t count);
void rv_metrics_on_conn_open(void);
void rv_metrics_on_check_offloaded(void);
void rv_metrics_on_conn_close(void);

/* ---- collecting and writing -------------------------------------------------------- */

/*
 * Ask every shard for its counters (and partitions; see above) and return
 * them in *out. Blocking; not from a shard. With is_ready_only only the
 * readiness is asked. -ENOMEM, -ESHUTDOWN, -ETIMEDOUT when a shard did not
 * answer within RV_METRICS_WAIT_MS (what it would have written is left
 * allocated for it). On failure *out is untouched.
 */
RV_MUST_CHECK int rv_metrics_collect(rv_runtime_t *rt, bool is_ready_only,
                                     struct rv_metrics_snapshot **out);
/* NULL is a no-op. */
void rv_metrics_snapshot_free(struct rv_metrics_snapshot *snap);

/* Write snap in the text exposition format 0.0.4 to f. -EIO when f failed. */
RV_MUST_CHECK int rv_metrics_format(const struct rv_metrics_snapshot *snap, FILE *f);

/* The name of an API slot ("Produce", ..., "unknown"). */
const char *rv_metrics_api_name(uint32_t slot);

#endif /* RV_NET_METRICS_H */
