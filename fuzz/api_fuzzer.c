/* api_fuzzer -- a model-based fuzzer of the public API over the mem:
 * backend.
 *
 * The input is decoded into a sequence of calls (insert, load, try_load,
 * pin/unpin, load_mut, make_mut, release, retain, write_now, persist,
 * register, location_remove, save, reopen, the async forms) on one small
 * pool (mem_items 0..6, so evictions run on the workers all the time) and
 * two locations, "L0" and "L1", of a named mem: store ("mem:apifuzz"), so
 * that the locations survive a close + reopen of the store.  Every result is
 * compared against a model kept here:
 *   - items: their bytes, their key (which changes on load_mut and only
 *     then), how many handle references and pins the test holds;
 *   - locations: which key they hold with which bytes;
 *   - FBK_EBUSY exactly when load_mut meets a shared or pinned item,
 *     FBK_EAGAIN from try_load only when the item is not pinned,
 *     FBK_ENOTFOUND when registering a key the location does not hold.
 * Any mismatch traps.  At the end of each input (and after each reopen),
 * every location key is registered and loaded and its bytes compared. */
#include <fbk.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "api_fuzzer: %s:%d: check failed: %s (last error: %s)\n", __FILE__,    \
                    __LINE__, #c, fbk_errmsg());                                                   \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

enum { NSLOT = 8, NITEM = 160, NLOC = 2, LOCCAP = 64, MAXLEN = 32, MAXOPS = 96 };

typedef struct item {
    int refs; /* slots holding it */
    int pins; /* fbk_load pins the test holds */
    fbk_handle *h;
    fbk_key key;
    size_t len;
    unsigned char bytes[MAXLEN];
} item;

typedef struct locmodel {
    int n;
    fbk_key key[LOCCAP];
    size_t len[LOCCAP];
    unsigned char bytes[LOCCAP][MAXLEN];
} locmodel;

typedef struct state {
    fbk_store *s;
    fbk_pool *p;
    fbk_location *loc[NLOC];
    size_t mem_items;
    unsigned threads;
    int slot[NSLOT]; /* item index, -1 = empty */
    item it[NITEM];
    int nitems;
    locmodel lm[NLOC];
    const uint8_t *in;
    size_t left;
} state;

static const char *const loc_name[NLOC] = {"L0", "L1"};

static uint8_t rd(state *st)
{
    if (st->left == 0)
        return 0;
    st->left--;
    return *st->in++;
}

/* -------------------------------------------------------------- model */

static int loc_find(const locmodel *m, const fbk_key *k)
{
    for (int i = 0; i < m->n; i++)
        if (fbk_key_equal(&m->key[i], k))
            return i;
    return -1;
}

static void loc_put(locmodel *m, const fbk_key *k, const unsigned char *b, size_t len)
{
    int i = loc_find(m, k);
    if (i >= 0) {
        CHECK(m->len[i] == len && memcmp(m->bytes[i], b, len) == 0); /* keys name one value */
        return;
    }
    CHECK(m->n < LOCCAP);
    m->key[m->n] = *k;
    m->len[m->n] = len;
    memcpy(m->bytes[m->n], b, len);
    m->n++;
}

static void loc_del(locmodel *m, int i)
{
    m->n--;
    m->key[i] = m->key[m->n];
    m->len[i] = m->len[m->n];
    memcpy(m->bytes[i], m->bytes[m->n], MAXLEN);
}

/* The location agrees with its model: count, and each key. */
static void check_loc(state *st, int j)
{
    locmodel *m = &st->lm[j];
    CHECK(fbk_location_count(st->loc[j]) == (size_t)m->n);
    for (int i = 0; i < m->n; i++)
        CHECK(fbk_location_contains(st->loc[j], &m->key[i]));
    fbk_key keys[LOCCAP];
    CHECK(fbk_location_keys(st->loc[j], keys, LOCCAP) == (size_t)m->n);
    for (int i = 0; i < m->n; i++)
        CHECK(loc_find(m, &keys[i]) >= 0);
}

