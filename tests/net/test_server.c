/*
 * tests/net/test_server.c - the TCP server over loopback, on both backends:
 * ApiVersions answered (librdkafka's own frame), pipelined requests answered
 * in order, requests split across many small writes, shard-own ports, and bad
 * input - an oversized or negative size prefix, garbage, an unknown API key, a
 * truncated frame - each closing only its own connection while another keeps
 * being served; a client that sends and never reads; idle connections closed;
 * and a clean stop (the runtime then closes: nothing is left in flight).
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/err.h"
#include "net/kproto.h"
#include "net/kproto_gen.h"
#include "net/kapi.h"
#include "net/metrics.h"
#include "net/server.h"
#include "net/kproto_gen.h"
#include "core/clock.h"
#include "storage/batch.h"
#include "storage/part.h"
#include "tests/support/rt.h"
#include "core/crc32c.h"

TestSuite(server, .timeout = 120);

struct fixture {
    rv_runtime_t *rt;
    rv_store_t *st;
    rv_server_t *srv;
    char dir[64];
    uint16_t port;
    uint8_t api_versions[256]; /* librdkafka's ApiVersions v3, correlation id 1 */
    size_t api_versions_len;
};

static uint32_t fixture_io_depth; /* 0: the runtime's default */

static void fixture_open(struct fixture *f, enum rv_io_backend kind, const char *extra_key,
                         const char *extra_value)
{
    memset(f, 0, sizeof(*f));
    struct rv_runtime_config rc;
    rv_runtime_config_init(&rc);
    if (fixture_io_depth > 0)
        rc.io_depth = fixture_io_depth;
    rc.shard_count = 2;
    rc.allow_oversubscribe = true;
    rc.io_backend = kind;
    snprintf(f->dir, sizeof(f->dir), "/tmp/rivven-test-server-XXXXXX");
    cr_assert_not_null(mkdtemp(f->dir));
    rc.data_dir = f->dir;
    cr_assert_eq(rv_runtime_open(&f->rt, &rc), 0, "%s", rv_err_msg());
    struct rv_store_config sc;
    rv_store_config_init(&sc);
    cr_assert_eq(rv_store_open(&f->st, f->rt, &sc), 0, "%s", rv_err_msg());
    struct rv_config cfg;
    rv_config_init(&cfg);
    cr_assert_eq(rv_config_set(&cfg, "listeners", "PLAINTEXT://127.0.0.1:0"), 0);
    cr_assert_eq(rv_config_set(&cfg, "socket.request.max.bytes", "1000000"), 0);
    if (extra_key != NULL)
        cr_assert_eq(rv_config_set(&cfg, extra_key, extra_value), 0, "%s", rv_err_msg());
    cr_assert_eq(rv_server_start(&f->srv, f->rt, f->st, &cfg), 0, "%s", rv_err_msg());
    f->port = rv_server_port(f->srv);
    cr_assert_neq(f->port, 0);
    FILE *in = fopen("tests/data/kafka/ApiVersions-v3.bin", "rb");
    cr_assert_not_null(in);
    f->api_versions_len = fread(f->api_versions, 1, sizeof(f->api_versions), in);
    fclose(in);
}

/* Create topic `name` with `partitions` partitions (the defaults otherwise). */
static void fixture_topic(struct fixture *f, const char *name, int32_t partitions)
{
    struct rv_topic_config tc;
    rv_topic_config_init(&tc);
    tc.partitions = partitions;
    cr_assert_eq(rv_topic_create(f->st, name, &tc), 0, "%s", rv_err_msg());
}

static void fixture_close(struct fixture *f)
{
    rv_server_stop(f->srv); /* NULL when the test stopped it */
    rv_store_close(f->st);
    rv_runtime_close(f->rt); /* hangs if a socket operation were left in flight */
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    cr_assert_eq(system(cmd), 0);
}

static int client_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0, "connect: %s", strerror(errno));
    return fd;
}

static void client_write(int fd, const void *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = send(fd, (const char *)buf + done, len - done, MSG_NOSIGNAL);
        cr_assert_gt(n, 0, "send: %s", strerror(errno));
        done += (size_t)n;
    }
}

/* Write one frame: size prefix, then the request. */
static void client_send_frame(int fd, const uint8_t *req, size_t len)
{
    uint8_t prefix[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                         (uint8_t)len};
    client_write(fd, prefix, 4);
    client_write(fd, req, len);
}

/* Read exactly len bytes; false at the end of the stream or on a reset. */
static bool client_read(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = recv(fd, (char *)buf + got, len - got, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return false;
        cr_assert_gt(n, 0, "recv: %s", strerror(errno));
        got += (size_t)n;
    }
    return true;
}

/* Read one ApiVersions response and check it; returns its correlation id. */
static int32_t client_read_api_versions(int fd, int16_t version)
{
    uint8_t prefix[4];
    cr_assert(client_read(fd, prefix, 4), "connection closed instead of a response");
    uint32_t size = (uint32_t)prefix[0] << 24 | (uint32_t)prefix[1] << 16 |
                    (uint32_t)prefix[2] << 8 | prefix[3];
    cr_assert_lt(size, 4096);
    uint8_t body[4096];
    cr_assert(client_read(fd, body, size));
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, body, size);
    int32_t corr = -1;
    cr_assert_eq(rv_kp_response_header_parse(&r, RV_KP_API_API_VERSIONS, version, &corr), 0);
    struct rv_kp_api_versions_response resp;
    _Alignas(16) uint8_t arena[1024];
    struct rv_kproto_arena a;
    rv_kproto_arena_init(&a, arena, sizeof(arena));
    cr_assert_eq(rv_kp_api_versions_response_decode(&r, version, &resp, &a), 0);
    cr_assert_eq(resp.error_code, 0);
    size_t n = 0;
    (void)rv_kapi_supported(&n);
    cr_assert_eq(resp.api_keys.count, (int32_t)n);
    return corr;
}

