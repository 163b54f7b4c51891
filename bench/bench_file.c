/*
 * bench_file.c -- the file: backend against plain files, in one run.
 *
 *   bench_file [DIR [N16K [N1M [REPS]]]]
 *
 * For 16 KiB and 1 MiB objects (N16K and N1M of them; defaults 5000 and
 * 400), three phases, each timed for libfbk and for plain files:
 *   put      libfbk: fbk_insert N blobs into a pool of mem_items = N/100
 *            (so ~99% are evicted to the spill area) + fbk_store_drain;
 *            plain:  open/write/close one file per object.
 *   read     every object once in a random order.
 *            libfbk: fbk_load/fbk_unload (from the spill area: the pool is
 *            full of the last ones put);  plain: open/read/close.
 *   persist  libfbk: fbk_persist all to a location + fbk_location_sync;
 *            plain:  link each file into another directory + syncfs.
 * Both produce the same bytes from the same source buffer; libfbk's put
 * includes making the fbk_blob (a copy) since that is what a user does.
 * A third column, "table", runs the same phases on the backend table alone
 * (fbk_backend_file_create + ops->store_iov/load_into (or store/load when
 * the table lacks them)/persist/sync, no pool): the file: backend's own
 * share, without the core's framing and allocation.
 * Dirty data is flushed (untimed) before each phase so every phase starts
 * from the same state.  Each phase is run REPS times (default 3) and the
 * fastest run is reported.
 *
 * BENCH_ONLY=fbk|plain|table runs one column only (for profilers);
 * BENCH_THREADS=N and BENCH_QUEUE=N set the store's worker threads and
 * max_queued_writes (default: the defaults).
 */
#include <fbk.h>
#include <fbk_backend.h>

#include <errno.h>
#include "bench_util.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_file: %s: %s (%s)\n", what, fbk_err_name(rc), fbk_errmsg());
    exit(1);
}

