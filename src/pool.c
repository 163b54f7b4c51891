/* pool.c -- fbk_pool: one codec, one eviction policy (policy.c: the
 * segmented LRU of the original FBPool, SIEVE or S3-FIFO) and what the pool
 * does with the items its policy pushes out: the value is written out and
 * dropped from memory by a worker (dropped at once when it is in the spill
 * area already), unless it is pinned, in which case that happens when its
 * last pin ends. */
#include "fbk_internal.h"

#include <stdlib.h>

_Thread_local unsigned fbk__items_held;

#define node_entry(n) ((fbk_handle *)((char *)(n)-offsetof(fbk_handle, node)))

/* How many items whose eviction write failed are retried per LRU change:
 * bounded, so a backend that keeps failing costs each insert O(1). */
#define FBK__RETRY_PER_CHANGE 2

static int pool_new(fbk_pool **out, fbk_store *s, const fbk_codec *codec, size_t mem_items,
                    size_t mem_bytes, fbk_policy policy, const char *fn)
{
    if (!out || !s || !codec)
        return fbk_error_set(FBK_EINVAL, 0, "%s: NULL argument", fn);
    if (!codec->size || !codec->encode || !codec->decode || !codec->destroy)
        return fbk_error_set(FBK_EINVAL, 0, "%s: codec needs size, encode, decode and destroy",
                             fn);
    fbk_pool *p = fbk__calloc(1, sizeof *p);
    if (!p)
        return fbk_error_set(FBK_ENOMEM, 0, "cannot allocate a pool");
    atomic_init(&p->refs, 1);
    atomic_init(&p->size, 0);
    atomic_init(&p->n_hits, 0);
    atomic_init(&p->n_misses, 0);
    atomic_init(&p->n_evictions, 0);
    atomic_init(&p->n_mem_items, 0);
    atomic_init(&p->n_mem_bytes, 0);
    p->store = s;
    p->codec = *codec;
    /* a codec with view holds its bytes, so its size() is a field read */
    p->track_bytes = mem_bytes != 0 || codec->view != NULL;
    pthread_mutex_init(&p->mu, NULL);
    fbk__policy_init(&p->pol, policy, mem_bytes && !mem_items ? SIZE_MAX : mem_items,
                     mem_bytes ? mem_bytes : SIZE_MAX);
    fbk__store_retain(s);
    *out = p;
    return FBK_OK;
}

int fbk_pool_create(fbk_pool **out, fbk_store *s, const fbk_codec *codec, size_t mem_items)
{
    return pool_new(out, s, codec, mem_items, 0, FBK_POLICY_SLRU, "fbk_pool_create");
}

int fbk_pool_create_v2(fbk_pool **out, fbk_store *s, const fbk_codec *codec,
                       const fbk_pool_options *opts)
{
    if (!opts)
        return fbk_error_set(FBK_EINVAL, 0, "fbk_pool_create_v2: NULL options");
    if (!opts->mem_items && !opts->mem_bytes)
        return fbk_error_set(FBK_EINVAL, 0,
                             "fbk_pool_create_v2: mem_items and mem_bytes are both 0 "
                             "(at least one bound is needed)");
    if (opts->policy != FBK_POLICY_SLRU && opts->policy != FBK_POLICY_SIEVE &&
        opts->policy != FBK_POLICY_S3FIFO)
        return fbk_error_set(FBK_EINVAL, 0, "fbk_pool_create_v2: unknown policy %d",
                             (int)opts->policy);
    return pool_new(out, s, codec, opts->mem_items, opts->mem_bytes, opts->policy,
                    "fbk_pool_create_v2");
}

