/* test_save.c -- fbk_save: persist all, sync, commit, then (only after a
 * successful commit) remove the keys of the previous save. */
#include "counting_backend.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

typedef struct commit_log {
    int calls;
    int result;
    unsigned long syncs_seen;   /* sync calls when commit ran */
    unsigned long removes_seen; /* remove_persisted calls when commit ran */
    counting *cb;
} commit_log;

static int commit_fn(void *arg)
{
    commit_log *c = arg;
    c->calls++;
    c->syncs_seen = counting_calls(c->cb, CB_SYNC);
    c->removes_seen = counting_calls(c->cb, CB_REMOVE_PERSISTED);
    return c->result;
}

typedef struct sv {
    fx f;
    fbk_location *loc;
    fbk_handle *A, *B, *C;
    fbk_key kA, kB, kC;
    commit_log log;
} sv;

static void sv_open(sv *t)
{
    memset(t, 0, sizeof *t);
    fx_open(&t->f, 8);
    cr_assert_eq(fbk_location_open(t->f.s, "L", &t->loc), 0);
    t->A = tc_insert(t->f.p, 100, 'A');
    t->B = tc_insert(t->f.p, 100, 'B');
    t->C = tc_insert(t->f.p, 100, 'C');
    t->kA = tc_key(t->A);
    t->kB = tc_key(t->B);
    t->kC = tc_key(t->C);
    t->log.cb = t->f.cb;
}

static void sv_close(sv *t)
{
    fbk_handle_release(t->A);
    fbk_handle_release(t->B);
    fbk_handle_release(t->C);
    fbk_location_close(t->loc);
    fx_close(&t->f);
}

/* save {A, B} successfully and reset counters. */
static void save_ab(sv *t)
{
    fbk_handle *hs[] = {t->A, t->B};
    int rc = fbk_save(t->loc, hs, 2, 0, commit_fn, &t->log);
    cr_assert_eq(rc, 0, "first save: %s (%s)", fbk_err_name(rc), fbk_errmsg());
    cr_assert_eq(t->log.calls, 1);
    cr_assert_eq(fbk_location_count(t->loc), 2);
    t->log.calls = 0;
    counting_reset(t->f.cb);
}

Test(save, save_persists_every_handle_syncs_then_commits)
{
    sv t;
    sv_open(&t);
    fbk_handle *hs[] = {t.A, t.B};
    cr_assert_eq(fbk_save(t.loc, hs, 2, 0, commit_fn, &t.log), 0);
    cr_assert_eq(t.log.calls, 1);
    cr_assert_eq(t.log.syncs_seen, 1, "commit must run after the sync");
    cr_assert_eq(counting_calls(t.f.cb, CB_PERSIST), 2);
    cr_assert_eq(counting_calls(t.f.cb, CB_STORE), 2, "unwritten items are written first");
    cr_assert_eq(fbk_location_contains(t.loc, &t.kA), 1);
    cr_assert_eq(fbk_location_contains(t.loc, &t.kB), 1);
    cr_assert_eq(fbk_location_contains(t.loc, &t.kC), 0);
    cr_assert_eq(counting_loc_has(t.f.cb, "L", &t.kA), 1);
    cr_assert_eq(counting_loc_has(t.f.cb, "L", &t.kB), 1);
    cr_assert_eq(counting_calls(t.f.cb, CB_REMOVE_PERSISTED), 0);
    sv_close(&t);
}

