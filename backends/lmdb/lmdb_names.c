/* lmdb_names.c -- the name index of lmdb: locations (maps, backend table
 * version 4).
 *
 * Each location L has, beside its named database "L" of objects, a named
 * database "\x1fnames:L" of bindings in the same durable environment,
 * opened (created) with the location.  An entry:
 *   key   the name itself when it is at most FBK__LMDB_DIRECT bytes; else
 *         'H', the XXH3-128 of the name (16 bytes), zero-padded to
 *         FBK__LMDB_HASHED bytes -- a length no direct key has, so the two
 *         kinds never meet.
 *   value the bound object's key (16 bytes), its payload size (8 bytes,
 *         little-endian), then, for a hashed key only, the full name (so a
 *         look-up checks it and a scan can list it).
 * A binding is written by a write transaction of the durable environment,
 * after the transactions that persisted its object (the core persists first):
 * LMDB commits are totally ordered, so no durable state has a name without
 * its object.  The layout is in docs/formats.md. */
#include "lmdb_internal.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define FBK__LMDB_DIRECT 480 /* longest name stored as its own key */
#define FBK__LMDB_HASHED 500 /* length of a hashed key */
#define VAL_HDR 24           /* key + size */

int fbk__lmdb_names_dbname(const char *location, char *out, size_t cap)
{
    int n = snprintf(out, cap, "\x1fnames:%s", location);
    return n > 0 && (size_t)n < cap ? FBK_OK : FBK_EINVAL;
}

int fbk__lmdb_refs_dbname(const char *location, char *out, size_t cap)
{
    int n = snprintf(out, cap, "\x1frefs:%s", location);
    return n > 0 && (size_t)n < cap ? FBK_OK : FBK_EINVAL;
}

