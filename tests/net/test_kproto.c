/*
 * tests/net/test_kproto.c - the Kafka protocol codec: primitives and their bounds,
 * headers, the API table, round trips of every message in every version, golden
 * frames as librdkafka sends them, unknown tagged fields, and truncated or mutated
 * frames fed to every decoder.
 *
 * Round trips and the fuzz loop walk the generated descriptors (rv_kp_*_desc): a
 * message is filled with random values in the fields its version has (defaults
 * elsewhere), encoded, decoded and compared field by field. The PRNG seed is fixed
 * and printed on failure. Test data (tests/data/kafka/) is read relative to the
 * source root, which meson makes the working directory.
 */
#include <criterion/criterion.h>

#include <stdalign.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/kproto.h"
#include "net/kproto_gen.h"

TestSuite(kproto);

/* ------------------------------------------------------------------ helpers */

static uint64_t rng_state;

static void rng_seed(uint64_t seed)
{
    rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
}

static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

/* A number in [0, n). */
static uint32_t rnd(uint32_t n)
{
    return (uint32_t)(rng_next() % n);
}

/* Big buffers, static so that Criterion's per-test fork needs no allocation. */
static uint8_t arena_buf[4 << 20];
static uint8_t decode_arena_buf[4 << 20];
static uint8_t wire_buf[1 << 20];
static uint8_t wire2_buf[1 << 20];

static void *take(struct rv_kproto_arena *a, size_t size, size_t align)
{
    void *p;
    cr_assert_eq(rv_kproto_arena_alloc(a, size, align, &p), 0, "test arena exhausted");
    return p;
}

/* Read a file of tests/data/kafka into a malloc'd buffer of exactly its size. */
static uint8_t *read_data(const char *name, size_t *out_len)
{
    char path[256];
    snprintf(path, sizeof(path), "tests/data/kafka/%s", name);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s (run from the source root)", path);
    uint8_t tmp[4096];
    size_t n = fread(tmp, 1, sizeof(tmp), f);
    fclose(f);
    uint8_t *p = malloc(n);
    cr_assert_not_null(p);
    memcpy(p, tmp, n);
    *out_len = n;
    return p;
}

static void assert_bytes(const uint8_t *got, size_t got_len, const uint8_t *want, size_t want_len,
                         const char *what)
{
    cr_assert_eq(got_len, want_len, "%s: %zu bytes, want %zu", what, got_len, want_len);
    for (size_t i = 0; i < want_len; i++) {
        cr_assert_eq(got[i], want[i], "%s: byte %zu is %02x, want %02x", what, i, got[i], want[i]);
    }
}

static bool str_is(struct rv_kp_str s, const char *want)
{
    return rv_kp_str_eq_cstr(s, want);
}

/* --------------------------------------------------------------- primitives */

Test(kproto, fixed_width_values_are_big_endian_and_round_trip)
{
    uint8_t buf[64];
    struct rv_kp_writer w;
    rv_kp_writer_init(&w, buf, sizeof(buf));
    struct rv_kp_uuid u;
    for (int i = 0; i < 16; i++) {
        u.bytes[i] = (uint8_t)(0xA0 + i);
    }
    cr_assert_eq(rv_kp_write_i8(&w, -2), 0);
    cr_assert_eq(rv_kp_write_i16(&w, -2), 0);
    cr_assert_eq(rv_kp_write_u16(&w, 0xBEEF), 0);
    cr_assert_eq(rv_kp_write_i32(&w, 0x01020304), 0);
    cr_assert_eq(rv_kp_write_u32(&w, 0xFFFFFFFEu), 0);
    cr_assert_eq(rv_kp_write_i64(&w, -3), 0);
    cr_assert_eq(rv_kp_write_f64(&w, 1.5), 0);
    cr_assert_eq(rv_kp_write_bool(&w, true), 0);
    cr_assert_eq(rv_kp_write_uuid(&w, &u), 0);
    const uint8_t want[] = {0xFE, 0xFF, 0xFE, 0xBE, 0xEF, 0x01, 0x02, 0x03, 0x04, 0xFF,
                            0xFF, 0xFF, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                            0xFD, 0x3F, 0xF8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01};
    cr_assert_eq(w.pos, sizeof(want) + 16);
    assert_bytes(buf, sizeof(want), want, sizeof(want), "fixed");

    struct rv_kp_reader r;
    rv_kp_reader_init(&r, buf, w.pos);
    int8_t i8;
    int16_t i16;
    uint16_t u16;
    int32_t i32;
    uint32_t u32;
    int64_t i64;
    double f64;
    bool b;
    struct rv_kp_uuid u2;
    cr_assert(rv_kp_read_i8(&r, &i8) == 0 && i8 == -2);
    cr_assert(rv_kp_read_i16(&r, &i16) == 0 && i16 == -2);
    cr_assert(rv_kp_read_u16(&r, &u16) == 0 && u16 == 0xBEEF);
    cr_assert(rv_kp_read_i32(&r, &i32) == 0 && i32 == 0x01020304);
    cr_assert(rv_kp_read_u32(&r, &u32) == 0 && u32 == 0xFFFFFFFEu);
    cr_assert(rv_kp_read_i64(&r, &i64) == 0 && i64 == -3);
    cr_assert(rv_kp_read_f64(&r, &f64) == 0 && f64 == 1.5);
    cr_assert(rv_kp_read_bool(&r, &b) == 0 && b);
    cr_assert(rv_kp_read_uuid(&r, &u2) == 0 && memcmp(&u, &u2, 16) == 0);
    cr_assert_eq(rv_kp_reader_left(&r), 0);
    cr_assert_eq(rv_kp_read_i8(&r, &i8), -EBADMSG);
}

Test(kproto, truncated_fixed_width_values_are_refused_and_consume_nothing)
{
    const uint8_t buf[7] = {1, 2, 3, 4, 5, 6, 7};
    for (size_t len = 0; len < 8; len++) {
        struct rv_kp_reader r;
        rv_kp_reader_init(&r, buf, len);
        int64_t i64;
        int32_t i32;
        struct rv_kp_uuid u;
        cr_assert_eq(rv_kp_read_i64(&r, &i64), -EBADMSG);
        cr_assert_eq(rv_kp_read_uuid(&r, &u), -EBADMSG);
        cr_assert_eq(rv_kp_read_i32(&r, &i32), len >= 4 ? 0 : -EBADMSG);
        cr_assert_eq(r.pos, len >= 4 ? 4u : 0u);
    }
    /* A bool reads any non-zero byte as true. */
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, (const uint8_t[]){0x02}, 1);
    bool b = false;
    cr_assert(rv_kp_read_bool(&r, &b) == 0 && b);
}

Test(kproto, varints_round_trip_and_reject_overlong_input)
{
    uint8_t buf[16];
    struct rv_kp_writer w;
    rv_kp_writer_init(&w, buf, sizeof(buf));
    cr_assert_eq(rv_kp_write_uvarint(&w, 300), 0);
    cr_assert_eq(rv_kp_write_varint(&w, -1), 0);
    cr_assert_eq(rv_kp_write_varlong(&w, INT64_MIN), 0);
    assert_bytes(buf, 3, (const uint8_t[]){0xAC, 0x02, 0x01}, 3, "varints");
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, buf, w.pos);
    uint32_t u;
    int32_t i;
    int64_t l;
    cr_assert(rv_kp_read_uvarint(&r, &u) == 0 && u == 300);
    cr_assert(rv_kp_read_varint(&r, &i) == 0 && i == -1);
    cr_assert(rv_kp_read_varlong(&r, &l) == 0 && l == INT64_MIN);
    cr_assert_eq(rv_kp_reader_left(&r), 0);
    /* Truncated, and longer than 32 bits. */
    rv_kp_reader_init(&r, (const uint8_t[]){0x80, 0x80}, 2);
    cr_assert_eq(rv_kp_read_uvarint(&r, &u), -EBADMSG);
    rv_kp_reader_init(&r, (const uint8_t[]){0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, 5);
    cr_assert_eq(rv_kp_read_uvarint(&r, &u), -EBADMSG);
    cr_assert_eq(r.pos, 0);
    cr_assert_eq(rv_kp_uvarint_size(0), 1);
    cr_assert_eq(rv_kp_uvarint_size(UINT32_MAX), 5);
}

Test(kproto, strings_in_classic_and_compact_forms)
{
    uint8_t buf[64];
    struct rv_kp_writer w;
    rv_kp_writer_init(&w, buf, sizeof(buf));
    struct rv_kp_str abc = rv_kp_str_from("abc");
    struct rv_kp_str null = {NULL, -1};
    struct rv_kp_str empty = rv_kp_str_from("");
    cr_assert_eq(rv_kp_write_str(&w, false, false, abc), 0);
    cr_assert_eq(rv_kp_write_str(&w, false, true, null), 0);
    cr_assert_eq(rv_kp_write_str(&w, true, false, abc), 0);
    cr_assert_eq(rv_kp_write_str(&w, true, true, null), 0);
    cr_assert_eq(rv_kp_write_str(&w, true, false, empty), 0);
    const uint8_t want[] = {0x00, 0x03, 'a', 'b', 'c', 0xFF, 0xFF, 0x04, 'a', 'b', 'c', 0x00, 0x01};
    assert_bytes(buf, w.pos, want, sizeof(want), "strings");
    cr_assert_eq(rv_kp_str_size(false, abc) + rv_kp_str_size(false, null) +
                     rv_kp_str_size(true, abc) + rv_kp_str_size(true, null) +
                     rv_kp_str_size(true, empty),
                 sizeof(want));

    struct rv_kp_reader r;
    rv_kp_reader_init(&r, buf, w.pos);
    struct rv_kp_str s;
    cr_assert(rv_kp_read_str(&r, false, false, &s) == 0 && str_is(s, "abc"));
    cr_assert(s.ptr == (const char *)buf + 2, "zero-copy: the slice points into the input");
    cr_assert(rv_kp_read_str(&r, false, true, &s) == 0 && s.len == -1);
    cr_assert(rv_kp_read_str(&r, true, false, &s) == 0 && str_is(s, "abc"));
    cr_assert(rv_kp_read_str(&r, true, true, &s) == 0 && s.len == -1);
    cr_assert(rv_kp_read_str(&r, true, false, &s) == 0 && s.len == 0);
    cr_assert_eq(rv_kp_reader_left(&r), 0);
}

