/*
 * net/kproto.c - the Kafka wire protocol runtime (see kproto.h): the arena, the
 * bounds-checked reader and writer, primitive codecs and the frame headers.
 *
 * Every read checks what is left before touching the buffer, so no input can make a
 * read go past r->len. Integers are big-endian on the wire; varints come from
 * core/varint.h. Nothing here allocates or keeps a pointer past the call.
 */
#include "net/kproto.h"

#include <stdalign.h>

#include "core/varint.h"
#include "net/kproto_gen.h"

/* Arena. */

void rv_kproto_arena_init(struct rv_kproto_arena *a, void *buf, size_t cap_bytes)
{
    RV_ASSERT(a != NULL);
    RV_ASSERT(buf != NULL || cap_bytes == 0);
    a->buf = buf;
    a->cap_bytes = cap_bytes;
    a->used_bytes = 0;
}

void rv_kproto_arena_reset(struct rv_kproto_arena *a)
{
    RV_ASSERT(a != NULL);
    a->used_bytes = 0;
}

int rv_kproto_arena_alloc(struct rv_kproto_arena *a, size_t size, size_t align, void **out)
{
    RV_ASSERT(out != NULL);
    RV_ASSERT(align != 0 && (align & (align - 1)) == 0);
    if (a == NULL || a->buf == NULL) {
        return -ENOBUFS;
    }
    uintptr_t base = (uintptr_t)a->buf;
    uintptr_t start = (base + a->used_bytes + align - 1) & ~(uintptr_t)(align - 1);
    size_t pos = (size_t)(start - base);
    if (pos > a->cap_bytes || size > a->cap_bytes - pos) {
        return -ENOBUFS;
    }
    a->used_bytes = pos + size;
    *out = a->buf + pos;
    return 0;
}

/* Reader: fixed-width values. */

/* Take n bytes of r into *out_p; -EBADMSG if fewer are left. */
static int kproto_take(struct rv_kp_reader *r, size_t n, const uint8_t **out_p)
{
    if (r->len - r->pos < n) {
        return -EBADMSG;
    }
    *out_p = r->buf + r->pos;
    r->pos += n;
    return 0;
}

static uint64_t kproto_load_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

static void kproto_store_be(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = n; i > 0; i--) {
        p[i - 1] = (uint8_t)v;
        v >>= 8;
    }
}

/* Read an n-byte big-endian unsigned integer. */
static int kproto_read_be(struct rv_kp_reader *r, size_t n, uint64_t *out)
{
    const uint8_t *p;
    int rc = kproto_take(r, n, &p);
    if (rc == 0) {
        *out = kproto_load_be(p, n);
    }
    return rc;
}

int rv_kp_read_i8(struct rv_kp_reader *r, int8_t *out)
{
    uint64_t v;
    int rc = kproto_read_be(r, 1, &v);
    if (rc == 0) {
        *out = (int8_t)(uint8_t)v;
    }
    return rc;
}

int rv_kp_read_i16(struct rv_kp_reader *r, int16_t *out)
{
    uint64_t v;
    int rc = kproto_read_be(r, 2, &v);
    if (rc == 0) {
        *out = (int16_t)(uint16_t)v;
    }
    return rc;
}

int rv_kp_read_u16(struct rv_kp_reader *r, uint16_t *out)
{
    uint64_t v;
    int rc = kproto_read_be(r, 2, &v);
    if (rc == 0) {
        *out = (uint16_t)v;
    }
    return rc;
}

int rv_kp_read_i32(struct rv_kp_reader *r, int32_t *out)
{
    uint64_t v;
    int rc = kproto_read_be(r, 4, &v);
    if (rc == 0) {
        *out = (int32_t)(uint32_t)v;
    }
    return rc;
}

int rv_kp_read_u32(struct rv_kp_reader *r, uint32_t *out)
{
    uint64_t v;
    int rc = kproto_read_be(r, 4, &v);
    if (rc == 0) {
        *out = (uint32_t)v;
    }
    return rc;
}

int rv_kp_read_i64(struct rv_kp_reader *r, int64_t *out)
{
    uint64_t v;
    int rc = kproto_read_be(r, 8, &v);
    if (rc == 0) {
        *out = (int64_t)v;
    }
    return rc;
}

int rv_kp_read_f64(struct rv_kp_reader *r, double *out)
{
    uint64_t v;
    int rc = kproto_read_be(r, 8, &v);
    if (rc == 0) {
        memcpy(out, &v, sizeof(*out));
    }
    return rc;
}

