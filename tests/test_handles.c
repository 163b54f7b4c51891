/* test_handles.c -- load / try_load / load_mut / try_load_mut / make_mut /
 * retain / release. */
#include "counting_backend.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

/* Inserts three items into a mem_items = 2 pool so that the first is spilled
 * (written and dropped); o[] gets the other two. */
static fbk_handle *spilled(fx *f, size_t len, uint64_t seed, fbk_handle *o[2])
{
    fbk_handle *h = tc_insert(f->p, len, seed);
    o[0] = tc_insert(f->p, len, seed + 1000);
    o[1] = tc_insert(f->p, len, seed + 2000);
    cr_assert_eq(fbk_store_drain(f->s), 0);
    fbk_key k = tc_key(h);
    cr_assert_eq(counting_times_stored(f->cb, &k), 1, "setup: the first item was not written");
    return h;
}

Test(handles, load_gives_the_inserted_object)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_blob *b = tu_blob(50, 1);
    fbk_handle *h = NULL;
    cr_assert_eq(fbk_insert(f.p, b, &h), 0);
    const void *obj = NULL;
    cr_assert_eq(fbk_load(h, &obj), 0);
    cr_assert_eq(obj, b, "an item in memory should be the very object inserted");
    fbk_unload(h);
    cr_assert_eq(fbk_handle_pool(h), f.p);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(handles, several_loads_at_once)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 50, 1);
    const void *a, *b, *c;
    cr_assert_eq(fbk_load(h, &a), 0);
    cr_assert_eq(fbk_load(h, &b), 0);
    cr_assert_eq(fbk_try_load(h, &c), 0);
    cr_assert_eq(a, b);
    cr_assert_eq(b, c);
    fbk_unload(h);
    fbk_unload(h);
    fbk_unload(h);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(handles, try_load_of_spilled_item_is_eagain_without_io)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *o[2];
    fbk_handle *h = spilled(&f, 100, 1, o);
    const void *obj = (const void *)&obj;
    cr_assert_eq(fbk_try_load(h, &obj), FBK_EAGAIN);
    cr_assert_eq(obj, (const void *)&obj, "out changed on failure");
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 0);
    cr_assert_eq(tc_check(h, 100, 1), 0);
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 1);
    cr_assert_eq(fbk_try_load(h, &obj), 0, "after a load it is in memory");
    cr_assert(tu_blob_check(obj, 100, 1));
    fbk_unload(h);
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 1);
    fbk_handle_release(h);
    fbk_handle_release(o[0]);
    fbk_handle_release(o[1]);
    fx_close(&f);
}

Test(handles, try_load_is_eagain_while_the_eviction_write_runs, .timeout = 60)
{
    fx f = {0};
    fx_open(&f, 2);
    counting_gate_close(f.cb, CB_STORE);
    fbk_handle *a = tc_insert(f.p, 100, 1);
    fbk_handle *b = tc_insert(f.p, 100, 2);
    fbk_handle *c = tc_insert(f.p, 100, 3);
    counting_gate_wait(f.cb, CB_STORE, 1);
    const void *obj;
    cr_assert_eq(fbk_try_load(a, &obj), FBK_EAGAIN, "try_load succeeded during the eviction write");
    /* the others are unaffected */
    cr_assert_eq(fbk_try_load(b, &obj), 0);
    fbk_unload(b);
    counting_gate_open(f.cb, CB_STORE);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(fbk_try_load(a, &obj), FBK_EAGAIN);
    cr_assert_eq(tc_check(a, 100, 1), 0);
    fbk_handle_release(a);
    fbk_handle_release(b);
    fbk_handle_release(c);
    fx_close(&f);
}

