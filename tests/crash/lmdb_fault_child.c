/*
 * lmdb_fault_child.c -- an lmdb: workload under injected system-call
 * failures, for tests/test_lmdb_faults.c.
 *
 *   lmdb_fault_child setup  DIR LOG
 *   lmdb_fault_child fault  DIR LOG POINT N ERRNO MAPSIZE
 *   lmdb_fault_child verify DIR LOG
 *   lmdb_fault_child recover DIR LOG POINT N ERRNO REOPEN_FAILS
 *
 * The store is lmdb:DIR/store; LOG holds a crash_log (crash_shared.h).
 *
 * setup: persists and syncs a few baseline objects into location "base" and
 * records their keys, seeds and lengths in LOG->base.
 *
 * fault: must run with LD_PRELOAD=fiu_posix_preload.so.  Enables the libfiu
 * point POINT (e.g. "posix/io/sync/fdatasync") through an external callback
 * that makes exactly the N-th call fail with errno ERRNO (N = 0: only count
 * the calls), then runs the workload: open the store with map size MAPSIZE
 * (0: default), open "base" and "work", insert objects into a pool of 2
 * memory slots (evictions write the spill area; a tiny map has to grow),
 * drain, persist them to "work", sync, register and load the baseline
 * objects, load the new ones, fbk_save() them all, close.  Records in LOG:
 * calls seen, failures injected, errors returned by the public calls and
 * reported in the background, codes that are not FBK_E* or come without a
 * message, loads that returned wrong bytes, and which objects a successful
 * sync or save acknowledged (LOG->synced).  A failure injected while the
 * store is closing (where nothing can report it) is not counted as fired.
 *
 * verify: without faults, in a fresh process: every baseline object and
 * every acknowledged object registers and loads byte-exact (v_checked,
 * v_lost, v_corrupt); any other key in "work" loads byte-exact or fails with
 * an error, never with wrong bytes (f_wrong_bytes).
 *
 * recover: must run with LD_PRELOAD=fiu_posix_preload.so.  One store, one
 * process, three phases (a pool of 2 memory slots, one worker):
 *   1. spill: RK objects, each written at once (fbk_write_now, one commit
 *      each, so the phase is the same in every run) and then pushed out of
 *      memory by the next inserts (no further write: it is stored);
 *   2. fault: the N-th call of POINT fails with ERRNO (N = 0: count only)
 *      while three more objects are inserted; the third insert evicts the
 *      first of them, i.e. exactly one spill commit of one value, whose last
 *      pwrite is the meta-page write; drain;
 *   3. after, fault off, in the same open store: every object of phases 1
 *      and 2 loads byte-exact, RK new objects are inserted (their evictions
 *      spill), drained and loaded byte-exact.  REOPEN_FAILS = 1: the first
 *      open() of phase 3 fails with EIO (the reopen of the spill
 *      environment, when phase 2 made it fatal), so the first load fails
 *      and the next one reopens again.
 * Records in LOG (crash_shared.h has no fields of its own for this mode):
 *   f_calls, f_fired      calls of POINT in phase 2, failures injected
 *   v_cycle               what fbk_store_drain returned after phase 2
 *   f_bg_errors           on_error calls (any phase); f_bad_codes: errors
 *                         that were not FBK_E* codes with a message
 *   v_objects             fbk_store_stats.eviction_failures at the end
 *   f_api_errors          public calls that failed in phase 3 (the first
 *                         one's code and message in f_first_err/f_first_msg)
 *   v_checked             phase-3 loads that returned the right bytes
 *   v_lost                objects spilled before the fault whose phase-3
 *                         load failed (before the spill environment was
 *                         reopened after MDB_PANIC: all of them, FBK_EIO)
 *   f_wrong_bytes         loads that returned other bytes
 *   v_orphans             open() calls in phase 3 (> 0: the backend reopened
 *                         an environment; nothing else opens files there)
 *
 * Exit 0, or 2 (usage) / 3 (setup or verification could not run; LOG->msg).
 * FBK_FAULT_DEBUG=1 prints the backtrace of the injected failure and every
 * error the workload sees to stderr.
 */
#include "crash_shared.h"

