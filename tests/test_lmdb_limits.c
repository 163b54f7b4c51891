/* test_lmdb_limits.c -- the limits of the lmdb: backend and how it reports
 * them:
 *   - a value over LMDB's per-value write limit (~2 GiB) is refused once
 *     with FBK_EINVAL stating the limit, and its eviction is not retried on
 *     every LRU change (a codec that only claims the size: no 2 GiB needed);
 *   - a persist copies at most 64 MiB per durable write transaction, so a
 *     save of more than RAM does not hold it all as dirty pages (this
 *     executable defines mdb_put and mdb_txn_commit, which libfbk's calls
 *     bind to, and records the bytes each committed transaction put);
 *   - the 1025th location is FBK_ENOSPC with a message saying the limit and
 *     how to free a slot; fbk__lmdb_drop_location frees one;
 *   - permission denied names the path. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* internal to the backend until the public call is wired (weak: this test
 * still links, and fails, against a library without it) */
int fbk__lmdb_drop_location(void *self, const char *name) __attribute__((weak));

/* ------------------------------------------- LMDB calls seen by this test */

#define MAX_TXNS 16
static pthread_mutex_t seen_m = PTHREAD_MUTEX_INITIALIZER;
static struct {
    MDB_txn *txn;
    size_t bytes;
} open_txns[MAX_TXNS];
static size_t durable_commits, durable_max_bytes, durable_total_bytes;

static int is_durable(MDB_txn *txn)
{
    const char *path = NULL;
    return mdb_env_get_path(mdb_txn_env(txn), &path) == 0 && path && strstr(path, "durable");
}

int mdb_put(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data, unsigned flags)
{
    static int (*real)(MDB_txn *, MDB_dbi, MDB_val *, MDB_val *, unsigned);
    if (!real)
        real = (int (*)(MDB_txn *, MDB_dbi, MDB_val *, MDB_val *, unsigned))dlsym(RTLD_NEXT,
                                                                                  "mdb_put");
    size_t len = data->mv_size;
    int rc = real(txn, dbi, key, data, flags);
    if (rc == 0) {
        pthread_mutex_lock(&seen_m);
        int slot = -1;
        for (int i = 0; i < MAX_TXNS; i++) {
            if (open_txns[i].txn == txn) {
                slot = i;
                break;
            }
            if (slot < 0 && !open_txns[i].txn)
                slot = i;
        }
        if (slot >= 0) {
            open_txns[slot].txn = txn;
            open_txns[slot].bytes += len;
        }
        pthread_mutex_unlock(&seen_m);
    }
    return rc;
}

int mdb_txn_commit(MDB_txn *txn)
{
    static int (*real)(MDB_txn *);
    if (!real)
        real = (int (*)(MDB_txn *))dlsym(RTLD_NEXT, "mdb_txn_commit");
    int durable = is_durable(txn);
    pthread_mutex_lock(&seen_m);
    size_t bytes = 0;
    for (int i = 0; i < MAX_TXNS; i++) {
        if (open_txns[i].txn == txn) {
            bytes = open_txns[i].bytes;
            open_txns[i].txn = NULL;
            open_txns[i].bytes = 0;
        }
    }
    if (durable && bytes > 0) {
        durable_commits++;
        durable_total_bytes += bytes;
        if (bytes > durable_max_bytes)
            durable_max_bytes = bytes;
    }
    pthread_mutex_unlock(&seen_m);
    return real(txn);
}

/* --------------------------------------------------------------- helpers */

static fbk_store *open_store(const char *dir)
{
    char uri[4200];
    snprintf(uri, sizeof uri, "lmdb:%s", dir);
    fbk_store *s = NULL;
    cr_assert_eq(fbk_store_open(&s, uri, NULL), FBK_OK, "%s", fbk_errmsg());
    return s;
}

/* An object that only claims a size: encode counts its calls and fails. */
typedef struct {
    size_t size;
} claim;
static int claim_encodes;

static size_t claim_size(const void *obj, void *ctx)
{
    (void)ctx;
    return ((const claim *)obj)->size;
}
static int claim_encode(const void *obj, void *dst, size_t len, void *ctx)
{
    (void)ctx;
    const claim *c = obj;
    __atomic_add_fetch(&claim_encodes, 1, __ATOMIC_SEQ_CST);
    if (c->size > 4096)
        return 1; /* never asked to really write gigabytes */
    memset(dst, 0x5a, len);
    return 0;
}
static int claim_decode(const void *src, size_t len, void **out, void *ctx)
{
    (void)src;
    (void)ctx;
    claim *c = malloc(sizeof *c);
    if (!c)
        return FBK_ENOMEM;
    c->size = len;
    *out = c;
    return 0;
}
static void claim_destroy(void *obj, void *ctx)
{
    (void)ctx;
    free(obj);
}
static const fbk_codec claim_codec = {claim_size, claim_encode, claim_decode, claim_destroy,
                                      NULL,       NULL,         NULL,         NULL};

