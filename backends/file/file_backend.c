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
 */
#include "file_io.h"
#include "file_names.h"

#include "fbk_backend.h"

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

#define FILE_SHARDS 256
/* A sync touching at most this many files and shard directories fsyncs each
 * of them; a bigger one calls syncfs() once (see docs/file-backend.md for the
 * measurements behind the number). */
#define FILE_FSYNC_MAX 4
/* Write buffers kept for reuse, and the biggest one kept. */
#define FILE_BUF_CACHE 8
/* location directories remembered as failed (see file_backend.failed) */
#define FILE_FAILED_MAX 64
#define FILE_BUF_KEEP_MAX ((size_t)32 << 20)
/* "ab/" + 32 hex + NUL */
#define FILE_NAME_LEN 36
/* "ab/.tmp-" + 32 hex + "-" + 16 hex owner + "-" + 16 hex + NUL */
#define FILE_TMP_LEN 80
#define FILE_TMP_PREFIX ".tmp-"
/* A store's spill id: 16 lowercase hex digits */
#define FILE_ID_LEN 16
/* "spill-" + id + ".lock" + NUL */
#define FILE_SPILL_NAME_LEN 32
#define FILE_SPILL_PREFIX "spill-"
#define FILE_LOCK_SUFFIX ".lock"
/* The file that marks a directory as a libfbk location (docs/file-backend.md) */
#define FILE_MARKER ".fbk-location"
/* store_iov takes at most this many segments (fbk_backend.h) */
#define FILE_IOV_MAX 4

typedef struct file_buf {
    void *p;
    size_t cap;
} file_buf;

typedef struct file_backend {
    char *dir;                /* as given, for messages */
    char *spill;              /* DIR/spill-<id> (or the private directory), for messages */
    char *canon;              /* realpath(DIR): locations are checked against it */
    int readonly;             /* FBK_STORE_READONLY: nothing in DIR is made or removed */
    char id[FILE_ID_LEN + 1]; /* this store's spill id */
    char spill_name[FILE_SPILL_NAME_LEN]; /* "spill-<id>" (or "fbk-ro-<id>") */
    char owner_name[FILE_SPILL_NAME_LEN]; /* "spill-<id>.lock" */
    int rootfd;
    int lockfd;     /* DIR/LOCK, flock(LOCK_SH); -1 for a read-only DIR without one */
    int ownerfd;    /* DIR/spill-<id>.lock, flock(LOCK_EX); -1 when read-only */
    int spill_at;   /* the directory holding spill_name: rootfd, or the temporary one */
    int spill_made; /* spill_name was made by this store: removed at close */
    int spillfd;
    dev_t spill_dev;
    atomic_uint_fast64_t tmp_seq;

    pthread_mutex_t buf_mu;
    file_buf bufs[FILE_BUF_CACHE];
    size_t nbufs;

    /* Writeback errors on the spill area's file system, observed through
     * syncfs(spillfd) (whose error sample dates from the store's open, so it
     * sees errors on spill files written before a location was opened).  A
     * failure is final: spill files hard-linked into a location may have lost
     * pages, and a retried syncfs would report success. */
    pthread_mutex_t spill_sync_mu;
    int spill_err;
    int spill_errno;

    /* Location directories whose sync failed in this store, so that a
     * reopened fbk_location of the same directory stays failed (its keys'
     * pages may be gone, and a retried flush would report success).  Past
     * FILE_FAILED_MAX entries every location counts as failed. */
    pthread_mutex_t failed_mu;
    struct {
        dev_t dev;
        ino_t ino;
        int err, os_errno;
    } failed[FILE_FAILED_MAX];
    size_t nfailed;
    int failed_overflow;
} file_backend;

typedef struct file_loc {
    char *path; /* for messages: absolute, or DIR/location */
    int fd;
    dev_t dev;
    ino_t ino;
    atomic_int cross; /* EXDEV seen: copy instead of linking */

    pthread_mutex_t mu; /* guards what is not yet durable */
    uint64_t dirty_shards[FILE_SHARDS / 64];
    int root_dirty;
    size_t nfiles;
    fbk_key files[FILE_FSYNC_MAX];

    pthread_mutex_t sync_mu; /* one sync at a time; taken before mu */
    /* The first sync after open makes the whole location durable (syncfs):
     * scan reported keys that an earlier process -- or an earlier handle
     * whose sync failed -- linked but never made durable, and the core
     * trusts them (fbk_save persists no key the location holds), so a
     * commit after a sync that only covered this handle's own persists
     * could name values a power cut loses.  0 when scan found no key. */
    int need_full;
    size_t foreign; /* entries the last scan left alone (not libfbk's) */
    int sticky;
    int sticky_errno;
    char sticky_msg[400];
} file_loc;

