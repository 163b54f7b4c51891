/* map.c -- fbk_map: names bound to objects persisted in one location.
 *
 * The name index itself lives in the backend (version-4 members name_get,
 * name_scan, name_apply), next to the objects, so that a binding and its
 * object are made durable together (docs/maps.md).  This file keeps, per
 * map, what the backend cannot: this process's view of the bindings for
 * count/bytes and the size limit's least-recently-used order, the changes
 * not yet handed to the backend (NOSYNC puts, and puts waiting for the group
 * commit), the objects no name refers to any more, and the computations in
 * flight of get_or_compute.
 *
 * Group commit: a put queues its change and waits until a batch containing
 * it has been applied (one name_apply) and synced (one fbk_location_sync).
 * The first waiter that finds no batch running becomes the committer of
 * everything queued so far; the others sleep until a batch covers their
 * change.  So N concurrent puts cost about N / (batch size) syncs.
 *
 * Rooms: this file (the index, opening, put/remove, look-ups, names,
 * get_or_compute, save), map_commit.c (the group commit and the orphans'
 * removal), map_bytes.c (fbk_map_put_bytes / fbk_map_get_bytes); what they
 * share is in map_internal.h.
 *
 * Lock order: m->mu is taken before the location's and the pool's own
 * mutexes and never while one of them is held; it is NOT held across
 * backend calls, the location sync, codec calls or compute callbacks.
 */
#include "map_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

int fbk__map_bad(const char *fn, const char *why)
{
    return fbk_error_set(FBK_EINVAL, 0, "%s: %s", fn, why);
}

int fbk__map_check_name(const char *fn, const void *name, size_t len)
{
    if (!name)
        return fbk__map_bad(fn, "name is NULL");
    if (len == 0)
        return fbk__map_bad(fn, "name is empty (names are 1 to FBK_NAME_MAX bytes)");
    if (len > FBK_NAME_MAX)
        return fbk_error_set(FBK_EINVAL, 0, "%s: name is %zu bytes, more than FBK_NAME_MAX (%d)",
                             fn, len, FBK_NAME_MAX);
    return FBK_OK;
}

static fbk_key name_hash(const void *name, size_t len)
{
    XXH128_hash_t h = XXH3_128bits(name, len);
    fbk_key k;
    memcpy(k.bytes, &h.low64, 8);
    memcpy(k.bytes + 8, &h.high64, 8);
    return k;
}

static bool ops_v4(const fbk_backend_ops *ops)
{
    return ops->version >= 4 && ops->name_get && ops->name_scan && ops->name_apply;
}

/* ------------------------------------------------------------- the index */

mentry *fbk__map_find(fbk_map *m, const void *name, size_t len)
{
    fbk_key h = name_hash(name, len);
    void **slot = fbk__keymap_get(&m->index, &h);
    for (mentry *e = slot ? *slot : NULL; e; e = e->hnext)
        if (e->len == len && memcmp(e->name, name, len) == 0)
            return e;
    return NULL;
}

/* A new unbound entry for name, linked into the index; NULL on ENOMEM. */
static mentry *entry_add(fbk_map *m, const void *name, size_t len)
{
    mentry *e = fbk__calloc(1, sizeof *e + len);
    if (!e)
        return NULL;
    e->len = len;
    memcpy(e->name, name, len);
    fbk_key h = name_hash(name, len);
    void **slot = fbk__keymap_get(&m->index, &h);
    if (slot) {
        e->hnext = *slot;
        *slot = e;
    } else if (fbk__keymap_put(&m->index, &h, e) != FBK_OK) {
        fbk__free(e);
        return NULL;
    }
    return e;
}

/* Drops e's shared item (mu held; a release never waits for the map). */
static void share_drop(fbk_map *m, mentry *e)
{
    if (!e->shared)
        return;
    m->shared[e->slot - 1] = NULL;
    fbk_handle_release(e->shared);
    e->shared = NULL;
    e->slot = 0;
}

/* Makes h's item the one gets of e share (mu held, e bound to h's key). */
static void share_set(fbk_map *m, mentry *e, fbk_handle *h)
{
    if (e->shared)
        return;
    size_t i = m->shared_next;
    m->shared_next = (i + 1) % MAP_SHARED;
    if (m->shared[i])
        share_drop(m, m->shared[i]);
    e->shared = fbk_handle_retain(h);
    e->slot = i + 1;
    m->shared[i] = e;
}

