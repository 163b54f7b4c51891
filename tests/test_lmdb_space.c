/* test_lmdb_space.c -- the lmdb: backend on a full file system, and the
 * durable environment after LMDB marked it fatal.
 *
 * Full disk: each test mounts its own 8 MiB tmpfs on a mkdtemp directory
 * (we are root in CI; the test skips when mount(2) fails) and fills it with a
 * filler file.  The part that used to die of SIGBUS runs in a forked child,
 * which reports each failed check on stderr and by its exit status; the
 * parent asserts that it exited 0.
 *
 * Fatal durable environment: this executable defines pwrite(), which
 * liblmdb's calls bind to; while armed, the first write of a meta page (page
 * 0 or 1) of DIR/durable/data.mdb fails with EIO -- the write LMDB marks the
 * environment fatal for (MDB_PANIC on every later transaction). */
#include "testutil.h"

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* --------------------------------------------------- interposed pwrite */

static _Atomic int g_armed;  /* fail the next durable meta-page write */
static _Atomic int g_failed; /* such writes failed */

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
    if (atomic_load(&g_armed) && offset < 2 * (off_t)page && count < (size_t)page &&
        tu_fd_path_has(fd, "/durable/data.mdb") && atomic_exchange(&g_armed, 0)) {
        atomic_fetch_add(&g_failed, 1);
        errno = EIO;
        return -1;
    }
    return f(fd, buf, count, offset);
}

/* ------------------------------------------------------------- helpers */

typedef struct {
    const fbk_backend_ops *ops;
    void *self;
} backend;

static int store_seed(backend *b, const fbk_key *k, size_t len, uint64_t seed)
{
    tu_bytes want = {len, seed, 0};
    return b->ops->store(b->self, k, len, tu_fill_bytes, &want);
}

static int load_seed(backend *b, const fbk_key *k, size_t len, uint64_t seed)
{
    tu_bytes want = {len, seed, 0};
    return b->ops->load(b->self, k, tu_check_bytes, &want);
}

/* A store of a new value then its persist into loc. */
static int put(backend *b, void *loc, fbk_key *k, size_t len, uint64_t seed)
{
    fbk_key_generate(k);
    int rc = store_seed(b, k, len, seed);
    return rc ? rc : b->ops->persist(b->self, loc, k);
}

/* register from loc + load, byte-exact */
static int back(backend *b, void *loc, const fbk_key *k, size_t len, uint64_t seed)
{
    int rc = b->ops->register_key(b->self, loc, k);
    return rc ? rc : load_seed(b, k, len, seed);
}

/* In a forked child: report a failed check and exit with a status naming
 * its line. */
#define CHILD_CHECK(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "child, line %d: ", __LINE__);                                         \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            _exit(2);                                                                              \
        }                                                                                          \
    } while (0)

/* Runs fn(arg) in a child; 1 if it exited 0, else 0 with the reason in
 * g_why (a signal, e.g. SIGBUS, or a failed CHILD_CHECK).  The caller
 * unmounts its tmpfs before it asserts. */
static char g_why[256];

