/*
 * shards/msg.c - mailboxes: the local task queue, the per-peer outboxes with
 * batched publish, the inbound drain and the wake-up handshake.
 *
 * Sending: rv_msg_send copies the message into the ring to the target
 * (committed, not yet visible) or, when the ring is full or older messages
 * already wait, into that peer's overflow FIFO. rv_msg_flush, once per loop
 * turn, moves overflow into the ring as space allows and publishes each dirty
 * ring with one release store, then wakes the peer if it is asleep.
 *
 * Wake-up handshake (Dekker style, both sides use seq_cst fences):
 *   sleeper: sleeping = 1; fence; check rings -> sleep only if all empty
 *   sender:  publish tail; fence; if (sleeping) exchange(sleeping, 0) -> signal
 * At least one side sees the other's store, so a message is never left behind
 * a sleeping shard, and a busy shard is never signalled (no syscall per send).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/trace.h"
#include "shards/shard_impl.h"

int rv_msg_init(struct rv_shard *s)
{
    uint32_t n = s->rt->n;
    s->out = calloc(n, sizeof(*s->out));
    s->dirty_peers = calloc(n, sizeof(*s->dirty_peers));
    s->task_cap = 256;
    s->tasks = calloc(s->task_cap, sizeof(*s->tasks));
    if (s->out == NULL || s->dirty_peers == NULL || s->tasks == NULL) {
        rv_msg_fini(s);
        return -ENOMEM;
    }
    for (uint32_t peer = 0; peer < n; peer++)
        s->out[peer].ring = &s->rt->rings[(size_t)s->id * n + peer];
    rv_mpsc_init(&s->ext);
    return 0;
}

void rv_msg_fini(struct rv_shard *s)
{
    if (s->out != NULL) {
        for (uint32_t peer = 0; peer < s->rt->n; peer++)
            free(s->out[peer].overflow);
    }
    free(s->out);
    free(s->dirty_peers);
    free(s->tasks);
    s->out = NULL;
    s->dirty_peers = NULL;
    s->tasks = NULL;
    /* Outside submissions that raced with the end are freed unrun: by then
     * rv_runtime_close refuses new ones, so this only drops none in practice. */
    struct rv_mpsc_node *node;
    while ((node = rv_mpsc_pop(&s->ext)) != NULL)
        free((struct rv_ext_msg *)node);
}

/* ---- local task queue ---------------------------------------------------- */

static int task_grow(struct rv_shard *s)
{
    uint32_t cap = s->task_cap * 2;
    if (cap > (1u << 24))
        return -ENOMEM; /* a runaway producer: refuse rather than eat memory */
    struct rv_msg *t = malloc((size_t)cap * sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < s->task_len; i++)
        t[i] = s->tasks[(s->task_head + i) % s->task_cap];
    free(s->tasks);
    s->tasks = t;
    s->task_cap = cap;
    s->task_head = 0;
    return 0;
}

int rv_msg_task_push(struct rv_shard *s, const struct rv_msg *m)
{
    if (s->task_len == s->task_cap) {
        int rc = task_grow(s);
        if (rc < 0)
            return rc;
    }
    s->tasks[(s->task_head + s->task_len) % s->task_cap] = *m;
    s->task_len++;
    return 0;
}

static void msg_run(struct rv_shard *s, const struct rv_msg *m)
{
    switch (m->kind) {
    case RV_MSG_TASK: m->fn(m->arg); break;
    case RV_MSG_CALL:
        m->fn(m->arg);
        if (m->reply != NULL) {
            struct rv_msg r = {
                .reply = m->reply, .arg = m->arg, .kind = RV_MSG_REPLY, .origin = m->origin};
            int rc = m->origin == s->id ? rv_msg_task_push(s, &r) : rv_msg_send(s, m->origin, &r);
            /* Losing a reply would strand the caller forever. */
            RV_ASSERT(rc == 0);
        }
        break;
    case RV_MSG_REPLY: m->reply(m->arg); break;
    default: RV_ASSERT(!"unknown message kind");
    }
    rv_shard_count_add(&s->stats.tasks_run, 1);
}

uint32_t rv_msg_run_tasks(struct rv_shard *s)
{
    /* Only what was queued on entry: a task that queues a task yields to I/O. */
    uint32_t budget = s->task_len < RV_SHARD_TASKS_PER_TURN ? s->task_len : RV_SHARD_TASKS_PER_TURN;
    for (uint32_t i = 0; i < budget; i++) {
        struct rv_msg m = s->tasks[s->task_head];
        s->task_head = (s->task_head + 1) % s->task_cap;
        s->task_len--;
        msg_run(s, &m);
    }
    return budget;
}

/* ---- sending ------------------------------------------------------------- */

static void msg_mark_dirty(struct rv_shard *s, uint32_t peer)
{
    struct rv_outbox *ob = &s->out[peer];
    if (!ob->is_dirty) {
        ob->is_dirty = true;
        s->dirty_peers[s->dirty_count++] = peer;
    }
}

