/* lru.c -- the segmented LRU list: one list cut into the front half
 * (FBK__SEG_FRONT: positions < mem_items/2, or a byte sum <= mem_bytes/2),
 * the back half (FBK__SEG_BACK: up to mem_items, mem_bytes) and "beyond"
 * (FBK__SEG_OUT: not kept in memory).  Each node knows its segment, so the
 * hot path (an access in the front half) reads one atomic byte and takes no
 * lock.  Every function here runs under the pool mutex.
 *
 * Invariant: segments are contiguous and fill in order: segment k+1 is
 * non-empty only when its first node would not fit in segment k.  Without a
 * byte bound (cap_bytes = SIZE_MAX) that is the position rule of the
 * contract: exactly mem_items/2 nodes in FRONT before any is in BACK.
 */
#include "fbk_internal.h"

static void set_seg(fbk__node *n, unsigned s)
{
    atomic_store_explicit(&n->seg, (unsigned char)s, memory_order_relaxed);
}

void fbk__lru_init(fbk__lru *l, size_t mem_items, size_t mem_bytes)
{
    l->head.prev = l->head.next = &l->head;
    l->cap_items[0] = mem_items / 2;
    l->cap_items[1] = mem_items - mem_items / 2;
    if (mem_items == SIZE_MAX)
        l->cap_items[0] = l->cap_items[1] = SIZE_MAX;
    l->cap_bytes[0] = mem_bytes == SIZE_MAX ? SIZE_MAX : mem_bytes / 2;
    l->cap_bytes[1] = mem_bytes == SIZE_MAX ? SIZE_MAX : mem_bytes - mem_bytes / 2;
    for (int i = 0; i < 3; i++) {
        l->count[i] = 0;
        l->bytes[i] = 0;
        l->first[i] = NULL;
    }
    l->fresh = 0;
    l->cursor = NULL;
}

static bool over(const fbk__lru *l, unsigned k)
{
    return l->count[k] > l->cap_items[k] || l->bytes[k] > l->cap_bytes[k];
}

static bool fits(const fbk__lru *l, unsigned k, const fbk__node *n)
{
    return l->count[k] < l->cap_items[k] && n->weight <= l->cap_bytes[k] - l->bytes[k];
}

/* The first node after segment k (of the next non-empty segment), or NULL. */
static fbk__node *after(fbk__lru *l, unsigned k)
{
    for (unsigned j = k + 1; j < 3; j++)
        if (l->first[j])
            return l->first[j];
    return NULL;
}

static void move_count(fbk__lru *l, const fbk__node *n, unsigned from, unsigned to)
{
    l->count[from]--;
    l->bytes[from] -= n->weight;
    l->count[to]++;
    l->bytes[to] += n->weight;
}

/* Segment k (non-empty) is over its bounds: its last node becomes the first
 * of k+1. */
static void spill_down(fbk__lru *l, unsigned k)
{
    fbk__node *nx = after(l, k);
    fbk__node *m = nx ? nx->prev : l->head.prev;
    set_seg(m, k + 1);
    move_count(l, m, k, k + 1);
    l->first[k + 1] = m;
    if (l->count[k] == 0)
        l->first[k] = NULL;
    if (k + 1 == FBK__SEG_OUT) {
        m->fresh = 1;
        l->fresh++;
    }
}

/* The node after segment k fits into it: it moves up. */
static void pull_up(fbk__lru *l, unsigned k, fbk__node *m)
{
    unsigned j = fbk__node_seg(m);
    set_seg(m, k);
    move_count(l, m, j, k);
    l->first[j] = l->count[j] ? m->next : NULL;
    if (!l->first[k])
        l->first[k] = m;
    if (j == FBK__SEG_OUT && m->fresh) {
        /* fresh nodes are a stack at the top of OUT: m was its top */
        m->fresh = 0;
        l->fresh--;
    }
}

/* Restores the invariant after one change. */
static void rebalance(fbk__lru *l)
{
    bool changed = true;
    while (changed) {
        changed = false;
        for (unsigned k = 0; k < 2; k++)
            while (l->count[k] > 0 && over(l, k)) {
                spill_down(l, k);
                changed = true;
            }
        for (unsigned k = 0; k < 2; k++) {
            fbk__node *m;
            while ((m = after(l, k)) && fits(l, k, m)) {
                pull_up(l, k, m);
                changed = true;
            }
        }
    }
}

