/*
 * storage/codec.c - gzip (ISA-L igzip and zlib), snappy (xerial and raw), lz4 (frame)
 * and zstd with Kafka's framing and hard output bounds.
 *
 * Contexts: one struct codec_ctx per thread, allocated on the thread's first call and
 * then reused, so steady-state calls allocate nothing (LZ4HC levels aside, which
 * allocate inside liblz4). A pthread key frees it when the thread exits.
 *
 * gzip implementation, measured on this machine (2 cores, x86-64) with 1 MiB of
 * log-like JSON lines (ratio, compress MB/s, decompress MB/s):
 *
 *   zlib  level 1   5.68    278   833        igzip level 1   5.75   1054  2025
 *   zlib  level 6   7.50     94   888        igzip level 2   5.72   1068  2082
 *   zlib  level 9   8.21     30   872        igzip level 3   5.90    416  2135
 *
 * (16 KiB inputs: zlib 6 compresses at 144 MB/s, igzip 1 at 1181 MB/s; inflate 1.4
 * vs 1.9 GB/s.) igzip level 1 beats zlib level 1 on both speed and ratio and is 4-11x
 * faster than zlib's default level 6, so levels 1..3 go to igzip and the default is
 * 1; levels 4..9 keep zlib for callers that want the ratio. Decompression always uses
 * igzip (about 2x zlib's inflate), which also reads zlib's and Java's output.
 *
 * Decompression bounds: every decoder writes straight into the caller's buffer.
 * When that buffer is full but the stream is not finished, one more step runs into a
 * 16-byte scratch buffer: any byte produced there means the output would exceed
 * out_cap (-EMSGSIZE). zstd decodes in one shot into the caller's buffer (which then
 * serves as the window, so a frame's claimed window or content size costs nothing).
 */
#include "storage/codec.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/igzip_lib.h>
#include <lz4frame.h>
#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "core/err.h"

/* The largest input we accept: ISA-L, zlib and Kafka lengths are 32-bit. */
#define CODEC_IN_BYTES_MAX ((size_t)INT32_MAX)

/* xerial snappy-java framing. */
#define XERIAL_MAGIC_BYTES  8
#define XERIAL_HEADER_BYTES 16
#define XERIAL_BLOCK_BYTES  32768 /* snappy-java's default block, as Kafka writes */
#define XERIAL_VERSION      1

static const uint8_t xerial_magic[XERIAL_MAGIC_BYTES] = {0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0};

/* Where output goes once the caller's buffer is full: anything landing here means
 * the decompressed data is larger than out_cap. */
#define PROBE_BYTES 16

#define ISAL_LEVEL_BUF_BYTES                                                                       \
    (ISAL_DEF_LVL3_DEFAULT > ISAL_DEF_LVL2_DEFAULT                                                 \
         ? (ISAL_DEF_LVL3_DEFAULT > ISAL_DEF_LVL1_DEFAULT ? ISAL_DEF_LVL3_DEFAULT                  \
                                                          : ISAL_DEF_LVL1_DEFAULT)                 \
         : (ISAL_DEF_LVL2_DEFAULT > ISAL_DEF_LVL1_DEFAULT ? ISAL_DEF_LVL2_DEFAULT                  \
                                                          : ISAL_DEF_LVL1_DEFAULT))

/* The calling thread's codec state; members other than the ISA-L structs are made on
 * first use of their codec. */
struct codec_ctx {
    struct inflate_state isal_in; /* igzip inflate (reset per member) */
    struct isal_zstream isal_out; /* igzip deflate (reset per call) */
    uint8_t *isal_level_buf;      /* ISAL_LEVEL_BUF_BYTES, for levels 1..3 */
    z_stream zlib_out;            /* zlib deflate, for levels 4..9 */
    int zlib_level;               /* level zlib_out is set to; 0 = not initialised */
    ZSTD_CCtx *zstd_out;          /* reused by every zstd compression */
    ZSTD_DCtx *zstd_in;           /* reused by every zstd decompression */
    LZ4F_cctx *lz4_out;           /* reused by every lz4 compression */
    LZ4F_dctx *lz4_in;            /* reused by every lz4 decompression */
};