Test(handles, release_during_eviction_write_removes_the_copy_after_it, .timeout = 60)
{
    fx f = {0};
    fx_open(&f, 2);
    counting_gate_close(f.cb, CB_STORE);
    fbk_handle *a = tc_insert(f.p, 100, 1);
    fbk_handle *b = tc_insert(f.p, 100, 2);
    fbk_handle *c = tc_insert(f.p, 100, 3);
    fbk_key ka = tc_key(a);
    counting_gate_wait(f.cb, CB_STORE, 1);
    fbk_handle_release(a);
    fbk_handle_release(b);
    fbk_handle_release(c);
    cr_assert_eq(counting_calls(f.cb, CB_REMOVE), 0, "remove issued while the store was running");
    counting_gate_open(f.cb, CB_STORE);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1);
    cr_assert_eq(counting_calls(f.cb, CB_REMOVE), 1);
    cr_assert_eq(counting_times_removed(f.cb, &ka), 1);
    cr_assert_eq(counting_spill_size(f.cb), 0);
    cr_assert_eq(fbk_pool_size(f.p), 0);
    fx_close(&f);
}

Test(handles, retain_gives_the_same_item)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 10, 1);
    fbk_handle *r = fbk_handle_retain(h);
    cr_assert_eq(r, h);
    fbk_key k1 = tc_key(h), k2 = tc_key(r);
    cr_assert(fbk_key_equal(&k1, &k2));
    cr_assert_eq(fbk_pool_size(f.p), 1);
    fbk_handle_release(r);
    cr_assert_eq(fbk_pool_size(f.p), 1);
    cr_assert_eq(tc_check(h, 10, 1), 0);
    fbk_handle_release(h);
    cr_assert_eq(fbk_pool_size(f.p), 0);
    fx_close(&f);
}

Test(handles, last_release_destroys_the_object)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 10, 1);
    fbk_handle_retain(h);
    fbk_handle_release(h);
    cr_assert_eq(f.ctx.destroys, 0, "destroyed while a reference remained");
    fbk_handle_release(h);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(f.ctx.destroys, 1);
    cr_assert_eq(counting_total_calls(f.cb), 0, "an item never written needs no backend call");
    fx_close(&f);
}

Test(handles, last_release_removes_spill_copy_once)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *o[2];
    fbk_handle *h = spilled(&f, 10, 1, o);
    fbk_key k = tc_key(h);
    fbk_handle_retain(h);
    fbk_handle_retain(h);
    fbk_handle_release(h);
    fbk_handle_release(h);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REMOVE), 0, "removed while a reference remained");
    cr_assert_eq(tc_check(h, 10, 1), 0);
    fbk_handle_release(h);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REMOVE), 1);
    cr_assert_eq(counting_times_removed(f.cb, &k), 1);
    cr_assert_eq(counting_spill_has(f.cb, &k), 0);
    fbk_key k1 = tc_key(o[1]);
    fbk_handle_release(o[0]);
    fbk_handle_release(o[1]);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    /* loading h pushed o[0] out (written); o[1] never was */
    cr_assert_eq(counting_times_removed(f.cb, &k1), 0, "an item never written was removed");
    cr_assert_eq(counting_removed_count(f.cb), counting_stored_count(f.cb));
    cr_assert_eq(counting_spill_size(f.cb), 0);
    fx_close(&f);
}

