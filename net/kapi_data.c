/*
 * net/kapi_data.c - the data path APIs: Metadata, Produce, Fetch (long poll),
 * ListOffsets, OffsetForLeaderEpoch, DescribeCluster.
 *
 * Partition requests share one shape. On the connection's shard (the origin)
 * the handler routes every partition of the request (rv_store_lookup) and
 * groups them by owner shard; each owner gets one struct kshard_work with its
 * partitions (one mailbox message, never one per partition), runs the
 * operation on each log, and the work comes back; once every work is back,
 * the origin encodes the response in request order.
 *
 *   origin: route, group ------> owner: rv_store_log, plog op per partition
 *   origin: encode, send <------ owner: every op of the work done
 *
 * Produce appends the received batch in place when the origin owns the
 * partition (shard-aware clients talk to the owner: the bytes go from the
 * receive buffer to the WAL and the segment without a copy); a forwarded
 * batch is copied once into a buffer of the owner's pool, because buffers
 * never change shards while writable (core/buf.h).
 *
 * Fetch answers with the batches where they are (hot tier or disk read
 * buffers, frozen) gathered into the response (net/kapi.h). Below min_bytes it
 * parks: the owner shards note which origin waits for which partition
 * (ks->watches) and wake it after an append; max_wait_ms bounds the wait.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/trace.h"
#include "net/kapi_impl.h"
#include "net/metrics.h"
#include "storage/batch.h"
#include "storage/topic.h"

#define KAPI_RETRY_US 1000 /* storage backpressure: try again after */
/* A compressed batch this large has its records checked on a helper thread
 * (decompressing a big one would hold the shard for milliseconds). */
#define KAPI_CHECK_OFFLOAD_BYTES (64u << 10)
#define KAPI_FETCH_PARTS_MAX     10000 /* partitions one fetch may wait on */

enum kpart_kind {
    KPART_PRODUCE,
    KPART_FETCH,
    KPART_LIST_OFFSETS,
    KPART_LEADER_EPOCH,
};

/* One partition of a request. */
struct kpart {
    struct rv_part_ref ref;
    struct kshard_work *sw;
    int16_t err;
    bool is_routed;
    bool is_missing; /* routing found no such topic (produce may create it) */
    struct rv_kp_str topic;
    int32_t index;
    /* in */
    int64_t offset; /* fetch: from; list offsets: the timestamp */
    uint32_t max_bytes;
    uint8_t *batch; /* produce */
    uint32_t batch_len;
    uint8_t check;                  /* produce: enum kpart_check */
    struct rv_plog_checked checked; /* produce, KPART_CHECK_PASSED: what the check found */
    /* out */
    int64_t result; /* produce: base offset; list offsets: the offset */
    int64_t log_start;
    int64_t high_watermark;
    int64_t append_time; /* produce under LogAppendTime, else -1 */
    char *err_msg;       /* produce: why the storage refused it (malloc'd), or NULL */
    const uint8_t *appended;
    struct rv_plog_fetch f;
    bool has_fetch;
    struct kapi_records recs;
    uint32_t rec_bytes;
};

/* The partitions of a request that one shard owns. */
struct kshard_work {
    struct kapi_work w; /* first */
    uint8_t kind;
    int8_t acks;
    uint32_t count;
    uint32_t next;     /* the next partition to start */
    uint32_t inflight; /* operations started and not done */
    bool is_waiting;   /* a retry or a log load will run kshard_run again */
    bool is_queued;    /* produce: in this owner shard's line (kprod_*) */
    bool has_pending;  /* a timer, log load or helper job will run kshard_retry: once */
    uint64_t deadline_ns;
    struct kpart **parts;
    struct kshard_work *qnext; /* the next in that line */
};

/* What a partition request keeps between its stages. */
struct kparts {
    struct kpart *parts;
    uint32_t count;
    uint8_t kind;
    int8_t acks;
    uint64_t deadline_ns;
    void (*encode)(struct rv_kreq *req);
    /* fetch */
    uint64_t wait_deadline_ns;
    int32_t min_bytes;
    int32_t max_bytes;
    rv_timer_id timer;
    bool has_timer;
    bool is_rerun;
};

static void kparts_release_fetches(struct kparts *kp)
{
    for (uint32_t i = 0; i < kp->count; i++) {
        if (kp->parts[i].has_fetch) {
            rv_plog_fetch_release(&kp->parts[i].f);
            kp->parts[i].has_fetch = false;
        }
    }
}

static void kparts_free(struct rv_kreq *req)
{
    struct kparts *kp = req->state;
    kparts_release_fetches(kp);
    for (uint32_t i = 0; i < kp->count; i++) {
        free(kp->parts[i].err_msg);
        kp->parts[i].err_msg = NULL;
    }
}

/* A storage refusal of p's batch: its error code and, for the response's
 * error_message (v8+), what the storage said (msg: rv_err_msg() of the
 * thread that saw the error, or NULL). No memory for the text: the code
 * alone. */
static void kpart_refused(struct kpart *p, int err, const char *msg)
{
    p->err = kapi_storage_error(err);
    if (msg != NULL && msg[0] != '\0' && p->err_msg == NULL)
        p->err_msg = strdup(msg);
}

/* ---- the owner side ------------------------------------------------------------------------ */

static void kshard_run(void *arg);
static void kshard_retry(void *arg);

/*
 * The owner shard's line of produce work that had to wait (a log being
 * opened, a large batch being checked, or backpressure: a full WAL, no
 * buffer). A produce that arrives while the line holds work for one of its
 * partitions joins the tail instead of starting, and the head, once every
 * partition of it is started, hands over to the next. So a produce never
 * overtakes an earlier one that waits: Kafka appends the requests of a
 * connection in order, and a later batch to the same partition must land
 * after an earlier one. (Work from one connection reaches the owner in
 * order: the origin sends it through one mailbox.) A produce to other
 * partitions goes ahead, so one cold log opening after a restart does not
 * hold up the shard; once in the line, work waits for its turn.
 */
static _Thread_local struct kshard_work *kprod_head;
static _Thread_local struct kshard_work *kprod_tail;

#define KPROD_SCAN_MAX 64 /* a longer line is not searched: anyone joins it */

/* Does work in the line hold one of sw's partitions? */
static bool kprod_conflicts(const struct kshard_work *sw)
{
    uint32_t n = 0;
    for (const struct kshard_work *q = kprod_head; q != NULL; q = q->qnext) {
        if (++n > KPROD_SCAN_MAX)
            return true;
        for (uint32_t i = 0; i < q->count; i++) {
            for (uint32_t j = 0; j < sw->count; j++) {
                if (q->parts[i]->ref.key == sw->parts[j]->ref.key)
                    return true;
            }
        }
    }
    return false;
}

static void kprod_join(struct kshard_work *sw)
{
    if (sw->is_queued)
        return;
    sw->is_queued = true;
    sw->qnext = NULL;
    if (kprod_tail != NULL)
        kprod_tail->qnext = sw;
    else
        kprod_head = sw;
    kprod_tail = sw;
}

/* The head started every partition: the next in line runs on a later turn. */
static void kprod_leave(struct kshard_work *sw)
{
    RV_ASSERT(sw->is_queued && kprod_head == sw);
    kprod_head = sw->qnext;
    if (kprod_head == NULL)
        kprod_tail = NULL;
    sw->is_queued = false;
    sw->qnext = NULL;
    struct kshard_work *next = kprod_head;
    if (next == NULL || next->has_pending)
        return; /* what it waits for runs it, and it is the head then */
    next->has_pending = true;
    if (rv_timer_add(0, kshard_retry, next, NULL) < 0)
        kshard_retry(next); /* no memory for a timer: now, then */
}

