/*
 * storage/codec.h - the compression codecs of Kafka record batches.
 *
 * A compressed RecordBatch v2 holds its records section as one compressed blob whose
 * framing is fixed by what Kafka clients write and read:
 *
 *   gzip    one RFC 1952 gzip member (reading also accepts concatenated members).
 *   snappy  written in the xerial "snappy-java" framing the Java client uses: a 16-byte
 *           header (magic "\x82SNAPPY\0", int32 version 1, int32 compatible version 1)
 *           then chunks of int32 big-endian length + one raw snappy block of at most
 *           32 KiB of input. Reading accepts that framing or one bare raw snappy block
 *           (librdkafka writes the latter); the magic tells them apart.
 *   lz4     the LZ4 frame format, 64 KiB independent blocks, no checksums or content
 *           size (what the Java client's KafkaLZ4BlockOutputStream and librdkafka write).
 *   zstd    zstd frames; reading accepts concatenated and skippable frames, with or
 *           without a content size.
 *
 * Output bounds: decompression writes into a caller buffer whose capacity is a hard
 * limit. Output that would pass it fails with -EMSGSIZE as soon as it is detected
 * (a decompression bomb is an error, not an allocation), and nothing is allocated in
 * proportion to sizes claimed by the input. Compression guarantees success when
 * out_cap >= rv_codec_compress_bound(); below that it may fail with -ENOSPC even where
 * the result would have fitted (lz4 and snappy check the worst case up front).
 *
 * Memory: each thread that calls in here gets its codec contexts (ISA-L and zlib
 * streams, zstd and lz4 contexts, about 1 MiB in all) on its first use of each codec;
 * later calls reuse them and allocate nothing. They are freed when the thread exits
 * or by rv_codec_thread_fini(). Every function may be called from any thread; inputs
 * and outputs belong to the caller and are not kept.
 */
#ifndef RV_STORAGE_CODEC_H
#define RV_STORAGE_CODEC_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "core/assert.h"

/* Compression codecs, numbered as in the batch attributes' low three bits. */
enum rv_codec {
    RV_CODEC_NONE = 0,
    RV_CODEC_GZIP = 1,
    RV_CODEC_SNAPPY = 2,
    RV_CODEC_LZ4 = 3,
    RV_CODEC_ZSTD = 4,
};

#define RV_CODEC_COUNT 5

/* Levels. gzip levels 1..3 use ISA-L igzip (4-11x faster than zlib's level 6 at a
 * ~25% lower ratio on log-like JSON: see codec.c), 4..9 use zlib. lz4 level 0 is the
 * fast compressor, 1..12 LZ4HC (which allocates per call). zstd takes its usual
 * levels. Snappy and none have no levels. */
#define RV_CODEC_GZIP_LEVEL_DEFAULT 1
#define RV_CODEC_LZ4_LEVEL_DEFAULT  0
#define RV_CODEC_ZSTD_LEVEL_DEFAULT 3

/* Queries. */

/* True when c is one of the five codecs above (c may come from untrusted bytes). */
static inline int rv_codec_is_valid(int c)
{
    return c >= RV_CODEC_NONE && c <= RV_CODEC_ZSTD;
}

/* The lower-case Kafka name of c ("none", "gzip", "snappy", "lz4", "zstd"); "?" for
 * a value outside the enum. */
const char *rv_codec_name(enum rv_codec c);

/* Parse a Kafka codec name (exact, lower case, as in compression.type) into *out.
 * Returns 0, or -EINVAL for an unknown name (then *out is untouched). */
RV_MUST_CHECK int rv_codec_from_name(const char *name, enum rv_codec *out);

/* The default level of c (0 for codecs without levels). */
int rv_codec_default_level(enum rv_codec c);

/* The most bytes rv_codec_compress() can produce for in_len input bytes: an out_cap
 * of at least this much never fails with -ENOSPC. in_len must be below 2^31. */
size_t rv_codec_compress_bound(enum rv_codec c, size_t in_len);

/* Operations. */

/* Compress in_len bytes of `in` with c at its default level into out (capacity
 * out_cap); the compressed size goes to *out_len. Returns 0, -ENOSPC when the output
 * does not fit out_cap (see the file comment), -ENOBUFS when this thread's codec
 * context cannot be allocated, -EINVAL for in_len >= 2^31. On failure out holds
 * garbage and *out_len is untouched. */
RV_MUST_CHECK int rv_codec_compress(enum rv_codec c, const uint8_t *in, size_t in_len, uint8_t *out,
                                    size_t out_cap, size_t *out_len);

/* rv_codec_compress() at an explicit level: -EINVAL for a level c does not have. */
RV_MUST_CHECK int rv_codec_compress_level(enum rv_codec c, int level, const uint8_t *in,
                                          size_t in_len, uint8_t *out, size_t out_cap,
                                          size_t *out_len);

/* Decompress in_len bytes of c-compressed `in` into out; out_cap is the hard limit on
 * the output. The decompressed size goes to *out_len. Returns 0; -EMSGSIZE when the
 * output would exceed out_cap; -EBADMSG when the input is corrupt, truncated, or
 * followed by trailing bytes; -EINVAL for an unknown codec or in_len >= 2^31; -ENOBUFS when this
 * thread's codec context cannot be allocated. On failure out holds garbage and
 * *out_len is untouched. Input bytes are untrusted: nothing here asserts on them. */
RV_MUST_CHECK int rv_codec_decompress(enum rv_codec c, const uint8_t *in, size_t in_len,
                                      uint8_t *out, size_t out_cap, size_t *out_len);

/*
 * rv_codec_decompress into a malloc'd buffer the caller keeps between calls
 * (*buf, *cap; both 0/NULL at first): the buffer starts at 1 MiB and doubles
 * while the output does not fit, up to cap_max (then -EMSGSIZE). For callers
 * that decompress batch after batch, so the buffer grows rarely and then stays.
 * Errors as rv_codec_decompress, plus -ENOMEM.
 */
RV_MUST_CHECK int rv_codec_decompress_grow(enum rv_codec c, const uint8_t *in, size_t in_len,
                                           uint8_t **buf, size_t *cap, size_t cap_max,
                                           size_t *out_len);

/* Lifecycle. */

/* Free the calling thread's codec contexts now rather than at thread exit (a shard
 * calls it on its way out; harmless when there are none). Later calls on this thread
 * allocate them again. */
void rv_codec_thread_fini(void);

#endif /* RV_STORAGE_CODEC_H */
