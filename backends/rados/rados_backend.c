/* rados_backend.c -- the rados: backend: a local spill area, durable
 * locations in a Ceph (RADOS) pool.
 *
 *   rados:DIR?pool=POOL[&conf=PATH][&client=NAME][&spill=lmdb|file][&timeout=S]
 *
 * The spill area is an inner lmdb: (default) or file: backend in DIR; every
 * spill operation is handed to it.  A location is a RADOS namespace of POOL
 * (the location's name); a persisted key is one object named by the key's 32
 * hex digits holding the framed value, or -- above the stripe size -- a head
 * object under that name naming the stripes that hold the value
 * (docs/rados-backend.md).  Persist reads the value from the spill area and
 * queues one asynchronous write_full; sync waits for all of them (the first
 * failure wins); register reads the object into the spill area. */
#include "rados_internal.h"

#include "fbk_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <xxhash.h>

/* bound on the bytes of asynchronous writes in flight per location: beyond
 * it a persist waits for the oldest (librados holds a copy of each) */
#define RB_INFLIGHT_MAX (64u << 20)
#define RB_INFLIGHT_OPS 512
/* the first read of a register: enough for a 1 MiB object and its frame in
 * one round trip; longer values are read on into the spill area directly */
#define RB_FIRST_READ ((1u << 20) + 4096)
/* register_many's read-ahead */
#define RB_READ_AHEAD 16
/* stripes at most this long, and at most the cluster's osd_max_write_size */
#define RB_STRIPE_MAX ((size_t)64 << 20)
/* a stripe no head names is junk (scan deletes it) once this old: a
 * writer on another machine writes its stripes before its head */
#define RB_ORPHAN_AGE 3600

/* ---- the head of a striped value (48 bytes, little-endian) ----
 *   0  "FBKRSTRP"   8  version (u32, 1)   12 stripe count (u32)
 *   16 value length (u64)   24 stripe size (u64)   32 token (u64)
 *   40 XXH3-64 of bytes 0..40 */
#define RB_HEAD_MAGIC "FBKRSTRP"
#define RB_HEAD_SIZE 48

typedef struct rb_head {
    uint32_t n;
    uint64_t total, stripe, token;
} rb_head;

static void head_encode(const rb_head *h, unsigned char out[RB_HEAD_SIZE])
{
    memcpy(out, RB_HEAD_MAGIC, 8);
    fbk__rados_put_le(out + 8, 1, 4);
    fbk__rados_put_le(out + 12, h->n, 4);
    fbk__rados_put_le(out + 16, h->total, 8);
    fbk__rados_put_le(out + 24, h->stripe, 8);
    fbk__rados_put_le(out + 32, h->token, 8);
    fbk__rados_put_le(out + 40, XXH3_64bits(out, 40), 8);
}

static bool is_head(const void *p, size_t len)
{
    return len == RB_HEAD_SIZE && memcmp(p, RB_HEAD_MAGIC, 8) == 0;
}

/* Decodes a head (is_head said yes); FBK_ECORRUPT when it is damaged. */
static int head_decode(const rados_loc *l, const char *oid, const unsigned char *p, rb_head *h)
{
    h->n = (uint32_t)fbk__rados_get_le(p + 12, 4);
    h->total = fbk__rados_get_le(p + 16, 8);
    h->stripe = fbk__rados_get_le(p + 24, 8);
    h->token = fbk__rados_get_le(p + 32, 8);
    if (fbk__rados_get_le(p + 40, 8) != XXH3_64bits(p, 40) || fbk__rados_get_le(p + 8, 4) != 1 ||
        !h->stripe || !h->total || h->total > SIZE_MAX ||
        h->n != (h->total + h->stripe - 1) / h->stripe || h->stripe > INT32_MAX)
        return fbk_error_set(FBK_ECORRUPT, 0,
                             "rados: object %s (pool %s, namespace \"%s\"): damaged stripe head",
                             oid, l->b->pool, l->name);
    return FBK_OK;
}

static void stripe_oid(const char *hex, uint64_t token, uint32_t i, char *out, size_t cap)
{
    snprintf(out, cap, RB_STRIPE_PREFIX "%s.%016" PRIx64 ".%" PRIu32, hex, token, i);
}

/* ------------------------------------------------------------ errors */

