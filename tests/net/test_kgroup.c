/*
 * tests/net/test_kgroup.c - the consumer group state machine (net/kgroup.c)
 * without a broker: member ids, the initial delay, generations, protocol
 * selection, the leader, syncs waiting for the stored assignment, heartbeats,
 * session expiry, leaving, static members (replaced without a rebalance,
 * fenced, kept through a rebalance), commits, deletion, and the records of
 * __consumer_offsets read back into a fresh table.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/kgroup.h"

TestSuite(kgroup);

/* ---- a recording environment ------------------------------------------------------------ */

struct store_call {
    struct kgroup *g;
    enum kgroup_store_kind kind;
    int32_t generation;
    char member_id[128];
};

static struct store_call stores[64];
static int store_count;

static void rec_store(struct kgroup_env *env, struct kgroup *g, enum kgroup_store_kind kind,
                      const char *member_id)
{
    (void)env;
    cr_assert_lt(store_count, 64);
    struct store_call *c = &stores[store_count++];
    c->g = g;
    c->kind = kind;
    c->generation = g->generation;
    snprintf(c->member_id, sizeof(c->member_id), "%s", member_id != NULL ? member_id : "");
}

/* Complete the oldest outstanding store. */
static void store_complete(struct kgroup_env *env, int16_t error, int64_t now)
{
    cr_assert_gt(store_count, 0, "a store was expected");
    struct store_call c = stores[0];
    memmove(&stores[0], &stores[1], (size_t)(store_count - 1) * sizeof(stores[0]));
    store_count--;
    kgroup_stored(env, c.g, c.kind, c.generation, c.member_id, error, now);
}

static void stores_drop_plain(void)
{
    int k = 0;
    for (int i = 0; i < store_count; i++) {
        if (stores[i].kind != KGROUP_STORE_PLAIN)
            stores[k++] = stores[i];
    }
    store_count = k;
}

/* A parked request and what it was answered with. */
struct waiter {
    struct kgroup_waiter w; /* first */
    int answers;
    int16_t error;
    int32_t generation;
    char member_id[128];
    char leader[128];
    char protocol[32];
    int member_count;
    char assignment[64];
};

static void waiter_fn(struct kgroup_waiter *kw, const struct kgroup_result *res)
{
    struct waiter *w = (struct waiter *)kw;
    w->answers++;
    w->error = res->error;
    w->generation = res->generation;
    snprintf(w->member_id, sizeof(w->member_id), "%s", res->member_id ? res->member_id : "");
    snprintf(w->leader, sizeof(w->leader), "%s", res->leader ? res->leader : "");
    snprintf(w->protocol, sizeof(w->protocol), "%s",
             res->protocol_name ? res->protocol_name : "(null)");
    w->member_count = res->members_of != NULL ? (int)res->members_of->member_count : -1;
    snprintf(w->assignment, sizeof(w->assignment), "%.*s", res->assignment_len,
             res->assignment ? (const char *)res->assignment : "");
}

static void waiter_init(struct waiter *w)
{
    memset(w, 0, sizeof(*w));
    w->w.fn = waiter_fn;
}

static struct kgroup_env env;
static struct kgroup_table table;

static void setup(void)
{
    store_count = 0;
    env = (struct kgroup_env){.initial_delay_ms = 3000,
                              .session_min_ms = 6000,
                              .session_max_ms = 300000,
                              .rand_state = 42,
                              .store = rec_store};
    cr_assert_eq(kgroup_table_init(&table), 0);
}

static void teardown(void)
{
    /* A failed test leaves waiters on its (gone) stack: forget them. */
    uint32_t cursor = 0;
    struct kgroup *chain = NULL, *g;
    while ((g = kgroup_next(&table, &cursor, &chain)) != NULL) {
        for (struct kgroup_member *m = g->members; m != NULL; m = m->next)
            m->join_waiter = m->sync_waiter = NULL;
    }
    kgroup_table_fini(&table);
}

static const struct kgroup_join_protocol range = {"range", (const uint8_t *)"R", 1};
static const struct kgroup_join_protocol rr = {"roundrobin", (const uint8_t *)"Q", 1};

/* A join with one protocol list. */
static struct kgroup_join join_req(const char *member_id, const char *instance_id,
                                   const struct kgroup_join_protocol *protos, uint32_t n)
{
    return (struct kgroup_join){.member_id = member_id,
                                .instance_id = instance_id,
                                .client_id = "client",
                                .client_host = "/127.0.0.1",
                                .protocol_type = "consumer",
                                .protocols = protos,
                                .protocol_count = n,
                                .session_timeout_ms = 10000,
                                .rebalance_timeout_ms = 20000,
                                .is_member_id_required = true};
}

static struct kgroup *group(const char *id)
{
    struct kgroup *g;
    cr_assert_eq(kgroup_get(&table, id, &g), 0);
    g->partition = 0;
    return g;
}

/* Join as a new dynamic member (v4: twice) and return the waiter of the second join. */
static void join_new(struct kgroup *g, struct waiter *w, int64_t now)
{
    struct waiter first;
    waiter_init(&first);
    struct kgroup_join j = join_req("", NULL, &range, 1);
    kgroup_join(&env, g, &j, &first.w, now);
    cr_assert_eq(first.answers, 1);
    cr_assert_eq(first.error, KGERR_MEMBER_ID_REQUIRED);
    cr_assert_neq(first.member_id[0], '\0');
    waiter_init(w);
    j.member_id = first.member_id;
    kgroup_join(&env, g, &j, &w->w, now);
}

/* Sync every listed member; the leader's assignment gives each "A<index>". */
static void sync_all(struct kgroup *g, struct waiter **ws, int n, int64_t now)
{
    struct kgroup_assignment as[8];
    char bytes[8][16];
    int leader = -1;
    for (int i = 0; i < n; i++) {
        snprintf(bytes[i], sizeof(bytes[i]), "A%d", i);
        as[i] = (struct kgroup_assignment){ws[i]->member_id, (const uint8_t *)bytes[i], 2};
        if (strcmp(ws[i]->member_id, ws[i]->leader) == 0)
            leader = i;
    }
    cr_assert_geq(leader, 0, "a leader among the members");
    for (int i = 0; i < n; i++) {
        struct kgroup_sync s = {.member_id = ws[i]->member_id,
                                .generation = ws[i]->generation,
                                .assignments = i == leader ? as : NULL,
                                .assignment_count = i == leader ? (uint32_t)n : 0};
        char id[128];
        snprintf(id, sizeof(id), "%s", ws[i]->member_id);
        s.member_id = id;
        waiter_init(ws[i]);
        snprintf(ws[i]->member_id, sizeof(ws[i]->member_id), "%s", id);
        kgroup_sync(&env, g, &s, &ws[i]->w, now);
    }
}

/* ---- joining -------------------------------------------------------------------------------- */

Test(kgroup, first_join_needs_a_member_id_then_waits_the_initial_delay, .init = setup,
     .fini = teardown)
{
    struct kgroup *g = group("g");
    struct waiter w;
    join_new(g, &w, 1000);
    cr_assert_eq(w.answers, 0, "parked for the initial delay");
    cr_assert_eq(g->state, KGROUP_PREPARING_REBALANCE);
    cr_assert_eq(kgroup_next_deadline(g), 4000);
    kgroup_tick(&env, g, 3999);
    cr_assert_eq(w.answers, 0);
    kgroup_tick(&env, g, 4000);
    cr_assert_eq(w.answers, 1);
    cr_assert_eq(w.error, KGERR_NONE);
    cr_assert_eq(w.generation, 1);
    cr_assert_str_eq(w.leader, w.member_id, "the only member leads");
    cr_assert_eq(w.member_count, 1, "the leader gets the members");
    cr_assert_str_eq(w.protocol, "range");
    cr_assert_eq(g->state, KGROUP_COMPLETING_REBALANCE);
    cr_assert(strncmp(w.member_id, "client-", 7) == 0, "Kafka's client-id-uuid form: %s",
              w.member_id);
}

