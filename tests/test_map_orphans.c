/* test_map_orphans.c -- an object a map's change orphaned is removed only
 * when no binding refers to it, as every process left the index: another
 * process may have bound a name of its own to the object meanwhile, which
 * this map's view does not show (backend table version 5,
 * remove_unbound; lmdb: keeps reference counts with the index, file: a ref
 * file per binding beside the object, backends/file/file_refs.c).
 *
 * Process B gets name X (object k1) and puts it under Y; process A, which
 * bound X to k1 and never saw Y, rebinds X: k1 is A's orphan, but Y still
 * names it, so it must stay. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <fbk_backend.h>
#include <ftw.h>
#include <lmdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef tu_mapenv env;

static int env_open(env *e, const char *uri) { return tu_map_open(e, uri, "m", 4, NULL, 0); }

static int env_close(env *e) { return tu_map_close(e); }

/* file: the refs under DIR (entries "<key>.name-<hex>"), removed if drop. */
static size_t nrefs;
static int drop_refs;
static int count_ref(const char *path, const struct stat *st, int type, struct FTW *f)
{
    (void)st;
    if (type == FTW_F && strstr(path + f->base, ".name-")) {
        nrefs++;
        if (drop_refs)
            cr_assert_eq(unlink(path), 0);
    }
    if (type == FTW_F && drop_refs && strcmp(path + f->base, ".refs") == 0)
        cr_assert_eq(unlink(path), 0);
    return 0;
}
static size_t file_refs(const char *dir, int drop)
{
    nrefs = 0;
    drop_refs = drop;
    cr_assert_eq(nftw(dir, count_ref, 16, FTW_PHYS), 0);
    return nrefs;
}

static int put(env *e, const char *name, size_t len, uint64_t seed)
{
    fbk_handle *h;
    if (fbk_insert(e->p, tu_blob(len, seed), &h))
        return -1;
    int rc = fbk_map_put(e->m, name, strlen(name), h);
    fbk_handle_release(h);
    return rc;
}

/* process B: Y := the object of X */
static int alias(const char *uri)
{
    env e;
    if (env_open(&e, uri))
        return 10;
    fbk_handle *h;
    if (fbk_map_get(e.m, "X", 1, &h))
        return 11;
    int rc = fbk_map_put(e.m, "Y", 1, h);
    fbk_handle_release(h);
    if (rc)
        return 12;
    return env_close(&e) ? 13 : 0;
}

static void orphan_of_a_stale_view_survives(const char *scheme)
{
    char dir[4096], uri[4200];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir(scheme));
    snprintf(uri, sizeof uri, "%s:%s", scheme, dir);
    int go[2], done[2];
    cr_assert_eq(pipe(go), 0);
    cr_assert_eq(pipe(done), 0);
    /* B forks before A opens anything: a store is never used across fork */
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        char c;
        close(go[1]);
        close(done[0]);
        int rc = read(go[0], &c, 1) == 1 ? alias(uri) : 20;
        if (rc)
            fprintf(stderr, "process B: step %d: %s\n", rc, fbk_errmsg());
        unsigned char r = (unsigned char)rc;
        _exit(write(done[1], &r, 1) == 1 ? rc : 21);
    }
    close(go[0]);
    close(done[1]);
    env a;
    cr_assert_eq(env_open(&a, uri), 0, "%s", fbk_errmsg());
    cr_assert_eq(put(&a, "X", 3000, 1), 0, "%s", fbk_errmsg());
    cr_assert_eq(write(go[1], "g", 1), 1);
    unsigned char r = 99;
    cr_assert_eq(read(done[0], &r, 1), 1);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "process B failed (%d)", r);
    /* A rebinds X: its old object is A's orphan, removed after the sync --
     * unless a binding A never saw (Y) refers to it */
    cr_assert_eq(put(&a, "X", 100, 2), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_sync(a.m), 0, "%s", fbk_errmsg());
    cr_assert_eq(put(&a, "Z", 10, 3), 0, "%s", fbk_errmsg()); /* one more batch */
    cr_assert_eq(env_close(&a), 0, "%s", fbk_errmsg());

    env c;
    cr_assert_eq(env_open(&c, uri), 0, "%s", fbk_errmsg());
    fbk_handle *h;
    const void *obj;
    cr_assert_eq(fbk_map_get(c.m, "Y", 1, &h), 0, "%s", fbk_errmsg());
    int rc = fbk_load(h, &obj);
    cr_assert_eq(rc, 0, "Y lost its object when A removed its orphan: %s (%s)", fbk_err_name(rc),
                 fbk_errmsg());
    cr_assert(tu_blob_check(obj, 3000, 1));
    fbk_unload(h);
    fbk_handle_release(h);
    cr_assert_eq(fbk_map_get(c.m, "X", 1, &h), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_load(h, &obj), 0, "%s", fbk_errmsg());
    cr_assert(tu_blob_check(obj, 100, 2));
    fbk_unload(h);
    fbk_handle_release(h);
    cr_assert_eq(env_close(&c), 0, "%s", fbk_errmsg());
}

Test(map_orphans, lmdb_an_orphan_another_process_bound_survives)
{
    orphan_of_a_stale_view_survives("lmdb");
}

Test(map_orphans, file_an_orphan_another_process_bound_survives)
{
    orphan_of_a_stale_view_survives("file");
}

/* Y is unbound later: the object loses its last binding and the next
 * orphan removal of a process that sees it unreferenced takes it. */
