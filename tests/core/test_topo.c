/* tests/core/test_topo.c - cpuset parsing and formatting, topology queries, pinning. */
#include <criterion/criterion.h>

#include <errno.h>
#include <numa.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#include "core/err.h"
#include "core/topo.h"

TestSuite(topo);

static struct rv_cpuset set_of(const unsigned *cpus, size_t n)
{
    struct rv_cpuset s;
    rv_cpuset_clear(&s);
    for (size_t i = 0; i < n; i++)
        rv_cpuset_add(&s, cpus[i]);
    return s;
}

static void expect_parses_to(const char *text, const unsigned *cpus, size_t n)
{
    struct rv_cpuset got;
    struct rv_cpuset want = set_of(cpus, n);
    int rc = rv_cpuset_parse(text, &got);
    cr_assert_eq(rc, 0, "parse \"%s\": %d (%s)", text, rc, rv_err_msg());
    cr_assert(memcmp(&got, &want, sizeof(got)) == 0, "parse \"%s\": wrong set", text);
}

/* Parsing fails with -EINVAL, leaves *out alone and says why (the message
 * contains `what`). */
static void expect_rejected(const char *text, const char *what)
{
    struct rv_cpuset out;
    rv_cpuset_clear(&out);
    rv_cpuset_add(&out, 7);
    struct rv_cpuset before = out;

    rv_err_clear();
    int rc = rv_cpuset_parse(text, &out);
    cr_assert_eq(rc, -EINVAL, "parse \"%s\" gave %d", text, rc);
    cr_assert(memcmp(&out, &before, sizeof(out)) == 0, "parse \"%s\" changed *out", text);
    cr_assert(strstr(rv_err_msg(), "cpuset \"") != NULL, "message: %s", rv_err_msg());
    cr_assert(strstr(rv_err_msg(), what) != NULL, "parse \"%s\": message \"%s\" lacks \"%s\"", text,
              rv_err_msg(), what);
}

Test(topo, parse_accepts_single_cpu_ranges_and_lists)
{
    expect_parses_to("5", (const unsigned[]){5}, 1);
    expect_parses_to("0-3,8", (const unsigned[]){0, 1, 2, 3, 8}, 5);
    expect_parses_to("0-1,4-7,12", (const unsigned[]){0, 1, 4, 5, 6, 7, 12}, 7);
    expect_parses_to("1023", (const unsigned[]){1023}, 1);
    expect_parses_to("2-2", (const unsigned[]){2}, 1);
    expect_parses_to("8,0-1", (const unsigned[]){0, 1, 8}, 3);
}

Test(topo, parse_tolerates_whitespace_around_items)
{
    expect_parses_to(" 0 - 3 , 8 ", (const unsigned[]){0, 1, 2, 3, 8}, 5);
    expect_parses_to("\t1,\n2\n", (const unsigned[]){1, 2}, 2);
}

Test(topo, parse_covers_the_whole_range)
{
    struct rv_cpuset s;
    cr_assert_eq(rv_cpuset_parse("0-1023", &s), 0);
    cr_assert_eq(rv_cpuset_count(&s), 1024);
    cr_assert(rv_cpuset_has(&s, 0));
    cr_assert(rv_cpuset_has(&s, 1023));
}

Test(topo, parse_rejects_empty_strings)
{
    expect_rejected("", "empty");
    expect_rejected("   ", "empty");
}

Test(topo, parse_rejects_garbage)
{
    expect_rejected("abc", "expected a CPU number at column 1");
    expect_rejected("1x", "unexpected character at column 2");
    expect_rejected("1 2", "unexpected character at column 3");
    expect_rejected("-1", "expected a CPU number at column 1");
    expect_rejected("1-", "expected a CPU number at end of string");
    expect_rejected("1-x", "expected a CPU number at column 3");
    expect_rejected("0x3", "unexpected character");
    expect_rejected("1-2-3", "unexpected character at column 4");
}

Test(topo, parse_rejects_reversed_ranges)
{
    expect_rejected("3-1", "range 3-1 is reversed");
    expect_rejected("0,9-8", "range 9-8 is reversed");
}

Test(topo, parse_rejects_cpus_beyond_the_limit)
{
    expect_rejected("1024", "CPU 1024 is out of range");
    expect_rejected("0-1024", "CPU 1024 is out of range");
    expect_rejected("99999999999999999999999", "CPU 99999999999999999999999 is out of range");
}

