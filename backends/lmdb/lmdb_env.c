/* lmdb_env.c -- one LMDB environment of the lmdb: backend: opening, error
 * mapping, pooled read transactions and map growth. */
#include "lmdb_internal.h"

#include "fbk_dirs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Enough reader slots for every thread that may read at once plus the pool of
 * reset transactions (each keeps its slot under MDB_NOTLS). */
#define MAXREADERS 1024
/* Map sizes beyond this are refused rather than risked (a failed mmap in
 * mdb_env_set_mapsize leaves the environment without a map). */
#define MAP_LIMIT ((size_t)1 << 44)
/* Pages kept free beyond every estimate (free-list and meta updates). */
#define MARGIN_PAGES 64
/* Bytes reserved for lock.mdb: LMDB makes it (MAXREADERS - 1) * 64 bytes of
 * reader slots plus a header of two cache lines-rounded structures (65664
 * bytes on x86-64 Linux), sparse, and writes it through a shared map. */
#define LOCK_RESERVE ((off_t)(MAXREADERS + 64) * 64)

int fbk__lmdb_code(int rc)
{
    switch (rc) {
    case 0:
        return FBK_OK;
    case MDB_MAP_FULL:
    case ENOSPC:
    case EDQUOT:
        return FBK_ENOSPC;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
        return FBK_ECORRUPT;
    case MDB_NOTFOUND:
        return FBK_ENOTFOUND;
    case ENOMEM:
        return FBK_ENOMEM;
    default:
        return FBK_EIO;
    }
}

int fbk__lmdb_error(int rc, const char *fmt, ...)
{
    char buf[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return fbk_error_set(fbk__lmdb_code(rc), rc > 0 ? rc : 0, "lmdb: %s: %s", buf,
                         mdb_strerror(rc));
}

int fbk__lmdb_mkdirs(const char *path)
{
    /* each directory made is fsynced into its parent (backends/common) */
    return fbk__dir_make(NULL, AT_FDCWD, path, "lmdb", "mkdir");
}

static int init_locks(fbk__lmdb_env *e)
{
    pthread_rwlockattr_t ra;
    if (pthread_rwlockattr_init(&ra) != 0)
        return fbk_error_set(FBK_ENOMEM, 0, "lmdb: pthread_rwlockattr_init failed");
    /* Growth must not starve behind a stream of readers. */
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(&e->maplock, &ra);
    pthread_rwlockattr_destroy(&ra);
    if (rc != 0)
        return fbk_error_from_errno(rc, "lmdb: pthread_rwlock_init");
    pthread_mutex_init(&e->m, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_mutex_init(&e->rpool_m, NULL);
    e->live = 1;
    return FBK_OK;
}

/* ------------------------------------------------ data file: check, reserve */

/* LMDB's on-disk meta page (liblmdb 0.9, 64-bit; docs/lmdb-backend.md, "What
 * open checks"): pages 0 and 1 of data.mdb each start with a 16-byte page
 * header (pgno u64, pad u16, flags u16 = P_META 0x08, u32) followed by
 * MDB_meta: magic u32 0xBEEFC0DE, version u32 1, address u64, mapsize u64,
 * two 48-byte MDB_db records (the first one's leading u32 is the page size),
 * last_pg u64 (last page in use), txnid u64. */
#define META_OFF 16
#define META_LEN (META_OFF + 136)
#define META_MAGIC 0xBEEFC0DEu

struct meta {
    int valid;
    uint32_t psize;
    uint64_t last_pg, txnid;
};

static uint32_t get32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static struct meta parse_meta(const unsigned char *b)
{
    struct meta m = {0};
    const unsigned char *mm = b + META_OFF;
    uint16_t flags;
    memcpy(&flags, b + 10, sizeof flags);
    if (!(flags & 0x08) || get32(mm) != META_MAGIC || get32(mm + 4) != 1)
        return m;
    m.psize = get32(mm + 24);
    m.last_pg = get64(mm + 120);
    m.txnid = get64(mm + 128);
    m.valid = m.psize >= 512 && m.psize <= 65536 && (m.psize & (m.psize - 1)) == 0;
    return m;
}

/* Reserves blocks for [0, len) of fd, so that LMDB's later writes there
 * (pwrite, or stores through a shared map) cannot run out of space.
 * `extend`: a data.mdb LMDB has initialised (non-empty) also grows to len
 * bytes.  A committed meta page's last_pg may lie past the last page LMDB
 * wrote (a page a transaction took and freed again is never written), so
 * after a kill the file could be shorter than its meta page says without
 * being damaged; grown to the map, it never is (the size change is durable
 * with the next commit's fdatasync), and check_data_file's rule holds.  An
 * empty file keeps its size: LMDB takes an empty data.mdb for a new
 * environment.  Where fallocate is not supported, a file that already holds
 * data is extended (posix_fallocate); an empty one is left alone.  0 or an
 * errno. */
static int reserve_fd(int fd, off_t len, bool extend)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return errno;
    int mode = extend && st.st_size > 0 && st.st_size < len ? 0 : FALLOC_FL_KEEP_SIZE;
    if (fallocate(fd, mode, 0, len) == 0)
        return 0;
    int err = errno;
    if (err != EOPNOTSUPP && err != ENOSYS)
        return err;
    if (st.st_size == 0)
        return 0;
    return posix_fallocate(fd, 0, len);
}

static int reserve_error(const fbk__lmdb_env *e, int err, const char *file, off_t len,
                         const char *when, const char *why)
{
    return fbk_error_set(err == ENOSPC || err == EDQUOT ? FBK_ENOSPC : fbk__lmdb_code(err), err,
                         "lmdb: %s: reserve %lld bytes for %s/%s (%s%s): %s%s", e->what,
                         (long long)len, e->path, file, when, why, strerror(err),
                         err == ENOSPC || err == EDQUOT ? ": free space and try again" : "");
}

/* Opens (creating) e->path/<file> and reserves len bytes for it. */
static int reserve_file(const fbk__lmdb_env *e, const char *file, off_t len, const char *when,
                        const char *why)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", e->path, file);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return fbk_error_from_errno(errno, "lmdb: %s: %s: open %s%s", e->what, when, path, why);
    int err = reserve_fd(fd, len, false);
    close(fd);
    return err ? reserve_error(e, err, file, len, when, why) : FBK_OK;
}

