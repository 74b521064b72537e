/* core/hist.c - the log-linear histogram's non-inline part; layout in hist.h. */
#include "core/hist.h"

#include <string.h>

RV_STATIC_ASSERT(RV_HIST_SUB_BITS >= 1 && RV_HIST_SUB_BITS < 32);
RV_STATIC_ASSERT((RV_HIST_BUCKET_COUNT - 1) ==
                 ((63u - RV_HIST_SUB_BITS) << RV_HIST_SUB_BITS) + (2u * RV_HIST_SUB_COUNT - 1));

/* The lowest and highest values that map to bucket `index`. */
static uint64_t hist_bucket_low(uint32_t index, uint32_t *out_shift)
{
    RV_ASSERT(index < RV_HIST_BUCKET_COUNT);
    uint32_t hi = index >> RV_HIST_SUB_BITS;
    /* Indexes below 2 * SUB_COUNT are shift 0 and equal their value; above, the
     * sub-bucket has its top bit set again (it was folded into the shift). */
    uint32_t shift = hi > 1 ? hi - 1 : 0;
    uint64_t sub = hi > 1 ? (index & (RV_HIST_SUB_COUNT - 1)) | RV_HIST_SUB_COUNT : index;
    *out_shift = shift;
    return sub << shift;
}

static uint64_t hist_bucket_high(uint32_t index)
{
    uint32_t shift;
    uint64_t low = hist_bucket_low(index, &shift);
    /* Cannot overflow: the last bucket's high value is exactly UINT64_MAX. */
    return low + ((uint64_t)1 << shift) - 1;
}

void rv_hist_init(struct rv_hist *h)
{
    RV_ASSERT(h != NULL);
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

void rv_hist_reset(struct rv_hist *h)
{
    rv_hist_init(h);
}

void rv_hist_merge(struct rv_hist *dst, const struct rv_hist *src)
{
    RV_ASSERT(dst != NULL);
    RV_ASSERT(src != NULL);
    RV_ASSERT(dst != src);
    if (src->count == 0)
        return;
    for (uint32_t i = 0; i < RV_HIST_BUCKET_COUNT; i++)
        dst->counts[i] += src->counts[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    RV_DASSERT(rv_hist_check(dst));
}

uint64_t rv_hist_percentile(const struct rv_hist *h, double p)
{
    RV_ASSERT(h != NULL);
    RV_ASSERT(p >= 0.0); /* also false for NaN */
    RV_ASSERT(p <= 100.0);
    if (h->count == 0)
        return 0;
    if (p == 0.0)
        return h->min;
    if (p == 100.0)
        return h->max;
    /* Round to the nearest rank, as HdrHistogram does, so that floating-point
     * noise in p (99.9 is not exact) cannot push the rank up by one. */
    double rank_real = p / 100.0 * (double)h->count + 0.5;
    uint64_t rank = rank_real >= (double)h->count ? h->count : (uint64_t)rank_real;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < RV_HIST_BUCKET_COUNT; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t high = hist_bucket_high(i);
            return high < h->max ? high : h->max;
        }
    }
    /* count is the sum of counts[], so the loop reached the rank. */
    RV_ASSERT(false);
    return h->max;
}

double rv_hist_mean(const struct rv_hist *h)
{
    RV_ASSERT(h != NULL);
    if (h->count == 0)
        return 0.0;
    return (double)h->sum / (double)h->count;
}

uint64_t rv_hist_highest_equivalent(uint64_t v)
{
    uint64_t high = hist_bucket_high(rv_hist_index(v));
    RV_ASSERT(high >= v);
    return high;
}

bool rv_hist_check(const struct rv_hist *h)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < RV_HIST_BUCKET_COUNT; i++)
        total += h->counts[i];
    if (total != h->count)
        return false;
    if (h->count == 0)
        return h->min == UINT64_MAX && h->max == 0 && h->sum == 0;
    if (h->min > h->max)
        return false;
    return h->counts[rv_hist_index(h->min)] != 0 && h->counts[rv_hist_index(h->max)] != 0;
}
