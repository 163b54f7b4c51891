/* test_map_bytes.c -- fbk_map_put_bytes / fbk_map_get_bytes (the byte-level
 * put and get of the Python package) and the backend table's version-6
 * write_names they use: values written straight from memory into the
 * location with their bindings (no spill copy), read straight from the
 * location into the caller's buffer (no item), checked against the frame's
 * checksum; the fallbacks on a table without write_names/load_persisted. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S(x) x, sizeof x - 1

/* ------------------------------------------- a counting lmdb: wrapper */

static const fbk_backend_ops *inner;
static fbk_backend_ops wrap;
static atomic_int n_store, n_store_many, n_write_names, n_load_persisted;
static atomic_int damage; /* load_persisted flips a payload byte */

static int w_store(void *self, const fbk_key *key, size_t len, fbk_fill_fn fill, void *arg)
{
    atomic_fetch_add(&n_store, 1);
    return inner->store(self, key, len, fill, arg);
}

static int w_store_many(void *self, fbk_store_req *reqs, size_t n)
{
    atomic_fetch_add(&n_store_many, 1);
    return inner->store_many(self, reqs, n);
}

static int w_write_names(void *self, void *loc, const fbk_frame_req *reqs, size_t n,
                         const fbk_name_op *ops, size_t nops)
{
    atomic_fetch_add(&n_write_names, 1);
    return inner->write_names(self, loc, reqs, n, ops, nops);
}

typedef struct {
    fbk_read_fn read;
    void *arg;
} flip_ctx;

static int flip_read(const void *src, size_t len, void *arg)
{
    flip_ctx *c = arg;
    unsigned char *copy = malloc(len ? len : 1);
    memcpy(copy, src, len);
    if (len > 24)
        copy[len - 1] ^= 0x40;
    int rc = c->read(copy, len, c->arg);
    free(copy);
    return rc;
}

static int w_load_persisted(void *self, void *loc, const fbk_key *key, fbk_read_fn read, void *arg)
{
    atomic_fetch_add(&n_load_persisted, 1);
    if (!atomic_load(&damage))
        return inner->load_persisted(self, loc, key, read, arg);
    flip_ctx c = {read, arg};
    return inner->load_persisted(self, loc, key, flip_read, &c);
}

/* Opens lmdb:dir through the wrapper; without_v6/without_lp: leave out
 * write_names / load_persisted (the core's fallbacks). */
static void open_wrapped(tu_mapenv *e, const char *dir, const fbk_map_options *o, bool without_v6,
                         bool without_lp)
{
    void *self;
    cr_assert_eq(fbk_backend_lmdb_create(dir, NULL, &inner, &self), 0, "%s", fbk_errmsg());
    wrap = *inner;
    wrap.store = w_store;
    wrap.store_many = w_store_many;
    wrap.write_names = without_v6 ? NULL : w_write_names;
    wrap.load_persisted = without_lp ? NULL : w_load_persisted;
    atomic_store(&n_store, 0);
    atomic_store(&n_store_many, 0);
    atomic_store(&n_write_names, 0);
    atomic_store(&n_load_persisted, 0);
    atomic_store(&damage, 0);
    memset(e, 0, sizeof *e);
    cr_assert_eq(fbk_store_open_backend(&e->s, &wrap, self, NULL), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_pool_create(&e->p, e->s, &fbk_blob_codec, 4), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_open(e->s, "names", &e->loc), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_open(e->p, e->loc, o, &e->m), 0, "%s", fbk_errmsg());
}

/* ------------------------------------------------------------ helpers */

typedef struct {
    unsigned char *p;
    size_t size;
    int calls;
} out_buf;

static void *give(size_t size, void *arg)
{
    out_buf *b = arg;
    b->calls++;
    free(b->p);
    b->p = malloc(size ? size : 1);
    b->size = size;
    return b->p;
}

static void *refuse(size_t size, void *arg)
{
    (void)size;
    (void)arg;
    return NULL;
}

static unsigned char *pattern(size_t n, uint64_t seed)
{
    unsigned char *p = malloc(n ? n : 1);
    tu_fill(p, n, seed);
    return p;
}

static void put_bytes(fbk_map *m, const char *name, size_t n, uint64_t seed)
{
    unsigned char *v = pattern(n, seed);
    cr_assert_eq(fbk_map_put_bytes(m, name, strlen(name), v, n), 0, "%s", fbk_errmsg());
    free(v);
}

