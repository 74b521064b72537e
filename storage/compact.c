/*
 * storage/compact.c - log compaction of a partition log's closed segments (see
 * compact.h for the pass, the file names and the crash protocol).
 *
 * A job moves through its phases on whichever helper thread runs its slice
 * (the owner shard hands it over with rv_offload, which orders the memory):
 *
 *   MAP --(every dirty record mapped, or the map is full)--> WRITE
 *   WRITE --(every group written and fdatasynced)--> BUILT
 *   BUILT --rv_compact_swap--> done (or failed, then maybe committed)
 *   any error --> FAILED (rv_compact_discard removes the .cleaned files)
 *
 * Memory: the map (24 bytes a slot, at most 4/3 slots a key, doubling from
 * 1024 slots), one decompression buffer, two batch buffers and a 1 MiB write
 * buffer. Input is read through rv_seg_scan_file's window.
 */
#include "storage/compact.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/crc32c.h"
#include "core/err.h"
#include "core/sys.h"
#include "core/trace.h"
#include "core/varint.h"
#include "storage/codec.h"

#define COMPACT_MAP_SLOTS_MIN 1024u
#define COMPACT_PLAIN_MAX     (64u << 20) /* a batch may not decompress past this */
#define COMPACT_WBUF_BYTES    (1u << 20)
#define COMPACT_PATH_BYTES    4096u
#define COMPACT_REL_MAX       ((uint64_t)INT32_MAX) /* relative offsets of an index */

enum compact_phase {
    COMPACT_MAP = 0,
    COMPACT_WRITE,
    COMPACT_BUILT,
    COMPACT_FAILED,
};

/* Why a scan callback stopped (positive: rv_seg_scan_file hands them back). */
enum compact_stop {
    COMPACT_STOP_BUDGET = 1, /* the slice read its share: resume at this batch */
    COMPACT_STOP_END = 2,    /* past the segment's valid bytes */
    COMPACT_STOP_FULL = 3,   /* the map holds as many keys as it may */
};

struct compact_digest {
    uint64_t h1;
    uint64_t h2;
};

struct compact_slot {
    struct compact_digest d;
    int64_t offset; /* the key's latest offset; -1: empty slot */
};

struct compact_map {
    struct compact_slot *slots;
    uint32_t mask;  /* slots - 1 (a power of two), or 0 before the first key */
    uint32_t count; /* keys held */
    uint32_t max;   /* keys allowed */
};

/* A closed segment as the pass found it. */
struct compact_in {
    uint64_t base;
    uint64_t next;
    uint64_t size;
};

/* What a batch's records come to (the first walk). */
struct compact_verdict {
    int32_t kept;
    int32_t tombstones_kept;
    int64_t max_ts; /* of the kept records */
};

struct rv_compact {
    char *dir;
    struct compact_in *segs;
    uint32_t seg_count;
    uint64_t next_base;
    struct rv_compact_point point;
    uint64_t segment_bytes;
    uint32_t index_interval;
    uint32_t max_batch_bytes;
    int64_t delete_retention_ms;
    int64_t now_ms;
    uint8_t phase; /* enum compact_phase */
    struct compact_map map;
    uint64_t dirty_start; /* the first offset the map covers */
    uint64_t map_end;     /* the map covers offsets below (set when WRITE starts) */
    /* Reading: segment cur at byte pos. */
    uint32_t cur;
    uint64_t pos;
    int in_fd; /* of segs[in_seg], or -1 */
    uint32_t in_seg;
    uint64_t step_bytes; /* read by this slice */
    /* Writing: the group [group_first, group_end) into outs[out_count - 1]. */
    uint32_t write_end; /* segments below are rewritten (their base < map_end) */
    uint32_t group_end;
    int out_fd; /* the .cleaned file being written, or -1 */
    bool is_group_changed;
    struct rv_compact_output *outs;
    uint32_t out_count;
    uint32_t out_cap;
    uint8_t *wbuf;
    size_t wbuf_len;
    uint64_t out_flushed;   /* bytes of the output already written */
    uint64_t group_written; /* stats.bytes_written when the group started */
    /* Scratch. */
    uint8_t *plain; /* decompressed records */
    size_t plain_cap;
    uint8_t *recs; /* the kept records of a rebuilt batch */
    size_t recs_cap;
    uint8_t *packed; /* a rebuilt batch */
    size_t packed_cap;
    int64_t next_horizon;
    bool is_committed;
    struct rv_compact_stats stats;
};

/* ---- small helpers --------------------------------------------------------------------- */

static void compact_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void compact_be64(uint8_t *p, uint64_t v)
{
    compact_be32(p, (uint32_t)(v >> 32));
    compact_be32(p + 4, (uint32_t)v);
}

static void compact_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* Grow *buf to hold need bytes (contents kept). -ENOMEM. */
static int compact_reserve(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    uint8_t *p = realloc(*buf, n);
    if (p == NULL)
        return -ENOMEM;
    *buf = p;
    *cap = n;
    return 0;
}