static __thread struct codec_ctx *codec_tls;
static pthread_key_t codec_key;
static pthread_once_t codec_key_once = PTHREAD_ONCE_INIT;

static void codec_ctx_free(void *arg)
{
    struct codec_ctx *ctx = arg;
    if (ctx == NULL)
        return;
    free(ctx->isal_level_buf);
    if (ctx->zlib_level != 0)
        (void)deflateEnd(&ctx->zlib_out); /* Z_DATA_ERROR is moot here */
    ZSTD_freeCCtx(ctx->zstd_out);
    ZSTD_freeDCtx(ctx->zstd_in);
    (void)LZ4F_freeCompressionContext(ctx->lz4_out); /* only fails for a NULL-safe no-op */
    (void)LZ4F_freeDecompressionContext(ctx->lz4_in);
    free(ctx);
}

static void codec_key_make(void)
{
    /* Without a key the contexts would leak at thread exit; the key count is a
     * process limit (>= 128) that nothing near startup exhausts. */
    RV_ASSERT(pthread_key_create(&codec_key, codec_ctx_free) == 0);
}

/* This thread's context, made on first use; NULL when memory is short. */
static struct codec_ctx *codec_ctx_get(void)
{
    if (RV_LIKELY(codec_tls != NULL))
        return codec_tls;
    RV_ASSERT(pthread_once(&codec_key_once, codec_key_make) == 0);
    struct codec_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        return NULL;
    if (pthread_setspecific(codec_key, ctx) != 0) {
        free(ctx);
        return NULL;
    }
    codec_tls = ctx;
    return ctx;
}

void rv_codec_thread_fini(void)
{
    if (codec_tls == NULL)
        return;
    RV_ASSERT(pthread_setspecific(codec_key, NULL) == 0);
    codec_ctx_free(codec_tls);
    codec_tls = NULL;
}

/* Queries. */

static const char *const codec_names[RV_CODEC_COUNT] = {"none", "gzip", "snappy", "lz4", "zstd"};

const char *rv_codec_name(enum rv_codec c)
{
    return rv_codec_is_valid((int)c) ? codec_names[c] : "?";
}

int rv_codec_from_name(const char *name, enum rv_codec *out)
{
    RV_ASSERT(name != NULL && out != NULL);
    for (int i = 0; i < RV_CODEC_COUNT; i++) {
        if (strcmp(name, codec_names[i]) == 0) {
            *out = (enum rv_codec)i;
            return 0;
        }
    }
    return rv_errf(-EINVAL, "unknown compression codec '%s'", name);
}

int rv_codec_default_level(enum rv_codec c)
{
    switch (c) {
    case RV_CODEC_GZIP: return RV_CODEC_GZIP_LEVEL_DEFAULT;
    case RV_CODEC_LZ4: return RV_CODEC_LZ4_LEVEL_DEFAULT;
    case RV_CODEC_ZSTD: return RV_CODEC_ZSTD_LEVEL_DEFAULT;
    default: return 0;
    }
}

/* Kafka's LZ4 frame: 64 KiB independent blocks, no checksums, no content size. */
static LZ4F_preferences_t lz4_prefs(int level)
{
    LZ4F_preferences_t p;
    memset(&p, 0, sizeof(p));
    p.frameInfo.blockSizeID = LZ4F_max64KB;
    p.frameInfo.blockMode = LZ4F_blockIndependent;
    p.frameInfo.contentChecksumFlag = LZ4F_noContentChecksum;
    p.frameInfo.blockChecksumFlag = LZ4F_noBlockChecksum;
    p.compressionLevel = level;
    return p;
}

static size_t snappy_bound(size_t in_len)
{
    size_t full = in_len / XERIAL_BLOCK_BYTES;
    size_t rest = in_len % XERIAL_BLOCK_BYTES;
    size_t bound =
        XERIAL_HEADER_BYTES + full * (4 + snappy_max_compressed_length(XERIAL_BLOCK_BYTES));
    if (rest > 0)
        bound += 4 + snappy_max_compressed_length(rest);
    return bound;
}

