/* rados_backend.c -- the rados: backend: a local spill area, durable
 * locations in a Ceph (RADOS) pool.
 *
 *   rados:DIR?pool=POOL[&conf=PATH][&client=NAME][&spill=lmdb|file][&timeout=S]
 *
 * The spill area is an inner lmdb: (default) or file: backend in DIR; every
 * spill operation is handed to it.  A location is a RADOS namespace of POOL
 * (the location's name); a persisted key is one object named by the key's 32
 * hex digits holding the framed value, or -- above the stripe size -- a head
 * object under that name naming the stripes that hold the value
 * (docs/rados-backend.md).  Persist reads the value from the spill area and
 * queues one asynchronous write_full; sync waits for all of them (the first
 * failure wins); register reads the object into the spill area.
 *
 * Here: errors, the spill area, opening and closing locations, the table,
 * the URI's parameters and the connection to the cluster.  The rest:
 * rados_write.c (persist, sync), rados_read.c (register, contains, scan),
 * rados_remove.c, rados_stripe.c (striped values), rados_names.c (the name
 * index), rados_refs.c (orphans). */
#include "rados_internal.h"

#include "fbk_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ errors */

int fbk__rados_fail(const rados_loc *l, int r, const char *fmt, ...)
{
    char what[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    int e = r < 0 ? -r : r;
    int code = e == ETIMEDOUT ? FBK_ETIMEDOUT
               : e == ENOENT  ? FBK_ENOTFOUND
               : (e == ENOSPC || e == EDQUOT) ? FBK_ENOSPC
               : e == ENOMEM  ? FBK_ENOMEM
               : (e == EINVAL || e == ENAMETOOLONG || e == E2BIG || e == EFBIG) ? FBK_EINVAL
                                                                               : FBK_EIO;
    if (code == FBK_ETIMEDOUT)
        return fbk_error_set(code, e,
                             "rados: %s (pool %s, namespace \"%s\"): the cluster did not answer "
                             "within %u s (the URI's timeout=%u); the store works again once "
                             "it answers",
                             what, l->b->pool, l->name, l->b->timeout, l->b->timeout);
    return fbk_error_set(code, e, "rados: %s (pool %s, namespace \"%s\"): %s", what, l->b->pool,
                         l->name, strerror(e));
}

/* ------------------------------------------------------- the spill area */

static int rb_store(void *self, const fbk_key *key, size_t len, fbk_fill_fn fill, void *arg)
{
    rados_backend *b = self;
    return b->inner->store(b->inner_self, key, len, fill, arg);
}

static int rb_load(void *self, const fbk_key *key, fbk_read_fn read, void *arg)
{
    rados_backend *b = self;
    return b->inner->load(b->inner_self, key, read, arg);
}

static int rb_remove(void *self, const fbk_key *key)
{
    rados_backend *b = self;
    return b->inner->remove(b->inner_self, key);
}

static int rb_store_many(void *self, fbk_store_req *reqs, size_t n)
{
    rados_backend *b = self;
    return b->inner->store_many(b->inner_self, reqs, n);
}

static int rb_store_iov(void *self, const fbk_key *key, const struct iovec *iov, int n)
{
    rados_backend *b = self;
    return b->inner->store_iov(b->inner_self, key, iov, n);
}

static int rb_load_into(void *self, const fbk_key *key, size_t hint, fbk_place_fn place, void *arg)
{
    rados_backend *b = self;
    return b->inner->load_into(b->inner_self, key, hint, place, arg);
}

/* ------------------------------------------------------------ locations */

static void loc_free(rados_loc *l)
{
    if (l->io)
        rados_ioctx_destroy(l->io);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l->pend);
    free(l->tombs);
    free(l->name);
    free(l);
}

static int rb_open_location(void *self, const char *location, void **out)
{
    rados_backend *b = self;
    if (!location || !*location || strlen(location) > 1024)
        return fbk_error_set(FBK_EINVAL, 0,
                             "rados: a location name must be 1 to 1024 bytes (a namespace of "
                             "pool %s)",
                             b->pool);
    rados_loc *l = calloc(1, sizeof *l);
    if (!l || !(l->name = strdup(location))) {
        free(l);
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "rados: open location \"%s\": out of memory",
                             location);
    }
    l->b = b;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    int r = rados_ioctx_create(b->cluster, b->pool, &l->io);
    if (r < 0) {
        l->io = NULL;
        int rc = fbk__rados_fail(l, r, "open location");
        loc_free(l);
        return rc;
    }
    rados_ioctx_set_namespace(l->io, location);
    /* a writer completes the references of an index from before them */
    int rc = b->readonly ? FBK_OK : fbk__rados_names_open(l);
    if (rc) {
        loc_free(l);
        return rc;
    }
    *out = l;
    return FBK_OK;
}

static void rb_close_location(void *self, void *loc)
{
    (void)self;
    rados_loc *l = loc;
    fbk__rados_pending_close(l);
    fbk__rados_names_close(l);
    loc_free(l);
}

