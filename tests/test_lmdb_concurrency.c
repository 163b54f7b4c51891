/* test_lmdb_concurrency.c -- many threads writing to the lmdb: backend at
 * once (group commit), with failing fills mixed in and maps that must grow
 * while other threads read.  Runs under ThreadSanitizer in CI. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 8


static size_t size_of(int t, int i) { return (size_t)((t * 7919 + i * 104729) % 200000) + 1; }

struct shared {
    const fbk_backend_ops *ops;
    void *self;
    void *loc[2];
    pthread_barrier_t start;
};

struct worker {
    struct shared *sh;
    int t;
    int iters;
    int failures; /* unexpected results, with the first one described */
    char why[256];
};

static void fail(struct worker *w, const char *what, int i, int rc)
{
    if (w->failures++ == 0)
        snprintf(w->why, sizeof w->why, "thread %d, item %d: %s returned %s (%s)", w->t, i, what,
                 fbk_err_name(rc), fbk_errmsg());
}

/* Stores, loads and removes its own keys; every fifth fill fails. */
static void *spill_worker(void *arg)
{
    struct worker *w = arg;
    const fbk_backend_ops *ops = w->sh->ops;
    void *self = w->sh->self;
    fbk_key *k = calloc((size_t)w->iters, sizeof *k);
    pthread_barrier_wait(&w->sh->start);
    for (int i = 0; i < w->iters; i++) {
        fbk_key_generate(&k[i]);
        tu_bytes b = {size_of(w->t, i), (uint64_t)(w->t * 100000 + i), i % 5 == 4};
        int rc = ops->store(self, &k[i], b.len, tu_fill_bytes, &b);
        if (rc != (b.fail ? FBK_ECODEC : FBK_OK))
            fail(w, "store", i, rc);
        if (i % 3 == 2) { /* remove an earlier one */
            int j = i - 2;
            rc = ops->remove(self, &k[j]);
            if (rc != (j % 5 == 4 ? FBK_ENOTFOUND : FBK_OK))
                fail(w, "remove", j, rc);
        }
    }
    for (int i = 0; i < w->iters; i++) {
        tu_bytes b = {size_of(w->t, i), (uint64_t)(w->t * 100000 + i), 0};
        int gone = i % 5 == 4 || i % 3 == 0;
        int rc = ops->load(self, &k[i], tu_check_bytes, &b);
        if (rc != (gone ? FBK_ENOTFOUND : FBK_OK))
            fail(w, "load", i, rc);
    }
    free(k);
    return NULL;
}

