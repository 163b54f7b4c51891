/* test_file_ops.c -- the file: backend's table, called directly (no core):
 * layout on disk, locking, atomic stores, links and copies, scan, sync and
 * its sticky errors, error codes and messages (with faults injected through
 * the backend's system-call table). */
#include "../backends/file/file_io.h"
#include "file_spill.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    const unsigned char *src;
    int result;
} fill_arg;

static int fill_copy(void *dst, size_t len, void *arg)
{
    fill_arg *a = arg;
    if (a->result != 0)
        return a->result;
    memcpy(dst, a->src, len);
    return 0;
}

typedef struct {
    size_t len;
    uint64_t seed;
    int calls;
    int ok;
} check_arg;

static int read_check(const void *src, size_t len, void *arg)
{
    check_arg *c = arg;
    c->calls++;
    unsigned char *want = malloc(c->len ? c->len : 1);
    cr_assert_not_null(want);
    tu_fill(want, c->len, c->seed);
    c->ok = len == c->len && memcmp(src, want, len) == 0;
    free(want);
    return 0;
}

static int store_seeded(tu_be *b, const fbk_key *k, size_t len, uint64_t seed)
{
    unsigned char *buf = malloc(len ? len : 1);
    cr_assert_not_null(buf);
    tu_fill(buf, len, seed);
    fill_arg a = {buf, 0};
    int rc = b->ops->store(b->self, k, len, fill_copy, &a);
    free(buf);
    return rc;
}

static void expect_load(tu_be *b, const fbk_key *k, size_t len, uint64_t seed)
{
    check_arg c = {len, seed, 0, 0};
    int rc = b->ops->load(b->self, k, read_check, &c);
    cr_assert_eq(rc, FBK_OK, "load: %s", fbk_errmsg());
    cr_assert_eq(c.calls, 1);
    cr_assert(c.ok, "bytes differ for len %zu", len);
}

