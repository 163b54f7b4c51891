/* test_batch.c -- batched eviction writes (backend table version 2,
 * store_many): eviction writes that queue up together reach the backend in
 * one call, each value keeps its own outcome, a failure keeps exactly the
 * failed objects in memory, and a version-1 table is never asked.  The last
 * tests drive the lmdb: backend's store_many directly. */
#include "counting_backend.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <fbk_backend.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct errlog {
    _Atomic int calls;
    _Atomic int last;
} errlog;

static void on_err(int err, const char *msg, void *arg)
{
    (void)msg;
    errlog *e = arg;
    atomic_store(&e->last, err);
    atomic_fetch_add(&e->calls, 1);
}

enum { MEM = 2, LEN = 300 };

/* Opens a counting store with one worker and a pool of MEM items, then
 * queues `queued` eviction writes behind a first one held at the CB_STORE
 * gate, so that the worker finds them all queued when it comes back.
 * h[0..1 + queued + MEM) are the inserted items.  The gate is left open. */
static void queue_behind_gate(fx *f, errlog *e, unsigned flags, unsigned max_queued,
                              int queued, fbk_handle **h)
{
    f->flags = flags;
    f->opts.threads = 1;
    f->opts.max_queued_writes = max_queued;
    f->opts.on_error = on_err;
    f->opts.on_error_arg = e;
    fx_open(f, MEM);
    counting_gate_close(f->cb, CB_STORE);
    int n = 0;
    for (; n < MEM + 1; n++)
        h[n] = tc_insert(f->p, LEN, (uint64_t)n);
    counting_gate_wait(f->cb, CB_STORE, 1); /* the first eviction write is held */
    for (int i = 0; i < queued; i++, n++)
        h[n] = tc_insert(f->p, LEN, (uint64_t)n);
}

static void check_all(fx *f, fbk_handle **h, int n)
{
    for (int i = 0; i < n; i++) {
        int rc = tc_check(h[i], LEN, (uint64_t)i);
        cr_assert_eq(rc, 0, "item %d: %s (%s)", i, fbk_err_name(rc), fbk_errmsg());
    }
    for (int i = 0; i < n; i++)
        fbk_handle_release(h[i]);
    fx_close(f);
}

Test(batch, queued_evictions_reach_the_backend_in_one_call)
{
    fx f = {0};
    errlog e = {0};
    fbk_handle *h[32];
    queue_behind_gate(&f, &e, COUNTING_STORE_MANY, 1000, 10, h);
    counting_gate_open(f.cb, CB_STORE);
    cr_assert_eq(fbk_store_drain(f.s), 0, "%s", fbk_errmsg());

    size_t sizes[4];
    cr_assert_eq(counting_store_many_sizes(f.cb, sizes, 4), 1, "expected one store_many call");
    cr_assert_eq(sizes[0], 10);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 11, "1 single store + 10 batched values");
    cr_assert_eq(counting_stored_count(f.cb), 11);
    fbk_store_stats st;
    fbk_store_stats_get(f.s, &st);
    cr_assert_eq(st.stores, 11);
    cr_assert_eq(st.store_batches, 1);
    cr_assert_eq(st.batched_stores, 10);
    cr_assert_eq(st.evictions, 11);
    cr_assert_eq(st.eviction_failures, 0);
    cr_assert_eq(atomic_load(&e.calls), 0);
    check_all(&f, h, 1 + MEM + 10);
}

Test(batch, batch_size_is_half_the_backpressure_limit)
{
    fx f = {0};
    errlog e = {0};
    fbk_handle *h[32];
    /* limit 8: 1 running + 7 queued stays within it (no wait), and a worker
     * takes at most 4 at once */
    queue_behind_gate(&f, &e, COUNTING_STORE_MANY, 8, 7, h);
    counting_gate_open(f.cb, CB_STORE);
    cr_assert_eq(fbk_store_drain(f.s), 0, "%s", fbk_errmsg());
    size_t sizes[4];
    cr_assert_eq(counting_store_many_sizes(f.cb, sizes, 4), 2);
    cr_assert_eq(sizes[0], 4);
    cr_assert_eq(sizes[1], 3);
    check_all(&f, h, 1 + MEM + 7);
}