Test(save, second_save_removes_keys_not_in_it_after_commit)
{
    sv t;
    sv_open(&t);
    save_ab(&t);
    fbk_handle *hs[] = {t.B, t.C};
    cr_assert_eq(fbk_save(t.loc, hs, 2, 0, commit_fn, &t.log), 0);
    cr_assert_eq(t.log.calls, 1);
    cr_assert_eq(t.log.removes_seen, 0, "a key was removed before commit");
    cr_assert_eq(counting_calls(t.f.cb, CB_PERSIST), 1, "B was already there: only C is copied");
    cr_assert_eq(counting_calls(t.f.cb, CB_REMOVE_PERSISTED), 1);
    cr_assert_eq(fbk_location_contains(t.loc, &t.kA), 0);
    cr_assert_eq(fbk_location_contains(t.loc, &t.kB), 1);
    cr_assert_eq(fbk_location_contains(t.loc, &t.kC), 1);
    cr_assert_eq(counting_loc_has(t.f.cb, "L", &t.kA), 0);
    cr_assert_eq(counting_loc_count(t.f.cb, "L"), 2);
    /* the items themselves are untouched */
    cr_assert_eq(tc_check(t.A, 100, 'A'), 0);
    sv_close(&t);
}

Test(save, same_set_again_copies_and_removes_nothing)
{
    sv t;
    sv_open(&t);
    save_ab(&t);
    fbk_handle *hs[] = {t.A, t.B};
    cr_assert_eq(fbk_save(t.loc, hs, 2, 0, commit_fn, &t.log), 0);
    cr_assert_eq(counting_calls(t.f.cb, CB_PERSIST), 0);
    cr_assert_eq(counting_calls(t.f.cb, CB_STORE), 0);
    cr_assert_eq(counting_calls(t.f.cb, CB_REMOVE_PERSISTED), 0);
    cr_assert_eq(t.log.calls, 1);
    sv_close(&t);
}

Test(save, failing_commit_result_is_returned_and_nothing_removed)
{
    sv t;
    sv_open(&t);
    save_ab(&t);
    t.log.result = 7;
    fbk_handle *hs[] = {t.B, t.C};
    cr_assert_eq(fbk_save(t.loc, hs, 2, 0, commit_fn, &t.log), 7);
    cr_assert_eq(t.log.calls, 1);
    cr_assert_eq(counting_calls(t.f.cb, CB_REMOVE_PERSISTED), 0);
    cr_assert_eq(fbk_location_contains(t.loc, &t.kA), 1, "A removed although commit failed");
    cr_assert_eq(counting_loc_has(t.f.cb, "L", &t.kA), 1);
    sv_close(&t);
}

Test(save, failing_commit_with_an_fbk_code_is_returned_as_is)
{
    sv t;
    sv_open(&t);
    save_ab(&t);
    t.log.result = FBK_EIO;
    fbk_handle *hs[] = {t.C};
    cr_assert_eq(fbk_save(t.loc, hs, 1, 0, commit_fn, &t.log), FBK_EIO);
    cr_assert_eq(counting_calls(t.f.cb, CB_REMOVE_PERSISTED), 0);
    cr_assert_eq(fbk_location_contains(t.loc, &t.kA), 1);
    cr_assert_eq(fbk_location_contains(t.loc, &t.kB), 1);
    sv_close(&t);
}

Test(save, persist_failure_skips_commit_and_keeps_previous_save)
{
    sv t;
    sv_open(&t);
    save_ab(&t);
    counting_fail(t.f.cb, CB_PERSIST, FBK_EIO, -1);
    fbk_handle *hs[] = {t.B, t.C};
    cr_assert_eq(fbk_save(t.loc, hs, 2, 0, commit_fn, &t.log), FBK_EIO);
    cr_assert_eq(t.log.calls, 0, "commit called after a failed persist");
    cr_assert_eq(counting_calls(t.f.cb, CB_REMOVE_PERSISTED), 0);
    cr_assert_eq(fbk_location_contains(t.loc, &t.kA), 1);
    cr_assert_eq(fbk_location_contains(t.loc, &t.kB), 1);
    cr_assert_eq(fbk_location_contains(t.loc, &t.kC), 0);
    cr_assert_eq(counting_loc_has(t.f.cb, "L", &t.kA), 1);
    cr_assert_eq(counting_loc_has(t.f.cb, "L", &t.kB), 1);
    cr_assert_neq(fbk_errmsg()[0], '\0');
    /* the fault cleared, the same save goes through */
    counting_fail(t.f.cb, CB_PERSIST, 0, 0);
    cr_assert_eq(fbk_save(t.loc, hs, 2, 0, commit_fn, &t.log), 0);
    cr_assert_eq(t.log.calls, 1);
    cr_assert_eq(fbk_location_contains(t.loc, &t.kA), 0);
    sv_close(&t);
}

