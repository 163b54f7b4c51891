/* mem_backend.c -- the `mem:` backend: everything in process memory.  For
 * tests and as the reference implementation of the backend table.
 *
 * A TEMPLATE: this file includes only libfbk's public headers (fbk.h,
 * fbk_backend.h), libc and pthreads, so a new backend can start as a copy of
 * it.  Its memory comes from the program's allocator table (fbk_malloc...),
 * its scheme entry (mem_scheme, at the end) is what fbk_backend_register()
 * takes for a backend of one's own: rename the scheme, declare its URI
 * parameters, and fbk_store_open("myscheme:ARG?x=1") opens it.
 *
 * "mem:" is private to one store.  "mem:NAME" shares its locations with
 * every store opened as "mem:NAME" in this process, for as long as the
 * process lives, so a test can persist, close, reopen and register. The
 * spill area is always private to the store (emptied at open, as the real
 * backends do). */
#include "fbk_backend.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* ---- a small chained hash table (values by key, bindings by name) ---- */

/* The head of every element of a table: embedded first in the element. */
typedef struct mem_node {
    struct mem_node *next;
    uint64_t hash;
} mem_node;

typedef struct mem_table {
    mem_node **slots;
    size_t cap; /* a power of two, or 0 */
    size_t len;
} mem_table;

/* FNV-1a: keys are random UUIDs, but registered keys and names come from
 * outside, so every byte counts. */
