/* test_lru_promote.c -- fbk__lru_promote (a back-half hit moved to the front
 * in one step) leaves the segmented LRU exactly as fbk__lru_remove +
 * fbk__lru_push_front would: same order, same segments, same victims.  Two
 * lists of the same nodes take the same random operations, one promoting
 * through the shortcut, the other the long way. */
#include "../src/fbk_internal.h"

#include <criterion/criterion.h>
#include <string.h>

enum { N = 40 };

typedef struct twin {
    fbk__lru l;
    fbk__node n[N];
    bool in[N];
} twin;

static void init(twin *t, size_t mem)
{
    memset(t, 0, sizeof *t);
    fbk__lru_init(&t->l, mem, SIZE_MAX);
    for (int i = 0; i < N; i++)
        atomic_init(&t->n[i].seg, FBK__SEG_OUT);
}

/* Drains the victims of the last change into v (indexes), returns how many. */
static int victims(twin *t, int *v)
{
    int k = 0;
    fbk__node *n;
    while ((n = fbk__lru_victim(&t->l)))
        v[k++] = (int)(n - t->n);
    return k;
}

static void same(twin *a, twin *b)
{
    fbk__node *x = a->l.head.next, *y = b->l.head.next;
    while (x != &a->l.head) {
        cr_assert_neq(y, &b->l.head, "list lengths differ");
        cr_assert_eq(x - a->n, y - b->n, "order differs");
        cr_assert_eq(fbk__node_seg(x), fbk__node_seg(y), "segment of node %d differs",
                     (int)(x - a->n));
        x = x->next;
        y = y->next;
    }
    cr_assert_eq(y, &b->l.head, "list lengths differ");
    for (int s = 0; s < 3; s++)
        cr_assert_eq(a->l.count[s], b->l.count[s], "segment %d counts differ", s);
}

Test(lru_promote, same_as_remove_and_push_front)
{
    static twin a, b;
    for (size_t mem = 2; mem <= 12; mem++) { /* mem 1: BACK holds the only node */
        init(&a, mem);
        init(&b, mem);
        uint64_t rng = 0x1234567 + mem;
        int promoted = 0;
        for (int step = 0; step < 4000; step++) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            int i = (int)(rng % (mem + 2)), op = (int)((rng >> 8) % 4);
            int va[N], vb[N];
            if (!a.in[i]) {
                if (op == 0) {
                    fbk__lru_push_back(&a.l, &a.n[i]);
                    fbk__lru_push_back(&b.l, &b.n[i]);
                } else {
                    fbk__lru_push_front(&a.l, &a.n[i]);
                    fbk__lru_push_front(&b.l, &b.n[i]);
                }
                a.in[i] = b.in[i] = true;
            } else if (op == 0) {
                fbk__lru_remove(&a.l, &a.n[i]);
                fbk__lru_remove(&b.l, &b.n[i]);
                a.in[i] = b.in[i] = false;
            } else if (fbk__node_seg(&a.n[i]) != FBK__SEG_FRONT && a.l.head.next != &a.n[i]) {
                if (fbk__lru_promote(&a.l, &a.n[i])) {
                    promoted++;
                } else {
                    fbk__lru_remove(&a.l, &a.n[i]);
                    fbk__lru_push_front(&a.l, &a.n[i]);
                }
                fbk__lru_remove(&b.l, &b.n[i]);
                fbk__lru_push_front(&b.l, &b.n[i]);
            }
            int ka = victims(&a, va), kb = victims(&b, vb);
            cr_assert_eq(ka, kb, "mem %zu step %d: %d victims against %d", mem, step, ka, kb);
            for (int k = 0; k < ka; k++)
                cr_assert_eq(va[k], vb[k]);
            same(&a, &b);
        }
        cr_assert_gt(promoted, 0, "mem %zu: the shortcut was never taken", mem);
    }
}
