/* test_file_locations.c -- what a file: location may be: never the store's
 * own areas (spill, LOCK, the store directory), never a climb out of the
 * store directory with "..", never a directory of someone else's files
 * (only a marked, empty or older libfbk location is used), and a scan that
 * deletes nothing but libfbk's own temporaries. */
#include "../backends/file/file_io.h"
#include "file_spill.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATHF(buf, ...) cr_assert_lt((size_t)snprintf(buf, sizeof buf, __VA_ARGS__), sizeof buf)

static fbk_store *open_store(const char *dir)
{
    char uri[4200];
    PATHF(uri, "file:%s", dir);
    fbk_store *s = NULL;
    int rc = fbk_store_open(&s, uri, NULL);
    cr_assert_eq(rc, FBK_OK, "fbk_store_open(%s): %s (%s)", uri, fbk_err_name(rc), fbk_errmsg());
    return s;
}

static fbk_location *open_loc(fbk_store *s, const char *name)
{
    fbk_location *loc = NULL;
    int rc = fbk_location_open(s, name, &loc);
    cr_assert_eq(rc, FBK_OK, "fbk_location_open(%s): %s (%s)", name, fbk_err_name(rc),
                 fbk_errmsg());
    return loc;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

/* 1 if path holds exactly text */
static int holds(const char *path, const char *text)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return n == strlen(text) && memcmp(buf, text, n) == 0;
}

static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Persists a blob (len, seed) into loc and syncs; returns its key. */
static fbk_key persist_one(fbk_store *s, fbk_location *loc, size_t len, uint64_t seed)
{
    fbk_pool *p;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2), FBK_OK);
    fbk_handle *h = NULL;
    cr_assert_eq(fbk_insert(p, tu_blob(len, seed), &h), FBK_OK, "%s", fbk_errmsg());
    int rc = fbk_persist(h, loc);
    cr_assert_eq(rc, FBK_OK, "persist: %s", fbk_errmsg());
    rc = fbk_location_sync(loc);
    cr_assert_eq(rc, FBK_OK, "sync: %s", fbk_errmsg());
    fbk_key k;
    fbk_handle_key(h, &k);
    fbk_handle_release(h);
    fbk_pool_release(p);
    return k;
}

/* The key is in loc and loads back as blob (len, seed). */
static void expect_value(fbk_store *s, fbk_location *loc, const fbk_key *k, size_t len,
                         uint64_t seed)
{
    cr_assert(fbk_location_contains(loc, k), "the persisted key is gone after reopen");
    fbk_pool *p;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2), FBK_OK);
    fbk_handle *h = NULL;
    cr_assert_eq(fbk_register(p, loc, k, &h), FBK_OK, "register: %s", fbk_errmsg());
    const void *obj;
    cr_assert_eq(fbk_load(h, &obj), FBK_OK, "load: %s", fbk_errmsg());
    cr_assert(tu_blob_check(obj, len, seed), "bytes differ");
    fbk_unload(h);
    fbk_handle_release(h);
    fbk_pool_release(p);
}

/* Opens `name` on the store in dir: it must be refused with FBK_EINVAL and
 * a message containing `rule`.  Should it open (the bug), a value is
 * persisted and synced there and the store reopened: the value must still
 * be there, which is what the refusal protects. */
static void expect_refused(const char *dir, const char *name, const char *rule)
{
    fbk_store *s = open_store(dir);
    fbk_location *loc = NULL;
    int rc = fbk_location_open(s, name, &loc);
    if (rc == FBK_OK) {
        fbk_key k = persist_one(s, loc, 3000, 77);
        fbk_location_close(loc);
        fbk_store_close(s);
        s = open_store(dir);
        loc = open_loc(s, name);
        expect_value(s, loc, &k, 3000, 77);
        fbk_location_close(loc);
        fbk_store_close(s);
        cr_assert_fail("location %s was accepted", name);
    }
    cr_assert_eq(rc, FBK_EINVAL, "location %s gave %s (%s)", name, fbk_err_name(rc),
                 fbk_errmsg());
    cr_assert(strstr(fbk_errmsg(), rule) != NULL, "location %s: message: %s", name,
              fbk_errmsg());
    cr_assert_null(loc);
    fbk_store_close(s);
}