/* Before LMDB maps e->path/data.mdb: an existing file must be as long as its
 * newer meta page says (LMDB reads every page up to last_pg through the map,
 * and a page past the end of the file is SIGBUS).  *fresh: there is no
 * data.mdb (a new environment).  0 or FBK_ECORRUPT with a message. */
static int check_data_file(const fbk__lmdb_env *e, const char *verb, const char *why, int *fresh)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", e->path);
    *fresh = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        *fresh = 1;
        return FBK_OK;
    }
    if (fd < 0)
        return fbk_error_from_errno(errno, "lmdb: %s: %s: open %s%s", e->what, verb, path, why);
    struct stat st;
    unsigned char b[META_LEN];
    struct meta m0 = {0}, m1 = {0};
    ssize_t got = 0;
    if (fstat(fd, &st) != 0) {
        got = -1;
    } else if (st.st_size > 0) {
        got = pread(fd, b, sizeof b, 0);
        if (got == (ssize_t)sizeof b)
            m0 = parse_meta(b);
        if (m0.valid)
            got = pread(fd, b, sizeof b, m0.psize);
        if (m0.valid && got == (ssize_t)sizeof b)
            m1 = parse_meta(b);
    }
    if (got < 0) {
        int err = fbk_error_from_errno(errno, "lmdb: %s: %s: read the meta pages of %s%s", e->what,
                                       verb, path, why);
        close(fd);
        return err;
    }
    close(fd);
    if (st.st_size == 0)
        return fbk_error_set(FBK_ECORRUPT, 0,
                             "lmdb: %s: %s is empty (0 bytes): a data file that was truncated "
                             "(LMDB writes its two meta pages when it creates one); if this "
                             "directory never held a store, delete the file and open again",
                             e->what, path);
    if (!m0.valid && st.st_size >= 2 * 4096)
        return FBK_OK; /* not LMDB's format (or damaged): mdb_env_open reports it */
    /* LMDB opens at the newer of the two meta pages */
    const struct meta *m = m1.valid && m1.txnid > m0.txnid ? &m1 : &m0;
    uint64_t psize = m0.valid ? m0.psize : 4096;
    uint64_t need = 2 * psize;
    if (m->valid && (m->last_pg + 1) * psize > need)
        need = (m->last_pg + 1) * psize;
    if ((uint64_t)st.st_size >= need)
        return FBK_OK;
    if (m->valid)
        return fbk_error_set(FBK_ECORRUPT, 0,
                             "lmdb: %s: %s is truncated: %lld bytes, but its meta page "
                             "(transaction %llu) uses %llu pages of %llu bytes = %llu bytes; "
                             "restore it from a copy -- or, if a writer of a libfbk that did "
                             "not grow data.mdb to its map (before 2026-12) was killed, the "
                             "missing pages may be free ones LMDB never wrote: `truncate -s "
                             "%llu %s`, then `fbk verify`",
                             e->what, path, (long long)st.st_size, (unsigned long long)m->txnid,
                             (unsigned long long)(need / psize), (unsigned long long)psize,
                             (unsigned long long)need, (unsigned long long)need, path);
    return fbk_error_set(FBK_ECORRUPT, 0,
                         "lmdb: %s: %s is truncated: %lld bytes, shorter than the %llu bytes of "
                         "LMDB's two meta pages; restore it from a copy (or delete it to start "
                         "empty)",
                         e->what, path, (long long)st.st_size, (unsigned long long)need);
}

