/* lmdb_backend.c -- the lmdb: backend: a store directory that several
 * processes may have open at once (each holds DIR/LOCK shared), a disposable
 * spill environment of each store's own (DIR/spill-<id>, kept alive by the
 * flock of DIR/spill-<id>.lock and removed at close, or by a later open
 * once its process died; a read-only store's is a private temporary
 * directory) and one durable environment whose named databases are the
 * locations, shared through LMDB's own multi-process locking (lock.mdb).
 * A read-only store (FBK_STORE_READONLY) makes and writes nothing in DIR:
 * it opens the durable environment MDB_RDONLY and existing locations only.
 * See docs/lmdb-backend.md. */
#include "lmdb_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define DEFAULT_MAP_SIZE ((size_t)64 << 20)

/* The spill area is new at every open, so it needs no durability at all. */
#define SPILL_FLAGS (MDB_NOSYNC | MDB_NOMETASYNC)
/* Each commit fdatasyncs the data pages before the meta page is written; only
 * the meta write is left to the next commit or sync.  LMDB documents this as
 * keeping the database intact on a crash (only the last commits may be
 * undone), which is what an unsynced persist may lose. */
#define DURABLE_FLAGS (MDB_NOMETASYNC)

/* ---------------------------------------------------------------- spill area */

struct store_arg {
    MDB_dbi dbi;
    const fbk_key *key;
    size_t len;
    fbk_fill_fn fill;
    void *fill_arg;
};

static int store_op(MDB_txn *txn, void *p)
{
    struct store_arg *a = p;
    MDB_val k = {sizeof a->key->bytes, (void *)a->key->bytes};
    MDB_val v = {a->len, NULL};
    int rc = mdb_put(txn, a->dbi, &k, &v, MDB_RESERVE);
    if (rc != 0)
        return rc;
    int frc = a->fill(v.mv_data, a->len, a->fill_arg);
    if (frc == 0)
        return 0;
    /* Take the reserved value out again so the batch commits without it. */
    rc = mdb_del(txn, a->dbi, &k, NULL);
    if (rc != 0)
        return rc;
    if (frc > 0 || frc < FBK_ECLOSED) {
        char hex[33];
        fbk_key_format_hex(a->key, hex);
        return fbk_error_set(FBK_ECODEC, 0,
                             "lmdb: spill: store of key %s: fill callback returned %d", hex, frc);
    }
    return frc;
}

size_t fbk__lmdb_value_max(const fbk__lmdb_env *e)
{
    return FBK__LMDB_RW_MAX / e->psize * e->psize - 16;
}

int fbk__lmdb_check_len(const fbk__lmdb_env *e, size_t len, const char *what)
{
    size_t max = fbk__lmdb_value_max(e);
    if (len <= max)
        return FBK_OK;
    /* refused before anything is written: LMDB would take the value and
     * fail the whole commit with EIO (a short write), every time */
    return fbk_error_set(FBK_EINVAL, 0,
                         "lmdb: %s: %s: value of %zu bytes is larger than the lmdb: backend's "
                         "limit of %zu bytes per value (LMDB writes a value with one write, "
                         "which Linux caps at %zu bytes)",
                         e->what, what, len, max, FBK__LMDB_RW_MAX);
}

/* "<verb> of key <hex>" into buf[FBK__LMDB_WHAT]. */
static const char *key_what(char *buf, const char *verb, const fbk_key *key)
{
    char hex[33];
    fbk_key_format_hex(key, hex);
    snprintf(buf, FBK__LMDB_WHAT, "%s of key %s", verb, hex);
    return buf;
}

static int lmdb_store(void *self, const fbk_key *key, size_t len, fbk_fill_fn fill, void *arg)
{
    fbk__lmdb *b = self;
    char what[FBK__LMDB_WHAT];
    key_what(what, "store", key);
    int err = fbk__lmdb_check_len(&b->spill, len, what);
    if (err != FBK_OK)
        return err;
    struct store_arg a = {b->spill.main, key, len, fill, arg};
    return fbk__lmdb_write(&b->spill, store_op, &a, fbk__lmdb_pages_for(&b->spill, len), len, what);
}

struct store_many_arg {
    MDB_dbi dbi;
    fbk_store_req *reqs;
    size_t n;
    size_t max; /* the largest value (fbk__lmdb_value_max): larger ones are refused */
};

