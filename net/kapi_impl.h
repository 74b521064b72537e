/*
 * net/kapi_impl.h - what the API handlers (net/kapi*.c) share: the request,
 * the per-shard state, response encoding, and the hop to the shards that own
 * partitions and back.
 *
 * A handler gets the decoded request body (req->msg) and, sooner or later,
 * calls exactly one of kapi_respond (encode a response message), kapi_no_response
 * (acks=0 produce) or kapi_fail (close the connection). Work for partitions
 * goes to their owner shards as one struct kapi_work per shard:
 *
 *   kapi_send(req, work, run)       origin: run(work) on work->shard
 *   kapi_work_done(work)            owner: back to the origin, where
 *   req->on_works_done(req)         runs once every work sent came back
 *
 * kapi_send_parts does the whole round for a request's partitions: it groups
 * them by owner shard and sends one work to each.
 *
 * Threading: the request, its state and its response belong to the origin
 * shard; a work is touched by its owner shard between kapi_send and
 * kapi_work_done and by the origin shard otherwise.
 */
#ifndef RV_NET_KAPI_IMPL_H
#define RV_NET_KAPI_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/hmap.h"
#include "net/kapi.h"
#include "net/kproto.h"
#include "net/kproto_gen.h"
#include "storage/part.h"

/* Kafka error codes (../shared/kafka-protocol/errors.txt). */
enum {
    KERR_UNKNOWN_SERVER_ERROR = -1,
    KERR_NONE = 0,
    KERR_OFFSET_OUT_OF_RANGE = 1,
    KERR_CORRUPT_MESSAGE = 2,
    KERR_UNKNOWN_TOPIC_OR_PARTITION = 3,
    KERR_INVALID_FETCH_SIZE = 4,
    KERR_LEADER_NOT_AVAILABLE = 5,
    KERR_NOT_LEADER_OR_FOLLOWER = 6,
    KERR_REQUEST_TIMED_OUT = 7,
    KERR_MESSAGE_TOO_LARGE = 10,
    KERR_COORDINATOR_NOT_AVAILABLE = 15,
    KERR_INVALID_TOPIC_EXCEPTION = 17,
    KERR_RECORD_LIST_TOO_LARGE = 18,
    KERR_INVALID_REQUIRED_ACKS = 21,
    KERR_INVALID_TIMESTAMP = 32,
    KERR_UNSUPPORTED_VERSION = 35,
    KERR_TOPIC_ALREADY_EXISTS = 36,
    KERR_INVALID_PARTITIONS = 37,
    KERR_INVALID_REPLICATION_FACTOR = 38,
    KERR_INVALID_REPLICA_ASSIGNMENT = 39,
    KERR_INVALID_CONFIG = 40,
    KERR_INVALID_REQUEST = 42,
    KERR_UNSUPPORTED_FOR_MESSAGE_FORMAT = 43,
    KERR_POLICY_VIOLATION = 44,
    KERR_OUT_OF_ORDER_SEQUENCE_NUMBER = 45,
    KERR_INVALID_PRODUCER_EPOCH = 47,
    KERR_KAFKA_STORAGE_ERROR = 56,
    KERR_LOG_DIR_NOT_FOUND = 57,
    KERR_UNKNOWN_PRODUCER_ID = 59,
    KERR_FETCH_SESSION_ID_NOT_FOUND = 70,
    KERR_UNKNOWN_LEADER_EPOCH = 75,
    KERR_UNSUPPORTED_COMPRESSION_TYPE = 76,
    KERR_INVALID_RECORD = 87,
    KERR_UNKNOWN_TOPIC_ID = 100,
};

/* Records sent from where they are: a gathered records field's value points
 * at one of these (see rv_kp_write_records). */
struct kapi_records {
    uint32_t count;
    const struct rv_fetch_slice *slices;
};

/* The value of a records field sent from r (r must outlive the response). */
static inline struct rv_kp_bytes kapi_records_value(const struct kapi_records *r, uint32_t len)
{
    return (struct rv_kp_bytes){.ptr = (const uint8_t *)((uintptr_t)r | 1u), .len = (int32_t)len};
}

struct kreq_gather {
    size_t pos; /* in resp: the records go before this byte */
    const struct kapi_records *recs;
    uint32_t len; /* bytes of the records */
};

struct kapi_work;
typedef void kapi_handler_fn(struct rv_kreq *req);

