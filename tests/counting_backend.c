/* counting_backend.c -- the counting, fault-injecting in-memory backend of the
 * core's tests.  See counting_backend.h. */
#include "counting_backend.h"

#include <fbk_backend.h>
#include "testutil.h"

#include <criterion/criterion.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------ key maps */

#define NBUCKETS 64

typedef struct kv {
    fbk_key key;
    unsigned char *data;
    size_t len;
    struct kv *next;
} kv;

typedef struct kvmap {
    kv *b[NBUCKETS];
    size_t n;
} kvmap;

static unsigned bucket_of(const fbk_key *k)
{
    return (unsigned)(k->bytes[0] ^ k->bytes[5] ^ k->bytes[11] ^ k->bytes[15]) % NBUCKETS;
}

static kv **map_slot(kvmap *m, const fbk_key *k)
{
    kv **pp = &m->b[bucket_of(k)];
    while (*pp && !fbk_key_equal(&(*pp)->key, k))
        pp = &(*pp)->next;
    return pp;
}

static kv *map_find(kvmap *m, const fbk_key *k) { return *map_slot(m, k); }

/* Puts a copy of data under k (replacing).  0 or -1 (ENOMEM). */
static int map_put(kvmap *m, const fbk_key *k, const void *data, size_t len)
{
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy)
        return -1;
    if (len)
        memcpy(copy, data, len);
    kv **pp = map_slot(m, k);
    if (*pp) {
        free((*pp)->data);
        (*pp)->data = copy;
        (*pp)->len = len;
        return 0;
    }
    kv *e = calloc(1, sizeof *e);
    if (!e) {
        free(copy);
        return -1;
    }
    e->key = *k;
    e->data = copy;
    e->len = len;
    e->next = NULL;
    *pp = e;
    m->n++;
    return 0;
}

/* Takes ownership of data. */
static void map_put_owned(kvmap *m, const fbk_key *k, unsigned char *data, size_t len)
{
    kv **pp = map_slot(m, k);
    if (*pp) {
        free((*pp)->data);
        (*pp)->data = data;
        (*pp)->len = len;
        return;
    }
    kv *e = calloc(1, sizeof *e);
    if (!e) {
        free(data);
        return;
    }
    e->key = *k;
    e->data = data;
    e->len = len;
    *pp = e;
    m->n++;
}

static int map_del(kvmap *m, const fbk_key *k)
{
    kv **pp = map_slot(m, k);
    if (!*pp)
        return -1;
    kv *e = *pp;
    *pp = e->next;
    free(e->data);
    free(e);
    m->n--;
    return 0;
}

static void map_clear(kvmap *m)
{
    for (int i = 0; i < NBUCKETS; i++) {
        kv *e = m->b[i];
        while (e) {
            kv *next = e->next;
            free(e->data);
            free(e);
            e = next;
        }
        m->b[i] = NULL;
    }
    m->n = 0;
}

/* ------------------------------------------------------------- state */

typedef struct cloc {
    char *name;
    kvmap keys;
    unsigned junk;
    struct cloc *next;
} cloc;

typedef struct keylist {
    fbk_key *k;
    size_t n, cap;
} keylist;

static void keylist_push(keylist *l, const fbk_key *k)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        fbk_key *nk = realloc(l->k, cap * sizeof *nk);
        if (!nk)
            abort();
        l->k = nk;
        l->cap = cap;
    }
    l->k[l->n++] = *k;
}

typedef struct inflight {
    fbk_key key;
    const void *where; /* NULL: the spill area; else the location */
    int write;
} inflight;

typedef struct fault {
    int code;
    int n; /* < 0 forever */
} fault;

struct counting {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int refs;
    atomic_ulong calls[CB_NOPS];
    atomic_uint active[CB_NOPS];     /* calls in progress */
    atomic_uint max_active[CB_NOPS]; /* most calls in progress at once */
    atomic_ulong close_calls;
    atomic_ulong violations;
    atomic_uint sleep_ms;

    /* under mu */
    kvmap spill;
    cloc *locs;
    keylist stored, removed;
    fault faults[CB_NOPS];
    int gate_closed[CB_NOPS];
    unsigned gate_blocked[CB_NOPS];
    inflight *fl;
    size_t nfl, capfl;
    size_t batch_sizes[256]; /* the first store_many calls' sizes */
    size_t nbatch_sizes;
};

