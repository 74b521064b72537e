/*
 * shards/io_uring.c - the io_uring backend.
 *
 * One ring per shard, created on the shard's thread with SINGLE_ISSUER and
 * DEFER_TASKRUN when the kernel accepts them (completions are then delivered
 * only when this thread enters the kernel, which it does anyway in poll and
 * wait). A read on the shard's eventfd stays armed in the ring, so a sleeping
 * shard wakes on either a completion or a peer's signal.
 *
 * user_data is the request pointer, or IO_URING_WAKE_TAG for the eventfd read.
 *
 * Sockets: accept is multishot; each connection arrives in a CQE flagged
 * IORING_CQE_F_MORE and becomes an event request (rv_io_complete_more). A
 * final CQE that still carries a connection (the kernel ends a multishot
 * request when, for instance, its CQ overflows) is delivered and the accept
 * re-armed, so the caller sees only one final completion: an error. Sends use
 * MSG_WAITALL so the kernel retries partial sends on a stream socket itself.
 */
#include "shards/io.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/err.h"
#include "core/trace.h"

#define IO_URING_WAKE_TAG 1ull /* never a valid (aligned) request pointer */

struct io_uring_state {
    struct io_uring ring;
    uint64_t wake_value;  /* eventfd read target */
    bool is_wake_armed;   /* eventfd read in the ring */
    uint32_t unsubmitted; /* SQEs prepared since the last submit */
};

int rv_io_uring_probe(void)
{
    struct io_uring ring;
    int rc = io_uring_queue_init(2, &ring, 0);
    if (rc < 0)
        return rc;
    io_uring_queue_exit(&ring);
    return 0;
}

#define URING_SQ_MAX 32768u /* the kernel's IORING_MAX_ENTRIES */

static int uring_setup(struct io_uring *ring, uint32_t entries)
{
    struct io_uring_params p = {
        .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
    };
    int rc = io_uring_queue_init_params(entries, ring, &p);
    if (rc == -EINVAL) {
        /* Kernels before 6.1 know neither flag. */
        rv_info("io_uring: SINGLE_ISSUER/DEFER_TASKRUN not accepted, using defaults");
        struct io_uring_params plain = {0};
        rc = io_uring_queue_init_params(entries, ring, &plain);
    }
    return rc;
}

static struct io_uring_sqe *uring_sqe(struct io_uring_state *st)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&st->ring);
    if (sqe == NULL) {
        /* The SQ is full of prepared entries: hand them over and retry. */
        int rc = io_uring_submit(&st->ring);
        if (rc >= 0)
            st->unsubmitted = 0;
        sqe = io_uring_get_sqe(&st->ring);
    }
    if (sqe != NULL)
        st->unsubmitted++;
    return sqe;
}

static void uring_arm_wake(struct rv_io *io, struct io_uring_state *st)
{
    if (st->is_wake_armed)
        return;
    struct io_uring_sqe *sqe = uring_sqe(st);
    if (sqe == NULL)
        return; /* try again on the next wait */
    io_uring_prep_read(sqe, io->wake_fd, &st->wake_value, sizeof(st->wake_value), 0);
    io_uring_sqe_set_data64(sqe, IO_URING_WAKE_TAG);
    st->is_wake_armed = true;
}

static void uring_prep_sock(struct io_uring_sqe *sqe, struct rv_io_req *req)
{
    const int send_flags = MSG_NOSIGNAL | MSG_WAITALL;
    switch (req->op) {
    case RV_IO_OP_ACCEPT:
        io_uring_prep_multishot_accept(sqe, req->fd, NULL, NULL, SOCK_CLOEXEC);
        break;
    case RV_IO_OP_RECV: io_uring_prep_recv(sqe, req->fd, req->buf, req->len, 0); break;
    case RV_IO_OP_SEND: io_uring_prep_send(sqe, req->fd, req->buf, req->len, send_flags); break;
    case RV_IO_OP_SENDMSG:
        req->msg.msg_iov = req->buf;
        req->msg.msg_iovlen = req->len;
        io_uring_prep_sendmsg(sqe, req->fd, &req->msg, send_flags);
        break;
    case RV_IO_OP_CANCEL_FD: io_uring_prep_cancel_fd(sqe, req->fd, IORING_ASYNC_CANCEL_ALL); break;
    case RV_IO_OP_SOCK_CLOSE: io_uring_prep_close(sqe, req->fd); break;
    default: RV_ASSERT(!"unknown io op");
    }
}

