/* lru.c -- the segmented LRU list: one list cut into the front half
 * (positions < mem_items/2), the back half (< mem_items) and "beyond"
 * (not kept in memory).  Each node knows its segment, so the hot path (an
 * access in the front half) reads one atomic byte and takes no lock.
 *
 * Invariant: segments are contiguous and fill in order: segment k+1 is
 * non-empty only when segment k holds cap[k] nodes. */
#include "fbk_internal.h"

static void set_seg(fbk__lru_node *n, unsigned s)
{
    atomic_store_explicit(&n->seg, (unsigned char)s, memory_order_relaxed);
}

void fbk__lru_init(fbk__lru *l, size_t mem_items)
{
    l->head.prev = l->head.next = &l->head;
    l->cap[0] = mem_items / 2;
    l->cap[1] = mem_items - mem_items / 2;
    for (int i = 0; i < 3; i++) {
        l->count[i] = 0;
        l->first[i] = NULL;
    }
    l->len = 0;
}

/* The last node of segment k (which must be non-empty). */
static fbk__lru_node *seg_last(fbk__lru *l, unsigned k)
{
    for (unsigned j = k + 1; j < 3; j++)
        if (l->first[j])
            return l->first[j]->prev;
    return l->head.prev;
}

/* Segment k overflowed by one: its last node becomes the first of k+1. */
static void spill_down(fbk__lru *l, unsigned k)
{
    fbk__lru_node *m = seg_last(l, k);
    set_seg(m, k + 1);
    l->count[k]--;
    l->count[k + 1]++;
    l->first[k + 1] = m;
    if (l->count[k] == 0)
        l->first[k] = NULL;
}

/* Segment k lost a node: the first node of k+1 moves up into it. */
static void pull_up(fbk__lru *l, unsigned k)
{
    fbk__lru_node *m = l->first[k + 1];
    set_seg(m, k);
    l->count[k]++;
    l->count[k + 1]--;
    l->first[k + 1] = l->count[k + 1] ? m->next : NULL;
    if (!l->first[k])
        l->first[k] = m;
}

static void link_after(fbk__lru_node *pos, fbk__lru_node *n)
{
    n->prev = pos;
    n->next = pos->next;
    pos->next->prev = n;
    pos->next = n;
}

void fbk__lru_push_front(fbk__lru *l, fbk__lru_node *n)
{
    link_after(&l->head, n);
    set_seg(n, 0);
    l->count[0]++;
    l->first[0] = n;
    l->len++;
    for (unsigned k = 0; k < 2; k++)
        if (l->count[k] > l->cap[k])
            spill_down(l, k);
}

void fbk__lru_push_back(fbk__lru *l, fbk__lru_node *n)
{
    size_t pos = l->len;
    unsigned s = pos < l->cap[0] ? 0 : pos < l->cap[0] + l->cap[1] ? 1 : 2;
    link_after(l->head.prev, n);
    set_seg(n, s);
    l->count[s]++;
    if (!l->first[s])
        l->first[s] = n;
    l->len++;
}

void fbk__lru_remove(fbk__lru *l, fbk__lru_node *n)
{
    unsigned s = fbk__lru_seg(n);
    if (l->first[s] == n)
        l->first[s] = (l->count[s] > 1) ? n->next : NULL;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
    l->count[s]--;
    l->len--;
    for (unsigned k = s; k < 2; k++)
        if (l->count[k] < l->cap[k] && l->count[k + 1] > 0)
            pull_up(l, k);
}
