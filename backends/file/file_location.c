/* file_location.c -- file: locations: open and close (which directories
 * may be one: file_loc_check.c), the shard directories, scan, and the
 * bookkeeping of what a sync must make durable.  docs/file-backend.md. */
#include "file_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* -------------------------------------------------------------- locations */

void fbk__file_loc_touch(file_loc *l, const char *name, int file, const fbk_key *key,
                         int made_shard)
{
    int shard = fbk__file_shard_index(name);
    pthread_mutex_lock(&l->mu);
    l->dirty_shards[shard / 64] |= (uint64_t)1 << (shard % 64);
    if (made_shard)
        l->root_dirty = 1;
    if (file) {
        if (l->nfiles < FILE_FSYNC_MAX)
            l->files[l->nfiles] = *key;
        l->nfiles++;
    }
    pthread_mutex_unlock(&l->mu);
}

/* A listing of l's directory (its own descriptor), into *d. */
int fbk__file_loc_list(file_loc *l, DIR **d)
{
    int fd = io_()->openat(l->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0)
        return fail(errno, "open location", l->path, NULL);
    if (!(*d = fbk__file_dir_of(fd)))
        return fail(errno, "list location", l->path, NULL);
    return FBK_OK;
}

/* Makes l failed for good with rc and the current message (a flush failed:
 * its pages may be gone, and a retry would "succeed"), and remembers its
 * directory as failed for the rest of the store.  Called with l->sync_mu
 * held, or before l is shared. */
void fbk__file_loc_fail(file_backend *b, file_loc *l, int rc)
{
    l->sticky = rc;
    l->sticky_errno = fbk_last_os_error();
    snprintf(l->sticky_msg, sizeof l->sticky_msg, "%s", fbk_errmsg());
    pthread_mutex_lock(&b->failed_mu);
    if (b->nfailed < FILE_FAILED_MAX) {
        b->failed[b->nfailed].dev = l->dev;
        b->failed[b->nfailed].ino = l->ino;
        b->failed[b->nfailed].err = rc;
        b->failed[b->nfailed].os_errno = l->sticky_errno;
        b->nfailed++;
    } else {
        b->failed_overflow = 1;
    }
    pthread_mutex_unlock(&b->failed_mu);
}

/* Makes the missing shard directories of a freshly opened location, then
 * fsyncs its root, so that every shard name present is durable before any
 * key is linked into it: a sync then never needs the root (unless persist
 * had to make a shard after all).  The fsync is made even when no shard was
 * missing: a process killed between its mkdirs and its fsync leaves shards
 * whose names are not durable yet; it also makes the name of a marker
 * written by loc_claim (marked) durable.  A location where mkdir fails (read-only:
 * EROFS, EACCES, EPERM; full: ENOSPC; or any other error) is left as it is,
 * silently: its missing shards are made lazily by the first persist, which
 * marks the root for the next sync (and reports the error if it recurs).
 * Returns 0 or an FBK_E* code for the open to fail with (only if the
 * location cannot be listed); a failed fsync does not fail the open (the
 * location can still be read) but makes the location failed. */
static int loc_make_shards(file_backend *b, file_loc *l, int marked)
{
    uint64_t present[FILE_SHARDS / 64] = {0};
    DIR *d;
    int err = fbk__file_loc_list(l, &d);
    if (err != FBK_OK)
        return err;
    struct dirent *de;
    errno = 0;
    while ((de = io_()->readdir(d)) != NULL) {
        /* any entry by a shard's name counts: a file there is scan's to
         * remove, and persist then makes the shard */
        int i = strlen(de->d_name) == 2 ? fbk__file_shard_index(de->d_name) : -1;
        if (i >= 0)
            present[i / 64] |= (uint64_t)1 << (i % 64);
        errno = 0;
    }
    int e = errno;
    io_()->closedir(d);
    if (e)
        return fail(e, "list location", l->path, NULL);
    int made = 0;
    for (int i = 0; i < FILE_SHARDS; i++) {
        if (present[i / 64] >> (i % 64) & 1)
            continue;
        char shard[3];
        snprintf(shard, sizeof shard, "%02x", i);
        if (io_()->mkdirat(l->fd, shard, 0755) == 0) {
            made++;
            continue;
        }
        if (errno == EEXIST)
            continue;
        /* Read-only (EROFS, EACCES, EPERM), full (ENOSPC) or failing: the
         * location can still be read, so the open goes on, and the missing
         * shards are made by the first persist that needs them (which then
         * reports the error, if it persists). */
        if (made == 0 && !marked)
            return FBK_OK;
        break; /* what was made (and the marker) must still be durable */
    }
    if (io_()->fsync(l->fd) == 0)
        return FBK_OK;
    e = errno;
    if (made == 0 && !marked && (e == EROFS || e == EINVAL))
        return FBK_OK; /* nothing made, and a file system that cannot sync */
    fbk__file_loc_fail(
        b, l, fbk_error_from_errno(e, "file: fsync %s (the shard directories, at open)", l->path));
    return FBK_OK;
}