#include <fbk.h>
#include <fiu-control.h>
#include <fiu.h>

#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define NWORK 8

static crash_log *g_log;
static char g_dir[2048];

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_log->msg, sizeof g_log->msg, fmt, ap);
    va_end(ap);
    _exit(3);
}

/* ------------------------------------------------------------- content */

static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static void fill(unsigned char *p, size_t len, uint64_t seed)
{
    uint64_t x = seed;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t z = mix(x++);
        memcpy(p + i, &z, len - i < 8 ? len - i : 8);
    }
}

static int matches(const fbk_blob *b, size_t len, uint64_t seed)
{
    if (b->len != len)
        return 0;
    uint64_t x = seed;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t z = mix(x++);
        if (memcmp(b->data + i, &z, len - i < 8 ? len - i : 8) != 0)
            return 0;
    }
    return 1;
}

static fbk_blob *make(size_t len, uint64_t seed)
{
    fbk_blob *b = fbk_blob_new(NULL, len);
    if (b)
        fill(b->data, len, seed);
    return b;
}

static size_t work_len(unsigned i) { return 1000 + (size_t)(mix(i + 77) % 90000); }

/* ------------------------------------------------------------ the store */

static void store_uri(char *buf, size_t cap) { snprintf(buf, cap, "lmdb:%s/store", g_dir); }

static _Atomic int g_closing;
static _Atomic int g_armed;
static _Atomic unsigned long g_calls, g_fired;
static unsigned long g_nth;

static int fault_cb(const char *name, int *failnum, void **failinfo, unsigned *flags)
{
    (void)name;
    (void)failnum;
    (void)failinfo;
    (void)flags;
    if (!atomic_load(&g_armed))
        return 0;
    unsigned long c = atomic_fetch_add(&g_calls, 1) + 1;
    if (g_nth == 0 || c != g_nth)
        return 0;
    if (!atomic_load(&g_closing))
        atomic_fetch_add(&g_fired, 1);
    if (getenv("FBK_FAULT_DEBUG")) { /* where the failure lands */
        void *bt[32];
        backtrace_symbols_fd(bt, backtrace(bt, 32), 2);
    }
    return 1;
}

static _Atomic unsigned long g_bg, g_bg_bad;

/* Runs on worker threads. */
static void on_error(int err, const char *message, void *arg)
{
    (void)arg;
    atomic_fetch_add(&g_bg, 1);
    if (err >= 0 || err < FBK_ECLOSED || !message || !message[0])
        atomic_fetch_add(&g_bg_bad, 1);
}

/* Accounts one public call's result; returns rc. */
static int note(int rc, const char *what)
{
    if (rc == FBK_OK)
        return rc;
    g_log->f_api_errors++;
    const char *msg = fbk_errmsg();
    if (getenv("FBK_FAULT_DEBUG"))
        fprintf(stderr, "lmdb_fault_child: %s: %s: %s\n", what, fbk_err_name(rc), msg);
    /* fbk_store_drain returns a worker's error without setting this
     * thread's message (reported to the core's owner): counted apart. */
    if (strcmp(what, "drain") == 0 && rc < 0 && rc >= FBK_ECLOSED && !msg[0]) {
        g_log->f_drain_nomsg++;
        return rc;
    }
    if (rc > 0 || rc < FBK_ECLOSED || !msg[0]) {
        if (g_log->f_bad_codes++ == 0)
            snprintf(g_log->msg, sizeof g_log->msg, "%s returned %d (%s) with message \"%s\"", what,
                     rc, fbk_err_name(rc), msg);
    }
    if (g_log->f_first_err == 0) {
        g_log->f_first_err = rc;
        snprintf(g_log->f_first_msg, sizeof g_log->f_first_msg, "%s: %s: %s", what,
                 fbk_err_name(rc), msg);
    }
    return rc;
}

static void acknowledge(const fbk_key *key, uint64_t seed, size_t len)
{
    for (uint32_t i = 0; i < g_log->f_nsynced; i++)
        if (memcmp(g_log->synced[i].key, key->bytes, 16) == 0)
            return;
    if (g_log->f_nsynced >= sizeof g_log->synced / sizeof g_log->synced[0])
        return;
    crash_base *b = &g_log->synced[g_log->f_nsynced++];
    memcpy(b->key, key->bytes, 16);
    b->seed = seed;
    b->len = len;
}

