/* rados_names.c -- the name index of a rados: location (maps, backend table
 * version 4).
 *
 * The omap of one object per location namespace, RB_NAMES_OBJ
 * ("__fbk_names").  An entry's key is the 32 lowercase hex digits of the
 * XXH3-128 of the name; its value is the binding, in the format of file:'s
 * binding files: "FBKN", version (u32 LE, 1), the bound key (16 bytes), the
 * object's payload size (u64 LE), the name's length (u32 LE), the name, and
 * the XXH3-64 of everything before it (u64 LE).  A damaged value is
 * FBK_ECORRUPT.
 *
 * Beside the bindings, in the same omap (docs/formats.md): the generation
 * "\x1fgen" every write compares (omap_cmp) and bumps, the marker
 * "\x1frefs-v1", a reference "r<object hex><name hash>" per binding, and a
 * tombstone "x<object hex>" per object being removed as bound by no name.
 * RADOS is atomic on one object only: the generation makes each write
 * conditional on the state its read saw (optimistic concurrency, retried
 * on -ECANCELED), which is what lets remove_unbound keep an object another
 * process bound meanwhile (docs/rados-backend.md, "Orphans").
 *
 * name_apply first waits for every object write of the location issued so
 * far (a failed one fails it: no binding may name an object that is not
 * durable), reads the index, stats the objects it binds (a tombstoned or
 * missing one refuses the batch), then applies the whole batch as ONE
 * guarded write op on the names object -- atomic in RADOS, acknowledged
 * once durable on every replica. */
#include "rados_internal.h"

#include "fbk_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#define HDR (4 + 4 + 16 + 8 + 4)

static void omap_key(const void *name, size_t len, char out[33])
{
    XXH128_hash_t h = XXH3_128bits(name, len);
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h.high64,
             (unsigned long long)h.low64);
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

/* Encodes a binding into a fresh buffer (*out, *olen). */
static int encode(const fbk_name_op *op, char **out, size_t *olen)
{
    size_t n = HDR + op->len + 8;
    unsigned char *p = malloc(n);
    if (!p)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "rados: names: out of memory");
    memcpy(p, "FBKN", 4);
    put_le(p + 4, 1, 4);
    memcpy(p + 8, op->key->bytes, 16);
    put_le(p + 24, op->size, 8);
    put_le(p + 32, op->len, 4);
    memcpy(p + HDR, op->name, op->len);
    put_le(p + HDR + op->len, XXH3_64bits(p, HDR + op->len), 8);
    *out = (char *)p;
    *olen = n;
    return FBK_OK;
}

static int decode(const rados_loc *l, const char *okey, const char *val, size_t vlen,
                  const void **name, size_t *len, fbk_key *key, uint64_t *size)
{
    const unsigned char *p = (const unsigned char *)val;
    size_t nlen = vlen >= HDR ? (size_t)get_le(p + 32, 4) : 0;
    if (vlen < HDR + 8 || memcmp(p, "FBKN", 4) != 0 || get_le(p + 4, 4) != 1 || !nlen ||
        nlen > FBK_NAME_MAX || vlen != HDR + nlen + 8 ||
        get_le(p + HDR + nlen, 8) != XXH3_64bits(p, HDR + nlen))
        return fbk_error_set(FBK_ECORRUPT, 0,
                             "rados: name index of \"%s\" (pool %s, object " RB_NAMES_OBJ
                             "): entry %s is damaged",
                             l->name, l->b->pool, okey);
    memcpy(key->bytes, p + 8, 16);
    *size = get_le(p + 24, 8);
    *name = p + HDR;
    *len = nlen;
    return FBK_OK;
}

static bool is_hex32(const char *k, size_t len)
{
    if (len != 32)
        return false;
    for (size_t i = 0; i < 32; i++)
        if (!((k[i] >= '0' && k[i] <= '9') || (k[i] >= 'a' && k[i] <= 'f')))
            return false;
    return true;
}

/* An omap entry of the names object that libfbk never writes (a key too
 * long to page on, or holding a NUL byte). */
static int foreign_entry(const rados_loc *l, size_t klen)
{
    return fbk_error_set(FBK_ECORRUPT, 0,
                         "rados: name index of \"%s\" (pool %s, object " RB_NAMES_OBJ
                         "): an entry with a key of %zu bytes is not libfbk's",
                         l->name, l->b->pool, klen);
}

int fbk__rados_name_get(void *self, void *loc, const void *name, size_t len, fbk_key *key,
                        uint64_t *size)
{
    (void)self;
    rados_loc *l = loc;
    char k[33];
    omap_key(name, len, k);
    const char *keys[1] = {k};
    size_t klen[1] = {32};
    rados_omap_iter_t it = NULL;
    int prval = 0;
    rados_read_op_t op = rados_create_read_op();
    rados_read_op_omap_get_vals_by_keys2(op, keys, 1, klen, &it, &prval);
    int r = rados_read_op_operate(op, l->io, RB_NAMES_OBJ, 0);
    rados_release_read_op(op);
    if (r >= 0 && prval < 0)
        r = prval;
    if (r < 0 && it)
        rados_omap_get_end(it); /* allocated with the op, even when it fails */
    if (r == -ENOENT)
        return FBK_ENOTFOUND; /* no names object: no binding */
    if (r < 0)
        return fbk__rados_fail(l, r, "look up a name");
    char *ok = NULL, *val = NULL;
    size_t oklen = 0, vlen = 0;
    int rc = FBK_ENOTFOUND;
    if (rados_omap_get_next2(it, &ok, &val, &oklen, &vlen) == 0 && ok) {
        const void *n;
        size_t nl;
        rc = decode(l, k, val, vlen, &n, &nl, key, size);
        if (rc == FBK_OK && (nl != len || memcmp(n, name, len) != 0))
            rc = FBK_ENOTFOUND; /* another name with the same 128-bit hash */
    }
    rados_omap_get_end(it);
    return rc;
}

