/*
 * net/kapi_admin.c - the administration APIs: CreateTopics, DeleteTopics,
 * CreatePartitions, DescribeConfigs, AlterConfigs, IncrementalAlterConfigs,
 * DeleteRecords and DescribeLogDirs.
 *
 * Topic administration blocks (storage/part.h): a request checks what it can
 * on its shard, then runs the catalog changes on a helper thread
 * (rv_offload) and encodes the answer back on its shard:
 *
 *   origin: decode, check ------> helper: rv_topic_create/delete/alter/...
 *   origin: encode, send <------- helper: one result per topic or resource
 *
 * While a request is on the helper thread nothing on the shard touches it;
 * the helper writes only the result slots (error code, message, id) that the
 * shard made for it beforehand, never allocates from the request.
 *
 * DeleteRecords and DescribeLogDirs work on partition logs: as the data path
 * APIs (net/kapi_data.c), they route every partition on the origin and send
 * one work per owner shard (kapi_send_parts), which runs
 * rv_plog_delete_records or reads the log's size there.
 *
 * Topic configuration: a topic stores its full configuration (storage/topic.c)
 * and cannot tell which keys were set explicitly, so a key reads as set for
 * the topic (source DYNAMIC_TOPIC_CONFIG) when its value differs from what the
 * broker's defaults give a new topic (kapi_topic_defaults), and as a default
 * otherwise (STATIC_BROKER_CONFIG when the broker's own key was configured,
 * DEFAULT_CONFIG when not). Broker configuration is read-only: it is what
 * rivvend started with (net/config.h).
 *
 * Threading: everything here runs on the request's shard except the
 * functions named *_blocking, which run on a helper thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "core/err.h"
#include "core/trace.h"
#include "net/kapi_impl.h"
#include "storage/topic.h"

#define KADMIN_MSG_MAX 256 /* bytes of an error message, with its NUL */

/* Kafka's ConfigResource types. */
enum {
    KRES_TOPIC = 2,
    KRES_BROKER = 4,
};

/* Kafka's DescribeConfigs config sources. */
enum {
    KSRC_TOPIC = 1,         /* DYNAMIC_TOPIC_CONFIG */
    KSRC_STATIC_BROKER = 4, /* STATIC_BROKER_CONFIG */
    KSRC_DEFAULT = 5,       /* DEFAULT_CONFIG */
};

/* Kafka's DescribeConfigs config types (v3+). */
enum {
    KTYPE_BOOLEAN = 1,
    KTYPE_STRING = 2,
    KTYPE_INT = 3,
    KTYPE_LONG = 5,
    KTYPE_DOUBLE = 6,
    KTYPE_LIST = 7,
};

/* IncrementalAlterConfigs operations. */
enum {
    KOP_SET = 0,
    KOP_DELETE = 1,
    KOP_APPEND = 2,
    KOP_SUBTRACT = 3,
};

/* ---- topic configuration keys --------------------------------------------------------------- */

/* Every key a topic's configuration has (storage/topic.c), by its Kafka name. */
struct ktopic_key {
    const char *name;
    const char *broker_name; /* the broker key that gives its default */
    int8_t type;
    const char *doc;
};

static const struct ktopic_key ktopic_keys[] = {
    {"cleanup.policy", "log.cleanup.policy", KTYPE_LIST,
     "delete: old segments go by retention; compact: only the latest record of each key is "
     "kept (compact,delete: both)"},
    {"compression.type", "compression.type", KTYPE_STRING,
     "the codec batches are stored with: producer keeps the producer's"},
    {"delete.retention.ms", "log.cleaner.delete.retention.ms", KTYPE_LONG,
     "compacted topics: how long a tombstone is kept once its segment was compacted"},
    {"index.interval.bytes", "log.index.interval.bytes", KTYPE_INT,
     "bytes of log between two entries of the offset index"},
    {"max.message.bytes", "message.max.bytes", KTYPE_INT,
     "the largest record batch the topic accepts"},
    {"min.cleanable.dirty.ratio", "log.cleaner.min.cleanable.ratio", KTYPE_DOUBLE,
     "compacted topics: the share of the log written since the last pass that starts one"},
    {"message.timestamp.after.max.ms", "log.message.timestamp.after.max.ms", KTYPE_LONG,
     "CreateTime: a record timestamp this much ahead of the broker's clock is refused"},
    {"message.timestamp.before.max.ms", "log.message.timestamp.before.max.ms", KTYPE_LONG,
     "CreateTime: a record timestamp this much behind the broker's clock is refused"},
    {"message.timestamp.type", "log.message.timestamp.type", KTYPE_STRING,
     "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's clock"},
    {"retention.bytes", "log.retention.bytes", KTYPE_LONG,
     "bytes kept per partition before the oldest segments are deleted (-1: no limit)"},
    {"retention.ms", "log.retention.ms", KTYPE_LONG,
     "how long a segment is kept after its last record (-1: forever)"},
    {"segment.bytes", "log.segment.bytes", KTYPE_INT, "a segment file rolls at this size"},
    {"segment.ms", "log.roll.ms", KTYPE_LONG, "a segment file rolls at this age"},
};

static const struct ktopic_key *ktopic_key_find(const char *name)
{
    for (size_t i = 0; i < RV_ARRAY_LEN(ktopic_keys); i++) {
        if (strcmp(ktopic_keys[i].name, name) == 0)
            return &ktopic_keys[i];
    }
    return NULL;
}

/* ---- shared pieces -------------------------------------------------------------------------- */

/* One topic or resource of an admin request, and its result. */
struct kadmin_item {
    char name[RV_TOPIC_NAME_MAX + 1];
    bool has_name;    /* name holds the topic (valid) */
    bool is_to_apply; /* the helper thread acts on it */
    bool is_done;     /* the helper thread changed the catalog */
    int16_t err;      /* Kafka error code */
    uint32_t id;      /* the topic's id, when has_id */
    bool has_id;
    int32_t partitions;        /* create topics, create partitions: the count asked */
    struct rv_topic_config tc; /* create topics: the configuration */
    char msg[KADMIN_MSG_MAX];  /* "" or why err */
};

/* The broker's configuration as DescribeConfigs lists it. */
struct kbroker_key {
    const char *name;
    const char *value;
    const char *doc;
    int8_t type;
    bool is_default;
};

struct kbroker_cfg {
    char *texts[3]; /* dump, dump of the defaults, help (malloc'd) */
    struct kbroker_key *keys;
    uint32_t count;
};

/* What an admin request keeps between its stages. */
struct kadmin {
    struct kadmin_item *items;
    uint32_t count;
    bool is_validate_only;
    void (*apply)(struct rv_kreq *req, uint32_t i); /* helper thread: item i (kadmin_offload) */
    void (*encode)(struct rv_kreq *req);
    struct kbroker_cfg bc;
    bool has_bc;
};

static void kadmin_free(struct rv_kreq *req)
{
    struct kadmin *a = req->state;
    for (size_t i = 0; i < RV_ARRAY_LEN(a->bc.texts); i++)
        free(a->bc.texts[i]);
    free(a->bc.keys);
}

static struct kadmin *kadmin_new(struct rv_kreq *req, int32_t count,
                                 void (*encode)(struct rv_kreq *req))
{
    struct kadmin *a = kapi_alloc(req, sizeof(*a));
    uint32_t n = count > 0 ? (uint32_t)count : 0;
    struct kadmin_item *items = kapi_alloc(req, (n > 0 ? n : 1) * sizeof(*items));
    if (a == NULL || items == NULL)
        return NULL;
    a->items = items;
    a->count = n;
    a->encode = encode;
    req->state = a;
    req->state_free = kadmin_free;
    return a;
}

