/* test_powerloss_maps.c -- power cuts at every changing call of a map's life
 * on file: (the model of tests/powerloss/plio.h: unsynced names dropped or
 * kept, unsynced bytes lost, zeroed or torn).  One name is put, replaced,
 * removed and put again, each change synced on return; another name is put
 * once.  Every cut state must hold, for each name, the state of its last
 * acknowledged change or of the change in flight -- never a name bound to a
 * missing or damaged object.
 *
 * The negative control skips the shard-directory fsync of the location's
 * sync (fbk__file_skip_dir_fsync): a binding then becomes durable before its
 * object's link, and the checker must see names bound to missing objects. */
#include "../backends/file/file_io.h"
#include "powerloss/plio.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The changes of name "x", in order: a size (a put of version i+1), or -1
 * (a remove).  State 0 is "absent". */
static const long steps[] = {100, 70000, 3000, -1, 5, 20000};
#define NSTEPS ((int)(sizeof steps / sizeof steps[0]))
#define BATCH 7 /* bindings of the last batch: more than file:'s fsync-each limit */

static uint64_t seed_of(long v) { return 7000u + (uint64_t)v; }

/* The object of version v: v in the first 8 bytes, derived bytes after. */
static fbk_blob *make_obj(long v, size_t len)
{
    fbk_blob *b = fbk_blob_new(NULL, len + 8);
    memcpy(b->data, &v, 8);
    tu_fill(b->data + 8, len, seed_of(v));
    return b;
}

/* Version held by obj (0 if not a complete object of ours). */
static long obj_version(const fbk_blob *b)
{
    long v;
    if (b->len < 8)
        return 0;
    memcpy(&v, b->data, 8);
    if (v < 1 || v > NSTEPS || steps[v - 1] < 0 || b->len != (size_t)steps[v - 1] + 8)
        return 0;
    unsigned char *want = malloc(b->len);
    tu_fill(want, b->len - 8, seed_of(v));
    int ok = memcmp(want, b->data + 8, b->len - 8) == 0;
    free(want);
    return ok ? v : 0;
}

/* The state of x after generation g: 0 absent, else the version bound
 * (generation NSTEPS + 1, the batch of other names, leaves x alone). */
static long state_after(int g)
{
    long st = 0;
    for (int i = 0; i < g && i < NSTEPS; i++)
        st = steps[i] < 0 ? 0 : i + 1;
    return st;
}

typedef struct world {
    char root[PATH_MAX], live[PATH_MAX + 8], cuts[PATH_MAX + 8];
} world;

static void world_init(world *w, const char *name)
{
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NULL;
    if (base)
        snprintf(w->root, sizeof w->root, "%s/fbk-plmaps-%ld-%s", base, (long)getpid(), name);
    else
        snprintf(w->root, sizeof w->root, "%s", tu_fresh_dir(name));
    tu_rmtree(w->root);
    mkdir(w->root, 0755);
    snprintf(w->live, sizeof w->live, "%s/live", w->root);
    snprintf(w->cuts, sizeof w->cuts, "%s/cuts", w->root);
    mkdir(w->live, 0755);
    mkdir(w->cuts, 0755);
}

typedef struct result {
    long trees, checked, failures, missing;
    char first[600];
} result;

static void fail_note(result *r, const char *fmt, const char *label, const char *what)
{
    r->failures++;
    if (!r->first[0])
        snprintf(r->first, sizeof r->first, fmt, label, what);
}

/* file: refs (backends/file/file_refs.c): in an index marked as having
 * them (.fbk-names/.refs), every binding file whose object is there has its
 * ref beside the object; a binding without one could lose its object to
 * another process's orphan removal.  The number of bindings without. */
