/*
 * crash_child.c -- the process tests/test_crash.c kills.
 *
 *   crash_child run    BACKEND BASE LOG SPEC SEED CYCLES READYFD
 *   crash_child verify BACKEND BASE LOG
 *
 * BACKEND is "lmdb" or "file"; the store lives in BASE/store, the location is
 * "results" (lmdb:) or BASE/loc (file:), and the user's manifest is
 * BASE/manifest/MANIFEST.  LOG is a file holding a crash_log
 * (crash_shared.h), mapped shared with the test.
 *
 * run: resumes from the manifest (registers its objects), writes one byte to
 * READYFD (-1: none), then runs CYCLES save cycles.  Each cycle drops and
 * mutates some objects, inserts new ones with deterministic bytes (seeded),
 * and calls fbk_save() whose commit callback writes the manifest (keys, seeds,
 * lengths) through a temporary + fsync + rename + directory fsync.  Each
 * fbk_save() that returns 0 is recorded in LOG->acked.  SPEC names a point
 * where the process kills itself with SIGKILL: "none", or OP:WHEN:N, the N-th
 * time (counted from process start) OP reaches WHEN:
 *   store|load|persist|sync|remove_persisted|register_key : before|after
 *       (calls of the backend table, wrapped; the batch and version-2 forms
 *       count as their plain op, so a point means the same whichever member
 *       the core picks:
 *         store    counts VALUES: a store or store_iov call is one; a
 *                  store_many of n values reaches store:before n times
 *                  just before the call and store:after n times just after
 *                  it (so store:before:N kills before the call that would
 *                  write the N-th value, store:after:N right after the call
 *                  that wrote it, the whole batch included);
 *         load     load or load_into, one per call;
 *         persist / register_key   one per call, single or _many)
 *   store_many : before|after|mid   (backends with store_many: lmdb:)
 *       before/after: once per store_many call (on top of the per-value
 *       store points); mid: inside a store_many, just before the fill of its
 *       2nd, 3rd, ... value -- the process dies in the middle of a batch,
 *       with earlier values of it already handed to the backend
 *   commit : written|synced|renamed|dirsynced   (inside the commit callback)
 *   saved : after    (fbk_save returned 0, ack not yet recorded)
 *   acked : after    (ack recorded)
 *   io.linkat|io.renameat|io.unlinkat|io.fsync|io.fdatasync|io.syncfs|
 *   io.write|io.writev|io.openat : before|after   (file: backend system calls;
 *       io.writev is the gather write of store_iov -- spill files --, io.write
 *       the plain writes of store and of the cross-file-system copy)
 * Exit: 0 after CYCLES cycles, 2 usage, 3 an operation failed (LOG->msg).
 *
 * verify: opens the store and the location as a fresh process would, reads
 * the manifest and registers and loads every object it lists, comparing the
 * bytes; writes the figures into LOG (v_*).  Exit 0 unless it could not
 * open the store or the manifest is malformed (3, LOG->msg).
 */
#include "../../backends/file/file_io.h"
#include "crash_shared.h"

#include <fbk.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_OBJ 48
#define MAX_MANIFEST (64 * 1024)

static crash_log *g_log;
static char g_base[2048];

/* ------------------------------------------------------------ failures */

static void die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (g_log) {
        vsnprintf(g_log->msg, sizeof g_log->msg, fmt, ap);
    } else {
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
    }
    va_end(ap);
    _exit(status);
}

/* ---------------------------------------------------------- crash points */

static struct {
    char op[32];
    char when[16];
    long n;
    _Atomic long seen;
} g_spec;

static void point(const char *op, const char *when)
{
    if (g_spec.n <= 0 || strcmp(op, g_spec.op) != 0 || strcmp(when, g_spec.when) != 0)
        return;
    if (atomic_fetch_add(&g_spec.seen, 1) + 1 == g_spec.n) {
        atomic_store(&g_log->crash_hit, 1);
        raise(SIGKILL);
    }
}

