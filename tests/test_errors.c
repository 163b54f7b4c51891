/* test_errors.c -- error codes, messages, and bad arguments. */
#include "counting_backend.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

static const int all_codes[] = {
#define X(name, value, msg) FBK_##name,
    FBK_ERROR_MAP(X)
#undef X
};
static const char *const all_names[] = {
#define X(name, value, msg) "FBK_" #name,
    FBK_ERROR_MAP(X)
#undef X
};
#define NCODES (sizeof all_codes / sizeof all_codes[0])

Test(errors, codes_are_negative_and_distinct)
{
    cr_assert_eq(FBK_OK, 0);
    for (size_t i = 0; i < NCODES; i++) {
        cr_assert_lt(all_codes[i], 0);
        for (size_t j = 0; j < i; j++)
            cr_assert_neq(all_codes[i], all_codes[j]);
    }
}

Test(errors, strerror_is_non_null_and_distinct_for_every_code)
{
    for (size_t i = 0; i < NCODES; i++) {
        const char *s = fbk_strerror(all_codes[i]);
        cr_assert_not_null(s);
        cr_assert_neq(s[0], '\0');
        for (size_t j = 0; j < i; j++)
            cr_assert_str_neq(s, fbk_strerror(all_codes[j]));
        cr_assert_str_neq(s, fbk_strerror(FBK_OK));
    }
}

Test(errors, err_name_is_the_code_name)
{
    for (size_t i = 0; i < NCODES; i++) {
        const char *s = fbk_err_name(all_codes[i]);
        cr_assert_not_null(s);
        cr_assert_str_eq(s, all_names[i]);
    }
    cr_assert_str_eq(fbk_err_name(FBK_ENOSPC), "FBK_ENOSPC");
}

Test(errors, unknown_codes_still_give_strings)
{
    const int odd[] = {1, -11, -1000, 12345, -2147483647 - 1};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        cr_assert_not_null(fbk_strerror(odd[i]));
        cr_assert_not_null(fbk_err_name(odd[i]));
    }
    cr_assert_not_null(fbk_strerror(FBK_OK));
    cr_assert_not_null(fbk_err_name(FBK_OK));
}

Test(errors, errmsg_is_set_after_a_failure)
{
    fbk_key k;
    cr_assert_eq(fbk_key_parse("nope", &k), FBK_EINVAL);
    cr_assert_not_null(fbk_errmsg());
    cr_assert_neq(fbk_errmsg()[0], '\0');
}

Test(errors, errmsg_is_empty_before_any_failure)
{
    cr_assert_not_null(fbk_errmsg());
    /* Criterion runs each test in a fresh process: nothing failed yet. */
    cr_assert_str_eq(fbk_errmsg(), "");
    cr_assert_eq(fbk_last_os_error(), 0);
}

Test(errors, error_set_records_code_message_and_errno)
{
    int rc = fbk_error_set(FBK_EIO, 5, "disk %d on fire", 3);
    cr_assert_eq(rc, FBK_EIO);
    cr_assert_str_eq(fbk_errmsg(), "disk 3 on fire");
    cr_assert_eq(fbk_last_os_error(), 5);
}

Test(errors, error_from_errno_maps_codes)
{
    cr_assert_eq(fbk_error_from_errno(ENOSPC, "w"), FBK_ENOSPC);
    cr_assert_eq(fbk_error_from_errno(EDQUOT, "w"), FBK_ENOSPC);
    cr_assert_eq(fbk_error_from_errno(ENOMEM, "w"), FBK_ENOMEM);
    cr_assert_eq(fbk_error_from_errno(ENOENT, "w"), FBK_ENOTFOUND);
    cr_assert_eq(fbk_error_from_errno(EINVAL, "w"), FBK_EINVAL);
    cr_assert_eq(fbk_error_from_errno(ENAMETOOLONG, "w"), FBK_EINVAL);
    cr_assert_eq(fbk_error_from_errno(ENOTDIR, "w"), FBK_EINVAL);
    cr_assert_eq(fbk_error_from_errno(EACCES, "open %s", "x"), FBK_EIO);
    cr_assert_eq(fbk_last_os_error(), EACCES);
    const char *m = fbk_errmsg();
    const char *tail = ": Permission denied";
    cr_assert_geq(strlen(m), strlen(tail));
    cr_assert_str_eq(m + strlen(m) - strlen(tail), tail, "message \"%s\"", m);
    cr_assert_eq(strncmp(m, "open x", 6), 0, "message \"%s\"", m);
}

