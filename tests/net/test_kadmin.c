/*
 * tests/net/test_kadmin.c - the administration APIs (net/kapi_admin.c) over
 * loopback, in every version: requests are encoded and responses decoded with
 * the generated codec, so versions that no client at hand sends (CreateTopics
 * v7, DeleteTopics v6 by topic id, DescribeConfigs v4, DescribeLogDirs v4...)
 * are answered and read back too. CreateTopics, DeleteTopics,
 * CreatePartitions, DescribeConfigs, AlterConfigs, IncrementalAlterConfigs,
 * DeleteRecords and DescribeLogDirs, with the errors Kafka gives.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/err.h"
#include "net/kapi.h"
#include "net/kproto.h"
#include "net/kproto_gen.h"
#include "net/server.h"
#include "storage/part.h"

TestSuite(kadmin, .timeout = 120);

#define CALLS_MAX 512

struct fixture {
    rv_runtime_t *rt;
    rv_store_t *st;
    rv_server_t *srv;
    char dir[64];
    int fd;
    int32_t corr;
    void *mem[CALLS_MAX]; /* every response's buffers, freed at the end */
    uint32_t mem_count;
};

static struct fixture F;

static void fixture_open(void)
{
    struct fixture *f = &F;
    memset(f, 0, sizeof(*f));
    struct rv_runtime_config rc;
    rv_runtime_config_init(&rc);
    rc.shard_count = 2;
    rc.allow_oversubscribe = true;
    snprintf(f->dir, sizeof(f->dir), "/tmp/rivven-test-kadmin-XXXXXX");
    cr_assert_not_null(mkdtemp(f->dir));
    rc.data_dir = f->dir;
    cr_assert_eq(rv_runtime_open(&f->rt, &rc), 0, "%s", rv_err_msg());
    struct rv_store_config sc;
    rv_store_config_init(&sc);
    cr_assert_eq(rv_store_open(&f->st, f->rt, &sc), 0, "%s", rv_err_msg());
    struct rv_config cfg;
    rv_config_init(&cfg);
    cr_assert_eq(rv_config_set(&cfg, "listeners", "PLAINTEXT://127.0.0.1:0"), 0);
    cr_assert_eq(rv_config_set(&cfg, "log.dirs", f->dir), 0);
    cr_assert_eq(rv_config_set(&cfg, "num.partitions", "3"), 0);
    cr_assert_eq(rv_config_set(&cfg, "log.retention.bytes", "1000000000"), 0);
    cr_assert_eq(rv_server_start(&f->srv, f->rt, f->st, &cfg), 0, "%s", rv_err_msg());
    f->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(f->fd, 0);
    struct timeval tv = {.tv_sec = 20};
    setsockopt(f->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons(rv_server_port(f->srv)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(f->fd, (struct sockaddr *)&a, sizeof(a)), 0, "connect: %s",
                 strerror(errno));
}

static void fixture_close(void)
{
    struct fixture *f = &F;
    close(f->fd);
    rv_server_stop(f->srv);
    rv_store_close(f->st);
    rv_runtime_close(f->rt);
    for (uint32_t i = 0; i < f->mem_count; i++)
        free(f->mem[i]);
    char cmd[sizeof(f->dir) + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf %.63s", f->dir);
    cr_assert_eq(system(cmd), 0);
}

static void *keep(void *p)
{
    cr_assert_not_null(p);
    cr_assert_lt(F.mem_count, CALLS_MAX);
    F.mem[F.mem_count++] = p;
    return p;
}

static void io_all(int fd, void *buf, size_t len, bool is_send)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = is_send ? send(fd, (char *)buf + done, len - done, MSG_NOSIGNAL)
                            : recv(fd, (char *)buf + done, len - done, 0);
        cr_assert_gt(n, 0, "%s: %s", is_send ? "send" : "recv (connection closed?)",
                     n == 0 ? "end of stream" : strerror(errno));
        done += (size_t)n;
    }
}

/* Send msg as request `key` v`version`; return the decoded response (it lives
 * until the fixture closes). */
static void *call(int16_t key, int16_t version, const void *msg)
{
    const struct rv_kp_api *api = rv_kp_api_find(key);
    cr_assert_not_null(api);
    size_t cap = 64 * 1024;
    uint8_t *buf = malloc(cap);
    struct rv_kp_writer w;
    rv_kp_writer_init(&w, buf, cap);
    cr_assert_eq(rv_kp_write_i32(&w, 0), 0);
    struct rv_kp_request_header h;
    rv_kp_request_header_init(&h);
    h.request_api_key = key;
    h.request_api_version = version;
    h.correlation_id = ++F.corr;
    h.client_id = rv_kp_str_from("test-kadmin");
    cr_assert_eq(rv_kp_request_header_build(&w, &h), 0);
    cr_assert_eq(api->request->encode(&w, version, msg), 0, "%s v%d: encode", api->name, version);
    uint32_t len = (uint32_t)w.pos - 4;
    buf[0] = (uint8_t)(len >> 24);
    buf[1] = (uint8_t)(len >> 16);
    buf[2] = (uint8_t)(len >> 8);
    buf[3] = (uint8_t)len;
    io_all(F.fd, buf, w.pos, true);
    free(buf);
    uint8_t prefix[4];
    io_all(F.fd, prefix, 4, false);
    uint32_t size = (uint32_t)prefix[0] << 24 | (uint32_t)prefix[1] << 16 |
                    (uint32_t)prefix[2] << 8 | prefix[3];
    cr_assert_lt(size, 16u << 20);
    uint8_t *body = keep(malloc(size));
    io_all(F.fd, body, size, false);
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, body, size);
    int32_t corr = -1;
    cr_assert_eq(rv_kp_response_header_parse(&r, key, version, &corr), 0);
    cr_assert_eq(corr, F.corr);
    size_t arena_cap = 16 * (size_t)size + 4096;
    void *arena_mem = keep(aligned_alloc(64, (arena_cap + 63) & ~(size_t)63));
    struct rv_kproto_arena a;
    rv_kproto_arena_init(&a, arena_mem, arena_cap);
    void *resp = keep(aligned_alloc(64, (api->response->size + 63) & ~(size_t)63));
    cr_assert_eq(api->response->decode(&r, version, resp, &a), 0, "%s v%d: decode", api->name,
                 version);
    cr_assert_eq(rv_kp_reader_left(&r), 0, "%s v%d: bytes left", api->name, version);
    return resp;
}