static void kadmin_err(struct kadmin_item *it, int16_t err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void kadmin_err(struct kadmin_item *it, int16_t err, const char *fmt, ...)
{
    it->err = err;
    it->is_to_apply = false;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(it->msg, sizeof(it->msg), fmt, ap);
    va_end(ap);
}

/* The last rv_errf message of this thread, without its " (ECODE: ...)" tail:
 * the error code says that already. */
static void kadmin_err_msg(struct kadmin_item *it, int16_t err, int rc)
{
    kadmin_err(it, err, "%s", rv_err_msg());
    char tail[192];
    snprintf(tail, sizeof(tail), " (%s)", rv_strerror(rc));
    size_t n = strlen(it->msg);
    size_t m = strlen(tail);
    if (n > m && strcmp(it->msg + n - m, tail) == 0)
        it->msg[n - m] = '\0';
    if (it->msg[0] == '\0')
        snprintf(it->msg, sizeof(it->msg), "%s", rv_strerror(rc));
}

/* How a change of topic it in the catalog (rv_topic_*) ended: done, or its
 * error; -EINVAL (what was asked cannot be) is einval_err. */
static void kadmin_applied(struct kadmin_item *it, int rc, int16_t einval_err)
{
    if (rc == -ENOENT)
        kadmin_err(it, KERR_UNKNOWN_TOPIC_OR_PARTITION, "The topic '%s' does not exist.", it->name);
    else if (rc == -EINVAL)
        kadmin_err_msg(it, einval_err, rc);
    else if (rc < 0)
        kadmin_err_msg(it, kapi_storage_error(rc), rc);
    else
        it->is_done = true;
}

static struct rv_kp_str kadmin_msg(const struct kadmin_item *it)
{
    return rv_kp_str_from(it->msg[0] != '\0' ? it->msg : NULL);
}

/* A non-nullable echo of a request string. */
static struct rv_kp_str kadmin_echo(struct rv_kp_str s)
{
    return s.len >= 0 ? s : (struct rv_kp_str){.ptr = "", .len = 0};
}

/* Copy a topic name; false (and the item's error) when it cannot be one. */
static bool kadmin_topic_name(struct kadmin_item *it, struct rv_kp_str s, int16_t err)
{
    if (!kapi_cstr(s, it->name, sizeof(it->name)) || !rv_topic_name_is_valid(it->name)) {
        kadmin_err(it, err,
                   "Topic name \"%.*s\" is illegal: 1..%d characters of [a-zA-Z0-9._-], "
                   "not \".\" or \"..\"",
                   s.len < 0 ? 0 : (s.len > 64 ? 64 : s.len), s.len < 0 ? "" : s.ptr,
                   RV_TOPIC_NAME_MAX);
        it->name[0] = '\0';
        return false;
    }
    it->has_name = true;
    return true;
}

/* Whether `id` is a broker (node) this broker advertises. */
static bool kadmin_is_node(const struct rv_kapi_shard *ks, int32_t id)
{
    const struct rv_config *cfg = ks->b->cfg;
    int64_t last = cfg->node_id + (cfg->is_advertise_shards ? (int64_t)ks->b->shard_count - 1 : 0);
    return id >= cfg->node_id && id <= last;
}

/* Mark every item whose name appears more than once (names[i] for item i). */
struct kadmin_sorted {
    struct rv_kp_str name;
    uint32_t index;
};

static int kadmin_sorted_cmp(const void *pa, const void *pb)
{
    const struct kadmin_sorted *a = pa, *b = pb;
    int32_t n = a->name.len < b->name.len ? a->name.len : b->name.len;
    int c = n > 0 ? memcmp(a->name.ptr, b->name.ptr, (size_t)n) : 0;
    if (c != 0)
        return c;
    return a->name.len < b->name.len ? -1 : a->name.len > b->name.len;
}

/* is_dup[i] for every name of names[0..count) (len -1: none) met twice. false: no memory. */
static bool kadmin_find_dups(struct rv_kreq *req, const struct rv_kp_str *names, uint32_t count,
                             bool *is_dup)
{
    struct kadmin_sorted *s = kapi_alloc(req, (count > 0 ? count : 1) * sizeof(*s));
    if (s == NULL)
        return false;
    uint32_t n = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (names[i].len >= 0)
            s[n++] = (struct kadmin_sorted){.name = names[i], .index = i};
    }
    qsort(s, n, sizeof(*s), kadmin_sorted_cmp);
    for (uint32_t i = 1; i < n; i++) {
        if (kadmin_sorted_cmp(&s[i - 1], &s[i]) == 0)
            is_dup[s[i - 1].index] = is_dup[s[i].index] = true;
    }
    return true;
}

/* Helper thread: every item still to apply. */
static void kadmin_apply_blocking(void *arg)
{
    struct rv_kreq *req = arg;
    struct kadmin *a = req->state;
    for (uint32_t i = 0; i < a->count; i++) {
        if (a->items[i].is_to_apply)
            a->apply(req, i);
    }
}

static void kadmin_offloaded(void *arg)
{
    struct rv_kreq *req = arg;
    struct kadmin *a = req->state;
    a->encode(req);
}

/* Run apply(req, i) on a helper thread for every item to apply, then the
 * request's encode here. */
static void kadmin_offload(struct rv_kreq *req, void (*apply)(struct rv_kreq *req, uint32_t i))
{
    struct kadmin *a = req->state;
    a->apply = apply;
    bool has_work = false;
    for (uint32_t i = 0; i < a->count; i++)
        has_work |= a->items[i].is_to_apply;
    if (!has_work) {
        a->encode(req);
        return;
    }
    int rc = rv_offload(kadmin_apply_blocking, req, kadmin_offloaded);
    if (rc < 0) {
        for (uint32_t i = 0; i < a->count; i++) {
            if (a->items[i].is_to_apply)
                kadmin_err(&a->items[i], KERR_UNKNOWN_SERVER_ERROR, "no helper thread: %s",
                           rv_strerror(rc));
        }
        a->encode(req);
    }
}

/* ---- the broker's configuration ------------------------------------------------------------- */

static char *kbroker_text(const struct rv_config *cfg, bool is_help)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return NULL;
    if (is_help)
        rv_config_help(f);
    else
        rv_config_dump(cfg, f);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* The value of `name` in a dump ("key=value" lines, cut in place), or NULL. */
static const char *kbroker_dump_find(char *const *lines, uint32_t count, const char *name)
{
    size_t n = strlen(name);
    for (uint32_t i = 0; i < count; i++) {
        if (strncmp(lines[i], name, n) == 0 && lines[i][n] == '\0')
            return lines[i] + n + 1;
    }
    return NULL;
}

/* Split a dump into lines, each cut at its '=' (lines[i] is the key, the
 * value follows its NUL). Returns the line count. */
static uint32_t kbroker_split(char *text, char **lines, uint32_t cap)
{
    uint32_t n = 0;
    for (char *line = text, *next; line != NULL && *line != '\0' && n < cap; line = next) {
        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        char *eq = strchr(line, '=');
        if (eq == NULL)
            continue;
        *eq = '\0';
        lines[n++] = line;
    }
    return n;
}

/* From the help text: each key's meaning and type ("  key=default" then
 * "      meaning [type ...]"). */
static void kbroker_help(char *text, struct kbroker_cfg *bc)
{
    for (char *line = text, *next; line != NULL && *line != '\0'; line = next) {
        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        if (strncmp(line, "  ", 2) != 0 || line[2] == ' ' || next == NULL)
            continue;
        char *eq = strchr(line + 2, '=');
        if (eq == NULL)
            continue;
        *eq = '\0';
        struct kbroker_key *k = NULL;
        for (uint32_t i = 0; i < bc->count && k == NULL; i++) {
            if (strcmp(bc->keys[i].name, line + 2) == 0)
                k = &bc->keys[i];
        }
        char *doc = next;
        next = strchr(doc, '\n');
        if (next != NULL)
            *next++ = '\0';
        while (*doc == ' ')
            doc++;
        char *bracket = strrchr(doc, '[');
        if (k == NULL || bracket == NULL)
            continue;
        bracket[bracket > doc && bracket[-1] == ' ' ? -1 : 0] = '\0';
        const char *type = bracket + 1;
        k->doc = doc;
        if (strncmp(type, "boolean", 7) == 0) {
            k->type = KTYPE_BOOLEAN;
        } else if (strncmp(type, "integer", 7) == 0) {
            const char *dots = strstr(type, "..");
            long long max = dots != NULL ? strtoll(dots + 2, NULL, 10) : INT64_MAX;
            k->type = max > INT32_MAX ? KTYPE_LONG : KTYPE_INT;
        } else if (strncmp(type, "listener list", 13) == 0) {
            k->type = KTYPE_LIST;
        } else {
            k->type = KTYPE_STRING;
        }
    }
}

/* Read the broker's configuration (its dump, its defaults' and its help). -ENOMEM. */
static int kbroker_cfg_load(struct kadmin *a, const struct rv_config *cfg)
{
    if (a->has_bc)
        return 0;
    struct kbroker_cfg *bc = &a->bc;
    struct rv_config *def = malloc(sizeof(*def));
    if (def == NULL)
        return -ENOMEM;
    rv_config_init(def);
    bc->texts[0] = kbroker_text(cfg, false);
    bc->texts[1] = kbroker_text(def, false);
    bc->texts[2] = kbroker_text(NULL, true);
    free(def);
    if (bc->texts[0] == NULL || bc->texts[1] == NULL || bc->texts[2] == NULL)
        return -ENOMEM;
    uint32_t cap = 1;
    for (const char *p = bc->texts[0]; *p != '\0'; p++)
        cap += *p == '\n';
    char **lines = calloc(2 * (size_t)cap, sizeof(*lines));
    bc->keys = calloc(cap, sizeof(*bc->keys));
    if (lines == NULL || bc->keys == NULL) {
        free(lines);
        return -ENOMEM;
    }
    uint32_t n = kbroker_split(bc->texts[0], lines, cap);
    uint32_t nd = kbroker_split(bc->texts[1], lines + cap, cap);
    for (uint32_t i = 0; i < n; i++) {
        const char *value = lines[i] + strlen(lines[i]) + 1;
        const char *dv = kbroker_dump_find(lines + cap, nd, lines[i]);
        bc->keys[i] = (struct kbroker_key){.name = lines[i],
                                           .value = value,
                                           .type = KTYPE_STRING,
                                           .is_default = dv != NULL && strcmp(dv, value) == 0};
    }
    bc->count = n;
    free(lines);
    kbroker_help(bc->texts[2], bc);
    a->has_bc = true;
    return 0;
}

static const struct kbroker_key *kbroker_find(const struct kbroker_cfg *bc, const char *name)
{
    for (uint32_t i = 0; i < bc->count; i++) {
        if (strcmp(bc->keys[i].name, name) == 0)
            return &bc->keys[i];
    }
    return NULL;
}

/* ---- configuration entries (DescribeConfigs, CreateTopics v5+) ------------------------------ */

struct kcfg_synonym {
    const char *name;
    const char *value;
    int8_t source;
};

struct kcfg_entry {
    const char *name;
    const char *value;
    const char *doc;
    int8_t source;
    int8_t type;
    bool is_read_only;
    uint32_t synonym_count;
    struct kcfg_synonym synonyms[2];
};

/* A copy of s that lives as long as the request (NULL: no memory). */
static const char *kadmin_strdup(struct rv_kreq *req, const char *s)
{
    size_t n = strlen(s);
    char *p = kapi_alloc(req, n + 1);
    if (p != NULL)
        memcpy(p, s, n + 1);
    return p;
}

