/* core/sys.c - the syscall shim with fault injection (see sys.h). */
#include "core/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Relaxed atomics: fault injection is a test facility; the counter only has to be
 * exact for the single thread a fault test drives. */
static _Atomic uint32_t fault_countdown;
static _Atomic int fault_err;
static _Atomic bool fault_has_fired;

void rv_sys_fault_fail_nth(uint32_t nth, int err)
{
    atomic_store_explicit(&fault_err, err, memory_order_relaxed);
    atomic_store_explicit(&fault_has_fired, false, memory_order_relaxed);
    atomic_store_explicit(&fault_countdown, nth, memory_order_relaxed);
}

bool rv_sys_fault_fired(void)
{
    return atomic_load_explicit(&fault_has_fired, memory_order_relaxed);
}

void rv_sys_fault_clear(void)
{
    rv_sys_fault_fail_nth(0, 0);
}

/* 0 to go on with the real call, or the injected -errno. */
static int sys_fault(void)
{
    uint32_t n = atomic_load_explicit(&fault_countdown, memory_order_relaxed);
    if (n == 0)
        return 0;
    if (atomic_fetch_sub_explicit(&fault_countdown, 1, memory_order_relaxed) != 1)
        return 0;
    atomic_store_explicit(&fault_has_fired, true, memory_order_relaxed);
    return atomic_load_explicit(&fault_err, memory_order_relaxed);
}

#define SYS_CALL(expr)                                                                             \
    do {                                                                                           \
        int f_ = sys_fault();                                                                      \
        if (f_ != 0)                                                                               \
            return f_;                                                                             \
        for (;;) {                                                                                 \
            long r_ = (long)(expr);                                                                \
            if (r_ >= 0)                                                                           \
                return r_;                                                                         \
            if (errno != EINTR)                                                                    \
                return -errno;                                                                     \
        }                                                                                          \
    } while (0)

int rv_sys_open(const char *path, int flags, mode_t mode)
{
    SYS_CALL(open(path, flags | O_CLOEXEC, mode));
}

int rv_sys_openat(int dir_fd, const char *path, int flags, mode_t mode)
{
    SYS_CALL(openat(dir_fd, path, flags | O_CLOEXEC, mode));
}

int rv_sys_close(int fd)
{
    int f = sys_fault();
    if (f != 0) {
        close(fd); /* the descriptor is gone either way, as with a real close error */
        return f;
    }
    /* Never retry close on EINTR: Linux has already released the descriptor. */
    return close(fd) < 0 && errno != EINTR ? -errno : 0;
}

ssize_t rv_sys_pread(int fd, void *buf, size_t len, off_t pos)
{
    SYS_CALL(pread(fd, buf, len, pos));
}

ssize_t rv_sys_pwrite(int fd, const void *buf, size_t len, off_t pos)
{
    SYS_CALL(pwrite(fd, buf, len, pos));
}

ssize_t rv_sys_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t pos)
{
    SYS_CALL(pwritev(fd, iov, iovcnt, pos));
}

ssize_t rv_sys_read(int fd, void *buf, size_t len)
{
    SYS_CALL(read(fd, buf, len));
}

ssize_t rv_sys_write(int fd, const void *buf, size_t len)
{
    SYS_CALL(write(fd, buf, len));
}

int rv_sys_fdatasync(int fd)
{
    SYS_CALL(fdatasync(fd));
}

int rv_sys_fsync(int fd)
{
    SYS_CALL(fsync(fd));
}

int rv_sys_fallocate(int fd, int mode, off_t pos, off_t len)
{
    SYS_CALL(fallocate(fd, mode, pos, len));
}

int rv_sys_ftruncate(int fd, off_t len)
{
    SYS_CALL(ftruncate(fd, len));
}

int rv_sys_fstat(int fd, struct stat *st)
{
    SYS_CALL(fstat(fd, st));
}

int rv_sys_mkdir(const char *path, mode_t mode)
{
    SYS_CALL(mkdir(path, mode));
}

int rv_sys_unlink(const char *path)
{
    SYS_CALL(unlink(path));
}

int rv_sys_rename(const char *from, const char *to)
{
    SYS_CALL(rename(from, to));
}

int rv_sys_fsync_dir(const char *path)
{
    int fd = rv_sys_open(path, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0)
        return fd;
    int rc = rv_sys_fsync(fd);
    int crc = rv_sys_close(fd);
    return rc < 0 ? rc : crc;
}

int rv_sys_mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof(buf))
        return -ENAMETOOLONG;
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        int rc = rv_sys_mkdir(buf, mode);
        if (rc < 0 && rc != -EEXIST)
            return rc;
        if (rc == 0) {
            /* A new directory exists durably only once its parent is synced. */
            char *slash = strrchr(buf, '/');
            if (slash != NULL && slash != buf) {
                *slash = '\0';
                rc = rv_sys_fsync_dir(buf);
                *slash = '/';
            } else {
                rc = rv_sys_fsync_dir(slash == buf ? "/" : ".");
            }
            if (rc < 0)
                return rc;
        }
        buf[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}
