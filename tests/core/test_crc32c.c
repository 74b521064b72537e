/* tests/core/test_crc32c.c - CRC-32C check vectors and agreement of the three kernels. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/crc32c.h"

TestSuite(crc32c);

typedef uint32_t crc_fn(uint32_t crc, const void *buf, size_t len);

static crc_fn *const impls[] = {rv_crc32c, rv_crc32c_sse42, rv_crc32c_portable};
static const char *const impl_names[] = {"isal", "sse42", "portable"};

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    /* xorshift64*: deterministic from the printed seed. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static void check_all(const void *buf, size_t len, uint32_t want)
{
    for (size_t i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
        uint32_t got = impls[i](0, buf, len);
        cr_assert_eq(got, want, "%s: len %zu: got %08x want %08x", impl_names[i], len, got, want);
    }
}

Test(crc32c, matches_check_value_of_123456789)
{
    check_all("123456789", 9, 0xE3069283u);
}

Test(crc32c, matches_rfc3720_vectors)
{
    uint8_t buf[32];
    memset(buf, 0x00, sizeof(buf));
    check_all(buf, sizeof(buf), 0x8A9136AAu);
    memset(buf, 0xFF, sizeof(buf));
    check_all(buf, sizeof(buf), 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)i;
    check_all(buf, sizeof(buf), 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)(31 - i);
    check_all(buf, sizeof(buf), 0x113FDB5Cu);
}

Test(crc32c, matches_rfc3720_iscsi_read_command)
{
    static const uint8_t cmd[48] = {
        0x01, 0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
        0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    };
    check_all(cmd, sizeof(cmd), 0xD9963A56u);
}

Test(crc32c, empty_input_returns_crc_unchanged)
{
    const uint32_t seeds[] = {0, 1, 0xE3069283u, 0xFFFFFFFFu};
    for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
        for (size_t i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
            cr_assert_eq(impls[i](seeds[s], "x", 0), seeds[s], "%s", impl_names[i]);
            cr_assert_eq(impls[i](seeds[s], NULL, 0), seeds[s], "%s", impl_names[i]);
        }
    }
}

Test(crc32c, implementations_agree_on_random_misaligned_buffers)
{
    const uint64_t seed = 0xC5C32C0FFEEULL;
    rng_state = seed;
    cr_log_info("seed %llu", (unsigned long long)seed);
    enum { BUF_BYTES = 70000 };
    uint8_t *buf = malloc(BUF_BYTES);
    cr_assert_not_null(buf);
    for (size_t i = 0; i < BUF_BYTES; i++)
        buf[i] = (uint8_t)rng_next();
    for (int round = 0; round < 2000; round++) {
        size_t start = rng_next() % 64;
        /* Mostly short lengths, where head and tail handling matter, some long. */
        size_t len = (round % 8 == 0) ? rng_next() % (BUF_BYTES - 64) : rng_next() % 300;
        uint32_t init = (round % 2 == 0) ? 0 : (uint32_t)rng_next();
        uint32_t want = rv_crc32c_portable(init, buf + start, len);
        cr_assert_eq(rv_crc32c(init, buf + start, len), want, "start %zu len %zu", start, len);
        cr_assert_eq(rv_crc32c_sse42(init, buf + start, len), want, "start %zu len %zu", start,
                     len);
    }
    free(buf);
}

Test(crc32c, chained_calls_equal_one_call)
{
    const uint64_t seed = 42;
    rng_state = seed;
    cr_log_info("seed %llu", (unsigned long long)seed);
    uint8_t buf[4096];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)rng_next();
    for (size_t i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
        uint32_t whole = impls[i](0, buf, sizeof(buf));
        for (int round = 0; round < 200; round++) {
            size_t cut = rng_next() % (sizeof(buf) + 1);
            uint32_t first = impls[i](0, buf, cut);
            uint32_t both = impls[i](first, buf + cut, sizeof(buf) - cut);
            cr_assert_eq(both, whole, "%s: cut at %zu", impl_names[i], cut);
        }
    }
    /* Chaining across implementations gives the same result too. */
    uint32_t mixed = rv_crc32c_portable(rv_crc32c(0, "1234", 4), "56789", 5);
    cr_assert_eq(mixed, 0xE3069283u);
}

Test(crc32c, detects_single_bit_flip)
{
    uint8_t buf[256];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7);
    uint32_t clean = rv_crc32c(0, buf, sizeof(buf));
    for (size_t bit = 0; bit < sizeof(buf) * 8; bit++) {
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        cr_assert_neq(rv_crc32c(0, buf, sizeof(buf)), clean, "bit %zu", bit);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
}

Test(crc32c, handles_lengths_beyond_int_max)
{
    /* ISA-L takes an int length, so rv_crc32c must split. Untouched anonymous
     * pages read as zeros without being backed, so this costs little memory. */
    const size_t len = (size_t)INT32_MAX + 4097;
    uint8_t *buf =
        mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (buf == MAP_FAILED)
        cr_skip_test("mmap of %zu bytes failed", len);
    const size_t marks[] = {0,         (size_t)1 << 30, ((size_t)1 << 30) + 1, INT32_MAX - 1,
                            INT32_MAX, len - 1};
    for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++)
        buf[marks[i]] = (uint8_t)(0xA5 + i);
    uint32_t want = rv_crc32c_sse42(0, buf, len);
    cr_assert_eq(rv_crc32c(0, buf, len), want);
    munmap(buf, len);
}
