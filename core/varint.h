/*
 * core/varint.h - Kafka/protobuf variable-length integers.
 *
 * An unsigned varint stores 7 bits per byte, least significant group first; the
 * high bit of a byte says another byte follows. A uint64 takes 1..10 bytes and a
 * uint32 1..5. Signed values are zigzag-mapped first (0, -1, 1, -2, ... become
 * 0, 1, 2, 3, ...) so that small magnitudes stay short: Kafka's "varint" is a
 * zigzag int32 and its "varlong" a zigzag int64.
 *
 * Decoders take bytes from the network or a disk, so they never assert on them:
 * a truncated value, one longer than the type allows or one whose last byte
 * carries bits beyond the type's width returns -EBADMSG. Non-minimal encodings
 * (0x80 0x00 for 0) are accepted, as Kafka and protobuf accept them. Decoders
 * read at most `len` bytes. Everything here is pure and thread-safe.
 *
 * The size, encode and zigzag functions and the one-byte decode path are inline;
 * the general decode loop lives in varint.c.
 */
#ifndef RV_CORE_VARINT_H
#define RV_CORE_VARINT_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "core/assert.h"

#define RV_VARINT_U64_BYTES_MAX 10 /* ceil(64 / 7) */
#define RV_VARINT_U32_BYTES_MAX 5  /* ceil(32 / 7) */

/* Decode loops behind the one-byte fast paths below; call those instead. */
RV_MUST_CHECK int rv_varint_decode_u64_slow(const uint8_t *buf, size_t len, uint64_t *out);
RV_MUST_CHECK int rv_varint_decode_u32_slow(const uint8_t *buf, size_t len, uint32_t *out);

/* Zigzag. */

/* Map a signed value to an unsigned one with small magnitudes kept small. */
static inline uint64_t rv_zigzag_encode64(int64_t v)
{
    /* Spelt with unsigned arithmetic: shifting a negative value is not portable C. */
    return ((uint64_t)v << 1) ^ (0 - ((uint64_t)v >> 63));
}

/* Inverse of rv_zigzag_encode64(). */
static inline int64_t rv_zigzag_decode64(uint64_t u)
{
    return (int64_t)((u >> 1) ^ (0 - (u & 1)));
}

/* 32-bit zigzag, as Kafka's int32 varint uses. */
static inline uint32_t rv_zigzag_encode32(int32_t v)
{
    return ((uint32_t)v << 1) ^ (0 - ((uint32_t)v >> 31));
}

/* Inverse of rv_zigzag_encode32(). */
static inline int32_t rv_zigzag_decode32(uint32_t u)
{
    return (int32_t)((u >> 1) ^ (0 - (u & 1)));
}

/* Sizes. */

/* Bytes rv_varint_encode_u64(v) writes: 1..10. */
static inline size_t rv_varint_size_u64(uint64_t v)
{
    /* Significant bits, at least one so that 0 takes a byte; 7 per byte. */
    size_t bits = 64 - (size_t)__builtin_clzll(v | 1);
    return (bits + 6) / 7;
}

/* Bytes rv_varint_encode_u32(v) writes: 1..5. */
static inline size_t rv_varint_size_u32(uint32_t v)
{
    return rv_varint_size_u64(v);
}

/* Bytes rv_varint_encode_i64(v) writes: 1..10. */
static inline size_t rv_varint_size_i64(int64_t v)
{
    return rv_varint_size_u64(rv_zigzag_encode64(v));
}

/* Bytes rv_varint_encode_i32(v) writes: 1..5. */
static inline size_t rv_varint_size_i32(int32_t v)
{
    return rv_varint_size_u64(rv_zigzag_encode32(v));
}

/* Encoding. out must have room for the maximum size of the type (10 bytes for
 * 64-bit values, 5 for 32-bit ones) or for rv_varint_size_*(v) bytes. */

/* Write v as an unsigned varint; returns the bytes written (1..10). */
static inline size_t rv_varint_encode_u64(uint8_t *out, uint64_t v)
{
    RV_ASSERT(out != NULL);
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

/* Write v as an unsigned varint; returns the bytes written (1..5). */
static inline size_t rv_varint_encode_u32(uint8_t *out, uint32_t v)
{
    return rv_varint_encode_u64(out, v);
}

/* Write v zigzag-encoded (a Kafka varlong); returns the bytes written (1..10). */
static inline size_t rv_varint_encode_i64(uint8_t *out, int64_t v)
{
    return rv_varint_encode_u64(out, rv_zigzag_encode64(v));
}

/* Write v zigzag-encoded (a Kafka varint); returns the bytes written (1..5). */
static inline size_t rv_varint_encode_i32(uint8_t *out, int32_t v)
{
    return rv_varint_encode_u64(out, rv_zigzag_encode32(v));
}

/* Decoding. Each reads at most len bytes of buf, stores the value in *out and
 * returns the bytes consumed (> 0), or returns -EBADMSG and leaves *out alone
 * when the input is truncated, too long, or overflows the type. */

/* Decode an unsigned varint of up to 10 bytes. */
RV_MUST_CHECK static inline int rv_varint_decode_u64(const uint8_t *buf, size_t len, uint64_t *out)
{
    RV_ASSERT(out != NULL);
    if (RV_LIKELY(len > 0 && buf[0] < 0x80)) {
        *out = buf[0];
        return 1;
    }
    return rv_varint_decode_u64_slow(buf, len, out);
}

/* Decode an unsigned varint of up to 5 bytes whose value fits 32 bits. */
RV_MUST_CHECK static inline int rv_varint_decode_u32(const uint8_t *buf, size_t len, uint32_t *out)
{
    RV_ASSERT(out != NULL);
    if (RV_LIKELY(len > 0 && buf[0] < 0x80)) {
        *out = buf[0];
        return 1;
    }
    return rv_varint_decode_u32_slow(buf, len, out);
}

/* Decode a zigzag varlong (Kafka's signed 64-bit varint). */
RV_MUST_CHECK static inline int rv_varint_decode_i64(const uint8_t *buf, size_t len, int64_t *out)
{
    RV_ASSERT(out != NULL);
    uint64_t u;
    int n = rv_varint_decode_u64(buf, len, &u);
    if (n > 0)
        *out = rv_zigzag_decode64(u);
    return n;
}

/* Decode a zigzag varint (Kafka's signed 32-bit varint). */
RV_MUST_CHECK static inline int rv_varint_decode_i32(const uint8_t *buf, size_t len, int32_t *out)
{
    RV_ASSERT(out != NULL);
    uint32_t u;
    int n = rv_varint_decode_u32(buf, len, &u);
    if (n > 0)
        *out = rv_zigzag_decode32(u);
    return n;
}

#endif /* RV_CORE_VARINT_H */
