/* core/hmap.c - hash map set-up, insertion with growth, backward-shift deletion. */
#include "core/hmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define HMAP_SLOTS_MIN ((uint64_t)8)
#define HMAP_SLOTS_MAX ((uint64_t)1 << 31)

RV_STATIC_ASSERT((uint64_t)RV_HMAP_CAPACITY_MAX * 4 / 3 <= HMAP_SLOTS_MAX);

/* The smallest power-of-two slot count that holds `entries` at most 3/4 full. */
static uint64_t hmap_slots_for(uint64_t entries)
{
    uint64_t slots = HMAP_SLOTS_MIN;
    while (slots * 3 / 4 < entries)
        slots *= 2;
    RV_ASSERT(slots <= HMAP_SLOTS_MAX);
    return slots;
}

/* The slot where key's probe sequence starts. */
static uint32_t hmap_home(const struct rv_hmap *m, uint64_t key)
{
    return (uint32_t)rv_hmap_hash(key) & m->mask;
}

/* The slot holding key, or the empty slot that ends its probe sequence. */
static uint32_t hmap_find(const struct rv_hmap *m, uint64_t key)
{
    RV_ASSERT(key != 0);
    uint32_t i = hmap_home(m, key);
    for (uint64_t probes = 0; probes <= m->mask; probes++) {
        if (m->slots[i].key == key || m->slots[i].key == 0)
            return i;
        i = (i + 1) & m->mask;
    }
    /* count_max < slot count keeps an empty slot in every table. */
    RV_ASSERT(false);
    return 0;
}

int rv_hmap_init(struct rv_hmap *m, uint32_t capacity, bool can_grow)
{
    RV_ASSERT(m != NULL);
    if (capacity > RV_HMAP_CAPACITY_MAX || (capacity == 0 && !can_grow))
        return -EINVAL;
    uint64_t slots = hmap_slots_for(capacity);
    struct rv_hmap_slot *table = calloc(slots, sizeof(*table));
    if (table == NULL)
        return -ENOMEM;
    memset(m, 0, sizeof(*m));
    m->slots = table;
    m->mask = (uint32_t)(slots - 1);
    m->count_max = can_grow ? (uint32_t)(slots * 3 / 4) : capacity;
    m->can_grow = can_grow;
    RV_ASSERT(m->count_max < slots);
    return 0;
}

