/*
 * storage/idx.c - the sparse offset index and time index of one segment.
 *
 * Owned by the shard that owns the partition (see idx.h). Both arrays start
 * unallocated and double when full, so an idle partition with an empty segment
 * costs nothing here.
 *
 * Invariants (checked by idx_check):
 *   - offset entries strictly increase in rel_offset and in pos;
 *   - time entries strictly increase in timestamp_ms and in rel_offset;
 *   - each time entry's timestamp is the largest batch timestamp noted before
 *     the next time entry's offset (the last entry covers every batch noted),
 *     which is what makes rv_idx_lookup_time exact;
 *   - time entries sit at offsets of offset entries, at most one per entry,
 *     so the time index is as sparse as the offset index.
 *
 * Files are replaced crash-safely: write "<name>.tmp", fdatasync, rename over
 * the old file, then fsync the directory.
 */
#include "storage/idx.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"
#include "core/sys.h"

#define IDX_CAP_MIN     4u
#define IDX_REL_MAX     ((uint32_t)INT32_MAX) /* on disk a relative offset is an int32 */
#define IDX_IO_BYTES    (24u * 256u)          /* a multiple of both entry sizes */
#define IDX_PATH_BYTES  4096u
#define IDX_SUFFIX      ".index"
#define IDX_TIME_SUFFIX ".timeindex"

RV_STATIC_ASSERT(IDX_IO_BYTES % RV_IDX_ENTRY_BYTES == 0);
RV_STATIC_ASSERT(IDX_IO_BYTES % RV_TIDX_ENTRY_BYTES == 0);

/* Which of the two files a file-level helper works on. */
enum idx_kind {
    IDX_KIND_OFFSET,
    IDX_KIND_TIME,
};

static void idx_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t idx_get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void idx_put_be64(uint8_t *p, uint64_t v)
{
    idx_put_be32(p, (uint32_t)(v >> 32));
    idx_put_be32(p + 4, (uint32_t)v);
}

static uint64_t idx_get_be64(const uint8_t *p)
{
    return (uint64_t)idx_get_be32(p) << 32 | idx_get_be32(p + 4);
}

/* Whether both arrays hold their invariants (O(n): use through RV_DASSERT). */
static bool idx_check(const struct rv_idx *idx)
{
    if (idx->count > idx->cap || idx->tcount > idx->tcap)
        return false;
    for (uint32_t i = 1; i < idx->count; i++) {
        if (idx->entries[i].rel_offset <= idx->entries[i - 1].rel_offset ||
            idx->entries[i].pos <= idx->entries[i - 1].pos)
            return false;
    }
    for (uint32_t i = 1; i < idx->tcount; i++) {
        if (idx->tentries[i].timestamp_ms <= idx->tentries[i - 1].timestamp_ms ||
            idx->tentries[i].rel_offset <= idx->tentries[i - 1].rel_offset)
            return false;
    }
    return true;
}

void rv_idx_init(struct rv_idx *idx, uint64_t base_offset, uint32_t interval_bytes)
{
    RV_ASSERT(idx != NULL);
    memset(idx, 0, sizeof(*idx));
    idx->base_offset = base_offset;
    idx->interval_bytes = interval_bytes;
}

void rv_idx_fini(struct rv_idx *idx)
{
    if (idx == NULL)
        return;
    free(idx->entries);
    free(idx->tentries);
    idx->entries = NULL;
    idx->tentries = NULL;
    idx->count = idx->cap = idx->tcount = idx->tcap = 0;
}

void rv_idx_reset(struct rv_idx *idx)
{
    RV_ASSERT(idx != NULL);
    idx->count = 0;
    idx->tcount = 0;
    idx->bytes_since_last = 0;
    idx->changes++;
}

/* Make room for one more element in *arr (count used of *cap); -ENOMEM. */
static int idx_grow(void **arr, uint32_t *cap, uint32_t count, size_t elem_bytes)
{
    if (count < *cap)
        return 0;
    RV_ASSERT(count == *cap);
    if (*cap > UINT32_MAX / 2)
        return -ENOMEM;
    uint32_t new_cap = *cap == 0 ? IDX_CAP_MIN : *cap * 2;
    void *p = realloc(*arr, (size_t)new_cap * elem_bytes);
    if (p == NULL)
        return -ENOMEM;
    *arr = p;
    *cap = new_cap;
    return 0;
}

