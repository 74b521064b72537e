/*
 * docs/examples/hello.c - the smallest useful librivven program.
 *
 * Opens a runtime (one shard per core), asks every shard to greet shard 0
 * through a cross-shard call, arms a timer on shard 0, and closes.
 *
 *   cc hello.c $(pkg-config --cflags --libs rivven) -o hello && ./hello
 */
#include <errno.h>
#include <rivven.h>
#include <semaphore.h>
#include <stdio.h>

static sem_t done;
static unsigned greetings_expected;
static unsigned greetings; /* touched on shard 0 only */

static void timer_fired(void *arg)
{
    (void)arg;
    printf("shard %d: timer fired after 1 ms, %u greetings received\n", rv_shard_self(), greetings);
    sem_post(&done);
}

static void greet(void *arg)
{
    /* Runs on shard 0. */
    printf("shard %d: hello from shard %d\n", rv_shard_self(), (int)(long)arg);
    if (++greetings == greetings_expected && rv_timer_add(1000, timer_fired, NULL, NULL) < 0)
        sem_post(&done);
}

static void start(void *arg)
{
    /* Runs on every shard: call shard 0. */
    (void)arg;
    if (rv_shard_call(0, greet, (void *)(long)rv_shard_self(), NULL) < 0)
        fprintf(stderr, "call failed: %s\n", rv_err_msg());
}

int main(void)
{
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    rv_runtime_t *rt;
    int rc = rv_runtime_open(&rt, &cfg);
    if (rc < 0) {
        fprintf(stderr, "rv_runtime_open: %s (%s)\n", rv_strerror(rc), rv_err_msg());
        return 1;
    }
    sem_init(&done, 0, 0);
    greetings_expected = rv_runtime_shard_count(rt);
    for (unsigned s = 0; s < rv_runtime_shard_count(rt); s++) {
        if (rv_runtime_submit(rt, s, start, NULL) < 0) {
            fprintf(stderr, "submit: %s\n", rv_err_msg());
            rv_runtime_close(rt);
            return 1;
        }
    }
    while (sem_wait(&done) < 0 && errno == EINTR)
        ;
    rv_runtime_close(rt);
    return 0;
}