int fbk__rados_fail(const rados_loc *l, int r, const char *fmt, ...)
{
    char what[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    int e = r < 0 ? -r : r;
    int code = e == ETIMEDOUT ? FBK_ETIMEDOUT
               : e == ENOENT  ? FBK_ENOTFOUND
               : (e == ENOSPC || e == EDQUOT) ? FBK_ENOSPC
               : e == ENOMEM  ? FBK_ENOMEM
               : (e == EINVAL || e == ENAMETOOLONG || e == E2BIG || e == EFBIG) ? FBK_EINVAL
                                                                               : FBK_EIO;
    if (code == FBK_ETIMEDOUT)
        return fbk_error_set(code, e,
                             "rados: %s (pool %s, namespace \"%s\"): the cluster did not answer "
                             "within %u s (the URI's timeout=%u); the store works again once "
                             "it answers",
                             what, l->b->pool, l->name, l->b->timeout, l->b->timeout);
    return fbk_error_set(code, e, "rados: %s (pool %s, namespace \"%s\"): %s", what, l->b->pool,
                         l->name, strerror(e));
}

/* --------------------------------------------- the pending writes of a loc */

/* Records the outcome of a finished write; with l->mu held. */
static void record(rados_loc *l, const rb_pending *p)
{
    int r = rados_aio_get_return_value(p->c);
    l->inflight -= p->bytes;
    if (r >= 0 || l->err)
        return;
    char hex[33];
    fbk_key_format_hex(&p->key, hex);
    l->err = fbk__rados_fail(l, r, "persist %s", hex);
    l->err_os = -r;
    snprintf(l->msg, sizeof l->msg, "%s", fbk_errmsg());
}

/* Queues c (a write of key, `bytes` long) for the next sync; when too much
 * is in flight, first waits for the oldest writes. */
static int add_pending(rados_loc *l, rados_completion_t c, const fbk_key *key, size_t bytes)
{
    pthread_mutex_lock(&l->mu);
    if (l->npend == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        rb_pending *p = realloc(l->pend, cap * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&l->mu);
            rados_aio_wait_for_complete(c);
            rados_aio_release(c);
            return fbk_error_set(FBK_ENOMEM, ENOMEM,
                                 "rados: persist into \"%s\": out of memory", l->name);
        }
        l->pend = p;
        l->cap = cap;
    }
    l->pend[l->npend++] = (rb_pending){c, *key, bytes, l->seq++};
    l->inflight += bytes;
    while (l->npend && (l->inflight > RB_INFLIGHT_MAX || l->npend > RB_INFLIGHT_OPS)) {
        rb_pending old = l->pend[0];
        memmove(l->pend, l->pend + 1, (l->npend - 1) * sizeof *l->pend);
        l->npend--;
        l->taken++;
        pthread_mutex_unlock(&l->mu);
        rados_aio_wait_for_complete(old.c);
        pthread_mutex_lock(&l->mu);
        record(l, &old);
        rados_aio_release(old.c);
        l->taken--;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return FBK_OK;
}

int fbk__rados_settle(rados_loc *l, bool clear)
{
    pthread_mutex_lock(&l->mu);
    uint64_t upto = l->seq;
    pthread_mutex_unlock(&l->mu);
    /* every write issued on this ioctx so far is safe (or failed) after it */
    rados_aio_flush(l->io);
    pthread_mutex_lock(&l->mu);
    size_t keep = 0;
    for (size_t i = 0; i < l->npend; i++) {
        rb_pending *p = &l->pend[i];
        if (p->seq < upto) {
            rados_aio_wait_for_complete(p->c); /* done already: flush returned */
            record(l, p);
            rados_aio_release(p->c);
        } else {
            l->pend[keep++] = *p;
        }
    }
    l->npend = keep;
    while (l->taken)
        pthread_cond_wait(&l->cv, &l->mu);
    int rc = l->err;
    int os = l->err_os;
    char msg[sizeof l->msg];
    memcpy(msg, l->msg, sizeof msg);
    if (clear)
        l->err = 0;
    pthread_mutex_unlock(&l->mu);
    return rc ? fbk_error_set(rc, os, "%s", msg) : FBK_OK;
}

/* ------------------------------------------------------- the spill area */

static int rb_store(void *self, const fbk_key *key, size_t len, fbk_fill_fn fill, void *arg)
{
    rados_backend *b = self;
    return b->inner->store(b->inner_self, key, len, fill, arg);
}

static int rb_load(void *self, const fbk_key *key, fbk_read_fn read, void *arg)
{
    rados_backend *b = self;
    return b->inner->load(b->inner_self, key, read, arg);
}

static int rb_remove(void *self, const fbk_key *key)
{
    rados_backend *b = self;
    return b->inner->remove(b->inner_self, key);
}

static int rb_store_many(void *self, fbk_store_req *reqs, size_t n)
{
    rados_backend *b = self;
    return b->inner->store_many(b->inner_self, reqs, n);
}

static int rb_store_iov(void *self, const fbk_key *key, const struct iovec *iov, int n)
{
    rados_backend *b = self;
    return b->inner->store_iov(b->inner_self, key, iov, n);
}

static int rb_load_into(void *self, const fbk_key *key, size_t hint, fbk_place_fn place, void *arg)
{
    rados_backend *b = self;
    return b->inner->load_into(b->inner_self, key, hint, place, arg);
}

/* ------------------------------------------------------------ locations */

static void loc_free(rados_loc *l)
{
    if (l->io)
        rados_ioctx_destroy(l->io);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l->pend);
    free(l->tombs);
    free(l->name);
    free(l);
}

