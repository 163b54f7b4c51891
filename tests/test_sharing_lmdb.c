/* test_sharing_lmdb.c -- several processes on one lmdb: store, and the
 * read-only opening (contract v1: *Sharing*, *Store: read-only opening*).
 * Other processes are fork()ed children; pipes sequence them (no sleeps). */
#include "testutil.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------- helpers */

/* A child process with a pipe each way. */
typedef struct kid {
    pid_t pid;
    int to;   /* parent -> child */
    int from; /* child -> parent */
} kid;

/* In a child: fail (exit 1) with a message on stderr. */
#define KID_CHECK(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "child, line %d: ", __LINE__);                                         \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, " (last error: %s)\n", fbk_errmsg());                                  \
            _exit(1);                                                                              \
        }                                                                                          \
    } while (0)

typedef int (*kid_fn)(int in, int out, void *arg);

static kid kid_start(kid_fn fn, void *arg)
{
    int a[2], b[2];
    cr_assert_eq(pipe(a), 0);
    cr_assert_eq(pipe(b), 0);
    kid k = {fork(), a[1], b[0]};
    cr_assert_neq(k.pid, -1);
    if (k.pid == 0) {
        close(a[1]);
        close(b[0]);
        _exit(fn(a[0], b[1], arg));
    }
    close(a[0]);
    close(b[1]);
    return k;
}

static int put_bytes(int fd, const void *p, size_t n)
{
    return write(fd, p, n) == (ssize_t)n ? 0 : -1;
}

static int get_bytes(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)p + got, n - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static void say(int fd) { cr_assert_eq(put_bytes(fd, "!", 1), 0); }
static void hear(int fd)
{
    char c;
    cr_assert_eq(get_bytes(fd, &c, 1), 0, "the other process ended early");
}

static void kid_wait(kid *k)
{
    int status;
    cr_assert_eq(waitpid(k->pid, &status, 0), k->pid);
    close(k->to);
    close(k->from);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the other process failed (status %d): see its message above", status);
}

static void open_store(fbk_store **s, const char *dir, unsigned flags, size_t map_size)
{
    char uri[4200];
    snprintf(uri, sizeof uri, "lmdb:%s", dir);
    fbk_store_options o = {.flags = flags, .map_size = map_size};
    cr_assert_eq(fbk_store_open(s, uri, &o), 0, "%s", fbk_errmsg());
}

/* Registers key from loc into p and checks it holds tu_blob(len, seed). */
static int load_ok(fbk_pool *p, fbk_location *loc, const fbk_key *key, size_t len, uint64_t seed)
{
    fbk_handle *h;
    if (fbk_register(p, loc, key, &h) != 0)
        return 0;
    const void *obj;
    int ok = fbk_load(h, &obj) == 0 && tu_blob_check(obj, len, seed);
    if (ok)
        fbk_unload(h);
    fbk_handle_release(h);
    return ok;
}

/* Persists tu_blob(len, seed) into loc (synced); its key in *key. */
static int persist_blob(fbk_pool *p, fbk_location *loc, size_t len, uint64_t seed, fbk_key *key)
{
    fbk_handle *h;
    if (fbk_insert(p, tu_blob(len, seed), &h) != 0)
        return -1;
    fbk_handle_key(h, key);
    int rc = fbk_persist(h, loc);
    fbk_handle_release(h);
    return rc ? rc : fbk_location_sync(loc);
}

/* Every path under dir (relative, sorted, one a line) into a malloc'd
 * string. */
typedef struct listing {
    char **v;
    size_t n, cap;
} listing;

