/* core/err.c - error names and the per-thread error message. */
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/trace.h"

static _Thread_local char err_msg[512];
static _Thread_local char err_name[160];

static const char *err_symbol(int e)
{
    switch (e) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EIO: return "EIO";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EEXIST: return "EEXIST";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case ENFILE: return "ENFILE";
    case EMFILE: return "EMFILE";
    case ENOSPC: return "ENOSPC";
    case EROFS: return "EROFS";
    case ERANGE: return "ERANGE";
    case ENOSYS: return "ENOSYS";
    case EBADMSG: return "EBADMSG";
    case EPROTO: return "EPROTO";
    case EMSGSIZE: return "EMSGSIZE";
    case ENOBUFS: return "ENOBUFS";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ECANCELED: return "ECANCELED";
    case ESHUTDOWN: return "ESHUTDOWN";
    case EOVERFLOW: return "EOVERFLOW";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    default: return NULL;
    }
}

const char *rv_strerror(int err)
{
    int e = err < 0 ? -err : err;
    const char *sym = err_symbol(e);
    char buf[128];
    /* GNU strerror_r returns a pointer that may or may not be buf. */
    const char *text = strerror_r(e, buf, sizeof(buf));
    if (sym != NULL)
        snprintf(err_name, sizeof(err_name), "%s: %s", sym, text);
    else
        snprintf(err_name, sizeof(err_name), "errno %d: %s", e, text);
    return err_name;
}

int rv_errf(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err_msg, sizeof(err_msg), fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof(err_msg) && err != 0) {
        char name[160];
        snprintf(name, sizeof(name), "%s", rv_strerror(err));
        snprintf(err_msg + n, sizeof(err_msg) - (size_t)n, " (%s)", name);
    }
    rv_trace(RV_TRACE_DEBUG, "error: %s", err_msg);
    return err;
}

const char *rv_err_msg(void)
{
    return err_msg;
}

void rv_err_clear(void)
{
    err_msg[0] = '\0';
}
