/*
 * net/kapi.h - the broker's Kafka API handlers: one request frame in, one
 * response frame out.
 *
 * What is implemented is listed in one table (rv_kapi_supported), and that
 * table is exactly what ApiVersions advertises. Today: ApiVersions, every
 * version of its schema. Everything else a client may send is answered as
 * Kafka's protocol allows:
 *   - ApiVersions at a version above ours: version 0 of the response with
 *     UNSUPPORTED_VERSION and the list of what we support (so the client can
 *     retry at a version we have);
 *   - an API of the schemas that we do not implement, at a version of its
 *     schema: that version's response with UNSUPPORTED_VERSION in its
 *     top-level error code, when the response has one;
 *   - anything else (an unknown API key, a version outside the schema, a
 *     response without a top-level error code, a header or a body that does
 *     not parse): -EPROTO, and the connection is closed with a log line, as
 *     Kafka's own broker does; there is no response the client could read.
 *
 * Threading: pure functions over caller memory; any thread, any shard.
 * Nothing here asserts on request bytes.
 */
#ifndef RV_NET_KAPI_H
#define RV_NET_KAPI_H

#include <stddef.h>
#include <stdint.h>

#include "core/assert.h"

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

/* ---- operations ------------------------------------------------------------ */

/*
 * Answer one request: `frame` is its `len` bytes after the int32 size prefix.
 * Appends the whole response frame (size prefix included) to out and returns
 * 0. -EPROTO when the connection must be closed instead (rv_err_msg says why,
 * naming the API key, version and correlation id when they were readable);
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
