/*
 * fbk_dirs.h -- directory helpers shared by the backends that keep a store
 * in a directory (file:, lmdb:): the store directory's LOCK and a durable
 * `mkdir -p`.  Built on the public headers only (fbk_backend.h for the error
 * functions), so any backend can use it.
 *
 * Every system call goes through a small table, so that a backend that
 * routes its calls through its own table (file:, for fault injection and
 * the power-loss tests: file_io.h) keeps doing so here; NULL means the plain
 * POSIX calls.
 */
#ifndef FBK_DIRS_H
#define FBK_DIRS_H

#include "fbk_backend.h"

#include <sys/types.h>

/* The calls these helpers make, with the signature and errno convention of
 * the POSIX call each is named after. */
typedef struct fbk__dir_sys {
    int (*openat)(int dirfd, const char *path, int flags, mode_t mode);
    int (*close)(int fd);
    int (*fsync)(int fd);
    int (*mkdirat)(int dirfd, const char *path, mode_t mode);
    int (*flock)(int fd, int op);
} fbk__dir_sys;

/* mkdir -p: makes path (relative to the directory `at` unless absolute;
 * AT_FDCWD for the working directory) and every missing parent, mode 0755.
 * Each directory it creates is made durable in its parent at once (the
 * parent is fsynced), so a power cut after the return never loses a
 * directory the caller then put durable files in.  Existing directories
 * cost one mkdirat each (EEXIST) and no fsync.
 * sys: the system calls (NULL: POSIX).  who, what: the message prefix and
 * verb, "<who>: <what> <path>: <strerror>" ("file", "create").
 * Returns FBK_OK or an FBK_E* code with a message naming the directory that
 * could not be made or synced.  Thread-safe. */
int fbk__dir_make(const fbk__dir_sys *sys, int at, const char *path, const char *who,
                  const char *what);

/* Opens the store directory's lock file DIR/LOCK and takes
 * flock(LOCK_SH|LOCK_NB) on it, which the store keeps for its life: every
 * open store holds it shared; only an exclusive holder (`fbk compact`, or a
 * libfbk before shared stores) keeps others out.
 * dirfd: DIR's descriptor, or AT_FDCWD to reach the lock file by the name
 * dir; dir names DIR in messages (and in the path when dirfd is AT_FDCWD).
 * A writer (readonly == 0) creates LOCK when missing; a read-only store
 * opens an existing one O_RDONLY (flock needs no write access), and when
 * there is none *fd is -1 and FBK_OK is returned: the caller decides
 * whether that is an error.
 * On success *fd is the locked descriptor (or -1 as above), which the
 * caller closes to let the lock go.  FBK_EBUSY while someone holds LOCK
 * exclusively ("<who>: DIR is locked exclusively (...)"); another FBK_E*
 * code with a message when it cannot be opened or locked (*fd is -1). */
int fbk__dir_lock(const fbk__dir_sys *sys, int dirfd, const char *dir, int readonly,
                  const char *who, int *fd);

#endif
