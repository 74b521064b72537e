/*
 * net/kproto.h - the Kafka wire protocol runtime: bounds-checked reader and writer,
 * primitive codecs, a bump arena, request/response headers and the API tables.
 *
 * The message codecs themselves are generated (net/kproto_gen.h, by tools/kgen.py
 * from Apache Kafka's JSON schemas); they are straight-line calls into the functions
 * here. "kproto" is the module; its symbols use the short prefix rv_kp_.
 *
 * Ownership: nothing here allocates. A reader reads a caller's buffer, a writer
 * writes one, and an arena hands out pieces of one. Decoded strings, bytes and
 * records are zero-copy slices (struct rv_kp_str / rv_kp_bytes) pointing into the
 * reader's buffer, so that buffer must outlive the decoded message. Arrays are
 * {count, items} with items taken from the arena (or, when encoding, anything the
 * caller owns). Every object is plain data for the calling shard; no locks.
 *
 * Null: a string or bytes field with len -1, an array with count -1 and a nullable
 * struct stored as a NULL pointer are null. Nullability is per version: encoding a
 * null where the schema does not allow one is -EINVAL, decoding one is -EPROTO.
 *
 * Errors. Decoders never assert on input; every read is bounds-checked:
 *   -EBADMSG  malformed bytes: truncated input, a bad varint, a length or count
 *             below -1 or past the end of the input, a compact string over 32767
 *   -EPROTO   well-formed bytes the schema forbids: a null in a non-nullable field,
 *             a version the message does not have, an unknown API key
 *   -ENOBUFS  the arena (decoding) or the writer's buffer (encoding) is full
 *   -EINVAL   encoding only: a value the version cannot carry (a null where not
 *             nullable, a string over 32767 bytes, a non-default value in a field
 *             the version lacks and the schema does not mark ignorable)
 * A failed call leaves the reader, writer or output partly advanced or written;
 * callers drop the frame (and reset the arena) on any error.
 */
#ifndef RV_NET_KPROTO_H
#define RV_NET_KPROTO_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/assert.h"

/* Limits and constants. */

#define RV_KP_STRING_LEN_MAX 0x7fff /* a Kafka string's int16 length */
#define RV_KP_VERSION_ANY    0x7fff /* the upper end of an open version range ("3+") */
#define RV_KP_VERSIONS_NONE                                                                        \
    {                                                                                              \
        0, -1                                                                                      \
    } /* the empty struct rv_kp_vrange */
#define RV_KP_UUID_BYTES 16

/* Values. */

/* A string slice; len -1 is null. Not NUL-terminated. */
struct rv_kp_str {
    const char *ptr;
    int32_t len; /* bytes, or -1: null */
};

/* A bytes or records slice; len -1 is null. */
struct rv_kp_bytes {
    const uint8_t *ptr;
    int32_t len; /* bytes, or -1: null */
};

struct rv_kp_uuid {
    uint8_t bytes[RV_KP_UUID_BYTES];
};

/* Arrays of primitives; count -1 is null. Arrays of structs are declared inline in
 * the generated structs with the same two members. */
struct rv_kp_arr_bool {
    int32_t count; /* items, or -1: null */
    bool *items;
};
struct rv_kp_arr_i8 {
    int32_t count; /* items, or -1: null */
    int8_t *items;
};
struct rv_kp_arr_i16 {
    int32_t count; /* items, or -1: null */
    int16_t *items;
};
struct rv_kp_arr_u16 {
    int32_t count; /* items, or -1: null */
    uint16_t *items;
};
struct rv_kp_arr_i32 {
    int32_t count; /* items, or -1: null */
    int32_t *items;
};
struct rv_kp_arr_u32 {
    int32_t count; /* items, or -1: null */
    uint32_t *items;
};
struct rv_kp_arr_i64 {
    int32_t count; /* items, or -1: null */
    int64_t *items;
};
struct rv_kp_arr_f64 {
    int32_t count; /* items, or -1: null */
    double *items;
};
struct rv_kp_arr_uuid {
    int32_t count; /* items, or -1: null */
    struct rv_kp_uuid *items;
};
struct rv_kp_arr_str {
    int32_t count; /* items, or -1: null */
    struct rv_kp_str *items;
};

/* A bump allocator over a caller's buffer, reset per request. */
struct rv_kproto_arena {
    uint8_t *buf;
    size_t cap_bytes;
    size_t used_bytes; /* <= cap_bytes */
};

