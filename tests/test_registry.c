/* test_registry.c -- the scheme registry: a program's own backend opened by
 * URI with its own parameters, parameter checking, duplicate schemes, and the
 * built-ins' parameters (lmdb: map_size/durable_dir, rados:) through it. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* What the test scheme's constructor saw. */
typedef struct seen {
    int calls;
    char arg[64];
    char label[64];
    int has_label;
    uint64_t limit, fast, n;
    unsigned opts_threads;
    unsigned opts_flags;
} seen;

static const fbk_backend_param test_params[] = {
    {"label", FBK_PARAM_STRING, "a name"},
    {"limit", FBK_PARAM_SIZE, "a size"},
    {"fast", FBK_PARAM_BOOL, "a switch"},
    {"n", FBK_PARAM_UINT, "a count"},
    {NULL, FBK_PARAM_STRING, NULL},
};

/* A user backend: the mem: table under a scheme of its own. */
static int test_create(void *ctx, const char *arg, const fbk_backend_params *params,
                       const fbk_store_options *opts, const fbk_backend_ops **ops, void **self)
{
    seen *s = ctx;
    memset(s, 0, sizeof *s);
    s->calls = 1;
    snprintf(s->arg, sizeof s->arg, "%s", arg);
    const char *label = NULL;
    s->has_label = fbk_backend_params_get(params, "label", &label, NULL);
    if (label)
        snprintf(s->label, sizeof s->label, "%s", label);
    fbk_backend_params_get(params, "limit", NULL, &s->limit);
    fbk_backend_params_get(params, "fast", NULL, &s->fast);
    fbk_backend_params_get(params, "n", NULL, &s->n);
    /* the core's parameters are applied to opts, never handed over */
    cr_assert_eq(fbk_backend_params_get(params, "threads", NULL, NULL), 0);
    s->opts_threads = opts->threads;
    s->opts_flags = opts->flags;
    return fbk_backend_mem_create(arg, opts, ops, self);
}

static seen test_seen;
static const fbk_backend_scheme test_scheme = {
    .version = FBK_BACKEND_SCHEME_VERSION,
    .scheme = "regtest",
    .params = test_params,
    .flags = 0,
    .create = test_create,
    .ctx = &test_seen,
};

static void register_test_scheme(void)
{
    int rc = fbk_backend_register(&test_scheme);
    cr_assert(rc == 0 || rc == FBK_EBUSY, "%s", fbk_errmsg());
}

Test(registry, a_user_backend_opens_by_uri_with_its_own_parameters)
{
    register_test_scheme();
    fbk_store *s;
    cr_assert_eq(fbk_store_open(&s, "regtest:shared?label=a%20b&limit=2k&fast=true&n=7&threads=3",
                                NULL),
                 0, "%s", fbk_errmsg());
    cr_assert_eq(test_seen.calls, 1);
    cr_assert_str_eq(test_seen.arg, "shared");
    cr_assert_eq(test_seen.has_label, 1);
    cr_assert_str_eq(test_seen.label, "a b");
    cr_assert_eq(test_seen.limit, 2048);
    cr_assert_eq(test_seen.fast, 1);
    cr_assert_eq(test_seen.n, 7);
    cr_assert_eq(test_seen.opts_threads, 3);
    cr_assert_eq(fbk_store_threads(s), 3);

    /* the store works: a value persisted through it is there for the next
     * store on the same mem: namespace */
    fbk_pool *p;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 4), 0);
    fbk_location *loc;
    cr_assert_eq(fbk_location_open(s, "L", &loc), 0, "%s", fbk_errmsg());
    fbk_handle *h;
    cr_assert_eq(fbk_insert(p, tu_blob(100, 1), &h), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_persist(h, loc), 0, "%s", fbk_errmsg());
    fbk_key k;
    fbk_handle_key(h, &k);
    fbk_handle_release(h);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);

    /* schemes match in any case; absent parameters are absent */
    cr_assert_eq(fbk_store_open(&s, "RegTest:shared", NULL), 0, "%s", fbk_errmsg());
    cr_assert_eq(test_seen.has_label, 0);
    cr_assert_eq(test_seen.limit, 0);
    cr_assert_eq(fbk_location_open(s, "L", &loc), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_contains(loc, &k), 1);
    fbk_location_close(loc);
    fbk_store_close(s);

    /* the core's readonly reaches the constructor's options */
    cr_assert_eq(fbk_store_open(&s, "regtest:shared?readonly=1", NULL), 0, "%s", fbk_errmsg());
    cr_assert(test_seen.opts_flags & FBK_STORE_READONLY);
    fbk_store_close(s);
}

