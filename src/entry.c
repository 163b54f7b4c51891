/* entry.c -- fbk_handle: one item (the original Fb/FullEntry) and its state
 * machine.
 *
 *   obj   the value in memory, or NULL        tok   its spill copy, or NULL
 *   readers  pins (fbk_load, tasks)            excl  LOAD | EVICT | MUT | none
 *
 * Always obj || tok.  Pins exclude EVICT and MUT; LOAD (obj == NULL) may run
 * beside pins, which never touch obj while it is NULL.  A pinned thread that
 * writes the value out sets `storing` so the write happens once.  Blocking
 * loads and writes run on the caller's thread; only eviction writes and
 * tasks run on workers.
 */
#include "fbk_internal.h"

#include <stdlib.h>

static int bad(const char *fn, const char *what)
{
    return fbk_error_set(FBK_EINVAL, 0, "%s: %s", fn, what);
}

static fbk_handle *entry_new(fbk_pool *p)
{
    fbk_handle *h = fbk__calloc(1, sizeof *h);
    if (!h)
        return NULL;
    atomic_init(&h->rc, 1);
    atomic_init(&h->users, 1);
    h->pool = p;
    h->magic = FBK__MAGIC_HANDLE;
    atomic_init(&h->node.seg, FBK__SEG_OUT);
    atomic_init(&h->node.mark, 0);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    return h;
}

static void entry_retire(fbk_handle *h)
{
    fbk_pool *p = h->pool;
    /* a pin holds a reference, fbk_load_mut does not */
    FBK__DEBUG_ASSERT(h->excl != FBK__EX_MUT, "fbk_handle_release",
                      "the last reference was released while fbk_load_mut held the item");
    fbk__pool_unlink(p, h);
    /* unreachable now: no lock needed */
    if (h->tok)
        fbk__token_release(h->tok); /* the spill copy goes in the background */
    if (h->obj) {
        fbk__pool_count_mem(p, -1, h->bytes);
        p->codec.destroy(h->obj, p->codec.ctx);
    }
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    h->magic = FBK__MAGIC_DEAD;
    fbk__free(h);
    fbk__pool_release_ref(p);
}

bool fbk__entry_try_ref(fbk_handle *h)
{
    long n = atomic_load(&h->rc);
    while (n > 0)
        if (atomic_compare_exchange_weak(&h->rc, &n, n + 1))
            return true;
    return false;
}

void fbk__entry_ref(fbk_handle *h) { atomic_fetch_add_explicit(&h->rc, 1, memory_order_relaxed); }

void fbk__entry_unref(fbk_handle *h)
{
    if (atomic_fetch_sub_explicit(&h->rc, 1, memory_order_acq_rel) == 1)
        entry_retire(h);
}

int fbk_insert(fbk_pool *p, void *obj, fbk_handle **out)
{
    if (!p || !obj || !out)
        return bad("fbk_insert", "NULL argument");
    fbk_handle *h = entry_new(p);
    if (!h)
        return fbk_error_set(FBK_ENOMEM, 0, "fbk_insert: cannot allocate an item");
    h->obj = obj;
    h->bytes = fbk__pool_weigh(p, obj);
    fbk_key_generate(&h->key);
    fbk__pool_count_mem(p, +1, h->bytes);
    bool queued = fbk__pool_link(p, h, true, h->bytes);
    *out = h;
    if (queued)
        fbk__store_backpressure(p->store);
    return FBK_OK;
}

int fbk_register(fbk_pool *p, fbk_location *loc, const fbk_key *key, fbk_handle **out)
{
    if (!p || !loc || !key || !out)
        return bad("fbk_register", "NULL argument");
    if (loc->store != p->store)
        return bad("fbk_register", "the location belongs to another store");
    int rc = fbk__location_register_begin(loc, key);
    if (rc)
        return rc;
    fbk__token *t = NULL;
    rc = fbk__token_register(p->store, loc, key, &t);
    fbk__location_register_end(loc, key);
    if (rc)
        return rc;
    return fbk__entry_from_token(p, t, key, out);
}

int fbk__entry_from_token(fbk_pool *p, fbk__token *t, const fbk_key *key, fbk_handle **out)
{
    fbk_handle *h = entry_new(p);
    if (!h) {
        fbk__token_release(t);
        return fbk_error_set(FBK_ENOMEM, 0, "cannot allocate an item");
    }
    h->tok = t;
    h->key = *key;
    fbk__pool_link(p, h, false, 0);
    *out = h;
    return FBK_OK;
}

