/* file_refs.c -- which names bind an object of a file: location, so that an
 * object a name of another process binds is never removed as an orphan
 * (backend table version 5, remove_unbound; docs/maps.md point 2).
 *
 *   LOC/ab/<32 hex key>.name-<32 hex>   an empty file, a *ref*: the name
 *        whose binding file is .fbk-names/<32 hex> was bound to this key
 *        (it may have been rebound or removed since: the ref is then stale)
 *   LOC/.fbk-names/.refs   every binding has its ref (a location from before
 *        the refs gets them at a writer's first name scan)
 *
 * The rules:
 * - A binder creates the ref of each binding in the object's shard
 *   directory before the location sync that precedes the bindings (that
 *   sync fsyncs the shard directories it marked, or calls syncfs), so a ref
 *   is durable before its binding.  It holds a shared flock on the location
 *   directory from the refs' creation until its bindings are renamed in, and
 *   under that lock checks that each bound object is still there (a remover
 *   may have taken it a moment before: the change fails, nothing is bound).
 * - remove_unbound takes the flock exclusively, lists the key's refs in its
 *   shard and reads each named binding: one that still names the key keeps
 *   the object; a stale ref is deleted.  With no binding left the object is
 *   removed.
 * A crash may leave stale refs: they cost an entry each until the object
 * becomes an orphan.  Every system call goes through file_io.h (the
 * power-loss model sees them). */
#include "file_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define REF_SEP ".name-"
#define REF_SEP_LEN (sizeof REF_SEP - 1)
#define REFS_BUILT ".refs"

/* "ab/<32 hex key>.name-<32 hex name file>" */
void fbk__file_ref_name(const fbk_key *key, const char file[33], char out[FILE_REF_LEN])
{
    char name[FILE_NAME_LEN];
    fbk__file_key_name(key, name);
    snprintf(out, FILE_REF_LEN, "%s" REF_SEP "%.32s", name, file);
}

/* 1 if n (an entry of shard directory `shard`) is a ref: key and the name's
 * file (33 bytes) are filled in. */
int fbk__file_is_ref_name(const char *n, const char *shard, fbk_key *key, char file[33])
{
    if (strlen(n) != 32 + REF_SEP_LEN + 32 || memcmp(n + 32, REF_SEP, REF_SEP_LEN) != 0)
        return 0;
    char hex[33];
    memcpy(hex, n, 32);
    hex[32] = '\0';
    const char *f = n + 32 + REF_SEP_LEN;
    for (int i = 0; i < 32; i++)
        if (!((f[i] >= '0' && f[i] <= '9') || (f[i] >= 'a' && f[i] <= 'f')))
            return 0;
    fbk_key k;
    if (!fbk__file_is_key_name(hex, shard, &k))
        return 0;
    if (key)
        *key = k;
    if (file) {
        memcpy(file, f, 32);
        file[32] = '\0';
    }
    return 1;
}

/* The flock (LOCK_SH or LOCK_EX) on l's directory through a descriptor of
 * its own (a lock per open file description: threads of one store exclude
 * each other too), into *fd. */
int fbk__file_refs_lock(file_loc *l, int how, int *fd)
{
    *fd = io_()->openat(l->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (*fd < 0)
        return fail(errno, "open", l->path, NULL);
    int r;
    while ((r = io_()->flock(*fd, how)) != 0 && errno == EINTR)
        ;
    if (r != 0) {
        int e = errno;
        io_()->close(*fd);
        *fd = -1;
        return fail(e, "lock", l->path, NULL);
    }
    return FBK_OK;
}

void fbk__file_refs_unlock(int fd)
{
    if (fd >= 0)
        io_()->close(fd); /* releases the flock */
}

/* Creates the ref of name file `file` to key (no error if it is there) and
 * marks its shard for the next location sync. */
static int ref_create(file_loc *l, const fbk_key *key, const char file[33])
{
    char ref[FILE_REF_LEN];
    fbk__file_ref_name(key, file, ref);
    int fd = io_()->openat(l->fd, ref, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return fail(errno, "create", l->path, ref);
    io_()->close(fd);
    fbk__file_loc_touch(l, ref, 0, key, 0);
    return FBK_OK;
}

/* Under the shared lock: the refs of every binding in ops, and each bound
 * object checked to be there. */
int fbk__file_refs_bind(file_loc *l, const fbk_name_op *ops, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!ops[i].key)
            continue;
        char file[33], obj[FILE_NAME_LEN];
        fbk__file_name_file(ops[i].name, ops[i].len, file);
        fbk__file_key_name(ops[i].key, obj);
        struct stat st;
        if (io_()->fstatat(l->fd, obj, &st, 0) != 0) {
            if (errno != ENOENT)
                return fail(errno, "stat", l->path, obj);
            char t[FBK_KEY_STRLEN + 1];
            fbk_key_format(ops[i].key, t);
            /* a refused binding (include/fbk_backend.h): FBK_EINVAL */
            return fbk_error_set(FBK_EINVAL, 0,
                                 "file: location %s: object %s was removed (by another "
                                 "process, as unbound) before the name could be bound to it; "
                                 "nothing was bound: put the value again",
                                 l->path, t);
        }
        int rc = ref_create(l, ops[i].key, file);
        if (rc != FBK_OK)
            return rc;
    }
    return FBK_OK;
}