static void list_walk(listing *l, const char *root, const char *rel)
{
    char path[4200];
    snprintf(path, sizeof path, "%s%s%s", root, *rel ? "/" : "", rel);
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char r[4200];
        snprintf(r, sizeof r, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        if (l->n == l->cap) {
            l->cap = l->cap ? 2 * l->cap : 16;
            l->v = realloc(l->v, l->cap * sizeof *l->v);
            cr_assert_not_null(l->v);
        }
        l->v[l->n++] = strdup(r);
        if (e->d_type == DT_DIR)
            list_walk(l, root, r);
    }
    closedir(d);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *listing_of(const char *dir)
{
    listing l = {0};
    list_walk(&l, dir, "");
    if (l.n > 0)
        qsort(l.v, l.n, sizeof *l.v, cmp_str);
    size_t len = 1;
    for (size_t i = 0; i < l.n; i++)
        len += strlen(l.v[i]) + 1;
    char *out = calloc(1, len);
    cr_assert_not_null(out);
    for (size_t i = 0; i < l.n; i++) {
        strcat(out, l.v[i]);
        strcat(out, "\n");
        free(l.v[i]);
    }
    free(l.v);
    return out;
}

/* How many entries of dir start with "spill-" (directories and lock files),
 * and the first directory's name in first (if not NULL). */
static int count_spill(const char *dir, char *first, size_t cap)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "spill", 5) != 0)
            continue;
        n++;
        if (first && !strstr(e->d_name, ".lock"))
            snprintf(first, cap, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    return n;
}

static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* ------------------------------- two processes, and what one syncs */

struct share_arg {
    const char *dir;
};

/* The other process: persists into L and into a new location N, binds a
 * name in L's map, hands the keys over, then checks it sees the parent's
 * object before it closes. */
static int share_kid(int in, int out, void *p)
{
    struct share_arg *a = p;
    fbk_store *s;
    fbk_pool *pool;
    fbk_location *l, *n;
    fbk_map *m;
    char uri[4200];
    snprintf(uri, sizeof uri, "lmdb:%s", a->dir);
    KID_CHECK(fbk_store_open(&s, uri, NULL) == 0, "open beside another process");
    KID_CHECK(fbk_pool_create(&pool, s, &fbk_blob_codec, 4) == 0, "pool");
    KID_CHECK(fbk_location_open(s, "L", &l) == 0, "open L");
    fbk_key k[3];
    KID_CHECK(persist_blob(pool, l, 5000, 7, &k[0]) == 0, "persist into L");
    KID_CHECK(fbk_location_open(s, "N", &n) == 0, "open N");
    KID_CHECK(persist_blob(pool, n, 70000, 8, &k[1]) == 0, "persist into N");
    KID_CHECK(fbk_map_open(pool, l, NULL, &m) == 0, "map of L");
    fbk_handle *h;
    KID_CHECK(fbk_insert(pool, tu_blob(300, 9), &h) == 0, "insert");
    KID_CHECK(fbk_map_put(m, "greeting", 8, h) == 0, "map put");
    fbk_handle_key(h, &k[2]);
    fbk_handle_release(h);
    KID_CHECK(put_bytes(out, k, sizeof k) == 0, "hand over the keys");
    /* the parent persisted one into L: we see it after a refresh */
    fbk_key theirs;
    KID_CHECK(get_bytes(in, &theirs, sizeof theirs) == 0, "the parent's key");
    KID_CHECK(fbk_location_refresh(l) == 0, "refresh");
    KID_CHECK(fbk_location_contains(l, &theirs) == 1, "the parent's object after a refresh");
    KID_CHECK(load_ok(pool, l, &theirs, 1234, 77), "the parent's object loads byte-exact");
    KID_CHECK(fbk_map_close(m) == 0, "map close");
    fbk_location_close(n);
    fbk_location_close(l);
    fbk_pool_release(pool);
    fbk_store_close(s);
    return 0;
}