int rv_kp_read_bool(struct rv_kp_reader *r, bool *out)
{
    uint64_t v;
    int rc = kproto_read_be(r, 1, &v);
    if (rc == 0) {
        *out = v != 0;
    }
    return rc;
}

int rv_kp_read_uuid(struct rv_kp_reader *r, struct rv_kp_uuid *out)
{
    const uint8_t *p;
    int rc = kproto_take(r, RV_KP_UUID_BYTES, &p);
    if (rc == 0) {
        memcpy(out->bytes, p, RV_KP_UUID_BYTES);
    }
    return rc;
}

/* Reader: varints. */

int rv_kp_read_uvarint(struct rv_kp_reader *r, uint32_t *out)
{
    int n = rv_varint_decode_u32(r->buf + r->pos, r->len - r->pos, out);
    if (n < 0) {
        return n;
    }
    r->pos += (size_t)n;
    return 0;
}

int rv_kp_read_varint(struct rv_kp_reader *r, int32_t *out)
{
    int n = rv_varint_decode_i32(r->buf + r->pos, r->len - r->pos, out);
    if (n < 0) {
        return n;
    }
    r->pos += (size_t)n;
    return 0;
}

int rv_kp_read_varlong(struct rv_kp_reader *r, int64_t *out)
{
    int n = rv_varint_decode_i64(r->buf + r->pos, r->len - r->pos, out);
    if (n < 0) {
        return n;
    }
    r->pos += (size_t)n;
    return 0;
}

int rv_kp_skip(struct rv_kp_reader *r, size_t n)
{
    const uint8_t *p;
    return kproto_take(r, n, &p);
}

/* Reader: variable-length values. */

/* Read a length in the compact form (unsigned varint of length + 1, 0 = null) or
 * the classic one (int16 or int32, -1 = null) into *out (-1 for null). A length
 * below -1 or past INT32_MAX is -EBADMSG; a null where !is_nullable is -EPROTO. */
static int kproto_read_len(struct rv_kp_reader *r, bool is_compact, bool is_short, bool is_nullable,
                           int32_t *out)
{
    int rc;
    int32_t len;
    if (is_compact) {
        uint32_t u;
        if ((rc = rv_kp_read_uvarint(r, &u)) < 0) {
            return rc;
        }
        if (u > (uint32_t)INT32_MAX + 1) {
            return -EBADMSG;
        }
        len = u == 0 ? -1 : (int32_t)(u - 1);
    } else if (is_short) {
        int16_t v;
        if ((rc = rv_kp_read_i16(r, &v)) < 0) {
            return rc;
        }
        len = v;
    } else if ((rc = rv_kp_read_i32(r, &len)) < 0) {
        return rc;
    }
    if (len < -1) {
        return -EBADMSG;
    }
    if (len == -1 && !is_nullable) {
        return -EPROTO;
    }
    *out = len;
    return 0;
}

int rv_kp_read_str(struct rv_kp_reader *r, bool is_compact, bool is_nullable, struct rv_kp_str *out)
{
    int32_t len;
    const uint8_t *p = NULL;
    int rc = kproto_read_len(r, is_compact, true, is_nullable, &len);
    if (rc < 0) {
        return rc;
    }
    if (len > RV_KP_STRING_LEN_MAX) {
        return -EBADMSG;
    }
    if (len >= 0 && (rc = kproto_take(r, (size_t)len, &p)) < 0) {
        return rc;
    }
    out->ptr = (const char *)p;
    out->len = len;
    return 0;
}

int rv_kp_read_bytes(struct rv_kp_reader *r, bool is_compact, bool is_nullable,
                     struct rv_kp_bytes *out)
{
    int32_t len;
    const uint8_t *p = NULL;
    int rc = kproto_read_len(r, is_compact, false, is_nullable, &len);
    if (rc < 0) {
        return rc;
    }
    if (len >= 0 && (rc = kproto_take(r, (size_t)len, &p)) < 0) {
        return rc;
    }
    out->ptr = p;
    out->len = len;
    return 0;
}

int rv_kp_read_array(struct rv_kp_reader *r, bool is_compact, bool is_nullable,
                     struct rv_kproto_arena *a, size_t elem_size, size_t elem_align,
                     int32_t *out_count, void **out_items)
{
    int32_t count;
    void *items = NULL;
    int rc = kproto_read_len(r, is_compact, false, is_nullable, &count);
    if (rc < 0) {
        return rc;
    }
    if (count > 0 && (size_t)count > rv_kp_reader_left(r)) {
        return -EBADMSG;
    }
    if (count > 0) {
        rc = rv_kproto_arena_alloc(a, (size_t)count * elem_size, elem_align, &items);
        if (rc < 0) {
            return rc;
        }
    }
    *out_count = count;
    *out_items = items;
    return 0;
}

