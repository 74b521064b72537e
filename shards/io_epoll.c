/*
 * shards/io_epoll.c - the portable backend: epoll for wake-ups and sockets,
 * plain syscalls for files.
 *
 * Regular files are always "ready" to epoll, so file operations run as plain
 * (blocking) syscalls through the core/sys.c shim when queued; their callbacks
 * still run later from the reactor, never inside the queueing call, so code
 * above behaves the same on both backends. This is the fallback for kernels or
 * sandboxes without io_uring, not the fast path.
 *
 * Sockets: a recv or send is tried at once with MSG_DONTWAIT; when it would
 * block it is parked on its descriptor (one reader, one writer per socket:
 * a second is -EBUSY) and the descriptor is registered with epoll, level-
 * triggered, for what its parked requests wait for; it is retried on
 * readiness. A multishot accept is a parked reader that accepts until the
 * listening socket (made non-blocking) runs dry. The per-descriptor table
 * (socks[fd]) grows on demand; a descriptor with nothing parked is removed from
 * epoll, so a socket closed behind our back leaves nothing behind.
 */
#include "shards/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/err.h"
#include "core/sys.h"
#include "core/trace.h"

#define EPOLL_EVENTS_PER_WAIT  64
#define EPOLL_ACCEPTS_PER_WAKE 64        /* connections taken per readiness, at most */
#define EPOLL_SOCK_FD_MAX      (1 << 24) /* descriptors above this are refused */

/* What waits on one socket descriptor. */
struct epoll_sock {
    struct rv_io_req *reader; /* RECV or ACCEPT, or NULL */
    struct rv_io_req *writer; /* SEND or SENDMSG, or NULL */
    uint32_t events;          /* registered with epoll; 0: not registered */
};

struct io_epoll_state {
    int epoll_fd;
    struct epoll_sock *socks; /* [sock_cap], indexed by descriptor */
    uint32_t sock_cap;
    uint32_t registered; /* descriptors registered besides the eventfd */
};

static int64_t epoll_run_op(const struct rv_io_req *req)
{
    switch (req->op) {
    case RV_IO_OP_OPEN: return rv_sys_open(req->buf, req->flags, req->mode);
    case RV_IO_OP_READ: return rv_sys_pread(req->fd, req->buf, req->len, (off_t)req->pos);
    case RV_IO_OP_WRITE: return rv_sys_pwrite(req->fd, req->buf, req->len, (off_t)req->pos);
    case RV_IO_OP_FDATASYNC: return rv_sys_fdatasync(req->fd);
    case RV_IO_OP_FALLOCATE:
        return rv_sys_fallocate(req->fd, req->flags, (off_t)req->pos, (off_t)req->len64);
    case RV_IO_OP_CLOSE: return rv_sys_close(req->fd);
    case RV_IO_OP_WRITEV: return rv_sys_pwritev(req->fd, req->buf, (int)req->len, (off_t)req->pos);
    default: RV_ASSERT(!"unknown io op");
    }
    return -EINVAL;
}

/* One non-blocking attempt of a socket transfer: bytes, or -errno (-EAGAIN). */
static int64_t epoll_sock_try(struct rv_io_req *req)
{
    ssize_t n;
    const int flags = MSG_DONTWAIT | MSG_NOSIGNAL;
    switch (req->op) {
    case RV_IO_OP_RECV: n = recv(req->fd, req->buf, req->len, MSG_DONTWAIT); break;
    case RV_IO_OP_SEND: n = send(req->fd, req->buf, req->len, flags); break;
    case RV_IO_OP_SENDMSG:
        req->msg.msg_iov = req->buf;
        req->msg.msg_iovlen = req->len;
        n = sendmsg(req->fd, &req->msg, flags);
        break;
    default: RV_ASSERT(!"not a socket transfer"); return -EINVAL;
    }
    if (n >= 0)
        return n;
    return errno == EWOULDBLOCK || errno == EINTR ? -EAGAIN : -errno;
}

static struct epoll_sock *epoll_sock_get(struct io_epoll_state *st, int fd)
{
    if (fd < 0 || fd >= EPOLL_SOCK_FD_MAX)
        return NULL;
    if ((uint32_t)fd >= st->sock_cap) {
        uint32_t cap = st->sock_cap == 0 ? 64 : st->sock_cap;
        while (cap <= (uint32_t)fd)
            cap *= 2;
        struct epoll_sock *socks = realloc(st->socks, cap * sizeof(*socks));
        if (socks == NULL)
            return NULL;
        memset(&socks[st->sock_cap], 0, (cap - st->sock_cap) * sizeof(*socks));
        st->socks = socks;
        st->sock_cap = cap;
    }
    return &st->socks[fd];
}

