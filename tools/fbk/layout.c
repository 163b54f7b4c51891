/* layout.c -- what the public API does not tell, read from the on-disk
 * layouts of docs/lmdb-backend.md and docs/file-backend.md:
 *   - the locations of a store: lmdb: the named databases of DIR/durable
 *     (read through liblmdb, read-only); file: the directories under DIR
 *     that carry the `.fbk-location` marker or the shard layout (00..ff);
 *   - the stored size of each object of a location, without loading it.
 * The LMDB environment opened here is always closed before the tool opens
 * the store through libfbk: LMDB forbids opening one environment twice in
 * a process (closing one handle would drop the other's fcntl locks). */
#include "fbk_tool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOOL_MAXDBS 8192

/* ---------------------------------------------------------------- lmdb: */

static int lmdb_err(int rc, const char *what, const char *path)
{
    int code = rc == ENOMEM ? FBK_ENOMEM
               : rc == MDB_CORRUPTED || rc == MDB_INVALID || rc == MDB_PAGE_NOTFOUND
                   ? FBK_ECORRUPT
                   : FBK_EIO;
    return fbk_error_set(code, rc > 0 ? rc : 0, "lmdb: %s %s: %s", what, path, mdb_strerror(rc));
}

/* Opens DIR/durable read-only; *env NULL (and 0) when there is none yet. */
static int durable_open(const tool_uri *u, MDB_env **env, MDB_txn **txn, char *path,
                        size_t cap)
{
    *env = NULL;
    snprintf(path, cap, "%s/durable", u->dir);
    char data[4200];
    snprintf(data, sizeof data, "%s/data.mdb", path);
    if (access(data, F_OK) != 0)
        return errno == ENOENT ? 0 : fbk_error_from_errno(errno, "lmdb: %s", data);
    MDB_env *e;
    int rc = mdb_env_create(&e);
    if (rc)
        return lmdb_err(rc, "create environment for", path);
    mdb_env_set_maxdbs(e, TOOL_MAXDBS);
    rc = mdb_env_open(e, path, MDB_RDONLY | MDB_NOTLS, 0644);
    if (!rc)
        rc = mdb_txn_begin(e, NULL, MDB_RDONLY, txn);
    if (rc) {
        mdb_env_close(e);
        return lmdb_err(rc, "open read-only", path);
    }
    *env = e;
    return 0;
}

static void durable_close(MDB_env *env, MDB_txn *txn)
{
    if (env) {
        mdb_txn_abort(txn);
        mdb_env_close(env);
    }
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int names_add(char ***names, size_t *n, size_t *cap, const char *s, size_t len)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        char **p = realloc(*names, c * sizeof *p);
        if (!p)
            return fbk_error_set(FBK_ENOMEM, 0, "out of memory");
        *names = p, *cap = c;
    }
    char *d = malloc(len + 1);
    if (!d)
        return fbk_error_set(FBK_ENOMEM, 0, "out of memory");
    memcpy(d, s, len);
    d[len] = 0;
    (*names)[(*n)++] = d;
    return 0;
}

void layout_free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Every key of the main database that opens as a named database is a
 * location (names with a NUL byte cannot be location strings). */
static int lmdb_locations(const tool_uri *u, char ***names, size_t *n)
{
    MDB_env *env;
    MDB_txn *txn;
    char path[4200];
    size_t cap = 0;
    int rc = durable_open(u, &env, &txn, path, sizeof path);
    if (rc || !env)
        return rc;
    MDB_dbi main;
    MDB_cursor *cur = NULL;
    rc = mdb_dbi_open(txn, NULL, 0, &main);
    if (!rc)
        rc = mdb_cursor_open(txn, main, &cur);
    MDB_val k, v;
    int mrc = rc ? rc : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    for (; !rc && mrc == 0; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size == 0 || k.mv_size > 255 || memchr(k.mv_data, 0, k.mv_size))
            continue;
        if (((const char *)k.mv_data)[0] == 0x1f)
            continue; /* "\x1fnames:LOC", the name index of LOC (lmdb_names.c) */
        char name[256];
        memcpy(name, k.mv_data, k.mv_size);
        name[k.mv_size] = 0;
        MDB_dbi dbi;
        if (mdb_dbi_open(txn, name, 0, &dbi) != 0)
            continue; /* a plain key of the main database, not a location */
        mdb_dbi_close(env, dbi);
        rc = names_add(names, n, &cap, name, k.mv_size);
    }
    if (!rc && mrc != MDB_NOTFOUND)
        rc = lmdb_err(mrc, "list the databases of", path);
    if (cur)
        mdb_cursor_close(cur);
    durable_close(env, txn);
    return rc;
}

