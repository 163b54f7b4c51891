/* test_map_faults.c -- maps when the disk fills up or the location is
 * deleted underneath: a clear error, nothing bound that is not there,
 * nothing acknowledged lost. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define S(x) x, sizeof x - 1

static int put(fbk_map *m, fbk_pool *p, const char *name, size_t len, uint64_t seed)
{
    fbk_handle *h;
    fbk_blob *b = tu_blob(len, seed);
    int rc = fbk_insert(p, b, &h);
    cr_assert_eq(rc, 0);
    rc = fbk_map_put(m, name, strlen(name), h);
    fbk_handle_release(h);
    return rc;
}

static void full_disk(const char *scheme, const char *params)
{
    const char *dir = tu_tmpfs(scheme, "6m");
    if (!dir)
        cr_skip("cannot mount a tmpfs here (not root?)");
    char uri[600];
    snprintf(uri, sizeof uri, "%s:%s/store%s", scheme, dir, params);
    tu_mapenv e;
    cr_assert_eq(tu_map_open(&e, uri, "L", 2, NULL, 0), 0, "%s", fbk_errmsg());
    fbk_map *m = e.m;
    fbk_pool *p = e.p;
    int acked = 0, rc = 0;
    char name[32];
    for (int i = 0; i < 200 && rc == 0; i++) {
        snprintf(name, sizeof name, "n%d", i);
        rc = put(m, p, name, 256 << 10, (uint64_t)i);
        if (rc == 0)
            acked = i + 1;
    }
    cr_assert_eq(rc, FBK_ENOSPC, "%s: a full disk gave %s: %s", scheme, fbk_err_name(rc),
                 fbk_errmsg());
    cr_assert_gt(acked, 2);
    cr_log_info("%s: put %d on a full disk: %s", scheme, acked, fbk_errmsg());
    cr_assert(strstr(fbk_errmsg(), "space"), "%s", fbk_errmsg());
    /* the failed name is not bound (or bound to a complete object) */
    fbk_handle *h;
    const void *obj;
    int g = fbk_map_get(m, name, strlen(name), &h);
    if (g == 0) {
        cr_assert_eq(fbk_load(h, &obj), 0, "the failed put bound a broken object");
        fbk_unload(h);
        fbk_handle_release(h);
    } else {
        cr_assert_eq(g, FBK_ENOTFOUND, "%s", fbk_errmsg());
    }
    cr_assert_eq(tu_map_close(&e), FBK_OK); /* nothing pending: nothing to fail */

    /* every acknowledged put is there, byte-exact, after a reopen */
    cr_assert_eq(tu_map_open(&e, uri, "L", 2, NULL, 0), 0, "%s", fbk_errmsg());
    m = e.m;
    for (int i = 0; i < acked; i++) {
        snprintf(name, sizeof name, "n%d", i);
        cr_assert_eq(fbk_map_get(m, name, strlen(name), &h), 0, "%s: %s lost: %s", scheme, name,
                     fbk_errmsg());
        cr_assert_eq(fbk_load(h, &obj), 0, "%s", fbk_errmsg());
        cr_assert(tu_blob_check(obj, 256 << 10, (uint64_t)i));
        fbk_unload(h);
        fbk_handle_release(h);
    }
    cr_assert_eq(tu_map_close(&e), 0);
    tu_umount(dir);
}

Test(map_faults, file_full_disk_is_enospc_and_loses_nothing) { full_disk("file", ""); }

Test(map_faults, lmdb_full_disk_is_enospc_and_loses_nothing) { full_disk("lmdb", "?map_size=1m"); }

Test(map_faults, file_location_deleted_underneath_gives_errors_not_crashes)
{
    char uri[600], locdir[700];
    const char *dir = tu_fresh_dir("map-deleted");
    snprintf(uri, sizeof uri, "file:%s", dir);
    snprintf(locdir, sizeof locdir, "%s/L", dir);
    tu_mapenv e;
    cr_assert_eq(tu_map_open(&e, uri, "L", 2, NULL, 0), 0, "%s", fbk_errmsg());
    fbk_map *m = e.m;
    fbk_pool *p = e.p;
    cr_assert_eq(put(m, p, "a", 100, 1), 0);
    cr_assert_eq(tu_rmtree(locdir), 0);
    int rc = put(m, p, "b", 100, 2);
    cr_assert_neq(rc, 0, "a put into a deleted location succeeded");
    cr_assert(fbk_errmsg()[0], "no message");
    cr_log_info("put into a deleted location: %s: %s", fbk_err_name(rc), fbk_errmsg());
    fbk_handle *h;
    rc = fbk_map_get(m, S("a"), &h);
    if (rc == 0) { /* served from memory (the map shares the put's item) */
        const void *obj;
        cr_assert_eq(fbk_load(h, &obj), 0);
        fbk_unload(h);
        fbk_handle_release(h);
    }
    rc = fbk_map_get(m, S("zz"), &h);
    cr_assert_neq(rc, 0);
    tu_map_close(&e); /* may report the failure: it must not crash */
}