Test(kproto, bad_lengths_are_refused)
{
    struct rv_kp_reader r;
    struct rv_kp_str s;
    struct rv_kp_bytes b;
    int32_t count;
    void *items;
    /* A null where the schema allows none is a protocol error, not a crash. */
    rv_kp_reader_init(&r, (const uint8_t[]){0xFF, 0xFF}, 2);
    cr_assert_eq(rv_kp_read_str(&r, false, false, &s), -EPROTO);
    rv_kp_reader_init(&r, (const uint8_t[]){0x00}, 1);
    cr_assert_eq(rv_kp_read_str(&r, true, false, &s), -EPROTO);
    /* Negative lengths other than -1. */
    rv_kp_reader_init(&r, (const uint8_t[]){0xFF, 0xFE}, 2);
    cr_assert_eq(rv_kp_read_str(&r, false, true, &s), -EBADMSG);
    rv_kp_reader_init(&r, (const uint8_t[]){0x80, 0x00, 0x00, 0x00}, 4);
    cr_assert_eq(rv_kp_read_bytes(&r, false, true, &b), -EBADMSG);
    rv_kp_reader_init(&r, (const uint8_t[]){0xFF, 0xFF, 0xFF, 0xFB}, 4);
    cr_assert_eq(rv_kp_read_array(&r, false, true, NULL, 4, 4, &count, &items), -EBADMSG);
    /* Lengths past the end of the input. */
    rv_kp_reader_init(&r, (const uint8_t[]){0x00, 0x05, 'a', 'b'}, 4);
    cr_assert_eq(rv_kp_read_str(&r, false, false, &s), -EBADMSG);
    rv_kp_reader_init(&r, (const uint8_t[]){0x06, 'a', 'b'}, 3);
    cr_assert_eq(rv_kp_read_str(&r, true, false, &s), -EBADMSG);
    rv_kp_reader_init(&r, (const uint8_t[]){0x00, 0x00, 0x00, 0x09, 1, 2}, 6);
    cr_assert_eq(rv_kp_read_bytes(&r, false, false, &b), -EBADMSG);
    /* Compact lengths: 0x80 0x01 is 128, so 127 bytes; a string over 32767 bytes; a
     * length past INT32_MAX. */
    rv_kp_reader_init(&r, (const uint8_t[]){0x80, 0x01, 'x'}, 3);
    cr_assert_eq(rv_kp_read_bytes(&r, true, false, &b), -EBADMSG);
    rv_kp_reader_init(&r, (const uint8_t[]){0x81, 0x80, 0x02}, 3);
    cr_assert_eq(rv_kp_read_str(&r, true, false, &s), -EBADMSG);
    rv_kp_reader_init(&r, (const uint8_t[]){0xFF, 0xFF, 0xFF, 0xFF, 0x0F}, 5);
    cr_assert_eq(rv_kp_read_bytes(&r, true, false, &b), -EBADMSG);
    /* An array count larger than the bytes left. */
    rv_kp_reader_init(&r, (const uint8_t[]){0x00, 0x00, 0x00, 0x03, 0, 0}, 6);
    cr_assert_eq(rv_kp_read_array(&r, false, false, NULL, 4, 4, &count, &items), -EBADMSG);
    rv_kp_reader_init(&r, (const uint8_t[]){0xFF, 0xFF, 0xFF, 0xFF, 0x07}, 5);
    cr_assert_eq(rv_kp_read_array(&r, true, false, NULL, 4, 4, &count, &items), -EBADMSG);
}

Test(kproto, arrays_take_items_from_the_arena)
{
    uint8_t mem[64];
    struct rv_kproto_arena a;
    rv_kproto_arena_init(&a, mem, sizeof(mem));
    /* Compact array of three int32, then a classic null array, then an empty one. */
    const uint8_t in[] = {0x04, 0,    0,    0,    1,    0,    0,    0,    2,
                          0xFF, 0xFF, 0xFF, 0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0x01};
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, in, sizeof(in));
    struct rv_kp_arr_i32 arr;
    cr_assert_eq(rv_kp_read_arr_i32(&r, true, false, &a, &arr), 0);
    cr_assert_eq(arr.count, 3);
    cr_assert(arr.items[0] == 1 && arr.items[1] == 2 && arr.items[2] == -3);
    cr_assert_eq((uintptr_t)arr.items % alignof(int32_t), 0);
    cr_assert_eq(rv_kp_read_arr_i32(&r, false, true, &a, &arr), 0);
    cr_assert(arr.count == -1 && arr.items == NULL);
    cr_assert_eq(rv_kp_read_arr_i32(&r, true, false, &a, &arr), 0);
    cr_assert(arr.count == 0 && arr.items == NULL);

    uint8_t out[32];
    struct rv_kp_writer w;
    rv_kp_writer_init(&w, out, sizeof(out));
    int32_t vals[] = {1, 2, -3};
    struct rv_kp_arr_i32 three = {3, vals};
    struct rv_kp_arr_i32 null = {-1, NULL};
    struct rv_kp_arr_i32 empty = {0, NULL};
    cr_assert_eq(rv_kp_write_arr_i32(&w, true, false, &three), 0);
    cr_assert_eq(rv_kp_write_arr_i32(&w, false, true, &null), 0);
    cr_assert_eq(rv_kp_write_arr_i32(&w, true, false, &empty), 0);
    assert_bytes(out, w.pos, in, sizeof(in), "arrays");
    cr_assert_eq(rv_kp_arr_i32_size(true, &three), 13);

    /* An arena too small for the items. */
    struct rv_kproto_arena tiny;
    rv_kproto_arena_init(&tiny, mem, 8);
    rv_kp_reader_init(&r, in, sizeof(in));
    cr_assert_eq(rv_kp_read_arr_i32(&r, true, false, &tiny, &arr), -ENOBUFS);
}

Test(kproto, arena_aligns_and_refuses_when_exhausted)
{
    alignas(16) uint8_t mem[40];
    struct rv_kproto_arena a;
    rv_kproto_arena_init(&a, mem, sizeof(mem));
    void *p;
    cr_assert_eq(rv_kproto_arena_alloc(&a, 1, 1, &p), 0);
    cr_assert_eq(rv_kproto_arena_alloc(&a, 8, 8, &p), 0);
    cr_assert_eq((uintptr_t)p % 8, 0);
    cr_assert_eq(a.used_bytes, 16);
    cr_assert_eq(rv_kproto_arena_alloc(&a, 25, 1, &p), -ENOBUFS);
    cr_assert_eq(a.used_bytes, 16);
    cr_assert_eq(rv_kproto_arena_alloc(&a, 24, 1, &p), 0);
    cr_assert_eq(rv_kproto_arena_alloc(&a, 0, 1, &p), 0);
    cr_assert_eq(rv_kproto_arena_alloc(&a, 1, 1, &p), -ENOBUFS);
    rv_kproto_arena_reset(&a);
    cr_assert_eq(rv_kproto_arena_alloc(&a, 40, 1, &p), 0);
    cr_assert_eq(rv_kproto_arena_alloc(&a, SIZE_MAX, 1, &p), -ENOBUFS);
    /* No arena at all: an empty one. */
    cr_assert_eq(rv_kproto_arena_alloc(NULL, 1, 1, &p), -ENOBUFS);
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, (const uint8_t[]){0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, 8);
    struct rv_kp_arr_i32 arr;
    cr_assert_eq(rv_kp_read_arr_i32(&r, true, false, NULL, &arr), -ENOBUFS);
    /* Empty input from a NULL buffer. */
    rv_kp_reader_init(&r, NULL, 0);
    uint32_t u;
    cr_assert_eq(rv_kp_read_uvarint(&r, &u), -EBADMSG);
    cr_assert_eq(rv_kp_skip(&r, 0), 0);
}

Test(kproto, writer_refuses_what_does_not_fit_or_is_invalid)
{
    uint8_t buf[4];
    struct rv_kp_writer w;
    rv_kp_writer_init(&w, buf, sizeof(buf));
    cr_assert_eq(rv_kp_write_i64(&w, 1), -ENOBUFS);
    cr_assert_eq(w.pos, 0);
    cr_assert_eq(rv_kp_write_str(&w, false, false, rv_kp_str_from("abc")), -ENOBUFS);
    cr_assert_eq(w.pos, 0, "a string is written whole or not at all");
    cr_assert_eq(rv_kp_write_str(&w, false, false, (struct rv_kp_str){NULL, -1}), -EINVAL);
    cr_assert_eq(rv_kp_write_bytes(&w, true, false, (struct rv_kp_bytes){NULL, -1}), -EINVAL);
    cr_assert_eq(rv_kp_write_array_len(&w, true, false, -1), -EINVAL);
    static char big[RV_KP_STRING_LEN_MAX + 1];
    struct rv_kp_str too_long = {big, (int32_t)sizeof(big)};
    cr_assert_eq(rv_kp_write_str(&w, true, false, too_long), -EINVAL);
    cr_assert_eq(rv_kp_write_i32(&w, 7), 0);
    cr_assert_eq(rv_kp_write_i8(&w, 7), -ENOBUFS);
    cr_assert_eq(w.pos, 4);
}

