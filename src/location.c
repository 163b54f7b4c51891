/* location.c -- fbk_location (the original TrackedPath): a durable place and
 * the set of keys it holds, so that persisting a key it already holds costs
 * no backend call, and so that one key never sees two backend operations on
 * the same location at once. */
#include "fbk_internal.h"

#include <stdlib.h>
#include <string.h>

/* A key set being filled by a backend scan. */
typedef struct scan_ctx {
    fbk__keymap *keys;
    size_t count;
} scan_ctx;

static int scan_one(const fbk_key *key, void *arg)
{
    scan_ctx *c = arg;
    if (fbk__keymap_get(c->keys, key))
        return FBK_OK; /* a backend listing a key twice */
    int rc = fbk__keymap_put(c->keys, key, (void *)(intptr_t)1);
    if (rc)
        return fbk_error_set(rc, 0, "location scan: cannot grow the key set");
    c->count++;
    return FBK_OK;
}

/* Takes a reference to an open location of s named `name`, NULL if none.
 * Called with s->loc_mu held.  A location whose last reference is being
 * dropped right now is skipped (its release unlinks it). */
static fbk_location *find_open(fbk_store *s, const char *name)
{
    for (fbk_location *l = s->locs; l; l = l->next) {
        if (strcmp(l->name, name) != 0)
            continue;
        long r = atomic_load(&l->refs);
        while (r > 0)
            if (atomic_compare_exchange_weak(&l->refs, &r, r + 1))
                return l;
    }
    return NULL;
}

static void location_free(fbk_location *loc)
{
    fbk_store *s = loc->store;
    if (loc->bloc)
        s->ops->close_location(s->self, loc->bloc);
    fbk__keymap_free(&loc->keys);
    pthread_mutex_destroy(&loc->mu);
    pthread_cond_destroy(&loc->cv);
    fbk__free(loc->name);
    fbk__free(loc);
}

int fbk_location_open(fbk_store *s, const char *location, fbk_location **out)
{
    if (!s || !location || !out)
        return fbk_error_set(FBK_EINVAL, 0, "fbk_location_open: NULL argument");
    pthread_mutex_lock(&s->loc_mu);
    fbk_location *open = find_open(s, location);
    pthread_mutex_unlock(&s->loc_mu);
    if (open) {
        *out = open;
        return FBK_OK;
    }
    fbk_location *loc = fbk__calloc(1, sizeof *loc);
    char *name = fbk__strdup(location);
    if (!loc || !name) {
        fbk__free(loc);
        fbk__free(name);
        return fbk_error_set(FBK_ENOMEM, 0, "cannot allocate a location");
    }
    loc->name = name;
    loc->store = s;
    fbk__keymap_init(&loc->keys);
    pthread_mutex_init(&loc->mu, NULL);
    pthread_cond_init(&loc->cv, NULL);
    atomic_init(&loc->refs, 1);
    int rc = s->ops->open_location(s->self, location, &loc->bloc);
    if (rc) {
        loc->bloc = NULL;
        location_free(loc);
        return fbk__error_keep(rc);
    }
    scan_ctx c = {&loc->keys, 0};
    rc = s->ops->scan(s->self, loc->bloc, scan_one, &c);
    if (rc < 0) {
        location_free(loc);
        return fbk__error_keep(rc);
    }
    loc->count = c.count;
    loc->junk = (size_t)rc;
    if (s->ops->version >= 4 && s->ops->scan_foreign)
        loc->foreign = s->ops->scan_foreign(s->self, loc->bloc);
    /* another thread may have opened the same name meanwhile: share its */
    pthread_mutex_lock(&s->loc_mu);
    open = find_open(s, location);
    if (!open) {
        loc->next = s->locs;
        s->locs = loc;
        fbk__store_retain(s);
    }
    pthread_mutex_unlock(&s->loc_mu);
    if (open) {
        location_free(loc);
        loc = open;
    }
    *out = loc;
    return FBK_OK;
}

