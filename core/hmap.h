/*
 * core/hmap.h - an open-addressing hash map from uint64 keys to uint64 values.
 *
 * Linear probing over a power-of-two table of {key, value} slots. Key 0 marks an
 * empty slot, so the key 0 itself lives outside the table (has_zero/zero_val):
 * every uint64 key, 0 and UINT64_MAX included, can be stored. Deletion shifts
 * the following run of the cluster back instead of leaving tombstones, so the
 * table never needs rebuilding and lookups stay short however many deletes ran.
 * Keys are hashed with the murmur3 64-bit finalizer, which spreads sequential ids
 * over the whole table.
 *
 * Two modes (rv_hmap_init):
 *   growable: the table doubles when it would pass 3/4 full. That allocates, so
 *             use it off the hot path or size it up front.
 *   fixed:    the table is sized once for `capacity` entries (at most 3/4 full)
 *             and a put of a new key beyond that returns -ENOBUFS: backpressure,
 *             never an allocation.
 *
 * A map belongs to one thread (its shard); nothing here synchronises.
 */
#ifndef RV_CORE_HMAP_H
#define RV_CORE_HMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/assert.h"

#define RV_HMAP_CAPACITY_MAX (1u << 30) /* entries; the table then has 2^31 slots */

struct rv_hmap_slot {
    uint64_t key; /* 0: the slot is empty */
    uint64_t val;
};

struct rv_hmap {
    struct rv_hmap_slot *slots; /* mask + 1 slots */
    uint32_t mask;              /* slot count - 1; slot count is a power of two */
    uint32_t count;             /* entries, the zero key included */
    uint32_t count_max;         /* fixed: the capacity; growable: 3/4 of the slots */
    bool can_grow;              /* double the table instead of returning -ENOBUFS */
    bool has_zero;              /* key 0 is present, its value in zero_val */
    uint64_t zero_val;
};

/* Lifecycle. */

/* Initialise an empty map with room for `capacity` entries without growing. With
 * can_grow false, capacity is also the limit (and must be >= 1); with can_grow
 * true, 0 picks a small table. Returns 0, -EINVAL for a capacity above
 * RV_HMAP_CAPACITY_MAX (or 0 in fixed mode), -ENOMEM. On failure *m is
 * untouched. */
RV_MUST_CHECK int rv_hmap_init(struct rv_hmap *m, uint32_t capacity, bool can_grow);

/* Free the table. NULL is a no-op; afterwards *m is empty and unusable until
 * initialised again. */
void rv_hmap_fini(struct rv_hmap *m);

/* Operations. */

/* Insert key -> val, or replace the value of an existing key. Returns 0;
 * -ENOBUFS when the key is new and the map is fixed and full (or already at its
 * largest size); -ENOMEM when growing failed. On failure the map is unchanged. */
RV_MUST_CHECK int rv_hmap_put(struct rv_hmap *m, uint64_t key, uint64_t val);

/* Remove key. Returns whether it was present; if so and out_old is not NULL, its
 * value is stored there. Never allocates. */
bool rv_hmap_del(struct rv_hmap *m, uint64_t key, uint64_t *out_old);

/* Remove every entry, keeping the table. */
void rv_hmap_clear(struct rv_hmap *m);

/* Queries. */

/* Step through the entries: start with *cursor = 0 and call until it returns
 * false; each true return stores one entry in *out_key and *out_val. The order is
 * unspecified. The map must not be modified during a walk (a deletion shifts
 * entries across the cursor). */
bool rv_hmap_next(const struct rv_hmap *m, uint32_t *cursor, uint64_t *out_key, uint64_t *out_val);

/* FNV-1a (64-bit) of len bytes at p, for callers that key the map by a name:
 * store rv_hmap_hash_bytes(name) as the key and keep the name in the value's
 * object to resolve the (rare) collisions. Deterministic across runs and hosts;
 * p may be NULL when len is 0. */
uint64_t rv_hmap_hash_bytes(const void *p, size_t len);

/* Whether the table is consistent: every entry is reachable from its home slot
 * without crossing an empty slot, and the count is right. O(slots); for
 * RV_DASSERT and tests. */
bool rv_hmap_check(const struct rv_hmap *m);

/* Mix a key into a slot hash (the murmur3 fmix64 finalizer: a bijection in which
 * every input bit affects every output bit). */
static inline uint64_t rv_hmap_hash(uint64_t key)
{
    key ^= key >> 33;
    key *= 0xFF51AFD7ED558CCDULL;
    key ^= key >> 33;
    key *= 0xC4CEB9FE1A85EC53ULL;
    key ^= key >> 33;
    return key;
}

/* Number of entries. */
static inline uint32_t rv_hmap_count(const struct rv_hmap *m)
{
    return m->count;
}

/* Entries the map holds before the next put of a new key grows it (growable) or
 * fails with -ENOBUFS (fixed). */
static inline uint32_t rv_hmap_capacity(const struct rv_hmap *m)
{
    return m->count_max;
}

/* Look key up. Returns whether it is present; if so and out is not NULL, stores
 * its value in *out. */
static inline bool rv_hmap_get(const struct rv_hmap *m, uint64_t key, uint64_t *out)
{
    if (RV_UNLIKELY(key == 0)) {
        if (m->has_zero && out != NULL)
            *out = m->zero_val;
        return m->has_zero;
    }
    /* The table is never full, so the probe meets the key or an empty slot. */
    for (uint32_t i = (uint32_t)rv_hmap_hash(key) & m->mask;; i = (i + 1) & m->mask) {
        const struct rv_hmap_slot *s = &m->slots[i];
        if (s->key == key) {
            if (out != NULL)
                *out = s->val;
            return true;
        }
        if (s->key == 0)
            return false;
    }
}

#endif /* RV_CORE_HMAP_H */
