/*
 * net/kgroup.c - the classic consumer group protocol (see net/kgroup.h): the
 * rebalance state machine, committed offsets, the table of groups and the
 * records of __consumer_offsets.
 *
 * The rules are Kafka's GroupCoordinator's (classic protocol):
 *   - a first join without a member id gets MEMBER_ID_REQUIRED (v4+) with an
 *     id to come back with; static members (group.instance.id) skip that;
 *   - a rebalance from EMPTY waits group.initial.rebalance.delay.ms, extended
 *     while new members keep coming, up to the rebalance timeout; otherwise it
 *     completes when every member rejoined, or at the rebalance timeout (the
 *     largest of the members'), dropping the dynamic members that did not
 *     (static ones stay until their session expires);
 *   - the protocol is the one every member supports that most members prefer;
 *     the leader is kept if it rejoined, else the first member that did;
 *   - a static member rejoining a STABLE group under a new member id takes the
 *     old member's place and assignment without a rebalance (its metadata is
 *     stored first); requests with the old id get FENCED_INSTANCE_ID;
 *   - a follower rejoining with unchanged metadata gets the current generation
 *     back; the leader or new metadata starts a rebalance (the cooperative
 *     protocol's second join relies on that).
 *
 * Invariants: g->leader is NULL or one of g's members; a member has a sync
 * waiter only in COMPLETING_REBALANCE; a waiter is taken off its member
 * before it is answered, so an answer never finds itself parked.
 */
#include "net/kgroup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/kproto.h"

#define KGROUP_CLIENT_ID_IN_MEMBER_ID 200 /* bytes of the client id a member id keeps */

/* ---- small helpers ----------------------------------------------------------------------- */

