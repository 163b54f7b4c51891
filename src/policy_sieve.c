/* policy_sieve.c -- SIEVE (Zhang et al., NSDI '24): one FIFO of the values
 * in memory, newest first; a hit sets the node's visited bit (no lock, no
 * list change); to make room a hand walks from the oldest node towards the
 * newest, clearing visited bits, and evicts the first node that was not
 * visited, then stays where it stopped.  New and reloaded values enter at the
 * newest end.  Runs under the pool mutex. */
#include "fbk_internal.h"

void fbk__sieve_init(fbk__policy *pol)
{
    fbk__list_init(&pol->u.sieve.q);
    pol->u.sieve.hand = NULL;
}

void fbk__sieve_insert(fbk__policy *pol, fbk__node *n)
{
    atomic_store_explicit(&n->mark, 0, memory_order_relaxed);
    fbk__list_push_front(&pol->u.sieve.q, n);
    atomic_store_explicit(&n->seg, FBK__SEG_QUEUE, memory_order_relaxed);
}

/* The node after n towards the newest, or NULL past the newest. */
static fbk__node *newer(fbk__sieve *sv, fbk__node *n)
{
    return n->prev == &sv->q.head ? NULL : n->prev;
}

void fbk__sieve_remove(fbk__policy *pol, fbk__node *n)
{
    fbk__sieve *sv = &pol->u.sieve;
    if (fbk__node_seg(n) != FBK__SEG_QUEUE)
        return;
    if (sv->hand == n)
        sv->hand = newer(sv, n);
    fbk__list_remove(&sv->q, n);
    atomic_store_explicit(&n->seg, FBK__SEG_OUT, memory_order_relaxed);
}

fbk__node *fbk__sieve_victim(fbk__policy *pol)
{
    fbk__sieve *sv = &pol->u.sieve;
    if (sv->q.count == 0 || (sv->q.count <= pol->max_items && sv->q.bytes <= pol->max_bytes))
        return NULL;
    /* SIEVE inserts after it evicts; here the newest node has just been
     * inserted (or reloaded), so the hand passes over it. */
    fbk__node *newest = sv->q.count > 1 ? sv->q.head.next : NULL;
    fbk__node *n = sv->hand && sv->hand != newest ? sv->hand : fbk__list_oldest(&sv->q);
    /* Each step clears a bit; hits racing with the walk can set them again,
     * so after two rounds the hand takes what it points at. */
    for (size_t steps = 2 * sv->q.count; steps > 0; steps--) {
        if (!atomic_load_explicit(&n->mark, memory_order_relaxed))
            break;
        atomic_store_explicit(&n->mark, 0, memory_order_relaxed);
        n = newer(sv, n);
        if (!n || n == newest)
            n = fbk__list_oldest(&sv->q);
    }
    sv->hand = n;
    fbk__sieve_remove(pol, n); /* moves the hand on, to the next newer node */
    return n;
}