/* A change starts: forget the victims of the last one. */
static void begin(fbk__lru *l)
{
    for (fbk__node *n = l->first[FBK__SEG_OUT]; l->fresh > 0; n = n->next) {
        n->fresh = 0;
        l->fresh--;
    }
    l->cursor = NULL;
}

/* A change ends: its victims are the first `fresh` nodes of OUT. */
static void end(fbk__lru *l) { l->cursor = l->fresh ? l->first[FBK__SEG_OUT] : NULL; }

static void link_after(fbk__node *pos, fbk__node *n)
{
    n->prev = pos;
    n->next = pos->next;
    pos->next->prev = n;
    pos->next = n;
}

void fbk__lru_push_front(fbk__lru *l, fbk__node *n)
{
    begin(l);
    link_after(&l->head, n);
    set_seg(n, FBK__SEG_FRONT);
    n->fresh = 0;
    l->count[0]++;
    l->bytes[0] += n->weight;
    l->first[0] = n;
    if (l->cap_bytes[0] == SIZE_MAX && l->cap_bytes[1] == SIZE_MAX) {
        /* Without a byte bound the cuts are positions, and the invariant
         * says BACK (OUT) held nodes only when FRONT (BACK) was full.  The
         * new node leaves FRONT at most one over: its last node becomes
         * BACK's first, which leaves BACK at most one over: its last becomes
         * OUT's first.  Nothing can be pulled up -- what rebalance() would
         * do, without its rounds of checks (the insert path). */
        if (over(l, 0)) {
            spill_down(l, 0);
            if (over(l, 1))
                spill_down(l, 1);
            /* the next insert spills FRONT's new last node: in a large pool
             * it was last touched long ago (a cache miss), so fetch it now */
            if (l->first[FBK__SEG_BACK]) /* (empty when BACK's share is 0) */
                __builtin_prefetch(l->first[FBK__SEG_BACK]->prev, 1);
        }
    } else {
        rebalance(l);
    }
    end(l);
}

void fbk__lru_push_back(fbk__lru *l, fbk__node *n)
{
    begin(l);
    unsigned s = FBK__SEG_FRONT;
    for (unsigned k = 0; k < 3; k++)
        if (l->first[k])
            s = k;
    while (s < FBK__SEG_OUT && !fits(l, s, n))
        s++;
    link_after(l->head.prev, n);
    set_seg(n, s);
    n->fresh = 0;
    l->count[s]++;
    l->bytes[s] += n->weight;
    if (!l->first[s])
        l->first[s] = n;
    end(l);
}

static void unlink_node(fbk__lru *l, fbk__node *n)
{
    unsigned s = fbk__node_seg(n);
    if (l->first[s] == n)
        l->first[s] = (l->count[s] > 1) ? n->next : NULL;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
    l->count[s]--;
    l->bytes[s] -= n->weight;
}

bool fbk__lru_promote(fbk__lru *l, fbk__node *n)
{
    /* Only the plain case: no byte bound and nothing beyond the cuts.  Then
     * FRONT is full (BACK is non-empty), so the move leaves FRONT one over
     * and its last node becomes BACK's first; BACK keeps its count, nothing
     * can be pulled up and nothing falls out: exactly what remove +
     * push_front would leave, in one step. */
    if (fbk__node_seg(n) != FBK__SEG_BACK || l->first[FBK__SEG_OUT] ||
        l->cap_bytes[0] != SIZE_MAX || l->cap_bytes[1] != SIZE_MAX)
        return false;
    begin(l);
    unlink_node(l, n);
    link_after(&l->head, n);
    set_seg(n, FBK__SEG_FRONT);
    l->count[0]++;
    l->bytes[0] += n->weight;
    l->first[0] = n;
    if (over(l, 0))
        spill_down(l, 0);
    end(l);
    return true;
}

void fbk__lru_remove(fbk__lru *l, fbk__node *n)
{
    begin(l);
    unlink_node(l, n);
    rebalance(l);
    end(l);
}

void fbk__lru_reweight(fbk__lru *l, fbk__node *n, size_t w)
{
    begin(l);
    unsigned s = fbk__node_seg(n);
    l->bytes[s] = l->bytes[s] - n->weight + w;
    n->weight = w;
    rebalance(l);
    end(l);
}

fbk__node *fbk__lru_victim(fbk__lru *l)
{
    fbk__node *n = l->cursor;
    if (!n)
        return NULL;
    /* the fresh nodes are the first of OUT, and OUT runs to the list's end */
    n->fresh = 0;
    l->fresh--;
    l->cursor = l->fresh ? n->next : NULL;
    return n;
}
