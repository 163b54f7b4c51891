/* mem_backend.c -- the `mem:` backend: everything in process memory.  For
 * tests and as the reference implementation of the backend table.
 *
 * "mem:" is private to one store.  "mem:NAME" shares its locations with
 * every store opened as "mem:NAME" in this process, for as long as the
 * process lives, so a test can persist, close, reopen and register. The
 * spill area is always private to the store (emptied at open, as the real
 * backends do). */
#include "fbk_backend.h"
#include "keymap.h"

#include <pthread.h>
#include <stdbool.h>
#include <xxhash.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct mem_val {
    size_t len;
    unsigned char data[];
} mem_val;

/* One binding of a location's name index (chained by name hash). */
typedef struct mem_name {
    struct mem_name *next;
    fbk_key key;
    uint64_t size;
    size_t len;
    unsigned char name[];
} mem_name;

typedef struct mem_loc {
    char *name;
    pthread_mutex_t mu;
    fbk__keymap keys;  /* key -> mem_val */
    fbk__keymap names; /* XXH3-128 of the name -> mem_name chain */
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
    fbk__keymap spill; /* key -> mem_val */
    mem_ns *ns;
} mem_backend;

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static mem_ns *registry; /* named namespaces: live until the process ends */

static mem_val *val_copy(const mem_val *v)
{
    mem_val *c = fbk__malloc(sizeof *c + v->len);
    if (c) {
        c->len = v->len;
        memcpy(c->data, v->data, v->len);
    }
    return c;
}

static void map_free_vals(fbk__keymap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->used[i])
            fbk__free(m->vals[i]);
    fbk__keymap_free(m);
}

static char *key_text(const fbk_key *key, char buf[FBK_KEY_STRLEN + 1])
{
    fbk_key_format(key, buf);
    return buf;
}

/* Puts v under key in m (replacing and freeing an older value). */
static int map_put(fbk__keymap *m, const fbk_key *key, mem_val *v)
{
    void **slot = fbk__keymap_get(m, key);
    if (slot) {
        fbk__free(*slot);
        *slot = v;
        return FBK_OK;
    }
    return fbk__keymap_put(m, key, v);
}

static int mem_store(void *self, const fbk_key *key, size_t len, fbk_fill_fn fill, void *arg)
{
    mem_backend *b = self;
    if (len > SIZE_MAX - sizeof(mem_val))
        return fbk_error_set(FBK_ENOSPC, 0, "mem: %zu bytes do not fit in memory", len);
    mem_val *v = fbk__malloc(sizeof *v + len);
    if (!v)
        return fbk_error_set(FBK_ENOMEM, 0, "mem: cannot allocate %zu bytes", len);
    v->len = len;
    int rc = fill(v->data, len, arg);
    if (rc) {
        fbk__free(v);
        return rc;
    }
    pthread_mutex_lock(&b->mu);
    rc = map_put(&b->spill, key, v);
    pthread_mutex_unlock(&b->mu);
    if (rc) {
        fbk__free(v);
        return fbk_error_set(FBK_ENOMEM, 0, "mem: cannot grow the spill area");
    }
    return FBK_OK;
}

static int mem_load(void *self, const fbk_key *key, fbk_read_fn read, void *arg)
{
    mem_backend *b = self;
    pthread_mutex_lock(&b->mu);
    void **slot = fbk__keymap_get(&b->spill, key);
    mem_val *v = slot ? *slot : NULL;
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
    void **slot = fbk__keymap_get(&b->spill, key);
    mem_val *v = slot ? *slot : NULL;
    if (v)
        fbk__keymap_del(&b->spill, key);
    pthread_mutex_unlock(&b->mu);
    char t[FBK_KEY_STRLEN + 1];
    if (!v)
        return fbk_error_set(FBK_ENOTFOUND, 0, "mem: %s is not in the spill area",
                             key_text(key, t));
    fbk__free(v);
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
        l = fbk__calloc(1, sizeof *l);
        char *name = fbk__strdup(location);
        if (!l || !name) {
            fbk__free(l);
            fbk__free(name);
            pthread_mutex_unlock(&b->ns->mu);
            return fbk_error_set(FBK_ENOMEM, 0, "mem: cannot allocate location \"%s\"", location);
        }
        l->name = name;
        pthread_mutex_init(&l->mu, NULL);
        fbk__keymap_init(&l->keys);
        fbk__keymap_init(&l->names);
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
    fbk_key *keys = fbk__malloc((n ? n : 1) * sizeof *keys);
    if (keys)
        for (size_t i = 0; i < l->keys.cap; i++)
            if (l->keys.used[i])
                keys[k++] = l->keys.keys[i];
    pthread_mutex_unlock(&l->mu);
    if (!keys)
        return fbk_error_set(FBK_ENOMEM, 0, "mem: scan cannot allocate %zu keys", n);
    int rc = FBK_OK;
    for (size_t i = 0; i < k && rc == FBK_OK; i++)
        rc = each(&keys[i], arg);
    fbk__free(keys);
    return rc < 0 ? rc : 0; /* nothing is ever junk here */
}

