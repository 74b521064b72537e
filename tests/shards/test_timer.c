/* tests/shards/test_timer.c - tests shards/timer.c (the heap) and rv_timer_* on shards. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "core/clock.h"
#include "shards/timer.h"
#include "tests/support/rt.h"

TestSuite(timer, .timeout = 60);

static int fired[64];
static int fired_count;

static void record(void *arg)
{
    fired[fired_count++] = (int)(intptr_t)arg;
}

Test(timer, runs_in_deadline_order_fifo_on_ties)
{
    struct rv_timers t;
    rv_timers_init(&t);
    fired_count = 0;
    uint64_t deadlines[] = {50, 10, 30, 10, 20, 50, 0};
    for (int i = 0; i < 7; i++)
        cr_assert_eq(rv_timers_add(&t, deadlines[i], record, (void *)(intptr_t)i, NULL), 0);
    cr_assert_eq(rv_timers_next_deadline(&t), 0);
    cr_assert_eq(rv_timers_run(&t, 25), 4);
    int want[] = {6, 1, 3, 4};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(fired[i], want[i], "position %d", i);
    cr_assert_eq(rv_timers_next_deadline(&t), 30);
    cr_assert_eq(rv_timers_run(&t, 100), 3);
    cr_assert_eq(fired[4], 2);
    cr_assert_eq(fired[5], 0);
    cr_assert_eq(fired[6], 5);
    cr_assert_eq(rv_timers_next_deadline(&t), UINT64_MAX);
    rv_timers_fini(&t);
}

Test(timer, cancel_removes_and_stale_ids_are_refused)
{
    struct rv_timers t;
    rv_timers_init(&t);
    fired_count = 0;
    rv_timer_id ids[5];
    for (int i = 0; i < 5; i++)
        cr_assert_eq(
            rv_timers_add(&t, (uint64_t)(i + 1) * 10, record, (void *)(intptr_t)i, &ids[i]), 0);
    cr_assert_eq(rv_timers_cancel(&t, ids[2]), 0);
    cr_assert_eq(rv_timers_cancel(&t, ids[2]), -ENOENT);
    cr_assert_eq(rv_timers_cancel(&t, ids[0]), 0);
    cr_assert_eq(rv_timers_pending(&t), 3);
    cr_assert_eq(rv_timers_run(&t, 1000), 3);
    cr_assert_eq(fired[0], 1);
    cr_assert_eq(fired[1], 3);
    cr_assert_eq(fired[2], 4);
    cr_assert_eq(rv_timers_cancel(&t, ids[4]), -ENOENT, "fired timers cannot be cancelled");
    cr_assert_eq(rv_timers_cancel(&t, 12345678ull << 32 | 99999), -ENOENT);
    /* A slot reused by a new timer does not answer to the old id. */
    rv_timer_id again;
    cr_assert_eq(rv_timers_add(&t, 5, record, NULL, &again), 0);
    for (int i = 0; i < 5; i++)
        cr_assert_neq(again, ids[i]);
    rv_timers_fini(&t);
}

Test(timer, heap_survives_random_adds_and_cancels)
{
    struct rv_timers t;
    rv_timers_init(&t);
    unsigned seed = 12345;
    enum { N = 5000 };
    static rv_timer_id ids[N];
    for (int i = 0; i < N; i++) {
        cr_assert_eq(rv_timers_add(&t, (uint64_t)(rand_r(&seed) % 100000), record, NULL, &ids[i]),
                     0);
    }
    uint32_t cancelled = 0;
    for (int i = 0; i < N; i += 3) {
        cr_assert_eq(rv_timers_cancel(&t, ids[i]), 0);
        cancelled++;
    }
    cr_assert_eq(rv_timers_pending(&t), N - cancelled);
    uint64_t last = 0;
    uint32_t ran = 0;
    while (rv_timers_pending(&t) > 0) {
        uint64_t d = rv_timers_next_deadline(&t);
        cr_assert_geq(d, last, "deadlines come out in order");
        last = d;
        fired_count = 0;
        ran += rv_timers_run(&t, d);
    }
    cr_assert_eq(ran, N - cancelled);
    rv_timers_fini(&t);
}

/* On a running shard: timers fire no earlier than asked, cancel works. */
struct shard_timer_case {
    uint64_t armed_ns;
    _Atomic uint64_t fired_ns;
    _Atomic int cancelled_ran;
    rv_timer_id cancel_id;
    int cancel_rc;
    struct test_signal done;
};

static void shard_timer_fired(void *p)
{
    struct shard_timer_case *c = p;
    atomic_store(&c->fired_ns, rv_clock_now_ns());
    test_signal_post(&c->done);
}

static void shard_timer_never(void *p)
{
    struct shard_timer_case *c = p;
    atomic_store(&c->cancelled_ran, 1);
}

static void shard_timer_arm(void *p)
{
    struct shard_timer_case *c = p;
    c->armed_ns = rv_clock_now_ns();
    cr_assert_eq(rv_timer_add(20000, shard_timer_fired, c, NULL), 0);
    cr_assert_eq(rv_timer_add(5000, shard_timer_never, c, &c->cancel_id), 0);
    c->cancel_rc = rv_timer_cancel(c->cancel_id);
}

Test(timer, shard_timer_fires_after_delay_and_cancel_prevents_run)
{
    rv_runtime_t *rt = test_rt_open(2);
    struct shard_timer_case c = {0};
    test_signal_init(&c.done);
    test_run_on(rt, 1, shard_timer_arm, &c);
    test_signal_wait(&c.done);
    cr_assert_eq(c.cancel_rc, 0);
    cr_assert_geq(atomic_load(&c.fired_ns) - c.armed_ns, 20000000ull, "fired early");
    cr_assert_eq(atomic_load(&c.cancelled_ran), 0);
    struct rv_shard_stats st;
    TEST_WAIT_STATS(rt, 1, st, st.timers_fired >= 1);
    cr_assert_eq(st.timers_fired, 1);
    rv_runtime_close(rt);
}

Test(timer, outside_a_shard_is_refused)
{
    cr_assert_eq(rv_timer_add(1, record, NULL, NULL), -EINVAL);
    cr_assert_eq(rv_timer_cancel(1), -EINVAL);
}
