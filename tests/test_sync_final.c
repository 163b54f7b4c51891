/* test_sync_final.c -- a failed sync is final: after fsync/fdatasync/syncfs
 * failed, fbk_location_sync reports the error and keeps reporting it after
 * the fault is gone (the kernel may have dropped the dirty pages, so a retry
 * that "succeeds" proves nothing), and fbk_save fails without calling the
 * user's commit.  Through the public API, for both durable backends.
 *
 * lmdb: the failing flush is injected by interposing fdatasync()/fsync() in
 * this executable (liblmdb's calls bind to them); only calls on the durable
 * environment's data.mdb fail, with EIO, while `g_fail_lmdb` is set.
 * file: the backend's system-call table (backends/file/file_io.h) gets a
 * failing fsync/syncfs. */
#include "../backends/file/file_io.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------- lmdb: interposed flushes */

static atomic_int g_fail_lmdb;
static atomic_ulong g_lmdb_injected;
static int (*real_fdatasync)(int);
static int (*real_fsync)(int);

__attribute__((constructor)) static void resolve_real(void)
{
    real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
}

static int flush_fault(int fd)
{
    if (!atomic_load(&g_fail_lmdb) || !tu_fd_path_has(fd, "/durable/data.mdb"))
        return 0;
    atomic_fetch_add(&g_lmdb_injected, 1);
    errno = EIO;
    return 1;
}

int fdatasync(int fd)
{
    if (flush_fault(fd))
        return -1;
    return real_fdatasync(fd);
}

int fsync(int fd)
{
    if (flush_fault(fd))
        return -1;
    return real_fsync(fd);
}

/* ------------------------------------------------ file: the I/O table */

static atomic_int g_fail_file;
static atomic_ulong g_file_injected;
static fbk__file_io g_io;

static int failing_fsync(int fd)
{
    if (atomic_load(&g_fail_file)) {
        atomic_fetch_add(&g_file_injected, 1);
        errno = EIO;
        return -1;
    }
    return fbk__file_io_posix.fsync(fd);
}

static int failing_syncfs(int fd)
{
    if (atomic_load(&g_fail_file)) {
        atomic_fetch_add(&g_file_injected, 1);
        errno = EIO;
        return -1;
    }
    return fbk__file_io_posix.syncfs(fd);
}

static void io_install(void)
{
    g_io = fbk__file_io_posix;
    g_io.fsync = failing_fsync;
    g_io.syncfs = failing_syncfs;
    fbk__file_io_set(&g_io);
}

static void io_restore(void) { fbk__file_io_set(NULL); }

/* ------------------------------------------------------------- fixture */

typedef struct fx {
    int file; /* 1: file:, 0: lmdb: */
    char dir[4096];
    char locname[4200];
    fbk_store *s;
    fbk_pool *p;
    fbk_location *loc;
} fx;

static void arm(fx *f, int on)
{
    if (f->file)
        atomic_store(&g_fail_file, on);
    else
        atomic_store(&g_fail_lmdb, on);
}

static unsigned long injected(fx *f)
{
    return f->file ? atomic_load(&g_file_injected) : atomic_load(&g_lmdb_injected);
}

static void fx_store_open(fx *f)
{
    char uri[4200];
    snprintf(uri, sizeof uri, "%s:%s/store", f->file ? "file" : "lmdb", f->dir);
    int rc = fbk_store_open(&f->s, uri, NULL);
    cr_assert_eq(rc, FBK_OK, "open %s: %s", uri, fbk_errmsg());
    rc = fbk_pool_create(&f->p, f->s, &fbk_blob_codec, 4);
    cr_assert_eq(rc, FBK_OK);
    rc = fbk_location_open(f->s, f->locname, &f->loc);
    cr_assert_eq(rc, FBK_OK, "open location %s: %s", f->locname, fbk_errmsg());
}

static void fx_open(fx *f, int file, const char *name)
{
    memset(f, 0, sizeof *f);
    f->file = file;
    snprintf(f->dir, sizeof f->dir, "%s", tu_fresh_dir(name));
    if (file)
        snprintf(f->locname, sizeof f->locname, "%s/loc", f->dir);
    else
        snprintf(f->locname, sizeof f->locname, "results");
    atomic_store(&g_fail_file, 0);
    atomic_store(&g_fail_lmdb, 0);
    if (file)
        io_install();
    fx_store_open(f);
}

static void fx_store_close(fx *f)
{
    fbk_location_close(f->loc);
    fbk_pool_release(f->p);
    fbk_store_close(f->s);
    f->loc = NULL;
    f->p = NULL;
    f->s = NULL;
}

static void fx_close(fx *f)
{
    arm(f, 0);
    fx_store_close(f);
    if (f->file)
        io_restore();
}

static fbk_handle *insert(fx *f, size_t len, uint64_t seed)
{
    fbk_handle *h;
    int rc = fbk_insert(f->p, tu_blob(len, seed), &h);
    cr_assert_eq(rc, FBK_OK);
    return h;
}

