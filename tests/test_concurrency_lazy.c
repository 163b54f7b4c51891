/* test_concurrency_lazy.c -- loads of lazily registered items (lmdb:) race
 * with the removal of their keys from the location (which copies the bytes
 * into the spill area first) and with evictions; every load is byte-exact.
 * Run under ThreadSanitizer by make test-tsan (label concurrency). */
#include "testutil.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#define KEYS 16
#define LOADERS 3

typedef struct world {
    fbk_store *s;
    fbk_pool *p;
    fbk_location *loc;
    fbk_key keys[KEYS];
    fbk_handle *h[KEYS];
    atomic_int stop, bad, loads;
} world;

static void *loader(void *arg)
{
    world *w = arg;
    for (int round = 0; !atomic_load(&w->stop) || round < 200; round++) {
        int i = round % KEYS;
        const void *obj;
        if (fbk_load(w->h[i], &obj) != 0 || !tu_blob_check(obj, 2000 + (size_t)i, (uint64_t)i))
            atomic_fetch_add(&w->bad, 1);
        else
            fbk_unload(w->h[i]);
        atomic_fetch_add(&w->loads, 1);
        if (round > 5000)
            break;
    }
    return NULL;
}

Test(concurrency_lazy, loads_race_with_removal_from_the_location)
{
    world w = {0};
    char uri[600];
    snprintf(uri, sizeof uri, "lmdb:%s", tu_fresh_dir("conc-lazy"));
    cr_assert_eq(fbk_store_open(&w.s, uri, NULL), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_pool_create(&w.p, w.s, &fbk_blob_codec, 4), 0); /* evictions */
    cr_assert_eq(fbk_location_open(w.s, "L", &w.loc), 0);
    fbk_handle *made[KEYS];
    for (int i = 0; i < KEYS; i++) {
        cr_assert_eq(fbk_insert(w.p, tu_blob(2000 + (size_t)i, (uint64_t)i), &made[i]), 0);
        fbk_handle_key(made[i], &w.keys[i]);
    }
    cr_assert_eq(fbk_save(w.loc, made, KEYS, 0, NULL, NULL), 0);
    for (int i = 0; i < KEYS; i++) {
        fbk_handle_release(made[i]);
        cr_assert_eq(fbk_register(w.p, w.loc, &w.keys[i], &w.h[i]), 0);
    }
    pthread_t th[LOADERS];
    for (int i = 0; i < LOADERS; i++)
        pthread_create(&th[i], NULL, loader, &w);
    for (int i = 0; i < KEYS; i++) /* take every key out of the location */
        cr_assert_eq(fbk_location_remove(w.loc, &w.keys[i]), 0, "%s", fbk_errmsg());
    atomic_store(&w.stop, 1);
    for (int i = 0; i < LOADERS; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(atomic_load(&w.bad), 0, "%d of %d loads failed", atomic_load(&w.bad),
                 atomic_load(&w.loads));
    for (int i = 0; i < KEYS; i++)
        fbk_handle_release(w.h[i]);
    fbk_location_close(w.loc);
    fbk_pool_release(w.p);
    fbk_store_close(w.s);
}
