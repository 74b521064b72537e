/* tests/storage/test_batch.c - RecordBatch v2: builder -> parse -> iterate round trips,
 * every malformed-batch error, in-place stamping, batch splitting, compressed batches
 * and batches captured from librdkafka (tests/data/batches/). */
#include <criterion/criterion.h>

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/crc32c.h"
#include "core/varint.h"
#include "storage/batch.h"
#include "storage/codec.h"

TestSuite(batch);

#define MAX_BATCH (64u << 20)
#define BUF_BYTES (1u << 20)

static uint8_t buf[BUF_BYTES];
static uint8_t buf2[BUF_BYTES];

static uint64_t rng_state = 0x2545F4914F6CDD1DULL;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void store_be64(uint8_t *p, uint64_t v)
{
    store_be32(p, (uint32_t)(v >> 32));
    store_be32(p + 4, (uint32_t)v);
}

/* Recompute the CRC of the batch at b after a test edited it. */
static void recrc(uint8_t *b)
{
    size_t size = 12 + load_be32(b + 8);
    store_be32(b + 17, rv_crc32c(0, b + 21, size - 21));
}

static const struct rv_batch_params default_params = {
    .base_offset = 0,
    .base_timestamp = RV_BATCH_NO_TIMESTAMP,
    .leader_epoch = 0,
    .producer_id = RV_BATCH_NO_PRODUCER_ID,
    .producer_epoch = -1,
    .base_sequence = RV_BATCH_NO_SEQUENCE,
    .attributes = 0,
};

/* Build a batch of n records "k<i>" -> "v<i>" at timestamps 1000 + i into buf. */
static size_t build_simple(uint8_t *out, size_t cap, int n)
{
    struct rv_batch_builder b;
    cr_assert_eq(rv_batch_builder_init(&b, out, cap, &default_params), 0);
    for (int i = 0; i < n; i++) {
        char k[32];
        char v[32];
        int kl = snprintf(k, sizeof(k), "k%d", i);
        int vl = snprintf(v, sizeof(v), "v%d", i);
        cr_assert_eq(rv_batch_builder_add(&b, 1000 + i, k, kl, v, vl, NULL, 0), 0);
    }
    size_t len = 0;
    cr_assert_eq(rv_batch_builder_finish(&b, &len), 0);
    return len;
}

/* Raw batches: a records section written by hand, then a header and CRC. */

struct raw {
    uint8_t bytes[4096];
    size_t len;
};

static void raw_varint(struct raw *r, int64_t v)
{
    r->len += rv_varint_encode_i64(r->bytes + r->len, v);
}

static void raw_put(struct raw *r, const void *p, size_t n)
{
    memcpy(r->bytes + r->len, p, n);
    r->len += n;
}

/* Append one record: body = attributes 0, ts delta 0, the given offset delta, key and
 * value lengths (bytes written only for lengths > 0, taken from "xxxx..."), header
 * count, then `extra` raw bytes (headers or junk). The length prefix is body_len_adj
 * bytes off the truth. */
static void raw_record(struct raw *r, int32_t offset_delta, int32_t key_len, int32_t value_len,
                       int32_t header_count, const struct raw *extra, int32_t body_len_adj)
{
    static const char xs[64] = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    struct raw body = {.len = 0};
    body.bytes[body.len++] = 0;
    raw_varint(&body, 0);
    raw_varint(&body, offset_delta);
    raw_varint(&body, key_len);
    if (key_len > 0)
        raw_put(&body, xs, (size_t)key_len);
    raw_varint(&body, value_len);
    if (value_len > 0)
        raw_put(&body, xs, (size_t)value_len);
    raw_varint(&body, header_count);
    if (extra != NULL)
        raw_put(&body, extra->bytes, extra->len);
    raw_varint(r, (int64_t)body.len + body_len_adj);
    raw_put(r, body.bytes, body.len);
}

/* A valid record with the given offset delta, a 3-byte key and 5-byte value. */
static void raw_good(struct raw *r, int32_t offset_delta)
{
    raw_record(r, offset_delta, 3, 5, 0, NULL, 0);
}

/* Wrap records into a batch in out with the given count and lastOffsetDelta and a
 * valid CRC; returns its size. */
static size_t raw_batch(uint8_t *out, const struct raw *records, int32_t count,
                        int32_t last_offset_delta, uint16_t attributes)
{
    memset(out, 0, 61);
    store_be64(out + 0, 100);
    store_be32(out + 8, (uint32_t)(49 + records->len));
    out[16] = 2;
    out[21] = (uint8_t)(attributes >> 8);
    out[22] = (uint8_t)attributes;
    store_be32(out + 23, (uint32_t)last_offset_delta);
    store_be64(out + 27, 5000);
    store_be64(out + 35, 5000);
    store_be64(out + 43, (uint64_t)-1);
    out[51] = 0xff;
    out[52] = 0xff;
    store_be32(out + 53, (uint32_t)-1);
    store_be32(out + 57, (uint32_t)count);
    memcpy(out + 61, records->bytes, records->len);
    recrc(out);
    return 61 + records->len;
}

static int parse(const uint8_t *b, size_t len)
{
    struct rv_batch_view v;
    return rv_batch_parse(b, len, MAX_BATCH, &v);
}

/* Round trips. */