/* Copies key from map `from` (under from_mu) into map `to` (under to_mu). */
static int copy_between(pthread_mutex_t *from_mu, fbk__keymap *from, pthread_mutex_t *to_mu,
                        fbk__keymap *to, const fbk_key *key, const char *what)
{
    char t[FBK_KEY_STRLEN + 1];
    pthread_mutex_lock(from_mu);
    void **slot = fbk__keymap_get(from, key);
    mem_val *c = slot ? val_copy(*slot) : NULL;
    pthread_mutex_unlock(from_mu);
    if (!slot)
        return fbk_error_set(FBK_ENOTFOUND, 0, "mem: %s: %s not found", what, key_text(key, t));
    if (!c)
        return fbk_error_set(FBK_ENOMEM, 0, "mem: %s: out of memory", what);
    pthread_mutex_lock(to_mu);
    int rc = map_put(to, key, c);
    pthread_mutex_unlock(to_mu);
    if (rc) {
        fbk__free(c);
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
    void **slot = fbk__keymap_get(&l->keys, key);
    mem_val *v = slot ? *slot : NULL;
    if (v)
        fbk__keymap_del(&l->keys, key);
    pthread_mutex_unlock(&l->mu);
    char t[FBK_KEY_STRLEN + 1];
    if (!v)
        return fbk_error_set(FBK_ENOTFOUND, 0, "mem: %s is not in location \"%s\"",
                             key_text(key, t), l->name);
    fbk__free(v);
    return FBK_OK;
}

static int mem_sync(void *self, void *loc)
{
    (void)self;
    (void)loc;
    return FBK_OK; /* memory is as durable as it gets */
}

/* ---- the name index (version 4) ---- */

static fbk_key name_hash(const void *name, size_t len)
{
    XXH128_hash_t h = XXH3_128bits(name, len);
    fbk_key k;
    memcpy(k.bytes, &h.low64, 8);
    memcpy(k.bytes + 8, &h.high64, 8);
    return k;
}

/* The link that points at name's binding (or at the chain's NULL end). */
static mem_name **name_slot(mem_loc *l, const void *name, size_t len)
{
    fbk_key h = name_hash(name, len);
    void **slot = fbk__keymap_get(&l->names, &h);
    if (!slot)
        return NULL;
    mem_name **pp = (mem_name **)slot;
    while (*pp && ((*pp)->len != len || memcmp((*pp)->name, name, len) != 0))
        pp = &(*pp)->next;
    return pp;
}

static int mem_name_get(void *self, void *loc, const void *name, size_t len, fbk_key *key,
                        uint64_t *size)
{
    (void)self;
    mem_loc *l = loc;
    pthread_mutex_lock(&l->mu);
    mem_name **pp = name_slot(l, name, len);
    mem_name *n = pp ? *pp : NULL;
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
    size_t n = 0;
    for (size_t i = 0; i < l->names.cap; i++)
        if (l->names.used[i])
            for (mem_name *e = l->names.vals[i]; e; e = e->next)
                n++;
    mem_name **copy = fbk__calloc(n ? n : 1, sizeof *copy);
    size_t k = 0;
    for (size_t i = 0; copy && i < l->names.cap; i++)
        if (l->names.used[i])
            for (mem_name *e = l->names.vals[i]; e; e = e->next) {
                if (!(copy[k] = fbk__malloc(sizeof *e + e->len)))
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
        fbk__free(copy[i]);
    }
    fbk__free(copy);
    return rc;
}

/* Applies one change with l->mu held. */
static int name_apply_one(mem_loc *l, const fbk_name_op *op)
{
    mem_name **pp = name_slot(l, op->name, op->len);
    mem_name *old = pp ? *pp : NULL;
    if (!op->key) {
        if (old) {
            *pp = old->next;
            fbk__free(old);
            fbk_key h = name_hash(op->name, op->len);
            void **slot = fbk__keymap_get(&l->names, &h);
            if (!*slot)
                fbk__keymap_del(&l->names, &h);
        }
        return FBK_OK;
    }
    if (old) {
        old->key = *op->key;
        old->size = op->size;
        return FBK_OK;
    }
    mem_name *e = fbk__malloc(sizeof *e + op->len);
    if (!e)
        return FBK_ENOMEM;
    e->key = *op->key;
    e->size = op->size;
    e->len = op->len;
    memcpy(e->name, op->name, op->len);
    fbk_key h = name_hash(op->name, op->len);
    void **slot = fbk__keymap_get(&l->names, &h);
    e->next = slot ? *slot : NULL;
    if (slot) {
        *slot = e;
    } else if (fbk__keymap_put(&l->names, &h, e) != FBK_OK) {
        fbk__free(e);
        return FBK_ENOMEM;
    }
    return FBK_OK;
}

static int mem_name_apply(void *self, void *loc, const fbk_name_op *ops, size_t n)
{
    (void)self;
    mem_loc *l = loc;
    pthread_mutex_lock(&l->mu);
    /* all or none: every key bound must be there, and room for every
     * binding is made before the first change */
    int rc = fbk__keymap_reserve(&l->names, n);
    for (size_t i = 0; i < n && rc == FBK_OK; i++)
        if (ops[i].key && !fbk__keymap_get(&l->keys, ops[i].key)) {
            char t[FBK_KEY_STRLEN + 1];
            pthread_mutex_unlock(&l->mu);
            return fbk_error_set(FBK_EINVAL, 0, "mem: name bound to %s, which location \"%s\" "
                                 "does not hold", key_text(ops[i].key, t), l->name);
        }
    for (size_t i = 0; i < n && rc == FBK_OK; i++)
        rc = name_apply_one(l, &ops[i]);
    pthread_mutex_unlock(&l->mu);
    return rc ? fbk_error_set(FBK_ENOMEM, 0, "mem: name index: out of memory") : FBK_OK;
}

static int mem_contains(void *self, void *loc, const fbk_key *key)
{
    (void)self;
    mem_loc *l = loc;
    pthread_mutex_lock(&l->mu);
    int yes = fbk__keymap_get(&l->keys, key) != NULL;
    pthread_mutex_unlock(&l->mu);
    return yes;
}

static void names_free(fbk__keymap *names)
{
    for (size_t i = 0; i < names->cap; i++)
        if (names->used[i])
            for (mem_name *e = names->vals[i], *next; e; e = next) {
                next = e->next;
                fbk__free(e);
            }
    fbk__keymap_free(names);
}

static void ns_free(mem_ns *ns)
{
    mem_loc *l = ns->locs;
    while (l) {
        mem_loc *next = l->next;
        map_free_vals(&l->keys);
        names_free(&l->names);
        pthread_mutex_destroy(&l->mu);
        fbk__free(l->name);
        fbk__free(l);
        l = next;
    }
    pthread_mutex_destroy(&ns->mu);
    fbk__free(ns->name);
    fbk__free(ns);
}

static void mem_close(void *self)
{
    mem_backend *b = self;
    if (!b)
        return;
    map_free_vals(&b->spill);
    if (!b->ns->name)
        ns_free(b->ns);
    pthread_mutex_destroy(&b->mu);
    fbk__free(b);
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
    mem_ns *ns = fbk__calloc(1, sizeof *ns);
    if (!ns)
        return NULL;
    if (name && !(ns->name = fbk__strdup(name))) {
        fbk__free(ns);
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
    mem_backend *b = fbk__calloc(1, sizeof *b);
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
        fbk__free(b);
        return fbk_error_set(FBK_ENOMEM, 0, "mem: cannot allocate the namespace");
    }
    pthread_mutex_init(&b->mu, NULL);
    fbk__keymap_init(&b->spill);
    b->readonly = opts && (opts->flags & FBK_STORE_READONLY);
    *ops = &mem_ops;
    *self = b;
    return FBK_OK;
}
