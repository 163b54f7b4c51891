/* test_oom.c -- out of memory at every allocation point.
 *
 * An allocator plugged in with fbk_set_allocator() fails the Nth allocation
 * libfbk makes (on any thread, workers included), once or persistently from
 * N on, for N = 1, 2, ... until the operation under test runs to the end
 * without reaching its Nth allocation.  At each N the operation must return
 * 0 or a clean FBK_ENOMEM with a message (out-parameters untouched), and
 * once allocation works again the same store, pool, handles and locations
 * must still work and give back exactly the bytes they were given.  After
 * everything is closed, every byte libfbk allocated must have been freed
 * (counted here, so the check runs in every build, not only under ASan).
 *
 * Background work started by an operation (eviction writes, task jobs,
 * removes) is drained while the allocator is still armed, so its failures
 * are exercised too and the count of allocation points is deterministic. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ allocator */

static atomic_ulong fail_at;        /* N; 0 = disarmed */
static atomic_int fail_persist;     /* fail N, N+1, ... instead of N only */
static atomic_ulong armed_calls;    /* allocations since arming */
static atomic_ulong injected;       /* failures handed out since arming */

static int should_fail(void)
{
    unsigned long n = atomic_load(&fail_at);
    if (n == 0)
        return 0;
    unsigned long k = atomic_fetch_add(&armed_calls, 1) + 1;
    if (k == n || (atomic_load(&fail_persist) && k > n)) {
        atomic_fetch_add(&injected, 1);
        return 1;
    }
    return 0;
}


static void arm(unsigned long n, int persistent)
{
    atomic_store(&armed_calls, 0);
    atomic_store(&injected, 0);
    atomic_store(&fail_persist, persistent);
    atomic_store(&fail_at, n);
}

/* Returns how many allocations failed since arm(). */
static unsigned long disarm(void)
{
    atomic_store(&fail_at, 0);
    return atomic_load(&injected);
}

static void install(void)
{
    tu_alloc_reset();
    tu_alloc_fail = should_fail;
    cr_assert_eq(fbk_set_allocator(&tu_counting_allocator), 0);
}

static void uninstall(void)
{
    cr_assert_eq(fbk_set_allocator(NULL), 0);
}

/* ----------------------------------------------------------- environment */

enum { NH = 4, LEN = 300 };

typedef struct env {
    int file; /* 1: file: store in a fresh directory, else mem: */
    char uri[4200];
    fbk_store *s;
    fbk_pool *p;
    fbk_codec codec;
    fbk_location *loc;
    fbk_handle *h[NH];
    uint64_t seed[NH];
    fbk_key key[NH];
    fbk_blob *spare;    /* a blob the test still owns */
    int commits;
    uint64_t newseed;   /* bytes written through load_mut/make_mut */
    char msg[256];      /* fbk_errmsg() right after the call under test */
} env;

#define SENTINEL ((void *)0x5e17)

static void env_store(env *e)
{
    if (e->file)
        snprintf(e->uri, sizeof e->uri, "file:%s", tu_fresh_dir("oom-file"));
    else
        snprintf(e->uri, sizeof e->uri, "mem:");
    int rc = fbk_store_open(&e->s, e->uri, NULL);
    cr_assert_eq(rc, 0, "open %s: %s", e->uri, fbk_errmsg());
}

static void env_pool(env *e, size_t mem_items)
{
    if (!e->codec.size)
        e->codec = fbk_blob_codec;
    cr_assert_eq(fbk_pool_create(&e->p, e->s, &e->codec, mem_items), 0, "%s", fbk_errmsg());
}

static void env_insert(env *e, int i, uint64_t seed)
{
    e->seed[i] = seed;
    cr_assert_eq(fbk_insert(e->p, tu_blob(LEN, seed), &e->h[i]), 0, "%s", fbk_errmsg());
    fbk_handle_key(e->h[i], &e->key[i]);
}

static void env_loc(env *e, const char *name)
{
    cr_assert_eq(fbk_location_open(e->s, name, &e->loc), 0, "%s", fbk_errmsg());
}