Test(kgroup, members_joining_during_the_delay_extend_it_and_share_a_generation, .init = setup,
     .fini = teardown)
{
    struct kgroup *g = group("g");
    struct waiter a, b, c;
    join_new(g, &a, 0);
    join_new(g, &b, 2000);
    kgroup_tick(&env, g, 3000); /* a new member came: one more delay */
    cr_assert_eq(a.answers + b.answers, 0);
    join_new(g, &c, 4000);
    kgroup_tick(&env, g, 6000);
    cr_assert_eq(a.answers + b.answers + c.answers, 0, "c extended it again");
    kgroup_tick(&env, g, 9000);
    cr_assert_eq(a.answers + b.answers + c.answers, 3);
    cr_assert_eq(a.generation, 1);
    cr_assert_eq(b.generation, 1);
    cr_assert_eq(c.generation, 1);
    cr_assert_str_eq(a.leader, a.member_id, "the first member leads");
    cr_assert_eq(a.member_count, 3);
    cr_assert_eq(b.member_count, -1, "followers get no members");
    cr_assert_str_eq(b.leader, a.member_id);
}

Test(kgroup, the_protocol_is_the_common_one_most_members_prefer, .init = setup, .fini = teardown)
{
    struct kgroup *g = group("g");
    const struct kgroup_join_protocol both[] = {range, rr}, both_rev[] = {rr, range};
    struct waiter w[3], first;
    const struct kgroup_join_protocol *lists[3] = {both, both_rev, both_rev};
    for (int i = 0; i < 3; i++) {
        waiter_init(&first);
        struct kgroup_join j = join_req("", NULL, lists[i], 2);
        j.is_member_id_required = false; /* v3: no second join */
        waiter_init(&w[i]);
        kgroup_join(&env, g, &j, &w[i].w, 0);
    }
    kgroup_tick(&env, g, 3000);
    kgroup_tick(&env, g, 6000); /* more members came during the delay: once more */
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(w[i].answers, 1);
        cr_assert_str_eq(w[i].protocol, "roundrobin", "two votes to one");
    }
    /* A member that shares no protocol with the group is refused. */
    const struct kgroup_join_protocol other = {"sticky", (const uint8_t *)"S", 1};
    struct kgroup_join j = join_req("", NULL, &other, 1);
    kgroup_join(&env, g, &j, &first.w, 6000);
    cr_assert_eq(first.error, KGERR_INCONSISTENT_GROUP_PROTOCOL);
    j = join_req("", NULL, &range, 1);
    j.protocol_type = "connect";
    waiter_init(&first);
    kgroup_join(&env, g, &j, &first.w, 6000);
    cr_assert_eq(first.error, KGERR_INCONSISTENT_GROUP_PROTOCOL);
}

Test(kgroup, session_timeouts_outside_the_limits_are_refused, .init = setup, .fini = teardown)
{
    struct kgroup *g = group("g");
    struct waiter w;
    waiter_init(&w);
    struct kgroup_join j = join_req("", NULL, &range, 1);
    j.session_timeout_ms = 5999;
    kgroup_join(&env, g, &j, &w.w, 0);
    cr_assert_eq(w.error, KGERR_INVALID_SESSION_TIMEOUT);
    j.session_timeout_ms = 300001;
    kgroup_join(&env, g, &j, &w.w, 0);
    cr_assert_eq(w.error, KGERR_INVALID_SESSION_TIMEOUT);
    cr_assert(kgroup_is_idle(g));
}

/* ---- syncing and heartbeats ---------------------------------------------------------------- */

/* Three members through join and sync: a STABLE group at generation 1. */
static void stable_group(struct kgroup *g, struct waiter *a, struct waiter *b, struct waiter *c)
{
    join_new(g, a, 0);
    join_new(g, b, 0);
    join_new(g, c, 0);
    kgroup_tick(&env, g, 3000);
    kgroup_tick(&env, g, 6000);
    cr_assert_eq(a->answers + b->answers + c->answers, 3);
    struct waiter *ws[3] = {a, b, c};
    sync_all(g, ws, 3, 6000);
    cr_assert_eq(a->answers + b->answers + c->answers, 0, "syncs wait for the store");
    cr_assert_eq(store_count, 1);
    cr_assert_eq(stores[0].kind, KGROUP_STORE_SYNC);
    store_complete(&env, KGERR_NONE, 6000);
    cr_assert_eq(g->state, KGROUP_STABLE);
    cr_assert_eq(a->answers + b->answers + c->answers, 3);
    cr_assert_str_eq(a->assignment, "A0");
    cr_assert_str_eq(b->assignment, "A1");
    cr_assert_str_eq(c->assignment, "A2");
}

Test(kgroup, syncs_get_their_assignment_once_the_leaders_is_stored, .init = setup, .fini = teardown)
{
    struct kgroup *g = group("g");
    struct waiter a, b, c;
    stable_group(g, &a, &b, &c);
    /* A sync in STABLE answers at once with the stored assignment. */
    struct waiter again;
    waiter_init(&again);
    struct kgroup_sync s = {.member_id = b.member_id, .generation = 1};
    kgroup_sync(&env, g, &s, &again.w, 7000);
    cr_assert_eq(again.answers, 1);
    cr_assert_str_eq(again.assignment, "A1");
    s.generation = 0;
    kgroup_sync(&env, g, &s, &again.w, 7000);
    cr_assert_eq(again.error, KGERR_ILLEGAL_GENERATION);
    s.member_id = "nobody";
    s.generation = 1;
    kgroup_sync(&env, g, &s, &again.w, 7000);
    cr_assert_eq(again.error, KGERR_UNKNOWN_MEMBER_ID);
}

Test(kgroup, a_failed_store_makes_the_members_rejoin, .init = setup, .fini = teardown)
{
    struct kgroup *g = group("g");
    struct waiter a;
    join_new(g, &a, 0);
    kgroup_tick(&env, g, 3000);
    struct waiter *ws[1] = {&a};
    sync_all(g, ws, 1, 3000);
    store_complete(&env, KGERR_COORDINATOR_NOT_AVAILABLE, 3000);
    cr_assert_eq(a.answers, 1);
    cr_assert_eq(a.error, KGERR_COORDINATOR_NOT_AVAILABLE);
    cr_assert_eq(g->state, KGROUP_PREPARING_REBALANCE);
}

Test(kgroup, heartbeats_say_whether_to_rejoin, .init = setup, .fini = teardown)
{
    struct kgroup *g = group("g");
    struct waiter a, b, c;
    stable_group(g, &a, &b, &c);
    cr_assert_eq(kgroup_heartbeat(&env, g, a.member_id, NULL, 1, 7000), KGERR_NONE);
    cr_assert_eq(kgroup_heartbeat(&env, g, a.member_id, NULL, 2, 7000), KGERR_ILLEGAL_GENERATION);
    cr_assert_eq(kgroup_heartbeat(&env, g, "nobody", NULL, 1, 7000), KGERR_UNKNOWN_MEMBER_ID);
    /* b leaves: a rebalance starts; a and c learn it from their heartbeats. */
    cr_assert_eq(kgroup_leave(&env, g, b.member_id, NULL, 7000), KGERR_NONE);
    cr_assert_eq(g->state, KGROUP_PREPARING_REBALANCE);
    cr_assert_eq(kgroup_heartbeat(&env, g, a.member_id, NULL, 1, 7000),
                 KGERR_REBALANCE_IN_PROGRESS);
    cr_assert_eq(kgroup_leave(&env, g, b.member_id, NULL, 7000), KGERR_UNKNOWN_MEMBER_ID);
    /* Both rejoin: the rebalance completes without waiting for its timeout. */
    struct kgroup_join j = join_req(a.member_id, NULL, &range, 1);
    char aid[128], cid[128];
    snprintf(aid, sizeof(aid), "%s", a.member_id);
    snprintf(cid, sizeof(cid), "%s", c.member_id);
    j.member_id = aid;
    waiter_init(&a);
    kgroup_join(&env, g, &j, &a.w, 7000);
    cr_assert_eq(a.answers, 0);
    j.member_id = cid;
    waiter_init(&c);
    kgroup_join(&env, g, &j, &c.w, 7100);
    cr_assert_eq(a.answers + c.answers, 2);
    cr_assert_eq(a.generation, 2);
    cr_assert_eq(g->member_count, 2);
}