static fbk_handle *persisted(fx *f, size_t len, uint64_t seed)
{
    fbk_handle *h = insert(f, len, seed);
    int rc = fbk_persist(h, f->loc);
    cr_assert_eq(rc, FBK_OK, "persist: %s", fbk_errmsg());
    return h;
}

static int commits;
static int count_commit(void *arg)
{
    (void)arg;
    commits++;
    return 0;
}

/* The failed sync's code and message; later calls must keep failing. */
static int sync_fails(fx *f, const char *when)
{
    unsigned long before = injected(f);
    arm(f, 1);
    int rc = fbk_location_sync(f->loc);
    arm(f, 0);
    cr_assert_gt(injected(f), before, "%s: no flush was made to fail (injection not reached)",
                 when);
    cr_assert_lt(rc, 0, "%s: fbk_location_sync returned %d although the flush failed", when, rc);
    cr_assert_geq(rc, FBK_ECLOSED, "%s: %d is not an FBK_E* code", when, rc);
    cr_assert_neq(fbk_errmsg()[0], '\0', "%s: no message", when);
    return rc;
}

static void later_syncs_fail(fx *f, int rc, const char *when)
{
    for (int i = 0; i < 3; i++) {
        int again = fbk_location_sync(f->loc);
        cr_assert_eq(again, rc, "%s: retry %d of sync returned %s after a failed sync", when, i,
                     fbk_err_name(again));
        cr_assert_neq(fbk_errmsg()[0], '\0');
    }
}

/* Saves never commit once a sync failed, whatever the keys. */
static void saves_do_not_commit(fx *f, fbk_handle **hs, size_t n, const char *when)
{
    commits = 0;
    int rc = fbk_save(f->loc, hs, n, 0, count_commit, NULL);
    cr_assert_lt(rc, 0, "%s: fbk_save returned %d after a failed sync", when, rc);
    cr_assert_eq(commits, 0, "%s: fbk_save called commit after a failed sync", when);
    fbk_handle *fresh = insert(f, 777, 4242);
    rc = fbk_save(f->loc, &fresh, 1, 0, count_commit, NULL);
    cr_assert_lt(rc, 0, "%s: fbk_save of a new key returned %d after a failed sync", when, rc);
    cr_assert_eq(commits, 0, "%s: fbk_save of a new key called commit", when);
    fbk_handle_release(fresh);
}

/* After a restart, what was synced before the failure is intact. */
static void synced_data_intact(fx *f, fbk_key *keys, size_t *lens, uint64_t *seeds, size_t n)
{
    fx_store_close(f);
    fx_store_open(f);
    for (size_t i = 0; i < n; i++) {
        fbk_handle *h;
        int rc = fbk_register(f->p, f->loc, &keys[i], &h);
        cr_assert_eq(rc, FBK_OK, "synced object %zu: register: %s", i, fbk_errmsg());
        const void *o;
        rc = fbk_load(h, &o);
        cr_assert_eq(rc, FBK_OK, "synced object %zu: load: %s", i, fbk_errmsg());
        cr_assert(tu_blob_check(o, lens[i], seeds[i]), "synced object %zu: wrong bytes", i);
        fbk_unload(h);
        fbk_handle_release(h);
    }
    cr_assert_eq(fbk_location_sync(f->loc), FBK_OK, "a new store starts with a clean slate: %s",
                 fbk_errmsg());
}

/* persist + sync; then persist more, the sync fails; every later sync and
 * save fails too; a restart finds the first batch intact.  nmore objects are
 * persisted before the failing sync (file: more than 4 take the syncfs path). */
static void failed_sync_is_final(int file, const char *name, size_t nmore)
{
    fx f;
    fx_open(&f, file, name);
    fbk_key keys[2];
    size_t lens[2] = {1000, 70000};
    uint64_t seeds[2] = {1, 2};
    fbk_handle *hs[2 + 16];
    for (size_t i = 0; i < 2; i++) {
        hs[i] = persisted(&f, lens[i], seeds[i]);
        fbk_handle_key(hs[i], &keys[i]);
    }
    cr_assert_eq(fbk_location_sync(f.loc), FBK_OK, "%s", fbk_errmsg());
    for (size_t i = 0; i < nmore; i++)
        hs[2 + i] = persisted(&f, 5000 + i, 100 + i);

    int rc = sync_fails(&f, name);
    later_syncs_fail(&f, rc, name);
    saves_do_not_commit(&f, hs, 2 + nmore, name);
    later_syncs_fail(&f, rc, name);

    for (size_t i = 0; i < 2 + nmore; i++)
        fbk_handle_release(hs[i]);
    synced_data_intact(&f, keys, lens, seeds, 2);
    fx_close(&f);
}

Test(sync_final, lmdb_failed_sync_is_reported_and_every_later_sync_and_save_fails)
{
    failed_sync_is_final(0, "lmdb_sync", 3);
}

