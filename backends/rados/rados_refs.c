/* rados_refs.c -- what keeps a rados: location's objects bound by a name
 * from being removed as bound by none (docs/rados-backend.md, "Orphans").
 *
 * Beside the bindings, in the omap of the names object (docs/formats.md):
 * the generation "\x1fgen" every write compares (omap_cmp) and bumps, the
 * marker "\x1frefs-v1", a reference "r<object hex><name hash>" per binding,
 * and a tombstone "x<object hex>" per object being removed as bound by no
 * name.  RADOS is atomic on one object only: the generation makes each
 * write conditional on the state its read saw (optimistic concurrency,
 * retried on -ECANCELED), which is what lets remove_unbound keep an object
 * another process bound meanwhile.
 *
 * Here: the generation guard, the tombstones a removal leaves to the
 * store's next write of the index, the references built for an index
 * written without them, and the removal of objects bound by no name
 * (remove_unbound, remove_unbound_many, names_close).  name_apply, the
 * other writer of the index, is in rados_names.c. */
#include "rados_internal.h"

#include "fbk_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------ the generation guard */

static bool is_key(const char *k, size_t kl, const char *want, size_t wl)
{
    return kl == wl && memcmp(k, want, wl) == 0;
}

void fbk__rados_gen_from(rb_gen *g, const char *v, size_t len)
{
    char buf[24] = "";
    if (len >= sizeof g->old)
        len = 0; /* not one of ours: compared as "" fails, the write retries */
    if (len) {   /* an empty value may come as NULL */
        memcpy(g->old, v, len);
        memcpy(buf, v, len);
    }
    g->oldlen = len;
    unsigned long long n = strtoull(buf, NULL, 10);
    g->nextlen = (size_t)snprintf(g->next, sizeof g->next, "%llu", n + 1);
}

void fbk__rados_gen_done(rb_gen *g)
{
    if (!g->nextlen)
        fbk__rados_gen_from(g, "", 0);
}

bool fbk__rados_gen_entry(rb_gen *g, bool *marker, const char *k, size_t kl, const char *v,
                          size_t vl)
{
    if (is_key(k, kl, RB_GEN_KEY, RB_GEN_KLEN)) {
        fbk__rados_gen_from(g, v, vl);
        return true;
    }
    if (is_key(k, kl, RB_MARK_KEY, RB_MARK_KLEN)) {
        *marker = true;
        return true;
    }
    return false;
}

/* The generation n (0: absent) as a read would have found it. */
static void gen_of(rb_gen *g, uint64_t n)
{
    g->oldlen = n ? (size_t)snprintf(g->old, sizeof g->old, "%llu", (unsigned long long)n) : 0;
    g->nextlen = (size_t)snprintf(g->next, sizeof g->next, "%llu", (unsigned long long)n + 1);
}

bool fbk__rados_gen_same(const rb_gen *a, const rb_gen *b)
{
    return a->oldlen == b->oldlen && memcmp(a->old, b->old, a->oldlen) == 0;
}

/* The generation n, written or read by this store: remembered, unless a
 * greater one is already. */
static void gen_raise(rados_loc *l, unsigned long long n)
{
    pthread_mutex_lock(&l->mu);
    if (!l->gen_known || n > l->gen) {
        l->gen = n;
        l->gen_known = true;
    }
    pthread_mutex_unlock(&l->mu);
}

void fbk__rados_gen_note(rados_loc *l, const rb_gen *g)
{
    gen_raise(l, strtoull(g->next, NULL, 10));
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
    gen_raise(l, strtoull(buf, NULL, 10));
}

bool fbk__rados_gen_cached(rados_loc *l, rb_gen *g)
{
    pthread_mutex_lock(&l->mu);
    bool known = l->gen_known;
    uint64_t n = l->gen;
    pthread_mutex_unlock(&l->mu);
    if (known)
        gen_of(g, n);
    return known;
}

void fbk__rados_gen_guard(rados_write_op_t op, const rb_gen *g, int *prval)
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
                         "): other clients changed the name index %d times in a row meanwhile "
                         "(or its generation entry \"\\x1fgen\" holds a value libfbk did "
                         "not write: damage); nothing was changed, try again",
                         what, l->b->pool, l->name, RB_RETRIES);
}

int fbk__rados_attempt(const rados_loc *l, unsigned attempt, const char *what)
{
    if (attempt == RB_RETRIES)
        return contended(l, what);
    if (attempt)
        backoff(attempt);
    return FBK_OK;
}

