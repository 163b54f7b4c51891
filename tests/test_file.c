/* test_file.c -- the file: backend through the public API: many blobs
 * through a small pool, persist/sync/reopen/register, another file system,
 * corruption, junk, unwritable locations, a second process (sharing:
 * tests/test_sharing_file.c). */
#include "file_spill.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static fbk_store *open_store(const char *dir)
{
    char uri[4200];
    snprintf(uri, sizeof uri, "file:%s", dir);
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

static fbk_handle *insert(fbk_pool *p, size_t len, uint64_t seed)
{
    fbk_blob *b = tu_blob(len, seed);
    fbk_handle *h = NULL;
    int rc = fbk_insert(p, b, &h);
    cr_assert_eq(rc, FBK_OK, "fbk_insert: %s", fbk_errmsg());
    return h;
}

static void check(fbk_handle *h, size_t len, uint64_t seed)
{
    const void *obj;
    int rc = fbk_load(h, &obj);
    cr_assert_eq(rc, FBK_OK, "fbk_load: %s (%s)", fbk_err_name(rc), fbk_errmsg());
    cr_assert(tu_blob_check(obj, len, seed), "bytes differ (len %zu seed %llu)", len,
              (unsigned long long)seed);
    fbk_unload(h);
}

/* 1 B .. 4 MiB, spread over a range of sizes */
static size_t size_of(int i)
{
    static const size_t sizes[] = {1,      2,      17,      100,     4095,      4096,   4097,
                                   65535,  65536,  100000,  262144,  1 << 20,   3000000,
                                   4 << 20};
    return sizes[(size_t)i % (sizeof sizes / sizeof sizes[0])];
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

static void key_path(char *out, size_t cap, const char *locdir, const fbk_key *k)
{
    char hex[33];
    fbk_key_format_hex(k, hex);
    snprintf(out, cap, "%s/%.2s/%s", locdir, hex, hex);
}

#define MANY 120

Test(file, many_blobs_through_a_small_pool_every_byte_checked)
{
    const char *dir = tu_fresh_dir("many");
    fbk_store *s = open_store(dir);
    fbk_pool *p;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 4), FBK_OK);
    fbk_handle *h[MANY];
    for (int i = 0; i < MANY; i++)
        h[i] = insert(p, size_of(i), (uint64_t)i);
    cr_assert_eq(fbk_store_drain(s), FBK_OK, "%s", fbk_errmsg());
    fbk_store_stats st;
    fbk_store_stats_get(s, &st);
    cr_assert_geq(st.stores, MANY - 4, "only %llu stores", (unsigned long long)st.stores);
    /* twice, in two orders: loads from the spill area evict others again */
    for (int i = 0; i < MANY; i++)
        check(h[i], size_of(i), (uint64_t)i);
    for (int i = MANY - 1; i >= 0; i -= 3)
        check(h[i], size_of(i), (uint64_t)i);
    fbk_store_stats_get(s, &st);
    cr_assert_geq(st.loads, MANY - 4);
    for (int i = 0; i < MANY; i++)
        fbk_handle_release(h[i]);
    cr_assert_eq(fbk_store_drain(s), FBK_OK, "%s", fbk_errmsg());
    fbk_pool_release(p);
    fbk_store_close(s);
}

