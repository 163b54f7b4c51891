/* rados_write.c -- the writes of a rados: location: persist reads the
 * value from the spill area and queues one asynchronous write_full of the
 * object (a striped value: rados_stripe.c); the location keeps the writes
 * not yet accounted for (rados_loc.pend, oldest first), bounded in bytes
 * and count; sync (and name_apply, through fbk__rados_settle) waits for
 * all of them, the first failure of the window winning. */
#include "rados_internal.h"

#include "fbk_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* bound on the bytes of asynchronous writes in flight per location: beyond
 * it a persist waits for the oldest (librados holds a copy of each) */
#define RB_INFLIGHT_MAX (64u << 20)
#define RB_INFLIGHT_OPS 512

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

void fbk__rados_pending_close(rados_loc *l)
{
    rados_aio_flush(l->io);
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < l->npend; i++) {
        rados_aio_wait_for_complete(l->pend[i].c);
        rados_aio_release(l->pend[i].c);
    }
    l->npend = 0;
    pthread_mutex_unlock(&l->mu);
}

/* ------------------------------------------------------------- persist */

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
        return fbk__rados_persist_striped(l, hex, src, len);
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

int fbk__rados_persist(void *self, void *loc, const fbk_key *key)
{
    rados_backend *b = self;
    persist_ctx p = {loc, key};
    return b->inner->load(b->inner_self, key, persist_read, &p);
}

int fbk__rados_persist_many(void *self, void *loc, const fbk_key *keys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = fbk__rados_persist(self, loc, &keys[i]);
        if (rc)
            return rc;
    }
    return FBK_OK;
}

int fbk__rados_sync(void *self, void *loc)
{
    (void)self;
    return fbk__rados_settle(loc, true);
}
