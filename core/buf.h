/*
 * core/buf.h - refcounted, zero-copy byte buffers on top of core/pool.
 *
 * A buffer is one pool block: a 64-byte header (refcount, owner, pool,
 * capacity, length, frozen flag) followed by the data, which therefore starts
 * 64-byte aligned. Slices (struct rv_slice) are (buffer, pos, len) views that
 * hold a reference each, so a record can point into a received batch without
 * copying it.
 *
 * Ownership and threads. A buffer belongs to the shard that owns its pool. The
 * owner writes it, then may freeze it:
 *
 *   writable --rv_buf_freeze--> frozen (immutable, shareable)
 *
 * Only the owner takes references (rv_buf_get, rv_slice_make, rv_slice_sub) and
 * only the owner writes. A frozen buffer is an immutable shared view: to lend it
 * to another shard, the owner takes a reference and hands the pointer over
 * (through the mailbox, whose release/acquire ordering publishes the bytes); the
 * other shard reads it and calls rv_buf_put / rv_slice_put, which post the
 * release home with rv_ctx_post(). The refcount itself is touched only on the
 * owner's thread, so it needs no atomics. A writable buffer never leaves its
 * shard (asserted on a foreign put or read).
 */
#ifndef RV_CORE_BUF_H
#define RV_CORE_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/assert.h"
#include "core/pool.h"

/* Bytes of header in front of the data. */
#define RV_BUF_HEADER_BYTES 64u
/* The largest capacity rv_buf_alloc() accepts: the largest class less the header. */
#define RV_BUF_CAP_MAX (RV_POOL_BLOCK_MAX - RV_BUF_HEADER_BYTES)

typedef struct rv_buf rv_buf_t;

/* A view of bytes [pos, pos + len) of a buffer, holding one reference. A
 * zeroed slice (buf NULL) is empty and may be put. */
struct rv_slice {
    rv_buf_t *buf; /* the referenced buffer, NULL when empty */
    uint32_t pos;  /* start, bytes from the buffer's data */
    uint32_t len;  /* bytes; pos + len <= the buffer's length when made */
};

/* Lifecycle. */

/* Allocate a writable buffer of at least `cap` data bytes (the whole class is
 * usable: rv_buf_cap() may be larger) and length 0, holding one reference.
 * Returns 0 and sets *out; -EINVAL for cap 0 or over RV_BUF_CAP_MAX; -ENOBUFS
 * when the pool is out of budget (backpressure). On failure *out is unchanged.
 * The pool's owner thread only. */
RV_MUST_CHECK int rv_buf_alloc(rv_pool_t *pool, size_t cap, rv_buf_t **out);

/* Take a reference. Owner thread only (asserted). */
void rv_buf_get(rv_buf_t *b);

/* Drop a reference; the last one returns the block to the pool. On another
 * thread the release is posted home with rv_ctx_post() and done there (the
 * buffer must be frozen, asserted). NULL is a no-op. Any thread holding a
 * reference. */
void rv_buf_put(rv_buf_t *b);

/* Make the buffer immutable from now on; it may then be shared with other
 * shards. Idempotent. Owner thread only. */
void rv_buf_freeze(rv_buf_t *b);

/* Data. */

/* The data for writing, 64-byte aligned. The buffer must not be frozen and the
 * caller must be the owner (both asserted). */
uint8_t *rv_buf_data(rv_buf_t *b);

/* The data for reading: the owner any time, other threads once frozen. */
const uint8_t *rv_buf_cdata(const rv_buf_t *b);

/* Capacity in bytes (>= what rv_buf_alloc was asked for). */
size_t rv_buf_cap(const rv_buf_t *b);

/* Bytes written so far, as recorded by rv_buf_set_len(). */
size_t rv_buf_len(const rv_buf_t *b);

/* Record the length; len <= cap and not frozen (asserted). Owner only. */
void rv_buf_set_len(rv_buf_t *b, size_t len);

/* Whether rv_buf_freeze() was called. */
bool rv_buf_is_frozen(const rv_buf_t *b);

/* References held (for tests and assertions). Owner thread only. */
uint32_t rv_buf_refs(const rv_buf_t *b);

/* Slices. */

/* Make *out a view of bytes [pos, pos + len) of b, taking a reference. Returns
 * 0, or -ERANGE (with a message) when the range is not within rv_buf_len(b);
 * on failure *out is unchanged and no reference is taken. Owner thread only. */
RV_MUST_CHECK int rv_slice_make(struct rv_slice *out, rv_buf_t *b, size_t pos, size_t len);

/* A view of bytes [pos, pos + len) of slice s, with a reference of its own.
 * Returns 0 or -ERANGE as rv_slice_make; s is unchanged. Owner thread only. */
RV_MUST_CHECK int rv_slice_sub(struct rv_slice *out, const struct rv_slice *s, size_t pos,
                               size_t len);

/* Drop the slice's reference and empty it. NULL or an empty slice is a no-op.
 * Any thread holding the slice, as rv_buf_put. */
void rv_slice_put(struct rv_slice *s);

/* The slice's first byte. Readable where the buffer is (see rv_buf_cdata). */
const uint8_t *rv_slice_data(const struct rv_slice *s);

#endif /* RV_CORE_BUF_H */