counting *counting_new(void)
{
    counting *cb = calloc(1, sizeof *cb);
    if (!cb)
        return NULL;
    pthread_mutex_init(&cb->mu, NULL);
    pthread_cond_init(&cb->cv, NULL);
    atomic_init(&cb->refs, 1);
    for (int i = 0; i < CB_NOPS; i++) {
        atomic_init(&cb->calls[i], 0);
        atomic_init(&cb->active[i], 0);
        atomic_init(&cb->max_active[i], 0);
    }
    atomic_init(&cb->close_calls, 0);
    atomic_init(&cb->violations, 0);
    atomic_init(&cb->sleep_ms, 0);
    return cb;
}

static void counting_unref(counting *cb)
{
    if (atomic_fetch_sub(&cb->refs, 1) != 1)
        return;
    map_clear(&cb->spill);
    cloc *l = cb->locs;
    while (l) {
        cloc *next = l->next;
        map_clear(&l->keys);
        free(l->name);
        free(l);
        l = next;
    }
    free(cb->stored.k);
    free(cb->removed.k);
    free(cb->fl);
    pthread_cond_destroy(&cb->cv);
    pthread_mutex_destroy(&cb->mu);
    free(cb);
}

counting *counting_ref(counting *cb)
{
    atomic_fetch_add(&cb->refs, 1);
    return cb;
}

void counting_free(counting *cb)
{
    if (cb)
        counting_unref(cb);
}

/* Under mu. */
static cloc *loc_get(counting *cb, const char *name, int create)
{
    for (cloc *l = cb->locs; l; l = l->next)
        if (strcmp(l->name, name) == 0)
            return l;
    if (!create)
        return NULL;
    cloc *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->name = strdup(name);
    if (!l->name) {
        free(l);
        return NULL;
    }
    l->next = cb->locs;
    cb->locs = l;
    return l;
}

/* Counts the call, waits at the gate, then consumes a fault.  Returns 0 or
 * the injected code.  Called without mu. */
static int enter(counting *cb, counting_op op)
{
    atomic_fetch_add(&cb->calls[op], 1);
    unsigned now = atomic_fetch_add(&cb->active[op], 1) + 1;
    unsigned max = atomic_load(&cb->max_active[op]);
    while (now > max && !atomic_compare_exchange_weak(&cb->max_active[op], &max, now)) {
    }
    pthread_mutex_lock(&cb->mu);
    if (cb->gate_closed[op]) {
        cb->gate_blocked[op]++;
        pthread_cond_broadcast(&cb->cv);
        while (cb->gate_closed[op])
            pthread_cond_wait(&cb->cv, &cb->mu);
        cb->gate_blocked[op]--;
    }
    int code = 0;
    fault *f = &cb->faults[op];
    if (f->code != 0 && f->n != 0) {
        code = f->code;
        if (f->n > 0)
            f->n--;
    }
    pthread_mutex_unlock(&cb->mu);
    if (code)
        fbk_error_set(code, 0, "counting: injected %s in op %d", fbk_err_name(code), (int)op);
    return code;
}

static void leave(void *self, counting_op op)
{
    counting *cb = self;
    atomic_fetch_sub(&cb->active[op], 1);
}

/* Marks key (in the spill area when where == NULL, else in that location)
 * as in use by one operation, counting a violation when another operation
 * on it is running and either of them writes.  Under mu. */
static void fl_add(counting *cb, const void *where, const fbk_key *key, int write)
{
    for (size_t i = 0; i < cb->nfl; i++)
        if (cb->fl[i].where == where && fbk_key_equal(&cb->fl[i].key, key) &&
            (write || cb->fl[i].write))
            atomic_fetch_add(&cb->violations, 1);
    if (cb->nfl == cb->capfl) {
        size_t cap = cb->capfl ? cb->capfl * 2 : 16;
        inflight *n = realloc(cb->fl, cap * sizeof *n);
        if (!n)
            abort();
        cb->fl = n;
        cb->capfl = cap;
    }
    cb->fl[cb->nfl].key = *key;
    cb->fl[cb->nfl].where = where;
    cb->fl[cb->nfl].write = write;
    cb->nfl++;
}

static void fl_del(counting *cb, const void *where, const fbk_key *key, int write)
{
    for (size_t i = 0; i < cb->nfl; i++) {
        if (cb->fl[i].where == where && fbk_key_equal(&cb->fl[i].key, key) &&
            cb->fl[i].write == write) {
            cb->fl[i] = cb->fl[--cb->nfl];
            return;
        }
    }
}

/* An operation's marks are held across an unlocked window (with a yield to
 * widen it), so that a second operation on the same key at the same time is
 * seen.  Called without mu. */
static void op_begin(counting *cb, const void *where, const fbk_key *key, int write)
{
    pthread_mutex_lock(&cb->mu);
    fl_add(cb, where, key, write);
    pthread_mutex_unlock(&cb->mu);
    sched_yield();
}

