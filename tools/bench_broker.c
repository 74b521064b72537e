/*
 * tools/bench_broker.c - rivven-bench broker: a running rivvend driven by
 * librdkafka, the client most Kafka clients wrap (docs/benchmarks.md, "Broker").
 *
 *   limits     the loopback TCP limit (one connection through the runtime's
 *              io_uring sockets) and the disk's fdatasync p99 (fio), measured
 *              first, before the broker is started
 *   produce    100 B and 1 KiB values x none, lz4, zstd x acks=1, acks=all, a
 *              fresh topic per cell. Throughput: one producer tuned for it
 *              (BK_LINGER_MS, batch.size...) is fed as fast as it takes
 *              messages for --seconds (or --messages); messages/s and payload
 *              MB/s over first produce -> last delivery report, the wire bytes
 *              (librdkafka's tx_bytes), and the produce -> delivery latency of
 *              every message ("under load": mostly time queued in the client).
 *              Latency: another producer with linger.ms=0 sends --rate
 *              messages/s for --seconds, and the produce -> delivery latency of
 *              each is the figure the acks=all target is judged on.
 *   consume    every acks=1 topic read back from the beginning by one consumer
 *              (the simple consumer API: every partition on one queue).
 *   end-to-end a consumer tails a fresh topic while a producer sends --rate
 *              messages/s: receive time - the send time in the value.
 *
 * Every value starts with its send time (rv_clock_now_ns, CLOCK_MONOTONIC: the
 * clients are threads of this process) and its sequence number; the rest is cut
 * from a pseudo-random text of words and numbers, so lz4 and zstd have
 * something to do (the ratio they reach is printed).
 *
 * With --start PATH the bench starts that rivvend itself: a free port (and the
 * ones after it, one per shard), a data directory under the run's directory,
 * --num.partitions set to the topic partitions, stderr to a log file there; at
 * the end SIGTERM, and the exit status is checked. The broker's CPU time per
 * cell is read from /proc/PID/stat; the client's is this process's.
 *
 * Threading: the main thread produces (and consumes, in the consume cells); a
 * poller thread per producer serves its delivery reports and statistics
 * (rd_kafka_poll) and owns the histogram they fill until it is joined; the
 * end-to-end consumer is a thread of its own. librdkafka has its own threads.
 *
 * Compiled only when meson finds librdkafka; without it tools/bench.h has a
 * bench_broker that says so.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/hist.h"
#include "rivven.h"
#include "tools/bench.h"

#include <librdkafka/rdkafka.h>

#define BK_SECTION         "broker"
#define BK_POOL_BYTES      (16u << 20) /* the text values are cut from */
#define BK_HEADER          16u         /* send time and sequence number, first in every value */
#define BK_VALUE_MAX       1024u
#define BK_WARMUP_SEQ      UINT64_MAX /* the sequence number of a warm-up message */
#define BK_LINGER_MS       "5"        /* throughput producer: linger.ms */
#define BK_BATCH_BYTES     "1000000"  /* batch.size: bytes per partition batch */
#define BK_BATCH_MSGS      "100000"   /* batch.num.messages: batch.size decides */
#define BK_QUEUE_MSGS      "1000000"  /* queue.buffering.max.messages */
#define BK_QUEUE_KBYTES    "65536"    /* queue.buffering.max.kbytes: 64 MiB */
#define BK_INFLIGHT        "5" /* max.in.flight.requests.per.connection (librdkafka: 1000000) */
#define BK_STATS_MS        200 /* statistics.interval.ms of the throughput producer */
#define BK_FULL_WAIT_NS    100000ull      /* the client's queue is full: wait this long */
#define BK_DRAIN_NS        60000000000ull /* delivery of what is queued, at most */
#define BK_READY_NS        30000000000ull /* a topic's leaders known, a started broker up */
#define BK_CONSUME_IDLE_NS 10000000000ull /* a consumer that gets nothing this long gives up */
#define BK_STOP_WAIT_NS    60000000000ull /* a started broker exits after SIGTERM within */
#define BK_MSG_TIMEOUT_MS  "30000"        /* message.timeout.ms */
#define BK_SETTLE_NS       2500000000ull  /* > rivvend's checkpoint interval (2 s) */
#define BK_BATCH_READ      4096           /* messages per rd_kafka_consume_batch_queue */

static const uint32_t bk_sizes[] = {100, 1024};
static const char *const bk_codecs[] = {"none", "lz4", "zstd"};
static const char *const bk_acks[] = {"1", "all"};

struct bk_ctx {
    const struct bench_opts *o;
    char brokers[300];
    char run_id[16];
    uint32_t partitions; /* asked for */
    char dir[PATH_MAX];  /* the run's directory */
    bool is_own_dir;
    pid_t pid; /* the broker we started, 0 when none */
    char log_path[PATH_MAX + 16];
    uint8_t *pool; /* BK_POOL_BYTES of text */
    uint64_t pool_pos;
    double loopback_mbps;
    double fsync_p99_ns;
    uint64_t acks1_count[2][3]; /* messages in the acks=1 topic of each size x codec */
    int cells_failed;
};

/* ---- small helpers -------------------------------------------------------------- */

static void bk_sleep_ns(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ull),
                          .tv_nsec = (long)(ns % 1000000000ull)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* "412 us", "1.2 ms": a latency for the table. */
static const char *bk_ns_text(double ns, char *buf, size_t len)
{
    char num[32], unit[24];
    fig_format(ns, "ns", num, sizeof(num), unit, sizeof(unit));
    snprintf(buf, len, "%.15s %.7s", num, unit);
    return buf;
}

static const char *bk_size_name(uint32_t size)
{
    return size == 1024 ? "1k" : "100";
}

static const char *bk_size_label(uint32_t size)
{
    return size == 1024 ? "1 KiB" : "100 B";
}

/* CPU time of the broker process (0 when unknown) and of this one. */
static uint64_t bk_pid_cpu_ns(pid_t pid)
{
    char path[64], line[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = pid > 0 ? fopen(path, "r") : NULL;
    if (f == NULL)
        return 0;
    size_t n = fread(line, 1, sizeof(line) - 1, f);
    fclose(f);
    line[n] = '\0';
    const char *p = strrchr(line, ')');
    unsigned long long utime = 0, stime = 0;
    /* After the name: state, then fields 4..13, then utime (14) and stime (15). */
    if (p == NULL || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                            &stime) != 2)
        return 0;
    long hz = sysconf(_SC_CLK_TCK);
    return hz > 0 ? (utime + stime) * 1000000000ull / (uint64_t)hz : 0;
}

static uint64_t bk_self_cpu_ns(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) < 0)
        return 0;
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
}

struct bk_cpu {
    uint64_t now_ns;
    uint64_t broker_ns;
    uint64_t client_ns;
};

static void bk_cpu_take(const struct bk_ctx *c, struct bk_cpu *out)
{
    out->now_ns = rv_clock_now_ns();
    out->broker_ns = bk_pid_cpu_ns(c->pid);
    out->client_ns = bk_self_cpu_ns();
}

/* Percent of one core over the interval a -> b; broker < 0 when unknown. */
static void bk_cpu_pct(const struct bk_ctx *c, const struct bk_cpu *a, const struct bk_cpu *b,
                       double *broker, double *client)
{
    double wall = (double)(b->now_ns - a->now_ns);
    *broker = c->pid > 0 && wall > 0 ? 100.0 * (double)(b->broker_ns - a->broker_ns) / wall : -1;
    *client = wall > 0 ? 100.0 * (double)(b->client_ns - a->client_ns) / wall : 0;
}

/* Pseudo-random text: words and numbers, about 2x for lz4, more for zstd. */
static void bk_pool_fill(uint8_t *pool, size_t len)
{
    static const char *const words[] = {
        "order",    "customer", "status",    "shipped", "pending",  "payment", "amount",   "eur",
        "usd",      "region",   "north",     "south",   "east",     "west",    "item",     "sku",
        "quantity", "price",    "warehouse", "carrier", "tracking", "created", "updated",  "user",
        "session",  "click",    "view",      "cart",    "checkout", "refund",  "priority", "normal",
        "express",  "gift",     "note",      "address", "city",     "zip",     "country",  "device",
        "mobile",   "desktop",  "tablet",    "app",     "web",      "api",     "v2",       "true",
        "false",    "null",     "id",        "ts",      "event",    "type",    "source",   "target",
        "value",    "count",    "total",     "batch",   "retry",    "error",   "ok",       "done"};
    uint64_t x = 0x9e3779b97f4a7c15ull;
    size_t pos = 0;
    while (pos < len) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        char piece[32];
        int n;
        if ((x & 3) == 0)
            n = snprintf(piece, sizeof(piece), "%u ", (unsigned)((x >> 8) % 100000));
        else
            n = snprintf(piece, sizeof(piece), "%s%s", words[(x >> 8) % RV_ARRAY_LEN(words)],
                         (x >> 40) % 5 == 0 ? ", " : " ");
        for (int i = 0; i < n && pos < len; i++)
            pool[pos++] = (uint8_t)piece[i];
    }
}