Test(batch, builds_parses_and_iterates_one_record)
{
    struct rv_batch_builder b;
    cr_assert_eq(rv_batch_builder_init(&b, buf, sizeof(buf), &default_params), 0);
    cr_assert_eq(rv_batch_builder_add(&b, 1700000000123, "key", 3, "value", 5, NULL, 0), 0);
    size_t len = 0;
    cr_assert_eq(rv_batch_builder_finish(&b, &len), 0);
    cr_assert_eq(len, 61u + 1 + 14, "header + length varint + 14-byte body");

    struct rv_batch_view v;
    cr_assert_eq(rv_batch_parse(buf, len, MAX_BATCH, &v), (int)len);
    cr_assert_eq(v.record_count, 1);
    cr_assert_eq(v.last_offset_delta, 0);
    cr_assert_eq(v.base_timestamp, 1700000000123);
    cr_assert_eq(v.max_timestamp, 1700000000123);
    cr_assert(v.has_dense_offsets);
    cr_assert_eq(v.records, buf + 61);
    cr_assert_eq(v.records_bytes, len - 61);

    struct rv_batch_record_iter it;
    struct rv_batch_record rec;
    rv_batch_record_iter_init(&it, &v, v.records, v.records_bytes);
    cr_assert_eq(rv_batch_record_iter_next(&it, &rec), 1);
    cr_assert_eq(rec.offset, 0);
    cr_assert_eq(rec.timestamp_ms, 1700000000123);
    cr_assert_eq(rec.key_len, 3);
    cr_assert_eq(memcmp(rec.key, "key", 3), 0);
    cr_assert_eq(rec.value_len, 5);
    cr_assert_eq(memcmp(rec.value, "value", 5), 0);
    cr_assert_eq(rec.header_count, 0u);
    cr_assert_eq(rv_batch_record_iter_next(&it, &rec), 0);
    cr_assert_eq(rv_batch_record_iter_next(&it, &rec), 0, "the end stays the end");
}

Test(batch, round_trips_null_key_null_value_empty_value_and_headers)
{
    struct rv_batch_record_header h[3] = {
        {.key = (const uint8_t *)"trace",
         .key_len = 5,
         .value = (const uint8_t *)"abc",
         .value_len = 3},
        {.key = (const uint8_t *)"nullv", .key_len = 5, .value = NULL, .value_len = -1},
        {.key = (const uint8_t *)"", .key_len = 0, .value = (const uint8_t *)"", .value_len = 0},
    };
    struct rv_batch_builder b;
    cr_assert_eq(rv_batch_builder_init(&b, buf, sizeof(buf), &default_params), 0);
    cr_assert_eq(rv_batch_builder_add(&b, 10, NULL, -1, "v", 1, NULL, 0), 0);
    cr_assert_eq(rv_batch_builder_add(&b, 11, "k", 1, NULL, -1, NULL, 0), 0);
    cr_assert_eq(rv_batch_builder_add(&b, 12, "k", 1, "", 0, NULL, 0), 0);
    cr_assert_eq(rv_batch_builder_add(&b, 13, "", 0, "hv", 2, h, 3), 0);
    size_t len = 0;
    cr_assert_eq(rv_batch_builder_finish(&b, &len), 0);

    struct rv_batch_view v;
    cr_assert_eq(rv_batch_parse(buf, len, MAX_BATCH, &v), (int)len);
    struct rv_batch_record_iter it;
    struct rv_batch_record r;
    rv_batch_record_iter_init(&it, &v, v.records, v.records_bytes);
    cr_assert_eq(rv_batch_record_iter_next(&it, &r), 1);
    cr_assert_eq(r.key_len, -1);
    cr_assert_null(r.key);
    cr_assert_eq(r.value_len, 1);
    cr_assert_eq(rv_batch_record_iter_next(&it, &r), 1);
    cr_assert_eq(r.value_len, -1, "null value (tombstone)");
    cr_assert_null(r.value);
    cr_assert_eq(rv_batch_record_iter_next(&it, &r), 1);
    cr_assert_eq(r.value_len, 0, "empty, not null");
    cr_assert_not_null(r.value);
    cr_assert_eq(rv_batch_record_iter_next(&it, &r), 1);
    cr_assert_eq(r.key_len, 0);
    cr_assert_eq(r.offset, 3);
    cr_assert_eq(r.timestamp_ms, 13);
    cr_assert_eq(r.header_count, 3u);

    struct rv_batch_header_iter hi;
    struct rv_batch_record_header got;
    rv_batch_header_iter_init(&hi, &r);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(rv_batch_header_iter_next(&hi, &got), 1);
        cr_assert_eq(got.key_len, h[i].key_len);
        cr_assert_eq(memcmp(got.key, h[i].key, (size_t)h[i].key_len), 0);
        cr_assert_eq(got.value_len, h[i].value_len, "header %d", i);
        if (h[i].value_len < 0)
            cr_assert_null(got.value);
        else
            cr_assert_eq(memcmp(got.value, h[i].value, (size_t)h[i].value_len), 0);
    }
    cr_assert_eq(rv_batch_header_iter_next(&hi, &got), 0);
    cr_assert_eq(rv_batch_record_iter_next(&it, &r), 0);
}

Test(batch, round_trips_ten_thousand_records_of_varied_sizes)
{
    static uint8_t payload[2000];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 31 + 7);
    struct rv_batch_builder b;
    cr_assert_eq(rv_batch_builder_init(&b, buf, sizeof(buf), &default_params), 0);
    int n = 10000;
    for (int i = 0; i < n; i++) {
        int32_t kl = i % 17 == 0 ? -1 : i % 13;
        int32_t vl = i % 11 == 0 ? -1 : (i * 7) % 97;
        cr_assert_eq(rv_batch_builder_add(&b, 5000 + (i % 100) - 50, payload, kl, payload + i % 500,
                                          vl, NULL, 0),
                     0, "record %d", i);
    }
    size_t len = 0;
    cr_assert_eq(rv_batch_builder_finish(&b, &len), 0);
    struct rv_batch_view v;
    cr_assert_eq(rv_batch_parse(buf, len, MAX_BATCH, &v), (int)len);
    cr_assert_eq(v.record_count, n);
    cr_assert_eq(v.last_offset_delta, n - 1);
    cr_assert_eq(v.base_timestamp, 4950, "the first record's timestamp");
    cr_assert_eq(v.max_timestamp, 5049);
    struct rv_batch_record_iter it;
    struct rv_batch_record r;
    rv_batch_record_iter_init(&it, &v, v.records, v.records_bytes);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(rv_batch_record_iter_next(&it, &r), 1, "record %d", i);
        cr_assert_eq(r.offset, i);
        cr_assert_eq(r.offset_delta, i);
        cr_assert_eq(r.timestamp_ms, 5000 + (i % 100) - 50, "negative deltas survive");
        cr_assert_eq(r.key_len, i % 17 == 0 ? -1 : i % 13);
        int32_t vl = i % 11 == 0 ? -1 : (i * 7) % 97;
        cr_assert_eq(r.value_len, vl);
        if (vl > 0)
            cr_assert_eq(memcmp(r.value, payload + i % 500, (size_t)vl), 0);
    }
    cr_assert_eq(rv_batch_record_iter_next(&it, &r), 0);
}