static const fbk__file_io *io_(void) { return fbk__file_io_get(); }

int fbk__file_skip_dir_fsync = 0;

/* ------------------------------------------------------------- helpers */

static void key_name(const fbk_key *key, char out[FILE_NAME_LEN])
{
    char hex[33];
    fbk_key_format_hex(key, hex);
    out[0] = hex[0];
    out[1] = hex[1];
    out[2] = '/';
    memcpy(out + 3, hex, 33);
}

static int shard_index(const char *name)
{
    static const char digits[] = "0123456789abcdef";
    const char *hi = strchr(digits, name[0]), *lo = strchr(digits, name[1]);
    if (name[0] == '\0' || name[1] == '\0' || !hi || !lo)
        return -1;
    return (int)((hi - digits) << 4 | (lo - digits));
}

/* "ab/.tmp-<32 hex key>-<16 hex spill id>-<16 hex sequence>": the spill id
 * names the store the temporary belongs to, so that another store's scan
 * leaves it alone while that store lives (owner_alive). */
static void tmp_name(file_backend *b, const char *name, char out[FILE_TMP_LEN])
{
    uint64_t seq = atomic_fetch_add(&b->tmp_seq, 1);
    snprintf(out, FILE_TMP_LEN, "%.2s/" FILE_TMP_PREFIX "%s-%s-%016llx", name, name + 3, b->id,
             (unsigned long long)seq);
}

static int is_hex_run(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return 1;
}

/* 1 if n is "spill-<16 hex>" followed by exactly `suffix` ("" for a spill
 * area, FILE_LOCK_SUFFIX for its lock file); id (may be NULL) receives the
 * 16 hex digits. */
static int is_spill_name(const char *n, const char *suffix, char id[FILE_ID_LEN + 1])
{
    const size_t pl = sizeof FILE_SPILL_PREFIX - 1;
    if (strncmp(n, FILE_SPILL_PREFIX, pl) != 0 || strlen(n) != pl + FILE_ID_LEN + strlen(suffix) ||
        !is_hex_run(n + pl, FILE_ID_LEN) || strcmp(n + pl + FILE_ID_LEN, suffix) != 0)
        return 0;
    if (id) {
        memcpy(id, n + pl, FILE_ID_LEN);
        id[FILE_ID_LEN] = '\0';
    }
    return 1;
}

/* A fresh random spill id (from the key generator: getrandom). */
static void new_id(char id[FILE_ID_LEN + 1])
{
    fbk_key k;
    fbk_key_generate(&k);
    for (int i = 0; i < 8; i++)
        snprintf(id + 2 * i, 3, "%02x", (unsigned)(k.bytes[i] ^ k.bytes[i + 8]));
}

/* An error with errno e and a message naming a path under base. */
static int fail(int e, const char *what, const char *base, const char *name)
{
    if (name)
        return fbk_error_from_errno(e, "file: %s %s/%s", what, base, name);
    return fbk_error_from_errno(e, "file: %s %s", what, base);
}

static int close_keep_errno(int fd)
{
    int e = errno;
    io_()->close(fd);
    errno = e;
    return -1;
}

/* fdopendir(fd); when that fails, fd is closed and errno kept. */
static DIR *dir_of(int fd)
{
    DIR *d = io_()->fdopendir(fd);
    if (!d)
        close_keep_errno(fd);
    return d;
}

/* Moves the segments cur[0..*cnt) past `done` bytes just transferred. */
static void iov_advance(struct iovec **cur, int *cnt, size_t done)
{
    while (*cnt > 0 && done >= (*cur)->iov_len) {
        done -= (*cur)->iov_len;
        (*cur)++;
        (*cnt)--;
    }
    if (*cnt > 0) {
        (*cur)->iov_base = (char *)(*cur)->iov_base + done;
        (*cur)->iov_len -= done;
    }
}

/* Whether to use the table's writev (preadv): not when it has none, nor
 * when it hooks write (pread) but leaves writev (preadv) the POSIX one -- a
 * table written before these existed, by copying fbk__file_io_posix and
 * replacing some calls: its hook must still see every byte (file_io.h). */
static int use_writev(const fbk__file_io *io)
{
    return io->writev &&
           (io->writev != fbk__file_io_posix.writev || io->write == fbk__file_io_posix.write);
}

static int use_preadv(const fbk__file_io *io)
{
    return io->preadv &&
           (io->preadv != fbk__file_io_posix.preadv || io->pread == fbk__file_io_posix.pread);
}