/* The server closed this connection (end of stream or reset, no response). */
static void client_expect_closed(int fd)
{
    uint8_t b;
    cr_assert_not(client_read(fd, &b, 1), "expected the connection to be closed");
}

/* The ApiVersions frame with another correlation id. */
static void with_correlation(const struct fixture *f, uint8_t *out, int32_t corr)
{
    memcpy(out, f->api_versions, f->api_versions_len);
    out[4] = (uint8_t)(corr >> 24);
    out[5] = (uint8_t)(corr >> 16);
    out[6] = (uint8_t)(corr >> 8);
    out[7] = (uint8_t)corr;
}

static void answers_and_pipelines(enum rv_io_backend kind)
{
    struct fixture f;
    fixture_open(&f, kind, NULL, NULL);
    int fd = client_connect(f.port);
    client_send_frame(fd, f.api_versions, f.api_versions_len);
    cr_assert_eq(client_read_api_versions(fd, 3), 1);

    /* 50 requests in one write: 50 responses, in order. */
    uint8_t *many = malloc(50 * (f.api_versions_len + 4));
    size_t pos = 0;
    for (int32_t i = 0; i < 50; i++) {
        uint8_t req[256];
        with_correlation(&f, req, 1000 + i);
        uint32_t len = (uint32_t)f.api_versions_len;
        uint8_t prefix[4] = {0, 0, (uint8_t)(len >> 8), (uint8_t)len};
        memcpy(many + pos, prefix, 4);
        memcpy(many + pos + 4, req, len);
        pos += 4 + len;
    }
    client_write(fd, many, pos);
    for (int32_t i = 0; i < 50; i++)
        cr_assert_eq(client_read_api_versions(fd, 3), 1000 + i);

    /* One request dribbled a byte at a time. */
    for (size_t i = 0; i < f.api_versions_len + 4; i++) {
        client_write(fd, many + i, 1);
        usleep(200);
    }
    cr_assert_eq(client_read_api_versions(fd, 3), 1000);
    free(many);
    close(fd);

    /* Many connections, spread over the shards by SO_REUSEPORT. */
    int fds[16];
    for (int i = 0; i < 16; i++) {
        fds[i] = client_connect(f.port);
        client_send_frame(fds[i], f.api_versions, f.api_versions_len);
    }
    for (int i = 0; i < 16; i++) {
        cr_assert_eq(client_read_api_versions(fds[i], 3), 1);
        close(fds[i]);
    }
    fixture_close(&f);
}

Test(server, answers_and_pipelines_on_io_uring)
{
    answers_and_pipelines(RV_IO_URING);
}

Test(server, answers_and_pipelines_on_epoll)
{
    answers_and_pipelines(RV_IO_EPOLL);
}

static void bad_input_closes_only_that_connection(enum rv_io_backend kind)
{
    struct fixture f;
    fixture_open(&f, kind, NULL, NULL);
    int good = client_connect(f.port);

    static const uint8_t oversized[] = {0x00, 0x0f, 0x42, 0x41}; /* 1000001 > the max */
    static const uint8_t negative[] = {0xff, 0xff, 0xff, 0xfe};
    static const uint8_t http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    static const uint8_t unknown_key[] = {0, 0, 0, 10, 0x03, 0xe8, 0, 0, 0, 0, 0, 9, 0xff, 0xff};
    static const uint8_t short_header[] = {0, 0, 0, 3, 0, 18, 0};
    static const uint8_t metadata[] = {0, 0, 0, 14,   0,    3,    0,    4,    0,
                                       0, 0, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    const struct {
        const uint8_t *bytes;
        size_t len;
    } bad[] = {
        {oversized, sizeof(oversized)},
        {negative, sizeof(negative)},
        {http, sizeof(http) - 1},
        {unknown_key, sizeof(unknown_key)},
        {short_header, sizeof(short_header)},
        {metadata, sizeof(metadata)},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int fd = client_connect(f.port);
        client_write(fd, bad[i].bytes, bad[i].len);
        client_expect_closed(fd);
        close(fd);
        /* The broker and the other connection carry on. */
        client_send_frame(good, f.api_versions, f.api_versions_len);
        cr_assert_eq(client_read_api_versions(good, 3), 1, "after bad input %zu", i);
    }

    /* A truncated frame, then the client goes away: nothing to answer. */
    int fd = client_connect(f.port);
    client_write(fd, f.api_versions, 10);
    close(fd);

    /* Random bytes. */
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int round = 0; round < 20; round++) {
        uint8_t junk[512];
        for (size_t i = 0; i < sizeof(junk); i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            junk[i] = (uint8_t)x;
        }
        fd = client_connect(f.port);
        client_write(fd, junk, sizeof(junk));
        client_expect_closed(fd);
        close(fd);
    }
    client_send_frame(good, f.api_versions, f.api_versions_len);
    cr_assert_eq(client_read_api_versions(good, 3), 1);
    close(good);
    fixture_close(&f);
}

Test(server, bad_input_closes_only_that_connection_on_io_uring)
{
    bad_input_closes_only_that_connection(RV_IO_URING);
}

Test(server, bad_input_closes_only_that_connection_on_epoll)
{
    bad_input_closes_only_that_connection(RV_IO_EPOLL);
}

/* A client that pipelines far more than the output bound and never reads: the
 * broker stops reading it; another client is served; the stop still works. */
