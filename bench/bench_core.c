/* bench_core -- the core's hot paths on the mem: backend.
 *
 *   usage: bench_core [N]      (default N = 1000000)
 *          bench_core insert [M]  only the resident insert below (M = 1000000;
 *                                 for callgrind --toggle-collect=fbk_insert)
 *
 * Prints ns/op of:
 *   load+unload   fbk_load + fbk_unload of an item in the front half (1 and 2 threads)
 *   insert        fbk_insert into a pool large enough that nothing is evicted
 *                 (cold: N fresh items, each first touch of memory a page
 *                 fault; warm: batches of 1000 inserted and released)
 *   insert+evict  fbk_insert into a pool of 64 slots (eviction writes on the workers)
 *   insert (1M resident, warm)  a pool holding M = 1M items: batches of 1000
 *                 of them released and inserted anew, until each was
 *                 replaced once (the memory is warm, the pool stays full)
 */
#include <fbk.h>

#include "bench_util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

typedef struct {
    fbk_handle *h;
    size_t n;
} loop_arg;

static void *load_loop(void *arg)
{
    loop_arg *a = arg;
    for (size_t i = 0; i < a->n; i++) {
        const void *obj;
        CHECK(fbk_load(a->h, &obj));
        fbk_unload(a->h);
    }
    return NULL;
}

static double bench_load(fbk_pool *p, size_t n, int threads)
{
    fbk_handle *h;
    CHECK(fbk_insert(p, fbk_blob_new("x", 1), &h));
    pthread_t t[8];
    loop_arg a[8];
    double t0 = now();
    for (int i = 0; i < threads; i++) {
        a[i] = (loop_arg){.h = h, .n = n};
        pthread_create(&t[i], NULL, load_loop, &a[i]);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    double dt = now() - t0;
    fbk_handle_release(h);
    return dt / (double)(n * (size_t)threads);
}

static double bench_insert(fbk_store *s, size_t n, size_t mem_items)
{
    fbk_pool *p;
    CHECK(fbk_pool_create(&p, s, &fbk_blob_codec, mem_items));
    fbk_handle **hs = malloc(n * sizeof *hs);
    fbk_blob **bs = malloc(n * sizeof *bs);
    for (size_t i = 0; i < n; i++)
        bs[i] = fbk_blob_new("0123456789abcdef", 16);
    double t0 = now();
    for (size_t i = 0; i < n; i++)
        CHECK(fbk_insert(p, bs[i], &hs[i]));
    double dt = now() - t0;
    CHECK(fbk_store_drain(s));
    for (size_t i = 0; i < n; i++)
        fbk_handle_release(hs[i]);
    CHECK(fbk_store_drain(s));
    fbk_pool_release(p);
    free(hs);
    free(bs);
    return dt / (double)n;
}

static double bench_insert_warm(fbk_store *s, size_t n)
{
    enum { BATCH = 1000 };
    fbk_pool *p;
    CHECK(fbk_pool_create(&p, s, &fbk_blob_codec, 2 * BATCH));
    fbk_handle *hs[BATCH];
    double total = 0;
    for (size_t done = 0; done < n; done += BATCH) {
        fbk_blob *bs[BATCH];
        for (size_t i = 0; i < BATCH; i++)
            bs[i] = fbk_blob_new("0123456789abcdef", 16);
        double t0 = now();
        for (size_t i = 0; i < BATCH; i++)
            CHECK(fbk_insert(p, bs[i], &hs[i]));
        total += now() - t0;
        for (size_t i = 0; i < BATCH; i++)
            fbk_handle_release(hs[i]);
    }
    fbk_pool_release(p);
    return total / (double)n;
}

static double bench_insert_resident(fbk_store *s, size_t n)
{
    enum { BATCH = 1000 };
    n = n / BATCH * BATCH;
    fbk_pool *p;
    CHECK(fbk_pool_create(&p, s, &fbk_blob_codec, n + BATCH));
    fbk_handle **hs = malloc(n * sizeof *hs);
    for (size_t i = 0; i < n; i++)
        CHECK(fbk_insert(p, fbk_blob_new("0123456789abcdef", 16), &hs[i]));
    double total = 0;
    for (size_t done = 0; done < n; done += BATCH) {
        fbk_blob *bs[BATCH];
        for (size_t i = 0; i < BATCH; i++) {
            fbk_handle_release(hs[done + i]);
            bs[i] = fbk_blob_new("0123456789abcdef", 16);
        }
        double t0 = now();
        for (size_t i = 0; i < BATCH; i++)
            CHECK(fbk_insert(p, bs[i], &hs[done + i]));
        total += now() - t0;
    }
    for (size_t i = 0; i < n; i++)
        fbk_handle_release(hs[i]);
    fbk_pool_release(p);
    free(hs);
    return total / (double)n;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "insert") == 0) {
        size_t m = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000000;
        fbk_store *s;
        CHECK(fbk_store_open(&s, "mem:", NULL));
        printf("insert (%zu resident, warm):     %7.1f ns/op\n", m, bench_insert_resident(s, m));
        fbk_store_close(s);
        return 0;
    }
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
    fbk_store *s;
    CHECK(fbk_store_open(&s, "mem:", NULL));
    fbk_pool *p;
    CHECK(fbk_pool_create(&p, s, &fbk_blob_codec, 1024));
    printf("load+unload (front half, 1 thread):  %7.1f ns/op\n", bench_load(p, n, 1));
    printf("load+unload (front half, 2 threads): %7.1f ns/op (per op, both threads)\n",
           bench_load(p, n, 2));
    fbk_pool_release(p);
    printf("insert (no eviction, warm):          %7.1f ns/op\n", bench_insert_warm(s, n));
    printf("insert (no eviction, cold):          %7.1f ns/op\n", bench_insert(s, n, n + 1));
    size_t m = n / 10 ? n / 10 : 1;
    printf("insert (64 slots, evicting):         %7.1f ns/op (caller side; writes on workers)\n",
           bench_insert(s, m, 64));
    printf("insert (1M resident, warm):          %7.1f ns/op\n", bench_insert_resident(s, 1000000));
    fbk_store_close(s);
    return 0;
}
