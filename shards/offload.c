/*
 * shards/offload.c - helper threads for work that may block.
 *
 * A shard must never block, yet some calls can: creating or opening a file by
 * name, renames, directory fsyncs, a blocking client library. rv_offload hands
 * such work to a small pool of plain threads and brings the completion back to
 * the calling shard as a task. Each helper thread has its own MPSC queue and a
 * semaphore; shards pick a helper round-robin, so pushing a job is one atomic
 * exchange and one sem_post (a futex wake, which does not block).
 *
 * Ownership: a job is malloc'd by the shard (a control-path object), run by a
 * helper, and freed back on the shard after its done callback. The shard counts
 * its jobs in flight and is not quiet (see rv_runtime_close) until they are back.
 */
#include <errno.h>
#include <semaphore.h>
#include <stdlib.h>

#include "core/ctx.h"
#include "core/err.h"
#include "core/trace.h"
#include "shards/shard_impl.h"

struct rv_offload_job {
    struct rv_mpsc_node node;
    rv_task_fn *work;
    rv_task_fn *done;
    void *arg;
    struct rv_shard *origin;
};

struct rv_offload_worker {
    pthread_t thread;
    struct rv_mpsc jobs;
    sem_t wake;
    _Atomic int is_stopping;
    rv_runtime_t *rt;
    bool is_started;
};

static void offload_done_on_shard(void *p)
{
    struct rv_offload_job *job = p;
    struct rv_shard *s = job->origin;
    RV_ASSERT(s == rv_shard_current());
    RV_ASSERT(s->offload_inflight > 0);
    s->offload_inflight--;
    if (job->done != NULL)
        job->done(job->arg);
    free(job);
}

static void *offload_main(void *p)
{
    struct rv_offload_worker *w = p;
    (void)pthread_setname_np(pthread_self(), "rv-helper");
    for (;;) {
        while (sem_wait(&w->wake) < 0 && errno == EINTR)
            ;
        struct rv_mpsc_node *node;
        /* A push may be half done when its post arrives: spin briefly then. */
        while ((node = rv_mpsc_pop(&w->jobs)) != NULL || !rv_mpsc_is_empty(&w->jobs)) {
            if (node == NULL) {
                rv_cpu_relax();
                continue;
            }
            struct rv_offload_job *job = (struct rv_offload_job *)node;
            job->work(job->arg);
            rv_runtime_post_internal(w->rt, job->origin, offload_done_on_shard, job);
        }
        if (atomic_load(&w->is_stopping))
            return NULL;
    }
}

int rv_offload_start(rv_runtime_t *rt)
{
    uint32_t n = rt->cfg.offload_threads;
    rt->offload = calloc(n, sizeof(*rt->offload));
    if (rt->offload == NULL)
        return -ENOMEM;
    rt->offload_count = n;
    for (uint32_t i = 0; i < n; i++) {
        struct rv_offload_worker *w = &rt->offload[i];
        w->rt = rt;
        rv_mpsc_init(&w->jobs);
        sem_init(&w->wake, 0, 0);
        int e = pthread_create(&w->thread, NULL, offload_main, w);
        if (e != 0) {
            sem_destroy(&w->wake);
            return rv_errf(-e, "pthread_create(offload %u)", i);
        }
        w->is_started = true;
    }
    return 0;
}

void rv_offload_stop(rv_runtime_t *rt)
{
    for (uint32_t i = 0; i < rt->offload_count; i++) {
        struct rv_offload_worker *w = &rt->offload[i];
        if (!w->is_started)
            continue;
        atomic_store(&w->is_stopping, 1);
        sem_post(&w->wake);
        pthread_join(w->thread, NULL);
        RV_ASSERT(rv_mpsc_is_empty(&w->jobs)); /* the runtime was quiet */
        sem_destroy(&w->wake);
    }
    free(rt->offload);
    rt->offload = NULL;
    rt->offload_count = 0;
}

int rv_offload(rv_task_fn *work, void *arg, rv_task_fn *done)
{
    RV_ASSERT(work != NULL);
    struct rv_shard *s = rv_shard_current();
    if (s == NULL)
        return rv_errf(-EINVAL, "rv_offload outside a shard");
    rv_runtime_t *rt = s->rt;
    if (rt->offload_count == 0)
        return rv_errf(-EINVAL, "rv_offload: the runtime has no helper threads");
    struct rv_offload_job *job = malloc(sizeof(*job));
    if (job == NULL)
        return -ENOMEM;
    *job = (struct rv_offload_job){.work = work, .done = done, .arg = arg, .origin = s};
    struct rv_offload_worker *w = &rt->offload[s->offload_next++ % rt->offload_count];
    s->offload_inflight++;
    rv_mpsc_push(&w->jobs, &job->node);
    sem_post(&w->wake);
    return 0;
}