/* All of a batch's values in one write transaction (so one commit).  A value
 * whose fill fails is taken out again and the others go on; an LMDB error
 * dooms the transaction, and fbk__lmdb_write runs the op again after a map
 * growth, so every result is set afresh on each run. */
static int store_many_op(MDB_txn *txn, void *p)
{
    struct store_many_arg *a = p;
    for (size_t i = 0; i < a->n; i++) {
        fbk_store_req *r = &a->reqs[i];
        if (r->len > a->max) {
            r->result = FBK_EINVAL; /* message set by lmdb_store_many */
            continue;
        }
        struct store_arg one = {a->dbi, r->key, r->len, r->fill, r->arg};
        int rc = store_op(txn, &one);
        if (FBK__LMDB_FATAL(rc))
            return rc;
        r->result = rc;
    }
    return 0;
}

static int lmdb_store_many(void *self, fbk_store_req *reqs, size_t n)
{
    fbk__lmdb *b = self;
    size_t max = fbk__lmdb_value_max(&b->spill), pages = 0, bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (reqs[i].len > max)
            continue;
        pages += fbk__lmdb_pages_for(&b->spill, reqs[i].len);
        bytes += reqs[i].len;
    }
    char what[FBK__LMDB_WHAT], hex[33];
    fbk_key_format_hex(reqs[0].key, hex);
    snprintf(what, sizeof what, "store of %zu value(s), the first under key %s", n, hex);
    struct store_many_arg a = {b->spill.main, reqs, n, max};
    int rc = fbk__lmdb_write(&b->spill, store_many_op, &a, pages, bytes, what);
    int first = FBK_OK;
    for (size_t i = 0; i < n; i++) {
        if (reqs[i].len > max)
            reqs[i].result = FBK_EINVAL; /* refused, whatever the transaction did */
        else if (rc != FBK_OK)
            reqs[i].result = rc; /* the transaction did not commit */
        if (first == FBK_OK && reqs[i].result != FBK_OK) {
            first = reqs[i].result;
            if (reqs[i].len > max) /* its message, not a later one's */
                fbk__lmdb_check_len(&b->spill, reqs[i].len, key_what(what, "store", reqs[i].key));
        }
    }
    return first;
}

int fbk__lmdb_not_found(const char *what, const fbk_key *key)
{
    char hex[33];
    fbk_key_format_hex(key, hex);
    return fbk_error_set(FBK_ENOTFOUND, 0, "lmdb: %s: no key %s", what, hex);
}

static int lmdb_load(void *self, const fbk_key *key, fbk_read_fn read, void *arg)
{
    fbk__lmdb *b = self;
    char what[FBK__LMDB_WHAT];
    MDB_txn *txn;
    int err = fbk__lmdb_rtxn_begin(&b->spill, &txn);
    if (err != FBK_OK)
        return err;
    MDB_val k = {sizeof key->bytes, (void *)key->bytes}, v;
    int rc = mdb_get(txn, b->spill.main, &k, &v);
    if (rc == 0)
        err = read(v.mv_data, v.mv_size, arg); /* straight from the map */
    else if (rc == MDB_NOTFOUND)
        err = fbk__lmdb_not_found("spill", key);
    else
        err =
            fbk__lmdb_error(rc, "spill: %s in %s: get", key_what(what, "load", key), b->spill.path);
    fbk__lmdb_rtxn_end(&b->spill, txn);
    return err;
}

struct del_arg {
    MDB_dbi dbi;
    const fbk_key *key;
    const char *what;
};

static int del_op(MDB_txn *txn, void *p)
{
    struct del_arg *a = p;
    MDB_val k = {sizeof a->key->bytes, (void *)a->key->bytes};
    int rc = mdb_del(txn, a->dbi, &k, NULL);
    return rc == MDB_NOTFOUND ? fbk__lmdb_not_found(a->what, a->key) : rc;
}

int fbk__lmdb_delete(fbk__lmdb_env *e, MDB_dbi dbi, const fbk_key *key, const char *what)
{
    struct del_arg a = {dbi, key, what};
    char obj[FBK__LMDB_WHAT], hex[33];
    fbk_key_format_hex(key, hex);
    snprintf(obj, sizeof obj, "%s: remove of key %s", what, hex);
    return fbk__lmdb_write(e, del_op, &a, fbk__lmdb_pages_for(e, 0), 0, obj);
}

