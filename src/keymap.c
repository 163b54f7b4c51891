/* keymap.c -- fbk_key -> pointer hash map (see keymap.h). */
#include "keymap.h"

#include <stdlib.h>
#include <string.h>

static size_t key_hash(const fbk_key *k)
{
    uint64_t a, b;
    memcpy(&a, k->bytes, 8);
    memcpy(&b, k->bytes + 8, 8);
    uint64_t h = (a ^ (b * 0x9E3779B97F4A7C15ull)) * 0xBF58476D1CE4E5B9ull;
    return (size_t)(h ^ (h >> 31));
}

void fbk__keymap_init(fbk__keymap *m) { memset(m, 0, sizeof *m); }

void fbk__keymap_free(fbk__keymap *m)
{
    fbk__free(m->keys);
    fbk__free(m->vals);
    fbk__free(m->used);
    memset(m, 0, sizeof *m);
}

static size_t find_slot(const fbk__keymap *m, const fbk_key *key, bool *found)
{
    size_t mask = m->cap - 1, i = key_hash(key) & mask;
    while (m->used[i]) {
        if (memcmp(m->keys[i].bytes, key->bytes, 16) == 0) {
            *found = true;
            return i;
        }
        i = (i + 1) & mask;
    }
    *found = false;
    return i;
}

void **fbk__keymap_get(const fbk__keymap *m, const fbk_key *key)
{
    if (m->len == 0)
        return NULL;
    bool found;
    size_t i = find_slot(m, key, &found);
    return found ? &m->vals[i] : NULL;
}

static int resize(fbk__keymap *m, size_t cap)
{
    fbk__keymap n = {0};
    n.keys = fbk__malloc(cap * sizeof *n.keys);
    n.vals = fbk__malloc(cap * sizeof *n.vals);
    n.used = fbk__calloc(cap, 1);
    if (!n.keys || !n.vals || !n.used) {
        fbk__keymap_free(&n);
        return FBK_ENOMEM;
    }
    n.cap = cap;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->used[i])
            continue;
        bool found;
        size_t j = find_slot(&n, &m->keys[i], &found);
        n.used[j] = 1;
        n.keys[j] = m->keys[i];
        n.vals[j] = m->vals[i];
        n.len++;
    }
    fbk__keymap_free(m);
    *m = n;
    return FBK_OK;
}

int fbk__keymap_reserve(fbk__keymap *m, size_t extra)
{
    size_t need = m->len + extra;
    if (need < m->len)
        return FBK_ENOMEM;
    size_t cap = m->cap ? m->cap : 16;
    while (need * 4 > cap * 3) { /* load factor <= 0.75 */
        if (cap > SIZE_MAX / 2)
            return FBK_ENOMEM;
        cap *= 2;
    }
    return cap == m->cap ? FBK_OK : resize(m, cap);
}

int fbk__keymap_put(fbk__keymap *m, const fbk_key *key, void *val)
{
    void **slot = fbk__keymap_get(m, key);
    if (slot) {
        *slot = val;
        return FBK_OK;
    }
    int rc = fbk__keymap_reserve(m, 1);
    if (rc)
        return rc;
    bool found;
    size_t i = find_slot(m, key, &found);
    m->used[i] = 1;
    m->keys[i] = *key;
    m->vals[i] = val;
    m->len++;
    return FBK_OK;
}

bool fbk__keymap_del(fbk__keymap *m, const fbk_key *key)
{
    if (m->len == 0)
        return false;
    bool found;
    size_t i = find_slot(m, key, &found);
    if (!found)
        return false;
    size_t mask = m->cap - 1;
    /* backward-shift deletion: move later members of the probe run into the
     * hole when their home slot is not between the hole and themselves */
    size_t hole = i, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!m->used[j])
            break;
        size_t home = key_hash(&m->keys[j]) & mask;
        bool movable = (hole <= j) ? (home <= hole || home > j) : (home <= hole && home > j);
        if (movable) {
            m->keys[hole] = m->keys[j];
            m->vals[hole] = m->vals[j];
            hole = j;
        }
    }
    m->used[hole] = 0;
    m->len--;
    return true;
}