int fbk_location_drop(fbk_store *s, const char *location)
{
    if (!s || !location)
        return fbk_error_set(FBK_EINVAL, 0, "fbk_location_drop: NULL argument");
    int rc = fbk__store_check_writable(s, "fbk_location_drop");
    if (rc)
        return rc;
    if (s->ops->version < 4 || !s->ops->drop_location)
        return fbk_error_set(FBK_ENOTSUP, 0,
                             "fbk_location_drop: backend \"%s\" cannot drop a location",
                             s->ops->name ? s->ops->name : "?");
    /* no open of this name may start while the backend drops it */
    pthread_mutex_lock(&s->loc_mu);
    fbk_location *open = find_open(s, location);
    if (!open)
        rc = s->ops->drop_location(s->self, location);
    pthread_mutex_unlock(&s->loc_mu);
    if (open) {
        fbk__location_release(open);
        return fbk_error_set(FBK_EBUSY, 0,
                             "fbk_location_drop: location \"%s\" is open in this store: close "
                             "it first",
                             location);
    }
    return rc ? fbk__error_keep(rc) : FBK_OK;
}

int fbk_location_refresh(fbk_location *loc)
{
    if (!loc)
        return fbk_error_set(FBK_EINVAL, 0, "fbk_location_refresh: location is NULL");
    fbk_store *s = loc->store;
    /* what was present (and idle) before the scan: only those may be
     * dropped for the scan's not listing them, and only those missing
     * from it may be re-added -- a key persisted or removed here while the
     * scan ran keeps the state this store gave it */
    fbk__keymap before, seen;
    fbk__keymap_init(&before);
    fbk__keymap_init(&seen);
    int rc = FBK_OK;
    pthread_mutex_lock(&loc->mu);
    rc = fbk__keymap_reserve(&before, loc->count);
    for (size_t i = 0; i < loc->keys.cap && rc == FBK_OK; i++)
        if (loc->keys.used[i] && (intptr_t)loc->keys.vals[i] == 1)
            fbk__keymap_put(&before, &loc->keys.keys[i], (void *)1);
    pthread_mutex_unlock(&loc->mu);
    scan_ctx c = {&seen, 0};
    if (rc == FBK_OK) {
        rc = s->ops->scan(s->self, loc->bloc, scan_one, &c);
        rc = rc > 0 ? FBK_OK : rc;
    } else {
        rc = fbk_error_set(FBK_ENOMEM, 0, "fbk_location_refresh: out of memory");
    }
    if (rc == FBK_OK) {
        pthread_mutex_lock(&loc->mu);
        rc = fbk__keymap_reserve(&loc->keys, c.count);
        for (size_t i = 0; i < before.cap && rc == FBK_OK; i++) {
            if (!before.used[i] || fbk__keymap_get(&seen, &before.keys[i]))
                continue;
            void **slot = fbk__keymap_get(&loc->keys, &before.keys[i]);
            if (slot && (intptr_t)*slot == 1) { /* removed by someone else */
                fbk__keymap_del(&loc->keys, &before.keys[i]);
                loc->count--;
            }
        }
        for (size_t i = 0; i < seen.cap && rc == FBK_OK; i++) {
            if (!seen.used[i] || fbk__keymap_get(&loc->keys, &seen.keys[i]) ||
                fbk__keymap_get(&before, &seen.keys[i]))
                continue;
            fbk__keymap_put(&loc->keys, &seen.keys[i], (void *)(intptr_t)1); /* reserved */
            loc->count++;
        }
        if (rc)
            rc = fbk_error_set(FBK_ENOMEM, 0, "fbk_location_refresh: out of memory");
        pthread_mutex_unlock(&loc->mu);
    } else {
        fbk__error_keep(rc);
    }
    fbk__keymap_free(&before);
    fbk__keymap_free(&seen);
    return rc;
}

