/*
 * file_backend.c -- the raw-file backend, "file:DIR": one file per value.
 *
 *   DIR/LOCK                 flock(LOCK_SH) by every open store, for its life
 *   DIR/spill-<id>.lock      owns the spill area <id>: flock(LOCK_EX) by its store
 *   DIR/spill-<id>/00..ff/<hex>  a store's own spill area (removed at close)
 *   LOC/.fbk-location        marks LOC as libfbk's (written when adopted)
 *   LOC/00..ff/<hex>         a location (absolute, or relative to DIR)
 *
 * <id> is 16 random hex digits, one per open store: several processes (and
 * several stores of one process) share DIR, its locations and their names.
 * A writer's open removes the spill areas whose lock file it can flock (their
 * store died), the lock-less ones, and the single DIR/spill of earlier
 * versions.  A read-only store (FBK_STORE_READONLY) writes nothing in DIR: its
 * spill area is a private directory under $TMPDIR (or /tmp), it makes no
 * location, shard or marker, and its scan deletes nothing.
 * <hex> is fbk_key_format_hex() of the key; the shard is its first byte.
 * A spill store writes the final name directly (O_EXCL; the spill area is
 * disposable and the core never reads a key before its store returned).
 * Persist and register are hard links (a copy to a temporary name + fsync +
 * rename across file systems).  A temporary's name carries its store's <id>:
 * a scan deletes it only when that store is gone.  A location's shards are
 * made when it is opened (lazily, on first persist, if it was read-only
 * then).  A location never reaches into DIR's own areas, and libfbk deletes
 * nothing in it but its own temporaries; a non-empty directory it did not
 * make is refused.
 * docs/file-backend.md gives the layout and the crash-consistency argument;
 * every system call goes through file_io.h.
 *
 * The backend's files, one concern each (shared declarations in
 * file_internal.h):
 *   file_backend.c   this file: the store -- its spill area's ownership
 *                    (spill-<id>.lock, owner liveness, cleanup of dead
 *                    stores' areas), open and close, the operations table
 *   file_paths.c     names: key files, shards, temporaries, spill ids
 *   file_prim.c      file primitives over the system-call table
 *   file_buf.c       the reused write/read buffers
 *   file_spill.c     store, load and remove in the spill area
 *   file_location.c  locations: open, shards, scan
 *   file_loc_check.c what a location may be: path rules, marker, adoption
 *   file_persist.c   persist, register, remove from a location; sync
 *   file_names.c     a location's name index (maps)
 *   file_refs.c      which names bind an object (remove_unbound)
 *   file_io.c        the system-call table
 */
#include "file_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- store */

/* Spill areas (docs/file-backend.md, "Sharing").  Each store owns
 * DIR/spill-<id> through DIR/spill-<id>.lock, which it creates (O_EXCL) and
 * flocks exclusively for its whole life; a writer's open removes the areas
 * whose owner is gone. */

/* Whether the store with spill id `id` is open (in any process): its lock
 * file DIR/spill-<id>.lock exists and cannot be flocked.  A missing lock
 * file means dead (or a store of another directory: docs/file-backend.md);
 * an error other than ENOENT counts as alive (nothing is deleted on a
 * doubt).  The probe takes LOCK_SH, so two probes, or a probe and the
 * cleanup at another store's open, do not mistake each other for owners
 * for longer than the probe lasts. */
int fbk__file_owner_alive(file_backend *b, const char *id)
{
    if (strcmp(id, b->id) == 0)
        return 1;
    char name[FILE_SPILL_NAME_LEN];
    snprintf(name, sizeof name, FILE_SPILL_PREFIX "%s" FILE_LOCK_SUFFIX, id);
    int fd = io_()->openat(b->rootfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0);
    if (fd < 0)
        return errno != ENOENT;
    int r;
    while ((r = io_()->flock(fd, LOCK_SH | LOCK_NB)) != 0 && errno == EINTR)
        ;
    io_()->close(fd); /* releases the probe's lock */
    return r != 0;
}