static void parse_spec(const char *spec)
{
    if (strcmp(spec, "none") == 0)
        return;
    const char *c1 = strchr(spec, ':');
    const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c1 || !c2 || (size_t)(c1 - spec) >= sizeof g_spec.op ||
        (size_t)(c2 - c1 - 1) >= sizeof g_spec.when)
        die(2, "bad crash spec '%s'", spec);
    memcpy(g_spec.op, spec, (size_t)(c1 - spec));
    memcpy(g_spec.when, c1 + 1, (size_t)(c2 - c1 - 1));
    g_spec.n = strtol(c2 + 1, NULL, 10);
    if (g_spec.n <= 0)
        die(2, "bad crash spec '%s'", spec);
}

/* ------------------------------------------- the wrapped backend table */

static const fbk_backend_ops *g_real;
static fbk_backend_ops g_wrap;

static int w_store(void *self, const fbk_key *key, size_t len, fbk_fill_fn fill, void *arg)
{
    point("store", "before");
    int rc = g_real->store(self, key, len, fill, arg);
    point("store", "after");
    return rc;
}

static int w_load(void *self, const fbk_key *key, fbk_read_fn read, void *arg)
{
    point("load", "before");
    int rc = g_real->load(self, key, read, arg);
    point("load", "after");
    return rc;
}

/* store_iov: one value, like store. */
static int w_store_iov(void *self, const fbk_key *key, const struct iovec *iov, int n)
{
    point("store", "before");
    int rc = g_real->store_iov(self, key, iov, n);
    point("store", "after");
    return rc;
}

/* A value of a store_many, its fill wrapped to place store_many:mid. */
typedef struct many_fill {
    fbk_fill_fn fill;
    void *arg;
    size_t index; /* position in the batch */
} many_fill;

static int w_many_fill(void *dst, size_t len, void *arg)
{
    many_fill *m = arg;
    if (m->index > 0)
        point("store_many", "mid");
    return m->fill(dst, len, m->arg);
}

/* store_many of n values: n store points on each side of the call (see the
 * top of this file), one store_many point, and store_many:mid inside. */
static int w_store_many(void *self, fbk_store_req *reqs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        point("store", "before");
    point("store_many", "before");
    /* the backend sees the same requests with each fill wrapped; the
     * originals are put back afterwards (results stay where it set them) */
    many_fill *m = n > 0 ? malloc(n * sizeof *m) : NULL;
    if (m) {
        for (size_t i = 0; i < n; i++) {
            m[i] = (many_fill){reqs[i].fill, reqs[i].arg, i};
            reqs[i].fill = w_many_fill;
            reqs[i].arg = &m[i];
        }
    }
    int rc = g_real->store_many(self, reqs, n);
    if (m) {
        for (size_t i = 0; i < n; i++) {
            reqs[i].fill = m[i].fill;
            reqs[i].arg = m[i].arg;
        }
        free(m);
    }
    point("store_many", "after");
    for (size_t i = 0; i < n; i++)
        point("store", "after");
    return rc;
}

/* load_into: one load. */
static int w_load_into(void *self, const fbk_key *key, size_t hint, fbk_place_fn place, void *arg)
{
    point("load", "before");
    int rc = g_real->load_into(self, key, hint, place, arg);
    point("load", "after");
    return rc;
}

static int w_persist(void *self, void *loc, const fbk_key *key)
{
    point("persist", "before");
    int rc = g_real->persist(self, loc, key);
    point("persist", "after");
    return rc;
}

static int w_persist_many(void *self, void *loc, const fbk_key *keys, size_t n)
{
    point("persist", "before");
    int rc = g_real->persist_many(self, loc, keys, n);
    point("persist", "after");
    return rc;
}

static int w_register_key(void *self, void *loc, const fbk_key *key)
{
    point("register_key", "before");
    int rc = g_real->register_key(self, loc, key);
    point("register_key", "after");
    return rc;
}

static int w_register_many(void *self, void *loc, const fbk_key *keys, size_t n)
{
    point("register_key", "before");
    int rc = g_real->register_many(self, loc, keys, n);
    point("register_key", "after");
    return rc;
}

