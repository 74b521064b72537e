/*
 * storage/seg.c - segment files: naming, listing, scanning, recovery, removal.
 *
 * Everything here is blocking file work, run at start-up or on an rv_offload
 * helper; it touches only the struct rv_seg it is given, which belongs to the
 * partition's shard (the shard does not use it while a helper runs).
 *
 * Recovery reads the .log with pread through a window (SEG_WINDOW_BYTES, or one
 * whole batch when a batch is larger), never mmap, so a torn or corrupt file
 * costs a bounded amount of memory and never faults. What it keeps:
 *
 *   [ batches the index vouches for | scanned, valid batches | cut: invalid tail ]
 *   0                     last entry pos                     stop_pos          size
 *
 * A batch is valid when rv_batch_parse accepts it, its base offset is at least
 * the previous batch's next offset, and its offsets fit the segment (relative
 * offsets are int32 on disk). The first invalid batch and everything after it
 * is cut (ftruncate + fdatasync) and reported; data is never read past it.
 */
#include "storage/seg.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"
#include "core/sys.h"
#include "core/trace.h"

#define SEG_WINDOW_BYTES ((size_t)1 << 20)
#define SEG_PATH_BYTES   4096u
#define SEG_REL_MAX      ((uint64_t)INT32_MAX) /* relative offsets are int32 in the index */
#define SEG_LOG_SUFFIX   ".log"
#define SEG_LIST_CAP_MIN 8u

RV_STATIC_ASSERT(SEG_WINDOW_BYTES >= RV_BATCH_HEADER_BYTES);

/* Why the recovery callback stopped a scan at a batch rv_batch_parse accepted. */
enum seg_stop {
    SEG_STOP_OFFSET_BACKWARDS = 1, /* base offset below the previous next offset */
    SEG_STOP_OFFSET_RANGE = 2,     /* offsets outside what the segment can hold */
    SEG_STOP_INDEX_MISMATCH = 3,   /* not the batch the last index entry names */
};

/* Reads a .log through a window of bytes. */
struct seg_reader {
    int fd;
    uint64_t end_pos;         /* file size when the scan started */
    uint32_t max_batch_bytes; /* a batch may claim no more */
    uint8_t *buf;
    size_t cap_bytes; /* allocated size of buf */
    uint64_t win_pos; /* file position of buf[0] */
    size_t win_bytes; /* valid bytes in buf */
};

/* State of one rv_seg_recover. */
struct seg_recover {
    struct rv_seg *seg;
    const char *dir_path;
    char log_path[SEG_PATH_BYTES];
    struct seg_reader reader;
    uint64_t start_pos;   /* where the scan began */
    uint64_t stop_pos;    /* end of the last valid batch */
    uint64_t next_offset; /* one past the last valid batch's last offset */
    int64_t max_ts_ms;    /* largest max timestamp scanned */
    uint64_t batches;     /* valid batches scanned */
    bool is_tail;         /* the first batch must be the one of the last index entry */
    int stop_code;        /* enum seg_stop, or 0 */
    int tail_error;       /* rv_batch_parse's error or -ENODATA for a torn batch */
};

static uint32_t seg_get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

void rv_seg_init(struct rv_seg *seg, uint64_t base_offset, uint32_t index_interval_bytes)
{
    RV_ASSERT(seg != NULL);
    RV_ASSERT(base_offset <= (uint64_t)INT64_MAX);
    memset(seg, 0, sizeof(*seg));
    seg->base_offset = base_offset;
    seg->next_offset = base_offset;
    seg->max_timestamp_ms = -1;
    rv_idx_init(&seg->idx, base_offset, index_interval_bytes);
}

void rv_seg_fini(struct rv_seg *seg)
{
    if (seg == NULL)
        return;
    rv_idx_fini(&seg->idx);
}

static void seg_reader_init(struct seg_reader *r, int fd, uint64_t end_pos,
                            uint32_t max_batch_bytes)
{
    memset(r, 0, sizeof(*r));
    r->fd = fd;
    r->end_pos = end_pos;
    r->max_batch_bytes = max_batch_bytes;
}

static void seg_reader_fini(struct seg_reader *r)
{
    free(r->buf);
    r->buf = NULL;
}

/*
 * Point *out at bytes [pos, pos + len) of the file, reading a new window
 * starting at pos when they are not in the current one. Returns 1 when they
 * are there, 0 when the file ends first (a torn batch), or -errno.
 */
