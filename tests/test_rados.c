/* test_rados.c -- the rados: backend (docs/rados-backend.md) against the
 * throw-away cluster of tests/cluster/ceph-up.sh, through the public API.
 *
 * $FBK_RADOS_CONF names the cluster's ceph.conf (tests/CMakeLists.txt starts
 * the cluster as a CTest fixture); every test skips when it is missing
 * (librados or the Ceph daemons absent).  Two stores with different local
 * directories stand for two machines sharing the pool. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <libgen.h>
#include <rados/librados.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define POOL "fbk"

static int counter;

/* a URI for a fresh local directory (machine `who`) on the test pool */
static void uri_for(char *out, size_t cap, const char *who, const char *extra)
{
    char name[64];
    snprintf(name, sizeof name, "rados-%s-%d", who, counter++);
    snprintf(out, cap, "rados:%s?pool=" POOL "&conf=%s%s", tu_fresh_dir(name), tu_rados_conf(),
             extra ? extra : "");
}

/* a location (namespace) name no earlier run used */
static void ns_for(char *out, size_t cap, const char *what)
{
    snprintf(out, cap, "%s-%d-%ld-%d", what, (int)getpid(), (long)time(NULL), counter++);
}

typedef struct side {
    char uri[512];
    fbk_store *s;
    fbk_pool *p;
    fbk_location *loc;
} side;

static void side_open(side *x, const char *who, const char *extra, const char *ns)
{
    uri_for(x->uri, sizeof x->uri, who, extra);
    cr_assert_eq(fbk_store_open(&x->s, x->uri, NULL), 0, "%s: %s", x->uri, fbk_errmsg());
    cr_assert_eq(fbk_pool_create(&x->p, x->s, &fbk_blob_codec, 4), 0);
    cr_assert_eq(fbk_location_open(x->s, ns, &x->loc), 0, "%s", fbk_errmsg());
}

static void side_close(side *x)
{
    if (x->loc)
        fbk_location_close(x->loc);
    fbk_pool_release(x->p);
    fbk_store_close(x->s);
}

static void put_persist(side *x, size_t len, uint64_t seed, fbk_key *key)
{
    fbk_handle *h;
    cr_assert_eq(fbk_insert(x->p, tu_blob(len, seed), &h), 0);
    cr_assert_eq(fbk_persist(h, x->loc), 0, "%s", fbk_errmsg());
    fbk_handle_key(h, key);
    fbk_handle_release(h);
}

/* register key from x's location and load it: 0 and the bytes, or the code */
static int get_check(side *x, const fbk_key *key, size_t len, uint64_t seed)
{
    fbk_handle *h;
    int rc = fbk_register(x->p, x->loc, key, &h);
    if (rc)
        return rc;
    const void *obj;
    rc = fbk_load(h, &obj);
    if (rc == 0) {
        cr_assert(tu_blob_check(obj, len, seed), "the object came back with other bytes");
        fbk_unload(h);
    }
    fbk_handle_release(h);
    return rc;
}

/* librados on the test cluster, for what the public API cannot do */
static rados_ioctx_t raw_open(rados_t *cl, const char *ns)
{
    cr_assert_eq(rados_create(cl, NULL), 0);
    cr_assert_eq(rados_conf_read_file(*cl, tu_rados_conf()), 0);
    cr_assert_eq(rados_connect(*cl), 0);
    rados_ioctx_t io;
    cr_assert_eq(rados_ioctx_create(*cl, POOL, &io), 0);
    rados_ioctx_set_namespace(io, ns);
    return io;
}

static void raw_close(rados_t cl, rados_ioctx_t io)
{
    rados_ioctx_destroy(io);
    rados_shutdown(cl);
}

/* ------------------------------------------------------------------ tests */