static int w_remove_persisted(void *self, void *loc, const fbk_key *key)
{
    point("remove_persisted", "before");
    int rc = g_real->remove_persisted(self, loc, key);
    point("remove_persisted", "after");
    return rc;
}

static int w_sync(void *self, void *loc)
{
    point("sync", "before");
    int rc = g_real->sync(self, loc);
    point("sync", "after");
    return rc;
}

static void wrap_table(const fbk_backend_ops *real)
{
    g_real = real;
    g_wrap = *real;
    g_wrap.store = w_store;
    g_wrap.load = w_load;
    g_wrap.persist = w_persist;
    g_wrap.register_key = w_register_key;
    g_wrap.remove_persisted = w_remove_persisted;
    g_wrap.sync = w_sync;
    g_wrap.persist_many = real->persist_many ? w_persist_many : NULL;
    g_wrap.register_many = real->register_many ? w_register_many : NULL;
    /* version 2 members: wrapped when the table has them; the version stays
     * the inner table's, so the core picks the same members it would pick
     * unwrapped (a version-1 table's are never read) */
    int v2 = real->version >= 2;
    g_wrap.store_many = v2 && real->store_many ? w_store_many : NULL;
    g_wrap.store_iov = v2 && real->store_iov ? w_store_iov : NULL;
    g_wrap.load_into = v2 && real->load_into ? w_load_into : NULL;
}

/* --------------------------------------- the file: backend's system calls */

static fbk__file_io g_io;

#define IO_POINT(name, call)                                                                       \
    do {                                                                                           \
        point("io." name, "before");                                                               \
        __typeof__(call) rc_ = (call);                                                             \
        int e_ = errno;                                                                            \
        point("io." name, "after");                                                                \
        errno = e_;                                                                                \
        return rc_;                                                                                \
    } while (0)

static int io_linkat(int a, const char *b, int c, const char *d, int f)
{
    IO_POINT("linkat", fbk__file_io_posix.linkat(a, b, c, d, f));
}
static int io_renameat(int a, const char *b, int c, const char *d)
{
    IO_POINT("renameat", fbk__file_io_posix.renameat(a, b, c, d));
}
static int io_unlinkat(int a, const char *b, int f)
{
    IO_POINT("unlinkat", fbk__file_io_posix.unlinkat(a, b, f));
}
static int io_fsync(int fd) { IO_POINT("fsync", fbk__file_io_posix.fsync(fd)); }
static int io_fdatasync(int fd) { IO_POINT("fdatasync", fbk__file_io_posix.fdatasync(fd)); }
static int io_syncfs(int fd) { IO_POINT("syncfs", fbk__file_io_posix.syncfs(fd)); }
static int io_openat(int d, const char *p, int f, mode_t m)
{
    IO_POINT("openat", fbk__file_io_posix.openat(d, p, f, m));
}
static ssize_t io_write(int fd, const void *buf, size_t len)
{
    IO_POINT("write", fbk__file_io_posix.write(fd, buf, len));
}

/* Hooked, so that store_iov's gather writes are seen as they are made (the
 * backend would otherwise turn them into one hooked write per segment,
 * file_io.h). */
static ssize_t io_writev(int fd, const struct iovec *iov, int n)
{
    IO_POINT("writev", fbk__file_io_posix.writev(fd, iov, n));
}

static void wrap_io(void)
{
    g_io = fbk__file_io_posix;
    g_io.linkat = io_linkat;
    g_io.renameat = io_renameat;
    g_io.unlinkat = io_unlinkat;
    g_io.fsync = io_fsync;
    g_io.fdatasync = io_fdatasync;
    g_io.syncfs = io_syncfs;
    g_io.openat = io_openat;
    g_io.write = io_write;
    g_io.writev = io_writev;
    fbk__file_io_set(&g_io);
}

/* ------------------------------------------------------------- content */