Test(handles, load_mut_is_ebusy_with_another_reference)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 10, 1);
    fbk_key k0 = tc_key(h);
    fbk_handle_retain(h);
    void *obj = &obj;
    cr_assert_eq(fbk_load_mut(h, &obj), FBK_EBUSY);
    cr_assert_eq(fbk_try_load_mut(h, &obj), FBK_EBUSY);
    cr_assert_eq(obj, (void *)&obj, "out changed on failure");
    fbk_key k1 = tc_key(h);
    cr_assert(fbk_key_equal(&k0, &k1), "a failed load_mut changed the key");
    fbk_handle_release(h);
    cr_assert_eq(fbk_load_mut(h, &obj), 0, "the only reference again");
    fbk_unload_mut(h);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(handles, load_mut_is_ebusy_while_pinned)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 10, 1);
    const void *ro;
    void *obj;
    cr_assert_eq(fbk_load(h, &ro), 0);
    cr_assert_eq(fbk_load_mut(h, &obj), FBK_EBUSY);
    cr_assert_eq(fbk_try_load_mut(h, &obj), FBK_EBUSY);
    fbk_unload(h);
    cr_assert_eq(fbk_load_mut(h, &obj), 0);
    fbk_unload_mut(h);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(handles, load_mut_excludes_loads)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 10, 1);
    void *obj;
    cr_assert_eq(fbk_load_mut(h, &obj), 0);
    const void *ro;
    int rc = fbk_try_load(h, &ro);
    cr_assert(rc == FBK_EAGAIN || rc == FBK_EBUSY, "try_load during write access gave %s",
              fbk_err_name(rc));
    void *obj2;
    rc = fbk_try_load_mut(h, &obj2);
    cr_assert(rc == FBK_EAGAIN || rc == FBK_EBUSY, "second try_load_mut gave %s", fbk_err_name(rc));
    fbk_unload_mut(h);
    cr_assert_eq(fbk_try_load(h, &ro), 0);
    fbk_unload(h);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(handles, load_mut_of_unwritten_item_gives_a_new_key_and_no_backend_call)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 10, 1);
    fbk_key k0 = tc_key(h);
    void *obj = NULL;
    cr_assert_eq(fbk_load_mut(h, &obj), 0);
    fbk_key k1 = tc_key(h);
    cr_assert_not(fbk_key_equal(&k0, &k1), "load_mut kept the key");
    cr_assert(tu_blob_check(obj, 10, 1));
    fbk_unload_mut(h);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_total_calls(f.cb), 0);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(handles, load_mut_of_spilled_item_loads_it_and_removes_the_old_copy)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *o[2];
    fbk_handle *h = spilled(&f, 100, 1, o);
    fbk_key k0 = tc_key(h);
    void *obj = NULL;
    cr_assert_eq(fbk_try_load_mut(h, &obj), FBK_EAGAIN, "try_load_mut of a spilled item");
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 0);
    cr_assert_eq(fbk_load_mut(h, &obj), 0);
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 1);
    cr_assert(tu_blob_check(obj, 100, 1));
    fbk_key k1 = tc_key(h);
    cr_assert_not(fbk_key_equal(&k0, &k1));
    /* change it */
    fbk_blob *b = obj;
    b->data[0] ^= 0xFF;
    fbk_unload_mut(h);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REMOVE), 1);
    cr_assert_eq(counting_times_removed(f.cb, &k0), 1, "the old key's copy was not removed");
    cr_assert_eq(counting_spill_has(f.cb, &k0), 0);
    /* the change is kept, under the new key */
    cr_assert_eq(fbk_write_now(h), 0);
    cr_assert_eq(counting_times_stored(f.cb, &k1), 1);
    const void *ro;
    cr_assert_eq(fbk_load(h, &ro), 0);
    const fbk_blob *rb = ro;
    fbk_blob *want = tu_blob(100, 1);
    want->data[0] ^= 0xFF;
    cr_assert_eq(rb->len, 100);
    cr_assert_eq(memcmp(rb->data, want->data, 100), 0);
    fbk_blob_free(want);
    fbk_unload(h);
    fbk_handle_release(h);
    fbk_handle_release(o[0]);
    fbk_handle_release(o[1]);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_spill_size(f.cb), 0);
    fx_close(&f);
}

Test(handles, load_mut_of_written_item_in_memory_removes_its_copy)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 10, 1);
    cr_assert_eq(fbk_write_now(h), 0);
    fbk_key k0 = tc_key(h);
    void *obj;
    cr_assert_eq(fbk_try_load_mut(h, &obj), 0, "in memory: try_load_mut must succeed");
    fbk_unload_mut(h);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REMOVE), 1);
    cr_assert_eq(counting_times_removed(f.cb, &k0), 1);
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 0);
    fbk_handle_release(h);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REMOVE), 1);
    fx_close(&f);
}

