#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int tu_rmtree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    return nftw(path, rm_one, 64, FTW_DEPTH | FTW_PHYS);
}

static int mkdir_p(const char *path)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n >= sizeof tmp)
        return -1;
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return (mkdir(tmp, 0755) != 0 && errno != EEXIST) ? -1 : 0;
}

const char *tu_fresh_dir(const char *name)
{
    static char buf[4096];
    const char *base = getenv("FBK_TEST_DIR");
    if (base && *base)
        snprintf(buf, sizeof buf, "%s/%s", base, name);
    else
        snprintf(buf, sizeof buf, "/tmp/fbk-test-%ld/%s", (long)getpid(), name);
    cr_assert_eq(tu_rmtree(buf), 0, "cannot clear %s: %s", buf, strerror(errno));
    cr_assert_eq(mkdir_p(buf), 0, "cannot create %s: %s", buf, strerror(errno));
    return buf;
}

void tu_fill(void *buf, size_t len, uint64_t seed)
{
    /* splitmix64 stream */
    unsigned char *p = buf;
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    while (len > 0) {
        uint64_t z = (x += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        size_t k = len < 8 ? len : 8;
        memcpy(p, &z, k);
        p += k;
        len -= k;
    }
}

fbk_blob *tu_blob(size_t len, uint64_t seed)
{
    fbk_blob *b = fbk_blob_new(NULL, len);
    cr_assert_not_null(b, "fbk_blob_new(%zu) failed", len);
    tu_fill(b->data, len, seed);
    return b;
}

int tu_blob_check(const fbk_blob *b, size_t len, uint64_t seed)
{
    if (!b || b->len != len)
        return 0;
    unsigned char *want = malloc(len ? len : 1);
    if (!want)
        return 0;
    tu_fill(want, len, seed);
    int ok = memcmp(want, b->data, len) == 0;
    free(want);
    return ok;
}

int tu_fill_bytes(void *dst, size_t len, void *arg)
{
    tu_bytes *b = arg;
    if (len != b->len)
        return FBK_EINVAL;
    tu_fill(dst, len, b->seed);
    return b->fail ? fbk_error_set(FBK_ECODEC, 0, "test: fill refused") : FBK_OK;
}

int tu_check_bytes(const void *src, size_t len, void *arg)
{
    tu_bytes *b = arg;
    if (len != b->len)
        return FBK_ECORRUPT;
    unsigned char *want = malloc(len ? len : 1);
    if (!want)
        return FBK_ENOMEM;
    tu_fill(want, len, b->seed);
    int same = memcmp(want, src, len) == 0;
    free(want);
    return same ? FBK_OK : FBK_ECORRUPT;
}

int tu_fd_path_has(int fd, const char *part)
{
    char link[64], target[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return 0;
    target[n] = '\0';
    return strstr(target, part) != NULL;
}

int tu_count_key(const fbk_key *key, void *arg)
{
    (void)key;
    (*(size_t *)arg)++;
    return 0;
}

tu_be tu_file_open(const char *dir)
{
    tu_be b = {0};
    int rc = fbk_backend_file_create(dir, NULL, &b.ops, &b.self);
    cr_assert_eq(rc, FBK_OK, "file_create(%s): %s", dir, fbk_errmsg());
    cr_assert_geq(b.ops->version, 2u);
    cr_assert_not_null(b.ops->store_iov);
    cr_assert_not_null(b.ops->load_into);
    return b;
}

void tu_be_close(tu_be *b)
{
    b->ops->close(b->self);
    b->self = NULL;
}

const char *tu_tmpfs(const char *name, const char *size)
{
    static char buf[4096];
    const char *base = getenv("FBK_TEST_DIR");
    if (base && *base)
        snprintf(buf, sizeof buf, "%s/%s", base, name);
    else
        snprintf(buf, sizeof buf, "/tmp/fbk-test-%ld/%s", (long)getpid(), name);
    (void)umount2(buf, MNT_DETACH); /* left over by a crashed run */
    snprintf(buf, sizeof buf, "%s", tu_fresh_dir(name));
    char opts[64];
    snprintf(opts, sizeof opts, "size=%s,mode=0755", size);
    if (mount("fbk-test", buf, "tmpfs", 0, opts) != 0)
        return NULL;
    return buf;
}

int tu_remount_ro(const char *path)
{
    return mount(NULL, path, NULL, MS_REMOUNT | MS_RDONLY, NULL);
}

void tu_umount(const char *path) { (void)umount2(path, MNT_DETACH); }

int tu_map_open(tu_mapenv *e, const char *uri, const char *loc, size_t mem_items,
                const fbk_map_options *o, unsigned store_flags)
{
    memset(e, 0, sizeof *e);
    fbk_store_options so = {.flags = store_flags};
    int rc = fbk_store_open(&e->s, uri, &so);
    if (rc == 0)
        rc = fbk_pool_create(&e->p, e->s, &fbk_blob_codec, mem_items);
    if (rc == 0)
        rc = fbk_location_open(e->s, loc, &e->loc);
    if (rc == 0)
        rc = fbk_map_open(e->p, e->loc, o, &e->m);
    if (rc) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", fbk_errmsg());
        fbk_location_close(e->loc);
        fbk_pool_release(e->p);
        fbk_store_close(e->s);
        memset(e, 0, sizeof *e);
        fbk_error_set(rc, 0, "%s", msg);
    }
    return rc;
}

int tu_map_close(tu_mapenv *e)
{
    int rc = fbk_map_close(e->m);
    fbk_location_close(e->loc);
    fbk_pool_release(e->p);
    fbk_store_close(e->s);
    memset(e, 0, sizeof *e);
    return rc;
}

const char *tu_rados_conf(void)
{
    const char *c = getenv("FBK_RADOS_CONF");
    struct stat st;
    if (!c || stat(c, &st) != 0)
        return NULL;
    return c;
}

/* ------------------------------------------------ a counting allocator */

static atomic_long alloc_live;
static atomic_ulong alloc_calls;
int (*volatile tu_alloc_fail)(void);

long tu_alloc_live_get(void) { return atomic_load(&alloc_live); }
unsigned long tu_alloc_calls_get(void) { return atomic_load(&alloc_calls); }
void tu_alloc_reset(void)
{
    atomic_store(&alloc_live, 0);
    atomic_store(&alloc_calls, 0);
}

static int alloc_fails(void)
{
    atomic_fetch_add(&alloc_calls, 1);
    int (*f)(void) = tu_alloc_fail;
    return f && f();
}

static void *tu_malloc(size_t n, void *ctx)
{
    (void)ctx;
    if (alloc_fails())
        return NULL;
    void *p = malloc(n);
    if (p)
        atomic_fetch_add(&alloc_live, 1);
    return p;
}

static void *tu_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    if (alloc_fails())
        return NULL;
    void *q = realloc(p, n);
    if (q && !p)
        atomic_fetch_add(&alloc_live, 1);
    return q;
}

static void tu_free(void *p, void *ctx)
{
    (void)ctx;
    if (p)
        atomic_fetch_sub(&alloc_live, 1);
    free(p);
}

const fbk_allocator tu_counting_allocator = {tu_malloc, tu_realloc, tu_free, NULL};