/* Arrays of primitives: one reader, writer and size function per element type.
 * NAME is the suffix, T the C type, READ/WRITE the element codec and SIZE the
 * element's size expression over `it` (a const T *). */
#define KPROTO_ARRAY_FUNCS(NAME, T, READ, WRITE, SIZE)                                             \
    int rv_kp_read_arr_##NAME(struct rv_kp_reader *r, bool is_compact, bool is_nullable,           \
                              struct rv_kproto_arena *a, struct rv_kp_arr_##NAME *out)             \
    {                                                                                              \
        void *items;                                                                               \
        int rc = rv_kp_read_array(r, is_compact, is_nullable, a, sizeof(T), alignof(T),            \
                                  &out->count, &items);                                            \
        out->items = items;                                                                        \
        for (int32_t i = 0; rc == 0 && i < out->count; i++) {                                      \
            rc = READ(r, &out->items[i]);                                                          \
        }                                                                                          \
        return rc;                                                                                 \
    }                                                                                              \
    int rv_kp_write_arr_##NAME(struct rv_kp_writer *w, bool is_compact, bool is_nullable,          \
                               const struct rv_kp_arr_##NAME *in)                                  \
    {                                                                                              \
        int rc = rv_kp_write_array_len(w, is_compact, is_nullable, in->count);                     \
        for (int32_t i = 0; rc == 0 && i < in->count; i++) {                                       \
            rc = WRITE(w, in->items[i]);                                                           \
        }                                                                                          \
        return rc;                                                                                 \
    }                                                                                              \
    size_t rv_kp_arr_##NAME##_size(bool is_compact, const struct rv_kp_arr_##NAME *in)             \
    {                                                                                              \
        size_t n = rv_kp_array_len_size(is_compact, in->count);                                    \
        for (int32_t i = 0; i < in->count; i++) {                                                  \
            const T *it = &in->items[i];                                                           \
            (void)it;                                                                              \
            n += (SIZE);                                                                           \
        }                                                                                          \
        return n;                                                                                  \
    }

/* Element writers taking a value, for the macro above. */
static int kproto_write_uuid_val(struct rv_kp_writer *w, struct rv_kp_uuid v)
{
    return rv_kp_write_uuid(w, &v);
}

static int kproto_write_str_compact(struct rv_kp_writer *w, struct rv_kp_str s)
{
    return rv_kp_write_str(w, true, false, s);
}

static int kproto_write_str_classic(struct rv_kp_writer *w, struct rv_kp_str s)
{
    return rv_kp_write_str(w, false, false, s);
}

static int kproto_read_str_compact(struct rv_kp_reader *r, struct rv_kp_str *out)
{
    return rv_kp_read_str(r, true, false, out);
}

static int kproto_read_str_classic(struct rv_kp_reader *r, struct rv_kp_str *out)
{
    return rv_kp_read_str(r, false, false, out);
}

KPROTO_ARRAY_FUNCS(bool, bool, rv_kp_read_bool, rv_kp_write_bool, 1)
KPROTO_ARRAY_FUNCS(i8, int8_t, rv_kp_read_i8, rv_kp_write_i8, 1)
KPROTO_ARRAY_FUNCS(i16, int16_t, rv_kp_read_i16, rv_kp_write_i16, 2)
KPROTO_ARRAY_FUNCS(u16, uint16_t, rv_kp_read_u16, rv_kp_write_u16, 2)
KPROTO_ARRAY_FUNCS(i32, int32_t, rv_kp_read_i32, rv_kp_write_i32, 4)
KPROTO_ARRAY_FUNCS(u32, uint32_t, rv_kp_read_u32, rv_kp_write_u32, 4)
KPROTO_ARRAY_FUNCS(i64, int64_t, rv_kp_read_i64, rv_kp_write_i64, 8)
KPROTO_ARRAY_FUNCS(f64, double, rv_kp_read_f64, rv_kp_write_f64, 8)
KPROTO_ARRAY_FUNCS(uuid, struct rv_kp_uuid, rv_kp_read_uuid, kproto_write_uuid_val,
                   RV_KP_UUID_BYTES)

