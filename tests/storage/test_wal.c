/* tests/storage/test_wal.c - tests storage/wal.c: group commit, replay, cuts, faults. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "core/sys.h"
#include "storage/wal.h"
#include "tests/support/rt.h"

static char dir[] = "/tmp/rivven-wal-XXXXXX";
static char wal_dir[128];

static void setup(void)
{
    strcpy(dir, "/tmp/rivven-wal-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(wal_dir, sizeof(wal_dir), "%s/wal", dir);
}

static void teardown(void)
{
    rv_sys_fault_clear();
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(wal, .init = setup, .fini = teardown, .timeout = 120);

static void release_fn(void *p);
static void big_fn(void *p);

/* ---- helpers ---------------------------------------------------------------------------- */

#define MAXREC 20000

struct appender {
    rv_wal_t *wal;
    uint32_t count; /* records to append */
    uint32_t first; /* payload number of the first */
    uint32_t size;  /* payload bytes */
    bool needs_sync;
    int64_t results[MAXREC];
    uint32_t done;
    int append_rc; /* first failing rv_wal_append return, or 0 */
    struct test_signal all_done;
};

static uint8_t payloads[MAXREC][256];

static void fill_payload(uint32_t n, uint32_t size)
{
    for (uint32_t i = 0; i < size; i++)
        payloads[n][i] = (uint8_t)(n * 31 + i);
}

static void appender_done(void *arg, int64_t lsn_or_err)
{
    struct appender *a = arg;
    a->results[a->done++] = lsn_or_err;
    if (a->done == a->count)
        test_signal_post(&a->all_done);
}

static void appender_run(void *arg)
{
    struct appender *a = arg;
    for (uint32_t i = 0; i < a->count; i++) {
        uint32_t n = a->first + i;
        fill_payload(n, a->size);
        int rc = rv_wal_append(a->wal, RV_WAL_BATCH, 1000 + n, payloads[n], a->size, a->needs_sync,
                               appender_done, a);
        if (rc < 0) {
            a->append_rc = rc;
            a->count = a->done; /* no callback for the refused ones */
            if (a->done == a->count)
                test_signal_post(&a->all_done);
            return;
        }
    }
}

/* Append `count` records on shard 0 and wait for every completion. */
static struct appender *append_n(rv_runtime_t *rt, rv_wal_t *wal, uint32_t first, uint32_t count,
                                 uint32_t size, bool needs_sync)
{
    static struct appender a;
    memset(&a, 0, sizeof(a));
    a = (struct appender){
        .wal = wal, .count = count, .first = first, .size = size, .needs_sync = needs_sync};
    test_signal_init(&a.all_done);
    test_run_on(rt, 0, appender_run, &a);
    if (a.count > 0)
        test_signal_wait(&a.all_done);
    return &a;
}

struct replayed {
    uint32_t count;
    uint64_t lsns[MAXREC];
    uint64_t keys[MAXREC];
    uint32_t bad_payloads;
    int fail_at; /* return an error at this record, -1 never */
};

static int replay_cb(void *arg, const struct rv_wal_record *rec)
{
    struct replayed *r = arg;
    if ((int)r->count == r->fail_at)
        return -ECANCELED;
    uint32_t n = (uint32_t)(rec->key - 1000);
    if (n >= MAXREC || rec->type != RV_WAL_BATCH)
        r->bad_payloads++;
    else if (memcmp(rec->payload, payloads[n], rec->len) != 0)
        r->bad_payloads++;
    r->lsns[r->count] = rec->lsn;
    r->keys[r->count] = rec->key;
    r->count++;
    return 0;
}

static rv_wal_t *wal_open_dir(uint64_t file_bytes, uint64_t from, struct replayed *r,
                              struct rv_wal_report *rep)
{
    struct rv_wal_config cfg;
    rv_wal_config_init(&cfg);
    cfg.dir = wal_dir;
    cfg.file_bytes = file_bytes;
    cfg.group_bytes_max = (uint32_t)(file_bytes / 4);
    cfg.io = test_wal_io();
    rv_wal_t *w = NULL;
    int rc = rv_wal_open(&w, &cfg, from, r ? replay_cb : NULL, r, rep);
    cr_assert_eq(rc, 0, "rv_wal_open: %s: %s", rv_strerror(rc), rv_err_msg());
    return w;
}

static struct replayed replay;

static void reset_replay(void)
{
    memset(&replay, 0, sizeof(replay));
    replay.fail_at = -1;
}

/* Close on the test thread once shard 0 has nothing in flight. */
struct idle_check {
    rv_wal_t *wal;
    bool is_idle;
};

static void idle_probe(void *arg)
{
    struct idle_check *c = arg;
    c->is_idle = rv_wal_is_idle(c->wal);
}

/* Wait on the test thread until shard 0's WAL has nothing in flight (jobs too). */
static void wal_wait_idle(rv_runtime_t *rt, rv_wal_t *w)
{
    struct idle_check c = {.wal = w};
    for (int i = 0; i < 2000 && !c.is_idle; i++) {
        test_run_on(rt, 0, idle_probe, &c);
        if (!c.is_idle)
            usleep(1000);
    }
    cr_assert(c.is_idle, "wal never became idle");
}

static void wal_close_when_idle(rv_runtime_t *rt, rv_wal_t *w)
{
    wal_wait_idle(rt, w);
    rv_wal_close(w);
}

/* Files of the WAL directory whose names start with prefix and end with suffix. */
static uint32_t count_names(const char *prefix, const char *suffix)
{
    DIR *d = opendir(wal_dir);
    cr_assert_not_null(d);
    uint32_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name), s = strlen(suffix);
        if (l > s && strcmp(de->d_name + l - s, suffix) == 0 &&
            strncmp(de->d_name, prefix, strlen(prefix)) == 0)
            n++;
    }
    closedir(d);
    return n;
}

static uint32_t count_files(const char *suffix)
{
    return count_names("", suffix);
}

/* ---- tests ---------------------------------------------------------------------------- */

Test(wal, fresh_directory_gets_a_current_file_and_a_spare)
{
    struct rv_wal_report rep;
    rv_wal_t *w = wal_open_dir(1 << 20, 0, NULL, &rep);
    cr_assert_eq(rv_wal_end_lsn(w), 0);
    cr_assert_eq(rep.records, 0);
    cr_assert_eq(count_files(".wal"), 1);
    cr_assert_eq(count_files(".tmp"), 1, "spare");
    rv_wal_close(w);
}

Test(wal, synced_appends_replay_in_order_with_their_lsns)
{
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = wal_open_dir(1 << 20, 0, NULL, NULL);
    struct appender *a = append_n(rt, w, 0, 500, 100, true);
    cr_assert_eq(a->append_rc, 0);
    cr_assert_eq(a->done, 500);
    for (uint32_t i = 0; i < 500; i++)
        cr_assert_eq(a->results[i], (int64_t)i * (RV_WAL_HEADER_BYTES + 100), "lsn of %u", i);
    uint64_t end = rv_wal_end_lsn(w);
    cr_assert_eq(rv_wal_durable_lsn(w), end);
    struct rv_wal_stats st;
    rv_wal_get_stats(w, &st);
    cr_assert_lt(st.syncs, 50, "500 appends in one turn share few fdatasyncs (%llu)",
                 (unsigned long long)st.syncs);
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);

    reset_replay();
    struct rv_wal_report rep;
    w = wal_open_dir(1 << 20, 0, &replay, &rep);
    cr_assert_eq(replay.count, 500);
    cr_assert_eq(replay.bad_payloads, 0);
    cr_assert_eq(rep.cut_bytes, 0);
    cr_assert_eq(rep.end_lsn, end);
    cr_assert_eq(rv_wal_end_lsn(w), end, "appends continue at the end");
    for (uint32_t i = 0; i < 500; i++)
        cr_assert_eq(replay.keys[i], 1000 + i);
    rv_wal_close(w);
}