struct rv_kreq {
    struct rv_kapi_shard *ks;
    rv_kreq_done_fn *done;
    void *done_arg;
    rv_buf_t *buf; /* the frame's receive buffer (a reference), or NULL */
    void *heap;    /* or the malloc'd frame */
    uint8_t *frame;
    size_t len;
    struct rv_kp_request_header h;
    const struct rv_kp_api *api;
    int16_t version;
    int32_t node;            /* the node id the client addressed (its listener's), or -1 */
    const char *client_host; /* "/1.2.3.4" (Kafka's form), "" when unknown */
    void *msg;               /* the decoded body, in the arena */
    struct rv_kproto_arena arena;
    void *arena_mem;
    struct kreq_block *blocks; /* kapi_alloc beyond the arena */
    /* The response: resp holds everything but the gathered records. */
    uint8_t *resp;
    size_t resp_len;   /* bytes in resp */
    size_t resp_total; /* the frame: resp_len + every gathered byte */
    struct kreq_gather *gathers;
    uint32_t gather_count;
    uint32_t gather_cap;
    int err; /* -EPROTO: close the connection */
    char why[192];
    bool is_done;
    /* The handler's own. */
    void *state;
    void (*state_free)(struct rv_kreq *req);
    uint32_t works_pending;
    void (*on_works_done)(struct rv_kreq *req);
    /* Parked (a long-poll fetch): the shard's list. */
    struct rv_kreq *park_prev;
    struct rv_kreq *park_next;
    bool is_parked;
    uint64_t start_ns; /* rv_metrics_on_request_start */
};

/* One shard's part of a request. Handlers embed it first in their own. */
struct kapi_work {
    struct rv_kreq *req;
    uint32_t origin;
    uint32_t shard; /* where run goes */
    rv_task_fn *run;
};

struct rv_kapi_shard {
    const struct rv_kapi_broker *b;
    uint32_t id;
    uint32_t pending;       /* requests not yet done */
    struct rv_kreq *parked; /* long-poll fetches waiting for data */
    struct rv_hmap watches; /* owner side: partition key -> mask of shards to wake */
    bool is_closing;
};

/* ---- responses ------------------------------------------------------------------------------- */