/* ------------------------------------------------------------ the table */

static void rb_close(void *self)
{
    rados_backend *b = self;
    if (b->inner)
        b->inner->close(b->inner_self);
    if (b->cluster)
        rados_shutdown(b->cluster);
    free(b->pool);
    free(b);
}

static const fbk_backend_ops rados_template = {
    .version = FBK_BACKEND_OPS_VERSION,
    .name = "rados",
    .store = rb_store,
    .load = rb_load,
    .remove = rb_remove,
    .open_location = rb_open_location,
    .close_location = rb_close_location,
    .scan = fbk__rados_scan,
    .persist = fbk__rados_persist,
    .register_key = fbk__rados_register_key,
    .remove_persisted = fbk__rados_remove_persisted,
    .sync = fbk__rados_sync,
    .close = rb_close,
    .persist_many = fbk__rados_persist_many,
    .register_many = fbk__rados_register_many,
    .store_many = rb_store_many,
    .store_iov = rb_store_iov,
    .load_into = rb_load_into,
    .name_get = fbk__rados_name_get,
    .name_scan = fbk__rados_name_scan,
    .name_apply = fbk__rados_name_apply,
    .contains = fbk__rados_contains,
    .remove_unbound = fbk__rados_remove_unbound,
    .remove_unbound_many = fbk__rados_remove_unbound_many,
};

/* One table per kind of spill area: the template without the optional spill
 * members the inner table lacks (so that the core takes its own paths),
 * built by the first constructor of each kind. */
static fbk_backend_ops table_lmdb, table_file;
static bool built_lmdb, built_file;
static pthread_mutex_t tables_mu = PTHREAD_MUTEX_INITIALIZER;

static const fbk_backend_ops *table_for(bool file, const fbk_backend_ops *inner)
{
    fbk_backend_ops *t = file ? &table_file : &table_lmdb;
    bool *built = file ? &built_file : &built_lmdb;
    pthread_mutex_lock(&tables_mu);
    if (!*built) {
        *t = rados_template;
        bool v2 = inner->version >= 2;
        if (!v2 || !inner->store_many)
            t->store_many = NULL;
        if (!v2 || !inner->store_iov)
            t->store_iov = NULL;
        if (!v2 || !inner->load_into)
            t->load_into = NULL;
        t->workers = inner->version >= 3 ? inner->workers : 0;
        *built = true;
    }
    pthread_mutex_unlock(&tables_mu);
    return t;
}

/* value of parameter key (NULL when the URI did not give it) */
static const char *param(const fbk_backend_params *params, const char *key)
{
    const char *v = NULL;
    fbk_backend_params_get(params, key, &v, NULL);
    return v;
}

static int connect_cluster(rados_backend *b, const char *conf, const char *client)
{
    rados_loc fake = {.b = b, .name = ""};
    int r = client && strncmp(client, "client.", 7) == 0
                ? rados_create2(&b->cluster, "ceph", client, 0)
                : rados_create(&b->cluster, client);
    if (r < 0) {
        b->cluster = NULL;
        return fbk__rados_fail(&fake, r, "create a cluster handle for client %s",
                               client ? client : "admin");
    }
    r = rados_conf_read_file(b->cluster, conf);
    if (r < 0 && conf)
        return fbk_error_set(r == -ENOENT ? FBK_EINVAL : FBK_EIO, -r,
                             "rados: cannot read the Ceph configuration %s: %s", conf,
                             strerror(-r));
    rados_conf_parse_env(b->cluster, NULL);
    char t[16];
    snprintf(t, sizeof t, "%u", b->timeout);
    rados_conf_set(b->cluster, "rados_osd_op_timeout", t);
    rados_conf_set(b->cluster, "rados_mon_op_timeout", t);
    rados_conf_set(b->cluster, "client_mount_timeout", t);
    r = rados_connect(b->cluster);
    if (r < 0)
        return fbk__rados_fail(&fake, r, "connect to the cluster (configuration %s)",
                               conf ? conf : "default");
    int64_t id = rados_pool_lookup(b->cluster, b->pool);
    if (id < 0)
        return id == -ENOENT ? fbk_error_set(FBK_EINVAL, ENOENT,
                                             "rados: pool %s does not exist in the cluster",
                                             b->pool)
                             : fbk__rados_fail(&fake, (int)id, "look up the pool");
    /* one write may not exceed osd_max_write_size (MB) nor an object
     * osd_max_object_size: stripes stay within both */
    b->stripe = RB_STRIPE_MAX;
    char v[64];
    if (rados_conf_get(b->cluster, "osd_max_write_size", v, sizeof v) == 0) {
        unsigned long long mb = strtoull(v, NULL, 10);
        if (mb && (mb << 20) < b->stripe)
            b->stripe = (size_t)(mb << 20);
    }
    if (rados_conf_get(b->cluster, "osd_max_object_size", v, sizeof v) == 0) {
        unsigned long long m = strtoull(v, NULL, 10);
        if (m && m < b->stripe)
            b->stripe = (size_t)m;
    }
    return FBK_OK;
}