/* fbk__file_owner_alive for file_names.c */
static int owner_alive_cb(void *arg, const char *id) { return fbk__file_owner_alive(arg, id); }

/* 1 if the spill directory at/name holds a location marker (a location an
 * earlier version let someone make there): it must not be removed. */
static int spill_is_marked(int at, const char *name)
{
    char m[NAME_MAX + sizeof FILE_MARKER + 2];
    snprintf(m, sizeof m, "%s/" FILE_MARKER, name);
    struct stat st;
    return io_()->fstatat(at, m, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static int refuse_marked(file_backend *b, const char *name)
{
    return fbk_error_set(FBK_EINVAL, 0,
                         "file: %s/%s is a libfbk location (it holds " FILE_MARKER
                         "): refusing to remove it as a spill area of a store that is gone",
                         b->dir, name);
}

/* Removes the spill areas of DIR whose store is gone (a writer's open):
 * for each spill-<id>.lock that can be flocked (LOCK_EX|LOCK_NB) and is
 * still linked, spill-<id> and then the lock file (unlinked while the flock
 * is held); each spill-<id> without a lock file; and the DIR/spill of
 * earlier versions.  An area whose lock is held is never touched.  Best
 * effort: what cannot be removed stays for a later open.  Fails only for a
 * spill area that holds a location marker (FBK_EINVAL). */
static int spill_clean(file_backend *b)
{
    int fd = io_()->openat(b->rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0)
        return fail(errno, "open", b->dir, NULL);
    DIR *d = fbk__file_dir_of(fd);
    if (!d)
        return fail(errno, "list", b->dir, NULL);
    int rc = FBK_OK;
    struct dirent *de;
    char id[FILE_ID_LEN + 1], name[FILE_SPILL_NAME_LEN];
    while (rc == FBK_OK && (de = io_()->readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (strcmp(n, "spill") == 0) {
            if (spill_is_marked(b->rootfd, n))
                rc = refuse_marked(b, n);
            else
                fbk__file_remove_tree_at(b->rootfd, n, 0);
        } else if (fbk__file_is_spill_name(n, "", id)) {
            struct stat st;
            snprintf(name, sizeof name, FILE_SPILL_PREFIX "%s" FILE_LOCK_SUFFIX, id);
            if (strcmp(id, b->id) == 0 ||
                io_()->fstatat(b->rootfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT)
                continue; /* owned: judged by its lock file */
            if (spill_is_marked(b->rootfd, n))
                rc = refuse_marked(b, n);
            else
                fbk__file_remove_tree_at(b->rootfd, n, 0);
        } else if (fbk__file_is_spill_name(n, FILE_LOCK_SUFFIX, id) && strcmp(id, b->id) != 0) {
            int lfd = io_()->openat(b->rootfd, n, O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0);
            if (lfd < 0)
                continue;
            struct stat mine, now;
            int r;
            while ((r = io_()->flock(lfd, LOCK_EX | LOCK_NB)) != 0 && errno == EINTR)
                ;
            /* dead, and not unlinked meanwhile by another cleaner */
            if (r == 0 && io_()->fstat(lfd, &mine) == 0 &&
                io_()->fstatat(b->rootfd, n, &now, AT_SYMLINK_NOFOLLOW) == 0 && mine.st_nlink > 0 &&
                mine.st_dev == now.st_dev && mine.st_ino == now.st_ino) {
                snprintf(name, sizeof name, FILE_SPILL_PREFIX "%s", id);
                if (spill_is_marked(b->rootfd, name))
                    rc = refuse_marked(b, name);
                else if (fbk__file_remove_tree_at(b->rootfd, name, 0) == 0)
                    io_()->unlinkat(b->rootfd, n, 0);
            }
            io_()->close(lfd);
        }
    }
    io_()->closedir(d);
    return rc;
}

/* Makes this store's spill area DIR/spill-<id>, owned through
 * DIR/spill-<id>.lock: created O_EXCL, flocked, checked to be still linked
 * (a cleaner that flocked it between the create and our flock took it for
 * a dead store's and unlinked it: a new id is drawn), then the directory. */
static int spill_claim(file_backend *b)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        fbk__file_new_id(b->id);
        snprintf(b->owner_name, sizeof b->owner_name, FILE_SPILL_PREFIX "%s" FILE_LOCK_SUFFIX,
                 b->id);
        snprintf(b->spill_name, sizeof b->spill_name, FILE_SPILL_PREFIX "%s", b->id);
        int fd = io_()->openat(b->rootfd, b->owner_name,
                               O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0 && errno == EEXIST)
            continue;
        if (fd < 0)
            return fail(errno, "create", b->dir, b->owner_name);
        int r;
        while ((r = io_()->flock(fd, LOCK_EX)) != 0 && errno == EINTR)
            ;
        if (r != 0) {
            int e = errno;
            io_()->unlinkat(b->rootfd, b->owner_name, 0);
            io_()->close(fd);
            return fail(e, "lock", b->dir, b->owner_name);
        }
        struct stat mine, now;
        if (io_()->fstat(fd, &mine) != 0 ||
            io_()->fstatat(b->rootfd, b->owner_name, &now, AT_SYMLINK_NOFOLLOW) != 0 ||
            mine.st_nlink == 0 || mine.st_dev != now.st_dev || mine.st_ino != now.st_ino) {
            io_()->close(fd); /* unlinked by a cleaner: not ours any more */
            continue;
        }
        if (io_()->mkdirat(b->rootfd, b->spill_name, 0755) != 0) {
            int e = errno;
            io_()->unlinkat(b->rootfd, b->owner_name, 0);
            io_()->close(fd);
            if (e == EEXIST)
                continue; /* a stale area of that id: never reused */
            return fail(e, "create", b->dir, b->spill_name);
        }
        b->ownerfd = fd;
        b->spill_at = b->rootfd;
        b->spill_made = 1;
        return FBK_OK;
    }
    return fbk_error_set(FBK_EIO, 0,
                         "file: create %s/" FILE_SPILL_PREFIX "<id>: no free spill id after 16 "
                         "attempts",
                         b->dir);
}

/* A read-only store's spill area: a private directory fbk-ro-<id> under
 * $TMPDIR (or /tmp), nothing in DIR. */
static int spill_private(file_backend *b)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    b->spill_at = io_()->openat(AT_FDCWD, tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (b->spill_at < 0)
        return fbk_error_from_errno(errno,
                                    "file: open %s (the temporary directory a read-only store "
                                    "keeps its spill area in)",
                                    tmp);
    for (int attempt = 0; attempt < 16; attempt++) {
        fbk__file_new_id(b->id);
        snprintf(b->spill_name, sizeof b->spill_name, "fbk-ro-%s", b->id);
        if (io_()->mkdirat(b->spill_at, b->spill_name, 0700) == 0) {
            b->spill_made = 1;
            size_t n = strlen(tmp) + sizeof b->spill_name + 2;
            char *p = realloc(b->spill, n);
            if (!p)
                return fbk_error_set(FBK_ENOMEM, ENOMEM, "file: open %s: out of memory", b->dir);
            b->spill = p;
            snprintf(b->spill, n, "%s/%s", tmp, b->spill_name);
            return FBK_OK;
        }
        if (errno != EEXIST)
            return fbk_error_from_errno(errno,
                                        "file: create %s/%s (a read-only store's spill "
                                        "area)",
                                        tmp, b->spill_name);
    }
    return fbk_error_set(FBK_EIO, 0, "file: create %s/fbk-ro-<id>: no free name after 16 attempts",
                         tmp);
}

/* ------------------------------------------------------- names (maps) */

static int file_name_get(void *self, void *loc, const void *name, size_t len, fbk_key *key,
                         uint64_t *size)
{
    (void)self;
    file_loc *l = loc;
    return fbk__file_name_get(l->fd, l->path, name, len, key, size);
}

static int file_name_scan(void *self, void *loc, fbk_binding_fn each, void *arg)
{
    /* a writer's listing also removes dead stores' temporaries, and gives
     * the bindings of a location from before the refs theirs */
    return fbk__file_refs_scan(self, loc, each, arg, owner_alive_cb);
}

static int file_name_apply(void *self, void *loc, const fbk_name_op *ops, size_t n)
{
    if (((file_backend *)self)->readonly)
        return fbk__file_refuse_readonly(self, "bind names");
    file_loc *l = loc;
    /* the refs, then the bound objects and the refs made durable (no
     * binding may be durable before them), then the bindings: all under the
     * shared lock that keeps remove_unbound out (file_refs.c) */
    int lock;
    int rc = fbk__file_refs_lock(l, LOCK_SH, &lock);
    if (rc == FBK_OK)
        rc = fbk__file_refs_bind(l, ops, n);
    if (rc == FBK_OK)
        rc = fbk__file_sync(self, loc);
    if (rc == FBK_OK)
        rc = fbk__file_name_apply(l->fd, l->path, ((file_backend *)self)->id, ops, n);
    fbk__file_refs_unlock(lock);
    return rc;
}

/* A location's file read in place (lazy register, backend table v4): a
 * register then makes no link into the spill area. */
static int file_load_persisted(void *self, void *loc, const fbk_key *key, fbk_read_fn read,
                               void *arg)
{
    file_loc *l = loc;
    return fbk__file_load_buffered(self, l->fd, l->path, key, read, arg);
}

/* -------------------------------------------------------- open, close */

static void file_close(void *self)
{
    file_backend *b = self;
    if (!b)
        return;
    if (b->spillfd >= 0)
        io_()->close(b->spillfd);
    /* best effort: a spill area left behind is removed by a later open */
    if (b->spill_made)
        fbk__file_remove_tree_at(b->spill_at, b->spill_name, 0);
    if (b->ownerfd >= 0) {
        io_()->unlinkat(b->rootfd, b->owner_name, 0); /* still flocked: no cleaner races */
        io_()->close(b->ownerfd);
    }
    if (b->spill_at >= 0 && b->spill_at != b->rootfd)
        io_()->close(b->spill_at);
    if (b->lockfd >= 0)
        io_()->close(b->lockfd); /* releases the flock */
    if (b->rootfd >= 0)
        io_()->close(b->rootfd);
    for (size_t i = 0; i < b->nbufs; i++)
        free(b->bufs[i].p);
    pthread_mutex_destroy(&b->buf_mu);
    pthread_mutex_destroy(&b->spill_sync_mu);
    pthread_mutex_destroy(&b->failed_mu);
    free(b->canon);
    free(b->spill);
    free(b->dir);
    free(b);
}

static const fbk_backend_ops file_ops = {
    .version = FBK_BACKEND_OPS_VERSION,
    .name = "file",
    .store = fbk__file_store,
    .load = fbk__file_load,
    .remove = fbk__file_remove,
    .open_location = fbk__file_open_location,
    .close_location = fbk__file_close_location,
    .scan = fbk__file_scan,
    .persist = fbk__file_persist,
    .register_key = fbk__file_register_key,
    .remove_persisted = fbk__file_remove_persisted,
    .sync = fbk__file_sync,
    .close = file_close,
    .persist_many = NULL,
    .register_many = NULL,
    .store_many = NULL,
    .store_iov = fbk__file_store_iov,
    .load_into = fbk__file_load_into,
    /* writes of different files overlap: two workers put 16 KiB objects at
     * 0.94-1.05x of plain files against 1.36-1.47x with one
     * (bench/bench_file.c, docs/file-backend.md) */
    .workers = 2,
    .name_get = file_name_get,
    .name_scan = file_name_scan,
    .name_apply = file_name_apply,
    .contains = fbk__file_contains,
    .load_persisted = file_load_persisted,
    .scan_foreign = fbk__file_scan_foreign,
    .persist_names = NULL,
    .remove_unbound = fbk__file_remove_unbound,
    .write_names = NULL,
    .remove_unbound_many = fbk__file_remove_unbound_many,
};

int fbk_backend_file_create(const char *dir, const fbk_store_options *opts,
                            const fbk_backend_ops **ops, void **self)
{
    if (!dir || !*dir || !ops || !self)
        return fbk_error_set(FBK_EINVAL, 0, "file: a directory is required (\"file:DIR\")");
    file_backend *b = calloc(1, sizeof *b);
    size_t dlen = strlen(dir), slen = dlen + FILE_SPILL_NAME_LEN + 2;
    if (b) {
        b->dir = malloc(dlen + 1);
        b->spill = malloc(slen);
    }
    if (!b || !b->dir || !b->spill) {
        if (b) {
            free(b->dir);
            free(b->spill);
        }
        free(b);
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "file: open %s: out of memory", dir);
    }
    memcpy(b->dir, dir, dlen + 1);
    b->readonly = opts && (opts->flags & FBK_STORE_READONLY);
    b->rootfd = b->lockfd = b->ownerfd = b->spill_at = b->spillfd = -1;
    atomic_init(&b->tmp_seq, 0);
    pthread_mutex_init(&b->buf_mu, NULL);
    pthread_mutex_init(&b->spill_sync_mu, NULL);
    pthread_mutex_init(&b->failed_mu, NULL);

    int rc = b->readonly ? FBK_OK : mkdir_p(AT_FDCWD, dir, "create");
    if (rc == FBK_OK) {
        b->rootfd = io_()->openat(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (b->rootfd < 0)
            rc = errno == ENOTDIR
                     ? fbk_error_set(FBK_EINVAL, ENOTDIR, "file: %s is not a directory", dir)
                 : errno == ENOENT && b->readonly
                     ? fbk_error_set(FBK_ENOTFOUND, ENOENT,
                                     "file: %s does not exist (a read-only store opens an "
                                     "existing directory)",
                                     dir)
                     : fail(errno, "open", dir, NULL);
    }
    if (rc == FBK_OK && (b->canon = realpath(dir, NULL)) == NULL)
        rc = fail(errno, "resolve", dir, NULL);
    /* DIR/LOCK, shared by every open store: `fbk compact` (LOCK_EX) runs only
     * when no store is open.  A read-only store makes none: a directory
     * without one was never opened for writing (lockfd stays -1). */
    if (rc == FBK_OK)
        rc = dir_lock(b->rootfd, dir, b->readonly, &b->lockfd);
    if (rc == FBK_OK && !b->readonly)
        rc = spill_clean(b);
    if (rc == FBK_OK)
        rc = b->readonly ? spill_private(b) : spill_claim(b);
    if (rc == FBK_OK && !b->readonly)
        snprintf(b->spill, slen, "%s/%s", dir, b->spill_name);
    if (rc == FBK_OK) {
        b->spillfd = io_()->openat(b->spill_at, b->spill_name,
                                   O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
        if (b->spillfd < 0)
            rc = fail(errno, "open", b->spill, NULL);
    }
    struct stat st;
    if (rc == FBK_OK && io_()->fstat(b->spillfd, &st) != 0)
        rc = fail(errno, "stat", b->spill, NULL);
    /* the shards are made by the first store (or register) that needs one:
     * 256 mkdirs at open and rmdirs at close cost 30-70 ms on ext4
     * (docs/file-backend.md, "Measured choices") */
    if (rc == FBK_OK)
        b->spill_dev = st.st_dev;
    if (rc != FBK_OK) {
        file_close(b);
        return rc;
    }
    *ops = &file_ops;
    *self = b;
    return FBK_OK;
}

/* The registry's entry (src/registry.c): file: takes no URI parameters of
 * its own. */
static int file_scheme_create(void *ctx, const char *arg, const fbk_backend_params *params,
                              const fbk_store_options *opts, const fbk_backend_ops **ops,
                              void **self)
{
    (void)ctx;
    (void)params;
    return fbk_backend_file_create(arg, opts, ops, self);
}

const fbk_backend_scheme fbk__file_scheme = {
    .version = FBK_BACKEND_SCHEME_VERSION,
    .scheme = "file",
    .params = NULL,
    .flags = FBK_BACKEND_SCHEME_NEEDS_ARG,
    .create = file_scheme_create,
};
