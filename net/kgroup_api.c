/*
 * net/kgroup_api.c - the consumer group APIs: FindCoordinator, JoinGroup,
 * SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, OffsetDelete,
 * ListGroups, DescribeGroups, DeleteGroups.
 *
 * Each request is decoded on the connection's shard (the origin), routed by
 * group to its coordinator shard (net/kgroup_coord.c) and sent there
 * (kapi_send: one work per coordinator), which alone runs the group's state
 * machine; the answer comes back to the origin to be encoded:
 *
 *   origin: decode, route by group ----> coordinator: kgroup_* on its table,
 *   origin: encode, respond <----------- (a join waits for the rebalance, a
 *                                         commit for its append)
 *
 * So it works the same whether shards are advertised as brokers (clients
 * come to the coordinator) or not (the request is forwarded). What the
 * coordinator answers with is written into the origin's response structs;
 * the strings and bytes they point to are allocated on the coordinator
 * (struct kg_mem) and freed with the request on the origin.
 */
#include <errno.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"
#include "core/err.h"
#include "net/kgroup_impl.h"
#include "storage/batch.h"

#define KG_GROUP_OPS 328 /* DescribeGroups: READ, DELETE, DESCRIBE (1 << 3, 6, 8) */

/* ---- the origin's side: requests, works, routing ------------------------------------------------ */

/* Memory the coordinator allocates for an answer; the origin frees it. */
struct kg_mem {
    struct kg_mem *next;
    max_align_t data[];
};

struct kg_work {
    struct kapi_work w; /* first */
    int16_t version;
    int32_t partition; /* single-group APIs: the group's partition and its key */
    uint64_t key;
    const void *msg; /* the request's message (read-only on the coordinator) */
    void *resp;      /* the response, filled on the coordinator */
    uint32_t *items; /* batched APIs: the request's groups for this coordinator */
    uint32_t item_count;
    struct kg_mem *mem;
    bool is_oom; /* an allocation for the answer failed */
    struct kgroup_waiter waiter;
    void *state; /* the API's own */
    uint32_t appends;
};

/* The request's works (their memory is freed with it). */
struct kg_req {
    struct kg_work **works; /* [shard_count] */
    uint32_t work_count;
    void *api; /* the API's own */
};

static void kg_req_free(struct rv_kreq *req)
{
    struct kg_req *kr = req->state;
    for (uint32_t i = 0; i < kr->work_count; i++) {
        struct kg_work *w = kr->works[i];
        for (struct kg_mem *m = w != NULL ? w->mem : NULL, *next; m != NULL; m = next) {
            next = m->next;
            free(m);
        }
    }
}

static struct kg_req *kg_req_new(struct rv_kreq *req)
{
    struct kg_req *kr = kapi_alloc(req, sizeof(*kr));
    struct kg_work **works = kapi_alloc(req, req->ks->b->shard_count * sizeof(*works));
    if (kr == NULL || works == NULL)
        return NULL;
    kr->works = works;
    kr->work_count = req->ks->b->shard_count;
    req->state = kr;
    req->state_free = kg_req_free;
    return kr;
}

/* The work for coordinator `shard` (one per shard). */
static struct kg_work *kg_work_for(struct rv_kreq *req, uint32_t shard)
{
    struct kg_req *kr = req->state;
    RV_ASSERT(shard < kr->work_count);
    if (kr->works[shard] == NULL) {
        struct kg_work *w = kapi_alloc(req, sizeof(*w));
        if (w == NULL)
            return NULL;
        w->version = req->version;
        w->msg = req->msg;
        w->partition = -1;
        kr->works[shard] = w;
    }
    return kr->works[shard];
}

/* Coordinator: memory for the answer (zeroed); NULL sets is_oom. */
static void *kg_alloc(struct kg_work *w, size_t bytes)
{
    struct kg_mem *m = calloc(1, sizeof(*m) + bytes);
    if (m == NULL) {
        w->is_oom = true;
        return NULL;
    }
    m->next = w->mem;
    w->mem = m;
    return m->data;
}

/* Coordinator: a copy of s for the answer (NULL: a null string). */
static struct rv_kp_str kg_str(struct kg_work *w, const char *s)
{
    if (s == NULL)
        return (struct rv_kp_str){.ptr = NULL, .len = -1};
    size_t n = strlen(s);
    char *p = kg_alloc(w, n + 1);
    if (p == NULL)
        return (struct rv_kp_str){.ptr = "", .len = 0};
    memcpy(p, s, n);
    return (struct rv_kp_str){.ptr = p, .len = (int32_t)n};
}

static struct rv_kp_bytes kg_bytes(struct kg_work *w, const uint8_t *b, int32_t len)
{
    if (len <= 0)
        return (struct rv_kp_bytes){.ptr = (const uint8_t *)"", .len = 0};
    uint8_t *p = kg_alloc(w, (size_t)len);
    if (p == NULL)
        return (struct rv_kp_bytes){.ptr = (const uint8_t *)"", .len = 0};
    memcpy(p, b, (size_t)len);
    return (struct rv_kp_bytes){.ptr = p, .len = len};
}

/* Origin: a wire string as a C string in the request's memory. NULL for a null
 * string; *is_bad for one holding a NUL (or no memory). */
static const char *kg_cstr(struct rv_kreq *req, struct rv_kp_str s, bool *is_bad)
{
    if (s.len < 0)
        return NULL;
    char *p = kapi_alloc(req, (size_t)s.len + 1);
    if (p == NULL || !kapi_cstr(s, p, (size_t)s.len + 1)) {
        *is_bad = true;
        return "";
    }
    return p;
}

static struct rv_kp_str kg_wire(const char *s)
{
    return s != NULL ? (struct rv_kp_str){.ptr = s, .len = (int32_t)strlen(s)}
                     : (struct rv_kp_str){.ptr = NULL, .len = -1};
}

/* A non-null string for versions that cannot carry a null. */
static struct rv_kp_str kg_wire_nn(const char *s)
{
    return kg_wire(s != NULL ? s : "");
}

/* Origin: send the single group's work to its coordinator; back(req) encodes. */
static void kg_send_one(struct rv_kreq *req, struct kg_work *w, const struct kg_route *r,
                        rv_task_fn *run, void (*back)(struct rv_kreq *req))
{
    w->partition = r->partition;
    w->key = r->key;
    kapi_works_begin(req, back);
    kapi_send(req, &w->w, r->owner, run);
    kapi_works_end(req);
}

/* Origin: set up a single-group request: its state, its work, its route. */
static struct kg_work *kg_one(struct rv_kreq *req, const char *id, struct kg_route *r, int16_t *err)
{
    if (kg_req_new(req) == NULL) {
        kapi_fail(req, "no memory for a %s request", req->api->name);
        return NULL;
    }
    *err = kg_route(req, id, r);
    struct kg_work *w = kg_work_for(req, *err == KGERR_NONE ? r->owner : 0);
    if (w == NULL)
        kapi_fail(req, "no memory for a %s request", req->api->name);
    return w;
}

static struct kg_work *kg_of_waiter(struct kgroup_waiter *wt)
{
    return (struct kg_work *)(void *)((char *)wt - offsetof(struct kg_work, waiter));
}

/* Origin: every work is back; fail for memory the coordinator did not get. */
static bool kg_works_ok(struct rv_kreq *req)
{
    struct kg_req *kr = req->state;
    for (uint32_t i = 0; i < kr->work_count; i++) {
        if (kr->works[i] != NULL && kr->works[i]->is_oom) {
            kapi_fail(req, "no memory for a %s response", req->api->name);
            return false;
        }
    }
    return true;
}

/* ---- FindCoordinator ------------------------------------------------------------------------ */

static void kg_find_answer(struct rv_kreq *req)
{
    const struct rv_kp_find_coordinator_request *fr = req->msg;
    const struct rv_kapi_broker *b = req->ks->b;
    struct rv_kp_find_coordinator_response resp;
    rv_kp_find_coordinator_response_init(&resp);
    bool is_batch = req->version >= 4;
    int32_t n = is_batch ? (fr->coordinator_keys.count > 0 ? fr->coordinator_keys.count : 0) : 1;
    struct rv_kp_find_coordinator_response_coordinator *items =
        kapi_alloc(req, (size_t)(n > 0 ? n : 1) * sizeof(*items));
    if (items == NULL) {
        kapi_fail(req, "no memory for a find coordinator response");
        return;
    }
    int8_t type = req->version >= 1 ? fr->key_type : 0;
    for (int32_t i = 0; i < n; i++) {
        struct rv_kp_find_coordinator_response_coordinator *c = &items[i];
        rv_kp_find_coordinator_response_coordinator_init(c);
        c->key = is_batch ? fr->coordinator_keys.items[i] : fr->key;
        c->node_id = -1;
        c->host = kg_wire("");
        c->port = -1;
        bool is_bad = false;
        const char *id = kg_cstr(req, c->key, &is_bad);
        struct kg_route r;
        if (type == 1)
            c->error_code = KGERR_COORDINATOR_NOT_AVAILABLE; /* no transactions (yet) */
        else if (type != 0 || is_bad || id == NULL)
            c->error_code = KGERR_INVALID_REQUEST;
        else
            c->error_code = kg_route(req, id, &r);
        if (c->error_code != KGERR_NONE) {
            c->error_message = kg_wire(c->error_code == KGERR_INVALID_REQUEST
                                           ? "unknown coordinator key type"
                                           : "the coordinator is not available");
            continue;
        }
        c->node_id = kapi_leader(req->ks, r.owner);
        c->host = kg_wire(b->host);
        c->port = b->ports[r.owner];
    }
    if (is_batch) {
        resp.coordinators.count = n;
        resp.coordinators.items = items;
    } else {
        resp.error_code = items[0].error_code;
        resp.error_message = items[0].error_message;
        resp.node_id = items[0].node_id;
        resp.host = items[0].host;
        resp.port = items[0].port;
    }
    kapi_respond(req, &rv_kp_find_coordinator_response_desc, &resp);
}