void fbk__lmdb_env_refresh(fbk__lmdb_env *e)
{
    MDB_envinfo info;
    if (e->env && mdb_env_info(e->env, &info) == 0) {
        e->used_pages = (size_t)info.me_last_pgno + 1;
        e->map_pages = info.me_mapsize / e->psize;
    }
}

/* A data.mdb this open created and LMDB did not initialise (a failed first
 * open) is removed, so that the next open does not take it for a truncated
 * one.  Best effort. */
static void unlink_empty_data(const fbk__lmdb_env *e)
{
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", e->path);
    if (stat(path, &st) == 0 && st.st_size == 0)
        unlink(path);
}

/* Reserves the whole map of the open environment in data.mdb (LMDB may have
 * taken a larger map size from the file's meta page). */
static int reserve_map(fbk__lmdb_env *e, const char *verb, const char *why)
{
    MDB_envinfo info;
    int fd;
    int rc = mdb_env_info(e->env, &info);
    if (rc == 0)
        rc = mdb_env_get_fd(e->env, &fd);
    if (rc != 0)
        return fbk__lmdb_error(rc, "%s: %s environment %s: info", e->what, verb, e->path);
    rc = reserve_fd(fd, (off_t)info.me_mapsize, true);
    return rc ? reserve_error(e, rc, "data.mdb", (off_t)info.me_mapsize, verb, why) : FBK_OK;
}

/* mdb_txn_begin while the environment is being opened (no other
 * transaction of this process yet): another process may have grown the map
 * meanwhile (MDB_MAP_RESIZED), whose size is then adopted. */
static int begin_at_open(fbk__lmdb_env *e, unsigned flags, MDB_txn **txn)
{
    int rc = mdb_txn_begin(e->env, NULL, flags, txn);
    for (int tries = 0; rc == MDB_MAP_RESIZED && tries < 8; tries++) {
        rc = mdb_env_set_mapsize(e->env, 0);
        if (rc == 0)
            rc = mdb_txn_begin(e->env, NULL, flags, txn);
    }
    return rc;
}

/* The handle of the unnamed database (always the same number). */
static int open_main(fbk__lmdb_env *e, const char *verb, const char *why, MDB_dbi *dbi)
{
    MDB_txn *txn;
    /* a read-only environment has no write transactions: a read one that
     * commits keeps its handles too */
    int rc = begin_at_open(e, e->flags & MDB_RDONLY, &txn);
    if (rc == 0) {
        rc = mdb_dbi_open(txn, NULL, 0, dbi);
        rc = rc ? (mdb_txn_abort(txn), rc) : mdb_txn_commit(txn);
    }
    return rc ? fbk__lmdb_error(rc, "%s: %s: open main database in %s%s", e->what, verb, e->path,
                                why)
              : FBK_OK;
}