static int seg_reader_get(struct seg_reader *r, uint64_t pos, size_t len, const uint8_t **out)
{
    RV_ASSERT(len > 0 && len <= r->max_batch_bytes);
    if (pos >= r->win_pos && pos + len <= r->win_pos + r->win_bytes) {
        *out = r->buf + (pos - r->win_pos);
        return 1;
    }
    if (pos > r->end_pos || len > r->end_pos - pos)
        return 0;
    uint64_t left = r->end_pos - pos;
    size_t want = left < SEG_WINDOW_BYTES ? (size_t)left : SEG_WINDOW_BYTES;
    want = want < len ? len : want;
    r->win_bytes = 0;
    if (want > r->cap_bytes) {
        /* Nothing in the old window is needed again: free before allocating. */
        free(r->buf);
        r->cap_bytes = 0;
        r->buf = malloc(want);
        if (r->buf == NULL)
            return -ENOMEM;
        r->cap_bytes = want;
    }
    size_t got = 0;
    while (got < want) {
        ssize_t n = rv_sys_pread(r->fd, r->buf + got, want - got, (off_t)(pos + got));
        if (n < 0)
            return (int)n;
        if (n == 0)
            break; /* the file shrank since it was measured */
        got += (size_t)n;
    }
    r->win_pos = pos;
    r->win_bytes = got;
    if (got < len)
        return 0;
    *out = r->buf;
    return 1;
}

/*
 * Parse the batch at pos into *view. Returns 1 for a batch rv_batch_parse
 * accepts, 0 at the end of the file or at an invalid batch (then *tail_error
 * says why), or -errno when reading fails.
 */
static int seg_scan_step(struct seg_reader *r, uint64_t pos, struct rv_batch_view *view,
                         int *tail_error)
{
    if (pos == r->end_pos)
        return 0;
    const uint8_t *p;
    int rc = seg_reader_get(r, pos, RV_BATCH_LOG_OVERHEAD_BYTES, &p);
    if (rc <= 0) {
        *tail_error = rc == 0 ? -ENODATA : 0;
        return rc;
    }
    uint32_t length = seg_get_be32(p + RV_BATCH_LENGTH_POS);
    if (length < RV_BATCH_LENGTH_MIN || length > INT32_MAX) {
        *tail_error = -EBADMSG;
        return 0;
    }
    /* Check the claim before reading it, so garbage never sizes an allocation. */
    uint64_t size = (uint64_t)length + RV_BATCH_LOG_OVERHEAD_BYTES;
    if (size > r->max_batch_bytes) {
        *tail_error = -EMSGSIZE;
        return 0;
    }
    rc = seg_reader_get(r, pos, (size_t)size, &p);
    if (rc <= 0) {
        *tail_error = rc == 0 ? -ENODATA : 0;
        return rc;
    }
    rc = rv_batch_parse(p, (size_t)size, r->max_batch_bytes, view);
    if (rc < 0 || (uint64_t)rc != size) {
        *tail_error = rc < 0 ? rc : -EBADMSG;
        return 0;
    }
    return 1;
}

/*
 * Visit the valid batches from pos: stop at the end of the file (0), at an
 * invalid batch (0, *tail_error set), when fn returns non-zero (that value),
 * or when reading fails (-errno). *stop_pos is where it stopped: the end of
 * the last batch fn accepted.
 */
static int seg_scan_run(struct seg_reader *r, uint64_t pos, rv_seg_batch_fn *fn, void *arg,
                        uint64_t *stop_pos, int *tail_error)
{
    *tail_error = 0;
    /* Each batch takes at least a header: bounds the loop. */
    uint64_t steps_max = r->end_pos / RV_BATCH_HEADER_BYTES + 1;
    int rc = 0;
    for (uint64_t steps = 0;; steps++) {
        RV_ASSERT(steps <= steps_max);
        struct rv_batch_view view;
        rc = seg_scan_step(r, pos, &view, tail_error);
        if (rc <= 0)
            break;
        rc = fn(arg, &view, pos);
        if (rc != 0)
            break;
        RV_ASSERT(view.size_bytes >= RV_BATCH_HEADER_BYTES);
        pos += view.size_bytes;
    }
    *stop_pos = pos;
    return rc;
}

