/* tests/core/test_pool.c - size classes, alignment, budget, reuse, stats, remote puts. */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#include "core/ctx.h"
#include "core/pool.h"

#define OWNER 0
#define MiB   ((size_t)1 << 20)

/* A stand-in for the shards layer's poster: tasks queue up under a mutex and
 * the owner thread runs them when the test drains the queue. */
#define TASK_MAX 4096

struct task {
    int shard;
    rv_ctx_task_fn *fn;
    void *arg;
};

static pthread_mutex_t task_mu = PTHREAD_MUTEX_INITIALIZER;
static struct task tasks[TASK_MAX];
static struct task tasks_running[TASK_MAX];
static size_t task_count;
static size_t posts_total;

static int queue_poster(int shard, rv_ctx_task_fn *fn, void *arg)
{
    int rc = 0;
    pthread_mutex_lock(&task_mu);
    if (task_count == TASK_MAX) {
        rc = -ENOMEM;
    } else {
        tasks[task_count++] = (struct task){.shard = shard, .fn = fn, .arg = arg};
        posts_total++;
    }
    pthread_mutex_unlock(&task_mu);
    return rc;
}

/* Run every queued task on this thread, as the owner's mailbox would. */
static size_t drain_tasks(void)
{
    pthread_mutex_lock(&task_mu);
    size_t n = task_count;
    memcpy(tasks_running, tasks, n * sizeof(tasks[0]));
    task_count = 0;
    pthread_mutex_unlock(&task_mu);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(tasks_running[i].shard, OWNER, "task posted to shard %d",
                     tasks_running[i].shard);
        tasks_running[i].fn(tasks_running[i].arg);
    }
    return n;
}

static size_t posts_seen(void)
{
    pthread_mutex_lock(&task_mu);
    size_t n = posts_total;
    pthread_mutex_unlock(&task_mu);
    return n;
}

static rv_pool_t *pool;

static rv_pool_t *make_pool(int owner, size_t bytes_max)
{
    rv_pool_t *p = NULL;
    struct rv_pool_opts opts = {.owner_shard = owner, .bytes_max = bytes_max, .numa_node = -1};
    cr_assert_eq(rv_pool_create(&p, &opts), 0);
    cr_assert_not_null(p);
    return p;
}

static void setup(void)
{
    /* Fresh counters: the TSan build runs every test in one process. */
    task_count = 0;
    posts_total = 0;
    rv_ctx_set_shard_id(OWNER);
    rv_ctx_set_poster(queue_poster);
    pool = make_pool(OWNER, 64 * MiB);
}

static void teardown(void)
{
    cr_assert(rv_pool_check(pool));
    rv_pool_destroy(pool);
    pool = NULL;
    rv_ctx_set_poster(NULL);
    rv_ctx_set_shard_id(-1);
}

TestSuite(pool, .init = setup, .fini = teardown);

