/* test_tasks.c -- fbk_write_now_async / fbk_persist_async / fbk_prefetch and
 * fbk_task_wait / fbk_task_done / fbk_task_release. */
#include "counting_backend.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <string.h>

Test(tasks, write_now_async_then_wait)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 100, 1);
    fbk_task *t = NULL;
    cr_assert_eq(fbk_write_now_async(h, &t), 0);
    cr_assert_not_null(t);
    cr_assert_eq(fbk_task_wait(t), 0);
    fbk_key k = tc_key(h);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1);
    cr_assert_eq(counting_times_stored(f.cb, &k), 1);
    /* a second one has nothing to do */
    cr_assert_eq(fbk_write_now_async(h, &t), 0);
    cr_assert_eq(fbk_task_wait(t), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(tasks, task_done_reports_completion, .timeout = 60)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 100, 1);
    counting_gate_close(f.cb, CB_STORE);
    fbk_task *t = NULL;
    cr_assert_eq(fbk_write_now_async(h, &t), 0);
    counting_gate_wait(f.cb, CB_STORE, 1);
    cr_assert_eq(fbk_task_done(t), 0, "done while the store is held at the gate");
    counting_gate_open(f.cb, CB_STORE);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(fbk_task_done(t), 1, "not done after drain");
    cr_assert_eq(fbk_task_wait(t), 0);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(tasks, released_task_still_completes, .timeout = 60)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 100, 1);
    counting_gate_close(f.cb, CB_STORE);
    fbk_task *t = NULL;
    cr_assert_eq(fbk_write_now_async(h, &t), 0);
    counting_gate_wait(f.cb, CB_STORE, 1);
    fbk_task_release(t);
    counting_gate_open(f.cb, CB_STORE);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    fbk_key k = tc_key(h);
    cr_assert_eq(counting_times_stored(f.cb, &k), 1);
    cr_assert_eq(fbk_write_now(h), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(tasks, fire_and_forget_write_then_drain)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h[3];
    for (int i = 0; i < 3; i++) {
        h[i] = tc_insert(f.p, 100, (uint64_t)i);
        cr_assert_eq(fbk_write_now_async(h[i], NULL), 0);
    }
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 3);
    for (int i = 0; i < 3; i++) {
        fbk_key k = tc_key(h[i]);
        cr_assert_eq(counting_times_stored(f.cb, &k), 1);
        fbk_handle_release(h[i]);
    }
    fx_close(&f);
}

Test(tasks, persist_async_then_wait)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), 0);
    fbk_handle *h = tc_insert(f.p, 100, 1);
    fbk_key k = tc_key(h);
    fbk_task *t = NULL;
    cr_assert_eq(fbk_persist_async(h, loc, &t), 0);
    cr_assert_eq(fbk_task_wait(t), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 1);
    cr_assert_eq(counting_calls(f.cb, CB_PERSIST), 1);
    cr_assert_eq(fbk_location_contains(loc, &k), 1);
    cr_assert_eq(counting_loc_has(f.cb, "L", &k), 1);
    /* again: no backend call */
    counting_reset(f.cb);
    cr_assert_eq(fbk_persist_async(h, loc, &t), 0);
    cr_assert_eq(fbk_task_wait(t), 0);
    cr_assert_eq(counting_total_calls(f.cb), 0);
    fbk_handle_release(h);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(tasks, persist_async_fire_and_forget_then_drain)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), 0);
    fbk_handle *h = tc_insert(f.p, 100, 1);
    fbk_key k = tc_key(h);
    cr_assert_eq(fbk_persist_async(h, loc, NULL), 0);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(fbk_location_contains(loc, &k), 1);
    cr_assert_eq(counting_loc_has(f.cb, "L", &k), 1);
    fbk_handle_release(h);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(tasks, persist_async_with_location_closed_before_it_runs, .timeout = 60)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), 0);
    fbk_handle *h = tc_insert(f.p, 100, 1);
    fbk_key k = tc_key(h);
    counting_gate_close(f.cb, CB_STORE);
    fbk_task *t = NULL;
    cr_assert_eq(fbk_persist_async(h, loc, &t), 0);
    counting_gate_wait(f.cb, CB_STORE, 1);
    fbk_location_close(loc); /* the task keeps it alive */
    fbk_handle_release(h);   /* the task keeps the item alive */
    counting_gate_open(f.cb, CB_STORE);
    cr_assert_eq(fbk_task_wait(t), 0);
    cr_assert_eq(counting_loc_has(f.cb, "L", &k), 1);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_spill_has(f.cb, &k), 0, "spill copy left after the last user went");
    cr_assert_eq(fbk_pool_size(f.p), 0);
    fx_close(&f);
}