/* Reads buf[pos..len). */
struct rv_kp_reader {
    const uint8_t *buf;
    size_t len;
    size_t pos; /* <= len */
};

/* A writer's gather hook (see rv_kp_write_records). */
typedef int rv_kp_gather_fn(void *ctx, size_t pos, struct rv_kp_bytes records);

/* Writes buf[pos..cap). */
struct rv_kp_writer {
    uint8_t *buf;
    size_t cap;
    size_t pos;              /* <= cap */
    rv_kp_gather_fn *gather; /* NULL: records are copied like bytes */
    void *gather_ctx;
};

/* Schema descriptors: what the generated codecs know, as data, for generic code
 * (tests, dumps). Version ranges are inclusive; min > max is the empty range. */

enum rv_kp_type {
    RV_KP_TYPE_BOOL,
    RV_KP_TYPE_INT8,
    RV_KP_TYPE_INT16,
    RV_KP_TYPE_UINT16,
    RV_KP_TYPE_INT32,
    RV_KP_TYPE_UINT32,
    RV_KP_TYPE_INT64,
    RV_KP_TYPE_FLOAT64,
    RV_KP_TYPE_UUID,
    RV_KP_TYPE_STRING,
    RV_KP_TYPE_BYTES,
    RV_KP_TYPE_RECORDS,
    RV_KP_TYPE_STRUCT, /* embedded, or a pointer when nullable (is_ptr) */
    RV_KP_TYPE_ARRAY,  /* {int32_t count; T *items;}, T from elem_type / sub */
};

struct rv_kp_vrange {
    int16_t min;
    int16_t max; /* RV_KP_VERSION_ANY: open-ended */
};

struct rv_kp_struct_desc;

struct rv_kp_field_desc {
    const char *name;     /* the schema's name, e.g. "ThrottleTimeMs" */
    uint32_t offset;      /* offsetof() in the C struct */
    uint8_t type;         /* enum rv_kp_type */
    uint8_t elem_type;    /* arrays: the element's enum rv_kp_type */
    bool is_ptr;          /* a nullable struct, stored as a pointer */
    bool is_ignorable;    /* may be dropped silently by versions without it */
    bool is_default_null; /* string/bytes/array/struct: the default is null */
    struct rv_kp_vrange versions;
    struct rv_kp_vrange nullable_versions;
    struct rv_kp_vrange tagged_versions;
    struct rv_kp_vrange flexible_versions; /* where it takes the compact form */
    int32_t tag;                           /* the tag when tagged_versions is not empty */
    int64_t default_int;                   /* integers and bool */
    double default_f64;                    /* float64 */
    const char *default_str;               /* strings, when not is_default_null */
    const struct rv_kp_struct_desc *sub;   /* structs and arrays of structs */
};

typedef int rv_kp_decode_fn(struct rv_kp_reader *r, int16_t version, void *out,
                            struct rv_kproto_arena *a);
typedef int rv_kp_encode_fn(struct rv_kp_writer *w, int16_t version, const void *in);
typedef size_t rv_kp_size_fn(int16_t version, const void *in);
typedef void rv_kp_init_fn(void *m);

struct rv_kp_struct_desc {
    const char *name;             /* e.g. "MetadataRequest" or "MetadataRequestTopic" */
    size_t size;                  /* sizeof the C struct */
    size_t align;                 /* _Alignof the C struct */
    rv_kp_init_fn *init;          /* sets every field to its default */
    rv_kp_decode_fn *decode;      /* messages only, else NULL */
    rv_kp_encode_fn *encode;      /* messages only, else NULL */
    rv_kp_size_fn *size_of;       /* messages only, else NULL */
    struct rv_kp_vrange versions; /* messages: validVersions */
    struct rv_kp_vrange flexible_versions;
    uint32_t field_count;
    const struct rv_kp_field_desc *fields;
};

/* One API key, from its request and response schemas. */
struct rv_kp_api {
    int16_t api_key;
    int16_t version_min;
    int16_t version_max;
    int16_t flexible_min;    /* the first flexible version, or -1: never flexible */
    bool is_latest_unstable; /* version_max is still in development (latestVersionUnstable) */
    const char *name;        /* e.g. "Metadata" */
    const struct rv_kp_struct_desc *request;
    const struct rv_kp_struct_desc *response;
};

/* Arena. */

/* Make an arena over buf[0..cap_bytes); buf must outlive every allocation. */
void rv_kproto_arena_init(struct rv_kproto_arena *a, void *buf, size_t cap_bytes);