static int rb_open_location(void *self, const char *location, void **out)
{
    rados_backend *b = self;
    if (!location || !*location || strlen(location) > 1024)
        return fbk_error_set(FBK_EINVAL, 0,
                             "rados: a location name must be 1 to 1024 bytes (a namespace of "
                             "pool %s)",
                             b->pool);
    rados_loc *l = calloc(1, sizeof *l);
    if (!l || !(l->name = strdup(location))) {
        free(l);
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "rados: open location \"%s\": out of memory",
                             location);
    }
    l->b = b;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    int r = rados_ioctx_create(b->cluster, b->pool, &l->io);
    if (r < 0) {
        l->io = NULL;
        int rc = fbk__rados_fail(l, r, "open location");
        loc_free(l);
        return rc;
    }
    rados_ioctx_set_namespace(l->io, location);
    /* a writer completes the references of an index from before them */
    int rc = b->readonly ? FBK_OK : fbk__rados_names_open(l);
    if (rc) {
        loc_free(l);
        return rc;
    }
    *out = l;
    return FBK_OK;
}

static void rb_close_location(void *self, void *loc)
{
    (void)self;
    rados_loc *l = loc;
    rados_aio_flush(l->io);
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < l->npend; i++) {
        rados_aio_wait_for_complete(l->pend[i].c);
        rados_aio_release(l->pend[i].c);
    }
    l->npend = 0;
    pthread_mutex_unlock(&l->mu);
    fbk__rados_names_close(l);
    loc_free(l);
}

/* Reads the head of the object oid when it is one: 1 (and *h), 0 for a
 * plain object, or an FBK_E* code (FBK_ENOTFOUND: no object). */
static int read_head(rados_loc *l, const char *oid, rb_head *h)
{
    unsigned char buf[RB_HEAD_SIZE + 1];
    int r = rados_read(l->io, oid, (char *)buf, sizeof buf, 0);
    if (r < 0)
        return fbk__rados_fail(l, r, "read %s", oid);
    if (!is_head(buf, (size_t)r))
        return 0;
    int rc = head_decode(l, oid, buf, h);
    return rc ? rc : 1;
}

/* Removes the stripes of h (best effort: an error leaves junk for scan). */
static void remove_stripes(rados_loc *l, const char *hex, const rb_head *h)
{
    char oid[128];
    for (uint32_t i = 0; i < h->n; i++) {
        stripe_oid(hex, h->token, i, oid, sizeof oid);
        rados_remove(l->io, oid);
    }
}

/* Waits for the n completions c[]; returns the first failure (r < 0) or 0,
 * setting *short_i to the first whose result is not want[i] (reads). */
static int wait_all(rados_completion_t *c, size_t n, const size_t *want, size_t *bad)
{
    int first = 0;
    *bad = n;
    for (size_t i = 0; i < n; i++) {
        rados_aio_wait_for_complete(c[i]);
        int r = rados_aio_get_return_value(c[i]);
        rados_aio_release(c[i]);
        if (r < 0 && !first) {
            first = r;
            *bad = i;
        } else if (r >= 0 && want && (size_t)r != want[i] && *bad == n && !first) {
            *bad = i;
        }
    }
    return first;
}

/* Writes a value longer than a stripe: the stripes under a fresh token,
 * then (once all are acknowledged) the head, then removes the stripes of a
 * head it replaced.  A reader sees the old value or the new one, whole. */
static int persist_striped(rados_loc *l, const char *hex, const fbk_key *key, const char *src,
                           size_t len)
{
    rados_backend *b = l->b;
    rb_head h = {.stripe = b->stripe, .total = len};
    h.n = (uint32_t)((len + b->stripe - 1) / b->stripe);
    while (getrandom(&h.token, sizeof h.token, 0) != sizeof h.token)
        ;
    rb_head old;
    int had = read_head(l, hex, &old);
    if (had < 0 && had != FBK_ENOTFOUND && had != FBK_ECORRUPT)
        return had;
    rados_completion_t *c = calloc(h.n, sizeof *c);
    if (!c)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "rados: persist %s: out of memory", hex);
    char oid[128];
    size_t issued = 0;
    int r = 0;
    for (uint32_t i = 0; i < h.n && r >= 0; i++) {
        size_t off = (size_t)i * b->stripe;
        size_t n = len - off < b->stripe ? len - off : b->stripe;
        stripe_oid(hex, h.token, i, oid, sizeof oid);
        r = rados_aio_create_completion2(NULL, NULL, &c[i]);
        if (r < 0)
            break;
        r = rados_aio_write_full(l->io, oid, c[i], src + off, n);
        if (r < 0)
            rados_aio_release(c[i]);
        else
            issued++;
    }
    size_t bad;
    int w = wait_all(c, issued, NULL, &bad);
    free(c);
    if (r >= 0)
        r = w;
    if (r >= 0) {
        unsigned char hd[RB_HEAD_SIZE];
        head_encode(&h, hd);
        r = rados_write_full(l->io, hex, (const char *)hd, sizeof hd);
    }
    if (r < 0) {
        int rc = fbk__rados_fail(l, r, "persist %s (%zu bytes in %" PRIu32 " stripes)", hex, len,
                                 h.n);
        h.n = (uint32_t)issued;
        remove_stripes(l, hex, &h);
        return rc;
    }
    if (had == 1 && old.token != h.token)
        remove_stripes(l, hex, &old);
    (void)key;
    return FBK_OK;
}

