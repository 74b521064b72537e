/*
 * core/ctx.h - who is running: the shard id of the calling thread.
 *
 * Set once by the shards layer when a shard thread starts; every other thread
 * (an embedding application, a helper) reads -1. Logging, assertions and the
 * pools use it to tell the owner of an object from a foreign thread.
 */
#ifndef RV_CORE_CTX_H
#define RV_CORE_CTX_H

extern _Thread_local int rv_ctx_shard_id_tls;

/* The calling thread's shard id, or -1 outside the runtime. */
static inline int rv_ctx_shard_id(void)
{
    return rv_ctx_shard_id_tls;
}

/* Mark the calling thread as shard `id` (or -1). Called by the shards layer only. */
static inline void rv_ctx_set_shard_id(int id)
{
    rv_ctx_shard_id_tls = id;
}

/*
 * Running work on another shard. core/ cannot call up into shards/, so the
 * shards layer installs a poster when a runtime opens: rv_ctx_post(shard, fn,
 * arg) then queues fn(arg) to run on that shard's thread (through the mailbox
 * from a shard, through the MPSC queue from any other thread). Pools and
 * buffers use it to send memory home to the shard that owns it.
 */
typedef void rv_ctx_task_fn(void *arg);
typedef int rv_ctx_poster_fn(int shard, rv_ctx_task_fn *fn, void *arg);

/* Install (or with NULL remove) the process-wide poster. */
void rv_ctx_set_poster(rv_ctx_poster_fn *fn);

/* Queue fn(arg) on `shard`. Returns 0, -ENOSYS when no runtime installed a
 * poster, or the poster's -errno (-ENOMEM, -ESHUTDOWN). */
int rv_ctx_post(int shard, rv_ctx_task_fn *fn, void *arg);

#endif /* RV_CORE_CTX_H */