Test(registry, an_unknown_parameter_is_einval_naming_it_and_the_known_ones)
{
    register_test_scheme();
    fbk_store *s = NULL;
    test_seen.calls = 0;
    cr_assert_eq(fbk_store_open(&s, "regtest:x?colour=blue", NULL), FBK_EINVAL);
    cr_assert_eq(test_seen.calls, 0, "the constructor ran");
    const char *m = fbk_errmsg();
    cr_assert(strstr(m, "\"colour\""), "%s", m);
    cr_assert(strstr(m, "regtest"), "%s", m);
    cr_assert(strstr(m, "label") && strstr(m, "limit") && strstr(m, "fast"), "%s", m);
    cr_assert(strstr(m, "threads") && strstr(m, "readonly"), "%s", m);
    /* values are parsed by kind before the constructor runs */
    cr_assert_eq(fbk_store_open(&s, "regtest:x?limit=lots", NULL), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "limit"), "%s", fbk_errmsg());
    cr_assert_eq(fbk_store_open(&s, "regtest:x?fast=maybe", NULL), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "fast"), "%s", fbk_errmsg());
    cr_assert_eq(fbk_store_open(&s, "regtest:x?n=2k", NULL), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "n=2k"), "%s", fbk_errmsg());
    cr_assert_eq(test_seen.calls, 0, "the constructor ran");
}

Test(registry, an_unknown_scheme_lists_the_registered_ones)
{
    register_test_scheme();
    fbk_store *s = NULL;
    cr_assert_eq(fbk_store_open(&s, "nosuch:x", NULL), FBK_EINVAL);
    const char *m = fbk_errmsg();
    cr_assert(strstr(m, "nosuch") && strstr(m, "lmdb:") && strstr(m, "regtest:"), "%s", m);
}

static int never_create(void *ctx, const char *arg, const fbk_backend_params *params,
                        const fbk_store_options *opts, const fbk_backend_ops **ops, void **self)
{
    (void)ctx, (void)arg, (void)params, (void)opts, (void)ops, (void)self;
    return fbk_error_set(FBK_EIO, 0, "never_create ran");
}

Test(registry, a_taken_scheme_is_ebusy_and_a_malformed_table_einval)
{
    static const fbk_backend_scheme dup = {
        FBK_BACKEND_SCHEME_VERSION, "regdup", NULL, 0, never_create, NULL};
    cr_assert_eq(fbk_backend_register(&dup), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_backend_register(&dup), FBK_EBUSY);
    cr_assert(strstr(fbk_errmsg(), "regdup"), "%s", fbk_errmsg());
    static const fbk_backend_scheme lmdb = {
        FBK_BACKEND_SCHEME_VERSION, "lmdb", NULL, 0, never_create, NULL};
    cr_assert_eq(fbk_backend_register(&lmdb), FBK_EBUSY);
    cr_assert_eq(fbk_backend_lookup("lmdb")->create == never_create, 0);

    cr_assert_eq(fbk_backend_register(NULL), FBK_EINVAL);
    static const fbk_backend_scheme v0 = {0, "regv0", NULL, 0, never_create, NULL};
    cr_assert_eq(fbk_backend_register(&v0), FBK_EINVAL);
    static const fbk_backend_scheme upper = {
        FBK_BACKEND_SCHEME_VERSION, "RegUp", NULL, 0, never_create, NULL};
    cr_assert_eq(fbk_backend_register(&upper), FBK_EINVAL);
    static const fbk_backend_scheme colon = {
        FBK_BACKEND_SCHEME_VERSION, "reg:x", NULL, 0, never_create, NULL};
    cr_assert_eq(fbk_backend_register(&colon), FBK_EINVAL);
    static const fbk_backend_scheme nocreate = {
        FBK_BACKEND_SCHEME_VERSION, "regnc", NULL, 0, NULL, NULL};
    cr_assert_eq(fbk_backend_register(&nocreate), FBK_EINVAL);
    static const fbk_backend_param clash[] = {{"threads", FBK_PARAM_UINT, NULL}, {NULL, 0, NULL}};
    static const fbk_backend_scheme core = {
        FBK_BACKEND_SCHEME_VERSION, "regcore", clash, 0, never_create, NULL};
    cr_assert_eq(fbk_backend_register(&core), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "core"), "%s", fbk_errmsg());
    cr_assert_null(fbk_backend_lookup("regcore"));
}