static int lmdb_exists(const tool_uri *u, const char *loc)
{
    MDB_env *env;
    MDB_txn *txn;
    char path[4200];
    int rc = durable_open(u, &env, &txn, path, sizeof path);
    if (rc || !env)
        return rc;
    MDB_dbi dbi;
    rc = mdb_dbi_open(txn, loc, 0, &dbi);
    durable_close(env, txn);
    if (rc == 0)
        return 1;
    if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE || rc == MDB_BAD_VALSIZE)
        return 0;
    return lmdb_err(rc, "look up the database in", path);
}

static int sizes_add(tool_sizes *z, size_t *cap, const unsigned char key[16], uint64_t size)
{
    if (z->n == *cap) {
        size_t c = *cap ? *cap * 2 : 1024;
        fbk_key *k = realloc(z->keys, c * sizeof *k);
        if (k)
            z->keys = k;
        uint64_t *s = k ? realloc(z->sizes, c * sizeof *s) : NULL;
        if (!s)
            return fbk_error_set(FBK_ENOMEM, 0, "out of memory");
        z->sizes = s, *cap = c;
    }
    memcpy(z->keys[z->n].bytes, key, 16);
    z->sizes[z->n++] = size;
    return 0;
}

static int lmdb_sizes(const tool_uri *u, const char *loc, tool_sizes *z, size_t *cap)
{
    MDB_env *env;
    MDB_txn *txn;
    char path[4200];
    int rc = durable_open(u, &env, &txn, path, sizeof path);
    if (rc || !env)
        return rc;
    MDB_dbi dbi;
    MDB_cursor *cur = NULL;
    rc = mdb_dbi_open(txn, loc, 0, &dbi);
    if (rc == MDB_NOTFOUND) {
        durable_close(env, txn);
        return 0;
    }
    if (!rc)
        rc = mdb_cursor_open(txn, dbi, &cur);
    MDB_val k, v;
    int mrc = rc ? rc : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    /* The data pointer of a big value points at its overflow pages; only
     * its size is read here, so those pages are never touched. */
    for (; !rc && mrc == 0; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        if (k.mv_size == 16)
            rc = sizes_add(z, cap, k.mv_data, v.mv_size);
    if (!rc && mrc != MDB_NOTFOUND)
        rc = lmdb_err(mrc, "list database of", path);
    if (cur)
        mdb_cursor_close(cur);
    durable_close(env, txn);
    return rc;
}

/* ---------------------------------------------------------------- file: */

static void file_loc_path(const tool_uri *u, const char *loc, char *out, size_t cap)
{
    if (loc[0] == '/')
        snprintf(out, cap, "%s", loc);
    else
        snprintf(out, cap, "%s/%s", u->dir, loc);
}

static int is_hex2(const char *s)
{
    return strlen(s) == 2 && strspn(s, "0123456789abcdef") == 2;
}

/* A libfbk location: the marker file, or at least one shard directory. */
static int file_is_location(int dfd)
{
    if (faccessat(dfd, ".fbk-location", F_OK, 0) == 0)
        return 1;
    int fd = dup(dfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d)))
        if (is_hex2(e->d_name) && (e->d_type == DT_DIR || e->d_type == DT_UNKNOWN))
            found = 1;
    closedir(d);
    return found;
}

static int file_walk(const char *dir, const char *rel, int depth, char ***names, size_t *n,
                     size_t *cap)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == EACCES ? 0 : fbk_error_from_errno(errno, "file: list %s", dir);
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        const char *nm = e->d_name;
        if (nm[0] == '.' || (depth == 0 && (!strcmp(nm, "spill") || !strncmp(nm, "spill-", 6))))
            continue; /* ., .., hidden entries, the spill areas (a location cannot be there) */
        if (e->d_type != DT_DIR && e->d_type != DT_UNKNOWN)
            continue;
        char path[4200], r[4200];
        snprintf(path, sizeof path, "%s/%s", dir, nm);
        snprintf(r, sizeof r, "%s%s%s", rel, *rel ? "/" : "", nm);
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            continue; /* not a directory */
        int isloc = file_is_location(fd);
        close(fd);
        if (isloc)
            rc = names_add(names, n, cap, r, strlen(r));
        else if (depth < 8)
            rc = file_walk(path, r, depth + 1, names, n, cap);
    }
    closedir(d);
    return rc;
}

