/*
 * storage/wal.c - the shard WAL with group commit (see wal.h for the format
 * and the rules).
 *
 * Group life:
 *
 *   FREE -> OPEN (collecting appends) -> WRITING (gather write in the ring)
 *        -> SYNCING (fdatasync, if any append asked) -> FREE (callbacks ran)
 *
 * Groups go to the disk strictly one after another, in LSN order: the next
 * group is written only when the previous one finished, which is what makes
 * later groups larger under load (natural group commit). Rolling to a new
 * file sits between two groups: sync the old file, rename the spare, go on.
 */
#include "storage/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/crc32c.h"
#include "core/err.h"
#include "core/sys.h"
#include "core/trace.h"
#include "rivven.h"

#define WAL_SPARE_NAME "spare.wal.tmp"
/* A released file kept for reuse (direct I/O): "free-<its old start lsn>.wal.tmp". */
#define WAL_FREE_PREFIX "free-"
#define WAL_FREE_SUFFIX ".wal.tmp"
#define WAL_READ_CHUNK  (4u << 20) /* replay reads: large, sequential (readahead asked for) */

enum wal_group_state {
    WAL_GROUP_FREE = 0,
    WAL_GROUP_OPEN,
    WAL_GROUP_WRITING, /* its write is in flight */
    WAL_GROUP_WRITTEN, /* its write completed (write_err says how) */
    WAL_GROUP_SYNCING, /* the head, waiting for the fdatasync that covers it */
};

struct wal_waiter {
    rv_wal_done_fn *done;
    void *arg;
    uint64_t lsn;
};

struct wal_group {
    uint8_t state; /* enum wal_group_state */
    bool needs_sync;
    bool is_sealed;     /* direct I/O: padded to a boundary, takes no more appends */
    uint32_t count;     /* records */
    uint32_t iov_count; /* iov entries used: a header each, a payload each if any */
    uint64_t bytes;     /* record bytes, headers included */
    uint64_t lsn;       /* LSN of the first record */
    uint64_t sync_start_ns;
    int write_err; /* WRITTEN: 0, or why the write failed */
    struct rv_wal *wal;
    uint8_t headers[RV_WAL_GROUP_RECORDS][RV_WAL_HEADER_BYTES];
    struct iovec iov[2 * RV_WAL_GROUP_RECORDS];
    struct wal_waiter waiters[RV_WAL_GROUP_RECORDS];
    uint8_t *stage;     /* direct I/O: the group's bytes, RV_WAL_DIRECT_ALIGN-aligned */
    uint64_t stage_cap; /* its size */
};

enum wal_spare_state {
    WAL_SPARE_MISSING = 0,
    WAL_SPARE_CREATING,
    WAL_SPARE_READY,
};

struct wal_job;

struct rv_wal {
    struct rv_wal_config cfg;
    char *dir;
    int fd;                /* current file */
    uint64_t file_start;   /* its start LSN */
    uint64_t end_lsn;      /* next LSN to assign (runs ahead of what is written) */
    uint64_t write_lsn;    /* everything below is written */
    uint64_t durable_lsn;  /* everything below is synced */
    uint64_t complete_lsn; /* everything below completed (callbacks ran) */
    int spare_fd;          /* the preallocated next file, or -1 */
    uint8_t spare_state;   /* enum wal_spare_state */
    bool is_rolling;       /* between two groups, switching files */
    bool is_failed;        /* a failed fdatasync: sticky */
    bool is_flush_queued;  /* a flush task is queued on the shard */
    bool is_direct;        /* O_DIRECT writes from the groups' staging buffers */
    bool is_syncing;       /* an fdatasync is in flight (for the head group) */
    bool is_repairing;     /* zeros going over a failed write's bytes */
    uint32_t writes_max;   /* group writes in flight at once (1 buffered) */
    uint32_t writes_inflight;
    int write_err;       /* a write failed: no more until it is settled */
    uint64_t sync_end;   /* what the fdatasync in flight covers */
    uint64_t issued_end; /* end of the furthest group write issued */
    void *repair_zeros;  /* the zeros being written, and how many */
    uint64_t repair_len;
    uint32_t align_phase;         /* direct: every group starts at this LSN mod the alignment */
    struct wal_job *roll_waiting; /* a roll waiting for the spare being created */
    uint32_t jobs;                /* rv_offload jobs in flight (they use this struct) */
    struct wal_group *groups;     /* [RV_WAL_GROUPS], used as a ring */
    uint32_t group_head;          /* oldest group not FREE */
    uint32_t group_count;         /* groups not FREE */
    uint64_t *files;              /* start LSNs of the files on disk, ascending; last: current */
    uint32_t file_count;
    uint32_t file_cap;
    uint64_t *free_ids; /* released files kept for reuse as spares (their old start LSNs) */
    uint32_t free_count;
    uint32_t free_pending; /* being renamed to free names by a release job */
    struct rv_wal_stats stats;
};

/* ---- encoding ------------------------------------------------------------------- */

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static void wal_encode_header(uint8_t *h, uint8_t type, uint64_t lsn, uint64_t key,
                              const void *payload, uint32_t len)
{
    put_u32(h + 4, len);
    h[8] = type;
    h[9] = 0;
    h[10] = h[11] = 0;
    put_u64(h + 12, lsn);
    put_u64(h + 20, key);
    uint32_t crc = rv_crc32c(0, h + 4, RV_WAL_HEADER_BYTES - 4);
    put_u32(h, rv_crc32c(crc, payload, len));
}

static int wal_file_path(char *out, size_t len, const char *dir, uint64_t start)
{
    int n = snprintf(out, len, "%s/%020llu.wal", dir, (unsigned long long)start);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* ---- the file list ---------------------------------------------------------------- */

static int wal_files_push(struct rv_wal *w, uint64_t start)
{
    if (w->file_count == w->file_cap) {
        uint32_t cap = w->file_cap ? w->file_cap * 2 : 16;
        uint64_t *f = realloc(w->files, cap * sizeof(*f));
        if (f == NULL)
            return -ENOMEM;
        w->files = f;
        w->file_cap = cap;
    }
    w->files[w->file_count++] = start;
    return 0;
}

static int wal_free_path(char *out, size_t len, const char *dir, uint64_t id)
{
    int n = snprintf(out, len, "%s/" WAL_FREE_PREFIX "%020llu" WAL_FREE_SUFFIX, dir,
                     (unsigned long long)id);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int wal_free_push(struct rv_wal *w, uint64_t id)
{
    if (w->free_ids == NULL &&
        (w->free_ids = malloc(RV_WAL_RECYCLE_MAX * sizeof(uint64_t))) == NULL)
        return -ENOMEM;
    if (w->free_count >= RV_WAL_RECYCLE_MAX)
        return -ENOSPC;
    w->free_ids[w->free_count++] = id;
    return 0;
}

/* Parse "free-<20 digits>.wal.tmp"; false for other names. */
static bool wal_parse_free_name(const char *name, uint64_t *id)
{
    size_t pre = strlen(WAL_FREE_PREFIX), suf = strlen(WAL_FREE_SUFFIX);
    if (strlen(name) != pre + 20 + suf || strncmp(name, WAL_FREE_PREFIX, pre) != 0 ||
        strcmp(name + pre + 20, WAL_FREE_SUFFIX) != 0)
        return false;
    uint64_t v = 0;
    for (size_t i = pre; i < pre + 20; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *id = v;
    return true;
}

static int wal_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Parse "<20 digits>.wal"; false for other names. */
static bool wal_parse_name(const char *name, uint64_t *start)
{
    size_t n = strlen(name);
    if (n != 24 || strcmp(name + 20, ".wal") != 0)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *start = v;
    return true;
}

/* fsync the WAL's directory after a create, rename or unlink in it. */
static int wal_sync_dir(const struct rv_wal *w)
{
    int rc = rv_sys_fsync_dir(w->dir);
    return rc < 0 ? rv_errf(rc, "wal %s: sync the directory", w->dir) : 0;
}

static int wal_list(struct rv_wal *w)
{
    DIR *d = opendir(w->dir);
    if (d == NULL)
        return rv_errf(-errno, "wal %s: opendir", w->dir);
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        uint64_t start;
        if (wal_parse_name(de->d_name, &start)) {
            rc = wal_files_push(w, start);
        } else if (wal_parse_free_name(de->d_name, &start)) {
            rc = wal_free_push(w, start); /* checked once the I/O mode is known */
            if (rc == -ENOSPC) {
                char path[PATH_MAX];
                rc = wal_free_path(path, sizeof(path), w->dir, start);
                if (rc == 0 && (rc = rv_sys_unlink(path)) < 0) /* more than are kept: not needed */
                    rc = rv_errf(rc, "wal %s: remove", path);
            }
        }
    }
    closedir(d);
    if (rc == 0 && w->file_count > 1)
        qsort(w->files, w->file_count, sizeof(*w->files), wal_cmp_u64);
    return rc;
}

/* ---- replay (blocking, at open) ------------------------------------------------------ */

struct wal_reader {
    int fd;
    const char *path; /* of fd, for messages */
    uint64_t file_size;
    uint8_t *buf;     /* WAL_READ_CHUNK bytes */
    uint64_t buf_pos; /* file position of buf[0] */
    uint32_t buf_len; /* valid bytes in buf */
    uint8_t *big;     /* for records larger than a chunk */
};

/* Make [pos, pos + len) available; returns a pointer, or NULL on a read error
 * (*err set) or when the range passes the end of the file (*err 0). */
static const uint8_t *wal_reader_get(struct wal_reader *r, uint64_t pos, uint32_t len, int *err)
{
    *err = 0;
    if (pos + len > r->file_size)
        return NULL;
    if (pos >= r->buf_pos && pos + len <= r->buf_pos + r->buf_len)
        return r->buf + (pos - r->buf_pos);
    uint8_t *dst = r->buf;
    uint32_t want = WAL_READ_CHUNK;
    if (len > WAL_READ_CHUNK) {
        free(r->big);
        r->big = malloc(len);
        if (r->big == NULL) {
            *err = -ENOMEM;
            return NULL;
        }
        dst = r->big;
        want = len;
    } else if (r->file_size - pos < want) {
        want = (uint32_t)(r->file_size - pos);
    }
    ssize_t n = rv_sys_pread(r->fd, dst, want, (off_t)pos);
    if (n < 0 || (uint32_t)n < len) {
        *err = rv_errf(n < 0 ? (int)n : -EIO, "wal %s: read %u bytes at %llu", r->path, want,
                       (unsigned long long)pos);
        return NULL;
    }
    if (dst == r->buf) {
        r->buf_pos = pos;
        r->buf_len = (uint32_t)n;
    }
    return dst;
}

static bool wal_is_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0)
            return false;
    }
    return true;
}

