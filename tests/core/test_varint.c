/* tests/core/test_varint.c - varint and zigzag encodings, round trips and bad input. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/varint.h"

TestSuite(varint);

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static void expect_u64_bytes(uint64_t v, const uint8_t *want, size_t want_len)
{
    uint8_t out[RV_VARINT_U64_BYTES_MAX];
    size_t n = rv_varint_encode_u64(out, v);
    cr_assert_eq(n, want_len, "%llu: %zu bytes, want %zu", (unsigned long long)v, n, want_len);
    cr_assert_arr_eq(out, want, want_len, "%llu: wrong bytes", (unsigned long long)v);
    cr_assert_eq(rv_varint_size_u64(v), want_len);
}

Test(varint, encodes_known_unsigned_values)
{
    expect_u64_bytes(0, (const uint8_t[]){0x00}, 1);
    expect_u64_bytes(1, (const uint8_t[]){0x01}, 1);
    expect_u64_bytes(127, (const uint8_t[]){0x7F}, 1);
    expect_u64_bytes(128, (const uint8_t[]){0x80, 0x01}, 2);
    expect_u64_bytes(300, (const uint8_t[]){0xAC, 0x02}, 2);
    expect_u64_bytes(16383, (const uint8_t[]){0xFF, 0x7F}, 2);
    expect_u64_bytes(16384, (const uint8_t[]){0x80, 0x80, 0x01}, 3);
    expect_u64_bytes(UINT32_MAX, (const uint8_t[]){0xFF, 0xFF, 0xFF, 0xFF, 0x0F}, 5);
    expect_u64_bytes(UINT64_MAX,
                     (const uint8_t[]){0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01},
                     10);
}

Test(varint, zigzag_maps_small_magnitudes_to_small_codes)
{
    cr_assert_eq(rv_zigzag_encode64(0), 0u);
    cr_assert_eq(rv_zigzag_encode64(-1), 1u);
    cr_assert_eq(rv_zigzag_encode64(1), 2u);
    cr_assert_eq(rv_zigzag_encode64(-2), 3u);
    cr_assert_eq(rv_zigzag_encode64(INT64_MAX), UINT64_MAX - 1);
    cr_assert_eq(rv_zigzag_encode64(INT64_MIN), UINT64_MAX);
    cr_assert_eq(rv_zigzag_encode32(-1), 1u);
    cr_assert_eq(rv_zigzag_encode32(INT32_MAX), UINT32_MAX - 1);
    cr_assert_eq(rv_zigzag_encode32(INT32_MIN), UINT32_MAX);
    cr_assert_eq(rv_zigzag_decode64(UINT64_MAX), INT64_MIN);
    cr_assert_eq(rv_zigzag_decode32(UINT32_MAX), INT32_MIN);

    uint8_t out[RV_VARINT_U64_BYTES_MAX];
    cr_assert_eq(rv_varint_encode_i64(out, -1), 1u);
    cr_assert_eq(out[0], 0x01);
    cr_assert_eq(rv_varint_encode_i64(out, 1), 1u);
    cr_assert_eq(out[0], 0x02);
    cr_assert_eq(rv_varint_encode_i32(out, -64), 1u);
    cr_assert_eq(out[0], 0x7F);
    cr_assert_eq(rv_varint_encode_i32(out, 64), 2u);
    cr_assert_eq(out[0], 0x80);
    cr_assert_eq(out[1], 0x01);
}

Test(varint, round_trips_signed_edge_values)
{
    const int64_t v64[] = {0,
                           1,
                           -1,
                           63,
                           64,
                           -64,
                           -65,
                           127,
                           128,
                           -128,
                           -129,
                           INT32_MIN,
                           INT32_MAX,
                           INT64_MIN,
                           INT64_MAX,
                           INT64_MIN + 1,
                           (int64_t)1 << 62,
                           -((int64_t)1 << 62)};
    for (size_t i = 0; i < sizeof(v64) / sizeof(v64[0]); i++) {
        uint8_t buf[RV_VARINT_U64_BYTES_MAX];
        size_t n = rv_varint_encode_i64(buf, v64[i]);
        cr_assert_eq(n, rv_varint_size_i64(v64[i]));
        int64_t back = 0;
        cr_assert_eq(rv_varint_decode_i64(buf, n, &back), (int)n);
        cr_assert_eq(back, v64[i], "%lld", (long long)v64[i]);
    }
    const int32_t v32[] = {0,   1,   -1,  63,        64,        -64,
                           -65, 127, 128, INT32_MIN, INT32_MAX, INT32_MIN + 1};
    for (size_t i = 0; i < sizeof(v32) / sizeof(v32[0]); i++) {
        uint8_t buf[RV_VARINT_U32_BYTES_MAX];
        size_t n = rv_varint_encode_i32(buf, v32[i]);
        cr_assert_eq(n, rv_varint_size_i32(v32[i]));
        cr_assert_leq(n, (size_t)RV_VARINT_U32_BYTES_MAX);
        int32_t back = 0;
        cr_assert_eq(rv_varint_decode_i32(buf, n, &back), (int)n);
        cr_assert_eq(back, v32[i], "%d", v32[i]);
    }
    /* The 1- and 2-byte boundaries of zigzag. */
    cr_assert_eq(rv_varint_size_i64(-64), 1u);
    cr_assert_eq(rv_varint_size_i64(63), 1u);
    cr_assert_eq(rv_varint_size_i64(-65), 2u);
    cr_assert_eq(rv_varint_size_i64(64), 2u);
}

