/* test_lmdb_recovery.c -- the lmdb: backend reopens its spill environment
 * after LMDB marked it fatal (MDB_PANIC) and after a failed map growth left
 * it without a map, in the same open store: what was spilled before loads
 * back byte-exact, new objects spill and load, and the failure was returned
 * as an FBK_E* code.
 *
 * The failures are made in process, without libfiu (so this also runs under
 * the sanitizers): this executable defines pwrite() and mmap(), which
 * liblmdb's calls bind to.  pwrite fails the first write of a meta page (page
 * 0 or 1 of DIR/spill-<id>/data.mdb) after the test arms it: the write LMDB marks
 * the environment fatal for.  mmap fails the first mapping of
 * DIR/spill-<id>/data.mdb after the test arms it: the one mdb_env_set_mapsize
 * makes when the map grows, after it unmapped the old map (so LMDB is left
 * without a map).  Everything else goes to the next pwrite/mmap (libc's, or a
 * sanitizer's interceptor).  See also tests/test_lmdb_faults.c
 * (spill_environment_recovers_after_lmdb_marks_it_fatal), which sweeps every
 * pwrite of a spill commit with libfiu. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* 1 if fd is the data file of a spill environment (DIR/spill-<id>/data.mdb). */
static int spill_data(int fd)
{
    return tu_fd_path_has(fd, "/spill-") && tu_fd_path_has(fd, "/data.mdb");
}

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
    if (offset < 2 * (off_t)page && count < (size_t)page && spill_data(fd)) {
        atomic_fetch_add(&g_metas, 1);
        if (atomic_exchange(&g_armed, 0)) {
            atomic_fetch_add(&g_failed, 1);
            errno = EIO;
            return -1;
        }
    }
    return f(fd, buf, count, offset);
}

typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);

static _Atomic int g_map_armed;        /* fail the next mapping of the spill data file */
static _Atomic int g_map_failed;       /* such mappings failed so far */
static _Atomic unsigned g_maps;        /* successful mappings of the spill data file */
static _Atomic size_t g_map_len;       /* length of the last successful one */
static _Atomic size_t g_map_max;       /* the longest successful one */
static _Atomic size_t g_fail_len;      /* length of the failed one */
static _Atomic size_t g_map_after_len; /* the first successful one after the failure */

static _Atomic int g_map_watch; /* look at file mappings (set once a test runs) */

/* A mapping of a file, made once a test runs: fails or counts those of the
 * spill data file. */
static void *watched_mmap(mmap_fn f, void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (!spill_data(fd))
        return f(addr, len, prot, flags, fd, off);
    if (atomic_exchange(&g_map_armed, 0)) {
        atomic_store(&g_fail_len, len);
        atomic_fetch_add(&g_map_failed, 1);
        errno = ENOMEM;
        return MAP_FAILED;
    }
    void *m = f(addr, len, prot, flags, fd, off);
    if (m != MAP_FAILED) {
        atomic_fetch_add(&g_maps, 1);
        atomic_store(&g_map_len, len);
        size_t max = atomic_load(&g_map_max);
        while (len > max && !atomic_compare_exchange_weak(&g_map_max, &max, len))
            ;
        size_t none = 0;
        if (atomic_load(&g_map_failed))
            atomic_compare_exchange_strong(&g_map_after_len, &none, len);
    }
    return m;
}

/* Not instrumented by ThreadSanitizer: its runtime maps memory (anonymous
 * and files) through this function while it initialises, before
 * instrumented code may run.  So until a test sets g_map_watch, everything
 * goes straight to the next mmap. */
__attribute__((no_sanitize("thread"))) void *mmap(void *addr, size_t len, int prot, int flags,
                                                  int fd, off_t off)
{
    static _Atomic(mmap_fn) next;
    mmap_fn f = atomic_load(&next);
    if (!f) {
        f = (mmap_fn)dlsym(RTLD_NEXT, "mmap");
        atomic_store(&next, f);
    }
    if (fd < 0 || !atomic_load(&g_map_watch))
        return f(addr, len, prot, flags, fd, off);
    return watched_mmap(f, addr, len, prot, flags, fd, off);
}

#define RK 8
#define GK 96 /* objects a growth test may write */

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

/* Opens lmdb:<fresh dir> with map_size (0: the default) and resets the
 * counters (under ThreadSanitizer's stand-in runner the tests share one
 * process). */