int fbk_register_many(fbk_pool *p, fbk_location *loc, const fbk_key *keys, size_t n,
                      fbk_handle **out)
{
    if (!p || !loc || (n && (!keys || !out)))
        return bad("fbk_register_many", "NULL argument");
    if (loc->store != p->store)
        return bad("fbk_register_many", "the location belongs to another store");
    if (n == 0)
        return FBK_OK;
    fbk__token **toks = fbk__calloc(n, sizeof *toks);
    fbk_handle **hs = fbk__calloc(n, sizeof *hs);
    if (!toks || !hs) {
        fbk__free(toks);
        fbk__free(hs);
        return fbk_error_set(FBK_ENOMEM, 0, "fbk_register_many: cannot allocate %zu handles", n);
    }
    int rc = FBK_OK;
    size_t begun = 0;
    for (; begun < n && rc == FBK_OK; begun++)
        rc = fbk__location_register_begin(loc, &keys[begun]);
    if (rc)
        begun--; /* the failed one holds no bracket */
    if (rc == FBK_OK)
        rc = fbk__token_register_many(p->store, loc->bloc, keys, n, toks);
    bool registered = rc == FBK_OK; /* on failure it kept nothing */
    for (size_t i = 0; i < begun; i++)
        fbk__location_register_end(loc, &keys[i]);
    for (size_t i = 0; i < n && rc == FBK_OK; i++)
        if (!(hs[i] = entry_new(p)))
            rc = fbk_error_set(FBK_ENOMEM, 0, "fbk_register_many: cannot allocate an item");
    if (rc == FBK_OK) {
        for (size_t i = 0; i < n; i++) {
            hs[i]->tok = toks[i];
            hs[i]->key = keys[i];
            fbk__pool_link(p, hs[i], false, 0);
            out[i] = hs[i];
        }
    } else if (registered) {
        /* the tokens were taken: nothing stays registered */
        for (size_t i = 0; i < n; i++) {
            if (hs[i]) {
                pthread_mutex_destroy(&hs[i]->mu);
                pthread_cond_destroy(&hs[i]->cv);
                fbk__free(hs[i]);
            }
            if (toks[i])
                fbk__token_release(toks[i]);
        }
    }
    fbk__free(toks);
    fbk__free(hs);
    return rc;
}

fbk_handle *fbk_handle_retain(fbk_handle *h)
{
    if (h) {
        FBK__CHECK_HANDLE(h, "fbk_handle_retain");
        atomic_fetch_add_explicit(&h->users, 1, memory_order_relaxed);
        fbk__entry_ref(h);
    }
    return h;
}

void fbk_handle_release(fbk_handle *h)
{
    if (!h)
        return;
    FBK__DEBUG_ASSERT(h->magic == FBK__MAGIC_HANDLE, "fbk_handle_release",
                      "the handle's item was already freed (released twice?)");
    long users = atomic_fetch_sub_explicit(&h->users, 1, memory_order_relaxed);
    FBK__DEBUG_ASSERT(users > 0, "fbk_handle_release",
                      "the handle was released more times than it was retained");
    fbk__entry_unref(h);
}

void fbk_handle_key(const fbk_handle *h, fbk_key *out)
{
    if (!h || !out)
        return;
    FBK__CHECK_HANDLE(h, "fbk_handle_key");
    fbk_handle *m = (fbk_handle *)h;
    fbk__item_lock(m);
    *out = m->key;
    fbk__item_unlock(m);
}

fbk_pool *fbk_handle_pool(const fbk_handle *h)
{
    if (!h)
        return NULL;
    FBK__CHECK_HANDLE(h, "fbk_handle_pool");
    return h->pool;
}

static bool self_holds_mut(const fbk_handle *h)
{
    return h->excl == FBK__EX_MUT && pthread_equal(h->mut_owner, pthread_self());
}

/* Reads the value back from the spill area.  Called with h->mu held,
 * excl == NONE and obj == NULL; returns with h->mu held. */
