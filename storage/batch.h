/*
 * storage/batch.h - Kafka RecordBatch v2 (magic 2): parse, validate, iterate, build.
 *
 * Zero-copy: a struct rv_batch_view and the records and headers it yields point into
 * the caller's bytes, which must outlive them. Nothing here allocates; the builder
 * writes into a caller buffer. Everything is plain data on the caller's shard: no
 * locking, any thread may use its own objects.
 *
 * Layout (big-endian, offsets in bytes; the CRC-32C covers bytes 21..end):
 *
 *    0 baseOffset int64        27 baseTimestamp int64   57 recordsCount int32
 *    8 batchLength int32       35 maxTimestamp int64    61 records...
 *   12 partitionLeaderEpoch    43 producerId int64
 *   16 magic int8              51 producerEpoch int16
 *   17 crc uint32              53 baseSequence int32
 *   21 attributes int16
 *   23 lastOffsetDelta int32
 *
 * Record: varint length, int8 attributes, varlong timestampDelta, varint offsetDelta,
 * varint keyLength (-1 = null), key, varint valueLength (-1 = null), value, varint
 * headerCount, then per header varint keyLength (>= 0), key, varint valueLength
 * (-1 = null), value.
 *
 * Error codes, for every function that reads batch bytes (all untrusted: nothing
 * asserts on them):
 *   -EBADMSG          corrupt framing: truncated header or batch, batchLength < 49,
 *                     CRC mismatch
 *   -EMSGSIZE         the batch is larger than the caller's max_batch_bytes
 *   -EPROTONOSUPPORT  magic is not 2 (message sets v0/v1)
 *   -ENOTSUP          compression codec 5..7
 *   -EINVAL           invalid records: a negative record count or lastOffsetDelta,
 *                     a record that runs past its length or the batch, lengths below
 *                     -1 (or below 0 for header keys), offset deltas not strictly
 *                     increasing from >= 0 or past lastOffsetDelta, a record count
 *                     that differs from the records present, trailing bytes
 * Each also records a sentence with rv_errf().
 */
#ifndef RV_STORAGE_BATCH_H
#define RV_STORAGE_BATCH_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/assert.h"
#include "storage/codec.h"

/* Limits and constants. */

#define RV_BATCH_MAGIC 2

#define RV_BATCH_BASE_OFFSET_POS       0
#define RV_BATCH_LENGTH_POS            8
#define RV_BATCH_LEADER_EPOCH_POS      12
#define RV_BATCH_MAGIC_POS             16
#define RV_BATCH_CRC_POS               17
#define RV_BATCH_ATTRIBUTES_POS        21
#define RV_BATCH_LAST_OFFSET_DELTA_POS 23
#define RV_BATCH_BASE_TIMESTAMP_POS    27
#define RV_BATCH_MAX_TIMESTAMP_POS     35
#define RV_BATCH_PRODUCER_ID_POS       43
#define RV_BATCH_PRODUCER_EPOCH_POS    51
#define RV_BATCH_BASE_SEQUENCE_POS     53
#define RV_BATCH_RECORD_COUNT_POS      57
#define RV_BATCH_HEADER_BYTES          61
/* Bytes before batchLength starts counting (baseOffset and batchLength). */
#define RV_BATCH_LOG_OVERHEAD_BYTES 12
/* The smallest legal batchLength: a header with no records. */
#define RV_BATCH_LENGTH_MIN (RV_BATCH_HEADER_BYTES - RV_BATCH_LOG_OVERHEAD_BYTES)

/* Attribute bits. */
#define RV_BATCH_ATTR_CODEC_MASK      0x07
#define RV_BATCH_ATTR_LOG_APPEND_TIME 0x08
#define RV_BATCH_ATTR_TRANSACTIONAL   0x10
#define RV_BATCH_ATTR_CONTROL         0x20
#define RV_BATCH_ATTR_DELETE_HORIZON  0x40

/* Sentinels of the Kafka protocol. */
#define RV_BATCH_NO_TIMESTAMP   (-1)
#define RV_BATCH_NO_PRODUCER_ID (-1)
#define RV_BATCH_NO_SEQUENCE    (-1)

/* The smallest encoded record: seven one-byte fields, no key, value or headers. */
#define RV_BATCH_RECORD_BYTES_MIN 7
/* Worst-case framing of one record beyond key, value and header bytes: length,
 * attributes, timestampDelta, offsetDelta, key and value lengths, header count. */