static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Deterministic bytes: a splitmix64 stream from seed. */
static void fill(unsigned char *p, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    while (len > 0) {
        uint64_t z = mix(x);
        x += 0x9E3779B97F4A7C15ull;
        size_t k = len < 8 ? len : 8;
        memcpy(p, &z, k);
        p += k;
        len -= k;
    }
}

static int matches(const fbk_blob *b, size_t len, uint64_t seed)
{
    if (b->len != len)
        return 0;
    unsigned char buf[4096];
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    size_t off = 0;
    while (off < len) {
        size_t k = len - off < sizeof buf ? len - off : sizeof buf;
        /* regenerate the stream in 8-byte steps, as fill() does */
        for (size_t i = 0; i < k; i += 8) {
            uint64_t z = mix(x);
            x += 0x9E3779B97F4A7C15ull;
            memcpy(buf + i, &z, k - i < 8 ? k - i : 8);
        }
        if (memcmp(buf, b->data + off, k) != 0)
            return 0;
        off += k;
    }
    return 1;
}

/* ------------------------------------------------------------ manifest */

typedef struct entry {
    fbk_key key;
    uint64_t seed;
    size_t len;
} entry;

typedef struct manifest {
    long long cycle;
    size_t n;
    entry e[MAX_OBJ];
} manifest;

static void path_of(char *out, size_t cap, const char *name)
{
    if ((size_t)snprintf(out, cap, "%s/%s", g_base, name) >= cap)
        die(2, "path too long: %s/%s", g_base, name);
}

/* 1 and *m filled, 0 when there is no manifest; dies on a malformed one. */
static int manifest_read(manifest *m)
{
    char path[2200];
    path_of(path, sizeof path, "manifest/MANIFEST");
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        die(3, "open %s: %s", path, strerror(errno));
    }
    long long cycle = -1, endc = -2;
    size_t count = 0, endn = 1;
    int ok = fscanf(f, "fbk-crash-manifest 1\ncycle %lld\ncount %zu\n", &cycle, &count) == 2 &&
             count <= MAX_OBJ;
    for (size_t i = 0; ok && i < count; i++) {
        char hex[40];
        unsigned long long seed, len;
        ok = fscanf(f, "%39s %llu %llu\n", hex, &seed, &len) == 3 &&
             fbk_key_parse(hex, &m->e[i].key) == FBK_OK;
        m->e[i].seed = seed;
        m->e[i].len = (size_t)len;
    }
    ok = ok && fscanf(f, "end %lld %zu", &endc, &endn) == 2 && endc == cycle && endn == count;
    fclose(f);
    if (!ok)
        die(3, "manifest %s is malformed (torn write?)", path);
    m->cycle = cycle;
    m->n = count;
    return 1;
}

static void write_all(int fd, const char *buf, size_t len, const char *path)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die(3, "write %s: %s", path, strerror(errno));
        buf += w;
        len -= (size_t)w;
    }
}

typedef struct obj {
    fbk_handle *h;
    uint64_t seed;
    size_t len;
} obj;

typedef struct commit_ctx {
    long long cycle;
    obj *objs;
    size_t n;
} commit_ctx;

/* The user's atomic switch: temporary, fsync, rename, fsync of the
 * directory.  Crash points between each step. */
