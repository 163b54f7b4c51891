/* test_lifecycle.c -- store / pool / handle / location lifetimes and stats. */
#include "counting_backend.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <fbk_backend.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

Test(lifecycle, handles_keep_working_after_store_close, .timeout = 60)
{
    counting *cb = NULL;
    fbk_store *s = NULL;
    cr_assert_eq(counting_open(&s, NULL, &cb), 0);
    fbk_codec c = tc_codec(NULL, 1);
    fbk_pool *p = NULL;
    cr_assert_eq(fbk_pool_create(&p, s, &c, 2), 0);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(s, "L", &loc), 0);
    fbk_handle *h[4];
    for (int i = 0; i < 3; i++)
        h[i] = tc_insert(p, 100, (uint64_t)i);
    fbk_store_close(s);
    cr_assert_eq(counting_close_calls(cb), 0, "backend closed while pools and handles live");
    /* everything still works */
    h[3] = tc_insert(p, 100, 3);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(tc_check(h[i], 100, (uint64_t)i), 0, "item %d", i);
    cr_assert_eq(fbk_write_now(h[3]), 0);
    cr_assert_eq(fbk_persist(h[2], loc), 0);
    cr_assert_eq(fbk_location_sync(loc), 0);
    fbk_task *t = NULL;
    cr_assert_eq(fbk_write_now_async(h[1], &t), 0);
    cr_assert_eq(fbk_task_wait(t), 0);
    void *obj;
    cr_assert_eq(fbk_load_mut(h[0], &obj), 0);
    fbk_unload_mut(h[0]);
    fbk_key k2 = tc_key(h[2]);
    cr_assert_eq(counting_loc_has(cb, "L", &k2), 1);

    fbk_location_close(loc);
    fbk_pool_release(p);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(counting_close_calls(cb), 0);
        fbk_handle_release(h[i]);
    }
    /* the last user is gone: the backend is closed, once, after the
     * background removes of the released items' copies */
    counting_wait_closed(cb);
    cr_assert_eq(counting_close_calls(cb), 1);
    cr_assert_eq(counting_spill_size(cb), 0, "spill copies left behind at close");
    cr_assert_eq(counting_violations(cb), 0);
    counting_free(cb);
}

Test(lifecycle, store_close_with_nothing_open_closes_the_backend, .timeout = 60)
{
    counting *cb = NULL;
    fbk_store *s = NULL;
    cr_assert_eq(counting_open(&s, NULL, &cb), 0);
    cr_assert_eq(fbk_store_drain(s), 0);
    fbk_store_close(s);
    counting_wait_closed(cb);
    cr_assert_eq(counting_close_calls(cb), 1);
    cr_assert_eq(counting_total_calls(cb), 0);
    counting_free(cb);
}

Test(lifecycle, location_keeps_store_alive, .timeout = 60)
{
    counting *cb = NULL;
    fbk_store *s = NULL;
    cr_assert_eq(counting_open(&s, NULL, &cb), 0);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(s, "L", &loc), 0);
    fbk_store_close(s);
    cr_assert_eq(counting_close_calls(cb), 0);
    cr_assert_eq(fbk_location_sync(loc), 0);
    cr_assert_eq(fbk_location_count(loc), 0);
    fbk_location_close(loc);
    counting_wait_closed(cb);
    cr_assert_eq(counting_calls(cb, CB_CLOSE_LOCATION), 1);
    counting_free(cb);
}

