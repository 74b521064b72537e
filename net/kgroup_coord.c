/*
 * net/kgroup_coord.c - the coordinator shards of consumer groups: each shard's
 * groups (the state machine of net/kgroup.c), their timers, the internal
 * compacted topic __consumer_offsets (created on first use, one partition per
 * shard), appending to it and loading it back at start.
 *
 * A group belongs to partition abs(hash(id)) % partitions of the topic, and
 * the shard that owns that partition coordinates it: only that shard touches
 * the group. Committed offsets and group metadata are records of that
 * partition in Kafka's formats (net/kgroup.h), appended with acks=all. At
 * start each shard reads its partitions from their log start (the last value
 * of a key wins, tombstones delete) and answers COORDINATOR_LOAD_IN_PROGRESS
 * until then.
 *
 * Threading: struct kg_shard and its groups belong to their shard, found
 * through the per-thread kg_self. A stopping broker has every shard answer
 * its parked joins and syncs (NOT_COORDINATOR), so no request of any shard
 * waits on another; a shard's state is freed once its appends and loads in
 * flight are done.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/trace.h"
#include "net/kgroup_impl.h"
#include "storage/batch.h"
#include "storage/codec.h"
#include "storage/topic.h"

#define KG_LOAD_FETCH_BYTES (1u << 20) /* one read while loading */
#define KG_RETRY_US         1000       /* storage backpressure: try again after */
#define KG_APPEND_WAIT_MS   30000      /* give up an append retried this long */
#define KG_SEGMENT_BYTES    (100ll << 20)

/* ---- the coordinator shard ------------------------------------------------------------------- */

static _Thread_local struct kg_shard *kg_self;

struct kg_shard *kg_shard_self(void)
{
    return kg_self;
}

int64_t kg_now_ms(void)
{
    return (int64_t)(rv_clock_now_ns() / 1000000u);
}

static void kg_shard_put(struct kg_shard *gs)
{
    RV_ASSERT(gs->inflight > 0);
    if (--gs->inflight > 0 || !gs->is_closed)
        return;
    kgroup_table_fini(&gs->groups);
    free(gs->parts);
    free(gs);
}

/* A group is held by an operation in flight. */
void kg_group_put(struct kgroup *g)
{
    RV_ASSERT(g->refs > 0);
    if (--g->refs == 0 && g->is_removed)
        kgroup_free(g);
}

static void kg_timer_fired(void *arg);

/* Arm the group's timer for its next deadline. */
void kg_schedule(struct kg_shard *gs, struct kgroup *g)
{
    int64_t at = gs->is_closed || g->is_removed ? INT64_MAX : kgroup_next_deadline(g);
    if (g->has_timer && g->timer_at_ms == at)
        return;
    if (g->has_timer) {
        (void)rv_timer_cancel(g->timer); /* -ENOENT: it is the one running */
        g->has_timer = false;
    }
    if (at == INT64_MAX)
        return;
    int64_t now = kg_now_ms();
    uint64_t delay_us = at > now ? (uint64_t)(at - now) * 1000u : 0;
    if (rv_timer_add(delay_us + 1, kg_timer_fired, g, &g->timer) == 0) {
        g->has_timer = true;
        g->timer_at_ms = at;
    }
}

static void kg_timer_fired(void *arg)
{
    struct kgroup *g = arg;
    struct kg_shard *gs = kg_self;
    g->has_timer = false;
    if (gs == NULL || g->is_removed)
        return;
    kgroup_tick(&gs->env, g, kg_now_ms());
    kg_schedule(gs, g);
    kg_group_maybe_drop(gs, g); /* member ids handed out and never used */
}

/* Take a group out of the table (deleted); freed once nothing holds it. */
void kg_group_remove(struct kg_shard *gs, struct kgroup *g)
{
    if (g->has_timer) {
        (void)rv_timer_cancel(g->timer);
        g->has_timer = false;
    }
    kgroup_abort_waiters(g, KGERR_COORDINATOR_NOT_AVAILABLE);
    kgroup_unlink(&gs->groups, g);
    g->is_removed = true;
    if (g->refs == 0)
        kgroup_free(g);
}

