/* file_paths.c -- the names the file: backend gives and recognises: a key's
 * file name and shard, a temporary's name (with its owner's spill id), a
 * spill area's name, fresh spill ids.  Layout: docs/file-backend.md. */
#include "file_internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------- helpers */

void fbk__file_key_name(const fbk_key *key, char out[FILE_NAME_LEN])
{
    char hex[33];
    fbk_key_format_hex(key, hex);
    out[0] = hex[0];
    out[1] = hex[1];
    out[2] = '/';
    memcpy(out + 3, hex, 33);
}

int fbk__file_shard_index(const char *name)
{
    static const char digits[] = "0123456789abcdef";
    const char *hi = strchr(digits, name[0]), *lo = strchr(digits, name[1]);
    if (name[0] == '\0' || name[1] == '\0' || !hi || !lo)
        return -1;
    return (int)((hi - digits) << 4 | (lo - digits));
}

/* "ab/.tmp-<32 hex key>-<16 hex spill id>-<16 hex sequence>": the spill id
 * names the store the temporary belongs to, so that another store's scan
 * leaves it alone while that store lives (fbk__file_owner_alive). */
void fbk__file_tmp_name(file_backend *b, const char *name, char out[FILE_TMP_LEN])
{
    uint64_t seq = atomic_fetch_add(&b->tmp_seq, 1);
    snprintf(out, FILE_TMP_LEN, "%.2s/" FILE_TMP_PREFIX "%s-%s-%016llx", name, name + 3, b->id,
             (unsigned long long)seq);
}

static int is_hex_run(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return 1;
}

/* 1 if n is "spill-<16 hex>" followed by exactly `suffix` ("" for a spill
 * area, FILE_LOCK_SUFFIX for its lock file); id (may be NULL) receives the
 * 16 hex digits. */
int fbk__file_is_spill_name(const char *n, const char *suffix, char id[FILE_ID_LEN + 1])
{
    const size_t pl = sizeof FILE_SPILL_PREFIX - 1;
    if (strncmp(n, FILE_SPILL_PREFIX, pl) != 0 || strlen(n) != pl + FILE_ID_LEN + strlen(suffix) ||
        !is_hex_run(n + pl, FILE_ID_LEN) || strcmp(n + pl + FILE_ID_LEN, suffix) != 0)
        return 0;
    if (id) {
        memcpy(id, n + pl, FILE_ID_LEN);
        id[FILE_ID_LEN] = '\0';
    }
    return 1;
}

/* A fresh random spill id (from the key generator: getrandom). */
void fbk__file_new_id(char id[FILE_ID_LEN + 1])
{
    fbk_key k;
    fbk_key_generate(&k);
    for (int i = 0; i < 8; i++)
        snprintf(id + 2 * i, 3, "%02x", (unsigned)(k.bytes[i] ^ k.bytes[i + 8]));
}

/* 1 if n is "<32 lowercase hex>" beginning with the shard's two digits. */
int fbk__file_is_key_name(const char *n, const char *shard, fbk_key *key)
{
    if (strlen(n) != 32 || n[0] != shard[0] || n[1] != shard[1])
        return 0;
    for (int i = 0; i < 32; i++)
        if (!((n[i] >= '0' && n[i] <= '9') || (n[i] >= 'a' && n[i] <= 'f')))
            return 0;
    return fbk_key_parse(n, key) == FBK_OK;
}

/* 1 if n is a name fbk__file_tmp_name() makes for a key of this shard, all lowercase:
 * ".tmp-<32 hex key>-<16 hex owner>-<16 hex>" (owner, if not NULL, receives
 * the owner's spill id), or the ".tmp-<32 hex key>-<16 hex>" of versions
 * before sharing (owner receives "": its store is gone). */
int fbk__file_is_tmp_name(const char *n, const char *shard, char owner[FILE_ID_LEN + 1])
{
    const size_t pl = sizeof FILE_TMP_PREFIX - 1;
    size_t len = strlen(n);
    int old = len == pl + 32 + 1 + 16;
    if (!(old || len == pl + 32 + 1 + FILE_ID_LEN + 1 + 16) ||
        strncmp(n, FILE_TMP_PREFIX, pl) != 0 || n[pl + 32] != '-' ||
        (!old && n[pl + 33 + FILE_ID_LEN] != '-'))
        return 0;
    char hex[33];
    memcpy(hex, n + pl, 32);
    hex[32] = '\0';
    fbk_key key;
    if (!fbk__file_is_key_name(hex, shard, &key))
        return 0;
    const char *rest = n + pl + 33;
    if (old ? !is_hex_run(rest, 16)
            : !is_hex_run(rest, FILE_ID_LEN) || !is_hex_run(rest + FILE_ID_LEN + 1, 16))
        return 0;
    if (owner) {
        memcpy(owner, rest, old ? 0 : FILE_ID_LEN);
        owner[old ? 0 : FILE_ID_LEN] = '\0';
    }
    return 1;
}