void kapi_find_coordinator(struct rv_kreq *req)
{
    const struct rv_kapi_broker *b = req->ks->b;
    struct rv_store_topic_info info;
    int8_t type =
        req->version >= 1 ? ((const struct rv_kp_find_coordinator_request *)req->msg)->key_type : 0;
    /* The first group request of the broker's life creates the topic and waits for it. */
    if (type == 0 && b->st != NULL &&
        rv_store_topic_info(b->st, KG_TOPIC, KG_TOPIC_LEN, &info) < 0 &&
        kg_create(req, true, kg_find_answer))
        return;
    kg_find_answer(req);
}

/* ---- JoinGroup -------------------------------------------------------------------------------- */

struct kg_join {
    const char *group;
    struct kgroup_join j;
};

static void kg_join_answered(struct kgroup_waiter *wt, const struct kgroup_result *res)
{
    struct kg_work *w = kg_of_waiter(wt);
    struct rv_kp_join_group_response *resp = w->resp;
    resp->error_code = res->error;
    resp->generation_id = res->generation;
    resp->protocol_type = kg_str(w, res->protocol_type);
    resp->protocol_name =
        kg_str(w, w->version < 7 && res->protocol_name == NULL ? "" : res->protocol_name);
    resp->leader = kg_str(w, res->leader);
    resp->member_id = kg_str(w, res->member_id);
    resp->skip_assignment = res->skip_assignment;
    const struct kgroup *g = res->members_of;
    if (g != NULL && g->member_count > 0) {
        struct rv_kp_join_group_response_member *items =
            kg_alloc(w, g->member_count * sizeof(*items));
        uint32_t n = 0;
        for (const struct kgroup_member *m = g->members; m != NULL && items != NULL;
             m = m->next, n++) {
            struct kgroup_bytes meta = kgroup_member_metadata(m, g->protocol);
            rv_kp_join_group_response_member_init(&items[n]);
            items[n].member_id = kg_str(w, m->id);
            items[n].group_instance_id = kg_str(w, m->instance_id);
            items[n].metadata = kg_bytes(w, meta.ptr, meta.len);
        }
        resp->members.count = items != NULL ? (int32_t)n : 0;
        resp->members.items = items;
    }
    kapi_work_done(&w->w);
}

static void kg_join_run(void *arg)
{
    struct kg_work *w = arg;
    struct kg_join *kj = w->state;
    struct rv_kp_join_group_response *resp = w->resp;
    int16_t err = KGERR_NONE;
    struct kg_shard *gs = kg_serve(w->partition, w->key, &err);
    struct kgroup *g = NULL;
    if (gs != NULL && kj->j.member_id[0] == '\0') {
        if (kgroup_get(&gs->groups, kj->group, &g) < 0)
            err = KGERR_COORDINATOR_NOT_AVAILABLE;
    } else if (gs != NULL) {
        g = kgroup_find(&gs->groups, kj->group);
        err = g != NULL ? KGERR_NONE : KGERR_UNKNOWN_MEMBER_ID;
    }
    if (g == NULL) {
        resp->error_code = err;
        resp->member_id = kg_str(w, kj->j.member_id);
        kapi_work_done(&w->w);
        return;
    }
    g->partition = w->partition;
    w->waiter.fn = kg_join_answered;
    kgroup_join(&gs->env, g, &kj->j, &w->waiter, kg_now_ms());
    kg_schedule(gs, g);
    kg_group_maybe_drop(gs, g);
}

static void kg_join_back(struct rv_kreq *req)
{
    struct kg_req *kr = req->state;
    if (kg_works_ok(req))
        kapi_respond(req, &rv_kp_join_group_response_desc, kr->api);
}

void kapi_join_group(struct rv_kreq *req)
{
    const struct rv_kp_join_group_request *jr = req->msg;
    struct rv_kp_join_group_response *resp = kapi_alloc(req, sizeof(*resp));
    struct kg_join *kj = kapi_alloc(req, sizeof(*kj));
    struct kgroup_join_protocol *protos = kapi_alloc(
        req, (size_t)(jr->protocols.count > 0 ? jr->protocols.count : 1) * sizeof(*protos));
    if (resp == NULL || kj == NULL || protos == NULL) {
        kapi_fail(req, "no memory for a join group request");
        return;
    }
    rv_kp_join_group_response_init(resp);
    resp->protocol_name = kg_wire(req->version >= 7 ? NULL : "");
    resp->leader = kg_wire("");
    resp->member_id = jr->member_id.len >= 0 ? jr->member_id : kg_wire("");
    bool is_bad = false;
    kj->group = kg_cstr(req, jr->group_id, &is_bad);
    kj->j = (struct kgroup_join){
        .member_id = kg_cstr(req, jr->member_id, &is_bad),
        .instance_id = req->version >= 5 ? kg_cstr(req, jr->group_instance_id, &is_bad) : NULL,
        .client_id = kg_cstr(req, req->h.client_id, &is_bad),
        .client_host = req->client_host,
        .protocol_type = kg_cstr(req, jr->protocol_type, &is_bad),
        .protocols = protos,
        .protocol_count = jr->protocols.count > 0 ? (uint32_t)jr->protocols.count : 0,
        .session_timeout_ms = jr->session_timeout_ms,
        .rebalance_timeout_ms = req->version >= 1 && jr->rebalance_timeout_ms > 0
                                    ? jr->rebalance_timeout_ms
                                    : jr->session_timeout_ms,
        .is_member_id_required = req->version >= 4,
        .can_skip_assignment = req->version >= 9,
    };
    for (uint32_t i = 0; i < kj->j.protocol_count; i++) {
        protos[i].name = kg_cstr(req, jr->protocols.items[i].name, &is_bad);
        protos[i].metadata = jr->protocols.items[i].metadata.ptr;
        protos[i].metadata_len = jr->protocols.items[i].metadata.len;
    }
    if (kj->j.member_id == NULL)
        kj->j.member_id = "";
    if (kj->j.client_id == NULL)
        kj->j.client_id = "";
    if (kj->j.protocol_type == NULL)
        kj->j.protocol_type = "";
    struct kg_route r;
    int16_t err;
    struct kg_work *w = kg_one(req, kj->group != NULL ? kj->group : "", &r, &err);
    if (w == NULL)
        return;
    ((struct kg_req *)req->state)->api = resp;
    if (is_bad || kj->group == NULL || kj->group[0] == '\0')
        err = KGERR_INVALID_GROUP_ID;
    if (err != KGERR_NONE) {
        resp->error_code = err;
        kapi_respond(req, &rv_kp_join_group_response_desc, resp);
        return;
    }
    w->resp = resp;
    w->state = kj;
    kg_send_one(req, w, &r, kg_join_run, kg_join_back);
}

/* ---- SyncGroup ------------------------------------------------------------------------------ */

struct kg_sync {
    const char *group;
    struct kgroup_sync s;
};

static void kg_sync_answered(struct kgroup_waiter *wt, const struct kgroup_result *res)
{
    struct kg_work *w = kg_of_waiter(wt);
    struct rv_kp_sync_group_response *resp = w->resp;
    resp->error_code = res->error;
    resp->protocol_type = kg_str(w, res->protocol_type);
    resp->protocol_name = kg_str(w, res->protocol_name);
    resp->assignment = kg_bytes(w, res->assignment, res->assignment_len);
    kapi_work_done(&w->w);
}

static void kg_sync_run(void *arg)
{
    struct kg_work *w = arg;
    struct kg_sync *ks = w->state;
    int16_t err = KGERR_NONE;
    struct kg_shard *gs = kg_serve(w->partition, w->key, &err);
    struct kgroup *g = gs != NULL ? kgroup_find(&gs->groups, ks->group) : NULL;
    if (g == NULL) {
        ((struct rv_kp_sync_group_response *)w->resp)->error_code =
            gs != NULL ? KGERR_UNKNOWN_MEMBER_ID : err;
        kapi_work_done(&w->w);
        return;
    }
    w->waiter.fn = kg_sync_answered;
    kgroup_sync(&gs->env, g, &ks->s, &w->waiter, kg_now_ms());
    kg_schedule(gs, g);
}

static void kg_sync_back(struct rv_kreq *req)
{
    struct kg_req *kr = req->state;
    if (kg_works_ok(req))
        kapi_respond(req, &rv_kp_sync_group_response_desc, kr->api);
}