/* A group created for a request that left nothing behind goes again. */
void kg_group_maybe_drop(struct kg_shard *gs, struct kgroup *g)
{
    if (kgroup_is_idle(g) && g->refs == 0 && !g->is_removed && g->generation == 0)
        kg_group_remove(gs, g);
}

/* ---- appends to __consumer_offsets ----------------------------------------------------------- */

void kg_recs_free(struct kg_rec *recs, uint32_t count)
{
    for (uint32_t i = 0; i < count && recs != NULL; i++) {
        free(recs[i].key);
        free(recs[i].value);
    }
    free(recs);
}

/* One uncompressed batch of recs (malloc'd). -ENOMEM, -EMSGSIZE. */
static int kg_batch_build(const struct kg_rec *recs, uint32_t count, uint8_t **out,
                          uint32_t *out_len)
{
    size_t cap = RV_BATCH_HEADER_BYTES;
    for (uint32_t i = 0; i < count; i++)
        cap += recs[i].key_len + recs[i].value_len + RV_BATCH_RECORD_OVERHEAD_MAX;
    if (cap > RV_TOPIC_BATCH_MAX)
        return -EMSGSIZE;
    uint8_t *buf = malloc(cap);
    if (buf == NULL)
        return -ENOMEM;
    struct rv_batch_params params = {
        .base_offset = 0,
        .base_timestamp = RV_BATCH_NO_TIMESTAMP,
        .leader_epoch = 0,
        .producer_id = RV_BATCH_NO_PRODUCER_ID,
        .producer_epoch = -1,
        .base_sequence = RV_BATCH_NO_SEQUENCE,
    };
    struct rv_batch_builder b;
    int rc = rv_batch_builder_init(&b, buf, cap, &params);
    int64_t now = rv_clock_wall_ms();
    for (uint32_t i = 0; i < count && rc == 0; i++)
        rc = rv_batch_builder_add(&b, now, recs[i].key, (int32_t)recs[i].key_len, recs[i].value,
                                  recs[i].value != NULL ? (int32_t)recs[i].value_len : -1, NULL, 0);
    size_t len = 0;
    if (rc == 0)
        rc = rv_batch_builder_finish(&b, &len);
    if (rc < 0) {
        free(buf);
        return rc == -ENOSPC ? -EMSGSIZE : rc;
    }
    *out = buf;
    *out_len = (uint32_t)len;
    return 0;
}

static void kg_append_finish(struct kg_append *a, int err)
{
    struct kg_shard *gs = a->gs;
    a->done(a, err);
    free(a->batch);
    free(a->member_id);
    free(a);
    kg_shard_put(gs);
}

static void kg_append_done(void *arg, int64_t base_or_err)
{
    struct kg_append *a = arg;
    kg_append_finish(a, base_or_err < 0 ? (int)base_or_err : 0);
}

static void kg_append_try(void *arg)
{
    struct kg_append *a = arg;
    rv_store_t *st = a->gs->st;
    rv_plog_t *log = NULL;
    int rc = rv_store_log(st, a->key, kg_append_try, a, &log);
    if (rc == 1)
        return; /* loading: kg_append_try runs again */
    if (rc == 0) {
        rv_buf_t *buf = NULL;
        rc = rv_buf_alloc(rv_store_pool(st), a->len, &buf);
        if (rc == 0) {
            uint8_t *bytes = rv_buf_data(buf);
            memcpy(bytes, a->batch, a->len);
            rv_buf_set_len(buf, a->len);
            rc = rv_plog_append_internal(log, buf, bytes, a->len, RV_ACKS_ALL, kg_append_done, a);
            rv_buf_put(buf); /* the log took its own reference */
        }
    }
    if ((rc == -ENOBUFS || rc == -EAGAIN) && kg_now_ms() < a->give_up_ms &&
        rv_timer_add(KG_RETRY_US, kg_append_try, a, NULL) == 0)
        return;
    if (rc < 0)
        kg_append_finish(a, rc);
}

static void kg_append_fail(void *arg)
{
    struct kg_append *a = arg;
    kg_append_finish(a, a->err);
}

/* A new append to the partition `key` of this shard; done(a, 0 or -errno)
 * runs once kg_append_start was called. NULL: no memory. */
