/*
 * core/pool.c - per-shard bounded block pool (see pool.h for the layout).
 *
 * Each class keeps a LIFO freelist threaded through its free blocks and a bump
 * range of not-yet-carved blocks in its newest chunk. get pops the freelist,
 * else carves, else takes a new chunk if the budget allows. Invariants, per
 * class: blocks_in_use + blocks_free == blocks_total (the blocks of the class's
 * chunks), and for the pool: bytes_reserved <= bytes_max.
 *
 * Under AddressSanitizer, free and uncarved blocks are poisoned, so a use after
 * rv_pool_put() or a double put is reported (the asan_interface.h macros are
 * no-ops in other builds).
 */
#include "core/pool.h"

#include <errno.h>
#include <mimalloc.h>
#include <numa.h>
#include <numaif.h>
#include <sanitizer/asan_interface.h>
#include <stdlib.h>
#include <string.h>

#include "core/ctx.h"
#include "core/err.h"
#include "core/trace.h"

#define POOL_CHUNK_MAGIC        0x72766368u /* "rvch" */
#define POOL_CHUNK_HEADER_BYTES 64u
/* Nodes an mbind mask can name; the kernel reads maxnode - 1 bits. */
#define POOL_NODE_MAX 1024

RV_STATIC_ASSERT((RV_POOL_CHUNK_ALIGN & (RV_POOL_CHUNK_ALIGN - 1)) == 0);
RV_STATIC_ASSERT(POOL_CHUNK_HEADER_BYTES % RV_POOL_BLOCK_ALIGN == 0);
RV_STATIC_ASSERT(RV_POOL_BLOCK_MAX <= RV_POOL_CHUNK_ALIGN);

/* The first 64 bytes of every chunk. Written by the owner when the chunk is
 * made; afterwards only blocks_free (and next, when a chunk leaves the list)
 * change, on the owner's thread, so any thread holding a block may read the
 * rest. */
struct pool_chunk {
    uint32_t magic;          /* POOL_CHUNK_MAGIC while the chunk is live */
    uint32_t cls;            /* class index */
    uint32_t block_size;     /* bytes, a power of two */
    uint32_t block_count;    /* blocks in the chunk */
    size_t bytes;            /* header + blocks */
    rv_pool_t *pool;         /* owner */
    struct pool_chunk *next; /* pool's chunk list, newest first */
    uint32_t blocks_free;    /* on the freelist or uncarved: all of them = reclaimable */
} RV_ALIGNED_CACHE;

RV_STATIC_ASSERT(sizeof(struct pool_chunk) == POOL_CHUNK_HEADER_BYTES);

/* A free block: its first word links to the next free block of the class. */
struct pool_free {
    struct pool_free *next;
};

struct pool_class {
    struct pool_free *free_head; /* LIFO: the most recently put block first */
    uint8_t *carve_next;         /* next never-used block of the newest chunk */
    uint8_t *carve_end;          /* end of that chunk's blocks */
    uint64_t blocks_total;       /* blocks in the class's chunks */
    uint64_t blocks_free;        /* on the freelist or uncarved */
    uint64_t blocks_in_use;      /* handed out, not home yet */
    uint64_t gets;               /* successful gets */
    uint64_t puts;               /* blocks back on the freelist */
    uint64_t failures;           /* gets refused: budget or memory */
};

struct rv_pool {
    int owner_shard;           /* -1: any single thread */
    int numa_node;             /* -1: no preference */
    bool is_numa_bound;        /* bind chunks: a node was asked for and NUMA works */
    size_t bytes_max;          /* cap on bytes_reserved */
    size_t bytes_reserved;     /* sum of chunk bytes */
    size_t chunk_count;        /* chunks on the list */
    struct pool_chunk *chunks; /* newest first */
    uint64_t remote_puts;      /* blocks that came home through rv_ctx_post */
    uint64_t chunks_reclaimed; /* free chunks given back for another class */
    uint64_t size_failures;    /* gets for size 0 or over RV_POOL_BLOCK_MAX */
    struct pool_class classes[RV_POOL_CLASS_COUNT];
};