/* "<dir>/<base>.<end><suffix>": a pass's output file. */
static int compact_out_name(char *out, size_t len, const char *dir, uint64_t base, uint64_t end,
                            const char *suffix)
{
    int n = snprintf(out, len, "%s/%0*" PRIu64 ".%0*" PRIu64 "%s", dir, RV_SEG_NAME_DIGITS, base,
                     RV_SEG_NAME_DIGITS, end, suffix);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static bool compact_has_suffix(const char *name, const char *suffix)
{
    size_t n = strlen(name);
    size_t s = strlen(suffix);
    return n >= s && strcmp(name + n - s, suffix) == 0;
}

/* Parse "<20 digits>.<20 digits><suffix>". */
static bool compact_parse_out_name(const char *name, const char *suffix, uint64_t *base,
                                   uint64_t *end)
{
    size_t digits = RV_SEG_NAME_DIGITS;
    if (strlen(name) != 2 * digits + 1 + strlen(suffix) || !compact_has_suffix(name, suffix) ||
        name[digits] != '.')
        return false;
    uint64_t v[2] = {0, 0};
    for (size_t k = 0; k < 2; k++) {
        const char *p = name + k * (digits + 1);
        for (size_t i = 0; i < digits; i++) {
            if (p[i] < '0' || p[i] > '9' || v[k] > ((uint64_t)INT64_MAX - 9) / 10)
                return false;
            v[k] = v[k] * 10 + (uint64_t)(p[i] - '0');
        }
    }
    *base = v[0];
    *end = v[1];
    return *base <= *end;
}

/* ---- the key map ----------------------------------------------------------------------- */

static uint64_t compact_rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static uint64_t compact_fmix(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return k;
}

/* MurmurHash3 x64 128 (Austin Appleby, public domain), seed 0: a key's digest.
 * Two keys with one digest would lose a record, so 128 bits: at a million keys
 * the odds are about 1 in 10^26. */
static struct compact_digest compact_digest(const uint8_t *data, size_t len)
{
    const uint64_t c1 = 0x87c37b91114253d5ull;
    const uint64_t c2 = 0x4cf5ad432745937full;
    uint64_t h1 = 0;
    uint64_t h2 = 0;
    size_t blocks = len / 16;
    for (size_t i = 0; i < blocks; i++) {
        uint64_t k1 = 0;
        uint64_t k2 = 0;
        for (int b = 7; b >= 0; b--) { /* little-endian loads, whatever the host */
            k1 = k1 << 8 | data[i * 16 + (size_t)b];
            k2 = k2 << 8 | data[i * 16 + 8 + (size_t)b];
        }
        h1 ^= compact_rotl(k1 * c1, 31) * c2;
        h1 = (compact_rotl(h1, 27) + h2) * 5 + 0x52dce729;
        h2 ^= compact_rotl(k2 * c2, 33) * c1;
        h2 = (compact_rotl(h2, 31) + h1) * 5 + 0x38495ab5;
    }
    const uint8_t *tail = data + blocks * 16;
    size_t rest = len & 15;
    uint64_t k1 = 0;
    uint64_t k2 = 0;
    for (size_t i = rest; i > 8; i--)
        k2 ^= (uint64_t)tail[i - 1] << ((i - 9) * 8);
    if (rest > 8)
        h2 ^= compact_rotl(k2 * c2, 33) * c1;
    for (size_t i = rest < 8 ? rest : 8; i > 0; i--)
        k1 ^= (uint64_t)tail[i - 1] << ((i - 1) * 8);
    if (rest > 0)
        h1 ^= compact_rotl(k1 * c1, 31) * c2;
    h1 ^= (uint64_t)len;
    h2 ^= (uint64_t)len;
    h1 += h2;
    h2 += h1;
    h1 = compact_fmix(h1);
    h2 = compact_fmix(h2);
    h1 += h2;
    h2 += h1;
    return (struct compact_digest){h1, h2};
}

static struct compact_slot *compact_map_find(const struct compact_map *m, struct compact_digest d)
{
    RV_ASSERT(m->slots != NULL);
    for (uint32_t i = (uint32_t)d.h1 & m->mask, n = 0; n <= m->mask; i = (i + 1) & m->mask, n++) {
        struct compact_slot *s = &m->slots[i];
        if (s->offset < 0 || (s->d.h1 == d.h1 && s->d.h2 == d.h2))
            return s;
    }
    RV_ASSERT(!"the map is never full"); /* the load stays below 3/4 */
    return NULL;
}

static int compact_map_grow(struct compact_map *m)
{
    uint32_t slots = m->mask ? (m->mask + 1) * 2 : COMPACT_MAP_SLOTS_MIN;
    RV_ASSERT(slots > m->mask + 1);
    struct compact_map bigger = {.mask = slots - 1, .count = m->count, .max = m->max};
    bigger.slots = malloc((size_t)slots * sizeof(*bigger.slots));
    if (bigger.slots == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < slots; i++)
        bigger.slots[i].offset = -1;
    for (uint32_t i = 0; m->mask && i <= m->mask; i++) {
        if (m->slots[i].offset >= 0)
            *compact_map_find(&bigger, m->slots[i].d) = m->slots[i];
    }
    free(m->slots);
    *m = bigger;
    return 0;
}

/* Note the key's offset (records come in offset order: the later one wins). */
static int compact_map_put(struct compact_map *m, struct compact_digest d, int64_t offset)
{
    RV_ASSERT(offset >= 0);
    if (m->mask == 0 || (uint64_t)(m->count + 1) * 4 > (uint64_t)(m->mask + 1) * 3) {
        int rc = compact_map_grow(m);
        if (rc < 0)
            return rc;
    }
    struct compact_slot *s = compact_map_find(m, d);
    if (s->offset < 0) {
        s->d = d;
        m->count++;
    }
    RV_ASSERT(offset >= s->offset);
    s->offset = offset;
    return 0;
}

/* The key's latest offset in the dirty part, or -1. */
static int64_t compact_map_get(const struct compact_map *m, struct compact_digest d)
{
    return m->count == 0 ? -1 : compact_map_find(m, d)->offset;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

int rv_compact_create(rv_compact_t **out, const struct rv_compact_opts *opts)
{
    RV_ASSERT(out != NULL && opts != NULL && opts->dir != NULL);
    RV_ASSERT(opts->seg_count >= 1 && opts->segs != NULL);
    if (opts->map_entries_max < RV_COMPACT_MAP_ENTRIES_MIN || opts->segment_bytes == 0 ||
        opts->index_interval == 0 || opts->max_batch_bytes < RV_BATCH_HEADER_BYTES)
        return rv_errf(-EINVAL, "compact %s: bad options", opts->dir);
    struct rv_compact *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->dir = strdup(opts->dir);
    c->segs = malloc((size_t)opts->seg_count * sizeof(*c->segs));
    c->wbuf = malloc(COMPACT_WBUF_BYTES);
    if (c->dir == NULL || c->segs == NULL || c->wbuf == NULL) {
        rv_compact_destroy(c);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < opts->seg_count; i++) {
        const struct rv_seg *s = &opts->segs[i];
        RV_ASSERT(i == 0 || s->base_offset >= opts->segs[i - 1].next_offset);
        c->segs[i] = (struct compact_in){s->base_offset, s->next_offset, s->size_bytes};
    }
    RV_ASSERT(opts->next_base >= c->segs[opts->seg_count - 1].next);
    c->seg_count = opts->seg_count;
    c->next_base = opts->next_base;
    c->point = opts->point;
    c->segment_bytes = opts->segment_bytes;
    c->index_interval = opts->index_interval;
    c->max_batch_bytes = opts->max_batch_bytes;
    c->delete_retention_ms = opts->delete_retention_ms;
    c->now_ms = opts->now_ms;
    c->map.max = opts->map_entries_max;
    c->in_fd = c->out_fd = -1;
    c->in_seg = UINT32_MAX;
    c->next_horizon = RV_COMPACT_NO_HORIZON;
    c->dirty_start =
        opts->point.clean_offset > c->segs[0].base ? opts->point.clean_offset : c->segs[0].base;
    while (c->cur < c->seg_count && c->segs[c->cur].next <= c->dirty_start)
        c->cur++; /* the map starts with the first segment that has dirty offsets */
    c->phase = COMPACT_MAP;
    *out = c;
    return 0;
}

void rv_compact_destroy(rv_compact_t *c)
{
    if (c == NULL)
        return;
    if (c->in_fd >= 0)
        (void)rv_sys_close(c->in_fd); /* read-only */
    if (c->out_fd >= 0)
        (void)rv_sys_close(c->out_fd); /* an abandoned .cleaned file */
    for (uint32_t i = 0; i < c->out_count; i++)
        rv_seg_fini(&c->outs[i].seg);
    free(c->outs);
    free(c->map.slots);
    free(c->plain);
    free(c->recs);
    free(c->packed);
    free(c->wbuf);
    free(c->segs);
    free(c->dir);
    free(c);
}

/* ---- reading ----------------------------------------------------------------------------- */

static int compact_open_in(struct rv_compact *c)
{
    if (c->in_seg == c->cur)
        return 0;
    if (c->in_fd >= 0)
        (void)rv_sys_close(c->in_fd); /* read-only */
    c->in_fd = -1;
    c->in_seg = UINT32_MAX;
    char path[COMPACT_PATH_BYTES];
    int rc = rv_idx_file_name(path, sizeof(path), c->dir, c->segs[c->cur].base, ".log");
    int fd = rc == 0 ? rv_sys_open(path, O_RDONLY | O_CLOEXEC, 0) : rc;
    if (fd < 0)
        return rv_errf(fd, "compact %s: open segment %" PRIu64, c->dir, c->segs[c->cur].base);
    c->in_fd = fd;
    c->in_seg = c->cur;
    return 0;
}

/* Stop before the batch at pos if the slice read its share or the segment's
 * valid bytes end there; else account for it. */
static int compact_slice_check(struct rv_compact *c, const struct rv_batch_view *v, uint64_t pos)
{
    if (pos >= c->segs[c->cur].size)
        return COMPACT_STOP_END;
    if (c->step_bytes >= RV_COMPACT_STEP_BYTES)
        return COMPACT_STOP_BUDGET;
    c->step_bytes += v->size_bytes;
    return 0;
}

/* Scan segment cur from pos with fn. 1: the slice is over (or the map is full:
 * COMPACT_STOP_FULL), 0: the segment is done, -errno. */
static int compact_scan(struct rv_compact *c, rv_seg_batch_fn *fn)
{
    RV_ASSERT(c->cur < c->seg_count);
    if (c->pos >= c->segs[c->cur].size)
        return 0;
    int rc = compact_open_in(c);
    if (rc < 0)
        return rc;
    uint64_t stop = c->pos;
    rc = rv_seg_scan_file(c->in_fd, c->pos, c->max_batch_bytes, fn, c, &stop);
    RV_ASSERT(stop >= c->pos);
    c->pos = stop;
    if (rc == COMPACT_STOP_BUDGET)
        return 1;
    if (rc == COMPACT_STOP_FULL)
        return COMPACT_STOP_FULL;
    if (rc < 0)
        return rv_errf(rc, "compact %s: segment %" PRIu64 " at byte %" PRIu64 ": %s", c->dir,
                       c->segs[c->cur].base, stop, rv_err_msg());
    if (rc == 0 && stop < c->segs[c->cur].size)
        return rv_errf(-EBADMSG, "compact %s: segment %" PRIu64 " ends at byte %" PRIu64, c->dir,
                       c->segs[c->cur].base, stop);
    return 0; /* the end of the file or of its valid bytes */
}

/* The batch's records, decompressed into c->plain when compressed. */
static int compact_records(struct rv_compact *c, const struct rv_batch_view *v, const uint8_t **out,
                           size_t *len)
{
    if (rv_batch_codec(v) == RV_CODEC_NONE) {
        *out = v->records;
        *len = v->records_bytes;
        return 0;
    }
    size_t n = 0;
    int rc = rv_codec_decompress_grow(rv_batch_codec(v), v->records, v->records_bytes, &c->plain,
                                      &c->plain_cap, COMPACT_PLAIN_MAX, &n);
    if (rc < 0)
        return rv_errf(rc, "compact %s: batch at offset %" PRId64 " does not decompress", c->dir,
                       v->base_offset);
    *out = c->plain;
    *len = n;
    return 0;
}

/* ---- phase 1: the map ---------------------------------------------------------------------- */

static int compact_map_batch(void *arg, const struct rv_batch_view *v, uint64_t pos)
{
    struct rv_compact *c = arg;
    int stop = compact_slice_check(c, v, pos);
    if (stop != 0)
        return stop;
    if (rv_batch_is_control(v) || rv_batch_last_offset(v) < (int64_t)c->dirty_start)
        return 0;
    if (c->map.count > 0 && (uint64_t)c->map.count + (uint64_t)v->record_count > c->map.max) {
        c->step_bytes -= v->size_bytes; /* not read after all: the next pass maps it */
        c->map_end =
            (uint64_t)v->base_offset > c->dirty_start ? (uint64_t)v->base_offset : c->dirty_start;
        return COMPACT_STOP_FULL;
    }
    const uint8_t *recs;
    size_t len;
    int rc = compact_records(c, v, &recs, &len);
    if (rc < 0)
        return rc;
    struct rv_batch_record_iter it;
    struct rv_batch_record r;
    rv_batch_record_iter_init(&it, v, recs, len);
    while ((rc = rv_batch_record_iter_next(&it, &r)) == 1) {
        if (r.offset < (int64_t)c->dirty_start || r.key_len < 0)
            continue;
        rc = compact_map_put(&c->map, compact_digest(r.key, (size_t)r.key_len), r.offset);
        if (rc < 0)
            return rv_errf(rc, "compact %s: the key map cannot grow", c->dir);
    }
    return rc;
}

static void compact_write_begin(struct rv_compact *c);

static int compact_map_step(struct rv_compact *c)
{
    while (c->cur < c->seg_count) {
        int rc = compact_scan(c, compact_map_batch);
        if (rc == COMPACT_STOP_FULL) {
            compact_write_begin(c); /* map_end was set at the batch that did not fit */
            return 1;
        }
        if (rc != 0)
            return rc;
        c->cur++;
        c->pos = 0;
    }
    c->map_end = c->next_base; /* every dirty record is in the map */
    compact_write_begin(c);
    return 1;
}

/* ---- phase 2: writing the cleaned segments ------------------------------------------------ */

static void compact_write_begin(struct rv_compact *c)
{
    RV_ASSERT(c->phase == COMPACT_MAP);
    RV_ASSERT(c->map_end >= c->dirty_start || c->map_end == c->next_base);
    c->phase = COMPACT_WRITE;
    c->stats.keys = c->map.count;
    c->stats.map_end = c->map_end;
    c->write_end = 0;
    while (c->write_end < c->seg_count && c->segs[c->write_end].base < c->map_end)
        c->write_end++;
    c->cur = c->group_end = 0;
    c->pos = 0;
}

/* Whether record r stays; *is_tombstone says whether it is one. */
static bool compact_keep(const struct rv_compact *c, const struct rv_batch_record *r,
                         int64_t horizon_ms, bool *is_tombstone)
{
    *is_tombstone = r->value_len < 0;
    if (r->offset >= (int64_t)c->map_end)
        return true; /* not covered by the map: the next pass decides */
    if (r->key_len < 0)
        return false; /* Kafka drops records without a key too */
    int64_t latest = compact_map_get(&c->map, compact_digest(r->key, (size_t)r->key_len));
    if (latest > r->offset)
        return false;
    return !*is_tombstone || horizon_ms == RV_COMPACT_NO_HORIZON || c->now_ms < horizon_ms;
}

static int64_t compact_horizon_of(const struct rv_batch_view *v)
{
    return (v->attributes & RV_BATCH_ATTR_DELETE_HORIZON) ? v->base_timestamp
                                                          : RV_COMPACT_NO_HORIZON;
}

/* First walk: what stays of the batch's records. */
static int compact_judge(struct rv_compact *c, const struct rv_batch_view *v, const uint8_t *recs,
                         size_t len, struct compact_verdict *out)
{
    int64_t horizon = compact_horizon_of(v);
    *out = (struct compact_verdict){.max_ts = RV_BATCH_NO_TIMESTAMP};
    struct rv_batch_record_iter it;
    struct rv_batch_record r;
    rv_batch_record_iter_init(&it, v, recs, len);
    int rc;
    while ((rc = rv_batch_record_iter_next(&it, &r)) == 1) {
        bool is_tombstone;
        c->stats.records_read++;
        if (!compact_keep(c, &r, horizon, &is_tombstone)) {
            c->stats.records_dropped++;
            c->stats.null_keys_dropped += r.key_len < 0;
            c->stats.tombstones_dropped += is_tombstone && r.key_len >= 0;
            continue;
        }
        out->kept++;
        out->tombstones_kept += is_tombstone;
        if (out->kept == 1 || r.timestamp_ms > out->max_ts)
            out->max_ts = r.timestamp_ms;
    }
    return rc;
}

/* Encode record r into p with its timestamp against base_ts; returns the bytes. */
static size_t compact_encode_record(uint8_t *p, const struct rv_batch_record *r, int64_t base_ts)
{
    int64_t ts_delta = (int64_t)((uint64_t)r->timestamp_ms - (uint64_t)base_ts);
    uint64_t body = 1 + rv_varint_size_i64(ts_delta) + rv_varint_size_i32(r->offset_delta) +
                    rv_varint_size_i32(r->key_len) + (uint64_t)(r->key_len > 0 ? r->key_len : 0) +
                    rv_varint_size_i32(r->value_len) +
                    (uint64_t)(r->value_len > 0 ? r->value_len : 0) +
                    rv_varint_size_i32((int32_t)r->header_count) + r->headers_bytes;
    uint8_t *q = p;
    q += rv_varint_encode_i32(q, (int32_t)body);
    *q++ = r->attributes;
    q += rv_varint_encode_i64(q, ts_delta);
    q += rv_varint_encode_i32(q, r->offset_delta);
    q += rv_varint_encode_i32(q, r->key_len);
    if (r->key_len > 0) {
        memcpy(q, r->key, (size_t)r->key_len);
        q += r->key_len;
    }
    q += rv_varint_encode_i32(q, r->value_len);
    if (r->value_len > 0) {
        memcpy(q, r->value, (size_t)r->value_len);
        q += r->value_len;
    }
    q += rv_varint_encode_i32(q, (int32_t)r->header_count);
    if (r->headers_bytes > 0)
        memcpy(q, r->headers, r->headers_bytes);
    q += r->headers_bytes;
    return (size_t)(q - p);
}

/* Second walk: the kept records into c->recs, re-encoded against base_ts when
 * the batch gets a new base timestamp, else as they are. Returns the bytes or
 * -errno. */
static int64_t compact_gather(struct rv_compact *c, const struct rv_batch_view *v,
                              const uint8_t *recs, size_t len, int64_t base_ts)
{
    bool is_reencoded = base_ts != v->base_timestamp;
    int64_t horizon = compact_horizon_of(v);
    /* A record grows by at most 15 bytes when re-encoded (timestamp delta, length). */
    int rc = compact_reserve(&c->recs, &c->recs_cap, len + 16 * (size_t)v->record_count);
    if (rc < 0)
        return rc;
    size_t n = 0;
    struct rv_batch_record_iter it;
    struct rv_batch_record r;
    rv_batch_record_iter_init(&it, v, recs, len);
    it.log_append_time = RV_BATCH_NO_TIMESTAMP; /* the records' own timestamps, re-encoded */
    for (;;) {
        const uint8_t *start = it.pos;
        rc = rv_batch_record_iter_next(&it, &r);
        if (rc <= 0)
            break;
        bool is_tombstone;
        if (!compact_keep(c, &r, horizon, &is_tombstone))
            continue;
        if (is_reencoded) {
            n += compact_encode_record(c->recs + n, &r, base_ts);
        } else {
            memcpy(c->recs + n, start, r.size_bytes);
            n += r.size_bytes;
        }
    }
    return rc < 0 ? rc : (int64_t)n;
}

/* Write the header of the rebuilt batch at c->packed (records in place after
 * it, size bytes in all) from the original's, and its CRC. */
static void compact_finish_header(struct rv_compact *c, const struct rv_batch_view *v, size_t size,
                                  uint16_t attributes, int64_t base_ts, int64_t max_ts,
                                  int32_t count)
{
    uint8_t *p = c->packed;
    memcpy(p, v->bytes, RV_BATCH_HEADER_BYTES);
    compact_be32(p + RV_BATCH_LENGTH_POS, (uint32_t)(size - RV_BATCH_LOG_OVERHEAD_BYTES));
    compact_be16(p + RV_BATCH_ATTRIBUTES_POS, attributes);
    compact_be64(p + RV_BATCH_BASE_TIMESTAMP_POS, (uint64_t)base_ts);
    compact_be64(p + RV_BATCH_MAX_TIMESTAMP_POS, (uint64_t)max_ts);
    compact_be32(p + RV_BATCH_RECORD_COUNT_POS, (uint32_t)count);
    uint32_t crc = rv_crc32c(0, p + RV_BATCH_ATTRIBUTES_POS, size - RV_BATCH_ATTRIBUTES_POS);
    compact_be32(p + RV_BATCH_CRC_POS, crc);
}

/* Build the batch with only its kept records into c->packed. Returns its
 * size, 0 when it would not fit max_batch_bytes (keep the original), -errno. */
static int64_t compact_rebuild(struct rv_compact *c, const struct rv_batch_view *v,
                               const uint8_t *recs, size_t len, const struct compact_verdict *vd)
{
    RV_ASSERT(vd->kept > 0 && vd->kept <= v->record_count);
    bool has_horizon = compact_horizon_of(v) != RV_COMPACT_NO_HORIZON;
    bool is_stamped = vd->tombstones_kept > 0 && !has_horizon;
    int64_t base_ts = is_stamped ? c->now_ms + c->delete_retention_ms : v->base_timestamp;
    uint16_t attributes = v->attributes;
    if (is_stamped)
        attributes |= RV_BATCH_ATTR_DELETE_HORIZON;
    int64_t max_ts = rv_batch_has_log_append_time(v) ? v->max_timestamp : vd->max_ts;
    int64_t n = compact_gather(c, v, recs, len, base_ts);
    if (n < 0)
        return n;
    enum rv_codec codec = rv_batch_codec(v);
    size_t bound = RV_BATCH_HEADER_BYTES +
                   (codec == RV_CODEC_NONE ? (size_t)n : rv_codec_compress_bound(codec, (size_t)n));
    int rc = compact_reserve(&c->packed, &c->packed_cap, bound);
    if (rc < 0)
        return rc;
    size_t body = (size_t)n;
    if (codec == RV_CODEC_NONE) {
        memcpy(c->packed + RV_BATCH_HEADER_BYTES, c->recs, (size_t)n);
    } else {
        rc = rv_codec_compress_level(codec, rv_codec_default_level(codec), c->recs, (size_t)n,
                                     c->packed + RV_BATCH_HEADER_BYTES,
                                     c->packed_cap - RV_BATCH_HEADER_BYTES, &body);
        if (rc < 0)
            return rv_errf(rc, "compact %s: recompressing the batch at %" PRId64, c->dir,
                           v->base_offset);
    }
    size_t size = RV_BATCH_HEADER_BYTES + body;
    if (size > c->max_batch_bytes)
        return 0;
    compact_finish_header(c, v, size, attributes, base_ts, max_ts, vd->kept);
    RV_DASSERT(rv_batch_parse(c->packed, size, size, &(struct rv_batch_view){0}) == (int)size);
    return (int64_t)size;
}

static int compact_flush(struct rv_compact *c)
{
    size_t done = 0;
    while (done < c->wbuf_len) {
        ssize_t w = rv_sys_pwrite(c->out_fd, c->wbuf + done, c->wbuf_len - done,
                                  (off_t)(c->out_flushed + done));
        if (w <= 0)
            return rv_errf(w < 0 ? (int)w : -ENOSPC, "compact %s: write", c->dir);
        done += (size_t)w;
    }
    c->out_flushed += c->wbuf_len;
    c->wbuf_len = 0;
    return 0;
}

/* Append a batch to the output segment and note it in its index. */
static int compact_emit(struct rv_compact *c, const uint8_t *bytes, size_t len, int64_t base,
                        int64_t last, int64_t max_ts)
{
    struct rv_seg *seg = &c->outs[c->out_count - 1].seg;
    RV_ASSERT(c->out_fd >= 0 && len >= RV_BATCH_HEADER_BYTES);
    if (base < 0 || (uint64_t)base < seg->next_offset || last < base)
        return rv_errf(-EBADMSG, "compact %s: batch at offset %" PRId64 " out of order", c->dir,
                       base);
    if (seg->size_bytes + len > UINT32_MAX || (uint64_t)last - seg->base_offset > COMPACT_REL_MAX)
        return rv_errf(-EFBIG, "compact %s: the segment at %" PRIu64 " would not fit", c->dir,
                       seg->base_offset);
    if (len > COMPACT_WBUF_BYTES - c->wbuf_len) {
        int rc = compact_flush(c);
        if (rc < 0)
            return rc;
    }
    RV_ASSERT(len <= COMPACT_WBUF_BYTES); /* batches are at most max_batch_bytes (< 1 MiB) */
    memcpy(c->wbuf + c->wbuf_len, bytes, len);
    c->wbuf_len += len;
    if (rv_idx_note_batch(&seg->idx, (uint64_t)base, (uint32_t)seg->size_bytes, (uint32_t)len,
                          max_ts) < 0)
        rv_debug("compact %s: index entry dropped (no memory)", c->dir);
    seg->size_bytes += len;
    seg->next_offset = (uint64_t)last + 1;
    if (max_ts > seg->max_timestamp_ms)
        seg->max_timestamp_ms = max_ts;
    c->stats.bytes_written += len;
    return 0;
}

/* A batch keeps a tombstone until its horizon: the earliest one makes the next
 * pass due. */
static void compact_note_horizon(struct rv_compact *c, int64_t horizon_ms)
{
    if (horizon_ms < c->next_horizon)
        c->next_horizon = horizon_ms;
}

/* A batch below map_end: drop it, copy it, or rebuild it with what stays. */
static int compact_clean_batch(struct rv_compact *c, const struct rv_batch_view *v)
{
    const uint8_t *recs = NULL;
    size_t len = 0;
    struct compact_verdict vd = {0};
    int rc = compact_records(c, v, &recs, &len);
    if (rc == 0)
        rc = compact_judge(c, v, recs, len, &vd);
    if (rc < 0)
        return rv_errf(rc, "compact %s: batch at offset %" PRId64 ": invalid records", c->dir,
                       v->base_offset);
    int64_t horizon = compact_horizon_of(v);
    bool needs_stamp = vd.tombstones_kept > 0 && horizon == RV_COMPACT_NO_HORIZON;
    if (vd.kept == 0) {
        c->stats.batches_dropped++;
        c->is_group_changed = true;
        return 0;
    }
    if (vd.kept < v->record_count || needs_stamp) {
        int64_t size = compact_rebuild(c, v, recs, len, &vd);
        if (size < 0)
            return (int)size;
        if (size > 0) {
            c->stats.batches_rebuilt++;
            c->is_group_changed = true;
            if (vd.tombstones_kept > 0)
                compact_note_horizon(c, needs_stamp ? c->now_ms + c->delete_retention_ms : horizon);
            int64_t max_ts = rv_batch_has_log_append_time(v) ? v->max_timestamp : vd.max_ts;
            return compact_emit(c, c->packed, (size_t)size, v->base_offset, rv_batch_last_offset(v),
                                max_ts);
        }
        /* Too large rebuilt (re-encoded timestamps, recompression): kept whole. */
    } else if (vd.tombstones_kept > 0) {
        compact_note_horizon(c, horizon);
    }
    return compact_emit(c, v->bytes, v->size_bytes, v->base_offset, rv_batch_last_offset(v),
                        v->max_timestamp);
}

static int compact_write_batch(void *arg, const struct rv_batch_view *v, uint64_t pos)
{
    struct rv_compact *c = arg;
    int stop = compact_slice_check(c, v, pos);
    if (stop != 0)
        return stop;
    c->stats.bytes_read += v->size_bytes;
    if (rv_batch_is_control(v) || v->base_offset >= (int64_t)c->map_end)
        return compact_emit(c, v->bytes, v->size_bytes, v->base_offset, rv_batch_last_offset(v),
                            v->max_timestamp);
    return compact_clean_batch(c, v);
}

/* Plan the next group from segment cur (adjacent segments whose bytes fit
 * segment.bytes together, offsets within an index's reach) and create its
 * .cleaned file. */
static int compact_group_open(struct rv_compact *c)
{
    RV_ASSERT(c->out_fd < 0 && c->cur < c->write_end);
    uint32_t first = c->cur;
    uint32_t end = first + 1;
    uint64_t bytes = c->segs[first].size;
    while (end < c->write_end && bytes + c->segs[end].size <= c->segment_bytes &&
           c->segs[end].next - c->segs[first].base <= COMPACT_REL_MAX) {
        bytes += c->segs[end].size;
        end++;
    }
    if (c->out_count == c->out_cap) {
        uint32_t cap = c->out_cap ? c->out_cap * 2 : 4;
        struct rv_compact_output *o = realloc(c->outs, (size_t)cap * sizeof(*o));
        if (o == NULL)
            return -ENOMEM;
        c->outs = o;
        c->out_cap = cap;
    }
    uint64_t group_next = end < c->seg_count ? c->segs[end].base : c->next_base;
    struct rv_compact_output *o = &c->outs[c->out_count];
    *o = (struct rv_compact_output){.first = first, .count = end - first, .end = group_next};
    rv_seg_init(&o->seg, c->segs[first].base, c->index_interval);
    c->out_count++;
    char path[COMPACT_PATH_BYTES];
    int rc = compact_out_name(path, sizeof(path), c->dir, o->seg.base_offset, o->end,
                              RV_COMPACT_CLEANED_SUFFIX);
    int fd = rc == 0 ? rv_sys_open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : rc;
    if (fd < 0)
        return rv_errf(fd, "compact %s: create %s", c->dir, path);
    c->out_fd = fd;
    c->group_end = end;
    c->wbuf_len = 0;
    c->out_flushed = 0;
    c->group_written = c->stats.bytes_written;
    c->is_group_changed = end - first > 1;
    return 0;
}

/* Finish the group's file: flush and fdatasync it, or drop it when it would
 * only copy one segment unchanged. */
static int compact_group_close(struct rv_compact *c)
{
    struct rv_compact_output *o = &c->outs[c->out_count - 1];
    RV_ASSERT(c->out_fd >= 0 && c->cur == c->group_end);
    int rc = compact_flush(c);
    if (rc == 0 && c->is_group_changed)
        rc = rv_sys_fdatasync(c->out_fd);
    int crc = rv_sys_close(c->out_fd);
    c->out_fd = -1;
    if (rc == 0 && crc < 0)
        rc = crc;
    if (rc < 0)
        return rv_errf(rc, "compact %s: writing segment %" PRIu64, c->dir, o->seg.base_offset);
    if (!c->is_group_changed) {
        char path[COMPACT_PATH_BYTES];
        if (compact_out_name(path, sizeof(path), c->dir, o->seg.base_offset, o->end,
                             RV_COMPACT_CLEANED_SUFFIX) == 0)
            (void)rv_sys_unlink(path); /* a copy: recovery removes it if this fails */
        rv_seg_fini(&o->seg);
        c->out_count--;
        c->stats.bytes_written = c->group_written; /* nothing of it stays */
        return 0;
    }
    c->stats.segments_in += o->count;
    c->stats.segments_out++;
    return 0;
}

static int compact_write_step(struct rv_compact *c)
{
    for (;;) {
        if (c->out_fd < 0) {
            if (c->cur >= c->write_end) {
                c->phase = COMPACT_BUILT;
                return 0;
            }
            int rc = compact_group_open(c);
            if (rc < 0)
                return rc;
        }
        while (c->cur < c->group_end) {
            int rc = compact_scan(c, compact_write_batch);
            if (rc != 0)
                return rc; /* 1: the slice is over */
            c->cur++;
            c->pos = 0;
        }
        int rc = compact_group_close(c);
        if (rc < 0)
            return rc;
        if (c->step_bytes >= RV_COMPACT_STEP_BYTES)
            return 1;
    }
}

int rv_compact_step(rv_compact_t *c)
{
    RV_ASSERT(c != NULL);
    RV_ASSERT(c->phase == COMPACT_MAP || c->phase == COMPACT_WRITE);
    c->step_bytes = 0;
    int rc = c->phase == COMPACT_MAP ? compact_map_step(c) : compact_write_step(c);
    if (rc < 0)
        c->phase = COMPACT_FAILED;
    if (rc <= 0 && c->in_fd >= 0) {
        (void)rv_sys_close(c->in_fd); /* read-only; nothing more to read */
        c->in_fd = -1;
        c->in_seg = UINT32_MAX;
    }
    return rc;
}

/* ---- phase 3: the swap, and recovery ------------------------------------------------------ */

static int compact_unlink(const char *dir, uint64_t base, const char *suffix)
{
    char path[COMPACT_PATH_BYTES];
    int rc = rv_idx_file_name(path, sizeof(path), dir, base, suffix);
    if (rc == 0)
        rc = rv_sys_unlink(path);
    return rc == -ENOENT ? 0 : rc;
}

/* Replace the old segments olds[0, n) (ascending, olds[0] == base when it
 * still exists) with the committed file swap_path: their index files and the
 * other .log files go, then swap_path becomes <base>.log. Repeatable: recovery
 * runs it again after a crash in the middle. */
static int compact_complete(const char *dir, uint64_t base, const uint64_t *olds, uint32_t n,
                            const char *swap_path)
{
    int rc = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        rc = compact_unlink(dir, olds[i], ".index");
        if (rc == 0)
            rc = compact_unlink(dir, olds[i], ".timeindex");
    }
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        if (olds[i] != base)
            rc = compact_unlink(dir, olds[i], ".log");
    }
    if (rc == 0)
        rc = rv_sys_fsync_dir(dir);
    char path[COMPACT_PATH_BYTES];
    if (rc == 0)
        rc = rv_idx_file_name(path, sizeof(path), dir, base, ".log");
    if (rc == 0)
        rc = rv_sys_rename(swap_path, path);
    if (rc == 0)
        rc = rv_sys_fsync_dir(dir);
    return rc < 0 ? rv_errf(rc, "compact %s: swapping in segment %" PRIu64, dir, base) : 0;
}