Test(batch, header_fields_round_trip)
{
    struct rv_batch_params p = {
        .base_offset = 0x0123456789ab,
        .base_timestamp = 1600000000000,
        .leader_epoch = 77,
        .producer_id = 0x7766554433,
        .producer_epoch = 9,
        .base_sequence = 123456,
        .attributes = RV_BATCH_ATTR_TRANSACTIONAL,
    };
    struct rv_batch_builder b;
    cr_assert_eq(rv_batch_builder_init(&b, buf, sizeof(buf), &p), 0);
    cr_assert_eq(rv_batch_builder_add(&b, 1600000000500, "a", 1, "b", 1, NULL, 0), 0);
    cr_assert_eq(rv_batch_builder_add(&b, 1599999999000, "a", 1, "b", 1, NULL, 0), 0);
    size_t len = 0;
    cr_assert_eq(rv_batch_builder_finish(&b, &len), 0);
    struct rv_batch_view v;
    cr_assert_eq(rv_batch_parse(buf, len, MAX_BATCH, &v), (int)len);
    cr_assert_eq(v.base_offset, p.base_offset);
    cr_assert_eq(v.length, (int32_t)len - 12);
    cr_assert_eq(v.leader_epoch, 77);
    cr_assert_eq(v.magic, 2);
    cr_assert_eq(v.crc, load_be32(buf + 17));
    cr_assert_eq(v.crc, rv_crc32c(0, buf + 21, len - 21));
    cr_assert_eq(v.attributes, RV_BATCH_ATTR_TRANSACTIONAL);
    cr_assert(rv_batch_is_transactional(&v));
    cr_assert(!rv_batch_is_control(&v));
    cr_assert_eq(rv_batch_codec(&v), RV_CODEC_NONE);
    cr_assert_eq(v.base_timestamp, 1600000000000, "explicit base timestamp kept");
    cr_assert_eq(v.max_timestamp, 1600000000500);
    cr_assert_eq(v.producer_id, 0x7766554433);
    cr_assert_eq(v.producer_epoch, 9);
    cr_assert_eq(v.base_sequence, 123456);
    cr_assert_eq(v.record_count, 2);
    cr_assert_eq(rv_batch_last_offset(&v), p.base_offset + 1);
    cr_assert_eq(v.bytes, buf);
    cr_assert_eq(v.size_bytes, len);
}

/* Stamping. */

Test(batch, base_offset_assignment_leaves_crc_valid)
{
    size_t len = build_simple(buf, sizeof(buf), 5);
    uint32_t crc = load_be32(buf + 17);
    rv_batch_set_base_offset(buf, 1000000007);
    cr_assert_eq(load_be32(buf + 17), crc, "CRC bytes untouched");
    struct rv_batch_view v;
    cr_assert_eq(rv_batch_parse(buf, len, MAX_BATCH, &v), (int)len);
    cr_assert_eq(v.base_offset, 1000000007);
    cr_assert_eq(rv_batch_last_offset(&v), 1000000011);
    struct rv_batch_record_iter it;
    struct rv_batch_record r;
    rv_batch_record_iter_init(&it, &v, v.records, v.records_bytes);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(rv_batch_record_iter_next(&it, &r), 1);
        cr_assert_eq(r.offset, 1000000007 + i);
    }
}

Test(batch, leader_epoch_stamp_leaves_crc_valid)
{
    size_t len = build_simple(buf, sizeof(buf), 2);
    rv_batch_set_leader_epoch(buf, 42);
    struct rv_batch_view v;
    cr_assert_eq(rv_batch_parse(buf, len, MAX_BATCH, &v), (int)len);
    cr_assert_eq(v.leader_epoch, 42);
}

Test(batch, log_append_time_recomputes_crc)
{
    struct rv_batch_params p = default_params;
    p.attributes = RV_BATCH_ATTR_TRANSACTIONAL;
    struct rv_batch_builder b;
    cr_assert_eq(rv_batch_builder_init(&b, buf, sizeof(buf), &p), 0);
    cr_assert_eq(rv_batch_builder_add(&b, 1000, "k", 1, "v", 1, NULL, 0), 0);
    cr_assert_eq(rv_batch_builder_add(&b, 1005, "k", 1, "v", 1, NULL, 0), 0);
    size_t len = 0;
    cr_assert_eq(rv_batch_builder_finish(&b, &len), 0);
    uint32_t crc = load_be32(buf + 17);

    rv_batch_set_log_append_time(buf, 1700000000000);
    cr_assert_neq(load_be32(buf + 17), crc, "a new CRC");
    struct rv_batch_view v;
    cr_assert_eq(rv_batch_parse(buf, len, MAX_BATCH, &v), (int)len, "and a valid one");
    cr_assert(rv_batch_has_log_append_time(&v));
    cr_assert(rv_batch_is_transactional(&v), "other attribute bits kept");
    cr_assert_eq(v.max_timestamp, 1700000000000);
    cr_assert_eq(v.base_timestamp, 1000, "baseTimestamp kept, as Kafka does");
    struct rv_batch_record_iter it;
    struct rv_batch_record r;
    rv_batch_record_iter_init(&it, &v, v.records, v.records_bytes);
    cr_assert_eq(rv_batch_record_iter_next(&it, &r), 1);
    cr_assert_eq(r.timestamp_ms, 1700000000000, "records read the append time");
    cr_assert_eq(rv_batch_record_iter_next(&it, &r), 1);
    cr_assert_eq(r.timestamp_ms, 1700000000000);

    memcpy(buf2, buf, len);
    rv_batch_set_log_append_time(buf, 1700000000000);
    cr_assert_eq(memcmp(buf, buf2, len), 0, "stamping the same time again changes nothing");
    rv_batch_set_log_append_time(buf, 1700000000001);
    cr_assert_eq(parse(buf, len), (int)len);
}