struct kg_append *kg_append_new(struct kg_shard *gs, uint64_t key, kg_append_fn *done, void *arg)
{
    struct kg_append *a = calloc(1, sizeof(*a));
    if (a != NULL)
        *a = (struct kg_append){.gs = gs,
                                .key = key,
                                .give_up_ms = kg_now_ms() + KG_APPEND_WAIT_MS,
                                .done = done,
                                .arg = arg};
    return a;
}

/* Append recs[0..count) as one batch (the records stay the caller's). done
 * runs from a later task, never inside this call (unless the shard has no
 * memory for the task); the caller does not touch a afterwards. */
void kg_append_abort(struct kg_append *a, int err)
{
    RV_ASSERT(err < 0);
    a->gs->inflight++;
    a->err = err;
    if (rv_runtime_submit(a->gs->rt, a->gs->id, kg_append_fail, a) < 0)
        kg_append_fail(a);
}

void kg_append_start(struct kg_append *a, const struct kg_rec *recs, uint32_t count)
{
    struct kg_shard *gs = a->gs;
    gs->inflight++;
    a->err = kg_batch_build(recs, count, &a->batch, &a->len);
    rv_task_fn *fn = a->err < 0 ? kg_append_fail : kg_append_try;
    if (rv_runtime_submit(gs->rt, gs->id, fn, a) < 0)
        fn(a);
}

/* The Kafka code for an append that failed (Kafka's mapping for coordinators). */
int16_t kg_append_error(int err)
{
    switch (err) {
    case 0: return KGERR_NONE;
    case -EMSGSIZE: return KGERR_INVALID_COMMIT_OFFSET_SIZE;
    case -EIO:
    case -ENOSPC:
    case -EROFS:
    case -EDQUOT: return KGERR_NOT_COORDINATOR;
    default: return KGERR_COORDINATOR_NOT_AVAILABLE;
    }
}

/* ---- group metadata (the state machine's store) ------------------------------------------- */

static void kg_store_done(struct kg_append *a, int err)
{
    struct kgroup *g = a->g;
    struct kg_shard *gs = a->gs;
    if (!gs->is_closed && !g->is_removed) {
        if (err < 0)
            rv_warn("group %s: storing its metadata: %s", g->id, rv_strerror(err));
        kgroup_stored(&gs->env, g, a->kind, a->generation, a->member_id, kg_append_error(err),
                      kg_now_ms());
        kg_schedule(gs, g);
    }
    kg_group_put(g);
}

/* The state machine's store: one GroupMetadata record, answered in kg_store_done. */
static void kg_store(struct kgroup_env *env, struct kgroup *g, enum kgroup_store_kind kind,
                     const char *member_id)
{
    struct kg_shard *gs = env->ctx;
    struct rv_part_ref ref = {0};
    int err = g->partition < 0
                  ? -ENOENT
                  : rv_store_lookup(gs->st, KG_TOPIC, KG_TOPIC_LEN, g->partition, &ref);
    struct kg_rec rec = {.key_len = (uint32_t)kgroup_group_key_size(g->id),
                         .value_len = (uint32_t)kgroup_group_value_size(g)};
    rec.key = malloc(rec.key_len);
    rec.value = malloc(rec.value_len);
    struct kg_append *a = kg_append_new(gs, ref.key, kg_store_done, NULL);
    char *mid = member_id != NULL ? strdup(member_id) : NULL;
    if (a == NULL) { /* nothing to answer from: the waiters' sessions end it */
        rv_warn("group %s: no memory to store its metadata", g->id);
        free(mid);
        free(rec.key);
        free(rec.value);
        return;
    }
    if (err == 0 && (rec.key == NULL || rec.value == NULL || (member_id != NULL && mid == NULL)))
        err = -ENOMEM;
    g->refs++;
    a->g = g;
    a->kind = kind;
    a->generation = g->generation;
    a->member_id = mid;
    if (err < 0) {
        rv_warn("group %s: cannot store its metadata: %s", g->id, rv_strerror(err));
        kg_append_abort(a, err); /* the state machine hears it from a task */
    } else {
        kgroup_group_key_encode(rec.key, g->id);
        kgroup_group_value_encode(rec.value, g, rv_clock_wall_ms());
        kg_append_start(a, &rec, 1);
    }
    free(rec.key);
    free(rec.value);
}

