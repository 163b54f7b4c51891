/* test_stress.c -- concurrency stress, meant for ThreadSanitizer (label
 * "concurrency"; built against tsan_shim/ there, so it uses only
 * Test(.., .timeout), cr_assert*, cr_log_info).
 *
 * Worker threads do random operations on shared handles (load, try_load,
 * retain/release, load_mut through a retained reference -> EBUSY, make_mut
 * -> a private copy, write_now, fire-and-forget persist_async and prefetch)
 * and on private ones (load, try_load, load_mut, make_mut of a retained
 * reference, write_now, persist, persist_async + wait, prefetch + wait,
 * replace), on a pool far smaller than the working set, so evictions run all
 * the time, while another thread runs fbk_save over the shared handles
 * again and again.  Each thread keeps its own model (which seed each handle
 * holds, which key it persisted with which seed); every byte read is
 * checked, and at the end every live handle, every persisted key and the
 * saved location are checked against the model. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    NTHREADS = 4,
    NSHARED = 8,
    NPRIV = 4,
    LEN = 64,
    MEM_ITEMS = 4,
    OPS = 20000,     /* per thread */
    NPERSISTED = 64, /* (key, seed) records kept per thread */
};

typedef struct world {
    fbk_store *s;
    fbk_pool *p;
    fbk_location *L; /* persists of the workers */
    fbk_location *S; /* fbk_save of the shared handles */
    fbk_handle *shared[NSHARED];
    fbk_key shared_key[NSHARED];
    atomic_int stop;
    atomic_int failures;
    atomic_ulong saves, commits;
    pthread_mutex_t mu;
    char msg[512];
} world;

typedef struct thr {
    world *w;
    int id;
    uint64_t rng;
    fbk_handle *priv[NPRIV];
    uint64_t seed[NPRIV];
    uint64_t next_seed;
    unsigned long ops;
    int npersisted;
    fbk_key pkey[NPERSISTED];
    uint64_t pseed[NPERSISTED];
} thr;

static uint64_t rnd(thr *t)
{
    uint64_t x = t->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return t->rng = x;
}

static void fail(world *w, int id, const char *what, int rc)
{
    pthread_mutex_lock(&w->mu);
    if (atomic_fetch_add(&w->failures, 1) == 0)
        snprintf(w->msg, sizeof w->msg, "thread %d: %s: %s (%s)", id, what, fbk_err_name(rc),
                 fbk_errmsg());
    pthread_mutex_unlock(&w->mu);
}

#define EXPECT(t, cond, what, rc)                                                                  \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fail((t)->w, (t)->id, what, rc);                                                       \
    } while (0)

static uint64_t shared_seed(int i) { return 0x5eed0000u + (uint64_t)i; }

static uint64_t fresh_seed(thr *t) { return ((uint64_t)(t->id + 1) << 40) | t->next_seed++; }

/* load (or try_load) h and compare with seed */
static void read_check(thr *t, fbk_handle *h, uint64_t seed, int try_only)
{
    const void *obj;
    int rc = try_only ? fbk_try_load(h, &obj) : fbk_load(h, &obj);
    if (try_only && rc == FBK_EAGAIN)
        return;
    EXPECT(t, rc == 0, try_only ? "try_load" : "load", rc);
    if (rc)
        return;
    EXPECT(t, tu_blob_check(obj, LEN, seed), "wrong bytes", 0);
    fbk_unload(h);
}

static void remember_persist(thr *t, fbk_handle *h, uint64_t seed)
{
    if (t->npersisted == NPERSISTED)
        return;
    fbk_handle_key(h, &t->pkey[t->npersisted]);
    t->pseed[t->npersisted++] = seed;
}

static void write_seed(void *obj, uint64_t seed) { tu_fill(((fbk_blob *)obj)->data, LEN, seed); }

/* ------------------------------------------------------- private handles */