typedef struct persist_ctx {
    rados_loc *l;
    const fbk_key *key;
} persist_ctx;

static int persist_read(const void *src, size_t len, void *arg)
{
    persist_ctx *p = arg;
    rados_loc *l = p->l;
    char hex[33];
    fbk_key_format_hex(p->key, hex);
    if (len > l->b->stripe)
        return persist_striped(l, hex, p->key, src, len);
    rados_completion_t c;
    int r = rados_aio_create_completion2(NULL, NULL, &c);
    if (r >= 0) {
        /* librados copies the bytes: src need only live during the call */
        r = rados_aio_write_full(l->io, hex, c, src, len);
        if (r < 0)
            rados_aio_release(c);
    }
    if (r < 0)
        return fbk__rados_fail(l, r, "persist %s", hex);
    return add_pending(l, c, p->key, len);
}

static int rb_persist(void *self, void *loc, const fbk_key *key)
{
    rados_backend *b = self;
    persist_ctx p = {loc, key};
    return b->inner->load(b->inner_self, key, persist_read, &p);
}

static int rb_persist_many(void *self, void *loc, const fbk_key *keys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = rb_persist(self, loc, &keys[i]);
        if (rc)
            return rc;
    }
    return FBK_OK;
}

static int rb_sync(void *self, void *loc)
{
    (void)self;
    return fbk__rados_settle(loc, true);
}

/* ------------------------------------------------------------- register */

/* A first read of an object: its size and its first bytes. */
typedef struct first_read {
    rados_read_op_t op;
    rados_completion_t c;
    char *buf;
    size_t nread;
    uint64_t size;
    int rv_stat, rv_read;
} first_read;

typedef struct fill_ctx {
    rados_loc *l;
    const char *hex;
    const first_read *f;
    const rb_head *h; /* striped; else plain */
} fill_ctx;

static int fill_plain(void *dst, size_t len, void *arg)
{
    fill_ctx *x = arg;
    size_t have = x->f->nread < len ? x->f->nread : len;
    memcpy(dst, x->f->buf, have);
    while (have < len) {
        size_t n = len - have > RB_STRIPE_MAX ? RB_STRIPE_MAX : len - have;
        int r = rados_read(x->l->io, x->hex, (char *)dst + have, n, have);
        if (r < 0)
            return fbk__rados_fail(x->l, r, "register %s: read at %zu", x->hex, have);
        if (r == 0)
            return fbk_error_set(FBK_ECORRUPT, 0,
                                 "rados: register %s (pool %s, namespace \"%s\"): the object "
                                 "shrank while being read (%zu of %zu bytes)",
                                 x->hex, x->l->b->pool, x->l->name, have, len);
        have += (size_t)r;
    }
    return FBK_OK;
}

static int fill_striped(void *dst, size_t len, void *arg)
{
    fill_ctx *x = arg;
    const rb_head *h = x->h;
    (void)len;
    rados_completion_t c[4];
    size_t want[4];
    char oid[128];
    for (uint32_t i = 0; i < h->n;) {
        size_t k = 0;
        uint32_t first = i;
        int r = 0;
        for (; k < 4 && i < h->n; k++, i++) {
            size_t off = (size_t)i * h->stripe;
            want[k] = h->total - off < h->stripe ? h->total - off : h->stripe;
            stripe_oid(x->hex, h->token, i, oid, sizeof oid);
            r = rados_aio_create_completion2(NULL, NULL, &c[k]);
            if (r < 0)
                break;
            r = rados_aio_read(x->l->io, oid, c[k], (char *)dst + off, want[k], 0);
            if (r < 0) {
                rados_aio_release(c[k]);
                break;
            }
        }
        size_t bad;
        int w = wait_all(c, k, want, &bad);
        if (r >= 0)
            r = w;
        if (r == -ENOENT || (r >= 0 && bad < k))
            return fbk_error_set(FBK_ECORRUPT, r < 0 ? -r : 0,
                                 "rados: register %s (pool %s, namespace \"%s\"): stripe %" PRIu32
                                 " of %" PRIu32 " is %s",
                                 x->hex, x->l->b->pool, x->l->name, first + (uint32_t)bad, h->n,
                                 r < 0 ? "missing" : "short");
        if (r < 0)
            return fbk__rados_fail(x->l, r, "register %s: read stripe", x->hex);
    }
    return FBK_OK;
}