int fbk__rados_name_scan(void *self, void *loc, fbk_binding_fn each, void *arg)
{
    (void)self;
    rados_loc *l = loc;
    char after[RB_REF_KLEN + 8] = "";
    for (;;) {
        rados_omap_iter_t it = NULL;
        unsigned char more = 0;
        int prval = 0;
        rados_read_op_t op = rados_create_read_op();
        rados_read_op_omap_get_vals2(op, after, "", 1024, &it, &more, &prval);
        int r = rados_read_op_operate(op, l->io, RB_NAMES_OBJ, 0);
        rados_release_read_op(op);
        if (r >= 0 && prval < 0)
            r = prval;
        if (r < 0 && it)
            rados_omap_get_end(it); /* allocated with the op, even when it fails */
        if (r == -ENOENT)
            return FBK_OK;
        if (r < 0)
            return fbk__rados_fail(l, r, "list the names");
        int rc = FBK_OK;
        for (;;) {
            char *ok = NULL, *val = NULL;
            size_t oklen = 0, vlen = 0;
            if (rados_omap_get_next2(it, &ok, &val, &oklen, &vlen) < 0 || !ok)
                break;
            if (oklen >= sizeof after || memchr(ok, '\0', oklen)) {
                rc = foreign_entry(l, oklen);
                break;
            }
            memcpy(after, ok, oklen);
            after[oklen] = '\0';
            if (!is_hex32(ok, oklen)) {
                /* the generation, the marker ("\x1f..." before the
                 * bindings), references and tombstones ("r...", "x..."
                 * after them): not bindings */
                if ((unsigned char)ok[0] > 'f') {
                    more = 0;
                    break;
                }
                continue;
            }
            char okey[33];
            memcpy(okey, ok, 32);
            okey[32] = '\0';
            const void *n;
            size_t nl;
            fbk_key key;
            uint64_t size;
            rc = decode(l, okey, val, vlen, &n, &nl, &key, &size);
            if (rc == FBK_OK)
                rc = each(n, nl, &key, size, arg);
            if (rc)
                break;
        }
        rados_omap_get_end(it);
        if (rc || !more)
            return rc;
    }
}

/* ------------------------------------------------ the generation guard */

/* The generation of the index as a read op found it (old: its bytes, ""
 * when absent) and the value the next write sets. */
typedef struct rb_gen {
    char old[24];
    size_t oldlen;
    char next[24];
    size_t nextlen;
} rb_gen;

static void gen_from(rb_gen *g, const char *v, size_t len)
{
    char buf[24] = "";
    if (len >= sizeof g->old)
        len = 0; /* not one of ours: compared as "" fails, the write retries */
    if (len) { /* an empty value may come as NULL */
        memcpy(g->old, v, len);
        memcpy(buf, v, len);
    }
    g->oldlen = len;
    unsigned long long n = strtoull(buf, NULL, 10);
    g->nextlen = (size_t)snprintf(g->next, sizeof g->next, "%llu", n + 1);
}

/* The generation n (0: absent) as a read would have found it. */
static void gen_of(rb_gen *g, uint64_t n)
{
    g->oldlen = n ? (size_t)snprintf(g->old, sizeof g->old, "%llu", (unsigned long long)n) : 0;
    g->nextlen = (size_t)snprintf(g->next, sizeof g->next, "%llu", (unsigned long long)n + 1);
}

static bool gen_same(const rb_gen *a, const rb_gen *b)
{
    return a->oldlen == b->oldlen && memcmp(a->old, b->old, a->oldlen) == 0;
}

/* After a write of the index that set g->next: remembered, unless a later
 * one of this store's threads set a greater one already. */
static void gen_note(rados_loc *l, const rb_gen *g)
{
    unsigned long long n = strtoull(g->next, NULL, 10);
    pthread_mutex_lock(&l->mu);
    if (!l->gen_known || n > l->gen) {
        l->gen = n;
        l->gen_known = true;
    }
    pthread_mutex_unlock(&l->mu);
}

/* A generation this store read: as good as one it wrote (the generation
 * only grows: finding it again later means no write came between). */
static void gen_seen(rados_loc *l, const char *v, size_t len)
{
    char buf[24] = "";
    if (len >= sizeof buf)
        return;
    if (len)
        memcpy(buf, v, len);
    unsigned long long n = strtoull(buf, NULL, 10);
    pthread_mutex_lock(&l->mu);
    if (!l->gen_known || n > l->gen) {
        l->gen = n;
        l->gen_known = true;
    }
    pthread_mutex_unlock(&l->mu);
}

/* The generation this store last wrote or read, if known. */
static bool gen_cached(rados_loc *l, rb_gen *g)
{
    pthread_mutex_lock(&l->mu);
    bool known = l->gen_known;
    uint64_t n = l->gen;
    pthread_mutex_unlock(&l->mu);
    if (known)
        gen_of(g, n);
    return known;
}

/* Adds to op: the generation is still g->old, and becomes g->next. */
static void gen_guard(rados_write_op_t op, const rb_gen *g, int *prval)
{
    const char *k[1] = {RB_GEN_KEY};
    const char *v[1] = {g->next};
    size_t kl[1] = {RB_GEN_KLEN}, vl[1] = {g->nextlen};
    rados_write_op_omap_cmp2(op, RB_GEN_KEY, LIBRADOS_CMPXATTR_OP_EQ, g->old, RB_GEN_KLEN,
                             g->oldlen, prval);
    rados_write_op_omap_set2(op, k, v, kl, vl, 1);
}

/* A short randomized wait before the next attempt of a write another
 * client's write overtook (-ECANCELED): up to 0.2 ms << attempt, at most
 * 12.8 ms. */
static void backoff(unsigned attempt)
{
    static _Thread_local uint64_t x;
    if (!x) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        x = ((uint64_t)t.tv_nsec ^ ((uint64_t)(uintptr_t)&t << 16)) | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    unsigned cap_us = 200u << (attempt < 6 ? attempt : 6);
    struct timespec d = {0, (long)(x % cap_us) * 1000};
    nanosleep(&d, NULL);
}

static int contended(const rados_loc *l, const char *what)
{
    return fbk_error_set(FBK_EBUSY, ECANCELED,
                         "rados: %s (pool %s, namespace \"%s\", object " RB_NAMES_OBJ
                         "): other clients changed the name index %d times in a row meanwhile; "
                         "nothing was changed, try again",
                         what, l->b->pool, l->name, RB_RETRIES);
}

/* "r" + the object key's hex + the name's omap key: one reference */
static void ref_key(char out[RB_REF_KLEN + 1], const char *hex, const char *nk)
{
    out[0] = 'r';
    memcpy(out + 1, hex, 32);
    memcpy(out + 33, nk, 32);
    out[RB_REF_KLEN] = '\0';
}