int rv_seg_scan_file(int fd, uint64_t pos, uint32_t max_batch_bytes, rv_seg_batch_fn *fn, void *arg,
                     uint64_t *stop_pos)
{
    RV_ASSERT(fd >= 0 && fn != NULL && stop_pos != NULL);
    RV_ASSERT(max_batch_bytes >= RV_BATCH_HEADER_BYTES);
    struct stat st;
    int rc = rv_sys_fstat(fd, &st);
    if (rc < 0)
        return rv_errf(rc, "seg: fstat fd %d", fd);
    if (pos > (uint64_t)st.st_size)
        return rv_errf(-EINVAL, "seg: scan from %" PRIu64 " past the end (%" PRIu64 ")", pos,
                       (uint64_t)st.st_size);
    struct seg_reader r;
    seg_reader_init(&r, fd, (uint64_t)st.st_size, max_batch_bytes);
    int tail_error;
    rc = seg_scan_run(&r, pos, fn, arg, stop_pos, &tail_error);
    seg_reader_fini(&r);
    if (rc == 0 && tail_error != 0)
        return rv_errf(tail_error, "seg: invalid batch at position %" PRIu64, *stop_pos);
    return rc;
}

/* rv_seg_batch_fn of recovery: check that offsets go forward and fit, and
 * index the batch. */
static int seg_recover_batch(void *arg, const struct rv_batch_view *batch, uint64_t pos)
{
    struct seg_recover *r = arg;
    struct rv_seg *seg = r->seg;
    if (batch->base_offset < 0 || (uint64_t)batch->base_offset < r->next_offset)
        return SEG_STOP_OFFSET_BACKWARDS;
    uint64_t first = (uint64_t)batch->base_offset;
    if (batch->last_offset_delta < 0 ||
        first - seg->base_offset > SEG_REL_MAX - (uint64_t)batch->last_offset_delta)
        return SEG_STOP_OFFSET_RANGE;
    if (r->is_tail && r->batches == 0 && first != r->next_offset)
        return SEG_STOP_INDEX_MISMATCH;
    /* The caller checked that the file fits uint32 positions. */
    RV_ASSERT(pos + batch->size_bytes <= UINT32_MAX);
    int rc = rv_idx_note_batch(&seg->idx, first, (uint32_t)pos, (uint32_t)batch->size_bytes,
                               batch->max_timestamp);
    if (rc < 0)
        return rc;
    r->next_offset = first + (uint64_t)batch->last_offset_delta + 1;
    r->max_ts_ms = batch->max_timestamp > r->max_ts_ms ? batch->max_timestamp : r->max_ts_ms;
    r->batches++;
    return 0;
}

/* Scan from pos with next_offset and is_tail set by the caller. Returns 0
 * (r->stop_pos and the reasons filled in) or -errno. */
static int seg_recover_run(struct seg_recover *r, uint64_t pos)
{
    r->start_pos = pos;
    r->batches = 0;
    r->max_ts_ms = -1;
    int rc = seg_scan_run(&r->reader, pos, seg_recover_batch, r, &r->stop_pos, &r->tail_error);
    r->stop_code = rc > 0 ? rc : 0;
    if (rc > 0)
        r->tail_error = -EBADMSG;
    if (rc < 0)
        return rv_errf(rc, "seg %s: scan at position %" PRIu64, r->log_path, r->stop_pos);
    return 0;
}

/* Scan the whole file into an empty index. */
static int seg_recover_full(struct seg_recover *r)
{
    rv_idx_reset(&r->seg->idx);
    r->next_offset = r->seg->base_offset;
    r->is_tail = false;
    return seg_recover_run(r, 0);
}

/* What of the index a tail scan may change: at its end only. */
struct seg_idx_mark {
    uint32_t count;
    uint32_t tcount;
    int64_t last_ts_ms;
};

static struct seg_idx_mark seg_idx_mark(const struct rv_idx *idx)
{
    return (struct seg_idx_mark){
        .count = idx->count,
        .tcount = idx->tcount,
        .last_ts_ms = idx->tcount > 0 ? idx->tentries[idx->tcount - 1].timestamp_ms : -1,
    };
}

/*
 * Load the index and scan the batches from its last entry on. Falls back to a
 * full scan when the files are missing or invalid, or when the last entry does
 * not name a valid batch with its offset (*is_rebuilt then set). *loaded
 * marks the index as loaded, to tell later whether the scan changed it.
 */