#define RV_BATCH_RECORD_OVERHEAD_MAX (5 + 1 + 10 + 5 + 5 + 5 + 5)

/* Types. */

/* One parsed batch header; all pointers point into the caller's bytes. */
struct rv_batch_view {
    int64_t base_offset;
    int32_t length;            /* batchLength: bytes after the first 12 */
    int32_t leader_epoch;      /* partitionLeaderEpoch */
    int8_t magic;              /* RV_BATCH_MAGIC once parsed */
    uint32_t crc;              /* as stored, already verified */
    uint16_t attributes;       /* RV_BATCH_ATTR_* */
    int32_t last_offset_delta; /* >= 0 */
    int64_t base_timestamp;    /* ms */
    int64_t max_timestamp;     /* ms; the append time under LogAppendTime */
    int64_t producer_id;       /* RV_BATCH_NO_PRODUCER_ID when not idempotent */
    int16_t producer_epoch;
    int32_t base_sequence;
    int32_t record_count;          /* >= 0 */
    bool has_dense_offsets;        /* offset deltas are exactly 0..count-1 and lastOffsetDelta
                               is count-1; known once the records were walked (always
                               for uncompressed batches, after rv_batch_validate_records
                               for compressed ones), false before */
    int64_t records_max_timestamp; /* the records' largest timestamp (CreateTime), or
                                      max_timestamp when not walked or under
                                      LogAppendTime; -1 without records */
    int64_t records_min_timestamp; /* the records' smallest timestamp other than -1
                                      (CreateTime), or base_timestamp when not walked
                                      or under LogAppendTime; -1 when none has one */
    const uint8_t *bytes;          /* the whole batch */
    size_t size_bytes;             /* 12 + length */
    const uint8_t *records;        /* the records section, compressed or not */
    size_t records_bytes;          /* size_bytes - 61 */
};

/* A record header: key_len >= 0, value_len >= -1 (-1 = null, then value is NULL). */
struct rv_batch_record_header {
    const uint8_t *key;
    int32_t key_len;
    const uint8_t *value;
    int32_t value_len;
};

/* One decoded record; pointers point into the records bytes. */
struct rv_batch_record {
    int64_t offset;       /* base offset + offset delta */
    int64_t timestamp_ms; /* base + delta, or the batch's max under LogAppendTime */
    int32_t offset_delta;
    uint8_t attributes;   /* unused by Kafka so far */
    const uint8_t *key;   /* NULL when key_len is -1 */
    int32_t key_len;      /* -1 = null key */
    const uint8_t *value; /* NULL when value_len is -1 */
    int32_t value_len;    /* -1 = null value (a tombstone) */
    uint32_t header_count;
    const uint8_t *headers; /* header_count encoded headers, for rv_batch_header_iter */
    size_t headers_bytes;
    size_t size_bytes; /* the whole encoded record, length prefix included */
};

/* Walks the records of one batch (uncompressed bytes), validating as it goes. */
struct rv_batch_record_iter {
    const uint8_t *pos; /* next record */
    size_t left_bytes;  /* bytes from pos to the end of the records */
    int64_t base_offset;
    int64_t base_timestamp;
    int64_t log_append_time; /* RV_BATCH_NO_TIMESTAMP under CreateTime */
    int32_t record_count;    /* what the header promised */
    int32_t index;           /* records returned so far */
    int32_t last_offset_delta;
    int32_t prev_offset_delta; /* -1 before the first record */
    bool has_dense_offsets;    /* every delta so far equalled its index */
};

/* Walks the headers of one record. */
struct rv_batch_header_iter {
    const uint8_t *pos;
    size_t left_bytes;
    uint32_t left_count;
};

/* Walks back-to-back batches (a Kafka "records" field). */
struct rv_batch_iter {
    const uint8_t *pos;
    size_t left_bytes;
    size_t max_batch_bytes;
};

/* Fields of a batch to build. */
struct rv_batch_params {
    int64_t base_offset;
    int64_t base_timestamp; /* ms; RV_BATCH_NO_TIMESTAMP = the first record's */
    int32_t leader_epoch;
    int64_t producer_id; /* RV_BATCH_NO_PRODUCER_ID when not idempotent */
    int16_t producer_epoch;
    int32_t base_sequence; /* RV_BATCH_NO_SEQUENCE when not idempotent */
    uint16_t attributes;   /* timestamp type, transactional, control; no codec bits */
};

/* Builds one uncompressed batch in a caller buffer: records go right after a header
 * left blank until finish. */