Test(file, persist_sync_close_reopen_register_load)
{
    const char *d = tu_fresh_dir("reopen");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", d);
    fbk_store *s = open_store(dir);
    fbk_pool *p;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 3), FBK_OK);
    fbk_location *loc = open_loc(s, "saved");
    enum { N = 30 };
    fbk_handle *h[N];
    fbk_key keys[N];
    for (int i = 0; i < N; i++) {
        h[i] = insert(p, size_of(i), 1000 + (uint64_t)i);
        fbk_handle_key(h[i], &keys[i]);
        int rc = fbk_persist(h[i], loc);
        cr_assert_eq(rc, FBK_OK, "persist: %s (%s)", fbk_err_name(rc), fbk_errmsg());
    }
    cr_assert_eq(fbk_location_count(loc), N);
    cr_assert_eq(fbk_location_sync(loc), FBK_OK, "%s", fbk_errmsg());
    for (int i = 0; i < N; i++)
        fbk_handle_release(h[i]);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);

    /* the files are there, under the sharded names */
    char path[4400], locdir[4200];
    snprintf(locdir, sizeof locdir, "%s/saved", dir);
    struct stat st;
    for (int i = 0; i < N; i++) {
        key_path(path, sizeof path, locdir, &keys[i]);
        cr_assert_eq(stat(path, &st), 0, "missing %s", path);
    }

    s = open_store(dir);
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 3), FBK_OK);
    loc = open_loc(s, "saved");
    cr_assert_eq(fbk_location_count(loc), N);
    cr_assert_eq(fbk_location_junk_removed(loc), 0);
    for (int i = 0; i < N; i++) {
        cr_assert(fbk_location_contains(loc, &keys[i]));
        int rc = fbk_register(p, loc, &keys[i], &h[i]);
        cr_assert_eq(rc, FBK_OK, "register: %s (%s)", fbk_err_name(rc), fbk_errmsg());
        fbk_key k;
        fbk_handle_key(h[i], &k);
        cr_assert(fbk_key_equal(&k, &keys[i]));
    }
    for (int i = N - 1; i >= 0; i--)
        check(h[i], size_of(i), 1000 + (uint64_t)i);
    /* remove one, sync, and it is gone after a reopen */
    cr_assert_eq(fbk_location_remove(loc, &keys[0]), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_sync(loc), FBK_OK, "%s", fbk_errmsg());
    for (int i = 0; i < N; i++)
        fbk_handle_release(h[i]);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
    key_path(path, sizeof path, locdir, &keys[0]);
    cr_assert_neq(stat(path, &st), 0);

    s = open_store(dir);
    loc = open_loc(s, "saved");
    cr_assert_eq(fbk_location_count(loc), N - 1);
    cr_assert(!fbk_location_contains(loc, &keys[0]));
    fbk_location_close(loc);
    fbk_store_close(s);
}

Test(file, absolute_location_on_another_file_system)
{
    const char *d = tu_fresh_dir("exdev");
    char dir[4096], shm[256];
    snprintf(dir, sizeof dir, "%s", d);
    snprintf(shm, sizeof shm, "/dev/shm/fbk-test-file-%ld", (long)getpid());
    struct stat a, b;
    if (stat("/dev/shm", &b) != 0 || stat(dir, &a) != 0 || a.st_dev == b.st_dev)
        cr_skip("no second file system at /dev/shm");
    tu_rmtree(shm);
    fbk_store *s = open_store(dir);
    fbk_pool *p;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2), FBK_OK);
    fbk_location *loc = open_loc(s, shm);
    enum { N = 14 };
    fbk_key keys[N];
    fbk_handle *h[N];
    for (int i = 0; i < N; i++) {
        h[i] = insert(p, size_of(i), 50 + (uint64_t)i);
        fbk_handle_key(h[i], &keys[i]);
        cr_assert_eq(fbk_persist(h[i], loc), FBK_OK, "%s", fbk_errmsg());
    }
    cr_assert_eq(fbk_location_sync(loc), FBK_OK, "%s", fbk_errmsg());
    for (int i = 0; i < N; i++)
        fbk_handle_release(h[i]);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);

    s = open_store(dir);
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2), FBK_OK);
    loc = open_loc(s, shm);
    cr_assert_eq(fbk_location_count(loc), N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(fbk_register(p, loc, &keys[i], &h[i]), FBK_OK, "%s", fbk_errmsg());
    for (int i = 0; i < N; i++)
        check(h[i], size_of(i), 50 + (uint64_t)i);
    for (int i = 0; i < N; i++)
        fbk_handle_release(h[i]);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
    tu_rmtree(shm);
}

Test(file, flipped_byte_in_a_persisted_file_is_ecorrupt)
{
    const char *d = tu_fresh_dir("corrupt");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", d);
    fbk_store *s = open_store(dir);
    fbk_pool *p;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2), FBK_OK);
    fbk_location *loc = open_loc(s, "loc");
    fbk_key good, bad;
    fbk_handle *h1 = insert(p, 70000, 1), *h2 = insert(p, 70000, 2);
    fbk_handle_key(h1, &good);
    fbk_handle_key(h2, &bad);
    cr_assert_eq(fbk_persist(h1, loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(fbk_persist(h2, loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_sync(loc), FBK_OK, "%s", fbk_errmsg());
    fbk_handle_release(h1);
    fbk_handle_release(h2);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);

    char path[4400], locdir[4200];
    snprintf(locdir, sizeof locdir, "%s/loc", dir);
    key_path(path, sizeof path, locdir, &bad);
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
    unsigned char c;
    cr_assert_eq(pread(fd, &c, 1, 40000), 1);
    c ^= 0x20;
    cr_assert_eq(pwrite(fd, &c, 1, 40000), 1);
    close(fd);

    s = open_store(dir);
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2), FBK_OK);
    loc = open_loc(s, "loc");
    cr_assert_eq(fbk_register(p, loc, &good, &h1), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(fbk_register(p, loc, &bad, &h2), FBK_OK, "%s", fbk_errmsg());
    const void *obj;
    int rc = fbk_load(h2, &obj);
    cr_assert_eq(rc, FBK_ECORRUPT, "load of a flipped byte gave %s", fbk_err_name(rc));
    /* still spilled: the same answer again, and the good one loads */
    cr_assert_eq(fbk_load(h2, &obj), FBK_ECORRUPT);
    check(h1, 70000, 1);
    fbk_handle_release(h1);
    fbk_handle_release(h2);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
}