Test(topo, parse_rejects_empty_items)
{
    expect_rejected("1,", "trailing comma");
    expect_rejected("1, ", "trailing comma");
    expect_rejected(",1", "empty item at column 1");
    expect_rejected("1,,2", "empty item at column 3");
}

Test(topo, format_writes_canonical_ranges)
{
    char buf[64];
    struct rv_cpuset s = set_of((const unsigned[]){8, 0, 1, 2, 3, 10, 11, 20}, 8);
    cr_assert_eq(rv_cpuset_format(&s, buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "0-3,8,10-11,20");

    rv_cpuset_clear(&s);
    cr_assert_eq(rv_cpuset_format(&s, buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "");

    s = set_of((const unsigned[]){1023}, 1);
    cr_assert_eq(rv_cpuset_format(&s, buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "1023");
}

Test(topo, format_round_trips_through_parse)
{
    const char *texts[] = {"0", "0-3,8", "0-1,4-7,12", "1,3,5,7", "0-1023", "100-200,1000-1023"};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct rv_cpuset s;
        struct rv_cpuset again;
        char buf[128];
        cr_assert_eq(rv_cpuset_parse(texts[i], &s), 0);
        cr_assert_eq(rv_cpuset_format(&s, buf, sizeof(buf)), 0);
        cr_assert_str_eq(buf, texts[i]);
        cr_assert_eq(rv_cpuset_parse(buf, &again), 0);
        cr_assert(memcmp(&s, &again, sizeof(s)) == 0);
    }
}

Test(topo, format_reports_enospc_when_too_small)
{
    char buf[8];
    struct rv_cpuset s;
    cr_assert_eq(rv_cpuset_parse("0-3,8", &s), 0);
    cr_assert_eq(rv_cpuset_format(&s, buf, 5), -ENOSPC); /* "0-3,8" needs 6 bytes */
    cr_assert_eq(rv_cpuset_format(&s, buf, 6), 0);
    cr_assert_str_eq(buf, "0-3,8");
    cr_assert_eq(rv_cpuset_format(&s, buf, 0), -ENOSPC);
}

Test(topo, nth_and_count_walk_the_set_in_order)
{
    struct rv_cpuset s;
    cr_assert_eq(rv_cpuset_parse("3,64-65,130,1023", &s), 0);
    cr_assert_eq(rv_cpuset_count(&s), 5);
    cr_assert_eq(rv_cpuset_nth(&s, 0), 3);
    cr_assert_eq(rv_cpuset_nth(&s, 1), 64);
    cr_assert_eq(rv_cpuset_nth(&s, 2), 65);
    cr_assert_eq(rv_cpuset_nth(&s, 3), 130);
    cr_assert_eq(rv_cpuset_nth(&s, 4), 1023);
    cr_assert_eq(rv_cpuset_nth(&s, 5), -1);

    rv_cpuset_clear(&s);
    cr_assert_eq(rv_cpuset_count(&s), 0);
    cr_assert_eq(rv_cpuset_nth(&s, 0), -1);
}

Test(topo, has_and_add_agree)
{
    struct rv_cpuset s;
    rv_cpuset_clear(&s);
    cr_assert_not(rv_cpuset_has(&s, 63));
    rv_cpuset_add(&s, 63);
    rv_cpuset_add(&s, 64);
    cr_assert(rv_cpuset_has(&s, 63));
    cr_assert(rv_cpuset_has(&s, 64));
    cr_assert_not(rv_cpuset_has(&s, 62));
    cr_assert_not(rv_cpuset_has(&s, 5000));
}

Test(topo, add_beyond_the_limit_aborts, .signal = SIGABRT)
{
    struct rv_cpuset s;
    rv_cpuset_clear(&s);
    rv_cpuset_add(&s, RV_CPUSET_MAX);
}

Test(topo, allowed_cpus_contain_the_current_cpu)
{
    struct rv_cpuset allowed;
    cr_assert_eq(rv_topo_allowed_cpus(&allowed), 0);
    cr_assert_gt(rv_cpuset_count(&allowed), 0);
    cr_assert_leq(rv_cpuset_count(&allowed), rv_topo_online_cpus());
    int cpu = sched_getcpu();
    cr_assert_geq(cpu, 0);
    cr_assert(rv_cpuset_has(&allowed, (unsigned)cpu), "running on CPU %d, not allowed", cpu);
}

Test(topo, every_allowed_cpu_has_a_node)
{
    struct rv_cpuset allowed;
    cr_assert_eq(rv_topo_allowed_cpus(&allowed), 0);
    unsigned nodes = rv_topo_node_count();
    cr_assert_geq(nodes, 1);
    for (unsigned i = 0; i < rv_cpuset_count(&allowed); i++) {
        int node = rv_topo_cpu_node((unsigned)rv_cpuset_nth(&allowed, i));
        cr_assert_geq(node, 0);
    }
    cr_assert_eq(rv_topo_cpu_node(RV_CPUSET_MAX), -EINVAL);
}

Test(topo, pin_self_moves_the_thread_to_each_allowed_cpu)
{
    struct rv_cpuset allowed;
    cr_assert_eq(rv_topo_allowed_cpus(&allowed), 0);
    /* Twice over, so a pinned thread can still move: the allowed set is the
     * process's, not the thread's current mask. */
    for (unsigned round = 0; round < 2; round++) {
        for (unsigned i = rv_cpuset_count(&allowed); i-- > 0;) {
            unsigned cpu = (unsigned)rv_cpuset_nth(&allowed, i);
            int rc = rv_topo_pin_self(cpu);
            cr_assert_eq(rc, 0, "pin to %u: %d (%s)", cpu, rc, rv_err_msg());
            /* The scheduler migrates us before pthread_setaffinity_np returns. */
            cr_assert_eq(sched_getcpu(), (int)cpu);
        }
    }
    struct rv_cpuset still;
    cr_assert_eq(rv_topo_allowed_cpus(&still), 0);
    cr_assert(memcmp(&still, &allowed, sizeof(still)) == 0);
}

static void *pin_thread_main(void *arg)
{
    unsigned cpu = *(const unsigned *)arg;
    int rc = rv_topo_pin_self(cpu);
    if (rc == 0 && sched_getcpu() != (int)cpu)
        rc = -EIO;
    return (void *)(intptr_t)rc;
}

Test(topo, pin_self_works_on_other_threads)
{
    struct rv_cpuset allowed;
    cr_assert_eq(rv_topo_allowed_cpus(&allowed), 0);
    unsigned cpu = (unsigned)rv_cpuset_nth(&allowed, rv_cpuset_count(&allowed) - 1);
    pthread_t t;
    void *res;
    cr_assert_eq(pthread_create(&t, NULL, pin_thread_main, &cpu), 0);
    cr_assert_eq(pthread_join(t, &res), 0);
    cr_assert_eq((intptr_t)res, 0);
}

Test(topo, pin_self_outside_the_allowed_set_fails_cleanly)
{
    struct rv_cpuset allowed;
    cpu_set_t before;
    cpu_set_t after;
    cr_assert_eq(rv_topo_allowed_cpus(&allowed), 0);
    cr_assert_eq(pthread_getaffinity_np(pthread_self(), sizeof(before), &before), 0);

    unsigned outside = 0;
    while (outside < RV_CPUSET_MAX && rv_cpuset_has(&allowed, outside))
        outside++;
    cr_assert_lt(outside, RV_CPUSET_MAX, "every CPU is allowed: cannot test");
    rv_err_clear();
    cr_assert_eq(rv_topo_pin_self(outside), -EINVAL);
    cr_assert(strstr(rv_err_msg(), "not in the allowed CPUs") != NULL, "%s", rv_err_msg());
    cr_assert_eq(rv_topo_pin_self(RV_CPUSET_MAX), -EINVAL);
    cr_assert_eq(rv_topo_pin_self(100000), -EINVAL);

    cr_assert_eq(pthread_getaffinity_np(pthread_self(), sizeof(after), &after), 0);
    cr_assert(CPU_EQUAL(&before, &after), "a failed pin changed the affinity");
}

Test(topo, prefer_node_accepts_real_nodes_and_rejects_others)
{
    int rc = rv_topo_prefer_node(0);
    /* A container may forbid set_mempolicy; that is reported, not hidden. */
    cr_assert(rc == 0 || rc == -EPERM, "prefer node 0: %d (%s)", rc, rv_err_msg());
    rc = rv_topo_prefer_node(-1);
    cr_assert(rc == 0 || rc == -EPERM, "prefer local: %d (%s)", rc, rv_err_msg());
    cr_assert_eq(rv_topo_prefer_node(-2), -EINVAL);
    /* Without NUMA there is nothing to prefer, so any node is accepted. */
    cr_assert_eq(rv_topo_prefer_node(1000), numa_available() >= 0 ? -EINVAL : 0);
}
