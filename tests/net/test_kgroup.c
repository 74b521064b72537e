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
    char bytes[8][8];
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