/* Forget every allocation (the request is done). */
void rv_kproto_arena_reset(struct rv_kproto_arena *a);

/* Take size bytes aligned to align (a power of two) into *out. -ENOBUFS when the
 * arena is exhausted (nothing taken, *out untouched). A NULL arena is an empty one,
 * so decoders may be given NULL for messages that need no arena: then any non-empty
 * array or non-null nullable struct in the input is -ENOBUFS. */
RV_MUST_CHECK int rv_kproto_arena_alloc(struct rv_kproto_arena *a, size_t size, size_t align,
                                        void **out);

/* Reader: fixed-width values. Each returns 0, or -EBADMSG when fewer bytes remain
 * than the value needs (nothing consumed, *out untouched). */

static inline void rv_kp_reader_init(struct rv_kp_reader *r, const void *buf, size_t len)
{
    RV_ASSERT(r != NULL);
    RV_ASSERT(buf != NULL || len == 0);
    /* Never NULL, so that r->buf + r->pos is always defined. */
    r->buf = buf != NULL ? buf : (const uint8_t *)"";
    r->len = len;
    r->pos = 0;
}

/* Bytes not yet read. */
static inline size_t rv_kp_reader_left(const struct rv_kp_reader *r)
{
    return r->len - r->pos;
}

RV_MUST_CHECK int rv_kp_read_i8(struct rv_kp_reader *r, int8_t *out);
RV_MUST_CHECK int rv_kp_read_i16(struct rv_kp_reader *r, int16_t *out);
RV_MUST_CHECK int rv_kp_read_u16(struct rv_kp_reader *r, uint16_t *out);
RV_MUST_CHECK int rv_kp_read_i32(struct rv_kp_reader *r, int32_t *out);
RV_MUST_CHECK int rv_kp_read_u32(struct rv_kp_reader *r, uint32_t *out);
RV_MUST_CHECK int rv_kp_read_i64(struct rv_kp_reader *r, int64_t *out);
RV_MUST_CHECK int rv_kp_read_f64(struct rv_kp_reader *r, double *out);
/* Any non-zero byte reads as true, as Kafka reads it. */
RV_MUST_CHECK int rv_kp_read_bool(struct rv_kp_reader *r, bool *out);
RV_MUST_CHECK int rv_kp_read_uuid(struct rv_kp_reader *r, struct rv_kp_uuid *out);

/* Reader: varints (core/varint.h): an unsigned varint of at most 32 bits, and the
 * zigzag varint / varlong of record bodies. -EBADMSG when truncated or too long. */
RV_MUST_CHECK int rv_kp_read_uvarint(struct rv_kp_reader *r, uint32_t *out);
RV_MUST_CHECK int rv_kp_read_varint(struct rv_kp_reader *r, int32_t *out);
RV_MUST_CHECK int rv_kp_read_varlong(struct rv_kp_reader *r, int64_t *out);

/* Skip n bytes; -EBADMSG if fewer remain. */
RV_MUST_CHECK int rv_kp_skip(struct rv_kp_reader *r, size_t n);

/* Reader: variable-length values. is_compact picks the flexible-version form
 * (unsigned varint of length + 1, 0 for null) over the classic one (int16 length
 * for strings, int32 for bytes and arrays, -1 for null). A null where !is_nullable
 * is -EPROTO. Slices point into the reader's buffer. */
RV_MUST_CHECK int rv_kp_read_str(struct rv_kp_reader *r, bool is_compact, bool is_nullable,
                                 struct rv_kp_str *out);
RV_MUST_CHECK int rv_kp_read_bytes(struct rv_kp_reader *r, bool is_compact, bool is_nullable,
                                   struct rv_kp_bytes *out);

/* Read an array's count and take count * elem_size bytes (aligned to elem_align)
 * from the arena for its items, uninitialized. A null array gives count -1 and
 * items NULL, an empty one count 0 and items NULL. A count larger than the bytes
 * left is -EBADMSG (every element takes at least one byte), as Kafka rules. */
RV_MUST_CHECK int rv_kp_read_array(struct rv_kp_reader *r, bool is_compact, bool is_nullable,
                                   struct rv_kproto_arena *a, size_t elem_size, size_t elem_align,
                                   int32_t *out_count, void **out_items);

/* Arrays of primitives: rv_kp_read_array() and the items. */
RV_MUST_CHECK int rv_kp_read_arr_bool(struct rv_kp_reader *r, bool is_compact, bool is_nullable,
                                      struct rv_kproto_arena *a, struct rv_kp_arr_bool *out);