static bool kgroup_streq(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

static int kgroup_bytes_set(struct kgroup_bytes *b, const uint8_t *p, int32_t len)
{
    uint8_t *copy = NULL;
    if (len > 0) {
        copy = malloc((size_t)len);
        if (copy == NULL)
            return -ENOMEM;
        memcpy(copy, p, (size_t)len);
    }
    free(b->ptr);
    b->ptr = copy;
    b->len = len < 0 ? 0 : len;
    return 0;
}

static void kgroup_bytes_clear(struct kgroup_bytes *b)
{
    free(b->ptr);
    b->ptr = NULL;
    b->len = 0;
}

static int64_t kgroup_min(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static void kgroup_set_state(struct kgroup *g, enum kgroup_state s)
{
    /* Kafka's valid previous states. */
    if (s == KGROUP_COMPLETING_REBALANCE)
        RV_ASSERT(g->state == KGROUP_PREPARING_REBALANCE);
    if (s == KGROUP_STABLE)
        RV_ASSERT(g->state == KGROUP_COMPLETING_REBALANCE);
    if (s == KGROUP_PREPARING_REBALANCE)
        RV_ASSERT(g->state != KGROUP_PREPARING_REBALANCE && g->state != KGROUP_DEAD);
    if (s == KGROUP_DEAD)
        RV_ASSERT(g->state == KGROUP_EMPTY);
    g->state = s;
}

const char *kgroup_state_name(enum kgroup_state s)
{
    switch (s) {
    case KGROUP_EMPTY: return "Empty";
    case KGROUP_PREPARING_REBALANCE: return "PreparingRebalance";
    case KGROUP_COMPLETING_REBALANCE: return "CompletingRebalance";
    case KGROUP_STABLE: return "Stable";
    default: return "Dead";
    }
}

/* xorshift64*: member ids need to be unique, not secret. */
static uint64_t kgroup_rand(struct kgroup_env *env)
{
    uint64_t x = env->rand_state != 0 ? env->rand_state : 0x9e3779b97f4a7c15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    env->rand_state = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* Kafka's member id: the client id, "-", a random (v4) uuid. NULL: no memory. */
static char *kgroup_new_member_id(struct kgroup_env *env, const char *client_id)
{
    uint64_t a = kgroup_rand(env), b = kgroup_rand(env);
    a = (a & ~0xf000ull) | 0x4000ull;       /* version 4 */
    b = (b & ~(3ull << 62)) | (2ull << 62); /* variant 1 */
    size_t n = strnlen(client_id, KGROUP_CLIENT_ID_IN_MEMBER_ID);
    char *id = malloc(n + 38);
    if (id == NULL)
        return NULL;
    snprintf(id, n + 38, "%.*s-%08x-%04x-%04x-%04x-%012llx", (int)n, client_id, (unsigned)(a >> 32),
             (unsigned)(a >> 16) & 0xffffu, (unsigned)a & 0xffffu, (unsigned)(b >> 48),
             (unsigned long long)(b & 0xffffffffffffull));
    return id;
}

/* ---- members ------------------------------------------------------------------------------ */

static void kgroup_protocols_free(struct kgroup_protocol *p, uint32_t count)
{
    for (uint32_t i = 0; i < count && p != NULL; i++) {
        free(p[i].name);
        free(p[i].metadata.ptr);
    }
    free(p);
}

/* Copy a join's protocols. -ENOMEM (nothing kept). */
static int kgroup_protocols_copy(const struct kgroup_join *j, struct kgroup_protocol **out)
{
    struct kgroup_protocol *p = calloc(j->protocol_count + 1, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < j->protocol_count; i++) {
        p[i].name = strdup(j->protocols[i].name);
        if (p[i].name == NULL || kgroup_bytes_set(&p[i].metadata, j->protocols[i].metadata,
                                                  j->protocols[i].metadata_len) < 0) {
            kgroup_protocols_free(p, i + 1);
            return -ENOMEM;
        }
    }
    *out = p;
    return 0;
}

static void kgroup_member_free(struct kgroup_member *m)
{
    if (m == NULL)
        return;
    RV_ASSERT(m->join_waiter == NULL && m->sync_waiter == NULL);
    free(m->id);
    free(m->instance_id);
    free(m->client_id);
    free(m->client_host);
    kgroup_protocols_free(m->protocols, m->protocol_count);
    free(m->assignment.ptr);
    free(m->static_leader);
    free(m);
}

struct kgroup_member *kgroup_member_find(const struct kgroup *g, const char *member_id)
{
    for (struct kgroup_member *m = g->members; m != NULL && member_id != NULL; m = m->next) {
        if (strcmp(m->id, member_id) == 0)
            return m;
    }
    return NULL;
}

static struct kgroup_member *kgroup_static_find(const struct kgroup *g, const char *instance_id)
{
    for (struct kgroup_member *m = g->members; m != NULL && instance_id != NULL; m = m->next) {
        if (kgroup_streq(m->instance_id, instance_id))
            return m;
    }
    return NULL;
}

/* Kafka's isStaticMemberFenced: the instance id is known under another member id. */
static bool kgroup_is_fenced(const struct kgroup *g, const char *member_id, const char *instance_id)
{
    const struct kgroup_member *m = kgroup_static_find(g, instance_id);
    return m != NULL && strcmp(m->id, member_id) != 0;
}

struct kgroup_bytes kgroup_member_metadata(const struct kgroup_member *m, const char *protocol)
{
    for (uint32_t i = 0; i < m->protocol_count && protocol != NULL; i++) {
        if (strcmp(m->protocols[i].name, protocol) == 0)
            return m->protocols[i].metadata;
    }
    return (struct kgroup_bytes){.ptr = NULL, .len = -1};
}

static bool kgroup_member_supports(const struct kgroup_member *m, const char *protocol)
{
    return kgroup_member_metadata(m, protocol).len >= 0;
}

/* The same protocols, metadata included, in the same order. */
static bool kgroup_member_matches(const struct kgroup_member *m, const struct kgroup_join *j)
{
    if (m->protocol_count != j->protocol_count)
        return false;
    for (uint32_t i = 0; i < j->protocol_count; i++) {
        const struct kgroup_protocol *p = &m->protocols[i];
        const struct kgroup_join_protocol *q = &j->protocols[i];
        int32_t qlen = q->metadata_len < 0 ? 0 : q->metadata_len;
        if (strcmp(p->name, q->name) != 0 || p->metadata.len != qlen ||
            (qlen > 0 && memcmp(p->metadata.ptr, q->metadata, (size_t)qlen) != 0))
            return false;
    }
    return true;
}

/* Every member supports protocol. */
static bool kgroup_all_support(const struct kgroup *g, const char *protocol)
{
    for (const struct kgroup_member *m = g->members; m != NULL; m = m->next) {
        if (!kgroup_member_supports(m, protocol))
            return false;
    }
    return true;
}

/* Kafka's supportsProtocols: a protocol type and protocols, and one protocol
 * every current member supports. */
static bool kgroup_supports(const struct kgroup *g, const struct kgroup_join *j)
{
    if (j->protocol_type == NULL || j->protocol_type[0] == '\0' || j->protocol_count == 0)
        return false;
    if (g->member_count == 0)
        return true;
    if (!kgroup_streq(g->protocol_type, j->protocol_type))
        return false;
    for (uint32_t i = 0; i < j->protocol_count; i++) {
        if (kgroup_all_support(g, j->protocols[i].name))
            return true;
    }
    return false;
}

/* The protocol of the next generation: each member votes for the first of its
 * protocols that every member supports; most votes win (ties: the earliest
 * member's vote). NULL when the members share none. */
static const char *kgroup_select(const struct kgroup *g)
{
    const char *best = NULL;
    uint32_t best_votes = 0;
    for (const struct kgroup_member *m = g->members; m != NULL; m = m->next) {
        const char *vote = NULL;
        for (uint32_t i = 0; i < m->protocol_count && vote == NULL; i++) {
            if (kgroup_all_support(g, m->protocols[i].name))
                vote = m->protocols[i].name;
        }
        if (vote == NULL || kgroup_streq(vote, best))
            continue;
        uint32_t votes = 0;
        for (const struct kgroup_member *o = g->members; o != NULL; o = o->next) {
            for (uint32_t i = 0; i < o->protocol_count; i++) {
                if (kgroup_all_support(g, o->protocols[i].name)) {
                    votes += strcmp(o->protocols[i].name, vote) == 0;
                    break;
                }
            }
        }
        if (votes > best_votes) {
            best = vote;
            best_votes = votes;
        }
    }
    return best;
}

static int32_t kgroup_rebalance_timeout(const struct kgroup *g)
{
    int32_t t = 0;
    for (const struct kgroup_member *m = g->members; m != NULL; m = m->next)
        t = m->rebalance_timeout_ms > t ? m->rebalance_timeout_ms : t;
    return t;
}

/* A member with a request parked is alive: its session restarts when it is answered. */
static bool kgroup_is_kept_alive(const struct kgroup_member *m)
{
    return m->join_waiter != NULL || m->sync_waiter != NULL;
}

static void kgroup_touch(struct kgroup_member *m, int64_t now_ms)
{
    m->deadline_ms = now_ms + m->session_timeout_ms;
}

/* ---- answers ---------------------------------------------------------------------------- */

static void kgroup_join_fail(struct kgroup_waiter *w, const char *member_id, int16_t error)
{
    struct kgroup_result res = {
        .error = error, .generation = -1, .leader = "", .member_id = member_id ? member_id : ""};
    w->fn(w, &res);
}

static void kgroup_sync_fail(struct kgroup_waiter *w, int16_t error)
{
    struct kgroup_result res = {.error = error, .generation = -1, .leader = "", .member_id = ""};
    w->fn(w, &res);
}

/* Answer m's join with the current generation; the leader gets the members. */
static void kgroup_join_answer(struct kgroup *g, struct kgroup_member *m, const char *leader,
                               bool has_members)
{
    struct kgroup_waiter *w = m->join_waiter;
    RV_ASSERT(w != NULL);
    m->join_waiter = NULL;
    m->is_static_storing = false;
    struct kgroup_result res = {
        .error = KGERR_NONE,
        .generation = g->generation,
        .protocol_type = g->protocol_type,
        .protocol_name = g->protocol,
        .leader = leader != NULL      ? leader
                  : g->leader != NULL ? g->leader->id
                                      : "",
        .member_id = m->id,
        .members_of = has_members ? g : NULL,
    };
    w->fn(w, &res);
}

static void kgroup_sync_answer(struct kgroup *g, struct kgroup_member *m, int16_t error)
{
    struct kgroup_waiter *w = m->sync_waiter;
    RV_ASSERT(w != NULL);
    m->sync_waiter = NULL;
    if (error != KGERR_NONE) {
        kgroup_sync_fail(w, error);
        return;
    }
    struct kgroup_result res = {
        .error = KGERR_NONE,
        .generation = g->generation,
        .protocol_type = g->protocol_type,
        .protocol_name = g->protocol,
        .leader = "",
        .member_id = m->id,
        .assignment = m->assignment.ptr,
        .assignment_len = m->assignment.len,
    };
    w->fn(w, &res);
}

/* Answer whatever m has parked with error (it is leaving or fenced). */
static void kgroup_member_release(struct kgroup_member *m, int16_t error)
{
    if (m->join_waiter != NULL) {
        struct kgroup_waiter *w = m->join_waiter;
        m->join_waiter = NULL;
        kgroup_join_fail(w, m->id, error);
    }
    if (m->sync_waiter != NULL) {
        struct kgroup_waiter *w = m->sync_waiter;
        m->sync_waiter = NULL;
        kgroup_sync_fail(w, error);
    }
    m->is_static_storing = false;
}

/* ---- rebalancing ------------------------------------------------------------------------- */

static void kgroup_complete_join(struct kgroup_env *env, struct kgroup *g, int64_t now_ms);

/* Unlink and free a member that has nothing parked. */
static void kgroup_remove_member(struct kgroup *g, struct kgroup_member *m)
{
    struct kgroup_member **pp = &g->members;
    while (*pp != m)
        pp = &(*pp)->next;
    *pp = m->next;
    RV_ASSERT(g->member_count > 0);
    g->member_count--;
    if (g->leader == m)
        g->leader = g->members;
    kgroup_member_free(m);
}

/* Kafka's resetAndPropagateAssignmentError. */
static void kgroup_reset_assignments(struct kgroup *g, int16_t error)
{
    for (struct kgroup_member *m = g->members; m != NULL; m = m->next) {
        kgroup_bytes_clear(&m->assignment);
        if (m->sync_waiter != NULL)
            kgroup_sync_answer(g, m, error);
    }
}

static bool kgroup_all_joined(const struct kgroup *g)
{
    if (g->pending != NULL)
        return false;
    for (const struct kgroup_member *m = g->members; m != NULL; m = m->next) {
        if (m->join_waiter == NULL)
            return false;
    }
    return true;
}

/* Complete the rebalance now if nobody else is expected. */
static void kgroup_check_join(struct kgroup_env *env, struct kgroup *g, int64_t now_ms)
{
    if (g->state == KGROUP_PREPARING_REBALANCE && !g->is_initial_delay && kgroup_all_joined(g))
        kgroup_complete_join(env, g, now_ms);
}

static void kgroup_prepare_rebalance(struct kgroup_env *env, struct kgroup *g, int64_t now_ms)
{
    if (g->state == KGROUP_COMPLETING_REBALANCE)
        kgroup_reset_assignments(g, KGERR_REBALANCE_IN_PROGRESS);
    int32_t timeout = kgroup_rebalance_timeout(g);
    if (g->state == KGROUP_EMPTY) {
        g->is_initial_delay = true;
        g->join_deadline_ms = now_ms + env->initial_delay_ms;
        g->initial_left_ms = timeout > env->initial_delay_ms ? timeout - env->initial_delay_ms : 0;
    } else {
        g->is_initial_delay = false;
        g->join_deadline_ms = now_ms + timeout;
    }
    kgroup_set_state(g, KGROUP_PREPARING_REBALANCE);
    kgroup_check_join(env, g, now_ms);
}

static void kgroup_maybe_prepare(struct kgroup_env *env, struct kgroup *g, int64_t now_ms)
{
    if (g->state == KGROUP_STABLE || g->state == KGROUP_COMPLETING_REBALANCE ||
        g->state == KGROUP_EMPTY)
        kgroup_prepare_rebalance(env, g, now_ms);
}

/* Keep the leader if it rejoined, else elect the first member that did. */
static bool kgroup_elect_joined_leader(struct kgroup *g)
{
    if (g->leader != NULL && g->leader->join_waiter != NULL)
        return true;
    for (struct kgroup_member *m = g->members; m != NULL; m = m->next) {
        if (m->join_waiter != NULL) {
            g->leader = m;
            return true;
        }
    }
    return false;
}

static void kgroup_complete_join(struct kgroup_env *env, struct kgroup *g, int64_t now_ms)
{
    RV_ASSERT(g->state == KGROUP_PREPARING_REBALANCE);
    for (struct kgroup_member *m = g->members, *next; m != NULL; m = next) {
        next = m->next;
        if (m->join_waiter == NULL && m->instance_id == NULL) {
            kgroup_member_release(m, KGERR_UNKNOWN_MEMBER_ID);
            kgroup_remove_member(g, m);
        }
    }
    if (g->member_count > 0 && !kgroup_elect_joined_leader(g)) {
        /* Only static members that did not rejoin: wait for them (or their
         * sessions to end) another rebalance timeout. */
        g->is_initial_delay = false;
        g->join_deadline_ms = now_ms + kgroup_rebalance_timeout(g);
        return;
    }
    char *protocol = NULL;
    if (g->member_count > 0) {
        const char *sel = kgroup_select(g);
        protocol = strdup(sel != NULL ? sel : "");
        if (protocol == NULL) { /* try again later; the members rejoin */
            for (struct kgroup_member *m = g->members; m != NULL; m = m->next)
                kgroup_member_release(m, KGERR_COORDINATOR_NOT_AVAILABLE);
            g->join_deadline_ms = now_ms + kgroup_rebalance_timeout(g);
            return;
        }
    }
    g->generation++;
    free(g->protocol);
    g->protocol = protocol;
    g->is_initial_delay = false;
    g->has_new_member = false;
    if (g->member_count == 0) {
        g->state = KGROUP_EMPTY;
        env->store(env, g, KGROUP_STORE_PLAIN, NULL);
        return;
    }
    kgroup_set_state(g, KGROUP_COMPLETING_REBALANCE);
    for (struct kgroup_member *m = g->members; m != NULL; m = m->next) {
        kgroup_touch(m, now_ms);
        if (m->join_waiter != NULL)
            kgroup_join_answer(g, m, NULL, m == g->leader);
    }
}

/* The member leaves (LeaveGroup, session expiry): Kafka's removeMemberAndUpdateGroup. */
static void kgroup_member_gone(struct kgroup_env *env, struct kgroup *g, struct kgroup_member *m,
                               int64_t now_ms)
{
    kgroup_member_release(m, KGERR_UNKNOWN_MEMBER_ID);
    kgroup_remove_member(g, m);
    if (g->state == KGROUP_STABLE || g->state == KGROUP_COMPLETING_REBALANCE)
        kgroup_maybe_prepare(env, g, now_ms);
    else
        kgroup_check_join(env, g, now_ms);
}

/* ---- JoinGroup --------------------------------------------------------------------------- */

/* Take the join's protocols and timeouts; 0 or -ENOMEM (m unchanged). */
static int kgroup_member_update(struct kgroup_member *m, const struct kgroup_join *j)
{
    struct kgroup_protocol *p;
    if (kgroup_protocols_copy(j, &p) < 0)
        return -ENOMEM;
    kgroup_protocols_free(m->protocols, m->protocol_count);
    m->protocols = p;
    m->protocol_count = j->protocol_count;
    m->session_timeout_ms = j->session_timeout_ms;
    m->rebalance_timeout_ms = j->rebalance_timeout_ms;
    return 0;
}

/* A join parks on m (an older parked join of m is answered: superseded). */
static void kgroup_park_join(struct kgroup_member *m, struct kgroup_waiter *w)
{
    if (m->join_waiter != NULL) {
        struct kgroup_waiter *old = m->join_waiter;
        m->join_waiter = NULL;
        kgroup_join_fail(old, m->id, KGERR_REBALANCE_IN_PROGRESS);
    }
    m->join_waiter = w;
}

/* Kafka's addMemberAndRebalance; takes id. */
static void kgroup_add_member(struct kgroup_env *env, struct kgroup *g, char *id,
                              const struct kgroup_join *j, struct kgroup_waiter *w, int64_t now_ms)
{
    struct kgroup_member *m = calloc(1, sizeof(*m));
    char *ptype = g->member_count == 0 ? strdup(j->protocol_type) : NULL;
    if (m != NULL) {
        m->id = id;
        id = NULL;
        m->instance_id = j->instance_id != NULL ? strdup(j->instance_id) : NULL;
        m->client_id = strdup(j->client_id);
        m->client_host = strdup(j->client_host);
    }
    if (m == NULL || (g->member_count == 0 && ptype == NULL) ||
        (j->instance_id != NULL && m->instance_id == NULL) || m->client_id == NULL ||
        m->client_host == NULL || kgroup_member_update(m, j) < 0) {
        kgroup_join_fail(w, m != NULL ? m->id : id, KGERR_COORDINATOR_NOT_AVAILABLE);
        kgroup_member_free(m);
        free(id);
        free(ptype);
        return;
    }
    if (ptype != NULL) {
        free(g->protocol_type);
        g->protocol_type = ptype;
    }
    struct kgroup_member **pp = &g->members;
    while (*pp != NULL)
        pp = &(*pp)->next;
    *pp = m;
    g->member_count++;
    if (g->leader == NULL)
        g->leader = m;
    m->join_waiter = w;
    kgroup_touch(m, now_ms);
    if (g->state == KGROUP_PREPARING_REBALANCE && g->generation == 0)
        g->has_new_member = true;
    kgroup_maybe_prepare(env, g, now_ms);
    kgroup_check_join(env, g, now_ms);
}

/* Kafka's updateMemberAndRebalance. */
static void kgroup_update_and_rebalance(struct kgroup_env *env, struct kgroup *g,
                                        struct kgroup_member *m, const struct kgroup_join *j,
                                        struct kgroup_waiter *w, int64_t now_ms)
{
    if (kgroup_member_update(m, j) < 0) {
        kgroup_join_fail(w, m->id, KGERR_COORDINATOR_NOT_AVAILABLE);
        return;
    }
    kgroup_park_join(m, w);
    kgroup_maybe_prepare(env, g, now_ms);
    kgroup_check_join(env, g, now_ms);
}

/* Kafka's updateStaticMemberAndRebalance: the instance comes back as new_id. */
static void kgroup_static_rejoin(struct kgroup_env *env, struct kgroup *g, struct kgroup_member *m,
                                 char *new_id, const struct kgroup_join *j, struct kgroup_waiter *w,
                                 int64_t now_ms)
{
    char *leader = strdup(g->leader != NULL ? g->leader->id : "");
    if (leader == NULL || kgroup_member_update(m, j) < 0) {
        kgroup_join_fail(w, "", KGERR_COORDINATOR_NOT_AVAILABLE);
        free(leader);
        free(new_id);
        return;
    }
    kgroup_member_release(m, KGERR_FENCED_INSTANCE_ID); /* the old instance's requests */
    free(m->id);
    m->id = new_id;
    m->join_waiter = w;
    kgroup_touch(m, now_ms);
    if (g->state == KGROUP_STABLE) {
        const char *sel = kgroup_select(g);
        if (sel != NULL && kgroup_streq(sel, g->protocol)) {
            /* Same protocol: no rebalance; the answer waits for the store and
             * names the old leader, so the member syncs as a follower and gets
             * the assignment it had. */
            free(m->static_leader);
            m->static_leader = leader;
            m->is_static_storing = true;
            env->store(env, g, KGROUP_STORE_STATIC, m->id);
            return;
        }
        kgroup_maybe_prepare(env, g, now_ms);
    } else if (g->state == KGROUP_COMPLETING_REBALANCE) {
        kgroup_maybe_prepare(env, g, now_ms);
    } else {
        kgroup_check_join(env, g, now_ms);
    }
    free(leader);
}

static void kgroup_join_new(struct kgroup_env *env, struct kgroup *g, const struct kgroup_join *j,
                            struct kgroup_waiter *w, int64_t now_ms)
{
    char *id = kgroup_new_member_id(env, j->client_id);
    if (id == NULL) {
        kgroup_join_fail(w, "", KGERR_COORDINATOR_NOT_AVAILABLE);
        return;
    }
    if (j->instance_id != NULL) {
        struct kgroup_member *m = kgroup_static_find(g, j->instance_id);
        if (m != NULL)
            kgroup_static_rejoin(env, g, m, id, j, w, now_ms);
        else
            kgroup_add_member(env, g, id, j, w, now_ms);
        return;
    }
    if (j->is_member_id_required) {
        struct kgroup_pending *p = calloc(1, sizeof(*p));
        if (p == NULL) {
            kgroup_join_fail(w, "", KGERR_COORDINATOR_NOT_AVAILABLE);
            free(id);
            return;
        }
        p->id = id;
        p->deadline_ms = now_ms + j->session_timeout_ms;
        p->next = g->pending;
        g->pending = p;
        kgroup_join_fail(w, id, KGERR_MEMBER_ID_REQUIRED);
        return;
    }
    kgroup_add_member(env, g, id, j, w, now_ms);
}

/* Take the pending member id, if member_id is one; NULL otherwise. */
static char *kgroup_pending_take(struct kgroup *g, const char *member_id)
{
    for (struct kgroup_pending **pp = &g->pending; *pp != NULL; pp = &(*pp)->next) {
        struct kgroup_pending *p = *pp;
        if (strcmp(p->id, member_id) == 0) {
            char *id = p->id;
            *pp = p->next;
            free(p);
            return id;
        }
    }
    return NULL;
}

static void kgroup_join_known(struct kgroup_env *env, struct kgroup *g, const struct kgroup_join *j,
                              struct kgroup_waiter *w, int64_t now_ms)
{
    char *pending = kgroup_pending_take(g, j->member_id);
    if (pending != NULL) {
        kgroup_add_member(env, g, pending, j, w, now_ms);
        return;
    }
    if (kgroup_is_fenced(g, j->member_id, j->instance_id)) {
        kgroup_join_fail(w, j->member_id, KGERR_FENCED_INSTANCE_ID);
        return;
    }
    struct kgroup_member *m = kgroup_member_find(g, j->member_id);
    if (m == NULL || (j->instance_id != NULL && kgroup_static_find(g, j->instance_id) == NULL)) {
        kgroup_join_fail(w, j->member_id, KGERR_UNKNOWN_MEMBER_ID);
        return;
    }
    bool is_same = kgroup_member_matches(m, j);
    switch (g->state) {
    case KGROUP_PREPARING_REBALANCE: kgroup_update_and_rebalance(env, g, m, j, w, now_ms); break;
    case KGROUP_COMPLETING_REBALANCE:
    case KGROUP_STABLE:
        if (is_same && (g->state == KGROUP_COMPLETING_REBALANCE || m != g->leader)) {
            /* It missed the answer, or a follower with nothing new: the
             * current generation (members for the leader while completing). */
            kgroup_park_join(m, w);
            kgroup_touch(m, now_ms);
            kgroup_join_answer(g, m, NULL,
                               g->state == KGROUP_COMPLETING_REBALANCE && m == g->leader);
        } else {
            kgroup_update_and_rebalance(env, g, m, j, w, now_ms);
        }
        break;
    default: kgroup_join_fail(w, j->member_id, KGERR_UNKNOWN_MEMBER_ID); break;
    }
}

void kgroup_join(struct kgroup_env *env, struct kgroup *g, const struct kgroup_join *j,
                 struct kgroup_waiter *w, int64_t now_ms)
{
    RV_ASSERT(j->member_id != NULL && j->client_id != NULL && j->client_host != NULL);
    RV_ASSERT(w != NULL && w->fn != NULL);
    if (g->state == KGROUP_DEAD) {
        kgroup_join_fail(w, j->member_id, KGERR_COORDINATOR_NOT_AVAILABLE);
    } else if (j->session_timeout_ms < env->session_min_ms ||
               j->session_timeout_ms > env->session_max_ms) {
        kgroup_join_fail(w, j->member_id, KGERR_INVALID_SESSION_TIMEOUT);
    } else if (!kgroup_supports(g, j)) {
        kgroup_join_fail(w, j->member_id, KGERR_INCONSISTENT_GROUP_PROTOCOL);
    } else if (j->member_id[0] == '\0') {
        kgroup_join_new(env, g, j, w, now_ms);
    } else {
        kgroup_join_known(env, g, j, w, now_ms);
    }
}

/* ---- SyncGroup, Heartbeat, LeaveGroup, OffsetCommit ---------------------------------------- */

/* The leader's assignment: every member gets its own (none: empty). */
static int kgroup_assign(struct kgroup *g, const struct kgroup_sync *s)
{
    for (struct kgroup_member *m = g->members; m != NULL; m = m->next) {
        const struct kgroup_assignment *a = NULL;
        for (uint32_t i = 0; i < s->assignment_count && a == NULL; i++) {
            if (kgroup_streq(s->assignments[i].member_id, m->id))
                a = &s->assignments[i];
        }
        int rc = a != NULL ? kgroup_bytes_set(&m->assignment, a->bytes, a->len)
                           : kgroup_bytes_set(&m->assignment, NULL, 0);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void kgroup_sync(struct kgroup_env *env, struct kgroup *g, const struct kgroup_sync *s,
                 struct kgroup_waiter *w, int64_t now_ms)
{
    RV_ASSERT(s->member_id != NULL && w != NULL && w->fn != NULL);
    struct kgroup_member *m = kgroup_member_find(g, s->member_id);
    int16_t error = KGERR_NONE;
    if (g->state == KGROUP_DEAD)
        error = KGERR_COORDINATOR_NOT_AVAILABLE;
    else if (kgroup_is_fenced(g, s->member_id, s->instance_id))
        error = KGERR_FENCED_INSTANCE_ID;
    else if (m == NULL)
        error = KGERR_UNKNOWN_MEMBER_ID;
    else if (s->generation != g->generation)
        error = KGERR_ILLEGAL_GENERATION;
    else if ((s->protocol_type != NULL && !kgroup_streq(s->protocol_type, g->protocol_type)) ||
             (s->protocol_name != NULL && !kgroup_streq(s->protocol_name, g->protocol)))
        error = KGERR_INCONSISTENT_GROUP_PROTOCOL;
    else if (g->state == KGROUP_EMPTY)
        error = KGERR_UNKNOWN_MEMBER_ID;
    else if (g->state == KGROUP_PREPARING_REBALANCE)
        error = KGERR_REBALANCE_IN_PROGRESS;
    if (error != KGERR_NONE) {
        kgroup_sync_fail(w, error);
        return;
    }
    kgroup_touch(m, now_ms);
    if (m->sync_waiter != NULL)
        kgroup_sync_answer(g, m, KGERR_REBALANCE_IN_PROGRESS); /* superseded */
    m->sync_waiter = w;
    if (g->state == KGROUP_STABLE) {
        kgroup_sync_answer(g, m, KGERR_NONE);
        return;
    }
    if (m != g->leader)
        return; /* answered once the leader's assignment is stored */
    if (kgroup_assign(g, s) < 0) {
        kgroup_reset_assignments(g, KGERR_COORDINATOR_NOT_AVAILABLE);
        kgroup_maybe_prepare(env, g, now_ms);
        return;
    }
    env->store(env, g, KGROUP_STORE_SYNC, NULL);
}

int16_t kgroup_heartbeat(struct kgroup_env *env, struct kgroup *g, const char *member_id,
                         const char *instance_id, int32_t generation, int64_t now_ms)
{
    (void)env; /* a heartbeat changes no state beyond the session */
    struct kgroup_member *m = kgroup_member_find(g, member_id);
    if (g->state == KGROUP_DEAD)
        return KGERR_COORDINATOR_NOT_AVAILABLE;
    if (kgroup_is_fenced(g, member_id, instance_id))
        return KGERR_FENCED_INSTANCE_ID;
    if (m == NULL)
        return KGERR_UNKNOWN_MEMBER_ID;
    if (generation != g->generation)
        return KGERR_ILLEGAL_GENERATION;
    if (g->state == KGROUP_EMPTY)
        return KGERR_UNKNOWN_MEMBER_ID;
    kgroup_touch(m, now_ms);
    return g->state == KGROUP_PREPARING_REBALANCE ? KGERR_REBALANCE_IN_PROGRESS : KGERR_NONE;
}

int16_t kgroup_leave(struct kgroup_env *env, struct kgroup *g, const char *member_id,
                     const char *instance_id, int64_t now_ms)
{
    if (g->state == KGROUP_DEAD)
        return KGERR_COORDINATOR_NOT_AVAILABLE;
    struct kgroup_member *m;
    if (member_id[0] == '\0' && instance_id != NULL) {
        m = kgroup_static_find(g, instance_id);
    } else {
        if (kgroup_is_fenced(g, member_id, instance_id))
            return KGERR_FENCED_INSTANCE_ID;
        char *pending = kgroup_pending_take(g, member_id);
        if (pending != NULL) {
            free(pending);
            kgroup_check_join(env, g, now_ms);
            return KGERR_NONE;
        }
        m = kgroup_member_find(g, member_id);
    }
    if (m == NULL)
        return KGERR_UNKNOWN_MEMBER_ID;
    kgroup_member_gone(env, g, m, now_ms);
    return KGERR_NONE;
}

int16_t kgroup_commit_check(struct kgroup_env *env, struct kgroup *g, int32_t generation,
                            const char *member_id, const char *instance_id, int64_t now_ms)
{
    (void)env;
    struct kgroup_member *m = kgroup_member_find(g, member_id);
    if (g->state == KGROUP_DEAD)
        return KGERR_COORDINATOR_NOT_AVAILABLE;
    if (generation >= 0 || member_id[0] != '\0' || instance_id != NULL) {
        if (kgroup_is_fenced(g, member_id, instance_id))
            return KGERR_FENCED_INSTANCE_ID;
        if (m == NULL)
            return KGERR_UNKNOWN_MEMBER_ID;
        if (generation != g->generation)
            return KGERR_ILLEGAL_GENERATION;
    } else if (g->state != KGROUP_EMPTY) {
        return KGERR_UNKNOWN_MEMBER_ID; /* only members commit to a group in use */
    }
    if (g->state == KGROUP_COMPLETING_REBALANCE)
        return KGERR_REBALANCE_IN_PROGRESS;
    if (m != NULL)
        kgroup_touch(m, now_ms);
    return KGERR_NONE;
}

void kgroup_stored(struct kgroup_env *env, struct kgroup *g, enum kgroup_store_kind kind,
                   int32_t generation, const char *member_id, int16_t error, int64_t now_ms)
{
    if (kind == KGROUP_STORE_SYNC) {
        if (g->state != KGROUP_COMPLETING_REBALANCE || generation != g->generation)
            return; /* a newer rebalance took over */
        if (error != KGERR_NONE) {
            kgroup_reset_assignments(g, error);
            kgroup_maybe_prepare(env, g, now_ms);
            return;
        }
        kgroup_set_state(g, KGROUP_STABLE);
        for (struct kgroup_member *m = g->members; m != NULL; m = m->next) {
            if (m->sync_waiter != NULL) {
                kgroup_touch(m, now_ms);
                kgroup_sync_answer(g, m, KGERR_NONE);
            }
        }
        return;
    }
    if (kind != KGROUP_STORE_STATIC)
        return;
    struct kgroup_member *m = kgroup_member_find(g, member_id);
    if (m == NULL || !m->is_static_storing || m->join_waiter == NULL)
        return; /* a rebalance answered it meanwhile */
    m->is_static_storing = false;
    kgroup_touch(m, now_ms);
    if (error != KGERR_NONE) {
        struct kgroup_waiter *w = m->join_waiter;
        m->join_waiter = NULL;
        kgroup_join_fail(w, "", error);
        return;
    }
    kgroup_join_answer(g, m, m->static_leader, false);
}

/* ---- time ------------------------------------------------------------------------------------ */

void kgroup_tick(struct kgroup_env *env, struct kgroup *g, int64_t now_ms)
{
    /* Each expiry may answer waiters and change the members: look again after it. */
    for (uint32_t bound = g->member_count + 1; bound > 0; bound--) {
        struct kgroup_member *m = g->members;
        while (m != NULL && (kgroup_is_kept_alive(m) || m->deadline_ms > now_ms))
            m = m->next;
        if (m == NULL)
            break;
        kgroup_member_gone(env, g, m, now_ms);
    }
    bool is_pending_gone = false;
    for (struct kgroup_pending **pp = &g->pending; *pp != NULL;) {
        struct kgroup_pending *p = *pp;
        if (p->deadline_ms <= now_ms) {
            *pp = p->next;
            free(p->id);
            free(p);
            is_pending_gone = true;
        } else {
            pp = &p->next;
        }
    }
    if (is_pending_gone)
        kgroup_check_join(env, g, now_ms);
    if (g->state != KGROUP_PREPARING_REBALANCE || now_ms < g->join_deadline_ms)
        return;
    if (g->is_initial_delay && g->has_new_member && g->initial_left_ms > 0) {
        /* New members keep coming: wait a little more, within the rebalance timeout. */
        int32_t delay = (int32_t)kgroup_min(env->initial_delay_ms, g->initial_left_ms);
        g->has_new_member = false;
        g->initial_left_ms -= delay;
        g->join_deadline_ms = now_ms + delay;
        return;
    }
    kgroup_complete_join(env, g, now_ms);
}

int64_t kgroup_next_deadline(const struct kgroup *g)
{
    int64_t t = INT64_MAX;
    for (const struct kgroup_member *m = g->members; m != NULL; m = m->next) {
        if (!kgroup_is_kept_alive(m))
            t = kgroup_min(t, m->deadline_ms);
    }
    for (const struct kgroup_pending *p = g->pending; p != NULL; p = p->next)
        t = kgroup_min(t, p->deadline_ms);
    if (g->state == KGROUP_PREPARING_REBALANCE)
        t = kgroup_min(t, g->join_deadline_ms);
    return t;
}

void kgroup_abort_waiters(struct kgroup *g, int16_t error)
{
    for (struct kgroup_member *m = g->members; m != NULL; m = m->next)
        kgroup_member_release(m, error);
}

void kgroup_loaded(struct kgroup *g, int64_t now_ms)
{
    for (struct kgroup_member *m = g->members; m != NULL; m = m->next)
        kgroup_touch(m, now_ms);
}

int16_t kgroup_delete(struct kgroup *g)
{
    if (g->state == KGROUP_DEAD)
        return KGERR_GROUP_ID_NOT_FOUND;
    if (g->state != KGROUP_EMPTY)
        return KGERR_NON_EMPTY_GROUP;
    kgroup_set_state(g, KGROUP_DEAD);
    return KGERR_NONE;
}

uint32_t kgroup_offsets_expired(const struct kgroup *g, int64_t now_wall_ms, int64_t retention_ms,
                                int64_t empty_since_ms, struct kgroup_offset **out, uint32_t cap)
{
    bool is_empty = g->state == KGROUP_EMPTY && g->members == NULL;
    /* A stable consumer group loses what it no longer subscribes to. */
    bool is_stable_consumer = g->state == KGROUP_STABLE && g->protocol_type != NULL &&
                              strcmp(g->protocol_type, "consumer") == 0;
    if (!is_empty && !is_stable_consumer)
        return 0;
    bool is_standalone = g->protocol_type == NULL;
    uint32_t n = 0, cursor = 0;
    struct kgroup_offset *chain = NULL, *o;
    while ((o = kgroup_offset_next(g, &cursor, &chain)) != NULL) {
        if (!is_empty && kgroup_is_subscribed(g, o->topic))
            continue;
        int64_t from = o->commit_ms;
        if (is_empty && !is_standalone && empty_since_ms > from)
            from = empty_since_ms;
        if (now_wall_ms - from < retention_ms)
            continue;
        if (n < cap)
            out[n] = o;
        n++;
    }
    return n;
}

bool kgroup_is_idle(const struct kgroup *g)
{
    return g->state == KGROUP_EMPTY && g->offset_count == 0 && g->members == NULL &&
           g->pending == NULL;
}

/* Does a ConsumerProtocolSubscription (v0+: int16 version, [string] topics, ...)
 * list topic? -1 when it does not parse. */
static int kgroup_subscription_has(struct kgroup_bytes meta, const char *topic)
{
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, meta.ptr, meta.len > 0 ? (size_t)meta.len : 0);
    int16_t version;
    int32_t count;
    if (rv_kp_read_i16(&r, &version) < 0 || version < 0 || rv_kp_read_i32(&r, &count) < 0 ||
        count < 0)
        return -1;
    size_t tlen = strlen(topic);
    for (int32_t i = 0; i < count; i++) {
        struct rv_kp_str s;
        if (rv_kp_read_str(&r, false, false, &s) < 0)
            return -1;
        if ((size_t)s.len == tlen && memcmp(s.ptr, topic, tlen) == 0)
            return 1;
    }
    return 0;
}

bool kgroup_is_subscribed(const struct kgroup *g, const char *topic)
{
    for (const struct kgroup_member *m = g->members; m != NULL; m = m->next) {
        if (kgroup_subscription_has(kgroup_member_metadata(m, g->protocol), topic) != 0)
            return true;
    }
    return false;
}

/* ---- offsets ------------------------------------------------------------------------------- */

static uint64_t kgroup_offset_hash(const char *topic, int32_t partition)
{
    return rv_hmap_hash_bytes(topic, strlen(topic)) * 31 + (uint32_t)partition;
}

struct kgroup_offset *kgroup_offset_find(const struct kgroup *g, const char *topic,
                                         int32_t partition)
{
    uint64_t head = 0;
    if (!rv_hmap_get(&g->offsets, kgroup_offset_hash(topic, partition), &head))
        return NULL;
    for (struct kgroup_offset *o = (struct kgroup_offset *)(uintptr_t)head; o != NULL;
         o = o->next) {
        if (o->partition == partition && strcmp(o->topic, topic) == 0)
            return o;
    }
    return NULL;
}

int kgroup_offset_put(struct kgroup *g, const char *topic, int32_t partition, int64_t offset,
                      int32_t leader_epoch, const char *metadata, int64_t commit_ms)
{
    char *meta = strdup(metadata != NULL ? metadata : "");
    if (meta == NULL)
        return -ENOMEM;
    struct kgroup_offset *o = kgroup_offset_find(g, topic, partition);
    if (o == NULL) {
        uint64_t key = kgroup_offset_hash(topic, partition), head = 0;
        o = calloc(1, sizeof(*o));
        char *t = o != NULL ? strdup(topic) : NULL;
        (void)rv_hmap_get(&g->offsets, key, &head);
        if (t == NULL || rv_hmap_put(&g->offsets, key, (uint64_t)(uintptr_t)o) < 0) {
            free(t);
            free(o);
            free(meta);
            return -ENOMEM;
        }
        o->topic = t;
        o->partition = partition;
        o->next = (struct kgroup_offset *)(uintptr_t)head;
        g->offset_count++;
    }
    free(o->metadata);
    o->metadata = meta;
    o->offset = offset;
    o->leader_epoch = leader_epoch;
    o->commit_ms = commit_ms;
    return 0;
}

void kgroup_offset_del(struct kgroup *g, const char *topic, int32_t partition)
{
    uint64_t key = kgroup_offset_hash(topic, partition), head = 0;
    if (!rv_hmap_get(&g->offsets, key, &head))
        return;
    struct kgroup_offset *first = (struct kgroup_offset *)(uintptr_t)head;
    for (struct kgroup_offset **pp = &first; *pp != NULL; pp = &(*pp)->next) {
        struct kgroup_offset *o = *pp;
        if (o->partition != partition || strcmp(o->topic, topic) != 0)
            continue;
        *pp = o->next;
        if (first == NULL) {
            (void)rv_hmap_del(&g->offsets, key, NULL);
        } else {
            int rc = rv_hmap_put(&g->offsets, key, (uint64_t)(uintptr_t)first);
            RV_ASSERT(rc == 0); /* an existing key: never allocates */
        }
        free(o->topic);
        free(o->metadata);
        free(o);
        RV_ASSERT(g->offset_count > 0);
        g->offset_count--;
        return;
    }
}

struct kgroup_offset *kgroup_offset_next(const struct kgroup *g, uint32_t *cursor,
                                         struct kgroup_offset **chain)
{
    if (*chain == NULL) {
        uint64_t key, val;
        if (!rv_hmap_next(&g->offsets, cursor, &key, &val))
            return NULL;
        *chain = (struct kgroup_offset *)(uintptr_t)val;
    }
    struct kgroup_offset *o = *chain;
    *chain = o->next;
    return o;
}

/* ---- the table ------------------------------------------------------------------------------ */

int kgroup_table_init(struct kgroup_table *t)
{
    t->count = 0;
    return rv_hmap_init(&t->map, 0, true);
}

void kgroup_free(struct kgroup *g)
{
    if (g == NULL)
        return;
    while (g->members != NULL) {
        kgroup_member_release(g->members, KGERR_NOT_COORDINATOR);
        kgroup_remove_member(g, g->members);
    }
    while (g->pending != NULL) {
        struct kgroup_pending *p = g->pending;
        g->pending = p->next;
        free(p->id);
        free(p);
    }
    uint32_t cursor = 0;
    struct kgroup_offset *chain = NULL, *o;
    while ((o = kgroup_offset_next(g, &cursor, &chain)) != NULL) {
        free(o->topic);
        free(o->metadata);
        free(o);
    }
    rv_hmap_fini(&g->offsets);
    free(g->id);
    free(g->protocol_type);
    free(g->protocol);
    free(g);
}

void kgroup_table_fini(struct kgroup_table *t)
{
    for (;;) {
        uint32_t cursor = 0;
        struct kgroup *chain = NULL;
        struct kgroup *g = kgroup_next(t, &cursor, &chain);
        if (g == NULL)
            break;
        kgroup_unlink(t, g);
        kgroup_free(g);
    }
    rv_hmap_fini(&t->map);
}

struct kgroup *kgroup_find(const struct kgroup_table *t, const char *id)
{
    uint64_t head = 0;
    if (!rv_hmap_get(&t->map, rv_hmap_hash_bytes(id, strlen(id)), &head))
        return NULL;
    for (struct kgroup *g = (struct kgroup *)(uintptr_t)head; g != NULL; g = g->hash_next) {
        if (strcmp(g->id, id) == 0)
            return g;
    }
    return NULL;
}

int kgroup_get(struct kgroup_table *t, const char *id, struct kgroup **out)
{
    struct kgroup *g = kgroup_find(t, id);
    if (g != NULL) {
        *out = g;
        return 0;
    }
    g = calloc(1, sizeof(*g));
    if (g == NULL)
        return -ENOMEM;
    g->id = strdup(id);
    uint64_t key = rv_hmap_hash_bytes(id, strlen(id)), head = 0;
    (void)rv_hmap_get(&t->map, key, &head);
    if (g->id == NULL || rv_hmap_init(&g->offsets, 0, true) < 0) {
        free(g->id);
        free(g);
        return -ENOMEM;
    }
    if (rv_hmap_put(&t->map, key, (uint64_t)(uintptr_t)g) < 0) {
        rv_hmap_fini(&g->offsets);
        free(g->id);
        free(g);
        return -ENOMEM;
    }
    g->hash_next = (struct kgroup *)(uintptr_t)head;
    g->state = KGROUP_EMPTY;
    g->partition = -1;
    t->count++;
    *out = g;
    return 0;
}

void kgroup_unlink(struct kgroup_table *t, struct kgroup *g)
{
    uint64_t key = rv_hmap_hash_bytes(g->id, strlen(g->id)), head = 0;
    bool is_there = rv_hmap_get(&t->map, key, &head);
    RV_ASSERT(is_there);
    struct kgroup *first = (struct kgroup *)(uintptr_t)head;
    struct kgroup **pp = &first;
    while (*pp != g) {
        RV_ASSERT(*pp != NULL);
        pp = &(*pp)->hash_next;
    }
    *pp = g->hash_next;
    g->hash_next = NULL;
    if (first == NULL) {
        (void)rv_hmap_del(&t->map, key, NULL);
    } else {
        int rc = rv_hmap_put(&t->map, key, (uint64_t)(uintptr_t)first);
        RV_ASSERT(rc == 0); /* an existing key: never allocates */
    }
    RV_ASSERT(t->count > 0);
    t->count--;
}

struct kgroup *kgroup_next(const struct kgroup_table *t, uint32_t *cursor, struct kgroup **chain)
{
    if (*chain == NULL) {
        uint64_t key, val;
        if (!rv_hmap_next(&t->map, cursor, &key, &val))
            return NULL;
        *chain = (struct kgroup *)(uintptr_t)val;
    }
    struct kgroup *g = *chain;
    *chain = g->hash_next;
    return g;
}

/* ---- records of __consumer_offsets ----------------------------------------------------------- */

int32_t kgroup_partition_for(const char *id, size_t len, int32_t partitions)
{
    RV_ASSERT(partitions > 0);
    uint32_t h = 0; /* Java's String.hashCode, for ASCII ids */
    for (size_t i = 0; i < len; i++)
        h = 31 * h + (uint8_t)id[i];
    int32_t s = (int32_t)h;
    int32_t a = s == INT32_MIN ? 0 : s < 0 ? -s : s; /* Kafka's Utils.abs */
    return a % partitions;
}

static void kgroup_put_i16(uint8_t **p, int16_t v)
{
    (*p)[0] = (uint8_t)((uint16_t)v >> 8);
    (*p)[1] = (uint8_t)v;
    *p += 2;
}

static void kgroup_put_i32(uint8_t **p, int32_t v)
{
    for (int i = 0; i < 4; i++)
        (*p)[i] = (uint8_t)((uint32_t)v >> (24 - 8 * i));
    *p += 4;
}

static void kgroup_put_i64(uint8_t **p, int64_t v)
{
    for (int i = 0; i < 8; i++)
        (*p)[i] = (uint8_t)((uint64_t)v >> (56 - 8 * i));
    *p += 8;
}

/* A string (NULL: a null string, -1). */
static void kgroup_put_str(uint8_t **p, const char *s)
{
    if (s == NULL) {
        kgroup_put_i16(p, -1);
        return;
    }
    size_t n = strlen(s);
    RV_ASSERT(n <= RV_KP_STRING_LEN_MAX);
    kgroup_put_i16(p, (int16_t)n);
    memcpy(*p, s, n);
    *p += n;
}

static void kgroup_put_bytes(uint8_t **p, const uint8_t *b, int32_t len)
{
    len = len < 0 ? 0 : len;
    kgroup_put_i32(p, len);
    if (len > 0)
        memcpy(*p, b, (size_t)len);
    *p += len;
}

static size_t kgroup_str_size(const char *s)
{
    return 2 + (s != NULL ? strlen(s) : 0);
}

size_t kgroup_offset_key_size(const char *group, const char *topic)
{
    return 2 + kgroup_str_size(group) + kgroup_str_size(topic) + 4;
}

void kgroup_offset_key_encode(uint8_t *buf, const char *group, const char *topic, int32_t partition)
{
    uint8_t *p = buf;
    kgroup_put_i16(&p, 1);
    kgroup_put_str(&p, group);
    kgroup_put_str(&p, topic);
    kgroup_put_i32(&p, partition);
    RV_ASSERT((size_t)(p - buf) == kgroup_offset_key_size(group, topic));
}

size_t kgroup_offset_value_size(const char *metadata)
{
    return 2 + 8 + 4 + kgroup_str_size(metadata != NULL ? metadata : "") + 8;
}

void kgroup_offset_value_encode(uint8_t *buf, int64_t offset, int32_t leader_epoch,
                                const char *metadata, int64_t commit_ms)
{
    uint8_t *p = buf;
    kgroup_put_i16(&p, 3);
    kgroup_put_i64(&p, offset);
    kgroup_put_i32(&p, leader_epoch);
    kgroup_put_str(&p, metadata != NULL ? metadata : "");
    kgroup_put_i64(&p, commit_ms);
    RV_ASSERT((size_t)(p - buf) == kgroup_offset_value_size(metadata));
}

size_t kgroup_group_key_size(const char *group)
{
    return 2 + kgroup_str_size(group);
}

void kgroup_group_key_encode(uint8_t *buf, const char *group)
{
    uint8_t *p = buf;
    kgroup_put_i16(&p, 2);
    kgroup_put_str(&p, group);
}

size_t kgroup_group_value_size(const struct kgroup *g)
{
    size_t n = 2 + kgroup_str_size(g->protocol_type != NULL ? g->protocol_type : "") + 4 +
               kgroup_str_size(g->protocol) + kgroup_str_size(g->leader ? g->leader->id : NULL) +
               8 + 4;
    for (const struct kgroup_member *m = g->members; m != NULL; m = m->next) {
        struct kgroup_bytes meta = kgroup_member_metadata(m, g->protocol);
        n += kgroup_str_size(m->id) + kgroup_str_size(m->instance_id) +
             kgroup_str_size(m->client_id) + kgroup_str_size(m->client_host) + 4 + 4 + 4 +
             (size_t)(meta.len > 0 ? meta.len : 0) + 4 + (size_t)m->assignment.len;
    }
    return n;
}

void kgroup_group_value_encode(uint8_t *buf, const struct kgroup *g, int64_t state_wall_ms)
{
    uint8_t *p = buf;
    kgroup_put_i16(&p, 3);
    kgroup_put_str(&p, g->protocol_type != NULL ? g->protocol_type : "");
    kgroup_put_i32(&p, g->generation);
    kgroup_put_str(&p, g->protocol);
    kgroup_put_str(&p, g->leader ? g->leader->id : NULL);
    kgroup_put_i64(&p, state_wall_ms);
    kgroup_put_i32(&p, (int32_t)g->member_count);
    for (const struct kgroup_member *m = g->members; m != NULL; m = m->next) {
        struct kgroup_bytes meta = kgroup_member_metadata(m, g->protocol);
        kgroup_put_str(&p, m->id);
        kgroup_put_str(&p, m->instance_id);
        kgroup_put_str(&p, m->client_id);
        kgroup_put_str(&p, m->client_host);
        kgroup_put_i32(&p, m->rebalance_timeout_ms);
        kgroup_put_i32(&p, m->session_timeout_ms);
        kgroup_put_bytes(&p, meta.ptr, meta.len);
        kgroup_put_bytes(&p, m->assignment.ptr, m->assignment.len);
    }
    RV_ASSERT((size_t)(p - buf) == kgroup_group_value_size(g));
}

/* A string read back as a malloc'd C string (a null one: NULL, *is_null). */
static int kgroup_read_cstr(struct rv_kp_reader *r, bool is_nullable, char **out)
{
    struct rv_kp_str s;
    int rc = rv_kp_read_str(r, false, is_nullable, &s);
    if (rc < 0)
        return -EBADMSG;
    *out = NULL;
    if (s.len < 0)
        return 0;
    if (memchr(s.ptr, '\0', (size_t)s.len) != NULL)
        return -EBADMSG;
    *out = strndup(s.ptr, (size_t)s.len);
    return *out != NULL ? 0 : -ENOMEM;
}

static int kgroup_apply_offset(struct kgroup_table *t, int32_t partition, struct rv_kp_reader *k,
                               const uint8_t *value, int32_t value_len)
{
    char *group = NULL, *topic = NULL;
    int32_t index;
    int rc = kgroup_read_cstr(k, false, &group);
    if (rc == 0)
        rc = kgroup_read_cstr(k, false, &topic);
    if (rc == 0 && rv_kp_read_i32(k, &index) < 0)
        rc = -EBADMSG;
    struct kgroup *g = NULL;
    if (rc == 0 && value == NULL) {
        g = kgroup_find(t, group);
        if (g != NULL)
            kgroup_offset_del(g, topic, index);
    } else if (rc == 0) {
        struct rv_kp_reader v;
        rv_kp_reader_init(&v, value, (size_t)value_len);
        int16_t version;
        int64_t offset = -1, commit_ms = -1;
        int32_t epoch = -1;
        char *meta = NULL;
        if (rv_kp_read_i16(&v, &version) < 0 || version < 0 || version > 3 ||
            rv_kp_read_i64(&v, &offset) < 0 || (version >= 3 && rv_kp_read_i32(&v, &epoch) < 0))
            rc = -EBADMSG;
        if (rc == 0)
            rc = kgroup_read_cstr(&v, true, &meta);
        if (rc == 0 && rv_kp_read_i64(&v, &commit_ms) < 0)
            rc = -EBADMSG;
        if (rc == 0)
            rc = kgroup_get(t, group, &g);
        if (rc == 0) {
            g->partition = partition;
            rc = kgroup_offset_put(g, topic, index, offset, epoch, meta, commit_ms);
        }
        free(meta);
    }
    free(group);
    free(topic);
    return rc;
}

/* One MemberMetadata of a GroupMetadataValue (version v). */
static int kgroup_read_member(struct rv_kp_reader *r, int16_t v, const char *protocol,
                              struct kgroup_member **out)
{
    struct kgroup_member *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    struct rv_kp_bytes sub, assign;
    int rc = kgroup_read_cstr(r, false, &m->id);
    if (rc == 0 && v >= 3)
        rc = kgroup_read_cstr(r, true, &m->instance_id);
    if (rc == 0)
        rc = kgroup_read_cstr(r, false, &m->client_id);
    if (rc == 0)
        rc = kgroup_read_cstr(r, false, &m->client_host);
    if (rc == 0 && v >= 1 && rv_kp_read_i32(r, &m->rebalance_timeout_ms) < 0)
        rc = -EBADMSG;
    if (rc == 0 && rv_kp_read_i32(r, &m->session_timeout_ms) < 0)
        rc = -EBADMSG;
    if (rc == 0 && (rv_kp_read_bytes(r, false, false, &sub) < 0 ||
                    rv_kp_read_bytes(r, false, false, &assign) < 0))
        rc = -EBADMSG;
    if (v < 1)
        m->rebalance_timeout_ms = m->session_timeout_ms;
    if (rc == 0 && protocol != NULL) {
        m->protocols = calloc(1, sizeof(*m->protocols));
        rc = m->protocols != NULL ? 0 : -ENOMEM;
        if (rc == 0) {
            m->protocol_count = 1;
            m->protocols[0].name = strdup(protocol);
            rc = m->protocols[0].name != NULL ? 0 : -ENOMEM;
        }
        if (rc == 0)
            rc = kgroup_bytes_set(&m->protocols[0].metadata, sub.ptr, sub.len);
    }
    if (rc == 0)
        rc = kgroup_bytes_set(&m->assignment, assign.ptr, assign.len);
    if (rc < 0) {
        kgroup_member_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

/* A GroupMetadataValue replaces the group's members, generation and protocol. */
static int kgroup_apply_metadata(struct kgroup *g, const uint8_t *value, int32_t value_len)
{
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, value, (size_t)value_len);
    int16_t v;
    int32_t generation, count;
    int64_t ts;
    char *ptype = NULL, *protocol = NULL, *leader = NULL;
    struct kgroup_member *members = NULL, **tail = &members;
    int rc = rv_kp_read_i16(&r, &v) < 0 || v < 0 || v > 3 ? -EBADMSG : 0;
    if (rc == 0)
        rc = kgroup_read_cstr(&r, false, &ptype);
    if (rc == 0 && rv_kp_read_i32(&r, &generation) < 0)
        rc = -EBADMSG;
    if (rc == 0)
        rc = kgroup_read_cstr(&r, true, &protocol);
    if (rc == 0)
        rc = kgroup_read_cstr(&r, true, &leader);
    if (rc == 0 && v >= 2 && rv_kp_read_i64(&r, &ts) < 0)
        rc = -EBADMSG;
    if (rc == 0 && (rv_kp_read_i32(&r, &count) < 0 || count < 0))
        rc = -EBADMSG;
    uint32_t n = 0;
    for (int32_t i = 0; rc == 0 && i < count; i++, n++) {
        rc = kgroup_read_member(&r, v, protocol, tail);
        if (rc == 0)
            tail = &(*tail)->next;
    }
    if (rc == 0) {
        kgroup_abort_waiters(g, KGERR_NOT_COORDINATOR);
        while (g->members != NULL)
            kgroup_remove_member(g, g->members);
        g->members = members;
        members = NULL;
        g->member_count = n;
        g->leader = g->members != NULL ? kgroup_member_find(g, leader) : NULL;
        if (g->leader == NULL)
            g->leader = g->members;
        g->generation = generation;
        free(g->protocol_type);
        free(g->protocol);
        g->protocol_type = ptype[0] != '\0' ? ptype : NULL;
        if (g->protocol_type == NULL)
            free(ptype);
        g->protocol = protocol;
        ptype = protocol = NULL;
        g->state = g->members != NULL && g->protocol != NULL ? KGROUP_STABLE : KGROUP_EMPTY;
    }
    while (members != NULL) {
        struct kgroup_member *m = members;
        members = m->next;
        kgroup_member_free(m);
    }
    free(ptype);
    free(protocol);
    free(leader);
    return rc;
}

int kgroup_table_apply(struct kgroup_table *t, int32_t partition, const uint8_t *key,
                       int32_t key_len, const uint8_t *value, int32_t value_len)
{
    if (key == NULL || key_len < 2)
        return -EBADMSG;
    struct rv_kp_reader k;
    rv_kp_reader_init(&k, key, (size_t)key_len);
    int16_t version;
    if (rv_kp_read_i16(&k, &version) < 0)
        return -EBADMSG;
    if (value_len < 0)
        value = NULL;
    if (version == 0 || version == 1)
        return kgroup_apply_offset(t, partition, &k, value, value_len);
    if (version != 2)
        return 1;
    char *id = NULL;
    int rc = kgroup_read_cstr(&k, false, &id);
    if (rc < 0)
        return rc;
    struct kgroup *g = kgroup_find(t, id);
    if (value == NULL) {
        if (g != NULL) { /* deleted: its offsets were tombstoned before it */
            kgroup_abort_waiters(g, KGERR_NOT_COORDINATOR);
            kgroup_unlink(t, g);
            kgroup_free(g);
        }
        free(id);
        return 0;
    }
    rc = g != NULL ? 0 : kgroup_get(t, id, &g);
    free(id);
    if (rc < 0)
        return rc;
    g->partition = partition;
    return kgroup_apply_metadata(g, value, value_len);
}