static void sender_that_never_reads(enum rv_io_backend kind)
{
    struct fixture f;
    fixture_open(&f, kind, NULL, NULL);
    int hog = client_connect(f.port);
    int flags = MSG_NOSIGNAL | MSG_DONTWAIT;
    size_t frame = f.api_versions_len + 4;
    uint8_t *block = malloc(frame * 1000);
    for (size_t i = 0; i < 1000; i++) {
        uint32_t len = (uint32_t)f.api_versions_len;
        uint8_t prefix[4] = {0, 0, (uint8_t)(len >> 8), (uint8_t)len};
        memcpy(block + i * frame, prefix, 4);
        memcpy(block + i * frame + 4, f.api_versions, len);
    }
    size_t total = 0;
    size_t off = 0; /* into block: the stream must stay whole frames */
    for (int stalls = 0; stalls < 50 && total < (256u << 20);) {
        ssize_t n = send(hog, block + off, frame * 1000 - off, flags);
        if (n > 0) {
            total += (size_t)n;
            off = (off + (size_t)n) % (frame * 1000);
            stalls = 0;
            continue;
        }
        cr_assert(errno == EAGAIN || errno == EWOULDBLOCK, "send: %s", strerror(errno));
        stalls++;
        usleep(2000);
    }
    cr_assert_lt(total, 256u << 20, "the broker should stop reading a client that never reads");
    int good = client_connect(f.port);
    client_send_frame(good, f.api_versions, f.api_versions_len);
    cr_assert_eq(client_read_api_versions(good, 3), 1);
    close(good);
    free(block);
    fixture_close(&f); /* closes the hog's connection with responses unsent */
    close(hog);
}

Test(server, sender_that_never_reads_on_io_uring)
{
    sender_that_never_reads(RV_IO_URING);
}

Test(server, sender_that_never_reads_on_epoll)
{
    sender_that_never_reads(RV_IO_EPOLL);
}

Test(server, idle_connections_are_closed)
{
    struct fixture f;
    fixture_open(&f, RV_IO_URING, "connections.max.idle.ms", "100");
    int fd = client_connect(f.port);
    client_send_frame(fd, f.api_versions, f.api_versions_len);
    cr_assert_eq(client_read_api_versions(fd, 3), 1);
    client_expect_closed(fd); /* within about 100-125 ms; the read times out after 10 s */
    close(fd);
    fixture_close(&f);
}

Test(server, every_shard_has_its_own_port)
{
    struct fixture f;
    fixture_open(&f, RV_IO_URING, NULL, NULL);
    cr_assert_eq(rv_server_shard_port(f.srv, 0), f.port);
    uint16_t own = rv_server_shard_port(f.srv, 1);
    cr_assert_neq(own, 0);
    cr_assert_neq(own, f.port);
    int fd = client_connect(own);
    client_send_frame(fd, f.api_versions, f.api_versions_len);
    cr_assert_eq(client_read_api_versions(fd, 3), 1);
    close(fd);
    fixture_close(&f);

    fixture_open(&f, RV_IO_URING, "rivven.advertise.shards", "false");
    cr_assert_eq(rv_server_shard_port(f.srv, 1), f.port);
    fixture_close(&f);
}

Test(server, stop_with_connections_open_and_a_busy_port)
{
    struct fixture f;
    fixture_open(&f, RV_IO_EPOLL, NULL, NULL);
    int fds[4];
    for (int i = 0; i < 4; i++) {
        fds[i] = client_connect(f.port);
        client_send_frame(fds[i], f.api_versions, f.api_versions_len);
        cr_assert_eq(client_read_api_versions(fds[i], 3), 1);
    }
    /* A second server on the same port fails with a message naming it. */
    struct rv_config cfg;
    rv_config_init(&cfg);
    char text[64];
    snprintf(text, sizeof(text), "PLAINTEXT://127.0.0.1:%u", rv_server_shard_port(f.srv, 1));
    cr_assert_eq(rv_config_set(&cfg, "listeners", text), 0);
    rv_server_t *other = NULL;
    cr_assert_eq(rv_server_start(&other, f.rt, f.st, &cfg), -EADDRINUSE);
    cr_assert_null(other);
    /* The shared port too, although every shard's socket there has SO_REUSEPORT. */
    snprintf(text, sizeof(text), "PLAINTEXT://127.0.0.1:%u", f.port);
    cr_assert_eq(rv_config_set(&cfg, "listeners", text), 0);
    cr_assert_eq(rv_server_start(&other, f.rt, f.st, &cfg), -EADDRINUSE);
    cr_assert(strstr(rv_err_msg(), text + 12) != NULL, "%s", rv_err_msg());
    fixture_close(&f); /* the clients are still connected */
    for (int i = 0; i < 4; i++) {
        client_expect_closed(fds[i]);
        close(fds[i]);
    }
}

/* ---- produce and fetch through the server --------------------------------------------------- */

/* A request frame (size prefix included) for (api, version) with body msg. */
static size_t client_build(uint8_t *out, size_t cap, int16_t api, int16_t version, int32_t corr,
                           const struct rv_kp_struct_desc *desc, const void *msg)
{
    struct rv_kp_request_header h;
    rv_kp_request_header_init(&h);
    h.request_api_key = api;
    h.request_api_version = version;
    h.correlation_id = corr;
    h.client_id = rv_kp_str_from("test");
    struct rv_kp_writer w;
    rv_kp_writer_init(&w, out + 4, cap - 4);
    cr_assert_eq(rv_kp_request_header_build(&w, &h), 0);
    cr_assert_eq(desc->encode(&w, version, msg), 0);
    size_t len = w.pos;
    out[0] = (uint8_t)(len >> 24);
    out[1] = (uint8_t)(len >> 16);
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    return len + 4;
}

/* Read one response frame for (api, version) and decode it into msg. */
static bool client_read_response(int fd, int16_t api, int16_t version, int32_t corr,
                                 const struct rv_kp_struct_desc *desc, void *msg, uint8_t *buf,
                                 size_t cap, struct rv_kproto_arena *a)
{
    uint8_t prefix[4];
    if (!client_read(fd, prefix, 4))
        return false;
    uint32_t size = (uint32_t)prefix[0] << 24 | (uint32_t)prefix[1] << 16 |
                    (uint32_t)prefix[2] << 8 | prefix[3];
    cr_assert_lt(size, cap);
    cr_assert(client_read(fd, buf, size));
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, buf, size);
    int32_t got = -1;
    cr_assert_eq(rv_kp_response_header_parse(&r, api, version, &got), 0);
    cr_assert_eq(got, corr);
    cr_assert_eq(desc->decode(&r, version, msg, a), 0);
    cr_assert_eq(rv_kp_reader_left(&r), 0);
    return true;
}

