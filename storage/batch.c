/*
 * storage/batch.c - Kafka RecordBatch v2: parse, validate, iterate, stamp, build.
 *
 * Every reader here takes bytes from the network or a disk, so bounds are checked
 * before each read and nothing asserts on content: a varint is decoded with the
 * bytes left in its record, and every length is compared with those bytes before a
 * pointer moves. Arithmetic on untrusted 64-bit values (base + delta) wraps through
 * uint64_t rather than overflowing a signed type. The builder's inputs come from our
 * own code and are asserted.
 *
 * What "valid records" means follows Kafka's DefaultRecord/DefaultRecordBatch readers
 * (record body exactly its length, header keys non-null, count equal to the records
 * present, nothing after the last) plus the offset-delta rule that compaction keeps:
 * strictly increasing from >= 0 and never past lastOffsetDelta. Dense deltas
 * (0..count-1), which Kafka demands of a client's produce, are reported in
 * view->has_dense_offsets rather than enforced, so that compacted batches read back
 * from a log remain valid.
 */
#include "storage/batch.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "core/crc32c.h"
#include "core/err.h"
#include "core/varint.h"

RV_STATIC_ASSERT(RV_BATCH_HEADER_BYTES == RV_BATCH_RECORD_COUNT_POS + 4);
RV_STATIC_ASSERT(RV_BATCH_LENGTH_MIN == 49);

/* Big-endian fields. */

