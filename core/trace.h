/*
 * core/trace.h - diagnostic logging ("log" means the Kafka partition log only).
 *
 * Lines go to stderr as `LEVEL [shard N] message` with a monotonic timestamp.
 * The level threshold is process-wide (RIVVEN_TRACE=debug|info|warn|error in the
 * environment, default warn; or rv_trace_set_level). One write(2) per line, so lines from
 * different shards never interleave; logging is for rare events and never sits
 * on a per-record path.
 */
#ifndef RV_CORE_TRACE_H
#define RV_CORE_TRACE_H

#include <stdbool.h>

enum rv_trace_level {
    RV_TRACE_DEBUG = 0,
    RV_TRACE_INFO = 1,
    RV_TRACE_WARN = 2,
    RV_TRACE_ERROR = 3,
    RV_TRACE_OFF = 4,
};

void rv_trace_set_level(enum rv_trace_level level);
enum rv_trace_level rv_trace_get_level(void);
/* Parse "debug", "info", "warn", "error", "off"; -EINVAL for anything else. */
int rv_trace_parse_level(const char *s, enum rv_trace_level *out);
bool rv_trace_enabled(enum rv_trace_level level);

void rv_trace_at(enum rv_trace_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define rv_trace(level, ...)                                                                       \
    do {                                                                                           \
        if (rv_trace_enabled(level))                                                               \
            rv_trace_at(level, __VA_ARGS__);                                                       \
    } while (0)

#define rv_debug(...) rv_trace(RV_TRACE_DEBUG, __VA_ARGS__)
#define rv_info(...)  rv_trace(RV_TRACE_INFO, __VA_ARGS__)
#define rv_warn(...)  rv_trace(RV_TRACE_WARN, __VA_ARGS__)
#define rv_error(...) rv_trace(RV_TRACE_ERROR, __VA_ARGS__)

#endif /* RV_CORE_TRACE_H */