static int new_item(state *st, fbk_handle *h, const unsigned char *b, size_t len)
{
    CHECK(st->nitems < NITEM);
    item *x = &st->it[st->nitems];
    memset(x, 0, sizeof *x);
    x->h = h;
    x->refs = 1;
    x->len = len;
    memcpy(x->bytes, b, len);
    fbk_handle_key(h, &x->key);
    return st->nitems++;
}

static int free_slot(state *st)
{
    for (int i = 0; i < NSLOT; i++)
        if (st->slot[i] < 0)
            return i;
    return -1;
}

/* A slot holding an item, chosen by b; -1 if there is none. */
static int pick(state *st, uint8_t b)
{
    for (int k = 0; k < NSLOT; k++) {
        int i = (b + k) % NSLOT;
        if (st->slot[i] >= 0)
            return i;
    }
    return -1;
}

static int blob_is(const void *obj, const item *x)
{
    const fbk_blob *b = obj;
    return b->len == x->len && memcmp(b->data, x->bytes, x->len) == 0;
}

static void check_key(const item *x)
{
    fbk_key k;
    fbk_handle_key(x->h, &k);
    CHECK(fbk_key_equal(&k, &x->key));
}

static void load_check(item *x)
{
    const void *obj;
    int rc = fbk_load(x->h, &obj);
    CHECK(rc == 0);
    CHECK(blob_is(obj, x));
    fbk_unload(x->h);
}

static void unpin_all(item *x)
{
    while (x->pins > 0) {
        fbk_unload(x->h);
        x->pins--;
    }
}

static void drop_slot(state *st, int i)
{
    item *x = &st->it[st->slot[i]];
    if (x->refs == 1)
        unpin_all(x); /* releasing the last reference of a loaded item is misuse */
    fbk_handle_release(x->h);
    x->refs--;
    st->slot[i] = -1;
}

static size_t live_items(const state *st)
{
    size_t n = 0;
    for (int i = 0; i < st->nitems; i++)
        n += st->it[i].refs > 0;
    return n;
}

/* -------------------------------------------------------- store on/off */

static void open_all(state *st)
{
    fbk_store_options o = {.threads = st->threads};
    CHECK(fbk_store_open(&st->s, "mem:apifuzz", &o) == 0);
    CHECK(fbk_pool_create(&st->p, st->s, &fbk_blob_codec, st->mem_items) == 0);
    for (int j = 0; j < NLOC; j++)
        CHECK(fbk_location_open(st->s, loc_name[j], &st->loc[j]) == 0);
}

static void close_all(state *st)
{
    for (int i = 0; i < NSLOT; i++)
        if (st->slot[i] >= 0)
            drop_slot(st, i);
    CHECK(fbk_store_drain(st->s) == 0);
    CHECK(fbk_pool_size(st->p) == 0);
    fbk_pool_release(st->p);
    for (int j = 0; j < NLOC; j++)
        fbk_location_close(st->loc[j]);
    fbk_store_close(st->s);
    st->p = NULL;
    st->s = NULL;
}

/* Every key of every location loads back with the model's bytes. */
static void verify_locations(state *st)
{
    for (int j = 0; j < NLOC; j++) {
        check_loc(st, j);
        for (int i = 0; i < st->lm[j].n; i++) {
            fbk_handle *h;
            CHECK(fbk_register(st->p, st->loc[j], &st->lm[j].key[i], &h) == 0);
            const void *obj;
            CHECK(fbk_load(h, &obj) == 0);
            const fbk_blob *b = obj;
            CHECK(b->len == st->lm[j].len[i] && memcmp(b->data, st->lm[j].bytes[i], b->len) == 0);
            fbk_unload(h);
            fbk_handle_release(h);
        }
    }
}

/* ---------------------------------------------------------------- ops */