static void op_end(counting *cb, const void *where, const fbk_key *key, int write)
{
    pthread_mutex_lock(&cb->mu);
    fl_del(cb, where, key, write);
    pthread_mutex_unlock(&cb->mu);
}

static void violation(counting *cb) { atomic_fetch_add(&cb->violations, 1); }

/* ------------------------------------------------------------ the table */

static int do_store(void *self, const fbk_key *key, size_t len, fbk_fill_fn fill, void *arg)
{
    counting *cb = self;
    int rc = enter(cb, CB_STORE);
    if (rc)
        return rc;
    unsigned ms = atomic_load(&cb->sleep_ms);
    if (ms) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0) {
        }
    }
    op_begin(cb, NULL, key, 1);
    pthread_mutex_lock(&cb->mu);
    if (map_find(&cb->spill, key))
        violation(cb);
    pthread_mutex_unlock(&cb->mu);

    unsigned char *buf = malloc(len ? len : 1);
    if (!buf) {
        rc = fbk_error_set(FBK_ENOMEM, 0, "counting: store: out of memory");
    } else {
        rc = fill(buf, len, arg);
        if (rc != 0) {
            free(buf);
            buf = NULL;
        }
    }
    pthread_mutex_lock(&cb->mu);
    if (rc == 0) {
        map_put_owned(&cb->spill, key, buf, len);
        keylist_push(&cb->stored, key);
    }
    pthread_mutex_unlock(&cb->mu);
    op_end(cb, NULL, key, 1);
    return rc;
}

static int do_load(void *self, const fbk_key *key, fbk_read_fn read, void *arg)
{
    counting *cb = self;
    int rc = enter(cb, CB_LOAD);
    if (rc)
        return rc;
    op_begin(cb, NULL, key, 0);
    pthread_mutex_lock(&cb->mu);
    kv *e = map_find(&cb->spill, key);
    unsigned char *copy = NULL;
    size_t len = 0;
    if (!e) {
        violation(cb);
        rc = fbk_error_set(FBK_ENOTFOUND, 0, "counting: load: key not in spill area");
    } else {
        len = e->len;
        copy = malloc(len ? len : 1);
        if (!copy)
            rc = fbk_error_set(FBK_ENOMEM, 0, "counting: load: out of memory");
        else
            memcpy(copy, e->data, len);
    }
    pthread_mutex_unlock(&cb->mu);
    if (rc == 0)
        rc = read(copy, len, arg);
    free(copy);
    op_end(cb, NULL, key, 0);
    return rc;
}

static int do_remove(void *self, const fbk_key *key)
{
    counting *cb = self;
    int rc = enter(cb, CB_REMOVE);
    if (rc)
        return rc;
    op_begin(cb, NULL, key, 1);
    pthread_mutex_lock(&cb->mu);
    if (map_del(&cb->spill, key) != 0) {
        violation(cb);
        rc = fbk_error_set(FBK_ENOTFOUND, 0, "counting: remove: key not in spill area");
    } else {
        keylist_push(&cb->removed, key);
    }
    pthread_mutex_unlock(&cb->mu);
    op_end(cb, NULL, key, 1);
    return rc;
}

static int do_open_location(void *self, const char *location, void **loc)
{
    counting *cb = self;
    int rc = enter(cb, CB_OPEN_LOCATION);
    if (rc)
        return rc;
    if (!location || !*location)
        return fbk_error_set(FBK_EINVAL, 0, "counting: empty location name");
    pthread_mutex_lock(&cb->mu);
    cloc *l = loc_get(cb, location, 1);
    pthread_mutex_unlock(&cb->mu);
    if (!l)
        return fbk_error_set(FBK_ENOMEM, 0, "counting: open_location: out of memory");
    *loc = l;
    return 0;
}

static void cb_close_location(void *self, void *loc)
{
    counting *cb = self;
    (void)loc;
    atomic_fetch_add(&cb->calls[CB_CLOSE_LOCATION], 1);
}

static int do_scan(void *self, void *loc, fbk_key_fn each, void *arg)
{
    counting *cb = self;
    cloc *l = loc;
    int rc = enter(cb, CB_SCAN);
    if (rc)
        return rc;
    pthread_mutex_lock(&cb->mu);
    int junk = (int)l->junk;
    l->junk = 0;
    size_t n = l->keys.n, i = 0;
    fbk_key *keys = malloc((n ? n : 1) * sizeof *keys);
    if (!keys) {
        pthread_mutex_unlock(&cb->mu);
        return fbk_error_set(FBK_ENOMEM, 0, "counting: scan: out of memory");
    }
    for (int b = 0; b < NBUCKETS; b++)
        for (kv *e = l->keys.b[b]; e; e = e->next)
            keys[i++] = e->key;
    pthread_mutex_unlock(&cb->mu);
    for (i = 0; i < n; i++) {
        rc = each(&keys[i], arg);
        if (rc != 0)
            break;
    }
    free(keys);
    return rc != 0 ? rc : junk;
}