/* A new reference to e's shared item if it still is the item of key. */
fbk_handle *fbk__map_share_get(mentry *e, const fbk_key *key)
{
    if (!e || !e->shared)
        return NULL;
    fbk_key k;
    fbk_handle_key(e->shared, &k);
    return fbk_key_equal(&k, key) ? fbk_handle_retain(e->shared) : NULL;
}

void fbk__map_entry_free(fbk_map *m, mentry *e)
{
    share_drop(m, e);
    fbk_key h = name_hash(e->name, e->len);
    void **slot = fbk__keymap_get(&m->index, &h);
    mentry **pp = (mentry **)slot;
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    if (!*slot)
        fbk__keymap_del(&m->index, &h);
    fbk__free(e);
}

static void lru_unlink(mentry *e)
{
    if (!e->prev)
        return;
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = NULL;
}

static void lru_front(fbk_map *m, mentry *e)
{
    lru_unlink(e);
    e->next = m->lru.next;
    e->prev = &m->lru;
    m->lru.next->prev = e;
    m->lru.next = e;
}

/* One more name refers to key. */
static int keyref_add(fbk_map *m, const fbk_key *key, uint64_t size)
{
    void **slot = fbk__keymap_get(&m->keyrefs, key);
    if (slot) {
        ((keyref *)*slot)->names++;
        return FBK_OK;
    }
    keyref *r = fbk__malloc(sizeof *r);
    if (!r || fbk__keymap_put(&m->keyrefs, key, r) != FBK_OK) {
        fbk__free(r);
        return fbk_error_set(FBK_ENOMEM, 0, "map: cannot grow the object set");
    }
    r->names = 1;
    r->size = size;
    m->bytes += size;
    return FBK_OK;
}

static int orphan_push(fbk_map *m, const fbk_key *key, uint64_t gen)
{
    if (m->norphans == m->caporphans) {
        size_t cap = m->caporphans ? 2 * m->caporphans : 16;
        orphan *o = fbk__realloc(m->orphans, cap * sizeof *o);
        if (!o)
            return FBK_ENOMEM; /* the object stays in the location: garbage, not loss */
        m->orphans = o;
        m->caporphans = cap;
    }
    m->orphans[m->norphans++] = (orphan){*key, gen};
    return FBK_OK;
}

/* One name fewer refers to key; the last one makes it an orphan of change
 * `gen` (gen 0: not ours to remove -- another process changed the name). */
static void keyref_drop(fbk_map *m, const fbk_key *key, uint64_t gen)
{
    void **slot = fbk__keymap_get(&m->keyrefs, key);
    if (!slot)
        return;
    keyref *r = *slot;
    if (--r->names > 0)
        return;
    m->bytes -= r->size;
    fbk__free(r);
    fbk__keymap_del(&m->keyrefs, key);
    if (gen)
        (void)orphan_push(m, key, gen);
}

/* Binds e (bound or not) to key locally.  gen: the change that does it. */
static int bind_local(fbk_map *m, mentry *e, const fbk_key *key, uint64_t size, uint64_t gen)
{
    int rc = keyref_add(m, key, size);
    if (rc)
        return rc;
    if (e->bound)
        keyref_drop(m, &e->key, gen);
    else
        m->count++;
    if (e->bound && !fbk_key_equal(&e->key, key))
        share_drop(m, e);
    e->bound = true;
    e->key = *key;
    e->size = size;
    lru_front(m, e);
    return FBK_OK;
}

static void unbind_local(fbk_map *m, mentry *e, uint64_t gen)
{
    if (!e->bound)
        return;
    share_drop(m, e);
    keyref_drop(m, &e->key, gen);
    lru_unlink(e);
    e->bound = false;
    m->count--;
}

/* Room for `extra` more queued changes. */
static int ops_reserve(fbk_map *m, size_t extra)
{
    if (m->nops + extra <= m->capops)
        return FBK_OK;
    size_t cap = m->capops ? m->capops : 16;
    while (cap < m->nops + extra)
        cap *= 2;
    mop *o = fbk__realloc(m->ops, cap * sizeof *o);
    if (!o)
        return fbk_error_set(FBK_ENOMEM, 0, "map: cannot queue a change");
    m->ops = o;
    m->capops = cap;
    return FBK_OK;
}

/* Queues e's current state as a change (room reserved); returns its number.
 * A binding takes over tok, the caller's use of the object's spill copy. */
static uint64_t queue_op(fbk_map *m, mentry *e, fbk__token *tok, bool nosync)
{
    e->ptok = e->bound ? tok : NULL;
    e->pframe = NULL;
    m->ops[m->nops++] = (mop){e, e->key, e->size, tok, NULL, e->bound, nosync};
    e->pending++;
    return ++m->op_gen;
}

