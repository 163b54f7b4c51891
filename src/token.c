/* token.c -- the spill area's per-key use counts (the original
 * BackingStore's tokens).  They are what lets the backend assume it never
 * sees a race on one key: a key is stored or registered once, removed once
 * after its last use, and registered again only after that remove finished.
 */
#include "fbk_internal.h"

#include <stdlib.h>
#include <sys/uio.h>

static fbk__token *token_new(fbk_store *s, const fbk_key *key)
{
    fbk__token *t = fbk__calloc(1, sizeof *t);
    if (t) {
        t->key = *key;
        t->uses = 1;
        t->state = FBK__TOK_BUSY;
        t->store = s;
    }
    return t;
}

/* Publishes the outcome of a BUSY token: present, or gone. */
static void token_settle(fbk_store *s, fbk__token *t, int rc)
{
    pthread_mutex_lock(&s->tok_mu);
    if (rc == FBK_OK) {
        t->state = FBK__TOK_PRESENT;
    } else {
        fbk__keymap_del(&s->tokens, &t->key);
    }
    pthread_cond_broadcast(&s->tok_cv);
    pthread_mutex_unlock(&s->tok_mu);
    if (rc)
        fbk__free(t);
}

/* Claims key for a new stored value: a BUSY token with one use. */
static int token_begin(fbk_store *s, const fbk_key *key, fbk__token **out)
{
    fbk__token *t = token_new(s, key);
    if (!t)
        return fbk_error_set(FBK_ENOMEM, 0, "cannot allocate a spill token");
    pthread_mutex_lock(&s->tok_mu);
    /* Keys of stored values are fresh random UUIDs; a clash would be a bug
     * in the caller, so refuse rather than overwrite another item's bytes. */
    int rc = fbk__keymap_get(&s->tokens, key) ? FBK_EINVAL : fbk__keymap_put(&s->tokens, key, t);
    pthread_mutex_unlock(&s->tok_mu);
    if (rc) {
        fbk__free(t);
        return fbk_error_set(rc, 0,
                             rc == FBK_EINVAL ? "store: key already in the spill area"
                                              : "store: cannot grow the token table");
    }
    *out = t;
    return FBK_OK;
}

/* The framed length of obj, or an error for a size that cannot be framed. */
static int framed_len(const fbk_codec *codec, const void *obj, fbk__fill_ctx *fc, size_t *len)
{
    size_t payload = codec->size(obj, codec->ctx);
    if (payload > SIZE_MAX - FBK__FRAME_HDR)
        return fbk_error_set(FBK_ECODEC, 0, "codec size %zu too large", payload);
    *fc = (fbk__fill_ctx){.codec = codec, .obj = obj, .payload = payload};
    *len = FBK__FRAME_HDR + payload;
    return FBK_OK;
}

/* Ends a token_begin with the store's outcome. */
static int token_end(fbk_store *s, fbk__token *t, int rc)
{
    if (rc == FBK_OK)
        atomic_fetch_add_explicit(&s->n_stores, 1, memory_order_relaxed);
    token_settle(s, t, rc);
    return rc;
}

int fbk__token_store(fbk_store *s, const fbk_key *key, const fbk_codec *codec, const void *obj,
                     fbk__token **out)
{
    fbk__token *t;
    int rc = token_begin(s, key, &t);
    if (rc)
        return rc;
    fbk__fill_ctx fc;
    size_t len = 0;
    rc = framed_len(codec, obj, &fc, &len);
    const void *view = NULL;
    if (rc == FBK_OK && FBK__STORE_IOV(s) && codec->view)
        view = codec->view(obj, codec->ctx);
    if (rc == FBK_OK && view) {
        /* zero copy: header + the object's own bytes, written as they are */
        unsigned char hdr[FBK__FRAME_HDR];
        fbk__frame_header(hdr, view, fc.payload);
        struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)view, fc.payload}};
        rc = FBK__STORE_IOV(s)(s->self, key, iov, fc.payload ? 2 : 1);
    } else if (rc == FBK_OK) {
        rc = s->ops->store(s->self, key, len, fbk__frame_fill, &fc);
    }
    if (rc)
        fbk__error_keep(rc);
    t->len = len;
    if (token_end(s, t, rc) == FBK_OK)
        *out = t;
    return rc;
}

/* A store_many call carries at most this many bytes (one item always fits). */
#define FBK__BATCH_BYTES ((size_t)16 << 20)

