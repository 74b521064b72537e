/* tests/core/test_buf.c - buffer refcounts, freezing, slices, puts from other threads. */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#include "core/buf.h"
#include "core/ctx.h"
#include "core/err.h"
#include "core/pool.h"

#define OWNER 0
#define MiB   ((size_t)1 << 20)

/* A stand-in for the shards layer's poster: tasks queue up under a mutex and
 * the owner thread runs them when the test drains the queue. */
#define TASK_MAX 64

struct task {
    int shard;
    rv_ctx_task_fn *fn;
    void *arg;
};

static pthread_mutex_t task_mu = PTHREAD_MUTEX_INITIALIZER;
static struct task tasks[TASK_MAX];
static size_t task_count;

static int queue_poster(int shard, rv_ctx_task_fn *fn, void *arg)
{
    int rc = 0;
    pthread_mutex_lock(&task_mu);
    if (task_count == TASK_MAX)
        rc = -ENOMEM;
    else
        tasks[task_count++] = (struct task){.shard = shard, .fn = fn, .arg = arg};
    pthread_mutex_unlock(&task_mu);
    return rc;
}

static size_t queued(void)
{
    pthread_mutex_lock(&task_mu);
    size_t n = task_count;
    pthread_mutex_unlock(&task_mu);
    return n;
}

/* Run every queued task on this thread, as the owner's mailbox would. */
static size_t drain_tasks(void)
{
    struct task running[TASK_MAX];
    pthread_mutex_lock(&task_mu);
    size_t n = task_count;
    memcpy(running, tasks, n * sizeof(tasks[0]));
    task_count = 0;
    pthread_mutex_unlock(&task_mu);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(running[i].shard, OWNER);
        running[i].fn(running[i].arg);
    }
    return n;
}

static rv_pool_t *pool;

static void setup(void)
{
    struct rv_pool_opts opts = {.owner_shard = OWNER, .bytes_max = 16 * MiB, .numa_node = -1};
    rv_ctx_set_shard_id(OWNER);
    rv_ctx_set_poster(queue_poster);
    cr_assert_eq(rv_pool_create(&pool, &opts), 0);
}

static void teardown(void)
{
    cr_assert_eq(rv_pool_in_use_bytes(pool), 0, "a test leaked a buffer");
    rv_pool_destroy(pool);
    rv_ctx_set_poster(NULL);
    rv_ctx_set_shard_id(-1);
}

TestSuite(buf, .init = setup, .fini = teardown);

/* A frozen buffer holding `text`. */
static rv_buf_t *frozen_text(const char *text)
{
    rv_buf_t *b = NULL;
    size_t len = strlen(text);
    cr_assert_eq(rv_buf_alloc(pool, len, &b), 0);
    memcpy(rv_buf_data(b), text, len);
    rv_buf_set_len(b, len);
    rv_buf_freeze(b);
    return b;
}

Test(buf, alloc_gives_an_empty_writable_aligned_buffer)
{
    static const size_t caps[] = {1, 64, 65, 1000, 4096, RV_BUF_CAP_MAX};
    for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
        rv_buf_t *b = NULL;
        cr_assert_eq(rv_buf_alloc(pool, caps[i], &b), 0, "cap %zu", caps[i]);
        cr_assert_eq((uintptr_t)rv_buf_data(b) % 64, 0, "cap %zu", caps[i]);
        cr_assert_eq(rv_buf_cdata(b), rv_buf_data(b));
        cr_assert_geq(rv_buf_cap(b), caps[i]);
        /* Header and data share one block, and the data gets the rest of it. */
        cr_assert_eq(rv_buf_cap(b) + RV_BUF_HEADER_BYTES, rv_pool_block_size(b));
        cr_assert_eq(rv_buf_len(b), 0);
        cr_assert_not(rv_buf_is_frozen(b));
        cr_assert_eq(rv_buf_refs(b), 1);
        memset(rv_buf_data(b), 0x5a, rv_buf_cap(b));
        rv_buf_put(b);
    }
}

Test(buf, alloc_rejects_zero_and_oversized_capacities)
{
    rv_buf_t *b = (rv_buf_t *)0x1;
    cr_assert_eq(rv_buf_alloc(pool, 0, &b), -EINVAL);
    cr_assert_eq(rv_buf_alloc(pool, RV_BUF_CAP_MAX + 1, &b), -EINVAL);
    cr_assert(strstr(rv_err_msg(), "capacity") != NULL, "%s", rv_err_msg());
    cr_assert_eq(rv_buf_alloc(pool, SIZE_MAX, &b), -EINVAL);
    cr_assert_eq(b, (rv_buf_t *)0x1, "*out changed on failure");
}

