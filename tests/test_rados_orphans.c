/* test_rados_orphans.c -- rados: removes an object a map's change orphaned
 * only when no binding of the location's name index refers to it, as
 * every process left the index (backend table version 5/6, remove_unbound
 * and remove_unbound_many; the references, tombstones and generation in
 * the omap of __fbk_names, docs/rados-backend.md "Orphans").
 *
 * Process B gets name X (object k1) and puts it under Y; process A, which
 * bound X to k1 and never saw Y, rebinds X: k1 is A's orphan, but Y still
 * names it, so it must stay.  Against the test cluster ($FBK_RADOS_CONF,
 * pool "fbk"); every test skips without it. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fbk_backend.h>
#include <pthread.h>
#include <rados/librados.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef tu_mapenv env;

static void ns_for(char *out, size_t cap, const char *what)
{
    static int counter;
    snprintf(out, cap, "orphans-%s-%d-%ld-%d", what, (int)getpid(), (long)time(NULL), counter++);
}

/* A local DIR named after what and ns (unique per test: run directly,
 * Criterion runs a suite's tests in parallel processes). */
static const char *dir_for(const char *what, const char *ns)
{
    char name[512];
    int n = snprintf(name, sizeof name, "%s-%s", what, ns);
    cr_assert(n > 0 && (size_t)n < sizeof name);
    return tu_fresh_dir(name);
}

/* a store of its own local DIR on pool fbk, location ns, its map */
static int env_open(env *e, const char *what, const char *ns)
{
    char uri[4200];
    snprintf(uri, sizeof uri, "rados:%s?pool=fbk&conf=%s", dir_for(what, ns), tu_rados_conf());
    return tu_map_open(e, uri, ns, 4, NULL, 0);
}

static int put(env *e, const char *name, size_t len, uint64_t seed)
{
    fbk_handle *h;
    if (fbk_insert(e->p, tu_blob(len, seed), &h))
        return -1;
    int rc = fbk_map_put(e->m, name, strlen(name), h);
    fbk_handle_release(h);
    return rc;
}

/* the key X is bound to, in e's view */
static fbk_key key_of(env *e, const char *name)
{
    fbk_handle *h;
    cr_assert_eq(fbk_map_get(e->m, name, strlen(name), &h), 0, "%s", fbk_errmsg());
    fbk_key k;
    fbk_handle_key(h, &k);
    fbk_handle_release(h);
    return k;
}

/* X rebound (its old object orphaned), synced, and one more batch (Z):
 * the removal of orphans has run */
static void rebind_x(env *e)
{
    cr_assert_eq(put(e, "X", 100, 2), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_sync(e->m), 0, "%s", fbk_errmsg());
    cr_assert_eq(put(e, "Z", 10, 3), 0, "%s", fbk_errmsg()); /* one more batch */
}

/* ---------------------------------------------- the namespace, by hand */

typedef struct raw {
    rados_t c;
    rados_ioctx_t io;
} raw;

static void raw_open(raw *r, const char *ns)
{
    cr_assert_eq(rados_create(&r->c, NULL), 0);
    cr_assert_eq(rados_conf_read_file(r->c, tu_rados_conf()), 0);
    cr_assert_eq(rados_connect(r->c), 0);
    cr_assert_eq(rados_ioctx_create(r->c, "fbk", &r->io), 0);
    rados_ioctx_set_namespace(r->io, ns);
}

static void raw_close(raw *r)
{
    rados_ioctx_destroy(r->io);
    rados_shutdown(r->c);
}

/* A fresh location (namespace ns, made from what), its raw view r and a
 * store a whose map binds X to a 3000-byte value. */
static void start_with_x(const char *what, char ns[128], raw *r, env *a)
{
    ns_for(ns, 128, what);
    raw_open(r, ns);
    cr_assert_eq(env_open(a, "rados-orphans-a", ns), 0, "%s", fbk_errmsg());
    cr_assert_eq(put(a, "X", 3000, 1), 0, "%s", fbk_errmsg());
}

static bool exists(raw *r, const fbk_key *k)
{
    char hex[33];
    fbk_key_format_hex(k, hex);
    uint64_t size;
    time_t mtime;
    int rc = rados_stat(r->io, hex, &size, &mtime);
    cr_assert(rc == 0 || rc == -ENOENT, "stat %s: %s", hex, strerror(-rc));
    return rc == 0;
}