static int persist_one(counting *cb, cloc *l, const fbk_key *key)
{
    int rc = 0;
    op_begin(cb, NULL, key, 0);
    op_begin(cb, l, key, 1);
    pthread_mutex_lock(&cb->mu);
    kv *e = map_find(&cb->spill, key);
    if (!e) {
        violation(cb);
        rc = fbk_error_set(FBK_ENOTFOUND, 0, "counting: persist: key not in spill area");
    } else if (map_put(&l->keys, key, e->data, e->len) != 0) {
        rc = fbk_error_set(FBK_ENOMEM, 0, "counting: persist: out of memory");
    }
    pthread_mutex_unlock(&cb->mu);
    op_end(cb, l, key, 1);
    op_end(cb, NULL, key, 0);
    return rc;
}

static int do_persist(void *self, void *loc, const fbk_key *key)
{
    counting *cb = self;
    int rc = enter(cb, CB_PERSIST);
    if (rc)
        return rc;
    return persist_one(cb, loc, key);
}

static int register_one(counting *cb, cloc *l, const fbk_key *key)
{
    int rc = 0;
    op_begin(cb, l, key, 0);
    op_begin(cb, NULL, key, 1);
    pthread_mutex_lock(&cb->mu);
    kv *e = map_find(&l->keys, key);
    if (!e) {
        rc = fbk_error_set(FBK_ENOTFOUND, 0, "counting: register_key: key not in location");
    } else {
        if (map_find(&cb->spill, key))
            violation(cb);
        if (map_put(&cb->spill, key, e->data, e->len) != 0)
            rc = fbk_error_set(FBK_ENOMEM, 0, "counting: register_key: out of memory");
    }
    pthread_mutex_unlock(&cb->mu);
    op_end(cb, NULL, key, 1);
    op_end(cb, l, key, 0);
    return rc;
}

static int do_register_key(void *self, void *loc, const fbk_key *key)
{
    counting *cb = self;
    int rc = enter(cb, CB_REGISTER_KEY);
    if (rc)
        return rc;
    return register_one(cb, loc, key);
}

static int do_remove_persisted(void *self, void *loc, const fbk_key *key)
{
    counting *cb = self;
    cloc *l = loc;
    int rc = enter(cb, CB_REMOVE_PERSISTED);
    if (rc)
        return rc;
    op_begin(cb, l, key, 1);
    pthread_mutex_lock(&cb->mu);
    if (map_del(&l->keys, key) != 0)
        rc = fbk_error_set(FBK_ENOTFOUND, 0, "counting: remove_persisted: key not in location");
    pthread_mutex_unlock(&cb->mu);
    op_end(cb, l, key, 1);
    return rc;
}

static int do_sync(void *self, void *loc)
{
    counting *cb = self;
    (void)loc;
    return enter(cb, CB_SYNC);
}

static void cb_close(void *self)
{
    counting *cb = self;
    pthread_mutex_lock(&cb->mu);
    atomic_fetch_add(&cb->close_calls, 1);
    pthread_cond_broadcast(&cb->cv);
    pthread_mutex_unlock(&cb->mu);
    counting_unref(cb);
}

static int do_persist_many(void *self, void *loc, const fbk_key *keys, size_t n)
{
    counting *cb = self;
    int rc = enter(cb, CB_PERSIST_MANY);
    if (rc)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = persist_one(cb, loc, &keys[i]);
    return rc;
}

static int do_register_many(void *self, void *loc, const fbk_key *keys, size_t n)
{
    counting *cb = self;
    int rc = enter(cb, CB_REGISTER_MANY);
    if (rc)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = register_one(cb, loc, &keys[i]);
    return rc;
}

/* Every call leaves through here: the count of calls in progress. */
static int cb_store(void *self, const fbk_key *key, size_t len, fbk_fill_fn fill, void *arg)
{
    int rc = do_store(self, key, len, fill, arg);
    leave(self, CB_STORE);
    return rc;
}

static int cb_load(void *self, const fbk_key *key, fbk_read_fn read, void *arg)
{
    int rc = do_load(self, key, read, arg);
    leave(self, CB_LOAD);
    return rc;
}

static int cb_remove(void *self, const fbk_key *key)
{
    int rc = do_remove(self, key);
    leave(self, CB_REMOVE);
    return rc;
}