static uint64_t mem_hash(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* Makes room for `extra` more elements, so that that many inserts cannot
 * fail.  FBK_ENOMEM leaves the table as it was. */
static int table_reserve(mem_table *t, size_t extra)
{
    if (t->len + extra <= t->cap)
        return FBK_OK;
    size_t cap = t->cap ? t->cap : 16;
    while (cap < t->len + extra)
        cap *= 2;
    mem_node **slots = fbk_calloc(cap, sizeof *slots);
    if (!slots)
        return FBK_ENOMEM;
    for (size_t i = 0; i < t->cap; i++)
        for (mem_node *n = t->slots[i], *next; n; n = next) {
            next = n->next;
            n->next = slots[n->hash & (cap - 1)];
            slots[n->hash & (cap - 1)] = n;
        }
    fbk_free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return FBK_OK;
}

/* Adds n (n->hash set); call table_reserve first. */
static void table_insert(mem_table *t, mem_node *n)
{
    mem_node **slot = &t->slots[n->hash & (t->cap - 1)];
    n->next = *slot;
    *slot = n;
    t->len++;
}

/* The link that points at the first element with `hash` that match()
 * accepts, or NULL. */
static mem_node **table_find(const mem_table *t, uint64_t hash,
                             bool (*match)(const mem_node *n, const void *arg), const void *arg)
{
    if (!t->cap)
        return NULL;
    for (mem_node **pp = &t->slots[hash & (t->cap - 1)]; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == hash && match(*pp, arg))
            return pp;
    return NULL;
}

/* Unlinks the element *link points at (from table_find) and returns it. */
static mem_node *table_unlink(mem_table *t, mem_node **link)
{
    mem_node *n = *link;
    *link = n->next;
    t->len--;
    return n;
}

/* Frees every element and the slots. */
static void table_free(mem_table *t)
{
    for (size_t i = 0; i < t->cap; i++)
        for (mem_node *n = t->slots[i], *next; n; n = next) {
            next = n->next;
            fbk_free(n);
        }
    fbk_free(t->slots);
    memset(t, 0, sizeof *t);
}

/* ---- the backend's state ---- */

/* One value, in the spill area or in a location. */
typedef struct mem_val {
    mem_node node; /* hash of key */
    fbk_key key;
    size_t len;
    unsigned char data[];
} mem_val;

/* One binding of a location's name index. */
typedef struct mem_name {
    mem_node node; /* hash of name */
    fbk_key key;
    uint64_t size;
    size_t len;
    unsigned char name[];
} mem_name;

typedef struct mem_loc {
    char *name;
    pthread_mutex_t mu;
    mem_table keys;  /* mem_val */
    mem_table names; /* mem_name */
    struct mem_loc *next;
} mem_loc;

typedef struct mem_ns {
    char *name; /* NULL: anonymous */
    pthread_mutex_t mu;
    mem_loc *locs;
    struct mem_ns *next;
} mem_ns;

typedef struct mem_backend {
    bool readonly;
    pthread_mutex_t mu;
    mem_table spill; /* mem_val */
    mem_ns *ns;
} mem_backend;

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static mem_ns *registry; /* named namespaces: live until the process ends */

static char *mem_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = fbk_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static bool val_matches(const mem_node *n, const void *key)
{
    return fbk_key_equal(&((const mem_val *)n)->key, key);
}

/* The value under key in t, or NULL. */
static mem_val *val_get(const mem_table *t, const fbk_key *key)
{
    mem_node **pp = table_find(t, mem_hash(key->bytes, sizeof key->bytes), val_matches, key);
    return pp ? (mem_val *)*pp : NULL;
}

/* Takes the value under key out of t: the caller frees it.  NULL if absent. */
static mem_val *val_take(mem_table *t, const fbk_key *key)
{
    mem_node **pp = table_find(t, mem_hash(key->bytes, sizeof key->bytes), val_matches, key);
    return pp ? (mem_val *)table_unlink(t, pp) : NULL;
}

static mem_val *val_new(const fbk_key *key, size_t len)
{
    mem_val *v = fbk_malloc(sizeof *v + len);
    if (v) {
        v->node.hash = mem_hash(key->bytes, sizeof key->bytes);
        v->key = *key;
        v->len = len;
    }
    return v;
}

static mem_val *val_copy(const mem_val *v)
{
    mem_val *c = val_new(&v->key, v->len);
    if (c)
        memcpy(c->data, v->data, v->len);
    return c;
}

static char *key_text(const fbk_key *key, char buf[FBK_KEY_STRLEN + 1])
{
    fbk_key_format(key, buf);
    return buf;
}

/* Puts v in t (replacing and freeing an older value of its key). */
static int val_put(mem_table *t, mem_val *v)
{
    mem_node **pp = table_find(t, v->node.hash, val_matches, &v->key);
    if (pp) {
        mem_node *old = *pp;
        v->node.next = old->next;
        *pp = &v->node;
        fbk_free(old);
        return FBK_OK;
    }
    if (table_reserve(t, 1))
        return FBK_ENOMEM;
    table_insert(t, &v->node);
    return FBK_OK;
}

static int mem_store(void *self, const fbk_key *key, size_t len, fbk_fill_fn fill, void *arg)
{
    mem_backend *b = self;
    if (len > SIZE_MAX - sizeof(mem_val))
        return fbk_error_set(FBK_ENOSPC, 0, "mem: %zu bytes do not fit in memory", len);
    mem_val *v = val_new(key, len);
    if (!v)
        return fbk_error_set(FBK_ENOMEM, 0, "mem: cannot allocate %zu bytes", len);
    int rc = fill(v->data, len, arg);
    if (rc) {
        fbk_free(v);
        return rc;
    }
    pthread_mutex_lock(&b->mu);
    rc = val_put(&b->spill, v);
    pthread_mutex_unlock(&b->mu);
    if (rc) {
        fbk_free(v);
        return fbk_error_set(FBK_ENOMEM, 0, "mem: cannot grow the spill area");
    }
    return FBK_OK;
}

static int mem_load(void *self, const fbk_key *key, fbk_read_fn read, void *arg)
{
    mem_backend *b = self;
    pthread_mutex_lock(&b->mu);
    mem_val *v = val_get(&b->spill, key);
    pthread_mutex_unlock(&b->mu);
    char t[FBK_KEY_STRLEN + 1];
    if (!v)
        return fbk_error_set(FBK_ENOTFOUND, 0, "mem: %s is not in the spill area",
                             key_text(key, t));
    /* the core never removes a key while it is being loaded: no lock needed */
    return read(v->data, v->len, arg);
}

/* The zero-copy forms (table version 2), as a reference for backend
 * authors: store_iov gathers the segments, load_into scatters the value. */
typedef struct gather {
    const struct iovec *iov;
    int n;
} gather;

static int gather_fill(void *dst, size_t len, void *arg)
{
    const gather *g = arg;
    size_t off = 0;
    for (int i = 0; i < g->n; i++) {
        if (g->iov[i].iov_len > len - off)
            return fbk_error_set(FBK_EINVAL, 0, "mem: segments longer than the value");
        memcpy((char *)dst + off, g->iov[i].iov_base, g->iov[i].iov_len);
        off += g->iov[i].iov_len;
    }
    return FBK_OK;
}

static int mem_store_iov(void *self, const fbk_key *key, const struct iovec *iov, int n)
{
    if (n < 0 || (n > 0 && !iov))
        return fbk_error_set(FBK_EINVAL, 0, "mem: store_iov: bad segment list");
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_len > SIZE_MAX - len)
            return fbk_error_set(FBK_EINVAL, 0, "mem: store_iov: segments too long");
        len += iov[i].iov_len;
    }
    gather g = {iov, n};
    return mem_store(self, key, len, gather_fill, &g);
}