/* The omap keys of __fbk_names whose first byte is `first` (0: all) and
 * whose length is klen (0: any); with drop, they are removed. */
static size_t omap_keys(raw *r, char first, size_t klen, bool drop)
{
    char after[128] = "";
    size_t count = 0;
    for (;;) {
        rados_omap_iter_t it = NULL;
        unsigned char more = 0;
        int prval = 0;
        rados_read_op_t op = rados_create_read_op();
        rados_read_op_omap_get_keys2(op, after, 1000, &it, &more, &prval);
        int rc = rados_read_op_operate(op, r->io, "__fbk_names", 0);
        rados_release_read_op(op);
        if (rc == -ENOENT)
            return 0;
        cr_assert_eq(rc, 0, "omap keys: %s", strerror(-rc));
        char *k;
        size_t kl;
        while (rados_omap_get_next2(it, &k, NULL, &kl, NULL) == 0 && k) {
            cr_assert_lt(kl, sizeof after);
            memcpy(after, k, kl);
            after[kl] = '\0';
            if ((first && k[0] != first) || (klen && kl != klen))
                continue;
            count++;
            if (drop) {
                const char *keys[1] = {k};
                size_t lens[1] = {kl};
                rados_write_op_t w = rados_create_write_op();
                rados_write_op_omap_rm_keys2(w, keys, lens, 1);
                cr_assert_eq(rados_write_op_operate(w, r->io, "__fbk_names", NULL, 0), 0);
                rados_release_write_op(w);
            }
        }
        rados_omap_get_end(it);
        if (!more)
            return count;
    }
}

static void omap_put_val(raw *r, const char *key, size_t klen, const char *val)
{
    const char *keys[1] = {key};
    const char *vals[1] = {val};
    size_t kl[1] = {klen}, vl[1] = {strlen(val)};
    rados_write_op_t w = rados_create_write_op();
    rados_write_op_omap_set2(w, keys, vals, kl, vl, 1);
    cr_assert_eq(rados_write_op_operate(w, r->io, "__fbk_names", NULL, 0), 0);
    rados_release_write_op(w);
}

static void omap_put(raw *r, const char *key, size_t klen) { omap_put_val(r, key, klen, ""); }

static void check_y(const char *ns, size_t ylen, uint64_t yseed)
{
    env c;
    cr_assert_eq(env_open(&c, "rados-orphans-c", ns), 0, "%s", fbk_errmsg());
    fbk_handle *h;
    const void *obj;
    cr_assert_eq(fbk_map_get(c.m, "Y", 1, &h), 0, "%s", fbk_errmsg());
    int rc = fbk_load(h, &obj);
    cr_assert_eq(rc, 0, "Y lost its object when A removed its orphan: %s (%s)", fbk_err_name(rc),
                 fbk_errmsg());
    cr_assert(tu_blob_check(obj, ylen, yseed));
    fbk_unload(h);
    fbk_handle_release(h);
    cr_assert_eq(tu_map_close(&c), 0, "%s", fbk_errmsg());
}

/* ------------------------------------------------------ two processes */

/* process B: Y := the object of X */
static int alias(const char *ns)
{
    env e;
    if (env_open(&e, "rados-orphans-b", ns))
        return 10;
    fbk_handle *h;
    if (fbk_map_get(e.m, "X", 1, &h))
        return 11;
    int rc = fbk_map_put(e.m, "Y", 1, h);
    fbk_handle_release(h);
    if (rc)
        return 12;
    return tu_map_close(&e) ? 13 : 0;
}