/* A produce request (acks=all) of pd[0..n) to one topic. */
static size_t client_produce_request(uint8_t *out, size_t cap, int16_t version, int32_t corr,
                                     const char *topic,
                                     struct rv_kp_produce_request_partition_produce_data *pd, int n,
                                     int32_t timeout_ms)
{
    struct rv_kp_produce_request_topic_produce_data td;
    rv_kp_produce_request_topic_produce_data_init(&td);
    td.name = rv_kp_str_from(topic);
    td.partition_data.count = n;
    td.partition_data.items = pd;
    struct rv_kp_produce_request pr;
    rv_kp_produce_request_init(&pr);
    pr.acks = -1;
    pr.timeout_ms = timeout_ms;
    pr.topic_data.count = 1;
    pr.topic_data.items = &td;
    return client_build(out, cap, RV_KP_API_PRODUCE, version, corr, &rv_kp_produce_request_desc,
                        &pr);
}

/* A produce request of one batch of `count` records to t-0, acks=all. */
static size_t client_produce(uint8_t *out, size_t cap, int16_t version, int32_t corr, int count)
{
    uint8_t batch[4096];
    struct rv_batch_params params = {.base_timestamp = RV_BATCH_NO_TIMESTAMP,
                                     .producer_id = RV_BATCH_NO_PRODUCER_ID,
                                     .base_sequence = RV_BATCH_NO_SEQUENCE,
                                     .producer_epoch = -1};
    struct rv_batch_builder b;
    cr_assert_eq(rv_batch_builder_init(&b, batch, sizeof(batch), &params), 0);
    for (int i = 0; i < count; i++) {
        char v[16];
        int n = snprintf(v, sizeof(v), "v%d", i);
        cr_assert_eq(rv_batch_builder_add(&b, 1000 + i, NULL, -1, v, n, NULL, 0), 0);
    }
    size_t blen = 0;
    cr_assert_eq(rv_batch_builder_finish(&b, &blen), 0);
    struct rv_kp_produce_request_partition_produce_data pd;
    rv_kp_produce_request_partition_produce_data_init(&pd);
    pd.index = 0;
    pd.records = (struct rv_kp_bytes){.ptr = batch, .len = (int32_t)blen};
    return client_produce_request(out, cap, version, corr, "t", &pd, 1, 5000);
}

static void produce_then_fetch(enum rv_io_backend kind)
{
    struct fixture f;
    fixture_open(&f, kind, NULL, NULL);
    fixture_topic(&f, "t", 1);
    int fd = client_connect(f.port);
    uint8_t req[8192];
    static uint8_t resp_buf[1 << 16];
    _Alignas(16) static uint8_t arena_buf[1 << 16];
    struct rv_kproto_arena a;
    /* Two produces pipelined, in an old and a flexible version: offsets 0 and 10. */
    size_t n1 = client_produce(req, sizeof(req), 3, 1, 10);
    client_write(fd, req, n1);
    size_t n2 = client_produce(req, sizeof(req), 9, 2, 5);
    client_write(fd, req, n2);
    int64_t want[2] = {0, 10};
    for (int i = 0; i < 2; i++) {
        int16_t v = i == 0 ? 3 : 9;
        struct rv_kp_produce_response pr;
        rv_kproto_arena_init(&a, arena_buf, sizeof(arena_buf));
        cr_assert(client_read_response(fd, RV_KP_API_PRODUCE, v, 1 + i,
                                       &rv_kp_produce_response_desc, &pr, resp_buf,
                                       sizeof(resp_buf), &a));
        cr_assert_eq(pr.responses.count, 1);
        cr_assert_eq(pr.responses.items[0].partition_responses.items[0].error_code, 0);
        cr_assert_eq(pr.responses.items[0].partition_responses.items[0].base_offset, want[i]);
    }
    /* Fetch from offset 3: the batches holding 3.. come back whole, high watermark 15. */
    struct rv_kp_fetch_request_partition fp;
    rv_kp_fetch_request_partition_init(&fp);
    fp.partition = 0;
    fp.fetch_offset = 3;
    fp.partition_max_bytes = 1 << 20;
    struct rv_kp_fetch_request_topic ft;
    rv_kp_fetch_request_topic_init(&ft);
    ft.topic = rv_kp_str_from("t");
    ft.partitions.count = 1;
    ft.partitions.items = &fp;
    struct rv_kp_fetch_request fr;
    rv_kp_fetch_request_init(&fr);
    fr.max_wait_ms = 100;
    fr.min_bytes = 1;
    fr.topics.count = 1;
    fr.topics.items = &ft;
    size_t n =
        client_build(req, sizeof(req), RV_KP_API_FETCH, 11, 3, &rv_kp_fetch_request_desc, &fr);
    client_write(fd, req, n);
    struct rv_kp_fetch_response fres;
    rv_kproto_arena_init(&a, arena_buf, sizeof(arena_buf));
    cr_assert(client_read_response(fd, RV_KP_API_FETCH, 11, 3, &rv_kp_fetch_response_desc, &fres,
                                   resp_buf, sizeof(resp_buf), &a));
    struct rv_kp_fetch_response_partition_data *pd = &fres.responses.items[0].partitions.items[0];
    cr_assert_eq(pd->error_code, 0);
    cr_assert_eq(pd->high_watermark, 15);
    struct rv_batch_iter it;
    rv_batch_iter_init(&it, pd->records.ptr, (size_t)pd->records.len, 1 << 20);
    struct rv_batch_view bv;
    int64_t next = 0;
    int batches = 0;
    while (rv_batch_iter_next(&it, &bv) == 1) {
        cr_assert_eq(bv.base_offset, next);
        next = bv.base_offset + bv.record_count;
        batches++;
    }
    cr_assert_eq(batches, 2);
    cr_assert_eq(next, 15);
    /* A fetch at the end waits max_wait_ms for data, then answers empty. */
    fp.fetch_offset = 15;
    n = client_build(req, sizeof(req), RV_KP_API_FETCH, 11, 4, &rv_kp_fetch_request_desc, &fr);
    uint64_t t0 = rv_clock_now_ns();
    client_write(fd, req, n);
    rv_kproto_arena_init(&a, arena_buf, sizeof(arena_buf));
    cr_assert(client_read_response(fd, RV_KP_API_FETCH, 11, 4, &rv_kp_fetch_response_desc, &fres,
                                   resp_buf, sizeof(resp_buf), &a));
    cr_assert_geq(rv_clock_now_ns() - t0, 90 * 1000000ull, "answered before max_wait_ms");
    cr_assert_eq(fres.responses.items[0].partitions.items[0].records.len, 0);
    /* A long poll is woken by a produce on another connection. */
    fr.max_wait_ms = 10000;
    n = client_build(req, sizeof(req), RV_KP_API_FETCH, 11, 5, &rv_kp_fetch_request_desc, &fr);
    t0 = rv_clock_now_ns();
    client_write(fd, req, n);
    usleep(20000);
    int fd2 = client_connect(f.port);
    n1 = client_produce(req, sizeof(req), 9, 6, 1);
    client_write(fd2, req, n1);
    rv_kproto_arena_init(&a, arena_buf, sizeof(arena_buf));
    cr_assert(client_read_response(fd, RV_KP_API_FETCH, 11, 5, &rv_kp_fetch_response_desc, &fres,
                                   resp_buf, sizeof(resp_buf), &a));
    cr_assert_lt(rv_clock_now_ns() - t0, 5000 * 1000000ull, "the append did not wake the fetch");
    cr_assert_gt(fres.responses.items[0].partitions.items[0].records.len, 0);
    /* Stopping answers a produce already received before closing. */
    n1 = client_produce(req, sizeof(req), 9, 7, 3);
    client_write(fd2, req, n1);
    struct rv_kp_produce_response pr;
    rv_kproto_arena_init(&a, arena_buf, sizeof(arena_buf));
    cr_assert(client_read_response(fd2, RV_KP_API_PRODUCE, 9, 6, &rv_kp_produce_response_desc, &pr,
                                   resp_buf, sizeof(resp_buf), &a));
    usleep(100 * 1000); /* received by the server (answered or not yet: both must arrive) */
    rv_server_stop(f.srv);
    f.srv = NULL;
    rv_kproto_arena_init(&a, arena_buf, sizeof(arena_buf));
    cr_assert(client_read_response(fd2, RV_KP_API_PRODUCE, 9, 7, &rv_kp_produce_response_desc, &pr,
                                   resp_buf, sizeof(resp_buf), &a),
              "stopping dropped an answer in flight");
    cr_assert_eq(pr.responses.items[0].partition_responses.items[0].error_code, 0);
    cr_assert_eq(pr.responses.items[0].partition_responses.items[0].base_offset, 16);
    client_expect_closed(fd2);
    close(fd);
    close(fd2);
    fixture_close(&f);
}

