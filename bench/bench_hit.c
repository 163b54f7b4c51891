/* bench_hit -- the hit path: fbk_load + fbk_unload of values in memory,
 * side by side with a plain LRU cache (a chained hash and one list under
 * one mutex, written here) doing the same work: look up, move to the front,
 * pin, unpin.
 *
 *   usage: bench_hit [PAIRS [ITEMS [MEM_ITEMS]]]
 *          (defaults 2000000 pairs per thread, 1024 items of 64 bytes,
 *           MEM_ITEMS = ITEMS: the segmented LRU's back half is half of them)
 *
 * Each thread draws item indices from its own xorshift sequence.  Prints
 * ns per load+unload pair (per pair, all threads together) at 1 and 2
 * threads and the ratio mutex-LRU / libfbk (> 1: libfbk is faster).
 */
#include <fbk.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

static inline uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* ------------------------------------------------ the plain mutex LRU */
typedef struct ent {
    uint64_t key;
    struct ent *hnext;       /* hash chain */
    struct ent *prev, *next; /* LRU list */
    long pins;
    void *val;
} ent;

typedef struct {
    pthread_mutex_t mu;
    ent **buckets;
    size_t nb;
    ent head;
} mlru;

static void mlru_init(mlru *c, size_t n)
{
    pthread_mutex_init(&c->mu, NULL);
    c->nb = 1;
    while (c->nb < n)
        c->nb <<= 1;
    c->buckets = calloc(c->nb, sizeof *c->buckets);
    c->head.prev = c->head.next = &c->head;
}

static size_t mlru_hash(const mlru *c, uint64_t k)
{
    return (size_t)((k * 0x9e3779b97f4a7c15ull) >> 32) & (c->nb - 1);
}

static void mlru_put(mlru *c, uint64_t key, void *val)
{
    ent *e = calloc(1, sizeof *e);
    e->key = key;
    e->val = val;
    size_t b = mlru_hash(c, key);
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    e->next = c->head.next;
    e->prev = &c->head;
    c->head.next->prev = e;
    c->head.next = e;
}