static int load_locked(fbk_handle *h)
{
    FBK__ASSERT_ITEM_HELD(h);
    fbk_pool *p = h->pool;
    fbk__token *t = h->tok;
    h->excl = FBK__EX_LOAD;
    fbk__item_unlock(h);
    void *obj = NULL;
    int rc = t ? fbk__token_load(p->store, t, &p->codec, &obj)
               : fbk_error_set(FBK_EIO, 0, "item has neither a value nor a spill copy");
    size_t w = rc == FBK_OK ? fbk__pool_weigh(p, obj) : 0;
    fbk__item_lock(h);
    if (rc == FBK_OK) {
        h->obj = obj;
        h->bytes = w;
        fbk__pool_count_mem(p, +1, w);
        atomic_fetch_add_explicit(&p->n_misses, 1, memory_order_relaxed);
    }
    h->excl = FBK__EX_NONE;
    pthread_cond_broadcast(&h->cv);
    return rc;
}

/* One step towards having the value in memory, for a caller that found it
 * absent or held exclusively: waits for the holder, or reads the value back
 * (setting *loaded).  Called and returns with h->mu held. */
static int advance_locked(fbk_handle *h, bool *loaded)
{
    FBK__ASSERT_ITEM_HELD(h);
    if (h->excl != FBK__EX_NONE) {
        fbk__item_wait(h);
        return FBK_OK;
    }
    int rc = load_locked(h);
    if (rc == FBK_OK)
        *loaded = true;
    return rc;
}

int fbk_load(fbk_handle *h, const void **obj)
{
    if (!h || !obj)
        return bad("fbk_load", "NULL argument");
    FBK__CHECK_HANDLE(h, "fbk_load");
    fbk_pool *p = h->pool;
    bool loaded = false;
    fbk__item_lock(h);
    for (;;) {
        if (h->excl == FBK__EX_NONE && h->obj) {
            h->readers++;
            fbk__entry_ref(h); /* a pin keeps the item alive until fbk_unload */
            *obj = h->obj;
            size_t w = h->bytes;
            fbk__item_unlock(h);
            if (!loaded)
                atomic_fetch_add_explicit(&p->n_hits, 1, memory_order_relaxed);
            /* the LRU moves only for a successful access */
            if (fbk__pool_touch(p, h, loaded, w))
                fbk__store_backpressure(p->store);
            return FBK_OK;
        }
        if (self_holds_mut(h)) {
            fbk__item_unlock(h);
            return fbk_error_set(FBK_EBUSY, 0,
                                 "fbk_load: this thread holds fbk_load_mut on the item");
        }
        int rc = advance_locked(h, &loaded);
        if (rc) {
            fbk__item_unlock(h);
            return rc;
        }
    }
}

int fbk_try_load(fbk_handle *h, const void **obj)
{
    if (!h || !obj)
        return bad("fbk_try_load", "NULL argument");
    FBK__CHECK_HANDLE(h, "fbk_try_load");
    fbk__item_lock(h);
    if (h->excl != FBK__EX_NONE || !h->obj) {
        bool evicting = h->excl == FBK__EX_EVICT;
        fbk__item_unlock(h);
        return fbk_error_set(FBK_EAGAIN, 0, "fbk_try_load: the item is %s",
                             evicting ? "being evicted" : "not in memory");
    }
    h->readers++;
    fbk__entry_ref(h); /* a pin keeps the item alive until fbk_unload */
    *obj = h->obj;
    fbk__item_unlock(h);
    atomic_fetch_add_explicit(&h->pool->n_hits, 1, memory_order_relaxed);
    (void)fbk__pool_touch(h->pool, h, false, 0); /* never waits */
    return FBK_OK;
}

void fbk__entry_unpin(fbk_handle *h)
{
    fbk__item_lock(h);
    FBK__DEBUG_ASSERT(h->readers > 0, "fbk_unload",
                      "the item is not pinned: no fbk_load/fbk_try_load is left to end");
    if (h->readers > 0)
        h->readers--;
    fbk__item_unlock(h);
    fbk__pool_unpinned(h->pool, h);
}

void fbk_unload(fbk_handle *h)
{
    if (!h)
        return;
    /* no users check: a pin outlives the last handle reference */
    FBK__DEBUG_ASSERT(h->magic == FBK__MAGIC_HANDLE, "fbk_unload",
                      "the item was already freed (an fbk_unload without an fbk_load?)");
    fbk__entry_unpin(h);
    /* the pin's reference: the item may have lost its last handle meanwhile
     * (fbk_make_mut of a pinned item, or a release before the unload) */
    fbk__entry_unref(h);
}