static int seg_recover_tail(struct seg_recover *r, bool *is_rebuilt, struct seg_idx_mark *loaded)
{
    struct rv_idx *idx = &r->seg->idx;
    int rc = rv_idx_load(idx, r->dir_path, r->reader.end_pos);
    if (rc == -ENOENT || rc == -EBADMSG) {
        rv_info("seg %s: rebuilding the index: %s", r->log_path, rv_err_msg());
        *is_rebuilt = true;
        return seg_recover_full(r);
    }
    if (rc < 0)
        return rc;
    *loaded = seg_idx_mark(idx);
    if (idx->count == 0)
        return seg_recover_full(r); /* nothing to trust: the same as a full scan */
    const struct rv_idx_entry *last = &idx->entries[idx->count - 1];
    r->next_offset = idx->base_offset + last->rel_offset;
    r->is_tail = true;
    rc = seg_recover_run(r, last->pos);
    if (rc < 0 || r->batches > 0)
        return rc;
    rv_info("seg %s: index entry at position %" PRIu32 " names no valid batch: rebuilding",
            r->log_path, last->pos);
    *is_rebuilt = true;
    return seg_recover_full(r);
}

/* Whether [from, to) of fd is zeros only: a direct write's padding (under a
 * block). A longer range, or a read error, is not taken for padding. */
static bool seg_is_zero_range(int fd, uint64_t from, uint64_t to)
{
    if (to - from > 4096)
        return false; /* padding is less than a block */
    uint8_t buf[4096];
    ssize_t n = rv_sys_pread(fd, buf, (size_t)(to - from), (off_t)from);
    if (n != (ssize_t)(to - from))
        return false;
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] != 0)
            return false;
    }
    return true;
}

/* Cut the invalid tail, if any, from the file and the index. */
static int seg_recover_cut(struct seg_recover *r, bool is_closed, struct rv_seg_recovery *report)
{
    uint64_t size = r->reader.end_pos;
    uint64_t cut = r->stop_pos;
    RV_ASSERT(cut >= r->start_pos && cut <= size);
    report->batches = r->batches;
    report->scanned_bytes = cut - r->start_pos;
    report->truncated_bytes = size - cut;
    report->tail_error = cut < size ? r->tail_error : 0;
    report->is_zero_tail = cut < size && seg_is_zero_range(r->reader.fd, cut, size);
    if (is_closed && cut < size && !report->is_zero_tail) {
        rv_error("seg %s: damaged batch at position %" PRIu64
                 " (%s) of a closed segment: its %" PRIu64
                 " bytes from there are kept, not cut; reads that meet them fail",
                 r->log_path, cut, rv_strerror(r->tail_error), size - cut);
        report->truncated_bytes = 0;
        report->damaged_bytes = size - cut;
        rv_idx_truncate(&r->seg->idx, r->next_offset, (uint32_t)cut);
        return 0;
    }
    if (report->is_zero_tail)
        rv_info("seg %s: %" PRIu64 " zero bytes after the last batch (a direct write's padding): "
                "cutting them",
                r->log_path, size - cut);
    else if (cut < size)
        rv_warn("seg %s: invalid batch at position %" PRIu64 " (%s%s): cutting %" PRIu64 " bytes",
                r->log_path, cut, rv_strerror(r->tail_error),
                r->stop_code == SEG_STOP_OFFSET_BACKWARDS ? ", offset goes backwards"
                : r->stop_code == SEG_STOP_OFFSET_RANGE   ? ", offset outside the segment"
                                                          : "",
                size - cut);
    if (cut < size) {
        int rc = rv_sys_ftruncate(r->reader.fd, (off_t)cut);
        if (rc < 0)
            return rv_errf(rc, "seg %s: truncate to %" PRIu64, r->log_path, cut);
        rc = rv_sys_fdatasync(r->reader.fd);
        if (rc < 0)
            return rv_errf(rc, "seg %s: fdatasync after truncate", r->log_path);
    }
    rv_idx_truncate(&r->seg->idx, r->next_offset, (uint32_t)cut);
    return 0;
}

/*
 * Scan, cut and save the index as the mode asks. On success the segment's
 * counters are set; on failure they are untouched (the index may be partly
 * filled: the caller resets it).
 */
