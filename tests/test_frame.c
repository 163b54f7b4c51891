/* test_frame.c -- the blob frame the core wraps around every stored value:
 * a 24-byte header (magic "FBKB", version 1, 3 zero bytes, payload length
 * u64 LE, XXH3-64 of the payload u64 LE) followed by the payload.  Any damage
 * must read back as FBK_ECORRUPT, never as wrong bytes. */
#include "counting_backend.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define HDR 24

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Inserts a blob of len bytes, writes it, and pushes it out of memory
 * (mem_items = 2: two more inserts).  Returns the handle of the spilled item
 * and the two others in o[]. */
static fbk_handle *spilled(fx *f, size_t len, uint64_t seed, fbk_handle *o[2])
{
    fbk_handle *h = tc_insert(f->p, len, seed);
    cr_assert_eq(fbk_write_now(h), 0);
    o[0] = tc_insert(f->p, 8, 100);
    o[1] = tc_insert(f->p, 8, 101);
    cr_assert_eq(fbk_store_drain(f->s), 0);
    fbk_key k = tc_key(h);
    cr_assert_eq(counting_times_stored(f->cb, &k), 1);
    const void *obj;
    cr_assert_eq(fbk_try_load(h, &obj), FBK_EAGAIN, "the item should have been evicted");
    return h;
}

static void check_header(const unsigned char *b, size_t total, const void *payload, size_t len)
{
    cr_assert_eq(total, HDR + len, "stored %zu bytes for a %zu-byte payload", total, len);
    cr_assert_eq(memcmp(b, "FBKB", 4), 0, "magic");
    cr_assert_eq(b[4], 1, "version byte");
    cr_assert_eq(b[5], 0);
    cr_assert_eq(b[6], 0);
    cr_assert_eq(b[7], 0);
    cr_assert_eq(get_le64(b + 8), (uint64_t)len, "payload length");
    cr_assert_eq(get_le64(b + 16), (uint64_t)XXH3_64bits(payload, len), "XXH3-64 of payload");
    if (len)
        cr_assert_eq(memcmp(b + HDR, payload, len), 0, "payload bytes");
}

Test(frame, stored_bytes_are_header_then_payload)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 1000, 7);
    cr_assert_eq(fbk_write_now(h), 0);
    fbk_key k = tc_key(h);
    size_t len = 0;
    unsigned char *b = counting_spill_get(f.cb, &k, &len);
    cr_assert_not_null(b, "write_now stored nothing under the handle's key");
    fbk_blob *want = tu_blob(1000, 7);
    check_header(b, len, want->data, want->len);
    fbk_blob_free(want);
    free(b);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(frame, empty_payload_has_a_valid_header)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_handle *h = tc_insert(f.p, 0, 0);
    cr_assert_eq(fbk_write_now(h), 0);
    fbk_key k = tc_key(h);
    size_t len = 0;
    unsigned char *b = counting_spill_get(f.cb, &k, &len);
    cr_assert_not_null(b);
    check_header(b, len, "", 0);
    free(b);
    fbk_handle_release(h);
    fx_close(&f);
}

Test(frame, blob_codec_payload_is_framed_and_checksummed)
{
    fx f = {0};
    fx_open(&f, 4);
    fbk_pool *p = NULL;
    cr_assert_eq(fbk_pool_create(&p, f.s, &fbk_blob_codec, 4), 0);
    fbk_handle *h = NULL;
    cr_assert_eq(fbk_insert(p, tu_blob(333, 9), &h), 0);
    cr_assert_eq(fbk_write_now(h), 0);
    fbk_key k = tc_key(h);
    size_t len = 0;
    unsigned char *b = counting_spill_get(f.cb, &k, &len);
    cr_assert_not_null(b);
    cr_assert_geq(len, HDR + 333);
    cr_assert_eq(memcmp(b, "FBKB", 4), 0);
    cr_assert_eq(b[4], 1);
    cr_assert_eq(get_le64(b + 8), (uint64_t)(len - HDR));
    cr_assert_eq(get_le64(b + 16), (uint64_t)XXH3_64bits(b + HDR, len - HDR));
    free(b);
    fbk_handle_release(h);
    fbk_pool_release(p);
    fx_close(&f);
}