/* Writes iov[0..n) (n <= FILE_IOV_MAX) completely: writev, resumed after a
 * partial write or EINTR; plain writes for a single buffer (n == 1), or when
 * use_writev() says so.  0, or -1 with errno. */
static int writev_all(int fd, const struct iovec *iov, int n)
{
    struct iovec v[FILE_IOV_MAX], *cur = v;
    int cnt = 0;
    for (int i = 0; i < n; i++)
        if (iov[i].iov_len > 0)
            v[cnt++] = iov[i];
    while (cnt > 0) {
        const fbk__file_io *io = io_();
        ssize_t w = n > 1 && use_writev(io) ? io->writev(fd, cur, cnt)
                                            : io->write(fd, cur->iov_base, cur->iov_len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        iov_advance(&cur, &cnt, (size_t)w);
    }
    return 0;
}

/* Reads bytes [0, sum of iov_len) of fd into iov[0..n) (n <= FBK_PLACE_MAX + 1):
 * preadv, resumed after a partial read or EINTR, until done or end of file;
 * *got is how many bytes arrived.  Plain preads for a single buffer (n == 1),
 * or when use_preadv() says so.  0, or -1 with errno.
 * probe: the last segment is a probe of that many bytes past the value's
 * end, read only to see whether the file goes on.  A preadv that asked for
 * it and stopped right before it has met the end of the (regular) file, so
 * no further read is spent to hear that again: that is one system call of
 * the two a load used to make.  (A file system that returns short reads
 * mid-file could hide bytes past the end; the value's own bytes are all read
 * and checked by the core either way.) */
static int preadv_all(int fd, const struct iovec *iov, int n, size_t probe, size_t *got)
{
    struct iovec v[FBK_PLACE_MAX + 1], *cur = v;
    int cnt = 0;
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (iov[i].iov_len > 0) {
            v[cnt++] = iov[i];
            total += iov[i].iov_len;
        }
    size_t off = 0;
    *got = 0;
    while (cnt > 0) {
        const fbk__file_io *io = io_();
        int vec = n > 1 && use_preadv(io);
        ssize_t r = vec ? io->preadv(fd, cur, cnt, (off_t)off)
                        : io->pread(fd, cur->iov_base, cur->iov_len, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break; /* end of file */
        off += (size_t)r;
        *got = off;
        iov_advance(&cur, &cnt, (size_t)r);
        if (vec && probe && off == total - probe)
            break; /* asked for the probe, got none of it: end of file */
    }
    return 0;
}

/* mkdirat that is happy when the directory exists. */
static int mkdir_ok(int at, const char *path)
{
    if (io_()->mkdirat(at, path, 0755) == 0 || errno == EEXIST)
        return 0;
    return -1;
}

static int fsync_dir_at(int at, const char *path)
{
    int fd = io_()->openat(at, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (io_()->fsync(fd) != 0)
        return close_keep_errno(fd);
    return io_()->close(fd);
}

/* mkdir -p path (relative to dirfd unless absolute); every directory it
 * creates is made durable in its parent at once (this happens only when a
 * store or location is first created). */
static int mkdir_p(int at, const char *path, const char *what)
{
    size_t n = strlen(path);
    char *tmp = malloc(n + 1);
    if (!tmp)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "file: %s %s: out of memory", what, path);
    memcpy(tmp, path, n + 1);
    int rc = FBK_OK;
    for (size_t i = 1; i <= n && rc == FBK_OK; i++) {
        if (tmp[i] != '/' && tmp[i] != '\0')
            continue;
        if (tmp[i - 1] == '/')
            continue;
        char c = tmp[i];
        tmp[i] = '\0';
        if (io_()->mkdirat(at, tmp, 0755) == 0) {
            /* durable in its parent */
            char *slash = strrchr(tmp, '/');
            int r;
            if (!slash) {
                r = at == AT_FDCWD ? fsync_dir_at(AT_FDCWD, ".") : io_()->fsync(at);
            } else if (slash == tmp) {
                r = fsync_dir_at(at, "/");
            } else {
                *slash = '\0';
                r = fsync_dir_at(at, tmp);
                *slash = '/';
            }
            if (r != 0)
                rc = fail(errno, what, tmp, NULL);
        } else if (errno != EEXIST) {
            rc = fail(errno, what, tmp, NULL);
        }
        tmp[i] = c;
    }
    free(tmp);
    return rc;
}

/* --------------------------------------------------------- buffer cache */

static void *buf_get(file_backend *b, size_t len, size_t *cap)
{
    size_t want = len ? len : 1;
    void *p = NULL;
    pthread_mutex_lock(&b->buf_mu);
    for (size_t i = 0; i < b->nbufs; i++) {
        if (b->bufs[i].cap >= want) {
            p = b->bufs[i].p;
            *cap = b->bufs[i].cap;
            b->bufs[i] = b->bufs[--b->nbufs];
            break;
        }
    }
    pthread_mutex_unlock(&b->buf_mu);
    if (p)
        return p;
    p = malloc(want);
    *cap = want;
    return p;
}

static void buf_put(file_backend *b, void *p, size_t cap)
{
    if (!p)
        return;
    if (cap <= FILE_BUF_KEEP_MAX) {
        pthread_mutex_lock(&b->buf_mu);
        if (b->nbufs < FILE_BUF_CACHE) {
            b->bufs[b->nbufs].p = p;
            b->bufs[b->nbufs].cap = cap;
            b->nbufs++;
            p = NULL;
        } else {
            /* replace the smallest cached buffer if this one is bigger */
            size_t small = 0;
            for (size_t i = 1; i < b->nbufs; i++)
                if (b->bufs[i].cap < b->bufs[small].cap)
                    small = i;
            if (b->bufs[small].cap < cap) {
                void *old = b->bufs[small].p;
                b->bufs[small].p = p;
                b->bufs[small].cap = cap;
                p = old;
            }
        }
        pthread_mutex_unlock(&b->buf_mu);
    }
    free(p);
}

/* ------------------------------------------------------ file primitives */

/* Removes dirfd/name whatever it is (a directory recursively).  0 or -1. */
static int remove_tree_at(int at, const char *name, int depth)
{
    if (io_()->unlinkat(at, name, 0) == 0 || errno == ENOENT)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return -1;
    if (depth > 32) {
        errno = ELOOP;
        return -1;
    }
    int fd = io_()->openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    DIR *d = dir_of(fd);
    if (!d)
        return -1;
    struct dirent *de;
    int rc = 0;
    errno = 0;
    while ((de = io_()->readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (remove_tree_at(dirfd(d), de->d_name, depth + 1) != 0)
            rc = -1;
        errno = 0;
    }
    int e = errno;
    io_()->closedir(d);
    if (e) {
        errno = e;
        return -1;
    }
    if (rc != 0)
        return -1;
    return io_()->unlinkat(at, name, AT_REMOVEDIR) == 0 || errno == ENOENT ? 0 : -1;
}

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
    void *buf = buf_get(b, chunk, &cap);
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
        if (writev_all(out, &(struct iovec){buf, (size_t)n}, 1) != 0) {
            rc = -1;
            break;
        }
        done += n;
    }
    int e = errno;
    buf_put(b, buf, cap);
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
    tmp_name(b, name, tmp);
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
        if (mkdir_ok(b->spillfd, shard) == 0)
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
    int ok = writev_all(fd, iov, n) == 0;
    return spill_finish(b, name, fd, ok, "write", errno);
}

/* ------------------------------------------------------------ spill ops */

static int file_store(void *self, const fbk_key *key, size_t len, fbk_fill_fn fill, void *arg)
{
    file_backend *b = self;
    char name[FILE_NAME_LEN];
    key_name(key, name);
    size_t cap;
    void *buf = buf_get(b, len, &cap);
    if (!buf)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "file: store %s/%s: cannot allocate %zu bytes",
                             b->spill, name, len);
    int rc = fill(buf, len, arg);
    if (rc == FBK_OK)
        rc = spill_write(b, name, &(struct iovec){buf, len}, 1);
    buf_put(b, buf, cap);
    return rc;
}

