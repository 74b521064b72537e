/* shards/timer.c - the per-shard timer heap (see timer.h). */
#include "shards/timer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define TIMER_POS_FREE UINT32_MAX
#define TIMER_NONE     UINT32_MAX

void rv_timers_init(struct rv_timers *t)
{
    memset(t, 0, sizeof(*t));
    t->free_head = TIMER_NONE;
}

void rv_timers_fini(struct rv_timers *t)
{
    free(t->slots);
    free(t->heap);
    rv_timers_init(t);
}

static bool timer_before(const struct rv_timers *t, uint32_t a, uint32_t b)
{
    const struct rv_timer_slot *x = &t->slots[a], *y = &t->slots[b];
    return x->deadline_ns < y->deadline_ns || (x->deadline_ns == y->deadline_ns && x->seq < y->seq);
}

static void timer_place(struct rv_timers *t, uint32_t pos, uint32_t slot)
{
    t->heap[pos] = slot;
    t->slots[slot].heap_pos = pos;
}

static void timer_sift_up(struct rv_timers *t, uint32_t pos)
{
    uint32_t slot = t->heap[pos];
    while (pos > 0) {
        uint32_t parent = (pos - 1) / 2;
        if (!timer_before(t, slot, t->heap[parent]))
            break;
        timer_place(t, pos, t->heap[parent]);
        pos = parent;
    }
    timer_place(t, pos, slot);
}

static void timer_sift_down(struct rv_timers *t, uint32_t pos)
{
    uint32_t slot = t->heap[pos];
    for (;;) {
        uint32_t child = 2 * pos + 1;
        if (child >= t->heap_len)
            break;
        if (child + 1 < t->heap_len && timer_before(t, t->heap[child + 1], t->heap[child]))
            child++;
        if (!timer_before(t, t->heap[child], slot))
            break;
        timer_place(t, pos, t->heap[child]);
        pos = child;
    }
    timer_place(t, pos, slot);
}

static int timer_grow(struct rv_timers *t)
{
    uint32_t cap = t->cap == 0 ? 64 : t->cap * 2;
    if (cap > (1u << 24))
        return -ENOMEM; /* 16 M timers on one shard is a runaway caller */
    struct rv_timer_slot *slots = realloc(t->slots, (size_t)cap * sizeof(*slots));
    if (slots == NULL)
        return -ENOMEM;
    t->slots = slots;
    uint32_t *heap = realloc(t->heap, (size_t)cap * sizeof(*heap));
    if (heap == NULL)
        return -ENOMEM; /* slots grew; harmless, cap stays */
    t->heap = heap;
    for (uint32_t i = t->cap; i < cap; i++) {
        slots[i] = (struct rv_timer_slot){.gen = 1, .heap_pos = TIMER_POS_FREE};
        slots[i].next_free = i + 1 < cap ? i + 1 : t->free_head;
    }
    t->free_head = t->cap;
    t->cap = cap;
    return 0;
}

/* Fault injection (tests): adds left on this thread before one fails (0: none). */
static _Thread_local uint32_t timer_fault_countdown;

void rv_timers_fault_fail_nth(uint32_t nth)
{
    timer_fault_countdown = nth;
}

int rv_timers_add(struct rv_timers *t, uint64_t deadline_ns, rv_task_fn *fn, void *arg,
                  rv_timer_id *out)
{
    RV_ASSERT(fn != NULL);
    if (timer_fault_countdown != 0 && --timer_fault_countdown == 0)
        return -ENOMEM;
    if (t->free_head == TIMER_NONE) {
        int rc = timer_grow(t);
        if (rc < 0)
            return rc;
    }
    uint32_t slot = t->free_head;
    struct rv_timer_slot *s = &t->slots[slot];
    RV_ASSERT(s->heap_pos == TIMER_POS_FREE);
    t->free_head = s->next_free;
    s->deadline_ns = deadline_ns;
    s->seq = t->seq_next++;
    s->fn = fn;
    s->arg = arg;
    t->heap_len++;
    timer_place(t, t->heap_len - 1, slot);
    timer_sift_up(t, t->heap_len - 1);
    if (out != NULL)
        *out = (uint64_t)s->gen << 32 | slot;
    return 0;
}

static void timer_remove_at(struct rv_timers *t, uint32_t pos)
{
    RV_ASSERT(pos < t->heap_len);
    uint32_t slot = t->heap[pos];
    t->heap_len--;
    if (pos != t->heap_len) {
        timer_place(t, pos, t->heap[t->heap_len]);
        timer_sift_down(t, pos);
        timer_sift_up(t, t->slots[t->heap[pos]].heap_pos);
    }
    struct rv_timer_slot *s = &t->slots[slot];
    s->heap_pos = TIMER_POS_FREE;
    s->gen++;
    if (s->gen == 0)
        s->gen = 1;
    s->next_free = t->free_head;
    t->free_head = slot;
}

int rv_timers_cancel(struct rv_timers *t, rv_timer_id id)
{
    uint32_t slot = (uint32_t)id;
    uint32_t gen = (uint32_t)(id >> 32);
    if (slot >= t->cap || t->slots[slot].gen != gen || t->slots[slot].heap_pos == TIMER_POS_FREE)
        return -ENOENT;
    timer_remove_at(t, t->slots[slot].heap_pos);
    return 0;
}

uint64_t rv_timers_next_deadline(const struct rv_timers *t)
{
    return t->heap_len == 0 ? UINT64_MAX : t->slots[t->heap[0]].deadline_ns;
}

uint32_t rv_timers_pending(const struct rv_timers *t)
{
    return t->heap_len;
}

uint32_t rv_timers_run(struct rv_timers *t, uint64_t now_ns)
{
    uint32_t budget = t->heap_len;
    uint32_t ran = 0;
    while (ran < budget && t->heap_len > 0) {
        struct rv_timer_slot *s = &t->slots[t->heap[0]];
        if (s->deadline_ns > now_ns)
            break;
        rv_task_fn *fn = s->fn;
        void *arg = s->arg;
        timer_remove_at(t, 0); /* release first: fn may add timers */
        fn(arg);
        ran++;
    }
    return ran;
}