/* A value of `size` bytes: the sequence number and the next text of the pool
 * (the send time is stamped at the produce call). */
static void bk_value(struct bk_ctx *c, uint8_t *buf, uint32_t size, uint64_t seq)
{
    uint32_t text = size - BK_HEADER;
    if (c->pool_pos + text > BK_POOL_BYTES)
        c->pool_pos = 0;
    memcpy(buf + 8, &seq, 8);
    memcpy(buf + BK_HEADER, c->pool + c->pool_pos, text);
    c->pool_pos += text;
}

static void bk_stamp(uint8_t *buf)
{
    uint64_t now = rv_clock_now_ns();
    memcpy(buf, &now, 8);
}

/* Before a latency run: write back what earlier cells left dirty, wait out
 * the broker's next checkpoint (it deletes the WAL files the cell filled, and
 * on a filesystem mounted with discard that queues large discards ahead of the
 * run's writes), and write back again, so the run measures the broker on a
 * quiet disk, as fio measured the disk (--no-settle: measure it right after
 * the cell, with all of that going on). */
static void bk_settle(const struct bk_ctx *c)
{
    if (c->o->is_no_settle)
        return;
    sync();
    bk_sleep_ns(BK_SETTLE_NS);
    sync();
}

static bool bk_set(rd_kafka_conf_t *conf, const char *key, const char *value)
{
    char err[256];
    if (rd_kafka_conf_set(conf, key, value, err, sizeof(err)) == RD_KAFKA_CONF_OK)
        return true;
    fprintf(stderr, BENCH_NAME ": librdkafka %s=%s: %s\n", key, value, err);
    return false;
}

/* ---- a producer with its poller thread ------------------------------------------ */

struct bk_prod {
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    int32_t partitions;
    pthread_t poller;
    bool has_poller;
    _Atomic bool stop;
    _Atomic uint64_t stats_count;
    /* The poller's until joined: */
    uint64_t delivered;
    uint64_t failed;
    rd_kafka_resp_err_t first_err;
    uint64_t payload_bytes;
    uint64_t last_ns;    /* the last delivery report */
    uint64_t tx_bytes;   /* librdkafka's tx_bytes, from the last statistics */
    struct rv_hist hist; /* produce -> delivery report */
};

static void bk_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct bk_prod *p = opaque;
    uint64_t now = rv_clock_now_ns();
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (p->failed++ == 0)
            p->first_err = m->err;
        return;
    }
    uint64_t sent, seq;
    memcpy(&sent, m->payload, 8);
    memcpy(&seq, (const uint8_t *)m->payload + 8, 8);
    p->last_ns = now;
    if (seq == BK_WARMUP_SEQ)
        return;
    rv_hist_record(&p->hist, now > sent ? now - sent : 0);
    p->delivered++;
    p->payload_bytes += m->len;
}

static int bk_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    (void)rk;
    (void)len;
    struct bk_prod *p = opaque;
    /* The client's total ("tx_bytes"; a broker's own is "txbytes"). */
    const char *at = strstr(json, "\"tx_bytes\":");
    if (at != NULL)
        p->tx_bytes = strtoull(at + strlen("\"tx_bytes\":"), NULL, 10);
    atomic_fetch_add(&p->stats_count, 1);
    return 0; /* librdkafka frees json */
}

static void *bk_poller(void *arg)
{
    struct bk_prod *p = arg;
    while (!atomic_load(&p->stop))
        rd_kafka_poll(p->rk, 20);
    rd_kafka_poll(p->rk, 0);
    return NULL;
}

static void bk_prod_close(struct bk_prod *p)
{
    if (p->has_poller) {
        atomic_store(&p->stop, true);
        pthread_join(p->poller, NULL);
        p->has_poller = false;
    }
    if (p->rkt != NULL)
        rd_kafka_topic_destroy(p->rkt);
    if (p->rk != NULL) {
        rd_kafka_flush(p->rk, 5000); /* what is left has failed anyway */
        rd_kafka_destroy(p->rk);
    }
    p->rkt = NULL;
    p->rk = NULL;
}

/* Topic creation through CreateTopics with --partitions; when the broker does
 * not take it, the topic is created on first use (Metadata, auto-create). */
static void bk_topic_create(struct bk_ctx *c, rd_kafka_t *rk, const char *topic)
{
    char err[256];
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, (int)c->partitions, 1, err, sizeof(err));
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    if (nt == NULL || q == NULL || opt == NULL)
        goto out;
    (void)rd_kafka_AdminOptions_set_request_timeout(opt, 10000, err, sizeof(err));
    rd_kafka_CreateTopics(rk, &nt, 1, opt, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 15000);
    if (ev != NULL)
        rd_kafka_event_destroy(ev); /* errors show up as a partition count below */
out:
    if (opt != NULL)
        rd_kafka_AdminOptions_destroy(opt);
    if (q != NULL)
        rd_kafka_queue_destroy(q);
    if (nt != NULL)
        rd_kafka_NewTopic_destroy(nt);
}

/* Wait until the topic has partitions, every one with a leader. */
static int bk_topic_ready(rd_kafka_t *rk, rd_kafka_topic_t *rkt, int32_t *parts)
{
    uint64_t deadline = rv_clock_now_ns() + BK_READY_NS;
    rd_kafka_resp_err_t last = RD_KAFKA_RESP_ERR_NO_ERROR;
    while (rv_clock_now_ns() < deadline) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 5000);
        bool is_ok = false;
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1) {
            const struct rd_kafka_metadata_topic *t = &md->topics[0];
            err = t->err;
            is_ok = err == RD_KAFKA_RESP_ERR_NO_ERROR && t->partition_cnt > 0;
            for (int i = 0; is_ok && i < t->partition_cnt; i++)
                is_ok = t->partitions[i].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
                        t->partitions[i].leader >= 0;
            *parts = t->partition_cnt;
        }
        if (md != NULL)
            rd_kafka_metadata_destroy(md);
        if (is_ok)
            return 0;
        last = err;
        bk_sleep_ns(100000000ull);
    }
    fprintf(stderr, BENCH_NAME ": topic %s not ready after %llu s: %s\n", rd_kafka_topic_name(rkt),
            BK_READY_NS / 1000000000ull, rd_kafka_err2str(last));
    return -ETIMEDOUT;
}

/* A producer for `topic` (created and ready) with its poller running. */
static int bk_prod_open(struct bk_ctx *c, struct bk_prod *p, const char *topic, const char *acks,
                        const char *codec, bool is_throughput, bool is_new_topic)
{
    char err[512], stats_ms[16];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    snprintf(stats_ms, sizeof(stats_ms), "%d", BK_STATS_MS);
    bool is_ok = bk_set(conf, "bootstrap.servers", c->brokers) && bk_set(conf, "acks", acks) &&
                 bk_set(conf, "compression.type", codec) &&
                 bk_set(conf, "message.timeout.ms", BK_MSG_TIMEOUT_MS) &&
                 bk_set(conf, "linger.ms", is_throughput ? BK_LINGER_MS : "0") &&
                 bk_set(conf, "batch.size", BK_BATCH_BYTES) &&
                 bk_set(conf, "batch.num.messages", BK_BATCH_MSGS) &&
                 bk_set(conf, "queue.buffering.max.messages", BK_QUEUE_MSGS) &&
                 bk_set(conf, "queue.buffering.max.kbytes", BK_QUEUE_KBYTES) &&
                 bk_set(conf, "max.in.flight.requests.per.connection", BK_INFLIGHT) &&
                 (!is_throughput || bk_set(conf, "statistics.interval.ms", stats_ms));
    for (uint32_t i = 0; is_ok && is_throughput && i < c->o->producer_set_count; i++) {
        char kv[256];
        snprintf(kv, sizeof(kv), "%s", c->o->producer_set[i]);
        char *eq = strchr(kv, '=');
        if (eq != NULL)
            *eq = '\0';
        is_ok = eq != NULL && bk_set(conf, kv, eq + 1);
    }
    if (!is_ok) {
        rd_kafka_conf_destroy(conf);
        return -EINVAL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, bk_dr);
    if (is_throughput)
        rd_kafka_conf_set_stats_cb(conf, bk_stats);
    rd_kafka_conf_set_opaque(conf, p);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (p->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, BENCH_NAME ": producer: %s\n", err);
        return -EINVAL;
    }
    if (is_new_topic)
        bk_topic_create(c, p->rk, topic);
    p->rkt = rd_kafka_topic_new(p->rk, topic, NULL);
    int rc = p->rkt == NULL ? -ENOMEM : bk_topic_ready(p->rk, p->rkt, &p->partitions);
    if (rc == 0) {
        rc = -pthread_create(&p->poller, NULL, bk_poller, p);
        p->has_poller = rc == 0;
    }
    if (rc < 0)
        bk_prod_close(p);
    return rc;
}

