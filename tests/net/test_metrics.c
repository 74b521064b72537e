/*
 * tests/net/test_metrics.c - the broker's metrics (net/metrics.h) and admin
 * HTTP listener (net/admin_http.h).
 *
 * The text format is read back by a strict parser of exposition format 0.0.4
 * (every line a HELP, a TYPE or a sample; names and label names well formed;
 * label values escaped; values numbers; every sample after its family's HELP
 * and TYPE, families never split; counters end in _total; histogram buckets
 * cumulative, ending in le="+Inf" equal to _count). The hooks are driven on
 * real shards and collected over the mailboxes, with and without a store;
 * the HTTP listener is asked over a socket; the config key parses.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../support/rt.h"
#include "net/admin_http.h"
#include "net/config.h"
#include "net/kproto_gen.h"
#include "net/metrics.h"
#include "storage/batch.h"
#include "storage/part.h"

/* ---- a strict reader of the text format ---------------------------------------------------------- */

#define FAMILIES_MAX 256

struct expo_family {
    char name[128];
    char type[16];
    bool has_help;
    bool has_type;
    bool is_closed; /* another family started after it */
};

struct expo {
    struct expo_family fams[FAMILIES_MAX];
    uint32_t fam_count;
    int32_t current; /* the family samples belong to now */
    uint32_t samples;
    /* histogram check: the running bucket value of the current series */
    char series[1024];
    double last_bucket;
    bool has_inf;
    double inf_value;
};

static bool expo_name_char(char c, bool is_first, bool is_label)
{
    bool is_alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!is_label && c == ':')
        return true;
    return is_alpha || (!is_first && c >= '0' && c <= '9');
}

/* Read a name at *p; false when there is none. */
static bool expo_read_name(const char **p, char *out, size_t cap, bool is_label)
{
    size_t n = 0;
    while (expo_name_char(**p, n == 0, is_label)) {
        cr_assert_lt(n + 1, cap);
        out[n++] = *(*p)++;
    }
    out[n] = '\0';
    return n > 0;
}

static struct expo_family *expo_family(struct expo *e, const char *name)
{
    for (uint32_t i = 0; i < e->fam_count; i++) {
        if (strcmp(e->fams[i].name, name) == 0)
            return &e->fams[i];
    }
    cr_assert_lt(e->fam_count, FAMILIES_MAX);
    struct expo_family *f = &e->fams[e->fam_count++];
    memset(f, 0, sizeof(*f));
    snprintf(f->name, sizeof(f->name), "%s", name);
    return f;
}

static void expo_switch_to(struct expo *e, struct expo_family *f)
{
    int32_t index = (int32_t)(f - e->fams);
    if (e->current == index)
        return;
    cr_assert_not(f->is_closed, "family %s is split", f->name);
    if (e->current >= 0)
        e->fams[e->current].is_closed = true;
    e->current = index;
}

/* The family a sample name belongs to (histograms: without _bucket/_sum/_count). */
static struct expo_family *expo_sample_family(struct expo *e, const char *name, char *suffix)
{
    suffix[0] = '\0';
    for (uint32_t i = 0; i < e->fam_count; i++) {
        struct expo_family *f = &e->fams[i];
        size_t n = strlen(f->name);
        if (strcmp(f->name, name) == 0)
            return f;
        if (strcmp(f->type, "histogram") == 0 && strncmp(name, f->name, n) == 0 &&
            (strcmp(name + n, "_bucket") == 0 || strcmp(name + n, "_sum") == 0 ||
             strcmp(name + n, "_count") == 0)) {
            strcpy(suffix, name + n);
            return f;
        }
    }
    return NULL;
}

