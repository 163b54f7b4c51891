/* lmdb_env.c -- one LMDB environment of the lmdb: backend: opening, error
 * mapping, pooled read transactions and map growth. */
#include "lmdb_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Enough reader slots for every thread that may read at once plus the pool of
 * reset transactions (each keeps its slot under MDB_NOTLS). */
#define MAXREADERS 1024
/* Map sizes beyond this are refused rather than risked (a failed mmap in
 * mdb_env_set_mapsize leaves the environment without a map). */
#define MAP_LIMIT ((size_t)1 << 44)
/* Pages kept free beyond every estimate (free-list and meta updates). */
#define MARGIN_PAGES 64

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
    char tmp[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof tmp)
        return fbk_error_set(FBK_EINVAL, 0, "lmdb: bad directory name (length %zu)", n);
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return fbk_error_from_errno(errno, "lmdb: mkdir %s", tmp);
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return fbk_error_from_errno(errno, "lmdb: mkdir %s", tmp);
    return FBK_OK;
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

void fbk__lmdb_env_refresh(fbk__lmdb_env *e)
{
    MDB_envinfo info;
    if (e->env && mdb_env_info(e->env, &info) == 0) {
        e->used_pages = (size_t)info.me_last_pgno + 1;
        e->map_pages = info.me_mapsize / e->psize;
    }
}

/* The handle of the unnamed database (always the same number). */
static int open_main(fbk__lmdb_env *e, const char *verb, const char *why, MDB_dbi *dbi)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(e->env, NULL, 0, &txn);
    if (rc == 0) {
        rc = mdb_dbi_open(txn, NULL, 0, dbi);
        rc = rc ? (mdb_txn_abort(txn), rc) : mdb_txn_commit(txn);
    }
    return rc ? fbk__lmdb_error(rc, "%s: %s: open main database in %s%s", e->what, verb, e->path,
                                why)
              : FBK_OK;
}

/* Creates e->env and opens it at e->path with e->flags and map_size; page
 * size in *psize, main database in *dbi.  On failure e->env is NULL.  Does
 * not touch the fields guarded by m (a reopen runs with m released).  verb
 * and why: for messages ("lmdb: <what>: <verb> environment <path><why>"). */
static int open_lmdb(fbk__lmdb_env *e, size_t map_size, const char *verb, const char *why,
                     size_t *psize, MDB_dbi *dbi)
{
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
    int err = FBK_OK;
    if (rc != 0)
        err = fbk__lmdb_error(rc, "%s: %s environment %s%s", e->what, verb, e->path, why);
    else
        err = open_main(e, verb, why, dbi);
    if (err != FBK_OK) {
        if (e->env)
            mdb_env_close(e->env);
        e->env = NULL;
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
    if (err == FBK_OK)
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

void fbk__lmdb_env_close(fbk__lmdb_env *e)
{
    for (unsigned i = 0; i < e->rpool_n; i++)
        mdb_txn_abort(e->rpool[i]);
    e->rpool_n = 0;
    if (e->env)
        mdb_env_close(e->env);
    e->env = NULL;
    if (e->live) {
        pthread_rwlock_destroy(&e->maplock);
        pthread_mutex_destroy(&e->m);
        pthread_cond_destroy(&e->cv);
        pthread_mutex_destroy(&e->rpool_m);
        e->live = 0;
    }
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
