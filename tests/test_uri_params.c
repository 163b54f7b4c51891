/* test_uri_params.c -- URI parameters after '?', parsed once in the core. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static int open_uri(const char *uri)
{
    fbk_store *s = NULL;
    int rc = fbk_store_open(&s, uri, NULL);
    if (rc == 0)
        fbk_store_close(s);
    return rc;
}

Test(uri_params, known_parameters_set_the_options)
{
    char uri[512];
    snprintf(uri, sizeof uri, "lmdb:%s?map_size=1m&threads=3&max_queued_bytes=2MiB",
             tu_fresh_dir("uri-known"));
    fbk_store *s;
    cr_assert_eq(fbk_store_open(&s, uri, NULL), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_store_threads(s), 3);
    fbk_store_close(s);
    cr_assert_eq(fbk_store_open(&s, "mem:?threads=2", NULL), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_store_threads(s), 2);
    fbk_store_close(s);
}

Test(uri_params, an_unknown_key_is_einval_naming_it)
{
    cr_assert_eq(open_uri("mem:?colour=blue"), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "\"colour\""), "%s", fbk_errmsg());
    /* map_size is lmdb:'s, not file:'s */
    char uri[512];
    snprintf(uri, sizeof uri, "file:%s?map_size=1g", tu_fresh_dir("uri-file"));
    cr_assert_eq(open_uri(uri), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "map_size"), "%s", fbk_errmsg());
}

Test(uri_params, bad_values_and_forms_are_einval)
{
    cr_assert_eq(open_uri("mem:?threads=many"), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "threads"), "%s", fbk_errmsg());
    cr_assert_eq(open_uri("mem:?threads"), FBK_EINVAL);
    cr_assert_eq(open_uri("mem:?=3"), FBK_EINVAL);
    cr_assert_eq(open_uri("mem:?threads=1&threads=2"), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "twice"), "%s", fbk_errmsg());
    cr_assert_eq(open_uri("mem:?threads=%4"), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "percent"), "%s", fbk_errmsg());
    cr_assert_eq(open_uri("mem:?readonly=maybe"), FBK_EINVAL);
}

Test(uri_params, percent_encoding_and_empty_pairs)
{
    fbk_store *s;
    cr_assert_eq(fbk_store_open(&s, "mem:?thr%65ads=%32&&", NULL), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_store_threads(s), 2);
    fbk_store_close(s);
}

Test(uri_params, readonly_parameter_makes_changes_ereadonly)
{
    fbk_store *s;
    cr_assert_eq(fbk_store_open(&s, "mem:uri-ro?readonly=1", NULL), 0, "%s", fbk_errmsg());
    fbk_location *loc;
    cr_assert_eq(fbk_location_open(s, "never-made", &loc), FBK_ENOTFOUND);
    fbk_store_close(s);
    /* made by a writer, then opened read-only */
    cr_assert_eq(fbk_store_open(&s, "mem:uri-ro", NULL), 0);
    cr_assert_eq(fbk_location_open(s, "L", &loc), 0);
    fbk_location_close(loc);
    fbk_store_close(s);
    cr_assert_eq(fbk_store_open(&s, "mem:uri-ro?readonly=true", NULL), 0);
    cr_assert_eq(fbk_location_open(s, "L", &loc), 0);
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(fbk_location_remove(loc, &k), FBK_EREADONLY);
    cr_assert(strstr(fbk_errmsg(), "read-only"), "%s", fbk_errmsg());
    cr_assert_eq(fbk_save(loc, NULL, 0, 0, NULL, NULL), FBK_EREADONLY);
    fbk_location_close(loc);
    fbk_store_close(s);
}

Test(uri_params, the_new_codes_have_names_and_messages)
{
    cr_assert_str_eq(fbk_err_name(FBK_EREADONLY), "FBK_EREADONLY");
    cr_assert_str_eq(fbk_err_name(FBK_ENOTSUP), "FBK_ENOTSUP");
    cr_assert_str_eq(fbk_err_name(FBK_ETIMEDOUT), "FBK_ETIMEDOUT");
    cr_assert_str_neq(fbk_strerror(FBK_EREADONLY), "unknown error");
}