/* After a reopen in place: opens every named database again, in handle
 * order, so each gets the handle it had (LMDB hands out the lowest free
 * one, and handles are never closed).  A name whose creating transaction
 * failed is created again (empty) to keep the numbering.  A read-only
 * environment creates nothing: a name another process dropped meanwhile
 * fails the reopen. */
static int open_names(fbk__lmdb_env *e, const char *verb, const char *why)
{
    if (!e->names)
        return FBK_OK;
    unsigned n = e->maxdbs + 2, last = 0;
    for (unsigned i = 2; i < n; i++)
        if (e->names[i])
            last = i;
    if (last == 0)
        return FBK_OK;
    MDB_txn *txn;
    unsigned ro = e->flags & MDB_RDONLY;
    int rc = begin_at_open(e, ro, &txn);
    for (unsigned i = 2; rc == 0 && i <= last; i++) {
        MDB_dbi dbi;
        rc = e->names[i] ? mdb_dbi_open(txn, e->names[i], ro ? 0 : MDB_CREATE, &dbi) : EINVAL;
        if (rc == 0 && dbi != i) {
            mdb_txn_abort(txn);
            return fbk_error_set(FBK_EIO, 0,
                                 "lmdb: %s: %s %s: location %s got database handle %u instead "
                                 "of %u%s",
                                 e->what, verb, e->path, e->names[i], (unsigned)dbi, i, why);
        }
    }
    rc = rc ? (mdb_txn_abort(txn), rc) : mdb_txn_commit(txn);
    return rc ? fbk__lmdb_error(rc, "%s: %s: open the locations' databases in %s%s", e->what, verb,
                                e->path, why)
              : FBK_OK;
}

/* Creates e->env and opens it at e->path with e->flags and map_size; page
 * size in *psize, main database in *dbi.  On failure e->env is NULL.  Does
 * not touch the fields guarded by m (a reopen runs with m released).  verb
 * and why: for messages ("lmdb: <what>: <verb> environment <path><why>"). */
static int open_lmdb(fbk__lmdb_env *e, size_t map_size, const char *verb, const char *why,
                     size_t *psize, MDB_dbi *dbi)
{
    /* Check data.mdb against its meta pages and reserve the space LMDB
     * writes to -- lock.mdb (through a shared map: a store into an
     * unallocated page of a full file system is SIGBUS) and the map size of
     * data.mdb -- before LMDB opens anything, so a full disk is FBK_ENOSPC
     * here and at map growth, and never SIGBUS or a failed write later.
     * A read-only environment writes nothing (its reader slot in lock.mdb is
     * LMDB's own business), so it reserves nothing and must exist. */
    int fresh = 0, ro = (e->flags & MDB_RDONLY) != 0;
    e->env = NULL;
    int err = check_data_file(e, verb, why, &fresh);
    if (err == FBK_OK && ro && fresh)
        return fbk_error_set(FBK_ENOTFOUND, ENOENT,
                             "lmdb: %s: read-only %s of %s: no environment there (no data.mdb)%s",
                             e->what, verb, e->path, why);
    if (err == FBK_OK && !ro)
        err = reserve_file(e, "lock.mdb", LOCK_RESERVE, verb, why);
    if (err == FBK_OK && fresh)
        err = reserve_file(e, "data.mdb", (off_t)map_size, verb, why);
    if (err != FBK_OK) {
        if (fresh)
            unlink_empty_data(e);
        return err;
    }
    int rc = mdb_env_create(&e->env);
    if (rc != 0)
        e->env = NULL;
    if (rc == 0)
        rc = mdb_env_set_mapsize(e->env, map_size);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(e->env, MAXREADERS);
    if (rc == 0 && e->maxdbs)
        rc = mdb_env_set_maxdbs(e->env, e->maxdbs);
    if (rc == 0)
        rc = mdb_env_open(e->env, e->path, e->flags | MDB_NOTLS, 0644);
    if (rc == 0) {
        int dead = 0;
        rc = mdb_reader_check(e->env, &dead); /* slots of crashed processes */
    }
    MDB_stat st;
    if (rc == 0)
        rc = mdb_env_stat(e->env, &st);
    if (rc != 0)
        err = fbk__lmdb_error(rc, "%s: %s environment %s%s", e->what, verb, e->path, why);
    else if (!ro)
        err = reserve_map(e, verb, why);
    if (err == FBK_OK)
        err = open_main(e, verb, why, dbi);
    if (err == FBK_OK)
        err = open_names(e, verb, why);
    if (err != FBK_OK) {
        if (e->env)
            mdb_env_close(e->env);
        e->env = NULL;
        if (fresh)
            unlink_empty_data(e);
        return err;
    }
    *psize = st.ms_psize;
    return FBK_OK;
}