/* ---- item: a location must not reach into the store's own areas ---- */

Test(file_locations, a_location_in_the_spill_area_is_refused_and_loses_nothing)
{
    char dir[4096], p[4300];
    PATHF(dir, "%s", tu_fresh_dir("loc_spill"));
    const char *rule = "must not reach into the store's own areas";
    expect_refused(dir, "spill", rule);
    expect_refused(dir, "spill/ab", rule);
    expect_refused(dir, "./spill", rule);
    expect_refused(dir, "x/../spill", rule);
    expect_refused(dir, "spill/new/deeper", rule);
    expect_refused(dir, "LOCK", rule);
    expect_refused(dir, "LOCK/x", rule);
    expect_refused(dir, ".", rule);
    /* every store's spill area and its lock file, whether present or not */
    expect_refused(dir, "spill-0123456789abcdef", rule);
    expect_refused(dir, "spill-0123456789abcdef/ab", rule);
    expect_refused(dir, "spill-0123456789abcdef.lock", rule);
    expect_refused(dir, "spill-x/y", rule);
    /* through a symlink inside the store directory, and from outside, to
     * the spill area of a store that has the directory open meanwhile */
    fbk_store *holder = open_store(dir);
    char area[64];
    PATHF(area, "%s", fs_spill_name(dir));
    PATHF(p, "%s/tospill", dir);
    cr_assert_eq(symlink(area, p), 0);
    expect_refused(dir, "tospill", rule);
    char out[4096], link[4300], abs[4300];
    PATHF(out, "%s", tu_fresh_dir("loc_spill_out"));
    PATHF(abs, "%s/%s", dir, area);
    PATHF(link, "%s/elsewhere", out);
    cr_assert_eq(symlink(abs, link), 0);
    expect_refused(dir, link, rule);
    expect_refused(dir, abs, rule);
    PATHF(abs, "%s/spill", dir);
    expect_refused(dir, abs, rule);
    fbk_store_close(holder);
    /* the store directory inside the location */
    PATHF(abs, "%s/..", dir);
    expect_refused(dir, abs, rule);
    /* nothing was made for the refused names */
    PATHF(p, "%s/x", dir);
    cr_assert(!exists(p), "x/../spill made x");
    PATHF(p, "%s/spill/new", dir);
    cr_assert(!exists(p));
    /* a name that only begins like one of the store's is fine */
    fbk_store *s = open_store(dir);
    fbk_location *loc = open_loc(s, "spillway");
    fbk_key k = persist_one(s, loc, 5000, 3);
    fbk_location_close(loc);
    fbk_store_close(s);
    s = open_store(dir);
    loc = open_loc(s, "spillway");
    expect_value(s, loc, &k, 5000, 3);
    fbk_location_close(loc);
    fbk_store_close(s);
}

Test(file_locations, a_relative_location_climbing_out_of_the_store_is_refused)
{
    char base[4096], dir[4300], p[4400];
    PATHF(base, "%s", tu_fresh_dir("loc_climb"));
    PATHF(dir, "%s/store", base);
    const char *rule = "climbs out of the store directory";
    expect_refused(dir, "..", rule);
    expect_refused(dir, "../x", rule);
    expect_refused(dir, "a/../../x", rule);
    expect_refused(dir, "./../x", rule);
    /* no shard directories were made outside the store */
    PATHF(p, "%s/00", base);
    cr_assert(!exists(p), "shards made outside the store directory");
    PATHF(p, "%s/x", base);
    cr_assert(!exists(p));
    PATHF(p, "%s/a", dir);
    cr_assert(!exists(p));
    /* ".." that stays inside is fine; an absolute path elsewhere too */
    fbk_store *s = open_store(dir);
    fbk_location *loc = open_loc(s, "a/b/../c");
    fbk_location_close(loc);
    PATHF(p, "%s/a/c/.fbk-location", dir);
    cr_assert(exists(p));
    PATHF(p, "%s/outside", base);
    loc = open_loc(s, p);
    fbk_key k = persist_one(s, loc, 100, 9);
    fbk_location_close(loc);
    fbk_store_close(s);
    s = open_store(dir);
    loc = open_loc(s, p);
    expect_value(s, loc, &k, 100, 9);
    fbk_location_close(loc);
    fbk_store_close(s);
}