static bool pool_is_home(const rv_pool_t *pool)
{
    return pool->owner_shard < 0 || rv_ctx_shard_id() == pool->owner_shard;
}

/* Size classes. */

int rv_pool_class_of(size_t size)
{
    if (size == 0 || size > RV_POOL_BLOCK_MAX)
        return -1;
    if (size <= RV_POOL_BLOCK_MIN)
        return 0;
    /* ceil(log2(size)) - log2(64). */
    int cls = (64 - __builtin_clzll((unsigned long long)size - 1)) - 6;
    RV_ASSERT(cls > 0 && cls < RV_POOL_CLASS_COUNT);
    return cls;
}

size_t rv_pool_class_size(int cls)
{
    RV_ASSERT(cls >= 0 && cls < RV_POOL_CLASS_COUNT);
    return (size_t)RV_POOL_BLOCK_MIN << cls;
}

/* Lifecycle. */

static int pool_check_opts(const struct rv_pool_opts *opts)
{
    if (opts->bytes_max == 0)
        return rv_errf(-EINVAL, "pool: bytes_max is 0");
    if (opts->owner_shard < -1)
        return rv_errf(-EINVAL, "pool: owner_shard %d", opts->owner_shard);
    if (opts->numa_node < -1 || opts->numa_node >= POOL_NODE_MAX)
        return rv_errf(-EINVAL, "pool: numa_node %d", opts->numa_node);
    if (opts->numa_node >= 0 && numa_available() >= 0 && opts->numa_node > numa_max_node())
        return rv_errf(-EINVAL, "pool: numa_node %d: no such node (max %d)", opts->numa_node,
                       numa_max_node());
    return 0;
}

int rv_pool_create(rv_pool_t **out, const struct rv_pool_opts *opts)
{
    RV_ASSERT(out != NULL);
    RV_ASSERT(opts != NULL);
    int rc = pool_check_opts(opts);
    if (rc < 0)
        return rc;
    /* Control path: the pool itself is plain heap memory, visible to LSan. */
    rv_pool_t *pool = calloc(1, sizeof(*pool));
    if (pool == NULL)
        return rv_errf(-ENOMEM, "pool: no memory for the pool");
    pool->owner_shard = opts->owner_shard;
    pool->numa_node = opts->numa_node;
    pool->is_numa_bound = opts->numa_node >= 0 && numa_available() >= 0;
    pool->bytes_max = opts->bytes_max;
    *out = pool;
    return 0;
}

void rv_pool_destroy(rv_pool_t *pool)
{
    if (pool == NULL)
        return;
    for (int cls = 0; cls < RV_POOL_CLASS_COUNT; cls++)
        RV_ASSERT(pool->classes[cls].blocks_in_use == 0);
    struct pool_chunk *c = pool->chunks;
    for (size_t i = 0; i < pool->chunk_count; i++) {
        RV_ASSERT(c != NULL);
        RV_ASSERT(c->pool == pool);
        struct pool_chunk *next = c->next;
        /* A stale put after this must not find a live-looking header. */
        c->magic = 0;
        ASAN_UNPOISON_MEMORY_REGION(c, c->bytes);
        mi_free(c);
        c = next;
    }
    RV_ASSERT(c == NULL);
    free(pool);
}

/* Chunks. */

/* Prefer the pool's node for the chunk's pages. Best effort: the pages still
 * work anywhere, so a refusal (a container without mbind) is only traced. */
static void pool_chunk_bind(const rv_pool_t *pool, void *chunk, size_t bytes)
{
    unsigned long mask[POOL_NODE_MAX / (8 * sizeof(unsigned long))];
    const size_t bits_per_word = 8 * sizeof(unsigned long);
    /* The aligned span is whole pages on any page size; the 64 bytes the last
     * block runs past it share a page with other data and are left alone. */
    size_t len = bytes & ~((size_t)RV_POOL_CHUNK_ALIGN - 1);

    memset(mask, 0, sizeof(mask));
    mask[(size_t)pool->numa_node / bits_per_word] = 1UL
                                                    << ((size_t)pool->numa_node % bits_per_word);
    if (mbind(chunk, len, MPOL_PREFERRED, mask, POOL_NODE_MAX + 1, MPOL_MF_MOVE) != 0) {
        int err = -errno;
        rv_debug("pool: mbind to node %d: %s", pool->numa_node, rv_strerror(err));
    }
}

