/* error.c -- the one error list (FBK_ERROR_MAP) and per-thread messages. */
#include "fbk_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char tls_msg[512];
static _Thread_local int tls_errno;

const char *fbk_strerror(int err)
{
    switch (err) {
    case FBK_OK:
        return "success";
#define FBK__ERR_STR(name, value, msg)                                                             \
    case FBK_##name:                                                                               \
        return msg;
        FBK_ERROR_MAP(FBK__ERR_STR)
#undef FBK__ERR_STR
    default:
        return "unknown error";
    }
}

const char *fbk_err_name(int err)
{
    switch (err) {
    case FBK_OK:
        return "FBK_OK";
#define FBK__ERR_NAME(name, value, msg)                                                            \
    case FBK_##name:                                                                               \
        return "FBK_" #name;
        FBK_ERROR_MAP(FBK__ERR_NAME)
#undef FBK__ERR_NAME
    default:
        return "FBK_E?";
    }
}

const char *fbk_errmsg(void) { return tls_msg; }

int fbk_last_os_error(void) { return tls_errno; }

int fbk_error_vset(int code, int os_errno, const char *fmt, va_list ap)
{
    tls_errno = os_errno;
    if (fmt)
        vsnprintf(tls_msg, sizeof tls_msg, fmt, ap);
    else
        snprintf(tls_msg, sizeof tls_msg, "%s", fbk_strerror(code));
    return code;
}

int fbk_error_set(int code, int os_errno, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fbk_error_vset(code, os_errno, fmt, ap);
    va_end(ap);
    return code;
}

int fbk__errno_code(int os_errno)
{
    switch (os_errno) {
    case ENOSPC:
    case EDQUOT:
        return FBK_ENOSPC;
    case ENOMEM:
        return FBK_ENOMEM;
    case ENOENT:
        return FBK_ENOTFOUND;
    case EINVAL:
    case ENAMETOOLONG:
    case ENOTDIR:
        return FBK_EINVAL;
    default:
        return FBK_EIO;
    }
}

int fbk_error_from_errno(int os_errno, const char *fmt, ...)
{
    int code = fbk__errno_code(os_errno);
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char ebuf[128];
    const char *es = strerror_r(os_errno, ebuf, sizeof ebuf); /* GNU form */
    return fbk_error_set(code, os_errno, "%s: %s", buf, es);
}

int fbk__error_keep(int code)
{
    /* A failure whose callee already set a message keeps it; otherwise the
     * generic text is recorded so fbk_errmsg() is never stale. */
    if (code < 0 && tls_msg[0] == '\0')
        fbk_error_set(code, 0, "%s", fbk_strerror(code));
    return code;
}

void fbk__error_clear(void)
{
    tls_msg[0] = '\0';
    tls_errno = 0;
}

#ifndef NDEBUG
/* The report of a misuse check (FBK__DEBUG_ASSERT, fbk_internal.h): debug
 * builds only; a release build (NDEBUG) has neither the checks nor this
 * function.  It stops the program because the misuse it reports (a handle
 * used after its last release, an unload without a load, a task waited for
 * twice) has already broken a reference count or is about to touch freed
 * memory: carrying on would corrupt the heap far from the bug.  It is the
 * library's only abort(); run-time failures return FBK_E* codes instead. */
_Noreturn void fbk__misuse(const char *fn, const char *what)
{
    fprintf(stderr, "libfbk: misuse in %s: %s (undefined behaviour; this debug build stops here)\n",
            fn, what);
    fflush(stderr);
    abort();
}
#endif

bool fbk__debug_checks(void)
{
#ifdef NDEBUG
    return false;
#else
    return true;
#endif
}