static void kshard_check(struct kshard_work *sw)
{
    if (sw->next == sw->count && sw->inflight == 0 && !sw->is_waiting)
        kapi_work_done(&sw->w);
}

static void kshard_retry(void *arg)
{
    struct kshard_work *sw = arg;
    sw->is_waiting = false;
    sw->has_pending = false;
    kshard_run(sw);
}

static void kpart_produced(void *arg, int64_t base)
{
    struct kpart *p = arg;
    struct kshard_work *sw = p->sw;
    if (base < 0) {
        p->err = kapi_storage_error((int)base);
    } else {
        p->result = base;
        rv_metrics_on_produced(p->ref.key, p->appended, p->batch_len);
        if (p->ref.is_log_append_time && p->appended != NULL) {
            int64_t ts = 0;
            for (int i = 0; i < 8; i++)
                ts = ts << 8 | p->appended[RV_BATCH_MAX_TIMESTAMP_POS + i];
            p->append_time = ts;
        }
    }
    sw->inflight--;
    kshard_check(sw);
}

enum kpart_check {
    KPART_CHECK_INLINE = 0, /* the append checks the records (small or uncompressed) */
    KPART_CHECK_RUNNING,    /* a helper thread is checking them */
    KPART_CHECK_PASSED,     /* append with rv_plog_append_checked */
};

enum kpart_start {
    KPART_STARTED, /* or failed: p->err says */
    KPART_RETRY,   /* backpressure: try again later */
    KPART_WAIT,    /* a helper thread checks the batch: kshard_retry comes back */
};

struct kpart_check_job {
    struct kshard_work *sw;
    struct kpart *p;
    struct rv_plog_check params;
    int rc;
    char msg[256]; /* the helper's rv_err_msg() when rc < 0 */
};

static void kpart_check_work(void *arg) /* a helper thread */
{
    struct kpart_check_job *j = arg;
    rv_err_clear();
    j->rc = rv_plog_check_records(&j->params, j->p->batch, j->p->batch_len, &j->p->checked);
    if (j->rc < 0)
        snprintf(j->msg, sizeof(j->msg), "%s", rv_err_msg());
}

static void kpart_check_done(void *arg) /* back on the owner */
{
    struct kpart_check_job *j = arg;
    struct kshard_work *sw = j->sw;
    if (j->rc < 0) {
        kpart_refused(j->p, j->rc, j->msg);
        rv_debug("produce: %.*s-%d: %s", (int)j->p->topic.len, j->p->topic.ptr, j->p->index,
                 j->msg);
    } else {
        j->p->check = KPART_CHECK_PASSED;
    }
    free(j);
    kshard_retry(sw);
}

/* A large compressed batch: check its records on a helper thread first.
 * True when that started (the work waits for it). */
static bool kpart_check_offload(struct kshard_work *sw, struct kpart *p, rv_plog_t *log)
{
    if (p->check != KPART_CHECK_INLINE || p->batch_len < KAPI_CHECK_OFFLOAD_BYTES ||
        p->batch_len <= RV_BATCH_ATTRIBUTES_POS + 1 ||
        (p->batch[RV_BATCH_ATTRIBUTES_POS + 1] & RV_BATCH_ATTR_CODEC_MASK) == RV_CODEC_NONE)
        return false;
    struct kpart_check_job *j = malloc(sizeof(*j));
    if (j == NULL)
        return false; /* checked on the shard, then */
    *j = (struct kpart_check_job){.sw = sw, .p = p};
    rv_plog_check_params(log, &j->params);
    if (rv_offload(kpart_check_work, j, kpart_check_done) < 0) {
        free(j);
        return false;
    }
    p->check = KPART_CHECK_RUNNING;
    rv_metrics_on_check_offloaded();
    return true;
}

/* Start one produce. */
static enum kpart_start kpart_produce(struct kshard_work *sw, struct kpart *p, rv_plog_t *log)
{
    if (kpart_check_offload(sw, p, log))
        return KPART_WAIT;
    struct rv_kreq *req = sw->w.req;
    rv_store_t *st = req->ks->b->st;
    rv_buf_t *buf = NULL;
    uint8_t *bytes = p->batch;
    bool is_local = sw->w.shard == sw->w.origin && req->buf != NULL;
    int rc = 0;
    if (is_local) {
        buf = req->buf;
        rv_buf_get(buf);
    } else {
        rc = rv_buf_alloc(rv_store_pool(st), p->batch_len, &buf);
        if (rc == 0) {
            bytes = rv_buf_data(buf);
            memcpy(bytes, p->batch, p->batch_len);
            rv_buf_set_len(buf, p->batch_len);
        }
    }
    if (rc == 0) {
        p->appended = bytes;
        sw->inflight++;
        int acks = sw->acks == 0 ? RV_ACKS_LEADER : sw->acks;
        rv_err_clear(); /* what rv_err_msg() says after a refusal is about this batch */
        rc = p->check == KPART_CHECK_PASSED
                 ? rv_plog_append_checked(log, buf, bytes, p->batch_len, acks, &p->checked,
                                          kpart_produced, p)
                 : rv_plog_append(log, buf, bytes, p->batch_len, acks, kpart_produced, p);
        if (rc < 0)
            sw->inflight--;
    }
    rv_buf_put(buf); /* the log took its own reference */
    if (rc == -ENOBUFS || rc == -EAGAIN)
        return KPART_RETRY;
    if (rc < 0)
        kpart_refused(p, rc, rv_err_msg());
    return KPART_STARTED;
}

static void kpart_fetched(void *arg, struct rv_plog_fetch *res)
{
    struct kpart *p = arg;
    struct kshard_work *sw = p->sw;
    p->high_watermark = res->high_watermark;
    p->log_start = res->log_start;
    if (res->err < 0) {
        p->err = kapi_storage_error(res->err);
        rv_plog_fetch_release(res);
    } else {
        for (uint32_t i = 0; i < res->slice_count; i++)
            rv_buf_freeze(res->slices[i].buf); /* read on the origin shard */
        p->f = *res;                           /* the references move here */
        p->has_fetch = true;
    }
    sw->inflight--;
    kshard_check(sw);
}

static void kpart_offset_found(void *arg, int64_t offset)
{
    struct kpart *p = arg;
    if (offset < -1)
        p->err = kapi_storage_error((int)offset);
    else
        p->result = offset;
    p->sw->inflight--;
    kshard_check(p->sw);
}

