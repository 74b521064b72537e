/*
 * net/server.c - listeners, connections and Kafka framing (net/server.h).
 *
 * Ownership: a struct server_shard and its connections belong to that shard;
 * only start and stop cross threads, through rv_runtime_submit and a
 * semaphore. Sockets are bound on the starting thread, then used only by
 * their shard.
 *
 * A connection's states:
 *
 *   OPEN --peer closed, error, bad frame, idle, stop--> CLOSING
 *   CLOSING: its pending recv/send are cancelled; once neither they nor the
 *            cancel are in flight the socket is closed, and then it is freed.
 *
 * While OPEN at most one recv and one send are in flight. Received bytes
 * land in a receive buffer from the shard's pool; every complete frame starts
 * a request (net/kapi.h) that holds a reference to that buffer, so a produced
 * batch goes from there to the log without a copy. Requests may finish out
 * of order (a fetch waits for data, a produce for its fsync); they queue on
 * the connection and responses leave in request order, each one's iovecs
 * (its bytes and the fetched batches where they are) in one vectored send.
 *
 * Receive buffers: a frame never moves once received. The connection keeps
 * receiving after the last frame while the buffer has room; when a partial
 * frame does not fit, a new buffer (sized for that frame) takes the partial
 * bytes (the only copy, of at most one buffer's tail), and the old buffer
 * lives on while requests or the hot tier reference it. A frame larger than
 * a pool buffer goes to a malloc'd block of its own size; its batches are
 * copied into pool buffers by the produce path. Reading pauses while the
 * unsent responses pass RV_SERVER_OUT_BYTES_MAX, the requests in flight
 * SERVER_INFLIGHT_MAX, or the bytes of requests not yet answered (produces
 * waiting for the log) SERVER_PENDING_BYTES_MAX: a client that pipelines
 * without bound waits in its socket, not in the broker's memory.
 *
 * (A received buffer can be frozen by a fetch of a batch in it while the
 * connection still receives into its free tail: disjoint bytes, written only
 * by this shard, through the pointer taken when it was allocated.)
 */
#include "net/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/trace.h"
#include "net/kapi.h"
#include "net/metrics.h"
#include "storage/part.h"
#include "shards/sock.h"

#define SERVER_BACKLOG           1024
#define SERVER_ACCEPT_RETRY_US   100000     /* after accept failed (EMFILE...), try again */
#define SERVER_RECV_SHRINK       (1u << 20) /* give a larger idle receive buffer back */
#define SERVER_PEER_MAX          64
#define SERVER_FRAMES_PER_TURN   256  /* requests started per callback; then yield the shard */
#define SERVER_INFLIGHT_MAX      1024 /* requests of a connection not yet sent */
#define SERVER_PENDING_BYTES_MAX (16u << 20) /* request bytes started and not answered */
#define SERVER_IOV_MAX           256         /* iovecs per send */
#define SERVER_POOL_RETRY_US     1000        /* the pool had no buffer: try again after */
#define SERVER_DRAIN_US          2000000 /* stopping: answers in flight get this long to leave */

struct server_shard;

/* One listening socket of a shard. */
struct server_listener {
    struct server_shard *sh;
    int fd;
    bool is_armed;  /* a multishot accept is in flight */
    bool has_retry; /* a re-arm timer is pending */
    rv_timer_id retry;
    int32_t node; /* what it advertises: node.id on the shared port, node.id + shard on its own */
};

/* A request of a connection, in the order received. */
struct conn_req {
    struct conn_req *next;
    struct server_conn *c;
    size_t bytes;        /* of the request frame */
    struct rv_kreq *req; /* NULL once done and freed */
    bool is_done;
};

struct server_conn {
    struct server_shard *sh;
    struct server_conn *prev;
    struct server_conn *next;
    int fd;
    rv_buf_t *rb;              /* the receive buffer (our reference), or NULL when heap */
    uint8_t *heap;             /* or a malloc'd one, for a frame larger than a pool buffer */
    uint8_t *rdata;            /* its bytes */
    size_t rcap;               /* bytes it holds */
    size_t rstart;             /* the first byte not yet taken by a request */
    size_t rlen;               /* bytes received */
    struct conn_req *req_head; /* requests, oldest first */
    struct conn_req *req_tail;
    uint32_t req_count;
    uint32_t reqs_pending; /* started and not yet done */
    size_t head_sent;      /* bytes of the head's response already sent */
    size_t unsent_bytes;   /* of done responses */
    size_t pending_bytes;  /* of requests started and not done (a produce waiting for the log) */
    uint32_t sending;      /* requests covered by the send in flight */
    struct iovec iov[SERVER_IOV_MAX];
    uint64_t last_active_ns; /* last byte received or sent */
    bool is_recv_pending;
    bool is_send_pending;
    bool is_cancel_pending;
    bool is_task_pending; /* conn_resume is queued: more frames to answer */
    bool has_more;        /* complete frames left in the buffer after a full turn */
    bool has_retry;       /* a timer retries the receive buffer */
    bool is_closing;
    bool is_released;           /* the socket's close is issued */
    int32_t node;               /* the node id its listener advertises */
    bool is_draining;           /* the broker is stopping: send what is answered, read no more */
    char peer[SERVER_PEER_MAX]; /* "host:port", for logs */
    char host[SERVER_PEER_MAX]; /* "/host", as Kafka names a client (DescribeGroups) */
};

