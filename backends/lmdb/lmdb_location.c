/* lmdb_location.c -- durable locations of the lmdb: backend: one named
 * database of the durable environment per location.  Values are copied
 * between the environments with MDB_RESERVE + memcpy, so each copy is one
 * pass over the bytes. */
#include "lmdb_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ open / close */

struct open_arg {
    fbk__lmdb_env *e;
    const char *name;
    const char *path;
    MDB_dbi dbi;
    MDB_dbi names; /* its name index (lmdb_names.c) */
    MDB_dbi refs;  /* the index's bindings per object key */
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
    if (rc == 0)
        rc = fbk__lmdb_refs_dbname(a->name, names, sizeof names);
    if (rc == 0)
        rc = mdb_dbi_open(txn, names, MDB_CREATE, &a->refs);
    if (rc == 0)
        rc = fbk__lmdb_note_dbi(a->e, a->refs, names);
    if (rc == 0)
        rc = fbk__lmdb_refs_build(txn, a->names, a->refs);
    if (rc == MDB_DBS_FULL) /* checked before LMDB writes anything: txn intact */
        return fbk_error_set(FBK_ENOSPC, 0,
                             "lmdb: location %s: too many locations: a store opens at most %d "
                             "locations of %s between its open and close (a closed location "
                             "keeps its slot); drop one (fbk_location_drop) or reopen the store "
                             "(%s)",
                             a->name, FBK__LMDB_MAXDBS / FBK__LMDB_LOC_DBS, a->path,
                             mdb_strerror(rc));
    return rc;
}

/* A read-only store: opens an existing location's databases in a read
 * transaction (fbk__lmdb_read_open), creating nothing.  No such location is
 * FBK_ENOTFOUND; no name index (a location written by a version before
 * maps) leaves a.names 0 (has_names 0). */
static int open_ro_op(MDB_txn *txn, void *p)
{
    struct open_arg *a = p;
    char names[FBK__LMDB_NAME_MAX + 16];
    int rc = mdb_dbi_open(txn, a->name, 0, &a->dbi);
    if (rc == MDB_NOTFOUND)
        return fbk_error_set(FBK_ENOTFOUND, 0,
                             "lmdb: location %s: no such location in %s (the store was opened "
                             "read-only, so it is not created)",
                             a->name, a->path);
    if (rc == 0) /* for a reopen in place */
        rc = fbk__lmdb_note_dbi(a->e, a->dbi, a->name);
    if (rc == 0)
        rc = fbk__lmdb_names_dbname(a->name, names, sizeof names);
    if (rc == 0) {
        rc = mdb_dbi_open(txn, names, 0, &a->names);
        if (rc == 0)
            rc = fbk__lmdb_note_dbi(a->e, a->names, names);
        else if (rc == MDB_NOTFOUND)
            rc = 0, a->names = 0;
    }
    if (rc == MDB_DBS_FULL)
        return fbk_error_set(FBK_ENOSPC, 0,
                             "lmdb: location %s: too many locations: a store opens at most %d "
                             "locations of %s between its open and close (%s)",
                             a->name, FBK__LMDB_MAXDBS / FBK__LMDB_LOC_DBS, a->path,
                             mdb_strerror(rc));
    return rc;
}

static int check_name(const char *location, size_t *len)
{
    size_t n = location ? strlen(location) : 0;
    if (n == 0)
        return fbk_error_set(FBK_EINVAL, 0, "lmdb: empty location name");
    if (n > FBK__LMDB_NAME_MAX)
        return fbk_error_set(FBK_EINVAL, 0,
                             "lmdb: location name of %zu bytes is too long (at most %d)", n,
                             FBK__LMDB_NAME_MAX);
    *len = n;
    return FBK_OK;
}

