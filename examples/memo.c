/* memo.c -- persistent memoization with fbk_map_get_or_compute.
 *
 *   memo URI N...
 *
 * "Renders" a 1 MiB image for each argument N (an expensive function: a
 * few million arithmetic steps) and prints a checksum of it.  Results are
 * kept in the map "renders" of the store at URI, so a second run computes
 * nothing: it prints "hit" instead of "computed" for every argument. */
#include <fbk.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RENDER_BYTES (1u << 20)

static unsigned computed;

/* The expensive function: a deterministic 1 MiB rendering of n. */
static int render(const void *name, size_t len, void **obj, void *arg)
{
    (void)arg;
    char text[32];
    snprintf(text, sizeof text, "%.*s", (int)len, (const char *)name);
    uint64_t x = strtoull(text, NULL, 10) * 0x9e3779b97f4a7c15ull + 1;
    fbk_blob *b = fbk_blob_new(NULL, RENDER_BYTES);
    if (!b)
        return FBK_ENOMEM;
    for (size_t i = 0; i < RENDER_BYTES; i++) {
        for (int k = 0; k < 4; k++) /* make it cost something */
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        b->data[i] = (unsigned char)x;
    }
    *obj = b;
    computed++;
    return 0;
}

static uint64_t checksum(const fbk_blob *b)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < b->len; i++)
        h = (h ^ b->data[i]) * 1099511628211ull;
    return h;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s URI N...\n", argv[0]);
        return 2;
    }
    fbk_store *s;
    fbk_pool *p;
    fbk_location *loc;
    fbk_map *m;
    if (fbk_store_open(&s, argv[1], NULL) || fbk_pool_create(&p, s, &fbk_blob_codec, 8) ||
        fbk_location_open(s, "renders", &loc) || fbk_map_open(p, loc, NULL, &m)) {
        fprintf(stderr, "memo: %s\n", fbk_errmsg());
        return 1;
    }
    int status = 0;
    for (int i = 2; i < argc; i++) {
        unsigned before = computed;
        fbk_handle *h = NULL;
        const void *obj;
        int rc = fbk_map_get_or_compute(m, argv[i], strlen(argv[i]), render, NULL, &h);
        if (rc == 0 && (rc = fbk_load(h, &obj)) == 0) {
            printf("%s: %s, checksum %016llx\n", argv[i], computed > before ? "computed" : "hit",
                   (unsigned long long)checksum(obj));
            fbk_unload(h);
        }
        if (rc) {
            fprintf(stderr, "memo: %s: %s\n", argv[i], fbk_errmsg());
            status = 1;
        }
        fbk_handle_release(h); /* NULL: a no-op */
    }
    if (fbk_map_close(m)) {
        fprintf(stderr, "memo: %s\n", fbk_errmsg());
        status = 1;
    }
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
    printf("%u computed\n", computed);
    return status;
}