struct server_shard {
    rv_server_t *srv;
    uint32_t id;
    struct rv_kapi_shard *ks;
    struct server_listener listeners[1]; /* the base port (shared or shard 0's), or its own */
    uint32_t listener_count;
    struct server_conn *conns; /* open and closing */
    uint32_t conn_count;
    bool is_stopping;
    bool is_stop_posted;
    bool has_drain_timer;
    rv_timer_id drain_timer;
    bool has_idle_timer;
    rv_timer_id idle_timer;
    int start_rc;
    sem_t done; /* start finished; later: stop finished */
};

struct rv_server {
    rv_runtime_t *rt;
    rv_store_t *st;
    struct rv_config cfg;
    struct rv_kapi_broker broker;
    uint16_t *ports;                /* [shard_count]: advertised */
    struct rv_kapi_shard **kshards; /* [shard_count] */
    uint32_t shard_count;
    uint16_t port;               /* the shared port as bound */
    struct server_shard *shards; /* [shard_count] */
};

static void conn_close(struct server_conn *c, const char *why);
static void conn_pump(struct server_conn *c);
static void conn_progress(struct server_conn *c);
static void conn_resume(void *arg);

/* ---- shard bookkeeping --------------------------------------------------------- */

static void shard_check_stopped(struct server_shard *sh)
{
    if (!sh->is_stopping || sh->is_stop_posted || sh->conn_count > 0)
        return;
    if (sh->has_drain_timer && rv_timer_cancel(sh->drain_timer) == 0)
        sh->has_drain_timer = false;
    if (sh->has_drain_timer)
        return; /* it is running now: it calls us again */
    for (uint32_t i = 0; i < sh->listener_count; i++) {
        if (sh->listeners[i].is_armed || sh->listeners[i].has_retry)
            return;
    }
    RV_ASSERT(sh->ks == NULL || rv_kapi_shard_pending(sh->ks) == 0);
    rv_kapi_shard_close(sh->ks);
    sh->ks = NULL;
    sh->is_stop_posted = true;
    sem_post(&sh->done);
}

/* ---- connections ----------------------------------------------------------------- */

static void conn_drop_rbuf(struct server_conn *c)
{
    rv_buf_put(c->rb);
    free(c->heap);
    c->rb = NULL;
    c->heap = NULL;
    c->rdata = NULL;
    c->rcap = c->rstart = c->rlen = 0;
}

/* Free every request (closing: done ones; the rest free themselves when done). */
static void conn_free_reqs(struct server_conn *c)
{
    while (c->req_head != NULL && c->req_head->is_done) {
        struct conn_req *cr = c->req_head;
        c->req_head = cr->next;
        rv_kreq_free(cr->req);
        free(cr);
        c->req_count--;
    }
    if (c->req_head == NULL)
        c->req_tail = NULL;
}

static void conn_closed(void *arg, int64_t res)
{
    struct server_conn *c = arg;
    struct server_shard *sh = c->sh;
    if (res < 0)
        rv_debug("connection %s: close: %s", c->peer, rv_strerror((int)res));
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        sh->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    RV_ASSERT(sh->conn_count > 0);
    sh->conn_count--;
    rv_metrics_on_conn_close();
    conn_free_reqs(c);
    RV_ASSERT(c->req_head == NULL);
    conn_drop_rbuf(c);
    free(c);
    shard_check_stopped(sh);
}

/* Close the socket once nothing of ours is in flight on it. */
static void conn_release(struct server_conn *c)
{
    RV_ASSERT(c->is_closing);
    if (c->is_recv_pending || c->is_send_pending || c->is_cancel_pending || c->is_task_pending ||
        c->has_retry || c->reqs_pending > 0 || c->is_released)
        return;
    c->is_released = true;
    if (rv_sock_close(c->fd, conn_closed, c) < 0) {
        close(c->fd); /* the ring is full: a socket close does not block */
        conn_closed(c, 0);
    }
}

static void conn_cancelled(void *arg, int64_t res)
{
    struct server_conn *c = arg;
    (void)res; /* how many were cancelled: their callbacks say it too */
    c->is_cancel_pending = false;
    conn_release(c);
}

static void conn_close(struct server_conn *c, const char *why)
{
    if (c->is_closing)
        return;
    c->is_closing = true;
    rv_debug("connection %s closed: %s", c->peer, why);
    if (c->is_recv_pending || c->is_send_pending) {
        if (rv_sock_cancel(c->fd, conn_cancelled, c) == 0)
            c->is_cancel_pending = true;
        else
            shutdown(c->fd, SHUT_RDWR); /* wakes what waits on it, on both backends */
    }
    conn_release(c);
}

