/*
 * bench_rados.c -- the rados: backend against plain librados calls on the
 * same cluster, in one run.
 *
 *   bench_rados CONF [POOL [N16K [N1M [REPS]]]]
 *
 * CONF is a ceph.conf (e.g. the one tests/cluster/ceph-up.sh DIR writes as
 * DIR/ceph.conf), POOL defaults to "fbk".  For 16 KiB and 1 MiB objects
 * (N16K and N1M of them; defaults 2000 and 200), two phases, each timed for
 * libfbk and for librados:
 *   persist+sync  libfbk: fbk_persist of N objects already in the local
 *                 spill area (written there untimed) + fbk_location_sync;
 *                 librados: rados_aio_write_full of N objects of the same
 *                 (framed) length + rados_aio_flush.
 *   register+load libfbk: a second store (another local directory, as on
 *                 another machine) registers and loads each object
 *                 (fbk_register + fbk_load: the object is read from the
 *                 cluster into the spill area, then decoded from it);
 *                 librados: rados_read of each object into a buffer.
 * Each phase runs REPS times (default 3) in a fresh namespace; the fastest
 * run is reported, in MB/s and as libfbk's time over librados's.
 */
#include <fbk.h>
#include <fbk_backend.h>

#include "bench_util.h"

#include <errno.h>
#include <rados/librados.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_rados: %s: %s (%s)\n", what, fbk_err_name(rc), fbk_errmsg());
    exit(1);
}

static void die_rados(const char *what, int r)
{
    fprintf(stderr, "bench_rados: %s: %s\n", what, strerror(-r));
    exit(1);
}

static const char *conf, *pool;
static int run_id;

static fbk_store *open_store(const char *dir)
{
    char uri[1024];
    snprintf(uri, sizeof uri, "rados:%s?pool=%s&conf=%s", dir, pool, conf);
    fbk_store *s;
    int rc = fbk_store_open(&s, uri, NULL);
    if (rc)
        die(uri, rc);
    return s;
}

typedef struct result {
    double fbk_persist, fbk_register, raw_persist, raw_register;
} result;

static double min_d(double a, double b) { return a < b ? a : b; }

static void run_fbk(size_t len, size_t n, const char *base, result *r)
{
    char ns[128], da[600], db[600];
    snprintf(ns, sizeof ns, "bench-fbk-%d-%d", (int)getpid(), run_id++);
    snprintf(da, sizeof da, "%s/a", base);
    snprintf(db, sizeof db, "%s/b", base);
    bench_rmtree(da);
    bench_rmtree(db);
    fbk_store *sa = open_store(da);
    fbk_pool *pa;
    fbk_location *la;
    if (fbk_pool_create(&pa, sa, &fbk_blob_codec, 2) || fbk_location_open(sa, ns, &la))
        die("open A", -1);
    unsigned char *src = malloc(len);
    memset(src, 0x5a, len);
    fbk_handle **h = calloc(n, sizeof *h);
    fbk_key *keys = calloc(n, sizeof *keys);
    for (size_t i = 0; i < n; i++) {
        memcpy(src, &i, sizeof i);
        fbk_blob *b = fbk_blob_new(src, len);
        int rc = fbk_insert(pa, b, &h[i]);
        if (rc == 0)
            rc = fbk_write_now(h[i]); /* into the spill area, untimed */
        if (rc)
            die("insert", rc);
        fbk_handle_key(h[i], &keys[i]);
    }
    double t0 = bench_now();
    for (size_t i = 0; i < n; i++) {
        int rc = fbk_persist(h[i], la);
        if (rc)
            die("persist", rc);
    }
    int rc = fbk_location_sync(la);
    if (rc)
        die("sync", rc);
    r->fbk_persist = min_d(r->fbk_persist, bench_now() - t0);
    for (size_t i = 0; i < n; i++)
        fbk_handle_release(h[i]);

    fbk_store *sb = open_store(db);
    fbk_pool *pb;
    fbk_location *lb;
    if (fbk_pool_create(&pb, sb, &fbk_blob_codec, 2) || fbk_location_open(sb, ns, &lb))
        die("open B", -1);
    t0 = bench_now();
    for (size_t i = 0; i < n; i++) {
        fbk_handle *g;
        const void *obj;
        rc = fbk_register(pb, lb, &keys[i], &g);
        if (rc == 0)
            rc = fbk_load(g, &obj);
        if (rc)
            die("register+load", rc);
        fbk_unload(g);
        fbk_handle_release(g);
    }
    r->fbk_register = min_d(r->fbk_register, bench_now() - t0);
    /* leave the cluster as it was */
    for (size_t i = 0; i < n; i++)
        fbk_location_remove(lb, &keys[i]);
    fbk_location_close(lb);
    fbk_pool_release(pb);
    fbk_store_close(sb);
    fbk_location_close(la);
    fbk_pool_release(pa);
    fbk_store_close(sa);
    free(h);
    free(keys);
    free(src);
    bench_rmtree(da);
    bench_rmtree(db);
}