Test(sharing_lmdb, two_processes_use_one_store_and_see_what_the_other_synced)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("share_two"));
    fbk_store *s;
    fbk_pool *p;
    fbk_location *l;
    open_store(&s, dir, 0, 0);
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 4), 0);
    cr_assert_eq(fbk_location_open(s, "L", &l), 0);
    fbk_map *m;
    cr_assert_eq(fbk_map_open(p, l, NULL, &m), 0, "%s", fbk_errmsg());

    struct share_arg a = {dir};
    kid k = kid_start(share_kid, &a);
    fbk_key keys[3];
    cr_assert_eq(get_bytes(k.from, keys, sizeof keys), 0, "the other process failed");
    /* L was open here before the other process wrote: a refresh shows it */
    cr_assert_eq(fbk_location_refresh(l), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_contains(l, &keys[0]), 1);
    cr_assert(load_ok(p, l, &keys[0], 5000, 7), "%s", fbk_errmsg());
    /* a map put there is got here at once */
    fbk_handle *h;
    cr_assert_eq(fbk_map_get(m, "greeting", 8, &h), 0, "%s", fbk_errmsg());
    const void *obj;
    cr_assert_eq(fbk_load(h, &obj), 0, "%s", fbk_errmsg());
    cr_assert(tu_blob_check(obj, 300, 9));
    fbk_unload(h);
    fbk_handle_release(h);
    /* N was created by the other process after this one opened the store */
    fbk_location *n;
    cr_assert_eq(fbk_location_open(s, "N", &n), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_contains(n, &keys[1]), 1);
    cr_assert(load_ok(p, n, &keys[1], 70000, 8), "%s", fbk_errmsg());
    fbk_location_close(n);
    /* and the other way round, while both are open */
    fbk_key mine;
    cr_assert_eq(persist_blob(p, l, 1234, 77, &mine), 0, "%s", fbk_errmsg());
    cr_assert_eq(put_bytes(k.to, &mine, sizeof mine), 0);
    kid_wait(&k);
    cr_assert_eq(fbk_map_close(m), 0);
    fbk_location_close(l);
    fbk_pool_release(p);
    fbk_store_close(s);
    cr_assert_eq(count_spill(dir, NULL, 0), 0, "a spill area was left after both closed");
}

/* ------------------------------------------------ a killed process */

static int hold_kid(int in, int out, void *p)
{
    const char *dir = p;
    fbk_store *s;
    fbk_pool *pool;
    fbk_location *l;
    char uri[4200];
    snprintf(uri, sizeof uri, "lmdb:%s", dir);
    KID_CHECK(fbk_store_open(&s, uri, NULL) == 0, "open");
    KID_CHECK(fbk_pool_create(&pool, s, &fbk_blob_codec, 1) == 0, "pool");
    KID_CHECK(fbk_location_open(s, "L", &l) == 0, "open L");
    fbk_key k;
    KID_CHECK(persist_blob(pool, l, 4000, 3, &k) == 0, "persist");
    /* spill some values into its own spill area */
    for (int i = 0; i < 8; i++) {
        fbk_handle *h;
        KID_CHECK(fbk_insert(pool, tu_blob(20000, 100 + i), &h) == 0, "insert");
        fbk_handle_release(h);
    }
    KID_CHECK(fbk_store_drain(s) == 0, "drain");
    KID_CHECK(put_bytes(out, &k, sizeof k) == 0, "ready");
    char c;
    (void)get_bytes(in, &c, 1); /* killed here */
    return 1;
}

Test(sharing_lmdb, a_killed_process_blocks_nobody_and_its_spill_area_goes_at_the_next_open)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("share_kill"));
    fbk_store *s;
    fbk_pool *p;
    fbk_location *l;
    open_store(&s, dir, 0, 0);
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 4), 0);
    cr_assert_eq(fbk_location_open(s, "L", &l), 0);
    char ours[4300] = "";
    cr_assert_eq(count_spill(dir, ours, sizeof ours), 2, "our spill area and its lock file");

    kid k = kid_start(hold_kid, dir);
    fbk_key theirs;
    cr_assert_eq(get_bytes(k.from, &theirs, sizeof theirs), 0, "the other process failed");
    cr_assert_eq(count_spill(dir, NULL, 0), 4, "two spill areas with their lock files");
    cr_assert_eq(kill(k.pid, SIGKILL), 0);
    int status;
    cr_assert_eq(waitpid(k.pid, &status, 0), k.pid);
    cr_assert(WIFSIGNALED(status));
    close(k.to);
    close(k.from);

    /* the store open here keeps working */
    fbk_key mine;
    cr_assert_eq(persist_blob(p, l, 999, 5, &mine), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_refresh(l), 0);
    cr_assert(load_ok(p, l, &theirs, 4000, 3), "%s", fbk_errmsg());
    fbk_location_close(l);
    fbk_pool_release(p);
    fbk_store_close(s);
    cr_assert(!exists(ours), "our spill area outlived the close");

    /* the next open removes the dead one's spill area (and makes its own) */
    cr_assert_eq(count_spill(dir, NULL, 0), 2, "the dead process's spill area and lock file");
    open_store(&s, dir, 0, 0);
    char now[4300] = "";
    cr_assert_eq(count_spill(dir, now, sizeof now), 2, "only the new store's spill area is left");
    cr_assert_eq(fbk_location_open(s, "L", &l), 0);
    cr_assert_eq(fbk_location_count(l), 2);
    fbk_location_close(l);
    fbk_store_close(s);
    cr_assert_eq(count_spill(dir, NULL, 0), 0);
}

