/* pool.c -- fbk_pool: one codec, one eviction policy (policy.c: the
 * segmented LRU of the original FBPool, SIEVE or S3-FIFO), the list of items
 * whose eviction write failed, the buffer of promotions that hits recorded
 * without the mutex, and the pool's statistics.  The pool says which items
 * should leave memory; it never touches an item's state (item.c does, and
 * calls in here -- never the other way round). */
#include "fbk_internal.h"

#include <stdlib.h>
#include <string.h>

/* AddressSanitizer builds: a piece on a slab's free list (and the unused
 * rest of a block) is poisoned, so a use of an item after its last release
 * is reported as it is for malloc'd memory. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define SLAB_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define SLAB_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define SLAB_POISON(p, n) ((void)(p), (void)(n))
#define SLAB_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define node_item(n) ((fbk_handle *)((char *)(n)-offsetof(fbk_handle, node)))

/* ------------------------------------------------------------ slabs */

/* Pieces per block: an item block is ~88 KiB, a record block 2 KiB (one
 * malloc chunk each, below glibc's mmap threshold). */
#define ITEMS_PER_BLOCK 1024
#define RECS_PER_BLOCK 64
/* a block starts with the link to the next one, padded to 16 bytes */
#define BLOCK_HDR 16

static void slab_init(fbk__slab *sl, size_t size, size_t per_block)
{
    sl->blocks = sl->free = NULL;
    sl->bump = sl->end = NULL;
    sl->size = (size + 7) & ~(size_t)7; /* items and records need 8-byte alignment */
    sl->per_block = per_block;
}

static void *slab_alloc(fbk__slab *sl)
{
    void *x = sl->free;
    if (x) {
        SLAB_UNPOISON(x, sl->size);
        memcpy(&sl->free, x, sizeof(void *));
        return x;
    }
    if (sl->bump == sl->end) {
        char *b = fbk__malloc(BLOCK_HDR + sl->size * sl->per_block);
        if (!b)
            return NULL;
        memcpy(b, &sl->blocks, sizeof(void *));
        sl->blocks = b;
        sl->bump = b + BLOCK_HDR;
        sl->end = sl->bump + sl->size * sl->per_block;
        SLAB_POISON(sl->bump, sl->size * sl->per_block);
    }
    x = sl->bump;
    sl->bump += sl->size;
    SLAB_UNPOISON(x, sl->size);
    return x;
}

static void slab_free(fbk__slab *sl, void *x)
{
    memcpy(x, &sl->free, sizeof(void *));
    sl->free = x;
    SLAB_POISON(x, sl->size);
}

static void slab_destroy(fbk__slab *sl)
{
    void *b = sl->blocks;
    while (b) {
        void *next;
        memcpy(&next, b, sizeof next);
        SLAB_UNPOISON(b, BLOCK_HDR + sl->size * sl->per_block);
        fbk__free(b);
        b = next;
    }
    sl->blocks = sl->free = NULL;
    sl->bump = sl->end = NULL;
}

fbk_handle *fbk__pool_item_alloc_locked(fbk_pool *p)
{
    FBK__ASSERT_POOL_HELD(p);
    return slab_alloc(&p->items); /* item.c sets every field */
}

void fbk__pool_item_free_locked(fbk_pool *p, fbk_handle *h)
{
    FBK__ASSERT_POOL_HELD(p);
    /* the link overwrites `state`; a debug build's magic (DEAD) stays, so
     * a use after the last release is still recognised until reuse */
    slab_free(&p->items, h);
}

fbk__evict_rec *fbk__pool_rec_get_locked(fbk_pool *p, fbk_handle *h)
{
    FBK__ASSERT_POOL_HELD(p);
    if (!p->recs.free) /* take what the workers gave back, all at once */
        p->recs.free = atomic_exchange_explicit(&p->recs_back, NULL, memory_order_acquire);
    fbk__evict_rec *r = slab_alloc(&p->recs);
    if (r)
        *r = (fbk__evict_rec){.item = h};
    return r;
}

/* A Treiber stack with one consumer (the mutex holder takes it whole with
 * an exchange), so no ABA: a record pushed here is not reused before that
 * exchange.  The link is the record's first word (job.run), as on the free
 * list. */
void fbk__pool_rec_put(fbk_pool *p, fbk__evict_rec *r)
{
    fbk__evict_rec *head = atomic_load_explicit(&p->recs_back, memory_order_relaxed);
    do
        memcpy(r, &head, sizeof head);
    while (!atomic_compare_exchange_weak_explicit(&p->recs_back, &head, r, memory_order_release,
                                                  memory_order_relaxed));
}