/* h holds exactly the bytes of seed (loads it if needed). */
static void expect_bytes(fbk_handle *h, uint64_t seed, const char *what)
{
    const void *obj = NULL;
    int rc = fbk_load(h, &obj);
    cr_assert_eq(rc, 0, "%s: load: %s (%s)", what, fbk_err_name(rc), fbk_errmsg());
    int ok = tu_blob_check(obj, LEN, seed);
    fbk_unload(h);
    cr_assert(ok, "%s: wrong bytes", what);
}

/* Every location key loads back through a fresh pool with the bytes of the
 * handle that had that key. */
static void expect_loc_bytes(env *e, fbk_location *loc, const fbk_key *key, uint64_t seed)
{
    fbk_pool *p2;
    cr_assert_eq(fbk_pool_create(&p2, e->s, &fbk_blob_codec, 4), 0);
    fbk_handle *h;
    int rc = fbk_register(p2, loc, key, &h);
    cr_assert_eq(rc, 0, "register: %s (%s)", fbk_err_name(rc), fbk_errmsg());
    expect_bytes(h, seed, "registered copy");
    fbk_handle_release(h);
    fbk_pool_release(p2);
}

static void env_close(env *e)
{
    for (int i = 0; i < NH; i++)
        fbk_handle_release(e->h[i]);
    fbk_blob_free(e->spare);
    fbk_location_close(e->loc);
    fbk_pool_release(e->p);
    fbk_store_close(e->s);
    long n = tu_alloc_live_get();
    cr_assert_eq(n, 0, "%ld blocks allocated by libfbk were not freed", n);
}

/* ------------------------------------------------------------- the loop */

typedef struct oom_case {
    const char *name;
    void (*setup)(env *e);        /* allocator working */
    int (*op)(env *e);            /* armed: the operation, then a drain */
    void (*check)(env *e, int rc); /* allocator working again */
} oom_case;

/* Records the call's message and drains the store (still armed). */
static int finish(env *e, int rc)
{
    snprintf(e->msg, sizeof e->msg, "%s", rc ? fbk_errmsg() : "");
    if (e->s)
        (void)fbk_store_drain(e->s); /* background failures: allowed, checked by check() */
    return rc;
}

static unsigned run_mode(const oom_case *c, int file, int persistent)
{
    unsigned points = 0;
    for (unsigned long n = 1;; n++) {
        cr_assert_lt(n, 5000, "%s: the operation never completes", c->name);
        env e;
        memset(&e, 0, sizeof e);
        e.file = file;
        c->setup(&e);
        if (e.s)
            cr_assert_eq(fbk_store_drain(e.s), 0);
        arm(n, persistent);
        int rc = c->op(&e);
        unsigned long hits = disarm();
        cr_assert(rc == FBK_OK || rc == FBK_ENOMEM, "%s (%s, N=%lu): %s: %s", c->name,
                  persistent ? "persistent" : "once", n, fbk_err_name(rc), e.msg);
        if (rc == FBK_ENOMEM) {
            cr_assert_gt(hits, 0, "%s: ENOMEM although no allocation failed", c->name);
            cr_assert_neq(e.msg[0], '\0', "%s: ENOMEM without a message", c->name);
        }
        if (hits == 0)
            cr_assert_eq(rc, FBK_OK, "%s: failed with no injected failure", c->name);
        c->check(&e, rc);
        env_close(&e);
        points++;
        if (hits == 0)
            return points; /* N is past the operation's allocations */
    }
}

/* may_not_allocate: the operation may need no allocation at all. */
static void run_case_opt(const oom_case *c, int file, bool may_not_allocate)
{
    install();
    unsigned once = run_mode(c, file, 0);
    unsigned pers = run_mode(c, file, 1);
    uninstall();
    fprintf(stderr, "oom: %-28s %s: %u allocation points (fail once), %u (fail from N on)\n",
            c->name, file ? "file:" : "mem: ", once - 1, pers - 1);
    if (!may_not_allocate)
        cr_assert_gt(once, 1, "%s: no allocation point found", c->name);
}

static void run_case(const oom_case *c, int file) { run_case_opt(c, file, false); }

/* --------------------------------------------------------- store open */

static void setup_none(env *e)
{
    if (e->file)
        snprintf(e->uri, sizeof e->uri, "file:%s", tu_fresh_dir("oom-file"));
    else
        snprintf(e->uri, sizeof e->uri, "mem:");
}