struct rv_batch_builder {
    uint8_t *buf;
    size_t cap_bytes;
    size_t pos; /* end of the records written so far */
    struct rv_batch_params params;
    int64_t max_timestamp;
    int32_t record_count;
    bool is_finished;
};

/* Parsing and validation. */

/* Parse and validate the batch at the start of buf[0..len): header, sizes, magic, CRC
 * and codec; for uncompressed batches also every record (see the error list above).
 * Compressed records are checked later by rv_batch_validate_records() on their
 * decompressed bytes. Fills *out (which points into buf) and returns the batch's size
 * in bytes (> 0); on failure returns a negative code above and *out is undefined.
 * max_batch_bytes bounds 12 + batchLength (-EMSGSIZE). */
RV_MUST_CHECK int rv_batch_parse(const uint8_t *buf, size_t len, size_t max_batch_bytes,
                                 struct rv_batch_view *out);

/* The header of a batch this process built itself (rv_batch_builder): sizes and
 * fields only, no CRC and no record walk (offsets are dense by construction).
 * For the embedding API's own batches; never for bytes from outside. Returns
 * the batch's size, or -EBADMSG when buf[0..len) is not one whole batch. */
RV_MUST_CHECK int rv_batch_parse_built(const uint8_t *buf, size_t len, struct rv_batch_view *out);

/* Walk every record of `records` (a batch's decompressed records section) against the
 * header in *view: the count, offset deltas, bounds, lengths, trailing bytes. Returns
 * 0 and sets view->has_dense_offsets, or -EINVAL. */
RV_MUST_CHECK int rv_batch_validate_records(struct rv_batch_view *view, const uint8_t *records,
                                            size_t len);

/* Back-to-back batches. */

/* Start walking buf[0..len) batch by batch; each batch must be <= max_batch_bytes. */
void rv_batch_iter_init(struct rv_batch_iter *it, const uint8_t *buf, size_t len,
                        size_t max_batch_bytes);

/* Parse the next complete batch into *out (as rv_batch_parse) and return 1; return 0
 * at the end of the bytes or at a partial trailing batch (fetch responses may end with
 * one: its batchLength reaches past the end); rv_batch_iter_rest_bytes() then says how
 * much was left over. Returns a negative code for a corrupt batch (and stays on it). */
RV_MUST_CHECK int rv_batch_iter_next(struct rv_batch_iter *it, struct rv_batch_view *out);

/* Bytes not consumed by complete batches: 0, or the size of a partial trailing batch
 * once rv_batch_iter_next() returned 0. */
static inline size_t rv_batch_iter_rest_bytes(const struct rv_batch_iter *it)
{
    return it->left_bytes;
}

/* Count and validate the complete batches at the start of buf[0..len), stopping
 * cleanly at a partial trailing batch. *out_count gets the number of batches and
 * *out_bytes their total size (so len - *out_bytes is the partial tail; a produce
 * request must have none). Returns 0 or the first batch's error code (outputs are then
 * untouched). */
RV_MUST_CHECK int rv_batch_split(const uint8_t *buf, size_t len, size_t max_batch_bytes,
                                 size_t *out_count, size_t *out_bytes);

/* Records and headers. */

/* Start walking the records of the batch *view; records/len are view->records for an
 * uncompressed batch or the decompressed bytes of a compressed one. */
void rv_batch_record_iter_init(struct rv_batch_record_iter *it, const struct rv_batch_view *view,
                               const uint8_t *records, size_t len);

/* Decode the next record into *out and return 1; return 0 after the last one (when
 * the count matches and no bytes are left), -EINVAL for an invalid record. */
RV_MUST_CHECK int rv_batch_record_iter_next(struct rv_batch_record_iter *it,
                                            struct rv_batch_record *out);

/* Start walking the headers of *rec, which must come from rv_batch_record_iter_next
 * (and so was validated already). */
void rv_batch_header_iter_init(struct rv_batch_header_iter *it, const struct rv_batch_record *rec);

/* Decode the next header into *out and return 1; 0 after the last; -EINVAL when the
 * bytes are invalid (not possible for a record from the record iterator). */
RV_MUST_CHECK int rv_batch_header_iter_next(struct rv_batch_header_iter *it,
                                            struct rv_batch_record_header *out);

/* Stamping a parsed batch in place. batch points at a batch that rv_batch_parse
 * accepted; these run on the append path and never allocate. */