Test(server, produce_then_fetch_on_io_uring)
{
    produce_then_fetch(RV_IO_URING);
}

Test(server, produce_then_fetch_on_epoll)
{
    produce_then_fetch(RV_IO_EPOLL);
}

/* A produce of `parts` partitions of topic "t", each one batch of `bytes`. */
static size_t client_produce_big(uint8_t *out, size_t cap, int32_t corr, int parts, size_t bytes)
{
    static uint8_t batches[4][800 * 1024];
    struct rv_kp_produce_request_partition_produce_data pd[4];
    cr_assert_leq(parts, 4);
    cr_assert_leq(bytes + 1024, sizeof(batches[0]));
    char *value = malloc(bytes);
    memset(value, 'x', bytes);
    for (int p = 0; p < parts; p++) {
        struct rv_batch_params params = {.base_timestamp = RV_BATCH_NO_TIMESTAMP,
                                         .producer_id = RV_BATCH_NO_PRODUCER_ID,
                                         .base_sequence = RV_BATCH_NO_SEQUENCE,
                                         .producer_epoch = -1};
        struct rv_batch_builder b;
        cr_assert_eq(rv_batch_builder_init(&b, batches[p], sizeof(batches[p]), &params), 0);
        cr_assert_eq(rv_batch_builder_add(&b, 1000, NULL, -1, value, (int32_t)bytes, NULL, 0), 0);
        size_t blen = 0;
        cr_assert_eq(rv_batch_builder_finish(&b, &blen), 0);
        rv_kp_produce_request_partition_produce_data_init(&pd[p]);
        pd[p].index = p;
        pd[p].records = (struct rv_kp_bytes){.ptr = batches[p], .len = (int32_t)blen};
    }
    free(value);
    return client_produce_request(out, cap, 9, corr, "t", pd, parts, 5000);
}

/* A request larger than a pool buffer lands in a block of its own; its
 * batches are copied into the owners' pools, on both shards. */