static int op_store_open(env *e)
{
    fbk_store *s = SENTINEL;
    int rc = fbk_store_open(&s, e->uri, NULL);
    if (rc)
        cr_assert_eq(s, SENTINEL, "store_open: out changed on failure");
    else
        e->s = s;
    return finish(e, rc);
}

static void check_store_open(env *e, int rc)
{
    if (rc) /* the failed open left nothing locked or half made */
        cr_assert_eq(fbk_store_open(&e->s, e->uri, NULL), 0, "reopen: %s", fbk_errmsg());
    env_pool(e, 2);
    env_insert(e, 0, 1);
    env_insert(e, 1, 2);
    env_insert(e, 2, 3);
    for (int i = 0; i < 3; i++)
        expect_bytes(e->h[i], e->seed[i], "after store open");
}

static const oom_case c_store_open = {"fbk_store_open", setup_none, op_store_open, check_store_open};

Test(oom, store_open_mem_fails_cleanly_then_works) { run_case(&c_store_open, 0); }
Test(oom, store_open_file_fails_cleanly_then_works) { run_case(&c_store_open, 1); }

/* --------------------------------------------------------- pool create */

static void setup_store(env *e) { env_store(e); }

static int op_pool_create(env *e)
{
    fbk_pool *p = SENTINEL;
    int rc = fbk_pool_create(&p, e->s, &fbk_blob_codec, 2);
    if (rc)
        cr_assert_eq(p, SENTINEL, "pool_create: out changed on failure");
    else
        e->p = p;
    return finish(e, rc);
}

static void check_pool_create(env *e, int rc)
{
    if (rc)
        env_pool(e, 2);
    env_insert(e, 0, 10);
    env_insert(e, 1, 11);
    env_insert(e, 2, 12);
    for (int i = 0; i < 3; i++)
        expect_bytes(e->h[i], e->seed[i], "after pool create");
}

static const oom_case c_pool_create = {"fbk_pool_create", setup_store, op_pool_create,
                                       check_pool_create};

Test(oom, pool_create_fails_cleanly_then_works) { run_case(&c_pool_create, 0); }

/* -------------------------------------------------------------- insert */

/* A full pool of two: the insert pushes an item out (an eviction write on a
 * worker, which allocates too). */
static void setup_insert(env *e)
{
    env_store(e);
    env_pool(e, 2);
    env_insert(e, 0, 20);
    env_insert(e, 1, 21);
    e->seed[2] = 22;
    e->spare = tu_blob(LEN, 22);
}

static int op_insert(env *e)
{
    fbk_handle *h = SENTINEL;
    int rc = fbk_insert(e->p, e->spare, &h);
    if (rc) {
        cr_assert_eq(h, SENTINEL, "insert: out changed on failure");
    } else {
        e->h[2] = h;
        e->spare = NULL; /* the pool owns it now */
    }
    return finish(e, rc);
}

static void check_insert(env *e, int rc)
{
    if (rc) {
        cr_assert_eq(fbk_pool_size(e->p), 2);
        cr_assert(tu_blob_check(e->spare, LEN, 22), "insert: the caller's object changed");
        cr_assert_eq(fbk_insert(e->p, e->spare, &e->h[2]), 0);
        e->spare = NULL;
    }
    cr_assert_eq(fbk_pool_size(e->p), 3);
    for (int i = 0; i < 3; i++)
        expect_bytes(e->h[i], e->seed[i], "after insert");
}

static const oom_case c_insert = {"fbk_insert", setup_insert, op_insert, check_insert};

Test(oom, insert_fails_cleanly_then_works) { run_case(&c_insert, 0); }

/* ------------------------------------------------- load of a spilled item */

/* Pool of two, three items: h[0] is spilled (checked). */
static void setup_spilled(env *e)
{
    env_store(e);
    env_pool(e, 2);
    env_insert(e, 0, 30);
    env_insert(e, 1, 31);
    env_insert(e, 2, 32);
    cr_assert_eq(fbk_store_drain(e->s), 0);
    const void *obj;
    cr_assert_eq(fbk_try_load(e->h[0], &obj), FBK_EAGAIN, "h[0] should be spilled");
}