static int exists(const char *dir, const char *sub, const fbk_key *k)
{
    char hex[33], path[4096];
    fbk_key_format_hex(k, hex);
    if ((size_t)snprintf(path, sizeof path, "%s/%s/%.2s/%s", dir, sub, hex, hex) >= sizeof path)
        return 0;
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

Test(file_ops, store_load_roundtrip_all_sizes_and_remove)
{
    const char *dir = tu_fresh_dir("roundtrip");
    tu_be b = tu_file_open(dir);
    static const size_t sizes[] = {0, 1, 100, 4095, 65535, 65536, 65537, 1 << 20, 4 << 20};
    fbk_key keys[sizeof sizes / sizeof sizes[0]];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        fbk_key_generate(&keys[i]);
        cr_assert_eq(store_seeded(&b, &keys[i], sizes[i], i + 1), FBK_OK, "%s", fbk_errmsg());
        cr_assert(exists(dir, fs_spill_name(dir), &keys[i]));
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        expect_load(&b, &keys[i], sizes[i], i + 1);
    cr_assert_eq(b.ops->remove(b.self, &keys[3]), FBK_OK);
    cr_assert(!exists(dir, fs_spill_name(dir), &keys[3]));
    check_arg c = {0, 0, 0, 0};
    cr_assert_eq(b.ops->load(b.self, &keys[3], read_check, &c), FBK_ENOTFOUND);
    cr_assert_eq(c.calls, 0);
    cr_assert_eq(b.ops->remove(b.self, &keys[3]), FBK_ENOTFOUND);
    cr_assert(strstr(fbk_errmsg(), "spill") != NULL, "message: %s", fbk_errmsg());
    tu_be_close(&b);
}

Test(file_ops, failed_fill_leaves_no_value)
{
    const char *dir = tu_fresh_dir("fillfail");
    tu_be b = tu_file_open(dir);
    fbk_key k;
    fbk_key_generate(&k);
    unsigned char buf[10] = {0};
    fill_arg a = {buf, FBK_ECODEC};
    cr_assert_eq(b.ops->store(b.self, &k, sizeof buf, fill_copy, &a), FBK_ECODEC);
    check_arg c = {0};
    cr_assert_eq(b.ops->load(b.self, &k, read_check, &c), FBK_ENOTFOUND);
    tu_be_close(&b);
}

/* Several stores share a directory (in one process and across processes),
 * each with a spill area of its own; an exclusive lock on DIR/LOCK (`fbk
 * compact`, or a libfbk before sharing) still makes an open FBK_EBUSY. */
Test(file_ops, second_open_of_dir_shares_it_and_an_exclusive_lock_is_busy)
{
    const char *dir = tu_fresh_dir("lock");
    char saved[4096], p[4200];
    snprintf(saved, sizeof saved, "%s", dir);
    tu_be b = tu_file_open(saved);
    tu_be b2 = tu_file_open(saved);
    cr_assert_eq(fs_spill_count(saved, NULL), 2, "two stores, two spill areas");
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(store_seeded(&b, &k, 100, 1), FBK_OK);
    cr_assert_eq(store_seeded(&b2, &k, 200, 2), FBK_OK, "the same key in the other spill area");
    expect_load(&b, &k, 100, 1);
    expect_load(&b2, &k, 200, 2);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        const fbk_backend_ops *o;
        void *s;
        int rc = fbk_backend_file_create(saved, NULL, &o, &s);
        if (rc == FBK_OK)
            o->close(s);
        _exit(rc == FBK_OK ? 0 : 1);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child was refused");
    tu_be_close(&b2);
    tu_be_close(&b);
    cr_assert_eq(fs_spill_count(saved, NULL), 0, "spill areas left after close");
    /* an exclusive holder of DIR/LOCK */
    snprintf(p, sizeof p, "%s/LOCK", saved);
    int fd = open(p, O_RDWR);
    cr_assert_geq(fd, 0);
    cr_assert_eq(flock(fd, LOCK_EX | LOCK_NB), 0, "a store left DIR/LOCK locked");
    const fbk_backend_ops *ops;
    void *self = NULL;
    cr_assert_eq(fbk_backend_file_create(saved, NULL, &ops, &self), FBK_EBUSY);
    cr_assert_null(self);
    cr_assert(strstr(fbk_errmsg(), "LOCK") != NULL, "message: %s", fbk_errmsg());
    close(fd);
    b = tu_file_open(saved);
    tu_be_close(&b);
}

/* What a writer's open removes: the DIR/spill of earlier versions, a
 * spill-<id> without a lock file, and a spill-<id> whose lock file nobody
 * holds (with the lock file); and what it leaves: an area whose lock is
 * held, and other names. */
Test(file_ops, stale_spill_areas_are_removed_at_open)
{
    const char *dir = tu_fresh_dir("spillempty");
    char d[4096], p[4300];
    snprintf(d, sizeof d, "%s", dir);
    static const char *const areas[] = {"spill", "spill-00000000000000aa", "spill-00000000000000bb",
                                         "spill-00000000000000cc"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", d, areas[i]);
        cr_assert_eq(mkdir(p, 0755), 0);
        snprintf(p, sizeof p, "%s/%s/ab", d, areas[i]);
        cr_assert_eq(mkdir(p, 0755), 0);
        snprintf(p, sizeof p, "%s/%s/ab/abcdefabcdefabcdefabcdefabcdefab", d, areas[i]);
        write_file(p, "old");
        snprintf(p, sizeof p, "%s/%s/junk", d, areas[i]);
        write_file(p, "junk");
    }
    /* bb: a dead owner's lock file; cc: a live one (held here) */
    snprintf(p, sizeof p, "%s/spill-00000000000000bb.lock", d);
    write_file(p, "");
    snprintf(p, sizeof p, "%s/spill-00000000000000cc.lock", d);
    write_file(p, "");
    int held = open(p, O_RDONLY);
    cr_assert_geq(held, 0);
    cr_assert_eq(flock(held, LOCK_EX), 0);
    snprintf(p, sizeof p, "%s/spill-notours", d);
    cr_assert_eq(mkdir(p, 0755), 0);
    tu_be b = tu_file_open(d);
    struct stat st;
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", d, areas[i]);
        cr_assert_neq(lstat(p, &st), 0, "%s was not removed", areas[i]);
    }
    snprintf(p, sizeof p, "%s/spill-00000000000000bb.lock", d);
    cr_assert_neq(lstat(p, &st), 0, "a dead owner's lock file was not removed");
    snprintf(p, sizeof p, "%s/spill-00000000000000cc/ab/abcdefabcdefabcdefabcdefabcdefab", d);
    cr_assert_eq(lstat(p, &st), 0, "a live store's spill area was touched");
    snprintf(p, sizeof p, "%s/spill-00000000000000cc.lock", d);
    cr_assert_eq(lstat(p, &st), 0);
    snprintf(p, sizeof p, "%s/spill-notours", d);
    cr_assert_eq(lstat(p, &st), 0);
    /* this store's own area: a new one */
    char own[64];
    cr_assert_eq(fs_spill_count(d, own), 2);
    if (strcmp(own, "spill-00000000000000cc") == 0) {
        /* readdir order: find the other one */
        DIR *dd = opendir(d);
        struct dirent *e;
        while ((e = readdir(dd)) != NULL)
            if (strncmp(e->d_name, "spill-", 6) == 0 && strlen(e->d_name) == 22 &&
                strcmp(e->d_name, "spill-00000000000000cc") != 0)
                memcpy(own, e->d_name, 23);
        closedir(dd);
    }
    snprintf(p, sizeof p, "%s/%s", d, own);
    cr_assert_eq(stat(p, &st), 0);
    cr_assert(S_ISDIR(st.st_mode));
    /* its shards come with the first store into each */
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(store_seeded(&b, &k, 10, 1), FBK_OK, "%s", fbk_errmsg());
    cr_assert(exists(d, own, &k));
    snprintf(p, sizeof p, "%s/%s.lock", d, own);
    cr_assert_eq(stat(p, &st), 0);
    tu_be_close(&b);
    snprintf(p, sizeof p, "%s/%s", d, own);
    cr_assert_neq(lstat(p, &st), 0, "the store's spill area is left after close");
    snprintf(p, sizeof p, "%s/%s.lock", d, own);
    cr_assert_neq(lstat(p, &st), 0, "the store's lock file is left after close");
    /* released: the next open removes cc */
    close(held);
    b = tu_file_open(d);
    snprintf(p, sizeof p, "%s/spill-00000000000000cc", d);
    cr_assert_neq(lstat(p, &st), 0);
    tu_be_close(&b);
}