Test(kgroup, an_expired_session_removes_the_member_and_rebalances, .init = setup, .fini = teardown)
{
    struct kgroup *g = group("g");
    struct waiter a, b, c;
    stable_group(g, &a, &b, &c);
    /* a and b heartbeat; c goes silent. */
    for (int64_t t = 7000; t <= 16000; t += 3000) {
        cr_assert_eq(kgroup_heartbeat(&env, g, a.member_id, NULL, 1, t), KGERR_NONE);
        cr_assert_eq(kgroup_heartbeat(&env, g, b.member_id, NULL, 1, t), KGERR_NONE);
        kgroup_tick(&env, g, t);
    }
    cr_assert_eq(g->state, KGROUP_PREPARING_REBALANCE, "c's session (10 s) ended at 16 s");
    cr_assert_eq(g->member_count, 2);
    cr_assert_null(kgroup_member_find(g, c.member_id));
    /* Nobody rejoins: at the rebalance timeout the dynamic members are dropped. */
    kgroup_tick(&env, g, 16000 + 20000);
    cr_assert_eq(g->state, KGROUP_EMPTY);
    cr_assert_eq(g->generation, 2);
    cr_assert_eq(store_count, 1);
    cr_assert_eq(stores[0].kind, KGROUP_STORE_PLAIN, "the empty group is stored");
}

Test(kgroup, a_follower_rejoining_unchanged_gets_the_generation_the_leader_rebalances,
     .init = setup, .fini = teardown)
{
    struct kgroup *g = group("g");
    struct waiter a, b, c;
    stable_group(g, &a, &b, &c);
    char bid[128];
    snprintf(bid, sizeof(bid), "%s", b.member_id);
    struct kgroup_join j = join_req(bid, NULL, &range, 1);
    waiter_init(&b);
    kgroup_join(&env, g, &j, &b.w, 7000);
    cr_assert_eq(b.answers, 1);
    cr_assert_eq(b.generation, 1);
    cr_assert_eq(g->state, KGROUP_STABLE, "no rebalance for an unchanged follower");
    /* New metadata (the cooperative protocol's second join): a rebalance. */
    const struct kgroup_join_protocol changed = {"range", (const uint8_t *)"R2", 2};
    j = join_req(bid, NULL, &changed, 1);
    waiter_init(&b);
    kgroup_join(&env, g, &j, &b.w, 7000);
    cr_assert_eq(b.answers, 0);
    cr_assert_eq(g->state, KGROUP_PREPARING_REBALANCE);
}

Test(kgroup, repeated_rebalances_keep_the_group_consistent, .init = setup, .fini = teardown)
{
    /* What cooperative-sticky does: every member rejoins twice in a row. */
    struct kgroup *g = group("g");
    struct waiter a, b, c;
    stable_group(g, &a, &b, &c);
    struct waiter *ws[3] = {&a, &b, &c};
    for (int round = 0; round < 2; round++) {
        char ids[3][128];
        for (int i = 0; i < 3; i++)
            snprintf(ids[i], sizeof(ids[i]), "%s", ws[i]->member_id);
        char meta[8];
        snprintf(meta, sizeof(meta), "R%d", round);
        const struct kgroup_join_protocol p = {"range", (const uint8_t *)meta, 2};
        for (int i = 0; i < 3; i++) {
            struct kgroup_join j = join_req(ids[i], NULL, &p, 1);
            waiter_init(ws[i]);
            kgroup_join(&env, g, &j, &ws[i]->w, 7000 + round);
        }
        for (int i = 0; i < 3; i++) {
            cr_assert_eq(ws[i]->answers, 1, "round %d: member %d answered", round, i);
            cr_assert_eq(ws[i]->generation, 2 + round);
        }
        sync_all(g, ws, 3, 7000 + round);
        store_complete(&env, KGERR_NONE, 7000 + round);
        cr_assert_eq(g->state, KGROUP_STABLE);
        for (int i = 0; i < 3; i++)
            cr_assert_eq(ws[i]->answers, 1);
    }
}

/* ---- static members ---------------------------------------------------------------------------- */

Test(kgroup, a_static_member_coming_back_keeps_its_assignment_without_a_rebalance, .init = setup,
     .fini = teardown)
{
    struct kgroup *g = group("g");
    struct waiter a, b;
    waiter_init(&a);
    waiter_init(&b);
    struct kgroup_join ja = join_req("", "inst-a", &range, 1);
    struct kgroup_join jb = join_req("", "inst-b", &range, 1);
    kgroup_join(&env, g, &ja, &a.w, 0);
    cr_assert_eq(a.answers, 0, "static members need no member id round trip");
    kgroup_join(&env, g, &jb, &b.w, 0);
    kgroup_tick(&env, g, 3000);
    kgroup_tick(&env, g, 6000);
    struct waiter *ws[2] = {&a, &b};
    cr_assert_eq(a.answers + b.answers, 2);
    sync_all(g, ws, 2, 3000);
    store_complete(&env, KGERR_NONE, 3000);
    cr_assert_str_eq(a.assignment, "A0");
    char old_a[128];
    snprintf(old_a, sizeof(old_a), "%s", a.member_id);
    /* inst-a restarts: a new member id, same instance. */
    struct waiter a2;
    waiter_init(&a2);
    kgroup_join(&env, g, &ja, &a2.w, 5000);
    cr_assert_eq(a2.answers, 0, "answered once stored");
    cr_assert_eq(store_count, 1);
    cr_assert_eq(stores[0].kind, KGROUP_STORE_STATIC);
    store_complete(&env, KGERR_NONE, 5000);
    cr_assert_eq(a2.answers, 1);
    cr_assert_eq(a2.error, KGERR_NONE);
    cr_assert_eq(a2.generation, 1, "no new generation");
    cr_assert_str_neq(a2.member_id, old_a);
    cr_assert_str_eq(a2.leader, old_a, "the old leader id: it syncs as a follower");
    cr_assert_eq(g->state, KGROUP_STABLE);
    struct waiter s;
    waiter_init(&s);
    struct kgroup_sync sy = {.member_id = a2.member_id, .instance_id = "inst-a", .generation = 1};
    kgroup_sync(&env, g, &sy, &s.w, 5000);
    cr_assert_str_eq(s.assignment, "A0", "its old assignment");
    /* The old id is fenced. */
    cr_assert_eq(kgroup_heartbeat(&env, g, old_a, "inst-a", 1, 5000), KGERR_FENCED_INSTANCE_ID);
    cr_assert_eq(kgroup_commit_check(&env, g, 1, old_a, "inst-a", 5000), KGERR_FENCED_INSTANCE_ID);
    cr_assert_eq(kgroup_heartbeat(&env, g, a2.member_id, "inst-a", 1, 5000), KGERR_NONE);
    cr_assert_eq(kgroup_heartbeat(&env, g, b.member_id, "inst-b", 1, 5000), KGERR_NONE);
}

