/*
 * core/mpsc.h - an intrusive multi-producer/single-consumer queue (Vyukov).
 *
 * Any thread may push (one atomic exchange, wait-free); exactly one thread pops.
 * Nodes are embedded in the caller's objects and owned by the caller: the queue
 * never allocates. Threads outside the runtime enter a shard through one of
 * these per shard.
 *
 * A pop can briefly see the queue as empty while a push is half done (between
 * the exchange and the link store); rv_mpsc_pop() returns NULL then and the item
 * shows up on a later pop, which is why a consumer must not treat NULL as
 * "nothing was ever pushed" when it decides to sleep: see rv_mpsc_is_empty().
 */
#ifndef RV_CORE_MPSC_H
#define RV_CORE_MPSC_H

#include <stdatomic.h>
#include <stdbool.h>

#include "core/assert.h"

struct rv_mpsc_node {
    _Atomic(struct rv_mpsc_node *) next;
};

struct rv_mpsc {
    _Atomic(struct rv_mpsc_node *) head RV_ALIGNED_CACHE; /* producers exchange here */
    struct rv_mpsc_node *tail RV_ALIGNED_CACHE;           /* consumer only */
    struct rv_mpsc_node sentinel;                         /* keeps the list non-empty */
};

/* Initialise an empty queue. Cannot fail. */
void rv_mpsc_init(struct rv_mpsc *q);

/* Push a node (any thread). The node must not be in any queue. */
void rv_mpsc_push(struct rv_mpsc *q, struct rv_mpsc_node *node);

/* Pop the oldest node, or NULL (consumer thread only). */
struct rv_mpsc_node *rv_mpsc_pop(struct rv_mpsc *q);

/* True only when no push has started that the consumer has not popped yet
 * (consumer thread only). A push in progress counts as not empty. */
bool rv_mpsc_is_empty(struct rv_mpsc *q);

#endif /* RV_CORE_MPSC_H */
