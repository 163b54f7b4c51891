/* test_map_commit.c -- a map batch's objects and bindings in one commit
 * (backend table version 5, persist_names): lmdb: writes them in one
 * transaction, so a synced put costs one commit and one sync instead of two
 * commits and a sync; a table without persist_names (version 4, or a
 * wrapper that clears it) takes the two-step path and ends the same. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static atomic_long n_persist_many, n_name_apply, n_persist_names, n_unbound, n_unbound_many;
static const fbk_backend_ops *real;

static int c_persist_many(void *self, void *loc, const fbk_key *keys, size_t n)
{
    atomic_fetch_add(&n_persist_many, 1);
    return real->persist_many(self, loc, keys, n);
}
static int c_name_apply(void *self, void *loc, const fbk_name_op *ops, size_t n)
{
    atomic_fetch_add(&n_name_apply, 1);
    return real->name_apply(self, loc, ops, n);
}
static int c_persist_names(void *self, void *loc, const fbk_key *keys, size_t n,
                           const fbk_name_op *ops, size_t nops)
{
    atomic_fetch_add(&n_persist_names, 1);
    return real->persist_names(self, loc, keys, n, ops, nops);
}

static int c_remove_unbound(void *self, void *loc, const fbk_key *key)
{
    atomic_fetch_add(&n_unbound, 1);
    return real->remove_unbound(self, loc, key);
}
static int c_remove_unbound_many(void *self, void *loc, const fbk_key *keys, size_t n,
                                 int *removed)
{
    atomic_fetch_add(&n_unbound_many, 1);
    return real->remove_unbound_many(self, loc, keys, n, removed);
}

typedef struct env {
    fbk_store *s;
    fbk_pool *p;
    fbk_location *loc;
    fbk_map *m;
} env;

/* an lmdb: store through a counting copy of its table; version 4 (no
 * persist_names) when old */
static void env_open_flags(env *e, const char *dir, int old, unsigned map_flags)
{
    static fbk_backend_ops counted;
    void *self;
    cr_assert_eq(fbk_backend_lmdb_create(dir, NULL, &real, &self), 0, "%s", fbk_errmsg());
    counted = *real;
    counted.persist_many = c_persist_many;
    counted.name_apply = c_name_apply;
    counted.persist_names = c_persist_names;
    counted.remove_unbound = c_remove_unbound;
    counted.remove_unbound_many = real->remove_unbound_many ? c_remove_unbound_many : NULL;
    if (old) {
        counted.version = 4;
        counted.persist_names = NULL;
    }
    cr_assert_eq(fbk_store_open_backend(&e->s, &counted, self, NULL), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_pool_create(&e->p, e->s, &fbk_blob_codec, 4), 0);
    cr_assert_eq(fbk_location_open(e->s, "m", &e->loc), 0, "%s", fbk_errmsg());
    fbk_map_options mo = {.flags = map_flags};
    cr_assert_eq(fbk_map_open(e->p, e->loc, &mo, &e->m), 0, "%s", fbk_errmsg());
    atomic_store(&n_persist_many, 0);
    atomic_store(&n_name_apply, 0);
    atomic_store(&n_persist_names, 0);
    atomic_store(&n_unbound, 0);
    atomic_store(&n_unbound_many, 0);
}

static void env_open(env *e, const char *dir, int old) { env_open_flags(e, dir, old, 0); }

static void env_close(env *e)
{
    cr_assert_eq(fbk_map_close(e->m), 0, "%s", fbk_errmsg());
    fbk_location_close(e->loc);
    fbk_pool_release(e->p);
    fbk_store_close(e->s);
}

static void put(env *e, const char *name, size_t len, uint64_t seed)
{
    fbk_handle *h;
    cr_assert_eq(fbk_insert(e->p, tu_blob(len, seed), &h), 0);
    cr_assert_eq(fbk_map_put(e->m, name, strlen(name), h), 0, "%s", fbk_errmsg());
    fbk_handle_release(h);
}