static void last_binding_gone(const char *scheme)
{
    char dir[4096], uri[4200];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir(scheme));
    snprintf(uri, sizeof uri, "%s:%s", scheme, dir);
    env a;
    cr_assert_eq(env_open(&a, uri), 0, "%s", fbk_errmsg());
    cr_assert_eq(put(&a, "X", 3000, 1), 0, "%s", fbk_errmsg());
    fbk_handle *h;
    cr_assert_eq(fbk_map_get(a.m, "X", 1, &h), 0);
    cr_assert_eq(fbk_map_put(a.m, "Y", 1, h), 0, "%s", fbk_errmsg()); /* shared object */
    fbk_handle_release(h);
    cr_assert_eq(fbk_location_count(a.loc), 1);
    cr_assert_eq(put(&a, "X", 100, 2), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_sync(a.m), 0);
    cr_assert_eq(fbk_location_count(a.loc), 2, "Y's object must stay");
    cr_assert_eq(fbk_map_remove(a.m, "Y", 1), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_sync(a.m), 0);
    cr_assert_eq(put(&a, "Z", 10, 3), 0, "%s", fbk_errmsg()); /* one more batch */
    cr_assert_eq(fbk_location_count(a.loc), 2, "the unbound object is removed (X and Z stay)");
    cr_assert_eq(env_close(&a), 0, "%s", fbk_errmsg());
    if (strcmp(scheme, "file") == 0) /* the stale refs went with the object */
        cr_assert_eq(file_refs(dir, 0), 2, "refs of X and Z only: %zu", file_refs(dir, 0));
}

Test(map_orphans, lmdb_an_object_whose_last_binding_went_is_removed)
{
    last_binding_gone("lmdb");
}

Test(map_orphans, file_an_object_whose_last_binding_went_is_removed)
{
    last_binding_gone("file");
}

/* A location whose names were written before the counts existed (no
 * "\x1frefs:" database): its counts are built when it is opened, so the
 * first orphan removal already sees every binding. */

static size_t refs_entries(const char *dir, int drop)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/durable", dir);
    MDB_env *menv;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_stat st = {0};
    cr_assert_eq(mdb_env_create(&menv), 0);
    cr_assert_eq(mdb_env_set_maxdbs(menv, 16), 0);
    cr_assert_eq(mdb_env_set_mapsize(menv, (size_t)1 << 30), 0);
    cr_assert_eq(mdb_env_open(menv, path, 0, 0644), 0);
    cr_assert_eq(mdb_txn_begin(menv, NULL, 0, &txn), 0);
    int rc = mdb_dbi_open(txn, "\x1frefs:m", 0, &dbi);
    if (rc == 0 && drop)
        cr_assert_eq(mdb_drop(txn, dbi, 1), 0);
    else if (rc == 0)
        cr_assert_eq(mdb_stat(txn, dbi, &st), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(menv);
    return rc == 0 ? st.ms_entries : 0;
}

/* Two bindings, their counts/refs dropped as a version before them left the
 * location, and a writer's open: both are back. */
static void built_at_open(const char *scheme, size_t (*refs)(const char *dir, int drop))
{
    char dir[4096], uri[4200];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir(scheme));
    snprintf(uri, sizeof uri, "%s:%s", scheme, dir);
    env a;
    cr_assert_eq(env_open(&a, uri), 0, "%s", fbk_errmsg());
    cr_assert_eq(put(&a, "X", 300, 1), 0, "%s", fbk_errmsg());
    cr_assert_eq(put(&a, "Y", 300, 2), 0, "%s", fbk_errmsg());
    cr_assert_eq(env_close(&a), 0);
    cr_assert_eq(refs(dir, 0), 2);
    refs(dir, 1); /* as a version before them left it */
    cr_assert_eq(refs(dir, 0), 0);
    cr_assert_eq(env_open(&a, uri), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_foreign_entries(a.loc), 0);
    cr_assert_eq(env_close(&a), 0);
    cr_assert_eq(refs(dir, 0), 2);
}

Test(map_orphans, lmdb_counts_of_a_location_from_before_are_built_at_open)
{
    built_at_open("lmdb", refs_entries);
}

/* file: the refs of a location whose bindings were written before them are
 * made at a writer's map open (its name scan). */
Test(map_orphans, file_refs_of_a_location_from_before_are_built_at_open)
{
    built_at_open("file", file_refs);
}

/* file: a binding to an object that is gone (another process removed it as
 * unbound a moment before) binds nothing and says so. */
Test(map_orphans, file_binding_to_a_removed_object_binds_nothing)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("file-gone"));
    const fbk_backend_ops *ops;
    void *self, *loc;
    cr_assert_eq(fbk_backend_file_create(dir, NULL, &ops, &self), 0, "%s", fbk_errmsg());
    cr_assert_eq(ops->open_location(self, "m", &loc), 0, "%s", fbk_errmsg());
    fbk_key k, got;
    fbk_key_generate(&k);
    fbk_name_op op = {"X", 1, &k, 5};
    int rc = ops->name_apply(self, loc, &op, 1);
    cr_assert_eq(rc, FBK_EINVAL, "%s: %s", fbk_err_name(rc), fbk_errmsg()); /* as lmdb:, rados: */
    cr_assert(strstr(fbk_errmsg(), "put the value again"), "%s", fbk_errmsg());
    uint64_t size;
    cr_assert_eq(ops->name_get(self, loc, "X", 1, &got, &size), FBK_ENOTFOUND);
    cr_assert_eq(file_refs(dir, 0), 0);
    ops->close_location(self, loc);
    ops->close(self);
}