/* Framing errors. */

Test(batch, parse_rejects_truncated_header)
{
    size_t len = build_simple(buf, sizeof(buf), 1);
    static const size_t cuts[] = {0, 1, 11, 12, 16, 17, 40, 60};
    for (size_t i = 0; i < RV_ARRAY_LEN(cuts); i++)
        cr_assert_eq(parse(buf, cuts[i]), -EBADMSG, "%zu bytes", cuts[i]);
    for (size_t n = 61; n < len; n++)
        cr_assert_eq(parse(buf, n), -EBADMSG, "batch cut to %zu bytes", n);
    cr_assert_eq(parse(buf, len), (int)len);
}

Test(batch, parse_rejects_bad_batch_length)
{
    size_t len = build_simple(buf, sizeof(buf), 3);
    static const int32_t bad[] = {48, 0, -1, INT32_MIN};
    for (size_t i = 0; i < RV_ARRAY_LEN(bad); i++) {
        memcpy(buf2, buf, len);
        store_be32(buf2 + 8, (uint32_t)bad[i]);
        cr_assert_eq(parse(buf2, len), -EBADMSG, "batchLength %d", bad[i]);
    }
    memcpy(buf2, buf, len);
    store_be32(buf2 + 8, (uint32_t)(len - 12 + 1));
    cr_assert_eq(parse(buf2, len), -EBADMSG, "one byte longer than the buffer");
    store_be32(buf2 + 8, (uint32_t)(len - 12 - 1));
    cr_assert_eq(parse(buf2, len), -EBADMSG, "one byte shorter: CRC and records disagree");
}

Test(batch, parse_rejects_oversized_batch)
{
    size_t len = build_simple(buf, sizeof(buf), 3);
    struct rv_batch_view v;
    cr_assert_eq(rv_batch_parse(buf, len, len - 1, &v), -EMSGSIZE);
    cr_assert_eq(rv_batch_parse(buf, len, len, &v), (int)len, "exactly the limit is fine");
    store_be32(buf + 8, INT32_MAX);
    cr_assert_eq(rv_batch_parse(buf, len, SIZE_MAX, &v), -EMSGSIZE, "2 GiB is beyond int");
}

Test(batch, parse_rejects_other_magic_values)
{
    size_t len = build_simple(buf, sizeof(buf), 1);
    static const uint8_t magics[] = {0, 1, 3, 0xff};
    for (size_t i = 0; i < RV_ARRAY_LEN(magics); i++) {
        buf[16] = magics[i];
        cr_assert_eq(parse(buf, len), -EPROTONOSUPPORT, "magic %d", magics[i]);
        cr_assert_eq(parse(buf, 17), -EPROTONOSUPPORT, "known from 17 bytes on");
    }
}

Test(batch, parse_rejects_any_flipped_byte_by_crc)
{
    size_t len = build_simple(buf, sizeof(buf), 4);
    for (size_t pos = 17; pos < len; pos++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(buf2, buf, len);
            buf2[pos] ^= (uint8_t)(1u << bit);
            cr_assert_eq(parse(buf2, len), -EBADMSG, "byte %zu bit %d", pos, bit);
        }
    }
}

Test(batch, parse_rejects_unknown_compression_codec)
{
    size_t len = build_simple(buf, sizeof(buf), 1);
    for (uint8_t codec = 5; codec <= 7; codec++) {
        memcpy(buf2, buf, len);
        buf2[22] = codec;
        recrc(buf2);
        cr_assert_eq(parse(buf2, len), -ENOTSUP, "codec %d", codec);
    }
}

/* Record errors: raw batches with a valid CRC, so the walk is what fails. */

Test(batch, parse_rejects_record_count_mismatch)
{
    struct raw r = {.len = 0};
    raw_good(&r, 0);
    raw_good(&r, 1);
    raw_good(&r, 2);
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 3, 2, 0)), (int)(61 + r.len), "the control case");
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 4, 3, 0)), -EINVAL, "count too high");
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 2, 2, 0)), -EINVAL, "count too low");
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 0, 2, 0)), -EINVAL, "count zero with records");
    cr_assert_eq(parse(buf, raw_batch(buf, &r, -1, 2, 0)), -EINVAL, "negative count");
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 3, 1, 0)), -EINVAL, "lastOffsetDelta < count-1");
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 3, -1, 0)), -EINVAL, "negative lastOffsetDelta");
}

Test(batch, parse_rejects_record_varint_running_past_the_end)
{
    struct raw r = {.len = 0};
    raw_good(&r, 0);
    r.bytes[r.len++] = 0x80; /* a length varint whose continuation never comes */
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 2, 1, 0)), -EINVAL);

    /* A timestamp varint that runs past the end of its record body. */
    struct raw t = {.len = 0};
    uint8_t body[] = {6, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    raw_put(&t, body, sizeof(body));
    cr_assert_eq(parse(buf, raw_batch(buf, &t, 1, 0, 0)), -EINVAL);
}