static void op_insert(state *st)
{
    int i = free_slot(st);
    size_t len = rd(st) % (MAXLEN + 1);
    unsigned char b[MAXLEN];
    for (size_t k = 0; k < len; k++)
        b[k] = rd(st);
    if (i < 0 || st->nitems >= NITEM)
        return;
    fbk_blob *obj = fbk_blob_new(b, len);
    CHECK(obj != NULL);
    fbk_handle *h;
    CHECK(fbk_insert(st->p, obj, &h) == 0);
    st->slot[i] = new_item(st, h, b, len);
}

static void op_load(state *st, int keep)
{
    int i = pick(st, rd(st));
    if (i < 0)
        return;
    item *x = &st->it[st->slot[i]];
    if (keep && x->pins >= 3)
        return;
    load_check(x);
    if (keep) {
        const void *obj;
        CHECK(fbk_load(x->h, &obj) == 0);
        x->pins++;
    }
}

static void op_unpin(state *st)
{
    int i = pick(st, rd(st));
    if (i < 0)
        return;
    item *x = &st->it[st->slot[i]];
    if (x->pins > 0) {
        fbk_unload(x->h);
        x->pins--;
    }
}

static void op_try_load(state *st)
{
    int i = pick(st, rd(st));
    if (i < 0)
        return;
    item *x = &st->it[st->slot[i]];
    const void *obj;
    int rc = fbk_try_load(x->h, &obj);
    if (x->pins > 0)
        CHECK(rc == 0); /* a pinned item is in memory and cannot be evicted */
    CHECK(rc == 0 || rc == FBK_EAGAIN);
    if (rc == 0) {
        CHECK(blob_is(obj, x));
        fbk_unload(x->h);
    }
}

/* New contents for a mutable item: same length, bytes changed by d. */
static void mutate(void *obj, item *x, uint8_t d)
{
    fbk_blob *b = obj;
    for (size_t k = 0; k < x->len; k++)
        x->bytes[k] = (unsigned char)(x->bytes[k] + d + k);
    memcpy(b->data, x->bytes, x->len);
}

static void op_load_mut(state *st, int try_only)
{
    int i = pick(st, rd(st));
    uint8_t d = rd(st);
    if (i < 0)
        return;
    item *x = &st->it[st->slot[i]];
    void *obj;
    int rc = try_only ? fbk_try_load_mut(x->h, &obj) : fbk_load_mut(x->h, &obj);
    if (x->refs > 1 || x->pins > 0) {
        CHECK(rc == FBK_EBUSY);
        return;
    }
    if (try_only && rc == FBK_EAGAIN)
        return;
    CHECK(rc == 0);
    CHECK(blob_is(obj, x));
    fbk_key old = x->key;
    mutate(obj, x, d);
    fbk_unload_mut(x->h);
    fbk_handle_key(x->h, &x->key);
    CHECK(!fbk_key_equal(&old, &x->key)); /* a new value gets a new key */
    for (int j = 0; j < NLOC; j++)
        CHECK(loc_find(&st->lm[j], &x->key) < 0);
}

static void op_make_mut(state *st)
{
    int i = pick(st, rd(st));
    uint8_t d = rd(st);
    if (i < 0 || st->nitems >= NITEM)
        return;
    item *x = &st->it[st->slot[i]];
    if (x->refs == 1)
        unpin_all(x); /* see drop_slot */
    fbk_handle *h = x->h;
    fbk_key old = x->key;
    void *obj;
    CHECK(fbk_make_mut(&h, &obj) == 0);
    CHECK(blob_is(obj, x));
    if (x->refs > 1 || x->pins > 0) {
        /* shared: a copy in a new item; our reference to x is gone */
        CHECK(h != x->h);
        x->refs--;
        int n = new_item(st, h, x->bytes, x->len);
        st->slot[i] = n;
        x = &st->it[n];
    } else {
        CHECK(h == x->h);
    }
    mutate(obj, x, d);
    fbk_unload_mut(h);
    fbk_handle_key(h, &x->key);
    CHECK(!fbk_key_equal(&old, &x->key));
}

static void op_release(state *st)
{
    int i = pick(st, rd(st));
    if (i >= 0)
        drop_slot(st, i);
}