static int lmdb_remove(void *self, const fbk_key *key)
{
    fbk__lmdb *b = self;
    return fbk__lmdb_delete(&b->spill, b->spill.main, key, "spill");
}

/* ------------------------------------------------------------ open / close */

static void lmdb_close(void *self)
{
    fbk__lmdb *b = self;
    if (!b)
        return;
    fbk__lmdb_env_close(&b->durable);
    fbk__lmdb_env_unclaim(b);
    fbk__lmdb_env_close(&b->spill);
    /* this store's own spill area: the directory, then its lock file (gives
     * the disk space back; best effort: a later open removes what is left) */
    fbk__lmdb_spill_release(b);
    if (b->lock_fd >= 0)
        close(b->lock_fd); /* releases the flock */
    pthread_mutex_destroy(&b->loc_m);
    free(b);
}

static const fbk_backend_ops lmdb_ops = {
    .version = FBK_BACKEND_OPS_VERSION,
    .name = "lmdb",
    .store = lmdb_store,
    .load = lmdb_load,
    .remove = lmdb_remove,
    .open_location = fbk__lmdb_open_location,
    .close_location = fbk__lmdb_close_location,
    .scan = fbk__lmdb_scan,
    .persist = fbk__lmdb_persist,
    .register_key = fbk__lmdb_register_key,
    .remove_persisted = fbk__lmdb_remove_persisted,
    .sync = fbk__lmdb_sync,
    .close = lmdb_close,
    .persist_many = fbk__lmdb_persist_many,
    .register_many = fbk__lmdb_register_many,
    .store_many = lmdb_store_many,
    /* one writer per environment: a second worker only waits for the first
     * one's transaction (put 33 us vs 23 us per 16 KiB object, measured
     * before batched writes) */
    .workers = 1,
    .name_get = fbk__lmdb_name_get,
    .name_scan = fbk__lmdb_name_scan,
    .name_apply = fbk__lmdb_name_apply,
    .contains = fbk__lmdb_contains,
    .drop_location = fbk__lmdb_drop_location,
    .load_persisted = fbk__lmdb_load_persisted,
    .persist_names = fbk__lmdb_persist_names,
    .remove_unbound = fbk__lmdb_remove_unbound,
    .write_names = fbk__lmdb_write_names,
    .remove_unbound_many = fbk__lmdb_remove_unbound_many,
};

static int open_envs(fbk__lmdb *b, const char *dir, const fbk_store_options *opts)
{
    size_t map_size = opts && opts->map_size ? opts->map_size : DEFAULT_MAP_SIZE;
    long pg = sysconf(_SC_PAGESIZE);
    size_t page = pg > 0 ? (size_t)pg : 4096;
    map_size = (map_size + page - 1) / page * page;

    char durable[4200];
    if (opts && opts->durable_dir && opts->durable_dir[0])
        snprintf(durable, sizeof durable, "%s", opts->durable_dir);
    else
        snprintf(durable, sizeof durable, "%s/durable", dir);
    if (strlen(durable) >= 4096)
        return fbk_error_set(FBK_EINVAL, 0, "lmdb: durable directory name too long: %.200s...",
                             durable);

    /* the durable environment exists before it is registered (a read-only
     * store needs it to) */
    int err = b->readonly ? FBK_OK : fbk__lmdb_mkdirs(durable);
    if (err == FBK_OK)
        err = fbk__lmdb_env_claim(b, durable);
    if (err == FBK_OK && !b->readonly)
        fbk__lmdb_spill_clean(dir); /* spill areas of dead processes */
    if (err == FBK_OK)
        err = fbk__lmdb_spill_claim(b, dir);
    if (err == FBK_OK)
        err = fbk__lmdb_env_open(&b->spill, "spill", b->spill_dir, SPILL_FLAGS, map_size, 0);
    /* After a failed write LMDB may mark an environment fatal (MDB_PANIC on
     * every later transaction), and a failed map resize leaves it without a
     * map (broken).  Either environment is then reopened in place by the
     * next operation (lmdb_env.c fbk__lmdb_reopen, at the last map size that
     * worked): it holds what the last successful commit wrote; the durable
     * one's location handles are opened again under the same numbers.  See
     * docs/lmdb-backend.md. */
    if (err == FBK_OK)
        b->spill.reopenable = 1;
    if (err == FBK_OK) {
        /* Processes opening the durable environment at once take turns
         * (durable/open.lock, flock): the first one creates data.mdb, and
         * the open's check of data.mdb (lmdb_env.c) must not meet the
         * 0-byte file of a creation under way in another process.  A
         * read-only store waits for a writer's open (shared lock) and never
         * creates the file: without it no writer can be creating. */
        char lock[4300];
        snprintf(lock, sizeof lock, "%s/open.lock", durable);
        int lfd = open(lock, b->readonly ? O_RDONLY | O_CLOEXEC : O_RDWR | O_CREAT | O_CLOEXEC,
                       0644);
        if (lfd < 0 && (!b->readonly || errno != ENOENT))
            err = fbk_error_from_errno(errno, "lmdb: open %s", lock);
        while (lfd >= 0 && flock(lfd, b->readonly ? LOCK_SH : LOCK_EX) != 0 && errno == EINTR)
            ;
        if (err == FBK_OK)
            err = fbk__lmdb_env_open(&b->durable, "durable", durable,
                                     b->readonly ? MDB_RDONLY : DURABLE_FLAGS, map_size,
                                     FBK__LMDB_MAXDBS);
        if (lfd >= 0)
            close(lfd); /* releases the flock */
    }
    if (err == FBK_OK)
        b->durable.reopenable = 1;
    return err;
}

