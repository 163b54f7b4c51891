/* file_names.c -- the name index of a file: location (maps, backend table
 * version 4).
 *
 *   LOC/.fbk-names/<hex>      one binding: <hex> is the XXH3-128 of the name
 *                             (32 lowercase hex digits)
 *   LOC/.fbk-names/.tmp-<hex>-<id>-<seq>   a binding being written (never
 *                             read) by the store whose spill id is <id> (16
 *                             hex); a writer's name_scan removes it when that
 *                             store is gone (".tmp-<hex>-<pid>-<seq>" of
 *                             versions before sharing: always)
 *
 * A binding file (docs/formats.md): "FBKN", version (u32 LE, 1), the bound
 * key (16 bytes), the object's payload size (u64 LE), the name's length
 * (u32 LE), the name, and the XXH3-64 of everything before it (u64 LE).
 *
 * Crash consistency (docs/maps.md): the caller (file_backend.c) makes the
 * bound objects durable first; then each binding is written to a temporary
 * file, fsynced, and renamed over its final name, and the directory is
 * fsynced once at the end.  A rename is atomic, so after a crash a name's
 * file is its old binding or its new one, whole; and no binding is durable
 * before its object.  An unbind unlinks the file (durable at the same
 * directory fsync).  Every system call goes through file_io.h, so the
 * power-loss model sees them. */
#include "file_names.h"

#include "file_io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#define NAMES_DIR ".fbk-names"
#define HDR (4 + 4 + 16 + 8 + 4)
#define MAX_FILE (HDR + FBK_NAME_MAX + 8)

static const fbk__file_io *io(void) { return fbk__file_io_get(); }

static atomic_uint_fast64_t tmp_seq;

static void file_of(const void *name, size_t len, char out[33])
{
    XXH128_hash_t h = XXH3_128bits(name, len);
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h.high64, (unsigned long long)h.low64);
}

static void put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int sys_fail(int e, const char *what, const char *path, const char *file)
{
    return fbk_error_from_errno(e, "file: %s %s/" NAMES_DIR "%s%s", what, path, file ? "/" : "",
                                file ? file : "");
}

