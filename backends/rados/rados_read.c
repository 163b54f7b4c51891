/* rados_read.c -- the reads of a rados: location: register reads an object
 * into the spill area (one read op of its size and first RB_FIRST_READ
 * bytes; the rest of a longer value read on straight into the spill
 * area's buffer; a stripe head has its stripes read, rados_stripe.c),
 * register_many keeps RB_READ_AHEAD first reads in flight; contains stats
 * an object; scan lists the location's objects. */
#include "rados_internal.h"

#include "fbk_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* the first read of a register: enough for a 1 MiB object and its frame in
 * one round trip; longer values are read on into the spill area directly */
#define RB_FIRST_READ ((1u << 20) + 4096)
/* register_many's read-ahead */
#define RB_READ_AHEAD 16

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
} fill_ctx;

/* The spill area's fill of a plain object: the first read's bytes, then
 * reads of the rest. */
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
    rb_head h;
    int head = r < 0 ? 0 : fbk__rados_head_parse(l, hex, f->buf, f->nread, &h);
    if (r < 0) {
        rc = fbk__rados_fail(l, r, "register %s", hex);
    } else if (head < 0) { /* a damaged stripe head */
        rc = head;
    } else if (head == 1) {
        rc = fbk__rados_register_striped(l, key, hex, &h);
    } else if (f->size > SIZE_MAX || f->nread > f->size) {
        rc = fbk_error_set(FBK_ECORRUPT, 0, "rados: register %s: inconsistent object size", hex);
    } else {
        fill_ctx x = {l, hex, f};
        rc = l->b->inner->store(l->b->inner_self, key, (size_t)f->size, fill_plain, &x);
    }
    free(f->buf);
    return rc;
}

int fbk__rados_register_key(void *self, void *loc, const fbk_key *key)
{
    (void)self;
    char hex[33];
    fbk_key_format_hex(key, hex);
    first_read f;
    int rc = first_read_start(loc, hex, &f);
    return rc ? rc : first_read_finish(loc, key, hex, &f);
}

/* register_key pipelined: up to RB_READ_AHEAD first reads in flight. */
int fbk__rados_register_many(void *self, void *loc, const fbk_key *keys, size_t n)
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

/* ------------------------------------------------------ contains, scan */

int fbk__rados_contains(void *self, void *loc, const fbk_key *key)
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

int fbk__rados_scan(void *self, void *loc, fbk_key_fn each, void *arg)
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
            junk += fbk__rados_drop_orphan_stripe(l, oid);
        }
        /* RB_NAMES_OBJ and objects of other programs: left alone */
    }
    rados_nobjects_list_close(ctx);
    return rc ? rc : junk;
}