static int commit_called;
static int count_commit(void *arg)
{
    (void)arg;
    commit_called++;
    return 0;
}

/* Loads h and compares; wrong bytes are counted, errors noted. */
static void check_load(fbk_handle *h, size_t len, uint64_t seed, const char *what)
{
    const void *o;
    if (note(fbk_load(h, &o), what) != FBK_OK)
        return;
    if (!matches(o, len, seed))
        g_log->f_wrong_bytes++;
    fbk_unload(h);
}

static void workload(size_t map_size)
{
    char uri[2200];
    store_uri(uri, sizeof uri);
    fbk_store_options opts = {0};
    opts.threads = 2;
    opts.map_size = map_size;
    opts.on_error = on_error;
    fbk_store *s;
    if (note(fbk_store_open(&s, uri, &opts), "store open") != FBK_OK)
        return;
    fbk_location *base = NULL, *work = NULL;
    note(fbk_location_open(s, "base", &base), "open base");
    note(fbk_location_open(s, "work", &work), "open work");
    fbk_pool *p = NULL;
    note(fbk_pool_create(&p, s, &fbk_blob_codec, 2), "pool");
    fbk_handle *h[NWORK + CRASH_MAX_BASE] = {0};
    int persisted[NWORK] = {0};
    size_t n = 0;
    for (unsigned i = 0; p && i < NWORK; i++) {
        fbk_blob *b = make(work_len(i), 1000 + i);
        if (!b)
            break;
        if (note(fbk_insert(p, b, &h[i]), "insert") != FBK_OK) {
            fbk_blob_free(b);
            break;
        }
        n++;
    }
    note(fbk_store_drain(s), "drain");
    if (work) {
        for (size_t i = 0; i < n; i++)
            persisted[i] = note(fbk_persist(h[i], work), "persist") == FBK_OK;
        if (note(fbk_location_sync(work), "sync") == FBK_OK)
            for (size_t i = 0; i < n; i++)
                if (persisted[i]) {
                    fbk_key k;
                    fbk_handle_key(h[i], &k);
                    acknowledge(&k, 1000 + i, work_len((unsigned)i));
                }
    }
    size_t nb = 0;
    for (uint32_t i = 0; base && p && i < g_log->nbase; i++) {
        fbk_key k;
        memcpy(k.bytes, g_log->base[i].key, 16);
        if (note(fbk_register(p, base, &k, &h[n + nb]), "register") != FBK_OK)
            continue;
        check_load(h[n + nb], g_log->base[i].len, g_log->base[i].seed, "load base");
        nb++;
    }
    for (size_t i = 0; i < n; i++)
        check_load(h[i], work_len((unsigned)i), 1000 + i, "load work");
    if (work) {
        commit_called = 0;
        int rc = note(fbk_save(work, h, n + nb, 0, count_commit, NULL), "save");
        if (rc == FBK_OK) {
            for (size_t i = 0; i < n; i++) {
                fbk_key k;
                fbk_handle_key(h[i], &k);
                acknowledge(&k, 1000 + i, work_len((unsigned)i));
            }
        }
    }
    for (size_t i = 0; i < n + nb; i++)
        fbk_handle_release(h[i]);
    note(fbk_store_drain(s), "drain");
    fbk_pool_release(p);
    fbk_location_close(base);
    fbk_location_close(work);
    atomic_store(&g_closing, 1);
    fbk_store_close(s);
}

static int fault(const char *point, unsigned long nth, int err, size_t map_size)
{
    if (fiu_init(0) != 0)
        die("fiu_init failed");
    g_nth = nth;
    if (fiu_enable_external(point, 1, (void *)(intptr_t)err, 0, fault_cb) != 0)
        die("fiu_enable_external(%s) failed", point);
    atomic_store(&g_armed, 1);
    workload(map_size);
    atomic_store(&g_armed, 0);
    fiu_disable(point);
    g_log->f_calls = atomic_load(&g_calls);
    g_log->f_fired = atomic_load(&g_fired);
    g_log->f_bg_errors = atomic_load(&g_bg);
    g_log->f_bad_codes += atomic_load(&g_bg_bad);
    return 0;
}