static int bindings_without_refs(const char *store_dir)
{
    char names[PATH_MAX + 64], path[2 * PATH_MAX];
    snprintf(names, sizeof names, "%s/loc/.fbk-names", store_dir);
    snprintf(path, sizeof path, "%s/.refs", names);
    if (access(path, F_OK) != 0)
        return 0; /* refs built at the next writer's open */
    DIR *d = opendir(names);
    if (!d)
        return 0;
    int bad = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strlen(de->d_name) != 32 || de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", names, de->d_name);
        unsigned char buf[24];
        FILE *f = fopen(path, "rb");
        size_t got = f ? fread(buf, 1, sizeof buf, f) : 0;
        if (f)
            fclose(f);
        if (got != sizeof buf || memcmp(buf, "FBKN", 4) != 0)
            continue; /* damaged: the map reports it */
        char hex[33];
        for (int i = 0; i < 16; i++)
            snprintf(hex + 2 * i, 3, "%02x", buf[8 + i]);
        snprintf(path, sizeof path, "%s/loc/%.2s/%s", store_dir, hex, hex);
        if (access(path, F_OK) != 0)
            continue; /* no object: check_tree counts it */
        snprintf(path, sizeof path, "%s/loc/%.2s/%s.name-%s", store_dir, hex, hex, de->d_name);
        bad += access(path, F_OK) != 0;
    }
    closedir(d);
    return bad;
}

/* Checks one cut tree. */
static void check_tree(const char *store_dir, int lo, int hi, const char *label, result *r)
{
    if (bindings_without_refs(store_dir) > 0) {
        r->checked++;
        fail_note(r, "%s: %s", label, "a binding is durable without its ref (file_refs.c)");
        return;
    }
    char uri[PATH_MAX + 8];
    snprintf(uri, sizeof uri, "file:%s", store_dir);
    tu_mapenv e;
    r->checked++;
    if (tu_map_open(&e, uri, "loc", 4, NULL, 0) != 0) {
        fail_note(r, "%s: store/location/map open: %s", label, fbk_errmsg());
        return;
    }
    fbk_map *m = e.m;
    long allowed_lo = state_after(lo), allowed_hi = state_after(hi);
    fbk_handle *h;
    int rc = fbk_map_get(m, "x", 1, &h);
    long got = -1;
    if (rc == FBK_ENOTFOUND) {
        got = 0;
    } else if (rc == 0) {
        const void *obj;
        rc = fbk_load(h, &obj);
        if (rc == 0) {
            got = obj_version(obj);
            fbk_unload(h);
            if (got == 0)
                got = -2; /* wrong bytes */
        }
        fbk_handle_release(h);
    }
    if (got == -1) {
        r->missing++;
        fail_note(r, "%s: x resolves to a missing or damaged object: %s", label, fbk_errmsg());
    } else if (got != allowed_lo && got != allowed_hi) {
        char what[120];
        snprintf(what, sizeof what, "x holds state %ld, allowed %ld or %ld", got, allowed_lo,
                 allowed_hi);
        fail_note(r, "%s: %s", label, what);
    }
    /* "y" was put once, at generation 1 */
    rc = fbk_map_get(m, "y", 1, &h);
    if (rc == 0) {
        const void *obj;
        if (fbk_load(h, &obj) != 0) {
            r->missing++;
            fail_note(r, "%s: y resolves to a missing object: %s", label, fbk_errmsg());
        } else {
            fbk_unload(h);
        }
        fbk_handle_release(h);
    } else if (rc != FBK_ENOTFOUND || lo >= 1) {
        fail_note(r, "%s: y lost or unreadable: %s", label, fbk_errmsg());
    }
    /* "b0".."b<BATCH-1>": any of them before the batch's sync returned,
     * all of them after; each complete */
    for (int i = 0; i < BATCH; i++) {
        char nm[8];
        snprintf(nm, sizeof nm, "b%d", i);
        rc = fbk_map_get(m, nm, strlen(nm), &h);
        if (rc == FBK_ENOTFOUND) {
            if (lo > NSTEPS)
                fail_note(r, "%s: %s", label, "a name of the synced batch was lost");
            continue;
        }
        const void *obj;
        if (rc != 0 || fbk_load(h, &obj) != 0) {
            r->missing++;
            fail_note(r, "%s: a batch name resolves to a missing object: %s", label,
                      fbk_errmsg());
        } else {
            if (obj_version(obj) != 1)
                fail_note(r, "%s: %s", label, "a batch name holds wrong bytes");
            fbk_unload(h);
        }
        if (rc == 0)
            fbk_handle_release(h);
    }
    tu_map_close(&e);
}

