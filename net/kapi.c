/*
 * net/kapi.c - Kafka API dispatch, ApiVersions, responses and hops between
 * shards (see net/kapi.h and net/kapi_impl.h).
 *
 * A request's header and then its body are decoded with the generated codec,
 * which bounds-checks every read, into an arena that lives as long as the
 * request. A response is sized first (the generated _size functions), then
 * encoded once behind its size prefix and header; the records of a fetch are
 * not copied into it but gathered (struct kreq_gather) and sent from where
 * they are. A request is never answered partially.
 */
#include "net/kapi.h"

#include <errno.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/trace.h"
#include "net/kapi_impl.h"
#include "net/metrics.h"
#include "storage/topic.h"

#define KAPI_ARENA_MIN (16u << 10) /* arena bytes beyond the frame's own size */

/* What ApiVersions advertises: exactly what is answered for real. */
struct kapi_entry {
    struct rv_kapi_api api;
    kapi_handler_fn *handler; /* NULL: ApiVersions, answered here */
};

static const struct kapi_entry kapi_table[] = {
    {{RV_KP_API_PRODUCE, 0, 11}, kapi_produce},
    {{RV_KP_API_FETCH, 0, 17}, kapi_fetch},
    {{RV_KP_API_LIST_OFFSETS, 0, 10}, kapi_list_offsets},
    {{RV_KP_API_METADATA, 0, 12}, kapi_metadata},
    {{RV_KP_API_OFFSET_COMMIT, 0, 9}, kapi_offset_commit},
    {{RV_KP_API_OFFSET_FETCH, 0, 9}, kapi_offset_fetch},
    {{RV_KP_API_FIND_COORDINATOR, 0, 6}, kapi_find_coordinator},
    {{RV_KP_API_JOIN_GROUP, 0, 9}, kapi_join_group},
    {{RV_KP_API_HEARTBEAT, 0, 4}, kapi_heartbeat},
    {{RV_KP_API_LEAVE_GROUP, 0, 5}, kapi_leave_group},
    {{RV_KP_API_SYNC_GROUP, 0, 5}, kapi_sync_group},
    {{RV_KP_API_DESCRIBE_GROUPS, 0, 5}, kapi_describe_groups},
    {{RV_KP_API_LIST_GROUPS, 0, 5}, kapi_list_groups},
    {{RV_KP_API_API_VERSIONS, 0, 4}, NULL},
    {{RV_KP_API_CREATE_TOPICS, 0, 7}, kapi_create_topics},
    {{RV_KP_API_DELETE_TOPICS, 0, 6}, kapi_delete_topics},
    {{RV_KP_API_DELETE_RECORDS, 0, 2}, kapi_delete_records},
    {{RV_KP_API_INIT_PRODUCER_ID, 0, 5}, kapi_init_producer_id},
    {{RV_KP_API_OFFSET_FOR_LEADER_EPOCH, 0, 4}, kapi_offset_for_leader_epoch},
    {{RV_KP_API_DESCRIBE_CONFIGS, 0, 4}, kapi_describe_configs},
    {{RV_KP_API_ALTER_CONFIGS, 0, 2}, kapi_alter_configs},
    {{RV_KP_API_DESCRIBE_LOG_DIRS, 0, 4}, kapi_describe_log_dirs},
    {{RV_KP_API_CREATE_PARTITIONS, 0, 3}, kapi_create_partitions},
    {{RV_KP_API_DELETE_GROUPS, 0, 2}, kapi_delete_groups},
    {{RV_KP_API_INCREMENTAL_ALTER_CONFIGS, 0, 1}, kapi_incremental_alter_configs},
    {{RV_KP_API_OFFSET_DELETE, 0, 0}, kapi_offset_delete},
    {{RV_KP_API_DESCRIBE_CLUSTER, 0, 1}, kapi_describe_cluster},
};

static struct rv_kapi_api kapi_supported_list[RV_ARRAY_LEN(kapi_table)];

const struct rv_kapi_api *rv_kapi_supported(size_t *out_count)
{
    /* Sorted by key (the table is written in key order; checked here). */
    for (size_t i = 0; i < RV_ARRAY_LEN(kapi_table); i++) {
        RV_ASSERT(i == 0 || kapi_table[i - 1].api.api_key < kapi_table[i].api.api_key);
        kapi_supported_list[i] = kapi_table[i].api;
    }
    *out_count = RV_ARRAY_LEN(kapi_table);
    return kapi_supported_list;
}