size_t rv_codec_compress_bound(enum rv_codec c, size_t in_len)
{
    RV_ASSERT(in_len <= CODEC_IN_BYTES_MAX);
    switch (c) {
    case RV_CODEC_NONE: return in_len;
    case RV_CODEC_GZIP: {
        /* Covers zlib's deflateBound plus the gzip wrapper, and ISA-L, which falls
         * back to stored blocks (5 bytes per <= 64 KiB) plus a header of <= 328. */
        return in_len + in_len / 16 + 1024;
    }
    case RV_CODEC_SNAPPY: return snappy_bound(in_len);
    case RV_CODEC_LZ4: {
        LZ4F_preferences_t p = lz4_prefs(RV_CODEC_LZ4_LEVEL_DEFAULT);
        return LZ4F_compressFrameBound(in_len, &p);
    }
    case RV_CODEC_ZSTD: return ZSTD_compressBound(in_len);
    }
    RV_ASSERT(!"invalid codec");
    return 0;
}

static inline void be32_store(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline uint32_t be32_load(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* gzip. */

static int gzip_compress_isal(struct codec_ctx *ctx, int level, const uint8_t *in, size_t in_len,
                              uint8_t *out, size_t out_cap, size_t *out_len)
{
    static const uint32_t level_buf_bytes[] = {ISAL_DEF_LVL0_DEFAULT, ISAL_DEF_LVL1_DEFAULT,
                                               ISAL_DEF_LVL2_DEFAULT, ISAL_DEF_LVL3_DEFAULT};
    if (ctx->isal_level_buf == NULL) {
        ctx->isal_level_buf = malloc(ISAL_LEVEL_BUF_BYTES);
        if (ctx->isal_level_buf == NULL)
            return rv_errf(-ENOBUFS, "gzip: no memory for igzip");
    }
    struct isal_zstream *z = &ctx->isal_out;
    isal_deflate_init(z);
    z->level = (uint32_t)level;
    z->level_buf = ctx->isal_level_buf;
    z->level_buf_size = level_buf_bytes[level];
    z->gzip_flag = IGZIP_GZIP;
    z->end_of_stream = 1;
    z->flush = NO_FLUSH;
    z->next_in = (uint8_t *)in; /* ISA-L does not write through next_in */
    z->avail_in = (uint32_t)in_len;
    z->next_out = out;
    z->avail_out = (uint32_t)(out_cap > UINT32_MAX ? UINT32_MAX : out_cap);
    int rc = isal_deflate(z);
    if (rc != COMP_OK)
        return rv_errf(-EINVAL, "gzip: igzip deflate failed (%d)", rc);
    if (z->internal_state.state != ZSTATE_END) {
        return rv_errf(-ENOSPC, "gzip: output does not fit %zu bytes", out_cap);
    }
    *out_len = z->total_out;
    return 0;
}

static int gzip_compress_zlib(struct codec_ctx *ctx, int level, const uint8_t *in, size_t in_len,
                              uint8_t *out, size_t out_cap, size_t *out_len)
{
    z_stream *z = &ctx->zlib_out;
    if (ctx->zlib_level == 0) {
        /* 15 + 16: a 32 KiB window with the gzip wrapper instead of zlib's. */
        if (deflateInit2(z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            return rv_errf(-ENOBUFS, "gzip: no memory for zlib");
        }
        ctx->zlib_level = level;
    } else {
        if (deflateReset(z) != Z_OK)
            return rv_errf(-EINVAL, "gzip: zlib reset failed");
        if (ctx->zlib_level != level) {
            if (deflateParams(z, level, Z_DEFAULT_STRATEGY) != Z_OK) {
                return rv_errf(-EINVAL, "gzip: zlib level %d refused", level);
            }
            ctx->zlib_level = level;
        }
    }
    z->next_in = (Bytef *)in; /* zlib does not write through next_in */
    z->avail_in = (uInt)in_len;
    z->next_out = out;
    z->avail_out = (uInt)(out_cap > UINT32_MAX ? UINT32_MAX : out_cap);
    int rc = deflate(z, Z_FINISH);
    if (rc != Z_STREAM_END)
        return rv_errf(-ENOSPC, "gzip: output does not fit %zu bytes", out_cap);
    *out_len = z->total_out;
    return 0;
}

/* Inflate one gzip member starting at in[*in_pos] into out[*out_pos..out_cap),
 * advancing both positions past it. */
static int gzip_inflate_member(struct inflate_state *st, const uint8_t *in, size_t in_len,
                               size_t *in_pos, uint8_t *out, size_t out_cap, size_t *out_pos)
{
    uint8_t probe[PROBE_BYTES];
    isal_inflate_reset(st);
    st->crc_flag = ISAL_GZIP;
    st->next_in = (uint8_t *)in + *in_pos; /* ISA-L does not write through next_in */
    st->avail_in = (uint32_t)(in_len - *in_pos);
    st->next_out = out + *out_pos;
    st->avail_out = (uint32_t)(out_cap - *out_pos);
    bool is_probing = false;
    for (;;) {
        uint32_t avail_in = st->avail_in;
        uint32_t avail_out = st->avail_out;
        if (isal_inflate(st) < 0)
            return rv_errf(-EBADMSG, "gzip: corrupt deflate stream");
        if (is_probing && st->avail_out < PROBE_BYTES)
            break; /* output beyond out_cap */
        if (st->block_state == ISAL_BLOCK_FINISH) {
            *in_pos = (size_t)(st->next_in - in);
            if (!is_probing)
                *out_pos = (size_t)(st->next_out - out);
            return 0;
        }
        if (st->avail_out == 0 && !is_probing) {
            *out_pos = out_cap;
            st->next_out = probe;
            st->avail_out = PROBE_BYTES;
            is_probing = true;
            continue;
        }
        if (st->avail_in == 0)
            return rv_errf(-EBADMSG, "gzip: truncated stream");
        if (st->avail_in == avail_in && st->avail_out == avail_out) {
            return rv_errf(-EBADMSG, "gzip: decoder made no progress");
        }
    }
    return rv_errf(-EMSGSIZE, "gzip: output exceeds %zu bytes", out_cap);
}

static int gzip_decompress(struct codec_ctx *ctx, const uint8_t *in, size_t in_len, uint8_t *out,
                           size_t out_cap, size_t *out_len)
{
    if (out_cap > UINT32_MAX)
        out_cap = UINT32_MAX; /* ISA-L counts output in 32 bits */
    if (in_len == 0)
        return rv_errf(-EBADMSG, "gzip: empty input");
    size_t in_pos = 0;
    size_t out_pos = 0;
    /* Concatenated members decode back to back, as GZIPInputStream reads them; each
     * turn consumes at least a member header, which bounds the loop. */
    while (in_pos < in_len) {
        int rc = gzip_inflate_member(&ctx->isal_in, in, in_len, &in_pos, out, out_cap, &out_pos);
        if (rc < 0)
            return rc;
    }
    *out_len = out_pos;
    return 0;
}

/* snappy. */

static int snappy_compress_xerial(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap,
                                  size_t *out_len)
{
    if (out_cap < XERIAL_HEADER_BYTES)
        return rv_errf(-ENOSPC, "snappy: no room for the header");
    memcpy(out, xerial_magic, XERIAL_MAGIC_BYTES);
    be32_store(out + 8, XERIAL_VERSION);
    be32_store(out + 12, XERIAL_VERSION); /* compatible version */
    size_t out_pos = XERIAL_HEADER_BYTES;
    for (size_t in_pos = 0; in_pos < in_len; in_pos += XERIAL_BLOCK_BYTES) {
        size_t n = in_len - in_pos < XERIAL_BLOCK_BYTES ? in_len - in_pos : XERIAL_BLOCK_BYTES;
        size_t block_bytes = snappy_max_compressed_length(n);
        if (out_cap - out_pos < 4 + block_bytes) {
            return rv_errf(-ENOSPC, "snappy: output may not fit %zu bytes", out_cap);
        }
        snappy_status st =
            snappy_compress((const char *)in + in_pos, n, (char *)out + out_pos + 4, &block_bytes);
        RV_ASSERT(st == SNAPPY_OK); /* the room was checked above */
        be32_store(out + out_pos, (uint32_t)block_bytes);
        out_pos += 4 + block_bytes;
    }
    *out_len = out_pos;
    return 0;
}

/* Decode one raw snappy block into out[*out_pos..out_cap). */
static int snappy_block_decode(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap,
                               size_t *out_pos)
{
    size_t n;
    if (snappy_uncompressed_length((const char *)in, in_len, &n) != SNAPPY_OK) {
        return rv_errf(-EBADMSG, "snappy: corrupt block length");
    }
    if (n > out_cap - *out_pos)
        return rv_errf(-EMSGSIZE, "snappy: output exceeds %zu", out_cap);
    if (snappy_uncompress((const char *)in, in_len, (char *)out + *out_pos, &n) != SNAPPY_OK) {
        return rv_errf(-EBADMSG, "snappy: corrupt block");
    }
    *out_pos += n;
    return 0;
}

static int snappy_decompress_xerial(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap,
                                    size_t *out_len)
{
    size_t in_pos = 0;
    size_t out_pos = 0;
    /* Each turn consumes a 16-byte header or a 4-byte length plus its block. */
    while (in_pos < in_len) {
        size_t left = in_len - in_pos;
        if (left >= XERIAL_MAGIC_BYTES && memcmp(in + in_pos, xerial_magic, 8) == 0) {
            /* A stream header, first or of a concatenated stream (snappy-java reads
             * those too). The versions are not checked: version 1 is all there is. */
            if (left < XERIAL_HEADER_BYTES)
                return rv_errf(-EBADMSG, "snappy: truncated header");
            in_pos += XERIAL_HEADER_BYTES;
            continue;
        }
        if (left < 4)
            return rv_errf(-EBADMSG, "snappy: truncated chunk length");
        uint32_t chunk_bytes = be32_load(in + in_pos);
        if (chunk_bytes > left - 4)
            return rv_errf(-EBADMSG, "snappy: chunk runs past the end");
        int rc = snappy_block_decode(in + in_pos + 4, chunk_bytes, out, out_cap, &out_pos);
        if (rc < 0)
            return rc;
        in_pos += 4 + (size_t)chunk_bytes;
    }
    *out_len = out_pos;
    return 0;
}

static int snappy_decompress(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap,
                             size_t *out_len)
{
    if (in_len >= XERIAL_MAGIC_BYTES && memcmp(in, xerial_magic, XERIAL_MAGIC_BYTES) == 0) {
        return snappy_decompress_xerial(in, in_len, out, out_cap, out_len);
    }
    size_t out_pos = 0;
    int rc = snappy_block_decode(in, in_len, out, out_cap, &out_pos);
    if (rc < 0)
        return rc;
    *out_len = out_pos;
    return 0;
}

/* lz4. */

static int lz4_compress(struct codec_ctx *ctx, int level, const uint8_t *in, size_t in_len,
                        uint8_t *out, size_t out_cap, size_t *out_len)
{
    LZ4F_preferences_t prefs = lz4_prefs(level);
    if (out_cap < LZ4F_compressFrameBound(in_len, &prefs)) {
        return rv_errf(-ENOSPC, "lz4: output may not fit %zu bytes", out_cap);
    }
    if (ctx->lz4_out == NULL &&
        LZ4F_isError(LZ4F_createCompressionContext(&ctx->lz4_out, LZ4F_VERSION))) {
        ctx->lz4_out = NULL;
        return rv_errf(-ENOBUFS, "lz4: no memory for a context");
    }
    size_t pos = LZ4F_compressBegin(ctx->lz4_out, out, out_cap, &prefs);
    if (LZ4F_isError(pos))
        return rv_errf(-EINVAL, "lz4: %s", LZ4F_getErrorName(pos));
    size_t n = LZ4F_compressUpdate(ctx->lz4_out, out + pos, out_cap - pos, in, in_len, NULL);
    if (LZ4F_isError(n))
        return rv_errf(-EINVAL, "lz4: %s", LZ4F_getErrorName(n));
    pos += n;
    n = LZ4F_compressEnd(ctx->lz4_out, out + pos, out_cap - pos, NULL);
    if (LZ4F_isError(n))
        return rv_errf(-EINVAL, "lz4: %s", LZ4F_getErrorName(n));
    *out_len = pos + n;
    return 0;
}

static int lz4_decompress(struct codec_ctx *ctx, const uint8_t *in, size_t in_len, uint8_t *out,
                          size_t out_cap, size_t *out_len)
{
    if (ctx->lz4_in == NULL &&
        LZ4F_isError(LZ4F_createDecompressionContext(&ctx->lz4_in, LZ4F_VERSION))) {
        ctx->lz4_in = NULL;
        return rv_errf(-ENOBUFS, "lz4: no memory for a context");
    }
    LZ4F_resetDecompressionContext(ctx->lz4_in);
    uint8_t probe[PROBE_BYTES];
    size_t in_pos = 0;
    size_t out_pos = 0;
    size_t hint = 1; /* 0 once a frame is complete and flushed */
    /* Concatenated frames decode back to back. Every turn makes progress or fails. */
    while (in_pos < in_len || hint != 0) {
        bool is_probing = out_pos == out_cap;
        size_t src_bytes = in_len - in_pos;
        size_t dst_bytes = is_probing ? PROBE_BYTES : out_cap - out_pos;
        hint = LZ4F_decompress(ctx->lz4_in, is_probing ? probe : out + out_pos, &dst_bytes,
                               in + in_pos, &src_bytes, NULL);
        if (LZ4F_isError(hint))
            return rv_errf(-EBADMSG, "lz4: %s", LZ4F_getErrorName(hint));
        if (is_probing && dst_bytes > 0) {
            return rv_errf(-EMSGSIZE, "lz4: output exceeds %zu bytes", out_cap);
        }
        if (src_bytes == 0 && dst_bytes == 0 && hint != 0) {
            return rv_errf(-EBADMSG, "lz4: truncated frame");
        }
        in_pos += src_bytes;
        out_pos += dst_bytes;
    }
    *out_len = out_pos;
    return 0;
}

/* zstd. */

static int zstd_compress(struct codec_ctx *ctx, int level, const uint8_t *in, size_t in_len,
                         uint8_t *out, size_t out_cap, size_t *out_len)
{
    if (ctx->zstd_out == NULL && (ctx->zstd_out = ZSTD_createCCtx()) == NULL) {
        return rv_errf(-ENOBUFS, "zstd: no memory for a context");
    }
    size_t n = ZSTD_compressCCtx(ctx->zstd_out, out, out_cap, in, in_len, level);
    if (ZSTD_isError(n)) {
        if (ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall) {
            return rv_errf(-ENOSPC, "zstd: output does not fit %zu bytes", out_cap);
        }
        return rv_errf(-EINVAL, "zstd: %s", ZSTD_getErrorName(n));
    }
    *out_len = n;
    return 0;
}

static int zstd_decompress(struct codec_ctx *ctx, const uint8_t *in, size_t in_len, uint8_t *out,
                           size_t out_cap, size_t *out_len)
{
    if (ctx->zstd_in == NULL && (ctx->zstd_in = ZSTD_createDCtx()) == NULL) {
        return rv_errf(-ENOBUFS, "zstd: no memory for a context");
    }
    /* Zero bytes hold no frame: Kafka would fail to read them, and so do we. */
    if (in_len == 0)
        return rv_errf(-EBADMSG, "zstd: empty input");
    /* One shot into the caller's buffer: frames without a content size decode until
     * the buffer is full, frames claiming more fail before decoding anything. */
    size_t n = ZSTD_decompressDCtx(ctx->zstd_in, out, out_cap, in, in_len);
    if (ZSTD_isError(n)) {
        if (ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall) {
            return rv_errf(-EMSGSIZE, "zstd: output exceeds %zu bytes", out_cap);
        }
        return rv_errf(-EBADMSG, "zstd: %s", ZSTD_getErrorName(n));
    }
    *out_len = n;
    return 0;
}

/* Dispatch. */

static int codec_check_level(enum rv_codec c, int level)
{
    bool is_ok;
    switch (c) {
    case RV_CODEC_GZIP: is_ok = level >= 1 && level <= 9; break;
    case RV_CODEC_LZ4: is_ok = level >= 0 && level <= LZ4F_compressionLevel_max(); break;
    case RV_CODEC_ZSTD: is_ok = level >= ZSTD_minCLevel() && level <= ZSTD_maxCLevel(); break;
    default: is_ok = level == 0; break;
    }
    return is_ok ? 0 : rv_errf(-EINVAL, "%s: no level %d", rv_codec_name(c), level);
}

int rv_codec_compress_level(enum rv_codec c, int level, const uint8_t *in, size_t in_len,
                            uint8_t *out, size_t out_cap, size_t *out_len)
{
    RV_ASSERT(in != NULL || in_len == 0);
    RV_ASSERT(out != NULL && out_len != NULL);
    if (!rv_codec_is_valid((int)c))
        return rv_errf(-EINVAL, "unknown codec %d", (int)c);
    if (in_len > CODEC_IN_BYTES_MAX)
        return rv_errf(-EINVAL, "compress: %zu bytes", in_len);
    int rc = codec_check_level(c, level);
    if (rc < 0)
        return rc;
    if (c == RV_CODEC_NONE) {
        if (in_len > out_cap)
            return rv_errf(-ENOSPC, "none: %zu bytes > %zu", in_len, out_cap);
        if (in_len > 0)
            memcpy(out, in, in_len);
        *out_len = in_len;
        return 0;
    }
    if (c == RV_CODEC_SNAPPY)
        return snappy_compress_xerial(in, in_len, out, out_cap, out_len);
    struct codec_ctx *ctx = codec_ctx_get();
    if (ctx == NULL)
        return rv_errf(-ENOBUFS, "%s: no memory for a context", rv_codec_name(c));
    switch (c) {
    case RV_CODEC_GZIP:
        if (level <= ISAL_DEF_MAX_LEVEL) {
            return gzip_compress_isal(ctx, level, in, in_len, out, out_cap, out_len);
        }
        return gzip_compress_zlib(ctx, level, in, in_len, out, out_cap, out_len);
    case RV_CODEC_LZ4: return lz4_compress(ctx, level, in, in_len, out, out_cap, out_len);
    default: return zstd_compress(ctx, level, in, in_len, out, out_cap, out_len);
    }
}

int rv_codec_compress(enum rv_codec c, const uint8_t *in, size_t in_len, uint8_t *out,
                      size_t out_cap, size_t *out_len)
{
    return rv_codec_compress_level(c, rv_codec_default_level(c), in, in_len, out, out_cap, out_len);
}

int rv_codec_decompress(enum rv_codec c, const uint8_t *in, size_t in_len, uint8_t *out,
                        size_t out_cap, size_t *out_len)
{
    RV_ASSERT(in != NULL || in_len == 0);
    RV_ASSERT(out != NULL && out_len != NULL);
    if (!rv_codec_is_valid((int)c))
        return rv_errf(-EINVAL, "unknown codec %d", (int)c);
    if (in_len > CODEC_IN_BYTES_MAX)
        return rv_errf(-EINVAL, "decompress: %zu bytes", in_len);
    if (c == RV_CODEC_NONE) {
        if (in_len > out_cap)
            return rv_errf(-EMSGSIZE, "none: %zu bytes > %zu", in_len, out_cap);
        if (in_len > 0)
            memcpy(out, in, in_len);
        *out_len = in_len;
        return 0;
    }
    if (c == RV_CODEC_SNAPPY)
        return snappy_decompress(in, in_len, out, out_cap, out_len);
    struct codec_ctx *ctx = codec_ctx_get();
    if (ctx == NULL)
        return rv_errf(-ENOBUFS, "%s: no memory for a context", rv_codec_name(c));
    switch (c) {
    case RV_CODEC_GZIP: return gzip_decompress(ctx, in, in_len, out, out_cap, out_len);
    case RV_CODEC_LZ4: return lz4_decompress(ctx, in, in_len, out, out_cap, out_len);
    default: return zstd_decompress(ctx, in, in_len, out, out_cap, out_len);
    }
}

int rv_codec_decompress_grow(enum rv_codec c, const uint8_t *in, size_t in_len, uint8_t **buf,
                             size_t *cap, size_t cap_max, size_t *out_len)
{
    size_t want = *cap ? *cap : (1u << 20);
    for (;;) {
        if (want > *cap) {
            uint8_t *p = realloc(*buf, want);
            if (p == NULL)
                return -ENOMEM;
            *buf = p;
            *cap = want;
        }
        int rc = rv_codec_decompress(c, in, in_len, *buf, *cap, out_len);
        if (rc != -EMSGSIZE || *cap >= cap_max)
            return rc;
        want = *cap * 2 < cap_max ? *cap * 2 : cap_max; /* bounded: a bomb stops here */
    }
}