/* "x" + the object key's hex: its tombstone */
static void tomb_key(char out[34], const char *hex)
{
    out[0] = 'x';
    memcpy(out + 1, hex, 32);
    out[33] = '\0';
}

static void end_iter(rados_omap_iter_t it)
{
    if (it)
        rados_omap_get_end(it);
}

/* ---------------------------------------------- deferred tombstones */

/* Moves the deferred tombstones out of l (*n of them; NULL when none). */
static rb_tomb *tombs_take(rados_loc *l, size_t *n)
{
    pthread_mutex_lock(&l->mu);
    rb_tomb *t = l->tombs;
    *n = l->ntombs;
    l->tombs = NULL;
    l->ntombs = l->captombs = 0;
    pthread_mutex_unlock(&l->mu);
    return t;
}

/* Adds t[0..n) to l's deferred tombstones; false when out of memory. */
static bool tombs_add(rados_loc *l, const rb_tomb *t, size_t n)
{
    pthread_mutex_lock(&l->mu);
    bool ok = true;
    if (l->ntombs + n > l->captombs) {
        size_t cap = l->captombs ? l->captombs : 64;
        while (cap < l->ntombs + n)
            cap *= 2;
        void *p = realloc(l->tombs, cap * sizeof *l->tombs);
        if (p) {
            l->tombs = p;
            l->captombs = cap;
        } else {
            ok = false;
        }
    }
    if (ok) {
        memcpy(l->tombs + l->ntombs, t, n * sizeof *t);
        l->ntombs += n;
    }
    pthread_mutex_unlock(&l->mu);
    return ok;
}

/* Gives back tombstones taken by a write that failed (one that cannot be
 * kept for lack of memory stays in the index: it only refuses bindings of
 * an object that is gone). */
static void tombs_return(rados_loc *l, rb_tomb *t, size_t n)
{
    if (n)
        (void)tombs_add(l, t, n);
    free(t);
}

static int by_tomb(const void *a, const void *b)
{
    return strcmp(((const rb_tomb *)a)->key, ((const rb_tomb *)b)->key);
}

/* Marks t[] live whose omap key k (klen 33) holds v (vlen): this store's
 * value still.  t sorted by key. */
static void tomb_seen(rb_tomb *t, size_t n, const char *k, const char *v, size_t vlen)
{
    if (!n)
        return;
    char key[34];
    memcpy(key, k, 33);
    key[33] = '\0';
    rb_tomb *x = bsearch(key, t, n, sizeof *t, by_tomb);
    if (x && strlen(x->val) == vlen && (!vlen || memcmp(x->val, v, vlen) == 0))
        x->live = true;
}

/* -------------------------------------------------- building the refs */

typedef struct refs_list {
    char (*k)[RB_REF_KLEN + 1];
    size_t n, cap;
} refs_list;

static int refs_add(const rados_loc *l, refs_list *r, const char *hex, const char *nk)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 256;
        void *p = realloc(r->k, cap * sizeof *r->k);
        if (!p)
            return fbk_error_set(FBK_ENOMEM, ENOMEM,
                                 "rados: references of the names of \"%s\": out of memory",
                                 l->name);
        r->k = p;
        r->cap = cap;
    }
    ref_key(r->k[r->n++], hex, nk);
    return FBK_OK;
}

/* Makes the references of a name index written without them (by a libfbk
 * before them): reads every binding (pages of 1024, each with the
 * generation: a change meanwhile starts over), then ONE guarded write sets
 * a reference per binding, the marker and the next generation.  Nothing to
 * do when the marker is there.  Without a names object: nothing (create
 * false) or the marker alone (create true: no binding, complete). */
static int build_refs(rados_loc *l, bool create)
{
    refs_list refs = {0};
    int rc = FBK_OK;
    for (unsigned attempt = 0;; attempt++) {
        if (attempt == RB_RETRIES) {
            rc = contended(l, "build the references of the names");
            break;
        }
        if (attempt)
            backoff(attempt);
        refs.n = 0;
        rb_gen g = {0};
        bool restart = false, marker = false, absent = false;
        char after[RB_REF_KLEN + 8] = "";
        for (bool first = true;; first = false) {
            const char *bk[2] = {RB_GEN_KEY, RB_MARK_KEY};
            size_t bkl[2] = {RB_GEN_KLEN, RB_MARK_KLEN};
            rados_omap_iter_t ib = NULL, it = NULL;
            int pb = 0, pv = 0;
            unsigned char more = 0;
            rados_read_op_t op = rados_create_read_op();
            rados_read_op_omap_get_vals_by_keys2(op, bk, 2, bkl, &ib, &pb);
            rados_read_op_omap_get_vals2(op, after, "", 1024, &it, &more, &pv);
            int r = rados_read_op_operate(op, l->io, RB_NAMES_OBJ, 0);
            rados_release_read_op(op);
            if (r >= 0 && pb < 0)
                r = pb;
            if (r >= 0 && pv < 0)
                r = pv;
            if (r < 0) {
                end_iter(ib);
                end_iter(it);
                if (r == -ENOENT && first) {
                    absent = true;
                    break;
                }
                if (r == -ENOENT) {
                    restart = true; /* removed while being read */
                    break;
                }
                rc = fbk__rados_fail(l, r, "read the names to build their references");
                break;
            }
            rb_gen pg = {0};
            char *k, *v;
            size_t kl, vl;
            while (rados_omap_get_next2(ib, &k, &v, &kl, &vl) == 0 && k) {
                if (kl == RB_GEN_KLEN && memcmp(k, RB_GEN_KEY, kl) == 0)
                    gen_from(&pg, v, vl);
                else if (kl == RB_MARK_KLEN && memcmp(k, RB_MARK_KEY, kl) == 0)
                    marker = true;
            }
            end_iter(ib);
            if (!pg.nextlen)
                gen_from(&pg, "", 0);
            if (first)
                g = pg;
            else if (pg.oldlen != g.oldlen || memcmp(pg.old, g.old, g.oldlen) != 0)
                restart = true;
            bool past = false;
            while (!marker && !restart && !rc &&
                   rados_omap_get_next2(it, &k, &v, &kl, &vl) == 0 && k) {
                if (kl >= sizeof after || memchr(k, '\0', kl)) {
                    rc = foreign_entry(l, kl);
                    break;
                }
                memcpy(after, k, kl);
                after[kl] = '\0';
                if (!is_hex32(k, kl)) {
                    if ((unsigned char)k[0] > 'f') {
                        past = true; /* the bindings are behind: sorted */
                        break;
                    }
                    continue;
                }
                const void *nm;
                size_t nl;
                fbk_key key;
                uint64_t size;
                char okey[33], hex[33];
                memcpy(okey, k, 32);
                okey[32] = '\0';
                if (decode(l, okey, v, vl, &nm, &nl, &key, &size) != FBK_OK)
                    continue; /* damaged: its object unknown (name_get says so) */
                fbk_key_format_hex(&key, hex);
                rc = refs_add(l, &refs, hex, okey);
            }
            end_iter(it);
            if (marker || restart || rc || past || !more)
                break;
        }
        if (rc || (marker && !restart) || (absent && !create))
            break;
        if (restart)
            continue;
        if (absent)
            gen_from(&g, "", 0);
        /* one write: the references, the marker, the generation */
        size_t nk = refs.n + 1;
        const char **keys = malloc(nk * sizeof *keys);
        const char **vals = malloc(nk * sizeof *vals);
        size_t *kls = malloc(nk * sizeof *kls);
        size_t *vls = malloc(nk * sizeof *vls);
        if (!keys || !vals || !kls || !vls) {
            free(keys);
            free(vals);
            free(kls);
            free(vls);
            rc = fbk_error_set(FBK_ENOMEM, ENOMEM,
                               "rados: references of the names of \"%s\": out of memory", l->name);
            break;
        }
        keys[0] = RB_MARK_KEY;
        kls[0] = RB_MARK_KLEN;
        for (size_t i = 0; i < refs.n; i++) {
            keys[i + 1] = refs.k[i];
            kls[i + 1] = RB_REF_KLEN;
        }
        for (size_t i = 0; i < nk; i++) {
            vals[i] = "";
            vls[i] = 0;
        }
        int pg = 0;
        rados_write_op_t op = rados_create_write_op();
        rados_write_op_create(op, LIBRADOS_CREATE_IDEMPOTENT, NULL);
        gen_guard(op, &g, &pg);
        rados_write_op_omap_set2(op, keys, vals, kls, vls, nk);
        int r = rados_write_op_operate(op, l->io, RB_NAMES_OBJ, NULL, 0);
        rados_release_write_op(op);
        free(keys);
        free(vals);
        free(kls);
        free(vls);
        if (r == -ECANCELED)
            continue;
        if (r < 0)
            rc = fbk__rados_fail(l, r, "write the references of %zu names", refs.n);
        else
            gen_note(l, &g);
        break;
    }
    free(refs.k);
    return rc;
}