/* store with the value already in memory as iov[0..n) (the frame header,
 * then the object's own bytes): written as they are, with no copy. */
static int file_store_iov(void *self, const fbk_key *key, const struct iovec *iov, int n)
{
    file_backend *b = self;
    char name[FILE_NAME_LEN];
    key_name(key, name);
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
    key_name(key, name);
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
    int ok = preadv_all(fd, iov, n, hint ? 1 : 0, &got) == 0;
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

static int file_load_into(void *self, const fbk_key *key, size_t hint, fbk_place_fn place,
                          void *arg)
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
    p->buf = buf_get(p->b, len, &p->cap);
    if (!p->buf)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "file: load %s/%s: cannot allocate %zu bytes",
                             p->b->spill, p->name, len);
    p->len = len;
    iov[0] = (struct iovec){p->buf, len};
    *n = 1;
    return FBK_OK;
}

/* load from dirfd into a reused buffer, then read() from it */
static int load_buffered(file_backend *b, int dirfd, const char *dirpath, const fbk_key *key,
                         fbk_read_fn read, void *arg)
{
    char name[FILE_NAME_LEN];
    key_name(key, name);
    buf_place p = {.b = b, .name = name};
    int rc = load_into_at(dirfd, dirpath, key, 0, place_in_buf, &p);
    if (rc == FBK_OK)
        rc = read(p.buf, p.len, arg);
    buf_put(b, p.buf, p.cap);
    return rc;
}