size_t fbk_location_count(const fbk_location *loc)
{
    if (!loc)
        return 0;
    fbk_location *l = (fbk_location *)loc;
    pthread_mutex_lock(&l->mu);
    size_t n = l->count;
    pthread_mutex_unlock(&l->mu);
    return n;
}

size_t fbk_location_junk_removed(const fbk_location *loc) { return loc ? loc->junk : 0; }

size_t fbk_location_foreign_entries(const fbk_location *loc) { return loc ? loc->foreign : 0; }

int fbk_location_contains(const fbk_location *loc, const fbk_key *key)
{
    if (!loc || !key)
        return 0;
    fbk_location *l = (fbk_location *)loc;
    pthread_mutex_lock(&l->mu);
    void **slot = fbk__keymap_get(&l->keys, key);
    int yes = slot && (intptr_t)*slot >= 1;
    pthread_mutex_unlock(&l->mu);
    return yes;
}

size_t fbk_location_keys(const fbk_location *loc, fbk_key *out, size_t cap)
{
    if (!loc)
        return 0;
    fbk_location *l = (fbk_location *)loc;
    pthread_mutex_lock(&l->mu);
    size_t n = 0;
    for (size_t i = 0; i < l->keys.cap; i++) {
        if (!l->keys.used[i] || (intptr_t)l->keys.vals[i] < 1)
            continue;
        if (out && n < cap)
            out[n] = l->keys.keys[i];
        n++;
    }
    pthread_mutex_unlock(&l->mu);
    return n;
}

int fbk_location_sync(fbk_location *loc)
{
    if (!loc)
        return fbk_error_set(FBK_EINVAL, 0, "fbk_location_sync: location is NULL");
    pthread_mutex_lock(&loc->mu);
    int err = loc->sync_err;
    pthread_mutex_unlock(&loc->mu);
    if (err)
        return fbk_error_set(err, 0,
                             "location \"%s\": a sync failed earlier (%s) and a failed sync "
                             "is final for this location (what it held then may not be on "
                             "disk): close every handle of it and open it again to see what "
                             "it holds",
                             loc->name, fbk_err_name(err));
    fbk_store *s = loc->store;
    int rc = s->ops->sync(s->self, loc->bloc);
    if (rc) {
        fbk__error_keep(rc);
        pthread_mutex_lock(&loc->mu);
        if (!loc->sync_err)
            loc->sync_err = rc;
        pthread_mutex_unlock(&loc->mu);
    }
    return rc;
}

/* Waits until no backend operation on key is running in loc (registers from
 * it excepted when `registers_ok`); returns the key's state then (0 when
 * absent).  Called and returns with loc->mu held. */
static intptr_t wait_idle(fbk_location *loc, const fbk_key *key, bool registers_ok)
{
    for (;;) {
        void **slot = fbk__keymap_get(&loc->keys, key);
        intptr_t st = slot ? (intptr_t)*slot : 0;
        if (st == 0 || st == 1 || (registers_ok && st > 1))
            return st;
        pthread_cond_wait(&loc->cv, &loc->mu);
    }
}

/* The removal of key from loc; with unbound, only when no binding of the
 * name index refers to it (the backend's remove_unbound decides, in the
 * same step as the delete; *kept tells when it kept the key). */