/* ---- loading a partition --------------------------------------------------------------------- */

struct kg_load {
    struct kg_shard *gs;
    int32_t partition;
    uint64_t key;
    int64_t next;     /* the next offset to read; -1 before the first read */
    int64_t end;      /* the log end when loading began */
    uint8_t *scratch; /* decompressed records */
    size_t scratch_cap;
    uint64_t records;
};

static void kg_load_step(void *arg);

static void kg_load_finish(struct kg_load *l, int err)
{
    struct kg_shard *gs = l->gs;
    if (!gs->is_closed && (uint32_t)l->partition < gs->part_count) {
        gs->parts[l->partition] = err < 0 ? KG_PART_NONE : KG_PART_LOADED;
        if (err < 0) {
            rv_warn("%s-%d: loading the groups: %s", KG_TOPIC, l->partition, rv_strerror(err));
        } else {
            int64_t now = kg_now_ms();
            uint32_t cursor = 0, n = 0;
            struct kgroup *chain = NULL, *g;
            while ((g = kgroup_next(&gs->groups, &cursor, &chain)) != NULL) {
                if (g->partition != l->partition)
                    continue;
                kgroup_loaded(g, now);
                kg_schedule(gs, g);
                n++;
            }
            rv_info("%s-%d: %u groups loaded from %llu records", KG_TOPIC, l->partition, n,
                    (unsigned long long)l->records);
        }
    }
    free(l->scratch);
    free(l);
    kg_shard_put(gs);
}

/* Apply the records of one batch at or after l->next. */
static int kg_load_batch(struct kg_load *l, struct rv_batch_view *v)
{
    if (rv_batch_is_control(v))
        return 0;
    const uint8_t *records = v->records;
    size_t len = v->records_bytes;
    if (rv_batch_codec(v) != RV_CODEC_NONE) {
        int rc = rv_codec_decompress_grow(rv_batch_codec(v), v->records, v->records_bytes,
                                          &l->scratch, &l->scratch_cap, RV_PLOG_SCRATCH_MAX, &len);
        if (rc < 0)
            return rc;
        records = l->scratch;
    }
    struct rv_batch_record_iter it;
    struct rv_batch_record rec;
    rv_batch_record_iter_init(&it, v, records, len);
    int rc;
    while ((rc = rv_batch_record_iter_next(&it, &rec)) == 1) {
        if (rec.offset < l->next)
            continue;
        int arc = kgroup_table_apply(&l->gs->groups, l->partition, rec.key, rec.key_len, rec.value,
                                     rec.value_len);
        if (arc == -ENOMEM)
            return arc;
        l->records++;
    }
    return rc;
}

static void kg_load_fetched(void *arg, struct rv_plog_fetch *res)
{
    struct kg_load *l = arg;
    int rc = res->err;
    int64_t before = l->next;
    if (rc == -ERANGE && l->next < res->log_start) {
        l->next = res->log_start; /* retention moved the start meanwhile */
        rc = 0;
    }
    for (uint32_t i = 0; i < res->slice_count && rc == 0; i++) {
        struct rv_batch_iter it;
        struct rv_batch_view v;
        rv_batch_iter_init(&it, res->slices[i].bytes, res->slices[i].len, SIZE_MAX);
        int more;
        while (rc == 0 && (more = rv_batch_iter_next(&it, &v)) == 1) {
            if (rv_batch_last_offset(&v) < l->next)
                continue;
            rc = kg_load_batch(l, &v);
            if (rc == -EBADMSG || rc == -EINVAL || rc == -ENOTSUP) {
                rv_warn("%s-%d: a batch at %lld does not read (%s): skipped", KG_TOPIC,
                        l->partition, (long long)v.base_offset, rv_strerror(rc));
                rc = 0;
            }
            l->next = rv_batch_last_offset(&v) + 1;
        }
        if (rc == 0 && more < 0)
            rc = more;
    }
    rv_plog_fetch_release(res);
    if (rc == 0 && l->next == before && l->next < l->end)
        rc = -EBADMSG; /* no progress: the log does not read */
    if (rc < 0 || l->next >= l->end) {
        kg_load_finish(l, rc);
        return;
    }
    /* The next read from a task: a fetch may answer inside the call. */
    if (rv_runtime_submit(l->gs->rt, l->gs->id, kg_load_step, l) < 0)
        kg_load_finish(l, -ENOMEM);
}

