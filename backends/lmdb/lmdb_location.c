/* lmdb_location.c -- durable locations of the lmdb: backend: one named
 * database of the durable environment per location.  Values are copied
 * between the environments with MDB_RESERVE + memcpy, so each copy is one
 * pass over the bytes. */
#include "lmdb_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ open / close */

struct open_arg {
    fbk__lmdb_env *e;
    const char *name;
    MDB_dbi dbi;
    MDB_dbi names; /* its name index (lmdb_names.c) */
};

static int open_op(MDB_txn *txn, void *p)
{
    struct open_arg *a = p;
    char names[FBK__LMDB_NAME_MAX + 16];
    int rc = mdb_dbi_open(txn, a->name, MDB_CREATE, &a->dbi);
    if (rc == 0) /* for a reopen in place */
        rc = fbk__lmdb_note_dbi(a->e, a->dbi, a->name);
    if (rc == 0)
        rc = fbk__lmdb_names_dbname(a->name, names, sizeof names);
    if (rc == 0)
        rc = mdb_dbi_open(txn, names, MDB_CREATE, &a->names);
    if (rc == 0)
        rc = fbk__lmdb_note_dbi(a->e, a->names, names);
    return rc;
}

int fbk__lmdb_open_location(void *self, const char *location, void **loc)
{
    fbk__lmdb *b = self;
    size_t n = location ? strlen(location) : 0;
    if (n == 0)
        return fbk_error_set(FBK_EINVAL, 0, "lmdb: empty location name");
    if (n > FBK__LMDB_NAME_MAX)
        return fbk_error_set(FBK_EINVAL, 0,
                             "lmdb: location name of %zu bytes is too long (at most %d)", n,
                             FBK__LMDB_NAME_MAX);
    fbk__lmdb_loc *l = malloc(sizeof *l + n + 1);
    if (!l)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "lmdb: out of memory");
    memcpy(l->name, location, n + 1);
    /* mdb_dbi_open creates the database in a write transaction; the handle is
     * usable by every transaction once that one committed. */
    struct open_arg a = {&b->durable, l->name, 0, 0};
    int err = fbk__lmdb_write(&b->durable, open_op, &a, fbk__lmdb_pages_for(&b->durable, 0), 0);
    if (err != FBK_OK) {
        free(l);
        return err;
    }
    l->dbi = a.dbi;
    l->names = a.names;
    l->has_names = 1;
    *loc = l;
    return FBK_OK;
}

void fbk__lmdb_close_location(void *self, void *loc)
{
    (void)self;
    /* The handle stays open in the environment: other fbk_location objects
     * may use the same database (mdb_dbi_open returns the same handle). */
    free(loc);
}

/* -------------------------------------------------------------------- scan */

struct junk {
    MDB_val *keys;
    size_t n, cap;
};

static int junk_add(struct junk *j, const MDB_val *k)
{
    if (j->n == j->cap) {
        size_t cap = j->cap ? 2 * j->cap : 16;
        MDB_val *keys = realloc(j->keys, cap * sizeof *keys);
        if (!keys)
            return fbk_error_set(FBK_ENOMEM, ENOMEM, "lmdb: out of memory");
        j->keys = keys;
        j->cap = cap;
    }
    void *copy = malloc(k->mv_size ? k->mv_size : 1);
    if (!copy)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "lmdb: out of memory");
    memcpy(copy, k->mv_data, k->mv_size);
    j->keys[j->n++] = (MDB_val){k->mv_size, copy};
    return FBK_OK;
}

static void junk_free(struct junk *j)
{
    for (size_t i = 0; i < j->n; i++)
        free(j->keys[i].mv_data);
    free(j->keys);
}

struct junk_arg {
    MDB_dbi dbi;
    const struct junk *j;
};

static int junk_del_op(MDB_txn *txn, void *p)
{
    struct junk_arg *a = p;
    for (size_t i = 0; i < a->j->n; i++) {
        int rc = mdb_del(txn, a->dbi, &a->j->keys[i], NULL);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return rc;
    }
    return 0;
}