/* The reverse: a store opened on a directory whose "spill" is a location
 * (made by another store) must not empty it. */
Test(file_locations, a_store_whose_spill_is_a_location_is_refused)
{
    char base[4096], dir[4300], loc_dir[4400];
    PATHF(base, "%s", tu_fresh_dir("loc_spill_rev"));
    PATHF(dir, "%s/a", base);
    PATHF(loc_dir, "%s/b/spill", base);
    fbk_store *s = open_store(dir);
    fbk_location *loc = open_loc(s, loc_dir);
    fbk_key k = persist_one(s, loc, 700, 5);
    fbk_location_close(loc);
    fbk_store_close(s);
    char uri[4400];
    PATHF(uri, "file:%s/b", base);
    fbk_store *s2 = NULL;
    int rc = fbk_store_open(&s2, uri, NULL);
    if (rc == FBK_OK)
        fbk_store_close(s2);
    s = open_store(dir);
    loc = open_loc(s, loc_dir);
    expect_value(s, loc, &k, 700, 5);
    fbk_location_close(loc);
    fbk_store_close(s);
    cr_assert_eq(rc, FBK_EINVAL, "%s", fbk_err_name(rc));
}

/* The same for a dead store's spill-<id> that is a location (an earlier
 * version let one be made there): refused, not removed. */
Test(file_locations, a_store_whose_stale_spill_area_is_a_location_is_refused)
{
    char base[4096], dir[4300], area[4400], p[4500];
    PATHF(base, "%s", tu_fresh_dir("loc_spill_id_rev"));
    PATHF(dir, "%s/b", base);
    PATHF(area, "%s/spill-0123456789abcdef", dir);
    fbk_store *s = open_store(base);
    fbk_location *loc = open_loc(s, area); /* absolute: not in base's own areas */
    fbk_key k = persist_one(s, loc, 900, 6);
    fbk_location_close(loc);
    fbk_store_close(s);
    char uri[4400];
    PATHF(uri, "file:%s", dir);
    fbk_store *s2 = NULL;
    int rc = fbk_store_open(&s2, uri, NULL);
    if (rc == FBK_OK)
        fbk_store_close(s2);
    cr_assert_eq(rc, FBK_EINVAL, "%s", fbk_err_name(rc));
    cr_assert(strstr(fbk_errmsg(), "spill-0123456789abcdef") != NULL, "message: %s", fbk_errmsg());
    PATHF(p, "%s/.fbk-location", area);
    cr_assert(exists(p), "the location was removed");
    s = open_store(base);
    loc = open_loc(s, area);
    expect_value(s, loc, &k, 900, 6);
    fbk_location_close(loc);
    fbk_store_close(s);
}

/* ---- item: a directory libfbk did not make is not emptied ---- */