static int load_mut(fbk_handle *h, void **obj, bool try_only)
{
    const char *fn = try_only ? "fbk_try_load_mut" : "fbk_load_mut";
    if (!h || !obj)
        return bad(fn, "NULL argument");
    FBK__CHECK_HANDLE(h, fn);
    if (atomic_load(&h->users) != 1)
        return fbk_error_set(FBK_EBUSY, 0, "%s: the item is shared by another handle reference",
                             fn);
    fbk_pool *p = h->pool;
    bool loaded = false;
    fbk__item_lock(h);
    for (;;) {
        if (h->readers > 0 || h->storing || h->excl == FBK__EX_MUT) {
            bool mut = h->excl == FBK__EX_MUT;
            fbk__item_unlock(h);
            return fbk_error_set(FBK_EBUSY, 0, "%s: the item is %s", fn,
                                 mut ? "already held by fbk_load_mut" : "pinned");
        }
        if (h->excl != FBK__EX_NONE || !h->obj) {
            if (try_only) {
                bool in_memory = h->obj != NULL;
                fbk__item_unlock(h);
                return fbk_error_set(FBK_EAGAIN, 0, "%s: the item is %s", fn,
                                     in_memory ? "being evicted" : "not in memory");
            }
            int rc = advance_locked(h, &loaded);
            if (rc) {
                fbk__item_unlock(h);
                return rc;
            }
            continue;
        }
        break;
    }
    h->excl = FBK__EX_MUT;
    h->mut_owner = pthread_self();
    fbk__token *old = h->tok;
    h->tok = NULL;
    fbk_key_generate(&h->key);
    *obj = h->obj;
    size_t w = h->bytes;
    fbk__item_unlock(h);
    if (old)
        fbk__token_release(old); /* the old value's spill copy goes in the background */
    if (fbk__pool_touch(p, h, loaded, w) && !try_only)
        fbk__store_backpressure(p->store);
    return FBK_OK;
}

int fbk_load_mut(fbk_handle *h, void **obj) { return load_mut(h, obj, false); }

int fbk_try_load_mut(fbk_handle *h, void **obj) { return load_mut(h, obj, true); }

void fbk_unload_mut(fbk_handle *h)
{
    if (!h)
        return;
    FBK__DEBUG_ASSERT(h->magic == FBK__MAGIC_HANDLE, "fbk_unload_mut",
                      "the handle's item was already freed");
    fbk_pool *p = h->pool;
    fbk__item_lock(h);
    bool was = h->excl == FBK__EX_MUT;
    FBK__DEBUG_ASSERT(was, "fbk_unload_mut", "no fbk_load_mut/fbk_make_mut holds the item");
    size_t w = 0;
    if (was && p->track_bytes) {
        /* the caller may have resized the value: weigh it again, while MUT
         * still keeps everyone else off it */
        void *obj = h->obj;
        fbk__item_unlock(h);
        w = fbk__pool_weigh(p, obj);
        fbk__item_lock(h);
        if (w != h->bytes) {
            atomic_fetch_add_explicit(&p->n_mem_bytes, w - h->bytes, memory_order_relaxed);
            h->bytes = w;
        }
    }
    if (was) {
        h->excl = FBK__EX_NONE;
        pthread_cond_broadcast(&h->cv);
    }
    fbk__item_unlock(h);
    if (was && p->track_bytes)
        fbk__pool_reweigh(p, h, w);
    if (was)
        fbk__pool_unpinned(p, h);
}

int fbk_make_mut(fbk_handle **hp, void **obj)
{
    if (!hp || !*hp || !obj)
        return bad("fbk_make_mut", "NULL argument");
    fbk_handle *h = *hp;
    FBK__CHECK_HANDLE(h, "fbk_make_mut");
    int rc = fbk_load_mut(h, obj);
    if (rc != FBK_EBUSY)
        return rc;
    /* shared or pinned: write to a copy in a new item */
    fbk_pool *p = h->pool;
    const void *cur;
    rc = fbk_load(h, &cur);
    if (rc)
        return rc;
    void *copy = NULL;
    rc = fbk__codec_clone(&p->codec, cur, &copy);
    fbk_unload(h);
    if (rc)
        return rc;
    fbk_handle *nh;
    rc = fbk_insert(p, copy, &nh);
    if (rc) {
        p->codec.destroy(copy, p->codec.ctx);
        return rc;
    }
    rc = fbk_load_mut(nh, obj);
    if (rc) {
        fbk_handle_release(nh);
        return rc;
    }
    fbk_handle_release(h);
    *hp = nh;
    return FBK_OK;
}