/* A request finished (maybe inside rv_kapi_request). */
static void conn_req_done(void *arg, struct rv_kreq *req)
{
    struct conn_req *cr = arg;
    struct server_conn *c = cr->c;
    cr->req = req;
    cr->is_done = true;
    RV_ASSERT(c->reqs_pending > 0 && c->pending_bytes >= cr->bytes);
    c->reqs_pending--;
    c->pending_bytes -= cr->bytes;
    if (rv_kreq_error(req) < 0) {
        rv_warn("connection %s: %s: closing it", c->peer, rv_kreq_why(req));
        conn_close(c, "bad request");
    } else {
        c->unsent_bytes += rv_kreq_bytes(req);
    }
    if (c->is_closing) {
        if (!c->is_send_pending)
            conn_free_reqs(c);
        conn_release(c);
        return;
    }
    if (cr == c->req_head)
        conn_pump(c);
    /* Frames received but not started (the bounds held them back) start now:
     * a request without an answer (acks=0) sends nothing that would. */
    if (!c->is_task_pending && !c->is_draining && c->rlen - c->rstart >= 4 &&
        rv_runtime_submit(c->sh->srv->rt, c->sh->id, conn_resume, c) == 0)
        c->is_task_pending = true;
}

/* Make room for a frame of `total` bytes (size prefix included) that starts at
 * rstart: a new buffer that takes the bytes received of it. */
static int conn_rbuf_fit(struct server_conn *c, size_t total)
{
    size_t have = c->rlen - c->rstart;
    size_t need = total > have ? total : have + RV_SERVER_RECV_BYTES_MIN;
    size_t cap = need < RV_SERVER_RECV_BYTES_MIN ? RV_SERVER_RECV_BYTES_MIN : need;
    if (total <= RV_BUF_CAP_MAX && cap > RV_BUF_CAP_MAX)
        cap = RV_BUF_CAP_MAX;
    rv_buf_t *rb = NULL;
    uint8_t *heap = NULL;
    uint8_t *data;
    if (total <= RV_BUF_CAP_MAX) {
        int rc = rv_buf_alloc(rv_store_pool(c->sh->srv->st), cap, &rb);
        if (rc < 0)
            return rc;
        data = rv_buf_data(rb);
        cap = rv_buf_cap(rb);
    } else {
        heap = malloc(total);
        if (heap == NULL)
            return -ENOMEM;
        data = heap;
        cap = total;
    }
    if (have > 0)
        memcpy(data, c->rdata + c->rstart, have);
    conn_drop_rbuf(c);
    c->rb = rb;
    c->heap = heap;
    c->rdata = data;
    c->rcap = cap;
    c->rlen = have;
    return 0;
}

/* Go on after a wait (a retry timer or a queued task), unless closing. */
static void conn_continue(struct server_conn *c)
{
    if (c->is_closing) {
        conn_release(c);
        return;
    }
    conn_progress(c);
}

static void conn_retry(void *arg)
{
    struct server_conn *c = arg;
    c->has_retry = false;
    conn_continue(c);
}

/* The pool or the ring is out of room: come back shortly (once). */
static void conn_retry_later(struct server_conn *c)
{
    if (!c->has_retry && rv_timer_add(SERVER_POOL_RETRY_US, conn_retry, c, NULL) == 0)
        c->has_retry = true;
}

/* Start a request for the complete frame at rstart. */
static int conn_start(struct server_conn *c, size_t size)
{
    struct conn_req *cr = calloc(1, sizeof(*cr));
    if (cr == NULL)
        return -ENOMEM;
    cr->c = c;
    if (c->req_tail != NULL)
        c->req_tail->next = cr;
    else
        c->req_head = cr;
    c->req_tail = cr;
    c->req_count++;
    c->reqs_pending++;
    cr->bytes = 4 + size;
    c->pending_bytes += cr->bytes;
    uint8_t *frame = c->rdata + c->rstart + 4;
    void *heap = NULL;
    if (c->heap != NULL) { /* a frame of its own block: the request takes it */
        RV_ASSERT(c->rstart == 0 && c->rlen == size + 4);
        heap = c->heap;
        c->heap = NULL;
        c->rdata = NULL;
        c->rcap = c->rstart = c->rlen = 0;
    } else {
        c->rstart += 4 + size;
    }
    struct rv_kreq *req;
    int rc = rv_kapi_request(c->sh->ks, c->rb, heap, frame, size, c->node, c->host, conn_req_done,
                             cr, &req);
    if (rc < 0) { /* nothing was taken */
        free(heap);
        c->reqs_pending--;
        c->pending_bytes -= cr->bytes;
        cr->is_done = true; /* an empty answer slot, freed in order */
    }
    return rc;
}

/* Start a request for every complete frame received (within the bounds).
 * Returns false when the connection was closed. */
