/*
 * core/clock.h - monotonic time.
 *
 * rv_clock_now_ns() reads CLOCK_MONOTONIC through the vDSO (no syscall). The
 * clock can be replaced for deterministic tests with rv_clock_set_source().
 */
#ifndef RV_CORE_CLOCK_H
#define RV_CORE_CLOCK_H

#include <stdint.h>
#include <time.h>

typedef uint64_t rv_clock_source_fn(void);

/* Install a fake clock (tests) or NULL for CLOCK_MONOTONIC. Not thread-safe
 * against concurrent readers: set it before starting threads. */
void rv_clock_set_source(rv_clock_source_fn *fn);

extern rv_clock_source_fn *rv_clock_source;

static inline uint64_t rv_clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Monotonic nanoseconds since an arbitrary point. Cannot fail. */
static inline uint64_t rv_clock_now_ns(void)
{
    if (rv_clock_source != NULL)
        return rv_clock_source();
    return rv_clock_mono_ns();
}

/* Wall-clock milliseconds since the Unix epoch (Kafka timestamps). */
static inline int64_t rv_clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif /* RV_CORE_CLOCK_H */