Test(wal, replay_starts_at_the_checkpoint_lsn)
{
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = wal_open_dir(1 << 20, 0, NULL, NULL);
    struct appender *a = append_n(rt, w, 0, 100, 50, true);
    uint64_t from = (uint64_t)a->results[40];
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);
    reset_replay();
    w = wal_open_dir(1 << 20, from, &replay, NULL);
    cr_assert_eq(replay.count, 60);
    cr_assert_eq(replay.keys[0], 1040);
    rv_wal_close(w);
}

Test(wal, rolls_across_files_and_release_deletes_covered_ones)
{
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = wal_open_dir(64 << 10, 0, NULL, NULL);
    /* 3000 records of 228 bytes: about 10 files of 64 KiB. */
    struct appender *a = NULL;
    for (uint32_t round = 0; round < 6; round++) {
        a = append_n(rt, w, round * 500, 500, 200, round % 2 == 0);
        cr_assert_eq(a->append_rc, 0);
        for (uint32_t i = 0; i < 500; i++)
            cr_assert_geq(a->results[i], 0, "append %u failed: %s", i,
                          rv_strerror((int)a->results[i]));
    }
    uint64_t end = rv_wal_end_lsn(w);
    struct rv_wal_stats st;
    rv_wal_get_stats(w, &st);
    cr_assert_geq(st.rolls, 8);
    uint32_t files = rv_wal_file_count(w);
    cr_assert_geq(files, 9);
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);

    reset_replay();
    struct rv_wal_report rep;
    w = wal_open_dir(64 << 10, 0, &replay, &rep);
    cr_assert_eq(replay.count, 3000);
    cr_assert_eq(replay.bad_payloads, 0);
    cr_assert_eq(rep.end_lsn, end);
    for (uint32_t i = 1; i < 3000; i++)
        cr_assert_gt(replay.lsns[i], replay.lsns[i - 1]);

    rt = test_rt_open(1);
    struct rv_wal *wp = w;
    uint64_t half = replay.lsns[1500];
    struct {
        rv_wal_t *w;
        uint64_t lsn;
    } rel = {wp, half};
    test_run_on(rt, 0, release_fn, &rel);
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);
    cr_assert_lt(count_files(".wal"), files, "covered files were removed");
    reset_replay();
    w = wal_open_dir(64 << 10, half, &replay, NULL);
    cr_assert_eq(replay.count, 1500, "everything from the checkpoint is still there");
    rv_wal_close(w);
}

static void release_fn(void *p)
{
    struct {
        rv_wal_t *w;
        uint64_t lsn;
    } *rel = p;
    rv_wal_release(rel->w, rel->lsn);
}

/* The one WAL file's path. */
static void first_file(char *out, size_t len)
{
    DIR *d = opendir(wal_dir);
    struct dirent *de;
    out[0] = '\0';
    while ((de = readdir(d)) != NULL) {
        if (strlen(de->d_name) == 24 && strstr(de->d_name, ".wal"))
            snprintf(out, len, "%s/%s", wal_dir, de->d_name);
    }
    closedir(d);
    cr_assert_neq(out[0], '\0');
}

static void write_byte(const char *path, off_t pos, uint8_t v)
{
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pwrite(fd, &v, 1, pos), 1);
    close(fd);
}

/* Descriptors of the process, all taken by the test, handed back later. */
#define FILLERS_MAX 256
static int fillers[FILLERS_MAX];
static int filler_count;

static void *fillers_release_later(void *arg)
{
    (void)arg;
    usleep(100000);
    for (int i = 0; i < filler_count; i++)
        close(fillers[i]);
    return NULL;
}

/* A roll that meets EMFILE (no descriptor to sync the directory with, or to
 * make a spare) waits and tries again instead of failing its groups. */
Test(wal, a_roll_out_of_descriptors_waits_for_one)
{
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = wal_open_dir(64 << 10, 0, NULL, NULL);
    struct rlimit saved, rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &saved), 0);
    rl = saved;
    rl.rlim_cur = 64;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    filler_count = 0;
    int fd;
    while (filler_count < FILLERS_MAX && (fd = open("/dev/null", O_RDONLY)) >= 0)
        fillers[filler_count++] = fd;
    cr_assert_lt(filler_count, FILLERS_MAX, "the limit was reached");
    pthread_t tid;
    cr_assert_eq(pthread_create(&tid, NULL, fillers_release_later, NULL), 0);
    struct appender *a = append_n(rt, w, 0, 500, 200, true); /* rolls once, at least */
    cr_assert_eq(a->append_rc, 0, "%s", rv_strerror(a->append_rc));
    for (uint32_t i = 0; i < 500; i++)
        cr_assert_geq(a->results[i], 0, "append %u failed: %s", i, rv_strerror((int)a->results[i]));
    pthread_join(tid, NULL);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &saved), 0);
    struct rv_wal_stats st;
    rv_wal_get_stats(w, &st);
    cr_assert_geq(st.rolls, 1);
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);
    reset_replay();
    w = wal_open_dir(64 << 10, 0, &replay, NULL);
    cr_assert_eq(replay.count, 500);
    cr_assert_eq(replay.bad_payloads, 0);
    rv_wal_close(w);
}

Test(wal, corrupt_record_cuts_the_tail_and_nothing_stale_comes_back)
{
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = wal_open_dir(1 << 20, 0, NULL, NULL);
    struct appender *a = append_n(rt, w, 0, 100, 100, true);
    int64_t lsn50 = a->results[50];
    wal_close_when_idle(rt, w);
    char path[256];
    first_file(path, sizeof(path));
    write_byte(path, lsn50 + RV_WAL_HEADER_BYTES + 10, 0xEE); /* inside record 50's payload */

    reset_replay();
    struct rv_wal_report rep;
    w = wal_open_dir(1 << 20, 0, &replay, &rep);
    cr_assert_eq(replay.count, 50, "records before the corrupt one");
    cr_assert_eq(replay.bad_payloads, 0);
    cr_assert_eq(rep.cut_reason, -EBADMSG);
    cr_assert_gt(rep.cut_bytes, 0);
    cr_assert_eq(rv_wal_end_lsn(w), (uint64_t)lsn50);
    /* Write 10 short records where 50 long ones were: records 60.. of the old
     * tail must not reappear behind them. */
    a = append_n(rt, w, 5000, 10, 10, true);
    cr_assert_eq(a->results[0], lsn50);
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);

    reset_replay();
    w = wal_open_dir(1 << 20, 0, &replay, &rep);
    cr_assert_eq(replay.count, 60);
    cr_assert_eq(replay.keys[59], 1000 + 5009);
    cr_assert_eq(rep.cut_bytes, 0, "clean after the cut");
    rv_wal_close(w);
}