static void kshard_run(void *arg)
{
    struct kshard_work *sw = arg;
    rv_store_t *st = sw->w.req->ks->b->st;
    bool is_produce = sw->kind == KPART_PRODUCE;
    if (is_produce && kprod_head != NULL && kprod_head != sw &&
        (sw->is_queued || kprod_conflicts(sw))) {
        kprod_join(sw); /* behind a produce that waits: its turn comes (kprod_leave) */
        sw->is_waiting = true;
        return;
    }
    while (sw->next < sw->count) {
        struct kpart *p = sw->parts[sw->next];
        rv_plog_t *log = NULL;
        int rc = p->err != 0 ? 0 : rv_store_log(st, p->ref.key, kshard_retry, sw, &log);
        if (rc == 1) {
            sw->is_waiting = true; /* the log is loading: kshard_retry resumes here */
            sw->has_pending = true;
            if (is_produce)
                kprod_join(sw);
            return;
        }
        if (rc < 0)
            p->err = kapi_storage_error(rc);
        if (p->err != 0) {
            sw->next++;
            continue;
        }
        switch (sw->kind) {
        case KPART_PRODUCE: {
            enum kpart_start started = kpart_produce(sw, p, log);
            if (started == KPART_WAIT) {
                sw->is_waiting = true; /* kpart_check_done resumes here */
                sw->has_pending = true;
                kprod_join(sw);
                return;
            }
            if (started == KPART_RETRY) {
                if (rv_clock_now_ns() > sw->deadline_ns) {
                    p->err = KERR_REQUEST_TIMED_OUT;
                    break;
                }
                if (rv_timer_add(KAPI_RETRY_US, kshard_retry, sw, NULL) == 0) {
                    sw->is_waiting = true;
                    sw->has_pending = true;
                    kprod_join(sw);
                    return;
                }
                p->err = KERR_REQUEST_TIMED_OUT;
            }
            break;
        }
        case KPART_FETCH:
            sw->inflight++;
            rv_plog_fetch(log, p->offset, p->max_bytes, kpart_fetched, p);
            break;
        case KPART_LIST_OFFSETS:
            p->log_start = rv_plog_log_start(log);
            p->high_watermark = rv_plog_high_watermark(log);
            if (p->offset == -2) {
                p->result = p->log_start;
            } else if (p->offset == -1) {
                p->result = p->high_watermark;
            } else if (p->offset == -3) { /* max timestamp: the last record, approximately */
                p->result = p->high_watermark > p->log_start ? p->high_watermark - 1 : -1;
            } else if (p->offset < 0) {
                p->err = KERR_INVALID_REQUEST;
            } else {
                sw->inflight++;
                rv_plog_offset_for_time(log, p->offset, kpart_offset_found, p);
            }
            break;
        default: /* KPART_LEADER_EPOCH */
            p->log_start = rv_plog_log_start(log);
            p->high_watermark = rv_plog_high_watermark(log);
            break;
        }
        sw->next++;
    }
    if (sw->is_queued)
        kprod_leave(sw); /* before kshard_check: that may end the request */
    kshard_check(sw);
}

/* ---- the origin side ---------------------------------------------------------------------- */

static void kparts_works_done(struct rv_kreq *req)
{
    struct kparts *kp = req->state;
    kp->encode(req);
}

static int kparts_owner(struct rv_kreq *req, uint32_t i)
{
    const struct kpart *p = &((struct kparts *)req->state)->parts[i];
    return p->is_routed && p->err == 0 ? (int)p->ref.owner : -1;
}

static struct kapi_work *kparts_work_new(struct rv_kreq *req, uint32_t part_count)
{
    const struct kparts *kp = req->state;
    struct kshard_work *sw = kapi_alloc(req, sizeof(*sw));
    struct kpart **parts = kapi_alloc(req, part_count * sizeof(*parts));
    if (sw == NULL || parts == NULL)
        return NULL;
    *sw = (struct kshard_work){
        .kind = kp->kind, .acks = kp->acks, .deadline_ns = kp->deadline_ns, .parts = parts};
    return &sw->w;
}

static void kparts_place(struct rv_kreq *req, uint32_t i, struct kapi_work *w)
{
    struct kpart *p = &((struct kparts *)req->state)->parts[i];
    if (w == NULL) {
        p->err = p->err != 0 ? p->err : KERR_UNKNOWN_SERVER_ERROR;
        return;
    }
    p->sw = (struct kshard_work *)w; /* w is its first member */
    p->sw->parts[p->sw->count++] = p;
}

static const struct kapi_parts_ops kparts_ops = {
    .owner = kparts_owner, .work_new = kparts_work_new, .place = kparts_place, .run = kshard_run};

/* Send every routed partition to its owner, one work per owner shard. */
static void kparts_dispatch(struct rv_kreq *req)
{
    struct kparts *kp = req->state;
    kapi_send_parts(req, kp->count, &kparts_ops, kparts_works_done);
}

static struct kparts *kparts_new(struct rv_kreq *req, uint32_t count, uint8_t kind,
                                 void (*encode)(struct rv_kreq *req))
{
    struct kparts *kp = kapi_alloc(req, sizeof(*kp));
    struct kpart *parts = kapi_alloc(req, (count > 0 ? count : 1) * sizeof(*parts));
    if (kp == NULL || parts == NULL)
        return NULL;
    kp->parts = parts;
    kp->count = count;
    kp->kind = kind;
    kp->encode = encode;
    req->state = kp;
    req->state_free = kparts_free;
    return kp;
}

/* Route a partition by name; sets p->err when it cannot be. */
static void kpart_route(struct rv_kreq *req, struct kpart *p, struct rv_kp_str topic, int32_t index)
{
    p->append_time = -1;
    p->result = -1;
    p->log_start = -1;
    p->high_watermark = -1;
    p->topic = topic;
    p->index = index;
    p->is_missing = false;
    if (topic.len <= 0) {
        p->err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
        return;
    }
    int rc = rv_store_lookup(req->ks->b->st, topic.ptr, (size_t)topic.len, index, &p->ref);
    if (rc == -EINVAL) {
        p->err = KERR_INVALID_TOPIC_EXCEPTION;
    } else if (rc < 0) {
        p->err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
        p->is_missing = rc == -ENOENT;
    } else {
        p->err = 0;
        p->is_routed = true;
    }
}

static uint64_t kapi_deadline(int32_t timeout_ms)
{
    int64_t ms = timeout_ms < 0 ? 0 : timeout_ms;
    return rv_clock_now_ns() + (uint64_t)ms * 1000000ull;
}

/* ---- Produce --------------------------------------------------------------------------------- */

/* Check what we can before the owner sees the batch: one v2 batch, in size. */
static int16_t kapi_produce_check(const struct kpart *p, struct rv_kp_bytes records)
{
    if (records.len <= 0)
        return KERR_INVALID_RECORD; /* Kafka: an empty or null records set */
    if ((uint32_t)records.len < RV_BATCH_HEADER_BYTES)
        return KERR_CORRUPT_MESSAGE;
    const uint8_t *b = records.ptr;
    if (b[RV_BATCH_MAGIC_POS] != RV_BATCH_MAGIC)
        return KERR_UNSUPPORTED_FOR_MESSAGE_FORMAT;
    uint32_t blen = (uint32_t)b[RV_BATCH_LENGTH_POS] << 24 |
                    (uint32_t)b[RV_BATCH_LENGTH_POS + 1] << 16 |
                    (uint32_t)b[RV_BATCH_LENGTH_POS + 2] << 8 | b[RV_BATCH_LENGTH_POS + 3];
    if ((uint64_t)blen + RV_BATCH_LOG_OVERHEAD_BYTES != (uint64_t)records.len)
        return (uint64_t)blen + RV_BATCH_LOG_OVERHEAD_BYTES > (uint64_t)records.len
                   ? KERR_CORRUPT_MESSAGE
                   : KERR_INVALID_RECORD; /* v3+ carries exactly one batch */
    if (records.len > p->ref.max_batch)
        return KERR_MESSAGE_TOO_LARGE;
    return KERR_NONE;
}

