/*
 * tests/net/test_kapi.c - the API handlers: ApiVersions in every version (and
 * librdkafka's own request), a too-new ApiVersions answered in v0 with
 * UNSUPPORTED_VERSION, invalid client software names, every other API at every
 * schema version answered with an error response or refused, and headers that
 * are cut short, unknown or random. Responses are read back with the generated
 * decoders. And kapi_send_parts: partitions grouped by owner shard, and what
 * fails when a shard's work cannot be made.
 */
#include <criterion/criterion.h>

#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "net/kapi.h"
#include "net/kapi_impl.h"
#include "net/kproto.h"
#include "net/kproto_gen.h"

TestSuite(kapi);

/* A request frame (no size prefix): header for (key, version, corr), then body. */
static size_t build_request(uint8_t *buf, size_t cap, int16_t key, int16_t version, int32_t corr,
                            const void *body, size_t body_len)
{
    struct rv_kp_request_header h;
    rv_kp_request_header_init(&h);
    h.request_api_key = key;
    h.request_api_version = version;
    h.correlation_id = corr;
    h.client_id = rv_kp_str_from("test");
    struct rv_kp_writer w;
    rv_kp_writer_init(&w, buf, cap);
    cr_assert_eq(rv_kp_request_header_build(&w, &h), 0);
    cr_assert_eq(rv_kp_write_raw(&w, body, body_len), 0);
    return w.pos;
}

/* Check the size prefix and header of the one response in out; leave r on the body. */
static void open_response(const struct rv_kapi_out *out, int16_t key, int16_t version, int32_t corr,
                          struct rv_kp_reader *r)
{
    cr_assert_geq(out->len, 8);
    rv_kp_reader_init(r, out->data, out->len);
    int32_t size = 0;
    cr_assert_eq(rv_kp_read_i32(r, &size), 0);
    cr_assert_eq((size_t)size, out->len - 4, "size prefix %d for %zu bytes", size, out->len);
    int32_t got = 0;
    cr_assert_eq(rv_kp_response_header_parse(r, key, version, &got), 0);
    cr_assert_eq(got, corr);
}

static void decode_api_versions(const struct rv_kapi_out *out, int16_t version, int32_t corr,
                                struct rv_kp_api_versions_response *resp, void *arena_buf,
                                size_t arena_cap)
{
    struct rv_kp_reader r;
    open_response(out, RV_KP_API_API_VERSIONS, version, corr, &r);
    struct rv_kproto_arena a;
    rv_kproto_arena_init(&a, arena_buf, arena_cap);
    cr_assert_eq(rv_kp_api_versions_response_decode(&r, version, resp, &a), 0);
    cr_assert_eq(rv_kp_reader_left(&r), 0);
}

Test(kapi, api_versions_in_every_version_lists_exactly_what_is_implemented)
{
    size_t n = 0;
    const struct rv_kapi_api *ours = rv_kapi_supported(&n);
    cr_assert_gt(n, 1);
    size_t av = n;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            cr_assert_lt(ours[i - 1].api_key, ours[i].api_key, "sorted by key");
        const struct rv_kp_api *api = rv_kp_api_find(ours[i].api_key);
        cr_assert_not_null(api);
        cr_assert_geq(ours[i].version_min, api->version_min);
        cr_assert_leq(ours[i].version_max, api->version_max);
        if (ours[i].api_key == RV_KP_API_API_VERSIONS)
            av = i;
    }
    cr_assert_lt(av, n);
    const struct rv_kp_api *schema = rv_kp_api_find(RV_KP_API_API_VERSIONS);
    cr_assert_eq(ours[av].version_min, schema->version_min);
    cr_assert_eq(ours[av].version_max, schema->version_max);
    for (int16_t v = schema->version_min; v <= schema->version_max; v++) {
        uint8_t req[256], body[64];
        struct rv_kp_api_versions_request avr;
        rv_kp_api_versions_request_init(&avr);
        avr.client_software_name = rv_kp_str_from("rivven-test");
        avr.client_software_version = rv_kp_str_from("1.0");
        struct rv_kp_writer bw;
        rv_kp_writer_init(&bw, body, sizeof(body));
        cr_assert_eq(rv_kp_api_versions_request_encode(&bw, v, &avr), 0);
        size_t len =
            build_request(req, sizeof(req), RV_KP_API_API_VERSIONS, v, 100 + v, body, bw.pos);
        struct rv_kapi_out out = {0};
        cr_assert_eq(rv_kapi_handle(req, len, &out), 0, "v%d: %s", v, rv_err_msg());
        struct rv_kp_api_versions_response resp;
        alignas(16) uint8_t arena[1024];
        decode_api_versions(&out, v, 100 + v, &resp, arena, sizeof(arena));
        cr_assert_eq(resp.error_code, 0, "v%d", v);
        cr_assert_eq(resp.api_keys.count, (int32_t)n);
        for (size_t i = 0; i < n; i++) {
            cr_assert_eq(resp.api_keys.items[i].api_key, ours[i].api_key);
            cr_assert_eq(resp.api_keys.items[i].min_version, ours[i].version_min);
            cr_assert_eq(resp.api_keys.items[i].max_version, ours[i].version_max);
        }
        rv_kapi_out_fini(&out);
    }
}