Test(save, store_failure_skips_commit)
{
    sv t;
    sv_open(&t);
    save_ab(&t);
    counting_fail(t.f.cb, CB_STORE, FBK_ENOSPC, -1);
    fbk_handle *hs[] = {t.B, t.C};
    cr_assert_eq(fbk_save(t.loc, hs, 2, 1, commit_fn, &t.log), FBK_ENOSPC);
    cr_assert_eq(t.log.calls, 0);
    cr_assert_eq(counting_calls(t.f.cb, CB_REMOVE_PERSISTED), 0);
    cr_assert_eq(fbk_location_contains(t.loc, &t.kA), 1);
    counting_fail(t.f.cb, CB_STORE, 0, 0);
    cr_assert_eq(tc_check(t.C, 100, 'C'), 0, "the item survived the failed save");
    sv_close(&t);
}

Test(save, sync_failure_skips_commit)
{
    sv t;
    sv_open(&t);
    save_ab(&t);
    counting_fail(t.f.cb, CB_SYNC, FBK_EIO, -1);
    fbk_handle *hs[] = {t.B, t.C};
    cr_assert_eq(fbk_save(t.loc, hs, 2, 0, commit_fn, &t.log), FBK_EIO);
    cr_assert_eq(t.log.calls, 0, "commit called after a failed sync");
    cr_assert_eq(counting_calls(t.f.cb, CB_REMOVE_PERSISTED), 0);
    cr_assert_eq(fbk_location_contains(t.loc, &t.kA), 1);
    cr_assert_eq(counting_loc_has(t.f.cb, "L", &t.kA), 1);
    sv_close(&t);
}

Test(save, null_commit_counts_as_committed)
{
    sv t;
    sv_open(&t);
    save_ab(&t);
    fbk_handle *hs[] = {t.C};
    cr_assert_eq(fbk_save(t.loc, hs, 1, 0, NULL, NULL), 0);
    cr_assert_eq(fbk_location_count(t.loc), 1);
    cr_assert_eq(fbk_location_contains(t.loc, &t.kC), 1);
    cr_assert_eq(counting_calls(t.f.cb, CB_REMOVE_PERSISTED), 2);
    sv_close(&t);
}

Test(save, empty_save_removes_everything_after_commit)
{
    sv t;
    sv_open(&t);
    save_ab(&t);
    cr_assert_eq(fbk_save(t.loc, NULL, 0, 0, commit_fn, &t.log), 0);
    cr_assert_eq(t.log.calls, 1);
    cr_assert_eq(fbk_location_count(t.loc), 0);
    cr_assert_eq(counting_loc_count(t.f.cb, "L"), 0);
    sv_close(&t);
}

Test(save, keys_from_an_earlier_session_are_removed_too)
{
    sv t;
    sv_open(&t);
    fbk_key old;
    fbk_key_generate(&old);
    cr_assert_eq(counting_loc_put(t.f.cb, "M", &old, "junk", 4), 0);
    fbk_location *m = NULL;
    cr_assert_eq(fbk_location_open(t.f.s, "M", &m), 0);
    cr_assert_eq(fbk_location_count(m), 1);
    fbk_handle *hs[] = {t.A};
    cr_assert_eq(fbk_save(m, hs, 1, 0, commit_fn, &t.log), 0);
    cr_assert_eq(fbk_location_contains(m, &old), 0);
    cr_assert_eq(counting_loc_has(t.f.cb, "M", &old), 0);
    cr_assert_eq(fbk_location_contains(m, &t.kA), 1);
    fbk_location_close(m);
    sv_close(&t);
}

