/*
 * tools/rivvenctl.c - inspect and check a rivven data directory offline.
 *
 *   rivvenctl dump FILE [--json] [--records]  one .log, .index, .timeindex or .wal file
 *   rivvenctl verify DATA_DIR [--json]        every segment, index and WAL file
 *   rivvenctl topics DATA_DIR [--json]        topics and partitions found on disk
 *   rivvenctl make-fixture DIR                a small valid data directory (for tests)
 *
 * A data directory holds DATA/topics/<topic>/<partition>/ with segments
 * (<20-digit base>.log, .index, .timeindex: storage/seg.h, storage/idx.h) and a
 * `log-start` file, DATA/meta/topics/<topic>.topic (the topic's settings:
 * storage/topic.h), and DATA/wal/shard-<n>/<20-digit start lsn>.wal (storage/wal.h)
 * beside the shard's `checkpoint` (the LSN replay starts from: storage/store.c).
 *
 * Everything but make-fixture only reads. Nothing needs a broker or a shard: files
 * are read with pread through the syscall shim, batches are checked with
 * storage/batch.h and rv_seg_scan_file(), index files are read raw (for messages
 * that name the entry) and through rv_idx_load() (the verdict recovery reaches).
 * Memory is plain malloc, bounded by the sizes of the files read.
 *
 * Output: text lines `kind key=value ...`, or with --json one JSON document on
 * stdout (an object with an array of entries). Problems print as
 * `ERROR <path>: <message>` and `WARN <path>: <message>`.
 *
 * Exit status: 0 clean (verify: warnings allowed), 1 corruption or an I/O error,
 * 2 usage errors.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "core/err.h"
#include "core/sys.h"
#include "storage/batch.h"
#include "storage/codec.h"
#include "storage/compact.h"
#include "storage/idx.h"
#include "storage/seg.h"
#include "storage/topic.h"
#include "storage/wal.h"

/* Limits and constants. */

#define CTL_EXIT_OK      0
#define CTL_EXIT_CORRUPT 1
#define CTL_EXIT_USAGE   2

#define CTL_BATCH_BYTES_MAX (1u << 30) /* the largest batch a segment may claim */
#define CTL_PLAIN_BYTES_MIN ((size_t)1 << 20)
#define CTL_PLAIN_BYTES_MAX ((size_t)256 << 20) /* decompressed records of one batch */
#define CTL_INDEX_BYTES_MAX ((uint64_t)1 << 30)
#define CTL_REL_MAX         ((uint64_t)INT32_MAX)
#define CTL_DEPTH_MAX       16
#define CTL_WHY_BYTES       512
#define CTL_IO_BYTES        (64u << 10)
#define CTL_FILE_PROBLEMS   10 /* problems shown per file; the rest are counted */
#define CTL_LOG_START_FILE  "log-start"
#define CTL_WAL_CKPT_FILE   "checkpoint"     /* the shard's checkpoint LSN (storage/store.c) */
#define CTL_WAL_CKPT_TMP    "checkpoint.tmp" /* left when a checkpoint write was cut short */
#define CTL_WAL_SPARE_NAME  "spare.wal.tmp"
#define CTL_WAL_FREE_PREFIX "free-" /* free-<lsn>.wal.tmp: released, kept for reuse */
#define CTL_WAL_NAME_DIGITS 20
#define CTL_ARRAY_SIZE(a)   ((uint32_t)(sizeof(a) / sizeof((a)[0])))

RV_STATIC_ASSERT(CTL_BATCH_BYTES_MAX >= RV_BATCH_HEADER_BYTES);
RV_STATIC_ASSERT(RV_WAL_HEADER_BYTES == 28);

/* Types. */

/* Where output goes: text lines or one JSON document, written as it is produced. */
struct ctl_out {
    bool is_json;
    uint32_t depth;                /* open JSON containers */
    bool has_items[CTL_DEPTH_MAX]; /* the container at that depth holds something */
    uint32_t obj_level;            /* text: open objects, for indentation */
    bool is_line_open;             /* text: a line is being written */
};

/* A growable byte buffer. */
struct ctl_buf {
    uint8_t *p;
    size_t cap_bytes;
};

/* How the valid data of a file ends. */
enum ctl_end_state {
    CTL_END_CLEAN,     /* the file ends right after the last valid item */
    CTL_END_ZERO_TAIL, /* zeros follow the last valid item */
    CTL_END_TORN,      /* an invalid item follows: a torn or corrupt tail */
    CTL_END_NEXT_FILE, /* WAL: an invalid record where the next file starts (a reused
                          file rolled before it was full: its old records follow) */
    CTL_END_STOPPED,   /* an item whose framing is fine holds invalid contents */
    CTL_END_IO,        /* reading failed */
};

struct ctl_end {
    enum ctl_end_state state;
    uint64_t pos;            /* where valid data ends */
    uint64_t size;           /* file size */
    char why[CTL_WHY_BYTES]; /* what is wrong there (or a note on a clean end) */
};

/* One raw index entry: offset entries use rel_offset and pos, time entries
 * timestamp_ms and rel_offset. */
struct ctl_ientry {
    int64_t timestamp_ms;
    uint32_t rel_offset;
    uint32_t pos;
};

/* The raw entries of one .index or .timeindex file. */
struct ctl_ifile {
    struct ctl_ientry *entries;
    uint32_t count; /* whole entries */
    uint64_t size;  /* file bytes */
    bool is_time;
};

/* One WAL record as found in a file. */
struct ctl_wal_rec {
    uint64_t pos;
    uint64_t lsn;
    uint64_t key;
    uint32_t crc;
    uint32_t len;
    uint8_t type;
    uint8_t flags;
    uint16_t reserved;
    const uint8_t *payload;
};

/* Called for each valid WAL record; non-zero stops the scan. */
typedef int ctl_wal_rec_fn(void *arg, const struct ctl_wal_rec *rec);

/* Called for each partition directory found under DATA/topics. */
typedef void ctl_part_fn(void *arg, const char *topic, const char *partition, const char *dir);
/* Called for what the walk finds odd (is_error: not a warning). */
typedef void ctl_walk_problem_fn(void *arg, bool is_error, const char *path, const char *msg);

/* ---- small helpers ------------------------------------------------------------------- */

static uint32_t ctl_get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t ctl_get_be64(const uint8_t *p)
{
    return (uint64_t)ctl_get_be32(p) << 32 | ctl_get_be32(p + 4);
}

static uint32_t ctl_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t ctl_get_le64(const uint8_t *p)
{
    return (uint64_t)ctl_get_le32(p) | (uint64_t)ctl_get_le32(p + 4) << 32;
}

static void ctl_put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void ctl_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static bool ctl_is_zero(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] != 0)
            return false;
    }
    return true;
}

static bool ctl_has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s);
    size_t m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static bool ctl_has_prefix_suffix(const char *s, const char *prefix, const char *suffix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0 && ctl_has_suffix(s, suffix);
}

/* The text of the last rv_errf() message when there is one, else of code. */
static const char *ctl_err_text(int code)
{
    const char *msg = rv_err_msg();
    return msg[0] != '\0' ? msg : rv_strerror(code);
}

/* Make room for cap_bytes in b (contents are not kept). 0 or -ENOMEM. */
static int ctl_buf_reserve(struct ctl_buf *b, size_t cap_bytes)
{
    if (cap_bytes <= b->cap_bytes)
        return 0;
    free(b->p);
    b->cap_bytes = 0;
    b->p = malloc(cap_bytes);
    if (b->p == NULL)
        return -ENOMEM;
    b->cap_bytes = cap_bytes;
    return 0;
}

static void ctl_buf_fini(struct ctl_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->cap_bytes = 0;
}

/* "<dir>/<name>" into out. 0 or -ENAMETOOLONG. */
static int ctl_path(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* Read exactly len bytes at pos. 0, -ENODATA when the file ends first, or -errno. */
static int ctl_pread_all(int fd, void *buf, size_t len, uint64_t pos)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = rv_sys_pread(fd, (uint8_t *)buf + got, len - got, (off_t)(pos + got));
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -ENODATA;
        got += (size_t)n;
    }
    return 0;
}

/* Open path read-only and measure it. 0 or -errno (then nothing is open). */
static int ctl_open_read(const char *path, int *out_fd, uint64_t *out_size)
{
    int fd = rv_sys_open(path, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    struct stat st;
    int rc = rv_sys_fstat(fd, &st);
    if (rc == 0 && !S_ISREG(st.st_mode))
        rc = -EISDIR;
    if (rc < 0) {
        (void)rv_sys_close(fd); /* read-only: nothing to lose */
        return rc;
    }
    *out_fd = fd;
    *out_size = (uint64_t)st.st_size;
    return 0;
}

/* *out_pos gets the first non-zero byte at or after pos, or size when none. */
static int ctl_find_nonzero(int fd, uint64_t pos, uint64_t size, uint64_t *out_pos)
{
    uint8_t buf[CTL_IO_BYTES];
    while (pos < size) {
        size_t want = size - pos < sizeof(buf) ? (size_t)(size - pos) : sizeof(buf);
        int rc = ctl_pread_all(fd, buf, want, pos);
        if (rc < 0)
            return rc;
        for (size_t i = 0; i < want; i++) {
            if (buf[i] != 0) {
                *out_pos = pos + i;
                return 0;
            }
        }
        pos += want;
    }
    *out_pos = size;
    return 0;
}

/* Parse "<20 digits><suffix>" (the last path component of name). */
static bool ctl_parse_base_name(const char *name, const char *suffix, uint64_t *out)
{
    const char *slash = strrchr(name, '/');
    const char *base = slash != NULL ? slash + 1 : name;
    if (strlen(base) != CTL_WAL_NAME_DIGITS + strlen(suffix) ||
        strcmp(base + CTL_WAL_NAME_DIGITS, suffix) != 0)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < CTL_WAL_NAME_DIGITS; i++) {
        if (base[i] < '0' || base[i] > '9')
            return false;
        uint64_t d = (uint64_t)(base[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* Record how a file ends; returns 0 so step functions can `return ctl_end_set(...)`. */
__attribute__((format(printf, 3, 4))) static int
ctl_end_set(struct ctl_end *end, enum ctl_end_state state, const char *fmt, ...)
{
    end->state = state;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(end->why, sizeof(end->why), fmt, ap);
    va_end(ap);
    return 0;
}

static bool ctl_end_is_corrupt(const struct ctl_end *end)
{
    return end->state == CTL_END_TORN || end->state == CTL_END_STOPPED || end->state == CTL_END_IO;
}

/* One sentence for how a file ends ("torn tail at byte N: why"). */
/* One sentence for how a file ends ("torn tail at byte N<where>: why"); where says
 * more about the position (" (lsn L)") or is "". */
static void ctl_end_text_at(const struct ctl_end *end, const char *item, const char *where,
                            char *out, size_t cap)
{
    uint64_t rest = end->size - end->pos;
    switch (end->state) {
    case CTL_END_CLEAN:
        snprintf(out, cap, "clean end at byte %" PRIu64 "%s", end->pos, where);
        break;
    case CTL_END_ZERO_TAIL:
        snprintf(out, cap, "clean end at byte %" PRIu64 "%s (zero tail of %" PRIu64 " bytes)%s%s",
                 end->pos, where, rest, end->why[0] ? ": " : "", end->why);
        break;
    case CTL_END_TORN:
        snprintf(out, cap, "torn tail at byte %" PRIu64 "%s: %s (%" PRIu64 " bytes from there on)",
                 end->pos, where, end->why, rest);
        break;
    case CTL_END_NEXT_FILE:
        snprintf(out, cap,
                 "clean end at byte %" PRIu64 "%s, where the next file starts (%" PRIu64
                 " bytes of a reused file's old records follow, which replay ignores)",
                 end->pos, where, rest);
        break;
    case CTL_END_STOPPED:
        snprintf(out, cap, "corrupt %s at byte %" PRIu64 "%s: %s", item, end->pos, where, end->why);
        break;
    case CTL_END_IO:
        snprintf(out, cap, "read error at byte %" PRIu64 "%s: %s", end->pos, where, end->why);
        break;
    }
}

/* ctl_end_text_at() with nothing more to say about the position. */
static void ctl_end_text(const struct ctl_end *end, const char *item, char *out, size_t cap)
{
    ctl_end_text_at(end, item, "", out, cap);
}

/* ---- output: text lines or one JSON document ------------------------------------------ */

/* Bytes of the valid UTF-8 sequence at p[0..len) (len > 0), or 0 when there is none. */
static size_t ctl_utf8_len(const uint8_t *p, size_t len)
{
    uint8_t c = p[0];
    if (c < 0x80)
        return 1;
    size_t n;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1fu;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0fu;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07u;
    } else {
        return 0;
    }
    if (n > len)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3fu);
    }
    if (n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff)))
        return 0;
    if (n == 4 && (cp < 0x10000 || cp > 0x10ffff))
        return 0;
    return n;
}

static bool ctl_is_ctrl(uint8_t c)
{
    return c < 0x20 || c == 0x7f;
}

/* True when p[0..len) reads as text: valid UTF-8, no control bytes but \t \n \r. */
static bool ctl_is_text(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len;) {
        size_t n = ctl_utf8_len(p + i, len - i);
        if (n == 0)
            return false;
        if (n == 1 && ctl_is_ctrl(p[i]) && p[i] != '\t' && p[i] != '\n' && p[i] != '\r')
            return false;
        i += n;
    }
    return true;
}

/* Write p[0..len) quoted: JSON escapes (bytes that are not UTF-8 as \u00XX) or, in
 * text, C escapes (\xHH). */