/* Writes items[0..n) (n <= FBK__EVICT_BATCH) whose tokens are begun, in
 * store_many calls of at most FBK__BATCH_BYTES each. */
static void store_chunk(fbk_store *s, fbk__store_item *items, size_t n)
{
    fbk_store_req req[FBK__EVICT_BATCH];
    fbk__fill_ctx fc[FBK__EVICT_BATCH];
    size_t idx[FBK__EVICT_BATCH];
    size_t i = 0;
    while (i < n) {
        size_t m = 0, bytes = 0;
        for (; i < n; i++) {
            if (items[i].rc != FBK_OK)
                continue; /* its token could not be begun */
            fbk__fill_ctx c;
            size_t len = 0;
            items[i].rc = framed_len(items[i].codec, items[i].obj, &c, &len);
            if (items[i].rc != FBK_OK)
                continue;
            if (m > 0 && bytes + len > FBK__BATCH_BYTES)
                break; /* the next call starts with item i */
            fc[m] = c;
            req[m] = (fbk_store_req){&items[i].key, len, fbk__frame_fill, &fc[m], FBK_EIO};
            idx[m++] = i;
            bytes += len;
        }
        if (m == 0)
            break;
        (void)FBK__STORE_MANY(s)(s->self, req, m); /* the outcome is per request */
        atomic_fetch_add_explicit(&s->n_store_batches, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->n_batched_stores, m, memory_order_relaxed);
        for (size_t j = 0; j < m; j++) {
            items[idx[j]].rc = req[j].result;
            items[idx[j]].tok->len = req[j].len;
        }
    }
}

void fbk__token_store_many(fbk_store *s, fbk__store_item *items, size_t n)
{
    if (!FBK__STORE_MANY(s) || n == 1) {
        for (size_t i = 0; i < n; i++)
            items[i].rc =
                fbk__token_store(s, &items[i].key, items[i].codec, items[i].obj, &items[i].tok);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        items[i].tok = NULL;
        items[i].rc = token_begin(s, &items[i].key, &items[i].tok);
    }
    store_chunk(s, items, n);
    for (size_t i = 0; i < n; i++)
        if (items[i].tok && token_end(s, items[i].tok, items[i].rc) != FBK_OK)
            items[i].tok = NULL;
}

int fbk__token_register(fbk_store *s, fbk_location *loc, const fbk_key *key, fbk__token **out)
{
    pthread_mutex_lock(&s->tok_mu);
    fbk__token *t;
    for (;;) {
        void **slot = fbk__keymap_get(&s->tokens, key);
        if (!slot)
            break;
        t = *slot;
        if (t->state == FBK__TOK_PRESENT) {
            t->uses++;
            pthread_mutex_unlock(&s->tok_mu);
            *out = t;
            return FBK_OK;
        }
        /* being stored, registered or removed by another thread: a
         * bounded backend call that never waits for us */
        pthread_cond_wait(&s->tok_cv, &s->tok_mu);
    }
    t = token_new(s, key);
    int rc = t ? fbk__keymap_put(&s->tokens, key, t) : FBK_ENOMEM;
    bool lazy = rc == FBK_OK && FBK__LOAD_PERSISTED(s);
    if (lazy) { /* nothing to copy: loads read from loc */
        fbk__location_retain(loc);
        t->lazy = loc;
        t->state = FBK__TOK_PRESENT;
    }
    pthread_mutex_unlock(&s->tok_mu);
    if (rc) {
        fbk__free(t);
        return fbk_error_set(FBK_ENOMEM, 0, "register: cannot allocate a spill token");
    }
    if (lazy) {
        *out = t;
        return FBK_OK;
    }
    rc = s->ops->register_key(s->self, loc->bloc, key);
    if (rc)
        fbk__error_keep(rc);
    token_settle(s, t, rc);
    if (rc == FBK_OK)
        *out = t;
    return rc;
}

int fbk__token_materialize(fbk_store *s, const fbk_key *key)
{
    pthread_mutex_lock(&s->tok_mu);
    fbk__token *t;
    for (;;) { /* looked up again after each wait: a released token goes away */
        void **slot = fbk__keymap_get(&s->tokens, key);
        t = slot ? *slot : NULL;
        if (!t || !t->lazy) {
            pthread_mutex_unlock(&s->tok_mu);
            return FBK_OK;
        }
        if (t->state == FBK__TOK_PRESENT && t->lazy_readers == 0)
            break;
        pthread_cond_wait(&s->tok_cv, &s->tok_mu);
    }
    fbk_location *loc = t->lazy;
    t->state = FBK__TOK_BUSY; /* loads and other materializers wait */
    pthread_mutex_unlock(&s->tok_mu);
    int rc = s->ops->register_key(s->self, loc->bloc, key);
    if (rc)
        fbk__error_keep(rc);
    pthread_mutex_lock(&s->tok_mu);
    if (rc == FBK_OK)
        t->lazy = NULL;
    t->state = FBK__TOK_PRESENT;
    pthread_cond_broadcast(&s->tok_cv);
    pthread_mutex_unlock(&s->tok_mu);
    if (rc == FBK_OK)
        fbk__location_release(loc);
    return rc;
}