Test(file_ops, persist_sync_register_through_hard_links_and_scan_removes_only_its_temporaries)
{
    const char *dir = tu_fresh_dir("persist");
    char d[4096], p[4300];
    snprintf(d, sizeof d, "%s", dir);
    tu_be b = tu_file_open(d);
    void *loc;
    cr_assert_eq(b.ops->open_location(b.self, "locA", &loc), FBK_OK, "%s", fbk_errmsg());
    fbk_key k[20];
    for (int i = 0; i < 20; i++) {
        fbk_key_generate(&k[i]);
        cr_assert_eq(store_seeded(&b, &k[i], 1000 + (size_t)i * 5000, (uint64_t)i), FBK_OK);
        cr_assert_eq(b.ops->persist(b.self, loc, &k[i]), FBK_OK, "%s", fbk_errmsg());
    }
    /* persisting again replaces the entry: still fine */
    cr_assert_eq(b.ops->persist(b.self, loc, &k[0]), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_OK, "%s", fbk_errmsg());
    /* same inode in spill and location */
    char hex[33], a[4300];
    fbk_key_format_hex(&k[1], hex);
    snprintf(a, sizeof a, "%s/%s/%.2s/%s", d, fs_spill_name(d), hex, hex);
    snprintf(p, sizeof p, "%s/locA/%.2s/%s", d, hex, hex);
    struct stat s1, s2;
    cr_assert_eq(stat(a, &s1), 0);
    cr_assert_eq(stat(p, &s2), 0);
    cr_assert_eq(s1.st_ino, s2.st_ino);
    cr_assert_eq(b.ops->remove_persisted(b.self, loc, &k[19]), FBK_OK);
    cr_assert_eq(b.ops->remove_persisted(b.self, loc, &k[19]), FBK_ENOTFOUND);
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_OK, "%s", fbk_errmsg());
    b.ops->close_location(b.self, loc);
    tu_be_close(&b);

    /* junk: a temporary (removed); not libfbk's, so left alone and counted:
     * a bad name, an uppercase key, a directory, a file named like a shard;
     * and a user's file at the root (not looked at) */
    snprintf(p, sizeof p, "%s/locA/%.2s/.tmp-%s-0000000000000001", d, hex, hex);
    write_file(p, "partial");
    snprintf(p, sizeof p, "%s/locA/%.2s/notakey", d, hex);
    write_file(p, "x");
    snprintf(p, sizeof p, "%s/locA/%.2s/%.2sCDEFABCDEFABCDEFABCDEFABCDEFAB", d, hex, hex);
    write_file(p, "x");
    snprintf(p, sizeof p, "%s/locA/%.2s/subdir", d, hex);
    cr_assert_eq(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/locA/%.2s/subdir/inner", d, hex);
    write_file(p, "x");
    snprintf(p, sizeof p, "%s/locA/zz", d);
    write_file(p, "user file, not ours");
    int shard_as_file = 0;
    for (int i = 0; i < 256 && !shard_as_file; i++) {
        snprintf(p, sizeof p, "%s/locA/%02x", d, i);
        struct stat st;
        if (stat(p, &st) != 0) {
            write_file(p, "x");
            shard_as_file = 1;
        }
    }

    b = tu_file_open(d);
    cr_assert_eq(b.ops->open_location(b.self, "locA", &loc), FBK_OK, "%s", fbk_errmsg());
    size_t n = 0;
    int junk = b.ops->scan(b.self, loc, tu_count_key, &n);
    cr_assert_eq(n, 19);
    cr_assert_eq(junk, 1, "junk %d", junk);
    cr_assert_eq(b.ops->scan_foreign(b.self, loc), 3 + (size_t)shard_as_file);
    snprintf(p, sizeof p, "%s/locA/zz", d);
    struct stat st;
    cr_assert_eq(stat(p, &st), 0, "a user's file at the root was removed");
    snprintf(p, sizeof p, "%s/locA/%.2s/subdir/inner", d, hex);
    cr_assert_eq(stat(p, &st), 0, "a directory in a shard was removed");
    snprintf(p, sizeof p, "%s/locA/%.2s/.tmp-%s-0000000000000001", d, hex, hex);
    cr_assert_neq(stat(p, &st), 0, "the temporary is still there");
    n = 0;
    cr_assert_eq(b.ops->scan(b.self, loc, tu_count_key, &n), 0);
    cr_assert_eq(n, 19);
    for (int i = 0; i < 19; i++) {
        cr_assert(!exists(d, fs_spill_name(d), &k[i]));
        cr_assert_eq(b.ops->register_key(b.self, loc, &k[i]), FBK_OK, "%s", fbk_errmsg());
        expect_load(&b, &k[i], 1000 + (size_t)i * 5000, (uint64_t)i);
    }
    cr_assert_eq(b.ops->register_key(b.self, loc, &k[19]), FBK_ENOTFOUND);
    cr_assert(strstr(fbk_errmsg(), "locA") != NULL, "message: %s", fbk_errmsg());
    b.ops->close_location(b.self, loc);
    tu_be_close(&b);
}