typedef struct scatter {
    fbk_place_fn place;
    void *arg;
} scatter;

static int scatter_read(const void *src, size_t len, void *arg)
{
    const scatter *sc = arg;
    struct iovec iov[FBK_PLACE_MAX];
    int n = 0;
    int rc = sc->place(len, iov, &n, sc->arg);
    if (rc)
        return rc;
    if (n < 0 || n > FBK_PLACE_MAX)
        return fbk_error_set(FBK_EINVAL, 0, "mem: place gave %d segments", n);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_len > len - off)
            return fbk_error_set(FBK_EINVAL, 0, "mem: place gave more room than the value");
        memcpy(iov[i].iov_base, (const char *)src + off, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    return off == len ? FBK_OK : fbk_error_set(FBK_EINVAL, 0, "mem: place gave too little room");
}

static int mem_load_into(void *self, const fbk_key *key, size_t hint, fbk_place_fn place,
                         void *arg)
{
    (void)hint; /* the length is at hand */
    scatter sc = {place, arg};
    return mem_load(self, key, scatter_read, &sc);
}

static int mem_remove(void *self, const fbk_key *key)
{
    mem_backend *b = self;
    pthread_mutex_lock(&b->mu);
    mem_val *v = val_take(&b->spill, key);
    pthread_mutex_unlock(&b->mu);
    char t[FBK_KEY_STRLEN + 1];
    if (!v)
        return fbk_error_set(FBK_ENOTFOUND, 0, "mem: %s is not in the spill area",
                             key_text(key, t));
    fbk_free(v);
    return FBK_OK;
}

static int mem_open_location(void *self, const char *location, void **out)
{
    mem_backend *b = self;
    if (!location)
        return fbk_error_set(FBK_EINVAL, 0, "mem: location name is NULL");
    pthread_mutex_lock(&b->ns->mu);
    mem_loc *l = b->ns->locs;
    while (l && strcmp(l->name, location) != 0)
        l = l->next;
    if (!l && b->readonly) {
        pthread_mutex_unlock(&b->ns->mu);
        return fbk_error_set(FBK_ENOTFOUND, 0,
                             "mem: location \"%s\" does not exist (read-only store)", location);
    }
    if (!l) {
        l = fbk_calloc(1, sizeof *l);
        char *name = mem_strdup(location);
        if (!l || !name) {
            fbk_free(l);
            fbk_free(name);
            pthread_mutex_unlock(&b->ns->mu);
            return fbk_error_set(FBK_ENOMEM, 0, "mem: cannot allocate location \"%s\"", location);
        }
        l->name = name;
        pthread_mutex_init(&l->mu, NULL);
        l->next = b->ns->locs;
        b->ns->locs = l;
    }
    pthread_mutex_unlock(&b->ns->mu);
    *out = l;
    return FBK_OK;
}

static void mem_close_location(void *self, void *loc)
{
    (void)self;
    (void)loc; /* locations live as long as their namespace */
}