/* ------------------------------------------------------------- opening */

static int load_binding(const void *name, size_t len, const fbk_key *key, uint64_t size, void *arg)
{
    fbk_map *m = arg;
    if (len == 0 || len > FBK_NAME_MAX)
        return fbk_error_set(FBK_ECORRUPT, 0, "map: location \"%s\" holds a name of %zu bytes",
                             m->loc->name, len);
    mentry *e = fbk__map_find(m, name, len);
    if (!e && !(e = entry_add(m, name, len)))
        return fbk_error_set(FBK_ENOMEM, 0, "map: cannot grow the name index");
    return bind_local(m, e, key, size, 0);
}

static void map_free(fbk_map *m)
{
    for (size_t i = 0; i < MAP_SHARED; i++)
        if (m->shared[i])
            share_drop(m, m->shared[i]);
    for (size_t i = 0; i < m->index.cap; i++) {
        if (!m->index.used[i])
            continue;
        for (mentry *e = m->index.vals[i], *next; e; e = next) {
            next = e->hnext;
            fbk__free(e);
        }
    }
    fbk__keymap_free(&m->index);
    for (size_t i = 0; i < m->keyrefs.cap; i++)
        if (m->keyrefs.used[i])
            fbk__free(m->keyrefs.vals[i]);
    fbk__keymap_free(&m->keyrefs);
    fbk__free(m->ops);
    fbk__free(m->orphans);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    fbk__free(m);
}

int fbk_map_open(fbk_pool *p, fbk_location *loc, const fbk_map_options *opts, fbk_map **out)
{
    if (!p || !loc || !out)
        return fbk__map_bad("fbk_map_open", "NULL argument");
    if (p->store != loc->store)
        return fbk__map_bad("fbk_map_open", "the pool and the location belong to different stores");
    fbk_store *s = loc->store;
    if (!ops_v4(s->ops))
        return fbk_error_set(FBK_ENOTSUP, 0,
                             "fbk_map_open: backend \"%s\" has no name index (a table of version "
                             "4 with name_get, name_scan and name_apply is needed)",
                             s->ops->name ? s->ops->name : "?");
    fbk_map *m = fbk__calloc(1, sizeof *m);
    if (!m)
        return fbk_error_set(FBK_ENOMEM, 0, "cannot allocate a map");
    m->pool = p;
    m->loc = loc;
    m->s = s;
    m->size_limit = opts ? opts->size_limit : 0;
    m->flags = opts ? opts->flags : 0;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    fbk__keymap_init(&m->index);
    fbk__keymap_init(&m->keyrefs);
    m->lru.next = m->lru.prev = &m->lru;
    int rc = s->ops->name_scan(s->self, loc->bloc, load_binding, m);
    if (rc) {
        map_free(m);
        return fbk__error_keep(rc < 0 ? rc : FBK_EIO);
    }
    fbk__pool_retain(p);
    fbk__location_retain(loc);
    atomic_fetch_add(&loc->maps, 1);
    *out = m;
    return FBK_OK;
}

int fbk_map_close(fbk_map *m)
{
    if (!m)
        return FBK_OK;
    int rc = FBK_OK;
    pthread_mutex_lock(&m->mu);
    if (m->nops || m->norphans || m->nosync_err) {
        rc = fbk__map_commit_wait(m, ++m->op_gen);
        if (rc == FBK_OK && m->nosync_err)
            rc = fbk_error_set(m->nosync_err, 0,
                               "fbk_map_close: an earlier batch of NOSYNC changes failed (%s)",
                               fbk_err_name(m->nosync_err));
    }
    pthread_mutex_unlock(&m->mu);
    fbk_location *loc = m->loc;
    fbk_pool *p = m->pool;
    atomic_fetch_sub(&loc->maps, 1);
    map_free(m);
    fbk__location_release(loc);
    fbk__pool_release_ref(p);
    return rc;
}

/* ---------------------------------------------------------- put/remove */

/* Writes h's item to the spill area if needed (on the caller's thread, so
 * that concurrent puts write in parallel): its key, payload size and a use
 * of its spill copy, which the batch persists into the location. */
