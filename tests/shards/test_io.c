/* tests/shards/test_io.c - tests shards/io*.c: file I/O on both backends. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/sys.h"
#include "tests/support/rt.h"

TestSuite(io, .timeout = 120);

static rv_runtime_t *io_open(enum rv_io_backend kind, uint32_t depth)
{
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    cfg.shard_count = 1;
    cfg.io_backend = kind;
    cfg.io_depth = depth;
    rv_runtime_t *rt = NULL;
    int rc = rv_runtime_open(&rt, &cfg);
    cr_assert_eq(rc, 0, "%s", rv_err_msg());
    cr_assert_eq(rv_runtime_io_backend(rt), kind);
    return rt;
}

/* A little state machine: open, 64 writes of 16 KiB, fdatasync, fallocate,
 * reads, close; every step is checked in its callback. */
#define IO_CHUNK  16384
#define IO_CHUNKS 64

struct io_case {
    char path[64];
    int fd;
    int step_errors;
    uint32_t writes_left;
    uint32_t reads_left;
    uint8_t *data;
    uint8_t *back;
    struct test_signal done;
};

static void io_step_closed(void *p, int64_t res);

static void io_step_read(void *p, int64_t res)
{
    struct io_case *c = p;
    if (res != IO_CHUNK)
        c->step_errors++;
    if (--c->reads_left > 0)
        return;
    if (memcmp(c->data, c->back, (size_t)IO_CHUNK * IO_CHUNKS) != 0)
        c->step_errors++;
    cr_assert_eq(rv_file_close(c->fd, io_step_closed, c), 0);
}

static void io_step_allocated(void *p, int64_t res)
{
    struct io_case *c = p;
    if (res != 0)
        c->step_errors++;
    c->reads_left = IO_CHUNKS;
    for (uint32_t i = 0; i < IO_CHUNKS; i++) {
        uint64_t pos = (uint64_t)i * IO_CHUNK;
        cr_assert_eq(rv_file_read(c->fd, c->back + pos, IO_CHUNK, pos, io_step_read, c), 0);
    }
}

static void io_step_synced(void *p, int64_t res)
{
    struct io_case *c = p;
    if (res != 0)
        c->step_errors++;
    cr_assert_eq(
        rv_file_fallocate(c->fd, 0, (uint64_t)IO_CHUNK * IO_CHUNKS, 1 << 20, io_step_allocated, c),
        0);
}

static void io_step_written(void *p, int64_t res)
{
    struct io_case *c = p;
    if (res != IO_CHUNK)
        c->step_errors++;
    if (--c->writes_left == 0)
        cr_assert_eq(rv_file_fdatasync(c->fd, io_step_synced, c), 0);
}

static void io_step_opened(void *p, int64_t res)
{
    struct io_case *c = p;
    cr_assert_geq(res, 0, "open: %s", rv_strerror((int)res));
    c->fd = (int)res;
    c->writes_left = IO_CHUNKS;
    for (uint32_t i = 0; i < IO_CHUNKS; i++) {
        uint64_t pos = (uint64_t)i * IO_CHUNK;
        cr_assert_eq(rv_file_write(c->fd, c->data + pos, IO_CHUNK, pos, io_step_written, c), 0);
    }
}

static void io_step_closed(void *p, int64_t res)
{
    struct io_case *c = p;
    if (res != 0)
        c->step_errors++;
    test_signal_post(&c->done);
}

static void io_start(void *p)
{
    struct io_case *c = p;
    cr_assert_eq(rv_file_open(c->path, O_RDWR | O_CREAT | O_TRUNC, 0644, io_step_opened, c), 0);
}

static void io_roundtrip(enum rv_io_backend kind)
{
    rv_runtime_t *rt = io_open(kind, 128);
    struct io_case c = {.fd = -1};
    snprintf(c.path, sizeof(c.path), "/tmp/rivven-io-%d-%d", (int)getpid(), (int)kind);
    c.data = malloc((size_t)IO_CHUNK * IO_CHUNKS);
    c.back = calloc(IO_CHUNKS, IO_CHUNK);
    for (size_t i = 0; i < (size_t)IO_CHUNK * IO_CHUNKS; i++)
        c.data[i] = (uint8_t)(i * 7 + i / 4096);
    test_signal_init(&c.done);
    cr_assert_eq(rv_runtime_submit(rt, 0, io_start, &c), 0);
    test_signal_wait(&c.done);
    cr_assert_eq(c.step_errors, 0);
    struct stat st;
    cr_assert_eq(stat(c.path, &st), 0);
    cr_assert_eq(st.st_size, (off_t)IO_CHUNK * IO_CHUNKS + (1 << 20), "fallocate extended");
    struct rv_shard_stats ss;
    TEST_WAIT_STATS(rt, 0, ss, ss.io_completed >= 2u * IO_CHUNKS + 4);
    cr_assert_geq(ss.io_completed, 2u * IO_CHUNKS + 4);
    rv_runtime_close(rt);
    unlink(c.path);
    free(c.data);
    free(c.back);
}