RV_MUST_CHECK int rv_kp_read_arr_i8(struct rv_kp_reader *r, bool is_compact, bool is_nullable,
                                    struct rv_kproto_arena *a, struct rv_kp_arr_i8 *out);
RV_MUST_CHECK int rv_kp_read_arr_i16(struct rv_kp_reader *r, bool is_compact, bool is_nullable,
                                     struct rv_kproto_arena *a, struct rv_kp_arr_i16 *out);
RV_MUST_CHECK int rv_kp_read_arr_u16(struct rv_kp_reader *r, bool is_compact, bool is_nullable,
                                     struct rv_kproto_arena *a, struct rv_kp_arr_u16 *out);
RV_MUST_CHECK int rv_kp_read_arr_i32(struct rv_kp_reader *r, bool is_compact, bool is_nullable,
                                     struct rv_kproto_arena *a, struct rv_kp_arr_i32 *out);
RV_MUST_CHECK int rv_kp_read_arr_u32(struct rv_kp_reader *r, bool is_compact, bool is_nullable,
                                     struct rv_kproto_arena *a, struct rv_kp_arr_u32 *out);
RV_MUST_CHECK int rv_kp_read_arr_i64(struct rv_kp_reader *r, bool is_compact, bool is_nullable,
                                     struct rv_kproto_arena *a, struct rv_kp_arr_i64 *out);
RV_MUST_CHECK int rv_kp_read_arr_f64(struct rv_kp_reader *r, bool is_compact, bool is_nullable,
                                     struct rv_kproto_arena *a, struct rv_kp_arr_f64 *out);
RV_MUST_CHECK int rv_kp_read_arr_uuid(struct rv_kp_reader *r, bool is_compact, bool is_nullable,
                                      struct rv_kproto_arena *a, struct rv_kp_arr_uuid *out);
RV_MUST_CHECK int rv_kp_read_arr_str(struct rv_kp_reader *r, bool is_compact, bool is_nullable,
                                     struct rv_kproto_arena *a, struct rv_kp_arr_str *out);

/* Reader: tagged fields. rv_kp_read_tag_count() reads a section's field count
 * (-EBADMSG if it cannot fit in what is left: each field takes two bytes at least);
 * rv_kp_read_tag() reads one field's tag and size and hands its bytes to *out_value,
 * a reader of its own, advancing r past them. rv_kp_skip_tags() skips a section. */
RV_MUST_CHECK int rv_kp_read_tag_count(struct rv_kp_reader *r, uint32_t *out_count);
RV_MUST_CHECK int rv_kp_read_tag(struct rv_kp_reader *r, uint32_t *out_tag,
                                 struct rv_kp_reader *out_value);
RV_MUST_CHECK int rv_kp_skip_tags(struct rv_kp_reader *r);

/* Writer. Each function returns 0, or -ENOBUFS when the value does not fit (then
 * nothing is written). */

static inline void rv_kp_writer_init(struct rv_kp_writer *w, void *buf, size_t cap)
{
    RV_ASSERT(w != NULL);
    RV_ASSERT(buf != NULL || cap == 0);
    w->buf = buf;
    w->cap = cap;
    w->pos = 0;
    w->gather = NULL;
    w->gather_ctx = NULL;
}

RV_MUST_CHECK int rv_kp_write_raw(struct rv_kp_writer *w, const void *p, size_t n);
RV_MUST_CHECK int rv_kp_write_i8(struct rv_kp_writer *w, int8_t v);
RV_MUST_CHECK int rv_kp_write_i16(struct rv_kp_writer *w, int16_t v);
RV_MUST_CHECK int rv_kp_write_u16(struct rv_kp_writer *w, uint16_t v);
RV_MUST_CHECK int rv_kp_write_i32(struct rv_kp_writer *w, int32_t v);
RV_MUST_CHECK int rv_kp_write_u32(struct rv_kp_writer *w, uint32_t v);
RV_MUST_CHECK int rv_kp_write_i64(struct rv_kp_writer *w, int64_t v);
RV_MUST_CHECK int rv_kp_write_f64(struct rv_kp_writer *w, double v);
RV_MUST_CHECK int rv_kp_write_bool(struct rv_kp_writer *w, bool v);
RV_MUST_CHECK int rv_kp_write_uuid(struct rv_kp_writer *w, const struct rv_kp_uuid *v);
RV_MUST_CHECK int rv_kp_write_uvarint(struct rv_kp_writer *w, uint32_t v);
RV_MUST_CHECK int rv_kp_write_varint(struct rv_kp_writer *w, int32_t v);
RV_MUST_CHECK int rv_kp_write_varlong(struct rv_kp_writer *w, int64_t v);