/* Lists the keys of l to each() and collects the entries that are not keys. */
static int scan_list(fbk__lmdb *b, fbk__lmdb_loc *l, fbk_key_fn each, void *arg, struct junk *j)
{
    MDB_txn *txn;
    int err = fbk__lmdb_rtxn_begin(&b->durable, &txn);
    if (err != FBK_OK)
        return err;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, l->dbi, &cur);
    if (rc != 0) {
        fbk__lmdb_rtxn_end(&b->durable, txn);
        return fbk__lmdb_error(rc, "location %s: open cursor", l->name);
    }
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && err == FBK_OK;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != sizeof(fbk_key)) {
            err = junk_add(j, &k);
            continue;
        }
        fbk_key key;
        memcpy(key.bytes, k.mv_data, sizeof key.bytes);
        err = each(&key, arg);
    }
    if (err == FBK_OK && rc != MDB_NOTFOUND)
        err = fbk__lmdb_error(rc, "location %s: scan", l->name);
    mdb_cursor_close(cur);
    fbk__lmdb_rtxn_end(&b->durable, txn);
    return err;
}

int fbk__lmdb_scan(void *self, void *loc, fbk_key_fn each, void *arg)
{
    fbk__lmdb *b = self;
    fbk__lmdb_loc *l = loc;
    struct junk j = {0};
    int err = scan_list(b, l, each, arg, &j);
    if (err == FBK_OK && j.n > 0) {
        struct junk_arg a = {l->dbi, &j};
        fbk__lmdb_touch(&b->durable, l->dbi);
        err = fbk__lmdb_write(&b->durable, junk_del_op, &a,
                              j.n * fbk__lmdb_pages_for(&b->durable, 0), 0);
        fbk__lmdb_touch(&b->durable, l->dbi);
    }
    size_t dropped = j.n;
    junk_free(&j);
    if (err != FBK_OK)
        return err;
    return dropped > (size_t)0x7fffffff ? 0x7fffffff : (int)dropped;
}

/* ------------------------------------------------------------------ copies */

/* Puts n values under keys into dbi, each by MDB_RESERVE + memcpy. */
struct copy_arg {
    MDB_dbi dbi;
    const fbk_key *keys;
    const MDB_val *vals;
    size_t n;
};

static int copy_op(MDB_txn *txn, void *p)
{
    struct copy_arg *a = p;
    for (size_t i = 0; i < a->n; i++) {
        MDB_val k = {sizeof(fbk_key), (void *)a->keys[i].bytes};
        MDB_val v = {a->vals[i].mv_size, NULL};
        int rc = mdb_put(txn, a->dbi, &k, &v, MDB_RESERVE);
        if (rc != 0)
            return rc;
        memcpy(v.mv_data, a->vals[i].mv_data, v.mv_size);
    }
    return 0;
}

/* Looks up n keys in a read transaction of `from`; vals point into its map.
 * pages/bytes: what writing them all elsewhere needs. */
static int get_all(fbk__lmdb_env *from, MDB_txn *txn, MDB_dbi dbi, const char *what,
                   const fbk_key *keys, size_t n, MDB_val *vals, fbk__lmdb_env *to, size_t *pages,
                   size_t *bytes)
{
    *pages = *bytes = 0;
    for (size_t i = 0; i < n; i++) {
        MDB_val k = {sizeof(fbk_key), (void *)keys[i].bytes};
        int rc = mdb_get(txn, dbi, &k, &vals[i]);
        if (rc == MDB_NOTFOUND)
            return fbk__lmdb_not_found(what, &keys[i]);
        if (rc != 0)
            return fbk__lmdb_error(rc, "%s: get", from->what);
        *pages += fbk__lmdb_pages_for(to, vals[i].mv_size);
        *bytes += vals[i].mv_size;
    }
    return FBK_OK;
}

/* spill -> location.  The spill read transaction stays open while the
 * durable batch runs (spill before durable in the lock order). */
static int persist_keys(fbk__lmdb *b, fbk__lmdb_loc *l, const fbk_key *keys, size_t n,
                        MDB_val *vals)
{
    MDB_txn *txn;
    int err = fbk__lmdb_rtxn_begin(&b->spill, &txn);
    if (err != FBK_OK)
        return err;
    size_t pages, bytes;
    err =
        get_all(&b->spill, txn, b->spill.main, "spill", keys, n, vals, &b->durable, &pages, &bytes);
    if (err == FBK_OK) {
        struct copy_arg a = {l->dbi, keys, vals, n};
        fbk__lmdb_touch(&b->durable, l->dbi); /* before and after: see fbk__lmdb_touch */
        err = fbk__lmdb_write(&b->durable, copy_op, &a, pages, bytes);
        fbk__lmdb_touch(&b->durable, l->dbi);
    }
    fbk__lmdb_rtxn_end(&b->spill, txn);
    return err;
}