int fbk__lmdb_env_open(fbk__lmdb_env *e, const char *what, const char *path, unsigned flags,
                       size_t map_size, unsigned maxdbs)
{
    e->what = what;
    snprintf(e->path, sizeof e->path, "%s", path);
    e->flags = flags;
    e->maxdbs = maxdbs;
    int err = init_locks(e);
    if (err == FBK_OK && maxdbs) {
        size_t n = (size_t)maxdbs + 2;
        e->names = calloc(n, sizeof *e->names);
        e->dirty_gen = calloc(n, sizeof *e->dirty_gen);
        e->fail_rc = calloc(n, sizeof *e->fail_rc);
        if (!e->names || !e->dirty_gen || !e->fail_rc)
            err = fbk_error_set(FBK_ENOMEM, ENOMEM, "lmdb: %s: out of memory", what);
    }
    if (err == FBK_OK && !(flags & MDB_RDONLY))
        err = fbk__lmdb_mkdirs(path);
    if (err == FBK_OK)
        err = open_lmdb(e, map_size, "open", "", &e->psize, &e->main);
    if (err != FBK_OK) {
        fbk__lmdb_env_close(e);
        return err;
    }
    fbk__lmdb_env_refresh(e);
    return FBK_OK;
}

int fbk__lmdb_reopen(fbk__lmdb_env *e, unsigned long long seen)
{
    if (e->env && !e->broken && e->reopens != seen)
        return FBK_OK; /* another thread reopened it meanwhile */
    /* The last map size that worked: map_pages is only re-read after a
     * successful open, growth or commit, never after a failed resize (whose
     * size LMDB could not map).  A resize writes nothing to the data file, so
     * the file still holds the last committed transaction. */
    size_t map_size = e->map_pages * e->psize;
    const char *why = e->broken ? " (a failed map resize had left it without a map; retried by "
                                  "the next operation)"
                                : " (LMDB had marked it fatal after a failed write; retried by "
                                  "the next operation)";
    e->state = FBK__LMDB_REOPENING;
    pthread_mutex_unlock(&e->m);
    /* No write transaction exists (state was IDLE); the write lock waits for
     * every read transaction of this process to end. */
    pthread_rwlock_wrlock(&e->maplock);
    pthread_mutex_lock(&e->rpool_m);
    for (unsigned i = 0; i < e->rpool_n; i++)
        mdb_txn_abort(e->rpool[i]);
    e->rpool_n = 0;
    pthread_mutex_unlock(&e->rpool_m);
    if (e->env)
        mdb_env_close(e->env); /* safe without a map: LMDB unmaps only a map it has */
    e->env = NULL;
    e->broken = 0; /* from now on env NULL says "reopen" if this fails */
    size_t psize = 0;
    MDB_dbi dbi = 0;
    int err = open_lmdb(e, map_size, "reopen", why, &psize, &dbi);
    if (err == FBK_OK && (psize != e->psize || dbi != e->main)) {
        /* cannot happen: same file, and the unnamed database is always
         * handle 1; but the values are read without locks, so refuse */
        mdb_env_close(e->env);
        e->env = NULL;
        err = fbk_error_set(FBK_EIO, 0,
                            "lmdb: %s: reopen %s: page size %zu or main database %u changed",
                            e->what, e->path, psize, (unsigned)dbi);
    }
    if (err == FBK_OK)
        e->reopens++;
    pthread_rwlock_unlock(&e->maplock);
    pthread_mutex_lock(&e->m);
    fbk__lmdb_env_refresh(e);
    e->state = FBK__LMDB_IDLE;
    pthread_cond_broadcast(&e->cv);
    return err;
}