/* How fbk__token_register_many got each key's token: it was present
 * (REG_HAD, one use taken), made here (REG_NEW), or the same key earlier in
 * the call (its index). */
#define REG_HAD SIZE_MAX
#define REG_NEW (SIZE_MAX - 1)

/* Drops what a failed fbk__token_register_many took: the uses of tokens that
 * were present or settled present (new tokens that failed are gone, with
 * their duplicates' uses). */
static void register_undo(fbk__token **toks, const size_t *how, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (how[i] == REG_HAD || (how[i] < REG_NEW && how[how[i]] == REG_HAD))
            fbk__token_release(toks[i]);
}

/* Under tok_mu: waits (holding no token of ours, so that two callers with
 * overlapping keys cannot wait for each other) until every key is absent or
 * present, then takes a use of each present token and makes a new (busy) one
 * for each absent key -- fresh[0..*m) -- recording how[] each was had.  On
 * ENOMEM everything is undone and the error returned. */
static int register_claim(fbk_store *s, const fbk_key *keys, size_t n, fbk__token **toks,
                          size_t *how, fbk_key *fresh, size_t *m)
{
    int rc = FBK_OK;
    size_t i;
    *m = 0;
    pthread_mutex_lock(&s->tok_mu);
    for (i = 0; i < n;) {
        void **slot = fbk__keymap_get(&s->tokens, &keys[i]);
        if (slot && ((fbk__token *)*slot)->state != FBK__TOK_PRESENT) {
            pthread_cond_wait(&s->tok_cv, &s->tok_mu);
            i = 0;
            continue;
        }
        i++;
    }
    for (i = 0; i < n && rc == FBK_OK; i++) {
        void **slot = fbk__keymap_get(&s->tokens, &keys[i]);
        if (slot) {
            fbk__token *t = *slot;
            t->uses++;
            toks[i] = t;
            how[i] = REG_HAD;
            if (t->state == FBK__TOK_BUSY) /* made by this call: a duplicate key */
                for (size_t j = 0; j < i; j++)
                    if (toks[j] == t && how[j] == REG_NEW)
                        how[i] = j;
            continue;
        }
        fbk__token *t = token_new(s, &keys[i]);
        rc = t ? fbk__keymap_put(&s->tokens, &keys[i], t) : FBK_ENOMEM;
        if (rc) {
            fbk__free(t);
            break;
        }
        toks[i] = t;
        how[i] = REG_NEW;
        fresh[(*m)++] = keys[i];
    }
    if (rc) {
        /* undone under the lock: nobody has seen the new tokens */
        for (size_t j = 0; j < i; j++) {
            if (how[j] == REG_NEW) {
                fbk__keymap_del(&s->tokens, &toks[j]->key);
                fbk__free(toks[j]);
            } else if (how[j] == REG_HAD) {
                toks[j]->uses--; /* present, with a use besides ours */
            }
        }
        pthread_cond_broadcast(&s->tok_cv);
    }
    pthread_mutex_unlock(&s->tok_mu);
    return rc ? fbk_error_set(FBK_ENOMEM, 0, "register_many: cannot grow the token table")
              : FBK_OK;
}

/* The backend's part for the m fresh keys: one register_many call, or one
 * register_key per key (after a failure the rest are not tried); each new
 * token settles with its outcome.  The first failure, or FBK_OK. */