Test(rados, persist_sync_then_register_from_a_second_store)
{
    TU_NEED_RADOS();
    char ns[128];
    ns_for(ns, sizeof ns, "basic");
    side a, b;
    side_open(&a, "a", NULL, ns);
    fbk_key k1, k2;
    put_persist(&a, 16 << 10, 1, &k1);
    put_persist(&a, 3 << 20, 2, &k2); /* longer than the first read */
    cr_assert_eq(fbk_location_sync(a.loc), 0, "%s", fbk_errmsg());

    side_open(&b, "b", NULL, ns);
    cr_assert_eq(fbk_location_count(b.loc), 2);
    cr_assert(fbk_location_contains(b.loc, &k1));
    cr_assert_eq(get_check(&b, &k1, 16 << 10, 1), 0, "%s", fbk_errmsg());
    cr_assert_eq(get_check(&b, &k2, 3 << 20, 2), 0, "%s", fbk_errmsg());

    /* a removal in A is seen by B after a refresh */
    cr_assert_eq(fbk_location_remove(a.loc, &k1), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_sync(a.loc), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_refresh(b.loc), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_count(b.loc), 1);
    side_close(&a);
    side_close(&b);
}

Test(rados, file_spill_area)
{
    TU_NEED_RADOS();
    char ns[128];
    ns_for(ns, sizeof ns, "filespill");
    side a, b;
    side_open(&a, "fa", "&spill=file", ns);
    fbk_key k;
    put_persist(&a, 100 << 10, 7, &k);
    cr_assert_eq(fbk_location_sync(a.loc), 0, "%s", fbk_errmsg());
    side_open(&b, "fb", "&spill=file&timeout=10", ns);
    cr_assert_eq(get_check(&b, &k, 100 << 10, 7), 0, "%s", fbk_errmsg());
    side_close(&a);
    side_close(&b);
}

Test(rados, namespaces_isolate_locations)
{
    TU_NEED_RADOS();
    char ns1[128], ns2[128];
    ns_for(ns1, sizeof ns1, "iso1");
    ns_for(ns2, sizeof ns2, "iso2");
    side a, b;
    side_open(&a, "ia", NULL, ns1);
    fbk_key k;
    put_persist(&a, 4096, 3, &k);
    cr_assert_eq(fbk_location_sync(a.loc), 0, "%s", fbk_errmsg());
    side_open(&b, "ib", NULL, ns2);
    cr_assert_eq(fbk_location_count(b.loc), 0);
    fbk_handle *h;
    cr_assert_eq(fbk_register(b.p, b.loc, &k, &h), FBK_ENOTFOUND);
    side_close(&a);
    side_close(&b);
}

Test(rados, bad_uris)
{
    TU_NEED_RADOS();
    fbk_store *s;
    char uri[512];
    snprintf(uri, sizeof uri, "rados:%s?conf=%s", tu_fresh_dir("rados-bad"), tu_rados_conf());
    cr_assert_eq(fbk_store_open(&s, uri, NULL), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "pool"), "%s", fbk_errmsg());
    snprintf(uri, sizeof uri, "rados:%s?pool=nosuchpool&conf=%s", tu_fresh_dir("rados-bad"),
             tu_rados_conf());
    cr_assert_eq(fbk_store_open(&s, uri, NULL), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "nosuchpool"), "%s", fbk_errmsg());
    snprintf(uri, sizeof uri, "rados:%s?pool=fbk&spill=mem&conf=%s", tu_fresh_dir("rados-bad"),
             tu_rados_conf());
    cr_assert_eq(fbk_store_open(&s, uri, NULL), FBK_EINVAL);
    snprintf(uri, sizeof uri, "rados:%s?pool=fbk&bogus=1&conf=%s", tu_fresh_dir("rados-bad"),
             tu_rados_conf());
    cr_assert_eq(fbk_store_open(&s, uri, NULL), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "bogus"), "%s", fbk_errmsg());
}

#define S(x) x, sizeof x - 1