/*
 * Cover max_ts_ms in the time index. The entry for a new maximum sits at
 * `anchor`, the first offset of the current offset-index interval: every batch
 * before it is covered by the entries before, so records with a timestamp >=
 * the new maximum cannot come earlier. An entry already at the anchor is raised
 * instead, so an entry only ever covers the batches of its own intervals and
 * cutting the index at an offset entry leaves exact timestamps behind.
 */
static int idx_note_time(struct rv_idx *idx, uint32_t anchor, int64_t max_ts_ms)
{
    struct rv_tidx_entry *last = idx->tcount > 0 ? &idx->tentries[idx->tcount - 1] : NULL;
    if (last != NULL && max_ts_ms <= last->timestamp_ms)
        return 0;
    if (last != NULL && last->rel_offset >= anchor) {
        last->timestamp_ms = max_ts_ms;
        return 0;
    }
    int rc = idx_grow((void **)&idx->tentries, &idx->tcap, idx->tcount, sizeof(*last));
    if (rc < 0) {
        /* Raising the last entry keeps every answer at or before the records. */
        if (last != NULL)
            last->timestamp_ms = max_ts_ms;
        return rc;
    }
    idx->tentries[idx->tcount++] = (struct rv_tidx_entry){max_ts_ms, anchor};
    return 0;
}

int rv_idx_note_batch(struct rv_idx *idx, uint64_t first, uint32_t pos, uint32_t bytes,
                      int64_t max_ts_ms)
{
    RV_ASSERT(idx != NULL);
    RV_ASSERT(first >= idx->base_offset && first - idx->base_offset <= IDX_REL_MAX);
    uint32_t rel = (uint32_t)(first - idx->base_offset);
    uint32_t count_before = idx->count;
    uint32_t tcount_before = idx->tcount;
    int64_t ts_before = idx->tcount > 0 ? idx->tentries[idx->tcount - 1].timestamp_ms : -1;
    const struct rv_idx_entry *last = idx->count > 0 ? &idx->entries[idx->count - 1] : NULL;
    if (last != NULL) {
        /* Batches come in order; equal means the indexed batch is noted again
         * (tail recovery starts at the last entry). */
        RV_ASSERT(rel >= last->rel_offset && pos >= last->pos);
        RV_ASSERT((rel == last->rel_offset) == (pos == last->pos));
    }
    int rc = 0;
    if (last != NULL && rel == last->rel_offset) {
        /* What the time index knew from here on is noted again batch by batch. */
        while (idx->tcount > 0 && idx->tentries[idx->tcount - 1].rel_offset >= rel)
            idx->tcount--;
        idx->bytes_since_last = 0;
    } else if (last == NULL || idx->bytes_since_last >= idx->interval_bytes) {
        rc = idx_grow((void **)&idx->entries, &idx->cap, idx->count, sizeof(*idx->entries));
        if (rc == 0) {
            idx->entries[idx->count++] = (struct rv_idx_entry){rel, pos};
            idx->bytes_since_last = 0;
        }
    }
    uint32_t anchor = idx->count > 0 ? idx->entries[idx->count - 1].rel_offset : rel;
    int trc = idx_note_time(idx, anchor, max_ts_ms);
    idx->bytes_since_last =
        bytes > UINT32_MAX - idx->bytes_since_last ? UINT32_MAX : idx->bytes_since_last + bytes;
    /* Entries only grow at the end, and a time entry noted again sits where it
     * was: counts and the last timestamp tell whether the files went stale. */
    int64_t ts_after = idx->tcount > 0 ? idx->tentries[idx->tcount - 1].timestamp_ms : -1;
    if (idx->count != count_before || idx->tcount != tcount_before || ts_after != ts_before)
        idx->changes++;
    RV_DASSERT(idx_check(idx));
    return rc != 0 ? rc : trc;
}