/* Strings in arrays are never null (Kafka has no nullable elements); the element
 * form follows the array's. */
int rv_kp_read_arr_str(struct rv_kp_reader *r, bool is_compact, bool is_nullable,
                       struct rv_kproto_arena *a, struct rv_kp_arr_str *out)
{
    void *items;
    int rc = rv_kp_read_array(r, is_compact, is_nullable, a, sizeof(struct rv_kp_str),
                              alignof(struct rv_kp_str), &out->count, &items);
    out->items = items;
    for (int32_t i = 0; rc == 0 && i < out->count; i++) {
        rc = is_compact ? kproto_read_str_compact(r, &out->items[i])
                        : kproto_read_str_classic(r, &out->items[i]);
    }
    return rc;
}

int rv_kp_write_arr_str(struct rv_kp_writer *w, bool is_compact, bool is_nullable,
                        const struct rv_kp_arr_str *in)
{
    int rc = rv_kp_write_array_len(w, is_compact, is_nullable, in->count);
    for (int32_t i = 0; rc == 0 && i < in->count; i++) {
        rc = is_compact ? kproto_write_str_compact(w, in->items[i])
                        : kproto_write_str_classic(w, in->items[i]);
    }
    return rc;
}

size_t rv_kp_arr_str_size(bool is_compact, const struct rv_kp_arr_str *in)
{
    size_t n = rv_kp_array_len_size(is_compact, in->count);
    for (int32_t i = 0; i < in->count; i++) {
        n += rv_kp_str_size(is_compact, in->items[i]);
    }
    return n;
}

/* Reader: tagged fields. */

int rv_kp_read_tag_count(struct rv_kp_reader *r, uint32_t *out_count)
{
    uint32_t count;
    int rc = rv_kp_read_uvarint(r, &count);
    if (rc < 0) {
        return rc;
    }
    if (count > rv_kp_reader_left(r) / 2) {
        return -EBADMSG;
    }
    *out_count = count;
    return 0;
}

int rv_kp_read_tag(struct rv_kp_reader *r, uint32_t *out_tag, struct rv_kp_reader *out_value)
{
    uint32_t tag;
    uint32_t size;
    const uint8_t *p;
    int rc;
    if ((rc = rv_kp_read_uvarint(r, &tag)) < 0 || (rc = rv_kp_read_uvarint(r, &size)) < 0) {
        return rc;
    }
    if ((rc = kproto_take(r, size, &p)) < 0) {
        return rc;
    }
    *out_tag = tag;
    rv_kp_reader_init(out_value, p, size);
    return 0;
}

int rv_kp_skip_tags(struct rv_kp_reader *r)
{
    uint32_t count;
    int rc = rv_kp_read_tag_count(r, &count);
    for (uint32_t i = 0; rc == 0 && i < count; i++) {
        uint32_t tag;
        struct rv_kp_reader value;
        rc = rv_kp_read_tag(r, &tag, &value);
    }
    return rc;
}

/* Writer. */

int rv_kp_write_raw(struct rv_kp_writer *w, const void *p, size_t n)
{
    if (w->cap - w->pos < n) {
        return -ENOBUFS;
    }
    if (n > 0) {
        memcpy(w->buf + w->pos, p, n);
    }
    w->pos += n;
    return 0;
}

/* Write v as an n-byte big-endian integer. */
static int kproto_write_be(struct rv_kp_writer *w, uint64_t v, size_t n)
{
    if (w->cap - w->pos < n) {
        return -ENOBUFS;
    }
    kproto_store_be(w->buf + w->pos, v, n);
    w->pos += n;
    return 0;
}

int rv_kp_write_i8(struct rv_kp_writer *w, int8_t v)
{
    return kproto_write_be(w, (uint8_t)v, 1);
}

int rv_kp_write_i16(struct rv_kp_writer *w, int16_t v)
{
    return kproto_write_be(w, (uint16_t)v, 2);
}

int rv_kp_write_u16(struct rv_kp_writer *w, uint16_t v)
{
    return kproto_write_be(w, v, 2);
}

int rv_kp_write_i32(struct rv_kp_writer *w, int32_t v)
{
    return kproto_write_be(w, (uint32_t)v, 4);
}

int rv_kp_write_u32(struct rv_kp_writer *w, uint32_t v)
{
    return kproto_write_be(w, v, 4);
}

int rv_kp_write_i64(struct rv_kp_writer *w, int64_t v)
{
    return kproto_write_be(w, (uint64_t)v, 8);
}