Test(save, many_handles_with_max_parallel_1_and_spilled_items)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), 0);
    enum { M = 40 };
    fbk_handle *h[M];
    for (int i = 0; i < M; i++)
        h[i] = tc_insert(f.p, 50, (uint64_t)i);
    for (unsigned par = 1; par <= 3; par += 2) {
        int rc = fbk_save(loc, h, M, par, NULL, NULL);
        cr_assert_eq(rc, 0, "max_parallel %u: %s (%s)", par, fbk_err_name(rc), fbk_errmsg());
        cr_assert_eq(fbk_location_count(loc), M);
    }
    cr_assert_eq(counting_calls(f.cb, CB_PERSIST), M);
    cr_assert_eq(counting_loc_count(f.cb, "L"), M);
    for (int i = 0; i < M; i++) {
        fbk_key k = tc_key(h[i]);
        cr_assert_eq(counting_loc_has(f.cb, "L", &k), 1);
        cr_assert_eq(counting_times_stored(f.cb, &k), 1, "item %d written %zu times", i,
                     counting_times_stored(f.cb, &k));
    }
    for (int i = 0; i < M; i++)
        fbk_handle_release(h[i]);
    fbk_location_close(loc);
    fx_close(&f);
}

/* The same handle twice, and two handles of one key: each key is copied
 * once, and nothing races on it. */
Test(save, duplicate_keys_in_one_save_are_copied_once)
{
    sv t;
    sv_open(&t);
    fbk_handle *A2 = fbk_handle_retain(t.A);
    fbk_handle *hs[] = {t.A, t.B, t.A, A2, t.B};
    cr_assert_eq(fbk_save(t.loc, hs, 5, 4, commit_fn, &t.log), 0);
    cr_assert_eq(counting_calls(t.f.cb, CB_PERSIST), 2);
    cr_assert_eq(counting_calls(t.f.cb, CB_STORE), 2);
    cr_assert_eq(fbk_location_count(t.loc), 2);
    cr_assert_eq(counting_loc_count(t.f.cb, "L"), 2);
    fbk_handle_release(A2);
    sv_close(&t);
}

typedef struct saver {
    fbk_location *loc;
    fbk_handle **h;
    size_t n;
    unsigned par;
    int rc;
} saver;

static void *save_thread(void *arg)
{
    saver *v = arg;
    v->rc = fbk_save(v->loc, v->h, v->n, v->par, NULL, NULL);
    return NULL;
}

/* At most max_parallel persists at a time, even with more workers idle. */
Test(save, max_parallel_bounds_persists_in_flight, .timeout = 60)
{
    fx f = {0};
    f.opts.threads = 4;
    fx_open(&f, 16);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), 0);
    enum { M = 12 };
    fbk_handle *h[M];
    for (int i = 0; i < M; i++) {
        h[i] = tc_insert(f.p, 32, (uint64_t)i);
        cr_assert_eq(fbk_write_now(h[i]), 0);
    }
    counting_gate_close(f.cb, CB_PERSIST);
    saver v = {.loc = loc, .h = h, .n = M, .par = 2, .rc = -100};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, save_thread, &v), 0);
    counting_gate_wait(f.cb, CB_PERSIST, 2);
    counting_gate_open(f.cb, CB_PERSIST);
    pthread_join(th, NULL);
    cr_assert_eq(v.rc, 0, "%s", fbk_err_name(v.rc));
    cr_assert_eq(counting_calls(f.cb, CB_PERSIST), M);
    cr_assert_leq(counting_max_active(f.cb, CB_PERSIST), 2,
                  "%u persists at once with max_parallel 2", counting_max_active(f.cb, CB_PERSIST));
    for (int i = 0; i < M; i++)
        fbk_handle_release(h[i]);
    fbk_location_close(loc);
    fx_close(&f);
}