static const struct kapi_entry *kapi_entry_find(int16_t api_key)
{
    for (size_t i = 0; i < RV_ARRAY_LEN(kapi_table); i++) {
        if (kapi_table[i].api.api_key == api_key)
            return &kapi_table[i];
    }
    return NULL;
}

int rv_kapi_out_reserve(struct rv_kapi_out *out, size_t more)
{
    if (out->cap - out->len >= more)
        return 0;
    size_t cap = out->cap < 4096 ? 4096 : out->cap;
    while (cap - out->len < more) {
        if (cap > SIZE_MAX / 2)
            return -ENOMEM;
        cap *= 2;
    }
    uint8_t *data = realloc(out->data, cap);
    if (data == NULL)
        return -ENOMEM;
    out->data = data;
    out->cap = cap;
    return 0;
}

void rv_kapi_out_fini(struct rv_kapi_out *out)
{
    if (out == NULL)
        return;
    free(out->data);
    *out = (struct rv_kapi_out){0};
}

/* ---- completing a request ------------------------------------------------------------------- */

static void kreq_complete(struct rv_kreq *req)
{
    RV_ASSERT(!req->is_done);
    req->is_done = true;
    if (req->ks != NULL) {
        RV_ASSERT(req->ks->pending > 0);
        req->ks->pending--;
    }
    rv_metrics_on_request_done(req->api != NULL ? req->h.request_api_key : -1, req->start_ns,
                               req->err < 0);
    req->done(req->done_arg, req);
}

void kapi_fail(struct rv_kreq *req, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(req->why, sizeof(req->why), fmt, ap);
    va_end(ap);
    req->err = -EPROTO;
    kreq_complete(req);
}

void kapi_no_response(struct rv_kreq *req)
{
    req->resp_total = 0;
    kreq_complete(req);
}

static int kreq_gather(void *ctx, size_t pos, struct rv_kp_bytes records)
{
    struct rv_kreq *req = ctx;
    if (req->gather_count == req->gather_cap) {
        uint32_t cap = req->gather_cap == 0 ? 8 : req->gather_cap * 2;
        struct kreq_gather *g = realloc(req->gathers, cap * sizeof(*g));
        if (g == NULL)
            return -ENOMEM;
        req->gathers = g;
        req->gather_cap = cap;
    }
    if (((uintptr_t)records.ptr & 1u) == 0)
        return -EINVAL; /* only records made by kapi_records_value are gathered */
    req->gathers[req->gather_count++] = (struct kreq_gather){
        .pos = pos, .recs = (const struct kapi_records *)records.ptr, .len = (uint32_t)records.len};
    return 0;
}

/* Encode a response frame: size prefix, header, body; records gathered when
 * is_gather (their bytes are not in resp). */
static int kreq_encode(struct rv_kreq *req, int16_t version, const struct rv_kp_struct_desc *desc,
                       const void *msg, size_t gathered_bytes)
{
    int16_t api_key = req->h.request_api_key;
    int header_version = rv_kp_response_header_version(api_key, version);
    RV_ASSERT(header_version >= 0); /* the key and version were validated */
    size_t body_bytes = desc->size_of(version, msg);
    size_t frame_bytes = 4 + 4 + (header_version >= 1 ? 1 : 0) + body_bytes;
    if (frame_bytes - 4 > INT32_MAX)
        return rv_errf(-EPROTO, "%s v%d: response too large", desc->name, version);
    RV_ASSERT(gathered_bytes <= frame_bytes);
    size_t cap = frame_bytes - gathered_bytes;
    uint8_t *buf = malloc(cap);
    if (buf == NULL)
        return -ENOMEM;
    struct rv_kp_writer w;
    rv_kp_writer_init(&w, buf, cap);
    if (gathered_bytes > 0) {
        w.gather = kreq_gather;
        w.gather_ctx = req;
    }
    int rc = rv_kp_write_i32(&w, (int32_t)(frame_bytes - 4));
    if (rc == 0)
        rc = rv_kp_response_header_build(&w, api_key, version, req->h.correlation_id);
    if (rc == 0)
        rc = desc->encode(&w, version, msg);
    if (rc < 0) { /* a default this version cannot carry: nothing we can send */
        free(buf);
        req->gather_count = 0;
        return rc == -ENOMEM ? rc
                             : rv_errf(-EPROTO, "%s v%d: cannot encode the response: %s",
                                       desc->name, version, rv_strerror(rc));
    }
    RV_ASSERT(w.pos == cap); /* _size and _encode agree */
    free(req->resp);
    req->resp = buf;
    req->resp_len = cap;
    req->resp_total = frame_bytes;
    return 0;
}