static bool conn_answer(struct server_conn *c)
{
    const int32_t size_max = c->sh->srv->cfg.socket_request_max_bytes;
    uint32_t answered = 0;
    c->has_more = false;
    while (!c->is_closing && c->rlen - c->rstart >= 4 &&
           c->unsent_bytes <= RV_SERVER_OUT_BYTES_MAX && c->req_count < SERVER_INFLIGHT_MAX &&
           c->pending_bytes <= SERVER_PENDING_BYTES_MAX) {
        if (answered == SERVER_FRAMES_PER_TURN) {
            c->has_more = true; /* let the shard's other work run first */
            break;
        }
        const uint8_t *p = c->rdata + c->rstart;
        int32_t size =
            (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
        if (size < 0 || size > size_max) {
            rv_warn("connection %s: request size %d outside [0, %d] "
                    "(socket.request.max.bytes): closing it",
                    c->peer, size, size_max);
            conn_close(c, "bad request size");
            return false;
        }
        size_t total = 4 + (size_t)size;
        if (c->rlen - c->rstart < total) {
            /* (Never move the buffer under a receive in flight: it lands there.) */
            if (!c->is_recv_pending &&
                (c->rstart + total > c->rcap || (c->heap != NULL && c->rstart > 0))) {
                int rc = conn_rbuf_fit(c, total);
                if (rc == -ENOBUFS) { /* the pool is at its budget: wait for buffers */
                    conn_retry_later(c);
                    return true;
                }
                if (rc < 0) {
                    rv_warn("connection %s: no memory for a %d-byte request: closing it", c->peer,
                            size);
                    conn_close(c, "no memory");
                    return false;
                }
            }
            break;
        }
        if (conn_start(c, (size_t)size) < 0) {
            rv_warn("connection %s: no memory for a request: closing it", c->peer);
            conn_close(c, "no memory");
            return false;
        }
        answered++;
    }
    if (c->is_closing)
        return false;
    /* Everything taken and nobody else holds the buffer: start it over. */
    if (c->rb != NULL && c->rstart == c->rlen && !c->is_recv_pending && rv_buf_refs(c->rb) == 1)
        c->rstart = c->rlen = 0;
    return true;
}

/* Answer what was received, start the next send and receive, and come back
 * later for frames left over from a full turn. */
static void conn_progress(struct server_conn *c)
{
    if (c->is_draining) {
        conn_pump(c); /* no new requests: only what is answered leaves */
        return;
    }
    if (!conn_answer(c))
        return;
    conn_pump(c);
    if (c->is_closing || !c->has_more || c->is_task_pending)
        return;
    if (rv_runtime_submit(c->sh->srv->rt, c->sh->id, conn_resume, c) == 0)
        c->is_task_pending = true;
    /* else: the next send completion answers them */
}

static void conn_resume(void *arg)
{
    struct server_conn *c = arg;
    c->is_task_pending = false;
    conn_continue(c);
}

static void conn_sent(void *arg, int64_t res)
{
    struct server_conn *c = arg;
    c->is_send_pending = false;
    if (c->is_closing) {
        conn_free_reqs(c);
        conn_release(c);
        return;
    }
    if (res <= 0) {
        conn_close(c, res == 0 ? "send made no progress" : rv_strerror((int)res));
        return;
    }
    /* Retire the responses this send finished. */
    size_t sent = (size_t)res;
    RV_ASSERT(sent <= c->unsent_bytes);
    c->unsent_bytes -= sent;
    while (sent > 0) {
        struct conn_req *cr = c->req_head;
        RV_ASSERT(cr != NULL && cr->is_done);
        size_t left = rv_kreq_bytes(cr->req) - c->head_sent;
        if (sent < left) {
            c->head_sent += sent;
            break;
        }
        sent -= left;
        c->head_sent = 0;
        c->req_head = cr->next;
        if (c->req_head == NULL)
            c->req_tail = NULL;
        c->req_count--;
        rv_kreq_free(cr->req);
        free(cr);
    }
    c->last_active_ns = rv_clock_now_ns();
    conn_progress(c); /* frames held back while the responses were many */
}

static void conn_received(void *arg, int64_t res)
{
    struct server_conn *c = arg;
    c->is_recv_pending = false;
    if (c->is_closing) {
        conn_release(c);
        return;
    }
    if (c->is_draining) { /* the read side was shut down: just finish sending */
        conn_pump(c);
        return;
    }
    if (res <= 0) {
        conn_close(c, res == 0 ? "end of stream" : rv_strerror((int)res));
        return;
    }
    c->rlen += (size_t)res;
    c->last_active_ns = rv_clock_now_ns();
    conn_progress(c);
}

/* Gather the iovecs of the done responses at the head; frees empty ones. */
static int conn_gather(struct server_conn *c)
{
    int n = 0;
    size_t skip = c->head_sent;
    for (struct conn_req *cr = c->req_head; cr != NULL && cr->is_done && n < SERVER_IOV_MAX;
         cr = cr->next) {
        if (cr->req == NULL || rv_kreq_bytes(cr->req) == 0) {
            if (cr == c->req_head && n == 0) { /* nothing to send (acks=0): retire it now */
                c->req_head = cr->next;
                if (c->req_head == NULL)
                    c->req_tail = NULL;
                c->req_count--;
                rv_kreq_free(cr->req);
                free(cr);
                return -1; /* look again from the new head */
            }
            continue;
        }
        n += rv_kreq_iov(cr->req, skip, &c->iov[n], SERVER_IOV_MAX - n);
        skip = 0;
    }
    return n;
}

/* Start the send and the receive that the connection's state calls for. */
static void conn_pump(struct server_conn *c)
{
    RV_ASSERT(!c->is_closing);
    if (!c->is_send_pending) {
        int n;
        while ((n = conn_gather(c)) < 0)
            ;
        if (n > 0) {
            int rc = rv_sock_sendv(c->fd, c->iov, n, conn_sent, c);
            if (rc == -EAGAIN) { /* no I/O slot: try again shortly */
                conn_retry_later(c);
            } else if (rc < 0) {
                conn_close(c, rv_strerror(rc));
                return;
            } else {
                c->is_send_pending = true;
            }
        }
    }
    if (c->is_draining) {
        if (c->req_head == NULL && !c->is_send_pending)
            conn_close(c, "the broker is stopping");
        return;
    }
    bool is_paused = c->unsent_bytes > RV_SERVER_OUT_BYTES_MAX ||
                     c->req_count >= SERVER_INFLIGHT_MAX ||
                     c->pending_bytes > SERVER_PENDING_BYTES_MAX || c->has_retry;
    if (c->is_recv_pending || is_paused)
        return;
    if (c->rdata == NULL || c->rlen == c->rcap) {
        /* No buffer, or a full one: a fresh one takes any partial frame. */
        int rc = conn_rbuf_fit(c, 0);
        if (rc == -ENOBUFS) {
            conn_retry_later(c);
            return;
        }
        if (rc < 0) {
            conn_close(c, "no memory for a receive buffer");
            return;
        }
        if (c->rlen == c->rcap)
            return; /* a partial frame fills it: conn_answer sizes the next one */
    }
    size_t room = c->rcap - c->rlen;
    uint32_t len = room > UINT32_MAX ? UINT32_MAX : (uint32_t)room;
    int rc = rv_sock_recv(c->fd, c->rdata + c->rlen, len, conn_received, c);
    if (rc == -EAGAIN) { /* the shard's I/O slots are all in use: try again shortly */
        conn_retry_later(c);
        return;
    }
    if (rc < 0) {
        conn_close(c, rv_strerror(rc));
        return;
    }
    c->is_recv_pending = true;
}

static void conn_name_peer(struct server_conn *c)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    uint16_t port = 0;
    if (getpeername(c->fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
            port = ntohs(a->sin6_port);
        }
    }
    snprintf(c->peer, sizeof(c->peer), "%s:%u", host, port);
    snprintf(c->host, sizeof(c->host), "/%s", host);
}