static int file_sizes(const tool_uri *u, const char *loc, tool_sizes *z, size_t *cap)
{
    char root[4200];
    file_loc_path(u, loc, root, sizeof root);
    int rfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rfd < 0)
        return errno == ENOENT ? 0 : fbk_error_from_errno(errno, "file: open %s", root);
    int rc = 0;
    for (int s = 0; s < 256 && !rc; s++) {
        char shard[3];
        snprintf(shard, sizeof shard, "%02x", s);
        int sfd = openat(rfd, shard, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = sfd >= 0 ? fdopendir(sfd) : NULL;
        if (!d) {
            if (sfd >= 0)
                close(sfd);
            continue;
        }
        struct dirent *e;
        while (!rc && (e = readdir(d))) {
            fbk_key k;
            struct stat st;
            if (strlen(e->d_name) != 32 || fbk_key_parse(e->d_name, &k) != 0)
                continue;
            if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
                rc = sizes_add(z, cap, k.bytes, (uint64_t)st.st_size);
        }
        closedir(d);
    }
    close(rfd);
    return rc;
}

/* ------------------------------------------------------------ interface */

int layout_locations(const tool_uri *u, char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    size_t cap = 0;
    int rc = 0;
    if (u->scheme == TOOL_LMDB)
        rc = lmdb_locations(u, names, n);
    else if (u->scheme == TOOL_FILE)
        rc = file_walk(u->dir, "", 0, names, n, &cap);
    if (rc) {
        layout_free_names(*names, *n);
        *names = NULL, *n = 0;
        return rc;
    }
    if (*n)
        qsort(*names, *n, sizeof **names, cmp_name);
    return 0;
}

int layout_location_exists(const tool_uri *u, const char *loc)
{
    if (u->scheme == TOOL_LMDB)
        return lmdb_exists(u, loc);
    if (u->scheme == TOOL_FILE) {
        char p[4200];
        struct stat st;
        file_loc_path(u, loc, p, sizeof p);
        if (stat(p, &st) == 0)
            return S_ISDIR(st.st_mode);
        return errno == ENOENT || errno == ENOTDIR ? 0
                                                   : fbk_error_from_errno(errno, "file: %s", p);
    }
    return 1;
}

static int cmp_key(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

int layout_sizes(const tool_uri *u, const char *loc, tool_sizes *z)
{
    memset(z, 0, sizeof *z);
    size_t cap = 0;
    int rc = 0;
    if (u->scheme == TOOL_LMDB)
        rc = lmdb_sizes(u, loc, z, &cap);
    else if (u->scheme == TOOL_FILE)
        rc = file_sizes(u, loc, z, &cap);
    if (rc) {
        layout_sizes_free(z);
        return rc;
    }
    /* sort keys and sizes together: sort an index, then permute */
    if (z->n > 1) {
        struct ks {
            fbk_key k;
            uint64_t s;
        } *a = malloc(z->n * sizeof *a);
        if (!a) {
            layout_sizes_free(z);
            return fbk_error_set(FBK_ENOMEM, 0, "out of memory");
        }
        for (size_t i = 0; i < z->n; i++)
            a[i].k = z->keys[i], a[i].s = z->sizes[i];
        qsort(a, z->n, sizeof *a, cmp_key);
        for (size_t i = 0; i < z->n; i++)
            z->keys[i] = a[i].k, z->sizes[i] = a[i].s;
        free(a);
    }
    return 0;
}

int64_t layout_size_of(const tool_sizes *z, const fbk_key *key)
{
    size_t lo = 0, hi = z->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(z->keys[mid].bytes, key->bytes, 16);
        if (c == 0)
            return z->sizes[mid] >= FBK_TOOL_FRAME_HDR
                       ? (int64_t)(z->sizes[mid] - FBK_TOOL_FRAME_HDR)
                       : -1;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

void layout_sizes_free(tool_sizes *z)
{
    free(z->keys);
    free(z->sizes);
    memset(z, 0, sizeof *z);
}