static void ctl_put_quoted(const uint8_t *p, size_t len, bool is_json)
{
    putchar('"');
    for (size_t i = 0; i < len;) {
        size_t n = ctl_utf8_len(p + i, len - i);
        uint8_t c = p[i];
        if (n > 1) {
            fwrite(p + i, 1, n, stdout);
            i += n;
            continue;
        }
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (n == 0 || ctl_is_ctrl(c))
            printf(is_json ? "\\u%04x" : "\\x%02x", c);
        else
            putchar(c);
        i++;
    }
    putchar('"');
}

/* Text: true when s can be written bare (printable ASCII, no space, quote or '\'). */
static bool ctl_is_bare(const char *s)
{
    if (s[0] == '\0')
        return false;
    for (const char *c = s; *c != '\0'; c++) {
        if (*c <= ' ' || *c > '~' || *c == '"' || *c == '\\')
            return false;
    }
    return true;
}

/* Text: start a line at the current indentation if none is open. */
static void ctl_out_line(struct ctl_out *o)
{
    if (o->is_line_open)
        return;
    for (uint32_t i = 1; i < o->obj_level; i++)
        fputs("  ", stdout);
    o->is_line_open = true;
}

/* Text: finish the open line. */
static void ctl_out_line_end(struct ctl_out *o)
{
    if (o->is_line_open)
        putchar('\n');
    o->is_line_open = false;
}

/* JSON: the comma and "name": before a value (name NULL inside arrays). */
static void ctl_json_key(struct ctl_out *o, const char *name)
{
    if (o->depth > 0) {
        if (o->has_items[o->depth - 1])
            putchar(',');
        o->has_items[o->depth - 1] = true;
    }
    if (name != NULL) {
        ctl_put_quoted((const uint8_t *)name, strlen(name), true);
        putchar(':');
    }
}

static void ctl_json_open(struct ctl_out *o, const char *name, char ch)
{
    RV_ASSERT(o->depth < CTL_DEPTH_MAX);
    ctl_json_key(o, name);
    putchar(ch);
    o->has_items[o->depth++] = false;
}

static void ctl_json_close(struct ctl_out *o, char ch)
{
    RV_ASSERT(o->depth > 0);
    o->depth--;
    putchar(ch);
}

static void ctl_doc_begin(struct ctl_out *o)
{
    if (o->is_json)
        ctl_json_open(o, NULL, '{');
}

static void ctl_doc_end(struct ctl_out *o)
{
    if (o->is_json) {
        ctl_json_close(o, '}');
        putchar('\n');
        RV_ASSERT(o->depth == 0);
    }
    ctl_out_line_end(o);
}

/* Start an object (name: its key in the parent object, NULL in arrays); text
 * starts a line with `kind`, JSON adds "kind" when it is not NULL. */
static void ctl_obj_begin(struct ctl_out *o, const char *name, const char *kind)
{
    if (o->is_json) {
        ctl_json_open(o, name, '{');
        if (kind != NULL && name == NULL) { /* a keyed object needs no kind */
            ctl_json_key(o, "kind");
            ctl_put_quoted((const uint8_t *)kind, strlen(kind), true);
        }
        return;
    }
    ctl_out_line_end(o);
    o->obj_level++;
    ctl_out_line(o);
    fputs(kind != NULL ? kind : name, stdout);
}

static void ctl_obj_end(struct ctl_out *o)
{
    if (o->is_json) {
        ctl_json_close(o, '}');
        return;
    }
    ctl_out_line_end(o);
    RV_ASSERT(o->obj_level > 0);
    o->obj_level--;
}

static void ctl_arr_begin(struct ctl_out *o, const char *name)
{
    if (o->is_json)
        ctl_json_open(o, name, '[');
    else
        ctl_out_line_end(o);
}

static void ctl_arr_end(struct ctl_out *o)
{
    if (o->is_json)
        ctl_json_close(o, ']');
}

/* Before a scalar value: "name": or " name=". */
static void ctl_field(struct ctl_out *o, const char *name)
{
    if (o->is_json) {
        ctl_json_key(o, name);
        return;
    }
    ctl_out_line(o);
    printf(" %s=", name);
}

static void ctl_i64(struct ctl_out *o, const char *name, int64_t v)
{
    ctl_field(o, name);
    printf("%" PRId64, v);
}

static void ctl_u64(struct ctl_out *o, const char *name, uint64_t v)
{
    ctl_field(o, name);
    printf("%" PRIu64, v);
}

static void ctl_bool(struct ctl_out *o, const char *name, bool v)
{
    ctl_field(o, name);
    fputs(v ? "true" : "false", stdout);
}

static void ctl_null(struct ctl_out *o, const char *name)
{
    ctl_field(o, name);
    fputs("null", stdout);
}

static void ctl_hex32(struct ctl_out *o, const char *name, uint32_t v)
{
    ctl_field(o, name);
    printf(o->is_json ? "\"0x%08" PRIx32 "\"" : "0x%08" PRIx32, v);
}

/* A string (NULL: null). Text writes it bare when that is unambiguous. */
static void ctl_str(struct ctl_out *o, const char *name, const char *s)
{
    if (s == NULL) {
        ctl_null(o, name);
        return;
    }
    ctl_field(o, name);
    if (!o->is_json && ctl_is_bare(s))
        fputs(s, stdout);
    else
        ctl_put_quoted((const uint8_t *)s, strlen(s), o->is_json);
}

/* A key or value: null when len is -1, a string when it reads as text, else
 * "<name>_hex" with the bytes in hex. */
static void ctl_bytes(struct ctl_out *o, const char *name, const uint8_t *p, int32_t len)
{
    if (len < 0) {
        ctl_null(o, name);
        return;
    }
    if (ctl_is_text(p, (size_t)len)) {
        ctl_field(o, name);
        ctl_put_quoted(p, (size_t)len, o->is_json);
        return;
    }
    char hex_name[64];
    snprintf(hex_name, sizeof(hex_name), "%s_hex", name);
    ctl_field(o, hex_name);
    if (o->is_json)
        putchar('"');
    for (int32_t i = 0; i < len; i++)
        printf("%02x", p[i]);
    if (o->is_json)
        putchar('"');
}

/* How a dumped file ends: text one line, JSON an "end" object. */
static void ctl_out_end(struct ctl_out *o, const struct ctl_end *end, const char *item)
{
    char text[CTL_WHY_BYTES + 128];
    ctl_end_text(end, item, text, sizeof(text));
    if (!o->is_json) {
        ctl_out_line_end(o);
        printf("%s\n", text);
        return;
    }
    ctl_obj_begin(o, "end", NULL);
    ctl_u64(o, "pos", end->pos);
    ctl_bool(o, "is_corrupt", ctl_end_is_corrupt(end));
    ctl_str(o, "message", text);
    ctl_obj_end(o);
}

/* ---- batches: why a log ends, records -------------------------------------------------- */

/* Explain the invalid batch at pos (which rv_seg_scan_file refused) in end->why. */
static void ctl_log_why(int fd, uint64_t pos, uint64_t size, struct ctl_end *end)
{
    uint64_t left = size - pos;
    uint8_t head[RV_BATCH_LOG_OVERHEAD_BYTES];
    if (left < sizeof(head) || ctl_pread_all(fd, head, sizeof(head), pos) < 0) {
        ctl_end_set(end, CTL_END_TORN, "file ends %" PRIu64 " bytes into a batch header", left);
        return;
    }
    uint32_t length = ctl_get_be32(head + RV_BATCH_LENGTH_POS);
    uint64_t claim = (uint64_t)length + RV_BATCH_LOG_OVERHEAD_BYTES;
    if (length < RV_BATCH_LENGTH_MIN || length > INT32_MAX) {
        ctl_end_set(end, CTL_END_TORN, "batchLength %" PRId32 " is invalid (minimum %d)",
                    (int32_t)length, RV_BATCH_LENGTH_MIN);
        return;
    }
    if (claim > CTL_BATCH_BYTES_MAX) {
        ctl_end_set(end, CTL_END_TORN, "batch claims %" PRIu64 " bytes, over the limit of %u",
                    claim, CTL_BATCH_BYTES_MAX);
        return;
    }
    if (claim > left) {
        ctl_end_set(end, CTL_END_TORN,
                    "file ends inside a batch: %" PRIu64 " of its %" PRIu64 " bytes are there",
                    left, claim);
        return;
    }
    uint8_t *b = malloc((size_t)claim);
    int rc = b != NULL ? ctl_pread_all(fd, b, (size_t)claim, pos) : -ENOMEM;
    if (rc < 0) {
        ctl_end_set(end, CTL_END_IO, "%s", rv_strerror(rc));
    } else if (b[RV_BATCH_MAGIC_POS] != RV_BATCH_MAGIC) {
        ctl_end_set(end, CTL_END_TORN, "magic %d (only RecordBatch v2, magic 2, is supported)",
                    (int8_t)b[RV_BATCH_MAGIC_POS]);
    } else {
        uint32_t stored = ctl_get_be32(b + RV_BATCH_CRC_POS);
        uint32_t crc =
            rv_crc32c(0, b + RV_BATCH_ATTRIBUTES_POS, (size_t)claim - RV_BATCH_ATTRIBUTES_POS);
        struct rv_batch_view v;
        rv_err_clear();
        if (crc != stored)
            ctl_end_set(end, CTL_END_TORN,
                        "crc mismatch (stored 0x%08" PRIx32 ", computed 0x%08" PRIx32 ")", stored,
                        crc);
        else if ((rc = rv_batch_parse(b, (size_t)claim, CTL_BATCH_BYTES_MAX, &v)) < 0)
            ctl_end_set(end, CTL_END_TORN, "%s", ctl_err_text(rc));
        else
            ctl_end_set(end, CTL_END_TORN, "invalid batch");
    }
    free(b);
}

/* Fill *end after rv_seg_scan_file returned rc with stop_pos: stopped is the reason
 * the callback stopped (rc > 0). */
static int ctl_log_end(int fd, uint64_t size, int rc, uint64_t stop_pos, const char *stopped,
                       struct ctl_end *end)
{
    end->pos = stop_pos;
    end->size = size;
    end->why[0] = '\0';
    if (rc == 0)
        return ctl_end_set(end, CTL_END_CLEAN, "%s", "");
    if (rc > 0)
        return ctl_end_set(end, CTL_END_STOPPED, "%s", stopped);
    bool is_tail = rc == -ENODATA || rc == -EBADMSG || rc == -EMSGSIZE || rc == -EPROTONOSUPPORT ||
                   rc == -ENOTSUP || rc == -EINVAL;
    if (!is_tail)
        return ctl_end_set(end, CTL_END_IO, "%s", ctl_err_text(rc));
    uint64_t nonzero = 0;
    int zrc = ctl_find_nonzero(fd, stop_pos, size, &nonzero);
    if (zrc < 0)
        return ctl_end_set(end, CTL_END_IO, "%s", rv_strerror(zrc));
    if (nonzero == size)
        return ctl_end_set(end, CTL_END_ZERO_TAIL, "%s", "");
    ctl_log_why(fd, stop_pos, size, end);
    return 0;
}

/* The records section of *v, decompressed into plain when compressed, and checked
 * (rv_batch_validate_records). 0, or -errno with the reason in why. */
static int ctl_batch_records(struct rv_batch_view *v, struct ctl_buf *plain, const uint8_t **out,
                             size_t *out_len, char *why, size_t why_cap)
{
    enum rv_codec codec = rv_batch_codec(v);
    if (codec == RV_CODEC_NONE) {
        *out = v->records;
        *out_len = v->records_bytes;
        return 0;
    }
    size_t cap = CTL_PLAIN_BYTES_MIN;
    while (cap < v->records_bytes * 4 && cap < CTL_PLAIN_BYTES_MAX)
        cap *= 2;
    for (;;) {
        int rc = ctl_buf_reserve(plain, cap);
        if (rc < 0) {
            snprintf(why, why_cap, "no memory for %zu decompressed bytes", cap);
            return rc;
        }
        size_t n = 0;
        rv_err_clear();
        rc = rv_codec_decompress(codec, v->records, v->records_bytes, plain->p, cap, &n);
        if (rc == -EMSGSIZE && cap < CTL_PLAIN_BYTES_MAX) {
            cap *= 2;
            continue;
        }
        if (rc < 0) {
            snprintf(why, why_cap, "%s records do not decompress%s: %s", rv_codec_name(codec),
                     rc == -EMSGSIZE ? " within 256 MiB" : "", ctl_err_text(rc));
            return rc;
        }
        rv_err_clear();
        rc = rv_batch_validate_records(v, plain->p, n);
        if (rc < 0) {
            snprintf(why, why_cap, "%s", ctl_err_text(rc));
            return rc;
        }
        *out = plain->p;
        *out_len = n;
        return 0;
    }
}

/* ---- dump: .log ------------------------------------------------------------------------ */

struct dump_log {
    struct ctl_out *o;
    bool has_records; /* --records */
    struct ctl_buf plain;
    uint64_t batches;
    uint64_t records;
    uint64_t bytes;
    char why[CTL_WHY_BYTES]; /* why the callback stopped */
};

static void dump_batch_fields(struct ctl_out *o, const struct rv_batch_view *v, uint64_t pos)
{
    ctl_u64(o, "pos", pos);
    ctl_i64(o, "base_offset", v->base_offset);
    ctl_i64(o, "last_offset", rv_batch_last_offset(v));
    ctl_i64(o, "count", v->record_count);
    ctl_u64(o, "size", v->size_bytes);
    ctl_str(o, "codec", rv_codec_name(rv_batch_codec(v)));
    ctl_i64(o, "base_timestamp", v->base_timestamp);
    ctl_i64(o, "max_timestamp", v->max_timestamp);
    ctl_str(o, "timestamp_type", rv_batch_has_log_append_time(v) ? "log_append" : "create");
    ctl_i64(o, "producer_id", v->producer_id);
    ctl_i64(o, "producer_epoch", v->producer_epoch);
    ctl_i64(o, "base_sequence", v->base_sequence);
    ctl_i64(o, "leader_epoch", v->leader_epoch);
    ctl_bool(o, "transactional", rv_batch_is_transactional(v));
    ctl_bool(o, "control", rv_batch_is_control(v));
    ctl_hex32(o, "crc", v->crc);
    ctl_bool(o, "crc_ok", true);
}

