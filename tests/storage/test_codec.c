/* tests/storage/test_codec.c - compression codecs: round trips, Kafka framing, output
 * bounds (decompression bombs), corrupt input, and the foreign framings we must read. */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <lz4frame.h>
#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

#include "storage/codec.h"

TestSuite(codec);

static const enum rv_codec all_codecs[] = {RV_CODEC_NONE, RV_CODEC_GZIP, RV_CODEC_SNAPPY,
                                           RV_CODEC_LZ4, RV_CODEC_ZSTD};
static const enum rv_codec packing_codecs[] = {RV_CODEC_GZIP, RV_CODEC_SNAPPY, RV_CODEC_LZ4,
                                               RV_CODEC_ZSTD};

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rng_next();
}

/* Log-like text: compresses well but not trivially. */
static void fill_text(uint8_t *p, size_t n)
{
    static const char *const words[] = {"INFO ",       "order=", "user ",    "payment ",    "ok ",
                                        "latency_ms=", "\n",     "shard-3 ", "GET /api/v1/"};
    size_t pos = 0;
    while (pos < n) {
        const char *w = words[rng_next() % 9];
        for (size_t i = 0; w[i] != 0 && pos < n; i++)
            p[pos++] = (uint8_t)w[i];
        if (pos < n)
            p[pos++] = (uint8_t)('0' + rng_next() % 10);
    }
}

/* Compress with c at level, decompress into exactly in_len bytes, compare. */
static void round_trip_level(enum rv_codec c, int level, const uint8_t *in, size_t in_len)
{
    size_t cap = rv_codec_compress_bound(c, in_len);
    uint8_t *packed = malloc(cap + 1);
    uint8_t *out = malloc(in_len + 1);
    size_t packed_len = 0;
    size_t out_len = 0;
    int rc = rv_codec_compress_level(c, level, in, in_len, packed, cap, &packed_len);
    cr_assert_eq(rc, 0, "%s level %d, %zu bytes: compress %d", rv_codec_name(c), level, in_len, rc);
    cr_assert_leq(packed_len, cap);
    rc = rv_codec_decompress(c, packed, packed_len, out, in_len, &out_len);
    cr_assert_eq(rc, 0, "%s level %d, %zu bytes: decompress %d", rv_codec_name(c), level, in_len,
                 rc);
    cr_assert_eq(out_len, in_len, "%s: %zu bytes back, want %zu", rv_codec_name(c), out_len,
                 in_len);
    if (in_len > 0)
        cr_assert_eq(memcmp(out, in, in_len), 0, "%s: bytes differ", rv_codec_name(c));
    free(packed);
    free(out);
}

static void round_trip(enum rv_codec c, const uint8_t *in, size_t in_len)
{
    round_trip_level(c, rv_codec_default_level(c), in, in_len);
}

Test(codec, names_map_both_ways)
{
    static const char *const names[] = {"none", "gzip", "snappy", "lz4", "zstd"};
    for (int i = 0; i < 5; i++) {
        enum rv_codec c = RV_CODEC_ZSTD;
        cr_assert_eq(rv_codec_from_name(names[i], &c), 0);
        cr_assert_eq((int)c, i);
        cr_assert_str_eq(rv_codec_name(c), names[i]);
    }
    enum rv_codec c = RV_CODEC_LZ4;
    cr_assert_eq(rv_codec_from_name("GZIP", &c), -EINVAL);
    cr_assert_eq(rv_codec_from_name("brotli", &c), -EINVAL);
    cr_assert_eq(rv_codec_from_name("", &c), -EINVAL);
    cr_assert_eq(c, RV_CODEC_LZ4, "failure left *out alone");
    cr_assert_str_eq(rv_codec_name((enum rv_codec)7), "?");
    cr_assert(!rv_codec_is_valid(5));
    cr_assert(!rv_codec_is_valid(-1));
}

Test(codec, default_levels_are_the_documented_ones)
{
    cr_assert_eq(rv_codec_default_level(RV_CODEC_GZIP), 1);
    cr_assert_eq(rv_codec_default_level(RV_CODEC_LZ4), 0);
    cr_assert_eq(rv_codec_default_level(RV_CODEC_ZSTD), 3);
    cr_assert_eq(rv_codec_default_level(RV_CODEC_SNAPPY), 0);
    cr_assert_eq(rv_codec_default_level(RV_CODEC_NONE), 0);
}