Test(rados_orphans, an_orphan_another_process_bound_survives)
{
    TU_NEED_RADOS();
    char ns[128];
    ns_for(ns, sizeof ns, "procs");
    int go[2], done[2];
    cr_assert_eq(pipe(go), 0);
    cr_assert_eq(pipe(done), 0);
    /* B forks before A opens anything (librados's threads do not survive
     * a fork) */
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        char c;
        close(go[1]);
        close(done[0]);
        int rc = read(go[0], &c, 1) == 1 ? alias(ns) : 20;
        if (rc)
            fprintf(stderr, "process B: step %d: %s\n", rc, fbk_errmsg());
        unsigned char r = (unsigned char)rc;
        _exit(write(done[1], &r, 1) == 1 ? rc : 21);
    }
    close(go[0]);
    close(done[1]);
    env a;
    cr_assert_eq(env_open(&a, "rados-orphans-a", ns), 0, "%s", fbk_errmsg());
    cr_assert_eq(put(&a, "X", 3000, 1), 0, "%s", fbk_errmsg());
    cr_assert_eq(write(go[1], "g", 1), 1);
    unsigned char r = 99;
    cr_assert_eq(read(done[0], &r, 1), 1);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "process B failed (%d)", r);
    /* A rebinds X: its old object is A's orphan, removed after the sync --
     * unless a binding A never saw (Y) refers to it */
    rebind_x(&a);
    cr_assert_eq(tu_map_close(&a), 0, "%s", fbk_errmsg());

    check_y(ns, 3000, 1);
    env c;
    cr_assert_eq(env_open(&c, "rados-orphans-c", ns), 0, "%s", fbk_errmsg());
    fbk_handle *h;
    const void *obj;
    cr_assert_eq(fbk_map_get(c.m, "X", 1, &h), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_load(h, &obj), 0, "%s", fbk_errmsg());
    cr_assert(tu_blob_check(obj, 100, 2));
    fbk_unload(h);
    fbk_handle_release(h);
    cr_assert_eq(tu_map_close(&c), 0, "%s", fbk_errmsg());
}

/* -------------------------------------------------------- one process */

/* Y is unbound later: the object loses its last binding and the next
 * orphan removal takes it (and leaves no tombstone). */
Test(rados_orphans, an_object_whose_last_binding_went_is_removed)
{
    TU_NEED_RADOS();
    char ns[128];
    raw r;
    env a;
    start_with_x("last", ns, &r, &a);
    fbk_key k1 = key_of(&a, "X");
    fbk_handle *h;
    cr_assert_eq(fbk_map_get(a.m, "X", 1, &h), 0);
    cr_assert_eq(fbk_map_put(a.m, "Y", 1, h), 0, "%s", fbk_errmsg()); /* shared object */
    fbk_handle_release(h);
    cr_assert_eq(put(&a, "X", 100, 2), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_sync(a.m), 0);
    cr_assert(exists(&r, &k1), "Y's object must stay");
    cr_assert_eq(fbk_map_remove(a.m, "Y", 1), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_sync(a.m), 0);
    cr_assert_eq(put(&a, "Z", 10, 3), 0, "%s", fbk_errmsg()); /* one more batch */
    cr_assert(!exists(&r, &k1), "the object bound by no name is removed");
    cr_assert_eq(fbk_location_count(a.loc), 2, "X and Z stay");
    cr_assert_eq(omap_keys(&r, 'x', 33, false), 0, "no tombstone is left");
    cr_assert_eq(omap_keys(&r, 'r', 65, false), 2, "a reference per binding (X, Z)");
    cr_assert_eq(tu_map_close(&a), 0, "%s", fbk_errmsg());
    raw_close(&r);
}

/* An object being removed (its tombstone in the index, as a crash between
 * the mark and the delete leaves it) refuses a binding: no name change of
 * the batch is applied.  A later removal of it finishes the job. */
