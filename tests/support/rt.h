/*
 * tests/support/rt.h - helpers for tests that drive a runtime from the test
 * thread: open with test-friendly settings, and run a function on a shard
 * while the test thread waits for it.
 */
#ifndef RV_TESTS_SUPPORT_RT_H
#define RV_TESTS_SUPPORT_RT_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>

#include "rivven.h"

/* Descriptors this process holds open (the listing's own included). */
static inline int test_count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

/* Files in directory path whose names end in suffix. */
static inline uint32_t test_count_files(const char *path, const char *suffix)
{
    DIR *d = opendir(path);
    cr_assert_not_null(d, "%s", path);
    uint32_t n = 0;
    size_t sl = strlen(suffix);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        n += l > sl && strcmp(de->d_name + l - sl, suffix) == 0;
    }
    closedir(d);
    return n;
}

/* The descriptor this process holds on path, or -1. */
static inline int test_fd_of(const char *path)
{
    char link[1200], name[300];
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    struct dirent *de;
    int fd = -1;
    while (fd < 0 && (de = readdir(d)) != NULL) {
        snprintf(name, sizeof(name), "/proc/self/fd/%s", de->d_name);
        ssize_t n = readlink(name, link, sizeof(link) - 1);
        if (n > 0) {
            link[n] = '\0';
            if (strcmp(link, path) == 0)
                fd = atoi(de->d_name);
        }
    }
    closedir(d);
    return fd;
}

/* The WAL and segment I/O mode a test asks for: RIVVEN_TEST_WAL_IO=buffered or
 * direct (meson runs the WAL, store and crash tests once each way), else the
 * default. */
static inline enum rv_wal_io test_wal_io(void)
{
    const char *v = getenv("RIVVEN_TEST_WAL_IO");
    if (v == NULL || v[0] == '\0')
        return RV_WAL_IO_AUTO;
    if (strcmp(v, "buffered") == 0)
        return RV_WAL_IO_BUFFERED;
    cr_assert_str_eq(v, "direct", "RIVVEN_TEST_WAL_IO is buffered or direct");
    return RV_WAL_IO_DIRECT;
}

/* A runtime of n shards (oversubscribed if the machine has fewer cores). */
static inline rv_runtime_t *test_rt_open(uint32_t n)
{
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    cfg.shard_count = n;
    cfg.allow_oversubscribe = true;
    cfg.poll_us = 20;
    rv_runtime_t *rt = NULL;
    int rc = rv_runtime_open(&rt, &cfg);
    cr_assert_eq(rc, 0, "rv_runtime_open: %s: %s", rv_strerror(rc), rv_err_msg());
    return rt;
}

struct test_on_shard {
    void (*fn)(void *arg);
    void *arg;
    sem_t done;
};

static inline void test_on_shard_run(void *p)
{
    struct test_on_shard *t = p;
    t->fn(t->arg);
    sem_post(&t->done);
}

/* Run fn(arg) on `shard` and wait until it returned. */
static inline void test_run_on(rv_runtime_t *rt, uint32_t shard, void (*fn)(void *), void *arg)
{
    struct test_on_shard t = {.fn = fn, .arg = arg};
    sem_init(&t.done, 0, 0);
    cr_assert_eq(rv_runtime_submit(rt, shard, test_on_shard_run, &t), 0);
    while (sem_wait(&t.done) < 0 && errno == EINTR)
        ;
    sem_destroy(&t.done);
}

/* A one-shot signal from a shard callback to the waiting test thread. */
struct test_signal {
    sem_t sem;
};

static inline void test_signal_init(struct test_signal *s)
{
    sem_init(&s->sem, 0, 0);
}

static inline void test_signal_post(struct test_signal *s)
{
    sem_post(&s->sem);
}

static inline void test_signal_wait(struct test_signal *s)
{
    while (sem_wait(&s->sem) < 0 && errno == EINTR)
        ;
}

/* Shards add to their counters after the callbacks of a batch ran, so a test
 * woken by a callback may read the counter a moment early: poll up to 1 s for
 * `cond` (an expression over `st`, the shard's stats) to hold. */
#define TEST_WAIT_STATS(rt, shard, st, cond)                                                       \
    do {                                                                                           \
        for (int wait_i_ = 0; wait_i_ < 1000; wait_i_++) {                                         \
            cr_assert_eq(rv_runtime_shard_stats((rt), (shard), &(st)), 0);                         \
            if (cond)                                                                              \
                break;                                                                             \
            usleep(1000);                                                                          \
        }                                                                                          \
    } while (0)

#endif /* RV_TESTS_SUPPORT_RT_H */