uint32_t rv_idx_lookup(const struct rv_idx *idx, uint64_t offset)
{
    RV_ASSERT(idx != NULL);
    if (idx->count == 0 || offset < idx->base_offset + idx->entries[0].rel_offset)
        return 0;
    uint64_t rel = offset - idx->base_offset;
    /* Invariant: entries[lo].rel_offset <= rel, and every entry past hi is above it. */
    uint32_t lo = 0;
    uint32_t hi = idx->count - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo + 1) / 2;
        if (idx->entries[mid].rel_offset <= rel)
            lo = mid;
        else
            hi = mid - 1;
    }
    RV_ASSERT(idx->entries[lo].rel_offset <= rel);
    return idx->entries[lo].pos;
}

int64_t rv_idx_lookup_time(const struct rv_idx *idx, int64_t ts_ms)
{
    RV_ASSERT(idx != NULL);
    /* The first entry with timestamp >= ts_ms, by bisection over [lo, hi). */
    uint32_t lo = 0;
    uint32_t hi = idx->tcount;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (idx->tentries[mid].timestamp_ms < ts_ms)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == idx->tcount)
        return -1;
    return (int64_t)(idx->base_offset + idx->tentries[lo].rel_offset);
}

void rv_idx_truncate(struct rv_idx *idx, uint64_t offset, uint32_t pos)
{
    RV_ASSERT(idx != NULL);
    uint64_t rel = offset < idx->base_offset ? 0 : offset - idx->base_offset;
    uint32_t count_before = idx->count;
    uint32_t tcount_before = idx->tcount;
    while (idx->count > 0 && (idx->entries[idx->count - 1].rel_offset >= rel ||
                              idx->entries[idx->count - 1].pos >= pos))
        idx->count--;
    while (idx->tcount > 0 && idx->tentries[idx->tcount - 1].rel_offset >= rel)
        idx->tcount--;
    /* The next append is measured from the last surviving entry. */
    idx->bytes_since_last = 0;
    if (idx->count > 0)
        idx->bytes_since_last = pos - idx->entries[idx->count - 1].pos;
    if (idx->count != count_before || idx->tcount != tcount_before)
        idx->changes++;
    RV_DASSERT(idx_check(idx));
}

int rv_idx_file_name(char *out, size_t len, const char *dir_path, uint64_t base, const char *suffix)
{
    RV_ASSERT(out != NULL && dir_path != NULL && suffix != NULL);
    int n = snprintf(out, len, "%s/%020" PRIu64 "%s", dir_path, base, suffix);
    if (n < 0 || (size_t)n >= len)
        return -ENAMETOOLONG;
    return 0;
}

/* The suffix and entry size of one of the two files. */
static const char *idx_suffix(enum idx_kind kind)
{
    return kind == IDX_KIND_OFFSET ? IDX_SUFFIX : IDX_TIME_SUFFIX;
}

static size_t idx_entry_bytes(enum idx_kind kind)
{
    return kind == IDX_KIND_OFFSET ? RV_IDX_ENTRY_BYTES : RV_TIDX_ENTRY_BYTES;
}

/* Write len bytes at pos, going on after short writes. */
static int idx_pwrite_all(int fd, const uint8_t *buf, size_t len, uint64_t pos)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = rv_sys_pwrite(fd, buf + done, len - done, (off_t)(pos + done));
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -EIO; /* a regular file never accepts nothing; do not spin */
        done += (size_t)n;
    }
    return 0;
}

/* Encode the entries of one kind in IDX_IO_BYTES pieces and write them at 0. */
static int idx_write_entries(const struct rv_idx *idx, enum idx_kind kind, int fd)
{
    uint8_t buf[IDX_IO_BYTES];
    size_t entry_bytes = idx_entry_bytes(kind);
    uint32_t count = kind == IDX_KIND_OFFSET ? idx->count : idx->tcount;
    uint64_t pos = 0;
    uint32_t i = 0;
    while (i < count) {
        size_t n = 0;
        for (; i < count && n + entry_bytes <= sizeof(buf); i++, n += entry_bytes) {
            if (kind == IDX_KIND_OFFSET) {
                idx_put_be32(buf + n, idx->entries[i].rel_offset);
                idx_put_be32(buf + n + 4, idx->entries[i].pos);
            } else {
                idx_put_be64(buf + n, (uint64_t)idx->tentries[i].timestamp_ms);
                idx_put_be32(buf + n + 8, idx->tentries[i].rel_offset);
            }
        }
        int rc = idx_pwrite_all(fd, buf, n, pos);
        if (rc < 0)
            return rc;
        pos += n;
    }
    return 0;
}