/* Scan one file from pos. Returns 0 with *end at the clean end, 1 when an
 * invalid record starts at *end, or -errno. */
static int wal_replay_file(struct wal_reader *r, uint64_t start, uint64_t pos, rv_wal_replay_fn *fn,
                           void *arg, struct rv_wal_report *rep, uint64_t *end)
{
    for (;;) {
        *end = pos;
        int err;
        const uint8_t *h = wal_reader_get(r, pos, RV_WAL_HEADER_BYTES, &err);
        if (h == NULL)
            return err; /* 0: the file ends here */
        if (wal_is_zero(h, RV_WAL_HEADER_BYTES))
            return 0; /* the preallocated, never written part */
        uint32_t len = get_u32(h + 4);
        if (len > RV_WAL_RECORD_MAX || get_u64(h + 12) != start + pos)
            return 1;
        const uint8_t *rec = wal_reader_get(r, pos, RV_WAL_HEADER_BYTES + len, &err);
        if (rec == NULL)
            return err < 0 ? err : 1; /* a record cut by the end of the file */
        uint32_t crc = rv_crc32c(0, rec + 4, RV_WAL_HEADER_BYTES - 4 + (size_t)len);
        if (crc != get_u32(rec))
            return 1;
        struct rv_wal_record out = {
            .lsn = start + pos,
            .key = get_u64(rec + 20),
            .type = rec[8],
            .payload = rec + RV_WAL_HEADER_BYTES,
            .len = len,
        };
        pos += RV_WAL_HEADER_BYTES + (uint64_t)len;
        if (out.type == RV_WAL_PAD)
            continue; /* direct I/O alignment, not a record of anyone's */
        if (fn != NULL) {
            int rc = fn(arg, &out);
            if (rc != 0)
                return rc < 0 ? rc : -EINVAL;
        }
        rep->records++;
    }
}

static int wal_remove_files_after(struct rv_wal *w, uint32_t i, struct rv_wal_report *rep)
{
    char path[PATH_MAX];
    for (uint32_t j = i + 1; j < w->file_count; j++) {
        int rc = wal_file_path(path, sizeof(path), w->dir, w->files[j]);
        if (rc == 0)
            rc = rv_sys_unlink(path);
        if (rc < 0 && rc != -ENOENT)
            return rv_errf(rc, "wal %s: remove after cut", path);
        rep->files_removed++;
    }
    w->file_count = i + 1;
    return 0;
}

/* Discard everything from LSN `cut` on: zero the rest of file i, drop later files. */
static int wal_cut(struct rv_wal *w, uint32_t i, uint64_t cut, struct rv_wal_report *rep)
{
    char path[PATH_MAX];
    int rc = wal_file_path(path, sizeof(path), w->dir, w->files[i]);
    if (rc < 0)
        return rc;
    int fd = rv_sys_open(path, O_RDWR, 0);
    if (fd < 0)
        return rv_errf(fd, "wal %s: open to cut", path);
    struct stat st;
    rc = rv_sys_fstat(fd, &st);
    uint64_t pos = cut - w->files[i];
    if (rc == 0 && (uint64_t)st.st_size > pos)
        rep->cut_bytes += (uint64_t)st.st_size - pos; /* an upper bound: zeros included */
    /* Truncate and re-extend: the tail reads as zeros, so no stale record past
     * the cut can ever be taken for a valid one. */
    if (rc == 0)
        rc = rv_sys_ftruncate(fd, (off_t)pos);
    if (rc == 0)
        rc = rv_sys_fallocate(fd, 0, 0, (off_t)w->cfg.file_bytes);
    if (rc == 0)
        rc = rv_sys_fdatasync(fd);
    (void)rv_sys_close(fd); /* errors above decide */
    if (rc < 0)
        return rv_errf(rc, "wal %s: cut at %llu", path, (unsigned long long)pos);
    rc = wal_remove_files_after(w, i, rep);
    return rc < 0 ? rc : wal_sync_dir(w);
}