static struct rv_kp_str S(const char *s) {
    return rv_kp_str_from(s);
}

static bool
str_is(struct rv_kp_str s, const char *want)
{
    return s.len == (int32_t)strlen(want) && memcmp(s.ptr, want, (size_t)s.len) == 0;
}

/* ---- requests ------------------------------------------------------------------------------ */

struct topic_spec {
    const char *name;
    int32_t partitions;
    int16_t rf;
    const char *key; /* one config, or NULL */
    const char *value;
};

static struct rv_kp_create_topics_response *create_topics(int16_t v, const struct topic_spec *t,
                                                          int n, bool validate_only)
{
    struct rv_kp_create_topics_request req;
    rv_kp_create_topics_request_init(&req);
    struct rv_kp_create_topics_request_creatable_topic ts[8];
    struct rv_kp_create_topics_request_creatable_topic_config cs[8];
    cr_assert_leq(n, 8);
    for (int i = 0; i < n; i++) {
        rv_kp_create_topics_request_creatable_topic_init(&ts[i]);
        ts[i].name = S(t[i].name);
        ts[i].num_partitions = t[i].partitions;
        ts[i].replication_factor = t[i].rf;
        if (t[i].key != NULL) {
            rv_kp_create_topics_request_creatable_topic_config_init(&cs[i]);
            cs[i].name = S(t[i].key);
            cs[i].value = S(t[i].value);
            ts[i].configs.count = 1;
            ts[i].configs.items = &cs[i];
        }
    }
    req.topics.count = n;
    req.topics.items = ts;
    req.timeout_ms = 10000;
    req.validate_only = validate_only;
    struct rv_kp_create_topics_response *resp = call(RV_KP_API_CREATE_TOPICS, v, &req);
    cr_assert_eq(resp->topics.count, n);
    return resp;
}

static int16_t create_one(int16_t v, const char *name, int32_t partitions, const char *key,
                          const char *value)
{
    struct topic_spec t = {name, partitions, 1, key, value};
    return create_topics(v, &t, 1, false)->topics.items[0].error_code;
}

static struct rv_kp_describe_configs_response_result
describe(int16_t v, int8_t type, const char *name, bool synonyms, bool docs)
{
    struct rv_kp_describe_configs_request req;
    rv_kp_describe_configs_request_init(&req);
    struct rv_kp_describe_configs_request_resource res;
    rv_kp_describe_configs_request_resource_init(&res);
    res.resource_type = type;
    res.resource_name = S(name);
    res.configuration_keys.count = -1;
    req.resources.count = 1;
    req.resources.items = &res;
    req.include_synonyms = synonyms;
    req.include_documentation = docs;
    struct rv_kp_describe_configs_response *resp = call(RV_KP_API_DESCRIBE_CONFIGS, v, &req);
    cr_assert_eq(resp->results.count, 1);
    return resp->results.items[0];
}

static const struct rv_kp_describe_configs_response_resource_result *
config_find(const struct rv_kp_describe_configs_response_result *r, const char *key)
{
    for (int32_t i = 0; i < r->configs.count; i++) {
        if (str_is(r->configs.items[i].name, key))
            return &r->configs.items[i];
    }
    cr_assert_fail("no config %s among %d", key, r->configs.count);
    return NULL;
}

/* A topic's value of key, through DescribeConfigs v4. */
static bool topic_config_is(const char *topic, const char *key, const char *value)
{
    struct rv_kp_describe_configs_response_result r = describe(4, 2, topic, false, false);
    cr_assert_eq(r.error_code, 0, "describe %s: %d", topic, r.error_code);
    return str_is(config_find(&r, key)->value, value);
}

static int8_t topic_config_source(const char *topic, const char *key)
{
    struct rv_kp_describe_configs_response_result r = describe(4, 2, topic, false, false);
    cr_assert_eq(r.error_code, 0);
    return config_find(&r, key)->config_source;
}

static int16_t topic_exists_error(const char *topic)
{
    return describe(1, 2, topic, false, false).error_code;
}

static void produce(const char *topic, int32_t partition, int count, int value_bytes)
{
    char *value = malloc((size_t)value_bytes);
    memset(value, 'v', (size_t)value_bytes);
    for (int i = 0; i < count; i++) {
        struct rv_record rec = {.key = "k", .key_len = 1, .value = value, .value_len = value_bytes};
        int64_t off = rv_produce_sync(F.st, topic, partition, &rec, 1, RV_ACKS_ALL);
        cr_assert_geq(off, 0, "produce: %s", rv_err_msg());
    }
    free(value);
}

/* ---- CreateTopics --------------------------------------------------------------------------- */

