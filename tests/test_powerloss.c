/* test_powerloss.c -- power cuts at every point of a file: save cycle.
 *
 * The cycle (five fbk_saves: a first save; one with five new values (the
 * syncfs path of the file backend's sync); one with nothing new (its sync
 * covers the removals of dropped values); one with a single new value (the
 * fsync path); one with nothing new -- each committed by an atomic manifest
 * write) runs through the power-loss model of tests/powerloss/plio.h.
 * Before every call that changes the file system the model writes out the
 * states a power cut there could leave -- unsynced names dropped or kept,
 * per directory or all at once; unsynced bytes lost, zeroed or torn -- and
 * each distinct state is then checked with a fresh store: the manifest is
 * the old or the new generation, every object it names registers and loads
 * byte-exact, and no other key ever loads wrong bytes.
 *
 * The negative control compiles nothing out: it sets the file backend's
 * fbk__file_skip_dir_fsync (one directory fsync of the sync skipped) and
 * asserts that the checker then finds lost objects.  Running this suite
 * with FBK_POWERLOSS_SKIP_DIR_FSYNC=1 makes the normal tests skip it too,
 * to see them fail. */
#include "../backends/file/file_io.h"
#include "powerloss/plio.h"
#include "powerloss/plscen.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cut_result {
    pl_stats st;
    long points, trees, dups, calls;
} cut_result;

#define ALL_VARIANTS ((1u << PLIO_VARIANTS) - 1)
/* four of the nine, one of each kind */
#define SOME_VARIANTS                                                                              \
    (1u << PLIO_VARIANT(PLIO_DIR_SYNCED, PLIO_DATA_OLD) |                                          \
     1u << PLIO_VARIANT(PLIO_DIR_SYNCED, PLIO_DATA_TORN) |                                         \
     1u << PLIO_VARIANT(PLIO_DIR_CURRENT, PLIO_DATA_ZERO) |                                        \
     1u << PLIO_VARIANT(PLIO_DIR_MIXED, PLIO_DATA_TORN))

static unsigned cut_variants(unsigned want)
{
    return pl_sanitized() ? (want & SOME_VARIANTS) : want;
}

static const char *const dir_names[] = {"synced-names", "current-names", "mixed-names"};
static const char *const data_names[] = {"old-bytes", "zeroed-bytes", "torn-bytes"};

static void sabotage_from_env(void)
{
    const char *e = getenv("FBK_POWERLOSS_SKIP_DIR_FSYNC");
    if (e && *e == '1')
        fbk__file_skip_dir_fsync = 1;
}