Test(handles, write_after_load_mut_is_not_lost_on_eviction)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *h = tc_insert(f.p, 10, 1);
    cr_assert_eq(fbk_write_now(h), 0);
    void *obj;
    cr_assert_eq(fbk_load_mut(h, &obj), 0);
    memset(((fbk_blob *)obj)->data, 0x77, 10);
    fbk_unload_mut(h);
    fbk_handle *o1 = tc_insert(f.p, 10, 2);
    fbk_handle *o2 = tc_insert(f.p, 10, 3);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    fbk_key k = tc_key(h);
    cr_assert_eq(counting_times_stored(f.cb, &k), 1,
                 "the mutated item was not written under its new key");
    const void *ro;
    cr_assert_eq(fbk_load(h, &ro), 0);
    const fbk_blob *b = ro;
    for (int i = 0; i < 10; i++)
        cr_assert_eq(b->data[i], 0x77);
    fbk_unload(h);
    fbk_handle_release(h);
    fbk_handle_release(o1);
    fbk_handle_release(o2);
    fx_close(&f);
}

Test(handles, make_mut_of_shared_handle_clones_into_a_new_item)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 20, 1);
    fbk_key k0 = tc_key(h);
    fbk_handle *m = fbk_handle_retain(h);
    void *obj = NULL;
    cr_assert_eq(fbk_make_mut(&m, &obj), 0);
    cr_assert_neq(m, h, "make_mut of a shared handle must give a new handle");
    cr_assert_eq(f.ctx.clones, 1);
    fbk_key km = tc_key(m);
    cr_assert_not(fbk_key_equal(&k0, &km));
    cr_assert(tu_blob_check(obj, 20, 1));
    memset(((fbk_blob *)obj)->data, 0, 20);
    fbk_unload_mut(m);
    /* the old item is unchanged, keeps its key, and h is its only reference now */
    fbk_key k1 = tc_key(h);
    cr_assert(fbk_key_equal(&k0, &k1));
    cr_assert_eq(tc_check(h, 20, 1), 0);
    cr_assert_eq(fbk_pool_size(f.p), 2);
    void *o2;
    cr_assert_eq(fbk_load_mut(h, &o2), 0, "make_mut did not release its reference to the old item");
    fbk_unload_mut(h);
    fbk_handle_release(h);
    fbk_handle_release(m);
    cr_assert_eq(fbk_pool_size(f.p), 0);
    fx_close(&f);
}

Test(handles, make_mut_of_pinned_handle_clones)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 20, 1);
    fbk_handle *m = fbk_handle_retain(h);
    const void *ro;
    cr_assert_eq(fbk_load(h, &ro), 0);
    void *obj = NULL;
    cr_assert_eq(fbk_make_mut(&m, &obj), 0);
    cr_assert_neq(m, h);
    cr_assert_neq(obj, (void *)ro);
    fbk_unload_mut(m);
    cr_assert(tu_blob_check(ro, 20, 1));
    fbk_unload(h);
    fbk_handle_release(h);
    fbk_handle_release(m);
    fx_close(&f);
}

Test(handles, make_mut_without_codec_clone_uses_encode_and_decode)
{
    fx f = {0};
    fx_open(&f, 4);
    tc_ctx ctx = {0};
    fbk_codec c = tc_codec(&ctx, 0);
    fbk_pool *p = NULL;
    cr_assert_eq(fbk_pool_create(&p, f.s, &c, 4), 0);
    fbk_handle *h = tc_insert(p, 20, 5);
    fbk_handle *m = fbk_handle_retain(h);
    void *obj = NULL;
    cr_assert_eq(fbk_make_mut(&m, &obj), 0);
    cr_assert_neq(m, h);
    cr_assert(tu_blob_check(obj, 20, 5));
    cr_assert_geq(ctx.encodes, 1);
    cr_assert_geq(ctx.decodes, 1);
    fbk_unload_mut(m);
    fbk_handle_release(h);
    fbk_handle_release(m);
    fbk_pool_release(p);
    fx_close(&f);
}

