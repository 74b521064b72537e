/*
 * core/crc32c.h - CRC-32C (Castagnoli), the checksum of Kafka RecordBatch v2.
 *
 * Reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF, so
 * rv_crc32c(0, "123456789", 9) == 0xE3069283. The pre- and post-inversion
 * happen inside every call, which makes the functions chainable:
 *
 *   rv_crc32c(rv_crc32c(0, a, n), b, m) == rv_crc32c(0, a || b, n + m)
 *
 * rv_crc32c() is the one to use; it goes through ISA-L, which picks the fastest
 * kernel for the CPU at run time. rv_crc32c_sse42() and rv_crc32c_portable()
 * exist as references for tests and benchmarks. All are pure functions of their
 * arguments and may be called from any thread. x86-64 only (SSE4.2 intrinsics).
 */
#ifndef RV_CORE_CRC32C_H
#define RV_CORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extend `crc` (0 to start) over len bytes of buf and return the new CRC-32C.
 * buf may be NULL when len is 0; then crc is returned unchanged. Uses ISA-L. */
uint32_t rv_crc32c(uint32_t crc, const void *buf, size_t len);

/* Same result as rv_crc32c(), computed with the SSE4.2 crc32 instruction one
 * 8-byte word at a time; falls back to rv_crc32c_portable() on CPUs without
 * SSE4.2. */
uint32_t rv_crc32c_sse42(uint32_t crc, const void *buf, size_t len);

/* Same result as rv_crc32c(), in plain C with slicing-by-8 tables. */
uint32_t rv_crc32c_portable(uint32_t crc, const void *buf, size_t len);

#endif /* RV_CORE_CRC32C_H */