static int uring_queue(struct rv_io *io, struct rv_io_req *req)
{
    struct io_uring_state *st = io->backend;
    struct io_uring_sqe *sqe = uring_sqe(st);
    if (sqe == NULL)
        return -EAGAIN;
    switch (req->op) {
    case RV_IO_OP_OPEN:
        io_uring_prep_openat(sqe, AT_FDCWD, req->buf, req->flags | O_CLOEXEC, req->mode);
        break;
    case RV_IO_OP_READ: io_uring_prep_read(sqe, req->fd, req->buf, req->len, req->pos); break;
    case RV_IO_OP_WRITE: io_uring_prep_write(sqe, req->fd, req->buf, req->len, req->pos); break;
    case RV_IO_OP_FDATASYNC: io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC); break;
    case RV_IO_OP_FALLOCATE:
        io_uring_prep_fallocate(sqe, req->fd, req->flags, (off_t)req->pos, (off_t)req->len64);
        break;
    case RV_IO_OP_CLOSE: io_uring_prep_close(sqe, req->fd); break;
    case RV_IO_OP_WRITEV: io_uring_prep_writev(sqe, req->fd, req->buf, req->len, req->pos); break;
    default: uring_prep_sock(sqe, req); break;
    }
    io_uring_sqe_set_data(sqe, req);
    return 0;
}

/* A multishot accept's CQE: a connection, or the end of the request. */
static void uring_accept_cqe(struct rv_io *io, struct rv_io_req *req, int res, uint32_t flags)
{
    if (res >= 0 && rv_io_complete_more(io, req, res) < 0) {
        rv_warn("accept: %u requests in flight, connection dropped", io->depth);
        close(res);
    }
    if (flags & IORING_CQE_F_MORE)
        return;
    if (res >= 0) {
        res = uring_queue(io, req); /* the kernel ended it, not us: re-arm */
        if (res == 0)
            return;
    }
    rv_io_complete(io, req, res);
}

static int uring_reap(struct rv_io *io, struct io_uring_state *st)
{
    struct io_uring_cqe *cqe;
    unsigned head;
    unsigned seen = 0;
    int completed = 0;
    io_uring_for_each_cqe(&st->ring, head, cqe)
    {
        seen++;
        if (cqe->user_data == IO_URING_WAKE_TAG) {
            st->is_wake_armed = false;
            continue;
        }
        struct rv_io_req *req = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        if (req->op == RV_IO_OP_ACCEPT) {
            uring_accept_cqe(io, req, res, cqe->flags);
            completed++;
            continue;
        }
        if (req->op == RV_IO_OP_CANCEL_FD && res == -ENOENT)
            res = 0; /* nothing was in flight on that descriptor */
        rv_io_complete(io, req, res);
        completed++;
    }
    io_uring_cq_advance(&st->ring, seen);
    return completed;
}

static int uring_poll(struct rv_io *io)
{
    struct io_uring_state *st = io->backend;
    /* Only enter the kernel when there is something to submit or to collect:
     * an idle polling shard makes no syscalls. */
    if (st->unsubmitted > 0 || io->inflight > 0) {
        int rc = io_uring_submit_and_get_events(&st->ring);
        if (rc < 0)
            return rc;
        st->unsubmitted = 0;
    }
    return uring_reap(io, st);
}

static int uring_wait(struct rv_io *io, uint64_t timeout_ns)
{
    struct io_uring_state *st = io->backend;
    uring_arm_wake(io, st);
    struct io_uring_cqe *cqe = NULL;
    struct __kernel_timespec ts = {
        .tv_sec = (long long)(timeout_ns / 1000000000ull),
        .tv_nsec = (long long)(timeout_ns % 1000000000ull),
    };
    int rc = io_uring_submit_and_wait_timeout(&st->ring, &cqe, 1,
                                              timeout_ns == UINT64_MAX ? NULL : &ts, NULL);
    if (rc >= 0 || rc == -ETIME)
        st->unsubmitted = 0;
    int completed = uring_reap(io, st);
    return rc < 0 && rc != -ETIME && rc != -EINTR ? rc : completed;
}

static void uring_fini(struct rv_io *io)
{
    struct io_uring_state *st = io->backend;
    io_uring_queue_exit(&st->ring); /* cancels the armed eventfd read */
    free(st);
    io->backend = NULL;
}

const struct rv_io_ops rv_io_uring_ops = {
    .name = "io_uring",
    .queue = uring_queue,
    .poll = uring_poll,
    .wait = uring_wait,
    .fini = uring_fini,
};

int rv_io_uring_init(struct rv_io *io)
{
    struct io_uring_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return -ENOMEM;
    /* The kernel takes at most URING_SQ_MAX submission entries (EINVAL
     * beyond); the completion ring is twice the submission ring, so up to
     * 2 * URING_SQ_MAX >= io_depth + 8 operations in flight still fit, and a
     * full SQ is handed over and reused (uring_sqe). */
    uint32_t entries = io->depth + 8 < URING_SQ_MAX ? io->depth + 8 : URING_SQ_MAX;
    int rc = uring_setup(&st->ring, entries);
    if (rc < 0) {
        rc = rv_errf(rc, "io_uring_queue_init(%u entries)", entries);
        goto err_free_state;
    }
    io->backend = st;
    io->ops = &rv_io_uring_ops;
    io->kind = RV_IO_URING;
    return 0;

err_free_state:
    free(st);
    return rc;
}