static void kg_load_step(void *arg)
{
    struct kg_load *l = arg;
    if (l->gs->is_closed) {
        kg_load_finish(l, -ECANCELED);
        return;
    }
    rv_plog_t *log = NULL;
    int rc = rv_store_log(l->gs->st, l->key, kg_load_step, l, &log);
    if (rc == 1)
        return;
    if (rc < 0) {
        kg_load_finish(l, rc);
        return;
    }
    if (l->next < 0) {
        l->next = rv_plog_log_start(log);
        l->end = rv_plog_high_watermark(log);
    }
    if (l->next >= l->end) {
        kg_load_finish(l, 0);
        return;
    }
    rv_plog_fetch(log, l->next, KG_LOAD_FETCH_BYTES, kg_load_fetched, l);
}

/* The state of partition p here, growing the table. */
static uint8_t *kg_part(struct kg_shard *gs, int32_t p)
{
    if (p < 0)
        return NULL;
    if ((uint32_t)p >= gs->part_count) {
        uint32_t n = (uint32_t)p + 1;
        uint8_t *parts = realloc(gs->parts, n);
        if (parts == NULL)
            return NULL;
        memset(parts + gs->part_count, KG_PART_NONE, n - gs->part_count);
        gs->parts = parts;
        gs->part_count = n;
    }
    return &gs->parts[p];
}

static void kg_load_start(struct kg_shard *gs, int32_t p, uint64_t key)
{
    uint8_t *state = kg_part(gs, p);
    if (state == NULL || *state != KG_PART_NONE)
        return;
    struct kg_load *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return;
    *l = (struct kg_load){.gs = gs, .partition = p, .key = key, .next = -1, .end = -1};
    *state = KG_PART_LOADING;
    gs->inflight++;
    kg_load_step(l);
}

/* Start loading every partition of the topic this shard owns. */
static void kg_load_owned(struct kg_shard *gs)
{
    struct rv_store_topic_info info;
    if (gs->is_closed || rv_store_topic_info(gs->st, KG_TOPIC, KG_TOPIC_LEN, &info) < 0)
        return;
    for (int32_t p = 0; p < info.partitions; p++) {
        struct rv_part_ref ref;
        if (rv_store_lookup(gs->st, KG_TOPIC, KG_TOPIC_LEN, p, &ref) == 0 && ref.owner == gs->id)
            kg_load_start(gs, p, ref.key);
    }
}

static void kg_load_owned_task(void *arg)
{
    (void)arg;
    if (kg_self != NULL)
        kg_load_owned(kg_self);
}

struct kg_shard *kg_serve(int32_t p, uint64_t key, int16_t *err)
{
    struct kg_shard *gs = kg_self;
    if (gs == NULL || gs->is_stopping) {
        *err = KGERR_NOT_COORDINATOR;
        return NULL;
    }
    uint8_t *state = kg_part(gs, p);
    if (state == NULL) {
        *err = KGERR_COORDINATOR_NOT_AVAILABLE;
        return NULL;
    }
    if (*state == KG_PART_LOADED)
        return gs;
    kg_load_start(gs, p, key);
    *err = *state == KG_PART_LOADED ? KGERR_NONE : KGERR_COORDINATOR_LOAD_IN_PROGRESS;
    return *state == KG_PART_LOADED ? gs : NULL;
}

/* ---- creating the topic ------------------------------------------------------------------------ */

struct kg_create {
    const struct rv_kapi_broker *b;
    struct rv_kreq *req; /* a FindCoordinator waiting for it, or NULL */
    void (*then)(struct rv_kreq *req);
    int rc;
};