static int register_fresh(fbk_store *s, void *bloc, const fbk_key *keys, size_t n,
                          fbk__token **toks, size_t *how, const fbk_key *fresh, size_t m)
{
    int rc = FBK_OK;
    if (m > 0 && s->ops->register_many) {
        rc = s->ops->register_many(s->self, bloc, fresh, m);
        if (rc)
            fbk__error_keep(rc);
        for (size_t i = 0; i < n; i++) {
            if (how[i] != REG_NEW)
                continue;
            token_settle(s, toks[i], rc);
            if (rc == FBK_OK)
                how[i] = REG_HAD;
        }
    } else if (m > 0) {
        for (size_t i = 0; i < n; i++) {
            if (how[i] != REG_NEW)
                continue;
            int r = rc ? rc : s->ops->register_key(s->self, bloc, &keys[i]);
            if (r && !rc)
                rc = fbk__error_keep(r);
            token_settle(s, toks[i], r);
            if (r == FBK_OK)
                how[i] = REG_HAD;
        }
    }
    return rc;
}

int fbk__token_register_many(fbk_store *s, void *bloc, const fbk_key *keys, size_t n,
                             fbk__token **toks)
{
    size_t *how = fbk__calloc(n, sizeof *how);
    fbk_key *fresh = fbk__malloc(n * sizeof *fresh);
    if (!how || !fresh) {
        fbk__free(how);
        fbk__free(fresh);
        return fbk_error_set(FBK_ENOMEM, 0, "register_many: cannot allocate %zu keys", n);
    }
    size_t m;
    int rc = register_claim(s, keys, n, toks, how, fresh, &m);
    if (rc == FBK_OK) {
        /* one backend call for the keys not in the spill area yet; the
         * ones registered before a failure are released by the undo (their
         * last use removes them from the spill area) */
        rc = register_fresh(s, bloc, keys, n, toks, how, fresh, m);
        if (rc)
            register_undo(toks, how, n);
    }
    fbk__free(how);
    fbk__free(fresh);
    return rc;
}

/* load_into: the header lands in hdr, the payload straight in an object
 * from codec->reserve. */
typedef struct place_ctx {
    const fbk_codec *codec;
    unsigned char hdr[FBK__FRAME_HDR];
    size_t plen;
    void *obj; /* reserved (to destroy if anything fails) */
    void *dst;
    int placed;
} place_ctx;

static int place_frame(size_t len, struct iovec *iov, int *n, void *arg)
{
    place_ctx *c = arg;
    if (c->placed++)
        return fbk_error_set(FBK_EIO, 0, "backend called place twice");
    if (len < FBK__FRAME_HDR)
        return fbk_error_set(FBK_ECORRUPT, 0, "frame: %zu bytes, shorter than the %d-byte header",
                             len, FBK__FRAME_HDR);
    c->plen = len - FBK__FRAME_HDR;
    int rc = c->codec->reserve(c->plen, &c->obj, &c->dst, c->codec->ctx);
    if (rc) {
        c->obj = NULL;
        return fbk__codec_error(rc, "reserve");
    }
    iov[0] = (struct iovec){c->hdr, FBK__FRAME_HDR};
    iov[1] = (struct iovec){c->dst, c->plen};
    *n = c->plen ? 2 : 1;
    return FBK_OK;
}

static int load_placed(fbk_store *s, const fbk__token *t, const fbk_codec *codec, void **obj)
{
    place_ctx c = {.codec = codec};
    int rc = FBK__LOAD_INTO(s)(s->self, &t->key, t->len, place_frame, &c);
    size_t n = 0;
    if (rc == FBK_OK && !c.placed)
        rc = fbk_error_set(FBK_EIO, 0, "backend %s: load_into returned success without data",
                           s->ops->name ? s->ops->name : "?");
    if (rc == FBK_OK)
        rc = fbk__frame_check_header(c.hdr, FBK__FRAME_HDR + c.plen, &n);
    if (rc == FBK_OK)
        rc = fbk__frame_check_sum(c.hdr, c.dst, c.plen);
    if (rc) {
        if (c.obj)
            codec->destroy(c.obj, codec->ctx);
        return rc;
    }
    *obj = c.obj;
    return FBK_OK;
}

/* Reads a lazy token's bytes from its location; FBK_EAGAIN when it is not
 * lazy (any more): then the spill area has them. */