Test(batch, parse_rejects_key_length_past_the_end)
{
    struct raw k = {.len = 0};
    /* Length prefix honest about the body, but the key claims 50 bytes of it. */
    struct raw body = {.len = 0};
    body.bytes[body.len++] = 0;
    raw_varint(&body, 0);
    raw_varint(&body, 0);
    raw_varint(&body, 50);
    raw_put(&body, "abc", 3);
    raw_varint(&k, (int64_t)body.len);
    raw_put(&k, body.bytes, body.len);
    cr_assert_eq(parse(buf, raw_batch(buf, &k, 1, 0, 0)), -EINVAL);

    struct raw v = {.len = 0};
    raw_record(&v, 0, 3, 5, 0, NULL, +40); /* length prefix past the batch */
    cr_assert_eq(parse(buf, raw_batch(buf, &v, 1, 0, 0)), -EINVAL);
}

Test(batch, parse_rejects_trailing_garbage)
{
    struct raw r = {.len = 0};
    raw_good(&r, 0);
    raw_good(&r, 1);
    r.bytes[r.len++] = 0;
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 2, 1, 0)), -EINVAL, "one stray byte");
    raw_good(&r, 2);
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 2, 1, 0)), -EINVAL, "an uncounted record");
}

Test(batch, parse_rejects_negative_lengths_other_than_minus_one)
{
    struct raw r = {.len = 0};
    raw_record(&r, 0, -2, 5, 0, NULL, 0);
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 1, 0, 0)), -EINVAL, "key length -2");
    r.len = 0;
    raw_record(&r, 0, 3, -7, 0, NULL, 0);
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 1, 0, 0)), -EINVAL, "value length -7");
    r.len = 0;
    raw_record(&r, 0, 3, 5, -1, NULL, 0);
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 1, 0, 0)), -EINVAL, "header count -1");

    struct raw h = {.len = 0};
    raw_varint(&h, -1); /* a null header key */
    raw_varint(&h, 1);
    raw_put(&h, "v", 1);
    r.len = 0;
    raw_record(&r, 0, 3, 5, 1, &h, 0);
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 1, 0, 0)), -EINVAL, "header key length -1");
    h.len = 0;
    raw_varint(&h, 1);
    raw_put(&h, "k", 1);
    raw_varint(&h, -2);
    r.len = 0;
    raw_record(&r, 0, 3, 5, 1, &h, 0);
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 1, 0, 0)), -EINVAL, "header value length -2");
    h.len = 0;
    raw_varint(&h, 1);
    raw_put(&h, "k", 1);
    raw_varint(&h, -1);
    r.len = 0;
    raw_record(&r, 0, 3, 5, 1, &h, 0);
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 1, 0, 0)), (int)(61 + r.len),
                 "a null header value is fine");

    r.len = 0;
    raw_varint(&r, -1); /* a negative record length */
    raw_put(&r, "\0\0\0\0\0\0", 6);
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 1, 0, 0)), -EINVAL, "record length -1");
}

Test(batch, parse_rejects_records_whose_length_disagrees_with_their_fields)
{
    struct raw r = {.len = 0};
    struct raw junk = {.len = 0};
    raw_put(&junk, "zz", 2);
    raw_record(&r, 0, 3, 5, 0, &junk, 0); /* two bytes after the headers */
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 1, 0, 0)), -EINVAL);
    r.len = 0;
    raw_record(&r, 0, 3, 5, 0, NULL, -1); /* length one short: header count spills */
    raw_good(&r, 1);
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 2, 1, 0)), -EINVAL);
    r.len = 0;
    raw_record(&r, 0, 3, 5, 4, NULL, 0); /* four headers promised, none present */
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 1, 0, 0)), -EINVAL);
}

Test(batch, parse_rejects_offset_deltas_out_of_order)
{
    struct raw r = {.len = 0};
    raw_good(&r, 0);
    raw_good(&r, 0);
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 2, 1, 0)), -EINVAL, "repeated delta");
    r.len = 0;
    raw_good(&r, 1);
    raw_good(&r, 0);
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 2, 1, 0)), -EINVAL, "decreasing");
    r.len = 0;
    raw_good(&r, -1);
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 1, 0, 0)), -EINVAL, "negative first delta");
    r.len = 0;
    raw_good(&r, 0);
    raw_good(&r, 5);
    cr_assert_eq(parse(buf, raw_batch(buf, &r, 2, 4, 0)), -EINVAL, "past lastOffsetDelta");
}

Test(batch, parse_accepts_compacted_batches_with_gaps_and_empty_ones)
{
    struct raw r = {.len = 0};
    raw_good(&r, 0);
    raw_good(&r, 2);
    raw_good(&r, 5);
    struct rv_batch_view v;
    size_t len = raw_batch(buf, &r, 3, 7, 0);
    cr_assert_eq(rv_batch_parse(buf, len, MAX_BATCH, &v), (int)len);
    cr_assert(!v.has_dense_offsets, "gaps are valid but not dense");
    cr_assert_eq(rv_batch_last_offset(&v), 107);
    struct rv_batch_record_iter it;
    struct rv_batch_record rec;
    rv_batch_record_iter_init(&it, &v, v.records, v.records_bytes);
    static const int64_t offsets[] = {100, 102, 105};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(rv_batch_record_iter_next(&it, &rec), 1);
        cr_assert_eq(rec.offset, offsets[i]);
    }
    r.len = 0;
    len = raw_batch(buf, &r, 0, 3, 0);
    cr_assert_eq(rv_batch_parse(buf, len, MAX_BATCH, &v), 61, "an empty batch left by compaction");
    cr_assert_eq(v.record_count, 0);
    cr_assert(!v.has_dense_offsets);
}

/* Back-to-back batches. */

