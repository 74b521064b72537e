/* core/ctx.c - the per-thread shard id and the cross-shard poster (see ctx.h). */
#include "core/ctx.h"

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>

_Thread_local int rv_ctx_shard_id_tls = -1;

/* Acquire/release: a thread that sees the poster also sees the runtime it
 * belongs to fully initialised. */
static _Atomic(rv_ctx_poster_fn *) ctx_poster;

void rv_ctx_set_poster(rv_ctx_poster_fn *fn)
{
    atomic_store_explicit(&ctx_poster, fn, memory_order_release);
}

int rv_ctx_post(int shard, rv_ctx_task_fn *fn, void *arg)
{
    rv_ctx_poster_fn *p = atomic_load_explicit(&ctx_poster, memory_order_acquire);
    if (p == NULL)
        return -ENOSYS;
    return p(shard, fn, arg);
}