static void conn_open(struct server_shard *sh, int fd, int32_t node)
{
    struct server_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        rv_warn("shard %u: no memory for a connection: refused", sh->id);
        close(fd);
        return;
    }
    int one = 1;
    /* Best effort: without it, small responses wait for Nagle, not errors. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->sh = sh;
    c->fd = fd;
    c->node = node;
    c->last_active_ns = rv_clock_now_ns();
    conn_name_peer(c);
    c->next = sh->conns;
    if (sh->conns != NULL)
        sh->conns->prev = c;
    sh->conns = c;
    sh->conn_count++;
    rv_metrics_on_conn_open();
    rv_debug("connection %s accepted on shard %u", c->peer, sh->id);
    conn_pump(c);
}

/* ---- accepting -------------------------------------------------------------------- */

static void listener_arm(struct server_listener *l);

static void listener_retry(void *arg)
{
    struct server_listener *l = arg;
    l->has_retry = false;
    if (l->sh->is_stopping) {
        shard_check_stopped(l->sh);
        return;
    }
    listener_arm(l);
}

static void listener_accepted(void *arg, int64_t res)
{
    struct server_listener *l = arg;
    struct server_shard *sh = l->sh;
    if (res >= 0) {
        if (sh->is_stopping)
            close((int)res);
        else
            conn_open(sh, (int)res, l->node);
        return;
    }
    l->is_armed = false; /* the final completion */
    if (sh->is_stopping) {
        shard_check_stopped(sh);
        return;
    }
    rv_warn("shard %u: accept failed: %s; retrying in %u ms", sh->id, rv_strerror((int)res),
            SERVER_ACCEPT_RETRY_US / 1000);
    if (rv_timer_add(SERVER_ACCEPT_RETRY_US, listener_retry, l, &l->retry) == 0)
        l->has_retry = true;
}

