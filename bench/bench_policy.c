/* bench_policy -- miss ratios of the pool's eviction policies, replayed
 * through the public API (fbk_insert / fbk_load / fbk_unload on mem:).
 *
 *   usage: bench_policy [REQUESTS [KEYS [CACHE_PERMILLE]]]
 *          (defaults: 2000000 requests, 100000 keys, 10 = a 1% cache)
 *
 * Traces:
 *   zipf A      Zipf popularity with exponent A over KEYS keys
 *   scan+zipf   Zipf 0.9 with a one-off scan of 2 x cache new keys after
 *               every 20 x cache requests (the scanned keys never come back)
 *   loop 1.2x   keys 0..1.2 x cache - 1 over and over
 * A request for a key not seen before is an fbk_insert (a compulsory miss);
 * any other is fbk_load + fbk_unload, a miss when the pool reads the value
 * back from the spill area (fbk_pool_stats.misses).  Miss ratio = misses /
 * requests.  Values are 64-byte blobs; the pool's bound is mem_items.
 */
#include <fbk.h>

#include "bench_util.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* xorshift64*: a fixed seed, so every policy replays the same trace */
static uint64_t rnd_state;
static uint64_t rnd(void)
{
    uint64_t x = rnd_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rnd_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}
static double rnd01(void) { return (double)(rnd() >> 11) * (1.0 / 9007199254740992.0); }

/* Zipf(alpha) over n ranks by inverse CDF; ranks shuffled onto keys so that
 * popularity does not follow insertion order. */
typedef struct zipf {
    double *cdf;
    uint32_t *key;
    size_t n;
} zipf;

static zipf zipf_new(size_t n, double alpha)
{
    zipf z = {malloc(n * sizeof(double)), malloc(n * sizeof(uint32_t)), n};
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        sum += 1.0 / pow((double)(i + 1), alpha);
        z.cdf[i] = sum;
    }
    for (size_t i = 0; i < n; i++) {
        z.cdf[i] /= sum;
        z.key[i] = (uint32_t)i;
    }
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = rnd() % (i + 1);
        uint32_t t = z.key[i];
        z.key[i] = z.key[j];
        z.key[j] = t;
    }
    return z;
}

static uint32_t zipf_next(const zipf *z)
{
    double u = rnd01();
    size_t lo = 0, hi = z->n - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (z->cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return z->key[lo];
}

static void zipf_free(zipf *z)
{
    free(z->cdf);
    free(z->key);
}

/* A trace: requests[i] is a key in [0, nkeys). */
typedef struct trace {
    const char *name;
    uint32_t *req;
    size_t n, nkeys;
} trace;

static trace make_zipf(const char *name, size_t n, size_t nkeys, double alpha)
{
    rnd_state = 0x9E3779B97F4A7C15ULL;
    zipf z = zipf_new(nkeys, alpha);
    trace t = {name, malloc(n * sizeof(uint32_t)), n, nkeys};
    for (size_t i = 0; i < n; i++)
        t.req[i] = zipf_next(&z);
    zipf_free(&z);
    return t;
}

static trace make_scan(const char *name, size_t n, size_t nkeys, size_t cache)
{
    rnd_state = 0x9E3779B97F4A7C15ULL;
    zipf z = zipf_new(nkeys, 0.9);
    size_t scan = 2 * cache, every = 20 * cache;
    size_t extra = (n / every + 1) * scan;
    trace t = {name, malloc(n * sizeof(uint32_t)), n, nkeys + extra};
    size_t next_new = nkeys;
    for (size_t i = 0; i < n;) {
        for (size_t j = 0; j < every && i < n; j++)
            t.req[i++] = zipf_next(&z);
        for (size_t j = 0; j < scan && i < n; j++)
            t.req[i++] = (uint32_t)next_new++;
    }
    zipf_free(&z);
    return t;
}

static trace make_loop(const char *name, size_t n, size_t len)
{
    trace t = {name, malloc(n * sizeof(uint32_t)), n, len};
    for (size_t i = 0; i < n; i++)
        t.req[i] = (uint32_t)(i % len);
    return t;
}

static double replay(fbk_store *s, const trace *t, size_t cache, fbk_policy policy)
{
    fbk_pool *p;
    fbk_pool_options o = {.mem_items = cache, .policy = policy};
    CHECK(fbk_pool_create_v2(&p, s, &fbk_blob_codec, &o));
    fbk_handle **h = calloc(t->nkeys, sizeof *h);
    unsigned char bytes[64];
    memset(bytes, 7, sizeof bytes);
    uint64_t cold = 0;
    for (size_t i = 0; i < t->n; i++) {
        uint32_t k = t->req[i];
        if (!h[k]) {
            CHECK(fbk_insert(p, fbk_blob_new(bytes, sizeof bytes), &h[k]));
            cold++;
            continue;
        }
        const void *obj;
        CHECK(fbk_load(h[k], &obj));
        fbk_unload(h[k]);
    }
    fbk_pool_stats st;
    fbk_pool_stats_get(p, &st);
    for (size_t k = 0; k < t->nkeys; k++)
        fbk_handle_release(h[k]);
    free(h);
    fbk_pool_release(p);
    CHECK(fbk_store_drain(s));
    return (double)(cold + st.misses) / (double)t->n;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 2000000;
    size_t nkeys = argc > 2 ? strtoul(argv[2], NULL, 10) : 100000;
    size_t permille = argc > 3 ? strtoul(argv[3], NULL, 10) : 10;
    size_t cache = nkeys * permille / 1000;
    if (cache < 2)
        cache = 2;
    fbk_store *s;
    CHECK(fbk_store_open(&s, "mem:", NULL));
    trace ts[8];
    int nt = 0;
    static const double alphas[] = {0.6, 0.8, 0.9, 1.0, 1.2};
    static char names[5][32];
    for (int i = 0; i < 5; i++) {
        snprintf(names[i], sizeof names[i], "zipf %.1f", alphas[i]);
        ts[nt++] = make_zipf(names[i], n, nkeys, alphas[i]);
    }
    ts[nt++] = make_scan("scan+zipf 0.9", n, nkeys, cache);
    ts[nt++] = make_loop("loop 1.2x", n, cache + cache / 5);
    printf("%zu requests, %zu keys, cache %zu items (64-byte blobs, mem:)\n", n, nkeys, cache);
    printf("%-14s %8s %8s %8s   %s\n", "trace", "SLRU", "SIEVE", "S3-FIFO",
           "misses vs SLRU (SIEVE, S3-FIFO)");
    for (int i = 0; i < nt; i++) {
        double r[3];
        for (int k = 0; k < 3; k++)
            r[k] = replay(s, &ts[i], cache, (fbk_policy)k);
        printf("%-14s %8.4f %8.4f %8.4f   %+.1f%% %+.1f%%\n", ts[i].name, r[0], r[1], r[2],
               100.0 * (r[1] - r[0]) / r[0], 100.0 * (r[2] - r[0]) / r[0]);
        fflush(stdout);
        free(ts[i].req);
    }
    fbk_store_close(s);
    return 0;
}