static int first_read_start(rados_loc *l, const char *hex, first_read *f)
{
    memset(f, 0, sizeof *f);
    f->buf = malloc(RB_FIRST_READ);
    if (!f->buf)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "rados: register %s: out of memory", hex);
    f->op = rados_create_read_op();
    int r = rados_aio_create_completion2(NULL, NULL, &f->c);
    if (r < 0) {
        rados_release_read_op(f->op);
        free(f->buf);
        return fbk__rados_fail(l, r, "register %s", hex);
    }
    rados_read_op_stat(f->op, &f->size, NULL, &f->rv_stat);
    rados_read_op_read(f->op, 0, RB_FIRST_READ, f->buf, &f->nread, &f->rv_read);
    r = rados_aio_read_op_operate(f->op, l->io, f->c, hex, 0);
    if (r < 0) {
        rados_aio_release(f->c);
        rados_release_read_op(f->op);
        free(f->buf);
        return fbk__rados_fail(l, r, "register %s", hex);
    }
    return FBK_OK;
}

/* Waits for f, then stores the object into the spill area. */
static int first_read_finish(rados_loc *l, const fbk_key *key, const char *hex, first_read *f)
{
    rados_aio_wait_for_complete(f->c);
    int r = rados_aio_get_return_value(f->c);
    rados_aio_release(f->c);
    rados_release_read_op(f->op);
    int rc = FBK_OK;
    if (r >= 0 && f->rv_stat < 0)
        r = f->rv_stat;
    if (r >= 0 && f->rv_read < 0)
        r = f->rv_read;
    if (r < 0) {
        rc = fbk__rados_fail(l, r, "register %s", hex);
    } else if (is_head(f->buf, f->nread)) {
        rb_head h;
        rc = head_decode(l, hex, (const unsigned char *)f->buf, &h);
        fill_ctx x = {l, hex, f, &h};
        if (rc == FBK_OK)
            rc = l->b->inner->store(l->b->inner_self, key, (size_t)h.total, fill_striped, &x);
    } else if (f->size > SIZE_MAX || f->nread > f->size) {
        rc = fbk_error_set(FBK_ECORRUPT, 0, "rados: register %s: inconsistent object size", hex);
    } else {
        fill_ctx x = {l, hex, f, NULL};
        rc = l->b->inner->store(l->b->inner_self, key, (size_t)f->size, fill_plain, &x);
    }
    free(f->buf);
    return rc;
}

static int rb_register_key(void *self, void *loc, const fbk_key *key)
{
    (void)self;
    char hex[33];
    fbk_key_format_hex(key, hex);
    first_read f;
    int rc = first_read_start(loc, hex, &f);
    return rc ? rc : first_read_finish(loc, key, hex, &f);
}

/* register_key pipelined: up to RB_READ_AHEAD first reads in flight. */
static int rb_register_many(void *self, void *loc, const fbk_key *keys, size_t n)
{
    (void)self;
    first_read f[RB_READ_AHEAD];
    char hex[RB_READ_AHEAD][33];
    size_t next = 0, done = 0;
    int first = FBK_OK;
    while (done < n) {
        while (next < n && next - done < RB_READ_AHEAD && !first) {
            size_t s = next % RB_READ_AHEAD;
            fbk_key_format_hex(&keys[next], hex[s]);
            int rc = first_read_start(loc, hex[s], &f[s]);
            if (rc) {
                first = rc;
                break;
            }
            next++;
        }
        if (done == next)
            break;
        size_t s = done % RB_READ_AHEAD;
        int rc = first_read_finish(loc, &keys[done], hex[s], &f[s]);
        if (rc && !first) {
            first = fbk__error_keep(rc);
        }
        done++;
    }
    return first;
}

/* ------------------------------------------------------- remove, contains */

static int rb_remove_persisted(void *self, void *loc, const fbk_key *key)
{
    (void)self;
    char hex[33];
    fbk_key_format_hex(key, hex);
    return fbk__rados_remove_object(loc, hex);
}

int fbk__rados_remove_object(rados_loc *l, const char *hex)
{
    rb_head h;
    int kind = read_head(l, hex, &h);
    if (kind < 0 && kind != FBK_ECORRUPT)
        return kind;
    int r = rados_remove(l->io, hex);
    if (r < 0)
        return fbk__rados_fail(l, r, "remove %s", hex);
    if (kind == 1)
        remove_stripes(l, hex, &h);
    return FBK_OK;
}

void fbk__rados_heads_start(rados_loc *l, const char (*hex)[33], size_t n, rb_headread *hr)
{
    for (size_t i = 0; i < n; i++) {
        hr[i].issued = false;
        hr[i].r = rados_aio_create_completion2(NULL, NULL, &hr[i].c);
        if (hr[i].r < 0)
            continue;
        hr[i].r = rados_aio_read(l->io, hex[i], hr[i].c, (char *)hr[i].buf, sizeof hr[i].buf, 0);
        if (hr[i].r < 0)
            rados_aio_release(hr[i].c);
        else
            hr[i].issued = true;
    }
}