static int stage_item(fbk_map *m, fbk_handle *h, fbk_key *key, uint64_t *size, fbk__token **tok)
{
    int rc = fbk__item_pin(h);
    if (rc)
        return rc;
    rc = fbk__item_ensure_stored(h, tok, key);
    fbk__item_unpin(h);
    if (rc)
        return rc;
    if ((*tok)->len >= FBK__FRAME_HDR) {
        *size = (*tok)->len - FBK__FRAME_HDR;
        return FBK_OK;
    }
    const void *obj; /* registered: its length was never seen */
    rc = fbk_load(h, &obj);
    if (rc == FBK_OK) {
        *size = m->pool->codec.size(obj, m->pool->codec.ctx);
        fbk_unload(h);
    } else {
        fbk__token_release(*tok);
    }
    return rc;
}

/* Unbinds least recently used names until the map fits its limit (mu
 * held; `keep` is the name just put).  Returns the last change queued. */
uint64_t fbk__map_enforce_limit(fbk_map *m, mentry *keep, uint64_t gen)
{
    while (m->size_limit && m->bytes > m->size_limit && m->count > 1) {
        mentry *victim = m->lru.prev;
        if (victim == keep || victim == &m->lru || ops_reserve(m, 1) != FBK_OK)
            break;
        unbind_local(m, victim, m->op_gen + 1);
        gen = queue_op(m, victim, NULL, m->flags & FBK_MAP_NOSYNC);
    }
    return gen;
}

