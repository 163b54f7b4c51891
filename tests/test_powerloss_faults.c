/* test_powerloss_faults.c -- EIO and ENOSPC at every call of a file: save.
 *
 * Two save cycles (five new values: the syncfs path of the file backend's
 * sync; one new value and one dropped: the fsync path) are counted first,
 * then run again with call N failing, for every N, with EIO and ENOSPC,
 * once and from then on (a failed fsync also loses its pages for good, as
 * Linux does).  After each run:
 *   - fbk_save never returns 0 when a call the save depends on failed, and
 *     the commit callback is not called when a persist or the sync failed;
 *     once the commit returned 0 the save has succeeded, and a stale key it
 *     could not remove is reported through fbk_store_drain;
 *   - no object is lost from memory (every handle loads its exact bytes);
 *   - a power cut right then leaves the old or the new manifest, intact,
 *     with all its objects (checked on the power-loss model's durable state);
 * (ENOSPC from then on: every other call, to keep the suite short.)
 *   - the store carries on: with the fault gone a later save succeeds --
 *     after reopening the location when the sync's sticky error says so, and
 *     after reopening the store when a syncfs failed (documented as final
 *     for every location on that file system) -- and its result is durable.
 */
#include "powerloss/plio.h"
#include "powerloss/plscen.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K(kind) (1u << (kind))
/* failures the backend may absorb: closing a descriptor it is done with,
 * removing a temporary after another failure */
#define ABSORBABLE (K(PLIO_CLOSE) | K(PLIO_UNLINKAT) | K(PLIO_CLOSEDIR) | K(PLIO_MUNMAP))
#define SYNCS (K(PLIO_FSYNC) | K(PLIO_FDATASYNC) | K(PLIO_SYNCFS))

enum { CYCLE_MANY = 0, CYCLE_ONE = 1 };

typedef struct totals {
    long runs, faulted, failed_saves, commits_skipped, sticky, store_reopens, stale_reported;
    pl_stats st;
} totals;

typedef struct fault_world {
    pl_world w;
    fbk_handle *h[12];
    size_t nh;
    fbk_handle *set[12];
    size_t nset;
} fault_world;

static const size_t sizes[] = {0, 100, 4000, 20000, 70000, 1000, 5, 33000, 8192, 600, 3000};

/* The first save (generation 1), then the cycle's set, ready to save. */
static void setup(fault_world *f, int cycle)
{
    memset(f, 0, sizeof *f);
    pl_world *w = &f->w;
    pl_world_init(w, "faults", 64);
    cr_assert_eq(plio_start(w->live), 0);
    plio_skip("store/spill");
    cr_assert_eq(pl_world_open(w), FBK_OK, "open: %s", fbk_errmsg());
    for (int i = 0; i < 6; i++)
        pl_new(w, sizes[i], 100 + (uint64_t)i, &f->h[i]);
    f->nh = 6;
    cr_assert_eq(pl_save(w, f->h, 6, 1), FBK_OK, "save 1: %s", fbk_errmsg());
    if (cycle == CYCLE_MANY) {
        pl_mutate(w, f->h[3], 200);
        for (int i = 6; i < 10; i++)
            pl_new(w, sizes[i], 300 + (uint64_t)i, &f->h[i]);
        f->nh = 10;
        size_t pick[] = {0, 1, 2, 3, 6, 7, 8, 9};
        for (size_t i = 0; i < 8; i++)
            f->set[i] = f->h[pick[i]];
        f->nset = 8;
    } else {
        pl_new(w, sizes[10], 400, &f->h[6]);
        f->nh = 7;
        size_t pick[] = {0, 1, 2, 3, 4, 6};
        for (size_t i = 0; i < 6; i++)
            f->set[i] = f->h[pick[i]];
        f->nset = 6;
    }
    cr_assert_eq(fbk_store_drain(w->s), FBK_OK, "drain: %s", fbk_errmsg());
}

static void teardown(fault_world *f)
{
    pl_release_all(f->h, f->nh);
    pl_world_close(&f->w);
    plio_stop();
    pl_world_remove(&f->w);
}

/* A power cut now: the durable state, two variants, must hold a manifest
 * of generation lo..hi with all its objects. */