Test(kgroup, static_members_that_did_not_rejoin_stay_through_a_rebalance, .init = setup,
     .fini = teardown)
{
    struct kgroup *g = group("g");
    struct waiter a, b;
    waiter_init(&a);
    struct kgroup_join ja = join_req("", "inst-a", &range, 1);
    kgroup_join(&env, g, &ja, &a.w, 0);
    kgroup_tick(&env, g, 3000);
    struct waiter *ws1[1] = {&a};
    sync_all(g, ws1, 1, 3000);
    store_complete(&env, KGERR_NONE, 3000);
    /* A dynamic member comes: a rebalance that only it and b... only b joins. */
    join_new(g, &b, 4000);
    cr_assert_eq(g->state, KGROUP_PREPARING_REBALANCE);
    /* a is alive (heartbeats) but does not rejoin before the rebalance timeout. */
    for (int64_t t = 8000; t < 24000; t += 5000)
        cr_assert_eq(kgroup_heartbeat(&env, g, a.member_id, "inst-a", 1, t),
                     KGERR_REBALANCE_IN_PROGRESS);
    kgroup_tick(&env, g, 4000 + 20000);
    cr_assert_eq(b.answers, 1);
    cr_assert_eq(b.generation, 2);
    cr_assert_str_eq(b.leader, b.member_id, "the member that rejoined leads");
    cr_assert_eq(b.member_count, 2, "the static member is kept, in the leader's list");
    cr_assert_eq(g->member_count, 2);
    cr_assert_not_null(kgroup_member_find(g, a.member_id));
}

Test(kgroup, leaving_by_instance_id, .init = setup, .fini = teardown)
{
    struct kgroup *g = group("g");
    struct waiter a;
    waiter_init(&a);
    struct kgroup_join ja = join_req("", "inst-a", &range, 1);
    kgroup_join(&env, g, &ja, &a.w, 0);
    kgroup_tick(&env, g, 3000);
    cr_assert_eq(kgroup_leave(&env, g, "wrong", "inst-a", 3000), KGERR_FENCED_INSTANCE_ID);
    cr_assert_eq(kgroup_leave(&env, g, "", "inst-b", 3000), KGERR_UNKNOWN_MEMBER_ID);
    cr_assert_eq(kgroup_leave(&env, g, "", "inst-a", 3000), KGERR_NONE);
    cr_assert_eq(g->member_count, 0);
    cr_assert_eq(g->state, KGROUP_EMPTY);
}

/* ---- commits and deletion ----------------------------------------------------------------------- */

Test(kgroup, commits_from_members_of_the_generation_or_simple_ones_on_an_empty_group, .init = setup,
     .fini = teardown)
{
    struct kgroup *g = group("g");
    cr_assert_eq(kgroup_commit_check(&env, g, -1, "", NULL, 0), KGERR_NONE, "simple commit");
    struct waiter a;
    join_new(g, &a, 0);
    kgroup_tick(&env, g, 3000);
    cr_assert_eq(kgroup_commit_check(&env, g, 1, a.member_id, NULL, 3000),
                 KGERR_REBALANCE_IN_PROGRESS, "not synced yet");
    struct waiter *ws[1] = {&a};
    sync_all(g, ws, 1, 3000);
    store_complete(&env, KGERR_NONE, 3000);
    cr_assert_eq(kgroup_commit_check(&env, g, 1, a.member_id, NULL, 3000), KGERR_NONE);
    cr_assert_eq(kgroup_commit_check(&env, g, 0, a.member_id, NULL, 3000),
                 KGERR_ILLEGAL_GENERATION);
    cr_assert_eq(kgroup_commit_check(&env, g, -1, "", NULL, 3000), KGERR_UNKNOWN_MEMBER_ID,
                 "a group in use takes commits from members only");
    cr_assert_eq(kgroup_delete(g), KGERR_NON_EMPTY_GROUP);
    cr_assert_eq(kgroup_leave(&env, g, a.member_id, NULL, 3000), KGERR_NONE);
    cr_assert_eq(g->state, KGROUP_EMPTY);
    cr_assert_eq(kgroup_delete(g), KGERR_NONE);
    cr_assert_eq(g->state, KGROUP_DEAD);
    cr_assert_eq(kgroup_delete(g), KGERR_GROUP_ID_NOT_FOUND);
    struct waiter late;
    waiter_init(&late);
    struct kgroup_join j = join_req("", NULL, &range, 1);
    kgroup_join(&env, g, &j, &late.w, 3000);
    cr_assert_eq(late.error, KGERR_COORDINATOR_NOT_AVAILABLE);
}

Test(kgroup, offsets_expire_only_in_an_empty_group_after_the_retention, .init = setup,
     .fini = teardown)
{
    const int64_t day = 86400000, retention = 7 * day;
    struct kgroup_offset *out[8];
    /* A standalone group (commits only, no protocol): from each commit. */
    struct kgroup *s = group("standalone");
    cr_assert_eq(kgroup_offset_put(s, "t", 0, 5, -1, "", 1 * day), 0);
    cr_assert_eq(kgroup_offset_put(s, "t", 1, 6, -1, "", 3 * day), 0);
    cr_assert_eq(kgroup_offsets_expired(s, 8 * day - 1, retention, 0, out, 8), 0);
    cr_assert_eq(kgroup_offsets_expired(s, 8 * day, retention, 0, out, 8), 1);
    cr_assert_eq(out[0]->partition, 0);
    cr_assert_eq(kgroup_offsets_expired(s, 10 * day, retention, 9 * day, out, 8), 2,
                 "a standalone group's empty time does not count");
    cr_assert_eq(kgroup_offsets_expired(s, 10 * day, retention, 0, out, 1), 2, "more than cap");

    /* A consumer group: nothing while it has members; once empty, from the
     * later of the commit and the moment it was seen empty. */
    struct kgroup *g = group("consumers");
    struct waiter w;
    join_new(g, &w, 1000);
    kgroup_tick(&env, g, 1000 + 3000); /* the initial delay ends */
    cr_assert_eq(w.answers, 1);
    cr_assert_eq(w.error, KGERR_NONE);
    cr_assert_eq(kgroup_offset_put(g, "t", 0, 7, -1, "", 1 * day), 0);
    cr_assert_neq(g->state, KGROUP_EMPTY);
    cr_assert_eq(kgroup_offsets_expired(g, 100 * day, retention, 0, out, 8), 0,
                 "a group with members keeps its offsets");
    cr_assert_eq(kgroup_leave(&env, g, w.member_id, NULL, 5000), KGERR_NONE);
    cr_assert_eq(g->state, KGROUP_EMPTY);
    cr_assert_eq(kgroup_offsets_expired(g, 9 * day, retention, 5 * day, out, 8), 0,
                 "empty since day 5: kept until day 12");
    cr_assert_eq(kgroup_offsets_expired(g, 12 * day, retention, 5 * day, out, 8), 1);
    cr_assert_eq(kgroup_offset_put(g, "t", 0, 8, -1, "", 11 * day), 0);
    cr_assert_eq(kgroup_offsets_expired(g, 12 * day, retention, 5 * day, out, 8), 0,
                 "committed again on day 11: kept until day 18");
    cr_assert_eq(kgroup_offsets_expired(g, 18 * day, retention, 5 * day, out, 8), 1);
}

Test(kgroup, offsets_are_kept_per_topic_and_partition, .init = setup, .fini = teardown)
{
    struct kgroup *g = group("g");
    for (int p = 0; p < 100; p++)
        cr_assert_eq(kgroup_offset_put(g, p % 2 ? "a" : "b", p, p * 10, 3, "m", 5), 0);
    cr_assert_eq(g->offset_count, 100);
    cr_assert_eq(kgroup_offset_put(g, "a", 1, 11, 4, NULL, 6), 0);
    cr_assert_eq(g->offset_count, 100);
    struct kgroup_offset *o = kgroup_offset_find(g, "a", 1);
    cr_assert_not_null(o);
    cr_assert_eq(o->offset, 11);
    cr_assert_str_eq(o->metadata, "");
    cr_assert_null(kgroup_offset_find(g, "a", 2));
    for (int p = 0; p < 100; p += 3)
        kgroup_offset_del(g, p % 2 ? "a" : "b", p);
    uint32_t cursor = 0, n = 0;
    struct kgroup_offset *chain = NULL;
    while ((o = kgroup_offset_next(g, &cursor, &chain)) != NULL) {
        cr_assert_neq(o->partition % 3, 0);
        n++;
    }
    cr_assert_eq(n, g->offset_count);
    cr_assert_eq(n, 66);
}