static size_t kreq_gathered_bytes(const struct rv_kp_struct_desc *desc, const void *msg,
                                  int16_t version);

void kapi_respond(struct rv_kreq *req, const struct rv_kp_struct_desc *desc, const void *msg)
{
    size_t gathered = kreq_gathered_bytes(desc, msg, req->version);
    int rc = kreq_encode(req, req->version, desc, msg, gathered);
    if (rc < 0) {
        kapi_fail(req, "%s", rc == -ENOMEM ? "no memory for a response" : rv_err_msg());
        return;
    }
    rv_metrics_on_response(req->h.request_api_key, desc, msg, req->version);
    kreq_complete(req);
}

/* Memory beyond the arena: a list freed with the request. */
struct kreq_block {
    struct kreq_block *next;
    max_align_t data[];
};

void *kapi_alloc(struct rv_kreq *req, size_t bytes)
{
    void *p = NULL;
    if (rv_kproto_arena_alloc(&req->arena, bytes, alignof(max_align_t), &p) == 0) {
        memset(p, 0, bytes);
        return p;
    }
    if (bytes > SIZE_MAX - sizeof(struct kreq_block))
        return NULL;
    struct kreq_block *b = calloc(1, sizeof(*b) + bytes);
    if (b == NULL)
        return NULL;
    b->next = req->blocks;
    req->blocks = b;
    return b->data;
}

/* ---- gathered records: which fields of a message are records -------------------------------- */

static size_t kreq_gathered_struct(const struct rv_kp_struct_desc *d, const void *msg,
                                   int16_t version)
{
    size_t n = 0;
    for (uint32_t i = 0; i < d->field_count; i++) {
        const struct rv_kp_field_desc *f = &d->fields[i];
        if (!rv_kp_vrange_has(f->versions, version))
            continue;
        const char *p = (const char *)msg + f->offset;
        if (f->type == RV_KP_TYPE_RECORDS) {
            struct rv_kp_bytes b;
            memcpy(&b, p, sizeof(b));
            if (b.len > 0 && b.ptr != NULL && ((uintptr_t)b.ptr & 1u) == 1u)
                n += (size_t)b.len; /* tagged: a struct kapi_records (see kapi_records_value) */
        } else if (f->type == RV_KP_TYPE_ARRAY && f->elem_type == RV_KP_TYPE_STRUCT) {
            int32_t count;
            void *items;
            memcpy(&count, p, sizeof(count));
            memcpy(&items, p + offsetof(struct rv_kp_arr_i32, items), sizeof(items));
            for (int32_t k = 0; k < count; k++)
                n += kreq_gathered_struct(f->sub, (const char *)items + (size_t)k * f->sub->size,
                                          version);
        } else if (f->type == RV_KP_TYPE_STRUCT && !f->is_ptr) {
            n += kreq_gathered_struct(f->sub, p, version);
        }
    }
    return n;
}

static size_t kreq_gathered_bytes(const struct rv_kp_struct_desc *desc, const void *msg,
                                  int16_t version)
{
    return kreq_gathered_struct(desc, msg, version);
}

/* ---- sending a response --------------------------------------------------------------------- */

int rv_kreq_error(const struct rv_kreq *req)
{
    return req->err;
}

const char *rv_kreq_why(const struct rv_kreq *req)
{
    return req->why;
}

size_t rv_kreq_bytes(const struct rv_kreq *req)
{
    return req->err < 0 ? 0 : req->resp_total;
}

static const struct kapi_records *kreq_recs(const struct kreq_gather *g)
{
    return (const struct kapi_records *)((uintptr_t)g->recs & ~(uintptr_t)1u);
}

