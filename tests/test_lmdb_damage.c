/* test_lmdb_damage.c -- a damaged entry in an lmdb: location: a byte flipped
 * in the durable data.mdb (the length of a key in its LMDB leaf node, or the
 * version nibble of a key) makes fbk_location_open fail with FBK_ECORRUPT,
 * naming the location and the entry, and deletes nothing. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NKEYS 3
#define LOCNAME "shelf"

static fbk_store *open_store(const char *dir)
{
    char uri[4200];
    snprintf(uri, sizeof uri, "lmdb:%s", dir);
    fbk_store *s = NULL;
    cr_assert_eq(fbk_store_open(&s, uri, NULL), FBK_OK, "%s", fbk_errmsg());
    return s;
}

/* A location LOCNAME holding NKEYS small blobs (one leaf page), synced. */
static void make_location(const char *dir, fbk_key keys[NKEYS])
{
    fbk_store *s = open_store(dir);
    fbk_pool *p;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 16), FBK_OK);
    fbk_location *loc;
    cr_assert_eq(fbk_location_open(s, LOCNAME, &loc), FBK_OK, "%s", fbk_errmsg());
    for (int i = 0; i < NKEYS; i++) {
        fbk_handle *h;
        cr_assert_eq(fbk_insert(p, tu_blob(100, (uint64_t)i), &h), FBK_OK);
        cr_assert_eq(fbk_persist(h, loc), FBK_OK, "%s", fbk_errmsg());
        fbk_handle_key(h, &keys[i]);
        fbk_handle_release(h);
    }
    cr_assert_eq(fbk_location_sync(loc), FBK_OK, "%s", fbk_errmsg());
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
}

/* XORs `mask` into the byte at `delta` from every copy of key in the
 * durable data.mdb (older copies of the leaf page are harmless to change);
 * returns how many copies it found. */
static int flip_near_key(const char *dir, const fbk_key *key, long delta, unsigned char mask)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/durable/data.mdb", dir);
    int fd = open(path, O_RDWR);
    cr_assert(fd >= 0, "open %s", path);
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    unsigned char *buf = malloc((size_t)st.st_size);
    cr_assert_not_null(buf);
    cr_assert_eq(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
    int found = 0;
    for (off_t o = 2; o + 16 <= st.st_size; o++) {
        if (memcmp(buf + o, key->bytes, 16) != 0)
            continue;
        unsigned char c = buf[o + delta] ^ mask;
        cr_assert_eq(pwrite(fd, &c, 1, o + delta), 1);
        found++;
    }
    free(buf);
    close(fd);
    return found;
}

/* Entries of LOCNAME, counted with plain LMDB (nothing may be deleted). */
static size_t raw_entries(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/durable", dir);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_stat st;
    cr_assert_eq(mdb_env_create(&env), 0);
    cr_assert_eq(mdb_env_set_maxdbs(env, 4), 0);
    cr_assert_eq(mdb_env_open(env, path, MDB_RDONLY, 0644), 0);
    cr_assert_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, LOCNAME, 0, &dbi), 0);
    cr_assert_eq(mdb_stat(txn, dbi, &st), 0);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return st.ms_entries;
}

/* Opens LOCNAME twice: FBK_ECORRUPT both times, with a message naming the
 * location and containing `hex`; every entry still there. */
static void expect_damage_reported(const char *dir, const char *hex)
{
    for (int round = 0; round < 2; round++) {
        fbk_store *s = open_store(dir);
        fbk_location *loc = NULL;
        int rc = fbk_location_open(s, LOCNAME, &loc);
        const char *m = fbk_errmsg();
        cr_assert_eq(rc, FBK_ECORRUPT, "round %d: fbk_location_open gave %s (%s), %zu keys", round,
                     fbk_err_name(rc), m, loc ? fbk_location_count(loc) : (size_t)0);
        cr_assert_null(loc);
        if (round == 0)
            cr_log_info("%s", m);
        cr_assert(strstr(m, "location " LOCNAME) != NULL, "message: %s", m);
        cr_assert(strstr(m, hex) != NULL, "message lacks %s: %s", hex, m);
        cr_assert(strstr(m, "nothing was deleted") != NULL, "message: %s", m);
        fbk_store_close(s);
        cr_assert_eq(raw_entries(dir), NKEYS, "an entry was deleted");
    }
}

Test(lmdb_damage, flipped_key_length_in_a_leaf_is_reported_not_deleted)
{
    const char *d = tu_fresh_dir("keylen");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", d);
    fbk_key keys[NKEYS];
    make_location(dir, keys);
    /* LMDB's leaf node: lo, hi (data size), flags, ksize (2 bytes each, host
     * order), then the key: the byte two before the key is the low byte of
     * its length, 16 -> 17 */
    cr_assert_gt(flip_near_key(dir, &keys[1], -2, 0x01), 0);
    char hex[33];
    fbk_key_format_hex(&keys[1], hex);
    expect_damage_reported(dir, hex); /* the 17 bytes start with the key */
}

Test(lmdb_damage, key_that_is_not_a_v4_uuid_is_reported_not_deleted)
{
    const char *d = tu_fresh_dir("keyver");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", d);
    fbk_key keys[NKEYS];
    make_location(dir, keys);
    cr_assert_gt(flip_near_key(dir, &keys[2], 6, 0x80), 0); /* version 4 -> 12 */
    fbk_key bad = keys[2];
    bad.bytes[6] ^= 0x80;
    char hex[33];
    fbk_key_format_hex(&bad, hex);
    expect_damage_reported(dir, hex);
}

Test(lmdb_damage, undamaged_location_opens_with_every_key)
{
    const char *d = tu_fresh_dir("intact");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", d);
    fbk_key keys[NKEYS];
    make_location(dir, keys);
    fbk_store *s = open_store(dir);
    fbk_location *loc;
    cr_assert_eq(fbk_location_open(s, LOCNAME, &loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_count(loc), NKEYS);
    cr_assert_eq(fbk_location_junk_removed(loc), 0);
    fbk_location_close(loc);
    fbk_store_close(s);
}
