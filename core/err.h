/*
 * core/err.h - errors: negative errno values and a per-thread message.
 *
 * Action functions return 0 or -errno. rv_errf() returns its code unchanged and
 * records a formatted message in a per-thread buffer, so the caller that reports
 * the failure can say what went wrong (rv_err_msg()) without every layer passing
 * strings around. The buffer belongs to the calling thread; it is overwritten by
 * the next rv_errf on that thread.
 */
#ifndef RV_CORE_ERR_H
#define RV_CORE_ERR_H

#include <errno.h>

/* A readable name for an -errno (or errno) value, e.g. "ENOSPC: No space left on
 * device". Never NULL; the string is static or thread-local. */
const char *rv_strerror(int err);

/* Record a message for `err` (a -errno) on this thread and return err. */
int rv_errf(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The last message recorded with rv_errf on this thread ("" if none). */
const char *rv_err_msg(void);

/* Forget the last message. */
void rv_err_clear(void);

#endif /* RV_CORE_ERR_H */