static void kapi_produce_encode(struct rv_kreq *req)
{
    struct kparts *kp = req->state;
    const struct rv_kp_produce_request *pr = req->msg;
    if (kp->acks == 0) {
        kapi_no_response(req);
        return;
    }
    struct rv_kp_produce_response resp;
    rv_kp_produce_response_init(&resp);
    resp.responses.count = pr->topic_data.count;
    resp.responses.items =
        kapi_alloc(req, (size_t)(pr->topic_data.count > 0 ? pr->topic_data.count : 1) *
                            sizeof(*resp.responses.items));
    if (resp.responses.items == NULL) {
        kapi_fail(req, "no memory for a produce response");
        return;
    }
    uint32_t k = 0;
    for (int32_t t = 0; t < pr->topic_data.count; t++) {
        const struct rv_kp_produce_request_topic_produce_data *td = &pr->topic_data.items[t];
        struct rv_kp_produce_response_topic_produce_response *tr = &resp.responses.items[t];
        rv_kp_produce_response_topic_produce_response_init(tr);
        tr->name = td->name;
        tr->partition_responses.count = td->partition_data.count;
        tr->partition_responses.items =
            kapi_alloc(req, (size_t)(td->partition_data.count > 0 ? td->partition_data.count : 1) *
                                sizeof(*tr->partition_responses.items));
        if (tr->partition_responses.items == NULL) {
            kapi_fail(req, "no memory for a produce response");
            return;
        }
        for (int32_t i = 0; i < td->partition_data.count; i++, k++) {
            struct kpart *p = &kp->parts[k];
            struct rv_kp_produce_response_partition_produce_response *r =
                &tr->partition_responses.items[i];
            rv_kp_produce_response_partition_produce_response_init(r);
            r->index = td->partition_data.items[i].index;
            r->error_code = p->err;
            r->base_offset = p->err == 0 ? p->result : -1;
            r->log_append_time_ms = p->err == 0 ? p->append_time : -1;
            r->log_start_offset = -1;
            if (p->err != 0 && p->err_msg != NULL)
                r->error_message =
                    (struct rv_kp_str){.ptr = p->err_msg, .len = (int32_t)strlen(p->err_msg)};
        }
    }
    kapi_respond(req, &rv_kp_produce_response_desc, &resp);
}

/* Helper thread: create the topics a produce names that do not exist. */
static void kapi_produce_create(void *arg)
{
    struct rv_kreq *req = arg;
    struct kparts *kp = req->state;
    for (uint32_t i = 0; i < kp->count; i++) {
        struct kpart *p = &kp->parts[i];
        char name[RV_TOPIC_NAME_MAX + 1];
        if (!p->is_missing || !kapi_cstr(p->topic, name, sizeof(name)))
            continue;
        bool is_done = false; /* an earlier partition of the same topic created it */
        for (uint32_t k = 0; k < i && !is_done; k++)
            is_done = kp->parts[k].is_missing && kp->parts[k].topic.len == p->topic.len &&
                      memcmp(kp->parts[k].topic.ptr, p->topic.ptr, (size_t)p->topic.len) == 0;
        if (is_done)
            continue;
        int rc = kapi_create_topic_blocking(req->ks->b, name, 0);
        if (rc < 0 && rc != -EEXIST)
            rv_warn("auto-creating topic %s: %s", name, rv_err_msg());
    }
}

/* Back on the shard: route what was missing again, then produce. */
static void kapi_produce_created(void *arg)
{
    struct rv_kreq *req = arg;
    struct kparts *kp = req->state;
    const struct rv_kp_produce_request *pr = req->msg;
    uint32_t k = 0;
    for (int32_t t = 0; t < pr->topic_data.count; t++) {
        const struct rv_kp_produce_request_topic_produce_data *td = &pr->topic_data.items[t];
        for (int32_t i = 0; i < td->partition_data.count; i++, k++) {
            struct kpart *p = &kp->parts[k];
            if (!p->is_missing)
                continue;
            const struct rv_kp_produce_request_partition_produce_data *pd =
                &td->partition_data.items[i];
            kpart_route(req, p, p->topic, p->index);
            if (p->err == 0)
                p->err = kapi_produce_check(p, pd->records);
            if (p->err == 0) {
                p->batch = (uint8_t *)(uintptr_t)pd->records.ptr;
                p->batch_len = (uint32_t)pd->records.len;
            }
        }
    }
    kparts_dispatch(req);
}

/* Start creating the missing topics (auto.create.topics.enable); false when
 * there are none or they may not be created. */
static bool kapi_produce_create_missing(struct rv_kreq *req)
{
    struct kparts *kp = req->state;
    if (!req->ks->b->cfg->is_auto_create_topics)
        return false;
    bool has_missing = false;
    for (uint32_t i = 0; i < kp->count && !has_missing; i++)
        has_missing = kp->parts[i].is_missing;
    return has_missing && rv_offload(kapi_produce_create, req, kapi_produce_created) == 0;
}

void kapi_produce(struct rv_kreq *req)
{
    const struct rv_kp_produce_request *pr = req->msg;
    uint32_t count = 0;
    for (int32_t t = 0; t < pr->topic_data.count; t++)
        count += (uint32_t)pr->topic_data.items[t].partition_data.count;
    struct kparts *kp = kparts_new(req, count, KPART_PRODUCE, kapi_produce_encode);
    if (kp == NULL) {
        kapi_fail(req, "no memory for a produce of %u partitions", count);
        return;
    }
    kp->acks = (int8_t)pr->acks;
    kp->deadline_ns = kapi_deadline(pr->timeout_ms);
    bool is_acks_ok = pr->acks == 0 || pr->acks == 1 || pr->acks == -1;
    uint32_t k = 0;
    for (int32_t t = 0; t < pr->topic_data.count; t++) {
        const struct rv_kp_produce_request_topic_produce_data *td = &pr->topic_data.items[t];
        for (int32_t i = 0; i < td->partition_data.count; i++, k++) {
            struct kpart *p = &kp->parts[k];
            const struct rv_kp_produce_request_partition_produce_data *pd =
                &td->partition_data.items[i];
            kpart_route(req, p, td->name, pd->index);
            if (!is_acks_ok)
                p->err = KERR_INVALID_REQUIRED_ACKS;
            if (p->err == 0)
                p->err = kapi_produce_check(p, pd->records);
            if (p->err == 0) {
                /* The frame is ours to write: the owner stamps offsets in place. */
                p->batch = (uint8_t *)(uintptr_t)pd->records.ptr;
                p->batch_len = (uint32_t)pd->records.len;
            }
        }
    }
    if (!is_acks_ok)
        kp->acks = 1; /* answer the error */
    if (is_acks_ok && kapi_produce_create_missing(req))
        return; /* kapi_produce_created dispatches */
    kparts_dispatch(req);
}

/* ---- Fetch ----------------------------------------------------------------------------------- */

static void kapi_fetch_start(struct rv_kreq *req);

/* A wake-up for a parked fetch, sent by an owner to the origin. */
struct kwake {
    const struct rv_kapi_broker *b;
    uint32_t shard; /* the origin */
    uint64_t key;
};

/* A watch request, sent by the origin to an owner. */
struct kwatch {
    const struct rv_kapi_broker *b;
    uint32_t origin;
    uint32_t owner;
    uint32_t count;
    uint64_t keys[];
    /* then int64_t offsets[count] */
};

static void kapi_fetch_unpark(struct rv_kreq *req)
{
    struct kparts *kp = req->state;
    struct rv_kapi_shard *ks = req->ks;
    if (!req->is_parked)
        return;
    req->is_parked = false;
    if (req->park_prev != NULL)
        req->park_prev->park_next = req->park_next;
    else
        ks->parked = req->park_next;
    if (req->park_next != NULL)
        req->park_next->park_prev = req->park_prev;
    req->park_prev = req->park_next = NULL;
    if (kp->has_timer) {
        (void)rv_timer_cancel(kp->timer); /* -ENOENT when it is the one running */
        kp->has_timer = false;
    }
}