static void expo_line(struct expo *e, const char *line)
{
    char name[128];
    if (line[0] == '#') {
        const char *p = line + 1;
        bool is_help = strncmp(p, " HELP ", 6) == 0;
        bool is_type = strncmp(p, " TYPE ", 6) == 0;
        cr_assert(is_help || is_type, "comment line: %s", line);
        p += 6;
        cr_assert(expo_read_name(&p, name, sizeof(name), false), "no name: %s", line);
        cr_assert_eq(*p, ' ', "%s", line);
        p++;
        struct expo_family *f = expo_family(e, name);
        expo_switch_to(e, f);
        if (is_help) {
            cr_assert_not(f->has_help, "two HELP for %s", name);
            cr_assert(strlen(p) > 0, "empty HELP: %s", line);
            f->has_help = true;
        } else {
            cr_assert_not(f->has_type, "two TYPE for %s", name);
            cr_assert(strcmp(p, "counter") == 0 || strcmp(p, "gauge") == 0 ||
                          strcmp(p, "histogram") == 0,
                      "type %s", p);
            snprintf(f->type, sizeof(f->type), "%s", p);
            f->has_type = true;
            if (strcmp(p, "counter") == 0) {
                size_t n = strlen(name);
                cr_assert(n > 6 && strcmp(name + n - 6, "_total") == 0, "counter %s", name);
            }
        }
        return;
    }
    const char *p = line;
    cr_assert(expo_read_name(&p, name, sizeof(name), false), "sample without a name: %s", line);
    char suffix[16];
    struct expo_family *f = expo_sample_family(e, name, suffix);
    cr_assert_not_null(f, "sample %s before its HELP/TYPE", name);
    cr_assert(f->has_help && f->has_type, "%s lacks HELP or TYPE", f->name);
    expo_switch_to(e, f);
    char labels[512] = "";
    char le[300] = "";
    size_t labels_len = 0;
    if (*p == '{') {
        p++;
        while (*p != '}') {
            char lname[64];
            cr_assert(expo_read_name(&p, lname, sizeof(lname), true), "label name: %s", line);
            cr_assert_eq(*p, '=', "%s", line);
            p++;
            cr_assert_eq(*p, '"', "%s", line);
            p++;
            char value[300];
            size_t n = 0;
            while (*p != '"') {
                cr_assert_neq(*p, '\0', "unterminated label value: %s", line);
                cr_assert_neq(*p, '\n', "%s", line);
                if (*p == '\\') {
                    p++;
                    cr_assert(*p == '\\' || *p == '"' || *p == 'n', "bad escape: %s", line);
                }
                cr_assert_lt(n + 1, sizeof(value));
                value[n++] = *p++;
            }
            value[n] = '\0';
            p++;
            if (strcmp(lname, "le") == 0)
                snprintf(le, sizeof(le), "%s", value);
            else
                labels_len += (size_t)snprintf(labels + labels_len, sizeof(labels) - labels_len,
                                               "%s=%s,", lname, value);
            if (*p == ',')
                p++;
            else
                cr_assert_eq(*p, '}', "%s", line);
        }
        p++;
    }
    cr_assert_eq(*p, ' ', "no value: %s", line);
    p++;
    char *end = NULL;
    double v = strtod(p, &end);
    cr_assert(end != p && *end == '\0', "value '%s': %s", p, line);
    cr_assert(!isnan(v) && v >= 0, "%s", line); /* nothing we export is negative */
    e->samples++;
    if (strcmp(f->type, "histogram") != 0)
        return;
    cr_assert_neq(suffix[0], '\0', "histogram sample %s", name);
    char series[1024];
    snprintf(series, sizeof(series), "%s{%s}", f->name, labels);
    if (strcmp(suffix, "_bucket") == 0) {
        cr_assert_neq(le[0], '\0', "bucket without le: %s", line);
        if (strcmp(series, e->series) != 0) {
            snprintf(e->series, sizeof(e->series), "%s", series);
            e->last_bucket = 0;
            e->has_inf = false;
        }
        cr_assert_not(e->has_inf, "bucket after +Inf: %s", line);
        cr_assert_geq(v, e->last_bucket, "buckets not cumulative: %s", line);
        e->last_bucket = v;
        if (strcmp(le, "+Inf") == 0) {
            e->has_inf = true;
            e->inf_value = v;
        } else {
            char *le_end = NULL;
            strtod(le, &le_end);
            cr_assert(le_end != le && *le_end == '\0', "le %s", le);
        }
    } else {
        cr_assert_str_eq(series, e->series, "%s without buckets before", line);
        cr_assert(e->has_inf, "%s: no +Inf bucket", line);
        if (strcmp(suffix, "_count") == 0)
            cr_assert_eq(v, e->inf_value, "_count != +Inf bucket: %s", line);
    }
}