/* ------------------------------------------------------------- recover */

#define RK 6 /* objects spilled before the fault, and new ones after it */

static _Atomic int g_count_opens;
static _Atomic unsigned long g_opens;
static int g_fail_open; /* fail the first open() of phase 3 */

static int open_cb(const char *name, int *failnum, void **failinfo, unsigned *flags)
{
    (void)name;
    (void)failnum;
    (void)failinfo;
    (void)flags;
    if (!atomic_load(&g_count_opens))
        return 0;
    return atomic_fetch_add(&g_opens, 1) == 0 && g_fail_open;
}

static size_t rec_len(unsigned i) { return 200 + (size_t)(mix(i + 300) % 40000); }

/* Phase 3: loads h and counts the outcome.  before: h was spilled before
 * the fault. */
static void rec_check(fbk_handle *h, unsigned i, int before)
{
    const void *o;
    int rc = note(fbk_load(h, &o), before ? "load (spilled before the fault)" : "load");
    if (rc != FBK_OK) {
        if (before)
            g_log->v_lost++;
        return;
    }
    if (matches(o, rec_len(i), 7000 + i))
        g_log->v_checked++;
    else
        g_log->f_wrong_bytes++;
    fbk_unload(h);
}

static int recover(const char *point, unsigned long nth, int err, int fail_open)
{
    g_fail_open = fail_open;
    if (fiu_init(0) != 0)
        die("fiu_init failed");
    g_nth = nth;
    if (fiu_enable_external(point, 1, (void *)(intptr_t)err, 0, fault_cb) != 0)
        die("fiu_enable_external(%s) failed", point);
    if (strcmp(point, "posix/io/oc/open") != 0 &&
        fiu_enable_external("posix/io/oc/open", 1, (void *)(intptr_t)EIO, 0, open_cb) != 0)
        die("fiu_enable_external(posix/io/oc/open) failed");
    char uri[2200];
    store_uri(uri, sizeof uri);
    fbk_store_options opts = {0};
    opts.threads = 1;
    opts.on_error = on_error;
    fbk_store *s;
    int rc = fbk_store_open(&s, uri, &opts);
    if (rc != FBK_OK)
        die("open %s: %s: %s", uri, fbk_err_name(rc), fbk_errmsg());
    fbk_pool *p;
    rc = fbk_pool_create(&p, s, &fbk_blob_codec, 2);
    if (rc != FBK_OK)
        die("pool: %s", fbk_errmsg());
    fbk_handle *h[3 * RK + 3] = {0};
    unsigned n = 0;

    /* 1: spill RK objects, one commit each */
    for (; n < RK; n++) {
        fbk_blob *b = make(rec_len(n), 7000 + n);
        if (!b || fbk_insert(p, b, &h[n]) != FBK_OK)
            die("phase 1: insert: %s", fbk_errmsg());
        rc = fbk_write_now(h[n]);
        if (rc != FBK_OK)
            die("phase 1: write_now: %s: %s", fbk_err_name(rc), fbk_errmsg());
    }
    rc = fbk_store_drain(s);
    if (rc != FBK_OK)
        die("phase 1: drain: %s", fbk_err_name(rc));

    /* 2: one spill commit with the fault armed */
    atomic_store(&g_armed, 1);
    for (; n < RK + 3; n++) {
        fbk_blob *b = make(rec_len(n), 7000 + n);
        if (!b || fbk_insert(p, b, &h[n]) != FBK_OK)
            die("phase 2: insert: %s", fbk_errmsg());
    }
    g_log->v_cycle = fbk_store_drain(s);
    atomic_store(&g_armed, 0);
    fiu_disable(point);
    g_log->f_calls = atomic_load(&g_calls);
    g_log->f_fired = atomic_load(&g_fired);

    /* 3: fault off, same store */
    atomic_store(&g_count_opens, 1);
    for (unsigned i = 0; i < n; i++)
        rec_check(h[i], i, i < RK); /* RK: its eviction met the fault */
    unsigned first_new = n;
    for (; n < first_new + RK; n++) {
        fbk_blob *b = make(rec_len(n), 7000 + n);
        if (!b)
            die("out of memory");
        if (note(fbk_insert(p, b, &h[n]), "insert after the fault") != FBK_OK) {
            fbk_blob_free(b);
            break;
        }
    }
    note(fbk_store_drain(s), "drain after the fault");
    for (unsigned i = first_new; i < n; i++)
        rec_check(h[i], i, 0);
    note(fbk_store_drain(s), "drain after the fault");
    atomic_store(&g_count_opens, 0);

    fbk_store_stats st;
    fbk_store_stats_get(s, &st);
    g_log->v_objects = st.eviction_failures;
    g_log->v_orphans = atomic_load(&g_opens);
    g_log->f_bg_errors = atomic_load(&g_bg);
    g_log->f_bad_codes += atomic_load(&g_bg_bad);
    if (g_log->v_cycle > 0 || g_log->v_cycle < FBK_ECLOSED)
        g_log->f_bad_codes++;
    for (unsigned i = 0; i < n; i++)
        fbk_handle_release(h[i]);
    fbk_store_drain(s);
    fbk_pool_release(p);
    atomic_store(&g_closing, 1);
    fbk_store_close(s);
    return 0;
}