static void listener_arm(struct server_listener *l)
{
    int rc = rv_sock_accept_multishot(l->fd, listener_accepted, l);
    if (rc == 0) {
        l->is_armed = true;
        return;
    }
    rv_warn("shard %u: cannot accept: %s; retrying", l->sh->id, rv_strerror(rc));
    if (rv_timer_add(SERVER_ACCEPT_RETRY_US, listener_retry, l, &l->retry) == 0)
        l->has_retry = true;
}

/* ---- idle connections ---------------------------------------------------------------- */

static void shard_idle_scan(void *arg)
{
    struct server_shard *sh = arg;
    sh->has_idle_timer = false;
    if (sh->is_stopping)
        return;
    int64_t idle_ms = sh->srv->cfg.connections_max_idle_ms;
    uint64_t now = rv_clock_now_ns();
    for (struct server_conn *c = sh->conns, *next; c != NULL; c = next) {
        next = c->next; /* closing may free c (when nothing is in flight) */
        bool is_idle = now - c->last_active_ns > (uint64_t)idle_ms * 1000000ull;
        if (!c->is_closing && is_idle && c->req_head == NULL)
            conn_close(c, "idle for connections.max.idle.ms");
    }
    uint64_t every_us = (uint64_t)idle_ms * 1000 / 4;
    every_us = every_us < 1000 ? 1000 : every_us > 1000000 ? 1000000 : every_us;
    if (rv_timer_add(every_us, shard_idle_scan, sh, &sh->idle_timer) == 0)
        sh->has_idle_timer = true;
}

/* ---- start and stop (tasks on each shard) ---------------------------------------------- */

static void shard_start(void *arg)
{
    struct server_shard *sh = arg;
    sh->start_rc = rv_kapi_shard_open(&sh->ks, &sh->srv->broker);
    for (uint32_t i = 0; i < sh->listener_count && sh->start_rc == 0; i++) {
        struct server_listener *l = &sh->listeners[i];
        sh->start_rc = rv_sock_accept_multishot(l->fd, listener_accepted, l);
        l->is_armed = sh->start_rc == 0;
    }
    if (sh->start_rc == 0 && sh->srv->cfg.connections_max_idle_ms > 0)
        shard_idle_scan(sh);
    sem_post(&sh->done);
}

static void shard_cancel_done(void *arg, int64_t res)
{
    (void)arg; /* the accept's own final completion does the bookkeeping */
    (void)res;
}

/* Stopping took too long: close what is still open. */
static void shard_drain_expired(void *arg)
{
    struct server_shard *sh = arg;
    sh->has_drain_timer = false;
    for (struct server_conn *c = sh->conns, *next; c != NULL; c = next) {
        next = c->next;
        conn_close(c, "the broker is stopping (answers not sent in time)");
    }
    shard_check_stopped(sh);
}

static void shard_stop(void *arg)
{
    struct server_shard *sh = arg;
    sh->is_stopping = true;
    if (sh->ks != NULL)
        rv_kapi_shard_wake_all(sh->ks); /* parked fetches answer now */
    if (sh->has_idle_timer && rv_timer_cancel(sh->idle_timer) == 0)
        sh->has_idle_timer = false;
    for (uint32_t i = 0; i < sh->listener_count; i++) {
        struct server_listener *l = &sh->listeners[i];
        if (l->has_retry && rv_timer_cancel(l->retry) == 0)
            l->has_retry = false;
        if (l->is_armed && rv_sock_cancel(l->fd, shard_cancel_done, NULL) < 0)
            shutdown(l->fd, SHUT_RDWR); /* ends the accept on both backends */
    }
    /* Requests in flight are finished and answered (a produce the log took
     * is acknowledged); nothing more is read. */
    for (struct server_conn *c = sh->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->is_closing)
            continue;
        c->is_draining = true;
        shutdown(c->fd, SHUT_RD); /* a receive in flight ends (0 bytes) on both backends */
        if (!c->is_recv_pending)
            conn_pump(c);
    }
    if (sh->conn_count > 0 &&
        rv_timer_add(SERVER_DRAIN_US, shard_drain_expired, sh, &sh->drain_timer) == 0)
        sh->has_drain_timer = true;
    shard_check_stopped(sh);
}

/* ---- binding (starting thread) ---------------------------------------------------------- */

int rv_server_listen(const char *host, uint16_t port, bool is_reuseport, int *out_fd,
                     uint16_t *out_port)
{
    char port_text[8];
    snprintf(port_text, sizeof(port_text), "%u", port);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
    };
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(host[0] != '\0' ? host : NULL, port_text, &hints, &ai);
    if (gai != 0)
        return rv_errf(-EINVAL, "listener host '%s': %s", host, gai_strerror(gai));
    int rc = 0;
    int one = 1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = rv_errf(-errno, "socket for %s:%u", host, port);
        goto out_free;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (is_reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SERVER_BACKLOG) < 0) {
        int err = -errno;
        rc = rv_errf(err, "listen on %s:%u", host, port);
        goto out_close;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        rc = rv_errf(-errno, "getsockname");
        goto out_close;
    }
    *out_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    *out_fd = fd;
    goto out_free;