Test(wal, torn_record_at_the_end_of_the_file_is_cut)
{
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = wal_open_dir(1 << 20, 0, NULL, NULL);
    struct appender *a = append_n(rt, w, 0, 20, 100, true);
    int64_t lsn19 = a->results[19];
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);
    char path[256];
    first_file(path, sizeof(path));
    cr_assert_eq(truncate(path, lsn19 + 40), 0); /* a torn write of record 19 */
    reset_replay();
    struct rv_wal_report rep;
    w = wal_open_dir(1 << 20, 0, &replay, &rep);
    cr_assert_eq(replay.count, 19);
    cr_assert_eq(rv_wal_end_lsn(w), (uint64_t)lsn19);
    rv_wal_close(w);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_size, 1 << 20, "preallocated again after the cut");
}

Test(wal, replay_callback_error_fails_the_open)
{
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = wal_open_dir(1 << 20, 0, NULL, NULL);
    append_n(rt, w, 0, 10, 10, true);
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);
    reset_replay();
    replay.fail_at = 3;
    struct rv_wal_config cfg;
    rv_wal_config_init(&cfg);
    cfg.dir = wal_dir;
    cfg.file_bytes = 1 << 20;
    rv_wal_t *w2 = NULL;
    cr_assert_eq(rv_wal_open(&w2, &cfg, 0, replay_cb, &replay, NULL), -ECANCELED);
    cr_assert_null(w2);
}

static rv_runtime_t *epoll_rt(void)
{
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    cfg.shard_count = 1;
    cfg.io_backend = RV_IO_EPOLL; /* file syscalls go through the fault shim */
    rv_runtime_t *rt = NULL;
    cr_assert_eq(rv_runtime_open(&rt, &cfg), 0);
    return rt;
}

static void arm_fault(void *arg)
{
    int *spec = arg;
    rv_sys_fault_fail_nth((uint32_t)spec[0], spec[1]);
}

Test(wal, failed_fdatasync_fails_the_group_and_is_sticky)
{
    rv_runtime_t *rt = epoll_rt();
    rv_wal_t *w = wal_open_dir(1 << 20, 0, NULL, NULL);
    int spec[2] = {2, -EIO}; /* call 1: the gather write; call 2: fdatasync */
    test_run_on(rt, 0, arm_fault, spec);
    struct appender *a = append_n(rt, w, 0, 5, 10, true);
    cr_assert(rv_sys_fault_fired());
    for (uint32_t i = 0; i < 5; i++)
        cr_assert_eq(a->results[i], -EIO, "append %u", i);
    cr_assert(rv_wal_is_failed(w));
    a = append_n(rt, w, 10, 1, 10, true);
    cr_assert_eq(a->append_rc, -EIO, "sticky");
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);
}

Test(wal, disk_full_write_fails_the_group_then_appends_work_again)
{
    rv_runtime_t *rt = epoll_rt();
    rv_wal_t *w = wal_open_dir(1 << 20, 0, NULL, NULL);
    int spec[2] = {1, -ENOSPC};
    test_run_on(rt, 0, arm_fault, spec);
    struct appender *a = append_n(rt, w, 0, 5, 10, true);
    for (uint32_t i = 0; i < 5; i++)
        cr_assert_eq(a->results[i], -ENOSPC);
    cr_assert_not(rv_wal_is_failed(w));
    cr_assert_eq(rv_wal_end_lsn(w), 0, "LSNs of the failed group are taken back");
    a = append_n(rt, w, 100, 3, 10, true);
    cr_assert_eq(a->results[0], 0);
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);
    reset_replay();
    w = wal_open_dir(1 << 20, 0, &replay, NULL);
    cr_assert_eq(replay.count, 3, "only the appends that succeeded");
    cr_assert_eq(replay.keys[0], 1100);
    rv_wal_close(w);
}

Test(wal, oversized_record_is_refused)
{
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = wal_open_dir(64 << 10, 0, NULL, NULL);
    static uint8_t big[70 << 10];
    struct {
        rv_wal_t *w;
        int rc;
    } c = {w, 0};
    (void)big;
    test_run_on(rt, 0, big_fn, &c);
    cr_assert_eq(c.rc, -EMSGSIZE);
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);
}

static void never_called(void *arg, int64_t res)
{
    (void)arg;
    (void)res;
    cr_assert_fail("no completion for a refused append");
}

static void big_fn(void *p)
{
    static uint8_t big[70 << 10];
    struct {
        rv_wal_t *w;
        int rc;
    } *c = p;
    c->rc = rv_wal_append(c->w, RV_WAL_BATCH, 1, big, sizeof(big), true, never_called, NULL);
}

/* ---- direct I/O ------------------------------------------------------------------------- */

/* Open the WAL in wal_dir with an explicit I/O mode; returns rv_wal_open's rc. */
static int wal_open_io(uint64_t file_bytes, enum rv_wal_io io, struct replayed *r, rv_wal_t **out)
{
    struct rv_wal_config cfg;
    rv_wal_config_init(&cfg);
    cfg.dir = wal_dir;
    cfg.file_bytes = file_bytes;
    cfg.group_bytes_max = (uint32_t)(file_bytes / 4);
    cfg.io = io;
    *out = NULL;
    return rv_wal_open(out, &cfg, 0, r ? replay_cb : NULL, r, NULL);
}

static rv_wal_t *wal_open_direct(uint64_t file_bytes, struct replayed *r)
{
    rv_wal_t *w = NULL;
    int rc = wal_open_io(file_bytes, RV_WAL_IO_DIRECT, r, &w);
    if (rc == -EINVAL)
        cr_skip_test("this filesystem refuses O_DIRECT: %s", rv_err_msg());
    cr_assert_eq(rc, 0, "rv_wal_open: %s: %s", rv_strerror(rc), rv_err_msg());
    cr_assert(rv_wal_is_direct(w));
    return w;
}

Test(wal, direct_groups_start_on_boundaries_and_replay_skips_the_pads)
{
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = wal_open_direct(1 << 20, NULL);
    /* Each round's appends join one group; the next round starts a new one. */
    for (uint32_t round = 0; round < 10; round++) {
        uint32_t size = 1 + round * 25;
        struct appender *a = append_n(rt, w, round * 30, 30, size, round % 2 == 0);
        cr_assert_eq(a->append_rc, 0);
        cr_assert_eq(a->results[0] % RV_WAL_DIRECT_ALIGN, 0, "round %u starts at lsn %lld", round,
                     (long long)a->results[0]);
        for (uint32_t i = 1; i < 30; i++)
            cr_assert_eq(a->results[i], a->results[i - 1] + RV_WAL_HEADER_BYTES + size);
    }
    uint64_t end = rv_wal_end_lsn(w);
    struct rv_wal_stats st;
    rv_wal_get_stats(w, &st);
    cr_assert_eq(end % RV_WAL_DIRECT_ALIGN, 0);
    cr_assert_gt(st.pad_bytes, 0);
    cr_assert_eq(st.bytes, end, "every byte, pads included, was written");
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);

    reset_replay();
    w = wal_open_direct(1 << 20, &replay);
    cr_assert_eq(replay.count, 300, "the records, not the pads");
    cr_assert_eq(replay.bad_payloads, 0);
    for (uint32_t i = 0; i < 300; i++)
        cr_assert_eq(replay.keys[i], 1000 + i);
    cr_assert_eq(rv_wal_end_lsn(w), end);
    rv_wal_close(w);
}

