/* item.c -- the item (struct fbk_handle): its state word and every
 * transition of it, its lifetime, and what an eviction does to it.
 *
 *   state  pins (low 32 bits) + MEM LOAD EVICT MUT STORING WAITERS NOREFS
 *   obj    the value in memory (MEM), or NULL   tok  its spill copy, or NULL
 *
 * Always obj || tok.  A pin (fbk_load, a task) is one atomic add on the
 * state word; the exclusive holders (LOAD: reads the value back; EVICT:
 * writes it out and drops it; MUT: fbk_load_mut) and STORING (a pinned
 * thread writes it out) are flags set by compare-and-swap.  Waiters sleep on
 * one of STRIPES shared condition variables chosen by the item's address.
 * The rules -- who may change which bit, the memory orders and why they
 * suffice, the lock order -- are in docs/design.md, "The item".
 *
 * Dependencies run one way: handle.c (the public API) -> item.c -> pool.c
 * (policy, retry list, promotion buffer) -> policy.c.  The pool never looks
 * at an item's state; item.c takes the pool mutex, asks the pool for its
 * victims and evicts them.
 */
#include "fbk_internal.h"

#include <sched.h>
#include <stdlib.h>

/* ------------------------------------------------------ thread ids */

static atomic_uint next_thread_id = 1;
static _Thread_local unsigned this_thread_id;

unsigned fbk__thread_id(void)
{
    while (this_thread_id == 0)
        this_thread_id = atomic_fetch_add_explicit(&next_thread_id, 1, memory_order_relaxed);
    return this_thread_id;
}

/* ------------------------------------------------- waiting stripes */

/* Waiters for an item's flags to clear park here: the mutex + condition
 * variable of the item's stripe.  A stripe's mutex is a leaf: nothing else
 * is locked while it is held, and it is never held across a wait on
 * anything but its own condition variable. */
#define STRIPES 64
typedef struct stripe {
    _Alignas(64) pthread_mutex_t mu;
    pthread_cond_t cv;
#ifndef NDEBUG
    _Atomic unsigned long mu_owner; /* lock checks: the holder's pthread_self(), or 0 */
#endif
} stripe;
static stripe stripes[STRIPES];
static pthread_once_t stripes_once = PTHREAD_ONCE_INIT;

_Thread_local unsigned fbk__stripes_held;

static void stripes_init(void)
{
    for (int i = 0; i < STRIPES; i++) {
        pthread_mutex_init(&stripes[i].mu, NULL);
        pthread_cond_init(&stripes[i].cv, NULL);
    }
}

static stripe *stripe_of(const fbk_handle *h)
{
    uintptr_t a = (uintptr_t)h;
    return &stripes[((a >> 6) ^ (a >> 12)) % STRIPES];
}

#ifndef NDEBUG
#define ASSERT_STRIPE_HELD(st)                                                                     \
    FBK__DEBUG_ASSERT(atomic_load_explicit(&(st)->mu_owner, memory_order_relaxed) == FBK__SELF(),  \
                      __func__, "called without the item's stripe mutex")
#else
#define ASSERT_STRIPE_HELD(st) ((void)0)
#endif

static stripe *stripe_lock(const fbk_handle *h)
{
    pthread_once(&stripes_once, stripes_init);
    FBK__DEBUG_ASSERT(fbk__stripes_held == 0, "stripe_lock",
                      "lock order: two item stripe mutexes held at once");
    stripe *st = stripe_of(h);
    pthread_mutex_lock(&st->mu);
    FBK__SET_OWNER(st, FBK__SELF());
#ifndef NDEBUG
    fbk__stripes_held++;
#endif
    return st;
}

static void stripe_unlock(stripe *st)
{
    ASSERT_STRIPE_HELD(st);
#ifndef NDEBUG
    fbk__stripes_held--;
#endif
    FBK__SET_OWNER(st, 0);
    pthread_mutex_unlock(&st->mu);
}

/* Sleeps until some flag in `mask` may have cleared (the caller looks
 * again).  Setting WAITERS under the stripe mutex, then looking at the
 * flags, closes the race with wake(): a holder that clears its flag after
 * our fetch_or sees WAITERS and must take the stripe mutex -- which we hold
 * until pthread_cond_wait releases it -- before it broadcasts. */