Test(registry, a_scheme_that_needs_an_argument_refuses_none)
{
    static const fbk_backend_scheme needs = {
        FBK_BACKEND_SCHEME_VERSION, "regneeds", NULL, FBK_BACKEND_SCHEME_NEEDS_ARG, never_create,
        NULL};
    int rc = fbk_backend_register(&needs);
    cr_assert(rc == 0 || rc == FBK_EBUSY);
    fbk_store *s = NULL;
    cr_assert_eq(fbk_store_open(&s, "regneeds:", NULL), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "names no directory"), "%s", fbk_errmsg());
    /* with one, the constructor runs and its failure is the open's */
    cr_assert_eq(fbk_store_open(&s, "regneeds:d", NULL), FBK_EIO);
    cr_assert(strstr(fbk_errmsg(), "never_create ran"), "%s", fbk_errmsg());
}

Test(registry, lookup_tells_the_builtins_and_their_parameters)
{
    const fbk_backend_scheme *l = fbk_backend_lookup("LMDB");
    cr_assert_not_null(l);
    cr_assert_str_eq(l->scheme, "lmdb");
    cr_assert(l->flags & FBK_BACKEND_SCHEME_NEEDS_ARG);
    int map_size = 0, durable_dir = 0;
    for (const fbk_backend_param *p = l->params; p && p->name; p++) {
        map_size += strcmp(p->name, "map_size") == 0 && p->kind == FBK_PARAM_SIZE;
        durable_dir += strcmp(p->name, "durable_dir") == 0 && p->kind == FBK_PARAM_STRING;
    }
    cr_assert_eq(map_size + durable_dir, 2);
    cr_assert_not_null(fbk_backend_lookup("file"));
    cr_assert_not_null(fbk_backend_lookup("mem"));
    cr_assert_null(fbk_backend_lookup("nosuch"));
    cr_assert_null(fbk_backend_lookup(NULL));
    cr_assert_eq(fbk_backend_params_get(NULL, "x", NULL, NULL), 0);
}

/* ---- lmdb: map_size and durable_dir, by URI and by the old fields ---- */

static long long data_size(const char *dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    struct stat st;
    /* the space reserved for the map (fallocate, KEEP_SIZE), in 256 KiB */
    return stat(path, &st) == 0 ? (long long)st.st_blocks * 512 / (256 << 10) : -1;
}

/* The space reserved for data.mdb of the durable environment in
 * durable_dir, in 256 KiB units, while a store opened with uri and o is open
 * (lmdb: reserves its map size at open; close gives the unused part back). */
static long long durable_size(const char *uri, const fbk_store_options *o, const char *durable)
{
    fbk_store *s;
    cr_assert_eq(fbk_store_open(&s, uri, o), 0, "%s: %s", uri, fbk_errmsg());
    long long n = data_size(durable);
    fbk_store_close(s);
    return n;
}

static char *dir_copy(const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s", tu_fresh_dir(name));
    return buf;
}

Test(registry, lmdb_map_size_comes_from_the_uri_or_the_old_field)
{
    char uri[600], durable[600], dir[500];
    dir_copy("reg-lmdb-uri", dir, sizeof dir);
    snprintf(durable, sizeof durable, "%s/durable", dir);
    snprintf(uri, sizeof uri, "lmdb:%s?map_size=1m", dir);
    long long n = durable_size(uri, NULL, durable);
    if (n == 0)
        cr_skip_test("the file system of %s does not reserve space (fallocate)", dir);
    cr_assert_eq(n, 4);

    fbk_store_options o = {.map_size = 2 << 20};
    dir_copy("reg-lmdb-field", dir, sizeof dir);
    snprintf(durable, sizeof durable, "%s/durable", dir);
    snprintf(uri, sizeof uri, "lmdb:%s", dir);
    cr_assert_eq(durable_size(uri, &o, durable), 8);

    /* both: the URI parameter wins */
    dir_copy("reg-lmdb-both", dir, sizeof dir);
    snprintf(durable, sizeof durable, "%s/durable", dir);
    snprintf(uri, sizeof uri, "lmdb:%s?map_size=3m", dir);
    cr_assert_eq(durable_size(uri, &o, durable), 12);
}

