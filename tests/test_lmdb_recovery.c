/* test_lmdb_recovery.c -- the lmdb: backend reopens its spill environment
 * after LMDB marked it fatal (MDB_PANIC), in the same open store: what was
 * spilled before loads back byte-exact, new objects spill and load, and the
 * failure was returned as an FBK_E* code.
 *
 * The failure is made in process, without libfiu (so this also runs under
 * the sanitizers): this executable defines pwrite(), which liblmdb's calls
 * bind to, and fails the first write of a meta page (page 0 or 1 of
 * DIR/spill/data.mdb) after the test arms it.  That is the write LMDB marks
 * the environment fatal for.  Everything else goes to the next pwrite
 * (libc's, or a sanitizer's interceptor).  See also
 * tests/test_lmdb_faults.c (spill_environment_recovers_after_lmdb_marks_it_fatal),
 * which sweeps every pwrite of a spill commit with libfiu. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static _Atomic int g_armed;  /* fail the next meta-page write of the spill area */
static _Atomic int g_failed; /* meta-page writes failed so far */
static _Atomic int g_metas;  /* meta-page writes of the spill area seen */

typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
    static _Atomic(pwrite_fn) next;
    pwrite_fn f = atomic_load(&next);
    if (!f) {
        f = (pwrite_fn)dlsym(RTLD_NEXT, "pwrite");
        atomic_store(&next, f);
    }
    long page = sysconf(_SC_PAGESIZE);
    /* a meta page: a short write into page 0 or 1 (LMDB's page size is the
     * OS page size) */
    if (offset < 2 * (off_t)page && count < (size_t)page && tu_fd_path_has(fd, "/spill/data.mdb")) {
        atomic_fetch_add(&g_metas, 1);
        if (atomic_exchange(&g_armed, 0)) {
            atomic_fetch_add(&g_failed, 1);
            errno = EIO;
            return -1;
        }
    }
    return f(fd, buf, count, offset);
}

#define RK 8

static size_t len_of(unsigned i) { return 100 + (i * 7919u) % 30000; }

static _Atomic unsigned g_bg, g_bg_bad;
/* On a worker thread: counts; the tests assert. */
static void on_error(int err, const char *message, void *arg)
{
    (void)arg;
    if (err >= 0 || err < FBK_ECLOSED || !message || !message[0])
        atomic_fetch_add(&g_bg_bad, 1);
    atomic_fetch_add(&g_bg, 1);
}

/* Opens lmdb:<fresh dir> (and resets the counters: under ThreadSanitizer's
 * stand-in runner the tests share one process). */
static fbk_store *open_store(const char *name)
{
    atomic_store(&g_armed, 0);
    atomic_store(&g_failed, 0);
    atomic_store(&g_bg, 0);
    atomic_store(&g_bg_bad, 0);
    char uri[4200];
    snprintf(uri, sizeof uri, "lmdb:%s", tu_fresh_dir(name));
    fbk_store_options opts = {0};
    opts.on_error = on_error;
    fbk_store *s;
    cr_assert_eq(fbk_store_open(&s, uri, &opts), FBK_OK, "open %s: %s", uri, fbk_errmsg());
    return s;
}

static void check(fbk_handle *h, unsigned i)
{
    const void *o;
    int rc = fbk_load(h, &o);
    cr_assert_eq(rc, FBK_OK, "load of object %u after the fault: %s: %s", i, fbk_err_name(rc),
                 fbk_errmsg());
    cr_assert(tu_blob_check(o, len_of(i), 500 + i), "object %u: wrong bytes", i);
    fbk_unload(h);
}

/* Inserts objects [from, to) and writes each at once (one commit each). */
static void spill(fbk_pool *p, fbk_handle **h, unsigned from, unsigned to)
{
    for (unsigned i = from; i < to; i++) {
        cr_assert_eq(fbk_insert(p, tu_blob(len_of(i), 500 + i), &h[i]), FBK_OK);
        cr_assert_eq(fbk_write_now(h[i]), FBK_OK, "write %u: %s", i, fbk_errmsg());
    }
}

/* A pool of 2 in s with objects [0, RK) in h, each written to the spill area. */
static fbk_pool *spilled_pool(fbk_store *s, fbk_handle **h)
{
    fbk_pool *p;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2), FBK_OK);
    spill(p, h, 0, RK);
    cr_assert_eq(fbk_store_drain(s), FBK_OK);
    return p;
}