static int commit_manifest(void *arg)
{
    commit_ctx *c = arg;
    static char buf[MAX_MANIFEST];
    size_t len = 0;
    len += (size_t)snprintf(buf + len, sizeof buf - len,
                            "fbk-crash-manifest 1\ncycle %lld\ncount %zu\n", c->cycle, c->n);
    for (size_t i = 0; i < c->n; i++) {
        fbk_key k;
        char hex[FBK_KEY_STRLEN + 1];
        fbk_handle_key(c->objs[i].h, &k);
        fbk_key_format(&k, hex);
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s %llu %llu\n", hex,
                                (unsigned long long)c->objs[i].seed,
                                (unsigned long long)c->objs[i].len);
    }
    len += (size_t)snprintf(buf + len, sizeof buf - len, "end %lld %zu\n", c->cycle, c->n);
    if (len >= sizeof buf)
        die(3, "manifest too long");

    char tmp[2200], dst[2200], dir[2200];
    path_of(tmp, sizeof tmp, "manifest/MANIFEST.tmp");
    path_of(dst, sizeof dst, "manifest/MANIFEST");
    path_of(dir, sizeof dir, "manifest");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        die(3, "create %s: %s", tmp, strerror(errno));
    write_all(fd, buf, len, tmp);
    point("commit", "written");
    if (fsync(fd) != 0)
        die(3, "fsync %s: %s", tmp, strerror(errno));
    close(fd);
    point("commit", "synced");
    atomic_store(&g_log->renamed, c->cycle); /* before: a kill may land in rename() */
    if (rename(tmp, dst) != 0)
        die(3, "rename %s: %s", tmp, strerror(errno));
    point("commit", "renamed");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0)
        die(3, "fsync %s: %s", dir, strerror(errno));
    close(dfd);
    point("commit", "dirsynced");
    return 0;
}

/* --------------------------------------------------------------- store */

static _Atomic int g_bg_errors;

static void on_error(int err, const char *message, void *arg)
{
    (void)arg;
    (void)err;
    (void)message;
    g_bg_errors++;
}

static void open_store(const char *backend, int wrap, fbk_store **s, fbk_location **loc)
{
    char storedir[2200], locname[2200];
    path_of(storedir, sizeof storedir, "store");
    fbk_store_options opts = {0};
    opts.threads = 2;
    opts.on_error = on_error;
    const fbk_backend_ops *ops;
    void *self;
    int rc;
    if (strcmp(backend, "lmdb") == 0) {
        opts.map_size = 256 << 10; /* small: long runs grow the maps */
        rc = fbk_backend_lmdb_create(storedir, &opts, &ops, &self);
        snprintf(locname, sizeof locname, "results");
    } else if (strcmp(backend, "file") == 0) {
        if (wrap)
            wrap_io();
        rc = fbk_backend_file_create(storedir, &opts, &ops, &self);
        path_of(locname, sizeof locname, "loc");
    } else {
        die(2, "unknown backend %s", backend);
    }
    if (rc != FBK_OK)
        die(3, "create %s backend: %s: %s", backend, fbk_err_name(rc), fbk_errmsg());
    if (wrap) {
        wrap_table(ops);
        ops = &g_wrap;
    }
    rc = fbk_store_open_backend(s, ops, self, &opts);
    if (rc != FBK_OK)
        die(3, "open store: %s: %s", fbk_err_name(rc), fbk_errmsg());
    rc = fbk_location_open(*s, locname, loc);
    if (rc != FBK_OK)
        die(3, "open location %s: %s: %s", locname, fbk_err_name(rc), fbk_errmsg());
}

/* ----------------------------------------------------------------- run */

static void release_obj(obj *o)
{
    fbk_handle_release(o->h);
    o->h = NULL;
}