Test(kadmin, create_topics_in_every_version, .init = fixture_open, .fini = fixture_close)
{
    for (int16_t v = 0; v <= 7; v++) {
        char name[32];
        snprintf(name, sizeof(name), "ct-v%d", v);
        struct topic_spec t = {name, 2, (int16_t)(v % 2 == 0 ? 1 : -1), "retention.ms", "3600000"};
        struct rv_kp_create_topics_response *resp = create_topics(v, &t, 1, false);
        struct rv_kp_create_topics_response_creatable_topic_result *r = &resp->topics.items[0];
        cr_assert_eq(r->error_code, 0, "v%d: %d %.*s", v, r->error_code, r->error_message.len,
                     r->error_message.ptr);
        cr_assert(str_is(r->name, name));
        if (v >= 5) {
            cr_assert_eq(r->num_partitions, 2);
            cr_assert_eq(r->replication_factor, 1);
            bool has_retention = false;
            for (int32_t i = 0; i < r->configs.count; i++) {
                if (str_is(r->configs.items[i].name, "retention.ms")) {
                    has_retention = true;
                    cr_assert(str_is(r->configs.items[i].value, "3600000"));
                    cr_assert_eq(r->configs.items[i].config_source, 1);
                }
                if (str_is(r->configs.items[i].name, "retention.bytes")) {
                    cr_assert(str_is(r->configs.items[i].value, "1000000000"));
                    cr_assert_eq(r->configs.items[i].config_source, 4, "a broker-set default");
                }
            }
            cr_assert(has_retention);
        }
        if (v >= 7)
            cr_assert_not(rv_kp_uuid_is_zero(&r->topic_id));
        cr_assert(topic_config_is(name, "retention.ms", "3600000"));
        /* Again: it exists. */
        cr_assert_eq(create_one(v, name, 2, NULL, NULL), 36, "v%d", v);
    }
}

Test(kadmin, create_topics_defaults_and_errors, .init = fixture_open, .fini = fixture_close)
{
    /* -1 partitions: num.partitions (3). */
    struct topic_spec d = {"ct-default", -1, -1, NULL, NULL};
    struct rv_kp_create_topics_response *resp = create_topics(5, &d, 1, false);
    cr_assert_eq(resp->topics.items[0].error_code, 0);
    cr_assert_eq(resp->topics.items[0].num_partitions, 3);
    struct topic_spec bad[] = {
        {"", 1, 1, NULL, NULL},
        {"a/b", 1, 1, NULL, NULL},
        {"..", 1, 1, NULL, NULL},
        {"ct-zero", 0, 1, NULL, NULL},
        {"ct-rf2", 1, 2, NULL, NULL},
        {"ct-badcfg", 1, 1, "retention.ms", "soon"},
        {"ct-badkey", 1, 1, "no.such.key", "1"},
        {"ct-partkey", 1, 1, "partitions", "4"},
    };
    int16_t want[] = {17, 17, 17, 37, 38, 40, 40, 40};
    resp = create_topics(4, bad, 8, false);
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(resp->topics.items[i].error_code, want[i], "%s: %d, want %d", bad[i].name,
                     resp->topics.items[i].error_code, want[i]);
        cr_assert_gt(resp->topics.items[i].error_message.len, 0, "%s: a message", bad[i].name);
    }
    cr_assert_eq(topic_exists_error("ct-zero"), 3);
    cr_assert_eq(topic_exists_error("ct-badcfg"), 3);
    /* The same name twice in one request: both INVALID_REQUEST. */
    struct topic_spec twice[] = {{"ct-twice", 1, 1, NULL, NULL}, {"ct-twice", 1, 1, NULL, NULL}};
    resp = create_topics(2, twice, 2, false);
    cr_assert_eq(resp->topics.items[0].error_code, 42);
    cr_assert_eq(resp->topics.items[1].error_code, 42);
    /* validate_only checks and creates nothing. */
    struct topic_spec vo[] = {{"ct-vo", 4, 1, "cleanup.policy", "compact"},
                              {"ct-vo-bad", 4, 1, "cleanup.policy", "forever"}};
    resp = create_topics(3, vo, 2, true);
    cr_assert_eq(resp->topics.items[0].error_code, 0);
    cr_assert_eq(resp->topics.items[1].error_code, 40);
    cr_assert_eq(topic_exists_error("ct-vo"), 3);
    /* Assignments: one replica on one of our brokers, partitions 0..n-1. */
    struct rv_kp_create_topics_request req;
    rv_kp_create_topics_request_init(&req);
    struct rv_kp_create_topics_request_creatable_topic t;
    rv_kp_create_topics_request_creatable_topic_init(&t);
    struct rv_kp_create_topics_request_creatable_replica_assignment as[2];
    int32_t ids[2][2] = {{1, 0}, {0, 1}};
    for (int i = 0; i < 2; i++) {
        rv_kp_create_topics_request_creatable_replica_assignment_init(&as[i]);
        as[i].partition_index = i;
        as[i].broker_ids = (struct rv_kp_arr_i32){.count = 1, .items = ids[i]};
    }
    t.name = S("ct-assigned");
    t.num_partitions = -1;
    t.replication_factor = -1;
    t.assignments.count = 2;
    t.assignments.items = as;
    req.topics.count = 1;
    req.topics.items = &t;
    struct rv_kp_create_topics_response *r = call(RV_KP_API_CREATE_TOPICS, 6, &req);
    cr_assert_eq(r->topics.items[0].error_code, 0);
    cr_assert_eq(r->topics.items[0].num_partitions, 2);
    t.name = S("ct-assigned-2");
    as[1].broker_ids.count = 2; /* two replicas */
    r = call(RV_KP_API_CREATE_TOPICS, 6, &req);
    cr_assert_eq(r->topics.items[0].error_code, 39);
    as[1].broker_ids.count = 1;
    ids[1][0] = 77; /* no such broker */
    r = call(RV_KP_API_CREATE_TOPICS, 6, &req);
    cr_assert_eq(r->topics.items[0].error_code, 39);
    ids[1][0] = 0;
    t.num_partitions = 2; /* both ways at once */
    r = call(RV_KP_API_CREATE_TOPICS, 6, &req);
    cr_assert_eq(r->topics.items[0].error_code, 42);
}