/* Every key of a topic's configuration tc. -ENOMEM. */
static int kcfg_topic_entries(struct rv_kreq *req, const struct rv_topic_config *tc,
                              struct kcfg_entry *out)
{
    struct kadmin *a = req->state;
    int rc = kbroker_cfg_load(a, req->ks->b->cfg);
    if (rc < 0)
        return rc;
    struct rv_topic_config def;
    kapi_topic_defaults(req->ks->b, &def);
    struct rv_topic_config plain;
    rv_topic_config_init(&plain);
    for (size_t i = 0; i < RV_ARRAY_LEN(ktopic_keys); i++) {
        const struct ktopic_key *k = &ktopic_keys[i];
        char value[64], dvalue[64];
        int grc = rv_topic_config_get(tc, k->name, value, sizeof(value));
        RV_ASSERT(grc == 0); /* every key of the table is storage's */
        grc = rv_topic_config_get(&def, k->name, dvalue, sizeof(dvalue));
        RV_ASSERT(grc == 0);
        const struct kbroker_key *bk = kbroker_find(&a->bc, k->broker_name);
        bool is_set = strcmp(value, dvalue) != 0;
        int8_t def_source = bk != NULL && !bk->is_default ? KSRC_STATIC_BROKER : KSRC_DEFAULT;
        struct kcfg_entry *e = &out[i];
        *e = (struct kcfg_entry){.name = k->name,
                                 .value = kadmin_strdup(req, value),
                                 .doc = k->doc,
                                 .source = is_set ? KSRC_TOPIC : def_source,
                                 .type = k->type};
        if (e->value == NULL)
            return -ENOMEM;
        if (is_set)
            e->synonyms[e->synonym_count++] =
                (struct kcfg_synonym){.name = k->name, .value = e->value, .source = KSRC_TOPIC};
        /* The broker's key, or the value storage would give without one. */
        if (bk == NULL) {
            char pvalue[64];
            grc = rv_topic_config_get(&plain, k->name, pvalue, sizeof(pvalue));
            RV_ASSERT(grc == 0);
            e->synonyms[e->synonym_count++] =
                (struct kcfg_synonym){.name = k->broker_name,
                                      .value = kadmin_strdup(req, pvalue),
                                      .source = KSRC_DEFAULT};
            if (e->synonyms[e->synonym_count - 1].value == NULL)
                return -ENOMEM;
        } else {
            e->synonyms[e->synonym_count++] =
                (struct kcfg_synonym){.name = bk->name, .value = bk->value, .source = def_source};
        }
    }
    return 0;
}

static void kcfg_broker_entry(const struct kbroker_key *k, struct kcfg_entry *e)
{
    int8_t source = k->is_default ? KSRC_DEFAULT : KSRC_STATIC_BROKER;
    *e = (struct kcfg_entry){.name = k->name,
                             .value = k->value,
                             .doc = k->doc,
                             .source = source,
                             .type = k->type,
                             .is_read_only = true,
                             .synonym_count = 1};
    e->synonyms[0] = (struct kcfg_synonym){.name = k->name, .value = k->value, .source = source};
}

/* ---- CreateTopics --------------------------------------------------------------------------- */

/* Check the partition count, replication and assignment of topic ct. */
static bool kadmin_create_layout(struct rv_kreq *req, struct kadmin_item *it,
                                 const struct rv_kp_create_topics_request_creatable_topic *ct)
{
    const struct rv_config *cfg = req->ks->b->cfg;
    int32_t assigned = ct->assignments.count > 0 ? ct->assignments.count : 0;
    if (assigned > 0 && (ct->num_partitions != -1 || ct->replication_factor != -1)) {
        kadmin_err(it, KERR_INVALID_REQUEST,
                   "Both numPartitions or replicationFactor and replicasAssignments were set. "
                   "Both cannot be used at the same time.");
        return false;
    }
    if (ct->replication_factor != -1 && ct->replication_factor <= 0) {
        kadmin_err(it, KERR_INVALID_REPLICATION_FACTOR,
                   "Replication factor must be larger than 0, or -1 to use the default value.");
        return false;
    }
    if (ct->replication_factor > 1) {
        kadmin_err(it, KERR_INVALID_REPLICATION_FACTOR,
                   "Replication factor: %d larger than 1: rivven keeps one copy of each "
                   "partition.",
                   ct->replication_factor);
        return false;
    }
    if (assigned == 0) {
        if (ct->num_partitions == -1) {
            it->partitions = cfg->num_partitions;
        } else if (ct->num_partitions <= 0) {
            kadmin_err(it, KERR_INVALID_PARTITIONS,
                       "Number of partitions was set to an invalid non-positive value.");
            return false;
        } else {
            it->partitions = ct->num_partitions;
        }
    } else {
        /* A manual assignment: partitions 0..n-1, each on one of our brokers.
         * Placement follows rivven's partition hash, whichever broker is named. */
        bool *seen = kapi_alloc(req, (size_t)assigned);
        if (seen == NULL) {
            kadmin_err(it, KERR_UNKNOWN_SERVER_ERROR, "no memory");
            return false;
        }
        for (int32_t i = 0; i < assigned; i++) {
            const struct rv_kp_create_topics_request_creatable_replica_assignment *as =
                &ct->assignments.items[i];
            int32_t p = as->partition_index;
            if (p < 0 || p >= assigned || seen[p]) {
                kadmin_err(it, KERR_INVALID_REPLICA_ASSIGNMENT,
                           "Partitions should be a consecutive 0-based integer sequence (partition "
                           "%d).",
                           p);
                return false;
            }
            seen[p] = true;
            if (as->broker_ids.count != 1) {
                kadmin_err(it, KERR_INVALID_REPLICA_ASSIGNMENT,
                           "Partition %d has %d replicas: rivven keeps one copy of each partition.",
                           p, as->broker_ids.count < 0 ? 0 : as->broker_ids.count);
                return false;
            }
            if (!kadmin_is_node(req->ks, as->broker_ids.items[0])) {
                kadmin_err(it, KERR_INVALID_REPLICA_ASSIGNMENT,
                           "The manual partition assignment includes broker %d, but no such "
                           "broker is registered.",
                           as->broker_ids.items[0]);
                return false;
            }
        }
        it->partitions = assigned;
    }
    if (it->partitions > RV_TOPIC_PARTITIONS_MAX) {
        kadmin_err(it, KERR_INVALID_PARTITIONS, "Number of partitions %d: at most %d.",
                   it->partitions, RV_TOPIC_PARTITIONS_MAX);
        return false;
    }
    return true;
}

/* A topic configuration key from the wire into key[128]; false (item's error)
 * when it is not one. */
static bool kadmin_config_key(struct kadmin_item *it, struct rv_kp_str name, char *key)
{
    if (!kapi_cstr(name, key, 128) || ktopic_key_find(key) == NULL) {
        kadmin_err(it, KERR_INVALID_CONFIG, "Unknown topic config name: %.*s",
                   name.len < 0 ? 0 : (name.len > 100 ? 100 : name.len),
                   name.len < 0 ? "" : name.ptr);
        return false;
    }
    return true;
}

/* Set one topic configuration key from the wire; false (item's error) when it
 * cannot be. */
static bool kadmin_config_set(struct kadmin_item *it, struct rv_topic_config *tc,
                              struct rv_kp_str name, struct rv_kp_str value)
{
    char key[128];
    char text[256];
    if (!kadmin_config_key(it, name, key))
        return false;
    if (value.len < 0) {
        kadmin_err(it, KERR_INVALID_CONFIG, "Null value not supported for topic configs: %s", key);
        return false;
    }
    if (!kapi_cstr(value, text, sizeof(text))) {
        kadmin_err(it, KERR_INVALID_CONFIG, "Invalid value for configuration %s: too long", key);
        return false;
    }
    int rc = rv_topic_config_set(tc, key, text);
    if (rc < 0) {
        kadmin_err_msg(it, KERR_INVALID_CONFIG, rc);
        return false;
    }
    return true;
}

/* Helper thread: create topic i. */
static void kadmin_create_blocking(struct rv_kreq *req, uint32_t i)
{
    struct kadmin_item *it = &((struct kadmin *)req->state)->items[i];
    rv_store_t *st = req->ks->b->st;
    char other[RV_TOPIC_NAME_MAX + 1];
    if (kapi_topic_collides(st, it->name, other)) {
        kadmin_err(it, KERR_INVALID_TOPIC_EXCEPTION, "Topic '%s' collides with existing topic: %s",
                   it->name, other);
        return;
    }
    int rc = rv_topic_create(st, it->name, &it->tc);
    if (rc == -EEXIST) {
        kadmin_err(it, KERR_TOPIC_ALREADY_EXISTS, "Topic '%s' already exists.", it->name);
        return;
    }
    if (rc < 0) {
        kadmin_err_msg(it, rc == -EINVAL ? KERR_INVALID_CONFIG : kapi_storage_error(rc), rc);
        return;
    }
    it->is_done = true;
    struct rv_store_topic_info info;
    if (rv_store_topic_info(st, it->name, strlen(it->name), &info) == 0) {
        it->id = info.id;
        it->has_id = true;
    }
}

static void kapi_create_topics_encode(struct rv_kreq *req)
{
    struct kadmin *a = req->state;
    const struct rv_kp_create_topics_request *cr = req->msg;
    struct rv_kp_create_topics_response resp;
    rv_kp_create_topics_response_init(&resp);
    resp.topics.count = (int32_t)a->count;
    resp.topics.items = kapi_alloc(req, (a->count > 0 ? a->count : 1) * sizeof(*resp.topics.items));
    if (resp.topics.items == NULL) {
        kapi_fail(req, "no memory for a create topics response");
        return;
    }
    for (uint32_t i = 0; i < a->count; i++) {
        const struct kadmin_item *it = &a->items[i];
        struct rv_kp_create_topics_response_creatable_topic_result *r = &resp.topics.items[i];
        rv_kp_create_topics_response_creatable_topic_result_init(r);
        r->name = kadmin_echo(cr->topics.items[i].name);
        r->error_code = it->err;
        r->error_message = kadmin_msg(it);
        if (it->has_id)
            r->topic_id = kapi_topic_uuid(it->id, it->name);
        if (it->err != 0 || req->version < 5)
            continue;
        r->num_partitions = it->partitions;
        r->replication_factor = 1;
        struct kcfg_entry e[RV_ARRAY_LEN(ktopic_keys)];
        r->configs.items = kapi_alloc(req, RV_ARRAY_LEN(e) * sizeof(*r->configs.items));
        if (r->configs.items == NULL || kcfg_topic_entries(req, &it->tc, e) < 0) {
            kapi_fail(req, "no memory for a create topics response");
            return;
        }
        r->configs.count = (int32_t)RV_ARRAY_LEN(e);
        for (size_t k = 0; k < RV_ARRAY_LEN(e); k++) {
            struct rv_kp_create_topics_response_creatable_topic_configs *c = &r->configs.items[k];
            rv_kp_create_topics_response_creatable_topic_configs_init(c);
            c->name = rv_kp_str_from(e[k].name);
            c->value = rv_kp_str_from(e[k].value);
            c->read_only = e[k].is_read_only;
            c->config_source = e[k].source;
        }
    }
    kapi_respond(req, &rv_kp_create_topics_response_desc, &resp);
}

