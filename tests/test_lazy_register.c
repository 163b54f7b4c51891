/* test_lazy_register.c -- on a backend with load_persisted (lmdb:, file:), a
 * register copies nothing: the item's bytes are read from the location, and
 * copied into the spill area only when the key is about to leave the
 * location or is persisted elsewhere.  The promises of fbk_register stay:
 * a registered item keeps its bytes whatever happens to the location. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

typedef struct lz {
    fbk_store *s;
    fbk_pool *p;
    fbk_location *a, *b;
    fbk_key key;
} lz;

static void lz_open(lz *t, const char *scheme, const char *name)
{
    char uri[600], dir[128];
    snprintf(dir, sizeof dir, "%s-%s", name, scheme);
    snprintf(uri, sizeof uri, "%s:%s", scheme, tu_fresh_dir(dir));
    cr_assert_eq(fbk_store_open(&t->s, uri, NULL), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_pool_create(&t->p, t->s, &fbk_blob_codec, 4), 0);
    cr_assert_eq(fbk_location_open(t->s, "a", &t->a), 0);
    cr_assert_eq(fbk_location_open(t->s, "b", &t->b), 0);
    fbk_handle *h;
    cr_assert_eq(fbk_insert(t->p, tu_blob(30000, 5), &h), 0);
    cr_assert_eq(fbk_save(t->a, &h, 1, 0, NULL, NULL), 0);
    fbk_handle_key(h, &t->key);
    fbk_handle_release(h);
    cr_assert_eq(fbk_store_drain(t->s), 0);
}

static void lz_close(lz *t)
{
    fbk_location_close(t->a);
    fbk_location_close(t->b);
    fbk_pool_release(t->p);
    fbk_store_close(t->s);
}

static void expect_bytes(fbk_handle *h)
{
    const void *obj;
    cr_assert_eq(fbk_load(h, &obj), 0, "%s", fbk_errmsg());
    cr_assert(tu_blob_check(obj, 30000, 5));
    fbk_unload(h);
}

static void a_register_copies_nothing_into_the_spill_area_on(const char *scheme)
{
    lz t;
    lz_open(&t, scheme, "lazy-nocopy");
    fbk_store_stats before, after;
    fbk_store_stats_get(t.s, &before);
    fbk_handle *h;
    cr_assert_eq(fbk_register(t.p, t.a, &t.key, &h), 0);
    expect_bytes(h);
    fbk_handle_release(h);
    cr_assert_eq(fbk_store_drain(t.s), 0);
    fbk_store_stats_get(t.s, &after);
    cr_assert_eq(after.removes, before.removes, "a spill copy was made (and removed)");
    cr_assert_eq(after.loads, before.loads + 1);
    lz_close(&t);
}

Test(lazy_register, a_register_copies_nothing_into_the_spill_area)
{
    a_register_copies_nothing_into_the_spill_area_on("lmdb");
    a_register_copies_nothing_into_the_spill_area_on("file");
}

static void the_bytes_are_kept_when_the_key_leaves_the_location_on(const char *scheme)
{
    lz t;
    lz_open(&t, scheme, "lazy-remove");
    fbk_handle *h, *h2;
    cr_assert_eq(fbk_register(t.p, t.a, &t.key, &h), 0);
    cr_assert_eq(fbk_register(t.p, t.a, &t.key, &h2), 0); /* shares the token */
    cr_assert_eq(fbk_location_remove(t.a, &t.key), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_sync(t.a), 0);
    expect_bytes(h); /* from the spill copy made before the remove */
    fbk_handle_release(h);
    expect_bytes(h2);
    fbk_handle_release(h2);
    lz_close(&t);
}

Test(lazy_register, the_bytes_are_kept_when_the_key_leaves_the_location)
{
    the_bytes_are_kept_when_the_key_leaves_the_location_on("lmdb");
    the_bytes_are_kept_when_the_key_leaves_the_location_on("file");
}

static void a_save_that_drops_the_key_keeps_registered_items_whole_on(const char *scheme)
{
    lz t;
    lz_open(&t, scheme, "lazy-save");
    fbk_handle *h;
    cr_assert_eq(fbk_register(t.p, t.a, &t.key, &h), 0);
    cr_assert_eq(fbk_save(t.a, NULL, 0, 0, NULL, NULL), 0); /* removes the old key */
    cr_assert_eq(fbk_location_contains(t.a, &t.key), 0);
    expect_bytes(h);
    lz_close(&t);
    fbk_handle_release(h);
}

Test(lazy_register, a_save_that_drops_the_key_keeps_registered_items_whole)
{
    a_save_that_drops_the_key_keeps_registered_items_whole_on("lmdb");
    a_save_that_drops_the_key_keeps_registered_items_whole_on("file");
}

static void persisting_elsewhere_copies_first_on(const char *scheme)
{
    lz t;
    lz_open(&t, scheme, "lazy-persist");
    fbk_handle *h;
    cr_assert_eq(fbk_register(t.p, t.a, &t.key, &h), 0);
    cr_assert_eq(fbk_persist(h, t.b), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_sync(t.b), 0);
    cr_assert_eq(fbk_location_contains(t.b, &t.key), 1);
    fbk_handle_release(h);
    cr_assert_eq(fbk_store_drain(t.s), 0);
    /* b's copy is a copy: a holds its own, and both load after a reopen */
    cr_assert_eq(fbk_location_remove(t.a, &t.key), 0);
    cr_assert_eq(fbk_register(t.p, t.b, &t.key, &h), 0);
    expect_bytes(h);
    fbk_handle_release(h);
    lz_close(&t);
}

Test(lazy_register, persisting_elsewhere_copies_first)
{
    persisting_elsewhere_copies_first_on("lmdb");
    persisting_elsewhere_copies_first_on("file");
}

static void an_evicted_item_is_read_again_from_the_location_on(const char *scheme)
{
    lz t;
    lz_open(&t, scheme, "lazy-evict");
    fbk_handle *h;
    cr_assert_eq(fbk_register(t.p, t.a, &t.key, &h), 0);
    expect_bytes(h);
    fbk_handle *others[8];
    for (int i = 0; i < 8; i++) /* push it out of memory (4 items kept) */
        cr_assert_eq(fbk_insert(t.p, tu_blob(100, (uint64_t)i), &others[i]), 0);
    cr_assert_eq(fbk_store_drain(t.s), 0);
    const void *obj;
    cr_assert_eq(fbk_try_load(h, &obj), FBK_EAGAIN, "still in memory: the test proves nothing");
    expect_bytes(h);
    for (int i = 0; i < 8; i++)
        fbk_handle_release(others[i]);
    fbk_handle_release(h);
    lz_close(&t);
}

Test(lazy_register, an_evicted_item_is_read_again_from_the_location)
{
    an_evicted_item_is_read_again_from_the_location_on("lmdb");
    an_evicted_item_is_read_again_from_the_location_on("file");
}