/* Produce one value, waiting while the client's queue is full. */
static int bk_produce(struct bk_prod *p, uint8_t *buf, uint32_t size, int32_t part,
                      uint64_t *full_waits)
{
    for (;;) {
        bk_stamp(buf);
        if (rd_kafka_produce(p->rkt, part, RD_KAFKA_MSG_F_COPY, buf, size, NULL, 0, NULL) == 0)
            return 0;
        rd_kafka_resp_err_t err = rd_kafka_last_error();
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            fprintf(stderr, BENCH_NAME ": produce: %s\n", rd_kafka_err2str(err));
            return -EIO;
        }
        (*full_waits)++;
        bk_sleep_ns(BK_FULL_WAIT_NS);
    }
}

/* Wait until every message is delivered (or failed); with stats, for one more
 * statistics report after that, so tx_bytes counts everything. */
static int bk_drain(struct bk_prod *p, bool has_stats)
{
    uint64_t deadline = rv_clock_now_ns() + BK_DRAIN_NS;
    while (rd_kafka_outq_len(p->rk) > 0 && rv_clock_now_ns() < deadline)
        bk_sleep_ns(1000000);
    if (rd_kafka_outq_len(p->rk) > 0) {
        fprintf(stderr, BENCH_NAME ": %d messages undelivered after %llu s\n",
                rd_kafka_outq_len(p->rk), BK_DRAIN_NS / 1000000000ull);
        return -ETIMEDOUT;
    }
    uint64_t seen = atomic_load(&p->stats_count);
    uint64_t stats_deadline = rv_clock_now_ns() + 3ull * BK_STATS_MS * 1000000ull;
    while (has_stats && atomic_load(&p->stats_count) < seen + 2 &&
           rv_clock_now_ns() < stats_deadline)
        bk_sleep_ns(1000000);
    return 0;
}

/* Stop the poller: p's results are the main thread's from here. */
static void bk_poller_stop(struct bk_prod *p)
{
    if (p->has_poller) {
        atomic_store(&p->stop, true);
        pthread_join(p->poller, NULL);
        p->has_poller = false;
    }
}

/* ---- produce cells -------------------------------------------------------------- */

struct bk_cell {
    uint32_t size;
    const char *codec;
    const char *acks;
    char key[24];   /* "p1k_lz4_all" */
    char label[48]; /* "produce 1 KiB lz4 acks=all" */
    char topic[256];
};

static void bk_cell_init(struct bk_ctx *c, struct bk_cell *cell, uint32_t size, const char *codec,
                         const char *acks)
{
    cell->size = size;
    cell->codec = codec;
    cell->acks = acks;
    snprintf(cell->key, sizeof(cell->key), "p%s_%s_%s", bk_size_name(size), codec,
             strcmp(acks, "all") == 0 ? "all" : "a1");
    snprintf(cell->label, sizeof(cell->label), "produce %s %s acks=%s", bk_size_label(size), codec,
             acks);
    snprintf(cell->topic, sizeof(cell->topic), "%s-%s-%s-%s-acks%s", c->o->topic, c->run_id,
             bk_size_name(size), codec, acks);
}

static void bk_fail_figure(struct bk_ctx *c, const char *key, const char *label, const char *what)
{
    c->cells_failed++;
    fig_text(BK_SECTION, key, label, "FAILED: %s", what);
}

/* Errors of a cell: its delivery failures. */
static void bk_failed_note(const struct bk_prod *p, char *buf, size_t len)
{
    if (p->failed == 0)
        buf[0] = '\0';
    else
        snprintf(buf, len, "; %llu FAILED (%s)", (unsigned long long)p->failed,
                 rd_kafka_err2str(p->first_err));
}

/* pct of the loopback limit. */
static double bk_pct(const struct bk_ctx *c, double mbps)
{
    return c->loopback_mbps > 0 ? 100.0 * mbps / c->loopback_mbps : 0;
}

/* A number figure <prefix>_<suffix>, JSON only. */
static void bk_numf(const char *prefix, const char *suffix, double value, const char *unit)
{
    fig_numf(BK_SECTION, "", value, unit, "%.24s_%s", prefix, suffix);
}

/* <prefix>_p50_ns, _p99_ns, _p999_ns, _max_ns of h, JSON only. */
static void bk_hist_figures(const char *prefix, const struct rv_hist *h)
{
    bk_numf(prefix, "p50_ns", (double)rv_hist_percentile(h, 50), "ns");
    bk_numf(prefix, "p99_ns", (double)rv_hist_percentile(h, 99), "ns");
    bk_numf(prefix, "p999_ns", (double)rv_hist_percentile(h, 99.9), "ns");
    bk_numf(prefix, "max_ns", (double)rv_hist_max(h), "ns");
}

/* "p50 110 us, p99 1.2 ms, p99.9 2.7 ms, max 2.7 ms" */
static const char *bk_hist_text(const struct rv_hist *h, char *buf, size_t len)
{
    char t[4][24];
    snprintf(buf, len, "p50 %s, p99 %s, p99.9 %s, max %s",
             bk_ns_text((double)rv_hist_percentile(h, 50), t[0], sizeof(t[0])),
             bk_ns_text((double)rv_hist_percentile(h, 99), t[1], sizeof(t[1])),
             bk_ns_text((double)rv_hist_percentile(h, 99.9), t[2], sizeof(t[2])),
             bk_ns_text((double)rv_hist_max(h), t[3], sizeof(t[3])));
    return buf;
}

/* "; cpu broker 60% client 80%" (no broker figure without --start). */
static const char *bk_cpu_text(double broker, double client, char *buf, size_t len)
{
    if (broker >= 0)
        snprintf(buf, len, "; cpu broker %.0f%% client %.0f%%", broker, client);
    else
        snprintf(buf, len, "; cpu client %.0f%%", client);
    return buf;
}

/* Feed the producer as fast as it takes messages, for --seconds from start
 * or --messages messages. */
static int bk_feed(struct bk_ctx *c, struct bk_prod *p, uint32_t size, uint64_t start,
                   uint64_t *full_waits)
{
    uint8_t buf[BK_VALUE_MAX];
    uint64_t deadline = start + bench_duration_ns(c->o);
    RV_ASSERT(size >= BK_HEADER && size <= BK_VALUE_MAX);
    for (uint64_t seq = 0;; seq++) {
        bool is_done = c->o->messages != 0 ? seq >= c->o->messages
                                           : seq % 64 == 0 && rv_clock_now_ns() >= deadline;
        if (is_done)
            return 0;
        bk_value(c, buf, size, seq);
        int rc = bk_produce(p, buf, size, (int32_t)(seq % (uint64_t)p->partitions), full_waits);
        if (rc < 0)
            return rc;
    }
}

/* Messages of a paced run: --rate for --seconds. */
static uint64_t bk_paced_count(const struct bk_ctx *c)
{
    uint64_t n = (uint64_t)(c->o->duration_s * c->o->rate);
    return n > 0 ? n : 1;
}

