/* tests/core/test_sys.c - tests core/sys.c: the syscall shim and fault injection. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/sys.h"

static char dir[] = "/tmp/rivven-sys-XXXXXX";

static void setup(void)
{
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    rv_sys_fault_clear();
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(sys, .init = setup, .fini = teardown);

Test(sys, wrappers_return_negative_errno)
{
    cr_assert_eq(rv_sys_open("/nonexistent/x", O_RDONLY, 0), -ENOENT);
    cr_assert_eq(rv_sys_fdatasync(-1), -EBADF);
    char b[4];
    cr_assert_eq(rv_sys_pread(-1, b, sizeof(b), 0), -EBADF);
    cr_assert_eq(rv_sys_unlink("/nonexistent/x"), -ENOENT);
}

Test(sys, write_read_roundtrip_through_the_shim)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/f", dir);
    int fd = rv_sys_open(path, O_RDWR | O_CREAT, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(rv_sys_pwrite(fd, "hello", 5, 10), 5);
    cr_assert_eq(rv_sys_fdatasync(fd), 0);
    struct stat st;
    cr_assert_eq(rv_sys_fstat(fd, &st), 0);
    cr_assert_eq(st.st_size, 15);
    char b[5];
    cr_assert_eq(rv_sys_pread(fd, b, 5, 10), 5);
    cr_assert(memcmp(b, "hello", 5) == 0);
    cr_assert_eq(rv_sys_close(fd), 0);
}

Test(sys, fault_fails_exactly_the_nth_call)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/g", dir);
    int fd = rv_sys_open(path, O_RDWR | O_CREAT, 0600);
    cr_assert_geq(fd, 0);
    rv_sys_fault_fail_nth(3, -ENOSPC);
    cr_assert_eq(rv_sys_pwrite(fd, "a", 1, 0), 1, "call 1 runs");
    cr_assert_eq(rv_sys_fdatasync(fd), 0, "call 2 runs");
    cr_assert_not(rv_sys_fault_fired());
    cr_assert_eq(rv_sys_pwrite(fd, "b", 1, 1), -ENOSPC, "call 3 fails");
    cr_assert(rv_sys_fault_fired());
    cr_assert_eq(rv_sys_pwrite(fd, "c", 1, 1), 1, "a fault fires once");
    rv_sys_fault_clear();
    cr_assert_not(rv_sys_fault_fired());
    cr_assert_eq(rv_sys_close(fd), 0);
}

Test(sys, failed_close_still_releases_the_descriptor)
{
    int fd = rv_sys_open("/dev/null", O_RDONLY, 0);
    cr_assert_geq(fd, 0);
    rv_sys_fault_fail_nth(1, -EIO);
    cr_assert_eq(rv_sys_close(fd), -EIO);
    cr_assert_eq(fcntl(fd, F_GETFD), -1, "descriptor released");
}

Test(sys, mkdir_p_creates_parents_and_refuses_files_in_the_way)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/a/b/c", dir);
    cr_assert_eq(rv_sys_mkdir_p(path, 0755), 0);
    cr_assert_eq(rv_sys_mkdir_p(path, 0755), 0, "idempotent");
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert(S_ISDIR(st.st_mode));
    char file[128];
    snprintf(file, sizeof(file), "%s/file", dir);
    int fd = rv_sys_open(file, O_WRONLY | O_CREAT, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(rv_sys_close(fd), 0);
    char below[160];
    snprintf(below, sizeof(below), "%s/x", file);
    cr_assert_eq(rv_sys_mkdir_p(below, 0755), -ENOTDIR);
    cr_assert_eq(rv_sys_mkdir_p("", 0755), -ENAMETOOLONG);
}

Test(sys, fault_in_mkdir_p_is_reported)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/p/q", dir);
    rv_sys_fault_fail_nth(1, -EACCES);
    int rc = rv_sys_mkdir_p(path, 0755);
    cr_assert_eq(rc, -EACCES);
}