Test(file_locations, a_directory_of_user_files_is_refused_and_left_byte_exact)
{
    char dir[4096], u[4200], p[4400];
    PATHF(dir, "%s", tu_fresh_dir("loc_user_store"));
    PATHF(u, "%s", tu_fresh_dir("loc_user_files"));
    PATHF(p, "%s/ab", u);
    cr_assert_eq(mkdir(p, 0755), 0);
    PATHF(p, "%s/ab/notes.txt", u);
    write_file(p, "my notes\n");
    PATHF(p, "%s/ff", u);
    write_file(p, "a file named ff\n");
    PATHF(p, "%s/thesis.tex", u);
    write_file(p, "\\documentclass{article}\n");

    fbk_store *s = open_store(dir);
    fbk_location *loc = NULL;
    int rc = fbk_location_open(s, u, &loc);
    if (rc == FBK_OK)
        fbk_location_close(loc);
    fbk_store_close(s);
    PATHF(p, "%s/ab/notes.txt", u);
    cr_assert(holds(p, "my notes\n"), "ab/notes.txt was deleted or changed");
    PATHF(p, "%s/ff", u);
    cr_assert(holds(p, "a file named ff\n"), "ff was deleted or changed");
    PATHF(p, "%s/thesis.tex", u);
    cr_assert(holds(p, "\\documentclass{article}\n"));
    PATHF(p, "%s/00", u);
    cr_assert(!exists(p), "shards were made in the user's directory");
    PATHF(p, "%s/.fbk-location", u);
    cr_assert(!exists(p), "the user's directory was marked");
    cr_assert_eq(rc, FBK_EINVAL, "%s", fbk_err_name(rc));
    cr_assert(strstr(fbk_errmsg(), "is not a libfbk location (no .fbk-location marker) and is "
                                   "not empty: refusing to use it") != NULL,
              "message: %s", fbk_errmsg());
    cr_assert(strstr(fbk_errmsg(), u) != NULL, "message: %s", fbk_errmsg());

    /* only user files, no shard-named entry: refused as well */
    PATHF(u, "%s", tu_fresh_dir("loc_user_plain"));
    PATHF(p, "%s/photo.jpg", u);
    write_file(p, "jpeg");
    s = open_store(dir);
    cr_assert_eq(fbk_location_open(s, u, &loc), FBK_EINVAL);
    fbk_store_close(s);
    cr_assert(holds(p, "jpeg"));
    PATHF(p, "%s/00", u);
    cr_assert(!exists(p));
}

Test(file_locations, an_empty_directory_is_adopted_and_marked_durably)
{
    char dir[4096], u[4200], p[4400];
    PATHF(dir, "%s", tu_fresh_dir("loc_empty_store"));
    PATHF(u, "%s", tu_fresh_dir("loc_empty"));
    fbk_store *s = open_store(dir);
    fbk_location *loc = open_loc(s, u);
    PATHF(p, "%s/.fbk-location", u);
    struct stat st;
    cr_assert_eq(stat(p, &st), 0, "no marker");
    cr_assert(S_ISREG(st.st_mode) && st.st_size > 0);
    fbk_key k = persist_one(s, loc, 4096, 1);
    fbk_location_close(loc);
    /* a location libfbk creates is marked too */
    loc = open_loc(s, "made/here");
    fbk_location_close(loc);
    PATHF(p, "%s/made/here/.fbk-location", dir);
    cr_assert(exists(p));
    fbk_store_close(s);
    s = open_store(dir);
    loc = open_loc(s, u);
    expect_value(s, loc, &k, 4096, 1);
    cr_assert_eq(fbk_location_foreign_entries(loc), 0);
    fbk_location_close(loc);
    fbk_store_close(s);
}

/* The marker is written durably: the file fsynced, then its directory. */
static char g_marker_dir[4300];
static int g_marker_fsynced, g_dir_fsynced_after;

static int watching_fsync(int fd)
{
    if (tu_fd_path_has(fd, "/.fbk-location"))
        g_marker_fsynced = 1;
    else if (g_marker_fsynced && tu_fd_path_has(fd, g_marker_dir)) {
        char link[64], target[4400];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n > 0) {
            target[n] = '\0';
            if (strcmp(target, g_marker_dir) == 0)
                g_dir_fsynced_after = 1;
        }
    }
    return fbk__file_io_posix.fsync(fd);
}

static void io_reset(void) { fbk__file_io_set(NULL); }