/* Helper thread. */
static void kg_create_run(void *arg)
{
    struct kg_create *c = arg;
    const struct rv_config *cfg = c->b->cfg;
    struct rv_topic_config tc;
    rv_topic_config_init(&tc);
    tc.partitions = (int32_t)c->b->shard_count;
    tc.retention_ms = -1;
    tc.retention_bytes = -1;
    tc.segment_bytes =
        KG_SEGMENT_BYTES < cfg->log_segment_bytes ? KG_SEGMENT_BYTES : cfg->log_segment_bytes;
    tc.segment_ms = cfg->log_roll_ms;
    snprintf(tc.cleanup_policy, sizeof(tc.cleanup_policy), "compact");
    snprintf(tc.compression, sizeof(tc.compression), "producer");
    c->rc = rv_topic_create(c->b->st, KG_TOPIC, &tc);
    if (c->rc == -EEXIST)
        c->rc = 0;
    else if (c->rc < 0)
        rv_warn("creating %s: %s", KG_TOPIC, rv_err_msg());
    else
        rv_info("created %s with %d partitions", KG_TOPIC, tc.partitions);
}

static void kg_create_done(void *arg)
{
    struct kg_create *c = arg;
    if (kg_self != NULL)
        kg_self->is_creating = false;
    if (c->rc == 0) { /* every shard loads its (empty) partitions now */
        for (uint32_t s = 0; s < c->b->shard_count; s++) {
            if (s == (uint32_t)rv_shard_self())
                kg_load_owned_task(NULL);
            else
                (void)rv_runtime_submit(c->b->rt, s, kg_load_owned_task, NULL);
        }
    }
    if (c->req != NULL)
        c->then(c->req);
    free(c);
}

/* Create the topic on a helper thread, then run then(req) (req may be NULL). */
bool kg_create(struct rv_kreq *req, bool is_waiting, void (*then)(struct rv_kreq *req))
{
    struct kg_shard *gs = kg_self;
    if (!is_waiting && (gs == NULL || gs->is_creating))
        return false;
    struct kg_create *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return false;
    *c = (struct kg_create){.b = req->ks->b, .req = is_waiting ? req : NULL, .then = then};
    if (rv_offload(kg_create_run, c, kg_create_done) < 0) {
        free(c);
        return false;
    }
    if (gs != NULL)
        gs->is_creating = true;
    return true;
}

/* ---- routing (any shard) ------------------------------------------------------------------------ */

/* Origin: where group `id` lives. NONE, or COORDINATOR_NOT_AVAILABLE (the
 * topic is being created). */
int16_t kg_route(struct rv_kreq *req, const char *id, struct kg_route *out)
{
    rv_store_t *st = req->ks->b->st;
    struct rv_store_topic_info info;
    if (st == NULL)
        return KGERR_COORDINATOR_NOT_AVAILABLE;
    if (rv_store_topic_info(st, KG_TOPIC, KG_TOPIC_LEN, &info) < 0) {
        (void)kg_create(req, false, NULL); /* the client asks again */
        return KGERR_COORDINATOR_NOT_AVAILABLE;
    }
    int32_t p = kgroup_partition_for(id, strlen(id), info.partitions);
    struct rv_part_ref ref;
    if (rv_store_lookup(st, KG_TOPIC, KG_TOPIC_LEN, p, &ref) < 0)
        return KGERR_COORDINATOR_NOT_AVAILABLE;
    *out = (struct kg_route){.partition = p, .key = ref.key, .owner = ref.owner};
    return KGERR_NONE;
}

/* ---- offset expiry ---------------------------------------------------------------------------------- */

#define KG_EXPIRE_BATCH 1000 /* offsets one append of a pass deletes, at most */

struct kg_expired {
    char *topic;
    int32_t partition;
    int64_t commit_ms; /* as it was: an offset committed again since stays */
};

struct kg_expiry {
    struct kgroup *g;
    struct kg_expired *items;
    uint32_t count;
    bool is_group; /* the group's metadata goes too: nothing is left of it */
};

static void kg_expiry_free(struct kg_expiry *x)
{
    for (uint32_t i = 0; x != NULL && i < x->count; i++)
        free(x->items[i].topic);
    if (x != NULL)
        free(x->items);
    free(x);
}

