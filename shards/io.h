/*
 * shards/io.h - a shard's I/O backend: io_uring, or epoll + plain syscalls.
 *
 * Each shard owns one backend and uses it from its own thread only. The
 * backend does three things for the reactor: run file operations and report
 * their completions, watch the shard's wake-up eventfd, and sleep until either
 * a completion, a wake-up or a deadline. Both backends implement the same
 * operations table, so every layer above is backend-blind and the test suite
 * runs on both.
 *
 * Requests come from a fixed per-shard array of io_depth entries (no
 * allocation per operation); a full array is -EAGAIN backpressure.
 *
 * Sockets (shards/sock.h): accept (multishot), recv, send, sendmsg and cancel.
 * A multishot request stays in flight until its final completion; each of its
 * intermediate results is delivered through an "event" request taken from the
 * same array (rv_io_complete_more), so callbacks still run one per result, in
 * order, from the done list.
 */
#ifndef RV_SHARDS_IO_H
#define RV_SHARDS_IO_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "core/assert.h"
#include "rivven.h"

enum rv_io_op {
    RV_IO_OP_OPEN = 1,
    RV_IO_OP_READ,
    RV_IO_OP_WRITE,
    RV_IO_OP_FDATASYNC,
    RV_IO_OP_FALLOCATE,
    RV_IO_OP_CLOSE,
    RV_IO_OP_WRITEV,     /* buf: const struct iovec *, len: iovec count */
    RV_IO_OP_ACCEPT,     /* multishot accept on fd; results are new descriptors */
    RV_IO_OP_RECV,       /* recv into buf, len bytes */
    RV_IO_OP_SEND,       /* send buf, len bytes (MSG_NOSIGNAL) */
    RV_IO_OP_SENDMSG,    /* sendmsg of msg (iovecs in buf, count in len) */
    RV_IO_OP_CANCEL_FD,  /* cancel every socket request on fd; res: how many */
    RV_IO_OP_SOCK_CLOSE, /* close a socket fd (after its requests finished) */
    RV_IO_OP_EVENT,      /* one intermediate result of a multishot request */
};
#define RV_IO_OP_LAST RV_IO_OP_EVENT

struct rv_io_req {
    uint8_t op;     /* enum rv_io_op */
    int fd;         /* target descriptor (OPEN: AT_FDCWD) */
    int flags;      /* OPEN flags, FALLOCATE mode */
    mode_t mode;    /* OPEN mode */
    void *buf;      /* READ/WRITE buffer; OPEN: owned copy of the path */
    uint32_t len;   /* READ/WRITE bytes */
    uint64_t pos;   /* file position; FALLOCATE: start */
    uint64_t len64; /* FALLOCATE length */
    int64_t res;    /* result, once complete */
    rv_io_fn *cb;   /* completion callback */
    void *cb_arg;
    struct rv_io_req *next; /* free list / completed list link */
    bool is_heap;           /* an accept's event made when every slot was in use: freed */
    struct msghdr msg;      /* SENDMSG: what the kernel reads until completion */
};

struct rv_io;

struct rv_io_ops {
    const char *name;
    /* Queue a request (it is submitted at the next rv_io_submit). -EAGAIN if the
     * backend cannot take it now. */
    int (*queue)(struct rv_io *io, struct rv_io_req *req);
    /* Submit queued work and collect finished requests onto io->done without
     * blocking. Returns how many completed (>= 0) or -errno. */
    int (*poll)(struct rv_io *io);
    /* Submit, then block until a completion, a wake-up or timeout_ns (UINT64_MAX:
     * no deadline). Collects completions like poll. */
    int (*wait)(struct rv_io *io, uint64_t timeout_ns);
    void (*fini)(struct rv_io *io);
};

struct rv_io {
    const struct rv_io_ops *ops;
    enum rv_io_backend kind;
    int wake_fd;            /* eventfd peers write to wake this shard (borrowed) */
    uint32_t depth;         /* request array size */
    uint32_t inflight;      /* requests handed out and not yet completed */
    uint32_t sock_inflight; /* of those, socket requests: they wait on peers, not the disk */
    struct rv_io_req *reqs; /* depth entries */
    struct rv_io_req *free_list;
    struct rv_io_req *done_head; /* completed, callbacks not yet run (FIFO) */
    struct rv_io_req *done_tail;
    void *backend; /* backend-private state */
};

/* Lifecycle (shard thread). kind RV_IO_AUTO tries io_uring first. wake_fd is
 * an eventfd owned by the caller, which must keep it open until every thread
 * that may signal it is gone (peers wake a shard until the runtime has joined
 * them all). Returns 0, -ENOSYS when io_uring was demanded and is not
 * available, -ENOMEM, -errno. */
RV_MUST_CHECK int rv_io_init(struct rv_io *io, enum rv_io_backend kind, uint32_t depth,
                             int wake_fd);
/* Requires inflight == 0. */
void rv_io_fini(struct rv_io *io);

/* Take a free request, or NULL when depth requests are in flight. */
struct rv_io_req *rv_io_req_get(struct rv_io *io);
/* Queue a filled request; on failure the request is returned to the free list. */
RV_MUST_CHECK int rv_io_queue(struct rv_io *io, struct rv_io_req *req);
/* Non-blocking progress; runs completion callbacks. Returns callbacks run. */
int rv_io_poll(struct rv_io *io);
/* Block up to timeout_ns for completions or a wake-up; runs completion callbacks. */
int rv_io_wait(struct rv_io *io, uint64_t timeout_ns);
/* Signal another shard's wake_fd (any thread). */
void rv_io_wake(int wake_fd);

/* Used by backends: record a finished request for rv_io_run_done. */
void rv_io_complete(struct rv_io *io, struct rv_io_req *req, int64_t res);
/* Used by backends: record one intermediate result of the multishot request
 * req (which stays in flight). -ENOBUFS when every request slot is in use: the
 * result is then not delivered and the backend must dispose of it. */
RV_MUST_CHECK int rv_io_complete_more(struct rv_io *io, const struct rv_io_req *req, int64_t res);
/* Run callbacks of completed requests (done list), returning their slots first.
 * Returns how many ran. */
int rv_io_run_done(struct rv_io *io);

/* Test hook, process-wide: the next `count` operations queued on descriptor
 * fd whose op is in ops (a mask of 1 << RV_IO_OP_WRITE, _WRITEV,
 * _FDATASYNC...) are not done and complete with err (a -errno). count 0
 * disarms (do, before fd can be another file's). */
void rv_io_fault_fail_fd(int fd, uint32_t ops, int err, uint32_t count);
/* Whether armed completions are still to come. */
bool rv_io_fault_pending(void);

/* Backends. */
extern const struct rv_io_ops rv_io_uring_ops;
extern const struct rv_io_ops rv_io_epoll_ops;
/* 0 when the kernel lets this process create an io_uring, else -errno. */
int rv_io_uring_probe(void);
int rv_io_uring_init(struct rv_io *io);
int rv_io_epoll_init(struct rv_io *io);

#endif /* RV_SHARDS_IO_H */