Test(rados, maps_put_in_one_store_get_in_another)
{
    TU_NEED_RADOS();
    char ns[128];
    ns_for(ns, sizeof ns, "maps");
    side a, b;
    side_open(&a, "ma", NULL, ns);
    fbk_map *ma, *mb;
    cr_assert_eq(fbk_map_open(a.p, a.loc, NULL, &ma), 0, "%s", fbk_errmsg());
    for (int i = 0; i < 5; i++) {
        char name[32];
        int n = snprintf(name, sizeof name, "result/%d", i);
        fbk_handle *h;
        cr_assert_eq(fbk_insert(a.p, tu_blob(1000 + (size_t)i, (uint64_t)i), &h), 0);
        cr_assert_eq(fbk_map_put(ma, name, (size_t)n, h), 0, "%s", fbk_errmsg());
        fbk_handle_release(h);
    }
    cr_assert_eq(fbk_map_remove(ma, S("result/4")), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_sync(ma), 0, "%s", fbk_errmsg());

    side_open(&b, "mb", NULL, ns);
    cr_assert_eq(fbk_map_open(b.p, b.loc, NULL, &mb), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_count(mb), 4);
    for (int i = 0; i < 4; i++) {
        char name[32];
        int n = snprintf(name, sizeof name, "result/%d", i);
        fbk_handle *h;
        cr_assert_eq(fbk_map_get(mb, name, (size_t)n, &h), 0, "%s", fbk_errmsg());
        const void *obj;
        cr_assert_eq(fbk_load(h, &obj), 0, "%s", fbk_errmsg());
        cr_assert(tu_blob_check(obj, 1000 + (size_t)i, (uint64_t)i));
        fbk_unload(h);
        fbk_handle_release(h);
    }
    fbk_handle *h;
    cr_assert_eq(fbk_map_get(mb, S("result/4"), &h), FBK_ENOTFOUND);
    cr_assert_eq(fbk_map_contains(mb, S("nothing")), 0);
    /* the names object is not a key */
    cr_assert_eq(fbk_location_count(b.loc), 4, "%zu", fbk_location_count(b.loc));
    cr_assert_eq(fbk_map_close(mb), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_close(ma), 0, "%s", fbk_errmsg());
    side_close(&a);
    side_close(&b);
}

Test(rados, damage_written_into_the_cluster_is_ecorrupt)
{
    TU_NEED_RADOS();
    char ns[128];
    ns_for(ns, sizeof ns, "corrupt");
    side a, b;
    side_open(&a, "ca", NULL, ns);
    fbk_key k;
    put_persist(&a, 64 << 10, 5, &k);
    cr_assert_eq(fbk_location_sync(a.loc), 0, "%s", fbk_errmsg());
    rados_t cl;
    rados_ioctx_t io = raw_open(&cl, ns);
    char hex[33];
    fbk_key_format_hex(&k, hex);
    cr_assert_eq(rados_write(io, hex, "garbage!", 8, 4000), 0);
    raw_close(cl, io);

    side_open(&b, "cb", NULL, ns);
    cr_assert_eq(get_check(&b, &k, 64 << 10, 5), FBK_ECORRUPT, "%s", fbk_errmsg());
    side_close(&a);
    side_close(&b);
}

Test(rados, stripes_without_their_head_are_invisible)
{
    TU_NEED_RADOS();
    char ns[128];
    ns_for(ns, sizeof ns, "headless");
    fbk_key k;
    fbk_key_generate(&k);
    char hex[33], oid[128];
    fbk_key_format_hex(&k, hex);
    snprintf(oid, sizeof oid, "__fbk_stripe.%s.%016x.0", hex, 42);
    rados_t cl;
    rados_ioctx_t io = raw_open(&cl, ns);
    cr_assert_eq(rados_write_full(io, oid, "half", 4), 0);
    raw_close(cl, io);
    side b;
    side_open(&b, "hb", NULL, ns);
    cr_assert_eq(fbk_location_count(b.loc), 0);
    fbk_handle *h;
    cr_assert_eq(fbk_register(b.p, b.loc, &k, &h), FBK_ENOTFOUND);
    side_close(&b);
}