static int overflow_append(struct rv_outbox *ob, const struct rv_msg *m)
{
    if (ob->overflow_head + ob->overflow_len == ob->overflow_cap) {
        if (ob->overflow_head > 0) {
            memmove(ob->overflow, ob->overflow + ob->overflow_head,
                    ob->overflow_len * sizeof(*ob->overflow));
            ob->overflow_head = 0;
        } else {
            uint32_t cap = ob->overflow_cap == 0 ? 256 : ob->overflow_cap * 2;
            if (cap > (1u << 24))
                return -ENOMEM;
            struct rv_msg *o = realloc(ob->overflow, (size_t)cap * sizeof(*o));
            if (o == NULL)
                return -ENOMEM;
            ob->overflow = o;
            ob->overflow_cap = cap;
        }
    }
    ob->overflow[ob->overflow_head + ob->overflow_len++] = *m;
    return 0;
}

int rv_msg_send(struct rv_shard *s, uint32_t target, const struct rv_msg *m)
{
    RV_ASSERT(target < s->rt->n);
    RV_ASSERT(target != s->id);
    struct rv_outbox *ob = &s->out[target];
    /* Counted before the push: the push below may publish at once, and
     * rv_runtime_close must never see the peer's receipt without our send (it
     * would read a message in flight as quiet while this turn goes on). */
    rv_shard_count_add(&s->stats.msgs_sent, 1);
    /* Order per peer: once anything overflowed, later messages queue behind it. */
    if (ob->overflow_len == 0 && rv_spsc_push(ob->ring, m)) {
        /* Publish early in big batches so a fast producer does not fill the
         * ring before the consumer sees anything. */
        if ((ob->ring->tail_local & 63) == 0)
            rv_spsc_publish(ob->ring);
    } else {
        int rc = overflow_append(ob, m);
        if (rc < 0) {
            rv_shard_count_add(&s->stats.msgs_sent, (uint64_t)-1); /* never sent */
            return rc;
        }
    }
    msg_mark_dirty(s, target);
    return 0;
}

/* Move overflow into the ring as space allows; true when none remains. */
static bool outbox_refill(struct rv_outbox *ob)
{
    while (ob->overflow_len > 0 && rv_spsc_push(ob->ring, &ob->overflow[ob->overflow_head])) {
        ob->overflow_head++;
        ob->overflow_len--;
    }
    if (ob->overflow_len == 0)
        ob->overflow_head = 0;
    return ob->overflow_len == 0;
}

void rv_shard_wake(struct rv_shard *peer)
{
    /* seq_cst fence: orders our publish before the read of the peer's flag
     * (pairs with the fence in shard_try_sleep). */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&peer->sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(&peer->sleeping, 0, memory_order_acq_rel)) {
        rv_io_wake(peer->wake_fd);
        struct rv_shard *self = rv_shard_current();
        if (self != NULL)
            rv_shard_count_add(&self->stats.wakeups_sent, 1);
    }
}

void rv_msg_flush(struct rv_shard *s)
{
    uint32_t still = 0;
    for (uint32_t i = 0; i < s->dirty_count; i++) {
        uint32_t peer = s->dirty_peers[i];
        struct rv_outbox *ob = &s->out[peer];
        bool is_drained = outbox_refill(ob);
        if (rv_spsc_has_unpublished(ob->ring))
            rv_spsc_publish(ob->ring);
        /* Always, even when rv_msg_send already published the last slots
         * early: a peer that fell asleep since must be signalled. */
        rv_shard_wake(s->rt->shards[peer]);
        if (is_drained)
            ob->is_dirty = false;
        else
            s->dirty_peers[still++] = peer; /* retry at the next flush */
    }
    s->dirty_count = still;
}

bool rv_msg_has_outbound(const struct rv_shard *s)
{
    return s->dirty_count > 0;
}

/* ---- receiving ----------------------------------------------------------- */

static uint32_t msg_drain_peer(struct rv_shard *s, uint32_t peer)
{
    struct rv_spsc *ring = &s->rt->rings[(size_t)peer * s->rt->n + s->id];
    uint32_t got = 0;
    struct rv_msg *slot;
    while (got < RV_SHARD_MSGS_PER_PEER && (slot = rv_spsc_peek(ring)) != NULL) {
        struct rv_msg m = *slot;
        rv_spsc_consume(ring);
        got++;
        msg_run(s, &m);
    }
    if (got > 0)
        rv_spsc_consume_done(ring);
    return got;
}

static uint32_t msg_drain_ext(struct rv_shard *s)
{
    uint32_t got = 0;
    struct rv_mpsc_node *node;
    while (got < RV_SHARD_EXT_PER_TURN && (node = rv_mpsc_pop(&s->ext)) != NULL) {
        struct rv_ext_msg *e = (struct rv_ext_msg *)node;
        struct rv_msg m = {.fn = e->fn, .arg = e->arg, .kind = RV_MSG_TASK};
        free(e);
        got++;
        msg_run(s, &m);
    }
    return got;
}

uint32_t rv_msg_drain(struct rv_shard *s)
{
    uint32_t got = 0;
    for (uint32_t peer = 0; peer < s->rt->n; peer++) {
        if (peer != s->id)
            got += msg_drain_peer(s, peer);
    }
    got += msg_drain_ext(s);
    if (got > 0)
        rv_shard_count_add(&s->stats.msgs_received, got);
    return got;
}

bool rv_msg_has_inbound(struct rv_shard *s)
{
    for (uint32_t peer = 0; peer < s->rt->n; peer++) {
        if (peer != s->id && !rv_spsc_is_empty(&s->rt->rings[(size_t)peer * s->rt->n + s->id]))
            return true;
    }
    return !rv_mpsc_is_empty(&s->ext);
}
