/* file_persist.c -- moving keys between the spill area and a location:
 * persist and register (hard links, or copies across file systems), remove,
 * and sync (fsync of the touched files and directories, or syncfs), with
 * the crash-consistency argument of docs/file-backend.md. */
#include "file_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

int fbk__file_skip_dir_fsync = 0;

/* ------------------------------------------------------ file primitives */

/* Ends a write to the temporary at/tmp through fd: closes fd and, if all
 * went well (ok, else `what` failed with errno e), renames it to at/name;
 * otherwise removes it.  So a name only ever appears with its whole value. */
static int finish_tmp(int at, const char *base, const char *tmp, const char *name, int fd, int ok,
                      const char *what, int e)
{
    if (io_()->close(fd) != 0 && ok) {
        what = "close";
        e = errno;
        ok = 0;
    }
    if (ok) {
        what = "rename into place";
        ok = io_()->renameat(at, tmp, at, name) == 0;
        e = errno;
    }
    if (!ok) {
        io_()->unlinkat(at, tmp, 0);
        return fail(e, what, base, tmp);
    }
    return FBK_OK;
}

/* Copies bytes [0, size) of in to out (in-kernel when it can).  0 or -1. */
static int copy_bytes(file_backend *b, int in, int out, off_t size)
{
    off_t done = 0;
    int kernel = 1;
    while (done < size && kernel) {
        off_t ioff = done, ooff = done;
        size_t want = (size_t)(size - done);
        if (want > ((size_t)1 << 30))
            want = (size_t)1 << 30;
        ssize_t n = io_()->copy_file_range(in, &ioff, out, &ooff, want, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)
                kernel = 0; /* the plain loop below takes over */
            else
                return -1;
        } else if (n == 0) {
            return 0; /* the source shrank: the core's checksum will tell */
        } else {
            done += n;
        }
    }
    if (done >= size)
        return 0;
    size_t cap;
    size_t chunk = (size_t)1 << 20;
    void *buf = fbk__file_buf_get(b, chunk, &cap);
    if (!buf) {
        errno = ENOMEM;
        return -1;
    }
    int rc = 0;
    while (done < size) {
        size_t want = (size_t)(size - done) < cap ? (size_t)(size - done) : cap;
        ssize_t n = io_()->pread(in, buf, want, done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -1;
            break;
        }
        if (n == 0)
            break;
        if (fbk__file_writev_all(out, &(struct iovec){buf, (size_t)n}, 1) != 0) {
            rc = -1;
            break;
        }
        done += n;
    }
    int e = errno;
    fbk__file_buf_put(b, buf, cap);
    errno = e;
    return rc;
}

/* Creates dst_at/name as a copy of src_at/name: copy to a temporary name in
 * the same shard, fsync it when durable, rename.  A crash leaves at worst a
 * temporary, never a partial value under the key's name.  *made_shard is
 * set when the destination shard directory had to be created. */
