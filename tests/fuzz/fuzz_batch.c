/*
 * tests/fuzz/fuzz_batch.c - libFuzzer harness for the record batch and codec readers.
 *
 * The input is a Kafka "records" blob (batches back to back). Each complete batch is
 * parsed; one that fails only its CRC is parsed again with the CRC fixed, so that the
 * fuzzer reaches the record walker and the decompressors instead of stopping at the
 * checksum. Accepted batches have their records decompressed (into a bounded 1 MiB
 * buffer), validated and iterated, headers included. Any crash, sanitizer report or
 * undocumented return code is a bug.
 *
 * Not built by meson. Build and run from the project root with clang:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -DRV_DEBUG_CHECKS=1 \
 *       -I. -Iinclude tests/fuzz/fuzz_batch.c storage/batch.c storage/codec.c \
 *       core/crc32c.c core/varint.c core/err.c core/assert.c core/trace.c core/ctx.c \
 *       core/clock.c -lisal -lzstd -llz4 -lsnappy -lz -lnuma -pthread -rdynamic \
 *       -o /tmp/fuzz_batch
 *   mkdir -p /tmp/fuzz_batch_corpus
 *   /tmp/fuzz_batch -max_len=65536 /tmp/fuzz_batch_corpus tests/data/batches
 *
 * (New inputs go to the first directory; the .bin files of tests/data/batches, real librdkafka
 * batches of every codec, are the seed corpus.)
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/crc32c.h"
#include "storage/batch.h"
#include "storage/codec.h"

#define FUZZ_INPUT_MAX  (1u << 20)
#define FUZZ_OUTPUT_MAX (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t fuzz_copy[FUZZ_INPUT_MAX];
static uint8_t fuzz_plain[FUZZ_OUTPUT_MAX];

static void fuzz_check(int ok)
{
    if (!ok)
        abort();
}

static int fuzz_is_documented(int rc)
{
    return rc >= 0 || rc == -EBADMSG || rc == -EMSGSIZE || rc == -EPROTONOSUPPORT ||
           rc == -ENOTSUP || rc == -EINVAL;
}

/* Walk every record and header; an accepted batch must walk cleanly. */
static void fuzz_walk(const struct rv_batch_view *v, const uint8_t *records, size_t len)
{
    struct rv_batch_record_iter it;
    struct rv_batch_record rec;
    int rc;
    rv_batch_record_iter_init(&it, v, records, len);
    while ((rc = rv_batch_record_iter_next(&it, &rec)) > 0) {
        struct rv_batch_header_iter hi;
        struct rv_batch_record_header h;
        rv_batch_header_iter_init(&hi, &rec);
        while ((rc = rv_batch_header_iter_next(&hi, &h)) > 0) {
            fuzz_check(h.key_len >= 0 && h.value_len >= -1);
        }
        fuzz_check(rc == 0);
    }
    fuzz_check(rc == 0);
}

static void fuzz_batch(struct rv_batch_view *v)
{
    enum rv_codec codec = rv_batch_codec(v);
    if (codec == RV_CODEC_NONE) {
        fuzz_walk(v, v->records, v->records_bytes);
        return;
    }
    size_t plain_len = 0;
    int rc = rv_codec_decompress(codec, v->records, v->records_bytes, fuzz_plain,
                                 sizeof(fuzz_plain), &plain_len);
    fuzz_check(rc == 0 || rc == -EBADMSG || rc == -EMSGSIZE);
    if (rc < 0)
        return;
    fuzz_check(plain_len <= sizeof(fuzz_plain));
    rc = rv_batch_validate_records(v, fuzz_plain, plain_len);
    fuzz_check(rc == 0 || rc == -EINVAL);
    if (rc == 0)
        fuzz_walk(v, fuzz_plain, plain_len);
}

/* Parse the batch at p; retry once with its CRC fixed when only the CRC was wrong. */
static void fuzz_one(uint8_t *p, size_t left)
{
    struct rv_batch_view v;
    int rc = rv_batch_parse(p, left, FUZZ_INPUT_MAX, &v);
    fuzz_check(fuzz_is_documented(rc));
    if (rc == -EBADMSG && left >= RV_BATCH_HEADER_BYTES) {
        uint32_t length =
            (uint32_t)p[8] << 24 | (uint32_t)p[9] << 16 | (uint32_t)p[10] << 8 | p[11];
        size_t n = (size_t)length + RV_BATCH_LOG_OVERHEAD_BYTES;
        if (length >= RV_BATCH_LENGTH_MIN && length <= INT32_MAX && n <= left) {
            uint32_t crc = rv_crc32c(0, p + RV_BATCH_ATTRIBUTES_POS, n - RV_BATCH_ATTRIBUTES_POS);
            p[17] = (uint8_t)(crc >> 24);
            p[18] = (uint8_t)(crc >> 16);
            p[19] = (uint8_t)(crc >> 8);
            p[20] = (uint8_t)crc;
            rc = rv_batch_parse(p, left, FUZZ_INPUT_MAX, &v);
            fuzz_check(fuzz_is_documented(rc));
        }
    }
    if (rc > 0)
        fuzz_batch(&v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > sizeof(fuzz_copy))
        return 0;
    memcpy(fuzz_copy, data, size);
    size_t count = 0;
    size_t bytes = 0;
    int rc = rv_batch_split(fuzz_copy, size, FUZZ_INPUT_MAX, &count, &bytes);
    fuzz_check(fuzz_is_documented(rc));
    if (rc == 0)
        fuzz_check(bytes <= size);
    /* Walk batch by batch, fixing CRCs, as far as the framing allows. */
    size_t pos = 0;
    for (int i = 0; i < 64 && size - pos >= RV_BATCH_LOG_OVERHEAD_BYTES; i++) {
        uint32_t length = (uint32_t)fuzz_copy[pos + 8] << 24 | (uint32_t)fuzz_copy[pos + 9] << 16 |
                          (uint32_t)fuzz_copy[pos + 10] << 8 | fuzz_copy[pos + 11];
        fuzz_one(fuzz_copy + pos, size - pos);
        if (length > INT32_MAX || length + (size_t)RV_BATCH_LOG_OVERHEAD_BYTES > size - pos)
            break;
        pos += length + (size_t)RV_BATCH_LOG_OVERHEAD_BYTES;
    }
    return 0;
}
