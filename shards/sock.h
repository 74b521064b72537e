/*
 * shards/sock.h - asynchronous socket I/O on a shard's backend.
 *
 * The socket counterpart of rv_file_*: each call queues one operation on the
 * calling shard's backend (io_uring, or epoll + non-blocking syscalls) and
 * returns 0; cb(arg, res) runs later on the same shard, never inside the call.
 * Errors at queue time (cb is then never called): -EINVAL when not on a shard,
 * -EAGAIN when io_depth operations are in flight (backpressure), -ESHUTDOWN
 * after the shard stopped, -EBUSY (epoll backend) when the socket already has
 * a receive (or accept) or a send waiting, -EBADF.
 *
 * Ownership: buffers and iovecs belong to the kernel until their callback.
 * At most one receive (or accept) and one send should be waiting on a socket
 * at a time; that is what both backends guarantee to order.
 *
 * Shutdown: an accept stays in flight until cancelled, and a receive until
 * data or the end of the stream arrives, and the runtime closes only once no
 * operation is in flight. Cancel (rv_sock_cancel) every socket's operations and
 * wait for their callbacks before rv_runtime_close, and before rv_sock_close.
 *
 * Threading: shard only. Sockets are plain descriptors made by the caller
 * (socket, bind, listen); a socket is used from one shard.
 */
#ifndef RV_SHARDS_SOCK_H
#define RV_SHARDS_SOCK_H

#include <stdint.h>
#include <sys/uio.h>

#include "core/assert.h"
#include "rivven.h"

/*
 * Accept connections on listen_fd until cancelled or failed: cb(arg, fd) for
 * each new connection (a blocking, close-on-exec descriptor now owned by the
 * caller), then exactly one final cb(arg, -errno), after which nothing more
 * comes: -ECANCELED after rv_sock_cancel, or the error that stopped accepting
 * (-EMFILE, -ENFILE, -ENOMEM, ...: the caller may arm a new accept later). The
 * epoll backend makes listen_fd non-blocking.
 */
RV_MUST_CHECK int rv_sock_accept_multishot(int listen_fd, rv_io_fn *cb, void *arg);

/* Receive up to len bytes into buf: res is the count, 0 at the end of the
 * stream, or -errno (-ECONNRESET, -ECANCELED...). */
RV_MUST_CHECK int rv_sock_recv(int fd, void *buf, uint32_t len, rv_io_fn *cb, void *arg);

/* Send len bytes of buf: res is the count sent (a short count is possible when
 * the connection fails midway) or -errno (-EPIPE, -ECONNRESET, -ECANCELED). */
RV_MUST_CHECK int rv_sock_send(int fd, const void *buf, uint32_t len, rv_io_fn *cb, void *arg);

/* Gather send of iovcnt (1..IOV_MAX) iovecs, which must stay valid until cb;
 * res as rv_sock_send. -EINVAL for a bad count. */
RV_MUST_CHECK int rv_sock_sendv(int fd, const struct iovec *iov, int iovcnt, rv_io_fn *cb,
                                void *arg);

/* Cancel every operation waiting on fd: each completes with -ECANCELED (or,
 * when it finished meanwhile, with its result), then cb(arg, n) reports how
 * many were cancelled (>= 0). */
RV_MUST_CHECK int rv_sock_cancel(int fd, rv_io_fn *cb, void *arg);

/* Close the socket (cancel its operations first); cb(arg, 0 or -errno). */
RV_MUST_CHECK int rv_sock_close(int fd, rv_io_fn *cb, void *arg);

#endif /* RV_SHARDS_SOCK_H */
