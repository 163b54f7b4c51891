/* test_file_iov.c -- the file: backend's version-2 members and its spill and
 * shard layout, through the backend table directly (no core):
 *   - store_iov (gather write) and load_into (scatter read): byte-exact
 *     round trips with 1..4 segments of 0 bytes to 4 MiB, short and
 *     interrupted writev/preadv, place() errors, a file shortened while it
 *     is read, a missing key, failures injected through the system-call
 *     table (backends/file/file_io.h);
 *   - spill stores write the key's final name (no temporary, no rename) and
 *     a failed one leaves no file, or, if even its removal failed, a file
 *     that the next store or a register_key replaces;
 *   - a location's 256 shards are made when it is opened, and its root is
 *     fsynced then (not in the sync); a read-only location still opens and
 *     scans, and gets its shards lazily. */
#include "../backends/file/file_io.h"
#include "file_spill.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* snprintf into a char array, failing the test on truncation */
#define PATHF(buf, ...) cr_assert_lt((size_t)snprintf(buf, sizeof buf, __VA_ARGS__), sizeof buf)

static char g_dir[4096];

static const char *fresh(const char *name)
{
    PATHF(g_dir, "%s", tu_fresh_dir(name));
    return g_dir;
}

static void key_path(char *out, size_t cap, const char *dir, const char *sub, const fbk_key *k)
{
    char hex[33];
    fbk_key_format_hex(k, hex);
    cr_assert_lt((size_t)snprintf(out, cap, "%s/%s/%.2s/%s", dir, sub, hex, hex), cap);
}