static ent *mlru_get(mlru *c, uint64_t key)
{
    pthread_mutex_lock(&c->mu);
    ent *e = c->buckets[mlru_hash(c, key)];
    while (e && e->key != key)
        e = e->hnext;
    if (e) {
        e->pins++;
        if (c->head.next != e) {
            e->prev->next = e->next;
            e->next->prev = e->prev;
            e->next = c->head.next;
            e->prev = &c->head;
            c->head.next->prev = e;
            c->head.next = e;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return e;
}

static void mlru_unpin(mlru *c, ent *e)
{
    pthread_mutex_lock(&c->mu);
    e->pins--;
    pthread_mutex_unlock(&c->mu);
}

/* ------------------------------------------------------------ runs */
typedef struct {
    fbk_handle **hs;
    mlru *c;
    size_t items, pairs;
    uint64_t seed;
    volatile uint64_t sink;
} run_arg;

static void *fbk_loop(void *arg)
{
    run_arg *a = arg;
    uint64_t s = a->seed, sum = 0;
    for (size_t i = 0; i < a->pairs; i++) {
        fbk_handle *h = a->hs[xorshift(&s) % a->items];
        const void *obj;
        CHECK(fbk_load(h, &obj));
        sum += ((const fbk_blob *)obj)->data[0];
        fbk_unload(h);
    }
    a->sink = sum;
    return NULL;
}

static void *mlru_loop(void *arg)
{
    run_arg *a = arg;
    uint64_t s = a->seed, sum = 0;
    for (size_t i = 0; i < a->pairs; i++) {
        ent *e = mlru_get(a->c, xorshift(&s) % a->items);
        sum += *(const unsigned char *)e->val;
        mlru_unpin(a->c, e);
    }
    a->sink = sum;
    return NULL;
}

static double run(void *(*fn)(void *), fbk_handle **hs, mlru *c, size_t items, size_t pairs,
                  int threads)
{
    pthread_t t[2];
    run_arg a[2];
    double t0 = bench_now();
    for (int i = 0; i < threads; i++) {
        a[i] = (run_arg){.hs = hs,
                         .c = c,
                         .items = items,
                         .pairs = pairs,
                         .seed = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1)};
        pthread_create(&t[i], NULL, fn, &a[i]);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    return (bench_now() - t0) * 1e9 / (double)(pairs * (size_t)threads);
}

/* RSS of the process in bytes (/proc/self/statm). */
static size_t rss_bytes(void)
{
    long pages = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2)
            res = 0;
        fclose(f);
    }
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

/* bench_hit rss [N]: RSS per item of N (default 1M) 64-byte blobs in a pool
 * that keeps them all in memory. */
static int rss_main(size_t n)
{
    fbk_store *s;
    CHECK(fbk_store_open(&s, "mem:", NULL));
    fbk_pool *p;
    CHECK(fbk_pool_create(&p, s, &fbk_blob_codec, n + 1));
    fbk_handle **hs = malloc(n * sizeof *hs);
    char buf[64];
    memset(buf, 'x', sizeof buf);
    size_t r0 = rss_bytes();
    double t0 = bench_now();
    for (size_t i = 0; i < n; i++)
        CHECK(fbk_insert(p, fbk_blob_new(buf, sizeof buf), &hs[i]));
    double dt = bench_now() - t0;
    size_t r1 = rss_bytes();
    printf("%zu items of 64 bytes: %.1f bytes of RSS per item (blob and handle array "
           "included: %zu), insert %.1f ns (cold)\n",
           n, (double)(r1 - r0) / (double)n, sizeof(fbk_handle *), dt * 1e9 / (double)n);
    for (size_t i = 0; i < n; i++)
        fbk_handle_release(hs[i]);
    free(hs);
    fbk_pool_release(p);
    fbk_store_close(s);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "rss") == 0)
        return rss_main(argc > 2 ? strtoul(argv[2], NULL, 10) : 1000000);
    size_t pairs = argc > 1 ? strtoul(argv[1], NULL, 10) : 2000000;
    size_t items = argc > 2 ? strtoul(argv[2], NULL, 10) : 1024;
    size_t mem = argc > 3 ? strtoul(argv[3], NULL, 10) : items;
    fbk_store *s;
    CHECK(fbk_store_open(&s, "mem:", NULL));
    fbk_pool *p;
    CHECK(fbk_pool_create(&p, s, &fbk_blob_codec, mem));
    fbk_handle **hs = malloc(items * sizeof *hs);
    mlru c;
    mlru_init(&c, items);
    char buf[64];
    memset(buf, 'x', sizeof buf);
    for (size_t i = 0; i < items; i++) {
        CHECK(fbk_insert(p, fbk_blob_new(buf, sizeof buf), &hs[i]));
        void *v = malloc(64);
        memcpy(v, buf, 64);
        mlru_put(&c, i, v);
    }
    printf("hits: %zu items of 64 bytes, pool mem_items %zu, %zu load+unload pairs per thread\n",
           items, mem, pairs);
    for (int threads = 1; threads <= 2; threads++) {
        /* a warm-up of each, then the timed runs back to back */
        run(fbk_loop, hs, &c, items, pairs / 10, threads);
        run(mlru_loop, hs, &c, items, pairs / 10, threads);
        double f = run(fbk_loop, hs, &c, items, pairs, threads);
        double m = run(mlru_loop, hs, &c, items, pairs, threads);
        printf("%d thread%s: libfbk %6.1f ns/pair   mutex LRU %6.1f ns/pair   ratio %.2fx\n",
               threads, threads > 1 ? "s" : " ", f, m, m / f);
    }
    for (size_t i = 0; i < items; i++)
        fbk_handle_release(hs[i]);
    free(hs);
    fbk_pool_release(p);
    fbk_store_close(s);
    return 0;
}