int fbk__rados_read_keys(const rados_loc *l, const char *const *k, const size_t *kl, size_t n,
                         rados_omap_iter_t *it)
{
    int pv = 0;
    *it = NULL;
    rados_read_op_t op = rados_create_read_op();
    rados_read_op_omap_get_vals_by_keys2(op, k, n, kl, it, &pv);
    int r = rados_read_op_operate(op, l->io, RB_NAMES_OBJ, 0);
    rados_release_read_op(op);
    if (r >= 0 && pv < 0)
        r = pv;
    if (r < 0 && *it) {
        rados_omap_get_end(*it); /* allocated with the op, even when it fails */
        *it = NULL;
    }
    return r;
}

void fbk__rados_end_iter(rados_omap_iter_t it)
{
    if (it)
        rados_omap_get_end(it);
}

void fbk__rados_ref_key(char out[RB_REF_KLEN + 1], const char *hex, const char *nk)
{
    out[0] = 'r';
    memcpy(out + 1, hex, 32);
    memcpy(out + 33, nk, 32);
    out[RB_REF_KLEN] = '\0';
}

void fbk__rados_tomb_key(char out[34], const char *hex)
{
    out[0] = 'x';
    memcpy(out + 1, hex, 32);
    out[33] = '\0';
}

/* ---------------------------------------------- deferred tombstones */

static int by_tomb(const void *a, const void *b)
{
    return strcmp(((const rb_tomb *)a)->key, ((const rb_tomb *)b)->key);
}

rb_tomb *fbk__rados_tombs_take(rados_loc *l, size_t *n)
{
    pthread_mutex_lock(&l->mu);
    rb_tomb *t = l->tombs;
    *n = l->ntombs;
    l->tombs = NULL;
    l->ntombs = l->captombs = 0;
    pthread_mutex_unlock(&l->mu);
    if (*n)
        qsort(t, *n, sizeof *t, by_tomb);
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

void fbk__rados_tombs_return(rados_loc *l, rb_tomb *t, size_t n)
{
    if (n)
        (void)tombs_add(l, t, n);
    free(t);
}

void fbk__rados_tomb_seen(rb_tomb *t, size_t n, const char *k, const char *v, size_t vlen)
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

/* One reading of every binding: the references to write, and what the
 * pages found. */
typedef struct refs_build {
    rados_loc *l;
    char (*k)[RB_REF_KLEN + 1];
    size_t n, cap;
    rb_gen g;     /* the generation the first page found */
    bool marker;  /* the references are complete already */
    bool restart; /* the index changed between two pages */
    bool absent;  /* no names object */
} refs_build;

static int refs_add(const char *okey, const void *name, size_t len, const fbk_key *key,
                    uint64_t size, void *arg)
{
    (void)name;
    (void)len;
    (void)size;
    refs_build *s = arg;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        void *p = realloc(s->k, cap * sizeof *s->k);
        if (!p)
            return fbk_error_set(FBK_ENOMEM, ENOMEM,
                                 "rados: references of the names of \"%s\": out of memory",
                                 s->l->name);
        s->k = p;
        s->cap = cap;
    }
    char hex[33];
    fbk_key_format_hex(key, hex);
    fbk__rados_ref_key(s->k[s->n++], hex, okey);
    return FBK_OK;
}

/* One page of the reading (from after on), with the generation: *stop
 * once the reading is over (the marker found, a change meanwhile, no
 * names object, the last page, a failure). */