int rv_kreq_iov(const struct rv_kreq *req, size_t skip, struct iovec *iov, int max)
{
    int n = 0;
    size_t pos = 0; /* in resp */
    size_t at = 0;  /* in the frame */
    for (uint32_t gi = 0; gi <= req->gather_count && n < max; gi++) {
        size_t end = gi < req->gather_count ? req->gathers[gi].pos : req->resp_len;
        /* resp[pos, end) */
        if (end > pos && at + (end - pos) > skip) {
            size_t off = skip > at ? skip - at : 0;
            iov[n++] =
                (struct iovec){.iov_base = req->resp + pos + off, .iov_len = end - pos - off};
        }
        at += end - pos;
        pos = end;
        if (gi == req->gather_count)
            break;
        const struct kapi_records *r = kreq_recs(&req->gathers[gi]);
        for (uint32_t s = 0; s < r->count && n < max; s++) {
            size_t len = r->slices[s].len;
            if (at + len > skip) {
                size_t off = skip > at ? skip - at : 0;
                iov[n++] = (struct iovec){.iov_base = (void *)(r->slices[s].bytes + off),
                                          .iov_len = len - off};
            }
            at += len;
        }
    }
    return n;
}

void rv_kreq_free(struct rv_kreq *req)
{
    if (req == NULL)
        return;
    RV_ASSERT(req->is_done && !req->is_parked);
    if (req->state_free != NULL)
        req->state_free(req);
    rv_buf_put(req->buf);
    free(req->heap);
    free(req->arena_mem);
    for (struct kreq_block *b = req->blocks, *next; b != NULL; b = next) {
        next = b->next;
        free(b);
    }
    free(req->resp);
    free(req->gathers);
    free(req);
}

/* ---- ApiVersions and what we do not implement ------------------------------------------------- */

/* Kafka's rule for client software names and versions (KIP-511). */
static bool kapi_software_is_valid(struct rv_kp_str s)
{
    if (s.len <= 0)
        return false;
    for (int32_t i = 0; i < s.len; i++) {
        char c = s.ptr[i];
        bool is_alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        bool is_inner = i > 0 && i < s.len - 1;
        if (!is_alnum && !(is_inner && (c == '-' || c == '.')))
            return false;
    }
    return true;
}

static void kapi_api_versions(struct rv_kreq *req, bool is_too_new)
{
    size_t count;
    const struct rv_kapi_api *ours = rv_kapi_supported(&count);
    struct rv_kp_api_versions_response resp;
    rv_kp_api_versions_response_init(&resp);
    struct rv_kp_api_versions_response_version items[RV_ARRAY_LEN(kapi_table)];
    for (size_t i = 0; i < count; i++) {
        rv_kp_api_versions_response_version_init(&items[i]);
        items[i].api_key = ours[i].api_key;
        items[i].min_version = ours[i].version_min;
        items[i].max_version = ours[i].version_max;
    }
    resp.api_keys.count = (int32_t)count;
    resp.api_keys.items = items;
    if (is_too_new) {
        /* Answer in version 0, which every client reads, so it can retry. */
        resp.error_code = RV_KAPI_ERR_UNSUPPORTED_VERSION;
        req->version = 0;
    } else if (req->version >= 3) {
        const struct rv_kp_api_versions_request *r = req->msg;
        if (!kapi_software_is_valid(r->client_software_name) ||
            !kapi_software_is_valid(r->client_software_version)) {
            resp.error_code = RV_KAPI_ERR_INVALID_REQUEST;
            resp.api_keys.count = 0;
        }
    }
    kapi_respond(req, &rv_kp_api_versions_response_desc, &resp);
}

void kapi_unsupported(struct rv_kreq *req)
{
    const struct rv_kp_struct_desc *d = req->api->response;
    const struct rv_kp_field_desc *ec = NULL;
    for (uint32_t i = 0; i < d->field_count && ec == NULL; i++) {
        const struct rv_kp_field_desc *f = &d->fields[i];
        if (strcmp(f->name, "ErrorCode") == 0 && f->type == RV_KP_TYPE_INT16 &&
            rv_kp_vrange_has(f->versions, req->version))
            ec = f;
    }
    if (ec == NULL) {
        kapi_fail(req, "%s v%d correlation %d: not implemented", req->api->name, req->version,
                  req->h.correlation_id);
        return;
    }
    RV_ASSERT(d->align <= alignof(max_align_t));
    void *msg = kapi_alloc(req, d->size);
    if (msg == NULL) {
        kapi_fail(req, "no memory");
        return;
    }
    d->init(msg);
    int16_t code = RV_KAPI_ERR_UNSUPPORTED_VERSION;
    memcpy((char *)msg + ec->offset, &code, sizeof(code));
    kapi_respond(req, d, msg);
}