static int run(const char *backend, const char *spec, uint64_t seed, long cycles, int readyfd)
{
    parse_spec(spec);
    char mdir[2200];
    path_of(mdir, sizeof mdir, "manifest");
    if (mkdir(mdir, 0755) != 0 && errno != EEXIST)
        die(3, "mkdir %s: %s", mdir, strerror(errno));

    fbk_store *s;
    fbk_location *loc;
    open_store(backend, 1, &s, &loc);
    fbk_pool *p;
    int rc = fbk_pool_create(&p, s, &fbk_blob_codec, 4);
    if (rc != FBK_OK)
        die(3, "pool: %s", fbk_errmsg());

    static manifest m;
    static obj objs[MAX_OBJ];
    size_t n = 0;
    long long cycle = 0;
    if (manifest_read(&m)) {
        cycle = m.cycle;
        for (size_t i = 0; i < m.n; i++) {
            rc = fbk_register(p, loc, &m.e[i].key, &objs[n].h);
            if (rc != FBK_OK)
                die(3, "resume: register object %zu of cycle %lld: %s: %s", i, m.cycle,
                    fbk_err_name(rc), fbk_errmsg());
            objs[n].seed = m.e[i].seed;
            objs[n].len = m.e[i].len;
            n++;
        }
    }
    if (readyfd >= 0) {
        char c = 'r';
        if (write(readyfd, &c, 1) != 1)
            die(3, "write ready byte: %s", strerror(errno));
        close(readyfd);
    }

    for (long round = 0; round < cycles; round++) {
        cycle++;
        atomic_store(&g_log->started, cycle);
        uint64_t r = mix(seed ^ mix((uint64_t)cycle));
        /* drop some */
        unsigned drop = n > 6 ? (unsigned)(r % 4) : 0;
        for (unsigned d = 0; d < drop; d++) {
            r = mix(r);
            size_t i = (size_t)(r % n);
            release_obj(&objs[i]);
            objs[i] = objs[--n];
        }
        /* mutate one (it gets a new key) */
        r = mix(r);
        if (n > 0 && r % 3 == 0) {
            size_t i = (size_t)((r >> 8) % n);
            void *o;
            rc = fbk_load_mut(objs[i].h, &o);
            if (rc != FBK_OK)
                die(3, "cycle %lld: load_mut: %s: %s", cycle, fbk_err_name(rc), fbk_errmsg());
            fbk_blob *b = o;
            objs[i].seed = (uint64_t)cycle * 1000 + 999;
            fill(b->data, b->len, objs[i].seed);
            fbk_unload_mut(objs[i].h);
        }
        /* insert some: 1 to 4, or in about one cycle of four a burst of 6
         * to 10 -- more than the pool's 4 slots, so the eviction writes of
         * the new objects queue up behind each other and reach the backend
         * together (store_many on lmdb:).  A burst first drops objects to
         * make room for all of it. */
        r = mix(r);
        int burst = (r >> 40) % 4 == 0;
        unsigned add = burst ? 6 + (unsigned)((r >> 8) % 5) : 1 + (unsigned)(r % 4);
        while (burst && n > 0 && n + add > MAX_OBJ) {
            r = mix(r);
            size_t i = (size_t)(r % n);
            release_obj(&objs[i]);
            objs[i] = objs[--n];
        }
        /* the objects are made first and inserted back to back, so that
         * nothing slows the inserts down while the evictions queue up */
        fbk_blob *made[MAX_OBJ];
        unsigned nmade = 0;
        for (unsigned j = 0; j < add && n + nmade < MAX_OBJ; j++) {
            r = mix(r);
            size_t len = r % 50 == 0 ? 300000 + (size_t)(r % 4096) : 1 + (size_t)((r >> 8) % 40000);
            uint64_t oseed = (uint64_t)cycle * 1000 + j;
            fbk_blob *b = fbk_blob_new(NULL, len);
            if (!b)
                die(3, "out of memory");
            fill(b->data, len, oseed);
            made[nmade++] = b;
            objs[n + j].seed = oseed;
            objs[n + j].len = len;
        }
        for (unsigned j = 0; j < nmade; j++) {
            rc = fbk_insert(p, made[j], &objs[n].h);
            if (rc != FBK_OK)
                die(3, "cycle %lld: insert: %s: %s", cycle, fbk_err_name(rc), fbk_errmsg());
            n++;
        }
        fbk_handle *hs[MAX_OBJ];
        for (size_t i = 0; i < n; i++)
            hs[i] = objs[i].h;
        commit_ctx c = {cycle, objs, n};
        rc = fbk_save(loc, hs, n, 0, commit_manifest, &c);
        if (rc != FBK_OK)
            die(3, "cycle %lld: fbk_save: %s: %s", cycle, fbk_err_name(rc), fbk_errmsg());
        point("saved", "after");
        atomic_store(&g_log->objects, (int64_t)n);
        atomic_store(&g_log->acked, cycle);
        point("acked", "after");
    }
    for (size_t i = 0; i < n; i++)
        release_obj(&objs[i]);
    rc = fbk_store_drain(s);
    if (rc != FBK_OK)
        die(3, "drain: %s: %s", fbk_err_name(rc), fbk_errmsg());
    if (g_bg_errors)
        die(3, "%d background errors", g_bg_errors);
    fbk_pool_release(p);
    fbk_location_close(loc);
    fbk_store_close(s);
    return 0;
}