Test(codec, every_codec_round_trips_random_and_text_data)
{
    static const size_t sizes[] = {0, 1, 7, 100, 4096, 32767, 32768, 32769, 65537, 300000};
    size_t max = 300000;
    uint8_t *random = malloc(max);
    uint8_t *text = malloc(max);
    fill_random(random, max);
    fill_text(text, max);
    for (size_t ci = 0; ci < RV_ARRAY_LEN(all_codecs); ci++) {
        for (size_t si = 0; si < RV_ARRAY_LEN(sizes); si++) {
            round_trip(all_codecs[ci], random, sizes[si]);
            round_trip(all_codecs[ci], text, sizes[si]);
        }
    }
    free(random);
    free(text);
}

Test(codec, every_level_round_trips)
{
    size_t n = 100000;
    uint8_t *text = malloc(n);
    fill_text(text, n);
    for (int level = 1; level <= 9; level++)
        round_trip_level(RV_CODEC_GZIP, level, text, n);
    for (int level = 0; level <= 12; level += 3)
        round_trip_level(RV_CODEC_LZ4, level, text, n);
    static const int zstd_levels[] = {-5, 1, 3, 9, 19};
    for (size_t i = 0; i < RV_ARRAY_LEN(zstd_levels); i++)
        round_trip_level(RV_CODEC_ZSTD, zstd_levels[i], text, n);
    free(text);
}

Test(codec, text_actually_shrinks)
{
    size_t n = 200000;
    uint8_t *text = malloc(n);
    fill_text(text, n);
    for (size_t ci = 0; ci < RV_ARRAY_LEN(packing_codecs); ci++) {
        enum rv_codec c = packing_codecs[ci];
        size_t cap = rv_codec_compress_bound(c, n);
        uint8_t *packed = malloc(cap);
        size_t packed_len = 0;
        cr_assert_eq(rv_codec_compress(c, text, n, packed, cap, &packed_len), 0);
        cr_assert_lt(packed_len, n / 2, "%s: %zu of %zu bytes", rv_codec_name(c), packed_len, n);
        free(packed);
    }
    free(text);
}

Test(codec, rejects_levels_a_codec_lacks)
{
    uint8_t in[16] = {0};
    uint8_t out[256];
    size_t len = 0;
    cr_assert_eq(rv_codec_compress_level(RV_CODEC_GZIP, 0, in, 16, out, 256, &len), -EINVAL);
    cr_assert_eq(rv_codec_compress_level(RV_CODEC_GZIP, 10, in, 16, out, 256, &len), -EINVAL);
    cr_assert_eq(rv_codec_compress_level(RV_CODEC_SNAPPY, 1, in, 16, out, 256, &len), -EINVAL);
    cr_assert_eq(rv_codec_compress_level(RV_CODEC_LZ4, 13, in, 16, out, 256, &len), -EINVAL);
    cr_assert_eq(rv_codec_compress_level(RV_CODEC_ZSTD, 23, in, 16, out, 256, &len), -EINVAL);
    cr_assert_eq(rv_codec_compress((enum rv_codec)5, in, 16, out, 256, &len), -EINVAL);
    cr_assert_eq(rv_codec_decompress((enum rv_codec)6, in, 16, out, 256, &len), -EINVAL);
    cr_assert_eq(len, 0u, "failures leave *out_len alone");
}

Test(codec, bound_is_enough_for_incompressible_data)
{
    static const size_t sizes[] = {0, 1, 31, 65535, 65536, 65537, 1 << 20};
    uint8_t *in = malloc(1 << 20);
    fill_random(in, 1 << 20);
    for (size_t ci = 0; ci < RV_ARRAY_LEN(all_codecs); ci++) {
        enum rv_codec c = all_codecs[ci];
        for (size_t si = 0; si < RV_ARRAY_LEN(sizes); si++) {
            size_t cap = rv_codec_compress_bound(c, sizes[si]);
            uint8_t *out = malloc(cap);
            size_t len = 0;
            int rc = rv_codec_compress(c, in, sizes[si], out, cap, &len);
            cr_assert_eq(rc, 0, "%s %zu bytes: %d", rv_codec_name(c), sizes[si], rc);
            if (c == RV_CODEC_GZIP) {
                /* zlib's levels take the same bound. */
                rc = rv_codec_compress_level(c, 9, in, sizes[si], out, cap, &len);
                cr_assert_eq(rc, 0, "gzip level 9 %zu bytes: %d", sizes[si], rc);
            }
            free(out);
        }
    }
    free(in);
}