static void check_durable(fault_world *f, int lo, int hi, size_t nvariants, const char *when,
                          totals *t)
{
    static const int variants[] = {PLIO_VARIANT(PLIO_DIR_SYNCED, PLIO_DATA_OLD),
                                   PLIO_VARIANT(PLIO_DIR_CURRENT, PLIO_DATA_TORN)};
    cr_assert_eq(fbk_store_drain(f->w.s), FBK_OK, "drain: %s", fbk_errmsg());
    for (size_t v = 0; v < nvariants && v < 2; v++) {
        char dst[PATH_MAX + 32], store[PATH_MAX + 48];
        snprintf(dst, sizeof dst, "%s/snap%zu", f->w.cuts, v);
        snprintf(store, sizeof store, "%s/store", dst);
        cr_assert_eq(plio_snapshot(dst, variants[v]), 0, "snapshot: %s", strerror(errno));
        /* the checker's store must not run through the model */
        plio_pause(1);
        pl_check_tree(&f->w, store, lo, hi, when, &t->st);
        tu_rmtree(dst);
        plio_pause(0);
    }
}

static void one_run(int cycle, long at, int err, int sticky, totals *t)
{
    fault_world *f = calloc(1, sizeof *f);
    cr_assert_not_null(f);
    setup(f, cycle);
    pl_world *w = &f->w;
    int before = w->committed;
    fbk_key old_keys[16];
    size_t nold = fbk_location_keys(w->loc, old_keys, 16);
    plio_fault_arm(at, err, sticky, 1);
    int rc = pl_save(w, f->set, f->nset, 1);
    plio_fault_disarm();
    int gen = w->ngen;
    t->runs++;
    int first;
    unsigned kinds;
    long nf = plio_faults(&first, &kinds);
    unsigned ks = plio_fault_kinds_in(PL_PHASE_SAVE), kc = plio_fault_kinds_in(PL_PHASE_COMMIT),
             ka = plio_fault_kinds_in(PL_PHASE_AFTER);
    char what[200];
    snprintf(what, sizeof what, "cycle %d, call %ld fails with %s %s (first failed: %s)", cycle,
             at, err == EIO ? "EIO" : "ENOSPC", sticky ? "from then on" : "once",
             nf ? plio_kind_name(first) : "none");
    if (nf)
        t->faulted++;
    if (rc)
        t->failed_saves++;

    /* errors are reported, and a failed persist/sync stops the commit */
    if (ks & ~ABSORBABLE) {
        cr_assert_neq(rc, 0, "%s: fbk_save returned 0", what);
        cr_assert_eq(w->commit_calls, 0, "%s: commit called after a failed persist/sync", what);
        t->commits_skipped++;
    }
    if (kc & ~ABSORBABLE)
        cr_assert_neq(rc, 0, "%s: a failed commit was not returned", what);
    (void)ka; /* after the commit the save has succeeded: see the stale keys below */
    int drc = fbk_store_drain(w->s); /* background errors, and failed stale removals */
    if (rc == 0) {
        cr_assert_eq(w->committed, gen, "%s: returned 0 without a commit", what);
        /* every stale key is gone, or its failed removal was reported (to
         * on_error and the next drain: the save itself had succeeded) */
        for (size_t i = 0; i < nold; i++) {
            int kept = 0;
            for (size_t j = 0; j < f->nset && !kept; j++) {
                fbk_key k;
                fbk_handle_key(f->set[j], &k);
                kept = fbk_key_equal(&k, &old_keys[i]);
            }
            if (!kept && fbk_location_contains(w->loc, &old_keys[i])) {
                cr_assert_neq(drc, 0, "%s: a stale key stayed and no error was reported", what);
                t->stale_reported++;
            }
        }
    }

    /* nothing lost from memory */
    for (size_t i = 0; i < f->nh; i++)
        cr_assert(pl_handle_ok(w, f->h[i]), "%s: handle %zu lost its object", what, i);

    /* a power cut now */
    check_durable(f, rc == 0 ? gen : before, w->commit_calls ? gen : before, 2, what, t);
    cr_assert_eq(t->st.failures, 0, "%s, then a power cut:\n%s", what, t->st.first);

    /* carry on without the fault */
    if (rc != 0) {
        int rc2 = pl_save(w, f->set, f->nset, 1);
        if (rc2 != 0) {
            /* a failed sync is final for the location (whatever call in it
             * failed): documented, and the message says so */
            cr_assert(strstr(fbk_errmsg(), "earlier") != NULL, "%s: a later save fails: %s",
                      what, fbk_errmsg());
            t->sticky++;
            fbk_location_close(w->loc);
            cr_assert_eq(fbk_location_open(w->s, "loc", &w->loc), FBK_OK, "%s", fbk_errmsg());
            rc2 = pl_save(w, f->set, f->nset, 1);
        }
        if (rc2 != 0) {
            /* a failed sync is final for the location's directory for the
             * rest of the store (the file: backend remembers it, so that a
             * reopened fbk_location cannot acknowledge keys whose pages a
             * failed flush may have dropped), and a writeback error (failed
             * fsync or syncfs) for the whole store: the reopened location's
             * first sync is a syncfs, which reports it again */
            const char *m = fbk_errmsg();
            cr_assert(strstr(m, "syncfs") != NULL || strstr(m, "failed earlier in this store"),
                      "%s: save after reopening the location: %s", what, m);
            t->store_reopens++;
            /* the user keeps the values elsewhere; the store starts anew */
            size_t lens[12];
            uint64_t seeds[12];
            for (size_t i = 0; i < f->nset; i++) {
                fbk_key k;
                fbk_handle_key(f->set[i], &k);
                for (size_t j = 0; j < w->nobjs; j++)
                    if (fbk_key_equal(&w->objs[j].key, &k)) {
                        lens[i] = w->objs[j].len;
                        seeds[i] = w->objs[j].seed;
                    }
            }
            size_t nset = f->nset;
            pl_release_all(f->h, f->nh);
            f->nh = 0;
            pl_world_close(w);
            cr_assert_eq(pl_world_open(w), FBK_OK, "%s: reopen: %s", what, fbk_errmsg());
            for (size_t i = 0; i < nset; i++) {
                pl_new(w, lens[i], seeds[i], &f->h[i]);
                f->set[i] = f->h[i];
            }
            f->nh = nset;
            rc2 = pl_save(w, f->set, f->nset, 1);
        }
        cr_assert_eq(rc2, FBK_OK, "%s: the store cannot carry on: %s", what, fbk_errmsg());
        for (size_t i = 0; i < f->nh; i++)
            cr_assert(pl_handle_ok(w, f->h[i]), "%s: handle %zu lost its object", what, i);
        check_durable(f, w->ngen, w->ngen, 1, what, t);
        cr_assert_eq(t->st.failures, 0, "%s, then a successful save, then a power cut:\n%s", what,
                     t->st.first);
    }
    teardown(f);
    free(f);
}