void kapi_create_topics(struct rv_kreq *req)
{
    const struct rv_kp_create_topics_request *cr = req->msg;
    const struct rv_kapi_broker *b = req->ks->b;
    struct kadmin *a = kadmin_new(req, cr->topics.count, kapi_create_topics_encode);
    struct rv_kp_str *names = kapi_alloc(req, (a != NULL ? a->count + 1 : 1) * sizeof(*names));
    bool *is_dup = kapi_alloc(req, a != NULL ? a->count + 1 : 1);
    if (a == NULL || names == NULL || is_dup == NULL) {
        kapi_fail(req, "no memory for a create topics request");
        return;
    }
    a->is_validate_only = req->version >= 1 && cr->validate_only;
    for (uint32_t i = 0; i < a->count; i++)
        names[i] = cr->topics.items[i].name;
    if (!kadmin_find_dups(req, names, a->count, is_dup)) {
        kapi_fail(req, "no memory for a create topics request");
        return;
    }
    for (uint32_t i = 0; i < a->count; i++) {
        const struct rv_kp_create_topics_request_creatable_topic *ct = &cr->topics.items[i];
        struct kadmin_item *it = &a->items[i];
        struct rv_store_topic_info info;
        if (is_dup[i]) {
            kadmin_err(it, KERR_INVALID_REQUEST,
                       "Create topics request contains multiple entries for the topic %.*s",
                       ct->name.len > 100 ? 100 : ct->name.len, ct->name.ptr);
            continue;
        }
        if (!kadmin_topic_name(it, ct->name, KERR_INVALID_TOPIC_EXCEPTION))
            continue;
        if (rv_store_topic_info(b->st, it->name, strlen(it->name), &info) == 0) {
            kadmin_err(it, KERR_TOPIC_ALREADY_EXISTS, "Topic '%s' already exists.", it->name);
            continue;
        }
        if (!kadmin_create_layout(req, it, ct))
            continue;
        kapi_topic_defaults(b, &it->tc);
        it->tc.partitions = it->partitions;
        bool is_ok = true;
        for (int32_t k = 0; k < ct->configs.count && is_ok; k++)
            is_ok = kadmin_config_set(it, &it->tc, ct->configs.items[k].name,
                                      ct->configs.items[k].value);
        if (!is_ok)
            continue;
        int rc = rv_topic_config_check(&it->tc);
        if (rc < 0) {
            kadmin_err_msg(it, KERR_INVALID_CONFIG, rc);
            continue;
        }
        it->is_to_apply = !a->is_validate_only;
    }
    kadmin_offload(req, kadmin_create_blocking);
}

/* ---- DeleteTopics --------------------------------------------------------------------------- */

/* Helper thread: delete topic i. */
static void kadmin_delete_blocking(struct rv_kreq *req, uint32_t i)
{
    struct kadmin_item *it = &((struct kadmin *)req->state)->items[i];
    int rc = rv_topic_delete(req->ks->b->st, it->name);
    if (rc == -ENOENT)
        kadmin_err(it, KERR_UNKNOWN_TOPIC_OR_PARTITION,
                   "This server does not host this topic-partition.");
    else if (rc < 0)
        kadmin_err_msg(it, kapi_storage_error(rc), rc);
    else
        it->is_done = true;
}

static void kapi_delete_topics_encode(struct rv_kreq *req)
{
    struct kadmin *a = req->state;
    const struct rv_kp_delete_topics_request *dr = req->msg;
    struct rv_kp_delete_topics_response resp;
    rv_kp_delete_topics_response_init(&resp);
    resp.responses.count = (int32_t)a->count;
    resp.responses.items =
        kapi_alloc(req, (a->count > 0 ? a->count : 1) * sizeof(*resp.responses.items));
    if (resp.responses.items == NULL) {
        kapi_fail(req, "no memory for a delete topics response");
        return;
    }
    for (uint32_t i = 0; i < a->count; i++) {
        const struct kadmin_item *it = &a->items[i];
        struct rv_kp_delete_topics_response_deletable_topic_result *r = &resp.responses.items[i];
        rv_kp_delete_topics_response_deletable_topic_result_init(r);
        r->error_code = it->err;
        r->error_message = kadmin_msg(it);
        if (req->version < 6) {
            r->name = kadmin_echo(dr->topic_names.items[i]);
            continue;
        }
        r->name = it->has_name ? rv_kp_str_from(it->name) : dr->topics.items[i].name;
        r->topic_id = it->has_id ? kapi_topic_uuid(it->id, it->name) : dr->topics.items[i].topic_id;
    }
    kapi_respond(req, &rv_kp_delete_topics_response_desc, &resp);
}

/* The broker's own topics are not deleted (their partitions place groups). */
static void kadmin_keep_internal(struct kadmin *a)
{
    for (uint32_t i = 0; i < a->count; i++) {
        struct kadmin_item *it = &a->items[i];
        if (it->is_to_apply && kapi_is_internal(it->name))
            kadmin_err(it, KERR_INVALID_REQUEST, "Topic %s is internal: it cannot be deleted.",
                       it->name);
    }
}

/* Find the topic that item i of a delete topics request names (by name, or
 * from v6 by id): its name into it->name, its catalog entry into info. false
 * (and the item's error) when there is none to delete. */
static bool kadmin_delete_find(struct rv_kreq *req, struct kadmin_item *it, uint32_t i,
                               struct rv_store_topic_info *info)
{
    const struct rv_kp_delete_topics_request *dr = req->msg;
    struct rv_kp_str name = req->version >= 6 ? dr->topics.items[i].name : dr->topic_names.items[i];
    if (req->version >= 6) {
        const struct rv_kp_uuid *id = &dr->topics.items[i].topic_id;
        bool has_id = !rv_kp_uuid_is_zero(id);
        if (name.len >= 0 && has_id) {
            kadmin_err(it, KERR_INVALID_REQUEST,
                       "You may not specify both topic name and topic id.");
            return false;
        }
        if (name.len < 0) {
            if (!has_id || kapi_topic_by_uuid(req->ks, id, it->name, info) < 0) {
                kadmin_err(it, KERR_UNKNOWN_TOPIC_ID, "This server does not host this topic ID.");
                return false;
            }
            return true;
        }
    }
    if (!kapi_cstr(name, it->name, sizeof(it->name)) ||
        rv_store_topic_info(req->ks->b->st, it->name, strlen(it->name), info) < 0) {
        kadmin_err(it, KERR_UNKNOWN_TOPIC_OR_PARTITION,
                   "This server does not host this topic-partition.");
        it->name[0] = '\0';
        return false;
    }
    return true;
}

void kapi_delete_topics(struct rv_kreq *req)
{
    const struct rv_kp_delete_topics_request *dr = req->msg;
    int32_t count = req->version >= 6 ? dr->topics.count : dr->topic_names.count;
    struct kadmin *a = kadmin_new(req, count, kapi_delete_topics_encode);
    struct rv_kp_str *names = kapi_alloc(req, (a != NULL ? a->count + 1 : 1) * sizeof(*names));
    bool *is_dup = kapi_alloc(req, a != NULL ? a->count + 1 : 1);
    if (a == NULL || names == NULL || is_dup == NULL) {
        kapi_fail(req, "no memory for a delete topics request");
        return;
    }
    for (uint32_t i = 0; i < a->count; i++) {
        struct kadmin_item *it = &a->items[i];
        struct rv_store_topic_info info;
        names[i] = (struct rv_kp_str){.ptr = NULL, .len = -1};
        if (!kadmin_delete_find(req, it, i, &info))
            continue;
        it->has_name = true;
        it->id = info.id;
        it->has_id = true;
        it->is_to_apply = true;
        names[i] = rv_kp_str_from(it->name);
    }
    kadmin_keep_internal(a);
    if (!kadmin_find_dups(req, names, a->count, is_dup)) {
        kapi_fail(req, "no memory for a delete topics request");
        return;
    }
    for (uint32_t i = 0; i < a->count; i++) {
        if (is_dup[i])
            kadmin_err(&a->items[i], KERR_INVALID_REQUEST, "Duplicate topic in request: %s",
                       a->items[i].name);
    }
    kadmin_offload(req, kadmin_delete_blocking);
}

/* ---- CreatePartitions ----------------------------------------------------------------------- */

/* Helper thread: add the partitions topic i asks for. */
static void kadmin_partitions_blocking(struct rv_kreq *req, uint32_t i)
{
    struct kadmin_item *it = &((struct kadmin *)req->state)->items[i];
    int rc = rv_topic_add_partitions(req->ks->b->st, it->name, it->partitions);
    kadmin_applied(it, rc, KERR_INVALID_PARTITIONS);
}