static int cb_open_location(void *self, const char *location, void **loc)
{
    int rc = do_open_location(self, location, loc);
    leave(self, CB_OPEN_LOCATION);
    return rc;
}

static int cb_scan(void *self, void *loc, fbk_key_fn each, void *arg)
{
    int rc = do_scan(self, loc, each, arg);
    leave(self, CB_SCAN);
    return rc;
}

static int cb_persist(void *self, void *loc, const fbk_key *key)
{
    int rc = do_persist(self, loc, key);
    leave(self, CB_PERSIST);
    return rc;
}

static int cb_register_key(void *self, void *loc, const fbk_key *key)
{
    int rc = do_register_key(self, loc, key);
    leave(self, CB_REGISTER_KEY);
    return rc;
}

static int cb_remove_persisted(void *self, void *loc, const fbk_key *key)
{
    int rc = do_remove_persisted(self, loc, key);
    leave(self, CB_REMOVE_PERSISTED);
    return rc;
}

static int cb_sync(void *self, void *loc)
{
    int rc = do_sync(self, loc);
    leave(self, CB_SYNC);
    return rc;
}

static int cb_persist_many(void *self, void *loc, const fbk_key *keys, size_t n)
{
    int rc = do_persist_many(self, loc, keys, n);
    leave(self, CB_PERSIST_MANY);
    return rc;
}

static int cb_register_many(void *self, void *loc, const fbk_key *keys, size_t n)
{
    int rc = do_register_many(self, loc, keys, n);
    leave(self, CB_REGISTER_MANY);
    return rc;
}

/* store_many: a fault injected on CB_STORE_MANY fails the whole call (no
 * value written); otherwise each value goes through cb_store, so CB_STORE
 * faults, gates and counts apply per value. */
static int cb_store_many(void *self, fbk_store_req *reqs, size_t n)
{
    counting *cb = self;
    int rc = enter(cb, CB_STORE_MANY);
    pthread_mutex_lock(&cb->mu);
    if (cb->nbatch_sizes < sizeof cb->batch_sizes / sizeof cb->batch_sizes[0])
        cb->batch_sizes[cb->nbatch_sizes] = n;
    cb->nbatch_sizes++;
    pthread_mutex_unlock(&cb->mu);
    int first = rc;
    for (size_t i = 0; i < n; i++) {
        reqs[i].result = rc ? rc : cb_store(self, reqs[i].key, reqs[i].len, reqs[i].fill, reqs[i].arg);
        if (first == 0)
            first = reqs[i].result;
    }
    leave(self, CB_STORE_MANY);
    return first;
}

size_t counting_store_many_sizes(counting *cb, size_t *out, size_t cap)
{
    pthread_mutex_lock(&cb->mu);
    size_t total = cb->nbatch_sizes;
    size_t kept = total < sizeof cb->batch_sizes / sizeof cb->batch_sizes[0]
                      ? total
                      : sizeof cb->batch_sizes / sizeof cb->batch_sizes[0];
    for (size_t i = 0; i < cap && i < kept; i++)
        out[i] = cb->batch_sizes[i];
    pthread_mutex_unlock(&cb->mu);
    return total;
}

/* store_iov/load_into: the value gathered into / scattered out of one
 * buffer, through do_store/do_load (so CB_STORE/CB_LOAD faults, gates,
 * counts and corruption apply). */
typedef struct cb_gather {
    const struct iovec *iov;
    int n;
} cb_gather;

static int cb_gather_fill(void *dst, size_t len, void *arg)
{
    const cb_gather *g = arg;
    size_t off = 0;
    for (int i = 0; i < g->n; i++) {
        if (g->iov[i].iov_len > len - off)
            return fbk_error_set(FBK_EINVAL, 0, "counting: segments longer than the value");
        memcpy((char *)dst + off, g->iov[i].iov_base, g->iov[i].iov_len);
        off += g->iov[i].iov_len;
    }
    return 0;
}

static int cb_store_iov(void *self, const fbk_key *key, const struct iovec *iov, int n)
{
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    cb_gather g = {iov, n};
    return cb_store(self, key, len, cb_gather_fill, &g);
}

typedef struct cb_scatter {
    fbk_place_fn place;
    void *arg;
} cb_scatter;

static int cb_scatter_read(const void *src, size_t len, void *arg)
{
    const cb_scatter *sc = arg;
    struct iovec iov[FBK_PLACE_MAX];
    int n = 0;
    int rc = sc->place(len, iov, &n, sc->arg);
    if (rc)
        return rc;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_len > len - off)
            return fbk_error_set(FBK_EINVAL, 0, "counting: place gave more room than the value");
        memcpy(iov[i].iov_base, (const char *)src + off, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    return off == len ? 0 : fbk_error_set(FBK_EINVAL, 0, "counting: place gave too little room");
}