static int mem_scan(void *self, void *loc, fbk_key_fn each, void *arg)
{
    (void)self;
    mem_loc *l = loc;
    pthread_mutex_lock(&l->mu);
    size_t n = l->keys.len, k = 0;
    fbk_key *keys = fbk_calloc(n ? n : 1, sizeof *keys);
    for (size_t i = 0; keys && i < l->keys.cap; i++)
        for (mem_node *e = l->keys.slots[i]; e; e = e->next)
            keys[k++] = ((mem_val *)e)->key;
    pthread_mutex_unlock(&l->mu);
    if (!keys)
        return fbk_error_set(FBK_ENOMEM, 0, "mem: scan cannot allocate %zu keys", n);
    int rc = FBK_OK;
    for (size_t i = 0; i < k && rc == FBK_OK; i++)
        rc = each(&keys[i], arg);
    fbk_free(keys);
    return rc < 0 ? rc : 0; /* nothing is ever junk here */
}

/* Copies key from map `from` (under from_mu) into map `to` (under to_mu). */
static int copy_between(pthread_mutex_t *from_mu, mem_table *from, pthread_mutex_t *to_mu,
                        mem_table *to, const fbk_key *key, const char *what)
{
    char t[FBK_KEY_STRLEN + 1];
    pthread_mutex_lock(from_mu);
    mem_val *v = val_get(from, key);
    mem_val *c = v ? val_copy(v) : NULL;
    pthread_mutex_unlock(from_mu);
    if (!v)
        return fbk_error_set(FBK_ENOTFOUND, 0, "mem: %s: %s not found", what, key_text(key, t));
    if (!c)
        return fbk_error_set(FBK_ENOMEM, 0, "mem: %s: out of memory", what);
    pthread_mutex_lock(to_mu);
    int rc = val_put(to, c);
    pthread_mutex_unlock(to_mu);
    if (rc) {
        fbk_free(c);
        return fbk_error_set(FBK_ENOMEM, 0, "mem: %s: out of memory", what);
    }
    return FBK_OK;
}

static int mem_persist(void *self, void *loc, const fbk_key *key)
{
    mem_backend *b = self;
    mem_loc *l = loc;
    return copy_between(&b->mu, &b->spill, &l->mu, &l->keys, key, "persist");
}

static int mem_register(void *self, void *loc, const fbk_key *key)
{
    mem_backend *b = self;
    mem_loc *l = loc;
    return copy_between(&l->mu, &l->keys, &b->mu, &b->spill, key, "register");
}

static int mem_remove_persisted(void *self, void *loc, const fbk_key *key)
{
    (void)self;
    mem_loc *l = loc;
    pthread_mutex_lock(&l->mu);
    mem_val *v = val_take(&l->keys, key);
    pthread_mutex_unlock(&l->mu);
    char t[FBK_KEY_STRLEN + 1];
    if (!v)
        return fbk_error_set(FBK_ENOTFOUND, 0, "mem: %s is not in location \"%s\"",
                             key_text(key, t), l->name);
    fbk_free(v);
    return FBK_OK;
}

static int mem_sync(void *self, void *loc)
{
    (void)self;
    (void)loc;
    return FBK_OK; /* memory is as durable as it gets */
}

/* ---- the name index (version 4) ---- */

typedef struct name_ref {
    const void *name;
    size_t len;
} name_ref;

static bool name_matches(const mem_node *n, const void *arg)
{
    const mem_name *e = (const mem_name *)n;
    const name_ref *r = arg;
    return e->len == r->len && memcmp(e->name, r->name, r->len) == 0;
}

/* The link that points at name's binding, or NULL. */
static mem_node **name_slot(mem_loc *l, const void *name, size_t len)
{
    name_ref r = {name, len};
    return table_find(&l->names, mem_hash(name, len), name_matches, &r);
}

static int mem_name_get(void *self, void *loc, const void *name, size_t len, fbk_key *key,
                        uint64_t *size)
{
    (void)self;
    mem_loc *l = loc;
    pthread_mutex_lock(&l->mu);
    mem_node **pp = name_slot(l, name, len);
    mem_name *n = pp ? (mem_name *)*pp : NULL;
    if (n) {
        *key = n->key;
        *size = n->size;
    }
    pthread_mutex_unlock(&l->mu);
    return n ? FBK_OK
             : fbk_error_set(FBK_ENOTFOUND, 0, "mem: name not bound in location \"%s\"",
                             l->name);
}