/* Replay file i; *end receives the LSN where valid data ends. 1: cut there. */
static int wal_replay_one(struct rv_wal *w, struct wal_reader *r, uint32_t i, uint64_t from_lsn,
                          rv_wal_replay_fn *fn, void *arg, struct rv_wal_report *rep, uint64_t *end)
{
    uint64_t start = w->files[i];
    char path[PATH_MAX];
    int rc = wal_file_path(path, sizeof(path), w->dir, start);
    if (rc < 0)
        return rc;
    r->fd = rv_sys_open(path, O_RDONLY, 0);
    if (r->fd < 0)
        return rv_errf(r->fd, "wal %s: open", path);
    /* A direct-I/O WAL is not in the page cache: replay reads it from the
     * disk, front to back. Advice only: a refusal changes nothing. */
    (void)posix_fadvise(r->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    r->path = path;
    struct stat st;
    rc = rv_sys_fstat(r->fd, &st);
    if (rc < 0)
        rc = rv_errf(rc, "wal %s: stat", path);
    r->file_size = rc == 0 ? (uint64_t)st.st_size : 0;
    r->buf_len = 0;
    uint64_t pos = from_lsn > start ? from_lsn - start : 0;
    uint64_t file_end = 0;
    if (rc == 0)
        rc = wal_replay_file(r, start, pos, fn, arg, rep, &file_end);
    (void)rv_sys_close(r->fd); /* read-only */
    r->fd = -1;
    *end = start + file_end;
    return rc;
}

static int wal_replay(struct rv_wal *w, uint64_t from_lsn, rv_wal_replay_fn *fn, void *arg,
                      struct rv_wal_report *rep)
{
    struct wal_reader r = {.fd = -1, .buf = malloc(WAL_READ_CHUNK)};
    if (r.buf == NULL)
        return -ENOMEM;
    int rc = 0;
    uint64_t end = from_lsn;
    for (uint32_t i = 0; i < w->file_count && rc == 0; i++) {
        bool has_next = i + 1 < w->file_count;
        if (has_next && w->files[i + 1] <= from_lsn)
            continue; /* wholly before the checkpoint */
        rc = wal_replay_one(w, &r, i, from_lsn, fn, arg, rep, &end);
        if (rc == 1 && has_next && w->files[i + 1] == end)
            rc = 0; /* a reused file rolled there: what follows is its old contents */
        if (rc == 1) {
            rv_warn("wal %s: invalid record at lsn %llu (byte %llu of file %llu): cutting the "
                    "log there",
                    w->dir, (unsigned long long)end, (unsigned long long)(end - w->files[i]),
                    (unsigned long long)w->files[i]);
            rep->cut_reason = -EBADMSG;
            rc = wal_cut(w, i, end, rep);
            break;
        }
        if (rc == 0 && has_next && w->files[i + 1] != end) {
            rv_warn("wal %s: file %llu ends at lsn %llu but the next starts at %llu: cutting",
                    w->dir, (unsigned long long)w->files[i], (unsigned long long)end,
                    (unsigned long long)w->files[i + 1]);
            rep->cut_reason = -EBADMSG;
            rc = wal_cut(w, i, end, rep);
            break;
        }
    }
    free(r.buf);
    free(r.big);
    rep->end_lsn = end;
    return rc;
}

/* ---- a live WAL's range (blocking, a helper) ---------------------------------------------- */

struct wal_scan {
    bool is_done; /* a record at or past to_lsn was met: the range is read */
    uint64_t to_lsn;
    uint64_t seen_end; /* the end of the last record of the range */
    rv_wal_replay_fn *fn;
    void *arg;
};

static int wal_scan_one(void *arg, const struct rv_wal_record *rec)
{
    struct wal_scan *s = arg;
    if (rec->lsn >= s->to_lsn) {
        s->is_done = true;
        return -ECANCELED; /* stops the file's scan; is_done tells it from fn's errors */
    }
    s->seen_end = rec->lsn + RV_WAL_HEADER_BYTES + rec->len;
    return s->fn(s->arg, rec);
}

int rv_wal_scan(const char *dir, uint64_t from_lsn, uint64_t to_lsn, rv_wal_replay_fn *fn,
                void *arg)
{
    if (from_lsn >= to_lsn)
        return 0;
    /* The files by name alone: nothing here may change the live WAL's
     * directory (wal_list removes surplus spares). */
    struct rv_wal w = {.dir = (char *)dir};
    int rc = 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        rc = rv_errf(-errno, "wal %s: opendir", dir);
    struct dirent *de;
    while (rc == 0 && d != NULL && (de = readdir(d)) != NULL) {
        uint64_t start;
        if (wal_parse_name(de->d_name, &start))
            rc = wal_files_push(&w, start);
    }
    if (d != NULL)
        closedir(d);
    if (rc == 0 && w.file_count > 1)
        qsort(w.files, w.file_count, sizeof(*w.files), wal_cmp_u64);
    struct wal_reader r = {.fd = -1, .buf = malloc(WAL_READ_CHUNK)};
    struct wal_scan s = {.to_lsn = to_lsn, .seen_end = from_lsn, .fn = fn, .arg = arg};
    struct rv_wal_report rep = {0};
    if (rc == 0 && r.buf == NULL)
        rc = -ENOMEM;
    /* The first file holding from_lsn must be there: earlier ones are gone. */
    if (rc == 0 && (w.file_count == 0 || w.files[0] > from_lsn))
        rc = rv_errf(-EBADMSG, "wal %s: lsn %" PRIu64 " is no longer kept", dir, from_lsn);
    uint64_t end = from_lsn;
    for (uint32_t i = 0; i < w.file_count && rc == 0 && end < to_lsn; i++) {
        bool has_next = i + 1 < w.file_count;
        if ((has_next && w.files[i + 1] <= from_lsn) || w.files[i] >= to_lsn)
            continue;
        rc = wal_replay_one(&w, &r, i, from_lsn, wal_scan_one, &s, &rep, &end);
        if (s.is_done) {
            end = to_lsn;
            rc = 0;
        } else if (rc == 1 || rc == 0) { /* the file's valid records end at `end` */
            rc = 0;
            /* They must reach the next file, or the range's end if that is
             * sooner: anything short of it lost records. */
            uint64_t need = has_next && w.files[i + 1] < to_lsn ? w.files[i + 1] : to_lsn;
            if (has_next && end < need)
                rc = rv_errf(-EBADMSG,
                             "wal %s: file %" PRIu64 " ends at lsn %" PRIu64
                             " but the next starts at %" PRIu64,
                             dir, w.files[i], end, w.files[i + 1]);
            if (has_next && rc == 0)
                end = w.files[i + 1]; /* a reused file's old contents follow its end */
        }
    }
    if (rc == 0 && end < to_lsn && s.seen_end < to_lsn)
        rc = rv_errf(-EBADMSG, "wal %s: records end at lsn %" PRIu64 ", before %" PRIu64, dir,
                     s.seen_end, to_lsn);
    free(r.buf);
    free(r.big);
    free(w.files);
    return rc;
}

/* ---- open and close ------------------------------------------------------------------ */

void rv_wal_config_init(struct rv_wal_config *cfg)
{
    *cfg = (struct rv_wal_config){
        .file_bytes = 64ull << 20,
        .group_bytes_max = 1u << 20,
        .group_window_us = 0,
        .io = RV_WAL_IO_AUTO,
    };
}

/* Open (creating if asked) a WAL file and preallocate it to file_bytes. */
static int wal_open_file(const struct rv_wal *w, const char *path, int extra_flags)
{
    if (w->is_direct)
        extra_flags |= O_DIRECT;
    int fd = rv_sys_open(path, O_RDWR | extra_flags, 0644);
    if (fd < 0)
        return rv_errf(fd, "wal %s: open", path);
    int rc = rv_sys_fallocate(fd, 0, 0, (off_t)w->cfg.file_bytes);
    if (rc == -EOPNOTSUPP) /* a filesystem without fallocate: extend instead */
        rc = rv_sys_ftruncate(fd, (off_t)w->cfg.file_bytes);
    if (rc == 0)
        rc = rv_sys_fdatasync(fd);
    if (rc < 0) {
        (void)rv_sys_close(fd); /* already failing */
        return rv_errf(rc, "wal %s: preallocate %llu bytes", path,
                       (unsigned long long)w->cfg.file_bytes);
    }
    return fd;
}

/* Direct I/O: write zeros over the whole file. A preallocated extent is
 * "unwritten" until written, and a direct write into one is slower (ext4
 * converts the extent, and io_uring hands the write to a worker) and makes
 * the next fdatasync commit the journal: fio on this project's VM, 4 KiB +
 * fdatasync 4 845/s into a preallocated file against 9 773/s over written
 * blocks, 1 MiB writes 2.1 against 3.8 GB/s. Zeros keep replay's clean end. */
static int wal_zero_fill(const struct rv_wal *w, int fd)
{
    const size_t chunk = 1u << 20;
    void *zeros = NULL;
    if (posix_memalign(&zeros, RV_WAL_DIRECT_ALIGN, chunk) != 0)
        return -ENOMEM;
    memset(zeros, 0, chunk);
    int rc = 0;
    for (uint64_t pos = 0; pos < w->cfg.file_bytes && rc == 0; pos += chunk) {
        size_t len = w->cfg.file_bytes - pos < chunk ? (size_t)(w->cfg.file_bytes - pos) : chunk;
        ssize_t n = rv_sys_pwrite(fd, zeros, len, (off_t)pos);
        rc = n < 0 ? (int)n : (size_t)n != len ? -ENOSPC : 0;
    }
    free(zeros);
    return rc == 0 ? rv_sys_fdatasync(fd) : rc;
}

/* A fresh, zeroed, preallocated spare file; with is_written (direct I/O
 * only), every block written with zeros too. Blocking. */
static int wal_make_spare(const struct rv_wal *w, bool is_written)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/" WAL_SPARE_NAME, w->dir);
    if (n < 0 || (size_t)n >= sizeof(path))
        return -ENAMETOOLONG;
    int fd = wal_open_file(w, path, O_CREAT | O_TRUNC);
    if (fd < 0)
        return fd;
    int rc = is_written && w->is_direct ? wal_zero_fill(w, fd) : 0;
    if (rc < 0) {
        (void)rv_sys_close(fd);
        return rv_errf(rc, "wal %s: writing zeros", path);
    }
    rc = wal_sync_dir(w);
    if (rc < 0) {
        (void)rv_sys_close(fd);
        return rc;
    }
    return fd;
}

/* Direct I/O: a released file (free-<id>.wal.tmp) becomes the spare: its
 * blocks are written, so direct writes overwrite them at full speed, with no
 * zero-filling. Its old records stay until overwritten; replay never takes
 * them (each record holds its own LSN, and a file's end is its first invalid
 * record, or the next file's start). Blocking. */
static int wal_recycle_spare(const struct rv_wal *w, uint64_t id)
{
    char from[PATH_MAX], to[PATH_MAX];
    int rc = wal_free_path(from, sizeof(from), w->dir, id);
    int n = snprintf(to, sizeof(to), "%s/" WAL_SPARE_NAME, w->dir);
    if (rc == 0 && (n < 0 || (size_t)n >= sizeof(to)))
        rc = -ENAMETOOLONG;
    if (rc == 0)
        rc = rv_sys_rename(from, to);
    if (rc < 0)
        return rv_errf(rc, "wal %s: reuse %s", w->dir, from);
    int fd = wal_open_file(w, to, 0); /* its blocks are allocated: the fallocate is a no-op */
    if (fd < 0)
        return fd;
    rc = wal_sync_dir(w);
    if (rc < 0) {
        (void)rv_sys_close(fd);
        return rc;
    }
    return fd;
}