Test(kproto, tagged_field_sections_are_read_and_skipped)
{
    /* Two fields: tag 7 with 3 bytes, tag 300 with none; then a trailing byte. */
    const uint8_t in[] = {0x02, 0x07, 0x03, 'x', 'y', 'z', 0xAC, 0x02, 0x00, 0x5A};
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, in, sizeof(in));
    cr_assert_eq(rv_kp_skip_tags(&r), 0);
    cr_assert_eq(r.pos, sizeof(in) - 1);

    rv_kp_reader_init(&r, in, sizeof(in));
    uint32_t count;
    uint32_t tag;
    struct rv_kp_reader v;
    cr_assert(rv_kp_read_tag_count(&r, &count) == 0 && count == 2);
    cr_assert(rv_kp_read_tag(&r, &tag, &v) == 0 && tag == 7 && v.len == 3 && v.buf == in + 3);
    cr_assert(rv_kp_read_tag(&r, &tag, &v) == 0 && tag == 300 && v.len == 0);

    /* A value running past the end; a count that cannot fit. */
    rv_kp_reader_init(&r, (const uint8_t[]){0x01, 0x00, 0x05, 'a'}, 4);
    cr_assert_eq(rv_kp_skip_tags(&r), -EBADMSG);
    rv_kp_reader_init(&r, (const uint8_t[]){0x7F, 0x00, 0x00}, 3);
    cr_assert_eq(rv_kp_skip_tags(&r), -EBADMSG);

    uint8_t out[8];
    struct rv_kp_writer w;
    rv_kp_writer_init(&w, out, sizeof(out));
    cr_assert_eq(rv_kp_write_tag(&w, 300, 3), 0);
    assert_bytes(out, w.pos, (const uint8_t[]){0xAC, 0x02, 0x03}, 3, "tag");
    cr_assert_eq(rv_kp_tag_size(300, 3), 6);
}

/* ------------------------------------------------------------ headers, APIs */

Test(kproto, request_header_v1_parse)
{
    /* Metadata v4, correlation id 2, client id "rdkafka", as librdkafka sends it. */
    size_t len;
    uint8_t *frame = read_data("Metadata-v4.bin", &len);
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, frame, len);
    struct rv_kp_request_header h;
    cr_assert_eq(rv_kp_request_header_parse(&r, &h), 0);
    cr_assert_eq(h.request_api_key, RV_KP_API_METADATA);
    cr_assert_eq(h.request_api_version, 4);
    cr_assert_eq(h.correlation_id, 2);
    cr_assert(str_is(h.client_id, "rdkafka"));
    cr_assert_eq(r.pos, 2 + 2 + 4 + 2 + 7);

    uint8_t out[64];
    struct rv_kp_writer w;
    rv_kp_writer_init(&w, out, sizeof(out));
    cr_assert_eq(rv_kp_request_header_build(&w, &h), 0);
    assert_bytes(out, w.pos, frame, r.pos, "header v1");
    free(frame);
}

Test(kproto, request_header_v2_parse_skips_tags)
{
    /* ApiVersions v3 (flexible): header v2, the client id still a classic string;
     * a null client id and two unknown header tags. */
    const uint8_t in[] = {0x00, 0x12, 0x00, 0x03, 0x00, 0x00, 0x01, 0x00, 0xFF,
                          0xFF, 0x02, 0x05, 0x01, 0xAA, 0x06, 0x00, 0x42};
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, in, sizeof(in));
    struct rv_kp_request_header h;
    cr_assert_eq(rv_kp_request_header_parse(&r, &h), 0);
    cr_assert_eq(h.request_api_key, 18);
    cr_assert_eq(h.request_api_version, 3);
    cr_assert_eq(h.correlation_id, 256);
    cr_assert_eq(h.client_id.len, -1);
    cr_assert_eq(r.pos, sizeof(in) - 1, "the body starts after the tags");
}

Test(kproto, request_header_v0_for_controlled_shutdown_v0)
{
    const uint8_t in[] = {0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x01};
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, in, sizeof(in));
    struct rv_kp_request_header h;
    cr_assert_eq(rv_kp_request_header_parse(&r, &h), 0);
    cr_assert_eq(h.correlation_id, 9);
    cr_assert_eq(r.pos, 8, "header v0 has no client id");
    cr_assert_eq(h.client_id.len, 0);
}

Test(kproto, request_header_parse_refuses_bad_input)
{
    struct rv_kp_request_header h;
    struct rv_kp_reader r;
    /* Unknown API key: refused, but what was there is reported. */
    const uint8_t unknown[] = {0x27, 0x0F, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05};
    rv_kp_reader_init(&r, unknown, sizeof(unknown));
    cr_assert_eq(rv_kp_request_header_parse(&r, &h), -EPROTO);
    cr_assert(h.request_api_key == 9999 && h.request_api_version == 1 && h.correlation_id == 5);
    /* Every truncation of a valid v2 header. */
    const uint8_t v2[] = {0x00, 0x03, 0x00, 0x0C, 0x00, 0x00, 0x00, 0x01,
                          0x00, 0x02, 'r',  'k',  0x01, 0x00, 0x00};
    for (size_t len = 0; len < sizeof(v2) - 1; len++) {
        uint8_t *p = malloc(len + 1);
        memcpy(p, v2, len);
        rv_kp_reader_init(&r, p, len);
        cr_assert_eq(rv_kp_request_header_parse(&r, &h), -EBADMSG, "len %zu", len);
        cr_assert_eq(r.pos, 0);
        free(p);
    }
    /* A negative client id length other than -1. */
    const uint8_t neg[] = {0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01, 0xFF, 0x00};
    rv_kp_reader_init(&r, neg, sizeof(neg));
    cr_assert_eq(rv_kp_request_header_parse(&r, &h), -EBADMSG);
}

Test(kproto, response_headers_follow_the_version_rules)
{
    uint8_t out[16];
    struct rv_kp_writer w;
    rv_kp_writer_init(&w, out, sizeof(out));
    /* ApiVersions v3 is flexible, but its response header is always v0. */
    cr_assert_eq(rv_kp_response_header_build(&w, RV_KP_API_API_VERSIONS, 3, 7), 0);
    assert_bytes(out, w.pos, (const uint8_t[]){0, 0, 0, 7}, 4, "ApiVersions v3");
    rv_kp_writer_init(&w, out, sizeof(out));
    cr_assert_eq(rv_kp_response_header_build(&w, RV_KP_API_METADATA, 12, 7), 0);
    assert_bytes(out, w.pos, (const uint8_t[]){0, 0, 0, 7, 0}, 5, "Metadata v12");
    rv_kp_writer_init(&w, out, sizeof(out));
    cr_assert_eq(rv_kp_response_header_build(&w, RV_KP_API_METADATA, 8, 7), 0);
    cr_assert_eq(w.pos, 4);
    cr_assert_eq(rv_kp_response_header_build(&w, 9999, 0, 7), -EINVAL);

    const uint8_t in[] = {0, 0, 1, 0, 0x01, 0x03, 0x01, 0xEE, 0x99};
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, in, sizeof(in));
    int32_t corr;
    cr_assert_eq(rv_kp_response_header_parse(&r, RV_KP_API_FETCH, 13, &corr), 0);
    cr_assert_eq(corr, 256);
    cr_assert_eq(r.pos, sizeof(in) - 1);
    rv_kp_reader_init(&r, in, 3);
    cr_assert_eq(rv_kp_response_header_parse(&r, RV_KP_API_FETCH, 1, &corr), -EBADMSG);
    cr_assert_eq(rv_kp_response_header_parse(&r, -5, 1, &corr), -EPROTO);
}

Test(kproto, header_versions_per_api)
{
    cr_assert_eq(rv_kp_request_header_version(RV_KP_API_PRODUCE, 8), 1);
    cr_assert_eq(rv_kp_request_header_version(RV_KP_API_PRODUCE, 9), 2);
    cr_assert_eq(rv_kp_request_header_version(RV_KP_API_CONTROLLED_SHUTDOWN, 0), 0);
    cr_assert_eq(rv_kp_request_header_version(RV_KP_API_CONTROLLED_SHUTDOWN, 1), 1);
    cr_assert_eq(rv_kp_request_header_version(RV_KP_API_CONTROLLED_SHUTDOWN, 3), 2);
    cr_assert_eq(rv_kp_request_header_version(RV_KP_API_SASL_HANDSHAKE, 1), 1);
    cr_assert_eq(rv_kp_request_header_version(RV_KP_API_API_VERSIONS, 2), 1);
    cr_assert_eq(rv_kp_request_header_version(RV_KP_API_API_VERSIONS, 3), 2);
    cr_assert_eq(rv_kp_request_header_version(RV_KP_API_API_VERSIONS, 99), 2,
                 "newer than known: still flexible, as Kafka reads it");
    cr_assert_eq(rv_kp_request_header_version(9999, 0), -EINVAL);
    cr_assert_eq(rv_kp_request_header_version(RV_KP_API_PRODUCE, -1), -EINVAL);
    cr_assert_eq(rv_kp_response_header_version(RV_KP_API_API_VERSIONS, 3), 0);
    cr_assert_eq(rv_kp_response_header_version(RV_KP_API_API_VERSIONS, 4), 0);
    cr_assert_eq(rv_kp_response_header_version(RV_KP_API_METADATA, 8), 0);
    cr_assert_eq(rv_kp_response_header_version(RV_KP_API_METADATA, 9), 1);
    cr_assert_eq(rv_kp_response_header_version(RV_KP_API_SASL_HANDSHAKE, 1), 0);
    cr_assert_eq(rv_kp_response_header_version(9999, 0), -EINVAL);
    /* Every API: v2/v1 exactly in its flexible versions. */
    for (size_t i = 0; i < rv_kp_api_count; i++) {
        const struct rv_kp_api *api = &rv_kp_apis[i];
        for (int16_t v = api->version_min; v <= api->version_max; v++) {
            bool is_flex = api->flexible_min >= 0 && v >= api->flexible_min;
            int req = rv_kp_request_header_version(api->api_key, v);
            int resp = rv_kp_response_header_version(api->api_key, v);
            if (api->api_key == RV_KP_API_CONTROLLED_SHUTDOWN && v == 0) {
                cr_assert_eq(req, 0);
            } else {
                cr_assert_eq(req, is_flex ? 2 : 1, "%s v%d", api->name, v);
            }
            if (api->api_key == RV_KP_API_API_VERSIONS) {
                cr_assert_eq(resp, 0);
            } else {
                cr_assert_eq(resp, is_flex ? 1 : 0, "%s v%d", api->name, v);
            }
        }
    }
}

