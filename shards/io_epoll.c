/*
 * shards/io_epoll.c - the portable backend: epoll for wake-ups, plain syscalls
 * for files.
 *
 * Regular files are always "ready" to epoll, so file operations run as plain
 * (blocking) syscalls through the core/sys.c shim when queued; their callbacks
 * still run later from the reactor, never inside the queueing call, so code
 * above behaves the same on both backends. This is the fallback for kernels or
 * sandboxes without io_uring, not the fast path.
 */
#include "shards/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/err.h"
#include "core/sys.h"

struct io_epoll_state {
    int epoll_fd;
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

static int epoll_queue(struct rv_io *io, struct rv_io_req *req)
{
    rv_io_complete(io, req, epoll_run_op(req));
    return 0;
}

static int epoll_poll(struct rv_io *io)
{
    (void)io; /* work completes at queue time */
    return 0;
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
    struct io_epoll_state *st = io->backend;
    int timeout_ms = -1;
    if (timeout_ns != UINT64_MAX) {
        uint64_t ms = (timeout_ns + 999999) / 1000000; /* round up: never wake early */
        timeout_ms = ms > 60000 ? 60000 : (int)ms;
    }
    struct epoll_event ev[4];
    int n = epoll_wait(st->epoll_fd, ev, (int)RV_ARRAY_LEN(ev), timeout_ms);
    if (n < 0)
        return -errno;
    for (int i = 0; i < n; i++) {
        if (ev[i].data.fd == io->wake_fd)
            epoll_drain_wake(io);
    }
    return 0;
}

static void epoll_fini(struct rv_io *io)
{
    struct io_epoll_state *st = io->backend;
    close(st->epoll_fd);
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