/* A spare for a roll or the background: a released file when one is kept
 * (id != UINT64_MAX; *is_recycled then says it was used), else a new one.
 * Blocking. */
static int wal_spare_from(const struct rv_wal *w, uint64_t id, bool is_written, bool *is_recycled)
{
    *is_recycled = false;
    if (id != UINT64_MAX) {
        int fd = wal_recycle_spare(w, id);
        *is_recycled = fd >= 0;
        if (fd >= 0)
            return fd;
        rv_warn("wal %s: cannot reuse a released file (%s); making a new one", w->dir,
                rv_err_msg());
        char path[PATH_MAX];
        if (wal_free_path(path, sizeof(path), w->dir, id) == 0)
            (void)rv_sys_unlink(path); /* may be gone already */
    }
    return wal_make_spare(w, is_written);
}

static int wal_open_current(struct rv_wal *w, uint64_t end)
{
    if (w->file_count == 0) {
        int rc = wal_files_push(w, end);
        if (rc < 0)
            return rc;
    }
    w->file_start = w->files[w->file_count - 1];
    char path[PATH_MAX];
    int rc = wal_file_path(path, sizeof(path), w->dir, w->file_start);
    if (rc < 0)
        return rc;
    int fd = wal_open_file(w, path, O_CREAT);
    if (fd == -EINVAL && w->is_direct && w->cfg.io == RV_WAL_IO_AUTO) {
        /* The filesystem refuses O_DIRECT: go through the page cache. */
        rv_info("wal %s: the filesystem refuses O_DIRECT; writing buffered", w->dir);
        w->is_direct = false;
        rv_err_clear();
        fd = wal_open_file(w, path, O_CREAT);
    }
    if (fd < 0)
        return fd;
    w->fd = fd;
    w->end_lsn = w->write_lsn = w->durable_lsn = w->complete_lsn = w->issued_end = end;
    return wal_sync_dir(w);
}

/* After replay, before the first append: nothing may follow the end in the
 * current file. Several direct group writes were in flight at once, so after
 * a power loss a group may be missing (zeros, where replay ended) while a
 * later one reached the disk (and buffered writeback need not be in order
 * either); a reused file holds old records too. Appending there could end a
 * new group exactly where such a stale group begins, and a second crash would
 * replay it. So the file is cut at the end and extended again (its tail reads
 * as zeros; no new disk space is needed). Direct I/O also starts every group
 * on a boundary of its file: an end off one (left by a buffered WAL or a cut
 * tail) starts a new file there instead, which replay takes as the old one's
 * end. */
static int wal_align_end(struct rv_wal *w)
{
    uint64_t end = w->end_lsn;
    w->align_phase = (uint32_t)(end % RV_WAL_DIRECT_ALIGN);
    uint64_t pos = end - w->file_start;
    if (!w->is_direct || pos % RV_WAL_DIRECT_ALIGN == 0) {
        int rc = rv_sys_ftruncate(w->fd, (off_t)pos);
        if (rc < 0)
            return rv_errf(rc, "wal %s: cut the current file at lsn %llu", w->dir,
                           (unsigned long long)end);
        rc = rv_sys_fallocate(w->fd, 0, 0, (off_t)w->cfg.file_bytes);
        if (rc == -EOPNOTSUPP) /* a filesystem without fallocate: extend instead */
            rc = rv_sys_ftruncate(w->fd, (off_t)w->cfg.file_bytes);
        if (rc < 0) /* writes extend the file instead: slower, not wrong */
            rv_warn("wal %s: preallocate after the cut: %s", w->dir, rv_strerror(rc));
        rc = rv_sys_fdatasync(w->fd);
        return rc < 0 ? rv_errf(rc, "wal %s: sync after the cut", w->dir) : 0;
    }
    int rc = wal_files_push(w, end);
    if (rc < 0)
        return rc;
    (void)rv_sys_close(w->fd); /* nothing written through it */
    w->fd = -1;
    rc = wal_open_current(w, end);
    if (rc == 0)
        rv_info("wal %s: end at lsn %llu is not on a %u-byte boundary: new file there", w->dir,
                (unsigned long long)end, RV_WAL_DIRECT_ALIGN);
    return rc;
}

/* At open, once the I/O mode is known: keep the released files a direct WAL
 * can reuse (whole, of this file size), remove the others. Blocking. */
static void wal_free_adopt(struct rv_wal *w)
{
    uint32_t kept = 0;
    for (uint32_t i = 0; i < w->free_count; i++) {
        char path[PATH_MAX];
        if (wal_free_path(path, sizeof(path), w->dir, w->free_ids[i]) < 0)
            continue;
        struct stat st;
        if (w->is_direct && stat(path, &st) == 0 && (uint64_t)st.st_size == w->cfg.file_bytes)
            w->free_ids[kept++] = w->free_ids[i];
        else
            (void)rv_sys_unlink(path); /* not reusable here: gone */
    }
    w->free_count = kept;
}

int rv_wal_open(rv_wal_t **out, const struct rv_wal_config *cfg, uint64_t from_lsn,
                rv_wal_replay_fn *fn, void *arg, struct rv_wal_report *report)
{
    RV_ASSERT(out != NULL && cfg != NULL && cfg->dir != NULL);
    RV_ASSERT(cfg->file_bytes >= 4096);
    RV_ASSERT(cfg->group_bytes_max > 0 && cfg->group_bytes_max <= cfg->file_bytes);
    struct rv_wal_report local;
    struct rv_wal_report *rep = report != NULL ? report : &local;
    *rep = (struct rv_wal_report){0};
    struct rv_wal *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    w->cfg = *cfg;
    w->fd = w->spare_fd = -1;
    w->dir = strdup(cfg->dir);
    w->groups = calloc(RV_WAL_GROUPS, sizeof(*w->groups));
    int rc = w->dir != NULL && w->groups != NULL ? 0 : -ENOMEM;
    if (rc == 0 && (rc = rv_sys_mkdir_p(cfg->dir, 0755)) < 0)
        rc = rv_errf(rc, "wal %s: create the directory", cfg->dir);
    if (rc == 0)
        rc = wal_list(w);
    if (rc == 0)
        rc = wal_replay(w, from_lsn, fn, arg, rep);
    if (rc == 0 && cfg->io != RV_WAL_IO_BUFFERED) {
        w->is_direct = cfg->file_bytes % RV_WAL_DIRECT_ALIGN == 0;
        if (!w->is_direct && cfg->io == RV_WAL_IO_DIRECT)
            rc = rv_errf(-EINVAL, "wal %s: direct I/O needs a file size that is a multiple of %u",
                         cfg->dir, RV_WAL_DIRECT_ALIGN);
    }
    if (rc == 0)
        rc = wal_open_current(w, rep->end_lsn);
    if (rc == 0)
        rc = wal_align_end(w);
    if (rc == 0)
        wal_free_adopt(w);
    w->writes_max = w->is_direct ? RV_WAL_DIRECT_WRITES : 1;
    if (rc < 0) {
        rv_wal_close(w);
        return rc;
    }
    /* Not written with zeros: that would make every open write two files
     * (128 MiB by default). The spares made after rolls are (wal_spare_work). */
    w->spare_fd = wal_make_spare(w, false);
    /* No spare (disk full) is not fatal: the next roll tries again. */
    w->spare_state = w->spare_fd >= 0 ? WAL_SPARE_READY : WAL_SPARE_MISSING;
    for (uint32_t i = 0; i < RV_WAL_GROUPS; i++)
        w->groups[i].wal = w;
    *out = w;
    return 0;
}

/* Direct I/O, at close: zeros over the block where the records end, so the
 * next open finds a clean end there even in a reused file (whose old records
 * follow). Best effort: without it, replay cuts the stale bytes instead. */
static void wal_mark_end(struct rv_wal *w)
{
    uint64_t pos = w->write_lsn - w->file_start;
    if (pos % RV_WAL_DIRECT_ALIGN != 0 || pos + RV_WAL_DIRECT_ALIGN > w->cfg.file_bytes)
        return; /* not on a block (never, for direct groups), or the file is full */
    void *zeros = NULL;
    if (posix_memalign(&zeros, RV_WAL_DIRECT_ALIGN, RV_WAL_DIRECT_ALIGN) != 0)
        return;
    memset(zeros, 0, RV_WAL_DIRECT_ALIGN);
    ssize_t n = rv_sys_pwrite(w->fd, zeros, RV_WAL_DIRECT_ALIGN, (off_t)pos);
    free(zeros);
    if (n != (ssize_t)RV_WAL_DIRECT_ALIGN || rv_sys_fdatasync(w->fd) < 0)
        rv_debug("wal %s: could not mark the end at lsn %llu", w->dir,
                 (unsigned long long)w->write_lsn);
}

