/* test_lmdb_damage_env.c -- a truncated durable/data.mdb of the lmdb:
 * backend: half its size, a few pages, less than a page, or 0 bytes.  Open
 * must refuse it with FBK_ECORRUPT and a message naming the file and both
 * sizes, instead of dying of SIGBUS when LMDB reads a page past the end of the
 * file, or opening an empty store.  The open and the reads run in a forked
 * child; the parent asserts that it exited 0 (a signal fails the test). */
#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define N 40
#define LEN 16000

typedef struct {
    const fbk_backend_ops *ops;
    void *self;
} backend;

static fbk_key g_keys[N];
static char g_dir[4096], g_data[4200], g_copy[4200];

static int fill_seed(backend *b, const fbk_key *k, size_t i)
{
    tu_bytes want = {LEN, 1000 + i, 0};
    return b->ops->store(b->self, k, LEN, tu_fill_bytes, &want);
}

/* A store with N values persisted and synced in location "a"; the data
 * file is copied to g_copy. */
static void make_store(const char *name)
{
    snprintf(g_dir, sizeof g_dir, "%s", tu_fresh_dir(name));
    snprintf(g_data, sizeof g_data, "%s/durable/data.mdb", g_dir);
    snprintf(g_copy, sizeof g_copy, "%s/data.mdb.orig", g_dir);
    backend b;
    cr_assert_eq(fbk_backend_lmdb_create(g_dir, NULL, &b.ops, &b.self), FBK_OK, "%s", fbk_errmsg());
    void *a;
    cr_assert_eq(b.ops->open_location(b.self, "a", &a), FBK_OK, "%s", fbk_errmsg());
    for (size_t i = 0; i < N; i++) {
        fbk_key_generate(&g_keys[i]);
        cr_assert_eq(fill_seed(&b, &g_keys[i], i), FBK_OK, "%s", fbk_errmsg());
        cr_assert_eq(b.ops->persist(b.self, a, &g_keys[i]), FBK_OK, "%s", fbk_errmsg());
    }
    cr_assert_eq(b.ops->sync(b.self, a), FBK_OK, "%s", fbk_errmsg());
    b.ops->close_location(b.self, a);
    b.ops->close(b.self);
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", g_data, g_copy);
    cr_assert_eq(system(cmd), 0);
}

static off_t data_size(void)
{
    struct stat st;
    cr_assert_eq(stat(g_data, &st), 0, "%s: %s", g_data, strerror(errno));
    return st.st_size;
}

/* The bytes data.mdb's newer meta page says are in use, (last_pg + 1)
 * pages (docs/lmdb-backend.md, *What open checks*).  The file itself is as
 * long as the map: libfbk grows it to the map size it reserves. */
static off_t used_size(void)
{
    int fd = open(g_data, O_RDONLY);
    cr_assert_geq(fd, 0, "%s: %s", g_data, strerror(errno));
    unsigned char m[2][152];
    uint32_t psize;
    cr_assert_eq(pread(fd, m[0], sizeof m[0], 0), (ssize_t)sizeof m[0]);
    memcpy(&psize, m[0] + 40, 4);
    cr_assert_eq(pread(fd, m[1], sizeof m[1], psize), (ssize_t)sizeof m[1]);
    close(fd);
    uint64_t last[2], txn[2];
    for (int i = 0; i < 2; i++) {
        memcpy(&last[i], m[i] + 136, 8);
        memcpy(&txn[i], m[i] + 144, 8);
    }
    int newer = txn[1] > txn[0];
    return (off_t)((last[newer] + 1) * psize);
}

/* data.mdb = the intact copy, cut to len bytes */
static void truncate_data(off_t len)
{
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", g_copy, g_data);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(truncate(g_data, len), 0, "%s", strerror(errno));
}

