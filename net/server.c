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
 * accumulate in rbuf; every complete frame is answered (net/kapi.c) by
 * appending its response to `out`, so responses keep request order; `out`
 * goes out in one send per turn. Reading pauses while `out` holds more than
 * RV_SERVER_OUT_BYTES_MAX unsent bytes.
 */
#include "net/server.h"

#include <arpa/inet.h>
#include <errno.h>
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
#include "shards/sock.h"

#define SERVER_BACKLOG         1024
#define SERVER_ACCEPT_RETRY_US 100000     /* after accept failed (EMFILE...), try again */
#define SERVER_RECV_SHRINK     (1u << 20) /* give a larger idle receive buffer back */
#define SERVER_PEER_MAX        64
#define SERVER_FRAMES_PER_TURN 256 /* requests answered per callback; then yield the shard */

struct server_shard;

/* One listening socket of a shard. */
struct server_listener {
    struct server_shard *sh;
    int fd;
    bool is_armed;  /* a multishot accept is in flight */
    bool has_retry; /* a re-arm timer is pending */
    rv_timer_id retry;
};

struct server_conn {
    struct server_shard *sh;
    struct server_conn *prev;
    struct server_conn *next;
    int fd;
    uint8_t *rbuf;
    size_t rcap;            /* bytes allocated */
    size_t rlen;            /* bytes received and not yet answered */
    struct rv_kapi_out out; /* responses; [out_sent, out.len) not yet sent */
    size_t out_sent;
    uint64_t last_active_ns; /* last byte received or sent */
    bool is_recv_pending;
    bool is_send_pending;
    bool is_cancel_pending;
    bool is_task_pending; /* conn_resume is queued: more frames to answer */
    bool has_more;        /* complete frames left in rbuf after a full turn */
    bool is_closing;
    char peer[SERVER_PEER_MAX];
};

struct server_shard {
    rv_server_t *srv;
    uint32_t id;
    struct server_listener listeners[2]; /* the shared port, then the own port */
    uint32_t listener_count;
    struct server_conn *conns; /* open and closing */
    uint32_t conn_count;
    bool is_stopping;
    bool is_stop_posted;
    bool has_idle_timer;
    rv_timer_id idle_timer;
    int start_rc;
    sem_t done; /* start finished; later: stop finished */
};

struct rv_server {
    rv_runtime_t *rt;
    struct rv_config cfg;
    uint32_t shard_count;
    uint16_t port;               /* the shared port as bound */
    struct server_shard *shards; /* [shard_count] */
};

static void conn_close(struct server_conn *c, const char *why);
static void conn_pump(struct server_conn *c);

/* ---- shard bookkeeping --------------------------------------------------------- */

static void shard_check_stopped(struct server_shard *sh)
{
    if (!sh->is_stopping || sh->is_stop_posted || sh->conn_count > 0)
        return;
    for (uint32_t i = 0; i < sh->listener_count; i++) {
        if (sh->listeners[i].is_armed || sh->listeners[i].has_retry)
            return;
    }
    sh->is_stop_posted = true;
    sem_post(&sh->done);
}

/* ---- connections ----------------------------------------------------------------- */

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
    rv_kapi_out_fini(&c->out);
    free(c->rbuf);
    free(c);
    shard_check_stopped(sh);
}