static int compact_swap_one(struct rv_compact *c, struct rv_compact_output *o)
{
    char cleaned[COMPACT_PATH_BYTES], swap[COMPACT_PATH_BYTES];
    uint64_t base = o->seg.base_offset;
    int rc =
        compact_out_name(cleaned, sizeof(cleaned), c->dir, base, o->end, RV_COMPACT_CLEANED_SUFFIX);
    if (rc == 0)
        rc = compact_out_name(swap, sizeof(swap), c->dir, base, o->end, RV_COMPACT_SWAP_SUFFIX);
    if (rc == 0)
        rc = rv_sys_rename(cleaned, swap);
    if (rc < 0)
        return rv_errf(rc, "compact %s: commit segment %" PRIu64, c->dir, base);
    c->is_committed = true; /* the rename happened: recovery would complete it */
    rc = rv_sys_fsync_dir(c->dir);
    uint64_t *bases = malloc((size_t)o->count * sizeof(*bases));
    if (rc == 0 && bases == NULL)
        rc = -ENOMEM;
    for (uint32_t i = 0; rc == 0 && i < o->count; i++)
        bases[i] = c->segs[o->first + i].base;
    if (rc == 0)
        rc = compact_complete(c->dir, base, bases, o->count, swap);
    free(bases);
    uint32_t changes = o->seg.idx.changes;
    if (rc == 0)
        rc = rv_idx_save(&o->seg.idx, c->dir);
    if (rc < 0)
        return rc;
    o->seg.idx.saved_changes = changes;
    o->is_swapped = true;
    return 0;
}

