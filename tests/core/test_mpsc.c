/* tests/core/test_mpsc.c - tests core/mpsc.c: the outside-thread queue. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/mpsc.h"
#include "core/spsc.h"

TestSuite(mpsc, .timeout = 120);

struct item {
    struct rv_mpsc_node node;
    uint32_t producer;
    uint32_t seq;
};

Test(mpsc, single_thread_fifo_and_emptiness)
{
    struct rv_mpsc q;
    rv_mpsc_init(&q);
    cr_assert(rv_mpsc_is_empty(&q));
    cr_assert_null(rv_mpsc_pop(&q));
    struct item items[5];
    for (uint32_t i = 0; i < 5; i++) {
        items[i].seq = i;
        rv_mpsc_push(&q, &items[i].node);
        cr_assert_not(rv_mpsc_is_empty(&q));
    }
    for (uint32_t i = 0; i < 5; i++) {
        struct item *it = (struct item *)rv_mpsc_pop(&q);
        cr_assert_not_null(it);
        cr_assert_eq(it->seq, i);
    }
    cr_assert_null(rv_mpsc_pop(&q));
    cr_assert(rv_mpsc_is_empty(&q));
    /* The queue works again after running dry (the sentinel is re-linked). */
    rv_mpsc_push(&q, &items[0].node);
    cr_assert_eq(rv_mpsc_pop(&q), &items[0].node);
    cr_assert(rv_mpsc_is_empty(&q));
}

#define MPSC_PRODUCERS 4
#define MPSC_PER       250000

struct mpsc_run {
    struct rv_mpsc q;
    struct item *items; /* [MPSC_PRODUCERS * MPSC_PER] */
    uint32_t id;
};

struct mpsc_producer {
    struct mpsc_run *run;
    uint32_t id;
};

static void *mpsc_produce(void *arg)
{
    struct mpsc_producer *p = arg;
    for (uint32_t i = 0; i < MPSC_PER; i++) {
        struct item *it = &p->run->items[(size_t)p->id * MPSC_PER + i];
        it->producer = p->id;
        it->seq = i;
        rv_mpsc_push(&p->run->q, &it->node);
    }
    return NULL;
}

Test(mpsc, many_producers_none_lost_and_per_producer_order_kept)
{
    static struct mpsc_run run;
    rv_mpsc_init(&run.q);
    run.items = calloc((size_t)MPSC_PRODUCERS * MPSC_PER, sizeof(*run.items));
    cr_assert_not_null(run.items);
    pthread_t th[MPSC_PRODUCERS];
    struct mpsc_producer ps[MPSC_PRODUCERS];
    for (uint32_t i = 0; i < MPSC_PRODUCERS; i++) {
        ps[i] = (struct mpsc_producer){.run = &run, .id = i};
        cr_assert_eq(pthread_create(&th[i], NULL, mpsc_produce, &ps[i]), 0);
    }
    uint32_t next[MPSC_PRODUCERS] = {0};
    uint64_t got = 0, disorder = 0;
    while (got < (uint64_t)MPSC_PRODUCERS * MPSC_PER) {
        struct item *it = (struct item *)rv_mpsc_pop(&run.q);
        if (it == NULL) {
            rv_cpu_relax();
            continue;
        }
        if (it->seq != next[it->producer])
            disorder++;
        next[it->producer] = it->seq + 1;
        got++;
    }
    for (uint32_t i = 0; i < MPSC_PRODUCERS; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(disorder, 0);
    cr_assert_null(rv_mpsc_pop(&run.q));
    cr_assert(rv_mpsc_is_empty(&run.q));
    for (uint32_t i = 0; i < MPSC_PRODUCERS; i++)
        cr_assert_eq(next[i], MPSC_PER);
    free(run.items);
}