Test(pool, class_of_routes_sizes_to_the_smallest_class)
{
    static const struct {
        size_t size;
        int cls;
    } cases[] = {
        {0, -1},     {1, 0},        {63, 0},   {64, 0},       {65, 1},        {128, 1},
        {129, 2},    {512, 3},      {513, 4},  {4096, 6},     {4097, 7},      {65536, 10},
        {65537, 11}, {MiB - 1, 14}, {MiB, 14}, {MiB + 1, -1}, {SIZE_MAX, -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_assert_eq(rv_pool_class_of(cases[i].size), cases[i].cls, "size %zu", cases[i].size);
}

Test(pool, class_of_picks_the_tightest_class_for_every_size)
{
    for (size_t size = 1; size <= MiB; size += size < 4096 ? 1 : 61) {
        int cls = rv_pool_class_of(size);
        cr_assert_geq(cls, 0);
        cr_assert_geq(rv_pool_class_size(cls), size);
        if (cls > 0)
            cr_assert_lt(rv_pool_class_size(cls - 1), size, "size %zu is not tight", size);
    }
    cr_assert_eq(rv_pool_class_size(0), 64);
    cr_assert_eq(rv_pool_class_size(RV_POOL_CLASS_COUNT - 1), MiB);
}

Test(pool, get_returns_a_block_of_the_routed_class)
{
    static const size_t sizes[] = {1, 64, 65, 512, 513, 4096, 4097, 65536, 65537, MiB};
    static const size_t want[] = {64, 64, 128, 512, 1024, 4096, 8192, 65536, 131072, MiB};
    void *blocks[sizeof(sizes) / sizeof(sizes[0])];
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        blocks[i] = rv_pool_get(pool, sizes[i]);
        cr_assert_not_null(blocks[i], "size %zu", sizes[i]);
        cr_assert_eq(rv_pool_block_size(blocks[i]), want[i], "size %zu", sizes[i]);
        cr_assert_eq(rv_pool_of(blocks[i]), pool);
        /* The whole class size is usable (ASan checks the bytes past `size`). */
        memset(blocks[i], 0xa5, want[i]);
    }
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        rv_pool_put(blocks[i]);
    cr_assert_eq(rv_pool_in_use_bytes(pool), 0);
}

Test(pool, every_block_is_64_byte_aligned_and_distinct)
{
    enum { PER_CLASS = 40 };
    static void *blocks[RV_POOL_CLASS_COUNT][PER_CLASS];
    rv_pool_destroy(pool);
    pool = make_pool(OWNER, 256 * MiB);
    for (int cls = 0; cls < RV_POOL_CLASS_COUNT; cls++) {
        size_t size = rv_pool_class_size(cls);
        for (int i = 0; i < PER_CLASS; i++) {
            uint8_t *b = rv_pool_get(pool, size);
            cr_assert_not_null(b, "class %d block %d", cls, i);
            cr_assert_eq((uintptr_t)b % 64, 0, "class %d block %d at %p", cls, i, (void *)b);
            /* Each block is stamped; an overlap would overwrite a stamp. */
            memset(b, cls * PER_CLASS + i, size);
            blocks[cls][i] = b;
        }
    }
    for (int cls = 0; cls < RV_POOL_CLASS_COUNT; cls++) {
        for (int i = 0; i < PER_CLASS; i++) {
            const uint8_t *b = blocks[cls][i];
            uint8_t stamp = (uint8_t)(cls * PER_CLASS + i);
            size_t last = rv_pool_class_size(cls) - 1;
            cr_assert(b[0] == stamp && b[last] == stamp, "class %d block %d overlaps", cls, i);
            rv_pool_put(blocks[cls][i]);
        }
    }
    cr_assert(rv_pool_check(pool));
}

Test(pool, get_rejects_zero_and_oversized_sizes)
{
    struct rv_pool_stats st;
    cr_assert_null(rv_pool_get(pool, 0));
    cr_assert_null(rv_pool_get(pool, MiB + 1));
    cr_assert_null(rv_pool_get(pool, SIZE_MAX));
    rv_pool_stats(pool, &st);
    cr_assert_eq(st.size_failures, 3);
    cr_assert_eq(st.bytes_reserved, 0, "a refused get must not reserve memory");
    for (int cls = 0; cls < RV_POOL_CLASS_COUNT; cls++)
        cr_assert_eq(st.classes[cls].gets + st.classes[cls].failures, 0);
}

Test(pool, get_fails_when_the_budget_is_spent)
{
    /* Room for two 1 MiB chunks (one 1 MiB block each) and nothing else. */
    rv_pool_destroy(pool);
    pool = make_pool(OWNER, 2 * (MiB + 64) + 1000);
    int top = RV_POOL_CLASS_COUNT - 1;
    void *a = rv_pool_get(pool, MiB);
    void *b = rv_pool_get(pool, MiB);
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    cr_assert_null(rv_pool_get(pool, MiB));
    cr_assert_null(rv_pool_get(pool, MiB));
    cr_assert_null(rv_pool_get(pool, 64), "a new 64 B chunk does not fit either");

    struct rv_pool_stats st;
    rv_pool_stats(pool, &st);
    cr_assert_eq(st.classes[top].failures, 2);
    cr_assert_eq(st.classes[0].failures, 1);
    cr_assert_eq(st.classes[top].gets, 2);
    cr_assert_leq(st.bytes_reserved, st.bytes_max);
    cr_assert_eq(st.bytes_reserved, 2 * (MiB + 64));

    /* Backpressure ends as soon as a block comes back: the same block again. */
    rv_pool_put(b);
    cr_assert_eq(rv_pool_get(pool, MiB), b);
    rv_pool_put(a);
    rv_pool_put(b);
    cr_assert_eq(rv_pool_in_use_bytes(pool), 0);
}

Test(pool, exhausting_small_blocks_spans_chunks_then_fails)
{
    /* One 64 B chunk holds (1 MiB - 64) / 64 blocks; allow exactly two chunks. */
    enum { PER_CHUNK = (1 << 20) / 64 - 1, TOTAL = 2 * PER_CHUNK };
    static void *blocks[TOTAL];
    rv_pool_destroy(pool);
    pool = make_pool(OWNER, 2 * MiB);
    for (size_t i = 0; i < TOTAL; i++) {
        blocks[i] = rv_pool_get(pool, 64);
        cr_assert_not_null(blocks[i], "block %zu", i);
    }
    cr_assert_null(rv_pool_get(pool, 1));
    struct rv_pool_stats st;
    rv_pool_stats(pool, &st);
    cr_assert_eq(st.bytes_reserved, 2 * MiB);
    cr_assert_eq(st.classes[0].blocks_in_use, TOTAL);
    cr_assert_eq(st.classes[0].blocks_free, 0);
    cr_assert_eq(st.classes[0].failures, 1);
    for (size_t i = 0; i < TOTAL; i++)
        rv_pool_put(blocks[i]);
    cr_assert_eq(rv_pool_in_use_bytes(pool), 0);
    cr_assert(rv_pool_check(pool));
}

Test(pool, free_chunks_of_one_class_are_given_back_for_another)
{
    /* Two chunks of 64 B blocks spend the budget; once they are free, 1 MiB
     * blocks get their memory. A chunk with a block still in use stays. */
    enum { PER_CHUNK = (1 << 20) / 64 - 1, TOTAL = 2 * PER_CHUNK };
    static void *blocks[TOTAL];
    rv_pool_destroy(pool);
    pool = make_pool(OWNER, 2 * MiB + 2 * 64);
    for (size_t i = 0; i < TOTAL; i++) {
        blocks[i] = rv_pool_get(pool, 64);
        cr_assert_not_null(blocks[i], "block %zu", i);
    }
    cr_assert_null(rv_pool_get(pool, MiB), "the budget is spent and nothing is free");
    void *kept = blocks[0]; /* keeps its chunk */
    for (size_t i = 1; i < TOTAL; i++)
        rv_pool_put(blocks[i]);
    cr_assert(rv_pool_check(pool));

    void *big = rv_pool_get(pool, MiB);
    cr_assert_not_null(big, "the wholly free chunk went to the 1 MiB class");
    memset(big, 0xab, MiB); /* all of it is usable */
    struct rv_pool_stats st;
    rv_pool_stats(pool, &st);
    cr_assert_eq(st.chunks_reclaimed, 1);
    cr_assert_eq(st.classes[0].blocks_in_use, 1);
    cr_assert_eq(st.classes[0].blocks_free, PER_CHUNK - 1, "one 64 B chunk is left");
    cr_assert_leq(st.bytes_reserved, st.bytes_max);
    cr_assert(rv_pool_check(pool));
    cr_assert_null(rv_pool_get(pool, MiB), "the chunk with a block in use is not taken");

    /* The 64 B class still works from what it kept, and gives it back later. */
    void *small = rv_pool_get(pool, 64);
    cr_assert_not_null(small);
    rv_pool_put(small);
    rv_pool_put(kept);
    void *big2 = rv_pool_get(pool, MiB);
    cr_assert_not_null(big2, "its last block came home: the chunk is free");
    rv_pool_stats(pool, &st);
    cr_assert_eq(st.chunks_reclaimed, 2);
    cr_assert_eq(st.classes[0].blocks_free, 0);
    cr_assert(rv_pool_check(pool));
    rv_pool_put(big);
    rv_pool_put(big2);
    /* And back again: small blocks take the large class's chunks. */
    for (size_t i = 0; i < TOTAL; i++) {
        blocks[i] = rv_pool_get(pool, 64);
        cr_assert_not_null(blocks[i], "block %zu", i);
    }
    for (size_t i = 0; i < TOTAL; i++)
        rv_pool_put(blocks[i]);
    cr_assert(rv_pool_check(pool));
    cr_assert_eq(rv_pool_in_use_bytes(pool), 0);
}

Test(pool, put_then_get_reuses_blocks_last_in_first_out)
{
    void *a = rv_pool_get(pool, 100);
    void *b = rv_pool_get(pool, 100);
    void *c = rv_pool_get(pool, 100);
    cr_assert(a != b && b != c && a != c);
    rv_pool_put(a);
    rv_pool_put(b);
    cr_assert_eq(rv_pool_get(pool, 128), b);
    cr_assert_eq(rv_pool_get(pool, 97), a);
    rv_pool_put(a);
    rv_pool_put(b);
    rv_pool_put(c);
}

Test(pool, stats_track_gets_puts_and_bytes)
{
    struct rv_pool_stats st;
    void *small[3];
    for (int i = 0; i < 3; i++)
        small[i] = rv_pool_get(pool, 64);
    void *mid = rv_pool_get(pool, 3000);
    cr_assert_null(rv_pool_get(pool, 0));
    rv_pool_put(small[1]);

    rv_pool_stats(pool, &st);
    cr_assert_eq(st.bytes_max, 64 * MiB);
    cr_assert_eq(st.bytes_reserved, MiB + (MiB + 64), "one chunk for 64 B, one for 4 KiB");
    cr_assert_eq(st.bytes_in_use, 2 * 64 + 4096);
    cr_assert_eq(rv_pool_in_use_bytes(pool), 2 * 64 + 4096);
    cr_assert_eq(st.remote_puts, 0);
    cr_assert_eq(st.size_failures, 1);
    for (int cls = 0; cls < RV_POOL_CLASS_COUNT; cls++)
        cr_assert_eq(st.classes[cls].size, (size_t)64 << cls);

    const struct rv_pool_class_stats *c0 = &st.classes[0];
    cr_assert_eq(c0->gets, 3);
    cr_assert_eq(c0->puts, 1);
    cr_assert_eq(c0->blocks_in_use, 2);
    cr_assert_eq(c0->blocks_free, MiB / 64 - 1 - 2);
    cr_assert_eq(c0->failures, 0);
    const struct rv_pool_class_stats *c6 = &st.classes[6];
    cr_assert_eq(c6->gets, 1);
    cr_assert_eq(c6->blocks_in_use, 1);
    cr_assert_eq(c6->blocks_free, MiB / 4096 - 1);
    cr_assert_eq(st.classes[5].gets + st.classes[7].gets, 0);

    rv_pool_put(small[0]);
    rv_pool_put(small[2]);
    rv_pool_put(mid);
    rv_pool_stats(pool, &st);
    cr_assert_eq(st.bytes_in_use, 0);
    cr_assert_eq(st.classes[0].puts, 3);
    cr_assert_eq(st.classes[0].blocks_in_use, 0);
    cr_assert_eq(st.bytes_reserved, MiB + (MiB + 64), "chunks stay until destroy");
}

static void *put_on_thread_main(void *arg)
{
    /* A thread outside the runtime (shard id -1) releasing a shard's block. */
    rv_pool_put(arg);
    return NULL;
}

Test(pool, remote_put_goes_home_through_the_poster)
{
    uint8_t *b = rv_pool_get(pool, 256);
    cr_assert_not_null(b);
    memset(b, 1, 256);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, put_on_thread_main, b), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);

    struct rv_pool_stats st;
    rv_pool_stats(pool, &st);
    cr_assert_eq(st.classes[2].blocks_in_use, 1, "the foreign thread must not free it");
    cr_assert_eq(posts_seen(), 1);

    cr_assert_eq(drain_tasks(), 1);
    rv_pool_stats(pool, &st);
    cr_assert_eq(st.classes[2].blocks_in_use, 0);
    cr_assert_eq(st.classes[2].puts, 1);
    cr_assert_eq(st.remote_puts, 1);
    cr_assert_eq(rv_pool_in_use_bytes(pool), 0);
    cr_assert_eq(rv_pool_get(pool, 256), b, "a block that came home is reused");
    rv_pool_put(b);
}