/* LMDB's writer lock (a robust mutex in durable/lock.mdb) held by a process
 * that is killed is taken over by the next writer. */
static int txn_kid(int in, int out, void *p)
{
    const char *durable = p;
    MDB_env *env;
    MDB_txn *txn;
    KID_CHECK(mdb_env_create(&env) == 0, "mdb_env_create");
    KID_CHECK(mdb_env_set_maxdbs(env, 4096) == 0, "maxdbs");
    KID_CHECK(mdb_env_open(env, durable, MDB_NOTLS, 0644) == 0, "mdb_env_open");
    KID_CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0, "begin a write transaction");
    KID_CHECK(put_bytes(out, "!", 1) == 0, "ready");
    char c;
    (void)get_bytes(in, &c, 1); /* killed here, holding the writer lock */
    return 1;
}

Test(sharing_lmdb, a_process_killed_inside_a_durable_write_transaction_blocks_nobody)
{
    char dir[4096], durable[4200];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("share_kill_txn"));
    snprintf(durable, sizeof durable, "%s/durable", dir);
    fbk_store *s;
    fbk_pool *p;
    fbk_location *l;
    open_store(&s, dir, 0, 0);
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 4), 0);
    cr_assert_eq(fbk_location_open(s, "L", &l), 0);
    kid k = kid_start(txn_kid, durable);
    hear(k.from);
    cr_assert_eq(kill(k.pid, SIGKILL), 0);
    int status;
    cr_assert_eq(waitpid(k.pid, &status, 0), k.pid);
    close(k.to);
    close(k.from);
    fbk_key key;
    cr_assert_eq(persist_blob(p, l, 3000, 11, &key), 0, "%s", fbk_errmsg());
    fbk_location *n;
    cr_assert_eq(fbk_location_open(s, "new", &n), 0, "%s", fbk_errmsg());
    fbk_location_close(n);
    cr_assert(load_ok(p, l, &key, 3000, 11), "%s", fbk_errmsg());
    fbk_location_close(l);
    fbk_pool_release(p);
    fbk_store_close(s);
}

/* Spill areas of dead processes, a directory without a lock file and the
 * single DIR/spill of earlier versions are removed by a writer's open; one
 * whose lock is held is kept; a read-only open removes nothing. */
Test(sharing_lmdb, stale_spill_areas_are_removed_and_live_ones_kept)
{
    char dir[4096], path[4300];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("share_stale"));
    fbk_store *s;
    open_store(&s, dir, 0, 0);
    fbk_store_close(s);
    static const char *const dirs[] = {"spill", "spill-0123456789abcdef", "spill-fedcba9876543210",
                                       "spill-aaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, dirs[i]);
        cr_assert_eq(mkdir(path, 0755), 0);
        snprintf(path, sizeof path, "%s/%s/data.mdb", dir, dirs[i]);
        int fd = open(path, O_WRONLY | O_CREAT, 0644);
        cr_assert_geq(fd, 0);
        close(fd);
    }
    /* fedcba...: a lock file nobody holds; aaaa...: one held (by us) */
    snprintf(path, sizeof path, "%s/spill-fedcba9876543210.lock", dir);
    int dead = open(path, O_RDWR | O_CREAT, 0644);
    cr_assert_geq(dead, 0);
    close(dead);
    snprintf(path, sizeof path, "%s/spill-aaaaaaaaaaaaaaaa.lock", dir);
    int live = open(path, O_RDWR | O_CREAT, 0644);
    cr_assert_geq(live, 0);
    cr_assert_eq(flock(live, LOCK_EX), 0);

    char *before = listing_of(dir);
    open_store(&s, dir, FBK_STORE_READONLY, 0);
    fbk_store_close(s);
    char *after = listing_of(dir);
    cr_assert_str_eq(after, before, "a read-only open changed the directory");
    free(after);
    free(before);

    open_store(&s, dir, 0, 0);
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, dirs[i]);
        cr_assert(!exists(path), "%s was not removed", path);
    }
    snprintf(path, sizeof path, "%s/spill-fedcba9876543210.lock", dir);
    cr_assert(!exists(path), "the dead lock file was not removed");
    snprintf(path, sizeof path, "%s/spill-aaaaaaaaaaaaaaaa/data.mdb", dir);
    cr_assert(exists(path), "a spill area whose lock is held was touched");
    snprintf(path, sizeof path, "%s/spill-aaaaaaaaaaaaaaaa.lock", dir);
    cr_assert(exists(path), "a held lock file was removed");
    fbk_store_close(s);
    close(live);
}