/* Check every line of text; returns the samples read. */
static uint32_t expo_check(const char *text)
{
    struct expo *e = calloc(1, sizeof(*e));
    cr_assert_not_null(e);
    e->current = -1;
    size_t len = strlen(text);
    cr_assert(len > 0 && text[len - 1] == '\n', "the text ends with a newline");
    char *copy = strdup(text);
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save))
        expo_line(e, line);
    for (uint32_t i = 0; i < e->fam_count; i++)
        cr_assert(e->fams[i].has_help && e->fams[i].has_type, "%s", e->fams[i].name);
    uint32_t samples = e->samples;
    free(copy);
    free(e);
    return samples;
}

/* The value of the sample line that starts with `prefix` ("name{labels} "), or -1. */
static double expo_value(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, prefix, n) == 0)
            return strtod(p + n, NULL);
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return -1;
}

static char *format_text(const struct rv_metrics_snapshot *snap)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert_not_null(f);
    cr_assert_eq(rv_metrics_format(snap, f), 0);
    fclose(f);
    return text;
}

/* ---- the formatter on a snapshot made by hand ---------------------------------------------------- */

Test(metrics, format_reads_back)
{
    struct rv_metrics_snapshot snap = {0};
    struct rv_metrics_shard_snap shards[2];
    memset(shards, 0, sizeof(shards));
    snap.shard_count = 2;
    snap.shards = shards;
    snap.is_ready = true;
    shards[1].is_serving = shards[0].is_serving = true;
    struct rv_metrics_api *produce = &shards[1].apis[RV_KP_API_PRODUCE];
    produce->requests = 5;
    produce->errors = 1;
    produce->sum_ns = 3000000;
    produce->buckets[0] = 2;
    produce->buckets[3] = 2;
    produce->buckets[RV_METRICS_LATENCY_BUCKETS] = 1;
    shards[0].apis[RV_METRICS_API_SLOTS - 1].requests = 2; /* "unknown" */
    shards[0].apis[RV_METRICS_API_SLOTS - 1].errors = 2;
    shards[0].apis[RV_METRICS_API_SLOTS - 1].buckets[0] = 2;
    struct rv_metrics_topic topics[2] = {
        {.topic_id = 1, .bytes_in = 1000, .records_in = 10, .batches_in = 2, .name = "orders"},
        {.topic_id = 2, .bytes_out = 7, .records_out = 1, .name = "we\"ird\\name"},
    };
    shards[0].topics = topics;
    shards[0].topic_count = 2;
    shards[0].conns_accepted = 4;
    shards[0].conns_closed = 1;
    shards[0].rt.stalls = 3;
    shards[0].has_storage = true;
    shards[0].storage.logs = 3;
    shards[0].storage.logs_unloaded = 6;
    shards[0].storage.wal.groups = 4;
    shards[0].storage.wal.group_buckets[0] = 3;
    shards[0].storage.wal.group_buckets[RV_WAL_GROUP_BUCKETS] = 1;
    shards[0].storage.wal.group_records_sum = 600;
    shards[0].storage.wal.sync_buckets[2] = 2;
    shards[0].storage.wal.sync_ns_sum = 150000;
    shards[0].storage.hot.hits = 9;
    char *names[] = {"orders", NULL}; /* a topic gone: its partitions are not written */
    snap.topic_names = names;
    snap.topic_name_count = 2;
    struct rv_metrics_part parts[2] = {
        {.topic_index = 0, .partition = 2, .shard = 0, .log_start = 5, .log_end = 42},
        {.topic_index = 1, .partition = 0, .shard = 1, .log_end = 9},
    };
    snap.parts = parts;
    snap.part_count = 2;
    snap.is_parts_capped = true;

    char *text = format_text(&snap);
    cr_assert_gt(expo_check(text), 100);
    cr_assert_eq(expo_value(text, "rivven_kafka_requests_total{shard=\"1\",api=\"Produce\"} "), 5);
    cr_assert_eq(
        expo_value(text, "rivven_kafka_request_errors_total{shard=\"1\",api=\"Produce\"} "), 1);
    cr_assert_eq(expo_value(text, "rivven_kafka_requests_total{shard=\"0\",api=\"unknown\"} "), 2);
    cr_assert_eq(expo_value(text, "rivven_kafka_request_duration_seconds_bucket{shard=\"1\","
                                  "api=\"Produce\",le=\"0.001\"} "),
                 4);
    cr_assert_eq(expo_value(text, "rivven_kafka_request_duration_seconds_count{shard=\"1\","
                                  "api=\"Produce\"} "),
                 5);
    cr_assert_float_eq(expo_value(text, "rivven_kafka_request_duration_seconds_sum{shard=\"1\","
                                        "api=\"Produce\"} "),
                       0.003, 1e-9);
    cr_assert_eq(expo_value(text, "rivven_topic_records_in_total{shard=\"0\",topic=\"orders\"} "),
                 10);
    cr_assert_eq(
        expo_value(text, "rivven_topic_bytes_out_total{shard=\"0\",topic=\"we\\\"ird\\\\name\"} "),
        7);
    cr_assert_eq(expo_value(text, "rivven_connections_open{shard=\"0\"} "), 3);
    cr_assert_eq(expo_value(text, "rivven_reactor_stalls_total{shard=\"0\"} "), 3);
    cr_assert_eq(expo_value(text, "rivven_partitions{shard=\"0\"} "), 3);
    cr_assert_eq(expo_value(text, "rivven_partitions{shard=\"1\"} "), -1); /* no storage there */
    cr_assert_eq(expo_value(text, "rivven_partitions_unloaded_total{shard=\"0\"} "), 6);
    cr_assert_eq(expo_value(text, "rivven_wal_group_commits_total{shard=\"0\"} "), 4);
    cr_assert_eq(expo_value(text, "rivven_wal_group_records_bucket{shard=\"0\",le=\"512\"} "), 3);
    cr_assert_eq(expo_value(text, "rivven_wal_group_records_count{shard=\"0\"} "), 4);
    cr_assert_eq(expo_value(text, "rivven_wal_fsync_duration_seconds_bucket{shard=\"0\","
                                  "le=\"0.0001\"} "),
                 2);
    cr_assert_eq(expo_value(text, "rivven_wal_fsync_duration_seconds_bucket{shard=\"0\","
                                  "le=\"0.000025\"} "),
                 0);
    cr_assert_null(strstr(text, "e-0"), "a number written with an exponent");
    cr_assert_eq(expo_value(text, "rivven_hot_tier_hits_total{shard=\"0\"} "), 9);
    cr_assert_eq(expo_value(text, "rivven_partition_log_end_offset{shard=\"0\",topic=\"orders\","
                                  "partition=\"2\"} "),
                 42);
    cr_assert_eq(expo_value(text, "rivven_partition_log_start_offset{shard=\"0\",topic=\"orders\","
                                  "partition=\"2\"} "),
                 5);
    cr_assert_null(strstr(text, "partition=\"0\"}"), "the gone topic's partition is not written");
    cr_assert_eq(expo_value(text, "rivven_partition_series_capped "), 1);
    cr_assert_eq(expo_value(text, "rivven_ready "), 1);
    free(text);
}