static void wait_while(fbk_handle *h, uint64_t mask)
{
    stripe *st = stripe_lock(h);
    uint64_t s = atomic_fetch_or_explicit(&h->state, FBK__ST_WAITERS, memory_order_seq_cst);
    if (s & mask) {
#ifndef NDEBUG
        fbk__stripes_held--;
#endif
        FBK__SET_OWNER(st, 0);
        pthread_cond_wait(&st->cv, &st->mu);
        FBK__SET_OWNER(st, FBK__SELF());
#ifndef NDEBUG
        fbk__stripes_held++;
#endif
    }
    stripe_unlock(st);
}

/* Called by whoever cleared a flag of a state that had WAITERS. */
static void wake(fbk_handle *h)
{
    stripe *st = stripe_lock(h);
    atomic_fetch_and_explicit(&h->state, ~FBK__ST_WAITERS, memory_order_relaxed);
    pthread_cond_broadcast(&st->cv);
    stripe_unlock(st);
}

/* Ends an exclusive hold: clears `clear`, sets `set` and adds `add` pins in
 * one step (release: the holder's writes to obj/tok/key/bytes are visible
 * to whoever sees the new flags), then wakes the waiters. */
static void release_flags(fbk_handle *h, uint64_t clear, uint64_t set, uint64_t add)
{
    uint64_t s = atomic_load_explicit(&h->state, memory_order_relaxed), n;
    do
        n = ((s & ~clear) | set) + add;
    while (!atomic_compare_exchange_weak_explicit(&h->state, &s, n, memory_order_acq_rel,
                                                  memory_order_relaxed));
    if (s & FBK__ST_WAITERS)
        wake(h);
}

static bool self_holds_mut(fbk_handle *h)
{
    return atomic_load_explicit(&FBK__MUT_OWNER(h), memory_order_relaxed) == fbk__thread_id();
}

/* --------------------------------------------------------- lifetime */

/* ------------------------------------------------- pool changes */

/* Most objects one LRU change drops on the calling thread; the rest of its
 * victims (a large value pushing out many small ones) go through a worker. */
#define DROP_MAX 8
/* How many items whose eviction write failed are retried per LRU change:
 * bounded, so a backend that keeps failing costs each insert O(1). */
#define RETRY_PER_CHANGE 2

/* What one pool change decided, acted on after the pool mutex is released:
 * objects to destroy (never under a lock: a codec's destroy may release
 * handles) and whether an eviction write was queued (for backpressure). */
typedef struct evict_batch {
    void *drop[DROP_MAX];
    int ndrop;
    bool queued;
} evict_batch;
/* (not `= {0}`: drop[] needs no zeroing, on the insert path) */
#define BATCH(b)                                                                                   \
    evict_batch b;                                                                                 \
    b.ndrop = 0;                                                                                   \
    b.queued = false

static void evict_job(fbk__job *job);
static void evict_many(fbk__job *first, size_t n);
static bool touch_locked(fbk_handle *h, bool loaded);

/* The bytes an eviction write of h is counted as for backpressure: a codec
 * with view holds its bytes, so its size() is cheap (none when stored). */
static size_t queued_bytes(fbk_pool *p, fbk_handle *h)
{
    return !h->tok && p->codec.view ? p->codec.size(h->obj, p->codec.ctx) : 0;
}

/* EVICT begins: h is in memory, unpinned and nobody holds it.  A value in
 * the spill area already is dropped right here (no write, no worker); one
 * that needs a write gets a job.  A pinned (or STORING) item gets WANTED
 * instead: its last unpin comes back here.  Pool mutex held (so h, found in
 * the pool's lists, is not freed meanwhile). */
static void try_evict_locked(fbk_pool *p, fbk_handle *h, evict_batch *b)
{
    FBK__ASSERT_POOL_HELD(p);
    uint64_t s = atomic_load_explicit(&h->state, memory_order_relaxed), n;
    do {
        if (!(s & FBK__ST_MEM) || (s & FBK__ST_EXCL))
            return; /* nothing in memory, or its holder looks again when done */
        if ((s & FBK__ST_PINS) || (s & FBK__ST_STORING)) {
            if (s & FBK__ST_WANTED)
                return;
            n = s | FBK__ST_WANTED;
        } else {
            n = (s | FBK__ST_EVICT) & ~FBK__ST_WANTED;
        }
    } while (!atomic_compare_exchange_weak_explicit(&h->state, &s, n, memory_order_acq_rel,
                                                    memory_order_relaxed));
    if (!(n & FBK__ST_EVICT))
        return;
    /* EVICT held: obj, tok and bytes are ours */
    if (h->tok && b->ndrop < DROP_MAX) {
        b->drop[b->ndrop++] = h->obj;
        h->obj = NULL;
        fbk__pool_count_mem(p, -1, FBK__ITEM_BYTES(h));
        release_flags(h, FBK__ST_EVICT | FBK__ST_MEM, 0, 0);
        return;
    }
    /* a write (or a drop past DROP_MAX) on a worker: it needs a record */
    fbk__evict_rec *r = fbk__pool_rec_get_locked(p, h);
    if (r && fbk__item_try_ref(h)) {
        fbk_store *st = p->store;
        fbk__store_evict_queued(st, queued_bytes(p, h));
        r->job.run = evict_job;
        r->job.run_many = FBK__STORE_MANY(st) ? evict_many : NULL;
        fbk__workers_submit(&st->workers, &r->job);
        b->queued = true;
        return;
    }
    /* retiring (its end drops the value), or no record to be had (out of
     * memory: the value stays in memory, and a later change tries again) */
    if (r)
        fbk__pool_rec_put(p, r);
    release_flags(h, FBK__ST_EVICT, 0, 0);
    if (!r && !h->node.in_retry)
        fbk__pool_defer_locked(p, h);
}