static void kapi_fetch_rerun(struct rv_kreq *req)
{
    kapi_fetch_unpark(req);
    kapi_fetch_start(req);
}

static void kapi_fetch_timeout(void *arg)
{
    struct rv_kreq *req = arg;
    struct kparts *kp = req->state;
    kp->has_timer = false;
    if (req->is_parked)
        kapi_fetch_rerun(req);
}

/* Origin: a log one of our parked fetches waits on grew. */
static void kapi_fetch_wake(void *arg)
{
    struct kwake *wk = arg;
    uint64_t key = wk->key;
    struct rv_kapi_shard *ks = wk->b->shards[wk->shard];
    free(wk);
    if (ks == NULL)
        return;
    for (struct rv_kreq *req = ks->parked, *next; req != NULL; req = next) {
        next = req->park_next;
        struct kparts *kp = req->state;
        for (uint32_t i = 0; i < kp->count; i++) {
            if (kp->parts[i].is_routed && kp->parts[i].ref.key == key) {
                kapi_fetch_rerun(req); /* may park it again: at the list's head */
                break;
            }
        }
    }
}

static void kapi_wake_send(struct rv_kapi_shard *ks, uint32_t origin, uint64_t key)
{
    struct kwake *wk = malloc(sizeof(*wk));
    if (wk == NULL)
        return; /* the waiter's timer answers it */
    *wk = (struct kwake){.b = ks->b, .shard = origin, .key = key};
    /* Always as a task, also on this shard: the waker may be inside the
     * fetch it wakes (parking it, or appending). */
    if (rv_runtime_submit(ks->b->rt, origin, kapi_fetch_wake, wk) < 0)
        free(wk);
}

void kapi_fetch_on_append(void *ctx, uint64_t key)
{
    struct rv_kapi_shard *ks = ctx;
    uint64_t mask;
    if (ks == NULL || !rv_hmap_del(&ks->watches, key, &mask))
        return;
    for (uint32_t s = 0; s < ks->b->shard_count && s < 64; s++) {
        if ((mask & (1ull << s)) != 0)
            kapi_wake_send(ks, s, key);
    }
}

/* Owner: note who waits for these logs; wake at once if one grew past what
 * the fetch saw already (offsets[] holds the high watermark it saw). */
static void kapi_watch_run(void *arg)
{
    struct kwatch *w = arg;
    struct rv_kapi_shard *ks = w->b->shards[w->owner];
    const int64_t *offsets = (const int64_t *)&w->keys[w->count];
    for (uint32_t i = 0; i < w->count && ks != NULL; i++) {
        rv_plog_t *log = NULL;
        if (rv_store_log(w->b->st, w->keys[i], NULL, NULL, &log) == 0 &&
            rv_plog_high_watermark(log) > offsets[i]) {
            kapi_wake_send(ks, w->origin, w->keys[i]);
            continue;
        }
        uint64_t mask = 0;
        (void)rv_hmap_get(&ks->watches, w->keys[i], &mask);
        if (rv_hmap_put(&ks->watches, w->keys[i], mask | 1ull << w->origin) < 0)
            kapi_wake_send(ks, w->origin, w->keys[i]); /* no room: let it fetch again */
    }
    free(w);
}

/* Park a fetch below min_bytes until data or its deadline. */
static bool kapi_fetch_park(struct rv_kreq *req)
{
    struct kparts *kp = req->state;
    struct rv_kapi_shard *ks = req->ks;
    uint64_t now = rv_clock_now_ns();
    if (ks->is_closing || now >= kp->wait_deadline_ns || ks->b->shard_count > 64)
        return false;
    if (rv_timer_add((kp->wait_deadline_ns - now) / 1000 + 1, kapi_fetch_timeout, req, &kp->timer) <
        0)
        return false;
    kp->has_timer = true;
    req->is_parked = true;
    req->park_prev = NULL;
    req->park_next = ks->parked;
    if (ks->parked != NULL)
        ks->parked->park_prev = req;
    ks->parked = req;
    /* One watch message per owner shard. */
    for (uint32_t s = 0; s < ks->b->shard_count; s++) {
        uint32_t n = 0;
        for (uint32_t i = 0; i < kp->count; i++)
            n += kp->parts[i].is_routed && kp->parts[i].err == 0 && kp->parts[i].ref.owner == s;
        if (n == 0)
            continue;
        struct kwatch *w = malloc(sizeof(*w) + n * (sizeof(uint64_t) + sizeof(int64_t)));
        if (w == NULL)
            continue; /* the timer answers */
        *w = (struct kwatch){.b = ks->b, .origin = ks->id, .owner = s, .count = n};
        int64_t *offsets = (int64_t *)&w->keys[n];
        uint32_t j = 0;
        for (uint32_t i = 0; i < kp->count; i++) {
            struct kpart *p = &kp->parts[i];
            if (p->is_routed && p->err == 0 && p->ref.owner == s) {
                /* Wake when the log grows past what this fetch saw of it. */
                w->keys[j] = p->ref.key;
                offsets[j++] = p->high_watermark > p->offset ? p->high_watermark : p->offset;
            }
        }
        if (rv_runtime_submit(ks->b->rt, s, kapi_watch_run, w) < 0)
            free(w);
    }
    return true;
}

void kapi_fetch_wake_all(struct rv_kapi_shard *ks)
{
    while (ks->parked != NULL)
        kapi_fetch_rerun(ks->parked); /* is_closing: it answers now */
}

/* Apply the request's max_bytes (the first partition with data always
 * counts): the records each partition answers with. Returns their total;
 * *has_error tells whether a partition failed. */
static uint64_t kapi_fetch_trim(struct kparts *kp, bool *has_error)
{
    uint64_t total = 0;
    *has_error = false;
    for (uint32_t i = 0; i < kp->count; i++) {
        struct kpart *p = &kp->parts[i];
        *has_error |= p->err != 0;
        p->rec_bytes = 0;
        if (!p->has_fetch)
            continue;
        uint64_t bytes = 0;
        for (uint32_t s = 0; s < p->f.slice_count; s++)
            bytes += p->f.slices[s].len;
        if (total > 0 && total + bytes > (uint64_t)kp->max_bytes) {
            rv_plog_fetch_release(&p->f);
            p->has_fetch = false;
            continue;
        }
        total += bytes;
        p->rec_bytes = (uint32_t)bytes;
        p->recs = (struct kapi_records){.count = p->f.slice_count, .slices = p->f.slices};
    }
    return total;
}