static void expect_bytes(fbk_map *m, const char *name, size_t n, uint64_t seed)
{
    out_buf b = {0};
    cr_assert_eq(fbk_map_get_bytes(m, name, strlen(name), give, &b), 0, "%s: %s", name,
                 fbk_errmsg());
    cr_assert_eq(b.calls, 1);
    cr_assert_eq(b.size, n, "%s: %zu bytes, %zu expected", name, b.size, n);
    unsigned char *v = pattern(n, seed);
    cr_assert(memcmp(b.p, v, n) == 0, "%s: other bytes", name);
    free(v);
    free(b.p);
}

/* the same name through fbk_map_get: an item of the same bytes */
static void expect_item(fbk_map *m, const char *name, size_t n, uint64_t seed)
{
    fbk_handle *h;
    cr_assert_eq(fbk_map_get(m, name, strlen(name), &h), 0, "%s", fbk_errmsg());
    const void *obj;
    cr_assert_eq(fbk_load(h, &obj), 0, "%s", fbk_errmsg());
    cr_assert(tu_blob_check(obj, n, seed), "%s: the item holds other bytes", name);
    fbk_unload(h);
    fbk_handle_release(h);
}

static const size_t sizes[] = {0, 1, 100, 16384, 200000};
#define NSIZES (sizeof sizes / sizeof sizes[0])

/* -------------------------------------------------------------- tests */

Test(map_bytes, a_synced_put_writes_straight_into_the_location_with_its_binding)
{
    const char *dir = tu_fresh_dir("map-bytes-synced");
    tu_mapenv e;
    open_wrapped(&e, dir, NULL, false, false);
    char name[32];
    for (size_t i = 0; i < NSIZES; i++) {
        snprintf(name, sizeof name, "v%zu", i);
        put_bytes(e.m, name, sizes[i], 10 + i);
    }
    cr_assert_eq(atomic_load(&n_write_names), (int)NSIZES, "one write_names per synced put");
    cr_assert_eq(atomic_load(&n_store) + atomic_load(&n_store_many), 0,
                 "a put_bytes wrote to the spill area");
    cr_assert_eq(fbk_location_count(e.loc), NSIZES);
    cr_assert_eq(fbk_map_count(e.m), NSIZES);
    cr_assert_eq(fbk_map_bytes(e.m), 0 + 1 + 100 + 16384 + 200000);
    for (size_t i = 0; i < NSIZES; i++) {
        snprintf(name, sizeof name, "v%zu", i);
        expect_bytes(e.m, name, sizes[i], 10 + i);
        expect_item(e.m, name, sizes[i], 10 + i);
    }
    put_bytes(e.m, "v1", 5, 99); /* rebind: the old object goes as an orphan */
    expect_bytes(e.m, "v1", 5, 99);
    cr_assert_eq(fbk_map_sync(e.m), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_count(e.loc), NSIZES);
    cr_assert_eq(tu_map_close(&e), 0, "%s", fbk_errmsg());

    /* a new store reads them from the location, no item registered */
    open_wrapped(&e, dir, NULL, false, false);
    for (size_t i = 0; i < NSIZES; i++) {
        snprintf(name, sizeof name, "v%zu", i);
        expect_bytes(e.m, name, i == 1 ? 5 : sizes[i], i == 1 ? 99 : 10 + i);
    }
    cr_assert_eq(atomic_load(&n_load_persisted), (int)NSIZES);
    out_buf b = {0};
    cr_assert_eq(fbk_map_get_bytes(e.m, S("nope"), give, &b), FBK_ENOTFOUND);
    cr_assert_eq(b.calls, 0);
    cr_assert_eq(fbk_map_get_bytes(e.m, S("v2"), refuse, NULL), FBK_ENOMEM);
    cr_assert_eq(tu_map_close(&e), 0, "%s", fbk_errmsg());
}

Test(map_bytes, nosync_puts_are_read_from_memory_then_bound_by_one_write_at_sync)
{
    const char *dir = tu_fresh_dir("map-bytes-nosync");
    fbk_map_options o = {.flags = FBK_MAP_NOSYNC};
    tu_mapenv e;
    open_wrapped(&e, dir, &o, false, false);
    char name[32];
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "n%d", i);
        put_bytes(e.m, name, 16384, 100 + i);
    }
    cr_assert_eq(atomic_load(&n_write_names), 0, "a NOSYNC put wrote before the sync");
    cr_assert_eq(fbk_location_count(e.loc), 0);
    expect_bytes(e.m, "n7", 16384, 107); /* from the pending copy */
    cr_assert_eq(atomic_load(&n_write_names), 0);
    cr_assert_eq(fbk_map_sync(e.m), 0, "%s", fbk_errmsg());
    cr_assert_eq(atomic_load(&n_write_names), 1, "the batch wrote values and names at once");
    cr_assert_eq(atomic_load(&n_store) + atomic_load(&n_store_many), 0);
    cr_assert_eq(fbk_location_count(e.loc), 50);

    /* fbk_map_get of a pending put_bytes runs its batch first */
    put_bytes(e.m, "late", 777, 5);
    expect_item(e.m, "late", 777, 5);
    cr_assert_eq(atomic_load(&n_write_names), 2);
    cr_assert_eq(tu_map_close(&e), 0, "%s", fbk_errmsg());

    open_wrapped(&e, dir, &o, false, false);
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "n%d", i);
        expect_bytes(e.m, name, 16384, 100 + i);
    }
    expect_bytes(e.m, "late", 777, 5);
    cr_assert_eq(tu_map_close(&e), 0, "%s", fbk_errmsg());
}