/* Ends a change queued under mu: waits for its batch unless NOSYNC. */
int fbk__map_finish_change(fbk_map *m, uint64_t gen)
{
    int rc = FBK_OK;
    if (!(m->flags & FBK_MAP_NOSYNC))
        rc = fbk__map_commit_wait(m, gen);
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* Binds name to key in the map's view (mu held): its entry (made if new),
 * room for the queued change, the local binding of the next change.  On
 * failure nothing changed; fn names the caller in messages. */
int fbk__map_bind_name(fbk_map *m, const void *name, size_t len, const fbk_key *key, uint64_t size,
                     const char *fn, mentry **out)
{
    int rc = FBK_OK;
    mentry *e = fbk__map_find(m, name, len);
    bool fresh = !e;
    if (fresh && !(e = entry_add(m, name, len)))
        rc = fbk_error_set(FBK_ENOMEM, 0, "%s: cannot grow the name index", fn);
    if (rc == FBK_OK)
        rc = ops_reserve(m, 1);
    if (rc == FBK_OK)
        rc = bind_local(m, e, key, size, m->op_gen + 1);
    if (rc && fresh && e)
        fbk__map_entry_free(m, e);
    *out = e;
    return rc;
}

int fbk_map_put(fbk_map *m, const void *name, size_t len, fbk_handle *h)
{
    if (!m || !h)
        return fbk__map_bad("fbk_map_put", !m ? "map is NULL" : "handle is NULL");
    int rc = fbk__map_check_name("fbk_map_put", name, len);
    if (rc == FBK_OK)
        rc = fbk__store_check_writable(m->s, "fbk_map_put");
    if (rc == FBK_OK && h->pool->store != m->s)
        rc = fbk__map_bad("fbk_map_put", "the handle belongs to another store");
    if (rc)
        return rc;
    fbk_key key;
    uint64_t size = 0;
    fbk__token *tok = NULL;
    pthread_mutex_lock(&m->mu);
    m->stage_in++;
    pthread_mutex_unlock(&m->mu);
    rc = stage_item(m, h, &key, &size, &tok);
    pthread_mutex_lock(&m->mu);
    m->stage_out++;
    if (m->committing)
        pthread_cond_broadcast(&m->cv); /* a committer may wait for this one */
    if (rc) {
        pthread_mutex_unlock(&m->mu);
        return rc;
    }
    mentry *e;
    rc = fbk__map_bind_name(m, name, len, &key, size, "fbk_map_put", &e);
    if (rc) {
        pthread_mutex_unlock(&m->mu);
        fbk__token_release(tok);
        return rc;
    }
    uint64_t gen = queue_op(m, e, tok, m->flags & FBK_MAP_NOSYNC);
    share_set(m, e, h); /* later gets share the caller's item */
    gen = fbk__map_enforce_limit(m, e, gen);
    return fbk__map_finish_change(m, gen);
}

int fbk_map_remove(fbk_map *m, const void *name, size_t len)
{
    if (!m)
        return fbk__map_bad("fbk_map_remove", "map is NULL");
    int rc = fbk__map_check_name("fbk_map_remove", name, len);
    if (rc == FBK_OK)
        rc = fbk__store_check_writable(m->s, "fbk_map_remove");
    if (rc)
        return rc;
    pthread_mutex_lock(&m->mu);
    mentry *e = fbk__map_find(m, name, len);
    if (!e || !e->pending) {
        /* ask the backend: another process may have bound or unbound it */
        pthread_mutex_unlock(&m->mu);
        fbk_key key;
        uint64_t size;
        rc = m->s->ops->name_get(m->s->self, m->loc->bloc, name, len, &key, &size);
        pthread_mutex_lock(&m->mu);
        e = fbk__map_find(m, name, len);
        if (rc == FBK_OK && (!e || !e->pending)) {
            bool fresh = !e;
            if (fresh && !(e = entry_add(m, name, len)))
                rc = FBK_ENOMEM;
            else if ((rc = bind_local(m, e, &key, size, 0)) != FBK_OK && fresh)
                fbk__map_entry_free(m, e);
        } else if (rc == FBK_ENOTFOUND && e && !e->pending) {
            unbind_local(m, e, 0); /* removed by another process */
            fbk__map_entry_free(m, e);
            e = NULL;
        }
        if (rc != FBK_OK && rc != FBK_ENOTFOUND) {
            pthread_mutex_unlock(&m->mu);
            return fbk__error_keep(rc);
        }
    }
    if (!e || !e->bound) {
        pthread_mutex_unlock(&m->mu);
        return fbk_error_set(FBK_ENOTFOUND, 0, "fbk_map_remove: the name is not bound");
    }
    rc = ops_reserve(m, 1);
    if (rc) {
        pthread_mutex_unlock(&m->mu);
        return rc;
    }
    unbind_local(m, e, m->op_gen + 1);
    uint64_t gen = queue_op(m, e, NULL, m->flags & FBK_MAP_NOSYNC);
    return fbk__map_finish_change(m, gen);
}

int fbk_map_sync(fbk_map *m)
{
    if (!m)
        return fbk__map_bad("fbk_map_sync", "map is NULL");
    if (fbk__store_readonly(m->s))
        return FBK_OK; /* nothing can be pending */
    pthread_mutex_lock(&m->mu);
    int rc = fbk__map_commit_wait(m, ++m->op_gen);
    if (rc == FBK_OK && m->nosync_err) {
        rc = fbk_error_set(m->nosync_err, 0,
                           "fbk_map_sync: a batch of NOSYNC changes failed earlier (%s): they "
                           "were not applied",
                           fbk_err_name(m->nosync_err));
        m->nosync_err = 0;
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* ------------------------------------------------------------ look-ups */

/* The key bound to name: from a change of this process not yet in the
 * backend, else from the backend (what any process synced).  Brings the
 * local view in line and counts a use. */
int fbk__map_lookup(fbk_map *m, const void *name, size_t len, fbk_key *key, bool *pending,
                  fbk__token **ptok, mframe **pframe)
{
    pthread_mutex_lock(&m->mu);
    mentry *e = fbk__map_find(m, name, len);
    *pending = e && e->pending;
    if (e && e->pending) {
        int rc = e->bound ? FBK_OK : FBK_ENOTFOUND;
        if (e->bound) {
            *key = e->key;
            lru_front(m, e);
            if (ptok && e->ptok) { /* the queued change's spill copy */
                fbk__token_retain(e->ptok);
                *ptok = e->ptok;
            }
            if (pframe && e->pframe) { /* or its bytes in memory */
                atomic_fetch_add(&e->pframe->refs, 1);
                *pframe = e->pframe;
            }
        }
        pthread_mutex_unlock(&m->mu);
        return rc;
    }
    pthread_mutex_unlock(&m->mu);
    uint64_t size = 0;
    int rc = m->s->ops->name_get(m->s->self, m->loc->bloc, name, len, key, &size);
    if (rc != FBK_OK && rc != FBK_ENOTFOUND)
        return fbk__error_keep(rc);
    pthread_mutex_lock(&m->mu);
    e = fbk__map_find(m, name, len);
    if (e && e->pending) { /* changed here meanwhile: that wins */
        pthread_mutex_unlock(&m->mu);
        return fbk__map_lookup(m, name, len, key, pending, ptok, pframe);
    }
    if (rc == FBK_ENOTFOUND) {
        if (e) { /* removed by another process */
            unbind_local(m, e, 0);
            fbk__map_entry_free(m, e);
        }
    } else if (!e || !e->bound || !fbk_key_equal(&e->key, key)) {
        bool fresh = !e;
        if (fresh)
            e = entry_add(m, name, len);
        if (e && bind_local(m, e, key, size, 0) != FBK_OK && fresh)
            fbk__map_entry_free(m, e);
    } else {
        lru_front(m, e);
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* fbk__map_lookup for the get named fn: an unbound name is FBK_ENOTFOUND
 * "fn: the name is not bound". */
int fbk__map_lookup_for(fbk_map *m, const char *fn, const void *name, size_t len, fbk_key *key,
                        bool *pending, fbk__token **ptok, mframe **pframe)
{
    int rc = fbk__map_lookup(m, name, len, key, pending, ptok, pframe);
    if (rc == FBK_ENOTFOUND)
        return fbk_error_set(FBK_ENOTFOUND, 0, "%s: the name is not bound", fn);
    return rc;
}

/* A get found name bound to key twice and the location without it. */
int fbk__map_vanished(const fbk_map *m, const char *fn, const void *name, size_t len,
                      const fbk_key *key)
{
    char t[FBK_KEY_STRLEN + 1];
    fbk_key_format(key, t);
    return fbk_error_set(FBK_ECORRUPT, 0,
                         "%s: the name \"%.*s\"%s is bound to %s, which location \"%s\" does "
                         "not hold (its object was deleted or damaged)",
                         fn, (int)(len > 64 ? 64 : len), (const char *)name, len > 64 ? "..." : "",
                         t, m->loc->name);
}

/* A new reference to the item this map shares for name, if it is key's. */
fbk_handle *fbk__map_shared(fbk_map *m, const void *name, size_t len, const fbk_key *key)
{
    pthread_mutex_lock(&m->mu);
    fbk_handle *h = fbk__map_share_get(fbk__map_find(m, name, len), key);
    pthread_mutex_unlock(&m->mu);
    return h;
}

int fbk_map_get(fbk_map *m, const void *name, size_t len, fbk_handle **out)
{
    if (!m || !out)
        return fbk__map_bad("fbk_map_get", "NULL argument");
    int rc = fbk__map_check_name("fbk_map_get", name, len);
    /* The object may be removed between the look-up and the register when
     * another process rebinds the name meanwhile: look again.  The same key
     * twice without its object is damage. */
    fbk_key prev;
    bool have_prev = false;
    while (rc == FBK_OK) {
        fbk_key key;
        bool pending;
        fbk__token *ptok = NULL;
        mframe *pframe = NULL;
        rc = fbk__map_lookup_for(m, "fbk_map_get", name, len, &key, &pending, &ptok, &pframe);
        if (rc)
            return rc;
        if (pframe) {
            /* put by fbk_map_put_bytes, its batch not run yet (NOSYNC):
             * run it, so that the object is in the location, then look
             * again */
            fbk__map_frame_release(pframe);
            pthread_mutex_lock(&m->mu);
            rc = fbk__map_commit_wait(m, ++m->op_gen);
            pthread_mutex_unlock(&m->mu);
            continue;
        }
        if (have_prev && fbk_key_equal(&key, &prev))
            return fbk__map_vanished(m, "fbk_map_get", name, len, &key);
        prev = key;
        have_prev = true;
        fbk_handle *h = fbk__map_shared(m, name, len, &key);
        if (h) { /* an item of this map holds it: no copy, no I/O */
            if (ptok)
                fbk__token_release(ptok);
            *out = h;
            return FBK_OK;
        }
        if (ptok) { /* queued (NOSYNC): an item over its spill copy, no I/O */
            rc = fbk__item_from_token(m->pool, ptok, &key, out);
            if (rc == FBK_OK) {
                pthread_mutex_lock(&m->mu);
                mentry *e = fbk__map_find(m, name, len);
                if (e && e->bound && fbk_key_equal(&e->key, &key))
                    share_set(m, e, *out);
                pthread_mutex_unlock(&m->mu);
            }
            return rc;
        }
        /* bound here but not yet applied (NOSYNC): its object may not be in
         * the location yet -- put it there now (its spill copy is kept by
         * the queued change; the batch then finds it persisted) */
        if (pending && !fbk_location_contains(m->loc, &key) &&
            fbk__location_persist(m->loc, &key) != FBK_OK)
            continue;
        rc = fbk_register(m->pool, m->loc, &key, out);
        if (rc == FBK_OK) {
            pthread_mutex_lock(&m->mu);
            mentry *e = fbk__map_find(m, name, len);
            if (e && e->bound && fbk_key_equal(&e->key, &key))
                share_set(m, e, *out);
            pthread_mutex_unlock(&m->mu);
        }
        if (rc != FBK_ENOTFOUND)
            return rc;
        rc = FBK_OK;
    }
    return rc;
}

int fbk_map_contains(fbk_map *m, const void *name, size_t len)
{
    if (!m)
        return fbk__map_bad("fbk_map_contains", "map is NULL");
    int rc = fbk__map_check_name("fbk_map_contains", name, len);
    if (rc)
        return rc;
    fbk_key key;
    bool pending;
    rc = fbk__map_lookup(m, name, len, &key, &pending, NULL, NULL);
    return rc == FBK_OK ? 1 : rc == FBK_ENOTFOUND ? 0 : rc;
}

uint64_t fbk_map_count(fbk_map *m)
{
    if (!m)
        return 0;
    pthread_mutex_lock(&m->mu);
    uint64_t n = m->count;
    pthread_mutex_unlock(&m->mu);
    return n;
}

uint64_t fbk_map_bytes(fbk_map *m)
{
    if (!m)
        return 0;
    pthread_mutex_lock(&m->mu);
    uint64_t n = m->bytes;
    pthread_mutex_unlock(&m->mu);
    return n;
}

/* --------------------------------------------------------------- names */

/* The names this process changed but has not handed to the backend yet. */
typedef struct names_ctx {
    fbk_map *m;
    mentry **pending; /* copies */
    size_t n;
    fbk__keymap seen; /* hash -> 1: names with a pending change */
    fbk_name_fn each;
    void *arg;
} names_ctx;

static bool is_pending(names_ctx *c, const void *name, size_t len)
{
    fbk_key h = name_hash(name, len);
    if (!fbk__keymap_get(&c->seen, &h))
        return false;
    for (size_t i = 0; i < c->n; i++)
        if (c->pending[i]->len == len && memcmp(c->pending[i]->name, name, len) == 0)
            return true;
    return false;
}

static int each_binding(const void *name, size_t len, const fbk_key *key, uint64_t size, void *arg)
{
    (void)key;
    (void)size;
    names_ctx *c = arg;
    if (is_pending(c, name, len))
        return 0; /* said below, as this process left it */
    return c->each(name, len, c->arg);
}

int fbk_map_names(fbk_map *m, fbk_name_fn each, void *arg)
{
    if (!m || !each)
        return fbk__map_bad("fbk_map_names", "NULL argument");
    names_ctx c = {.m = m, .each = each, .arg = arg};
    fbk__keymap_init(&c.seen);
    int rc = FBK_OK;
    pthread_mutex_lock(&m->mu);
    c.pending = fbk__malloc((m->nops ? m->nops : 1) * sizeof *c.pending);
    if (!c.pending)
        rc = FBK_ENOMEM;
    for (size_t i = 0; i < m->nops && rc == FBK_OK; i++) {
        mentry *e = m->ops[i].e;
        if (is_pending(&c, e->name, e->len))
            continue;
        mentry *copy = fbk__malloc(sizeof *copy + e->len);
        fbk_key h = name_hash(e->name, e->len);
        if (!copy || fbk__keymap_put(&c.seen, &h, (void *)1) != FBK_OK) {
            fbk__free(copy);
            rc = FBK_ENOMEM;
            break;
        }
        memcpy(copy, e, sizeof *copy + e->len);
        c.pending[c.n++] = copy;
    }
    pthread_mutex_unlock(&m->mu);
    if (rc)
        rc = fbk_error_set(FBK_ENOMEM, 0, "fbk_map_names: out of memory");
    if (rc == FBK_OK)
        rc = m->s->ops->name_scan(m->s->self, m->loc->bloc, each_binding, &c);
    for (size_t i = 0; i < c.n && rc == FBK_OK; i++)
        if (c.pending[i]->bound)
            rc = each(c.pending[i]->name, c.pending[i]->len, arg);
    for (size_t i = 0; i < c.n; i++)
        fbk__free(c.pending[i]);
    fbk__free(c.pending);
    fbk__keymap_free(&c.seen);
    return rc;
}

/* ------------------------------------------------------ get_or_compute */

static void inflight_leave(fbk_map *m, inflight *f)
{
    /* mu held */
    if (--f->users > 0 || !f->done)
        return;
    fbk_handle *h = f->h;
    fbk__free(f);
    pthread_mutex_unlock(&m->mu);
    fbk_handle_release(h);
    pthread_mutex_lock(&m->mu);
}

/* The look-up of get_or_compute: FBK_OK with *out (bound), an error, or
 * FBK_ENOTFOUND with mu held and *f the computation of name in flight (NULL:
 * none, and none ended since the look-up missed). */
static int find_or_inflight(fbk_map *m, const void *name, size_t len, fbk_handle **out,
                            inflight **f)
{
    for (;;) {
        pthread_mutex_lock(&m->mu);
        uint64_t seen = m->computed;
        pthread_mutex_unlock(&m->mu);
        int rc = fbk_map_get(m, name, len, out);
        if (rc != FBK_ENOTFOUND)
            return rc;
        rc = fbk__store_check_writable(m->s, "fbk_map_get_or_compute");
        if (rc)
            return rc;
        pthread_mutex_lock(&m->mu);
        inflight *x = m->computing;
        while (x && (x->len != len || memcmp(x->name, name, len) != 0))
            x = x->next;
        if (x || m->computed == seen) {
            *f = x;
            return FBK_ENOTFOUND;
        }
        /* a computation ended between the look-up and now (maybe of this
         * name, bound just after the look-up missed it): look again */
        pthread_mutex_unlock(&m->mu);
    }
}

/* Another thread computes the value (mu held, released here): its result. */
static int wait_inflight(fbk_map *m, inflight *f, fbk_handle **out)
{
    f->users++;
    while (!f->done)
        pthread_cond_wait(&m->cv, &m->mu);
    int rc = f->rc;
    fbk_handle *h = rc ? NULL : fbk_handle_retain(f->h);
    inflight_leave(m, f);
    pthread_mutex_unlock(&m->mu);
    if (rc)
        return fbk_error_set(rc, 0, "fbk_map_get_or_compute: the computation failed (%s)",
                             fbk_err_name(rc));
    *out = h;
    return FBK_OK;
}

/* This thread computes it (mu held, released here): compute, insert, put;
 * the waiters get the result. */
static int compute_here(fbk_map *m, const void *name, size_t len, fbk_compute_fn compute,
                        void *arg, fbk_handle **out)
{
    inflight *f = fbk__calloc(1, sizeof *f);
    if (!f) {
        pthread_mutex_unlock(&m->mu);
        return fbk_error_set(FBK_ENOMEM, 0, "fbk_map_get_or_compute: out of memory");
    }
    f->name = name; /* the caller's: valid until this call returns */
    f->len = len;
    f->users = 1;
    f->next = m->computing;
    m->computing = f;
    pthread_mutex_unlock(&m->mu);

    fbk_handle *h = NULL;
    void *obj = NULL;
    int rc = compute(name, len, &obj, arg);
    if (rc == FBK_OK) {
        rc = fbk_insert(m->pool, obj, &h);
        if (rc)
            m->pool->codec.destroy(obj, m->pool->codec.ctx); /* the map owns obj */
    }
    if (rc == FBK_OK) {
        rc = fbk_map_put(m, name, len, h);
        if (rc) {
            fbk_handle_release(h);
            h = NULL;
        }
    }
    int err = fbk_last_os_error();
    char msg[256];
    snprintf(msg, sizeof msg, "%s", fbk_errmsg());

    pthread_mutex_lock(&m->mu);
    for (inflight **pp = &m->computing; *pp; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    f->name = NULL;
    f->done = true;
    f->rc = rc;
    m->computed++;
    f->h = h ? fbk_handle_retain(h) : NULL;
    pthread_cond_broadcast(&m->cv);
    inflight_leave(m, f);
    pthread_mutex_unlock(&m->mu);
    if (rc)
        return fbk_error_set(rc, err, "%s", msg);
    *out = h;
    return FBK_OK;
}

int fbk_map_get_or_compute(fbk_map *m, const void *name, size_t len, fbk_compute_fn compute,
                           void *arg, fbk_handle **out)
{
    if (!m || !compute || !out)
        return fbk__map_bad("fbk_map_get_or_compute", "NULL argument");
    inflight *f = NULL;
    int rc = find_or_inflight(m, name, len, out, &f);
    if (rc != FBK_ENOTFOUND)
        return rc;
    /* mu held */
    if (f) /* someone computes it: wait for that */
        return wait_inflight(m, f, out);
    return compute_here(m, name, len, compute, arg, out);
}

/* ----------------------------------------------------------------- save */

static int stop_at_first(const void *name, size_t len, const fbk_key *key, uint64_t size,
                         void *arg)
{
    (void)name;
    (void)len;
    (void)key;
    (void)size;
    (void)arg;
    return 1;
}

int fbk__location_named(fbk_location *loc)
{
    if (atomic_load(&loc->maps) > 0)
        return 1;
    fbk_store *s = loc->store;
    if (!ops_v4(s->ops))
        return 0;
    int rc = s->ops->name_scan(s->self, loc->bloc, stop_at_first, NULL);
    return rc < 0 ? fbk__error_keep(rc) : rc > 0;
}
