/* test_item_memory.c -- where an item's memory comes from (issue 12).
 *
 * Items come from their pool's slab: blocks from the allocator table
 * (fbk_set_allocator), handed out item by item and given back to the
 * allocator when the pool is freed.  An eviction write takes a record from
 * the pool (the item carries no job); when none can be had (out of memory)
 * the value stays in memory -- nothing is lost, the call does not fail --
 * and a later change of the pool tries again. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdlib.h>

static atomic_long fail_next; /* fail this many of the next allocations */

static int should_fail(void)
{
    long n = atomic_load(&fail_next);
    while (n > 0)
        if (atomic_compare_exchange_weak(&fail_next, &n, n - 1))
            return 1;
    return 0;
}

static void install(void)
{
    tu_alloc_reset();
    tu_alloc_fail = should_fail;
    cr_assert_eq(fbk_set_allocator(&tu_counting_allocator), 0);
}


#define N 4096

Test(item_memory, items_come_from_a_slab_and_go_back_with_the_pool)
{
    install();
    fbk_store *s;
    cr_assert_eq(fbk_store_open(&s, "mem:", NULL), 0, "%s", fbk_errmsg());
    long before_pool = tu_alloc_live_get();
    fbk_pool *p;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2 * N), 0, "%s", fbk_errmsg());
    static fbk_blob *bs[N];
    static fbk_handle *hs[N];
    for (size_t i = 0; i < N; i++)
        bs[i] = tu_blob(64, i);
    unsigned long m0 = tu_alloc_calls_get();
    for (size_t i = 0; i < N; i++)
        cr_assert_eq(fbk_insert(p, bs[i], &hs[i]), 0, "%s", fbk_errmsg());
    unsigned long calls = tu_alloc_calls_get() - m0;
    /* a block per many items, not a malloc per item */
    cr_assert_leq(calls, N / 256, "%lu allocations for %d inserts", calls, N);
    for (size_t i = 0; i < N; i++) {
        const void *o;
        cr_assert_eq(fbk_load(hs[i], &o), 0);
        cr_assert(tu_blob_check(o, 64, i));
        fbk_unload(hs[i]);
    }
    /* the released items' memory is reused by the next inserts */
    for (size_t i = 0; i < N; i++)
        fbk_handle_release(hs[i]);
    for (size_t i = 0; i < N; i++)
        bs[i] = tu_blob(64, i);
    m0 = tu_alloc_calls_get();
    for (size_t i = 0; i < N; i++)
        cr_assert_eq(fbk_insert(p, bs[i], &hs[i]), 0, "%s", fbk_errmsg());
    cr_assert_eq(tu_alloc_calls_get() - m0, 0, "the freed items were not reused");
    for (size_t i = 0; i < N; i++)
        fbk_handle_release(hs[i]);
    /* every block goes back to the allocator with the pool */
    fbk_pool_release(p);
    cr_assert_eq(tu_alloc_live_get(), before_pool, "%ld blocks kept after the pool was freed",
                 tu_alloc_live_get() - before_pool);
    fbk_store_close(s);
    cr_assert_eq(tu_alloc_live_get(), 0);
    fbk_set_allocator(NULL);
}

static void expect_value(fbk_handle *h, uint64_t seed)
{
    const void *o;
    cr_assert_eq(fbk_load(h, &o), 0, "%s", fbk_errmsg());
    cr_assert(tu_blob_check(o, 64, seed), "the value of seed %llu changed",
              (unsigned long long)seed);
    fbk_unload(h);
}

Test(item_memory, eviction_without_a_record_keeps_the_value_and_tries_again)
{
    install();
    fbk_store *s;
    cr_assert_eq(fbk_store_open(&s, "mem:", NULL), 0, "%s", fbk_errmsg());
    fbk_pool *p;
    /* two in memory: the third insert pushes the first out */
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2), 0, "%s", fbk_errmsg());
    fbk_handle *h[4];
    fbk_blob *b[4];
    for (int i = 0; i < 4; i++)
        b[i] = tu_blob(64, (uint64_t)i);
    cr_assert_eq(fbk_insert(p, b[0], &h[0]), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_insert(p, b[1], &h[1]), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_store_drain(s), 0);

    /* the insert itself needs no allocation (its item comes from the slab
     * block of the first two); the eviction it starts gets no record */
    atomic_store(&fail_next, 1);
    cr_assert_eq(fbk_insert(p, b[2], &h[2]), 0, "%s", fbk_errmsg());
    cr_assert_eq(atomic_load(&fail_next), 0, "no allocation was failed");
    cr_assert_eq(fbk_store_drain(s), 0, "%s", fbk_errmsg());
    fbk_pool_stats st;
    fbk_pool_stats_get(p, &st);
    cr_assert_eq(st.items_in_memory, 3, "the value without a record left memory (%llu in memory, %llu evictions)", (unsigned long long)st.items_in_memory, (unsigned long long)st.evictions);
    cr_assert_eq(st.evictions, 0);
    expect_value(h[0], 0);

    /* memory again: the next change evicts its own victim and the one that
     * waited */
    cr_assert_eq(fbk_insert(p, b[3], &h[3]), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_store_drain(s), 0, "%s", fbk_errmsg());
    fbk_pool_stats_get(p, &st);
    cr_assert_eq(st.items_in_memory, 2, "%llu in memory", (unsigned long long)st.items_in_memory);
    cr_assert_eq(st.evictions, 2);
    for (int i = 0; i < 4; i++)
        expect_value(h[i], (uint64_t)i);
    for (int i = 0; i < 4; i++)
        fbk_handle_release(h[i]);
    fbk_pool_release(p);
    cr_assert_eq(fbk_store_drain(s), 0);
    fbk_store_close(s);
    cr_assert_eq(tu_alloc_live_get(), 0);
    fbk_set_allocator(NULL);
}