Test(batch, split_counts_complete_batches_and_stops_at_a_partial_tail)
{
    size_t a = build_simple(buf, sizeof(buf), 3);
    size_t b = build_simple(buf + a, sizeof(buf) - a, 10);
    size_t c = build_simple(buf + a + b, sizeof(buf) - a - b, 1);
    size_t d = build_simple(buf + a + b + c, sizeof(buf) - a - b - c, 5);
    size_t whole = a + b + c;
    size_t count = 99;
    size_t bytes = 99;
    cr_assert_eq(rv_batch_split(buf, whole, MAX_BATCH, &count, &bytes), 0);
    cr_assert_eq(count, 3u);
    cr_assert_eq(bytes, whole);
    static const size_t tails[] = {1, 11, 12, 20, 61, 70};
    for (size_t i = 0; i < RV_ARRAY_LEN(tails); i++) {
        cr_assert_lt(tails[i], d);
        cr_assert_eq(rv_batch_split(buf, whole + tails[i], MAX_BATCH, &count, &bytes), 0,
                     "tail of %zu", tails[i]);
        cr_assert_eq(count, 3u);
        cr_assert_eq(bytes, whole, "the partial tail is left over");
    }
    cr_assert_eq(rv_batch_split(buf, 0, MAX_BATCH, &count, &bytes), 0);
    cr_assert_eq(count, 0u);
    cr_assert_eq(bytes, 0u);

    struct rv_batch_iter it;
    struct rv_batch_view v;
    rv_batch_iter_init(&it, buf, whole + 20, MAX_BATCH);
    cr_assert_eq(rv_batch_iter_next(&it, &v), 1);
    cr_assert_eq(v.record_count, 3);
    cr_assert_eq(rv_batch_iter_next(&it, &v), 1);
    cr_assert_eq(v.record_count, 10);
    cr_assert_eq(v.bytes, buf + a);
    cr_assert_eq(rv_batch_iter_next(&it, &v), 1);
    cr_assert_eq(rv_batch_iter_next(&it, &v), 0);
    cr_assert_eq(rv_batch_iter_rest_bytes(&it), 20u);
}

Test(batch, split_reports_a_corrupt_batch)
{
    size_t a = build_simple(buf, sizeof(buf), 3);
    size_t b = build_simple(buf + a, sizeof(buf) - a, 3);
    buf[a + 70] ^= 1;
    size_t count = 99;
    size_t bytes = 99;
    cr_assert_eq(rv_batch_split(buf, a + b, MAX_BATCH, &count, &bytes), -EBADMSG);
    cr_assert_eq(count, 99u, "outputs untouched on failure");
    buf[a + 70] ^= 1;
    cr_assert_eq(rv_batch_split(buf, a + b, a - 1, &count, &bytes), -EMSGSIZE,
                 "an oversized batch is an error even when it is the tail");
    store_be32(buf + a + 8, 10);
    cr_assert_eq(rv_batch_split(buf, a + b, MAX_BATCH, &count, &bytes), -EBADMSG,
                 "a short batchLength is never a partial tail");
}

/* Builder. */

Test(batch, builder_reports_enospc_and_stays_usable)
{
    uint8_t small[61 + 40];
    struct rv_batch_builder b;
    cr_assert_eq(rv_batch_builder_init(&b, small, sizeof(small), &default_params), 0);
    cr_assert_eq(rv_batch_builder_add(&b, 1, "k", 1, "0123456789", 10, NULL, 0), 0);
    static const char big[64] = "this value does not fit in the rest of the buffer at all";
    cr_assert_eq(rv_batch_builder_add(&b, 2, "k", 1, big, 40, NULL, 0), -ENOSPC);
    size_t len = 0;
    cr_assert_eq(rv_batch_builder_finish(&b, &len), 0);
    struct rv_batch_view v;
    cr_assert_eq(rv_batch_parse(small, len, MAX_BATCH, &v), (int)len);
    cr_assert_eq(v.record_count, 1);
    cr_assert_eq(v.max_timestamp, 1, "the refused record left no trace");
}

Test(batch, builder_needs_room_for_a_header_and_a_record)
{
    struct rv_batch_builder b;
    cr_assert_eq(rv_batch_builder_init(&b, buf, 60, &default_params), -ENOSPC);
    cr_assert_eq(rv_batch_builder_init(&b, buf, 61, &default_params), 0);
    size_t len = 0;
    cr_assert_eq(rv_batch_builder_finish(&b, &len), -EINVAL, "no records");
    cr_assert_eq(rv_batch_builder_finish_compressed(&b, RV_CODEC_LZ4, 0, buf2, sizeof(buf2), &len),
                 -EINVAL);
}

Test(batch, builder_add_after_finish_aborts, .signal = SIGABRT)
{
    size_t len = 0;
    struct rv_batch_builder b;
    cr_assert_eq(rv_batch_builder_init(&b, buf, sizeof(buf), &default_params), 0);
    cr_assert_eq(rv_batch_builder_add(&b, 1, NULL, -1, NULL, -1, NULL, 0), 0);
    cr_assert_eq(rv_batch_builder_finish(&b, &len), 0);
    int rc = rv_batch_builder_add(&b, 2, NULL, -1, NULL, -1, NULL, 0); /* must abort */
    cr_assert_fail("add after finish returned %d", rc);
}

/* Compressed batches. */

static void check_compressed_round_trip(enum rv_codec codec)
{
    struct rv_batch_record_header h = {
        .key = (const uint8_t *)"h", .key_len = 1, .value = (const uint8_t *)"hv", .value_len = 2};
    struct rv_batch_builder b;
    cr_assert_eq(rv_batch_builder_init(&b, buf, sizeof(buf), &default_params), 0);
    int n = 2000;
    for (int i = 0; i < n; i++) {
        char v[64];
        int vl = snprintf(v, sizeof(v), "{\"order\":%d,\"status\":\"paid\"}", i);
        cr_assert_eq(rv_batch_builder_add(&b, 7000 + i, "key", 3, v, vl, &h, i % 2), 0);
    }
    size_t records_bytes = b.pos - 61;
    size_t len = 0;
    size_t cap = rv_batch_compressed_bound(codec, records_bytes);
    cr_assert_leq(cap, sizeof(buf2));
    cr_assert_eq(rv_batch_builder_finish_compressed(&b, codec, rv_codec_default_level(codec), buf2,
                                                    cap, &len),
                 0);
    struct rv_batch_view v;
    cr_assert_eq(rv_batch_parse(buf2, len, MAX_BATCH, &v), (int)len, "%s", rv_codec_name(codec));
    cr_assert_eq(rv_batch_codec(&v), codec);
    cr_assert_eq(v.record_count, n);
    if (codec != RV_CODEC_NONE)
        cr_assert_lt(v.records_bytes, records_bytes / 2, "%s shrank it", rv_codec_name(codec));
    size_t plain_len = 0;
    cr_assert_eq(
        rv_codec_decompress(codec, v.records, v.records_bytes, buf, sizeof(buf), &plain_len), 0);
    cr_assert_eq(plain_len, records_bytes);
    cr_assert_eq(rv_batch_validate_records(&v, buf, plain_len), 0);
    cr_assert(v.has_dense_offsets);
    struct rv_batch_record_iter it;
    struct rv_batch_record r;
    rv_batch_record_iter_init(&it, &v, buf, plain_len);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(rv_batch_record_iter_next(&it, &r), 1);
        cr_assert_eq(r.offset, i);
        cr_assert_eq(r.timestamp_ms, 7000 + i);
        cr_assert_eq(r.header_count, (uint32_t)(i % 2));
    }
    cr_assert_eq(rv_batch_record_iter_next(&it, &r), 0);
}