static int cb_load_into(void *self, const fbk_key *key, size_t hint, fbk_place_fn place,
                        void *arg)
{
    (void)hint;
    cb_scatter sc = {place, arg};
    return cb_load(self, key, cb_scatter_read, &sc);
}

static fbk_backend_ops counting_tables[16];

static void counting_tables_init(void)
{
    for (unsigned f = 0; f < 16; f++) {
        counting_tables[f] = (fbk_backend_ops){
            .version = (f & COUNTING_STORE_MANY_V1) ? 1 : FBK_BACKEND_OPS_VERSION,
            .name = "counting",
            .store = cb_store,
            .load = cb_load,
            .remove = cb_remove,
            .open_location = cb_open_location,
            .close_location = cb_close_location,
            .scan = cb_scan,
            .persist = cb_persist,
            .register_key = cb_register_key,
            .remove_persisted = cb_remove_persisted,
            .sync = cb_sync,
            .close = cb_close,
            .persist_many = (f & COUNTING_BATCH) ? cb_persist_many : NULL,
            .register_many = (f & COUNTING_BATCH) ? cb_register_many : NULL,
            .store_many = (f & (COUNTING_STORE_MANY | COUNTING_STORE_MANY_V1)) ? cb_store_many : NULL,
            .store_iov = (f & COUNTING_IOV) ? cb_store_iov : NULL,
            .load_into = (f & COUNTING_IOV) ? cb_load_into : NULL,
        };
    }
}

const fbk_backend_ops *counting_ops(unsigned flags)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, counting_tables_init);
    return &counting_tables[flags & 15u];
}

int counting_open_flags(fbk_store **out, const fbk_store_options *opts, unsigned flags,
                        counting **cbp)
{
    counting *cb = counting_new();
    if (!cb)
        return FBK_ENOMEM;
    atomic_fetch_add(&cb->refs, 1); /* the store's reference, dropped by close */
    *cbp = cb;
    return fbk_store_open_backend(out, counting_ops(flags), cb, opts);
}

int counting_open(fbk_store **out, const fbk_store_options *opts, counting **cb)
{
    return counting_open_flags(out, opts, 0, cb);
}

/* ------------------------------------------------------------ queries */

unsigned long counting_calls(counting *cb, counting_op op) { return atomic_load(&cb->calls[op]); }

unsigned long counting_total_calls(counting *cb)
{
    unsigned long n = 0;
    for (int i = 0; i < CB_NOPS; i++)
        if (i != CB_CLOSE_LOCATION)
            n += atomic_load(&cb->calls[i]);
    return n;
}

unsigned counting_max_active(counting *cb, counting_op op)
{
    return atomic_load(&cb->max_active[op]);
}

unsigned long counting_close_calls(counting *cb) { return atomic_load(&cb->close_calls); }

unsigned long counting_violations(counting *cb) { return atomic_load(&cb->violations); }

void counting_reset(counting *cb)
{
    pthread_mutex_lock(&cb->mu);
    for (int i = 0; i < CB_NOPS; i++) {
        atomic_store(&cb->calls[i], 0);
        atomic_store(&cb->max_active[i], atomic_load(&cb->active[i]));
    }
    cb->stored.n = 0;
    cb->removed.n = 0;
    pthread_mutex_unlock(&cb->mu);
}

static size_t list_count(counting *cb, keylist *l)
{
    pthread_mutex_lock(&cb->mu);
    size_t n = l->n;
    pthread_mutex_unlock(&cb->mu);
    return n;
}

static int list_key(counting *cb, keylist *l, size_t i, fbk_key *out)
{
    int rc = -1;
    pthread_mutex_lock(&cb->mu);
    if (i < l->n) {
        *out = l->k[i];
        rc = 0;
    }
    pthread_mutex_unlock(&cb->mu);
    return rc;
}

static size_t list_times(counting *cb, keylist *l, const fbk_key *key)
{
    size_t n = 0;
    pthread_mutex_lock(&cb->mu);
    for (size_t i = 0; i < l->n; i++)
        n += fbk_key_equal(&l->k[i], key);
    pthread_mutex_unlock(&cb->mu);
    return n;
}

size_t counting_stored_count(counting *cb) { return list_count(cb, &cb->stored); }
size_t counting_removed_count(counting *cb) { return list_count(cb, &cb->removed); }
int counting_stored_key(counting *cb, size_t i, fbk_key *out)
{
    return list_key(cb, &cb->stored, i, out);
}
int counting_removed_key(counting *cb, size_t i, fbk_key *out)
{
    return list_key(cb, &cb->removed, i, out);
}
size_t counting_times_stored(counting *cb, const fbk_key *key)
{
    return list_times(cb, &cb->stored, key);
}
size_t counting_times_removed(counting *cb, const fbk_key *key)
{
    return list_times(cb, &cb->removed, key);
}