static int remove_key(fbk_location *loc, const fbk_key *key, bool unbound, bool *kept)
{
    pthread_mutex_lock(&loc->mu);
    if (wait_idle(loc, key, false) == 0) {
        pthread_mutex_unlock(&loc->mu);
        return FBK_OK;
    }
    *fbk__keymap_get(&loc->keys, key) = (void *)FBK__LOC_REMOVING;
    loc->count--;
    pthread_mutex_unlock(&loc->mu);
    fbk_store *s = loc->store;
    /* an item registered lazily from here keeps its bytes: copied into the
     * spill area before they leave the location */
    int rc = fbk__token_materialize(s, key);
    bool keep = false;
    if (rc == FBK_OK && unbound) {
        rc = s->ops->remove_unbound(s->self, loc->bloc, key);
        keep = rc == 0;
        rc = rc > 0 ? FBK_OK : rc;
    } else if (rc == FBK_OK) {
        rc = s->ops->remove_persisted(s->self, loc->bloc, key);
    }
    if (rc == FBK_ENOTFOUND)
        rc = FBK_OK; /* gone already: what the caller wanted */
    pthread_mutex_lock(&loc->mu);
    if (rc == FBK_OK && !keep) {
        fbk__keymap_del(&loc->keys, key);
    } else {
        if (rc)
            fbk__error_keep(rc);
        *fbk__keymap_get(&loc->keys, key) = (void *)(intptr_t)1;
        loc->count++;
    }
    pthread_cond_broadcast(&loc->cv);
    pthread_mutex_unlock(&loc->mu);
    if (kept)
        *kept = keep;
    return rc;
}

int fbk_location_remove(fbk_location *loc, const fbk_key *key)
{
    if (!loc || !key)
        return fbk_error_set(FBK_EINVAL, 0, "fbk_location_remove: NULL argument");
    int ro = fbk__store_check_writable(loc->store, "fbk_location_remove");
    if (ro)
        return ro;
    return remove_key(loc, key, false, NULL);
}

int fbk__location_remove_unbound(fbk_location *loc, const fbk_key *key, bool *kept)
{
    const fbk_backend_ops *ops = loc->store->ops;
    bool unbound = ops->version >= 5 && ops->remove_unbound;
    if (kept)
        *kept = false;
    int ro = fbk__store_check_writable(loc->store, "map: removal of an orphan");
    return ro ? ro : remove_key(loc, key, unbound, kept);
}

/* fbk__location_remove_unbound of keys[0..n) (distinct), with one backend
 * call (remove_unbound_many) for those present and idle now; a key busy in
 * another thread is removed alone afterwards (waiting for it while holding
 * the others as REMOVING could deadlock with another batch).  The first
 * failure is returned; every key is removed or kept as it should be. */
int fbk__location_remove_unbound_many(fbk_location *loc, const fbk_key *keys, size_t n)
{
    fbk_store *s = loc->store;
    const fbk_backend_ops *ops = s->ops;
    int rc = fbk__store_check_writable(s, "map: removal of orphans");
    if (rc)
        return rc;
    fbk_key *mine = NULL, *later = NULL;
    int *removed = NULL;
    if (n > 1 && ops->version >= 6 && ops->remove_unbound_many) {
        mine = fbk__malloc(n * sizeof *mine);
        later = fbk__malloc(n * sizeof *later);
        removed = fbk__malloc(n * sizeof *removed);
    }
    if (!mine || !later || !removed) { /* one by one */
        fbk__free(mine);
        fbk__free(later);
        fbk__free(removed);
        for (size_t i = 0; i < n; i++) {
            int r = fbk__location_remove_unbound(loc, &keys[i], NULL);
            if (r && !rc)
                rc = r;
        }
        return rc;
    }
    size_t nm = 0, nl = 0;
    pthread_mutex_lock(&loc->mu);
    for (size_t i = 0; i < n; i++) {
        void **slot = fbk__keymap_get(&loc->keys, &keys[i]);
        intptr_t st = slot ? (intptr_t)*slot : 0;
        if (st == 1) {
            *slot = (void *)FBK__LOC_REMOVING;
            loc->count--;
            mine[nm++] = keys[i];
        } else if (st != 0) {
            later[nl++] = keys[i];
        }
    }
    pthread_mutex_unlock(&loc->mu);
    /* items registered lazily keep their bytes (as remove_key) */
    size_t k = 0;
    for (size_t i = 0; i < nm; i++) {
        int r = fbk__token_materialize(s, &mine[i]);
        if (r == FBK_OK) {
            mine[k++] = mine[i];
            continue;
        }
        if (!rc)
            rc = fbk__error_keep(r);
        pthread_mutex_lock(&loc->mu);
        *fbk__keymap_get(&loc->keys, &mine[i]) = (void *)(intptr_t)1;
        loc->count++;
        pthread_cond_broadcast(&loc->cv);
        pthread_mutex_unlock(&loc->mu);
    }
    nm = k;
    int r = nm ? ops->remove_unbound_many(s->self, loc->bloc, mine, nm, removed) : FBK_OK;
    if (r && !rc)
        rc = fbk__error_keep(r);
    pthread_mutex_lock(&loc->mu);
    for (size_t i = 0; i < nm; i++) {
        if (removed[i]) {
            fbk__keymap_del(&loc->keys, &mine[i]);
        } else {
            *fbk__keymap_get(&loc->keys, &mine[i]) = (void *)(intptr_t)1;
            loc->count++;
        }
    }
    pthread_cond_broadcast(&loc->cv);
    pthread_mutex_unlock(&loc->mu);
    for (size_t i = 0; i < nl; i++) {
        r = fbk__location_remove_unbound(loc, &later[i], NULL);
        if (r && !rc)
            rc = r;
    }
    fbk__free(mine);
    fbk__free(later);
    fbk__free(removed);
    return rc;
}

