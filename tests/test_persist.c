/* test_persist.c -- write_now, persist, register, and locations. */
#include "counting_backend.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static fbk_location *open_loc(fx *f, const char *name)
{
    fbk_location *loc = NULL;
    int rc = fbk_location_open(f->s, name, &loc);
    cr_assert_eq(rc, 0, "fbk_location_open(%s): %s (%s)", name, fbk_err_name(rc), fbk_errmsg());
    cr_assert_not_null(loc);
    return loc;
}

Test(persist, write_now_stores_once)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 100, 1);
    fbk_key k = tc_key(h);
    cr_assert_eq(fbk_write_now(h), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1);
    cr_assert_eq(counting_times_stored(f.cb, &k), 1);
    cr_assert_eq(fbk_write_now(h), 0);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1, "the second write_now wrote again");
    cr_assert_eq(counting_total_calls(f.cb), 1);
    /* still in memory: write_now does not evict */
    const void *obj;
    cr_assert_eq(fbk_try_load(h, &obj), 0);
    fbk_unload(h);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(persist, write_now_of_spilled_item_makes_no_call)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *h[3];
    for (int i = 0; i < 3; i++)
        h[i] = tc_insert(f.p, 10, (uint64_t)i);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    counting_reset(f.cb);
    cr_assert_eq(fbk_write_now(h[0]), 0);
    cr_assert_eq(counting_total_calls(f.cb), 0);
    for (int i = 0; i < 3; i++)
        fbk_handle_release(h[i]);
    fx_close(&f);
}

Test(persist, write_now_while_pinned_works)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 10, 1);
    const void *obj;
    cr_assert_eq(fbk_load(h, &obj), 0);
    cr_assert_eq(fbk_write_now(h), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1);
    fbk_unload(h);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(persist, location_open_calls_open_and_scan_once)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = open_loc(&f, "L");
    cr_assert_eq(counting_calls(f.cb, CB_OPEN_LOCATION), 1);
    cr_assert_eq(counting_calls(f.cb, CB_SCAN), 1);
    cr_assert_eq(fbk_location_count(loc), 0);
    cr_assert_eq(fbk_location_junk_removed(loc), 0);
    fbk_location_close(loc);
    cr_assert_eq(counting_calls(f.cb, CB_CLOSE_LOCATION), 1);
    fx_close(&f);
}

Test(persist, location_open_lists_existing_keys_and_junk)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_key k[3];
    for (int i = 0; i < 3; i++) {
        fbk_key_generate(&k[i]);
        cr_assert_eq(counting_loc_put(f.cb, "L", &k[i], "x", 1), 0);
    }
    counting_loc_add_junk(f.cb, "L", 2);
    fbk_location *loc = open_loc(&f, "L");
    cr_assert_eq(fbk_location_count(loc), 3);
    cr_assert_eq(fbk_location_junk_removed(loc), 2);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(fbk_location_contains(loc, &k[i]), 1);
    fbk_key other;
    fbk_key_generate(&other);
    cr_assert_eq(fbk_location_contains(loc, &other), 0);
    fbk_key out[8];
    cr_assert_eq(fbk_location_keys(loc, out, 8), 3);
    int seen[3] = {0};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            seen[j] += fbk_key_equal(&out[i], &k[j]);
    for (int j = 0; j < 3; j++)
        cr_assert_eq(seen[j], 1);
    /* a smaller buffer: still returns the total */
    cr_assert_eq(fbk_location_keys(loc, out, 1), 3);
    cr_assert_eq(fbk_location_keys(loc, NULL, 0), 3);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(persist, persist_writes_first_then_copies)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = open_loc(&f, "L");
    fbk_handle *h = tc_insert(f.p, 100, 1);
    fbk_key k = tc_key(h);
    counting_reset(f.cb);
    cr_assert_eq(fbk_persist(h, loc), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1);
    cr_assert_eq(counting_calls(f.cb, CB_PERSIST), 1);
    cr_assert_eq(counting_loc_has(f.cb, "L", &k), 1);
    cr_assert_eq(fbk_location_contains(loc, &k), 1);
    cr_assert_eq(fbk_location_count(loc), 1);
    fbk_handle_release(h);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(persist, persist_of_a_key_the_location_holds_makes_no_call)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = open_loc(&f, "L");
    fbk_handle *h = tc_insert(f.p, 100, 1);
    cr_assert_eq(fbk_persist(h, loc), 0);
    counting_reset(f.cb);
    cr_assert_eq(fbk_persist(h, loc), 0);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_total_calls(f.cb), 0, "%lu backend calls", counting_total_calls(f.cb));
    fbk_handle_release(h);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(persist, persist_of_written_item_to_a_second_location_only_copies)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *a = open_loc(&f, "A");
    fbk_location *b = open_loc(&f, "B");
    fbk_handle *h = tc_insert(f.p, 100, 1);
    cr_assert_eq(fbk_persist(h, a), 0);
    counting_reset(f.cb);
    cr_assert_eq(fbk_persist(h, b), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 0);
    cr_assert_eq(counting_calls(f.cb, CB_PERSIST), 1);
    fbk_key k = tc_key(h);
    cr_assert_eq(fbk_location_contains(b, &k), 1);
    cr_assert_eq(counting_loc_has(f.cb, "B", &k), 1);
    fbk_handle_release(h);
    fbk_location_close(a);
    fbk_location_close(b);
    fx_close(&f);
}