static claim *new_claim(size_t size)
{
    claim *c = malloc(sizeof *c);
    cr_assert_not_null(c);
    c->size = size;
    return c;
}

/* ------------------------------------------------- 7: values over ~2 GiB */

/* 2 GiB - 4 KiB - 16 bytes of value (4 KiB pages) = 24-byte frame header + payload */
#define VALUE_MAX ((size_t)0x7ffff000 - 16)

Test(lmdb_limits, value_over_the_lmdb_write_limit_is_refused_once_not_retried)
{
    long pg = sysconf(_SC_PAGESIZE);
    if (pg != 4096)
        cr_skip_test("the figure below assumes 4 KiB pages");
    const char *dir = tu_fresh_dir("big");
    fbk_store *s = open_store(dir);
    fbk_pool *p;
    cr_assert_eq(fbk_pool_create(&p, s, &claim_codec, 1), FBK_OK);
    fbk_handle *big, *small[21];
    /* payload one byte over: framed, one byte over the limit */
    cr_assert_eq(fbk_insert(p, new_claim(VALUE_MAX - 24 + 1), &big), FBK_OK);
    cr_assert_eq(fbk_insert(p, new_claim(10), &small[0]), FBK_OK); /* evicts big */
    int rc = fbk_store_drain(s);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", fbk_errmsg());
    cr_assert_eq(rc, FBK_EINVAL, "drain: %s (%s)", fbk_err_name(rc), msg);
    cr_assert(strstr(msg, "2147479536") && strstr(msg, "2147479537") && strstr(msg, "limit"),
              "message: %s", msg);
    fbk_key k;
    char hex[33];
    fbk_handle_key(big, &k);
    fbk_key_format_hex(&k, hex);
    cr_assert(strstr(msg, hex), "message does not name key %s: %s", hex, msg);
    cr_assert_eq(claim_encodes, 0, "the codec was asked to encode the refused value");

    /* many LRU changes: the refused write is not tried again by each */
    for (int i = 1; i <= 20; i++)
        cr_assert_eq(fbk_insert(p, new_claim(10), &small[i]), FBK_OK);
    fbk_store_drain(s);
    fbk_store_stats st;
    fbk_store_stats_get(s, &st);
    cr_assert_eq(st.eviction_failures, 1, "%llu eviction failures",
                 (unsigned long long)st.eviction_failures);

    /* the object is still in memory and usable; persist says no, once */
    const void *obj;
    cr_assert_eq(fbk_load(big, &obj), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(((const claim *)obj)->size, VALUE_MAX - 24 + 1);
    fbk_unload(big);
    fbk_location *loc;
    cr_assert_eq(fbk_location_open(s, "big", &loc), FBK_OK);
    cr_assert_eq(fbk_persist(big, loc), FBK_EINVAL);
    cr_assert(strstr(fbk_errmsg(), "2147479536"), "message: %s", fbk_errmsg());
    fbk_location_close(loc);
    fbk_handle_release(big);
    for (int i = 0; i <= 20; i++)
        fbk_handle_release(small[i]);
    fbk_pool_release(p);
    fbk_store_close(s);
}

Test(lmdb_limits, backend_refuses_a_store_over_the_limit_without_calling_fill)
{
    const char *dir = tu_fresh_dir("bigops");
    const fbk_backend_ops *ops;
    void *self;
    cr_assert_eq(fbk_backend_lmdb_create(dir, NULL, &ops, &self), FBK_OK, "%s", fbk_errmsg());
    fbk_key k;
    fbk_key_generate(&k);
    tu_bytes want = {0, 1, 0};
    int rc = ops->store(self, &k, (size_t)3 << 30, tu_fill_bytes, &want);
    cr_assert_eq(rc, FBK_EINVAL, "%s: %s", fbk_err_name(rc), fbk_errmsg());
    cr_assert(strstr(fbk_errmsg(), "3221225472 bytes"), "message: %s", fbk_errmsg());
    cr_assert_eq(ops->load(self, &k, tu_check_bytes, &want), FBK_ENOTFOUND);
    ops->close(self);
}

/* ------------------------------------- 8: bytes per durable transaction */

#define SAVE_N 20
#define SAVE_LEN ((size_t)8 << 20)

static int accept(void *arg)
{
    (void)arg;
    return 0;
}

Test(lmdb_limits, save_commits_at_most_64_mib_per_durable_transaction)
{
    const char *d = tu_fresh_dir("save");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", d);
    fbk_store *s = open_store(dir);
    fbk_pool *p;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2), FBK_OK);
    fbk_handle *h[SAVE_N];
    for (int i = 0; i < SAVE_N; i++)
        cr_assert_eq(fbk_insert(p, tu_blob(SAVE_LEN, (uint64_t)i), &h[i]), FBK_OK);
    fbk_location *loc;
    cr_assert_eq(fbk_location_open(s, "saved", &loc), FBK_OK, "%s", fbk_errmsg());
    pthread_mutex_lock(&seen_m);
    durable_commits = durable_max_bytes = durable_total_bytes = 0;
    pthread_mutex_unlock(&seen_m);
    cr_assert_eq(fbk_save(loc, h, SAVE_N, 0, accept, NULL), FBK_OK, "%s", fbk_errmsg());
    pthread_mutex_lock(&seen_m);
    size_t commits = durable_commits, max = durable_max_bytes, total = durable_total_bytes;
    pthread_mutex_unlock(&seen_m);
    size_t framed = SAVE_LEN + 24;
    cr_assert_eq(total, SAVE_N * framed, "%zu bytes persisted", total);
    cr_assert_leq(max, (size_t)64 << 20, "one durable transaction put %zu bytes", max);
    cr_assert_geq(commits, SAVE_N * framed / ((size_t)64 << 20) + 1, "%zu commits", commits);
    fbk_key keys[SAVE_N];
    for (int i = 0; i < SAVE_N; i++) {
        fbk_handle_key(h[i], &keys[i]);
        fbk_handle_release(h[i]);
    }
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);

    /* every value is there, byte-exact */
    s = open_store(dir);
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 2), FBK_OK);
    cr_assert_eq(fbk_location_open(s, "saved", &loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_count(loc), SAVE_N);
    for (int i = 0; i < SAVE_N; i++) {
        fbk_handle *r;
        cr_assert_eq(fbk_register(p, loc, &keys[i], &r), FBK_OK, "%s", fbk_errmsg());
        const void *obj;
        cr_assert_eq(fbk_load(r, &obj), FBK_OK, "%s", fbk_errmsg());
        cr_assert(tu_blob_check(obj, SAVE_LEN, (uint64_t)i), "blob %d differs", i);
        fbk_unload(r);
        fbk_handle_release(r);
    }
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
}