Test(kapi, librdkafkas_api_versions_v3_is_answered)
{
    FILE *f = fopen("tests/data/kafka/ApiVersions-v3.bin", "rb");
    cr_assert_not_null(f);
    uint8_t req[256];
    size_t len = fread(req, 1, sizeof(req), f);
    fclose(f);
    struct rv_kapi_out out = {0};
    cr_assert_eq(rv_kapi_handle(req, len, &out), 0, "%s", rv_err_msg());
    struct rv_kp_api_versions_response resp;
    alignas(16) uint8_t arena[1024];
    decode_api_versions(&out, 3, 1, &resp, arena, sizeof(arena));
    cr_assert_eq(resp.error_code, 0);
    size_t n = 0;
    (void)rv_kapi_supported(&n);
    cr_assert_eq(resp.api_keys.count, (int32_t)n);
    /* Two requests append two frames, in order. */
    cr_assert_eq(rv_kapi_handle(req, len, &out), 0);
    cr_assert_eq(out.len % 2, 0);
    cr_assert(memcmp(out.data, out.data + out.len / 2, out.len / 2) == 0);
    rv_kapi_out_fini(&out);
}

Test(kapi, too_new_api_versions_gets_v0_with_unsupported_version)
{
    int16_t versions[] = {5, 100, 0x7fff};
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
        uint8_t req[256];
        uint8_t body[] = {0x07, 'c', 'l', 'i', 'e', 'n', 't', 0x02, '1', 0x00, 0x00};
        size_t len = build_request(req, sizeof(req), RV_KP_API_API_VERSIONS, versions[i], 7, body,
                                   sizeof(body));
        struct rv_kapi_out out = {0};
        cr_assert_eq(rv_kapi_handle(req, len, &out), 0, "%s", rv_err_msg());
        struct rv_kp_api_versions_response resp;
        alignas(16) uint8_t arena[1024];
        decode_api_versions(&out, 0, 7, &resp, arena, sizeof(arena));
        cr_assert_eq(resp.error_code, RV_KAPI_ERR_UNSUPPORTED_VERSION);
        size_t n = 0;
        (void)rv_kapi_supported(&n);
        cr_assert_eq(resp.api_keys.count, (int32_t)n, "the client learns what to retry with");
        rv_kapi_out_fini(&out);
    }
}