Test(rados_orphans, a_tombstoned_object_refuses_a_binding)
{
    TU_NEED_RADOS();
    char ns[128];
    raw r;
    env a;
    start_with_x("tomb", ns, &r, &a);
    fbk_key k1 = key_of(&a, "X");
    char tomb[34];
    tomb[0] = 'x';
    fbk_key_format_hex(&k1, tomb + 1);
    omap_put(&r, tomb, 33);
    fbk_handle *h;
    cr_assert_eq(fbk_map_get(a.m, "X", 1, &h), 0);
    int rc = fbk_map_put(a.m, "Y", 1, h);
    fbk_handle_release(h);
    cr_assert_eq(rc, FBK_EINVAL, "a binding of a tombstoned object: %s (%s)", fbk_err_name(rc),
                 fbk_errmsg());
    cr_assert(strstr(fbk_errmsg(), tomb + 1), "the message names the object: %s", fbk_errmsg());
    cr_assert(strstr(fbk_errmsg(), "not applied"), "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_contains(a.m, "Y", 1), 0, "the map's own view has no Y either");
    cr_assert_eq(fbk_map_sync(a.m), 0, "%s", fbk_errmsg());
    cr_assert_eq(tu_map_close(&a), 0, "%s", fbk_errmsg());

    env c;
    cr_assert_eq(env_open(&c, "rados-orphans-c", ns), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_contains(c.m, "Y", 1), 0, "the refused binding is not in the index");
    fbk_key kx = key_of(&c, "X");
    cr_assert(fbk_key_equal(&kx, &k1), "X is as it was");
    cr_assert_eq(omap_keys(&r, 'r', 65, false), 1, "X's reference alone");
    /* X rebound: k1 is c's orphan; the tombstone (no time in it: as old
     * as can be, a crashed removal's) is taken over, the object removed,
     * the tombstone too (with the next batch) */
    rebind_x(&c);
    cr_assert(!exists(&r, &k1));
    cr_assert_eq(omap_keys(&r, 'x', 33, false), 0, "the tombstone went with the object");
    cr_assert_eq(tu_map_close(&c), 0, "%s", fbk_errmsg());
    raw_close(&r);
}

/* A location whose names were written before the references (no "r" keys,
 * no marker): a writer's open builds them, and then an orphan another
 * store bound meanwhile survives. */
Test(rados_orphans, references_of_an_index_from_before_are_built_at_open)
{
    TU_NEED_RADOS();
    char ns[128];
    raw r;
    env a;
    start_with_x("before", ns, &r, &a);
    cr_assert_eq(put(&a, "W", 300, 4), 0, "%s", fbk_errmsg());
    cr_assert_eq(tu_map_close(&a), 0, "%s", fbk_errmsg());
    cr_assert_eq(omap_keys(&r, 'r', 65, false), 2);
    /* as a libfbk before the references left it */
    cr_assert_eq(omap_keys(&r, 'r', 65, true), 2);
    cr_assert_eq(omap_keys(&r, '\x1f', 0, true), 2, "the generation and the marker");
    cr_assert_eq(omap_keys(&r, 0, 0, false), 2, "the two bindings alone");

    /* a read-only store writes nothing (its DIR made by a writer that
     * opened no location) */
    char uri[4200];
    snprintf(uri, sizeof uri, "rados:%s?pool=fbk&conf=%s", dir_for("rados-orphans-ro", ns),
             tu_rados_conf());
    fbk_store *w;
    cr_assert_eq(fbk_store_open(&w, uri, NULL), 0, "%s", fbk_errmsg());
    fbk_store_close(w);
    env ro;
    cr_assert_eq(tu_map_open(&ro, uri, ns, 4, NULL, FBK_STORE_READONLY), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_contains(ro.m, "X", 1), 1);
    cr_assert_eq(tu_map_close(&ro), 0, "%s", fbk_errmsg());
    cr_assert_eq(omap_keys(&r, 0, 0, false), 2, "a read-only store wrote nothing");

    cr_assert_eq(env_open(&a, "rados-orphans-a", ns), 0, "%s", fbk_errmsg());
    cr_assert_eq(omap_keys(&r, 'r', 65, false), 2, "built at the writer's open");
    cr_assert_eq(omap_keys(&r, '\x1f', 0, false), 2, "with the marker and a generation");
    /* another store binds Y to X's object; a's view never sees Y */
    env b;
    cr_assert_eq(env_open(&b, "rados-orphans-b", ns), 0, "%s", fbk_errmsg());
    fbk_handle *h;
    cr_assert_eq(fbk_map_get(b.m, "X", 1, &h), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_put(b.m, "Y", 1, h), 0, "%s", fbk_errmsg());
    fbk_handle_release(h);
    cr_assert_eq(tu_map_close(&b), 0, "%s", fbk_errmsg());
    rebind_x(&a);
    cr_assert_eq(tu_map_close(&a), 0, "%s", fbk_errmsg());
    check_y(ns, 3000, 1);
    raw_close(&r);
}

/* fbk_map_names lists the bindings alone: none of the index's other
 * entries (generation, marker, references, tombstones). */
typedef struct seen {
    char names[16][8];
    size_t n;
} seen;

static int note(const void *name, size_t len, void *arg)
{
    seen *s = arg;
    cr_assert_lt(s->n, 16);
    cr_assert_lt(len, 8);
    memcpy(s->names[s->n], name, len);
    s->names[s->n++][len] = '\0';
    return 0;
}

static int by_str(const void *a, const void *b) { return strcmp(a, b); }

Test(rados_orphans, names_lists_the_bindings_alone)
{
    TU_NEED_RADOS();
    char ns[128];
    ns_for(ns, sizeof ns, "names");
    raw r;
    raw_open(&r, ns);
    env a;
    cr_assert_eq(env_open(&a, "rados-orphans-a", ns), 0, "%s", fbk_errmsg());
    cr_assert_eq(put(&a, "n1", 10, 1), 0, "%s", fbk_errmsg());
    cr_assert_eq(put(&a, "n2", 10, 2), 0, "%s", fbk_errmsg());
    cr_assert_eq(put(&a, "n3", 10, 3), 0, "%s", fbk_errmsg());
    cr_assert_eq(put(&a, "n2", 10, 4), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_remove(a.m, "n3", 2), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_sync(a.m), 0, "%s", fbk_errmsg());
    cr_assert_eq(tu_map_close(&a), 0, "%s", fbk_errmsg());
    /* a stale tombstone too: sorted after the references */
    char tomb[34] = "x";
    fbk_key k;
    fbk_key_generate(&k);
    fbk_key_format_hex(&k, tomb + 1);
    omap_put(&r, tomb, 33);
    cr_assert_gt(omap_keys(&r, 0, 0, false), 2, "the index holds more than bindings");

    env c;
    cr_assert_eq(env_open(&c, "rados-orphans-c", ns), 0, "%s", fbk_errmsg());
    seen s = {0};
    cr_assert_eq(fbk_map_names(c.m, note, &s), 0, "%s", fbk_errmsg());
    qsort(s.names, s.n, sizeof s.names[0], by_str);
    cr_assert_eq(s.n, 2, "%zu names", s.n);
    cr_assert_str_eq(s.names[0], "n1");
    cr_assert_str_eq(s.names[1], "n2");
    cr_assert_eq(fbk_map_count(c.m), 2);
    cr_assert_eq(tu_map_close(&c), 0, "%s", fbk_errmsg());
    raw_close(&r);
}

/* Two stores (threads of this process, each its own local DIR) change one
 * index at once: their writes overtake each other (the generation guard
 * makes the loser read again and retry), every put succeeds, every name
 * ends bound to its last object, and every object orphaned is gone. */
#define RACE_NAMES 30

typedef struct racer {
    char ns[128];
    char uri[4200]; /* made before the threads: tu_fresh_dir's buffer is shared */
    char prefix;
    int rc;
    char err[512];
} racer;

static void *race(void *arg)
{
    racer *x = arg;
    env e;
    x->rc = tu_map_open(&e, x->uri, x->ns, 4, NULL, 0);
    for (int i = 0; i < 2 * RACE_NAMES && !x->rc; i++) {
        char name[8];
        snprintf(name, sizeof name, "%c%d", x->prefix, i % RACE_NAMES);
        fbk_handle *h;
        x->rc = fbk_insert(e.p, tu_blob(100 + (size_t)i, (uint64_t)(x->prefix * 1000 + i)), &h);
        if (!x->rc) {
            x->rc = fbk_map_put(e.m, name, strlen(name), h);
            fbk_handle_release(h);
        }
    }
    if (!x->rc)
        x->rc = fbk_map_sync(e.m);
    if (x->rc)
        snprintf(x->err, sizeof x->err, "%s", fbk_errmsg());
    if (e.m && tu_map_close(&e) && !x->rc) {
        x->rc = -1;
        snprintf(x->err, sizeof x->err, "close: %s", fbk_errmsg());
    }
    return NULL;
}

Test(rados_orphans, two_writers_of_one_index_both_succeed)
{
    TU_NEED_RADOS();
    racer x[2] = {{.prefix = 'a'}, {.prefix = 'b'}};
    ns_for(x[0].ns, sizeof x[0].ns, "race");
    memcpy(x[1].ns, x[0].ns, sizeof x[1].ns);
    for (int i = 0; i < 2; i++) {
        char what[64];
        snprintf(what, sizeof what, "rados-orphans-race-%c", x[i].prefix);
        snprintf(x[i].uri, sizeof x[i].uri, "rados:%s?pool=fbk&conf=%s", dir_for(what, x[i].ns),
                 tu_rados_conf());
    }
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, race, &x[i]), 0);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(x[i].rc, 0, "writer %c: %s", x[i].prefix, x[i].err);
    }
    raw r;
    raw_open(&r, x[0].ns);
    env c;
    cr_assert_eq(env_open(&c, "rados-orphans-c", x[0].ns), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_count(c.m), 2 * RACE_NAMES);
    for (int w = 0; w < 2; w++)
        for (int i = RACE_NAMES; i < 2 * RACE_NAMES; i++) {
            char name[8];
            snprintf(name, sizeof name, "%c%d", x[w].prefix, i % RACE_NAMES);
            fbk_handle *h;
            const void *obj;
            cr_assert_eq(fbk_map_get(c.m, name, strlen(name), &h), 0, "%s: %s", name,
                         fbk_errmsg());
            cr_assert_eq(fbk_load(h, &obj), 0, "%s: %s", name, fbk_errmsg());
            cr_assert(tu_blob_check(obj, 100 + (size_t)i, (uint64_t)(x[w].prefix * 1000 + i)));
            fbk_unload(h);
            fbk_handle_release(h);
        }
    cr_assert_eq(fbk_location_count(c.loc), 2 * RACE_NAMES, "the orphans are gone");
    cr_assert_eq(omap_keys(&r, 'r', 65, false), 2 * RACE_NAMES);
    cr_assert_eq(omap_keys(&r, 'x', 33, false), 0);
    cr_assert_eq(tu_map_close(&c), 0, "%s", fbk_errmsg());
    raw_close(&r);
}

