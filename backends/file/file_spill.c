/* file_spill.c -- a file: store's own spill area: store (one file per key,
 * written under its final name), load, remove.  docs/file-backend.md. */
#include "file_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

/* Creates spill/name for writing, directly under the key's name (and its
 * shard, the first time): the spill area is disposable (private to the
 * store, removed at close) and the core neither reads nor persists a key
 * before its store returned, so a temporary + rename would buy nothing but
 * a syscall and a directory update (docs/file-backend.md).
 * O_EXCL: an existing file is never written into -- it may be hard-linked
 * into a location.  One that exists is a partial file a failed store could
 * not remove (the core stores a key only when the spill area has no value
 * for it): it is unlinked and the create retried. */
static int spill_create(file_backend *b, const char *name, int *out)
{
    const int flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC;
    int fd = io_()->openat(b->spillfd, name, flags, 0644);
    if (fd < 0 && errno == ENOENT) {
        char shard[3] = {name[0], name[1], '\0'};
        if (fbk__file_mkdir_ok(b->spillfd, shard) == 0)
            fd = io_()->openat(b->spillfd, name, flags, 0644);
    }
    if (fd < 0 && errno == EEXIST) {
        if (io_()->unlinkat(b->spillfd, name, 0) != 0 && errno != ENOENT)
            return fail(errno, "store: remove stale", b->spill, name);
        fd = io_()->openat(b->spillfd, name, flags, 0644);
    }
    if (fd < 0)
        return fail(errno, "create", b->spill, name);
    *out = fd;
    return FBK_OK;
}

/* Ends a write to spill/name through fd: closes fd and, unless all went well
 * (ok; else `what` failed with errno e), unlinks the partial file, so that
 * a failed store leaves no readable value under the key.  Should that unlink
 * fail too, the file stays until the key's next store or register replaces
 * it, or the close removes the spill area. */
static int spill_finish(file_backend *b, const char *name, int fd, int ok, const char *what, int e)
{
    if (io_()->close(fd) != 0 && ok) {
        what = "close";
        e = errno;
        ok = 0;
    }
    if (ok)
        return FBK_OK;
    io_()->unlinkat(b->spillfd, name, 0);
    return fail(e, what, b->spill, name);
}

/* Creates spill/name holding the segments iov[0..n) (n <= FILE_IOV_MAX).
 * No fsync: the spill area is disposable. */
static int spill_write(file_backend *b, const char *name, const struct iovec *iov, int n)
{
    int fd = -1;
    int rc = spill_create(b, name, &fd);
    if (rc != FBK_OK)
        return rc;
    int ok = fbk__file_writev_all(fd, iov, n) == 0;
    return spill_finish(b, name, fd, ok, "write", errno);
}

/* ------------------------------------------------------------ spill ops */

int fbk__file_store(void *self, const fbk_key *key, size_t len, fbk_fill_fn fill, void *arg)
{
    file_backend *b = self;
    char name[FILE_NAME_LEN];
    fbk__file_key_name(key, name);
    size_t cap;
    void *buf = fbk__file_buf_get(b, len, &cap);
    if (!buf)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "file: store %s/%s: cannot allocate %zu bytes",
                             b->spill, name, len);
    int rc = fill(buf, len, arg);
    if (rc == FBK_OK)
        rc = spill_write(b, name, &(struct iovec){buf, len}, 1);
    fbk__file_buf_put(b, buf, cap);
    return rc;
}

/* store with the value already in memory as iov[0..n) (the frame header,
 * then the object's own bytes): written as they are, with no copy. */
int fbk__file_store_iov(void *self, const fbk_key *key, const struct iovec *iov, int n)
{
    file_backend *b = self;
    char name[FILE_NAME_LEN];
    fbk__file_key_name(key, name);
    if (n < 0 || n > FILE_IOV_MAX || (n > 0 && !iov))
        return fbk_error_set(FBK_EINVAL, 0, "file: store %s/%s: %d segments (0 to %d allowed)",
                             b->spill, name, n, FILE_IOV_MAX);
    return spill_write(b, name, iov, n);
}

/* load straight into the segments place() hands out for the file's length:
 * no intermediate buffer. */
/* load_into from the directory dirfd (the spill area, or a location:
 * dirpath names it in messages). */
