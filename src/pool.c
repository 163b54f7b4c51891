/* pool.c -- fbk_pool: one codec, one segmented LRU, and the eviction policy
 * of the original FBPool: the item pushed past mem_items is written out and
 * dropped from memory by a worker, unless it is pinned, in which case that
 * happens when its last pin ends. */
#include "fbk_internal.h"

#include <stdlib.h>

#define node_entry(n) ((fbk_handle *)((char *)(n)-offsetof(fbk_handle, node)))

/* How many items whose eviction write failed are retried per LRU change:
 * bounded, so a backend that keeps failing costs each insert O(1). */
#define FBK__RETRY_PER_CHANGE 2

int fbk_pool_create(fbk_pool **out, fbk_store *s, const fbk_codec *codec, size_t mem_items)
{
    if (!out || !s || !codec)
        return fbk_error_set(FBK_EINVAL, 0, "fbk_pool_create: NULL argument");
    if (!codec->size || !codec->encode || !codec->decode || !codec->destroy)
        return fbk_error_set(FBK_EINVAL, 0,
                             "fbk_pool_create: codec needs size, encode, decode and destroy");
    fbk_pool *p = fbk__calloc(1, sizeof *p);
    if (!p)
        return fbk_error_set(FBK_ENOMEM, 0, "cannot allocate a pool");
    atomic_init(&p->refs, 1);
    atomic_init(&p->size, 0);
    p->store = s;
    p->codec = *codec;
    pthread_mutex_init(&p->mu, NULL);
    fbk__lru_init(&p->lru, mem_items);
    fbk__store_retain(s);
    *out = p;
    return FBK_OK;
}

size_t fbk_pool_size(const fbk_pool *p) { return p ? atomic_load(&p->size) : 0; }

void fbk__pool_retain(fbk_pool *p) { atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed); }

void fbk__pool_release_ref(fbk_pool *p)
{
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
        return;
    fbk_store *s = p->store;
    pthread_mutex_destroy(&p->mu);
    fbk__free(p);
    fbk__store_release(s);
}

void fbk_pool_release(fbk_pool *p)
{
    if (p)
        fbk__pool_release_ref(p);
}

static void evict_job(fbk__job *job);
static void evict_many(fbk__job *first, size_t n);

/* What one LRU change decided, acted on after p->mu is released: objects to
 * destroy (never under a lock: a codec's destroy may release handles) and
 * whether an eviction write was queued (for backpressure). */
typedef struct evict_batch {
    void *drop[1 + FBK__RETRY_PER_CHANGE];
    int ndrop;
    bool queued;
} evict_batch;

/* Evicts h if it is in memory and nobody holds it.  An item whose value is in
 * the spill area already is dropped right here (no write, no worker); one
 * that needs a write gets `excl = EVICT` and a job.  p->mu held. */
static void try_evict_locked(fbk_pool *p, fbk_handle *h, evict_batch *b)
{
    bool go = false;
    pthread_mutex_lock(&h->mu);
    if (h->obj && h->excl == FBK__EX_NONE && h->readers == 0 && !h->storing) {
        if (h->tok && b->ndrop < (int)(sizeof b->drop / sizeof b->drop[0])) {
            b->drop[b->ndrop++] = h->obj;
            h->obj = NULL;
        } else if (!h->tok && fbk__entry_try_ref(h)) {
            h->excl = FBK__EX_EVICT;
            /* a codec with view holds its bytes, so its size() is cheap:
             * count them for the byte bound */
            h->evict_bytes = p->codec.view ? p->codec.size(h->obj, p->codec.ctx) : 0;
            go = true;
        }
    }
    size_t bytes = go ? h->evict_bytes : 0;
    pthread_mutex_unlock(&h->mu);
    if (go) {
        fbk_store *s = p->store;
        fbk__store_evict_queued(s, bytes);
        h->evict_job.run = evict_job;
        h->evict_job.run_many = FBK__STORE_MANY(s) ? evict_many : NULL;
        fbk__workers_submit(&s->workers, &h->evict_job);
        b->queued = true;
    }
}

/* After p->mu is released: destroy what was dropped.  Returns whether an
 * eviction write was queued (the caller may then apply backpressure). */
static bool finish_batch(fbk_pool *p, evict_batch *b)
{
    fbk_store *s = p->store;
    for (int i = 0; i < b->ndrop; i++)
        p->codec.destroy(b->drop[i], p->codec.ctx);
    if (b->ndrop)
        atomic_fetch_add_explicit(&s->n_evictions, (uint_fast64_t)b->ndrop, memory_order_relaxed);
    return b->queued;
}

/* After an LRU change: evict the node now first beyond mem_items, then give
 * a few earlier failures another try.  p->mu held. */
static void after_change_locked(fbk_pool *p, bool evict_first, evict_batch *b)
{
    if (evict_first && p->lru.first[2])
        try_evict_locked(p, node_entry(p->lru.first[2]), b);
    for (int i = 0; i < FBK__RETRY_PER_CHANGE && p->retry; i++) {
        fbk_handle *h = p->retry;
        p->retry = h->retry_next;
        h->retry_next = NULL;
        h->in_retry = false;
        if (fbk__lru_seg(&h->node) == 2)
            try_evict_locked(p, h, b);
    }
}