Test(errors, version_string) { cr_assert_str_eq(fbk_version(), "0.1.0"); }

Test(errors, store_open_rejects_unknown_scheme_and_leaves_out_unchanged)
{
    fbk_store *s = (fbk_store *)&s;
    cr_assert_eq(fbk_store_open(&s, "foo:x", NULL), FBK_EINVAL);
    cr_assert_eq(s, (fbk_store *)&s, "out changed on failure");
    cr_assert_neq(fbk_errmsg()[0], '\0');
}

Test(errors, store_open_rejects_null_arguments)
{
    fbk_store *s = NULL;
    cr_assert_eq(fbk_store_open(NULL, "mem:", NULL), FBK_EINVAL);
    cr_assert_eq(fbk_store_open(&s, NULL, NULL), FBK_EINVAL);
    cr_assert_null(s);
}

Test(errors, store_open_mem_works)
{
    fbk_store *s = NULL;
    int rc = fbk_store_open(&s, "mem:", NULL);
    cr_assert_eq(rc, 0, "fbk_store_open(\"mem:\"): %s (%s)", fbk_err_name(rc), fbk_errmsg());
    cr_assert_not_null(s);
    fbk_pool *p = NULL;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2), 0);
    fbk_handle *h[5];
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(fbk_insert(p, tu_blob(100, (uint64_t)i), &h[i]), 0);
    }
    cr_assert_eq(fbk_store_drain(s), 0);
    for (int i = 0; i < 5; i++) {
        const void *obj;
        cr_assert_eq(fbk_load(h[i], &obj), 0);
        cr_assert(tu_blob_check(obj, 100, (uint64_t)i));
        fbk_unload(h[i]);
        fbk_handle_release(h[i]);
    }
    fbk_pool_release(p);
    fbk_store_close(s);
}

Test(errors, store_open_backend_rejects_null_ops)
{
    fbk_store *s = NULL;
    cr_assert_eq(fbk_store_open_backend(&s, NULL, NULL, NULL), FBK_EINVAL);
    cr_assert_null(s);
}

Test(errors, store_open_backend_rejects_version_0_and_closes_self)
{
    counting *cb = counting_new();
    cr_assert_not_null(cb);
    fbk_backend_ops bad = *counting_ops(0u);
    bad.version = 0;
    fbk_store *s = NULL;
    cr_assert_eq(fbk_store_open_backend(&s, &bad, counting_ref(cb), NULL), FBK_EINVAL);
    cr_assert_null(s);
    /* ownership of self was taken also on failure: close was called */
    cr_assert_eq(counting_close_calls(cb), 1);
    counting_free(cb);
}