/* The entry key of name (buf holds FBK__LMDB_HASHED bytes). */
static MDB_val name_key(const void *name, size_t len, unsigned char *buf)
{
    if (len <= FBK__LMDB_DIRECT)
        return (MDB_val){len, (void *)name};
    XXH128_hash_t h = XXH3_128bits(name, len);
    memset(buf, 0, FBK__LMDB_HASHED);
    buf[0] = 'H';
    memcpy(buf + 1, &h.low64, 8);
    memcpy(buf + 9, &h.high64, 8);
    return (MDB_val){FBK__LMDB_HASHED, buf};
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Decodes entry (k, v): the name, its key and size.  FBK_ECORRUPT for an
 * entry this file never writes. */
static int decode(const fbk__lmdb_loc *l, const MDB_val *k, const MDB_val *v, const void **name,
                  size_t *len, fbk_key *key, uint64_t *size)
{
    *name = NULL; /* defined on every path (-O3 -Wmaybe-uninitialized) */
    *len = 0;
    bool hashed = k->mv_size == FBK__LMDB_HASHED;
    if ((!hashed && (k->mv_size == 0 || k->mv_size > FBK__LMDB_DIRECT)) || v->mv_size < VAL_HDR ||
        (!hashed && v->mv_size != VAL_HDR) ||
        (hashed &&
         (v->mv_size <= VAL_HDR + FBK__LMDB_DIRECT || v->mv_size > VAL_HDR + FBK_NAME_MAX)))
        return fbk_error_set(FBK_ECORRUPT, 0,
                             "lmdb: location \"%s\": name index entry of %zu+%zu bytes is damaged",
                             l->name, k->mv_size, v->mv_size);
    const unsigned char *p = v->mv_data;
    memcpy(key->bytes, p, 16);
    *size = get_le64(p + 16);
    *name = hashed ? (const void *)(p + VAL_HDR) : k->mv_data;
    *len = hashed ? v->mv_size - VAL_HDR : k->mv_size;
    return FBK_OK;
}

static int no_names(const fbk__lmdb_loc *l)
{
    return fbk_error_set(FBK_ENOTFOUND, 0, "lmdb: location \"%s\" has no name index", l->name);
}

int fbk__lmdb_name_get(void *self, void *loc, const void *name, size_t len, fbk_key *key,
                       uint64_t *size)
{
    fbk__lmdb *b = self;
    fbk__lmdb_loc *l = loc;
    if (!l->has_names)
        return no_names(l);
    unsigned char buf[FBK__LMDB_HASHED];
    MDB_val k = name_key(name, len, buf), v;
    MDB_txn *txn;
    int err = fbk__lmdb_rtxn_begin(&b->durable, &txn);
    if (err)
        return err;
    int rc = mdb_get(txn, l->names, &k, &v);
    if (rc == 0) {
        const void *got;
        size_t glen;
        err = decode(l, &k, &v, &got, &glen, key, size);
        if (err == FBK_OK && (glen != len || memcmp(got, name, len) != 0))
            rc = MDB_NOTFOUND; /* another name with the same hash */
    } else if (rc != MDB_NOTFOUND) {
        err = fbk__lmdb_error(rc, "location \"%s\": name look-up", l->name);
    }
    fbk__lmdb_rtxn_end(&b->durable, txn);
    if (err)
        return err;
    return rc == MDB_NOTFOUND ? fbk_error_set(FBK_ENOTFOUND, 0, "lmdb: name not bound") : FBK_OK;
}

/* Bindings are handed to each() outside any transaction (each may call
 * back into the store), in chunks read by one transaction each. */
#define SCAN_CHUNK 256

typedef struct binding {
    fbk_key key;
    uint64_t size;
    size_t len;
    unsigned char *name;
} binding;

int fbk__lmdb_name_scan(void *self, void *loc, fbk_binding_fn each, void *arg)
{
    fbk__lmdb *b = self;
    fbk__lmdb_loc *l = loc;
    if (!l->has_names)
        return FBK_OK;
    binding *chunk = calloc(SCAN_CHUNK, sizeof *chunk);
    unsigned char *last = malloc(FBK__LMDB_HASHED);
    size_t last_len = 0;
    if (!chunk || !last) {
        free(chunk);
        free(last);
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "lmdb: name scan: out of memory");
    }
    int err = FBK_OK;
    bool first = true, end = false;
    while (err == FBK_OK && !end) {
        MDB_txn *txn;
        MDB_cursor *cur = NULL;
        size_t n = 0;
        err = fbk__lmdb_rtxn_begin(&b->durable, &txn);
        if (err)
            break;
        int rc = mdb_cursor_open(txn, l->names, &cur);
        MDB_val k = {last_len, last}, v;
        if (rc == 0)
            rc = mdb_cursor_get(cur, &k, &v, first ? MDB_FIRST : MDB_SET_RANGE);
        /* resuming: skip the entry the last chunk ended with */
        if (rc == 0 && !first && k.mv_size == last_len && memcmp(k.mv_data, last, last_len) == 0)
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        for (; rc == 0 && n < SCAN_CHUNK && err == FBK_OK;
             rc = n < SCAN_CHUNK ? mdb_cursor_get(cur, &k, &v, MDB_NEXT) : 0) {
            const void *name;
            binding *e = &chunk[n];
            err = decode(l, &k, &v, &name, &e->len, &e->key, &e->size);
            if (err)
                break;
            if (!(e->name = malloc(e->len))) {
                err = fbk_error_set(FBK_ENOMEM, ENOMEM, "lmdb: name scan: out of memory");
                break;
            }
            memcpy(e->name, name, e->len);
            memcpy(last, k.mv_data, k.mv_size);
            last_len = k.mv_size;
            n++;
        }
        if (rc == MDB_NOTFOUND)
            end = true;
        else if (rc != 0 && err == FBK_OK)
            err = fbk__lmdb_error(rc, "location \"%s\": name scan", l->name);
        if (cur)
            mdb_cursor_close(cur);
        fbk__lmdb_rtxn_end(&b->durable, txn);
        first = false;
        for (size_t i = 0; i < n; i++) {
            if (err == FBK_OK) {
                int r = each(chunk[i].name, chunk[i].len, &chunk[i].key, chunk[i].size, arg);
                if (r)
                    err = r;
            }
            free(chunk[i].name);
        }
    }
    free(chunk);
    free(last);
    return err;
}

/* ----------------------------------------------------------------- apply */