/* After a policy change: evict the values the policy pushed out. */
static void evict_victims_locked(fbk_pool *p, evict_batch *b)
{
    fbk_handle *h;
    while ((h = fbk__pool_victim_locked(p)))
        try_evict_locked(p, h, b);
}

/* ... and then give a few earlier failures another try. */
static void after_change_locked(fbk_pool *p, evict_batch *b)
{
    unsigned deferred = p->ndeferred; /* not those this change defers */
    evict_victims_locked(p, b);
    for (int i = 0; i < RETRY_PER_CHANGE && p->retry; i++) {
        fbk_handle *h = fbk__pool_retry_pop_locked(p);
        if (!h)
            break;
        if (fbk__node_out(&h->node))
            try_evict_locked(p, h, b);
    }
    /* evictions that found no record: out of memory then, maybe not now */
    for (unsigned i = 0; i < RETRY_PER_CHANGE && i < deferred; i++) {
        fbk_handle *h = fbk__pool_deferred_pop_locked(p);
        if (!h)
            break;
        if (fbk__node_out(&h->node))
            try_evict_locked(p, h, b);
    }
}

/* Takes the pool mutex and applies the promotions hits recorded without
 * it, in order, before the caller's change. */
static void pool_lock(fbk_pool *p, evict_batch *b)
{
    fbk__pool_lock(p);
    fbk_handle *h;
    while ((h = fbk__pool_promo_pop(p)))
        if (fbk__policy_access(&p->pol, &h->node, false))
            evict_victims_locked(p, b);
}

/* After the pool mutex is released: destroy what was dropped.  Returns
 * whether an eviction write was queued. */
static bool pool_unlock(fbk_pool *p, evict_batch *b)
{
    fbk__pool_unlock(p);
    fbk_store *s = p->store;
    for (int i = 0; i < b->ndrop; i++)
        p->codec.destroy(b->drop[i], p->codec.ctx);
    if (b->ndrop) {
        atomic_fetch_add_explicit(&s->n_evictions, (uint_fast64_t)b->ndrop, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->n_evictions, (uint_fast64_t)b->ndrop, memory_order_relaxed);
    }
    return b->queued;
}

/* h may have fallen out of the policy while held: evict it now if so.  The
 * caller holds a reference. */
static void evict_if_out(fbk_handle *h)
{
    fbk_pool *p = h->pool;
    if (!fbk__node_out(&h->node))
        return;
    BATCH(b);
    pool_lock(p, &b);
    if (fbk__node_out(&h->node))
        try_evict_locked(p, h, &b);
    (void)pool_unlock(p, &b); /* never waits: unloads and workers get here */
}

/* Pool mutex held, h new (not linked): its fields. */
static void item_init(fbk_pool *p, fbk_handle *h)
{
    atomic_init(&h->state, 0);
    atomic_init(&h->refs, 1);
    atomic_init(&h->users, 1);
    atomic_init(&FBK__MUT_OWNER(h), 0);
    h->pool = p;
    FBK__ITEM_SET_MAGIC(h, FBK__MAGIC_HANDLE);
    h->node.prev = h->node.next = NULL;
    h->node.weight = 0;
    atomic_init(&h->node.seg, FBK__SEG_OUT);
    atomic_init(&h->node.mark, 0);
    h->node.fresh = 0;
    h->node.in_retry = 0;
    h->obj = NULL;
    h->tok = NULL;
}

/* One pool mutex hold: the item's memory from the pool's slab, the link,
 * and the evictions the link causes. */