Test(registry, lmdb_durable_dir_comes_from_the_uri_or_the_old_field)
{
    char uri[1200], dir[500], other[500];
    dir_copy("reg-dd-uri", dir, sizeof dir);
    dir_copy("reg-dd-uri-durable", other, sizeof other);
    snprintf(uri, sizeof uri, "lmdb:%s?durable_dir=%s&map_size=1m", dir, other);
    cr_assert_eq(durable_size(uri, NULL, other), 4);

    dir_copy("reg-dd-field", dir, sizeof dir);
    dir_copy("reg-dd-field-durable", other, sizeof other);
    fbk_store_options o = {.durable_dir = other, .map_size = 1 << 20};
    snprintf(uri, sizeof uri, "lmdb:%s", dir);
    cr_assert_eq(durable_size(uri, &o, other), 4);
}

/* ---- rados: its parameters are checked by the registry (no cluster
 * needed: these fail before connecting) ---- */

Test(registry, rados_parameters_are_checked_before_connecting)
{
    if (!fbk_backend_lookup("rados"))
        cr_skip_test("built without librados");
    char uri[600], d[500];
    fbk_store *s = NULL;
    dir_copy("reg-rados", d, sizeof d);
    snprintf(uri, sizeof uri, "rados:%s?pool=p&timeout=soon", d);
    cr_assert_eq(fbk_store_open(&s, uri, NULL), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "timeout"), "%s", fbk_errmsg());
    snprintf(uri, sizeof uri, "rados:%s?pool=p&timeout=0", d);
    cr_assert_eq(fbk_store_open(&s, uri, NULL), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "86400"), "%s", fbk_errmsg());
    snprintf(uri, sizeof uri, "rados:%s?pool=p&map_size=big", d);
    cr_assert_eq(fbk_store_open(&s, uri, NULL), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "map_size"), "%s", fbk_errmsg());
    snprintf(uri, sizeof uri, "rados:%s?timeout=5", d);
    cr_assert_eq(fbk_store_open(&s, uri, NULL), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "pool"), "%s", fbk_errmsg());
    snprintf(uri, sizeof uri, "rados:%s?pool=p&colour=red", d);
    cr_assert_eq(fbk_store_open(&s, uri, NULL), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "colour") && strstr(fbk_errmsg(), "spill"), "%s",
              fbk_errmsg());
}

/* ---- registration is thread-safe ---- */

#define RACERS 8
static const fbk_backend_scheme race_scheme = {
    FBK_BACKEND_SCHEME_VERSION, "regrace", NULL, 0, never_create, NULL};
static fbk_backend_scheme own_schemes[RACERS];
static char own_names[RACERS][16];

/* bit 0: won regrace; bit 1: registered its own; bit 2: found regrace after */
static void *racer(void *arg)
{
    size_t i = (size_t)arg;
    intptr_t r = fbk_backend_register(&race_scheme) == 0;
    r |= (fbk_backend_register(&own_schemes[i]) == 0) << 1;
    r |= (fbk_backend_lookup("regrace") == &race_scheme) << 2;
    return (void *)r;
}

Test(registry, concurrent_registrations_take_each_scheme_once)
{
    pthread_t t[RACERS];
    for (size_t i = 0; i < RACERS; i++) {
        snprintf(own_names[i], sizeof own_names[i], "regown%zu", i);
        own_schemes[i] = (fbk_backend_scheme){
            FBK_BACKEND_SCHEME_VERSION, own_names[i], NULL, 0, never_create, NULL};
    }
    for (size_t i = 0; i < RACERS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, racer, (void *)i), 0);
    intptr_t winners = 0;
    for (size_t i = 0; i < RACERS; i++) {
        void *r;
        pthread_join(t[i], &r);
        winners += (intptr_t)r & 1;
        cr_assert_eq((intptr_t)r & 6, 6, "racer %zu: %ld", i, (long)(intptr_t)r);
    }
    cr_assert_eq(winners, 1);
    for (size_t i = 0; i < RACERS; i++)
        cr_assert_eq(fbk_backend_lookup(own_names[i]), &own_schemes[i]);
}
