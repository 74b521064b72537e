/*
 * core/sys.h - the syscall shim.
 *
 * Every file and descriptor syscall of the project goes through these wrappers
 * (SQLite's aSyscall idea) so tests can make the Nth call fail with a chosen
 * -errno and prove that every error path unwinds cleanly. Each wrapper returns
 * the syscall's result, or -errno (never -1 with errno set). EINTR is retried.
 */
#ifndef RV_CORE_SYS_H
#define RV_CORE_SYS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

int rv_sys_open(const char *path, int flags, mode_t mode);
int rv_sys_openat(int dir_fd, const char *path, int flags, mode_t mode);
int rv_sys_close(int fd);
ssize_t rv_sys_pread(int fd, void *buf, size_t len, off_t pos);
ssize_t rv_sys_pwrite(int fd, const void *buf, size_t len, off_t pos);
ssize_t rv_sys_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t pos);
ssize_t rv_sys_read(int fd, void *buf, size_t len);
ssize_t rv_sys_write(int fd, const void *buf, size_t len);
int rv_sys_fdatasync(int fd);
int rv_sys_fsync(int fd);
int rv_sys_fallocate(int fd, int mode, off_t pos, off_t len);
int rv_sys_ftruncate(int fd, off_t len);
int rv_sys_fstat(int fd, struct stat *st);
int rv_sys_mkdir(const char *path, mode_t mode);
int rv_sys_unlink(const char *path);
int rv_sys_rename(const char *from, const char *to);
/* fsync the directory `path` (after a create, rename or unlink in it). */
int rv_sys_fsync_dir(const char *path);

/* Create `path` and its missing parents (mkdir -p), fsyncing the parent of
 * every directory it creates so the new entries survive a power loss. */
int rv_sys_mkdir_p(const char *path, mode_t mode);

/* Fault injection (tests). Make the nth shimmed call from now (1-based) fail with
 * err (a -errno); 0 disables. Process-wide. */
void rv_sys_fault_fail_nth(uint32_t nth, int err);
/* Whether the armed fault fired since it was armed. */
bool rv_sys_fault_fired(void);
void rv_sys_fault_clear(void);

#endif /* RV_CORE_SYS_H */