static int refs_page(refs_build *s, char after[RB_AFTER_MAX], bool first, bool *stop)
{
    const char *bk[2] = {RB_GEN_KEY, RB_MARK_KEY};
    size_t bkl[2] = {RB_GEN_KLEN, RB_MARK_KLEN};
    rados_omap_iter_t ib = NULL, it = NULL;
    int pb = 0, pv = 0;
    unsigned char more = 0;
    rados_read_op_t op = rados_create_read_op();
    rados_read_op_omap_get_vals_by_keys2(op, bk, 2, bkl, &ib, &pb);
    rados_read_op_omap_get_vals2(op, after, "", 1024, &it, &more, &pv);
    int r = rados_read_op_operate(op, s->l->io, RB_NAMES_OBJ, 0);
    rados_release_read_op(op);
    if (r >= 0 && pb < 0)
        r = pb;
    if (r >= 0 && pv < 0)
        r = pv;
    *stop = true;
    if (r < 0) {
        fbk__rados_end_iter(ib);
        fbk__rados_end_iter(it);
        if (r == -ENOENT && first)
            s->absent = true;
        else if (r == -ENOENT)
            s->restart = true; /* removed while being read */
        else
            return fbk__rados_fail(s->l, r, "read the names to build their references");
        return FBK_OK;
    }
    rb_gen pg = {0};
    char *k, *v;
    size_t kl, vl;
    while (rados_omap_get_next2(ib, &k, &v, &kl, &vl) == 0 && k)
        (void)fbk__rados_gen_entry(&pg, &s->marker, k, kl, v, vl);
    fbk__rados_end_iter(ib);
    fbk__rados_gen_done(&pg);
    if (first)
        s->g = pg;
    else if (!fbk__rados_gen_same(&pg, &s->g))
        s->restart = true;
    bool past = false; /* the bindings are behind: sorted */
    int rc = FBK_OK;
    if (!s->marker && !s->restart) /* damaged: its object unknown (name_get says so) */
        rc = fbk__rados_bindings_page(s->l, it, after, &past, true, refs_add, s);
    fbk__rados_end_iter(it);
    *stop = s->marker || s->restart || rc || past || !more;
    return rc;
}

/* The one write: the references, the marker, the generation; *again when
 * another client's write came first. */
static int refs_write(refs_build *s, bool *again)
{
    size_t nk = s->n + 1;
    const char **keys = malloc(nk * sizeof *keys);
    const char **vals = malloc(nk * sizeof *vals);
    size_t *kls = malloc(nk * sizeof *kls);
    size_t *vls = malloc(nk * sizeof *vls);
    int rc = FBK_OK;
    *again = false;
    if (!keys || !vals || !kls || !vls) {
        rc = fbk_error_set(FBK_ENOMEM, ENOMEM,
                           "rados: references of the names of \"%s\": out of memory", s->l->name);
        goto out;
    }
    keys[0] = RB_MARK_KEY;
    kls[0] = RB_MARK_KLEN;
    for (size_t i = 0; i < s->n; i++) {
        keys[i + 1] = s->k[i];
        kls[i + 1] = RB_REF_KLEN;
    }
    for (size_t i = 0; i < nk; i++) {
        vals[i] = "";
        vls[i] = 0;
    }
    int pg = 0;
    rados_write_op_t op = rados_create_write_op();
    rados_write_op_create(op, LIBRADOS_CREATE_IDEMPOTENT, NULL);
    fbk__rados_gen_guard(op, &s->g, &pg);
    rados_write_op_omap_set2(op, keys, vals, kls, vls, nk);
    int r = rados_write_op_operate(op, s->l->io, RB_NAMES_OBJ, NULL, 0);
    rados_release_write_op(op);
    if (r == -ECANCELED)
        *again = true;
    else if (r < 0)
        rc = fbk__rados_fail(s->l, r, "write the references of %zu names", s->n);
    else
        fbk__rados_gen_note(s->l, &s->g);
out:
    free(keys);
    free(vals);
    free(kls);
    free(vls);
    return rc;
}

/* Reads every binding (pages of 1024, each with the generation: a change
 * meanwhile starts over), then ONE guarded write sets a reference per
 * binding, the marker and the next generation.  Without a names object
 * and create: the marker alone (no binding, complete). */
int fbk__rados_build_refs(rados_loc *l, bool create)
{
    refs_build s = {.l = l};
    int rc = FBK_OK;
    for (unsigned attempt = 0;; attempt++) {
        rc = fbk__rados_attempt(l, attempt, "build the references of the names");
        if (rc)
            break;
        s.n = 0;
        s.g = (rb_gen){0};
        s.marker = s.restart = s.absent = false;
        char after[RB_AFTER_MAX] = "";
        bool stop = false;
        for (bool first = true; !stop; first = false)
            rc = refs_page(&s, after, first, &stop);
        if (rc || (s.marker && !s.restart) || (s.absent && !create))
            break;
        if (s.restart)
            continue;
        if (s.absent)
            fbk__rados_gen_from(&s.g, "", 0);
        bool again;
        rc = refs_write(&s, &again);
        if (!again)
            break;
    }
    free(s.k);
    return rc;
}