static void die_errno(const char *what, const char *path)
{
    fprintf(stderr, "bench_file: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

typedef struct {
    double put, read, persist;
} times;

static volatile unsigned sink;

static times run_fbk(const char *dir, size_t size, size_t n, const unsigned char *src,
                     const size_t *order)
{
    times t;
    char uri[4200];
    snprintf(uri, sizeof uri, "file:%s/fbk", dir);
    fbk_store *s;
    fbk_store_options o = {0};
    const char *th = getenv("BENCH_THREADS");
    o.threads = th ? (unsigned)atoi(th) : 0;
    const char *q = getenv("BENCH_QUEUE");
    o.max_queued_writes = q ? (unsigned)atoi(q) : 0;
    int rc = fbk_store_open(&s, uri, &o);
    if (rc)
        die("fbk_store_open", rc);
    fbk_pool *p;
    size_t mem = n / 100 < 2 ? 2 : n / 100;
    if ((rc = fbk_pool_create(&p, s, &fbk_blob_codec, mem)))
        die("fbk_pool_create", rc);
    fbk_handle **h = calloc(n, sizeof *h);
    if (!h)
        die("calloc", FBK_ENOMEM);
    bench_flush(dir);

    double t0 = bench_now();
    for (size_t i = 0; i < n; i++) {
        fbk_blob *b = fbk_blob_new(src + (i % 64), size);
        if (!b)
            die("fbk_blob_new", FBK_ENOMEM);
        if ((rc = fbk_insert(p, b, &h[i])))
            die("fbk_insert", rc);
    }
    if ((rc = fbk_store_drain(s)))
        die("fbk_store_drain", rc);
    t.put = bench_now() - t0;
    bench_flush(dir);

    t0 = bench_now();
    for (size_t i = 0; i < n; i++) {
        const void *obj;
        if ((rc = fbk_load(h[order[i]], &obj)))
            die("fbk_load", rc);
        const fbk_blob *b = obj;
        sink += b->data[b->len / 2];
        fbk_unload(h[order[i]]);
    }
    t.read = bench_now() - t0;
    if ((rc = fbk_store_drain(s)))
        die("fbk_store_drain", rc);
    bench_flush(dir);

    fbk_location *loc;
    if ((rc = fbk_location_open(s, "loc", &loc)))
        die("fbk_location_open", rc);
    t0 = bench_now();
    for (size_t i = 0; i < n; i++)
        if ((rc = fbk_persist(h[i], loc)))
            die("fbk_persist", rc);
    if ((rc = fbk_location_sync(loc)))
        die("fbk_location_sync", rc);
    t.persist = bench_now() - t0;

    for (size_t i = 0; i < n; i++)
        fbk_handle_release(h[i]);
    free(h);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
    return t;
}

static times run_plain(const char *dir, size_t size, size_t n, const unsigned char *src,
                       const size_t *order)
{
    times t;
    char objs[4200], locd[4200], path[4300], path2[4300];
    snprintf(objs, sizeof objs, "%s/plain", dir);
    snprintf(locd, sizeof locd, "%s/plainloc", dir);
    if (mkdir(objs, 0755) != 0 || mkdir(locd, 0755) != 0)
        die_errno("mkdir", objs);
    fbk_key *keys = malloc(n * sizeof *keys);
    unsigned char *buf = malloc(size);
    if (!keys || !buf)
        die("malloc", FBK_ENOMEM);
    for (size_t i = 0; i < n; i++)
        fbk_key_generate(&keys[i]);
    bench_flush(dir);

    double t0 = bench_now();
    for (size_t i = 0; i < n; i++) {
        char hex[33];
        fbk_key_format_hex(&keys[i], hex);
        snprintf(path, sizeof path, "%s/%s", objs, hex);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 || write(fd, src + (i % 64), size) != (ssize_t)size)
            die_errno("write", path);
        close(fd);
    }
    t.put = bench_now() - t0;
    bench_flush(dir);

    t0 = bench_now();
    for (size_t i = 0; i < n; i++) {
        char hex[33];
        fbk_key_format_hex(&keys[order[i]], hex);
        snprintf(path, sizeof path, "%s/%s", objs, hex);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        /* a fresh buffer per object, as a program keeping what it reads */
        unsigned char *obj = malloc(size);
        if (fd < 0 || !obj || read(fd, obj, size) != (ssize_t)size)
            die_errno("read", path);
        sink += obj[size / 2];
        free(obj);
        close(fd);
    }
    t.read = bench_now() - t0;
    bench_flush(dir);

    t0 = bench_now();
    for (size_t i = 0; i < n; i++) {
        char hex[33];
        fbk_key_format_hex(&keys[i], hex);
        snprintf(path, sizeof path, "%s/%s", objs, hex);
        snprintf(path2, sizeof path2, "%s/%s", locd, hex);
        if (link(path, path2) != 0)
            die_errno("link", path2);
    }
    int fd = open(locd, O_RDONLY | O_DIRECTORY);
    if (fd < 0 || syncfs(fd) != 0)
        die_errno("syncfs", locd);
    close(fd);
    t.persist = bench_now() - t0;
    free(keys);
    free(buf);
    return t;
}

/* The backend table alone (no pool, no framing, no codec): the share of
 * the file: backend itself in the figures above. */
typedef struct {
    const unsigned char *src;
} ops_fill_arg;

static int ops_fill(void *dst, size_t len, void *arg)
{
    memcpy(dst, ((ops_fill_arg *)arg)->src, len);
    return 0;
}

static int ops_read(const void *src, size_t len, void *arg)
{
    (void)arg;
    unsigned char *obj = malloc(len);
    if (!obj)
        return FBK_ENOMEM;
    memcpy(obj, src, len);
    sink += obj[len / 2];
    free(obj);
    return 0;
}

/* The zero-copy forms, as the core uses them for fbk_blob: a 24-byte
 * header segment plus the object's bytes, and a read placed straight into a
 * fresh object. */
typedef struct {
    unsigned char hdr[24];
    unsigned char *obj;
} ops_place_arg;

static int ops_place(size_t len, struct iovec *iov, int *n, void *arg)
{
    ops_place_arg *a = arg;
    if (len < 24)
        return FBK_ECORRUPT;
    a->obj = malloc(len - 24 ? len - 24 : 1);
    if (!a->obj)
        return FBK_ENOMEM;
    iov[0] = (struct iovec){a->hdr, 24};
    iov[1] = (struct iovec){a->obj, len - 24};
    *n = 2;
    return 0;
}

static times run_ops(const char *dir, size_t size, size_t n, const unsigned char *src,
                     const size_t *order)
{
    times t;
    char path[4200];
    snprintf(path, sizeof path, "%s/ops", dir);
    const fbk_backend_ops *ops;
    void *self;
    int rc = fbk_backend_file_create(path, NULL, &ops, &self);
    if (rc)
        die("fbk_backend_file_create", rc);
    fbk_key *keys = malloc(n * sizeof *keys);
    if (!keys)
        die("malloc", FBK_ENOMEM);
    for (size_t i = 0; i < n; i++)
        fbk_key_generate(&keys[i]);
    bench_flush(dir);
    double t0 = bench_now();
    int iov = ops->version >= 2 && ops->store_iov && ops->load_into;
    unsigned char hdr[24] = {0};
    for (size_t i = 0; i < n; i++) {
        ops_fill_arg a = {src + (i % 64)};
        struct iovec v[2] = {{hdr, sizeof hdr}, {(void *)(src + (i % 64)), size}};
        rc = iov ? ops->store_iov(self, &keys[i], v, 2)
                 : ops->store(self, &keys[i], size, ops_fill, &a);
        if (rc)
            die("store", rc);
    }
    t.put = bench_now() - t0;
    bench_flush(dir);
    t0 = bench_now();
    for (size_t i = 0; i < n; i++) {
        if (iov) {
            ops_place_arg a = {{0}, NULL};
            rc = ops->load_into(self, &keys[order[i]], size + 24, ops_place, &a);
            if (a.obj)
                sink += a.obj[size / 2];
            free(a.obj);
        } else {
            rc = ops->load(self, &keys[order[i]], ops_read, NULL);
        }
        if (rc)
            die("load", rc);
    }
    t.read = bench_now() - t0;
    bench_flush(dir);
    void *loc;
    if ((rc = ops->open_location(self, "loc", &loc)))
        die("open_location", rc);
    t0 = bench_now();
    for (size_t i = 0; i < n; i++)
        if ((rc = ops->persist(self, loc, &keys[i])))
            die("persist", rc);
    if ((rc = ops->sync(self, loc)))
        die("sync", rc);
    t.persist = bench_now() - t0;
    ops->close_location(self, loc);
    ops->close(self);
    free(keys);
    return t;
}

static double best(double a, double b) { return a < b ? a : b; }

static void bench(const char *dir, size_t size, size_t n, int reps)
{
    unsigned char *src = malloc(size + 64);
    size_t *order = malloc(n * sizeof *order);
    if (!src || !order)
        die("malloc", FBK_ENOMEM);
    for (size_t i = 0; i < size + 64; i++)
        src[i] = (unsigned char)next_rand();
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(next_rand() % i), x = order[i - 1];
        order[i - 1] = order[j];
        order[j] = x;
    }
    times f = {1e30, 1e30, 1e30}, p = {1e30, 1e30, 1e30}, o = {1e30, 1e30, 1e30};
    for (int r = 0; r < reps; r++) {
        /* rotate which goes first, so none always meets another's writeback */
        for (int k = 0; k < 3; k++) {
            bench_rmtree(dir);
            if (mkdir(dir, 0755) != 0)
                die_errno("mkdir", dir);
            int which = (k + r) % 3;
            const char *only = getenv("BENCH_ONLY");
            if (only && *only &&
                strcmp(only, which == 0   ? "fbk"
                             : which == 1 ? "plain"
                                          : "table") != 0)
                continue;
            times *dst = which == 0 ? &f : which == 1 ? &p : &o;
            times t = which == 0   ? run_fbk(dir, size, n, src, order)
                      : which == 1 ? run_plain(dir, size, n, src, order)
                                   : run_ops(dir, size, n, src, order);
            dst->put = best(dst->put, t.put);
            dst->read = best(dst->read, t.read);
            dst->persist = best(dst->persist, t.persist);
        }
    }
    bench_rmtree(dir);
    printf("%7zu KiB x %6zu  %-8s %10s %10s %8s %10s %10s %8s\n", size >> 10, n, "phase",
           "file: ms", "plain ms", "ratio", "us/op", "table ms", "ratio");
    const char *names[3] = {"put", "read", "persist"};
    double fv[3] = {f.put, f.read, f.persist}, pv[3] = {p.put, p.read, p.persist},
           ov[3] = {o.put, o.read, o.persist};
    for (int i = 0; i < 3; i++) {
        /* a column not run (BENCH_ONLY) prints as "-" */
        char c[6][32];
        double v[6] = {fv[i] * 1e3, pv[i] * 1e3,  fv[i] / pv[i], fv[i] / (double)n * 1e6,
                       ov[i] * 1e3, ov[i] / pv[i]};
        int ran[6] = {fv[i] < 1e29, pv[i] < 1e29, fv[i] < 1e29 && pv[i] < 1e29,
                      fv[i] < 1e29, ov[i] < 1e29, ov[i] < 1e29 && pv[i] < 1e29};
        for (int j = 0; j < 6; j++)
            snprintf(c[j], sizeof c[j], (j == 2 || j == 5) ? "%.2fx" : "%.1f", v[j]);
        for (int j = 0; j < 6; j++)
            if (!ran[j])
                snprintf(c[j], sizeof c[j], "-");
        printf("%24s %-8s %10s %10s %8s %10s %10s %8s\n", "", names[i], c[0], c[1], c[2], c[3],
               c[4], c[5]);
    }
    free(src);
    free(order);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "bench-file.tmp";
    size_t n16 = argc > 2 ? strtoull(argv[2], NULL, 10) : 5000;
    size_t n1m = argc > 3 ? strtoull(argv[3], NULL, 10) : 400;
    int reps = argc > 4 ? atoi(argv[4]) : 3;
    if (n16 < 1 || n1m < 1 || reps < 1) {
        fprintf(stderr, "usage: bench_file [DIR [N16K [N1M [REPS]]]]\n");
        return 2;
    }
    printf("bench_file: dir %s, best of %d, pool mem_items = N/100, threads = default\n", dir,
           reps);
    bench(dir, 16 << 10, n16, reps);
    bench(dir, 1 << 20, n1m, reps);
    return 0;
}
