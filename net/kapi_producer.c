/*
 * net/kapi_producer.c - InitProducerId (every version of its schema) for
 * idempotent producers: producer ids unique across shards and restarts.
 *
 * Ids come in blocks. Shard 0 runs the allocator: ids below its high mark
 * may have been handed out, so a restart starts there; the mark lives in
 * DATA/meta/producer-ids (a decimal number) and is raised by
 * PRODUCER_RESERVE ids at a time through a helper thread (write a temporary
 * file, fdatasync, rename, fsync the directory) before any id above the old
 * mark is handed out. Every shard takes blocks of PRODUCER_BLOCK ids from
 * shard 0 (one mailbox round trip per block, carried by the request that
 * found the shard's block empty) and answers from its block; requests that
 * arrive meanwhile wait in a FIFO.
 *
 *   shard k: block empty -> ask shard 0 ------> shard 0: ids below the mark?
 *                                                 no: raise the mark (helper)
 *   shard k: answer the waiting requests <------ a block [first, first + n)
 *
 * State is per shard thread (_Thread_local) and holds no heap memory: the
 * waiting requests and the asks in flight are request memory (kapi_alloc),
 * the helper job frees itself, so a shard needs no close hook. A request
 * waiting here keeps its shard from stopping until it is answered.
 *
 * Kafka's answers, as its transaction coordinator gives them:
 *   - no transactional id: a new producer id with epoch 0, whatever a v3+
 *     request names as its current id and epoch (KIP-360's epoch bump is
 *     for transactional producers; an idempotent one gets a new id);
 *   - v3+ with only one of producer id and epoch set: INVALID_REQUEST;
 *   - an empty transactional id: INVALID_REQUEST;
 *   - a transactional id: COORDINATOR_NOT_AVAILABLE. Rivven has no
 *     transaction coordinator yet, and FindCoordinator(TRANSACTION) answers
 *     the same, so a transactional client keeps retrying until its own
 *     timeout instead of failing with a misleading authorization error
 *     (TRANSACTIONAL_ID_AUTHORIZATION_FAILED is fatal for it);
 *   - the high mark cannot be written: COORDINATOR_NOT_AVAILABLE (retriable).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/sys.h"
#include "core/trace.h"
#include "net/kapi_impl.h"

#define PRODUCER_BLOCK   32   /* ids a shard takes from shard 0 at once */
#define PRODUCER_RESERVE 1024 /* ids the persisted high mark moves by (at least) */
#define PRODUCER_FILE    "meta/producer-ids"
#define PRODUCER_OWNER   0 /* the shard that runs the allocator */

RV_STATIC_ASSERT(PRODUCER_RESERVE >= PRODUCER_BLOCK);

/* A request waiting for an id on its shard (request memory). */
struct kprod_wait {
    struct rv_kreq *req;
    struct kprod_wait *next;
};

/* A block asked of shard 0 (request memory of the request that carries it). */
struct kprod_ask {
    struct kapi_work w; /* first */
    const char *data_dir;
    int64_t first; /* out: the block */
    int32_t count;
    int err;                /* out: -errno when the mark could not be raised */
    struct kprod_ask *next; /* shard 0's queue */
};

/* Each shard's block and waiters. */
struct kprod_shard {
    const struct rv_kapi_broker *b; /* the broker the block belongs to */
    int64_t next;                   /* the block: [next, end) */
    int64_t end;
    bool is_asking; /* an ask is in flight */
    struct kprod_wait *head;
    struct kprod_wait *tail;
};

/* Shard 0's allocator. */
struct kprod_alloc {
    const char *data_dir; /* the allocator's directory (a new broker resets it) */
    int64_t next;         /* the next id no shard has */
    int64_t high;         /* ids below are covered by the persisted mark */
    bool is_loaded;       /* the file was read */
    bool is_persisting;   /* a helper job is raising the mark */
    bool is_serving;      /* kprod_alloc_serve is running (answers may ask again) */
    struct kprod_ask *head;
    struct kprod_ask *tail;
};

static _Thread_local struct kprod_shard kprod_self;
static _Thread_local struct kprod_alloc kprod_alloc;

/* ---- shard 0: the persisted high mark --------------------------------------------------------- */

struct kprod_job {
    char dir[PATH_MAX]; /* DATA/meta */
    char path[PATH_MAX];
    char tmp[PATH_MAX];
    bool was_loaded;
    int64_t start;     /* loaded: the allocator's next id */
    int64_t want;      /* ids to cover beyond start */
    int64_t file_high; /* out: the mark read */
    int64_t high;      /* out: the mark written */
    int rc;
};