int fbk__lmdb_open_location(void *self, const char *location, void **loc)
{
    fbk__lmdb *b = self;
    size_t n = 0;
    int err = check_name(location, &n);
    if (err != FBK_OK)
        return err;
    fbk__lmdb_loc *l = malloc(sizeof *l + n + 1);
    if (!l)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "lmdb: location %s: out of memory", location);
    memcpy(l->name, location, n + 1);
    /* mdb_dbi_open creates the database in a write transaction; the handle is
     * usable by every transaction once that one committed. */
    struct open_arg a = {&b->durable, l->name, b->durable.path, 0, 0, 0};
    char what[FBK__LMDB_WHAT];
    snprintf(what, sizeof what, "open of location %s", l->name);
    pthread_mutex_lock(&b->loc_m); /* no drop of this name meanwhile */
    if (b->readonly)               /* one transaction at a time opens handles: loc_m */
        err = fbk__lmdb_read_open(&b->durable, open_ro_op, &a, what);
    else
        err =
            fbk__lmdb_write(&b->durable, open_op, &a, fbk__lmdb_pages_for(&b->durable, 0), 0, what);
    if (err == FBK_OK && (a.dbi >= sizeof b->loc_open / sizeof b->loc_open[0] ||
                          a.names >= sizeof b->loc_open / sizeof b->loc_open[0] ||
                          a.refs >= sizeof b->loc_open / sizeof b->loc_open[0]))
        err = fbk_error_set(FBK_EIO, 0, "lmdb: location %s: LMDB gave handle %u, beyond %d",
                            l->name, (unsigned)a.dbi, FBK__LMDB_MAXDBS + 1);
    if (err == FBK_OK)
        b->loc_open[a.dbi]++;
    pthread_mutex_unlock(&b->loc_m);
    if (err != FBK_OK) {
        free(l);
        return err;
    }
    l->dbi = a.dbi;
    l->names = a.names;
    l->refs = a.refs;
    l->has_names = !b->readonly || a.names != 0; /* handle 0 is LMDB's free list */
    *loc = l;
    return FBK_OK;
}

void fbk__lmdb_close_location(void *self, void *loc)
{
    fbk__lmdb *b = self;
    fbk__lmdb_loc *l = loc;
    /* The handle stays open in the environment: other fbk_location objects
     * may use the same database (mdb_dbi_open returns the same handle), and
     * LMDB forbids closing one a transaction may still use. */
    pthread_mutex_lock(&b->loc_m);
    b->loc_open[l->dbi]--;
    pthread_mutex_unlock(&b->loc_m);
    free(l);
}

/* -------------------------------------------------------------------- drop */

struct drop_arg {
    fbk__lmdb *b;
    const char *name;
};

/* Runs with loc_m held, so no location of this name opens or closes. */
static int drop_op(MDB_txn *txn, void *p)
{
    struct drop_arg *a = p;
    fbk__lmdb *b = a->b;
    MDB_dbi dbi;
    /* in the write transaction: LMDB allows one transaction at a time to
     * open handles, and only writers do */
    int rc = mdb_dbi_open(txn, a->name, 0, &dbi);
    if (rc == MDB_NOTFOUND)
        return fbk_error_set(FBK_ENOTFOUND, 0, "lmdb: drop of location %s: no such location in %s",
                             a->name, b->durable.path);
    if (rc == MDB_DBS_FULL) /* before LMDB wrote anything: txn intact */
        return fbk_error_set(FBK_ENOSPC, 0,
                             "lmdb: drop of location %s: every one of the %d location slots of "
                             "%s is taken, and finding this location needs one; drop a location "
                             "opened since the store opened, or reopen the store (%s)",
                             a->name, FBK__LMDB_MAXDBS / FBK__LMDB_LOC_DBS, b->durable.path,
                             mdb_strerror(rc));
    if (rc != 0)
        return rc;
    if (dbi < sizeof b->loc_open / sizeof b->loc_open[0] && b->loc_open[dbi] > 0)
        /* its handle is open already, so nothing changed */
        return fbk_error_set(FBK_EBUSY, 0,
                             "lmdb: drop of location %s: it is open (%u fbk_location object(s)); "
                             "close it first",
                             a->name, b->loc_open[dbi]);
    /* its name index and the index's counts go with it (a location opened
     * by an earlier version may have neither) */
    char names[FBK__LMDB_NAME_MAX + 16];
    MDB_dbi ndbi;
    for (int i = 0; i < 2 && rc == 0; i++) {
        rc = i == 0 ? fbk__lmdb_names_dbname(a->name, names, sizeof names)
                    : fbk__lmdb_refs_dbname(a->name, names, sizeof names);
        if (rc == 0) {
            rc = mdb_dbi_open(txn, names, 0, &ndbi);
            if (rc == 0)
                rc = mdb_drop(txn, ndbi, 1);
            else if (rc == MDB_NOTFOUND)
                rc = 0;
        }
    }
    if (rc != 0)
        return rc;
    return mdb_drop(txn, dbi, 1); /* deletes the database and closes the handle */
}

