/* file_location.c -- file: locations: which directories may be one (path
 * rules, the marker, adopting an earlier version's), open and close, the
 * shard directories, scan, and the bookkeeping of what a sync must make
 * durable.  docs/file-backend.md, "Locations". */
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
    int fd = io_()->openat(l->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0)
        return fail(errno, "open location", l->path, NULL);
    DIR *d = fbk__file_dir_of(fd);
    if (!d)
        return fail(errno, "list location", l->path, NULL);
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

/* ------------------------------------------------- what a location may be */

/* 1 if the entry de of the directory at is a regular file (not followed). */
static int is_regular(int at, const struct dirent *de)
{
    if (de->d_type != DT_UNKNOWN)
        return de->d_type == DT_REG;
    struct stat st;
    return io_()->fstatat(at, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

/* Names the store keeps in DIR.  A location must not be one of them or lie
 * under one, nor be DIR itself or contain it: spill areas are removed at
 * close (and by the next open when their store died), and a location's
 * shards and scan must not meet LOCK or a spill area.  "spill" is the spill
 * area of versions before sharing (removed at open).  A name added to DIR
 * must be added here. */
static const char *const store_names[] = {"spill", "LOCK"};

/* 1 if the first component of a path inside DIR, comp (up to '/' or the
 * end), is the store's: one of store_names[], or anything "spill-*" (the
 * spill areas and their lock files); *len receives its length. */
static int is_store_name(const char *comp, size_t *len)
{
    const char *e = strchr(comp, '/');
    size_t n = e ? (size_t)(e - comp) : strlen(comp);
    *len = n;
    for (size_t i = 0; i < sizeof store_names / sizeof store_names[0]; i++)
        if (strlen(store_names[i]) == n && strncmp(comp, store_names[i], n) == 0)
            return 1;
    return n >= sizeof FILE_SPILL_PREFIX - 1 &&
           strncmp(comp, FILE_SPILL_PREFIX, sizeof FILE_SPILL_PREFIX - 1) == 0;
}

/* Appends the components of rel to the absolute path buf[0..*n) (capacity
 * cap), resolving "." and ".." lexically: rel names directories that do not
 * exist yet, which mkdir_p will make, so "new/.." is where "new" is made.
 * -1 when the result does not fit. */
static int path_append(char *buf, size_t *n, size_t cap, const char *rel)
{
    for (const char *p = rel; *p;) {
        while (*p == '/')
            p++;
        const char *e = p;
        while (*e && *e != '/')
            e++;
        size_t len = (size_t)(e - p);
        if (len == 2 && p[0] == '.' && p[1] == '.') {
            while (*n > 1 && buf[*n - 1] != '/')
                (*n)--;
            if (*n > 1)
                (*n)--;
        } else if (len > 0 && !(len == 1 && p[0] == '.')) {
            if (*n + 1 + len + 1 > cap)
                return -1;
            if (buf[*n - 1] != '/')
                buf[(*n)++] = '/';
            memcpy(buf + *n, p, len);
            *n += len;
        }
        buf[*n] = '\0';
        p = e;
    }
    return 0;
}

/* The canonical form of the absolute path full: realpath() of its longest
 * existing prefix (symlinks, "." and ".." resolved by the file system), then
 * the rest resolved lexically.  malloc'ed; NULL with errno. */
static char *canon_path(const char *full)
{
    size_t len = strlen(full);
    char *pre = malloc(len + 1);
    if (!pre)
        return NULL;
    memcpy(pre, full, len + 1);
    size_t cut = len;
    char *real;
    while ((real = realpath(pre, NULL)) == NULL) {
        if ((errno != ENOENT && errno != ENOTDIR) || cut <= 1) {
            int e = errno;
            free(pre);
            errno = e;
            return NULL;
        }
        char *slash = strrchr(pre, '/'); /* full is absolute: never NULL */
        cut = slash == pre ? 1 : (size_t)(slash - pre);
        pre[cut] = '\0';
    }
    free(pre);
    size_t n = strlen(real), cap = n + (len - cut) + 2;
    char *out = realloc(real, cap);
    if (!out) {
        free(real);
        errno = ENOMEM;
        return NULL;
    }
    if (path_append(out, &n, cap, full + cut) != 0) {
        free(out);
        errno = ENAMETOOLONG;
        return NULL;
    }
    return out;
}

/* 1 if path p is root or lies under it (both canonical). */
static int path_under(const char *p, const char *root)
{
    size_t n = strlen(root);
    if (n == 1) /* "/" */
        return 1;
    return strncmp(p, root, n) == 0 && (p[n] == '\0' || p[n] == '/');
}

/* Refuses (FBK_EINVAL) a location that climbs out of DIR with ".." (when
 * relative) or reaches into the store's own areas: DIR itself, a directory
 * holding DIR, or anything at or under DIR/spill, DIR/spill-*, DIR/LOCK.  Paths are
 * compared in canonical form, so "./spill", "x/../spill" and symlinks to
 * the spill area are caught too.  shown: the location's path for messages. */
static int loc_check_path(file_backend *b, const char *location, const char *shown)
{
    if (location[0] != '/') {
        int depth = 0;
        for (const char *p = location; *p;) {
            while (*p == '/')
                p++;
            const char *e = p;
            while (*e && *e != '/')
                e++;
            size_t len = (size_t)(e - p);
            if (len == 2 && p[0] == '.' && p[1] == '.')
                depth--;
            else if (len > 0 && !(len == 1 && p[0] == '.'))
                depth++;
            if (depth < 0)
                return fbk_error_set(FBK_EINVAL, 0,
                                     "file: location %s climbs out of the store directory %s "
                                     "with \"..\": a relative location must stay inside the store "
                                     "directory (give an absolute path for a directory elsewhere)",
                                     location, b->dir);
            p = e;
        }
    }
    size_t flen = strlen(b->canon) + strlen(location) + 2;
    char *full = malloc(flen);
    if (!full)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "file: open location %s: out of memory", shown);
    if (location[0] == '/')
        snprintf(full, flen, "%s", location);
    else
        snprintf(full, flen, "%s/%s", b->canon, location);
    char *c = canon_path(full);
    free(full);
    if (!c)
        return fail(errno, "resolve location", shown, NULL);
    int rc = FBK_OK;
    const char *rule = "a location must not reach into the store's own areas";
    if (strcmp(c, b->canon) == 0) {
        rc = fbk_error_set(FBK_EINVAL, 0, "file: location %s is the store directory %s itself: %s",
                           shown, b->dir, rule);
    } else if (path_under(b->canon, c)) {
        rc = fbk_error_set(FBK_EINVAL, 0, "file: location %s (%s) holds the store directory %s: %s",
                           shown, c, b->dir, rule);
    }
    size_t clen = strlen(b->canon), nlen;
    if (rc == FBK_OK && strcmp(c, b->canon) != 0 && path_under(c, b->canon)) {
        const char *comp = c + clen + (clen > 1); /* past "DIR/" ("/" when DIR is /) */
        if (is_store_name(comp, &nlen))
            rc = fbk_error_set(FBK_EINVAL, 0,
                               "file: location %s (%s) is, or lies under, the store's %s/%.*s: %s",
                               shown, c, b->dir, (int)nlen, comp, rule);
    }
    free(c);
    return rc;
}

enum { LOC_MARKED, LOC_EMPTY, LOC_LEGACY, LOC_FOREIGN };

/* 1 if the location directory is, by its inode, the entry "spill" or
 * "spill-<16 hex>" of a parent that holds a LOCK file: a file: store's spill
 * area (removed by its store, or by the next open of that directory). */
static int loc_is_spill_area(file_loc *l)
{
    struct stat self, st;
    if (io_()->fstat(l->fd, &self) != 0 ||
        io_()->fstatat(l->fd, "../LOCK", &st, AT_SYMLINK_NOFOLLOW) != 0)
        return 0;
    /* which name of the parent is this directory? */
    int pfd = io_()->openat(l->fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    DIR *pd = pfd >= 0 ? fbk__file_dir_of(pfd) : NULL;
    int spill = 0;
    struct dirent *pe;
    while (pd && !spill && (pe = io_()->readdir(pd)) != NULL) {
        struct stat ps;
        if ((strcmp(pe->d_name, "spill") == 0 || fbk__file_is_spill_name(pe->d_name, "", NULL)) &&
            io_()->fstatat(dirfd(pd), pe->d_name, &ps, AT_SYMLINK_NOFOLLOW) == 0 &&
            ps.st_dev == self.st_dev && ps.st_ino == self.st_ino)
            spill = 1;
    }
    if (pd)
        io_()->closedir(pd);
    return spill;
}

/* Whether the shard-named entry at/n of the location is libfbk's: a real
 * directory holding only key files of its shard and libfbk temporaries.
 * 0 if so; 1 if not (why says what is not); or an FBK_E* code (< 0). */
static int loc_classify_shard(file_loc *l, int at, const char *n, char *why, size_t cap)
{
    int sfd = io_()->openat(at, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
    if (sfd < 0) {
        if (errno != ENOTDIR && errno != ELOOP)
            return fail(errno, "open", l->path, n);
        snprintf(why, cap, "%s is not a shard directory", n);
        return 1;
    }
    DIR *sd = fbk__file_dir_of(sfd);
    if (!sd)
        return fail(errno, "list", l->path, n);
    int foreign = 0, rc = FBK_OK;
    struct dirent *se;
    errno = 0;
    while ((se = io_()->readdir(sd)) != NULL) {
        const char *sn = se->d_name;
        fbk_key key;
        if (strcmp(sn, ".") == 0 || strcmp(sn, "..") == 0)
            continue;
        if (!(fbk__file_is_key_name(sn, n, &key) || fbk__file_is_tmp_name(sn, n, NULL)) ||
            !is_regular(dirfd(sd), se)) {
            snprintf(why, cap, "%s/%s is neither a key file nor a libfbk temporary", n, sn);
            foreign = 1;
            break;
        }
        errno = 0;
    }
    if (!foreign && errno)
        rc = fail(errno, "list", l->path, n);
    io_()->closedir(sd);
    return rc != FBK_OK ? rc : foreign;
}

/* What the location directory is: marked (FILE_MARKER is a regular file in
 * it); empty; written by a version before the marker (LOC_LEGACY: at least
 * one shard directory, every shard-named entry a real directory holding
 * only key files of its shard and libfbk temporaries; other root names --
 * a user's manifest -- are allowed, as they always were); or anything else
 * (LOC_FOREIGN: why names the first entry that is not libfbk's).  An
 * unmarked directory named "spill" or "spill-<16 hex>" next to a LOCK file
 * is a file: store's spill area (removed by its store, or by the next open
 * of that directory): foreign.
 * Returns one of LOC_* or an FBK_E* code (< 0). */
static int loc_classify(file_loc *l, char *why, size_t cap)
{
    struct stat st;
    if (io_()->fstatat(l->fd, FILE_MARKER, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
        return LOC_MARKED;
    if (loc_is_spill_area(l)) {
        snprintf(why, cap, "it looks like the spill area of a file: store (../LOCK exists)");
        return LOC_FOREIGN;
    }
    int fd = io_()->openat(l->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0)
        return fail(errno, "open location", l->path, NULL);
    DIR *d = fbk__file_dir_of(fd);
    if (!d)
        return fail(errno, "list location", l->path, NULL);
    int any = 0, shards = 0, foreign = 0, rc = FBK_OK;
    char other[256] = "";
    struct dirent *de;
    errno = 0;
    while (!foreign && rc == FBK_OK && (de = io_()->readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0)
            continue;
        any = 1;
        if (strcmp(n, FILE_MARKER) == 0 && is_regular(dirfd(d), de)) {
            /* marked by another store's open since the fstatat above (two
             * processes opening a new location at once) */
            io_()->closedir(d);
            return LOC_MARKED;
        }
        if (strlen(n) != 2 || fbk__file_shard_index(n) < 0) {
            if (!other[0])
                snprintf(other, sizeof other, "%s", n);
            errno = 0;
            continue;
        }
        int r = loc_classify_shard(l, dirfd(d), n, why, cap);
        if (r < 0)
            rc = r;
        else if (r > 0)
            foreign = 1;
        else
            shards++;
        errno = 0;
    }
    if (rc == FBK_OK && !foreign && errno)
        rc = fail(errno, "list location", l->path, NULL);
    io_()->closedir(d);
    if (rc != FBK_OK)
        return rc;
    if (foreign)
        return LOC_FOREIGN;
    if (!any)
        return LOC_EMPTY;
    if (shards > 0)
        return LOC_LEGACY;
    snprintf(why, cap, "%s is not libfbk's, and there is no shard directory", other);
    return LOC_FOREIGN;
}

/* Writes FILE_MARKER into the location (O_EXCL; the file fsynced here, its
 * name by the root fsync of loc_make_shards).  1 when the marker is there
 * (made now, or by a concurrent open), 0 when it could not be made: a
 * read-only or full location is used unmarked, as it is (the next open
 * adopts it again: it is still empty, or holds only libfbk's shards). */
static int loc_mark(file_loc *l)
{
    static const char text[] = "libfbk file: location, format 1.  The shard directories 00..ff "
                               "hold one file per key; libfbk deletes nothing in them but its "
                               "own .tmp- files.  Keep other files out of them.\n";
    int fd = io_()->openat(l->fd, FILE_MARKER, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return errno == EEXIST;
    int ok = fbk__file_writev_all(fd, &(struct iovec){(void *)text, sizeof text - 1}, 1) == 0 &&
             io_()->fsync(fd) == 0;
    ok = io_()->close(fd) == 0 && ok;
    if (!ok)
        io_()->unlinkat(l->fd, FILE_MARKER, 0);
    return ok;
}

/* Adopts the opened location directory when it may be libfbk's: marked
 * already; or empty, or written by an earlier version (LOC_LEGACY), and
 * then marked.  A non-empty directory libfbk did not make is refused
 * (FBK_EINVAL): its scan would treat the user's files as libfbk's.
 * *marked_now is set when the marker was written here.  A read-only store
 * (readonly) writes no marker: it uses an adoptable directory as it is. */
static int loc_claim(file_loc *l, int readonly, int *marked_now)
{
    char why[600] = "";
    int kind = loc_classify(l, why, sizeof why);
    if (kind < 0)
        return kind;
    if (kind == LOC_FOREIGN)
        return fbk_error_set(FBK_EINVAL, 0,
                             "file: %s is not a libfbk location (no " FILE_MARKER
                             " marker) and is not empty: refusing to use it (%s)",
                             l->path, why);
    *marked_now = kind != LOC_MARKED && !readonly && loc_mark(l);
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

    int rc = loc_check_path(b, location, l->path);
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
        rc = loc_claim(l, b->readonly, &marked_now);
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
        } else if (fbk__file_is_tmp_name(n, shard, owner) && is_regular(dirfd(d), de)) {
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