void kapi_sync_group(struct rv_kreq *req)
{
    const struct rv_kp_sync_group_request *sr = req->msg;
    struct rv_kp_sync_group_response *resp = kapi_alloc(req, sizeof(*resp));
    struct kg_sync *ks = kapi_alloc(req, sizeof(*ks));
    struct kgroup_assignment *as = kapi_alloc(
        req, (size_t)(sr->assignments.count > 0 ? sr->assignments.count : 1) * sizeof(*as));
    if (resp == NULL || ks == NULL || as == NULL) {
        kapi_fail(req, "no memory for a sync group request");
        return;
    }
    rv_kp_sync_group_response_init(resp);
    resp->assignment = (struct rv_kp_bytes){.ptr = (const uint8_t *)"", .len = 0};
    bool is_bad = false;
    ks->group = kg_cstr(req, sr->group_id, &is_bad);
    ks->s = (struct kgroup_sync){
        .member_id = kg_cstr(req, sr->member_id, &is_bad),
        .instance_id = req->version >= 3 ? kg_cstr(req, sr->group_instance_id, &is_bad) : NULL,
        .protocol_type = req->version >= 5 ? kg_cstr(req, sr->protocol_type, &is_bad) : NULL,
        .protocol_name = req->version >= 5 ? kg_cstr(req, sr->protocol_name, &is_bad) : NULL,
        .generation = sr->generation_id,
        .assignments = as,
        .assignment_count = sr->assignments.count > 0 ? (uint32_t)sr->assignments.count : 0,
    };
    for (uint32_t i = 0; i < ks->s.assignment_count; i++) {
        as[i].member_id = kg_cstr(req, sr->assignments.items[i].member_id, &is_bad);
        as[i].bytes = sr->assignments.items[i].assignment.ptr;
        as[i].len = sr->assignments.items[i].assignment.len;
    }
    if (ks->s.member_id == NULL)
        ks->s.member_id = "";
    struct kg_route r;
    int16_t err;
    struct kg_work *w = kg_one(req, ks->group != NULL ? ks->group : "", &r, &err);
    if (w == NULL)
        return;
    ((struct kg_req *)req->state)->api = resp;
    if (is_bad || ks->group == NULL || ks->group[0] == '\0')
        err = KGERR_INVALID_GROUP_ID;
    if (err != KGERR_NONE) {
        resp->error_code = err;
        kapi_respond(req, &rv_kp_sync_group_response_desc, resp);
        return;
    }
    w->resp = resp;
    w->state = ks;
    kg_send_one(req, w, &r, kg_sync_run, kg_sync_back);
}

/* ---- Heartbeat ------------------------------------------------------------------------------ */

struct kg_heartbeat {
    const char *group;
    const char *member_id;
    const char *instance_id;
    int32_t generation;
    int16_t error;
};

static void kg_heartbeat_run(void *arg)
{
    struct kg_work *w = arg;
    struct kg_heartbeat *hb = w->state;
    int16_t err = KGERR_NONE;
    struct kg_shard *gs = kg_serve(w->partition, w->key, &err);
    struct kgroup *g = gs != NULL ? kgroup_find(&gs->groups, hb->group) : NULL;
    if (gs == NULL) /* Kafka: a heartbeat during the load is fine */
        hb->error = err == KGERR_COORDINATOR_LOAD_IN_PROGRESS ? KGERR_NONE : err;
    else if (g == NULL)
        hb->error = KGERR_UNKNOWN_MEMBER_ID;
    else
        hb->error = kgroup_heartbeat(&gs->env, g, hb->member_id, hb->instance_id, hb->generation,
                                     kg_now_ms());
    if (g != NULL)
        kg_schedule(gs, g);
    kapi_work_done(&w->w);
}

static void kg_heartbeat_back(struct rv_kreq *req)
{
    struct kg_req *kr = req->state;
    struct kg_heartbeat *hb = kr->api;
    struct rv_kp_heartbeat_response resp;
    rv_kp_heartbeat_response_init(&resp);
    resp.error_code = hb->error;
    kapi_respond(req, &rv_kp_heartbeat_response_desc, &resp);
}

void kapi_heartbeat(struct rv_kreq *req)
{
    const struct rv_kp_heartbeat_request *hr = req->msg;
    struct kg_heartbeat *hb = kapi_alloc(req, sizeof(*hb));
    if (hb == NULL) {
        kapi_fail(req, "no memory for a heartbeat");
        return;
    }
    bool is_bad = false;
    hb->group = kg_cstr(req, hr->group_id, &is_bad);
    hb->member_id = kg_cstr(req, hr->member_id, &is_bad);
    hb->instance_id = req->version >= 3 ? kg_cstr(req, hr->group_instance_id, &is_bad) : NULL;
    hb->generation = hr->generation_id;
    if (hb->member_id == NULL)
        hb->member_id = "";
    struct kg_route r;
    struct kg_work *w = kg_one(req, hb->group != NULL ? hb->group : "", &r, &hb->error);
    if (w == NULL)
        return;
    ((struct kg_req *)req->state)->api = hb;
    if (is_bad || hb->group == NULL || hb->group[0] == '\0')
        hb->error = KGERR_INVALID_GROUP_ID;
    if (hb->error != KGERR_NONE) {
        kg_heartbeat_back(req);
        return;
    }
    w->state = hb;
    kg_send_one(req, w, &r, kg_heartbeat_run, kg_heartbeat_back);
}

/* ---- LeaveGroup ------------------------------------------------------------------------------ */

struct kg_leave {
    const char *group;
    uint32_t count;
    const char **member_ids;
    const char **instance_ids;
    int16_t *errors; /* per member */
    int16_t error;   /* the group's */
};

static void kg_leave_run(void *arg)
{
    struct kg_work *w = arg;
    struct kg_leave *kl = w->state;
    int16_t err = KGERR_NONE;
    struct kg_shard *gs = kg_serve(w->partition, w->key, &err);
    struct kgroup *g = gs != NULL ? kgroup_find(&gs->groups, kl->group) : NULL;
    kl->error = err;
    for (uint32_t i = 0; i < kl->count && gs != NULL; i++) {
        kl->errors[i] = g == NULL ? KGERR_UNKNOWN_MEMBER_ID
                                  : kgroup_leave(&gs->env, g, kl->member_ids[i],
                                                 kl->instance_ids[i], kg_now_ms());
    }
    if (g != NULL)
        kg_schedule(gs, g);
    kapi_work_done(&w->w);
}

static void kg_leave_back(struct rv_kreq *req)
{
    struct kg_req *kr = req->state;
    struct kg_leave *kl = kr->api;
    struct rv_kp_leave_group_response resp;
    rv_kp_leave_group_response_init(&resp);
    resp.error_code = kl->error;
    if (req->version < 3) {
        if (kl->error == KGERR_NONE && kl->count > 0)
            resp.error_code = kl->errors[0];
    } else if (kl->error == KGERR_NONE) {
        struct rv_kp_leave_group_response_member_response *items =
            kapi_alloc(req, (kl->count > 0 ? kl->count : 1) * sizeof(*items));
        if (items == NULL) {
            kapi_fail(req, "no memory for a leave group response");
            return;
        }
        for (uint32_t i = 0; i < kl->count; i++) {
            rv_kp_leave_group_response_member_response_init(&items[i]);
            items[i].member_id = kg_wire_nn(kl->member_ids[i]);
            items[i].group_instance_id = kg_wire(kl->instance_ids[i]);
            items[i].error_code = kl->errors[i];
        }
        resp.members.count = (int32_t)kl->count;
        resp.members.items = items;
    }
    kapi_respond(req, &rv_kp_leave_group_response_desc, &resp);
}

void kapi_leave_group(struct rv_kreq *req)
{
    const struct rv_kp_leave_group_request *lr = req->msg;
    struct kg_leave *kl = kapi_alloc(req, sizeof(*kl));
    uint32_t n = req->version < 3 ? 1 : lr->members.count > 0 ? (uint32_t)lr->members.count : 0;
    const char **mids = kapi_alloc(req, (n + 1) * sizeof(*mids));
    const char **iids = kapi_alloc(req, (n + 1) * sizeof(*iids));
    int16_t *errs = kapi_alloc(req, (n + 1) * sizeof(*errs));
    if (kl == NULL || mids == NULL || iids == NULL || errs == NULL) {
        kapi_fail(req, "no memory for a leave group request");
        return;
    }
    bool is_bad = false;
    *kl = (struct kg_leave){.group = kg_cstr(req, lr->group_id, &is_bad),
                            .count = n,
                            .member_ids = mids,
                            .instance_ids = iids,
                            .errors = errs};
    for (uint32_t i = 0; i < n; i++) {
        struct rv_kp_str mid = req->version < 3 ? lr->member_id : lr->members.items[i].member_id;
        mids[i] = kg_cstr(req, mid, &is_bad);
        mids[i] = mids[i] != NULL ? mids[i] : "";
        iids[i] = req->version >= 3 ? kg_cstr(req, lr->members.items[i].group_instance_id, &is_bad)
                                    : NULL;
    }
    struct kg_route r;
    struct kg_work *w = kg_one(req, kl->group != NULL ? kl->group : "", &r, &kl->error);
    if (w == NULL)
        return;
    ((struct kg_req *)req->state)->api = kl;
    if (is_bad || kl->group == NULL || kl->group[0] == '\0')
        kl->error = KGERR_INVALID_GROUP_ID;
    if (kl->error != KGERR_NONE) {
        kg_leave_back(req);
        return;
    }
    w->state = kl;
    kg_send_one(req, w, &r, kg_leave_run, kg_leave_back);
}

/* ---- OffsetCommit ---------------------------------------------------------------------------- */

struct kg_commit_entry {
    const char *topic;
    int32_t partition;
    int64_t offset;
    int32_t leader_epoch;
    const char *metadata;
    int64_t commit_ms;
    int16_t error;
};