int fbk__lmdb_drop_location(void *self, const char *name)
{
    fbk__lmdb *b = self;
    size_t n;
    int err = check_name(name, &n);
    if (err != FBK_OK)
        return err;
    if (b->readonly)
        return fbk_error_set(FBK_EREADONLY, 0,
                             "lmdb: drop of location %s: the store was opened "
                             "read-only",
                             name);
    char what[FBK__LMDB_WHAT];
    snprintf(what, sizeof what, "drop of location %s", name);
    struct drop_arg a = {b, name};
    pthread_mutex_lock(&b->loc_m);
    err = fbk__lmdb_write(&b->durable, drop_op, &a, fbk__lmdb_pages_for(&b->durable, 0), 0, what);
    pthread_mutex_unlock(&b->loc_m);
    return err;
}

/* -------------------------------------------------------------------- scan */

/* Damage a scan reports (lmdb: makes no temporaries, so nothing in a
 * location is libfbk's to delete: every entry whose key is not one libfbk
 * makes -- 16 bytes, an RFC 4122 version-4 UUID -- is damage or a
 * stranger's, and is left alone). */
struct damage {
    size_t n;        /* damaged entries */
    char first[160]; /* the first one, described */
};

static int v4_key(const MDB_val *k)
{
    const unsigned char *p = k->mv_data;
    return k->mv_size == sizeof(fbk_key) && (p[6] & 0xf0) == 0x40 && (p[8] & 0xc0) == 0x80;
}

static void damage_add(struct damage *d, const MDB_val *k, const MDB_val *v, const char *why)
{
    if (d->n++ > 0)
        return;
    char hex[2 * 40 + 4];
    size_t shown = k->mv_size < 40 ? k->mv_size : 40;
    const unsigned char *p = k->mv_data;
    for (size_t i = 0; i < shown; i++)
        snprintf(hex + 2 * i, 3, "%02x", p[i]);
    hex[2 * shown] = '\0';
    if (shown < k->mv_size)
        strcat(hex, "...");
    snprintf(d->first, sizeof d->first, "key %s (%zu bytes, value %zu bytes): %s",
             shown ? hex : "(empty)", k->mv_size, v->mv_size, why);
}

/* Lists the keys of l to each() and notes the entries that are not keys. */
static int scan_list(fbk__lmdb *b, fbk__lmdb_loc *l, fbk_key_fn each, void *arg, struct damage *d)
{
    MDB_txn *txn;
    int err = fbk__lmdb_rtxn_begin(&b->durable, &txn);
    if (err != FBK_OK)
        return err;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, l->dbi, &cur);
    if (rc != 0) {
        fbk__lmdb_rtxn_end(&b->durable, txn);
        return fbk__lmdb_error(rc, "location %s in %s: open cursor", l->name, b->durable.path);
    }
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && err == FBK_OK;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        /* Values are not looked at: that would read a page per large value
         * at every open, and every load verifies the value's frame anyway
         * (FBK_ECORRUPT).  A key is all the scan reads. */
        const char *why = k.mv_size != sizeof(fbk_key) ? "key is not 16 bytes long"
                          : !v4_key(&k)                ? "key is not a version-4 UUID"
                                                       : NULL;
        if (why) {
            damage_add(d, &k, &v, why);
            continue;
        }
        fbk_key key;
        memcpy(key.bytes, k.mv_data, sizeof key.bytes);
        err = each(&key, arg);
    }
    if (err == FBK_OK && rc != MDB_NOTFOUND)
        err = fbk__lmdb_error(rc, "location %s in %s: scan", l->name, b->durable.path);
    mdb_cursor_close(cur);
    fbk__lmdb_rtxn_end(&b->durable, txn);
    return err;
}