int fbk__rados_names_open(rados_loc *l)
{
    /* one read of the marker; the build only for an index from before */
    const char *bk[2] = {RB_GEN_KEY, RB_MARK_KEY};
    size_t bkl[2] = {RB_GEN_KLEN, RB_MARK_KLEN};
    rados_omap_iter_t it;
    int r = fbk__rados_read_keys(l, bk, bkl, 2, &it);
    bool marker = false;
    char *k, *v;
    size_t kl, vl;
    while (r >= 0 && rados_omap_get_next2(it, &k, &v, &kl, &vl) == 0 && k) {
        if (is_key(k, kl, RB_MARK_KEY, RB_MARK_KLEN))
            marker = true;
        else if (is_key(k, kl, RB_GEN_KEY, RB_GEN_KLEN))
            gen_seen(l, v, vl);
    }
    fbk__rados_end_iter(it);
    if (r == -ENOENT || marker)
        return FBK_OK;
    if (r < 0)
        return fbk__rados_fail(l, r, "read the name index's marker");
    return fbk__rados_build_refs(l, false);
}

/* ------------------------------------------------ removing the unbound */

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
        rc = fbk__rados_attempt(l, attempt, "remove the tombstones of removed objects");
        if (rc)
            break;
        keys[0] = RB_GEN_KEY;
        kl[0] = RB_GEN_KLEN;
        for (size_t i = 0; i < n; i++) {
            keys[i + 1] = t[i].key;
            kl[i + 1] = 33;
            t[i].live = false;
        }
        rb_gen g = {0};
        bool marker = false; /* not read */
        rados_omap_iter_t it;
        int r = fbk__rados_read_keys(l, keys, kl, n + 1, &it);
        char *k, *v;
        size_t klen, vlen;
        while (r >= 0 && rados_omap_get_next2(it, &k, &v, &klen, &vlen) == 0 && k)
            if (!fbk__rados_gen_entry(&g, &marker, k, klen, v, vlen) && klen == 33)
                fbk__rados_tomb_seen(t, n, k, v, vlen);
        fbk__rados_end_iter(it);
        if (r == -ENOENT)
            break; /* no index, no tombstone */
        if (r < 0) {
            rc = fbk__rados_fail(l, r, "read the tombstones of %zu removed objects", n);
            break;
        }
        fbk__rados_gen_done(&g);
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
        fbk__rados_gen_guard(w, &g, &pg);
        rados_write_op_omap_rm_keys2(w, keys, kl, m);
        r = rados_write_op_operate(w, l->io, RB_NAMES_OBJ, NULL, 0);
        rados_release_write_op(w);
        if (r == -ECANCELED)
            continue;
        if (r < 0 && r != -ENOENT)
            rc = fbk__rados_fail(l, r, "remove the tombstones of %zu removed objects", m);
        else if (r >= 0)
            fbk__rados_gen_note(l, &g);
        break;
    }
    free(keys);
    free(kl);
    return rc;
}

/* The arrays of a removal of RB_UNBOUND_CHUNK keys (on the heap: some
 * 90 KiB, too much for a caller's stack), and the state its steps pass
 * on. */
typedef struct ub_mem {
    char hex[RB_UNBOUND_CHUNK][33], pre[RB_UNBOUND_CHUNK][34], tomb[RB_UNBOUND_CHUNK][34];
    rb_headread hr[RB_UNBOUND_CHUNK];
    rados_omap_iter_t it[RB_UNBOUND_CHUNK];
    unsigned char more[RB_UNBOUND_CHUNK];
    int pv[RB_UNBOUND_CHUNK];
    const char *vk[RB_UNBOUND_CHUNK], *vv[RB_UNBOUND_CHUNK];
    size_t vkl[RB_UNBOUND_CHUNK], vvl[RB_UNBOUND_CHUNK];
    size_t victim[RB_UNBOUND_CHUNK]; /* the keys of no reference, nv of them */
    size_t nv;
    int res[RB_UNBOUND_CHUNK];
    /* per key: 0 no tombstone, 1 a young one of another removal (left to
     * it), 2 an old one (a crashed removal's: taken over) */
    unsigned char tstate[RB_UNBOUND_CHUNK];
    time_t now;     /* when the read was made */
    char stamp[24]; /* the tombstones' value: now */
    rb_tomb mine[RB_UNBOUND_CHUNK];
    const char *bk[2 + RB_UNBOUND_CHUNK];
    size_t bkl[2 + RB_UNBOUND_CHUNK];
} ub_mem;