static fbk_store *open_store(const char *name, size_t map_size)
{
    atomic_store(&g_armed, 0);
    atomic_store(&g_failed, 0);
    atomic_store(&g_map_armed, 0);
    atomic_store(&g_map_failed, 0);
    atomic_store(&g_maps, 0);
    atomic_store(&g_map_len, 0);
    atomic_store(&g_map_max, 0);
    atomic_store(&g_fail_len, 0);
    atomic_store(&g_map_after_len, 0);
    atomic_store(&g_map_watch, 1);
    atomic_store(&g_bg, 0);
    atomic_store(&g_bg_bad, 0);
    char uri[4200];
    snprintf(uri, sizeof uri, "lmdb:%s", tu_fresh_dir(name));
    fbk_store_options opts = {0};
    opts.on_error = on_error;
    opts.map_size = map_size;
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
    fbk_store *s = open_store("meta", 0);
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

/* A small map, so that the spill environment grows every few objects. */
#define SMALL_MAP ((size_t)256 << 10)

Test(lmdb_recovery, failed_map_growth_is_reported_and_spilled_data_stays_readable, .timeout = 120)
{
    fbk_store *s = open_store("grow", SMALL_MAP);
    fbk_handle *h[GK] = {0};
    fbk_pool *p = spilled_pool(s, h);
    cr_assert_gt(atomic_load(&g_maps), 0, "no mapping of spill-<id>/data.mdb seen: is mmap interposed?");

    /* write objects until one needs a growth: the new mapping fails after
     * LMDB unmapped the old one, so no usable map is left; the caller gets
     * an FBK_E* code with a message */
    atomic_store(&g_map_armed, 1);
    unsigned n = RK;
    int rc = FBK_OK;
    while (rc == FBK_OK && n < GK / 2) {
        cr_assert_eq(fbk_insert(p, tu_blob(len_of(n), 500 + n), &h[n]), FBK_OK);
        rc = fbk_write_now(h[n++]);
    }
    unsigned bad = n - 1; /* the object whose write needed the growth */
    cr_assert_eq(atomic_load(&g_map_failed), 1, "no map growth in %u objects", n - RK);
    cr_assert_eq(rc, FBK_ENOSPC, "write_now returned %s: %s", fbk_err_name(rc), fbk_errmsg());
    cr_assert(strstr(fbk_errmsg(), "lmdb: spill: grow map") != NULL, "message: %s", fbk_errmsg());
    size_t worked = atomic_load(&g_map_len); /* the last map that worked */
    cr_assert_gt(atomic_load(&g_fail_len), worked);

    /* drop the object that failed (it was never spilled), so that no
     * eviction writes it: the loads below are the next spill operations */
    fbk_handle_release(h[bad]);
    cr_assert_eq(atomic_load(&g_map_after_len), 0, "the spill data file was mapped again early");
    /* same store: what was spilled before loads byte-exact (before the
     * reopen in place, each of these failed: no map); the first load reopens
     * the environment at the last map size that worked */
    check(h[0], 0);
    cr_assert_eq(atomic_load(&g_map_after_len), worked,
                 "first mapping after the failure: %zu bytes, the last one that worked: %zu",
                 atomic_load(&g_map_after_len), worked);
    for (unsigned i = 1; i < bad; i++)
        check(h[i], i);
    /* the failed object is inserted and written again and new ones spill:
     * the map grows beyond the size that failed, and everything loads */
    cr_assert_eq(fbk_insert(p, tu_blob(len_of(bad), 500 + bad), &h[bad]), FBK_OK);
    cr_assert_eq(fbk_write_now(h[bad]), FBK_OK, "write again: %s", fbk_errmsg());
    for (unsigned more = n + RK;
         n < GK && (n < more || atomic_load(&g_map_max) < atomic_load(&g_fail_len)); n++) {
        cr_assert_eq(fbk_insert(p, tu_blob(len_of(n), 500 + n), &h[n]), FBK_OK);
        cr_assert_eq(fbk_write_now(h[n]), FBK_OK, "write %u: %s", n, fbk_errmsg());
    }
    cr_assert_geq(atomic_load(&g_map_max), atomic_load(&g_fail_len),
                  "the map never grew to the size that failed (%zu < %zu) in %u objects",
                  atomic_load(&g_map_max), atomic_load(&g_fail_len), n);
    cr_assert_eq(atomic_load(&g_map_failed), 1);
    fprintf(stderr,
            "test_lmdb_recovery: growth of the spill map failed at object %u (%zu -> %zu bytes); "
            "reopened at %zu bytes, grew to %zu bytes by object %u\n",
            bad, worked, atomic_load(&g_fail_len), atomic_load(&g_map_after_len),
            atomic_load(&g_map_max), n - 1);
    cr_assert_eq(fbk_store_drain(s), FBK_OK, "%s", fbk_errmsg());
    for (unsigned i = 0; i < n; i++)
        check(h[i], i);
    fbk_store_stats st;
    fbk_store_stats_get(s, &st);
    cr_assert_eq(st.eviction_failures, 0); /* the failure went to the caller */
    cr_assert_eq(atomic_load(&g_bg), 0);

    for (unsigned i = 0; i < n; i++)
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

typedef struct readers {
    _Atomic int stop;
    reader_arg args[READERS];
    pthread_t t[READERS];
} readers;

static void readers_start(readers *rs, fbk_handle **h)
{
    atomic_init(&rs->stop, 0);
    for (int r = 0; r < READERS; r++) {
        rs->args[r] = (reader_arg){h, &rs->stop, (unsigned)r, 0, 0, 0};
        cr_assert_eq(pthread_create(&rs->t[r], NULL, reader, &rs->args[r]), 0);
    }
}

static void readers_stop(readers *rs)
{
    atomic_store(&rs->stop, 1);
    for (int r = 0; r < READERS; r++)
        pthread_join(rs->t[r], NULL);
}

/* After a background fault and its recovery with readers running: the first
 * drain reported the failure (an FBK_E* code, also to on_error), the second
 * found none, and no reader's load failed or returned other bytes. */
static void expect_reported_then_recovered(int drc, int drc2, const readers *rs)
{
    cr_assert(drc < 0 && drc >= FBK_ECLOSED, "drain after the fault returned %d", drc);
    cr_assert_eq(drc2, FBK_OK, "drain after recovery returned %d", drc2);
    cr_assert_geq(atomic_load(&g_bg), 1, "on_error was not called");
    cr_assert_eq(atomic_load(&g_bg_bad), 0, "on_error got a code that is not FBK_E* or no message");
    unsigned long loads = 0, errors = 0, wrong = 0;
    for (int r = 0; r < READERS; r++) {
        loads += rs->args[r].loads;
        errors += rs->args[r].errors;
        wrong += rs->args[r].wrong;
    }
    cr_assert_eq(errors, 0, "%lu of %lu loads failed during the recovery", errors, loads + errors);
    cr_assert_eq(wrong, 0, "%lu loads returned wrong bytes", wrong);
}

Test(lmdb_recovery, readers_keep_loading_while_the_spill_environment_is_reopened, .timeout = 120)
{
    fbk_store *s = open_store("readers", 0);
    fbk_handle *h[3 * RK] = {0};
    fbk_pool *p = spilled_pool(s, h);

    readers rs;
    readers_start(&rs, h);
    /* evictions write these in the background; the first commit fails at
     * its meta page (reported to on_error and by the drain) */
    atomic_store(&g_armed, 1);
    for (unsigned i = RK; i < 2 * RK; i++)
        cr_assert_eq(fbk_insert(p, tu_blob(len_of(i), 500 + i), &h[i]), FBK_OK);
    int drc = fbk_store_drain(s);
    for (unsigned i = 2 * RK; i < 3 * RK; i++)
        cr_assert_eq(fbk_insert(p, tu_blob(len_of(i), 500 + i), &h[i]), FBK_OK);
    int drc2 = fbk_store_drain(s);
    readers_stop(&rs);
    cr_assert_eq(atomic_load(&g_failed), 1, "the meta-page write was not reached");
    expect_reported_then_recovered(drc, drc2, &rs);
    fbk_store_stats st;
    fbk_store_stats_get(s, &st);
    cr_assert_geq(st.eviction_failures, 1);
    for (unsigned i = 0; i < 3 * RK; i++)
        check(h[i], i);

    for (unsigned i = 0; i < 3 * RK; i++)
        fbk_handle_release(h[i]);
    cr_assert_eq(fbk_store_drain(s), FBK_OK);
    fbk_pool_release(p);
    fbk_store_close(s);
}

/* Readers load spilled objects in a loop while an eviction write needs a map
 * growth that fails and leaves the spill environment without a map: the
 * next operation (a reader's load or a writer) reopens it; no load fails,
 * none returns other bytes, nothing deadlocks (the test's timeout). */
Test(lmdb_recovery, readers_keep_loading_while_a_failed_growth_is_recovered, .timeout = 120)
{
    fbk_store *s = open_store("grow_readers", SMALL_MAP);
    fbk_handle *h[GK] = {0};
    fbk_pool *p = spilled_pool(s, h);

    readers rs;
    readers_start(&rs, h);
    /* evictions write these in the background until one needs a growth,
     * which fails (reported to on_error and by the drain) */
    atomic_store(&g_map_armed, 1);
    unsigned n = RK;
    int drc = FBK_OK;
    while (drc == FBK_OK && n < GK / 2) {
        cr_assert_eq(fbk_insert(p, tu_blob(len_of(n), 500 + n), &h[n]), FBK_OK);
        n++;
        drc = fbk_store_drain(s);
    }
    int failed = atomic_load(&g_map_failed);
    for (unsigned more = n + RK; n < more; n++)
        cr_assert_eq(fbk_insert(p, tu_blob(len_of(n), 500 + n), &h[n]), FBK_OK);
    int drc2 = fbk_store_drain(s);
    readers_stop(&rs);
    cr_assert_eq(failed, 1, "no map growth in %u objects", n - 2 * RK);
    expect_reported_then_recovered(drc, drc2, &rs);
    cr_assert_eq(atomic_load(&g_map_failed), 1);
    cr_assert_gt(atomic_load(&g_map_after_len), 0, "the spill data file was not mapped again");
    cr_assert_lt(atomic_load(&g_map_after_len), atomic_load(&g_fail_len));
    for (unsigned i = 0; i < n; i++)
        check(h[i], i);

    for (unsigned i = 0; i < n; i++)
        fbk_handle_release(h[i]);
    cr_assert_eq(fbk_store_drain(s), FBK_OK);
    fbk_pool_release(p);
    fbk_store_close(s);
}