Test(codec, compress_into_a_small_buffer_is_enospc)
{
    size_t n = 50000;
    uint8_t *in = malloc(n);
    uint8_t out[64];
    fill_random(in, n);
    for (size_t ci = 0; ci < RV_ARRAY_LEN(all_codecs); ci++) {
        size_t len = 12345;
        int rc = rv_codec_compress(all_codecs[ci], in, n, out, sizeof(out), &len);
        cr_assert_eq(rc, -ENOSPC, "%s: %d", rv_codec_name(all_codecs[ci]), rc);
        cr_assert_eq(len, 12345u);
    }
    size_t len = 0;
    cr_assert_eq(rv_codec_compress_level(RV_CODEC_GZIP, 6, in, n, out, sizeof(out), &len), -ENOSPC);
    free(in);
}

/* Decompressing into one byte less than the original fails cleanly, for every codec. */
Test(codec, output_one_byte_over_the_cap_is_emsgsize)
{
    size_t n = 70000;
    uint8_t *text = malloc(n);
    fill_text(text, n);
    for (size_t ci = 0; ci < RV_ARRAY_LEN(all_codecs); ci++) {
        enum rv_codec c = all_codecs[ci];
        size_t cap = rv_codec_compress_bound(c, n);
        uint8_t *packed = malloc(cap);
        uint8_t *out = malloc(n);
        size_t packed_len = 0;
        size_t out_len = 777;
        cr_assert_eq(rv_codec_compress(c, text, n, packed, cap, &packed_len), 0);
        int rc = rv_codec_decompress(c, packed, packed_len, out, n - 1, &out_len);
        cr_assert_eq(rc, -EMSGSIZE, "%s: %d", rv_codec_name(c), rc);
        cr_assert_eq(out_len, 777u);
        rc = rv_codec_decompress(c, packed, packed_len, out, 0, &out_len);
        cr_assert_eq(rc, -EMSGSIZE, "%s into 0 bytes: %d", rv_codec_name(c), rc);
        free(packed);
        free(out);
    }
    free(text);
}

#define BOMB_BYTES   (100u << 20)
#define BOMB_OUT_CAP (1u << 20)
#define CHUNK_BYTES  (64u << 10)

static const uint8_t zero_chunk[CHUNK_BYTES];