/* An orphan stored striped (its value longer than the stripe size: 4 MiB
 * here, the least osd_max_write_size allows, set through CEPH_ARGS) goes
 * with its stripes. */
static size_t stripes(raw *r)
{
    rados_list_ctx_t ctx;
    cr_assert_eq(rados_nobjects_list_open(r->io, &ctx), 0);
    size_t n = 0;
    const char *oid;
    while (rados_nobjects_list_next(ctx, &oid, NULL, NULL) == 0)
        n += strncmp(oid, "__fbk_stripe.", 13) == 0;
    rados_nobjects_list_close(ctx);
    return n;
}

Test(rados_orphans, a_striped_orphan_goes_with_its_stripes)
{
    TU_NEED_RADOS();
    cr_assert_eq(setenv("CEPH_ARGS", "--osd_max_write_size=4", 1), 0); /* this test's process */
    char ns[128];
    ns_for(ns, sizeof ns, "striped");
    raw r;
    raw_open(&r, ns);
    env a;
    cr_assert_eq(env_open(&a, "rados-orphans-a", ns), 0, "%s", fbk_errmsg());
    cr_assert_eq(put(&a, "X", (size_t)9 << 20, 1), 0, "%s", fbk_errmsg());
    fbk_key k1 = key_of(&a, "X");
    cr_assert_geq(stripes(&r), 3, "9 MiB in stripes of 4 MiB");
    rebind_x(&a);
    cr_assert(!exists(&r, &k1));
    cr_assert_eq(stripes(&r), 0, "the stripes went with their head");
    cr_assert_eq(tu_map_close(&a), 0, "%s", fbk_errmsg());
    raw_close(&r);
}

