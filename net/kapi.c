/*
 * net/kapi.c - Kafka API handlers (see net/kapi.h for what is answered how).
 *
 * A response is sized first (the generated _size functions), then encoded once
 * into the connection's output buffer behind its size prefix and header; a
 * request is never answered partially. The request header, and then the body,
 * are decoded with the generated codec, which bounds-checks every read.
 */
#include "net/kapi.h"

#include <errno.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "net/kproto.h"
#include "net/kproto_gen.h"

/* What ApiVersions advertises: exactly what this file answers for real. */
static const struct rv_kapi_api kapi_supported[] = {
    {RV_KP_API_API_VERSIONS, 0, 4},
};

const struct rv_kapi_api *rv_kapi_supported(size_t *out_count)
{
    *out_count = RV_ARRAY_LEN(kapi_supported);
    return kapi_supported;
}

int rv_kapi_out_reserve(struct rv_kapi_out *out, size_t more)
{
    if (out->cap - out->len >= more)
        return 0;
    size_t cap = out->cap < 4096 ? 4096 : out->cap;
    while (cap - out->len < more) {
        if (cap > SIZE_MAX / 2)
            return -ENOMEM;
        cap *= 2;
    }
    uint8_t *data = realloc(out->data, cap);
    if (data == NULL)
        return -ENOMEM;
    out->data = data;
    out->cap = cap;
    return 0;
}

void rv_kapi_out_fini(struct rv_kapi_out *out)
{
    if (out == NULL)
        return;
    free(out->data);
    *out = (struct rv_kapi_out){0};
}

/* Append a response frame: size prefix, header for (api_key, version), body. */
static int kapi_write(struct rv_kapi_out *out, int16_t api_key, int16_t version,
                      int32_t correlation_id, const struct rv_kp_struct_desc *desc, const void *msg)
{
    int header_version = rv_kp_response_header_version(api_key, version);
    RV_ASSERT(header_version >= 0); /* the key and version were validated by the caller */
    size_t body_bytes = desc->size_of(version, msg);
    size_t frame_bytes = 4 + 4 + (header_version >= 1 ? 1 : 0) + body_bytes;
    if (frame_bytes - 4 > INT32_MAX)
        return rv_errf(-EPROTO, "%s v%d: response too large", desc->name, version);
    int rc = rv_kapi_out_reserve(out, frame_bytes);
    if (rc < 0)
        return rc;
    struct rv_kp_writer w;
    rv_kp_writer_init(&w, out->data + out->len, frame_bytes);
    rc = rv_kp_write_i32(&w, (int32_t)(frame_bytes - 4));
    if (rc == 0)
        rc = rv_kp_response_header_build(&w, api_key, version, correlation_id);
    if (rc == 0)
        rc = desc->encode(&w, version, msg);
    if (rc < 0) /* a default this version cannot carry: nothing we can send */
        return rv_errf(-EPROTO, "%s v%d: cannot encode the response: %s", desc->name, version,
                       rv_strerror(rc));
    RV_ASSERT(w.pos == frame_bytes); /* _size and _encode agree */
    out->len += frame_bytes;
    return 0;
}

/* Kafka's rule for client software names and versions (KIP-511). */
static bool kapi_software_is_valid(struct rv_kp_str s)
{
    if (s.len <= 0)
        return false;
    for (int32_t i = 0; i < s.len; i++) {
        char c = s.ptr[i];
        bool is_alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        bool is_inner = i > 0 && i < s.len - 1;
        if (!is_alnum && !(is_inner && (c == '-' || c == '.')))
            return false;
    }
    return true;
}

