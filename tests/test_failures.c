/* test_failures.c -- backend I/O errors, ENOSPC, corrupt copies and codec
 * failures: no object is lost and every failure is reported. */
#include "counting_backend.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <string.h>

typedef struct errlog {
    _Atomic int calls;
    _Atomic int last;
    _Atomic int bad_msg;     /* a call with a NULL or empty message */
    _Atomic int backend_msg; /* a call passing the backend's own message */
} errlog;

static void on_err(int err, const char *msg, void *arg)
{
    errlog *e = arg;
    if (!msg || !*msg)
        atomic_store(&e->bad_msg, 1);
    else if (strstr(msg, "counting: injected"))
        atomic_store(&e->backend_msg, 1);
    atomic_store(&e->last, err);
    atomic_fetch_add(&e->calls, 1);
}

static void open_logged(fx *f, errlog *e, size_t mem_items)
{
    f->opts.on_error = on_err;
    f->opts.on_error_arg = e;
    fx_open(f, mem_items);
}

static void eviction_failure_keeps_objects(int code)
{
    errlog e = {0};
    fx f = {0};
    open_logged(&f, &e, 4);
    counting_fail(f.cb, CB_STORE, code, -1);
    enum { M = 12 };
    fbk_handle *h[M];
    for (int i = 0; i < M; i++)
        h[i] = tc_insert(f.p, 200, (uint64_t)i);
    int rc = fbk_store_drain(f.s);
    cr_assert_eq(rc, code, "drain gave %s", fbk_err_name(rc));
    cr_assert_geq(counting_calls(f.cb, CB_STORE), 1);
    cr_assert_eq(counting_stored_count(f.cb), 0);
    fbk_store_stats st;
    fbk_store_stats_get(f.s, &st);
    cr_assert_geq(st.eviction_failures, 1);
    cr_assert_eq(st.stores, 0);
    cr_assert_eq(st.evictions, 0, "an item was dropped although its write failed");
    cr_assert_geq(atomic_load(&e.calls), 1, "on_error not called");
    cr_assert_eq(atomic_load(&e.last), code);
    cr_assert_eq(atomic_load(&e.bad_msg), 0, "on_error got no message");
    cr_assert_eq(atomic_load(&e.backend_msg), 1, "on_error did not get the backend's message");
    cr_assert_geq(st.background_errors, (uint64_t)atomic_load(&e.calls));
    /* nothing lost: every object is still in memory, byte-exact.  Each
     * try_load may move an item and so start new (failing) eviction
     * attempts: drain first so that none runs on the item looked at. */
    for (int i = 0; i < M; i++) {
        fbk_store_drain(f.s);
        const void *obj;
        cr_assert_eq(fbk_try_load(h[i], &obj), 0, "item %d not in memory after a failed write", i);
        cr_assert(tu_blob_check(obj, 200, (uint64_t)i), "item %d changed", i);
        fbk_unload(h[i]);
    }
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 0);
    fbk_store_drain(f.s);

    /* the fault clears: later evictions write items out again */
    counting_fail(f.cb, CB_STORE, 0, 0);
    fbk_handle *x[4];
    for (int i = 0; i < 4; i++)
        x[i] = tc_insert(f.p, 200, 100 + (uint64_t)i);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_geq(counting_stored_count(f.cb), 1, "nothing written after the fault cleared");
    fbk_store_stats_get(f.s, &st);
    cr_assert_geq(st.evictions, 1);
    for (int i = 0; i < M; i++)
        cr_assert_eq(tc_check(h[i], 200, (uint64_t)i), 0, "item %d", i);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(tc_check(x[i], 200, 100 + (uint64_t)i), 0);
    for (int i = 0; i < M; i++)
        fbk_handle_release(h[i]);
    for (int i = 0; i < 4; i++)
        fbk_handle_release(x[i]);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_spill_size(f.cb), 0);
    fx_close(&f);
}

Test(failures, eviction_eio_loses_no_object) { eviction_failure_keeps_objects(FBK_EIO); }