void rv_hmap_fini(struct rv_hmap *m)
{
    if (m == NULL)
        return;
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

/* Move every entry into a table twice the size. On -ENOMEM nothing changed. */
static int hmap_grow(struct rv_hmap *m)
{
    uint64_t slots_old = (uint64_t)m->mask + 1;
    uint64_t slots = slots_old * 2;
    if (slots > HMAP_SLOTS_MAX)
        return -ENOBUFS;
    struct rv_hmap_slot *table = calloc(slots, sizeof(*table));
    if (table == NULL)
        return -ENOMEM;
    struct rv_hmap_slot *old = m->slots;
    m->slots = table;
    m->mask = (uint32_t)(slots - 1);
    m->count_max = (uint32_t)(slots * 3 / 4);
    for (uint64_t i = 0; i < slots_old; i++) {
        if (old[i].key == 0)
            continue;
        uint32_t j = hmap_find(m, old[i].key);
        RV_ASSERT(m->slots[j].key == 0);
        m->slots[j] = old[i];
    }
    free(old);
    RV_DASSERT(rv_hmap_check(m));
    return 0;
}

/* Make room for one more entry: grow, or refuse when the map may not. */
static int hmap_reserve_one(struct rv_hmap *m)
{
    if (m->count < m->count_max)
        return 0;
    if (!m->can_grow)
        return -ENOBUFS;
    return hmap_grow(m);
}

int rv_hmap_put(struct rv_hmap *m, uint64_t key, uint64_t val)
{
    RV_ASSERT(m != NULL);
    RV_ASSERT(m->slots != NULL);
    if (key == 0) {
        if (!m->has_zero) {
            int err = hmap_reserve_one(m);
            if (err < 0)
                return err;
            m->has_zero = true;
            m->count++;
        }
        m->zero_val = val;
        return 0;
    }
    uint32_t i = hmap_find(m, key);
    if (m->slots[i].key == 0) {
        const struct rv_hmap_slot *table_before = m->slots;
        int err = hmap_reserve_one(m);
        if (err < 0)
            return err;
        /* Growing rehashed every entry, so the key's empty slot moved. */
        if (m->slots != table_before)
            i = hmap_find(m, key);
        m->slots[i].key = key;
        m->count++;
    }
    m->slots[i].val = val;
    RV_ASSERT(m->count <= m->count_max);
    return 0;
}

/* Close the hole at `hole` by pulling back the entries after it that may sit
 * there, so no probe sequence ever crosses an empty slot it shouldn't. */
static void hmap_del_shift(struct rv_hmap *m, uint32_t hole)
{
    uint32_t j = hole;
    for (uint64_t steps = 0; steps <= m->mask; steps++) {
        j = (j + 1) & m->mask;
        uint64_t key = m->slots[j].key;
        if (key == 0)
            break;
        uint32_t home = hmap_home(m, key);
        /* The entry may move to the hole if the hole lies on its probe path,
         * i.e. cyclically within [home, j). */
        if (((j - home) & m->mask) >= ((j - hole) & m->mask)) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole].key = 0;
    m->slots[hole].val = 0;
}

bool rv_hmap_del(struct rv_hmap *m, uint64_t key, uint64_t *out_old)
{
    RV_ASSERT(m != NULL);
    if (key == 0) {
        if (!m->has_zero)
            return false;
        if (out_old != NULL)
            *out_old = m->zero_val;
        m->has_zero = false;
        m->zero_val = 0;
        m->count--;
        return true;
    }
    uint32_t i = hmap_find(m, key);
    if (m->slots[i].key == 0)
        return false;
    if (out_old != NULL)
        *out_old = m->slots[i].val;
    hmap_del_shift(m, i);
    RV_ASSERT(m->count > 0);
    m->count--;
    RV_DASSERT(rv_hmap_check(m));
    return true;
}

void rv_hmap_clear(struct rv_hmap *m)
{
    RV_ASSERT(m != NULL);
    memset(m->slots, 0, ((size_t)m->mask + 1) * sizeof(*m->slots));
    m->count = 0;
    m->has_zero = false;
    m->zero_val = 0;
}

bool rv_hmap_next(const struct rv_hmap *m, uint32_t *cursor, uint64_t *out_key, uint64_t *out_val)
{
    RV_ASSERT(m != NULL);
    RV_ASSERT(cursor != NULL);
    /* Cursor values 0..mask walk the table; mask + 1 is the zero key. */
    while (*cursor <= m->mask) {
        const struct rv_hmap_slot *s = &m->slots[*cursor];
        (*cursor)++;
        if (s->key != 0) {
            *out_key = s->key;
            *out_val = s->val;
            return true;
        }
    }
    if (*cursor == m->mask + 1) {
        (*cursor)++;
        if (m->has_zero) {
            *out_key = 0;
            *out_val = m->zero_val;
            return true;
        }
    }
    return false;
}

uint64_t rv_hmap_hash_bytes(const void *p, size_t len)
{
    RV_ASSERT(p != NULL || len == 0);
    const uint8_t *b = p;
    uint64_t h = 0xCBF29CE484222325ULL; /* FNV-1a 64-bit offset basis */
    for (size_t i = 0; i < len; i++) {
        h ^= b[i];
        h *= 0x100000001B3ULL; /* FNV 64-bit prime */
    }
    return h;
}

bool rv_hmap_check(const struct rv_hmap *m)
{
    uint64_t slots = (uint64_t)m->mask + 1;
    if ((slots & (slots - 1)) != 0 || m->count_max >= slots || m->count > m->count_max)
        return false;
    uint64_t entries = m->has_zero ? 1 : 0;
    for (uint64_t i = 0; i < slots; i++) {
        uint64_t key = m->slots[i].key;
        if (key == 0)
            continue;
        entries++;
        /* Walk from home to i: no empty slot and no second copy of the key. */
        for (uint32_t j = hmap_home(m, key); j != i; j = (j + 1) & m->mask) {
            if (m->slots[j].key == 0 || m->slots[j].key == key)
                return false;
        }
    }
    return entries == m->count;
}