int fbk__lmdb_scan(void *self, void *loc, fbk_key_fn each, void *arg)
{
    fbk__lmdb *b = self;
    fbk__lmdb_loc *l = loc;
    struct damage d = {0};
    int err = scan_list(b, l, each, arg, &d);
    if (err == FBK_OK && d.n > 0)
        err = fbk_error_set(FBK_ECORRUPT, 0,
                            "lmdb: location %s in %s is damaged: %zu entr%s libfbk did not "
                            "write, the first: %s; nothing was deleted",
                            l->name, b->durable.path, d.n, d.n == 1 ? "y" : "ies", d.first);
    return err; /* lmdb: has no junk to delete: 0 */
}

/* ------------------------------------------------------------------ copies */

/* The name changes a persist or write carries (persist_names, write_names):
 * written after the objects, in the transaction of the last chunk. */
typedef struct names_part {
    const fbk__lmdb_loc *l;
    const fbk_name_op *ops;
    size_t nops;
    int missing; /* out: a binding refused (fbk__lmdb_names_check) */
} names_part;

/* Before a chunk's first write: a refused binding must leave the shared
 * transaction untouched.  keys[0..n) are the chunk's objects. */
static int names_check(MDB_txn *txn, names_part *np, const fbk_key *keys, size_t n)
{
    return np->nops ? fbk__lmdb_names_check(txn, np->l, np->ops, np->nops, keys, n, &np->missing)
                    : 0;
}

static int names_put(MDB_txn *txn, const names_part *np)
{
    return np->nops ? fbk__lmdb_names_put(txn, np->l, np->ops, np->nops, NULL) : 0;
}

/* Puts n values under keys into dbi, each by MDB_RESERVE + memcpy. */
struct copy_arg {
    MDB_dbi dbi;
    const fbk_key *keys;
    const MDB_val *vals;
    size_t n;
    names_part np;
};

static int copy_op(MDB_txn *txn, void *p)
{
    struct copy_arg *a = p;
    int rc = names_check(txn, &a->np, a->keys, a->n);
    if (rc)
        return rc;
    for (size_t i = 0; i < a->n; i++) {
        MDB_val k = {sizeof(fbk_key), (void *)a->keys[i].bytes};
        MDB_val v = {a->vals[i].mv_size, NULL};
        rc = mdb_put(txn, a->dbi, &k, &v, MDB_RESERVE);
        if (rc != 0)
            return rc;
        memcpy(v.mv_data, a->vals[i].mv_data, v.mv_size);
    }
    return names_put(txn, &a->np);
}

/* "<verb> of key <hex> <dir> location <name>" (n == 1) or "<verb> of n keys
 * (the first <hex>) ..." into buf[FBK__LMDB_WHAT]. */
static const char *keys_what(char *buf, const char *verb, const fbk_key *keys, size_t n,
                             const char *dir, const fbk__lmdb_loc *l)
{
    char hex[33];
    fbk_key_format_hex(&keys[0], hex);
    if (n == 1)
        snprintf(buf, FBK__LMDB_WHAT, "%s of key %s %s location %s", verb, hex, dir, l->name);
    else
        snprintf(buf, FBK__LMDB_WHAT, "%s of %zu keys (the first %s) %s location %s", verb, n, hex,
                 dir, l->name);
    return buf;
}