/* ------------------------------------------------ read-only opening */

struct writer_arg {
    const char *dir;
    size_t map_size;
    size_t n, len; /* objects to persist, and their size */
};

/* Persists n objects into L (seeds 1000 + i) and binds "n" to the first,
 * hands the keys over, then waits for the parent before closing. */
static int writer_kid(int in, int out, void *p)
{
    struct writer_arg *a = p;
    fbk_store *s;
    fbk_pool *pool;
    fbk_location *l;
    char uri[4200];
    snprintf(uri, sizeof uri, "lmdb:%s", a->dir);
    fbk_store_options o = {.map_size = a->map_size};
    KID_CHECK(fbk_store_open(&s, uri, &o) == 0, "open");
    KID_CHECK(fbk_pool_create(&pool, s, &fbk_blob_codec, 2) == 0, "pool");
    KID_CHECK(fbk_location_open(s, "L", &l) == 0, "open L");
    fbk_key *k = calloc(a->n, sizeof *k);
    KID_CHECK(k != NULL, "calloc");
    for (size_t i = 0; i < a->n; i++)
        KID_CHECK(persist_blob(pool, l, a->len, 1000 + i, &k[i]) == 0, "persist %zu", i);
    fbk_map *m;
    KID_CHECK(fbk_map_open(pool, l, NULL, &m) == 0, "map");
    fbk_handle *h;
    KID_CHECK(fbk_register(pool, l, &k[0], &h) == 0, "register");
    KID_CHECK(fbk_map_put(m, "n", 1, h) == 0, "map put");
    fbk_handle_release(h);
    KID_CHECK(fbk_map_close(m) == 0, "map close");
    KID_CHECK(put_bytes(out, k, a->n * sizeof *k) == 0, "hand over the keys");
    char c;
    KID_CHECK(get_bytes(in, &c, 1) == 0, "wait for the parent");
    free(k);
    fbk_location_close(l);
    fbk_pool_release(pool);
    fbk_store_close(s);
    return 0;
}

Test(sharing_lmdb, a_read_only_store_reads_beside_a_writer_and_changes_nothing)
{
    char dir[4096], tmp[4096];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("share_ro"));
    snprintf(tmp, sizeof tmp, "%s", tu_fresh_dir("share_ro_tmp"));
    cr_assert_eq(setenv("TMPDIR", tmp, 1), 0); /* where its private spill area goes */
    struct writer_arg a = {dir, 0, 3, 30000};
    kid k = kid_start(writer_kid, &a);
    fbk_key keys[3];
    cr_assert_eq(get_bytes(k.from, keys, sizeof keys), 0, "the writer failed");

    char *before = listing_of(dir);
    fbk_store *s;
    fbk_pool *p;
    fbk_location *l;
    open_store(&s, dir, FBK_STORE_READONLY, 0);
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2), 0);
    cr_assert_eq(fbk_location_open(s, "L", &l), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_count(l), 3);
    for (int i = 0; i < 3; i++)
        cr_assert(load_ok(p, l, &keys[i], 30000, 1000 + i), "%s", fbk_errmsg());
    fbk_map *m;
    cr_assert_eq(fbk_map_open(p, l, NULL, &m), 0, "%s", fbk_errmsg());
    fbk_handle *h;
    cr_assert_eq(fbk_map_get(m, "n", 1, &h), 0, "%s", fbk_errmsg());
    const void *obj;
    cr_assert_eq(fbk_load(h, &obj), 0, "%s", fbk_errmsg());
    cr_assert(tu_blob_check(obj, 30000, 1000));
    fbk_unload(h);
    cr_assert_eq(fbk_persist(h, l), FBK_EREADONLY);
    fbk_handle_release(h);
    cr_assert_eq(fbk_map_close(m), 0);
    fbk_location *none = NULL;
    cr_assert_eq(fbk_location_open(s, "absent", &none), FBK_ENOTFOUND, "%s", fbk_errmsg());
    cr_assert_null(none);
    cr_assert(strstr(fbk_errmsg(), "absent"), "message: %s", fbk_errmsg());
    char *during = listing_of(dir);
    cr_assert_str_eq(during, before, "the read-only store made something in DIR");
    char *private = listing_of(tmp);
    cr_assert(strncmp(private, "fbk-spill-", 10) == 0, "no private spill area in TMPDIR: %s",
              private);
    fbk_location_close(l);
    fbk_pool_release(p);
    fbk_store_close(s);
    char *after = listing_of(dir);
    cr_assert_str_eq(after, before, "the read-only store changed DIR");
    char *gone = listing_of(tmp);
    cr_assert_str_eq(gone, "", "the private spill area outlived the close: %s", gone);
    free(before);
    free(during);
    free(private);
    free(after);
    free(gone);
    say(k.to);
    kid_wait(&k);
}