static void op_retain(state *st)
{
    int i = pick(st, rd(st)), k = free_slot(st);
    if (i < 0 || k < 0)
        return;
    item *x = &st->it[st->slot[i]];
    CHECK(fbk_handle_retain(x->h) == x->h);
    x->refs++;
    st->slot[k] = st->slot[i];
}

static void op_write_now(state *st, int async)
{
    int i = pick(st, rd(st));
    if (i < 0)
        return;
    item *x = &st->it[st->slot[i]];
    if (async) {
        fbk_task *t;
        CHECK(fbk_write_now_async(x->h, &t) == 0);
        CHECK(fbk_task_wait(t) == 0);
    } else {
        CHECK(fbk_write_now(x->h) == 0);
    }
    check_key(x);
}

static void op_persist(state *st, int async)
{
    int i = pick(st, rd(st)), j = rd(st) % NLOC;
    if (i < 0)
        return;
    item *x = &st->it[st->slot[i]];
    if (async == 2) { /* fire and forget */
        CHECK(fbk_persist_async(x->h, st->loc[j], NULL) == 0);
        CHECK(fbk_store_drain(st->s) == 0);
    } else if (async) {
        fbk_task *t;
        CHECK(fbk_persist_async(x->h, st->loc[j], &t) == 0);
        CHECK(fbk_task_wait(t) == 0);
    } else {
        CHECK(fbk_persist(x->h, st->loc[j]) == 0);
    }
    check_key(x);
    loc_put(&st->lm[j], &x->key, x->bytes, x->len);
    check_loc(st, j);
}

static void op_prefetch(state *st)
{
    int i = pick(st, rd(st));
    if (i < 0)
        return;
    item *x = &st->it[st->slot[i]];
    fbk_task *t;
    CHECK(fbk_prefetch(x->h, &t) == 0);
    CHECK(fbk_task_wait(t) == 0);
    load_check(x);
}

static void op_register(state *st)
{
    int j = rd(st) % NLOC;
    uint8_t which = rd(st);
    int k = free_slot(st);
    if (k < 0 || st->nitems >= NITEM)
        return;
    locmodel *m = &st->lm[j];
    fbk_handle *h = NULL;
    if (m->n == 0 || which >= 240) {
        /* a key the location does not hold */
        fbk_key key;
        fbk_key_generate(&key);
        CHECK(fbk_register(st->p, st->loc[j], &key, &h) == FBK_ENOTFOUND);
        CHECK(h == NULL);
        return;
    }
    int i = which % m->n;
    CHECK(fbk_register(st->p, st->loc[j], &m->key[i], &h) == 0);
    int n = new_item(st, h, m->bytes[i], m->len[i]);
    CHECK(fbk_key_equal(&st->it[n].key, &m->key[i]));
    st->slot[k] = n;
    if (rd(st) & 1)
        load_check(&st->it[n]);
}

static void op_loc_remove(state *st)
{
    int j = rd(st) % NLOC;
    uint8_t which = rd(st);
    locmodel *m = &st->lm[j];
    if (m->n == 0 || which >= 240) {
        fbk_key key;
        fbk_key_generate(&key);
        CHECK(fbk_location_remove(st->loc[j], &key) == 0); /* absent: 0 */
    } else {
        int i = which % m->n;
        CHECK(fbk_location_remove(st->loc[j], &m->key[i]) == 0);
        CHECK(!fbk_location_contains(st->loc[j], &m->key[i]));
        loc_del(m, i);
    }
    check_loc(st, j);
}

static int commit_result;
static int commit_calls;
static int commit_fn(void *arg)
{
    (void)arg;
    commit_calls++;
    return commit_result;
}