/* Add a chunk for class `cls` and make it the class's carve range. NULL when
 * the budget would be passed or mimalloc has no memory. Owner thread. */
static struct pool_chunk *pool_chunk_new(rv_pool_t *pool, int cls)
{
    struct pool_class *pc = &pool->classes[cls];
    size_t block_size = rv_pool_class_size(cls);
    /* Every block must start within the aligned span so that rounding its
     * address down finds this header; the last one may run past the span. */
    size_t span = RV_POOL_CHUNK_ALIGN - POOL_CHUNK_HEADER_BYTES;
    size_t block_count = (span + block_size - 1) / block_size;
    size_t bytes = POOL_CHUNK_HEADER_BYTES + block_count * block_size;

    RV_ASSERT(pool->bytes_reserved <= pool->bytes_max);
    RV_ASSERT(pc->carve_next == pc->carve_end);
    if (bytes > pool->bytes_max - pool->bytes_reserved)
        return NULL;
    struct pool_chunk *c = mi_malloc_aligned(bytes, RV_POOL_CHUNK_ALIGN);
    if (c == NULL)
        return NULL;
    RV_ASSERT(((uintptr_t)c & (RV_POOL_CHUNK_ALIGN - 1)) == 0);
    if (pool->is_numa_bound)
        pool_chunk_bind(pool, c, bytes);
    *c = (struct pool_chunk){
        .magic = POOL_CHUNK_MAGIC,
        .cls = (uint32_t)cls,
        .block_size = (uint32_t)block_size,
        .block_count = (uint32_t)block_count,
        .bytes = bytes,
        .pool = pool,
        .next = pool->chunks,
        .blocks_free = (uint32_t)block_count,
    };
    pool->chunks = c;
    pool->chunk_count++;
    pool->bytes_reserved += bytes;
    pc->carve_next = (uint8_t *)c + POOL_CHUNK_HEADER_BYTES;
    pc->carve_end = pc->carve_next + block_count * block_size;
    pc->blocks_total += block_count;
    pc->blocks_free += block_count;
    ASAN_POISON_MEMORY_REGION(pc->carve_next, block_count * block_size);
    return c;
}

/* The chunk of a block, checking that the pointer is a block start. */
static struct pool_chunk *pool_chunk_of(const void *block)
{
    uintptr_t addr = (uintptr_t)block;
    struct pool_chunk *c = (struct pool_chunk *)(addr & ~(uintptr_t)(RV_POOL_CHUNK_ALIGN - 1));

    RV_ASSERT(c->magic == POOL_CHUNK_MAGIC);
    RV_ASSERT(addr >= (uintptr_t)c + POOL_CHUNK_HEADER_BYTES);
    uintptr_t pos = addr - (uintptr_t)c - POOL_CHUNK_HEADER_BYTES;
    RV_ASSERT((pos & (c->block_size - 1)) == 0);
    RV_ASSERT(pos / c->block_size < c->block_count);
    return c;
}

/*
 * Give every wholly free chunk of the other classes back to mimalloc, so that
 * class `cls` can have one within the budget: a pool whose traffic moved from
 * one size to another (small records, then large batches) does not stay
 * refused for good. Slow path (a get the budget refused): each class that
 * gives a chunk back has its freelist walked once. Returns the chunks freed.
 */
