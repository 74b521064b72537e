/*
 * shards/timer.h - a shard's timers: a binary min-heap of deadlines.
 *
 * Owned by one shard and used from its thread only. Timer records live in a
 * slot array that grows on demand (timers are control-path objects, not
 * per-record ones); a timer id carries its slot and a generation, so a stale
 * id (already fired or cancelled) is recognised and refused. Timers with the
 * same deadline run in the order they were added.
 */
#ifndef RV_SHARDS_TIMER_H
#define RV_SHARDS_TIMER_H

#include <stdint.h>

#include "core/assert.h"
#include "rivven.h"

struct rv_timer_slot {
    uint64_t deadline_ns; /* monotonic */
    uint64_t seq;         /* insertion order, ties broken FIFO */
    rv_task_fn *fn;
    void *arg;
    uint32_t gen;      /* bumped when the slot is released */
    uint32_t heap_pos; /* index in heap, or TIMER_POS_FREE */
    uint32_t next_free;
};

struct rv_timers {
    struct rv_timer_slot *slots;
    uint32_t *heap; /* slot indexes, heap-ordered by (deadline, seq) */
    uint32_t heap_len;
    uint32_t cap; /* slots allocated */
    uint32_t free_head;
    uint64_t seq_next;
};

void rv_timers_init(struct rv_timers *t);
void rv_timers_fini(struct rv_timers *t);

/* Add a timer due at deadline_ns. -ENOMEM when the slot array cannot grow. */
RV_MUST_CHECK int rv_timers_add(struct rv_timers *t, uint64_t deadline_ns, rv_task_fn *fn,
                                void *arg, rv_timer_id *out);
/* Fault injection (tests): the nth add from now on the calling thread (a
 * shard's) fails with -ENOMEM, as a slot array that cannot grow would; 0
 * disables. */
void rv_timers_fault_fail_nth(uint32_t nth);
/* -ENOENT when id is not a pending timer. */
RV_MUST_CHECK int rv_timers_cancel(struct rv_timers *t, rv_timer_id id);
/* Earliest deadline, or UINT64_MAX when none is pending. */
uint64_t rv_timers_next_deadline(const struct rv_timers *t);
/* Run timers due at now_ns, at most as many as were pending on entry (a callback
 * that re-arms for "now" runs on the next turn). Returns how many ran. */
uint32_t rv_timers_run(struct rv_timers *t, uint64_t now_ns);
uint32_t rv_timers_pending(const struct rv_timers *t);

#endif /* RV_SHARDS_TIMER_H */