Test(errors, pool_and_handle_calls_reject_null)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_codec c = tc_codec(NULL, 1);
    fbk_pool *p = NULL;
    cr_assert_eq(fbk_pool_create(NULL, f.s, &c, 4), FBK_EINVAL);
    cr_assert_eq(fbk_pool_create(&p, NULL, &c, 4), FBK_EINVAL);
    cr_assert_eq(fbk_pool_create(&p, f.s, NULL, 4), FBK_EINVAL);
    cr_assert_null(p);

    fbk_handle *h = NULL;
    fbk_blob *b = tu_blob(8, 1);
    cr_assert_eq(fbk_insert(NULL, b, &h), FBK_EINVAL);
    cr_assert_eq(fbk_insert(f.p, b, NULL), FBK_EINVAL);
    cr_assert_null(h);
    fbk_blob_free(b); /* a failed insert leaves it with the caller */

    const void *cobj = NULL;
    void *obj = NULL;
    cr_assert_eq(fbk_load(NULL, &cobj), FBK_EINVAL);
    cr_assert_eq(fbk_try_load(NULL, &cobj), FBK_EINVAL);
    cr_assert_eq(fbk_load_mut(NULL, &obj), FBK_EINVAL);
    cr_assert_eq(fbk_try_load_mut(NULL, &obj), FBK_EINVAL);
    cr_assert_eq(fbk_make_mut(NULL, &obj), FBK_EINVAL);
    fbk_handle *nh = NULL;
    cr_assert_eq(fbk_make_mut(&nh, &obj), FBK_EINVAL);
    cr_assert_eq(fbk_write_now(NULL), FBK_EINVAL);
    cr_assert_eq(fbk_persist(NULL, NULL), FBK_EINVAL);
    cr_assert_eq(fbk_write_now_async(NULL, NULL), FBK_EINVAL);
    cr_assert_eq(fbk_prefetch(NULL, NULL), FBK_EINVAL);

    h = tc_insert(f.p, 8, 1);
    cr_assert_eq(fbk_load(h, NULL), FBK_EINVAL);
    cr_assert_eq(fbk_persist(h, NULL), FBK_EINVAL);
    cr_assert_eq(fbk_persist_async(h, NULL, NULL), FBK_EINVAL);
    fbk_key hk = tc_key(h);
    cr_assert_eq(fbk_register(f.p, NULL, &hk, &nh), FBK_EINVAL);
    cr_assert_null(nh);
    cr_assert_eq(tc_check(h, 8, 1), 0, "the handle still works after the bad calls");
    fbk_handle_release(h);

    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(NULL, "x", &loc), FBK_EINVAL);
    cr_assert_eq(fbk_location_open(f.s, NULL, &loc), FBK_EINVAL);
    cr_assert_eq(fbk_location_open(f.s, "x", NULL), FBK_EINVAL);
    cr_assert_null(loc);
    cr_assert_eq(fbk_save(NULL, NULL, 0, 0, NULL, NULL), FBK_EINVAL);
    fx_close(&f);
}

Test(errors, close_and_release_of_null_are_no_ops)
{
    fbk_store_close(NULL);
    fbk_pool_release(NULL);
    fbk_handle_release(NULL);
    fbk_location_close(NULL);
    fbk_task_release(NULL);
    fbk_blob_free(NULL);
}

Test(errors, save_rejects_null_handles_with_n_nonzero)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), 0);
    cr_assert_eq(fbk_save(loc, NULL, 3, 0, NULL, NULL), FBK_EINVAL);
    cr_assert_eq(counting_calls(f.cb, CB_SYNC), 0);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(errors, pool_create_rejects_a_codec_without_required_callbacks)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_codec full = tc_codec(NULL, 0);
    for (int which = 0; which < 4; which++) {
        fbk_codec c = full;
        if (which == 0)
            c.size = NULL;
        if (which == 1)
            c.encode = NULL;
        if (which == 2)
            c.decode = NULL;
        if (which == 3)
            c.destroy = NULL;
        fbk_pool *p = NULL;
        cr_assert_eq(fbk_pool_create(&p, f.s, &c, 4), FBK_EINVAL, "callback %d missing", which);
        cr_assert_null(p);
    }
    fx_close(&f);
}

Test(errors, store_open_backend_rejects_an_incomplete_table_and_closes_self)
{
    counting *cb = counting_new();
    cr_assert_not_null(cb);
    fbk_backend_ops bad = *counting_ops(0u);
    bad.load = NULL;
    fbk_store *s = NULL;
    cr_assert_eq(fbk_store_open_backend(&s, &bad, counting_ref(cb), NULL), FBK_EINVAL);
    cr_assert_null(s);
    cr_assert_eq(counting_close_calls(cb), 1);
    counting_free(cb);
}