out_close:
    close(fd);
out_free:
    freeaddrinfo(ai);
    return rc;
}

static void server_free(rv_server_t *srv)
{
    for (uint32_t i = 0; i < srv->shard_count; i++) {
        struct server_shard *sh = &srv->shards[i];
        for (uint32_t j = 0; j < sh->listener_count; j++)
            close(sh->listeners[j].fd);
        sem_destroy(&sh->done);
    }
    free(srv->shards);
    free(srv->ports);
    free(srv->kshards);
    free(srv);
}

/* Bind the shared port on every shard, then each shard's own port. */
static int server_bind_all(rv_server_t *srv)
{
    const struct rv_config_listener *l = &srv->cfg.listeners[0];
    bool has_own = srv->cfg.is_advertise_shards && srv->shard_count > 1;
    if (has_own && l->port != 0 && (uint32_t)l->port + srv->shard_count - 1 > 65535)
        return rv_errf(-EINVAL, "listener port %u + %u shards passes 65535", l->port,
                       srv->shard_count);
    uint16_t port = l->port;
    if (port != 0) {
        /* SO_REUSEPORT would let a second broker of the same user share the port
         * silently: a plain bind first finds anyone already there. */
        int probe = -1;
        uint16_t bound = 0;
        int rc = rv_server_listen(l->host, port, false, &probe, &bound);
        if (rc < 0)
            return rc;
        close(probe);
    }
    /* With shards advertised the base port is node 0's, so only shard 0
     * accepts on it (a connection to node 0 must reach shard 0, the owner of
     * node 0's partitions); otherwise every shard shares it (SO_REUSEPORT). */
    uint32_t sharing = has_own ? 1 : srv->shard_count;
    for (uint32_t i = 0; i < sharing; i++) {
        struct server_shard *sh = &srv->shards[i];
        struct server_listener *sl = &sh->listeners[0];
        int rc = rv_server_listen(l->host, port, !has_own, &sl->fd, &port);
        if (rc < 0)
            return rc;
        sh->listener_count = 1;
        sl->node = srv->cfg.node_id; /* the base port is node 0's in either mode */
        srv->port = port;            /* the first bind fixes a port 0 for the others */
    }
    for (uint32_t i = 1; has_own && i < srv->shard_count; i++) {
        struct server_shard *sh = &srv->shards[i];
        struct server_listener *sl = &sh->listeners[0];
        uint16_t own = l->port == 0 ? 0 : (uint16_t)(l->port + i);
        uint16_t bound = 0;
        int rc = rv_server_listen(l->host, own, false, &sl->fd, &bound);
        if (rc < 0)
            return rc;
        sh->listener_count = 1;
        sl->node = srv->cfg.node_id + (int32_t)i;
    }
    return 0;
}

/* Stop shards [0, count) and wait until each let go of its sockets. */
/* A round trip from one shard to every other one. */
struct server_flush {
    uint32_t shard_count;
    uint32_t pending;
    sem_t done;
};

static void server_flush_noop(void *arg)
{
    (void)arg;
}

static void server_flush_reply(void *arg)
{
    struct server_flush *f = arg;
    if (--f->pending == 0)
        sem_post(&f->done);
}

static void server_flush_start(void *arg)
{
    struct server_flush *f = arg;
    uint32_t self = (uint32_t)rv_shard_self();
    f->pending = 1;
    for (uint32_t s = 0; s < f->shard_count; s++) {
        if (s != self && rv_shard_call(s, server_flush_noop, f, server_flush_reply) == 0)
            f->pending++;
    }
    server_flush_reply(f); /* the initial 1 */
}

/*
 * Messages the handlers send between shards without a request waiting for
 * them (a fetch's wake-ups and watches) name the broker. Before it is freed,
 * every shard sends a call to every other one and waits for the replies:
 * mailboxes are FIFO per shard pair, so whatever was sent before has run.
 */
static void server_flush_mailboxes(rv_server_t *srv)
{
    for (uint32_t i = 0; i < srv->shard_count; i++) {
        struct server_flush f = {.shard_count = srv->shard_count};
        sem_init(&f.done, 0, 0);
        int rc = rv_runtime_submit(srv->rt, i, server_flush_start, &f);
        while (rc == 0 && sem_wait(&f.done) < 0)
            ; /* EINTR */
        sem_destroy(&f.done);
    }
}

static void server_stop_shards(rv_server_t *srv, uint32_t count)
{
    RV_ASSERT(rv_shard_self() < 0);
    for (uint32_t i = 0; i < count; i++) {
        struct server_shard *sh = &srv->shards[i];
        int rc = rv_runtime_submit(srv->rt, i, shard_stop, sh);
        RV_ASSERT(rc == 0); /* the runtime is open: the caller closes it after us */
        while (sem_wait(&sh->done) < 0)
            ; /* EINTR */
    }
    server_flush_mailboxes(srv);
}