/* One transaction of a persist or a write: op(arg) over keys[0..k); the
 * last chunk (last) also carries the name changes ops[0..nops) into np.
 * verb names it in messages. */
static int run_chunk(fbk__lmdb *b, fbk__lmdb_loc *l, fbk__lmdb_op_fn op, void *arg, names_part *np,
                     int last, const fbk_name_op *ops, size_t nops, size_t pages, size_t bytes,
                     const char *verb, const fbk_key *keys, size_t k)
{
    if (last && nops) {
        np->ops = ops;
        np->nops = nops;
        pages += fbk__lmdb_names_pages(&b->durable, ops, nops);
        bytes += fbk__lmdb_names_bytes(ops, nops);
    }
    char what[FBK__LMDB_WHAT], v[64];
    snprintf(v, sizeof v, "%s%s", verb, np->nops ? " (with names)" : "");
    fbk__lmdb_touch(&b->durable, l->dbi); /* before and after: see fbk__lmdb_touch */
    int err = fbk__lmdb_write(&b->durable, op, arg, pages, bytes,
                              keys_what(what, v, keys, k, "into", l));
    fbk__lmdb_touch(&b->durable, l->dbi);
    if (err == FBK_EINVAL && np->missing)
        err = fbk__lmdb_names_refused(l, ops, np->missing);
    return err;
}

/* Looks up n keys in a read transaction of `from` (`what`: its name in
 * messages); vals point into its map.  Each must fit into `to`. */
static int get_all(fbk__lmdb_env *from, MDB_txn *txn, MDB_dbi dbi, const char *what,
                   const fbk_key *keys, size_t n, MDB_val *vals, fbk__lmdb_env *to)
{
    char obj[FBK__LMDB_WHAT + 64], hex[33]; /* "copy of key HEX from WHAT" */
    for (size_t i = 0; i < n; i++) {
        MDB_val k = {sizeof(fbk_key), (void *)keys[i].bytes};
        int rc = mdb_get(txn, dbi, &k, &vals[i]);
        if (rc == MDB_NOTFOUND)
            return fbk__lmdb_not_found(what, &keys[i]);
        fbk_key_format_hex(&keys[i], hex);
        if (rc != 0)
            return fbk__lmdb_error(rc, "%s: get of key %s in %s", what, hex, from->path);
        snprintf(obj, sizeof obj, "copy of key %s from %s", hex, what);
        int err = fbk__lmdb_check_len(to, vals[i].mv_size, obj);
        if (err != FBK_OK)
            return err;
    }
    return FBK_OK;
}

/* The keys vals[0..k) that one write transaction copies: as many as fit in
 * FBK__LMDB_TXN_BYTES (at least one); their pages and bytes in `to`. */
static size_t chunk(const fbk__lmdb_env *to, const MDB_val *vals, size_t n, size_t *pages,
                    size_t *bytes)
{
    size_t k = 0;
    *pages = *bytes = 0;
    while (k < n && (k == 0 || *bytes + vals[k].mv_size <= FBK__LMDB_TXN_BYTES)) {
        *pages += fbk__lmdb_pages_for(to, vals[k].mv_size);
        *bytes += vals[k].mv_size;
        k++;
    }
    return k;
}

/* spill -> location, one write transaction per chunk (see chunk): LMDB
 * keeps a transaction's dirty pages in memory until it commits, so a save
 * of more than RAM must not be one transaction.  The spill read
 * transaction stays open while the durable batches run (spill before
 * durable in the lock order).  Name changes ops[0..nops) go into the last
 * chunk's transaction: after every object they may bind, and with the last
 * of them. */