Test(failures, eviction_enospc_loses_no_object) { eviction_failure_keeps_objects(FBK_ENOSPC); }

Test(failures, failed_eviction_is_retried_after_a_single_fault)
{
    errlog e = {0};
    fx f = {0};
    open_logged(&f, &e, 2);
    counting_fail(f.cb, CB_STORE, FBK_EIO, 1);
    fbk_handle *h[3];
    for (int i = 0; i < 3; i++)
        h[i] = tc_insert(f.p, 10, (uint64_t)i);
    cr_assert_eq(fbk_store_drain(f.s), FBK_EIO);
    cr_assert_eq(atomic_load(&e.calls), 1);
    const void *obj;
    cr_assert_eq(fbk_try_load(h[0], &obj), 0, "h0 dropped although its write failed");
    fbk_unload(h[0]);
    /* h0 (now touched, still written nowhere) and h1 must be written by
     * the evictions of further inserts */
    fbk_handle *x[4];
    for (int i = 0; i < 4; i++)
        x[i] = tc_insert(f.p, 10, 10 + (uint64_t)i);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    fbk_key k0 = tc_key(h[0]);
    cr_assert_eq(counting_times_stored(f.cb, &k0), 1, "the failed write was not done later");
    cr_assert_eq(fbk_try_load(h[0], &obj), FBK_EAGAIN);
    cr_assert_eq(tc_check(h[0], 10, 0), 0);
    for (int i = 0; i < 3; i++)
        fbk_handle_release(h[i]);
    for (int i = 0; i < 4; i++)
        fbk_handle_release(x[i]);
    fx_close(&f);
}

Test(failures, write_now_failure_returns_the_code_and_keeps_the_item)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 100, 1);
    counting_fail(f.cb, CB_STORE, FBK_ENOSPC, -1);
    cr_assert_eq(fbk_write_now(h), FBK_ENOSPC);
    cr_assert(strstr(fbk_errmsg(), "counting: injected") != NULL,
              "fbk_errmsg() \"%s\" lost the backend's message", fbk_errmsg());
    cr_assert_eq(tc_check(h, 100, 1), 0);
    counting_fail(f.cb, CB_STORE, FBK_EIO, -1);
    cr_assert_eq(fbk_write_now(h), FBK_EIO);
    counting_fail(f.cb, CB_STORE, 0, 0);
    cr_assert_eq(fbk_write_now(h), 0);
    fbk_key k = tc_key(h);
    cr_assert_eq(counting_times_stored(f.cb, &k), 1);
    cr_assert_eq(fbk_write_now(h), 0);
    cr_assert_eq(counting_times_stored(f.cb, &k), 1);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(failures, persist_failure_leaves_location_without_the_key)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), 0);
    fbk_handle *h = tc_insert(f.p, 100, 1);
    fbk_key k = tc_key(h);
    counting_fail(f.cb, CB_PERSIST, FBK_EIO, 1);
    cr_assert_eq(fbk_persist(h, loc), FBK_EIO);
    cr_assert_eq(fbk_location_contains(loc, &k), 0);
    cr_assert_eq(fbk_location_count(loc), 0);
    /* retry works, and does not write the item a second time */
    cr_assert_eq(fbk_persist(h, loc), 0);
    cr_assert_eq(fbk_location_contains(loc, &k), 1);
    cr_assert_eq(counting_times_stored(f.cb, &k), 1);
    fbk_handle_release(h);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(failures, store_failure_in_persist_is_returned)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), 0);
    fbk_handle *h = tc_insert(f.p, 100, 1);
    counting_fail(f.cb, CB_STORE, FBK_ENOSPC, 1);
    cr_assert_eq(fbk_persist(h, loc), FBK_ENOSPC);
    cr_assert_eq(counting_calls(f.cb, CB_PERSIST), 0, "persist called after the write failed");
    cr_assert_eq(fbk_location_count(loc), 0);
    cr_assert_eq(fbk_persist(h, loc), 0);
    fbk_handle_release(h);
    fbk_location_close(loc);
    fx_close(&f);
}