static size_t pool_reclaim(rv_pool_t *pool, int cls)
{
    size_t freed = 0;
    for (int k = 0; k < RV_POOL_CLASS_COUNT; k++) {
        struct pool_class *pc = &pool->classes[k];
        if (k == cls || pc->blocks_free == 0)
            continue;
        bool has_free_chunk = false;
        for (struct pool_chunk *c = pool->chunks; c != NULL && !has_free_chunk; c = c->next)
            has_free_chunk = (int)c->cls == k && c->blocks_free == c->block_count;
        if (!has_free_chunk)
            continue;
        /* Rebuild the freelist without the free chunks' blocks, in order. A
         * block is poisoned again once it is not the list's tail. */
        size_t block_size = rv_pool_class_size(k);
        struct pool_free *rest = pc->free_head, *head = NULL, *tail = NULL;
        while (rest != NULL) {
            struct pool_free *f = rest;
            ASAN_UNPOISON_MEMORY_REGION(f, sizeof(*f));
            rest = f->next;
            const struct pool_chunk *c = pool_chunk_of(f);
            if (c->blocks_free == c->block_count)
                continue; /* its memory goes back with its chunk */
            f->next = NULL;
            if (tail != NULL) {
                tail->next = f;
                ASAN_POISON_MEMORY_REGION(tail, block_size);
            } else {
                head = f;
            }
            tail = f;
        }
        if (tail != NULL)
            ASAN_POISON_MEMORY_REGION(tail, block_size);
        pc->free_head = head;
        struct pool_chunk **cl = &pool->chunks;
        while (*cl != NULL) {
            struct pool_chunk *c = *cl;
            if ((int)c->cls != k || c->blocks_free != c->block_count) {
                cl = &c->next;
                continue;
            }
            if (pc->carve_end == (uint8_t *)c + c->bytes)
                pc->carve_next = pc->carve_end = NULL; /* its uncarved rest goes too */
            *cl = c->next;
            pc->blocks_total -= c->block_count;
            pc->blocks_free -= c->block_count;
            pool->chunk_count--;
            pool->bytes_reserved -= c->bytes;
            pool->chunks_reclaimed++;
            c->magic = 0;
            ASAN_UNPOISON_MEMORY_REGION(c, c->bytes);
            mi_free(c);
            freed++;
        }
    }
    if (freed > 0)
        rv_debug("pool: gave back %zu free chunks for class %zu B", freed, rv_pool_class_size(cls));
    return freed;
}

/* Operations. */

static void *pool_class_pop(rv_pool_t *pool, int cls)
{
    struct pool_class *pc = &pool->classes[cls];
    size_t block_size = rv_pool_class_size(cls);
    struct pool_free *f = pc->free_head;

    if (f != NULL) {
        ASAN_UNPOISON_MEMORY_REGION(f, block_size);
        pc->free_head = f->next;
        pool_chunk_of(f)->blocks_free--;
        return f;
    }
    if (pc->carve_next == pc->carve_end && pool_chunk_new(pool, cls) == NULL &&
        (pool_reclaim(pool, cls) == 0 || pool_chunk_new(pool, cls) == NULL))
        return NULL;
    void *block = pc->carve_next;
    pc->carve_next += block_size;
    ASAN_UNPOISON_MEMORY_REGION(block, block_size);
    pool_chunk_of(block)->blocks_free--;
    return block;
}

void *rv_pool_get(rv_pool_t *pool, size_t size)
{
    RV_ASSERT(pool != NULL);
    RV_ASSERT(pool_is_home(pool));
    int cls = rv_pool_class_of(size);
    if (cls < 0) {
        pool->size_failures++;
        return NULL;
    }
    struct pool_class *pc = &pool->classes[cls];
    void *block = pool_class_pop(pool, cls);
    if (block == NULL) {
        pc->failures++;
        return NULL;
    }
    RV_ASSERT(pc->blocks_free > 0);
    RV_ASSERT(((uintptr_t)block & (RV_POOL_BLOCK_ALIGN - 1)) == 0);
    pc->blocks_free--;
    pc->blocks_in_use++;
    pc->gets++;
    return block;
}

static void pool_put_local(rv_pool_t *pool, struct pool_chunk *c, void *block)
{
    c->blocks_free++;
    struct pool_class *pc = &pool->classes[c->cls];
    struct pool_free *f = block;

    RV_ASSERT(pc->blocks_in_use > 0);
    f->next = pc->free_head;
    pc->free_head = f;
    ASAN_POISON_MEMORY_REGION(block, c->block_size);
    pc->blocks_in_use--;
    pc->blocks_free++;
    pc->puts++;
}

