/* test_location_sharing.c -- one location object per name in a store (two
 * handles on one location see each other's changes), fbk_location_refresh,
 * and fbk_save's check against the backend for keys removed elsewhere. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void uri_for(char *out, size_t cap, const char *scheme, const char *name)
{
    if (strcmp(scheme, "mem") == 0)
        snprintf(out, cap, "mem:%s-%d", name, (int)getpid());
    else
        snprintf(out, cap, "%s:%s", scheme, tu_fresh_dir(name));
}

static const char *const schemes[] = {"mem", "lmdb", "file"};

/* The new user's report: remove through handle 2, save through handle 1
 * with an item of that key: the save skipped the key and it was gone after
 * a reopen. */
static void two_handles(const char *scheme)
{
    char uri[512];
    uri_for(uri, sizeof uri, scheme, "two-handles");
    fbk_store *s;
    fbk_pool *p;
    fbk_location *l1, *l2;
    cr_assert_eq(fbk_store_open(&s, uri, NULL), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 4), 0);
    cr_assert_eq(fbk_location_open(s, "L", &l1), 0);
    cr_assert_eq(fbk_location_open(s, "L", &l2), 0);
    fbk_handle *h;
    cr_assert_eq(fbk_insert(p, tu_blob(1000, 42), &h), 0);
    cr_assert_eq(fbk_save(l1, &h, 1, 0, NULL, NULL), 0);
    fbk_key key;
    fbk_handle_key(h, &key);
    cr_assert_eq(fbk_location_remove(l2, &key), 0);
    cr_assert_eq(fbk_location_contains(l1, &key), 0, "handle 1 sees the remove");
    cr_assert_eq(fbk_save(l1, &h, 1, 0, NULL, NULL), 0);
    fbk_handle_release(h);
    fbk_location_close(l1);
    fbk_location_close(l2);
    fbk_pool_release(p);
    fbk_store_close(s);

    cr_assert_eq(fbk_store_open(&s, uri, NULL), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 4), 0);
    cr_assert_eq(fbk_location_open(s, "L", &l1), 0);
    cr_assert_eq(fbk_location_contains(l1, &key), 1, "%s: the acknowledged save was lost", scheme);
    cr_assert_eq(fbk_register(p, l1, &key, &h), 0);
    const void *obj;
    cr_assert_eq(fbk_load(h, &obj), 0);
    cr_assert(tu_blob_check(obj, 1000, 42));
    fbk_unload(h);
    fbk_handle_release(h);
    fbk_location_close(l1);
    fbk_pool_release(p);
    fbk_store_close(s);
}

Test(location_sharing, a_remove_through_one_handle_is_seen_by_a_save_through_another)
{
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        two_handles(schemes[i]);
}

Test(location_sharing, opening_a_name_twice_gives_one_counted_object)
{
    fbk_store *s;
    cr_assert_eq(fbk_store_open(&s, "mem:", NULL), 0);
    fbk_location *a, *b, *c;
    cr_assert_eq(fbk_location_open(s, "x", &a), 0);
    cr_assert_eq(fbk_location_open(s, "x", &b), 0);
    cr_assert_eq(fbk_location_open(s, "y", &c), 0);
    cr_assert_eq(a, b);
    cr_assert_neq(a, c);
    fbk_location_close(a);
    /* b is still open (counted) */
    cr_assert_eq(fbk_location_count(b), 0);
    cr_assert_eq(fbk_location_sync(b), 0);
    fbk_location_close(b);
    fbk_location_close(c);
    fbk_store_close(s);
}

/* Two stores on one mem:NAME namespace share its locations, as two
 * processes share a directory. */
Test(location_sharing, refresh_sees_keys_added_and_removed_by_another_store)
{
    char uri[128];
    uri_for(uri, sizeof uri, "mem", "refresh");
    fbk_store *s1, *s2;
    fbk_pool *p1;
    fbk_location *l1, *l2;
    cr_assert_eq(fbk_store_open(&s1, uri, NULL), 0);
    cr_assert_eq(fbk_store_open(&s2, uri, NULL), 0);
    cr_assert_eq(fbk_pool_create(&p1, s1, &fbk_blob_codec, 4), 0);
    cr_assert_eq(fbk_location_open(s1, "L", &l1), 0);
    cr_assert_eq(fbk_location_open(s2, "L", &l2), 0);
    fbk_handle *h;
    cr_assert_eq(fbk_insert(p1, tu_blob(10, 1), &h), 0);
    cr_assert_eq(fbk_persist(h, l1), 0);
    cr_assert_eq(fbk_location_sync(l1), 0);
    fbk_key key;
    fbk_handle_key(h, &key);
    cr_assert_eq(fbk_location_contains(l2, &key), 0, "not before the refresh");
    cr_assert_eq(fbk_location_refresh(l2), 0);
    cr_assert_eq(fbk_location_contains(l2, &key), 1);
    cr_assert_eq(fbk_location_count(l2), 1);
    cr_assert_eq(fbk_location_remove(l2, &key), 0);
    cr_assert_eq(fbk_location_refresh(l1), 0);
    cr_assert_eq(fbk_location_contains(l1, &key), 0);
    cr_assert_eq(fbk_location_count(l1), 0);
    /* and a save through store 1 writes it again even without a refresh */
    cr_assert_eq(fbk_save(l1, &h, 1, 0, NULL, NULL), 0);
    cr_assert_eq(fbk_location_refresh(l2), 0);
    cr_assert_eq(fbk_location_contains(l2, &key), 1);
    fbk_handle_release(h);
    fbk_location_close(l1);
    fbk_location_close(l2);
    fbk_pool_release(p1);
    fbk_store_close(s1);
    fbk_store_close(s2);
}

Test(location_sharing, a_key_removed_by_another_store_is_persisted_again_by_save)
{
    char uri[128];
    uri_for(uri, sizeof uri, "mem", "resave");
    fbk_store *s1, *s2;
    fbk_pool *p1;
    fbk_location *l1, *l2;
    cr_assert_eq(fbk_store_open(&s1, uri, NULL), 0);
    cr_assert_eq(fbk_store_open(&s2, uri, NULL), 0);
    cr_assert_eq(fbk_pool_create(&p1, s1, &fbk_blob_codec, 4), 0);
    cr_assert_eq(fbk_location_open(s1, "L", &l1), 0);
    fbk_handle *h;
    cr_assert_eq(fbk_insert(p1, tu_blob(10, 1), &h), 0);
    cr_assert_eq(fbk_save(l1, &h, 1, 0, NULL, NULL), 0);
    fbk_key key;
    fbk_handle_key(h, &key);
    cr_assert_eq(fbk_location_open(s2, "L", &l2), 0);
    cr_assert_eq(fbk_location_remove(l2, &key), 0);
    cr_assert_eq(fbk_location_contains(l1, &key), 1, "store 1's key set is stale");
    cr_assert_eq(fbk_save(l1, &h, 1, 0, NULL, NULL), 0);
    cr_assert_eq(fbk_location_refresh(l2), 0);
    cr_assert_eq(fbk_location_contains(l2, &key), 1, "the save skipped the key");
    fbk_handle_release(h);
    fbk_location_close(l1);
    fbk_location_close(l2);
    fbk_pool_release(p1);
    fbk_store_close(s1);
    fbk_store_close(s2);
}
