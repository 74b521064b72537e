/*
 * net/kapi.h - the broker's Kafka API handlers: a request frame in, a response
 * out, possibly later (a produce waits for its fsync, a fetch for data).
 *
 * What is implemented is listed in one table (rv_kapi_supported), and that
 * table is exactly what ApiVersions advertises. Everything else a client may
 * send is answered as Kafka's protocol allows:
 *   - ApiVersions at a version above ours: version 0 of the response with
 *     UNSUPPORTED_VERSION and the list of what we support (so the client can
 *     retry at a version we have);
 *   - an API of the schemas that we do not implement, at a version of its
 *     schema: that version's response with UNSUPPORTED_VERSION in its
 *     top-level error code, when the response has one;
 *   - anything else (an unknown API key, a version outside the schema, a
 *     response without a top-level error code, a header or a body that does
 *     not parse): the connection is closed with a log line, as Kafka's own
 *     broker does; there is no response the client could read.
 *
 * A request (struct rv_kreq) lives on the shard whose connection received it.
 * Its handler may send work to the shards that own its partitions (one
 * mailbox message per shard, never one per partition) and completes the
 * request back on its own shard. The response is a byte buffer plus, for
 * fetches, the fetched batches themselves, which are sent from where they
 * are (hot tier or read buffers) through rv_kreq_iov: no copy.
 *
 * Threading: a struct rv_kapi_shard and its requests belong to one shard.
 */
#ifndef RV_NET_KAPI_H
#define RV_NET_KAPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/assert.h"
#include "core/buf.h"
#include "net/config.h"
#include "rivven.h"

/* Kafka error codes this layer answers with (protocol data, not C errors). */
#define RV_KAPI_ERR_NONE                0
#define RV_KAPI_ERR_UNSUPPORTED_VERSION 35
#define RV_KAPI_ERR_INVALID_REQUEST     42

/* A growing byte buffer (malloc'd) that responses are appended to. */
struct rv_kapi_out {
    uint8_t *data;
    size_t len; /* bytes written */
    size_t cap; /* bytes allocated */
};

/* An API this broker implements, and its version range. */
struct rv_kapi_api {
    int16_t api_key;
    int16_t version_min;
    int16_t version_max;
};

/* What every shard's handlers share: read-only once the broker runs (shards[i]
 * is written by shard i before the broker serves). */
struct rv_kapi_broker {
    rv_runtime_t *rt;
    rv_store_t *st;
    const struct rv_config *cfg;
    uint32_t shard_count;
    const uint16_t *ports;         /* [shard_count]: each shard's advertised port */
    char host[RV_CONFIG_HOST_MAX]; /* the advertised host */
    char cluster_id[32];
    struct rv_kapi_shard **shards; /* [shard_count]: each shard's, set by rv_kapi_shard_open */
};

struct rv_kapi_shard;
struct rv_kreq;

/* A request is answered: rv_kreq_error tells whether to send or to close. */
typedef void rv_kreq_done_fn(void *arg, struct rv_kreq *req);

/* ---- per shard ---------------------------------------------------------------------------- */

/* On the shard: make its handler state (installs the store's append hook). */
RV_MUST_CHECK int rv_kapi_shard_open(struct rv_kapi_shard **out, const struct rv_kapi_broker *b);
/* On the shard, once no request of it is in flight. NULL is a no-op. */
void rv_kapi_shard_close(struct rv_kapi_shard *ks);
/* Requests not yet answered (waiting for storage, other shards, data). */
uint32_t rv_kapi_shard_pending(const struct rv_kapi_shard *ks);
/* Answer every parked long-poll fetch now (the broker is stopping). */
void rv_kapi_shard_wake_all(struct rv_kapi_shard *ks);

/* ---- requests ------------------------------------------------------------------------------- */

/*
 * Start answering frame[0..len) (after the size prefix). The frame lies in
 * buf (a writable buffer of this shard's store pool; the request takes a
 * reference: a produced batch is appended from there without a copy), or,
 * when buf is NULL, in `heap`, a malloc'd block the request frees. node is
 * the broker (node id) the client addressed: the one its listener advertises,
 * or -1 when unknown. client_host is the peer as Kafka names it ("/1.2.3.4"),
 * or NULL; it must live as long as the request. done(arg,
 * req) runs exactly once on this shard, possibly before this returns.
 * -ENOMEM (nothing was taken).
 */
RV_MUST_CHECK int rv_kapi_request(struct rv_kapi_shard *ks, rv_buf_t *buf, void *heap,
                                  uint8_t *frame, size_t len, int32_t node, const char *client_host,
                                  rv_kreq_done_fn *done, void *arg, struct rv_kreq **out);

/* After done: 0 to send the response (it may be empty: acks=0), or -EPROTO to
 * close the connection; rv_kreq_why says why. */
int rv_kreq_error(const struct rv_kreq *req);
const char *rv_kreq_why(const struct rv_kreq *req);

/* Bytes of the response frame (0: nothing to send). */
size_t rv_kreq_bytes(const struct rv_kreq *req);

/* Fill iov[0..max) with the response from byte `skip` on; returns how many
 * were filled (fewer than the rest when max is reached). */
int rv_kreq_iov(const struct rv_kreq *req, size_t skip, struct iovec *iov, int max);

/* Release the request (after done). */
void rv_kreq_free(struct rv_kreq *req);

/* ---- synchronous answers (tests; no store) ------------------------------------------------- */

/*
 * Answer one request without a broker: `frame` is its `len` bytes after the
 * int32 size prefix. APIs that need the store are answered as unimplemented.
 * Appends the whole response frame (size prefix included) to out and returns
 * 0. -EPROTO when the connection must be closed instead (rv_err_msg says why);
 * -ENOMEM. On failure out holds what it held before.
 */
RV_MUST_CHECK int rv_kapi_handle(const uint8_t *frame, size_t len, struct rv_kapi_out *out);

/* Make room for `more` bytes after out->len. -ENOMEM. */
RV_MUST_CHECK int rv_kapi_out_reserve(struct rv_kapi_out *out, size_t more);

/* Free the buffer (the struct may be reused, empty). NULL is a no-op. */
void rv_kapi_out_fini(struct rv_kapi_out *out);

/* ---- queries ------------------------------------------------------------------ */

/* The APIs answered for real, sorted by key; *out_count entries. */
const struct rv_kapi_api *rv_kapi_supported(size_t *out_count);

#endif /* RV_NET_KAPI_H */