static int load_lazy(fbk_store *s, fbk__token *t, const fbk_codec *codec, void **obj)
{
    pthread_mutex_lock(&s->tok_mu);
    while (t->state == FBK__TOK_BUSY) /* being materialized */
        pthread_cond_wait(&s->tok_cv, &s->tok_mu);
    fbk_location *loc = t->lazy;
    if (loc)
        t->lazy_readers++;
    pthread_mutex_unlock(&s->tok_mu);
    if (!loc)
        return FBK_EAGAIN;
    fbk__read_ctx ctx = {.codec = codec, .obj = NULL};
    int rc = FBK__LOAD_PERSISTED(s)(s->self, loc->bloc, &t->key, fbk__frame_read, &ctx);
    pthread_mutex_lock(&s->tok_mu);
    t->lazy_readers--;
    pthread_cond_broadcast(&s->tok_cv);
    pthread_mutex_unlock(&s->tok_mu);
    if (rc && ctx.obj)
        codec->destroy(ctx.obj, codec->ctx);
    if (rc == FBK_OK && !ctx.obj)
        rc = fbk_error_set(FBK_EIO, 0, "backend %s: load returned success without data",
                           s->ops->name ? s->ops->name : "?");
    if (rc == FBK_ENOTFOUND) {
        char text[FBK_KEY_STRLEN + 1];
        fbk_key_format(&t->key, text);
        return fbk_error_set(FBK_ENOTFOUND, 0,
                             "load: %s was registered from location \"%s\", which no longer "
                             "holds it (removed by another process or store)",
                             text, loc->name);
    }
    if (rc)
        return fbk__error_keep(rc);
    *obj = ctx.obj;
    return FBK_OK;
}

int fbk__token_load(fbk_store *s, const fbk__token *t, const fbk_codec *codec, void **obj)
{
    int rc;
    void *got = NULL;
    if (FBK__LOAD_PERSISTED(s)) { /* lazy tokens exist only then */
        rc = load_lazy(s, (fbk__token *)t, codec, &got);
        if (rc != FBK_EAGAIN) {
            if (rc == FBK_OK) {
                atomic_fetch_add_explicit(&s->n_loads, 1, memory_order_relaxed);
                *obj = got;
            }
            return rc;
        }
    }
    if (FBK__LOAD_INTO(s) && codec->reserve) {
        rc = load_placed(s, t, codec, &got);
    } else {
        fbk__read_ctx rc_ctx = {.codec = codec, .obj = NULL};
        rc = s->ops->load(s->self, &t->key, fbk__frame_read, &rc_ctx);
        if (rc && rc_ctx.obj) /* the backend failed after a successful decode */
            codec->destroy(rc_ctx.obj, codec->ctx);
        if (rc == FBK_OK && !rc_ctx.obj)
            rc = fbk_error_set(FBK_EIO, 0, "backend %s: load returned success without data",
                               s->ops->name ? s->ops->name : "?");
        got = rc_ctx.obj;
    }
    if (rc)
        return fbk__error_keep(rc);
    atomic_fetch_add_explicit(&s->n_loads, 1, memory_order_relaxed);
    *obj = got;
    return FBK_OK;
}

void fbk__token_retain(fbk__token *t)
{
    fbk_store *s = t->store;
    pthread_mutex_lock(&s->tok_mu);
    t->uses++;
    pthread_mutex_unlock(&s->tok_mu);
}

static void token_remove_job(fbk__job *job)
{
    fbk__token *t = (fbk__token *)((char *)job - offsetof(fbk__token, job));
    fbk_store *s = t->store;
    if (t->lazy) { /* no spill copy: only the location's reference to drop */
        fbk__location_release(t->lazy);
        pthread_mutex_lock(&s->tok_mu);
        fbk__keymap_del(&s->tokens, &t->key);
        pthread_cond_broadcast(&s->tok_cv);
        pthread_mutex_unlock(&s->tok_mu);
        fbk__free(t);
        fbk__store_release(s);
        return;
    }
    int rc = s->ops->remove(s->self, &t->key);
    if (rc == FBK_OK)
        atomic_fetch_add_explicit(&s->n_removes, 1, memory_order_relaxed);
    else if (rc != FBK_ENOTFOUND)
        fbk__store_report(s, rc); /* a leftover spill copy: emptied at next open */
    pthread_mutex_lock(&s->tok_mu);
    fbk__keymap_del(&s->tokens, &t->key);
    pthread_cond_broadcast(&s->tok_cv);
    pthread_mutex_unlock(&s->tok_mu);
    fbk__free(t);
    fbk__store_release(s);
}

void fbk__token_release(fbk__token *t)
{
    fbk_store *s = t->store;
    pthread_mutex_lock(&s->tok_mu);
    bool last = --t->uses == 0;
    if (last)
        t->state = FBK__TOK_REMOVING;
    pthread_mutex_unlock(&s->tok_mu);
    if (!last)
        return;
    fbk__store_retain(s);
    t->job.run = token_remove_job;
    t->job.run_many = NULL;
    fbk__workers_submit(&s->workers, &t->job);
}