Test(lifecycle, pool_release_with_live_handles_keeps_them_working)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *h[4];
    for (int i = 0; i < 4; i++)
        h[i] = tc_insert(f.p, 100, (uint64_t)i);
    fbk_pool *p = f.p;
    fbk_pool_release(f.p);
    f.p = NULL;
    cr_assert_eq(fbk_handle_pool(h[0]), p);
    cr_assert_eq(fbk_pool_size(p), 4);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(tc_check(h[i], 100, (uint64_t)i), 0, "item %d", i);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    void *obj;
    cr_assert_eq(fbk_load_mut(h[3], &obj), 0);
    fbk_unload_mut(h[3]);
    cr_assert_eq(fbk_write_now(h[3]), 0);
    for (int i = 0; i < 4; i++)
        fbk_handle_release(h[i]);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_spill_size(f.cb), 0);
    /* every object ever made (4 inserted, the decoded ones, clones) was
     * destroyed exactly once */
    cr_assert_eq(f.ctx.destroys, 4 + f.ctx.decodes + f.ctx.clones, "destroys %lu, decodes %lu",
                 (unsigned long)f.ctx.destroys, (unsigned long)f.ctx.decodes);
    fx_close(&f); /* releases NULL pool: a no-op */
}

Test(lifecycle, drain_with_nothing_queued_returns_0)
{
    fx f = {0};
    fx_open(&f, 2);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    fx_close(&f);
}

Test(lifecycle, drain_waits_for_work_queued_by_work, .timeout = 60)
{
    fx f = {0};
    fx_open(&f, 2);
    counting_gate_close(f.cb, CB_STORE);
    fbk_handle *h[3];
    for (int i = 0; i < 3; i++)
        h[i] = tc_insert(f.p, 10, (uint64_t)i);
    counting_gate_wait(f.cb, CB_STORE, 1);
    fbk_handle_release(h[0]); /* its eviction write then queues a remove */
    counting_gate_open(f.cb, CB_STORE);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_REMOVE), 1, "drain returned before the follow-up remove");
    fbk_handle_release(h[1]);
    fbk_handle_release(h[2]);
    fx_close(&f);
}

Test(lifecycle, stats_count_backend_work)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *h[5];
    for (int i = 0; i < 5; i++)
        h[i] = tc_insert(f.p, 10, (uint64_t)i);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    fbk_store_stats st;
    fbk_store_stats_get(f.s, &st);
    cr_assert_eq(st.stores, 3);
    cr_assert_eq(st.evictions, 3);
    cr_assert_eq(st.loads, 0);
    cr_assert_eq(st.removes, 0);
    cr_assert_eq(st.eviction_failures, 0);
    cr_assert_eq(st.background_errors, 0);
    cr_assert_eq(tc_check(h[0], 10, 0), 0);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    fbk_store_stats_get(f.s, &st);
    cr_assert_eq(st.loads, 1);
    cr_assert_eq(st.stores, counting_stored_count(f.cb));
    for (int i = 0; i < 5; i++)
        fbk_handle_release(h[i]);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    fbk_store_stats_get(f.s, &st);
    cr_assert_eq(st.removes, counting_removed_count(f.cb));
    cr_assert_eq(st.removes, st.stores, "every written copy removed after the last release");
    cr_assert_eq(counting_spill_size(f.cb), 0);
    fx_close(&f);
}

Test(lifecycle, two_pools_share_one_store)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_codec c = tc_codec(NULL, 1);
    fbk_pool *q = NULL;
    cr_assert_eq(fbk_pool_create(&q, f.s, &c, 2), 0);
    fbk_handle *a[3], *b[3];
    for (int i = 0; i < 3; i++) {
        a[i] = tc_insert(f.p, 10, (uint64_t)i);
        b[i] = tc_insert(q, 10, 100 + (uint64_t)i);
    }
    cr_assert_eq(fbk_store_drain(f.s), 0);
    /* each pool has its own LRU of 2 */
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 2);
    cr_assert_eq(fbk_pool_size(f.p), 3);
    cr_assert_eq(fbk_pool_size(q), 3);
    cr_assert_eq(fbk_handle_pool(b[0]), q);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(tc_check(a[i], 10, (uint64_t)i), 0);
        cr_assert_eq(tc_check(b[i], 10, 100 + (uint64_t)i), 0);
        fbk_handle_release(a[i]);
        fbk_handle_release(b[i]);
    }
    fbk_pool_release(q);
    fx_close(&f);
}