/* Replace one index file: write "<name>.tmp", fdatasync, rename over <name>.
 * The caller fsyncs the directory. */
static int idx_save_file(const struct rv_idx *idx, enum idx_kind kind, const char *dir_path)
{
    char path[IDX_PATH_BYTES];
    char tmp[IDX_PATH_BYTES + 4];
    int rc = rv_idx_file_name(path, sizeof(path), dir_path, idx->base_offset, idx_suffix(kind));
    if (rc < 0)
        return rv_errf(rc, "idx: name too long in %s", dir_path);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = rv_sys_open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return rv_errf(fd, "idx: create %s", tmp);
    rc = idx_write_entries(idx, kind, fd);
    if (rc < 0)
        goto err_close_fd;
    rc = rv_sys_fdatasync(fd);
    if (rc < 0)
        goto err_close_fd;
    rc = rv_sys_close(fd);
    if (rc < 0)
        goto err_unlink_tmp;
    rc = rv_sys_rename(tmp, path);
    if (rc < 0)
        goto err_unlink_tmp;
    return 0;

err_close_fd:
    (void)rv_sys_close(fd); /* the write already failed; that error is the one to report */
err_unlink_tmp:
    (void)rv_sys_unlink(tmp); /* a stale .tmp is harmless: the next save truncates it */
    return rv_errf(rc, "idx: write %s", tmp);
}

int rv_idx_save(const struct rv_idx *idx, const char *dir_path)
{
    RV_ASSERT(idx != NULL && dir_path != NULL);
    RV_DASSERT(idx_check(idx));
    int rc = idx_save_file(idx, IDX_KIND_OFFSET, dir_path);
    if (rc < 0)
        return rc;
    rc = idx_save_file(idx, IDX_KIND_TIME, dir_path);
    if (rc < 0)
        return rc;
    rc = rv_sys_fsync_dir(dir_path);
    if (rc < 0)
        return rv_errf(rc, "idx: fsync directory %s", dir_path);
    return 0;
}

/* Decode and check one entry against the one before it (NULL for the first);
 * false when the file is invalid. */
static bool idx_decode_offset(const uint8_t *p, const struct rv_idx_entry *prev,
                              uint64_t log_size_bytes, struct rv_idx_entry *out)
{
    uint32_t rel = idx_get_be32(p);
    uint32_t pos = idx_get_be32(p + 4);
    if (rel > IDX_REL_MAX || pos >= log_size_bytes)
        return false;
    if (prev != NULL && (rel <= prev->rel_offset || pos <= prev->pos))
        return false;
    *out = (struct rv_idx_entry){rel, pos};
    return true;
}

static bool idx_decode_time(const uint8_t *p, const struct rv_tidx_entry *prev,
                            struct rv_tidx_entry *out)
{
    int64_t ts = (int64_t)idx_get_be64(p);
    uint32_t rel = idx_get_be32(p + 8);
    if (rel > IDX_REL_MAX)
        return false;
    if (prev != NULL && (ts <= prev->timestamp_ms || rel <= prev->rel_offset))
        return false;
    *out = (struct rv_tidx_entry){ts, rel};
    return true;
}

/* Decode n bytes of entries of one kind, appending to idx (room reserved). */
static int idx_decode_chunk(struct rv_idx *idx, enum idx_kind kind, const uint8_t *buf, size_t n,
                            uint64_t log_size_bytes)
{
    size_t entry_bytes = idx_entry_bytes(kind);
    for (size_t off = 0; off < n; off += entry_bytes) {
        bool is_ok;
        if (kind == IDX_KIND_OFFSET) {
            RV_ASSERT(idx->count < idx->cap);
            const struct rv_idx_entry *prev = idx->count ? &idx->entries[idx->count - 1] : NULL;
            is_ok = idx_decode_offset(buf + off, prev, log_size_bytes, &idx->entries[idx->count]);
            idx->count += is_ok;
        } else {
            RV_ASSERT(idx->tcount < idx->tcap);
            const struct rv_tidx_entry *prev = idx->tcount ? &idx->tentries[idx->tcount - 1] : NULL;
            is_ok = idx_decode_time(buf + off, prev, &idx->tentries[idx->tcount]);
            idx->tcount += is_ok;
        }
        if (!is_ok)
            return -EBADMSG;
    }
    return 0;
}