/* ---- DeleteTopics --------------------------------------------------------------------------- */

Test(kadmin, delete_topics_in_every_version, .init = fixture_open, .fini = fixture_close)
{
    for (int16_t v = 0; v <= 6; v++) {
        char name[32];
        snprintf(name, sizeof(name), "dt-v%d", v);
        struct topic_spec t = {name, 2, 1, NULL, NULL};
        struct rv_kp_create_topics_response *cr = create_topics(7, &t, 1, false);
        cr_assert_eq(cr->topics.items[0].error_code, 0);
        struct rv_kp_uuid id = cr->topics.items[0].topic_id;
        produce(name, 1, 3, 10);
        struct rv_kp_delete_topics_request req;
        rv_kp_delete_topics_request_init(&req);
        struct rv_kp_str names[2] = {S(name), S("dt-none")};
        struct rv_kp_delete_topics_request_topic_state ts[2];
        if (v < 6) {
            req.topic_names = (struct rv_kp_arr_str){.count = 2, .items = names};
        } else {
            rv_kp_delete_topics_request_topic_state_init(&ts[0]);
            rv_kp_delete_topics_request_topic_state_init(&ts[1]);
            ts[0].name = (struct rv_kp_str){NULL, -1};
            ts[0].topic_id = id; /* by id */
            ts[1].name = S("dt-none");
            req.topics.count = 2;
            req.topics.items = ts;
        }
        req.timeout_ms = 10000;
        struct rv_kp_delete_topics_response *resp = call(RV_KP_API_DELETE_TOPICS, v, &req);
        cr_assert_eq(resp->responses.count, 2);
        cr_assert_eq(resp->responses.items[0].error_code, 0, "v%d: %d", v,
                     resp->responses.items[0].error_code);
        cr_assert(str_is(resp->responses.items[0].name, name), "v%d: the name", v);
        cr_assert_eq(resp->responses.items[1].error_code, 3);
        if (v >= 6)
            cr_assert_eq(memcmp(resp->responses.items[0].topic_id.bytes, id.bytes, 16), 0);
        cr_assert_eq(topic_exists_error(name), 3);
        /* The name can be used again and the topic starts empty. */
        cr_assert_eq(create_one(1, name, 1, NULL, NULL), 0);
        struct rv_partition_info pi;
        cr_assert_eq(rv_partition_info(F.st, name, 0, &pi), 0);
        cr_assert_eq(pi.high_watermark, 0);
    }
    /* v6: an unknown id; a name and an id at once. */
    struct rv_kp_delete_topics_request req;
    rv_kp_delete_topics_request_init(&req);
    struct rv_kp_delete_topics_request_topic_state ts[2];
    rv_kp_delete_topics_request_topic_state_init(&ts[0]);
    rv_kp_delete_topics_request_topic_state_init(&ts[1]);
    ts[0].name = (struct rv_kp_str){NULL, -1};
    memset(ts[0].topic_id.bytes, 0x5a, 16);
    ts[1].name = S("dt-v0");
    memset(ts[1].topic_id.bytes, 0x5a, 16);
    req.topics.count = 2;
    req.topics.items = ts;
    struct rv_kp_delete_topics_response *resp = call(RV_KP_API_DELETE_TOPICS, 6, &req);
    cr_assert_eq(resp->responses.items[0].error_code, 100);
    cr_assert_eq(resp->responses.items[1].error_code, 42);
    cr_assert_eq(topic_exists_error("dt-v0"), 0, "left alone");
}

/* ---- CreatePartitions ----------------------------------------------------------------------- */