Test(persist, persist_of_spilled_item_does_not_load_it)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_location *loc = open_loc(&f, "L");
    fbk_handle *h[3];
    for (int i = 0; i < 3; i++)
        h[i] = tc_insert(f.p, 10, (uint64_t)i);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    counting_reset(f.cb);
    cr_assert_eq(fbk_persist(h[0], loc), 0);
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 0);
    cr_assert_eq(counting_calls(f.cb, CB_PERSIST), 1);
    for (int i = 0; i < 3; i++)
        fbk_handle_release(h[i]);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(persist, persisted_value_survives_release_and_registers_back)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = open_loc(&f, "L");
    fbk_handle *h = tc_insert(f.p, 3000, 77);
    fbk_key k = tc_key(h);
    cr_assert_eq(fbk_persist(h, loc), 0);
    cr_assert_eq(fbk_location_sync(loc), 0);
    cr_assert_eq(counting_calls(f.cb, CB_SYNC), 1);
    fbk_handle_release(h);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_spill_has(f.cb, &k), 0, "the spill copy outlived the last release");
    cr_assert_eq(counting_loc_has(f.cb, "L", &k), 1,
                 "releasing a handle removed the persisted copy");
    counting_reset(f.cb);

    fbk_handle *r = NULL;
    cr_assert_eq(fbk_register(f.p, loc, &k, &r), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REGISTER_KEY), 1);
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 0, "register loaded the item");
    fbk_key rk = tc_key(r);
    cr_assert(fbk_key_equal(&rk, &k));
    cr_assert_eq(fbk_pool_size(f.p), 1);
    cr_assert_eq(tc_check(r, 3000, 77), 0);
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 1);
    fbk_handle_release(r);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_spill_has(f.cb, &k), 0);
    cr_assert_eq(counting_loc_has(f.cb, "L", &k), 1);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(persist, register_in_a_new_store_reads_the_persisted_value)
{
    counting *cb = NULL;
    fbk_key k;
    {
        fx f = {0};
        fx_open(&f, 4);
        fbk_location *loc = open_loc(&f, "L");
        fbk_handle *h = tc_insert(f.p, 500, 5);
        k = tc_key(h);
        cr_assert_eq(fbk_persist(h, loc), 0);
        cr_assert_eq(fbk_location_sync(loc), 0);
        fbk_handle_release(h);
        fbk_location_close(loc);
        cb = counting_ref(f.cb);
        fx_close(&f);
    }
    /* a second store over the same backend state (same locations) */
    fbk_store *s = NULL;
    cr_assert_eq(fbk_store_open_backend(&s, counting_ops(0u), counting_ref(cb), NULL), 0);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(s, "L", &loc), 0);
    cr_assert_eq(fbk_location_count(loc), 1);
    cr_assert_eq(fbk_location_contains(loc, &k), 1);
    fbk_codec c = tc_codec(NULL, 1);
    fbk_pool *p = NULL;
    cr_assert_eq(fbk_pool_create(&p, s, &c, 4), 0);
    fbk_handle *r = NULL;
    cr_assert_eq(fbk_register(p, loc, &k, &r), 0);
    cr_assert_eq(tc_check(r, 500, 5), 0);
    fbk_handle_release(r);
    fbk_pool_release(p);
    fbk_location_close(loc);
    fbk_store_close(s);
    counting_free(cb);
}