bool fbk__pool_touch(fbk_pool *p, fbk_handle *h, bool loaded)
{
    if (!loaded && fbk__lru_seg(&h->node) == 0)
        return false; /* hot path: front half, nothing moves, no lock */
    evict_batch b = {.ndrop = 0};
    pthread_mutex_lock(&p->mu);
    unsigned s = fbk__lru_seg(&h->node);
    if ((s != 0 || loaded) && p->lru.head.next != &h->node) {
        fbk__lru_remove(&p->lru, &h->node);
        fbk__lru_push_front(&p->lru, &h->node);
        after_change_locked(p, s == 2, &b);
    }
    pthread_mutex_unlock(&p->mu);
    return finish_batch(p, &b);
}

void fbk__pool_unpinned(fbk_pool *p, fbk_handle *h)
{
    if (fbk__lru_seg(&h->node) != 2)
        return;
    evict_batch b = {.ndrop = 0};
    pthread_mutex_lock(&p->mu);
    if (fbk__lru_seg(&h->node) == 2)
        try_evict_locked(p, h, &b);
    pthread_mutex_unlock(&p->mu);
    (void)finish_batch(p, &b); /* never waits: called by unloads and workers */
}

void fbk__pool_evict_failed(fbk_pool *p, fbk_handle *h)
{
    pthread_mutex_lock(&p->mu);
    if (!h->in_retry) {
        h->in_retry = true;
        h->retry_next = p->retry;
        p->retry = h;
    }
    pthread_mutex_unlock(&p->mu);
}

bool fbk__pool_link(fbk_pool *p, fbk_handle *h, bool front)
{
    fbk__pool_retain(p);
    evict_batch b = {.ndrop = 0};
    pthread_mutex_lock(&p->mu);
    if (front)
        fbk__lru_push_front(&p->lru, &h->node);
    else
        fbk__lru_push_back(&p->lru, &h->node);
    atomic_fetch_add(&p->size, 1);
    after_change_locked(p, front, &b);
    pthread_mutex_unlock(&p->mu);
    return finish_batch(p, &b);
}

void fbk__pool_unlink(fbk_pool *p, fbk_handle *h)
{
    pthread_mutex_lock(&p->mu);
    fbk__lru_remove(&p->lru, &h->node);
    if (h->in_retry) {
        fbk_handle **pp = &p->retry;
        while (*pp != h)
            pp = &(*pp)->retry_next;
        *pp = h->retry_next;
        h->in_retry = false;
    }
    atomic_fetch_sub(&p->size, 1);
    pthread_mutex_unlock(&p->mu);
}

/* The end of an eviction: with the write's outcome, drop the object from
 * memory (rc == 0) or keep it and queue the item for a retry.  t is the new
 * token when this eviction wrote the value. */
static void evict_finish(fbk_handle *h, int rc, fbk__token *t)
{
    fbk_pool *p = h->pool;
    fbk_store *s = p->store;
    pthread_mutex_lock(&h->mu);
    if (t)
        h->tok = t;
    /* read before excl goes: the item's next eviction sets it anew */
    size_t bytes = h->evict_bytes;
    void *drop = NULL;
    if (rc == FBK_OK) {
        drop = h->obj;
        h->obj = NULL;
    }
    h->excl = FBK__EX_NONE;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    if (drop) {
        p->codec.destroy(drop, p->codec.ctx);
        atomic_fetch_add_explicit(&s->n_evictions, 1, memory_order_relaxed);
    }
    if (rc) {
        atomic_fetch_add_explicit(&s->n_evict_fail, 1, memory_order_relaxed);
        fbk__store_report(s, rc);
        /* FBK_EINVAL is final (a value larger than the backend can hold):
         * retrying it on every LRU change would only fail again.  The item
         * stays in memory; it is written again only when it is next pushed
         * out of the pool's memory. */
        if (rc != FBK_EINVAL)
            fbk__pool_evict_failed(p, h);
    }
    fbk__store_evict_done(s, bytes);
    fbk__entry_unref(h);
}

/* The eviction writes of n jobs queued together (linked through next), on a
 * worker.  Each item is held exclusively (EVICT: no pins can start, its
 * object stays put); those not yet stored are written -- through the
 * backend's store_many when it has one -- and then dropped from memory.  A
 * failed write keeps its object in memory: nothing is lost, and the item is
 * retried on a later LRU change. */
static void evict_many(fbk__job *first, size_t n)
{
    fbk_handle *hs[FBK__EVICT_BATCH];
    bool write[FBK__EVICT_BATCH];
    fbk__store_item items[FBK__EVICT_BATCH];
    size_t m = 0, k = 0;
    for (fbk__job *j = first; j && k < n && k < FBK__EVICT_BATCH; j = j->next, k++) {
        fbk_handle *h = (fbk_handle *)((char *)j - offsetof(fbk_handle, evict_job));
        hs[k] = h;
        pthread_mutex_lock(&h->mu);
        write[k] = !h->tok;
        if (write[k])
            items[m++] = (fbk__store_item){.key = h->key, .codec = &h->pool->codec, .obj = h->obj};
        pthread_mutex_unlock(&h->mu);
    }
    if (m > 0)
        fbk__token_store_many(hs[0]->pool->store, items, m);
    for (size_t i = 0, w = 0; i < k; i++) {
        fbk__store_item *it = write[i] ? &items[w++] : NULL;
        int rc = it ? it->rc : FBK_OK;
        evict_finish(hs[i], rc, rc == FBK_OK && it ? it->tok : NULL);
    }
}

static void evict_job(fbk__job *job) { evict_many(job, 1); }