Test(kproto, api_table_is_sorted_and_found)
{
    cr_assert_eq(rv_kp_api_count, RV_KP_API_COUNT);
    cr_assert_geq(rv_kp_api_count, 80);
    for (size_t i = 0; i < rv_kp_api_count; i++) {
        const struct rv_kp_api *api = &rv_kp_apis[i];
        if (i > 0) {
            cr_assert_gt(api->api_key, rv_kp_apis[i - 1].api_key);
        }
        cr_assert_eq(rv_kp_api_find(api->api_key), api);
        cr_assert(api->version_min <= api->version_max);
        cr_assert_not_null(api->request);
        cr_assert_not_null(api->response);
        cr_assert_eq(api->request->versions.min, api->version_min);
        cr_assert_eq(api->request->versions.max, api->version_max);
        cr_assert(rv_kp_api_has_version(api, api->version_max));
        cr_assert(!rv_kp_api_has_version(api, (int16_t)(api->version_max + 1)));
    }
    const struct rv_kp_api *p = rv_kp_api_find(RV_KP_API_PRODUCE);
    cr_assert(p != NULL && strcmp(p->name, "Produce") == 0);
    cr_assert(p->version_min == 0 && p->version_max == 11 && p->flexible_min == 9);
    const struct rv_kp_api *s = rv_kp_api_find(RV_KP_API_SASL_HANDSHAKE);
    cr_assert(s != NULL && s->flexible_min == -1);
    cr_assert(!p->is_latest_unstable);
    cr_assert(rv_kp_api_find(RV_KP_API_SHARE_FETCH)->is_latest_unstable);
    cr_assert_null(rv_kp_api_find(-1));
    cr_assert_null(rv_kp_api_find(RV_KP_API_KEY_MAX + 1));
    cr_assert_null(rv_kp_api_find(INT16_MAX));
}

/* ------------------------------------------------ random messages by descriptor */

struct fill {
    struct rv_kproto_arena *a;
    int16_t version;
};

static size_t type_size(uint8_t type)
{
    switch (type) {
    case RV_KP_TYPE_BOOL: return sizeof(bool);
    case RV_KP_TYPE_INT8: return 1;
    case RV_KP_TYPE_INT16:
    case RV_KP_TYPE_UINT16: return 2;
    case RV_KP_TYPE_INT32:
    case RV_KP_TYPE_UINT32: return 4;
    case RV_KP_TYPE_INT64:
    case RV_KP_TYPE_FLOAT64: return 8;
    case RV_KP_TYPE_UUID: return sizeof(struct rv_kp_uuid);
    case RV_KP_TYPE_STRING: return sizeof(struct rv_kp_str);
    default: cr_assert_fail("no element size for type %d", type); return 0;
    }
}

static struct rv_kp_str random_str(struct fill *fc, bool is_nullable)
{
    if (is_nullable && rnd(4) == 0) {
        return (struct rv_kp_str){NULL, -1};
    }
    uint32_t n = rnd(12);
    char *p = take(fc->a, n + 1, 1);
    for (uint32_t i = 0; i < n; i++) {
        p[i] = (char)('a' + rnd(26));
    }
    return (struct rv_kp_str){p, (int32_t)n};
}

static void fill_prim(struct fill *fc, uint8_t type, void *p)
{
    uint64_t x = rng_next();
    /* Small values half the time, so that defaults and short varints occur too. */
    if (rnd(2) == 0) {
        x %= 3;
    }
    switch (type) {
    case RV_KP_TYPE_BOOL: *(bool *)p = x & 1; break;
    case RV_KP_TYPE_INT8: *(int8_t *)p = (int8_t)x; break;
    case RV_KP_TYPE_INT16: *(int16_t *)p = (int16_t)x; break;
    case RV_KP_TYPE_UINT16: *(uint16_t *)p = (uint16_t)x; break;
    case RV_KP_TYPE_INT32: *(int32_t *)p = (int32_t)x; break;
    case RV_KP_TYPE_UINT32: *(uint32_t *)p = (uint32_t)x; break;
    case RV_KP_TYPE_INT64: *(int64_t *)p = (int64_t)x; break;
    case RV_KP_TYPE_FLOAT64: *(double *)p = (double)(int32_t)x / 8.0; break;
    case RV_KP_TYPE_UUID:
        for (int i = 0; i < RV_KP_UUID_BYTES; i++) {
            ((struct rv_kp_uuid *)p)->bytes[i] = x < 3 ? 0 : (uint8_t)rng_next();
        }
        break;
    case RV_KP_TYPE_STRING: *(struct rv_kp_str *)p = random_str(fc, false); break;
    default: cr_assert_fail("not a primitive: %d", type);
    }
}

static void fill_struct(struct fill *fc, const struct rv_kp_struct_desc *d, void *m, int depth);

static void fill_array(struct fill *fc, const struct rv_kp_field_desc *fd, uint8_t *p,
                       bool is_nullable, int depth)
{
    int32_t count = is_nullable && rnd(4) == 0 ? -1 : (int32_t)rnd(depth < 3 ? 4 : 2);
    bool is_struct = fd->elem_type == RV_KP_TYPE_STRUCT;
    size_t size = is_struct ? fd->sub->size : type_size(fd->elem_type);
    size_t align = is_struct ? fd->sub->align : 8;
    uint8_t *items = count > 0 ? take(fc->a, size * (size_t)count, align) : NULL;
    for (int32_t i = 0; i < count; i++) {
        if (is_struct) {
            fill_struct(fc, fd->sub, items + size * (size_t)i, depth + 1);
        } else {
            fill_prim(fc, fd->elem_type, items + size * (size_t)i);
        }
    }
    memcpy(p, &count, sizeof(count));
    memcpy(p + offsetof(struct rv_kp_arr_i32, items), &items, sizeof(items));
}

static void fill_field(struct fill *fc, const struct rv_kp_field_desc *fd, uint8_t *p, int depth)
{
    bool is_nullable = rv_kp_vrange_has(fd->nullable_versions, fc->version);
    switch (fd->type) {
    case RV_KP_TYPE_STRING: *(struct rv_kp_str *)p = random_str(fc, is_nullable); break;
    case RV_KP_TYPE_BYTES:
    case RV_KP_TYPE_RECORDS: {
        struct rv_kp_str s = random_str(fc, is_nullable);
        *(struct rv_kp_bytes *)p = (struct rv_kp_bytes){(const uint8_t *)s.ptr, s.len};
        break;
    }
    case RV_KP_TYPE_STRUCT:
        if (!fd->is_ptr) {
            fill_struct(fc, fd->sub, p, depth + 1);
        } else if (is_nullable && rnd(3) == 0) {
            *(void **)p = NULL;
        } else {
            void *m = take(fc->a, fd->sub->size, fd->sub->align);
            fill_struct(fc, fd->sub, m, depth + 1);
            *(void **)p = m;
        }
        break;
    case RV_KP_TYPE_ARRAY: fill_array(fc, fd, p, is_nullable, depth); break;
    default: fill_prim(fc, fd->type, p);
    }
}

/* Defaults everywhere, random values in the fields the version has. */
static void fill_struct(struct fill *fc, const struct rv_kp_struct_desc *d, void *m, int depth)
{
    d->init(m);
    for (uint32_t i = 0; i < d->field_count; i++) {
        const struct rv_kp_field_desc *fd = &d->fields[i];
        if (rv_kp_vrange_has(fd->versions, fc->version)) {
            fill_field(fc, fd, (uint8_t *)m + fd->offset, depth);
        }
    }
}

static void cmp_struct(const struct rv_kp_struct_desc *d, const void *x, const void *y,
                       const char *what);

static void cmp_value(uint8_t type, const struct rv_kp_struct_desc *sub, const uint8_t *x,
                      const uint8_t *y, const char *what)
{
    switch (type) {
    case RV_KP_TYPE_STRING:
        cr_assert(rv_kp_str_eq(*(const struct rv_kp_str *)x, *(const struct rv_kp_str *)y),
                  "%s differs", what);
        break;
    case RV_KP_TYPE_BYTES:
    case RV_KP_TYPE_RECORDS:
        cr_assert(rv_kp_bytes_eq(*(const struct rv_kp_bytes *)x, *(const struct rv_kp_bytes *)y),
                  "%s differs", what);
        break;
    case RV_KP_TYPE_STRUCT: cmp_struct(sub, x, y, what); break;
    default: cr_assert(memcmp(x, y, type_size(type)) == 0, "%s differs", what);
    }
}