Test(sync_final, file_failed_fsync_is_reported_and_every_later_sync_and_save_fails)
{
    failed_sync_is_final(1, "file_fsync", 1);
}

Test(sync_final, file_failed_syncfs_is_reported_and_every_later_sync_and_save_fails)
{
    failed_sync_is_final(1, "file_syncfs", 8);
}

Test(sync_final, lmdb_failed_commit_flush_makes_later_syncs_fail)
{
    /* Each durable commit fdatasyncs its pages (and with them the previous
     * commit's meta page, which MDB_NOMETASYNC left unsynced): when that
     * flush fails, the persist fails and no later sync may succeed. */
    fx f;
    fx_open(&f, 0, "lmdb_commit");
    fbk_handle *a = persisted(&f, 3000, 7);
    fbk_handle *b = insert(&f, 4000, 8);
    unsigned long before = injected(&f);
    arm(&f, 1);
    int rc = fbk_persist(b, f.loc);
    arm(&f, 0);
    cr_assert_gt(injected(&f), before, "the commit made no flush");
    cr_assert_lt(rc, 0, "persist returned %d although its commit's flush failed", rc);
    cr_assert_neq(fbk_errmsg()[0], '\0');
    int s1 = fbk_location_sync(f.loc);
    cr_assert_lt(s1, 0, "sync succeeded after a failed commit flush");
    later_syncs_fail(&f, s1, "after a failed commit");
    fbk_handle *hs[2] = {a, b};
    saves_do_not_commit(&f, hs, 2, "after a failed commit");
    fbk_handle_release(a);
    fbk_handle_release(b);
    fx_close(&f);
}

/* The same location opened again in the same store (the header's advice:
 * "reopen the location to find out what it holds") must not make the keys
 * persisted before the failure durable by a sync that touches nothing. */
static void reopen_does_not_launder(int file, const char *name)
{
    fx f;
    fx_open(&f, file, name);
    fbk_handle *a = persisted(&f, 3000, 9);
    int rc = sync_fails(&f, name);
    (void)rc;
    fbk_location_close(f.loc);
    f.loc = NULL;
    rc = fbk_location_open(f.s, f.locname, &f.loc);
    cr_assert_eq(rc, FBK_OK, "%s", fbk_errmsg());
    fbk_key k;
    fbk_handle_key(a, &k);
    cr_assert(fbk_location_contains(f.loc, &k));
    commits = 0;
    rc = fbk_save(f.loc, &a, 1, 0, count_commit, NULL);
    cr_assert(rc < 0 && commits == 0,
              "%s: after a failed sync, a reopened location acknowledged (fbk_save -> %s, commit "
              "called %d times) a key whose data the failed flush may have dropped",
              name, fbk_err_name(rc), commits);
    fbk_handle_release(a);
    fx_close(&f);
}

Test(sync_final, lmdb_reopened_location_does_not_acknowledge_keys_of_a_failed_sync)
{
    reopen_does_not_launder(0, "lmdb_reopen");
}

/* A reopened file: location must not launder a failed sync: its first sync
 * covers what the scan found (one syncfs), which reports the earlier
 * writeback error again. */
Test(sync_final, file_reopened_location_does_not_acknowledge_keys_of_a_failed_sync)
{
    reopen_does_not_launder(1, "file_reopen");
}

/* ---- a key persisted through one fbk_location, saved through another ---- */

static atomic_ulong g_file_flushes; /* fsync of a regular file, or syncfs */

static int counting_fsync(int fd)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        atomic_fetch_add(&g_file_flushes, 1);
    return failing_fsync(fd);
}

static int counting_syncfs(int fd)
{
    atomic_fetch_add(&g_file_flushes, 1);
    return failing_syncfs(fd);
}

/* fbk_save() promises that every handle is durable in loc when commit runs.
 * A key persisted (not synced) through an earlier fbk_location of the same
 * directory is skipped by the save ("already there"), so the save's sync
 * must still cover its data: a file: location's data is the spill file's
 * inode, written without fsync. */
Test(sync_final, file_save_on_reopened_location_flushes_keys_persisted_earlier)
{
    fx f;
    fx_open(&f, 1, "file_resave");
    g_io.fsync = counting_fsync;
    g_io.syncfs = counting_syncfs;
    fbk_handle *a = persisted(&f, 3000, 11);
    fbk_location_close(f.loc); /* e.g. the program stopped here and resumed */
    int rc = fbk_location_open(f.s, f.locname, &f.loc);
    cr_assert_eq(rc, FBK_OK, "%s", fbk_errmsg());
    atomic_store(&g_file_flushes, 0);
    commits = 0;
    rc = fbk_save(f.loc, &a, 1, 0, count_commit, NULL);
    cr_assert_eq(rc, FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(commits, 1);
    cr_assert_gt(atomic_load(&g_file_flushes), 0,
                 "fbk_save committed a key whose data no fsync/syncfs ever covered");
    fbk_handle_release(a);
    fx_close(&f);
}