void fbk__rados_heads_wait(rb_headread *hr, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!hr[i].issued)
            continue;
        rados_aio_wait_for_complete(hr[i].c);
        hr[i].r = rados_aio_get_return_value(hr[i].c);
        rados_aio_release(hr[i].c);
        hr[i].issued = false;
    }
}

int fbk__rados_remove_heads(rados_loc *l, const char (*hex)[33], const rb_headread *hr,
                            const size_t *which, size_t m, int *res)
{
    enum { W = 64 };
    rados_completion_t c[W];
    int first = FBK_OK, os = 0;
    char msg[512] = "";
    for (size_t s = 0; s < m; s += W) {
        size_t k = m - s < W ? m - s : W, issued = 0;
        for (size_t j = 0; j < k; j++) {
            size_t i = which[s + j];
            int r = hr[i].r;
            res[s + j] = r < 0 && r != -ENOENT ? fbk__rados_fail(l, r, "read %s", hex[i]) : FBK_OK;
            if (res[s + j] == FBK_OK) {
                r = rados_aio_create_completion2(NULL, NULL, &c[j]);
                if (r >= 0) {
                    r = rados_aio_remove(l->io, hex[i], c[j]);
                    if (r < 0)
                        rados_aio_release(c[j]);
                }
                if (r < 0)
                    res[s + j] = fbk__rados_fail(l, r, "remove %s", hex[i]);
            }
            if (res[s + j] != FBK_OK && !first) {
                first = res[s + j];
                os = fbk_last_os_error();
                snprintf(msg, sizeof msg, "%s", fbk_errmsg());
            }
            issued = j + 1;
        }
        for (size_t j = 0; j < issued; j++) {
            size_t i = which[s + j];
            if (res[s + j] != FBK_OK)
                continue;
            rados_aio_wait_for_complete(c[j]);
            int r = rados_aio_get_return_value(c[j]);
            rados_aio_release(c[j]);
            if (r == -ENOENT) {
                res[s + j] = FBK_ENOTFOUND;
                continue;
            }
            if (r < 0) {
                res[s + j] = fbk__rados_fail(l, r, "remove %s", hex[i]);
                if (!first) {
                    first = res[s + j];
                    os = fbk_last_os_error();
                    snprintf(msg, sizeof msg, "%s", fbk_errmsg());
                }
                continue;
            }
            /* a head: its stripes (best effort, as remove_persisted) */
            rb_head h;
            if (hr[i].r > 0 && is_head(hr[i].buf, (size_t)hr[i].r) &&
                head_decode(l, hex[i], hr[i].buf, &h) == FBK_OK)
                remove_stripes(l, hex[i], &h);
        }
    }
    return first ? fbk_error_set(first, os, "%s", msg) : FBK_OK;
}

static int rb_contains(void *self, void *loc, const fbk_key *key)
{
    (void)self;
    rados_loc *l = loc;
    char hex[33];
    fbk_key_format_hex(key, hex);
    uint64_t size;
    time_t mtime;
    int r = rados_stat(l->io, hex, &size, &mtime);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return fbk__rados_fail(l, r, "stat %s", hex);
    return 1;
}

/* ------------------------------------------------------------------ scan */

/* A stripe no head names (its head is gone or names another token) and
 * older than RB_ORPHAN_AGE: removes it; returns 1 if it did. */
static int drop_orphan_stripe(rados_loc *l, const char *oid)
{
    char hex[33];
    uint64_t token;
    const char *p = oid + strlen(RB_STRIPE_PREFIX);
    if (strlen(p) < 32 + 1 + 16 + 2 || p[32] != '.' || p[49] != '.')
        return 0;
    memcpy(hex, p, 32);
    hex[32] = '\0';
    if (sscanf(p + 33, "%16" SCNx64, &token) != 1)
        return 0;
    rb_head h;
    int kind = read_head(l, hex, &h);
    if (kind == 1 && h.token == token)
        return 0;
    if (kind < 0 && kind != FBK_ENOTFOUND && kind != FBK_ECORRUPT)
        return 0;
    uint64_t size;
    time_t mtime;
    if (rados_stat(l->io, oid, &size, &mtime) < 0 || time(NULL) - mtime < RB_ORPHAN_AGE)
        return 0;
    return rados_remove(l->io, oid) == 0;
}

static int rb_scan(void *self, void *loc, fbk_key_fn each, void *arg)
{
    (void)self;
    rados_loc *l = loc;
    rados_list_ctx_t ctx;
    int r = rados_nobjects_list_open(l->io, &ctx);
    if (r < 0)
        return fbk__rados_fail(l, r, "list the location");
    int junk = 0, rc = FBK_OK;
    for (;;) {
        const char *oid;
        r = rados_nobjects_list_next(ctx, &oid, NULL, NULL);
        if (r == -ENOENT)
            break;
        if (r < 0) {
            rc = fbk__rados_fail(l, r, "list the location");
            break;
        }
        fbk_key key;
        if (strlen(oid) == 32 && fbk_key_parse(oid, &key) == FBK_OK) {
            rc = each(&key, arg);
            if (rc)
                break;
        } else if (strncmp(oid, RB_STRIPE_PREFIX, strlen(RB_STRIPE_PREFIX)) == 0) {
            junk += drop_orphan_stripe(l, oid);
        }
        /* RB_NAMES_OBJ and objects of other programs: left alone */
    }
    rados_nobjects_list_close(ctx);
    return rc ? rc : junk;
}

