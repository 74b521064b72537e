/* core/mpsc.c - Vyukov's intrusive MPSC queue (see mpsc.h). */
#include "core/mpsc.h"

#include <stddef.h>

void rv_mpsc_init(struct rv_mpsc *q)
{
    atomic_init(&q->sentinel.next, NULL);
    atomic_init(&q->head, &q->sentinel);
    q->tail = &q->sentinel;
}

void rv_mpsc_push(struct rv_mpsc *q, struct rv_mpsc_node *node)
{
    atomic_store_explicit(&node->next, NULL, memory_order_relaxed);
    /* acq_rel: release publishes the node's contents to the consumer that follows
     * prev->next; acquire orders us after the previous pusher's exchange. */
    struct rv_mpsc_node *prev = atomic_exchange_explicit(&q->head, node, memory_order_acq_rel);
    /* Release pairs with the consumer's acquire load of ->next. */
    atomic_store_explicit(&prev->next, node, memory_order_release);
}

struct rv_mpsc_node *rv_mpsc_pop(struct rv_mpsc *q)
{
    struct rv_mpsc_node *tail = q->tail;
    struct rv_mpsc_node *next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (tail == &q->sentinel) {
        if (next == NULL)
            return NULL;
        q->tail = next;
        tail = next;
        next = atomic_load_explicit(&next->next, memory_order_acquire);
    }
    if (next != NULL) {
        q->tail = next;
        return tail;
    }
    struct rv_mpsc_node *head = atomic_load_explicit(&q->head, memory_order_acquire);
    if (tail != head)
        return NULL; /* a push is between its exchange and its link: retry later */
    /* tail is the last node: put the sentinel behind it so tail can be handed out. */
    rv_mpsc_push(q, &q->sentinel);
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next != NULL) {
        q->tail = next;
        return tail;
    }
    return NULL;
}

bool rv_mpsc_is_empty(struct rv_mpsc *q)
{
    /* The consumer's tail is a real node exactly when one is waiting to be
     * popped; head away from the sentinel means a push has at least begun its
     * exchange. Acquire pairs with the pusher's acq_rel exchange. */
    struct rv_mpsc_node *head = atomic_load_explicit(&q->head, memory_order_acquire);
    return q->tail == &q->sentinel && head == &q->sentinel;
}