static int file_load(void *self, const fbk_key *key, fbk_read_fn read, void *arg)
{
    file_backend *b = self;
    return load_buffered(b, b->spillfd, b->spill, key, read, arg);
}

static int file_remove(void *self, const fbk_key *key)
{
    file_backend *b = self;
    char name[FILE_NAME_LEN];
    key_name(key, name);
    if (io_()->unlinkat(b->spillfd, name, 0) != 0)
        return fail(errno, "remove", b->spill, name);
    return FBK_OK;
}

/* -------------------------------------------------------------- locations */

static void loc_touch(file_loc *l, const char *name, int file, const fbk_key *key, int made_shard)
{
    int shard = shard_index(name);
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
static void loc_fail(file_backend *b, file_loc *l, int rc)
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
    DIR *d = dir_of(fd);
    if (!d)
        return fail(errno, "list location", l->path, NULL);
    struct dirent *de;
    errno = 0;
    while ((de = io_()->readdir(d)) != NULL) {
        /* any entry by a shard's name counts: a file there is scan's to
         * remove, and persist then makes the shard */
        int i = strlen(de->d_name) == 2 ? shard_index(de->d_name) : -1;
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
    loc_fail(b, l,
             fbk_error_from_errno(e, "file: fsync %s (the shard directories, at open)", l->path));
    return FBK_OK;
}

/* ------------------------------------------------- what a location may be */

/* 1 if n is "<32 lowercase hex>" beginning with the shard's two digits. */
static int is_key_name(const char *n, const char *shard, fbk_key *key)
{
    if (strlen(n) != 32 || n[0] != shard[0] || n[1] != shard[1])
        return 0;
    for (int i = 0; i < 32; i++)
        if (!((n[i] >= '0' && n[i] <= '9') || (n[i] >= 'a' && n[i] <= 'f')))
            return 0;
    return fbk_key_parse(n, key) == FBK_OK;
}

/* 1 if n is a name tmp_name() makes for a key of this shard, all lowercase:
 * ".tmp-<32 hex key>-<16 hex owner>-<16 hex>" (owner, if not NULL, receives
 * the owner's spill id), or the ".tmp-<32 hex key>-<16 hex>" of versions
 * before sharing (owner receives "": its store is gone). */
static int is_tmp_name(const char *n, const char *shard, char owner[FILE_ID_LEN + 1])
{
    const size_t pl = sizeof FILE_TMP_PREFIX - 1;
    size_t len = strlen(n);
    int old = len == pl + 32 + 1 + 16;
    if (!(old || len == pl + 32 + 1 + FILE_ID_LEN + 1 + 16) ||
        strncmp(n, FILE_TMP_PREFIX, pl) != 0 || n[pl + 32] != '-' ||
        (!old && n[pl + 33 + FILE_ID_LEN] != '-'))
        return 0;
    char hex[33];
    memcpy(hex, n + pl, 32);
    hex[32] = '\0';
    fbk_key key;
    if (!is_key_name(hex, shard, &key))
        return 0;
    const char *rest = n + pl + 33;
    if (old ? !is_hex_run(rest, 16)
            : !is_hex_run(rest, FILE_ID_LEN) || !is_hex_run(rest + FILE_ID_LEN + 1, 16))
        return 0;
    if (owner) {
        memcpy(owner, rest, old ? 0 : FILE_ID_LEN);
        owner[old ? 0 : FILE_ID_LEN] = '\0';
    }
    return 1;
}

/* Whether the store with spill id `id` is open (in any process): its lock
 * file DIR/spill-<id>.lock exists and cannot be flocked.  A missing lock
 * file means dead (or a store of another directory: docs/file-backend.md);
 * an error other than ENOENT counts as alive (nothing is deleted on a
 * doubt).  The probe takes LOCK_SH, so two probes, or a probe and the
 * cleanup at another store's open, do not mistake each other for owners
 * for longer than the probe lasts. */
static int owner_alive(file_backend *b, const char *id)
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

/* owner_alive for file_names.c */
static int owner_alive_cb(void *arg, const char *id) { return owner_alive(arg, id); }

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
    struct stat self;
    if (io_()->fstat(l->fd, &self) == 0 &&
        io_()->fstatat(l->fd, "../LOCK", &st, AT_SYMLINK_NOFOLLOW) == 0) {
        /* which name of the parent is this directory? */
        int pfd = io_()->openat(l->fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        DIR *pd = pfd >= 0 ? dir_of(pfd) : NULL;
        int spill = 0;
        struct dirent *pe;
        while (pd && !spill && (pe = io_()->readdir(pd)) != NULL) {
            struct stat ps;
            if ((strcmp(pe->d_name, "spill") == 0 || is_spill_name(pe->d_name, "", NULL)) &&
                io_()->fstatat(dirfd(pd), pe->d_name, &ps, AT_SYMLINK_NOFOLLOW) == 0 &&
                ps.st_dev == self.st_dev && ps.st_ino == self.st_ino)
                spill = 1;
        }
        if (pd)
            io_()->closedir(pd);
        if (spill) {
            snprintf(why, cap, "it looks like the spill area of a file: store (../LOCK exists)");
            return LOC_FOREIGN;
        }
    }
    int fd = io_()->openat(l->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0)
        return fail(errno, "open location", l->path, NULL);
    DIR *d = dir_of(fd);
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
        if (strlen(n) != 2 || shard_index(n) < 0) {
            if (!other[0])
                snprintf(other, sizeof other, "%s", n);
            errno = 0;
            continue;
        }
        int sfd = io_()->openat(dirfd(d), n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
        if (sfd < 0) {
            if (errno != ENOTDIR && errno != ELOOP) {
                rc = fail(errno, "open", l->path, n);
                break;
            }
            snprintf(why, cap, "%s is not a shard directory", n);
            foreign = 1;
            break;
        }
        DIR *sd = dir_of(sfd);
        if (!sd) {
            rc = fail(errno, "list", l->path, n);
            break;
        }
        shards++;
        struct dirent *se;
        errno = 0;
        while ((se = io_()->readdir(sd)) != NULL) {
            const char *sn = se->d_name;
            fbk_key key;
            if (strcmp(sn, ".") == 0 || strcmp(sn, "..") == 0)
                continue;
            if (!(is_key_name(sn, n, &key) || is_tmp_name(sn, n, NULL)) ||
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
    int ok = writev_all(fd, &(struct iovec){(void *)text, sizeof text - 1}, 1) == 0 &&
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

static int file_open_location(void *self, const char *location, void **out)
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

static void file_close_location(void *self, void *loc)
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

static int file_scan(void *self, void *loc, fbk_key_fn each, void *arg)
{
    file_backend *b = self;
    file_loc *l = loc;
    char owner[FILE_ID_LEN + 1];
    long junk = 0, keys = 0;
    size_t foreign = 0;
    for (int i = 0; i < FILE_SHARDS; i++) {
        char shard[3];
        snprintf(shard, sizeof shard, "%02x", i);
        int fd = io_()->openat(l->fd, shard, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
        if (fd < 0) {
            if (errno == ENOENT)
                continue; /* made on first persist (read-only at open) */
            if (errno == ENOTDIR || errno == ELOOP) {
                /* our name, not our kind of entry: not libfbk's, left alone
                 * (a persist into this shard then fails: "Not a directory") */
                foreign++;
                continue;
            }
            return fail(errno, "open", l->path, shard);
        }
        DIR *d = dir_of(fd);
        if (!d)
            return fail(errno, "list", l->path, shard);
        struct dirent *de;
        errno = 0;
        while ((de = io_()->readdir(d)) != NULL) {
            const char *n = de->d_name;
            if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0)
                continue;
            fbk_key key;
            int is_key = is_key_name(n, shard, &key);
            if (is_key && de->d_type != DT_REG) {
                struct stat st;
                is_key = (de->d_type == DT_UNKNOWN &&
                          io_()->fstatat(dirfd(d), n, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                          S_ISREG(st.st_mode));
            }
            if (is_key) {
                keys++;
                int rc = each(&key, arg);
                if (rc != 0) {
                    io_()->closedir(d);
                    return rc;
                }
            } else if (is_tmp_name(n, shard, owner) && is_regular(dirfd(d), de)) {
                /* libfbk's temporary: junk left by a crash when its store
                 * is gone, else another store's persist in flight (left
                 * alone).  A read-only store deletes nothing.  A failed
                 * removal (read-only location) is not an error: the entry
                 * is still not a key. */
                if (!b->readonly && !(owner[0] && owner_alive(b, owner)) &&
                    io_()->unlinkat(dirfd(d), n, 0) == 0)
                    junk++;
            } else {
                /* not made by libfbk (a user's file, a key in the wrong
                 * shard, a directory or symlink under a key name...): left
                 * alone, and counted (fbk_location_foreign_entries) */
                foreign++;
            }
            errno = 0;
        }
        int e = errno;
        io_()->closedir(d);
        if (e)
            return fail(e, "list", l->path, shard);
    }
    pthread_mutex_lock(&l->sync_mu);
    if (keys == 0)
        l->need_full = 0; /* nothing to make durable but what comes */
    l->foreign = foreign;
    pthread_mutex_unlock(&l->sync_mu);
    return junk > INT_MAX ? INT_MAX : (int)junk;
}

/* Replaces the existing dst/name by a link to src/name, atomically: link
 * to a temporary name, rename it over.  (rename() does nothing when both
 * names are links to one file -- persisted twice -- so the temporary may
 * remain: it is removed either way.) */
static int replace_link(file_backend *b, int src, const char *sbase, int dst, const char *dbase,
                        const char *name, const char *op)
{
    char tmp[FILE_TMP_LEN];
    tmp_name(b, name, tmp);
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
    key_name(key, name);
    int src = to_loc ? b->spillfd : l->fd, dst = to_loc ? l->fd : b->spillfd;
    const char *sbase = to_loc ? b->spill : l->path, *dbase = to_loc ? l->path : b->spill;
    const char *op = to_loc ? "persist" : "register";
    int made_shard = 0;
    if (!atomic_load_explicit(&l->cross, memory_order_relaxed)) {
        for (int attempt = 0;; attempt++) {
            if (io_()->linkat(src, name, dst, name, 0) == 0) {
                if (to_loc)
                    loc_touch(l, name, 1, key, made_shard);
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
                    loc_touch(l, name, 1, key, made_shard);
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
        loc_touch(l, name, 0, key, made_shard);
    return rc;
}

static size_t file_scan_foreign(void *self, void *loc)
{
    (void)self;
    file_loc *l = loc;
    pthread_mutex_lock(&l->sync_mu);
    size_t n = l->foreign;
    pthread_mutex_unlock(&l->sync_mu);
    return n;
}

/* FBK_EREADONLY for a change asked of a read-only store (the core refuses
 * them before; this guards a caller of the table itself). */
static int refuse_readonly(file_backend *b, const char *what)
{
    return fbk_error_set(FBK_EREADONLY, 0, "file: %s in %s: the store was opened read-only", what,
                         b->dir);
}

static int file_persist(void *self, void *loc, const fbk_key *key)
{
    if (((file_backend *)self)->readonly)
        return refuse_readonly(self, "persist");
    return transfer(self, loc, key, 1);
}

static int file_register_key(void *self, void *loc, const fbk_key *key)
{
    return transfer(self, loc, key, 0);
}

static int file_remove_persisted(void *self, void *loc, const fbk_key *key)
{
    if (((file_backend *)self)->readonly)
        return refuse_readonly(self, "remove");
    file_loc *l = loc;
    char name[FILE_NAME_LEN];
    key_name(key, name);
    if (io_()->unlinkat(l->fd, name, 0) != 0)
        return fail(errno, "remove", l->path, name);
    loc_touch(l, name, 0, key, 0);
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

static int file_sync(void *self, void *loc)
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
        /* a few entries: fsync each file (its data: spill files are written
         * without fsync), then each directory holding a new or removed entry */
        for (size_t i = 0; i < nfiles && rc == FBK_OK; i++) {
            char name[FILE_NAME_LEN];
            key_name(&files[i], name);
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
            if (fsync_dir_at(l->fd, shard) != 0)
                rc = fail(errno, "fsync", l->path, shard);
        }
        if (rc == FBK_OK && root && io_()->fsync(l->fd) != 0)
            rc = fail(errno, "fsync", l->path, NULL);
    } else if (l->dev == b->spill_dev) {
        /* many entries: one syncfs writes the files and the directories */
        rc = spill_syncfs(b);
    } else if (io_()->syncfs(l->fd) != 0) {
        rc = fail(errno, "syncfs", l->path, NULL);
    }
    if (rc == FBK_OK)
        l->need_full = 0;
    else
        loc_fail(b, l, rc);
    pthread_mutex_unlock(&l->sync_mu);
    return rc;
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
    file_backend *b = self;
    file_loc *l = loc;
    /* a writer's listing also removes dead stores' temporaries */
    return fbk__file_name_scan(l->fd, l->path, each, arg, b->readonly ? NULL : owner_alive_cb, b);
}

static int file_name_apply(void *self, void *loc, const fbk_name_op *ops, size_t n)
{
    if (((file_backend *)self)->readonly)
        return refuse_readonly(self, "bind names");
    file_loc *l = loc;
    /* the bound objects first: no binding may be durable before them */
    int rc = file_sync(self, loc);
    if (rc == FBK_OK)
        rc = fbk__file_name_apply(l->fd, l->path, ((file_backend *)self)->id, ops, n);
    return rc;
}

/* A location's file read in place (lazy register, backend table v4): a
 * register then makes no link into the spill area. */
static int file_load_persisted(void *self, void *loc, const fbk_key *key, fbk_read_fn read,
                               void *arg)
{
    file_loc *l = loc;
    return load_buffered(self, l->fd, l->path, key, read, arg);
}

static int file_contains(void *self, void *loc, const fbk_key *key)
{
    (void)self;
    file_loc *l = loc;
    char name[FILE_NAME_LEN];
    key_name(key, name);
    struct stat st;
    if (io_()->fstatat(l->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return 1;
    return errno == ENOENT ? 0 : fail(errno, "stat", l->path, name);
}

/* ---------------------------------------------------------------- store */

/* Spill areas (docs/file-backend.md, "Sharing").  Each store owns
 * DIR/spill-<id> through DIR/spill-<id>.lock, which it creates (O_EXCL) and
 * flocks exclusively for its whole life; a writer's open removes the areas
 * whose owner is gone. */

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
    DIR *d = dir_of(fd);
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
                remove_tree_at(b->rootfd, n, 0);
        } else if (is_spill_name(n, "", id)) {
            struct stat st;
            snprintf(name, sizeof name, FILE_SPILL_PREFIX "%s" FILE_LOCK_SUFFIX, id);
            if (strcmp(id, b->id) == 0 ||
                io_()->fstatat(b->rootfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT)
                continue; /* owned: judged by its lock file */
            if (spill_is_marked(b->rootfd, n))
                rc = refuse_marked(b, n);
            else
                remove_tree_at(b->rootfd, n, 0);
        } else if (is_spill_name(n, FILE_LOCK_SUFFIX, id) && strcmp(id, b->id) != 0) {
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
                else if (remove_tree_at(b->rootfd, name, 0) == 0)
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
        new_id(b->id);
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
        new_id(b->id);
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

static void file_close(void *self)
{
    file_backend *b = self;
    if (!b)
        return;
    if (b->spillfd >= 0)
        io_()->close(b->spillfd);
    /* best effort: a spill area left behind is removed by a later open */
    if (b->spill_made)
        remove_tree_at(b->spill_at, b->spill_name, 0);
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
    .store = file_store,
    .load = file_load,
    .remove = file_remove,
    .open_location = file_open_location,
    .close_location = file_close_location,
    .scan = file_scan,
    .persist = file_persist,
    .register_key = file_register_key,
    .remove_persisted = file_remove_persisted,
    .sync = file_sync,
    .close = file_close,
    .persist_many = NULL,
    .register_many = NULL,
    .store_many = NULL,
    .store_iov = file_store_iov,
    .load_into = file_load_into,
    /* writes of different files overlap: two workers put 16 KiB objects at
     * 0.94-1.05x of plain files against 1.36-1.47x with one
     * (bench/bench_file.c, docs/file-backend.md) */
    .workers = 2,
    .name_get = file_name_get,
    .name_scan = file_name_scan,
    .name_apply = file_name_apply,
    .contains = file_contains,
    .load_persisted = file_load_persisted,
    .scan_foreign = file_scan_foreign,
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
     * without one was never opened for writing. */
    if (rc == FBK_OK) {
        b->lockfd = b->readonly
                        ? io_()->openat(b->rootfd, "LOCK", O_RDONLY | O_CLOEXEC, 0)
                        : io_()->openat(b->rootfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (b->lockfd < 0 && !(b->readonly && errno == ENOENT))
            rc = fail(errno, b->readonly ? "open" : "create", dir, "LOCK");
    }
    if (rc == FBK_OK && b->lockfd >= 0) {
        int r;
        while ((r = io_()->flock(b->lockfd, LOCK_SH | LOCK_NB)) != 0 && errno == EINTR)
            ;
        if (r != 0 && errno == EWOULDBLOCK)
            rc = fbk_error_set(FBK_EBUSY, errno,
                               "file: %s is locked exclusively (lock %s/LOCK is held by `fbk "
                               "compact`, or by a program built with a libfbk before shared "
                               "stores)",
                               dir, dir);
        else if (r != 0)
            rc = fail(errno, "lock", dir, "LOCK");
    }
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
