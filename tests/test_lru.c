/* test_lru.c -- the segmented LRU: which item is written out, and when.
 * mem_items = 4 unless said otherwise: positions 0-1 are the front half,
 * 2-3 the back half, 4 and beyond are not kept in memory. */
#include "counting_backend.h"
#include "testutil.h"

#include <criterion/criterion.h>

#define N 64

static void touch(fbk_handle *h)
{
    const void *obj = NULL;
    int rc = fbk_load(h, &obj);
    cr_assert_eq(rc, 0, "fbk_load: %s (%s)", fbk_err_name(rc), fbk_errmsg());
    fbk_unload(h);
}

static int was_stored(fx *f, fbk_handle *h)
{
    fbk_key k = tc_key(h);
    return (int)counting_times_stored(f->cb, &k);
}

static void release_all(fbk_handle **h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fbk_handle_release(h[i]);
}

Test(lru, insert_makes_no_backend_call)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h[4];
    for (int i = 0; i < 4; i++)
        h[i] = tc_insert(f.p, 100, (uint64_t)i);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_total_calls(f.cb), 0, "%lu backend calls for 4 inserts into 4 slots",
                 counting_total_calls(f.cb));
    cr_assert_eq(fbk_pool_size(f.p), 4);
    release_all(h, 4);
    fx_close(&f);
}

Test(lru, loads_of_items_in_memory_make_no_backend_call)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h[4];
    for (int i = 0; i < 4; i++)
        h[i] = tc_insert(f.p, 100, (uint64_t)i);
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < 4; i++)
            cr_assert_eq(tc_check(h[i], 100, (uint64_t)i), 0);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_total_calls(f.cb), 0);
    release_all(h, 4);
    fx_close(&f);
}

Test(lru, one_insert_past_mem_items_writes_exactly_the_oldest_item)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h[5];
    for (int i = 0; i < 5; i++)
        h[i] = tc_insert(f.p, 100, (uint64_t)i);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1);
    cr_assert_eq(counting_stored_count(f.cb), 1);
    cr_assert_eq(was_stored(&f, h[0]), 1, "the item written is not the oldest one");
    cr_assert_eq(counting_total_calls(f.cb), 1, "backend calls besides the store");
    fbk_store_stats st;
    fbk_store_stats_get(f.s, &st);
    cr_assert_eq(st.stores, 1);
    cr_assert_eq(st.evictions, 1);
    release_all(h, 5);
    fx_close(&f);
}

/* The example of the contract: A,B,C,D; touch C (front: no move); touch B
 * (back: to front); insert E => exactly one store, of A.  Then load A => one
 * backend load, A goes to the front and the item at position 4 (C) is
 * written. */
Test(lru, contract_example_exact_counts)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *A = tc_insert(f.p, 100, 'A');
    fbk_handle *B = tc_insert(f.p, 100, 'B');
    fbk_handle *C = tc_insert(f.p, 100, 'C');
    fbk_handle *D = tc_insert(f.p, 100, 'D');
    touch(C);
    touch(B);
    fbk_handle *E = tc_insert(f.p, 100, 'E');
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1);
    cr_assert_eq(was_stored(&f, A), 1);
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 0);

    /* list is now E B D C | A (spilled) */
    cr_assert_eq(tc_check(A, 100, 'A'), 0);
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 1);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 2);
    cr_assert_eq(was_stored(&f, C), 1, "after A came back, C (position 4) should be written");
    cr_assert_eq(was_stored(&f, A), 1, "A was written twice");
    /* A is in memory again, C is not */
    const void *obj;
    cr_assert_eq(fbk_try_load(A, &obj), 0);
    fbk_unload(A);
    cr_assert_eq(fbk_try_load(C, &obj), FBK_EAGAIN);
    cr_assert_eq(fbk_pool_size(f.p), 5);
    fbk_handle *all[] = {A, B, C, D, E};
    release_all(all, 5);
    fx_close(&f);
}

/* D C B A: touching C (position 1, front half) must not move it.  Then E, F,
 * G push out A, B, C in that order -- if C had moved to the front, the third
 * item written would be D instead. */