struct kg_commit {
    const char *group;
    const char *member_id;
    const char *instance_id;
    int32_t generation;
    struct kg_commit_entry *entries;
    uint32_t count;
    struct kgroup *g; /* coordinator: the group, held while appending */
};

/* Every entry still without an error gets err. */
static void kg_commit_fail_all(struct kg_commit *kc, int16_t err)
{
    for (uint32_t i = 0; i < kc->count; i++) {
        if (kc->entries[i].error == KGERR_NONE)
            kc->entries[i].error = err;
    }
}

static void kg_commit_check_done(struct kg_work *w)
{
    if (--w->appends > 0)
        return;
    struct kg_commit *kc = w->state;
    if (kc->g != NULL)
        kg_group_put(kc->g);
    kapi_work_done(&w->w);
}

static void kg_commit_appended(struct kg_append *a, int err)
{
    struct kg_work *w = a->arg;
    struct kg_commit *kc = w->state;
    struct kgroup *g = kc->g;
    bool can_cache = !a->gs->is_closed && !g->is_removed;
    for (uint32_t i = a->first; i < a->first + a->count; i++) {
        struct kg_commit_entry *e = &kc->entries[i];
        if (e->error != KGERR_NONE)
            continue;
        if (err < 0)
            e->error = kg_append_error(err);
        else if (can_cache && kgroup_offset_put(g, e->topic, e->partition, e->offset,
                                                e->leader_epoch, e->metadata, e->commit_ms) < 0)
            e->error = KGERR_UNKNOWN_SERVER_ERROR; /* durable, but not served until a reload */
    }
    kg_commit_check_done(w);
}

/* The records of entries[first, end), as one append. */
static void kg_commit_append(struct kg_shard *gs, struct kg_work *w, uint32_t first, uint32_t end)
{
    struct kg_commit *kc = w->state;
    struct kg_rec *recs = calloc(end - first + 1, sizeof(*recs));
    struct kg_append *a = kg_append_new(gs, w->key, kg_commit_appended, w);
    uint32_t n = 0;
    bool is_oom = recs == NULL || a == NULL;
    for (uint32_t i = first; i < end && !is_oom; i++) {
        const struct kg_commit_entry *e = &kc->entries[i];
        if (e->error != KGERR_NONE)
            continue;
        struct kg_rec *r = &recs[n++];
        r->key_len = (uint32_t)kgroup_offset_key_size(kc->group, e->topic);
        r->value_len = (uint32_t)kgroup_offset_value_size(e->metadata);
        r->key = malloc(r->key_len);
        r->value = malloc(r->value_len);
        is_oom = r->key == NULL || r->value == NULL;
        if (!is_oom) {
            kgroup_offset_key_encode(r->key, kc->group, e->topic, e->partition);
            kgroup_offset_value_encode(r->value, e->offset, e->leader_epoch, e->metadata,
                                       e->commit_ms);
        }
    }
    if (is_oom) {
        for (uint32_t i = first; i < end; i++)
            kc->entries[i].error = kc->entries[i].error != KGERR_NONE ? kc->entries[i].error
                                                                      : KGERR_UNKNOWN_SERVER_ERROR;
        free(a);
    } else {
        a->first = first;
        a->count = end - first;
        w->appends++;
        kg_append_start(a, recs, n);
    }
    kg_recs_free(recs, n);
}

static void kg_commit_run(void *arg)
{
    struct kg_work *w = arg;
    struct kg_commit *kc = w->state;
    int16_t err = KGERR_NONE;
    struct kg_shard *gs = kg_serve(w->partition, w->key, &err);
    struct kgroup *g = gs != NULL ? kgroup_find(&gs->groups, kc->group) : NULL;
    if (gs != NULL && g == NULL) {
        /* Kafka: only a "simple" commit (no generation) makes a group. */
        if (kc->generation >= 0)
            err = KGERR_ILLEGAL_GENERATION;
        else if (kgroup_get(&gs->groups, kc->group, &g) < 0)
            err = KGERR_COORDINATOR_NOT_AVAILABLE;
    }
    if (g != NULL) {
        g->partition = w->partition;
        err = kgroup_commit_check(&gs->env, g, kc->generation, kc->member_id, kc->instance_id,
                                  kg_now_ms());
        kg_schedule(gs, g);
    }
    if (err != KGERR_NONE) {
        kg_commit_fail_all(kc, err);
        if (g != NULL)
            kg_group_maybe_drop(gs, g);
        kapi_work_done(&w->w);
        return;
    }
    kc->g = g;
    g->refs++;
    w->appends = 1; /* dropped by kg_commit_check_done below */
    uint32_t first = 0;
    size_t bytes = 0;
    for (uint32_t i = 0; i < kc->count; i++) {
        const struct kg_commit_entry *e = &kc->entries[i];
        if (e->error != KGERR_NONE)
            continue;
        size_t rec = kgroup_offset_key_size(kc->group, e->topic) +
                     kgroup_offset_value_size(e->metadata) + RV_BATCH_RECORD_OVERHEAD_MAX;
        if (bytes > 0 && bytes + rec > KG_BATCH_BYTES_MAX) {
            kg_commit_append(gs, w, first, i);
            first = i;
            bytes = 0;
        }
        bytes += rec;
    }
    if (bytes > 0)
        kg_commit_append(gs, w, first, kc->count);
    kg_commit_check_done(w);
}

static void kg_commit_back(struct rv_kreq *req)
{
    const struct rv_kp_offset_commit_request *cr = req->msg;
    struct kg_commit *kc = ((struct kg_req *)req->state)->api;
    struct rv_kp_offset_commit_response resp;
    rv_kp_offset_commit_response_init(&resp);
    int32_t nt = cr->topics.count > 0 ? cr->topics.count : 0;
    resp.topics.items = kapi_alloc(req, (size_t)(nt > 0 ? nt : 1) * sizeof(*resp.topics.items));
    if (resp.topics.items == NULL) {
        kapi_fail(req, "no memory for an offset commit response");
        return;
    }
    resp.topics.count = nt;
    uint32_t k = 0;
    for (int32_t t = 0; t < nt; t++) {
        const struct rv_kp_offset_commit_request_topic *ct = &cr->topics.items[t];
        struct rv_kp_offset_commit_response_topic *rt = &resp.topics.items[t];
        rv_kp_offset_commit_response_topic_init(rt);
        rt->name = ct->name;
        int32_t np = ct->partitions.count > 0 ? ct->partitions.count : 0;
        rt->partitions.items =
            kapi_alloc(req, (size_t)(np > 0 ? np : 1) * sizeof(*rt->partitions.items));
        if (rt->partitions.items == NULL) {
            kapi_fail(req, "no memory for an offset commit response");
            return;
        }
        rt->partitions.count = np;
        for (int32_t i = 0; i < np; i++, k++) {
            rv_kp_offset_commit_response_partition_init(&rt->partitions.items[i]);
            rt->partitions.items[i].partition_index = ct->partitions.items[i].partition_index;
            rt->partitions.items[i].error_code = kc->entries[k].error;
        }
    }
    kapi_respond(req, &rv_kp_offset_commit_response_desc, &resp);
}

void kapi_offset_commit(struct rv_kreq *req)
{
    const struct rv_kp_offset_commit_request *cr = req->msg;
    rv_store_t *st = req->ks->b->st;
    uint32_t n = 0;
    for (int32_t t = 0; t < cr->topics.count; t++)
        n += cr->topics.items[t].partitions.count > 0
                 ? (uint32_t)cr->topics.items[t].partitions.count
                 : 0;
    struct kg_commit *kc = kapi_alloc(req, sizeof(*kc));
    struct kg_commit_entry *entries = kapi_alloc(req, (n + 1) * sizeof(*entries));
    if (kc == NULL || entries == NULL) {
        kapi_fail(req, "no memory for an offset commit of %u partitions", n);
        return;
    }
    bool is_bad = false;
    *kc = (struct kg_commit){
        .group = kg_cstr(req, cr->group_id, &is_bad),
        .member_id = req->version >= 1 ? kg_cstr(req, cr->member_id, &is_bad) : "",
        .instance_id = req->version >= 7 ? kg_cstr(req, cr->group_instance_id, &is_bad) : NULL,
        .generation = req->version >= 1 ? cr->generation_id_or_member_epoch : -1,
        .entries = entries,
        .count = n,
    };
    if (kc->member_id == NULL)
        kc->member_id = "";
    int64_t now = rv_clock_wall_ms();
    uint32_t k = 0;
    for (int32_t t = 0; t < cr->topics.count; t++) {
        const struct rv_kp_offset_commit_request_topic *ct = &cr->topics.items[t];
        bool is_bad_topic = false;
        const char *topic = kg_cstr(req, ct->name, &is_bad_topic);
        for (int32_t i = 0; i < ct->partitions.count; i++, k++) {
            const struct rv_kp_offset_commit_request_partition *cp = &ct->partitions.items[i];
            struct kg_commit_entry *e = &entries[k];
            struct rv_part_ref ref;
            bool is_bad_meta = false;
            *e = (struct kg_commit_entry){
                .topic = topic,
                .partition = cp->partition_index,
                .offset = cp->committed_offset,
                .leader_epoch = req->version >= 6 ? cp->committed_leader_epoch : -1,
                .metadata = kg_cstr(req, cp->committed_metadata, &is_bad_meta),
                .commit_ms =
                    req->version == 1 && cp->commit_timestamp >= 0 ? cp->commit_timestamp : now,
            };
            if (cp->committed_metadata.len > KGROUP_METADATA_MAX || is_bad_meta)
                e->error = KGERR_OFFSET_METADATA_TOO_LARGE;
            else if (is_bad_topic || topic == NULL ||
                     rv_store_lookup(st, topic, strlen(topic), cp->partition_index, &ref) < 0)
                e->error = KGERR_UNKNOWN_TOPIC_OR_PARTITION;
        }
    }
    struct kg_route r;
    int16_t err;
    struct kg_work *w = kg_one(req, kc->group != NULL ? kc->group : "", &r, &err);
    if (w == NULL)
        return;
    ((struct kg_req *)req->state)->api = kc;
    if (is_bad || kc->group == NULL)
        err = KGERR_INVALID_GROUP_ID;
    if (err != KGERR_NONE) {
        kg_commit_fail_all(kc, err);
        kg_commit_back(req);
        return;
    }
    w->state = kc;
    kg_send_one(req, w, &r, kg_commit_run, kg_commit_back);
}