static int op_load(env *e)
{
    const void *obj = SENTINEL;
    int rc = fbk_load(e->h[0], &obj);
    if (rc) {
        cr_assert_eq(obj, SENTINEL, "load: out changed on failure");
    } else {
        cr_assert(tu_blob_check(obj, LEN, e->seed[0]), "load: wrong bytes");
        fbk_unload(e->h[0]);
    }
    return finish(e, rc);
}

static void check_all3(env *e, int rc)
{
    (void)rc;
    cr_assert_eq(fbk_pool_size(e->p), 3);
    for (int i = 0; i < 3; i++)
        expect_bytes(e->h[i], e->seed[i], "after the operation");
}

static const oom_case c_load = {"fbk_load (spilled)", setup_spilled, op_load, check_all3};

Test(oom, load_of_spilled_item_fails_cleanly_then_works) { run_case(&c_load, 0); }
Test(oom, load_of_spilled_item_file_fails_cleanly_then_works) { run_case(&c_load, 1); }

/* ------------------------------------------------------------ load_mut */

static int op_load_mut(env *e)
{
    void *obj = SENTINEL;
    int rc = fbk_load_mut(e->h[0], &obj);
    if (rc) {
        cr_assert_eq(obj, SENTINEL, "load_mut: out changed on failure");
    } else {
        cr_assert(tu_blob_check(obj, LEN, e->seed[0]), "load_mut: wrong bytes");
        e->newseed = 39;
        tu_fill(((fbk_blob *)obj)->data, LEN, e->newseed);
        fbk_unload_mut(e->h[0]);
    }
    return finish(e, rc);
}

static void check_load_mut(env *e, int rc)
{
    fbk_key now;
    fbk_handle_key(e->h[0], &now);
    if (rc) {
        cr_assert(fbk_key_equal(&now, &e->key[0]), "load_mut: a failure changed the key");
    } else {
        cr_assert_not(fbk_key_equal(&now, &e->key[0]), "load_mut: the key did not change");
        e->seed[0] = e->newseed;
    }
    check_all3(e, rc);
    /* and it is still writable */
    void *obj;
    cr_assert_eq(fbk_load_mut(e->h[0], &obj), 0, "%s", fbk_errmsg());
    fbk_unload_mut(e->h[0]);
}

static const oom_case c_load_mut = {"fbk_load_mut (spilled)", setup_spilled, op_load_mut,
                                    check_load_mut};

Test(oom, load_mut_of_spilled_item_fails_cleanly_then_works) { run_case(&c_load_mut, 0); }

/* ------------------------------------------------------------ make_mut */

/* h[0] is shared with h[3] (a retained reference to the same item). */
static void setup_shared(env *e)
{
    setup_spilled(e);
    e->h[3] = fbk_handle_retain(e->h[0]);
    e->seed[3] = e->seed[0];
}

static void setup_shared_noclone(env *e)
{
    e->codec = fbk_blob_codec;
    e->codec.clone = NULL; /* make_mut then copies through encode + decode */
    setup_shared(e);
}

static int op_make_mut(env *e)
{
    fbk_handle *h = e->h[0];
    void *obj = SENTINEL;
    int rc = fbk_make_mut(&h, &obj);
    if (rc) {
        cr_assert_eq(h, e->h[0], "make_mut: *h changed on failure");
        cr_assert_eq(obj, SENTINEL, "make_mut: out changed on failure");
    } else {
        cr_assert_neq(h, e->h[0], "make_mut of a shared item must give a new handle");
        cr_assert(tu_blob_check(obj, LEN, e->seed[0]), "make_mut: wrong bytes");
        e->newseed = 49;
        tu_fill(((fbk_blob *)obj)->data, LEN, e->newseed);
        fbk_unload_mut(h);
        e->h[0] = h; /* make_mut released our reference to the old item */
    }
    return finish(e, rc);
}

static void check_make_mut(env *e, int rc)
{
    if (rc) {
        cr_assert_eq(fbk_pool_size(e->p), 3);
    } else {
        cr_assert_eq(fbk_pool_size(e->p), 4);
        e->seed[0] = e->newseed;
    }
    for (int i = 0; i < 4; i++)
        expect_bytes(e->h[i], e->seed[i], "after make_mut");
    if (rc) {
        void *obj;
        cr_assert_eq(fbk_make_mut(&e->h[0], &obj), 0, "%s", fbk_errmsg());
        fbk_unload_mut(e->h[0]);
        expect_bytes(e->h[3], e->seed[3], "the other reference after make_mut");
    }
}