/* Variable-length values, in the compact or classic form. A null (len or count
 * below 0) where !is_nullable, or a string over RV_KP_STRING_LEN_MAX, is -EINVAL. */
RV_MUST_CHECK int rv_kp_write_str(struct rv_kp_writer *w, bool is_compact, bool is_nullable,
                                  struct rv_kp_str s);
RV_MUST_CHECK int rv_kp_write_bytes(struct rv_kp_writer *w, bool is_compact, bool is_nullable,
                                    struct rv_kp_bytes b);
/* A records field: like rv_kp_write_bytes, except that with a gather hook only
 * the length goes into the buffer and gather(ctx, pos, records) is told where
 * the records belong (pos: the buffer offset they precede); they are sent from
 * where they are (a fetch's batches, without a copy). */
RV_MUST_CHECK int rv_kp_write_records(struct rv_kp_writer *w, bool is_compact, bool is_nullable,
                                      struct rv_kp_bytes b);
/* An array's count; the caller writes the items. */
RV_MUST_CHECK int rv_kp_write_array_len(struct rv_kp_writer *w, bool is_compact, bool is_nullable,
                                        int32_t count);

RV_MUST_CHECK int rv_kp_write_arr_bool(struct rv_kp_writer *w, bool is_compact, bool is_nullable,
                                       const struct rv_kp_arr_bool *in);
RV_MUST_CHECK int rv_kp_write_arr_i8(struct rv_kp_writer *w, bool is_compact, bool is_nullable,
                                     const struct rv_kp_arr_i8 *in);
RV_MUST_CHECK int rv_kp_write_arr_i16(struct rv_kp_writer *w, bool is_compact, bool is_nullable,
                                      const struct rv_kp_arr_i16 *in);
RV_MUST_CHECK int rv_kp_write_arr_u16(struct rv_kp_writer *w, bool is_compact, bool is_nullable,
                                      const struct rv_kp_arr_u16 *in);
RV_MUST_CHECK int rv_kp_write_arr_i32(struct rv_kp_writer *w, bool is_compact, bool is_nullable,
                                      const struct rv_kp_arr_i32 *in);
RV_MUST_CHECK int rv_kp_write_arr_u32(struct rv_kp_writer *w, bool is_compact, bool is_nullable,
                                      const struct rv_kp_arr_u32 *in);
RV_MUST_CHECK int rv_kp_write_arr_i64(struct rv_kp_writer *w, bool is_compact, bool is_nullable,
                                      const struct rv_kp_arr_i64 *in);
RV_MUST_CHECK int rv_kp_write_arr_f64(struct rv_kp_writer *w, bool is_compact, bool is_nullable,
                                      const struct rv_kp_arr_f64 *in);
RV_MUST_CHECK int rv_kp_write_arr_uuid(struct rv_kp_writer *w, bool is_compact, bool is_nullable,
                                       const struct rv_kp_arr_uuid *in);
RV_MUST_CHECK int rv_kp_write_arr_str(struct rv_kp_writer *w, bool is_compact, bool is_nullable,
                                      const struct rv_kp_arr_str *in);

/* A tagged field's tag and value size; the caller writes the value. */
RV_MUST_CHECK int rv_kp_write_tag(struct rv_kp_writer *w, uint32_t tag, size_t size);

/* Sizes: the bytes the writer functions above write (for valid values). */

size_t rv_kp_uvarint_size(uint32_t v);
size_t rv_kp_str_size(bool is_compact, struct rv_kp_str s);
size_t rv_kp_bytes_size(bool is_compact, struct rv_kp_bytes b);
size_t rv_kp_array_len_size(bool is_compact, int32_t count);
size_t rv_kp_tag_size(uint32_t tag, size_t size);
size_t rv_kp_arr_bool_size(bool is_compact, const struct rv_kp_arr_bool *in);
size_t rv_kp_arr_i8_size(bool is_compact, const struct rv_kp_arr_i8 *in);
size_t rv_kp_arr_i16_size(bool is_compact, const struct rv_kp_arr_i16 *in);
size_t rv_kp_arr_u16_size(bool is_compact, const struct rv_kp_arr_u16 *in);
size_t rv_kp_arr_i32_size(bool is_compact, const struct rv_kp_arr_i32 *in);
size_t rv_kp_arr_u32_size(bool is_compact, const struct rv_kp_arr_u32 *in);
size_t rv_kp_arr_i64_size(bool is_compact, const struct rv_kp_arr_i64 *in);
size_t rv_kp_arr_f64_size(bool is_compact, const struct rv_kp_arr_f64 *in);
size_t rv_kp_arr_uuid_size(bool is_compact, const struct rv_kp_arr_uuid *in);
size_t rv_kp_arr_str_size(bool is_compact, const struct rv_kp_arr_str *in);

