/*
 * core/spsc.h - a bounded single-producer/single-consumer ring of fixed-size slots.
 *
 * One thread produces, one thread consumes; no locks. The producer and the
 * consumer each keep their index on its own cache line and cache the other
 * side's index, so in steady state neither touches the other's line. Publishing
 * is batched: rv_spsc_push() fills slots privately and rv_spsc_publish() makes
 * all of them visible with one release store (the consumer likewise frees slots
 * in batches with rv_spsc_consume_done()).
 *
 *   producer: slot = rv_spsc_reserve(r); fill slot; rv_spsc_commit(r); ...
 *             rv_spsc_publish(r);
 *   consumer: while ((slot = rv_spsc_peek(r))) { use slot; rv_spsc_consume(r); }
 *             rv_spsc_consume_done(r);
 *
 * Indexes are free-running uint32_t; capacity is a power of two <= 2^30.
 */
#ifndef RV_CORE_SPSC_H
#define RV_CORE_SPSC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/assert.h"

#define RV_SPSC_CAPACITY_MAX (1u << 30)

/* Tell the CPU we are spinning on a shared location (saves power, and on SMT
 * cores gives the sibling thread the pipeline). */
static inline void rv_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield" ::: "memory");
#else
    __asm__ volatile("" ::: "memory");
#endif
}

struct rv_spsc {
    /* Shared indexes, each alone on its line: the other side reads it. */
    _Atomic uint32_t tail RV_ALIGNED_CACHE; /* published: slots [head, tail) readable */
    _Atomic uint32_t head RV_ALIGNED_CACHE; /* released: slots below are free */
    /* Producer-private line. */
    uint32_t tail_local RV_ALIGNED_CACHE; /* producer's next slot, >= tail */
    uint32_t head_cache;                  /* producer's last view of head */
    /* Consumer-private line. */
    uint32_t head_local RV_ALIGNED_CACHE; /* consumer's next slot, >= head */
    uint32_t tail_cache;                  /* consumer's last view of tail */
    /* Read-only after init (shared reads only, never invalidated). */
    uint32_t mask RV_ALIGNED_CACHE; /* capacity - 1 */
    uint32_t elem_size;             /* bytes per slot, a multiple of 8 */
    uint8_t *slots;                 /* capacity * elem_size bytes, 64-byte aligned */
};

/* Lifecycle. */

/* Initialise an empty ring of `capacity` (a power of two) slots of elem_size
 * bytes. Returns 0, -EINVAL for a bad capacity/size, -ENOMEM. */
RV_MUST_CHECK int rv_spsc_init(struct rv_spsc *r, uint32_t capacity, uint32_t elem_size);
/* Release the slots. The ring must not be in use. NULL is a no-op. */
void rv_spsc_fini(struct rv_spsc *r);

/* Queries. */
static inline uint32_t rv_spsc_capacity(const struct rv_spsc *r)
{
    return r->mask + 1;
}

/* Producer side. */

/* The next free slot, or NULL when the ring is full. Call rv_spsc_commit() after
 * filling it. The slot stays invisible to the consumer until rv_spsc_publish(). */
static inline void *rv_spsc_reserve(struct rv_spsc *r)
{
    if (r->tail_local - r->head_cache > r->mask) {
        /* Acquire pairs with the consumer's release in rv_spsc_consume_done():
         * once we see the slot freed, the consumer has finished reading it. */
        r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
        if (r->tail_local - r->head_cache > r->mask)
            return NULL;
    }
    return r->slots + (size_t)(r->tail_local & r->mask) * r->elem_size;
}

static inline void rv_spsc_commit(struct rv_spsc *r)
{
    r->tail_local++;
}

/* Make every committed slot visible to the consumer (one release store). */
static inline void rv_spsc_publish(struct rv_spsc *r)
{
    /* Release: the slot contents written before are visible to a consumer that
     * acquires this tail. */
    atomic_store_explicit(&r->tail, r->tail_local, memory_order_release);
}

/* Whether committed slots wait for rv_spsc_publish(). */
static inline bool rv_spsc_has_unpublished(const struct rv_spsc *r)
{
    return r->tail_local != atomic_load_explicit(&r->tail, memory_order_relaxed);
}

/* Copy one element in and commit it; false when full. Does not publish. */
static inline bool rv_spsc_push(struct rv_spsc *r, const void *elem)
{
    void *slot = rv_spsc_reserve(r);
    if (slot == NULL)
        return false;
    __builtin_memcpy(slot, elem, r->elem_size);
    rv_spsc_commit(r);
    return true;
}

/* Consumer side. */

/* The oldest unread slot, or NULL when none is published. */
static inline void *rv_spsc_peek(struct rv_spsc *r)
{
    if (r->head_local == r->tail_cache) {
        /* Acquire pairs with the producer's release in rv_spsc_publish(). */
        r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (r->head_local == r->tail_cache)
            return NULL;
    }
    return r->slots + (size_t)(r->head_local & r->mask) * r->elem_size;
}

/* Done with the slot rv_spsc_peek() returned (still not reusable by the producer
 * until rv_spsc_consume_done()). */
static inline void rv_spsc_consume(struct rv_spsc *r)
{
    RV_ASSERT(r->head_local != r->tail_cache);
    r->head_local++;
}

/* Hand every consumed slot back to the producer (one release store). */
static inline void rv_spsc_consume_done(struct rv_spsc *r)
{
    /* Release: our reads of the slots happen before the producer reuses them. */
    atomic_store_explicit(&r->head, r->head_local, memory_order_release);
}

/* Copy the oldest element out and consume it; false when empty. Does not hand the
 * slot back: call rv_spsc_consume_done() after a batch. */
static inline bool rv_spsc_pop(struct rv_spsc *r, void *elem)
{
    void *slot = rv_spsc_peek(r);
    if (slot == NULL)
        return false;
    __builtin_memcpy(elem, slot, r->elem_size);
    rv_spsc_consume(r);
    return true;
}

/* Whether a consumer would find something (a fresh acquire load of tail). Safe on
 * the consumer thread only. */
static inline bool rv_spsc_is_empty(struct rv_spsc *r)
{
    return r->head_local == atomic_load_explicit(&r->tail, memory_order_acquire);
}

#endif /* RV_CORE_SPSC_H */