static int kapi_api_versions(const struct rv_kp_request_header *h, struct rv_kp_reader *r,
                             struct rv_kapi_out *out)
{
    int16_t version = h->request_api_version;
    const struct rv_kapi_api *ours = &kapi_supported[0];
    RV_ASSERT(ours->api_key == RV_KP_API_API_VERSIONS);
    struct rv_kp_api_versions_response resp;
    rv_kp_api_versions_response_init(&resp);
    struct rv_kp_api_versions_response_version items[RV_ARRAY_LEN(kapi_supported)];
    for (size_t i = 0; i < RV_ARRAY_LEN(kapi_supported); i++) {
        rv_kp_api_versions_response_version_init(&items[i]);
        items[i].api_key = kapi_supported[i].api_key;
        items[i].min_version = kapi_supported[i].version_min;
        items[i].max_version = kapi_supported[i].version_max;
    }
    resp.api_keys.count = (int32_t)RV_ARRAY_LEN(items);
    resp.api_keys.items = items;
    if (version > ours->version_max) {
        /* Answer in version 0, which every client reads, so it can retry. */
        resp.error_code = RV_KAPI_ERR_UNSUPPORTED_VERSION;
        version = 0;
    } else {
        struct rv_kp_api_versions_request req;
        int rc = rv_kp_api_versions_request_decode(r, version, &req, NULL);
        if (rc < 0)
            return rv_errf(-EPROTO, "ApiVersions v%d correlation %d: bad body: %s", version,
                           h->correlation_id, rv_strerror(rc));
        if (version >= 3 && (!kapi_software_is_valid(req.client_software_name) ||
                             !kapi_software_is_valid(req.client_software_version))) {
            resp.error_code = RV_KAPI_ERR_INVALID_REQUEST;
            resp.api_keys.count = 0;
        }
    }
    return kapi_write(out, RV_KP_API_API_VERSIONS, version, h->correlation_id,
                      &rv_kp_api_versions_response_desc, &resp);
}

/* An API of the schemas that we do not implement: its response at the
 * request's version, every field at its default but the top-level error code. */
static int kapi_unsupported(const struct rv_kp_request_header *h, const struct rv_kp_api *api,
                            struct rv_kapi_out *out)
{
    const struct rv_kp_struct_desc *d = api->response;
    int16_t version = h->request_api_version;
    const struct rv_kp_field_desc *ec = NULL;
    for (uint32_t i = 0; i < d->field_count && ec == NULL; i++) {
        const struct rv_kp_field_desc *f = &d->fields[i];
        if (strcmp(f->name, "ErrorCode") == 0 && f->type == RV_KP_TYPE_INT16 &&
            rv_kp_vrange_has(f->versions, version))
            ec = f;
    }
    if (ec == NULL)
        return rv_errf(-EPROTO, "%s v%d correlation %d: not implemented", api->name, version,
                       h->correlation_id);
    RV_ASSERT(d->align <= alignof(max_align_t));
    void *msg = calloc(1, d->size);
    if (msg == NULL)
        return -ENOMEM;
    d->init(msg);
    int16_t code = RV_KAPI_ERR_UNSUPPORTED_VERSION;
    memcpy((char *)msg + ec->offset, &code, sizeof(code));
    int rc = kapi_write(out, api->api_key, version, h->correlation_id, d, msg);
    free(msg);
    return rc;
}

int rv_kapi_handle(const uint8_t *frame, size_t len, struct rv_kapi_out *out)
{
    RV_ASSERT(out != NULL);
    struct rv_kp_reader r;
    rv_kp_reader_init(&r, frame, len);
    struct rv_kp_request_header h;
    rv_kp_request_header_init(&h);
    int rc = rv_kp_request_header_parse(&r, &h);
    if (rc < 0) {
        if (len < 8)
            return rv_errf(-EPROTO, "a %zu-byte request has no header", len);
        return rv_errf(-EPROTO, "request api key %d version %d correlation %d: bad header: %s",
                       h.request_api_key, h.request_api_version, h.correlation_id, rv_strerror(rc));
    }
    const struct rv_kp_api *api = rv_kp_api_find(h.request_api_key);
    RV_ASSERT(api != NULL); /* the header parser refuses unknown keys */
    if (h.request_api_key == RV_KP_API_API_VERSIONS)
        return kapi_api_versions(&h, &r, out);
    if (!rv_kp_api_has_version(api, h.request_api_version))
        return rv_errf(-EPROTO, "%s v%d correlation %d: no such version", api->name,
                       h.request_api_version, h.correlation_id);
    return kapi_unsupported(&h, api, out);
}