Test(varint, round_trips_unsigned_values_of_every_width)
{
    const uint64_t seed = 0x5EED0001;
    rng_state = seed;
    cr_log_info("seed %llu", (unsigned long long)seed);
    for (unsigned bits = 0; bits <= 64; bits++) {
        for (int round = 0; round < 64; round++) {
            /* Exactly `bits` significant bits: the top one is forced on. */
            uint64_t v = bits == 0 ? 0 : (rng_next() >> (64 - bits)) | (1ULL << (bits - 1));
            if (round == 0 && bits > 0)
                v = bits == 64 ? UINT64_MAX : ((uint64_t)1 << bits) - 1;
            uint8_t buf[RV_VARINT_U64_BYTES_MAX + 1];
            buf[RV_VARINT_U64_BYTES_MAX] = 0xEE;
            size_t n = rv_varint_encode_u64(buf, v);
            cr_assert_eq(buf[RV_VARINT_U64_BYTES_MAX], 0xEE, "wrote past 10 bytes");
            cr_assert_eq(n, rv_varint_size_u64(v));
            cr_assert_eq(n, bits <= 7 ? 1u : (bits + 6) / 7, "bits %u", bits);
            uint64_t back = 0;
            /* Trailing bytes must not be consumed. */
            buf[n] = 0x7F;
            cr_assert_eq(rv_varint_decode_u64(buf, n + 1, &back), (int)n);
            cr_assert_eq(back, v);
            if (v <= UINT32_MAX) {
                uint32_t back32 = 0;
                cr_assert_eq(rv_varint_decode_u32(buf, n, &back32), (int)n);
                cr_assert_eq(back32, (uint32_t)v);
                cr_assert_eq(rv_varint_size_u32((uint32_t)v), n);
            }
        }
    }
}

Test(varint, rejects_truncated_input)
{
    uint8_t buf[RV_VARINT_U64_BYTES_MAX];
    size_t n = rv_varint_encode_u64(buf, UINT64_MAX);
    uint64_t v = 12345;
    for (size_t len = 0; len < n; len++)
        cr_assert_eq(rv_varint_decode_u64(buf, len, &v), -EBADMSG, "len %zu", len);
    cr_assert_eq(v, 12345u, "out written on failure");
    uint32_t v32 = 7;
    n = rv_varint_encode_u32(buf, 300);
    cr_assert_eq(rv_varint_decode_u32(buf, 1, &v32), -EBADMSG);
    cr_assert_eq(rv_varint_decode_u32(buf, 0, &v32), -EBADMSG);
    cr_assert_eq(rv_varint_decode_u32(NULL, 0, &v32), -EBADMSG);
    cr_assert_eq(v32, 7u);
    int64_t i64 = 0;
    int32_t i32 = 0;
    cr_assert_eq(rv_varint_decode_i64((const uint8_t[]){0x80}, 1, &i64), -EBADMSG);
    cr_assert_eq(rv_varint_decode_i32((const uint8_t[]){0xFF, 0xFF}, 2, &i32), -EBADMSG);
}

