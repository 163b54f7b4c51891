/* test_concurrency_item.c -- the item's lock-free state word under stress:
 * loads, try_loads, unloads, evictions (a churning thread pushes the item
 * out of a two-slot pool, with eviction writes on the workers), tasks,
 * fbk_load_mut and the last fbk_handle_release all racing on ONE item.
 * Every value read is checked whole (a value's first 8 bytes name the seed
 * of the rest).  Run under ThreadSanitizer by make test-tsan (label
 * concurrency). */
#include "counting_backend.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

enum { LEN = 64, READERS = 3 };

/* A blob whose first 8 bytes are seed and the rest tu_fill(seed). */
static fbk_blob *seeded(uint64_t seed)
{
    fbk_blob *b = fbk_blob_new(NULL, LEN);
    cr_assert_not_null(b);
    memcpy(b->data, &seed, 8);
    tu_fill(b->data + 8, LEN - 8, seed);
    return b;
}

static void reseed(fbk_blob *b, uint64_t seed)
{
    memcpy(b->data, &seed, 8);
    tu_fill(b->data + 8, LEN - 8, seed);
}

static bool whole(const void *obj)
{
    const fbk_blob *b = obj;
    if (b->len != LEN)
        return false;
    uint64_t seed;
    memcpy(&seed, b->data, 8);
    unsigned char want[LEN - 8];
    tu_fill(want, sizeof want, seed);
    return memcmp(want, b->data + 8, sizeof want) == 0;
}

typedef struct world {
    fbk_store *s;
    fbk_pool *p;
    fbk_handle *item;
    pthread_barrier_t start;
    atomic_int stop, bad, ops, muts;
    char msg[200];
} world;

static void bad(world *w, const char *what, int rc)
{
    if (atomic_fetch_add(&w->bad, 1) == 0)
        snprintf(w->msg, sizeof w->msg, "%s: %s (%s)", what, fbk_err_name(rc), fbk_errmsg());
}