static void private_op(thr *t, int i)
{
    fbk_handle *h = t->priv[i];
    int rc;
    switch (rnd(t) % 10) {
    case 0:
        read_check(t, h, t->seed[i], 0);
        break;
    case 1:
        read_check(t, h, t->seed[i], 1);
        break;
    case 2: { /* only reference, nobody pins it: load_mut must succeed */
        void *obj;
        rc = fbk_load_mut(h, &obj);
        EXPECT(t, rc == 0, "load_mut of a private handle", rc);
        if (rc)
            break;
        EXPECT(t, tu_blob_check(obj, LEN, t->seed[i]), "load_mut: wrong bytes", 0);
        t->seed[i] = fresh_seed(t);
        write_seed(obj, t->seed[i]);
        fbk_unload_mut(h);
        break;
    }
    case 3: { /* make_mut of a retained reference: a copy; the old one stays */
        fbk_handle *other = fbk_handle_retain(h);
        void *obj;
        rc = fbk_make_mut(&h, &obj);
        EXPECT(t, rc == 0, "make_mut", rc);
        if (rc) {
            fbk_handle_release(other);
            break;
        }
        EXPECT(t, h != other, "make_mut of a shared handle kept the handle", 0);
        EXPECT(t, tu_blob_check(obj, LEN, t->seed[i]), "make_mut: wrong bytes", 0);
        uint64_t old = t->seed[i];
        t->seed[i] = fresh_seed(t);
        write_seed(obj, t->seed[i]);
        fbk_unload_mut(h);
        t->priv[i] = h;
        read_check(t, other, old, 0);
        fbk_handle_release(other);
        break;
    }
    case 4:
        rc = fbk_write_now(h);
        EXPECT(t, rc == 0, "write_now", rc);
        break;
    case 5:
        rc = fbk_persist(h, t->w->L);
        EXPECT(t, rc == 0, "persist", rc);
        if (rc == 0)
            remember_persist(t, h, t->seed[i]);
        break;
    case 6: {
        fbk_task *task;
        rc = fbk_persist_async(h, t->w->L, &task);
        EXPECT(t, rc == 0, "persist_async", rc);
        if (rc == 0) {
            rc = fbk_task_wait(task);
            EXPECT(t, rc == 0, "persist_async: wait", rc);
            if (rc == 0)
                remember_persist(t, h, t->seed[i]);
        }
        break;
    }
    case 7: {
        fbk_task *task;
        rc = fbk_prefetch(h, &task);
        EXPECT(t, rc == 0, "prefetch", rc);
        if (rc == 0) {
            rc = fbk_task_wait(task);
            EXPECT(t, rc == 0, "prefetch: wait", rc);
        }
        break;
    }
    case 8: { /* write_now_async + wait */
        fbk_task *task;
        rc = fbk_write_now_async(h, &task);
        EXPECT(t, rc == 0, "write_now_async", rc);
        if (rc == 0) {
            rc = fbk_task_wait(task);
            EXPECT(t, rc == 0, "write_now_async: wait", rc);
        }
        break;
    }
    default: { /* replace with a new item */
        uint64_t seed = fresh_seed(t);
        fbk_handle *n;
        rc = fbk_insert(t->w->p, tu_blob(LEN, seed), &n);
        EXPECT(t, rc == 0, "insert", rc);
        if (rc)
            break;
        fbk_handle_release(h);
        t->priv[i] = n;
        t->seed[i] = seed;
    }
    }
}

/* -------------------------------------------------------- shared handles */

