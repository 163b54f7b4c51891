/* handle.c -- the public item API (fbk_insert, fbk_load, fbk_unload,
 * fbk_load_mut, ...): checks the arguments, pins through the item's state
 * word (item.c), records the access with the pool's policy and applies
 * backpressure.  A *handle* is the user's reference to an item (`users`);
 * the item and its state machine are item.c's. */
#include "fbk_internal.h"

#include <stdlib.h>

static int bad(const char *fn, const char *what)
{
    return fbk_error_set(FBK_EINVAL, 0, "%s: %s", fn, what);
}

int fbk_insert(fbk_pool *p, void *obj, fbk_handle **out)
{
    if (!p || !obj || !out)
        return bad("fbk_insert", "NULL argument");
    fbk_key key;
    fbk_key_generate(&key);
    bool queued;
    fbk_handle *h = fbk__item_create(p, obj, fbk__pool_weigh(p, obj), NULL, &key, &queued);
    if (!h)
        return fbk_error_set(FBK_ENOMEM, 0, "fbk_insert: cannot allocate an item");
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
    return fbk__item_from_token(p, t, key, out);
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
    if (rc == FBK_OK && !fbk__item_new_many(p, hs, n))
        rc = fbk_error_set(FBK_ENOMEM, 0, "fbk_register_many: cannot allocate %zu items", n);
    if (rc == FBK_OK) {
        for (size_t i = 0; i < n; i++) {
            hs[i]->tok = toks[i];
            hs[i]->key = keys[i];
            fbk__item_link(hs[i], false, 0);
            out[i] = hs[i];
        }
    } else if (registered) {
        /* the tokens were taken: nothing stays registered */
        for (size_t i = 0; i < n; i++) {
            if (hs[i])
                fbk__item_discard(hs[i]);
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
        fbk__item_ref(h);
    }
    return h;
}

void fbk_handle_release(fbk_handle *h)
{
    if (!h)
        return;
    FBK__DEBUG_ASSERT(FBK__ITEM_MAGIC_OK(h), "fbk_handle_release",
                      "the handle's item was already freed (released twice?)");
    int users = atomic_fetch_sub_explicit(&h->users, 1, memory_order_relaxed);
    FBK__DEBUG_ASSERT(users > 0, "fbk_handle_release",
                      "the handle was released more times than it was retained");
    fbk__item_unref(h);
}

void fbk_handle_key(const fbk_handle *h, fbk_key *out)
{
    if (!h || !out)
        return;
    FBK__CHECK_HANDLE(h, "fbk_handle_key");
    fbk__item_key((fbk_handle *)h, out);
}

fbk_pool *fbk_handle_pool(const fbk_handle *h)
{
    if (!h)
        return NULL;
    FBK__CHECK_HANDLE(h, "fbk_handle_pool");
    return h->pool;
}

/* fbk_load and fbk_try_load: the common case (a value in memory that nobody
 * holds exclusively) is one atomic add on the item's state word plus, for a
 * policy hit, at most a relaxed store of a mark byte or one slot of the
 * pool's promotion buffer. */
/* A hit that the policy could not record without its mutex (pinned). */
static int load_moved(fbk_handle *h, bool wait)
{
    if (fbk__item_touch_moved(h) && wait)
        fbk__store_backpressure(h->pool->store);
    return FBK_OK;
}

/* Everything but the common hit: NULL arguments, and values that are not
 * in memory or held exclusively (fbk__item_pin_value). */
static int load_slow(fbk_handle *h, const void **obj, bool wait, const char *fn)
{
    if (!h || !obj)
        return bad(fn, "NULL argument");
    FBK__CHECK_HANDLE(h, fn);
    fbk_pool *p = h->pool;
    bool loaded = false;
    int rc = fbk__item_pin_value(h, wait, &loaded, fn);
    if (rc)
        return rc;
    /* pinned with the value in memory: obj and bytes stay put */
    *obj = h->obj;
    if (!loaded) {
        fbk__pool_count_hit(p);
        if (fbk__policy_hit(&p->pol, &h->node))
            return FBK_OK;
        return load_moved(h, wait);
    }
    /* the policy moves only for a successful access */
    if (fbk__item_touch(h, true) && wait)
        fbk__store_backpressure(p->store);
    return FBK_OK;
}

/* The common case (a value in memory that nobody holds exclusively) with
 * no call: the pin, the hit count, the policy's relaxed store. */
static inline int load(fbk_handle *h, const void **obj, bool wait, const char *fn)
{
    if (__builtin_expect(h && obj, 1)) {
        FBK__CHECK_HANDLE(h, fn);
        if (fbk__item_pin_fast(h)) {
            *obj = h->obj;
            fbk_pool *p = h->pool;
            fbk__pool_count_hit(p);
            if (fbk__policy_hit(&p->pol, &h->node))
                return FBK_OK;
            return load_moved(h, wait);
        }
    }
    return load_slow(h, obj, wait, fn);
}

int fbk_load(fbk_handle *h, const void **obj) { return load(h, obj, true, "fbk_load"); }

int fbk_try_load(fbk_handle *h, const void **obj) { return load(h, obj, false, "fbk_try_load"); }

void fbk_unload(fbk_handle *h)
{
    if (!h)
        return;
    /* no users check: a pin outlives the last handle reference */
    FBK__DEBUG_ASSERT(FBK__ITEM_MAGIC_OK(h), "fbk_unload",
                      "the item was already freed (an fbk_unload without an fbk_load?)");
    fbk__item_unpin(h);
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
    return fbk__item_mut_begin(h, try_only, obj, fn);
}

int fbk_load_mut(fbk_handle *h, void **obj) { return load_mut(h, obj, false); }

int fbk_try_load_mut(fbk_handle *h, void **obj) { return load_mut(h, obj, true); }

void fbk_unload_mut(fbk_handle *h)
{
    if (!h)
        return;
    FBK__DEBUG_ASSERT(FBK__ITEM_MAGIC_OK(h), "fbk_unload_mut",
                      "the handle's item was already freed");
    fbk__item_mut_end(h);
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

int fbk_write_now(fbk_handle *h)
{
    if (!h)
        return bad("fbk_write_now", "NULL argument");
    FBK__CHECK_HANDLE(h, "fbk_write_now");
    int rc = fbk__item_pin(h);
    if (rc)
        return rc;
    rc = fbk__item_ensure_stored(h, NULL, NULL);
    fbk__item_unpin(h);
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
    rc = fbk__item_pin(h);
    if (rc)
        return rc;
    return fbk__item_persist_pinned(h, loc);
}