/* ---- batched requests: one work per coordinator shard ---------------------------------------- */

/* Origin: put item i (routed by r) into its coordinator's work. */
static bool kg_work_add_item(struct rv_kreq *req, uint32_t shard, uint32_t i, uint32_t cap)
{
    struct kg_work *w = kg_work_for(req, shard);
    if (w == NULL)
        return false;
    if (w->items == NULL) {
        w->items = kapi_alloc(req, cap * sizeof(*w->items));
        if (w->items == NULL)
            return false;
    }
    w->items[w->item_count++] = i;
    return true;
}

/* Origin: send every work (to its shard) and come back to back(req). */
static void kg_send_all(struct rv_kreq *req, void *state, rv_task_fn *run,
                        void (*back)(struct rv_kreq *req))
{
    struct kg_req *kr = req->state;
    kapi_works_begin(req, back);
    for (uint32_t s = 0; s < kr->work_count; s++) {
        struct kg_work *w = kr->works[s];
        if (w != NULL && (w->item_count > 0 || w->items == NULL)) {
            w->state = state;
            kapi_send(req, &w->w, s, run);
        }
    }
    kapi_works_end(req);
}

/* ---- OffsetFetch ---------------------------------------------------------------------------- */

struct kg_fetch_topic {
    const char *name;
    struct rv_kp_str wire;
    const int32_t *partitions;
    int32_t partition_count;
};

struct kg_fetch_result {
    const char *topic;
    int32_t partition;
    int64_t offset;
    int32_t leader_epoch;
    const char *metadata;
};

struct kg_fetch_group {
    const char *group;
    struct rv_kp_str wire;
    int32_t topic_count; /* -1: every committed offset */
    struct kg_fetch_topic *topics;
    struct kg_route r;
    int16_t error;
    struct kg_fetch_result *results; /* the coordinator's, in the request's order */
    uint32_t result_count;
};

static int kg_fetch_result_cmp(const void *a, const void *b)
{
    const struct kg_fetch_result *x = a, *y = b;
    int c = strcmp(x->topic, y->topic);
    return c != 0 ? c : (x->partition > y->partition) - (x->partition < y->partition);
}

/* Coordinator: the answer of one group. */
static void kg_fetch_group(struct kg_work *w, struct kg_fetch_group *fg)
{
    int16_t err = KGERR_NONE;
    struct kg_shard *gs = kg_serve(fg->r.partition, fg->r.key, &err);
    if (gs == NULL) {
        fg->error = err;
        return;
    }
    struct kgroup *g = kgroup_find(&gs->groups, fg->group);
    uint32_t n = 0;
    if (fg->topic_count < 0) {
        n = g != NULL ? g->offset_count : 0;
    } else {
        for (int32_t t = 0; t < fg->topic_count; t++)
            n += (uint32_t)fg->topics[t].partition_count;
    }
    struct kg_fetch_result *res = kg_alloc(w, (n + 1) * sizeof(*res));
    if (res == NULL)
        return;
    uint32_t k = 0;
    if (fg->topic_count < 0 && g != NULL) {
        uint32_t cursor = 0;
        struct kgroup_offset *chain = NULL, *o;
        while ((o = kgroup_offset_next(g, &cursor, &chain)) != NULL && k < n) {
            res[k++] = (struct kg_fetch_result){.topic = kg_str(w, o->topic).ptr,
                                                .partition = o->partition,
                                                .offset = o->offset,
                                                .leader_epoch = o->leader_epoch,
                                                .metadata = kg_str(w, o->metadata).ptr};
        }
        qsort(res, k, sizeof(*res), kg_fetch_result_cmp);
    }
    for (int32_t t = 0; fg->topic_count >= 0 && t < fg->topic_count; t++) {
        const struct kg_fetch_topic *ft = &fg->topics[t];
        for (int32_t i = 0; i < ft->partition_count; i++, k++) {
            const struct kgroup_offset *o = g != NULL && ft->name != NULL
                                                ? kgroup_offset_find(g, ft->name, ft->partitions[i])
                                                : NULL;
            res[k] =
                (struct kg_fetch_result){.topic = ft->name,
                                         .partition = ft->partitions[i],
                                         .offset = o != NULL ? o->offset : -1,
                                         .leader_epoch = o != NULL ? o->leader_epoch : -1,
                                         .metadata = o != NULL ? kg_str(w, o->metadata).ptr : ""};
        }
    }
    fg->results = res;
    fg->result_count = k;
}

static void kg_fetch_run(void *arg)
{
    struct kg_work *w = arg;
    struct kg_fetch_group *groups = w->state;
    for (uint32_t i = 0; i < w->item_count; i++)
        kg_fetch_group(w, &groups[w->items[i]]);
    kapi_work_done(&w->w);
}

/* Origin: the groups of the request, whichever version. */
static struct kg_fetch_group *kg_fetch_groups(struct rv_kreq *req, uint32_t *out_count)
{
    const struct rv_kp_offset_fetch_request *fr = req->msg;
    bool is_batch = req->version >= 8;
    uint32_t n = is_batch ? (fr->groups.count > 0 ? (uint32_t)fr->groups.count : 0) : 1;
    struct kg_fetch_group *groups = kapi_alloc(req, (n + 1) * sizeof(*groups));
    for (uint32_t i = 0; i < n && groups != NULL; i++) {
        struct kg_fetch_group *fg = &groups[i];
        fg->wire = is_batch ? fr->groups.items[i].group_id : fr->group_id;
        int32_t nt = is_batch ? fr->groups.items[i].topics.count : fr->topics.count;
        bool is_bad = false;
        fg->group = kg_cstr(req, fg->wire, &is_bad);
        fg->topic_count = nt < 0 ? -1 : nt;
        fg->topics = kapi_alloc(req, (size_t)(nt > 0 ? nt : 1) * sizeof(*fg->topics));
        if (fg->topics == NULL)
            return NULL;
        for (int32_t t = 0; t < nt; t++) {
            struct kg_fetch_topic *ft = &fg->topics[t];
            bool is_bad_topic = false;
            ft->wire =
                is_batch ? fr->groups.items[i].topics.items[t].name : fr->topics.items[t].name;
            struct rv_kp_arr_i32 parts = is_batch
                                             ? fr->groups.items[i].topics.items[t].partition_indexes
                                             : fr->topics.items[t].partition_indexes;
            ft->name = kg_cstr(req, ft->wire, &is_bad_topic);
            ft->name = is_bad_topic ? NULL : ft->name;
            ft->partitions = parts.items;
            ft->partition_count = parts.count > 0 ? parts.count : 0;
        }
        if (is_bad || fg->group == NULL)
            fg->error = KGERR_INVALID_GROUP_ID;
        else
            fg->error = kg_route(req, fg->group, &fg->r);
    }
    *out_count = n;
    return groups;
}

