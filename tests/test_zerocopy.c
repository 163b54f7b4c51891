/* test_zerocopy.c -- the zero-copy paths (codec view/reserve with backend
 * store_iov/load_into, table version 2): the same frame reaches the backend
 * as through encode + fill, corruption is still refused, a failing reserve
 * loses nothing, and each half falls back on its own when the other side
 * cannot take part. */
#include "counting_backend.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define HDR 24

/* fbk_blob_codec with counters and switches around it. */
typedef struct zc {
    _Atomic unsigned long views, reserves, encodes, decodes, destroys;
    _Atomic int view_null;    /* view returns NULL (use encode) */
    _Atomic int reserve_fail; /* reserve returns this */
    _Atomic int no_halves;    /* (set before the pool is made) no view/reserve at all */
} zc;

static size_t zc_size(const void *o, void *ctx)
{
    return fbk_blob_codec.size(o, ctx);
}

static int zc_encode(const void *o, void *dst, size_t len, void *ctx)
{
    atomic_fetch_add(&((zc *)ctx)->encodes, 1);
    return fbk_blob_codec.encode(o, dst, len, NULL);
}

static int zc_decode(const void *src, size_t len, void **out, void *ctx)
{
    atomic_fetch_add(&((zc *)ctx)->decodes, 1);
    return fbk_blob_codec.decode(src, len, out, NULL);
}

static void zc_destroy(void *o, void *ctx)
{
    atomic_fetch_add(&((zc *)ctx)->destroys, 1);
    fbk_blob_codec.destroy(o, NULL);
}

static const void *zc_view(const void *o, void *ctx)
{
    zc *z = ctx;
    atomic_fetch_add(&z->views, 1);
    return atomic_load(&z->view_null) ? NULL : fbk_blob_codec.view(o, NULL);
}

static int zc_reserve(size_t len, void **obj, void **dst, void *ctx)
{
    zc *z = ctx;
    atomic_fetch_add(&z->reserves, 1);
    int f = atomic_load(&z->reserve_fail);
    return f ? f : fbk_blob_codec.reserve(len, obj, dst, NULL);
}

typedef struct zfx {
    fbk_store *s;
    counting *cb;
    fbk_pool *p;
    zc z;
    fbk_handle *others[8]; /* inserted to push items out; released at zclose */
    int nothers;
} zfx;

static void zopen(zfx *f, unsigned flags, size_t mem_items, int halves)
{
    fbk_store_options o = {0};
    int rc = counting_open_flags(&f->s, &o, flags, &f->cb);
    cr_assert_eq(rc, 0, "%s", fbk_errmsg());
    fbk_codec c = {.size = zc_size,
                   .encode = zc_encode,
                   .decode = zc_decode,
                   .destroy = zc_destroy,
                   .ctx = &f->z,
                   .view = halves ? zc_view : NULL,
                   .reserve = halves ? zc_reserve : NULL};
    cr_assert_eq(fbk_pool_create(&f->p, f->s, &c, mem_items), 0);
}

static void zclose(zfx *f)
{
    for (int i = 0; i < f->nothers; i++)
        fbk_handle_release(f->others[i]);
    fbk_store_drain(f->s);
    cr_expect_eq(counting_violations(f->cb), 0);
    fbk_pool_release(f->p);
    fbk_store_close(f->s);
    counting_free(f->cb);
}

/* Inserts a blob, writes it, and pushes it out of memory (mem_items 2). */
static fbk_handle *spill(zfx *f, size_t len, uint64_t seed)
{
    fbk_handle *h;
    cr_assert_eq(fbk_insert(f->p, tu_blob(len, seed), &h), 0);
    cr_assert_eq(fbk_write_now(h), 0, "%s", fbk_errmsg());
    for (int i = 0; i < 2; i++) {
        cr_assert_lt(f->nothers, 8);
        cr_assert_eq(fbk_insert(f->p, tu_blob(8, 1000 + (uint64_t)i), &f->others[f->nothers++]),
                     0);
    }
    cr_assert_eq(fbk_store_drain(f->s), 0);
    const void *obj;
    cr_assert_eq(fbk_try_load(h, &obj), FBK_EAGAIN, "the item should be out of memory");
    return h;
}

static uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

Test(zerocopy, blobs_round_trip_without_encode_or_decode)
{
    static const size_t sizes[] = {0, 1, 24, 1000, 65536, (1 << 20) + 3};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        zfx f = {0};
        zopen(&f, COUNTING_IOV, 2, 1);
        size_t len = sizes[i];
        fbk_handle *h = spill(&f, len, 7 + i);
        /* the stored frame is the one encode + fill would have made */
        fbk_key k = tc_key(h);
        size_t total;
        unsigned char *b = counting_spill_get(f.cb, &k, &total);
        cr_assert_not_null(b);
        cr_assert_eq(total, HDR + len);
        cr_assert_eq(memcmp(b, "FBKB\1\0\0\0", 8), 0);
        cr_assert_eq(le64(b + 8), len);
        fbk_blob *want = tu_blob(len, 7 + i);
        cr_assert_eq(le64(b + 16), XXH3_64bits(want->data, len), "checksum for len %zu", len);
        cr_assert(len == 0 || memcmp(b + HDR, want->data, len) == 0);
        fbk_blob_free(want);
        free(b);

        const void *obj;
        cr_assert_eq(fbk_load(h, &obj), 0, "%s", fbk_errmsg());
        cr_assert(tu_blob_check(obj, len, 7 + i), "len %zu came back different", len);
        fbk_unload(h);
        cr_assert_eq(atomic_load(&f.z.encodes), 0, "encode was called");
        cr_assert_eq(atomic_load(&f.z.decodes), 0, "decode was called");
        cr_assert_geq(atomic_load(&f.z.views), 1);
        cr_assert_eq(atomic_load(&f.z.reserves), 1);
        fbk_handle_release(h);
        zclose(&f);
    }
}

static void corrupt_case(int how)
{
    zfx f = {0};
    zopen(&f, COUNTING_IOV, 2, 1);
    fbk_handle *h = spill(&f, 5000, 3);
    fbk_key k = tc_key(h);
    unsigned long destroys = atomic_load(&f.z.destroys);
    if (how == 0)
        cr_assert_eq(counting_corrupt(f.cb, &k, HDR + 4321), 0); /* payload */
    else if (how == 1)
        cr_assert_eq(counting_corrupt(f.cb, &k, 9), 0); /* length field */
    else if (how == 2)
        cr_assert_eq(counting_truncate(f.cb, &k, HDR + 4000), 0);
    else
        cr_assert_eq(counting_truncate(f.cb, &k, 10), 0); /* shorter than a header */
    const void *obj;
    int rc = fbk_load(h, &obj);
    cr_assert_eq(rc, FBK_ECORRUPT, "case %d: load gave %s", how, fbk_err_name(rc));
    cr_assert_neq(strstr(fbk_errmsg(), "frame"), NULL, "message: %s", fbk_errmsg());
    /* a reserved object that failed the check was destroyed, not leaked */
    cr_assert_eq(atomic_load(&f.z.destroys) - destroys, atomic_load(&f.z.reserves),
                 "case %d: reserved %lu, destroyed %lu", how, atomic_load(&f.z.reserves),
                 atomic_load(&f.z.destroys) - destroys);
    fbk_handle_release(h);
    zclose(&f);
}

Test(zerocopy, flipped_payload_byte_is_refused) { corrupt_case(0); }
Test(zerocopy, damaged_length_is_refused) { corrupt_case(1); }
Test(zerocopy, truncated_value_is_refused) { corrupt_case(2); }
Test(zerocopy, value_shorter_than_header_is_refused) { corrupt_case(3); }