/* A tombstone k (value v, vl) the read found: young or old. */
static void unbound_tomb(ub_mem *m, size_t n, const char *k, const char *v, size_t vl)
{
    /* when it was set (not a number: as old as can be) */
    char b[24] = "";
    if (vl && vl < sizeof b) /* an empty value may come as NULL */
        memcpy(b, v, vl);
    long long t = strtoll(b, NULL, 10);
    for (size_t i = 0; i < n; i++)
        if (memcmp(k, m->tomb[i], 33) == 0)
            m->tstate[i] = t > (long long)m->now - RB_TOMB_AGE ? 1 : 2; /* no overflow */
}

/* Step 1: one read of the generation (g), the marker, the keys'
 * tombstones (tstate) and a reference of each key (victim: those without);
 * the librados result. */
static int unbound_read(rados_loc *l, size_t n, ub_mem *m, rb_gen *g, bool *marker)
{
    rados_omap_iter_t ib = NULL;
    int pb = 0;
    rados_read_op_t op = rados_create_read_op();
    rados_read_op_omap_get_vals_by_keys2(op, m->bk, 2 + n, m->bkl, &ib, &pb);
    for (size_t i = 0; i < n; i++) {
        m->it[i] = NULL;
        m->pv[i] = 0;
        rados_read_op_omap_get_vals2(op, "", m->pre[i], 1, &m->it[i], &m->more[i], &m->pv[i]);
    }
    int r = rados_read_op_operate(op, l->io, RB_NAMES_OBJ, 0);
    rados_release_read_op(op);
    if (r >= 0 && pb < 0)
        r = pb;
    for (size_t i = 0; i < n && r >= 0; i++)
        if (m->pv[i] < 0)
            r = m->pv[i];
    m->now = time(NULL);
    m->nv = 0;
    memset(m->tstate, 0, n);
    if (r >= 0) {
        char *k, *v;
        size_t kl, vl;
        while (rados_omap_get_next2(ib, &k, &v, &kl, &vl) == 0 && k)
            if (!fbk__rados_gen_entry(g, marker, k, kl, v, vl) && kl == 33)
                unbound_tomb(m, n, k, v, vl);
        /* no reference: bound by no name */
        for (size_t i = 0; i < n; i++)
            if (rados_omap_get_next2(m->it[i], &k, &v, &kl, &vl) != 0 || !k)
                m->victim[m->nv++] = i;
    }
    fbk__rados_end_iter(ib);
    for (size_t i = 0; i < n; i++)
        fbk__rados_end_iter(m->it[i]);
    return r;
}

/* A key another removal marked a moment ago is that one's to remove:
 * counted as removed, left alone (out of victim). */
static void unbound_leave_young(ub_mem *m, int *removed)
{
    size_t a = 0;
    for (size_t j = 0; j < m->nv; j++) {
        if (m->tstate[m->victim[j]] == 1)
            removed[m->victim[j]] = 1;
        else
            m->victim[a++] = m->victim[j];
    }
    m->nv = a;
}

/* Step 2: one guarded write of the victims' tombstones, holding when they
 * were set (stamp); the librados result. */
static int unbound_mark(rados_loc *l, ub_mem *m, const rb_gen *g)
{
    snprintf(m->stamp, sizeof m->stamp, "%lld", (long long)m->now);
    for (size_t j = 0; j < m->nv; j++) {
        m->vk[j] = m->tomb[m->victim[j]];
        m->vkl[j] = 33;
        m->vv[j] = m->stamp;
        m->vvl[j] = strlen(m->stamp);
    }
    int pg = 0;
    rados_write_op_t w = rados_create_write_op();
    fbk__rados_gen_guard(w, g, &pg);
    rados_write_op_omap_set2(w, m->vk, m->vv, m->vkl, m->vvl, m->nv);
    int r = rados_write_op_operate(w, l->io, RB_NAMES_OBJ, NULL, 0);
    rados_release_write_op(w);
    return r;
}

