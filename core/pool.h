/*
 * core/pool.h - a per-shard, bounded pool of 64-byte-aligned blocks in
 * power-of-two size classes.
 *
 * Classes run from 64 B to 1 MiB (15 of them). They serve four tiers of
 * users: 64-512 B (message and request headers), 512 B-4 KiB (small records),
 * 4-64 KiB (batches, socket reads) and 64 KiB-1 MiB (large batches, segment
 * I/O). rv_pool_get() returns a block of the smallest class that holds the
 * request; rv_pool_put() takes a block back with no size or pool argument.
 *
 * Layout. Memory comes in chunks of about RV_POOL_CHUNK_ALIGN bytes from
 * mimalloc, each aligned to RV_POOL_CHUNK_ALIGN and serving one class:
 *
 *   chunk (aligned to 1 MiB)
 *   +--------+---------+---------+-----+---------+
 *   | header | block 0 | block 1 | ... | block n |
 *   +--------+---------+---------+-----+---------+
 *     64 B     every block starts within the first 1 MiB
 *
 * so a block finds its chunk header, and through it its pool and class, by
 * rounding its address down to RV_POOL_CHUNK_ALIGN. Blocks carry no header of
 * their own: the cost is 64 B per chunk (about 0.006%), and a 64 B block costs
 * 64 B. Chunks are carved lazily, so untouched blocks cost no RSS. With a NUMA
 * node in the options each chunk is bound (MPOL_PREFERRED) to that node before
 * first use. A chunk whose blocks are all free goes back to mimalloc when
 * another class needs a chunk the budget would refuse (so traffic that moves
 * from small to large blocks is not refused for good), and at destroy.
 *
 * Bounds. bytes_max caps the chunk memory. When a class has no free block and
 * a new chunk would pass the cap, the wholly free chunks of the other classes
 * are given back first; if that frees none (or mimalloc has no memory),
 * rv_pool_get() returns NULL: callers turn that into -ENOBUFS backpressure.
 *
 * Ownership and threads. A pool belongs to one shard (owner_shard), and only
 * that shard's thread gets blocks and touches the freelists and counters. A
 * block put on another thread is sent home with rv_ctx_post() and freed by the
 * owner when that task runs ("remote free goes home through the mailbox"). A
 * pool with owner_shard -1 belongs to whichever single thread uses it: it never
 * posts, and the caller guarantees that one thread at a time uses it.
 */
#ifndef RV_CORE_POOL_H
#define RV_CORE_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/assert.h"

/* Size classes: RV_POOL_BLOCK_MIN << i for i < RV_POOL_CLASS_COUNT. */
#define RV_POOL_BLOCK_MIN   64u
#define RV_POOL_BLOCK_MAX   (1u << 20)
#define RV_POOL_CLASS_COUNT 15
#define RV_POOL_BLOCK_ALIGN 64u
/* Chunk alignment; also the span of a chunk in which blocks may start. */
#define RV_POOL_CHUNK_ALIGN RV_POOL_BLOCK_MAX

RV_STATIC_ASSERT(RV_POOL_BLOCK_MIN << (RV_POOL_CLASS_COUNT - 1) == RV_POOL_BLOCK_MAX);
RV_STATIC_ASSERT(RV_POOL_BLOCK_MIN % RV_POOL_BLOCK_ALIGN == 0);

typedef struct rv_pool rv_pool_t;

struct rv_pool_opts {
    int owner_shard;  /* shard whose thread uses the pool; -1: any single thread */
    size_t bytes_max; /* cap on chunk memory, > 0 */
    int numa_node;    /* node to place chunks on; -1: no preference */
};

struct rv_pool_class_stats {
    size_t size;            /* block size of the class, bytes */
    uint64_t blocks_in_use; /* handed out and not yet put back home */
    uint64_t blocks_free;   /* on the freelist or not yet carved from a chunk */
    uint64_t gets;          /* successful rv_pool_get() calls */
    uint64_t puts;          /* blocks back on the freelist, remote ones included */
    uint64_t failures;      /* gets refused: budget spent or no memory */
};

struct rv_pool_stats {
    struct rv_pool_class_stats classes[RV_POOL_CLASS_COUNT];
    size_t bytes_reserved;     /* chunk memory taken from mimalloc, <= bytes_max */
    size_t bytes_max;          /* the cap from the options */
    size_t bytes_in_use;       /* sum of the class sizes of blocks in use */
    uint64_t remote_puts;      /* blocks that came home through rv_ctx_post() */
    uint64_t chunks_reclaimed; /* wholly free chunks given back for another class */
    uint64_t size_failures;    /* gets refused for size 0 or over RV_POOL_BLOCK_MAX */
};

/* Lifecycle. */

/* Create an empty pool (no chunk is allocated until the first get). Returns 0
 * and sets *out; -EINVAL for bytes_max 0, owner_shard < -1, or a numa_node that
 * is < -1 or not a node of this machine; -ENOMEM. On failure *out is unchanged.
 * Any thread. */
RV_MUST_CHECK int rv_pool_create(rv_pool_t **out, const struct rv_pool_opts *opts);

/* Destroy the pool and free its chunks. Every block must have come home
 * (asserted): a block still in use, or a remote put still in flight, is a bug.
 * Call on the owner's thread, or after the owner has stopped. NULL is a no-op. */
void rv_pool_destroy(rv_pool_t *pool);

/* Operations. */

/* A block of the smallest class >= size, 64-byte aligned and uninitialised, or
 * NULL when size is 0 or over RV_POOL_BLOCK_MAX, or the class is empty and the
 * budget (or memory) is spent. Every NULL is counted in the stats. Owner thread
 * only (asserted). */
void *rv_pool_get(rv_pool_t *pool, size_t size);

/* Give a block back. On the owner's thread (or for an owner -1 pool) it goes
 * straight onto its class's freelist, to be reused first (LIFO). On any other
 * thread it is posted home with rv_ctx_post() and freed when the owner runs the
 * task; a failing post is a bug in the runtime's setup (asserted). NULL is a
 * no-op. Any thread. */
void rv_pool_put(void *block);

/* Queries. */

/* The class index for a request of `size` bytes, or -1 for 0 or sizes over
 * RV_POOL_BLOCK_MAX. */
int rv_pool_class_of(size_t size);

/* The block size of class `cls` (0 <= cls < RV_POOL_CLASS_COUNT, asserted). */
size_t rv_pool_class_size(int cls);

/* The class size of a block from some pool (>= what was asked for). Any thread
 * holding the block. */
size_t rv_pool_block_size(const void *block);

/* The pool a block came from. Any thread holding the block. */
rv_pool_t *rv_pool_of(const void *block);

/* The owner shard from the options (-1 for any single thread). Any thread. */
int rv_pool_owner_shard(const rv_pool_t *pool);

/* Fill *out with the counters. Owner thread, or once the pool is quiet. */
void rv_pool_stats(const rv_pool_t *pool, struct rv_pool_stats *out);

/* Bytes in blocks handed out (class sizes). Owner thread, or once quiet. */
size_t rv_pool_in_use_bytes(const rv_pool_t *pool);

/* Consistency check, O(chunks): counters agree with the chunks, the budget
 * holds. For RV_DASSERT and tests. Owner thread, or once quiet. */
bool rv_pool_check(const rv_pool_t *pool);

#endif /* RV_CORE_POOL_H */
