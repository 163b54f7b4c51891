/* test_concurrency.c -- many threads on one small pool, with evictions
 * running: random load / try_load / insert / release / load_mut / make_mut /
 * write_now / persist / prefetch / save on shared and private handles.  Run
 * under ThreadSanitizer in CI.  Checks every byte read, and everything again
 * at the end. */
#include "counting_backend.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NTHREADS = 4, NSHARED = 8, NPRIV = 4, LEN = 48, ITERS = 4000 };

typedef struct ctx {
    fx *f;
    fbk_location *loc, *saveloc;
    fbk_handle *shared[NSHARED];
    atomic_int failures;
    char msg[256];
    pthread_mutex_t mu;
} ctx;

typedef struct thr {
    ctx *c;
    int id;
    uint64_t rng;
    fbk_handle *priv[NPRIV];
    uint64_t seed[NPRIV];
    unsigned long ops;
    unsigned long inserts;
} thr;

static uint64_t next(thr *t)
{
    uint64_t x = t->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return t->rng = x;
}

static void fail(thr *t, const char *what, int rc)
{
    ctx *c = t->c;
    pthread_mutex_lock(&c->mu);
    if (atomic_fetch_add(&c->failures, 1) == 0)
        snprintf(c->msg, sizeof c->msg, "thread %d: %s: %s (%s)", t->id, what, fbk_err_name(rc),
                 fbk_errmsg());
    pthread_mutex_unlock(&c->mu);
}

static uint64_t shared_seed(int i) { return 1000 + (uint64_t)i; }

static int blob_is(const void *obj, uint64_t seed) { return tu_blob_check(obj, LEN, seed); }

static void read_check(thr *t, fbk_handle *h, uint64_t seed, int try_only)
{
    const void *obj = NULL;
    int rc = try_only ? fbk_try_load(h, &obj) : fbk_load(h, &obj);
    if (try_only && rc == FBK_EAGAIN)
        return;
    if (rc != 0) {
        fail(t, try_only ? "try_load" : "load", rc);
        return;
    }
    if (!blob_is(obj, seed))
        fail(t, "wrong bytes", 0);
    fbk_unload(h);
}

static void new_private(thr *t, int i)
{
    uint64_t seed = ((uint64_t)t->id << 32) | (next(t) & 0xFFFFFFF);
    fbk_blob *b = tu_blob(LEN, seed);
    fbk_handle *h = NULL;
    int rc = fbk_insert(t->c->f->p, b, &h);
    if (rc != 0) {
        fbk_blob_free(b);
        fail(t, "insert", rc);
        return;
    }
    t->priv[i] = h;
    t->seed[i] = seed;
    t->inserts++;
}

static void rewrite(thr *t, int i, void *obj)
{
    uint64_t seed = ((uint64_t)t->id << 32) | (next(t) & 0xFFFFFFF);
    fbk_blob *b = obj;
    tu_fill(b->data, LEN, seed);
    t->seed[i] = seed;
}

static void *run(void *arg)
{
    thr *t = arg;
    ctx *c = t->c;
    for (int i = 0; i < NPRIV; i++)
        new_private(t, i);
    for (int it = 0; it < ITERS && atomic_load(&c->failures) == 0; it++) {
        int s = (int)(next(t) % NSHARED);
        int p = (int)(next(t) % NPRIV);
        fbk_handle *sh = c->shared[s];
        int rc;
        void *obj;
        t->ops++;
        switch (next(t) % 16) {
        case 0:
        case 1:
            read_check(t, sh, shared_seed(s), 0);
            break;
        case 2:
            read_check(t, sh, shared_seed(s), 1);
            break;
        case 3: { /* an extra reference, used and dropped */
            fbk_handle *r = fbk_handle_retain(sh);
            read_check(t, r, shared_seed(s), 0);
            fbk_handle_release(r);
            break;
        }
        case 4:
            if ((rc = fbk_write_now(sh)) != 0)
                fail(t, "write_now shared", rc);
            break;
        case 5:
            if ((rc = fbk_persist(sh, c->loc)) != 0)
                fail(t, "persist shared", rc);
            break;
        case 6:
            read_check(t, t->priv[p], t->seed[p], 0);
            break;
        case 7: /* replace a private item */
            fbk_handle_release(t->priv[p]);
            new_private(t, p);
            break;
        case 8:
            rc = fbk_load_mut(t->priv[p], &obj);
            if (rc != 0) {
                fail(t, "load_mut", rc);
                break;
            }
            if (!blob_is(obj, t->seed[p]))
                fail(t, "wrong bytes under load_mut", 0);
            rewrite(t, p, obj);
            fbk_unload_mut(t->priv[p]);
            break;
        case 9: { /* make_mut of a shared copy of a private item: clones */
            fbk_handle *r = fbk_handle_retain(t->priv[p]);
            rc = fbk_make_mut(&r, &obj);
            if (rc != 0) {
                fbk_handle_release(r);
                fail(t, "make_mut", rc);
                break;
            }
            if (!blob_is(obj, t->seed[p]))
                fail(t, "wrong bytes in the clone", 0);
            rewrite(t, p, obj);
            fbk_unload_mut(r);
            fbk_handle_release(t->priv[p]);
            t->priv[p] = r;
            break;
        }
        case 10:
            if ((rc = fbk_write_now(t->priv[p])) != 0)
                fail(t, "write_now private", rc);
            break;
        case 11:
            if ((rc = fbk_prefetch(sh, NULL)) != 0)
                fail(t, "prefetch", rc);
            break;
        case 12: {
            fbk_task *task = NULL;
            if ((rc = fbk_persist_async(t->priv[p], c->loc, &task)) != 0) {
                fail(t, "persist_async", rc);
                break;
            }
            if ((rc = fbk_task_wait(task)) != 0)
                fail(t, "persist_async task", rc);
            break;
        }
        case 14:   /* drop a key from L (a shared or an old private one) */
        case 15: { /* or register one back and read it */
            fbk_key keys[32];
            size_t n = fbk_location_keys(c->loc, keys, 32);
            if (n == 0)
                break;
            fbk_key k = keys[next(t) % (n < 32 ? n : 32)];
            if (t->ops % 2 == 0 && (next(t) % 4) == 0) {
                if ((rc = fbk_location_remove(c->loc, &k)) != 0)
                    fail(t, "location_remove", rc);
                break;
            }
            fbk_handle *r = NULL;
            rc = fbk_register(c->f->p, c->loc, &k, &r);
            if (rc == FBK_ENOTFOUND)
                break; /* removed meanwhile */
            if (rc != 0) {
                fail(t, "register", rc);
                break;
            }
            const void *o = NULL;
            if ((rc = fbk_load(r, &o)) != 0) {
                fail(t, "load of a registered key", rc);
            } else {
                if (((const fbk_blob *)o)->len != LEN)
                    fail(t, "registered item has the wrong length", 0);
                fbk_unload(r);
            }
            fbk_handle_release(r);
            break;
        }
        case 13:
            if (t->id == 0) {
                rc = fbk_save(c->saveloc, c->shared, NSHARED, 2, NULL, NULL);
                if (rc != 0)
                    fail(t, "save", rc);
            } else {
                read_check(t, t->priv[p], t->seed[p], 1);
            }
            break;
        }
    }
    return NULL;
}