static int stop_at_first(const fbk_key *key, void *arg)
{
    (void)key;
    (void)arg;
    return 42;
}

Test(file_ops, scan_stops_when_callback_says_so)
{
    const char *dir = tu_fresh_dir("scanstop");
    tu_be b = tu_file_open(dir);
    void *loc;
    cr_assert_eq(b.ops->open_location(b.self, "l", &loc), FBK_OK);
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(store_seeded(&b, &k, 10, 1), FBK_OK);
    cr_assert_eq(b.ops->persist(b.self, loc, &k), FBK_OK);
    cr_assert_eq(b.ops->scan(b.self, loc, stop_at_first, NULL), 42);
    b.ops->close_location(b.self, loc);
    tu_be_close(&b);
}

Test(file_ops, location_on_another_file_system_is_copied)
{
    const char *dir = tu_fresh_dir("exdev");
    char d[4096], shm[256];
    snprintf(d, sizeof d, "%s", dir);
    snprintf(shm, sizeof shm, "/dev/shm/fbk-test-exdev-%ld", (long)getpid());
    struct stat a, s;
    if (stat("/dev/shm", &s) != 0 || stat(d, &a) != 0 || a.st_dev == s.st_dev)
        cr_skip("no second file system at /dev/shm");
    tu_rmtree(shm);
    tu_be b = tu_file_open(d);
    void *loc;
    cr_assert_eq(b.ops->open_location(b.self, shm, &loc), FBK_OK, "%s", fbk_errmsg());
    fbk_key k[3];
    size_t len[3] = {1, 70000, 3 << 20};
    for (int i = 0; i < 3; i++) {
        fbk_key_generate(&k[i]);
        cr_assert_eq(store_seeded(&b, &k[i], len[i], 7 + (uint64_t)i), FBK_OK);
        cr_assert_eq(b.ops->persist(b.self, loc, &k[i]), FBK_OK, "%s", fbk_errmsg());
        cr_assert(exists(shm, ".", &k[i]));
    }
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_OK, "%s", fbk_errmsg());
    b.ops->close_location(b.self, loc);
    tu_be_close(&b);
    b = tu_file_open(d);
    cr_assert_eq(b.ops->open_location(b.self, shm, &loc), FBK_OK, "%s", fbk_errmsg());
    size_t n = 0;
    cr_assert_eq(b.ops->scan(b.self, loc, tu_count_key, &n), 0);
    cr_assert_eq(n, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(b.ops->register_key(b.self, loc, &k[i]), FBK_OK, "%s", fbk_errmsg());
        expect_load(&b, &k[i], len[i], 7 + (uint64_t)i);
    }
    b.ops->close_location(b.self, loc);
    tu_be_close(&b);
    tu_rmtree(shm);
}