static int persist_keys(fbk__lmdb *b, fbk__lmdb_loc *l, const fbk_key *keys, size_t n,
                        MDB_val *vals, const fbk_name_op *ops, size_t nops)
{
    MDB_txn *txn;
    int err = fbk__lmdb_rtxn_begin(&b->spill, &txn);
    if (err != FBK_OK)
        return err;
    err = get_all(&b->spill, txn, b->spill.main, "spill", keys, n, vals, &b->durable);
    for (size_t i = 0, k; err == FBK_OK && i < n; i += k) {
        size_t pages, bytes;
        k = chunk(&b->durable, vals + i, n - i, &pages, &bytes);
        struct copy_arg a = {l->dbi, keys + i, vals + i, k, {l, NULL, 0, 0}};
        err = run_chunk(b, l, copy_op, &a, &a.np, i + k == n, ops, nops, pages, bytes, "persist",
                        keys + i, k);
    }
    fbk__lmdb_rtxn_end(&b->spill, txn);
    return err;
}

int fbk__lmdb_persist(void *self, void *loc, const fbk_key *key)
{
    MDB_val v;
    return persist_keys(self, loc, key, 1, &v, NULL, 0);
}

int fbk__lmdb_persist_names(void *self, void *loc, const fbk_key *keys, size_t n,
                            const fbk_name_op *ops, size_t nops)
{
    fbk__lmdb_loc *l = loc;
    if (nops && !l->has_names)
        return fbk_error_set(FBK_EIO, 0,
                             "lmdb: location \"%s\" has no name index (opened read-only)", l->name);
    if (n == 0)
        return nops ? fbk__lmdb_name_apply(self, loc, ops, nops) : FBK_OK;
    MDB_val *vals = malloc(n * sizeof *vals);
    if (!vals)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "lmdb: persist of %zu keys: out of memory", n);
    int err = persist_keys(self, loc, keys, n, vals, ops, nops);
    free(vals);
    return err;
}

int fbk__lmdb_persist_many(void *self, void *loc, const fbk_key *keys, size_t n)
{
    return fbk__lmdb_persist_names(self, loc, keys, n, NULL, 0);
}

/* write_names (backend table version 6): framed values straight from the
 * caller's memory into the location, the name changes after them in the
 * last transaction. */
struct write_arg {
    const fbk_frame_req *reqs;
    const fbk_key *keys; /* the keys of reqs (for the binding check) */
    size_t n;
    names_part np;
};

static size_t req_len(const fbk_frame_req *r)
{
    size_t len = 0;
    for (int i = 0; i < r->niov; i++)
        len += r->iov[i].iov_len;
    return len;
}

static int write_op(MDB_txn *txn, void *p)
{
    struct write_arg *a = p;
    int rc = names_check(txn, &a->np, a->keys, a->n);
    if (rc)
        return rc;
    for (size_t i = 0; i < a->n; i++) {
        const fbk_frame_req *r = &a->reqs[i];
        MDB_val k = {sizeof(fbk_key), (void *)r->key->bytes};
        MDB_val v = {req_len(r), NULL};
        rc = mdb_put(txn, a->np.l->dbi, &k, &v, MDB_RESERVE);
        if (rc != 0)
            return rc;
        unsigned char *dst = v.mv_data;
        for (int j = 0; j < r->niov; j++) {
            if (r->iov[j].iov_len)
                memcpy(dst, r->iov[j].iov_base, r->iov[j].iov_len);
            dst += r->iov[j].iov_len;
        }
    }
    return names_put(txn, &a->np);
}