static void kapi_fetch_encode(struct rv_kreq *req)
{
    struct kparts *kp = req->state;
    const struct rv_kp_fetch_request *fr = req->msg;
    bool has_error;
    uint64_t total = kapi_fetch_trim(kp, &has_error);
    if (!has_error && total < (uint64_t)(kp->min_bytes > 0 ? kp->min_bytes : 0) &&
        kapi_fetch_park(req)) {
        kparts_release_fetches(kp);
        return;
    }
    struct rv_kp_fetch_response resp;
    rv_kp_fetch_response_init(&resp);
    resp.session_id = 0; /* sessions declined: every fetch is a full one */
    resp.responses.count = fr->topics.count;
    resp.responses.items = kapi_alloc(req, (size_t)(fr->topics.count > 0 ? fr->topics.count : 1) *
                                               sizeof(*resp.responses.items));
    if (resp.responses.items == NULL) {
        kapi_fail(req, "no memory for a fetch response");
        return;
    }
    uint32_t k = 0;
    for (int32_t t = 0; t < fr->topics.count; t++) {
        const struct rv_kp_fetch_request_topic *ft = &fr->topics.items[t];
        struct rv_kp_fetch_response_fetchable_topic_response *tr = &resp.responses.items[t];
        rv_kp_fetch_response_fetchable_topic_response_init(tr);
        tr->topic = ft->topic;
        tr->topic_id = ft->topic_id;
        tr->partitions.count = ft->partitions.count;
        tr->partitions.items =
            kapi_alloc(req, (size_t)(ft->partitions.count > 0 ? ft->partitions.count : 1) *
                                sizeof(*tr->partitions.items));
        if (tr->partitions.items == NULL) {
            kapi_fail(req, "no memory for a fetch response");
            return;
        }
        for (int32_t i = 0; i < ft->partitions.count; i++, k++) {
            struct kpart *p = &kp->parts[k];
            struct rv_kp_fetch_response_partition_data *pd = &tr->partitions.items[i];
            rv_kp_fetch_response_partition_data_init(pd);
            pd->partition_index = ft->partitions.items[i].partition;
            pd->error_code = p->err;
            pd->high_watermark = p->high_watermark;
            pd->last_stable_offset = p->high_watermark;
            pd->log_start_offset = p->log_start;
            pd->preferred_read_replica = -1;
            pd->records = kapi_records_value(&p->recs, p->rec_bytes);
            rv_metrics_on_fetched(p->ref.key, p->f.slices, p->rec_bytes > 0 ? p->f.slice_count : 0);
        }
    }
    kapi_respond(req, &rv_kp_fetch_response_desc, &resp);
}

static void kapi_fetch_start(struct rv_kreq *req)
{
    struct kparts *kp = req->state;
    kparts_release_fetches(kp);
    for (uint32_t i = 0; i < kp->count; i++) {
        struct kpart *p = &kp->parts[i];
        if (p->is_routed)
            p->err = 0;
    }
    kparts_dispatch(req);
}

void kapi_fetch(struct rv_kreq *req)
{
    const struct rv_kp_fetch_request *fr = req->msg;
    uint32_t count = 0;
    for (int32_t t = 0; t < fr->topics.count; t++)
        count += (uint32_t)fr->topics.items[t].partitions.count;
    struct kparts *kp = kparts_new(req, count, KPART_FETCH, kapi_fetch_encode);
    if (kp == NULL) {
        kapi_fail(req, "no memory for a fetch of %u partitions", count);
        return;
    }
    if (fr->session_id != 0) {
        /* We never hand out a session, so the client's is not ours. */
        struct rv_kp_fetch_response resp;
        rv_kp_fetch_response_init(&resp);
        resp.error_code = KERR_FETCH_SESSION_ID_NOT_FOUND;
        kapi_respond(req, &rv_kp_fetch_response_desc, &resp);
        return;
    }
    kp->min_bytes = fr->min_bytes;
    kp->max_bytes = req->version >= 3 && fr->max_bytes > 0 ? fr->max_bytes : INT32_MAX;
    kp->wait_deadline_ns = kapi_deadline(fr->max_wait_ms);
    uint32_t k = 0;
    for (int32_t t = 0; t < fr->topics.count; t++) {
        const struct rv_kp_fetch_request_topic *ft = &fr->topics.items[t];
        struct rv_kp_str name = ft->topic;
        char buf[RV_TOPIC_NAME_MAX + 1];
        bool is_unknown_id = false;
        if (req->version >= 13) {
            struct rv_store_topic_info info;
            if (kapi_topic_by_uuid(req->ks, &ft->topic_id, buf, &info) == 0)
                name = (struct rv_kp_str){.ptr = buf, .len = (int32_t)strlen(buf)};
            else
                is_unknown_id = true;
        }
        for (int32_t i = 0; i < ft->partitions.count; i++, k++) {
            struct kpart *p = &kp->parts[k];
            const struct rv_kp_fetch_request_partition *fp = &ft->partitions.items[i];
            kpart_route(req, p, name, fp->partition);
            if (is_unknown_id)
                p->err = KERR_UNKNOWN_TOPIC_ID;
            p->offset = fp->fetch_offset;
            p->max_bytes = fp->partition_max_bytes > 0 ? (uint32_t)fp->partition_max_bytes : 1;
        }
    }
    kapi_fetch_start(req);
}

/* ---- ListOffsets ------------------------------------------------------------------------------ */

static void kapi_list_offsets_encode(struct rv_kreq *req)
{
    struct kparts *kp = req->state;
    const struct rv_kp_list_offsets_request *lr = req->msg;
    struct rv_kp_list_offsets_response resp;
    rv_kp_list_offsets_response_init(&resp);
    resp.topics.count = lr->topics.count;
    resp.topics.items = kapi_alloc(req, (size_t)(lr->topics.count > 0 ? lr->topics.count : 1) *
                                            sizeof(*resp.topics.items));
    if (resp.topics.items == NULL) {
        kapi_fail(req, "no memory for a list offsets response");
        return;
    }
    uint32_t k = 0;
    for (int32_t t = 0; t < lr->topics.count; t++) {
        const struct rv_kp_list_offsets_request_topic *lt = &lr->topics.items[t];
        struct rv_kp_list_offsets_response_topic_response *tr = &resp.topics.items[t];
        rv_kp_list_offsets_response_topic_response_init(tr);
        tr->name = lt->name;
        tr->partitions.count = lt->partitions.count;
        tr->partitions.items =
            kapi_alloc(req, (size_t)(lt->partitions.count > 0 ? lt->partitions.count : 1) *
                                sizeof(*tr->partitions.items));
        int64_t *olds = kapi_alloc(
            req, (size_t)(lt->partitions.count > 0 ? lt->partitions.count : 1) * sizeof(int64_t));
        if (tr->partitions.items == NULL || olds == NULL) {
            kapi_fail(req, "no memory for a list offsets response");
            return;
        }
        for (int32_t i = 0; i < lt->partitions.count; i++, k++) {
            struct kpart *p = &kp->parts[k];
            struct rv_kp_list_offsets_response_partition_response *r = &tr->partitions.items[i];
            rv_kp_list_offsets_response_partition_response_init(r);
            r->partition_index = lt->partitions.items[i].partition_index;
            r->error_code = p->err;
            r->timestamp = -1;
            r->offset = p->err == 0 && req->version >= 1 ? p->result : -1;
            r->leader_epoch = p->err == 0 && req->version >= 4 ? 0 : -1;
            if (req->version == 0) {
                /* v0: a list of offsets (at most max_num_offsets); we know one. */
                bool has_one =
                    p->err == 0 && p->result >= 0 && lt->partitions.items[i].max_num_offsets > 0;
                olds[i] = p->result;
                r->old_style_offsets.count = has_one ? 1 : 0;
                r->old_style_offsets.items = &olds[i];
            }
        }
    }
    kapi_respond(req, &rv_kp_list_offsets_response_desc, &resp);
}

void kapi_list_offsets(struct rv_kreq *req)
{
    const struct rv_kp_list_offsets_request *lr = req->msg;
    uint32_t count = 0;
    for (int32_t t = 0; t < lr->topics.count; t++)
        count += (uint32_t)lr->topics.items[t].partitions.count;
    struct kparts *kp = kparts_new(req, count, KPART_LIST_OFFSETS, kapi_list_offsets_encode);
    if (kp == NULL) {
        kapi_fail(req, "no memory for a list offsets of %u partitions", count);
        return;
    }
    uint32_t k = 0;
    for (int32_t t = 0; t < lr->topics.count; t++) {
        const struct rv_kp_list_offsets_request_topic *lt = &lr->topics.items[t];
        for (int32_t i = 0; i < lt->partitions.count; i++, k++) {
            struct kpart *p = &kp->parts[k];
            kpart_route(req, p, lt->name, lt->partitions.items[i].partition_index);
            p->offset = lt->partitions.items[i].timestamp;
        }
    }
    kparts_dispatch(req);
}