Test(kadmin, create_partitions_in_every_version, .init = fixture_open, .fini = fixture_close)
{
    cr_assert_eq(create_one(1, "cp", 1, NULL, NULL), 0);
    int32_t count = 1;
    for (int16_t v = 0; v <= 3; v++) {
        struct rv_kp_create_partitions_request req;
        rv_kp_create_partitions_request_init(&req);
        struct rv_kp_create_partitions_request_topic t[3];
        for (int i = 0; i < 3; i++)
            rv_kp_create_partitions_request_topic_init(&t[i]);
        t[0].name = S("cp");
        t[0].count = count + 2;
        t[0].assignments.count = -1;
        t[1].name = S("cp-none");
        t[1].count = 4;
        t[1].assignments.count = -1;
        t[2].name = S("ct-v0-never");
        t[2].count = 4;
        t[2].assignments.count = -1;
        req.topics.count = 3;
        req.topics.items = t;
        req.timeout_ms = 10000;
        /* validate_only first: nothing changes. */
        req.validate_only = true;
        struct rv_kp_create_partitions_response *resp = call(RV_KP_API_CREATE_PARTITIONS, v, &req);
        cr_assert_eq(resp->results.count, 3);
        cr_assert_eq(resp->results.items[0].error_code, 0);
        cr_assert_eq(resp->results.items[1].error_code, 3);
        struct rv_partition_info pi;
        cr_assert_eq(rv_partition_info(F.st, "cp", count, &pi), -ENOENT);
        req.validate_only = false;
        resp = call(RV_KP_API_CREATE_PARTITIONS, v, &req);
        cr_assert_eq(resp->results.items[0].error_code, 0, "v%d: %d %.*s", v,
                     resp->results.items[0].error_code, resp->results.items[0].error_message.len,
                     resp->results.items[0].error_message.ptr);
        cr_assert_eq(resp->results.items[0].error_message.len, -1);
        count += 2;
        cr_assert_eq(rv_partition_info(F.st, "cp", count - 1, &pi), 0);
        produce("cp", count - 1, 1, 10);
        /* Not growing: INVALID_PARTITIONS. */
        resp = call(RV_KP_API_CREATE_PARTITIONS, v, &req);
        cr_assert_eq(resp->results.items[0].error_code, 37);
        cr_assert_gt(resp->results.items[0].error_message.len, 0);
    }
    /* Assignments: as many as new partitions, one of our brokers each. */
    struct rv_kp_create_partitions_request req;
    rv_kp_create_partitions_request_init(&req);
    struct rv_kp_create_partitions_request_topic t;
    rv_kp_create_partitions_request_topic_init(&t);
    struct rv_kp_create_partitions_request_assignment as[2];
    int32_t ids[2] = {1, 0};
    for (int i = 0; i < 2; i++) {
        rv_kp_create_partitions_request_assignment_init(&as[i]);
        as[i].broker_ids = (struct rv_kp_arr_i32){.count = 1, .items = &ids[i]};
    }
    t.name = S("cp");
    t.count = count + 1;
    t.assignments.count = 2; /* one too many */
    t.assignments.items = as;
    req.topics.count = 1;
    req.topics.items = &t;
    struct rv_kp_create_partitions_response *resp = call(RV_KP_API_CREATE_PARTITIONS, 3, &req);
    cr_assert_eq(resp->results.items[0].error_code, 39);
    t.assignments.count = 1;
    resp = call(RV_KP_API_CREATE_PARTITIONS, 3, &req);
    cr_assert_eq(resp->results.items[0].error_code, 0);
}

/* ---- DescribeConfigs ------------------------------------------------------------------------ */

Test(kadmin, describe_configs_in_every_version, .init = fixture_open, .fini = fixture_close)
{
    cr_assert_eq(create_one(1, "dc", 1, "segment.bytes", "1048576"), 0);
    const char *keys[] = {"cleanup.policy",
                          "compression.type",
                          "delete.retention.ms",
                          "index.interval.bytes",
                          "max.message.bytes",
                          "min.cleanable.dirty.ratio",
                          "message.timestamp.after.max.ms",
                          "message.timestamp.before.max.ms",
                          "message.timestamp.type",
                          "retention.bytes",
                          "retention.ms",
                          "segment.bytes",
                          "segment.ms"};
    for (int16_t v = 0; v <= 4; v++) {
        struct rv_kp_describe_configs_response_result r = describe(v, 2, "dc", v >= 1, v >= 3);
        cr_assert_eq(r.error_code, 0);
        cr_assert_eq(r.configs.count, (int32_t)RV_ARRAY_LEN(keys));
        for (size_t i = 0; i < RV_ARRAY_LEN(keys); i++)
            (void)config_find(&r, keys[i]);
        const struct rv_kp_describe_configs_response_resource_result *seg =
            config_find(&r, "segment.bytes");
        const struct rv_kp_describe_configs_response_resource_result *ms =
            config_find(&r, "retention.ms");
        cr_assert(str_is(seg->value, "1048576"));
        cr_assert(str_is(ms->value, "604800000"));
        cr_assert_not(seg->read_only);
        if (v == 0) {
            cr_assert_not(seg->is_default);
            cr_assert(ms->is_default);
        } else {
            cr_assert_eq(seg->config_source, 1);
            cr_assert_eq(ms->config_source, 5);
            cr_assert_eq(seg->synonyms.count, 2, "v%d: the topic's and the broker's", v);
            cr_assert(str_is(seg->synonyms.items[1].name, "log.segment.bytes"));
            cr_assert_eq(ms->synonyms.count, 1);
        }
        if (v >= 3) {
            cr_assert_eq(seg->config_type, 3); /* INT */
            cr_assert_eq(ms->config_type, 5);  /* LONG */
            cr_assert_gt(seg->documentation.len, 0);
        }
        /* The broker: every key of net/config.h, read-only. */
        r = describe(v, 4, "1", v >= 1, v >= 3);
        cr_assert_eq(r.error_code, 0, "v%d broker: %d %.*s", v, r.error_code, r.error_message.len,
                     r.error_message.ptr);
        const struct rv_kp_describe_configs_response_resource_result *np =
            config_find(&r, "num.partitions");
        cr_assert(str_is(np->value, "3"));
        cr_assert(np->read_only);
        if (v >= 1)
            cr_assert_eq(np->config_source, 4);
        const struct rv_kp_describe_configs_response_resource_result *lr =
            config_find(&r, "log.retention.ms");
        if (v >= 1)
            cr_assert_eq(lr->config_source, 5);
        if (v >= 3) {
            cr_assert_eq(np->config_type, 3); /* INT */
            cr_assert_eq(lr->config_type, 5); /* LONG */
            cr_assert_eq(config_find(&r, "auto.create.topics.enable")->config_type, 1);
            cr_assert_gt(np->documentation.len, 0);
            cr_assert_eq(memchr(np->documentation.ptr, '[', (size_t)np->documentation.len), NULL,
                         "the type is not part of the text");
        }
        cr_assert_eq(describe(v, 2, "dc-none", false, false).error_code, 3);
        cr_assert_eq(describe(v, 2, "bad/name", false, false).error_code, 17);
        cr_assert_eq(describe(v, 4, "99", false, false).error_code, 42);
        cr_assert_eq(describe(v, 4, "zero", false, false).error_code, 42);
        cr_assert_eq(describe(v, 9, "x", false, false).error_code, 42);
    }
    /* Only the keys asked for. */
    struct rv_kp_describe_configs_request req;
    rv_kp_describe_configs_request_init(&req);
    struct rv_kp_describe_configs_request_resource res;
    rv_kp_describe_configs_request_resource_init(&res);
    struct rv_kp_str want[2] = {S("retention.ms"), S("no.such")};
    res.resource_type = 2;
    res.resource_name = S("dc");
    res.configuration_keys = (struct rv_kp_arr_str){.count = 2, .items = want};
    req.resources.count = 1;
    req.resources.items = &res;
    struct rv_kp_describe_configs_response *resp = call(RV_KP_API_DESCRIBE_CONFIGS, 2, &req);
    cr_assert_eq(resp->results.items[0].configs.count, 1);
    cr_assert(str_is(resp->results.items[0].configs.items[0].name, "retention.ms"));
}