/* ---------------------------------- 10: location limit, drop, messages */

Test(lmdb_limits, location_1025_is_enospc_and_a_drop_frees_a_slot)
{
    const char *d = tu_fresh_dir("dbs");
    char dir[4096], durable[4200];
    snprintf(dir, sizeof dir, "%s", d);
    /* 1024 durable commits: on tmpfs when there is one, so fdatasync is free */
    snprintf(durable, sizeof durable, "/dev/shm/fbk-limits-%d", (int)getpid());
    struct stat st;
    fbk_store_options o = {0};
    if (stat("/dev/shm", &st) == 0) {
        tu_rmtree(durable);
        o.durable_dir = durable;
    }
    const fbk_backend_ops *ops;
    void *self;
    cr_assert_eq(fbk_backend_lmdb_create(dir, &o, &ops, &self), FBK_OK, "%s", fbk_errmsg());
    char name[64];
    void *loc;
    for (int i = 0; i < 1024; i++) {
        snprintf(name, sizeof name, "loc-%d", i);
        cr_assert_eq(ops->open_location(self, name, &loc), FBK_OK, "%s: %s", name, fbk_errmsg());
        ops->close_location(self, loc);
    }
    loc = NULL;
    int rc = ops->open_location(self, "one-too-many", &loc);
    cr_assert_eq(rc, FBK_ENOSPC, "%s: %s", fbk_err_name(rc), fbk_errmsg());
    cr_assert_null(loc);
    const char *m = fbk_errmsg();
    cr_assert(strstr(m, "one-too-many") && strstr(m, "1024") && strstr(m, "fbk_location_drop") &&
                  strstr(m, "too many locations"),
              "message: %s", m);

    /* a drop needs the location closed, and the name to exist */
    cr_assert_not_null(fbk__lmdb_drop_location, "no fbk__lmdb_drop_location in libfbk");
    void *busy;
    cr_assert_eq(ops->open_location(self, "loc-3", &busy), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(fbk__lmdb_drop_location(self, "loc-3"), FBK_EBUSY);
    cr_assert(strstr(fbk_errmsg(), "loc-3") && strstr(fbk_errmsg(), "open"), "message: %s",
              fbk_errmsg());
    ops->close_location(self, busy);
    /* every slot taken: a name not opened since the store opened cannot be
     * looked up */
    cr_assert_eq(fbk__lmdb_drop_location(self, "no-such"), FBK_ENOSPC);
    cr_assert(strstr(fbk_errmsg(), "no-such"), "message: %s", fbk_errmsg());

    /* a dropped location's entries go with it */
    void *l7;
    cr_assert_eq(ops->open_location(self, "loc-7", &l7), FBK_OK);
    fbk_key k;
    fbk_key_generate(&k);
    tu_bytes want = {100, 7, 0};
    cr_assert_eq(ops->store(self, &k, 100, tu_fill_bytes, &want), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(ops->persist(self, l7, &k), FBK_OK, "%s", fbk_errmsg());
    ops->close_location(self, l7);
    cr_assert_eq(fbk__lmdb_drop_location(self, "loc-7"), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(fbk__lmdb_drop_location(self, "no-such"), FBK_ENOTFOUND);
    cr_assert(strstr(fbk_errmsg(), "no-such"), "message: %s", fbk_errmsg());
    cr_assert_eq(ops->open_location(self, "one-too-many", &loc), FBK_OK, "%s", fbk_errmsg());
    ops->close_location(self, loc);
    ops->close(self);

    /* across a reopen: loc-7 is a new, empty location */
    cr_assert_eq(fbk_backend_lmdb_create(dir, &o, &ops, &self), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(ops->open_location(self, "loc-7", &l7), FBK_OK, "%s", fbk_errmsg());
    size_t n = 0;
    cr_assert_eq(ops->scan(self, l7, tu_count_key, &n), 0, "%s", fbk_errmsg());
    cr_assert_eq(n, 0, "%zu keys in a dropped location", n);
    ops->close_location(self, l7);
    ops->close(self);
    if (o.durable_dir)
        tu_rmtree(durable);
}

/* In a child running as nobody: opening a store where it may not write. */
static void as_nobody(const char *dir, const char *expect_path)
{
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0)
            _exit(77);
        char uri[4200];
        snprintf(uri, sizeof uri, "lmdb:%s", dir);
        fbk_store *s = NULL;
        int rc = fbk_store_open(&s, uri, NULL);
        const char *m = fbk_errmsg();
        int ok =
            rc == FBK_EIO && !s && strcasestr(m, "permission denied") && strstr(m, expect_path);
        if (!ok || getenv("FBK_TEST_VERBOSE"))
            fprintf(stderr, "rc %s, message: %s\n", fbk_err_name(rc), m);
        _exit(ok ? 0 : 1);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77)
        cr_skip_test("cannot switch to uid 65534");
    cr_assert_eq(WEXITSTATUS(status), 0, "see the child's message above");
}

Test(lmdb_limits, permission_denied_names_the_path)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to run a child as another user");
    const char *d = tu_fresh_dir("perm");
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s", d);
    /* the child must reach dir: open up the test directories above it */
    for (char *p = dir + 1; (p = strchr(p, '/')); p++) {
        *p = '\0';
        struct stat st;
        if (stat(dir, &st) == 0 && !(st.st_mode & S_IXOTH))
            chmod(dir, st.st_mode | S_IXOTH);
        *p = '/';
    }
    /* a store made by root: the LOCK file is root's, 0644 */
    fbk_store *s = open_store(dir);
    fbk_store_close(s);
    chmod(dir, 0755);
    snprintf(path, sizeof path, "%s/LOCK", dir);
    as_nobody(dir, path);

    /* LOCK is nobody's, but the durable environment is root's */
    cr_assert_eq(chown(path, 65534, 65534), 0);
    cr_assert_eq(chown(dir, 65534, 65534), 0);
    /* (each store makes its own spill area in dir, which is nobody's) */
    snprintf(path, sizeof path, "%s/durable", dir);
    as_nobody(dir, path);
}
