/* tests/core/test_hmap.c - open-addressing map against a reference, deletion, growth. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/hmap.h"

TestSuite(hmap);

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

/* The reference: a fixed universe of keys, each present or not. */
enum { UNIVERSE = 3000 };
static uint64_t ref_key[UNIVERSE];
static uint64_t ref_val[UNIVERSE];
static bool ref_has[UNIVERSE];

static void ref_setup(void)
{
    for (size_t i = 0; i < UNIVERSE; i++)
        ref_key[i] = rng_next();
    /* The edge keys, and runs of sequential ids, must be in the mix. */
    ref_key[0] = 0;
    ref_key[1] = UINT64_MAX;
    for (size_t i = 2; i < 500; i++)
        ref_key[i] = i;
    memset(ref_has, 0, sizeof(ref_has));
}

/* Every entry of m is in the reference and vice versa, each seen once. */
static void expect_same_as_ref(const struct rv_hmap *m)
{
    uint32_t present = 0;
    for (size_t i = 0; i < UNIVERSE; i++) {
        uint64_t v = 0;
        bool found = rv_hmap_get(m, ref_key[i], &v);
        cr_assert_eq(found, ref_has[i], "key %llu", (unsigned long long)ref_key[i]);
        if (found)
            cr_assert_eq(v, ref_val[i]);
        present += ref_has[i];
    }
    cr_assert_eq(rv_hmap_count(m), present);
    uint32_t cursor = 0, walked = 0;
    uint64_t key, val;
    while (rv_hmap_next(m, &cursor, &key, &val)) {
        uint64_t v = 0;
        cr_assert(rv_hmap_get(m, key, &v));
        cr_assert_eq(v, val);
        walked++;
    }
    cr_assert_eq(walked, present);
    cr_assert(rv_hmap_check(m));
}

static void run_random_ops(struct rv_hmap *m, uint64_t seed)
{
    rng_state = seed;
    cr_log_info("seed %llu", (unsigned long long)seed);
    ref_setup();
    for (int op = 0; op < 100000; op++) {
        size_t i = rng_next() % UNIVERSE;
        uint64_t r = rng_next();
        switch (r % 3) {
        case 0: {
            uint64_t v = rng_next();
            cr_assert_eq(rv_hmap_put(m, ref_key[i], v), 0, "op %d", op);
            ref_has[i] = true;
            ref_val[i] = v;
            break;
        }
        case 1: {
            uint64_t v = 0;
            bool found = rv_hmap_get(m, ref_key[i], &v);
            cr_assert_eq(found, ref_has[i], "op %d", op);
            if (found)
                cr_assert_eq(v, ref_val[i], "op %d", op);
            break;
        }
        default: {
            uint64_t old = 0;
            bool found = rv_hmap_del(m, ref_key[i], &old);
            cr_assert_eq(found, ref_has[i], "op %d", op);
            if (found)
                cr_assert_eq(old, ref_val[i], "op %d", op);
            ref_has[i] = false;
            break;
        }
        }
        if (op % 10000 == 0)
            expect_same_as_ref(m);
    }
    expect_same_as_ref(m);
}

Test(hmap, matches_reference_over_random_ops_while_growing)
{
    struct rv_hmap m;
    cr_assert_eq(rv_hmap_init(&m, 0, true), 0);
    run_random_ops(&m, 0x4D41505F01ULL);
    rv_hmap_fini(&m);
}

Test(hmap, matches_reference_over_random_ops_in_fixed_mode)
{
    struct rv_hmap m;
    cr_assert_eq(rv_hmap_init(&m, UNIVERSE, false), 0);
    run_random_ops(&m, 0x4D41505F02ULL);
    cr_assert_eq(rv_hmap_capacity(&m), (uint32_t)UNIVERSE);
    rv_hmap_fini(&m);
}

/* n distinct non-zero keys whose probe sequences start at `home` in a table of
 * slot_count slots. */
static void keys_with_home(uint64_t *out, size_t n, uint32_t home, uint32_t slot_count,
                           uint64_t *next_candidate)
{
    for (size_t found = 0; found < n; (*next_candidate)++) {
        uint64_t k = *next_candidate;
        if (k != 0 && ((uint32_t)rv_hmap_hash(k) & (slot_count - 1)) == home)
            out[found++] = k;
    }
}