/* ---- OffsetForLeaderEpoch --------------------------------------------------------------------- */

static void kapi_leader_epoch_encode(struct rv_kreq *req)
{
    struct kparts *kp = req->state;
    const struct rv_kp_offset_for_leader_epoch_request *lr = req->msg;
    struct rv_kp_offset_for_leader_epoch_response resp;
    rv_kp_offset_for_leader_epoch_response_init(&resp);
    resp.topics.count = lr->topics.count;
    resp.topics.items = kapi_alloc(req, (size_t)(lr->topics.count > 0 ? lr->topics.count : 1) *
                                            sizeof(*resp.topics.items));
    if (resp.topics.items == NULL) {
        kapi_fail(req, "no memory for an offset for leader epoch response");
        return;
    }
    uint32_t k = 0;
    for (int32_t t = 0; t < lr->topics.count; t++) {
        const struct rv_kp_offset_for_leader_epoch_request_topic *lt = &lr->topics.items[t];
        struct rv_kp_offset_for_leader_epoch_response_topic_result *tr = &resp.topics.items[t];
        rv_kp_offset_for_leader_epoch_response_topic_result_init(tr);
        tr->topic = lt->topic;
        tr->partitions.count = lt->partitions.count;
        tr->partitions.items =
            kapi_alloc(req, (size_t)(lt->partitions.count > 0 ? lt->partitions.count : 1) *
                                sizeof(*tr->partitions.items));
        if (tr->partitions.items == NULL) {
            kapi_fail(req, "no memory for an offset for leader epoch response");
            return;
        }
        for (int32_t i = 0; i < lt->partitions.count; i++, k++) {
            struct kpart *p = &kp->parts[k];
            struct rv_kp_offset_for_leader_epoch_response_epoch_end_offset *r =
                &tr->partitions.items[i];
            rv_kp_offset_for_leader_epoch_response_epoch_end_offset_init(r);
            r->partition = lt->partitions.items[i].partition;
            r->error_code = p->err;
            /* One leader epoch (0) for the whole log: it ends at the log end. */
            r->leader_epoch = p->err == 0 ? 0 : -1;
            r->end_offset = p->err == 0 ? p->high_watermark : -1;
        }
    }
    kapi_respond(req, &rv_kp_offset_for_leader_epoch_response_desc, &resp);
}

void kapi_offset_for_leader_epoch(struct rv_kreq *req)
{
    const struct rv_kp_offset_for_leader_epoch_request *lr = req->msg;
    uint32_t count = 0;
    for (int32_t t = 0; t < lr->topics.count; t++)
        count += (uint32_t)lr->topics.items[t].partitions.count;
    struct kparts *kp = kparts_new(req, count, KPART_LEADER_EPOCH, kapi_leader_epoch_encode);
    if (kp == NULL) {
        kapi_fail(req, "no memory for an offset for leader epoch of %u partitions", count);
        return;
    }
    uint32_t k = 0;
    for (int32_t t = 0; t < lr->topics.count; t++) {
        const struct rv_kp_offset_for_leader_epoch_request_topic *lt = &lr->topics.items[t];
        for (int32_t i = 0; i < lt->partitions.count; i++, k++)
            kpart_route(req, &kp->parts[k], lt->topic, lt->partitions.items[i].partition);
    }
    kparts_dispatch(req);
}

/* ---- Metadata ------------------------------------------------------------------------------- */

/* The brokers we advertise: every shard, or one broker for all. */
static int32_t kapi_brokers(struct rv_kreq *req, int32_t **ids, struct rv_kp_str *host,
                            int32_t **ports)
{
    struct rv_kapi_shard *ks = req->ks;
    const struct rv_kapi_broker *b = ks->b;
    int32_t n = b->cfg->is_advertise_shards ? (int32_t)b->shard_count : 1;
    *ids = kapi_alloc(req, (size_t)n * sizeof(int32_t));
    *ports = kapi_alloc(req, (size_t)n * sizeof(int32_t));
    if (*ids == NULL || *ports == NULL)
        return -1;
    for (int32_t i = 0; i < n; i++) {
        (*ids)[i] = kapi_leader(ks, (uint32_t)i);
        (*ports)[i] = b->ports[i];
    }
    *host = (struct rv_kp_str){.ptr = b->host, .len = (int32_t)strlen(b->host)};
    return n;
}

/* What a metadata request needs between its stages. */
struct kmeta {
    char **names; /* the topics to describe (malloc'd) */
    uint32_t count;
    bool *is_create; /* [count]: auto-create it first */
    int *create_rc;
    bool is_all;
};

static void kmeta_free(struct rv_kreq *req)
{
    struct kmeta *m = req->state;
    for (uint32_t i = 0; i < m->count; i++)
        free(m->names[i]);
    free(m->names);
    free(m->is_create);
    free(m->create_rc);
}

/* A topic's partitions: each led by its owner shard's node, its only replica. */
static bool kmeta_partitions(struct rv_kreq *req, struct rv_kp_metadata_response_topic *tr,
                             const char *name, int32_t count)
{
    tr->partitions.items = kapi_alloc(req, (size_t)count * sizeof(*tr->partitions.items));
    int32_t *nodes = kapi_alloc(req, (size_t)count * sizeof(int32_t));
    if (tr->partitions.items == NULL || nodes == NULL)
        return false;
    tr->partitions.count = count;
    for (int32_t p = 0; p < count; p++) {
        struct rv_kp_metadata_response_partition *pr = &tr->partitions.items[p];
        rv_kp_metadata_response_partition_init(pr);
        struct rv_part_ref ref;
        pr->partition_index = p;
        if (rv_store_lookup(req->ks->b->st, name, strlen(name), p, &ref) < 0) {
            pr->error_code = KERR_LEADER_NOT_AVAILABLE; /* changing right now */
            pr->leader_id = -1;
            continue;
        }
        nodes[p] = kapi_leader(req->ks, ref.owner);
        pr->leader_id = nodes[p];
        pr->leader_epoch = 0;
        pr->replica_nodes = (struct rv_kp_arr_i32){.count = 1, .items = &nodes[p]};
        pr->isr_nodes = (struct rv_kp_arr_i32){.count = 1, .items = &nodes[p]};
        pr->offline_replicas = (struct rv_kp_arr_i32){.count = 0, .items = NULL};
    }
    return true;
}