/* Set baseOffset (not covered by the CRC, which stays valid). */
void rv_batch_set_base_offset(uint8_t *batch, int64_t base_offset);

/* Set partitionLeaderEpoch (not covered by the CRC). */
void rv_batch_set_leader_epoch(uint8_t *batch, int32_t leader_epoch);

/* Switch the batch to LogAppendTime as Kafka's broker does: set the timestamp-type
 * attribute bit and maxTimestamp to ts_ms, keep baseTimestamp and the other bits, and
 * recompute the CRC (skipped when nothing changes). Readers then report ts_ms as every
 * record's timestamp. */
void rv_batch_set_log_append_time(uint8_t *batch, int64_t ts_ms);

/* Set maxTimestamp of a CreateTime batch to ts_ms and recompute the CRC (skipped
 * when it holds ts_ms already): what Kafka's broker does when the producer's
 * maxTimestamp is not the records' largest timestamp. */
void rv_batch_set_max_timestamp(uint8_t *batch, int64_t ts_ms);

/* Building. */

/* Start a batch in buf[0..cap_bytes) with the fields of *params (copied). Returns 0,
 * or -ENOSPC when cap_bytes cannot hold the 61-byte header. */
RV_MUST_CHECK int rv_batch_builder_init(struct rv_batch_builder *b, uint8_t *buf, size_t cap_bytes,
                                        const struct rv_batch_params *params);

/* Append a record with offset delta = records so far. key_len/value_len of -1 mean
 * null (the pointer is then ignored); headers[0..header_count) have key_len >= 0.
 * Returns 0, -ENOSPC when it does not fit (the builder is unchanged and can still be
 * finished), or -EMSGSIZE when the batch would pass 2^31 bytes or records. */
RV_MUST_CHECK int rv_batch_builder_add(struct rv_batch_builder *b, int64_t timestamp_ms,
                                       const void *key, int32_t key_len, const void *value,
                                       int32_t value_len,
                                       const struct rv_batch_record_header *headers,
                                       uint32_t header_count);

/* Complete the header (length, count, lastOffsetDelta, timestamps, CRC) of an
 * uncompressed batch in the builder's buffer and store its size in *out_len. Returns
 * 0, or -EINVAL when no record was added. The builder is then finished. */
RV_MUST_CHECK int rv_batch_builder_finish(struct rv_batch_builder *b, size_t *out_len);

/* The most bytes rv_batch_builder_finish_compressed() writes for a builder whose
 * records take records_bytes. */
size_t rv_batch_compressed_bound(enum rv_codec codec, size_t records_bytes);

/* Like rv_batch_builder_finish(), but write the batch to out[0..out_cap) with its
 * records compressed by `codec` at `level` (rv_codec_default_level() for the usual);
 * the builder's buffer is the uncompressed source and is left as it was. Returns 0,
 * -EINVAL (no records, bad level), -ENOSPC (out_cap too small: size it with
 * rv_batch_compressed_bound()), -ENOBUFS (no codec context). On failure the builder
 * is unchanged and may be finished again. */
RV_MUST_CHECK int rv_batch_builder_finish_compressed(struct rv_batch_builder *b,
                                                     enum rv_codec codec, int level, uint8_t *out,
                                                     size_t out_cap, size_t *out_len);

/* Queries. */

/* The batch's compression codec (0..4 once parsed). */
static inline enum rv_codec rv_batch_codec(const struct rv_batch_view *v)
{
    return (enum rv_codec)(v->attributes & RV_BATCH_ATTR_CODEC_MASK);
}

/* The offset of the batch's last record (also of a compacted-away one). */
static inline int64_t rv_batch_last_offset(const struct rv_batch_view *v)
{
    return v->base_offset + v->last_offset_delta;
}

/* True for a control batch (transaction markers, never shown to consumers). */
static inline bool rv_batch_is_control(const struct rv_batch_view *v)
{
    return (v->attributes & RV_BATCH_ATTR_CONTROL) != 0;
}

/* True for a batch of a transactional producer. */
static inline bool rv_batch_is_transactional(const struct rv_batch_view *v)
{
    return (v->attributes & RV_BATCH_ATTR_TRANSACTIONAL) != 0;
}

/* True when the records carry LogAppendTime (then max_timestamp is the append time). */
static inline bool rv_batch_has_log_append_time(const struct rv_batch_view *v)
{
    return (v->attributes & RV_BATCH_ATTR_LOG_APPEND_TIME) != 0;
}

#endif /* RV_STORAGE_BATCH_H */