int fbk__rados_names_open(rados_loc *l)
{
    /* one read of the marker; the build only for an index from before */
    const char *bk[2] = {RB_GEN_KEY, RB_MARK_KEY};
    size_t bkl[2] = {RB_GEN_KLEN, RB_MARK_KLEN};
    rados_omap_iter_t it = NULL;
    int pv = 0;
    rados_read_op_t op = rados_create_read_op();
    rados_read_op_omap_get_vals_by_keys2(op, bk, 2, bkl, &it, &pv);
    int r = rados_read_op_operate(op, l->io, RB_NAMES_OBJ, 0);
    rados_release_read_op(op);
    if (r >= 0 && pv < 0)
        r = pv;
    bool marker = false;
    char *k, *v;
    size_t kl, vl;
    while (r >= 0 && rados_omap_get_next2(it, &k, &v, &kl, &vl) == 0 && k) {
        if (kl == RB_MARK_KLEN && memcmp(k, RB_MARK_KEY, kl) == 0)
            marker = true;
        else if (kl == RB_GEN_KLEN && memcmp(k, RB_GEN_KEY, kl) == 0)
            gen_seen(l, v, vl);
    }
    end_iter(it);
    if (r == -ENOENT || marker)
        return FBK_OK;
    if (r < 0)
        return fbk__rados_fail(l, r, "read the name index's marker");
    return build_refs(l, false);
}

/* ------------------------------------------------------ applying names */

typedef struct change {
    char k[33];
    size_t pos;
    bool had;    /* the name was bound before the batch ... */
    char old[33]; /* ... to this object */
} change;

static int by_key_then_pos(const void *a, const void *b)
{
    const change *x = a, *y = b;
    int c = strcmp(x->k, y->k);
    return c ? c : (x->pos < y->pos ? -1 : x->pos > y->pos);
}

static int by_k(const void *key, const void *elem)
{
    return strcmp(key, ((const change *)elem)->k);
}

typedef struct newkey {
    char hex[33];
    char tomb[34];
    bool dead;     /* tombstoned */
    int stat;      /* rados_aio_stat's result */
    uint64_t size;
    time_t mtime;
} newkey;

static int by_hex(const void *a, const void *b)
{
    return strcmp(((const newkey *)a)->hex, ((const newkey *)b)->hex);
}

static int by_hex_key(const void *key, const void *elem)
{
    return strcmp(key, ((const newkey *)elem)->hex);
}

/* rados_aio_stat of each nk[i] issued (c[i]; nk[i].stat < 0 when it could
 * not be), then collected: stat_wait returns the first failure other than
 * ENOENT. */
static void stat_start(rados_loc *l, newkey *nk, size_t n, rados_completion_t *c)
{
    for (size_t i = 0; i < n; i++) {
        nk[i].stat = rados_aio_create_completion2(NULL, NULL, &c[i]);
        if (nk[i].stat < 0)
            continue;
        nk[i].stat = rados_aio_stat(l->io, nk[i].hex, c[i], &nk[i].size, &nk[i].mtime);
        if (nk[i].stat < 0)
            rados_aio_release(c[i]);
        else
            nk[i].stat = 1; /* in flight */
    }
}

static int stat_wait(rados_loc *l, newkey *nk, size_t n, rados_completion_t *c)
{
    int rc = FBK_OK;
    for (size_t i = 0; i < n; i++) {
        if (nk[i].stat == 1) {
            rados_aio_wait_for_complete(c[i]);
            nk[i].stat = rados_aio_get_return_value(c[i]);
            rados_aio_release(c[i]);
        }
        if (nk[i].stat < 0 && nk[i].stat != -ENOENT && !rc)
            rc = fbk__rados_fail(l, nk[i].stat, "stat %s", nk[i].hex);
    }
    return rc;
}