/* ---- dispatch --------------------------------------------------------------------------------- */

static void kapi_dispatch(struct rv_kreq *req)
{
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, req->frame, req->len);
    rv_kp_request_header_init(&req->h);
    int rc = rv_kp_request_header_parse(&r, &req->h);
    if (rc < 0) {
        if (req->len < 8)
            kapi_fail(req, "a %zu-byte request has no header", req->len);
        else
            kapi_fail(req, "request api key %d version %d correlation %d: bad header: %s",
                      req->h.request_api_key, req->h.request_api_version, req->h.correlation_id,
                      rv_strerror(rc));
        return;
    }
    req->api = rv_kp_api_find(req->h.request_api_key);
    RV_ASSERT(req->api != NULL); /* the header parser refuses unknown keys */
    req->version = req->h.request_api_version;
    const struct kapi_entry *e = kapi_entry_find(req->h.request_api_key);
    if (e != NULL && e->handler == NULL && req->version > e->api.version_max) {
        kapi_api_versions(req, true);
        return;
    }
    if (!rv_kp_api_has_version(req->api, req->version)) {
        kapi_fail(req, "%s v%d correlation %d: no such version", req->api->name, req->version,
                  req->h.correlation_id);
        return;
    }
    if (e == NULL || req->version < e->api.version_min || req->version > e->api.version_max) {
        kapi_unsupported(req); /* its body is never read */
        return;
    }
    /* The body, into an arena sized from the frame (decoded structs are larger
     * than their wire form; a second, larger try covers the rest). */
    const struct rv_kp_struct_desc *d = req->api->request;
    req->arena = (struct rv_kproto_arena){0};
    size_t body_at = r.pos;
    for (int attempt = 0; attempt < 2; attempt++) {
        size_t cap = (attempt == 0 ? 2 : 16) * req->len + KAPI_ARENA_MIN;
        free(req->arena_mem);
        req->arena_mem = malloc(cap);
        if (req->arena_mem == NULL) {
            kapi_fail(req, "no memory to decode a %zu-byte request", req->len);
            return;
        }
        rv_kproto_arena_init(&req->arena, req->arena_mem, cap);
        rc = rv_kproto_arena_alloc(&req->arena, d->size, d->align, &req->msg);
        RV_ASSERT(rc == 0);
        r.pos = body_at;
        rc = d->decode(&r, req->version, req->msg, &req->arena);
        if (rc != -ENOBUFS)
            break;
    }
    if (rc < 0) {
        kapi_fail(req, "%s v%d correlation %d: bad body: %s", req->api->name, req->version,
                  req->h.correlation_id, rv_strerror(rc));
        return;
    }
    if (e->handler != NULL && req->ks == NULL) {
        kapi_unsupported(req); /* no broker behind rv_kapi_handle */
        return;
    }
    if (e->handler == NULL) {
        kapi_api_versions(req, false);
        return;
    }
    e->handler(req);
}

int rv_kapi_request(struct rv_kapi_shard *ks, rv_buf_t *buf, void *heap, uint8_t *frame, size_t len,
                    int32_t node, const char *client_host, rv_kreq_done_fn *done, void *arg,
                    struct rv_kreq **out)
{
    struct rv_kreq *req = calloc(1, sizeof(*req));
    if (req == NULL)
        return -ENOMEM;
    req->ks = ks;
    req->start_ns = rv_metrics_on_request_start();
    req->done = done;
    req->done_arg = arg;
    if (buf != NULL)
        rv_buf_get(buf);
    req->buf = buf;
    req->heap = heap;
    req->frame = frame;
    req->len = len;
    req->node = node;
    req->client_host = client_host != NULL ? client_host : "";
    if (ks != NULL)
        ks->pending++;
    *out = req;
    kapi_dispatch(req);
    return 0;
}

