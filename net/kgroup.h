/*
 * net/kgroup.h - the classic consumer group protocol as a state machine, the
 * table of groups a coordinator shard owns, and the records of the internal
 * __consumer_offsets topic (Kafka's key and value formats).
 *
 * Nothing here does I/O, reads a clock or arms a timer: every call takes the
 * time (now_ms, monotonic) and the owner asks kgroup_next_deadline when to call
 * kgroup_tick; persisting a group's metadata is a request to the owner
 * (env->store) that the owner completes later with kgroup_stored. So the whole
 * protocol runs in unit tests without a broker (tests/net/test_kgroup.c), and
 * the broker (net/kgroup_api.c) adds routing, the log and the timers.
 *
 * A group follows Kafka's GroupCoordinator:
 *
 *     EMPTY --join--> PREPARING_REBALANCE --every member joined, or the
 *       ^                 ^      |          rebalance timeout--> COMPLETING_REBALANCE
 *       |                 |      +--no member left--> EMPTY          |
 *       |                 +--join, leave, session expiry-------------+ leader's sync
 *       |                 +--join (leader or new metadata), leave,   v stored
 *       |                    session expiry------------------- STABLE
 *       +--(any) DeleteGroups on an EMPTY group--> DEAD (removed)
 *
 * Joins wait (struct kgroup_waiter) until the rebalance completes; syncs wait
 * until the leader's assignment is stored. A waiter is answered exactly once,
 * possibly inside the call that parked it.
 *
 * Threading: a table, its groups and their waiters belong to one shard.
 */
#ifndef RV_NET_KGROUP_H
#define RV_NET_KGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/assert.h"
#include "core/hmap.h"
#include "rivven.h"

/* Kafka error codes of the group protocol (protocol data, not C errors). */
enum {
    KGERR_UNKNOWN_SERVER_ERROR = -1,
    KGERR_NONE = 0,
    KGERR_UNKNOWN_TOPIC_OR_PARTITION = 3,
    KGERR_OFFSET_METADATA_TOO_LARGE = 12,
    KGERR_COORDINATOR_LOAD_IN_PROGRESS = 14,
    KGERR_COORDINATOR_NOT_AVAILABLE = 15,
    KGERR_NOT_COORDINATOR = 16,
    KGERR_ILLEGAL_GENERATION = 22,
    KGERR_INCONSISTENT_GROUP_PROTOCOL = 23,
    KGERR_INVALID_GROUP_ID = 24,
    KGERR_UNKNOWN_MEMBER_ID = 25,
    KGERR_INVALID_SESSION_TIMEOUT = 26,
    KGERR_REBALANCE_IN_PROGRESS = 27,
    KGERR_INVALID_COMMIT_OFFSET_SIZE = 28,
    KGERR_INVALID_REQUEST = 42,
    KGERR_NON_EMPTY_GROUP = 68,
    KGERR_GROUP_ID_NOT_FOUND = 69,
    KGERR_MEMBER_ID_REQUIRED = 79,
    KGERR_FENCED_INSTANCE_ID = 82,
    KGERR_GROUP_SUBSCRIBED_TO_TOPIC = 86,
};

#define KGROUP_METADATA_MAX 4096 /* offset.metadata.max.bytes */

enum kgroup_state {
    KGROUP_EMPTY,
    KGROUP_PREPARING_REBALANCE,
    KGROUP_COMPLETING_REBALANCE,
    KGROUP_STABLE,
    KGROUP_DEAD,
};

/* Owned bytes (malloc'd); len -1 with ptr NULL is null. */
struct kgroup_bytes {
    uint8_t *ptr;
    int32_t len;
};

struct kgroup_protocol {
    char *name;
    struct kgroup_bytes metadata;
};

struct kgroup;

/* What a parked join or sync is answered with. Pointers are valid during the
 * waiter's call only. */
struct kgroup_result {
    int16_t error;
    int32_t generation;        /* join: -1 on error */
    const char *protocol_type; /* NULL: none */
    const char *protocol_name; /* NULL: none */
    const char *leader;        /* join: "" when none */
    const char *member_id;     /* join: the member's id ("" when unknown) */
    /* join: the leader gets every member (kgroup_member_metadata of each) */
    const struct kgroup *members_of;
    bool skip_assignment;
    /* sync: the member's assignment (len 0 when none) */
    const uint8_t *assignment;
    int32_t assignment_len;
};