Test(zerocopy, failed_reserve_loses_nothing)
{
    zfx f = {0};
    zopen(&f, COUNTING_IOV, 2, 1);
    fbk_handle *h = spill(&f, 3000, 11);
    atomic_store(&f.z.reserve_fail, FBK_ENOMEM);
    const void *obj;
    cr_assert_eq(fbk_load(h, &obj), FBK_ENOMEM);
    atomic_store(&f.z.reserve_fail, -5);
    cr_assert_eq(fbk_load(h, &obj), FBK_ECODEC);
    atomic_store(&f.z.reserve_fail, 0);
    cr_assert_eq(fbk_load(h, &obj), 0, "%s", fbk_errmsg());
    cr_assert(tu_blob_check(obj, 3000, 11));
    fbk_unload(h);
    fbk_handle_release(h);
    zclose(&f);
}

Test(zerocopy, view_returning_null_falls_back_to_encode)
{
    zfx f = {0};
    zopen(&f, COUNTING_IOV, 2, 1);
    atomic_store(&f.z.view_null, 1);
    fbk_handle *h = spill(&f, 2000, 5);
    cr_assert_geq(atomic_load(&f.z.encodes), 1);
    const void *obj;
    cr_assert_eq(fbk_load(h, &obj), 0);
    cr_assert(tu_blob_check(obj, 2000, 5));
    fbk_unload(h);
    fbk_handle_release(h);
    zclose(&f);
}

/* A round trip that must go through encode + fill and read + decode. */
static void expect_copying_path(unsigned flags, int halves)
{
    zfx f = {0};
    zopen(&f, flags, 2, halves);
    fbk_handle *h = spill(&f, 2000, 5);
    const void *obj;
    cr_assert_eq(fbk_load(h, &obj), 0);
    cr_assert(tu_blob_check(obj, 2000, 5));
    fbk_unload(h);
    cr_assert_geq(atomic_load(&f.z.encodes), 1);
    cr_assert_eq(atomic_load(&f.z.decodes), 1);
    cr_assert_eq(atomic_load(&f.z.views) + atomic_load(&f.z.reserves), 0);
    fbk_handle_release(h);
    zclose(&f);
}

Test(zerocopy, codec_without_view_or_reserve_uses_encode_and_decode)
{
    expect_copying_path(COUNTING_IOV, 0);
}

Test(zerocopy, backend_without_iov_uses_fill_and_read) { expect_copying_path(0, 1); }

/* the core must not use version-2 members of a version-1 table */
Test(zerocopy, version_1_table_is_not_asked)
{
    expect_copying_path(COUNTING_IOV | COUNTING_STORE_MANY_V1, 1);
}

Test(zerocopy, backend_failures_keep_the_object)
{
    zfx f = {0};
    zopen(&f, COUNTING_IOV, 2, 1);
    fbk_handle *h;
    cr_assert_eq(fbk_insert(f.p, tu_blob(4000, 9), &h), 0);
    counting_fail(f.cb, CB_STORE, FBK_ENOSPC, 1);
    cr_assert_eq(fbk_write_now(h), FBK_ENOSPC);
    const void *obj;
    cr_assert_eq(fbk_try_load(h, &obj), 0, "the object left memory after a failed write");
    cr_assert(tu_blob_check(obj, 4000, 9));
    fbk_unload(h);
    h = (fbk_handle_release(h), spill(&f, 4000, 10));
    counting_fail(f.cb, CB_LOAD, FBK_EIO, 1);
    unsigned long before = atomic_load(&f.z.destroys);
    cr_assert_eq(fbk_load(h, &obj), FBK_EIO);
    cr_assert_eq(atomic_load(&f.z.destroys), before, "nothing was reserved, nothing to destroy");
    cr_assert_eq(fbk_load(h, &obj), 0);
    cr_assert(tu_blob_check(obj, 4000, 10));
    fbk_unload(h);
    fbk_handle_release(h);
    zclose(&f);
}