Test(persist, register_of_absent_key_is_enotfound)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = open_loc(&f, "L");
    fbk_key k;
    fbk_key_generate(&k);
    fbk_handle *r = (fbk_handle *)&r;
    cr_assert_eq(fbk_register(f.p, loc, &k, &r), FBK_ENOTFOUND);
    cr_assert_eq(r, (fbk_handle *)&r, "out changed on failure");
    cr_assert_eq(fbk_pool_size(f.p), 0);
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 0);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(persist, register_same_key_twice_shares_one_spill_copy)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_key k;
    {
        fbk_location *loc = open_loc(&f, "L");
        fbk_handle *h = tc_insert(f.p, 64, 9);
        k = tc_key(h);
        cr_assert_eq(fbk_persist(h, loc), 0);
        fbk_handle_release(h);
        fbk_location_close(loc);
        cr_assert_eq(fbk_store_drain(f.s), 0);
    }
    fbk_location *loc = open_loc(&f, "L");
    counting_reset(f.cb);
    fbk_handle *r1 = NULL, *r2 = NULL;
    cr_assert_eq(fbk_register(f.p, loc, &k, &r1), 0);
    cr_assert_eq(fbk_register(f.p, loc, &k, &r2), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REGISTER_KEY), 1, "one spill copy for one key");
    cr_assert_neq(r1, r2, "two registrations must give two distinct handles");
    fbk_key k1 = tc_key(r1), k2 = tc_key(r2);
    cr_assert(fbk_key_equal(&k1, &k));
    cr_assert(fbk_key_equal(&k2, &k));
    cr_assert_eq(tc_check(r1, 64, 9), 0);
    cr_assert_eq(tc_check(r2, 64, 9), 0);
    fbk_handle_release(r1);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REMOVE), 0, "removed while the other handle lives");
    cr_assert_eq(tc_check(r2, 64, 9), 0);
    fbk_handle_release(r2);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REMOVE), 1);
    cr_assert_eq(counting_times_removed(f.cb, &k), 1);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(persist, register_of_a_key_already_in_memory_does_not_copy_again)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = open_loc(&f, "L");
    fbk_handle *h = tc_insert(f.p, 64, 9);
    fbk_key k = tc_key(h);
    cr_assert_eq(fbk_persist(h, loc), 0);
    counting_reset(f.cb);
    fbk_handle *r = NULL;
    cr_assert_eq(fbk_register(f.p, loc, &k, &r), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REGISTER_KEY), 0,
                 "the key is in the spill area already: no register_key");
    cr_assert_eq(tc_check(r, 64, 9), 0);
    fbk_handle_release(r);
    fbk_handle_release(h);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REMOVE), 1);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(persist, location_remove_of_absent_key_is_0_without_a_call)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = open_loc(&f, "L");
    counting_reset(f.cb);
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(fbk_location_remove(loc, &k), 0);
    cr_assert_eq(counting_total_calls(f.cb), 0);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(persist, location_remove_deletes_the_key)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = open_loc(&f, "L");
    fbk_handle *h = tc_insert(f.p, 64, 9);
    fbk_key k = tc_key(h);
    cr_assert_eq(fbk_persist(h, loc), 0);
    cr_assert_eq(fbk_location_remove(loc, &k), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REMOVE_PERSISTED), 1);
    cr_assert_eq(fbk_location_contains(loc, &k), 0);
    cr_assert_eq(fbk_location_count(loc), 0);
    cr_assert_eq(counting_loc_has(f.cb, "L", &k), 0);
    /* a second remove: absent now, no call */
    cr_assert_eq(fbk_location_remove(loc, &k), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REMOVE_PERSISTED), 1);
    /* the item itself is untouched, and persisting again copies again */
    cr_assert_eq(tc_check(h, 64, 9), 0);
    cr_assert_eq(fbk_persist(h, loc), 0);
    cr_assert_eq(counting_calls(f.cb, CB_PERSIST), 2);
    cr_assert_eq(fbk_location_contains(loc, &k), 1);
    fbk_handle_release(h);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(persist, location_sync_calls_sync)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = open_loc(&f, "L");
    cr_assert_eq(fbk_location_sync(loc), 0);
    cr_assert_eq(counting_calls(f.cb, CB_SYNC), 1);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(persist, save_through_batch_table_persists_every_handle)
{
    counting *cb = NULL;
    fbk_store *s = NULL;
    cr_assert_eq(counting_open_flags(&s, NULL, COUNTING_BATCH, &cb), 0);
    fbk_codec c = tc_codec(NULL, 1);
    fbk_pool *p = NULL;
    cr_assert_eq(fbk_pool_create(&p, s, &c, 4), 0);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(s, "L", &loc), 0);
    fbk_handle *h[6];
    for (int i = 0; i < 6; i++)
        h[i] = tc_insert(p, 10, (uint64_t)i);
    cr_assert_eq(fbk_save(loc, h, 6, 0, NULL, NULL), 0);
    cr_assert_eq(fbk_location_count(loc), 6);
    cr_assert_eq(counting_loc_count(cb, "L"), 6);
    for (int i = 0; i < 6; i++) {
        fbk_key k = tc_key(h[i]);
        cr_assert_eq(counting_loc_has(cb, "L", &k), 1);
        fbk_handle_release(h[i]);
    }
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_drain(s);
    cr_assert_eq(counting_violations(cb), 0);
    fbk_store_close(s);
    counting_free(cb);
}