static const oom_case c_make_mut = {"fbk_make_mut (shared)", setup_shared, op_make_mut,
                                    check_make_mut};
static const oom_case c_make_mut_nc = {"fbk_make_mut (no clone)", setup_shared_noclone,
                                       op_make_mut, check_make_mut};

Test(oom, make_mut_of_shared_item_fails_cleanly_then_works) { run_case(&c_make_mut, 0); }
Test(oom, make_mut_without_clone_callback_fails_cleanly_then_works) { run_case(&c_make_mut_nc, 0); }

/* ------------------------------------------------------------- persist */

static void setup_persist(env *e)
{
    env_store(e);
    env_pool(e, 4);
    env_loc(e, "L");
    env_insert(e, 0, 50);
}

static int op_persist(env *e) { return finish(e, fbk_persist(e->h[0], e->loc)); }

static void check_persist(env *e, int rc)
{
    cr_assert_eq(fbk_location_contains(e->loc, &e->key[0]), rc == 0,
                 "persist: the location must hold the key exactly when persist succeeded");
    cr_assert_eq(fbk_location_count(e->loc), rc == 0 ? 1u : 0u);
    if (rc)
        cr_assert_eq(fbk_persist(e->h[0], e->loc), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_sync(e->loc), 0);
    expect_bytes(e->h[0], e->seed[0], "after persist");
    expect_loc_bytes(e, e->loc, &e->key[0], e->seed[0]);
}

static const oom_case c_persist = {"fbk_persist", setup_persist, op_persist, check_persist};

Test(oom, persist_fails_cleanly_then_works) { run_case(&c_persist, 0); }
Test(oom, persist_file_fails_cleanly_then_works) { run_case(&c_persist, 1); }

/* ---------------------------------------------------------------- save */

static int count_commit(void *arg)
{
    ((env *)arg)->commits++;
    return 0;
}

/* A pool of two; a first save of {h0, h1}; the save under test is of
 * {h0, h2, h3} (h1 becomes stale). */
static void setup_save(env *e)
{
    env_store(e);
    env_pool(e, 2);
    env_loc(e, "L");
    for (int i = 0; i < 4; i++)
        env_insert(e, i, 60 + (uint64_t)i);
    fbk_handle *first[2] = {e->h[0], e->h[1]};
    cr_assert_eq(fbk_save(e->loc, first, 2, 0, NULL, NULL), 0, "%s", fbk_errmsg());
}

static int op_save(env *e)
{
    fbk_handle *hs[3] = {e->h[0], e->h[2], e->h[3]};
    return finish(e, fbk_save(e->loc, hs, 3, 2, count_commit, e));
}

static void check_save(env *e, int rc)
{
    int has[4];
    for (int i = 0; i < 4; i++)
        has[i] = fbk_location_contains(e->loc, &e->key[i]);
    if (rc == 0) {
        cr_assert_eq(e->commits, 1);
        cr_assert(has[0] && !has[1] && has[2] && has[3], "save: wrong key set");
    } else if (e->commits == 0) {
        cr_assert(has[0] && has[1], "save: a failure before commit lost the previous save");
    } else {
        cr_assert(has[0] && has[2] && has[3], "save: committed but a new key is missing");
    }
    fbk_handle *hs[3] = {e->h[0], e->h[2], e->h[3]};
    cr_assert_eq(fbk_save(e->loc, hs, 3, 0, NULL, NULL), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_count(e->loc), 3u);
    cr_assert_not(fbk_location_contains(e->loc, &e->key[1]));
    for (int i = 0; i < 4; i++)
        expect_bytes(e->h[i], e->seed[i], "after save");
    expect_loc_bytes(e, e->loc, &e->key[0], e->seed[0]);
    expect_loc_bytes(e, e->loc, &e->key[2], e->seed[2]);
    expect_loc_bytes(e, e->loc, &e->key[3], e->seed[3]);
}

static const oom_case c_save = {"fbk_save", setup_save, op_save, check_save};