static void shared_op(thr *t, int i)
{
    world *w = t->w;
    fbk_handle *h = w->shared[i];
    uint64_t seed = shared_seed(i);
    int rc;
    switch (rnd(t) % 9) {
    case 0:
        read_check(t, h, seed, 0);
        break;
    case 1:
        read_check(t, h, seed, 1);
        break;
    case 2: { /* a retained reference reads the same item */
        fbk_handle *r = fbk_handle_retain(h);
        EXPECT(t, r == h, "retain returned another handle", 0);
        read_check(t, r, seed, 0);
        fbk_handle_release(r);
        break;
    }
    case 3: { /* shared: load_mut must refuse */
        fbk_handle *r = fbk_handle_retain(h);
        void *obj;
        rc = fbk_load_mut(r, &obj);
        EXPECT(t, rc == FBK_EBUSY, "load_mut of a shared handle", rc);
        if (rc == 0)
            fbk_unload_mut(r);
        fbk_handle_release(r);
        break;
    }
    case 4: { /* make_mut of a reference to a shared item: a private copy */
        fbk_handle *r = fbk_handle_retain(h);
        void *obj;
        rc = fbk_make_mut(&r, &obj);
        EXPECT(t, rc == 0, "make_mut of a shared item", rc);
        if (rc) {
            fbk_handle_release(r);
            break;
        }
        EXPECT(t, r != h, "make_mut of a shared item kept the handle", 0);
        EXPECT(t, tu_blob_check(obj, LEN, seed), "make_mut: wrong bytes", 0);
        int k = (int)(rnd(t) % NPRIV);
        t->seed[k] = fresh_seed(t);
        write_seed(obj, t->seed[k]);
        fbk_unload_mut(r);
        fbk_handle_release(t->priv[k]);
        t->priv[k] = r;
        break;
    }
    case 5:
        rc = fbk_write_now(h);
        EXPECT(t, rc == 0, "write_now of a shared item", rc);
        break;
    case 6:
        rc = fbk_persist_async(h, w->L, NULL);
        EXPECT(t, rc == 0, "persist_async (fire and forget)", rc);
        break;
    case 7:
        rc = fbk_prefetch(h, NULL);
        EXPECT(t, rc == 0, "prefetch (fire and forget)", rc);
        break;
    default: { /* key never changes */
        fbk_key k;
        fbk_handle_key(h, &k);
        EXPECT(t, fbk_key_equal(&k, &w->shared_key[i]), "a shared item's key changed", 0);
    }
    }
}

static void *worker(void *arg)
{
    thr *t = arg;
    for (int i = 0; i < NPRIV; i++) {
        t->seed[i] = fresh_seed(t);
        if (fbk_insert(t->w->p, tu_blob(LEN, t->seed[i]), &t->priv[i]) != 0) {
            fail(t->w, t->id, "insert", FBK_ENOMEM);
            return NULL;
        }
    }
    for (int n = 0; n < OPS && atomic_load(&t->w->failures) == 0; n++) {
        if (rnd(t) % 2)
            private_op(t, (int)(rnd(t) % NPRIV));
        else
            shared_op(t, (int)(rnd(t) % NSHARED));
        t->ops++;
    }
    return NULL;
}

/* ----------------------------------------------------------------- saver */

static int count_commit(void *arg)
{
    atomic_fetch_add(&((world *)arg)->commits, 1);
    return 0;
}

/* Saves all shared handles, then only the first half (the rest becomes
 * stale and is removed), and again, until the workers are done. */
static void *saver(void *arg)
{
    world *w = arg;
    unsigned long round = 0;
    do {
        size_t n = round++ % 2 ? NSHARED / 2 : NSHARED;
        int rc = fbk_save(w->S, w->shared, n, 0, count_commit, w);
        if (rc) {
            fail(w, -1, "save", rc);
            break;
        }
        size_t count = fbk_location_count(w->S);
        if (count != n) {
            fail(w, -1, "save: the location does not hold exactly the saved keys", 0);
            break;
        }
        atomic_fetch_add(&w->saves, 1);
    } while (!atomic_load(&w->stop));
    return NULL;
}

/* ------------------------------------------------------------------ test */

static void expect_registered(world *w, fbk_location *loc, const fbk_key *key, uint64_t seed)
{
    fbk_handle *h;
    int rc = fbk_register(w->p, loc, key, &h);
    cr_assert_eq(rc, 0, "register: %s (%s)", fbk_err_name(rc), fbk_errmsg());
    const void *obj;
    cr_assert_eq(fbk_load(h, &obj), 0, "%s", fbk_errmsg());
    cr_assert(tu_blob_check(obj, LEN, seed), "a persisted key holds the wrong bytes");
    fbk_unload(h);
    fbk_handle_release(h);
}