int fbk_backend_lmdb_create(const char *dir, const fbk_store_options *opts,
                            const fbk_backend_ops **ops, void **self)
{
    if (!dir || !dir[0] || !ops || !self)
        return fbk_error_set(FBK_EINVAL, 0, "lmdb: missing directory or out-parameter");
    if (strlen(dir) >= 4000)
        return fbk_error_set(FBK_EINVAL, 0,
                             "lmdb: directory name of %zu bytes is too long: %.200s...",
                             strlen(dir), dir);
    fbk__lmdb *b = calloc(1, sizeof *b);
    if (!b)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "lmdb: open %s: out of memory", dir);
    b->lock_fd = -1;
    b->spill_lock_fd = -1;
    b->readonly = opts && (opts->flags & FBK_STORE_READONLY);
    pthread_mutex_init(&b->loc_m, NULL);
    int err = b->readonly ? FBK_OK : fbk__lmdb_mkdirs(dir);
    if (err == FBK_OK)
        err = fbk__lmdb_dir_lock(b, dir);
    if (err == FBK_OK)
        err = open_envs(b, dir, opts);
    if (err != FBK_OK) {
        lmdb_close(b);
        return err;
    }
    *ops = &lmdb_ops;
    *self = b;
    return FBK_OK;
}

/* The lmdb: scheme (fbk_backend.h, the registry).  Its URI parameters
 * override the same fields of fbk_store_options: the fields are kept for
 * programs written before per-backend parameters, a URI parameter wins. */
static const fbk_backend_param lmdb_params[] = {
    {"map_size", FBK_PARAM_SIZE,
     "initial map size of each environment (fbk_store_options.map_size)"},
    {"durable_dir", FBK_PARAM_STRING,
     "directory of the durable environment (fbk_store_options.durable_dir)"},
    {NULL, FBK_PARAM_STRING, NULL},
};

static int lmdb_scheme_create(void *ctx, const char *dir, const fbk_backend_params *params,
                              const fbk_store_options *opts, const fbk_backend_ops **ops,
                              void **self)
{
    (void)ctx;
    fbk_store_options o = *opts;
    uint64_t size;
    if (fbk_backend_params_get(params, "map_size", NULL, &size)) {
#if SIZE_MAX < UINT64_MAX
        if (size > SIZE_MAX)
            return fbk_error_set(FBK_EINVAL, 0, "lmdb: map_size=%llu is too large",
                                 (unsigned long long)size);
#endif
        o.map_size = (size_t)size;
    }
    fbk_backend_params_get(params, "durable_dir", &o.durable_dir, NULL);
    return fbk_backend_lmdb_create(dir, &o, ops, self);
}

const fbk_backend_scheme fbk__lmdb_scheme = {
    .version = FBK_BACKEND_SCHEME_VERSION,
    .scheme = "lmdb",
    .params = lmdb_params,
    .flags = FBK_BACKEND_SCHEME_NEEDS_ARG,
    .create = lmdb_scheme_create,
};