Test(sharing_lmdb, a_read_only_open_of_no_store_fails_cleanly_and_makes_nothing)
{
    char dir[4096], missing[4200];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("share_ro_none"));
    snprintf(missing, sizeof missing, "%s/not-there", dir);
    char uri[4300];
    snprintf(uri, sizeof uri, "lmdb:%s?readonly=1", missing);
    fbk_store *s = NULL;
    cr_assert_eq(fbk_store_open(&s, uri, NULL), FBK_ENOTFOUND, "%s", fbk_errmsg());
    cr_assert_null(s);
    cr_assert(strstr(fbk_errmsg(), "not-there"), "message: %s", fbk_errmsg());
    cr_assert(!exists(missing), "a read-only open made the directory");
    /* an empty directory is no store either */
    snprintf(uri, sizeof uri, "lmdb:%s?readonly=1", dir);
    cr_assert_eq(fbk_store_open(&s, uri, NULL), FBK_ENOTFOUND, "%s", fbk_errmsg());
    char *l = listing_of(dir);
    cr_assert_str_eq(l, "", "a read-only open made: %s", l);
    free(l);
}

/* --------------------------------- map growth by another process */

struct ro_arg {
    const char *dir;
    size_t n, len;
    size_t count; /* keys in L after the growth */
};

/* A read-only store opened before the writer grows the map: after the
 * growth it refreshes and loads every object (MDB_MAP_RESIZED on a read
 * transaction). */
static int ro_kid(int in, int out, void *p)
{
    struct ro_arg *a = p;
    fbk_store *s;
    fbk_pool *pool;
    fbk_location *l;
    char uri[4200];
    snprintf(uri, sizeof uri, "lmdb:%s", a->dir);
    fbk_store_options o = {.flags = FBK_STORE_READONLY, .map_size = 1 << 20};
    KID_CHECK(fbk_store_open(&s, uri, &o) == 0, "read-only open");
    KID_CHECK(fbk_pool_create(&pool, s, &fbk_blob_codec, 2) == 0, "pool");
    KID_CHECK(fbk_location_open(s, "L", &l) == 0, "open L");
    KID_CHECK(put_bytes(out, "!", 1) == 0, "ready");
    fbk_key *k = calloc(a->n, sizeof *k);
    KID_CHECK(k && get_bytes(in, k, a->n * sizeof *k) == 0, "the keys");
    KID_CHECK(fbk_location_refresh(l) == 0, "refresh after the growth");
    KID_CHECK(fbk_location_count(l) == a->count, "count %zu", fbk_location_count(l));
    for (size_t i = 0; i < a->n; i++)
        KID_CHECK(load_ok(pool, l, &k[i], a->len, 1000 + i), "load %zu after the growth", i);
    free(k);
    fbk_location_close(l);
    fbk_pool_release(pool);
    fbk_store_close(s);
    return 0;
}