Test(file, scan_removes_only_temporaries_and_counts_what_it_leaves)
{
    const char *d = tu_fresh_dir("junk");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", d);
    fbk_store *s = open_store(dir);
    fbk_pool *p;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2), FBK_OK);
    fbk_location *loc = open_loc(s, "loc");
    fbk_handle *h = insert(p, 10, 9);
    fbk_key k;
    fbk_handle_key(h, &k);
    cr_assert_eq(fbk_persist(h, loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_sync(loc), FBK_OK, "%s", fbk_errmsg());
    fbk_handle_release(h);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);

    char hex[33], path[4400];
    fbk_key_format_hex(&k, hex);
    snprintf(path, sizeof path, "%s/loc/%.2s/.tmp-%s-00000000000000ff", dir, hex, hex);
    write_file(path, "half a value");
    snprintf(path, sizeof path, "%s/loc/%.2s/README", dir, hex);
    write_file(path, "not a key");
    snprintf(path, sizeof path, "%s/loc/%.2s/%s.bak", dir, hex, hex);
    write_file(path, "not a key either");
    snprintf(path, sizeof path, "%s/loc/manifest", dir);
    write_file(path, "the user's own file, outside the shards");

    s = open_store(dir);
    loc = open_loc(s, "loc");
    cr_assert_eq(fbk_location_junk_removed(loc), 1);
    cr_assert_eq(fbk_location_foreign_entries(loc), 2);
    cr_assert_eq(fbk_location_count(loc), 1);
    cr_assert(fbk_location_contains(loc, &k));
    struct stat st;
    snprintf(path, sizeof path, "%s/loc/%.2s/README", dir, hex);
    cr_assert_eq(stat(path, &st), 0, "a file libfbk did not make was removed");
    snprintf(path, sizeof path, "%s/loc/%.2s/.tmp-%s-00000000000000ff", dir, hex, hex);
    cr_assert_neq(stat(path, &st), 0, "the temporary is still there");
    snprintf(path, sizeof path, "%s/loc/manifest", dir);
    cr_assert_eq(stat(path, &st), 0);
    fbk_location_close(loc);
    fbk_store_close(s);

    s = open_store(dir);
    loc = open_loc(s, "loc");
    cr_assert_eq(fbk_location_junk_removed(loc), 0);
    cr_assert_eq(fbk_location_foreign_entries(loc), 2);
    fbk_location_close(loc);
    fbk_store_close(s);
}

Test(file, location_under_a_file_is_a_clean_error)
{
    const char *d = tu_fresh_dir("underfile");
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s", d);
    snprintf(path, sizeof path, "%s/plainfile", dir);
    write_file(path, "x");
    fbk_store *s = open_store(dir);
    fbk_location *loc = NULL;
    int rc = fbk_location_open(s, "plainfile/loc", &loc);
    cr_assert_eq(rc, FBK_EINVAL, "gave %s", fbk_err_name(rc));
    cr_assert_null(loc);
    cr_assert(strstr(fbk_errmsg(), "plainfile") != NULL, "message: %s", fbk_errmsg());
    rc = fbk_location_open(s, "plainfile", &loc);
    cr_assert_eq(rc, FBK_EINVAL, "gave %s", fbk_err_name(rc));
    cr_assert(strstr(fbk_errmsg(), "not a directory") != NULL, "message: %s", fbk_errmsg());
    fbk_store_close(s);
}