static void dump_record_headers(struct ctl_out *o, const struct rv_batch_record *r)
{
    struct rv_batch_header_iter hit;
    rv_batch_header_iter_init(&hit, r);
    ctl_arr_begin(o, "headers");
    struct rv_batch_record_header h;
    while (rv_batch_header_iter_next(&hit, &h) > 0) {
        ctl_obj_begin(o, NULL, "header");
        ctl_bytes(o, "key", h.key, h.key_len);
        ctl_bytes(o, "value", h.value, h.value_len);
        ctl_obj_end(o);
    }
    ctl_arr_end(o);
}

/* Every record of the batch; -EINVAL with d->why for an invalid one. */
static int dump_records(struct dump_log *d, const struct rv_batch_view *v, const uint8_t *recs,
                        size_t len)
{
    struct rv_batch_record_iter it;
    rv_batch_record_iter_init(&it, v, recs, len);
    ctl_arr_begin(d->o, "records");
    int rc;
    struct rv_batch_record r;
    rv_err_clear();
    while ((rc = rv_batch_record_iter_next(&it, &r)) > 0) {
        ctl_obj_begin(d->o, NULL, "record");
        ctl_i64(d->o, "offset", r.offset);
        ctl_i64(d->o, "timestamp", r.timestamp_ms);
        ctl_bytes(d->o, "key", r.key, r.key_len);
        ctl_bytes(d->o, "value", r.value, r.value_len);
        if (r.header_count > 0)
            dump_record_headers(d->o, &r);
        ctl_obj_end(d->o);
        d->records++;
    }
    ctl_arr_end(d->o);
    if (rc < 0)
        snprintf(d->why, sizeof(d->why), "%s", ctl_err_text(rc));
    return rc;
}

/* rv_seg_batch_fn of dump: one entry per batch, its records with --records. */
static int dump_log_batch(void *arg, const struct rv_batch_view *batch, uint64_t pos)
{
    struct dump_log *d = arg;
    struct rv_batch_view v = *batch;
    ctl_obj_begin(d->o, NULL, "batch");
    dump_batch_fields(d->o, &v, pos);
    d->batches++;
    d->bytes += v.size_bytes;
    int rc = 0;
    if (d->has_records) {
        const uint8_t *recs = NULL;
        size_t len = 0;
        rc = ctl_batch_records(&v, &d->plain, &recs, &len, d->why, sizeof(d->why));
        if (rc == 0)
            rc = dump_records(d, &v, recs, len);
    } else {
        d->records += (uint64_t)v.record_count;
    }
    ctl_obj_end(d->o);
    return rc < 0 ? 1 : 0;
}

static void ctl_out_file(struct ctl_out *o, const char *path, const char *format, uint64_t size)
{
    ctl_obj_begin(o, "file", "file");
    ctl_str(o, "path", path);
    ctl_str(o, "format", format);
    ctl_u64(o, "size", size);
    ctl_obj_end(o);
}

static int dump_log(struct ctl_out *o, const char *path, int fd, uint64_t size, bool has_records)
{
    struct dump_log d = {.o = o, .has_records = has_records};
    ctl_doc_begin(o);
    ctl_out_file(o, path, "log", size);
    ctl_arr_begin(o, "entries");
    uint64_t stop_pos = 0;
    int rc = rv_seg_scan_file(fd, 0, CTL_BATCH_BYTES_MAX, dump_log_batch, &d, &stop_pos);
    ctl_arr_end(o);
    struct ctl_end end;
    (void)ctl_log_end(fd, size, rc, stop_pos, d.why, &end); /* always 0 */
    ctl_out_end(o, &end, "batch");
    ctl_obj_begin(o, "summary", "summary");
    ctl_u64(o, "batches", d.batches);
    ctl_u64(o, "records", d.records);
    ctl_u64(o, "bytes", d.bytes);
    ctl_obj_end(o);
    ctl_doc_end(o);
    ctl_buf_fini(&d.plain);
    return ctl_end_is_corrupt(&end) ? CTL_EXIT_CORRUPT : CTL_EXIT_OK;
}

/* ---- index files ---------------------------------------------------------------------- */

/* Read the raw entries of an index file (is_time: a .timeindex). 0 or -errno
 * (-ENOENT when missing, -EFBIG over CTL_INDEX_BYTES_MAX). Free with free(f->entries). */
static int ctl_ifile_read(const char *path, bool is_time, struct ctl_ifile *f)
{
    int fd;
    uint64_t size;
    int rc = ctl_open_read(path, &fd, &size);
    if (rc < 0)
        return rc;
    uint8_t *raw = NULL;
    size_t entry_bytes = is_time ? RV_TIDX_ENTRY_BYTES : RV_IDX_ENTRY_BYTES;
    *f = (struct ctl_ifile){.size = size, .is_time = is_time};
    f->count = (uint32_t)(size / entry_bytes);
    if (size > CTL_INDEX_BYTES_MAX)
        rc = -EFBIG;
    if (rc == 0 && size > 0) {
        raw = malloc((size_t)size);
        f->entries = calloc(f->count + 1u, sizeof(*f->entries));
        rc = raw != NULL && f->entries != NULL ? ctl_pread_all(fd, raw, (size_t)size, 0) : -ENOMEM;
    }
    for (uint32_t i = 0; rc == 0 && i < f->count; i++) {
        const uint8_t *p = raw + (size_t)i * entry_bytes;
        struct ctl_ientry *e = &f->entries[i];
        if (is_time) {
            e->timestamp_ms = (int64_t)ctl_get_be64(p);
            e->rel_offset = ctl_get_be32(p + 8);
        } else {
            e->rel_offset = ctl_get_be32(p);
            e->pos = ctl_get_be32(p + 4);
        }
    }
    free(raw);
    (void)rv_sys_close(fd); /* read-only */
    if (rc < 0) {
        free(f->entries);
        f->entries = NULL;
    }
    return rc;
}

/* Check the entries of f as rv_idx_load would; false with the first bad entry in
 * *out_bad and the reason in why. log_size_bytes: UINT64_MAX when unknown. */
static bool ctl_ifile_check(const struct ctl_ifile *f, uint64_t log_size_bytes, uint32_t *out_bad,
                            char *why, size_t cap)
{
    size_t entry_bytes = f->is_time ? RV_TIDX_ENTRY_BYTES : RV_IDX_ENTRY_BYTES;
    for (uint32_t i = 0; i < f->count; i++) {
        const struct ctl_ientry *e = &f->entries[i];
        const struct ctl_ientry *prev = i > 0 ? &f->entries[i - 1] : NULL;
        *out_bad = i;
        if (e->rel_offset > CTL_REL_MAX) {
            snprintf(why, cap, "relative offset %" PRIu32 " is over 2^31-1", e->rel_offset);
            return false;
        }
        if (prev != NULL && e->rel_offset <= prev->rel_offset) {
            snprintf(why, cap,
                     "relative offset %" PRIu32 " does not increase (previous %" PRIu32 ")",
                     e->rel_offset, prev->rel_offset);
            return false;
        }
        if (f->is_time && prev != NULL && e->timestamp_ms <= prev->timestamp_ms) {
            snprintf(why, cap, "timestamp %" PRId64 " does not increase (previous %" PRId64 ")",
                     e->timestamp_ms, prev->timestamp_ms);
            return false;
        }
        if (!f->is_time && prev != NULL && e->pos <= prev->pos) {
            snprintf(why, cap, "position %" PRIu32 " does not increase (previous %" PRIu32 ")",
                     e->pos, prev->pos);
            return false;
        }
        if (!f->is_time && e->pos >= log_size_bytes) {
            snprintf(why, cap,
                     "position %" PRIu32 " is past the end of the log (%" PRIu64 " bytes)", e->pos,
                     log_size_bytes);
            return false;
        }
    }
    *out_bad = f->count;
    if (f->size % entry_bytes != 0) {
        snprintf(why, cap, "partial entry: the file size %" PRIu64 " is not a multiple of %zu",
                 f->size, entry_bytes);
        return false;
    }
    return true;
}

static void dump_index_entry(struct ctl_out *o, const struct ctl_ifile *f, uint32_t i,
                             uint64_t base, bool has_base)
{
    const struct ctl_ientry *e = &f->entries[i];
    ctl_obj_begin(o, NULL, "entry");
    ctl_u64(o, "index", i);
    ctl_u64(o, "pos", (uint64_t)i * (f->is_time ? RV_TIDX_ENTRY_BYTES : RV_IDX_ENTRY_BYTES));
    if (f->is_time)
        ctl_i64(o, "timestamp", e->timestamp_ms);
    ctl_u64(o, "rel_offset", e->rel_offset);
    if (has_base)
        ctl_u64(o, "offset", base + e->rel_offset);
    if (!f->is_time)
        ctl_u64(o, "log_pos", e->pos);
    ctl_obj_end(o);
}

static int dump_index(struct ctl_out *o, const char *path, bool is_time)
{
    struct ctl_ifile f;
    int rc = ctl_ifile_read(path, is_time, &f);
    if (rc < 0) {
        fprintf(stderr, "rivvenctl: %s: %s\n", path, rv_strerror(rc));
        return CTL_EXIT_CORRUPT;
    }
    uint64_t base = 0;
    bool has_base = ctl_parse_base_name(path, is_time ? ".timeindex" : ".index", &base);
    uint32_t bad = 0;
    struct ctl_end end = {.size = f.size};
    bool is_ok = ctl_ifile_check(&f, UINT64_MAX, &bad, end.why, sizeof(end.why));
    ctl_doc_begin(o);
    ctl_out_file(o, path, is_time ? "timeindex" : "index", f.size);
    ctl_arr_begin(o, "entries");
    for (uint32_t i = 0; i < bad; i++)
        dump_index_entry(o, &f, i, base, has_base);
    ctl_arr_end(o);
    end.pos = (uint64_t)bad * (is_time ? RV_TIDX_ENTRY_BYTES : RV_IDX_ENTRY_BYTES);
    end.state = is_ok ? CTL_END_CLEAN : CTL_END_STOPPED;
    ctl_out_end(o, &end, "entry");
    ctl_obj_begin(o, "summary", "summary");
    ctl_u64(o, "entries", bad);
    if (has_base)
        ctl_u64(o, "base_offset", base);
    ctl_obj_end(o);
    ctl_doc_end(o);
    free(f.entries);
    return is_ok ? CTL_EXIT_OK : CTL_EXIT_CORRUPT;
}

/* ---- WAL files ------------------------------------------------------------------------- */

/* The end of a WAL file at an all-zero header: clean, noting stale bytes after it. */
static int wal_end_zero(int fd, struct ctl_end *end)
{
    uint64_t nonzero = 0;
    int rc = ctl_find_nonzero(fd, end->pos, end->size, &nonzero);
    if (rc < 0)
        return ctl_end_set(end, CTL_END_IO, "%s", rv_strerror(rc));
    if (nonzero < end->size)
        return ctl_end_set(end, CTL_END_ZERO_TAIL,
                           "non-zero bytes at byte %" PRIu64 " after it, which replay ignores",
                           nonzero);
    return ctl_end_set(end, CTL_END_ZERO_TAIL, "%s", "");
}

/* Decode the header at h into *rec and check what replay checks before the CRC.
 * Returns 1, or 0 with *end filled. */
static int wal_scan_header(const uint8_t *h, uint64_t start, struct ctl_wal_rec *rec,
                           struct ctl_end *end)
{
    uint64_t pos = end->pos;
    *rec = (struct ctl_wal_rec){
        .pos = pos,
        .crc = ctl_get_le32(h),
        .len = ctl_get_le32(h + 4),
        .type = h[8],
        .flags = h[9],
        .reserved = (uint16_t)(h[10] | h[11] << 8),
        .lsn = ctl_get_le64(h + 12),
        .key = ctl_get_le64(h + 20),
    };
    uint64_t left = end->size - pos - RV_WAL_HEADER_BYTES;
    if (rec->len > RV_WAL_RECORD_MAX)
        return ctl_end_set(end, CTL_END_TORN, "record length %" PRIu32 " is over the limit of %u",
                           rec->len, RV_WAL_RECORD_MAX);
    if (rec->lsn != start + pos)
        return ctl_end_set(end, CTL_END_TORN,
                           "lsn field %" PRIu64 ", but this position is lsn %" PRIu64
                           " (stale or misplaced bytes)",
                           rec->lsn, start + pos);
    if (rec->len > left)
        return ctl_end_set(end, CTL_END_TORN,
                           "record of %" PRIu32 " payload bytes runs %" PRIu64
                           " bytes past the end of the file",
                           rec->len, rec->len - left);
    return 1;
}

/* Read the record at end->pos into buf and *rec. 1 for a valid record, 0 with *end
 * filled when the valid records end there. */