Test(handles, make_mut_of_unshared_handle_is_load_mut)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 20, 1);
    cr_assert_eq(fbk_write_now(h), 0);
    fbk_key k0 = tc_key(h);
    fbk_handle *m = h;
    void *obj;
    cr_assert_eq(fbk_make_mut(&m, &obj), 0);
    cr_assert_eq(m, h, "unshared: same handle");
    cr_assert_eq(f.ctx.clones, 0);
    fbk_key k1 = tc_key(h);
    cr_assert_not(fbk_key_equal(&k0, &k1));
    fbk_unload_mut(m);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_times_removed(f.cb, &k0), 1);
    cr_assert_eq(fbk_pool_size(f.p), 1);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(handles, make_mut_failure_leaves_handle_unchanged)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 20, 1);
    fbk_handle *m = fbk_handle_retain(h);
    atomic_store(&f.ctx.fail_clone, 1);
    void *obj = NULL;
    cr_assert_eq(fbk_make_mut(&m, &obj), FBK_ECODEC);
    cr_assert_eq(m, h);
    cr_assert_eq(fbk_pool_size(f.p), 1);
    atomic_store(&f.ctx.fail_clone, 0);
    fbk_handle_release(m);
    cr_assert_eq(tc_check(h, 20, 1), 0);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(handles, pool_size_counts_live_items)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *h[6];
    for (int i = 0; i < 6; i++) {
        h[i] = tc_insert(f.p, 10, (uint64_t)i);
        cr_assert_eq(fbk_pool_size(f.p), (size_t)i + 1);
    }
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(fbk_pool_size(f.p), 6, "spilled items are live too");
    fbk_handle_release(h[0]);
    fbk_handle_release(h[5]);
    cr_assert_eq(fbk_pool_size(f.p), 4);
    for (int i = 1; i < 5; i++)
        fbk_handle_release(h[i]);
    cr_assert_eq(fbk_pool_size(f.p), 0);
    fx_close(&f);
}

/* A task pins the value: make_mut must clone, and the task still writes the
 * value it pinned, under the old key, which goes away once the task ends. */
Test(handles, make_mut_while_a_task_pins_clones_and_the_task_finishes, .timeout = 60)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 20, 1);
    fbk_key k0 = tc_key(h);
    counting_gate_close(f.cb, CB_STORE);
    fbk_task *t = NULL;
    cr_assert_eq(fbk_write_now_async(h, &t), 0);
    counting_gate_wait(f.cb, CB_STORE, 1);
    fbk_handle *m = h;
    void *obj = NULL;
    cr_assert_eq(fbk_make_mut(&m, &obj), 0);
    cr_assert_neq(m, h, "pinned by a task: make_mut must clone");
    memset(((fbk_blob *)obj)->data, 0x33, 20);
    fbk_unload_mut(m);
    counting_gate_open(f.cb, CB_STORE);
    cr_assert_eq(fbk_task_wait(t), 0);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_times_stored(f.cb, &k0), 1);
    cr_assert_eq(counting_times_removed(f.cb, &k0), 1, "the old item's copy outlived it");
    cr_assert_eq(fbk_pool_size(f.p), 1);
    const void *ro;
    cr_assert_eq(fbk_load(m, &ro), 0);
    cr_assert_eq(((const fbk_blob *)ro)->data[19], 0x33);
    fbk_unload(m);
    fbk_handle_release(m);
    fx_close(&f);
}

Test(handles, handles_and_locations_of_another_store_are_einval)
{
    fx a = {0}, b = {0};
    fx_open(&a, 4);
    fx_open(&b, 4);
    fbk_location *lb = NULL;
    cr_assert_eq(fbk_location_open(b.s, "L", &lb), 0);
    fbk_handle *hb = tc_insert(b.p, 10, 1);
    cr_assert_eq(fbk_persist(hb, lb), 0);
    fbk_key k = tc_key(hb);
    fbk_handle *ha = tc_insert(a.p, 10, 2);
    cr_assert_eq(fbk_persist(ha, lb), FBK_EINVAL);
    fbk_handle *r = NULL;
    cr_assert_eq(fbk_register(a.p, lb, &k, &r), FBK_EINVAL);
    cr_assert_null(r);
    fbk_handle_release(ha);
    fbk_handle_release(hb);
    fbk_location_close(lb);
    fx_close(&a);
    fx_close(&b);
}