fbk_handle *fbk__item_create(fbk_pool *p, void *obj, size_t w, fbk__token *tok,
                             const fbk_key *key, bool *queued)
{
    BATCH(b);
    pool_lock(p, &b);
    fbk_handle *h = fbk__pool_item_alloc_locked(p);
    if (h) {
        item_init(p, h);
        h->obj = obj;
        h->tok = tok;
        h->key = *key;
        if (obj) {
            atomic_init(&h->state, FBK__ST_MEM);
            fbk__pool_count_mem(p, +1, w);
        }
        if (fbk__pool_link_locked(p, h, obj != NULL, obj ? w : 0))
            fbk__pool_retain(p); /* the items' reference */
        after_change_locked(p, &b);
        if (obj && fbk__node_out(&h->node))
            try_evict_locked(p, h, &b); /* larger than the byte bound */
    }
    *queued = pool_unlock(p, &b);
    return h;
}

bool fbk__item_new_many(fbk_pool *p, fbk_handle **hs, size_t n)
{
    fbk__pool_lock(p);
    size_t i = 0;
    for (; i < n; i++) {
        if (!(hs[i] = fbk__pool_item_alloc_locked(p)))
            break;
        item_init(p, hs[i]);
    }
    if (i < n)
        for (size_t j = 0; j < i; j++) {
            fbk__pool_item_free_locked(p, hs[j]);
            hs[j] = NULL;
        }
    fbk__pool_unlock(p);
    return i == n;
}

void fbk__item_discard(fbk_handle *h)
{
    fbk_pool *p = h->pool;
    FBK__ITEM_SET_MAGIC(h, FBK__MAGIC_DEAD);
    fbk__pool_lock(p);
    fbk__pool_item_free_locked(p, h);
    fbk__pool_unlock(p);
}

bool fbk__item_link(fbk_handle *h, bool resident, size_t w)
{
    fbk_pool *p = h->pool;
    BATCH(b);
    pool_lock(p, &b);
    if (fbk__pool_link_locked(p, h, resident, w))
        fbk__pool_retain(p); /* the items' reference */
    after_change_locked(p, &b);
    if (resident && fbk__node_out(&h->node))
        try_evict_locked(p, h, &b); /* larger than the byte bound */
    return pool_unlock(p, &b);
}

bool fbk__item_touch(fbk_handle *h, bool loaded)
{
    if (!loaded) {
        if (fbk__policy_hit(&h->pool->pol, &h->node))
            return false; /* recorded without a list change, no lock */
        return fbk__item_touch_moved(h);
    }
    return touch_locked(h, true);
}

bool fbk__item_touch_moved(fbk_handle *h)
{
    fbk_pool *p = h->pool;
    /* A hit in SLRU's back segment moves the item to the front: recorded
     * now, applied under the mutex before the next change.  (Only without
     * a byte bound: there a move can push values out, which the caller must
     * see happen now.) */
    if (p->pol.kind == FBK_POLICY_SLRU && fbk__node_seg(&h->node) == FBK__SEG_BACK &&
        p->pol.max_bytes == SIZE_MAX && fbk__pool_promo_push(p, h))
        return false;
    return touch_locked(h, false);
}

/* An access that moves the item (or, `loaded`, of a value just read back:
 * load_value weighed it already): under the pool mutex. */
static bool touch_locked(fbk_handle *h, bool loaded)
{
    fbk_pool *p = h->pool;
    BATCH(b);
    pool_lock(p, &b);
    if (fbk__policy_access(&p->pol, &h->node, loaded))
        after_change_locked(p, &b);
    if (fbk__node_out(&h->node))
        try_evict_locked(p, h, &b); /* held by the caller: marks it WANTED */
    return pool_unlock(p, &b);
}

static void retire(fbk_handle *h)
{
    fbk_pool *p = h->pool;
    uint64_t s = atomic_load_explicit(&h->state, memory_order_acquire);
    /* a pin or a job keeps the item, fbk_load_mut does not */
    FBK__DEBUG_ASSERT(!(s & FBK__ST_MUT), "fbk_handle_release",
                      "the last reference was released while fbk_load_mut held the item");
    /* once h is unlinked, another item's end may release the items' pool
     * reference: this one keeps p until we are done with it */
    fbk__pool_retain(p);
    BATCH(b);
    pool_lock(p, &b);
    bool last = fbk__pool_unlink_locked(p, h);
    /* unreachable now (a concurrent try_evict_locked ended under the pool
     * mutex): no one else looks at it, and its memory goes back to the slab
     * in the same hold */
    s = atomic_load_explicit(&h->state, memory_order_acquire);
    fbk__token *tok = h->tok;
    void *obj = (s & FBK__ST_MEM) ? h->obj : NULL;
    size_t bytes = FBK__ITEM_BYTES(h);
    FBK__ITEM_SET_MAGIC(h, FBK__MAGIC_DEAD);
    fbk__pool_item_free_locked(p, h);
    (void)pool_unlock(p, &b);
    if (tok)
        fbk__token_release(tok); /* the spill copy goes in the background */
    if (obj) {
        fbk__pool_count_mem(p, -1, bytes);
        p->codec.destroy(obj, p->codec.ctx);
    }
    if (last)
        fbk__pool_release_ref(p); /* the items' */
    fbk__pool_release_ref(p);
}