static uint8_t huge[300 << 10]; /* over a group (256 KiB here): a staging buffer of its own */

struct huge_append {
    rv_wal_t *w;
    int rc;
    int64_t lsn;
    struct test_signal done;
};

static void huge_done(void *arg, int64_t lsn_or_err)
{
    struct huge_append *h = arg;
    h->lsn = lsn_or_err;
    test_signal_post(&h->done);
}

static void huge_fn(void *p)
{
    struct huge_append *h = p;
    h->rc = rv_wal_append(h->w, RV_WAL_BATCH, 7, huge, sizeof(huge), true, huge_done, h);
    if (h->rc < 0)
        test_signal_post(&h->done);
}

static int huge_replay_cb(void *arg, const struct rv_wal_record *rec)
{
    uint32_t *ok = arg;
    if (rec->key == 7 && rec->len == sizeof(huge) && memcmp(rec->payload, huge, sizeof(huge)) == 0)
        (*ok)++;
    return 0;
}

Test(wal, direct_record_larger_than_a_group_is_staged_whole)
{
    for (size_t i = 0; i < sizeof(huge); i++)
        huge[i] = (uint8_t)(i * 7 + i / 4096);
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = wal_open_direct(1 << 20, NULL);
    append_n(rt, w, 0, 3, 50, false);
    struct huge_append h = {.w = w};
    test_signal_init(&h.done);
    test_run_on(rt, 0, huge_fn, &h);
    test_signal_wait(&h.done);
    cr_assert_eq(h.rc, 0, "%s", rv_strerror(h.rc));
    cr_assert_eq(h.lsn % RV_WAL_DIRECT_ALIGN, 0, "a group of its own");
    struct appender *a = append_n(rt, w, 3, 3, 50, true);
    cr_assert_eq(a->results[0] % RV_WAL_DIRECT_ALIGN, 0);
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);

    uint32_t ok = 0;
    struct rv_wal_config cfg;
    rv_wal_config_init(&cfg);
    cfg.dir = wal_dir;
    cfg.file_bytes = 1 << 20;
    cfg.group_bytes_max = 256 << 10;
    cfg.io = RV_WAL_IO_DIRECT;
    struct rv_wal_report rep;
    cr_assert_eq(rv_wal_open(&w, &cfg, 0, huge_replay_cb, &ok, &rep), 0);
    cr_assert_eq(ok, 1, "the big record came back whole");
    cr_assert_eq(rep.records, 7);
    rv_wal_close(w);
}

Test(wal, direct_open_on_an_end_off_the_boundary_starts_a_new_file)
{
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = NULL;
    cr_assert_eq(wal_open_io(1 << 20, RV_WAL_IO_BUFFERED, NULL, &w), 0);
    cr_assert_not(rv_wal_is_direct(w));
    append_n(rt, w, 0, 7, 100, true);
    uint64_t end = rv_wal_end_lsn(w);
    cr_assert_neq(end % RV_WAL_DIRECT_ALIGN, 0, "7 records of 128 bytes: 896");
    wal_close_when_idle(rt, w);
    cr_assert_eq(count_files(".wal"), 1);

    w = wal_open_direct(1 << 20, NULL);
    cr_assert_eq(count_files(".wal"), 2, "a new file starts at the end");
    cr_assert_eq(rv_wal_end_lsn(w), end);
    struct appender *a = append_n(rt, w, 7, 5, 100, true);
    cr_assert_eq(a->results[0], (int64_t)end, "appends go on at the end");
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);

    /* Either way of opening reads both files. */
    for (int pass = 0; pass < 2; pass++) {
        reset_replay();
        cr_assert_eq(
            wal_open_io(1 << 20, pass ? RV_WAL_IO_BUFFERED : RV_WAL_IO_DIRECT, &replay, &w), 0);
        cr_assert_eq(replay.count, 12);
        cr_assert_eq(replay.bad_payloads, 0);
        for (uint32_t i = 0; i < 12; i++)
            cr_assert_eq(replay.keys[i], 1000 + i);
        rv_wal_close(w);
    }
}

Test(wal, auto_falls_back_to_buffered_where_o_direct_is_refused)
{
    /* Make each shimmed call of an open fail in turn with EINVAL (what a
     * filesystem without O_DIRECT answers): AUTO either fails cleanly or opens,
     * and where the refused call was the O_DIRECT open it opens buffered;
     * DIRECT never opens buffered. */
    bool is_fallback_seen = false;
    for (uint32_t n = 1; n <= 40; n++) {
        for (int mode = 0; mode < 2; mode++) {
            snprintf(wal_dir, sizeof(wal_dir), "%s/wal-%u-%d", dir, n, mode);
            enum rv_wal_io io = mode == 0 ? RV_WAL_IO_AUTO : RV_WAL_IO_DIRECT;
            rv_sys_fault_fail_nth(n, -EINVAL);
            rv_wal_t *w = NULL;
            int rc = wal_open_io(1 << 20, io, NULL, &w);
            bool is_fired = rv_sys_fault_fired();
            rv_sys_fault_clear();
            if (rc < 0) {
                cr_assert(is_fired, "open failed without the fault: %s", rv_strerror(rc));
                cr_assert_null(w);
                continue;
            }
            if (io == RV_WAL_IO_DIRECT)
                cr_assert(rv_wal_is_direct(w), "DIRECT opened buffered (call %u)", n);
            if (!rv_wal_is_direct(w)) {
                cr_assert(is_fired);
                is_fallback_seen = true;
                rv_runtime_t *rt = test_rt_open(1);
                struct appender *a = append_n(rt, w, 0, 20, 100, true);
                cr_assert_eq(a->results[19], 19 * (RV_WAL_HEADER_BYTES + 100));
                wal_close_when_idle(rt, w);
                rv_runtime_close(rt);
                reset_replay();
                cr_assert_eq(wal_open_io(1 << 20, RV_WAL_IO_BUFFERED, &replay, &w), 0);
                cr_assert_eq(replay.count, 20);
            }
            rv_wal_close(w);
        }
    }
    cr_assert(is_fallback_seen, "no call of the open was the O_DIRECT one");
}

Test(wal, direct_needs_a_file_size_on_the_boundary)
{
    rv_wal_t *w = NULL;
    cr_assert_eq(wal_open_io((1 << 20) + 512, RV_WAL_IO_DIRECT, NULL, &w), -EINVAL);
    cr_assert_null(w);
    cr_assert(strstr(rv_err_msg(), "multiple of 4096") != NULL, "%s", rv_err_msg());
    cr_assert_eq(wal_open_io((1 << 20) + 512, RV_WAL_IO_AUTO, NULL, &w), 0);
    cr_assert_not(rv_wal_is_direct(w), "AUTO writes buffered then");
    rv_wal_close(w);
}

/* Whether every extent of the file at path is written (none preallocated and
 * unwritten); -1 where the filesystem cannot say (no FIEMAP). */