static int compact_point_write(const char *dir, const struct rv_compact_point *p)
{
    char path[COMPACT_PATH_BYTES], tmp[COMPACT_PATH_BYTES];
    int n = snprintf(path, sizeof(path), "%s/" RV_COMPACT_POINT_FILE, dir);
    int m = snprintf(tmp, sizeof(tmp), "%s/" RV_COMPACT_POINT_FILE ".tmp", dir);
    if (n < 0 || (size_t)n >= sizeof(path) || m < 0 || (size_t)m >= sizeof(tmp))
        return -ENAMETOOLONG;
    char text[64];
    int len =
        snprintf(text, sizeof(text), "%" PRIu64 " %" PRId64 "\n", p->clean_offset, p->horizon_ms);
    int fd = rv_sys_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return fd;
    ssize_t w = rv_sys_pwrite(fd, text, (size_t)len, 0);
    int rc = w == len ? rv_sys_fdatasync(fd) : (w < 0 ? (int)w : -ENOSPC);
    int crc = rv_sys_close(fd);
    if (rc == 0)
        rc = crc;
    if (rc == 0)
        rc = rv_sys_rename(tmp, path);
    if (rc == 0)
        rc = rv_sys_fsync_dir(dir);
    if (rc < 0)
        (void)rv_sys_unlink(tmp); /* best effort: the old point stays valid */
    return rc;
}

