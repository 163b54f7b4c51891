/* test_deadlock.c -- one worker thread, slow stores, and many threads
 * cloning and writing one shared item must all finish (Criterion's timeout
 * fails the test if anything hangs). */
#include "counting_backend.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

enum { NT = 8, LEN = 64 };

typedef struct worker {
    fbk_handle *h;
    int id;
    int use_async;
    int rc_mut, rc_write;
} worker;

static void *run(void *arg)
{
    worker *w = arg;
    void *obj = NULL;
    w->rc_mut = fbk_make_mut(&w->h, &obj);
    if (w->rc_mut != 0)
        return NULL;
    fbk_blob *b = obj;
    memset(b->data, 'a' + w->id, b->len);
    fbk_unload_mut(w->h);
    if (w->use_async) {
        fbk_task *t = NULL;
        w->rc_write = fbk_write_now_async(w->h, &t);
        if (w->rc_write == 0)
            w->rc_write = fbk_task_wait(t);
    } else {
        w->rc_write = fbk_write_now(w->h);
    }
    return NULL;
}

static void check_item(fbk_handle *h, unsigned char c)
{
    const void *obj;
    int rc = fbk_load(h, &obj);
    cr_assert_eq(rc, 0, "load: %s", fbk_err_name(rc));
    const fbk_blob *b = obj;
    cr_assert_eq(b->len, LEN);
    for (size_t i = 0; i < LEN; i++)
        cr_assert_eq(b->data[i], c, "byte %zu is %d, want %d", i, b->data[i], c);
    fbk_unload(h);
}

static void run_threads(int keep_original, int use_async)
{
    fx f = {0};
    f.opts.threads = 1;
    fx_open(&f, 2);
    counting_store_sleep_ms(f.cb, 200);
    fbk_handle *orig = tc_insert(f.p, LEN, 1);
    /* some other items so that evictions compete for the one worker */
    fbk_handle *other[3];
    for (int i = 0; i < 3; i++)
        other[i] = tc_insert(f.p, LEN, 10 + (uint64_t)i);

    worker w[NT];
    pthread_t th[NT];
    for (int i = 0; i < NT; i++) {
        w[i].h = fbk_handle_retain(orig);
        w[i].id = i;
        w[i].use_async = use_async;
        w[i].rc_mut = w[i].rc_write = -100;
    }
    fbk_key k0 = tc_key(orig);
    if (!keep_original)
        fbk_handle_release(orig);
    for (int i = 0; i < NT; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, run, &w[i]), 0);
    for (int i = 0; i < NT; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < NT; i++) {
        cr_assert_eq(w[i].rc_mut, 0, "thread %d make_mut: %s", i, fbk_err_name(w[i].rc_mut));
        cr_assert_eq(w[i].rc_write, 0, "thread %d write_now: %s", i, fbk_err_name(w[i].rc_write));
    }
    cr_assert_eq(fbk_store_drain(f.s), 0);
    for (int i = 0; i < NT; i++) {
        fbk_key ki = tc_key(w[i].h);
        cr_assert_not(fbk_key_equal(&ki, &k0), "thread %d kept the shared key", i);
        cr_assert_eq(counting_times_stored(f.cb, &ki), 1);
        for (int j = 0; j < i; j++) {
            fbk_key kj = tc_key(w[j].h);
            cr_assert_not(fbk_key_equal(&ki, &kj), "threads %d and %d share a key", i, j);
        }
        check_item(w[i].h, (unsigned char)('a' + i));
    }
    if (keep_original) {
        cr_assert_eq(tc_check(orig, LEN, 1), 0, "the shared item was changed");
        fbk_handle_release(orig);
    }
    cr_assert_eq(fbk_pool_size(f.p), NT + 3);
    for (int i = 0; i < NT; i++)
        fbk_handle_release(w[i].h);
    for (int i = 0; i < 3; i++)
        fbk_handle_release(other[i]);
    cr_assert_eq(fbk_store_drain(f.s), 0);
    cr_assert_eq(counting_spill_size(f.cb), 0);
    fx_close(&f);
}

Test(deadlock, make_mut_and_write_now_on_one_shared_item_finish, .timeout = 60)
{
    run_threads(1, 0);
}

Test(deadlock, without_an_outside_reference_all_finish, .timeout = 60) { run_threads(0, 0); }

Test(deadlock, make_mut_and_write_now_async_on_one_worker_finish, .timeout = 60)
{
    run_threads(1, 1);
}