Test(tasks, prefetch_loads_a_spilled_item_into_memory)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *h[3];
    for (int i = 0; i < 3; i++)
        h[i] = tc_insert(f.p, 100, (uint64_t)i);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    const void *obj;
    cr_assert_eq(fbk_try_load(h[0], &obj), FBK_EAGAIN);
    fbk_task *t = NULL;
    cr_assert_eq(fbk_prefetch(h[0], &t), 0);
    cr_assert_eq(fbk_task_wait(t), 0);
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 1);
    cr_assert_eq(fbk_try_load(h[0], &obj), 0, "prefetched item not in memory");
    cr_assert(tu_blob_check(obj, 100, 0));
    fbk_unload(h[0]);
    for (int i = 0; i < 3; i++)
        fbk_handle_release(h[i]);
    fx_close(&f);
}

Test(tasks, prefetch_of_item_in_memory_does_nothing)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 100, 1);
    fbk_task *t = NULL;
    cr_assert_eq(fbk_prefetch(h, &t), 0);
    cr_assert_eq(fbk_task_wait(t), 0);
    cr_assert_eq(fbk_prefetch(h, NULL), 0);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_total_calls(f.cb), 0);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(tasks, prefetch_fire_and_forget_then_drain)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *h[3];
    for (int i = 0; i < 3; i++)
        h[i] = tc_insert(f.p, 100, (uint64_t)i);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(fbk_prefetch(h[0], NULL), 0);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    const void *obj;
    cr_assert_eq(fbk_try_load(h[0], &obj), 0);
    fbk_unload(h[0]);
    for (int i = 0; i < 3; i++)
        fbk_handle_release(h[i]);
    fx_close(&f);
}

Test(tasks, async_error_is_the_task_result)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 100, 1);
    counting_fail(f.cb, CB_STORE, FBK_EIO, 1);
    fbk_task *t = NULL;
    cr_assert_eq(fbk_write_now_async(h, &t), 0);
    cr_assert_eq(fbk_task_wait(t), FBK_EIO);
    cr_assert_eq(tc_check(h, 100, 1), 0);
    cr_assert_eq(fbk_write_now(h), 0, "the fault was for one call only");
    fbk_handle_release(h);
    fx_close(&f);
}

typedef struct errlog {
    _Atomic int calls;
    _Atomic int last;
} errlog;

static void on_err(int err, const char *msg, void *arg)
{
    errlog *e = arg;
    (void)msg;
    atomic_store(&e->last, err);
    atomic_fetch_add(&e->calls, 1);
}