int fbk__lmdb_write_names(void *self, void *loc, const fbk_frame_req *reqs, size_t n,
                          const fbk_name_op *ops, size_t nops)
{
    fbk__lmdb *b = self;
    fbk__lmdb_loc *l = loc;
    if (nops && !l->has_names)
        return fbk_error_set(FBK_EIO, 0,
                             "lmdb: location \"%s\" has no name index (opened read-only)", l->name);
    if (n == 0)
        return nops ? fbk__lmdb_name_apply(self, loc, ops, nops) : FBK_OK;
    fbk_key *keys = malloc(n * sizeof *keys);
    if (!keys)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "lmdb: write of %zu values: out of memory", n);
    int err = FBK_OK;
    for (size_t i = 0; i < n && err == FBK_OK; i++) {
        keys[i] = *reqs[i].key;
        char hex[33], obj[FBK__LMDB_WHAT];
        fbk_key_format_hex(&keys[i], hex);
        snprintf(obj, sizeof obj, "write of key %s into location %s", hex, l->name);
        err = fbk__lmdb_check_len(&b->durable, req_len(&reqs[i]), obj);
    }
    /* chunks of at most FBK__LMDB_TXN_BYTES (at least one value), as persist */
    for (size_t i = 0, k; err == FBK_OK && i < n; i += k) {
        size_t pages = 0, bytes = 0;
        for (k = 0; i + k < n; k++) {
            size_t len = req_len(&reqs[i + k]);
            if (k > 0 && bytes + len > FBK__LMDB_TXN_BYTES)
                break;
            pages += fbk__lmdb_pages_for(&b->durable, len);
            bytes += len;
        }
        struct write_arg a = {reqs + i, keys + i, k, {l, NULL, 0, 0}};
        err = run_chunk(b, l, write_op, &a, &a.np, i + k == n, ops, nops, pages, bytes, "write",
                        keys + i, k);
    }
    free(keys);
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
    char what[FBK__LMDB_WHAT];
    snprintf(what, sizeof what, "location %s", a->l->name);
    err = get_all(&b->durable, rtxn, a->l->dbi, what, a->keys, a->n, a->vals, &b->spill);
    struct copy_arg c = {b->spill.main, a->keys, a->vals, a->n, {NULL, NULL, 0, 0}};
    int rc = err == FBK_OK ? copy_op(txn, &c) : 0;
    fbk__lmdb_rtxn_end(&b->durable, rtxn);
    return rc ? rc : err;
}

/* One spill write transaction per chunk of at most FBK__LMDB_TXN_BYTES. */
static int register_keys(fbk__lmdb *b, fbk__lmdb_loc *l, const fbk_key *keys, size_t n,
                         MDB_val *vals)
{
    MDB_txn *txn;
    int err = fbk__lmdb_rtxn_begin(&b->durable, &txn);
    if (err != FBK_OK)
        return err;
    char what[FBK__LMDB_WHAT];
    snprintf(what, sizeof what, "location %s", l->name);
    err = get_all(&b->durable, txn, l->dbi, what, keys, n, vals, &b->spill);
    fbk__lmdb_rtxn_end(&b->durable, txn);
    for (size_t i = 0, k; err == FBK_OK && i < n; i += k) {
        size_t pages, bytes;
        k = chunk(&b->spill, vals + i, n - i, &pages, &bytes);
        struct reg_arg a = {b, l, keys + i, k, vals + i};
        err = fbk__lmdb_write(&b->spill, register_op, &a, pages, bytes,
                              keys_what(what, "register", keys + i, k, "from", l));
    }
    return err;
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
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "lmdb: register of %zu keys: out of memory", n);
    int err = register_keys(self, loc, keys, n, vals);
    free(vals);
    return err;
}

/* ------------------------------------------------------------ remove, sync */

int fbk__lmdb_remove_persisted(void *self, void *loc, const fbk_key *key)
{
    fbk__lmdb *b = self;
    fbk__lmdb_loc *l = loc;
    char what[FBK__LMDB_WHAT];
    snprintf(what, sizeof what, "location %s", l->name);
    fbk__lmdb_touch(&b->durable, l->dbi);
    int err = fbk__lmdb_delete(&b->durable, l->dbi, key, what);
    fbk__lmdb_touch(&b->durable, l->dbi);
    return err;
}

int fbk__lmdb_sync(void *self, void *loc)
{
    fbk__lmdb *b = self;
    fbk__lmdb_loc *l = loc;
    if (b->readonly)
        return FBK_OK; /* it wrote nothing (and LMDB refuses to sync a read-only env) */
    /* one environment: the flush covers every location; a failed one is
     * final for the locations it concerned (lmdb_env.c) */
    return fbk__lmdb_env_sync(&b->durable, l->dbi, l->name);
}