/* Send n messages at --rate per second, on schedule (a late one goes at once). */
static int bk_send_paced(struct bk_ctx *c, struct bk_prod *p, uint32_t size, uint64_t n)
{
    uint8_t buf[BK_VALUE_MAX];
    uint64_t full_waits = 0, start = rv_clock_now_ns();
    RV_ASSERT(size >= BK_HEADER && size <= BK_VALUE_MAX);
    RV_ASSERT(c->o->rate > 0);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t at = start + i * 1000000000ull / c->o->rate, now = rv_clock_now_ns();
        if (at > now)
            bk_sleep_ns(at - now);
        bk_value(c, buf, size, i);
        int rc = bk_produce(p, buf, size, (int32_t)(i % (uint64_t)p->partitions), &full_waits);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* What a throughput cell measured besides the producer's own counts. */
struct bk_span {
    struct bk_cpu a; /* at the first produce */
    struct bk_cpu b; /* after the last delivery report */
    uint64_t produced_ns;
    uint64_t full_waits;
};

/* The table lines of a throughput cell, from its figures. */
static void bk_throughput_text(const struct bk_cell *cell, const struct bk_prod *p, const char *cpu)
{
    char key[48], num[32], unit[24], wire[96] = "", fails[160], t[2][24];
    snprintf(key, sizeof(key), "%s_msgs_per_s", cell->key);
    fig_format(fig_value(BK_SECTION, key), "msg/s", num, sizeof(num), unit, sizeof(unit));
    snprintf(key, sizeof(key), "%s_compression_ratio", cell->key);
    double ratio = fig_value(BK_SECTION, key);
    /* librdkafka drops a codec it thinks the broker lacks (lz4: unless the
     * broker advertises FindCoordinator) and sends the batches uncompressed. */
    bool is_uncompressed = strcmp(cell->codec, "none") != 0 && ratio > 0 && ratio < 1.05;
    bk_numf(cell->key, "sent_uncompressed", is_uncompressed ? 1 : 0, "");
    snprintf(key, sizeof(key), "%s_wire_mb_per_s", cell->key);
    if (strcmp(cell->codec, "none") != 0)
        snprintf(wire, sizeof(wire), " (wire %.0f MB/s, x%.2f%s)", fig_value(BK_SECTION, key),
                 ratio, is_uncompressed ? ": sent UNCOMPRESSED" : "");
    bk_failed_note(p, fails, sizeof(fails));
    snprintf(key, sizeof(key), "%s_mb_per_s", cell->key);
    double mbps = fig_value(BK_SECTION, key);
    snprintf(key, sizeof(key), "%s_pct_of_loopback", cell->key);
    fig_text(BK_SECTION, cell->key, cell->label, "%s %s, %.0f MB/s = %.1f%% of loopback%s%s", num,
             unit, mbps, fig_value(BK_SECTION, key), wire, fails);
    snprintf(key, sizeof(key), "%s_load", cell->key);
    fig_text(BK_SECTION, key, "  under load", "produce -> delivery p50 %s, p99 %s%s",
             bk_ns_text((double)rv_hist_percentile(&p->hist, 50), t[0], sizeof(t[0])),
             bk_ns_text((double)rv_hist_percentile(&p->hist, 99), t[1], sizeof(t[1])), cpu);
}

static void bk_throughput_figures(const struct bk_ctx *c, const struct bk_cell *cell,
                                  const struct bk_prod *p, const struct bk_span *s)
{
    double broker_cpu, client_cpu;
    char cpu[64];
    bk_cpu_pct(c, &s->a, &s->b, &broker_cpu, &client_cpu);
    uint64_t took = p->last_ns > s->a.now_ns ? p->last_ns - s->a.now_ns : 1;
    double mbps = bench_rate(p->payload_bytes, took) / 1e6;
    double wire_mbps = bench_rate(p->tx_bytes, took) / 1e6;
    double ratio = p->tx_bytes > 0 ? (double)p->payload_bytes / (double)p->tx_bytes : 0;
    bk_numf(cell->key, "msgs_per_s", bench_rate(p->delivered, took), "msg/s");
    bk_numf(cell->key, "mb_per_s", mbps, "MB/s");
    bk_numf(cell->key, "pct_of_loopback", bk_pct(c, mbps), "%");
    bk_numf(cell->key, "wire_mb_per_s", wire_mbps, "MB/s");
    bk_numf(cell->key, "wire_pct_of_loopback", bk_pct(c, wire_mbps), "%");
    bk_numf(cell->key, "compression_ratio", ratio, "");
    bk_numf(cell->key, "messages", (double)p->delivered, "");
    bk_numf(cell->key, "failed", (double)p->failed, "");
    bk_numf(cell->key, "partitions", (double)p->partitions, "");
    bk_numf(cell->key, "seconds", (double)took / 1e9, "s");
    bk_numf(cell->key, "produce_seconds", (double)(s->produced_ns - s->a.now_ns) / 1e9, "s");
    bk_numf(cell->key, "queue_full_waits", (double)s->full_waits, "");
    bk_numf(cell->key, "load_p50_ns", (double)rv_hist_percentile(&p->hist, 50), "ns");
    bk_numf(cell->key, "load_p99_ns", (double)rv_hist_percentile(&p->hist, 99), "ns");
    bk_numf(cell->key, "broker_cpu_pct", broker_cpu, "%");
    bk_numf(cell->key, "client_cpu_pct", client_cpu, "%");
    bk_throughput_text(cell, p, bk_cpu_text(broker_cpu, client_cpu, cpu, sizeof(cpu)));
}

/* As fast as the client takes messages, for --seconds or --messages. */
static int bk_throughput(struct bk_ctx *c, const struct bk_cell *cell, uint64_t *delivered)
{
    struct bk_prod *p = calloc(1, sizeof(*p));
    struct bk_span s = {0};
    if (p == NULL)
        return -ENOMEM;
    rv_hist_init(&p->hist);
    int rc = bk_prod_open(c, p, cell->topic, cell->acks, cell->codec, true, true);
    if (rc < 0) {
        free(p);
        bk_fail_figure(c, cell->key, cell->label, "no producer or topic");
        return rc;
    }
    bk_cpu_take(c, &s.a);
    rc = bk_feed(c, p, cell->size, s.a.now_ns, &s.full_waits);
    s.produced_ns = rv_clock_now_ns();
    if (rc == 0)
        rc = bk_drain(p, true);
    bk_poller_stop(p);
    bk_cpu_take(c, &s.b);
    if (rc < 0) {
        bk_fail_figure(c, cell->key, cell->label, "produce or delivery failed (see stderr)");
    } else {
        bk_throughput_figures(c, cell, p, &s);
        rc = p->failed > 0 ? -EIO : 0; /* the figures say how many */
        c->cells_failed += p->failed > 0;
    }
    *delivered = p->delivered;
    bk_prod_close(p);
    free(p);
    return rc;
}

/* The acks=all latency against the disk's fdatasync measured right after. */
static void bk_disk_figures(const struct bk_cell *cell, double p99, const struct bench_fsync *disk)
{
    char key[48], t[2][24];
    bk_numf(cell->key, "disk_p99_ns", disk->p99_ns, "ns");
    bk_numf(cell->key, "over_disk_ns", p99 - disk->p99_ns, "ns");
    snprintf(key, sizeof(key), "%s_disk", cell->key);
    fig_text(BK_SECTION, key, "  disk right after", "fdatasync p50 %s, p99 %s%s: p99 %s%.2f ms",
             bk_ns_text(disk->p50_ns, t[0], sizeof(t[0])),
             bk_ns_text(disk->p99_ns, t[1], sizeof(t[1])), disk->is_fio ? " (fio)" : "",
             p99 >= disk->p99_ns ? "+" : "", (p99 - disk->p99_ns) / 1e6);
}

/* --rate messages/s with linger.ms=0, for --seconds: the latency figures. */
static int bk_paced(struct bk_ctx *c, const struct bk_cell *cell)
{
    struct bk_prod *p = calloc(1, sizeof(*p));
    char key[48], label[48], lat[128], fails[160];
    snprintf(key, sizeof(key), "%s_paced", cell->key);
    snprintf(label, sizeof(label), "  at %u/s, linger 0", c->o->rate);
    if (p == NULL)
        return -ENOMEM;
    rv_hist_init(&p->hist);
    int rc = bk_prod_open(c, p, cell->topic, cell->acks, cell->codec, false, false);
    if (rc < 0) {
        free(p);
        bk_fail_figure(c, key, label, "no producer or topic");
        return rc;
    }
    bk_settle(c);
    fprintf(stderr, BENCH_NAME ": broker: %s, %u/s\n", cell->label, c->o->rate);
    rc = bk_send_paced(c, p, cell->size, bk_paced_count(c));
    if (rc == 0)
        rc = bk_drain(p, false);
    bk_poller_stop(p);
    /* acks=all: the disk's fdatasync p99 right after, which its p99 is judged
     * against (the disk of a shared machine drifts over a run). */
    struct bench_fsync disk = {0};
    if (rc == 0 && strcmp(cell->acks, "all") == 0 &&
        bench_fsync_measure(c->o, c->dir, bench_duration_ns(c->o), &disk) < 0)
        disk.p99_ns = 0; /* reported as missing */
    if (rc < 0) {
        bk_fail_figure(c, key, label, "produce or delivery failed (see stderr)");
    } else {
        char prefix[48];
        snprintf(prefix, sizeof(prefix), "%s_lat", cell->key);
        bk_hist_figures(prefix, &p->hist);
        bk_numf(prefix, "messages", (double)p->delivered, "");
        bk_failed_note(p, fails, sizeof(fails));
        fig_text(BK_SECTION, key, label, "produce -> delivery %s%s",
                 bk_hist_text(&p->hist, lat, sizeof(lat)), fails);
        if (disk.p99_ns > 0)
            bk_disk_figures(cell, (double)rv_hist_percentile(&p->hist, 99), &disk);
        rc = p->failed > 0 ? -EIO : 0; /* the figures say how many */
        c->cells_failed += p->failed > 0;
    }
    bk_prod_close(p);
    free(p);
    return rc;
}

/* ---- consumers ------------------------------------------------------------------ */

struct bk_cons {
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    rd_kafka_queue_t *q;
    int32_t partitions;
    int32_t started;
};

static void bk_cons_close(struct bk_cons *k)
{
    for (int32_t i = 0; i < k->started; i++)
        (void)rd_kafka_consume_stop(k->rkt, i);
    if (k->q != NULL)
        rd_kafka_queue_destroy(k->q);
    if (k->rkt != NULL)
        rd_kafka_topic_destroy(k->rkt);
    if (k->rk != NULL)
        rd_kafka_destroy(k->rk);
    memset(k, 0, sizeof(*k));
}

/* A consumer of every partition of topic from the beginning, on one queue (the
 * simple consumer: no group, no offsets committed). */
static int bk_cons_open(struct bk_ctx *c, struct bk_cons *k, const char *topic, bool is_tail)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    bool is_ok = bk_set(conf, "bootstrap.servers", c->brokers) &&
                 bk_set(conf, "enable.auto.commit", "false") &&
                 bk_set(conf, "enable.partition.eof", "false") &&
                 bk_set(conf, "fetch.wait.max.ms", "100") && bk_set(conf, "fetch.min.bytes", "1") &&
                 bk_set(conf, "queued.min.messages", is_tail ? "1000" : "1000000") &&
                 bk_set(conf, "fetch.message.max.bytes", "4194304");
    if (!is_ok) {
        rd_kafka_conf_destroy(conf);
        return -EINVAL;
    }
    memset(k, 0, sizeof(*k));
    k->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (k->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, BENCH_NAME ": consumer: %s\n", err);
        return -EINVAL;
    }
    k->rkt = rd_kafka_topic_new(k->rk, topic, NULL);
    k->q = rd_kafka_queue_new(k->rk);
    int rc =
        k->rkt == NULL || k->q == NULL ? -ENOMEM : bk_topic_ready(k->rk, k->rkt, &k->partitions);
    for (int32_t i = 0; rc == 0 && i < k->partitions; i++) {
        if (rd_kafka_consume_start_queue(k->rkt, i, RD_KAFKA_OFFSET_BEGINNING, k->q) < 0) {
            fprintf(stderr, BENCH_NAME ": consume %s [%d]: %s\n", topic, (int)i,
                    rd_kafka_err2str(rd_kafka_last_error()));
            rc = -EIO;
        } else {
            k->started++;
        }
    }
    if (rc < 0)
        bk_cons_close(k);
    return rc;
}