int rv_compact_swap(rv_compact_t *c)
{
    RV_ASSERT(c != NULL);
    RV_ASSERT(c->phase == COMPACT_BUILT);
    for (uint32_t i = 0; i < c->out_count; i++) {
        int rc = compact_swap_one(c, &c->outs[i]);
        if (rc < 0)
            return rc;
    }
    struct rv_compact_point p = rv_compact_next_point(c);
    int rc = compact_point_write(c->dir, &p);
    if (rc < 0) /* the segments are in place; an old point only means more work later */
        rv_warn("compact %s: cannot save %s: %s", c->dir, RV_COMPACT_POINT_FILE, rv_strerror(rc));
    return 0;
}

void rv_compact_discard(rv_compact_t *c)
{
    RV_ASSERT(c != NULL);
    RV_ASSERT(!c->is_committed);
    if (c->out_fd >= 0)
        (void)rv_sys_close(c->out_fd); /* abandoned */
    c->out_fd = -1;
    for (uint32_t i = 0; i < c->out_count; i++) {
        char path[COMPACT_PATH_BYTES];
        if (compact_out_name(path, sizeof(path), c->dir, c->outs[i].seg.base_offset, c->outs[i].end,
                             RV_COMPACT_CLEANED_SUFFIX) == 0)
            (void)rv_sys_unlink(path); /* recovery removes what is left */
    }
}