static long count_calls(int cycle)
{
    fault_world *f = calloc(1, sizeof *f);
    cr_assert_not_null(f);
    setup(f, cycle);
    plio_fault_arm(0, 0, 0, 0);
    cr_assert_eq(pl_save(&f->w, f->set, f->nset, 1), FBK_OK, "%s", fbk_errmsg());
    long n = plio_calls();
    teardown(f);
    free(f);
    return n;
}

static void every_call(int cycle, const char *name)
{
    totals t = {0};
    long n = count_calls(cycle);
    cr_assert_gt(n, 10, "the save made only %ld calls", n);
    /* under ASan every third call */
    long step = pl_sanitized() ? 3 : 1;
    static const int errs[] = {EIO, ENOSPC};
    for (long at = 1; at <= n + 1; at += step)
        for (int e = 0; e < 2; e++)
            for (int sticky = 0; sticky < 2; sticky++)
                if (!(errs[e] == ENOSPC && sticky && at % 2 == 0)) /* half of these */
                    one_run(cycle, at, errs[e], sticky, &t);
    fprintf(stderr,
            "powerloss faults %s: %ld calls per save; %ld runs, %ld with a fault injected, %ld "
            "saves failed, %ld commits withheld, %ld sticky sync errors (location reopened), "
            "%ld store reopens, %ld failed stale removals reported; %ld durable states checked, %ld manifest objects, lost %ld, "
            "corrupt %ld, wrong %ld\n",
            name, n, t.runs, t.faulted, t.failed_saves, t.commits_skipped, t.sticky,
            t.store_reopens, t.stale_reported, t.st.trees, t.st.objects, t.st.lost, t.st.corrupt, t.st.wrong);
    cr_assert_gt(t.failed_saves, 0);
}

Test(powerloss_faults, eio_or_enospc_at_any_call_of_a_five_value_save_is_reported_and_recoverable)
{
    every_call(CYCLE_MANY, "five new values (syncfs)");
}

Test(powerloss_faults, eio_or_enospc_at_any_call_of_a_one_value_save_is_reported_and_recoverable)
{
    every_call(CYCLE_ONE, "one new value (fsync)");
}