int fbk__location_persist(fbk_location *loc, const fbk_key *key)
{
    pthread_mutex_lock(&loc->mu);
    if (wait_idle(loc, key, true) >= 1) {
        pthread_mutex_unlock(&loc->mu);
        return FBK_OK; /* held already: no backend call */
    }
    int rc = fbk__keymap_put(&loc->keys, key, (void *)FBK__LOC_PERSISTING);
    pthread_mutex_unlock(&loc->mu);
    if (rc)
        return fbk_error_set(rc, 0, "persist: cannot grow the location's key set");
    fbk_store *s = loc->store;
    rc = fbk__token_materialize(s, key); /* persist copies from the spill area */
    if (rc == FBK_OK)
        rc = s->ops->persist(s->self, loc->bloc, key);
    pthread_mutex_lock(&loc->mu);
    if (rc == FBK_OK) {
        *fbk__keymap_get(&loc->keys, key) = (void *)(intptr_t)1;
        loc->count++;
    } else {
        fbk__error_keep(rc);
        fbk__keymap_del(&loc->keys, key);
    }
    pthread_cond_broadcast(&loc->cv);
    pthread_mutex_unlock(&loc->mu);
    return rc;
}

int fbk__location_persist_many(fbk_location *loc, const fbk_key *keys, size_t n)
{
    return fbk__location_persist_bind(loc, keys, n, NULL, 0, NULL);
}

/* 1 when the backend commits objects and name changes together (version 5
 * persist_names) */
static bool can_bind(const fbk_store *s) { return s->ops->version >= 5 && s->ops->persist_names; }