/* Runs on the owner's thread: the second half of a remote rv_pool_put(). */
static void pool_put_home(void *block)
{
    struct pool_chunk *c = pool_chunk_of(block);
    rv_pool_t *pool = c->pool;

    RV_ASSERT(pool_is_home(pool));
    pool->remote_puts++;
    pool_put_local(pool, c, block);
}

void rv_pool_put(void *block)
{
    if (block == NULL)
        return;
    struct pool_chunk *c = pool_chunk_of(block);
    rv_pool_t *pool = c->pool;
    if (pool_is_home(pool)) {
        pool_put_local(pool, c, block);
        return;
    }
    /* Freelists are the owner's alone: the block travels home and the owner
     * frees it. A runtime that cannot post is set up wrong. */
    int rc = rv_ctx_post(pool->owner_shard, pool_put_home, block);
    RV_ASSERT(rc == 0);
}

/* Queries. */

size_t rv_pool_block_size(const void *block)
{
    RV_ASSERT(block != NULL);
    return pool_chunk_of(block)->block_size;
}

rv_pool_t *rv_pool_of(const void *block)
{
    RV_ASSERT(block != NULL);
    return pool_chunk_of(block)->pool;
}

int rv_pool_owner_shard(const rv_pool_t *pool)
{
    RV_ASSERT(pool != NULL);
    return pool->owner_shard;
}

void rv_pool_stats(const rv_pool_t *pool, struct rv_pool_stats *out)
{
    RV_ASSERT(pool != NULL);
    RV_ASSERT(out != NULL);
    memset(out, 0, sizeof(*out));
    for (int cls = 0; cls < RV_POOL_CLASS_COUNT; cls++) {
        const struct pool_class *pc = &pool->classes[cls];
        struct rv_pool_class_stats *cs = &out->classes[cls];
        cs->size = rv_pool_class_size(cls);
        cs->blocks_in_use = pc->blocks_in_use;
        cs->blocks_free = pc->blocks_free;
        cs->gets = pc->gets;
        cs->puts = pc->puts;
        cs->failures = pc->failures;
        out->bytes_in_use += (size_t)pc->blocks_in_use * cs->size;
    }
    out->bytes_reserved = pool->bytes_reserved;
    out->bytes_max = pool->bytes_max;
    out->remote_puts = pool->remote_puts;
    out->chunks_reclaimed = pool->chunks_reclaimed;
    out->size_failures = pool->size_failures;
}

size_t rv_pool_in_use_bytes(const rv_pool_t *pool)
{
    RV_ASSERT(pool != NULL);
    size_t bytes = 0;
    for (int cls = 0; cls < RV_POOL_CLASS_COUNT; cls++)
        bytes += (size_t)pool->classes[cls].blocks_in_use * rv_pool_class_size(cls);
    return bytes;
}

bool rv_pool_check(const rv_pool_t *pool)
{
    uint64_t blocks[RV_POOL_CLASS_COUNT] = {0};
    uint64_t free_blocks[RV_POOL_CLASS_COUNT] = {0};
    size_t bytes = 0;
    RV_ASSERT(pool != NULL);
    const struct pool_chunk *c = pool->chunks;

    for (size_t i = 0; i < pool->chunk_count; i++) {
        if (c == NULL || c->magic != POOL_CHUNK_MAGIC || c->pool != pool)
            return false;
        if (c->cls >= RV_POOL_CLASS_COUNT || c->block_size != rv_pool_class_size((int)c->cls))
            return false;
        if (c->blocks_free > c->block_count)
            return false;
        blocks[c->cls] += c->block_count;
        free_blocks[c->cls] += c->blocks_free;
        bytes += c->bytes;
        c = c->next;
    }
    if (c != NULL || bytes != pool->bytes_reserved || bytes > pool->bytes_max)
        return false;
    for (int cls = 0; cls < RV_POOL_CLASS_COUNT; cls++) {
        const struct pool_class *pc = &pool->classes[cls];
        if (pc->blocks_total != blocks[cls] || pc->blocks_free != free_blocks[cls])
            return false;
        if (pc->blocks_in_use + pc->blocks_free != pc->blocks_total)
            return false;
        if (pc->gets - pc->puts != pc->blocks_in_use)
            return false;
    }
    return true;
}
