/* bench_map.c -- fbk_map put (synced and NOSYNC), get+load, and 16 synced
 * writers, on lmdb: and file:.  bench/bench_map.sh runs it next to python
 * diskcache's Cache.set/get on the same sizes and counts (docs/maps.md).
 *
 *   bench_map DIR N SIZE [SCHEME...]
 *
 * Prints one line per phase: "scheme size phase us_per_op". */
#include "bench_util.h"

#include <fbk.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WRITERS 16

static void die(const char *what)
{
    fprintf(stderr, "bench_map: %s: %s\n", what, fbk_errmsg());
    exit(1);
}

typedef struct env {
    fbk_store *s;
    fbk_pool *p;
    fbk_location *loc;
    fbk_map *m;
} env;

static void env_open(env *e, const char *uri, unsigned flags)
{
    fbk_map_options o = {.flags = flags};
    if (fbk_store_open(&e->s, uri, NULL) || fbk_pool_create(&e->p, e->s, &fbk_blob_codec, 64) ||
        fbk_location_open(e->s, "bench", &e->loc) || fbk_map_open(e->p, e->loc, &o, &e->m))
        die(uri);
}

static void env_close(env *e)
{
    if (fbk_map_close(e->m))
        die("close");
    fbk_location_close(e->loc);
    fbk_pool_release(e->p);
    fbk_store_close(e->s);
}

static void put_one(env *e, const char *prefix, int i, size_t size, const unsigned char *bytes)
{
    char name[64];
    int len = snprintf(name, sizeof name, "%s-%d", prefix, i);
    fbk_handle *h;
    if (fbk_insert(e->p, fbk_blob_new(bytes, size), &h) || fbk_map_put(e->m, name, (size_t)len, h))
        die("put");
    fbk_handle_release(h);
}

typedef struct writer {
    env *e;
    int id, n;
    size_t size;
    const unsigned char *bytes;
} writer;

static void *writer_main(void *arg)
{
    writer *w = arg;
    char prefix[16];
    snprintf(prefix, sizeof prefix, "w%d", w->id);
    for (int i = 0; i < w->n; i++)
        put_one(w->e, prefix, i, w->size, w->bytes);
    return NULL;
}

/* BENCH_MAP_PHASES="put-sync,put-x16" (say) runs only those phases (for
 * strace -c counts of one phase); unset or empty: all of them. */
static int phase_on(const char *phase)
{
    const char *want = getenv("BENCH_MAP_PHASES");
    if (!want || !*want)
        return 1;
    size_t n = strlen(phase);
    for (const char *p = strstr(want, phase); p; p = strstr(p + 1, phase))
        if ((p == want || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
            return 1;
    return 0;
}

static void report(const char *scheme, size_t size, const char *phase, double secs, int n)
{
    printf("%-5s %8zu %-14s %10.1f\n", scheme, size, phase, secs * 1e6 / n);
    fflush(stdout);
}

static void run(const char *dir, const char *scheme, int n, size_t size)
{
    char path[1024], uri[1100];
    snprintf(path, sizeof path, "%s/%s-%zu", dir, scheme, size);
    bench_rmtree(path);
    snprintf(uri, sizeof uri, "%s:%s", scheme, path);
    unsigned char *bytes = malloc(size);
    for (size_t i = 0; i < size; i++)
        bytes[i] = (unsigned char)(i * 131 + 7);

    env e;
    env_open(&e, uri, 0);
    bench_flush(dir);
    double t = bench_now();
    for (int i = 0; i < n && (phase_on("put-sync") || phase_on("get")); i++)
        put_one(&e, "s", i, size, bytes); /* also what get reads */
    if (phase_on("put-sync"))
        report(scheme, size, "put-sync", bench_now() - t, n);
    env_close(&e);

    if (phase_on("put-nosync")) {
        env_open(&e, uri, FBK_MAP_NOSYNC);
        bench_flush(dir);
        t = bench_now();
        for (int i = 0; i < n; i++)
            put_one(&e, "n", i, size, bytes);
        report(scheme, size, "put-nosync", bench_now() - t, n);
        t = bench_now();
        if (fbk_map_sync(e.m))
            die("sync");
        report(scheme, size, "(final sync)", bench_now() - t, n);
        env_close(&e);
    }

    env_open(&e, uri, 0);
    bench_flush(dir);
    t = bench_now();
    for (int i = 0; i < n && phase_on("get"); i++) {
        char name[64];
        int len = snprintf(name, sizeof name, "s-%d", i);
        fbk_handle *h;
        const void *obj;
        if (fbk_map_get(e.m, name, (size_t)len, &h) || fbk_load(h, &obj))
            die("get");
        if (((const fbk_blob *)obj)->len != size)
            die("get: wrong size");
        fbk_unload(h);
        fbk_handle_release(h);
    }
    if (phase_on("get"))
        report(scheme, size, "get+load", bench_now() - t, n);

    writer w[WRITERS];
    pthread_t th[WRITERS];
    int per = n / WRITERS > 0 ? n / WRITERS : 1;
    bench_flush(dir);
    t = bench_now();
    for (int i = 0; i < WRITERS && phase_on("put-x16"); i++) {
        w[i] = (writer){&e, i, per, size, bytes};
        pthread_create(&th[i], NULL, writer_main, &w[i]);
    }
    for (int i = 0; i < WRITERS && phase_on("put-x16"); i++)
        pthread_join(th[i], NULL);
    if (phase_on("put-x16"))
        report(scheme, size, "put-sync-x16", bench_now() - t, per * WRITERS);
    env_close(&e);
    bench_rmtree(path);
    free(bytes);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s DIR N SIZE [SCHEME...]\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[2]);
    size_t size = (size_t)strtoull(argv[3], NULL, 0);
    printf("# scheme  size   phase          us/op (N=%d)\n", n);
    if (argc == 4) {
        run(argv[1], "lmdb", n, size);
        run(argv[1], "file", n, size);
    }
    for (int i = 4; i < argc; i++)
        run(argv[1], argv[i], n, size);
    return 0;
}