/* The rados: scheme's constructor: DIR and the parameters the registry
 * checked and parsed (rados_params below). */
static int rados_scheme_create(void *ctx, const char *dir, const fbk_backend_params *params,
                               const fbk_store_options *opts, const fbk_backend_ops **ops,
                               void **self)
{
    (void)ctx;
    rados_backend *b = calloc(1, sizeof *b);
    if (!b)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "rados: out of memory");
    const char *pool = param(params, "pool");
    const char *spill = param(params, "spill");
    uint64_t tmo = 30;
    int rc = FBK_OK;
    if (!pool || !*pool)
        rc = fbk_error_set(FBK_EINVAL, 0,
                           "rados:%s: the pool parameter is required (rados:DIR?pool=POOL)", dir);
    else if (!(b->pool = strdup(pool)))
        rc = fbk_error_set(FBK_ENOMEM, ENOMEM, "rados: out of memory");
    if (rc == FBK_OK && spill && strcmp(spill, "lmdb") && strcmp(spill, "file"))
        rc = fbk_error_set(FBK_EINVAL, 0, "rados: spill=%s: use lmdb or file", spill);
    if (rc == FBK_OK && fbk_backend_params_get(params, "timeout", NULL, &tmo) &&
        (tmo < 1 || tmo > 86400))
        rc = fbk_error_set(FBK_EINVAL, 0, "rados: timeout=%s: use 1 to 86400 seconds",
                           param(params, "timeout"));
    b->timeout = (unsigned)tmo;
    b->readonly = opts && (opts->flags & FBK_STORE_READONLY);
    /* map_size is the inner lmdb: spill area's; like lmdb:'s own, it wins
     * over fbk_store_options.map_size */
    fbk_store_options o = *opts;
    uint64_t map_size;
    if (fbk_backend_params_get(params, "map_size", NULL, &map_size))
        o.map_size = (size_t)map_size;
    if (rc == FBK_OK)
        rc = connect_cluster(b, param(params, "conf"), param(params, "client"));
    bool file = spill && strcmp(spill, "file") == 0;
    if (rc == FBK_OK)
        rc = file ? fbk_backend_file_create(dir, &o, &b->inner, &b->inner_self)
                  : fbk_backend_lmdb_create(dir, &o, &b->inner, &b->inner_self);
    if (rc) {
        rb_close(b);
        return rc;
    }
    *ops = table_for(file, b->inner);
    *self = b;
    return FBK_OK;
}

static const fbk_backend_param rados_params[] = {
    {"pool", FBK_PARAM_STRING, "the RADOS pool of the locations (required)"},
    {"conf", FBK_PARAM_STRING, "a ceph.conf (default: librados's search)"},
    {"client", FBK_PARAM_STRING, "the cephx user, NAME or client.NAME (default client.admin)"},
    {"spill", FBK_PARAM_STRING, "the local spill area in DIR: lmdb (default) or file"},
    {"timeout", FBK_PARAM_UINT, "seconds before a silent cluster is FBK_ETIMEDOUT"},
    {"map_size", FBK_PARAM_SIZE, "map size of the inner lmdb: spill area"},
    {NULL, FBK_PARAM_STRING, NULL},
};

const fbk_backend_scheme fbk__rados_scheme = {
    .version = FBK_BACKEND_SCHEME_VERSION,
    .scheme = "rados",
    .params = rados_params,
    .flags = FBK_BACKEND_SCHEME_NEEDS_ARG,
    .create = rados_scheme_create,
};

int fbk_backend_rados_create(const char *arg, const fbk_store_options *opts,
                             const fbk_backend_ops **ops, void **self)
{
    if (!arg || !*arg || !ops || !self)
        return fbk_error_set(FBK_EINVAL, 0,
                             "rados: a directory is required (\"rados:DIR?pool=POOL\")");
    /* "DIR?pool=...": checked and parsed as fbk_store_open does, the core's
     * own parameters (readonly...) applied to a copy of opts */
    size_t len = strlen(arg);
    char *uri = fbk_malloc(len + sizeof "rados:");
    if (!uri)
        return fbk_error_set(FBK_ENOMEM, ENOMEM, "rados: out of memory");
    memcpy(uri, "rados:", 6);
    memcpy(uri + 6, arg, len + 1);
    fbk__uri u;
    int rc = fbk__uri_parse(uri, &u);
    if (rc == FBK_OK) {
        fbk_store_options o = {0};
        if (opts)
            o = *opts;
        rc = fbk__backend_create(&fbk__rados_scheme, &u, uri, &o, ops, self);
        fbk__uri_free(&u);
    }
    fbk_free(uri);
    return rc;
}