static void kg_expire_appended(struct kg_append *a, int err)
{
    struct kg_expiry *x = a->arg;
    struct kgroup *g = x->g;
    struct kg_shard *gs = a->gs;
    if (err < 0) {
        rv_warn("group %s: deleting %u expired offsets: %s (tried again at the next check)", g->id,
                x->count, rv_strerror(err));
    } else if (!gs->is_closed && !g->is_removed) {
        uint32_t gone = 0;
        for (uint32_t i = 0; i < x->count; i++) {
            const struct kg_expired *e = &x->items[i];
            const struct kgroup_offset *o = kgroup_offset_find(g, e->topic, e->partition);
            if (o != NULL && o->commit_ms == e->commit_ms) {
                kgroup_offset_del(g, e->topic, e->partition);
                gone++;
            }
        }
        rv_info("group %s: %u committed offsets expired%s", g->id, gone,
                x->is_group && kgroup_is_idle(g) ? "; the group is gone" : "");
        if (x->is_group && kgroup_is_idle(g))
            kg_group_remove(gs, g);
    }
    kg_group_put(g);
    kg_expiry_free(x);
}

/* Tombstones for g's expired offsets (and for g when none would be left). */
static int kg_expire_group(struct kg_shard *gs, struct kgroup *g, int64_t now)
{
    uint32_t n = kgroup_offsets_expired(g, now, gs->retention_ms, g->empty_since_ms, NULL, 0);
    if (n == 0)
        return 0;
    uint32_t take = n < KG_EXPIRE_BATCH ? n : KG_EXPIRE_BATCH;
    struct rv_part_ref ref;
    int rc = rv_store_lookup(gs->st, KG_TOPIC, KG_TOPIC_LEN, g->partition, &ref);
    if (rc < 0)
        return rc;
    struct kgroup_offset **os = calloc(take, sizeof(*os));
    struct kg_expiry *x = calloc(1, sizeof(*x));
    struct kg_rec *recs = calloc(take + 1, sizeof(*recs));
    struct kg_append *a = NULL;
    uint32_t k = 0;
    bool is_oom = os == NULL || x == NULL || recs == NULL;
    if (!is_oom) {
        x->items = calloc(take, sizeof(*x->items));
        a = kg_append_new(gs, ref.key, kg_expire_appended, x);
        is_oom = x->items == NULL || a == NULL;
    }
    if (!is_oom) {
        (void)kgroup_offsets_expired(g, now, gs->retention_ms, g->empty_since_ms, os, take);
        x->g = g;
        x->is_group = n == take && n == g->offset_count && g->members == NULL &&
                      g->pending == NULL && g->state == KGROUP_EMPTY;
    }
    for (uint32_t i = 0; i < take && !is_oom; i++) {
        struct kg_expired *e = &x->items[x->count];
        e->topic = strdup(os[i]->topic);
        e->partition = os[i]->partition;
        e->commit_ms = os[i]->commit_ms;
        struct kg_rec *r = &recs[k];
        r->key_len = (uint32_t)kgroup_offset_key_size(g->id, os[i]->topic);
        r->key = malloc(r->key_len);
        is_oom = e->topic == NULL || r->key == NULL;
        if (e->topic != NULL)
            x->count++;
        if (r->key != NULL)
            k++;
        if (!is_oom)
            kgroup_offset_key_encode(r->key, g->id, os[i]->topic, os[i]->partition);
    }
    if (!is_oom && x->is_group) {
        struct kg_rec *r = &recs[k];
        r->key_len = (uint32_t)kgroup_group_key_size(g->id);
        r->key = malloc(r->key_len);
        is_oom = r->key == NULL;
        if (!is_oom) {
            kgroup_group_key_encode(r->key, g->id);
            k++;
        }
    }
    free(os);
    if (is_oom) {
        kg_recs_free(recs, k);
        kg_expiry_free(x);
        free(a);
        return -ENOMEM;
    }
    g->refs++;
    kg_append_start(a, recs, k);
    kg_recs_free(recs, k);
    return 0;
}

/* Every group of the shard: note when it became empty, expire what is due. */
static void kg_expire_pass(struct kg_shard *gs)
{
    int64_t now = rv_clock_wall_ms();
    uint32_t cursor = 0;
    struct kgroup *chain = NULL, *g;
    while ((g = kgroup_next(&gs->groups, &cursor, &chain)) != NULL) {
        if (g->state != KGROUP_EMPTY || g->members != NULL)
            g->empty_since_ms = 0; /* a stable group may still lose unsubscribed topics' */
        else if (g->empty_since_ms == 0)
            g->empty_since_ms = now;
        if (g->refs > 0 || g->offset_count == 0)
            continue; /* an operation holds it: the next pass */
        int rc = kg_expire_group(gs, g, now);
        if (rc < 0)
            rv_warn("group %s: cannot delete its expired offsets now: %s", g->id, rv_strerror(rc));
    }
}