/* ---- AlterConfigs and IncrementalAlterConfigs ----------------------------------------------- */

static int16_t alter(int16_t v, const char *topic, const char *k1, const char *v1, const char *k2,
                     const char *v2, bool validate_only)
{
    struct rv_kp_alter_configs_request req;
    rv_kp_alter_configs_request_init(&req);
    struct rv_kp_alter_configs_request_resource res;
    rv_kp_alter_configs_request_resource_init(&res);
    struct rv_kp_alter_configs_request_alterable_config c[2];
    rv_kp_alter_configs_request_alterable_config_init(&c[0]);
    rv_kp_alter_configs_request_alterable_config_init(&c[1]);
    c[0].name = S(k1);
    c[0].value = S(v1);
    c[1].name = S(k2);
    c[1].value = S(v2);
    res.resource_type = 2;
    res.resource_name = S(topic);
    res.configs.count = k2 != NULL ? 2 : 1;
    res.configs.items = c;
    req.resources.count = 1;
    req.resources.items = &res;
    req.validate_only = validate_only;
    struct rv_kp_alter_configs_response *resp = call(RV_KP_API_ALTER_CONFIGS, v, &req);
    cr_assert_eq(resp->responses.count, 1);
    cr_assert(str_is(resp->responses.items[0].resource_name, topic));
    return resp->responses.items[0].error_code;
}

Test(kadmin, alter_configs_in_every_version, .init = fixture_open, .fini = fixture_close)
{
    cr_assert_eq(create_one(1, "ac", 2, "retention.ms", "3600000"), 0);
    for (int16_t v = 0; v <= 2; v++) {
        cr_assert_eq(alter(v, "ac", "retention.bytes", "1048576", "segment.bytes", "2097152", true),
                     0);
        cr_assert(topic_config_is("ac", "retention.bytes", "1000000000"), "validate_only");
        cr_assert_eq(
            alter(v, "ac", "retention.bytes", "1048576", "segment.bytes", "2097152", false), 0);
        cr_assert(topic_config_is("ac", "retention.bytes", "1048576"));
        cr_assert(topic_config_is("ac", "segment.bytes", "2097152"));
        /* The whole set is replaced: retention.ms is back to its default. */
        cr_assert(topic_config_is("ac", "retention.ms", "604800000"));
        cr_assert_eq(topic_config_source("ac", "retention.ms"), 5);
        /* A null value: that key's default. */
        cr_assert_eq(alter(v, "ac", "retention.ms", "1000", "segment.bytes", NULL, false), 0);
        cr_assert(topic_config_is("ac", "segment.bytes", "1073741824"));
        cr_assert(topic_config_is("ac", "retention.bytes", "1000000000"));
        cr_assert(topic_config_is("ac", "retention.ms", "1000"));
        cr_assert_eq(alter(v, "ac", "retention.bytes", "lots", NULL, NULL, false), 40);
        cr_assert_eq(alter(v, "ac", "no.such", "1", NULL, NULL, false), 40);
        cr_assert_eq(alter(v, "ac", "retention.ms", "1", "retention.ms", "2", false), 42);
        cr_assert_eq(alter(v, "ac-none", "retention.ms", "1", NULL, NULL, false), 3);
        cr_assert(topic_config_is("ac", "retention.ms", "1000"), "failed alters changed nothing");
    }
}

static int16_t incremental(int16_t v, const char *topic, const char *key, int8_t op,
                           const char *value)
{
    struct rv_kp_incremental_alter_configs_request req;
    rv_kp_incremental_alter_configs_request_init(&req);
    struct rv_kp_incremental_alter_configs_request_alter_configs_resource res;
    rv_kp_incremental_alter_configs_request_alter_configs_resource_init(&res);
    struct rv_kp_incremental_alter_configs_request_alterable_config c;
    rv_kp_incremental_alter_configs_request_alterable_config_init(&c);
    c.name = S(key);
    c.config_operation = op;
    c.value = S(value);
    res.resource_type = 2;
    res.resource_name = S(topic);
    res.configs.count = 1;
    res.configs.items = &c;
    req.resources.count = 1;
    req.resources.items = &res;
    struct rv_kp_incremental_alter_configs_response *resp =
        call(RV_KP_API_INCREMENTAL_ALTER_CONFIGS, v, &req);
    cr_assert_eq(resp->responses.count, 1);
    return resp->responses.items[0].error_code;
}