/* The arrays of one name_apply (nu distinct names, nn distinct objects). */
typedef struct apply_mem {
    change *ch;
    newkey *nk;
    char **enc;   /* per change: the encoded binding (NULL: an unbinding) */
    size_t *encl;
    char (*oref)[RB_REF_KLEN + 1], (*nref)[RB_REF_KLEN + 1];
    const char **rk, **sk, **sv, **xk; /* read keys, set keys/values, rm keys */
    size_t *rkl, *skl, *svl, *xkl;
    rados_completion_t *sc; /* the stats of the fast path */
} apply_mem;

static void apply_free(apply_mem *a, size_t n)
{
    if (a->enc)
        for (size_t i = 0; i < n; i++)
            free(a->enc[i]);
    free(a->ch);
    free(a->nk);
    free(a->enc);
    free(a->encl);
    free(a->oref);
    free(a->nref);
    free(a->rk);
    free(a->sk);
    free(a->sv);
    free(a->xk);
    free(a->rkl);
    free(a->skl);
    free(a->svl);
    free(a->xkl);
    free(a->sc);
}

int fbk__rados_name_apply(void *self, void *loc, const fbk_name_op *ops, size_t n)
{
    (void)self;
    rados_loc *l = loc;
    if (n == 0)
        return FBK_OK;
    /* the bound objects first: acknowledged by the cluster, or no binding */
    int rc = fbk__rados_settle(l, false);
    if (rc)
        return rc;
    size_t ntk = 0;
    rb_tomb *tk = tombs_take(l, &ntk); /* carried by this write */
    if (ntk)
        qsort(tk, ntk, sizeof *tk, by_tomb);
    apply_mem a = {0};
    a.ch = malloc(n * sizeof *a.ch);
    a.nk = malloc(n * sizeof *a.nk);
    a.enc = calloc(n, sizeof *a.enc);
    a.encl = calloc(n, sizeof *a.encl);
    a.oref = malloc(n * sizeof *a.oref);
    a.nref = malloc(n * sizeof *a.nref);
    a.rk = malloc((2 * n + 2 + ntk) * sizeof *a.rk);
    a.rkl = malloc((2 * n + 2 + ntk) * sizeof *a.rkl);
    a.sk = malloc(2 * n * sizeof *a.sk);
    a.skl = malloc(2 * n * sizeof *a.skl);
    a.sv = malloc(2 * n * sizeof *a.sv);
    a.svl = malloc(2 * n * sizeof *a.svl);
    a.xk = malloc((2 * n + ntk) * sizeof *a.xk);
    a.xkl = malloc((2 * n + ntk) * sizeof *a.xkl);
    a.sc = malloc(n * sizeof *a.sc);
    size_t nu = 0, nn = 0;
    if (!a.ch || !a.nk || !a.enc || !a.encl || !a.oref || !a.nref || !a.rk || !a.rkl || !a.sk ||
        !a.skl || !a.sv || !a.svl || !a.xk || !a.xkl || !a.sc) {
        rc = fbk_error_set(FBK_ENOMEM, ENOMEM, "rados: names of \"%s\": out of memory", l->name);
        goto out;
    }
    change *ch = a.ch;
    newkey *nk = a.nk;
    /* the last change of each name wins (ops apply in order) */
    for (size_t i = 0; i < n; i++) {
        omap_key(ops[i].name, ops[i].len, ch[i].k);
        ch[i].pos = i;
    }
    qsort(ch, n, sizeof *ch, by_key_then_pos);
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && strcmp(ch[i].k, ch[i + 1].k) == 0)
            continue; /* a later change of the same name follows */
        ch[nu++] = ch[i];
    }
    /* the bindings encoded once; the distinct objects bound */
    for (size_t i = 0; i < nu; i++) {
        const fbk_name_op *op = &ops[ch[i].pos];
        if (!op->key)
            continue;
        rc = encode(op, &a.enc[i], &a.encl[i]);
        if (rc)
            goto out;
        char hex[33];
        fbk_key_format_hex(op->key, hex);
        ref_key(a.nref[i], hex, ch[i].k);
        memcpy(nk[nn].hex, hex, sizeof hex);
        tomb_key(nk[nn].tomb, hex);
        nn++;
    }
    qsort(nk, nn, sizeof *nk, by_hex);
    size_t d = 0;
    for (size_t i = 0; i < nn; i++)
        if (!d || strcmp(nk[d - 1].hex, nk[i].hex) != 0)
            nk[d++] = nk[i];
    nn = d;

    for (unsigned attempt = 0;; attempt++) {
        if (attempt == RB_RETRIES) {
            rc = contended(l, "apply name changes");
            break;
        }
        if (attempt)
            backoff(attempt);
        /* the fast path: when the index is still as this store's last write
         * left it, the objects' stats are made while it is read (see
         * docs/rados-backend.md, Orphans) */
        rb_gen cg;
        bool fast = attempt == 0 && nn && gen_cached(l, &cg);
        if (fast)
            stat_start(l, nk, nn, a.sc);
        /* 1. one read: generation, marker, the names' bindings now, the
         * tombstones of the objects to bind */
        size_t nr = 0;
        a.rk[nr] = RB_GEN_KEY;
        a.rkl[nr++] = RB_GEN_KLEN;
        a.rk[nr] = RB_MARK_KEY;
        a.rkl[nr++] = RB_MARK_KLEN;
        for (size_t i = 0; i < nu; i++) {
            a.rk[nr] = ch[i].k;
            a.rkl[nr++] = 32;
            ch[i].had = false;
        }
        for (size_t i = 0; i < nn; i++) {
            a.rk[nr] = nk[i].tomb;
            a.rkl[nr++] = 33;
            nk[i].dead = false;
        }
        for (size_t i = 0; i < ntk; i++) { /* still ours? */
            a.rk[nr] = tk[i].key;
            a.rkl[nr++] = 33;
            tk[i].live = false;
        }
        rados_omap_iter_t it = NULL;
        int pv = 0;
        rados_read_op_t rop = rados_create_read_op();
        rados_read_op_omap_get_vals_by_keys2(rop, a.rk, nr, a.rkl, &it, &pv);
        int r = rados_read_op_operate(rop, l->io, RB_NAMES_OBJ, 0);
        rados_release_read_op(rop);
        if (r >= 0 && pv < 0)
            r = pv;
        rb_gen g = {0};
        bool marker = false;
        if (r >= 0) {
            char *k, *v;
            size_t klen, vlen;
            while (rados_omap_get_next2(it, &k, &v, &klen, &vlen) == 0 && k) {
                if (klen == RB_GEN_KLEN && memcmp(k, RB_GEN_KEY, klen) == 0) {
                    gen_from(&g, v, vlen);
                } else if (klen == RB_MARK_KLEN && memcmp(k, RB_MARK_KEY, klen) == 0) {
                    marker = true;
                } else if (klen == 32) {
                    char okey[33];
                    memcpy(okey, k, 32);
                    okey[32] = '\0';
                    change *c = bsearch(okey, ch, nu, sizeof *ch, by_k);
                    const void *nm;
                    size_t nl;
                    fbk_key old;
                    uint64_t size;
                    /* a damaged binding is overwritten; its reference, if
                     * any, stays (its object is kept: safe) */
                    if (c && decode(l, okey, v, vlen, &nm, &nl, &old, &size) == FBK_OK) {
                        char hex[33];
                        fbk_key_format_hex(&old, hex);
                        ref_key(a.oref[c - ch], hex, c->k);
                        c->had = true;
                    }
                } else if (klen == 33 && k[0] == 'x') {
                    char hex[33];
                    memcpy(hex, k + 1, 32);
                    hex[32] = '\0';
                    newkey *x = bsearch(hex, nk, nn, sizeof *nk, by_hex_key);
                    if (x)
                        x->dead = true;
                    tomb_seen(tk, ntk, k, v, vlen);
                }
            }
        }
        end_iter(it);
        if (fast) {
            int sr = stat_wait(l, nk, nn, a.sc);
            if (r >= 0 && sr) {
                rc = sr;
                break;
            }
        }
        if (r < 0 && r != -ENOENT) {
            rc = fbk__rados_fail(l, r, "read the bindings of %zu names", nu);
            break;
        }
        if (!g.nextlen)
            gen_from(&g, "", 0);
        /* the stats count only if no other write came since this store's */
        fast = fast && gen_same(&g, &cg);
        if (!marker) {
            /* an index from before the references (or none yet): complete
             * them first, then start over */
            rc = build_refs(l, true);
            if (rc)
                break;
            continue;
        }
        /* 2. a tombstoned object, or one that is gone, refuses the batch
         * (stat after the read: a removal that began after it bumps the
         * generation, so the write below fails and all is read again) */
        const char *gone = NULL;
        for (size_t i = 0; i < nn && !gone; i++)
            if (nk[i].dead)
                gone = nk[i].hex;
        if (!gone && nn && !fast) {
            stat_start(l, nk, nn, a.sc);
            rc = stat_wait(l, nk, nn, a.sc);
            if (rc)
                break;
        }
        for (size_t i = 0; i < nn && !gone; i++)
            if (nk[i].stat == -ENOENT)
                gone = nk[i].hex;
        if (gone) {
            rc = fbk_error_set(FBK_EINVAL, 0,
                               "rados: names of \"%s\" (pool %s): object %s, bound by the batch, "
                               "is not in the location (another process removed it, or is "
                               "removing it, as bound by no name); none of the %zu name changes "
                               "is applied",
                               l->name, l->b->pool, gone, n);
            break;
        }
        /* 3. one guarded write: the old references and unbound names out,
         * then the bindings and their references in, the generation + 1 */
        size_t nx = 0, ns = 0;
        for (size_t i = 0; i < ntk; i++) {
            if (!tk[i].live)
                continue; /* gone, or another removal's now: left to it */
            a.xk[nx] = tk[i].key;
            a.xkl[nx++] = 33;
        }
        for (size_t i = 0; i < nu; i++) {
            if (ch[i].had) {
                a.xk[nx] = a.oref[i];
                a.xkl[nx++] = RB_REF_KLEN;
            }
            if (!a.enc[i]) {
                a.xk[nx] = ch[i].k;
                a.xkl[nx++] = 32;
                continue;
            }
            a.sk[ns] = ch[i].k;
            a.skl[ns] = 32;
            a.sv[ns] = a.enc[i];
            a.svl[ns++] = a.encl[i];
            a.sk[ns] = a.nref[i];
            a.skl[ns] = RB_REF_KLEN;
            a.sv[ns] = "";
            a.svl[ns++] = 0;
        }
        int pg = 0;
        rados_write_op_t wop = rados_create_write_op();
        rados_write_op_create(wop, LIBRADOS_CREATE_IDEMPOTENT, NULL);
        gen_guard(wop, &g, &pg);
        if (nx)
            rados_write_op_omap_rm_keys2(wop, a.xk, a.xkl, nx);
        if (ns)
            rados_write_op_omap_set2(wop, a.sk, a.sv, a.skl, a.svl, ns);
        r = rados_write_op_operate(wop, l->io, RB_NAMES_OBJ, NULL, 0);
        rados_release_write_op(wop);
        if (r == -ECANCELED)
            continue; /* another client wrote the index since the read */
        if (r < 0) {
            rc = fbk__rados_fail(l, r, "apply %zu name changes", n);
        } else {
            gen_note(l, &g);
            free(tk); /* removed with the changes */
            tk = NULL;
            ntk = 0;
        }
        break;
    }