/* Steps 3 and 4, once the victims' tombstones are written. */
static int unbound_delete(rados_loc *l, size_t n, int *removed, ub_mem *m)
{
    /* 3. the objects (and their stripes); a crash from here on leaves the
     * tombstones (a binding of their keys is refused; after RB_TOMB_AGE a
     * later removal of a key takes its tombstone over and finishes) */
    fbk__rados_heads_wait(m->hr, n);
    int rc = fbk__rados_remove_heads(l, (const char(*)[33])m->hex, m->hr, m->victim, m->nv, m->res);
    char msg[512] = "";
    int os = rc ? fbk_last_os_error() : 0;
    if (rc)
        snprintf(msg, sizeof msg, "%s", fbk_errmsg()); /* reported below */
    size_t nd = 0;
    for (size_t j = 0; j < m->nv; j++) {
        size_t i = m->victim[j];
        if (m->res[j] == FBK_OK || m->res[j] == FBK_ENOTFOUND) {
            removed[i] = 1;
            memcpy(m->mine[nd].key, m->tomb[i], 34);
            snprintf(m->mine[nd].val, sizeof m->mine[nd].val, "%s", m->stamp);
            m->mine[nd++].live = false;
        }
    }
    /* 4. their tombstones, once every delete is acknowledged: with this
     * store's next write of the index (name_apply) or its close, each if it
     * still holds this removal's value; now only when they cannot be kept */
    int r = FBK_OK;
    if (nd && !tombs_add(l, m->mine, nd)) {
        qsort(m->mine, nd, sizeof *m->mine, by_tomb);
        r = clear_tombstones(l, m->mine, nd);
    }
    if (r && !rc)
        return r;
    return rc ? fbk_error_set(rc, os, "%s", msg) : FBK_OK;
}

static int run_unbound(rados_loc *l, size_t n, int *removed, ub_mem *m)
{
    for (unsigned attempt = 0;; attempt++) {
        int rc = fbk__rados_attempt(l, attempt, "remove objects bound by no name");
        if (rc)
            return rc;
        /* 1. one read: generation, marker, the keys' tombstones and a
         * reference of each key */
        rb_gen g = {0};
        bool marker = false;
        int r = unbound_read(l, n, m, &g, &marker);
        if (r < 0 && r != -ENOENT)
            return fbk__rados_fail(l, r, "read the references of %zu objects", n);
        if (!marker) {
            /* no index (no binding anywhere) or one from before the
             * references: complete them, then read again */
            rc = fbk__rados_build_refs(l, true);
            if (rc)
                return rc;
            continue;
        }
        unbound_leave_young(m, removed);
        if (!m->nv)
            return FBK_OK;
        fbk__rados_gen_done(&g);
        /* 2. one guarded write: the tombstones of the unbound ones */
        r = unbound_mark(l, m, &g);
        if (r == -ECANCELED || r == -ENOENT)
            continue; /* changed (or dropped) since the read */
        if (r < 0)
            return fbk__rados_fail(l, r, "mark %zu objects bound by no name for removal", m->nv);
        fbk__rados_gen_note(l, &g);
        break;
    }
    /* 3. the objects, 4. their tombstones */
    return unbound_delete(l, n, removed, m);
}

/* remove_unbound of keys[0..n), n <= RB_UNBOUND_CHUNK. */
static int unbound_chunk(rados_loc *l, const fbk_key *keys, size_t n, int *removed, ub_mem *m)
{
    m->bk[0] = RB_GEN_KEY;
    m->bkl[0] = RB_GEN_KLEN;
    m->bk[1] = RB_MARK_KEY;
    m->bkl[1] = RB_MARK_KLEN;
    for (size_t i = 0; i < n; i++) {
        removed[i] = 0;
        fbk_key_format_hex(&keys[i], m->hex[i]);
        m->pre[i][0] = 'r';
        memcpy(m->pre[i] + 1, m->hex[i], 33);
        fbk__rados_tomb_key(m->tomb[i], m->hex[i]);
        m->bk[2 + i] = m->tomb[i];
        m->bkl[2 + i] = 33;
    }
    /* the objects' first bytes (stripe heads?) meanwhile */
    fbk__rados_heads_start(l, (const char(*)[33])m->hex, n, m->hr);
    int rc = run_unbound(l, n, removed, m);
    fbk__rados_heads_wait(m->hr, n);
    return rc;
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
    rb_tomb *t = fbk__rados_tombs_take(l, &n); /* sorted */
    for (size_t i = 0; i < n; i += 1024)
        if (clear_tombstones(l, t + i, n - i < 1024 ? n - i : 1024) != FBK_OK)
            break; /* left in the index: they refuse bindings of objects that are gone */
    free(t);
}
