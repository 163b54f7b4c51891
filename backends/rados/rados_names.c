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
 * Beside the bindings, in the same omap: the generation, the marker, the
 * references and the tombstones that keep an object a name binds from
 * being removed as bound by none (rados_refs.c; docs/rados-backend.md,
 * "Orphans"); every write of the index carries the generation guard.
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

/* Encodes a binding into a fresh buffer (*out, *olen). */
static int encode(const fbk_name_op *op, char **out, size_t *olen)
{
    size_t n = HDR + op->len + 8;
    unsigned char *p = malloc(n);
    if (!p)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "rados: names: out of memory");
    memcpy(p, "FBKN", 4);
    fbk__rados_put_le(p + 4, 1, 4);
    memcpy(p + 8, op->key->bytes, 16);
    fbk__rados_put_le(p + 24, op->size, 8);
    fbk__rados_put_le(p + 32, op->len, 4);
    memcpy(p + HDR, op->name, op->len);
    fbk__rados_put_le(p + HDR + op->len, XXH3_64bits(p, HDR + op->len), 8);
    *out = (char *)p;
    *olen = n;
    return FBK_OK;
}

static int decode(const rados_loc *l, const char *okey, const char *val, size_t vlen,
                  const void **name, size_t *len, fbk_key *key, uint64_t *size)
{
    const unsigned char *p = (const unsigned char *)val;
    size_t nlen = vlen >= HDR ? (size_t)fbk__rados_get_le(p + 32, 4) : 0;
    if (vlen < HDR + 8 || memcmp(p, "FBKN", 4) != 0 || fbk__rados_get_le(p + 4, 4) != 1 || !nlen ||
        nlen > FBK_NAME_MAX || vlen != HDR + nlen + 8 ||
        fbk__rados_get_le(p + HDR + nlen, 8) != XXH3_64bits(p, HDR + nlen))
        return fbk_error_set(FBK_ECORRUPT, 0,
                             "rados: name index of \"%s\" (pool %s, object " RB_NAMES_OBJ
                             "): entry %s is damaged",
                             l->name, l->b->pool, okey);
    memcpy(key->bytes, p + 8, 16);
    *size = fbk__rados_get_le(p + 24, 8);
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
    rados_omap_iter_t it;
    int r = fbk__rados_read_keys(l, keys, klen, 1, &it);
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

int fbk__rados_bindings_page(const rados_loc *l, rados_omap_iter_t it, char after[RB_AFTER_MAX],
                             bool *past, bool skip_damaged, rb_binding_fn each, void *arg)
{
    *past = false;
    for (;;) {
        char *ok = NULL, *val = NULL;
        size_t oklen = 0, vlen = 0;
        if (rados_omap_get_next2(it, &ok, &val, &oklen, &vlen) < 0 || !ok)
            return FBK_OK;
        if (oklen >= RB_AFTER_MAX || memchr(ok, '\0', oklen))
            return foreign_entry(l, oklen);
        memcpy(after, ok, oklen);
        after[oklen] = '\0';
        if (!is_hex32(ok, oklen)) {
            /* the generation, the marker ("\x1f..." before the
             * bindings), references and tombstones ("r...", "x..."
             * after them): not bindings */
            if ((unsigned char)ok[0] > 'f') {
                *past = true;
                return FBK_OK;
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
        int rc = decode(l, okey, val, vlen, &n, &nl, &key, &size);
        if (rc && skip_damaged)
            continue;
        if (rc == FBK_OK)
            rc = each(okey, n, nl, &key, size, arg);
        if (rc)
            return rc;
    }
}

typedef struct scan_ctx {
    fbk_binding_fn each;
    void *arg;
} scan_ctx;

static int scan_each(const char *okey, const void *name, size_t len, const fbk_key *key,
                     uint64_t size, void *arg)
{
    (void)okey;
    const scan_ctx *s = arg;
    return s->each(name, len, key, size, s->arg);
}

int fbk__rados_name_scan(void *self, void *loc, fbk_binding_fn each, void *arg)
{
    (void)self;
    rados_loc *l = loc;
    scan_ctx s = {each, arg};
    char after[RB_AFTER_MAX] = "";
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
        bool past = false;
        int rc = fbk__rados_bindings_page(l, it, after, &past, false, scan_each, &s);
        rados_omap_get_end(it);
        if (rc || past || !more)
            return rc;
    }
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

/* The arrays of one name_apply of n changes (nu distinct names, nn
 * distinct objects), and the deferred tombstones its write carries. */
typedef struct apply_mem {
    size_t n, nu, nn;
    change *ch;
    newkey *nk;
    char **enc;   /* per change: the encoded binding (NULL: an unbinding) */
    size_t *encl;
    char (*oref)[RB_REF_KLEN + 1], (*nref)[RB_REF_KLEN + 1];
    const char **rk, **sk, **sv, **xk; /* read keys, set keys/values, rm keys */
    size_t *rkl, *skl, *svl, *xkl;
    rados_completion_t *sc; /* the stats of the fast path */
    rb_tomb *tk;            /* sorted; NULL once removed by the write */
    size_t ntk;
} apply_mem;

static int apply_alloc(const rados_loc *l, apply_mem *a)
{
    size_t n = a->n, ntk = a->ntk;
    a->ch = malloc(n * sizeof *a->ch);
    a->nk = malloc(n * sizeof *a->nk);
    a->enc = calloc(n, sizeof *a->enc);
    a->encl = calloc(n, sizeof *a->encl);
    a->oref = malloc(n * sizeof *a->oref);
    a->nref = malloc(n * sizeof *a->nref);
    a->rk = malloc((2 * n + 2 + ntk) * sizeof *a->rk);
    a->rkl = malloc((2 * n + 2 + ntk) * sizeof *a->rkl);
    a->sk = malloc(2 * n * sizeof *a->sk);
    a->skl = malloc(2 * n * sizeof *a->skl);
    a->sv = malloc(2 * n * sizeof *a->sv);
    a->svl = malloc(2 * n * sizeof *a->svl);
    a->xk = malloc((2 * n + ntk) * sizeof *a->xk);
    a->xkl = malloc((2 * n + ntk) * sizeof *a->xkl);
    a->sc = malloc(n * sizeof *a->sc);
    if (!a->ch || !a->nk || !a->enc || !a->encl || !a->oref || !a->nref || !a->rk || !a->rkl ||
        !a->sk || !a->skl || !a->sv || !a->svl || !a->xk || !a->xkl || !a->sc)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "rados: names of \"%s\": out of memory", l->name);
    return FBK_OK;
}

static void apply_free(apply_mem *a)
{
    if (a->enc)
        for (size_t i = 0; i < a->n; i++)
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

/* The changes made ready once for every attempt: the last change of each
 * name (ch[0..nu)), its binding encoded and its reference, the distinct
 * objects bound (nk[0..nn)). */
static int apply_prepare(const rados_loc *l, apply_mem *a, const fbk_name_op *ops)
{
    int rc = apply_alloc(l, a);
    if (rc)
        return rc;
    size_t n = a->n, nu = 0, nn = 0;
    change *ch = a->ch;
    newkey *nk = a->nk;
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
    a->nu = nu;
    /* the bindings encoded once; the distinct objects bound */
    for (size_t i = 0; i < nu; i++) {
        const fbk_name_op *op = &ops[ch[i].pos];
        if (!op->key)
            continue;
        rc = encode(op, &a->enc[i], &a->encl[i]);
        if (rc)
            return rc;
        char hex[33];
        fbk_key_format_hex(op->key, hex);
        fbk__rados_ref_key(a->nref[i], hex, ch[i].k);
        memcpy(nk[nn].hex, hex, sizeof hex);
        fbk__rados_tomb_key(nk[nn].tomb, hex);
        nn++;
    }
    qsort(nk, nn, sizeof *nk, by_hex);
    size_t d = 0;
    for (size_t i = 0; i < nn; i++)
        if (!d || strcmp(nk[d - 1].hex, nk[i].hex) != 0)
            nk[d++] = nk[i];
    a->nn = d;
    return FBK_OK;
}

/* A binding k (value v, vlen) the read found: its reference, to remove. */
static void apply_old_binding(const rados_loc *l, apply_mem *a, const char *k, const char *v,
                              size_t vlen)
{
    char okey[33];
    memcpy(okey, k, 32);
    okey[32] = '\0';
    change *c = bsearch(okey, a->ch, a->nu, sizeof *a->ch, by_k);
    const void *nm;
    size_t nl;
    fbk_key old;
    uint64_t size;
    /* a damaged binding is overwritten; its reference, if any, stays (its
     * object is kept: safe) */
    if (c && decode(l, okey, v, vlen, &nm, &nl, &old, &size) == FBK_OK) {
        char hex[33];
        fbk_key_format_hex(&old, hex);
        fbk__rados_ref_key(a->oref[c - a->ch], hex, c->k);
        c->had = true;
    }
}

/* A tombstone k (value v, vlen) the read found: of an object to bind
 * (dead), of one of the store's deferred ones (still its value: live). */
static void apply_tomb(apply_mem *a, const char *k, const char *v, size_t vlen)
{
    char hex[33];
    memcpy(hex, k + 1, 32);
    hex[32] = '\0';
    newkey *x = bsearch(hex, a->nk, a->nn, sizeof *a->nk, by_hex_key);
    if (x)
        x->dead = true;
    fbk__rados_tomb_seen(a->tk, a->ntk, k, v, vlen);
}

/* Step 1: one read of the generation (g), the marker, the names' bindings
 * now, the tombstones of the objects to bind and of the deferred ones;
 * the librados result. */
static int apply_read(const rados_loc *l, apply_mem *a, rb_gen *g, bool *marker)
{
    size_t nr = 0;
    a->rk[nr] = RB_GEN_KEY;
    a->rkl[nr++] = RB_GEN_KLEN;
    a->rk[nr] = RB_MARK_KEY;
    a->rkl[nr++] = RB_MARK_KLEN;
    for (size_t i = 0; i < a->nu; i++) {
        a->rk[nr] = a->ch[i].k;
        a->rkl[nr++] = 32;
        a->ch[i].had = false;
    }
    for (size_t i = 0; i < a->nn; i++) {
        a->rk[nr] = a->nk[i].tomb;
        a->rkl[nr++] = 33;
        a->nk[i].dead = false;
    }
    for (size_t i = 0; i < a->ntk; i++) { /* still ours? */
        a->rk[nr] = a->tk[i].key;
        a->rkl[nr++] = 33;
        a->tk[i].live = false;
    }
    rados_omap_iter_t it;
    int r = fbk__rados_read_keys(l, a->rk, a->rkl, nr, &it);
    char *k, *v;
    size_t klen, vlen;
    while (r >= 0 && rados_omap_get_next2(it, &k, &v, &klen, &vlen) == 0 && k) {
        if (fbk__rados_gen_entry(g, marker, k, klen, v, vlen))
            continue;
        if (klen == 32)
            apply_old_binding(l, a, k, v, vlen);
        else if (klen == 33 && k[0] == 'x')
            apply_tomb(a, k, v, vlen);
    }
    fbk__rados_end_iter(it);
    return r;
}

/* Step 2: a tombstoned object, or one that is gone, refuses the batch
 * (stat after the read: a removal that began after it bumps the
 * generation, so the write below fails and all is read again; fast: the
 * stats made during the read count, no write having come since before
 * them). */
static int apply_refused(rados_loc *l, apply_mem *a, bool fast)
{
    newkey *nk = a->nk;
    size_t nn = a->nn;
    const char *gone = NULL;
    for (size_t i = 0; i < nn && !gone; i++)
        if (nk[i].dead)
            gone = nk[i].hex;
    if (!gone && nn && !fast) {
        stat_start(l, nk, nn, a->sc);
        int rc = stat_wait(l, nk, nn, a->sc);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < nn && !gone; i++)
        if (nk[i].stat == -ENOENT)
            gone = nk[i].hex;
    if (gone)
        return fbk_error_set(FBK_EINVAL, 0,
                             "rados: names of \"%s\" (pool %s): object %s, bound by the batch, "
                             "is not in the location (another process removed it, or is "
                             "removing it, as bound by no name); none of the %zu name changes "
                             "is applied",
                             l->name, l->b->pool, gone, a->n);
    return FBK_OK;
}

/* Step 3: one guarded write -- the deferred tombstones still live, the old
 * references and unbound names out, then the bindings and their references
 * in, the generation + 1; the librados result. */
static int apply_write(const rados_loc *l, apply_mem *a, const rb_gen *g)
{
    size_t nx = 0, ns = 0;
    for (size_t i = 0; i < a->ntk; i++) {
        if (!a->tk[i].live)
            continue; /* gone, or another removal's now: left to it */
        a->xk[nx] = a->tk[i].key;
        a->xkl[nx++] = 33;
    }
    for (size_t i = 0; i < a->nu; i++) {
        if (a->ch[i].had) {
            a->xk[nx] = a->oref[i];
            a->xkl[nx++] = RB_REF_KLEN;
        }
        if (!a->enc[i]) {
            a->xk[nx] = a->ch[i].k;
            a->xkl[nx++] = 32;
            continue;
        }
        a->sk[ns] = a->ch[i].k;
        a->skl[ns] = 32;
        a->sv[ns] = a->enc[i];
        a->svl[ns++] = a->encl[i];
        a->sk[ns] = a->nref[i];
        a->skl[ns] = RB_REF_KLEN;
        a->sv[ns] = "";
        a->svl[ns++] = 0;
    }
    int pg = 0;
    rados_write_op_t wop = rados_create_write_op();
    rados_write_op_create(wop, LIBRADOS_CREATE_IDEMPOTENT, NULL);
    fbk__rados_gen_guard(wop, g, &pg);
    if (nx)
        rados_write_op_omap_rm_keys2(wop, a->xk, a->xkl, nx);
    if (ns)
        rados_write_op_omap_set2(wop, a->sk, a->sv, a->skl, a->svl, ns);
    int r = rados_write_op_operate(wop, l->io, RB_NAMES_OBJ, NULL, 0);
    rados_release_write_op(wop);
    return r;
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
    apply_mem a = {.n = n};
    a.tk = fbk__rados_tombs_take(l, &a.ntk); /* carried by this write */
    rc = apply_prepare(l, &a, ops);
    for (unsigned attempt = 0; rc == FBK_OK; attempt++) {
        rc = fbk__rados_attempt(l, attempt, "apply name changes");
        if (rc)
            break;
        /* the fast path: when the index is still as this store's last write
         * left it, the objects' stats are made while it is read (see
         * docs/rados-backend.md, Orphans) */
        rb_gen cg, g = {0};
        bool fast = attempt == 0 && a.nn && fbk__rados_gen_cached(l, &cg);
        if (fast)
            stat_start(l, a.nk, a.nn, a.sc);
        /* 1. one read: generation, marker, the names' bindings now, the
         * tombstones of the objects to bind */
        bool marker = false;
        int r = apply_read(l, &a, &g, &marker);
        if (fast) {
            int sr = stat_wait(l, a.nk, a.nn, a.sc);
            if (r >= 0 && sr) {
                rc = sr;
                break;
            }
        }
        if (r < 0 && r != -ENOENT) {
            rc = fbk__rados_fail(l, r, "read the bindings of %zu names", a.nu);
            break;
        }
        fbk__rados_gen_done(&g);
        /* the stats count only if no other write came since this store's */
        fast = fast && fbk__rados_gen_same(&g, &cg);
        if (!marker) {
            /* an index from before the references (or none yet): complete
             * them first, then start over */
            rc = fbk__rados_build_refs(l, true);
            continue;
        }
        /* 2. a tombstoned object, or one that is gone, refuses the batch */
        rc = apply_refused(l, &a, fast);
        if (rc)
            break;
        /* 3. one guarded write: the old references and unbound names out,
         * then the bindings and their references in, the generation + 1 */
        r = apply_write(l, &a, &g);
        if (r == -ECANCELED)
            continue; /* another client wrote the index since the read */
        if (r < 0) {
            rc = fbk__rados_fail(l, r, "apply %zu name changes", n);
        } else {
            fbk__rados_gen_note(l, &g);
            free(a.tk); /* removed with the changes */
            a.tk = NULL;
            a.ntk = 0;
        }
        break;
    }
    if (a.tk)
        fbk__rados_tombs_return(l, a.tk, a.ntk);
    apply_free(&a);
    return rc;
}