static int seg_recover_fd(struct seg_recover *r, enum rv_seg_scan_mode mode,
                          struct rv_seg_recovery *report)
{
    struct rv_seg *seg = r->seg;
    bool is_rebuilt = mode == RV_SEG_SCAN_FULL;
    struct seg_idx_mark before = {0};
    int rc = is_rebuilt ? seg_recover_full(r) : seg_recover_tail(r, &is_rebuilt, &before);
    if (rc < 0)
        return rc;
    rc = seg_recover_cut(r, mode == RV_SEG_SCAN_CLOSED, report);
    if (rc < 0)
        return rc;
    struct seg_idx_mark after = seg_idx_mark(&seg->idx);
    bool is_changed = is_rebuilt || report->truncated_bytes > 0 || before.count != after.count ||
                      before.tcount != after.tcount || before.last_ts_ms != after.last_ts_ms;
    if (is_changed) {
        rc = rv_idx_save(&seg->idx, r->dir_path);
        if (rc < 0)
            return rc;
    }
    seg->idx.saved_changes = seg->idx.changes; /* the files hold these entries */
    report->is_index_rebuilt = is_rebuilt;
    seg->next_offset = r->next_offset;
    seg->size_bytes = r->stop_pos + report->damaged_bytes;
    seg->is_damaged = report->damaged_bytes > 0;
    /* The last time entry covers the batches before the scan start too. */
    seg->max_timestamp_ms = after.last_ts_ms > r->max_ts_ms ? after.last_ts_ms : r->max_ts_ms;
    return 0;
}

int rv_seg_recover(struct rv_seg *seg, const char *dir_path, enum rv_seg_scan_mode mode,
                   uint32_t max_batch_bytes, struct rv_seg_recovery *report)
{
    RV_ASSERT(seg != NULL && dir_path != NULL && report != NULL);
    RV_ASSERT(mode == RV_SEG_SCAN_TAIL || mode == RV_SEG_SCAN_FULL || mode == RV_SEG_SCAN_CLOSED);
    RV_ASSERT(max_batch_bytes >= RV_BATCH_HEADER_BYTES);
    RV_ASSERT(seg->idx.base_offset == seg->base_offset);
    memset(report, 0, sizeof(*report));
    struct seg_recover r = {.seg = seg, .dir_path = dir_path};
    int rc = rv_idx_file_name(r.log_path, sizeof(r.log_path), dir_path, seg->base_offset,
                              SEG_LOG_SUFFIX);
    if (rc < 0)
        return rv_errf(rc, "seg: name too long in %s", dir_path);
    int fd = rv_sys_open(r.log_path, O_RDWR, 0);
    if (fd < 0)
        return rv_errf(fd, "seg %s: open", r.log_path);
    struct stat st;
    rc = rv_sys_fstat(fd, &st);
    if (rc < 0) {
        rc = rv_errf(rc, "seg %s: fstat", r.log_path);
        goto err_close_fd;
    }
    if ((uint64_t)st.st_size > UINT32_MAX) {
        rc = rv_errf(-EFBIG, "seg %s: %" PRIu64 " bytes: positions must fit 32 bits", r.log_path,
                     (uint64_t)st.st_size);
        goto err_close_fd;
    }
    seg_reader_init(&r.reader, fd, (uint64_t)st.st_size, max_batch_bytes);
    rc = seg_recover_fd(&r, mode, report);
    seg_reader_fini(&r.reader);
    if (rc < 0)
        goto err_reset_idx;
    /* Whatever was written through fd is fdatasynced: closing cannot lose it. */
    (void)rv_sys_close(fd);
    return 0;

err_reset_idx:
    rv_idx_reset(&seg->idx);
err_close_fd:
    (void)rv_sys_close(fd); /* the recovery error is the one to report */
    return rc;
}

/* The base offset of a segment log name: 1, 0 for a file that is no segment
 * log, -EINVAL for a ".log" whose name does not parse. */
static int seg_parse_name(const char *name, uint64_t *out)
{
    size_t len = strlen(name);
    size_t suffix_len = strlen(SEG_LOG_SUFFIX);
    if (len < suffix_len || strcmp(name + len - suffix_len, SEG_LOG_SUFFIX) != 0)
        return 0;
    if (len != RV_SEG_NAME_DIGITS + suffix_len)
        return -EINVAL;
    uint64_t base = 0;
    for (size_t i = 0; i < RV_SEG_NAME_DIGITS; i++) {
        if (name[i] < '0' || name[i] > '9')
            return -EINVAL;
        uint64_t digit = (uint64_t)(name[i] - '0');
        if (base > ((uint64_t)INT64_MAX - digit) / 10)
            return -EINVAL; /* Kafka offsets are int64 */
        base = base * 10 + digit;
    }
    *out = base;
    return 1;
}