Test(oom, save_fails_cleanly_keeping_previous_save_then_works) { run_case(&c_save, 0); }
Test(oom, save_file_fails_cleanly_keeping_previous_save_then_works) { run_case(&c_save, 1); }

/* ------------------------------------------------------- location open */

/* Location "L" holds h0..h2 (closed again); the store stays open. */
static void setup_loc_existing(env *e)
{
    env_store(e);
    env_pool(e, 4);
    env_loc(e, "L");
    for (int i = 0; i < 3; i++) {
        env_insert(e, i, 70 + (uint64_t)i);
        cr_assert_eq(fbk_persist(e->h[i], e->loc), 0);
    }
    cr_assert_eq(fbk_location_sync(e->loc), 0);
    fbk_location_close(e->loc);
    e->loc = NULL;
}

static int op_loc_open_L(env *e)
{
    fbk_location *l = SENTINEL;
    int rc = fbk_location_open(e->s, "L", &l);
    if (rc)
        cr_assert_eq(l, SENTINEL, "location_open: out changed on failure");
    else
        e->loc = l;
    return finish(e, rc);
}

static void check_loc_existing(env *e, int rc)
{
    if (rc)
        env_loc(e, "L");
    cr_assert_eq(fbk_location_count(e->loc), 3u);
    for (int i = 0; i < 3; i++)
        expect_loc_bytes(e, e->loc, &e->key[i], e->seed[i]);
}

static const oom_case c_loc_existing = {"fbk_location_open (3 keys)", setup_loc_existing,
                                        op_loc_open_L, check_loc_existing};

static void check_loc_new(env *e, int rc)
{
    if (rc)
        env_loc(e, "L");
    cr_assert_eq(fbk_location_count(e->loc), 0u);
    env_pool(e, 4);
    env_insert(e, 0, 80);
    cr_assert_eq(fbk_persist(e->h[0], e->loc), 0);
    expect_loc_bytes(e, e->loc, &e->key[0], e->seed[0]);
}

static const oom_case c_loc_new = {"fbk_location_open (new)", setup_store, op_loc_open_L,
                                   check_loc_new};

Test(oom, location_open_of_existing_location_fails_cleanly_then_works)
{
    run_case(&c_loc_existing, 0);
}
Test(oom, location_open_file_fails_cleanly_then_works) { run_case(&c_loc_existing, 1); }
Test(oom, location_open_of_new_location_fails_cleanly_then_works) { run_case(&c_loc_new, 0); }

/* --------------------------------------------------------------- tasks */

static int op_write_async(env *e)
{
    fbk_task *t = SENTINEL;
    int rc = fbk_write_now_async(e->h[0], &t);
    if (rc)
        cr_assert_eq(t, SENTINEL, "task: out changed on failure");
    else
        rc = fbk_task_wait(t);
    return finish(e, rc);
}

static void check_write_async(env *e, int rc)
{
    (void)rc;
    cr_assert_eq(fbk_write_now(e->h[0]), 0, "%s", fbk_errmsg());
    expect_bytes(e->h[0], e->seed[0], "after write_now_async");
    cr_assert_eq(fbk_persist(e->h[0], e->loc), 0);
    expect_loc_bytes(e, e->loc, &e->key[0], e->seed[0]);
}

static int op_persist_async(env *e)
{
    fbk_task *t = SENTINEL;
    int rc = fbk_persist_async(e->h[0], e->loc, &t);
    if (rc)
        cr_assert_eq(t, SENTINEL, "task: out changed on failure");
    else
        rc = fbk_task_wait(t);
    return finish(e, rc);
}

/* Fire and forget: the task's own failure goes to the drain. */
static int op_persist_async_ff(env *e)
{
    int rc = fbk_persist_async(e->h[0], e->loc, NULL);
    snprintf(e->msg, sizeof e->msg, "%s", rc ? fbk_errmsg() : "");
    int bg = fbk_store_drain(e->s);
    cr_assert(bg == FBK_OK || bg == FBK_ENOMEM, "drain: %s", fbk_err_name(bg));
    return rc;
}

static void check_persist_async(env *e, int rc)
{
    if (rc == 0)
        cr_assert(fbk_location_contains(e->loc, &e->key[0]));
    check_persist(e, fbk_location_contains(e->loc, &e->key[0]) ? 0 : FBK_ENOMEM);
}

