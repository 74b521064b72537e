/* tests/shards/test_shard.c - tests shards/shard.c: the loop, sleeping, waking, stalls. */
#include <criterion/criterion.h>
#include <errno.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "tests/support/rt.h"

TestSuite(shard, .timeout = 60);

static void noop(void *p)
{
    (void)p;
}

Test(shard, idle_shard_sleeps_and_a_submission_wakes_it)
{
    rv_runtime_t *rt = test_rt_open(2);
    usleep(50000); /* far beyond poll_us: both shards are asleep now */
    struct rv_shard_stats before, after;
    cr_assert_eq(rv_runtime_shard_stats(rt, 1, &before), 0);
    cr_assert_geq(before.sleeps, 1);
    usleep(50000);
    cr_assert_eq(rv_runtime_shard_stats(rt, 1, &after), 0);
    cr_assert_lt(after.loop_turns - before.loop_turns, 100, "an idle shard does not spin");
    uint64_t t0 = rv_clock_now_ns();
    test_run_on(rt, 1, noop, NULL); /* returns only if the sleeping shard woke */
    cr_assert_lt(rv_clock_now_ns() - t0, 1000000000ull);
    rv_runtime_close(rt);
}

static void cross_wake(void *p)
{
    (void)p;
    /* Shard 0 calls sleeping shard 1: the mailbox path must signal it. */
    cr_assert_eq(rv_shard_call(1, noop, NULL, NULL), 0);
}

Test(shard, mailbox_send_wakes_a_sleeping_peer)
{
    rv_runtime_t *rt = test_rt_open(2);
    usleep(30000);
    struct rv_shard_stats s0;
    test_run_on(rt, 0, cross_wake, NULL);
    usleep(30000); /* shard 1 ran the call and went back to sleep */
    struct rv_shard_stats s1;
    cr_assert_eq(rv_runtime_shard_stats(rt, 1, &s1), 0);
    cr_assert_eq(rv_runtime_shard_stats(rt, 0, &s0), 0);
    cr_assert_geq(s1.msgs_received, 1);
    cr_assert_geq(s0.wakeups_sent, 1, "shard 0 signalled its sleeping peer");
    rv_runtime_close(rt);
}

static void busy_60ms(void *p)
{
    (void)p;
    uint64_t end = rv_clock_now_ns() + 60000000ull;
    while (rv_clock_now_ns() < end)
        ;
}

Test(shard, long_loop_turn_is_reported_as_a_stall)
{
    rv_runtime_t *rt = test_rt_open(1);
    test_run_on(rt, 0, busy_60ms, NULL);
    struct rv_shard_stats st;
    TEST_WAIT_STATS(rt, 0, st, st.stalls >= 1);
    cr_assert_eq(st.stalls, 1);
    rv_runtime_close(rt);
}

/* Regression: a send that fills a 64-slot publish batch exactly published
 * early without a wake-up, and the flush then saw nothing to publish, so a
 * sleeping peer never learned of the messages. */
static _Atomic int batch_replies;
static sem_t batch_done;

static void batch_reply(void *p)
{
    (void)p;
    if (atomic_fetch_add(&batch_replies, 1) + 1 == 64)
        sem_post(&batch_done);
}

static void batch_send_64(void *p)
{
    (void)p;
    for (int i = 0; i < 64; i++)
        cr_assert_eq(rv_shard_call(1, noop, NULL, batch_reply), 0);
}

Test(shard, exactly_64_messages_still_wake_a_sleeping_peer)
{
    rv_runtime_t *rt = test_rt_open(2);
    sem_init(&batch_done, 0, 0);
    atomic_store(&batch_replies, 0);
    usleep(30000); /* shard 1 sleeps */
    cr_assert_eq(rv_runtime_submit(rt, 0, batch_send_64, NULL), 0);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 5;
    int rc;
    while ((rc = sem_timedwait(&batch_done, &deadline)) < 0 && errno == EINTR)
        ;
    cr_assert_eq(rc, 0, "the 64 calls never completed: lost wake-up");
    rv_runtime_close(rt);
}