static bool kg_same_topic(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Origin: the topics of one group's answer, grouped as its results are. */
static int kg_fetch_topics(struct rv_kreq *req, const struct kg_fetch_group *fg, int32_t *out_count,
                           struct rv_kp_offset_fetch_response_topics **out)
{
    /* Results come in runs of one topic (request order, or sorted). */
    int32_t nt = 0;
    for (uint32_t k = 0; k < fg->result_count; k++)
        nt += k == 0 || !kg_same_topic(fg->results[k].topic, fg->results[k - 1].topic);
    struct rv_kp_offset_fetch_response_topics *topics =
        kapi_alloc(req, (size_t)(nt > 0 ? nt : 1) * sizeof(*topics));
    struct rv_kp_offset_fetch_response_partitions *parts =
        kapi_alloc(req, (fg->result_count + 1) * sizeof(*parts));
    if (topics == NULL || parts == NULL)
        return -ENOMEM;
    int32_t t = -1;
    for (uint32_t k = 0; k < fg->result_count; k++) {
        const struct kg_fetch_result *r = &fg->results[k];
        if (k == 0 || !kg_same_topic(r->topic, fg->results[k - 1].topic)) {
            t++;
            rv_kp_offset_fetch_response_topics_init(&topics[t]);
            topics[t].name = kg_wire_nn(r->topic);
            topics[t].partitions.items = &parts[k];
        }
        struct rv_kp_offset_fetch_response_partitions *p = &parts[k];
        rv_kp_offset_fetch_response_partitions_init(p);
        p->partition_index = r->partition;
        p->committed_offset = r->offset;
        p->committed_leader_epoch = r->leader_epoch;
        p->metadata = kg_wire_nn(r->metadata);
        topics[t].partitions.count++;
    }
    *out_count = nt;
    *out = topics;
    return 0;
}

/* v0-1 cannot carry a group error: every requested partition gets it. */
static int kg_fetch_old_errors(struct rv_kreq *req, int16_t error,
                               struct rv_kp_offset_fetch_response *resp)
{
    const struct rv_kp_offset_fetch_request *fr = req->msg;
    int32_t nt = fr->topics.count > 0 ? fr->topics.count : 0;
    resp->topics.items = kapi_alloc(req, (size_t)(nt + 1) * sizeof(*resp->topics.items));
    if (resp->topics.items == NULL)
        return -ENOMEM;
    resp->topics.count = nt;
    for (int32_t t = 0; t < nt; t++) {
        struct rv_kp_offset_fetch_response_topic *rt = &resp->topics.items[t];
        struct rv_kp_arr_i32 asked = fr->topics.items[t].partition_indexes;
        int32_t np = asked.count > 0 ? asked.count : 0;
        rv_kp_offset_fetch_response_topic_init(rt);
        rt->name = fr->topics.items[t].name;
        rt->partitions.items = kapi_alloc(req, (size_t)(np + 1) * sizeof(*rt->partitions.items));
        if (rt->partitions.items == NULL)
            return -ENOMEM;
        rt->partitions.count = np;
        for (int32_t i = 0; i < np; i++) {
            struct rv_kp_offset_fetch_response_partition *p = &rt->partitions.items[i];
            rv_kp_offset_fetch_response_partition_init(p);
            p->partition_index = asked.items[i];
            p->committed_offset = -1;
            p->metadata = kg_wire("");
            p->error_code = error;
        }
    }
    return 0;
}

/* v0-7: the one group's answer, the same layout under other names. */
static int kg_fetch_old_topics(struct rv_kreq *req,
                               const struct rv_kp_offset_fetch_response_group *rg,
                               struct rv_kp_offset_fetch_response *resp)
{
    resp->error_code = rg->error_code;
    if (req->version < 2 && rg->error_code != KGERR_NONE)
        return kg_fetch_old_errors(req, rg->error_code, resp);
    int32_t nt = rg->topics.count;
    resp->topics.items = kapi_alloc(req, (size_t)(nt + 1) * sizeof(*resp->topics.items));
    if (resp->topics.items == NULL)
        return -ENOMEM;
    resp->topics.count = nt;
    for (int32_t t = 0; t < nt; t++) {
        const struct rv_kp_offset_fetch_response_topics *src = &rg->topics.items[t];
        struct rv_kp_offset_fetch_response_topic *rt = &resp->topics.items[t];
        int32_t np = src->partitions.count;
        rv_kp_offset_fetch_response_topic_init(rt);
        rt->name = src->name;
        rt->partitions.items = kapi_alloc(req, (size_t)(np + 1) * sizeof(*rt->partitions.items));
        if (rt->partitions.items == NULL)
            return -ENOMEM;
        rt->partitions.count = np;
        for (int32_t i = 0; i < np; i++) {
            const struct rv_kp_offset_fetch_response_partitions *sp = &src->partitions.items[i];
            struct rv_kp_offset_fetch_response_partition *p = &rt->partitions.items[i];
            rv_kp_offset_fetch_response_partition_init(p);
            p->partition_index = sp->partition_index;
            p->committed_offset = sp->committed_offset;
            p->committed_leader_epoch = sp->committed_leader_epoch;
            p->metadata = sp->metadata;
        }
    }
    return 0;
}

static void kg_fetch_back(struct rv_kreq *req)
{
    struct kg_req *kr = req->state;
    struct kg_fetch_group *groups = kr->api;
    int32_t ng = ((const struct rv_kp_offset_fetch_request *)req->msg)->groups.count;
    uint32_t n = req->version >= 8 ? (ng > 0 ? (uint32_t)ng : 0) : 1;
    if (!kg_works_ok(req))
        return;
    struct rv_kp_offset_fetch_response resp;
    rv_kp_offset_fetch_response_init(&resp);
    struct rv_kp_offset_fetch_response_group *items = kapi_alloc(req, (n + 1) * sizeof(*items));
    int rc = items != NULL ? 0 : -ENOMEM;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        struct rv_kp_offset_fetch_response_group *rg = &items[i];
        rv_kp_offset_fetch_response_group_init(rg);
        rg->group_id = groups[i].wire;
        rg->error_code = groups[i].error;
        rc = kg_fetch_topics(req, &groups[i], &rg->topics.count, &rg->topics.items);
    }
    if (rc == 0 && req->version >= 8) {
        resp.groups.count = (int32_t)n;
        resp.groups.items = items;
    } else if (rc == 0) {
        rc = kg_fetch_old_topics(req, &items[0], &resp);
    }
    if (rc < 0) {
        kapi_fail(req, "no memory for an offset fetch response");
        return;
    }
    kapi_respond(req, &rv_kp_offset_fetch_response_desc, &resp);
}

void kapi_offset_fetch(struct rv_kreq *req)
{
    uint32_t n = 0;
    struct kg_req *kr = kg_req_new(req);
    struct kg_fetch_group *groups = kr != NULL ? kg_fetch_groups(req, &n) : NULL;
    if (groups == NULL) {
        kapi_fail(req, "no memory for an offset fetch request");
        return;
    }
    kr->api = groups;
    for (uint32_t i = 0; i < n; i++) {
        if (groups[i].error == KGERR_NONE && !kg_work_add_item(req, groups[i].r.owner, i, n)) {
            kapi_fail(req, "no memory for an offset fetch request");
            return;
        }
    }
    kg_send_all(req, groups, kg_fetch_run, kg_fetch_back);
}

/* ---- OffsetDelete ----------------------------------------------------------------------------- */

struct kg_odel_entry {
    const char *topic;
    int32_t partition;
    int16_t error;
    bool is_deleted; /* it had an offset: a tombstone is written */
};

struct kg_odel {
    const char *group;
    struct kg_odel_entry *entries;
    uint32_t count;
    int16_t error;
    struct kgroup *g;
};

static void kg_odel_appended(struct kg_append *a, int err)
{
    struct kg_work *w = a->arg;
    struct kg_odel *od = w->state;
    for (uint32_t i = 0; i < od->count; i++) {
        struct kg_odel_entry *e = &od->entries[i];
        if (!e->is_deleted)
            continue;
        if (err < 0)
            e->error = kg_append_error(err);
        else if (!a->gs->is_closed && !od->g->is_removed)
            kgroup_offset_del(od->g, e->topic, e->partition);
    }
    kg_group_put(od->g);
    kapi_work_done(&w->w);
}

/* Which entries may go: an EMPTY group's, or a consumer group's topics it does
 * not subscribe to. NONE, or the group's error. */
static int16_t kg_odel_pick(struct kgroup *g, struct kg_odel *od)
{
    if (g == NULL || g->state == KGROUP_DEAD)
        return KGERR_GROUP_ID_NOT_FOUND;
    bool is_consumer = g->protocol_type != NULL && strcmp(g->protocol_type, "consumer") == 0;
    if (g->state != KGROUP_EMPTY && !is_consumer)
        return KGERR_NON_EMPTY_GROUP;
    for (uint32_t i = 0; i < od->count; i++) {
        struct kg_odel_entry *e = &od->entries[i];
        if (e->error != KGERR_NONE)
            continue;
        if (g->state != KGROUP_EMPTY && kgroup_is_subscribed(g, e->topic))
            e->error = KGERR_GROUP_SUBSCRIBED_TO_TOPIC;
        else
            e->is_deleted = kgroup_offset_find(g, e->topic, e->partition) != NULL;
    }
    return KGERR_NONE;
}

static void kg_odel_run(void *arg)
{
    struct kg_work *w = arg;
    struct kg_odel *od = w->state;
    int16_t err = KGERR_NONE;
    struct kg_shard *gs = kg_serve(w->partition, w->key, &err);
    struct kgroup *g = gs != NULL ? kgroup_find(&gs->groups, od->group) : NULL;
    od->error = gs != NULL ? kg_odel_pick(g, od) : err;
    uint32_t n = 0;
    for (uint32_t i = 0; i < od->count && od->error == KGERR_NONE; i++)
        n += od->entries[i].is_deleted;
    if (n == 0) {
        kapi_work_done(&w->w);
        return;
    }
    struct kg_rec *recs = calloc(n, sizeof(*recs));
    struct kg_append *a = kg_append_new(gs, w->key, kg_odel_appended, w);
    uint32_t k = 0;
    bool is_oom = recs == NULL || a == NULL;
    for (uint32_t i = 0; i < od->count && !is_oom; i++) {
        const struct kg_odel_entry *e = &od->entries[i];
        if (!e->is_deleted)
            continue;
        struct kg_rec *r = &recs[k++];
        r->key_len = (uint32_t)kgroup_offset_key_size(od->group, e->topic);
        r->key = malloc(r->key_len);
        is_oom = r->key == NULL;
        if (!is_oom)
            kgroup_offset_key_encode(r->key, od->group, e->topic, e->partition);
    }
    if (is_oom) {
        od->error = KGERR_UNKNOWN_SERVER_ERROR;
        free(a);
        kapi_work_done(&w->w);
    } else {
        od->g = g;
        g->refs++;
        kg_append_start(a, recs, k);
    }
    kg_recs_free(recs, k);
}