/* ---- synchronous answers -------------------------------------------------------------------- */

static void kapi_sync_done(void *arg, struct rv_kreq *req)
{
    (void)req;
    *(bool *)arg = true;
}

int rv_kapi_handle(const uint8_t *frame, size_t len, struct rv_kapi_out *out)
{
    RV_ASSERT(out != NULL);
    bool is_done = false;
    struct rv_kreq *req;
    /* Decoding never writes the frame: the cast only fits the request's type. */
    int rc = rv_kapi_request(NULL, NULL, NULL, (uint8_t *)(uintptr_t)frame, len, -1, NULL,
                             kapi_sync_done, &is_done, &req);
    if (rc < 0)
        return rc;
    RV_ASSERT(is_done); /* without a store every answer is immediate */
    rc = req->err;
    if (rc < 0) {
        rv_errf(rc, "%s", req->why);
    } else if ((rc = rv_kapi_out_reserve(out, req->resp_total)) == 0) {
        struct iovec iov[64];
        int n = rv_kreq_iov(req, 0, iov, (int)RV_ARRAY_LEN(iov));
        for (int i = 0; i < n; i++) {
            memcpy(out->data + out->len, iov[i].iov_base, iov[i].iov_len);
            out->len += iov[i].iov_len;
        }
    }
    rv_kreq_free(req);
    return rc;
}

/* ---- hops between shards -------------------------------------------------------------------- */

void kapi_works_begin(struct rv_kreq *req, void (*on_done)(struct rv_kreq *req))
{
    req->on_works_done = on_done;
    req->works_pending = 1; /* kapi_works_end drops it */
}

static void kapi_work_back(void *arg)
{
    struct kapi_work *w = arg;
    struct rv_kreq *req = w->req;
    RV_ASSERT(req->works_pending > 0);
    if (--req->works_pending == 0)
        req->on_works_done(req);
}

void kapi_send(struct rv_kreq *req, struct kapi_work *work, uint32_t shard, rv_task_fn *run)
{
    work->req = req;
    work->origin = req->ks->id;
    work->shard = shard;
    work->run = run;
    req->works_pending++;
    if (shard == req->ks->id) {
        run(work);
        return;
    }
    int rc = rv_runtime_submit(req->ks->b->rt, shard, run, work);
    RV_ASSERT(rc == 0); /* shard to shard: only -ENOMEM, which the mailbox does not return */
}

void kapi_works_end(struct rv_kreq *req)
{
    struct kapi_work w = {.req = req};
    kapi_work_back(&w);
}

void kapi_work_done(struct kapi_work *work)
{
    if ((uint32_t)rv_shard_self() == work->origin) {
        kapi_work_back(work);
        return;
    }
    int rc = rv_runtime_submit(work->req->ks->b->rt, work->origin, kapi_work_back, work);
    RV_ASSERT(rc == 0);
}

void kapi_send_parts(struct rv_kreq *req, uint32_t count, const struct kapi_parts_ops *ops,
                     void (*on_done)(struct rv_kreq *req))
{
    uint32_t n = req->ks->b->shard_count;
    kapi_works_begin(req, on_done);
    uint32_t *per = kapi_alloc(req, n * sizeof(*per));
    struct kapi_work **works = kapi_alloc(req, n * sizeof(*works));
    if (per == NULL || works == NULL) {
        for (uint32_t i = 0; i < count; i++)
            ops->place(req, i, NULL);
        kapi_works_end(req);
        return;
    }
    for (uint32_t i = 0; i < count; i++) {
        int s = ops->owner(req, i);
        RV_ASSERT(s < (int64_t)n);
        if (s >= 0)
            per[s]++;
    }
    for (uint32_t s = 0; s < n; s++) {
        if (per[s] > 0)
            works[s] = ops->work_new(req, per[s]); /* NULL: its partitions fail below */
    }
    for (uint32_t i = 0; i < count; i++) {
        int s = ops->owner(req, i);
        if (s >= 0)
            ops->place(req, i, works[s]);
    }
    /* A work exists only for a shard that owns a partition: none goes out empty. */
    for (uint32_t s = 0; s < n; s++) {
        if (works[s] != NULL)
            kapi_send(req, works[s], s, ops->run);
    }
    kapi_works_end(req);
}