static int wal_scan_step(int fd, uint64_t start, struct ctl_buf *buf, struct ctl_wal_rec *rec,
                         struct ctl_end *end)
{
    uint64_t left = end->size - end->pos;
    if (left == 0)
        return ctl_end_set(end, CTL_END_CLEAN, "%s", "");
    uint8_t h[RV_WAL_HEADER_BYTES];
    size_t head_bytes = left < sizeof(h) ? (size_t)left : sizeof(h);
    int rc = ctl_pread_all(fd, h, head_bytes, end->pos);
    if (rc < 0)
        return ctl_end_set(end, CTL_END_IO, "%s", rv_strerror(rc));
    if (ctl_is_zero(h, head_bytes))
        return wal_end_zero(fd, end);
    if (head_bytes < sizeof(h))
        return ctl_end_set(end, CTL_END_TORN, "file ends %" PRIu64 " bytes into a record header",
                           left);
    if (wal_scan_header(h, start, rec, end) == 0)
        return 0;
    size_t total = RV_WAL_HEADER_BYTES + (size_t)rec->len;
    rc = ctl_buf_reserve(buf, total);
    if (rc == 0)
        rc = ctl_pread_all(fd, buf->p, total, end->pos);
    if (rc < 0)
        return ctl_end_set(end, CTL_END_IO, "%s", rv_strerror(rc));
    uint32_t crc = rv_crc32c(0, buf->p + 4, total - 4);
    if (crc != rec->crc)
        return ctl_end_set(end, CTL_END_TORN,
                           "crc mismatch (stored 0x%08" PRIx32 ", computed 0x%08" PRIx32 ")",
                           rec->crc, crc);
    rec->payload = buf->p + RV_WAL_HEADER_BYTES;
    return 1;
}

/* Visit every valid record of a WAL file whose first byte is lsn `start`; *end says
 * how the valid records end (CTL_END_STOPPED when fn stopped, with its reason left
 * for the caller). */
static void wal_scan(int fd, uint64_t size, uint64_t start, ctl_wal_rec_fn *fn, void *arg,
                     struct ctl_end *end)
{
    struct ctl_buf buf = {0};
    *end = (struct ctl_end){.size = size};
    for (;;) {
        struct ctl_wal_rec rec;
        if (wal_scan_step(fd, start, &buf, &rec, end) == 0)
            break;
        if (fn(arg, &rec) != 0) {
            end->state = CTL_END_STOPPED;
            break;
        }
        end->pos += RV_WAL_HEADER_BYTES + (uint64_t)rec.len;
    }
    ctl_buf_fini(&buf);
}

static const char *wal_type_name(uint8_t type)
{
    switch (type) {
    case RV_WAL_BATCH: return "batch";
    case RV_WAL_META: return "meta";
    case RV_WAL_PAD: return "pad";
    default: return "unknown";
    }
}

/* Parse the payload of a batch record: 0, or -errno with the reason in why. */
static int wal_check_batch(const struct ctl_wal_rec *rec, struct rv_batch_view *v, char *why,
                           size_t cap)
{
    rv_err_clear();
    int rc = rv_batch_parse(rec->payload, rec->len, CTL_BATCH_BYTES_MAX, v);
    if (rc < 0) {
        snprintf(why, cap, "payload is not a valid batch: %s", ctl_err_text(rc));
        return rc;
    }
    if ((uint32_t)rc != rec->len) {
        snprintf(why, cap, "payload holds %" PRIu32 " bytes after its batch",
                 rec->len - (uint32_t)rc);
        return -EBADMSG;
    }
    return 0;
}

struct dump_wal {
    struct ctl_out *o;
    uint64_t records;
    uint64_t bytes;
    uint64_t bad_batches;
};

/* ctl_wal_rec_fn of dump: one entry per record, a batch summary for batches. */
static int dump_wal_rec(void *arg, const struct ctl_wal_rec *rec)
{
    struct dump_wal *d = arg;
    struct ctl_out *o = d->o;
    ctl_obj_begin(o, NULL, "record");
    ctl_u64(o, "pos", rec->pos);
    ctl_u64(o, "lsn", rec->lsn);
    ctl_u64(o, "type", rec->type);
    ctl_str(o, "type_name", wal_type_name(rec->type));
    ctl_u64(o, "key", rec->key);
    ctl_u64(o, "topic_id", rec->key >> 32);
    ctl_u64(o, "partition", rec->key & 0xffffffffu);
    ctl_u64(o, "len", rec->len);
    ctl_hex32(o, "crc", rec->crc);
    ctl_bool(o, "crc_ok", true);
    if (rec->flags != 0 || rec->reserved != 0) {
        ctl_u64(o, "flags", rec->flags);
        ctl_u64(o, "reserved", rec->reserved);
    }
    char why[CTL_WHY_BYTES];
    struct rv_batch_view v;
    if (rec->type == RV_WAL_BATCH && wal_check_batch(rec, &v, why, sizeof(why)) < 0) {
        ctl_str(o, "batch_error", why);
        d->bad_batches++;
    } else if (rec->type == RV_WAL_BATCH) {
        ctl_obj_begin(o, "batch", "batch");
        ctl_i64(o, "base_offset", v.base_offset);
        ctl_i64(o, "last_offset", rv_batch_last_offset(&v));
        ctl_i64(o, "count", v.record_count);
        ctl_str(o, "codec", rv_codec_name(rv_batch_codec(&v)));
        ctl_u64(o, "size", v.size_bytes);
        ctl_i64(o, "max_timestamp", v.max_timestamp);
        ctl_obj_end(o);
    }
    ctl_obj_end(o);
    d->records++;
    d->bytes += RV_WAL_HEADER_BYTES + (uint64_t)rec->len;
    return 0;
}

/* The start LSN of the WAL file after `start` in the directory of path (0:
 * none, or it cannot be listed). */
static uint64_t wal_next_start(const char *path, uint64_t start)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash != NULL)
        *slash = '\0';
    else
        snprintf(dir, sizeof(dir), ".");
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    uint64_t next = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t s;
        if (ctl_parse_base_name(de->d_name, ".wal", &s) && s > start && (next == 0 || s < next))
            next = s;
    }
    closedir(d);
    return next;
}

/* A non-last WAL file whose records end where the next file starts ends there
 * cleanly, whatever follows (replay's rule: storage/wal.h). */
static void wal_end_at_next(struct ctl_end *end, uint64_t start, uint64_t next)
{
    if (end->state == CTL_END_TORN && next != 0 && start + end->pos == next)
        end->state = CTL_END_NEXT_FILE;
}

static int dump_wal(struct ctl_out *o, const char *path, int fd, uint64_t size)
{
    uint64_t start = 0;
    bool has_start = ctl_parse_base_name(path, ".wal", &start);
    uint8_t h[RV_WAL_HEADER_BYTES];
    if (!has_start && size >= sizeof(h) && ctl_pread_all(fd, h, sizeof(h), 0) == 0)
        start = ctl_get_le64(h + 12); /* take the first record's word for it */
    struct dump_wal d = {.o = o};
    ctl_doc_begin(o);
    ctl_out_file(o, path, "wal", size);
    ctl_arr_begin(o, "entries");
    struct ctl_end end;
    wal_scan(fd, size, start, dump_wal_rec, &d, &end);
    if (has_start)
        wal_end_at_next(&end, start, wal_next_start(path, start));
    ctl_arr_end(o);
    ctl_out_end(o, &end, "record");
    ctl_obj_begin(o, "summary", "summary");
    ctl_u64(o, "start_lsn", start);
    ctl_bool(o, "start_from_name", has_start);
    ctl_u64(o, "records", d.records);
    ctl_u64(o, "bytes", d.bytes);
    ctl_u64(o, "end_lsn", start + end.pos);
    ctl_u64(o, "invalid_batches", d.bad_batches);
    ctl_obj_end(o);
    ctl_doc_end(o);
    bool is_bad = ctl_end_is_corrupt(&end) || d.bad_batches > 0;
    return is_bad ? CTL_EXIT_CORRUPT : CTL_EXIT_OK;
}

/* `rivvenctl dump FILE`: the format follows the file name. */
static int dump_run(const char *path, bool is_json, bool has_records)
{
    struct ctl_out o = {.is_json = is_json};
    if (ctl_has_suffix(path, ".index"))
        return dump_index(&o, path, false);
    if (ctl_has_suffix(path, ".timeindex"))
        return dump_index(&o, path, true);
    bool is_log = ctl_has_suffix(path, ".log");
    if (!is_log && !ctl_has_suffix(path, ".wal")) {
        fprintf(stderr,
                "rivvenctl dump: %s: the name must end in .log, .index, .timeindex "
                "or .wal\n",
                path);
        return CTL_EXIT_USAGE;
    }
    int fd;
    uint64_t size;
    int rc = ctl_open_read(path, &fd, &size);
    if (rc < 0) {
        fprintf(stderr, "rivvenctl: %s: %s\n", path, rv_strerror(rc));
        return CTL_EXIT_CORRUPT;
    }
    int status = is_log ? dump_log(&o, path, fd, size, has_records) : dump_wal(&o, path, fd, size);
    (void)rv_sys_close(fd); /* read-only */
    return status;
}

/* ---- walking a data directory ---------------------------------------------------------- */