Test(rados, a_200_mib_object_round_trips_striped)
{
    TU_NEED_RADOS();
    char ns[128];
    ns_for(ns, sizeof ns, "big");
    size_t len = (size_t)200 << 20;
    side a, b;
    side_open(&a, "ba", NULL, ns);
    fbk_key k;
    put_persist(&a, len, 11, &k);
    cr_assert_eq(fbk_location_sync(a.loc), 0, "%s", fbk_errmsg());

    /* several stripes, each within osd_max_write_size, and one head */
    rados_t cl;
    rados_ioctx_t io = raw_open(&cl, ns);
    rados_list_ctx_t ctx;
    cr_assert_eq(rados_nobjects_list_open(io, &ctx), 0);
    const char *oid;
    int stripes = 0, heads = 0;
    while (rados_nobjects_list_next(ctx, &oid, NULL, NULL) == 0) {
        uint64_t size;
        time_t mt;
        cr_assert_eq(rados_stat(io, oid, &size, &mt), 0);
        if (strncmp(oid, "__fbk_stripe.", 13) == 0) {
            stripes++;
            cr_assert_leq(size, (uint64_t)90 << 20);
        } else {
            heads++;
            cr_assert_lt(size, 4096);
        }
    }
    rados_nobjects_list_close(ctx);
    raw_close(cl, io);
    cr_assert_geq(stripes, 3);
    cr_assert_eq(heads, 1);

    side_open(&b, "bb", NULL, ns);
    cr_assert_eq(fbk_location_count(b.loc), 1);
    cr_assert_eq(get_check(&b, &k, len, 11), 0, "%s", fbk_errmsg());
    /* removing it removes its stripes too */
    cr_assert_eq(fbk_location_remove(b.loc, &k), 0, "%s", fbk_errmsg());
    io = raw_open(&cl, ns);
    cr_assert_eq(rados_nobjects_list_open(io, &ctx), 0);
    cr_assert_eq(rados_nobjects_list_next(ctx, &oid, NULL, NULL), -ENOENT);
    rados_nobjects_list_close(ctx);
    raw_close(cl, io);
    side_close(&a);
    side_close(&b);
}

/* ------------------------------------------------ a cluster that stops */

static int daemon_pids(pid_t pids[2])
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s", tu_rados_conf());
    char *d = dirname(dir);
    const char *names[2] = {"osd", "mon"};
    for (int i = 0; i < 2; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s/run/%s.pid.up", d, names[i]);
        FILE *f = fopen(p, "r");
        if (!f)
            return -1;
        long v = 0;
        int ok = fscanf(f, "%ld", &v) == 1;
        fclose(f);
        if (!ok || v <= 0)
            return -1;
        pids[i] = (pid_t)v;
    }
    return 0;
}

Test(rados, a_stopped_cluster_times_out_and_the_store_recovers)
{
    TU_NEED_RADOS();
    pid_t pids[2];
    if (daemon_pids(pids) != 0)
        cr_skip_test("the cluster's daemon PIDs are unknown (not started by ceph-up.sh)");
    char ns[128];
    ns_for(ns, sizeof ns, "stop");
    side a, b;
    side_open(&a, "ta", "&timeout=3", ns);
    fbk_key k;
    fbk_handle *h;
    cr_assert_eq(fbk_insert(a.p, tu_blob(8192, 21), &h), 0);

    for (int i = 0; i < 2; i++)
        cr_assert_eq(kill(pids[i], SIGSTOP), 0);
    /* persist queues the write; the sync waits for it and times out */
    int persisted = fbk_persist(h, a.loc);
    int synced = persisted ? persisted : fbk_location_sync(a.loc);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", fbk_errmsg());
    fbk_store *s2;
    char uri2[512];
    uri_for(uri2, sizeof uri2, "tb", "&timeout=3");
    int opened = fbk_store_open(&s2, uri2, NULL);
    fbk_location *l2 = NULL;
    int loc_opened = opened ? opened : fbk_location_open(s2, ns, &l2);
    for (int i = 0; i < 2; i++)
        kill(pids[i], SIGCONT);

    cr_assert_eq(synced, FBK_ETIMEDOUT, "%s (%s)", fbk_err_name(synced), msg);
    cr_assert(strstr(msg, "did not answer"), "%s", msg);
    cr_assert_eq(loc_opened, FBK_ETIMEDOUT, "%s", fbk_err_name(loc_opened));
    if (opened == 0)
        fbk_store_close(s2);

    /* the cluster is back: a fresh handle of the location works (a failed
     * sync is final for the old one) */
    cr_assert_eq(fbk_location_sync(a.loc), FBK_ETIMEDOUT);
    fbk_location_close(a.loc);
    cr_assert_eq(fbk_location_open(a.s, ns, &a.loc), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_persist(h, a.loc), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_sync(a.loc), 0, "%s", fbk_errmsg());
    fbk_handle_key(h, &k);
    fbk_handle_release(h);
    side_open(&b, "tc", NULL, ns);
    cr_assert_eq(get_check(&b, &k, 8192, 21), 0, "%s", fbk_errmsg());
    side_close(&a);
    side_close(&b);
}