static void kapi_create_partitions_encode(struct rv_kreq *req)
{
    struct kadmin *a = req->state;
    const struct rv_kp_create_partitions_request *cr = req->msg;
    struct rv_kp_create_partitions_response resp;
    rv_kp_create_partitions_response_init(&resp);
    resp.results.count = (int32_t)a->count;
    resp.results.items =
        kapi_alloc(req, (a->count > 0 ? a->count : 1) * sizeof(*resp.results.items));
    if (resp.results.items == NULL) {
        kapi_fail(req, "no memory for a create partitions response");
        return;
    }
    for (uint32_t i = 0; i < a->count; i++) {
        struct rv_kp_create_partitions_response_topic_result *r = &resp.results.items[i];
        rv_kp_create_partitions_response_topic_result_init(r);
        r->name = kadmin_echo(cr->topics.items[i].name);
        r->error_code = a->items[i].err;
        r->error_message = kadmin_msg(&a->items[i]);
    }
    kapi_respond(req, &rv_kp_create_partitions_response_desc, &resp);
}

/* Whether topic it may go from `have` to `want` partitions (else its error). */
static bool kadmin_partitions_may_grow(struct kadmin_item *it, int32_t want, int32_t have)
{
    if (kapi_is_internal(it->name)) /* its partitions place the groups */
        kadmin_err(it, KERR_INVALID_REQUEST, "Topic %s is internal: its partitions are fixed.",
                   it->name);
    else if (want < have)
        kadmin_err(it, KERR_INVALID_PARTITIONS,
                   "Topic currently has %d partitions, which is higher than the requested %d.",
                   have, want);
    else if (want == have)
        kadmin_err(it, KERR_INVALID_PARTITIONS, "Topic already has %d partitions.", have);
    else if (want > RV_TOPIC_PARTITIONS_MAX)
        kadmin_err(it, KERR_INVALID_PARTITIONS, "Number of partitions %d: at most %d.", want,
                   RV_TOPIC_PARTITIONS_MAX);
    else
        return true;
    return false;
}

void kapi_create_partitions(struct rv_kreq *req)
{
    const struct rv_kp_create_partitions_request *cr = req->msg;
    const struct rv_kapi_broker *b = req->ks->b;
    struct kadmin *a = kadmin_new(req, cr->topics.count, kapi_create_partitions_encode);
    struct rv_kp_str *names = kapi_alloc(req, (a != NULL ? a->count + 1 : 1) * sizeof(*names));
    bool *is_dup = kapi_alloc(req, a != NULL ? a->count + 1 : 1);
    if (a == NULL || names == NULL || is_dup == NULL) {
        kapi_fail(req, "no memory for a create partitions request");
        return;
    }
    for (uint32_t i = 0; i < a->count; i++)
        names[i] = cr->topics.items[i].name;
    if (!kadmin_find_dups(req, names, a->count, is_dup)) {
        kapi_fail(req, "no memory for a create partitions request");
        return;
    }
    a->is_validate_only = cr->validate_only;
    for (uint32_t i = 0; i < a->count; i++) {
        const struct rv_kp_create_partitions_request_topic *ct = &cr->topics.items[i];
        struct kadmin_item *it = &a->items[i];
        struct rv_store_topic_info info;
        if (is_dup[i]) {
            kadmin_err(it, KERR_INVALID_REQUEST, "Duplicate topic in request.");
            continue;
        }
        if (!kapi_cstr(ct->name, it->name, sizeof(it->name)) ||
            rv_store_topic_info(b->st, it->name, strlen(it->name), &info) < 0) {
            kadmin_err(it, KERR_UNKNOWN_TOPIC_OR_PARTITION, "The topic '%.*s' does not exist.",
                       ct->name.len < 0 ? 0 : (ct->name.len > 100 ? 100 : ct->name.len),
                       ct->name.len < 0 ? "" : ct->name.ptr);
            continue;
        }
        it->has_name = true;
        if (!kadmin_partitions_may_grow(it, ct->count, info.partitions))
            continue;
        int32_t added = ct->count - info.partitions;
        if (ct->assignments.count >= 0) {
            if (ct->assignments.count != added) {
                kadmin_err(it, KERR_INVALID_REPLICA_ASSIGNMENT,
                           "Increasing the number of partitions by %d but %d assignments "
                           "provided.",
                           added, ct->assignments.count);
                continue;
            }
            bool is_ok = true;
            for (int32_t k = 0; k < added && is_ok; k++) {
                const struct rv_kp_arr_i32 *ids = &ct->assignments.items[k].broker_ids;
                is_ok = ids->count == 1 && kadmin_is_node(req->ks, ids->items[0]);
            }
            if (!is_ok) {
                kadmin_err(it, KERR_INVALID_REPLICA_ASSIGNMENT,
                           "Each new partition takes one of this cluster's brokers: rivven keeps "
                           "one copy of each partition.");
                continue;
            }
        }
        it->partitions = ct->count;
        it->is_to_apply = !a->is_validate_only;
    }
    kadmin_offload(req, kadmin_partitions_blocking);
}

/* ---- DescribeConfigs ------------------------------------------------------------------------ */

/* A broker resource name: "" (the cluster's defaults) or one of our node ids. */
static bool kadmin_broker_name(struct rv_kreq *req, struct kadmin_item *it, struct rv_kp_str s,
                               bool *out_is_cluster)
{
    char text[16];
    *out_is_cluster = s.len == 0;
    if (s.len == 0)
        return true;
    char *end = NULL;
    long id = -1;
    if (kapi_cstr(s, text, sizeof(text)) && text[0] != '\0') {
        errno = 0;
        id = strtol(text, &end, 10);
        if (errno != 0 || *end != '\0')
            id = -1;
    }
    if (id < 0 || id > INT32_MAX) {
        kadmin_err(it, KERR_INVALID_REQUEST, "Broker id must be an integer, not \"%.*s\"",
                   s.len < 0 ? 0 : (s.len > 32 ? 32 : s.len), s.len < 0 ? "" : s.ptr);
        return false;
    }
    if (!kadmin_is_node(req->ks, (int32_t)id)) {
        kadmin_err(it, KERR_INVALID_REQUEST, "Unexpected broker id, received %ld", id);
        return false;
    }
    return true;
}

/* Whether key is asked for (keys null: every one). */
static bool kadmin_key_wanted(const struct rv_kp_arr_str *keys, const char *name)
{
    if (keys->count < 0)
        return true;
    struct rv_kp_str s = rv_kp_str_from(name);
    for (int32_t i = 0; i < keys->count; i++) {
        if (rv_kp_str_eq(keys->items[i], s))
            return true;
    }
    return false;
}

/* Fill r->configs from entries e[0..n) that the resource asks for. */
static int kadmin_describe_fill(struct rv_kreq *req,
                                const struct rv_kp_describe_configs_request_resource *res,
                                struct rv_kp_describe_configs_response_result *r,
                                const struct kcfg_entry *e, uint32_t n)
{
    const struct rv_kp_describe_configs_request *dr = req->msg;
    r->configs.items = kapi_alloc(req, (n > 0 ? n : 1) * sizeof(*r->configs.items));
    if (r->configs.items == NULL)
        return -ENOMEM;
    int32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!kadmin_key_wanted(&res->configuration_keys, e[i].name))
            continue;
        struct rv_kp_describe_configs_response_resource_result *c = &r->configs.items[k++];
        rv_kp_describe_configs_response_resource_result_init(c);
        c->name = rv_kp_str_from(e[i].name);
        c->value = rv_kp_str_from(e[i].value);
        c->read_only = e[i].is_read_only;
        c->is_default = req->version == 0 && e[i].source == KSRC_DEFAULT; /* v0 only */
        c->config_source = e[i].source;
        c->config_type = e[i].type;
        c->documentation =
            rv_kp_str_from(req->version >= 3 && dr->include_documentation ? e[i].doc : NULL);
        if (req->version >= 1 && dr->include_synonyms && e[i].synonym_count > 0) {
            c->synonyms.items = kapi_alloc(req, e[i].synonym_count * sizeof(*c->synonyms.items));
            if (c->synonyms.items == NULL)
                return -ENOMEM;
            c->synonyms.count = (int32_t)e[i].synonym_count;
            for (uint32_t s = 0; s < e[i].synonym_count; s++) {
                rv_kp_describe_configs_response_synonym_init(&c->synonyms.items[s]);
                c->synonyms.items[s].name = rv_kp_str_from(e[i].synonyms[s].name);
                c->synonyms.items[s].value = rv_kp_str_from(e[i].synonyms[s].value);
                c->synonyms.items[s].source = e[i].synonyms[s].source;
            }
        }
    }
    r->configs.count = k;
    return 0;
}

void kapi_describe_configs(struct rv_kreq *req)
{
    const struct rv_kp_describe_configs_request *dr = req->msg;
    const struct rv_kapi_broker *b = req->ks->b;
    struct kadmin *a = kadmin_new(req, dr->resources.count, NULL);
    struct rv_kp_describe_configs_response resp;
    rv_kp_describe_configs_response_init(&resp);
    resp.results.items =
        a != NULL ? kapi_alloc(req, (a->count > 0 ? a->count : 1) * sizeof(*resp.results.items))
                  : NULL;
    if (resp.results.items == NULL || kbroker_cfg_load(a, b->cfg) < 0) {
        kapi_fail(req, "no memory for a describe configs request");
        return;
    }
    resp.results.count = (int32_t)a->count;
    for (uint32_t i = 0; i < a->count; i++) {
        const struct rv_kp_describe_configs_request_resource *res = &dr->resources.items[i];
        struct rv_kp_describe_configs_response_result *r = &resp.results.items[i];
        struct kadmin_item *it = &a->items[i];
        rv_kp_describe_configs_response_result_init(r);
        r->resource_type = res->resource_type;
        r->resource_name = kadmin_echo(res->resource_name);
        int rc = 0;
        if (res->resource_type == KRES_TOPIC) {
            struct rv_store_topic_info info;
            if (!kadmin_topic_name(it, res->resource_name, KERR_INVALID_TOPIC_EXCEPTION)) {
                /* it->err set */
            } else if (rv_store_topic_info(b->st, it->name, strlen(it->name), &info) < 0) {
                kadmin_err(it, KERR_UNKNOWN_TOPIC_OR_PARTITION, "The topic '%s' does not exist.",
                           it->name);
            } else {
                struct kcfg_entry e[RV_ARRAY_LEN(ktopic_keys)];
                rc = kcfg_topic_entries(req, &info.cfg, e);
                if (rc == 0)
                    rc = kadmin_describe_fill(req, res, r, e, RV_ARRAY_LEN(e));
            }
        } else if (res->resource_type == KRES_BROKER) {
            bool is_cluster = false;
            if (kadmin_broker_name(req, it, res->resource_name, &is_cluster)) {
                /* The cluster's dynamic defaults: there are none. */
                uint32_t n = is_cluster ? 0 : a->bc.count;
                struct kcfg_entry *e = kapi_alloc(req, (n > 0 ? n : 1) * sizeof(*e));
                rc = e != NULL ? 0 : -ENOMEM;
                for (uint32_t k = 0; k < n && rc == 0; k++)
                    kcfg_broker_entry(&a->bc.keys[k], &e[k]);
                if (rc == 0)
                    rc = kadmin_describe_fill(req, res, r, e, n);
            }
        } else {
            kadmin_err(it, KERR_INVALID_REQUEST, "Unsupported resource type: %d",
                       res->resource_type);
        }
        if (rc < 0) {
            kapi_fail(req, "no memory for a describe configs response");
            return;
        }
        r->error_code = it->err;
        r->error_message = kadmin_msg(it);
    }
    kapi_respond(req, &rv_kp_describe_configs_response_desc, &resp);
}