static void op_save(state *st)
{
    int j = rd(st) % NLOC;
    uint8_t mask = rd(st), flags = rd(st);
    fbk_handle *hs[NSLOT];
    int idx[NSLOT];
    size_t n = 0;
    for (int i = 0; i < NSLOT; i++)
        if ((mask >> i & 1) && st->slot[i] >= 0) {
            idx[n] = st->slot[i];
            hs[n++] = st->it[st->slot[i]].h;
        }
    commit_result = (flags & 3) == 3 ? 42 : 0;
    commit_calls = 0;
    int use_commit = (flags & 4) || commit_result;
    int rc = fbk_save(st->loc[j], hs, n, flags >> 3 & 3, use_commit ? commit_fn : NULL, NULL);
    CHECK(rc == commit_result);
    CHECK(commit_calls == use_commit);
    locmodel *m = &st->lm[j];
    if (rc == 0) {
        /* exactly the saved items' keys: the rest was stale */
        locmodel old = *m;
        m->n = 0;
        for (size_t k = 0; k < n; k++) {
            item *x = &st->it[idx[k]];
            check_key(x);
            int o = loc_find(&old, &x->key);
            CHECK(o < 0 || (old.len[o] == x->len && memcmp(old.bytes[o], x->bytes, x->len) == 0));
            loc_put(m, &x->key, x->bytes, x->len);
        }
    } else {
        /* commit refused: the new keys are there, nothing was removed */
        for (size_t k = 0; k < n; k++)
            loc_put(m, &st->it[idx[k]].key, st->it[idx[k]].bytes, st->it[idx[k]].len);
    }
    check_loc(st, j);
}

static void op_reopen(state *st)
{
    close_all(st);
    open_all(st);
    verify_locations(st);
}

/* ---------------------------------------------------------------- main */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static state st;
    memset(&st, 0, sizeof st);
    for (int i = 0; i < NSLOT; i++)
        st.slot[i] = -1;
    st.in = data;
    st.left = size;
    uint8_t cfg = rd(&st);
    st.mem_items = cfg % 7;
    st.threads = 1 + (cfg / 7) % 2;

    /* the named store's locations outlive stores: start from empty ones */
    open_all(&st);
    for (int j = 0; j < NLOC; j++) {
        fbk_key keys[LOCCAP * 2];
        size_t n = fbk_location_keys(st.loc[j], keys, LOCCAP * 2);
        CHECK(n <= LOCCAP * 2);
        for (size_t k = 0; k < n; k++)
            CHECK(fbk_location_remove(st.loc[j], &keys[k]) == 0);
        CHECK(fbk_location_count(st.loc[j]) == 0);
    }

    for (int ops = 0; ops < MAXOPS && st.left > 0; ops++) {
        switch (rd(&st) % 20) {
        case 0:
        case 1: op_insert(&st); break;
        case 2: op_load(&st, 0); break;
        case 3: op_load(&st, 1); break;
        case 4: op_unpin(&st); break;
        case 5: op_try_load(&st); break;
        case 6: op_load_mut(&st, 0); break;
        case 7: op_load_mut(&st, 1); break;
        case 8: op_make_mut(&st); break;
        case 9: op_release(&st); break;
        case 10: op_retain(&st); break;
        case 11: op_write_now(&st, rd(&st) & 1); break;
        case 12: op_persist(&st, 0); break;
        case 13: op_persist(&st, 1 + (rd(&st) & 1)); break;
        case 14: op_register(&st); break;
        case 15: op_loc_remove(&st); break;
        case 16: op_save(&st); break;
        case 17: op_reopen(&st); break;
        case 18: op_prefetch(&st); break;
        default: CHECK(fbk_store_drain(st.s) == 0); break;
        }
        CHECK(fbk_store_drain(st.s) == 0);
        CHECK(fbk_pool_size(st.p) == live_items(&st));
        for (int i = 0; i < NSLOT; i++)
            if (st.slot[i] >= 0)
                check_key(&st.it[st.slot[i]]);
    }

    /* every live item still has its bytes; every location key loads back */
    for (int i = 0; i < NSLOT; i++)
        if (st.slot[i] >= 0)
            load_check(&st.it[st.slot[i]]);
    verify_locations(&st);
    close_all(&st);
    return 0;
}