/* The messages in k's queue now (at most max), or when there are none the
 * first to arrive within timeout_ms. (rd_kafka_consume_batch_queue with a
 * timeout waits for a full batch or the whole timeout.) */
static ssize_t bk_cons_read(struct bk_cons *k, int timeout_ms, rd_kafka_message_t **msgs,
                            size_t max)
{
    ssize_t n = rd_kafka_consume_batch_queue(k->q, 0, msgs, max);
    if (n != 0)
        return n;
    msgs[0] = rd_kafka_consume_queue(k->q, timeout_ms);
    return msgs[0] != NULL ? 1 : 0;
}

/* What a consume cell read. */
struct bk_read {
    uint64_t got;
    uint64_t bytes;
    uint64_t errors;
    rd_kafka_resp_err_t first_err;
    uint64_t last_ns; /* the last message arrived */
};

/* Read until `expect` messages came, or nothing came for BK_CONSUME_IDLE_NS. */
static void bk_consume_loop(struct bk_cons *k, rd_kafka_message_t **msgs, uint64_t expect,
                            struct bk_read *r)
{
    uint64_t idle_since = rv_clock_now_ns();
    while (r->got < expect && rv_clock_now_ns() - idle_since < BK_CONSUME_IDLE_NS) {
        ssize_t n = bk_cons_read(k, 100, msgs, BK_BATCH_READ);
        for (ssize_t i = 0; i < n; i++) {
            if (msgs[i]->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                r->got++;
                r->bytes += msgs[i]->len;
            } else if (msgs[i]->err != RD_KAFKA_RESP_ERR__PARTITION_EOF && r->errors++ == 0) {
                r->first_err = msgs[i]->err;
            }
            rd_kafka_message_destroy(msgs[i]);
        }
        if (n > 0)
            r->last_ns = idle_since = rv_clock_now_ns();
    }
}

static int bk_consume_figures(struct bk_ctx *c, const char *key, const char *label,
                              const struct bk_cpu *a, const struct bk_cpu *b,
                              const struct bk_read *r, uint64_t expect)
{
    double broker_cpu, client_cpu;
    char num[32], unit[24], cpu[64];
    bk_cpu_pct(c, a, b, &broker_cpu, &client_cpu);
    uint64_t took = r->last_ns > a->now_ns ? r->last_ns - a->now_ns : 1;
    double rate = bench_rate(r->got, took), mbps = bench_rate(r->bytes, took) / 1e6;
    bk_numf(key, "msgs_per_s", rate, "msg/s");
    bk_numf(key, "mb_per_s", mbps, "MB/s");
    bk_numf(key, "pct_of_loopback", bk_pct(c, mbps), "%");
    bk_numf(key, "messages", (double)r->got, "");
    bk_numf(key, "errors", (double)r->errors, "");
    bk_numf(key, "broker_cpu_pct", broker_cpu, "%");
    bk_numf(key, "client_cpu_pct", client_cpu, "%");
    if (r->got < expect || r->errors > 0) {
        c->cells_failed++;
        fig_text(BK_SECTION, key, label, "FAILED: %llu of %llu messages, %llu errors (%s)",
                 (unsigned long long)r->got, (unsigned long long)expect,
                 (unsigned long long)r->errors, rd_kafka_err2str(r->first_err));
        return -EIO;
    }
    fig_format(rate, "msg/s", num, sizeof(num), unit, sizeof(unit));
    fig_text(BK_SECTION, key, label, "%s %s, %.0f MB/s = %.1f%% of loopback%s", num, unit, mbps,
             bk_pct(c, mbps), bk_cpu_text(broker_cpu, client_cpu, cpu, sizeof(cpu)));
    return 0;
}