Test(kgroup, subscriptions_of_consumer_members_are_read, .init = setup, .fini = teardown)
{
    /* ConsumerProtocolSubscription v0: version, [topics], user data. */
    static const uint8_t sub[] = {0,   0, 0, 0,   0,   2,   0,    3,    'o',  'n',
                                  'e', 0, 3, 't', 'w', 'o', 0xff, 0xff, 0xff, 0xff};
    const struct kgroup_join_protocol p = {"range", sub, sizeof(sub)};
    struct kgroup *g = group("g");
    struct waiter w;
    waiter_init(&w);
    struct kgroup_join j = join_req("", NULL, &p, 1);
    j.is_member_id_required = false;
    kgroup_join(&env, g, &j, &w.w, 0);
    kgroup_tick(&env, g, 3000);
    cr_assert(kgroup_is_subscribed(g, "one"));
    cr_assert(kgroup_is_subscribed(g, "two"));
    cr_assert_not(kgroup_is_subscribed(g, "three"));
}

Test(kgroup, a_stable_consumer_group_loses_the_offsets_of_topics_it_left, .init = setup,
     .fini = teardown)
{
    static const uint8_t sub[] = {0,   0, 0, 0,   0,   2,   0,    3,    'o',  'n',
                                  'e', 0, 3, 't', 'w', 'o', 0xff, 0xff, 0xff, 0xff};
    const struct kgroup_join_protocol p = {"range", sub, sizeof(sub)};
    const int64_t day = 86400000;
    struct kgroup *g = group("g");
    struct waiter w;
    waiter_init(&w);
    struct kgroup_join j = join_req("", NULL, &p, 1);
    j.is_member_id_required = false;
    kgroup_join(&env, g, &j, &w.w, 0);
    kgroup_tick(&env, g, 3000);
    cr_assert_eq(w.error, KGERR_NONE);
    struct waiter *ws[1] = {&w};
    sync_all(g, ws, 1, 3000);
    store_complete(&env, KGERR_NONE, 3000);
    cr_assert_eq(g->state, KGROUP_STABLE);
    cr_assert_eq(kgroup_offset_put(g, "one", 0, 5, -1, "", 1 * day), 0);
    cr_assert_eq(kgroup_offset_put(g, "three", 0, 6, -1, "", 1 * day), 0);
    struct kgroup_offset *out[4];
    cr_assert_eq(kgroup_offsets_expired(g, 8 * day - 1, 7 * day, 0, out, 4), 0);
    cr_assert_eq(kgroup_offsets_expired(g, 8 * day, 7 * day, 0, out, 4), 1,
                 "a topic no member subscribes to");
    cr_assert_str_eq(out[0]->topic, "three");
    cr_assert_eq(kgroup_offsets_expired(g, 100 * day, 7 * day, 0, out, 4), 1,
                 "a subscribed topic's offsets stay however old");
}

/* ---- records ------------------------------------------------------------------------------------ */

Test(kgroup, the_partition_of_a_group_is_kafkas, .init = setup, .fini = teardown)
{
    /* Java: abs("my-group".hashCode()) % 50 and friends. */
    cr_assert_eq(kgroup_partition_for("my-group", 8, 50), 12);
    cr_assert_eq(kgroup_partition_for("", 0, 50), 0);
    cr_assert_eq(kgroup_partition_for("test-consumer-group", 19, 50), 31);
    cr_assert_eq(kgroup_partition_for("g", 1, 2), 1);
}

static void apply_offset(struct kgroup_table *t, const char *group, const char *topic, int32_t p,
                         int64_t offset, const char *meta, bool is_tombstone)
{
    uint8_t key[256], value[256];
    size_t klen = kgroup_offset_key_size(group, topic);
    kgroup_offset_key_encode(key, group, topic, p);
    size_t vlen = kgroup_offset_value_size(meta);
    kgroup_offset_value_encode(value, offset, 7, meta, 1234);
    cr_assert_eq(kgroup_table_apply(t, 3, key, (int32_t)klen, is_tombstone ? NULL : value,
                                    is_tombstone ? -1 : (int32_t)vlen),
                 0);
}

Test(kgroup, records_read_back_rebuild_groups_and_offsets, .init = setup, .fini = teardown)
{
    struct kgroup *g = group("g");
    struct waiter a, b;
    waiter_init(&a);
    struct kgroup_join ja = join_req("", "inst-a", &range, 1);
    kgroup_join(&env, g, &ja, &a.w, 0);
    join_new(g, &b, 0);
    kgroup_tick(&env, g, 3000);
    kgroup_tick(&env, g, 6000);
    struct waiter *ws[2] = {&a, &b};
    sync_all(g, ws, 2, 6000);
    store_complete(&env, KGERR_NONE, 6000);
    /* The group's metadata record, as the coordinator writes it. */
    uint8_t key[64];
    size_t klen = kgroup_group_key_size("g");
    kgroup_group_key_encode(key, "g");
    size_t vlen = kgroup_group_value_size(g);
    uint8_t *value = malloc(vlen);
    kgroup_group_value_encode(value, g, 99);
    cr_assert_eq(key[0], 0);
    cr_assert_eq(key[1], 2, "GroupMetadataKey: version 2");
    cr_assert_eq(value[1], 3, "GroupMetadataValue v3");

    struct kgroup_table t2;
    cr_assert_eq(kgroup_table_init(&t2), 0);
    apply_offset(&t2, "g", "topic", 0, 5, "x", false);
    apply_offset(&t2, "g", "topic", 0, 6, "y", false); /* the last value wins */
    apply_offset(&t2, "g", "topic", 1, 9, NULL, false);
    apply_offset(&t2, "g", "topic", 1, 9, NULL, true); /* a tombstone */
    apply_offset(&t2, "h", "other", 2, 1, "", false);
    cr_assert_eq(kgroup_table_apply(&t2, 3, key, (int32_t)klen, value, (int32_t)vlen), 0);
    struct kgroup *r = kgroup_find(&t2, "g");
    cr_assert_not_null(r);
    cr_assert_eq(r->partition, 3);
    cr_assert_eq(r->state, KGROUP_STABLE);
    cr_assert_eq(r->generation, 1);
    cr_assert_str_eq(r->protocol, "range");
    cr_assert_str_eq(r->protocol_type, "consumer");
    cr_assert_eq(r->member_count, 2);
    cr_assert_str_eq(r->leader->id, g->leader->id);
    struct kgroup_member *ra = kgroup_member_find(r, a.member_id);
    cr_assert_not_null(ra);
    cr_assert_str_eq(ra->instance_id, "inst-a");
    cr_assert_eq(ra->assignment.len, 2);
    cr_assert(memcmp(ra->assignment.ptr, "A0", 2) == 0);
    cr_assert_eq(kgroup_member_metadata(ra, "range").len, 1);
    cr_assert_eq(ra->session_timeout_ms, 10000);
    cr_assert_eq(ra->rebalance_timeout_ms, 20000);
    struct kgroup_offset *o = kgroup_offset_find(r, "topic", 0);
    cr_assert_not_null(o);
    cr_assert_eq(o->offset, 6);
    cr_assert_str_eq(o->metadata, "y");
    cr_assert_eq(o->leader_epoch, 7);
    cr_assert_eq(o->commit_ms, 1234);
    cr_assert_null(kgroup_offset_find(r, "topic", 1));
    cr_assert_eq(t2.count, 2);
    /* The restored members heartbeat on as before. */
    kgroup_loaded(r, 100000);
    cr_assert_eq(kgroup_heartbeat(&env, r, a.member_id, "inst-a", 1, 100000), KGERR_NONE);
    /* Deleting: the offsets' tombstones, then the group's. */
    apply_offset(&t2, "g", "topic", 0, 0, NULL, true);
    cr_assert_eq(kgroup_table_apply(&t2, 3, key, (int32_t)klen, NULL, -1), 0);
    cr_assert_null(kgroup_find(&t2, "g"));
    cr_assert_not_null(kgroup_find(&t2, "h"));
    /* Records that are not ours, or broken, are told apart. */
    uint8_t other[] = {0, 9, 0, 0};
    cr_assert_eq(kgroup_table_apply(&t2, 3, other, 4, NULL, -1), 1);
    cr_assert_eq(kgroup_table_apply(&t2, 3, key, 3, value, (int32_t)vlen), -EBADMSG);
    cr_assert_eq(kgroup_table_apply(&t2, 3, key, (int32_t)klen, value, 5), -EBADMSG);
    kgroup_table_fini(&t2);
    free(value);
    stores_drop_plain();
}