Test(lru, access_in_front_half_moves_nothing)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h[7];
    for (int i = 0; i < 4; i++)
        h[i] = tc_insert(f.p, 100, (uint64_t)i);
    touch(h[2]);
    for (int i = 4; i < 7; i++) {
        h[i] = tc_insert(f.p, 100, (uint64_t)i);
        cr_assert_eq(fbk_store_drain(f.s), 0);
    }
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 3);
    cr_assert_eq(was_stored(&f, h[0]), 1);
    cr_assert_eq(was_stored(&f, h[1]), 1);
    cr_assert_eq(was_stored(&f, h[2]), 1, "C moved although it was in the front half");
    cr_assert_eq(was_stored(&f, h[3]), 0);
    release_all(h, 7);
    fx_close(&f);
}

/* D C B A: touching A (position 3, back half) moves it to the front, so the
 * next insert pushes out B, not A. */
Test(lru, access_in_back_half_moves_to_front)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h[5];
    for (int i = 0; i < 4; i++)
        h[i] = tc_insert(f.p, 100, (uint64_t)i);
    touch(h[0]);
    h[4] = tc_insert(f.p, 100, 4);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1);
    cr_assert_eq(was_stored(&f, h[1]), 1, "B should have been written");
    cr_assert_eq(was_stored(&f, h[0]), 0, "A was written although it had been moved to the front");
    release_all(h, 5);
    fx_close(&f);
}

Test(lru, try_load_in_back_half_also_moves_to_front)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h[5];
    for (int i = 0; i < 4; i++)
        h[i] = tc_insert(f.p, 100, (uint64_t)i);
    const void *obj;
    cr_assert_eq(fbk_try_load(h[0], &obj), 0);
    fbk_unload(h[0]);
    h[4] = tc_insert(f.p, 100, 4);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(was_stored(&f, h[1]), 1);
    cr_assert_eq(was_stored(&f, h[0]), 0);
    release_all(h, 5);
    fx_close(&f);
}

Test(lru, load_of_spilled_item_enters_front_and_pushes_out_one)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h[6];
    for (int i = 0; i < 6; i++) {
        h[i] = tc_insert(f.p, 100, (uint64_t)i);
        cr_assert_eq(fbk_store_drain(f.s), 0);
    }
    /* F E D C | B A */
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 2);
    cr_assert_eq(tc_check(h[0], 100, 0), 0);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    /* A F E D | C B */
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 1);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 3);
    cr_assert_eq(was_stored(&f, h[2]), 1, "C should have been pushed out");
    /* A is at the front now: two more inserts push out D and E, not A */
    fbk_handle *x = tc_insert(f.p, 100, 10);
    fbk_handle *y = tc_insert(f.p, 100, 11);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(was_stored(&f, h[3]), 1);
    cr_assert_eq(was_stored(&f, h[4]), 1);
    cr_assert_eq(was_stored(&f, h[0]), 1, "A was written again although it was already stored");
    fbk_handle_release(x);
    fbk_handle_release(y);
    release_all(h, 6);
    fx_close(&f);
}

Test(lru, item_already_in_spill_area_is_dropped_without_a_store)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h[5];
    h[0] = tc_insert(f.p, 100, 0);
    cr_assert_eq(fbk_write_now(h[0]), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1);
    for (int i = 1; i < 5; i++)
        h[i] = tc_insert(f.p, 100, (uint64_t)i);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1,
                 "an item already in the spill area was stored again");
    const void *obj;
    cr_assert_eq(fbk_try_load(h[0], &obj), FBK_EAGAIN, "the item was not dropped from memory");
    cr_assert_eq(tc_check(h[0], 100, 0), 0);
    release_all(h, 5);
    fx_close(&f);
}

Test(lru, pinned_item_is_written_at_its_last_unload)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h[5];
    h[0] = tc_insert(f.p, 100, 0);
    const void *o1, *o2;
    cr_assert_eq(fbk_load(h[0], &o1), 0);
    cr_assert_eq(fbk_load(h[0], &o2), 0);
    for (int i = 1; i < 5; i++)
        h[i] = tc_insert(f.p, 100, (uint64_t)i);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 0, "a pinned item was written out");
    cr_assert(tu_blob_check(o1, 100, 0));
    fbk_unload(h[0]);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 0, "written before the LAST unload");
    cr_assert(tu_blob_check(o2, 100, 0));
    fbk_unload(h[0]);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1);
    cr_assert_eq(was_stored(&f, h[0]), 1);
    for (int i = 1; i < 5; i++)
        cr_assert_eq(was_stored(&f, h[i]), 0);
    cr_assert_eq(tc_check(h[0], 100, 0), 0);
    release_all(h, 5);
    fx_close(&f);
}