static inline uint16_t be16_load(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static inline uint32_t be32_load(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t be64_load(const uint8_t *p)
{
    return (uint64_t)be32_load(p) << 32 | be32_load(p + 4);
}

static inline void be16_store(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void be32_store(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void be64_store(uint8_t *p, uint64_t v)
{
    be32_store(p, (uint32_t)(v >> 32));
    be32_store(p + 4, (uint32_t)v);
}

/* Signed addition that wraps instead of overflowing: base and delta may both come
 * from untrusted bytes. */
static inline int64_t batch_add_wrap(int64_t a, int64_t b)
{
    return (int64_t)((uint64_t)a + (uint64_t)b);
}

/* A bounded reader over the bytes of one record. */
struct batch_cursor {
    const uint8_t *p;
    size_t left;
};

static int cursor_i32(struct batch_cursor *c, int32_t *out)
{
    int n = rv_varint_decode_i32(c->p, c->left, out);
    if (n < 0)
        return n;
    c->p += n;
    c->left -= (size_t)n;
    return 0;
}

static int cursor_i64(struct batch_cursor *c, int64_t *out)
{
    int n = rv_varint_decode_i64(c->p, c->left, out);
    if (n < 0)
        return n;
    c->p += n;
    c->left -= (size_t)n;
    return 0;
}

/* Read a varint length >= min_len (-1 allows null) and that many bytes. */
static int cursor_bytes(struct batch_cursor *c, int32_t min_len, const uint8_t **out,
                        int32_t *out_len)
{
    int32_t n = 0;
    if (cursor_i32(c, &n) < 0 || n < min_len)
        return -EINVAL;
    if (n < 0) {
        *out = NULL;
        *out_len = -1;
        return 0;
    }
    if ((size_t)n > c->left)
        return -EINVAL;
    *out = c->p;
    *out_len = n;
    c->p += n;
    c->left -= (size_t)n;
    return 0;
}

/* Read one header: a non-null key and a nullable value. */
static int cursor_header(struct batch_cursor *c, struct rv_batch_record_header *out)
{
    if (cursor_bytes(c, 0, &out->key, &out->key_len) < 0)
        return -EINVAL;
    return cursor_bytes(c, -1, &out->value, &out->value_len);
}

/* Records. */

static int record_invalid(const struct rv_batch_record_iter *it, const char *what)
{
    return rv_errf(-EINVAL, "batch: invalid record %d of %d: %s", it->index, it->record_count,
                   what);
}

/* Decode the fields after the attributes byte of one record body (c covers exactly
 * the body) into *out. Returns NULL or what was wrong. */
static const char *record_decode_body(struct batch_cursor *c, struct rv_batch_record *out,
                                      int64_t *out_ts_delta)
{
    if (cursor_i64(c, out_ts_delta) < 0)
        return "timestamp delta";
    if (cursor_i32(c, &out->offset_delta) < 0)
        return "offset delta";
    if (cursor_bytes(c, -1, &out->key, &out->key_len) < 0)
        return "key length";
    if (cursor_bytes(c, -1, &out->value, &out->value_len) < 0)
        return "value length";
    int32_t header_count = 0;
    if (cursor_i32(c, &header_count) < 0 || header_count < 0)
        return "header count";
    /* A header takes at least two bytes, which bounds the loop before it starts. */
    if ((size_t)header_count > c->left / 2)
        return "header count past the record";
    out->header_count = (uint32_t)header_count;
    out->headers = c->p;
    for (int32_t i = 0; i < header_count; i++) {
        struct rv_batch_record_header h;
        if (cursor_header(c, &h) < 0)
            return "header";
    }
    out->headers_bytes = (size_t)(c->p - out->headers);
    if (c->left != 0)
        return "bytes left after the headers";
    return NULL;
}

/* Decode the record at it->pos into *out without moving the iterator. */
static int record_decode(const struct rv_batch_record_iter *it, struct rv_batch_record *out)
{
    int32_t body_len = 0;
    int n = rv_varint_decode_i32(it->pos, it->left_bytes, &body_len);
    if (n < 0)
        return record_invalid(it, "length varint");
    if (body_len < RV_BATCH_RECORD_BYTES_MIN - 1)
        return record_invalid(it, "length too small");
    if ((size_t)body_len > it->left_bytes - (size_t)n) {
        return record_invalid(it, "length past the end");
    }
    struct batch_cursor c = {.p = it->pos + n, .left = (size_t)body_len};
    out->attributes = *c.p;
    c.p++;
    c.left--;
    int64_t ts_delta = 0;
    const char *what = record_decode_body(&c, out, &ts_delta);
    if (what != NULL)
        return record_invalid(it, what);
    if (out->offset_delta <= it->prev_offset_delta) {
        return record_invalid(it, "offset delta not increasing");
    }
    if (out->offset_delta > it->last_offset_delta) {
        return record_invalid(it, "offset delta past lastOffsetDelta");
    }
    out->offset = batch_add_wrap(it->base_offset, out->offset_delta);
    out->timestamp_ms = it->log_append_time != RV_BATCH_NO_TIMESTAMP
                            ? it->log_append_time
                            : batch_add_wrap(it->base_timestamp, ts_delta);
    out->size_bytes = (size_t)n + (size_t)body_len;
    return 0;
}

void rv_batch_record_iter_init(struct rv_batch_record_iter *it, const struct rv_batch_view *view,
                               const uint8_t *records, size_t len)
{
    RV_ASSERT(it != NULL && view != NULL);
    RV_ASSERT(records != NULL || len == 0);
    it->pos = records;
    it->left_bytes = len;
    it->base_offset = view->base_offset;
    it->base_timestamp = view->base_timestamp;
    it->log_append_time = (view->attributes & RV_BATCH_ATTR_LOG_APPEND_TIME) != 0
                              ? view->max_timestamp
                              : RV_BATCH_NO_TIMESTAMP;
    it->record_count = view->record_count;
    it->index = 0;
    it->last_offset_delta = view->last_offset_delta;
    it->prev_offset_delta = -1;
    it->has_dense_offsets = true;
}

int rv_batch_record_iter_next(struct rv_batch_record_iter *it, struct rv_batch_record *out)
{
    RV_ASSERT(it != NULL && out != NULL);
    if (it->index >= it->record_count) {
        if (it->left_bytes != 0)
            return record_invalid(it, "trailing bytes after the last");
        return 0;
    }
    if (it->left_bytes == 0)
        return record_invalid(it, "missing (count is too high)");
    int rc = record_decode(it, out);
    if (rc < 0)
        return rc;
    if (out->offset_delta != it->index)
        it->has_dense_offsets = false;
    it->prev_offset_delta = out->offset_delta;
    it->pos += out->size_bytes;
    it->left_bytes -= out->size_bytes;
    it->index++;
    return 1;
}

void rv_batch_header_iter_init(struct rv_batch_header_iter *it, const struct rv_batch_record *rec)
{
    RV_ASSERT(it != NULL && rec != NULL);
    RV_ASSERT(rec->headers != NULL || rec->headers_bytes == 0);
    it->pos = rec->headers;
    it->left_bytes = rec->headers_bytes;
    it->left_count = rec->header_count;
}

int rv_batch_header_iter_next(struct rv_batch_header_iter *it, struct rv_batch_record_header *out)
{
    RV_ASSERT(it != NULL && out != NULL);
    if (it->left_count == 0)
        return 0;
    struct batch_cursor c = {.p = it->pos, .left = it->left_bytes};
    if (cursor_header(&c, out) < 0)
        return rv_errf(-EINVAL, "batch: invalid record header");
    it->pos = c.p;
    it->left_bytes = c.left;
    it->left_count--;
    return 1;
}

int rv_batch_validate_records(struct rv_batch_view *view, const uint8_t *records, size_t len)
{
    RV_ASSERT(view != NULL);
    struct rv_batch_record_iter it;
    struct rv_batch_record rec;
    rv_batch_record_iter_init(&it, view, records, len);
    int rc;
    int64_t max_ts = RV_BATCH_NO_TIMESTAMP, min_ts = RV_BATCH_NO_TIMESTAMP;
    /* Bounded: each turn consumes a record of >= 7 bytes or ends. */
    while ((rc = rv_batch_record_iter_next(&it, &rec)) > 0) {
        if (rec.timestamp_ms > max_ts)
            max_ts = rec.timestamp_ms;
        if (rec.timestamp_ms != RV_BATCH_NO_TIMESTAMP &&
            (min_ts == RV_BATCH_NO_TIMESTAMP || rec.timestamp_ms < min_ts))
            min_ts = rec.timestamp_ms;
    }
    if (rc < 0)
        return rc;
    bool is_append_time = (view->attributes & RV_BATCH_ATTR_LOG_APPEND_TIME) != 0;
    view->records_max_timestamp = is_append_time ? view->max_timestamp : max_ts;
    view->records_min_timestamp = is_append_time ? view->base_timestamp : min_ts;
    view->has_dense_offsets = it.has_dense_offsets && view->record_count > 0 &&
                              view->last_offset_delta == view->record_count - 1;
    return 0;
}

/* Parsing. */

static void batch_header_decode(const uint8_t *buf, struct rv_batch_view *v)
{
    v->base_offset = (int64_t)be64_load(buf + RV_BATCH_BASE_OFFSET_POS);
    v->length = (int32_t)be32_load(buf + RV_BATCH_LENGTH_POS);
    v->leader_epoch = (int32_t)be32_load(buf + RV_BATCH_LEADER_EPOCH_POS);
    v->magic = (int8_t)buf[RV_BATCH_MAGIC_POS];
    v->crc = be32_load(buf + RV_BATCH_CRC_POS);
    v->attributes = be16_load(buf + RV_BATCH_ATTRIBUTES_POS);
    v->last_offset_delta = (int32_t)be32_load(buf + RV_BATCH_LAST_OFFSET_DELTA_POS);
    v->base_timestamp = (int64_t)be64_load(buf + RV_BATCH_BASE_TIMESTAMP_POS);
    v->max_timestamp = (int64_t)be64_load(buf + RV_BATCH_MAX_TIMESTAMP_POS);
    v->producer_id = (int64_t)be64_load(buf + RV_BATCH_PRODUCER_ID_POS);
    v->producer_epoch = (int16_t)be16_load(buf + RV_BATCH_PRODUCER_EPOCH_POS);
    v->base_sequence = (int32_t)be32_load(buf + RV_BATCH_BASE_SEQUENCE_POS);
    v->record_count = (int32_t)be32_load(buf + RV_BATCH_RECORD_COUNT_POS);
    v->has_dense_offsets = false;
    v->records_max_timestamp = v->max_timestamp;
    v->records_min_timestamp = v->base_timestamp;
}

/* Check the framing of the batch at buf: magic, sizes, CRC. Returns its size. */
static int batch_check_frame(const uint8_t *buf, size_t len, size_t max_batch_bytes)
{
    /* Magic sits at byte 16 in every message format, so it is read first: a v0/v1
     * message set is reported as such rather than as a bad length. */
    if (len <= RV_BATCH_MAGIC_POS)
        return rv_errf(-EBADMSG, "batch: truncated (%zu bytes)", len);
    if (buf[RV_BATCH_MAGIC_POS] != RV_BATCH_MAGIC) {
        return rv_errf(-EPROTONOSUPPORT, "batch: magic %d", (int8_t)buf[RV_BATCH_MAGIC_POS]);
    }
    if (len < RV_BATCH_HEADER_BYTES) {
        return rv_errf(-EBADMSG, "batch: truncated header (%zu bytes)", len);
    }
    int32_t length = (int32_t)be32_load(buf + RV_BATCH_LENGTH_POS);
    if (length < RV_BATCH_LENGTH_MIN)
        return rv_errf(-EBADMSG, "batch: batchLength %d", length);
    size_t size = RV_BATCH_LOG_OVERHEAD_BYTES + (size_t)length;
    if (size > max_batch_bytes || size > INT_MAX) {
        return rv_errf(-EMSGSIZE, "batch: %zu bytes, limit %zu", size, max_batch_bytes);
    }
    if (size > len)
        return rv_errf(-EBADMSG, "batch: truncated (%zu of %zu bytes)", len, size);
    uint32_t crc = rv_crc32c(0, buf + RV_BATCH_ATTRIBUTES_POS, size - RV_BATCH_ATTRIBUTES_POS);
    uint32_t stored = be32_load(buf + RV_BATCH_CRC_POS);
    if (crc != stored) {
        return rv_errf(-EBADMSG, "batch: crc 0x%08x, computed 0x%08x", stored, crc);
    }
    return (int)size;
}

int rv_batch_parse(const uint8_t *buf, size_t len, size_t max_batch_bytes,
                   struct rv_batch_view *out)
{
    RV_ASSERT(out != NULL);
    RV_ASSERT(buf != NULL || len == 0);
    int size = batch_check_frame(buf, len, max_batch_bytes);
    if (size < 0)
        return size;
    batch_header_decode(buf, out);
    out->bytes = buf;
    out->size_bytes = (size_t)size;
    out->records = buf + RV_BATCH_HEADER_BYTES;
    out->records_bytes = (size_t)size - RV_BATCH_HEADER_BYTES;
    int codec = out->attributes & RV_BATCH_ATTR_CODEC_MASK;
    if (!rv_codec_is_valid(codec))
        return rv_errf(-ENOTSUP, "batch: compression codec %d", codec);
    if (out->record_count < 0)
        return rv_errf(-EINVAL, "batch: record count %d", out->record_count);
    if (out->last_offset_delta < 0 ||
        (out->record_count > 0 && out->last_offset_delta < out->record_count - 1)) {
        return rv_errf(-EINVAL, "batch: lastOffsetDelta %d with %d records", out->last_offset_delta,
                       out->record_count);
    }
    if (codec == RV_CODEC_NONE) {
        int rc = rv_batch_validate_records(out, out->records, out->records_bytes);
        if (rc < 0)
            return rc;
    }
    return size;
}

int rv_batch_parse_built(const uint8_t *buf, size_t len, struct rv_batch_view *out)
{
    RV_ASSERT(out != NULL && buf != NULL);
    if (len < RV_BATCH_HEADER_BYTES ||
        (uint64_t)be32_load(buf + RV_BATCH_LENGTH_POS) + RV_BATCH_LOG_OVERHEAD_BYTES != len)
        return rv_errf(-EBADMSG, "batch: a built batch of %zu bytes does not add up", len);
    batch_header_decode(buf, out);
    out->bytes = buf;
    out->size_bytes = len;
    out->records = buf + RV_BATCH_HEADER_BYTES;
    out->records_bytes = len - RV_BATCH_HEADER_BYTES;
    out->has_dense_offsets = true;
    return (int)len;
}

/* Back-to-back batches. */

void rv_batch_iter_init(struct rv_batch_iter *it, const uint8_t *buf, size_t len,
                        size_t max_batch_bytes)
{
    RV_ASSERT(it != NULL);
    RV_ASSERT(buf != NULL || len == 0);
    it->pos = buf;
    it->left_bytes = len;
    it->max_batch_bytes = max_batch_bytes;
}

int rv_batch_iter_next(struct rv_batch_iter *it, struct rv_batch_view *out)
{
    RV_ASSERT(it != NULL && out != NULL);
    if (it->left_bytes < RV_BATCH_LOG_OVERHEAD_BYTES)
        return 0;
    /* A sane batchLength reaching past the end is a partial trailing batch; anything
     * else goes to the parser, which names the problem. */
    int32_t length = (int32_t)be32_load(it->pos + RV_BATCH_LENGTH_POS);
    size_t size = RV_BATCH_LOG_OVERHEAD_BYTES + (size_t)(length < 0 ? 0 : length);
    if (length >= RV_BATCH_LENGTH_MIN && size <= it->max_batch_bytes && size > it->left_bytes) {
        return 0;
    }
    int rc = rv_batch_parse(it->pos, it->left_bytes, it->max_batch_bytes, out);
    if (rc < 0)
        return rc;
    it->pos += rc;
    it->left_bytes -= (size_t)rc;
    return 1;
}

int rv_batch_split(const uint8_t *buf, size_t len, size_t max_batch_bytes, size_t *out_count,
                   size_t *out_bytes)
{
    RV_ASSERT(out_count != NULL && out_bytes != NULL);
    struct rv_batch_iter it;
    struct rv_batch_view view;
    size_t count = 0;
    rv_batch_iter_init(&it, buf, len, max_batch_bytes);
    int rc;
    /* Bounded: each turn consumes a batch of >= 61 bytes or ends. */
    while ((rc = rv_batch_iter_next(&it, &view)) > 0) {
        count++;
    }
    if (rc < 0)
        return rc;
    *out_count = count;
    *out_bytes = len - rv_batch_iter_rest_bytes(&it);
    return 0;
}

/* Stamping. */

void rv_batch_set_base_offset(uint8_t *batch, int64_t base_offset)
{
    RV_ASSERT(batch != NULL);
    be64_store(batch + RV_BATCH_BASE_OFFSET_POS, (uint64_t)base_offset);
}

void rv_batch_set_leader_epoch(uint8_t *batch, int32_t leader_epoch)
{
    RV_ASSERT(batch != NULL);
    be32_store(batch + RV_BATCH_LEADER_EPOCH_POS, (uint32_t)leader_epoch);
}

void rv_batch_set_max_timestamp(uint8_t *batch, int64_t ts_ms)
{
    RV_ASSERT(batch != NULL);
    int32_t length = (int32_t)be32_load(batch + RV_BATCH_LENGTH_POS);
    RV_ASSERT(length >= RV_BATCH_LENGTH_MIN); /* the batch was parsed */
    if ((int64_t)be64_load(batch + RV_BATCH_MAX_TIMESTAMP_POS) == ts_ms)
        return;
    be64_store(batch + RV_BATCH_MAX_TIMESTAMP_POS, (uint64_t)ts_ms);
    size_t crc_bytes = RV_BATCH_LOG_OVERHEAD_BYTES + (size_t)length - RV_BATCH_ATTRIBUTES_POS;
    be32_store(batch + RV_BATCH_CRC_POS, rv_crc32c(0, batch + RV_BATCH_ATTRIBUTES_POS, crc_bytes));
}

void rv_batch_set_log_append_time(uint8_t *batch, int64_t ts_ms)
{
    RV_ASSERT(batch != NULL);
    int32_t length = (int32_t)be32_load(batch + RV_BATCH_LENGTH_POS);
    RV_ASSERT(length >= RV_BATCH_LENGTH_MIN); /* the batch was parsed */
    uint16_t attributes = be16_load(batch + RV_BATCH_ATTRIBUTES_POS);
    uint16_t want = attributes | RV_BATCH_ATTR_LOG_APPEND_TIME;
    if (attributes == want && (int64_t)be64_load(batch + RV_BATCH_MAX_TIMESTAMP_POS) == ts_ms) {
        return; /* Kafka skips the CRC too when nothing changes */
    }
    be16_store(batch + RV_BATCH_ATTRIBUTES_POS, want);
    be64_store(batch + RV_BATCH_MAX_TIMESTAMP_POS, (uint64_t)ts_ms);
    size_t crc_bytes = RV_BATCH_LOG_OVERHEAD_BYTES + (size_t)length - RV_BATCH_ATTRIBUTES_POS;
    be32_store(batch + RV_BATCH_CRC_POS, rv_crc32c(0, batch + RV_BATCH_ATTRIBUTES_POS, crc_bytes));
}

/* Building. */

int rv_batch_builder_init(struct rv_batch_builder *b, uint8_t *buf, size_t cap_bytes,
                          const struct rv_batch_params *params)
{
    RV_ASSERT(b != NULL && buf != NULL && params != NULL);
    RV_ASSERT((params->attributes & RV_BATCH_ATTR_CODEC_MASK) == 0); /* finish picks it */
    if (cap_bytes < RV_BATCH_HEADER_BYTES) {
        return rv_errf(-ENOSPC, "batch: %zu bytes cannot hold a header", cap_bytes);
    }
    b->buf = buf;
    b->cap_bytes = cap_bytes;
    b->pos = RV_BATCH_HEADER_BYTES;
    b->params = *params;
    b->max_timestamp = RV_BATCH_NO_TIMESTAMP;
    b->record_count = 0;
    b->is_finished = false;
    return 0;
}

/* Encoded size of a nullable byte string with its varint length. */
static uint64_t builder_field_bytes(int32_t len)
{
    return rv_varint_size_i32(len) + (uint64_t)(len < 0 ? 0 : len);
}

/* Encoded size of a record body (everything after its length varint). */
static uint64_t builder_body_bytes(int64_t ts_delta, int32_t offset_delta, int32_t key_len,
                                   int32_t value_len, const struct rv_batch_record_header *headers,
                                   uint32_t header_count)
{
    uint64_t n = 1 + rv_varint_size_i64(ts_delta) + rv_varint_size_i32(offset_delta);
    n += builder_field_bytes(key_len) + builder_field_bytes(value_len);
    n += rv_varint_size_i32((int32_t)header_count);
    for (uint32_t i = 0; i < header_count; i++) {
        RV_ASSERT(headers[i].key_len >= 0 && headers[i].value_len >= -1);
        n += builder_field_bytes(headers[i].key_len) + builder_field_bytes(headers[i].value_len);
    }
    return n;
}

static uint8_t *builder_put_bytes(uint8_t *p, const void *data, int32_t len)
{
    p += rv_varint_encode_i32(p, len);
    if (len > 0) {
        memcpy(p, data, (size_t)len);
        p += len;
    }
    return p;
}

int rv_batch_builder_add(struct rv_batch_builder *b, int64_t timestamp_ms, const void *key,
                         int32_t key_len, const void *value, int32_t value_len,
                         const struct rv_batch_record_header *headers, uint32_t header_count)
{
    RV_ASSERT(b != NULL && !b->is_finished);
    RV_ASSERT(key_len >= -1 && (key_len <= 0 || key != NULL));
    RV_ASSERT(value_len >= -1 && (value_len <= 0 || value != NULL));
    RV_ASSERT(header_count == 0 || headers != NULL);
    if (b->record_count == INT32_MAX || header_count > INT32_MAX) {
        return rv_errf(-EMSGSIZE, "batch: too many records or headers");
    }
    int64_t base_ts = b->record_count == 0 && b->params.base_timestamp == RV_BATCH_NO_TIMESTAMP
                          ? timestamp_ms
                          : b->params.base_timestamp;
    int64_t ts_delta = (int64_t)((uint64_t)timestamp_ms - (uint64_t)base_ts); /* no overflow */
    uint64_t body =
        builder_body_bytes(ts_delta, b->record_count, key_len, value_len, headers, header_count);
    if (body > INT32_MAX)
        return rv_errf(-EMSGSIZE, "batch: record of %llu bytes", (unsigned long long)body);
    uint64_t total = rv_varint_size_i32((int32_t)body) + body;
    if (total > b->cap_bytes - b->pos)
        return -ENOSPC; /* expected when a batch fills */
    if (b->pos + total - RV_BATCH_LOG_OVERHEAD_BYTES > INT32_MAX) {
        return rv_errf(-EMSGSIZE, "batch: would pass 2^31 bytes");
    }
    uint8_t *p = b->buf + b->pos;
    p += rv_varint_encode_i32(p, (int32_t)body);
    *p++ = 0; /* record attributes: unused */
    p += rv_varint_encode_i64(p, ts_delta);
    p += rv_varint_encode_i32(p, b->record_count);
    p = builder_put_bytes(p, key, key_len);
    p = builder_put_bytes(p, value, value_len);
    p += rv_varint_encode_i32(p, (int32_t)header_count);
    for (uint32_t i = 0; i < header_count; i++) {
        p = builder_put_bytes(p, headers[i].key, headers[i].key_len);
        p = builder_put_bytes(p, headers[i].value, headers[i].value_len);
    }
    RV_ASSERT((uint64_t)(p - (b->buf + b->pos)) == total);
    b->pos += total;
    b->params.base_timestamp = base_ts;
    if (b->record_count == 0 || timestamp_ms > b->max_timestamp)
        b->max_timestamp = timestamp_ms;
    b->record_count++;
    return 0;
}

/* Write the header of a batch of size_bytes at dst (records already in place) and
 * its CRC. */
static void builder_write_header(const struct rv_batch_builder *b, uint8_t *dst,
                                 uint16_t attributes, size_t size_bytes)
{
    const struct rv_batch_params *p = &b->params;
    be64_store(dst + RV_BATCH_BASE_OFFSET_POS, (uint64_t)p->base_offset);
    be32_store(dst + RV_BATCH_LENGTH_POS, (uint32_t)(size_bytes - RV_BATCH_LOG_OVERHEAD_BYTES));
    be32_store(dst + RV_BATCH_LEADER_EPOCH_POS, (uint32_t)p->leader_epoch);
    dst[RV_BATCH_MAGIC_POS] = RV_BATCH_MAGIC;
    be16_store(dst + RV_BATCH_ATTRIBUTES_POS, attributes);
    be32_store(dst + RV_BATCH_LAST_OFFSET_DELTA_POS, (uint32_t)(b->record_count - 1));
    be64_store(dst + RV_BATCH_BASE_TIMESTAMP_POS, (uint64_t)p->base_timestamp);
    be64_store(dst + RV_BATCH_MAX_TIMESTAMP_POS, (uint64_t)b->max_timestamp);
    be64_store(dst + RV_BATCH_PRODUCER_ID_POS, (uint64_t)p->producer_id);
    be16_store(dst + RV_BATCH_PRODUCER_EPOCH_POS, (uint16_t)p->producer_epoch);
    be32_store(dst + RV_BATCH_BASE_SEQUENCE_POS, (uint32_t)p->base_sequence);
    be32_store(dst + RV_BATCH_RECORD_COUNT_POS, (uint32_t)b->record_count);
    uint32_t crc =
        rv_crc32c(0, dst + RV_BATCH_ATTRIBUTES_POS, size_bytes - RV_BATCH_ATTRIBUTES_POS);
    be32_store(dst + RV_BATCH_CRC_POS, crc);
}

int rv_batch_builder_finish(struct rv_batch_builder *b, size_t *out_len)
{
    RV_ASSERT(b != NULL && out_len != NULL && !b->is_finished);
    if (b->record_count == 0)
        return rv_errf(-EINVAL, "batch: no records to finish");
    builder_write_header(b, b->buf, b->params.attributes, b->pos);
    RV_DASSERT(rv_batch_parse(b->buf, b->pos, b->pos, &(struct rv_batch_view){0}) > 0);
    b->is_finished = true;
    *out_len = b->pos;
    return 0;
}

size_t rv_batch_compressed_bound(enum rv_codec codec, size_t records_bytes)
{
    return RV_BATCH_HEADER_BYTES + rv_codec_compress_bound(codec, records_bytes);
}

int rv_batch_builder_finish_compressed(struct rv_batch_builder *b, enum rv_codec codec, int level,
                                       uint8_t *out, size_t out_cap, size_t *out_len)
{
    RV_ASSERT(b != NULL && out != NULL && out_len != NULL && !b->is_finished);
    RV_ASSERT(rv_codec_is_valid((int)codec));
    if (b->record_count == 0)
        return rv_errf(-EINVAL, "batch: no records to finish");
    if (out_cap < RV_BATCH_HEADER_BYTES)
        return rv_errf(-ENOSPC, "batch: no room for a header");
    size_t records_bytes = b->pos - RV_BATCH_HEADER_BYTES;
    size_t packed_bytes;
    int rc = rv_codec_compress_level(codec, level, b->buf + RV_BATCH_HEADER_BYTES, records_bytes,
                                     out + RV_BATCH_HEADER_BYTES, out_cap - RV_BATCH_HEADER_BYTES,
                                     &packed_bytes);
    if (rc < 0)
        return rc;
    size_t size = RV_BATCH_HEADER_BYTES + packed_bytes;
    if (size - RV_BATCH_LOG_OVERHEAD_BYTES > INT32_MAX) {
        return rv_errf(-EMSGSIZE, "batch: compressed batch passes 2^31 bytes");
    }
    builder_write_header(b, out, (uint16_t)(b->params.attributes | (uint16_t)codec), size);
    b->is_finished = true;
    *out_len = size;
    return 0;
}