Test(io, file_roundtrip_on_io_uring)
{
    io_roundtrip(RV_IO_URING);
}

Test(io, file_roundtrip_on_epoll)
{
    io_roundtrip(RV_IO_EPOLL);
}

/* Errors come back through the callback as -errno. */
struct io_err_case {
    int64_t open_res;
    int64_t read_res;
    int64_t write_res;
    struct test_signal done;
    int pending;
};

static void io_err_cb_open(void *p, int64_t res)
{
    struct io_err_case *c = p;
    c->open_res = res;
    if (--c->pending == 0)
        test_signal_post(&c->done);
}

static void io_err_cb_read(void *p, int64_t res)
{
    struct io_err_case *c = p;
    c->read_res = res;
    if (--c->pending == 0)
        test_signal_post(&c->done);
}

static void io_err_cb_write(void *p, int64_t res)
{
    struct io_err_case *c = p;
    c->write_res = res;
    if (--c->pending == 0)
        test_signal_post(&c->done);
}

static char io_err_buf[64];

static void io_err_start(void *p)
{
    struct io_err_case *c = p;
    c->pending = 3;
    cr_assert_eq(rv_file_open("/nonexistent-dir/x", O_RDONLY, 0, io_err_cb_open, c), 0);
    cr_assert_eq(rv_file_read(-1, io_err_buf, sizeof(io_err_buf), 0, io_err_cb_read, c), 0);
    /* Depth is 4: the fourth slot is free, the fifth is backpressure. */
    cr_assert_eq(rv_file_write(1 << 20, io_err_buf, 8, 0, io_err_cb_write, c), 0);
}

static void io_errors(enum rv_io_backend kind)
{
    rv_runtime_t *rt = io_open(kind, 4);
    struct io_err_case c = {0};
    test_signal_init(&c.done);
    cr_assert_eq(rv_runtime_submit(rt, 0, io_err_start, &c), 0);
    test_signal_wait(&c.done);
    cr_assert_eq(c.open_res, -ENOENT);
    cr_assert_eq(c.read_res, -EBADF);
    cr_assert_eq(c.write_res, -EBADF);
    rv_runtime_close(rt);
}

Test(io, errors_arrive_as_negative_errno_on_io_uring)
{
    io_errors(RV_IO_URING);
}

Test(io, errors_arrive_as_negative_errno_on_epoll)
{
    io_errors(RV_IO_EPOLL);
}

/* More operations than io_depth at once: -EAGAIN, then fine after completions. */
struct io_depth_case {
    int rcs[6];
    int fd;
    int completed;
    struct test_signal done;
};

static void io_depth_cb(void *p, int64_t res)
{
    struct io_depth_case *c = p;
    (void)res;
    if (++c->completed == 4)
        test_signal_post(&c->done);
}

static void io_depth_start(void *p)
{
    struct io_depth_case *c = p;
    for (int i = 0; i < 6; i++)
        c->rcs[i] = rv_file_fdatasync(c->fd, io_depth_cb, c);
}

static void io_depth_limit(enum rv_io_backend kind)
{
    rv_runtime_t *rt = io_open(kind, 4);
    struct io_depth_case c = {0};
    c.fd = open("/tmp", O_RDONLY | O_DIRECTORY);
    test_signal_init(&c.done);
    cr_assert_eq(rv_runtime_submit(rt, 0, io_depth_start, &c), 0);
    test_signal_wait(&c.done);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(c.rcs[i], 0, "op %d", i);
    cr_assert_eq(c.rcs[4], -EAGAIN);
    cr_assert_eq(c.rcs[5], -EAGAIN);
    rv_runtime_close(rt);
    close(c.fd);
}

Test(io, depth_limit_is_backpressure_on_io_uring)
{
    io_depth_limit(RV_IO_URING);
}

Test(io, depth_limit_is_backpressure_on_epoll)
{
    io_depth_limit(RV_IO_EPOLL);
}

/* Fault injection reaches the portable backend's syscalls. */
struct io_fault_case {
    int64_t res;
    struct test_signal done;
};

static void io_fault_cb(void *p, int64_t res)
{
    struct io_fault_case *c = p;
    c->res = res;
    test_signal_post(&c->done);
}

static void io_fault_start(void *p)
{
    rv_sys_fault_fail_nth(1, -ENOSPC);
    cr_assert_eq(rv_file_fdatasync(0, io_fault_cb, p), 0);
}

