/* fbk_dirs.c -- the store directory's LOCK and the durable mkdir -p that the
 * file: and lmdb: backends share (fbk_dirs.h). */
#include "fbk_dirs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int sys_openat(int dirfd, const char *path, int flags, mode_t mode)
{
    return openat(dirfd, path, flags, mode);
}

static int sys_mkdirat(int dirfd, const char *path, mode_t mode)
{
    return mkdirat(dirfd, path, mode);
}

static const fbk__dir_sys posix = {
    .openat = sys_openat,
    .close = close,
    .fsync = fsync,
    .mkdirat = sys_mkdirat,
    .flock = flock,
};

/* fsync of the directory at/path.  0, or -1 with errno. */
static int fsync_dir_at(const fbk__dir_sys *sys, int at, const char *path)
{
    int fd = sys->openat(at, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (sys->fsync(fd) != 0) {
        int e = errno;
        sys->close(fd);
        errno = e;
        return -1;
    }
    return sys->close(fd);
}

int fbk__dir_make(const fbk__dir_sys *sys, int at, const char *path, const char *who,
                  const char *what)
{
    if (!sys)
        sys = &posix;
    size_t n = strlen(path);
    if (n == 0)
        return fbk_error_set(FBK_EINVAL, 0, "%s: %s: empty directory name", who, what);
    char *tmp = malloc(n + 1);
    if (!tmp)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "%s: %s %s: out of memory", who, what, path);
    memcpy(tmp, path, n + 1);
    int rc = FBK_OK;
    for (size_t i = 1; i <= n && rc == FBK_OK; i++) {
        if (tmp[i] != '/' && tmp[i] != '\0')
            continue;
        if (tmp[i - 1] == '/')
            continue;
        char c = tmp[i];
        tmp[i] = '\0';
        if (sys->mkdirat(at, tmp, 0755) == 0) {
            /* durable in its parent */
            char *slash = strrchr(tmp, '/');
            int r;
            if (!slash) {
                r = at == AT_FDCWD ? fsync_dir_at(sys, AT_FDCWD, ".") : sys->fsync(at);
            } else if (slash == tmp) {
                r = fsync_dir_at(sys, at, "/");
            } else {
                *slash = '\0';
                r = fsync_dir_at(sys, at, tmp);
                *slash = '/';
            }
            if (r != 0)
                rc = fbk_error_from_errno(errno, "%s: %s %s", who, what, tmp);
        } else if (errno != EEXIST) {
            rc = fbk_error_from_errno(errno, "%s: %s %s", who, what, tmp);
        }
        tmp[i] = c;
    }
    free(tmp);
    return rc;
}

int fbk__dir_lock(const fbk__dir_sys *sys, int dirfd, const char *dir, int readonly,
                  const char *who, int *fd)
{
    if (!sys)
        sys = &posix;
    *fd = -1;
    size_t n = strlen(dir) + sizeof "/LOCK";
    char *path = malloc(n);
    if (!path)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "%s: open %s/LOCK: out of memory", who, dir);
    snprintf(path, n, "%s/LOCK", dir);
    const char *at_name = dirfd == AT_FDCWD ? path : "LOCK";
    /* a read-only store makes nothing: an existing LOCK is flock()ed through
     * a read-only descriptor */
    int lfd = readonly ? sys->openat(dirfd, at_name, O_RDONLY | O_CLOEXEC, 0)
                       : sys->openat(dirfd, at_name, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    int rc = FBK_OK;
    if (lfd < 0) {
        if (!(readonly && errno == ENOENT))
            rc = fbk_error_from_errno(errno, "%s: %s %s", who, readonly ? "open" : "create", path);
        free(path);
        return rc;
    }
    int r;
    while ((r = sys->flock(lfd, LOCK_SH | LOCK_NB)) != 0 && errno == EINTR)
        ;
    if (r != 0 && errno == EWOULDBLOCK)
        rc = fbk_error_set(FBK_EBUSY, errno,
                           "%s: %s is locked exclusively (lock %s is held by `fbk compact`, or by "
                           "a program built with a libfbk before shared stores)",
                           who, dir, path);
    else if (r != 0)
        rc = fbk_error_from_errno(errno, "%s: lock %s", who, path);
    free(path);
    if (rc != FBK_OK) {
        sys->close(lfd);
        return rc;
    }
    *fd = lfd;
    return FBK_OK;
}