static int mem_name_scan(void *self, void *loc, fbk_binding_fn each, void *arg)
{
    (void)self;
    mem_loc *l = loc;
    /* a copy, so that each() runs without the lock */
    pthread_mutex_lock(&l->mu);
    size_t n = l->names.len;
    mem_name **copy = fbk_calloc(n ? n : 1, sizeof *copy);
    size_t k = 0;
    for (size_t i = 0; copy && i < l->names.cap; i++)
        for (mem_node *nd = l->names.slots[i]; nd; nd = nd->next) {
            const mem_name *e = (const mem_name *)nd;
            if (!(copy[k] = fbk_malloc(sizeof *e + e->len)))
                goto oom;
            memcpy(copy[k++], e, sizeof *e + e->len);
        }
oom:
    pthread_mutex_unlock(&l->mu);
    int rc = copy && k == n ? FBK_OK
                            : fbk_error_set(FBK_ENOMEM, 0, "mem: name scan: out of memory");
    for (size_t i = 0; i < k; i++) {
        if (rc == FBK_OK)
            rc = each(copy[i]->name, copy[i]->len, &copy[i]->key, copy[i]->size, arg);
        fbk_free(copy[i]);
    }
    fbk_free(copy);
    return rc;
}

/* Applies one change with l->mu held and room for one more binding made. */
static void name_apply_one(mem_loc *l, const fbk_name_op *op, mem_name *fresh)
{
    mem_node **pp = name_slot(l, op->name, op->len);
    mem_name *old = pp ? (mem_name *)*pp : NULL;
    if (!op->key) {
        if (old)
            fbk_free(table_unlink(&l->names, pp));
        fbk_free(fresh);
    } else if (old) {
        old->key = *op->key;
        old->size = op->size;
        fbk_free(fresh);
    } else {
        fresh->node.hash = mem_hash(op->name, op->len);
        fresh->key = *op->key;
        fresh->size = op->size;
        fresh->len = op->len;
        memcpy(fresh->name, op->name, op->len);
        table_insert(&l->names, &fresh->node);
    }
}

static int mem_name_apply(void *self, void *loc, const fbk_name_op *ops, size_t n)
{
    (void)self;
    mem_loc *l = loc;
    /* all or none: every binding's memory is allocated, and room in the
     * table made, before the first change */
    mem_name **fresh = fbk_calloc(n ? n : 1, sizeof *fresh);
    int rc = fresh ? FBK_OK : FBK_ENOMEM;
    for (size_t i = 0; i < n && rc == FBK_OK; i++)
        if (ops[i].key && !(fresh[i] = fbk_malloc(sizeof *fresh[i] + ops[i].len)))
            rc = FBK_ENOMEM;
    pthread_mutex_lock(&l->mu);
    if (rc == FBK_OK)
        rc = table_reserve(&l->names, n);
    for (size_t i = 0; i < n && rc == FBK_OK; i++)
        if (ops[i].key && !val_get(&l->keys, ops[i].key)) {
            char t[FBK_KEY_STRLEN + 1];
            rc = fbk_error_set(FBK_EINVAL, 0,
                               "mem: name bound to %s, which location \"%s\" does not hold",
                               key_text(ops[i].key, t), l->name);
        }
    for (size_t i = 0; i < n && rc == FBK_OK; i++) {
        name_apply_one(l, &ops[i], fresh[i]);
        fresh[i] = NULL;
    }
    pthread_mutex_unlock(&l->mu);
    for (size_t i = 0; fresh && i < n; i++)
        fbk_free(fresh[i]);
    fbk_free(fresh);
    return rc == FBK_ENOMEM ? fbk_error_set(FBK_ENOMEM, 0, "mem: name index: out of memory") : rc;
}

static int mem_contains(void *self, void *loc, const fbk_key *key)
{
    (void)self;
    mem_loc *l = loc;
    pthread_mutex_lock(&l->mu);
    int yes = val_get(&l->keys, key) != NULL;
    pthread_mutex_unlock(&l->mu);
    return yes;
}

