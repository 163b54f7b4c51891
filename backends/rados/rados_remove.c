/* rados_remove.c -- removing a rados: location's objects: remove_persisted
 * (one object, then its stripes when it is a head), and the parallel
 * removal rados_refs.c uses for objects bound by no name (their first
 * bytes read to tell heads, then 64 removals in flight). */
#include "rados_internal.h"

#include "fbk_internal.h"

#include <errno.h>
#include <stdio.h>

int fbk__rados_remove_persisted(void *self, void *loc, const fbk_key *key)
{
    (void)self;
    char hex[33];
    fbk_key_format_hex(key, hex);
    return fbk__rados_remove_object(loc, hex);
}

int fbk__rados_remove_object(rados_loc *l, const char *hex)
{
    rb_head h;
    int kind = fbk__rados_read_head(l, hex, &h);
    if (kind < 0 && kind != FBK_ECORRUPT)
        return kind;
    int r = rados_remove(l->io, hex);
    if (r < 0)
        return fbk__rados_fail(l, r, "remove %s", hex);
    if (kind == 1)
        fbk__rados_remove_stripes(l, hex, &h);
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

/* A parallel removal: the objects, what their first bytes read found, up
 * to RB_REMOVE_WINDOW removals in flight, and the first failure (its code,
 * errno and message, reported at the end). */
#define RB_REMOVE_WINDOW 64
typedef struct removal {
    rados_loc *l;
    const char (*hex)[33];
    const rb_headread *hr;
    rados_completion_t c[RB_REMOVE_WINDOW];
    int first, os;
    char msg[512];
} removal;

static void keep_first(removal *x, int rc)
{
    if (rc == FBK_OK || x->first)
        return;
    x->first = rc;
    x->os = fbk_last_os_error();
    snprintf(x->msg, sizeof x->msg, "%s", fbk_errmsg());
}

/* Issues the removals of the k objects hex[which[j]] (c[j]), but of those
 * whose read failed (other than absent): res[j] FBK_OK when issued, else
 * the failure. */
static void remove_issue(removal *x, const size_t *which, size_t k, int *res)
{
    for (size_t j = 0; j < k; j++) {
        size_t i = which[j];
        int r = x->hr[i].r;
        res[j] = r < 0 && r != -ENOENT ? fbk__rados_fail(x->l, r, "read %s", x->hex[i]) : FBK_OK;
        if (res[j] == FBK_OK) {
            r = rados_aio_create_completion2(NULL, NULL, &x->c[j]);
            if (r >= 0) {
                r = rados_aio_remove(x->l->io, x->hex[i], x->c[j]);
                if (r < 0)
                    rados_aio_release(x->c[j]);
            }
            if (r < 0)
                res[j] = fbk__rados_fail(x->l, r, "remove %s", x->hex[i]);
        }
        keep_first(x, res[j]);
    }
}

/* Waits for the removals remove_issue issued (res[j] FBK_OK), then removes
 * the stripes of those that were heads. */
static void remove_collect(removal *x, const size_t *which, size_t k, int *res)
{
    for (size_t j = 0; j < k; j++) {
        size_t i = which[j];
        if (res[j] != FBK_OK)
            continue;
        rados_aio_wait_for_complete(x->c[j]);
        int r = rados_aio_get_return_value(x->c[j]);
        rados_aio_release(x->c[j]);
        if (r == -ENOENT) {
            res[j] = FBK_ENOTFOUND;
            continue;
        }
        if (r < 0) {
            res[j] = fbk__rados_fail(x->l, r, "remove %s", x->hex[i]);
            keep_first(x, res[j]);
            continue;
        }
        /* a head: its stripes (best effort, as remove_persisted) */
        rb_head h;
        if (x->hr[i].r > 0 &&
            fbk__rados_head_parse(x->l, x->hex[i], x->hr[i].buf, (size_t)x->hr[i].r, &h) == 1)
            fbk__rados_remove_stripes(x->l, x->hex[i], &h);
    }
}

int fbk__rados_remove_heads(rados_loc *l, const char (*hex)[33], const rb_headread *hr,
                            const size_t *which, size_t m, int *res)
{
    removal x = {.l = l, .hex = hex, .hr = hr, .first = FBK_OK, .msg = ""};
    for (size_t s = 0; s < m; s += RB_REMOVE_WINDOW) {
        size_t k = m - s < RB_REMOVE_WINDOW ? m - s : RB_REMOVE_WINDOW;
        remove_issue(&x, which + s, k, res + s);
        remove_collect(&x, which + s, k, res + s);
    }
    return x.first ? fbk_error_set(x.first, x.os, "%s", x.msg) : FBK_OK;
}