Test(kadmin, incremental_alter_configs_in_every_version, .init = fixture_open,
     .fini = fixture_close)
{
    cr_assert_eq(create_one(1, "iac", 1, "retention.ms", "3600000"), 0);
    for (int16_t v = 0; v <= 1; v++) {
        cr_assert_eq(incremental(v, "iac", "retention.bytes", 0, "2097152"), 0);
        cr_assert(topic_config_is("iac", "retention.bytes", "2097152"));
        cr_assert(topic_config_is("iac", "retention.ms", "3600000"), "SET keeps the rest");
        cr_assert_eq(incremental(v, "iac", "retention.bytes", 1, NULL), 0); /* DELETE */
        cr_assert(topic_config_is("iac", "retention.bytes", "1000000000"));
        cr_assert_eq(incremental(v, "iac", "cleanup.policy", 2, "compact"), 0); /* APPEND */
        cr_assert(topic_config_is("iac", "cleanup.policy", "compact,delete"));
        cr_assert_eq(incremental(v, "iac", "cleanup.policy", 3, "delete"), 0); /* SUBTRACT */
        cr_assert(topic_config_is("iac", "cleanup.policy", "compact"));
        cr_assert_eq(incremental(v, "iac", "cleanup.policy", 3, "compact"), 40, "empty");
        cr_assert_eq(incremental(v, "iac", "cleanup.policy", 0, "delete"), 0);
        cr_assert_eq(incremental(v, "iac", "retention.ms", 2, "5"), 40, "a scalar");
        cr_assert_eq(incremental(v, "iac", "retention.ms", 0, "soon"), 40);
        cr_assert_eq(incremental(v, "iac", "retention.ms", 0, NULL), 42);
        cr_assert_eq(incremental(v, "iac", "retention.ms", 7, "1"), 42);
        cr_assert_eq(incremental(v, "iac", "no.such", 0, "1"), 40);
        cr_assert_eq(incremental(v, "iac-none", "retention.ms", 0, "1"), 3);
        cr_assert(topic_config_is("iac", "retention.ms", "3600000"));
    }
    /* Broker configs are static. */
    struct rv_kp_incremental_alter_configs_request req;
    rv_kp_incremental_alter_configs_request_init(&req);
    struct rv_kp_incremental_alter_configs_request_alter_configs_resource res;
    rv_kp_incremental_alter_configs_request_alter_configs_resource_init(&res);
    struct rv_kp_incremental_alter_configs_request_alterable_config c;
    rv_kp_incremental_alter_configs_request_alterable_config_init(&c);
    c.name = S("num.partitions");
    c.value = S("5");
    res.resource_type = 4;
    res.resource_name = S("0");
    res.configs.count = 1;
    res.configs.items = &c;
    req.resources.count = 1;
    req.resources.items = &res;
    struct rv_kp_incremental_alter_configs_response *resp =
        call(RV_KP_API_INCREMENTAL_ALTER_CONFIGS, 1, &req);
    cr_assert_eq(resp->responses.items[0].error_code, 42);
}

/* ---- DeleteRecords and DescribeLogDirs ------------------------------------------------------ */

static struct rv_kp_delete_records_response_partition_result
delete_records(int16_t v, const char *topic, int32_t partition, int64_t offset)
{
    struct rv_kp_delete_records_request req;
    rv_kp_delete_records_request_init(&req);
    struct rv_kp_delete_records_request_topic t;
    rv_kp_delete_records_request_topic_init(&t);
    struct rv_kp_delete_records_request_partition p;
    rv_kp_delete_records_request_partition_init(&p);
    p.partition_index = partition;
    p.offset = offset;
    t.name = S(topic);
    t.partitions.count = 1;
    t.partitions.items = &p;
    req.topics.count = 1;
    req.topics.items = &t;
    req.timeout_ms = 10000;
    struct rv_kp_delete_records_response *resp = call(RV_KP_API_DELETE_RECORDS, v, &req);
    cr_assert_eq(resp->topics.count, 1);
    cr_assert_eq(resp->topics.items[0].partitions.count, 1);
    return resp->topics.items[0].partitions.items[0];
}

Test(kadmin, delete_records_in_every_version, .init = fixture_open, .fini = fixture_close)
{
    cr_assert_eq(create_one(1, "dr", 4, NULL, NULL), 0);
    for (int32_t p = 0; p < 4; p++)
        produce("dr", p, 30, 100);
    for (int16_t v = 0; v <= 2; v++) {
        struct rv_kp_delete_records_response_partition_result r = delete_records(v, "dr", v, 10);
        cr_assert_eq(r.error_code, 0);
        cr_assert_eq(r.low_watermark, 10);
        r = delete_records(v, "dr", v, 5); /* below the start: nothing moves */
        cr_assert_eq(r.error_code, 0);
        cr_assert_eq(r.low_watermark, 10);
        r = delete_records(v, "dr", v, 31);
        cr_assert_eq(r.error_code, 1);
        cr_assert_eq(r.low_watermark, -1);
        r = delete_records(v, "dr", v, -5);
        cr_assert_eq(r.error_code, 1);
        r = delete_records(v, "dr", v, -1); /* the high watermark */
        cr_assert_eq(r.error_code, 0);
        cr_assert_eq(r.low_watermark, 30);
        struct rv_partition_info pi;
        cr_assert_eq(rv_partition_info(F.st, "dr", v, &pi), 0);
        cr_assert_eq(pi.log_start, 30);
        cr_assert_eq(delete_records(v, "dr", 9, 1).error_code, 3);
        cr_assert_eq(delete_records(v, "dr-none", 0, 1).error_code, 3);
    }
    /* Several partitions and topics in one request, over both shards. */
    struct rv_kp_delete_records_request req;
    rv_kp_delete_records_request_init(&req);
    struct rv_kp_delete_records_request_topic t[2];
    struct rv_kp_delete_records_request_partition ps[5];
    for (int i = 0; i < 5; i++) {
        rv_kp_delete_records_request_partition_init(&ps[i]);
        ps[i].partition_index = i;
        ps[i].offset = 20;
    }
    rv_kp_delete_records_request_topic_init(&t[0]);
    rv_kp_delete_records_request_topic_init(&t[1]);
    t[0].name = S("dr-none");
    t[0].partitions.count = 1;
    t[0].partitions.items = &ps[0];
    t[1].name = S("dr");
    t[1].partitions.count = 5;
    t[1].partitions.items = ps;
    req.topics.count = 2;
    req.topics.items = t;
    struct rv_kp_delete_records_response *resp = call(RV_KP_API_DELETE_RECORDS, 2, &req);
    cr_assert_eq(resp->topics.items[0].partitions.items[0].error_code, 3);
    int16_t want_err[5] = {0, 0, 0, 0, 3};
    int64_t want_low[5] = {30, 30, 30, 20, -1};
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(resp->topics.items[1].partitions.items[i].error_code, want_err[i], "p%d", i);
        cr_assert_eq(resp->topics.items[1].partitions.items[i].low_watermark, want_low[i], "p%d",
                     i);
    }
}