/* ---- helpers ---------------------------------------------------------------------------------- */

int16_t kapi_storage_error(int err)
{
    switch (err) {
    case 0: return KERR_NONE;
    case -ENOENT: return KERR_UNKNOWN_TOPIC_OR_PARTITION;
    case -ERANGE: return KERR_OFFSET_OUT_OF_RANGE;
    case -EBADMSG: return KERR_CORRUPT_MESSAGE;
    case -EMSGSIZE: return KERR_MESSAGE_TOO_LARGE;
    case -EINVAL: return KERR_INVALID_RECORD;
    case -EPROTONOSUPPORT: return KERR_UNSUPPORTED_FOR_MESSAGE_FORMAT;
    case -EDOM: return KERR_INVALID_TIMESTAMP;
    case -ETIMEDOUT: return KERR_REQUEST_TIMED_OUT;
    /* Idempotent producers (storage/pstate.h). */
    case -EILSEQ: return KERR_OUT_OF_ORDER_SEQUENCE_NUMBER;
    case -ESTALE: return KERR_INVALID_PRODUCER_EPOCH;
    case -ESRCH: return KERR_UNKNOWN_PRODUCER_ID;
    case -EIO:
    case -ENOSPC:
    case -EDQUOT:
    case -EROFS: return KERR_KAFKA_STORAGE_ERROR;
    default: return KERR_UNKNOWN_SERVER_ERROR;
    }
}

bool kapi_cstr(struct rv_kp_str s, char *buf, size_t cap)
{
    if (s.len < 0 || (size_t)s.len >= cap || memchr(s.ptr, '\0', (size_t)s.len) != NULL)
        return false;
    memcpy(buf, s.ptr, (size_t)s.len);
    buf[s.len] = '\0';
    return true;
}

int kapi_node_shard(const struct rv_kreq *req)
{
    const struct rv_config *cfg = req->ks->b->cfg;
    if (!cfg->is_advertise_shards || req->node < cfg->node_id ||
        req->node - cfg->node_id >= (int32_t)req->ks->b->shard_count)
        return -1;
    return req->node - cfg->node_id;
}

int32_t kapi_leader(const struct rv_kapi_shard *ks, uint32_t shard)
{
    const struct rv_config *cfg = ks->b->cfg;
    return cfg->is_advertise_shards ? cfg->node_id + (int32_t)shard : cfg->node_id;
}