/* ------------------------------------------------------------ the table */

static void rb_close(void *self)
{
    rados_backend *b = self;
    if (b->inner)
        b->inner->close(b->inner_self);
    if (b->cluster)
        rados_shutdown(b->cluster);
    free(b->pool);
    free(b);
}

static const fbk_backend_ops rados_template = {
    .version = FBK_BACKEND_OPS_VERSION,
    .name = "rados",
    .store = rb_store,
    .load = rb_load,
    .remove = rb_remove,
    .open_location = rb_open_location,
    .close_location = rb_close_location,
    .scan = rb_scan,
    .persist = rb_persist,
    .register_key = rb_register_key,
    .remove_persisted = rb_remove_persisted,
    .sync = rb_sync,
    .close = rb_close,
    .persist_many = rb_persist_many,
    .register_many = rb_register_many,
    .store_many = rb_store_many,
    .store_iov = rb_store_iov,
    .load_into = rb_load_into,
    .name_get = fbk__rados_name_get,
    .name_scan = fbk__rados_name_scan,
    .name_apply = fbk__rados_name_apply,
    .contains = rb_contains,
    .remove_unbound = fbk__rados_remove_unbound,
    .remove_unbound_many = fbk__rados_remove_unbound_many,
};

/* One table per kind of spill area: the template without the optional spill
 * members the inner table lacks (so that the core takes its own paths),
 * built by the first constructor of each kind. */
static fbk_backend_ops table_lmdb, table_file;
static bool built_lmdb, built_file;
static pthread_mutex_t tables_mu = PTHREAD_MUTEX_INITIALIZER;

static const fbk_backend_ops *table_for(bool file, const fbk_backend_ops *inner)
{
    fbk_backend_ops *t = file ? &table_file : &table_lmdb;
    bool *built = file ? &built_file : &built_lmdb;
    pthread_mutex_lock(&tables_mu);
    if (!*built) {
        *t = rados_template;
        bool v2 = inner->version >= 2;
        if (!v2 || !inner->store_many)
            t->store_many = NULL;
        if (!v2 || !inner->store_iov)
            t->store_iov = NULL;
        if (!v2 || !inner->load_into)
            t->load_into = NULL;
        t->workers = inner->version >= 3 ? inner->workers : 0;
        *built = true;
    }
    pthread_mutex_unlock(&tables_mu);
    return t;
}

/* value of parameter key (NULL when the URI did not give it) */
static const char *param(const fbk_backend_params *params, const char *key)
{
    const char *v = NULL;
    fbk_backend_params_get(params, key, &v, NULL);
    return v;
}

static int connect_cluster(rados_backend *b, const char *conf, const char *client)
{
    rados_loc fake = {.b = b, .name = ""};
    int r = client && strncmp(client, "client.", 7) == 0
                ? rados_create2(&b->cluster, "ceph", client, 0)
                : rados_create(&b->cluster, client);
    if (r < 0) {
        b->cluster = NULL;
        return fbk__rados_fail(&fake, r, "create a cluster handle for client %s",
                               client ? client : "admin");
    }
    r = rados_conf_read_file(b->cluster, conf);
    if (r < 0 && conf)
        return fbk_error_set(r == -ENOENT ? FBK_EINVAL : FBK_EIO, -r,
                             "rados: cannot read the Ceph configuration %s: %s", conf,
                             strerror(-r));
    rados_conf_parse_env(b->cluster, NULL);
    char t[16];
    snprintf(t, sizeof t, "%u", b->timeout);
    rados_conf_set(b->cluster, "rados_osd_op_timeout", t);
    rados_conf_set(b->cluster, "rados_mon_op_timeout", t);
    rados_conf_set(b->cluster, "client_mount_timeout", t);
    r = rados_connect(b->cluster);
    if (r < 0)
        return fbk__rados_fail(&fake, r, "connect to the cluster (configuration %s)",
                               conf ? conf : "default");
    int64_t id = rados_pool_lookup(b->cluster, b->pool);
    if (id < 0)
        return id == -ENOENT ? fbk_error_set(FBK_EINVAL, ENOENT,
                                             "rados: pool %s does not exist in the cluster",
                                             b->pool)
                             : fbk__rados_fail(&fake, (int)id, "look up the pool");
    /* one write may not exceed osd_max_write_size (MB) nor an object
     * osd_max_object_size: stripes stay within both */
    b->stripe = RB_STRIPE_MAX;
    char v[64];
    if (rados_conf_get(b->cluster, "osd_max_write_size", v, sizeof v) == 0) {
        unsigned long long mb = strtoull(v, NULL, 10);
        if (mb && (mb << 20) < b->stripe)
            b->stripe = (size_t)(mb << 20);
    }
    if (rados_conf_get(b->cluster, "osd_max_object_size", v, sizeof v) == 0) {
        unsigned long long m = strtoull(v, NULL, 10);
        if (m && m < b->stripe)
            b->stripe = (size_t)m;
    }
    return FBK_OK;
}