Test(frame, spilled_item_reads_back_byte_exact)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *o[2];
    fbk_handle *h = spilled(&f, 4096, 3, o);
    cr_assert_eq(tc_check(h, 4096, 3), 0);
    cr_assert_eq(counting_calls(f.cb, CB_LOAD), 1);
    fbk_handle_release(h);
    fbk_handle_release(o[0]);
    fbk_handle_release(o[1]);
    fx_close(&f);
}

Test(frame, every_flipped_header_or_payload_byte_is_ecorrupt)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *o[2];
    const size_t plen = 64;
    fbk_handle *h = spilled(&f, plen, 11, o);
    fbk_key k = tc_key(h);
    unsigned long decodes = f.ctx.decodes;
    for (size_t off = 0; off < HDR + plen; off++) {
        cr_assert_eq(counting_corrupt(f.cb, &k, off), 0);
        const void *obj = NULL;
        int rc = fbk_load(h, &obj);
        if (rc == 0)
            fbk_unload(h);
        cr_assert_eq(rc, FBK_ECORRUPT, "byte %zu flipped: load gave %s", off, fbk_err_name(rc));
        cr_assert_neq(fbk_errmsg()[0], '\0');
        cr_assert_eq(counting_corrupt(f.cb, &k, off), 0); /* flip back */
    }
    cr_assert_eq(f.ctx.decodes, decodes, "damaged bytes reached the codec");
    /* the failed loads left it spilled and intact: now it loads */
    cr_assert_eq(tc_check(h, plen, 11), 0);
    fbk_handle_release(h);
    fbk_handle_release(o[0]);
    fbk_handle_release(o[1]);
    fx_close(&f);
}

Test(frame, truncated_value_is_ecorrupt)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *o[2];
    const size_t plen = 64;
    fbk_handle *h = spilled(&f, plen, 12, o);
    fbk_key k = tc_key(h);
    size_t len = 0;
    unsigned char *orig = counting_spill_get(f.cb, &k, &len);
    cr_assert_not_null(orig);
    const size_t cuts[] = {0, 1, 4, 8, 23, 24, 25, HDR + plen - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        cr_assert_eq(counting_truncate(f.cb, &k, cuts[i]), 0);
        const void *obj = NULL;
        int rc = fbk_load(h, &obj);
        if (rc == 0)
            fbk_unload(h);
        cr_assert_eq(rc, FBK_ECORRUPT, "cut to %zu bytes: load gave %s", cuts[i], fbk_err_name(rc));
        cr_assert_eq(counting_spill_set(f.cb, &k, orig, len), 0);
    }
    cr_assert_eq(tc_check(h, plen, 12), 0);
    free(orig);
    fbk_handle_release(h);
    fbk_handle_release(o[0]);
    fbk_handle_release(o[1]);
    fx_close(&f);
}

Test(frame, trailing_garbage_after_payload_is_ecorrupt)
{
    fx f = {0};
    fx_open(&f, 2);
    fbk_handle *o[2];
    fbk_handle *h = spilled(&f, 32, 13, o);
    fbk_key k = tc_key(h);
    size_t len = 0;
    unsigned char *orig = counting_spill_get(f.cb, &k, &len);
    cr_assert_not_null(orig);
    unsigned char *longer = malloc(len + 1);
    memcpy(longer, orig, len);
    longer[len] = 0x5A;
    cr_assert_eq(counting_spill_set(f.cb, &k, longer, len + 1), 0);
    const void *obj = NULL;
    int rc = fbk_load(h, &obj);
    if (rc == 0)
        fbk_unload(h);
    cr_assert_eq(rc, FBK_ECORRUPT, "load gave %s", fbk_err_name(rc));
    cr_assert_eq(counting_spill_set(f.cb, &k, orig, len), 0);
    cr_assert_eq(tc_check(h, 32, 13), 0);
    free(orig);
    free(longer);
    fbk_handle_release(h);
    fbk_handle_release(o[0]);
    fbk_handle_release(o[1]);
    fx_close(&f);
}