static void cmp_field(const struct rv_kp_field_desc *fd, const uint8_t *x, const uint8_t *y,
                      const char *what)
{
    if (fd->type == RV_KP_TYPE_STRUCT && fd->is_ptr) {
        const void *px = *(void *const *)x;
        const void *py = *(void *const *)y;
        cr_assert_eq(px == NULL, py == NULL, "%s: null differs", what);
        if (px != NULL) {
            cmp_struct(fd->sub, px, py, what);
        }
        return;
    }
    if (fd->type != RV_KP_TYPE_ARRAY) {
        cmp_value(fd->type, fd->sub, x, y, what);
        return;
    }
    const struct rv_kp_arr_i32 *ax = (const void *)x;
    const struct rv_kp_arr_i32 *ay = (const void *)y;
    cr_assert_eq(ax->count, ay->count, "%s: count %d vs %d", what, ax->count, ay->count);
    bool is_struct = fd->elem_type == RV_KP_TYPE_STRUCT;
    size_t size = is_struct ? fd->sub->size : type_size(fd->elem_type);
    for (int32_t i = 0; i < ax->count; i++) {
        const uint8_t *ix = (const uint8_t *)ax->items + size * (size_t)i;
        const uint8_t *iy = (const uint8_t *)ay->items + size * (size_t)i;
        cmp_value(fd->elem_type, fd->sub, ix, iy, what);
    }
}

/* Compare every field, in every version: absent ones hold their defaults. */
static void cmp_struct(const struct rv_kp_struct_desc *d, const void *x, const void *y,
                       const char *what)
{
    for (uint32_t i = 0; i < d->field_count; i++) {
        const struct rv_kp_field_desc *fd = &d->fields[i];
        char path[512];
        snprintf(path, sizeof(path), "%s.%s", what, fd->name);
        cmp_field(fd, (const uint8_t *)x + fd->offset, (const uint8_t *)y + fd->offset, path);
    }
}

/* A reference encoder, written from the protocol guide over the descriptors rather
 * than generated, so that a mistake the generated encoder and decoder share (a wrong
 * form, order or condition) still shows. It asserts where the generated one returns
 * -EINVAL: round trips only feed it valid messages. */

static void ref_put(struct rv_kp_writer *w, const void *p, size_t n)
{
    cr_assert_eq(rv_kp_write_raw(w, p, n), 0, "reference: buffer full");
}