typedef struct writer {
    fbk_handle *h;
    fbk_location *loc;
    int rc;
} writer;

static void *write_thread(void *arg)
{
    writer *w = arg;
    w->rc = w->loc ? fbk_persist(w->h, w->loc) : fbk_write_now(w->h);
    return NULL;
}

static void write_during_eviction(int with_loc)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_location *loc = NULL;
    if (with_loc)
        loc = open_loc(&f, "L");
    counting_gate_close(f.cb, CB_STORE);
    fbk_handle *a = tc_insert(f.p, 100, 1);
    fbk_handle *b = tc_insert(f.p, 100, 2);
    fbk_handle *c = tc_insert(f.p, 100, 3);
    counting_gate_wait(f.cb, CB_STORE, 1);
    writer w = {.h = a, .loc = loc, .rc = -100};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, write_thread, &w), 0);
    counting_gate_open(f.cb, CB_STORE);
    pthread_join(th, NULL);
    cr_assert_eq(w.rc, 0, "%s", fbk_err_name(w.rc));
    cr_assert_eq(fbk_store_drain(f.s), 0);
    fbk_key ka = tc_key(a);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1, "the item was written twice");
    cr_assert_eq(counting_times_stored(f.cb, &ka), 1);
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 0, "writing out needs no read-back");
    if (with_loc) {
        cr_assert_eq(fbk_location_contains(loc, &ka), 1);
        cr_assert_eq(counting_loc_has(f.cb, "L", &ka), 1);
    }
    fbk_handle_release(a);
    fbk_handle_release(b);
    fbk_handle_release(c);
    if (loc)
        fbk_location_close(loc);
    fx_close(&f);
}

Test(persist, write_now_during_eviction_write_stores_once, .timeout = 60)
{
    write_during_eviction(0);
}