Test(batch, one_failed_value_keeps_only_that_object_in_memory)
{
    fx f = {0};
    errlog e = {0};
    fbk_handle *h[32];
    queue_behind_gate(&f, &e, COUNTING_STORE_MANY, 1000, 6, h);
    /* the held single store and then the batch's first value fail */
    counting_fail(f.cb, CB_STORE, FBK_EIO, 2);
    counting_gate_open(f.cb, CB_STORE);
    cr_assert_eq(fbk_store_drain(f.s), FBK_EIO);

    fbk_store_stats st;
    fbk_store_stats_get(f.s, &st);
    cr_assert_eq(st.store_batches, 1);
    cr_assert_eq(st.eviction_failures, 2);
    cr_assert_eq(st.evictions, 5, "the batch's 5 good values were dropped from memory");
    cr_assert_eq(st.stores, 5);
    cr_assert_eq(counting_stored_count(f.cb), 5);
    cr_assert_eq(atomic_load(&e.calls), 2);
    cr_assert_eq(atomic_load(&e.last), FBK_EIO);
    /* items 0 and 1 (the held single store and the batch's first value)
     * failed: not in the spill area, so still in memory; items 2..6 are */
    for (int i = 0; i < 7; i++) {
        fbk_key k = tc_key(h[i]);
        cr_assert_eq(counting_spill_has(f.cb, &k), i >= 2, "item %d", i);
    }
    check_all(&f, h, 1 + MEM + 6);
}

Test(batch, a_failed_call_keeps_every_object_of_the_batch)
{
    fx f = {0};
    errlog e = {0};
    fbk_handle *h[32];
    queue_behind_gate(&f, &e, COUNTING_STORE_MANY, 1000, 8, h);
    counting_fail(f.cb, CB_STORE_MANY, FBK_ENOSPC, 1);
    counting_gate_open(f.cb, CB_STORE);
    cr_assert_eq(fbk_store_drain(f.s), FBK_ENOSPC);

    fbk_store_stats st;
    fbk_store_stats_get(f.s, &st);
    cr_assert_eq(st.eviction_failures, 8);
    cr_assert_eq(st.evictions, 1, "only the single store before the batch succeeded");
    cr_assert_eq(counting_spill_size(f.cb), 1, "a failed store_many left values behind");
    cr_assert_eq(atomic_load(&e.calls), 8);
    cr_assert_eq(atomic_load(&e.last), FBK_ENOSPC);
    /* the fault is gone: the retries on later LRU changes write them out */
    check_all(&f, h, 1 + MEM + 8);
}

Test(batch, codec_failure_inside_a_batch)
{
    fx f = {0};
    errlog e = {0};
    fbk_handle *h[32];
    queue_behind_gate(&f, &e, COUNTING_STORE_MANY, 1000, 5, h);
    atomic_store(&f.ctx.fail_encode, 1);
    counting_gate_open(f.cb, CB_STORE);
    cr_assert_eq(fbk_store_drain(f.s), FBK_ECODEC);
    fbk_store_stats st;
    fbk_store_stats_get(f.s, &st);
    cr_assert_eq(st.eviction_failures, 6);
    cr_assert_eq(st.evictions, 0);
    cr_assert_eq(counting_spill_size(f.cb), 0, "a value whose encode failed was kept");
    atomic_store(&f.ctx.fail_encode, 0);
    check_all(&f, h, 1 + MEM + 5);
}

Test(batch, version_1_table_is_never_asked)
{
    fx f = {0};
    errlog e = {0};
    fbk_handle *h[32];
    queue_behind_gate(&f, &e, COUNTING_STORE_MANY_V1, 1000, 10, h);
    counting_gate_open(f.cb, CB_STORE);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    size_t sizes[1];
    cr_assert_eq(counting_store_many_sizes(f.cb, sizes, 1), 0,
                 "store_many of a version-1 table was called");
    cr_assert_eq(counting_calls(f.cb, CB_STORE_MANY), 0);
    cr_assert_eq(counting_calls(f.cb, CB_STORE), 11);
    fbk_store_stats st;
    fbk_store_stats_get(f.s, &st);
    cr_assert_eq(st.store_batches, 0);
    check_all(&f, h, 1 + MEM + 10);
}

/* ------------------------------------------------ lmdb: store_many itself */

static void lmdb_open(const char *name, size_t map_size, const fbk_backend_ops **ops, void **self)
{
    fbk_store_options o = {0};
    o.map_size = map_size;
    const char *dir = tu_fresh_dir(name);
    int rc = fbk_backend_lmdb_create(dir, &o, ops, self);
    cr_assert_eq(rc, FBK_OK, "fbk_backend_lmdb_create: %s", fbk_errmsg());
    cr_assert_geq((*ops)->version, 2u);
    cr_assert_not_null((*ops)->store_many);
}