static void ref_be(struct rv_kp_writer *w, uint64_t v, size_t n)
{
    uint8_t b[8];
    for (size_t i = 0; i < n; i++) {
        b[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    }
    ref_put(w, b, n);
}

static void ref_uvarint(struct rv_kp_writer *w, uint64_t v)
{
    while (v >= 0x80) {
        uint8_t b = (uint8_t)(v | 0x80);
        ref_put(w, &b, 1);
        v >>= 7;
    }
    uint8_t b = (uint8_t)v;
    ref_put(w, &b, 1);
}

/* A length or count: compact (varint of n + 1, 0 = null) or classic (int16/int32). */
static void ref_len(struct rv_kp_writer *w, bool is_compact, size_t classic_bytes, int32_t n)
{
    if (is_compact) {
        ref_uvarint(w, n < 0 ? 0 : (uint64_t)n + 1);
    } else {
        ref_be(w, (uint64_t)(int64_t)(n < 0 ? -1 : n), classic_bytes);
    }
}

static void ref_prim(struct rv_kp_writer *w, uint8_t type, const uint8_t *p, bool is_compact)
{
    switch (type) {
    case RV_KP_TYPE_BOOL: ref_be(w, *(const bool *)p ? 1 : 0, 1); break;
    case RV_KP_TYPE_INT8: ref_be(w, (uint8_t) * (const int8_t *)p, 1); break;
    case RV_KP_TYPE_INT16: ref_be(w, (uint16_t) * (const int16_t *)p, 2); break;
    case RV_KP_TYPE_UINT16: ref_be(w, *(const uint16_t *)p, 2); break;
    case RV_KP_TYPE_INT32: ref_be(w, (uint32_t) * (const int32_t *)p, 4); break;
    case RV_KP_TYPE_UINT32: ref_be(w, *(const uint32_t *)p, 4); break;
    case RV_KP_TYPE_INT64:
    case RV_KP_TYPE_FLOAT64: {
        uint64_t u;
        memcpy(&u, p, 8);
        ref_be(w, u, 8);
        break;
    }
    case RV_KP_TYPE_UUID: ref_put(w, p, RV_KP_UUID_BYTES); break;
    case RV_KP_TYPE_STRING: {
        const struct rv_kp_str *s = (const void *)p;
        ref_len(w, is_compact, 2, s->len);
        ref_put(w, s->ptr, s->len > 0 ? (size_t)s->len : 0);
        break;
    }
    default: cr_assert_fail("reference: type %d", type);
    }
}

static bool ref_is_default(const struct rv_kp_field_desc *fd, const uint8_t *p);

static bool ref_struct_is_default(const struct rv_kp_struct_desc *d, const void *m)
{
    for (uint32_t i = 0; i < d->field_count; i++) {
        if (!ref_is_default(&d->fields[i], (const uint8_t *)m + d->fields[i].offset)) {
            return false;
        }
    }
    return true;
}

static bool ref_is_default(const struct rv_kp_field_desc *fd, const uint8_t *p)
{
    int64_t i = 0;
    switch (fd->type) {
    case RV_KP_TYPE_BOOL: return *(const bool *)p == (fd->default_int != 0);
    case RV_KP_TYPE_INT8: i = *(const int8_t *)p; break;
    case RV_KP_TYPE_INT16: i = *(const int16_t *)p; break;
    case RV_KP_TYPE_UINT16: i = *(const uint16_t *)p; break;
    case RV_KP_TYPE_INT32: i = *(const int32_t *)p; break;
    case RV_KP_TYPE_UINT32: i = *(const uint32_t *)p; break;
    case RV_KP_TYPE_INT64: i = *(const int64_t *)p; break;
    case RV_KP_TYPE_FLOAT64: return *(const double *)p == fd->default_f64;
    case RV_KP_TYPE_UUID: return rv_kp_uuid_is_zero((const void *)p);
    case RV_KP_TYPE_STRING: {
        const struct rv_kp_str *s = (const void *)p;
        return fd->is_default_null ? s->len < 0 : rv_kp_str_eq_cstr(*s, fd->default_str);
    }
    case RV_KP_TYPE_BYTES:
    case RV_KP_TYPE_RECORDS: {
        int32_t len = ((const struct rv_kp_bytes *)p)->len;
        return fd->is_default_null ? len < 0 : len == 0;
    }
    case RV_KP_TYPE_ARRAY: {
        int32_t count = ((const struct rv_kp_arr_i32 *)p)->count;
        return fd->is_default_null ? count < 0 : count == 0;
    }
    case RV_KP_TYPE_STRUCT:
        return fd->is_ptr ? *(void *const *)p == NULL : ref_struct_is_default(fd->sub, p);
    }
    return i == fd->default_int;
}

static void ref_struct(struct rv_kp_writer *w, const struct rv_kp_struct_desc *d, const void *m,
                       int16_t v);

static void ref_field(struct rv_kp_writer *w, const struct rv_kp_field_desc *fd, const uint8_t *p,
                      int16_t v, bool is_compact, bool is_tagged)
{
    bool is_nullable = rv_kp_vrange_has(fd->nullable_versions, v);
    switch (fd->type) {
    case RV_KP_TYPE_BYTES:
    case RV_KP_TYPE_RECORDS: {
        const struct rv_kp_bytes *b = (const void *)p;
        cr_assert(b->len >= 0 || is_nullable);
        ref_len(w, is_compact, 4, b->len);
        ref_put(w, b->ptr, b->len > 0 ? (size_t)b->len : 0);
        return;
    }
    case RV_KP_TYPE_STRUCT: {
        /* A nullable struct has a marker where the version makes it nullable: int8
         * -1/1, or unsigned varint 0/1 when tagged. */
        const void *sp = fd->is_ptr ? *(void *const *)p : p;
        cr_assert(sp != NULL || is_nullable);
        if (fd->is_ptr && is_nullable && is_tagged) {
            ref_uvarint(w, sp == NULL ? 0 : 1);
        } else if (fd->is_ptr && is_nullable) {
            ref_be(w, sp == NULL ? 0xFF : 1, 1);
        }
        if (sp != NULL) {
            ref_struct(w, fd->sub, sp, v);
        }
        return;
    }
    case RV_KP_TYPE_ARRAY: {
        const struct rv_kp_arr_i32 *a = (const void *)p;
        bool is_struct = fd->elem_type == RV_KP_TYPE_STRUCT;
        size_t size = is_struct ? fd->sub->size : type_size(fd->elem_type);
        cr_assert(a->count >= 0 || is_nullable);
        ref_len(w, is_compact, 4, a->count);
        for (int32_t i = 0; i < a->count; i++) {
            const uint8_t *it = (const uint8_t *)a->items + size * (size_t)i;
            if (is_struct) {
                ref_struct(w, fd->sub, it, v);
            } else {
                ref_prim(w, fd->elem_type, it, is_compact);
            }
        }
        return;
    }
    case RV_KP_TYPE_STRING:
        cr_assert(((const struct rv_kp_str *)p)->len >= 0 || is_nullable);
        break;
    }
    ref_prim(w, fd->type, p, is_compact);
}

static void ref_struct(struct rv_kp_writer *w, const struct rv_kp_struct_desc *d, const void *m,
                       int16_t v)
{
    const struct rv_kp_field_desc *tagged[16];
    size_t tagged_count = 0;
    for (uint32_t i = 0; i < d->field_count; i++) {
        const struct rv_kp_field_desc *fd = &d->fields[i];
        const uint8_t *p = (const uint8_t *)m + fd->offset;
        if (!rv_kp_vrange_has(fd->versions, v)) {
            cr_assert(fd->is_ignorable || ref_is_default(fd, p));
        } else if (rv_kp_vrange_has(fd->tagged_versions, v)) {
            if (!ref_is_default(fd, p)) {
                cr_assert_lt(tagged_count, 16);
                tagged[tagged_count++] = fd;
            }
        } else {
            ref_field(w, fd, p, v, rv_kp_vrange_has(fd->flexible_versions, v), false);
        }
    }
    if (!rv_kp_vrange_has(d->flexible_versions, v)) {
        cr_assert_eq(tagged_count, 0);
        return;
    }
    /* Tagged fields go out in tag order, each as tag, size, compact value. */
    for (size_t i = 1; i < tagged_count; i++) {
        for (size_t j = i; j > 0 && tagged[j - 1]->tag > tagged[j]->tag; j--) {
            const struct rv_kp_field_desc *t = tagged[j];
            tagged[j] = tagged[j - 1];
            tagged[j - 1] = t;
        }
    }
    ref_uvarint(w, tagged_count);
    for (size_t i = 0; i < tagged_count; i++) {
        static uint8_t tmp_buf[4][1 << 16];
        static int depth;
        cr_assert_lt(depth, 4);
        struct rv_kp_writer tw;
        rv_kp_writer_init(&tw, tmp_buf[depth], sizeof(tmp_buf[depth]));
        depth++;
        ref_field(&tw, tagged[i], (const uint8_t *)m + tagged[i]->offset, v, true, true);
        depth--;
        ref_uvarint(w, (uint64_t)tagged[i]->tag);
        ref_uvarint(w, tw.pos);
        ref_put(w, tmp_buf[depth], tw.pos);
    }
}

/* Encode a random message, check its size, decode it, compare, and check that the
 * decoded message encodes to the same bytes. Returns the encoded length. */
static size_t round_trip_one(const struct rv_kp_struct_desc *d, int16_t v, uint64_t seed)
{
    struct rv_kproto_arena fa;
    struct rv_kproto_arena da;
    rv_kproto_arena_init(&fa, arena_buf, sizeof(arena_buf));
    rv_kproto_arena_init(&da, decode_arena_buf, sizeof(decode_arena_buf));
    struct fill fc = {&fa, v};
    rng_seed(seed);
    void *msg = take(&fa, d->size, d->align);
    void *back = take(&fa, d->size, d->align);
    fill_struct(&fc, d, msg, 0);

    struct rv_kp_writer w;
    rv_kp_writer_init(&w, wire_buf, sizeof(wire_buf));
    int rc = d->encode(&w, v, msg);
    cr_assert_eq(rc, 0, "%s v%d seed %llu: encode %d", d->name, v, (unsigned long long)seed, rc);
    cr_assert_eq(d->size_of(v, msg), w.pos, "%s v%d: size %zu, encoded %zu", d->name, v,
                 d->size_of(v, msg), w.pos);
    struct rv_kp_writer rw;
    rv_kp_writer_init(&rw, wire2_buf, sizeof(wire2_buf));
    ref_struct(&rw, d, msg, v);
    char what_ref[128];
    snprintf(what_ref, sizeof(what_ref), "%s v%d seed %llu: generated vs reference", d->name, v,
             (unsigned long long)seed);
    assert_bytes(wire_buf, w.pos, wire2_buf, rw.pos, what_ref);

    struct rv_kp_reader r;
    rv_kp_reader_init(&r, wire_buf, w.pos);
    rc = d->decode(&r, v, back, &da);
    cr_assert_eq(rc, 0, "%s v%d seed %llu: decode %d", d->name, v, (unsigned long long)seed, rc);
    cr_assert_eq(r.pos, w.pos, "%s v%d: decode consumed %zu of %zu", d->name, v, r.pos, w.pos);
    char what[128];
    snprintf(what, sizeof(what), "%s v%d seed %llu", d->name, v, (unsigned long long)seed);
    cmp_struct(d, msg, back, what);

    struct rv_kp_writer w2;
    rv_kp_writer_init(&w2, wire2_buf, sizeof(wire2_buf));
    cr_assert_eq(d->encode(&w2, v, back), 0);
    assert_bytes(wire2_buf, w2.pos, wire_buf, w.pos, what);
    return w.pos;
}

static void round_trip_all_versions(const struct rv_kp_struct_desc *d, int rounds)
{
    for (int16_t v = d->versions.min; v <= d->versions.max; v++) {
        for (int i = 0; i < rounds; i++) {
            round_trip_one(d, v, (uint64_t)i * 1000 + (uint64_t)v);
        }
    }
}

static void round_trip_api(int16_t api_key, bool is_request, bool is_response)
{
    const struct rv_kp_api *api = rv_kp_api_find(api_key);
    cr_assert_not_null(api);
    if (is_request) {
        round_trip_all_versions(api->request, 40);
    }
    if (is_response) {
        round_trip_all_versions(api->response, 40);
    }
}

Test(kproto, api_versions_round_trips_in_every_version)
{
    round_trip_api(RV_KP_API_API_VERSIONS, true, true);
}

Test(kproto, metadata_round_trips_in_every_version)
{
    round_trip_api(RV_KP_API_METADATA, true, true);
}

Test(kproto, produce_round_trips_in_every_version)
{
    round_trip_api(RV_KP_API_PRODUCE, true, true);
}

Test(kproto, fetch_round_trips_in_every_version)
{
    round_trip_api(RV_KP_API_FETCH, true, true);
}

Test(kproto, create_topics_request_round_trips_in_every_version)
{
    round_trip_api(RV_KP_API_CREATE_TOPICS, true, false);
}

Test(kproto, list_offsets_request_round_trips_in_every_version)
{
    round_trip_api(RV_KP_API_LIST_OFFSETS, true, false);
}

Test(kproto, every_message_round_trips_in_every_version)
{
    for (size_t i = 0; i < rv_kp_api_count; i++) {
        round_trip_all_versions(rv_kp_apis[i].request, 30);
        round_trip_all_versions(rv_kp_apis[i].response, 30);
    }
    round_trip_all_versions(&rv_kp_request_header_desc, 30);
    round_trip_all_versions(&rv_kp_response_header_desc, 30);
}

Test(kproto, fields_absent_in_a_version_decode_to_their_defaults)
{
    /* MetadataRequest v3 lacks AllowAutoTopicCreation (default true). */
    const uint8_t v3[] = {0xFF, 0xFF, 0xFF, 0xFF};
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, v3, sizeof(v3));
    struct rv_kp_metadata_request m;
    struct rv_kproto_arena a;
    rv_kproto_arena_init(&a, arena_buf, sizeof(arena_buf));
    cr_assert_eq(rv_kp_metadata_request_decode(&r, 3, &m, &a), 0);
    cr_assert_eq(m.topics.count, -1, "null topics: all of them");
    cr_assert(m.allow_auto_topic_creation);
    /* FetchResponse partitions: LastStableOffset (4+) and PreferredReadReplica (11+)
     * default to -1. */
    struct rv_kp_fetch_response_partition_data pd;
    rv_kp_fetch_response_partition_data_init(&pd);
    cr_assert_eq(pd.last_stable_offset, -1);
    cr_assert_eq(pd.preferred_read_replica, -1);
    cr_assert_eq(pd.records.len, -1, "records default to null");
    cr_assert_eq(pd.aborted_transactions.count, 0, "arrays default to empty, null or not");
}

Test(kproto, encode_refuses_what_the_version_cannot_carry)
{
    uint8_t buf[256];
    struct rv_kp_writer w;
    struct rv_kp_metadata_request m;
    rv_kp_metadata_request_init(&m);
    /* Non-ignorable field with a non-default value, in a version without it. */
    m.allow_auto_topic_creation = false;
    rv_kp_writer_init(&w, buf, sizeof(buf));
    cr_assert_eq(rv_kp_metadata_request_encode(&w, 3, &m), -EINVAL);
    rv_kp_writer_init(&w, buf, sizeof(buf));
    cr_assert_eq(rv_kp_metadata_request_encode(&w, 4, &m), 0);
    /* Null topics: not in v0, fine from v1. */
    m.topics.count = -1;
    m.allow_auto_topic_creation = true;
    rv_kp_writer_init(&w, buf, sizeof(buf));
    cr_assert_eq(rv_kp_metadata_request_encode(&w, 0, &m), -EINVAL);
    rv_kp_writer_init(&w, buf, sizeof(buf));
    cr_assert_eq(rv_kp_metadata_request_encode(&w, 1, &m), 0);
    assert_bytes(buf, w.pos, (const uint8_t[]){0xFF, 0xFF, 0xFF, 0xFF}, 4, "null topics v1");
    /* Versions the message does not have. */
    cr_assert_eq(rv_kp_metadata_request_encode(&w, 13, &m), -EINVAL);
    cr_assert_eq(rv_kp_metadata_request_encode(&w, -1, &m), -EINVAL);
    cr_assert_eq(rv_kp_metadata_request_size(13, &m), 0);
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, buf, 4);
    cr_assert_eq(rv_kp_metadata_request_decode(&r, 13, &m, NULL), -EPROTO);
    /* Ignorable fields are dropped silently: ApiVersionsResponse v0 has no throttle. */
    struct rv_kp_api_versions_response avr;
    rv_kp_api_versions_response_init(&avr);
    avr.throttle_time_ms = 5;
    rv_kp_writer_init(&w, buf, sizeof(buf));
    cr_assert_eq(rv_kp_api_versions_response_encode(&w, 0, &avr), 0);
    assert_bytes(buf, w.pos, (const uint8_t[]){0, 0, 0, 0, 0, 0}, 6, "ApiVersionsResponse v0");
}