int rv_kp_write_f64(struct rv_kp_writer *w, double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof(u));
    return kproto_write_be(w, u, 8);
}

int rv_kp_write_bool(struct rv_kp_writer *w, bool v)
{
    return kproto_write_be(w, v ? 1 : 0, 1);
}

int rv_kp_write_uuid(struct rv_kp_writer *w, const struct rv_kp_uuid *v)
{
    return rv_kp_write_raw(w, v->bytes, RV_KP_UUID_BYTES);
}

int rv_kp_write_uvarint(struct rv_kp_writer *w, uint32_t v)
{
    if (w->cap - w->pos < rv_varint_size_u32(v)) {
        return -ENOBUFS;
    }
    w->pos += rv_varint_encode_u32(w->buf + w->pos, v);
    return 0;
}

int rv_kp_write_varint(struct rv_kp_writer *w, int32_t v)
{
    if (w->cap - w->pos < rv_varint_size_i32(v)) {
        return -ENOBUFS;
    }
    w->pos += rv_varint_encode_i32(w->buf + w->pos, v);
    return 0;
}

int rv_kp_write_varlong(struct rv_kp_writer *w, int64_t v)
{
    if (w->cap - w->pos < rv_varint_size_i64(v)) {
        return -ENOBUFS;
    }
    w->pos += rv_varint_encode_i64(w->buf + w->pos, v);
    return 0;
}

/* Write a length (-1 or less: null) in the compact or classic form. */
static int kproto_write_len(struct rv_kp_writer *w, bool is_compact, bool is_short,
                            bool is_nullable, int32_t len)
{
    if (len < 0 && !is_nullable) {
        return -EINVAL;
    }
    if (len < 0) {
        len = -1;
    }
    if (is_compact) {
        return rv_kp_write_uvarint(w, (uint32_t)len + 1);
    }
    return is_short ? rv_kp_write_i16(w, (int16_t)len) : rv_kp_write_i32(w, len);
}

/* Checked whole before anything is written, so a failure writes nothing. */
int rv_kp_write_str(struct rv_kp_writer *w, bool is_compact, bool is_nullable, struct rv_kp_str s)
{
    if (s.len > RV_KP_STRING_LEN_MAX || (s.len < 0 && !is_nullable)) {
        return -EINVAL;
    }
    if (rv_kp_str_size(is_compact, s) > w->cap - w->pos) {
        return -ENOBUFS;
    }
    int rc = kproto_write_len(w, is_compact, true, is_nullable, s.len);
    if (rc == 0 && s.len > 0) {
        rc = rv_kp_write_raw(w, s.ptr, (size_t)s.len);
    }
    return rc;
}

int rv_kp_write_bytes(struct rv_kp_writer *w, bool is_compact, bool is_nullable,
                      struct rv_kp_bytes b)
{
    if (b.len < 0 && !is_nullable) {
        return -EINVAL;
    }
    if (rv_kp_bytes_size(is_compact, b) > w->cap - w->pos) {
        return -ENOBUFS;
    }
    int rc = kproto_write_len(w, is_compact, false, is_nullable, b.len);
    if (rc == 0 && b.len > 0) {
        rc = rv_kp_write_raw(w, b.ptr, (size_t)b.len);
    }
    return rc;
}

int rv_kp_write_records(struct rv_kp_writer *w, bool is_compact, bool is_nullable,
                        struct rv_kp_bytes b)
{
    if (w->gather == NULL || b.len <= 0) {
        return rv_kp_write_bytes(w, is_compact, is_nullable, b);
    }
    if (rv_kp_bytes_size(is_compact, b) - (size_t)b.len > w->cap - w->pos) {
        return -ENOBUFS;
    }
    int rc = kproto_write_len(w, is_compact, false, is_nullable, b.len);
    if (rc == 0) {
        rc = w->gather(w->gather_ctx, w->pos, b);
    }
    return rc;
}

int rv_kp_write_array_len(struct rv_kp_writer *w, bool is_compact, bool is_nullable, int32_t count)
{
    return kproto_write_len(w, is_compact, false, is_nullable, count);
}

int rv_kp_write_tag(struct rv_kp_writer *w, uint32_t tag, size_t size)
{
    if (size > UINT32_MAX) {
        return -EINVAL;
    }
    if (rv_kp_tag_size(tag, size) - size > w->cap - w->pos) {
        return -ENOBUFS;
    }
    int rc = rv_kp_write_uvarint(w, tag);
    if (rc == 0) {
        rc = rv_kp_write_uvarint(w, (uint32_t)size);
    }
    return rc;
}