out:
    if (tk)
        tombs_return(l, tk, ntk);
    apply_free(&a, n);
    return rc;
}

/* ------------------------------------------------ removing the unbound */

typedef struct ub_mem ub_mem;
static int run_unbound(rados_loc *l, size_t n, int *removed, ub_mem *m);

/* Removes the tombstones t[0..n) (sorted) this store set, those still
 * with the value it wrote (one that another removal took over is that
 * one's): one read of the generation and their values, one guarded
 * write. */
static int clear_tombstones(rados_loc *l, rb_tomb *t, size_t n)
{
    const char **keys = malloc((n + 1) * sizeof *keys);
    size_t *kl = malloc((n + 1) * sizeof *kl);
    if (!keys || !kl) {
        free(keys);
        free(kl);
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "rados: tombstones of \"%s\": out of memory",
                             l->name);
    }
    int rc = FBK_OK;
    for (unsigned attempt = 0;; attempt++) {
        if (attempt == RB_RETRIES) {
            rc = contended(l, "remove the tombstones of removed objects");
            break;
        }
        if (attempt)
            backoff(attempt);
        keys[0] = RB_GEN_KEY;
        kl[0] = RB_GEN_KLEN;
        for (size_t i = 0; i < n; i++) {
            keys[i + 1] = t[i].key;
            kl[i + 1] = 33;
            t[i].live = false;
        }
        rb_gen g = {0};
        rados_omap_iter_t it = NULL;
        int pv = 0;
        rados_read_op_t op = rados_create_read_op();
        rados_read_op_omap_get_vals_by_keys2(op, keys, n + 1, kl, &it, &pv);
        int r = rados_read_op_operate(op, l->io, RB_NAMES_OBJ, 0);
        rados_release_read_op(op);
        if (r >= 0 && pv < 0)
            r = pv;
        char *k, *v;
        size_t klen, vlen;
        while (r >= 0 && rados_omap_get_next2(it, &k, &v, &klen, &vlen) == 0 && k) {
            if (klen == RB_GEN_KLEN && memcmp(k, RB_GEN_KEY, klen) == 0)
                gen_from(&g, v, vlen);
            else if (klen == 33)
                tomb_seen(t, n, k, v, vlen);
        }
        end_iter(it);
        if (r == -ENOENT)
            break; /* no index, no tombstone */
        if (r < 0) {
            rc = fbk__rados_fail(l, r, "read the tombstones of %zu removed objects", n);
            break;
        }
        if (!g.nextlen)
            gen_from(&g, "", 0);
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (t[i].live) {
                keys[m] = t[i].key;
                kl[m++] = 33;
            }
        if (!m)
            break;
        int pg = 0;
        rados_write_op_t w = rados_create_write_op();
        gen_guard(w, &g, &pg);
        rados_write_op_omap_rm_keys2(w, keys, kl, m);
        r = rados_write_op_operate(w, l->io, RB_NAMES_OBJ, NULL, 0);
        rados_release_write_op(w);
        if (r == -ECANCELED)
            continue;
        if (r < 0 && r != -ENOENT)
            rc = fbk__rados_fail(l, r, "remove the tombstones of %zu removed objects", m);
        else if (r >= 0)
            gen_note(l, &g);
        break;
    }
    free(keys);
    free(kl);
    return rc;
}