typedef struct loader {
    fbk_handle *h;
    int rc;
    int ok;
} loader;

static void *load_thread(void *arg)
{
    loader *l = arg;
    const void *obj = NULL;
    l->rc = fbk_load(l->h, &obj);
    if (l->rc == 0) {
        l->ok = tu_blob_check(obj, 100, 1);
        fbk_unload(l->h);
    }
    return NULL;
}

/* fbk_load of an item whose eviction write is running waits for it and then
 * returns the value (read back, or kept). */
Test(handles, load_during_eviction_write_waits_and_returns_the_value, .timeout = 60)
{
    fx f = {0};
    fx_open(&f, 2);
    counting_gate_close(f.cb, CB_STORE);
    fbk_handle *a = tc_insert(f.p, 100, 1);
    fbk_handle *b = tc_insert(f.p, 100, 2);
    fbk_handle *c = tc_insert(f.p, 100, 3);
    counting_gate_wait(f.cb, CB_STORE, 1);
    loader l = {.h = a, .rc = -100, .ok = 0};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, load_thread, &l), 0);
    counting_gate_open(f.cb, CB_STORE);
    pthread_join(th, NULL);
    cr_assert_eq(l.rc, 0, "load: %s", fbk_err_name(l.rc));
    cr_assert(l.ok, "wrong bytes");
    cr_assert_eq(fbk_store_drain(f.s), 0);
    fbk_key ka = tc_key(a);
    cr_assert_eq(counting_times_stored(f.cb, &ka), 1);
    cr_assert_leq(counting_calls(f.cb, CB_LOAD), 1);
    fbk_handle_release(a);
    fbk_handle_release(b);
    fbk_handle_release(c);
    fx_close(&f);
}

typedef struct inserter {
    fbk_pool *p;
    int n;
    fbk_handle *h[8];
} inserter;

static void *insert_thread(void *arg)
{
    inserter *in = arg;
    for (int i = 0; i < in->n; i++)
        in->h[i] = tc_insert(in->p, 10, 100 + (uint64_t)i);
    return NULL;
}

/* fbk_try_load "never blocks on I/O": not even when the store has many
 * eviction writes queued (another thread's inserts outran a stuck backend)
 * and the access itself pushes one more item out.  A try_load that waits
 * for the workers here hangs until the timeout. */
Test(handles, try_load_never_waits_for_queued_writes, .timeout = 30)
{
    fx f = {0};
    f.opts.threads = 1;
    f.opts.max_queued_writes = 4; /* the inserter's five writes exceed it */
    fx_open(&f, 1);
    fbk_handle *a = tc_insert(f.p, 10, 1);
    const void *obj;
    cr_assert_eq(fbk_load(a, &obj), 0); /* pinned: stays in memory beyond mem_items */
    counting_gate_close(f.cb, CB_STORE);
    inserter in = {.p = f.p, .n = 6};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, insert_thread, &in), 0);
    /* the inserter's six inserts queue five writes; wait until all are in */
    while (fbk_pool_size(f.p) < 7)
        sched_yield();
    counting_gate_wait(f.cb, CB_STORE, 1);
    const void *again;
    int rc = fbk_try_load(a, &again); /* moves a to the front: pushes one more out */
    cr_assert(rc == 0 || rc == FBK_EAGAIN, "%s", fbk_err_name(rc));
    if (rc == 0)
        fbk_unload(a);
    counting_gate_open(f.cb, CB_STORE);
    pthread_join(th, NULL);
    fbk_unload(a);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(tc_check(a, 10, 1), 0);
    fbk_handle_release(a);
    for (int i = 0; i < 6; i++)
        fbk_handle_release(in.h[i]);
    fx_close(&f);
}