/* The names directory of the location, or -1 with errno (ENOENT: none). */
static int open_dir(int locfd)
{
    return io()->openat(locfd, NAMES_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
}

/* Reads and checks one binding file into buf (MAX_FILE bytes). */
static int read_binding(int dfd, const char *path, const char *file, unsigned char *buf,
                        const void **name, size_t *len, fbk_key *key, uint64_t *size)
{
    int fd = io()->openat(dfd, file, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return errno == ENOENT ? FBK_ENOTFOUND : sys_fail(errno, "open", path, file);
    size_t got = 0;
    int rc = FBK_OK;
    for (;;) {
        ssize_t r = io()->read(fd, buf + got, MAX_FILE + 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = sys_fail(errno, "read", path, file);
            break;
        }
        if (r == 0 || (got += (size_t)r) > MAX_FILE)
            break;
    }
    io()->close(fd);
    if (rc)
        return rc;
    size_t nlen = got >= HDR ? (size_t)get_le(buf + 32, 4) : 0;
    if (got < HDR + 8 || memcmp(buf, "FBKN", 4) != 0 || get_le(buf + 4, 4) != 1 || nlen == 0 ||
        nlen > FBK_NAME_MAX || got != HDR + nlen + 8 ||
        get_le(buf + HDR + nlen, 8) != XXH3_64bits(buf, HDR + nlen))
        return fbk_error_set(FBK_ECORRUPT, 0,
                             "file: name index entry %s/" NAMES_DIR "/%s is damaged (%zu bytes)",
                             path, file, got);
    memcpy(key->bytes, buf + 8, 16);
    *size = get_le(buf + 24, 8);
    *name = buf + HDR;
    *len = nlen;
    return FBK_OK;
}

void fbk__file_name_file(const void *name, size_t len, char out[33]) { file_of(name, len, out); }

int fbk__file_name_binds(int locfd, const char *path, const char *file, const fbk_key *key)
{
    int dfd = open_dir(locfd);
    if (dfd < 0)
        return errno == ENOENT ? 0 : sys_fail(errno, "open", path, NULL);
    unsigned char *buf = malloc(MAX_FILE + 1);
    int rc = buf ? FBK_OK : fbk_error_set(FBK_ENOMEM, ENOMEM, "file: out of memory");
    const void *name;
    size_t len;
    fbk_key got;
    uint64_t size;
    if (rc == FBK_OK)
        rc = read_binding(dfd, path, file, buf, &name, &len, &got, &size);
    if (rc == FBK_OK)
        rc = fbk_key_equal(&got, key) ? 1 : 0;
    else if (rc == FBK_ENOTFOUND)
        rc = 0;
    free(buf);
    io()->close(dfd);
    return rc;
}

int fbk__file_name_get(int locfd, const char *path, const void *name, size_t len, fbk_key *key,
                       uint64_t *size)
{
    int dfd = open_dir(locfd);
    if (dfd < 0)
        return errno == ENOENT ? fbk_error_set(FBK_ENOTFOUND, 0, "file: name not bound")
                               : sys_fail(errno, "open", path, NULL);
    unsigned char *buf = malloc(MAX_FILE + 1);
    if (!buf) {
        io()->close(dfd);
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "file: out of memory");
    }
    char file[33];
    file_of(name, len, file);
    const void *got;
    size_t glen;
    int rc = read_binding(dfd, path, file, buf, &got, &glen, key, size);
    if (rc == FBK_OK && (glen != len || memcmp(got, name, len) != 0))
        rc = FBK_ENOTFOUND; /* another name with the same hash */
    if (rc == FBK_ENOTFOUND)
        rc = fbk_error_set(FBK_ENOTFOUND, 0, "file: name not bound");
    free(buf);
    io()->close(dfd);
    return rc;
}

static bool is_binding_file(const char *n)
{
    if (strlen(n) != 32)
        return false;
    for (int i = 0; i < 32; i++)
        if (!((n[i] >= '0' && n[i] <= '9') || (n[i] >= 'a' && n[i] <= 'f')))
            return false;
    return true;
}

static bool is_hex(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return false;
    return true;
}

/* A binding temporary that may be deleted: ".tmp-<32 hex>-<16 hex id>-<seq>"
 * whose store is not alive, or ".tmp-<32 hex>-<pid>-<seq>" (decimal pid) of a
 * version before sharing, whose store cannot share the location with this
 * one (it held DIR/LOCK exclusively). */
static bool is_dead_tmp(const char *n, fbk__file_alive_fn alive, void *alive_arg)
{
    if (strncmp(n, ".tmp-", 5) != 0 || strlen(n) < 5 + 32 + 4 || !is_hex(n + 5, 32) || n[37] != '-')
        return false;
    const char *owner = n + 38, *dash = strchr(owner, '-');
    if (!dash || dash == owner || dash[1] == '\0')
        return false;
    size_t olen = (size_t)(dash - owner);
    if (olen == 16 && is_hex(owner, 16)) {
        char id[17];
        memcpy(id, owner, 16);
        id[16] = '\0';
        return !alive(alive_arg, id);
    }
    for (const char *c = owner; c < dash; c++)
        if (*c < '0' || *c > '9')
            return false;
    return olen < 16; /* a pid */
}

int fbk__file_name_scan(int locfd, const char *path, fbk_binding_fn each, void *arg,
                        fbk__file_alive_fn alive, void *alive_arg)
{
    int dfd = open_dir(locfd);
    if (dfd < 0)
        return errno == ENOENT ? FBK_OK : sys_fail(errno, "open", path, NULL);
    int lfd = io()->openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    DIR *d = lfd >= 0 ? io()->fdopendir(lfd) : NULL;
    unsigned char *buf = malloc(MAX_FILE + 1);
    int rc = FBK_OK;
    if (!d || !buf) {
        rc = !buf ? fbk_error_set(FBK_ENOMEM, ENOMEM, "file: out of memory")
                  : sys_fail(errno, "list", path, NULL);
        if (!d && lfd >= 0)
            io()->close(lfd);
    }
    struct dirent *de;
    while (rc == FBK_OK && d && (errno = 0, de = io()->readdir(d)) != NULL) {
        if (!is_binding_file(de->d_name)) {
            /* ".", "..", temporaries: a dead store's are removed */
            if (alive && is_dead_tmp(de->d_name, alive, alive_arg))
                io()->unlinkat(dfd, de->d_name, 0);
            continue;
        }
        const void *name;
        size_t len;
        fbk_key key;
        uint64_t size;
        rc = read_binding(dfd, path, de->d_name, buf, &name, &len, &key, &size);
        if (rc == FBK_ENOTFOUND) { /* unbound by another process meanwhile */
            rc = FBK_OK;
            continue;
        }
        if (rc == FBK_OK)
            rc = each(name, len, &key, size, arg);
    }
    if (rc == FBK_OK && d && errno)
        rc = sys_fail(errno, "list", path, NULL);
    if (d)
        io()->closedir(d);
    free(buf);
    io()->close(dfd);
    return rc;
}

/* Writes one binding to a temporary file (named into tmp; not yet durable).
 * *fd gets the open file when fd != NULL, else it is closed. */
static int write_tmp(int dfd, const char *path, const char *owner, const fbk_name_op *op,
                     unsigned char *buf, char tmp[80], int *fdp)
{
    char file[33];
    file_of(op->name, op->len, file);
    snprintf(tmp, 80, ".tmp-%s-%.16s-%llu", file, owner,
             (unsigned long long)atomic_fetch_add(&tmp_seq, 1));
    memcpy(buf, "FBKN", 4);
    put_le(buf + 4, 1, 4);
    memcpy(buf + 8, op->key->bytes, 16);
    put_le(buf + 24, op->size, 8);
    put_le(buf + 32, op->len, 4);
    memcpy(buf + HDR, op->name, op->len);
    size_t n = HDR + op->len;
    put_le(buf + n, XXH3_64bits(buf, n), 8);
    n += 8;
    int fd = io()->openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return sys_fail(errno, "create", path, tmp);
    int rc = FBK_OK;
    for (size_t done = 0; done < n && rc == FBK_OK;) {
        ssize_t w = io()->write(fd, buf + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            rc = sys_fail(w < 0 ? errno : EIO, "write", path, tmp);
        else
            done += (size_t)w;
    }
    if (rc != FBK_OK || !fdp) {
        io()->close(fd);
        fd = -1;
    }
    if (rc != FBK_OK)
        io()->unlinkat(dfd, tmp, 0);
    if (fdp)
        *fdp = fd;
    return rc;
}

/* A batch of this many bindings or fewer fsyncs each temporary; a larger
 * one calls syncfs() once (as a location sync does, file_backend.c). */
#define NAMES_FSYNC_MAX 4

/* Applies ops in order: every binding is written to a temporary file, the
 * temporaries are made durable (an fsync each, or one syncfs for a large
 * batch), renamed over their final names in order (unbinds unlink), and the
 * directory is fsynced once. */
int fbk__file_name_apply(int locfd, const char *path, const char *owner, const fbk_name_op *ops,
                         size_t n)
{
    int dfd = open_dir(locfd);
    if (dfd < 0 && errno == ENOENT) {
        /* the first binding of this location: the directory's own name must
         * be durable before a binding in it is claimed to be */
        if (io()->mkdirat(locfd, NAMES_DIR, 0755) != 0 && errno != EEXIST)
            return sys_fail(errno, "create", path, NULL);
        if (io()->fsync(locfd) != 0)
            return fbk_error_from_errno(errno, "file: fsync %s", path);
        dfd = open_dir(locfd);
        /* a new index: every binding gets its ref (file_refs.c) from the
         * start (durable at the directory's fsync below, or built again) */
        int mfd = dfd >= 0 ? io()->openat(dfd, ".refs", O_WRONLY | O_CREAT | O_CLOEXEC, 0644) : -1;
        if (mfd >= 0)
            io()->close(mfd);
    }
    if (dfd < 0)
        return sys_fail(errno, "open", path, NULL);
    unsigned char *buf = malloc(MAX_FILE);
    char(*tmps)[80] = calloc(n ? n : 1, sizeof *tmps);
    int *fds = calloc(n ? n : 1, sizeof *fds);
    int rc = buf && tmps && fds ? FBK_OK
                                : fbk_error_set(FBK_ENOMEM, ENOMEM, "file: out of memory");
    size_t nbind = 0;
    for (size_t i = 0; i < n; i++)
        nbind += ops[i].key != NULL;
    bool each = nbind <= NAMES_FSYNC_MAX;
    size_t written = 0;
    for (; written < n && rc == FBK_OK; written++) {
        if (fds)
            fds[written] = -1;
        if (ops[written].key)
            rc = write_tmp(dfd, path, owner, &ops[written], buf, tmps[written],
                           each ? &fds[written] : NULL);
    }
    for (size_t i = 0; i < written && rc == FBK_OK && each; i++)
        if (fds[i] >= 0 && io()->fsync(fds[i]) != 0)
            rc = sys_fail(errno, "fsync", path, tmps[i]);
    if (rc == FBK_OK && !each && io()->syncfs(dfd) != 0)
        rc = sys_fail(errno, "syncfs", path, NULL);
    for (size_t i = 0; i < written; i++) {
        if (fds && fds[i] >= 0)
            io()->close(fds[i]);
        if (!ops[i].key)
            continue;
        char file[33];
        file_of(ops[i].name, ops[i].len, file);
        if (rc == FBK_OK && io()->renameat(dfd, tmps[i], dfd, file) != 0)
            rc = sys_fail(errno, "rename", path, tmps[i]);
        if (rc != FBK_OK)
            io()->unlinkat(dfd, tmps[i], 0); /* not renamed: never read */
    }
    /* the unbinds, in their place in the order (a later bind of the same
     * name was renamed above: only an unbind after it may remove it) */
    for (size_t i = 0; i < n && rc == FBK_OK; i++) {
        if (ops[i].key)
            continue;
        bool rebound = false;
        for (size_t j = i + 1; j < n && !rebound; j++)
            rebound = ops[j].key && ops[j].len == ops[i].len &&
                      memcmp(ops[j].name, ops[i].name, ops[i].len) == 0;
        if (rebound)
            continue;
        char file[33];
        file_of(ops[i].name, ops[i].len, file);
        if (io()->unlinkat(dfd, file, 0) != 0 && errno != ENOENT)
            rc = sys_fail(errno, "unlink", path, file);
    }
    if (rc == FBK_OK && io()->fsync(dfd) != 0)
        rc = sys_fail(errno, "fsync", path, NULL);
    free(buf);
    free(tmps);
    free(fds);
    io()->close(dfd);
    return rc;
}