/* Runs the cycle under the model with cuts on, then checks every cut. */
static void run_cuts(const char *name, unsigned width, size_t mem_items, unsigned variants,
                     cut_result *r)
{
    memset(r, 0, sizeof *r);
    pl_world *w = calloc(1, sizeof *w);
    cr_assert_not_null(w);
    pl_world_init(w, name, mem_items);
    cr_assert_eq(plio_start(w->live), 0, "plio_start");
    plio_cuts_enable(w->cuts, cut_variants(variants), "store/spill");
    plio_set_user(0, 0);
    cr_assert_eq(pl_world_open(w), FBK_OK, "open: %s", fbk_errmsg());

    static const size_t sizes[] = {0, 100, 4000, 20000, 70000, 1000, 5, 33000, 8192, 600, 3000};
    fbk_handle *h[11] = {0};
    for (int i = 0; i < 6; i++)
        pl_new(w, sizes[i], 100 + (uint64_t)i, &h[i]);
    cr_assert_eq(pl_save(w, h, 6, width), FBK_OK, "save 1: %s", fbk_errmsg());

    /* five new values: one rewritten (new key), four new; two dropped */
    pl_mutate(w, h[3], 200);
    for (int i = 6; i < 10; i++)
        pl_new(w, sizes[i], 300 + (uint64_t)i, &h[i]);
    fbk_handle *s2[] = {h[0], h[1], h[2], h[3], h[6], h[7], h[8], h[9]};
    cr_assert_eq(pl_save(w, s2, 8, width), FBK_OK, "save 2: %s", fbk_errmsg());

    /* nothing new: the sync covers the removals of the two dropped values */
    cr_assert_eq(pl_save(w, s2, 8, width), FBK_OK, "save 3: %s", fbk_errmsg());

    /* one new value (the fsync path), one dropped */
    pl_new(w, sizes[10], 400, &h[10]);
    fbk_handle *s3[] = {h[0], h[1], h[2], h[3], h[7], h[8], h[9], h[10]};
    cr_assert_eq(pl_save(w, s3, 8, width), FBK_OK, "save 4: %s", fbk_errmsg());
    cr_assert_eq(pl_save(w, s3, 8, width), FBK_OK, "save 5: %s", fbk_errmsg());

    pl_release_all(h, 11);
    pl_world_close(w);
    plio_cut_now();
    plio_cut_stats(&r->points, &r->trees, &r->dups);
    plio_stop();

    plio_install_fast(1);
    size_t n = plio_cut_count();
    for (size_t i = 0; i < n; i++) {
        const plio_cut *c = plio_cut_get(i);
        char label[160], store[600];
        snprintf(label, sizeof label, "cut before call %ld (%s, %s)", c->call,
                 dir_names[c->variant / PLIO_DATA_MODES], data_names[c->variant % PLIO_DATA_MODES]);
        snprintf(store, sizeof store, "%s/store", c->path);
        pl_check_tree(w, store, c->user_lo, c->user_hi, label, &r->st);
        tu_rmtree(c->path);
        if (c->call > r->calls)
            r->calls = c->call;
    }
    plio_install_fast(0);
    fprintf(stderr,
            "powerloss %s: %ld calls, %ld changing points, %ld distinct cut states checked "
            "(%ld duplicates skipped); manifest objects checked %ld, lost %ld, corrupt %ld, "
            "wrong bytes %ld; other keys intact %ld, refused as corrupt %ld; bad manifests "
            "%ld; failing states %ld\n",
            name, r->calls, r->points, r->trees, r->dups, r->st.objects, r->st.lost,
            r->st.corrupt, r->st.wrong, r->st.extra_ok, r->st.extra_detected,
            r->st.bad_manifest, r->st.failures);
    pl_world_remove(w);
    free(w);
}

static void expect_clean(const cut_result *r)
{
    cr_assert_gt(r->trees, 50, "too few cut states (%ld): is the model cutting?", r->trees);
    cr_assert_gt(r->st.objects, 100);
    cr_assert_gt(r->st.extra_detected, 0,
                 "no garbled value was ever seen: the model does not garble unsynced data");
    cr_assert_eq(r->st.failures, 0, "%ld of %ld cut states fail:\n%s", r->st.failures, r->trees,
                 r->st.first);
}

Test(powerloss, cut_at_every_point_of_a_save_cycle_leaves_old_or_new_manifest_intact)
{
    sabotage_from_env();
    cut_result r;
    run_cuts("serial", 1, 64, ALL_VARIANTS, &r);
    expect_clean(&r);
}

Test(powerloss, cut_at_every_point_with_parallel_persists_and_evictions_leaves_a_valid_save)
{
    sabotage_from_env();
    cut_result r;
    run_cuts("parallel", 4, 3, SOME_VARIANTS, &r);
    expect_clean(&r);
}

Test(powerloss, control_checker_catches_a_skipped_shard_directory_fsync)
{
    fbk__file_skip_dir_fsync = 1;
    cut_result r;
    run_cuts("control", 1, 64, 1u << PLIO_VARIANT(PLIO_DIR_SYNCED, PLIO_DATA_OLD), &r);
    fbk__file_skip_dir_fsync = 0;
    fprintf(stderr, "powerloss control (one directory fsync skipped), the checker reports:\n%s",
            r.st.first);
    cr_assert_gt(r.st.lost, 0, "the checker missed the names a skipped fsync loses");
    cr_assert_gt(r.st.failures, 0);
}