/* Sizes. */

size_t rv_kp_uvarint_size(uint32_t v)
{
    return rv_varint_size_u32(v);
}

size_t rv_kp_array_len_size(bool is_compact, int32_t count)
{
    if (!is_compact) {
        return 4;
    }
    return rv_varint_size_u32(count < 0 ? 0 : (uint32_t)count + 1);
}

size_t rv_kp_str_size(bool is_compact, struct rv_kp_str s)
{
    size_t body = s.len > 0 ? (size_t)s.len : 0;
    if (!is_compact) {
        return 2 + body;
    }
    return rv_varint_size_u32(s.len < 0 ? 0 : (uint32_t)s.len + 1) + body;
}

size_t rv_kp_bytes_size(bool is_compact, struct rv_kp_bytes b)
{
    size_t body = b.len > 0 ? (size_t)b.len : 0;
    return rv_kp_array_len_size(is_compact, b.len) + body;
}

size_t rv_kp_tag_size(uint32_t tag, size_t size)
{
    return rv_varint_size_u32(tag) + rv_varint_size_u64(size) + size;
}

/* Headers. */

int rv_kp_request_header_parse(struct rv_kp_reader *r, struct rv_kp_request_header *out)
{
    RV_ASSERT(r != NULL && out != NULL);
    size_t start = r->pos;
    struct rv_kp_reader peek = *r;
    int16_t api_key;
    int16_t api_version;
    int rc;
    if ((rc = rv_kp_read_i16(&peek, &api_key)) < 0 ||
        (rc = rv_kp_read_i16(&peek, &api_version)) < 0) {
        return rc;
    }
    int version = rv_kp_request_header_version(api_key, api_version);
    if (version < 0) {
        /* Fill in what the header holds in every version, for the caller's log. */
        rv_kp_request_header_init(out);
        out->request_api_key = api_key;
        out->request_api_version = api_version;
        if (rv_kp_read_i32(&peek, &out->correlation_id) < 0) {
            out->correlation_id = 0; /* not there: the log shows 0 */
        }
        return -EPROTO;
    }
    rc = rv_kp_request_header_decode(r, (int16_t)version, out, NULL);
    if (rc < 0) {
        r->pos = start;
    }
    return rc;
}

int rv_kp_request_header_build(struct rv_kp_writer *w, const struct rv_kp_request_header *h)
{
    RV_ASSERT(w != NULL && h != NULL);
    int version = rv_kp_request_header_version(h->request_api_key, h->request_api_version);
    if (version < 0) {
        return -EINVAL;
    }
    return rv_kp_request_header_encode(w, (int16_t)version, h);
}

int rv_kp_response_header_parse(struct rv_kp_reader *r, int16_t api_key, int16_t api_version,
                                int32_t *out_correlation_id)
{
    RV_ASSERT(r != NULL && out_correlation_id != NULL);
    int version = rv_kp_response_header_version(api_key, api_version);
    if (version < 0) {
        return -EPROTO;
    }
    struct rv_kp_response_header h;
    int rc = rv_kp_response_header_decode(r, (int16_t)version, &h, NULL);
    if (rc == 0) {
        *out_correlation_id = h.correlation_id;
    }
    return rc;
}

int rv_kp_response_header_build(struct rv_kp_writer *w, int16_t api_key, int16_t api_version,
                                int32_t correlation_id)
{
    RV_ASSERT(w != NULL);
    int version = rv_kp_response_header_version(api_key, api_version);
    if (version < 0) {
        return -EINVAL;
    }
    struct rv_kp_response_header h;
    rv_kp_response_header_init(&h);
    h.correlation_id = correlation_id;
    return rv_kp_response_header_encode(w, (int16_t)version, &h);
}

/* APIs. */

const struct rv_kp_api *rv_kp_api_find(int16_t api_key)
{
    /* The table is sorted by key and, today, dense from 0: try the direct slot first. */
    if (api_key >= 0 && (size_t)api_key < rv_kp_api_count &&
        rv_kp_apis[api_key].api_key == api_key) {
        return &rv_kp_apis[api_key];
    }
    size_t lo = 0;
    size_t hi = rv_kp_api_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (rv_kp_apis[mid].api_key == api_key) {
            return &rv_kp_apis[mid];
        }
        if (rv_kp_apis[mid].api_key < api_key) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}