Test(server, a_produce_larger_than_a_receive_buffer)
{
    struct fixture f;
    fixture_open(&f, RV_IO_URING, "socket.request.max.bytes", "10000000");
    fixture_topic(&f, "t", 4);
    int fd = client_connect(f.port);
    size_t cap = 4 * 820 * 1024;
    uint8_t *req = malloc(cap);
    size_t n = client_produce_big(req, cap, 11, 4, 700 * 1024);
    cr_assert_gt(n, 2u << 20, "a frame of %zu bytes", n);
    /* Behind a small request in the same write: the large one straddles buffers. */
    uint8_t *two = malloc(n + f.api_versions_len + 4);
    uint32_t alen = (uint32_t)f.api_versions_len;
    uint8_t prefix[4] = {0, 0, (uint8_t)(alen >> 8), (uint8_t)alen};
    memcpy(two, prefix, 4);
    memcpy(two + 4, f.api_versions, alen);
    memcpy(two + 4 + alen, req, n);
    client_write(fd, two, 4 + alen + n);
    cr_assert_eq(client_read_api_versions(fd, 3), 1);
    static uint8_t resp_buf[1 << 16];
    _Alignas(16) static uint8_t arena_buf[1 << 16];
    struct rv_kproto_arena a;
    rv_kproto_arena_init(&a, arena_buf, sizeof(arena_buf));
    struct rv_kp_produce_response pr;
    cr_assert(client_read_response(fd, RV_KP_API_PRODUCE, 9, 11, &rv_kp_produce_response_desc, &pr,
                                   resp_buf, sizeof(resp_buf), &a));
    for (int p = 0; p < 4; p++) {
        cr_assert_eq(pr.responses.items[0].partition_responses.items[p].error_code, 0, "p%d", p);
        cr_assert_eq(pr.responses.items[0].partition_responses.items[p].base_offset, 0);
    }
    for (int p = 0; p < 4; p++)
        cr_assert_eq(rv_list_offset(f.st, "t", p, RV_OFFSET_LATEST), 1, "p%d", p);
    free(two);
    free(req);
    close(fd);
    fixture_close(&f);
}

/* More connections than the shard has I/O slots: the ones without a slot wait
 * for one (they are not closed) and are answered once others go. */
Test(server, connections_wait_for_an_io_slot)
{
    fixture_io_depth = 8;
    struct fixture f;
    fixture_open(&f, RV_IO_URING, "rivven.advertise.shards", "false");
    fixture_io_depth = 0;
    enum { N = 24 };
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = client_connect(f.port);
    usleep(100 * 1000);
    for (int i = 0; i < N; i++)
        client_send_frame(fds[i], f.api_versions, f.api_versions_len);
    /* Close the first half (each shard's slots are held by receives). */
    for (int i = 0; i < N / 2; i++)
        close(fds[i]);
    for (int i = N / 2; i < N; i++) {
        cr_assert_eq(client_read_api_versions(fds[i], 3), 1, "connection %d answered", i);
        close(fds[i]);
    }
    fixture_close(&f);
}

/* ---- produces of one connection stay in order --------------------------------------------- */

/* A produce request (v9, acks=all) of one 1-record batch to each of parts[0..n)
 * of topic "o"; the record's value is "<corr>-<partition>". */
static int32_t parts_timeout_ms = 10000; /* of the produces client_produce_parts builds */

static size_t client_produce_parts(uint8_t *out, size_t cap, int32_t corr, const int32_t *parts,
                                   int n)
{
    static uint8_t batches[8][512];
    struct rv_kp_produce_request_partition_produce_data pd[8];
    cr_assert_leq(n, 8);
    for (int i = 0; i < n; i++) {
        struct rv_batch_params params = {.base_timestamp = RV_BATCH_NO_TIMESTAMP,
                                         .producer_id = RV_BATCH_NO_PRODUCER_ID,
                                         .base_sequence = RV_BATCH_NO_SEQUENCE,
                                         .producer_epoch = -1};
        struct rv_batch_builder b;
        cr_assert_eq(rv_batch_builder_init(&b, batches[i], sizeof(batches[i]), &params), 0);
        char v[32];
        int vl = snprintf(v, sizeof(v), "%d-%d", corr, parts[i]);
        cr_assert_eq(rv_batch_builder_add(&b, 1000, NULL, -1, v, vl, NULL, 0), 0);
        size_t blen = 0;
        cr_assert_eq(rv_batch_builder_finish(&b, &blen), 0);
        rv_kp_produce_request_partition_produce_data_init(&pd[i]);
        pd[i].index = parts[i];
        pd[i].records = (struct rv_kp_bytes){.ptr = batches[i], .len = (int32_t)blen};
    }
    return client_produce_request(out, cap, 9, corr, "o", pd, n, parts_timeout_ms);
}

/* The base offset each partition of a produce response got (-1: an error). */
static void read_produce_offsets(int fd, int32_t corr, int n, const int32_t *parts, int64_t *out)
{
    static uint8_t resp_buf[1 << 16];
    _Alignas(16) static uint8_t arena_buf[1 << 16];
    struct rv_kproto_arena a;
    rv_kproto_arena_init(&a, arena_buf, sizeof(arena_buf));
    struct rv_kp_produce_response pr;
    cr_assert(client_read_response(fd, RV_KP_API_PRODUCE, 9, corr, &rv_kp_produce_response_desc,
                                   &pr, resp_buf, sizeof(resp_buf), &a));
    cr_assert_eq(pr.responses.count, 1);
    cr_assert_eq(pr.responses.items[0].partition_responses.count, n);
    for (int i = 0; i < n; i++) {
        const struct rv_kp_produce_response_partition_produce_response *r =
            &pr.responses.items[0].partition_responses.items[i];
        cr_assert_eq(r->index, parts[i]);
        cr_assert_eq(r->error_code, 0, "corr %d partition %d: error %d", corr, parts[i],
                     r->error_code);
        out[i] = r->base_offset;
    }
}

/*
 * After a restart every log is opened on its first use, and a produce waits for
 * that. Two produces pipelined on one connection, the first to partitions A
 * and B, the second to B alone: the second must not overtake the first on B
 * while the first waits for A's log (Kafka appends a connection's requests in
 * order), whatever order the logs finish opening in.
 */