int fbk__lmdb_read_open(fbk__lmdb_env *e, fbk__lmdb_op_fn op, void *arg, const char *what)
{
    /* Under m in state IDLE no growth or reopen runs, and none starts (both
     * begin in state IDLE under m): the transaction needs no maplock, and a
     * handle op notes is one a later reopen opens again. */
    int err = FBK_OK, resized = 0, reopened = 0;
    pthread_mutex_lock(&e->m);
    for (;;) {
        while (e->state != FBK__LMDB_IDLE)
            pthread_cond_wait(&e->cv, &e->m);
        MDB_txn *txn = NULL;
        int rc = e->broken ? e->broken : e->env ? mdb_txn_begin(e->env, NULL, MDB_RDONLY, &txn)
                                                : MDB_PANIC;
        if ((rc == MDB_PANIC || e->broken) && e->reopenable && !reopened) {
            /* no map since a failed resize, or a failed reopen */
            reopened = 1;
            err = fbk__lmdb_reopen(e, e->reopens);
            if (err != FBK_OK)
                break;
            continue;
        }
        if (rc == MDB_MAP_RESIZED && !resized) { /* another process grew the map */
            resized = 1;
            err = fbk__lmdb_grow(e, 0);
            if (err != FBK_OK)
                break;
            continue;
        }
        if (rc != 0) {
            err = fbk__lmdb_error(rc, "%s: %s in %s: begin read transaction", e->what, what,
                                  e->path);
            break;
        }
        rc = op(txn, arg);
        if (rc != 0) {
            mdb_txn_abort(txn);
            err = FBK__LMDB_FATAL(rc) ? fbk__lmdb_error(rc, "%s: %s in %s", e->what, what, e->path)
                                      : rc;
        } else if ((rc = mdb_txn_commit(txn)) != 0) {
            err = fbk__lmdb_error(rc, "%s: %s in %s: commit of a read transaction", e->what, what,
                                  e->path);
        }
        break;
    }
    pthread_mutex_unlock(&e->m);
    return err;
}

void fbk__lmdb_env_close(fbk__lmdb_env *e)
{
    for (unsigned i = 0; i < e->rpool_n; i++)
        mdb_txn_abort(e->rpool[i]);
    e->rpool_n = 0;
    if (e->env)
        mdb_env_close(e->env);
    e->env = NULL;
    if (e->names)
        for (unsigned i = 0; i < e->maxdbs + 2; i++)
            free(e->names[i]);
    free(e->names);
    free(e->dirty_gen);
    free(e->fail_rc);
    e->names = NULL;
    e->dirty_gen = NULL;
    e->fail_rc = NULL;
    if (e->live) {
        pthread_rwlock_destroy(&e->maplock);
        pthread_mutex_destroy(&e->m);
        pthread_cond_destroy(&e->cv);
        pthread_mutex_destroy(&e->rpool_m);
        e->live = 0;
    }
}

/* --------------------------------------- locations: handles, durability */

int fbk__lmdb_note_dbi(fbk__lmdb_env *e, MDB_dbi dbi, const char *name)
{
    if (!e->names || dbi >= e->maxdbs + 2)
        return 0;
    if (e->names[dbi] && strcmp(e->names[dbi], name) == 0)
        return 0;
    char *copy = strdup(name);
    if (!copy)
        return ENOMEM;
    free(e->names[dbi]); /* a slot whose creating transaction failed, reused */
    e->names[dbi] = copy;
    return 0;
}

void fbk__lmdb_touch(fbk__lmdb_env *e, MDB_dbi dbi)
{
    if (!e->dirty_gen || dbi >= e->maxdbs + 2)
        return;
    pthread_mutex_lock(&e->m);
    e->dirty_gen[dbi] = ++e->write_gen;
    pthread_mutex_unlock(&e->m);
}

void fbk__lmdb_commit_failed(fbk__lmdb_env *e, int rc)
{
    if (!e->fail_rc)
        return;
    for (unsigned i = 0; i < e->maxdbs + 2; i++)
        if (e->dirty_gen[i] > e->synced_gen && e->fail_rc[i] == 0)
            e->fail_rc[i] = rc;
}

/* The sync of one location.  A location that had writes no successful sync
 * covered when a commit or sync of the environment failed keeps that failure
 * (its data may be gone from the page cache without reaching the disk, and a
 * later flush would "succeed" without writing it); every other location, and
 * every new one, syncs as usual.  The flush itself is mdb_env_sync under the
 * map lock (a reopen in place replaces env). */