Test(file, unwritable_location_fails_and_loses_nothing)
{
    struct stat st;
    if (stat("/sys/kernel", &st) != 0 || !S_ISDIR(st.st_mode))
        cr_skip("no /sys/kernel");
    const char *d = tu_fresh_dir("unwritable");
    fbk_store *s = open_store(d);
    fbk_pool *p;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2), FBK_OK);
    /* sysfs refuses new directories, even to root */
    fbk_location *loc = NULL;
    int rc = fbk_location_open(s, "/sys/kernel/fbk-test-location", &loc);
    cr_assert_lt(rc, 0);
    cr_assert(strstr(fbk_errmsg(), "/sys/kernel/fbk-test-location") != NULL, "message: %s",
              fbk_errmsg());
    /* a location made while writable, on a file system remounted read-only */
    char mnt[4096], where[4200];
    const char *m = tu_tmpfs("unwritable-mnt", "4m");
    if (!m) {
        fbk_pool_release(p);
        fbk_store_close(s);
        cr_skip("cannot mount a tmpfs");
    }
    snprintf(mnt, sizeof mnt, "%s", m);
    snprintf(where, sizeof where, "%s/loc", mnt);
    fbk_location_close(open_loc(s, where));
    cr_assert_eq(tu_remount_ro(mnt), 0, "remount ro: %s", strerror(errno));
    loc = open_loc(s, where);
    fbk_handle *h = insert(p, 5000, 4);
    rc = fbk_persist(h, loc);
    cr_assert(rc == FBK_EIO || rc == FBK_EINVAL, "persist gave %s", fbk_err_name(rc));
    cr_assert(strstr(fbk_errmsg(), where) != NULL, "message: %s", fbk_errmsg());
    fbk_key k;
    fbk_handle_key(h, &k);
    cr_assert(!fbk_location_contains(loc, &k));
    check(h, 5000, 4);
    fbk_handle_release(h);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
    tu_umount(mnt);
}

Test(file, a_second_process_opens_the_same_store)
{
    const char *d = tu_fresh_dir("busy");
    char dir[4096], uri[4200];
    snprintf(dir, sizeof dir, "%s", d);
    snprintf(uri, sizeof uri, "file:%s", dir);
    fbk_store *s = open_store(dir);
    int pipefd[2];
    cr_assert_eq(pipe(pipefd), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        close(pipefd[0]);
        fbk_store *s2 = NULL;
        int rc = fbk_store_open(&s2, uri, NULL);
        char msg[600];
        int n = snprintf(msg, sizeof msg, "%d %s", rc, fbk_errmsg());
        if (write(pipefd[1], msg, (size_t)n) < 0)
            _exit(2);
        _exit(0);
    }
    close(pipefd[1]);
    char msg[600] = {0};
    ssize_t n = read(pipefd[0], msg, sizeof msg - 1);
    close(pipefd[0]);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(n > 0, "the child said nothing");
    int code = atoi(msg);
    cr_assert_eq(code, FBK_OK, "child got: %s", msg);
    fbk_store_close(s);
    /* and again after the close */
    s = open_store(dir);
    fbk_store_close(s);
}

Test(file, spill_area_is_removed_at_close_stale_ones_at_open_and_sharded_on_demand)
{
    const char *d = tu_fresh_dir("spill");
    char dir[4096], path[4300];
    snprintf(dir, sizeof dir, "%s", d);
    fbk_store *s = open_store(dir);
    fbk_pool *p;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 1), FBK_OK);
    fbk_handle *h = insert(p, 100, 1);
    cr_assert_eq(fbk_write_now(h), FBK_OK, "%s", fbk_errmsg());
    fbk_key k;
    fbk_handle_key(h, &k);
    char spill[4200];
    snprintf(spill, sizeof spill, "%s/%s", dir, fs_spill_name(dir));
    key_path(path, sizeof path, spill, &k);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "no spill file %s", path);
    fbk_handle_release(h);
    cr_assert_eq(fbk_store_drain(s), FBK_OK);
    fbk_pool_release(p);
    fbk_store_close(s);
    cr_assert_neq(stat(spill, &st), 0, "the spill area is left after close");
    /* leftovers of a "crash": a spill area without its lock file, and the
     * DIR/spill of earlier versions */
    for (int i = 0; i < 2; i++) {
        snprintf(spill, sizeof spill, "%s/%s", dir, i ? "spill" : "spill-0123456789abcdef");
        cr_assert_eq(mkdir(spill, 0755), 0);
        snprintf(path, sizeof path, "%s/00", spill);
        cr_assert_eq(mkdir(path, 0755), 0);
        snprintf(path, sizeof path, "%s/00/00000000000000000000000000000000", spill);
        write_file(path, "stale");
    }
    s = open_store(dir);
    cr_assert_neq(stat(spill, &st), 0, "the old spill area was not removed at open");
    snprintf(spill, sizeof spill, "%s/spill-0123456789abcdef", dir);
    cr_assert_neq(stat(spill, &st), 0, "a stale spill area was not removed at open");
    /* a new spill area: its shards are made by the stores that need them */
    snprintf(spill, sizeof spill, "%s/%s", dir, fs_spill_name(dir));
    cr_assert_eq(stat(spill, &st), 0);
    cr_assert(S_ISDIR(st.st_mode));
    snprintf(spill, sizeof spill, "%s/%s/00", dir, fs_spill_name(dir));
    cr_assert_neq(stat(spill, &st), 0, "shards made before a store needed them");
    fbk_store_close(s);
}