bool fbk__item_try_ref(fbk_handle *h)
{
    int n = atomic_load_explicit(&h->refs, memory_order_relaxed);
    while (n > 0)
        if (atomic_compare_exchange_weak_explicit(&h->refs, &n, n + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    return false;
}

void fbk__item_ref(fbk_handle *h) { atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed); }

/* The last reference sets NOREFS; whoever leaves the state with no pins and
 * NOREFS -- this call, or the last unpin -- frees the item. */
void fbk__item_unref(fbk_handle *h)
{
    if (atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) != 1)
        return;
    uint64_t s = atomic_fetch_or_explicit(&h->state, FBK__ST_NOREFS, memory_order_acq_rel);
    if ((s & FBK__ST_PINS) == 0)
        retire(h);
}

/* ------------------------------------------------------------- pins */

static void unpin_slow(fbk_handle *h, uint64_t s);

void fbk__item_unpin(fbk_handle *h)
{
    /* the common case: neither WANTED nor NOREFS, so this unpin does
     * nothing but drop the pin (one CAS; a failed one goes the long way) */
    uint64_t s = atomic_load_explicit(&h->state, memory_order_relaxed);
    if (!(s & (FBK__ST_WANTED | FBK__ST_NOREFS)) && (s & FBK__ST_PINS) &&
        atomic_compare_exchange_weak_explicit(&h->state, &s, s - FBK__ST_PIN, memory_order_acq_rel,
                                              memory_order_relaxed))
        return;
    unpin_slow(h, s);
}

static void unpin_slow(fbk_handle *h, uint64_t s)
{
    uint64_t n;
    bool ref = false, tried = false;
    for (;;) {
        FBK__DEBUG_ASSERT((s & FBK__ST_PINS) > 0, "fbk_unload",
                          "the item is not pinned: no fbk_load/fbk_try_load is left to end");
        bool last = (s & FBK__ST_PINS) == 1;
        if (last && (s & FBK__ST_WANTED) && !(s & FBK__ST_NOREFS) && !tried) {
            /* the policy wants the value out: evict it after this unpin,
             * which needs the item alive -- a reference (none if the item
             * is retiring: then its end drops the value) */
            tried = true;
            ref = fbk__item_try_ref(h);
            s = atomic_load_explicit(&h->state, memory_order_relaxed);
            continue;
        }
        n = s - FBK__ST_PIN;
        if (last)
            n &= ~FBK__ST_WANTED;
        if (atomic_compare_exchange_weak_explicit(&h->state, &s, n, memory_order_acq_rel,
                                                  memory_order_relaxed))
            break;
    }
    bool last = (s & FBK__ST_PINS) == 1;
    if (ref) {
        if (last && (s & FBK__ST_WANTED))
            evict_if_out(h);
        fbk__item_unref(h);
    } else if (last && (s & FBK__ST_NOREFS)) {
        retire(h);
    }
}

/* Reads the value back from the spill area: LOAD is held.  Ends LOAD --
 * with a pin added when `pin` (in one step, so nothing can evict the value
 * between the read and the caller's pin).  A new weight is given to the
 * policy first, under the pool mutex while LOAD still keeps everyone off the
 * item (node.weight is the item's `bytes`). */
static int load_value(fbk_handle *h, bool pin, bool *queued)
{
    fbk_pool *p = h->pool;
    fbk__token *t = h->tok;
    void *obj = NULL;
    int rc = t ? fbk__token_load(p->store, t, &p->codec, &obj)
               : fbk_error_set(FBK_EIO, 0, "item has neither a value nor a spill copy");
    if (rc == FBK_OK) {
        size_t w = fbk__pool_weigh(p, obj);
        h->obj = obj;
        if (FBK__ITEM_BYTES(h) != w) {
            /* out of memory until now: its weight counted in no bound */
            BATCH(b);
            pool_lock(p, &b);
            fbk__policy_reweight(&p->pol, &h->node, w);
            evict_victims_locked(p, &b);
            if (pool_unlock(p, &b) && queued)
                *queued = true;
        }
        fbk__pool_count_mem(p, +1, w);
        atomic_fetch_add_explicit(&p->n_misses, 1, memory_order_relaxed);
        release_flags(h, FBK__ST_LOAD, FBK__ST_MEM, pin ? FBK__ST_PIN : 0);
    } else {
        release_flags(h, FBK__ST_LOAD, 0, 0);
    }
    return rc;
}