static fbk_handle *spilled(fx *f, size_t len, uint64_t seed, fbk_handle *o[2])
{
    fbk_handle *h = tc_insert(f->p, len, seed);
    o[0] = tc_insert(f->p, len, seed + 1000);
    o[1] = tc_insert(f->p, len, seed + 2000);
    cr_assert_eq(fbk_store_drain(f->s), 0);
    const void *obj;
    cr_assert_eq(fbk_try_load(h, &obj), FBK_EAGAIN, "setup: not spilled");
    return h;
}

static void release3(fbk_handle *h, fbk_handle *o[2])
{
    fbk_handle_release(h);
    fbk_handle_release(o[0]);
    fbk_handle_release(o[1]);
}

Test(failures, load_io_error_is_returned_and_item_stays_spilled)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *o[2];
    fbk_handle *h = spilled(&f, 100, 1, o);
    counting_fail(f.cb, CB_LOAD, FBK_EIO, 1);
    const void *obj = (const void *)&obj;
    cr_assert_eq(fbk_load(h, &obj), FBK_EIO);
    cr_assert_eq(obj, (const void *)&obj);
    cr_assert_neq(fbk_errmsg()[0], '\0');
    cr_assert_eq(fbk_try_load(h, &obj), FBK_EAGAIN);
    cr_assert_eq(tc_check(h, 100, 1), 0, "load after the fault cleared");
    release3(h, o);
    fx_close(&f);
}

Test(failures, corrupt_spill_copy_is_ecorrupt_not_wrong_bytes)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *o[2];
    fbk_handle *h = spilled(&f, 100, 1, o);
    fbk_key k = tc_key(h);
    size_t len = 0;
    unsigned char *orig = counting_spill_get(f.cb, &k, &len);
    cr_assert_not_null(orig);
    cr_assert_eq(counting_corrupt(f.cb, &k, len - 1), 0);
    const void *obj = NULL;
    cr_assert_eq(fbk_load(h, &obj), FBK_ECORRUPT);
    cr_assert_eq(fbk_load(h, &obj), FBK_ECORRUPT, "a second load must fail the same way");
    void *mobj;
    cr_assert_eq(fbk_load_mut(h, &mobj), FBK_ECORRUPT);
    cr_assert_neq(fbk_errmsg()[0], '\0');
    fbk_key k2 = tc_key(h);
    cr_assert(fbk_key_equal(&k, &k2), "a failed load_mut changed the key");
    cr_assert_eq(counting_calls(f.cb, CB_REMOVE), 0, "a failed load_mut removed the copy");
    /* repaired: loads again */
    cr_assert_eq(counting_spill_set(f.cb, &k, orig, len), 0);
    cr_assert_eq(tc_check(h, 100, 1), 0);
    free(orig);
    release3(h, o);
    fx_close(&f);
}

Test(failures, corrupt_copy_fails_prefetch_task)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *o[2];
    fbk_handle *h = spilled(&f, 100, 1, o);
    fbk_key k = tc_key(h);
    cr_assert_eq(counting_corrupt(f.cb, &k, 30), 0);
    fbk_task *t = NULL;
    cr_assert_eq(fbk_prefetch(h, &t), 0);
    cr_assert_eq(fbk_task_wait(t), FBK_ECORRUPT);
    cr_assert_eq(counting_corrupt(f.cb, &k, 30), 0);
    cr_assert_eq(tc_check(h, 100, 1), 0);
    release3(h, o);
    fx_close(&f);
}

Test(failures, decode_failure_is_ecodec)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *o[2];
    fbk_handle *h = spilled(&f, 100, 1, o);
    atomic_store(&f.ctx.fail_decode, 1);
    const void *obj;
    cr_assert_eq(fbk_load(h, &obj), FBK_ECODEC);
    cr_assert_neq(fbk_errmsg()[0], '\0');
    atomic_store(&f.ctx.fail_decode, 0);
    cr_assert_eq(tc_check(h, 100, 1), 0, "the item stayed spilled and intact");
    release3(h, o);
    fx_close(&f);
}