Test(batch, compressed_batches_round_trip_with_every_codec)
{
    check_compressed_round_trip(RV_CODEC_NONE);
    check_compressed_round_trip(RV_CODEC_GZIP);
    check_compressed_round_trip(RV_CODEC_SNAPPY);
    check_compressed_round_trip(RV_CODEC_LZ4);
    check_compressed_round_trip(RV_CODEC_ZSTD);
}

Test(batch, compressed_finish_into_a_small_buffer_leaves_the_builder_usable)
{
    struct rv_batch_builder b;
    cr_assert_eq(rv_batch_builder_init(&b, buf, sizeof(buf), &default_params), 0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(rv_batch_builder_add(&b, i, "k", 1, "value value value", 17, NULL, 0), 0);
    size_t len = 0;
    cr_assert_eq(rv_batch_builder_finish_compressed(&b, RV_CODEC_ZSTD, 3, buf2, 70, &len), -ENOSPC);
    cr_assert_eq(rv_batch_builder_finish_compressed(&b, RV_CODEC_ZSTD, 3, buf2, 40, &len), -ENOSPC);
    cr_assert_eq(rv_batch_builder_finish_compressed(&b, RV_CODEC_ZSTD, 3, buf2, sizeof(buf2), &len),
                 0);
    cr_assert_gt(parse(buf2, len), 0);
}

Test(batch, compressed_records_are_walked_only_by_validate)
{
    /* Records that are garbage once decompressed, inside a batch whose CRC is right. */
    uint8_t junk[100];
    memset(junk, 0x7f, sizeof(junk));
    struct raw r = {.len = 0};
    size_t packed_len = 0;
    cr_assert_eq(
        rv_codec_compress(RV_CODEC_LZ4, junk, sizeof(junk), r.bytes, sizeof(r.bytes), &packed_len),
        0);
    r.len = packed_len;
    size_t len = raw_batch(buf, &r, 3, 2, RV_CODEC_LZ4);
    struct rv_batch_view v;
    cr_assert_eq(rv_batch_parse(buf, len, MAX_BATCH, &v), (int)len, "header and CRC are fine");
    size_t plain_len = 0;
    cr_assert_eq(
        rv_codec_decompress(RV_CODEC_LZ4, v.records, v.records_bytes, buf2, 1000, &plain_len), 0);
    cr_assert_eq(rv_batch_validate_records(&v, buf2, plain_len), -EINVAL);
}

/* Robustness: whatever the bytes, parse returns a size or one of the documented codes. */

static bool is_documented(int rc)
{
    return rc > 0 || rc == -EBADMSG || rc == -EMSGSIZE || rc == -EPROTONOSUPPORT ||
           rc == -ENOTSUP || rc == -EINVAL;
}

Test(batch, mutated_batches_with_valid_crcs_never_crash)
{
    struct rv_batch_record_header h = {
        .key = (const uint8_t *)"hk", .key_len = 2, .value = (const uint8_t *)"hv", .value_len = 2};
    struct rv_batch_builder b;
    cr_assert_eq(rv_batch_builder_init(&b, buf, sizeof(buf), &default_params), 0);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(rv_batch_builder_add(&b, i * 1000, "key", 3, "value", 5, &h, 1), 0);
    size_t len = 0;
    cr_assert_eq(rv_batch_builder_finish(&b, &len), 0);
    int accepted = 0;
    for (int round = 0; round < 100000; round++) {
        memcpy(buf2, buf, len);
        int flips = 1 + (int)(rng_next() % 3);
        for (int f = 0; f < flips; f++)
            buf2[23 + rng_next() % (len - 23)] = (uint8_t)rng_next();
        recrc(buf2);
        size_t cut = rng_next() % 4 == 0 ? rng_next() % (len + 1) : len;
        struct rv_batch_view v;
        int rc = rv_batch_parse(buf2, cut, MAX_BATCH, &v);
        cr_assert(is_documented(rc), "round %d: %d", round, rc);
        if (rc <= 0)
            continue;
        accepted++;
        struct rv_batch_record_iter it;
        struct rv_batch_record rec;
        rv_batch_record_iter_init(&it, &v, v.records, v.records_bytes);
        while ((rc = rv_batch_record_iter_next(&it, &rec)) > 0) {
            struct rv_batch_header_iter hi;
            struct rv_batch_record_header got;
            rv_batch_header_iter_init(&hi, &rec);
            while ((rc = rv_batch_header_iter_next(&hi, &got)) > 0) {
            }
            cr_assert_eq(rc, 0, "headers of an accepted batch decode");
        }
        cr_assert_eq(rc, 0, "records of an accepted batch decode");
    }
    cr_assert_gt(accepted, 0, "some mutations (timestamps, values) stay valid");
}

/* Batches captured from librdkafka 2.0.2 (see tests/data/batches/README.md). The
 * producer sent, for i in 0..19: key "key-<i>" (null when i % 5 == 3), value
 * "value-<i>-" + "lorem ipsum " x i (null when i % 7 == 4, empty when i == 6),
 * headers [("h1", "v<i>"), ("h2", null)] when i % 3 == 0, timestamp 1700000000000 +
 * 1000 i. */

#define CAPTURE_RECORDS 20

static size_t read_file(const char *path, uint8_t *out, size_t cap)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s (tests run from the project root)", path);
    size_t n = fread(out, 1, cap, f);
    cr_assert(feof(f), "%s is larger than %zu bytes", path, cap);
    fclose(f);
    return n;
}