/* The arrays of a removal of RB_UNBOUND_CHUNK keys (on the heap: some
 * 90 KiB, too much for a caller's stack). */
typedef struct ub_mem {
    char hex[RB_UNBOUND_CHUNK][33], pre[RB_UNBOUND_CHUNK][34], tomb[RB_UNBOUND_CHUNK][34];
    rb_headread hr[RB_UNBOUND_CHUNK];
    rados_omap_iter_t it[RB_UNBOUND_CHUNK];
    unsigned char more[RB_UNBOUND_CHUNK];
    int pv[RB_UNBOUND_CHUNK];
    const char *vk[RB_UNBOUND_CHUNK], *vv[RB_UNBOUND_CHUNK];
    size_t vkl[RB_UNBOUND_CHUNK], vvl[RB_UNBOUND_CHUNK];
    size_t victim[RB_UNBOUND_CHUNK];
    int res[RB_UNBOUND_CHUNK];
    unsigned char tstate[RB_UNBOUND_CHUNK];
    rb_tomb mine[RB_UNBOUND_CHUNK];
    const char *bk[2 + RB_UNBOUND_CHUNK];
    size_t bkl[2 + RB_UNBOUND_CHUNK];
} ub_mem;

/* remove_unbound of keys[0..n), n <= RB_UNBOUND_CHUNK. */
static int unbound_chunk(rados_loc *l, const fbk_key *keys, size_t n, int *removed, ub_mem *m)
{
    char(*hex)[33] = m->hex, (*pre)[34] = m->pre, (*tomb)[34] = m->tomb;
    for (size_t i = 0; i < n; i++) {
        removed[i] = 0;
        fbk_key_format_hex(&keys[i], hex[i]);
        pre[i][0] = 'r';
        memcpy(pre[i] + 1, hex[i], 33);
        tomb_key(tomb[i], hex[i]);
    }
    /* the objects' first bytes (stripe heads?) meanwhile */
    rb_headread *hr = m->hr;
    fbk__rados_heads_start(l, (const char(*)[33])hex, n, hr);
    int rc = run_unbound(l, n, removed, m);
    fbk__rados_heads_wait(hr, n);
    return rc;
}