/* Read `expect` messages of an acks=1 topic back from the beginning. */
static int bk_consume(struct bk_ctx *c, uint32_t size, const char *codec, uint64_t expect)
{
    char topic[256], key[48], label[48];
    snprintf(topic, sizeof(topic), "%s-%s-%s-%s-acks1", c->o->topic, c->run_id, bk_size_name(size),
             codec);
    snprintf(key, sizeof(key), "c%s_%s", bk_size_name(size), codec);
    snprintf(label, sizeof(label), "consume %s %s", bk_size_label(size), codec);
    rd_kafka_message_t **msgs = calloc(BK_BATCH_READ, sizeof(*msgs));
    struct bk_cons k;
    struct bk_cpu a, b;
    if (msgs == NULL)
        return -ENOMEM;
    bk_cpu_take(c, &a);
    int rc = bk_cons_open(c, &k, topic, false);
    if (rc < 0) {
        free(msgs);
        bk_fail_figure(c, key, label, "no consumer or topic");
        return rc;
    }
    struct bk_read r = {.last_ns = a.now_ns};
    bk_consume_loop(&k, msgs, expect, &r);
    bk_cpu_take(c, &b);
    b.now_ns = r.last_ns; /* CPU to the end of the wait, wall time to the last message */
    bk_cons_close(&k);
    free(msgs);
    return bk_consume_figures(c, key, label, &a, &b, &r, expect);
}

/* ---- end-to-end ------------------------------------------------------------------ */

struct bk_e2e {
    struct bk_prod *p;
    struct bk_cons k;
    pthread_t thread;
    bool has_thread;
    uint64_t expect;
    bool *warm; /* the consumer thread's: a warm-up message came from partition i */
    _Atomic int32_t warm_count;
    _Atomic bool stop;
    _Atomic uint64_t got; /* written by the consumer thread */
    uint64_t errors;      /* the consumer thread's until joined */
    struct rv_hist hist;  /* the consumer thread's until joined */
};

/* Consumer thread: one received message. */
static void bk_e2e_take(struct bk_e2e *e, const rd_kafka_message_t *m, uint64_t now)
{
    uint64_t sent, seq;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR || m->len < BK_HEADER) {
        e->errors += m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF;
        return;
    }
    memcpy(&sent, m->payload, 8);
    memcpy(&seq, (const uint8_t *)m->payload + 8, 8);
    if (seq != BK_WARMUP_SEQ) {
        rv_hist_record(&e->hist, now > sent ? now - sent : 0);
        atomic_fetch_add(&e->got, 1);
        return;
    }
    if (m->partition >= 0 && m->partition < e->k.partitions && !e->warm[m->partition]) {
        e->warm[m->partition] = true;
        atomic_fetch_add(&e->warm_count, 1);
    }
}

static void *bk_e2e_main(void *arg)
{
    struct bk_e2e *e = arg;
    rd_kafka_message_t *msgs[256];
    while (!atomic_load(&e->stop) && atomic_load(&e->got) < e->expect) {
        ssize_t n = bk_cons_read(&e->k, 100, msgs, RV_ARRAY_LEN(msgs));
        uint64_t now = rv_clock_now_ns();
        for (ssize_t i = 0; i < n; i++) {
            bk_e2e_take(e, msgs[i], now);
            rd_kafka_message_destroy(msgs[i]);
        }
    }
    return NULL;
}

/* The producer, the consumer from offset 0 of the fresh topic, its thread. */
static int bk_e2e_open(struct bk_ctx *c, struct bk_e2e *e, const char *topic, const char *acks)
{
    rv_hist_init(&e->p->hist);
    rv_hist_init(&e->hist);
    e->expect = bk_paced_count(c);
    int rc = bk_prod_open(c, e->p, topic, acks, "none", false, true);
    if (rc == 0)
        rc = bk_cons_open(c, &e->k, topic, true);
    if (rc == 0 && (e->warm = calloc((size_t)e->k.partitions, sizeof(bool))) == NULL)
        rc = -ENOMEM;
    if (rc == 0) {
        rc = -pthread_create(&e->thread, NULL, bk_e2e_main, e);
        e->has_thread = rc == 0;
    }
    return rc;
}

static void bk_e2e_close(struct bk_e2e *e)
{
    if (e->has_thread) {
        atomic_store(&e->stop, true);
        pthread_join(e->thread, NULL);
        e->has_thread = false;
    }
    if (e->k.rk != NULL)
        bk_cons_close(&e->k);
    free(e->warm);
    e->warm = NULL;
    if (e->p->rk != NULL)
        bk_prod_close(e->p);
}

/* Warm-up: one message per partition every 10 ms until each came back, so
 * every fetcher runs before the measured messages. */
static int bk_e2e_warm(struct bk_ctx *c, struct bk_e2e *e, uint32_t size, const char *topic)
{
    uint8_t buf[BK_VALUE_MAX];
    uint64_t full_waits = 0, deadline = rv_clock_now_ns() + BK_READY_NS;
    int32_t parts = e->p->partitions;
    for (int32_t i = 0; atomic_load(&e->warm_count) < e->k.partitions; i++) {
        if (rv_clock_now_ns() > deadline) {
            fprintf(stderr, BENCH_NAME ": end-to-end %s: warm-up messages not consumed\n", topic);
            return -ETIMEDOUT;
        }
        bk_value(c, buf, size, BK_WARMUP_SEQ);
        int rc = bk_produce(e->p, buf, size, i % parts, &full_waits);
        if (rc < 0)
            return rc;
        if (i % parts == parts - 1)
            bk_sleep_ns(10000000ull);
    }
    return 0;
}

/* Wait until the consumer has every measured message, then stop it. */
static int bk_e2e_finish(struct bk_e2e *e)
{
    uint64_t deadline = rv_clock_now_ns() + BK_CONSUME_IDLE_NS;
    while (atomic_load(&e->got) < e->expect && rv_clock_now_ns() < deadline)
        bk_sleep_ns(1000000);
    atomic_store(&e->stop, true);
    pthread_join(e->thread, NULL);
    e->has_thread = false;
    return atomic_load(&e->got) < e->expect || e->errors > 0 || e->p->failed > 0 ? -EIO : 0;
}

/* A producer at --rate messages/s and a consumer tailing the same fresh topic. */
static int bk_e2e_run(struct bk_ctx *c, uint32_t size, const char *acks)
{
    char topic[256], key[48], label[48], lat[128];
    snprintf(topic, sizeof(topic), "%s-%s-e2e-%s-acks%s", c->o->topic, c->run_id,
             bk_size_name(size), acks);
    snprintf(key, sizeof(key), "e2e_%s_%s", bk_size_name(size),
             strcmp(acks, "all") == 0 ? "all" : "a1");
    snprintf(label, sizeof(label), "end-to-end %s acks=%s at %u/s", bk_size_label(size), acks,
             c->o->rate);
    struct bk_e2e *e = calloc(1, sizeof(*e));
    if (e == NULL || (e->p = calloc(1, sizeof(*e->p))) == NULL) {
        free(e);
        return -ENOMEM;
    }
    int rc = bk_e2e_open(c, e, topic, acks);
    if (rc == 0) {
        bk_settle(c);
        rc = bk_e2e_warm(c, e, size, topic);
    }
    if (rc == 0)
        rc = bk_send_paced(c, e->p, size, e->expect);
    if (rc == 0)
        rc = bk_drain(e->p, false);
    if (rc == 0)
        rc = bk_e2e_finish(e);
    if (rc < 0) {
        bk_fail_figure(c, key, label, "messages lost or late (see stderr)");
    } else {
        bk_hist_figures(key, &e->hist);
        fig_text(BK_SECTION, key, label, "send -> receive %s",
                 bk_hist_text(&e->hist, lat, sizeof(lat)));
    }
    bk_e2e_close(e);
    free(e->p);
    free(e);
    return rc;
}

/* ---- starting and stopping rivvend ---------------------------------------------- */

static bool bk_port_free(uint32_t port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool is_free = fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0;
    if (fd >= 0)
        close(fd);
    return is_free;
}

