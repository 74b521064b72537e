/* tests/core/test_spsc.c - tests core/spsc.h: the mailbox ring. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>

#include "core/spsc.h"

TestSuite(spsc, .timeout = 120);

Test(spsc, init_rejects_bad_capacity_and_slot_size)
{
    struct rv_spsc r;
    cr_assert_eq(rv_spsc_init(&r, 0, 8), -EINVAL);
    cr_assert_eq(rv_spsc_init(&r, 1, 8), -EINVAL);
    cr_assert_eq(rv_spsc_init(&r, 100, 8), -EINVAL);
    cr_assert_eq(rv_spsc_init(&r, 64, 0), -EINVAL);
    cr_assert_eq(rv_spsc_init(&r, 64, 12), -EINVAL);
    cr_assert_eq(rv_spsc_init(&r, 64, 8), 0);
    cr_assert_eq(rv_spsc_capacity(&r), 64);
    rv_spsc_fini(&r);
    rv_spsc_fini(NULL);
}

Test(spsc, fills_to_capacity_then_refuses_and_keeps_fifo_order)
{
    struct rv_spsc r;
    cr_assert_eq(rv_spsc_init(&r, 8, 8), 0);
    for (uint64_t i = 0; i < 8; i++)
        cr_assert(rv_spsc_push(&r, &i), "push %llu", (unsigned long long)i);
    uint64_t x = 99;
    cr_assert_not(rv_spsc_push(&r, &x), "a full ring refuses");
    cr_assert_null(rv_spsc_peek(&r), "nothing visible before publish");
    rv_spsc_publish(&r);
    for (uint64_t i = 0; i < 8; i++) {
        uint64_t v;
        cr_assert(rv_spsc_pop(&r, &v));
        cr_assert_eq(v, i);
    }
    cr_assert_not(rv_spsc_pop(&r, &x));
    cr_assert_not(rv_spsc_push(&r, &x), "slots are free only after consume_done");
    rv_spsc_consume_done(&r);
    cr_assert(rv_spsc_push(&r, &x));
    rv_spsc_fini(&r);
}

Test(spsc, indexes_wrap_around_uint32)
{
    struct rv_spsc r;
    cr_assert_eq(rv_spsc_init(&r, 4, 8), 0);
    /* Start just below the wrap of the free-running indexes. */
    uint32_t start = UINT32_MAX - 5;
    r.tail_local = r.head_local = r.head_cache = r.tail_cache = start;
    atomic_store(&r.tail, start);
    atomic_store(&r.head, start);
    for (uint64_t i = 0; i < 40; i++) {
        cr_assert(rv_spsc_push(&r, &i));
        rv_spsc_publish(&r);
        uint64_t v;
        cr_assert(rv_spsc_pop(&r, &v));
        rv_spsc_consume_done(&r);
        cr_assert_eq(v, i);
    }
    rv_spsc_fini(&r);
}

/* Two threads pass 10 million sequence numbers: none lost, duplicated or reordered. */
#define SPSC_N 10000000ull

struct spsc_pair {
    struct rv_spsc ring;
    uint64_t errors;
    uint64_t received;
};

static void *spsc_producer(void *arg)
{
    struct spsc_pair *p = arg;
    uint64_t i = 0;
    while (i < SPSC_N) {
        uint32_t batch = 0;
        while (i < SPSC_N && batch < 64 && rv_spsc_push(&p->ring, &i)) {
            i++;
            batch++;
        }
        rv_spsc_publish(&p->ring);
        if (batch == 0)
            rv_cpu_relax();
    }
    return NULL;
}

static void *spsc_consumer(void *arg)
{
    struct spsc_pair *p = arg;
    uint64_t expect = 0;
    while (expect < SPSC_N) {
        uint64_t v;
        uint32_t batch = 0;
        while (batch < 64 && rv_spsc_pop(&p->ring, &v)) {
            if (v != expect)
                p->errors++;
            expect = v + 1;
            batch++;
        }
        if (batch > 0)
            rv_spsc_consume_done(&p->ring);
        else
            rv_cpu_relax();
        p->received += batch;
    }
    return NULL;
}

Test(spsc, two_threads_pass_ten_million_in_order)
{
    static struct spsc_pair p;
    cr_assert_eq(rv_spsc_init(&p.ring, 1024, 8), 0);
    pthread_t prod, cons;
    cr_assert_eq(pthread_create(&cons, NULL, spsc_consumer, &p), 0);
    cr_assert_eq(pthread_create(&prod, NULL, spsc_producer, &p), 0);
    pthread_join(prod, NULL);
    pthread_join(cons, NULL);
    cr_assert_eq(p.errors, 0, "lost, duplicated or reordered: %llu", (unsigned long long)p.errors);
    cr_assert_eq(p.received, SPSC_N);
    rv_spsc_fini(&p.ring);
}