static int run_unbound(rados_loc *l, size_t n, int *removed, ub_mem *m)
{
    char(*hex)[33] = m->hex, (*pre)[34] = m->pre, (*tomb)[34] = m->tomb;
    rb_headread *hr = m->hr;
    rados_omap_iter_t *it = m->it;
    unsigned char *more = m->more;
    int *pv = m->pv, *res = m->res;
    const char **vk = m->vk, **vv = m->vv, **bk = m->bk;
    size_t *vkl = m->vkl, *vvl = m->vvl, *victim = m->victim, *bkl = m->bkl, nv = 0;
    /* per key: 0 no tombstone, 1 a young one of another removal (left to
     * it), 2 an old one (a crashed removal's: taken over) */
    unsigned char *tstate = m->tstate;
    rb_tomb *mine = m->mine;
    bk[0] = RB_GEN_KEY;
    bkl[0] = RB_GEN_KLEN;
    bk[1] = RB_MARK_KEY;
    bkl[1] = RB_MARK_KLEN;
    for (size_t i = 0; i < n; i++) {
        bk[2 + i] = tomb[i];
        bkl[2 + i] = 33;
    }
    char stamp[24];
    int rc = FBK_OK;
    for (unsigned attempt = 0;; attempt++) {
        if (attempt == RB_RETRIES)
            return contended(l, "remove objects bound by no name");
        if (attempt)
            backoff(attempt);
        /* 1. one read: generation, marker, the keys' tombstones and a
         * reference of each key */
        rados_omap_iter_t ib = NULL;
        int pb = 0;
        rados_read_op_t op = rados_create_read_op();
        rados_read_op_omap_get_vals_by_keys2(op, bk, 2 + n, bkl, &ib, &pb);
        for (size_t i = 0; i < n; i++) {
            it[i] = NULL;
            pv[i] = 0;
            rados_read_op_omap_get_vals2(op, "", pre[i], 1, &it[i], &more[i], &pv[i]);
        }
        int r = rados_read_op_operate(op, l->io, RB_NAMES_OBJ, 0);
        rados_release_read_op(op);
        if (r >= 0 && pb < 0)
            r = pb;
        for (size_t i = 0; i < n && r >= 0; i++)
            if (pv[i] < 0)
                r = pv[i];
        rb_gen g = {0};
        bool marker = false;
        time_t now = time(NULL);
        nv = 0;
        memset(tstate, 0, n);
        if (r >= 0) {
            char *k, *v;
            size_t kl, vl;
            while (rados_omap_get_next2(ib, &k, &v, &kl, &vl) == 0 && k) {
                if (kl == RB_GEN_KLEN && memcmp(k, RB_GEN_KEY, kl) == 0) {
                    gen_from(&g, v, vl);
                } else if (kl == RB_MARK_KLEN && memcmp(k, RB_MARK_KEY, kl) == 0) {
                    marker = true;
                } else if (kl == 33) {
                    /* when it was set (not a number: as old as can be) */
                    char b[24] = "";
                    if (vl && vl < sizeof b) /* an empty value may come as NULL */
                        memcpy(b, v, vl);
                    long long t = strtoll(b, NULL, 10);
                    for (size_t i = 0; i < n; i++)
                        if (memcmp(k, tomb[i], 33) == 0)
                            tstate[i] = (long long)now - t < RB_TOMB_AGE ? 1 : 2;
                }
            }
            /* no reference: bound by no name */
            for (size_t i = 0; i < n; i++)
                if (rados_omap_get_next2(it[i], &k, &v, &kl, &vl) != 0 || !k)
                    victim[nv++] = i;
        }
        end_iter(ib);
        for (size_t i = 0; i < n; i++)
            end_iter(it[i]);
        if (r < 0 && r != -ENOENT)
            return fbk__rados_fail(l, r, "read the references of %zu objects", n);
        if (!marker) {
            /* no index (no binding anywhere) or one from before the
             * references: complete them, then read again */
            rc = build_refs(l, true);
            if (rc)
                return rc;
            continue;
        }
        /* a key another removal marked a moment ago is that one's to
         * remove: counted as removed, left alone */
        size_t a = 0;
        for (size_t j = 0; j < nv; j++) {
            if (tstate[victim[j]] == 1)
                removed[victim[j]] = 1;
            else
                victim[a++] = victim[j];
        }
        nv = a;
        if (!nv)
            return FBK_OK;
        if (!g.nextlen)
            gen_from(&g, "", 0);
        /* 2. one guarded write: the tombstones of the unbound ones, holding
         * when they were set */
        snprintf(stamp, sizeof stamp, "%lld", (long long)now);
        for (size_t j = 0; j < nv; j++) {
            vk[j] = tomb[victim[j]];
            vkl[j] = 33;
            vv[j] = stamp;
            vvl[j] = strlen(stamp);
        }
        int pg = 0;
        rados_write_op_t w = rados_create_write_op();
        gen_guard(w, &g, &pg);
        rados_write_op_omap_set2(w, vk, vv, vkl, vvl, nv);
        r = rados_write_op_operate(w, l->io, RB_NAMES_OBJ, NULL, 0);
        rados_release_write_op(w);
        if (r == -ECANCELED || r == -ENOENT)
            continue; /* changed (or dropped) since the read */
        if (r < 0)
            return fbk__rados_fail(l, r, "mark %zu objects bound by no name for removal", nv);
        gen_note(l, &g);
        break;
    }
    /* 3. the objects (and their stripes); a crash from here on leaves the
     * tombstones (a binding of their keys is refused; after RB_TOMB_AGE a
     * later removal of a key takes its tombstone over and finishes) */
    fbk__rados_heads_wait(hr, n);
    rc = fbk__rados_remove_heads(l, (const char(*)[33])hex, hr, victim, nv, res);
    char msg[512] = "";
    int os = rc ? fbk_last_os_error() : 0;
    if (rc)
        snprintf(msg, sizeof msg, "%s", fbk_errmsg()); /* reported below */
    size_t nd = 0;
    for (size_t j = 0; j < nv; j++) {
        size_t i = victim[j];
        if (res[j] == FBK_OK || res[j] == FBK_ENOTFOUND) {
            removed[i] = 1;
            memcpy(mine[nd].key, tomb[i], 34);
            snprintf(mine[nd].val, sizeof mine[nd].val, "%s", stamp);
            mine[nd++].live = false;
        }
    }
    /* 4. their tombstones, once every delete is acknowledged: with this
     * store's next write of the index (name_apply) or its close, each if it
     * still holds this removal's value; now only when they cannot be kept */
    int r = FBK_OK;
    if (nd && !tombs_add(l, mine, nd)) {
        qsort(mine, nd, sizeof *mine, by_tomb);
        r = clear_tombstones(l, mine, nd);
    }
    if (r && !rc)
        return r;
    return rc ? fbk_error_set(rc, os, "%s", msg) : FBK_OK;
}

int fbk__rados_remove_unbound_many(void *self, void *loc, const fbk_key *keys, size_t n,
                                   int *removed)
{
    (void)self;
    rados_loc *l = loc;
    int rc = FBK_OK;
    for (size_t i = 0; i < n; i++)
        removed[i] = 0;
    if (!n)
        return FBK_OK;
    ub_mem *mem = malloc(sizeof *mem);
    if (!mem)
        return fbk_error_set(FBK_ENOMEM, ENOMEM,
                             "rados: remove %zu objects bound by no name from \"%s\": out of "
                             "memory",
                             n, l->name);
    for (size_t i = 0; i < n; i += RB_UNBOUND_CHUNK) {
        size_t m = n - i < RB_UNBOUND_CHUNK ? n - i : RB_UNBOUND_CHUNK;
        rc = unbound_chunk(l, keys + i, m, removed + i, mem);
        if (rc)
            break; /* removed[] tells what went */
    }
    free(mem);
    return rc;
}

int fbk__rados_remove_unbound(void *self, void *loc, const fbk_key *key)
{
    int removed = 0;
    int rc = fbk__rados_remove_unbound_many(self, loc, key, 1, &removed);
    return rc ? rc : removed;
}

void fbk__rados_names_close(rados_loc *l)
{
    size_t n = 0;
    rb_tomb *t = tombs_take(l, &n);
    if (n) {
        qsort(t, n, sizeof *t, by_tomb);
        for (size_t i = 0; i < n; i += 1024)
            if (clear_tombstones(l, t + i, n - i < 1024 ? n - i : 1024) != FBK_OK)
                break; /* left in the index: they refuse bindings of objects that are gone */
    }
    free(t);
}