int fbk__item_pin_value(fbk_handle *h, bool wait, bool *loaded, const char *fn)
{
    uint64_t s = atomic_load_explicit(&h->state, memory_order_acquire);
    for (;;) {
        if ((s & (FBK__ST_MEM | FBK__ST_EXCL)) == FBK__ST_MEM) {
            if (atomic_compare_exchange_weak_explicit(&h->state, &s, s + FBK__ST_PIN,
                                                      memory_order_acquire, memory_order_acquire))
                return FBK_OK;
            continue;
        }
        if ((s & FBK__ST_MUT) && self_holds_mut(h))
            return fbk_error_set(FBK_EBUSY, 0, "%s: this thread holds fbk_load_mut on the item",
                                 fn);
        if (!wait)
            return fbk_error_set(FBK_EAGAIN, 0, "%s: the item is %s", fn,
                                 (s & FBK__ST_EVICT) ? "being evicted" : "not in memory");
        if (s & FBK__ST_EXCL) {
            wait_while(h, FBK__ST_EXCL);
            s = atomic_load_explicit(&h->state, memory_order_acquire);
            continue;
        }
        if (!atomic_compare_exchange_weak_explicit(&h->state, &s, s | FBK__ST_LOAD,
                                                   memory_order_acquire, memory_order_acquire))
            continue;
        int rc = load_value(h, true, NULL);
        if (rc == FBK_OK)
            *loaded = true;
        return rc;
    }
}

bool fbk__item_spilled(fbk_handle *h)
{
    /* MEM clear: obj is NULL, so tok is set (obj || tok always); LOAD
     * reads it back without changing it */
    return !(atomic_load_explicit(&h->state, memory_order_acquire) & FBK__ST_MEM);
}

int fbk__item_pin(fbk_handle *h)
{
    uint64_t s = atomic_load_explicit(&h->state, memory_order_acquire);
    for (;;) {
        if ((s & FBK__ST_MUT) && self_holds_mut(h))
            return fbk_error_set(FBK_EBUSY, 0, "this thread holds fbk_load_mut on the item");
        if (!(s & (FBK__ST_EVICT | FBK__ST_MUT))) {
            if (atomic_compare_exchange_weak_explicit(&h->state, &s, s + FBK__ST_PIN,
                                                      memory_order_acquire, memory_order_acquire))
                return FBK_OK;
            continue;
        }
        wait_while(h, FBK__ST_EVICT | FBK__ST_MUT);
        s = atomic_load_explicit(&h->state, memory_order_acquire);
    }
}

int fbk__item_fill(fbk_handle *h)
{
    bool loaded = false;
    /* pinned: EVICT and MUT cannot start, only LOAD */
    for (;;) {
        uint64_t s = atomic_load_explicit(&h->state, memory_order_acquire);
        if (s & FBK__ST_MEM)
            break;
        if (s & FBK__ST_LOAD) {
            wait_while(h, FBK__ST_LOAD);
            continue;
        }
        if (atomic_compare_exchange_strong_explicit(&h->state, &s, s | FBK__ST_LOAD,
                                                    memory_order_acquire, memory_order_relaxed)) {
            int rc = load_value(h, false, NULL);
            if (rc)
                return rc;
            loaded = true;
        }
    }
    (void)fbk__item_touch(h, loaded); /* on a worker: never waits */
    return FBK_OK;
}

/* -------------------------------------------------------------- MUT */