/* ---- AlterConfigs and IncrementalAlterConfigs ----------------------------------------------- */

/* cleanup.policy as a list: APPEND or SUBTRACT value's elements. */
static bool kadmin_policy_edit(struct kadmin_item *it, struct rv_topic_config *tc, int8_t op,
                               const char *value)
{
    bool has_delete = strstr(tc->cleanup_policy, "delete") != NULL;
    bool has_compact = strstr(tc->cleanup_policy, "compact") != NULL;
    char list[256];
    snprintf(list, sizeof(list), "%s", value);
    char *save = NULL;
    for (char *w = strtok_r(list, ",", &save); w != NULL; w = strtok_r(NULL, ",", &save)) {
        while (*w == ' ')
            w++;
        size_t n = strlen(w);
        while (n > 0 && w[n - 1] == ' ')
            w[--n] = '\0';
        bool *flag = strcmp(w, "delete") == 0    ? &has_delete
                     : strcmp(w, "compact") == 0 ? &has_compact
                                                 : NULL;
        if (flag == NULL) {
            kadmin_err(it, KERR_INVALID_CONFIG, "Invalid value %s for configuration cleanup.policy",
                       w);
            return false;
        }
        *flag = op == KOP_APPEND;
    }
    if (!has_delete && !has_compact) {
        kadmin_err(it, KERR_INVALID_CONFIG, "cleanup.policy cannot be empty");
        return false;
    }
    const char *policy = has_delete && has_compact ? "compact,delete"
                         : has_delete              ? "delete"
                                                   : "compact";
    int rc = rv_topic_config_set(tc, "cleanup.policy", policy);
    RV_ASSERT(rc == 0); /* one of storage's words */
    return true;
}

/* One IncrementalAlterConfigs operation on tc. */
static bool
kadmin_incremental_op(const struct rv_kapi_broker *b, struct kadmin_item *it,
                      struct rv_topic_config *tc,
                      const struct rv_kp_incremental_alter_configs_request_alterable_config *op)
{
    char key[128];
    if (op->config_operation < KOP_SET || op->config_operation > KOP_SUBTRACT) {
        kadmin_err(it, KERR_INVALID_REQUEST, "Unknown config operation %d", op->config_operation);
        return false;
    }
    if (!kadmin_config_key(it, op->name, key))
        return false;
    if (op->config_operation != KOP_DELETE && op->value.len < 0) {
        kadmin_err(it, KERR_INVALID_REQUEST, "Null value not supported for : %s", key);
        return false;
    }
    if (op->config_operation == KOP_SET)
        return kadmin_config_set(it, tc, op->name, op->value);
    if (op->config_operation == KOP_DELETE) {
        struct rv_topic_config def;
        char value[64];
        kapi_topic_defaults(b, &def);
        int rc = rv_topic_config_get(&def, key, value, sizeof(value));
        if (rc == 0)
            rc = rv_topic_config_set(tc, key, value);
        RV_ASSERT(rc == 0); /* a default of a known key */
        return true;
    }
    if (strcmp(key, "cleanup.policy") != 0) {
        kadmin_err(it, KERR_INVALID_CONFIG, "Config value %s is not allowed for config key: %s",
                   op->config_operation == KOP_APPEND ? "append" : "subtract", key);
        return false;
    }
    char value[256];
    if (!kapi_cstr(op->value, value, sizeof(value))) {
        kadmin_err(it, KERR_INVALID_CONFIG, "Invalid value for configuration %s", key);
        return false;
    }
    return kadmin_policy_edit(it, tc, op->config_operation, value);
}

/* Whether the configs of a resource name one key twice (names[0..n)). */
static bool kadmin_has_dup_keys(const struct rv_kp_str *names, size_t stride, int32_t n)
{
    for (int32_t i = 0; i < n; i++) {
        const struct rv_kp_str *x = (const struct rv_kp_str *)((const char *)names + i * stride);
        for (int32_t k = 0; k < i; k++) {
            const struct rv_kp_str *y =
                (const struct rv_kp_str *)((const char *)names + k * stride);
            if (rv_kp_str_eq(*x, *y))
                return true;
        }
    }
    return false;
}

/* Helper thread: change topic resource i (both APIs). */
static void kadmin_alter_blocking(struct rv_kreq *req, uint32_t i)
{
    struct kadmin *a = req->state;
    struct kadmin_item *it = &a->items[i];
    const struct rv_kapi_broker *b = req->ks->b;
    struct rv_topic_config cur;
    if (rv_topic_describe(b->st, it->name, &cur) < 0) {
        kadmin_err(it, KERR_UNKNOWN_TOPIC_OR_PARTITION, "The topic '%s' does not exist.", it->name);
        return;
    }
    struct rv_topic_config tc;
    bool is_ok = true;
    if (req->api->api_key == RV_KP_API_ALTER_CONFIGS) {
        /* The set given replaces the topic's: every other key goes back to its default. */
        const struct rv_kp_alter_configs_request *ar = req->msg;
        const struct rv_kp_alter_configs_request_resource *res = &ar->resources.items[i];
        kapi_topic_defaults(b, &tc);
        tc.partitions = cur.partitions;
        for (int32_t k = 0; k < res->configs.count && is_ok; k++) {
            const struct rv_kp_alter_configs_request_alterable_config *c = &res->configs.items[k];
            char key[128];
            if (c->value.len >= 0)
                is_ok = kadmin_config_set(it, &tc, c->name, c->value);
            else /* null: the default, which tc holds already */
                is_ok = kadmin_config_key(it, c->name, key);
        }
    } else {
        const struct rv_kp_incremental_alter_configs_request *ir = req->msg;
        const struct rv_kp_incremental_alter_configs_request_alter_configs_resource *res =
            &ir->resources.items[i];
        tc = cur;
        for (int32_t k = 0; k < res->configs.count && is_ok; k++)
            is_ok = kadmin_incremental_op(b, it, &tc, &res->configs.items[k]);
    }
    if (!is_ok)
        return;
    int rc = rv_topic_config_check(&tc);
    if (rc < 0) {
        kadmin_err_msg(it, KERR_INVALID_CONFIG, rc);
        return;
    }
    if (a->is_validate_only)
        return;
    kadmin_applied(it, rv_topic_alter(b->st, it->name, &tc), KERR_INVALID_CONFIG);
}

/* Both responses have the same shape. */
static void kapi_alter_configs_encode(struct rv_kreq *req)
{
    struct kadmin *a = req->state;
    if (req->api->api_key == RV_KP_API_ALTER_CONFIGS) {
        const struct rv_kp_alter_configs_request *ar = req->msg;
        struct rv_kp_alter_configs_response resp;
        rv_kp_alter_configs_response_init(&resp);
        resp.responses.items =
            kapi_alloc(req, (a->count > 0 ? a->count : 1) * sizeof(*resp.responses.items));
        if (resp.responses.items == NULL) {
            kapi_fail(req, "no memory for an alter configs response");
            return;
        }
        resp.responses.count = (int32_t)a->count;
        for (uint32_t i = 0; i < a->count; i++) {
            struct rv_kp_alter_configs_response_resource_response *r = &resp.responses.items[i];
            rv_kp_alter_configs_response_resource_response_init(r);
            r->error_code = a->items[i].err;
            r->error_message = kadmin_msg(&a->items[i]);
            r->resource_type = ar->resources.items[i].resource_type;
            r->resource_name = kadmin_echo(ar->resources.items[i].resource_name);
        }
        kapi_respond(req, &rv_kp_alter_configs_response_desc, &resp);
        return;
    }
    const struct rv_kp_incremental_alter_configs_request *ir = req->msg;
    struct rv_kp_incremental_alter_configs_response resp;
    rv_kp_incremental_alter_configs_response_init(&resp);
    resp.responses.items =
        kapi_alloc(req, (a->count > 0 ? a->count : 1) * sizeof(*resp.responses.items));
    if (resp.responses.items == NULL) {
        kapi_fail(req, "no memory for an incremental alter configs response");
        return;
    }
    resp.responses.count = (int32_t)a->count;
    for (uint32_t i = 0; i < a->count; i++) {
        struct rv_kp_incremental_alter_configs_response_alter_configs_resource_response *r =
            &resp.responses.items[i];
        rv_kp_incremental_alter_configs_response_alter_configs_resource_response_init(r);
        r->error_code = a->items[i].err;
        r->error_message = kadmin_msg(&a->items[i]);
        r->resource_type = ir->resources.items[i].resource_type;
        r->resource_name = kadmin_echo(ir->resources.items[i].resource_name);
    }
    kapi_respond(req, &rv_kp_incremental_alter_configs_response_desc, &resp);
}