Test(server, a_waiting_produce_is_not_overtaken_by_a_later_one)
{
    struct fixture f;
    fixture_open(&f, RV_IO_URING, "rivven.advertise.shards", "false");
    fixture_topic(&f, "o", 16);
    /* Two partitions on one owner shard. */
    int32_t pa = -1, pb = -1;
    uint32_t owner0 = 0;
    for (int32_t p = 0; p < 16 && pb < 0; p++) {
        struct rv_partition_info info;
        cr_assert_eq(rv_partition_info(f.st, "o", p, &info), 0);
        if (pa < 0) {
            pa = p;
            owner0 = info.shard;
        } else if (info.shard == owner0) {
            pb = p;
        }
    }
    cr_assert_geq(pb, 0);
    uint8_t req[16384];
    int rounds = 0;
    for (int round = 0; round < 5; round++) {
        /* Restart the store and server: the logs are opened lazily again. */
        rv_server_stop(f.srv);
        rv_store_close(f.st);
        struct rv_store_config sc;
        rv_store_config_init(&sc);
        cr_assert_eq(rv_store_open(&f.st, f.rt, &sc), 0, "%s", rv_err_msg());
        struct rv_config cfg;
        rv_config_init(&cfg);
        cr_assert_eq(rv_config_set(&cfg, "listeners", "PLAINTEXT://127.0.0.1:0"), 0);
        cr_assert_eq(rv_config_set(&cfg, "rivven.advertise.shards", "false"), 0);
        cr_assert_eq(rv_server_start(&f.srv, f.rt, f.st, &cfg), 0, "%s", rv_err_msg());
        f.port = rv_server_port(f.srv);
        int fd = client_connect(f.port);
        const int32_t first[2] = {pa, pb}, second[1] = {pb};
        size_t n1 = client_produce_parts(req, sizeof(req), 10 + 2 * round, first, 2);
        size_t n2 = client_produce_parts(req + n1, sizeof(req) - n1, 11 + 2 * round, second, 1);
        client_write(fd, req, n1 + n2); /* one write: both arrive together */
        int64_t o1[2], o2[1];
        read_produce_offsets(fd, 10 + 2 * round, 2, first, o1);
        read_produce_offsets(fd, 11 + 2 * round, 1, second, o2);
        cr_assert_lt(o1[1], o2[0],
                     "round %d: the later produce went first on partition %d "
                     "(%lld, %lld)",
                     round, pb, (long long)o1[1], (long long)o2[0]);
        close(fd);
        rounds++;
    }
    cr_assert_eq(rounds, 5);
    fixture_close(&f);
}

/* ---- large compressed batches are checked off the shard ----------------------------------- */

/* A gzip batch of `count` records of 1 KiB that gzip cannot shrink much (well
 * over KAPI_CHECK_OFFLOAD_BYTES), as a produce request to "z" partition 0; with
 * is_corrupt, one byte of the compressed records is changed and the CRC
 * recomputed, so only decompressing finds it. */
static size_t client_produce_gzip(uint8_t *out, size_t cap, int32_t corr, int count,
                                  bool is_corrupt)
{
    static uint8_t raw[1 << 20], batch[1 << 20];
    struct rv_batch_params params = {.base_timestamp = RV_BATCH_NO_TIMESTAMP,
                                     .producer_id = RV_BATCH_NO_PRODUCER_ID,
                                     .base_sequence = RV_BATCH_NO_SEQUENCE,
                                     .producer_epoch = -1};
    struct rv_batch_builder b;
    cr_assert_eq(rv_batch_builder_init(&b, raw, sizeof(raw), &params), 0);
    uint64_t x = 0x9e3779b97f4a7c15ull + (uint64_t)corr;
    for (int i = 0; i < count; i++) {
        char v[1024];
        for (size_t k = 0; k < sizeof(v); k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            v[k] = (char)x;
        }
        cr_assert_eq(rv_batch_builder_add(&b, 1000, NULL, -1, v, sizeof(v), NULL, 0), 0);
    }
    size_t blen = 0;
    cr_assert_eq(rv_batch_builder_finish_compressed(&b, RV_CODEC_GZIP,
                                                    rv_codec_default_level(RV_CODEC_GZIP), batch,
                                                    sizeof(batch), &blen),
                 0);
    cr_assert_gt(blen, 64u << 10, "large enough to be checked off the shard");
    if (is_corrupt) {
        batch[blen / 2] ^= 0x5a; /* inside the deflate stream */
        uint32_t crc =
            rv_crc32c(0, batch + RV_BATCH_ATTRIBUTES_POS, blen - RV_BATCH_ATTRIBUTES_POS);
        for (int k = 0; k < 4; k++)
            batch[RV_BATCH_CRC_POS + k] = (uint8_t)(crc >> (24 - 8 * k));
    }
    struct rv_kp_produce_request_partition_produce_data pd;
    rv_kp_produce_request_partition_produce_data_init(&pd);
    pd.index = 0;
    pd.records = (struct rv_kp_bytes){.ptr = batch, .len = (int32_t)blen};
    return client_produce_request(out, cap, 9, corr, "z", &pd, 1, 10000);
}

static int16_t read_produce_error(int fd, int32_t corr, int64_t *base)
{
    static uint8_t resp_buf[1 << 16];
    _Alignas(16) static uint8_t arena_buf[1 << 16];
    struct rv_kproto_arena a;
    rv_kproto_arena_init(&a, arena_buf, sizeof(arena_buf));
    struct rv_kp_produce_response pr;
    cr_assert(client_read_response(fd, RV_KP_API_PRODUCE, 9, corr, &rv_kp_produce_response_desc,
                                   &pr, resp_buf, sizeof(resp_buf), &a));
    const struct rv_kp_produce_response_partition_produce_response *r =
        &pr.responses.items[0].partition_responses.items[0];
    *base = r->base_offset;
    return r->error_code;
}

