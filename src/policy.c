/* policy.c -- the eviction policy of a pool: one of the segmented LRU
 * (lru.c), SIEVE (policy_sieve.c) and S3-FIFO (policy_s3fifo.c) behind one
 * small interface, and the plain list they share.  The pool (pool.c) owns the
 * policy and calls it under its mutex; only fbk__policy_hit (in the header)
 * runs without it.  A policy only orders items and says which value should
 * leave memory: the item's own state (pins, eviction writes) is item.c's
 * business. */
#include "fbk_internal.h"

void fbk__list_init(fbk__list *l)
{
    l->head.prev = l->head.next = &l->head;
    l->count = 0;
    l->bytes = 0;
}

void fbk__list_push_front(fbk__list *l, fbk__node *n)
{
    n->prev = &l->head;
    n->next = l->head.next;
    l->head.next->prev = n;
    l->head.next = n;
    l->count++;
    l->bytes += n->weight;
}

void fbk__list_remove(fbk__list *l, fbk__node *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
    l->count--;
    l->bytes -= n->weight;
}

void fbk__policy_init(fbk__policy *pol, fbk_policy kind, size_t mem_items, size_t mem_bytes)
{
    pol->kind = kind;
    pol->max_items = mem_items;
    pol->max_bytes = mem_bytes;
    switch (kind) {
    case FBK_POLICY_SIEVE:
        fbk__sieve_init(pol);
        break;
    case FBK_POLICY_S3FIFO:
        fbk__s3fifo_init(pol);
        break;
    default:
        fbk__lru_init(&pol->u.slru, mem_items, mem_bytes);
        break;
    }
}

static void set_out(fbk__node *n)
{
    atomic_store_explicit(&n->seg, FBK__SEG_OUT, memory_order_relaxed);
}

/* A value larger than the whole byte bound would push every other value
 * out: it is never admitted (it stays in memory only while pinned). */
static bool too_big(const fbk__policy *pol, const fbk__node *n)
{
    return n->weight > pol->max_bytes;
}

void fbk__policy_insert(fbk__policy *pol, fbk__node *n, bool resident)
{
    atomic_store_explicit(&n->mark, 0, memory_order_relaxed);
    if (pol->kind == FBK_POLICY_SLRU) {
        if (resident && !too_big(pol, n))
            fbk__lru_push_front(&pol->u.slru, n);
        else
            fbk__lru_push_back(&pol->u.slru, n);
        return;
    }
    n->prev = n->next = n;
    set_out(n);
    if (resident && !too_big(pol, n)) {
        if (pol->kind == FBK_POLICY_SIEVE)
            fbk__sieve_insert(pol, n);
        else
            fbk__s3fifo_insert(pol, n);
    }
}

bool fbk__policy_access(fbk__policy *pol, fbk__node *n, bool loaded)
{
    unsigned s = fbk__node_seg(n);
    if (pol->kind == FBK_POLICY_SLRU) {
        fbk__lru *l = &pol->u.slru;
        if ((s == FBK__SEG_FRONT && !loaded) || l->head.next == n)
            return false;
        if (!loaded && fbk__lru_promote(l, n))
            return true;
        fbk__lru_remove(l, n);
        if (too_big(pol, n))
            fbk__lru_push_back(l, n);
        else
            fbk__lru_push_front(l, n);
        return true;
    }
    if (s != FBK__SEG_OUT && s != FBK__SEG_GHOST) {
        (void)fbk__policy_hit(pol, n); /* resident already: just a hit */
        return false;
    }
    if (too_big(pol, n))
        return false;
    if (pol->kind == FBK_POLICY_SIEVE)
        fbk__sieve_insert(pol, n);
    else
        fbk__s3fifo_insert(pol, n);
    return true;
}

void fbk__policy_remove(fbk__policy *pol, fbk__node *n)
{
    switch (pol->kind) {
    case FBK_POLICY_SIEVE:
        fbk__sieve_remove(pol, n);
        break;
    case FBK_POLICY_S3FIFO:
        fbk__s3fifo_remove(pol, n);
        break;
    default:
        fbk__lru_remove(&pol->u.slru, n);
        break;
    }
}

/* The list a resident SIEVE/S3-FIFO node is on (NULL: none). */
static fbk__list *list_of(fbk__policy *pol, const fbk__node *n)
{
    switch (fbk__node_seg(n)) {
    case FBK__SEG_QUEUE:
        return &pol->u.sieve.q;
    case FBK__SEG_SMALL:
        return &pol->u.s3.small;
    case FBK__SEG_MAIN:
        return &pol->u.s3.main;
    case FBK__SEG_GHOST:
        return &pol->u.s3.ghost;
    default:
        return NULL;
    }
}

void fbk__policy_reweight(fbk__policy *pol, fbk__node *n, size_t w)
{
    if (pol->kind == FBK_POLICY_SLRU) {
        if (w > pol->max_bytes) {
            fbk__lru_remove(&pol->u.slru, n);
            n->weight = w;
            fbk__lru_push_back(&pol->u.slru, n); /* lands in OUT */
        } else {
            fbk__lru_reweight(&pol->u.slru, n, w);
        }
        return;
    }
    fbk__list *l = list_of(pol, n);
    if (l)
        l->bytes = l->bytes - n->weight + w;
    n->weight = w;
    if (too_big(pol, n) && l && l != &pol->u.s3.ghost) {
        fbk__policy_remove(pol, n); /* out: evicted once unpinned */
        set_out(n);
    }
}

fbk__node *fbk__policy_victim(fbk__policy *pol)
{
    switch (pol->kind) {
    case FBK_POLICY_SIEVE:
        return fbk__sieve_victim(pol);
    case FBK_POLICY_S3FIFO:
        return fbk__s3fifo_victim(pol);
    default:
        return fbk__lru_victim(&pol->u.slru);
    }
}