/* Check one resource on the shard; topics go on to the helper thread. */
static void kadmin_alter_check(struct rv_kreq *req, struct kadmin_item *it, int8_t type,
                               struct rv_kp_str name, int32_t config_count, bool has_dup_keys)
{
    if (has_dup_keys) {
        kadmin_err(it, KERR_INVALID_REQUEST, "Error due to duplicate config keys");
        return;
    }
    if (type == KRES_TOPIC) {
        it->is_to_apply = kadmin_topic_name(it, name, KERR_INVALID_TOPIC_EXCEPTION);
        return;
    }
    if (type == KRES_BROKER) {
        bool is_cluster = false;
        if (kadmin_broker_name(req, it, name, &is_cluster) && config_count > 0)
            kadmin_err(it, KERR_INVALID_REQUEST,
                       "Broker configs cannot change while rivvend runs: restart it with the new "
                       "value (-c FILE or --key=value)");
        return;
    }
    kadmin_err(it, KERR_INVALID_REQUEST, "Unsupported resource type: %d", type);
}

void kapi_alter_configs(struct rv_kreq *req)
{
    const struct rv_kp_alter_configs_request *ar = req->msg;
    struct kadmin *a = kadmin_new(req, ar->resources.count, kapi_alter_configs_encode);
    if (a == NULL) {
        kapi_fail(req, "no memory for an alter configs request");
        return;
    }
    a->is_validate_only = ar->validate_only;
    for (uint32_t i = 0; i < a->count; i++) {
        const struct rv_kp_alter_configs_request_resource *res = &ar->resources.items[i];
        bool has_dup = res->configs.count > 1 &&
                       kadmin_has_dup_keys(&res->configs.items[0].name, sizeof(*res->configs.items),
                                           res->configs.count);
        kadmin_alter_check(req, &a->items[i], res->resource_type, res->resource_name,
                           res->configs.count, has_dup);
    }
    kadmin_offload(req, kadmin_alter_blocking);
}

void kapi_incremental_alter_configs(struct rv_kreq *req)
{
    const struct rv_kp_incremental_alter_configs_request *ir = req->msg;
    struct kadmin *a = kadmin_new(req, ir->resources.count, kapi_alter_configs_encode);
    if (a == NULL) {
        kapi_fail(req, "no memory for an incremental alter configs request");
        return;
    }
    a->is_validate_only = ir->validate_only;
    for (uint32_t i = 0; i < a->count; i++) {
        const struct rv_kp_incremental_alter_configs_request_alter_configs_resource *res =
            &ir->resources.items[i];
        bool has_dup = res->configs.count > 1 &&
                       kadmin_has_dup_keys(&res->configs.items[0].name, sizeof(*res->configs.items),
                                           res->configs.count);
        kadmin_alter_check(req, &a->items[i], res->resource_type, res->resource_name,
                           res->configs.count, has_dup);
    }
    kadmin_offload(req, kadmin_alter_blocking);
}

/* ---- partitions on their owner shards (DeleteRecords, DescribeLogDirs) ----------------------- */

enum kadmin_part_kind {
    KADMIN_DELETE_RECORDS,
    KADMIN_LOG_SIZE,
};

/* One partition of a request. */
struct kadmin_part {
    struct rv_part_ref ref;
    struct kadmin_work *sw;
    int16_t err;
    bool is_routed;
    int64_t offset; /* delete records: up to here (-1: the high watermark) */
    int64_t result; /* the new low watermark, or the log's bytes */
    int32_t index;  /* the partition */
};

/* The partitions of a request that one shard owns. */
struct kadmin_work {
    struct kapi_work w; /* first */
    uint8_t kind;
    uint32_t count;
    uint32_t next;     /* the next partition to start */
    uint32_t inflight; /* deletions started and not done */
    bool is_waiting;   /* a log is loading: kadmin_work_run runs again */
    struct kadmin_part **parts;
};

/* What a partition request keeps between its stages. */
struct kadmin_parts {
    struct kadmin_part *parts;
    uint32_t count;
    uint8_t kind;
    void (*encode)(struct rv_kreq *req);
};

static void kadmin_work_run(void *arg);

static void kadmin_work_check(struct kadmin_work *sw)
{
    if (sw->next == sw->count && sw->inflight == 0 && !sw->is_waiting)
        kapi_work_done(&sw->w);
}

static void kadmin_work_retry(void *arg)
{
    struct kadmin_work *sw = arg;
    sw->is_waiting = false;
    kadmin_work_run(sw);
}

static void kadmin_records_deleted(void *arg, int64_t start_or_err)
{
    struct kadmin_part *p = arg;
    if (start_or_err < 0)
        p->err = kapi_storage_error((int)start_or_err);
    else
        p->result = start_or_err;
    RV_ASSERT(p->sw->inflight > 0);
    p->sw->inflight--;
    kadmin_work_check(p->sw);
}

/* Owner shard: every partition of the work. */
static void kadmin_work_run(void *arg)
{
    struct kadmin_work *sw = arg;
    rv_store_t *st = sw->w.req->ks->b->st;
    while (sw->next < sw->count) {
        struct kadmin_part *p = sw->parts[sw->next];
        rv_plog_t *log = NULL;
        int rc = rv_store_log(st, p->ref.key, kadmin_work_retry, sw, &log);
        if (rc == 1) {
            sw->is_waiting = true; /* the log is loading: kadmin_work_retry resumes here */
            return;
        }
        if (rc < 0) {
            p->err = kapi_storage_error(rc);
        } else if (sw->kind == KADMIN_LOG_SIZE) {
            p->result = (int64_t)rv_plog_size_bytes(log);
        } else {
            int64_t hw = rv_plog_high_watermark(log);
            int64_t offset = p->offset == -1 ? hw : p->offset;
            if (offset < 0 || offset > hw) {
                p->err = KERR_OFFSET_OUT_OF_RANGE;
            } else {
                /* It may finish before this returns: next still counts it as not
                 * started, so the work cannot complete twice. */
                sw->inflight++;
                rv_plog_delete_records(log, offset, kadmin_records_deleted, p);
            }
        }
        sw->next++;
    }
    kadmin_work_check(sw);
}

static void kadmin_parts_done(struct rv_kreq *req)
{
    struct kadmin_parts *kp = req->state;
    kp->encode(req);
}

static int kadmin_part_owner(struct rv_kreq *req, uint32_t i)
{
    const struct kadmin_part *p = &((struct kadmin_parts *)req->state)->parts[i];
    return p->is_routed && p->err == 0 ? (int)p->ref.owner : -1;
}

static struct kapi_work *kadmin_work_new(struct rv_kreq *req, uint32_t part_count)
{
    const struct kadmin_parts *kp = req->state;
    struct kadmin_work *sw = kapi_alloc(req, sizeof(*sw));
    struct kadmin_part **parts = kapi_alloc(req, part_count * sizeof(*parts));
    if (sw == NULL || parts == NULL)
        return NULL;
    *sw = (struct kadmin_work){.kind = kp->kind, .parts = parts};
    return &sw->w;
}

static void kadmin_part_place(struct rv_kreq *req, uint32_t i, struct kapi_work *w)
{
    struct kadmin_part *p = &((struct kadmin_parts *)req->state)->parts[i];
    if (w == NULL) {
        p->err = p->err != 0 ? p->err : KERR_UNKNOWN_SERVER_ERROR;
        return;
    }
    p->sw = (struct kadmin_work *)w; /* w is its first member */
    p->sw->parts[p->sw->count++] = p;
}

static const struct kapi_parts_ops kadmin_parts_ops = {.owner = kadmin_part_owner,
                                                       .work_new = kadmin_work_new,
                                                       .place = kadmin_part_place,
                                                       .run = kadmin_work_run};

/* Send every routed partition to its owner, one work per owner shard. */
static void kadmin_parts_dispatch(struct rv_kreq *req)
{
    struct kadmin_parts *kp = req->state;
    kapi_send_parts(req, kp->count, &kadmin_parts_ops, kadmin_parts_done);
}

/* Make room for count partitions in kp. -ENOMEM. */
static int kadmin_parts_init(struct rv_kreq *req, struct kadmin_parts *kp, uint32_t count,
                             uint8_t kind, void (*encode)(struct rv_kreq *req))
{
    struct kadmin_part *parts = kapi_alloc(req, (count > 0 ? count : 1) * sizeof(*parts));
    if (parts == NULL)
        return -ENOMEM;
    *kp = (struct kadmin_parts){.parts = parts, .count = count, .kind = kind, .encode = encode};
    return 0;
}

/* Route partition `index` of topic[0..len); sets p->err when it cannot be. */
static void kadmin_part_route(struct rv_kreq *req, struct kadmin_part *p, const char *topic,
                              int32_t len, int32_t index)
{
    p->index = index;
    p->result = -1;
    int rc =
        len > 0 ? rv_store_lookup(req->ks->b->st, topic, (size_t)len, index, &p->ref) : -ENOENT;
    if (rc < 0)
        p->err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
    else
        p->is_routed = true;
}

/* ---- DeleteRecords -------------------------------------------------------------------------- */