/* A port P with P .. P+n-1 free on 127.0.0.1 (now), or 0. */
static uint32_t bk_free_ports(uint32_t n)
{
    for (int attempt = 0; attempt < 200; attempt++) {
        struct sockaddr_in addr = {.sin_family = AF_INET,
                                   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(addr);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return 0;
        bool is_ok = bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
                     getsockname(fd, (struct sockaddr *)&addr, &len) == 0;
        close(fd);
        uint32_t base = ntohs(addr.sin_port);
        if (!is_ok || base + n >= 65536)
            continue;
        uint32_t i = 0;
        while (i < n && bk_port_free(base + i))
            i++;
        if (i == n)
            return base;
    }
    return 0;
}

static bool bk_port_accepts(uint32_t port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool is_ok = fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0;
    if (fd >= 0)
        close(fd);
    return is_ok;
}

/* The last lines of the started broker's log, to stderr. */
static void bk_log_tail(const struct bk_ctx *c)
{
    char buf[2048];
    int fd = open(c->log_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    off_t end = lseek(fd, 0, SEEK_END);
    off_t from = end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0;
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
    close(fd);
    if (n > 0) {
        buf[n] = '\0';
        fprintf(stderr, BENCH_NAME ": the end of %s:\n%s", c->log_path, buf);
    }
}

/* fork + exec the broker: stdout and stderr to the log, SIGTERM when this
 * process dies first. */
static int bk_start(struct bk_ctx *c, uint32_t port, const char *data_dir)
{
    char listeners[64], dirs[PATH_MAX + 32], parts[48];
    snprintf(listeners, sizeof(listeners), "--listeners=PLAINTEXT://127.0.0.1:%u", port);
    snprintf(dirs, sizeof(dirs), "--log.dirs=%s", data_dir);
    snprintf(parts, sizeof(parts), "--num.partitions=%u", c->partitions);
    char *argv[] = {(char *)c->o->start_path, listeners, dirs, parts, NULL};
    int log_fd = open(c->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log_fd < 0) {
        fprintf(stderr, BENCH_NAME ": %s: %s\n", c->log_path, strerror(errno));
        return -errno;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        int null_fd = open("/dev/null", O_RDONLY);
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent || null_fd < 0 ||
            dup2(null_fd, STDIN_FILENO) < 0 || dup2(log_fd, STDOUT_FILENO) < 0 ||
            dup2(log_fd, STDERR_FILENO) < 0)
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    int err = errno;
    close(log_fd);
    if (pid < 0) {
        fprintf(stderr, BENCH_NAME ": fork: %s\n", strerror(err));
        return -err;
    }
    c->pid = pid;
    return 0;
}

/* Start --start's rivvend and wait until every shard's port accepts. */
static int bk_start_broker(struct bk_ctx *c)
{
    char data_dir[PATH_MAX + 16];
    cpu_set_t set;
    uint32_t shards = sched_getaffinity(0, sizeof(set), &set) == 0 ? (uint32_t)CPU_COUNT(&set) : 1;
    uint32_t port = bk_free_ports(shards);
    if (port == 0) {
        fprintf(stderr, BENCH_NAME ": no %u free ports on 127.0.0.1\n", shards);
        return -EADDRINUSE;
    }
    snprintf(data_dir, sizeof(data_dir), "%s/rivvend-data", c->dir);
    snprintf(c->log_path, sizeof(c->log_path), "%s/rivvend.log", c->dir);
    int rc = bk_start(c, port, data_dir);
    if (rc < 0)
        return rc;
    uint64_t t0 = rv_clock_now_ns();
    uint32_t up = 0;
    while (up < shards && rv_clock_now_ns() - t0 < BK_READY_NS) {
        int status;
        if (waitpid(c->pid, &status, WNOHANG) == c->pid) {
            fprintf(stderr, BENCH_NAME ": %s exited (status %d) before it listened\n",
                    c->o->start_path, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
            c->pid = 0;
            bk_log_tail(c);
            return -ECHILD;
        }
        if (bk_port_accepts(port + up))
            up++;
        else
            bk_sleep_ns(20000000ull);
    }
    if (up < shards) {
        fprintf(stderr, BENCH_NAME ": %s not listening on %u ports after %llu s\n",
                c->o->start_path, shards, BK_READY_NS / 1000000000ull);
        bk_log_tail(c);
        return -ETIMEDOUT;
    }
    snprintf(c->brokers, sizeof(c->brokers), "127.0.0.1:%u", port);
    fprintf(stderr, BENCH_NAME ": started %s, pid %d, on 127.0.0.1:%u (%u shards), data in %s\n",
            c->o->start_path, (int)c->pid, port, shards, data_dir);
    fig_text(BK_SECTION, "started", "broker started", "%s, pid %d, %u shards, up in %.0f ms",
             c->o->start_path, (int)c->pid, shards, (double)(rv_clock_now_ns() - t0) / 1e6);
    return 0;
}

/* SIGTERM, then wait for the exit; 0 after a clean exit 0. */
static int bk_stop_broker(struct bk_ctx *c)
{
    int status = 0;
    pid_t got = 0;
    uint64_t t0 = rv_clock_now_ns();
    if (kill(c->pid, SIGTERM) < 0)
        return -errno;
    while ((got = waitpid(c->pid, &status, WNOHANG)) == 0 &&
           rv_clock_now_ns() - t0 < BK_STOP_WAIT_NS)
        bk_sleep_ns(5000000ull);
    double took_ms = (double)(rv_clock_now_ns() - t0) / 1e6;
    pid_t pid = c->pid;
    c->pid = 0;
    if (got == 0) {
        (void)kill(pid, SIGKILL);
        (void)waitpid(pid, &status, 0);
        fig_text(BK_SECTION, "stopped", "broker stop (SIGTERM)",
                 "FAILED: still running after %llu s, killed", BK_STOP_WAIT_NS / 1000000000ull);
        bk_log_tail(c);
        return -ETIMEDOUT;
    }
    bool is_clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    fig_num(BK_SECTION, "broker_stop_ms", "", took_ms, "");
    if (!is_clean) {
        fig_text(BK_SECTION, "stopped", "broker stop (SIGTERM)", "FAILED: %s %d after %.0f ms",
                 WIFEXITED(status) ? "exit status" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), took_ms);
        bk_log_tail(c);
        return -ECHILD;
    }
    fig_text(BK_SECTION, "stopped", "broker stop (SIGTERM)", "exit 0 after %.0f ms", took_ms);
    return 0;
}

/* ---- the run --------------------------------------------------------------------- */

/* The targets of the issue against this run's figures. */
static void bk_targets(void)
{
    const char *codecs_pct[3];
    char buf[3][24];
    for (size_t i = 0; i < 3; i++) {
        char key[48];
        snprintf(key, sizeof(key), "p1k_%s_a1_pct_of_loopback", bk_codecs[i]);
        const struct bench_fig *f = fig_find(BK_SECTION, key);
        if (f == NULL)
            codecs_pct[i] = "n/a";
        else {
            snprintf(buf[i], sizeof(buf[i]), "%.1f%%", f->value);
            codecs_pct[i] = buf[i];
        }
    }
    const struct bench_fig *none = fig_find(BK_SECTION, "p1k_none_a1_pct_of_loopback");
    fig_num(BK_SECTION, "target_produce_1k_acks1_pct", "", none != NULL ? none->value : 0, "%");
    fig_text(BK_SECTION, "target_produce", "target: acks=1 1 KiB >= 40% loopback",
             "none %s (lz4 %s, zstd %s of payload): %s", codecs_pct[0], codecs_pct[1],
             codecs_pct[2],
             none == NULL          ? "n/a"
             : none->value >= 40.0 ? "met"
                                   : "NOT met");

    /* acks=all: each cell's p99 at --rate against the disk's p99 measured
     * right after it; the worst margin decides. */
    double worst = -1e18, worst_p99 = 0, worst_disk = 0;
    char where[48] = "", t[3][24];
    for (size_t s = 0; s < RV_ARRAY_LEN(bk_sizes); s++) {
        for (size_t k = 0; k < RV_ARRAY_LEN(bk_codecs); k++) {
            char key[48];
            snprintf(key, sizeof(key), "p%s_%s_all_over_disk_ns", bk_size_name(bk_sizes[s]),
                     bk_codecs[k]);
            const struct bench_fig *f = fig_find(BK_SECTION, key);
            if (f == NULL || f->value <= worst)
                continue;
            worst = f->value;
            snprintf(key, sizeof(key), "p%s_%s_all_lat_p99_ns", bk_size_name(bk_sizes[s]),
                     bk_codecs[k]);
            worst_p99 = fig_value(BK_SECTION, key);
            snprintf(key, sizeof(key), "p%s_%s_all_disk_p99_ns", bk_size_name(bk_sizes[s]),
                     bk_codecs[k]);
            worst_disk = fig_value(BK_SECTION, key);
            snprintf(where, sizeof(where), "%s %s", bk_size_label(bk_sizes[s]), bk_codecs[k]);
        }
    }
    const char *label = "target: acks=all p99 <= disk p99+2ms";
    if (worst == -1e18) {
        fig_text(BK_SECTION, "target_latency", label, "n/a (no acks=all latency figure)");
        return;
    }
    fig_num(BK_SECTION, "target_acks_all_p99_over_disk_ns", "", worst, "ns");
    const struct bench_fig *one_k = fig_find(BK_SECTION, "p1k_none_all_over_disk_ns");
    if (one_k != NULL)
        snprintf(t[2], sizeof(t[2]), "%+.2f ms", one_k->value / 1e6);
    fig_text(BK_SECTION, "target_latency", label,
             "worst %s: p99 %s, disk %s (%+.2f ms); 1 KiB none %s: %s", where,
             bk_ns_text(worst_p99, t[0], sizeof(t[0])), bk_ns_text(worst_disk, t[1], sizeof(t[1])),
             worst / 1e6, one_k != NULL ? t[2] : "n/a", worst <= 2e6 ? "met" : "NOT met");
}

static void bk_describe(const struct bk_ctx *c)
{
    fig_text(BK_SECTION, "brokers", "brokers", "%s", c->brokers);
    fig_text(BK_SECTION, "client", "client",
             "librdkafka %s; throughput: linger.ms=%s batch.size=%s batch.num.messages=%s",
             rd_kafka_version_str(), BK_LINGER_MS, BK_BATCH_BYTES, BK_BATCH_MSGS);
    fig_text(BK_SECTION, "client_queue", "",
             "queue.buffering.max.messages=%s queue.buffering.max.kbytes=%s "
             "max.in.flight.requests.per.connection=%s; latency: linger.ms=0",
             BK_QUEUE_MSGS, BK_QUEUE_KBYTES, BK_INFLIGHT);
    if (c->o->messages != 0)
        fig_text(BK_SECTION, "method", "method",
                 "%llu messages per produce cell, %u/s for %.2g s per latency run%s, partition "
                 "= seq %% partitions",
                 (unsigned long long)c->o->messages, c->o->rate, c->o->duration_s,
                 c->o->is_no_settle ? " (no settling)" : " (disk settled)");
    else
        fig_text(BK_SECTION, "method", "method",
                 "%.2g s per produce cell, %u/s for %.2g s per latency run%s, partition = seq "
                 "%% partitions",
                 c->o->duration_s, c->o->rate, c->o->duration_s,
                 c->o->is_no_settle ? " (no settling)" : " (disk settled)");
    fig_text(BK_SECTION, "run_id", "", "%s", c->run_id);
    char extra[160] = "";
    size_t used = 0;
    for (uint32_t i = 0; i < c->o->producer_set_count && used < sizeof(extra); i++) {
        int n = snprintf(extra + used, sizeof(extra) - used, "%s%s", i > 0 ? " " : "",
                         c->o->producer_set[i]);
        used += n > 0 ? (size_t)n : 0;
    }
    if (c->o->producer_set_count > 0)
        fig_text(BK_SECTION, "client_extra", "client, -X", "%s", extra);
}

static int bk_run(struct bk_ctx *c)
{
    uint32_t parts = c->o->parts;
    for (size_t s = 0; s < RV_ARRAY_LEN(bk_sizes); s++) {
        for (size_t k = 0; k < RV_ARRAY_LEN(bk_codecs); k++) {
            for (size_t a = 0; a < RV_ARRAY_LEN(bk_acks); a++) {
                struct bk_cell cell;
                uint64_t delivered = 0;
                /* consume without produce: only the acks=1 topics it reads. */
                if (!(parts & BENCH_PART_PRODUCE) && (a != 0 || !(parts & BENCH_PART_CONSUME)))
                    continue;
                bk_cell_init(c, &cell, bk_sizes[s], bk_codecs[k], bk_acks[a]);
                if (!bench_cell_wanted(c->o, cell.key))
                    continue;
                fprintf(stderr, BENCH_NAME ": broker: %s\n", cell.label);
                (void)bk_throughput(c, &cell, &delivered);
                if (parts & BENCH_PART_PRODUCE)
                    (void)bk_paced(c, &cell);
                if (a == 0)
                    c->acks1_count[s][k] = delivered;
            }
        }
    }
    for (size_t s = 0; s < RV_ARRAY_LEN(bk_sizes) && (parts & BENCH_PART_CONSUME); s++) {
        for (size_t k = 0; k < RV_ARRAY_LEN(bk_codecs); k++) {
            if (c->acks1_count[s][k] > 0) {
                fprintf(stderr, BENCH_NAME ": broker: consume %s %s\n", bk_size_label(bk_sizes[s]),
                        bk_codecs[k]);
                (void)bk_consume(c, bk_sizes[s], bk_codecs[k], c->acks1_count[s][k]);
            }
        }
    }
    for (size_t a = 0; a < RV_ARRAY_LEN(bk_acks) && (parts & BENCH_PART_E2E); a++) {
        fprintf(stderr, BENCH_NAME ": broker: end-to-end acks=%s\n", bk_acks[a]);
        (void)bk_e2e_run(c, 1024, bk_acks[a]);
    }
    if (parts & BENCH_PART_PRODUCE)
        bk_targets();
    return 0;
}

/* Whether a broker answers Metadata at all (a clear message when not). */
static int bk_probe(struct bk_ctx *c)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!bk_set(conf, "bootstrap.servers", c->brokers)) {
        rd_kafka_conf_destroy(conf);
        return -EINVAL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, BENCH_NAME ": client: %s\n", err);
        return -EINVAL;
    }
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, NULL, &md, 10000);
    int brokers = e == RD_KAFKA_RESP_ERR_NO_ERROR ? md->broker_cnt : 0;
    if (md != NULL)
        rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr,
                BENCH_NAME ": no broker answers at %s (%s): start rivvend, or give --brokers "
                           "HOST:PORT or --start PATH-TO-RIVVEND\n",
                c->brokers, rd_kafka_err2str(e));
        return -ECONNREFUSED;
    }
    fig_num(BK_SECTION, "advertised_brokers", "advertised brokers (shards)", brokers, "");
    return 0;
}

