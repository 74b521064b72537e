/*
 * core/hist.h - a log-linear latency histogram (HdrHistogram-like).
 *
 * Values are uint64 (nanoseconds, typically), from 0 to UINT64_MAX. Each power of
 * two [2^e, 2^(e+1)) above the exact range is split into RV_HIST_SUB_COUNT (128)
 * equal sub-buckets, so a bucket's width is at most 1/128 of its lowest value and
 * every reported value is within 0.79% of a recorded one. Values below
 * RV_HIST_EXACT_MAX (256) get a bucket each and are exact.
 *
 *   index(v) = (shift << 7) + (v >> shift),  shift = max(0, msb(v) - 7)
 *
 * The struct is fixed-size (about 58 KiB) and never allocates; recording is O(1)
 * (one count-leading-zeros, no loops). A histogram belongs to one thread; merge
 * per-shard histograms with rv_hist_merge() on the thread that reports.
 */
#ifndef RV_CORE_HIST_H
#define RV_CORE_HIST_H

#include <stdbool.h>
#include <stdint.h>

#include "core/assert.h"

#define RV_HIST_SUB_BITS  7
#define RV_HIST_SUB_COUNT (1u << RV_HIST_SUB_BITS) /* linear sub-buckets per power of two */
#define RV_HIST_EXACT_MAX (2u * RV_HIST_SUB_COUNT) /* values below this are exact */
/* The largest shift is 63 - SUB_BITS, and each shift adds SUB_COUNT indexes. */
#define RV_HIST_BUCKET_COUNT ((64u - RV_HIST_SUB_BITS + 1u) * RV_HIST_SUB_COUNT)

__extension__ typedef unsigned __int128 rv_hist_sum_t; /* exact sum of recorded values */

struct rv_hist {
    uint64_t count;                        /* values recorded, = sum of counts[] */
    uint64_t min;                          /* smallest value, UINT64_MAX when empty */
    uint64_t max;                          /* largest value, 0 when empty */
    rv_hist_sum_t sum;                     /* sum of values, wraps only past 2^128 */
    uint64_t counts[RV_HIST_BUCKET_COUNT]; /* values per bucket, see rv_hist_index() */
};

/* Lifecycle. */

/* Make h empty. h is caller-provided storage; nothing is allocated, so there is
 * no fini. */
void rv_hist_init(struct rv_hist *h);

/* Make h empty again (same as rv_hist_init()). */
void rv_hist_reset(struct rv_hist *h);

/* Operations. */

/* Add every value of src to dst. src is unchanged; dst and src may not alias. */
void rv_hist_merge(struct rv_hist *dst, const struct rv_hist *src);

/* Queries. */

/* The value at percentile p (0 <= p <= 100) of the recorded values, or 0 when h is
 * empty. As in HdrHistogram, the rank is round(p / 100 * count), at least 1, and
 * the answer is the highest value of the bucket holding that rank, clamped to
 * rv_hist_max(): it is >= the true value and within 1/128 of it. p = 0 gives the
 * exact minimum and p = 100 the exact maximum. */
uint64_t rv_hist_percentile(const struct rv_hist *h, double p);

/* The arithmetic mean of the recorded values (exact sum / count), 0 when empty. */
double rv_hist_mean(const struct rv_hist *h);

/* The largest value that falls into the same bucket as v (v itself below
 * RV_HIST_EXACT_MAX). */
uint64_t rv_hist_highest_equivalent(uint64_t v);

/* Whether h's fields are consistent: counts add up, min <= max, and min's and
 * max's buckets are non-empty. O(buckets); for RV_DASSERT and tests. */
bool rv_hist_check(const struct rv_hist *h);

/* The bucket index of v, < RV_HIST_BUCKET_COUNT. */
static inline uint32_t rv_hist_index(uint64_t v)
{
    /* msb(v | 1) treats 0 like 1; both are below the exact limit anyway. */
    uint32_t msb = 63u - (uint32_t)__builtin_clzll(v | 1);
    uint32_t shift = msb > RV_HIST_SUB_BITS ? msb - RV_HIST_SUB_BITS : 0;
    return (shift << RV_HIST_SUB_BITS) + (uint32_t)(v >> shift);
}

/* Number of values recorded. */
static inline uint64_t rv_hist_count(const struct rv_hist *h)
{
    return h->count;
}

/* Smallest value recorded, 0 when empty. */
static inline uint64_t rv_hist_min(const struct rv_hist *h)
{
    return h->count == 0 ? 0 : h->min;
}

/* Largest value recorded, 0 when empty. */
static inline uint64_t rv_hist_max(const struct rv_hist *h)
{
    return h->max;
}

/* Record `n` occurrences of v (n = 0 is a no-op). O(1). */
static inline void rv_hist_record_n(struct rv_hist *h, uint64_t v, uint64_t n)
{
    if (n == 0)
        return;
    uint32_t index = rv_hist_index(v);
    RV_ASSERT(index < RV_HIST_BUCKET_COUNT);
    h->counts[index] += n;
    h->count += n;
    h->sum += (rv_hist_sum_t)v * n;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

/* Record one occurrence of v. O(1). */
static inline void rv_hist_record(struct rv_hist *h, uint64_t v)
{
    rv_hist_record_n(h, v, 1);
}

#endif /* RV_CORE_HIST_H */