Test(io, injected_disk_full_reaches_the_callback_on_epoll)
{
    rv_runtime_t *rt = io_open(RV_IO_EPOLL, 4);
    struct io_fault_case c = {0};
    test_signal_init(&c.done);
    cr_assert_eq(rv_runtime_submit(rt, 0, io_fault_start, &c), 0);
    test_signal_wait(&c.done);
    cr_assert(rv_sys_fault_fired());
    cr_assert_eq(c.res, -ENOSPC);
    rv_sys_fault_clear();
    rv_runtime_close(rt);
}

static void io_outside_cb(void *p, int64_t res)
{
    (void)p;
    (void)res;
}

Test(io, file_ops_outside_a_shard_are_refused)
{
    cr_assert_eq(rv_file_fdatasync(0, io_outside_cb, NULL), -EINVAL);
}

/* A gather write lands every iovec at the right place. */
struct io_writev_case {
    int fd;
    struct iovec iov[3];
    int64_t res;
    struct test_signal done;
};

static void io_writev_cb(void *p, int64_t res)
{
    struct io_writev_case *c = p;
    c->res = res;
    test_signal_post(&c->done);
}

static void io_writev_start(void *p)
{
    struct io_writev_case *c = p;
    cr_assert_eq(rv_file_writev(c->fd, c->iov, 3, 4, io_writev_cb, c), 0);
    cr_assert_eq(rv_file_writev(c->fd, c->iov, 0, 4, io_writev_cb, c), -EINVAL);
}

static void io_writev(enum rv_io_backend kind)
{
    rv_runtime_t *rt = io_open(kind, 8);
    char path[] = "/tmp/rivven-writev-XXXXXX";
    struct io_writev_case c = {.fd = mkstemp(path)};
    cr_assert_geq(c.fd, 0);
    c.iov[0] = (struct iovec){.iov_base = "head", .iov_len = 4};
    c.iov[1] = (struct iovec){.iov_base = "-body-", .iov_len = 6};
    c.iov[2] = (struct iovec){.iov_base = "tail", .iov_len = 4};
    test_signal_init(&c.done);
    cr_assert_eq(rv_runtime_submit(rt, 0, io_writev_start, &c), 0);
    test_signal_wait(&c.done);
    cr_assert_eq(c.res, 14);
    char back[18] = {0};
    cr_assert_eq(pread(c.fd, back, sizeof(back), 0), 18);
    cr_assert(memcmp(back + 4, "head-body-tail", 14) == 0);
    rv_runtime_close(rt);
    close(c.fd);
    unlink(path);
}

Test(io, writev_gathers_on_io_uring)
{
    io_writev(RV_IO_URING);
}

Test(io, writev_gathers_on_epoll)
{
    io_writev(RV_IO_EPOLL);
}

/* The largest io_depth opens an io_uring ring: the kernel takes at most
 * 32768 submission entries, so the ring is capped there (its completion ring
 * holds twice that) rather than refused, which with the auto backend had
 * fallen back to epoll. */
Test(io, the_largest_io_depth_opens_on_io_uring)
{
    rv_runtime_t *rt = io_open(RV_IO_URING, 32768);
    rv_runtime_close(rt);
}

/* Where the kernel refuses io_uring (seccomp here, as container runtimes
 * do; or io_uring_disabled), the auto backend falls back to epoll and says
 * so on stderr, and an explicit io_uring runtime fails to open with the
 * reason. Run in a child: the filter cannot be lifted. */
static int no_uring_child(int err_fd)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof(filter) / sizeof(filter[0]), .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return 10;
    if (dup2(err_fd, STDERR_FILENO) < 0)
        return 11;
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    cfg.shard_count = 1;
    cfg.io_backend = RV_IO_AUTO;
    rv_runtime_t *rt = NULL;
    if (rv_runtime_open(&rt, &cfg) != 0)
        return 12;
    enum rv_io_backend got = rv_runtime_io_backend(rt);
    rv_runtime_close(rt);
    if (got != RV_IO_EPOLL)
        return 13;
    cfg.io_backend = RV_IO_URING;
    rt = NULL;
    int rc = rv_runtime_open(&rt, &cfg);
    if (rc != -ENOSYS || rt != NULL)
        return 14;
    if (strstr(rv_err_msg(), "io_uring") == NULL)
        return 15;
    return 0;
}

Test(io, without_io_uring_auto_falls_back_to_epoll_and_says_so)
{
    unsetenv("RIVVEN_IO_BACKEND");
    char path[] = "/tmp/rivven-io-stderr-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0)
        _exit(no_uring_child(fd));
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "the child ended by signal %d", WTERMSIG(status));
    cr_assert_eq(WEXITSTATUS(status), 0, "the child's step %d failed", WEXITSTATUS(status));
    char out[4096] = "";
    ssize_t n = pread(fd, out, sizeof(out) - 1, 0);
    close(fd);
    cr_assert_gt(n, 0, "a warning on stderr");
    out[n] = '\0';
    cr_assert(strstr(out, "io_uring backend unavailable") != NULL && strstr(out, "epoll") != NULL,
              "stderr: %s", out);
}
