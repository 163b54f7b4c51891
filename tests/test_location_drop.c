/* test_location_drop.c -- fbk_location_drop: deletes a location and what it
 * holds (frees one of lmdb:'s 1024 location slots). */
#include "testutil.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

Test(location_drop, lmdb_drop_deletes_objects_and_names)
{
    char uri[512];
    snprintf(uri, sizeof uri, "lmdb:%s", tu_fresh_dir("drop"));
    fbk_store *s;
    fbk_pool *p;
    fbk_location *loc;
    fbk_map *m;
    cr_assert_eq(fbk_store_open(&s, uri, NULL), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 4), 0);
    cr_assert_eq(fbk_location_open(s, "gone", &loc), 0);
    cr_assert_eq(fbk_map_open(p, loc, NULL, &m), 0);
    fbk_handle *h;
    cr_assert_eq(fbk_insert(p, tu_blob(100, 1), &h), 0);
    cr_assert_eq(fbk_map_put(m, "n", 1, h), 0);
    cr_assert_eq(fbk_location_drop(s, "gone"), FBK_EBUSY, "a map holds it open");
    cr_assert(strstr(fbk_errmsg(), "open"), "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_close(m), 0);
    fbk_location_close(loc);
    cr_assert_eq(fbk_location_drop(s, "gone"), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_drop(s, "gone"), FBK_ENOTFOUND);
    cr_assert_eq(fbk_location_drop(s, "never"), FBK_ENOTFOUND);
    cr_assert_eq(fbk_location_open(s, "gone", &loc), 0);
    cr_assert_eq(fbk_location_count(loc), 0, "the objects went with it");
    cr_assert_eq(fbk_map_open(p, loc, NULL, &m), 0);
    cr_assert_eq(fbk_map_count(m), 0, "the names went with it");
    cr_assert_eq(fbk_map_close(m), 0);
    fbk_location_close(loc);
    fbk_handle_release(h);
    fbk_pool_release(p);
    fbk_store_close(s);

    fbk_store_options ro = {.flags = FBK_STORE_READONLY};
    cr_assert_eq(fbk_store_open(&s, "mem:drop-ro", &ro), 0);
    cr_assert_eq(fbk_location_drop(s, "x"), FBK_EREADONLY);
    fbk_store_close(s);
}

Test(location_drop, backends_without_drop_say_enotsup)
{
    fbk_store *s;
    cr_assert_eq(fbk_store_open(&s, "mem:", NULL), 0);
    cr_assert_eq(fbk_location_drop(s, "x"), FBK_ENOTSUP);
    cr_assert(strstr(fbk_errmsg(), "mem"), "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_drop(s, NULL), FBK_EINVAL);
    fbk_store_close(s);
}