/* Register fd for what its parked requests wait for (nothing: unregister). */
static int epoll_sock_update(struct io_epoll_state *st, int fd, struct epoll_sock *sk)
{
    uint32_t want = (sk->reader != NULL ? EPOLLIN : 0) | (sk->writer != NULL ? EPOLLOUT : 0);
    if (want == sk->events)
        return 0;
    struct epoll_event ev = {.events = want, .data.fd = fd};
    int rc = 0;
    if (want == 0) {
        /* ENOENT/EBADF: closed behind our back, which unregistered it. */
        (void)epoll_ctl(st->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
        st->registered--;
    } else if (sk->events == 0) {
        rc = epoll_ctl(st->epoll_fd, EPOLL_CTL_ADD, fd, &ev);
        if (rc == 0)
            st->registered++;
    } else {
        rc = epoll_ctl(st->epoll_fd, EPOLL_CTL_MOD, fd, &ev);
        if (rc < 0 && errno == ENOENT) /* closed and reused behind our back */
            rc = epoll_ctl(st->epoll_fd, EPOLL_CTL_ADD, fd, &ev);
    }
    if (rc < 0)
        return -errno;
    sk->events = want;
    return 0;
}

/* Park req on its descriptor until it is ready. */
static int epoll_sock_park(struct rv_io *io, struct rv_io_req *req)
{
    struct io_epoll_state *st = io->backend;
    struct epoll_sock *sk = epoll_sock_get(st, req->fd);
    if (sk == NULL)
        return req->fd < 0 ? -EBADF : -ENOMEM;
    bool is_reader = req->op == RV_IO_OP_RECV || req->op == RV_IO_OP_ACCEPT;
    struct rv_io_req **slot = is_reader ? &sk->reader : &sk->writer;
    if (*slot != NULL)
        return rv_errf(-EBUSY, "socket %d: a %s is already waiting", req->fd,
                       is_reader ? "recv or accept" : "send");
    *slot = req;
    int rc = epoll_sock_update(st, req->fd, sk);
    if (rc < 0)
        *slot = NULL;
    return rc;
}

/* Complete what is parked on fd with -ECANCELED; returns how many there were. */
static int epoll_sock_cancel(struct rv_io *io, int fd)
{
    struct io_epoll_state *st = io->backend;
    if (fd < 0 || (uint32_t)fd >= st->sock_cap)
        return 0;
    struct epoll_sock *sk = &st->socks[fd];
    int count = 0;
    if (sk->reader != NULL) {
        rv_io_complete(io, sk->reader, -ECANCELED);
        sk->reader = NULL;
        count++;
    }
    if (sk->writer != NULL) {
        rv_io_complete(io, sk->writer, -ECANCELED);
        sk->writer = NULL;
        count++;
    }
    (void)epoll_sock_update(st, fd, sk); /* only unregisters: cannot fail */
    return count;
}

static int epoll_queue_sock(struct rv_io *io, struct rv_io_req *req)
{
    int64_t res;
    switch (req->op) {
    case RV_IO_OP_ACCEPT: {
        int fl = fcntl(req->fd, F_GETFL);
        if (fl < 0 || fcntl(req->fd, F_SETFL, fl | O_NONBLOCK) < 0)
            return -errno;
        return epoll_sock_park(io, req);
    }
    case RV_IO_OP_RECV:
    case RV_IO_OP_SEND:
    case RV_IO_OP_SENDMSG:
        res = epoll_sock_try(req);
        if (res == -EAGAIN)
            return epoll_sock_park(io, req);
        break;
    case RV_IO_OP_CANCEL_FD: res = epoll_sock_cancel(io, req->fd); break;
    case RV_IO_OP_SOCK_CLOSE:
        (void)epoll_sock_cancel(io, req->fd); /* a caller's bug, but leave nothing parked */
        res = rv_sys_close(req->fd);
        break;
    default: RV_ASSERT(!"unknown io op"); return -EINVAL;
    }
    rv_io_complete(io, req, res);
    return 0;
}

static int epoll_queue(struct rv_io *io, struct rv_io_req *req)
{
    if (req->op < RV_IO_OP_ACCEPT) {
        rv_io_complete(io, req, epoll_run_op(req));
        return 0;
    }
    return epoll_queue_sock(io, req);
}

/* The listening socket is readable: take what connections are queued. */
static void epoll_accept_ready(struct rv_io *io, struct epoll_sock *sk)
{
    struct rv_io_req *req = sk->reader;
    for (int i = 0; i < EPOLL_ACCEPTS_PER_WAKE; i++) {
        int fd = accept4(req->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            if (rv_io_complete_more(io, req, fd) < 0) {
                rv_warn("accept: %u requests in flight, connection dropped", io->depth);
                close(fd);
            }
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        if (errno == ECONNABORTED || errno == EINTR || errno == EPROTO)
            continue; /* that one connection is gone; the listener is fine */
        rv_io_complete(io, req, -errno);
        sk->reader = NULL;
        return;
    }
}

static void epoll_sock_ready(struct rv_io *io, int fd, uint32_t events)
{
    struct io_epoll_state *st = io->backend;
    if (fd < 0 || (uint32_t)fd >= st->sock_cap)
        return;
    struct epoll_sock *sk = &st->socks[fd];
    const uint32_t failed = EPOLLERR | EPOLLHUP;
    if (sk->reader != NULL && (events & (EPOLLIN | EPOLLRDHUP | failed)) != 0) {
        if (sk->reader->op == RV_IO_OP_ACCEPT) {
            epoll_accept_ready(io, sk);
        } else {
            int64_t res = epoll_sock_try(sk->reader);
            if (res != -EAGAIN) {
                rv_io_complete(io, sk->reader, res);
                sk->reader = NULL;
            }
        }
    }
    if (sk->writer != NULL && (events & (EPOLLOUT | failed)) != 0) {
        int64_t res = epoll_sock_try(sk->writer);
        if (res != -EAGAIN) {
            rv_io_complete(io, sk->writer, res);
            sk->writer = NULL;
        }
    }
    int rc = epoll_sock_update(st, fd, sk);
    if (rc < 0)
        rv_warn("epoll: socket %d: %s", fd, rv_strerror(rc));
}

static void epoll_drain_wake(struct rv_io *io);

static int epoll_collect(struct rv_io *io, int timeout_ms)
{
    struct io_epoll_state *st = io->backend;
    struct epoll_event ev[EPOLL_EVENTS_PER_WAIT];
    int n = epoll_wait(st->epoll_fd, ev, (int)RV_ARRAY_LEN(ev), timeout_ms);
    if (n < 0)
        return -errno;
    for (int i = 0; i < n; i++) {
        if (ev[i].data.fd == io->wake_fd)
            epoll_drain_wake(io);
        else
            epoll_sock_ready(io, ev[i].data.fd, ev[i].events);
    }
    return 0;
}

static int epoll_poll(struct rv_io *io)
{
    struct io_epoll_state *st = io->backend;
    /* File work completes at queue time; only sockets need a look. */
    return st->registered > 0 ? epoll_collect(io, 0) : 0;
}

static void epoll_drain_wake(struct rv_io *io)
{
    uint64_t v;
    /* Non-blocking eventfd: EAGAIN when nothing was signalled. */
    ssize_t r = read(io->wake_fd, &v, sizeof(v));
    (void)r;
}

static int epoll_wait_io(struct rv_io *io, uint64_t timeout_ns)
{
    int timeout_ms = -1;
    if (timeout_ns != UINT64_MAX) {
        uint64_t ms = (timeout_ns + 999999) / 1000000; /* round up: never wake early */
        timeout_ms = ms > 60000 ? 60000 : (int)ms;
    }
    return epoll_collect(io, timeout_ms);
}

static void epoll_fini(struct rv_io *io)
{
    struct io_epoll_state *st = io->backend;
    close(st->epoll_fd);
    free(st->socks);
    free(st);
    io->backend = NULL;
}

const struct rv_io_ops rv_io_epoll_ops = {
    .name = "epoll",
    .queue = epoll_queue,
    .poll = epoll_poll,
    .wait = epoll_wait_io,
    .fini = epoll_fini,
};

int rv_io_epoll_init(struct rv_io *io)
{
    struct io_epoll_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return -ENOMEM;
    int rc;
    st->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (st->epoll_fd < 0) {
        rc = rv_errf(-errno, "epoll_create1");
        goto err_free_state;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = io->wake_fd};
    if (epoll_ctl(st->epoll_fd, EPOLL_CTL_ADD, io->wake_fd, &ev) < 0) {
        rc = rv_errf(-errno, "epoll_ctl(eventfd)");
        goto err_close_epoll;
    }
    io->backend = st;
    io->ops = &rv_io_epoll_ops;
    io->kind = RV_IO_EPOLL;
    return 0;

err_close_epoll:
    close(st->epoll_fd);
err_free_state:
    free(st);
    return rc;
}