Test(hmap, deletion_keeps_the_rest_of_a_cluster_findable)
{
    /* Capacity 12 gives 16 slots. Build one cluster that wraps from slot 14 past
     * the end of the table: keys homed at 14, 15 and 0, interleaved. */
    struct rv_hmap m;
    cr_assert_eq(rv_hmap_init(&m, 12, false), 0);
    cr_assert_eq(m.mask, 15u);
    uint64_t keys[12], candidate = 1;
    keys_with_home(keys, 5, 14, 16, &candidate);
    keys_with_home(keys + 5, 4, 15, 16, &candidate);
    keys_with_home(keys + 9, 3, 0, 16, &candidate);
    const uint64_t seed = 3;
    rng_state = seed;
    cr_log_info("seed %llu", (unsigned long long)seed);
    for (int round = 0; round < 300; round++) {
        rv_hmap_clear(&m);
        for (size_t i = 0; i < 12; i++)
            cr_assert_eq(rv_hmap_put(&m, keys[i], keys[i] * 3), 0);
        /* Delete in a random order; after each, every survivor is findable. */
        size_t order[12];
        for (size_t i = 0; i < 12; i++)
            order[i] = i;
        for (size_t i = 11; i > 0; i--) {
            size_t j = rng_next() % (i + 1);
            size_t t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        for (size_t d = 0; d < 12; d++) {
            uint64_t old = 0;
            cr_assert(rv_hmap_del(&m, keys[order[d]], &old));
            cr_assert_eq(old, keys[order[d]] * 3);
            cr_assert_not(rv_hmap_get(&m, keys[order[d]], NULL));
            for (size_t k = d + 1; k < 12; k++) {
                uint64_t v = 0;
                cr_assert(rv_hmap_get(&m, keys[order[k]], &v), "round %d: lost key after del",
                          round);
                cr_assert_eq(v, keys[order[k]] * 3);
            }
            cr_assert(rv_hmap_check(&m));
        }
        cr_assert_eq(rv_hmap_count(&m), 0u);
        /* No tombstones: an empty map has an all-empty table. */
        for (uint32_t s = 0; s <= m.mask; s++)
            cr_assert_eq(m.slots[s].key, 0u);
    }
    rv_hmap_fini(&m);
}

Test(hmap, grows_and_keeps_every_entry)
{
    struct rv_hmap m;
    cr_assert_eq(rv_hmap_init(&m, 0, true), 0);
    uint32_t capacity_start = rv_hmap_capacity(&m);
    for (uint64_t k = 0; k < 200000; k++)
        cr_assert_eq(rv_hmap_put(&m, k * 0x10000, ~k), 0);
    cr_assert_eq(rv_hmap_count(&m), 200000u);
    cr_assert_gt(rv_hmap_capacity(&m), capacity_start);
    cr_assert_geq(rv_hmap_capacity(&m), 200000u);
    /* Never fuller than 3/4. */
    cr_assert_leq((uint64_t)rv_hmap_count(&m) * 4, ((uint64_t)m.mask + 1) * 3);
    for (uint64_t k = 0; k < 200000; k++) {
        uint64_t v = 0;
        cr_assert(rv_hmap_get(&m, k * 0x10000, &v));
        cr_assert_eq(v, ~k);
    }
    cr_assert_not(rv_hmap_get(&m, 200000 * 0x10000ULL, NULL));
    cr_assert(rv_hmap_check(&m));
    rv_hmap_fini(&m);
}

Test(hmap, sized_map_does_not_grow_within_its_capacity)
{
    struct rv_hmap m;
    cr_assert_eq(rv_hmap_init(&m, 1000, true), 0);
    const struct rv_hmap_slot *table = m.slots;
    for (uint64_t k = 1; k <= 1000; k++)
        cr_assert_eq(rv_hmap_put(&m, k, k), 0);
    cr_assert_eq(m.slots, table, "grew before reaching the requested capacity");
    rv_hmap_fini(&m);
}

Test(hmap, fixed_map_returns_enobufs_when_full)
{
    struct rv_hmap m;
    cr_assert_eq(rv_hmap_init(&m, 100, false), 0);
    cr_assert_eq(rv_hmap_put(&m, 0, 1000), 0); /* the zero key counts too */
    for (uint64_t k = 1; k < 100; k++)
        cr_assert_eq(rv_hmap_put(&m, k, k), 0);
    cr_assert_eq(rv_hmap_count(&m), 100u);
    const struct rv_hmap_slot *table = m.slots;
    cr_assert_eq(rv_hmap_put(&m, 100, 100), -ENOBUFS);
    cr_assert_eq(rv_hmap_put(&m, UINT64_MAX, 1), -ENOBUFS);
    cr_assert_eq(m.slots, table);
    cr_assert_eq(rv_hmap_count(&m), 100u);
    cr_assert_not(rv_hmap_get(&m, 100, NULL));
    /* Replacing an existing key needs no room. */
    cr_assert_eq(rv_hmap_put(&m, 50, 5050), 0);
    cr_assert_eq(rv_hmap_put(&m, 0, 2000), 0);
    uint64_t v = 0;
    cr_assert(rv_hmap_get(&m, 50, &v));
    cr_assert_eq(v, 5050u);
    /* Freeing one entry makes room for one. */
    cr_assert(rv_hmap_del(&m, 0, &v));
    cr_assert_eq(v, 2000u);
    cr_assert_eq(rv_hmap_put(&m, 100, 100), 0);
    cr_assert_eq(rv_hmap_put(&m, 0, 1), -ENOBUFS);
    cr_assert(rv_hmap_check(&m));
    rv_hmap_fini(&m);
}

Test(hmap, stores_keys_zero_and_uint64_max)
{
    struct rv_hmap m;
    cr_assert_eq(rv_hmap_init(&m, 4, true), 0);
    uint64_t v = 7;
    cr_assert_not(rv_hmap_get(&m, 0, &v));
    cr_assert_eq(v, 7u);
    cr_assert_eq(rv_hmap_put(&m, 0, 11), 0);
    cr_assert_eq(rv_hmap_put(&m, UINT64_MAX, 22), 0);
    cr_assert_eq(rv_hmap_put(&m, 1, 33), 0);
    cr_assert_eq(rv_hmap_count(&m), 3u);
    cr_assert(rv_hmap_get(&m, 0, &v));
    cr_assert_eq(v, 11u);
    cr_assert(rv_hmap_get(&m, UINT64_MAX, &v));
    cr_assert_eq(v, 22u);

    /* The walk reports all three, the zero key included. */
    bool seen_zero = false, seen_max = false, seen_one = false;
    uint32_t cursor = 0;
    uint64_t key, val;
    while (rv_hmap_next(&m, &cursor, &key, &val)) {
        if (key == 0) {
            cr_assert_not(seen_zero);
            cr_assert_eq(val, 11u);
            seen_zero = true;
        } else if (key == UINT64_MAX) {
            cr_assert_not(seen_max);
            cr_assert_eq(val, 22u);
            seen_max = true;
        } else {
            cr_assert_eq(key, 1u);
            seen_one = true;
        }
    }
    cr_assert(seen_zero && seen_max && seen_one);
    /* A finished walk stays finished. */
    cr_assert_not(rv_hmap_next(&m, &cursor, &key, &val));

    cr_assert(rv_hmap_del(&m, 0, NULL));
    cr_assert_not(rv_hmap_del(&m, 0, NULL));
    cr_assert(rv_hmap_del(&m, UINT64_MAX, &v));
    cr_assert_eq(v, 22u);
    cr_assert_eq(rv_hmap_count(&m), 1u);
    cr_assert(rv_hmap_check(&m));
    rv_hmap_fini(&m);
}

Test(hmap, init_rejects_bad_capacity)
{
    struct rv_hmap m;
    memset(&m, 0xAB, sizeof(m));
    cr_assert_eq(rv_hmap_init(&m, 0, false), -EINVAL);
    cr_assert_eq(rv_hmap_init(&m, RV_HMAP_CAPACITY_MAX + 1, true), -EINVAL);
    cr_assert_eq(m.count, 0xABABABABu, "*m changed on failure");
    rv_hmap_fini(NULL);
}

Test(hmap, hash_bytes_is_fnv1a)
{
    /* Published FNV-1a 64-bit test vectors. */
    cr_assert_eq(rv_hmap_hash_bytes(NULL, 0), 0xCBF29CE484222325ULL);
    cr_assert_eq(rv_hmap_hash_bytes("a", 1), 0xAF63DC4C8601EC8CULL);
    cr_assert_eq(rv_hmap_hash_bytes("foobar", 6), 0x85944171F73967E8ULL);
    cr_assert_neq(rv_hmap_hash_bytes("topic-1", 7), rv_hmap_hash_bytes("topic-2", 7));
}