Test(kapi, invalid_client_software_name_is_invalid_request)
{
    static const char *const bad[] = {"", "-starts-with-dash", "ends.", "has space", "a_b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t req[256], body[64];
        struct rv_kp_api_versions_request avr;
        rv_kp_api_versions_request_init(&avr);
        avr.client_software_name = rv_kp_str_from(bad[i]);
        avr.client_software_version = rv_kp_str_from("1.0");
        struct rv_kp_writer bw;
        rv_kp_writer_init(&bw, body, sizeof(body));
        cr_assert_eq(rv_kp_api_versions_request_encode(&bw, 3, &avr), 0);
        size_t len = build_request(req, sizeof(req), RV_KP_API_API_VERSIONS, 3, 9, body, bw.pos);
        struct rv_kapi_out out = {0};
        cr_assert_eq(rv_kapi_handle(req, len, &out), 0);
        struct rv_kp_api_versions_response resp;
        alignas(16) uint8_t arena[1024];
        decode_api_versions(&out, 3, 9, &resp, arena, sizeof(arena));
        cr_assert_eq(resp.error_code, RV_KAPI_ERR_INVALID_REQUEST, "'%s'", bad[i]);
        rv_kapi_out_fini(&out);
    }
}

Test(kapi, unimplemented_api_with_an_error_code_gets_unsupported_version)
{
    /* FindCoordinator v0: a top-level ErrorCode. */
    uint8_t req[256];
    uint8_t body[] = {0x00, 0x01, 'g'};
    size_t len =
        build_request(req, sizeof(req), RV_KP_API_FIND_COORDINATOR, 0, 42, body, sizeof(body));
    struct rv_kapi_out out = {0};
    cr_assert_eq(rv_kapi_handle(req, len, &out), 0, "%s", rv_err_msg());
    struct rv_kp_reader r;
    open_response(&out, RV_KP_API_FIND_COORDINATOR, 0, 42, &r);
    struct rv_kp_find_coordinator_response resp;
    cr_assert_eq(rv_kp_find_coordinator_response_decode(&r, 0, &resp, NULL), 0);
    cr_assert_eq(resp.error_code, RV_KAPI_ERR_UNSUPPORTED_VERSION);
    rv_kapi_out_fini(&out);
}

Test(kapi, refusals_close_the_connection_and_say_why)
{
    uint8_t req[256];
    struct rv_kapi_out out = {0};
    /* Metadata: no top-level error code to carry the refusal. */
    size_t len = build_request(req, sizeof(req), RV_KP_API_METADATA, 4, 5, "\0\0\0\0\0", 5);
    cr_assert_eq(rv_kapi_handle(req, len, &out), -EPROTO);
    cr_assert(strstr(rv_err_msg(), "Metadata") != NULL, "%s", rv_err_msg());
    /* A version beyond the schema. */
    len = build_request(req, sizeof(req), RV_KP_API_PRODUCE, 99, 6, NULL, 0);
    cr_assert_eq(rv_kapi_handle(req, len, &out), -EPROTO);
    cr_assert(strstr(rv_err_msg(), "v99") != NULL, "%s", rv_err_msg());
    /* An unknown API key, written by hand (the builder refuses it). */
    uint8_t unknown[] = {0x03, 0xe8, 0, 0, 0, 0, 0, 7, 0xff, 0xff};
    cr_assert_eq(rv_kapi_handle(unknown, sizeof(unknown), &out), -EPROTO);
    cr_assert(strstr(rv_err_msg(), "1000") != NULL, "%s", rv_err_msg());
    /* A malformed ApiVersions body (v3: a compact string running past the end). */
    uint8_t bad_body[] = {0x40, 'x'};
    len = build_request(req, sizeof(req), RV_KP_API_API_VERSIONS, 3, 8, bad_body, sizeof(bad_body));
    cr_assert_eq(rv_kapi_handle(req, len, &out), -EPROTO);
    cr_assert_eq(out.len, 0, "nothing was appended");
    rv_kapi_out_fini(&out);
}

Test(kapi, short_and_random_frames_never_crash)
{
    uint8_t req[256];
    size_t len = build_request(req, sizeof(req), RV_KP_API_API_VERSIONS, 2, 1, NULL, 0);
    struct rv_kapi_out out = {0};
    for (size_t cut = 0; cut < len; cut++)
        cr_assert_eq(rv_kapi_handle(req, cut, &out), -EPROTO, "cut at %zu", cut);
    cr_assert_eq(out.len, 0);
    uint64_t x = 88172645463325252ull;
    for (int round = 0; round < 20000; round++) {
        uint8_t junk[64];
        size_t n = (size_t)(round % (int)sizeof(junk));
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            junk[i] = (uint8_t)x;
        }
        if (n >= 2 && round % 3 == 0) { /* a real key and version, junk after */
            junk[0] = 0;
            junk[1] = (uint8_t)(round % 70);
        }
        int rc = rv_kapi_handle(junk, n, &out);
        cr_assert(rc == 0 || rc == -EPROTO, "rc %d", rc);
    }
    rv_kapi_out_fini(&out);
}