static int exists(const char *dir, const char *sub, const fbk_key *k)
{
    char p[4300];
    key_path(p, sizeof p, dir, sub, k);
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* entries of dir/sub/<shard of k> (all of them, dot files included) */
static int shard_entries(const char *dir, const char *sub, const fbk_key *k)
{
    char hex[33], p[4300];
    fbk_key_format_hex(k, hex);
    PATHF(p, "%s/%s/%.2s", dir, sub, hex);
    DIR *d = opendir(p);
    cr_assert_not_null(d, "opendir %s: %s", p, strerror(errno));
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* the number of shard directories (00..ff) under path */
static int count_shards(const char *path)
{
    int n = 0;
    for (int i = 0; i < 256; i++) {
        char p[4300];
        PATHF(p, "%s/%02x", path, i);
        struct stat st;
        n += stat(p, &st) == 0 && S_ISDIR(st.st_mode);
    }
    return n;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

static unsigned char *seeded(size_t len, uint64_t seed)
{
    unsigned char *p = malloc(len ? len : 1);
    cr_assert_not_null(p);
    tu_fill(p, len, seed);
    return p;
}

/* Stores buf[0..sum of seg) as the segments seg[0..n) of it. */
static int store_split(tu_be *b, const fbk_key *k, const unsigned char *buf, const size_t *seg,
                       int n)
{
    struct iovec iov[4];
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = (void *)(buf + off);
        iov[i].iov_len = seg[i];
        off += seg[i];
    }
    return b->ops->store_iov(b->self, k, iov, n);
}

/* ---- load_into's place callback: into a fresh buffer, in one or two
 * segments (split after `split` bytes, like the core's header + payload) */
typedef struct place_arg {
    size_t split; /* 0: one segment */
    unsigned char *buf;
    size_t len;
    int calls;
    int result;          /* returned instead of placing when non-zero */
    const char *shorten; /* a path to truncate to half before reading */
} place_arg;

static int place_buf(size_t len, struct iovec *iov, int *n, void *arg)
{
    place_arg *a = arg;
    a->calls++;
    a->len = len;
    if (a->result != 0)
        return a->result;
    a->buf = malloc(len ? len : 1);
    if (!a->buf)
        return FBK_ENOMEM;
    if (a->shorten)
        cr_assert_eq(truncate(a->shorten, (off_t)(len / 2)), 0, "truncate: %s", strerror(errno));
    if (a->split > 0 && len > a->split) {
        iov[0] = (struct iovec){a->buf, a->split};
        iov[1] = (struct iovec){a->buf + a->split, len - a->split};
        *n = 2;
    } else {
        iov[0] = (struct iovec){a->buf, len};
        *n = 1;
    }
    return FBK_OK;
}

/* read() for load: compares with the expected bytes */
typedef struct cmp_arg {
    const unsigned char *want;
    size_t len;
    int calls, ok;
} cmp_arg;

static int read_cmp(const void *src, size_t len, void *arg)
{
    cmp_arg *c = arg;
    c->calls++;
    c->ok = len == c->len && (len == 0 || memcmp(src, c->want, len) == 0);
    return FBK_OK;
}

static void expect_loads(tu_be *b, const fbk_key *k, const unsigned char *want, size_t len,
                         const char *what)
{
    cmp_arg c = {want, len, 0, 0};
    int rc = b->ops->load(b->self, k, read_cmp, &c);
    cr_assert_eq(rc, FBK_OK, "%s: load: %s", what, fbk_errmsg());
    cr_assert(c.calls == 1 && c.ok, "%s: load gave other bytes", what);
    static const size_t splits[] = {0, 24, 1};
    for (size_t s = 0; s < sizeof splits / sizeof splits[0]; s++) {
        place_arg a = {.split = splits[s]};
        rc = b->ops->load_into(b->self, k, 0, place_buf, &a);
        cr_assert_eq(rc, FBK_OK, "%s: load_into (split %zu): %s", what, splits[s], fbk_errmsg());
        cr_assert_eq(a.calls, 1, "%s: place called %d times", what, a.calls);
        cr_assert_eq(a.len, len, "%s: place told %zu bytes, %zu stored", what, a.len, len);
        cr_assert(len == 0 || memcmp(a.buf, want, len) == 0,
                  "%s: load_into (split %zu) gave other bytes", what, splits[s]);
        free(a.buf);
    }
}

static void io_reset(void) { fbk__file_io_set(NULL); }

/* ------------------------------------------------------------ round trips */

Test(file_iov, store_iov_of_1_to_4_segments_reads_back_byte_exact_through_load_and_load_into)
{
    const char *dir = fresh("iov_roundtrip");
    tu_be b = tu_file_open(dir);
    const size_t M = (size_t)1 << 20;
    static const struct {
        int n;
        size_t seg[4];
    } cases[] = {
        {1, {0}},
        {1, {1}},
        {1, {24}},
        {1, {4 * ((size_t)1 << 20)}},
        {2, {24, 0}},
        {2, {24, 1000}},
        {2, {24, 4 * ((size_t)1 << 20)}},
        {2, {0, 65537}},
        {3, {24, 0, 5}},
        {3, {0, 65537, 3}},
        {3, {1, (size_t)1 << 20, 4095}},
        {4, {24, 100, 0, 4 * ((size_t)1 << 20)}},
        {4, {0, 0, 0, 0}},
        {4, {4096, 4096, 4096, 1}},
        {4, {7, 1 << 16, 3 << 16, 1}},
    };
    size_t ncases = sizeof cases / sizeof cases[0];
    fbk_key *keys = calloc(ncases, sizeof *keys);
    cr_assert_not_null(keys);
    for (size_t i = 0; i < ncases; i++) {
        size_t len = 0;
        for (int j = 0; j < cases[i].n; j++)
            len += cases[i].seg[j];
        cr_assert_leq(len, 4 * M + 4096);
        unsigned char *buf = seeded(len, 1000 + i);
        fbk_key_generate(&keys[i]);
        int rc = store_split(&b, &keys[i], buf, cases[i].seg, cases[i].n);
        cr_assert_eq(rc, FBK_OK, "case %zu: store_iov: %s", i, fbk_errmsg());
        char p[4300];
        key_path(p, sizeof p, dir, fs_spill_name(dir), &keys[i]);
        struct stat st;
        cr_assert_eq(stat(p, &st), 0, "case %zu: no file under the key", i);
        cr_assert_eq((size_t)st.st_size, len, "case %zu: %lld bytes on disk, %zu given", i,
                     (long long)st.st_size, len);
        char what[64];
        PATHF(what, "case %zu (%d segments, %zu bytes)", i, cases[i].n, len);
        expect_loads(&b, &keys[i], buf, len, what);
        free(buf);
    }
    /* a value stored by store (a fill callback) is read by load_into too */
    fbk_key k;
    fbk_key_generate(&k);
    tu_bytes tb = {300000, 77, 0};
    cr_assert_eq(b.ops->store(b.self, &k, tb.len, tu_fill_bytes, &tb), FBK_OK, "%s", fbk_errmsg());
    unsigned char *want = seeded(tb.len, 77);
    expect_loads(&b, &k, want, tb.len, "store + load_into");
    free(want);
    /* the spill area holds exactly the keys' files: no temporaries */
    for (size_t i = 0; i < ncases; i++)
        cr_assert_geq(shard_entries(dir, fs_spill_name(dir), &keys[i]), 1);
    free(keys);
    tu_be_close(&b);
}

/* ---- short and interrupted transfers ---- */

static long g_writev_calls, g_preadv_calls, g_eintr;

/* The first `room` bytes of iov[0..n) as at most 8 segments in v. */
static int clip(const struct iovec *iov, int n, size_t room, struct iovec v[8])
{
    int m = 0;
    for (int i = 0; i < n && room > 0 && m < 8; i++) {
        size_t l = iov[i].iov_len < room ? iov[i].iov_len : room;
        v[m++] = (struct iovec){iov[i].iov_base, l};
        room -= l;
    }
    return m;
}

/* at most 777 bytes a call; every third call interrupted */
static ssize_t short_writev(int fd, const struct iovec *iov, int n)
{
    if (++g_writev_calls % 3 == 0) {
        g_eintr++;
        errno = EINTR;
        return -1;
    }
    struct iovec v[8];
    return fbk__file_io_posix.writev(fd, v, clip(iov, n, 777, v));
}

static ssize_t short_preadv(int fd, const struct iovec *iov, int n, off_t off)
{
    if (++g_preadv_calls % 3 == 0) {
        g_eintr++;
        errno = EINTR;
        return -1;
    }
    struct iovec v[8];
    return fbk__file_io_posix.preadv(fd, v, clip(iov, n, 1000, v), off);
}

static fbk__file_io hooked;

Test(file_iov, short_and_interrupted_writev_and_preadv_are_resumed, .fini = io_reset)
{
    const char *dir = fresh("iov_short");
    tu_be b = tu_file_open(dir);
    hooked = fbk__file_io_posix;
    hooked.writev = short_writev;
    hooked.preadv = short_preadv;
    fbk__file_io_set(&hooked);
    size_t seg[4] = {24, 5000, 0, 40000};
    size_t len = 24 + 5000 + 40000;
    unsigned char *buf = seeded(len, 5);
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(store_split(&b, &k, buf, seg, 4), FBK_OK, "%s", fbk_errmsg());
    cr_assert_gt(g_writev_calls, 40, "writev was not resumed (%ld calls)", g_writev_calls);
    place_arg a = {.split = 24};
    cr_assert_eq(b.ops->load_into(b.self, &k, 0, place_buf, &a), FBK_OK, "%s", fbk_errmsg());
    cr_assert_gt(g_preadv_calls, 40, "preadv was not resumed (%ld calls)", g_preadv_calls);
    cr_assert_gt(g_eintr, 0);
    cr_assert(memcmp(a.buf, buf, len) == 0, "bytes differ after short transfers");
    free(a.buf);
    free(buf);
    fbk__file_io_set(NULL);
    tu_be_close(&b);
}

/* A table that hooks write / pread but not writev / preadv (written before
 * they existed) still sees every byte of store_iov / load_into. */
static long g_write_bytes, g_pread_bytes;

static ssize_t counting_write(int fd, const void *p, size_t len)
{
    ssize_t r = fbk__file_io_posix.write(fd, p, len);
    if (r > 0)
        g_write_bytes += r;
    return r;
}

static ssize_t counting_pread(int fd, void *p, size_t len, off_t off)
{
    ssize_t r = fbk__file_io_posix.pread(fd, p, len, off);
    if (r > 0)
        g_pread_bytes += r;
    return r;
}

Test(file_iov, a_table_hooking_only_write_and_pread_sees_every_byte, .fini = io_reset)
{
    const char *dir = fresh("iov_oldtable");
    tu_be b = tu_file_open(dir);
    hooked = fbk__file_io_posix;
    hooked.write = counting_write;
    hooked.pread = counting_pread;
    fbk__file_io_set(&hooked);
    size_t seg[2] = {24, 100000};
    unsigned char *buf = seeded(100024, 6);
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(store_split(&b, &k, buf, seg, 2), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(g_write_bytes, 100024);
    place_arg a = {.split = 24};
    cr_assert_eq(b.ops->load_into(b.self, &k, 0, place_buf, &a), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(g_pread_bytes, 100024);
    cr_assert(memcmp(a.buf, buf, 100024) == 0);
    free(a.buf);
    /* and a table without them at all (NULL) works the same */
    hooked.writev = NULL;
    hooked.preadv = NULL;
    hooked.write = fbk__file_io_posix.write;
    hooked.pread = fbk__file_io_posix.pread;
    fbk_key k2;
    fbk_key_generate(&k2);
    cr_assert_eq(store_split(&b, &k2, buf, seg, 2), FBK_OK, "%s", fbk_errmsg());
    fbk__file_io_set(NULL);
    expect_loads(&b, &k2, buf, 100024, "NULL writev");
    hooked.preadv = NULL;
    fbk__file_io_set(&hooked);
    expect_loads(&b, &k2, buf, 100024, "NULL preadv");
    fbk__file_io_set(NULL);
    free(buf);
    tu_be_close(&b);
}

/* ---------------------------------------------------------- load_into */

static long g_reads;

static ssize_t counted_preadv(int fd, const struct iovec *iov, int n, off_t off)
{
    g_reads++;
    return fbk__file_io_posix.preadv(fd, iov, n, off);
}

static ssize_t counted_pread(int fd, void *p, size_t len, off_t off)
{
    g_reads++;
    return fbk__file_io_posix.pread(fd, p, len, off);
}

Test(file_iov, load_into_returns_the_error_of_place_without_reading, .fini = io_reset)
{
    const char *dir = fresh("iov_placeerr");
    tu_be b = tu_file_open(dir);
    size_t seg[1] = {5000};
    unsigned char *buf = seeded(5000, 8);
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(store_split(&b, &k, buf, seg, 1), FBK_OK);
    hooked = fbk__file_io_posix;
    hooked.preadv = counted_preadv;
    hooked.pread = counted_pread;
    fbk__file_io_set(&hooked);
    static const int codes[] = {FBK_ENOMEM, FBK_ECODEC, FBK_ECORRUPT};
    for (size_t i = 0; i < 3; i++) {
        place_arg a = {.result = codes[i]};
        int rc = b.ops->load_into(b.self, &k, 0, place_buf, &a);
        cr_assert_eq(rc, codes[i], "load_into gave %s, place said %s", fbk_err_name(rc),
                     fbk_err_name(codes[i]));
        cr_assert_eq(a.calls, 1);
        cr_assert_eq(a.len, 5000);
    }
    cr_assert_eq(g_reads, 0, "load_into read after place failed");
    fbk__file_io_set(NULL);
    /* still readable afterwards: no descriptor or state left behind */
    expect_loads(&b, &k, buf, 5000, "after place errors");
    free(buf);
    tu_be_close(&b);
}

Test(file_iov, load_into_of_a_file_shortened_while_it_is_read_is_ecorrupt)
{
    const char *dir = fresh("iov_short_file");
    tu_be b = tu_file_open(dir);
    size_t seg[2] = {24, 70000};
    unsigned char *buf = seeded(70024, 9);
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(store_split(&b, &k, buf, seg, 2), FBK_OK);
    char p[4300];
    key_path(p, sizeof p, dir, fs_spill_name(dir), &k);
    /* place() truncates the file after fstat told its length, before the
     * read: someone shortening the file behind the backend's back */
    place_arg a = {.split = 24, .shorten = p};
    int rc = b.ops->load_into(b.self, &k, 0, place_buf, &a);
    cr_assert_eq(rc, FBK_ECORRUPT, "gave %s: %s", fbk_err_name(rc), fbk_errmsg());
    cr_assert(strstr(fbk_errmsg(), "spill") != NULL && strstr(fbk_errmsg(), "35012") != NULL,
              "message: %s", fbk_errmsg());
    cr_assert(memcmp(a.buf, buf, 35012) == 0, "the part that was there is not what was stored");
    free(a.buf);
    free(buf);
    tu_be_close(&b);
}

Test(file_iov, load_into_of_a_missing_key_is_enotfound_without_calling_place)
{
    const char *dir = fresh("iov_missing");
    tu_be b = tu_file_open(dir);
    fbk_key k;
    fbk_key_generate(&k);
    place_arg a = {0};
    cr_assert_eq(b.ops->load_into(b.self, &k, 0, place_buf, &a), FBK_ENOTFOUND);
    cr_assert_eq(a.calls, 0);
    cr_assert(strstr(fbk_errmsg(), "spill") != NULL, "message: %s", fbk_errmsg());
    /* stored, removed: absent again */
    size_t seg[1] = {10};
    unsigned char buf[10] = {1, 2, 3};
    cr_assert_eq(store_split(&b, &k, buf, seg, 1), FBK_OK);
    cr_assert_eq(b.ops->remove(b.self, &k), FBK_OK);
    cr_assert_eq(b.ops->load_into(b.self, &k, 0, place_buf, &a), FBK_ENOTFOUND);
    cr_assert_eq(a.calls, 0);
    tu_be_close(&b);
}

static int place_bad(size_t len, struct iovec *iov, int *n, void *arg)
{
    static unsigned char sink[64];
    int how = *(int *)arg;
    if (how == 0) { /* one byte short */
        iov[0] = (struct iovec){sink, len - 1};
        *n = 1;
    } else if (how == 1) { /* too many segments */
        iov[0] = (struct iovec){sink, len};
        *n = FBK_PLACE_MAX + 1;
    } else { /* one byte too many */
        iov[0] = (struct iovec){sink, 1};
        iov[1] = (struct iovec){sink, len};
        *n = 2;
    }
    return FBK_OK;
}

Test(file_iov, bad_segment_counts_are_einval)
{
    const char *dir = fresh("iov_einval");
    tu_be b = tu_file_open(dir);
    fbk_key k;
    fbk_key_generate(&k);
    unsigned char buf[50] = {0};
    struct iovec iov[5];
    for (int i = 0; i < 5; i++)
        iov[i] = (struct iovec){buf + 10 * i, 10};
    cr_assert_eq(b.ops->store_iov(b.self, &k, iov, 5), FBK_EINVAL);
    cr_assert_eq(b.ops->store_iov(b.self, &k, iov, -1), FBK_EINVAL);
    cr_assert(!exists(dir, fs_spill_name(dir), &k));
    cr_assert_eq(b.ops->store_iov(b.self, &k, iov, 4), FBK_OK, "%s", fbk_errmsg());
    for (int how = 0; how < 3; how++) {
        int rc = b.ops->load_into(b.self, &k, 0, place_bad, &how);
        cr_assert_eq(rc, FBK_EINVAL, "case %d gave %s", how, fbk_err_name(rc));
    }
    tu_be_close(&b);
}

/* ------------------------------------------- spill writes and failures */

static long g_renames, g_creates_tmp, g_creates, g_writevs;

static int counting_renameat(int a, const char *b, int c, const char *d)
{
    g_renames++;
    return fbk__file_io_posix.renameat(a, b, c, d);
}

/* counts the files created (a create that failed -- ENOENT before the
 * first store into a shard made it -- created nothing) */
static int counting_openat(int at, const char *path, int flags, mode_t mode)
{
    if (flags & O_CREAT)
        cr_assert(flags & O_EXCL, "a spill file created without O_EXCL: %s", path);
    int fd = fbk__file_io_posix.openat(at, path, flags, mode);
    if ((flags & O_CREAT) && fd >= 0) {
        g_creates++;
        if (strstr(path, ".tmp-") != NULL)
            g_creates_tmp++;
    }
    return fd;
}

static ssize_t counting_writev(int fd, const struct iovec *iov, int n)
{
    g_writevs++;
    return fbk__file_io_posix.writev(fd, iov, n);
}

Test(file_iov, spill_stores_write_the_final_name_with_one_writev_and_no_rename, .fini = io_reset)
{
    const char *dir = fresh("iov_direct");
    tu_be b = tu_file_open(dir);
    hooked = fbk__file_io_posix;
    hooked.renameat = counting_renameat;
    hooked.openat = counting_openat;
    hooked.writev = counting_writev;
    fbk__file_io_set(&hooked);
    unsigned char *buf = seeded(1 << 20, 10);
    for (int i = 0; i < 10; i++) {
        fbk_key k;
        fbk_key_generate(&k);
        size_t seg[2] = {24, (size_t)(1 << 20) - 24};
        cr_assert_eq(store_split(&b, &k, buf, seg, 2), FBK_OK, "%s", fbk_errmsg());
        fbk_key k2;
        fbk_key_generate(&k2);
        tu_bytes tb = {5000, (uint64_t)i, 0};
        cr_assert_eq(b.ops->store(b.self, &k2, tb.len, tu_fill_bytes, &tb), FBK_OK);
        cr_assert(exists(dir, fs_spill_name(dir), &k) && exists(dir, fs_spill_name(dir), &k2));
    }
    fbk__file_io_set(NULL);
    cr_assert_eq(g_renames, 0, "stores renamed %ld times", g_renames);
    cr_assert_eq(g_creates, 20);
    cr_assert_eq(g_creates_tmp, 0, "stores made %ld temporaries", g_creates_tmp);
    cr_assert_eq(g_writevs, 10, "%ld writev calls for 10 store_iov of 1 MiB", g_writevs);
    free(buf);
    tu_be_close(&b);
}

static int g_fail_unlink;

static ssize_t enospc_writev(int fd, const struct iovec *iov, int n)
{
    (void)n;
    if (g_writevs++ == 0) /* a partial file first */
        return fbk__file_io_posix.write(fd, iov[0].iov_base, iov[0].iov_len);
    errno = ENOSPC;
    return -1;
}

static int failing_unlinkat(int at, const char *path, int flags)
{
    if (g_fail_unlink) {
        errno = EIO;
        return -1;
    }
    return fbk__file_io_posix.unlinkat(at, path, flags);
}

Test(file_iov, failed_store_iov_is_enospc_and_leaves_no_file, .fini = io_reset)
{
    const char *dir = fresh("iov_enospc");
    tu_be b = tu_file_open(dir);
    hooked = fbk__file_io_posix;
    hooked.writev = enospc_writev;
    fbk__file_io_set(&hooked);
    unsigned char *buf = seeded(300000, 11);
    size_t seg[3] = {24, 1000, 300000 - 1024};
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(store_split(&b, &k, buf, seg, 3), FBK_ENOSPC, "%s", fbk_errmsg());
    cr_assert_eq(fbk_last_os_error(), ENOSPC);
    cr_assert(strstr(fbk_errmsg(), "spill") != NULL, "message: %s", fbk_errmsg());
    cr_assert_eq(g_writevs, 2, "the partial write was not followed by the failing one");
    fbk__file_io_set(NULL);
    cr_assert_eq(shard_entries(dir, fs_spill_name(dir), &k), 0, "a file was left in the spill shard");
    place_arg a = {0};
    cr_assert_eq(b.ops->load_into(b.self, &k, 0, place_buf, &a), FBK_ENOTFOUND);
    /* the key can tu_be stored again */
    cr_assert_eq(store_split(&b, &k, buf, seg, 3), FBK_OK, "%s", fbk_errmsg());
    expect_loads(&b, &k, buf, 300000, "stored again");
    free(buf);
    tu_be_close(&b);
}

Test(file_iov, a_partial_file_whose_removal_failed_is_replaced_by_the_next_store, .fini = io_reset)
{
    const char *dir = fresh("iov_leftover");
    tu_be b = tu_file_open(dir);
    hooked = fbk__file_io_posix;
    hooked.writev = enospc_writev;
    hooked.unlinkat = failing_unlinkat;
    unsigned char *buf = seeded(200000, 12);
    size_t seg[2] = {5000, 195000};
    fbk_key k;
    fbk_key_generate(&k);
    g_fail_unlink = 1;
    fbk__file_io_set(&hooked);
    cr_assert_eq(store_split(&b, &k, buf, seg, 2), FBK_ENOSPC, "%s", fbk_errmsg());
    fbk__file_io_set(NULL);
    cr_assert(exists(dir, fs_spill_name(dir), &k), "the test needs the partial file to remain");
    /* the next store of the key replaces it: store_iov, then store */
    cr_assert_eq(store_split(&b, &k, buf, seg, 2), FBK_OK, "%s", fbk_errmsg());
    expect_loads(&b, &k, buf, 200000, "store_iov over a leftover");
    cr_assert_eq(shard_entries(dir, fs_spill_name(dir), &k), 1);

    fbk_key k2;
    fbk_key_generate(&k2);
    g_writevs = 0;
    fbk__file_io_set(&hooked);
    cr_assert_eq(store_split(&b, &k2, buf, seg, 2), FBK_ENOSPC);
    fbk__file_io_set(NULL);
    cr_assert(exists(dir, fs_spill_name(dir), &k2));
    tu_bytes tb = {123456, 13, 0};
    cr_assert_eq(b.ops->store(b.self, &k2, tb.len, tu_fill_bytes, &tb), FBK_OK, "%s", fbk_errmsg());
    unsigned char *want = seeded(tb.len, 13);
    expect_loads(&b, &k2, want, tb.len, "store over a leftover");
    free(want);
    free(buf);
    tu_be_close(&b);
}

Test(file_iov, register_key_over_a_leftover_spill_file_replaces_it)
{
    const char *dir = fresh("iov_register");
    tu_be b = tu_file_open(dir);
    void *loc;
    cr_assert_eq(b.ops->open_location(b.self, "loc", &loc), FBK_OK, "%s", fbk_errmsg());
    unsigned char *buf = seeded(50000, 14);
    size_t seg[2] = {24, 49976};
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(store_split(&b, &k, buf, seg, 2), FBK_OK);
    cr_assert_eq(b.ops->persist(b.self, loc, &k), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(b.ops->remove(b.self, &k), FBK_OK);
    /* a partial file under the key's spill name, as a failed store whose
     * removal failed too would leave */
    char p[4300];
    key_path(p, sizeof p, dir, fs_spill_name(dir), &k);
    write_file(p, "partial garbage");
    cr_assert_eq(b.ops->register_key(b.self, loc, &k), FBK_OK, "%s", fbk_errmsg());
    expect_loads(&b, &k, buf, 50000, "registered over a leftover");
    cr_assert_eq(shard_entries(dir, fs_spill_name(dir), &k), 1, "a temporary was left in the spill shard");
    char q[4300];
    key_path(q, sizeof q, dir, "loc", &k);
    struct stat s1, s2;
    cr_assert_eq(stat(p, &s1), 0);
    cr_assert_eq(stat(q, &s2), 0);
    cr_assert_eq(s1.st_ino, s2.st_ino, "register did not link the location's file");
    /* registering again over the same inode is fine too */
    cr_assert_eq(b.ops->register_key(b.self, loc, &k), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(shard_entries(dir, fs_spill_name(dir), &k), 1);
    expect_loads(&b, &k, buf, 50000, "registered twice");
    b.ops->close_location(b.self, loc);
    free(buf);
    tu_be_close(&b);
}

/* ------------------------------------------------------- location shards */

static dev_t g_root_dev;
static ino_t g_root_ino;
static long g_root_fsyncs, g_fsyncs;
static int g_fsync_errno;

static int watching_fsync(int fd)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_dev == g_root_dev && st.st_ino == g_root_ino)
        g_root_fsyncs++;
    g_fsyncs++;
    if (g_fsync_errno) {
        errno = g_fsync_errno;
        return -1;
    }
    return fbk__file_io_posix.fsync(fd);
}

static void watch_root(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "stat %s: %s", path, strerror(errno));
    g_root_dev = st.st_dev;
    g_root_ino = st.st_ino;
    g_root_fsyncs = g_fsyncs = 0;
}

/* A backend on a fresh directory `name` (its path in d) and an empty
 * location directory d/loc (its path in p) whose fsyncs watch_root counts. */
static tu_be watched_location(const char *name, const char *loc, char d[4096], char p[4300])
{
    cr_assert_lt((size_t)snprintf(d, 4096, "%s", fresh(name)), (size_t)4096);
    tu_be b = tu_file_open(d);
    cr_assert_lt((size_t)snprintf(p, 4300, "%s/%s", d, loc), (size_t)4300);
    cr_assert_eq(mkdir(p, 0755), 0);
    watch_root(p);
    return b;
}

Test(file_iov, a_fresh_location_has_256_shards_and_its_root_is_synced_at_open_not_in_sync,
     .fini = io_reset)
{
    char d[4096], p[4300];
    /* a location made by this open */
    tu_be b = watched_location("iov_shards", "fresh", d, p);
    hooked = fbk__file_io_posix;
    hooked.fsync = watching_fsync;
    fbk__file_io_set(&hooked);
    void *loc;
    cr_assert_eq(b.ops->open_location(b.self, "fresh", &loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(count_shards(p), 256);
    cr_assert_eq(g_root_fsyncs, 1, "the root was fsynced %ld times at open", g_root_fsyncs);
    size_t n = 0;
    cr_assert_eq(b.ops->scan(b.self, loc, tu_count_key, &n), 0, "scan of an empty location");
    /* persist one key + sync: the file and its shard, not the root */
    fbk_key k;
    fbk_key_generate(&k);
    size_t seg[1] = {4000};
    unsigned char *buf = seeded(4000, 15);
    cr_assert_eq(store_split(&b, &k, buf, seg, 1), FBK_OK);
    g_root_fsyncs = g_fsyncs = 0;
    cr_assert_eq(b.ops->persist(b.self, loc, &k), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(g_fsyncs, 0, "persist fsynced");
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(g_fsyncs, 2, "sync made %ld fsyncs (want: file, shard)", g_fsyncs);
    cr_assert_eq(g_root_fsyncs, 0, "sync fsynced the root");
    b.ops->close_location(b.self, loc);

    /* a location with some shards (an older layout, no marker) and a user's
     * file: adopted, the missing shards are made, nothing removed */
    PATHF(p, "%s/older", d);
    cr_assert_eq(mkdir(p, 0755), 0);
    char q[4400];
    PATHF(q, "%s/00", p);
    cr_assert_eq(mkdir(q, 0755), 0);
    PATHF(q, "%s/7f", p);
    cr_assert_eq(mkdir(q, 0755), 0);
    PATHF(q, "%s/MANIFEST", p);
    write_file(q, "the user's");
    watch_root(p);
    cr_assert_eq(b.ops->open_location(b.self, "older", &loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(count_shards(p), 256);
    cr_assert_eq(g_root_fsyncs, 1);
    PATHF(q, "%s/MANIFEST", p);
    struct stat st;
    cr_assert_eq(stat(q, &st), 0);
    /* a shard removed behind libfbk's back: a persist into it makes it,
     * and the sync makes the root durable again */
    PATHF(q, "%s/c3", p);
    cr_assert_eq(rmdir(q), 0);
    n = 0;
    cr_assert_eq(b.ops->scan(b.self, loc, tu_count_key, &n), 0);
    fbk_key kc;
    do
        fbk_key_generate(&kc);
    while (kc.bytes[0] != 0xc3);
    cr_assert_eq(store_split(&b, &kc, buf, seg, 1), FBK_OK);
    g_root_fsyncs = g_fsyncs = 0;
    cr_assert_eq(b.ops->persist(b.self, loc, &kc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(count_shards(p), 256);
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(g_root_fsyncs, 1, "a shard made by persist: the sync must fsync the root");
    b.ops->close_location(b.self, loc);

    /* reopening a complete location makes no shard, and fsyncs the root */
    watch_root(p);
    cr_assert_eq(b.ops->open_location(b.self, "older", &loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(g_root_fsyncs, 1);
    b.ops->close_location(b.self, loc);
    fbk__file_io_set(NULL);
    free(buf);
    tu_be_close(&b);
}

static int g_mkdir_errno;
static long g_mkdirs;

static int refusing_mkdirat(int at, const char *path, mode_t mode)
{
    g_mkdirs++;
    if (g_mkdir_errno) {
        errno = g_mkdir_errno;
        return -1;
    }
    return fbk__file_io_posix.mkdirat(at, path, mode);
}

/* the same file system refuses new files: the location's marker */
static int refusing_openat(int at, const char *path, int flags, mode_t mode)
{
    if (g_mkdir_errno && (flags & O_CREAT)) {
        errno = g_mkdir_errno;
        return -1;
    }
    return fbk__file_io_posix.openat(at, path, flags, mode);
}

/* A location that refuses new directories (EROFS, EACCES, EPERM) opens
 * silently without shards and scans; once writable, the first persist makes
 * its shard and the sync fsyncs the root.  (Injected: this runs as root.) */
Test(file_iov, a_location_refusing_mkdir_opens_and_gets_its_shards_lazily, .fini = io_reset)
{
    static const int errs[] = {EROFS, EACCES, EPERM};
    for (size_t e = 0; e < 3; e++) {
        char name[32];
        PATHF(name, "iov_ro_%zu", e);
        char d[4096], p[4300];
        tu_be b = watched_location(name, "loc", d, p);
        hooked = fbk__file_io_posix;
        hooked.mkdirat = refusing_mkdirat;
        hooked.openat = refusing_openat;
        hooked.fsync = watching_fsync;
        g_mkdir_errno = errs[e];
        g_mkdirs = 0;
        fbk__file_io_set(&hooked);
        void *loc;
        cr_assert_eq(b.ops->open_location(b.self, "loc", &loc), FBK_OK, "%s: %s", strerror(errs[e]),
                     fbk_errmsg());
        cr_assert_eq(g_mkdirs, 1, "kept trying after the first refusal");
        cr_assert_eq(g_root_fsyncs, 0, "nothing was made: no fsync");
        cr_assert_eq(count_shards(p), 0);
        size_t n = 0;
        cr_assert_eq(b.ops->scan(b.self, loc, tu_count_key, &n), 0, "%s", fbk_errmsg());
        cr_assert_eq(n, 0);
        cr_assert_eq(b.ops->sync(b.self, loc), FBK_OK, "%s", fbk_errmsg());
        /* writable again */
        g_mkdir_errno = 0;
        fbk_key k;
        fbk_key_generate(&k);
        size_t seg[2] = {24, 3000};
        unsigned char *buf = seeded(3024, 16);
        cr_assert_eq(store_split(&b, &k, buf, seg, 2), FBK_OK);
        cr_assert_eq(b.ops->persist(b.self, loc, &k), FBK_OK, "%s", fbk_errmsg());
        cr_assert_eq(count_shards(p), 1);
        g_root_fsyncs = 0;
        cr_assert_eq(b.ops->sync(b.self, loc), FBK_OK, "%s", fbk_errmsg());
        cr_assert_eq(g_root_fsyncs, 1, "the lazily made shard's name was not made durable");
        b.ops->close_location(b.self, loc);
        fbk__file_io_set(NULL);
        tu_be_close(&b);
        b = tu_file_open(d);
        cr_assert_eq(b.ops->open_location(b.self, "loc", &loc), FBK_OK, "%s", fbk_errmsg());
        cr_assert_eq(count_shards(p), 256);
        n = 0;
        cr_assert_eq(b.ops->scan(b.self, loc, tu_count_key, &n), 0);
        cr_assert_eq(n, 1);
        cr_assert_eq(b.ops->register_key(b.self, loc, &k), FBK_OK, "%s", fbk_errmsg());
        expect_loads(&b, &k, buf, 3024, "after a read-only open");
        b.ops->close_location(b.self, loc);
        tu_be_close(&b);
        free(buf);
    }
}

Test(file_iov, a_read_only_location_still_opens_and_scans)
{
    if (geteuid() == 0)
        cr_skip("running as root: directory modes are not enforced (see the injected case)");
    const char *dir = fresh("iov_chmod");
    char d[4096], p[4300];
    PATHF(d, "%s", dir);
    tu_be b = tu_file_open(d);
    void *loc;
    cr_assert_eq(b.ops->open_location(b.self, "loc", &loc), FBK_OK, "%s", fbk_errmsg());
    fbk_key k;
    fbk_key_generate(&k);
    size_t seg[1] = {7000};
    unsigned char *buf = seeded(7000, 17);
    cr_assert_eq(store_split(&b, &k, buf, seg, 1), FBK_OK);
    cr_assert_eq(b.ops->persist(b.self, loc, &k), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_OK, "%s", fbk_errmsg());
    b.ops->close_location(b.self, loc);
    tu_be_close(&b);
    /* the older layout (only the shard in use), made read-only */
    char hex[33];
    fbk_key_format_hex(&k, hex);
    for (int i = 0; i < 256; i++) {
        char q[4400];
        PATHF(q, "%s/loc/%02x", d, i);
        if (strncmp(q + strlen(q) - 2, hex, 2) != 0)
            cr_assert_eq(rmdir(q), 0, "rmdir %s: %s", q, strerror(errno));
    }
    PATHF(p, "%s/loc", d);
    cr_assert_eq(chmod(p, 0555), 0);
    b = tu_file_open(d);
    int rc = b.ops->open_location(b.self, "loc", &loc);
    cr_assert_eq(rc, FBK_OK, "a read-only location did not open: %s", fbk_errmsg());
    cr_assert_eq(count_shards(p), 1);
    size_t n = 0;
    cr_assert_eq(b.ops->scan(b.self, loc, tu_count_key, &n), 0, "%s", fbk_errmsg());
    cr_assert_eq(n, 1);
    cr_assert_eq(b.ops->register_key(b.self, loc, &k), FBK_OK, "%s", fbk_errmsg());
    expect_loads(&b, &k, buf, 7000, "registered from a read-only location");
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_OK, "%s", fbk_errmsg());
    b.ops->close_location(b.self, loc);
    tu_be_close(&b);
    chmod(p, 0755);
    free(buf);
}

/* A full disk (or any mkdir error) at open does not stop the location from
 * opening -- it can still tu_be read -- and leaves the shards to later. */
Test(file_iov, full_disk_at_open_leaves_the_shards_for_later, .fini = io_reset)
{
    const char *dir = fresh("iov_mkdir_enospc");
    tu_be b = tu_file_open(dir);
    hooked = fbk__file_io_posix;
    hooked.mkdirat = refusing_mkdirat;
    fbk__file_io_set(&hooked);
    void *loc = NULL;
    char p[4300];
    PATHF(p, "%s/loc", dir);
    cr_assert_eq(mkdir(p, 0755), 0);
    g_mkdir_errno = ENOSPC;
    cr_assert_eq(b.ops->open_location(b.self, "loc", &loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_not_null(loc);
    cr_assert_eq(count_shards(p), 0);
    b.ops->close_location(b.self, loc);
    g_mkdir_errno = 0;
    loc = NULL;
    cr_assert_eq(b.ops->open_location(b.self, "loc", &loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(count_shards(p), 256);
    b.ops->close_location(b.self, loc);
    fbk__file_io_set(NULL);
    tu_be_close(&b);
}

/* The root fsync at open fails: the location opens (it can tu_be read) but is
 * failed like after a failed sync -- for this handle and for a handle on the
 * same directory reopened in this store -- and a new store starts clean. */
Test(file_iov, a_failed_root_fsync_at_open_makes_the_location_failed, .fini = io_reset)
{
    char d[4096], p[4300];
    tu_be b = watched_location("iov_open_fsync", "loc", d, p);
    hooked = fbk__file_io_posix;
    hooked.fsync = watching_fsync;
    fbk__file_io_set(&hooked);
    g_fsync_errno = EIO;
    void *loc;
    cr_assert_eq(b.ops->open_location(b.self, "loc", &loc), FBK_OK, "%s", fbk_errmsg());
    g_fsync_errno = 0;
    cr_assert_eq(g_root_fsyncs, 1);
    size_t n = 0;
    cr_assert_eq(b.ops->scan(b.self, loc, tu_count_key, &n), 0);
    fbk_key k;
    fbk_key_generate(&k);
    size_t seg[1] = {100};
    unsigned char *buf = seeded(100, 18);
    cr_assert_eq(store_split(&b, &k, buf, seg, 1), FBK_OK);
    cr_assert_eq(b.ops->persist(b.self, loc, &k), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_EIO);
    cr_assert(strstr(fbk_errmsg(), "at open") != NULL && strstr(fbk_errmsg(), "earlier") != NULL,
              "message: %s", fbk_errmsg());
    b.ops->close_location(b.self, loc);
    cr_assert_eq(b.ops->open_location(b.self, "loc", &loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_EIO, "a reopened handle forgot the failure");
    b.ops->close_location(b.self, loc);
    fbk__file_io_set(NULL);
    tu_be_close(&b);
    b = tu_file_open(d);
    cr_assert_eq(b.ops->open_location(b.self, "loc", &loc), FBK_OK, "%s", fbk_errmsg());
    n = 0;
    cr_assert_eq(b.ops->scan(b.self, loc, tu_count_key, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(b.ops->sync(b.self, loc), FBK_OK, "a new store did not start clean: %s",
                 fbk_errmsg());
    cr_assert_eq(b.ops->register_key(b.self, loc, &k), FBK_OK, "%s", fbk_errmsg());
    expect_loads(&b, &k, buf, 100, "after the failed open fsync");
    b.ops->close_location(b.self, loc);
    tu_be_close(&b);
    free(buf);
}

/* A backend on a fresh directory `name` holding, under a new key *k, a
 * seeded value of 5024 bytes stored as a 24-byte header and a body (as the
 * core stores a frame).  Returns the bytes (to free). */
static unsigned char *framed_value(const char *name, uint64_t seed, tu_be *b, fbk_key *k)
{
    *b = tu_file_open(fresh(name));
    size_t seg[2] = {24, 5000};
    unsigned char *buf = seeded(5024, seed);
    fbk_key_generate(k);
    cr_assert_eq(store_split(b, k, buf, seg, 2), FBK_OK, "%s", fbk_errmsg());
    return buf;
}

/* The core's length hint: trusted instead of an fstat, but a file of any
 * other length is refused (FBK_ECORRUPT), longer as well as shorter. */
static long g_fstats;
static int counting_fstat(int fd, struct stat *st)
{
    g_fstats++;
    return fstat(fd, st);
}

Test(file_iov, load_into_trusts_the_hint_and_refuses_other_lengths, .fini = io_reset)
{
    tu_be b;
    fbk_key k;
    unsigned char *buf = framed_value("iov_hint", 21, &b, &k);
    hooked = fbk__file_io_posix;
    hooked.fstat = counting_fstat;
    hooked.preadv = counted_preadv;
    hooked.pread = counted_pread;
    fbk__file_io_set(&hooked);
    g_fstats = 0;
    g_reads = 0;

    place_arg a = {.split = 24};
    cr_assert_eq(b.ops->load_into(b.self, &k, 5024, place_buf, &a), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(g_fstats, 0, "an fstat although the hint gave the length");
    /* the read that asked for the probe byte and got none of it met the end
     * of the file: no second read to hear it again */
    cr_assert_eq(g_reads, 1, "%ld reads for one load with the hint", g_reads);
    cr_assert_eq(a.len, 5024);
    cr_assert(memcmp(a.buf, buf, 5024) == 0);
    free(a.buf);

    place_arg longer = {.split = 24};
    int rc = b.ops->load_into(b.self, &k, 5000, place_buf, &longer);
    cr_assert_eq(rc, FBK_ECORRUPT, "a file longer than the hint gave %s", fbk_err_name(rc));
    cr_assert(strstr(fbk_errmsg(), "longer") != NULL, "message: %s", fbk_errmsg());
    free(longer.buf);

    place_arg shorter = {.split = 24};
    rc = b.ops->load_into(b.self, &k, 6000, place_buf, &shorter);
    cr_assert_eq(rc, FBK_ECORRUPT, "a file shorter than the hint gave %s", fbk_err_name(rc));
    free(shorter.buf);

    g_fstats = 0;
    place_arg none = {.split = 24};
    cr_assert_eq(b.ops->load_into(b.self, &k, 0, place_buf, &none), FBK_OK);
    cr_assert_eq(g_fstats, 1, "no hint: the length comes from fstat");
    cr_assert_eq(none.len, 5024);
    free(none.buf);
    fbk__file_io_set(NULL);
    free(buf);
    tu_be_close(&b);
}

/* Loads open spill files with O_NOATIME: reading a value back must not
 * dirty its inode (on ext4 an atime update cost 16 KiB reads ~15%,
 * docs/file-backend.md).  A file the process does not own refuses
 * O_NOATIME with EPERM: the load then opens it without. */
static int g_noatime_opens, g_eperm;
static int noatime_openat(int at, const char *path, int flags, mode_t mode)
{
    if (flags & O_NOATIME) {
        g_noatime_opens++;
        if (g_eperm) {
            errno = EPERM;
            return -1;
        }
    }
    return fbk__file_io_posix.openat(at, path, flags, mode);
}

Test(file_iov, loads_open_with_noatime_and_fall_back_on_eperm, .fini = io_reset)
{
    tu_be b;
    fbk_key k;
    unsigned char *buf = framed_value("iov_noatime", 33, &b, &k);
    hooked = fbk__file_io_posix;
    hooked.openat = noatime_openat;
    fbk__file_io_set(&hooked);
    g_noatime_opens = 0;
    g_eperm = 0;
    expect_loads(&b, &k, buf, 5024, "O_NOATIME");
    cr_assert_eq(g_noatime_opens, 4, "%d of 4 loads opened with O_NOATIME", g_noatime_opens);
    g_eperm = 1;
    expect_loads(&b, &k, buf, 5024, "O_NOATIME refused");
    cr_assert_eq(g_noatime_opens, 8, "the loads did not try O_NOATIME first");
    fbk__file_io_set(NULL);
    free(buf);
    tu_be_close(&b);
}
