/* keymap.h -- an open-addressing hash map from fbk_key to a pointer-sized
 * value (linear probing, backward-shift deletion).  Not thread-safe: callers
 * hold their own lock.  Keys are random UUIDs, but registered keys come from
 * outside, so the hash mixes all 16 bytes. */
#ifndef FBK_KEYMAP_H
#define FBK_KEYMAP_H

#include "alloc.h"
#include "fbk.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fbk__keymap {
    fbk_key *keys;
    void **vals;
    unsigned char *used;
    size_t cap; /* power of two, or 0 */
    size_t len;
} fbk__keymap;

void fbk__keymap_init(fbk__keymap *m);
void fbk__keymap_free(fbk__keymap *m);
/* The value slot of key, or NULL when absent. */
void **fbk__keymap_get(const fbk__keymap *m, const fbk_key *key);
/* Inserts or overwrites.  FBK_ENOMEM when it cannot grow (map unchanged). */
int fbk__keymap_put(fbk__keymap *m, const fbk_key *key, void *val);
/* Makes room for `extra` more keys so that that many puts cannot fail. */
int fbk__keymap_reserve(fbk__keymap *m, size_t extra);
/* true if key was there. */
bool fbk__keymap_del(fbk__keymap *m, const fbk_key *key);
/* Iteration: for (size_t i = 0; i < m->cap; i++) if (m->used[i]) ... */

#endif
