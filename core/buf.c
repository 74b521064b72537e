/*
 * core/buf.c - refcounted zero-copy buffers (see buf.h).
 *
 * The header sits in the first 64 bytes of a pool block and the data follows,
 * so one rv_pool_get() makes a buffer and rv_pool_put() of the same address
 * frees it. Invariants: refs > 0 while the buffer is live; len <= cap; once
 * is_frozen is set, nothing but refs changes, which is what lets other shards
 * read a frozen buffer without synchronisation beyond the handoff.
 */
#include "core/buf.h"

#include <errno.h>

#include "core/ctx.h"
#include "core/err.h"

#define BUF_MAGIC 0x72766266u /* "rvbf" */

struct rv_buf {
    uint32_t magic;  /* BUF_MAGIC while live */
    uint32_t refs;   /* references; touched on the owner's thread only */
    int owner_shard; /* the pool's owner; -1: any single thread */
    uint32_t cap;    /* data bytes, block size less the header */
    uint32_t len;    /* data bytes written, <= cap */
    bool is_frozen;  /* immutable from now on */
    rv_pool_t *pool; /* the pool the block came from */
} RV_ALIGNED_CACHE;

RV_STATIC_ASSERT(sizeof(struct rv_buf) == RV_BUF_HEADER_BYTES);
RV_STATIC_ASSERT(RV_BUF_HEADER_BYTES % RV_POOL_BLOCK_ALIGN == 0);
RV_STATIC_ASSERT(RV_BUF_CAP_MAX <= UINT32_MAX);

static bool buf_is_home(const rv_buf_t *b)
{
    return b->owner_shard < 0 || rv_ctx_shard_id() == b->owner_shard;
}

/* A live buffer, read from where reading is allowed. */
static void buf_check_readable(const rv_buf_t *b)
{
    RV_ASSERT(b != NULL);
    RV_ASSERT(b->magic == BUF_MAGIC);
    RV_ASSERT(b->is_frozen || buf_is_home(b));
}

/* Lifecycle. */

int rv_buf_alloc(rv_pool_t *pool, size_t cap, rv_buf_t **out)
{
    RV_ASSERT(pool != NULL);
    RV_ASSERT(out != NULL);
    if (cap == 0 || cap > RV_BUF_CAP_MAX)
        return rv_errf(-EINVAL, "buf: capacity %zu not in 1..%u", cap, RV_BUF_CAP_MAX);
    rv_buf_t *b = rv_pool_get(pool, cap + RV_BUF_HEADER_BYTES);
    /* Backpressure is routine: no message formatting on this path. */
    if (b == NULL)
        return -ENOBUFS;
    size_t block_size = rv_pool_block_size(b);
    RV_ASSERT(block_size >= cap + RV_BUF_HEADER_BYTES);
    *b = (struct rv_buf){
        .magic = BUF_MAGIC,
        .refs = 1,
        .owner_shard = rv_pool_owner_shard(pool),
        .cap = (uint32_t)(block_size - RV_BUF_HEADER_BYTES),
        .len = 0,
        .is_frozen = false,
        .pool = pool,
    };
    *out = b;
    return 0;
}

void rv_buf_get(rv_buf_t *b)
{
    RV_ASSERT(b != NULL);
    RV_ASSERT(b->magic == BUF_MAGIC);
    RV_ASSERT(buf_is_home(b));
    RV_ASSERT(b->refs > 0);
    RV_ASSERT(b->refs < UINT32_MAX);
    b->refs++;
}

/* Drop one reference on the owner's thread. */
static void buf_release(rv_buf_t *b)
{
    RV_ASSERT(b->refs > 0);
    if (--b->refs > 0)
        return;
    RV_ASSERT(rv_pool_of(b) == b->pool);
    /* A use after the last put then trips the magic check (and ASan). */
    b->magic = 0;
    rv_pool_put(b);
}

/* Runs on the owner's thread: the second half of a foreign rv_buf_put(). */
static void buf_put_home(void *arg)
{
    rv_buf_t *b = arg;
    RV_ASSERT(b->magic == BUF_MAGIC);
    RV_ASSERT(buf_is_home(b));
    buf_release(b);
}

