/* test_keys.c -- fbk_key formatting, parsing and generation. */
#include "counting_backend.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <string.h>

static const fbk_key sample = {{0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x42, 0xd3, 0xa4, 0x56, 0x42,
                                0x66, 0x14, 0x17, 0x40, 0x00}};

Test(keys, format_is_lowercase_hyphenated_36_chars)
{
    char s[FBK_KEY_STRLEN + 1];
    memset(s, 'x', sizeof s);
    fbk_key_format(&sample, s);
    cr_assert_str_eq(s, "123e4567-e89b-42d3-a456-426614174000");
    cr_assert_eq(strlen(s), FBK_KEY_STRLEN);
}

Test(keys, format_hex_is_32_lowercase_hex)
{
    char s[33];
    fbk_key_format_hex(&sample, s);
    cr_assert_str_eq(s, "123e4567e89b42d3a456426614174000");
}

Test(keys, parse_of_format_round_trips)
{
    for (int i = 0; i < 100; i++) {
        fbk_key k, back;
        char s[FBK_KEY_STRLEN + 1];
        fbk_key_generate(&k);
        fbk_key_format(&k, s);
        memset(&back, 0, sizeof back);
        cr_assert_eq(fbk_key_parse(s, &back), 0, "parse(\"%s\")", s);
        cr_assert(fbk_key_equal(&k, &back), "round trip of %s", s);
    }
}

Test(keys, parse_accepts_plain_32_hex)
{
    fbk_key k;
    cr_assert_eq(fbk_key_parse("123e4567e89b42d3a456426614174000", &k), 0);
    cr_assert(fbk_key_equal(&k, &sample));
}

Test(keys, parse_accepts_uppercase_in_both_forms)
{
    fbk_key k;
    cr_assert_eq(fbk_key_parse("123E4567-E89B-42D3-A456-426614174000", &k), 0);
    cr_assert(fbk_key_equal(&k, &sample));
    memset(&k, 0, sizeof k);
    cr_assert_eq(fbk_key_parse("123E4567E89B42D3A456426614174000", &k), 0);
    cr_assert(fbk_key_equal(&k, &sample));
}

Test(keys, parse_rejects_garbage_with_einval_and_leaves_out_unchanged)
{
    static const char *bad[] = {
        "",
        "123",
        "123e4567-e89b-42d3-a456-42661417400",   /* 35 */
        "123e4567-e89b-42d3-a456-4266141740000", /* 37 */
        "123e4567e89b42d3a45642661417400",       /* 31 */
        "123e4567e89b42d3a4564266141740000",     /* 33 */
        "123e4567-e89b-42d3-a456-42661417400g",
        "123e4567e89b42d3a45642661417400z",
        "123e4567+e89b-42d3-a456-426614174000",
        "123e-4567e89b-42d3-a456-426614174000",
        "123e4567 e89b42d3a456426614174000 ",
        "{23e4567-e89b-42d3-a456-426614174000",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fbk_key k;
        memset(&k, 0xAB, sizeof k);
        cr_assert_eq(fbk_key_parse(bad[i], &k), FBK_EINVAL, "\"%s\" accepted", bad[i]);
        for (int j = 0; j < 16; j++)
            cr_assert_eq(k.bytes[j], 0xAB, "out changed by a failed parse of \"%s\"", bad[i]);
        cr_assert_neq(fbk_errmsg()[0], '\0', "no message after failed parse of \"%s\"", bad[i]);
    }
}

Test(keys, parse_rejects_null)
{
    fbk_key k;
    cr_assert_eq(fbk_key_parse(NULL, &k), FBK_EINVAL);
    cr_assert_eq(fbk_key_parse("123e4567e89b42d3a456426614174000", NULL), FBK_EINVAL);
}

Test(keys, equal_compares_all_16_bytes)
{
    fbk_key a = sample, b = sample;
    cr_assert_eq(fbk_key_equal(&a, &b), 1);
    for (int i = 0; i < 16; i++) {
        b = sample;
        b.bytes[i] ^= 1;
        cr_assert_eq(fbk_key_equal(&a, &b), 0, "byte %d ignored", i);
    }
}

Test(keys, generate_gives_distinct_v4_uuids)
{
    fbk_key k[64];
    for (int i = 0; i < 64; i++) {
        fbk_key_generate(&k[i]);
        cr_assert_eq(k[i].bytes[6] >> 4, 4, "version nibble");
        cr_assert_eq(k[i].bytes[8] >> 6, 2, "RFC 4122 variant");
        for (int j = 0; j < i; j++)
            cr_assert_eq(fbk_key_equal(&k[i], &k[j]), 0, "duplicate key");
    }
}

Test(keys, inserted_items_get_distinct_v4_keys)
{
    fx f = {0};
    fx_open(&f, 8);
    fbk_handle *h[8];
    for (int i = 0; i < 8; i++) {
        h[i] = tc_insert(f.p, 16, (uint64_t)i);
        fbk_key k = tc_key(h[i]);
        cr_assert_eq(k.bytes[6] >> 4, 4);
        cr_assert_eq(k.bytes[8] >> 6, 2);
        for (int j = 0; j < i; j++) {
            fbk_key kj = tc_key(h[j]);
            cr_assert_eq(fbk_key_equal(&k, &kj), 0);
        }
    }
    for (int i = 0; i < 8; i++)
        fbk_handle_release(h[i]);
    fx_close(&f);
}