Test(file_locations, the_marker_is_fsynced_and_then_its_directory, .fini = io_reset)
{
    char dir[4096];
    PATHF(dir, "%s", tu_fresh_dir("loc_marker_sync"));
    PATHF(g_marker_dir, "%s/loc", dir);
    static fbk__file_io hooked;
    hooked = fbk__file_io_posix;
    hooked.fsync = watching_fsync;
    tu_be b = tu_file_open(dir);
    fbk__file_io_set(&hooked);
    void *loc;
    cr_assert_eq(b.ops->open_location(b.self, "loc", &loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert(g_marker_fsynced, "the marker was not fsynced");
    cr_assert(g_dir_fsynced_after, "the location directory was not fsynced after the marker");
    b.ops->close_location(b.self, loc);
    fbk__file_io_set(NULL);
    tu_be_close(&b);
}

/* A location written before the marker existed: shards holding key files
 * (and a temporary of a crash), a manifest at the root.  It is adopted. */
Test(file_locations, a_location_of_an_earlier_version_is_adopted)
{
    char dir[4096], p[4400], hex[33];
    PATHF(dir, "%s", tu_fresh_dir("loc_legacy"));
    fbk_store *s = open_store(dir);
    fbk_location *loc = open_loc(s, "old");
    fbk_key k = persist_one(s, loc, 20000, 8);
    fbk_location_close(loc);
    fbk_store_close(s);
    /* as an earlier version left it: no marker, a temporary, some shards
     * gone (those versions made them lazily) */
    PATHF(p, "%s/old/.fbk-location", dir);
    cr_assert_eq(unlink(p), 0);
    fbk_key_format_hex(&k, hex);
    PATHF(p, "%s/old/%.2s/.tmp-%s-0000000000000003", dir, hex, hex);
    write_file(p, "half");
    for (int i = 0; i < 256; i += 3) {
        if (i == k.bytes[0])
            continue;
        PATHF(p, "%s/old/%02x", dir, i);
        cr_assert_eq(rmdir(p), 0, "%s: %s", p, strerror(errno));
    }
    PATHF(p, "%s/old/MANIFEST", dir);
    write_file(p, "the user's manifest");

    s = open_store(dir);
    loc = open_loc(s, "old");
    expect_value(s, loc, &k, 20000, 8);
    cr_assert_eq(fbk_location_junk_removed(loc), 1);
    cr_assert_eq(fbk_location_foreign_entries(loc), 0);
    fbk_location_close(loc);
    fbk_store_close(s);
    PATHF(p, "%s/old/.fbk-location", dir);
    cr_assert(exists(p), "an adopted location is marked");
    PATHF(p, "%s/old/MANIFEST", dir);
    cr_assert(holds(p, "the user's manifest"));
    PATHF(p, "%s/old/%.2s/.tmp-%s-0000000000000003", dir, hex, hex);
    cr_assert(!exists(p));
}

/* An unmarked directory whose shard holds something that is not libfbk's
 * is not an earlier version's location: refused, untouched. */
Test(file_locations, an_unmarked_directory_with_a_stranger_in_a_shard_is_refused)
{
    char dir[4096], p[4400];
    PATHF(dir, "%s", tu_fresh_dir("loc_legacy_stranger"));
    PATHF(p, "%s/u", dir);
    cr_assert_eq(mkdir(p, 0755), 0);
    PATHF(p, "%s/u/ab", dir);
    cr_assert_eq(mkdir(p, 0755), 0);
    PATHF(p, "%s/u/ab/ab0123456789abcdef0123456789abcd", dir);
    write_file(p, "key-like");
    PATHF(p, "%s/u/ab/notes.txt", dir);
    write_file(p, "mine");
    fbk_store *s = open_store(dir);
    fbk_location *loc = NULL;
    int rc = fbk_location_open(s, "u", &loc);
    if (rc == FBK_OK)
        fbk_location_close(loc);
    fbk_store_close(s);
    cr_assert(holds(p, "mine"), "ab/notes.txt was deleted");
    PATHF(p, "%s/u/ab/ab0123456789abcdef0123456789abcd", dir);
    cr_assert(holds(p, "key-like"));
    cr_assert_eq(rc, FBK_EINVAL, "%s", fbk_err_name(rc));
    cr_assert(strstr(fbk_errmsg(), "ab/notes.txt") != NULL, "message: %s", fbk_errmsg());
}

/* In a marked location, the scan deletes libfbk's temporaries only; a
 * user's file in a shard, a file named like a shard, a key in the wrong
 * shard, a directory under a key name are left alone and counted. */
Test(file_locations, a_marked_location_keeps_strangers_and_counts_them)
{
    char dir[4096], p[4400], hex[33];
    PATHF(dir, "%s", tu_fresh_dir("loc_marked_strangers"));
    fbk_store *s = open_store(dir);
    fbk_location *loc = open_loc(s, "m");
    fbk_key k = persist_one(s, loc, 1234, 4);
    fbk_location_close(loc);
    fbk_store_close(s);
    fbk_key_format_hex(&k, hex);
    const char *other = k.bytes[0] == 0xff ? "fe" : "ff";
    PATHF(p, "%s/m/%.2s/notes.txt", dir, hex);
    write_file(p, "user 1");
    PATHF(p, "%s/m/%s", dir, other);
    cr_assert_eq(rmdir(p), 0);
    write_file(p, "user 2");
    PATHF(p, "%s/m/%.2s/.tmp-%s-00000000000000aa", dir, hex, hex);
    write_file(p, "partial");
    PATHF(p, "%s/m/%.2s/%.2s0000000000000000000000000000ff", dir, hex,
          k.bytes[0] == 0 ? "01" : "00");
    write_file(p, "user 3: a key in the wrong shard");
    PATHF(p, "%s/m/%.2s/.tmp-user", dir, hex);
    write_file(p, "user 4: only looks like a temporary");

    s = open_store(dir);
    loc = open_loc(s, "m");
    expect_value(s, loc, &k, 1234, 4);
    cr_assert_eq(fbk_location_count(loc), 1);
    cr_assert_eq(fbk_location_junk_removed(loc), 1);
    cr_assert_eq(fbk_location_foreign_entries(loc), 4);
    fbk_location_close(loc);
    fbk_store_close(s);
    PATHF(p, "%s/m/%.2s/notes.txt", dir, hex);
    cr_assert(holds(p, "user 1"));
    PATHF(p, "%s/m/%s", dir, other);
    cr_assert(holds(p, "user 2"));
    PATHF(p, "%s/m/%.2s/%.2s0000000000000000000000000000ff", dir, hex,
          k.bytes[0] == 0 ? "01" : "00");
    cr_assert(holds(p, "user 3: a key in the wrong shard"));
    PATHF(p, "%s/m/%.2s/.tmp-user", dir, hex);
    cr_assert(holds(p, "user 4: only looks like a temporary"));
    PATHF(p, "%s/m/%.2s/.tmp-%s-00000000000000aa", dir, hex, hex);
    cr_assert(!exists(p), "libfbk's temporary was kept");
}

/* Two processes open a new location at once: the second looks for the
 * marker just before the first writes it, then lists the directory and
 * meets the marker.  That is still a libfbk location (the CI run of
 * test_map_sharing met exactly this: "not a libfbk location ... (.fbk-location
 * is not libfbk's)").  The hooked fstatat plays the first process: on the
 * marker probe it writes the marker and answers ENOENT. */
static int g_marker_race;

static int racing_fstatat(int at, const char *path, struct stat *st, int flags)
{
    if (g_marker_race && strcmp(path, ".fbk-location") == 0) {
        g_marker_race = 0;
        int fd = openat(at, path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd >= 0)
            close(fd);
        errno = ENOENT;
        return -1;
    }
    return fbk__file_io_posix.fstatat(at, path, st, flags);
}

Test(file_locations, a_marker_written_while_another_open_looks_is_adopted, .fini = io_reset)
{
    char dir[4096], p[4400];
    PATHF(dir, "%s", tu_fresh_dir("loc_marker_race"));
    PATHF(p, "%s/loc", dir);
    cr_assert_eq(mkdir(p, 0755), 0);
    static fbk__file_io hooked;
    hooked = fbk__file_io_posix;
    hooked.fstatat = racing_fstatat;
    tu_be b = tu_file_open(dir);
    fbk__file_io_set(&hooked);
    g_marker_race = 1;
    void *loc = NULL;
    int rc = b.ops->open_location(b.self, "loc", &loc);
    fbk__file_io_set(NULL);
    cr_assert_eq(g_marker_race, 0, "the marker probe was not made");
    cr_assert_eq(rc, FBK_OK, "%s", fbk_errmsg());
    b.ops->close_location(b.self, loc);
    tu_be_close(&b);
}
