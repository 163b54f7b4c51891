/* test_rados_faults.c -- rados: under a failure whose outcome is unknown.
 *
 * A striped value is written as stripes under a fresh token, then its head
 * (docs/rados-backend.md, "persist of a striped value").  A head write that
 * fails with a timeout may still have been applied by the OSD: its stripes
 * must then stay, or the key's head names stripes that are gone and the
 * value -- including the one persisted before, whose head it replaced -- is
 * unreadable.  The head write is interposed here: it is applied, then
 * reported as -ETIMEDOUT.  Against the test cluster ($FBK_RADOS_CONF);
 * skips without it.  The stripe size comes down to 4 MiB (Ceph's least
 * osd_max_write_size) through CEPH_ARGS, so 10 MiB make three stripes. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <fbk_backend.h>
#include <rados/librados.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LEN ((size_t)10 << 20)

static atomic_int g_armed;
static char g_hex[33];

/* librados's rados_write_full, except that a write of the armed key's head
 * is applied and then reported as timed out */
int rados_write_full(rados_ioctx_t io, const char *oid, const char *buf, size_t len)
{
    static int (*real)(rados_ioctx_t, const char *, const char *, size_t);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "rados_write_full");
    int r = real(io, oid, buf, len);
    if (atomic_load(&g_armed) && r == 0 && strcmp(oid, g_hex) == 0)
        return -ETIMEDOUT;
    return r;
}

typedef struct backend {
    const fbk_backend_ops *ops;
    void *self, *loc;
} backend;

static void backend_open(backend *b, const char *who, const char *ns)
{
    char name[256], arg[4200];
    snprintf(name, sizeof name, "rados-faults-%s-%s", who, ns);
    snprintf(arg, sizeof arg, "%s?pool=fbk&conf=%s", tu_fresh_dir(name), tu_rados_conf());
    cr_assert_eq(fbk_backend_rados_create(arg, NULL, &b->ops, &b->self), FBK_OK, "%s",
                 fbk_errmsg());
    cr_assert_eq(b->ops->open_location(b->self, ns, &b->loc), FBK_OK, "%s", fbk_errmsg());
}

static void backend_close(backend *b)
{
    b->ops->close_location(b->self, b->loc);
    b->ops->close(b->self);
}

Test(rados_faults, a_head_write_that_timed_out_but_was_applied_keeps_the_value_readable,
     .timeout = 120)
{
    TU_NEED_RADOS();
    cr_assert_eq(setenv("CEPH_ARGS", "--osd_max_write_size=4", 1), 0);
    char ns[128];
    snprintf(ns, sizeof ns, "faults-head-%d-%ld", (int)getpid(), (long)time(NULL));
    backend a;
    backend_open(&a, "a", ns);
    fbk_key k;
    fbk_key_generate(&k);
    fbk_key_format_hex(&k, g_hex);
    tu_bytes want = {LEN, 77, 0};
    cr_assert_eq(a.ops->store(a.self, &k, LEN, tu_fill_bytes, &want), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(a.ops->persist(a.self, a.loc, &k), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(a.ops->sync(a.self, a.loc), FBK_OK, "%s", fbk_errmsg());

    /* the same key persisted again (as after another store removed it from
     * this one's view); its head write is applied but reported lost */
    atomic_store(&g_armed, 1);
    int rc = a.ops->persist(a.self, a.loc, &k);
    atomic_store(&g_armed, 0);
    cr_assert_eq(rc, FBK_ETIMEDOUT, "%s: %s", fbk_err_name(rc), fbk_errmsg());
    backend_close(&a);

    /* another machine reads the key: the head written last names its
     * stripes, which must be there */
    backend b;
    backend_open(&b, "b", ns);
    cr_assert_eq(b.ops->register_key(b.self, b.loc, &k), FBK_OK, "%s", fbk_errmsg());
    rc = b.ops->load(b.self, &k, tu_check_bytes, &want);
    cr_assert_eq(rc, FBK_OK, "%s: %s", fbk_err_name(rc), fbk_errmsg());
    backend_close(&b);
}