static void run(const char *name, unsigned variants, result *r)
{
    memset(r, 0, sizeof *r);
    world w;
    world_init(&w, name);
    cr_assert_eq(plio_start(w.live), 0);
    plio_cuts_enable(w.cuts, variants, "store/spill");
    plio_set_user(0, 0);
    char uri[PATH_MAX + 32];
    snprintf(uri, sizeof uri, "file:%s/store", w.live);
    tu_mapenv e;
    cr_assert_eq(tu_map_open(&e, uri, "loc", 2, NULL, 0), 0, "%s", fbk_errmsg());
    fbk_map *m = e.m;
    fbk_pool *p = e.p;
    for (int g = 1; g <= NSTEPS; g++) {
        plio_set_user(g - 1, g);
        if (steps[g - 1] < 0) {
            cr_assert_eq(fbk_map_remove(m, "x", 1), 0, "%s", fbk_errmsg());
        } else {
            fbk_handle *h;
            cr_assert_eq(fbk_insert(p, make_obj(g, (size_t)steps[g - 1]), &h), 0);
            cr_assert_eq(fbk_map_put(m, "x", 1, h), 0, "%s", fbk_errmsg());
            if (g == 1)
                cr_assert_eq(fbk_map_put(m, "y", 1, h), 0, "%s", fbk_errmsg());
            fbk_handle_release(h);
        }
        plio_set_user(g, g);
    }
    cr_assert_eq(tu_map_close(&e), 0);
    /* a batch of BATCH NOSYNC puts made durable by one sync: the syncfs
     * path of the name index (more than a few bindings at once) */
    fbk_map_options nosync = {.flags = FBK_MAP_NOSYNC};
    cr_assert_eq(tu_map_open(&e, uri, "loc", 2, &nosync, 0), 0, "%s", fbk_errmsg());
    plio_set_user(NSTEPS, NSTEPS + 1);
    for (int i = 0; i < BATCH; i++) {
        char nm[8];
        snprintf(nm, sizeof nm, "b%d", i);
        fbk_handle *h;
        cr_assert_eq(fbk_insert(e.p, make_obj(1, (size_t)steps[0]), &h), 0);
        cr_assert_eq(fbk_map_put(e.m, nm, strlen(nm), h), 0, "%s", fbk_errmsg());
        fbk_handle_release(h);
    }
    cr_assert_eq(fbk_map_sync(e.m), 0, "%s", fbk_errmsg());
    plio_set_user(NSTEPS + 1, NSTEPS + 1);
    cr_assert_eq(tu_map_close(&e), 0);
    plio_cut_now();
    long points, dups;
    plio_cut_stats(&points, &r->trees, &dups);
    plio_stop();

    plio_install_fast(1);
    size_t n = plio_cut_count();
    for (size_t i = 0; i < n; i++) {
        const plio_cut *c = plio_cut_get(i);
        char label[160], store[600];
        snprintf(label, sizeof label, "cut before call %ld (variant %d, generations %d..%d)",
                 c->call, c->variant, c->user_lo, c->user_hi);
        snprintf(store, sizeof store, "%s/store", c->path);
        check_tree(store, c->user_lo, c->user_hi, label, r);
        tu_rmtree(c->path);
    }
    plio_install_fast(0);
    fprintf(stderr, "powerloss maps %s: %ld changing points, %ld cut states checked, %ld failing "
                    "(%ld with a name bound to a missing object)\n",
            name, points, r->checked, r->failures, r->missing);
    tu_rmtree(w.root);
}

#define ALL_VARIANTS ((1u << PLIO_VARIANTS) - 1)

Test(powerloss_maps, a_cut_anywhere_leaves_each_name_at_its_acknowledged_or_in_flight_state,
     .timeout = 900)
{
    result r;
    run("all", ALL_VARIANTS, &r);
    cr_assert_gt(r.trees, 30, "too few cut states (%ld): is the model cutting?", r.trees);
    cr_assert_eq(r.failures, 0, "%ld of %ld cut states fail; the first:\n%s", r.failures,
                 r.checked, r.first);
}

Test(powerloss_maps, control_a_skipped_directory_fsync_leaves_names_without_objects)
{
    fbk__file_skip_dir_fsync = 1;
    result r;
    run("control", 1u << PLIO_VARIANT(PLIO_DIR_SYNCED, PLIO_DATA_OLD), &r);
    fbk__file_skip_dir_fsync = 0;
    fprintf(stderr, "powerloss maps control, the checker reports: %s\n", r.first);
    cr_assert_gt(r.missing, 0, "the checker missed names bound to objects a power cut lost");
}