struct apply_arg {
    const fbk__lmdb_loc *l;
    const fbk_name_op *ops;
    size_t n;
    int missing; /* index + 1 of a bound key the location lacks */
};

/* ------------------------------------------------------ reference counts */

/* refs[key] += delta (an entry per key with at least one binding; the
 * count is 8 bytes little-endian).  A count that would go below zero (a
 * binding the counts never saw) stays absent. */
static int refs_add(MDB_txn *txn, MDB_dbi refs, const unsigned char key[16], int delta)
{
    MDB_val k = {16, (void *)key}, v;
    uint64_t n = 0;
    int rc = mdb_get(txn, refs, &k, &v);
    if (rc == 0 && v.mv_size == 8)
        n = get_le64(v.mv_data);
    else if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    if (delta < 0 && n <= (uint64_t)-delta) {
        rc = rc == 0 ? mdb_del(txn, refs, &k, NULL) : 0;
        return rc == MDB_NOTFOUND ? 0 : rc;
    }
    n += (uint64_t)(int64_t)delta;
    unsigned char buf[8];
    put_le64(buf, n);
    v = (MDB_val){8, buf};
    return mdb_put(txn, refs, &k, &v, 0);
}

int fbk__lmdb_refs_build(MDB_txn *txn, MDB_dbi names, MDB_dbi refs)
{
    MDB_stat sn, sr;
    int rc = mdb_stat(txn, names, &sn);
    if (rc == 0)
        rc = mdb_stat(txn, refs, &sr);
    if (rc != 0 || sn.ms_entries == 0 || sr.ms_entries != 0)
        return rc;
    MDB_cursor *c;
    rc = mdb_cursor_open(txn, names, &c);
    if (rc != 0)
        return rc;
    MDB_val k, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (v.mv_size < VAL_HDR)
            continue; /* damage: name_scan reports it; no binding to count */
        rc = refs_add(txn, refs, v.mv_data, 1);
        if (rc != 0)
            break;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int fbk__lmdb_names_check(MDB_txn *txn, const fbk__lmdb_loc *l, const fbk_name_op *ops, size_t n,
                          const fbk_key *coming, size_t ncoming, int *missing)
{
    size_t next = 0; /* the core lists coming in the order of ops: try there first */
    for (size_t i = 0; i < n; i++) {
        if (!ops[i].key)
            continue;
        bool soon = false;
        for (size_t t = 0; t < ncoming && !soon; t++) {
            size_t j = (next + t) % ncoming;
            if (memcmp(coming[j].bytes, ops[i].key->bytes, sizeof coming[j].bytes) == 0) {
                soon = true;
                next = j + 1;
            }
        }
        if (soon)
            continue;
        MDB_val k = {sizeof(fbk_key), (void *)ops[i].key->bytes}, v;
        int rc = mdb_get(txn, l->dbi, &k, &v);
        if (rc == MDB_NOTFOUND) {
            *missing = (int)i + 1;
            return FBK_EINVAL;
        }
        if (rc)
            return rc;
    }
    return 0;
}

int fbk__lmdb_names_put(MDB_txn *txn, const fbk__lmdb_loc *l, const fbk_name_op *ops, size_t n,
                        int *missing)
{
    /* every bound object must be there before the first write (so that a
     * refusal leaves the transaction untouched) */
    int rc = missing ? fbk__lmdb_names_check(txn, l, ops, n, NULL, 0, missing) : 0;
    if (rc)
        return rc;
    unsigned char buf[FBK__LMDB_HASHED];
    for (size_t i = 0; i < n; i++) {
        const fbk_name_op *o = &ops[i];
        MDB_val k = name_key(o->name, o->len, buf);
        if (l->refs) {
            /* the counts follow the index in the same transaction: the
             * binding this op replaces or removes loses its reference */
            MDB_val old;
            rc = mdb_get(txn, l->names, &k, &old);
            if (rc == 0 && old.mv_size >= VAL_HDR)
                rc = refs_add(txn, l->refs, old.mv_data, -1);
            else if (rc == MDB_NOTFOUND || rc == 0)
                rc = 0;
            if (rc == 0 && o->key)
                rc = refs_add(txn, l->refs, o->key->bytes, 1);
            if (rc)
                return rc;
        }
        if (!o->key) {
            rc = mdb_del(txn, l->names, &k, NULL);
            if (rc == MDB_NOTFOUND)
                rc = 0;
        } else {
            bool hashed = k.mv_size == FBK__LMDB_HASHED;
            MDB_val v = {VAL_HDR + (hashed ? o->len : 0), NULL};
            rc = mdb_put(txn, l->names, &k, &v, MDB_RESERVE);
            if (rc == 0) {
                unsigned char *d = v.mv_data;
                memcpy(d, o->key->bytes, 16);
                put_le64(d + 16, o->size);
                if (hashed)
                    memcpy(d + VAL_HDR, o->name, o->len);
            }
        }
        if (rc)
            return rc;
    }
    return 0;
}

static int apply_op(MDB_txn *txn, void *p)
{
    struct apply_arg *a = p;
    return fbk__lmdb_names_put(txn, a->l, a->ops, a->n, &a->missing);
}

size_t fbk__lmdb_names_bytes(const fbk_name_op *ops, size_t n)
{
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += ops[i].len + VAL_HDR + 16;
    return bytes;
}

size_t fbk__lmdb_names_pages(const fbk__lmdb_env *e, const fbk_name_op *ops, size_t n)
{
    return n * fbk__lmdb_pages_for(e, 2 * VAL_HDR) +
           fbk__lmdb_pages_for(e, fbk__lmdb_names_bytes(ops, n));
}

int fbk__lmdb_names_refused(const fbk__lmdb_loc *l, const fbk_name_op *ops, int missing)
{
    char t[FBK_KEY_STRLEN + 1];
    fbk_key_format(ops[missing - 1].key, t);
    return fbk_error_set(FBK_EINVAL, 0,
                         "lmdb: location \"%s\": a name cannot be bound to %s, which the "
                         "location does not hold",
                         l->name, t);
}

int fbk__lmdb_name_apply(void *self, void *loc, const fbk_name_op *ops, size_t n)
{
    fbk__lmdb *b = self;
    fbk__lmdb_loc *l = loc;
    if (!l->has_names)
        return fbk_error_set(FBK_EIO, 0,
                             "lmdb: location \"%s\" has no name index (opened read-only)", l->name);
    if (n == 0)
        return FBK_OK;
    struct apply_arg a = {l, ops, n, 0};
    fbk__lmdb_touch(&b->durable, l->dbi); /* a failed commit fails this location's sync */
    char what[FBK__LMDB_WHAT];
    snprintf(what, sizeof what, "%zu name change(s) of location %s", n, l->name);
    int err = fbk__lmdb_write(&b->durable, apply_op, &a, fbk__lmdb_names_pages(&b->durable, ops, n),
                              fbk__lmdb_names_bytes(ops, n), what);
    fbk__lmdb_touch(&b->durable, l->dbi);
    if (err == FBK_EINVAL && a.missing)
        return fbk__lmdb_names_refused(l, ops, a.missing);
    return err;
}

/* ---------------------------------------------------------- remove_unbound */

struct unbound_arg {
    const fbk__lmdb_loc *l;
    const fbk_key *key;
    int removed;
};

static int unbound_op(MDB_txn *txn, void *p)
{
    struct unbound_arg *a = p;
    MDB_val k = {sizeof(fbk_key), (void *)a->key->bytes}, v;
    int rc = mdb_get(txn, a->l->refs, &k, &v);
    if (rc == 0) {
        a->removed = 0; /* a binding refers to it (maybe another process's) */
        return 0;
    }
    if (rc != MDB_NOTFOUND)
        return rc;
    rc = mdb_del(txn, a->l->dbi, &k, NULL);
    a->removed = 1;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int fbk__lmdb_remove_unbound(void *self, void *loc, const fbk_key *key)
{
    fbk__lmdb *b = self;
    fbk__lmdb_loc *l = loc;
    if (!l->refs) /* read-only: the core never removes there */
        return fbk_error_set(FBK_EIO, 0, "lmdb: location \"%s\" has no reference counts", l->name);
    struct unbound_arg a = {l, key, 0};
    char what[FBK__LMDB_WHAT], hex[33];
    fbk_key_format_hex(key, hex);
    snprintf(what, sizeof what, "removal of unbound key %s from location %s", hex, l->name);
    fbk__lmdb_touch(&b->durable, l->dbi);
    int err =
        fbk__lmdb_write(&b->durable, unbound_op, &a, fbk__lmdb_pages_for(&b->durable, 0), 0, what);
    fbk__lmdb_touch(&b->durable, l->dbi);
    return err ? err : a.removed;
}

/* remove_unbound of many keys: transactions of UNBOUND_CHUNK keys. */
#define UNBOUND_CHUNK 1024

struct unbound_many_arg {
    const fbk__lmdb_loc *l;
    const fbk_key *keys;
    size_t n;
    int *removed;
};

static int unbound_many_op(MDB_txn *txn, void *p)
{
    struct unbound_many_arg *a = p;
    for (size_t i = 0; i < a->n; i++) {
        struct unbound_arg one = {a->l, &a->keys[i], 0};
        /* an LMDB failure dooms the whole transaction (none is undone
         * alone): nothing of this chunk is removed then */
        int rc = unbound_op(txn, &one);
        if (rc)
            return rc;
        a->removed[i] = one.removed;
    }
    return 0;
}

int fbk__lmdb_remove_unbound_many(void *self, void *loc, const fbk_key *keys, size_t n,
                                  int *removed)
{
    fbk__lmdb *b = self;
    fbk__lmdb_loc *l = loc;
    memset(removed, 0, n * sizeof *removed);
    if (!l->refs)
        return fbk_error_set(FBK_EIO, 0, "lmdb: location \"%s\" has no reference counts", l->name);
    for (size_t off = 0; off < n; off += UNBOUND_CHUNK) {
        size_t k = n - off < UNBOUND_CHUNK ? n - off : UNBOUND_CHUNK;
        struct unbound_many_arg a = {l, keys + off, k, removed + off};
        char what[FBK__LMDB_WHAT];
        snprintf(what, sizeof what, "removal of %zu unbound keys from location %s", k, l->name);
        fbk__lmdb_touch(&b->durable, l->dbi);
        int err = fbk__lmdb_write(&b->durable, unbound_many_op, &a,
                                  k * fbk__lmdb_pages_for(&b->durable, 0), 0, what);
        fbk__lmdb_touch(&b->durable, l->dbi);
        if (err) {
            memset(removed + off, 0, k * sizeof *removed);
            return err;
        }
    }
    return FBK_OK;
}

int fbk__lmdb_contains(void *self, void *loc, const fbk_key *key)
{
    fbk__lmdb *b = self;
    fbk__lmdb_loc *l = loc;
    MDB_txn *txn;
    int err = fbk__lmdb_rtxn_begin(&b->durable, &txn);
    if (err)
        return err;
    MDB_val k = {sizeof(fbk_key), (void *)key->bytes}, v;
    int rc = mdb_get(txn, l->dbi, &k, &v);
    fbk__lmdb_rtxn_end(&b->durable, txn);
    if (rc == 0 || rc == MDB_NOTFOUND)
        return rc == 0;
    return fbk__lmdb_error(rc, "location \"%s\": look-up", l->name);
}

int fbk__lmdb_load_persisted(void *self, void *loc, const fbk_key *key, fbk_read_fn read, void *arg)
{
    fbk__lmdb *b = self;
    fbk__lmdb_loc *l = loc;
    MDB_txn *txn;
    int err = fbk__lmdb_rtxn_begin(&b->durable, &txn);
    if (err)
        return err;
    MDB_val k = {sizeof(fbk_key), (void *)key->bytes}, v;
    int rc = mdb_get(txn, l->dbi, &k, &v);
    if (rc == 0)
        err = read(v.mv_data, v.mv_size, arg); /* straight from the map */
    else if (rc == MDB_NOTFOUND)
        err = fbk__lmdb_not_found(l->name, key);
    else
        err = fbk__lmdb_error(rc, "location \"%s\": load", l->name);
    fbk__lmdb_rtxn_end(&b->durable, txn);
    return err;
}
