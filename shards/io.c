/*
 * shards/io.c - the backend-independent half of a shard's I/O: the request
 * array, the completion list and the dispatch to the chosen backend.
 *
 * A request's life: free list -> rv_io_req_get -> filled by the caller ->
 * rv_io_queue (backend owns it; it may already be in the kernel) -> the
 * backend calls rv_io_complete -> done list -> rv_io_run_done returns the slot
 * to the free list and then runs the callback, so a callback may queue the
 * next operation even at full depth.
 */
#include "shards/io.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/trace.h"

int rv_io_init(struct rv_io *io, enum rv_io_backend kind, uint32_t depth, int wake_fd)
{
    RV_ASSERT(io != NULL);
    RV_ASSERT(depth > 0);
    RV_ASSERT(wake_fd >= 0);
    memset(io, 0, sizeof(*io));
    io->wake_fd = wake_fd;
    io->reqs = calloc(depth, sizeof(*io->reqs));
    if (io->reqs == NULL)
        return -ENOMEM;
    io->depth = depth;
    for (uint32_t i = 0; i < depth; i++)
        io->reqs[i].next = i + 1 < depth ? &io->reqs[i + 1] : NULL;
    io->free_list = &io->reqs[0];

    int rc = -ENOSYS;
    if (kind == RV_IO_URING || kind == RV_IO_AUTO) {
        rc = rv_io_uring_init(io);
        if (rc < 0 && kind == RV_IO_URING) {
            rc = rv_errf(rc, "io_uring backend unavailable");
            goto err_free_reqs;
        }
        if (rc < 0) /* auto: say so, a silent fallback hides a slower backend */
            rv_warn("io_uring backend unavailable (%s): using epoll", rv_err_msg());
    }
    if (rc < 0)
        rc = rv_io_epoll_init(io);
    if (rc < 0)
        goto err_free_reqs;
    RV_ASSERT(io->ops != NULL);
    return 0;

err_free_reqs:
    free(io->reqs);
    io->reqs = NULL;
    return rc;
}

void rv_io_fini(struct rv_io *io)
{
    if (io == NULL || io->ops == NULL)
        return;
    RV_ASSERT(io->inflight == 0);
    RV_ASSERT(io->done_head == NULL);
    io->ops->fini(io);
    free(io->reqs);
    io->reqs = NULL;
    io->ops = NULL;
}

struct rv_io_req *rv_io_req_get(struct rv_io *io)
{
    struct rv_io_req *req = io->free_list;
    if (req == NULL)
        return NULL;
    io->free_list = req->next;
    io->inflight++;
    RV_ASSERT(io->inflight <= io->depth);
    memset(req, 0, sizeof(*req));
    return req;
}

static bool io_op_is_sock(uint8_t op)
{
    return op >= RV_IO_OP_ACCEPT && op < RV_IO_OP_EVENT;
}

static void io_req_put(struct rv_io *io, struct rv_io_req *req)
{
    RV_ASSERT(io->inflight > 0);
    io->inflight--;
    if (io_op_is_sock(req->op)) {
        RV_ASSERT(io->sock_inflight > 0);
        io->sock_inflight--;
    }
    if (req->op == RV_IO_OP_OPEN)
        free(req->buf); /* the path copy */
    req->op = 0;
    req->next = io->free_list;
    io->free_list = req;
}

/* The test hook's state (rv_io_fault_fail_fd): process-wide. */
static _Atomic int io_fault_fd = -1;
static _Atomic uint32_t io_fault_ops;
static _Atomic int io_fault_err;
static _Atomic uint32_t io_fault_left;

void rv_io_fault_fail_fd(int fd, uint32_t ops, int err, uint32_t count)
{
    atomic_store(&io_fault_left, 0); /* disarmed while the rest changes */
    atomic_store(&io_fault_ops, ops);
    atomic_store(&io_fault_err, err);
    atomic_store(&io_fault_fd, fd);
    atomic_store(&io_fault_left, count);
}