int fbk__item_mut_begin(fbk_handle *h, bool try_only, void **obj, const char *fn)
{
    bool loaded = false, queued = false;
    uint64_t s = atomic_load_explicit(&h->state, memory_order_acquire);
    for (;;) {
        if ((s & FBK__ST_PINS) || (s & (FBK__ST_STORING | FBK__ST_MUT)))
            return fbk_error_set(FBK_EBUSY, 0, "%s: the item is %s", fn,
                                 (s & FBK__ST_MUT) ? "already held by fbk_load_mut" : "pinned");
        if ((s & (FBK__ST_LOAD | FBK__ST_EVICT)) || !(s & FBK__ST_MEM)) {
            if (try_only)
                return fbk_error_set(FBK_EAGAIN, 0, "%s: the item is %s", fn,
                                     (s & FBK__ST_MEM) ? "being evicted" : "not in memory");
            if (s & (FBK__ST_LOAD | FBK__ST_EVICT)) {
                wait_while(h, FBK__ST_LOAD | FBK__ST_EVICT);
            } else if (atomic_compare_exchange_strong_explicit(&h->state, &s, s | FBK__ST_LOAD,
                                                               memory_order_acquire,
                                                               memory_order_relaxed)) {
                int rc = load_value(h, false, &queued);
                if (rc)
                    return rc;
                loaded = true;
            }
            s = atomic_load_explicit(&h->state, memory_order_acquire);
            continue;
        }
        if (atomic_compare_exchange_weak_explicit(&h->state, &s, s | FBK__ST_MUT,
                                                  memory_order_acq_rel, memory_order_acquire))
            break;
    }
    atomic_store_explicit(&FBK__MUT_OWNER(h), fbk__thread_id(), memory_order_relaxed);
    fbk__token *old = h->tok;
    h->tok = NULL;
    stripe *st = stripe_lock(h); /* fbk__item_key copies under it */
    fbk_key_generate(&h->key);
    stripe_unlock(st);
    *obj = h->obj;
    if (old)
        fbk__token_release(old); /* the old value's spill copy goes in the background */
    if ((fbk__item_touch(h, loaded) || queued) && !try_only)
        fbk__store_backpressure(h->pool->store);
    return FBK_OK;
}

void fbk__item_mut_end(fbk_handle *h)
{
    fbk_pool *p = h->pool;
    uint64_t s = atomic_load_explicit(&h->state, memory_order_acquire);
    bool was = (s & FBK__ST_MUT) != 0;
    FBK__DEBUG_ASSERT(was, "fbk_unload_mut", "no fbk_load_mut/fbk_make_mut holds the item");
    if (!was)
        return;
    if (p->track_bytes) {
        /* the caller may have resized the value: weigh it again and tell
         * the policy while MUT still keeps everyone else off it */
        size_t w = fbk__pool_weigh(p, h->obj), old = FBK__ITEM_BYTES(h);
        if (w != old) {
            BATCH(b);
            pool_lock(p, &b);
            atomic_fetch_add_explicit(&p->n_mem_bytes, w - old, memory_order_relaxed);
            fbk__policy_reweight(&p->pol, &h->node, w);
            after_change_locked(p, &b);
            (void)pool_unlock(p, &b); /* never waits */
        }
    }
    atomic_store_explicit(&FBK__MUT_OWNER(h), 0, memory_order_relaxed);
    release_flags(h, FBK__ST_MUT, 0, 0);
    evict_if_out(h); /* pushed out while held (or by its new weight) */
}

void fbk__item_key(fbk_handle *h, fbk_key *out)
{
    stripe *st = stripe_lock(h);
    *out = h->key;
    stripe_unlock(st);
}

/* ---------------------------------------------------------- STORING */

int fbk__item_ensure_stored(fbk_handle *h, fbk__token **tok, fbk_key *key)
{
    fbk_pool *p = h->pool;
    uint64_t s = atomic_load_explicit(&h->state, memory_order_acquire);
    for (;;) {
        if (!(s & FBK__ST_STORING)) {
            if (atomic_compare_exchange_weak_explicit(&h->state, &s, s | FBK__ST_STORING,
                                                      memory_order_acq_rel, memory_order_acquire))
                break;
            continue;
        }
        wait_while(h, FBK__ST_STORING);
        s = atomic_load_explicit(&h->state, memory_order_acquire);
    }
    /* pinned + STORING: tok, obj and key are stable (a LOAD may set obj,
     * but only of an item that has tok) */
    int rc = FBK_OK;
    if (!h->tok && !(s & FBK__ST_MEM)) {
        rc = fbk_error_set(FBK_EIO, 0, "item has neither a value nor a spill copy");
    } else if (!h->tok) {
        fbk__token *t = NULL;
        rc = fbk__token_store(p->store, &h->key, &p->codec, h->obj, &t);
        if (rc == FBK_OK)
            h->tok = t;
    }
    if (rc == FBK_OK) {
        if (tok) {
            fbk__token_retain(h->tok);
            *tok = h->tok;
        }
        if (key)
            *key = h->key;
    }
    release_flags(h, FBK__ST_STORING, 0, 0);
    return rc;
}