static int file_is_all_written(const char *path)
{
    int fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0, "%s", path);
    static uint64_t space[(sizeof(struct fiemap) + 64 * sizeof(struct fiemap_extent)) / 8 + 1];
    memset(space, 0, sizeof(space));
    struct fiemap *fm = (struct fiemap *)space;
    fm->fm_length = FIEMAP_MAX_OFFSET;
    fm->fm_flags = FIEMAP_FLAG_SYNC;
    fm->fm_extent_count = 64;
    int rc = ioctl(fd, FS_IOC_FIEMAP, fm);
    close(fd);
    if (rc < 0)
        return -1;
    cr_assert_gt(fm->fm_mapped_extents, 0, "the spare has blocks");
    for (uint32_t i = 0; i < fm->fm_mapped_extents; i++) {
        if (fm->fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN)
            return 0;
    }
    return 1;
}

Test(wal, direct_spares_made_after_a_roll_are_written_with_zeros)
{
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = wal_open_direct(64 << 10, NULL);
    char spare[256];
    snprintf(spare, sizeof(spare), "%s/spare.wal.tmp", wal_dir);
    int at_open = file_is_all_written(spare);
    if (at_open < 0)
        cr_skip_test("this filesystem does not answer FIEMAP");
    cr_assert_eq(at_open, 0, "the spare made at open is only preallocated (a quick open)");
    struct rv_wal_stats st = {0};
    for (uint32_t round = 0; round < 20 && st.rolls < 2; round++) {
        append_n(rt, w, round * 100, 100, 200, true);
        rv_wal_get_stats(w, &st);
    }
    cr_assert_geq(st.rolls, 2);
    wal_close_when_idle(rt, w); /* idle: the spare's job finished */
    rv_runtime_close(rt);
    cr_assert_eq(file_is_all_written(spare), 1, "a spare made after a roll is written");
    reset_replay();
    w = wal_open_direct(64 << 10, &replay);
    cr_assert_eq(replay.bad_payloads, 0);
    cr_assert_geq(replay.count, 100, "zeros read as the clean end, not as a cut");
    rv_wal_close(w);
}

/* ---- several group writes in flight (direct I/O) ------------------------------------------ */

Test(wal, direct_writes_several_groups_at_once_and_completes_them_in_order)
{
    for (int backend = 0; backend < 2; backend++) {
        rv_runtime_t *rt = backend == 0 ? test_rt_open(1) : epoll_rt();
        rv_wal_t *w = wal_open_direct(4 << 20, NULL);
        /* 3000 appends in one turn: six groups (512 records at most each). */
        struct appender *a = append_n(rt, w, 0, 3000, 200, true);
        cr_assert_eq(a->append_rc, 0, "%s", rv_strerror(a->append_rc));
        cr_assert_eq(a->done, 3000);
        for (uint32_t i = 1; i < 3000; i++)
            cr_assert_gt(a->results[i], a->results[i - 1], "completions in LSN order (%u)", i);
        struct rv_wal_stats st;
        rv_wal_get_stats(w, &st);
        cr_assert_geq(st.groups, 6);
        cr_assert_geq(st.writes_inflight_max, 2, "groups written at once (%s)",
                      backend == 0 ? "io_uring" : "epoll");
        cr_assert_leq(st.writes_inflight_max, RV_WAL_DIRECT_WRITES);
        cr_assert_eq(rv_wal_durable_lsn(w), rv_wal_end_lsn(w), "every group synced");
        wal_close_when_idle(rt, w);
        rv_runtime_close(rt);
        reset_replay();
        w = wal_open_direct(4 << 20, &replay);
        cr_assert_eq(replay.count, 3000);
        cr_assert_eq(replay.bad_payloads, 0);
        for (uint32_t i = 0; i < 3000; i++)
            cr_assert_eq(replay.keys[i], 1000 + i);
        rv_wal_close(w);
        char cmd[200];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", wal_dir);
        cr_assert_eq(system(cmd), 0);
    }
}

/* Records of 200 KiB, a group each (groups hold 256 KiB here). */
#define TRIO_BYTES (200u << 10)

struct trio {
    rv_wal_t *w;
    uint64_t first_key;
    uint32_t count;
    int64_t results[4];
    uint32_t done;
    int rc;
    bool is_fault_after; /* make the next shimmed call fail once every append failed */
    struct test_signal all_done;
};

static void trio_done(void *arg, int64_t lsn_or_err)
{
    struct trio *t = arg;
    t->results[t->done++] = lsn_or_err;
    if (t->is_fault_after && t->done == t->count)
        rv_sys_fault_fail_nth(1, -EIO); /* the zeros over the failed bytes */
    if (t->done == t->count)
        test_signal_post(&t->all_done);
}

static void trio_fn(void *p)
{
    struct trio *t = p;
    for (uint32_t i = 0; i < t->count && t->rc == 0; i++)
        t->rc = rv_wal_append(t->w, RV_WAL_BATCH, t->first_key + i,
                              huge + (t->first_key + i) % 4 * 1000, TRIO_BYTES, true, trio_done, t);
}

static void trio_run(rv_runtime_t *rt, struct trio *t)
{
    test_signal_init(&t->all_done);
    test_run_on(rt, 0, trio_fn, t);
    cr_assert_eq(t->rc, 0, "%s", rv_strerror(t->rc));
    test_signal_wait(&t->all_done);
}

struct keys_seen {
    uint64_t keys[16];
    uint32_t count;
};

static int keys_replay_cb(void *arg, const struct rv_wal_record *rec)
{
    struct keys_seen *k = arg;
    cr_assert_eq(rec->len, TRIO_BYTES);
    cr_assert_eq(memcmp(rec->payload, huge + rec->key % 4 * 1000, TRIO_BYTES), 0);
    if (k->count < 16)
        k->keys[k->count] = rec->key;
    k->count++;
    return 0;
}