bool rv_io_fault_pending(void)
{
    return atomic_load(&io_fault_left) > 0;
}

/* Whether this completion is one the test hook turns into its error. */
static bool io_fault_take(const struct rv_io_req *req)
{
    if (atomic_load_explicit(&io_fault_left, memory_order_relaxed) == 0 ||
        req->fd != atomic_load(&io_fault_fd) || (atomic_load(&io_fault_ops) & (1u << req->op)) == 0)
        return false;
    uint32_t left = atomic_load(&io_fault_left);
    while (left > 0 && !atomic_compare_exchange_weak(&io_fault_left, &left, left - 1))
        ;
    return left > 0;
}

int rv_io_queue(struct rv_io *io, struct rv_io_req *req)
{
    RV_ASSERT(req->op >= RV_IO_OP_OPEN && req->op < RV_IO_OP_EVENT);
    RV_ASSERT(req->cb != NULL);
    if (io_op_is_sock(req->op))
        io->sock_inflight++;  /* io_req_put takes it back, on failure too */
    if (io_fault_take(req)) { /* the test hook: fails without being done */
        rv_io_complete(io, req, atomic_load(&io_fault_err));
        return 0;
    }
    int rc = io->ops->queue(io, req);
    if (rc < 0)
        io_req_put(io, req);
    return rc;
}

void rv_io_complete(struct rv_io *io, struct rv_io_req *req, int64_t res)
{
    req->res = res;
    req->next = NULL;
    if (io->done_tail != NULL)
        io->done_tail->next = req;
    else
        io->done_head = req;
    io->done_tail = req;
}

int rv_io_complete_more(struct rv_io *io, const struct rv_io_req *req, int64_t res)
{
    RV_ASSERT(req->op == RV_IO_OP_ACCEPT);
    struct rv_io_req *ev = rv_io_req_get(io);
    if (ev == NULL) {
        /* Every slot is in use (e.g. by receives of other connections): a
         * connection accepted by the kernel is still handed over, not dropped. */
        ev = calloc(1, sizeof(*ev));
        if (ev == NULL)
            return -ENOBUFS;
        ev->is_heap = true;
    }
    ev->op = RV_IO_OP_EVENT;
    ev->fd = req->fd;
    ev->cb = req->cb;
    ev->cb_arg = req->cb_arg;
    rv_io_complete(io, ev, res);
    return 0;
}

int rv_io_run_done(struct rv_io *io)
{
    /* Detach the list first: callbacks may queue operations that complete
     * synchronously (epoll backend) and land on a fresh list. */
    struct rv_io_req *req = io->done_head;
    io->done_head = io->done_tail = NULL;
    int ran = 0;
    while (req != NULL) {
        struct rv_io_req *next = req->next;
        rv_io_fn *cb = req->cb;
        void *arg = req->cb_arg;
        int64_t res = req->res;
        if (req->is_heap)
            free(req);
        else
            io_req_put(io, req);
        cb(arg, res);
        ran++;
        req = next;
    }
    return ran;
}

int rv_io_poll(struct rv_io *io)
{
    int rc = io->ops->poll(io);
    if (rc < 0)
        rv_warn("io %s: poll failed: %s", io->ops->name, rv_strerror(rc));
    return rv_io_run_done(io);
}

int rv_io_wait(struct rv_io *io, uint64_t timeout_ns)
{
    int rc = io->done_head != NULL ? io->ops->poll(io) : io->ops->wait(io, timeout_ns);
    if (rc < 0 && rc != -ETIME && rc != -EINTR)
        rv_warn("io %s: wait failed: %s", io->ops->name, rv_strerror(rc));
    return rv_io_run_done(io);
}

void rv_io_wake(int wake_fd)
{
    uint64_t one = 1;
    /* An eventfd write only fails when the counter would overflow, which
     * means the target is already signalled many times over. */
    ssize_t w = write(wake_fd, &one, sizeof(one));
    (void)w;
}