static void kapi_delete_records_encode(struct rv_kreq *req)
{
    struct kadmin_parts *kp = req->state;
    const struct rv_kp_delete_records_request *dr = req->msg;
    struct rv_kp_delete_records_response resp;
    rv_kp_delete_records_response_init(&resp);
    resp.topics.items = kapi_alloc(req, (size_t)(dr->topics.count > 0 ? dr->topics.count : 1) *
                                            sizeof(*resp.topics.items));
    if (resp.topics.items == NULL) {
        kapi_fail(req, "no memory for a delete records response");
        return;
    }
    resp.topics.count = dr->topics.count > 0 ? dr->topics.count : 0;
    uint32_t k = 0;
    for (int32_t t = 0; t < resp.topics.count; t++) {
        const struct rv_kp_delete_records_request_topic *dt = &dr->topics.items[t];
        struct rv_kp_delete_records_response_topic_result *tr = &resp.topics.items[t];
        rv_kp_delete_records_response_topic_result_init(tr);
        tr->name = kadmin_echo(dt->name);
        int32_t n = dt->partitions.count > 0 ? dt->partitions.count : 0;
        tr->partitions.items =
            kapi_alloc(req, (size_t)(n > 0 ? n : 1) * sizeof(*tr->partitions.items));
        if (tr->partitions.items == NULL) {
            kapi_fail(req, "no memory for a delete records response");
            return;
        }
        tr->partitions.count = n;
        for (int32_t i = 0; i < n; i++, k++) {
            const struct kadmin_part *p = &kp->parts[k];
            struct rv_kp_delete_records_response_partition_result *r = &tr->partitions.items[i];
            rv_kp_delete_records_response_partition_result_init(r);
            r->partition_index = dt->partitions.items[i].partition_index;
            r->error_code = p->err;
            r->low_watermark = p->err == 0 ? p->result : -1;
        }
    }
    kapi_respond(req, &rv_kp_delete_records_response_desc, &resp);
}

void kapi_delete_records(struct rv_kreq *req)
{
    const struct rv_kp_delete_records_request *dr = req->msg;
    uint32_t count = 0;
    for (int32_t t = 0; t < dr->topics.count; t++)
        count += dr->topics.items[t].partitions.count > 0
                     ? (uint32_t)dr->topics.items[t].partitions.count
                     : 0;
    struct kadmin_parts *kp = kapi_alloc(req, sizeof(*kp));
    if (kp == NULL ||
        kadmin_parts_init(req, kp, count, KADMIN_DELETE_RECORDS, kapi_delete_records_encode) < 0) {
        kapi_fail(req, "no memory for a delete records of %u partitions", count);
        return;
    }
    req->state = kp;
    uint32_t k = 0;
    for (int32_t t = 0; t < dr->topics.count; t++) {
        const struct rv_kp_delete_records_request_topic *dt = &dr->topics.items[t];
        for (int32_t i = 0; i < dt->partitions.count; i++, k++) {
            struct kadmin_part *p = &kp->parts[k];
            kadmin_part_route(req, p, dt->name.ptr, dt->name.len,
                              dt->partitions.items[i].partition_index);
            p->offset = dt->partitions.items[i].offset;
        }
    }
    kadmin_parts_dispatch(req);
}

/* ---- DescribeLogDirs ------------------------------------------------------------------------ */

/* What DescribeLogDirs keeps: the directory (helper thread), then its partitions. */
struct kdirs {
    struct kadmin_parts kp; /* first (kadmin_parts_done) */
    char dir[PATH_MAX];     /* absolute */
    int64_t total_bytes;    /* of its volume, or -1 */
    int64_t usable_bytes;
    bool is_dir_ok;
    char **names; /* every topic, when the request names none (malloc'd) */
    uint32_t name_count;
    struct rv_kp_str *topics; /* [topic_count] */
    uint32_t *firsts;         /* [topic_count + 1]: each topic's partitions in kp.parts */
    uint32_t topic_count;
};

static void kdirs_free(struct rv_kreq *req)
{
    struct kdirs *d = req->state;
    rv_topic_list_free(d->names, d->name_count);
}

static void kapi_describe_log_dirs_encode(struct rv_kreq *req)
{
    struct kdirs *d = req->state;
    struct rv_kp_describe_log_dirs_response resp;
    rv_kp_describe_log_dirs_response_init(&resp);
    struct rv_kp_describe_log_dirs_response_result *res = kapi_alloc(req, sizeof(*res));
    struct rv_kp_describe_log_dirs_response_topic *topics =
        kapi_alloc(req, (d->topic_count > 0 ? d->topic_count : 1) * sizeof(*topics));
    struct rv_kp_describe_log_dirs_response_partition *parts =
        kapi_alloc(req, (d->kp.count > 0 ? d->kp.count : 1) * sizeof(*parts));
    if (res == NULL || topics == NULL || parts == NULL) {
        kapi_fail(req, "no memory for a describe log dirs response");
        return;
    }
    rv_kp_describe_log_dirs_response_result_init(res);
    res->error_code = d->is_dir_ok ? KERR_NONE : KERR_KAFKA_STORAGE_ERROR;
    res->log_dir = rv_kp_str_from(d->dir);
    res->total_bytes = d->total_bytes;
    res->usable_bytes = d->usable_bytes;
    res->topics.items = topics;
    int32_t nt = 0;
    uint32_t np = 0;
    int only = kapi_node_shard(req); /* the addressed node's logs only */
    for (uint32_t t = 0; t < d->topic_count; t++) {
        struct rv_kp_describe_log_dirs_response_topic *tr = &topics[nt];
        rv_kp_describe_log_dirs_response_topic_init(tr);
        tr->name = d->topics[t];
        tr->partitions.items = &parts[np];
        for (uint32_t i = d->firsts[t]; i < d->firsts[t + 1]; i++) {
            const struct kadmin_part *p = &d->kp.parts[i];
            if (p->err != 0)
                continue; /* not a log of ours (any more) */
            if (only >= 0 && p->ref.owner != (uint32_t)only)
                continue; /* another node's (shard's) log */
            struct rv_kp_describe_log_dirs_response_partition *pr = &parts[np++];
            rv_kp_describe_log_dirs_response_partition_init(pr);
            pr->partition_index = p->index;
            pr->partition_size = p->result;
            pr->offset_lag = 0;
            pr->is_future_key = false;
            tr->partitions.count++;
        }
        nt += tr->partitions.count > 0;
    }
    res->topics.count = nt;
    resp.results.count = 1;
    resp.results.items = res;
    kapi_respond(req, &rv_kp_describe_log_dirs_response_desc, &resp);
}

/* Helper thread: the directory's absolute path and its volume's size. */
static void kdirs_stat_blocking(void *arg)
{
    struct rv_kreq *req = arg;
    struct kdirs *d = req->state;
    const char *dir = req->ks->b->cfg->log_dirs;
    if (realpath(dir, d->dir) == NULL)
        snprintf(d->dir, sizeof(d->dir), "%s", dir);
    struct statvfs sv;
    d->is_dir_ok = statvfs(d->dir, &sv) == 0;
    d->total_bytes = d->is_dir_ok ? (int64_t)(sv.f_blocks * sv.f_frsize) : -1;
    d->usable_bytes = d->is_dir_ok ? (int64_t)(sv.f_bavail * sv.f_frsize) : -1;
}

/* Back on the shard: list the partitions asked for, then measure them. */
static void kdirs_statted(void *arg)
{
    struct rv_kreq *req = arg;
    struct kdirs *d = req->state;
    const struct rv_kp_describe_log_dirs_request *dr = req->msg;
    rv_store_t *st = req->ks->b->st;
    bool is_all = dr->topics.count < 0;
    if (is_all && rv_topic_list(st, &d->names, &d->name_count) < 0) {
        kapi_fail(req, "no memory to list topics");
        return;
    }
    uint32_t nt = is_all ? d->name_count : (uint32_t)dr->topics.count;
    d->topics = kapi_alloc(req, (nt > 0 ? nt : 1) * sizeof(*d->topics));
    d->firsts = kapi_alloc(req, (nt + 1) * sizeof(*d->firsts));
    int32_t *counts = kapi_alloc(req, (nt > 0 ? nt : 1) * sizeof(*counts));
    if (d->topics == NULL || d->firsts == NULL || counts == NULL) {
        kapi_fail(req, "no memory for a describe log dirs request");
        return;
    }
    d->topic_count = nt;
    uint32_t total = 0;
    for (uint32_t t = 0; t < nt; t++) {
        struct rv_store_topic_info info;
        d->topics[t] =
            is_all ? rv_kp_str_from(d->names[t]) : kadmin_echo(dr->topics.items[t].topic);
        bool is_known =
            d->topics[t].len > 0 &&
            rv_store_topic_info(st, d->topics[t].ptr, (size_t)d->topics[t].len, &info) == 0;
        int32_t asked = is_all ? 0 : dr->topics.items[t].partitions.count;
        counts[t] = !is_known ? 0 : is_all ? info.partitions : asked > 0 ? asked : 0;
        total += (uint32_t)counts[t];
    }
    if (kadmin_parts_init(req, &d->kp, total, KADMIN_LOG_SIZE, kapi_describe_log_dirs_encode) < 0) {
        kapi_fail(req, "no memory for a describe log dirs of %u partitions", total);
        return;
    }
    uint32_t k = 0;
    for (uint32_t t = 0; t < nt; t++) {
        d->firsts[t] = k;
        for (int32_t i = 0; i < counts[t]; i++, k++) {
            int32_t index = is_all ? i : dr->topics.items[t].partitions.items[i];
            kadmin_part_route(req, &d->kp.parts[k], d->topics[t].ptr, d->topics[t].len, index);
        }
    }
    d->firsts[nt] = k;
    RV_ASSERT(k == total);
    kadmin_parts_dispatch(req);
}

void kapi_describe_log_dirs(struct rv_kreq *req)
{
    struct kdirs *d = kapi_alloc(req, sizeof(*d));
    if (d == NULL) {
        kapi_fail(req, "no memory for a describe log dirs request");
        return;
    }
    req->state = d;
    req->state_free = kdirs_free;
    int rc = rv_offload(kdirs_stat_blocking, req, kdirs_statted);
    if (rc < 0) {
        snprintf(d->dir, sizeof(d->dir), "%s", req->ks->b->cfg->log_dirs);
        d->total_bytes = d->usable_bytes = -1;
        kdirs_statted(req);
    }
}
