/* tests/core/test_hist.c - log-linear histogram: precision, percentiles, merge. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/hist.h"

TestSuite(hist);

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

/* Values spread over many powers of two, the way latencies are. */
static uint64_t rng_latency(unsigned bits_max)
{
    unsigned bits = 1 + (unsigned)(rng_next() % bits_max);
    return rng_next() >> (64 - bits);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The histogram's answer for the value `want` of a sorted sample: never below,
 * and above by no more than the documented 1/128. */
static void expect_close(uint64_t got, uint64_t want, double p)
{
    cr_assert_geq(got, want, "p%g: got %llu below %llu", p, (unsigned long long)got,
                  (unsigned long long)want);
    cr_assert_leq(got - want, want / RV_HIST_SUB_COUNT, "p%g: got %llu, true %llu", p,
                  (unsigned long long)got, (unsigned long long)want);
}

Test(hist, empty_histogram_reports_zeros)
{
    struct rv_hist h;
    rv_hist_init(&h);
    cr_assert_eq(rv_hist_count(&h), 0u);
    cr_assert_eq(rv_hist_min(&h), 0u);
    cr_assert_eq(rv_hist_max(&h), 0u);
    cr_assert_eq(rv_hist_mean(&h), 0.0);
    cr_assert_eq(rv_hist_percentile(&h, 50), 0u);
    cr_assert(rv_hist_check(&h));
}

Test(hist, percentiles_match_sorted_sample_within_precision)
{
    const uint64_t seed = 0xB0BA7E11;
    rng_state = seed;
    cr_log_info("seed %llu", (unsigned long long)seed);
    enum { N = 100000 };
    uint64_t *vals = malloc(N * sizeof(*vals));
    cr_assert_not_null(vals);
    static struct rv_hist h;
    rv_hist_init(&h);
    for (size_t i = 0; i < N; i++) {
        vals[i] = rng_latency(40);
        rv_hist_record(&h, vals[i]);
    }
    qsort(vals, N, sizeof(*vals), cmp_u64);
    cr_assert_eq(rv_hist_count(&h), (uint64_t)N);
    const double ps[] = {0, 1, 25, 50, 90, 99, 99.9, 99.99, 100};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        size_t rank = (size_t)llround(ps[i] / 100.0 * N);
        if (rank == 0)
            rank = 1;
        expect_close(rv_hist_percentile(&h, ps[i]), vals[rank - 1], ps[i]);
    }
    cr_assert_eq(rv_hist_percentile(&h, 0), vals[0]);
    cr_assert_eq(rv_hist_percentile(&h, 100), vals[N - 1]);
    cr_assert(rv_hist_check(&h));
    free(vals);
}

Test(hist, buckets_are_narrower_than_one_128th)
{
    const uint64_t seed = 7;
    rng_state = seed;
    cr_log_info("seed %llu", (unsigned long long)seed);
    for (int round = 0; round < 200000; round++) {
        uint64_t v = rng_latency(64);
        uint64_t high = rv_hist_highest_equivalent(v);
        cr_assert_geq(high, v);
        cr_assert_leq(high - v, v / RV_HIST_SUB_COUNT, "v %llu high %llu", (unsigned long long)v,
                      (unsigned long long)high);
        cr_assert_eq(rv_hist_index(high), rv_hist_index(v));
        if (high != UINT64_MAX)
            cr_assert_eq(rv_hist_index(high + 1), rv_hist_index(v) + 1);
    }
}

Test(hist, indexes_are_dense_and_monotonic)
{
    /* Walking bucket by bucket from 0 visits every index once, in order, and
     * ends at UINT64_MAX in the last bucket. */
    uint64_t v = 0;
    for (uint32_t want = 0; want < RV_HIST_BUCKET_COUNT; want++) {
        cr_assert_eq(rv_hist_index(v), want, "v %llu", (unsigned long long)v);
        uint64_t high = rv_hist_highest_equivalent(v);
        if (want == RV_HIST_BUCKET_COUNT - 1)
            cr_assert_eq(high, UINT64_MAX);
        else
            v = high + 1;
    }
}

Test(hist, small_values_are_exact)
{
    static struct rv_hist h;
    rv_hist_init(&h);
    for (uint64_t v = 0; v < RV_HIST_EXACT_MAX; v++) {
        cr_assert_eq(rv_hist_highest_equivalent(v), v);
        rv_hist_record(&h, v);
    }
    /* With one value each, rank r holds value r - 1. */
    for (uint64_t r = 1; r <= RV_HIST_EXACT_MAX; r++) {
        double p = 100.0 * (double)r / RV_HIST_EXACT_MAX;
        cr_assert_eq(rv_hist_percentile(&h, p), r - 1, "p%g", p);
    }
    cr_assert_eq(rv_hist_highest_equivalent(RV_HIST_EXACT_MAX), RV_HIST_EXACT_MAX + 1);
}