Test(map_bytes, past_64_mib_pending_nosync_puts_take_the_spill_area, .timeout = 120)
{
    const char *dir = tu_fresh_dir("map-bytes-bound");
    fbk_map_options o = {.flags = FBK_MAP_NOSYNC};
    tu_mapenv e;
    open_wrapped(&e, dir, &o, false, false);
    char name[32];
    size_t mib = 1 << 20;
    for (int i = 0; i < 70; i++) {
        snprintf(name, sizeof name, "big%d", i);
        put_bytes(e.m, name, mib, 1000 + i);
    }
    cr_assert_eq(atomic_load(&n_write_names), 0);
    cr_assert_gt(atomic_load(&n_store) + atomic_load(&n_store_many), 0,
                 "the puts past 64 MiB pending did not go to the spill area");
    for (int i = 0; i < 70; i += 23) {
        snprintf(name, sizeof name, "big%d", i);
        expect_bytes(e.m, name, mib, 1000 + i);
    }
    cr_assert_eq(tu_map_close(&e), 0, "%s", fbk_errmsg());
    open_wrapped(&e, dir, &o, false, false);
    for (int i = 0; i < 70; i++) {
        snprintf(name, sizeof name, "big%d", i);
        expect_bytes(e.m, name, mib, 1000 + i);
    }
    cr_assert_eq(tu_map_close(&e), 0, "%s", fbk_errmsg());
}

Test(map_bytes, damaged_bytes_are_ecorrupt_naming_the_object)
{
    const char *dir = tu_fresh_dir("map-bytes-damage");
    tu_mapenv e;
    open_wrapped(&e, dir, NULL, false, false);
    put_bytes(e.m, "d", 4096, 3);
    cr_assert_eq(tu_map_close(&e), 0, "%s", fbk_errmsg());
    open_wrapped(&e, dir, NULL, false, false);
    atomic_store(&damage, 1);
    out_buf b = {0};
    cr_assert_eq(fbk_map_get_bytes(e.m, S("d"), give, &b), FBK_ECORRUPT);
    cr_assert(strstr(fbk_errmsg(), "checksum") && strstr(fbk_errmsg(), "names"), "%s",
              fbk_errmsg());
    free(b.p);
    atomic_store(&damage, 0);
    expect_bytes(e.m, "d", 4096, 3);
    cr_assert_eq(tu_map_close(&e), 0, "%s", fbk_errmsg());
}

Test(map_bytes, without_write_names_or_load_persisted_the_core_falls_back)
{
    for (int v = 0; v < 2; v++) {
        char tag[32];
        snprintf(tag, sizeof tag, "map-bytes-fallback-%d", v);
        const char *dir = tu_fresh_dir(tag);
        tu_mapenv e;
        open_wrapped(&e, dir, NULL, true, v == 1);
        put_bytes(e.m, "a", 3000, 1);
        put_bytes(e.m, "b", 0, 2);
        cr_assert_eq(atomic_load(&n_write_names), 0);
        cr_assert_gt(atomic_load(&n_store) + atomic_load(&n_store_many), 0,
                     "without write_names a put goes through the spill area");
        expect_bytes(e.m, "a", 3000, 1);
        expect_bytes(e.m, "b", 0, 2);
        cr_assert_eq(tu_map_close(&e), 0, "%s", fbk_errmsg());
        open_wrapped(&e, dir, NULL, true, v == 1);
        expect_bytes(e.m, "a", 3000, 1);
        expect_bytes(e.m, "b", 0, 2);
        if (v == 1)
            cr_assert_eq(atomic_load(&n_load_persisted), 0);
        cr_assert_eq(tu_map_close(&e), 0, "%s", fbk_errmsg());
    }
}