Test(lru, many_inserts_keep_exactly_mem_items_in_memory)
{
    fx f = {0};
    fx_open(&f, 8);
    fbk_handle *h[N];
    for (int i = 0; i < N; i++)
        h[i] = tc_insert(f.p, 64, (uint64_t)i);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), N - 8);
    for (int i = 0; i < N - 8; i++)
        cr_assert_eq(was_stored(&f, h[i]), 1, "item %d", i);
    int in_mem = 0;
    for (int i = 0; i < N; i++) {
        const void *obj;
        int rc = fbk_try_load(h[i], &obj);
        if (rc == 0) {
            in_mem++;
            cr_assert_geq(i, N - 8, "old item %d still in memory", i);
            fbk_unload(h[i]);
        } else {
            cr_assert_eq(rc, FBK_EAGAIN);
        }
    }
    cr_assert_eq(in_mem, 8);
    cr_assert_eq(fbk_pool_size(f.p), N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(tc_check(h[i], 64, (uint64_t)i), 0, "item %d", i);
    release_all(h, N);
    fx_close(&f);
}

Test(lru, mem_items_1_keeps_only_the_newest)
{
    fx f = {0};
    fx_open(&f, 1);
    fbk_handle *h[3];
    for (int i = 0; i < 3; i++)
        h[i] = tc_insert(f.p, 10, (uint64_t)i);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 2);
    cr_assert_eq(was_stored(&f, h[0]), 1);
    cr_assert_eq(was_stored(&f, h[1]), 1);
    cr_assert_eq(tc_check(h[0], 10, 0), 0);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(was_stored(&f, h[2]), 1, "loading h0 should push out h2");
    release_all(h, 3);
    fx_close(&f);
}

Test(lru, register_adds_at_the_end_without_loading)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), 0);
    fbk_handle *src = tc_insert(f.p, 100, 42);
    cr_assert_eq(fbk_persist(src, loc), 0);
    fbk_key k = tc_key(src);
    fbk_handle_release(src);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    counting_reset(f.cb);

    fbk_handle *r = NULL;
    cr_assert_eq(fbk_register(f.p, loc, &k, &r), 0);
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REGISTER_KEY), 1);
    /* four inserts fill memory; the registered item is not in memory, so
     * nothing needs writing */
    fbk_handle *h[4];
    for (int i = 0; i < 4; i++)
        h[i] = tc_insert(f.p, 100, (uint64_t)i);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 0);
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 0);
    const void *obj;
    cr_assert_eq(fbk_try_load(r, &obj), FBK_EAGAIN);
    /* loading it brings it to the front and pushes out the oldest insert */
    cr_assert_eq(tc_check(r, 100, 42), 0);
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 1);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1);
    cr_assert_eq(was_stored(&f, h[0]), 1);
    fbk_handle_release(r);
    release_all(h, 4);
    fbk_location_close(loc);
    fx_close(&f);
}

/* Releases can pull a spilled item up into the front half.  Loading it back
 * is a load-from-backend, and those enter at the front.
 *   D C | B A  (B, A spilled) -- release D -->  C B | A
 *   load B: B enters at the front  ->  B C | A
 *   N1, N2, N3  ->  N3 N2 | N1 B | C A: C (never written) is written, B stays
 * (Were B left at position 1, N3 would push out B instead of C.) */
Test(lru, load_from_backend_of_item_in_front_half_enters_at_front)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h[6];
    for (int i = 0; i < 6; i++) {
        h[i] = tc_insert(f.p, 100, (uint64_t)i);
        cr_assert_eq(fbk_store_drain(f.s), 0);
    }
    /* F E D C | B A */
    fbk_handle *A = h[0], *B = h[1], *C = h[2], *D = h[3];
    cr_assert_eq(was_stored(&f, A), 1);
    cr_assert_eq(was_stored(&f, B), 1);
    fbk_handle_release(h[5]);
    fbk_handle_release(h[4]);
    fbk_handle_release(D);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    /* C B | A, B spilled at position 1 */
    cr_assert_eq(tc_check(B, 100, 1), 0);
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 1);
    fbk_handle *n[3];
    for (int i = 0; i < 3; i++) {
        n[i] = tc_insert(f.p, 100, 10 + (uint64_t)i);
        cr_assert_eq(fbk_store_drain(f.s), 0);
    }
    const void *obj;
    cr_assert_eq(was_stored(&f, C), 1, "C (position 4 if B entered at the front) not written");
    cr_assert_eq(fbk_try_load(B, &obj), 0, "B was dropped: the load left it at position 1");
    fbk_unload(B);
    fbk_handle *rest[] = {A, B, C, n[0], n[1], n[2]};
    release_all(rest, 6);
    fx_close(&f);
}