Test(server, large_compressed_batches_are_checked_off_the_shard_in_order)
{
    struct fixture f;
    fixture_open(&f, RV_IO_URING, NULL, NULL);
    fixture_topic(&f, "z", 1);
    cr_assert_eq(rv_metrics_open(f.rt), 0);
    int fd = client_connect(f.port);
    static uint8_t req[3 << 20];
    /* Pipelined: a big gzip batch (checked on a helper thread), a corrupt one,
     * then a big one again: the offsets follow the order they were sent in. */
    size_t n = client_produce_gzip(req, sizeof(req), 1, 200, false);
    n += client_produce_gzip(req + n, sizeof(req) - n, 2, 150, true);
    n += client_produce_gzip(req + n, sizeof(req) - n, 3, 100, false);
    client_write(fd, req, n);
    int64_t base = -2;
    cr_assert_eq(read_produce_error(fd, 1, &base), 0);
    cr_assert_eq(base, 0);
    cr_assert_eq(read_produce_error(fd, 2, &base), 2,
                 "CORRUPT_MESSAGE: the records do not "
                 "decompress");
    cr_assert_eq(read_produce_error(fd, 3, &base), 0);
    cr_assert_eq(base, 200, "after the first, the corrupt one took no offsets");
    struct rv_partition_info info;
    cr_assert_eq(rv_partition_info(f.st, "z", 0, &info), 0);
    cr_assert_eq(info.high_watermark, 300);
    struct rv_metrics_snapshot *snap = NULL;
    cr_assert_eq(rv_metrics_collect(f.rt, false, &snap), 0);
    uint64_t offloaded = 0;
    for (uint32_t i = 0; i < snap->shard_count; i++)
        offloaded += snap->shards[i].checks_offloaded;
    cr_assert_eq(offloaded, 3, "every batch was checked by a helper thread");
    rv_metrics_snapshot_free(snap);
    close(fd);
    rv_metrics_close(f.rt);
    fixture_close(&f);
}

/* ---- a produce that cannot get a buffer -------------------------------------------------- */

struct pool_grab {
    rv_store_t *st;
    rv_pool_t *pool;
    void **blocks;
    size_t count, cap;
};

/* On a shard: take every block its store pool can give, of every class. */
static void pool_grab_own(void *arg)
{
    struct pool_grab *g = arg;
    g->pool = rv_store_pool(g->st);
    for (int cls = RV_POOL_CLASS_COUNT - 1; cls >= 0; cls--) {
        void *b;
        while ((b = rv_pool_get(g->pool, rv_pool_class_size(cls))) != NULL) {
            if (g->count == g->cap) {
                g->cap = g->cap ? 2 * g->cap : 4096;
                g->blocks = realloc(g->blocks, g->cap * sizeof(*g->blocks));
                cr_assert_not_null(g->blocks);
            }
            g->blocks[g->count++] = b;
        }
    }
}

static void pool_give_back(void *arg)
{
    struct pool_grab *g = arg;
    for (size_t i = 0; i < g->count; i++)
        rv_pool_put(g->blocks[i]);
    g->count = 0;
}

/* A produce forwarded to an owner whose pool is spent waits in its line and
 * times out (REQUEST_TIMED_OUT) at the request's timeout; once buffers come
 * back the next produce to that partition is appended: the timed-out one left
 * the line. */
Test(server, a_produce_that_cannot_get_a_buffer_times_out_and_leaves_the_line)
{
    struct fixture f;
    fixture_open(&f, RV_IO_URING, NULL, NULL); /* shards advertised: port = shard 0 */
    fixture_topic(&f, "o", 8);
    int32_t part = -1;
    for (int32_t p = 0; p < 8 && part < 0; p++) {
        struct rv_partition_info info;
        cr_assert_eq(rv_partition_info(f.st, "o", p, &info), 0);
        if (info.shard == 1)
            part = p; /* owned by shard 1: forwarded from shard 0's port */
    }
    cr_assert_geq(part, 0);
    int fd = client_connect(f.port);
    uint8_t req[4096];
    int64_t base = -2;
    /* Load the partition's log first (a produce that goes through). */
    size_t n = client_produce_parts(req, sizeof(req), 1, &part, 1);
    client_write(fd, req, n);
    read_produce_offsets(fd, 1, 1, &part, &base);
    cr_assert_eq(base, 0);

    struct pool_grab g = {.st = f.st};
    test_run_on(f.rt, 1, pool_grab_own, &g);
    cr_assert_gt(g.count, 0);
    parts_timeout_ms = 300;
    uint64_t t0 = rv_clock_now_ns();
    n = client_produce_parts(req, sizeof(req), 2, &part, 1);
    client_write(fd, req, n);
    int16_t err = read_produce_error(fd, 2, &base);
    uint64_t took_ms = (rv_clock_now_ns() - t0) / 1000000;
    cr_assert_eq(err, 7, "REQUEST_TIMED_OUT (got %d)", err);
    cr_assert_geq(took_ms, 250, "waited for the timeout (%llu ms)", (unsigned long long)took_ms);
    test_run_on(f.rt, 1, pool_give_back, &g);
    free(g.blocks);
    parts_timeout_ms = 10000;
    n = client_produce_parts(req, sizeof(req), 3, &part, 1);
    client_write(fd, req, n);
    read_produce_offsets(fd, 3, 1, &part, &base);
    cr_assert_eq(base, 1, "appended after the one that timed out took nothing");
    close(fd);
    fixture_close(&f);
}

/* A connection whose shard has no receive buffer to give waits (retried on a
 * timer) instead of failing, and is served once buffers come back. */
Test(server, a_connection_waits_for_a_receive_buffer_when_the_pool_is_spent)
{
    struct fixture f;
    fixture_open(&f, RV_IO_URING, NULL, NULL); /* shards advertised: port = shard 0 */
    struct pool_grab g = {.st = f.st};
    test_run_on(f.rt, 0, pool_grab_own, &g);
    cr_assert_gt(g.count, 0);
    int fd = client_connect(f.port);
    client_send_frame(fd, f.api_versions, f.api_versions_len);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&pfd, 1, 300), 0, "no answer while there is no buffer to read it into");
    test_run_on(f.rt, 0, pool_give_back, &g);
    free(g.blocks);
    cr_assert_eq(client_read_api_versions(fd, 3), 1, "served once buffers came back");
    close(fd);
    fixture_close(&f);
}
