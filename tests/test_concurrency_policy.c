/* test_concurrency_policy.c -- threads hitting, loading, mutating,
 * inserting and releasing items of one small pool under each policy and a
 * byte bound, with evictions running.  The hit path of SIEVE and S3-FIFO
 * takes no pool lock (it sets the node's mark), so this is its
 * ThreadSanitizer test.  Checks every byte read, and the pool's memory
 * accounting at the end. */
#include "counting_backend.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

enum { NTHREADS = 4, NSHARED = 24, LEN = 40, ITERS = 3000 };

typedef struct ctx {
    fbk_pool *p;
    fbk_handle *shared[NSHARED];
    atomic_int failures;
} ctx;

typedef struct thr {
    ctx *c;
    uint64_t rng;
} thr;

static uint64_t next(thr *t)
{
    uint64_t x = t->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return t->rng = x;
}

static void *run(void *arg)
{
    thr *t = arg;
    ctx *c = t->c;
    for (int i = 0; i < ITERS; i++) {
        uint64_t r = next(t);
        int k = (int)(r % NSHARED);
        const void *obj;
        switch ((r >> 8) % 8) {
        case 0: { /* a private item: insert, load, mutate (shrinks), release */
            fbk_handle *h = NULL;
            if (fbk_insert(c->p, tu_blob(LEN, r), &h)) {
                atomic_fetch_add(&c->failures, 1);
                break;
            }
            void *m;
            if (fbk_load_mut(h, &m) == 0) {
                ((fbk_blob *)m)->len = LEN / 2;
                fbk_unload_mut(h);
            }
            if (fbk_load(h, &obj) == 0) {
                if (((const fbk_blob *)obj)->len != LEN / 2)
                    atomic_fetch_add(&c->failures, 1);
                fbk_unload(h);
            }
            fbk_handle_release(h);
            break;
        }
        case 1:
            if (fbk_try_load(c->shared[k], &obj) == 0) {
                if (!tu_blob_check(obj, LEN, (uint64_t)k))
                    atomic_fetch_add(&c->failures, 1);
                fbk_unload(c->shared[k]);
            }
            break;
        default:
            if (fbk_load(c->shared[k], &obj)) {
                atomic_fetch_add(&c->failures, 1);
                break;
            }
            if (!tu_blob_check(obj, LEN, (uint64_t)k))
                atomic_fetch_add(&c->failures, 1);
            fbk_unload(c->shared[k]);
            break;
        }
    }
    return NULL;
}

static void stress(fbk_policy policy, size_t items, size_t bytes)
{
    fx f = {0};
    fx_open(&f, 1);
    fbk_pool_release(f.p);
    fbk_codec codec = tc_codec(&f.ctx, 1);
    fbk_pool_options o = {.mem_items = items, .mem_bytes = bytes, .policy = policy};
    cr_assert_eq(fbk_pool_create_v2(&f.p, f.s, &codec, &o), 0);
    ctx c = {.p = f.p};
    atomic_init(&c.failures, 0);
    for (int i = 0; i < NSHARED; i++)
        cr_assert_eq(fbk_insert(f.p, tu_blob(LEN, (uint64_t)i), &c.shared[i]), 0);
    pthread_t th[NTHREADS];
    thr t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        t[i] = (thr){.c = &c, .rng = 0x1234567ULL * (uint64_t)(i + 1)};
        pthread_create(&th[i], NULL, run, &t[i]);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(atomic_load(&c.failures), 0, "policy %d: %d failures", policy,
                 atomic_load(&c.failures));
    cr_assert_eq(fbk_store_drain(f.s), 0);
    fbk_pool_stats st;
    fbk_pool_stats_get(f.p, &st);
    if (items)
        cr_assert_leq(st.items_in_memory, items, "policy %d", policy);
    if (bytes)
        cr_assert_leq(st.bytes_in_memory, bytes, "policy %d", policy);
    for (int i = 0; i < NSHARED; i++) {
        cr_assert_eq(tc_check(c.shared[i], LEN, (uint64_t)i), 0);
        fbk_handle_release(c.shared[i]);
    }
    fbk_pool_stats_get(f.p, &st);
    cr_assert_eq(st.items_in_memory, 0);
    cr_assert_eq(st.bytes_in_memory, 0);
    fx_close(&f);
}

Test(concurrency_policy, slru_items) { stress(FBK_POLICY_SLRU, 8, 0); }
Test(concurrency_policy, slru_bytes) { stress(FBK_POLICY_SLRU, 0, 8 * LEN); }
Test(concurrency_policy, sieve_items) { stress(FBK_POLICY_SIEVE, 8, 0); }
Test(concurrency_policy, sieve_bytes) { stress(FBK_POLICY_SIEVE, 0, 8 * LEN); }
Test(concurrency_policy, s3fifo_items) { stress(FBK_POLICY_S3FIFO, 10, 0); }
Test(concurrency_policy, s3fifo_bytes) { stress(FBK_POLICY_S3FIFO, 0, 10 * LEN); }