/* Encode msg (desc) as the response of req at its version, then complete it. */
void kapi_respond(struct rv_kreq *req, const struct rv_kp_struct_desc *desc, const void *msg);
/* Complete with no response (produce with acks=0). */
void kapi_no_response(struct rv_kreq *req);
/* Complete by closing the connection; printf-style reason for the log. */
void kapi_fail(struct rv_kreq *req, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Answer an API we cannot serve here with UNSUPPORTED_VERSION. */
void kapi_unsupported(struct rv_kreq *req);

/* Memory that lives as long as the request (zeroed). NULL when out of memory. */
void *kapi_alloc(struct rv_kreq *req, size_t bytes);

/* ---- hops to owner shards ---------------------------------------------------------------------- */

/* Run work->run(work) on work->shard (directly when it is this shard). The
 * request's on_works_done runs once every sent work came back. Call
 * kapi_works_begin first and kapi_works_end after the last kapi_send. */
void kapi_works_begin(struct rv_kreq *req, void (*on_done)(struct rv_kreq *req));
void kapi_send(struct rv_kreq *req, struct kapi_work *work, uint32_t shard, rv_task_fn *run);
void kapi_works_end(struct rv_kreq *req);
/* On the owner: the work is finished; hand it back to its origin. */
void kapi_work_done(struct kapi_work *work);

/* A request's partitions (0..count-1) as kapi_send_parts sees them. */
struct kapi_parts_ops {
    /* The shard that owns partition i, or -1 when it is not sent (not routed,
     * or has an error already). */
    int (*owner)(struct rv_kreq *req, uint32_t i);
    /* A work with room for part_count partitions (kapi_alloc); NULL: no memory. */
    struct kapi_work *(*work_new)(struct rv_kreq *req, uint32_t part_count);
    /* Put partition i into work. work NULL: it cannot be sent (no memory), so
     * it fails with KERR_UNKNOWN_SERVER_ERROR unless it has an error already. */
    void (*place)(struct rv_kreq *req, uint32_t i, struct kapi_work *work);
    rv_task_fn *run; /* on the owner shard, with the work */
};

/* Send every partition of req that has an owner to it, grouped: one work (one
 * message) per owner shard, never one per partition. on_done(req) runs once
 * every work came back (at once when none was sent). Running out of memory
 * fails partitions (ops->place with NULL), never the request. Origin shard. */
void kapi_send_parts(struct rv_kreq *req, uint32_t count, const struct kapi_parts_ops *ops,
                     void (*on_done)(struct rv_kreq *req));

/* ---- helpers ----------------------------------------------------------------------------------- */

/* The broker's own topic (committed offsets and groups: net/kgroup*.c). */
#define KAPI_OFFSETS_TOPIC "__consumer_offsets"

static inline bool kapi_is_internal(const char *name)
{
    return strcmp(name, KAPI_OFFSETS_TOPIC) == 0;
}

/* The Kafka error code for a storage error (-errno). */
int16_t kapi_storage_error(int err);
/* A wire string as a C string into buf (false: too long or holds NUL). */
bool kapi_cstr(struct rv_kp_str s, char *buf, size_t cap);
/* The shard the node the client addressed stands for, or -1 when the request
 * speaks for every shard (one broker advertised, or the node is unknown). */
int kapi_node_shard(const struct rv_kreq *req);
/* The node id that leads partitions owned by `shard` (shard-aware or not). */
int32_t kapi_leader(const struct rv_kapi_shard *ks, uint32_t shard);
/* A topic's id as Kafka sees it (v13+ fetch, v10+ metadata) and back. */
struct rv_kp_uuid kapi_topic_uuid(uint32_t id, const char *name);
/* Resolve a topic uuid: copies the name (RV_TOPIC_NAME_MAX + 1). -ENOENT. */
int kapi_topic_by_uuid(const struct rv_kapi_shard *ks, const struct rv_kp_uuid *u, char *name,
                       struct rv_store_topic_info *info);
/* The configuration a topic gets from the broker's defaults (log.retention.ms,
 * num.partitions...): what a key not set for the topic reads as. */
void kapi_topic_defaults(const struct rv_kapi_broker *b, struct rv_topic_config *tc);
/* Kafka's rule: topic names that differ only by '.' against '_' collide (their
 * metric names would be the same). Copies the existing one into other
 * (RV_TOPIC_NAME_MAX + 1) and returns true when `name` collides. Blocking
 * (lists the catalog): helper threads. */
bool kapi_topic_collides(rv_store_t *st, const char *name, char *other);
/* Create a topic (blocking: helper threads only) with the broker's defaults. */
int kapi_create_topic_blocking(const struct rv_kapi_broker *b, const char *name,
                               int32_t partitions);

/* ---- handlers (net/kapi_data.c, net/kapi_admin.c) ---------------------------------------------- */

void kapi_metadata(struct rv_kreq *req);
void kapi_produce(struct rv_kreq *req);
void kapi_fetch(struct rv_kreq *req);
void kapi_list_offsets(struct rv_kreq *req);
void kapi_offset_for_leader_epoch(struct rv_kreq *req);
void kapi_describe_cluster(struct rv_kreq *req);
void kapi_create_topics(struct rv_kreq *req);
void kapi_delete_topics(struct rv_kreq *req);
void kapi_create_partitions(struct rv_kreq *req);
void kapi_describe_configs(struct rv_kreq *req);
void kapi_alter_configs(struct rv_kreq *req);
void kapi_incremental_alter_configs(struct rv_kreq *req);
void kapi_delete_records(struct rv_kreq *req);
void kapi_describe_log_dirs(struct rv_kreq *req);
/* Idempotent producers (net/kapi_producer.c). */
void kapi_init_producer_id(struct rv_kreq *req);

/* Consumer groups (net/kgroup_api.c): the APIs, and each shard's coordinator,
 * opened with the shard, stopped (every parked join and sync answered, on
 * every shard) when the broker stops, closed with it. */
void kapi_find_coordinator(struct rv_kreq *req);
void kapi_join_group(struct rv_kreq *req);
void kapi_sync_group(struct rv_kreq *req);
void kapi_heartbeat(struct rv_kreq *req);
void kapi_leave_group(struct rv_kreq *req);
void kapi_offset_commit(struct rv_kreq *req);
void kapi_offset_fetch(struct rv_kreq *req);
void kapi_offset_delete(struct rv_kreq *req);
void kapi_list_groups(struct rv_kreq *req);
void kapi_describe_groups(struct rv_kreq *req);
void kapi_delete_groups(struct rv_kreq *req);
void kgroup_shard_open(struct rv_kapi_shard *ks);
void kgroup_shard_stop(struct rv_kapi_shard *ks);
void kgroup_shard_close(struct rv_kapi_shard *ks);

/* Long-poll fetches (net/kapi_data.c). */
void kapi_fetch_on_append(void *ctx, uint64_t key);
void kapi_fetch_wake_all(struct rv_kapi_shard *ks);

#endif /* RV_NET_KAPI_IMPL_H */