Test(kapi, every_api_and_version_is_answered_readably_or_refused)
{
    uint32_t answered = 0, refused = 0;
    for (size_t i = 0; i < rv_kp_api_count; i++) {
        const struct rv_kp_api *api = &rv_kp_apis[i];
        bool is_ours = false;
        size_t n = 0;
        const struct rv_kapi_api *ours = rv_kapi_supported(&n);
        for (size_t k = 0; k < n; k++)
            is_ours |= ours[k].api_key == api->api_key;
        if (is_ours)
            continue; /* implemented: the broker tests (tests/broker) */
        for (int v = api->version_min; v <= api->version_max + 1; v++) {
            uint8_t req[256];
            /* The request body is never read for an unimplemented API. */
            size_t len = build_request(req, sizeof(req), api->api_key, (int16_t)v, v, NULL, 0);
            struct rv_kapi_out out = {0};
            int rc = rv_kapi_handle(req, len, &out);
            if (rc == -EPROTO) {
                refused++;
                cr_assert_eq(out.len, 0);
                continue;
            }
            cr_assert_eq(rc, 0, "%s v%d: %d %s", api->name, v, rc, rv_err_msg());
            struct rv_kp_reader r;
            open_response(&out, api->api_key, (int16_t)v, v, &r);
            const struct rv_kp_struct_desc *d = api->response;
            void *msg = calloc(1, d->size);
            alignas(16) uint8_t arena[4096];
            struct rv_kproto_arena a;
            rv_kproto_arena_init(&a, arena, sizeof(arena));
            cr_assert_eq(d->decode(&r, (int16_t)v, msg, &a), 0, "%s v%d", api->name, v);
            cr_assert_eq(rv_kp_reader_left(&r), 0);
            bool has_code = false;
            for (uint32_t f = 0; f < d->field_count; f++) {
                if (strcmp(d->fields[f].name, "ErrorCode") != 0 ||
                    !rv_kp_vrange_has(d->fields[f].versions, (int16_t)v))
                    continue;
                int16_t code = 0;
                memcpy(&code, (char *)msg + d->fields[f].offset, sizeof(code));
                cr_assert_eq(code, RV_KAPI_ERR_UNSUPPORTED_VERSION, "%s v%d", api->name, v);
                has_code = true;
            }
            cr_assert(has_code, "%s v%d answered without an error code", api->name, v);
            free(msg);
            rv_kapi_out_fini(&out);
            answered++;
        }
    }
    cr_assert_gt(answered, 10);
    cr_assert_gt(refused, 10);
}

/* ---- kapi_send_parts -------------------------------------------------------------------------- */

/* A partition as a handler keeps it, and the work of one owner shard. */
struct tpart {
    int owner; /* -1: not sent */
    int16_t err;
    struct twork *w;
};

struct twork {
    struct kapi_work w; /* first */
    uint32_t count;
    uint32_t cap;
    struct tpart **parts;
};

static struct {
    struct tpart parts[8];
    uint32_t work_new_calls;
    uint32_t work_fail_from; /* work_new fails from this call on (0: the first) */
    uint32_t runs;
    struct twork *ran[4];
    uint32_t done_calls;
} T;

static int tparts_owner(struct rv_kreq *req, uint32_t i)
{
    (void)req;
    return T.parts[i].owner;
}