static void ns_free(mem_ns *ns)
{
    mem_loc *l = ns->locs;
    while (l) {
        mem_loc *next = l->next;
        table_free(&l->keys);
        table_free(&l->names);
        pthread_mutex_destroy(&l->mu);
        fbk_free(l->name);
        fbk_free(l);
        l = next;
    }
    pthread_mutex_destroy(&ns->mu);
    fbk_free(ns->name);
    fbk_free(ns);
}

static void mem_close(void *self)
{
    mem_backend *b = self;
    if (!b)
        return;
    table_free(&b->spill);
    if (!b->ns->name)
        ns_free(b->ns);
    pthread_mutex_destroy(&b->mu);
    fbk_free(b);
}

static const fbk_backend_ops mem_ops = {
    .version = FBK_BACKEND_OPS_VERSION,
    .name = "mem",
    .store = mem_store,
    .load = mem_load,
    .remove = mem_remove,
    .open_location = mem_open_location,
    .close_location = mem_close_location,
    .scan = mem_scan,
    .persist = mem_persist,
    .register_key = mem_register,
    .remove_persisted = mem_remove_persisted,
    .sync = mem_sync,
    .close = mem_close,
    .persist_many = NULL,
    .register_many = NULL,
    .store_iov = mem_store_iov,
    .load_into = mem_load_into,
    .workers = 0, /* the core's default */
    .name_get = mem_name_get,
    .name_scan = mem_name_scan,
    .name_apply = mem_name_apply,
    .contains = mem_contains,
};

static mem_ns *ns_new(const char *name)
{
    mem_ns *ns = fbk_calloc(1, sizeof *ns);
    if (!ns)
        return NULL;
    if (name && !(ns->name = mem_strdup(name))) {
        fbk_free(ns);
        return NULL;
    }
    pthread_mutex_init(&ns->mu, NULL);
    return ns;
}

int fbk_backend_mem_create(const char *arg, const fbk_store_options *opts,
                           const fbk_backend_ops **ops, void **self)
{
    if (!ops || !self)
        return fbk_error_set(FBK_EINVAL, 0, "fbk_backend_mem_create: NULL argument");
    mem_backend *b = fbk_calloc(1, sizeof *b);
    if (!b)
        return fbk_error_set(FBK_ENOMEM, 0, "mem: cannot allocate the backend");
    if (arg && *arg) {
        pthread_mutex_lock(&registry_mu);
        mem_ns *ns = registry;
        while (ns && strcmp(ns->name, arg) != 0)
            ns = ns->next;
        if (!ns && (ns = ns_new(arg))) {
            ns->next = registry;
            registry = ns;
        }
        pthread_mutex_unlock(&registry_mu);
        b->ns = ns;
    } else {
        b->ns = ns_new(NULL);
    }
    if (!b->ns) {
        fbk_free(b);
        return fbk_error_set(FBK_ENOMEM, 0, "mem: cannot allocate the namespace");
    }
    pthread_mutex_init(&b->mu, NULL);
    b->readonly = opts && (opts->flags & FBK_STORE_READONLY);
    *ops = &mem_ops;
    *self = b;
    return FBK_OK;
}

/* The mem: scheme: how fbk_store_open finds this backend ("mem:" or
 * "mem:NAME").  A backend of one's own declares its URI parameters here
 * (fbk_backend_param) and reads them in create with
 * fbk_backend_params_get; mem: takes none. */
static int mem_scheme_create(void *ctx, const char *arg, const fbk_backend_params *params,
                             const fbk_store_options *opts, const fbk_backend_ops **ops,
                             void **self)
{
    (void)ctx;
    (void)params;
    return fbk_backend_mem_create(arg, opts, ops, self);
}

const fbk_backend_scheme fbk__mem_scheme = {
    .version = FBK_BACKEND_SCHEME_VERSION,
    .scheme = "mem",
    .params = NULL,
    .flags = 0, /* "mem:" alone is a private store */
    .create = mem_scheme_create,
};