static void kapi_metadata_encode(struct rv_kreq *req)
{
    struct kmeta *m = req->state;
    const struct rv_kapi_broker *b = req->ks->b;
    struct rv_kp_metadata_response resp;
    rv_kp_metadata_response_init(&resp);
    int32_t *ids, *ports;
    struct rv_kp_str host;
    int32_t nb = kapi_brokers(req, &ids, &host, &ports);
    resp.brokers.items = nb > 0 ? kapi_alloc(req, (size_t)nb * sizeof(*resp.brokers.items)) : NULL;
    resp.topics.items = kapi_alloc(req, (m->count > 0 ? m->count : 1) * sizeof(*resp.topics.items));
    if (nb < 0 || resp.brokers.items == NULL || resp.topics.items == NULL) {
        kapi_fail(req, "no memory for a metadata response");
        return;
    }
    resp.brokers.count = nb;
    for (int32_t i = 0; i < nb; i++) {
        rv_kp_metadata_response_broker_init(&resp.brokers.items[i]);
        resp.brokers.items[i].node_id = ids[i];
        resp.brokers.items[i].host = host;
        resp.brokers.items[i].port = ports[i];
    }
    resp.cluster_id =
        (struct rv_kp_str){.ptr = b->cluster_id, .len = (int32_t)strlen(b->cluster_id)};
    resp.controller_id = b->cfg->node_id;
    resp.topics.count = (int32_t)m->count;
    for (uint32_t t = 0; t < m->count; t++) {
        struct rv_kp_metadata_response_topic *tr = &resp.topics.items[t];
        rv_kp_metadata_response_topic_init(tr);
        tr->name = (struct rv_kp_str){.ptr = m->names[t], .len = (int32_t)strlen(m->names[t])};
        struct rv_store_topic_info info;
        if (!rv_topic_name_is_valid(m->names[t])) {
            tr->error_code = KERR_INVALID_TOPIC_EXCEPTION;
            continue;
        }
        int rc = rv_store_topic_info(b->st, m->names[t], strlen(m->names[t]), &info);
        if (rc < 0) {
            /* Being created (by us or another request), or just made: it will be
             * there, so the client waits for it rather than forgetting it. */
            bool is_coming = rc == -EBUSY || (m->is_create[t] && m->create_rc[t] == 0);
            tr->error_code =
                is_coming ? KERR_LEADER_NOT_AVAILABLE : KERR_UNKNOWN_TOPIC_OR_PARTITION;
            continue;
        }
        tr->topic_id = kapi_topic_uuid(info.id, m->names[t]);
        tr->is_internal = req->version >= 1 && kapi_is_internal(m->names[t]);
        if (!kmeta_partitions(req, tr, m->names[t], info.partitions)) {
            kapi_fail(req, "no memory for a metadata response");
            return;
        }
    }
    kapi_respond(req, &rv_kp_metadata_response_desc, &resp);
}

/* Helper thread: create the topics the request may auto-create. */
static void kapi_metadata_create(void *arg)
{
    struct rv_kreq *req = arg;
    struct kmeta *m = req->state;
    for (uint32_t i = 0; i < m->count; i++) {
        if (!m->is_create[i])
            continue;
        int rc = kapi_create_topic_blocking(req->ks->b, m->names[i], 0);
        m->create_rc[i] = rc == -EEXIST ? 0 : rc;
        if (rc < 0 && rc != -EEXIST)
            rv_warn("auto-creating topic %s: %s", m->names[i], rv_err_msg());
    }
}

static void kapi_metadata_created(void *arg)
{
    kapi_metadata_encode(arg);
}

void kapi_metadata(struct rv_kreq *req)
{
    const struct rv_kp_metadata_request *mr = req->msg;
    const struct rv_kapi_broker *b = req->ks->b;
    struct kmeta *m = kapi_alloc(req, sizeof(*m));
    if (m == NULL) {
        kapi_fail(req, "no memory for a metadata request");
        return;
    }
    req->state = m;
    req->state_free = kmeta_free;
    m->is_all = mr->topics.count < 0 || (req->version == 0 && mr->topics.count == 0);
    int rc = 0;
    if (m->is_all) {
        rc = rv_topic_list(b->st, &m->names, &m->count);
    } else {
        m->names = calloc((size_t)mr->topics.count + 1, sizeof(*m->names));
        rc = m->names != NULL ? 0 : -ENOMEM;
        for (int32_t i = 0; i < mr->topics.count && rc == 0; i++) {
            const struct rv_kp_metadata_request_topic *t = &mr->topics.items[i];
            char name[RV_TOPIC_NAME_MAX + 1];
            struct rv_store_topic_info info;
            if (t->name.len >= 0) {
                /* As sent, however long or odd: an invalid name is answered as such. */
                char *copy = malloc((size_t)t->name.len + 1);
                if (copy != NULL) {
                    memcpy(copy, t->name.ptr, (size_t)t->name.len);
                    copy[t->name.len] = '\0';
                    for (int32_t k = 0; k < t->name.len; k++)
                        copy[k] = copy[k] == '\0' ? '\1' : copy[k]; /* invalid, not shorter */
                }
                m->names[m->count] = copy;
                rc = copy != NULL ? 0 : -ENOMEM;
                m->count += rc == 0;
                continue;
            }
            if (kapi_topic_by_uuid(req->ks, &t->topic_id, name, &info) < 0)
                continue; /* an unknown id: nothing to name it by */
            m->names[m->count] = strdup(name);
            rc = m->names[m->count] != NULL ? 0 : -ENOMEM;
            m->count += rc == 0;
        }
    }
    m->is_create = calloc(m->count + 1, sizeof(*m->is_create));
    m->create_rc = calloc(m->count + 1, sizeof(*m->create_rc));
    if (rc < 0 || m->is_create == NULL || m->create_rc == NULL) {
        kapi_fail(req, "no memory for a metadata request");
        return;
    }
    bool may_create = b->cfg->is_auto_create_topics &&
                      (req->version < 4 || mr->allow_auto_topic_creation) && !m->is_all;
    bool has_create = false;
    for (uint32_t i = 0; i < m->count && may_create; i++) {
        struct rv_store_topic_info info;
        m->is_create[i] =
            rv_topic_name_is_valid(m->names[i]) &&
            rv_store_topic_info(b->st, m->names[i], strlen(m->names[i]), &info) == -ENOENT;
        has_create |= m->is_create[i];
    }
    if (has_create && rv_offload(kapi_metadata_create, req, kapi_metadata_created) == 0)
        return;
    kapi_metadata_encode(req);
}

/* ---- DescribeCluster ------------------------------------------------------------------------- */

void kapi_describe_cluster(struct rv_kreq *req)
{
    const struct rv_kapi_broker *b = req->ks->b;
    struct rv_kp_describe_cluster_response resp;
    rv_kp_describe_cluster_response_init(&resp);
    int32_t *ids, *ports;
    struct rv_kp_str host;
    int32_t nb = kapi_brokers(req, &ids, &host, &ports);
    resp.brokers.items = nb > 0 ? kapi_alloc(req, (size_t)nb * sizeof(*resp.brokers.items)) : NULL;
    if (nb < 0 || resp.brokers.items == NULL) {
        kapi_fail(req, "no memory for a describe cluster response");
        return;
    }
    const struct rv_kp_describe_cluster_request *dr = req->msg;
    if (req->version >= 1 && dr->endpoint_type != 1) {
        resp.error_code = 115; /* UNSUPPORTED_ENDPOINT_TYPE: we have brokers only */
        resp.endpoint_type = dr->endpoint_type;
        kapi_respond(req, &rv_kp_describe_cluster_response_desc, &resp);
        return;
    }
    resp.brokers.count = nb;
    for (int32_t i = 0; i < nb; i++) {
        rv_kp_describe_cluster_response_broker_init(&resp.brokers.items[i]);
        resp.brokers.items[i].broker_id = ids[i];
        resp.brokers.items[i].host = host;
        resp.brokers.items[i].port = ports[i];
    }
    resp.cluster_id =
        (struct rv_kp_str){.ptr = b->cluster_id, .len = (int32_t)strlen(b->cluster_id)};
    resp.controller_id = b->cfg->node_id;
    kapi_respond(req, &rv_kp_describe_cluster_response_desc, &resp);
}