static int copy_file(file_backend *b, int src_at, const char *src_base, int dst_at,
                     const char *dst_base, const char *name, int durable, int *made_shard)
{
    int in = io_()->openat(src_at, name, O_RDONLY | O_CLOEXEC, 0);
    if (in < 0)
        return fail(errno, "open", src_base, name);
    struct stat st;
    if (io_()->fstat(in, &st) != 0) {
        int e = errno;
        io_()->close(in);
        return fail(e, "stat", src_base, name);
    }
    char tmp[FILE_TMP_LEN];
    fbk__file_tmp_name(b, name, tmp);
    char shard[3] = {name[0], name[1], '\0'};
    int out = io_()->openat(dst_at, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0 && errno == ENOENT) {
        if (io_()->mkdirat(dst_at, shard, 0755) == 0 || errno == EEXIST)
            *made_shard = 1; /* EEXIST: see transfer() */
        out = io_()->openat(dst_at, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    }
    if (out < 0) {
        int e = errno;
        io_()->close(in);
        return fail(e, "create", dst_base, tmp);
    }
    const char *what = "copy to";
    int ok = copy_bytes(b, in, out, st.st_size) == 0;
    if (ok && durable) {
        what = "fsync";
        ok = io_()->fsync(out) == 0;
    }
    int e = errno;
    io_()->close(in);
    return finish_tmp(dst_at, dst_base, tmp, name, out, ok, what, e);
}

/* Replaces the existing dst/name by a link to src/name, atomically: link
 * to a temporary name, rename it over.  (rename() does nothing when both
 * names are links to one file -- persisted twice -- so the temporary may
 * remain: it is removed either way.) */
static int replace_link(file_backend *b, int src, const char *sbase, int dst, const char *dbase,
                        const char *name, const char *op)
{
    char tmp[FILE_TMP_LEN];
    fbk__file_tmp_name(b, name, tmp);
    if (io_()->linkat(src, name, dst, tmp, 0) != 0)
        return fbk_error_from_errno(errno, "file: %s: link %s/%s to %s/%s", op, sbase, name, dbase,
                                    tmp);
    int r = io_()->renameat(dst, tmp, dst, name);
    int e = errno;
    io_()->unlinkat(dst, tmp, 0);
    if (r != 0)
        return fbk_error_from_errno(e, "file: %s: rename into place %s/%s", op, dbase, tmp);
    return FBK_OK;
}

/* Links (or, across file systems, copies) the key's file from the spill
 * area into the location l (to_loc: persist; the touched directories are
 * then remembered for sync and a copy is fsynced) or back (register). */
static int transfer(file_backend *b, file_loc *l, const fbk_key *key, int to_loc)
{
    char name[FILE_NAME_LEN];
    fbk__file_key_name(key, name);
    int src = to_loc ? b->spillfd : l->fd, dst = to_loc ? l->fd : b->spillfd;
    const char *sbase = to_loc ? b->spill : l->path, *dbase = to_loc ? l->path : b->spill;
    const char *op = to_loc ? "persist" : "register";
    int made_shard = 0;
    if (!atomic_load_explicit(&l->cross, memory_order_relaxed)) {
        for (int attempt = 0;; attempt++) {
            if (io_()->linkat(src, name, dst, name, 0) == 0) {
                if (to_loc)
                    fbk__file_loc_touch(l, name, 1, key, made_shard);
                return FBK_OK;
            }
            int e = errno;
            if (e == EXDEV) {
                atomic_store_explicit(&l->cross, 1, memory_order_relaxed);
                break;
            }
            if (e == EPERM && !to_loc)
                break; /* a file of another user's (protected_hardlinks): copied */
            if (e == EEXIST) {
                /* persist: the key is already there (an earlier run?);
                 * register: a partial spill file a failed store could not
                 * remove.  Either way this copy is the good one. */
                int rc = replace_link(b, src, sbase, dst, dbase, name, op);
                if (rc == FBK_OK && to_loc)
                    fbk__file_loc_touch(l, name, 1, key, made_shard);
                return rc;
            }
            if (attempt > 0 || e != ENOENT)
                return fbk_error_from_errno(e, "file: %s: link %s/%s to %s/%s", op, sbase, name,
                                            dbase, name);
            /* ENOENT: the source is missing, or the destination shard (a
             * location read-only when it was opened, or a shard scan found
             * to be a file and removed) */
            struct stat st;
            if (io_()->fstatat(src, name, &st, 0) != 0)
                return fbk_error_from_errno(errno, "file: %s %s/%s", op, sbase, name);
            char shard[3] = {name[0], name[1], '\0'};
            /* EEXIST: another persist made the shard a moment ago and may
             * not have recorded it yet; this sync must still make the
             * shard's name durable in the root */
            if (io_()->mkdirat(dst, shard, 0755) == 0 || errno == EEXIST)
                made_shard = 1;
            else
                return fail(errno, "create", dbase, shard);
        }
    }
    int rc = copy_file(b, src, sbase, dst, dbase, name, to_loc, &made_shard);
    if (rc == FBK_OK && to_loc)
        fbk__file_loc_touch(l, name, 0, key, made_shard);
    return rc;
}

/* FBK_EREADONLY for a change asked of a read-only store (the core refuses
 * them before; this guards a caller of the table itself). */
int fbk__file_refuse_readonly(file_backend *b, const char *what)
{
    return fbk_error_set(FBK_EREADONLY, 0, "file: %s in %s: the store was opened read-only", what,
                         b->dir);
}

int fbk__file_persist(void *self, void *loc, const fbk_key *key)
{
    if (((file_backend *)self)->readonly)
        return fbk__file_refuse_readonly(self, "persist");
    return transfer(self, loc, key, 1);
}

int fbk__file_register_key(void *self, void *loc, const fbk_key *key)
{
    return transfer(self, loc, key, 0);
}

int fbk__file_remove_persisted(void *self, void *loc, const fbk_key *key)
{
    if (((file_backend *)self)->readonly)
        return fbk__file_refuse_readonly(self, "remove");
    file_loc *l = loc;
    char name[FILE_NAME_LEN];
    fbk__file_key_name(key, name);
    if (io_()->unlinkat(l->fd, name, 0) != 0)
        return fail(errno, "remove", l->path, name);
    fbk__file_loc_touch(l, name, 0, key, 0);
    return FBK_OK;
}

/* syncfs() on the spill area's file system, with the store-wide sticky
 * error described at file_backend.spill_err. */
static int spill_syncfs(file_backend *b)
{
    pthread_mutex_lock(&b->spill_sync_mu);
    if (b->spill_err == 0 && io_()->syncfs(b->spillfd) != 0) {
        b->spill_errno = errno;
        b->spill_err = fbk_error_from_errno(errno, "file: syncfs %s", b->spill);
    }
    int rc = b->spill_err, e = b->spill_errno;
    pthread_mutex_unlock(&b->spill_sync_mu);
    if (rc != FBK_OK)
        return fbk_error_from_errno(e,
                                    "file: syncfs %s (a writeback error on the spill area's "
                                    "file system, which persisted files share)",
                                    b->spill);
    return FBK_OK;
}

/* A sync of a few entries: fsync each file (its data: spill files are
 * written without fsync), then each directory holding a new or removed
 * entry (the shards set in dirty, and the root when root is set). */
static int sync_each(file_loc *l, const fbk_key *files, size_t nfiles, const uint64_t *dirty,
                     int root)
{
    int rc = FBK_OK;
    for (size_t i = 0; i < nfiles && rc == FBK_OK; i++) {
        char name[FILE_NAME_LEN];
        fbk__file_key_name(&files[i], name);
        int fd = io_()->openat(l->fd, name, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0) {
            if (errno != ENOENT) /* removed since: nothing to make durable */
                rc = fail(errno, "sync: open", l->path, name);
            continue;
        }
        if (io_()->fsync(fd) != 0)
            rc = fail(errno, "fsync", l->path, name);
        io_()->close(fd);
    }
    for (int i = 0; i < FILE_SHARDS && rc == FBK_OK; i++) {
        if (!(dirty[i / 64] >> (i % 64) & 1))
            continue;
        char shard[3];
        snprintf(shard, sizeof shard, "%02x", i);
        if (fbk__file_skip_dir_fsync)
            continue; /* the negative control of the power-loss test */
        if (fbk__file_fsync_dir_at(l->fd, shard) != 0)
            rc = fail(errno, "fsync", l->path, shard);
    }
    if (rc == FBK_OK && root && io_()->fsync(l->fd) != 0)
        rc = fail(errno, "fsync", l->path, NULL);
    return rc;
}

int fbk__file_sync(void *self, void *loc)
{
    file_backend *b = self;
    file_loc *l = loc;
    pthread_mutex_lock(&l->sync_mu);
    if (l->sticky != FBK_OK) {
        int rc = fbk_error_set(l->sticky, l->sticky_errno,
                               "%s (an earlier sync failed; reopen "
                               "the location to see what it holds)",
                               l->sticky_msg);
        pthread_mutex_unlock(&l->sync_mu);
        return rc;
    }
    /* take what is pending now; what is persisted from here on belongs to
     * the next sync */
    pthread_mutex_lock(&l->mu);
    uint64_t dirty[FILE_SHARDS / 64];
    memcpy(dirty, l->dirty_shards, sizeof dirty);
    memset(l->dirty_shards, 0, sizeof l->dirty_shards);
    int root = l->root_dirty;
    size_t nfiles = l->nfiles;
    fbk_key files[FILE_FSYNC_MAX];
    memcpy(files, l->files, sizeof files);
    l->root_dirty = 0;
    l->nfiles = 0;
    pthread_mutex_unlock(&l->mu);

    size_t nshards = 0;
    for (int i = 0; i < FILE_SHARDS / 64; i++)
        nshards += (size_t)__builtin_popcountll(dirty[i]);
    int rc = FBK_OK;
    int full = l->need_full;
    if (nshards == 0 && nfiles == 0 && !root && !full) {
        rc = FBK_OK;
    } else if (!full && nfiles + nshards + (size_t)root <= FILE_FSYNC_MAX) {
        rc = sync_each(l, files, nfiles, dirty, root);
    } else if (l->dev == b->spill_dev) {
        /* many entries: one syncfs writes the files and the directories */
        rc = spill_syncfs(b);
    } else if (io_()->syncfs(l->fd) != 0) {
        rc = fail(errno, "syncfs", l->path, NULL);
    }
    if (rc == FBK_OK)
        l->need_full = 0;
    else
        fbk__file_loc_fail(b, l, rc);
    pthread_mutex_unlock(&l->sync_mu);
    return rc;
}