Test(batch, lmdb_store_many_keeps_good_values_and_drops_failed_ones)
{
    const fbk_backend_ops *ops;
    void *self;
    lmdb_open("batch-lmdb", 0, &ops, &self);
    enum { N = 40 };
    fbk_key keys[N];
    tu_bytes fa[N];
    fbk_store_req req[N];
    for (int i = 0; i < N; i++) {
        fbk_key_generate(&keys[i]);
        fa[i] = (tu_bytes){.len = 1 + (size_t)i * 997, .seed = (uint64_t)i, .fail = i % 7 == 3};
        req[i] = (fbk_store_req){&keys[i], fa[i].len, tu_fill_bytes, &fa[i], 12345};
    }
    int rc = ops->store_many(self, req, N);
    cr_assert_eq(rc, FBK_ECODEC, "store_many returned %s", fbk_err_name(rc));
    for (int i = 0; i < N; i++) {
        cr_assert_eq(req[i].result, fa[i].fail ? FBK_ECODEC : 0, "request %d: result %d", i,
                     req[i].result);
        rc = ops->load(self, &keys[i], tu_check_bytes, &fa[i]);
        if (fa[i].fail)
            cr_assert_eq(rc, FBK_ENOTFOUND, "value %d whose fill failed is readable", i);
        else
            cr_assert_eq(rc, FBK_OK, "value %d: %s (%s)", i, fbk_err_name(rc), fbk_errmsg());
    }
    ops->close(self);
}

Test(batch, lmdb_store_many_grows_a_tiny_map)
{
    const fbk_backend_ops *ops;
    void *self;
    lmdb_open("batch-lmdb-grow", 64 << 10, &ops, &self);
    enum { N = 64 };
    fbk_key keys[N];
    tu_bytes fa[N];
    fbk_store_req req[N];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            fbk_key_generate(&keys[i]);
            fa[i] = (tu_bytes){.len = 70000, .seed = (uint64_t)(round * N + i)};
            req[i] = (fbk_store_req){&keys[i], fa[i].len, tu_fill_bytes, &fa[i], 12345};
        }
        int rc = ops->store_many(self, req, N);
        cr_assert_eq(rc, FBK_OK, "round %d: %s", round, fbk_errmsg());
        for (int i = 0; i < N; i++) {
            cr_assert_eq(req[i].result, 0);
            rc = ops->load(self, &keys[i], tu_check_bytes, &fa[i]);
            cr_assert_eq(rc, FBK_OK, "round %d value %d: %s", round, i, fbk_err_name(rc));
        }
    }
    ops->close(self);
}

Test(batch, lmdb_pool_writes_in_batches)
{
    /* through the public API: many evictions on lmdb: with one worker; every
     * byte comes back and the counters add up */
    fbk_store *s;
    fbk_store_options o = {0};
    o.threads = 1;
    char uri[4200];
    snprintf(uri, sizeof uri, "lmdb:%s", tu_fresh_dir("batch-lmdb-pool"));
    cr_assert_eq(fbk_store_open(&s, uri, &o), 0, "%s", fbk_errmsg());
    fbk_pool *p;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 4), 0);
    enum { N = 600 };
    fbk_handle **h = calloc(N, sizeof *h);
    for (int i = 0; i < N; i++)
        cr_assert_eq(fbk_insert(p, tu_blob(4096 + (size_t)i, (uint64_t)i), &h[i]), 0);
    cr_assert_eq(fbk_store_drain(s), 0, "%s", fbk_errmsg());
    fbk_store_stats st;
    fbk_store_stats_get(s, &st);
    cr_assert_eq(st.eviction_failures, 0);
    cr_assert_eq(st.stores, st.evictions);
    cr_assert_geq(st.stores, N - 4);
    cr_assert_leq(st.batched_stores, st.stores);
    cr_assert_leq(st.store_batches * 2, st.batched_stores, "a batch of fewer than 2 values");
    for (int i = 0; i < N; i++) {
        const void *obj;
        cr_assert_eq(fbk_load(h[i], &obj), 0, "item %d: %s", i, fbk_errmsg());
        cr_assert(tu_blob_check(obj, 4096 + (size_t)i, (uint64_t)i), "item %d has wrong bytes", i);
        fbk_unload(h[i]);
        fbk_handle_release(h[i]);
    }
    free(h);
    fbk_pool_release(p);
    fbk_store_close(s);
}