/* The largest "<number> bytes" in msg (the size the file should have). */
static long long largest_size(const char *msg)
{
    long long best = -1;
    for (const char *p = msg; *p; p++) {
        if (*p < '0' || *p > '9' || (p > msg && p[-1] >= '0' && p[-1] <= '9'))
            continue;
        char *end;
        long long v = strtoll(p, &end, 10);
        if (strncmp(end, " bytes", 6) == 0 && v > best)
            best = v;
    }
    return best;
}

/* The child: open the store, then read every value back.  Exit 0 when the
 * open is refused with FBK_ECORRUPT and a message naming the file and the
 * length `cut` and a required size of at least `need` bytes; exit 3 when the
 * store opened. */
static void child(off_t cut, off_t need)
{
    backend b;
    int rc = fbk_backend_lmdb_create(g_dir, NULL, &b.ops, &b.self);
    if (rc == FBK_OK) {
        void *a;
        size_t ok = 0;
        if (b.ops->open_location(b.self, "a", &a) == FBK_OK) {
            for (size_t i = 0; i < N; i++) {
                tu_bytes want = {LEN, 1000 + i, 0};
                if (b.ops->register_key(b.self, a, &g_keys[i]) == FBK_OK &&
                    b.ops->load(b.self, &g_keys[i], tu_check_bytes, &want) == FBK_OK)
                    ok++;
            }
        }
        fprintf(stderr, "child: a data.mdb cut to %lld bytes opened (%zu of %d values read)\n",
                (long long)cut, ok, N);
        _exit(3);
    }
    char s1[32];
    snprintf(s1, sizeof s1, "%lld bytes", (long long)cut);
    if (rc != FBK_ECORRUPT || !strstr(fbk_errmsg(), g_data) || !strstr(fbk_errmsg(), s1) ||
        largest_size(fbk_errmsg()) < need) {
        fprintf(stderr,
                "child: cut to %lld bytes: %s: %s (want FBK_ECORRUPT naming %s, '%s' and a "
                "required size of at least %lld bytes)\n",
                (long long)cut, fbk_err_name(rc), fbk_errmsg(), g_data, s1, (long long)need);
        _exit(2);
    }
    _exit(0);
}

static void expect_refused(off_t cut, off_t need)
{
    truncate_data(cut);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0)
        child(cut, need);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(!WIFSIGNALED(st), "data.mdb cut to %lld bytes: the open died of signal %d (%s)",
              (long long)cut, WTERMSIG(st), strsignal(WTERMSIG(st)));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 3,
              "data.mdb cut to %lld bytes: the store opened without an error", (long long)cut);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "data.mdb cut to %lld bytes: wrong error or message (see the child's stderr)",
              (long long)cut);
}

/* the store opens and every value reads back */
static void store_reads_back(void)
{
    backend b;
    cr_assert_eq(fbk_backend_lmdb_create(g_dir, NULL, &b.ops, &b.self), FBK_OK, "%s", fbk_errmsg());
    void *a;
    cr_assert_eq(b.ops->open_location(b.self, "a", &a), FBK_OK, "%s", fbk_errmsg());
    for (size_t i = 0; i < N; i++) {
        tu_bytes want = {LEN, 1000 + i, 0};
        cr_assert_eq(b.ops->register_key(b.self, a, &g_keys[i]), FBK_OK, "%s", fbk_errmsg());
        cr_assert_eq(b.ops->load(b.self, &g_keys[i], tu_check_bytes, &want), FBK_OK, "%s",
                     fbk_errmsg());
    }
    b.ops->close_location(b.self, a);
    b.ops->close(b.self);
}

/* the intact file opens and every value reads back */
static void intact_file_opens(off_t full)
{
    truncate_data(full);
    store_reads_back();
}

/* The meta page says how long the file must be: (last_pg + 1) pages, at
 * least the pages of the N values. */
Test(lmdb_damage_env, data_file_cut_to_half_is_ecorrupt_naming_path_and_sizes, .timeout = 60)
{
    make_store("half");
    off_t full = data_size(), used = used_size(), need = (off_t)N * LEN;
    long page = sysconf(_SC_PAGESIZE);
    cr_assert_gt(used, need, "the data file holds less than the values");
    cr_assert_geq(full, used, "data.mdb is shorter than its meta page says");
    expect_refused(used / 2 / page * page, need);
    expect_refused(used / 2 + 1000, need);
    expect_refused(used - page, used); /* the last page in use */
    intact_file_opens(full);
}

