/* test_lmdb.c -- the lmdb: backend, through its ops table and through the
 * public API: round trips, failed fills, locations (names, persist, register,
 * scan of damage, sync across a reopen), the directory lock, map growth from a
 * tiny map, and the spill area being emptied at open. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------ ops helpers */

typedef struct {
    const fbk_backend_ops *ops;
    void *self;
} backend;

static backend open_backend(const char *dir, const fbk_store_options *opts)
{
    backend b;
    int rc = fbk_backend_lmdb_create(dir, opts, &b.ops, &b.self);
    cr_assert_eq(rc, FBK_OK, "fbk_backend_lmdb_create(%s): %s", dir, fbk_errmsg());
    return b;
}


static int store_seed(backend *b, const fbk_key *k, size_t len, uint64_t seed)
{
    tu_bytes want = {len, seed, 0};
    return b->ops->store(b->self, k, len, tu_fill_bytes, &want);
}

static int load_seed(backend *b, const fbk_key *k, size_t len, uint64_t seed)
{
    tu_bytes want = {len, seed, 0};
    return b->ops->load(b->self, k, tu_check_bytes, &want);
}

struct keyset {
    fbk_key keys[64];
    size_t n;
};

static int collect(const fbk_key *key, void *arg)
{
    struct keyset *s = arg;
    if (s->n < 64)
        s->keys[s->n] = *key;
    s->n++;
    return 0;
}

static int keyset_has(const struct keyset *s, const fbk_key *k)
{
    for (size_t i = 0; i < s->n && i < 64; i++)
        if (fbk_key_equal(&s->keys[i], k))
            return 1;
    return 0;
}

/* --------------------------------------------------------------- ops tests */

Test(lmdb_ops, store_load_remove_round_trip)
{
    backend b = open_backend(tu_fresh_dir("ops_round_trip"), NULL);
    cr_assert_str_eq(b.ops->name, "lmdb");
    static const size_t sizes[] = {0, 1, 100, 4096, 70000, 1 << 20};
    fbk_key k[6];
    for (int i = 0; i < 6; i++) {
        fbk_key_generate(&k[i]);
        cr_assert_eq(store_seed(&b, &k[i], sizes[i], 100 + i), FBK_OK, "%s", fbk_errmsg());
    }
    for (int i = 0; i < 6; i++)
        cr_assert_eq(load_seed(&b, &k[i], sizes[i], 100 + i), FBK_OK, "size %zu", sizes[i]);
    cr_assert_eq(b.ops->remove(b.self, &k[2]), FBK_OK);
    cr_assert_eq(load_seed(&b, &k[2], sizes[2], 102), FBK_ENOTFOUND);
    cr_assert(strstr(fbk_errmsg(), "no key") != NULL, "message: %s", fbk_errmsg());
    cr_assert_eq(b.ops->remove(b.self, &k[2]), FBK_ENOTFOUND);
    cr_assert_eq(load_seed(&b, &k[3], sizes[3], 103), FBK_OK);
    b.ops->close(b.self);
}

Test(lmdb_ops, failed_fill_leaves_no_value)
{
    backend b = open_backend(tu_fresh_dir("ops_failed_fill"), NULL);
    fbk_key good, bad;
    fbk_key_generate(&good);
    fbk_key_generate(&bad);
    tu_bytes refuse = {5000, 7, 1};
    cr_assert_eq(b.ops->store(b.self, &bad, 5000, tu_fill_bytes, &refuse), FBK_ECODEC);
    cr_assert_str_eq(fbk_errmsg(), "test: fill refused");
    cr_assert_eq(store_seed(&b, &good, 5000, 8), FBK_OK);
    cr_assert_eq(load_seed(&b, &bad, 5000, 7), FBK_ENOTFOUND);
    cr_assert_eq(load_seed(&b, &good, 5000, 8), FBK_OK);
    /* the key is free again: a later store under it works */
    cr_assert_eq(store_seed(&b, &bad, 10, 9), FBK_OK);
    cr_assert_eq(load_seed(&b, &bad, 10, 9), FBK_OK);
    b.ops->close(b.self);
}