static void kg_expire_timer(void *arg)
{
    struct kg_shard *gs = arg;
    gs->has_expire_timer = false;
    if (gs->is_stopping || gs->is_closed)
        return;
    kg_expire_pass(gs);
    uint64_t us = (uint64_t)gs->check_ms * 1000u;
    gs->has_expire_timer = rv_timer_add(us, kg_expire_timer, gs, &gs->expire_timer) == 0;
}

/* ---- the shard's life ------------------------------------------------------------------------------ */

void kgroup_shard_open(struct rv_kapi_shard *ks)
{
    const struct rv_kapi_broker *b = ks->b;
    if (b->st == NULL || kg_self != NULL)
        return;
    struct kg_shard *gs = calloc(1, sizeof(*gs));
    if (gs == NULL || kgroup_table_init(&gs->groups) < 0) {
        free(gs);
        rv_warn("shard %u: no memory for the group coordinator: it answers no group", ks->id);
        return;
    }
    gs->st = b->st;
    gs->rt = b->rt;
    gs->id = ks->id;
    gs->env = (struct kgroup_env){
        .initial_delay_ms = b->cfg->group_initial_rebalance_delay_ms,
        .session_min_ms = b->cfg->group_min_session_timeout_ms,
        .session_max_ms = b->cfg->group_max_session_timeout_ms,
        .rand_state = rv_clock_mono_ns() ^ ((uint64_t)ks->id + 1) * 0x9e3779b97f4a7c15ull,
        .store = kg_store,
        .ctx = gs,
    };
    const struct rv_config *cfg = b->cfg;
    gs->retention_ms = cfg->offsets_retention_ms > 0
                           ? cfg->offsets_retention_ms
                           : (int64_t)cfg->offsets_retention_minutes * 60000;
    gs->check_ms = cfg->offsets_retention_check_interval_ms;
    kg_self = gs;
    kg_load_owned(gs);
    gs->has_expire_timer =
        rv_timer_add((uint64_t)gs->check_ms * 1000u, kg_expire_timer, gs, &gs->expire_timer) == 0;
    if (!gs->has_expire_timer)
        rv_warn("shard %u: no timer for offset expiry: committed offsets do not expire", ks->id);
}

/* Answer every parked join and sync of this shard's groups; park nothing more. */
static void kg_stop_task(void *arg)
{
    (void)arg;
    struct kg_shard *gs = kg_self;
    if (gs == NULL || gs->is_stopping)
        return;
    gs->is_stopping = true;
    uint32_t cursor = 0;
    struct kgroup *chain = NULL, *g;
    while ((g = kgroup_next(&gs->groups, &cursor, &chain)) != NULL)
        kgroup_abort_waiters(g, KGERR_NOT_COORDINATOR);
}

void kgroup_shard_stop(struct rv_kapi_shard *ks)
{
    /* A request of any shard may wait on any coordinator: stop them all. */
    for (uint32_t s = 0; s < ks->b->shard_count; s++) {
        if (s == ks->id)
            kg_stop_task(NULL);
        else
            (void)rv_runtime_submit(ks->b->rt, s, kg_stop_task, NULL);
    }
}

void kgroup_shard_close(struct rv_kapi_shard *ks)
{
    (void)ks;
    struct kg_shard *gs = kg_self;
    if (gs == NULL)
        return;
    kg_stop_task(NULL);
    kg_self = NULL;
    if (gs->has_expire_timer) {
        (void)rv_timer_cancel(gs->expire_timer);
        gs->has_expire_timer = false;
    }
    uint32_t cursor = 0;
    struct kgroup *chain = NULL, *g;
    while ((g = kgroup_next(&gs->groups, &cursor, &chain)) != NULL) {
        if (g->has_timer) {
            (void)rv_timer_cancel(g->timer);
            g->has_timer = false;
        }
    }
    gs->is_closed = true;
    gs->inflight++;
    kg_shard_put(gs);
}