Test(wal, a_failed_write_fails_the_later_groups_and_nothing_of_theirs_comes_back)
{
    for (size_t i = 0; i < sizeof(huge); i++)
        huge[i] = (uint8_t)(i * 13 + i / 777);
    rv_runtime_t *rt = epoll_rt();
    rv_wal_t *w = wal_open_dir(1 << 20, 0, NULL, NULL);
    bool is_direct = rv_wal_is_direct(w);
    /* Direct: calls 1-3 are the writes of the three full groups, issued at
     * once (the fourth, still open, waits to be the head); buffered: 1 is
     * the first group's write, 2 its fdatasync, 3 the second's write. */
    int spec[2] = {is_direct ? 2 : 3, -ENOSPC};
    test_run_on(rt, 0, arm_fault, spec);
    struct trio t = {.w = w, .first_key = 1, .count = 4};
    trio_run(rt, &t);
    cr_assert(rv_sys_fault_fired());
    cr_assert_geq(t.results[0], 0, "the first group was written: %s",
                  rv_strerror((int)t.results[0]));
    cr_assert_eq(t.results[1], -ENOSPC);
    cr_assert_eq(t.results[2], -ENOSPC, "a later group fails with the failed one");
    cr_assert_eq(t.results[3], -ENOSPC);
    cr_assert_not(rv_wal_is_failed(w), "a failed write is not sticky");
    struct rv_wal_stats st;
    rv_wal_get_stats(w, &st);
    if (is_direct)
        cr_assert_eq(st.writes_inflight_max, 3, "the third group was written too");
    /* The same size again where the failed group was: it ends exactly where
     * the third group's record sits on disk (direct I/O), which must not come
     * back behind it. */
    struct trio t2 = {.w = w, .first_key = 5, .count = 1};
    trio_run(rt, &t2);
    cr_assert_geq(t2.results[0], 0, "%s", rv_strerror((int)t2.results[0]));
    uint64_t rec = RV_WAL_HEADER_BYTES + TRIO_BYTES; /* the failed group's LSN: after the first */
    uint64_t second =
        is_direct ? (rec + RV_WAL_DIRECT_ALIGN - 1) / RV_WAL_DIRECT_ALIGN * RV_WAL_DIRECT_ALIGN
                  : rec;
    cr_assert_eq(t2.results[0], (int64_t)second, "it took the failed group's place");
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);

    struct keys_seen k = {0};
    struct rv_wal_config cfg;
    rv_wal_config_init(&cfg);
    cfg.dir = wal_dir;
    cfg.file_bytes = 1 << 20;
    cfg.group_bytes_max = 256 << 10;
    cfg.io = test_wal_io();
    struct rv_wal_report rep;
    cr_assert_eq(rv_wal_open(&w, &cfg, 0, keys_replay_cb, &k, &rep), 0);
    cr_assert_eq(k.count, 2, "the first record and the one after the failure (%u)", k.count);
    cr_assert_eq(k.keys[0], 1);
    cr_assert_eq(k.keys[1], 5);
    rv_wal_close(w);
}

static void append_one_fn(void *p)
{
    struct trio *t = p;
    t->rc = rv_wal_append(t->w, RV_WAL_BATCH, 9, huge, 100, true, trio_done, t);
}

Test(wal, a_failure_to_clear_a_failed_writes_bytes_is_sticky)
{
    rv_runtime_t *rt = epoll_rt();
    rv_wal_t *w = wal_open_dir(1 << 20, 0, NULL, NULL);
    int spec[2] = {1, -ENOSPC}; /* the first group's write */
    test_run_on(rt, 0, arm_fault, spec);
    struct trio t = {.w = w, .first_key = 1, .count = 1, .is_fault_after = true};
    trio_run(rt, &t);
    cr_assert_eq(t.results[0], -ENOSPC);
    /* The zeros' write failed (on the shard, after the callback): sticky. */
    wal_wait_idle(rt, w);
    cr_assert(rv_sys_fault_fired());
    cr_assert(rv_wal_is_failed(w), "a WAL that cannot clear refused bytes writes no more");
    struct trio t2 = {.w = w};
    test_run_on(rt, 0, append_one_fn, &t2);
    cr_assert_eq(t2.rc, -EIO);
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);
}

/* ---- reused files (direct I/O) ---------------------------------------------------------- */

static uint32_t count_kept(void)
{
    return count_names("free-", ".wal.tmp");
}

/* Release every file below the end (the current one stays) and wait for the job. */
static void release_all_and_wait(rv_runtime_t *rt, rv_wal_t *w)
{
    struct {
        rv_wal_t *w;
        uint64_t lsn;
    } rel = {w, rv_wal_end_lsn(w)};
    test_run_on(rt, 0, release_fn, &rel);
    wal_wait_idle(rt, w);
}

static rv_wal_t *wal_open_from(const char *path, uint64_t from, struct replayed *r,
                               struct rv_wal_report *rep)
{
    struct rv_wal_config cfg;
    rv_wal_config_init(&cfg);
    cfg.dir = path;
    cfg.file_bytes = 64 << 10;
    cfg.group_bytes_max = 16 << 10;
    cfg.io = RV_WAL_IO_DIRECT;
    rv_wal_t *w = NULL;
    int rc = rv_wal_open(&w, &cfg, from, r ? replay_cb : NULL, r, rep);
    cr_assert_eq(rc, 0, "rv_wal_open: %s: %s", rv_strerror(rc), rv_err_msg());
    return w;
}

/* Released files are kept (renamed free-*.wal.tmp) and become the next spares
 * instead of new zero-filled ones. Their old records stay behind what is
 * written over them: replay must stop at the new end (a file rolled early
 * ends where the next file starts; the current one at the block zeroed at a
 * clean close), and after a crash it cuts the stale bytes, never replaying
 * them. */
Test(wal, direct_released_files_are_reused_and_their_old_records_never_replay)
{
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = wal_open_direct(64 << 10, NULL);
    for (uint32_t round = 0; round < 4; round++)
        cr_assert_eq(append_n(rt, w, round * 250, 250, 200, true)->append_rc, 0);
    uint64_t from = rv_wal_end_lsn(w);
    release_all_and_wait(rt, w);
    cr_assert_gt(count_kept(), 0, "released files are kept for reuse");
    /* Records of another size: the old records sit at other positions. */
    for (uint32_t round = 0; round < 6; round++)
        cr_assert_eq(append_n(rt, w, 1000 + round * 150, 150, 160, true)->append_rc, 0);
    struct rv_wal_stats st;
    rv_wal_get_stats(w, &st);
    cr_assert_gt(st.spares_recycled, 0, "spares came from released files");
    uint64_t end = rv_wal_end_lsn(w);
    char crash[192], cmd[512];
    snprintf(crash, sizeof(crash), "%s/crashed", dir);
    snprintf(cmd, sizeof(cmd), "cp -a %s %s", wal_dir, crash); /* a kill: no clean close */
    cr_assert_eq(system(cmd), 0);
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);

    reset_replay();
    struct rv_wal_report rep;
    w = wal_open_from(wal_dir, from, &replay, &rep);
    cr_assert_eq(replay.count, 900, "every record since the release, none older");
    cr_assert_eq(replay.bad_payloads, 0);
    cr_assert_eq(replay.keys[0], 2000, "first key %llu, last %llu",
                 (unsigned long long)replay.keys[0], (unsigned long long)replay.keys[899]);
    cr_assert_eq(rep.end_lsn, end);
    cr_assert_eq(rep.cut_bytes, 0, "a clean close leaves a clean end");
    rv_wal_close(w);
    reset_replay();
    w = wal_open_from(crash, from, &replay, &rep);
    cr_assert_eq(replay.count, 900, "after a crash too");
    cr_assert_eq(replay.bad_payloads, 0);
    cr_assert_eq(rep.end_lsn, end);
    rv_wal_close(w);
    reset_replay();
    w = wal_open_from(crash, from, &replay, &rep);
    cr_assert_eq(replay.count, 900, "and again after the cut");
    cr_assert_eq(rep.cut_bytes, 0);
    rv_wal_close(w);
}

/* Kept files found at open: one of this file size is reused for the next
 * spare; one of another size (the size changed) is removed; a buffered WAL
 * keeps none. */