static void expect(const char *dir, const char *name, size_t len, uint64_t seed)
{
    char uri[4200];
    snprintf(uri, sizeof uri, "lmdb:%s", dir);
    fbk_store *s;
    fbk_pool *p;
    fbk_location *loc;
    fbk_map *m;
    cr_assert_eq(fbk_store_open(&s, uri, NULL), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 4), 0);
    cr_assert_eq(fbk_location_open(s, "m", &loc), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_open(p, loc, NULL, &m), 0, "%s", fbk_errmsg());
    fbk_handle *h;
    const void *obj;
    cr_assert_eq(fbk_map_get(m, name, strlen(name), &h), 0, "%s: %s", name, fbk_errmsg());
    cr_assert_eq(fbk_load(h, &obj), 0, "%s", fbk_errmsg());
    cr_assert(tu_blob_check(obj, len, seed), "%s: wrong bytes", name);
    fbk_unload(h);
    fbk_handle_release(h);
    cr_assert_eq(fbk_map_close(m), 0);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
}

Test(map_commit, a_synced_put_on_lmdb_commits_object_and_name_in_one_call)
{
    const char *dir = tu_fresh_dir("map_commit_one");
    env e;
    env_open(&e, dir, 0);
    put(&e, "alpha", 5000, 1);
    put(&e, "beta", 0, 2);
    cr_assert_eq(atomic_load(&n_persist_names), 2);
    cr_assert_eq(atomic_load(&n_persist_many), 0);
    cr_assert_eq(atomic_load(&n_name_apply), 0);
    /* a removal binds nothing new: name_apply alone */
    cr_assert_eq(fbk_map_remove(e.m, "beta", 4), 0, "%s", fbk_errmsg());
    cr_assert_eq(atomic_load(&n_name_apply), 1);
    env_close(&e);
    expect(dir, "alpha", 5000, 1);
}

Test(map_commit, an_object_put_twice_binds_the_second_name_on_its_own)
{
    const char *dir = tu_fresh_dir("map_commit_twice");
    env e;
    env_open(&e, dir, 0);
    fbk_handle *h;
    cr_assert_eq(fbk_insert(e.p, tu_blob(300, 7), &h), 0);
    cr_assert_eq(fbk_map_put(e.m, "a", 1, h), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_put(e.m, "b", 1, h), 0, "%s", fbk_errmsg());
    fbk_handle_release(h);
    /* the first put persisted the object with its name; the second finds it
     * held by the location and binds by name_apply */
    cr_assert_eq(atomic_load(&n_persist_names), 1);
    cr_assert_eq(atomic_load(&n_name_apply), 1);
    env_close(&e);
    expect(dir, "a", 300, 7);
    expect(dir, "b", 300, 7);
}

Test(map_commit, a_version_4_table_takes_two_steps_and_ends_the_same)
{
    const char *dir = tu_fresh_dir("map_commit_v4");
    env e;
    env_open(&e, dir, 1);
    put(&e, "alpha", 5000, 3);
    cr_assert_eq(atomic_load(&n_persist_names), 0);
    cr_assert_eq(atomic_load(&n_persist_many), 1);
    cr_assert_eq(atomic_load(&n_name_apply), 1);
    env_close(&e);
    expect(dir, "alpha", 5000, 3);
}

/* The objects a batch orphaned (names put again) leave in one call, one
 * LMDB transaction -- not one synced commit each (19,000 overwrites took a
 * 38 s sync before). */
Test(map_commit, the_orphans_of_a_batch_are_removed_in_one_call)
{
    const char *dir = tu_fresh_dir("map_commit_orphans");
    env e;
    env_open_flags(&e, dir, 0, FBK_MAP_NOSYNC);
    char name[16];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 300; i++) {
            snprintf(name, sizeof name, "n%d", i);
            put(&e, name, 100, (uint64_t)(round * 1000 + i));
        }
        cr_assert_eq(fbk_map_sync(e.m), 0, "%s", fbk_errmsg());
    }
    cr_assert_eq(fbk_map_sync(e.m), 0, "%s", fbk_errmsg()); /* orphans of the last sync */
    cr_assert_eq(atomic_load(&n_unbound), 0, "one remove_unbound per orphan");
    cr_assert_geq(atomic_load(&n_unbound_many), 1);
    cr_assert_leq(atomic_load(&n_unbound_many), 2);
    cr_assert_eq(fbk_location_count(e.loc), 300, "the 300 first objects are gone: %lu left",
                 (unsigned long)fbk_location_count(e.loc));
    env_close(&e);
    expect(dir, "n7", 100, 1007);
}
