/* file_loc_check.c -- what a file: location may be: the path rules (never
 * the store's own areas), the marker file, telling a libfbk location (or one
 * an earlier version wrote) from a user's directory, and adopting it.
 * docs/file-backend.md, "What a location may be". */
#include "file_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------- what a location may be */

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

/* A path's components, one by one: the next one after *p (slashes
 * skipped), its length in *len, *p moved past it; NULL at the end. */
static const char *next_part(const char **p, size_t *len)
{
    const char *s = *p;
    while (*s == '/')
        s++;
    const char *e = s;
    while (*e && *e != '/')
        e++;
    *len = (size_t)(e - s);
    *p = e;
    return *len ? s : NULL;
}

/* -1 for "..", 0 for ".", 1 for a name. */
static int part_kind(const char *c, size_t len)
{
    if (len == 2 && c[0] == '.' && c[1] == '.')
        return -1;
    return len == 1 && c[0] == '.' ? 0 : 1;
}

/* Appends the components of rel to the absolute path buf[0..*n) (capacity
 * cap), resolving "." and ".." lexically: rel names directories that do not
 * exist yet, which mkdir_p will make, so "new/.." is where "new" is made.
 * -1 when the result does not fit. */
static int path_append(char *buf, size_t *n, size_t cap, const char *rel)
{
    size_t len;
    for (const char *p = rel, *c; (c = next_part(&p, &len)) != NULL;) {
        int kind = part_kind(c, len);
        if (kind < 0) {
            while (*n > 1 && buf[*n - 1] != '/')
                (*n)--;
            if (*n > 1)
                (*n)--;
        } else if (kind > 0) {
            if (*n + 1 + len + 1 > cap)
                return -1;
            if (buf[*n - 1] != '/')
                buf[(*n)++] = '/';
            memcpy(buf + *n, c, len);
            *n += len;
        }
    }
    buf[*n] = '\0';
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
int fbk__file_loc_check_path(file_backend *b, const char *location, const char *shown)
{
    if (location[0] != '/') {
        int depth = 0;
        size_t len;
        for (const char *p = location, *c; (c = next_part(&p, &len)) != NULL;) {
            depth += part_kind(c, len);
            if (depth < 0)
                return fbk_error_set(FBK_EINVAL, 0,
                                     "file: location %s climbs out of the store directory %s "
                                     "with \"..\": a relative location must stay inside the store "
                                     "directory (give an absolute path for a directory elsewhere)",
                                     location, b->dir);
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
        if (!(fbk__file_is_key_name(sn, n, &key) || fbk__file_is_tmp_name(sn, n, NULL) ||
              fbk__file_is_ref_name(sn, n, NULL, NULL)) ||
            !fbk__file_is_regular(dirfd(sd), se)) {
            snprintf(why, cap, "%s/%s is neither a key file, a ref nor a libfbk temporary", n, sn);
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
    DIR *d;
    int err = fbk__file_loc_list(l, &d);
    if (err != FBK_OK)
        return err;
    int any = 0, shards = 0, foreign = 0, rc = FBK_OK;
    char other[256] = "";
    struct dirent *de;
    errno = 0;
    while (!foreign && rc == FBK_OK && (de = io_()->readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0)
            continue;
        any = 1;
        if (strcmp(n, FILE_MARKER) == 0 && fbk__file_is_regular(dirfd(d), de)) {
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
int fbk__file_loc_claim(file_loc *l, int readonly, int *marked_now)
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