Test(kproto, encode_into_every_short_buffer_fails_cleanly)
{
    const struct rv_kp_api *api = rv_kp_api_find(RV_KP_API_FETCH);
    size_t len = round_trip_one(api->response, 16, 7);
    cr_assert_gt(len, 20);
    /* round_trip_one left the message's encoding in wire_buf; encode it again into
     * every smaller capacity, from a fresh fill with the same seed. */
    struct rv_kproto_arena fa;
    rv_kproto_arena_init(&fa, arena_buf, sizeof(arena_buf));
    struct fill fc = {&fa, 16};
    rng_seed(7);
    void *msg = take(&fa, api->response->size, api->response->align);
    fill_struct(&fc, api->response, msg, 0);
    for (size_t cap = 0; cap < len; cap++) {
        struct rv_kp_writer w;
        rv_kp_writer_init(&w, wire2_buf, cap);
        cr_assert_eq(api->response->encode(&w, 16, msg), -ENOBUFS, "cap %zu", cap);
        cr_assert_leq(w.pos, cap);
    }
}

/* ------------------------------------------------------------------ golden */

/* ApiVersionsRequest v3 as librdkafka 2.0.2 (python3-confluent-kafka 1.7.0) sends it,
 * built by hand from the spec; tests/data/kafka/ApiVersions-v3.bin is the capture. */
/* clang-format off */
static const uint8_t api_versions_v3_frame[] = {
    0x00, 0x12,                                     /* api key 18 */
    0x00, 0x03,                                     /* version 3 */
    0x00, 0x00, 0x00, 0x01,                         /* correlation id 1 */
    0x00, 0x07, 'r', 'd', 'k', 'a', 'f', 'k', 'a', /* client id: classic even in v2 */
    0x00,                                           /* header tags: none */
    0x17,                                           /* ClientSoftwareName: 22 bytes */
    'c', 'o', 'n', 'f', 'l', 'u', 'e', 'n', 't', '-', 'k', 'a', 'f', 'k', 'a', '-',
    'p', 'y', 't', 'h', 'o', 'n',
    0x14,                                           /* ClientSoftwareVersion: 19 bytes */
    '1', '.', '7', '.', '0', '-', 'r', 'd', 'k', 'a', 'f', 'k', 'a', '-', '2', '.',
    '0', '.', '2',
    0x00,                                           /* body tags: none */
};
/* clang-format on */

Test(kproto, golden_api_versions_request_v3)
{
    size_t len;
    uint8_t *frame = read_data("ApiVersions-v3.bin", &len);
    assert_bytes(frame, len, api_versions_v3_frame, sizeof(api_versions_v3_frame),
                 "capture vs spec");

    struct rv_kp_reader r;
    rv_kp_reader_init(&r, frame, len);
    struct rv_kp_request_header h;
    struct rv_kp_api_versions_request m;
    cr_assert_eq(rv_kp_request_header_parse(&r, &h), 0);
    cr_assert(h.request_api_key == 18 && h.request_api_version == 3 && h.correlation_id == 1);
    cr_assert(str_is(h.client_id, "rdkafka"));
    cr_assert_eq(rv_kp_api_versions_request_decode(&r, 3, &m, NULL), 0);
    cr_assert(str_is(m.client_software_name, "confluent-kafka-python"));
    cr_assert(str_is(m.client_software_version, "1.7.0-rdkafka-2.0.2"));
    cr_assert_eq(r.pos, len);

    uint8_t out[128];
    struct rv_kp_writer w;
    rv_kp_writer_init(&w, out, sizeof(out));
    cr_assert_eq(rv_kp_request_header_build(&w, &h), 0);
    cr_assert_eq(rv_kp_api_versions_request_encode(&w, 3, &m), 0);
    assert_bytes(out, w.pos, frame, len, "re-encoded");
    free(frame);
}

/* MetadataRequest v12 for topic "test" as librdkafka >= 2.3 (whose Metadata goes up to
 * v12) writes it in rd_kafka_MetadataRequest0: per topic a zero TopicId, the compact
 * name and empty tags; AllowAutoTopicCreation; no IncludeClusterAuthorizedOperations
 * (v8-10 only); IncludeTopicAuthorizedOperations; the request's empty tags. Built by
 * hand from the spec: librdkafka 2.0.2, installed here, stops at v4. */
/* clang-format off */
static const uint8_t metadata_v12_frame[] = {
    0x00, 0x03,                                     /* api key 3 */
    0x00, 0x0C,                                     /* version 12 */
    0x00, 0x00, 0x00, 0x05,                         /* correlation id 5 */
    0x00, 0x07, 'r', 'd', 'k', 'a', 'f', 'k', 'a', /* client id */
    0x00,                                           /* header tags */
    0x02,                                           /* Topics: compact, 1 entry */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* TopicId: zero uuid */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x05, 't', 'e', 's', 't',                       /* Name: compact nullable string */
    0x00,                                           /* topic tags */
    0x01,                                           /* AllowAutoTopicCreation */
    0x00,                                           /* IncludeTopicAuthorizedOperations */
    0x00,                                           /* body tags */
};
/* clang-format on */

Test(kproto, golden_metadata_request_v12)
{
    size_t len = sizeof(metadata_v12_frame);
    uint8_t *frame = malloc(len);
    memcpy(frame, metadata_v12_frame, len);
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, frame, len);
    struct rv_kp_request_header h;
    struct rv_kp_metadata_request m;
    struct rv_kproto_arena a;
    rv_kproto_arena_init(&a, arena_buf, sizeof(arena_buf));
    cr_assert_eq(rv_kp_request_header_parse(&r, &h), 0);
    cr_assert(h.request_api_key == 3 && h.request_api_version == 12 && h.correlation_id == 5);
    cr_assert_eq(rv_kp_metadata_request_decode(&r, 12, &m, &a), 0);
    cr_assert_eq(r.pos, len);
    cr_assert_eq(m.topics.count, 1);
    cr_assert(rv_kp_uuid_is_zero(&m.topics.items[0].topic_id));
    cr_assert(str_is(m.topics.items[0].name, "test"));
    cr_assert(m.allow_auto_topic_creation);
    cr_assert(!m.include_cluster_authorized_operations);
    cr_assert(!m.include_topic_authorized_operations);

    /* Build the same from scratch. */
    struct rv_kp_metadata_request_topic topic;
    rv_kp_metadata_request_topic_init(&topic);
    topic.name = rv_kp_str_from("test");
    struct rv_kp_metadata_request req;
    rv_kp_metadata_request_init(&req);
    req.topics.count = 1;
    req.topics.items = &topic;
    struct rv_kp_request_header hb;
    rv_kp_request_header_init(&hb);
    hb.request_api_key = RV_KP_API_METADATA;
    hb.request_api_version = 12;
    hb.correlation_id = 5;
    hb.client_id = rv_kp_str_from("rdkafka");
    uint8_t out[128];
    struct rv_kp_writer w;
    rv_kp_writer_init(&w, out, sizeof(out));
    cr_assert_eq(rv_kp_request_header_build(&w, &hb), 0);
    cr_assert_eq(rv_kp_metadata_request_encode(&w, 12, &req), 0);
    assert_bytes(out, w.pos, frame, len, "MetadataRequest v12");
    cr_assert_eq(rv_kp_metadata_request_size(12, &req) + 18, len);
    free(frame);
}

/* Decode a captured request frame and check it re-encodes to the same bytes. */
static void golden_reencode(const char *file, int16_t want_key, int16_t want_version)
{
    size_t len;
    uint8_t *frame = read_data(file, &len);
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, frame, len);
    struct rv_kp_request_header h;
    cr_assert_eq(rv_kp_request_header_parse(&r, &h), 0);
    cr_assert(h.request_api_key == want_key && h.request_api_version == want_version);
    const struct rv_kp_struct_desc *d = rv_kp_api_find(want_key)->request;
    struct rv_kproto_arena a;
    rv_kproto_arena_init(&a, arena_buf, sizeof(arena_buf));
    void *m = take(&a, d->size, d->align);
    cr_assert_eq(d->decode(&r, want_version, m, &a), 0);
    cr_assert_eq(r.pos, len);
    struct rv_kp_writer w;
    rv_kp_writer_init(&w, wire_buf, sizeof(wire_buf));
    cr_assert_eq(rv_kp_request_header_build(&w, &h), 0);
    cr_assert_eq(d->encode(&w, want_version, m), 0);
    assert_bytes(wire_buf, w.pos, frame, len, file);
    free(frame);
}

Test(kproto, golden_librdkafka_frames_reencode_exactly)
{
    golden_reencode("ApiVersions-v3.bin", RV_KP_API_API_VERSIONS, 3);
    golden_reencode("Metadata-v4.bin", RV_KP_API_METADATA, 4);
    golden_reencode("Produce-v7.bin", RV_KP_API_PRODUCE, 7);
}

