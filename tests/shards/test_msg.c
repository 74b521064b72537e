/* tests/shards/test_msg.c - tests shards/msg.c: mailboxes and cross-shard calls. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>

#include "tests/support/rt.h"

TestSuite(msg, .timeout = 120);

#define PAIR_SHARDS 4

struct pair_call {
    uint32_t from;
    uint32_t to;
    int ran_on;
    int replied_on;
};

static _Atomic int pair_replies;
static struct test_signal pair_done;

static void pair_fn(void *p)
{
    struct pair_call *c = p;
    c->ran_on = rv_shard_self();
}

static void pair_reply(void *p)
{
    struct pair_call *c = p;
    c->replied_on = rv_shard_self();
    if (atomic_fetch_add(&pair_replies, 1) + 1 == PAIR_SHARDS * PAIR_SHARDS)
        test_signal_post(&pair_done);
}

static struct pair_call pair_calls[PAIR_SHARDS][PAIR_SHARDS];

static void pair_start(void *p)
{
    uint32_t from = (uint32_t)(uintptr_t)p;
    cr_assert_eq(rv_shard_self(), (int)from);
    for (uint32_t to = 0; to < PAIR_SHARDS; to++) {
        struct pair_call *c = &pair_calls[from][to];
        *c = (struct pair_call){.from = from, .to = to, .ran_on = -1, .replied_on = -1};
        cr_assert_eq(rv_shard_call(to, pair_fn, c, pair_reply), 0);
    }
}

Test(msg, shard_call_between_every_pair_runs_on_target_and_replies_on_caller)
{
    rv_runtime_t *rt = test_rt_open(PAIR_SHARDS);
    test_signal_init(&pair_done);
    atomic_store(&pair_replies, 0);
    for (uint32_t s = 0; s < PAIR_SHARDS; s++)
        cr_assert_eq(rv_runtime_submit(rt, s, pair_start, (void *)(uintptr_t)s), 0);
    test_signal_wait(&pair_done);
    for (uint32_t f = 0; f < PAIR_SHARDS; f++) {
        for (uint32_t t = 0; t < PAIR_SHARDS; t++) {
            cr_assert_eq(pair_calls[f][t].ran_on, (int)t, "call %u->%u ran on wrong shard", f, t);
            cr_assert_eq(pair_calls[f][t].replied_on, (int)f, "reply %u->%u wrong shard", f, t);
        }
    }
    rv_runtime_close(rt);
}

/* Ordering and overflow: far more calls than ring slots, in both directions. */
#define ORDER_N 200000

struct order_state {
    uint64_t next_run[2];   /* per source shard, checked on the target */
    uint64_t next_reply[2]; /* checked on the source */
    uint64_t errors;
    struct test_signal done[2];
};
static struct order_state order;
static uint64_t order_seq[2][ORDER_N];

static void order_fn(void *p)
{
    uint64_t *seq = p;
    uint32_t src = (uint32_t)(*seq >> 32);
    if ((*seq & 0xffffffffu) != order.next_run[src]++)
        order.errors++; /* only the target shard writes next_run[src] */
}

static void order_reply(void *p)
{
    uint64_t *seq = p;
    uint32_t src = (uint32_t)(*seq >> 32);
    if ((*seq & 0xffffffffu) != order.next_reply[src]++)
        order.errors++;
    if (order.next_reply[src] == ORDER_N)
        test_signal_post(&order.done[src]);
}

static void order_start(void *p)
{
    uint32_t src = (uint32_t)(uintptr_t)p;
    for (uint32_t i = 0; i < ORDER_N; i++) {
        order_seq[src][i] = (uint64_t)src << 32 | i;
        cr_assert_eq(rv_shard_call(1 - src, order_fn, &order_seq[src][i], order_reply), 0);
    }
}

Test(msg, calls_keep_order_through_full_rings_in_both_directions)
{
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    cfg.shard_count = 2;
    cfg.allow_oversubscribe = true;
    cfg.mailbox_slots = 64; /* force the overflow path */
    rv_runtime_t *rt = NULL;
    cr_assert_eq(rv_runtime_open(&rt, &cfg), 0, "%s", rv_err_msg());
    memset(&order, 0, sizeof(order));
    test_signal_init(&order.done[0]);
    test_signal_init(&order.done[1]);
    cr_assert_eq(rv_runtime_submit(rt, 0, order_start, (void *)0), 0);
    cr_assert_eq(rv_runtime_submit(rt, 1, order_start, (void *)1), 0);
    test_signal_wait(&order.done[0]);
    test_signal_wait(&order.done[1]);
    rv_runtime_close(rt);
    cr_assert_eq(order.errors, 0);
    cr_assert_eq(order.next_run[0], ORDER_N);
    cr_assert_eq(order.next_run[1], ORDER_N);
}

/* Many outside threads submit to one shard through its MPSC queue. */
#define EXT_THREADS    4
#define EXT_PER_THREAD 20000

static uint64_t ext_count; /* touched only on shard 0 */
static uint64_t ext_last[EXT_THREADS];
static uint64_t ext_disorder;
static uint64_t ext_items[EXT_THREADS][EXT_PER_THREAD];

static void ext_fn(void *p)
{
    uint64_t *item = p;
    uint32_t th = (uint32_t)(*item >> 32);
    uint64_t n = *item & 0xffffffffu;
    if (n != ext_last[th])
        ext_disorder++;
    ext_last[th] = n + 1;
    ext_count++;
}

struct ext_thread {
    rv_runtime_t *rt;
    uint32_t id;
};

static void *ext_thread_main(void *p)
{
    struct ext_thread *t = p;
    for (uint32_t i = 0; i < EXT_PER_THREAD; i++) {
        ext_items[t->id][i] = (uint64_t)t->id << 32 | i;
        cr_assert_eq(rv_runtime_submit(t->rt, 0, ext_fn, &ext_items[t->id][i]), 0);
    }
    return NULL;
}

Test(msg, outside_threads_submit_without_loss_or_reordering_per_thread)
{
    rv_runtime_t *rt = test_rt_open(2);
    pthread_t th[EXT_THREADS];
    struct ext_thread args[EXT_THREADS];
    for (uint32_t i = 0; i < EXT_THREADS; i++) {
        args[i] = (struct ext_thread){.rt = rt, .id = i};
        cr_assert_eq(pthread_create(&th[i], NULL, ext_thread_main, &args[i]), 0);
    }
    for (uint32_t i = 0; i < EXT_THREADS; i++)
        pthread_join(th[i], NULL);
    rv_runtime_close(rt); /* drains everything submitted before */
    cr_assert_eq(ext_count, (uint64_t)EXT_THREADS * EXT_PER_THREAD);
    cr_assert_eq(ext_disorder, 0);
}

static void noop(void *p)
{
    (void)p;
}

Test(msg, bad_targets_are_refused)
{
    rv_runtime_t *rt = test_rt_open(2);
    cr_assert_eq(rv_runtime_submit(rt, 2, noop, NULL), -EINVAL);
    cr_assert_eq(rv_shard_call(0, noop, NULL, NULL), -EINVAL, "not on a shard");
    rv_runtime_close(rt);
}