/* The task's start may succeed and its work fail: only the location says. */
static void check_persist_ff(env *e, int rc)
{
    (void)rc;
    check_persist(e, fbk_location_contains(e->loc, &e->key[0]) ? 0 : FBK_ENOMEM);
}

static void setup_prefetch(env *e)
{
    setup_spilled(e);
    env_loc(e, "L");
}

static int op_prefetch(env *e)
{
    fbk_task *t = SENTINEL;
    int rc = fbk_prefetch(e->h[0], &t);
    if (rc)
        cr_assert_eq(t, SENTINEL, "task: out changed on failure");
    else
        rc = fbk_task_wait(t);
    return finish(e, rc);
}

static void check_prefetch(env *e, int rc)
{
    if (rc == 0) {
        const void *obj;
        cr_assert_eq(fbk_try_load(e->h[0], &obj), 0, "prefetch succeeded but the item is not in memory");
        cr_assert(tu_blob_check(obj, LEN, e->seed[0]));
        fbk_unload(e->h[0]);
    }
    check_all3(e, rc);
}

static const oom_case c_write_async = {"fbk_write_now_async+wait", setup_persist, op_write_async,
                                       check_write_async};
static const oom_case c_persist_async = {"fbk_persist_async+wait", setup_persist,
                                         op_persist_async, check_persist_async};
static const oom_case c_persist_ff = {"fbk_persist_async (no task)", setup_persist,
                                      op_persist_async_ff, check_persist_ff};
static const oom_case c_prefetch = {"fbk_prefetch+wait (spilled)", setup_prefetch, op_prefetch,
                                    check_prefetch};

Test(oom, write_now_async_fails_cleanly_then_works) { run_case(&c_write_async, 0); }
Test(oom, persist_async_fails_cleanly_then_works) { run_case(&c_persist_async, 0); }
Test(oom, fire_and_forget_persist_fails_cleanly_then_works) { run_case(&c_persist_ff, 0); }
Test(oom, prefetch_fails_cleanly_then_works) { run_case(&c_prefetch, 0); }

/* ------------------------------------------------------------ register */

/* Location "L" holds h0's value; h0 is released (so the key is not in the
 * spill area any more). */
static void setup_register(env *e)
{
    setup_persist(e);
    cr_assert_eq(fbk_persist(e->h[0], e->loc), 0);
    fbk_handle_release(e->h[0]);
    e->h[0] = NULL;
}

/* ... and registered once already: the second register shares the copy. */
static void setup_register_again(env *e)
{
    setup_register(e);
    cr_assert_eq(fbk_register(e->p, e->loc, &e->key[0], &e->h[1]), 0, "%s", fbk_errmsg());
    e->seed[1] = e->seed[0];
}

static int op_register(env *e)
{
    fbk_handle *h = SENTINEL;
    int rc = fbk_register(e->p, e->loc, &e->key[0], &h);
    if (rc)
        cr_assert_eq(h, SENTINEL, "register: out changed on failure");
    else
        e->h[0] = h;
    return finish(e, rc);
}

static void check_register(env *e, int rc)
{
    size_t before = e->h[1] ? 1 : 0;
    cr_assert_eq(fbk_pool_size(e->p), before + (rc == 0));
    cr_assert(fbk_location_contains(e->loc, &e->key[0]));
    if (rc)
        cr_assert_eq(fbk_register(e->p, e->loc, &e->key[0], &e->h[0]), 0, "%s", fbk_errmsg());
    expect_bytes(e->h[0], e->seed[0], "after register");
    if (e->h[1])
        expect_bytes(e->h[1], e->seed[1], "the first registration");
}

static const oom_case c_register = {"fbk_register", setup_register, op_register, check_register};
/* The token is shared and the item comes from the block of the pool's slab
 * that the first registration allocated: possibly no allocation at all. */
static const oom_case c_register_again = {"fbk_register (2nd of a key)", setup_register_again,
                                          op_register, check_register};

Test(oom, register_fails_cleanly_then_works) { run_case(&c_register, 0); }
Test(oom, register_of_registered_key_fails_cleanly_then_works)
{
    run_case_opt(&c_register_again, 0, true);
}
Test(oom, register_file_fails_cleanly_then_works) { run_case(&c_register, 1); }