/* The backend's table directly: remove_unbound_many of more keys than one
 * read of the index takes (256): the referenced ones are kept, the others
 * removed (absent ones count as removed), a tombstone a crash left is
 * taken over and finished, one another removal set a moment ago is left
 * to it; a binding of a removed object is refused; the tombstones of the
 * removed objects go with the next write of the index, or at the close. */
#define MANY 300
#define ABSENT 5

Test(rados_orphans, remove_unbound_many_keeps_the_referenced_ones)
{
    TU_NEED_RADOS();
    char ns[128], arg[4200];
    ns_for(ns, sizeof ns, "many");
    snprintf(arg, sizeof arg, "%s?pool=fbk&conf=%s", dir_for("rados-orphans-many", ns),
             tu_rados_conf());
    raw r;
    raw_open(&r, ns);
    static fbk_key keys[MANY + ABSENT];
    static int removed[MANY + ABSENT];
    char hex[33];
    for (int i = 0; i < MANY + ABSENT; i++) {
        fbk_key_generate(&keys[i]);
        fbk_key_format_hex(&keys[i], hex);
        if (i < MANY)
            cr_assert_eq(rados_write_full(r.io, hex, "v", 1), 0);
    }
    const fbk_backend_ops *ops;
    void *self, *loc;
    cr_assert_eq(fbk_backend_rados_create(arg, NULL, &ops, &self), 0, "%s", fbk_errmsg());
    cr_assert_eq(ops->open_location(self, ns, &loc), 0, "%s", fbk_errmsg());
    cr_assert_not_null(ops->remove_unbound_many);
    fbk_name_op op = {"N", 1, &keys[0], 1};
    cr_assert_eq(ops->name_apply(self, loc, &op, 1), 0, "%s", fbk_errmsg());
    /* references of keys 1..9 as other names' (by hand), a tombstone of 10 */
    for (int i = 1; i < 10; i++) {
        char ref[66] = "r";
        fbk_key_format_hex(&keys[i], ref + 1);
        memset(ref + 33, 'a', 32);
        ref[65] = '\0';
        omap_put(&r, ref, 65);
    }
    char tomb[34] = "x";
    fbk_key_format_hex(&keys[10], tomb + 1);
    omap_put(&r, tomb, 33); /* no time: a crashed removal's */
    char young[34] = "x", now[24];
    fbk_key_format_hex(&keys[11], young + 1);
    snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    omap_put_val(&r, young, 33, now); /* another removal's, under way */
    cr_assert_eq(ops->remove_unbound(self, loc, &keys[0]), 0, "bound by N: kept");
    cr_assert_eq(ops->remove_unbound_many(self, loc, keys, MANY + ABSENT, removed), 0, "%s",
                 fbk_errmsg());
    for (int i = 0; i < MANY + ABSENT; i++) {
        cr_assert_eq(removed[i], i >= 10, "key %d: removed %d", i, removed[i]);
        if (i < MANY)
            cr_assert_eq(exists(&r, &keys[i]), i < 10 || i == 11, "key %d", i);
    }
    /* the tombstones of the removed ones wait for the next write of the
     * index (or the close); the one the "crash" left is among them */
    cr_assert_eq(omap_keys(&r, 'x', 33, false), MANY + ABSENT - 10);
    fbk_name_op again = {"N", 1, &keys[20], 1};
    int rc = ops->name_apply(self, loc, &again, 1);
    cr_assert_eq(rc, FBK_EINVAL, "a binding of a removed object: %s", fbk_err_name(rc));
    fbk_key got;
    uint64_t size;
    cr_assert_eq(ops->name_get(self, loc, "N", 1, &got, &size), 0, "%s", fbk_errmsg());
    cr_assert(fbk_key_equal(&got, &keys[0]), "N is as it was");
    cr_assert_eq(omap_keys(&r, 'x', 33, false), MANY + ABSENT - 10, "a refused write removes none");
    fbk_name_op other = {"O", 1, &keys[1], 1};
    cr_assert_eq(ops->name_apply(self, loc, &other, 1), 0, "%s", fbk_errmsg());
    cr_assert_eq(omap_keys(&r, 'x', 33, false), 1,
                 "removed with the next write, but for the other removal's");
    cr_assert_eq(ops->remove_unbound(self, loc, &keys[0]), 0, "bound by N: kept");
    fbk_name_op drop = {"N", 1, NULL, 0};
    cr_assert_eq(ops->name_apply(self, loc, &drop, 1), 0, "%s", fbk_errmsg());
    cr_assert_eq(ops->remove_unbound(self, loc, &keys[0]), 1, "%s", fbk_errmsg());
    cr_assert(!exists(&r, &keys[0]));
    cr_assert_eq(omap_keys(&r, 'x', 33, false), 2);
    ops->close_location(self, loc);
    cr_assert_eq(omap_keys(&r, 'x', 33, false), 1, "removed at the close");
    cr_assert(exists(&r, &keys[11]), "left to the other removal");
    ops->close(self);
    raw_close(&r);
}