/* Sort partition names by number (names that are not numbers after them, by name). */
static int ctl_cmp_part(const struct dirent **a, const struct dirent **b)
{
    char *ea;
    char *eb;
    unsigned long long va = strtoull((*a)->d_name, &ea, 10);
    unsigned long long vb = strtoull((*b)->d_name, &eb, 10);
    bool is_num_a = *ea == '\0' && ea != (*a)->d_name;
    bool is_num_b = *eb == '\0' && eb != (*b)->d_name;
    if (is_num_a != is_num_b)
        return is_num_a ? -1 : 1;
    if (is_num_a && va != vb)
        return va < vb ? -1 : 1;
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int ctl_no_dots(const struct dirent *d)
{
    return strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0;
}

/* The entries of dir (no . and ..), sorted by cmp. Returns the count or -errno;
 * free each entry and the array. */
static int ctl_scan_dir(const char *dir, struct dirent ***out,
                        int (*cmp)(const struct dirent **, const struct dirent **))
{
    int n = scandir(dir, out, ctl_no_dots, cmp);
    return n < 0 ? -errno : n;
}

static void ctl_free_dir(struct dirent **list, int n)
{
    for (int i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

static bool ctl_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool ctl_is_partition_name(const char *name)
{
    if (name[0] == '\0' || strlen(name) > 10)
        return false;
    for (const char *c = name; *c != '\0'; c++) {
        if (*c < '0' || *c > '9')
            return false;
    }
    return strtoull(name, NULL, 10) <= INT32_MAX;
}

/* Call fn for every partition directory of the topic directory `tdir`. */
static void ctl_walk_topic(const char *tdir, const char *topic, ctl_part_fn *fn,
                           ctl_walk_problem_fn *problem, void *arg)
{
    struct dirent **list = NULL;
    int n = ctl_scan_dir(tdir, &list, ctl_cmp_part);
    if (n < 0) {
        problem(arg, true, tdir, rv_strerror(n));
        return;
    }
    for (int i = 0; i < n; i++) {
        char pdir[PATH_MAX];
        if (ctl_path(pdir, sizeof(pdir), tdir, list[i]->d_name) < 0) {
            problem(arg, true, tdir, "path too long");
            continue;
        }
        if (!ctl_is_dir(pdir))
            problem(arg, false, pdir, "not a partition directory (ignored)");
        else if (!ctl_is_partition_name(list[i]->d_name))
            problem(arg, false, pdir, "directory name is not a partition number (ignored)");
        else
            fn(arg, topic, list[i]->d_name, pdir);
    }
    ctl_free_dir(list, n);
}

/* Call fn for every DATA/topics/<topic>/<partition> directory, in order. Returns the
 * number of topics. */
static uint64_t ctl_walk_partitions(const char *data_dir, ctl_part_fn *fn,
                                    ctl_walk_problem_fn *problem, void *arg)
{
    char topics[PATH_MAX];
    if (ctl_path(topics, sizeof(topics), data_dir, "topics") < 0) {
        problem(arg, true, data_dir, "path too long");
        return 0;
    }
    struct dirent **list = NULL;
    int n = ctl_scan_dir(topics, &list, alphasort);
    if (n < 0) {
        problem(arg, n != -ENOENT, topics,
                n == -ENOENT ? "no topics directory: no partitions" : rv_strerror(n));
        return 0;
    }
    uint64_t count = 0;
    for (int i = 0; i < n; i++) {
        char tdir[PATH_MAX];
        if (ctl_path(tdir, sizeof(tdir), topics, list[i]->d_name) < 0) {
            problem(arg, true, topics, "path too long");
        } else if (!ctl_is_dir(tdir)) {
            problem(arg, false, tdir, "not a topic directory (ignored)");
        } else {
            count++;
            ctl_walk_topic(tdir, list[i]->d_name, fn, problem, arg);
        }
    }
    ctl_free_dir(list, n);
    return count;
}

/* Read DIR/name, a decimal number and a newline (log-start, the WAL checkpoint).
 * 0, -ENOENT when missing, -EBADMSG when it holds no number. */
static int ctl_read_number_file(const char *dir, const char *name, int64_t *out)
{
    char path[PATH_MAX];
    int rc = ctl_path(path, sizeof(path), dir, name);
    if (rc < 0)
        return rc;
    int fd = rv_sys_open(path, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    char text[32] = {0};
    ssize_t n = rv_sys_pread(fd, text, sizeof(text) - 1, 0);
    (void)rv_sys_close(fd); /* read-only */
    if (n < 0)
        return (int)n;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    while (end != NULL && (*end == '\n' || *end == ' ' || *end == '\r' || *end == '\t'))
        end++;
    if (n == 0 || end == text || *end != '\0' || v < 0 || errno != 0)
        return -EBADMSG;
    *out = v;
    return 0;
}

/* Read DIR/log-start. 0, -ENOENT when missing, -EBADMSG when it is not an offset. */
static int ctl_read_log_start(const char *dir, int64_t *out)
{
    return ctl_read_number_file(dir, CTL_LOG_START_FILE, out);
}

/* ---- verify ---------------------------------------------------------------------------- */

/* Where a batch of the segment being verified starts. */
struct vfy_mark {
    uint64_t pos;
    int64_t base_offset;
};

struct vfy {
    struct ctl_out *o;
    const char *data_dir;
    struct ctl_buf plain;
    uint64_t topics;
    uint64_t partitions;
    uint64_t segments;
    uint64_t batches;
    uint64_t records;
    uint64_t bytes;
    uint64_t wal_files;
    uint64_t wal_records;
    uint64_t wal_bytes;
    uint64_t errors;
    uint64_t warnings;
    uint32_t file_problems; /* problems of the current file */
    uint32_t file_hidden;   /* of which not shown */
    /* The partition being verified. */
    const char *topic;
    const char *partition;
    bool is_compacted; /* its topic compacts (or did): offset gaps are expected */
    char policy[64];   /* why it is not compacted, for messages */
    int64_t log_start; /* its log-start file, 0 when missing or unreadable */
    bool has_next;
    uint64_t next_offset; /* one past the largest offset seen in the partition */
    uint64_t next_base;   /* base of the segment that set next_offset */
    bool is_next_empty;   /* next_offset is the base of an empty segment */
    /* The segment being verified. */
    const char *log_path;
    uint64_t seg_base;
    uint64_t seg_batches;
    int64_t seg_first; /* first batch's base offset, -1 when none */
    int64_t seg_last;  /* last offset held, -1 when none */
    int64_t seg_max_ts;
    struct vfy_mark *marks;
    uint32_t mark_count;
    uint32_t mark_cap;
};

/* Report a problem: `ERROR path: msg` / `WARN path: msg`, or a JSON object. */
__attribute__((format(printf, 4, 5))) static void
vfy_problem(struct vfy *v, bool is_error, const char *path, const char *fmt, ...)
{
    *(is_error ? &v->errors : &v->warnings) += 1;
    if (++v->file_problems > CTL_FILE_PROBLEMS) {
        v->file_hidden++;
        return;
    }
    char msg[CTL_WHY_BYTES + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!v->o->is_json) {
        printf("%s %s: %s\n", is_error ? "ERROR" : "WARN", path, msg);
        return;
    }
    ctl_obj_begin(v->o, NULL, NULL);
    ctl_str(v->o, "level", is_error ? "ERROR" : "WARN");
    ctl_str(v->o, "path", path);
    ctl_str(v->o, "message", msg);
    ctl_obj_end(v->o);
}

/* Start counting the problems of one file. */
static void vfy_file_begin(struct vfy *v)
{
    v->file_problems = 0;
    v->file_hidden = 0;
}

/* Say how many problems of the file were not shown. */
static void vfy_file_end(struct vfy *v, const char *path)
{
    uint32_t hidden = v->file_hidden;
    if (hidden == 0)
        return;
    v->file_problems = 0; /* let the note through; it counts as nothing */
    vfy_problem(v, false, path, "%" PRIu32 " more problems in this file not shown", hidden);
    v->warnings--;
}

static void vfy_walk_problem(void *arg, bool is_error, const char *path, const char *msg)
{
    struct vfy *v = arg;
    vfy_file_begin(v);
    vfy_problem(v, is_error, path, "%s", msg);
}

static int vfy_mark_push(struct vfy *v, uint64_t pos, int64_t base_offset)
{
    if (v->mark_count == v->mark_cap) {
        uint32_t cap = v->mark_cap ? v->mark_cap * 2 : 64;
        struct vfy_mark *m = realloc(v->marks, (size_t)cap * sizeof(*m));
        if (m == NULL)
            return -ENOMEM;
        v->marks = m;
        v->mark_cap = cap;
    }
    v->marks[v->mark_count++] = (struct vfy_mark){pos, base_offset};
    return 0;
}

/* The batch that starts at pos, or NULL. */
static const struct vfy_mark *vfy_mark_find(const struct vfy *v, uint64_t pos)
{
    uint32_t lo = 0;
    uint32_t hi = v->mark_count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (v->marks[mid].pos < pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < v->mark_count && v->marks[lo].pos == pos ? &v->marks[lo] : NULL;
}

/* Offsets from `base` on are next in the partition (a batch or an empty segment at
 * `where`): offsets missing before them, at or past the log start, are lost data
 * unless the topic compacts. */
static void vfy_gap(struct vfy *v, const char *where, int64_t base)
{
    uint64_t from = v->has_next ? v->next_offset : 0;
    bool is_after_start = v->log_start > 0 && (uint64_t)v->log_start >= from;
    if (is_after_start)
        from = (uint64_t)v->log_start;
    if (v->is_compacted || base < 0 || (uint64_t)base <= from)
        return;
    char before[PATH_MAX + 96];
    if (is_after_start || !v->has_next)
        snprintf(before, sizeof(before), "the log starts at offset %" PRId64, v->log_start);
    else if (v->is_next_empty)
        snprintf(before, sizeof(before), "the empty segment %020" PRIu64 ".log comes before",
                 v->next_base);
    else
        snprintf(before, sizeof(before),
                 "the batch before ends at offset %" PRIu64 " in %020" PRIu64 ".log",
                 v->next_offset - 1, v->next_base);
    char missing[64];
    if ((uint64_t)base - 1 == from)
        snprintf(missing, sizeof(missing), "offset %" PRIu64 " is", from);
    else
        snprintf(missing, sizeof(missing), "offsets %" PRIu64 "..%" PRId64 " are", from, base - 1);
    vfy_problem(v, true, v->log_path, "%s: offset gap in partition %s/%s: %s missing (%s; %s)",
                where, v->topic, v->partition, missing, before, v->policy);
}

/* Offsets of one batch against the segment and what came before in the partition. */
static void vfy_batch_offsets(struct vfy *v, const struct rv_batch_view *b, uint64_t pos)
{
    int64_t base = b->base_offset;
    int64_t last = rv_batch_last_offset(b);
    if (base < 0 || (uint64_t)base < v->seg_base) {
        vfy_problem(v, true, v->log_path,
                    "batch at byte %" PRIu64 ": base offset %" PRId64
                    " is below the segment base %" PRIu64,
                    pos, base, v->seg_base);
        return;
    }
    if ((uint64_t)last - v->seg_base > CTL_REL_MAX)
        vfy_problem(v, true, v->log_path,
                    "batch at byte %" PRIu64 ": last offset %" PRId64
                    " is more than 2^31-1 past the segment base %" PRIu64,
                    pos, last, v->seg_base);
    if (v->has_next && (uint64_t)base < v->next_offset) {
        vfy_problem(v, true, v->log_path,
                    "batch at byte %" PRIu64 ": offsets go backwards: base offset %" PRId64
                    " overlaps offsets up to %" PRIu64 " held before it",
                    pos, base, v->next_offset - 1);
    } else {
        char where[48];
        snprintf(where, sizeof(where), "batch at byte %" PRIu64, pos);
        vfy_gap(v, where, base);
    }
    if (!v->has_next || (uint64_t)last + 1 > v->next_offset) {
        v->next_offset = (uint64_t)last + 1;
        v->next_base = v->seg_base;
        v->is_next_empty = false;
    }
    v->has_next = true;
}

/* rv_seg_batch_fn of verify: count, check offsets and compressed records, remember
 * where the batch starts for the index check. */
static int vfy_seg_batch(void *arg, const struct rv_batch_view *batch, uint64_t pos)
{
    struct vfy *v = arg;
    struct rv_batch_view b = *batch;
    v->batches++;
    v->seg_batches++;
    v->records += (uint64_t)b.record_count;
    v->bytes += b.size_bytes;
    if (v->seg_first < 0)
        v->seg_first = b.base_offset;
    if (rv_batch_last_offset(&b) > v->seg_last)
        v->seg_last = rv_batch_last_offset(&b);
    if (b.max_timestamp > v->seg_max_ts)
        v->seg_max_ts = b.max_timestamp;
    vfy_batch_offsets(v, &b, pos);
    char why[CTL_WHY_BYTES];
    const uint8_t *recs;
    size_t len;
    if (ctl_batch_records(&b, &v->plain, &recs, &len, why, sizeof(why)) < 0)
        vfy_problem(v, true, v->log_path, "batch at byte %" PRIu64 " (offset %" PRId64 "): %s", pos,
                    b.base_offset, why);
    return vfy_mark_push(v, pos, b.base_offset) < 0 ? -ENOMEM : 0;
}

/* Report how the segment's valid batches end; true when they end in corruption. */
static bool vfy_log_end(struct vfy *v, int fd, uint64_t size, int rc, uint64_t stop_pos)
{
    struct ctl_end end;
    (void)ctl_log_end(fd, size, rc, stop_pos, "", &end); /* always 0 */
    char text[CTL_WHY_BYTES + 128];
    ctl_end_text(&end, "batch", text, sizeof(text));
    if (end.state == CTL_END_ZERO_TAIL)
        vfy_problem(v, false, v->log_path, "%s; recovery cuts the zeros", text);
    else if (ctl_end_is_corrupt(&end))
        vfy_problem(v, true, v->log_path, "%s", text);
    return ctl_end_is_corrupt(&end);
}

/* Offset index entries against the batches found in the log. */
static void vfy_offset_entries(struct vfy *v, const char *path, const struct ctl_ifile *f,
                               uint64_t valid_end)
{
    for (uint32_t i = 0; i < f->count; i++) {
        const struct ctl_ientry *e = &f->entries[i];
        uint64_t offset = v->seg_base + e->rel_offset;
        const struct vfy_mark *m = vfy_mark_find(v, e->pos);
        if (m == NULL && e->pos >= valid_end)
            vfy_problem(v, true, path,
                        "entry %" PRIu32 " (offset %" PRIu64 ") points at byte %" PRIu32
                        ", past the last valid batch (valid data ends at byte %" PRIu64 ")",
                        i, offset, e->pos, valid_end);
        else if (m == NULL)
            vfy_problem(v, true, path,
                        "entry %" PRIu32 " (offset %" PRIu64 ") points at byte %" PRIu32
                        ", which is not a batch boundary",
                        i, offset, e->pos);
        else if (m->base_offset < 0 || (uint64_t)m->base_offset != offset)
            vfy_problem(v, true, path,
                        "entry %" PRIu32 " names offset %" PRIu64 ", but the batch at byte %" PRIu32
                        " starts at offset %" PRId64,
                        i, offset, e->pos, m->base_offset);
    }
    if (f->count == 0 && v->seg_batches > 0)
        vfy_problem(v, false, path, "no entries for a log with %" PRIu64 " batches",
                    v->seg_batches);
}

/* Time index entries against the segment's offsets and timestamps. */
static void vfy_time_entries(struct vfy *v, const char *path, const struct ctl_ifile *f)
{
    for (uint32_t i = 0; i < f->count; i++) {
        const struct ctl_ientry *e = &f->entries[i];
        uint64_t offset = v->seg_base + e->rel_offset;
        if (v->seg_last < 0)
            vfy_problem(v, true, path,
                        "entry %" PRIu32 " (timestamp %" PRId64 ") names offset %" PRIu64
                        ", but the log holds no valid batch",
                        i, e->timestamp_ms, offset);
        else if (offset > (uint64_t)v->seg_last)
            vfy_problem(v, true, path,
                        "entry %" PRIu32 " (timestamp %" PRId64 ") names offset %" PRIu64
                        ", past the segment's last offset %" PRId64,
                        i, e->timestamp_ms, offset, v->seg_last);
        else if (e->timestamp_ms > v->seg_max_ts)
            vfy_problem(v, true, path,
                        "entry %" PRIu32 ": timestamp %" PRId64
                        " is above every batch's max timestamp (%" PRId64 ")",
                        i, e->timestamp_ms, v->seg_max_ts);
    }
}

/* Check one index file of the segment; *out_ok: it exists and reads cleanly. */
static void vfy_index_file(struct vfy *v, const char *dir, bool is_time, uint64_t log_size,
                           uint64_t valid_end, bool *out_ok)
{
    char path[PATH_MAX];
    *out_ok = false;
    if (rv_idx_file_name(path, sizeof(path), dir, v->seg_base, is_time ? ".timeindex" : ".index") <
        0)
        return;
    struct ctl_ifile f;
    int rc = ctl_ifile_read(path, is_time, &f);
    if (rc == -ENOENT) {
        if (v->seg_batches > 0)
            vfy_problem(v, false, path, "missing (recovery rebuilds it from the log)");
        return;
    }
    if (rc < 0) {
        vfy_problem(v, true, path, "cannot read: %s", rv_strerror(rc));
        return;
    }
    uint32_t bad = 0;
    char why[CTL_WHY_BYTES];
    if (!ctl_ifile_check(&f, log_size, &bad, why, sizeof(why))) {
        vfy_problem(v, true, path, "invalid entry %" PRIu32 " at byte %" PRIu64 ": %s", bad,
                    (uint64_t)bad * (is_time ? RV_TIDX_ENTRY_BYTES : RV_IDX_ENTRY_BYTES), why);
    } else {
        *out_ok = true;
        if (is_time)
            vfy_time_entries(v, path, &f);
        else
            vfy_offset_entries(v, path, &f, valid_end);
    }
    free(f.entries);
}

/* Both index files of the segment: raw checks, then rv_idx_load's verdict. */
static void vfy_indexes(struct vfy *v, const char *dir, uint64_t log_size, uint64_t valid_end)
{
    bool is_offset_ok;
    bool is_time_ok;
    vfy_index_file(v, dir, false, log_size, valid_end, &is_offset_ok);
    vfy_index_file(v, dir, true, log_size, valid_end, &is_time_ok);
    if (!is_offset_ok || !is_time_ok)
        return;
    struct rv_idx idx;
    rv_idx_init(&idx, v->seg_base, 4096);
    rv_err_clear();
    int rc = rv_idx_load(&idx, dir, log_size);
    if (rc < 0)
        vfy_problem(v, true, v->log_path, "index files do not load: %s", ctl_err_text(rc));
    rv_idx_fini(&idx);
}

/* Verify one segment: every batch, offsets, the tail, the indexes. */
static void vfy_segment(struct vfy *v, const char *dir, uint64_t base)
{
    char path[PATH_MAX];
    if (rv_idx_file_name(path, sizeof(path), dir, base, ".log") < 0)
        return;
    vfy_file_begin(v);
    v->segments++;
    v->log_path = path;
    v->seg_base = base;
    v->seg_batches = 0;
    v->seg_first = v->seg_last = v->seg_max_ts = -1;
    v->mark_count = 0;
    int fd;
    uint64_t size;
    int rc = ctl_open_read(path, &fd, &size);
    if (rc < 0) {
        vfy_problem(v, true, path, "cannot open: %s", rv_strerror(rc));
        return;
    }
    if (size > UINT32_MAX)
        vfy_problem(v, true, path, "%" PRIu64 " bytes: segments must stay under 4 GiB", size);
    uint64_t stop_pos = 0;
    rc = rv_seg_scan_file(fd, 0, CTL_BATCH_BYTES_MAX, vfy_seg_batch, v, &stop_pos);
    bool is_corrupt = vfy_log_end(v, fd, size, rc, stop_pos);
    (void)rv_sys_close(fd); /* read-only */
    if (v->seg_batches == 0 && v->has_next && base < v->next_offset) {
        vfy_problem(v, true, path,
                    "empty segment based at %" PRIu64 " overlaps offsets up to %" PRIu64
                    " held before it",
                    base, v->next_offset - 1);
    } else if (v->seg_batches == 0 && !is_corrupt) {
        /* An empty segment holds the offsets from its base on. */
        vfy_gap(v, "empty segment", (int64_t)base);
        if (!v->has_next || base > v->next_offset) {
            v->next_offset = base;
            v->next_base = base;
            v->is_next_empty = true;
            v->has_next = true;
        }
    }
    vfy_indexes(v, dir, size, stop_pos);
    vfy_file_end(v, path);
}

/* Files of a partition directory that do not belong there. */
static void vfy_stray_files(struct vfy *v, const char *dir)
{
    struct dirent **list = NULL;
    int n = ctl_scan_dir(dir, &list, alphasort);
    for (int i = 0; i < n; i++) {
        const char *name = list[i]->d_name;
        char path[PATH_MAX];
        uint64_t base;
        if (ctl_path(path, sizeof(path), dir, name) < 0)
            continue;
        vfy_file_begin(v);
        if (ctl_has_suffix(name, ".tmp")) {
            vfy_problem(v, false, path, "leftover temporary file");
        } else if (ctl_has_suffix(name, ".log.cleaned")) {
            vfy_problem(v, false, path,
                        "left by a compaction that did not commit; the next "
                        "open removes it");
        } else if (ctl_has_suffix(name, ".log.swap")) {
            vfy_problem(v, false, path,
                        "a committed compaction swap; the next open completes "
                        "it");
        } else if (ctl_parse_base_name(name, ".index", &base) ||
                   ctl_parse_base_name(name, ".timeindex", &base)) {
            char log[PATH_MAX];
            if (rv_idx_file_name(log, sizeof(log), dir, base, ".log") == 0 &&
                access(log, F_OK) != 0)
                vfy_problem(v, false, path, "index without a segment log");
        }
    }
    if (n >= 0)
        ctl_free_dir(list, n);
}

/* Whether offset gaps are expected in the partition at dir: its topic's
 * cleanup.policy (DATA/meta/topics/<topic>.topic) holds compact, or a compaction
 * ran there (its point file), before the policy changed. */
static void vfy_policy(struct vfy *v, const char *dir)
{
    struct rv_topic_config cfg;
    uint32_t id;
    char point[PATH_MAX];
    v->is_compacted = false;
    rv_err_clear();
    if (rv_topic_meta_load(v->data_dir, v->topic, &id, &cfg) < 0) {
        snprintf(v->policy, sizeof(v->policy), "no topic description: taken as not compacted");
    } else if (strstr(cfg.cleanup_policy, "compact") != NULL) {
        v->is_compacted = true;
    } else {
        snprintf(v->policy, sizeof(v->policy), "cleanup.policy=%s does not compact",
                 cfg.cleanup_policy);
    }
    if (ctl_path(point, sizeof(point), dir, RV_COMPACT_POINT_FILE) == 0 && access(point, F_OK) == 0)
        v->is_compacted = true;
}

/* ctl_part_fn of verify: every segment of one partition, then log-start. */
static void vfy_partition(void *arg, const char *topic, const char *partition, const char *dir)
{
    struct vfy *v = arg;
    v->partitions++;
    v->topic = topic;
    v->partition = partition;
    vfy_policy(v, dir);
    int64_t log_start = 0;
    int start_rc = ctl_read_log_start(dir, &log_start);
    v->log_start = start_rc == 0 ? log_start : 0;
    v->has_next = false;
    v->next_offset = 0;
    v->next_base = 0;
    v->is_next_empty = false;
    uint64_t *bases = NULL;
    uint32_t count = 0;
    vfy_file_begin(v);
    rv_err_clear();
    int rc = rv_seg_list(dir, &bases, &count);
    if (rc < 0) {
        vfy_problem(v, true, dir, "cannot list segments: %s", ctl_err_text(rc));
        return;
    }
    int64_t first_end = -1;
    for (uint32_t i = 0; i < count; i++) {
        vfy_segment(v, dir, bases[i]);
        if (i == 0)
            first_end = v->seg_last >= 0 ? v->seg_last + 1 : (int64_t)bases[0];
    }
    free(bases);
    vfy_stray_files(v, dir);
    vfy_file_begin(v);
    rc = start_rc;
    if (rc < 0 && rc != -ENOENT)
        vfy_problem(v, true, dir, "%s: %s", CTL_LOG_START_FILE,
                    rc == -EBADMSG ? "does not hold a log start offset" : rv_strerror(rc));
    else if (rc == 0 && v->has_next && (uint64_t)log_start > v->next_offset)
        vfy_problem(v, true, dir,
                    "%s %" PRId64 " is past the end of the log (its next offset is %" PRIu64 ")",
                    CTL_LOG_START_FILE, log_start, v->next_offset);
    else if (rc == 0 && first_end >= 0 && log_start > first_end)
        /* delete_records and retention write log-start before they remove the
         * segments below it, and delete_records leaves those not yet written
         * (or being compacted): retention removes them later. */
        vfy_problem(v, false, dir,
                    "%s %" PRId64
                    " is past the end of the first segment (its next offset is %" PRId64
                    "): segments wholly below the log start are left for retention to remove",
                    CTL_LOG_START_FILE, log_start, first_end);
}

/* State of the WAL files of one shard directory. */
struct vfy_wal {
    struct vfy *v;
    const char *path;
    uint64_t records;
};

/* ctl_wal_rec_fn of verify: count, check batch payloads and record types. */
static int vfy_wal_rec(void *arg, const struct ctl_wal_rec *rec)
{
    struct vfy_wal *w = arg;
    struct vfy *v = w->v;
    v->wal_records++;
    v->wal_bytes += RV_WAL_HEADER_BYTES + (uint64_t)rec->len;
    char why[CTL_WHY_BYTES];
    struct rv_batch_view b;
    if (rec->type == RV_WAL_BATCH && wal_check_batch(rec, &b, why, sizeof(why)) < 0)
        vfy_problem(v, true, w->path, "record at byte %" PRIu64 " (lsn %" PRIu64 "): %s", rec->pos,
                    rec->lsn, why);
    else if (rec->type != RV_WAL_BATCH && rec->type != RV_WAL_META && rec->type != RV_WAL_PAD)
        vfy_problem(v, false, w->path,
                    "record at byte %" PRIu64 " (lsn %" PRIu64 "): unknown type %u", rec->pos,
                    rec->lsn, rec->type);
    return 0;
}

/* Verify one WAL file; *end_lsn gets where its valid records end. next is the
 * next file's start (0 for the last file): a reused file (direct I/O) that was
 * rolled before it was full ends there in its old records, as replay expects. */
static void vfy_wal_file(struct vfy *v, const char *path, uint64_t start, uint64_t next,
                         uint64_t *end_lsn)
{
    vfy_file_begin(v);
    v->wal_files++;
    *end_lsn = start;
    int fd;
    uint64_t size;
    int rc = ctl_open_read(path, &fd, &size);
    if (rc < 0) {
        vfy_problem(v, true, path, "cannot open: %s", rv_strerror(rc));
        return;
    }
    struct vfy_wal w = {.v = v, .path = path};
    struct ctl_end end;
    wal_scan(fd, size, start, vfy_wal_rec, &w, &end);
    (void)rv_sys_close(fd); /* read-only */
    *end_lsn = start + end.pos;
    char text[CTL_WHY_BYTES + 128];
    char where[48];
    snprintf(where, sizeof(where), " (lsn %" PRIu64 ")", start + end.pos);
    wal_end_at_next(&end, start, next);
    ctl_end_text_at(&end, "record", where, text, sizeof(text));
    if (end.state == CTL_END_NEXT_FILE)
        (void)0; /* as replay expects: nothing to report */
    else if (ctl_end_is_corrupt(&end))
        vfy_problem(v, true, path, "%s", text);
    else if (end.why[0] != '\0')
        vfy_problem(v, false, path, "%s", text);
    vfy_file_end(v, path);
}

static int ctl_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Files of a shard WAL directory beside the WAL files: the preallocated spare,
 * released files kept for reuse, the checkpoint and its temporary file. */
static bool vfy_is_wal_aux(const char *name)
{
    return strcmp(name, CTL_WAL_SPARE_NAME) == 0 || strcmp(name, CTL_WAL_CKPT_FILE) == 0 ||
           strcmp(name, CTL_WAL_CKPT_TMP) == 0 ||
           ctl_has_prefix_suffix(name, CTL_WAL_FREE_PREFIX, ".wal.tmp");
}

/* The start LSNs of the WAL files in dir, sorted (free *out). Other files are
 * reported. Returns the count or -errno. */
static int vfy_wal_list(struct vfy *v, const char *dir, uint64_t **out)
{
    struct dirent **list = NULL;
    int n = ctl_scan_dir(dir, &list, alphasort);
    if (n < 0)
        return n;
    uint64_t *starts = malloc(((size_t)n + 1) * sizeof(*starts));
    int count = 0;
    for (int i = 0; starts != NULL && i < n; i++) {
        const char *name = list[i]->d_name;
        char path[PATH_MAX];
        if (ctl_parse_base_name(name, ".wal", &starts[count])) {
            count++;
        } else if (!vfy_is_wal_aux(name) && ctl_path(path, sizeof(path), dir, name) == 0) {
            vfy_file_begin(v);
            vfy_problem(v, false, path, "not a WAL file (ignored)");
        }
    }
    ctl_free_dir(list, n);
    if (starts == NULL)
        return -ENOMEM;
    qsort(starts, (size_t)count, sizeof(*starts), ctl_cmp_u64);
    *out = starts;
    return count;
}

/* The checkpoint of a shard WAL directory: the LSN replay starts from. Every
 * record from there on must still be in the WAL files (the WAL releases only
 * files wholly below it), so the first file may not start past it. */
static void vfy_wal_ckpt(struct vfy *v, const char *dir, const uint64_t *starts, int n)
{
    char path[PATH_MAX];
    if (ctl_path(path, sizeof(path), dir, CTL_WAL_CKPT_FILE) < 0)
        return;
    int64_t lsn = 0;
    int rc = ctl_read_number_file(dir, CTL_WAL_CKPT_FILE, &lsn);
    if (rc == -ENOENT)
        return; /* none yet: replay starts at the first file */
    vfy_file_begin(v);
    if (rc == -EBADMSG)
        vfy_problem(v, false, path, "does not hold an LSN (recovery replays every WAL file)");
    else if (rc < 0)
        vfy_problem(v, true, path, "cannot read: %s", rv_strerror(rc));
    else if (n > 0 && starts[0] > (uint64_t)lsn)
        vfy_problem(v, true, path,
                    "replay starts at lsn %" PRId64
                    ", but the first WAL file starts at lsn %" PRIu64
                    ": the records from lsn %" PRId64 " up to %" PRIu64 " are missing",
                    lsn, starts[0], lsn, starts[0]);
}

/* Verify the WAL files of one shard directory and the LSN continuity between them. */
static void vfy_wal_dir(struct vfy *v, const char *dir)
{
    uint64_t *starts = NULL;
    int n = vfy_wal_list(v, dir, &starts);
    if (n < 0) {
        vfy_file_begin(v);
        vfy_problem(v, true, dir, "cannot list: %s", rv_strerror(n));
        return;
    }
    vfy_wal_ckpt(v, dir, starts, n);
    uint64_t prev_end = 0;
    for (int i = 0; i < n; i++) {
        char name[CTL_WAL_NAME_DIGITS + 8];
        char path[PATH_MAX];
        snprintf(name, sizeof(name), "%020" PRIu64 ".wal", starts[i]);
        if (ctl_path(path, sizeof(path), dir, name) < 0)
            continue;
        if (i > 0 && prev_end != starts[i]) {
            vfy_file_begin(v);
            vfy_problem(v, true, path,
                        "starts at lsn %" PRIu64
                        ", but the previous file's records end at lsn %" PRIu64,
                        starts[i], prev_end);
        }
        vfy_wal_file(v, path, starts[i], i + 1 < n ? starts[i + 1] : 0, &prev_end);
    }
    free(starts);
}

/* Every DATA/wal/<shard>/ directory. */
static void vfy_wal(struct vfy *v, const char *data_dir)
{
    char wal[PATH_MAX];
    if (ctl_path(wal, sizeof(wal), data_dir, "wal") < 0)
        return;
    struct dirent **list = NULL;
    int n = ctl_scan_dir(wal, &list, alphasort);
    if (n == -ENOENT)
        return;
    if (n < 0) {
        vfy_file_begin(v);
        vfy_problem(v, true, wal, "cannot list: %s", rv_strerror(n));
        return;
    }
    for (int i = 0; i < n; i++) {
        char dir[PATH_MAX];
        if (ctl_path(dir, sizeof(dir), wal, list[i]->d_name) < 0)
            continue;
        if (ctl_is_dir(dir)) {
            vfy_wal_dir(v, dir);
        } else {
            vfy_file_begin(v);
            vfy_problem(v, false, dir, "not a shard WAL directory (ignored)");
        }
    }
    ctl_free_dir(list, n);
}

static void vfy_summary(struct vfy *v)
{
    struct ctl_out *o = v->o;
    ctl_obj_begin(o, "summary", "summary");
    ctl_u64(o, "topics", v->topics);
    ctl_u64(o, "partitions", v->partitions);
    ctl_u64(o, "segments", v->segments);
    ctl_u64(o, "batches", v->batches);
    ctl_u64(o, "records", v->records);
    ctl_u64(o, "bytes", v->bytes);
    ctl_u64(o, "wal_files", v->wal_files);
    ctl_u64(o, "wal_records", v->wal_records);
    ctl_u64(o, "wal_bytes", v->wal_bytes);
    ctl_u64(o, "errors", v->errors);
    ctl_u64(o, "warnings", v->warnings);
    ctl_obj_end(o);
    if (o->is_json)
        ctl_bool(o, "ok", v->errors == 0);
    else if (v->errors == 0)
        printf("OK: no errors, %" PRIu64 " warnings\n", v->warnings);
    else
        printf("FAILED: %" PRIu64 " errors, %" PRIu64 " warnings\n", v->errors, v->warnings);
}

/* `rivvenctl verify DATA_DIR`. */
static int vfy_run(const char *data_dir, bool is_json)
{
    if (!ctl_is_dir(data_dir)) {
        fprintf(stderr, "rivvenctl verify: %s: not a directory\n", data_dir);
        return CTL_EXIT_CORRUPT;
    }
    struct ctl_out o = {.is_json = is_json};
    struct vfy v = {.o = &o, .data_dir = data_dir};
    ctl_doc_begin(&o);
    if (is_json) {
        ctl_str(&o, "data_dir", data_dir);
        ctl_arr_begin(&o, "problems");
    }
    v.topics = ctl_walk_partitions(data_dir, vfy_partition, vfy_walk_problem, &v);
    vfy_wal(&v, data_dir);
    if (is_json)
        ctl_arr_end(&o);
    vfy_summary(&v);
    ctl_doc_end(&o);
    free(v.marks);
    ctl_buf_fini(&v.plain);
    return v.errors == 0 ? CTL_EXIT_OK : CTL_EXIT_CORRUPT;
}

/* ---- topics ---------------------------------------------------------------------------- */

struct topics_part {
    uint32_t segments;
    uint64_t size_bytes;
    int64_t first; /* -1: none */
    int64_t last;  /* -1: none */
    bool is_first_pass;
};

struct topics {
    struct ctl_out *o;
    uint64_t partitions;
};

/* rv_seg_batch_fn of topics: the first batch (then stop), or the last one. */
static int topics_batch(void *arg, const struct rv_batch_view *b, uint64_t pos)
{
    struct topics_part *p = arg;
    if (p->is_first_pass) {
        p->first = b->base_offset;
        return 1;
    }
    p->last = rv_batch_last_offset(b);
    (void)pos;
    return 0;
}

/* Scan a segment: the first batch (first pass) or, from its last index entry, the
 * last valid batch. */
static void topics_scan_segment(const char *dir, uint64_t base, struct topics_part *p)
{
    char path[PATH_MAX];
    int fd;
    uint64_t size;
    if (rv_idx_file_name(path, sizeof(path), dir, base, ".log") < 0 ||
        ctl_open_read(path, &fd, &size) < 0)
        return;
    uint64_t from = 0;
    struct ctl_ifile f;
    char ipath[PATH_MAX];
    if (!p->is_first_pass && rv_idx_file_name(ipath, sizeof(ipath), dir, base, ".index") == 0 &&
        ctl_ifile_read(ipath, false, &f) == 0) {
        if (f.count > 0 && f.entries[f.count - 1].pos < size)
            from = f.entries[f.count - 1].pos;
        free(f.entries);
    }
    uint64_t stop = 0;
    int64_t last_before = p->last;
    int rc = rv_seg_scan_file(fd, from, CTL_BATCH_BYTES_MAX, topics_batch, p, &stop);
    if (rc < 0 && from > 0 && stop == from && p->last == last_before) {
        /* The index named no valid batch: scan it all; a bad tail just ends it. */
        rc = rv_seg_scan_file(fd, 0, CTL_BATCH_BYTES_MAX, topics_batch, p, &stop);
        (void)rc;
    }
    (void)rv_sys_close(fd); /* read-only */
}

static void topics_measure(const char *dir, const uint64_t *bases, uint32_t count,
                           struct topics_part *p)
{
    for (uint32_t i = 0; i < count; i++) {
        char path[PATH_MAX];
        struct stat st;
        if (rv_idx_file_name(path, sizeof(path), dir, bases[i], ".log") == 0 &&
            stat(path, &st) == 0)
            p->size_bytes += (uint64_t)st.st_size;
    }
    p->is_first_pass = true;
    for (uint32_t i = 0; i < count && p->first < 0; i++)
        topics_scan_segment(dir, bases[i], p);
    p->is_first_pass = false;
    for (uint32_t i = count; i > 0 && p->last < 0; i--)
        topics_scan_segment(dir, bases[i - 1], p);
}

/* An offset, or null when it is -1 (unknown). */
static void topics_offset(struct ctl_out *o, const char *name, int64_t v)
{
    if (v >= 0)
        ctl_i64(o, name, v);
    else
        ctl_null(o, name);
}

/* ctl_part_fn of topics: one line (or object) per partition. */
static void topics_partition(void *arg, const char *topic, const char *partition, const char *dir)
{
    struct topics *t = arg;
    struct ctl_out *o = t->o;
    struct topics_part p = {.first = -1, .last = -1};
    uint64_t *bases = NULL;
    int rc = rv_seg_list(dir, &bases, &p.segments);
    if (rc < 0)
        p.segments = 0;
    topics_measure(dir, bases, p.segments, &p);
    free(bases);
    int64_t log_start = -1;
    if (ctl_read_log_start(dir, &log_start) < 0)
        log_start = -1;
    t->partitions++;
    if (!o->is_json) {
        char first[24] = "-";
        char last[24] = "-";
        char start[24] = "-";
        if (p.first >= 0)
            snprintf(first, sizeof(first), "%" PRId64, p.first);
        if (p.last >= 0)
            snprintf(last, sizeof(last), "%" PRId64, p.last);
        if (log_start >= 0)
            snprintf(start, sizeof(start), "%" PRId64, log_start);
        printf("%-24s %9s %10s %12s %12s %8" PRIu32 " %14" PRIu64 "\n", topic, partition, start,
               first, last, p.segments, p.size_bytes);
        return;
    }
    ctl_obj_begin(o, NULL, NULL);
    ctl_str(o, "topic", topic);
    ctl_u64(o, "partition", strtoull(partition, NULL, 10));
    topics_offset(o, "log_start", log_start);
    topics_offset(o, "first_offset", p.first);
    topics_offset(o, "last_offset", p.last);
    ctl_u64(o, "segments", p.segments);
    ctl_u64(o, "size_bytes", p.size_bytes);
    ctl_obj_end(o);
}

static void topics_problem(void *arg, bool is_error, const char *path, const char *msg)
{
    (void)arg;
    fprintf(stderr, "%s %s: %s\n", is_error ? "ERROR" : "WARN", path, msg);
}

/* `rivvenctl topics DATA_DIR`. */
static int topics_run(const char *data_dir, bool is_json)
{
    if (!ctl_is_dir(data_dir)) {
        fprintf(stderr, "rivvenctl topics: %s: not a directory\n", data_dir);
        return CTL_EXIT_CORRUPT;
    }
    struct ctl_out o = {.is_json = is_json};
    struct topics t = {.o = &o};
    ctl_doc_begin(&o);
    if (is_json)
        ctl_arr_begin(&o, "partitions");
    else
        printf("%-24s %9s %10s %12s %12s %8s %14s\n", "TOPIC", "PARTITION", "LOG_START", "FIRST",
               "LAST", "SEGMENTS", "SIZE_BYTES");
    uint64_t topic_count = ctl_walk_partitions(data_dir, topics_partition, topics_problem, &t);
    if (is_json) {
        ctl_arr_end(&o);
        ctl_u64(&o, "topics", topic_count);
    }
    ctl_doc_end(&o);
    return CTL_EXIT_OK;
}

/* ---- make-fixture ---------------------------------------------------------------------- */

#define FIX_TOPIC          "orders"
#define FIX_TOPIC_ID       1u
#define FIX_TS_BASE        1700000000000LL
#define FIX_INDEX_INTERVAL 256u
#define FIX_WAL_PAD_BYTES  4096u
#define FIX_BATCH_BYTES    (64u << 10)
#define FIX_PRODUCER_ID    4242

/* One batch of the fixture: is_roll starts a new segment at it. */
struct fix_batch {
    bool is_roll;
    uint8_t count;
    uint8_t codec; /* enum rv_codec */
};

static const struct fix_batch fix_part0[] = {
    {true, 3, RV_CODEC_NONE},  {false, 3, RV_CODEC_NONE}, {false, 3, RV_CODEC_NONE},
    {false, 3, RV_CODEC_NONE}, {true, 6, RV_CODEC_NONE},  {false, 6, RV_CODEC_NONE},
    {false, 6, RV_CODEC_NONE}, {true, 3, RV_CODEC_NONE},  {false, 3, RV_CODEC_NONE},
};

static const struct fix_batch fix_part1[] = {
    {true, 5, RV_CODEC_NONE}, {false, 5, RV_CODEC_GZIP},  {false, 5, RV_CODEC_ZSTD},
    {false, 5, RV_CODEC_LZ4}, {true, 5, RV_CODEC_SNAPPY}, {false, 5, RV_CODEC_NONE},
};

/* The WAL being built: records of the current file, in memory. */
struct fix_wal {
    char dir[PATH_MAX];
    uint64_t start; /* LSN of the current file's first byte */
    uint8_t *buf;
    size_t len;
    size_t cap;
};

/* The segment being written. */
struct fix_seg {
    char dir[PATH_MAX];
    int fd; /* -1: none open */
    uint64_t pos;
    struct rv_idx idx;
};

/* Write len bytes of data to a new file at path, then zeros up to total bytes. */
static int fix_write_file(const char *path, const void *data, size_t len, uint64_t total)
{
    int fd = rv_sys_open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return fd;
    int rc = 0;
    size_t done = 0;
    while (rc == 0 && done < len) {
        ssize_t n = rv_sys_write(fd, (const uint8_t *)data + done, len - done);
        rc = n < 0 ? (int)n : 0;
        done += n > 0 ? (size_t)n : 0;
    }
    if (rc == 0 && total > len)
        rc = rv_sys_ftruncate(fd, (off_t)total);
    int crc = rv_sys_close(fd);
    return rc < 0 ? rc : crc;
}

/* Append one record, encoded as storage/wal.h says, to the current WAL file. */
static int fix_wal_add(struct fix_wal *w, uint8_t type, uint64_t key, const void *payload,
                       uint32_t len)
{
    size_t need = w->len + RV_WAL_HEADER_BYTES + len;
    if (need > w->cap) {
        size_t cap = need * 2;
        uint8_t *p = realloc(w->buf, cap);
        if (p == NULL)
            return -ENOMEM;
        w->buf = p;
        w->cap = cap;
    }
    uint8_t *h = w->buf + w->len;
    ctl_put_le32(h + 4, len);
    h[8] = type;
    h[9] = h[10] = h[11] = 0;
    ctl_put_le64(h + 12, w->start + w->len);
    ctl_put_le64(h + 20, key);
    memcpy(h + RV_WAL_HEADER_BYTES, payload, len);
    ctl_put_le32(h, rv_crc32c(0, h + 4, RV_WAL_HEADER_BYTES - 4 + (size_t)len));
    w->len = need;
    return 0;
}

/* Write the current WAL file (preallocated: zeros after the records) and start the
 * next one where it ends. */
static int fix_wal_flush(struct fix_wal *w)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/%020" PRIu64 ".wal", w->dir, w->start);
    if (n < 0 || (size_t)n >= sizeof(path))
        return -ENAMETOOLONG;
    int rc = fix_write_file(path, w->buf, w->len, w->len + FIX_WAL_PAD_BYTES);
    w->start += w->len;
    w->len = 0;
    return rc;
}

/* Add the record at `offset` of partition p: text keys and values, a binary key with a
 * null value, headers, a value that needs escaping. */
static int fix_add_record(struct rv_batch_builder *b, uint32_t p, int64_t offset)
{
    static const struct rv_batch_record_header hdrs[2] = {
        {(const uint8_t *)"trace", 5, (const uint8_t *)"abc", 3},
        {(const uint8_t *)"empty", 5, NULL, -1},
    };
    int64_t ts = FIX_TS_BASE + offset * 10;
    if (offset % 7 == 3) {
        uint8_t bin[3] = {0x00, 0xff, (uint8_t)offset};
        return rv_batch_builder_add(b, ts, bin, 3, NULL, -1, NULL, 0);
    }
    char key[32];
    char value[96];
    int klen = snprintf(key, sizeof(key), "key-%" PRId64, offset);
    int vlen;
    if (offset % 11 == 2)
        vlen = snprintf(value, sizeof(value), "line one\n\"quoted\"\ttab caf\xc3\xa9 %" PRId64,
                        offset);
    else
        vlen = snprintf(value, sizeof(value), "value %" PRId64 " of partition %" PRIu32, offset, p);
    bool has_hdrs = offset % 5 == 1;
    return rv_batch_builder_add(b, ts, key, klen, value, vlen, has_hdrs ? hdrs : NULL,
                                has_hdrs ? 2 : 0);
}

/* Build one batch of partition p at `base` into out[0..cap). */
static int fix_build_batch(uint32_t p, int64_t base, const struct fix_batch *spec, uint8_t *out,
                           size_t cap, size_t *out_len)
{
    static uint8_t plain[FIX_BATCH_BYTES];
    struct rv_batch_params params = {
        .base_offset = base,
        .base_timestamp = RV_BATCH_NO_TIMESTAMP,
        .producer_id = p == 1 ? FIX_PRODUCER_ID : RV_BATCH_NO_PRODUCER_ID,
        .producer_epoch = (int16_t)(p == 1 ? 1 : -1),
        .base_sequence = p == 1 ? (int32_t)base : RV_BATCH_NO_SEQUENCE,
    };
    struct rv_batch_builder b;
    int rc = rv_batch_builder_init(&b, plain, sizeof(plain), &params);
    for (int64_t i = 0; rc == 0 && i < spec->count; i++)
        rc = fix_add_record(&b, p, base + i);
    if (rc < 0)
        return rc;
    enum rv_codec codec = (enum rv_codec)spec->codec;
    if (codec != RV_CODEC_NONE)
        return rv_batch_builder_finish_compressed(&b, codec, rv_codec_default_level(codec), out,
                                                  cap, out_len);
    rc = rv_batch_builder_finish(&b, out_len);
    if (rc == 0 && *out_len > cap)
        rc = -ENOSPC;
    if (rc == 0)
        memcpy(out, plain, *out_len);
    return rc;
}

/* Finish the open segment: close the log, save its indexes. */
static int fix_seg_close(struct fix_seg *s)
{
    if (s->fd < 0)
        return 0;
    int rc = rv_sys_close(s->fd);
    s->fd = -1;
    if (rc == 0)
        rc = rv_idx_save(&s->idx, s->dir);
    rv_idx_fini(&s->idx);
    return rc;
}

static int fix_seg_open(struct fix_seg *s, uint64_t base)
{
    char path[PATH_MAX];
    int rc = rv_idx_file_name(path, sizeof(path), s->dir, base, ".log");
    if (rc < 0)
        return rc;
    s->fd = rv_sys_open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (s->fd < 0)
        return s->fd;
    s->pos = 0;
    rv_idx_init(&s->idx, base, FIX_INDEX_INTERVAL);
    return 0;
}

/* Append one batch to the open segment and index it. */
static int fix_seg_append(struct fix_seg *s, const struct rv_batch_view *v)
{
    ssize_t n = rv_sys_pwrite(s->fd, v->bytes, v->size_bytes, (off_t)s->pos);
    if (n < 0)
        return (int)n;
    if ((size_t)n != v->size_bytes)
        return -EIO;
    int rc = rv_idx_note_batch(&s->idx, (uint64_t)v->base_offset, (uint32_t)s->pos,
                               (uint32_t)v->size_bytes, v->max_timestamp);
    s->pos += v->size_bytes;
    return rc;
}

/* Write the segments of partition p (and log WAL records for its batches). */
static int fix_partition(const char *root, uint32_t p, const struct fix_batch *specs,
                         uint32_t count, struct fix_wal *w)
{
    static uint8_t batch[FIX_BATCH_BYTES];
    struct fix_seg s = {.fd = -1};
    int n = snprintf(s.dir, sizeof(s.dir), "%s/topics/" FIX_TOPIC "/%" PRIu32, root, p);
    if (n < 0 || (size_t)n >= sizeof(s.dir))
        return -ENAMETOOLONG;
    int rc = rv_sys_mkdir_p(s.dir, 0755);
    char path[PATH_MAX];
    const char *log_start = p == 0 ? "0\n" : "3\n";
    if (rc == 0)
        rc = ctl_path(path, sizeof(path), s.dir, CTL_LOG_START_FILE);
    if (rc == 0)
        rc = fix_write_file(path, log_start, strlen(log_start), 0);
    int64_t next = 0;
    for (uint32_t i = 0; rc == 0 && i < count; i++) {
        if (specs[i].is_roll) {
            rc = fix_seg_close(&s);
            if (rc == 0)
                rc = fix_seg_open(&s, (uint64_t)next);
        }
        size_t len = 0;
        struct rv_batch_view v;
        if (rc == 0)
            rc = fix_build_batch(p, next, &specs[i], batch, sizeof(batch), &len);
        if (rc == 0 && rv_batch_parse(batch, len, FIX_BATCH_BYTES, &v) != (int)len)
            rc = -EBADMSG;
        if (rc == 0)
            rc = fix_seg_append(&s, &v);
        if (rc == 0)
            rc = fix_wal_add(w, RV_WAL_BATCH, (uint64_t)FIX_TOPIC_ID << 32 | p, batch,
                             (uint32_t)len);
        next += specs[i].count;
    }
    int crc = fix_seg_close(&s);
    return rc < 0 ? rc : crc;
}

/* `rivvenctl make-fixture DIR`: two partitions of topic "orders" with a few segments
 * (plain and compressed batches) and indexes, the topic's description, and two WAL
 * files of shard 0. */
static int fix_run(const char *root)
{
    static const char meta[] = "create topic " FIX_TOPIC " id 1 partitions 2";
    struct fix_wal w = {0};
    int n = snprintf(w.dir, sizeof(w.dir), "%s/wal/shard-0", root);
    int rc = n < 0 || (size_t)n >= sizeof(w.dir) ? -ENAMETOOLONG : 0;
    if (rc == 0)
        rc = rv_sys_mkdir_p(w.dir, 0755);
    struct rv_topic_config cfg;
    rv_topic_config_init(&cfg);
    cfg.partitions = 2;
    if (rc == 0)
        rc = rv_topic_meta_save(root, FIX_TOPIC, FIX_TOPIC_ID, &cfg);
    if (rc == 0)
        rc = fix_wal_add(&w, RV_WAL_META, 0, meta, (uint32_t)strlen(meta));
    if (rc == 0)
        rc = fix_partition(root, 0, fix_part0, CTL_ARRAY_SIZE(fix_part0), &w);
    if (rc == 0)
        rc = fix_wal_flush(&w);
    if (rc == 0)
        rc = fix_partition(root, 1, fix_part1, CTL_ARRAY_SIZE(fix_part1), &w);
    if (rc == 0)
        rc = fix_wal_flush(&w);
    char spare[PATH_MAX];
    if (rc == 0)
        rc = ctl_path(spare, sizeof(spare), w.dir, CTL_WAL_SPARE_NAME);
    if (rc == 0)
        rc = fix_write_file(spare, "", 0, FIX_WAL_PAD_BYTES);
    free(w.buf);
    if (rc < 0) {
        fprintf(stderr, "rivvenctl make-fixture: %s: %s (%s)\n", root, rv_strerror(rc),
                rv_err_msg());
        return CTL_EXIT_CORRUPT;
    }
    printf("fixture written to %s\n", root);
    return CTL_EXIT_OK;
}

/* ---- command line ---------------------------------------------------------------------- */

static const char ctl_usage[] =
    "usage: rivvenctl COMMAND [ARGS]\n"
    "\n"
    "Inspect and check a rivven data directory offline (read-only).\n"
    "\n"
    "commands:\n"
    "  dump FILE [--json] [--records]  print a .log, .index, .timeindex or .wal file\n"
    "  verify DATA_DIR [--json]        check every segment, index and WAL file\n"
    "  topics DATA_DIR [--json]        list topics and partitions found on disk\n"
    "  make-fixture DIR                write a small valid data directory (for tests)\n"
    "\n"
    "`rivvenctl COMMAND --help` describes a command.\n"
    "Exit status: 0 clean, 1 corruption or I/O errors, 2 usage errors.\n";

static const char ctl_usage_dump[] =
    "usage: rivvenctl dump FILE [--json] [--records]\n"
    "\n"
    "Print every item of one file; the format follows the name:\n"
    "  .log        batches: position, offsets, count, size, codec, timestamps, producer,\n"
    "              CRC; with --records every record (compressed batches are decompressed\n"
    "              into a buffer bounded at 256 MiB): offset, timestamp, key, value,\n"
    "              headers (text when printable, else <name>_hex)\n"
    "  .index      offset index entries (relative offset, offset, log position)\n"
    "  .timeindex  time index entries (timestamp, relative offset, offset)\n"
    "  .wal        WAL records: lsn, type, key (topic id = key >> 32, partition = low\n"
    "              32 bits), length, CRC, and a summary of each batch payload\n"
    "Stops at the first invalid item with a line saying where and why.\n"
    "\n"
    "  --json     one JSON document: {\"file\", \"entries\": [...], \"end\", \"summary\"}\n"
    "  --records  (.log) print the records of each batch too\n"
    "\n"
    "Exit status: 0 valid (a zero tail is clean), 1 corruption, 2 usage errors.\n";

static const char ctl_usage_verify[] =
    "usage: rivvenctl verify DATA_DIR [--json]\n"
    "\n"
    "Check DATA_DIR/topics/<topic>/<partition>/: every batch's CRC and records, offsets\n"
    "increasing across segments (overlaps are errors), the .index and .timeindex\n"
    "against the log, log-start within the log; offsets contiguous from\n"
    "log-start on (a missing range is an error, naming it, unless the topic's\n"
    "cleanup.policy in DATA_DIR/meta/topics compacts); and every DATA_DIR/wal/<shard>/:\n"
    "*.wal record CRCs, batch payloads, LSN continuity from the checkpoint on.\n"
    "Problems print as `ERROR <path>: <message>` or `WARN <path>: <message>`, then a\n"
    "summary.\n"
    "\n"
    "  --json  one JSON document: {\"data_dir\", \"problems\": [...], \"summary\", \"ok\"}\n"
    "\n"
    "Exit status: 0 no errors (warnings allowed), 1 errors, 2 usage errors.\n";

static const char ctl_usage_topics[] =
    "usage: rivvenctl topics DATA_DIR [--json]\n"
    "\n"
    "List the topics and partitions under DATA_DIR/topics with log start, first and last\n"
    "offset, segment count and bytes, read from the files.\n"
    "\n"
    "  --json  one JSON document: {\"partitions\": [...], \"topics\"}\n";

static const char ctl_usage_fixture[] =
    "usage: rivvenctl make-fixture DIR\n"
    "\n"
    "For tests: write a small valid data directory to DIR: topic \"orders\" with two\n"
    "partitions of a few segments each (plain, gzip, zstd, lz4 and snappy batches) with\n"
    "their indexes and log-start files, its description in meta/topics (default\n"
    "settings: cleanup.policy=delete), and two WAL files of shard 0.\n";

/* Options of one command. */
struct ctl_args {
    const char *path;
    bool is_json;
    bool has_records;
};

/* Parse the arguments after the command. Returns -1 to go on, or an exit status. */
static int ctl_parse_args(int argc, char **argv, const char *usage, bool allows_json,
                          bool allows_records, struct ctl_args *out)
{
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            return CTL_EXIT_OK;
        } else if (allows_json && strcmp(a, "--json") == 0) {
            out->is_json = true;
        } else if (allows_records && strcmp(a, "--records") == 0) {
            out->has_records = true;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "rivvenctl %s: unknown option %s (see --help)\n", argv[1], a);
            return CTL_EXIT_USAGE;
        } else if (out->path != NULL) {
            fprintf(stderr, "rivvenctl %s: unexpected argument %s (see --help)\n", argv[1], a);
            return CTL_EXIT_USAGE;
        } else {
            out->path = a;
        }
    }
    if (out->path == NULL) {
        fprintf(stderr, "rivvenctl %s: missing argument (see --help)\n", argv[1]);
        return CTL_EXIT_USAGE;
    }
    return -1;
}

int main(int argc, char **argv)
{
    static char out_buf[1 << 16];
    setvbuf(stdout, out_buf, _IOFBF, sizeof(out_buf));
    if (argc < 2) {
        fputs(ctl_usage, stderr);
        return CTL_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(ctl_usage, stdout);
        return CTL_EXIT_OK;
    }
    struct ctl_args a = {0};
    int status;
    if (strcmp(cmd, "dump") == 0) {
        status = ctl_parse_args(argc, argv, ctl_usage_dump, true, true, &a);
        status = status >= 0 ? status : dump_run(a.path, a.is_json, a.has_records);
    } else if (strcmp(cmd, "verify") == 0) {
        status = ctl_parse_args(argc, argv, ctl_usage_verify, true, false, &a);
        status = status >= 0 ? status : vfy_run(a.path, a.is_json);
    } else if (strcmp(cmd, "topics") == 0) {
        status = ctl_parse_args(argc, argv, ctl_usage_topics, true, false, &a);
        status = status >= 0 ? status : topics_run(a.path, a.is_json);
    } else if (strcmp(cmd, "make-fixture") == 0) {
        status = ctl_parse_args(argc, argv, ctl_usage_fixture, false, false, &a);
        status = status >= 0 ? status : fix_run(a.path);
    } else {
        fprintf(stderr, "rivvenctl: unknown command %s (see rivvenctl --help)\n", cmd);
        status = CTL_EXIT_USAGE;
    }
    fflush(stdout);
    return status;
}