int bench_broker(const struct bench_opts *o)
{
    char tmp[] = "/var/tmp/rivven-bench.XXXXXX";
    struct bk_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->o = o;
    cpu_set_t set;
    c->partitions = o->has_partitions                              ? o->partitions
                    : sched_getaffinity(0, sizeof(set), &set) == 0 ? (uint32_t)CPU_COUNT(&set)
                                                                   : 1;
    snprintf(c->run_id, sizeof(c->run_id), "%x", (unsigned)(getpid() ^ (pid_t)time(NULL)));
    snprintf(c->brokers, sizeof(c->brokers), "%s",
             o->brokers != NULL ? o->brokers : "127.0.0.1:9092");
    if (o->dir != NULL) {
        snprintf(c->dir, sizeof(c->dir), "%s", o->dir);
    } else if (mkdtemp(tmp) != NULL) {
        snprintf(c->dir, sizeof(c->dir), "%s", tmp);
        c->is_own_dir = true;
    } else {
        fprintf(stderr, BENCH_NAME ": mkdtemp %s: %s\n", tmp, strerror(errno));
        free(c);
        return -errno;
    }
    c->pool = malloc(BK_POOL_BYTES);
    int rc = c->pool == NULL ? -ENOMEM : 0;
    if (rc == 0) {
        bk_pool_fill(c->pool, BK_POOL_BYTES);
        /* The limits first, before a broker we start competes for the CPUs. */
        rc = bench_loopback_limit(o, BK_SECTION, &c->loopback_mbps);
    }
    if (rc == 0)
        rc = bench_fsync_limit(o, c->dir, BK_SECTION, &c->fsync_p99_ns);
    if (rc == 0 && o->start_path != NULL)
        rc = bk_start_broker(c);
    if (rc == 0)
        rc = bk_probe(c);
    if (rc == 0) {
        bk_describe(c);
        fig_num(BK_SECTION, "partitions", "partitions per topic", c->partitions, "");
        rc = bk_run(c);
    }
    if (c->pid > 0) {
        int stop_rc = bk_stop_broker(c);
        rc = rc < 0 ? rc : stop_rc;
    }
    if (c->cells_failed > 0) {
        fig_num(BK_SECTION, "failed_cells", "FAILED measurements", c->cells_failed, "");
        rc = rc < 0 ? rc : -EIO;
    }
    if (c->is_own_dir)
        bench_rm_tree(c->dir);
    free(c->pool);
    free(c);
    return rc;
}