Test(lmdb_damage_env, data_file_cut_to_a_few_pages_is_ecorrupt, .timeout = 60)
{
    make_store("pages");
    off_t full = data_size();
    long page = sysconf(_SC_PAGESIZE);
    expect_refused(3 * page, (off_t)N * LEN);
    expect_refused(page + 100, 2 * page); /* the second meta page is cut */
    expect_refused(100, 2 * page);        /* less than a meta page */
    intact_file_opens(full);
}

/* An existing store's data file emptied is damage, not a new store (a new
 * store has no data.mdb at all: next test). */
Test(lmdb_damage_env, data_file_cut_to_zero_bytes_is_ecorrupt, .timeout = 60)
{
    make_store("zero");
    off_t full = data_size();
    expect_refused(0, 0);
    intact_file_opens(full);
}

Test(lmdb_damage_env, a_store_without_data_file_opens_empty, .timeout = 60)
{
    /* the rule's other side: no data.mdb at all is a new store */
    make_store("fresh");
    cr_assert_eq(unlink(g_data), 0);
    backend b;
    cr_assert_eq(fbk_backend_lmdb_create(g_dir, NULL, &b.ops, &b.self), FBK_OK, "%s", fbk_errmsg());
    void *a;
    cr_assert_eq(b.ops->open_location(b.self, "a", &a), FBK_OK, "%s", fbk_errmsg());
    size_t n = 0;
    cr_assert_eq(b.ops->scan(b.self, a, tu_count_key, &n), 0, "%s", fbk_errmsg());
    cr_assert_eq(n, 0);
    b.ops->close_location(b.self, a);
    b.ops->close(b.self);
}

/* LMDB may commit a meta page whose last_pg lies past the last page it wrote:
 * pages a transaction took and freed again are never written.  A writer
 * killed after such a commit left a data.mdb shorter than its meta page says
 * -- not damage, yet the check above refused it (test_map_crash saw it about
 * once in six runs).  libfbk grows data.mdb to the map it reserves, so the
 * file covers every page a meta page can name.  Here LMDB itself (a child
 * with plain LMDB calls, as the backend's own transactions do) makes such a
 * commit in a store libfbk made; the store must open. */
Test(lmdb_damage_env, a_commit_of_pages_taken_and_freed_is_not_taken_for_truncation,
     .timeout = 60)
{
    make_store("freed-top");
    char durable[4200];
    snprintf(durable, sizeof durable, "%s/durable", g_dir);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi dbi;
        static char big[200000];
        MDB_val k = {5, "probe"}, v = {sizeof big, big};
        int rc = mdb_env_create(&env);
        if (!rc)
            rc = mdb_env_set_maxdbs(env, 4096);
        if (!rc)
            rc = mdb_env_open(env, durable, MDB_NOTLS, 0644);
        if (!rc)
            rc = mdb_txn_begin(env, NULL, 0, &txn);
        if (!rc)
            rc = mdb_dbi_open(txn, NULL, 0, &dbi);
        if (!rc)
            rc = mdb_put(txn, dbi, &k, &v, 0); /* new pages at the end of the map */
        if (!rc)
            rc = mdb_del(txn, dbi, &k, NULL); /* freed in the same transaction */
        if (!rc)
            rc = mdb_txn_commit(txn);
        if (rc)
            fprintf(stderr, "child: %s\n", mdb_strerror(rc));
        _exit(rc ? 1 : 0); /* no mdb_env_close: as a killed writer */
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the plain LMDB child failed");
    cr_assert_geq(data_size(), used_size(), "data.mdb (%lld bytes) is shorter than its meta page "
                  "says (%lld bytes)", (long long)data_size(), (long long)used_size());
    store_reads_back();
}