void rv_wal_close(rv_wal_t *w)
{
    if (w == NULL)
        return;
    RV_ASSERT(w->group_count == 0); /* the caller waited for rv_wal_is_idle */
    RV_ASSERT(w->jobs == 0);
    if (w->fd >= 0 && w->is_direct && !w->is_failed && w->write_err == 0)
        wal_mark_end(w);
    if (w->fd >= 0)
        (void)rv_sys_close(w->fd); /* synced, or never acknowledged as durable */
    if (w->spare_fd >= 0)
        (void)rv_sys_close(w->spare_fd);
    for (uint32_t i = 0; w->groups != NULL && i < RV_WAL_GROUPS; i++)
        free(w->groups[i].stage);
    free(w->groups);
    free(w->files);
    free(w->free_ids);
    free(w->dir);
    free(w);
}

/* ---- group commit (owner shard) -------------------------------------------------------- */

static void wal_flush(struct rv_wal *w);

static struct wal_group *wal_group_at(struct rv_wal *w, uint32_t i)
{
    return &w->groups[(w->group_head + i) % RV_WAL_GROUPS];
}

static void wal_advance(struct rv_wal *w);

static void wal_flush_task(void *arg)
{
    struct rv_wal *w = arg;
    w->is_flush_queued = false;
    wal_advance(w); /* a sync the full ring refused, then the writes */
}

static void wal_queue_flush(struct rv_wal *w, uint64_t delay_us)
{
    if (w->is_flush_queued)
        return;
    /* A task for ourselves runs next turn, after every append of this turn
     * joined the group: that is the group commit. */
    int rc = delay_us > 0 ? rv_timer_add(delay_us, wal_flush_task, w, NULL)
                          : rv_shard_call((uint32_t)rv_shard_self(), wal_flush_task, w, NULL);
    RV_ASSERT(rc == 0); /* only -ENOMEM, and a lost flush would strand appends */
    w->is_flush_queued = true;
}

/* ---- direct I/O staging ---- */

static uint64_t wal_round_up(uint64_t n)
{
    return (n + RV_WAL_DIRECT_ALIGN - 1) & ~(uint64_t)(RV_WAL_DIRECT_ALIGN - 1);
}

/* Staging bytes for a group of `bytes` record bytes: room for the largest
 * pad too (under one header, it takes a whole extra block). */
static uint64_t wal_stage_need(uint64_t bytes)
{
    return wal_round_up(bytes + RV_WAL_HEADER_BYTES + RV_WAL_DIRECT_ALIGN);
}

/* Make g's staging buffer hold at least `need` bytes, keeping what it holds. */
static int wal_stage_reserve(struct wal_group *g, uint64_t need)
{
    if (g->stage_cap >= need)
        return 0;
    void *p = NULL;
    if (posix_memalign(&p, RV_WAL_DIRECT_ALIGN, (size_t)need) != 0)
        return rv_errf(-ENOMEM, "wal: staging buffer of %llu bytes", (unsigned long long)need);
    if (g->bytes > 0)
        memcpy(p, g->stage, (size_t)g->bytes);
    free(g->stage);
    g->stage = p;
    g->stage_cap = need;
    return 0;
}

/* A group is done with its buffer: give back one grown for an outsized record. */
static void wal_stage_trim(const struct rv_wal *w, struct wal_group *g)
{
    if (g->stage_cap > wal_stage_need(w->cfg.group_bytes_max)) {
        free(g->stage);
        g->stage = NULL;
        g->stage_cap = 0;
    }
}

/* Direct I/O: close g (the newest group) with a pad record up to the next
 * boundary. It takes no more appends after this. */
static void wal_group_seal(struct rv_wal *w, struct wal_group *g)
{
    if (!w->is_direct || g->is_sealed)
        return;
    g->is_sealed = true;
    uint64_t end = g->lsn + g->bytes;
    RV_ASSERT(end == w->end_lsn);
    uint64_t gap =
        (w->align_phase + RV_WAL_DIRECT_ALIGN - end % RV_WAL_DIRECT_ALIGN) % RV_WAL_DIRECT_ALIGN;
    if (gap == 0)
        return;
    uint64_t total = gap >= RV_WAL_HEADER_BYTES ? gap : gap + RV_WAL_DIRECT_ALIGN;
    uint32_t len = (uint32_t)(total - RV_WAL_HEADER_BYTES);
    RV_ASSERT(g->bytes + total <= g->stage_cap);
    uint8_t *h = g->stage + g->bytes;
    memset(h + RV_WAL_HEADER_BYTES, 0, len);
    wal_encode_header(h, RV_WAL_PAD, end, 0, h + RV_WAL_HEADER_BYTES, len);
    g->bytes += total;
    w->end_lsn += total;
    w->stats.pad_bytes += total;
}

/* Fail every group from index `from` (relative to head) on: each waiter gets
 * err, and their LSNs are taken back (nothing after the last write exists).
 * No write of these groups may be in flight. */
static void wal_fail_groups(struct rv_wal *w, uint32_t from, int err)
{
    RV_ASSERT(w->writes_inflight == 0 && !w->is_syncing);
    uint32_t n = w->group_count;
    w->end_lsn = w->write_lsn;
    w->group_count = from; /* before the callbacks: they may append again */
    for (uint32_t i = from; i < n; i++) {
        struct wal_group *g = &w->groups[(w->group_head + i) % RV_WAL_GROUPS];
        uint32_t count = g->count;
        g->state = WAL_GROUP_FREE;
        g->count = 0;
        g->write_err = 0;
        wal_stage_trim(w, g);
        w->stats.failures += count;
        for (uint32_t j = 0; j < count; j++)
            g->waiters[j].done(g->waiters[j].arg, err);
    }
}

/* The head group finished (written, and synced if asked): tell its waiters. */
static void wal_group_complete(struct rv_wal *w, struct wal_group *g)
{
    RV_ASSERT(g == wal_group_at(w, 0));
    for (uint32_t j = 0; j < g->count; j++)
        g->waiters[j].done(g->waiters[j].arg, (int64_t)g->waiters[j].lsn);
    g->state = WAL_GROUP_FREE;
    g->count = 0;
    wal_stage_trim(w, g);
    w->complete_lsn = g->lsn + g->bytes;
    w->group_head = (w->group_head + 1) % RV_WAL_GROUPS;
    w->group_count--;
}

const uint32_t rv_wal_sync_le_us[RV_WAL_SYNC_BUCKETS] = {
    25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000,
};

static void wal_stats_sync(struct rv_wal_stats *s, uint64_t ns)
{
    uint32_t b = 0;
    while (b < RV_WAL_SYNC_BUCKETS && ns > (uint64_t)rv_wal_sync_le_us[b] * 1000u)
        b++;
    s->sync_buckets[b]++;
    s->sync_ns_sum += ns;
}

static void wal_stats_group(struct rv_wal_stats *s, uint32_t records)
{
    uint32_t b = 0;
    while (b < RV_WAL_GROUP_BUCKETS && records > (1u << b))
        b++;
    s->group_buckets[b]++;
    s->group_records_sum += records;
}

static void wal_advance(struct rv_wal *w);

static void wal_sync_done(void *arg, int64_t res)
{
    struct wal_group *g = arg;
    struct rv_wal *w = g->wal;
    RV_ASSERT(w->is_syncing && g == wal_group_at(w, 0) && g->state == WAL_GROUP_SYNCING);
    w->is_syncing = false;
    g->state = WAL_GROUP_WRITTEN;
    if (res < 0) {
        /* Sticky: after a failed fdatasync the page cache may have dropped the
         * data; nothing written since the last good sync can be trusted. The
         * groups fail once no write of theirs is in flight (wal_advance). */
        rv_error("wal %s: fdatasync failed: %s; refusing all further appends", w->dir,
                 rv_strerror((int)res));
        w->is_failed = true;
        w->write_lsn = w->durable_lsn;
        g->write_err = -EIO;
        w->write_err = -EIO;
    } else {
        wal_stats_sync(&w->stats, rv_clock_now_ns() - g->sync_start_ns);
        if (w->sync_end > w->durable_lsn)
            w->durable_lsn = w->sync_end;
    }
    wal_advance(w);
}

/* Zeros over what the failed writes may have left: done. */
static void wal_repair_done(void *arg, int64_t res)
{
    struct rv_wal *w = arg;
    free(w->repair_zeros);
    w->repair_zeros = NULL;
    w->is_repairing = false;
    if (res < 0 || (uint64_t)res != w->repair_len) {
        rv_error("wal %s: clearing a failed write's bytes failed: %s; refusing all further "
                 "appends",
                 w->dir, rv_strerror(res < 0 ? (int)res : -ENOSPC));
        w->is_failed = true;
        wal_fail_groups(w, 0, -EIO);
        return;
    }
    wal_flush(w);
}

