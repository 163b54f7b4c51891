/*
 * file_io.h -- the one table of system calls the file: backend makes.
 *
 * Every system call of backends/file/ goes through the table returned by
 * fbk__file_io_get(), in the manner of SQLite's VFS: a test can install its
 * own table (fault injection: ENOSPC on the third write, EIO from fsync, a
 * crash point before a rename...) with fbk__file_io_set() and pass the calls
 * it does not care about on to fbk__file_io_posix.
 *
 * Each member has the signature and errno convention of the POSIX/Linux call
 * it is named after (-1 / MAP_FAILED / NULL and errno on failure).
 */
#ifndef FBK_FILE_IO_H
#define FBK_FILE_IO_H

#include <dirent.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef struct fbk__file_io {
    int (*openat)(int dirfd, const char *path, int flags, mode_t mode);
    int (*close)(int fd);
    ssize_t (*read)(int fd, void *buf, size_t len);
    ssize_t (*pread)(int fd, void *buf, size_t len, off_t off);
    ssize_t (*write)(int fd, const void *buf, size_t len);
    ssize_t (*pwrite)(int fd, const void *buf, size_t len, off_t off);
    int (*fsync)(int fd);
    int (*fdatasync)(int fd);
    int (*syncfs)(int fd);
    int (*linkat)(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags);
    int (*renameat)(int olddirfd, const char *oldpath, int newdirfd, const char *newpath);
    int (*unlinkat)(int dirfd, const char *path, int flags);
    int (*mkdirat)(int dirfd, const char *path, mode_t mode);
    int (*fstat)(int fd, struct stat *st);
    int (*fstatat)(int dirfd, const char *path, struct stat *st, int flags);
    int (*ftruncate)(int fd, off_t len);
    void *(*mmap)(void *addr, size_t len, int prot, int flags, int fd, off_t off);
    int (*munmap)(void *addr, size_t len);
    int (*flock)(int fd, int op);
    /* directory listing: fdopendir takes ownership of fd (closedir closes it) */
    DIR *(*fdopendir)(int fd);
    struct dirent *(*readdir)(DIR *dir);
    int (*closedir)(DIR *dir);
    /* in-kernel copy (the EXDEV fallback); the backend falls back to
     * read/write when it fails with EXDEV, EINVAL, ENOSYS or EOPNOTSUPP */
    ssize_t (*copy_file_range)(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t len,
                               unsigned flags);
    /* gather write (store_iov) and scatter read (load_into).  The backend
     * makes one write / pread per segment instead, through the same table,
     * when writev / preadv is NULL (a table whose designated initializers
     * predate them) or is the POSIX one while write / pread is not (a copy
     * of fbk__file_io_posix with write / pread hooked): a table written
     * before these members existed still sees every byte. */
    ssize_t (*writev)(int fd, const struct iovec *iov, int n);
    ssize_t (*preadv)(int fd, const struct iovec *iov, int n, off_t off);
} fbk__file_io;

/* The default table: the plain system calls. */
extern const fbk__file_io fbk__file_io_posix;

/* The table in use (never NULL).  Thread-safe. */
const fbk__file_io *fbk__file_io_get(void);
/* Installs io (NULL restores fbk__file_io_posix) for every later call of
 * every file: store in the process; *io must stay valid until replaced.
 * Meant for tests; thread-safe, but calls already under way finish with the
 * table they started with. */
void fbk__file_io_set(const fbk__file_io *io);

/* Tests only, and only as a negative control: when non-zero, a location
 * sync skips the fsync of the shard directories it touched, so a power cut
 * can lose names the sync claimed durable (tests/test_powerloss.c proves
 * that its checker notices).  Set it before opening a store; 0 otherwise. */
extern int fbk__file_skip_dir_fsync;

#endif
