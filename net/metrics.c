/*
 * net/metrics.c - per-shard counters, their collection over the mailboxes and
 * the Prometheus text format (net/metrics.h).
 *
 * Ownership: a struct metrics_shard belongs to its shard; it is created, read
 * and freed there only (tasks sent by rv_metrics_open, rv_metrics_collect and
 * rv_metrics_close). The thread-local metrics_self is how the hooks find it.
 * A collection (struct metrics_collect) belongs to the collecting thread; the
 * shards write their own parts of it and post its semaphore, which orders
 * their writes before the collector's reads. A collection a shard did not
 * answer in time is abandoned (leaked), never freed under the shard.
 */
#include "net/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/hmap.h"
#include "core/trace.h"
#include "net/kapi.h"
#include "net/kproto.h"
#include "net/kproto_gen.h"
#include "storage/batch.h"
#include "storage/part.h"

RV_STATIC_ASSERT(RV_METRICS_API_SLOTS == RV_KP_API_KEY_MAX + 2);

#define METRICS_UNKNOWN_API (RV_METRICS_API_SLOTS - 1)

const double rv_metrics_latency_le[RV_METRICS_LATENCY_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

/* The same bounds in nanoseconds (the hot path compares integers). */
static const uint64_t metrics_latency_le_ns[RV_METRICS_LATENCY_BUCKETS] = {
    100000,   250000,    500000,    1000000,   2500000,    5000000,    10000000,   25000000,
    50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000, 5000000000, 10000000000,
};

/* A topic's counters on one shard (the live form: no name). */
struct metrics_topic {
    uint32_t topic_id;
    uint64_t bytes_in;
    uint64_t records_in;
    uint64_t batches_in;
    uint64_t bytes_out;
    uint64_t records_out;
};

struct metrics_shard {
    struct rv_metrics_api apis[RV_METRICS_API_SLOTS];
    struct rv_hmap topic_index; /* topic id -> index in topics */
    struct metrics_topic *topics;
    uint32_t topic_count;
    uint32_t topic_cap;
    uint64_t conns_accepted;
    uint64_t conns_closed;
    uint64_t checks_offloaded;
    rv_store_t *st; /* set while serving */
    bool is_serving;
};

static _Thread_local struct metrics_shard *metrics_self;

/* ---- hooks ----------------------------------------------------------------------------------- */

uint64_t rv_metrics_on_request_start(void)
{
    return metrics_self != NULL ? rv_clock_now_ns() : 0;
}

static uint32_t metrics_api_slot(int16_t api_key)
{
    return api_key >= 0 && api_key <= RV_KP_API_KEY_MAX ? (uint32_t)api_key : METRICS_UNKNOWN_API;
}

void rv_metrics_on_request_done(int16_t api_key, uint64_t start_ns, bool is_failed)
{
    struct metrics_shard *m = metrics_self;
    if (m == NULL || start_ns == 0)
        return;
    struct rv_metrics_api *a = &m->apis[metrics_api_slot(api_key)];
    uint64_t now = rv_clock_now_ns();
    uint64_t ns = now > start_ns ? now - start_ns : 0;
    uint32_t b = 0;
    while (b < RV_METRICS_LATENCY_BUCKETS && ns > metrics_latency_le_ns[b])
        b++;
    a->requests++;
    a->errors += is_failed;
    a->sum_ns += ns;
    a->buckets[b]++;
}

/* Whether any ErrorCode field of the struct at msg (desc, version) is not 0. */
static bool metrics_has_error(const struct rv_kp_struct_desc *d, const void *msg, int16_t version)
{
    for (uint32_t i = 0; i < d->field_count; i++) {
        const struct rv_kp_field_desc *f = &d->fields[i];
        if (!rv_kp_vrange_has(f->versions, version))
            continue;
        const char *p = (const char *)msg + f->offset;
        if (f->type == RV_KP_TYPE_INT16) {
            int16_t v;
            memcpy(&v, p, sizeof(v));
            if (v != 0 && strcmp(f->name, "ErrorCode") == 0)
                return true;
        } else if (f->type == RV_KP_TYPE_ARRAY && f->elem_type == RV_KP_TYPE_STRUCT) {
            int32_t count;
            void *items;
            memcpy(&count, p, sizeof(count));
            memcpy(&items, p + offsetof(struct rv_kp_arr_i32, items), sizeof(items));
            for (int32_t k = 0; k < count; k++) {
                if (metrics_has_error(f->sub, (const char *)items + (size_t)k * f->sub->size,
                                      version))
                    return true;
            }
        } else if (f->type == RV_KP_TYPE_STRUCT) {
            const void *sub = p;
            if (f->is_ptr)
                memcpy(&sub, p, sizeof(sub));
            if (sub != NULL && metrics_has_error(f->sub, sub, version))
                return true;
        }
    }
    return false;
}

void rv_metrics_on_response(int16_t api_key, const struct rv_kp_struct_desc *desc, const void *msg,
                            int16_t version)
{
    struct metrics_shard *m = metrics_self;
    if (m == NULL)
        return;
    if (metrics_has_error(desc, msg, version))
        m->apis[metrics_api_slot(api_key)].errors++;
}

/* The counters of a topic on this shard; NULL when out of memory (not counted). */
static struct metrics_topic *metrics_topic(struct metrics_shard *m, uint32_t topic_id)
{
    uint64_t index;
    if (rv_hmap_get(&m->topic_index, topic_id, &index))
        return &m->topics[index];
    if (m->topic_count == m->topic_cap) { /* a topic seen first here: rare */
        uint32_t cap = m->topic_cap == 0 ? 16 : m->topic_cap * 2;
        struct metrics_topic *t = realloc(m->topics, cap * sizeof(*t));
        if (t == NULL)
            return NULL;
        m->topics = t;
        m->topic_cap = cap;
    }
    if (rv_hmap_put(&m->topic_index, topic_id, m->topic_count) < 0)
        return NULL;
    struct metrics_topic *t = &m->topics[m->topic_count++];
    *t = (struct metrics_topic){.topic_id = topic_id};
    return t;
}

static uint32_t metrics_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void rv_metrics_on_produced(uint64_t part_key, const uint8_t *batch, uint32_t len)
{
    struct metrics_shard *m = metrics_self;
    if (m == NULL || batch == NULL || len < RV_BATCH_HEADER_BYTES)
        return;
    struct metrics_topic *t = metrics_topic(m, (uint32_t)(part_key >> 32));
    if (t == NULL)
        return;
    t->bytes_in += len;
    t->records_in += metrics_be32(batch + RV_BATCH_RECORD_COUNT_POS);
    t->batches_in++;
}

void rv_metrics_on_fetched(uint64_t part_key, const struct rv_fetch_slice *slices, uint32_t count)
{
    struct metrics_shard *m = metrics_self;
    if (m == NULL || count == 0)
        return;
    struct metrics_topic *t = metrics_topic(m, (uint32_t)(part_key >> 32));
    if (t == NULL)
        return;
    for (uint32_t s = 0; s < count; s++) {
        const uint8_t *b = slices[s].bytes;
        uint32_t len = slices[s].len;
        t->bytes_out += len;
        /* Whole batches, back to back: only their headers are read. */
        for (uint32_t pos = 0; len - pos >= RV_BATCH_HEADER_BYTES;) {
            uint64_t batch_bytes =
                (uint64_t)metrics_be32(b + pos + RV_BATCH_LENGTH_POS) + RV_BATCH_LOG_OVERHEAD_BYTES;
            if (batch_bytes > len - pos)
                break;
            t->records_out += metrics_be32(b + pos + RV_BATCH_RECORD_COUNT_POS);
            pos += (uint32_t)batch_bytes;
        }
    }
}

void rv_metrics_on_conn_open(void)
{
    if (metrics_self != NULL)
        metrics_self->conns_accepted++;
}

void rv_metrics_on_check_offloaded(void)
{
    if (metrics_self != NULL)
        metrics_self->checks_offloaded++;
}

void rv_metrics_on_conn_close(void)
{
    if (metrics_self != NULL)
        metrics_self->conns_closed++;
}

/* ---- tasks on every shard ---------------------------------------------------------------------- */

/* One task per shard, the caller waiting on a semaphore for all of them. */
struct metrics_each {
    sem_t done;
    rv_store_t *st; /* set_serving */
    int rc;         /* open: the first failure */
};

static void metrics_open_run(void *arg)
{
    struct metrics_each *e = arg;
    struct metrics_shard *m = calloc(1, sizeof(*m));
    int rc = m == NULL ? -ENOMEM : rv_hmap_init(&m->topic_index, 16, true);
    if (rc == 0 && metrics_self == NULL)
        metrics_self = m;
    else
        free(m);
    if (rc < 0)
        e->rc = rc; /* (the shards run one at a time: see metrics_each_run) */
    sem_post(&e->done);
}

static void metrics_close_run(void *arg)
{
    struct metrics_each *e = arg;
    struct metrics_shard *m = metrics_self;
    metrics_self = NULL;
    if (m != NULL) {
        rv_hmap_fini(&m->topic_index);
        free(m->topics);
        free(m);
    }
    sem_post(&e->done);
}

static void metrics_serving_run(void *arg)
{
    struct metrics_each *e = arg;
    if (metrics_self != NULL) {
        metrics_self->st = e->st;
        metrics_self->is_serving = e->st != NULL;
    }
    sem_post(&e->done);
}

/* Run fn on every shard, one after the other. The first submit error. */
static int metrics_each_run(rv_runtime_t *rt, rv_task_fn *fn, struct metrics_each *e)
{
    RV_ASSERT(rv_shard_self() < 0);
    int rc = 0;
    for (uint32_t i = 0; i < rv_runtime_shard_count(rt) && rc == 0; i++) {
        rc = rv_runtime_submit(rt, i, fn, e);
        while (rc == 0 && sem_wait(&e->done) < 0)
            ; /* EINTR */
    }
    return rc;
}

int rv_metrics_open(rv_runtime_t *rt)
{
    struct metrics_each e = {0};
    sem_init(&e.done, 0, 0);
    int rc = metrics_each_run(rt, metrics_open_run, &e);
    if (rc == 0)
        rc = e.rc;
    if (rc < 0)
        (void)metrics_each_run(rt, metrics_close_run, &e); /* best effort: the open failed */
    sem_destroy(&e.done);
    return rc;
}

void rv_metrics_close(rv_runtime_t *rt)
{
    struct metrics_each e = {0};
    sem_init(&e.done, 0, 0);
    /* Only -ESHUTDOWN: the runtime's close then frees nothing of ours; the
     * caller closes us before it. */
    (void)metrics_each_run(rt, metrics_close_run, &e);
    sem_destroy(&e.done);
}

void rv_metrics_set_serving(rv_runtime_t *rt, rv_store_t *st)
{
    struct metrics_each e = {.st = st};
    sem_init(&e.done, 0, 0);
    (void)metrics_each_run(rt, metrics_serving_run, &e); /* -ESHUTDOWN: nobody serves anyway */
    sem_destroy(&e.done);
}

/* ---- collecting -------------------------------------------------------------------------------- */

struct metrics_collect;

/* An open log as its shard read it. */
struct metrics_raw_part {
    uint64_t key; /* topic id << 32 | partition */
    int64_t log_start;
    int64_t log_end;
    uint64_t size_bytes;
};

struct metrics_ask {
    struct metrics_collect *c;
    uint32_t shard;
    uint64_t sent_ns;
    /* The shard's answer beyond the snapshot. */
    struct metrics_raw_part *parts; /* malloc'd */
    uint32_t part_count;
    uint32_t part_cap;
    bool is_capped;
};

struct metrics_collect {
    sem_t done;
    struct rv_metrics_snapshot *snap;
    struct metrics_ask *asks; /* [shard_count] */
    bool is_ready_only;
    rv_store_t *st; /* shard 0's answer */
};

static void metrics_snap_part(void *arg, uint64_t key, rv_plog_t *log)
{
    struct metrics_ask *a = arg;
    if (log == NULL)
        return; /* not opened since the start: counted in the stats, not opened here */
    if (a->part_count == RV_METRICS_PARTITIONS_MAX) {
        a->is_capped = true;
        return;
    }
    if (a->part_count == a->part_cap) {
        uint32_t cap = a->part_cap == 0 ? 64 : a->part_cap * 2;
        struct metrics_raw_part *parts = realloc(a->parts, cap * sizeof(*parts));
        if (parts == NULL) {
            a->is_capped = true; /* out of memory: reported as capped */
            return;
        }
        a->parts = parts;
        a->part_cap = cap;
    }
    a->parts[a->part_count++] = (struct metrics_raw_part){.key = key,
                                                          .log_start = rv_plog_log_start(log),
                                                          .log_end = rv_plog_high_watermark(log),
                                                          .size_bytes = rv_plog_size_bytes(log)};
}

/* On each shard: copy its counters (the collector frees what is malloc'd
 * here: plain malloc, not a pool, so any thread may). */
static void metrics_snap_run(void *arg)
{
    struct metrics_ask *a = arg;
    struct metrics_collect *c = a->c;
    struct rv_metrics_shard_snap *s = &c->snap->shards[a->shard];
    struct metrics_shard *m = metrics_self;
    s->delay_ns = rv_clock_now_ns() - a->sent_ns;
    if (m != NULL) {
        s->has_counters = true;
        s->is_serving = m->is_serving;
        if (a->shard == 0)
            c->st = m->st;
    }
    if (m == NULL || c->is_ready_only) {
        sem_post(&c->done);
        return;
    }
    memcpy(s->apis, m->apis, sizeof(s->apis));
    s->conns_accepted = m->conns_accepted;
    s->conns_closed = m->conns_closed;
    s->checks_offloaded = m->checks_offloaded;
    s->topics = m->topic_count > 0 ? calloc(m->topic_count, sizeof(*s->topics)) : NULL;
    for (uint32_t i = 0; s->topics != NULL && i < m->topic_count; i++) {
        const struct metrics_topic *t = &m->topics[i];
        s->topics[i] = (struct rv_metrics_topic){.topic_id = t->topic_id,
                                                 .bytes_in = t->bytes_in,
                                                 .records_in = t->records_in,
                                                 .batches_in = t->batches_in,
                                                 .bytes_out = t->bytes_out,
                                                 .records_out = t->records_out};
    }
    s->topic_count = s->topics != NULL ? m->topic_count : 0;
    if (m->st != NULL) {
        s->has_storage = true;
        rv_store_shard_stats(m->st, &s->storage);
        rv_store_each_log(m->st, metrics_snap_part, a);
    }
    sem_post(&c->done);
}

/* Wait for `count` answers. -ETIMEDOUT after RV_METRICS_WAIT_MS. */
static int metrics_wait(struct metrics_collect *c, uint32_t count)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += RV_METRICS_WAIT_MS / 1000;
    until.tv_nsec += (long)(RV_METRICS_WAIT_MS % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    for (uint32_t i = 0; i < count; i++) {
        while (sem_timedwait(&c->done, &until) < 0) {
            if (errno == ETIMEDOUT)
                return rv_errf(-ETIMEDOUT, "metrics: a shard did not answer in %u ms",
                               RV_METRICS_WAIT_MS);
        }
    }
    return 0;
}

/* Send metrics_snap_run to every shard; wait for the answers. */
static int metrics_ask_all(rv_runtime_t *rt, struct metrics_collect *c)
{
    uint32_t sent = 0;
    int rc = 0;
    for (uint32_t i = 0; i < c->snap->shard_count && rc == 0; i++) {
        c->asks[i].sent_ns = rv_clock_now_ns();
        rc = rv_runtime_submit(rt, i, metrics_snap_run, &c->asks[i]);
        sent += rc == 0;
    }
    int wait_rc = metrics_wait(c, sent);
    return wait_rc < 0 ? wait_rc : rc;
}

static int metrics_u32_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Parts by topic name (arg: the snapshot), then partition. */
static int metrics_part_cmp(const void *a, const void *b, void *arg)
{
    const struct rv_metrics_snapshot *snap = arg;
    const struct rv_metrics_part *x = a, *y = b;
    if (x->topic_index != y->topic_index) {
        int c = strcmp(snap->topic_names[x->topic_index], snap->topic_names[y->topic_index]);
        if (c != 0)
            return c;
    }
    return x->partition < y->partition ? -1 : x->partition > y->partition;
}

/* Name every topic the shards reported (by id, from the catalog), then merge
 * the open logs into snap->parts. ids: the sorted distinct topic ids. */
static int metrics_collect_parts(struct metrics_collect *c, const uint32_t *ids, uint32_t id_count)
{
    struct rv_metrics_snapshot *snap = c->snap;
    snap->topic_names = calloc(id_count > 0 ? id_count : 1, sizeof(char *));
    if (snap->topic_names == NULL)
        return -ENOMEM;
    snap->topic_name_count = id_count;
    for (uint32_t i = 0; i < id_count; i++) {
        char name[RV_TOPIC_NAME_MAX + 1];
        struct rv_store_topic_info info;
        if (rv_store_topic_by_id(c->st, ids[i], name, &info) < 0)
            continue; /* deleted: its series go */
        snap->topic_names[i] = strdup(name);
        if (snap->topic_names[i] == NULL)
            return -ENOMEM;
    }
    uint32_t total = 0;
    for (uint32_t s = 0; s < snap->shard_count; s++) {
        total += c->asks[s].part_count;
        snap->is_parts_capped |= c->asks[s].is_capped;
        struct rv_metrics_shard_snap *ss = &snap->shards[s];
        for (uint32_t k = 0; k < ss->topic_count; k++) {
            struct rv_metrics_topic *t = &ss->topics[k];
            const uint32_t *at =
                bsearch(&t->topic_id, ids, id_count, sizeof(*ids), metrics_u32_cmp);
            const char *name = at != NULL ? snap->topic_names[at - ids] : NULL;
            snprintf(t->name, sizeof(t->name), "%s", name != NULL ? name : "");
        }
    }
    snap->parts = calloc(total > 0 ? total : 1, sizeof(*snap->parts));
    if (snap->parts == NULL)
        return -ENOMEM;
    for (uint32_t s = 0; s < snap->shard_count; s++) {
        for (uint32_t k = 0; k < c->asks[s].part_count; k++) {
            const struct metrics_raw_part *r = &c->asks[s].parts[k];
            uint32_t id = (uint32_t)(r->key >> 32);
            const uint32_t *at = bsearch(&id, ids, id_count, sizeof(*ids), metrics_u32_cmp);
            if (at == NULL || snap->topic_names[at - ids] == NULL)
                continue;
            snap->parts[snap->part_count++] =
                (struct rv_metrics_part){.topic_index = (uint32_t)(at - ids),
                                         .partition = (int32_t)(uint32_t)r->key,
                                         .shard = s,
                                         .log_start = r->log_start,
                                         .log_end = r->log_end,
                                         .size_bytes = r->size_bytes};
        }
    }
    qsort_r(snap->parts, snap->part_count, sizeof(*snap->parts), metrics_part_cmp, snap);
    if (snap->part_count > RV_METRICS_PARTITIONS_MAX) {
        snap->part_count = RV_METRICS_PARTITIONS_MAX;
        snap->is_parts_capped = true;
    }
    return 0;
}

/* The distinct topic ids the shards reported, sorted, into *out (malloc'd). */
static int metrics_topic_ids(const struct metrics_collect *c, uint32_t **out, uint32_t *out_count)
{
    const struct rv_metrics_snapshot *snap = c->snap;
    size_t n = 0;
    for (uint32_t s = 0; s < snap->shard_count; s++)
        n += (size_t)snap->shards[s].topic_count + c->asks[s].part_count;
    uint32_t *ids = malloc((n > 0 ? n : 1) * sizeof(*ids));
    if (ids == NULL)
        return -ENOMEM;
    size_t k = 0;
    for (uint32_t s = 0; s < snap->shard_count; s++) {
        for (uint32_t i = 0; i < snap->shards[s].topic_count; i++)
            ids[k++] = snap->shards[s].topics[i].topic_id;
        for (uint32_t i = 0; i < c->asks[s].part_count; i++)
            ids[k++] = (uint32_t)(c->asks[s].parts[i].key >> 32);
    }
    qsort(ids, n, sizeof(*ids), metrics_u32_cmp);
    uint32_t count = 0;
    for (size_t i = 0; i < n; i++) {
        if (count == 0 || ids[count - 1] != ids[i])
            ids[count++] = ids[i];
    }
    *out = ids;
    *out_count = count;
    return 0;
}

static void metrics_collect_free(struct metrics_collect *c)
{
    for (uint32_t i = 0; i < c->snap->shard_count; i++)
        free(c->asks[i].parts);
    sem_destroy(&c->done);
    free(c->asks);
    free(c);
}

int rv_metrics_collect(rv_runtime_t *rt, bool is_ready_only, struct rv_metrics_snapshot **out)
{
    RV_ASSERT(rv_shard_self() < 0);
    uint32_t n = rv_runtime_shard_count(rt);
    struct metrics_collect *c = calloc(1, sizeof(*c));
    struct rv_metrics_snapshot *snap = calloc(1, sizeof(*snap));
    struct rv_metrics_shard_snap *shards = calloc(n, sizeof(*shards));
    struct metrics_ask *asks = calloc(n, sizeof(*asks));
    if (c == NULL || snap == NULL || shards == NULL || asks == NULL) {
        free(c);
        free(snap);
        free(shards);
        free(asks);
        return -ENOMEM;
    }
    sem_init(&c->done, 0, 0);
    snap->shard_count = n;
    snap->shards = shards;
    c->snap = snap;
    c->asks = asks;
    c->is_ready_only = is_ready_only;
    for (uint32_t i = 0; i < n; i++)
        asks[i] = (struct metrics_ask){.c = c, .shard = i};
    int rc = metrics_ask_all(rt, c);
    if (rc == -ETIMEDOUT) {
        rv_warn("%s: this scrape's memory is left to it", rv_err_msg());
        return rc; /* a shard may still write into c and snap: never freed */
    }
    snap->is_ready = rc == 0 && n > 0;
    for (uint32_t i = 0; i < n; i++) {
        snap->is_ready &= shards[i].is_serving;
        if (!is_ready_only)
            (void)rv_runtime_shard_stats(rt, i, &shards[i].rt); /* i < n: cannot fail */
    }
    if (rc == 0 && !is_ready_only && c->st != NULL) {
        uint32_t *ids = NULL;
        uint32_t id_count = 0;
        rc = metrics_topic_ids(c, &ids, &id_count);
        if (rc == 0)
            rc = metrics_collect_parts(c, ids, id_count);
        free(ids);
    }
    metrics_collect_free(c);
    if (rc < 0) {
        rv_metrics_snapshot_free(snap);
        return rc;
    }
    *out = snap;
    return 0;
}

void rv_metrics_snapshot_free(struct rv_metrics_snapshot *snap)
{
    if (snap == NULL)
        return;
    for (uint32_t i = 0; i < snap->shard_count; i++)
        free(snap->shards[i].topics);
    free(snap->shards);
    for (uint32_t i = 0; snap->topic_names != NULL && i < snap->topic_name_count; i++)
        free(snap->topic_names[i]);
    free(snap->topic_names);
    free(snap->parts);
    free(snap);
}

/* ---- the text format --------------------------------------------------------------------------- */

const char *rv_metrics_api_name(uint32_t slot)
{
    const struct rv_kp_api *api = slot < METRICS_UNKNOWN_API ? rv_kp_api_find((int16_t)slot) : NULL;
    return api != NULL ? api->name : "unknown";
}

/* A bucket bound as plain decimal text ("0.000025", "2.5", "10"): no exponent. */
static void metrics_le_text(char *buf, size_t cap, double v)
{
    snprintf(buf, cap, "%.6f", v);
    char *end = buf + strlen(buf);
    while (end > buf && end[-1] == '0')
        *--end = '\0';
    if (end > buf && end[-1] == '.')
        *--end = '\0';
}

static void metrics_family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: backslash, double quote and newline escaped. */
static void metrics_label_value(FILE *f, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            fputs("\\\\", f);
        else if (*s == '"')
            fputs("\\\"", f);
        else if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

/* Whether a slot is written: an API we answer, or one that was asked for. */
static bool metrics_api_is_shown(const struct rv_metrics_snapshot *snap, uint32_t slot)
{
    size_t count;
    const struct rv_kapi_api *ours = rv_kapi_supported(&count);
    for (size_t i = 0; i < count; i++) {
        if ((uint32_t)ours[i].api_key == slot)
            return true;
    }
    for (uint32_t i = 0; i < snap->shard_count; i++) {
        if (snap->shards[i].apis[slot].requests > 0 || snap->shards[i].apis[slot].errors > 0)
            return true;
    }
    return false;
}

enum metrics_api_field { METRICS_REQUESTS, METRICS_ERRORS };

static void metrics_write_api_counter(FILE *f, const struct rv_metrics_snapshot *snap,
                                      const char *name, enum metrics_api_field field)
{
    for (uint32_t i = 0; i < snap->shard_count; i++) {
        const struct rv_metrics_shard_snap *s = &snap->shards[i];
        for (uint32_t a = 0; a < RV_METRICS_API_SLOTS; a++) {
            if (!metrics_api_is_shown(snap, a))
                continue;
            uint64_t v = field == METRICS_REQUESTS ? s->apis[a].requests : s->apis[a].errors;
            fprintf(f, "%s{shard=\"%u\",api=\"%s\"} %" PRIu64 "\n", name, i, rv_metrics_api_name(a),
                    v);
        }
    }
}

static void metrics_write_latency(FILE *f, const struct rv_metrics_snapshot *snap)
{
    static const char name[] = "rivven_kafka_request_duration_seconds";
    metrics_family(f, name, "histogram",
                   "Time from a request's frame received to its answer (a long-poll fetch "
                   "includes its wait), by API.");
    for (uint32_t i = 0; i < snap->shard_count; i++) {
        const struct rv_metrics_shard_snap *s = &snap->shards[i];
        for (uint32_t a = 0; a < RV_METRICS_API_SLOTS; a++) {
            if (!metrics_api_is_shown(snap, a))
                continue;
            const struct rv_metrics_api *api = &s->apis[a];
            const char *api_name = rv_metrics_api_name(a);
            uint64_t cum = 0;
            for (uint32_t b = 0; b <= RV_METRICS_LATENCY_BUCKETS; b++) {
                char le[32] = "+Inf";
                if (b < RV_METRICS_LATENCY_BUCKETS)
                    metrics_le_text(le, sizeof(le), rv_metrics_latency_le[b]);
                cum += api->buckets[b];
                fprintf(f, "%s_bucket{shard=\"%u\",api=\"%s\",le=\"%s\"} %" PRIu64 "\n", name, i,
                        api_name, le, cum);
            }
            fprintf(f, "%s_sum{shard=\"%u\",api=\"%s\"} %.9f\n", name, i, api_name,
                    (double)api->sum_ns / 1e9);
            fprintf(f, "%s_count{shard=\"%u\",api=\"%s\"} %" PRIu64 "\n", name, i, api_name, cum);
        }
    }
}

enum metrics_topic_field {
    METRICS_BYTES_IN,
    METRICS_RECORDS_IN,
    METRICS_BATCHES_IN,
    METRICS_BYTES_OUT,
    METRICS_RECORDS_OUT,
};

static uint64_t metrics_topic_value(const struct rv_metrics_topic *t, enum metrics_topic_field k)
{
    switch (k) {
    case METRICS_BYTES_IN: return t->bytes_in;
    case METRICS_RECORDS_IN: return t->records_in;
    case METRICS_BATCHES_IN: return t->batches_in;
    case METRICS_BYTES_OUT: return t->bytes_out;
    case METRICS_RECORDS_OUT: return t->records_out;
    }
    return 0;
}

static void metrics_write_topics(FILE *f, const struct rv_metrics_snapshot *snap)
{
    static const struct {
        const char *name;
        enum metrics_topic_field field;
        const char *help;
    } fams[] = {
        {"rivven_topic_bytes_in_total", METRICS_BYTES_IN,
         "Record batch bytes appended to the topic (produce), on the partition's owner shard."},
        {"rivven_topic_records_in_total", METRICS_RECORDS_IN,
         "Records appended to the topic (the batches' record counts)."},
        {"rivven_topic_batches_in_total", METRICS_BATCHES_IN,
         "Record batches appended to the topic."},
        {"rivven_topic_bytes_out_total", METRICS_BYTES_OUT,
         "Record batch bytes of the topic answered to fetches, on the connection's shard."},
        {"rivven_topic_records_out_total", METRICS_RECORDS_OUT,
         "Records of the batches answered to fetches (whole batches: may start before the "
         "offset asked for)."},
    };
    for (size_t k = 0; k < RV_ARRAY_LEN(fams); k++) {
        metrics_family(f, fams[k].name, "counter", fams[k].help);
        for (uint32_t i = 0; i < snap->shard_count; i++) {
            const struct rv_metrics_shard_snap *s = &snap->shards[i];
            for (uint32_t t = 0; t < s->topic_count; t++) {
                if (s->topics[t].name[0] == '\0')
                    continue;
                fprintf(f, "%s{shard=\"%u\",topic=\"", fams[k].name, i);
                metrics_label_value(f, s->topics[t].name);
                fprintf(f, "\"} %" PRIu64 "\n", metrics_topic_value(&s->topics[t], fams[k].field));
            }
        }
    }
}

enum metrics_part_field { METRICS_LOG_END, METRICS_LOG_START, METRICS_SIZE };

static void metrics_write_parts(FILE *f, const struct rv_metrics_snapshot *snap)
{
    static const struct {
        const char *name;
        enum metrics_part_field field;
        const char *help;
    } fams[] = {
        {"rivven_partition_log_end_offset", METRICS_LOG_END,
         "The partition's log end offset (high watermark: the next offset)."},
        {"rivven_partition_log_start_offset", METRICS_LOG_START,
         "The first offset the partition still stores."},
        {"rivven_partition_size_bytes", METRICS_SIZE, "Bytes of the partition's segments."},
    };
    for (size_t k = 0; k < RV_ARRAY_LEN(fams); k++) {
        metrics_family(f, fams[k].name, "gauge", fams[k].help);
        for (uint32_t i = 0; i < snap->part_count; i++) {
            const struct rv_metrics_part *p = &snap->parts[i];
            if (p->topic_index >= snap->topic_name_count ||
                snap->topic_names[p->topic_index] == NULL)
                continue;
            fprintf(f, "%s{shard=\"%u\",topic=\"", fams[k].name, p->shard);
            metrics_label_value(f, snap->topic_names[p->topic_index]);
            if (fams[k].field == METRICS_SIZE)
                fprintf(f, "\",partition=\"%d\"} %" PRIu64 "\n", p->partition, p->size_bytes);
            else
                fprintf(f, "\",partition=\"%d\"} %" PRId64 "\n", p->partition,
                        fams[k].field == METRICS_LOG_END ? p->log_end : p->log_start);
        }
    }
}

enum metrics_shard_field {
    METRICS_CONNS_OPEN,
    METRICS_CONNS_ACCEPTED,
    METRICS_CONNS_CLOSED,
    METRICS_LOOP_TURNS,
    METRICS_TASKS,
    METRICS_MSGS_SENT,
    METRICS_MSGS_RECEIVED,
    METRICS_WAKEUPS,
    METRICS_SLEEPS,
    METRICS_STALLS,
    METRICS_IO,
    METRICS_TIMERS,
    METRICS_MAILBOX_DEPTH,
    METRICS_CHECKS_OFFLOADED,
};

static uint64_t metrics_shard_value(const struct rv_metrics_shard_snap *s,
                                    enum metrics_shard_field k)
{
    switch (k) {
    case METRICS_CONNS_OPEN:
        return s->conns_accepted >= s->conns_closed ? s->conns_accepted - s->conns_closed : 0;
    case METRICS_CONNS_ACCEPTED: return s->conns_accepted;
    case METRICS_CONNS_CLOSED: return s->conns_closed;
    case METRICS_LOOP_TURNS: return s->rt.loop_turns;
    case METRICS_TASKS: return s->rt.tasks_run;
    case METRICS_MSGS_SENT: return s->rt.msgs_sent;
    case METRICS_MSGS_RECEIVED: return s->rt.msgs_received;
    case METRICS_WAKEUPS: return s->rt.wakeups_sent;
    case METRICS_SLEEPS: return s->rt.sleeps;
    case METRICS_STALLS: return s->rt.stalls;
    case METRICS_IO: return s->rt.io_completed;
    case METRICS_TIMERS: return s->rt.timers_fired;
    case METRICS_MAILBOX_DEPTH: return s->rt.mailbox_depth;
    case METRICS_CHECKS_OFFLOADED: return s->checks_offloaded;
    }
    return 0;
}

static void metrics_write_shards(FILE *f, const struct rv_metrics_snapshot *snap)
{
    static const struct {
        const char *name;
        const char *type;
        enum metrics_shard_field field;
        const char *help;
    } fams[] = {
        {"rivven_connections_open", "gauge", METRICS_CONNS_OPEN,
         "Kafka client connections open on the shard."},
        {"rivven_connections_accepted_total", "counter", METRICS_CONNS_ACCEPTED,
         "Kafka client connections the shard accepted."},
        {"rivven_connections_closed_total", "counter", METRICS_CONNS_CLOSED,
         "Kafka client connections the shard closed."},
        {"rivven_reactor_loop_turns_total", "counter", METRICS_LOOP_TURNS,
         "Turns of the shard's event loop."},
        {"rivven_reactor_tasks_total", "counter", METRICS_TASKS,
         "Tasks the shard ran (local, mailbox, calls and replies)."},
        {"rivven_mailbox_messages_sent_total", "counter", METRICS_MSGS_SENT,
         "Mailbox messages the shard sent to other shards."},
        {"rivven_mailbox_messages_received_total", "counter", METRICS_MSGS_RECEIVED,
         "Mailbox messages (from shards and outside threads) the shard received."},
        {"rivven_reactor_wakeups_sent_total", "counter", METRICS_WAKEUPS,
         "Wake-ups the shard sent to sleeping shards."},
        {"rivven_reactor_sleeps_total", "counter", METRICS_SLEEPS,
         "Times the shard slept in the kernel."},
        {"rivven_reactor_stalls_total", "counter", METRICS_STALLS,
         "Loop turns of the shard longer than the stall threshold (25 ms)."},
        {"rivven_reactor_io_completed_total", "counter", METRICS_IO,
         "File operations the shard completed."},
        {"rivven_reactor_timers_fired_total", "counter", METRICS_TIMERS,
         "Timers that ran on the shard."},
        {"rivven_mailbox_queue_depth", "gauge", METRICS_MAILBOX_DEPTH,
         "Messages from other shards in the shard's mailboxes, not yet run."},
        {"rivven_produce_batches_checked_offshard_total", "counter", METRICS_CHECKS_OFFLOADED,
         "Large compressed produced batches whose records a helper thread checked."},
    };
    for (size_t k = 0; k < RV_ARRAY_LEN(fams); k++) {
        metrics_family(f, fams[k].name, fams[k].type, fams[k].help);
        for (uint32_t i = 0; i < snap->shard_count; i++)
            fprintf(f, "%s{shard=\"%u\"} %" PRIu64 "\n", fams[k].name, i,
                    metrics_shard_value(&snap->shards[i], fams[k].field));
    }
    metrics_family(f, "rivven_mailbox_delay_seconds", "gauge",
                   "How long this scrape's message waited before the shard ran it (the queue "
                   "ahead of it).");
    for (uint32_t i = 0; i < snap->shard_count; i++)
        fprintf(f, "rivven_mailbox_delay_seconds{shard=\"%u\"} %.9f\n", i,
                (double)snap->shards[i].delay_ns / 1e9);
    metrics_family(f, "rivven_shard_serving", "gauge",
                   "1 when the shard recovered its data and listens for clients.");
    for (uint32_t i = 0; i < snap->shard_count; i++)
        fprintf(f, "rivven_shard_serving{shard=\"%u\"} %d\n", i, snap->shards[i].is_serving);
}

enum metrics_store_field {
    METRICS_LOGS,
    METRICS_LOGS_OPEN,
    METRICS_LOGS_UNLOADED,
    METRICS_WAL_APPENDS,
    METRICS_WAL_GROUPS,
    METRICS_WAL_SYNCS,
    METRICS_WAL_BYTES,
    METRICS_WAL_ROLLS,
    METRICS_WAL_FAILURES,
    METRICS_HOT_BYTES,
    METRICS_HOT_BATCHES,
    METRICS_HOT_HITS,
    METRICS_HOT_MISSES,
    METRICS_HOT_EVICTED,
    METRICS_HOT_UNWRITTEN,
    METRICS_HOT_UNWRITTEN_FULL,
    METRICS_FDS_USED,
    METRICS_FDS_BUDGET,
    METRICS_FDS_EVICTIONS,
    METRICS_FDS_WAITS,
    METRICS_CKPTS,
    METRICS_CKPT_FAILURES,
};

static uint64_t metrics_store_value(const struct rv_store_shard_stats *s,
                                    enum metrics_store_field k)
{
    switch (k) {
    case METRICS_LOGS: return s->logs;
    case METRICS_LOGS_OPEN: return s->logs_loaded;
    case METRICS_LOGS_UNLOADED: return s->logs_unloaded;
    case METRICS_WAL_APPENDS: return s->wal.appends;
    case METRICS_WAL_GROUPS: return s->wal.groups;
    case METRICS_WAL_SYNCS: return s->wal.syncs;
    case METRICS_WAL_BYTES: return s->wal.bytes;
    case METRICS_WAL_ROLLS: return s->wal.rolls;
    case METRICS_WAL_FAILURES: return s->wal.failures;
    case METRICS_HOT_BYTES: return s->hot.bytes;
    case METRICS_HOT_BATCHES: return s->hot.batches;
    case METRICS_HOT_HITS: return s->hot.hits;
    case METRICS_HOT_MISSES: return s->hot.misses;
    case METRICS_HOT_EVICTED: return s->hot.evicted;
    case METRICS_HOT_UNWRITTEN: return s->hot.unwritten;
    case METRICS_HOT_UNWRITTEN_FULL: return s->hot.unwritten_full;
    case METRICS_FDS_USED: return s->fds_used;
    case METRICS_FDS_BUDGET: return s->fds_budget;
    case METRICS_FDS_EVICTIONS: return s->fds_evictions;
    case METRICS_FDS_WAITS: return s->fds_waits;
    case METRICS_CKPTS: return s->checkpoints;
    case METRICS_CKPT_FAILURES: return s->checkpoint_failures;
    }
    return 0;
}

/* A histogram of one shard: per-bucket counts (count + 1 buckets, the last
 * above every bound), the bounds as label text. */
static void metrics_write_hist_shard(FILE *f, const char *name, uint32_t shard,
                                     const uint64_t *buckets, const char *const *le, uint32_t count,
                                     double sum)
{
    uint64_t cum = 0;
    for (uint32_t b = 0; b <= count; b++) {
        cum += buckets[b];
        fprintf(f, "%s_bucket{shard=\"%u\",le=\"%s\"} %" PRIu64 "\n", name, shard,
                b < count ? le[b] : "+Inf", cum);
    }
    fprintf(f, "%s_sum{shard=\"%u\"} %.9g\n", name, shard, sum);
    fprintf(f, "%s_count{shard=\"%u\"} %" PRIu64 "\n", name, shard, cum);
}

static void metrics_write_storage(FILE *f, const struct rv_metrics_snapshot *snap)
{
    static const struct {
        const char *name;
        const char *type;
        enum metrics_store_field field;
        const char *help;
    } fams[] = {
        {"rivven_partitions", "gauge", METRICS_LOGS, "Partitions the shard owns."},
        {"rivven_partitions_open", "gauge", METRICS_LOGS_OPEN,
         "Partitions of the shard whose log is open (a log opens on first use)."},
        {"rivven_partitions_unloaded_total", "counter", METRICS_LOGS_UNLOADED,
         "Partition logs unloaded after rivven.log.idle.unload.ms unused."},
        {"rivven_wal_appends_total", "counter", METRICS_WAL_APPENDS,
         "Records appended to the shard's write-ahead log."},
        {"rivven_wal_group_commits_total", "counter", METRICS_WAL_GROUPS,
         "Group commits (one gather write each) of the shard's write-ahead log."},
        {"rivven_wal_fsyncs_total", "counter", METRICS_WAL_SYNCS,
         "fdatasyncs of write-ahead log groups (acks=all)."},
        {"rivven_wal_written_bytes_total", "counter", METRICS_WAL_BYTES,
         "Bytes written to the write-ahead log (record headers included)."},
        {"rivven_wal_rolls_total", "counter", METRICS_WAL_ROLLS, "Write-ahead log file switches."},
        {"rivven_wal_failed_appends_total", "counter", METRICS_WAL_FAILURES,
         "Appends failed by write-ahead log I/O errors."},
        {"rivven_hot_tier_bytes", "gauge", METRICS_HOT_BYTES,
         "Bytes of batches the shard's hot tier holds in memory."},
        {"rivven_hot_tier_batches", "gauge", METRICS_HOT_BATCHES,
         "Batches the shard's hot tier holds."},
        {"rivven_hot_tier_hits_total", "counter", METRICS_HOT_HITS,
         "Fetches answered from memory."},
        {"rivven_hot_tier_misses_total", "counter", METRICS_HOT_MISSES,
         "Fetches that read the disk."},
        {"rivven_hot_tier_evicted_total", "counter", METRICS_HOT_EVICTED,
         "Batches evicted from the hot tier."},
        {"rivven_segment_unwritten_bytes", "gauge", METRICS_HOT_UNWRITTEN,
         "Bytes of batches in the WAL whose segment write has not completed."},
        {"rivven_segment_backlog_refusals_total", "counter", METRICS_HOT_UNWRITTEN_FULL,
         "Appends refused (retried) because segment writes were behind the WAL."},
        {"rivven_log_fds_open", "gauge", METRICS_FDS_USED,
         "Partition log descriptors the shard holds (its descriptor budget's slots taken)."},
        {"rivven_log_fds_budget", "gauge", METRICS_FDS_BUDGET,
         "Partition log descriptors the shard may hold."},
        {"rivven_log_fd_evictions_total", "counter", METRICS_FDS_EVICTIONS,
         "Log descriptors closed to make room under the budget."},
        {"rivven_log_fd_waits_total", "counter", METRICS_FDS_WAITS,
         "Log descriptor opens that waited for a slot."},
        {"rivven_checkpoints_total", "counter", METRICS_CKPTS,
         "Checkpoints written: every log synced, the write-ahead log released up to them."},
        {"rivven_checkpoint_failures_total", "counter", METRICS_CKPT_FAILURES,
         "Checkpoints that failed, or that a failed log being rebuilt held back."},
    };
    for (size_t k = 0; k < RV_ARRAY_LEN(fams); k++) {
        metrics_family(f, fams[k].name, fams[k].type, fams[k].help);
        for (uint32_t i = 0; i < snap->shard_count; i++) {
            if (snap->shards[i].has_storage)
                fprintf(f, "%s{shard=\"%u\"} %" PRIu64 "\n", fams[k].name, i,
                        metrics_store_value(&snap->shards[i].storage, fams[k].field));
        }
    }
    static const char *const group_le[RV_WAL_GROUP_BUCKETS] = {"1",  "2",  "4",   "8",   "16",
                                                               "32", "64", "128", "256", "512"};
    char sync_text[RV_WAL_SYNC_BUCKETS][24];
    const char *sync_le[RV_WAL_SYNC_BUCKETS];
    for (uint32_t b = 0; b < RV_WAL_SYNC_BUCKETS; b++) {
        metrics_le_text(sync_text[b], sizeof(sync_text[b]), rv_wal_sync_le_us[b] / 1e6);
        sync_le[b] = sync_text[b];
    }
    metrics_family(f, "rivven_wal_group_records", "histogram",
                   "Records per write-ahead log group commit (the group commit batch size).");
    for (uint32_t i = 0; i < snap->shard_count; i++) {
        const struct rv_wal_stats *w = &snap->shards[i].storage.wal;
        if (snap->shards[i].has_storage)
            metrics_write_hist_shard(f, "rivven_wal_group_records", i, w->group_buckets, group_le,
                                     RV_WAL_GROUP_BUCKETS, (double)w->group_records_sum);
    }
    metrics_family(f, "rivven_wal_fsync_duration_seconds", "histogram",
                   "Latency of the write-ahead log's group fdatasyncs.");
    for (uint32_t i = 0; i < snap->shard_count; i++) {
        const struct rv_wal_stats *w = &snap->shards[i].storage.wal;
        if (snap->shards[i].has_storage)
            metrics_write_hist_shard(f, "rivven_wal_fsync_duration_seconds", i, w->sync_buckets,
                                     sync_le, RV_WAL_SYNC_BUCKETS, (double)w->sync_ns_sum / 1e9);
    }
}

int rv_metrics_format(const struct rv_metrics_snapshot *snap, FILE *f)
{
    metrics_family(f, "rivven_build_info", "gauge", "The rivven version serving (always 1).");
    fprintf(f, "rivven_build_info{version=\"%d.%d.%d\"} 1\n", RIVVEN_VERSION_MAJOR,
            RIVVEN_VERSION_MINOR, RIVVEN_VERSION_PATCH);
    metrics_family(f, "rivven_ready", "gauge",
                   "1 when every shard recovered and listens (what /ready answers 200 for).");
    fprintf(f, "rivven_ready %d\n", snap->is_ready);
    metrics_family(f, "rivven_shards", "gauge", "Shards (threads, one per core).");
    fprintf(f, "rivven_shards %u\n", snap->shard_count);

    metrics_family(f, "rivven_kafka_requests_total", "counter",
                   "Kafka requests completed (answered, acks=0, or failed), by API.");
    metrics_write_api_counter(f, snap, "rivven_kafka_requests_total", METRICS_REQUESTS);
    metrics_family(f, "rivven_kafka_request_errors_total", "counter",
                   "Kafka requests answered with a non-zero error code, or that closed the "
                   "connection, by API.");
    metrics_write_api_counter(f, snap, "rivven_kafka_request_errors_total", METRICS_ERRORS);
    metrics_write_latency(f, snap);
    metrics_write_topics(f, snap);

    metrics_write_storage(f, snap);
    metrics_family(f, "rivven_partition_series_capped", "gauge",
                   "1 when more partition logs are open than the per-partition series report "
                   "(10000).");
    fprintf(f, "rivven_partition_series_capped %d\n", snap->is_parts_capped);
    metrics_write_parts(f, snap);
    metrics_write_shards(f, snap);
    fflush(f);
    return ferror(f) ? -EIO : 0;
}