static int seg_cmp_base(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Append base to *bases (count used of *cap), doubling; -ENOMEM. */
static int seg_list_add(uint64_t **bases, uint32_t *count, uint32_t *cap, uint64_t base)
{
    if (*count == *cap) {
        if (*cap > UINT32_MAX / 2)
            return -ENOMEM;
        uint32_t new_cap = *cap == 0 ? SEG_LIST_CAP_MIN : *cap * 2;
        uint64_t *p = realloc(*bases, (size_t)new_cap * sizeof(*p));
        if (p == NULL)
            return -ENOMEM;
        *bases = p;
        *cap = new_cap;
    }
    (*bases)[(*count)++] = base;
    return 0;
}

/* Collect the segment bases of an open directory. */
static int seg_list_read(DIR *d, const char *dir_path, uint64_t **bases, uint32_t *count)
{
    uint32_t cap = 0;
    for (;;) {
        /* readdir has no shim (core/sys.h wraps descriptor calls); opening the
         * directory is the step fault tests fail. */
        errno = 0;
        struct dirent *de = readdir(d);
        if (de == NULL)
            return errno != 0 ? rv_errf(-errno, "seg: read directory %s", dir_path) : 0;
        if (de->d_type == DT_DIR)
            continue;
        uint64_t base;
        int rc = seg_parse_name(de->d_name, &base);
        if (rc < 0)
            rv_warn("seg: ignoring %s/%s: not a segment name", dir_path, de->d_name);
        if (rc <= 0)
            continue;
        rc = seg_list_add(bases, count, &cap, base);
        if (rc < 0)
            return rv_errf(rc, "seg: list %s", dir_path);
    }
}

int rv_seg_list(const char *dir_path, uint64_t **out, uint32_t *count)
{
    RV_ASSERT(dir_path != NULL && out != NULL && count != NULL);
    int fd = rv_sys_open(dir_path, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0)
        return rv_errf(fd, "seg: open directory %s", dir_path);
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        int rc = -errno;
        (void)rv_sys_close(fd); /* read-only: nothing to lose */
        return rv_errf(rc, "seg: fdopendir %s", dir_path);
    }
    uint64_t *bases = NULL;
    uint32_t n = 0;
    int rc = seg_list_read(d, dir_path, &bases, &n);
    closedir(d); /* read-only: nothing to lose; closes fd */
    if (rc < 0) {
        free(bases);
        return rc;
    }
    if (n > 1)
        qsort(bases, n, sizeof(*bases), seg_cmp_base);
    *out = bases;
    *count = n;
    return 0;
}

int rv_seg_create(const char *dir_path, uint64_t base_offset)
{
    RV_ASSERT(dir_path != NULL);
    char path[SEG_PATH_BYTES];
    int rc = rv_idx_file_name(path, sizeof(path), dir_path, base_offset, SEG_LOG_SUFFIX);
    if (rc < 0)
        return rv_errf(rc, "seg: name too long in %s", dir_path);
    int fd = rv_sys_open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0)
        return rv_errf(fd, "seg %s: create", path);
    rc = rv_sys_close(fd);
    if (rc < 0)
        goto err_unlink_log;
    /* The new name must survive a crash before anything is appended to it. */
    rc = rv_sys_fsync_dir(dir_path);
    if (rc < 0)
        goto err_unlink_log;
    return 0;

err_unlink_log:
    (void)rv_sys_unlink(path); /* so that a retry does not meet -EEXIST */
    return rv_errf(rc, "seg %s: create", path);
}

int rv_seg_remove(const char *dir_path, uint64_t base_offset)
{
    RV_ASSERT(dir_path != NULL);
    /* The indexes go first: a crash in between leaves a log without an index,
     * which recovery rebuilds, never a stale index beside a future log. */
    static const char *const suffixes[] = {".index", ".timeindex", SEG_LOG_SUFFIX};
    for (size_t i = 0; i < RV_ARRAY_LEN(suffixes); i++) {
        char path[SEG_PATH_BYTES];
        int rc = rv_idx_file_name(path, sizeof(path), dir_path, base_offset, suffixes[i]);
        if (rc < 0)
            return rv_errf(rc, "seg: name too long in %s", dir_path);
        rc = rv_sys_unlink(path);
        if (rc < 0 && rc != -ENOENT)
            return rv_errf(rc, "seg: unlink %s", path);
    }
    int rc = rv_sys_fsync_dir(dir_path);
    if (rc < 0)
        return rv_errf(rc, "seg: fsync directory %s", dir_path);
    return 0;
}