size_t counting_spill_size(counting *cb)
{
    pthread_mutex_lock(&cb->mu);
    size_t n = cb->spill.n;
    pthread_mutex_unlock(&cb->mu);
    return n;
}

int counting_spill_has(counting *cb, const fbk_key *key)
{
    pthread_mutex_lock(&cb->mu);
    int has = map_find(&cb->spill, key) != NULL;
    pthread_mutex_unlock(&cb->mu);
    return has;
}

unsigned char *counting_spill_get(counting *cb, const fbk_key *key, size_t *len)
{
    unsigned char *copy = NULL;
    pthread_mutex_lock(&cb->mu);
    kv *e = map_find(&cb->spill, key);
    if (e) {
        copy = malloc(e->len ? e->len : 1);
        if (copy) {
            memcpy(copy, e->data, e->len);
            *len = e->len;
        }
    }
    pthread_mutex_unlock(&cb->mu);
    return copy;
}

int counting_spill_set(counting *cb, const fbk_key *key, const void *data, size_t len)
{
    int rc = -1;
    pthread_mutex_lock(&cb->mu);
    if (map_find(&cb->spill, key))
        rc = map_put(&cb->spill, key, data, len);
    pthread_mutex_unlock(&cb->mu);
    return rc;
}

int counting_corrupt(counting *cb, const fbk_key *key, size_t offset)
{
    int rc = -1;
    pthread_mutex_lock(&cb->mu);
    kv *e = map_find(&cb->spill, key);
    if (e && offset < e->len) {
        e->data[offset] ^= 0xFF;
        rc = 0;
    }
    pthread_mutex_unlock(&cb->mu);
    return rc;
}

int counting_truncate(counting *cb, const fbk_key *key, size_t len)
{
    int rc = -1;
    pthread_mutex_lock(&cb->mu);
    kv *e = map_find(&cb->spill, key);
    if (e && len <= e->len) {
        e->len = len;
        rc = 0;
    }
    pthread_mutex_unlock(&cb->mu);
    return rc;
}

size_t counting_loc_count(counting *cb, const char *name)
{
    pthread_mutex_lock(&cb->mu);
    cloc *l = loc_get(cb, name, 0);
    size_t n = l ? l->keys.n : 0;
    pthread_mutex_unlock(&cb->mu);
    return n;
}

int counting_loc_has(counting *cb, const char *name, const fbk_key *key)
{
    pthread_mutex_lock(&cb->mu);
    cloc *l = loc_get(cb, name, 0);
    int has = l && map_find(&l->keys, key) != NULL;
    pthread_mutex_unlock(&cb->mu);
    return has;
}

int counting_loc_put(counting *cb, const char *name, const fbk_key *key, const void *data,
                     size_t len)
{
    pthread_mutex_lock(&cb->mu);
    cloc *l = loc_get(cb, name, 1);
    int rc = l ? map_put(&l->keys, key, data, len) : -1;
    pthread_mutex_unlock(&cb->mu);
    return rc;
}

void counting_loc_add_junk(counting *cb, const char *name, unsigned n)
{
    pthread_mutex_lock(&cb->mu);
    cloc *l = loc_get(cb, name, 1);
    if (l)
        l->junk += n;
    pthread_mutex_unlock(&cb->mu);
}

/* ------------------------------------------------------- misbehaviour */

void counting_fail(counting *cb, counting_op op, int code, int n)
{
    pthread_mutex_lock(&cb->mu);
    cb->faults[op].code = code;
    cb->faults[op].n = code ? n : 0;
    pthread_mutex_unlock(&cb->mu);
}

void counting_store_sleep_ms(counting *cb, unsigned ms) { atomic_store(&cb->sleep_ms, ms); }

void counting_gate_close(counting *cb, counting_op op)
{
    pthread_mutex_lock(&cb->mu);
    cb->gate_closed[op] = 1;
    pthread_mutex_unlock(&cb->mu);
}

void counting_gate_open(counting *cb, counting_op op)
{
    pthread_mutex_lock(&cb->mu);
    cb->gate_closed[op] = 0;
    pthread_cond_broadcast(&cb->cv);
    pthread_mutex_unlock(&cb->mu);
}

void counting_gate_wait(counting *cb, counting_op op, unsigned k)
{
    pthread_mutex_lock(&cb->mu);
    while (cb->gate_blocked[op] < k)
        pthread_cond_wait(&cb->cv, &cb->mu);
    pthread_mutex_unlock(&cb->mu);
}