static int pool_new(fbk_pool **out, fbk_store *s, const fbk_codec *codec, size_t mem_items,
                    size_t mem_bytes, fbk_policy policy, const char *fn)
{
    if (!out || !s || !codec)
        return fbk_error_set(FBK_EINVAL, 0, "%s: NULL argument", fn);
    if (!codec->size || !codec->encode || !codec->decode || !codec->destroy)
        return fbk_error_set(FBK_EINVAL, 0, "%s: codec needs size, encode, decode and destroy", fn);
    fbk_pool *p = fbk__calloc(1, sizeof *p);
    if (!p)
        return fbk_error_set(FBK_ENOMEM, 0, "cannot allocate a pool");
    atomic_init(&p->refs, 1);
    atomic_init(&p->size, 0);
    for (int i = 0; i < FBK__HIT_STRIPES; i++)
        atomic_init(&p->n_hits[i].n, 0);
    atomic_init(&p->promo_tail, 0);
    for (size_t i = 0; i < FBK__PROMO_SLOTS; i++) {
        atomic_init(&p->promo[i].seq, i);
        p->promo[i].item = NULL;
    }
    atomic_init(&p->n_misses, 0);
    atomic_init(&p->n_evictions, 0);
    atomic_init(&p->n_mem_items, 0);
    atomic_init(&p->n_mem_bytes, 0);
    p->store = s;
    p->codec = *codec;
    /* a codec with view holds its bytes, so its size() is a field read */
    p->track_bytes = mem_bytes != 0 || codec->view != NULL;
    slab_init(&p->items, sizeof(fbk_handle), ITEMS_PER_BLOCK);
    slab_init(&p->recs, sizeof(fbk__evict_rec), RECS_PER_BLOCK);
    atomic_init(&p->recs_back, NULL);
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
    for (int i = 0; i < FBK__HIT_STRIPES; i++)
        out->hits += atomic_load_explicit(&p->n_hits[i].n, memory_order_relaxed);
    out->misses = atomic_load_explicit(&p->n_misses, memory_order_relaxed);
    out->evictions = atomic_load_explicit(&p->n_evictions, memory_order_relaxed);
    out->items_in_memory = atomic_load_explicit(&p->n_mem_items, memory_order_relaxed);
    out->bytes_in_memory = atomic_load_explicit(&p->n_mem_bytes, memory_order_relaxed);
}

size_t fbk__pool_weigh(fbk_pool *p, const void *obj)
{
    return p->track_bytes ? p->codec.size(obj, p->codec.ctx) : 0;
}

_Thread_local unsigned fbk__hit_stripe;

unsigned fbk__hit_stripe_init(void)
{
    /* owned stripes are handed out once per thread, never taken back (a
     * thread-exit hook in a library that may be unloaded is not worth it) */
    static atomic_uint owned_next, shared_next;
    unsigned i = atomic_load_explicit(&owned_next, memory_order_relaxed);
    while (i < FBK__HIT_OWNED)
        if (atomic_compare_exchange_weak_explicit(&owned_next, &i, i + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return fbk__hit_stripe = (i + 1) | FBK__HIT_MINE;
    i = atomic_fetch_add_explicit(&shared_next, 1, memory_order_relaxed) % FBK__HIT_SHARED;
    return fbk__hit_stripe = FBK__HIT_OWNED + i + 1;
}

size_t fbk_pool_size(const fbk_pool *p) { return p ? atomic_load(&p->size) : 0; }

void fbk__pool_retain(fbk_pool *p) { atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed); }

void fbk__pool_release_ref(fbk_pool *p)
{
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
        return;
    fbk_store *s = p->store;
    /* no item is left (they held a reference), so no record is in use */
    slab_destroy(&p->items);
    slab_destroy(&p->recs);
    pthread_mutex_destroy(&p->mu);
    fbk__free(p);
    fbk__store_release(s);
}

void fbk_pool_release(fbk_pool *p)
{
    if (p)
        fbk__pool_release_ref(p);
}

/* ------------------------------------------------ promotion buffer */

/* A bounded multi-producer ring (after D. Vyukov's bounded MPMC queue):
 * slot i is free for the producer at position pos when its seq == pos,
 * and holds a promotion for the consumer at position pos when seq == pos+1;
 * the consumer frees it for the next round by setting seq = pos + SLOTS.
 * A producer that reserved a slot but has not filled it yet stops the
 * consumer there: the promotions behind it wait for the next drain, as if
 * their hits came a moment later.  Producers hold a pin on the item until
 * their slot is filled, so an item's entries are all visible by the time it
 * can be freed; fbk__pool_unlink_locked clears the ones still queued. */
bool fbk__pool_promo_push(fbk_pool *p, fbk_handle *h)
{
    size_t pos = atomic_load_explicit(&p->promo_tail, memory_order_relaxed);
    fbk__promo_slot *slot;
    for (;;) {
        slot = &p->promo[pos % FBK__PROMO_SLOTS];
        size_t seq = atomic_load_explicit(&slot->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)pos;
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&p->promo_tail, &pos, pos + 1,
                                                      memory_order_relaxed, memory_order_relaxed))
                break;
        } else if (dif < 0) {
            return false; /* full */
        } else {
            pos = atomic_load_explicit(&p->promo_tail, memory_order_relaxed);
        }
    }
    slot->item = h;
    atomic_store_explicit(&slot->seq, pos + 1, memory_order_release);
    return true;
}