typedef struct ref_list {
    char (*files)[33];
    size_t n, cap;
} ref_list;

/* The refs of key in its shard (names' files into out). */
static int refs_of(file_loc *l, const fbk_key *key, ref_list *out)
{
    char obj[FILE_NAME_LEN];
    fbk__file_key_name(key, obj);
    char shard[3] = {obj[0], obj[1], '\0'};
    int fd = io_()->openat(l->fd, shard, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0)
        return errno == ENOENT ? FBK_OK : fail(errno, "open", l->path, shard);
    DIR *d = fbk__file_dir_of(fd);
    if (!d)
        return fail(errno, "list", l->path, shard);
    int rc = FBK_OK;
    struct dirent *de;
    errno = 0;
    while (rc == FBK_OK && (de = io_()->readdir(d)) != NULL) {
        fbk_key k;
        char file[33];
        if (strncmp(de->d_name, obj + 3, 32) == 0 &&
            fbk__file_is_ref_name(de->d_name, shard, &k, file)) {
            if (out->n == out->cap) {
                size_t cap = out->cap ? 2 * out->cap : 4;
                void *p = realloc(out->files, cap * sizeof *out->files);
                if (!p) {
                    rc = fbk_error_set(FBK_ENOMEM, ENOMEM, "file: out of memory");
                    break;
                }
                out->files = p;
                out->cap = cap;
            }
            memcpy(out->files[out->n++], file, 33);
        }
        errno = 0;
    }
    if (rc == FBK_OK && errno)
        rc = fail(errno, "list", l->path, shard);
    io_()->closedir(d);
    return rc;
}

/* With the exclusive lock: 1 when key's object was deleted (or absent), 0
 * when kept because a binding names it, or an FBK_E* code. */
static int unbound_locked(file_backend *b, file_loc *l, const fbk_key *key)
{
    ref_list refs = {NULL, 0, 0};
    int bound = 0;
    int rc = refs_of(l, key, &refs);
    for (size_t i = 0; i < refs.n && rc == FBK_OK && !bound; i++) {
        rc = fbk__file_name_binds(l->fd, l->path, refs.files[i], key);
        if (rc == 1) {
            bound = 1;
            rc = FBK_OK;
        } else if (rc == 0) { /* stale: the name was rebound or removed */
            char ref[FILE_REF_LEN];
            fbk__file_ref_name(key, refs.files[i], ref);
            if (io_()->unlinkat(l->fd, ref, 0) != 0 && errno != ENOENT)
                rc = fail(errno, "remove", l->path, ref);
        }
    }
    free(refs.files);
    if (rc != FBK_OK)
        return rc;
    if (bound)
        return 0;
    rc = fbk__file_remove_persisted(b, l, key);
    return rc == FBK_OK || rc == FBK_ENOTFOUND ? 1 : rc;
}

/* remove_unbound: 1 when the object was deleted (or absent), 0 when kept
 * because a binding names it, or an FBK_E* code. */
int fbk__file_remove_unbound(void *self, void *loc, const fbk_key *key)
{
    file_backend *b = self;
    if (b->readonly)
        return fbk__file_refuse_readonly(b, "remove");
    file_loc *l = loc;
    int lock;
    int rc = fbk__file_refs_lock(l, LOCK_EX, &lock);
    if (rc == FBK_OK)
        rc = unbound_locked(b, l, key);
    fbk__file_refs_unlock(lock);
    return rc;
}