unsigned counting_gate_blocked(counting *cb, counting_op op)
{
    pthread_mutex_lock(&cb->mu);
    unsigned n = cb->gate_blocked[op];
    pthread_mutex_unlock(&cb->mu);
    return n;
}

void counting_wait_closed(counting *cb)
{
    pthread_mutex_lock(&cb->mu);
    while (atomic_load(&cb->close_calls) == 0)
        pthread_cond_wait(&cb->cv, &cb->mu);
    pthread_mutex_unlock(&cb->mu);
}

/* ------------------------------------------------------------ test codec */

static size_t tc_size(const void *obj, void *ctx)
{
    (void)ctx;
    return ((const fbk_blob *)obj)->len;
}

static int tc_encode(const void *obj, void *dst, size_t len, void *ctx)
{
    tc_ctx *c = ctx;
    const fbk_blob *b = obj;
    if (c) {
        atomic_fetch_add(&c->encodes, 1);
        int f = atomic_load(&c->fail_encode);
        if (f)
            return f == 1 ? -1 : f;
    }
    if (len != b->len)
        return -1;
    if (len)
        memcpy(dst, b->data, len);
    return 0;
}

static int tc_decode(const void *src, size_t len, void **out, void *ctx)
{
    tc_ctx *c = ctx;
    if (c) {
        atomic_fetch_add(&c->decodes, 1);
        int f = atomic_load(&c->fail_decode);
        if (f)
            return f == 1 ? -1 : f;
    }
    fbk_blob *b = fbk_blob_new(len ? src : NULL, len);
    if (!b)
        return -1;
    *out = b;
    return 0;
}

static void tc_destroy(void *obj, void *ctx)
{
    tc_ctx *c = ctx;
    if (c)
        atomic_fetch_add(&c->destroys, 1);
    fbk_blob_free(obj);
}

static int tc_clone(const void *obj, void **out, void *ctx)
{
    tc_ctx *c = ctx;
    const fbk_blob *b = obj;
    if (c) {
        atomic_fetch_add(&c->clones, 1);
        if (atomic_load(&c->fail_clone))
            return -1;
    }
    fbk_blob *n = fbk_blob_new(b->len ? b->data : NULL, b->len);
    if (!n)
        return -1;
    *out = n;
    return 0;
}

fbk_codec tc_codec(tc_ctx *ctx, int clone)
{
    fbk_codec c = {
        .size = tc_size,
        .encode = tc_encode,
        .decode = tc_decode,
        .destroy = tc_destroy,
        .clone = clone ? tc_clone : NULL,
        .ctx = ctx,
    };
    return c;
}

/* ------------------------------------------------------------ fixture */

void fx_open(fx *f, size_t mem_items)
{
    counting *cb = NULL;
    f->s = NULL;
    f->p = NULL;
    int rc = counting_open_flags(&f->s, &f->opts, f->flags, &cb);
    cr_assert_eq(rc, 0, "counting_open: %s (%s)", fbk_err_name(rc), fbk_errmsg());
    f->cb = cb;
    fbk_codec c = tc_codec(&f->ctx, 1);
    rc = fbk_pool_create(&f->p, f->s, &c, mem_items);
    cr_assert_eq(rc, 0, "fbk_pool_create: %s (%s)", fbk_err_name(rc), fbk_errmsg());
}

void fx_close(fx *f)
{
    fbk_store_drain(f->s);
    cr_expect_eq(counting_violations(f->cb), 0, "the core broke a backend rule %lu time(s)",
                 counting_violations(f->cb));
    fbk_pool_release(f->p);
    fbk_store_close(f->s);
    counting_free(f->cb);
    f->p = NULL;
    f->s = NULL;
    f->cb = NULL;
}

fbk_handle *tc_insert(fbk_pool *p, size_t len, uint64_t seed)
{
    fbk_blob *b = tu_blob(len, seed);
    fbk_handle *h = NULL;
    int rc = fbk_insert(p, b, &h);
    cr_assert_eq(rc, 0, "fbk_insert: %s (%s)", fbk_err_name(rc), fbk_errmsg());
    cr_assert_not_null(h);
    return h;
}

int tc_check(fbk_handle *h, size_t len, uint64_t seed)
{
    const void *obj = NULL;
    int rc = fbk_load(h, &obj);
    if (rc != 0)
        return rc;
    int ok = tu_blob_check(obj, len, seed);
    fbk_unload(h);
    return ok ? 0 : 1;
}

fbk_key tc_key(const fbk_handle *h)
{
    fbk_key k;
    fbk_handle_key(h, &k);
    return k;
}