void fbk_pool_stats_get(const fbk_pool *p, fbk_pool_stats *out)
{
    if (!out)
        return;
    *out = (fbk_pool_stats){0};
    if (!p)
        return;
    out->hits = atomic_load_explicit(&p->n_hits, memory_order_relaxed);
    out->misses = atomic_load_explicit(&p->n_misses, memory_order_relaxed);
    out->evictions = atomic_load_explicit(&p->n_evictions, memory_order_relaxed);
    out->items_in_memory = atomic_load_explicit(&p->n_mem_items, memory_order_relaxed);
    out->bytes_in_memory = atomic_load_explicit(&p->n_mem_bytes, memory_order_relaxed);
}

size_t fbk__pool_weigh(fbk_pool *p, const void *obj)
{
    return p->track_bytes ? p->codec.size(obj, p->codec.ctx) : 0;
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

/* Most objects one LRU change drops on the calling thread; the rest of its
 * victims (a large value pushing out many small ones) go through a worker. */
#define FBK__DROP_MAX 8

/* What one LRU change decided, acted on after p->mu is released: objects to
 * destroy (never under a lock: a codec's destroy may release handles) and
 * whether an eviction write was queued (for backpressure). */
typedef struct evict_batch {
    void *drop[FBK__DROP_MAX];
    int ndrop;
    bool queued;
} evict_batch;

/* Evicts h if it is in memory and nobody holds it.  An item whose value is in
 * the spill area already is dropped right here (no write, no worker); one
 * that needs a write gets `excl = EVICT` and a job.  p->mu held. */
static void try_evict_locked(fbk_pool *p, fbk_handle *h, evict_batch *b)
{
    FBK__ASSERT_POOL_HELD(p);
    bool go = false;
    fbk__item_lock(h);
    if (h->obj && h->excl == FBK__EX_NONE && h->readers == 0 && !h->storing) {
        if (h->tok && b->ndrop < FBK__DROP_MAX) {
            b->drop[b->ndrop++] = h->obj;
            h->obj = NULL;
            fbk__pool_count_mem(p, -1, h->bytes);
        } else if (fbk__entry_try_ref(h)) {
            h->excl = FBK__EX_EVICT;
            /* a codec with view holds its bytes, so its size() is cheap:
             * count them for the byte bound (none to write when stored) */
            h->evict_bytes =
                !h->tok && p->codec.view ? p->codec.size(h->obj, p->codec.ctx) : 0;
            go = true;
        }
    }
    size_t bytes = go ? h->evict_bytes : 0;
    fbk__item_unlock(h);
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
    if (b->ndrop) {
        atomic_fetch_add_explicit(&s->n_evictions, (uint_fast64_t)b->ndrop, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->n_evictions, (uint_fast64_t)b->ndrop, memory_order_relaxed);
    }
    return b->queued;
}

/* After a policy change: evict the values the policy pushed out.  p->mu
 * held.  (An item on the retry list is left to the retries: its write failed
 * a moment ago.) */
static void evict_victims_locked(fbk_pool *p, evict_batch *b)
{
    FBK__ASSERT_POOL_HELD(p);
    fbk__node *n;
    while ((n = fbk__policy_victim(&p->pol))) {
        fbk_handle *h = node_entry(n);
        if (!h->in_retry)
            try_evict_locked(p, h, b);
    }
}

/* ... and then give a few earlier failures another try. */
static void after_change_locked(fbk_pool *p, evict_batch *b)
{
    FBK__ASSERT_POOL_HELD(p);
    evict_victims_locked(p, b);
    for (int i = 0; i < FBK__RETRY_PER_CHANGE && p->retry; i++) {
        fbk_handle *h = p->retry;
        p->retry = h->retry_next;
        h->retry_next = NULL;
        h->in_retry = false;
        if (fbk__node_out(&h->node))
            try_evict_locked(p, h, b);
    }
}

bool fbk__pool_touch(fbk_pool *p, fbk_handle *h, bool loaded, size_t w)
{
    if (!loaded && fbk__policy_hit(&p->pol, &h->node))
        return false; /* hot path: recorded without a list change, no lock */
    evict_batch b = {.ndrop = 0};
    fbk__pool_lock(p);
    if (loaded && h->node.weight != w) {
        /* out of memory until now: its weight counted in no bound */
        fbk__policy_reweight(&p->pol, &h->node, w);
        evict_victims_locked(p, &b);
    }
    if (fbk__policy_access(&p->pol, &h->node, loaded))
        after_change_locked(p, &b);
    fbk__pool_unlock(p);
    return finish_batch(p, &b);
}

void fbk__pool_unpinned(fbk_pool *p, fbk_handle *h)
{
    if (!fbk__node_out(&h->node))
        return;
    evict_batch b = {.ndrop = 0};
    fbk__pool_lock(p);
    if (fbk__node_out(&h->node))
        try_evict_locked(p, h, &b);
    fbk__pool_unlock(p);
    (void)finish_batch(p, &b); /* never waits: called by unloads and workers */
}

void fbk__pool_reweigh(fbk_pool *p, fbk_handle *h, size_t w)
{
    evict_batch b = {.ndrop = 0};
    fbk__pool_lock(p);
    if (h->node.weight != w) {
        fbk__policy_reweight(&p->pol, &h->node, w);
        after_change_locked(p, &b);
    }
    fbk__pool_unlock(p);
    (void)finish_batch(p, &b);
}

void fbk__pool_evict_failed(fbk_pool *p, fbk_handle *h)
{
    fbk__pool_lock(p);
    if (!h->in_retry) {
        h->in_retry = true;
        h->retry_next = p->retry;
        p->retry = h;
    }
    fbk__pool_unlock(p);
}

bool fbk__pool_link(fbk_pool *p, fbk_handle *h, bool resident, size_t w)
{
    fbk__pool_retain(p);
    evict_batch b = {.ndrop = 0};
    fbk__pool_lock(p);
    h->node.weight = w;
    fbk__policy_insert(&p->pol, &h->node, resident);
    atomic_fetch_add(&p->size, 1);
    after_change_locked(p, &b);
    if (resident && fbk__node_out(&h->node))
        try_evict_locked(p, h, &b); /* larger than the byte bound */
    fbk__pool_unlock(p);
    return finish_batch(p, &b);
}

void fbk__pool_unlink(fbk_pool *p, fbk_handle *h)
{
    evict_batch b = {.ndrop = 0};
    fbk__pool_lock(p);
    fbk__policy_remove(&p->pol, &h->node);
    evict_victims_locked(p, &b); /* none: a removal only makes room */
    if (h->in_retry) {
        fbk_handle **pp = &p->retry;
        while (*pp != h)
            pp = &(*pp)->retry_next;
        *pp = h->retry_next;
        h->in_retry = false;
    }
    atomic_fetch_sub(&p->size, 1);
    fbk__pool_unlock(p);
    (void)finish_batch(p, &b);
}

/* The end of an eviction: with the write's outcome, drop the object from
 * memory (rc == 0) or keep it and queue the item for a retry.  t is the new
 * token when this eviction wrote the value. */
static void evict_finish(fbk_handle *h, int rc, fbk__token *t)
{
    fbk_pool *p = h->pool;
    fbk_store *s = p->store;
    fbk__item_lock(h);
    if (t)
        h->tok = t;
    /* read before excl goes: the item's next eviction sets it anew */
    size_t bytes = h->evict_bytes;
    void *drop = NULL;
    if (rc == FBK_OK) {
        drop = h->obj;
        h->obj = NULL;
        fbk__pool_count_mem(p, -1, h->bytes);
    }
    h->excl = FBK__EX_NONE;
    pthread_cond_broadcast(&h->cv);
    fbk__item_unlock(h);
    if (drop) {
        p->codec.destroy(drop, p->codec.ctx);
        atomic_fetch_add_explicit(&s->n_evictions, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->n_evictions, 1, memory_order_relaxed);
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
        fbk__item_lock(h);
        write[k] = !h->tok;
        if (write[k])
            items[m++] = (fbk__store_item){.key = h->key, .codec = &h->pool->codec, .obj = h->obj};
        fbk__item_unlock(h);
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