Test(lifecycle, pool_create_with_zero_mem_items_is_einval_or_works)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_codec c = tc_codec(NULL, 1);
    fbk_pool *q = NULL;
    int rc = fbk_pool_create(&q, f.s, &c, 0);
    if (rc == 0) {
        fbk_handle *h = tc_insert(q, 10, 1);
        cr_assert_eq(fbk_store_drain(f.s), 0);
        cr_assert_eq(tc_check(h, 10, 1), 0);
        fbk_handle_release(h);
        fbk_pool_release(q);
    } else {
        cr_assert_eq(rc, FBK_EINVAL);
        cr_assert_null(q);
    }
    fx_close(&f);
}

static void *close_thread(void *arg)
{
    fbk_store_close(arg);
    return NULL;
}

/* A fire-and-forget task holds the last reference to an item, whose pool and
 * store the user has already let go: when the task ends, the item, the pool
 * and the store go too -- after the item's spill copy was removed. */
Test(lifecycle, task_holding_the_last_reference_frees_everything, .timeout = 60)
{
    counting *cb = NULL;
    fbk_store *s = NULL;
    cr_assert_eq(counting_open(&s, NULL, &cb), 0);
    fbk_codec c = tc_codec(NULL, 1);
    fbk_pool *p = NULL;
    cr_assert_eq(fbk_pool_create(&p, s, &c, 4), 0);
    fbk_handle *h = tc_insert(p, 100, 1);
    fbk_key k = tc_key(h);
    counting_gate_close(cb, CB_STORE);
    cr_assert_eq(fbk_write_now_async(h, NULL), 0);
    counting_gate_wait(cb, CB_STORE, 1);
    fbk_handle_release(h);
    fbk_pool_release(p);
    /* fbk_store_close may wait for the running work: call it elsewhere */
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, close_thread, s), 0);
    counting_gate_open(cb, CB_STORE);
    pthread_join(th, NULL);
    counting_wait_closed(cb);
    cr_assert_eq(counting_close_calls(cb), 1);
    cr_assert_eq(counting_times_stored(cb, &k), 1);
    cr_assert_eq(counting_times_removed(cb, &k), 1, "the spill copy was not removed before close");
    cr_assert_eq(counting_spill_size(cb), 0);
    cr_assert_eq(counting_violations(cb), 0);
    counting_free(cb);
}

/* fbk_pool_create copies *codec: changing the caller's struct afterwards
 * changes nothing. */
Test(lifecycle, pool_keeps_its_own_copy_of_the_codec)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_codec c = tc_codec(NULL, 1);
    fbk_pool *q = NULL;
    cr_assert_eq(fbk_pool_create(&q, f.s, &c, 2), 0);
    memset(&c, 0, sizeof c);
    fbk_handle *h[3];
    for (int i = 0; i < 3; i++)
        h[i] = tc_insert(q, 50, (uint64_t)i);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(tc_check(h[i], 50, (uint64_t)i), 0);
        fbk_handle_release(h[i]);
    }
    fbk_pool_release(q);
    fx_close(&f);
}

/* Evictions are written by opts.threads workers (default 1) at once.
 * (expect + 1 evictions are queued: one more than can run, and few enough
 * that fbk_insert's backpressure, if any, does not hold the inserting
 * thread while the stores are held at the gate.) */
static void evictions_in_parallel(unsigned threads, unsigned expect)
{
    fx f = {0};
    f.opts.threads = threads;
    fx_open(&f, 1);
    counting_gate_close(f.cb, CB_STORE);
    const unsigned n = expect + 2;
    fbk_handle *h[8];
    for (unsigned i = 0; i < n; i++)
        h[i] = tc_insert(f.p, 10, (uint64_t)i);
    counting_gate_wait(f.cb, CB_STORE, expect);
    counting_gate_open(f.cb, CB_STORE);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), n - 1);
    cr_assert_eq(counting_max_active(f.cb, CB_STORE), expect, "%u stores at once with %u threads",
                 counting_max_active(f.cb, CB_STORE), threads);
    for (unsigned i = 0; i < n; i++)
        fbk_handle_release(h[i]);
    fx_close(&f);
}