Test(file_ops, location_under_a_file_is_einval_naming_the_path)
{
    const char *dir = tu_fresh_dir("notdir");
    char d[4096], p[4200];
    snprintf(d, sizeof d, "%s", dir);
    snprintf(p, sizeof p, "%s/afile", d);
    write_file(p, "x");
    tu_be b = tu_file_open(d);
    void *loc = NULL;
    cr_assert_eq(b.ops->open_location(b.self, "afile", &loc), FBK_EINVAL);
    cr_assert_null(loc);
    cr_assert(strstr(fbk_errmsg(), "afile") != NULL, "message: %s", fbk_errmsg());
    cr_assert_eq(b.ops->open_location(b.self, "afile/sub", &loc), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "afile") != NULL, "message: %s", fbk_errmsg());
    tu_be_close(&b);
    /* the store directory itself being a file */
    const fbk_backend_ops *ops;
    void *self = NULL;
    cr_assert_eq(fbk_backend_file_create(p, NULL, &ops, &self), FBK_EINVAL);
    cr_assert_null(self);
}

Test(file_ops, unwritable_location_fails_cleanly_and_keeps_the_spill_copy)
{
    struct stat st;
    if (stat("/sys/kernel", &st) != 0 || !S_ISDIR(st.st_mode))
        cr_skip("no /sys/kernel");
    const char *dir = tu_fresh_dir("rofs");
    tu_be b = tu_file_open(dir);
    void *loc;
    /* sysfs refuses mkdir even to root */
    cr_assert_lt(b.ops->open_location(b.self, "/sys/kernel/fbk-test-location", &loc), 0);
    cr_assert(strstr(fbk_errmsg(), "/sys/kernel/fbk-test-location") != NULL, "message: %s",
              fbk_errmsg());
    /* a directory libfbk did not make is not a location (and not touched) */
    cr_assert_eq(b.ops->open_location(b.self, "/sys/kernel", &loc), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "not a libfbk location") != NULL, "message: %s",
              fbk_errmsg());
    /* a location made while writable, on a file system remounted read-only */
    char mnt[4096], where[4200];
    const char *m = tu_tmpfs("rofs-mnt", "4m");
    if (!m) {
        tu_be_close(&b);
        cr_skip("cannot mount a tmpfs");
    }
    snprintf(mnt, sizeof mnt, "%s", m);
    snprintf(where, sizeof where, "%s/loc", mnt);
    cr_assert_eq(b.ops->open_location(b.self, where, &loc), FBK_OK, "%s", fbk_errmsg());
    b.ops->close_location(b.self, loc);
    cr_assert_eq(tu_remount_ro(mnt), 0, "remount ro: %s", strerror(errno));
    cr_assert_eq(b.ops->open_location(b.self, where, &loc), FBK_OK, "%s", fbk_errmsg());
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(store_seeded(&b, &k, 5000, 3), FBK_OK);
    int rc = b.ops->persist(b.self, loc, &k);
    cr_assert_lt(rc, 0);
    cr_assert_neq(rc, FBK_ENOTFOUND);
    cr_assert(strstr(fbk_errmsg(), where) != NULL, "message: %s", fbk_errmsg());
    expect_load(&b, &k, 5000, 3);
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_OK, "%s", fbk_errmsg());
    b.ops->close_location(b.self, loc);
    tu_be_close(&b);
    tu_umount(mnt);
}

