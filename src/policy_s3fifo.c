/* policy_s3fifo.c -- S3-FIFO (Yang et al., SOSP '23): three FIFOs.
 *   SMALL  new values (10% of the bounds): most are used once and leave
 *          from here, so one-off scans never reach MAIN;
 *   MAIN   values used again while in SMALL, or reloaded soon after they
 *          left it; a node at MAIN's old end that was used since it was last
 *          looked at goes round again (its frequency, 0..3, drops by one);
 *   GHOST  items recently evicted from SMALL (their values are not in
 *          memory), as many as MAIN holds: reloading one enters MAIN.
 * A hit only counts the node's frequency (no lock, no list change).
 *
 * The paper evicts before it inserts; the pool inserts first and then asks
 * for victims.  So that the order makes no difference, the node inserted
 * last is passed over once by the victim search: otherwise a reload that
 * entered MAIN at frequency 0 is the victim as soon as the search has gone
 * round MAIN once (every node there used since), and on a loop a little
 * larger than the cache MAIN never keeps what it admitted.
 * Runs under the pool mutex. */
#include "fbk_internal.h"

static void set_seg(fbk__node *n, unsigned s)
{
    atomic_store_explicit(&n->seg, (unsigned char)s, memory_order_relaxed);
}

static size_t share(size_t max, unsigned percent)
{
    if (max == SIZE_MAX)
        return SIZE_MAX;
    size_t s = max / 100 * percent + max % 100 * percent / 100;
    return s ? s : 1;
}

void fbk__s3fifo_init(fbk__policy *pol)
{
    fbk__s3fifo *q = &pol->u.s3;
    fbk__list_init(&q->small);
    fbk__list_init(&q->main);
    fbk__list_init(&q->ghost);
    q->small_items = share(pol->max_items, 10);
    q->small_bytes = share(pol->max_bytes, 10);
    q->ghost_items = pol->max_items == SIZE_MAX ? SIZE_MAX : pol->max_items - q->small_items;
    q->ghost_bytes = pol->max_bytes == SIZE_MAX ? SIZE_MAX : pol->max_bytes - q->small_bytes;
    q->newest = NULL;
}

static fbk__list *list_of(fbk__s3fifo *q, const fbk__node *n)
{
    switch (fbk__node_seg(n)) {
    case FBK__SEG_SMALL:
        return &q->small;
    case FBK__SEG_MAIN:
        return &q->main;
    case FBK__SEG_GHOST:
        return &q->ghost;
    default:
        return NULL;
    }
}

void fbk__s3fifo_remove(fbk__policy *pol, fbk__node *n)
{
    fbk__list *l = list_of(&pol->u.s3, n);
    if (pol->u.s3.newest == n)
        pol->u.s3.newest = NULL;
    if (l) {
        fbk__list_remove(l, n);
        set_seg(n, FBK__SEG_OUT);
    }
}

void fbk__s3fifo_insert(fbk__policy *pol, fbk__node *n)
{
    fbk__s3fifo *q = &pol->u.s3;
    bool ghost = fbk__node_seg(n) == FBK__SEG_GHOST;
    fbk__s3fifo_remove(pol, n);
    atomic_store_explicit(&n->mark, 0, memory_order_relaxed);
    fbk__list_push_front(ghost ? &q->main : &q->small, n);
    set_seg(n, ghost ? FBK__SEG_MAIN : FBK__SEG_SMALL);
    q->newest = n;
}

static void to_ghost(fbk__s3fifo *q, fbk__node *n)
{
    if (q->newest == n)
        q->newest = NULL;
    fbk__list_remove(&q->small, n);
    fbk__list_push_front(&q->ghost, n);
    set_seg(n, FBK__SEG_GHOST);
    while (q->ghost.count > 0 && (q->ghost.count > q->ghost_items || q->ghost.bytes > q->ghost_bytes)) {
        fbk__node *g = fbk__list_oldest(&q->ghost);
        fbk__list_remove(&q->ghost, g);
        set_seg(g, FBK__SEG_OUT);
    }
}

static bool small_full(const fbk__s3fifo *q)
{
    return q->small.count >= q->small_items || q->small.bytes >= q->small_bytes;
}

fbk__node *fbk__s3fifo_victim(fbk__policy *pol)
{
    fbk__s3fifo *q = &pol->u.s3;
    size_t items = q->small.count + q->main.count;
    if (items == 0 ||
        (items <= pol->max_items && q->small.bytes + q->main.bytes <= pol->max_bytes))
        return NULL;
    /* Every step moves a node or lowers a frequency; hits racing with the
     * loop can raise them again, so it is bounded and then takes the
     * oldest node as it is. */
    for (size_t steps = 4 * items + 4;; steps--) {
        if (q->small.count > 0 && (small_full(q) || q->main.count == 0)) {
            fbk__node *t = fbk__list_oldest(&q->small);
            if (steps > 0 && atomic_load_explicit(&t->mark, memory_order_relaxed) > 0) {
                /* used again while in SMALL: promoted */
                fbk__list_remove(&q->small, t);
                atomic_store_explicit(&t->mark, 0, memory_order_relaxed);
                fbk__list_push_front(&q->main, t);
                set_seg(t, FBK__SEG_MAIN);
                continue;
            }
            to_ghost(q, t);
            return t;
        }
        fbk__node *t = fbk__list_oldest(&q->main);
        unsigned f = atomic_load_explicit(&t->mark, memory_order_relaxed);
        if (steps > 0 && f > 0) {
            atomic_store_explicit(&t->mark, (unsigned char)(f - 1), memory_order_relaxed);
            fbk__list_remove(&q->main, t);
            fbk__list_push_front(&q->main, t);
            continue;
        }
        if (t == q->newest) {
            q->newest = NULL;
            if (steps > 0 && q->main.count > 1) { /* passed over once: see the top */
                fbk__list_remove(&q->main, t);
                fbk__list_push_front(&q->main, t);
                continue;
            }
        }
        fbk__list_remove(&q->main, t);
        set_seg(t, FBK__SEG_OUT);
        return t;
    }
}