Test(metrics, empty_snapshot_reads_back)
{
    struct rv_metrics_snapshot snap = {0};
    char *text = format_text(&snap);
    expo_check(text);
    cr_assert_eq(expo_value(text, "rivven_ready "), 0);
    free(text);
}

Test(metrics, hooks_without_counters_do_nothing)
{
    cr_assert_eq(rv_metrics_on_request_start(), 0);
    rv_metrics_on_request_done(0, 0, true);
    rv_metrics_on_produced(1ull << 32, NULL, 0);
    rv_metrics_on_fetched(1ull << 32, NULL, 0);
    rv_metrics_on_conn_open();
    rv_metrics_on_conn_close();
    cr_assert_str_eq(rv_metrics_api_name(RV_KP_API_FETCH), "Fetch");
    cr_assert_str_eq(rv_metrics_api_name(RV_METRICS_API_SLOTS - 1), "unknown");
}

/* ---- hooks on shards, collected over the mailboxes ------------------------------------------------ */

/* A batch header of `len` bytes (whole) holding `records` records. */
static void make_batch(uint8_t *b, uint32_t len, uint32_t records)
{
    memset(b, 0, len);
    uint32_t blen = len - RV_BATCH_LOG_OVERHEAD_BYTES;
    for (int i = 0; i < 4; i++) {
        b[RV_BATCH_LENGTH_POS + i] = (uint8_t)(blen >> (24 - 8 * i));
        b[RV_BATCH_RECORD_COUNT_POS + i] = (uint8_t)(records >> (24 - 8 * i));
    }
    b[RV_BATCH_MAGIC_POS] = RV_BATCH_MAGIC;
}

