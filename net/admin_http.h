/*
 * net/admin_http.h - the broker's admin HTTP listener: /metrics (Prometheus
 * text format, net/metrics.h), /health and /ready.
 *
 *   GET /metrics   200, text/plain; version=0.0.4 (503 when a shard does not answer)
 *   GET /health    200 "ok": the process is up
 *   GET /ready     200 "ready" once every shard recovered and listens
 *                  (rv_metrics_set_serving), else 503
 *
 * HEAD works as GET without the body; other methods get 405, other paths 404,
 * a request head over 8 KiB 431, one that does not parse 400. Every answer
 * is HTTP/1.1 with Connection: close. Requests are answered one at a time;
 * a client gets 5 s to send its request head and to take the answer.
 *
 * It runs on a thread of its own with blocking sockets, not on a shard: it is
 * not a hot path, a scrape blocks while it asks every shard for its counters
 * (which a shard could not do without stalling its own loop), and a thread
 * keeps the shards' code free of HTTP. It reads nothing of the shards'
 * memory: everything comes over the mailboxes (rv_metrics_collect).
 *
 * Threading: start and stop from a thread outside the runtime; the runtime
 * must outlive the listener, and so must the store handed to
 * rv_metrics_set_serving.
 */
#ifndef RV_NET_ADMIN_HTTP_H
#define RV_NET_ADMIN_HTTP_H

#include <stdint.h>

#include "core/assert.h"
#include "rivven.h"

#define RV_ADMIN_HTTP_HEAD_MAX   8192 /* bytes of a request head */
#define RV_ADMIN_HTTP_TIMEOUT_MS 5000 /* to send a request head, to take an answer */

typedef struct rv_admin_http rv_admin_http_t;

/*
 * Bind host:port (host "" is every interface; port 0 lets the system pick)
 * and start serving on a new thread. Errors (nothing is left open, *out
 * untouched): -EADDRINUSE and the other bind errors, -EINVAL for a host that
 * does not resolve, -ENOMEM, thread creation errors; rv_err_msg names the
 * address.
 */
RV_MUST_CHECK int rv_admin_http_start(rv_admin_http_t **out, rv_runtime_t *rt, const char *host,
                                      uint16_t port);

/* Stop serving (an answer being written is finished first), join the thread,
 * close and free. NULL is a no-op. */
void rv_admin_http_stop(rv_admin_http_t *a);

/* The port bound. */
uint16_t rv_admin_http_port(const rv_admin_http_t *a);

#endif /* RV_NET_ADMIN_HTTP_H */