int fbk__lmdb_env_sync(fbk__lmdb_env *e, MDB_dbi dbi, const char *name)
{
    int tracked = e->fail_rc && dbi < e->maxdbs + 2;
    pthread_mutex_lock(&e->m);
    int failed = tracked ? e->fail_rc[dbi] : 0;
    unsigned long long gen = e->write_gen;
    pthread_mutex_unlock(&e->m);
    if (failed)
        return fbk__lmdb_error(failed,
                               "%s: location %s: an earlier commit or sync of %s failed while it "
                               "held unsynced writes, so nothing written to it since its last "
                               "successful sync is known to be durable (other and new locations "
                               "work); close and reopen the store, then reopen this location to "
                               "see what it holds and save it again",
                               e->what, name, e->path);
    pthread_rwlock_rdlock(&e->maplock);
    int rc = e->env && !e->broken ? mdb_env_sync(e->env, 1) : MDB_PANIC;
    int open = e->env && !e->broken;
    pthread_rwlock_unlock(&e->maplock);
    if (!open)
        return fbk__lmdb_error(rc,
                               "%s: location %s: sync %s: the environment is not open (its "
                               "reopen failed; the next operation retries it): sync again later",
                               e->what, name, e->path);
    pthread_mutex_lock(&e->m);
    if (rc == 0 && gen > e->synced_gen)
        e->synced_gen = gen;
    if (rc != 0) {
        fbk__lmdb_commit_failed(e, rc);
        if (tracked && e->fail_rc[dbi] == 0)
            e->fail_rc[dbi] = rc;
    }
    pthread_mutex_unlock(&e->m);
    if (rc == 0)
        return FBK_OK;
    return fbk__lmdb_error(rc,
                           "%s: location %s: sync %s: nothing written since its last successful "
                           "sync is known to be durable, and later syncs of it fail too; close "
                           "and reopen the store, then reopen this location to see what it holds",
                           e->what, name, e->path);
}

/* Adopts a map size another process set (MDB_MAP_RESIZED). */
static int adopt_resize(fbk__lmdb_env *e)
{
    pthread_mutex_lock(&e->m);
    while (e->state != FBK__LMDB_IDLE)
        pthread_cond_wait(&e->cv, &e->m);
    /* no environment or no map: a reopen or a resize failed meanwhile; the
     * next try reopens (spill) or reports it (durable) */
    int err = e->env && !e->broken ? fbk__lmdb_grow(e, 0) : FBK_OK;
    pthread_mutex_unlock(&e->m);
    return err;
}

/* The read path's reopen: m is taken only after the caller released its
 * maplock (lock order). */
static int reopen_idle(fbk__lmdb_env *e, unsigned long long seen)
{
    pthread_mutex_lock(&e->m);
    while (e->state != FBK__LMDB_IDLE)
        pthread_cond_wait(&e->cv, &e->m);
    int err = fbk__lmdb_reopen(e, seen);
    pthread_mutex_unlock(&e->m);
    return err;
}

