/* map_internal.h -- what the three rooms of fbk_map share: map.c (the
 * index, opening, put/remove, look-ups, get_or_compute), map_commit.c (the
 * group commit and the removal of orphans) and map_bytes.c (the byte-level
 * put and get of fbk_map_put_bytes / fbk_map_get_bytes).  docs/maps.md. */
#ifndef FBK_MAP_INTERNAL_H
#define FBK_MAP_INTERNAL_H

#include "fbk_internal.h"

#include <stdbool.h>
#include <stdint.h>

/* A value fbk_map_put_bytes copied, framed, until its batch writes it into
 * the location (write_names): shared by the queued change and the gets that
 * read it meanwhile. */
typedef struct mframe {
    atomic_long refs;
    size_t len; /* payload bytes */
    unsigned char hdr[FBK__FRAME_HDR];
    unsigned char data[];
} mframe;

static inline void fbk__map_frame_release(mframe *f)
{
    if (f && atomic_fetch_sub(&f->refs, 1) == 1)
        fbk__free(f);
}

/* Bytes of fbk_map_put_bytes values a map holds in memory at most until
 * their batch; further puts take the spill area (fbk_map_put's path). */
#define MAP_FRAMES_MAX ((uint64_t)64 << 20)

/* One name as this process knows it.  `bound` false with pending > 0 is a
 * tombstone: unbound here, not yet in the backend (a get must not ask the
 * backend, which still has the old binding). */
typedef struct mentry {
    struct mentry *hnext;       /* same name hash */
    struct mentry *prev, *next; /* LRU ring, most recent first (bound only) */
    fbk_key key;
    uint64_t size;
    unsigned pending; /* queued changes of this name not yet applied */
    fbk_handle *shared; /* a reference of the map's to the item of key (or NULL) */
    fbk__token *ptok;   /* the spill copy of key while its binding is queued (held by the op) */
    mframe *pframe;     /* or its bytes in memory (fbk_map_put_bytes), likewise */
    size_t slot;        /* its place in m->shared + 1 (0: none) */
    bool bound;
    size_t len;
    unsigned char name[];
} mentry;

/* How many names of this map refer to one object, and its size. */
typedef struct keyref {
    long names;
    uint64_t size;
} keyref;

typedef struct mop {
    mentry *e; /* kept alive by e->pending */
    fbk_key key;
    uint64_t size;
    fbk__token *tok; /* bind: a use of the object's spill copy until it is persisted */
    mframe *frame;   /* or its framed bytes in memory, written by the batch */
    bool bind;
    bool nosync;
} mop;

/* An object no name refers to any more, removable once the change that
 * orphaned it (op number gen) is durable. */
typedef struct orphan {
    fbk_key key;
    uint64_t gen;
} orphan;

/* A thread waiting for the batch that applies its change number gen. */
typedef struct waiter {
    struct waiter *next;
    uint64_t gen;
    int rc;
    bool done;
} waiter;

/* One get_or_compute computation in flight. */
typedef struct inflight {
    struct inflight *next;
    const void *name;
    size_t len;
    int users; /* the computing thread + waiters */
    bool done;
    int rc;
    fbk_handle *h; /* a reference of the inflight's own */
} inflight;

struct fbk_map {
    fbk_pool *pool;
    fbk_location *loc;
    fbk_store *s;
    uint64_t size_limit;
    unsigned flags;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    fbk__keymap index;   /* XXH3-128 of the name -> mentry chain */
    fbk__keymap keyrefs; /* object key -> keyref */
    mentry lru;          /* sentinel (its name is empty) */
    uint64_t count, bytes;

    mop *ops;
    size_t nops, capops;
    uint64_t op_gen;   /* changes queued so far (and sync barriers) */
    uint64_t done_gen; /* changes whose batch has finished */
    bool committing;
    waiter *waiters;
    /* puts between their entry and their queued change (writing the
     * object to the spill area): a committer waits for those that started
     * before it, so that threads arriving together share one batch */
    uint64_t stage_in, stage_out;
    int nosync_err; /* a failed batch held NOSYNC changes: the next sync says so */
    uint64_t frame_bytes; /* payload bytes of the queued changes' frames */
    char batch_msg[384]; /* the last failed batch's message, for its waiters */
    int batch_errno;

    orphan *orphans;
    size_t norphans, caporphans;
    inflight *computing;
    /* computations ended (under mu): a get_or_compute whose look-up missed
     * and that then finds no computation in flight checks it did not miss
     * one that ended in between */
    uint64_t computed;

    /* Items the map keeps a reference to, so that gets of one name share
     * one item (one decoded copy) instead of registering it again: the
     * last MAP_SHARED names put or got, replaced in turn. */
    mentry *shared[256];
    size_t shared_next;
};
#define MAP_SHARED (sizeof ((fbk_map *)0)->shared / sizeof(mentry *))

/* ---- map.c ---- */
/* FBK_EINVAL "fn: why". */
int fbk__map_bad(const char *fn, const char *why);
/* FBK_EINVAL unless name[0..len) can be a name (1..FBK_NAME_MAX bytes). */
int fbk__map_check_name(const char *fn, const void *name, size_t len);
/* The entry of name, or NULL (mu held). */
mentry *fbk__map_find(fbk_map *m, const void *name, size_t len);
/* Unlinks e from the index and frees it (mu held). */
void fbk__map_entry_free(fbk_map *m, mentry *e);
/* A new reference to e's shared item if it still is the item of key. */
fbk_handle *fbk__map_share_get(mentry *e, const fbk_key *key);
/* Binds name to key in the map's view (mu held): its entry (made if new),
 * room for the queued change, the local binding of the next change.  On
 * failure nothing changed; fn names the caller in messages. */
int fbk__map_bind_name(fbk_map *m, const void *name, size_t len, const fbk_key *key,
                       uint64_t size, const char *fn, mentry **out);
/* Unbinds least recently used names until the map fits its limit (mu
 * held; `keep` is the name just put).  Returns the last change queued. */
uint64_t fbk__map_enforce_limit(fbk_map *m, mentry *keep, uint64_t gen);
/* Ends a change queued under mu (and releases mu): waits for its batch
 * unless NOSYNC. */
int fbk__map_finish_change(fbk_map *m, uint64_t gen);
/* The key bound to name: from a change of this process not yet in the
 * backend, else from the backend (what any process synced).  Brings the
 * local view in line and counts a use. */
int fbk__map_lookup(fbk_map *m, const void *name, size_t len, fbk_key *key, bool *pending,
                    fbk__token **ptok, mframe **pframe);
/* fbk__map_lookup for the get named fn: an unbound name is FBK_ENOTFOUND
 * "fn: the name is not bound". */
int fbk__map_lookup_for(fbk_map *m, const char *fn, const void *name, size_t len, fbk_key *key,
                        bool *pending, fbk__token **ptok, mframe **pframe);
/* FBK_ECORRUPT: a get found name bound to key twice, the location without it. */
int fbk__map_vanished(const fbk_map *m, const char *fn, const void *name, size_t len,
                      const fbk_key *key);
/* A new reference to the item this map shares for name if it is key's (or
 * NULL); takes mu. */
fbk_handle *fbk__map_shared(fbk_map *m, const void *name, size_t len, const fbk_key *key);

/* ---- map_commit.c ---- */
/* Waits (mu held) until change `gen` is applied and synced -- running the
 * batch itself when no other thread does; its result. */
int fbk__map_commit_wait(fbk_map *m, uint64_t gen);

#endif