fbk_handle *fbk__pool_promo_pop(fbk_pool *p)
{
    FBK__ASSERT_POOL_HELD(p);
    for (;;) {
        size_t pos = p->promo_head;
        fbk__promo_slot *slot = &p->promo[pos % FBK__PROMO_SLOTS];
        if (atomic_load_explicit(&slot->seq, memory_order_acquire) != pos + 1)
            return NULL; /* empty, or the next slot is still being filled */
        fbk_handle *h = slot->item;
        slot->item = NULL;
        atomic_store_explicit(&slot->seq, pos + FBK__PROMO_SLOTS, memory_order_release);
        p->promo_head = pos + 1;
        if (h)
            return h;
    }
}

/* --------------------------------------------------- list changes */

/* size changes only under the mutex: a load and a store, no locked
 * instruction (fbk_pool_size reads it without the mutex) */
bool fbk__pool_link_locked(fbk_pool *p, fbk_handle *h, bool resident, size_t w)
{
    FBK__ASSERT_POOL_HELD(p);
    h->node.weight = w;
    fbk__policy_insert(&p->pol, &h->node, resident);
    size_t n = atomic_load_explicit(&p->size, memory_order_relaxed);
    atomic_store_explicit(&p->size, n + 1, memory_order_relaxed);
    return n == 0;
}

bool fbk__pool_unlink_locked(fbk_pool *p, fbk_handle *h)
{
    FBK__ASSERT_POOL_HELD(p);
    fbk__policy_remove(&p->pol, &h->node);
    if (h->node.in_retry == FBK__RETRY_DEFERRED) {
        unsigned i = 0;
        while (p->deferred[i] != h)
            i++;
        p->ndeferred--;
        memmove(&p->deferred[i], &p->deferred[i + 1], (p->ndeferred - i) * sizeof p->deferred[0]);
        h->node.in_retry = 0;
    } else if (h->node.in_retry) {
        fbk__evict_rec **pp = &p->retry;
        while ((*pp)->item != h)
            pp = (fbk__evict_rec **)&(*pp)->job.next;
        fbk__evict_rec *r = *pp;
        *pp = (fbk__evict_rec *)r->job.next;
        slab_free(&p->recs, r);
        h->node.in_retry = 0;
    }
    /* promotions of h still queued behind a slot being filled */
    size_t tail = atomic_load_explicit(&p->promo_tail, memory_order_relaxed);
    for (size_t pos = p->promo_head; pos != tail; pos++) {
        fbk__promo_slot *slot = &p->promo[pos % FBK__PROMO_SLOTS];
        if (atomic_load_explicit(&slot->seq, memory_order_acquire) == pos + 1 && slot->item == h)
            slot->item = NULL;
    }
    size_t n = atomic_load_explicit(&p->size, memory_order_relaxed);
    atomic_store_explicit(&p->size, n - 1, memory_order_relaxed);
    return n == 1;
}

fbk_handle *fbk__pool_victim_locked(fbk_pool *p)
{
    FBK__ASSERT_POOL_HELD(p);
    fbk__node *n;
    while ((n = fbk__policy_victim(&p->pol)))
        if (!n->in_retry)
            return node_item(n);
    return NULL;
}

fbk_handle *fbk__pool_retry_pop_locked(fbk_pool *p)
{
    FBK__ASSERT_POOL_HELD(p);
    fbk__evict_rec *r = p->retry;
    if (!r)
        return NULL;
    p->retry = (fbk__evict_rec *)r->job.next;
    fbk_handle *h = r->item;
    slab_free(&p->recs, r);
    h->node.in_retry = 0;
    return h;
}

void fbk__pool_evict_failed(fbk_pool *p, fbk__evict_rec *r)
{
    fbk__pool_lock(p);
    fbk_handle *h = r->item;
    if (!h->node.in_retry) {
        h->node.in_retry = FBK__RETRY_LIST;
        r->job.next = (fbk__job *)p->retry;
        p->retry = r;
    } else {
        slab_free(&p->recs, r); /* on the list already (an earlier failure) */
    }
    fbk__pool_unlock(p);
}

void fbk__pool_defer_locked(fbk_pool *p, fbk_handle *h)
{
    FBK__ASSERT_POOL_HELD(p);
    if (h->node.in_retry || p->ndeferred == FBK__DEFER_SLOTS)
        return; /* full: h stays in memory until the policy next pushes it out */
    p->deferred[p->ndeferred++] = h;
    h->node.in_retry = FBK__RETRY_DEFERRED;
}

fbk_handle *fbk__pool_deferred_pop_locked(fbk_pool *p)
{
    FBK__ASSERT_POOL_HELD(p);
    if (p->ndeferred == 0)
        return NULL;
    fbk_handle *h = p->deferred[0];
    p->ndeferred--;
    memmove(&p->deferred[0], &p->deferred[1], p->ndeferred * sizeof p->deferred[0]);
    h->node.in_retry = 0;
    return h;
}
