/* rados_stripe.c -- striped values of the rados: backend: a value longer
 * than the stripe size is held by stripes
 * "__fbk_stripe.<key hex>.<token>.<i>" and, under the key's name, a head
 * naming them (docs/rados-backend.md, "Layout").  Everything that knows the
 * head's format or the stripes' names is here: encoding and decoding the
 * head, writing the stripes then the head (persist), reading them into the
 * spill area (register), removing them, and the junk stripes scan drops. */
#include "rados_internal.h"

#include "fbk_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <xxhash.h>

/* a stripe no head names is junk (scan deletes it) once this old: a
 * writer on another machine writes its stripes before its head */
#define RB_ORPHAN_AGE 3600

/* ---- the head of a striped value (RB_HEAD_SIZE: 48 bytes, little-endian)
 *   0  "FBKRSTRP"   8  version (u32, 1)   12 stripe count (u32)
 *   16 value length (u64)   24 stripe size (u64)   32 token (u64)
 *   40 XXH3-64 of bytes 0..40 */
#define RB_HEAD_MAGIC "FBKRSTRP"

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

int fbk__rados_head_parse(const rados_loc *l, const char *oid, const void *p, size_t len,
                          rb_head *h)
{
    if (!is_head(p, len))
        return 0;
    int rc = head_decode(l, oid, p, h);
    return rc ? rc : 1;
}

int fbk__rados_read_head(rados_loc *l, const char *oid, rb_head *h)
{
    unsigned char buf[RB_HEAD_SIZE + 1];
    int r = rados_read(l->io, oid, (char *)buf, sizeof buf, 0);
    if (r < 0)
        return fbk__rados_fail(l, r, "read %s", oid);
    return fbk__rados_head_parse(l, oid, buf, (size_t)r, h);
}

void fbk__rados_remove_stripes(rados_loc *l, const char *hex, const rb_head *h)
{
    char oid[128];
    for (uint32_t i = 0; i < h->n; i++) {
        stripe_oid(hex, h->token, i, oid, sizeof oid);
        rados_remove(l->io, oid);
    }
}

/* ---------------------------------------------------- writing, reading */

/* Waits for the n completions c[]; returns the first failure (r < 0) or 0,
 * setting *bad to the first whose result is not want[i] (reads). */
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

int fbk__rados_persist_striped(rados_loc *l, const char *hex, const char *src, size_t len)
{
    rados_backend *b = l->b;
    rb_head h = {.stripe = b->stripe, .total = len};
    h.n = (uint32_t)((len + b->stripe - 1) / b->stripe);
    while (getrandom(&h.token, sizeof h.token, 0) != sizeof h.token)
        ;
    rb_head old;
    int had = fbk__rados_read_head(l, hex, &old);
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
    bool head_sent = false;
    if (r >= 0) {
        unsigned char hd[RB_HEAD_SIZE];
        head_encode(&h, hd);
        head_sent = true;
        r = rados_write_full(l->io, hex, (const char *)hd, sizeof hd);
    }
    if (r < 0) {
        int rc = fbk__rados_fail(l, r, "persist %s (%zu bytes in %" PRIu32 " stripes)", hex, len,
                                 h.n);
        /* A failed head write may still have been applied (a timeout says
         * nothing of the outcome): then the head names these stripes, and
         * removing them would leave the key unreadable -- the old value's
         * head is overwritten.  So they stay; a scan removes them if no head
         * names them (fbk__rados_drop_orphan_stripe). */
        if (!head_sent) {
            h.n = (uint32_t)issued;
            fbk__rados_remove_stripes(l, hex, &h);
        }
        return rc;
    }
    if (had == 1 && old.token != h.token)
        fbk__rados_remove_stripes(l, hex, &old);
    return FBK_OK;
}

typedef struct striped_ctx {
    rados_loc *l;
    const char *hex;
    const rb_head *h;
} striped_ctx;

/* The spill area's fill of a striped value: its stripes, 4 reads in flight. */
static int fill_striped(void *dst, size_t len, void *arg)
{
    striped_ctx *x = arg;
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

int fbk__rados_register_striped(rados_loc *l, const fbk_key *key, const char *hex,
                                const rb_head *h)
{
    striped_ctx x = {l, hex, h};
    return l->b->inner->store(l->b->inner_self, key, (size_t)h->total, fill_striped, &x);
}

/* ------------------------------------------------------------ junk */

int fbk__rados_drop_orphan_stripe(rados_loc *l, const char *oid)
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
    int kind = fbk__rados_read_head(l, hex, &h);
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