/* 100 MB of zeros as one gzip member, made in 64 KiB steps. */
static uint8_t *bomb_gzip(size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    cr_assert_eq(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = 1 << 20;
    uint8_t *out = malloc(cap);
    z.next_out = out;
    z.avail_out = (uInt)cap;
    for (size_t done = 0; done < BOMB_BYTES; done += CHUNK_BYTES) {
        z.next_in = (Bytef *)zero_chunk;
        z.avail_in = CHUNK_BYTES;
        cr_assert_eq(deflate(&z, done + CHUNK_BYTES == BOMB_BYTES ? Z_FINISH : Z_NO_FLUSH),
                     done + CHUNK_BYTES == BOMB_BYTES ? Z_STREAM_END : Z_OK);
    }
    *out_len = z.total_out;
    deflateEnd(&z);
    return out;
}

/* 100 MB of zeros as one zstd frame without a content size. */
static uint8_t *bomb_zstd(size_t *out_len)
{
    ZSTD_CCtx *z = ZSTD_createCCtx();
    size_t cap = 1 << 20;
    uint8_t *out = malloc(cap);
    ZSTD_outBuffer ob = {out, cap, 0};
    for (size_t done = 0; done < BOMB_BYTES; done += CHUNK_BYTES) {
        ZSTD_inBuffer ib = {zero_chunk, CHUNK_BYTES, 0};
        bool is_last = done + CHUNK_BYTES == BOMB_BYTES;
        size_t rc;
        do {
            rc = ZSTD_compressStream2(z, &ob, &ib, is_last ? ZSTD_e_end : ZSTD_e_continue);
            cr_assert(!ZSTD_isError(rc));
        } while (ib.pos < ib.size || (is_last && rc != 0));
    }
    ZSTD_freeCCtx(z);
    *out_len = ob.pos;
    return out;
}

/* 100 MB of zeros as one lz4 frame with independent 64 KiB blocks. */
static uint8_t *bomb_lz4(size_t *out_len)
{
    LZ4F_cctx *z = NULL;
    cr_assert(!LZ4F_isError(LZ4F_createCompressionContext(&z, LZ4F_VERSION)));
    size_t cap = 4 << 20;
    uint8_t *out = malloc(cap);
    size_t pos = LZ4F_compressBegin(z, out, cap, NULL);
    cr_assert(!LZ4F_isError(pos));
    for (size_t done = 0; done < BOMB_BYTES; done += CHUNK_BYTES) {
        size_t n = LZ4F_compressUpdate(z, out + pos, cap - pos, zero_chunk, CHUNK_BYTES, NULL);
        cr_assert(!LZ4F_isError(n));
        pos += n;
    }
    size_t n = LZ4F_compressEnd(z, out + pos, cap - pos, NULL);
    cr_assert(!LZ4F_isError(n));
    LZ4F_freeCompressionContext(z);
    *out_len = pos + n;
    return out;
}

static void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* 100 MB of zeros in xerial framing: one compressed 32 KiB block repeated. */
static uint8_t *bomb_snappy(size_t *out_len)
{
    uint8_t block[64 << 10];
    size_t block_len = sizeof(block);
    cr_assert_eq(snappy_compress((const char *)zero_chunk, 32768, (char *)block, &block_len),
                 SNAPPY_OK);
    size_t chunks = BOMB_BYTES / 32768;
    uint8_t *out = malloc(16 + chunks * (4 + block_len));
    memcpy(out, "\x82SNAPPY\0\0\0\0\1\0\0\0\1", 16);
    size_t pos = 16;
    for (size_t i = 0; i < chunks; i++) {
        store_be32(out + pos, (uint32_t)block_len);
        memcpy(out + pos + 4, block, block_len);
        pos += 4 + block_len;
    }
    *out_len = pos;
    return out;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void expect_bomb_refused(enum rv_codec c, uint8_t *packed, size_t packed_len)
{
    uint8_t *out = malloc(BOMB_OUT_CAP);
    size_t out_len = 0;
    double t0 = now_s();
    int rc = rv_codec_decompress(c, packed, packed_len, out, BOMB_OUT_CAP, &out_len);
    double took = now_s() - t0;
    cr_assert_eq(rc, -EMSGSIZE, "%s bomb: %d", rv_codec_name(c), rc);
    /* It stops once the cap is reached, rather than inflating all 100 MB first. */
    cr_assert_lt(took, 0.5, "%s bomb took %.3f s", rv_codec_name(c), took);
    struct rusage ru;
    cr_assert_eq(getrusage(RUSAGE_SELF, &ru), 0);
    cr_assert_lt(ru.ru_maxrss, 96 * 1024, "%s bomb: peak RSS %ld KiB", rv_codec_name(c),
                 ru.ru_maxrss);
    free(out);
    free(packed);
}

Test(codec, gzip_bomb_is_refused_quickly)
{
    size_t n = 0;
    uint8_t *bomb = bomb_gzip(&n);
    expect_bomb_refused(RV_CODEC_GZIP, bomb, n);
}

Test(codec, zstd_bomb_without_content_size_is_refused_quickly)
{
    size_t n = 0;
    uint8_t *bomb = bomb_zstd(&n);
    cr_assert_eq(ZSTD_getFrameContentSize(bomb, n), ZSTD_CONTENTSIZE_UNKNOWN);
    expect_bomb_refused(RV_CODEC_ZSTD, bomb, n);
}

Test(codec, zstd_frame_claiming_a_huge_size_is_refused)
{
    size_t n = 0;
    uint8_t in[1000] = {0};
    uint8_t packed[2048];
    n = ZSTD_compress(packed, sizeof(packed), in, sizeof(in), 3);
    cr_assert(!ZSTD_isError(n));
    uint8_t out[999];
    size_t out_len = 0;
    cr_assert_eq(rv_codec_decompress(RV_CODEC_ZSTD, packed, n, out, sizeof(out), &out_len),
                 -EMSGSIZE);
}

Test(codec, lz4_bomb_is_refused_quickly)
{
    size_t n = 0;
    uint8_t *bomb = bomb_lz4(&n);
    expect_bomb_refused(RV_CODEC_LZ4, bomb, n);
}

Test(codec, snappy_bomb_is_refused_quickly)
{
    size_t n = 0;
    uint8_t *bomb = bomb_snappy(&n);
    expect_bomb_refused(RV_CODEC_SNAPPY, bomb, n);
}

/* Compress n text bytes with c into a fresh buffer. */
static uint8_t *packed_text(enum rv_codec c, size_t n, uint8_t **out_text, size_t *out_len)
{
    uint8_t *text = malloc(n);
    fill_text(text, n);
    size_t cap = rv_codec_compress_bound(c, n);
    uint8_t *packed = malloc(cap);
    cr_assert_eq(rv_codec_compress(c, text, n, packed, cap, out_len), 0);
    *out_text = text;
    return packed;
}

Test(codec, truncated_input_is_ebadmsg)
{
    for (size_t ci = 0; ci < RV_ARRAY_LEN(packing_codecs); ci++) {
        enum rv_codec c = packing_codecs[ci];
        uint8_t *text = NULL;
        size_t len = 0;
        uint8_t *packed = packed_text(c, 50000, &text, &len);
        uint8_t *out = malloc(50000);
        size_t out_len = 0;
        static const size_t cuts[] = {1, 2, 5, 17, 100};
        for (size_t i = 0; i < RV_ARRAY_LEN(cuts); i++) {
            int rc = rv_codec_decompress(c, packed, len - cuts[i], out, 50000, &out_len);
            cr_assert_eq(rc, -EBADMSG, "%s cut by %zu: %d", rv_codec_name(c), cuts[i], rc);
        }
        cr_assert_eq(rv_codec_decompress(c, packed, 0, out, 50000, &out_len), -EBADMSG,
                     "%s: empty input", rv_codec_name(c));
        free(text);
        free(packed);
        free(out);
    }
}

Test(codec, trailing_garbage_is_ebadmsg)
{
    for (size_t ci = 0; ci < RV_ARRAY_LEN(packing_codecs); ci++) {
        enum rv_codec c = packing_codecs[ci];
        uint8_t *text = NULL;
        size_t len = 0;
        uint8_t *packed = packed_text(c, 5000, &text, &len);
        packed = realloc(packed, len + 3);
        memcpy(packed + len, "\x01\x02\x03", 3);
        uint8_t *out = malloc(10000);
        size_t out_len = 0;
        int rc = rv_codec_decompress(c, packed, len + 3, out, 10000, &out_len);
        cr_assert_eq(rc, -EBADMSG, "%s: %d", rv_codec_name(c), rc);
        free(text);
        free(packed);
        free(out);
    }
}

Test(codec, garbage_input_is_ebadmsg)
{
    uint8_t junk[4096];
    fill_random(junk, sizeof(junk));
    junk[0] = 0xff; /* no gzip/lz4/zstd magic, no xerial header */
    uint8_t out[8192];
    size_t out_len = 0;
    for (size_t ci = 0; ci < RV_ARRAY_LEN(packing_codecs); ci++) {
        enum rv_codec c = packing_codecs[ci];
        int rc = rv_codec_decompress(c, junk, sizeof(junk), out, sizeof(out), &out_len);
        cr_assert(rc == -EBADMSG || (c == RV_CODEC_SNAPPY && rc == -EMSGSIZE), "%s: %d",
                  rv_codec_name(c), rc);
    }
}

Test(codec, flipped_bytes_never_crash_and_give_clean_errors)
{
    size_t n = 20000;
    for (size_t ci = 0; ci < RV_ARRAY_LEN(packing_codecs); ci++) {
        enum rv_codec c = packing_codecs[ci];
        uint8_t *text = NULL;
        size_t len = 0;
        uint8_t *packed = packed_text(c, n, &text, &len);
        uint8_t *bad = malloc(len);
        uint8_t *out = malloc(n);
        for (int round = 0; round < 3000; round++) {
            memcpy(bad, packed, len);
            int flips = 1 + (int)(rng_next() % 4);
            for (int f = 0; f < flips; f++)
                bad[rng_next() % len] ^= (uint8_t)(1 + rng_next() % 255);
            size_t out_len = 0;
            int rc = rv_codec_decompress(c, bad, len, out, n, &out_len);
            cr_assert(rc == 0 || rc == -EBADMSG || rc == -EMSGSIZE, "%s: %d", rv_codec_name(c), rc);
            if (rc == 0)
                cr_assert_leq(out_len, n);
        }
        free(text);
        free(packed);
        free(bad);
        free(out);
    }
}

Test(codec, gzip_checksum_catches_a_changed_byte)
{
    uint8_t *text = NULL;
    size_t len = 0;
    uint8_t *packed = packed_text(RV_CODEC_GZIP, 10000, &text, &len);
    packed[len - 6] ^= 0x40; /* inside the CRC-32 of the trailer */
    uint8_t *out = malloc(10000);
    size_t out_len = 0;
    cr_assert_eq(rv_codec_decompress(RV_CODEC_GZIP, packed, len, out, 10000, &out_len), -EBADMSG);
    free(text);
    free(packed);
    free(out);
}

Test(codec, written_framings_are_kafkas)
{
    uint8_t in[1000];
    fill_text(in, sizeof(in));
    uint8_t out[4096];
    size_t len = 0;
    cr_assert_eq(rv_codec_compress(RV_CODEC_GZIP, in, sizeof(in), out, sizeof(out), &len), 0);
    cr_assert(out[0] == 0x1f && out[1] == 0x8b && out[2] == 8, "gzip member header");
    cr_assert_eq(rv_codec_compress(RV_CODEC_SNAPPY, in, sizeof(in), out, sizeof(out), &len), 0);
    cr_assert_eq(memcmp(out, "\x82SNAPPY\0\0\0\0\1\0\0\0\1", 16), 0, "xerial header, v1/v1");
    cr_assert_eq(((uint32_t)out[16] << 24 | out[17] << 16 | out[18] << 8 | out[19]), len - 20,
                 "one chunk with a big-endian length");
    cr_assert_eq(rv_codec_compress(RV_CODEC_LZ4, in, sizeof(in), out, sizeof(out), &len), 0);
    cr_assert_eq(memcmp(out, "\x04\x22\x4d\x18", 4), 0, "lz4 frame magic");
    cr_assert_eq(out[4], 0x60, "FLG: version 1, independent blocks, no checksums or size");
    cr_assert_eq(out[5], 0x40, "BD: 64 KiB blocks");
    cr_assert_eq(rv_codec_compress(RV_CODEC_ZSTD, in, sizeof(in), out, sizeof(out), &len), 0);
    cr_assert_eq(memcmp(out, "\x28\xb5\x2f\xfd", 4), 0, "zstd frame magic");
}

Test(codec, xerial_blocks_hold_at_most_32k)
{
    size_t n = 100000;
    uint8_t *text = NULL;
    size_t len = 0;
    uint8_t *packed = packed_text(RV_CODEC_SNAPPY, n, &text, &len);
    size_t pos = 16;
    size_t chunks = 0;
    while (pos < len) {
        uint32_t clen = (uint32_t)packed[pos] << 24 | (uint32_t)packed[pos + 1] << 16 |
                        (uint32_t)packed[pos + 2] << 8 | packed[pos + 3];
        size_t ulen = 0;
        cr_assert_eq(snappy_uncompressed_length((const char *)packed + pos + 4, clen, &ulen),
                     SNAPPY_OK);
        cr_assert_leq(ulen, 32768u);
        pos += 4 + clen;
        chunks++;
    }
    cr_assert_eq(pos, len);
    cr_assert_eq(chunks, 4u, "100000 bytes = 3 full blocks + 1");
    free(text);
    free(packed);
}

Test(codec, snappy_reads_raw_blocks_as_librdkafka_writes)
{
    size_t n = 100000;
    uint8_t *text = malloc(n);
    fill_text(text, n);
    size_t raw_len = snappy_max_compressed_length(n);
    uint8_t *raw = malloc(raw_len);
    cr_assert_eq(snappy_compress((const char *)text, n, (char *)raw, &raw_len), SNAPPY_OK);
    uint8_t *out = malloc(n);
    size_t out_len = 0;
    cr_assert_eq(rv_codec_decompress(RV_CODEC_SNAPPY, raw, raw_len, out, n, &out_len), 0);
    cr_assert_eq(out_len, n);
    cr_assert_eq(memcmp(out, text, n), 0);
    cr_assert_eq(rv_codec_decompress(RV_CODEC_SNAPPY, raw, raw_len, out, n - 1, &out_len),
                 -EMSGSIZE);
    free(text);
    free(raw);
    free(out);
}

Test(codec, snappy_reads_concatenated_xerial_streams)
{
    uint8_t a[5000];
    uint8_t b[7000];
    fill_text(a, sizeof(a));
    fill_text(b, sizeof(b));
    uint8_t packed[16384];
    size_t la = 0;
    size_t lb = 0;
    cr_assert_eq(rv_codec_compress(RV_CODEC_SNAPPY, a, sizeof(a), packed, 8192, &la), 0);
    cr_assert_eq(
        rv_codec_compress(RV_CODEC_SNAPPY, b, sizeof(b), packed + la, sizeof(packed) - la, &lb), 0);
    uint8_t out[12000];
    size_t out_len = 0;
    cr_assert_eq(rv_codec_decompress(RV_CODEC_SNAPPY, packed, la + lb, out, sizeof(out), &out_len),
                 0);
    cr_assert_eq(out_len, sizeof(a) + sizeof(b));
    cr_assert_eq(memcmp(out, a, sizeof(a)), 0);
    cr_assert_eq(memcmp(out + sizeof(a), b, sizeof(b)), 0);
}

Test(codec, snappy_xerial_chunk_running_past_the_end_is_ebadmsg)
{
    uint8_t packed[64] = "\x82SNAPPY\0\0\0\0\1\0\0\0\1";
    store_be32(packed + 16, 1000);
    memset(packed + 20, 0, 10);
    uint8_t out[2048];
    size_t out_len = 0;
    cr_assert_eq(rv_codec_decompress(RV_CODEC_SNAPPY, packed, 30, out, sizeof(out), &out_len),
                 -EBADMSG);
    cr_assert_eq(rv_codec_decompress(RV_CODEC_SNAPPY, packed, 12, out, sizeof(out), &out_len),
                 -EBADMSG, "header cut short");
    cr_assert_eq(rv_codec_decompress(RV_CODEC_SNAPPY, packed, 16, out, sizeof(out), &out_len), 0,
                 "a header alone is an empty stream");
    cr_assert_eq(out_len, 0u);
}

Test(codec, gzip_reads_concatenated_members_and_zlib_headers_with_names)
{
    uint8_t a[3000];
    uint8_t b[4000];
    fill_text(a, sizeof(a));
    fill_text(b, sizeof(b));
    uint8_t packed[16384];
    size_t la = 0;
    cr_assert_eq(rv_codec_compress(RV_CODEC_GZIP, a, sizeof(a), packed, 8192, &la), 0);
    /* The second member comes from zlib with a file name and a comment in its header. */
    z_stream z;
    memset(&z, 0, sizeof(z));
    cr_assert_eq(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    gz_header h;
    memset(&h, 0, sizeof(h));
    h.name = (Bytef *)"records.bin";
    h.comment = (Bytef *)"made by zlib";
    h.hcrc = 1;
    cr_assert_eq(deflateSetHeader(&z, &h), Z_OK);
    z.next_in = b;
    z.avail_in = sizeof(b);
    z.next_out = packed + la;
    z.avail_out = (uInt)(sizeof(packed) - la);
    cr_assert_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
    size_t total = la + z.total_out;
    deflateEnd(&z);
    uint8_t out[8000];
    size_t out_len = 0;
    cr_assert_eq(rv_codec_decompress(RV_CODEC_GZIP, packed, total, out, sizeof(out), &out_len), 0);
    cr_assert_eq(out_len, sizeof(a) + sizeof(b));
    cr_assert_eq(memcmp(out, a, sizeof(a)), 0);
    cr_assert_eq(memcmp(out + sizeof(a), b, sizeof(b)), 0);
    cr_assert_eq(rv_codec_decompress(RV_CODEC_GZIP, packed, total, out, 6999, &out_len), -EMSGSIZE,
                 "the cap covers all members together");
}

Test(codec, lz4_reads_frames_with_checksums_sizes_and_linked_blocks)
{
    size_t n = 300000;
    uint8_t *text = malloc(n);
    fill_text(text, n);
    LZ4F_preferences_t p;
    memset(&p, 0, sizeof(p));
    p.frameInfo.blockSizeID = LZ4F_max256KB;
    p.frameInfo.blockMode = LZ4F_blockLinked;
    p.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
    p.frameInfo.blockChecksumFlag = LZ4F_blockChecksumEnabled;
    p.frameInfo.contentSize = n;
    size_t cap = LZ4F_compressFrameBound(n, &p);
    uint8_t *packed = malloc(cap);
    size_t len = LZ4F_compressFrame(packed, cap, text, n, &p);
    cr_assert(!LZ4F_isError(len));
    uint8_t *out = malloc(n);
    size_t out_len = 0;
    cr_assert_eq(rv_codec_decompress(RV_CODEC_LZ4, packed, len, out, n, &out_len), 0);
    cr_assert_eq(out_len, n);
    cr_assert_eq(memcmp(out, text, n), 0);
    packed[len - 2] ^= 1; /* the content checksum */
    cr_assert_eq(rv_codec_decompress(RV_CODEC_LZ4, packed, len, out, n, &out_len), -EBADMSG);
    free(text);
    free(packed);
    free(out);
}

Test(codec, zstd_reads_concatenated_frames)
{
    uint8_t a[3000];
    uint8_t b[4000];
    fill_text(a, sizeof(a));
    fill_text(b, sizeof(b));
    uint8_t packed[16384];
    size_t la = ZSTD_compress(packed, 8192, a, sizeof(a), 1);
    cr_assert(!ZSTD_isError(la));
    size_t lb = ZSTD_compress(packed + la, 8192, b, sizeof(b), 19);
    cr_assert(!ZSTD_isError(lb));
    uint8_t out[8000];
    size_t out_len = 0;
    cr_assert_eq(rv_codec_decompress(RV_CODEC_ZSTD, packed, la + lb, out, sizeof(out), &out_len),
                 0);
    cr_assert_eq(out_len, sizeof(a) + sizeof(b));
    cr_assert_eq(memcmp(out + sizeof(a), b, sizeof(b)), 0);
}

static void *thread_round_trips(void *arg)
{
    size_t n = 40000;
    uint8_t *text = malloc(n);
    for (size_t i = 0; i < n; i++)
        text[i] = (uint8_t)("abcdefgh"[(i * 7 + (uintptr_t)arg) % 8]);
    uint8_t *packed = malloc(rv_codec_compress_bound(RV_CODEC_GZIP, n) + 1024);
    uint8_t *out = malloc(n);
    for (int round = 0; round < 20; round++) {
        for (size_t ci = 0; ci < RV_ARRAY_LEN(packing_codecs); ci++) {
            enum rv_codec c = packing_codecs[ci];
            size_t len = 0;
            size_t out_len = 0;
            size_t cap = rv_codec_compress_bound(c, n);
            if (rv_codec_compress(c, text, n, packed, cap, &len) != 0 ||
                rv_codec_decompress(c, packed, len, out, n, &out_len) != 0 || out_len != n ||
                memcmp(out, text, n) != 0) {
                return (void *)1;
            }
        }
    }
    rv_codec_thread_fini();
    free(text);
    free(packed);
    free(out);
    return NULL;
}

Test(codec, threads_use_their_own_contexts)
{
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, thread_round_trips, (void *)i), 0);
    for (int i = 0; i < 4; i++) {
        void *res = (void *)1;
        cr_assert_eq(pthread_join(t[i], &res), 0);
        cr_assert_null(res, "thread %d saw a failed round trip", i);
    }
}

Test(codec, thread_fini_frees_and_later_calls_start_again)
{
    uint8_t in[2000];
    fill_text(in, sizeof(in));
    round_trip(RV_CODEC_ZSTD, in, sizeof(in));
    rv_codec_thread_fini();
    rv_codec_thread_fini(); /* twice is harmless */
    for (size_t ci = 0; ci < RV_ARRAY_LEN(all_codecs); ci++)
        round_trip(all_codecs[ci], in, sizeof(in));
    round_trip_level(RV_CODEC_GZIP, 6, in, sizeof(in));
    round_trip_level(RV_CODEC_GZIP, 9, in, sizeof(in)); /* zlib switches level in place */
    rv_codec_thread_fini();
}

Test(codec, decompress_grow_doubles_the_buffer_and_stops_at_its_bound)
{
    size_t n = 3u << 20; /* 3 MiB of text: needs the 1 MiB buffer to grow twice */
    uint8_t *plain = malloc(n);
    cr_assert_not_null(plain);
    for (size_t i = 0; i < n; i++)
        plain[i] = (uint8_t)('a' + (i * 7) % 23);
    size_t zcap = rv_codec_compress_bound(RV_CODEC_ZSTD, n);
    uint8_t *z = malloc(zcap);
    size_t zlen = 0;
    cr_assert_eq(rv_codec_compress(RV_CODEC_ZSTD, plain, n, z, zcap, &zlen), 0);
    uint8_t *buf = NULL;
    size_t cap = 0, out = 0;
    cr_assert_eq(rv_codec_decompress_grow(RV_CODEC_ZSTD, z, zlen, &buf, &cap, 8u << 20, &out), 0);
    cr_assert_eq(out, n);
    cr_assert_eq(cap, 4u << 20, "1 -> 2 -> 4 MiB");
    cr_assert(memcmp(buf, plain, n) == 0);
    /* The same input with a 2 MiB bound is refused, not allocated for. */
    free(buf);
    buf = NULL;
    cap = 0;
    cr_assert_eq(rv_codec_decompress_grow(RV_CODEC_ZSTD, z, zlen, &buf, &cap, 2u << 20, &out),
                 -EMSGSIZE);
    cr_assert_leq(cap, 2u << 20);
    free(buf);
    free(z);
    free(plain);
}