static uint8_t hook_bytes[300];

static void hooks_run(void *arg)
{
    (void)arg;
    uint64_t start = rv_metrics_on_request_start();
    cr_assert_neq(start, 0);
    rv_metrics_on_request_done(RV_KP_API_PRODUCE, start, false);
    rv_metrics_on_request_done(RV_KP_API_PRODUCE, start, true);
    rv_metrics_on_request_done(-1, start, true);
    uint64_t key = 7ull << 32 | 3;
    make_batch(hook_bytes, 100, 5);
    make_batch(hook_bytes + 100, 200, 11);
    rv_metrics_on_produced(key, hook_bytes, 100);
    struct rv_fetch_slice slices[2] = {{.bytes = hook_bytes, .len = 300},
                                       {.bytes = hook_bytes + 100, .len = 200}};
    rv_metrics_on_fetched(key, slices, 2);
    rv_metrics_on_conn_open();
    rv_metrics_on_conn_open();
    rv_metrics_on_conn_close();
}

Test(metrics, hooks_are_collected_per_shard)
{
    rv_runtime_t *rt = test_rt_open(2);
    cr_assert_eq(rv_metrics_open(rt), 0);
    test_run_on(rt, 1, hooks_run, NULL);
    struct rv_metrics_snapshot *snap = NULL;
    cr_assert_eq(rv_metrics_collect(rt, false, &snap), 0);
    cr_assert_eq(snap->shard_count, 2);
    cr_assert_not(snap->is_ready); /* nobody serves yet */
    const struct rv_metrics_shard_snap *s = &snap->shards[1];
    cr_assert(s->has_counters && !s->has_storage);
    cr_assert_eq(s->apis[RV_KP_API_PRODUCE].requests, 2);
    cr_assert_eq(s->apis[RV_KP_API_PRODUCE].errors, 1);
    cr_assert_eq(s->apis[RV_METRICS_API_SLOTS - 1].requests, 1);
    cr_assert_eq(s->conns_accepted, 2);
    cr_assert_eq(s->conns_closed, 1);
    cr_assert_eq(s->topic_count, 1);
    cr_assert_eq(s->topics[0].topic_id, 7);
    cr_assert_eq(s->topics[0].bytes_in, 100);
    cr_assert_eq(s->topics[0].records_in, 5);
    cr_assert_eq(s->topics[0].batches_in, 1);
    cr_assert_eq(s->topics[0].bytes_out, 500);
    cr_assert_eq(s->topics[0].records_out, 5 + 11 + 11);
    cr_assert_eq(snap->shards[0].apis[RV_KP_API_PRODUCE].requests, 0);
    cr_assert_gt(s->rt.loop_turns, 0);
    char *text = format_text(snap);
    expo_check(text);
    free(text);
    rv_metrics_snapshot_free(snap);

    cr_assert_eq(rv_metrics_collect(rt, true, &snap), 0);
    cr_assert_not(snap->is_ready);
    rv_metrics_snapshot_free(snap);
    rv_metrics_close(rt);
    rv_metrics_close(rt); /* twice is fine */
    cr_assert_eq(rv_metrics_collect(rt, false, &snap), 0);
    cr_assert_not(snap->shards[1].has_counters);
    rv_metrics_snapshot_free(snap);
    rv_runtime_close(rt);
}