static int in_child(const char *what, void (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        fn(arg);
        _exit(0);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    if (WIFSIGNALED(st))
        snprintf(g_why, sizeof g_why, "%s: the child died of signal %d (%s)", what, WTERMSIG(st),
                 strsignal(WTERMSIG(st)));
    else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        snprintf(g_why, sizeof g_why, "%s: the child failed a check (status %d, see its stderr)",
                 what, WEXITSTATUS(st));
    else
        return 1;
    return 0;
}

/* ---------------------------------------------------- a small tmpfs */

typedef struct {
    char dir[64];    /* the mount point */
    char filler[96]; /* the file that fills it */
    char store[96];  /* DIR of the lmdb: store on it */
} tmpfs;

static void tmpfs_mount(tmpfs *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/fbk-space-XXXXXX");
    cr_assert_not_null(mkdtemp(t->dir), "mkdtemp: %s", strerror(errno));
    if (mount("tmpfs", t->dir, "tmpfs", 0, "size=8m") != 0) {
        int e = errno;
        rmdir(t->dir);
        fprintf(stderr, "cannot mount a tmpfs on %s (%s): needs root\n", t->dir, strerror(e));
        cr_skip("cannot mount a tmpfs: needs root");
    }
    snprintf(t->filler, sizeof t->filler, "%s/filler", t->dir);
    snprintf(t->store, sizeof t->store, "%s/store", t->dir);
}

static void tmpfs_umount(tmpfs *t)
{
    umount2(t->dir, MNT_DETACH);
    rmdir(t->dir);
}

/* Fills the file system, then gives `leave` bytes back. */
static void fill(const tmpfs *t, off_t leave)
{
    int fd = open(t->filler, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0, "%s: %s", t->filler, strerror(errno));
    static char buf[4096];
    for (size_t chunk = sizeof buf; chunk > 0; chunk /= 2)
        while (write(fd, buf, chunk) == (ssize_t)chunk)
            ;
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    if (leave > 0)
        cr_assert_eq(ftruncate(fd, st.st_size > leave ? st.st_size - leave : 0), 0);
    close(fd);
}

static void unfill(const tmpfs *t) { cr_assert_eq(unlink(t->filler), 0, "%s", strerror(errno)); }

/* Runs fn in a child; on failure unmounts t, then fails the test. */
static void child_ok(tmpfs *t, const char *what, void (*fn)(void *))
{
    if (in_child(what, fn, t))
        return;
    tmpfs_umount(t);
    cr_assert(0, "%s", g_why);
}

static fbk_store_options small_map(size_t bytes)
{
    fbk_store_options o;
    memset(&o, 0, sizeof o);
    o.map_size = bytes;
    return o;
}

/* -------------------------------------- 5: opening on a full file system */

static void open_full(void *p)
{
    const tmpfs *t = p;
    fbk_store_options o = small_map(1 << 20);
    backend b;
    int rc = fbk_backend_lmdb_create(t->store, &o, &b.ops, &b.self);
    CHILD_CHECK(rc == FBK_ENOSPC, "open on a full file system: %s (%s), want FBK_ENOSPC",
                fbk_err_name(rc), fbk_errmsg());
    CHILD_CHECK(strstr(fbk_errmsg(), t->store) != NULL, "the message does not name %s: %s",
                t->store, fbk_errmsg());
}

static void open_ok(void *p)
{
    const tmpfs *t = p;
    fbk_store_options o = small_map(1 << 20);
    backend b;
    int rc = fbk_backend_lmdb_create(t->store, &o, &b.ops, &b.self);
    CHILD_CHECK(rc == FBK_OK, "open after space was freed: %s", fbk_errmsg());
    void *loc;
    fbk_key k;
    CHILD_CHECK(b.ops->open_location(b.self, "a", &loc) == FBK_OK, "%s", fbk_errmsg());
    CHILD_CHECK(put(&b, loc, &k, 5000, 1) == FBK_OK, "%s", fbk_errmsg());
    CHILD_CHECK(b.ops->sync(b.self, loc) == FBK_OK, "%s", fbk_errmsg());
    CHILD_CHECK(back(&b, loc, &k, 5000, 1) == FBK_OK, "%s", fbk_errmsg());
    b.ops->close_location(b.self, loc);
    b.ops->close(b.self);
}

Test(lmdb_space, opening_a_store_on_a_full_file_system_is_enospc_not_sigbus, .timeout = 60)
{
    tmpfs t;
    tmpfs_mount(&t);
    fill(&t, 0);
    child_ok(&t, "open on a full tmpfs", open_full);
    /* room for the spill environment but not for the durable one: a first
     * open that fails must not leave an empty durable/data.mdb behind (the
     * next open would take it for a truncated one) */
    unfill(&t);
    fill(&t, (1 << 20) + (256 << 10));
    child_ok(&t, "open with room for the spill area only", open_full);
    unfill(&t);
    child_ok(&t, "open after space was freed", open_ok);
    tmpfs_umount(&t);
}

/* --------------------- 5 + 9: map growth and writes on a full file system */

#define VAL 60000 /* ~15 pages: the 256 KiB map grows every few values */

static void grow_full(void *p)
{
    const tmpfs *t = p;
    fbk_store_options o = small_map(256 << 10);
    backend b;
    int rc = fbk_backend_lmdb_create(t->store, &o, &b.ops, &b.self);
    CHILD_CHECK(rc == FBK_OK, "open: %s", fbk_errmsg());
    void *a;
    CHILD_CHECK(b.ops->open_location(b.self, "a", &a) == FBK_OK, "%s", fbk_errmsg());
    static fbk_key keys[512];
    size_t n = 0;
    fill(t, 0);
    /* write until the disk is full: the failure is FBK_ENOSPC naming the
     * file, never EIO and never SIGBUS */
    for (;; n++) {
        CHILD_CHECK(n < 512, "%zu values of %d bytes fit on a full 8 MiB file system", n, VAL);
        rc = put(&b, a, &keys[n], VAL, 100 + n);
        if (rc != FBK_OK)
            break;
    }
    CHILD_CHECK(rc == FBK_ENOSPC, "write %zu on a full file system: %s (%s), want FBK_ENOSPC", n,
                fbk_err_name(rc), fbk_errmsg());
    CHILD_CHECK(strstr(fbk_errmsg(), t->store) && strstr(fbk_errmsg(), "data.mdb"),
                "the message does not name the file: %s", fbk_errmsg());
    CHILD_CHECK(strstr(fbk_errmsg(), "free space"), "the message does not say what to do: %s",
                fbk_errmsg());
    /* free space: the same store, the same location and a new one work */
    unfill(t);
    size_t failed = n++;
    for (int i = 0; i < 4; i++, n++) {
        rc = put(&b, a, &keys[n], VAL, 100 + n);
        CHILD_CHECK(rc == FBK_OK, "write after space was freed: %s", fbk_errmsg());
    }
    rc = b.ops->sync(b.self, a);
    CHILD_CHECK(rc == FBK_OK, "sync of the location after space was freed: %s", fbk_errmsg());
    void *c;
    fbk_key kc;
    CHILD_CHECK(b.ops->open_location(b.self, "c", &c) == FBK_OK, "new location: %s", fbk_errmsg());
    CHILD_CHECK(put(&b, c, &kc, 3000, 7) == FBK_OK, "write to a new location: %s", fbk_errmsg());
    rc = b.ops->sync(b.self, c);
    CHILD_CHECK(rc == FBK_OK, "sync of a new location after space was freed: %s", fbk_errmsg());
    b.ops->close_location(b.self, a);
    b.ops->close_location(b.self, c);
    b.ops->close(b.self);
    /* everything acknowledged is there, byte-exact */
    rc = fbk_backend_lmdb_create(t->store, &o, &b.ops, &b.self);
    CHILD_CHECK(rc == FBK_OK, "reopen: %s", fbk_errmsg());
    CHILD_CHECK(b.ops->open_location(b.self, "a", &a) == FBK_OK, "%s", fbk_errmsg());
    for (size_t i = 0; i < n; i++) {
        if (i == failed)
            continue; /* the one that failed */
        rc = back(&b, a, &keys[i], VAL, 100 + i);
        CHILD_CHECK(rc == FBK_OK, "value %zu of %zu after reopen: %s", i, n, fbk_errmsg());
    }
    b.ops->close_location(b.self, a);
    b.ops->close(b.self);
}

Test(lmdb_space, full_disk_during_writes_is_enospc_and_the_store_recovers_when_space_is_freed,
     .timeout = 120)
{
    tmpfs t;
    tmpfs_mount(&t);
    child_ok(&t, "writes until the tmpfs is full, then free space", grow_full);
    tmpfs_umount(&t);
}

/* ------------------ 9: the durable environment after LMDB marked it fatal */

Test(lmdb_space, durable_environment_recovers_after_lmdb_marks_it_fatal, .timeout = 60)
{
    const char *dir = tu_fresh_dir("durable_fatal");
    backend b;
    int rc = fbk_backend_lmdb_create(dir, NULL, &b.ops, &b.self);
    cr_assert_eq(rc, FBK_OK, "%s", fbk_errmsg());
    void *a, *quiet;
    cr_assert_eq(b.ops->open_location(b.self, "a", &a), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(b.ops->open_location(b.self, "quiet", &quiet), FBK_OK, "%s", fbk_errmsg());
    fbk_key k1, k2, k3, kq, k4, k5;
    cr_assert_eq(put(&b, a, &k1, 3000, 1), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(put(&b, quiet, &kq, 2000, 9), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(b.ops->sync(b.self, a), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(put(&b, a, &k2, 4000, 2), FBK_OK, "%s", fbk_errmsg()); /* not synced */

    int before = atomic_load(&g_failed);
    atomic_store(&g_armed, 1);
    rc = put(&b, a, &k3, 5000, 3);
    atomic_store(&g_armed, 0);
    cr_assert_gt(atomic_load(&g_failed), before, "no durable meta-page write was made to fail");
    cr_assert_lt(rc, 0, "persist returned %d although its commit's meta write failed", rc);

    /* new work on the durable environment works: a new location, its
     * persists and its sync; a location without unsynced writes syncs too */
    void *c;
    rc = b.ops->open_location(b.self, "c", &c);
    cr_assert_eq(rc, FBK_OK, "new location after a fatal commit: %s", fbk_errmsg());
    cr_assert_eq(put(&b, c, &k4, 6000, 4), FBK_OK, "persist to a new location: %s", fbk_errmsg());
    cr_assert_eq(b.ops->sync(b.self, c), FBK_OK, "sync of a new location: %s", fbk_errmsg());
    cr_assert_eq(b.ops->sync(b.self, quiet), FBK_OK,
                 "sync of a location without unsynced "
                 "writes: %s",
                 fbk_errmsg());
    cr_assert_eq(back(&b, quiet, &kq, 2000, 9), FBK_OK, "%s", fbk_errmsg());
    /* the location that had unsynced writes keeps its failure, and says what
     * to do; its data is still readable and it takes new writes */
    for (int i = 0; i < 2; i++) {
        rc = b.ops->sync(b.self, a);
        cr_assert_lt(rc, 0, "sync of the location whose writes were not synced succeeded");
        cr_assert(strstr(fbk_errmsg(), "location a") && strstr(fbk_errmsg(), "reopen"),
                  "the message does not name the location or say what to do: %s", fbk_errmsg());
    }
    cr_assert_eq(back(&b, a, &k1, 3000, 1), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(back(&b, a, &k2, 4000, 2), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(put(&b, a, &k5, 7000, 5), FBK_OK, "%s", fbk_errmsg());
    /* the same location opened again in this store is still failed */
    void *a2;
    cr_assert_eq(b.ops->open_location(b.self, "a", &a2), FBK_OK, "%s", fbk_errmsg());
    cr_assert_lt(b.ops->sync(b.self, a2), 0, "a reopened location laundered a failed sync");
    b.ops->close_location(b.self, a2);
    b.ops->close_location(b.self, a);
    b.ops->close_location(b.self, c);
    b.ops->close_location(b.self, quiet);
    b.ops->close(b.self);

    /* after the store is reopened, everything acknowledged is there */
    rc = fbk_backend_lmdb_create(dir, NULL, &b.ops, &b.self);
    cr_assert_eq(rc, FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(b.ops->open_location(b.self, "a", &a), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(b.ops->open_location(b.self, "c", &c), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(back(&b, a, &k1, 3000, 1), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(back(&b, a, &k2, 4000, 2), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(back(&b, a, &k5, 7000, 5), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(back(&b, c, &k4, 6000, 4), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(b.ops->sync(b.self, a), FBK_OK, "a new store starts clean: %s", fbk_errmsg());
    b.ops->close_location(b.self, a);
    b.ops->close_location(b.self, c);
    b.ops->close(b.self);
}

/* ------- 9, concurrently: threads keep writing and reading their locations
 * while the durable environment is marked fatal and reopened under them */

#define WORKERS 3
#define WMAX 2048

typedef struct {
    backend *b;
    void *loc;
    unsigned id;
    fbk_key keys[WMAX];
    int ok[WMAX];
    unsigned n, failed, bad_reads;
} worker;

static _Atomic unsigned g_ops;
static _Atomic int g_stop;

static uint64_t wseed(const worker *w, unsigned i) { return (uint64_t)w->id << 32 | i; }

static void *work(void *p)
{
    worker *w = p;
    while (!atomic_load(&g_stop) && w->n < WMAX) {
        unsigned i = w->n++;
        w->ok[i] = put(w->b, w->loc, &w->keys[i], 1000 + i % 7 * 300, wseed(w, i)) == FBK_OK;
        if (!w->ok[i])
            w->failed++;
        /* read back an earlier acknowledged value from the durable env */
        unsigned j = i / 2;
        if (w->ok[j] && back(w->b, w->loc, &w->keys[j], 1000 + j % 7 * 300, wseed(w, j)) != 0)
            w->bad_reads++;
        atomic_fetch_add(&g_ops, 1);
    }
    return NULL;
}

static void wait_ops(unsigned n)
{
    while (atomic_load(&g_ops) < n)
        sched_yield();
}

Test(lmdb_space, writers_and_readers_go_on_while_the_durable_environment_is_reopened,
     .timeout = 120)
{
    const char *dir = tu_fresh_dir("durable_fatal_threads");
    backend b;
    cr_assert_eq(fbk_backend_lmdb_create(dir, NULL, &b.ops, &b.self), FBK_OK, "%s", fbk_errmsg());
    static worker ws[WORKERS];
    pthread_t th[WORKERS];
    for (unsigned t = 0; t < WORKERS; t++) {
        char name[16];
        snprintf(name, sizeof name, "w%u", t);
        ws[t] = (worker){.b = &b, .id = t};
        cr_assert_eq(b.ops->open_location(b.self, name, &ws[t].loc), FBK_OK, "%s", fbk_errmsg());
    }
    atomic_store(&g_ops, 0);
    atomic_store(&g_stop, 0);
    int before = atomic_load(&g_failed);
    for (unsigned t = 0; t < WORKERS; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, work, &ws[t]), 0);
    wait_ops(30);
    atomic_store(&g_armed, 1);
    while (atomic_load(&g_failed) == before && atomic_load(&g_ops) < WORKERS * WMAX - WORKERS)
        sched_yield();
    unsigned at = atomic_load(&g_ops);
    wait_ops(at + 60 < WORKERS * WMAX - WORKERS ? at + 60 : WORKERS * WMAX - WORKERS);
    atomic_store(&g_stop, 1);
    for (unsigned t = 0; t < WORKERS; t++)
        pthread_join(th[t], NULL);
    atomic_store(&g_armed, 0);
    cr_assert_gt(atomic_load(&g_failed), before, "no durable meta-page write was made to fail");
    unsigned failed = 0;
    for (unsigned t = 0; t < WORKERS; t++) {
        cr_assert_eq(ws[t].bad_reads, 0, "worker %u: %u reads of acknowledged values failed", t,
                     ws[t].bad_reads);
        cr_assert_leq(ws[t].failed, 1,
                      "worker %u: %u writes failed (only the batch whose meta "
                      "write failed may)",
                      t, ws[t].failed);
        cr_assert(ws[t].n > 0 && ws[t].ok[ws[t].n - 1], "worker %u: its last write failed", t);
        failed += ws[t].failed;
    }
    cr_assert_geq(failed, 1, "no write reported the failed commit");
    /* a new location works at once */
    void *c;
    fbk_key kc;
    cr_assert_eq(b.ops->open_location(b.self, "new", &c), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(put(&b, c, &kc, 5000, 77), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(b.ops->sync(b.self, c), FBK_OK, "%s", fbk_errmsg());
    b.ops->close_location(b.self, c);
    for (unsigned t = 0; t < WORKERS; t++)
        b.ops->close_location(b.self, ws[t].loc);
    b.ops->close(b.self);
    /* every acknowledged value is there after a store reopen */
    cr_assert_eq(fbk_backend_lmdb_create(dir, NULL, &b.ops, &b.self), FBK_OK, "%s", fbk_errmsg());
    for (unsigned t = 0; t < WORKERS; t++) {
        char name[16];
        snprintf(name, sizeof name, "w%u", t);
        void *l;
        cr_assert_eq(b.ops->open_location(b.self, name, &l), FBK_OK, "%s", fbk_errmsg());
        for (unsigned i = 0; i < ws[t].n; i++)
            if (ws[t].ok[i])
                cr_assert_eq(back(&b, l, &ws[t].keys[i], 1000 + i % 7 * 300, wseed(&ws[t], i)),
                             FBK_OK, "worker %u value %u: %s", t, i, fbk_errmsg());
        b.ops->close_location(b.self, l);
    }
    b.ops->close(b.self);
}
