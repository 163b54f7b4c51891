/* file_io.c -- the default (POSIX) system-call table of the file: backend. */
#include "file_io.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

static int io_openat(int dirfd, const char *path, int flags, mode_t mode)
{
    return openat(dirfd, path, flags, mode);
}

static int io_close(int fd) { return close(fd); }

static ssize_t io_read(int fd, void *buf, size_t len) { return read(fd, buf, len); }

static ssize_t io_pread(int fd, void *buf, size_t len, off_t off)
{
    return pread(fd, buf, len, off);
}

static ssize_t io_write(int fd, const void *buf, size_t len) { return write(fd, buf, len); }

static ssize_t io_pwrite(int fd, const void *buf, size_t len, off_t off)
{
    return pwrite(fd, buf, len, off);
}

static int io_fsync(int fd) { return fsync(fd); }

static int io_fdatasync(int fd) { return fdatasync(fd); }

static int io_syncfs(int fd) { return syncfs(fd); }

static int io_linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
                     int flags)
{
    return linkat(olddirfd, oldpath, newdirfd, newpath, flags);
}

static int io_renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
    return renameat(olddirfd, oldpath, newdirfd, newpath);
}

static int io_unlinkat(int dirfd, const char *path, int flags)
{
    return unlinkat(dirfd, path, flags);
}

static int io_mkdirat(int dirfd, const char *path, mode_t mode)
{
    return mkdirat(dirfd, path, mode);
}

static int io_fstat(int fd, struct stat *st) { return fstat(fd, st); }

static int io_fstatat(int dirfd, const char *path, struct stat *st, int flags)
{
    return fstatat(dirfd, path, st, flags);
}

static int io_ftruncate(int fd, off_t len) { return ftruncate(fd, len); }

static void *io_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return mmap(addr, len, prot, flags, fd, off);
}

static int io_munmap(void *addr, size_t len) { return munmap(addr, len); }

static int io_flock(int fd, int op) { return flock(fd, op); }

static DIR *io_fdopendir(int fd) { return fdopendir(fd); }

static struct dirent *io_readdir(DIR *dir) { return readdir(dir); }

static int io_closedir(DIR *dir) { return closedir(dir); }

static ssize_t io_copy_file_range(int fd_in, off_t *off_in, int fd_out, off_t *off_out,
                                  size_t len, unsigned flags)
{
    return copy_file_range(fd_in, off_in, fd_out, off_out, len, flags);
}

static ssize_t io_writev(int fd, const struct iovec *iov, int n) { return writev(fd, iov, n); }

static ssize_t io_preadv(int fd, const struct iovec *iov, int n, off_t off)
{
    return preadv(fd, iov, n, off);
}

const fbk__file_io fbk__file_io_posix = {
    .openat = io_openat,
    .close = io_close,
    .read = io_read,
    .pread = io_pread,
    .write = io_write,
    .pwrite = io_pwrite,
    .fsync = io_fsync,
    .fdatasync = io_fdatasync,
    .syncfs = io_syncfs,
    .linkat = io_linkat,
    .renameat = io_renameat,
    .unlinkat = io_unlinkat,
    .mkdirat = io_mkdirat,
    .fstat = io_fstat,
    .fstatat = io_fstatat,
    .ftruncate = io_ftruncate,
    .mmap = io_mmap,
    .munmap = io_munmap,
    .flock = io_flock,
    .fdopendir = io_fdopendir,
    .readdir = io_readdir,
    .closedir = io_closedir,
    .copy_file_range = io_copy_file_range,
    .writev = io_writev,
    .preadv = io_preadv,
};

static _Atomic(const fbk__file_io *) current_io = &fbk__file_io_posix;

const fbk__file_io *fbk__file_io_get(void)
{
    return atomic_load_explicit(&current_io, memory_order_acquire);
}

void fbk__file_io_set(const fbk__file_io *io)
{
    atomic_store_explicit(&current_io, io ? io : &fbk__file_io_posix, memory_order_release);
}