/*
 * The head group's write failed and nothing is in flight any more: fail it
 * and every later group (their LSNs are taken back), then write zeros over
 * every byte a write was issued for from the head on, before anything else
 * is written there. Without them a later group that did reach the disk, or
 * the written part of a short write, could sit exactly where new appends end
 * and replay would take its records, which were refused, for valid ones.
 */
static void wal_write_failed(struct rv_wal *w)
{
    struct wal_group *g = wal_group_at(w, 0);
    int err = g->write_err;
    uint64_t from = g->lsn;
    uint64_t to = w->issued_end;
    w->write_err = 0;
    wal_fail_groups(w, 0, err);
    if (w->is_failed)
        return; /* a failed fdatasync: nothing more is written anyway */
    RV_ASSERT(from == w->write_lsn && to > from);
    uint64_t len = to - from;
    if (w->is_direct)
        len = wal_round_up(len);
    void *zeros = NULL;
    int rc = len > UINT32_MAX ? -EMSGSIZE : 0;
    if (rc == 0 && posix_memalign(&zeros, RV_WAL_DIRECT_ALIGN, (size_t)len) != 0)
        rc = -ENOMEM;
    if (rc == 0) {
        memset(zeros, 0, (size_t)len);
        w->repair_zeros = zeros;
        w->repair_len = len;
        w->is_repairing = true;
        w->issued_end = from;
        rc = rv_file_write(w->fd, zeros, (uint32_t)len, from - w->file_start, wal_repair_done, w);
        if (rc < 0)
            w->is_repairing = false;
    }
    if (rc < 0) {
        free(zeros);
        w->repair_zeros = NULL;
        rv_error("wal %s: cannot clear a failed write's bytes: %s; refusing all further appends",
                 w->dir, rv_strerror(rc));
        w->is_failed = true;
        wal_fail_groups(w, 0, -EIO);
    }
}

static void wal_write_done(void *arg, int64_t res)
{
    struct wal_group *g = arg;
    struct rv_wal *w = g->wal;
    RV_ASSERT(g->state == WAL_GROUP_WRITING && w->writes_inflight > 0);
    w->writes_inflight--;
    g->state = WAL_GROUP_WRITTEN;
    if (res < 0 || (uint64_t)res != g->bytes) {
        /* A short write of a regular file means the disk is full. */
        int err = res < 0 ? (int)res : -ENOSPC;
        rv_warn("wal %s: write of %llu bytes at lsn %llu failed: %s", w->dir,
                (unsigned long long)g->bytes, (unsigned long long)g->lsn, rv_strerror(err));
        g->write_err = err;
        if (w->write_err == 0)
            w->write_err = err; /* no more writes until this is settled */
        if (err == -ENOSPC)
            rv_wal_drop_kept(w); /* give the disk the files kept for reuse */
    } else {
        w->stats.bytes += g->bytes;
        wal_stats_group(&w->stats, g->count);
    }
    wal_advance(w);
}

/*
 * Complete the written groups at the head, in LSN order: a group that asked
 * for a sync waits for an fdatasync issued after its write completed (one
 * covers every group written by then). Then write what can be written.
 */
static void wal_advance(struct rv_wal *w)
{
    while (w->group_count > 0) {
        struct wal_group *g = wal_group_at(w, 0);
        if (g->state != WAL_GROUP_WRITTEN)
            break; /* open, being written or being synced */
        if (g->write_err != 0) {
            if (w->writes_inflight == 0 && !w->is_syncing)
                wal_write_failed(w);
            return; /* else the last completion comes back here */
        }
        uint64_t end = g->lsn + g->bytes;
        w->write_lsn = end;
        if (g->needs_sync && w->durable_lsn < end) {
            if (w->is_syncing)
                return; /* an older sync is in flight: its completion comes back */
            /* This sync covers every group written so far, in order. */
            uint64_t cover = end;
            for (uint32_t i = 1; i < w->group_count; i++) {
                const struct wal_group *n = wal_group_at(w, i);
                if (n->state != WAL_GROUP_WRITTEN || n->write_err != 0)
                    break;
                cover = n->lsn + n->bytes;
            }
            g->state = WAL_GROUP_SYNCING;
            g->sync_start_ns = rv_clock_now_ns();
            int rc = rv_file_fdatasync(w->fd, wal_sync_done, g);
            if (rc == -EAGAIN) {
                g->state = WAL_GROUP_WRITTEN; /* the ring is full: try again shortly */
                wal_queue_flush(w, 50);
                return;
            }
            w->stats.syncs++;
            w->is_syncing = true;
            w->sync_end = cover;
            if (rc < 0)
                wal_sync_done(g, rc);
            return;
        }
        wal_group_complete(w, g);
    }
    wal_flush(w);
}

static void wal_roll(struct rv_wal *w);

/* Issue the writes of open groups, oldest first, up to writes_max in flight
 * (only full ones behind the head). */
static void wal_flush(struct rv_wal *w)
{
    if (w->is_rolling || w->is_repairing || w->write_err != 0)
        return;
    for (uint32_t i = 0; i < w->group_count; i++) {
        struct wal_group *g = wal_group_at(w, i);
        if (g->state != WAL_GROUP_OPEN)
            continue; /* issued already */
        if (g->count == 0 || w->writes_inflight >= w->writes_max)
            return;
        /* A group still filling is written only as the head: while the ones
         * ahead are in flight it gathers more (natural group commit); full
         * (sealed) groups go at once, several at a time under direct I/O. */
        if (i > 0 && !g->is_sealed)
            return;
        wal_group_seal(w, g);
        if (g->lsn - w->file_start + g->bytes > w->cfg.file_bytes) {
            /* A roll starts between two groups, with nothing in flight: when
             * this group is the head; else the head's completion comes back. */
            if (i == 0) {
                RV_ASSERT(g->lsn == w->write_lsn);
                wal_roll(w);
            }
            return;
        }
        g->state = WAL_GROUP_WRITING;
        uint64_t pos = g->lsn - w->file_start;
        int rc = w->is_direct
                     ? rv_file_write(w->fd, g->stage, (uint32_t)g->bytes, pos, wal_write_done, g)
                     : rv_file_writev(w->fd, g->iov, (int)g->iov_count, pos, wal_write_done, g);
        if (rc == -EAGAIN) {
            g->state = WAL_GROUP_OPEN; /* the ring is full: try again shortly */
            wal_queue_flush(w, 50);
            return;
        }
        w->stats.groups++;
        w->writes_inflight++;
        if (w->writes_inflight > w->stats.writes_inflight_max)
            w->stats.writes_inflight_max = w->writes_inflight;
        if (g->lsn + g->bytes > w->issued_end)
            w->issued_end = g->lsn + g->bytes;
        if (rc < 0) {
            wal_write_done(g, rc); /* fails it through the usual path */
            return;
        }
    }
}

static bool wal_group_takes(const struct rv_wal *w, const struct wal_group *g, uint64_t rec_bytes)
{
    return g->state == WAL_GROUP_OPEN && !g->is_sealed && g->count < RV_WAL_GROUP_RECORDS &&
           g->bytes + rec_bytes <= w->cfg.group_bytes_max;
}

/* The group an append goes to: the newest open group with room, or a new one
 * (NULL: every group is busy). */
static struct wal_group *wal_group_for(struct rv_wal *w, uint64_t rec_bytes)
{
    if (w->group_count > 0) {
        struct wal_group *g = wal_group_at(w, w->group_count - 1);
        if (wal_group_takes(w, g, rec_bytes))
            return g;
    }
    if (w->group_count == RV_WAL_GROUPS)
        return NULL;
    if (w->group_count > 0) {
        struct wal_group *last = wal_group_at(w, w->group_count - 1);
        if (last->state == WAL_GROUP_OPEN)
            wal_group_seal(w, last); /* full: the new group starts on a boundary */
    }
    struct wal_group *g = wal_group_at(w, w->group_count);
    RV_ASSERT(g->state == WAL_GROUP_FREE);
    w->group_count++;
    g->state = WAL_GROUP_OPEN;
    g->needs_sync = false;
    g->is_sealed = false;
    g->count = 0;
    g->iov_count = 0;
    g->bytes = 0;
    g->lsn = w->end_lsn;
    return g;
}

bool rv_wal_has_room(const rv_wal_t *w, uint32_t len)
{
    uint64_t rec_bytes = RV_WAL_HEADER_BYTES + (uint64_t)len;
    if (w->group_count < RV_WAL_GROUPS)
        return true;
    return wal_group_takes(w, wal_group_at((struct rv_wal *)(uintptr_t)w, w->group_count - 1),
                           rec_bytes);
}

/* Direct I/O: copy the record into g's staging buffer (grown for a record
 * larger than a group). On failure a group opened for it is given back. */