Test(failures, encode_failure_in_write_now_is_ecodec)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 100, 1);
    atomic_store(&f.ctx.fail_encode, 1);
    cr_assert_eq(fbk_write_now(h), FBK_ECODEC);
    fbk_key k = tc_key(h);
    cr_assert_eq(counting_spill_has(f.cb, &k), 0, "a failed fill left a value");
    atomic_store(&f.ctx.fail_encode, 0);
    cr_assert_eq(fbk_write_now(h), 0);
    cr_assert_eq(counting_spill_has(f.cb, &k), 1);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(failures, encode_failure_in_eviction_keeps_the_object)
{
    errlog e = {0};
    fx f = {0};
    open_logged(&f, &e, 2);
    atomic_store(&f.ctx.fail_encode, 1);
    fbk_handle *h[3];
    for (int i = 0; i < 3; i++)
        h[i] = tc_insert(f.p, 10, (uint64_t)i);
    cr_assert_eq(fbk_store_drain(f.s), FBK_ECODEC);
    cr_assert_eq(atomic_load(&e.last), FBK_ECODEC);
    atomic_store(&f.ctx.fail_encode, 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(tc_check(h[i], 10, (uint64_t)i), 0);
    for (int i = 0; i < 3; i++)
        fbk_handle_release(h[i]);
    fx_close(&f);
}

Test(failures, background_remove_failure_is_reported)
{
    errlog e = {0};
    fx f = {0};
    open_logged(&f, &e, 4);
    fbk_handle *h = tc_insert(f.p, 10, 1);
    cr_assert_eq(fbk_write_now(h), 0);
    counting_fail(f.cb, CB_REMOVE, FBK_EIO, 1);
    fbk_handle_release(h);
    cr_assert_eq(fbk_store_drain(f.s), FBK_EIO);
    cr_assert_eq(atomic_load(&e.calls), 1);
    cr_assert_eq(atomic_load(&e.last), FBK_EIO);
    fbk_store_stats st;
    fbk_store_stats_get(f.s, &st);
    cr_assert_eq(st.background_errors, 1);
    cr_assert_eq(st.removes, 0);
    fx_close(&f);
}

Test(failures, register_key_failure_is_returned)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(counting_loc_put(f.cb, "L", &k, "x", 1), 0);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), 0);
    counting_fail(f.cb, CB_REGISTER_KEY, FBK_EIO, 1);
    fbk_handle *r = NULL;
    cr_assert_eq(fbk_register(f.p, loc, &k, &r), FBK_EIO);
    cr_assert_null(r);
    cr_assert_eq(fbk_pool_size(f.p), 0);
    cr_assert_eq(fbk_register(f.p, loc, &k, &r), 0, "a failed register must not be remembered");
    cr_assert_eq(counting_calls(f.cb, CB_REGISTER_KEY), 2);
    /* the bytes put there are not a frame: loading is ECORRUPT */
    const void *obj;
    cr_assert_eq(fbk_load(r, &obj), FBK_ECORRUPT);
    fbk_handle_release(r);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(failures, location_open_failures_are_returned)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = NULL;
    counting_fail(f.cb, CB_OPEN_LOCATION, FBK_EIO, 1);
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), FBK_EIO);
    cr_assert_null(loc);
    counting_fail(f.cb, CB_SCAN, FBK_ENOSPC, 1);
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), FBK_ENOSPC);
    cr_assert_null(loc);
    cr_assert_eq(counting_calls(f.cb, CB_CLOSE_LOCATION), 1,
                 "the location opened before the failed scan was not closed");
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), 0);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(failures, sync_failure_is_returned)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), 0);
    counting_fail(f.cb, CB_SYNC, FBK_EIO, -1);
    cr_assert_eq(fbk_location_sync(loc), FBK_EIO);
    cr_assert_eq(fbk_location_sync(loc), FBK_EIO);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(failures, sync_failure_is_final_for_the_location)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), 0);
    counting_fail(f.cb, CB_SYNC, FBK_EIO, 1);
    cr_assert_eq(fbk_location_sync(loc), FBK_EIO);
    /* the backend would now succeed, but the header promises that a failed
     * sync stays failed for this fbk_location */
    cr_assert_eq(fbk_location_sync(loc), FBK_EIO);
    fbk_location_close(loc);
    /* a reopened location starts afresh */
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), 0);
    cr_assert_eq(fbk_location_sync(loc), 0);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(failures, remove_persisted_failure_is_returned_and_key_kept)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), 0);
    fbk_handle *h = tc_insert(f.p, 10, 1);
    fbk_key k = tc_key(h);
    cr_assert_eq(fbk_persist(h, loc), 0);
    counting_fail(f.cb, CB_REMOVE_PERSISTED, FBK_EIO, 1);
    cr_assert_eq(fbk_location_remove(loc, &k), FBK_EIO);
    cr_assert_eq(fbk_location_contains(loc, &k), 1);
    cr_assert_eq(fbk_location_remove(loc, &k), 0);
    cr_assert_eq(fbk_location_contains(loc, &k), 0);
    fbk_handle_release(h);
    fbk_location_close(loc);
    fx_close(&f);
}

