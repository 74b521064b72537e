/* core/trace.c - diagnostic logging (see trace.h). */
#include "core/trace.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/ctx.h"

/* -1: not read from the environment yet. Relaxed: a level change racing with a
 * log line may or may not affect that line, which is fine. */
static _Atomic int trace_level = -1;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR", "OFF"};

int rv_trace_parse_level(const char *s, enum rv_trace_level *out)
{
    for (int i = 0; i <= RV_TRACE_OFF; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum rv_trace_level)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = RV_TRACE_WARN;
        return 0;
    }
    return -EINVAL;
}

enum rv_trace_level rv_trace_get_level(void)
{
    int l = atomic_load_explicit(&trace_level, memory_order_relaxed);
    if (l >= 0)
        return (enum rv_trace_level)l;
    enum rv_trace_level lvl = RV_TRACE_WARN;
    const char *env = getenv("RIVVEN_TRACE");
    if (env != NULL && rv_trace_parse_level(env, &lvl) < 0)
        lvl = RV_TRACE_WARN;
    atomic_store_explicit(&trace_level, (int)lvl, memory_order_relaxed);
    return lvl;
}

void rv_trace_set_level(enum rv_trace_level level)
{
    atomic_store_explicit(&trace_level, (int)level, memory_order_relaxed);
}

bool rv_trace_enabled(enum rv_trace_level level)
{
    return level >= rv_trace_get_level() && level < RV_TRACE_OFF;
}

void rv_trace_at(enum rv_trace_level level, const char *fmt, ...)
{
    char line[1024];
    uint64_t now_us = rv_clock_now_ns() / 1000;
    int shard = rv_ctx_shard_id();
    int n;
    if (shard >= 0)
        n = snprintf(line, sizeof(line), "%llu.%06llu %-5s [shard %d] ",
                     (unsigned long long)(now_us / 1000000), (unsigned long long)(now_us % 1000000),
                     level_names[level], shard);
    else
        n = snprintf(line, sizeof(line), "%llu.%06llu %-5s [main] ",
                     (unsigned long long)(now_us / 1000000), (unsigned long long)(now_us % 1000000),
                     level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    /* One write per line keeps lines whole across threads; a short or failed
     * write of a diagnostic is not worth failing for. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