static int wal_stage_record(struct rv_wal *w, struct wal_group *g, uint8_t type, uint64_t lsn,
                            uint64_t key, const void *payload, uint32_t len)
{
    uint64_t need = wal_stage_need(g->bytes + RV_WAL_HEADER_BYTES + (uint64_t)len);
    if (need < wal_stage_need(w->cfg.group_bytes_max))
        need = wal_stage_need(w->cfg.group_bytes_max); /* the usual size: allocated once */
    int rc = wal_stage_reserve(g, need);
    if (rc < 0) {
        if (g->count == 0) { /* just opened, and the newest: take it back */
            g->state = WAL_GROUP_FREE;
            w->group_count--;
        }
        return rc;
    }
    uint8_t *h = g->stage + g->bytes;
    if (len > 0)
        memcpy(h + RV_WAL_HEADER_BYTES, payload, len);
    wal_encode_header(h, type, lsn, key, h + RV_WAL_HEADER_BYTES, len);
    return 0;
}

int rv_wal_append(rv_wal_t *w, enum rv_wal_type type, uint64_t key, const void *payload,
                  uint32_t len, bool needs_sync, rv_wal_done_fn *done, void *arg)
{
    RV_ASSERT(done != NULL);
    RV_ASSERT(len == 0 || payload != NULL);
    if (w->is_failed)
        return -EIO;
    uint64_t rec_bytes = RV_WAL_HEADER_BYTES + (uint64_t)len;
    /* Direct I/O: the record and the largest pad after it fit in one file. */
    uint64_t file_need = w->is_direct ? wal_stage_need(rec_bytes) : rec_bytes;
    if (len > RV_WAL_RECORD_MAX || file_need > w->cfg.file_bytes)
        return rv_errf(-EMSGSIZE, "wal: record of %u bytes", len);
    struct wal_group *g = wal_group_for(w, rec_bytes);
    if (g == NULL)
        return -ENOBUFS;
    uint32_t j = g->count;
    uint64_t lsn = w->end_lsn;
    if (w->is_direct) {
        int rc = wal_stage_record(w, g, (uint8_t)type, lsn, key, payload, len);
        if (rc < 0)
            return rc;
    } else {
        wal_encode_header(g->headers[j], (uint8_t)type, lsn, key, payload, len);
        g->iov[g->iov_count++] =
            (struct iovec){.iov_base = g->headers[j], .iov_len = RV_WAL_HEADER_BYTES};
        if (len > 0)
            g->iov[g->iov_count++] = (struct iovec){.iov_base = (void *)payload, .iov_len = len};
    }
    g->waiters[j] = (struct wal_waiter){.done = done, .arg = arg, .lsn = lsn};
    g->count++;
    g->bytes += rec_bytes;
    g->needs_sync |= needs_sync;
    w->end_lsn += rec_bytes;
    w->stats.appends++;
    /* A group can be written next turn if a write slot is free; else the
     * completion of one in flight writes it. */
    if (!w->is_rolling && w->writes_inflight < w->writes_max)
        wal_queue_flush(w, g->bytes >= w->cfg.group_bytes_max ? 0 : w->cfg.group_window_us);
    return 0;
}

/* ---- rolling and releasing files --------------------------------------------------------- */

struct wal_job {
    struct rv_wal *w;
    uint64_t lsn; /* roll: the new file's start */
    int spare_fd; /* roll: the spare; spare: the result */
    int rc;
    bool is_renamed;   /* roll: the spare has the new file's name */
    uint32_t attempts; /* roll: tries that met EMFILE/ENFILE */
    uint64_t *starts;  /* release: files to delete */
    uint32_t count;
    uint32_t recycle_count; /* release: the last this many of starts are kept for reuse */
    bool is_kept_files;     /* release: starts name kept files (free-*.wal.tmp) to remove */
    uint64_t recycle_id;    /* spare, roll: a released file to make the spare of, or UINT64_MAX */
    bool is_recycled;       /* spare, roll: it was */
};

/* Take a kept released file for a spare (UINT64_MAX: none). */
static uint64_t wal_free_pop(struct rv_wal *w)
{
    return w->free_count > 0 ? w->free_ids[--w->free_count] : UINT64_MAX;
}

/* A job that took one could not use it: keep it for the next. */
static void wal_free_return(struct rv_wal *w, uint64_t id)
{
    if (id != UINT64_MAX && wal_free_push(w, id) < 0)
        rv_debug("wal %s: released file %llu not kept", w->dir, (unsigned long long)id);
}

static void wal_roll_rename(struct wal_job *job);

static void wal_spare_work(void *arg)
{
    struct wal_job *job = arg;
    /* In the background: the fast kind (written blocks), reused or zero-filled. */
    job->spare_fd = wal_spare_from(job->w, job->recycle_id, true, &job->is_recycled);
    job->rc = job->spare_fd < 0 ? job->spare_fd : 0;
}

static void wal_spare_done(void *arg)
{
    struct wal_job *job = arg;
    struct rv_wal *w = job->w;
    w->jobs--;
    if (job->is_recycled)
        w->stats.spares_recycled++;
    if (job->rc == 0) {
        w->spare_fd = job->spare_fd;
        w->spare_state = WAL_SPARE_READY;
    } else {
        w->spare_state = WAL_SPARE_MISSING; /* the next roll tries again */
        rv_warn("wal %s: cannot prepare the next file: %s", w->dir, rv_strerror(job->rc));
        if (job->rc == -ENOSPC)
            rv_wal_drop_kept(w);
    }
    free(job);
    struct wal_job *roll = w->roll_waiting;
    if (roll != NULL) {
        w->roll_waiting = NULL;
        wal_roll_rename(roll);
    }
}

static void wal_start_spare(struct rv_wal *w)
{
    if (w->spare_state != WAL_SPARE_MISSING)
        return;
    struct wal_job *job = calloc(1, sizeof(*job));
    if (job == NULL)
        return; /* the next roll makes one itself */
    job->w = w; /* before a helper thread can see the job */
    job->spare_fd = -1;
    job->recycle_id = w->is_direct ? wal_free_pop(w) : UINT64_MAX;
    if (rv_offload(wal_spare_work, job, wal_spare_done) < 0) {
        wal_free_return(w, job->recycle_id);
        free(job);
        return;
    }
    w->jobs++;
    w->spare_state = WAL_SPARE_CREATING;
}

/* Helper thread: make sure a spare exists, then give it the new file's name. */
static void wal_roll_work(void *arg)
{
    struct wal_job *job = arg;
    struct rv_wal *w = job->w;
    job->rc = 0;
    if (!job->is_renamed && job->spare_fd < 0) {
        /* A roll waits for it: a kept file, or a new one only preallocated. */
        job->spare_fd = wal_spare_from(w, job->recycle_id, false, &job->is_recycled);
        job->recycle_id = UINT64_MAX; /* used, or removed */
        if (job->spare_fd < 0) {
            job->rc = job->spare_fd;
            return;
        }
    }
    if (!job->is_renamed) { /* a retry after EMFILE may have renamed it already */
        char from[PATH_MAX], to[PATH_MAX];
        int n = snprintf(from, sizeof(from), "%s/" WAL_SPARE_NAME, w->dir);
        job->rc = n < 0 || (size_t)n >= sizeof(from) ? -ENAMETOOLONG : 0;
        if (job->rc == 0)
            job->rc = wal_file_path(to, sizeof(to), w->dir, job->lsn);
        if (job->rc == 0)
            job->rc = rv_sys_rename(from, to);
        job->is_renamed = job->rc == 0;
    }
    if (job->rc == 0)
        job->rc = wal_sync_dir(w);
}

#define WAL_EMFILE_RETRY_US 10000 /* a roll that met EMFILE tries again after this */
#define WAL_EMFILE_RETRIES  100   /* ... this many times (1 s), then fails its groups */

static void wal_roll_done(void *arg);

static void wal_roll_retry(void *arg)
{
    struct wal_job *job = arg;
    if (rv_offload(wal_roll_work, job, wal_roll_done) == 0)
        return; /* still counted in jobs */
    job->rc = -ENOMEM;
    wal_roll_done(job);
}

static void wal_close_done(void *arg, int64_t res)
{
    (void)arg;
    (void)res; /* the file was fdatasynced before the roll */
}