/* ---- with a store: storage counters, partitions, readiness ----------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

Test(metrics, store_partitions_and_readiness)
{
    char dir[] = "/tmp/rivven-metrics-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    cfg.shard_count = 2;
    cfg.allow_oversubscribe = true;
    cfg.data_dir = dir;
    rv_runtime_t *rt = NULL;
    cr_assert_eq(rv_runtime_open(&rt, &cfg), 0, "%s", rv_err_msg());
    struct rv_store_config scfg;
    rv_store_config_init(&scfg);
    rv_store_t *st = NULL;
    cr_assert_eq(rv_store_open(&st, rt, &scfg), 0, "%s", rv_err_msg());
    struct rv_topic_config tc;
    rv_topic_config_init(&tc);
    tc.partitions = 4;
    cr_assert_eq(rv_topic_create(st, "metered", &tc), 0, "%s", rv_err_msg());
    struct rv_record recs[3] = {{.key_len = -1, .value = "a", .value_len = 1},
                                {.key_len = -1, .value = "b", .value_len = 1},
                                {.key_len = -1, .value = "c", .value_len = 1}};
    cr_assert_geq(rv_produce_sync(st, "metered", 1, recs, 3, RV_ACKS_ALL), 0);
    cr_assert_geq(rv_produce_sync(st, "metered", 1, recs, 2, RV_ACKS_ALL), 0);

    cr_assert_eq(rv_metrics_open(rt), 0);
    struct rv_metrics_snapshot *snap = NULL;
    cr_assert_eq(rv_metrics_collect(rt, false, &snap), 0);
    cr_assert_not(snap->is_ready);
    cr_assert_not(snap->shards[0].has_storage); /* not serving: the store is not ours yet */
    rv_metrics_snapshot_free(snap);

    rv_metrics_set_serving(rt, st);
    cr_assert_eq(rv_metrics_collect(rt, true, &snap), 0);
    cr_assert(snap->is_ready);
    rv_metrics_snapshot_free(snap);
    cr_assert_eq(rv_metrics_collect(rt, false, &snap), 0);
    cr_assert(snap->is_ready);
    uint32_t logs = 0, groups = 0, syncs = 0;
    for (uint32_t i = 0; i < snap->shard_count; i++) {
        cr_assert(snap->shards[i].has_storage);
        logs += snap->shards[i].storage.logs;
        groups += (uint32_t)snap->shards[i].storage.wal.groups;
        uint64_t synced = 0;
        for (uint32_t b = 0; b <= RV_WAL_SYNC_BUCKETS; b++)
            synced += snap->shards[i].storage.wal.sync_buckets[b];
        syncs += (uint32_t)synced;
    }
    cr_assert_eq(logs, 4);
    cr_assert_geq(groups, 2);
    cr_assert_geq(syncs, 2);
    bool has_p1 = false;
    for (uint32_t i = 0; i < snap->part_count; i++) {
        const struct rv_metrics_part *p = &snap->parts[i];
        cr_assert_str_eq(snap->topic_names[p->topic_index], "metered");
        if (p->partition == 1) {
            has_p1 = true;
            cr_assert_eq(p->log_end, 5);
            cr_assert_eq(p->log_start, 0);
        }
    }
    cr_assert(has_p1);
    char *text = format_text(snap);
    expo_check(text);
    cr_assert_eq(expo_value(text, "rivven_ready "), 1);
    free(text);
    rv_metrics_snapshot_free(snap);

    rv_metrics_set_serving(rt, NULL);
    cr_assert_eq(rv_metrics_collect(rt, true, &snap), 0);
    cr_assert_not(snap->is_ready);
    rv_metrics_snapshot_free(snap);
    rv_metrics_close(rt);
    rv_store_close(st);
    rv_runtime_close(rt);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- the HTTP listener ------------------------------------------------------------------------------ */