Test(kproto, golden_produce_request_v7)
{
    size_t len;
    uint8_t *frame = read_data("Produce-v7.bin", &len);
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, frame, len);
    struct rv_kp_request_header h;
    struct rv_kp_produce_request m;
    struct rv_kproto_arena a;
    rv_kproto_arena_init(&a, arena_buf, sizeof(arena_buf));
    cr_assert_eq(rv_kp_request_header_parse(&r, &h), 0);
    cr_assert_eq(rv_kp_produce_request_decode(&r, 7, &m, &a), 0);
    cr_assert_eq(m.transactional_id.len, -1);
    cr_assert_eq(m.acks, -1);
    cr_assert_eq(m.timeout_ms, 30000);
    cr_assert_eq(m.topic_data.count, 1);
    cr_assert(str_is(m.topic_data.items[0].name, "test"));
    cr_assert_eq(m.topic_data.items[0].partition_data.count, 1);
    const struct rv_kp_bytes *rec = &m.topic_data.items[0].partition_data.items[0].records;
    cr_assert_eq(rec->len, 76, "one RecordBatch v2 of one record");
    cr_assert(rec->ptr > frame && rec->ptr + rec->len == frame + len, "zero-copy records");
    cr_assert_eq(rec->ptr[16], 2, "magic 2");
    free(frame);
}

/* ------------------------------------------------------------ tagged fields */

Test(kproto, unknown_tagged_fields_are_skipped)
{
    /* ApiVersionsRequest v3 body with unknown tags 5 (2 bytes) and 90 (0 bytes). */
    const uint8_t body[] = {0x02, 'a', 0x02, 'b', 0x02, 0x05, 0x02, 0xDE, 0xAD, 0x5A, 0x00};
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, body, sizeof(body));
    struct rv_kp_api_versions_request m;
    cr_assert_eq(rv_kp_api_versions_request_decode(&r, 3, &m, NULL), 0);
    cr_assert(str_is(m.client_software_name, "a") && str_is(m.client_software_version, "b"));
    cr_assert_eq(r.pos, sizeof(body));

    /* MetadataRequest v12 with an unknown tag inside the topic struct. */
    uint8_t frame[sizeof(metadata_v12_frame) + 8];
    size_t topic_tags = 18 + 1 + 16 + 5; /* header, count, uuid, name */
    memcpy(frame, metadata_v12_frame, topic_tags);
    const uint8_t tags[] = {0x01, 0x21, 0x03, 'x', 'y', 'z'};
    memcpy(frame + topic_tags, tags, sizeof(tags));
    memcpy(frame + topic_tags + sizeof(tags), metadata_v12_frame + topic_tags + 1,
           sizeof(metadata_v12_frame) - topic_tags - 1);
    size_t len = sizeof(metadata_v12_frame) - 1 + sizeof(tags);
    rv_kp_reader_init(&r, frame + 18, len - 18);
    struct rv_kp_metadata_request md;
    struct rv_kproto_arena a;
    rv_kproto_arena_init(&a, arena_buf, sizeof(arena_buf));
    cr_assert_eq(rv_kp_metadata_request_decode(&r, 12, &md, &a), 0);
    cr_assert_eq(r.pos, len - 18);
    cr_assert(md.topics.count == 1 && str_is(md.topics.items[0].name, "test"));
    cr_assert(md.allow_auto_topic_creation);
}

Test(kproto, known_tagged_fields_are_decoded_and_encoded_when_not_default)
{
    struct rv_kp_api_versions_response m;
    rv_kp_api_versions_response_init(&m);
    cr_assert_eq(m.finalized_features_epoch, -1);
    uint8_t buf[64];
    struct rv_kp_writer w;
    rv_kp_writer_init(&w, buf, sizeof(buf));
    cr_assert_eq(rv_kp_api_versions_response_encode(&w, 3, &m), 0);
    /* ErrorCode, empty compact ApiKeys, ThrottleTimeMs, no tags: defaults are not sent. */
    assert_bytes(buf, w.pos, (const uint8_t[]){0, 0, 0x01, 0, 0, 0, 0, 0x00}, 8, "defaults");

    m.finalized_features_epoch = 5;
    m.zk_migration_ready = true;
    rv_kp_writer_init(&w, buf, sizeof(buf));
    cr_assert_eq(rv_kp_api_versions_response_encode(&w, 3, &m), 0);
    const uint8_t want[] = {0, 0, 0x01, 0, 0, 0, 0, 0x02, 0x01, 0x08, 0,
                            0, 0, 0,    0, 0, 0, 5, 0x03, 0x01, 0x01};
    assert_bytes(buf, w.pos, want, sizeof(want), "tags 1 and 3, in tag order");
    cr_assert_eq(rv_kp_api_versions_response_size(3, &m), sizeof(want));

    /* Decoding: tags in any order, an unknown one among them. */
    const uint8_t in[] = {0,    0,    0x01, 0,    0, 0, 0, 0x03, 0x03, 0x01, 0x01, 0x09,
                          0x01, 0xFF, 0x01, 0x08, 0, 0, 0, 0,    0,    0,    0,    7};
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, in, sizeof(in));
    struct rv_kp_api_versions_response d;
    cr_assert_eq(rv_kp_api_versions_response_decode(&r, 3, &d, NULL), 0);
    cr_assert_eq(d.finalized_features_epoch, 7);
    cr_assert(d.zk_migration_ready);
    cr_assert_eq(d.supported_features.count, 0);
    cr_assert_eq(r.pos, sizeof(in));
    /* A known tag whose value is shorter than its type. */
    const uint8_t short_tag[] = {0, 0, 0x01, 0, 0, 0, 0, 0x01, 0x01, 0x02, 0, 0};
    rv_kp_reader_init(&r, short_tag, sizeof(short_tag));
    cr_assert_eq(rv_kp_api_versions_response_decode(&r, 3, &d, NULL), -EBADMSG);
}

/* -------------------------------------------------------------------- fuzz */

/* Decode bytes from an exactly sized heap copy, so that ASan sees any overread. */
static void decode_copy(const struct rv_kp_struct_desc *d, int16_t v, const uint8_t *bytes,
                        size_t len, void *out, int *out_rc)
{
    uint8_t *p = malloc(len > 0 ? len : 1);
    cr_assert_not_null(p);
    if (len > 0) {
        memcpy(p, bytes, len);
    }
    struct rv_kproto_arena da;
    rv_kproto_arena_init(&da, decode_arena_buf, sizeof(decode_arena_buf));
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, p, len);
    int rc = d->decode(&r, v, out, &da);
    cr_assert(rc == 0 || rc == -EBADMSG || rc == -EPROTO || rc == -ENOBUFS,
              "%s v%d: undocumented result %d", d->name, v, rc);
    cr_assert_leq(r.pos, len);
    *out_rc = rc;
    free(p);
}

static void fuzz_message(const struct rv_kp_struct_desc *d, int16_t v, uint64_t seed)
{
    size_t len = round_trip_one(d, v, seed);
    uint8_t *good = malloc(len > 0 ? len : 1);
    memcpy(good, wire_buf, len);
    struct rv_kproto_arena fa;
    rv_kproto_arena_init(&fa, arena_buf, sizeof(arena_buf));
    void *out = take(&fa, d->size, d->align);
    int rc;
    /* Truncations: a strict prefix of a message never decodes as the whole. */
    size_t step = len > 200 ? len / 200 : 1;
    for (size_t n = 0; n < len; n += step) {
        decode_copy(d, v, good, n, out, &rc);
        cr_assert_eq(rc, -EBADMSG, "%s v%d: %zu of %zu bytes gave %d", d->name, v, n, len, rc);
    }
    /* Mutations: flipped bytes, 0xFF and 0x00 runs, spliced lengths. */
    uint8_t *bad = malloc(len + 8);
    for (int i = 0; i < 200 && len > 0; i++) {
        memcpy(bad, good, len);
        size_t blen = len;
        int edits = 1 + (int)rnd(3);
        for (int e = 0; e < edits; e++) {
            size_t at = rnd((uint32_t)blen);
            switch (rnd(4)) {
            case 0: bad[at] ^= (uint8_t)(1u << rnd(8)); break;
            case 1: bad[at] = 0xFF; break;
            case 2: bad[at] = 0x00; break;
            default: bad[at] = (uint8_t)rng_next(); break;
            }
        }
        if (rnd(4) == 0) {
            blen -= rnd((uint32_t)blen);
        }
        decode_copy(d, v, bad, blen, out, &rc);
    }
    free(bad);
    free(good);
}

Test(kproto, truncated_and_mutated_frames_never_crash_any_decoder)
{
    for (size_t i = 0; i < rv_kp_api_count; i++) {
        const struct rv_kp_api *api = &rv_kp_apis[i];
        for (int16_t v = api->version_min; v <= api->version_max; v++) {
            fuzz_message(api->request, v, 77u + (uint64_t)v);
            fuzz_message(api->response, v, 99u + (uint64_t)v);
        }
    }
    /* Random bytes, and the empty input, to every decoder in every version. */
    uint8_t noise[64];
    struct rv_kproto_arena fa;
    rv_kproto_arena_init(&fa, arena_buf, sizeof(arena_buf));
    rng_seed(5);
    for (size_t i = 0; i < rv_kp_api_count; i++) {
        const struct rv_kp_api *api = &rv_kp_apis[i];
        void *out = take(&fa, 4096, 16);
        cr_assert_leq(api->request->size, 4096);
        cr_assert_leq(api->response->size, 4096);
        for (int16_t v = api->version_min; v <= api->version_max; v++) {
            for (int k = 0; k < 20; k++) {
                for (size_t j = 0; j < sizeof(noise); j++) {
                    noise[j] = (uint8_t)rng_next();
                }
                int rc;
                decode_copy(api->request, v, noise, rnd(sizeof(noise)), out, &rc);
                decode_copy(api->response, v, noise, rnd(sizeof(noise)), out, &rc);
            }
        }
    }
}