static struct kapi_work *tparts_work_new(struct rv_kreq *req, uint32_t part_count)
{
    if (T.work_new_calls++ >= T.work_fail_from)
        return NULL;
    struct twork *w = kapi_alloc(req, sizeof(*w));
    cr_assert_not_null(w);
    w->parts = kapi_alloc(req, part_count * sizeof(*w->parts));
    cr_assert_not_null(w->parts);
    w->cap = part_count;
    return &w->w;
}

static void tparts_place(struct rv_kreq *req, uint32_t i, struct kapi_work *work)
{
    (void)req;
    struct tpart *p = &T.parts[i];
    if (work == NULL) {
        p->err = p->err != 0 ? p->err : KERR_UNKNOWN_SERVER_ERROR;
        return;
    }
    p->w = (struct twork *)work;
    cr_assert_lt(p->w->count, p->w->cap);
    p->w->parts[p->w->count++] = p;
}

/* On the owner: noted, and left unfinished (no runtime here to go back through). */
static void tparts_run(void *arg)
{
    cr_assert_lt(T.runs, 4);
    T.ran[T.runs++] = arg;
}

static void tparts_done(struct rv_kreq *req)
{
    (void)req;
    T.done_calls++;
}

static const struct kapi_parts_ops tparts_ops = {
    .owner = tparts_owner, .work_new = tparts_work_new, .place = tparts_place, .run = tparts_run};

/* Send parts[0..count) from shard 0 of a three-shard broker. */
static void tparts_send(struct rv_kreq *req, uint32_t count)
{
    static struct rv_kapi_broker b = {.shard_count = 3};
    static struct rv_kapi_shard ks = {.b = &b, .id = 0};
    static alignas(max_align_t) uint8_t arena[4096];
    *req = (struct rv_kreq){.ks = &ks};
    rv_kproto_arena_init(&req->arena, arena, sizeof(arena));
    kapi_send_parts(req, count, &tparts_ops, tparts_done);
}

Test(kapi, send_parts_groups_by_owner_and_fails_a_shard_without_a_work)
{
    /* Shard 0 gets parts 0 and 3 (in order); shard 2's work cannot be made,
     * so its parts 1 and 4 fail; 2 and 5 are not sent. */
    int owners[6] = {0, 2, -1, 0, 2, -1};
    for (uint32_t i = 0; i < 6; i++)
        T.parts[i] = (struct tpart){.owner = owners[i]};
    T.parts[2].err = 3; /* routing's error stays */
    T.work_fail_from = 1;
    struct rv_kreq req;
    tparts_send(&req, 6);
    cr_assert_eq(T.work_new_calls, 2, "one work per owner shard");
    cr_assert_eq(T.runs, 1);
    struct twork *w = T.ran[0];
    cr_assert_eq(w->w.shard, 0);
    cr_assert_eq(w->count, 2);
    cr_assert_eq(w->parts[0], &T.parts[0]);
    cr_assert_eq(w->parts[1], &T.parts[3]);
    cr_assert_eq(T.parts[0].err, 0);
    cr_assert_eq(T.parts[3].err, 0);
    cr_assert_eq(T.parts[1].err, KERR_UNKNOWN_SERVER_ERROR);
    cr_assert_eq(T.parts[4].err, KERR_UNKNOWN_SERVER_ERROR);
    cr_assert_eq(T.parts[2].err, 3);
    cr_assert_eq(T.parts[5].err, 0);
    cr_assert_null(T.parts[5].w);
    /* The work sent has not come back: the request waits for it. */
    cr_assert_eq(req.works_pending, 1);
    cr_assert_eq(T.done_calls, 0);
}

Test(kapi, send_parts_with_no_work_made_is_done_at_once)
{
    for (uint32_t i = 0; i < 4; i++)
        T.parts[i] = (struct tpart){.owner = (int)(i % 3)};
    T.work_fail_from = 0;
    struct rv_kreq req;
    tparts_send(&req, 4);
    cr_assert_eq(T.work_new_calls, 3);
    cr_assert_eq(T.runs, 0);
    cr_assert_eq(T.done_calls, 1);
    for (uint32_t i = 0; i < 4; i++)
        cr_assert_eq(T.parts[i].err, KERR_UNKNOWN_SERVER_ERROR);
}