Test(wal, kept_files_found_at_open_are_reused_or_removed)
{
    cr_assert_eq(mkdir(wal_dir, 0755), 0);
    char good[256], bad[256], cmd[640];
    snprintf(good, sizeof(good), "%s/free-00000000000000000007.wal.tmp", wal_dir);
    snprintf(bad, sizeof(bad), "%s/free-00000000000000000009.wal.tmp", wal_dir);
    snprintf(cmd, sizeof(cmd), "head -c 65536 /dev/urandom > %s && head -c 4096 /dev/urandom > %s",
             good, bad);
    cr_assert_eq(system(cmd), 0);
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = wal_open_direct(64 << 10, NULL);
    cr_assert_eq(access(bad, F_OK), -1, "a kept file of another size is removed");
    cr_assert_eq(access(good, F_OK), 0, "a kept file of this size stays for reuse");
    struct rv_wal_stats st = {0};
    for (uint32_t round = 0; round < 20 && st.spares_recycled == 0; round++) {
        cr_assert_eq(append_n(rt, w, round * 100, 100, 200, true)->append_rc, 0);
        rv_wal_get_stats(w, &st);
    }
    cr_assert_gt(st.spares_recycled, 0, "it became a spare after a roll");
    cr_assert_eq(access(good, F_OK), -1);
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);
    reset_replay();
    struct rv_wal_report rep;
    w = wal_open_dir(64 << 10, 0, &replay, &rep);
    cr_assert_eq(replay.bad_payloads, 0, "its random old bytes never replay");
    cr_assert_eq(rep.cut_bytes, 0);
    rv_wal_close(w);
    /* Buffered: kept files are not used, and removed at open. */
    cr_assert_eq(system(cmd), 0);
    w = NULL;
    cr_assert_eq(wal_open_io(64 << 10, RV_WAL_IO_BUFFERED, NULL, &w), 0);
    cr_assert_eq(access(good, F_OK), -1, "a buffered WAL keeps none");
    rv_wal_close(w);
}

/* After a power loss one of several direct group writes in flight may be
 * missing (zeros) while later groups reached the disk. Replay ends at the
 * zeros; the open cuts the file there, so a new group that ends where a stale
 * later group begins can never lead the next replay into it: whichever group
 * was lost (the first of the file too), and whether the WAL is reopened
 * direct or buffered. */
static void stale_groups_case(uint32_t lost, enum rv_wal_io reopen_io)
{
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = wal_open_direct(64 << 10, NULL);
    for (uint32_t i = 0; i < 5; i++) /* five groups of one record, a block each */
        cr_assert_eq(append_n(rt, w, i, 1, 100, true)->append_rc, 0);
    cr_assert_eq(rv_wal_end_lsn(w), 5 * RV_WAL_DIRECT_ALIGN);
    wal_close_when_idle(rt, w);
    char path[256];
    first_file(path, sizeof(path));
    static uint8_t zeros[RV_WAL_DIRECT_ALIGN];
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pwrite(fd, zeros, sizeof(zeros), (off_t)lost * RV_WAL_DIRECT_ALIGN),
                 sizeof(zeros));
    close(fd); /* group `lost` never reached the disk; the ones after it did */
    reset_replay();
    w = NULL;
    cr_assert_eq(wal_open_io(64 << 10, reopen_io, &replay, &w), 0, "%s", rv_err_msg());
    cr_assert_eq(replay.count, lost, "replay ends at the missing group");
    /* New records that end where the next stale group begins: one block. */
    bool is_buffered = reopen_io == RV_WAL_IO_BUFFERED;
    uint32_t n_new = is_buffered ? 16 : 1; /* 16 x (28 + 228) bytes; direct pads one */
    cr_assert_eq(append_n(rt, w, 100, n_new, is_buffered ? 228 : 100, true)->append_rc, 0);
    char crash[192], cmd[1024];
    snprintf(crash, sizeof(crash), "%s/crashed", dir);
    snprintf(cmd, sizeof(cmd), "rm -rf %s && cp -a %s %s", crash, wal_dir, crash);
    cr_assert_eq(system(cmd), 0); /* a second crash */
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);
    reset_replay();
    w = wal_open_from(crash, 0, &replay, NULL);
    cr_assert_eq(replay.count, lost + n_new, "the old records before the hole and the new ones");
    cr_assert_eq(replay.keys[lost], 1100);
    cr_assert_eq(replay.bad_payloads, 0);
    rv_wal_close(w);
}

Test(wal, direct_stale_groups_after_a_hole_never_replay)
{
    stale_groups_case(2, RV_WAL_IO_DIRECT);
}

Test(wal, direct_stale_groups_after_a_lost_first_group_never_replay)
{
    stale_groups_case(0, RV_WAL_IO_DIRECT);
}

Test(wal, direct_stale_groups_never_replay_after_a_buffered_reopen)
{
    stale_groups_case(2, RV_WAL_IO_BUFFERED);
}

static void drop_kept_fn(void *p)
{
    rv_wal_drop_kept(p);
}

/* A full disk gives the kept files back (the segments' ENOSPC and the WAL's
 * own call it); later spares are made anew. */
Test(wal, kept_files_are_removed_when_the_disk_is_full)
{
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = wal_open_direct(64 << 10, NULL);
    for (uint32_t round = 0; round < 4; round++)
        cr_assert_eq(append_n(rt, w, round * 250, 250, 200, true)->append_rc, 0);
    release_all_and_wait(rt, w);
    cr_assert_gt(count_kept(), 0);
    test_run_on(rt, 0, drop_kept_fn, w);
    wal_wait_idle(rt, w);
    cr_assert_eq(count_kept(), 0, "removed");
    cr_assert_eq(append_n(rt, w, 2000, 500, 200, true)->append_rc, 0, "rolls make new spares");
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);
}

/* A kept file that cannot be reused (removed behind the WAL's back) does not
 * fail the roll: the spare is made anew. */
Test(wal, a_kept_file_that_cannot_be_reused_gives_way_to_a_new_spare)
{
    cr_assert_eq(mkdir(wal_dir, 0755), 0);
    char kept[256], cmd[512];
    snprintf(kept, sizeof(kept), "%s/free-00000000000000000007.wal.tmp", wal_dir);
    snprintf(cmd, sizeof(cmd), "head -c 65536 /dev/zero > %s", kept);
    cr_assert_eq(system(cmd), 0);
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = wal_open_direct(64 << 10, NULL);
    cr_assert_eq(count_kept(), 1, "adopted");
    cr_assert_eq(unlink(kept), 0);
    struct rv_wal_stats st = {0};
    for (uint32_t round = 0; round < 20 && st.rolls < 3; round++) {
        cr_assert_eq(append_n(rt, w, round * 100, 100, 200, true)->append_rc, 0);
        rv_wal_get_stats(w, &st);
    }
    cr_assert_geq(st.rolls, 3, "rolls went on");
    cr_assert_eq(st.spares_recycled, 0);
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);
    reset_replay();
    w = wal_open_dir(64 << 10, 0, &replay, NULL);
    cr_assert_geq(replay.count, 100);
    cr_assert_eq(replay.bad_payloads, 0);
    rv_wal_close(w);
}

/* Every shimmed call of a reopen after a crash (replay, the torn tail's cut,
 * the cut of the current file at its end, the spare) failing in turn: the
 * open either fails with an error and a message, holding nothing, or opens;
 * either way a later open replays every record, none twice. */