int fbk__lmdb_persist(void *self, void *loc, const fbk_key *key)
{
    MDB_val v;
    return persist_keys(self, loc, key, 1, &v);
}

int fbk__lmdb_persist_many(void *self, void *loc, const fbk_key *keys, size_t n)
{
    if (n == 0)
        return FBK_OK;
    MDB_val *vals = malloc(n * sizeof *vals);
    if (!vals)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "lmdb: out of memory");
    int err = persist_keys(self, loc, keys, n, vals);
    free(vals);
    return err;
}

/* location -> spill.  Runs inside the spill batch; takes a durable read
 * transaction there (spill before durable).  Sizes were measured before
 * joining; every key is looked up again before the first put, so a missing
 * key leaves nothing behind. */
struct reg_arg {
    fbk__lmdb *b;
    fbk__lmdb_loc *l;
    const fbk_key *keys;
    size_t n;
    MDB_val *vals;
};

static int register_op(MDB_txn *txn, void *p)
{
    struct reg_arg *a = p;
    fbk__lmdb *b = a->b;
    MDB_txn *rtxn;
    int err = fbk__lmdb_rtxn_begin(&b->durable, &rtxn);
    if (err != FBK_OK)
        return err;
    size_t pages, bytes;
    err = get_all(&b->durable, rtxn, a->l->dbi, a->l->name, a->keys, a->n, a->vals, &b->spill,
                  &pages, &bytes);
    struct copy_arg c = {b->spill.main, a->keys, a->vals, a->n};
    int rc = err == FBK_OK ? copy_op(txn, &c) : 0;
    fbk__lmdb_rtxn_end(&b->durable, rtxn);
    return rc ? rc : err;
}

static int register_keys(fbk__lmdb *b, fbk__lmdb_loc *l, const fbk_key *keys, size_t n,
                         MDB_val *vals)
{
    MDB_txn *txn;
    int err = fbk__lmdb_rtxn_begin(&b->durable, &txn);
    if (err != FBK_OK)
        return err;
    size_t pages, bytes;
    err = get_all(&b->durable, txn, l->dbi, l->name, keys, n, vals, &b->spill, &pages, &bytes);
    fbk__lmdb_rtxn_end(&b->durable, txn);
    if (err != FBK_OK)
        return err;
    struct reg_arg a = {b, l, keys, n, vals};
    return fbk__lmdb_write(&b->spill, register_op, &a, pages, bytes);
}

int fbk__lmdb_register_key(void *self, void *loc, const fbk_key *key)
{
    MDB_val v;
    return register_keys(self, loc, key, 1, &v);
}

int fbk__lmdb_register_many(void *self, void *loc, const fbk_key *keys, size_t n)
{
    if (n == 0)
        return FBK_OK;
    MDB_val *vals = malloc(n * sizeof *vals);
    if (!vals)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "lmdb: out of memory");
    int err = register_keys(self, loc, keys, n, vals);
    free(vals);
    return err;
}

/* ------------------------------------------------------------ remove, sync */

int fbk__lmdb_remove_persisted(void *self, void *loc, const fbk_key *key)
{
    fbk__lmdb *b = self;
    fbk__lmdb_loc *l = loc;
    fbk__lmdb_touch(&b->durable, l->dbi);
    int err = fbk__lmdb_delete(&b->durable, l->dbi, key, l->name);
    fbk__lmdb_touch(&b->durable, l->dbi);
    return err;
}

int fbk__lmdb_sync(void *self, void *loc)
{
    fbk__lmdb *b = self;
    fbk__lmdb_loc *l = loc;
    /* one environment: the flush covers every location; a failed one is
     * final for the locations it concerned (lmdb_env.c) */
    return fbk__lmdb_env_sync(&b->durable, l->dbi, l->name);
}
