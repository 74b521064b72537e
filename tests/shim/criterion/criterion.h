/*
 * tests/shim/criterion/criterion.h - a minimal stand-in for Criterion, used
 * only by the ThreadSanitizer build.
 *
 * Criterion cannot start under TSan (its inheritable arena fails to map:
 * "Could not initialize inheritable arena", Snaipe/Criterion#274), so the TSan
 * build compiles the same test sources against this header instead. It runs
 * every test of the executable in order, in one process, with the suite's init
 * and fini around each; a failed assertion prints its place and aborts. Death
 * tests (.signal) need a fork per test and are skipped here: the normal and
 * ASan runs cover them. Only the subset of Criterion that our tests use exists.
 */
#ifndef RV_TESTS_SHIM_CRITERION_H
#define RV_TESTS_SHIM_CRITERION_H

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct shim_opts {
    void (*init)(void);
    void (*fini)(void);
    int signal;
    int exit_code;
    double timeout;
    bool disabled;
    const char *description;
};

struct shim_entry {
    const char *suite;
    const char *name;
    void (*fn)(void); /* NULL for a suite entry */
    const struct shim_opts *opts;
};

#define SHIM_ENTRIES_MAX 512
static struct shim_entry shim_entries[SHIM_ENTRIES_MAX];
static int shim_entry_count;

static inline void shim_register(const char *suite, const char *name, void (*fn)(void),
                                 const struct shim_opts *opts)
{
    if (shim_entry_count == SHIM_ENTRIES_MAX) {
        fprintf(stderr, "shim: too many tests\n");
        abort();
    }
    shim_entries[shim_entry_count++] = (struct shim_entry){suite, name, fn, opts};
}

#define TestSuite(s, ...)                                                                          \
    static const struct shim_opts shim_suite_opts_##s = {.description = NULL, __VA_ARGS__};        \
    __attribute__((constructor)) static void shim_suite_reg_##s(void)                              \
    {                                                                                              \
        shim_register(#s, NULL, NULL, &shim_suite_opts_##s);                                       \
    }                                                                                              \
    extern int shim_suite_semicolon_##s /* takes the caller's ';' */

#define Test(s, n, ...)                                                                            \
    static void shim_test_##s##_##n(void);                                                         \
    static const struct shim_opts shim_test_opts_##s##_##n = {.description = NULL, __VA_ARGS__};   \
    __attribute__((constructor)) static void shim_test_reg_##s##_##n(void)                         \
    {                                                                                              \
        shim_register(#s, #n, shim_test_##s##_##n, &shim_test_opts_##s##_##n);                     \
    }                                                                                              \
    static void shim_test_##s##_##n(void)

static inline void shim_fail(const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#include <stdarg.h>
static inline void shim_fail(const char *file, int line, const char *expr, const char *fmt, ...)
{
    fprintf(stderr, "[FAIL] %s:%d: %s\n", file, line, expr);
    if (fmt != NULL && strcmp(fmt, " ") != 0) {
        va_list ap;
        va_start(ap, fmt);
        fputs("       ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
    fflush(stderr);
    abort();
}

/* The message arguments are optional: "" glues onto a literal format. */
#define SHIM_CHECK(cond, expr, ...)                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            shim_fail(__FILE__, __LINE__, expr, " " __VA_ARGS__);                                  \
    } while (0)

#define cr_assert(c, ...)          SHIM_CHECK((c), #c, __VA_ARGS__)
#define cr_assert_not(c, ...)      SHIM_CHECK(!(c), "!(" #c ")", __VA_ARGS__)
#define cr_assert_eq(a, b, ...)    SHIM_CHECK((a) == (b), #a " == " #b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...)   SHIM_CHECK((a) != (b), #a " != " #b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...)    SHIM_CHECK((a) < (b), #a " < " #b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...)   SHIM_CHECK((a) <= (b), #a " <= " #b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...)    SHIM_CHECK((a) > (b), #a " > " #b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...)   SHIM_CHECK((a) >= (b), #a " >= " #b, __VA_ARGS__)
#define cr_assert_null(p, ...)     SHIM_CHECK((p) == NULL, #p " == NULL", __VA_ARGS__)
#define cr_assert_not_null(p, ...) SHIM_CHECK((p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_assert_fail(...)        SHIM_CHECK(0, "cr_assert_fail", __VA_ARGS__)
#define cr_log_info(...)           (printf("[INFO] " __VA_ARGS__), putchar('\n'))
#define cr_log_warn(...)           (printf("[WARN] " __VA_ARGS__), putchar('\n'))
/* Leaves the test function it is written in, as Criterion's does. */
#define cr_skip_test(...)                                                                          \
    do {                                                                                           \
        printf("[SKIP] " __VA_ARGS__);                                                             \
        putchar('\n');                                                                             \
        return;                                                                                    \
    } while (0)
#define cr_assert_float_eq(a, b, eps, ...)                                                         \
    SHIM_CHECK(((a) - (b) <= (eps)) && ((b) - (a) <= (eps)), #a " ~= " #b, __VA_ARGS__)
#define cr_assert_arr_eq(a, b, n, ...)                                                             \
    SHIM_CHECK(memcmp((a), (b), (n)) == 0, #a " == " #b, __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) SHIM_CHECK(strcmp((a), (b)) == 0, #a " == " #b, __VA_ARGS__)

static inline const struct shim_opts *shim_suite_of(const char *suite)
{
    for (int i = 0; i < shim_entry_count; i++) {
        if (shim_entries[i].fn == NULL && strcmp(shim_entries[i].suite, suite) == 0)
            return shim_entries[i].opts;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    int ran = 0, skipped = 0;
    for (int i = 0; i < shim_entry_count; i++) {
        const struct shim_entry *e = &shim_entries[i];
        if (e->fn == NULL)
            continue;
        const struct shim_opts *so = shim_suite_of(e->suite);
        if (e->opts->signal != 0 || e->opts->exit_code != 0 || e->opts->disabled) {
            printf("[SKIP] %s::%s (needs a process of its own)\n", e->suite, e->name);
            skipped++;
            continue;
        }
        if (so != NULL && so->init != NULL)
            so->init();
        e->fn();
        if (so != NULL && so->fini != NULL)
            so->fini();
        printf("[PASS] %s::%s\n", e->suite, e->name);
        fflush(stdout);
        ran++;
    }
    printf("[====] Synthesis: Tested: %d | Passing: %d | Failing: 0 | Crashing: 0 | Skipped: %d\n",
           ran, ran, skipped);
    return 0;
}

#endif /* RV_TESTS_SHIM_CRITERION_H */