Test(concurrency, random_operations_on_a_small_pool, .timeout = 300)
{
    fx f = {0};
    f.opts.threads = 2;
    fx_open(&f, 6);
    ctx c;
    memset(&c, 0, sizeof c);
    pthread_mutex_init(&c.mu, NULL);
    atomic_init(&c.failures, 0);
    c.f = &f;
    cr_assert_eq(fbk_location_open(f.s, "L", &c.loc), 0);
    cr_assert_eq(fbk_location_open(f.s, "S", &c.saveloc), 0);
    for (int i = 0; i < NSHARED; i++)
        c.shared[i] = tc_insert(f.p, LEN, shared_seed(i));

    thr t[NTHREADS];
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        memset(&t[i], 0, sizeof t[i]);
        t[i].c = &c;
        t[i].id = i;
        t[i].rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
        cr_assert_eq(pthread_create(&th[i], NULL, run, &t[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(atomic_load(&c.failures), 0, "%d failure(s), first: %s", atomic_load(&c.failures),
                 c.msg);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    /* the run did exercise evictions and read-backs */
    fbk_store_stats st;
    fbk_store_stats_get(f.s, &st);
    cr_assert_gt(st.evictions, 0);
    cr_assert_gt(st.loads, 0);
    cr_assert_eq(st.background_errors, 0);

    /* everything once more, from this thread */
    for (int i = 0; i < NSHARED; i++)
        cr_assert_eq(tc_check(c.shared[i], LEN, shared_seed(i)), 0, "shared %d", i);
    for (int i = 0; i < NTHREADS; i++)
        for (int j = 0; j < NPRIV; j++) {
            const void *obj;
            cr_assert_eq(fbk_load(t[i].priv[j], &obj), 0);
            cr_assert(blob_is(obj, t[i].seed[j]), "private %d of thread %d", j, i);
            fbk_unload(t[i].priv[j]);
        }
    cr_assert_eq(fbk_pool_size(f.p), NSHARED + NTHREADS * NPRIV);
    /* the save location holds exactly the shared keys */
    cr_assert_eq(fbk_location_count(c.saveloc), counting_loc_count(f.cb, "S"));
    if (fbk_location_count(c.saveloc) != 0) {
        cr_assert_eq(fbk_location_count(c.saveloc), NSHARED);
        for (int i = 0; i < NSHARED; i++) {
            fbk_key k = tc_key(c.shared[i]);
            cr_assert_eq(counting_loc_has(f.cb, "S", &k), 1);
        }
    }
    /* every key the location claims is really there */
    size_t cnt = fbk_location_count(c.loc);
    fbk_key *keys = malloc((cnt + 1) * sizeof *keys);
    cr_assert_not_null(keys);
    size_t n = fbk_location_keys(c.loc, keys, cnt + 1);
    cr_assert_eq(n, cnt);
    cr_assert_eq(n, counting_loc_count(f.cb, "L"));
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(counting_loc_has(f.cb, "L", &keys[i]), 1);
    free(keys);

    for (int i = 0; i < NSHARED; i++)
        fbk_handle_release(c.shared[i]);
    for (int i = 0; i < NTHREADS; i++)
        for (int j = 0; j < NPRIV; j++)
            fbk_handle_release(t[i].priv[j]);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(fbk_pool_size(f.p), 0);
    cr_assert_eq(counting_spill_size(f.cb), 0, "%zu spill copies leaked",
                 counting_spill_size(f.cb));
    unsigned long inserts = NSHARED;
    for (int i = 0; i < NTHREADS; i++)
        inserts += t[i].inserts;
    /* every object made (inserted, decoded or cloned) destroyed exactly once */
    cr_assert_eq(f.ctx.destroys, inserts + f.ctx.decodes + f.ctx.clones,
                 "destroys %lu, inserts %lu + decodes %lu + clones %lu",
                 (unsigned long)f.ctx.destroys, inserts, (unsigned long)f.ctx.decodes,
                 (unsigned long)f.ctx.clones);
    fbk_location_close(c.loc);
    fbk_location_close(c.saveloc);
    pthread_mutex_destroy(&c.mu);
    fx_close(&f);
}