Test(pool, put_on_the_owner_does_not_post)
{
    void *b = rv_pool_get(pool, 1000);
    rv_pool_put(b);
    cr_assert_eq(posts_seen(), 0);
    rv_pool_put(NULL);
    cr_assert_eq(posts_seen(), 0);
}

enum { REMOTE_THREADS = 4, REMOTE_BLOCKS = 256 };

struct remote_batch {
    uint8_t *blocks[REMOTE_BLOCKS];
    uint8_t stamp;
    int bad;
};

static void *put_batch_main(void *arg)
{
    struct remote_batch *batch = arg;
    for (int i = 0; i < REMOTE_BLOCKS; i++) {
        /* What the owner wrote before the handoff is visible here. */
        if (batch->blocks[i][0] != batch->stamp || batch->blocks[i][191] != batch->stamp)
            batch->bad++;
        rv_pool_put(batch->blocks[i]);
    }
    return NULL;
}

Test(pool, remote_puts_from_many_threads_all_come_home)
{
    static struct remote_batch batches[REMOTE_THREADS];
    pthread_t threads[REMOTE_THREADS];
    for (int t = 0; t < REMOTE_THREADS; t++) {
        batches[t].stamp = (uint8_t)(t + 1);
        for (int i = 0; i < REMOTE_BLOCKS; i++) {
            batches[t].blocks[i] = rv_pool_get(pool, 129 + (size_t)t * 64);
            cr_assert_not_null(batches[t].blocks[i]);
            memset(batches[t].blocks[i], batches[t].stamp, 192);
        }
    }
    for (int t = 0; t < REMOTE_THREADS; t++)
        cr_assert_eq(pthread_create(&threads[t], NULL, put_batch_main, &batches[t]), 0);
    /* The owner keeps draining while the other threads post. */
    size_t ran = 0;
    for (int spin = 0; spin < 1000000 && ran < REMOTE_THREADS * REMOTE_BLOCKS; spin++)
        ran += drain_tasks();
    for (int t = 0; t < REMOTE_THREADS; t++) {
        cr_assert_eq(pthread_join(threads[t], NULL), 0);
        cr_assert_eq(batches[t].bad, 0);
    }
    ran += drain_tasks();
    cr_assert_eq(ran, REMOTE_THREADS * REMOTE_BLOCKS);

    struct rv_pool_stats st;
    rv_pool_stats(pool, &st);
    cr_assert_eq(st.remote_puts, REMOTE_THREADS * REMOTE_BLOCKS);
    cr_assert_eq(st.bytes_in_use, 0);
    cr_assert(rv_pool_check(pool));
}