Test(persist, persist_during_eviction_write_stores_once, .timeout = 60)
{
    write_during_eviction(1);
}

/* Persists a fresh item to "L", releases it, and returns its key. */
static fbk_key persisted_key(fx *f, fbk_location *loc, size_t len, uint64_t seed)
{
    fbk_handle *h = tc_insert(f->p, len, seed);
    fbk_key k = tc_key(h);
    cr_assert_eq(fbk_persist(h, loc), 0);
    fbk_handle_release(h);
    cr_assert_eq(fbk_store_drain(f->s), 0);
    cr_assert_eq(counting_spill_has(f->cb, &k), 0);
    return k;
}

Test(persist, registered_item_needs_no_call_to_persist_back_or_write)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = open_loc(&f, "L");
    fbk_key k = persisted_key(&f, loc, 64, 3);
    fbk_handle *r = NULL;
    cr_assert_eq(fbk_register(f.p, loc, &k, &r), 0);
    counting_reset(f.cb);
    cr_assert_eq(fbk_persist(r, loc), 0);
    cr_assert_eq(fbk_write_now(r), 0);
    cr_assert_eq(counting_total_calls(f.cb), 0, "%lu backend calls", counting_total_calls(f.cb));
    /* to another location: one copy, no write, no read-back */
    fbk_location *m = open_loc(&f, "M");
    counting_reset(f.cb);
    cr_assert_eq(fbk_persist(r, m), 0);
    cr_assert_eq(counting_calls(f.cb, CB_PERSIST), 1);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 0);
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 0);
    cr_assert_eq(counting_loc_has(f.cb, "M", &k), 1);
    fbk_handle_release(r);
    fbk_location_close(m);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(persist, load_mut_of_one_registration_keeps_the_shared_copy_for_the_other)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = open_loc(&f, "L");
    fbk_key k = persisted_key(&f, loc, 64, 3);
    fbk_handle *r1 = NULL, *r2 = NULL;
    cr_assert_eq(fbk_register(f.p, loc, &k, &r1), 0);
    cr_assert_eq(fbk_register(f.p, loc, &k, &r2), 0);
    counting_reset(f.cb);
    void *obj;
    cr_assert_eq(fbk_load_mut(r1, &obj), 0, "r1 is a distinct item: load_mut must work");
    memset(((fbk_blob *)obj)->data, 0, 64);
    fbk_unload_mut(r1);
    fbk_key k1 = tc_key(r1);
    cr_assert_not(fbk_key_equal(&k1, &k));
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REMOVE), 0, "the copy r2 still uses was removed");
    cr_assert_eq(tc_check(r2, 64, 3), 0);
    fbk_handle_release(r2);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_times_removed(f.cb, &k), 1);
    cr_assert_eq(counting_loc_has(f.cb, "L", &k), 1, "the location's copy must stay");
    fbk_handle_release(r1);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(persist, location_remove_leaves_registered_items_loadable)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = open_loc(&f, "L");
    fbk_key k = persisted_key(&f, loc, 64, 3);
    fbk_handle *r = NULL;
    cr_assert_eq(fbk_register(f.p, loc, &k, &r), 0);
    cr_assert_eq(fbk_location_remove(loc, &k), 0);
    cr_assert_eq(counting_loc_has(f.cb, "L", &k), 0);
    cr_assert_eq(tc_check(r, 64, 3), 0);
    fbk_handle_release(r);
    fbk_location_close(loc);
    fx_close(&f);
}

typedef struct regger {
    fx *f;
    fbk_location *loc;
    fbk_key key;
    fbk_handle *h;
    int rc;
} regger;

static void *register_thread(void *arg)
{
    regger *r = arg;
    r->rc = fbk_register(r->f->p, r->loc, &r->key, &r->h);
    return NULL;
}

/* The last release queues the remove of the spill copy; a register of the
 * same key meanwhile must not hand out the copy being removed, nor
 * register_key over it (the backend never sees two operations on a key). */