/* remove_unbound of many keys under one exclusive lock. */
int fbk__file_remove_unbound_many(void *self, void *loc, const fbk_key *keys, size_t n,
                                  int *removed)
{
    file_backend *b = self;
    memset(removed, 0, n * sizeof *removed);
    if (b->readonly)
        return fbk__file_refuse_readonly(b, "remove");
    file_loc *l = loc;
    int lock;
    int rc = fbk__file_refs_lock(l, LOCK_EX, &lock);
    for (size_t i = 0; i < n && rc == FBK_OK; i++) {
        rc = unbound_locked(b, l, &keys[i]);
        if (rc >= 0) {
            removed[i] = rc;
            rc = FBK_OK;
        }
    }
    fbk__file_refs_unlock(lock);
    return rc;
}

/* name_scan's callback when the refs are being built: each binding's ref. */
typedef struct build_ctx {
    file_loc *l;
    fbk_binding_fn each;
    void *arg;
    int rc;
    size_t made; /* refs created */
} build_ctx;

static int build_one(const void *name, size_t len, const fbk_key *key, uint64_t size, void *arg)
{
    build_ctx *c = arg;
    char file[33], ref[FILE_REF_LEN];
    fbk__file_name_file(name, len, file);
    fbk__file_ref_name(key, file, ref);
    struct stat st;
    if (io_()->fstatat(c->l->fd, ref, &st, 0) != 0) {
        char obj[FILE_NAME_LEN];
        fbk__file_key_name(key, obj);
        /* a binding whose object is gone needs no ref (and its shard may
         * not exist): the map reports it when the name is read */
        if (io_()->fstatat(c->l->fd, obj, &st, 0) == 0) {
            if ((c->rc = ref_create(c->l, key, file)) != FBK_OK)
                return c->rc;
            c->made++;
        }
    }
    return c->each(name, len, key, size, c->arg);
}

/* A writer's name scan: on a location whose bindings are older than the
 * refs (a .fbk-names without .refs), it creates the missing refs, syncs the
 * location if it made any and then marks the refs built.  Holds the shared
 * lock meanwhile (it binds, in effect). */
int fbk__file_refs_scan(file_backend *b, file_loc *l, fbk_binding_fn each, void *arg,
                        fbk__file_alive_fn alive)
{
    if (b->readonly)
        return fbk__file_name_scan(l->fd, l->path, each, arg, NULL, NULL);
    char built[sizeof FBK__FILE_NAMES_DIR + sizeof REFS_BUILT + 1];
    snprintf(built, sizeof built, "%s/%s", FBK__FILE_NAMES_DIR, REFS_BUILT);
    struct stat st;
    int old = 0;
    if (io_()->fstatat(l->fd, built, &st, 0) != 0) {
        if (errno != ENOENT)
            return fail(errno, "stat", l->path, built);
        /* no mark: an index from before the refs, or none at all */
        if (io_()->fstatat(l->fd, FBK__FILE_NAMES_DIR, &st, 0) == 0)
            old = 1;
        else if (errno != ENOENT)
            return fail(errno, "stat", l->path, FBK__FILE_NAMES_DIR);
    }
    if (!old)
        return fbk__file_name_scan(l->fd, l->path, each, arg, alive, b);
    int lock;
    int rc = fbk__file_refs_lock(l, LOCK_SH, &lock);
    if (rc != FBK_OK)
        return rc;
    build_ctx c = {l, each, arg, FBK_OK, 0};
    rc = fbk__file_name_scan(l->fd, l->path, build_one, &c, alive, b);
    if (rc == FBK_OK && c.made)
        rc = fbk__file_sync(b, l); /* the refs durable before the mark */
    if (rc == FBK_OK) {
        int fd = io_()->openat(l->fd, built, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            rc = fail(errno, "create", l->path, built);
        else if (io_()->close(fd), fbk__file_fsync_dir_at(l->fd, FBK__FILE_NAMES_DIR) != 0)
            rc = fail(errno, "fsync", l->path, FBK__FILE_NAMES_DIR);
    }
    fbk__file_refs_unlock(lock);
    return rc;
}
