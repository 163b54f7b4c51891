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
 * name_apply first waits for every object write of the location issued so
 * far (a failed one fails it: no binding may name an object that is not
 * durable), then applies the whole batch as ONE write op on the names object
 * -- atomic in RADOS, acknowledged once durable on every replica. */
#include "rados_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    char after[33] = "";
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
            char okey[33];
            snprintf(okey, sizeof okey, "%.*s", (int)(oklen < 32 ? oklen : 32), ok);
            memcpy(after, okey, sizeof after);
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

typedef struct change {
    char k[33];
    size_t pos;
} change;

static int by_key_then_pos(const void *a, const void *b)
{
    const change *x = a, *y = b;
    int c = strcmp(x->k, y->k);
    return c ? c : (x->pos < y->pos ? -1 : x->pos > y->pos);
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
    /* the last change of each name wins (ops apply in order) */
    change *ch = malloc(n * sizeof *ch);
    const char **skeys = malloc(n * sizeof *skeys);
    const char **rkeys = malloc(n * sizeof *rkeys);
    char **vals = calloc(n, sizeof *vals);
    size_t *klens = malloc(n * sizeof *klens);
    size_t *vlens = malloc(n * sizeof *vlens);
    size_t ns = 0, nr = 0;
    if (!ch || !skeys || !rkeys || !vals || !klens || !vlens) {
        rc = fbk_error_set(FBK_ENOMEM, ENOMEM, "rados: names of \"%s\": out of memory", l->name);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        omap_key(ops[i].name, ops[i].len, ch[i].k);
        ch[i].pos = i;
    }
    qsort(ch, n, sizeof *ch, by_key_then_pos);
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && strcmp(ch[i].k, ch[i + 1].k) == 0)
            continue; /* a later change of the same name follows */
        const fbk_name_op *op = &ops[ch[i].pos];
        if (op->key) {
            rc = encode(op, &vals[ns], &vlens[ns]);
            if (rc)
                goto out;
            klens[ns] = 32;
            skeys[ns++] = ch[i].k;
        } else {
            rkeys[nr++] = ch[i].k;
        }
    }
    rados_write_op_t op = rados_create_write_op();
    rados_write_op_create(op, LIBRADOS_CREATE_IDEMPOTENT, NULL);
    if (ns)
        rados_write_op_omap_set2(op, skeys, (const char *const *)vals, klens, vlens, ns);
    if (nr) {
        size_t *rl = klens + ns; /* room left: ns + nr <= n */
        for (size_t i = 0; i < nr; i++)
            rl[i] = 32;
        rados_write_op_omap_rm_keys2(op, rkeys, rl, nr);
    }
    int r = rados_write_op_operate(op, l->io, RB_NAMES_OBJ, NULL, 0);
    rados_release_write_op(op);
    if (r < 0)
        rc = fbk__rados_fail(l, r, "apply %zu name changes", n);
out:
    if (vals)
        for (size_t i = 0; i < ns; i++)
            free(vals[i]);
    free(ch);
    free(skeys);
    free(rkeys);
    free(vals);
    free(klens);
    free(vlens);
    return rc;
}
