/*
 * net/kgroup_impl.h - what the group APIs (net/kgroup_api.c) and the
 * coordinator shards (net/kgroup_coord.c) share: the coordinator's state, the
 * appends to __consumer_offsets, routing a group to its coordinator.
 *
 * Threading: a struct kg_shard, its groups and its appends belong to one
 * shard (kg_shard_self); routing runs on any shard.
 */
#ifndef RV_NET_KGROUP_IMPL_H
#define RV_NET_KGROUP_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "net/kapi_impl.h"
#include "net/kgroup.h"

#define KG_TOPIC           "__consumer_offsets"
#define KG_TOPIC_LEN       (sizeof(KG_TOPIC) - 1)
#define KG_BATCH_BYTES_MAX (256u << 10) /* records of one append */

/* ---- the coordinator shard ---------------------------------------------------------------- */

enum kg_part_state {
    KG_PART_NONE, /* not loaded: the first request starts loading it */
    KG_PART_LOADING,
    KG_PART_LOADED,
};

/* One shard's coordinator: the groups of the partitions it owns. */
struct kg_shard {
    rv_store_t *st;
    rv_runtime_t *rt;
    uint32_t id;
    struct kgroup_table groups;
    struct kgroup_env env;
    uint8_t *parts; /* [part_count]: enum kg_part_state of each partition of the topic */
    uint32_t part_count;
    uint32_t inflight; /* appends and loads in flight: they hold the shard */
    bool is_stopping;  /* parks nothing more; answers NOT_COORDINATOR */
    bool is_closed;    /* freed once inflight drops to 0 */
    bool is_creating;  /* this shard is creating the topic */
    /* Offset expiry (offsets.retention.minutes): a pass every check_ms. */
    int64_t retention_ms;
    int64_t check_ms;
    bool has_expire_timer;
    rv_timer_id expire_timer;
};

/* A record to append (key and value malloc'd). */
struct kg_rec {
    uint8_t *key;
    uint32_t key_len;
    uint8_t *value; /* NULL: a tombstone */
    uint32_t value_len;
};

struct kg_append;
typedef void kg_append_fn(struct kg_append *a, int err);

/* An append in flight (it holds its shard). */
struct kg_append {
    struct kg_shard *gs;
    uint64_t key; /* the partition's */
    uint8_t *batch;
    uint32_t len;
    int64_t give_up_ms;
    kg_append_fn *done;
    void *arg;
    int err;        /* a batch that could not be built */
    uint32_t first; /* the caller's: which of its records */
    uint32_t count;
    /* a group store */
    struct kgroup *g;
    enum kgroup_store_kind kind;
    int32_t generation;
    char *member_id;
};

/* Where a group lives: its partition of __consumer_offsets, and the shard
 * that owns that partition (its coordinator). */
struct kg_route {
    int32_t partition;
    uint64_t key;
    uint32_t owner;
};

/* Monotonic milliseconds (the state machine's clock). */
int64_t kg_now_ms(void);
/* This shard's coordinator (NULL: none, or closed). */
struct kg_shard *kg_shard_self(void);
/*
 * On the coordinator: this shard's state if it can serve partition p now;
 * otherwise NULL and *err says why (NOT_COORDINATOR when stopping,
 * COORDINATOR_LOAD_IN_PROGRESS while loading: the first request starts it).
 */
struct kg_shard *kg_serve(int32_t p, uint64_t key, int16_t *err);

/* Groups: arm the timer for the next deadline; an operation in flight lets go;
 * take a deleted group out (freed once nothing holds it); drop a group a
 * request created and left empty. */
void kg_schedule(struct kg_shard *gs, struct kgroup *g);
void kg_group_put(struct kgroup *g);
void kg_group_remove(struct kg_shard *gs, struct kgroup *g);
void kg_group_maybe_drop(struct kg_shard *gs, struct kgroup *g);

/* ---- appends ------------------------------------------------------------------------------ */

/* A new append to this shard's partition `key`; done(a, 0 or -errno) runs once
 * kg_append_start was called. NULL: no memory. */
struct kg_append *kg_append_new(struct kg_shard *gs, uint64_t key, kg_append_fn *done, void *arg);
/* Append recs[0..count) as one batch (the records stay the caller's), acks=all.
 * done runs from a later task, never inside this call (unless the shard has
 * no memory for the task); the caller does not touch a afterwards. */
void kg_append_start(struct kg_append *a, const struct kg_rec *recs, uint32_t count);
/* Finish a (never started) append with err, from a later task. */
void kg_append_abort(struct kg_append *a, int err);
/* The Kafka code for an append that failed. */
int16_t kg_append_error(int err);
void kg_recs_free(struct kg_rec *recs, uint32_t count);

/* ---- the origin ---------------------------------------------------------------------------- */

/* Where group `id` lives: NONE, or COORDINATOR_NOT_AVAILABLE (no store, or
 * the topic does not exist yet: its creation is started). */
int16_t kg_route(struct rv_kreq *req, const char *id, struct kg_route *out);
/* Create the topic on a helper thread; then every shard loads its partitions
 * and then(req) runs when is_waiting (req waits for it). False when nothing
 * was started (not waiting and a creation is under way already). */
bool kg_create(struct rv_kreq *req, bool is_waiting, void (*then)(struct rv_kreq *req));

#endif /* RV_NET_KGROUP_IMPL_H */