/* Opens the location directory into l->fd (relative to DIR unless
 * absolute), making it (mkdir -p, durable) when it is missing -- unless the
 * store is read-only (FBK_ENOTFOUND).  l->fd stays < 0 on failure. */
static int loc_open_dir(file_backend *b, file_loc *l, const char *location)
{
    int rc = FBK_OK;
    l->fd = io_()->openat(b->rootfd, location, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (l->fd < 0 && errno == ENOENT && b->readonly) {
        rc = fbk_error_set(FBK_ENOTFOUND, ENOENT,
                           "file: location %s does not exist (the store is read-only: it "
                           "opens existing locations only)",
                           l->path);
    } else if (l->fd < 0 && errno == ENOENT) {
        rc = mkdir_p(b->rootfd, location, "create location");
        if (rc == FBK_OK)
            l->fd = io_()->openat(b->rootfd, location, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    }
    if (rc == FBK_OK && l->fd < 0) {
        if (errno == ENOTDIR)
            rc = fbk_error_set(FBK_EINVAL, ENOTDIR,
                               "file: location %s is not a directory (or lies under a file)",
                               l->path);
        else
            rc = fail(errno, "open location", l->path, NULL);
    }
    return rc;
}

/* A location handle of a directory whose sync failed earlier in this store
 * starts failed (loc_fail: its keys' pages may be gone), as does every one
 * once the store's list of failed directories overflowed.  l->dev and
 * l->ino are set. */
static void loc_inherit_failure(file_backend *b, file_loc *l)
{
    pthread_mutex_lock(&b->failed_mu);
    for (size_t i = 0; i < b->nfailed; i++) {
        if (b->failed[i].dev == l->dev && b->failed[i].ino == l->ino) {
            l->sticky = b->failed[i].err;
            l->sticky_errno = b->failed[i].os_errno;
        }
    }
    if (b->failed_overflow && !l->sticky) {
        l->sticky = FBK_EIO;
        l->sticky_errno = EIO;
    }
    pthread_mutex_unlock(&b->failed_mu);
    if (l->sticky)
        snprintf(l->sticky_msg, sizeof l->sticky_msg,
                 "file: a sync of location %s failed earlier in this store (%s)", l->path,
                 fbk_err_name(l->sticky));
}

int fbk__file_open_location(void *self, const char *location, void **out)
{
    file_backend *b = self;
    if (!location || !*location)
        return fbk_error_set(FBK_EINVAL, 0, "file: empty location name");
    file_loc *l = calloc(1, sizeof *l);
    size_t plen = strlen(b->dir) + strlen(location) + 2;
    if (l)
        l->path = malloc(plen);
    if (!l || !l->path) {
        free(l);
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "file: open location %s: out of memory", location);
    }
    if (location[0] == '/')
        snprintf(l->path, plen, "%s", location);
    else
        snprintf(l->path, plen, "%s/%s", b->dir, location);

    int rc = fbk__file_loc_check_path(b, location, l->path);
    if (rc != FBK_OK) {
        free(l->path);
        free(l);
        return rc;
    }
    rc = loc_open_dir(b, l, location);
    struct stat st;
    if (rc == FBK_OK && io_()->fstat(l->fd, &st) != 0)
        rc = fail(errno, "stat location", l->path, NULL);
    int marked_now = 0;
    if (rc == FBK_OK)
        rc = fbk__file_loc_claim(l, b->readonly, &marked_now);
    if (rc != FBK_OK) {
        if (l->fd >= 0)
            io_()->close(l->fd);
        free(l->path);
        free(l);
        return rc;
    }
    l->dev = st.st_dev;
    l->ino = st.st_ino;
    l->need_full = !b->readonly; /* a read-only store makes nothing durable */
    loc_inherit_failure(b, l);
    rc = b->readonly ? FBK_OK : loc_make_shards(b, l, marked_now);
    if (rc != FBK_OK) {
        io_()->close(l->fd);
        free(l->path);
        free(l);
        return rc;
    }
    atomic_init(&l->cross, 0);
    pthread_mutex_init(&l->mu, NULL);
    pthread_mutex_init(&l->sync_mu, NULL);
    *out = l;
    return FBK_OK;
}

void fbk__file_close_location(void *self, void *loc)
{
    (void)self;
    file_loc *l = loc;
    if (!l)
        return;
    io_()->close(l->fd);
    pthread_mutex_destroy(&l->mu);
    pthread_mutex_destroy(&l->sync_mu);
    free(l->path);
    free(l);
}

/* What a scan counts: key files, temporaries removed, foreign entries. */
typedef struct scan_count {
    long keys, junk;
    size_t foreign;
} scan_count;

/* Scans shard i of l for fbk__file_scan: each key file is passed to each();
 * a libfbk temporary whose store is gone is removed (a writer only);
 * anything else is left alone and counted foreign.  0, each()'s non-zero
 * return, or an FBK_E* code. */
static int scan_shard(file_backend *b, file_loc *l, int i, fbk_key_fn each, void *arg,
                      scan_count *c)
{
    char owner[FILE_ID_LEN + 1];
    char shard[3];
    snprintf(shard, sizeof shard, "%02x", i);
    int fd = io_()->openat(l->fd, shard, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0; /* made on first persist (read-only at open) */
        if (errno == ENOTDIR || errno == ELOOP) {
            /* our name, not our kind of entry: not libfbk's, left alone
             * (a persist into this shard then fails: "Not a directory") */
            c->foreign++;
            return 0;
        }
        return fail(errno, "open", l->path, shard);
    }
    DIR *d = fbk__file_dir_of(fd);
    if (!d)
        return fail(errno, "list", l->path, shard);
    struct dirent *de;
    errno = 0;
    while ((de = io_()->readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0)
            continue;
        fbk_key key;
        int is_key = fbk__file_is_key_name(n, shard, &key);
        if (is_key && de->d_type != DT_REG) {
            struct stat st;
            is_key =
                (de->d_type == DT_UNKNOWN &&
                 io_()->fstatat(dirfd(d), n, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode));
        }
        if (is_key) {
            c->keys++;
            int rc = each(&key, arg);
            if (rc != 0) {
                io_()->closedir(d);
                return rc;
            }
        } else if (fbk__file_is_ref_name(n, shard, NULL, NULL)) {
            /* a ref (file_refs.c): libfbk's, not a key */
        } else if (fbk__file_is_tmp_name(n, shard, owner) && fbk__file_is_regular(dirfd(d), de)) {
            /* libfbk's temporary: junk left by a crash when its store
             * is gone, else another store's persist in flight (left
             * alone).  A read-only store deletes nothing.  A failed
             * removal (read-only location) is not an error: the entry
             * is still not a key. */
            if (!b->readonly && !(owner[0] && fbk__file_owner_alive(b, owner)) &&
                io_()->unlinkat(dirfd(d), n, 0) == 0)
                c->junk++;
        } else {
            /* not made by libfbk (a user's file, a key in the wrong
             * shard, a directory or symlink under a key name...): left
             * alone, and counted (fbk_location_foreign_entries) */
            c->foreign++;
        }
        errno = 0;
    }
    int e = errno;
    io_()->closedir(d);
    if (e)
        return fail(e, "list", l->path, shard);
    return 0;
}

int fbk__file_scan(void *self, void *loc, fbk_key_fn each, void *arg)
{
    file_backend *b = self;
    file_loc *l = loc;
    scan_count c = {0, 0, 0};
    for (int i = 0; i < FILE_SHARDS; i++) {
        int rc = scan_shard(b, l, i, each, arg, &c);
        if (rc != 0)
            return rc;
    }
    pthread_mutex_lock(&l->sync_mu);
    if (c.keys == 0)
        l->need_full = 0; /* nothing to make durable but what comes */
    l->foreign = c.foreign;
    pthread_mutex_unlock(&l->sync_mu);
    return c.junk > INT_MAX ? INT_MAX : (int)c.junk;
}

size_t fbk__file_scan_foreign(void *self, void *loc)
{
    (void)self;
    file_loc *l = loc;
    pthread_mutex_lock(&l->sync_mu);
    size_t n = l->foreign;
    pthread_mutex_unlock(&l->sync_mu);
    return n;
}

int fbk__file_contains(void *self, void *loc, const fbk_key *key)
{
    (void)self;
    file_loc *l = loc;
    char name[FILE_NAME_LEN];
    fbk__file_key_name(key, name);
    struct stat st;
    if (io_()->fstatat(l->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return 1;
    return errno == ENOENT ? 0 : fail(errno, "stat", l->path, name);
}