Test(errors, store_uri_scheme_is_case_insensitive_and_empty_is_einval)
{
    fbk_store *s = NULL;
    cr_assert_eq(fbk_store_open(&s, "", NULL), FBK_EINVAL);
    cr_assert_null(s);
    cr_assert_eq(fbk_store_open(&s, "MEM:", NULL), 0);
    cr_assert_not_null(s);
    fbk_store_close(s);
}

/* Out-parameters are left unchanged on failure. */
Test(errors, out_parameters_unchanged_on_failure)
{
    fx f = {0};
    fx_open(&f, 4);
    void *const sentinel = (void *)&f;
    fbk_location *loc = sentinel;
    counting_fail(f.cb, CB_SCAN, FBK_EIO, 1);
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), FBK_EIO);
    cr_assert_eq(loc, sentinel);
    cr_assert_eq(fbk_location_open(f.s, "L", &loc), 0);

    fbk_pool *p = sentinel;
    fbk_codec c = tc_codec(NULL, 0);
    c.decode = NULL;
    cr_assert_eq(fbk_pool_create(&p, f.s, &c, 4), FBK_EINVAL);
    cr_assert_eq(p, sentinel);

    fbk_key k;
    fbk_key_generate(&k);
    fbk_handle *r = sentinel;
    cr_assert_eq(fbk_register(f.p, loc, &k, &r), FBK_ENOTFOUND);
    cr_assert_eq(r, sentinel);

    fbk_handle *h = tc_insert(f.p, 10, 1);
    fbk_key before = tc_key(h);
    counting_fail(f.cb, CB_STORE, FBK_EIO, -1);
    cr_assert_eq(fbk_write_now(h), FBK_EIO);
    cr_assert_eq(fbk_persist(h, loc), FBK_EIO);
    fbk_key after = tc_key(h);
    cr_assert(fbk_key_equal(&before, &after), "a failed write changed the key");
    counting_fail(f.cb, CB_STORE, 0, 0);
    fbk_handle_release(h);
    fbk_location_close(loc);
    fx_close(&f);
}

Test(errors, more_null_arguments_are_einval_not_crashes)
{
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(fbk_store_drain(NULL), FBK_EINVAL);
    cr_assert_eq(fbk_task_wait(NULL), FBK_EINVAL);
    cr_assert_eq(fbk_location_sync(NULL), FBK_EINVAL);
    cr_assert_eq(fbk_location_remove(NULL, &k), FBK_EINVAL);
    cr_assert_eq(fbk_register(NULL, NULL, &k, NULL), FBK_EINVAL);
    cr_assert_eq(fbk_store_open_backend(NULL, NULL, NULL, NULL), FBK_EINVAL);
    cr_assert_eq(fbk_pool_size(NULL), 0);
    cr_assert_null(fbk_handle_pool(NULL));
    cr_assert_eq(fbk_task_done(NULL), 0);
    cr_assert_eq(fbk_location_count(NULL), 0);
    cr_assert_eq(fbk_location_contains(NULL, &k), 0);
    cr_assert_eq(fbk_location_keys(NULL, NULL, 0), 0);
    fbk_store_stats st;
    fbk_store_stats_get(NULL, &st);
    fbk_unload(NULL);
    fbk_unload_mut(NULL);
}

Test(errors, store_open_mem_with_a_name_works)
{
    fbk_store *s = NULL;
    cr_assert_eq(fbk_store_open(&s, "mem:some-name", NULL), 0);
    cr_assert_not_null(s);
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(s, "anything", &loc), 0);
    cr_assert_eq(fbk_location_count(loc), 0);
    fbk_location_close(loc);
    fbk_store_close(s);
}