Test(lifecycle, one_worker_writes_one_eviction_at_a_time, .timeout = 60)
{
    evictions_in_parallel(1, 1);
}

Test(lifecycle, default_is_one_worker, .timeout = 60) { evictions_in_parallel(0, 1); }

Test(lifecycle, two_workers_write_two_evictions_at_once, .timeout = 60)
{
    evictions_in_parallel(2, 2);
}

Test(lifecycle, three_workers_write_three_evictions_at_once, .timeout = 60)
{
    evictions_in_parallel(3, 3);
}

Test(lifecycle, registered_handles_outlive_their_location)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), 0);
    fbk_handle *h = tc_insert(f.p, 40, 6);
    fbk_key k = tc_key(h);
    cr_assert_eq(fbk_persist(h, loc), 0);
    fbk_handle_release(h);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    fbk_handle *r = NULL;
    cr_assert_eq(fbk_register(f.p, loc, &k, &r), 0);
    fbk_location_close(loc);
    cr_assert_eq(counting_calls(f.cb, CB_CLOSE_LOCATION), 1);
    cr_assert_eq(tc_check(r, 40, 6), 0);
    fbk_handle_release(r);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_spill_size(f.cb), 0);
    cr_assert_eq(counting_loc_has(f.cb, "L", &k), 1);
    fx_close(&f);
}

/* The default worker count is the backend table's preference (version 3
 * `workers`): 2 for file:, 1 for lmdb: and mem:, also when the program opens
 * the built-in table itself or wraps a copy of it; a version-2 table is
 * never asked; opts.threads overrides. */
static unsigned threads_of(const fbk_backend_ops *ops, void *self, unsigned threads)
{
    fbk_store *s = NULL;
    fbk_store_options o = {.threads = threads};
    int rc = fbk_store_open_backend(&s, ops, self, &o);
    cr_assert_eq(rc, 0, "%s", fbk_errmsg());
    unsigned n = fbk_store_threads(s);
    fbk_store_close(s);
    return n;
}

Test(lifecycle, default_workers_come_from_the_backend_table)
{
    char uri[4200];
    const char *dir = tu_fresh_dir("workers_file");
    snprintf(uri, sizeof uri, "file:%s", dir);
    fbk_store *s = NULL;
    cr_assert_eq(fbk_store_open(&s, uri, NULL), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_store_threads(s), 2);
    fbk_store_close(s);
    snprintf(uri, sizeof uri, "lmdb:%s", tu_fresh_dir("workers_lmdb"));
    cr_assert_eq(fbk_store_open(&s, uri, NULL), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_store_threads(s), 1);
    fbk_store_close(s);
    cr_assert_eq(fbk_store_open(&s, "mem:", NULL), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_store_threads(s), 1);
    fbk_store_close(s);
    cr_assert_eq(fbk_store_threads(NULL), 0);

    const fbk_backend_ops *ops = NULL;
    void *self = NULL;
    cr_assert_eq(fbk_backend_file_create(dir, NULL, &ops, &self), 0, "%s", fbk_errmsg());
    cr_assert_eq(threads_of(ops, self, 0), 2, "the built-in file: table, opened directly");
    /* a wrapper's copy keeps the preference; a version-2 copy is not asked */
    static fbk_backend_ops copy;
    copy = *ops;
    cr_assert_eq(fbk_backend_file_create(dir, NULL, &ops, &self), 0, "%s", fbk_errmsg());
    cr_assert_eq(threads_of(&copy, self, 0), 2, "a copy of the file: table");
    copy.version = 2;
    cr_assert_eq(fbk_backend_file_create(dir, NULL, &ops, &self), 0, "%s", fbk_errmsg());
    cr_assert_eq(threads_of(&copy, self, 0), 1, "a version-2 table: the core's default");
    cr_assert_eq(fbk_backend_file_create(dir, NULL, &ops, &self), 0, "%s", fbk_errmsg());
    cr_assert_eq(threads_of(ops, self, 3), 3, "opts.threads wins");
}