void rv_buf_put(rv_buf_t *b)
{
    if (b == NULL)
        return;
    RV_ASSERT(b->magic == BUF_MAGIC);
    if (buf_is_home(b)) {
        buf_release(b);
        return;
    }
    /* Only frozen buffers cross shards, and the count is the owner's alone. */
    RV_ASSERT(b->is_frozen);
    int rc = rv_ctx_post(b->owner_shard, buf_put_home, b);
    RV_ASSERT(rc == 0);
}

void rv_buf_freeze(rv_buf_t *b)
{
    RV_ASSERT(b != NULL);
    RV_ASSERT(b->magic == BUF_MAGIC);
    RV_ASSERT(buf_is_home(b));
    b->is_frozen = true;
}

/* Data. */

uint8_t *rv_buf_data(rv_buf_t *b)
{
    RV_ASSERT(b != NULL);
    RV_ASSERT(b->magic == BUF_MAGIC);
    RV_ASSERT(!b->is_frozen);
    RV_ASSERT(buf_is_home(b));
    return (uint8_t *)b + RV_BUF_HEADER_BYTES;
}

const uint8_t *rv_buf_cdata(const rv_buf_t *b)
{
    buf_check_readable(b);
    return (const uint8_t *)b + RV_BUF_HEADER_BYTES;
}

size_t rv_buf_cap(const rv_buf_t *b)
{
    buf_check_readable(b);
    return b->cap;
}

size_t rv_buf_len(const rv_buf_t *b)
{
    buf_check_readable(b);
    return b->len;
}

void rv_buf_set_len(rv_buf_t *b, size_t len)
{
    RV_ASSERT(b != NULL);
    RV_ASSERT(b->magic == BUF_MAGIC);
    RV_ASSERT(!b->is_frozen);
    RV_ASSERT(buf_is_home(b));
    RV_ASSERT(len <= b->cap);
    b->len = (uint32_t)len;
}

bool rv_buf_is_frozen(const rv_buf_t *b)
{
    RV_ASSERT(b != NULL);
    RV_ASSERT(b->magic == BUF_MAGIC);
    return b->is_frozen;
}

uint32_t rv_buf_refs(const rv_buf_t *b)
{
    RV_ASSERT(b != NULL);
    RV_ASSERT(b->magic == BUF_MAGIC);
    RV_ASSERT(buf_is_home(b));
    return b->refs;
}

/* Slices. */

static int slice_check_range(size_t have, size_t pos, size_t len)
{
    /* Written so that pos + len cannot overflow. */
    if (pos > have || len > have - pos)
        return rv_errf(-ERANGE, "slice: bytes %zu+%zu outside the %zu available", pos, len, have);
    return 0;
}

int rv_slice_make(struct rv_slice *out, rv_buf_t *b, size_t pos, size_t len)
{
    RV_ASSERT(out != NULL);
    RV_ASSERT(b != NULL);
    int rc = slice_check_range(rv_buf_len(b), pos, len);
    if (rc < 0)
        return rc;
    rv_buf_get(b);
    *out = (struct rv_slice){.buf = b, .pos = (uint32_t)pos, .len = (uint32_t)len};
    return 0;
}

int rv_slice_sub(struct rv_slice *out, const struct rv_slice *s, size_t pos, size_t len)
{
    RV_ASSERT(out != NULL);
    RV_ASSERT(s != NULL);
    RV_ASSERT(s->buf != NULL);
    /* Writing over s would lose its reference. */
    RV_ASSERT(out != s);
    int rc = slice_check_range(s->len, pos, len);
    if (rc < 0)
        return rc;
    RV_ASSERT((size_t)s->pos + pos + len <= rv_buf_cap(s->buf));
    rv_buf_get(s->buf);
    *out = (struct rv_slice){.buf = s->buf, .pos = s->pos + (uint32_t)pos, .len = (uint32_t)len};
    return 0;
}

void rv_slice_put(struct rv_slice *s)
{
    if (s == NULL || s->buf == NULL)
        return;
    rv_buf_put(s->buf);
    *s = (struct rv_slice){.buf = NULL, .pos = 0, .len = 0};
}

const uint8_t *rv_slice_data(const struct rv_slice *s)
{
    RV_ASSERT(s != NULL);
    RV_ASSERT(s->buf != NULL);
    return rv_buf_cdata(s->buf) + s->pos;
}