static int kprod_read_mark(const char *path, int64_t *out)
{
    int fd = rv_sys_open(path, O_RDONLY, 0);
    if (fd == -ENOENT) {
        *out = 0; /* never written: ids start at 0 */
        return 0;
    }
    if (fd < 0)
        return rv_errf(fd, "%s: open", path);
    char text[32] = {0};
    ssize_t n = rv_sys_pread(fd, text, sizeof(text) - 1, 0);
    (void)rv_sys_close(fd); /* read-only */
    char *end = NULL;
    long long v = n > 0 ? strtoll(text, &end, 10) : -1;
    if (n <= 0 || v < 0 || end == text || (*end != '\n' && *end != '\0'))
        return rv_errf(-EBADMSG, "%s: not a producer id mark", path);
    *out = v;
    return 0;
}

static void kprod_persist_work(void *arg)
{
    struct kprod_job *job = arg;
    int rc = rv_sys_mkdir_p(job->dir, 0755);
    if (rc == 0 && !job->was_loaded)
        rc = kprod_read_mark(job->path, &job->file_high);
    int64_t start = job->was_loaded ? job->start : job->file_high;
    if (rc == 0 && start > INT64_MAX - job->want)
        rc = rv_errf(-EOVERFLOW, "%s: producer ids exhausted", job->path);
    job->high = start + job->want;
    char text[32];
    int len = snprintf(text, sizeof(text), "%" PRId64 "\n", job->high);
    int fd = rc == 0 ? rv_sys_open(job->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644) : rc;
    if (rc == 0 && fd < 0)
        rc = fd;
    if (rc == 0) {
        ssize_t w = rv_sys_pwrite(fd, text, (size_t)len, 0);
        rc = w == len ? rv_sys_fdatasync(fd) : (w < 0 ? (int)w : -ENOSPC);
        int close_rc = rv_sys_close(fd);
        if (rc == 0)
            rc = close_rc;
        if (rc == 0)
            rc = rv_sys_rename(job->tmp, job->path);
        if (rc == 0)
            rc = rv_sys_fsync_dir(job->dir);
    }
    job->rc = rc;
}

static void kprod_alloc_serve(struct kprod_alloc *a);

/* The mark cannot be raised: every queued ask goes back with err. */
static void kprod_alloc_fail(struct kprod_alloc *a, int err)
{
    struct kprod_ask *k = a->head;
    a->head = a->tail = NULL;
    while (k != NULL) {
        struct kprod_ask *next = k->next;
        k->err = err;
        kapi_work_done(&k->w);
        k = next;
    }
}

static void kprod_persist_done(void *arg)
{
    struct kprod_job *job = arg;
    struct kprod_alloc *a = &kprod_alloc;
    int rc = job->rc;
    a->is_persisting = false;
    if (rc < 0) {
        rv_warn("producer ids: cannot raise the mark in %s: %s", job->path, rv_strerror(rc));
    } else {
        if (!a->is_loaded && job->file_high > a->next)
            a->next = job->file_high;
        a->is_loaded = true;
        a->high = job->high;
        rv_debug("producer ids: ids below %" PRId64 " may be handed out", a->high);
    }
    free(job);
    if (rc < 0)
        kprod_alloc_fail(a, rc);
    else
        kprod_alloc_serve(a);
}

/* Give blocks to the queued asks while the mark covers them; raise it when
 * it does not. */
static void kprod_alloc_serve(struct kprod_alloc *a)
{
    if (a->is_serving)
        return; /* an answer came back to this shard and asked again: the loop below sees it */
    a->is_serving = true;
    while (a->head != NULL && a->is_loaded && a->next <= a->high - PRODUCER_BLOCK) {
        struct kprod_ask *k = a->head;
        a->head = k->next;
        if (a->head == NULL)
            a->tail = NULL;
        k->first = a->next;
        k->count = PRODUCER_BLOCK;
        a->next += PRODUCER_BLOCK;
        kapi_work_done(&k->w);
    }
    a->is_serving = false;
    if (a->head == NULL || a->is_persisting)
        return;
    uint32_t asks = 0;
    for (struct kprod_ask *k = a->head; k != NULL; k = k->next)
        asks++;
    struct kprod_job *job = calloc(1, sizeof(*job));
    if (job == NULL) {
        kprod_alloc_fail(a, -ENOMEM);
        return;
    }
    job->was_loaded = a->is_loaded;
    job->start = a->next;
    job->want = (int64_t)asks * PRODUCER_BLOCK > PRODUCER_RESERVE ? (int64_t)asks * PRODUCER_BLOCK
                                                                  : PRODUCER_RESERVE;
    int n1 = snprintf(job->dir, sizeof(job->dir), "%s/meta", a->data_dir);
    int n2 = snprintf(job->path, sizeof(job->path), "%s/" PRODUCER_FILE, a->data_dir);
    int n3 = snprintf(job->tmp, sizeof(job->tmp), "%s/" PRODUCER_FILE ".tmp", a->data_dir);
    int rc = n1 < 0 || n2 < 0 || n3 < 0 || (size_t)n3 >= sizeof(job->tmp) ? -ENAMETOOLONG : 0;
    if (rc == 0)
        rc = rv_offload(kprod_persist_work, job, kprod_persist_done);
    if (rc < 0) {
        free(job);
        kprod_alloc_fail(a, rc);
        return;
    }
    a->is_persisting = true;
}