/* The rados: scheme's constructor: DIR and the parameters the registry
 * checked and parsed (rados_params below). */
static int rados_scheme_create(void *ctx, const char *dir, const fbk_backend_params *params,
                               const fbk_store_options *opts, const fbk_backend_ops **ops,
                               void **self)
{
    (void)ctx;
    rados_backend *b = calloc(1, sizeof *b);
    if (!b)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "rados: out of memory");
    const char *pool = param(params, "pool");
    const char *spill = param(params, "spill");
    uint64_t tmo = 30;
    int rc = FBK_OK;
    if (!pool || !*pool)
        rc = fbk_error_set(FBK_EINVAL, 0,
                           "rados:%s: the pool parameter is required (rados:DIR?pool=POOL)", dir);
    else if (!(b->pool = strdup(pool)))
        rc = fbk_error_set(FBK_ENOMEM, ENOMEM, "rados: out of memory");
    if (rc == FBK_OK && spill && strcmp(spill, "lmdb") && strcmp(spill, "file"))
        rc = fbk_error_set(FBK_EINVAL, 0, "rados: spill=%s: use lmdb or file", spill);
    if (rc == FBK_OK && fbk_backend_params_get(params, "timeout", NULL, &tmo) &&
        (tmo < 1 || tmo > 86400))
        rc = fbk_error_set(FBK_EINVAL, 0, "rados: timeout=%s: use 1 to 86400 seconds",
                           param(params, "timeout"));
    b->timeout = (unsigned)tmo;
    b->readonly = opts && (opts->flags & FBK_STORE_READONLY);
    /* map_size is the inner lmdb: spill area's; like lmdb:'s own, it wins
     * over fbk_store_options.map_size */
    fbk_store_options o = *opts;
    uint64_t map_size;
    if (fbk_backend_params_get(params, "map_size", NULL, &map_size))
        o.map_size = (size_t)map_size;
    if (rc == FBK_OK)
        rc = connect_cluster(b, param(params, "conf"), param(params, "client"));
    bool file = spill && strcmp(spill, "file") == 0;
    if (rc == FBK_OK)
        rc = file ? fbk_backend_file_create(dir, &o, &b->inner, &b->inner_self)
                  : fbk_backend_lmdb_create(dir, &o, &b->inner, &b->inner_self);
    if (rc) {
        rb_close(b);
        return rc;
    }
    *ops = table_for(file, b->inner);
    *self = b;
    return FBK_OK;
}

static const fbk_backend_param rados_params[] = {
    {"pool", FBK_PARAM_STRING, "the RADOS pool of the locations (required)"},
    {"conf", FBK_PARAM_STRING, "a ceph.conf (default: librados's search)"},
    {"client", FBK_PARAM_STRING, "the cephx user, NAME or client.NAME (default client.admin)"},
    {"spill", FBK_PARAM_STRING, "the local spill area in DIR: lmdb (default) or file"},
    {"timeout", FBK_PARAM_UINT, "seconds before a silent cluster is FBK_ETIMEDOUT"},
    {"map_size", FBK_PARAM_SIZE, "map size of the inner lmdb: spill area"},
    {NULL, FBK_PARAM_STRING, NULL},
};

const fbk_backend_scheme fbk__rados_scheme = {
    .version = FBK_BACKEND_SCHEME_VERSION,
    .scheme = "rados",
    .params = rados_params,
    .flags = FBK_BACKEND_SCHEME_NEEDS_ARG,
    .create = rados_scheme_create,
};

int fbk_backend_rados_create(const char *arg, const fbk_store_options *opts,
                             const fbk_backend_ops **ops, void **self)
{
    if (!arg || !*arg || !ops || !self)
        return fbk_error_set(FBK_EINVAL, 0,
                             "rados: a directory is required (\"rados:DIR?pool=POOL\")");
    /* "DIR?pool=...": checked and parsed as fbk_store_open does, the core's
     * own parameters (readonly...) applied to a copy of opts */
    size_t len = strlen(arg);
    char *uri = fbk_malloc(len + sizeof "rados:");
    if (!uri)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "rados: out of memory");
    memcpy(uri, "rados:", 6);
    memcpy(uri + 6, arg, len + 1);
    fbk__uri u;
    int rc = fbk__uri_parse(uri, &u);
    if (rc == FBK_OK) {
        fbk_store_options o = {0};
        if (opts)
            o = *opts;
        rc = fbk__backend_create(&fbk__rados_scheme, &u, uri, &o, ops, self);
        fbk__uri_free(&u);
    }
    fbk_free(uri);
    return rc;
}