/* ---- faults through the system-call table ---- */

static fbk__file_io faulty;
static int fault_errno;
static int fault_after; /* calls that succeed before the failures start */

static ssize_t bad_write(int fd, const void *buf, size_t len)
{
    if (fault_after-- > 0)
        return fbk__file_io_posix.write(fd, buf, len < 4096 ? len : 4096);
    errno = fault_errno;
    return -1;
}

static int bad_sync(int fd)
{
    (void)fd;
    errno = fault_errno;
    return -1;
}

/* plain links (persist, register) fail as across file systems; links with
 * flags set (none are made today) pass through */
static int bad_linkat(int a, const char *b, int c, const char *d, int f)
{
    if (f != 0)
        return fbk__file_io_posix.linkat(a, b, c, d, f);
    errno = EXDEV;
    return -1;
}

static void io_reset(void) { fbk__file_io_set(NULL); }

Test(file_ops, failed_write_is_enospc_and_leaves_no_value, .fini = io_reset)
{
    const char *dir = tu_fresh_dir("enospc");
    tu_be b = tu_file_open(dir);
    faulty = fbk__file_io_posix;
    faulty.write = bad_write;
    fault_errno = ENOSPC;
    fault_after = 3; /* a partial file first */
    fbk__file_io_set(&faulty);
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(store_seeded(&b, &k, 100000, 1), FBK_ENOSPC);
    cr_assert_eq(fbk_last_os_error(), ENOSPC);
    cr_assert(strstr(fbk_errmsg(), "spill") != NULL, "message: %s", fbk_errmsg());
    fbk__file_io_set(NULL);
    check_arg c = {0};
    cr_assert_eq(b.ops->load(b.self, &k, read_check, &c), FBK_ENOTFOUND);
    /* and the spill shard holds no stray file */
    char hex[33], p[4200];
    fbk_key_format_hex(&k, hex);
    snprintf(p, sizeof p, "%s/%s/%.2s", dir, fs_spill_name(dir), hex);
    DIR *dd = opendir(p);
    cr_assert_not_null(dd);
    struct dirent *de;
    int entries = 0;
    while ((de = readdir(dd)) != NULL)
        entries += de->d_name[0] != '.';
    closedir(dd);
    cr_assert_eq(entries, 0);
    tu_be_close(&b);
}