static void run_workers(struct shared *sh, void *(*fn)(void *), int iters)
{
    pthread_t th[THREADS];
    struct worker w[THREADS];
    cr_assert_eq(pthread_barrier_init(&sh->start, NULL, THREADS), 0);
    for (int t = 0; t < THREADS; t++) {
        w[t] = (struct worker){.sh = sh, .t = t, .iters = iters};
        cr_assert_eq(pthread_create(&th[t], NULL, fn, &w[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&sh->start);
    for (int t = 0; t < THREADS; t++)
        cr_assert_eq(w[t].failures, 0, "%d failures; first: %s", w[t].failures, w[t].why);
}

static void open_shared(struct shared *sh, const char *name, size_t map_size)
{
    fbk_store_options o = {0};
    o.map_size = map_size;
    int rc = fbk_backend_lmdb_create(tu_fresh_dir(name), &o, &sh->ops, &sh->self);
    cr_assert_eq(rc, FBK_OK, "%s", fbk_errmsg());
}

Test(lmdb_concurrency, threads_store_load_and_remove_with_failing_fills)
{
    struct shared sh;
    open_shared(&sh, "spill_threads", 0);
    run_workers(&sh, spill_worker, 150);
    sh.ops->close(sh.self);
}

Test(lmdb_concurrency, spill_map_grows_under_concurrent_writers)
{
    struct shared sh;
    open_shared(&sh, "spill_growth", 1 << 20); /* ~8 x 100 x 100 KB stored */
    run_workers(&sh, spill_worker, 100);
    sh.ops->close(sh.self);
}

/* Stores its keys, persists them to one of two locations (singly or in
 * bulk), removes the spill copy, registers them back and checks them, while
 * the other threads do the same and thread 0 syncs. */
static void *durable_worker(void *arg)
{
    struct worker *w = arg;
    const fbk_backend_ops *ops = w->sh->ops;
    void *self = w->sh->self;
    void *loc = w->sh->loc[w->t % 2];
    enum { BULK = 4 };
    fbk_key k[BULK];
    pthread_barrier_wait(&w->sh->start);
    for (int i = 0; i < w->iters; i += BULK) {
        for (int j = 0; j < BULK; j++) {
            fbk_key_generate(&k[j]);
            tu_bytes b = {size_of(w->t, i + j), (uint64_t)(w->t * 100000 + i + j), 0};
            int rc = ops->store(self, &k[j], b.len, tu_fill_bytes, &b);
            if (rc != FBK_OK)
                fail(w, "store", i + j, rc);
        }
        int rc = FBK_OK;
        if ((i / BULK) % 2)
            rc = ops->persist_many(self, loc, k, BULK);
        else
            for (int j = 0; j < BULK && rc == FBK_OK; j++)
                rc = ops->persist(self, loc, &k[j]);
        if (rc != FBK_OK)
            fail(w, "persist", i, rc);
        for (int j = 0; j < BULK; j++)
            if ((rc = ops->remove(self, &k[j])) != FBK_OK)
                fail(w, "remove", i + j, rc);
        if (w->t == 0 && (rc = ops->sync(self, loc)) != FBK_OK)
            fail(w, "sync", i, rc);
        rc = (i / BULK) % 2 ? ops->register_key(self, loc, &k[0]) : ops->register_many(self, loc, k, 1);
        if (rc != FBK_OK)
            fail(w, "register", i, rc);
        rc = ops->register_many(self, loc, k + 1, BULK - 1);
        if (rc != FBK_OK)
            fail(w, "register_many", i, rc);
        for (int j = 0; j < BULK; j++) {
            tu_bytes b = {size_of(w->t, i + j), (uint64_t)(w->t * 100000 + i + j), 0};
            if ((rc = ops->load(self, &k[j], tu_check_bytes, &b)) != FBK_OK)
                fail(w, "load", i + j, rc);
            if ((rc = ops->remove_persisted(self, loc, &k[j])) != FBK_OK)
                fail(w, "remove_persisted", i + j, rc);
        }
    }
    return NULL;
}

Test(lmdb_concurrency, threads_persist_and_register_while_maps_grow)
{
    struct shared sh;
    open_shared(&sh, "durable_threads", 1 << 20);
    cr_assert_eq(sh.ops->open_location(sh.self, "a", &sh.loc[0]), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(sh.ops->open_location(sh.self, "b", &sh.loc[1]), FBK_OK, "%s", fbk_errmsg());
    run_workers(&sh, durable_worker, 40);
    cr_assert_eq(sh.ops->sync(sh.self, sh.loc[0]), FBK_OK);
    sh.ops->close_location(sh.self, sh.loc[0]);
    sh.ops->close_location(sh.self, sh.loc[1]);
    sh.ops->close(sh.self);
}

/* ------------------------------------------------------------ public API */

struct api_shared {
    fbk_pool *pool;
    pthread_barrier_t start;
};

struct api_worker {
    struct api_shared *sh;
    int t;
    int bad;
    char why[256];
};

static void *api_worker(void *arg)
{
    struct api_worker *w = arg;
    enum { N = 60 };
    fbk_handle *h[N];
    pthread_barrier_wait(&w->sh->start);
    for (int i = 0; i < N; i++) {
        fbk_blob *b = tu_blob(size_of(w->t, i) / 4, (uint64_t)(w->t * 1000 + i));
        if (fbk_insert(w->sh->pool, b, &h[i]) != FBK_OK) {
            fbk_blob_free(b);
            h[i] = NULL;
            if (!w->bad++)
                snprintf(w->why, sizeof w->why, "insert %d: %s", i, fbk_errmsg());
        }
    }
    for (int i = N - 1; i >= 0; i--) {
        const void *obj;
        if (!h[i])
            continue;
        int rc = fbk_load(h[i], &obj);
        if (rc != FBK_OK || !tu_blob_check(obj, size_of(w->t, i) / 4, (uint64_t)(w->t * 1000 + i))) {
            if (!w->bad++)
                snprintf(w->why, sizeof w->why, "load %d: %s %s", i, fbk_err_name(rc),
                         fbk_errmsg());
        }
        if (rc == FBK_OK)
            fbk_unload(h[i]);
        fbk_handle_release(h[i]);
    }
    return NULL;
}

Test(lmdb_concurrency, threads_share_one_pool)
{
    char uri[4200];
    snprintf(uri, sizeof uri, "lmdb:%s", tu_fresh_dir("api_threads"));
    fbk_store_options o = {0};
    o.threads = 4;
    o.map_size = 1 << 20;
    fbk_store *s;
    cr_assert_eq(fbk_store_open(&s, uri, &o), FBK_OK, "%s", fbk_errmsg());
    struct api_shared sh;
    cr_assert_eq(fbk_pool_create(&sh.pool, s, &fbk_blob_codec, 8), FBK_OK);
    cr_assert_eq(pthread_barrier_init(&sh.start, NULL, THREADS), 0);
    pthread_t th[THREADS];
    struct api_worker w[THREADS];
    for (int t = 0; t < THREADS; t++) {
        w[t] = (struct api_worker){.sh = &sh, .t = t};
        cr_assert_eq(pthread_create(&th[t], NULL, api_worker, &w[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&sh.start);
    for (int t = 0; t < THREADS; t++)
        cr_assert_eq(w[t].bad, 0, "thread %d: %d failures; first: %s", t, w[t].bad, w[t].why);
    cr_assert_eq(fbk_store_drain(s), FBK_OK, "%s", fbk_errmsg());
    fbk_store_stats st;
    fbk_store_stats_get(s, &st);
    cr_assert_gt(st.stores, 0, "nothing was spilled: the test did not use the backend");
    cr_assert_eq(fbk_pool_size(sh.pool), 0);
    fbk_pool_release(sh.pool);
    fbk_store_close(s);
}