static uint64_t xs(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Inserts and releases other values, so that the item keeps falling out of
 * the two-slot pool (its value written out by a worker, or dropped) and
 * coming back. */
static void *churn(void *arg)
{
    world *w = arg;
    fbk_handle *keep[3] = {NULL, NULL, NULL}; /* more than the pool holds */
    pthread_barrier_wait(&w->start);
    for (uint64_t i = 0; !atomic_load(&w->stop); i++) {
        fbk_handle *h;
        int rc = fbk_insert(w->p, seeded(1u << 20 | i), &h);
        if (rc) {
            bad(w, "insert", rc);
            break;
        }
        fbk_handle_release(keep[i % 3]);
        keep[i % 3] = h;
    }
    for (int i = 0; i < 3; i++)
        fbk_handle_release(keep[i]);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Test 1: in each round a fresh item, one reference per thread; every
 * thread loads, try_loads, unloads, starts tasks on it, and releases its
 * reference at a random moment -- sometimes between a load and its unload
 * (the pin outlives the last reference) -- while the churner evicts. */

enum { ROUNDS = 300, PER_ROUND = 40 };

typedef struct rthr {
    world *w;
    uint64_t rng;
    fbk_handle *h[ROUNDS];
} rthr;

static void *rounds_thread(void *arg)
{
    rthr *t = arg;
    world *w = t->w;
    pthread_barrier_wait(&w->start);
    for (int r = 0; r < ROUNDS; r++) {
        fbk_handle *h = t->h[r];
        int release_at = (int)(xs(&t->rng) % PER_ROUND);
        bool released = false;
        for (int k = 0; k < PER_ROUND; k++) {
            const void *obj;
            int rc;
            switch (xs(&t->rng) % 6) {
            case 0:
            case 1:
            case 2:
                rc = fbk_load(h, &obj);
                if (rc) {
                    bad(w, "load", rc);
                    break;
                }
                if (!whole(obj))
                    bad(w, "torn value", 0);
                if (!released && k == release_at) {
                    fbk_handle_release(h); /* the pin outlives it */
                    released = true;
                }
                fbk_unload(h);
                break;
            case 3:
                rc = fbk_try_load(h, &obj);
                if (rc == FBK_OK) {
                    if (!whole(obj))
                        bad(w, "torn value (try_load)", 0);
                    fbk_unload(h);
                } else if (rc != FBK_EAGAIN) {
                    bad(w, "try_load", rc);
                }
                break;
            case 4:
                if (!released) {
                    fbk_task *task;
                    rc = (xs(&t->rng) & 1) ? fbk_prefetch(h, &task) : fbk_write_now_async(h, &task);
                    if (rc == FBK_OK)
                        rc = fbk_task_wait(task); /* frees it */
                    if (rc)
                        bad(w, "task", rc);
                }
                break;
            default:
                if (!released) {
                    rc = fbk_write_now(h);
                    if (rc)
                        bad(w, "write_now", rc);
                }
                break;
            }
            atomic_fetch_add(&w->ops, 1);
            if (released)
                break; /* no reference left to use */
        }
        if (!released)
            fbk_handle_release(h);
    }
    return NULL;
}

static void open_world(world *w, size_t mem_items)
{
    memset(w, 0, sizeof *w);
    cr_assert_eq(fbk_store_open(&w->s, "mem:", NULL), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_pool_create(&w->p, w->s, &fbk_blob_codec, mem_items), 0);
}

static void close_world(world *w)
{
    cr_assert_eq(fbk_store_drain(w->s), 0, "%s", fbk_errmsg());
    fbk_pool_stats st;
    fbk_pool_stats_get(w->p, &st);
    cr_assert_eq(st.items_in_memory, 0, "%llu values left in memory",
                 (unsigned long long)st.items_in_memory);
    cr_assert_eq(fbk_pool_size(w->p), 0);
    fbk_pool_release(w->p);
    fbk_store_close(w->s);
}

Test(concurrency_item, last_release_races_with_loads_and_evictions)
{
    world w;
    open_world(&w, 2);
    rthr t[READERS];
    for (int i = 0; i < READERS; i++) {
        t[i] = (rthr){.w = &w, .rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1)};
    }
    for (int r = 0; r < ROUNDS; r++) {
        fbk_handle *h;
        cr_assert_eq(fbk_insert(w.p, seeded((uint64_t)r), &h), 0);
        for (int i = 0; i < READERS; i++)
            t[i].h[r] = fbk_handle_retain(h);
        fbk_handle_release(h); /* the threads hold the item now */
    }
    pthread_barrier_init(&w.start, NULL, READERS + 2);
    pthread_t th[READERS + 1];
    for (int i = 0; i < READERS; i++)
        pthread_create(&th[i], NULL, rounds_thread, &t[i]);
    pthread_create(&th[READERS], NULL, churn, &w);
    pthread_barrier_wait(&w.start);
    for (int i = 0; i < READERS; i++)
        pthread_join(th[i], NULL);
    atomic_store(&w.stop, 1);
    pthread_join(th[READERS], NULL);
    pthread_barrier_destroy(&w.start);
    cr_assert_eq(atomic_load(&w.bad), 0, "%d failures, first: %s", atomic_load(&w.bad), w.msg);
    close_world(&w);
}

/* ------------------------------------------------------------------ */
/* Test 2: one item, one handle reference: its owner keeps rewriting the
 * value under fbk_load_mut (EBUSY while someone has it pinned) while
 * readers load it through the same handle and the churner evicts it; no
 * reader ever sees a half-written value. */

enum { MUTS = 300 };

static void *reader(void *arg)
{
    world *w = arg;
    pthread_barrier_wait(&w->start);
    uint64_t rng = (uint64_t)(uintptr_t)&rng | 1;
    while (!atomic_load(&w->stop)) {
        const void *obj;
        int rc = (xs(&rng) & 3) ? fbk_load(w->item, &obj) : fbk_try_load(w->item, &obj);
        if (rc == FBK_EAGAIN)
            continue;
        if (rc) {
            bad(w, "load", rc);
            break;
        }
        if (!whole(obj))
            bad(w, "torn value", 0);
        fbk_unload(w->item);
        atomic_fetch_add(&w->ops, 1);
    }
    return NULL;
}

static uint64_t evictions(world *w)
{
    fbk_pool_stats st;
    fbk_pool_stats_get(w->p, &st);
    return st.evictions;
}

/* Rewrites the value until MUTS rewrites got through and the churn has
 * evicted values (no time limit: readers get preempted, so a load_mut
 * finds the item unpinned sooner or later). */
static void *mutator(void *arg)
{
    world *w = arg;
    pthread_barrier_wait(&w->start);
    uint64_t rng = 77;
    for (int i = 0; atomic_load(&w->muts) < MUTS || evictions(w) == 0; i++) {
        void *obj;
        int rc = (xs(&rng) & 1) ? fbk_load_mut(w->item, &obj) : fbk_try_load_mut(w->item, &obj);
        if (rc == FBK_EBUSY || rc == FBK_EAGAIN) {
            sched_yield(); /* pinned by a reader, or out of memory (try) */
            continue;
        }
        if (rc) {
            bad(w, "load_mut", rc);
            break;
        }
        if (!whole(obj))
            bad(w, "torn value (load_mut)", 0);
        reseed(obj, 5000 + (uint64_t)i);
        fbk_unload_mut(w->item);
        atomic_fetch_add(&w->muts, 1);
    }
    atomic_store(&w->stop, 1);
    return NULL;
}

Test(concurrency_item, load_mut_races_with_loads_and_evictions)
{
    world w;
    open_world(&w, 2);
    cr_assert_eq(fbk_insert(w.p, seeded(1), &w.item), 0);
    pthread_barrier_init(&w.start, NULL, READERS + 3);
    pthread_t th[READERS + 2];
    for (int i = 0; i < READERS; i++)
        pthread_create(&th[i], NULL, reader, &w);
    pthread_create(&th[READERS], NULL, churn, &w);
    pthread_create(&th[READERS + 1], NULL, mutator, &w);
    pthread_barrier_wait(&w.start);
    for (int i = 0; i < READERS + 2; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&w.start);
    cr_assert_eq(atomic_load(&w.bad), 0, "%d failures, first: %s", atomic_load(&w.bad), w.msg);
    /* the last value written is the one kept */
    const void *obj;
    cr_assert_eq(fbk_load(w.item, &obj), 0);
    cr_assert(whole(obj));
    fbk_unload(w.item);
    fbk_handle_release(w.item);
    close_world(&w);
}

/* ------------------------------------------------------------------ */
/* Test 3: the segmented LRU's buffered promotions.  Readers hit items in
 * the back half of a pool (each hit recorded in the pool's buffer without
 * the mutex) while the churner's inserts drain the buffer, and items are
 * released (an item still in the buffer when it is freed must be dropped
 * from it). */

enum { NITEMS = 16 };

typedef struct pworld {
    world w;
    fbk_handle *items[NITEMS];
    _Atomic(fbk_handle *) slot[NITEMS];
} pworld;

static void *promo_reader(void *arg)
{
    pworld *pw = arg;
    world *w = &pw->w;
    pthread_barrier_wait(&w->start);
    uint64_t rng = (uint64_t)(uintptr_t)&rng | 1;
    for (int k = 0; k < 20000; k++) {
        int i = (int)(xs(&rng) % NITEMS);
        /* take the slot's reference for a while (or leave it) */
        fbk_handle *h = atomic_exchange(&pw->slot[i], NULL);
        if (!h)
            continue;
        const void *obj;
        int rc = fbk_load(h, &obj);
        if (rc)
            bad(w, "load", rc);
        else if (!whole(obj))
            bad(w, "torn value", 0);
        bool loaded = rc == 0;
        if (xs(&rng) % 8 == 0) {
            /* replace the item: the old one may sit in the buffer */
            fbk_handle *nh;
            if (fbk_insert(w->p, seeded(xs(&rng)), &nh) == 0) {
                fbk_handle_release(h); /* the pin (if any) outlives it */
                if (loaded)
                    fbk_unload(h);
                h = nh;
                loaded = false;
            }
        }
        if (loaded)
            fbk_unload(h);
        atomic_store(&pw->slot[i], h);
    }
    return NULL;
}

Test(concurrency_item, buffered_promotions_race_with_changes_and_frees)
{
    pworld pw;
    open_world(&pw.w, NITEMS); /* half the items in the back half */
    for (int i = 0; i < NITEMS; i++) {
        cr_assert_eq(fbk_insert(pw.w.p, seeded((uint64_t)i), &pw.items[i]), 0);
        atomic_init(&pw.slot[i], pw.items[i]);
    }
    pthread_barrier_init(&pw.w.start, NULL, READERS + 2);
    pthread_t th[READERS + 1];
    for (int i = 0; i < READERS; i++)
        pthread_create(&th[i], NULL, promo_reader, &pw);
    pthread_create(&th[READERS], NULL, churn, &pw.w);
    pthread_barrier_wait(&pw.w.start);
    for (int i = 0; i < READERS; i++)
        pthread_join(th[i], NULL);
    atomic_store(&pw.w.stop, 1);
    pthread_join(th[READERS], NULL);
    pthread_barrier_destroy(&pw.w.start);
    cr_assert_eq(atomic_load(&pw.w.bad), 0, "%d failures, first: %s", atomic_load(&pw.w.bad),
                 pw.w.msg);
    for (int i = 0; i < NITEMS; i++)
        fbk_handle_release(atomic_load(&pw.slot[i]));
    close_world(&pw.w);
}

/* ------------------------------------------------------------------ */
/* Test 4: hits are counted exactly, by threads that own a stripe of the
 * counter (plain load + store) and by the ones beyond FBK__HIT_OWNED that
 * share the rest (atomic adds). */

enum { HIT_THREADS = 48, HITS_EACH = 500 };

static void *hitter(void *arg)
{
    world *w = arg;
    pthread_barrier_wait(&w->start);
    for (int i = 0; i < HITS_EACH; i++) {
        const void *obj;
        int rc = fbk_load(w->item, &obj);
        if (rc) {
            bad(w, "load", rc);
            break;
        }
        fbk_unload(w->item);
    }
    return NULL;
}

Test(concurrency_item, hits_are_counted_exactly_on_many_threads)
{
    world w;
    open_world(&w, 4);
    cr_assert_eq(fbk_insert(w.p, seeded(3), &w.item), 0);
    pthread_barrier_init(&w.start, NULL, HIT_THREADS);
    pthread_t th[HIT_THREADS];
    for (int i = 0; i < HIT_THREADS; i++)
        pthread_create(&th[i], NULL, hitter, &w);
    for (int i = 0; i < HIT_THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&w.start);
    cr_assert_eq(atomic_load(&w.bad), 0, "%d failures, first: %s", atomic_load(&w.bad), w.msg);
    fbk_pool_stats st;
    fbk_pool_stats_get(w.p, &st);
    cr_assert_eq(st.hits, (uint64_t)HIT_THREADS * HITS_EACH);
    fbk_handle_release(w.item);
    close_world(&w);
}