int fbk__location_persist_bind(fbk_location *loc, const fbk_key *keys, size_t n,
                               const fbk_name_op *ops, size_t nops, bool *bound)
{
    fbk_store *s = loc->store;
    if (bound)
        *bound = false;
    if (!s->ops->persist_many && !(nops && can_bind(s))) {
        for (size_t i = 0; i < n; i++) {
            int rc = fbk__location_persist(loc, &keys[i]);
            if (rc)
                return rc;
        }
        return FBK_OK;
    }
    /* claim the keys the location lacks and nobody else is working on; the
     * others go one by one (they wait for that other thread, or are no-ops) */
    fbk_key *mine = fbk__malloc((n ? n : 1) * sizeof *mine);
    if (!mine)
        return fbk_error_set(FBK_ENOMEM, 0, "persist: cannot allocate %zu keys", n);
    size_t nmine = 0;
    bool all_mine = true; /* every key claimed here: none held or busy */
    int rc = FBK_OK;
    pthread_mutex_lock(&loc->mu);
    rc = fbk__keymap_reserve(&loc->keys, n);
    for (size_t i = 0; i < n && rc == FBK_OK; i++) {
        void **v = fbk__keymap_get(&loc->keys, &keys[i]);
        if (v) {
            all_mine = false;
            continue;
        }
        fbk__keymap_put(&loc->keys, &keys[i],
                        (void *)FBK__LOC_PERSISTING); /* reserved: cannot fail */
        mine[nmine++] = keys[i];
    }
    pthread_mutex_unlock(&loc->mu);
    if (rc) {
        fbk__free(mine);
        return fbk_error_set(rc, 0, "persist: cannot grow the location's key set");
    }
    /* the names go with the objects when this call persists every key they
     * bind: then the backend commits both at once (lmdb: one transaction,
     * one fdatasync fewer per map batch).  A key held already or busy in
     * another thread (which may be removing it) takes the two-step path. */
    bool bind = nops && nmine && all_mine && can_bind(s);
    for (size_t i = 0; i < nmine && rc == FBK_OK; i++)
        rc = fbk__token_materialize(s, &mine[i]); /* persist copies from the spill area */
    if (nmine && rc == FBK_OK) {
        if (bind)
            rc = s->ops->persist_names(s->self, loc->bloc, mine, nmine, ops, nops);
        else if (s->ops->persist_many)
            rc = s->ops->persist_many(s->self, loc->bloc, mine, nmine);
        else
            for (size_t i = 0; i < nmine && rc == FBK_OK; i++)
                rc = s->ops->persist(s->self, loc->bloc, &mine[i]);
    }
    if (rc)
        fbk__error_keep(rc);
    pthread_mutex_lock(&loc->mu);
    for (size_t i = 0; i < nmine; i++) {
        if (rc == FBK_OK) {
            *fbk__keymap_get(&loc->keys, &mine[i]) = (void *)(intptr_t)1;
            loc->count++;
        } else {
            /* which of them landed is unknown: treat all as absent (a later
             * persist overwrites; a reopen's scan finds what is there) */
            fbk__keymap_del(&loc->keys, &mine[i]);
        }
    }
    pthread_cond_broadcast(&loc->cv);
    pthread_mutex_unlock(&loc->mu);
    fbk__free(mine);
    if (rc)
        return rc;
    if (bind && bound)
        *bound = true;
    /* the keys another thread was busy with when we claimed ours */
    for (size_t i = 0; i < n && !bind; i++) {
        rc = fbk__location_persist(loc, &keys[i]);
        if (rc)
            return rc;
    }
    return FBK_OK;
}

/* The backend's own answer to "does loc hold key" (version 4), or -1 when
 * it has none. */
static int backend_contains(fbk_location *loc, const fbk_key *key)
{
    fbk_store *s = loc->store;
    if (s->ops->version < 4 || !s->ops->contains)
        return -1;
    return s->ops->contains(s->self, loc->bloc, key);
}

int fbk__location_recheck(fbk_location *loc, const fbk_key *key)
{
    int has = backend_contains(loc, key);
    if (has < 0)
        return has == -1 ? FBK_OK : fbk__error_keep(has);
    pthread_mutex_lock(&loc->mu);
    void **slot = fbk__keymap_get(&loc->keys, key);
    int rc = FBK_OK;
    if (!has && slot && (intptr_t)*slot == 1) { /* removed by another store */
        fbk__keymap_del(&loc->keys, key);
        loc->count--;
    } else if (has && !slot) { /* persisted by another store */
        rc = fbk__keymap_put(&loc->keys, key, (void *)(intptr_t)1);
        if (rc == FBK_OK)
            loc->count++;
        else
            rc = fbk_error_set(rc, 0, "location: cannot grow the key set");
    }
    pthread_mutex_unlock(&loc->mu);
    return rc;
}