/* On shard 0: an ask arrived. */
static void kprod_ask_run(void *arg)
{
    struct kprod_ask *k = arg;
    struct kprod_alloc *a = &kprod_alloc;
    if (a->data_dir != k->data_dir) { /* another broker (tests run several) */
        RV_ASSERT(a->head == NULL && !a->is_persisting);
        *a = (struct kprod_alloc){.data_dir = k->data_dir};
    }
    k->next = NULL;
    if (a->tail != NULL)
        a->tail->next = k;
    else
        a->head = k;
    a->tail = k;
    kprod_alloc_serve(a);
}

/* ---- every shard: its block and the requests waiting for it ------------------------------------ */

static void kprod_answer(struct rv_kreq *req, int16_t err, int64_t id)
{
    struct rv_kp_init_producer_id_response resp;
    rv_kp_init_producer_id_response_init(&resp);
    resp.error_code = err;
    resp.producer_id = err == KERR_NONE ? id : -1;
    resp.producer_epoch = err == KERR_NONE ? 0 : -1;
    kapi_respond(req, &rv_kp_init_producer_id_response_desc, &resp);
}

static void kprod_ask(struct kprod_shard *s);

/* Back on the asking shard with a block, or an error. */
static void kprod_block_back(struct rv_kreq *carrier)
{
    struct kprod_shard *s = &kprod_self;
    const struct kprod_ask *k = carrier->state;
    int err = k->err;
    s->is_asking = false;
    if (err == 0) {
        s->next = k->first;
        s->end = k->first + k->count;
    }
    /* Answering completes requests (the carrier too, whose memory holds k):
     * nothing of k is read after this point. */
    while (s->head != NULL && (err < 0 || s->next < s->end)) {
        struct kprod_wait *w = s->head;
        s->head = w->next;
        if (s->head == NULL)
            s->tail = NULL;
        if (err < 0)
            kprod_answer(w->req, KERR_COORDINATOR_NOT_AVAILABLE, -1);
        else
            kprod_answer(w->req, KERR_NONE, s->next++);
    }
    if (s->head != NULL)
        kprod_ask(s);
}

/* Ask shard 0 for a block, carried by the oldest waiting request. */
static void kprod_ask(struct kprod_shard *s)
{
    RV_ASSERT(s->head != NULL && !s->is_asking);
    struct rv_kreq *req = s->head->req;
    struct kprod_ask *k = kapi_alloc(req, sizeof(*k));
    if (k == NULL) {
        /* Answer every waiter: none can carry an ask without memory. */
        while (s->head != NULL) {
            struct kprod_wait *w = s->head;
            s->head = w->next;
            kprod_answer(w->req, KERR_COORDINATOR_NOT_AVAILABLE, -1);
        }
        s->tail = NULL;
        return;
    }
    k->data_dir = rv_runtime_data_dir(req->ks->b->rt);
    req->state = k;
    s->is_asking = true;
    kapi_works_begin(req, kprod_block_back);
    kapi_send(req, &k->w, PRODUCER_OWNER, kprod_ask_run);
    kapi_works_end(req);
}

void kapi_init_producer_id(struct rv_kreq *req)
{
    const struct rv_kp_init_producer_id_request *ir = req->msg;
    if (req->version >= 3 && (ir->producer_id == -1) != (ir->producer_epoch == -1)) {
        kprod_answer(req, KERR_INVALID_REQUEST, -1);
        return;
    }
    if (ir->transactional_id.len >= 0) {
        kprod_answer(req,
                     ir->transactional_id.len == 0 ? KERR_INVALID_REQUEST
                                                   : KERR_COORDINATOR_NOT_AVAILABLE,
                     -1);
        return;
    }
    const struct rv_kapi_broker *b = req->ks->b;
    if (b->st == NULL || rv_runtime_data_dir(b->rt) == NULL) {
        kprod_answer(req, KERR_COORDINATOR_NOT_AVAILABLE, -1);
        return;
    }
    struct kprod_shard *s = &kprod_self;
    if (s->b != b) { /* another broker: the old block is not this one's */
        RV_ASSERT(s->head == NULL && !s->is_asking);
        *s = (struct kprod_shard){.b = b};
    }
    if (s->head == NULL && s->next < s->end) {
        kprod_answer(req, KERR_NONE, s->next++);
        return;
    }
    struct kprod_wait *w = kapi_alloc(req, sizeof(*w));
    if (w == NULL) {
        kprod_answer(req, KERR_COORDINATOR_NOT_AVAILABLE, -1);
        return;
    }
    w->req = req;
    w->next = NULL;
    if (s->tail != NULL)
        s->tail->next = w;
    else
        s->head = w;
    s->tail = w;
    if (!s->is_asking)
        kprod_ask(s);
}