Test(lmdb_recovery, failed_meta_page_write_is_reported_and_spilled_data_stays_readable,
     .timeout = 120)
{
    fbk_store *s = open_store("meta");
    fbk_handle *h[3 * RK] = {0};
    fbk_pool *p = spilled_pool(s, h);
    cr_assert_gt(atomic_load(&g_metas), 0, "no meta-page write seen: is pwrite interposed?");

    /* the commit of object RK fails at its meta page: LMDB marks the spill
     * environment fatal; the caller gets an FBK_E* code with a message */
    cr_assert_eq(fbk_insert(p, tu_blob(len_of(RK), 500 + RK), &h[RK]), FBK_OK);
    atomic_store(&g_armed, 1);
    int rc = fbk_write_now(h[RK]);
    cr_assert_eq(atomic_load(&g_failed), 1, "the meta-page write was not reached");
    cr_assert_eq(rc, FBK_EIO, "write_now returned %s: %s", fbk_err_name(rc), fbk_errmsg());
    cr_assert(strstr(fbk_errmsg(), "lmdb: spill") != NULL, "message: %s", fbk_errmsg());

    /* same store: what was spilled before loads (before the reopen in
     * place, each of these failed with FBK_EIO: MDB_PANIC) */
    for (unsigned i = 0; i < RK; i++)
        check(h[i], i);
    /* the failed object is written again, and new ones spill and load */
    cr_assert_eq(fbk_write_now(h[RK]), FBK_OK, "write again: %s", fbk_errmsg());
    for (unsigned i = RK + 1; i < 2 * RK; i++)
        cr_assert_eq(fbk_insert(p, tu_blob(len_of(i), 500 + i), &h[i]), FBK_OK);
    cr_assert_eq(fbk_store_drain(s), FBK_OK, "%s", fbk_errmsg());
    for (unsigned i = 0; i < 2 * RK; i++)
        check(h[i], i);
    fbk_store_stats st;
    fbk_store_stats_get(s, &st);
    cr_assert_eq(st.eviction_failures, 0); /* the failure went to the caller */
    cr_assert_eq(atomic_load(&g_bg), 0);

    for (unsigned i = 0; i < 2 * RK; i++)
        fbk_handle_release(h[i]);
    cr_assert_eq(fbk_store_drain(s), FBK_OK);
    fbk_pool_release(p);
    fbk_store_close(s);
}

/* Readers load spilled objects in a loop while an eviction commit fails at
 * its meta page and the environment is reopened under them: no load fails,
 * none returns other bytes, nothing deadlocks (the test's timeout). */
#define READERS 3

typedef struct reader_arg {
    fbk_handle **h;
    _Atomic int *stop;
    unsigned id;
    unsigned long loads, errors, wrong;
} reader_arg;

static void *reader(void *p)
{
    reader_arg *a = p;
    for (unsigned long n = 0; !atomic_load(a->stop) || n < 50; n++) {
        unsigned i = (unsigned)((n * 5 + a->id) % RK);
        const void *o;
        if (fbk_load(a->h[i], &o) != FBK_OK) {
            a->errors++;
            continue;
        }
        if (!tu_blob_check(o, len_of(i), 500 + i))
            a->wrong++;
        fbk_unload(a->h[i]);
        a->loads++;
    }
    return NULL;
}

Test(lmdb_recovery, readers_keep_loading_while_the_spill_environment_is_reopened, .timeout = 120)
{
    fbk_store *s = open_store("readers");
    fbk_handle *h[3 * RK] = {0};
    fbk_pool *p = spilled_pool(s, h);

    _Atomic int stop = 0;
    reader_arg args[READERS];
    pthread_t t[READERS];
    for (int r = 0; r < READERS; r++) {
        args[r] = (reader_arg){h, &stop, (unsigned)r, 0, 0, 0};
        cr_assert_eq(pthread_create(&t[r], NULL, reader, &args[r]), 0);
    }
    /* evictions write these in the background; the first commit fails at
     * its meta page (reported to on_error and by the drain) */
    atomic_store(&g_armed, 1);
    for (unsigned i = RK; i < 2 * RK; i++)
        cr_assert_eq(fbk_insert(p, tu_blob(len_of(i), 500 + i), &h[i]), FBK_OK);
    int drc = fbk_store_drain(s);
    for (unsigned i = 2 * RK; i < 3 * RK; i++)
        cr_assert_eq(fbk_insert(p, tu_blob(len_of(i), 500 + i), &h[i]), FBK_OK);
    int drc2 = fbk_store_drain(s);
    atomic_store(&stop, 1);
    unsigned long loads = 0, errors = 0, wrong = 0;
    for (int r = 0; r < READERS; r++) {
        pthread_join(t[r], NULL);
        loads += args[r].loads;
        errors += args[r].errors;
        wrong += args[r].wrong;
    }
    cr_assert_eq(atomic_load(&g_failed), 1, "the meta-page write was not reached");
    cr_assert(drc < 0 && drc >= FBK_ECLOSED, "drain after the fault returned %d", drc);
    cr_assert_eq(drc2, FBK_OK, "drain after recovery returned %d", drc2);
    cr_assert_geq(atomic_load(&g_bg), 1, "on_error was not called");
    cr_assert_eq(atomic_load(&g_bg_bad), 0, "on_error got a code that is not FBK_E* or no message");
    fbk_store_stats st;
    fbk_store_stats_get(s, &st);
    cr_assert_geq(st.eviction_failures, 1);
    cr_assert_eq(errors, 0, "%lu of %lu loads failed while the environment was reopened", errors,
                 loads + errors);
    cr_assert_eq(wrong, 0, "%lu loads returned wrong bytes", wrong);
    for (unsigned i = 0; i < 3 * RK; i++)
        check(h[i], i);

    for (unsigned i = 0; i < 3 * RK; i++)
        fbk_handle_release(h[i]);
    cr_assert_eq(fbk_store_drain(s), FBK_OK);
    fbk_pool_release(p);
    fbk_store_close(s);
}