struct kgroup_waiter;
typedef void kgroup_waiter_fn(struct kgroup_waiter *w, const struct kgroup_result *res);
struct kgroup_waiter {
    kgroup_waiter_fn *fn;
};

struct kgroup_member {
    struct kgroup_member *next; /* the group's members in the order they joined */
    char *id;
    char *instance_id; /* group.instance.id; NULL for a dynamic member */
    char *client_id;
    char *client_host;
    int32_t session_timeout_ms;
    int32_t rebalance_timeout_ms;
    struct kgroup_protocol *protocols; /* in the member's order of preference */
    uint32_t protocol_count;
    struct kgroup_bytes assignment; /* len 0: none */
    int64_t deadline_ms;            /* removed when not heard of by then */
    struct kgroup_waiter *join_waiter;
    struct kgroup_waiter *sync_waiter;
    char *static_leader;    /* a replaced static member waits for its store: the
                                leader its answer names (NULL: none pending) */
    bool is_static_storing; /* that store is in flight */
};

/* A member id handed out with MEMBER_ID_REQUIRED, not yet back. */
struct kgroup_pending {
    struct kgroup_pending *next;
    char *id;
    int64_t deadline_ms;
};

struct kgroup_offset {
    struct kgroup_offset *next; /* the same hash */
    char *topic;
    int32_t partition;
    int64_t offset;
    int32_t leader_epoch; /* -1: none */
    char *metadata;       /* never NULL ("" when none) */
    int64_t commit_ms;    /* wall clock */
};

struct kgroup {
    char *id;
    enum kgroup_state state;
    int32_t generation;
    char *protocol_type;          /* NULL: none yet */
    char *protocol;               /* selected for the generation; NULL: none */
    struct kgroup_member *leader; /* one of the members; NULL: none */
    struct kgroup_member *members;
    uint32_t member_count;
    struct kgroup_pending *pending;
    /* A rebalance (PREPARING_REBALANCE). */
    int64_t join_deadline_ms;
    int32_t initial_left_ms; /* the initial delay may extend this much more */
    bool is_initial_delay;
    bool has_new_member;
    /* Committed offsets: hash(topic, partition) -> chain of struct kgroup_offset. */
    struct rv_hmap offsets;
    uint32_t offset_count;
    /* The owner's (net/kgroup_api.c); untouched here. */
    struct kgroup *hash_next;
    int32_t partition; /* of __consumer_offsets */
    uint32_t refs;     /* operations in flight that hold the group */
    bool is_removed;   /* out of the table: freed when refs reaches 0 */
    bool has_timer;
    rv_timer_id timer;
    int64_t timer_at_ms;
    int64_t empty_since_ms; /* wall ms the owner first saw it EMPTY; 0: not empty */
};

enum kgroup_store_kind {
    KGROUP_STORE_PLAIN,  /* nothing waits (the group became EMPTY) */
    KGROUP_STORE_SYNC,   /* the leader's assignment: syncs wait */
    KGROUP_STORE_STATIC, /* a static member replaced in STABLE: its join waits */
};

struct kgroup_env;
/* Persist g's metadata as it is now; the owner calls kgroup_stored later
 * (never from inside this call) with kind, the generation and member_id. */
typedef void kgroup_store_fn(struct kgroup_env *env, struct kgroup *g, enum kgroup_store_kind kind,
                             const char *member_id);

struct kgroup_env {
    int32_t initial_delay_ms; /* group.initial.rebalance.delay.ms */
    int32_t session_min_ms;   /* group.min.session.timeout.ms */
    int32_t session_max_ms;   /* group.max.session.timeout.ms */
    uint64_t rand_state;      /* member ids (xorshift; never 0) */
    kgroup_store_fn *store;
    void *ctx; /* the owner's */
};

/* A JoinGroup (strings NUL-terminated; borrowed for the call). */
struct kgroup_join_protocol {
    const char *name;
    const uint8_t *metadata;
    int32_t metadata_len;
};