static int compact_point_read(const char *dir, struct rv_compact_point *out)
{
    *out = (struct rv_compact_point){.clean_offset = 0, .horizon_ms = RV_COMPACT_NO_HORIZON};
    char path[COMPACT_PATH_BYTES];
    int n = snprintf(path, sizeof(path), "%s/" RV_COMPACT_POINT_FILE, dir);
    if (n < 0 || (size_t)n >= sizeof(path))
        return -ENAMETOOLONG;
    int fd = rv_sys_open(path, O_RDONLY | O_CLOEXEC, 0);
    if (fd == -ENOENT)
        return 0;
    if (fd < 0)
        return rv_errf(fd, "%s: open", path);
    char text[64] = {0};
    ssize_t r = rv_sys_pread(fd, text, sizeof(text) - 1, 0);
    (void)rv_sys_close(fd); /* read-only */
    unsigned long long clean = 0;
    long long horizon = 0;
    if (r <= 0 || sscanf(text, "%llu %lld", &clean, &horizon) != 2 || clean > INT64_MAX)
        return rv_errf(-EBADMSG, "%s: not a compaction point", path);
    *out = (struct rv_compact_point){.clean_offset = clean, .horizon_ms = horizon};
    return 0;
}

/* Complete the committed swap "<base>.<end>.log.swap" found at recovery. */
static int compact_recover_swap(const char *dir, const char *name, uint64_t base, uint64_t end)
{
    char swap[COMPACT_PATH_BYTES];
    int n = snprintf(swap, sizeof(swap), "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof(swap))
        return -ENAMETOOLONG;
    uint64_t *bases = NULL;
    uint32_t count = 0;
    int rc = rv_seg_list(dir, &bases, &count);
    if (rc < 0)
        return rc;
    uint32_t first = 0;
    while (first < count && bases[first] < base)
        first++;
    uint32_t last = first;
    while (last < count && bases[last] < end)
        last++;
    rv_warn("compact %s: completing an interrupted swap of segments %" PRIu64 "..%" PRIu64
            " (%u old segment files left)",
            dir, base, end, last - first);
    rc = compact_complete(dir, base, bases + first, last - first, swap);
    free(bases);
    return rc;
}

/* Visit the directory's entries: remove .cleaned files, complete .swap ones. */
static int compact_recover_entries(const char *dir, DIR *d)
{
    int rc = 0;
    bool is_removed = false;
    struct dirent *de;
    while (rc == 0 && (errno = 0, de = readdir(d)) != NULL) {
        uint64_t base, end;
        if (compact_parse_out_name(de->d_name, RV_COMPACT_CLEANED_SUFFIX, &base, &end)) {
            char path[COMPACT_PATH_BYTES];
            int n = snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
            rc = n < 0 || (size_t)n >= sizeof(path) ? -ENAMETOOLONG : rv_sys_unlink(path);
            rv_info("compact %s: removed %s (a pass that did not commit)", dir, de->d_name);
            is_removed = true;
        } else if (compact_parse_out_name(de->d_name, RV_COMPACT_SWAP_SUFFIX, &base, &end)) {
            rc = compact_recover_swap(dir, de->d_name, base, end);
        }
    }
    if (rc == 0 && errno != 0)
        rc = -errno;
    if (rc == 0 && is_removed)
        rc = rv_sys_fsync_dir(dir);
    return rc;
}

int rv_compact_recover(const char *dir, struct rv_compact_point *out)
{
    RV_ASSERT(dir != NULL && out != NULL);
    DIR *d = opendir(dir);
    if (d == NULL && errno != ENOENT)
        return rv_errf(-errno, "compact %s: opendir", dir);
    int rc = 0;
    if (d != NULL) {
        /* Renaming and unlinking while reading the directory may show an entry
         * twice or not at all; every step here is repeatable, and what was
         * missed is done at the next open. */
        rc = compact_recover_entries(dir, d);
        closedir(d); /* read-only */
    }
    if (rc < 0)
        return rv_errf(rc, "compact %s: recovery: %s", dir, rv_err_msg());
    rc = compact_point_read(dir, out);
    if (rc == -EBADMSG) { /* only a hint: the next pass starts from the log start */
        rv_warn("%s", rv_err_msg());
        rc = 0;
    }
    return rc;
}

/* ---- queries and checks -------------------------------------------------------------------- */

bool rv_compact_is_committed(const rv_compact_t *c)
{
    return c->is_committed;
}

uint32_t rv_compact_output_count(const rv_compact_t *c)
{
    return c->out_count;
}

const struct rv_compact_output *rv_compact_output_get(const rv_compact_t *c, uint32_t i)
{
    RV_ASSERT(i < c->out_count);
    return &c->outs[i];
}

void rv_compact_output_take(rv_compact_t *c, uint32_t i, struct rv_seg *out)
{
    RV_ASSERT(i < c->out_count);
    RV_ASSERT(c->outs[i].is_swapped);
    *out = c->outs[i].seg;
    rv_seg_init(&c->outs[i].seg, out->base_offset, c->index_interval); /* owns nothing now */
}

struct rv_compact_point rv_compact_next_point(const rv_compact_t *c)
{
    RV_ASSERT(c->phase == COMPACT_BUILT);
    uint64_t clean = c->map_end > c->point.clean_offset ? c->map_end : c->point.clean_offset;
    return (struct rv_compact_point){.clean_offset = clean, .horizon_ms = c->next_horizon};
}

const struct rv_compact_stats *rv_compact_get_stats(const rv_compact_t *c)
{
    return &c->stats;
}

bool rv_compact_is_due(const struct rv_seg *segs, uint32_t count,
                       const struct rv_compact_point *point, double min_dirty_ratio, int64_t now_ms)
{
    RV_ASSERT(point != NULL);
    RV_ASSERT(count == 0 || segs != NULL);
    if (count == 0)
        return false;
    if (point->horizon_ms != RV_COMPACT_NO_HORIZON && now_ms >= point->horizon_ms)
        return true; /* a tombstone may go */
    uint64_t clean = 0;
    uint64_t dirty = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (segs[i].next_offset <= point->clean_offset)
            clean += segs[i].size_bytes;
        else
            dirty += segs[i].size_bytes;
    }
    return dirty > 0 && (double)dirty >= min_dirty_ratio * (double)(clean + dirty);
}

int rv_compact_check_keys(const struct rv_batch_view *v, const uint8_t *records, size_t len)
{
    RV_ASSERT(v != NULL);
    if (rv_batch_is_control(v))
        return 0;
    struct rv_batch_record_iter it;
    struct rv_batch_record r;
    rv_batch_record_iter_init(&it, v, records, len);
    int rc;
    while ((rc = rv_batch_record_iter_next(&it, &r)) == 1) {
        if (r.key_len < 0)
            return rv_errf(-EINVAL, "compacted topic: the record at offset delta %d has no key",
                           r.offset_delta);
    }
    return rc;
}