static void wal_roll_done(void *arg)
{
    struct wal_job *job = arg;
    struct rv_wal *w = job->w;
    w->jobs--;
    if ((job->rc == -EMFILE || job->rc == -ENFILE) && job->attempts++ < WAL_EMFILE_RETRIES &&
        rv_timer_add(WAL_EMFILE_RETRY_US, wal_roll_retry, job, NULL) == 0) {
        /* Out of descriptors for now (the partition logs' budget gives some
         * back): the appends wait in their groups instead of failing. */
        w->jobs++;
        return;
    }
    w->is_rolling = false;
    if (job->rc < 0 && job->is_renamed && job->spare_fd >= 0) {
        /* Renamed but not durably: no spare any more (the next roll makes one
         * and renames it over this file). */
        (void)rv_sys_close(job->spare_fd); /* zeroes only: nothing written */
        job->spare_fd = -1;
    }
    if (job->rc < 0) {
        if (job->spare_fd >= 0) {
            w->spare_fd = job->spare_fd;
            w->spare_state = WAL_SPARE_READY;
        }
        rv_warn("wal %s: roll to lsn %llu failed: %s", w->dir, (unsigned long long)job->lsn,
                rv_strerror(job->rc));
        int err = job->rc;
        free(job);
        wal_fail_groups(w, 0, err);
        return;
    }
    if (rv_file_close(w->fd, wal_close_done, NULL) < 0)
        (void)rv_sys_close(w->fd); /* ring full: a close does not block */
    w->fd = job->spare_fd;
    w->file_start = job->lsn;
    if (job->is_recycled)
        w->stats.spares_recycled++;
    if (wal_files_push(w, job->lsn) < 0)
        rv_warn("wal %s: file list full; file %llu will not be released", w->dir,
                (unsigned long long)job->lsn);
    w->stats.rolls++;
    free(job);
    wal_start_spare(w);
    wal_flush(w);
    if (w->cfg.on_roll != NULL)
        w->cfg.on_roll(w->cfg.on_roll_ctx, w->file_count);
}

/* Give the spare (or, when there is none, a new one) the new file's name. */
static void wal_roll_rename(struct wal_job *job)
{
    struct rv_wal *w = job->w;
    job->spare_fd = w->spare_state == WAL_SPARE_READY ? w->spare_fd : -1;
    if (job->spare_fd < 0 && job->recycle_id == UINT64_MAX && w->is_direct)
        job->recycle_id = wal_free_pop(w);
    w->spare_fd = -1;
    w->spare_state = WAL_SPARE_MISSING;
    if (rv_offload(wal_roll_work, job, wal_roll_done) < 0) {
        wal_free_return(w, job->recycle_id);
        job->recycle_id = UINT64_MAX;
        w->is_rolling = false;
        if (job->spare_fd >= 0) {
            w->spare_fd = job->spare_fd;
            w->spare_state = WAL_SPARE_READY;
        }
        free(job);
        wal_fail_groups(w, 0, -ENOMEM);
        return;
    }
    w->jobs++;
}

static void wal_roll_synced(void *arg, int64_t res)
{
    struct wal_job *job = arg;
    struct rv_wal *w = job->w;
    if (res < 0) {
        w->is_rolling = false;
        w->is_failed = true;
        rv_error("wal %s: fdatasync before roll failed: %s", w->dir, rv_strerror((int)res));
        free(job);
        wal_fail_groups(w, 0, -EIO);
        return;
    }
    w->durable_lsn = w->write_lsn;
    if (w->spare_state == WAL_SPARE_CREATING) {
        /* Two jobs must never race on the spare's name: wait for that one. */
        w->roll_waiting = job;
        return;
    }
    wal_roll_rename(job);
}

static void wal_roll(struct rv_wal *w)
{
    struct wal_job *job = calloc(1, sizeof(*job));
    if (job == NULL) {
        wal_fail_groups(w, 0, -ENOMEM);
        return;
    }
    *job = (struct wal_job){.w = w, .lsn = w->write_lsn, .spare_fd = -1, .recycle_id = UINT64_MAX};
    w->is_rolling = true;
    int rc = rv_file_fdatasync(w->fd, wal_roll_synced, job);
    if (rc < 0) {
        w->is_rolling = false;
        free(job);
        wal_queue_flush(w, 50); /* the ring is full: try again */
    }
}

static void wal_release_work(void *arg)
{
    struct wal_job *job = arg;
    for (uint32_t i = 0; i < job->count; i++) {
        char path[PATH_MAX], kept[PATH_MAX];
        int rc = job->is_kept_files
                     ? wal_free_path(path, sizeof(path), job->w->dir, job->starts[i])
                     : wal_file_path(path, sizeof(path), job->w->dir, job->starts[i]);
        bool is_kept = i >= job->count - job->recycle_count;
        if (rc == 0 && is_kept) {
            rc = wal_free_path(kept, sizeof(kept), job->w->dir, job->starts[i]);
            if (rc == 0)
                rc = rv_sys_rename(path, kept);
            if (rc == 0)
                continue;
            job->starts[i] = UINT64_MAX; /* not kept: removed instead */
            rc = 0;
        }
        if (rc == 0)
            rc = rv_sys_unlink(path);
        if (rc < 0 && rc != -ENOENT)
            job->rc = rc;
    }
    int rc = wal_sync_dir(job->w);
    if (job->rc == 0)
        job->rc = rc;
}

static void wal_release_done(void *arg)
{
    struct wal_job *job = arg;
    struct rv_wal *w = job->w;
    w->jobs--;
    RV_ASSERT(w->free_pending >= job->recycle_count);
    w->free_pending -= job->recycle_count;
    for (uint32_t i = job->count - job->recycle_count; i < job->count; i++) {
        if (job->starts[i] != UINT64_MAX)
            wal_free_return(w, job->starts[i]); /* kept: the next spares reuse it */
    }
    if (job->rc < 0)
        rv_warn("wal %s: removing old files: %s", w->dir, rv_strerror(job->rc));
    free(job->starts);
    free(job);
}

void rv_wal_release(rv_wal_t *w, uint64_t lsn)
{
    uint32_t n = 0;
    while (n + 1 < w->file_count && w->files[n + 1] <= lsn)
        n++; /* file n ends where file n + 1 starts; the current file stays */
    if (n == 0)
        return;
    struct wal_job *job = calloc(1, sizeof(*job));
    uint64_t *starts = malloc(n * sizeof(*starts));
    if (job == NULL || starts == NULL) {
        free(job);
        free(starts);
        return; /* released at the next checkpoint */
    }
    memcpy(starts, w->files, n * sizeof(*starts));
    /* Direct I/O keeps the newest few for reuse as spares (up to
     * RV_WAL_RECYCLE_MAX at once): no zero-filling of new ones. */
    uint32_t room = RV_WAL_RECYCLE_MAX - w->free_count - w->free_pending;
    uint32_t keep = !w->is_direct ? 0 : n < room ? n : room;
    *job = (struct wal_job){.w = w, .starts = starts, .count = n, .recycle_count = keep};
    w->jobs++;
    w->free_pending += keep;
    if (rv_offload(wal_release_work, job, wal_release_done) < 0) {
        job->recycle_count = 0;
        w->free_pending -= keep;
        wal_release_done(job);
        return;
    }
    memmove(w->files, w->files + n, (w->file_count - n) * sizeof(*w->files));
    w->file_count -= n;
}

void rv_wal_drop_kept(rv_wal_t *w)
{
    if (w->free_count == 0)
        return;
    struct wal_job *job = calloc(1, sizeof(*job));
    uint64_t *starts = malloc(w->free_count * sizeof(*starts));
    if (job == NULL || starts == NULL) {
        free(job);
        free(starts);
        return;
    }
    memcpy(starts, w->free_ids, w->free_count * sizeof(*starts));
    *job =
        (struct wal_job){.w = w, .starts = starts, .count = w->free_count, .is_kept_files = true};
    rv_info("wal %s: the disk is full: removing %u released files kept for reuse", w->dir,
            w->free_count);
    w->jobs++;
    if (rv_offload(wal_release_work, job, wal_release_done) < 0) {
        wal_release_done(job); /* kept: tried again at the next full disk */
        return;
    }
    w->free_count = 0;
}

/* ---- queries ------------------------------------------------------------------------------- */

uint64_t rv_wal_end_lsn(const rv_wal_t *w)
{
    return w->end_lsn;
}

uint64_t rv_wal_complete_lsn(const rv_wal_t *w)
{
    return w->complete_lsn;
}

uint64_t rv_wal_durable_lsn(const rv_wal_t *w)
{
    return w->durable_lsn;
}

bool rv_wal_is_idle(const rv_wal_t *w)
{
    return w->group_count == 0 && !w->is_rolling && !w->is_flush_queued && w->jobs == 0 &&
           !w->is_repairing;
}

bool rv_wal_is_failed(const rv_wal_t *w)
{
    return w->is_failed;
}

bool rv_wal_is_direct(const rv_wal_t *w)
{
    return w->is_direct;
}

uint32_t rv_wal_file_count(const rv_wal_t *w)
{
    return w->file_count;
}

void rv_wal_get_stats(const rv_wal_t *w, struct rv_wal_stats *out)
{
    *out = w->stats;
}