Test(varint, rejects_overlong_input)
{
    /* Eleven bytes, all with the continuation bit. */
    uint8_t buf[16];
    memset(buf, 0x80, sizeof(buf));
    uint64_t v;
    cr_assert_eq(rv_varint_decode_u64(buf, sizeof(buf), &v), -EBADMSG);
    /* Ten bytes whose last still says "more". */
    buf[9] = 0x81;
    buf[10] = 0x00;
    cr_assert_eq(rv_varint_decode_u64(buf, sizeof(buf), &v), -EBADMSG);
    /* Six bytes for a uint32. */
    uint32_t v32;
    buf[5] = 0x00;
    cr_assert_eq(rv_varint_decode_u32(buf, sizeof(buf), &v32), -EBADMSG);
    int32_t i32;
    cr_assert_eq(rv_varint_decode_i32(buf, sizeof(buf), &i32), -EBADMSG);
}

Test(varint, rejects_bits_beyond_the_type_width)
{
    uint64_t v;
    /* 10th byte 0x02 would be bit 64. */
    const uint8_t over64[] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02};
    cr_assert_eq(rv_varint_decode_u64(over64, sizeof(over64), &v), -EBADMSG);
    const uint8_t max64[] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01};
    cr_assert_eq(rv_varint_decode_u64(max64, sizeof(max64), &v), 10);
    cr_assert_eq(v, UINT64_MAX);
    /* 5th byte 0x10 would be bit 32. */
    uint32_t v32;
    const uint8_t over32[] = {0xFF, 0xFF, 0xFF, 0xFF, 0x10};
    cr_assert_eq(rv_varint_decode_u32(over32, sizeof(over32), &v32), -EBADMSG);
    const uint8_t max32[] = {0xFF, 0xFF, 0xFF, 0xFF, 0x0F};
    cr_assert_eq(rv_varint_decode_u32(max32, sizeof(max32), &v32), 5);
    cr_assert_eq(v32, UINT32_MAX);
    /* A u64-valid 5-byte value that overflows 32 bits. */
    uint8_t buf[RV_VARINT_U64_BYTES_MAX];
    size_t n = rv_varint_encode_u64(buf, (uint64_t)UINT32_MAX + 1);
    cr_assert_eq(rv_varint_decode_u32(buf, n, &v32), -EBADMSG);
}

Test(varint, accepts_non_minimal_encodings)
{
    uint64_t v = 99;
    const uint8_t zero_padded[] = {0x80, 0x80, 0x00};
    cr_assert_eq(rv_varint_decode_u64(zero_padded, sizeof(zero_padded), &v), 3);
    cr_assert_eq(v, 0u);
    uint32_t v32 = 99;
    const uint8_t one_padded[] = {0x81, 0x80, 0x80, 0x80, 0x00};
    cr_assert_eq(rv_varint_decode_u32(one_padded, sizeof(one_padded), &v32), 5);
    cr_assert_eq(v32, 1u);
}

Test(varint, never_reads_past_len)
{
    /* Place the bytes right before an inaccessible page: a read past len faults. */
    long page_bytes = sysconf(_SC_PAGESIZE);
    cr_assert_gt(page_bytes, 0);
    uint8_t *map = mmap(NULL, 2 * (size_t)page_bytes, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(map, MAP_FAILED);
    cr_assert_eq(mprotect(map + page_bytes, (size_t)page_bytes, PROT_NONE), 0);
    uint8_t *end = map + page_bytes;
    for (size_t len = 0; len <= 12; len++) {
        /* All continuation bytes: the decoder must stop at len, not look further. */
        memset(end - len, 0xFF, len);
        uint64_t v;
        uint32_t v32;
        cr_assert_eq(rv_varint_decode_u64(end - len, len, &v), -EBADMSG, "len %zu", len);
        cr_assert_eq(rv_varint_decode_u32(end - len, len, &v32), -EBADMSG, "len %zu", len);
    }
    uint8_t tmp[RV_VARINT_U64_BYTES_MAX];
    size_t n = rv_varint_encode_u64(tmp, 1ULL << 40);
    memcpy(end - n, tmp, n);
    uint64_t v = 0;
    cr_assert_eq(rv_varint_decode_u64(end - n, n, &v), (int)n);
    cr_assert_eq(v, 1ULL << 40);
    munmap(map, 2 * (size_t)page_bytes);
}