Test(kgroup, abort_answers_every_parked_request, .init = setup, .fini = teardown)
{
    struct kgroup *g = group("g");
    struct waiter a;
    join_new(g, &a, 0);
    cr_assert_eq(a.answers, 0);
    kgroup_abort_waiters(g, KGERR_NOT_COORDINATOR);
    cr_assert_eq(a.answers, 1);
    cr_assert_eq(a.error, KGERR_NOT_COORDINATOR);
}

/* ---- the APIs through a server, every version ------------------------------------------------ */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/err.h"
#include "net/kproto.h"
#include "net/kproto_gen.h"
#include "net/server.h"

TestSuite(kgroup_server, .timeout = 120);

#define SRV_BUF (1u << 16)

struct srv {
    rv_runtime_t *rt;
    rv_store_t *st;
    rv_server_t *srv;
    char dir[64];
    uint16_t port;
    int fd;
    bool is_advertise;
    int32_t coordinator; /* the node the last FindCoordinator named */
    int32_t corr;
    uint8_t buf[SRV_BUF];
    uint8_t arena_mem[4 * SRV_BUF];
    struct rv_kproto_arena arena;
};

static void srv_open(struct srv *f, bool is_advertise)
{
    memset(f, 0, sizeof(*f));
    f->is_advertise = is_advertise;
    struct rv_runtime_config rc;
    rv_runtime_config_init(&rc);
    rc.shard_count = 2;
    rc.allow_oversubscribe = true;
    snprintf(f->dir, sizeof(f->dir), "/tmp/rivven-test-kgroup-XXXXXX");
    cr_assert_not_null(mkdtemp(f->dir));
    rc.data_dir = f->dir;
    cr_assert_eq(rv_runtime_open(&f->rt, &rc), 0, "%s", rv_err_msg());
    struct rv_store_config sc;
    rv_store_config_init(&sc);
    cr_assert_eq(rv_store_open(&f->st, f->rt, &sc), 0, "%s", rv_err_msg());
    struct rv_topic_config tc;
    rv_topic_config_init(&tc);
    tc.partitions = 3;
    cr_assert_eq(rv_topic_create(f->st, "t", &tc), 0, "%s", rv_err_msg());
    struct rv_config cfg;
    rv_config_init(&cfg);
    cr_assert_eq(rv_config_set(&cfg, "listeners", "PLAINTEXT://127.0.0.1:0"), 0);
    cr_assert_eq(rv_config_set(&cfg, "group.initial.rebalance.delay.ms", "0"), 0);
    cr_assert_eq(rv_config_set(&cfg, "rivven.advertise.shards", is_advertise ? "true" : "false"),
                 0);
    cr_assert_eq(rv_server_start(&f->srv, f->rt, f->st, &cfg), 0, "%s", rv_err_msg());
    f->port = rv_server_port(f->srv);
    f->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(f->fd, 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(f->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons(f->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(f->fd, (struct sockaddr *)&a, sizeof(a)), 0);
}

static void srv_close(struct srv *f)
{
    close(f->fd);
    rv_server_stop(f->srv);
    rv_store_close(f->st);
    rv_runtime_close(f->rt);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    cr_assert_eq(system(cmd), 0);
}

static void srv_read(struct srv *f, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = recv(f->fd, (char *)buf + got, len - got, 0);
        cr_assert_gt(n, 0, "recv: %s", n == 0 ? "closed" : strerror(errno));
        got += (size_t)n;
    }
}

/* Send one request and decode its response into resp (in f's arena, reset each call). */
static void srv_call(struct srv *f, int16_t api, int16_t version,
                     const struct rv_kp_struct_desc *req_desc, const void *req,
                     const struct rv_kp_struct_desc *resp_desc, void *resp)
{
    struct rv_kp_request_header h;
    rv_kp_request_header_init(&h);
    h.request_api_key = api;
    h.request_api_version = version;
    h.correlation_id = ++f->corr;
    h.client_id = rv_kp_str_from("kgroup-test");
    struct rv_kp_writer w;
    rv_kp_writer_init(&w, f->buf + 4, SRV_BUF - 4);
    cr_assert_eq(rv_kp_request_header_build(&w, &h), 0);
    cr_assert_eq(req_desc->encode(&w, version, req), 0, "%s v%d", req_desc->name, version);
    size_t len = w.pos;
    for (int i = 0; i < 4; i++)
        f->buf[i] = (uint8_t)(len >> (24 - 8 * i));
    cr_assert_eq(send(f->fd, f->buf, len + 4, MSG_NOSIGNAL), (ssize_t)(len + 4));
    uint8_t prefix[4];
    srv_read(f, prefix, 4);
    uint32_t size = (uint32_t)prefix[0] << 24 | (uint32_t)prefix[1] << 16 |
                    (uint32_t)prefix[2] << 8 | prefix[3];
    cr_assert_lt(size, SRV_BUF);
    srv_read(f, f->buf, size);
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, f->buf, size);
    int32_t corr = -1;
    cr_assert_eq(rv_kp_response_header_parse(&r, api, version, &corr), 0);
    cr_assert_eq(corr, f->corr);
    rv_kproto_arena_init(&f->arena, f->arena_mem, sizeof(f->arena_mem));
    cr_assert_eq(resp_desc->decode(&r, version, resp, &f->arena), 0, "%s v%d", resp_desc->name,
                 version);
    cr_assert_eq(rv_kp_reader_left(&r), 0, "%s v%d: trailing bytes", resp_desc->name, version);
}

static void str_copy(char *out, size_t cap, struct rv_kp_str s)
{
    cr_assert_geq(s.len, 0);
    cr_assert_lt((size_t)s.len, cap);
    memcpy(out, s.ptr, (size_t)s.len);
    out[s.len] = '\0';
}

static void srv_find(struct srv *f, int16_t v, const char *group)
{
    struct rv_kp_find_coordinator_request req;
    rv_kp_find_coordinator_request_init(&req);
    struct rv_kp_str keys[1] = {rv_kp_str_from(group)};
    /* A version's encoder refuses a field it cannot carry: set what v has. */
    if (v < 4)
        req.key = keys[0];
    else
        req.coordinator_keys = (struct rv_kp_arr_str){.count = 1, .items = keys};
    struct rv_kp_find_coordinator_response resp;
    srv_call(f, RV_KP_API_FIND_COORDINATOR, v, &rv_kp_find_coordinator_request_desc, &req,
             &rv_kp_find_coordinator_response_desc, &resp);
    if (v >= 4) {
        cr_assert_eq(resp.coordinators.count, 1);
        cr_assert_eq(resp.coordinators.items[0].error_code, 0);
        cr_assert(rv_kp_str_eq_cstr(resp.coordinators.items[0].key, group));
        cr_assert_gt(resp.coordinators.items[0].port, 0);
        f->coordinator = resp.coordinators.items[0].node_id;
    } else {
        cr_assert_eq(resp.error_code, 0, "FindCoordinator v%d", v);
        cr_assert_gt(resp.port, 0);
        f->coordinator = resp.node_id;
    }
}