static void kg_odel_back(struct rv_kreq *req)
{
    const struct rv_kp_offset_delete_request *dr = req->msg;
    struct kg_odel *od = ((struct kg_req *)req->state)->api;
    struct rv_kp_offset_delete_response resp;
    rv_kp_offset_delete_response_init(&resp);
    resp.error_code = od->error;
    int32_t nt = od->error == KGERR_NONE && dr->topics.count > 0 ? dr->topics.count : 0;
    resp.topics.items = kapi_alloc(req, (size_t)(nt > 0 ? nt : 1) * sizeof(*resp.topics.items));
    if (resp.topics.items == NULL) {
        kapi_fail(req, "no memory for an offset delete response");
        return;
    }
    resp.topics.count = nt;
    uint32_t k = 0;
    for (int32_t t = 0; t < nt; t++) {
        const struct rv_kp_offset_delete_request_topic *dt = &dr->topics.items[t];
        struct rv_kp_offset_delete_response_topic *rt = &resp.topics.items[t];
        int32_t np = dt->partitions.count > 0 ? dt->partitions.count : 0;
        rv_kp_offset_delete_response_topic_init(rt);
        rt->name = dt->name;
        rt->partitions.items =
            kapi_alloc(req, (size_t)(np > 0 ? np : 1) * sizeof(*rt->partitions.items));
        if (rt->partitions.items == NULL) {
            kapi_fail(req, "no memory for an offset delete response");
            return;
        }
        rt->partitions.count = np;
        for (int32_t i = 0; i < np; i++, k++) {
            rv_kp_offset_delete_response_partition_init(&rt->partitions.items[i]);
            rt->partitions.items[i].partition_index = dt->partitions.items[i].partition_index;
            rt->partitions.items[i].error_code = od->entries[k].error;
        }
    }
    kapi_respond(req, &rv_kp_offset_delete_response_desc, &resp);
}

void kapi_offset_delete(struct rv_kreq *req)
{
    const struct rv_kp_offset_delete_request *dr = req->msg;
    rv_store_t *st = req->ks->b->st;
    uint32_t n = 0;
    for (int32_t t = 0; t < dr->topics.count; t++)
        n += dr->topics.items[t].partitions.count > 0
                 ? (uint32_t)dr->topics.items[t].partitions.count
                 : 0;
    struct kg_odel *od = kapi_alloc(req, sizeof(*od));
    struct kg_odel_entry *entries = kapi_alloc(req, (n + 1) * sizeof(*entries));
    if (od == NULL || entries == NULL) {
        kapi_fail(req, "no memory for an offset delete request");
        return;
    }
    bool is_bad = false;
    *od = (struct kg_odel){
        .group = kg_cstr(req, dr->group_id, &is_bad), .entries = entries, .count = n};
    uint32_t k = 0;
    for (int32_t t = 0; t < dr->topics.count; t++) {
        const struct rv_kp_offset_delete_request_topic *dt = &dr->topics.items[t];
        bool is_bad_topic = false;
        const char *topic = kg_cstr(req, dt->name, &is_bad_topic);
        for (int32_t i = 0; i < dt->partitions.count; i++, k++) {
            struct rv_part_ref ref;
            entries[k] =
                (struct kg_odel_entry){.topic = topic != NULL ? topic : "",
                                       .partition = dt->partitions.items[i].partition_index};
            if (is_bad_topic || topic == NULL ||
                rv_store_lookup(st, topic, strlen(topic), entries[k].partition, &ref) < 0)
                entries[k].error = KGERR_UNKNOWN_TOPIC_OR_PARTITION;
        }
    }
    struct kg_route r;
    struct kg_work *w = kg_one(req, od->group != NULL ? od->group : "", &r, &od->error);
    if (w == NULL)
        return;
    ((struct kg_req *)req->state)->api = od;
    if (is_bad || od->group == NULL || od->group[0] == '\0')
        od->error = KGERR_INVALID_GROUP_ID;
    if (od->error != KGERR_NONE) {
        kg_odel_back(req);
        return;
    }
    w->state = od;
    kg_send_one(req, w, &r, kg_odel_run, kg_odel_back);
}

/* ---- ListGroups -------------------------------------------------------------------------------- */

struct kg_list {
    int16_t error;
    uint32_t count;
    struct rv_kp_list_groups_response_listed_group *items; /* the coordinator's */
};

static bool kg_list_matches(const struct rv_kp_arr_str *filter, const char *word)
{
    if (filter->count <= 0)
        return true;
    for (int32_t i = 0; i < filter->count; i++) {
        struct rv_kp_str s = filter->items[i];
        if (s.len >= 0 && (size_t)s.len == strlen(word) &&
            strncasecmp(s.ptr, word, (size_t)s.len) == 0)
            return true;
    }
    return false;
}

static void kg_list_run(void *arg)
{
    struct kg_work *w = arg;
    struct kg_list *kl = w->resp;
    const struct rv_kp_list_groups_request *lr = w->msg;
    struct kg_shard *gs = kg_shard_self();
    if (gs == NULL || gs->is_stopping) {
        kapi_work_done(&w->w);
        return;
    }
    for (uint32_t p = 0; p < gs->part_count; p++) {
        if (gs->parts[p] == KG_PART_LOADING)
            kl->error = KGERR_COORDINATOR_LOAD_IN_PROGRESS;
    }
    kl->items = kg_alloc(w, (gs->groups.count + 1) * sizeof(*kl->items));
    uint32_t cursor = 0;
    struct kgroup *chain = NULL, *g;
    while (kl->items != NULL && (g = kgroup_next(&gs->groups, &cursor, &chain)) != NULL) {
        const char *state = kgroup_state_name(g->state);
        if (g->state == KGROUP_DEAD ||
            (w->version >= 4 && !kg_list_matches(&lr->states_filter, state)) ||
            (w->version >= 5 && !kg_list_matches(&lr->types_filter, "classic")))
            continue;
        struct rv_kp_list_groups_response_listed_group *it = &kl->items[kl->count++];
        rv_kp_list_groups_response_listed_group_init(it);
        it->group_id = kg_str(w, g->id);
        it->protocol_type = kg_str(w, g->protocol_type != NULL ? g->protocol_type : "");
        it->group_state = kg_wire(state); /* a constant */
        it->group_type = kg_wire("classic");
    }
    kapi_work_done(&w->w);
}

static void kg_list_back(struct rv_kreq *req)
{
    struct kg_req *kr = req->state;
    struct kg_list *lists = kr->api;
    if (!kg_works_ok(req))
        return;
    struct rv_kp_list_groups_response resp;
    rv_kp_list_groups_response_init(&resp);
    uint32_t n = 0;
    for (uint32_t s = 0; s < kr->work_count; s++) {
        n += lists[s].count;
        if (lists[s].error != KGERR_NONE)
            resp.error_code = lists[s].error;
    }
    resp.groups.items = kapi_alloc(req, (n + 1) * sizeof(*resp.groups.items));
    if (resp.groups.items == NULL) {
        kapi_fail(req, "no memory for a list groups response");
        return;
    }
    for (uint32_t s = 0; s < kr->work_count; s++) {
        for (uint32_t i = 0; i < lists[s].count; i++)
            resp.groups.items[resp.groups.count++] = lists[s].items[i];
    }
    kapi_respond(req, &rv_kp_list_groups_response_desc, &resp);
}

void kapi_list_groups(struct rv_kreq *req)
{
    struct kg_req *kr = kg_req_new(req);
    struct kg_list *lists = kr != NULL ? kapi_alloc(req, kr->work_count * sizeof(*lists)) : NULL;
    if (lists == NULL) {
        kapi_fail(req, "no memory for a list groups request");
        return;
    }
    kr->api = lists;
    /* As Kafka's brokers: the groups the addressed node coordinates (every
     * shard's when one broker is advertised). */
    int only = kapi_node_shard(req);
    for (uint32_t s = 0; s < kr->work_count; s++) {
        if (only >= 0 && s != (uint32_t)only)
            continue;
        struct kg_work *w = kg_work_for(req, s);
        if (w == NULL) {
            kapi_fail(req, "no memory for a list groups request");
            return;
        }
        w->resp = &lists[s];
    }
    kg_send_all(req, NULL, kg_list_run, kg_list_back);
}

/* ---- DescribeGroups --------------------------------------------------------------------------- */