/* A batch of many changes (FBK_MAP_NOSYNC: all applied by one sync): names
 * put twice (the last change wins), names removed, two names sharing one
 * object; afterwards exactly the last bindings are in the index, each with
 * one reference, and only the objects no name refers to are gone. */
Test(rados_orphans, one_batch_of_many_changes_keeps_exactly_the_last_bindings)
{
    TU_NEED_RADOS();
    char ns[128], uri[4200];
    ns_for(ns, sizeof ns, "batch");
    snprintf(uri, sizeof uri, "rados:%s?pool=fbk&conf=%s", dir_for("rados-orphans-batch", ns),
             tu_rados_conf());
    raw r;
    raw_open(&r, ns);
    env e;
    fbk_map_options o = {.flags = FBK_MAP_NOSYNC};
    cr_assert_eq(tu_map_open(&e, uri, ns, 64, &o, 0), 0, "%s", fbk_errmsg());
    char name[32];
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "n%02d", i);
        cr_assert_eq(put(&e, name, 500 + i, 100 + i), 0, "%s", fbk_errmsg());
    }
    cr_assert_eq(fbk_map_sync(e.m), 0, "%s", fbk_errmsg());
    fbk_key first[20];
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "n%02d", i);
        first[i] = key_of(&e, name);
    }
    /* one batch: n00-n04 put again (twice each), n05-n09 removed, n10's
     * object also bound to "share" */
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 5; i++) {
            snprintf(name, sizeof name, "n%02d", i);
            cr_assert_eq(put(&e, name, 700 + i, 1000 * (round + 1) + i), 0, "%s", fbk_errmsg());
        }
    for (int i = 5; i < 10; i++) {
        snprintf(name, sizeof name, "n%02d", i);
        cr_assert_eq(fbk_map_remove(e.m, name, strlen(name)), 0, "%s", fbk_errmsg());
    }
    fbk_handle *h;
    cr_assert_eq(fbk_map_get(e.m, "n10", 3, &h), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_put(e.m, "share", 5, h), 0, "%s", fbk_errmsg());
    fbk_handle_release(h);
    cr_assert_eq(fbk_map_sync(e.m), 0, "%s", fbk_errmsg());
    cr_assert_eq(put(&e, "later", 10, 7), 0, "%s", fbk_errmsg()); /* orphans go after a batch */
    cr_assert_eq(fbk_map_sync(e.m), 0, "%s", fbk_errmsg());
    for (int i = 0; i < 10; i++)
        cr_assert(!exists(&r, &first[i]), "n%02d's first object is bound by no name", i);
    for (int i = 10; i < 20; i++)
        cr_assert(exists(&r, &first[i]), "n%02d's object is still bound", i);
    /* 5 + 10 + share + later bindings, a reference each */
    cr_assert_eq(omap_keys(&r, 0, 32, false), 17, "bindings in the index");
    cr_assert_eq(omap_keys(&r, 'r', 65, false), 17, "a reference per binding");
    cr_assert_eq(tu_map_close(&e), 0, "%s", fbk_errmsg());

    /* what another store reads back */
    cr_assert_eq(tu_map_open(&e, uri, ns, 64, NULL, 0), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_count(e.m), 17);
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "n%02d", i);
        int rc = fbk_map_get(e.m, name, strlen(name), &h);
        if (i >= 5 && i < 10) {
            cr_assert_eq(rc, FBK_ENOTFOUND, "%s was removed", name);
            continue;
        }
        cr_assert_eq(rc, 0, "%s: %s", name, fbk_errmsg());
        const void *obj;
        cr_assert_eq(fbk_load(h, &obj), 0, "%s: %s", name, fbk_errmsg());
        if (i < 5)
            cr_assert(tu_blob_check(obj, 700 + i, 2000 + i), "%s: not the last put", name);
        else
            cr_assert(tu_blob_check(obj, 500 + i, 100 + i), "%s: wrong bytes", name);
        fbk_unload(h);
        fbk_handle_release(h);
    }
    cr_assert_eq(tu_map_close(&e), 0, "%s", fbk_errmsg());
    raw_close(&r);
}