/* What Metadata advertises: the advertised (else the bound) host and ports. */
static void server_advertise(rv_server_t *srv)
{
    struct rv_kapi_broker *b = &srv->broker;
    uint32_t count = 0;
    const struct rv_config_listener *adv = rv_config_advertised(&srv->cfg, &count);
    const char *host = count > 0 ? adv[0].host : "";
    if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0) {
        if (gethostname(b->host, sizeof(b->host)) < 0 || b->host[0] == '\0')
            snprintf(b->host, sizeof(b->host), "localhost");
        b->host[sizeof(b->host) - 1] = '\0';
    } else {
        snprintf(b->host, sizeof(b->host), "%s", host);
    }
    bool is_own_port = srv->cfg.advertised_count > 0 && adv[0].port != 0;
    for (uint32_t i = 0; i < srv->shard_count; i++) {
        if (!srv->cfg.is_advertise_shards)
            srv->ports[i] = is_own_port ? adv[0].port : srv->port;
        else
            srv->ports[i] =
                is_own_port ? (uint16_t)(adv[0].port + i) : rv_server_shard_port(srv, i);
    }
    /* A cluster id stable for a data directory: a hash of its path. */
    char path[PATH_MAX];
    const char *dir = realpath(srv->cfg.log_dirs, path) != NULL ? path : srv->cfg.log_dirs;
    uint64_t h1 = 0xcbf29ce484222325ull, h2 = 0x84222325cbf29ce4ull;
    for (const char *p = dir; *p != '\0'; p++) {
        h1 = (h1 ^ (uint8_t)*p) * 0x100000001b3ull;
        h2 = (h2 ^ (uint8_t)*p) * 0x100000001b3ull + 0x9e3779b97f4a7c15ull;
    }
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (int i = 0; i < 22; i++) {
        uint64_t *h = i < 11 ? &h1 : &h2;
        b->cluster_id[i] = abc[*h & 63];
        *h >>= 6;
    }
    b->cluster_id[22] = '\0';
}

int rv_server_start(rv_server_t **out, rv_runtime_t *rt, rv_store_t *st,
                    const struct rv_config *cfg)
{
    RV_ASSERT(out != NULL && rt != NULL && st != NULL && cfg != NULL);
    RV_ASSERT(rv_shard_self() < 0);
    rv_server_t *srv = calloc(1, sizeof(*srv));
    uint32_t n = rv_runtime_shard_count(rt);
    struct server_shard *shards = calloc(n, sizeof(*shards));
    if (srv == NULL || shards == NULL) {
        free(srv);
        free(shards);
        return -ENOMEM;
    }
    srv->rt = rt;
    srv->st = st;
    srv->cfg = *cfg;
    srv->shard_count = n;
    srv->shards = shards;
    srv->ports = calloc(n, sizeof(*srv->ports));
    srv->kshards = calloc(n, sizeof(*srv->kshards));
    if (srv->ports == NULL || srv->kshards == NULL) {
        server_free(srv);
        return -ENOMEM;
    }
    srv->broker = (struct rv_kapi_broker){.rt = rt,
                                          .st = st,
                                          .cfg = &srv->cfg,
                                          .shard_count = n,
                                          .ports = srv->ports,
                                          .shards = srv->kshards};
    for (uint32_t i = 0; i < n; i++) {
        shards[i].srv = srv;
        shards[i].id = i;
        sem_init(&shards[i].done, 0, 0);
        for (uint32_t j = 0; j < RV_ARRAY_LEN(shards[i].listeners); j++)
            shards[i].listeners[j] = (struct server_listener){.sh = &shards[i], .fd = -1};
    }
    int rc = server_bind_all(srv);
    if (rc < 0) {
        server_free(srv);
        return rc;
    }
    server_advertise(srv);
    uint32_t started = 0;
    for (; started < n && rc == 0; started++) {
        struct server_shard *sh = &shards[started];
        rc = rv_runtime_submit(rt, started, shard_start, sh);
        while (rc == 0 && sem_wait(&sh->done) < 0)
            ; /* EINTR */
        if (rc == 0)
            rc = sh->start_rc;
    }
    if (rc < 0) {
        server_stop_shards(srv, started);
        server_free(srv);
        return rv_errf(rc, "a shard could not start accepting");
    }
    *out = srv;
    return 0;
}

void rv_server_stop(rv_server_t *srv)
{
    if (srv == NULL)
        return;
    server_stop_shards(srv, srv->shard_count);
    server_free(srv);
}

uint16_t rv_server_port(const rv_server_t *srv)
{
    return srv->port;
}

uint16_t rv_server_shard_port(const rv_server_t *srv, uint32_t shard)
{
    RV_ASSERT(shard < srv->shard_count);
    const struct server_shard *sh = &srv->shards[shard];
    if (shard == 0 || !srv->cfg.is_advertise_shards)
        return srv->port;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(sh->listeners[0].fd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}