static void check_captured_record(const struct rv_batch_record *r, int i)
{
    char want[512];
    cr_assert_eq(r->timestamp_ms, 1700000000000 + 1000 * (int64_t)i, "record %d", i);
    if (i % 5 == 3) {
        cr_assert_eq(r->key_len, -1, "record %d: null key", i);
    } else {
        int n = snprintf(want, sizeof(want), "key-%d", i);
        cr_assert_eq(r->key_len, n);
        cr_assert_eq(memcmp(r->key, want, (size_t)n), 0);
    }
    if (i % 7 == 4) {
        cr_assert_eq(r->value_len, -1, "record %d: null value", i);
    } else if (i == 6) {
        cr_assert_eq(r->value_len, 0, "record 6: empty value");
    } else {
        int n = snprintf(want, sizeof(want), "value-%d-", i);
        for (int k = 0; k < i; k++)
            n += snprintf(want + n, sizeof(want) - (size_t)n, "lorem ipsum ");
        cr_assert_eq(r->value_len, n, "record %d", i);
        cr_assert_eq(memcmp(r->value, want, (size_t)n), 0);
    }
    cr_assert_eq(r->header_count, i % 3 == 0 ? 2u : 0u, "record %d", i);
    if (i % 3 != 0)
        return;
    struct rv_batch_header_iter hi;
    struct rv_batch_record_header h;
    rv_batch_header_iter_init(&hi, r);
    cr_assert_eq(rv_batch_header_iter_next(&hi, &h), 1);
    int n = snprintf(want, sizeof(want), "v%d", i);
    cr_assert(h.key_len == 2 && memcmp(h.key, "h1", 2) == 0);
    cr_assert(h.value_len == n && memcmp(h.value, want, (size_t)n) == 0);
    cr_assert_eq(rv_batch_header_iter_next(&hi, &h), 1);
    cr_assert(h.key_len == 2 && memcmp(h.key, "h2", 2) == 0);
    cr_assert_eq(h.value_len, -1);
    cr_assert_eq(rv_batch_header_iter_next(&hi, &h), 0);
}

static void check_capture(const char *name, enum rv_codec codec)
{
    char path[128];
    snprintf(path, sizeof(path), "tests/data/batches/%s.bin", name);
    size_t len = read_file(path, buf2, sizeof(buf2));
    struct rv_batch_view v;
    cr_assert_eq(rv_batch_parse(buf2, len, MAX_BATCH, &v), (int)len, "%s: one whole batch", name);
    cr_assert_eq(rv_batch_codec(&v), codec, "%s", name);
    cr_assert_eq(v.record_count, CAPTURE_RECORDS);
    cr_assert_eq(v.base_timestamp, 1700000000000);
    cr_assert_eq(v.max_timestamp, 1700000000000 + 1000 * (CAPTURE_RECORDS - 1));
    size_t plain_len = 0;
    cr_assert_eq(
        rv_codec_decompress(codec, v.records, v.records_bytes, buf, sizeof(buf), &plain_len), 0,
        "%s: decompress", name);
    cr_assert_eq(rv_batch_validate_records(&v, buf, plain_len), 0, "%s", name);
    cr_assert(v.has_dense_offsets);
    struct rv_batch_record_iter it;
    struct rv_batch_record r;
    rv_batch_record_iter_init(&it, &v, buf, plain_len);
    for (int i = 0; i < CAPTURE_RECORDS; i++) {
        cr_assert_eq(rv_batch_record_iter_next(&it, &r), 1, "%s record %d", name, i);
        check_captured_record(&r, i);
    }
    cr_assert_eq(rv_batch_record_iter_next(&it, &r), 0);
}

Test(batch, reads_librdkafka_uncompressed_batch)
{
    check_capture("none", RV_CODEC_NONE);
}

Test(batch, reads_librdkafka_gzip_batch)
{
    check_capture("gzip", RV_CODEC_GZIP);
}

Test(batch, reads_librdkafka_snappy_batch)
{
    check_capture("snappy", RV_CODEC_SNAPPY);
}

Test(batch, reads_librdkafka_lz4_batch)
{
    check_capture("lz4", RV_CODEC_LZ4);
}

Test(batch, reads_librdkafka_zstd_batch)
{
    check_capture("zstd", RV_CODEC_ZSTD);
}

Test(batch, a_built_batch_parses_by_its_header_alone)
{
    uint8_t bb[4096];
    size_t len = build_simple(bb, sizeof(bb), 5);
    struct rv_batch_view full, built;
    cr_assert_eq(rv_batch_parse(bb, len, sizeof(bb), &full), (int)len);
    cr_assert_eq(rv_batch_parse_built(bb, len, &built), (int)len);
    cr_assert_eq(built.record_count, full.record_count);
    cr_assert_eq(built.last_offset_delta, full.last_offset_delta);
    cr_assert_eq(built.max_timestamp, full.max_timestamp);
    cr_assert_eq(built.records_bytes, full.records_bytes);
    cr_assert(built.has_dense_offsets);
    /* Sizes that do not add up are refused (the CRC is not looked at). */
    cr_assert_eq(rv_batch_parse_built(bb, len - 1, &built), -EBADMSG);
    cr_assert_eq(rv_batch_parse_built(bb, 10, &built), -EBADMSG);
}