Test(tasks, fire_and_forget_error_goes_to_on_error_and_drain)
{
    errlog e = {0};
    fx f = {0};
    f.opts.on_error = on_err;
    f.opts.on_error_arg = &e;
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 100, 1);
    counting_fail(f.cb, CB_STORE, FBK_ENOSPC, 1);
    cr_assert_eq(fbk_write_now_async(h, NULL), 0);
    cr_assert_eq(fbk_store_drain(f.s), FBK_ENOSPC);
    cr_assert_eq(atomic_load(&e.calls), 1);
    cr_assert_eq(atomic_load(&e.last), FBK_ENOSPC);
    cr_assert_eq(fbk_store_drain(f.s), 0, "drain reports an error once");
    fbk_store_stats st;
    fbk_store_stats_get(f.s, &st);
    cr_assert_eq(st.background_errors, 1);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(tasks, async_pins_the_value_before_returning, .timeout = 60)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 100, 1);
    counting_gate_close(f.cb, CB_STORE);
    fbk_task *t = NULL;
    cr_assert_eq(fbk_write_now_async(h, &t), 0);
    /* the task holds the current value: a mutation now must not change
     * what the task writes under the old key */
    fbk_key k0 = tc_key(h);
    void *obj;
    int rc = fbk_try_load_mut(h, &obj);
    cr_assert(rc == FBK_EBUSY || rc == FBK_EAGAIN, "write access while a task pins the value: %s",
              fbk_err_name(rc));
    counting_gate_open(f.cb, CB_STORE);
    cr_assert_eq(fbk_task_wait(t), 0);
    cr_assert_eq(counting_times_stored(f.cb, &k0), 1);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(tasks, many_tasks_in_flight)
{
    fx f = {0};
    f.opts.threads = 3;
    fx_open(&f, 8);
    enum { M = 32 };
    fbk_handle *h[M];
    fbk_task *t[M];
    for (int i = 0; i < M; i++) {
        h[i] = tc_insert(f.p, 256, (uint64_t)i);
        cr_assert_eq(fbk_write_now_async(h[i], &t[i]), 0);
    }
    for (int i = M - 1; i >= 0; i--)
        cr_assert_eq(fbk_task_wait(t[i]), 0);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), M, "each item written once");
    for (int i = 0; i < M; i++) {
        cr_assert_eq(tc_check(h[i], 256, (uint64_t)i), 0);
        fbk_handle_release(h[i]);
    }
    fx_close(&f);
}

Test(tasks, task_wait_hands_the_error_message_to_the_waiter)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 100, 1);
    counting_fail(f.cb, CB_STORE, FBK_EIO, 1);
    fbk_task *t = NULL;
    cr_assert_eq(fbk_write_now_async(h, &t), 0);
    cr_assert_eq(fbk_task_wait(t), FBK_EIO);
    cr_assert_neq(fbk_errmsg()[0], '\0', "no message on the waiting thread");
    cr_assert(strstr(fbk_errmsg(), "injected") != NULL, "message \"%s\" is not the backend's",
              fbk_errmsg());
    fbk_handle_release(h);
    fx_close(&f);
}

/* A failure with someone to return it to is not a background failure. */
Test(tasks, error_of_an_awaited_task_does_not_go_to_on_error)
{
    errlog e = {0};
    fx f = {0};
    f.opts.on_error = on_err;
    f.opts.on_error_arg = &e;
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 100, 1);
    counting_fail(f.cb, CB_STORE, FBK_EIO, 1);
    fbk_task *t = NULL;
    cr_assert_eq(fbk_write_now_async(h, &t), 0);
    cr_assert_eq(fbk_task_wait(t), FBK_EIO);
    cr_assert_eq(fbk_store_drain(f.s), 0, "the error was returned by fbk_task_wait already");
    cr_assert_eq(atomic_load(&e.calls), 0);
    fbk_handle_release(h);
    fx_close(&f);
}

/* ... but once the caller stopped waiting (fbk_task_release), it is. */
Test(tasks, error_of_a_released_task_goes_to_on_error, .timeout = 60)
{
    errlog e = {0};
    fx f = {0};
    f.opts.on_error = on_err;
    f.opts.on_error_arg = &e;
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 100, 1);
    counting_fail(f.cb, CB_STORE, FBK_ENOSPC, 1);
    counting_gate_close(f.cb, CB_STORE);
    fbk_task *t = NULL;
    cr_assert_eq(fbk_write_now_async(h, &t), 0);
    counting_gate_wait(f.cb, CB_STORE, 1);
    fbk_task_release(t);
    counting_gate_open(f.cb, CB_STORE);
    cr_assert_eq(fbk_store_drain(f.s), FBK_ENOSPC);
    cr_assert_eq(atomic_load(&e.calls), 1);
    cr_assert_eq(atomic_load(&e.last), FBK_ENOSPC);
    fbk_handle_release(h);
    fx_close(&f);
}