Test(hist, tracks_min_max_count_and_mean)
{
    static struct rv_hist h;
    rv_hist_init(&h);
    rv_hist_record(&h, 1000);
    rv_hist_record(&h, 3);
    rv_hist_record_n(&h, 500, 4);
    rv_hist_record_n(&h, 1, 0); /* no-op: must not move min */
    cr_assert_eq(rv_hist_count(&h), 6u);
    cr_assert_eq(rv_hist_min(&h), 3u);
    cr_assert_eq(rv_hist_max(&h), 1000u);
    cr_assert_float_eq(rv_hist_mean(&h), (1000.0 + 3 + 4 * 500) / 6, 1e-9);
    /* Clamped to max, not the top of 1000's bucket. */
    cr_assert_eq(rv_hist_percentile(&h, 99), 1000u);
    cr_assert_eq(rv_hist_percentile(&h, 50), rv_hist_highest_equivalent(500));
    cr_assert(rv_hist_check(&h));
}

Test(hist, merge_equals_recording_both)
{
    const uint64_t seed = 99;
    rng_state = seed;
    cr_log_info("seed %llu", (unsigned long long)seed);
    static struct rv_hist a, b, both;
    rv_hist_init(&a);
    rv_hist_init(&b);
    rv_hist_init(&both);
    for (int i = 0; i < 20000; i++) {
        uint64_t v = rng_latency(48);
        rv_hist_record(i % 3 == 0 ? &a : &b, v);
        rv_hist_record(&both, v);
    }
    rv_hist_merge(&a, &b);
    cr_assert_eq(rv_hist_count(&a), rv_hist_count(&both));
    cr_assert_eq(rv_hist_min(&a), rv_hist_min(&both));
    cr_assert_eq(rv_hist_max(&a), rv_hist_max(&both));
    cr_assert_eq(rv_hist_mean(&a), rv_hist_mean(&both));
    cr_assert_arr_eq(a.counts, both.counts, sizeof(a.counts));
    for (double p = 0; p <= 100; p += 0.5)
        cr_assert_eq(rv_hist_percentile(&a, p), rv_hist_percentile(&both, p), "p%g", p);
    cr_assert(rv_hist_check(&a));

    /* Merging an empty histogram changes nothing; into an empty one copies. */
    static struct rv_hist empty, copy;
    rv_hist_init(&empty);
    rv_hist_init(&copy);
    rv_hist_merge(&a, &empty);
    cr_assert_eq(rv_hist_count(&a), rv_hist_count(&both));
    rv_hist_merge(&copy, &both);
    cr_assert_eq(rv_hist_min(&copy), rv_hist_min(&both));
    cr_assert_eq(rv_hist_percentile(&copy, 50), rv_hist_percentile(&both, 50));
}

Test(hist, handles_zero_and_uint64_max)
{
    static struct rv_hist h;
    rv_hist_init(&h);
    rv_hist_record(&h, 0);
    rv_hist_record(&h, UINT64_MAX);
    rv_hist_record(&h, UINT64_MAX);
    cr_assert_eq(rv_hist_count(&h), 3u);
    cr_assert_eq(rv_hist_min(&h), 0u);
    cr_assert_eq(rv_hist_max(&h), UINT64_MAX);
    cr_assert_eq(rv_hist_percentile(&h, 10), 0u);
    cr_assert_eq(rv_hist_percentile(&h, 50), UINT64_MAX);
    cr_assert_eq(rv_hist_percentile(&h, 100), UINT64_MAX);
    /* The exact sum (2^65 - 2) does not wrap. */
    cr_assert_float_eq(rv_hist_mean(&h), 2.0 * 18446744073709551615.0 / 3.0, 1e4);
    cr_assert(rv_hist_check(&h));
}

Test(hist, reset_empties)
{
    static struct rv_hist h;
    rv_hist_init(&h);
    rv_hist_record_n(&h, 12345, 10);
    rv_hist_reset(&h);
    cr_assert_eq(rv_hist_count(&h), 0u);
    cr_assert_eq(rv_hist_percentile(&h, 99), 0u);
    cr_assert(rv_hist_check(&h));
    rv_hist_record(&h, 7);
    cr_assert_eq(rv_hist_min(&h), 7u);
    cr_assert_eq(rv_hist_max(&h), 7u);
}