/* Close the socket once nothing of ours is in flight on it. */
static void conn_release(struct server_conn *c)
{
    RV_ASSERT(c->is_closing);
    if (c->is_recv_pending || c->is_send_pending || c->is_cancel_pending || c->is_task_pending)
        return;
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

static int conn_grow_rbuf(struct server_conn *c, size_t need)
{
    if (need <= c->rcap)
        return 0;
    size_t cap = c->rcap;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *buf = realloc(c->rbuf, cap);
    if (buf == NULL)
        return -ENOMEM;
    c->rbuf = buf;
    c->rcap = cap;
    return 0;
}

/* Answer every complete frame in rbuf (until `out` is over its bound). Returns
 * false when the connection was closed. */
static bool conn_answer(struct server_conn *c)
{
    const int32_t size_max = c->sh->srv->cfg.socket_request_max_bytes;
    size_t pos = 0;
    bool is_ok = true;
    uint32_t answered = 0;
    c->has_more = false;
    while (c->rlen - pos >= 4 && c->out.len - c->out_sent <= RV_SERVER_OUT_BYTES_MAX) {
        if (answered == SERVER_FRAMES_PER_TURN) {
            c->has_more = true; /* let the shard's other work run first */
            break;
        }
        const uint8_t *p = c->rbuf + pos;
        int32_t size =
            (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
        if (size < 0 || size > size_max) {
            rv_warn("connection %s: request size %d outside [0, %d] "
                    "(socket.request.max.bytes): closing it",
                    c->peer, size, size_max);
            is_ok = false;
            break;
        }
        if (c->rlen - pos - 4 < (size_t)size) {
            if (conn_grow_rbuf(c, (size_t)size + 4) < 0) {
                rv_warn("connection %s: no memory for a %d-byte request: closing it", c->peer,
                        size);
                is_ok = false;
            }
            break;
        }
        int rc = rv_kapi_handle(p + 4, (size_t)size, &c->out);
        if (rc < 0) {
            rv_warn("connection %s: %s: closing it", c->peer,
                    rc == -EPROTO ? rv_err_msg() : rv_strerror(rc));
            is_ok = false;
            break;
        }
        pos += 4 + (size_t)size;
        answered++;
    }
    if (!is_ok) {
        conn_close(c, "bad request");
        return false;
    }
    memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
    c->rlen -= pos;
    if (c->rcap > SERVER_RECV_SHRINK && c->rlen <= RV_SERVER_RECV_BYTES_MIN) {
        uint8_t *buf = realloc(c->rbuf, RV_SERVER_RECV_BYTES_MIN);
        if (buf != NULL) {
            c->rbuf = buf;
            c->rcap = RV_SERVER_RECV_BYTES_MIN;
        }
    }
    return true;
}

static void conn_resume(void *arg);

/* Answer what was received, start the next send and receive, and come back
 * later for frames left over from a full turn. */
static void conn_progress(struct server_conn *c)
{
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
    if (c->is_closing) {
        conn_release(c);
        return;
    }
    conn_progress(c);
}

static void conn_sent(void *arg, int64_t res)
{
    struct server_conn *c = arg;
    c->is_send_pending = false;
    if (c->is_closing) {
        conn_release(c);
        return;
    }
    if (res <= 0) {
        conn_close(c, res == 0 ? "send made no progress" : rv_strerror((int)res));
        return;
    }
    c->out_sent += (size_t)res;
    RV_ASSERT(c->out_sent <= c->out.len);
    if (c->out_sent == c->out.len)
        c->out.len = c->out_sent = 0;
    c->last_active_ns = rv_clock_now_ns();
    conn_progress(c); /* frames held back while `out` was full */
}

static void conn_received(void *arg, int64_t res)
{
    struct server_conn *c = arg;
    c->is_recv_pending = false;
    if (c->is_closing) {
        conn_release(c);
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

/* Start the send and the receive that the connection's state calls for. */
static void conn_pump(struct server_conn *c)
{
    RV_ASSERT(!c->is_closing);
    if (!c->is_send_pending && c->out.len > c->out_sent) {
        size_t n = c->out.len - c->out_sent;
        uint32_t len = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
        int rc = rv_sock_send(c->fd, c->out.data + c->out_sent, len, conn_sent, c);
        if (rc < 0) {
            conn_close(c, rv_strerror(rc));
            return;
        }
        c->is_send_pending = true;
    }
    bool is_paused = c->out.len - c->out_sent > RV_SERVER_OUT_BYTES_MAX;
    if (c->is_recv_pending || is_paused || c->rlen == c->rcap)
        return;
    int rc =
        rv_sock_recv(c->fd, c->rbuf + c->rlen, (uint32_t)(c->rcap - c->rlen), conn_received, c);
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
}

static void conn_open(struct server_shard *sh, int fd)
{
    struct server_conn *c = calloc(1, sizeof(*c));
    uint8_t *rbuf = malloc(RV_SERVER_RECV_BYTES_MIN);
    if (c == NULL || rbuf == NULL) {
        rv_warn("shard %u: no memory for a connection: refused", sh->id);
        free(c);
        free(rbuf);
        close(fd);
        return;
    }
    int one = 1;
    /* Best effort: without it, small responses wait for Nagle, not errors. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->sh = sh;
    c->fd = fd;
    c->rbuf = rbuf;
    c->rcap = RV_SERVER_RECV_BYTES_MIN;
    c->last_active_ns = rv_clock_now_ns();
    conn_name_peer(c);
    c->next = sh->conns;
    if (sh->conns != NULL)
        sh->conns->prev = c;
    sh->conns = c;
    sh->conn_count++;
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
            conn_open(sh, (int)res);
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
        if (!c->is_closing && is_idle && c->out.len == c->out_sent)
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
    sh->start_rc = 0;
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

static void shard_stop(void *arg)
{
    struct server_shard *sh = arg;
    sh->is_stopping = true;
    if (sh->has_idle_timer && rv_timer_cancel(sh->idle_timer) == 0)
        sh->has_idle_timer = false;
    for (uint32_t i = 0; i < sh->listener_count; i++) {
        struct server_listener *l = &sh->listeners[i];
        if (l->has_retry && rv_timer_cancel(l->retry) == 0)
            l->has_retry = false;
        if (l->is_armed && rv_sock_cancel(l->fd, shard_cancel_done, NULL) < 0)
            shutdown(l->fd, SHUT_RDWR); /* ends the accept on both backends */
    }
    for (struct server_conn *c = sh->conns, *next; c != NULL; c = next) {
        next = c->next;
        conn_close(c, "the broker is stopping");
    }
    shard_check_stopped(sh);
}

/* ---- binding (starting thread) ---------------------------------------------------------- */

static int server_bind(const char *host, uint16_t port, bool is_reuseport, int *out_fd,
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
        int rc = server_bind(l->host, port, false, &probe, &bound);
        if (rc < 0)
            return rc;
        close(probe);
    }
    for (uint32_t i = 0; i < srv->shard_count; i++) {
        struct server_shard *sh = &srv->shards[i];
        struct server_listener *sl = &sh->listeners[0];
        int rc = server_bind(l->host, port, true, &sl->fd, &port);
        if (rc < 0)
            return rc;
        sh->listener_count = 1;
        srv->port = port; /* the first bind fixes a port 0 for the others */
    }
    for (uint32_t i = 1; has_own && i < srv->shard_count; i++) {
        struct server_shard *sh = &srv->shards[i];
        struct server_listener *sl = &sh->listeners[1];
        uint16_t own = l->port == 0 ? 0 : (uint16_t)(l->port + i);
        uint16_t bound = 0;
        int rc = server_bind(l->host, own, false, &sl->fd, &bound);
        if (rc < 0)
            return rc;
        sh->listener_count = 2;
    }
    return 0;
}

/* Stop shards [0, count) and wait until each let go of its sockets. */
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
}

int rv_server_start(rv_server_t **out, rv_runtime_t *rt, const struct rv_config *cfg)
{
    RV_ASSERT(out != NULL && rt != NULL && cfg != NULL);
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
    srv->cfg = *cfg;
    srv->shard_count = n;
    srv->shards = shards;
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
    if (sh->listener_count < 2)
        return srv->port;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(sh->listeners[1].fd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}