/* Headers. The header version follows from the API key and version
 * (rv_kp_request_header_version(), rv_kp_response_header_version()). */

struct rv_kp_request_header;

/* Parse a request header from the start of a request (after the int32 size): the
 * API key and version decide its version (0, 1 or 2). -EBADMSG when malformed,
 * -EPROTO for an unknown API key or a negative version; in that case out's API key,
 * version and correlation id are still filled in when the first 8 bytes were there,
 * so the caller can log what it refused. client_id points into the reader's buffer. */
RV_MUST_CHECK int rv_kp_request_header_parse(struct rv_kp_reader *r,
                                             struct rv_kp_request_header *out);

/* Write a request header in the version its API key and version call for. -EINVAL
 * for an unknown API key; -ENOBUFS when full. */
RV_MUST_CHECK int rv_kp_request_header_build(struct rv_kp_writer *w,
                                             const struct rv_kp_request_header *h);

/* Parse the header of a response to (api_key, api_version): version 0 is the int32
 * correlation id, version 1 adds a tagged-field section (skipped). -EBADMSG when
 * malformed, -EPROTO for an unknown API key. */
RV_MUST_CHECK int rv_kp_response_header_parse(struct rv_kp_reader *r, int16_t api_key,
                                              int16_t api_version, int32_t *out_correlation_id);

/* Write the header of a response to (api_key, api_version); ApiVersions responses
 * always get version 0. -EINVAL for an unknown API key; -ENOBUFS when full. */
RV_MUST_CHECK int rv_kp_response_header_build(struct rv_kp_writer *w, int16_t api_key,
                                              int16_t api_version, int32_t correlation_id);

/* APIs. */

/* The entry for api_key in rv_kp_apis (net/kproto_gen.h), or NULL when unknown. */
const struct rv_kp_api *rv_kp_api_find(int16_t api_key);

/* Whether api_version lies in api's valid versions. */
static inline bool rv_kp_api_has_version(const struct rv_kp_api *api, int16_t api_version)
{
    return api_version >= api->version_min && api_version <= api->version_max;
}

/* Small value helpers. */

static inline bool rv_kp_vrange_has(struct rv_kp_vrange vr, int16_t version)
{
    return version >= vr.min && version <= vr.max;
}

/* A slice over a NUL-terminated string (NULL gives the null string). */
static inline struct rv_kp_str rv_kp_str_from(const char *s)
{
    struct rv_kp_str out = {s, -1};
    if (s != NULL) {
        size_t n = strlen(s);
        RV_ASSERT(n <= RV_KP_STRING_LEN_MAX);
        out.len = (int32_t)n;
    }
    return out;
}

/* Equal contents (both null, or the same bytes). */
static inline bool rv_kp_str_eq(struct rv_kp_str a, struct rv_kp_str b)
{
    if (a.len != b.len) {
        return false;
    }
    return a.len <= 0 || memcmp(a.ptr, b.ptr, (size_t)a.len) == 0;
}

/* Whether s (not null) holds exactly the NUL-terminated cstr. */
static inline bool rv_kp_str_eq_cstr(struct rv_kp_str s, const char *cstr)
{
    size_t n = strlen(cstr);
    if (s.len < 0 || (size_t)s.len != n) {
        return false;
    }
    return n == 0 || memcmp(s.ptr, cstr, n) == 0;
}

static inline bool rv_kp_bytes_eq(struct rv_kp_bytes a, struct rv_kp_bytes b)
{
    if (a.len != b.len) {
        return false;
    }
    return a.len <= 0 || memcmp(a.ptr, b.ptr, (size_t)a.len) == 0;
}

static inline bool rv_kp_uuid_is_zero(const struct rv_kp_uuid *u)
{
    static const struct rv_kp_uuid zero;
    return memcmp(u->bytes, zero.bytes, RV_KP_UUID_BYTES) == 0;
}

#endif /* RV_NET_KPROTO_H */