/* Join at version v until a generation: the member id into member. */
static void srv_join(struct srv *f, int16_t v, const char *group, char *member, size_t cap)
{
    struct rv_kp_join_group_request req;
    rv_kp_join_group_request_init(&req);
    struct rv_kp_join_group_request_protocol proto = {
        .name = rv_kp_str_from("range"), .metadata = {.ptr = (const uint8_t *)"meta", .len = 4}};
    req.group_id = rv_kp_str_from(group);
    req.session_timeout_ms = 10000;
    req.rebalance_timeout_ms = v >= 1 ? 10000 : -1;
    req.member_id = rv_kp_str_from("");
    req.protocol_type = rv_kp_str_from("consumer");
    req.protocols.count = 1;
    req.protocols.items = &proto;
    struct rv_kp_join_group_response resp;
    srv_call(f, RV_KP_API_JOIN_GROUP, v, &rv_kp_join_group_request_desc, &req,
             &rv_kp_join_group_response_desc, &resp);
    if (v >= 4) {
        cr_assert_eq(resp.error_code, KGERR_MEMBER_ID_REQUIRED, "JoinGroup v%d", v);
        str_copy(member, cap, resp.member_id);
        req.member_id = rv_kp_str_from(member);
        srv_call(f, RV_KP_API_JOIN_GROUP, v, &rv_kp_join_group_request_desc, &req,
                 &rv_kp_join_group_response_desc, &resp);
    }
    cr_assert_eq(resp.error_code, 0, "JoinGroup v%d: error %d", v, resp.error_code);
    cr_assert_eq(resp.generation_id, 1);
    str_copy(member, cap, resp.member_id);
    cr_assert(rv_kp_str_eq_cstr(resp.leader, member));
    cr_assert(rv_kp_str_eq_cstr(resp.protocol_name, "range"));
    if (v >= 7)
        cr_assert(rv_kp_str_eq_cstr(resp.protocol_type, "consumer"));
    cr_assert_eq(resp.members.count, 1);
    cr_assert(rv_kp_str_eq_cstr(resp.members.items[0].member_id, member));
    cr_assert_eq(resp.members.items[0].metadata.len, 4);
}

static void srv_sync(struct srv *f, int16_t v, const char *group, const char *member)
{
    struct rv_kp_sync_group_request req;
    rv_kp_sync_group_request_init(&req);
    struct rv_kp_sync_group_request_assignment as = {
        .member_id = rv_kp_str_from(member),
        .assignment = {.ptr = (const uint8_t *)"ASSIGN", .len = 6}};
    req.group_id = rv_kp_str_from(group);
    req.generation_id = 1;
    req.member_id = rv_kp_str_from(member);
    if (v >= 5) {
        req.protocol_type = rv_kp_str_from("consumer");
        req.protocol_name = rv_kp_str_from("range");
    }
    req.assignments.count = 1;
    req.assignments.items = &as;
    struct rv_kp_sync_group_response resp;
    srv_call(f, RV_KP_API_SYNC_GROUP, v, &rv_kp_sync_group_request_desc, &req,
             &rv_kp_sync_group_response_desc, &resp);
    cr_assert_eq(resp.error_code, 0, "SyncGroup v%d: error %d", v, resp.error_code);
    cr_assert_eq(resp.assignment.len, 6);
    cr_assert(memcmp(resp.assignment.ptr, "ASSIGN", 6) == 0);
    if (v >= 5)
        cr_assert(rv_kp_str_eq_cstr(resp.protocol_name, "range"));
}

static int16_t srv_heartbeat(struct srv *f, int16_t v, const char *group, const char *member,
                             int32_t generation)
{
    struct rv_kp_heartbeat_request req;
    rv_kp_heartbeat_request_init(&req);
    req.group_id = rv_kp_str_from(group);
    req.generation_id = generation;
    req.member_id = rv_kp_str_from(member);
    struct rv_kp_heartbeat_response resp;
    srv_call(f, RV_KP_API_HEARTBEAT, v, &rv_kp_heartbeat_request_desc, &req,
             &rv_kp_heartbeat_response_desc, &resp);
    return resp.error_code;
}

static void srv_commit(struct srv *f, int16_t v, const char *group, const char *member,
                       int64_t offset)
{
    struct rv_kp_offset_commit_request req;
    rv_kp_offset_commit_request_init(&req);
    struct rv_kp_offset_commit_request_partition parts[2] = {
        {.partition_index = 0,
         .committed_offset = offset,
         .committed_leader_epoch = 3,
         .commit_timestamp = -1,
         .committed_metadata = rv_kp_str_from("m")},
        {.partition_index = 7, /* no such partition */
         .committed_offset = 1,
         .committed_leader_epoch = -1,
         .commit_timestamp = -1,
         .committed_metadata = {.ptr = NULL, .len = -1}}};
    struct rv_kp_offset_commit_request_topic topic = {.name = rv_kp_str_from("t"),
                                                      .partitions = {.count = 2, .items = parts}};
    req.group_id = rv_kp_str_from(group);
    req.generation_id_or_member_epoch = v >= 1 ? 1 : -1;
    req.member_id = rv_kp_str_from(v >= 1 ? member : "");
    parts[0].committed_leader_epoch = v >= 6 ? 3 : -1;
    req.topics.count = 1;
    req.topics.items = &topic;
    struct rv_kp_offset_commit_response resp;
    srv_call(f, RV_KP_API_OFFSET_COMMIT, v, &rv_kp_offset_commit_request_desc, &req,
             &rv_kp_offset_commit_response_desc, &resp);
    cr_assert_eq(resp.topics.count, 1);
    cr_assert_eq(resp.topics.items[0].partitions.count, 2);
    cr_assert_eq(resp.topics.items[0].partitions.items[0].error_code, 0, "OffsetCommit v%d: %d", v,
                 resp.topics.items[0].partitions.items[0].error_code);
    cr_assert_eq(resp.topics.items[0].partitions.items[1].error_code,
                 KGERR_UNKNOWN_TOPIC_OR_PARTITION);
}

/* The committed offset of t-0 (every offset when is_all, v2+). */
static void srv_fetch(struct srv *f, int16_t v, const char *group, bool is_all, int64_t want,
                      int32_t want_epoch)
{
    struct rv_kp_offset_fetch_request req;
    rv_kp_offset_fetch_request_init(&req);
    int32_t p0 = 0;
    struct rv_kp_offset_fetch_request_topic topic = {
        .name = rv_kp_str_from("t"), .partition_indexes = {.count = 1, .items = &p0}};
    struct rv_kp_offset_fetch_request_topics topics = {
        .name = rv_kp_str_from("t"), .partition_indexes = {.count = 1, .items = &p0}};
    struct rv_kp_offset_fetch_request_group g;
    rv_kp_offset_fetch_request_group_init(&g);
    g.group_id = rv_kp_str_from(group);
    g.topics.count = is_all ? -1 : 1;
    g.topics.items = is_all ? NULL : &topics;
    if (v < 8) {
        req.group_id = rv_kp_str_from(group);
        req.topics.count = is_all ? -1 : 1;
        req.topics.items = is_all ? NULL : &topic;
    } else {
        req.groups.count = 1;
        req.groups.items = &g;
    }
    struct rv_kp_offset_fetch_response resp;
    srv_call(f, RV_KP_API_OFFSET_FETCH, v, &rv_kp_offset_fetch_request_desc, &req,
             &rv_kp_offset_fetch_response_desc, &resp);
    int32_t nt;
    int32_t np;
    int64_t offset;
    int32_t epoch;
    if (v >= 8) {
        cr_assert_eq(resp.groups.count, 1);
        cr_assert_eq(resp.groups.items[0].error_code, 0);
        cr_assert(rv_kp_str_eq_cstr(resp.groups.items[0].group_id, group));
        nt = resp.groups.items[0].topics.count;
        cr_assert_eq(nt, 1, "OffsetFetch v%d: %d topics", v, nt);
        np = resp.groups.items[0].topics.items[0].partitions.count;
        offset = resp.groups.items[0].topics.items[0].partitions.items[0].committed_offset;
        epoch = resp.groups.items[0].topics.items[0].partitions.items[0].committed_leader_epoch;
    } else {
        cr_assert_eq(resp.error_code, 0);
        nt = resp.topics.count;
        cr_assert_eq(nt, 1, "OffsetFetch v%d: %d topics", v, nt);
        cr_assert(rv_kp_str_eq_cstr(resp.topics.items[0].name, "t"));
        np = resp.topics.items[0].partitions.count;
        offset = resp.topics.items[0].partitions.items[0].committed_offset;
        epoch = resp.topics.items[0].partitions.items[0].committed_leader_epoch;
    }
    cr_assert_eq(np, 1);
    cr_assert_eq(offset, want, "OffsetFetch v%d: offset %lld, want %lld", v, (long long)offset,
                 (long long)want);
    if (v >= 5)
        cr_assert_eq(epoch, want_epoch, "OffsetFetch v%d: epoch %d", v, epoch);
}