Test(pool, unowned_pool_puts_directly_from_any_thread)
{
    rv_pool_t *p = make_pool(-1, 4 * MiB);
    rv_ctx_set_poster(NULL); /* a post would now fail and abort */
    void *b = rv_pool_get(p, 64);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, put_on_thread_main, b), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert_eq(rv_pool_in_use_bytes(p), 0);
    cr_assert_eq(rv_pool_owner_shard(p), -1);
    rv_pool_destroy(p);
}

Test(pool, create_rejects_bad_options)
{
    rv_pool_t *p = (rv_pool_t *)0x1;
    struct rv_pool_opts bad[] = {
        {.owner_shard = 0, .bytes_max = 0, .numa_node = -1},
        {.owner_shard = -2, .bytes_max = MiB, .numa_node = -1},
        {.owner_shard = 0, .bytes_max = MiB, .numa_node = -2},
        {.owner_shard = 0, .bytes_max = MiB, .numa_node = 5000},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(rv_pool_create(&p, &bad[i]), -EINVAL, "options %zu", i);
        cr_assert_eq(p, (rv_pool_t *)0x1, "*out changed on failure");
    }
}

Test(pool, numa_preferring_pool_hands_out_usable_blocks)
{
    rv_pool_t *p = NULL;
    struct rv_pool_opts opts = {.owner_shard = OWNER, .bytes_max = 8 * MiB, .numa_node = 0};
    cr_assert_eq(rv_pool_create(&p, &opts), 0);
    void *big = rv_pool_get(p, MiB);
    void *small = rv_pool_get(p, 64);
    cr_assert_not_null(big);
    cr_assert_not_null(small);
    memset(big, 7, MiB);
    memset(small, 7, 64);
    rv_pool_put(big);
    rv_pool_put(small);
    rv_pool_destroy(p);
}

Test(pool, destroy_with_blocks_in_use_aborts, .signal = SIGABRT)
{
    cr_assert_not_null(rv_pool_get(pool, 64));
    rv_pool_destroy(pool);
}

Test(pool, put_of_an_interior_pointer_aborts, .signal = SIGABRT)
{
    uint8_t *b = rv_pool_get(pool, 128);
    cr_assert_not_null(b);
    rv_pool_put(b + 64);
}

Test(pool, get_on_another_shard_aborts, .signal = SIGABRT)
{
    rv_ctx_set_shard_id(OWNER + 1);
    (void)rv_pool_get(pool, 64);
}

Test(pool, remote_put_without_a_poster_aborts, .signal = SIGABRT)
{
    void *b = rv_pool_get(pool, 64);
    rv_ctx_set_poster(NULL);
    rv_ctx_set_shard_id(OWNER + 1);
    rv_pool_put(b);
}