Test(stress, random_operations_on_shared_and_private_handles_with_evictions_and_saves,
     .timeout = 300)
{
    static world w;
    static thr t[NTHREADS];
    memset(&w, 0, sizeof w);
    memset(t, 0, sizeof t);
    pthread_mutex_init(&w.mu, NULL);
    fbk_store_options o = {.threads = 2};
    cr_assert_eq(fbk_store_open(&w.s, "mem:", &o), 0);
    cr_assert_eq(fbk_pool_create(&w.p, w.s, &fbk_blob_codec, MEM_ITEMS), 0);
    cr_assert_eq(fbk_location_open(w.s, "L", &w.L), 0);
    cr_assert_eq(fbk_location_open(w.s, "S", &w.S), 0);
    for (int i = 0; i < NSHARED; i++) {
        cr_assert_eq(fbk_insert(w.p, tu_blob(LEN, shared_seed(i)), &w.shared[i]), 0);
        fbk_handle_key(w.shared[i], &w.shared_key[i]);
    }

    pthread_t tid[NTHREADS], sid;
    for (int i = 0; i < NTHREADS; i++) {
        t[i].w = &w;
        t[i].id = i;
        t[i].rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
        cr_assert_eq(pthread_create(&tid[i], NULL, worker, &t[i]), 0);
    }
    cr_assert_eq(pthread_create(&sid, NULL, saver, &w), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(tid[i], NULL);
    atomic_store(&w.stop, 1);
    pthread_join(sid, NULL);
    cr_assert_eq(atomic_load(&w.failures), 0, "%s", w.msg);
    cr_assert_eq(fbk_store_drain(w.s), 0, "background error: %s", fbk_errmsg());

    /* the model, at the end */
    unsigned long ops = 0;
    int persisted = 0;
    for (int i = 0; i < NSHARED; i++) {
        const void *obj;
        cr_assert_eq(fbk_load(w.shared[i], &obj), 0);
        cr_assert(tu_blob_check(obj, LEN, shared_seed(i)), "shared item %d changed", i);
        fbk_unload(w.shared[i]);
    }
    for (int k = 0; k < NTHREADS; k++) {
        ops += t[k].ops;
        for (int i = 0; i < NPRIV; i++) {
            const void *obj;
            cr_assert_eq(fbk_load(t[k].priv[i], &obj), 0);
            cr_assert(tu_blob_check(obj, LEN, t[k].seed[i]), "private item %d of thread %d", i, k);
            fbk_unload(t[k].priv[i]);
        }
        for (int i = 0; i < t[k].npersisted; i++) {
            cr_assert(fbk_location_contains(w.L, &t[k].pkey[i]));
            expect_registered(&w, w.L, &t[k].pkey[i], t[k].pseed[i]);
            persisted++;
        }
    }
    /* the last save: all shared or the first half, nothing else */
    size_t n = fbk_location_count(w.S);
    cr_assert(n == NSHARED || n == NSHARED / 2, "saved location holds %zu keys", n);
    for (size_t i = 0; i < n; i++) {
        cr_assert(fbk_location_contains(w.S, &w.shared_key[i]));
        expect_registered(&w, w.S, &w.shared_key[i], shared_seed((int)i));
    }
    cr_assert_eq(atomic_load(&w.commits), atomic_load(&w.saves));
    cr_assert_gt(atomic_load(&w.saves), 0);

    fbk_store_stats st;
    fbk_store_stats_get(w.s, &st);
    cr_assert_gt(st.evictions, 0, "the pool should have evicted");
    cr_assert_eq(st.eviction_failures, 0);
    cr_assert_eq(st.background_errors, 0);
    fprintf(stderr,
            "stress: %lu operations on %d threads, %lu saves, %llu evictions, %llu stores, "
            "%llu loads, %d persisted keys checked\n",
            ops, NTHREADS, (unsigned long)atomic_load(&w.saves), (unsigned long long)st.evictions,
            (unsigned long long)st.stores, (unsigned long long)st.loads, persisted);

    for (int k = 0; k < NTHREADS; k++)
        for (int i = 0; i < NPRIV; i++)
            fbk_handle_release(t[k].priv[i]);
    for (int i = 0; i < NSHARED; i++)
        fbk_handle_release(w.shared[i]);
    fbk_location_close(w.L);
    fbk_location_close(w.S);
    fbk_pool_release(w.p);
    fbk_store_close(w.s);
    pthread_mutex_destroy(&w.mu);
}