static int rtxn_try(fbk__lmdb_env *e, MDB_txn **out)
{
    MDB_txn *txn = NULL;
    pthread_mutex_lock(&e->rpool_m);
    if (e->rpool_n > 0)
        txn = e->rpool[--e->rpool_n];
    pthread_mutex_unlock(&e->rpool_m);
    if (txn && mdb_txn_renew(txn) != 0) {
        mdb_txn_abort(txn);
        txn = NULL;
    }
    int rc = txn ? 0 : mdb_txn_begin(e->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        *out = txn;
    return rc;
}

int fbk__lmdb_rtxn_begin(fbk__lmdb_env *e, MDB_txn **out)
{
    int resized = 0, reopened = 0;
    for (;;) {
        pthread_rwlock_rdlock(&e->maplock);
        /* no env: the last reopen failed; broken: a resize failed and left
         * no map (both only change under maplock held exclusively) */
        int broken = e->broken;
        int rc = broken ? broken : e->env ? rtxn_try(e, out) : MDB_PANIC;
        unsigned long long seen = e->reopens;
        if (rc == 0)
            return FBK_OK;
        pthread_rwlock_unlock(&e->maplock);
        int err;
        if ((rc == MDB_PANIC || broken) && e->reopenable && !reopened) {
            /* LMDB marked it fatal, or it has no map: reopen, then try once
             * more */
            reopened = 1;
            err = reopen_idle(e, seen);
        } else if (rc == MDB_MAP_RESIZED && !resized) {
            resized = 1;
            err = adopt_resize(e);
        } else if (broken) {
            return fbk__lmdb_error(rc, "%s: begin read transaction (no map since a failed resize)",
                                   e->what);
        } else {
            return fbk__lmdb_error(rc, "%s: begin read transaction", e->what);
        }
        if (err != FBK_OK)
            return err;
    }
}

void fbk__lmdb_rtxn_end(fbk__lmdb_env *e, MDB_txn *txn)
{
    mdb_txn_reset(txn);
    pthread_mutex_lock(&e->rpool_m);
    if (e->rpool_n < FBK__LMDB_RTXN_POOL) {
        e->rpool[e->rpool_n++] = txn;
        txn = NULL;
    }
    pthread_mutex_unlock(&e->rpool_m);
    if (txn)
        mdb_txn_abort(txn);
    pthread_rwlock_unlock(&e->maplock);
}

size_t fbk__lmdb_pages_for(const fbk__lmdb_env *e, size_t len)
{
    /* overflow pages of the value (with their header) plus copies and splits
     * of the B-tree path it is inserted on */
    return (len + 16 + e->psize - 1) / e->psize + 8;
}

int fbk__lmdb_fits(const fbk__lmdb_env *e, size_t need)
{
    size_t used = e->used_pages + e->batch_pages + e->batch_pages / 16;
    return used + need + MARGIN_PAGES < e->map_pages;
}

static size_t grow_target(const fbk__lmdb_env *e, size_t need)
{
    size_t want = (e->used_pages + need + MARGIN_PAGES) * e->psize;
    want += want / 4;
    size_t size = e->map_pages * e->psize;
    if (size < e->psize)
        size = e->psize;
    if (e->force_grow || size < want)
        size *= 2;
    while (size < want && size <= MAP_LIMIT)
        size *= 2;
    return size;
}

int fbk__lmdb_grow(fbk__lmdb_env *e, size_t need)
{
    size_t size = need || e->force_grow ? grow_target(e, need) : 0;
    if (size > MAP_LIMIT)
        return fbk_error_set(FBK_ENOSPC, 0,
                             "lmdb: %s: map full: %zu more pages would exceed %zu bytes (%s)",
                             e->what, need, MAP_LIMIT, mdb_strerror(MDB_MAP_FULL));
    e->state = FBK__LMDB_GROWING;
    pthread_mutex_unlock(&e->m);
    /* Reserve the grown part of data.mdb first (LMDB's commits write there):
     * on a full disk the growth fails here, cleanly, with the old map intact.
     * env does not change in state GROWING. */
    int fd = -1, res = 0;
    if (size && mdb_env_get_fd(e->env, &fd) == 0)
        res = reserve_fd(fd, (off_t)size, true);
    if (res != 0) {
        pthread_mutex_lock(&e->m);
        e->state = FBK__LMDB_IDLE;
        pthread_cond_broadcast(&e->cv);
        return reserve_error(e, res, "data.mdb", (off_t)size, "map growth", "");
    }
    /* No write transaction exists (state was IDLE); the write lock waits for
     * every read transaction of this process to end. */
    pthread_rwlock_wrlock(&e->maplock);
    int rc = mdb_env_set_mapsize(e->env, size);
    if (rc != 0)
        e->broken = rc;
    pthread_rwlock_unlock(&e->maplock);
    pthread_mutex_lock(&e->m);
    if (rc == 0) {
        fbk__lmdb_env_refresh(e);
        e->force_grow = 0;
    }
    e->state = FBK__LMDB_IDLE;
    pthread_cond_broadcast(&e->cv);
    if (rc != 0) {
        char next[96] = "";
        if (e->reopenable)
            snprintf(next, sizeof next,
                     " (no map left: the next operation reopens the environment at %zu bytes)",
                     e->map_pages * e->psize);
        return fbk_error_set(FBK_ENOSPC, rc > 0 ? rc : 0, "lmdb: %s: grow map to %zu bytes: %s%s",
                             e->what, size, mdb_strerror(rc), next);
    }
    return FBK_OK;
}