static void srv_describe(struct srv *f, int16_t v, const char *group, const char *state,
                         int32_t members)
{
    struct rv_kp_describe_groups_request req;
    rv_kp_describe_groups_request_init(&req);
    struct rv_kp_str g = rv_kp_str_from(group);
    req.groups = (struct rv_kp_arr_str){.count = 1, .items = &g};
    req.include_authorized_operations = v >= 3;
    struct rv_kp_describe_groups_response resp;
    srv_call(f, RV_KP_API_DESCRIBE_GROUPS, v, &rv_kp_describe_groups_request_desc, &req,
             &rv_kp_describe_groups_response_desc, &resp);
    cr_assert_eq(resp.groups.count, 1);
    struct rv_kp_describe_groups_response_described_group *d = &resp.groups.items[0];
    cr_assert_eq(d->error_code, 0);
    cr_assert(rv_kp_str_eq_cstr(d->group_state, state), "DescribeGroups v%d: %.*s", v,
              d->group_state.len, d->group_state.ptr);
    cr_assert_eq(d->members.count, members);
    if (members > 0) {
        cr_assert(rv_kp_str_eq_cstr(d->protocol_data, "range"));
        cr_assert(rv_kp_str_eq_cstr(d->members.items[0].client_id, "kgroup-test"));
        cr_assert(rv_kp_str_eq_cstr(d->members.items[0].client_host, "/127.0.0.1"),
                  "the member's address, as Kafka writes it");
        cr_assert_eq(d->members.items[0].member_assignment.len, 6);
    }
    if (v >= 3)
        cr_assert_eq(d->authorized_operations, (1 << 3) | (1 << 6) | (1 << 8));
}

static bool srv_listed(struct srv *f, int16_t v, const char *group)
{
    struct rv_kp_list_groups_request req;
    rv_kp_list_groups_request_init(&req);
    struct rv_kp_str state = rv_kp_str_from("stable"), type = rv_kp_str_from("Classic");
    if (v >= 4)
        req.states_filter = (struct rv_kp_arr_str){.count = 1, .items = &state};
    if (v >= 5)
        req.types_filter = (struct rv_kp_arr_str){.count = 1, .items = &type};
    struct rv_kp_list_groups_response resp;
    srv_call(f, RV_KP_API_LIST_GROUPS, v, &rv_kp_list_groups_request_desc, &req,
             &rv_kp_list_groups_response_desc, &resp);
    cr_assert_eq(resp.error_code, 0);
    for (int32_t i = 0; i < resp.groups.count; i++) {
        if (rv_kp_str_eq_cstr(resp.groups.items[i].group_id, group)) {
            cr_assert(rv_kp_str_eq_cstr(resp.groups.items[i].protocol_type, "consumer"));
            return true;
        }
    }
    return false;
}

static void srv_leave(struct srv *f, int16_t v, const char *group, const char *member)
{
    struct rv_kp_leave_group_request req;
    rv_kp_leave_group_request_init(&req);
    struct rv_kp_leave_group_request_member_identity id;
    rv_kp_leave_group_request_member_identity_init(&id);
    id.member_id = rv_kp_str_from(member);
    req.group_id = rv_kp_str_from(group);
    if (v < 3) {
        req.member_id = rv_kp_str_from(member);
    } else {
        req.members.count = 1;
        req.members.items = &id;
    }
    struct rv_kp_leave_group_response resp;
    srv_call(f, RV_KP_API_LEAVE_GROUP, v, &rv_kp_leave_group_request_desc, &req,
             &rv_kp_leave_group_response_desc, &resp);
    cr_assert_eq(resp.error_code, 0, "LeaveGroup v%d: %d", v, resp.error_code);
    if (v >= 3) {
        cr_assert_eq(resp.members.count, 1);
        cr_assert_eq(resp.members.items[0].error_code, 0);
        cr_assert(rv_kp_str_eq_cstr(resp.members.items[0].member_id, member));
    }
}

static int16_t srv_delete(struct srv *f, int16_t v, const char *group)
{
    struct rv_kp_delete_groups_request req;
    rv_kp_delete_groups_request_init(&req);
    struct rv_kp_str g = rv_kp_str_from(group);
    req.groups_names = (struct rv_kp_arr_str){.count = 1, .items = &g};
    struct rv_kp_delete_groups_response resp;
    srv_call(f, RV_KP_API_DELETE_GROUPS, v, &rv_kp_delete_groups_request_desc, &req,
             &rv_kp_delete_groups_response_desc, &resp);
    cr_assert_eq(resp.results.count, 1);
    cr_assert(rv_kp_str_eq_cstr(resp.results.items[0].group_id, group));
    return resp.results.items[0].error_code;
}

/* One group through its whole life, at version v of the APIs (each API at
 * v modulo its versions, so that every version is used). */
static void srv_group_life(struct srv *f, int16_t v)
{
    char group[32], member[256];
    snprintf(group, sizeof(group), "group-v%d", v);
    srv_find(f, v % 7, group);
    srv_join(f, v, group, member, sizeof(member));
    srv_sync(f, v % 6, group, member);
    cr_assert_eq(srv_heartbeat(f, v % 5, group, member, 1), 0);
    cr_assert_eq(srv_heartbeat(f, v % 5, group, member, 2), KGERR_ILLEGAL_GENERATION);
    cr_assert_eq(srv_heartbeat(f, v % 5, group, "nobody", 1), KGERR_UNKNOWN_MEMBER_ID);
    if (v == 0) { /* v0 has no generation: a "simple" commit, into a group of its own */
        srv_commit(f, 0, "simple", "", 40);
        srv_fetch(f, 0, "simple", false, 40, -1);
    }
    int16_t cv = v == 0 ? 1 : v;
    srv_commit(f, cv, group, member, 100 + v);
    srv_fetch(f, v, group, v >= 2 && v % 2 == 0, 100 + v, cv >= 6 ? 3 : -1);
    srv_describe(f, v % 6, group, "Stable", 1);
    /* Node 0 (the port this test talks to) lists the groups it coordinates:
     * every group when one broker is advertised. */
    cr_assert_eq(srv_listed(f, v % 6, group), !f->is_advertise || f->coordinator == 0);
    cr_assert_eq(srv_delete(f, v % 3, group), KGERR_NON_EMPTY_GROUP);
    srv_leave(f, v % 6, group, member);
    srv_describe(f, v % 6, group, "Empty", 0);
    cr_assert_eq(srv_delete(f, v % 3, group), 0);
    cr_assert_eq(srv_delete(f, v % 3, group), KGERR_GROUP_ID_NOT_FOUND);
    srv_describe(f, v % 6, group, "Dead", 0);
    srv_fetch(f, v, group, false, -1, -1);
}

static void every_version(bool is_advertise)
{
    struct srv *f = calloc(1, sizeof(*f));
    cr_assert_not_null(f);
    srv_open(f, is_advertise);
    for (int16_t v = 0; v <= 9; v++)
        srv_group_life(f, v);
    srv_close(f);
    free(f);
}

Test(kgroup_server, every_api_at_every_version_with_shards_advertised)
{
    every_version(true);
}

Test(kgroup_server, every_api_at_every_version_forwarded)
{
    every_version(false);
}