Test(persist, register_while_the_spill_copy_is_being_removed, .timeout = 60)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = open_loc(&f, "L");
    fbk_handle *h = tc_insert(f.p, 64, 8);
    fbk_key k = tc_key(h);
    cr_assert_eq(fbk_persist(h, loc), 0);
    counting_gate_close(f.cb, CB_REMOVE);
    fbk_handle_release(h);
    counting_gate_wait(f.cb, CB_REMOVE, 1);
    regger r = {.f = &f, .loc = loc, .key = k, .h = NULL, .rc = -100};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, register_thread, &r), 0);
    counting_gate_open(f.cb, CB_REMOVE);
    pthread_join(th, NULL);
    cr_assert_eq(r.rc, 0, "%s", fbk_err_name(r.rc));
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_spill_has(f.cb, &k), 1, "the registered item has no spill copy");
    cr_assert_eq(tc_check(r.h, 64, 8), 0);
    fbk_handle_release(r.h);
    fbk_location_close(loc);
    fx_close(&f); /* checks that no two operations raced on the key */
}

Test(persist, many_keys_persist_remove_and_persist_again)
{
    fx f = {0};
    fx_open(&f, 8);
    fbk_location *loc = open_loc(&f, "L");
    enum { M = 300 };
    fbk_handle **h = malloc(M * sizeof *h);
    fbk_key *k = malloc(M * sizeof *k);
    for (int i = 0; i < M; i++) {
        h[i] = tc_insert(f.p, 16, (uint64_t)i);
        k[i] = tc_key(h[i]);
        cr_assert_eq(fbk_persist(h[i], loc), 0);
    }
    cr_assert_eq(fbk_location_count(loc), M);
    for (int i = 0; i < M; i += 3)
        cr_assert_eq(fbk_location_remove(loc, &k[i]), 0);
    for (int i = 0; i < M; i++)
        cr_assert_eq(fbk_location_contains(loc, &k[i]), i % 3 != 0, "key %d", i);
    cr_assert_eq(fbk_location_count(loc), M - (M + 2) / 3);
    cr_assert_eq(counting_loc_count(f.cb, "L"), M - (M + 2) / 3);
    for (int i = 0; i < M; i += 3)
        cr_assert_eq(fbk_persist(h[i], loc), 0);
    cr_assert_eq(fbk_location_count(loc), M);
    cr_assert_eq(counting_calls(f.cb, CB_PERSIST), M + (M + 2) / 3);
    for (int i = 0; i < M; i++) {
        cr_assert_eq(fbk_location_contains(loc, &k[i]), 1);
        cr_assert_eq(tc_check(h[i], 16, (uint64_t)i), 0);
        fbk_handle_release(h[i]);
    }
    free(h);
    free(k);
    fbk_location_close(loc);
    fx_close(&f);
}

/* Spill copies are per store, not per pool: one key registered into two
 * pools is copied once and removed once. */
Test(persist, one_key_registered_into_two_pools_shares_one_copy)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = open_loc(&f, "L");
    fbk_key k = persisted_key(&f, loc, 64, 4);
    fbk_codec c = tc_codec(NULL, 1);
    fbk_pool *q = NULL;
    cr_assert_eq(fbk_pool_create(&q, f.s, &c, 4), 0);
    counting_reset(f.cb);
    fbk_handle *r1 = NULL, *r2 = NULL;
    cr_assert_eq(fbk_register(f.p, loc, &k, &r1), 0);
    cr_assert_eq(fbk_register(q, loc, &k, &r2), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REGISTER_KEY), 1);
    cr_assert_eq(fbk_handle_pool(r2), q);
    cr_assert_eq(tc_check(r1, 64, 4), 0);
    cr_assert_eq(tc_check(r2, 64, 4), 0);
    fbk_handle_release(r1);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REMOVE), 0);
    fbk_handle_release(r2);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REMOVE), 1);
    fbk_pool_release(q);
    fbk_location_close(loc);
    fx_close(&f);
}