Test(map_bytes, works_on_every_backend_with_names)
{
    const char *schemes[] = {"mem", "file", "lmdb"};
    for (size_t si = 0; si < 3; si++) {
        char uri[512], tag[64];
        snprintf(tag, sizeof tag, "map-bytes-%s", schemes[si]);
        if (strcmp(schemes[si], "mem") == 0)
            snprintf(uri, sizeof uri, "mem:%s-%d", tag, (int)getpid());
        else
            snprintf(uri, sizeof uri, "%s:%s", schemes[si], tu_fresh_dir(tag));
        tu_mapenv e;
        cr_assert_eq(tu_map_open(&e, uri, "names", 4, NULL, 0), 0, "%s: %s", uri, fbk_errmsg());
        put_bytes(e.m, "x", 12345, 7);
        put_bytes(e.m, "y", 1, 8);
        expect_bytes(e.m, "x", 12345, 7);
        expect_item(e.m, "y", 1, 8);
        cr_assert_eq(fbk_map_remove(e.m, S("x")), 0, "%s", fbk_errmsg());
        out_buf b = {0};
        cr_assert_eq(fbk_map_get_bytes(e.m, S("x"), give, &b), FBK_ENOTFOUND);
        cr_assert_eq(fbk_map_put_bytes(e.m, "", 0, "a", 1), FBK_EINVAL);
        cr_assert_eq(fbk_map_put_bytes(e.m, S("z"), NULL, 1), FBK_EINVAL);
        cr_assert_eq(fbk_map_get_bytes(e.m, S("y"), NULL, NULL), FBK_EINVAL);
        cr_assert_eq(tu_map_close(&e), 0, "%s", fbk_errmsg());
    }
}

/* 8 writers put_bytes (synced: they share batches) while 2 readers read the
 * same names: a reader sees a name unbound or with exactly the bytes of
 * one of its puts, never damage. */
typedef struct {
    fbk_map *m;
    int id;
    atomic_int *stop;
    int bad;
} worker_arg;

#define WRITERS 8
#define PUTS 40

static void *writer(void *p)
{
    worker_arg *a = p;
    char name[32];
    for (int i = 0; i < PUTS; i++) {
        snprintf(name, sizeof name, "w%d-%d", a->id, i % 10);
        unsigned char *v = pattern(3000 + (size_t)i, (uint64_t)(a->id * 1000 + i % 10));
        if (fbk_map_put_bytes(a->m, name, strlen(name), v, 3000 + (size_t)i) != 0)
            a->bad++;
        free(v);
    }
    return NULL;
}

static void *reader(void *p)
{
    worker_arg *a = p;
    char name[32];
    unsigned n = 0;
    while (!atomic_load(a->stop)) {
        int w = (int)(n++ % WRITERS), k = (int)(n % 10);
        snprintf(name, sizeof name, "w%d-%d", w, k);
        out_buf b = {0};
        int rc = fbk_map_get_bytes(a->m, name, strlen(name), give, &b);
        if (rc == 0) {
            size_t i = b.size - 3000;
            unsigned char *v = pattern(b.size, (uint64_t)(w * 1000 + k));
            if (b.size < 3000 || i % 10 != (size_t)k || memcmp(v, b.p, b.size) != 0)
                a->bad++;
            free(v);
        } else if (rc != FBK_ENOTFOUND) {
            a->bad++;
        }
        free(b.p);
    }
    return NULL;
}

Test(map_bytes, concurrent_synced_puts_and_gets, .timeout = 120)
{
    const char *dir = tu_fresh_dir("map-bytes-threads");
    tu_mapenv e;
    open_wrapped(&e, dir, NULL, false, false);
    atomic_int stop = 0;
    pthread_t w[WRITERS], r[2];
    worker_arg wa[WRITERS], ra[2];
    for (int i = 0; i < 2; i++) {
        ra[i] = (worker_arg){e.m, i, &stop, 0};
        cr_assert_eq(pthread_create(&r[i], NULL, reader, &ra[i]), 0);
    }
    for (int i = 0; i < WRITERS; i++) {
        wa[i] = (worker_arg){e.m, i, &stop, 0};
        cr_assert_eq(pthread_create(&w[i], NULL, writer, &wa[i]), 0);
    }
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(w[i], NULL);
        cr_assert_eq(wa[i].bad, 0, "writer %d: %d failed puts", i, wa[i].bad);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(r[i], NULL);
        cr_assert_eq(ra[i].bad, 0, "reader %d: %d wrong reads", i, ra[i].bad);
    }
    cr_assert_lt(atomic_load(&n_write_names), WRITERS * PUTS, "no two puts shared a batch");
    cr_assert_eq(fbk_map_count(e.m), WRITERS * 10);
    /* the second sync waits for the first batch's orphan removal to end */
    cr_assert_eq(fbk_map_sync(e.m), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_sync(e.m), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_count(e.loc), WRITERS * 10, "orphans left behind");
    cr_assert_eq(tu_map_close(&e), 0, "%s", fbk_errmsg());
}