static void reopen_fault_sweep(enum rv_wal_io io)
{
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = NULL;
    int rc = wal_open_io(64 << 10, io, NULL, &w);
    if (rc == -EINVAL && io == RV_WAL_IO_DIRECT)
        cr_skip_test("this filesystem refuses O_DIRECT: %s", rv_err_msg());
    cr_assert_eq(rc, 0, "%s", rv_err_msg());
    cr_assert_eq(append_n(rt, w, 0, 30, 200, true)->append_rc, 0);
    char crash[192], work[192], cmd[1024];
    snprintf(crash, sizeof(crash), "%s/crashed", dir);
    snprintf(work, sizeof(work), "%s/work", dir);
    snprintf(cmd, sizeof(cmd), "rm -rf %s && cp -a %s %s", crash, wal_dir, crash);
    cr_assert_eq(system(cmd), 0); /* as a kill would leave it: no clean close */
    uint64_t end = rv_wal_end_lsn(w);
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);
    char path[256];
    snprintf(path, sizeof(path), "%s/%020d.wal", crash, 0);
    for (int i = 0; i < 100; i++) /* a torn record after the end: cut at every open */
        write_byte(path, (off_t)end + i, 0xa5);
    struct rv_wal_config cfg;
    rv_wal_config_init(&cfg);
    cfg.dir = work;
    cfg.file_bytes = 64 << 10;
    cfg.group_bytes_max = 16 << 10;
    cfg.io = io;
    uint32_t failed = 0;
    bool is_fired = true;
    for (uint32_t n = 1; is_fired; n++) {
        cr_assert_lt(n, 200, "the open makes fewer calls than that");
        snprintf(cmd, sizeof(cmd), "rm -rf %s && cp -a %s %s", work, crash, work);
        cr_assert_eq(system(cmd), 0);
        reset_replay();
        rv_err_clear();
        rv_sys_fault_fail_nth(n, -EIO);
        w = NULL;
        rc = rv_wal_open(&w, &cfg, 0, replay_cb, &replay, NULL);
        is_fired = rv_sys_fault_fired();
        rv_sys_fault_clear();
        if (rc < 0) {
            cr_assert(is_fired, "open failed without the fault: %s", rv_err_msg());
            cr_assert_null(w);
            cr_assert(strlen(rv_err_msg()) > 0, "an error message for call %u", n);
            failed++;
        } else {
            rv_wal_close(w);
        }
        reset_replay();
        struct rv_wal_report rep;
        rc = rv_wal_open(&w, &cfg, 0, replay_cb, &replay, &rep);
        cr_assert_eq(rc, 0, "reopen after call %u failed: %s", n, rv_err_msg());
        if (n == 1) /* the faulted open failed at its first call */
            cr_assert_gt(rep.cut_bytes, 0, "the torn record is cut");
        cr_assert_eq(replay.count, 30, "call %u: %u records replayed", n, replay.count);
        cr_assert_eq(replay.bad_payloads, 0);
        for (uint32_t i = 0; i < 30; i++)
            cr_assert_eq(replay.keys[i], 1000 + i);
        rv_wal_close(w);
    }
    cr_assert_gt(failed, 10, "the faults reached the open's calls");
}

Test(wal, every_failing_call_of_a_direct_reopen_loses_nothing)
{
    reopen_fault_sweep(RV_WAL_IO_DIRECT);
}

Test(wal, every_failing_call_of_a_buffered_reopen_loses_nothing)
{
    reopen_fault_sweep(RV_WAL_IO_BUFFERED);
}

/* rv_wal_scan reads a range of a live WAL on its own (across its files, in
 * LSN order, with every byte checked), and says when the range is not all
 * there: the start released, or the end not written. */
Test(wal, scan_reads_a_range_of_the_live_wal)
{
    rv_runtime_t *rt = test_rt_open(1);
    rv_wal_t *w = wal_open_dir(64 << 10, 0, NULL, NULL);
    struct appender *a = append_n(rt, w, 0, 500, 200, true); /* about 4 files in all */
    cr_assert_eq(a->append_rc, 0);
    uint64_t lsn100 = (uint64_t)a->results[100];
    a = append_n(rt, w, 500, 500, 200, true);
    cr_assert_eq(a->append_rc, 0);
    uint64_t lsn900 = (uint64_t)a->results[400];
    uint64_t end = rv_wal_end_lsn(w);
    cr_assert_geq(rv_wal_file_count(w), 3);
    reset_replay();
    cr_assert_eq(rv_wal_scan(wal_dir, lsn100, lsn900, replay_cb, &replay), 0, "%s", rv_err_msg());
    cr_assert_eq(replay.count, 800, "exactly the range");
    cr_assert_eq(replay.bad_payloads, 0);
    cr_assert_eq(replay.lsns[0], lsn100);
    for (uint32_t i = 1; i < 800; i++)
        cr_assert_gt(replay.lsns[i], replay.lsns[i - 1]);
    reset_replay();
    cr_assert_eq(rv_wal_scan(wal_dir, 0, end, replay_cb, &replay), 0, "%s", rv_err_msg());
    cr_assert_eq(replay.count, 1000, "all of it, up to the written end");
    reset_replay();
    cr_assert_eq(rv_wal_scan(wal_dir, lsn100, end + 100000, replay_cb, &replay), -EBADMSG,
                 "past what is written");
    cr_assert(strstr(rv_err_msg(), "records end at") != NULL, "%s", rv_err_msg());
    /* A damaged record inside the range: the file's records end early. */
    char first[300];
    snprintf(first, sizeof(first), "%s/%020d.wal", wal_dir, 0);
    cr_assert_lt(lsn100 + 100, 64 << 10, "record 100 is in the first file");
    write_byte(first, (off_t)lsn100 + 100, 0x5a);
    reset_replay();
    cr_assert_eq(rv_wal_scan(wal_dir, 0, end, replay_cb, &replay), -EBADMSG);
    cr_assert(strstr(rv_err_msg(), "but the next starts at") != NULL, "%s", rv_err_msg());
    /* Released files are gone: a range starting there cannot be read. */
    struct {
        rv_wal_t *w;
        uint64_t lsn;
    } rel = {w, lsn900};
    test_run_on(rt, 0, release_fn, &rel);
    wal_wait_idle(rt, w);
    reset_replay();
    int rc = rv_wal_scan(wal_dir, lsn100, end, replay_cb, &replay);
    cr_assert_eq(rc, -EBADMSG, "%s", rv_strerror(rc));
    cr_assert(strstr(rv_err_msg(), "no longer kept") != NULL, "%s", rv_err_msg());
    reset_replay();
    replay.fail_at = 3;
    cr_assert_eq(rv_wal_scan(wal_dir, lsn900, end, replay_cb, &replay), -ECANCELED,
                 "the callback's error stops it");
    reset_replay();
    cr_assert_eq(rv_wal_scan(wal_dir, end, end, replay_cb, &replay), 0, "an empty range");
    char gone[300];
    snprintf(gone, sizeof(gone), "%s/not-a-wal", wal_dir);
    rc = rv_wal_scan(gone, lsn100, end, replay_cb, &replay);
    cr_assert_eq(rc, -ENOENT, "%s", rv_strerror(rc));
    cr_assert(strstr(rv_err_msg(), "opendir") != NULL, "%s", rv_err_msg());
    cr_assert_eq(replay.count, 0, "nothing read");
    wal_close_when_idle(rt, w);
    rv_runtime_close(rt);
}
