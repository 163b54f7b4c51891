/* map_commit.c -- the group commit of fbk_map: a put queues its change and
 * waits until a batch containing it has been applied and synced; the first
 * waiter that finds no batch running becomes the committer of everything
 * queued so far (map.c's comment, docs/maps.md).  After a batch: the objects
 * its changes orphaned, kept when another process bound them meanwhile. */
#include "map_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/uio.h>

/* ------------------------------------------------------- group commit */

typedef struct batch {
    mop *ops;
    size_t n;
    uint64_t hi;
} batch;

/* The batch's objects into the location and its bindings into the index,
 * then one sync of the location for all of it.  A backend with
 * persist_names (lmdb:) commits objects and bindings in one transaction;
 * otherwise one persist_many, then one name_apply. */
static int apply_batch(fbk_map *m, const batch *b)
{
    if (!b->n)
        return fbk_location_sync(m->loc);
    size_t nkeys = 0, nframes = 0;
    for (size_t i = 0; i < b->n; i++) {
        nkeys += b->ops[i].tok != NULL;
        nframes += b->ops[i].frame != NULL;
    }
    fbk_key *keys = fbk__malloc((nkeys ? nkeys : 1) * sizeof *keys);
    fbk_name_op *nops = fbk__malloc(b->n * sizeof *nops);
    fbk_frame_req *reqs = fbk__malloc((nframes ? nframes : 1) * sizeof *reqs);
    struct iovec *iov = fbk__malloc((nframes ? 2 * nframes : 1) * sizeof *iov);
    if (!keys || !nops || !reqs || !iov) {
        fbk__free(keys);
        fbk__free(nops);
        fbk__free(reqs);
        fbk__free(iov);
        return fbk_error_set(FBK_ENOMEM, 0, "map: cannot allocate a batch of %zu changes", b->n);
    }
    nkeys = nframes = 0;
    for (size_t i = 0; i < b->n; i++) {
        const mop *o = &b->ops[i];
        if (o->tok)
            keys[nkeys++] = o->key;
        if (o->frame) {
            mframe *f = o->frame;
            iov[2 * nframes] = (struct iovec){f->hdr, FBK__FRAME_HDR};
            iov[2 * nframes + 1] = (struct iovec){f->data, f->len};
            reqs[nframes] = (fbk_frame_req){&o->key, &iov[2 * nframes], 2};
            nframes++;
        }
        nops[i] = (fbk_name_op){o->e->name, o->e->len, o->bind ? &o->key : NULL, o->size};
    }
    bool bound = false;
    int rc = FBK_OK;
    /* objects from the spill area first (without the names when frames
     * follow), then the frames with the names: one transaction on lmdb:
     * when the batch has only one kind */
    if (nkeys)
        rc = fbk__location_persist_bind(m->loc, keys, nkeys, nframes ? NULL : nops,
                                        nframes ? 0 : b->n, &bound);
    if (rc == FBK_OK && nframes) {
        rc = fbk__location_write_bind(m->loc, reqs, nframes, nops, b->n);
        bound = rc == FBK_OK;
    }
    if (rc == FBK_OK && !bound)
        rc = m->s->ops->name_apply(m->s->self, m->loc->bloc, nops, b->n);
    fbk__free(keys);
    fbk__free(nops);
    fbk__free(reqs);
    fbk__free(iov);
    if (rc)
        return fbk__error_keep(rc);
    return fbk_location_sync(m->loc);
}

/* Removes the objects orphaned by changes up to `hi` (durable now) that
 * are still unreferenced.  Called with mu held; drops it meanwhile. */