static int load_into_at(int dirfd, const char *dirpath, const fbk_key *key, size_t hint,
                        fbk_place_fn place, void *arg)
{
    char name[FILE_NAME_LEN];
    fbk__file_key_name(key, name);
    int fd = io_()->openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOATIME, 0);
    if (fd < 0 && errno == EPERM) /* O_NOATIME needs the file's owner */
        fd = io_()->openat(dirfd, name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return fail(errno, "load", dirpath, name);
    /* With the core's hint (the length it stored) no fstat is needed: one
     * byte more is asked for, so a file longer than the hint shows too. */
    size_t len = hint;
    if (len == 0) {
        struct stat st;
        if (io_()->fstat(fd, &st) != 0) {
            int e = errno;
            io_()->close(fd);
            return fail(e, "stat", dirpath, name);
        }
        len = (size_t)st.st_size;
    }
    struct iovec iov[FBK_PLACE_MAX + 1];
    int n = 0;
    int rc = place(len, iov, &n, arg);
    if (rc != FBK_OK) {
        io_()->close(fd);
        return rc;
    }
    size_t sum = 0;
    int bad = n < 0 || n > FBK_PLACE_MAX;
    for (int i = 0; i < n && !bad; i++) {
        bad = iov[i].iov_len > len - sum || (iov[i].iov_len > 0 && !iov[i].iov_base);
        sum += bad ? 0 : iov[i].iov_len;
    }
    if (bad || sum != len) {
        io_()->close(fd);
        return fbk_error_set(FBK_EINVAL, 0,
                             "file: load %s/%s: place() gave %d segments that do not hold "
                             "exactly the %zu bytes stored",
                             dirpath, name, n, len);
    }
    unsigned char probe;
    if (hint)
        iov[n++] = (struct iovec){&probe, 1};
    size_t got = 0;
    int ok = fbk__file_preadv_all(fd, iov, n, hint ? 1 : 0, &got) == 0;
    int e = errno;
    io_()->close(fd);
    if (!ok)
        return fail(e, "read", dirpath, name);
    if (got < len)
        return fbk_error_set(FBK_ECORRUPT, 0,
                             "file: load %s/%s: the file ended after %zu of its %zu bytes "
                             "(shortened while it was read)",
                             dirpath, name, got, len);
    if (got > len)
        return fbk_error_set(FBK_ECORRUPT, 0,
                             "file: load %s/%s: the file is longer than the %zu bytes stored",
                             dirpath, name, len);
    return FBK_OK;
}

int fbk__file_load_into(void *self, const fbk_key *key, size_t hint, fbk_place_fn place, void *arg)
{
    file_backend *b = self;
    return load_into_at(b->spillfd, b->spill, key, hint, place, arg);
}

/* load: load_into a reused buffer (pread, not mmap: on the machine
 * measured, docs/file-backend.md, mapping a 1 MiB value cost 3.7x a pread of
 * it, and a mapping would turn a file truncated under us into SIGBUS), then
 * read() from it. */
typedef struct buf_place {
    file_backend *b;
    const char *name;
    void *buf;
    size_t cap, len;
} buf_place;

static int place_in_buf(size_t len, struct iovec *iov, int *n, void *arg)
{
    buf_place *p = arg;
    p->buf = fbk__file_buf_get(p->b, len, &p->cap);
    if (!p->buf)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "file: load %s/%s: cannot allocate %zu bytes",
                             p->b->spill, p->name, len);
    p->len = len;
    iov[0] = (struct iovec){p->buf, len};
    *n = 1;
    return FBK_OK;
}

/* load from dirfd into a reused buffer, then read() from it */
int fbk__file_load_buffered(file_backend *b, int dirfd, const char *dirpath, const fbk_key *key,
                            fbk_read_fn read, void *arg)
{
    char name[FILE_NAME_LEN];
    fbk__file_key_name(key, name);
    buf_place p = {.b = b, .name = name};
    int rc = load_into_at(dirfd, dirpath, key, 0, place_in_buf, &p);
    if (rc == FBK_OK)
        rc = read(p.buf, p.len, arg);
    fbk__file_buf_put(b, p.buf, p.cap);
    return rc;
}

int fbk__file_load(void *self, const fbk_key *key, fbk_read_fn read, void *arg)
{
    file_backend *b = self;
    return fbk__file_load_buffered(b, b->spillfd, b->spill, key, read, arg);
}

int fbk__file_remove(void *self, const fbk_key *key)
{
    file_backend *b = self;
    char name[FILE_NAME_LEN];
    fbk__file_key_name(key, name);
    if (io_()->unlinkat(b->spillfd, name, 0) != 0)
        return fail(errno, "remove", b->spill, name);
    return FBK_OK;
}
