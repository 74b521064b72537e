/* core/varint.c - the general varint decode loops; see varint.h for the format. */
#include "core/varint.h"

/* Decode up to `bytes_max` bytes into a value of `bits` width. The last byte
 * allowed may carry only the bits that remain (64 - 63 = 1 bit for uint64,
 * 32 - 28 = 4 bits for uint32) and no continuation bit. */
static int varint_decode(const uint8_t *buf, size_t len, uint64_t *out, size_t bytes_max,
                         unsigned bits)
{
    RV_ASSERT(bytes_max * 7 >= bits);
    RV_ASSERT(buf != NULL || len == 0);
    size_t limit = len < bytes_max ? len : bytes_max;
    uint64_t v = 0;
    for (size_t i = 0; i < limit; i++) {
        uint8_t b = buf[i];
        if (i == bytes_max - 1) {
            unsigned last_bits = bits - 7 * (unsigned)i;
            if (b >> last_bits != 0)
                return -EBADMSG;
        }
        v |= (uint64_t)(b & 0x7F) << (7 * i);
        if (b < 0x80) {
            *out = v;
            return (int)(i + 1);
        }
    }
    /* Ran out of input, or of the bytes the type allows, mid-value. */
    return -EBADMSG;
}

int rv_varint_decode_u64_slow(const uint8_t *buf, size_t len, uint64_t *out)
{
    return varint_decode(buf, len, out, RV_VARINT_U64_BYTES_MAX, 64);
}

int rv_varint_decode_u32_slow(const uint8_t *buf, size_t len, uint32_t *out)
{
    uint64_t v;
    int n = varint_decode(buf, len, &v, RV_VARINT_U32_BYTES_MAX, 32);
    if (n > 0) {
        RV_ASSERT(v <= UINT32_MAX);
        *out = (uint32_t)v;
    }
    return n;
}