static void run_raw(rados_t cl, size_t len, size_t n, result *r)
{
    char ns[128];
    snprintf(ns, sizeof ns, "bench-raw-%d-%d", (int)getpid(), run_id++);
    rados_ioctx_t io;
    int e = rados_ioctx_create(cl, pool, &io);
    if (e < 0)
        die_rados("ioctx", e);
    rados_ioctx_set_namespace(io, ns);
    size_t flen = len + 24; /* the same bytes libfbk writes: the framed blob */
    char *src = malloc(flen);
    memset(src, 0x5a, flen);
    rados_completion_t *c = calloc(n, sizeof *c);
    char oid[64];
    double t0 = bench_now();
    for (size_t i = 0; i < n; i++) {
        snprintf(oid, sizeof oid, "obj%zu", i);
        memcpy(src, &i, sizeof i);
        rados_aio_create_completion2(NULL, NULL, &c[i]);
        if ((e = rados_aio_write_full(io, oid, c[i], src, flen)) < 0)
            die_rados("aio_write_full", e);
    }
    rados_aio_flush(io);
    r->raw_persist = min_d(r->raw_persist, bench_now() - t0);
    for (size_t i = 0; i < n; i++) {
        if ((e = rados_aio_get_return_value(c[i])) < 0)
            die_rados("write", e);
        rados_aio_release(c[i]);
    }
    char *dst = malloc(flen);
    t0 = bench_now();
    for (size_t i = 0; i < n; i++) {
        snprintf(oid, sizeof oid, "obj%zu", i);
        if ((e = rados_read(io, oid, dst, flen, 0)) != (int)flen)
            die_rados("read", e < 0 ? e : -EIO);
    }
    r->raw_register = min_d(r->raw_register, bench_now() - t0);
    for (size_t i = 0; i < n; i++) {
        snprintf(oid, sizeof oid, "obj%zu", i);
        rados_remove(io, oid);
    }
    rados_ioctx_destroy(io);
    free(c);
    free(src);
    free(dst);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_rados CONF [POOL [N16K [N1M [REPS]]]]\n");
        return 2;
    }
    conf = argv[1];
    pool = argc > 2 ? argv[2] : "fbk";
    size_t n16 = argc > 3 ? strtoul(argv[3], NULL, 10) : 2000;
    size_t n1m = argc > 4 ? strtoul(argv[4], NULL, 10) : 200;
    int reps = argc > 5 ? atoi(argv[5]) : 3;
    char base[256];
    snprintf(base, sizeof base, "/tmp/bench-rados-%d", (int)getpid());
    bench_rmtree(base);
    mkdir(base, 0755);

    rados_t cl;
    int e = rados_create(&cl, NULL);
    if (e == 0)
        e = rados_conf_read_file(cl, conf);
    if (e == 0)
        e = rados_connect(cl);
    if (e < 0)
        die_rados("connect", e);

    printf("bench_rados: pool %s, conf %s, best of %d\n", pool, conf, reps);
    printf("%-8s %6s  %-14s %10s %10s %7s\n", "size", "n", "phase", "fbk MB/s", "rados MB/s",
           "fbk/rados");
    const size_t sizes[2] = {16 << 10, 1 << 20};
    const size_t counts[2] = {n16, n1m};
    for (int si = 0; si < 2; si++) {
        result r = {1e30, 1e30, 1e30, 1e30};
        for (int k = 0; k < reps; k++) {
            run_fbk(sizes[si], counts[si], base, &r);
            run_raw(cl, sizes[si], counts[si], &r);
        }
        double mb = (double)sizes[si] * (double)counts[si] / 1e6;
        const char *label = si ? "1 MiB" : "16 KiB";
        printf("%-8s %6zu  %-14s %10.1f %10.1f %7.2f\n", label, counts[si], "persist+sync",
               mb / r.fbk_persist, mb / r.raw_persist, r.fbk_persist / r.raw_persist);
        printf("%-8s %6zu  %-14s %10.1f %10.1f %7.2f\n", label, counts[si], "register+load",
               mb / r.fbk_register, mb / r.raw_register, r.fbk_register / r.raw_register);
        fflush(stdout);
    }
    rados_shutdown(cl);
    bench_rmtree(base);
    return 0;
}