/* ------------------------------------------------------ setup / verify */

static void open_plain(fbk_store **s, fbk_pool **p)
{
    char uri[2200];
    store_uri(uri, sizeof uri);
    int rc = fbk_store_open(s, uri, NULL);
    if (rc != FBK_OK)
        die("open %s: %s: %s", uri, fbk_err_name(rc), fbk_errmsg());
    rc = fbk_pool_create(p, *s, &fbk_blob_codec, 4);
    if (rc != FBK_OK)
        die("pool: %s", fbk_errmsg());
}

static fbk_location *open_loc(fbk_store *s, const char *name)
{
    fbk_location *loc;
    int rc = fbk_location_open(s, name, &loc);
    if (rc != FBK_OK)
        die("open location %s: %s: %s", name, fbk_err_name(rc), fbk_errmsg());
    return loc;
}

static int setup(void)
{
    fbk_store *s;
    fbk_pool *p;
    open_plain(&s, &p);
    fbk_location *base = open_loc(s, "base");
    g_log->nbase = 6;
    for (uint32_t i = 0; i < g_log->nbase; i++) {
        size_t len = 3000 + (size_t)(mix(i) % 150000);
        fbk_handle *h;
        fbk_blob *b = make(len, 500 + i);
        if (!b || fbk_insert(p, b, &h) != FBK_OK)
            die("insert baseline: %s", fbk_errmsg());
        int rc = fbk_persist(h, base);
        if (rc != FBK_OK)
            die("persist baseline: %s", fbk_errmsg());
        fbk_key k;
        fbk_handle_key(h, &k);
        memcpy(g_log->base[i].key, k.bytes, 16);
        g_log->base[i].seed = 500 + i;
        g_log->base[i].len = len;
        fbk_handle_release(h);
    }
    int rc = fbk_location_sync(base);
    if (rc != FBK_OK)
        die("sync baseline: %s", fbk_errmsg());
    fbk_location_close(base);
    fbk_pool_release(p);
    fbk_store_close(s);
    return 0;
}

/* 1: byte-exact; 0: not registrable (lost); -1: error or wrong bytes. */
static int check_one(fbk_pool *p, fbk_location *loc, const fbk_key *k, size_t len, uint64_t seed)
{
    fbk_handle *h;
    int rc = fbk_register(p, loc, k, &h);
    if (rc == FBK_ENOTFOUND)
        return 0;
    if (rc != FBK_OK) {
        snprintf(g_log->msg, sizeof g_log->msg, "register: %s: %s", fbk_err_name(rc), fbk_errmsg());
        return -1;
    }
    const void *o;
    rc = fbk_load(h, &o);
    int ok = -1;
    if (rc == FBK_OK) {
        ok = matches(o, len, seed) ? 1 : -1;
        if (ok < 0) {
            g_log->f_wrong_bytes++;
            snprintf(g_log->msg, sizeof g_log->msg, "wrong bytes returned as data");
        }
        fbk_unload(h);
    } else {
        snprintf(g_log->msg, sizeof g_log->msg, "load: %s: %s", fbk_err_name(rc), fbk_errmsg());
    }
    fbk_handle_release(h);
    return ok;
}