/* -------------------------------------------------------------- verify */

static int verify(const char *backend)
{
    fbk_store *s;
    fbk_location *loc;
    open_store(backend, 0, &s, &loc);
    fbk_pool *p;
    int rc = fbk_pool_create(&p, s, &fbk_blob_codec, 4);
    if (rc != FBK_OK)
        die(3, "pool: %s", fbk_errmsg());
    g_log->v_junk = fbk_location_junk_removed(loc);
    static manifest m;
    size_t listed_present = 0;
    if (manifest_read(&m)) {
        g_log->v_cycle = m.cycle;
        g_log->v_objects = m.n;
        for (size_t i = 0; i < m.n; i++) {
            listed_present += (size_t)fbk_location_contains(loc, &m.e[i].key);
            fbk_handle *h;
            rc = fbk_register(p, loc, &m.e[i].key, &h);
            if (rc == FBK_ENOTFOUND) {
                g_log->v_lost++;
                snprintf(g_log->msg, sizeof g_log->msg, "cycle %lld object %zu lost: %s", m.cycle,
                         i, fbk_errmsg());
                continue;
            }
            if (rc != FBK_OK) {
                g_log->v_corrupt++;
                snprintf(g_log->msg, sizeof g_log->msg, "cycle %lld object %zu: register: %s: %s",
                         m.cycle, i, fbk_err_name(rc), fbk_errmsg());
                continue;
            }
            const void *o;
            rc = fbk_load(h, &o);
            if (rc != FBK_OK) {
                g_log->v_corrupt++;
                snprintf(g_log->msg, sizeof g_log->msg, "cycle %lld object %zu: load: %s: %s",
                         m.cycle, i, fbk_err_name(rc), fbk_errmsg());
            } else {
                if (matches(o, m.e[i].len, m.e[i].seed)) {
                    g_log->v_checked++;
                } else {
                    g_log->v_corrupt++;
                    snprintf(g_log->msg, sizeof g_log->msg,
                             "cycle %lld object %zu: wrong bytes returned as data", m.cycle, i);
                }
                fbk_unload(h);
            }
            fbk_handle_release(h);
        }
    }
    size_t count = fbk_location_count(loc);
    g_log->v_orphans = count > listed_present ? count - listed_present : 0;
    rc = fbk_store_drain(s);
    fbk_pool_release(p);
    fbk_location_close(loc);
    fbk_store_close(s);
    if (rc != FBK_OK)
        die(3, "verify: drain: %s", fbk_err_name(rc));
    return 0;
}

/* ---------------------------------------------------------------- main */

static void map_log(const char *path)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        die(2, "open %s: %s", path, strerror(errno));
    void *m = mmap(NULL, sizeof(crash_log), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        die(2, "mmap %s: %s", path, strerror(errno));
    g_log = m;
    if (g_log->magic != CRASH_LOG_MAGIC) {
        g_log = NULL;
        die(2, "%s is not a crash log", path);
    }
}

int main(int argc, char **argv)
{
    if (argc >= 5 && strcmp(argv[1], "run") == 0 && argc == 9) {
        snprintf(g_base, sizeof g_base, "%s", argv[3]);
        map_log(argv[4]);
        return run(argv[2], argv[5], strtoull(argv[6], NULL, 10), strtol(argv[7], NULL, 10),
                   atoi(argv[8]));
    }
    if (argc == 5 && strcmp(argv[1], "verify") == 0) {
        snprintf(g_base, sizeof g_base, "%s", argv[3]);
        map_log(argv[4]);
        return verify(argv[2]);
    }
    fprintf(stderr, "usage: crash_child run BACKEND BASE LOG SPEC SEED CYCLES READYFD\n"
                    "       crash_child verify BACKEND BASE LOG\n");
    return 2;
}
