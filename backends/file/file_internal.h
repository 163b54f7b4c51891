/* file_internal.h -- what the files of the file: backend share (private to
 * backends/file/): its constants, the store and location structs, and the
 * functions one file calls in another.  Each function's comment is at its
 * definition; the layout and the crash-consistency argument are in
 * docs/file-backend.md. */
#ifndef FBK_FILE_INTERNAL_H
#define FBK_FILE_INTERNAL_H

#include "file_io.h"
#include "file_names.h"
#include "fbk_dirs.h"

#include "fbk_backend.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

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
/* a ref (file_refs.c): "ab/" + 32 hex key + ".name-" + 32 hex + NUL */
#define FILE_REF_LEN 76
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

static inline const fbk__file_io *io_(void) { return fbk__file_io_get(); }

/* An error with errno e and a message naming a path under base. */
static inline int fail(int e, const char *what, const char *base, const char *name)
{
    if (name)
        return fbk_error_from_errno(e, "file: %s %s/%s", what, base, name);
    return fbk_error_from_errno(e, "file: %s %s", what, base);
}

/* ---- file_paths.c ---- */
void fbk__file_key_name(const fbk_key *key, char out[FILE_NAME_LEN]);
int fbk__file_shard_index(const char *name);
void fbk__file_tmp_name(file_backend *b, const char *name, char out[FILE_TMP_LEN]);
int fbk__file_is_spill_name(const char *n, const char *suffix, char id[FILE_ID_LEN + 1]);
void fbk__file_new_id(char id[FILE_ID_LEN + 1]);
int fbk__file_is_key_name(const char *n, const char *shard, fbk_key *key);
int fbk__file_is_tmp_name(const char *n, const char *shard, char owner[FILE_ID_LEN + 1]);

/* ---- file_prim.c ---- */
DIR *fbk__file_dir_of(int fd);
int fbk__file_writev_all(int fd, const struct iovec *iov, int n);
int fbk__file_preadv_all(int fd, const struct iovec *iov, int n, size_t probe, size_t *got);
int fbk__file_mkdir_ok(int at, const char *path);
int fbk__file_fsync_dir_at(int at, const char *path);
int fbk__file_is_regular(int at, const struct dirent *de);
int fbk__file_remove_tree_at(int at, const char *name, int depth);

/* ---- file_buf.c ---- */
void *fbk__file_buf_get(file_backend *b, size_t len, size_t *cap);
void fbk__file_buf_put(file_backend *b, void *p, size_t cap);

/* ---- file_spill.c ---- */
int fbk__file_store(void *self, const fbk_key *key, size_t len, fbk_fill_fn fill, void *arg);
int fbk__file_store_iov(void *self, const fbk_key *key, const struct iovec *iov, int n);
int fbk__file_load_into(void *self, const fbk_key *key, size_t hint, fbk_place_fn place, void *arg);
int fbk__file_load_buffered(file_backend *b, int dirfd, const char *dirpath, const fbk_key *key,
                            fbk_read_fn read, void *arg);
int fbk__file_load(void *self, const fbk_key *key, fbk_read_fn read, void *arg);
int fbk__file_remove(void *self, const fbk_key *key);

/* ---- file_location.c ---- */
void fbk__file_loc_touch(file_loc *l, const char *name, int file, const fbk_key *key,
                         int made_shard);
void fbk__file_loc_fail(file_backend *b, file_loc *l, int rc);
int fbk__file_loc_list(file_loc *l, DIR **d);
int fbk__file_open_location(void *self, const char *location, void **out);
void fbk__file_close_location(void *self, void *loc);
int fbk__file_scan(void *self, void *loc, fbk_key_fn each, void *arg);
size_t fbk__file_scan_foreign(void *self, void *loc);
int fbk__file_contains(void *self, void *loc, const fbk_key *key);

/* ---- file_loc_check.c ---- */
int fbk__file_loc_check_path(file_backend *b, const char *location, const char *shown);
int fbk__file_loc_claim(file_loc *l, int readonly, int *marked_now);

/* ---- file_persist.c ---- */
int fbk__file_refuse_readonly(file_backend *b, const char *what);
int fbk__file_persist(void *self, void *loc, const fbk_key *key);
int fbk__file_register_key(void *self, void *loc, const fbk_key *key);
int fbk__file_remove_persisted(void *self, void *loc, const fbk_key *key);
int fbk__file_sync(void *self, void *loc);

/* ---- file_refs.c ---- */
void fbk__file_ref_name(const fbk_key *key, const char file[33], char out[FILE_REF_LEN]);
int fbk__file_is_ref_name(const char *n, const char *shard, fbk_key *key, char file[33]);
int fbk__file_refs_lock(file_loc *l, int how, int *fd);
void fbk__file_refs_unlock(int fd);
int fbk__file_refs_bind(file_loc *l, const fbk_name_op *ops, size_t n);
int fbk__file_remove_unbound(void *self, void *loc, const fbk_key *key);
int fbk__file_remove_unbound_many(void *self, void *loc, const fbk_key *keys, size_t n,
                                  int *removed);
int fbk__file_refs_scan(file_backend *b, file_loc *l, fbk_binding_fn each, void *arg,
                        fbk__file_alive_fn alive);

/* ---- file_backend.c ---- */
int fbk__file_owner_alive(file_backend *b, const char *id);

/* mkdir -p path (relative to the directory at unless absolute) through the
 * system-call table; every directory it creates is made durable in its
 * parent at once (this happens only when a store or location is first
 * created).  The shared implementation (backends/common/fbk_dirs.c); what
 * names the step in messages ("file: <what> <dir>: ..."). */
static inline int mkdir_p(int at, const char *path, const char *what)
{
    const fbk__file_io *io = io_();
    const fbk__dir_sys sys = {io->openat, io->close, io->fsync, io->mkdirat, io->flock};
    return fbk__dir_make(&sys, at, path, "file", what);
}

/* DIR/LOCK opened (a writer creates it) and flock(LOCK_SH|LOCK_NB)ed through
 * the system-call table: the shared implementation (fbk__dir_lock,
 * backends/common/fbk_dirs.h).  *fd is -1 for a read-only store of a
 * directory without one. */
static inline int dir_lock(int rootfd, const char *dir, int readonly, int *fd)
{
    const fbk__file_io *io = io_();
    const fbk__dir_sys sys = {io->openat, io->close, io->fsync, io->mkdirat, io->flock};
    return fbk__dir_lock(&sys, rootfd, dir, readonly, "file", fd);
}

#endif