Test(lmdb_ops, location_names_are_validated)
{
    backend b = open_backend(tu_fresh_dir("ops_names"), NULL);
    void *loc = NULL;
    cr_assert_eq(b.ops->open_location(b.self, "", &loc), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "empty") != NULL, "message: %s", fbk_errmsg());
    char name[300];
    memset(name, 'x', 256);
    name[256] = '\0';
    cr_assert_eq(b.ops->open_location(b.self, name, &loc), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "too long") != NULL, "message: %s", fbk_errmsg());
    cr_assert_null(loc);
    name[255] = '\0';
    cr_assert_eq(b.ops->open_location(b.self, name, &loc), FBK_OK, "%s", fbk_errmsg());
    b.ops->close_location(b.self, loc);
    b.ops->close(b.self);
}

Test(lmdb_ops, persist_register_remove_across_reopen)
{
    const char *dir = tu_fresh_dir("ops_persist");
    char d[4096];
    snprintf(d, sizeof d, "%s", dir);
    backend b = open_backend(d, NULL);
    fbk_key k[5];
    void *loc, *other;
    cr_assert_eq(b.ops->open_location(b.self, "main", &loc), FBK_OK);
    cr_assert_eq(b.ops->open_location(b.self, "other", &other), FBK_OK);
    for (int i = 0; i < 5; i++) {
        fbk_key_generate(&k[i]);
        cr_assert_eq(store_seed(&b, &k[i], 3000 * (size_t)(i + 1), i), FBK_OK);
    }
    cr_assert_eq(b.ops->persist(b.self, loc, &k[0]), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(b.ops->persist_many(b.self, loc, &k[1], 3), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(b.ops->persist(b.self, other, &k[4]), FBK_OK);
    fbk_key absent;
    fbk_key_generate(&absent);
    cr_assert_eq(b.ops->persist(b.self, loc, &absent), FBK_ENOTFOUND);
    cr_assert_eq(b.ops->remove_persisted(b.self, loc, &k[3]), FBK_OK);
    cr_assert_eq(b.ops->remove_persisted(b.self, loc, &k[3]), FBK_ENOTFOUND);
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_OK, "%s", fbk_errmsg());
    b.ops->close_location(b.self, loc);
    b.ops->close_location(b.self, other);
    b.ops->close(b.self);

    b = open_backend(d, NULL);
    for (int i = 0; i < 5; i++) /* the spill area was emptied */
        cr_assert_eq(load_seed(&b, &k[i], 3000 * (size_t)(i + 1), i), FBK_ENOTFOUND);
    cr_assert_eq(b.ops->open_location(b.self, "main", &loc), FBK_OK);
    struct keyset s = {.n = 0};
    cr_assert_eq(b.ops->scan(b.self, loc, collect, &s), 0);
    cr_assert_eq(s.n, 3);
    cr_assert(keyset_has(&s, &k[0]) && keyset_has(&s, &k[1]) && keyset_has(&s, &k[2]));
    cr_assert_eq(b.ops->register_key(b.self, loc, &k[0]), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(b.ops->register_many(b.self, loc, &k[1], 2), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(b.ops->register_key(b.self, loc, &k[3]), FBK_ENOTFOUND);
    cr_assert_eq(b.ops->register_key(b.self, loc, &k[4]), FBK_ENOTFOUND); /* in "other" */
    for (int i = 0; i < 3; i++)
        cr_assert_eq(load_seed(&b, &k[i], 3000 * (size_t)(i + 1), i), FBK_OK);
    cr_assert_eq(load_seed(&b, &k[3], 12000, 3), FBK_ENOTFOUND);
    b.ops->close_location(b.self, loc);
    b.ops->close(b.self);
}

Test(lmdb_ops, scan_reports_entries_that_are_not_keys_and_deletes_nothing)
{
    const char *dir = tu_fresh_dir("ops_junk");
    char d[4096], durable[4200];
    snprintf(d, sizeof d, "%s", dir);
    snprintf(durable, sizeof durable, "%s/durable", d);
    backend b = open_backend(d, NULL);
    void *loc;
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(b.ops->open_location(b.self, "loc", &loc), FBK_OK);
    cr_assert_eq(store_seed(&b, &k, 100, 1), FBK_OK);
    cr_assert_eq(b.ops->persist(b.self, loc, &k), FBK_OK);
    b.ops->close_location(b.self, loc);
    b.ops->close(b.self);

    /* plant two entries whose keys are not 16 bytes long */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    cr_assert_eq(mdb_env_create(&env), 0);
    cr_assert_eq(mdb_env_set_maxdbs(env, 4), 0);
    cr_assert_eq(mdb_env_open(env, durable, 0, 0644), 0);
    cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "loc", 0, &dbi), 0);
    MDB_val jk1 = {5, "junk1"}, jk2 = {17, "seventeen-bytes!!"}, jv = {3, "abc"};
    cr_assert_eq(mdb_put(txn, dbi, &jk1, &jv, 0), 0);
    cr_assert_eq(mdb_put(txn, dbi, &jk2, &jv, 0), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    /* lmdb: writes no temporaries: such entries are damage, reported, kept */
    b = open_backend(d, NULL);
    cr_assert_eq(b.ops->open_location(b.self, "loc", &loc), FBK_OK);
    for (int round = 0; round < 2; round++) {
        struct keyset s = {.n = 0};
        cr_assert_eq(b.ops->scan(b.self, loc, collect, &s), FBK_ECORRUPT);
        cr_assert(strstr(fbk_errmsg(), "location loc") && strstr(fbk_errmsg(), "2 entries") &&
                      strstr(fbk_errmsg(), "6a756e6b31") /* "junk1" */,
                  "message: %s", fbk_errmsg());
    }
    b.ops->close_location(b.self, loc);
    b.ops->close(b.self);
}

Test(lmdb_ops, second_open_of_a_directory_is_busy)
{
    const char *dir = tu_fresh_dir("ops_busy");
    char d[4096];
    snprintf(d, sizeof d, "%s", dir);
    backend b = open_backend(d, NULL);
    const fbk_backend_ops *ops = NULL;
    void *self = NULL;
    cr_assert_eq(fbk_backend_lmdb_create(d, NULL, &ops, &self), FBK_EBUSY);
    cr_assert(strstr(fbk_errmsg(), "in use") != NULL, "message: %s", fbk_errmsg());
    cr_assert_null(self);
    b.ops->close(b.self);
    b = open_backend(d, NULL); /* the lock went with the close */
    b.ops->close(b.self);
}

Test(lmdb_ops, durable_dir_option_moves_the_locations)
{
    const char *dir = tu_fresh_dir("ops_durable_dir");
    char d[4096], other[4200], data[4300];
    snprintf(d, sizeof d, "%s/store", dir);
    snprintf(other, sizeof other, "%s/elsewhere/db", dir);
    fbk_store_options o = {0};
    o.durable_dir = other;
    backend b = open_backend(d, &o);
    void *loc;
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(b.ops->open_location(b.self, "x", &loc), FBK_OK);
    cr_assert_eq(store_seed(&b, &k, 10, 1), FBK_OK);
    cr_assert_eq(b.ops->persist(b.self, loc, &k), FBK_OK);
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_OK);
    struct stat st;
    snprintf(data, sizeof data, "%s/data.mdb", other);
    cr_assert_eq(stat(data, &st), 0, "no %s", data);
    snprintf(data, sizeof data, "%s/durable", d);
    cr_assert_neq(stat(data, &st), 0, "%s should not exist", data);
    b.ops->close_location(b.self, loc);
    b.ops->close(b.self);
}

Test(lmdb_ops, maps_grow_from_one_mebibyte)
{
    fbk_store_options o = {0};
    o.map_size = 1 << 20;
    backend b = open_backend(tu_fresh_dir("ops_growth"), &o);
    void *loc;
    cr_assert_eq(b.ops->open_location(b.self, "big", &loc), FBK_OK);
    enum { N = 100, LEN = 512 * 1024 }; /* 50 MiB */
    fbk_key *k = calloc(N, sizeof *k);
    for (int i = 0; i < N; i++) {
        fbk_key_generate(&k[i]);
        cr_assert_eq(store_seed(&b, &k[i], LEN, i), FBK_OK, "store %d: %s", i, fbk_errmsg());
    }
    cr_assert_eq(b.ops->persist_many(b.self, loc, k, N / 2), FBK_OK, "%s", fbk_errmsg());
    for (int i = N / 2; i < N; i++)
        cr_assert_eq(b.ops->persist(b.self, loc, &k[i]), FBK_OK, "%s", fbk_errmsg());
    for (int i = 0; i < N; i++)
        cr_assert_eq(load_seed(&b, &k[i], LEN, i), FBK_OK);
    for (int i = 0; i < N; i++)
        cr_assert_eq(b.ops->remove(b.self, &k[i]), FBK_OK);
    cr_assert_eq(b.ops->register_many(b.self, loc, k, N), FBK_OK, "%s", fbk_errmsg());
    for (int i = 0; i < N; i++)
        cr_assert_eq(load_seed(&b, &k[i], LEN, i), FBK_OK);
    free(k);
    b.ops->close_location(b.self, loc);
    b.ops->close(b.self);
}

Test(lmdb_ops, spill_area_is_emptied_after_a_crash)
{
    const char *dir = tu_fresh_dir("ops_crash");
    char d[4096];
    snprintf(d, sizeof d, "%s", dir);
    fbk_key k[3];
    for (int i = 0; i < 3; i++)
        fbk_key_generate(&k[i]);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) { /* store and die without closing */
        const fbk_backend_ops *ops;
        void *self;
        if (fbk_backend_lmdb_create(d, NULL, &ops, &self) != FBK_OK)
            _exit(2);
        for (int i = 0; i < 3; i++) {
            tu_bytes want = {1000, (uint64_t)i, 0};
            if (ops->store(self, &k[i], 1000, tu_fill_bytes, &want) != FBK_OK)
                _exit(3);
        }
        _exit(0);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed: %d", status);
    backend b = open_backend(d, NULL);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(load_seed(&b, &k[i], 1000, i), FBK_ENOTFOUND);
    b.ops->close(b.self);
}

/* ---------------------------------------------------- public API tests */

static fbk_store *open_store(const char *dir, const fbk_store_options *opts)
{
    char uri[4200];
    snprintf(uri, sizeof uri, "lmdb:%s", dir);
    fbk_store *s = NULL;
    int rc = fbk_store_open(&s, uri, opts);
    cr_assert_eq(rc, FBK_OK, "fbk_store_open(%s): %s", uri, fbk_errmsg());
    return s;
}

static void check_handle(fbk_handle *h, size_t len, uint64_t seed)
{
    const void *obj;
    int rc = fbk_load(h, &obj);
    cr_assert_eq(rc, FBK_OK, "fbk_load: %s", fbk_errmsg());
    cr_assert(tu_blob_check(obj, len, seed), "blob of %zu bytes (seed %llu) differs", len,
              (unsigned long long)seed);
    fbk_unload(h);
}

static size_t blob_len(int i)
{
    /* 1 B up to 1 MiB, spread over the range */
    static const size_t sizes[] = {1, 7, 100, 4000, 4096, 4097, 20000, 65536, 300000, 1 << 20};
    return sizes[i % 10];
}

Test(lmdb, many_blobs_through_a_small_pool)
{
    fbk_store *s = open_store(tu_fresh_dir("api_many"), NULL);
    fbk_pool *p;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 4), FBK_OK);
    enum { N = 120 };
    fbk_handle *h[N];
    for (int i = 0; i < N; i++) {
        fbk_blob *b = tu_blob(blob_len(i), 1000 + i);
        cr_assert_eq(fbk_insert(p, b, &h[i]), FBK_OK, "%s", fbk_errmsg());
    }
    cr_assert_eq(fbk_store_drain(s), FBK_OK, "%s", fbk_errmsg());
    fbk_store_stats st;
    fbk_store_stats_get(s, &st);
    cr_assert_geq(st.stores, N - 4, "only %llu items were spilled",
                  (unsigned long long)st.stores);
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < N; i++)
            check_handle(h[(i * 37) % N], blob_len((i * 37) % N), 1000 + (i * 37) % N);
    fbk_store_stats_get(s, &st);
    cr_assert_geq(st.loads, N - 4);
    for (int i = 0; i < N; i++)
        fbk_handle_release(h[i]);
    fbk_pool_release(p);
    fbk_store_close(s);
}

