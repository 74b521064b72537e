/*
 * core/crc32c.c - CRC-32C through ISA-L, SSE4.2 and a slicing-by-8 table.
 *
 * The tables are filled by a constructor before main() runs, so every later
 * reader sees them complete without any synchronisation.
 */
#include "core/crc32c.h"

#include <isa-l/crc.h>
#include <limits.h>
#include <nmmintrin.h>
#include <stdbool.h>
#include <string.h>

#include "core/assert.h"

#define CRC32C_POLY_REFLECTED 0x82F63B78u
/* ISA-L takes an int length; feed it chunks that fit, 8-byte aligned in size so
 * the chunk boundaries don't disturb its word-at-a-time loop. */
#define CRC32C_ISAL_CHUNK_MAX ((size_t)1 << 30)

RV_STATIC_ASSERT(CRC32C_ISAL_CHUNK_MAX <= (size_t)INT_MAX);

static uint32_t crc32c_table[8][256]; /* [k][b]: b followed by k zero bytes */
static bool crc32c_has_sse42;         /* decided once, before main() */

__attribute__((constructor)) static void crc32c_setup(void)
{
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t crc = b;
        for (int bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (CRC32C_POLY_REFLECTED & (0u - (crc & 1u)));
        crc32c_table[0][b] = crc;
    }
    for (uint32_t b = 0; b < 256; b++) {
        for (int k = 1; k < 8; k++) {
            uint32_t prev = crc32c_table[k - 1][b];
            crc32c_table[k][b] = (prev >> 8) ^ crc32c_table[0][prev & 0xFF];
        }
    }
    /* Constructors may run before the compiler's own CPU probe; ask for it. */
    __builtin_cpu_init();
    crc32c_has_sse42 = __builtin_cpu_supports("sse4.2");
}

uint32_t rv_crc32c(uint32_t crc, const void *buf, size_t len)
{
    RV_ASSERT(buf != NULL || len == 0);
    /* ISA-L's crc32_iscsi neither pre- nor post-inverts; we do both so that the
     * result is the standard CRC and the caller can chain calls. */
    uint32_t state = ~crc;
    const unsigned char *p = buf;
    while (len > 0) {
        size_t n = len < CRC32C_ISAL_CHUNK_MAX ? len : CRC32C_ISAL_CHUNK_MAX;
        /* ISA-L only reads the buffer; its prototype just lacks the const. */
        state = crc32_iscsi((unsigned char *)p, (int)n, state);
        p += n;
        len -= n;
    }
    return ~state;
}

uint32_t rv_crc32c_portable(uint32_t crc, const void *buf, size_t len)
{
    RV_ASSERT(buf != NULL || len == 0);
    const uint8_t *p = buf;
    uint32_t state = ~crc;
    while (len >= 8) {
        uint64_t word;
        memcpy(&word, p, sizeof(word)); /* unaligned and aliasing-safe */
        word ^= state;                  /* little-endian: the state meets bytes 0..3 */
        state = crc32c_table[7][word & 0xFF] ^ crc32c_table[6][(word >> 8) & 0xFF] ^
                crc32c_table[5][(word >> 16) & 0xFF] ^ crc32c_table[4][(word >> 24) & 0xFF] ^
                crc32c_table[3][(word >> 32) & 0xFF] ^ crc32c_table[2][(word >> 40) & 0xFF] ^
                crc32c_table[1][(word >> 48) & 0xFF] ^ crc32c_table[0][word >> 56];
        p += 8;
        len -= 8;
    }
    while (len > 0) {
        state = (state >> 8) ^ crc32c_table[0][(state ^ *p) & 0xFF];
        p++;
        len--;
    }
    return ~state;
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42_run(uint32_t state, const uint8_t *p,
                                                                   size_t len)
{
    /* Align first so the 8-byte loads never straddle a cache line. */
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        state = _mm_crc32_u8(state, *p);
        p++;
        len--;
    }
    uint64_t state64 = state;
    while (len >= 8) {
        uint64_t word;
        memcpy(&word, p, sizeof(word));
        state64 = _mm_crc32_u64(state64, word);
        p += 8;
        len -= 8;
    }
    state = (uint32_t)state64;
    while (len > 0) {
        state = _mm_crc32_u8(state, *p);
        p++;
        len--;
    }
    return state;
}

uint32_t rv_crc32c_sse42(uint32_t crc, const void *buf, size_t len)
{
    RV_ASSERT(buf != NULL || len == 0);
    if (!crc32c_has_sse42)
        return rv_crc32c_portable(crc, buf, len);
    return ~crc32c_sse42_run(~crc, buf, len);
}