static void remove_orphans(fbk_map *m, uint64_t hi)
{
    size_t k = 0, n = 0;
    fbk_key *gone = fbk__malloc((m->norphans ? m->norphans : 1) * sizeof *gone);
    if (!gone)
        return; /* garbage stays; retried after the next batch */
    for (size_t i = 0; i < m->norphans; i++) {
        orphan o = m->orphans[i];
        if (o.gen > hi)
            m->orphans[k++] = o;
        else if (!fbk__keymap_get(&m->keyrefs, &o.key))
            gone[n++] = o.key;
    }
    m->norphans = k;
    pthread_mutex_unlock(&m->mu);
    /* kept when another process bound a name to it meanwhile; lmdb: one
     * transaction for all of them (1024 at a time) */
    int rc = n ? fbk__location_remove_unbound_many(m->loc, gone, n) : FBK_OK;
    if (rc)
        fbk__store_report(m->s, rc); /* garbage, not a failure of the put */
    fbk__free(gone);
    pthread_mutex_lock(&m->mu);
}

/* Runs one batch of everything queued.  Called with mu held and no batch
 * running; returns with mu held. */
static void run_batch(fbk_map *m)
{
    m->committing = true;
    batch b = {m->ops, m->nops, m->op_gen};
    m->ops = NULL;
    m->nops = m->capops = 0;
    pthread_mutex_unlock(&m->mu);
    int rc = apply_batch(m, &b);
    pthread_mutex_lock(&m->mu);
    if (rc) {
        snprintf(m->batch_msg, sizeof m->batch_msg, "%s", fbk_errmsg());
        m->batch_errno = fbk_last_os_error();
    }
    for (size_t i = 0; i < b.n; i++) {
        mentry *e = b.ops[i].e;
        if (e->ptok && e->ptok == b.ops[i].tok)
            e->ptok = NULL; /* applied: a get registers from the location now */
        if (b.ops[i].frame) {
            if (e->pframe == b.ops[i].frame)
                e->pframe = NULL;
            m->frame_bytes -= b.ops[i].frame->len;
            fbk__map_frame_release(b.ops[i].frame);
        }
        if (b.ops[i].tok) {
            pthread_mutex_unlock(&m->mu); /* token.c takes the store's lock */
            fbk__token_release(b.ops[i].tok);
            pthread_mutex_lock(&m->mu);
        }
        if (rc && b.ops[i].nosync && !m->nosync_err)
            m->nosync_err = rc;
        if (--e->pending == 0 && !e->bound)
            fbk__map_entry_free(m, e);
    }
    fbk__free(b.ops);
    m->done_gen = b.hi;
    for (waiter **pp = &m->waiters; *pp;) {
        waiter *w = *pp;
        if (w->gen <= b.hi) {
            w->rc = rc;
            w->done = true;
            *pp = w->next;
        } else {
            pp = &w->next;
        }
    }
    if (rc == FBK_OK)
        remove_orphans(m, b.hi);
    m->committing = false;
    pthread_cond_broadcast(&m->cv);
}

/* Waits (mu held) until change `gen` is applied and synced; its result.
 * The waiter lives on this stack: the batch that covers it unlinks it before
 * setting done, so no pointer to it outlives this call. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#define FBK__DANGLING_OFF 1
#endif
int fbk__map_commit_wait(fbk_map *m, uint64_t gen)
{
    waiter w = {.gen = gen};
    w.next = m->waiters;
    m->waiters = &w;
    while (!w.done) {
        if (m->committing) {
            pthread_cond_wait(&m->cv, &m->mu);
            continue;
        }
        /* become the committer; first let the puts already under way join
         * (a bounded wait: later arrivals go to the next batch) */
        m->committing = true;
        for (uint64_t target = m->stage_in; m->stage_out < target;)
            pthread_cond_wait(&m->cv, &m->mu);
        run_batch(m);
    }
    if (w.rc)
        fbk_error_set(w.rc, m->batch_errno,
                      "map: location \"%s\": the change was not applied (nothing of it is "
                      "bound): %s",
                      m->loc->name, m->batch_msg);
    return w.rc;
}
#ifdef FBK__DANGLING_OFF
#pragma GCC diagnostic pop
#endif