Test(lmdb, persist_sync_reopen_register_load)
{
    const char *dir = tu_fresh_dir("api_persist");
    char d[4096];
    snprintf(d, sizeof d, "%s", dir);
    enum { N = 20 };
    fbk_key keys[N];
    fbk_store *s = open_store(d, NULL);
    fbk_pool *p;
    fbk_location *loc;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2), FBK_OK);
    cr_assert_eq(fbk_location_open(s, "saved", &loc), FBK_OK, "%s", fbk_errmsg());
    for (int i = 0; i < N; i++) {
        fbk_handle *h;
        cr_assert_eq(fbk_insert(p, tu_blob(blob_len(i), 50 + i), &h), FBK_OK);
        cr_assert_eq(fbk_persist(h, loc), FBK_OK, "%s", fbk_errmsg());
        fbk_handle_key(h, &keys[i]);
        fbk_handle_release(h);
    }
    cr_assert_eq(fbk_location_count(loc), N);
    cr_assert_eq(fbk_location_sync(loc), FBK_OK, "%s", fbk_errmsg());
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);

    s = open_store(d, NULL);
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2), FBK_OK);
    cr_assert_eq(fbk_location_open(s, "saved", &loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_count(loc), N);
    for (int i = 0; i < N; i++) {
        fbk_handle *h;
        cr_assert(fbk_location_contains(loc, &keys[i]));
        cr_assert_eq(fbk_register(p, loc, &keys[i], &h), FBK_OK, "%s", fbk_errmsg());
        check_handle(h, blob_len(i), 50 + i);
        fbk_handle_release(h);
    }
    fbk_key absent;
    fbk_key_generate(&absent);
    fbk_handle *none = NULL;
    cr_assert_eq(fbk_register(p, loc, &absent, &none), FBK_ENOTFOUND);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
}