static void kg_describe_one(struct kg_work *w, struct kg_route *r,
                            struct rv_kp_describe_groups_response_described_group *dg,
                            const char *id)
{
    int16_t err = KGERR_NONE;
    struct kg_shard *gs = kg_serve(r->partition, r->key, &err);
    if (gs == NULL) {
        dg->error_code = err;
        return;
    }
    struct kgroup *g = kgroup_find(&gs->groups, id);
    dg->group_state = kg_wire(kgroup_state_name(g != NULL ? g->state : KGROUP_DEAD));
    if (g == NULL || g->state == KGROUP_DEAD)
        return;
    bool is_stable = g->state == KGROUP_STABLE;
    dg->protocol_type = kg_str(w, g->protocol_type != NULL ? g->protocol_type : "");
    dg->protocol_data = kg_str(w, is_stable && g->protocol != NULL ? g->protocol : "");
    struct rv_kp_describe_groups_response_described_group_member *items =
        kg_alloc(w, (g->member_count + 1) * sizeof(*items));
    uint32_t n = 0;
    for (const struct kgroup_member *m = g->members; m != NULL && items != NULL; m = m->next, n++) {
        struct rv_kp_describe_groups_response_described_group_member *it = &items[n];
        struct kgroup_bytes meta = kgroup_member_metadata(m, g->protocol);
        rv_kp_describe_groups_response_described_group_member_init(it);
        it->member_id = kg_str(w, m->id);
        it->group_instance_id = kg_str(w, m->instance_id);
        it->client_id = kg_str(w, m->client_id);
        it->client_host = kg_str(w, m->client_host);
        it->member_metadata = is_stable ? kg_bytes(w, meta.ptr, meta.len) : kg_bytes(w, NULL, 0);
        it->member_assignment =
            is_stable ? kg_bytes(w, m->assignment.ptr, m->assignment.len) : kg_bytes(w, NULL, 0);
    }
    dg->members.count = items != NULL ? (int32_t)n : 0;
    dg->members.items = items;
}

struct kg_multi {
    const char **ids;
    struct kg_route *routes;
    void *items; /* the response's per-group items */
    int16_t *errors;
};

static void kg_describe_run(void *arg)
{
    struct kg_work *w = arg;
    struct kg_multi *km = w->state;
    struct rv_kp_describe_groups_response_described_group *items = km->items;
    for (uint32_t i = 0; i < w->item_count; i++) {
        uint32_t k = w->items[i];
        kg_describe_one(w, &km->routes[k], &items[k], km->ids[k]);
    }
    kapi_work_done(&w->w);
}

static void kg_describe_back(struct rv_kreq *req)
{
    struct kg_multi *km = ((struct kg_req *)req->state)->api;
    const struct rv_kp_describe_groups_request *dr = req->msg;
    if (!kg_works_ok(req))
        return;
    struct rv_kp_describe_groups_response resp;
    rv_kp_describe_groups_response_init(&resp);
    resp.groups.count = dr->groups.count > 0 ? dr->groups.count : 0;
    resp.groups.items = km->items;
    kapi_respond(req, &rv_kp_describe_groups_response_desc, &resp);
}

/* Origin: ids, routes and the response items of a request naming groups. */
static struct kg_multi *kg_multi_new(struct rv_kreq *req, const struct rv_kp_arr_str *names,
                                     size_t item_size)
{
    uint32_t n = names->count > 0 ? (uint32_t)names->count : 0;
    struct kg_req *kr = kg_req_new(req);
    struct kg_multi *km = kr != NULL ? kapi_alloc(req, sizeof(*km)) : NULL;
    if (km == NULL)
        return NULL;
    km->ids = kapi_alloc(req, (n + 1) * sizeof(*km->ids));
    km->routes = kapi_alloc(req, (n + 1) * sizeof(*km->routes));
    km->items = kapi_alloc(req, (n + 1) * item_size);
    km->errors = kapi_alloc(req, (n + 1) * sizeof(*km->errors));
    if (km->ids == NULL || km->routes == NULL || km->items == NULL || km->errors == NULL)
        return NULL;
    kr->api = km;
    for (uint32_t i = 0; i < n; i++) {
        bool is_bad = false;
        km->ids[i] = kg_cstr(req, names->items[i], &is_bad);
        if (is_bad || km->ids[i] == NULL)
            km->errors[i] = KGERR_INVALID_GROUP_ID;
        else
            km->errors[i] = kg_route(req, km->ids[i], &km->routes[i]);
        if (km->errors[i] == KGERR_NONE && !kg_work_add_item(req, km->routes[i].owner, i, n))
            return NULL;
    }
    return km;
}

void kapi_describe_groups(struct rv_kreq *req)
{
    const struct rv_kp_describe_groups_request *dr = req->msg;
    struct kg_multi *km = kg_multi_new(
        req, &dr->groups, sizeof(struct rv_kp_describe_groups_response_described_group));
    if (km == NULL) {
        kapi_fail(req, "no memory for a describe groups request");
        return;
    }
    struct rv_kp_describe_groups_response_described_group *items = km->items;
    for (int32_t i = 0; i < dr->groups.count; i++) {
        rv_kp_describe_groups_response_described_group_init(&items[i]);
        items[i].group_id = dr->groups.items[i];
        items[i].error_code = km->errors[i];
        items[i].group_state = kg_wire("");
        items[i].protocol_type = kg_wire("");
        items[i].protocol_data = kg_wire("");
        items[i].authorized_operations =
            dr->include_authorized_operations ? KG_GROUP_OPS : INT32_MIN;
    }
    kg_send_all(req, km, kg_describe_run, kg_describe_back);
}

/* ---- DeleteGroups ------------------------------------------------------------------------------- */

struct kg_gdel {
    struct kg_work *w;
    struct kgroup *g;
    int16_t *error;
};

static void kg_gdel_appended(struct kg_append *a, int err)
{
    struct kg_gdel *d = a->arg;
    struct kg_work *w = d->w;
    struct kgroup *g = d->g;
    *d->error = kg_append_error(err);
    if (!g->is_removed && !a->gs->is_closed) {
        if (err < 0)
            g->state = KGROUP_EMPTY; /* still there: it may be deleted again */
        else
            kg_group_remove(a->gs, g);
    }
    kg_group_put(g);
    free(d);
    if (--w->appends == 0)
        kapi_work_done(&w->w);
}

/* Coordinator: tombstones for every offset of g, then for g itself. */
static int kg_gdel_write(struct kg_shard *gs, struct kg_work *w, struct kgroup *g, uint64_t key,
                         int16_t *error)
{
    uint32_t n = g->offset_count + 1, k = 0;
    struct kg_rec *recs = calloc(n, sizeof(*recs));
    struct kg_gdel *d = calloc(1, sizeof(*d));
    struct kg_append *a = kg_append_new(gs, key, kg_gdel_appended, d);
    bool is_oom = recs == NULL || d == NULL || a == NULL;
    uint32_t cursor = 0;
    struct kgroup_offset *chain = NULL, *o;
    while (!is_oom && (o = kgroup_offset_next(g, &cursor, &chain)) != NULL) {
        struct kg_rec *r = &recs[k++];
        r->key_len = (uint32_t)kgroup_offset_key_size(g->id, o->topic);
        r->key = malloc(r->key_len);
        is_oom = r->key == NULL;
        if (!is_oom)
            kgroup_offset_key_encode(r->key, g->id, o->topic, o->partition);
    }
    if (!is_oom) {
        struct kg_rec *r = &recs[k++];
        r->key_len = (uint32_t)kgroup_group_key_size(g->id);
        r->key = malloc(r->key_len);
        is_oom = r->key == NULL;
        if (!is_oom)
            kgroup_group_key_encode(r->key, g->id);
    }
    if (is_oom) {
        free(d);
        free(a);
    } else {
        *d = (struct kg_gdel){.w = w, .g = g, .error = error};
        g->refs++;
        w->appends++;
        kg_append_start(a, recs, k);
    }
    kg_recs_free(recs, k);
    return is_oom ? -ENOMEM : 0;
}

static void kg_gdel_run(void *arg)
{
    struct kg_work *w = arg;
    struct kg_multi *km = w->state;
    w->appends = 1;
    for (uint32_t i = 0; i < w->item_count; i++) {
        uint32_t k = w->items[i];
        int16_t err = KGERR_NONE;
        struct kg_shard *gs = kg_serve(km->routes[k].partition, km->routes[k].key, &err);
        struct kgroup *g = gs != NULL ? kgroup_find(&gs->groups, km->ids[k]) : NULL;
        km->errors[k] = gs == NULL ? err : g == NULL ? KGERR_GROUP_ID_NOT_FOUND : kgroup_delete(g);
        if (km->errors[k] != KGERR_NONE)
            continue;
        if (kg_gdel_write(gs, w, g, km->routes[k].key, &km->errors[k]) < 0) {
            g->state = KGROUP_EMPTY;
            km->errors[k] = KGERR_UNKNOWN_SERVER_ERROR;
        }
    }
    if (--w->appends == 0)
        kapi_work_done(&w->w);
}

static void kg_gdel_back(struct rv_kreq *req)
{
    struct kg_multi *km = ((struct kg_req *)req->state)->api;
    const struct rv_kp_delete_groups_request *dr = req->msg;
    struct rv_kp_delete_groups_response resp;
    rv_kp_delete_groups_response_init(&resp);
    struct rv_kp_delete_groups_response_deletable_group_result *items = km->items;
    for (int32_t i = 0; i < dr->groups_names.count; i++) {
        rv_kp_delete_groups_response_deletable_group_result_init(&items[i]);
        items[i].group_id = dr->groups_names.items[i];
        items[i].error_code = km->errors[i];
    }
    resp.results.count = dr->groups_names.count > 0 ? dr->groups_names.count : 0;
    resp.results.items = items;
    kapi_respond(req, &rv_kp_delete_groups_response_desc, &resp);
}

void kapi_delete_groups(struct rv_kreq *req)
{
    const struct rv_kp_delete_groups_request *dr = req->msg;
    struct kg_multi *km = kg_multi_new(
        req, &dr->groups_names, sizeof(struct rv_kp_delete_groups_response_deletable_group_result));
    if (km == NULL) {
        kapi_fail(req, "no memory for a delete groups request");
        return;
    }
    kg_send_all(req, km, kg_gdel_run, kg_gdel_back);
}