/* Size the array of one kind for `count` entries exactly (loaded indexes of
 * sealed segments never grow again). */
static int idx_reserve(struct rv_idx *idx, enum idx_kind kind, uint32_t count)
{
    if (count == 0)
        return 0;
    if (kind == IDX_KIND_OFFSET) {
        idx->entries = malloc((size_t)count * sizeof(*idx->entries));
        idx->cap = idx->entries ? count : 0;
        return idx->entries ? 0 : -ENOMEM;
    }
    idx->tentries = malloc((size_t)count * sizeof(*idx->tentries));
    idx->tcap = idx->tentries ? count : 0;
    return idx->tentries ? 0 : -ENOMEM;
}

/* Read and check the entries of an open file of `size` bytes into idx. */
static int idx_read_entries(struct rv_idx *idx, enum idx_kind kind, int fd, uint64_t size,
                            uint64_t log_size_bytes)
{
    uint8_t buf[IDX_IO_BYTES];
    size_t entry_bytes = idx_entry_bytes(kind);
    /* Every entry names a distinct batch of the log, so a valid file has at
     * most one entry per log byte: bounds the allocation by what is on disk. */
    if (size % entry_bytes != 0 || size / entry_bytes > log_size_bytes ||
        size / entry_bytes > UINT32_MAX)
        return -EBADMSG;
    int rc = idx_reserve(idx, kind, (uint32_t)(size / entry_bytes));
    if (rc < 0)
        return rc;
    for (uint64_t pos = 0; pos < size;) {
        size_t want = size - pos < sizeof(buf) ? (size_t)(size - pos) : sizeof(buf);
        ssize_t n = rv_sys_pread(fd, buf, want, (off_t)pos);
        if (n < 0)
            return (int)n;
        if ((size_t)n != want)
            return -EBADMSG; /* the file shrank under us: do not trust it */
        rc = idx_decode_chunk(idx, kind, buf, want, log_size_bytes);
        if (rc < 0)
            return rc;
        pos += want;
    }
    return 0;
}

/* Load one of the two files into idx (whose arrays of that kind are empty). */
static int idx_load_file(struct rv_idx *idx, enum idx_kind kind, const char *dir_path,
                         uint64_t log_size_bytes)
{
    char path[IDX_PATH_BYTES];
    int rc = rv_idx_file_name(path, sizeof(path), dir_path, idx->base_offset, idx_suffix(kind));
    if (rc < 0)
        return rv_errf(rc, "idx: name too long in %s", dir_path);
    int fd = rv_sys_open(path, O_RDONLY, 0);
    if (fd < 0)
        return rv_errf(fd, "idx: open %s", path);
    struct stat st;
    rc = rv_sys_fstat(fd, &st);
    if (rc == 0)
        rc = idx_read_entries(idx, kind, fd, (uint64_t)st.st_size, log_size_bytes);
    /* Nothing was written through fd, so closing it cannot lose data. */
    (void)rv_sys_close(fd);
    if (rc < 0)
        return rv_errf(rc, "idx: load %s", path);
    return 0;
}

int rv_idx_load(struct rv_idx *idx, const char *dir_path, uint64_t log_size_bytes)
{
    RV_ASSERT(idx != NULL && dir_path != NULL);
    struct rv_idx loaded;
    rv_idx_init(&loaded, idx->base_offset, idx->interval_bytes);
    int rc = idx_load_file(&loaded, IDX_KIND_OFFSET, dir_path, log_size_bytes);
    if (rc < 0)
        goto err_fini_loaded;
    rc = idx_load_file(&loaded, IDX_KIND_TIME, dir_path, log_size_bytes);
    if (rc < 0)
        goto err_fini_loaded;
    RV_DASSERT(idx_check(&loaded));
    rv_idx_fini(idx);
    *idx = loaded;
    return 0;

err_fini_loaded:
    rv_idx_fini(&loaded);
    rv_idx_reset(idx);
    return rc;
}