/* Sharing between processes: tests/test_sharing_lmdb.c.  Here only that a
 * second process is no longer refused. */
Test(lmdb, second_process_opens_the_same_directory)
{
    const char *dir = tu_fresh_dir("api_two_processes");
    char d[4096];
    snprintf(d, sizeof d, "%s", dir);
    fbk_store *s = open_store(d, NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        fbk_store *s2 = NULL;
        int rc = fbk_store_open(&s2, d, NULL); /* a bare path means lmdb: */
        if (rc != FBK_OK)
            fprintf(stderr, "child: %s\n", fbk_errmsg());
        fbk_store_close(s2);
        _exit(rc == FBK_OK ? 0 : 1);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "second process was refused");
    fbk_store_close(s);
}

Test(lmdb, too_long_location_name_is_invalid)
{
    fbk_store *s = open_store(tu_fresh_dir("api_long_name"), NULL);
    char name[1000];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(s, name, &loc), FBK_EINVAL);
    cr_assert_null(loc);
    cr_assert(strstr(fbk_errmsg(), "too long") != NULL, "message: %s", fbk_errmsg());
    cr_assert_eq(fbk_location_open(s, "", &loc), FBK_EINVAL);
    fbk_store_close(s);
}

Test(lmdb, fifty_mebibytes_through_a_one_mebibyte_map)
{
    fbk_store_options o = {0};
    o.map_size = 1 << 20;
    fbk_store *s = open_store(tu_fresh_dir("api_growth"), &o);
    fbk_pool *p;
    fbk_location *loc;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2), FBK_OK);
    cr_assert_eq(fbk_location_open(s, "all", &loc), FBK_OK, "%s", fbk_errmsg());
    enum { N = 200, LEN = 256 * 1024 }; /* 50 MiB */
    fbk_handle **h = calloc(N, sizeof *h);
    for (int i = 0; i < N; i++)
        cr_assert_eq(fbk_insert(p, tu_blob(LEN, i), &h[i]), FBK_OK);
    cr_assert_eq(fbk_store_drain(s), FBK_OK, "%s", fbk_errmsg());
    for (int i = 0; i < N; i++)
        cr_assert_eq(fbk_persist(h[i], loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_sync(loc), FBK_OK, "%s", fbk_errmsg());
    for (int i = N - 1; i >= 0; i--)
        check_handle(h[i], LEN, i);
    for (int i = 0; i < N; i++)
        fbk_handle_release(h[i]);
    free(h);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
}