int fbk__item_from_token(fbk_pool *p, fbk__token *t, const fbk_key *key, fbk_handle **out)
{
    bool queued;
    fbk_handle *h = fbk__item_create(p, NULL, 0, t, key, &queued);
    if (!h) {
        fbk__token_release(t);
        return fbk_error_set(FBK_ENOMEM, 0, "cannot allocate an item");
    }
    *out = h;
    return FBK_OK;
}

int fbk__item_persist_pinned(fbk_handle *h, fbk_location *loc)
{
    /* not fbk_handle_key: a task's worker gets here after the user may have
     * released the last handle reference */
    fbk_key cur;
    fbk__item_key(h, &cur);
    if (fbk_location_contains(loc, &cur)) {
        fbk__item_unpin(h);
        return FBK_OK;
    }
    fbk__token *t = NULL;
    fbk_key key;
    int rc = fbk__item_ensure_stored(h, &t, &key);
    fbk__item_unpin(h);
    if (rc)
        return rc;
    rc = fbk__location_persist(loc, &key);
    fbk__token_release(t);
    return rc;
}

/* ------------------------------------------------------------ EVICT */

/* The end of an eviction: with the write's outcome, drop the object from
 * memory (rc == 0) or keep it and put the item, with its record r, on the
 * retry list.  t is the new token when this eviction wrote the value;
 * `bytes` what the write was counted as.  Ends the job's reference. */
static void evict_finish(fbk__evict_rec *r, int rc, fbk__token *t, size_t bytes)
{
    fbk_handle *h = r->item;
    fbk_pool *p = h->pool;
    fbk_store *s = p->store;
    if (t)
        h->tok = t;
    void *drop = NULL;
    if (rc == FBK_OK) {
        drop = h->obj;
        h->obj = NULL;
        fbk__pool_count_mem(p, -1, FBK__ITEM_BYTES(h));
    }
    release_flags(h, FBK__ST_EVICT | (rc == FBK_OK ? FBK__ST_MEM : 0), 0, 0);
    if (drop) {
        p->codec.destroy(drop, p->codec.ctx);
        atomic_fetch_add_explicit(&s->n_evictions, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->n_evictions, 1, memory_order_relaxed);
    }
    /* FBK_EINVAL is final (a value larger than the backend can hold):
     * retrying it on every LRU change would only fail again.  The item
     * stays in memory; it is written again only when it is next pushed out
     * of the pool's memory. */
    if (rc) {
        atomic_fetch_add_explicit(&s->n_evict_fail, 1, memory_order_relaxed);
        fbk__store_report(s, rc);
    }
    /* the record goes on the retry list, or back, before the reference
     * ends: the item's reference keeps the pool, and so the record's slab */
    if (rc && rc != FBK_EINVAL)
        fbk__pool_evict_failed(p, r);
    else
        fbk__pool_rec_put(p, r);
    fbk__store_evict_done(s, bytes);
    fbk__item_unref(h);
}

/* The eviction writes of n jobs queued together (linked through next), on a
 * worker.  Each item is held exclusively (EVICT: no pins can start, its
 * object stays put); those not yet stored are written -- through the
 * backend's store_many when it has one -- and then dropped from memory.  A
 * failed write keeps its object in memory: nothing is lost, and the item is
 * retried on a later LRU change. */
static void evict_many(fbk__job *first, size_t n)
{
    fbk__evict_rec *rs[FBK__EVICT_BATCH];
    bool write[FBK__EVICT_BATCH];
    size_t bytes[FBK__EVICT_BATCH];
    fbk__store_item items[FBK__EVICT_BATCH];
    size_t m = 0, k = 0;
    for (fbk__job *j = first; j && k < n && k < FBK__EVICT_BATCH; j = j->next, k++) {
        fbk__evict_rec *r = (fbk__evict_rec *)j; /* the job is the record's first member */
        fbk_handle *h = r->item;
        rs[k] = r;
        write[k] = !h->tok;
        bytes[k] = queued_bytes(h->pool, h);
        if (write[k])
            items[m++] = (fbk__store_item){.key = h->key, .codec = &h->pool->codec, .obj = h->obj};
    }
    if (m > 0)
        fbk__token_store_many(rs[0]->item->pool->store, items, m);
    for (size_t i = 0, w = 0; i < k; i++) {
        fbk__store_item *it = write[i] ? &items[w++] : NULL;
        int rc = it ? it->rc : FBK_OK;
        evict_finish(rs[i], rc, rc == FBK_OK && it ? it->tok : NULL, bytes[i]);
    }
}

static void evict_job(fbk__job *job) { evict_many(job, 1); }