Test(buf, alloc_reports_enobufs_when_the_pool_is_spent)
{
    rv_pool_t *small = NULL;
    struct rv_pool_opts opts = {.owner_shard = OWNER, .bytes_max = MiB + 64, .numa_node = -1};
    cr_assert_eq(rv_pool_create(&small, &opts), 0);
    rv_buf_t *a = NULL;
    rv_buf_t *b = (rv_buf_t *)0x1;
    cr_assert_eq(rv_buf_alloc(small, RV_BUF_CAP_MAX, &a), 0);
    cr_assert_eq(rv_buf_alloc(small, RV_BUF_CAP_MAX, &b), -ENOBUFS);
    cr_assert_eq(b, (rv_buf_t *)0x1);
    rv_buf_put(a);
    cr_assert_eq(rv_buf_alloc(small, 600000, &b), 0, "the freed block serves again");
    rv_buf_put(b);
    rv_pool_destroy(small);
}

Test(buf, refcount_lifecycle_returns_memory_to_the_pool)
{
    rv_buf_t *b = NULL;
    cr_assert_eq(rv_buf_alloc(pool, 3000, &b), 0);
    cr_assert_eq(rv_pool_in_use_bytes(pool), 4096);
    rv_buf_get(b);
    rv_buf_get(b);
    cr_assert_eq(rv_buf_refs(b), 3);
    rv_buf_put(b);
    rv_buf_put(b);
    cr_assert_eq(rv_buf_refs(b), 1);
    cr_assert_eq(rv_pool_in_use_bytes(pool), 4096, "still referenced");
    rv_buf_put(b);
    cr_assert_eq(rv_pool_in_use_bytes(pool), 0);
    rv_buf_put(NULL);
}

Test(buf, slices_keep_the_buffer_alive_after_the_creators_put)
{
    rv_buf_t *b = frozen_text("hello, zero-copy world");
    struct rv_slice word;
    cr_assert_eq(rv_slice_make(&word, b, 7, 9), 0);
    cr_assert_eq(rv_buf_refs(b), 2);
    rv_buf_put(b);
    cr_assert_neq(rv_pool_in_use_bytes(pool), 0, "the slice holds the buffer");
    cr_assert_eq(word.len, 9);
    cr_assert(memcmp(rv_slice_data(&word), "zero-copy", 9) == 0);

    struct rv_slice copy;
    cr_assert_eq(rv_slice_sub(&copy, &word, 5, 4), 0);
    cr_assert(memcmp(rv_slice_data(&copy), "copy", 4) == 0);
    cr_assert_eq(rv_slice_data(&copy), rv_buf_cdata(b) + 12, "no bytes were copied");
    rv_slice_put(&word);
    cr_assert_null(word.buf, "a put slice is empty");
    cr_assert_neq(rv_pool_in_use_bytes(pool), 0, "the sub-slice holds the buffer");
    rv_slice_put(&copy);
    cr_assert_eq(rv_pool_in_use_bytes(pool), 0);
    rv_slice_put(&copy); /* empty: no-op */
    rv_slice_put(NULL);
}

Test(buf, slices_of_a_writable_buffer_see_its_bytes)
{
    rv_buf_t *b = NULL;
    cr_assert_eq(rv_buf_alloc(pool, 16, &b), 0);
    memcpy(rv_buf_data(b), "abcdef", 6);
    rv_buf_set_len(b, 6);
    struct rv_slice s;
    cr_assert_eq(rv_slice_make(&s, b, 0, 6), 0);
    cr_assert(memcmp(rv_slice_data(&s), "abcdef", 6) == 0);
    rv_slice_put(&s);
    rv_buf_put(b);
}