static uint64_t kapi_fnv(const char *s, uint64_t h)
{
    for (; *s != '\0'; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

struct rv_kp_uuid kapi_topic_uuid(uint32_t id, const char *name)
{
    /* Stable across restarts: the topic's id, then a hash of its name. */
    struct rv_kp_uuid u;
    uint64_t a = kapi_fnv(name, 0xcbf29ce484222325ull);
    uint64_t b = kapi_fnv(name, a ^ 0x9e3779b97f4a7c15ull);
    u.bytes[0] = (uint8_t)(id >> 24);
    u.bytes[1] = (uint8_t)(id >> 16);
    u.bytes[2] = (uint8_t)(id >> 8);
    u.bytes[3] = (uint8_t)id;
    for (int i = 0; i < 8; i++)
        u.bytes[4 + i] = (uint8_t)(a >> (8 * i));
    for (int i = 0; i < 4; i++)
        u.bytes[12 + i] = (uint8_t)(b >> (8 * i));
    u.bytes[15] |= 1; /* never the zero uuid, nor Kafka's reserved metadata id */
    return u;
}

int kapi_topic_by_uuid(const struct rv_kapi_shard *ks, const struct rv_kp_uuid *u, char *name,
                       struct rv_store_topic_info *info)
{
    uint32_t id = (uint32_t)u->bytes[0] << 24 | (uint32_t)u->bytes[1] << 16 |
                  (uint32_t)u->bytes[2] << 8 | u->bytes[3];
    if (rv_store_topic_by_id(ks->b->st, id, name, info) < 0)
        return -ENOENT;
    struct rv_kp_uuid want = kapi_topic_uuid(id, name);
    return memcmp(want.bytes, u->bytes, RV_KP_UUID_BYTES) == 0 ? 0 : -ENOENT;
}

void kapi_topic_defaults(const struct rv_kapi_broker *b, struct rv_topic_config *tc)
{
    const struct rv_config *cfg = b->cfg;
    rv_topic_config_init(tc);
    tc->partitions = cfg->num_partitions;
    tc->retention_ms = cfg->log_retention_ms;
    tc->retention_bytes = cfg->log_retention_bytes;
    tc->segment_bytes = cfg->log_segment_bytes;
    tc->segment_ms = cfg->log_roll_ms;
    tc->timestamp_before_max_ms = cfg->log_ts_before_max_ms;
    tc->timestamp_after_max_ms = cfg->log_ts_after_max_ms;
    /* A batch lives in one pool buffer: Kafka's default (1048588) is 76 bytes more. */
    tc->max_message_bytes =
        cfg->message_max_bytes > RV_TOPIC_BATCH_MAX ? RV_TOPIC_BATCH_MAX : cfg->message_max_bytes;
    snprintf(tc->compression, sizeof(tc->compression), "%s", cfg->compression_type);
}

static bool kapi_names_collide(const char *a, const char *b)
{
    for (; *a != '\0' && *b != '\0'; a++, b++) {
        char x = *a == '.' ? '_' : *a, y = *b == '.' ? '_' : *b;
        if (x != y)
            return false;
    }
    return *a == *b;
}

bool kapi_topic_collides(rv_store_t *st, const char *name, char *other)
{
    if (strchr(name, '.') == NULL && strchr(name, '_') == NULL)
        return false;
    char **names = NULL;
    uint32_t count = 0;
    if (rv_topic_list(st, &names, &count) < 0)
        return false; /* no memory: the create itself will say */
    bool is_hit = false;
    for (uint32_t i = 0; i < count && !is_hit; i++) {
        is_hit = strcmp(names[i], name) != 0 && kapi_names_collide(names[i], name);
        if (is_hit)
            snprintf(other, RV_TOPIC_NAME_MAX + 1, "%s", names[i]);
    }
    rv_topic_list_free(names, count);
    return is_hit;
}

int kapi_create_topic_blocking(const struct rv_kapi_broker *b, const char *name, int32_t partitions)
{
    char other[RV_TOPIC_NAME_MAX + 1];
    if (kapi_topic_collides(b->st, name, other))
        return rv_errf(-EINVAL, "topic %s collides with existing topic %s ('.' and '_')", name,
                       other);
    struct rv_topic_config tc;
    kapi_topic_defaults(b, &tc);
    if (partitions > 0)
        tc.partitions = partitions;
    return rv_topic_create(b->st, name, &tc);
}

/* ---- per shard -------------------------------------------------------------------------------- */

int rv_kapi_shard_open(struct rv_kapi_shard **out, const struct rv_kapi_broker *b)
{
    struct rv_kapi_shard *ks = calloc(1, sizeof(*ks));
    if (ks == NULL)
        return -ENOMEM;
    int rc = rv_hmap_init(&ks->watches, 64, true);
    if (rc < 0) {
        free(ks);
        return rc;
    }
    ks->b = b;
    ks->id = (uint32_t)rv_shard_self();
    RV_ASSERT(ks->id < b->shard_count);
    b->shards[ks->id] = ks;
    if (b->st != NULL)
        rv_store_set_append_hook(b->st, kapi_fetch_on_append, ks);
    kgroup_shard_open(ks);
    *out = ks;
    return 0;
}

void rv_kapi_shard_close(struct rv_kapi_shard *ks)
{
    if (ks == NULL)
        return;
    RV_ASSERT(ks->pending == 0 && ks->parked == NULL);
    kgroup_shard_close(ks);
    if (ks->b->st != NULL)
        rv_store_set_append_hook(ks->b->st, NULL, NULL);
    ks->b->shards[ks->id] = NULL;
    rv_hmap_fini(&ks->watches);
    free(ks);
}

uint32_t rv_kapi_shard_pending(const struct rv_kapi_shard *ks)
{
    return ks->pending;
}

void rv_kapi_shard_wake_all(struct rv_kapi_shard *ks)
{
    ks->is_closing = true;
    kapi_fetch_wake_all(ks);
    kgroup_shard_stop(ks);
}