static void sticky_case(const char *name, int nkeys)
{
    const char *dir = tu_fresh_dir(name);
    tu_be b = tu_file_open(dir);
    void *loc;
    cr_assert_eq(b.ops->open_location(b.self, "loc", &loc), FBK_OK);
    for (int i = 0; i < nkeys; i++) {
        fbk_key k;
        fbk_key_generate(&k);
        cr_assert_eq(store_seeded(&b, &k, 100, (uint64_t)i), FBK_OK);
        cr_assert_eq(b.ops->persist(b.self, loc, &k), FBK_OK);
    }
    faulty = fbk__file_io_posix;
    faulty.fsync = bad_sync;
    faulty.fdatasync = bad_sync;
    faulty.syncfs = bad_sync;
    fault_errno = EIO;
    fbk__file_io_set(&faulty);
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_EIO);
    cr_assert_eq(fbk_last_os_error(), EIO);
    fbk__file_io_set(NULL);
    /* a retry with a healthy disk must not report durable */
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_EIO);
    cr_assert(strstr(fbk_errmsg(), "earlier") != NULL, "message: %s", fbk_errmsg());
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(store_seeded(&b, &k, 100, 99), FBK_OK);
    cr_assert_eq(b.ops->persist(b.self, loc, &k), FBK_OK);
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_EIO);
    b.ops->close_location(b.self, loc);
    /* a fresh handle on the location: its first sync makes everything the
     * location holds durable (syncfs), which reports the writeback error
     * again -- the keys it lists may have lost their pages */
    cr_assert_eq(b.ops->open_location(b.self, "loc", &loc), FBK_OK);
    size_t n = 0;
    cr_assert_geq(b.ops->scan(b.self, loc, tu_count_key, &n), 0);
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_EIO);
    b.ops->close_location(b.self, loc);
    tu_be_close(&b);
    /* a fresh store starts clean */
    b = tu_file_open(dir);
    cr_assert_eq(b.ops->open_location(b.self, "loc", &loc), FBK_OK);
    n = 0;
    cr_assert_geq(b.ops->scan(b.self, loc, tu_count_key, &n), 0);
    cr_assert_eq(n, (size_t)nkeys + 1);
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_OK, "%s", fbk_errmsg());
    b.ops->close_location(b.self, loc);
    tu_be_close(&b);
}

Test(file_ops, failed_fsync_is_sticky, .fini = io_reset) { sticky_case("stickyfsync", 2); }

Test(file_ops, failed_syncfs_is_sticky, .fini = io_reset) { sticky_case("stickysyncfs", 100); }

Test(file_ops, exdev_fallback_copies_atomically, .fini = io_reset)
{
    const char *dir = tu_fresh_dir("fakexdev");
    tu_be b = tu_file_open(dir);
    void *loc;
    cr_assert_eq(b.ops->open_location(b.self, "loc", &loc), FBK_OK);
    faulty = fbk__file_io_posix;
    faulty.linkat = bad_linkat;
    fbk__file_io_set(&faulty);
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(store_seeded(&b, &k, 200000, 5), FBK_OK);
    cr_assert_eq(b.ops->persist(b.self, loc, &k), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(b.ops->remove(b.self, &k), FBK_OK);
    cr_assert_eq(b.ops->register_key(b.self, loc, &k), FBK_OK, "%s", fbk_errmsg());
    fbk__file_io_set(NULL);
    expect_load(&b, &k, 200000, 5);
    char hex[33], a[4300], p[4300];
    fbk_key_format_hex(&k, hex);
    snprintf(a, sizeof a, "%s/%s/%.2s/%s", dir, fs_spill_name(dir), hex, hex);
    snprintf(p, sizeof p, "%s/loc/%.2s/%s", dir, hex, hex);
    struct stat s1, s2;
    cr_assert_eq(stat(a, &s1), 0);
    cr_assert_eq(stat(p, &s2), 0);
    cr_assert_neq(s1.st_ino, s2.st_ino, "a copy, not a link");
    b.ops->close_location(b.self, loc);
    tu_be_close(&b);
}

Test(file_ops, copy_failure_leaves_no_value_in_the_location, .fini = io_reset)
{
    const char *dir = tu_fresh_dir("copyfail");
    tu_be b = tu_file_open(dir);
    void *loc;
    cr_assert_eq(b.ops->open_location(b.self, "loc", &loc), FBK_OK);
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(store_seeded(&b, &k, 3 << 20, 5), FBK_OK);
    faulty = fbk__file_io_posix;
    faulty.linkat = bad_linkat;
    faulty.fsync = bad_sync;
    fault_errno = EIO;
    fbk__file_io_set(&faulty);
    cr_assert_eq(b.ops->persist(b.self, loc, &k), FBK_EIO);
    fbk__file_io_set(NULL);
    size_t n = 0;
    cr_assert_eq(b.ops->scan(b.self, loc, tu_count_key, &n), 0, "a temporary was left behind");
    cr_assert_eq(n, 0);
    expect_load(&b, &k, 3 << 20, 5);
    b.ops->close_location(b.self, loc);
    tu_be_close(&b);
}