int fbk__location_register_begin(fbk_location *loc, const fbk_key *key)
{
    if (!fbk_location_contains(loc, key)) {
        int rc = fbk__location_recheck(loc, key); /* another store may have put it there */
        if (rc)
            return rc;
    }
    pthread_mutex_lock(&loc->mu);
    void **slot;
    for (;;) {
        slot = fbk__keymap_get(&loc->keys, key);
        if (!slot || (intptr_t)*slot >= 1)
            break;
        pthread_cond_wait(&loc->cv, &loc->mu);
    }
    if (!slot) {
        pthread_mutex_unlock(&loc->mu);
        char text[FBK_KEY_STRLEN + 1];
        fbk_key_format(key, text);
        return fbk_error_set(FBK_ENOTFOUND, 0, "register: location \"%s\" does not hold %s",
                             loc->name, text);
    }
    *slot = (void *)((intptr_t)*slot + 1);
    pthread_mutex_unlock(&loc->mu);
    return FBK_OK;
}

void fbk__location_register_end(fbk_location *loc, const fbk_key *key)
{
    pthread_mutex_lock(&loc->mu);
    void **slot = fbk__keymap_get(&loc->keys, key);
    *slot = (void *)((intptr_t)*slot - 1);
    pthread_cond_broadcast(&loc->cv);
    pthread_mutex_unlock(&loc->mu);
}

void fbk__location_retain(fbk_location *loc) { atomic_fetch_add(&loc->refs, 1); }

void fbk__location_release(fbk_location *loc)
{
    if (atomic_fetch_sub_explicit(&loc->refs, 1, memory_order_acq_rel) != 1)
        return;
    fbk_store *s = loc->store;
    pthread_mutex_lock(&s->loc_mu);
    for (fbk_location **pp = &s->locs; *pp; pp = &(*pp)->next)
        if (*pp == loc) {
            *pp = loc->next;
            break;
        }
    pthread_mutex_unlock(&s->loc_mu);
    location_free(loc);
    fbk__store_release(s);
}

void fbk_location_close(fbk_location *loc)
{
    if (loc)
        fbk__location_release(loc);
}

int fbk__location_write_bind(fbk_location *loc, const fbk_frame_req *reqs, size_t n,
                             const fbk_name_op *ops, size_t nops)
{
    fbk_store *s = loc->store;
    pthread_mutex_lock(&loc->mu);
    int rc = fbk__keymap_reserve(&loc->keys, n);
    if (rc)
        rc = fbk_error_set(rc, 0, "write: cannot grow the key set of location \"%s\"", loc->name);
    size_t claimed = 0;
    for (; claimed < n && rc == FBK_OK; claimed++) {
        if (fbk__keymap_get(&loc->keys, reqs[claimed].key)) {
            char t[FBK_KEY_STRLEN + 1];
            fbk_key_format(reqs[claimed].key, t);
            rc = fbk_error_set(FBK_EINVAL, 0, "write: location \"%s\" holds %s already", loc->name,
                               t);
            break;
        }
        fbk__keymap_put(&loc->keys, reqs[claimed].key, (void *)FBK__LOC_PERSISTING);
    }
    pthread_mutex_unlock(&loc->mu);
    if (rc == FBK_OK)
        rc = s->ops->write_names(s->self, loc->bloc, reqs, n, ops, nops);
    if (rc)
        fbk__error_keep(rc);
    pthread_mutex_lock(&loc->mu);
    for (size_t i = 0; i < claimed; i++) {
        if (rc == FBK_OK) {
            *fbk__keymap_get(&loc->keys, reqs[i].key) = (void *)(intptr_t)1;
            loc->count++;
        } else {
            /* which of them landed is unknown: treat all as absent, as a
             * failed persist does */
            fbk__keymap_del(&loc->keys, reqs[i].key);
        }
    }
    pthread_cond_broadcast(&loc->cv);
    pthread_mutex_unlock(&loc->mu);
    return rc;
}