struct kgroup_join {
    const char *member_id;   /* "" when unknown */
    const char *instance_id; /* NULL: dynamic */
    const char *client_id;
    const char *client_host;
    const char *protocol_type;
    const struct kgroup_join_protocol *protocols;
    uint32_t protocol_count;
    int32_t session_timeout_ms;
    int32_t rebalance_timeout_ms;
    bool is_member_id_required; /* v4+: a first join gets MEMBER_ID_REQUIRED */
    bool can_skip_assignment;   /* v9+ */
};

struct kgroup_assignment {
    const char *member_id;
    const uint8_t *bytes;
    int32_t len;
};

struct kgroup_sync {
    const char *member_id;
    const char *instance_id;   /* NULL: none */
    const char *protocol_type; /* NULL: not checked */
    const char *protocol_name; /* NULL: not checked */
    int32_t generation;
    const struct kgroup_assignment *assignments; /* the leader's */
    uint32_t assignment_count;
};

/* The groups of one coordinator shard, by id. */
struct kgroup_table {
    struct rv_hmap map; /* hash(id) -> chain of struct kgroup */
    uint32_t count;
};

/* ---- lifecycle ------------------------------------------------------------------------- */

RV_MUST_CHECK int kgroup_table_init(struct kgroup_table *t);
/* Free every group (no waiter may be parked). */
void kgroup_table_fini(struct kgroup_table *t);

/* The group `id`, or NULL. */
struct kgroup *kgroup_find(const struct kgroup_table *t, const char *id);
/* Find or create (EMPTY, generation 0). -ENOMEM. */
RV_MUST_CHECK int kgroup_get(struct kgroup_table *t, const char *id, struct kgroup **out);
/* Take g out of the table (it must have no waiter); the caller frees it with
 * kgroup_free once nothing refers to it. */
void kgroup_unlink(struct kgroup_table *t, struct kgroup *g);
void kgroup_free(struct kgroup *g);
/* Every group: start with *cursor = 0 and *chain = NULL; NULL at the end. The
 * table must not change during a walk. */
struct kgroup *kgroup_next(const struct kgroup_table *t, uint32_t *cursor, struct kgroup **chain);

/* ---- the protocol (now_ms: monotonic) ---------------------------------------------------- */

/* JoinGroup: w is answered now or when the rebalance completes. */
void kgroup_join(struct kgroup_env *env, struct kgroup *g, const struct kgroup_join *j,
                 struct kgroup_waiter *w, int64_t now_ms);
/* SyncGroup: w is answered now or once the leader's assignment is stored. */
void kgroup_sync(struct kgroup_env *env, struct kgroup *g, const struct kgroup_sync *s,
                 struct kgroup_waiter *w, int64_t now_ms);
/* Heartbeat: its error code. */
int16_t kgroup_heartbeat(struct kgroup_env *env, struct kgroup *g, const char *member_id,
                         const char *instance_id, int32_t generation, int64_t now_ms);
/* One member of a LeaveGroup (member_id "" with an instance id: by instance). */
int16_t kgroup_leave(struct kgroup_env *env, struct kgroup *g, const char *member_id,
                     const char *instance_id, int64_t now_ms);
/* May this OffsetCommit be written? NONE or its error; refreshes the member's
 * session. A commit with generation < 0 and no member is a "simple" one. */
int16_t kgroup_commit_check(struct kgroup_env *env, struct kgroup *g, int32_t generation,
                            const char *member_id, const char *instance_id, int64_t now_ms);
/* The owner's store finished (error NONE or a Kafka code). */
void kgroup_stored(struct kgroup_env *env, struct kgroup *g, enum kgroup_store_kind kind,
                   int32_t generation, const char *member_id, int16_t error, int64_t now_ms);
/* Run what is due by now_ms: session expiries, the end of a rebalance. */
void kgroup_tick(struct kgroup_env *env, struct kgroup *g, int64_t now_ms);
/* When kgroup_tick has something to do (INT64_MAX: nothing). */
int64_t kgroup_next_deadline(const struct kgroup *g);
/* Answer every parked join and sync with `error` (the coordinator goes away). */
void kgroup_abort_waiters(struct kgroup *g, int16_t error);
/* After loading: members restored from the log get a full session from now. */
void kgroup_loaded(struct kgroup *g, int64_t now_ms);
/* DeleteGroups: NONE (g is DEAD now), GROUP_ID_NOT_FOUND or NON_EMPTY_GROUP. */
int16_t kgroup_delete(struct kgroup *g);