static void tally(int r)
{
    if (r > 0)
        g_log->v_checked++;
    else if (r == 0)
        g_log->v_lost++;
    else
        g_log->v_corrupt++;
}

static int verify(void)
{
    fbk_store *s;
    fbk_pool *p;
    open_plain(&s, &p);
    fbk_location *base = open_loc(s, "base");
    fbk_location *work = open_loc(s, "work");
    for (uint32_t i = 0; i < g_log->nbase; i++) {
        fbk_key k;
        memcpy(k.bytes, g_log->base[i].key, 16);
        tally(check_one(p, base, &k, g_log->base[i].len, g_log->base[i].seed));
    }
    for (uint32_t i = 0; i < g_log->f_nsynced; i++) {
        fbk_key k;
        memcpy(k.bytes, g_log->synced[i].key, 16);
        tally(check_one(p, work, &k, g_log->synced[i].len, g_log->synced[i].seed));
    }
    /* Keys in "work" nobody acknowledged (persisted, not synced): whatever
     * they hold must not come back as other bytes.  Their seeds are known
     * from their lengths (the workload is deterministic). */
    fbk_key keys[64];
    size_t nk = fbk_location_keys(work, keys, 64);
    for (size_t i = 0; i < nk && i < 64; i++) {
        fbk_handle *h;
        if (fbk_register(p, work, &keys[i], &h) != FBK_OK)
            continue;
        const void *o;
        if (fbk_load(h, &o) == FBK_OK) {
            const fbk_blob *b = o;
            int known = 0;
            for (unsigned w = 0; w < NWORK && !known; w++)
                known = matches(b, work_len(w), 1000 + w);
            for (uint32_t w = 0; w < g_log->nbase && !known; w++)
                known = matches(b, g_log->base[w].len, g_log->base[w].seed);
            if (!known) {
                g_log->f_wrong_bytes++;
                snprintf(g_log->msg, sizeof g_log->msg, "work key %zu: unknown bytes", i);
            }
            fbk_unload(h);
        }
        fbk_handle_release(h);
    }
    fbk_location_close(base);
    fbk_location_close(work);
    fbk_pool_release(p);
    fbk_store_close(s);
    return 0;
}

static void map_log(const char *path)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    void *m = fd >= 0 ? mmap(NULL, sizeof(crash_log), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                      : MAP_FAILED;
    if (fd >= 0)
        close(fd);
    if (m == MAP_FAILED || ((crash_log *)m)->magic != CRASH_LOG_MAGIC) {
        fprintf(stderr, "lmdb_fault_child: cannot map log %s\n", path);
        _exit(2);
    }
    g_log = m;
}

int main(int argc, char **argv)
{
    if (argc >= 4) {
        snprintf(g_dir, sizeof g_dir, "%s", argv[2]);
        map_log(argv[3]);
        if (argc == 4 && strcmp(argv[1], "setup") == 0)
            return setup();
        if (argc == 4 && strcmp(argv[1], "verify") == 0)
            return verify();
        if (argc == 8 && strcmp(argv[1], "fault") == 0)
            return fault(argv[4], strtoul(argv[5], NULL, 10), atoi(argv[6]),
                         (size_t)strtoull(argv[7], NULL, 10));
        if (argc == 8 && strcmp(argv[1], "recover") == 0)
            return recover(argv[4], strtoul(argv[5], NULL, 10), atoi(argv[6]), atoi(argv[7]));
    }
    fprintf(stderr, "usage: lmdb_fault_child setup|verify DIR LOG\n"
                    "       lmdb_fault_child fault DIR LOG POINT N ERRNO MAPSIZE\n"
                    "       lmdb_fault_child recover DIR LOG POINT N ERRNO REOPEN_FAILS\n");
    return 2;
}
