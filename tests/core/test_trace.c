/* tests/core/test_trace.c - tests core/trace.c: levels and line format. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/ctx.h"
#include "core/trace.h"

TestSuite(trace);

Test(trace, parse_level_accepts_names_and_refuses_others)
{
    enum rv_trace_level l;
    cr_assert_eq(rv_trace_parse_level("debug", &l), 0);
    cr_assert_eq(l, RV_TRACE_DEBUG);
    cr_assert_eq(rv_trace_parse_level("WARN", &l), 0);
    cr_assert_eq(l, RV_TRACE_WARN);
    cr_assert_eq(rv_trace_parse_level("warning", &l), 0);
    cr_assert_eq(l, RV_TRACE_WARN);
    cr_assert_eq(rv_trace_parse_level("off", &l), 0);
    cr_assert_eq(l, RV_TRACE_OFF);
    cr_assert_eq(rv_trace_parse_level("loud", &l), -EINVAL);
}

Test(trace, threshold_filters_levels)
{
    rv_trace_set_level(RV_TRACE_WARN);
    cr_assert_not(rv_trace_enabled(RV_TRACE_INFO));
    cr_assert(rv_trace_enabled(RV_TRACE_WARN));
    cr_assert(rv_trace_enabled(RV_TRACE_ERROR));
    rv_trace_set_level(RV_TRACE_OFF);
    cr_assert_not(rv_trace_enabled(RV_TRACE_ERROR));
}

/* Capture stderr in a pipe around one log call. */
static void capture(char *out, size_t len, int shard)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    rv_ctx_set_shard_id(shard);
    rv_trace_set_level(RV_TRACE_DEBUG);
    rv_warn("disk %s is %d%% full", "vda", 93);
    rv_ctx_set_shard_id(-1);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fds[1]);
    ssize_t n = read(fds[0], out, len - 1);
    close(fds[0]);
    cr_assert_gt(n, 0);
    out[n] = '\0';
}

Test(trace, lines_carry_level_shard_and_message)
{
    char line[512];
    capture(line, sizeof(line), 5);
    cr_assert(strstr(line, "WARN") != NULL, "%s", line);
    cr_assert(strstr(line, "[shard 5]") != NULL, "%s", line);
    cr_assert(strstr(line, "disk vda is 93% full\n") != NULL, "%s", line);
    capture(line, sizeof(line), -1);
    cr_assert(strstr(line, "[main]") != NULL, "%s", line);
}