/* Registered items go to the end of the list, which in a near-empty pool is
 * the front half.  Loading one is a load-from-backend: it enters at the
 * front.   X Y (registered) -- load Y --> Y X -- A, B, C --> C B | A Y | X */
Test(lru, load_of_registered_item_enters_at_front)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), 0);
    fbk_key kx, ky;
    {
        fbk_handle *x = tc_insert(f.p, 100, 'X');
        fbk_handle *y = tc_insert(f.p, 100, 'Y');
        cr_assert_eq(fbk_persist(x, loc), 0);
        cr_assert_eq(fbk_persist(y, loc), 0);
        kx = tc_key(x);
        ky = tc_key(y);
        fbk_handle_release(x);
        fbk_handle_release(y);
        cr_assert_eq(fbk_store_drain(f.s), 0);
        cr_assert_eq(fbk_pool_size(f.p), 0);
    }
    fbk_handle *X = NULL, *Y = NULL;
    cr_assert_eq(fbk_register(f.p, loc, &kx, &X), 0);
    cr_assert_eq(fbk_register(f.p, loc, &ky, &Y), 0);
    cr_assert_eq(tc_check(Y, 100, 'Y'), 0);
    fbk_handle *n[3];
    for (int i = 0; i < 3; i++) {
        n[i] = tc_insert(f.p, 100, (uint64_t)i);
        cr_assert_eq(fbk_store_drain(f.s), 0);
    }
    const void *obj;
    cr_assert_eq(fbk_try_load(Y, &obj), 0, "Y dropped: its load did not bring it to the front");
    fbk_unload(Y);
    fbk_handle_release(X);
    fbk_handle_release(Y);
    release_all(n, 3);
    fbk_location_close(loc);
    fx_close(&f);
}

/* A pinned item beyond mem_items stays in memory, but does not stop the
 * next item pushed to position mem_items from being written out. */
Test(lru, pinned_item_beyond_does_not_block_the_next_eviction)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h[6];
    h[0] = tc_insert(f.p, 100, 0);
    const void *obj;
    cr_assert_eq(fbk_load(h[0], &obj), 0);
    for (int i = 1; i < 6; i++) {
        h[i] = tc_insert(f.p, 100, (uint64_t)i);
        cr_assert_eq(fbk_store_drain(f.s), 0);
    }
    /* F E D C | B A(pinned) */
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1);
    cr_assert_eq(was_stored(&f, h[1]), 1, "B should have been written");
    cr_assert_eq(was_stored(&f, h[0]), 0);
    fbk_unload(h[0]);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(was_stored(&f, h[0]), 1);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 2);
    release_all(h, 6);
    fx_close(&f);
}

/* fbk_insert, fbk_unload and fbk_handle_release do no I/O on the caller's
 * thread: with every store and remove held at the gate they still return
 * (if one did the write itself, the test would hang and time out). */
Test(lru, insert_unload_and_release_never_wait_for_backend_io, .timeout = 60)
{
    fx f = {0};
    fx_open(&f, 2);
    counting_gate_close(f.cb, CB_STORE);
    counting_gate_close(f.cb, CB_REMOVE);
    fbk_handle *h[4];
    h[0] = tc_insert(f.p, 10, 0);
    const void *obj;
    cr_assert_eq(fbk_load(h[0], &obj), 0);
    for (int i = 1; i < 4; i++)
        h[i] = tc_insert(f.p, 10, (uint64_t)i); /* pushes out h0 (pinned), then h1 */
    counting_gate_wait(f.cb, CB_STORE, 1);
    fbk_unload(h[0]); /* h0 is beyond mem_items: its write is queued, not done here */
    for (int i = 0; i < 4; i++)
        fbk_handle_release(h[i]);
    cr_assert_eq(counting_calls(f.cb, CB_REMOVE), 0);
    counting_gate_open(f.cb, CB_STORE);
    counting_gate_open(f.cb, CB_REMOVE);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_removed_count(f.cb), counting_stored_count(f.cb));
    cr_assert_eq(counting_spill_size(f.cb), 0);
    cr_assert_eq(fbk_pool_size(f.p), 0);
    fx_close(&f);
}
