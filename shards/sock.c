/*
 * shards/sock.c - the socket calls of shards/sock.h: fill a request of the
 * calling shard's backend and queue it. The backends (io_uring.c, io_epoll.c)
 * do the work; this file only checks the caller and its arguments.
 */
#include "shards/sock.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>

#include "core/err.h"
#include "shards/shard_impl.h"

static int sock_req(struct rv_io_req **out, enum rv_io_op op, int fd, rv_io_fn *cb, void *arg)
{
    if (fd < 0)
        return -EBADF;
    return rv_shard_io_req(out, op, fd, cb, arg, "socket I/O");
}

static int sock_queue(struct rv_io_req *req)
{
    return rv_shard_io_queue(req);
}

int rv_sock_accept_multishot(int listen_fd, rv_io_fn *cb, void *arg)
{
    struct rv_io_req *req = NULL;
    int rc = sock_req(&req, RV_IO_OP_ACCEPT, listen_fd, cb, arg);
    return rc < 0 ? rc : sock_queue(req);
}

int rv_sock_recv(int fd, void *buf, uint32_t len, rv_io_fn *cb, void *arg)
{
    struct rv_io_req *req = NULL;
    int rc = sock_req(&req, RV_IO_OP_RECV, fd, cb, arg);
    if (rc < 0)
        return rc;
    req->buf = buf;
    req->len = len;
    return sock_queue(req);
}

int rv_sock_send(int fd, const void *buf, uint32_t len, rv_io_fn *cb, void *arg)
{
    struct rv_io_req *req = NULL;
    int rc = sock_req(&req, RV_IO_OP_SEND, fd, cb, arg);
    if (rc < 0)
        return rc;
    req->buf = (void *)buf; /* read-only for sends */
    req->len = len;
    return sock_queue(req);
}

int rv_sock_sendv(int fd, const struct iovec *iov, int iovcnt, rv_io_fn *cb, void *arg)
{
    if (iovcnt <= 0 || iovcnt > IOV_MAX)
        return rv_errf(-EINVAL, "rv_sock_sendv: %d iovecs", iovcnt);
    struct rv_io_req *req = NULL;
    int rc = sock_req(&req, RV_IO_OP_SENDMSG, fd, cb, arg);
    if (rc < 0)
        return rc;
    req->buf = (void *)iov; /* read-only */
    req->len = (uint32_t)iovcnt;
    return sock_queue(req);
}

int rv_sock_cancel(int fd, rv_io_fn *cb, void *arg)
{
    struct rv_io_req *req = NULL;
    int rc = sock_req(&req, RV_IO_OP_CANCEL_FD, fd, cb, arg);
    return rc < 0 ? rc : sock_queue(req);
}

int rv_sock_close(int fd, rv_io_fn *cb, void *arg)
{
    struct rv_io_req *req = NULL;
    int rc = sock_req(&req, RV_IO_OP_SOCK_CLOSE, fd, cb, arg);
    return rc < 0 ? rc : sock_queue(req);
}