Test(kadmin, describe_log_dirs_in_every_version, .init = fixture_open, .fini = fixture_close)
{
    cr_assert_eq(create_one(1, "ld", 3, NULL, NULL), 0);
    cr_assert_eq(create_one(1, "ld-empty", 1, NULL, NULL), 0);
    produce("ld", 0, 20, 1000);
    produce("ld", 2, 5, 1000);
    /* This connection is node 0 (the shared port): it reports shard 0's logs. */
    bool is_ours[3], is_empty_ours;
    struct rv_part_ref ref;
    for (int32_t p = 0; p < 3; p++) {
        cr_assert_eq(rv_store_lookup(F.st, "ld", 2, p, &ref), 0);
        is_ours[p] = ref.owner == 0;
    }
    cr_assert_eq(rv_store_lookup(F.st, "ld-empty", 8, 0, &ref), 0);
    is_empty_ours = ref.owner == 0;
    for (int16_t v = 0; v <= 4; v++) {
        for (int asked = 0; asked < 2; asked++) {
            struct rv_kp_describe_log_dirs_request req;
            rv_kp_describe_log_dirs_request_init(&req);
            struct rv_kp_describe_log_dirs_request_describable_log_dir_topic t[2];
            int32_t parts[2] = {0, 7};
            rv_kp_describe_log_dirs_request_describable_log_dir_topic_init(&t[0]);
            rv_kp_describe_log_dirs_request_describable_log_dir_topic_init(&t[1]);
            t[0].topic = S("ld");
            t[0].partitions = (struct rv_kp_arr_i32){.count = 2, .items = parts};
            t[1].topic = S("ld-none");
            t[1].partitions = (struct rv_kp_arr_i32){.count = 1, .items = parts};
            req.topics.count = asked ? 2 : -1;
            req.topics.items = t;
            struct rv_kp_describe_log_dirs_response *resp =
                call(RV_KP_API_DESCRIBE_LOG_DIRS, v, &req);
            cr_assert_eq(resp->error_code, 0);
            cr_assert_eq(resp->results.count, 1);
            struct rv_kp_describe_log_dirs_response_result *d = &resp->results.items[0];
            cr_assert_eq(d->error_code, 0);
            cr_assert_eq(d->log_dir.ptr[0], '/', "an absolute path");
            if (v >= 4) {
                cr_assert_gt(d->total_bytes, 0);
                cr_assert_geq(d->total_bytes, d->usable_bytes);
            }
            int64_t sizes[3] = {-1, -1, -1};
            bool has_empty = false;
            for (int32_t i = 0; i < d->topics.count; i++) {
                const struct rv_kp_describe_log_dirs_response_topic *tp = &d->topics.items[i];
                has_empty |= str_is(tp->name, "ld-empty");
                cr_assert(str_is(tp->name, "ld") || str_is(tp->name, "ld-empty"));
                for (int32_t k = 0; k < tp->partitions.count && str_is(tp->name, "ld"); k++) {
                    int32_t idx = tp->partitions.items[k].partition_index;
                    cr_assert(idx >= 0 && idx < 3);
                    sizes[idx] = tp->partitions.items[k].partition_size;
                    cr_assert_eq(tp->partitions.items[k].offset_lag, 0);
                }
            }
            if (is_ours[0])
                cr_assert_geq(sizes[0], 20000, "v%d: partition 0 holds 20 KB: %ld", v,
                              (long)sizes[0]);
            else
                cr_assert_eq(sizes[0], -1, "v%d: another node's partition", v);
            if (asked) {
                cr_assert_not(has_empty);
                cr_assert_eq(sizes[1], -1);
                cr_assert_eq(sizes[2], -1);
            } else {
                cr_assert_eq(has_empty, is_empty_ours);
                cr_assert_eq(sizes[1], is_ours[1] ? 0 : -1);
                if (is_ours[2])
                    cr_assert_geq(sizes[2], 5000);
                else
                    cr_assert_eq(sizes[2], -1);
            }
        }
    }
}

Test(kadmin, names_differing_by_dot_and_underscore_collide, .init = fixture_open,
     .fini = fixture_close)
{
    cr_assert_eq(create_one(5, "pay.ments", 1, NULL, NULL), 0);
    cr_assert_eq(create_one(5, "pay_ments", 1, NULL, NULL), 17, "INVALID_TOPIC_EXCEPTION");
    cr_assert_eq(create_one(5, "pay.ments", 1, NULL, NULL), 36, "TOPIC_ALREADY_EXISTS");
    cr_assert_eq(create_one(5, "pay-ments", 1, NULL, NULL), 0, "'-' is its own character");
}