/* Whatever a codec returns (a positive number, an FBK_E* code that would
 * mean something else), the caller sees FBK_ECODEC. */
Test(failures, any_nonzero_codec_result_is_ecodec)
{
    const int codes[] = {5, -1, FBK_EIO, FBK_ENOTFOUND, FBK_ECORRUPT};
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *o[2];
    fbk_handle *h = spilled(&f, 100, 1, o);
    fbk_handle *w = tc_insert(f.p, 10, 9);
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        atomic_store(&f.ctx.fail_decode, codes[i]);
        const void *obj;
        int rc = fbk_load(h, &obj);
        cr_assert_eq(rc, FBK_ECODEC, "decode returned %d: load gave %s", codes[i],
                     fbk_err_name(rc));
        atomic_store(&f.ctx.fail_decode, 0);
        atomic_store(&f.ctx.fail_encode, codes[i]);
        rc = fbk_write_now(w);
        cr_assert_eq(rc, FBK_ECODEC, "encode returned %d: write_now gave %s", codes[i],
                     fbk_err_name(rc));
        atomic_store(&f.ctx.fail_encode, 0);
    }
    cr_assert_eq(tc_check(h, 100, 1), 0);
    fbk_handle_release(w);
    release3(h, o);
    fx_close(&f);
}

/* fbk.h: "On failure ... the objects involved are left exactly as they
 * were."  A load that fails must not reorder the LRU: the spilled item stays
 * beyond mem_items and no healthy item is pushed out (written) for it.
 *   E D C B | A(spilled, corrupt): fbk_load(A) fails -> B is still in memory. */
Test(failures, failed_load_leaves_the_lru_as_it_was)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h[5];
    for (int i = 0; i < 5; i++)
        h[i] = tc_insert(f.p, 100, (uint64_t)i);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1);
    fbk_key ka = tc_key(h[0]);
    cr_assert_eq(counting_corrupt(f.cb, &ka, 30), 0);
    const void *obj;
    cr_assert_eq(fbk_load(h[0], &obj), FBK_ECORRUPT);
    counting_fail(f.cb, CB_LOAD, FBK_EIO, 1);
    cr_assert_eq(fbk_load(h[0], &obj), FBK_EIO);
    void *mobj;
    cr_assert_eq(fbk_load_mut(h[0], &mobj), FBK_ECORRUPT);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1, "a failed load pushed a healthy item out");
    for (int i = 1; i < 5; i++) {
        cr_assert_eq(fbk_try_load(h[i], &obj), 0, "item %d was dropped by a failed load", i);
        fbk_unload(h[i]);
    }
    cr_assert_eq(counting_corrupt(f.cb, &ka, 30), 0);
    cr_assert_eq(tc_check(h[0], 100, 0), 0);
    for (int i = 0; i < 5; i++)
        fbk_handle_release(h[i]);
    fx_close(&f);
}