int fbk__entry_pin(fbk_handle *h)
{
    fbk__item_lock(h);
    for (;;) {
        if (self_holds_mut(h)) {
            fbk__item_unlock(h);
            return fbk_error_set(FBK_EBUSY, 0, "this thread holds fbk_load_mut on the item");
        }
        if (h->excl == FBK__EX_NONE || h->excl == FBK__EX_LOAD)
            break;
        fbk__item_wait(h);
    }
    h->readers++;
    fbk__item_unlock(h);
    return FBK_OK;
}

int fbk__entry_ensure_stored(fbk_handle *h, fbk__token **tok, fbk_key *key)
{
    fbk_pool *p = h->pool;
    int rc = FBK_OK;
    fbk__item_lock(h);
    while (h->storing)
        fbk__item_wait(h);
    if (!h->tok && !h->obj) {
        rc = fbk_error_set(FBK_EIO, 0, "item has neither a value nor a spill copy");
    } else if (!h->tok) {
        /* pinned, so obj != NULL and cannot change or go away */
        fbk_key k = h->key;
        void *obj = h->obj;
        fbk__token *t = NULL;
        h->storing = true;
        fbk__item_unlock(h);
        rc = fbk__token_store(p->store, &k, &p->codec, obj, &t);
        fbk__item_lock(h);
        h->storing = false;
        if (rc == FBK_OK)
            h->tok = t;
        pthread_cond_broadcast(&h->cv);
    }
    if (rc == FBK_OK) {
        if (tok) {
            fbk__token_retain(h->tok);
            *tok = h->tok;
        }
        if (key)
            *key = h->key;
    }
    fbk__item_unlock(h);
    return rc;
}

int fbk__entry_fill(fbk_handle *h)
{
    int rc = FBK_OK;
    bool loaded = false;
    fbk__item_lock(h);
    /* pinned: excl can only be none or LOAD here */
    while (!h->obj && rc == FBK_OK)
        rc = advance_locked(h, &loaded);
    size_t w = h->bytes;
    fbk__item_unlock(h);
    if (rc == FBK_OK)
        (void)fbk__pool_touch(h->pool, h, loaded, w); /* on a worker: never waits */
    return rc;
}

int fbk_write_now(fbk_handle *h)
{
    if (!h)
        return bad("fbk_write_now", "NULL argument");
    FBK__CHECK_HANDLE(h, "fbk_write_now");
    int rc = fbk__entry_pin(h);
    if (rc)
        return rc;
    rc = fbk__entry_ensure_stored(h, NULL, NULL);
    fbk__entry_unpin(h);
    return rc;
}

/* With a pin held: true when loc holds the item's current key.  (Not
 * fbk_handle_key: a task's worker gets here after the user may have released
 * the last handle reference.) */
static bool loc_has_current(fbk_handle *h, fbk_location *loc)
{
    fbk__item_lock(h);
    fbk_key key = h->key;
    fbk__item_unlock(h);
    return fbk_location_contains(loc, &key);
}

int fbk__entry_persist_pinned(fbk_handle *h, fbk_location *loc)
{
    if (loc_has_current(h, loc)) {
        fbk__entry_unpin(h);
        return FBK_OK;
    }
    fbk__token *t = NULL;
    fbk_key key;
    int rc = fbk__entry_ensure_stored(h, &t, &key);
    fbk__entry_unpin(h);
    if (rc)
        return rc;
    rc = fbk__location_persist(loc, &key);
    fbk__token_release(t);
    return rc;
}

int fbk_persist(fbk_handle *h, fbk_location *loc)
{
    if (!h || !loc)
        return bad("fbk_persist", "NULL argument");
    FBK__CHECK_HANDLE(h, "fbk_persist");
    if (loc->store != h->pool->store)
        return bad("fbk_persist", "the location belongs to another store");
    int rc = fbk__store_check_writable(loc->store, "fbk_persist");
    if (rc)
        return rc;
    rc = fbk__entry_pin(h);
    if (rc)
        return rc;
    return fbk__entry_persist_pinned(h, loc);
}
