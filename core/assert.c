/* core/assert.c - assertion failure reporting. */
#include "core/assert.h"

#include <execinfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/ctx.h"

void rv_assert_backtrace(void)
{
    void *frames[64];
    int n = backtrace(frames, (int)RV_ARRAY_LEN(frames));
    backtrace_symbols_fd(frames, n, STDERR_FILENO);
}

void rv_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "rivven: assertion failed on shard %d: %s (%s:%d)\n", rv_ctx_shard_id(), expr,
            file, line);
    rv_assert_backtrace();
    fflush(stderr);
    abort();
}
