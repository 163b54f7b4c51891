/* file_prim.c -- file primitives over the system-call table (file_io.h):
 * listing a directory, whole writes and reads of iovecs, mkdir and fsync of
 * directories, recursive removal. */
#include "file_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

static int close_keep_errno(int fd)
{
    int e = errno;
    io_()->close(fd);
    errno = e;
    return -1;
}

/* fdopendir(fd); when that fails, fd is closed and errno kept. */
DIR *fbk__file_dir_of(int fd)
{
    DIR *d = io_()->fdopendir(fd);
    if (!d)
        close_keep_errno(fd);
    return d;
}

/* Moves the segments cur[0..*cnt) past `done` bytes just transferred. */
static void iov_advance(struct iovec **cur, int *cnt, size_t done)
{
    while (*cnt > 0 && done >= (*cur)->iov_len) {
        done -= (*cur)->iov_len;
        (*cur)++;
        (*cnt)--;
    }
    if (*cnt > 0) {
        (*cur)->iov_base = (char *)(*cur)->iov_base + done;
        (*cur)->iov_len -= done;
    }
}

/* Whether to use the table's writev (preadv): not when it has none, nor
 * when it hooks write (pread) but leaves writev (preadv) the POSIX one -- a
 * table written before these existed, by copying fbk__file_io_posix and
 * replacing some calls: its hook must still see every byte (file_io.h). */
static int use_writev(const fbk__file_io *io)
{
    return io->writev &&
           (io->writev != fbk__file_io_posix.writev || io->write == fbk__file_io_posix.write);
}

static int use_preadv(const fbk__file_io *io)
{
    return io->preadv &&
           (io->preadv != fbk__file_io_posix.preadv || io->pread == fbk__file_io_posix.pread);
}

/* Writes iov[0..n) (n <= FILE_IOV_MAX) completely: writev, resumed after a
 * partial write or EINTR; plain writes for a single buffer (n == 1), or when
 * use_writev() says so.  0, or -1 with errno. */
int fbk__file_writev_all(int fd, const struct iovec *iov, int n)
{
    struct iovec v[FILE_IOV_MAX], *cur = v;
    int cnt = 0;
    for (int i = 0; i < n; i++)
        if (iov[i].iov_len > 0)
            v[cnt++] = iov[i];
    while (cnt > 0) {
        const fbk__file_io *io = io_();
        ssize_t w = n > 1 && use_writev(io) ? io->writev(fd, cur, cnt)
                                            : io->write(fd, cur->iov_base, cur->iov_len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        iov_advance(&cur, &cnt, (size_t)w);
    }
    return 0;
}

/* Reads bytes [0, sum of iov_len) of fd into iov[0..n) (n <= FBK_PLACE_MAX + 1):
 * preadv, resumed after a partial read or EINTR, until done or end of file;
 * *got is how many bytes arrived.  Plain preads for a single buffer (n == 1),
 * or when use_preadv() says so.  0, or -1 with errno.
 * probe: the last segment is a probe of that many bytes past the value's
 * end, read only to see whether the file goes on.  A preadv that asked for
 * it and stopped right before it has met the end of the (regular) file, so
 * no further read is spent to hear that again: that is one system call of
 * the two a load used to make.  (A file system that returns short reads
 * mid-file could hide bytes past the end; the value's own bytes are all read
 * and checked by the core either way.) */
int fbk__file_preadv_all(int fd, const struct iovec *iov, int n, size_t probe, size_t *got)
{
    struct iovec v[FBK_PLACE_MAX + 1], *cur = v;
    int cnt = 0;
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (iov[i].iov_len > 0) {
            v[cnt++] = iov[i];
            total += iov[i].iov_len;
        }
    size_t off = 0;
    *got = 0;
    while (cnt > 0) {
        const fbk__file_io *io = io_();
        int vec = n > 1 && use_preadv(io);
        ssize_t r = vec ? io->preadv(fd, cur, cnt, (off_t)off)
                        : io->pread(fd, cur->iov_base, cur->iov_len, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break; /* end of file */
        off += (size_t)r;
        *got = off;
        iov_advance(&cur, &cnt, (size_t)r);
        if (vec && probe && off == total - probe)
            break; /* asked for the probe, got none of it: end of file */
    }
    return 0;
}

/* mkdirat that is happy when the directory exists. */
int fbk__file_mkdir_ok(int at, const char *path)
{
    if (io_()->mkdirat(at, path, 0755) == 0 || errno == EEXIST)
        return 0;
    return -1;
}

int fbk__file_fsync_dir_at(int at, const char *path)
{
    int fd = io_()->openat(at, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (io_()->fsync(fd) != 0)
        return close_keep_errno(fd);
    return io_()->close(fd);
}

/* 1 if the entry de of the directory at is a regular file (not followed). */
int fbk__file_is_regular(int at, const struct dirent *de)
{
    if (de->d_type != DT_UNKNOWN)
        return de->d_type == DT_REG;
    struct stat st;
    return io_()->fstatat(at, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

/* Removes dirfd/name whatever it is (a directory recursively).  0 or -1. */
int fbk__file_remove_tree_at(int at, const char *name, int depth)
{
    if (io_()->unlinkat(at, name, 0) == 0 || errno == ENOENT)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return -1;
    if (depth > 32) {
        errno = ELOOP;
        return -1;
    }
    int fd = io_()->openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    DIR *d = fbk__file_dir_of(fd);
    if (!d)
        return -1;
    struct dirent *de;
    int rc = 0;
    errno = 0;
    while ((de = io_()->readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (fbk__file_remove_tree_at(dirfd(d), de->d_name, depth + 1) != 0)
            rc = -1;
        errno = 0;
    }
    int e = errno;
    io_()->closedir(d);
    if (e) {
        errno = e;
        return -1;
    }
    if (rc != 0)
        return -1;
    return io_()->unlinkat(at, name, AT_REMOVEDIR) == 0 || errno == ENOENT ? 0 : -1;
}