/* Send `req` to 127.0.0.1:port and read the whole answer (malloc'd). */
static char *http_ask(uint16_t port, const char *req, size_t req_len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    size_t sent = 0;
    while (sent < req_len) {
        ssize_t n = send(fd, req + sent, req_len - sent, MSG_NOSIGNAL);
        if (n <= 0)
            break; /* the server may answer (431) and close before taking it all */
        sent += (size_t)n;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(fd);
    return buf;
}

static char *http_get(uint16_t port, const char *method, const char *path)
{
    char req[256];
    int n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: x\r\n\r\n", method, path);
    return http_ask(port, req, (size_t)n);
}

static void http_expect(uint16_t port, const char *method, const char *path, const char *status)
{
    char *ans = http_get(port, method, path);
    cr_assert(strncmp(ans, status, strlen(status)) == 0, "%s %s: %s", method, path, ans);
    cr_assert_not_null(strstr(ans, "Connection: close\r\n"));
    free(ans);
}

Test(metrics, http_endpoints)
{
    rv_runtime_t *rt = test_rt_open(2);
    cr_assert_eq(rv_metrics_open(rt), 0);
    rv_admin_http_t *a = NULL;
    cr_assert_eq(rv_admin_http_start(&a, rt, "127.0.0.1", 0), 0, "%s", rv_err_msg());
    uint16_t port = rv_admin_http_port(a);
    cr_assert_neq(port, 0);

    http_expect(port, "GET", "/health", "HTTP/1.1 200 ");
    http_expect(port, "GET", "/ready", "HTTP/1.1 503 ");
    http_expect(port, "GET", "/nothing", "HTTP/1.1 404 ");
    http_expect(port, "POST", "/metrics", "HTTP/1.1 405 ");
    http_expect(port, "GET", "/health?x=1", "HTTP/1.1 200 ");
    char *ans = http_get(port, "GET", "/metrics");
    cr_assert(strncmp(ans, "HTTP/1.1 200 ", 13) == 0, "%s", ans);
    cr_assert_not_null(strstr(ans, "Content-Type: text/plain; version=0.0.4"));
    char *body = strstr(ans, "\r\n\r\n");
    cr_assert_not_null(body);
    body += 4;
    size_t content_length = 0;
    cr_assert_eq(sscanf(strstr(ans, "Content-Length: "), "Content-Length: %zu", &content_length),
                 1);
    cr_assert_eq(strlen(body), content_length);
    expo_check(body);
    free(ans);
    ans = http_get(port, "HEAD", "/metrics");
    cr_assert(strncmp(ans, "HTTP/1.1 200 ", 13) == 0);
    cr_assert_str_eq(strstr(ans, "\r\n\r\n"), "\r\n\r\n"); /* no body */
    free(ans);
    ans = http_ask(port, "garbage\r\n\r\n", 11);
    cr_assert(strncmp(ans, "HTTP/1.1 400 ", 13) == 0, "%s", ans);
    free(ans);
    size_t big_len = RV_ADMIN_HTTP_HEAD_MAX + 100;
    char *big = malloc(big_len);
    memset(big, 'a', big_len);
    memcpy(big, "GET /health HTTP/1.1\r\nX: ", 25);
    ans = http_ask(port, big, big_len);
    cr_assert(strncmp(ans, "HTTP/1.1 431 ", 13) == 0, "%s", ans);
    free(ans);
    free(big);

    rv_metrics_set_serving(rt, NULL);
    http_expect(port, "GET", "/ready", "HTTP/1.1 503 ");
    rv_admin_http_stop(a);
    rv_admin_http_stop(NULL);
    rv_metrics_close(rt);
    rv_runtime_close(rt);
}

Test(metrics, http_port_in_use)
{
    rv_runtime_t *rt = test_rt_open(1);
    rv_admin_http_t *a = NULL, *b = NULL;
    cr_assert_eq(rv_admin_http_start(&a, rt, "127.0.0.1", 0), 0);
    cr_assert_eq(rv_admin_http_start(&b, rt, "127.0.0.1", rv_admin_http_port(a)), -EADDRINUSE);
    cr_assert_null(b);
    rv_admin_http_stop(a);
    rv_runtime_close(rt);
}

/* ---- the config key ----------------------------------------------------------------------------- */

Test(metrics, config_admin_listener)
{
    struct rv_config cfg;
    rv_config_init(&cfg);
    cr_assert(cfg.has_admin_listener);
    cr_assert_str_eq(cfg.admin_listener.host, "127.0.0.1");
    cr_assert_eq(cfg.admin_listener.port, 9644);
    cr_assert_eq(rv_config_set(&cfg, "rivven.admin.listener", ""), 0);
    cr_assert_not(cfg.has_admin_listener);
    cr_assert_eq(rv_config_set(&cfg, "rivven.admin.listener", "[::1]:0"), 0);
    cr_assert(cfg.has_admin_listener);
    cr_assert_str_eq(cfg.admin_listener.host, "::1");
    cr_assert_eq(cfg.admin_listener.port, 0);
    cr_assert_eq(rv_config_set(&cfg, "rivven.admin.listener", ":9999"), 0);
    cr_assert_str_eq(cfg.admin_listener.host, "");
    cr_assert_eq(rv_config_set(&cfg, "rivven.admin.listener", "localhost"), -EINVAL);
    cr_assert_not_null(strstr(rv_err_msg(), "rivven.admin.listener"));
    cr_assert_eq(rv_config_set(&cfg, "rivven.admin.listener", "h:70000"), -EINVAL);
    cr_assert_eq(cfg.admin_listener.port, 9999); /* unchanged by a bad value */

    /* It reads back from a dump, on and off. */
    const char *values[] = {"[::1]:9645", ""};
    for (size_t i = 0; i < 2; i++) {
        struct rv_config back;
        rv_config_init(&cfg);
        cr_assert_eq(rv_config_set(&cfg, "rivven.admin.listener", values[i]), 0);
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        rv_config_dump(&cfg, f);
        fclose(f);
        rv_config_init(&back);
        cr_assert_eq(rv_config_parse_text(&back, buf, "dump"), 0, "%s", rv_err_msg());
        cr_assert(memcmp(&cfg, &back, sizeof(cfg)) == 0, "%s", buf);
        free(buf);
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    rv_config_help(f);
    fclose(f);
    cr_assert_not_null(strstr(buf, "rivven.admin.listener=127.0.0.1:9644"));
    free(buf);
}
