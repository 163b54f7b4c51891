/* fbk_demo -- the main job: fill a pool far beyond its memory, read
 * everything back, persist, close, reopen, register and check every byte.
 *
 *   usage: fbk_demo [URI] [ITEMS] [MEM_ITEMS] [BYTES]
 *   default: fbk_demo lmdb:./fbk-demo-store 2000 20 16384
 *
 * Exit status: 0 when every object came back byte-exact, 1 otherwise. */
#include <fbk.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fill(unsigned char *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 7;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (unsigned char)x;
    }
}

static int check(const fbk_blob *b, size_t n, uint64_t seed)
{
    unsigned char *want = malloc(n ? n : 1);
    if (!want)
        return 0;
    fill(want, n, seed);
    int ok = b->len == n && memcmp(b->data, want, n) == 0;
    free(want);
    return ok;
}

#define TRY(call)                                                                                  \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_) {                                                                                 \
            fprintf(stderr, "fbk_demo: %s failed: %s (%s)\n", #call, fbk_err_name(rc_),            \
                    fbk_errmsg());                                                                 \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

int main(int argc, char **argv)
{
    const char *uri = argc > 1 ? argv[1] : "lmdb:./fbk-demo-store";
    size_t items = argc > 2 ? strtoul(argv[2], NULL, 10) : 2000;
    size_t mem_items = argc > 3 ? strtoul(argv[3], NULL, 10) : 20;
    size_t bytes = argc > 4 ? strtoul(argv[4], NULL, 10) : 16384;

    printf("libfbk %s demo: %zu objects of %zu bytes through a pool of %zu slots on %s\n",
           fbk_version(), items, bytes, mem_items, uri);
    fbk_store *s;
    TRY(fbk_store_open(&s, uri, NULL));
    fbk_pool *p;
    TRY(fbk_pool_create(&p, s, &fbk_blob_codec, mem_items));
    fbk_handle **h = calloc(items, sizeof *h);
    fbk_key *keys = calloc(items, sizeof *keys);
    if (!h || !keys)
        return 1;
    for (size_t i = 0; i < items; i++) {
        fbk_blob *b = fbk_blob_new(NULL, bytes);
        if (!b)
            return 1;
        fill(b->data, bytes, i);
        TRY(fbk_insert(p, b, &h[i]));
    }
    TRY(fbk_store_drain(s));
    fbk_store_stats st;
    fbk_store_stats_get(s, &st);
    printf("inserted %zu objects: %llu written to the spill area, %llu dropped from memory\n",
           items, (unsigned long long)st.stores, (unsigned long long)st.evictions);

    size_t bad = 0;
    for (size_t i = 0; i < items; i++) {
        const void *obj;
        TRY(fbk_load(h[i], &obj));
        bad += !check(obj, bytes, i);
        fbk_unload(h[i]);
    }
    TRY(fbk_store_drain(s));
    fbk_store_stats_get(s, &st);
    printf("read back %zu objects (%llu loads from the spill area): %zu wrong\n", items,
           (unsigned long long)st.loads, bad);

    fbk_location *loc;
    TRY(fbk_location_open(s, "demo", &loc));
    TRY(fbk_save(loc, h, items, 0, NULL, NULL));
    printf("saved %zu objects to location \"demo\" (synced)\n", fbk_location_count(loc));
    for (size_t i = 0; i < items; i++) {
        fbk_handle_key(h[i], &keys[i]);
        fbk_handle_release(h[i]);
    }
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
    printf("closed the store\n");

    TRY(fbk_store_open(&s, uri, NULL));
    TRY(fbk_pool_create(&p, s, &fbk_blob_codec, mem_items));
    TRY(fbk_location_open(s, "demo", &loc));
    printf("reopened: location \"demo\" holds %zu objects\n", fbk_location_count(loc));
    size_t lost = 0;
    for (size_t i = 0; i < items; i++) {
        fbk_handle *r;
        int rc = fbk_register(p, loc, &keys[i], &r);
        if (rc) {
            lost++;
            continue;
        }
        const void *obj;
        TRY(fbk_load(r, &obj));
        bad += !check(obj, bytes, i);
        fbk_unload(r);
        fbk_handle_release(r);
    }
    printf("registered and loaded %zu objects: %zu lost, %zu wrong\n", items - lost, lost, bad);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
    free(h);
    free(keys);
    printf("%s\n", lost || bad ? "FAILED" : "OK: every byte came back");
    return lost || bad ? 1 : 0;
}