Test(sharing_lmdb, a_map_grown_by_another_process_is_adopted_by_writers_and_readers)
{
    char dir[4096], data[4200];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("share_grow"));
    snprintf(data, sizeof data, "%s/durable/data.mdb", dir);
    const size_t map = 1 << 20, n = 24, len = 200000; /* ~4.6 MiB: the map grows */
    fbk_store *s;
    fbk_pool *p;
    fbk_location *l;
    open_store(&s, dir, 0, map);
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2), 0);
    cr_assert_eq(fbk_location_open(s, "L", &l), 0);
    fbk_key first;
    cr_assert_eq(persist_blob(p, l, 1000, 1, &first), 0, "%s", fbk_errmsg());
    struct stat st;
    cr_assert_eq(stat(data, &st), 0);
    cr_assert_leq((size_t)st.st_size, map, "setup: the map is 1 MiB");

    struct ro_arg ra = {dir, n, len, n + 2}; /* and the two persisted here */
    /* workers idle before a fork: a thread inside an allocator would hand
     * the child its lock taken */
    cr_assert_eq(fbk_store_drain(s), 0);
    kid reader = kid_start(ro_kid, &ra);
    hear(reader.from); /* open, with the 1 MiB map */
    struct writer_arg wa = {dir, map, n, len};
    kid writer = kid_start(writer_kid, &wa);
    fbk_key keys[24];
    cr_assert_eq(get_bytes(writer.from, keys, sizeof keys), 0, "the writer failed");
    cr_assert_eq(stat(data, &st), 0);
    cr_assert_gt((size_t)st.st_size, 4 * map, "the other process did not grow the map");

    /* a write here meets MDB_MAP_RESIZED, then reads past the old map */
    fbk_key mine;
    cr_assert_eq(persist_blob(p, l, 5000, 2, &mine), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_refresh(l), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_count(l), n + 2);
    for (size_t i = 0; i < n; i++)
        cr_assert(load_ok(p, l, &keys[i], len, 1000 + i), "key %zu: %s", i, fbk_errmsg());
    cr_assert(load_ok(p, l, &mine, 5000, 2));
    cr_assert_eq(put_bytes(reader.to, keys, sizeof keys), 0);
    kid_wait(&reader);
    say(writer.to);
    kid_wait(&writer);
    fbk_location_close(l);
    fbk_pool_release(p);
    fbk_store_close(s);
}

/* ----------------------------------------------- locks, one process */

Test(sharing_lmdb, a_second_store_of_one_process_on_one_environment_is_busy)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("share_same_process"));
    fbk_store *s, *s2 = NULL;
    open_store(&s, dir, 0, 0);
    char uri[4200];
    snprintf(uri, sizeof uri, "lmdb:%s?readonly=1", dir);
    /* LMDB opens an environment once per process */
    cr_assert_eq(fbk_store_open(&s2, uri, NULL), FBK_EBUSY, "%s", fbk_errmsg());
    cr_assert(strstr(fbk_errmsg(), "this process"), "message: %s", fbk_errmsg());
    cr_assert_null(s2);
    cr_assert_eq(count_spill(dir, NULL, 0), 2, "the refused open left a spill area behind");
    fbk_store_close(s);
    cr_assert_eq(fbk_store_open(&s2, uri, NULL), 0, "%s", fbk_errmsg());
    fbk_store_close(s2);
}

/* fbk compact takes DIR/LOCK exclusively: it cannot while a store (even a
 * read-only one) is open, and no store opens while it holds it. */
Test(sharing_lmdb, an_exclusive_holder_of_the_lock_and_stores_exclude_each_other)
{
    char dir[4096], lock[4200];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("share_lock"));
    snprintf(lock, sizeof lock, "%s/LOCK", dir);
    fbk_store *s = NULL;
    open_store(&s, dir, 0, 0);
    fbk_store_close(s);
    open_store(&s, dir, FBK_STORE_READONLY, 0);
    int fd = open(lock, O_RDWR);
    cr_assert_geq(fd, 0);
    cr_assert_neq(flock(fd, LOCK_EX | LOCK_NB), 0, "LOCK_EX taken while a store is open");
    fbk_store_close(s);
    cr_assert_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
    s = NULL;
    char uri[4200];
    snprintf(uri, sizeof uri, "lmdb:%s", dir);
    cr_assert_eq(fbk_store_open(&s, uri, NULL), FBK_EBUSY, "%s", fbk_errmsg());
    cr_assert_null(s);
    cr_assert(strstr(fbk_errmsg(), "exclusively"), "message: %s", fbk_errmsg());
    close(fd);
}