/* ---- queries ------------------------------------------------------------------------- */

const char *kgroup_state_name(enum kgroup_state s);
struct kgroup_member *kgroup_member_find(const struct kgroup *g, const char *member_id);
/* A member's metadata for the group's selected protocol (len -1 when none). */
struct kgroup_bytes kgroup_member_metadata(const struct kgroup_member *m, const char *protocol);
/* A consumer group whose members subscribe to topic (or whose subscriptions
 * do not parse, as Kafka assumes). */
bool kgroup_is_subscribed(const struct kgroup *g, const char *topic);
/* Nothing is left to keep: EMPTY, no offsets, nobody waiting. */
bool kgroup_is_idle(const struct kgroup *g);

/* ---- offsets ----------------------------------------------------------------------------- */

struct kgroup_offset *kgroup_offset_find(const struct kgroup *g, const char *topic,
                                         int32_t partition);
/* Set (replace) one committed offset. -ENOMEM (nothing changed). */
RV_MUST_CHECK int kgroup_offset_put(struct kgroup *g, const char *topic, int32_t partition,
                                    int64_t offset, int32_t leader_epoch, const char *metadata,
                                    int64_t commit_ms);
void kgroup_offset_del(struct kgroup *g, const char *topic, int32_t partition);
/*
 * Offset expiry (offsets.retention.minutes, as Kafka's
 * GroupMetadata.removeExpiredOffsets since KIP-211): a group without members
 * (EMPTY) loses any offset retention_ms after the later of its commit and
 * empty_since_ms (when the group was seen empty); in a group that never had a
 * protocol (standalone consumers that only commit) it counts from the commit
 * alone. A STABLE consumer group loses, retention_ms after their commit, the
 * offsets of topics none of its members subscribes to; other groups none. Puts up to cap of them in out and returns
 * how many expired (more than cap when it does not fit). Wall clock ms.
 */
uint32_t kgroup_offsets_expired(const struct kgroup *g, int64_t now_wall_ms, int64_t retention_ms,
                                int64_t empty_since_ms, struct kgroup_offset **out, uint32_t cap);
/* Every offset: *cursor = 0 and *chain = NULL first; NULL at the end. */
struct kgroup_offset *kgroup_offset_next(const struct kgroup *g, uint32_t *cursor,
                                         struct kgroup_offset **chain);

/* ---- __consumer_offsets records ---------------------------------------------------------- */

/* The partition of __consumer_offsets a group lives in (Kafka's
 * abs(groupId.hashCode) % partitions). */
int32_t kgroup_partition_for(const char *id, size_t len, int32_t partitions);

/* Sizes and encoders of Kafka's formats: OffsetCommitKey v1, OffsetCommitValue v3,
 * GroupMetadataKey v2, GroupMetadataValue v3. Each encoder writes exactly the size
 * its _size function returned into buf. */
size_t kgroup_offset_key_size(const char *group, const char *topic);
void kgroup_offset_key_encode(uint8_t *buf, const char *group, const char *topic,
                              int32_t partition);
size_t kgroup_offset_value_size(const char *metadata);
void kgroup_offset_value_encode(uint8_t *buf, int64_t offset, int32_t leader_epoch,
                                const char *metadata, int64_t commit_ms);
size_t kgroup_group_key_size(const char *group);
void kgroup_group_key_encode(uint8_t *buf, const char *group);
size_t kgroup_group_value_size(const struct kgroup *g);
void kgroup_group_value_encode(uint8_t *buf, const struct kgroup *g, int64_t state_wall_ms);

/*
 * Apply one record of __consumer_offsets partition `partition` read back from
 * the log (value NULL, value_len -1: a tombstone): the last value of a key
 * wins. Returns 0, 1 for a record of another kind (ignored), -EBADMSG for one
 * that does not parse (ignored by the caller), -ENOMEM.
 */
RV_MUST_CHECK int kgroup_table_apply(struct kgroup_table *t, int32_t partition, const uint8_t *key,
                                     int32_t key_len, const uint8_t *value, int32_t value_len);

#endif /* RV_NET_KGROUP_H */