Test(buf, out_of_range_slices_fail_with_erange)
{
    rv_buf_t *b = frozen_text("0123456789");
    struct rv_slice s = {.buf = NULL, .pos = 77, .len = 77};
    cr_assert_eq(rv_slice_make(&s, b, 11, 0), -ERANGE);
    cr_assert_eq(rv_slice_make(&s, b, 0, 11), -ERANGE);
    cr_assert_eq(rv_slice_make(&s, b, 5, 6), -ERANGE);
    cr_assert_eq(rv_slice_make(&s, b, 1, SIZE_MAX), -ERANGE, "pos + len must not wrap");
    cr_assert_eq(rv_slice_make(&s, b, SIZE_MAX, 2), -ERANGE);
    cr_assert(strstr(rv_err_msg(), "slice") != NULL, "%s", rv_err_msg());
    cr_assert_eq(s.pos, 77, "*out changed on failure");
    cr_assert_eq(rv_buf_refs(b), 1, "a failed slice took a reference");

    /* Bounds are inclusive of the end: an empty slice at the end is fine. */
    cr_assert_eq(rv_slice_make(&s, b, 10, 0), 0);
    rv_slice_put(&s);
    cr_assert_eq(rv_slice_make(&s, b, 2, 8), 0);
    struct rv_slice sub = {.buf = NULL, .pos = 55, .len = 55};
    cr_assert_eq(rv_slice_sub(&sub, &s, 0, 9), -ERANGE);
    cr_assert_eq(rv_slice_sub(&sub, &s, 9, 0), -ERANGE);
    cr_assert_eq(rv_slice_sub(&sub, &s, 4, SIZE_MAX - 1), -ERANGE);
    cr_assert_eq(sub.pos, 55);
    cr_assert_eq(rv_buf_refs(b), 2);
    cr_assert_eq(rv_slice_sub(&sub, &s, 8, 0), 0);
    cr_assert_eq(rv_slice_data(&sub), rv_buf_cdata(b) + 10);
    rv_slice_put(&sub);
    rv_slice_put(&s);
    rv_buf_put(b);
}

Test(buf, freeze_makes_the_buffer_read_only)
{
    rv_buf_t *b = frozen_text("abc");
    cr_assert(rv_buf_is_frozen(b));
    rv_buf_freeze(b); /* idempotent */
    cr_assert_eq(rv_buf_len(b), 3);
    cr_assert(memcmp(rv_buf_cdata(b), "abc", 3) == 0);
    rv_buf_put(b);
}

Test(buf, write_after_freeze_aborts, .signal = SIGABRT)
{
    rv_buf_t *b = frozen_text("abc");
    rv_buf_data(b)[0] = 'x';
}

Test(buf, set_len_after_freeze_aborts, .signal = SIGABRT)
{
    rv_buf_t *b = frozen_text("abc");
    rv_buf_set_len(b, 1);
}

Test(buf, set_len_past_capacity_aborts, .signal = SIGABRT)
{
    rv_buf_t *b = NULL;
    cr_assert_eq(rv_buf_alloc(pool, 10, &b), 0);
    rv_buf_set_len(b, rv_buf_cap(b) + 1);
}

static void *put_buf_main(void *arg)
{
    /* A foreign thread (shard id -1) done with a shared buffer. */
    rv_buf_put(arg);
    return NULL;
}

Test(buf, put_from_another_thread_is_posted_home)
{
    rv_buf_t *b = frozen_text("shared");
    rv_buf_get(b); /* the reference the other thread will drop */
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, put_buf_main, b), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert_eq(queued(), 1);
    cr_assert_eq(rv_buf_refs(b), 2, "the count is the owner's to change");
    cr_assert_eq(drain_tasks(), 1);
    cr_assert_eq(rv_buf_refs(b), 1);
    rv_buf_put(b);
    cr_assert_eq(rv_pool_in_use_bytes(pool), 0);
}

static void *read_and_put_slice_main(void *arg)
{
    struct rv_slice *s = arg;
    /* A frozen buffer is readable off its shard. */
    intptr_t ok = memcmp(rv_slice_data(s), "view", 4) == 0;
    rv_slice_put(s);
    return (void *)ok;
}

Test(buf, last_reference_dropped_remotely_frees_at_home)
{
    rv_buf_t *b = frozen_text("a view of shared bytes");
    static struct rv_slice s;
    cr_assert_eq(rv_slice_make(&s, b, 2, 4), 0);
    rv_buf_put(b); /* the slice is now the only reference */
    pthread_t t;
    void *ok;
    cr_assert_eq(pthread_create(&t, NULL, read_and_put_slice_main, &s), 0);
    cr_assert_eq(pthread_join(t, &ok), 0);
    cr_assert((intptr_t)ok, "the other thread read the wrong bytes");
    cr_assert_neq(rv_pool_in_use_bytes(pool), 0, "freed off its shard");
    cr_assert_eq(drain_tasks(), 1);
    cr_assert_eq(rv_pool_in_use_bytes(pool), 0);
}

static void *get_buf_main(void *arg)
{
    rv_buf_get(arg);
    return NULL;
}

Test(buf, get_on_another_thread_aborts, .signal = SIGABRT)
{
    rv_buf_t *b = frozen_text("x");
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, get_buf_main, b), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
}

Test(buf, foreign_put_of_a_writable_buffer_aborts, .signal = SIGABRT)
{
    rv_buf_t *b = NULL;
    cr_assert_eq(rv_buf_alloc(pool, 10, &b), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, put_buf_main, b), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
}
