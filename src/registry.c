/* registry.c -- the scheme registry (fbk_backend.h): which backend a store
 * URI opens, and the one place where a URI's parameters are checked against
 * what the core and the scheme declare and parsed by kind.  fbk_store_open
 * (store.c) and a constructor called with "ARG?key=value" both come here. */
#include "fbk_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct fbk_backend_params {
    size_t n;
    struct param_value {
        const fbk_backend_param *decl;
        const char *text; /* points into the fbk__uri */
        uint64_t num;
    } v[];
};

/* The core's own parameters, taken by every scheme. */
static const fbk_backend_param core_params[] = {
    {"threads", FBK_PARAM_UINT, "background worker threads (fbk_store_options.threads)"},
    {"max_queued_writes", FBK_PARAM_UINT, "eviction writes queued before a caller waits"},
    {"max_queued_bytes", FBK_PARAM_SIZE, "the same bound on their bytes"},
    {"readonly", FBK_PARAM_BOOL, "open read-only (FBK_STORE_READONLY)"},
    {NULL, FBK_PARAM_STRING, NULL},
};

static const fbk_backend_scheme *const builtins[] = {
    &fbk__lmdb_scheme,
    &fbk__file_scheme,
    &fbk__mem_scheme,
#ifdef FBK_WITH_RADOS
    &fbk__rados_scheme,
#endif
};
#define N_BUILTINS (sizeof builtins / sizeof builtins[0])

/* Registered schemes, newest first.  Nodes are only ever added, so a
 * scheme found stays valid; the mutex orders registrations and lookups. */
typedef struct user_scheme {
    const fbk_backend_scheme *sc;
    struct user_scheme *next;
} user_scheme;
static pthread_mutex_t users_mu = PTHREAD_MUTEX_INITIALIZER;
static user_scheme *users;

const fbk_backend_scheme *fbk_backend_lookup(const char *scheme)
{
    if (!scheme)
        return NULL;
    for (size_t i = 0; i < N_BUILTINS; i++)
        if (strcasecmp(builtins[i]->scheme, scheme) == 0)
            return builtins[i];
    const fbk_backend_scheme *found = NULL;
    pthread_mutex_lock(&users_mu);
    for (user_scheme *u = users; u && !found; u = u->next)
        if (strcasecmp(u->sc->scheme, scheme) == 0)
            found = u->sc;
    pthread_mutex_unlock(&users_mu);
    return found;
}

static bool is_core_param(const char *name)
{
    for (const fbk_backend_param *p = core_params; p->name; p++)
        if (strcmp(p->name, name) == 0)
            return true;
    return false;
}

/* NULL when sc is well-formed, else what is wrong with it. */
static const char *scheme_problem(const fbk_backend_scheme *sc)
{
    if (sc->version < 1)
        return "version is 0";
    if (!sc->create)
        return "create is NULL";
    const char *s = sc->scheme;
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > FBK__SCHEME_MAX || s[0] < 'a' || s[0] > 'z')
        return "the scheme must be 1..15 characters starting with a lowercase letter";
    for (size_t i = 1; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.'))
            return "the scheme may hold only lowercase letters, digits, '+', '-' and '.'";
    }
    for (const fbk_backend_param *p = sc->params; p && p->name; p++) {
        if (!*p->name)
            return "a parameter has an empty name";
        if ((unsigned)p->kind > FBK_PARAM_BOOL)
            return "a parameter has an unknown kind";
        if (is_core_param(p->name))
            return "a parameter is named like one of the core's (threads, max_queued_writes, "
                   "max_queued_bytes, readonly)";
        for (const fbk_backend_param *q = sc->params; q != p; q++)
            if (strcmp(q->name, p->name) == 0)
                return "a parameter is declared twice";
    }
    return NULL;
}

int fbk_backend_register(const fbk_backend_scheme *sc)
{
    if (!sc)
        return fbk_error_set(FBK_EINVAL, 0, "fbk_backend_register: scheme is NULL");
    const char *why = scheme_problem(sc);
    if (why)
        return fbk_error_set(FBK_EINVAL, 0, "fbk_backend_register: scheme \"%.40s\": %s",
                             sc->scheme ? sc->scheme : "(null)", why);
    user_scheme *node = fbk__malloc(sizeof *node);
    if (!node)
        return fbk_error_set(FBK_ENOMEM, 0, "fbk_backend_register: out of memory");
    node->sc = sc;
    bool taken = false;
    for (size_t i = 0; i < N_BUILTINS && !taken; i++)
        taken = strcmp(builtins[i]->scheme, sc->scheme) == 0;
    pthread_mutex_lock(&users_mu);
    for (user_scheme *u = users; u && !taken; u = u->next)
        taken = strcmp(u->sc->scheme, sc->scheme) == 0;
    if (!taken) {
        node->next = users;
        users = node;
    }
    pthread_mutex_unlock(&users_mu);
    if (taken) {
        fbk__free(node);
        return fbk_error_set(
            FBK_EBUSY, 0, "fbk_backend_register: scheme \"%s:\" is registered already", sc->scheme);
    }
    return FBK_OK;
}

int fbk_backend_params_get(const fbk_backend_params *params, const char *name, const char **text,
                           uint64_t *num)
{
    if (!params || !name)
        return 0;
    for (size_t i = 0; i < params->n; i++)
        if (strcmp(params->v[i].decl->name, name) == 0) {
            if (text)
                *text = params->v[i].text;
            if (num)
                *num = params->v[i].num;
            return 1;
        }
    return 0;
}

static const fbk_backend_param *find_decl(const fbk_backend_param *list, const char *name)
{
    for (const fbk_backend_param *d = list; d && d->name; d++)
        if (strcmp(d->name, name) == 0)
            return d;
    return NULL;
}

static int parse_value(const fbk_backend_param *d, const fbk__uri_param *p, uint64_t *out)
{
    *out = 0;
    switch (d->kind) {
    case FBK_PARAM_STRING:
        return FBK_OK;
    case FBK_PARAM_SIZE:
        return fbk__parse_size(p->value, p->key, out);
    case FBK_PARAM_UINT: {
        const char *t = p->value;
        char *end = NULL;
        errno = 0;
        unsigned long long v = (*t >= '0' && *t <= '9') ? strtoull(t, &end, 10) : 0;
        if (!end || *end || errno)
            return fbk_error_set(FBK_EINVAL, 0, "URI parameter %s=%s: not a number (digits)",
                                 p->key, p->value);
        *out = v;
        return FBK_OK;
    }
    case FBK_PARAM_BOOL:
        if (strcmp(p->value, "1") == 0 || strcmp(p->value, "true") == 0)
            *out = 1;
        else if (strcmp(p->value, "0") && strcmp(p->value, "false"))
            return fbk_error_set(FBK_EINVAL, 0, "URI parameter %s=%s: use 0 or 1 (false or true)",
                                 p->key, p->value);
        return FBK_OK;
    }
    return fbk_error_set(FBK_EINVAL, 0, "URI parameter %s: unknown kind %d", p->key, (int)d->kind);
}

static int unknown_param(const char *key, const fbk_backend_scheme *sc)
{
    char known[400] = "";
    size_t len = 0;
    const fbk_backend_param *lists[2] = {core_params, sc->params};
    for (int l = 0; l < 2; l++)
        for (const fbk_backend_param *d = lists[l]; d && d->name && len < sizeof known; d++)
            len +=
                (size_t)snprintf(known + len, sizeof known - len, "%s%s", len ? ", " : "", d->name);
    return fbk_error_set(FBK_EINVAL, 0, "unknown URI parameter \"%s\" for %s: (known: %s)", key,
                         sc->scheme, known);
}

static void params_free(fbk_backend_params *p) { fbk__free(p); }

/* Checks every parameter of u against the core's and sc's lists and parses
 * it: *core gets the core's, *own sc's (both freed with params_free). */
static int params_parse(const fbk__uri *u, const fbk_backend_scheme *sc, fbk_backend_params **core,
                        fbk_backend_params **own)
{
    *core = fbk__calloc(1, sizeof **core + u->n * sizeof(struct param_value));
    *own = fbk__calloc(1, sizeof **own + u->n * sizeof(struct param_value));
    int rc = *core && *own ? FBK_OK : fbk_error_set(FBK_ENOMEM, 0, "URI parameters: out of memory");
    for (size_t i = 0; i < u->n && rc == FBK_OK; i++) {
        const fbk__uri_param *p = &u->params[i];
        fbk_backend_params *to = *core;
        const fbk_backend_param *d = find_decl(core_params, p->key);
        if (!d) {
            to = *own;
            d = find_decl(sc->params, p->key);
        }
        if (!d) {
            rc = unknown_param(p->key, sc);
            break;
        }
        struct param_value *v = &to->v[to->n];
        rc = parse_value(d, p, &v->num);
        v->decl = d;
        v->text = p->value;
        to->n += rc == FBK_OK;
    }
    if (rc) {
        params_free(*core);
        params_free(*own);
        *core = *own = NULL;
    }
    return rc;
}

static int core_uint(const fbk_backend_params *core, const char *name, uint64_t max, uint64_t *out)
{
    const char *text = NULL;
    if (!fbk_backend_params_get(core, name, &text, out))
        return 0;
    if (*out > max)
        return fbk_error_set(FBK_EINVAL, 0, "URI parameter %s=%s is too large", name, text);
    return 1;
}

/* Applies the core's parameters over *o (a copy of the caller's options). */
static int apply_core(const fbk_backend_params *core, fbk_store_options *o)
{
    uint64_t v;
    int r;
    if ((r = core_uint(core, "threads", 1024, &v)) < 0)
        return r;
    if (r)
        o->threads = (unsigned)v;
    if ((r = core_uint(core, "max_queued_writes", UINT_MAX, &v)) < 0)
        return r;
    if (r)
        o->max_queued_writes = (unsigned)v;
    if ((r = core_uint(core, "max_queued_bytes", SIZE_MAX, &v)) < 0)
        return r;
    if (r)
        o->max_queued_bytes = (size_t)v;
    if (fbk_backend_params_get(core, "readonly", NULL, &v))
        o->flags = v ? (o->flags | FBK_STORE_READONLY) : (o->flags & ~FBK_STORE_READONLY);
    return FBK_OK;
}

static int unknown_scheme(const fbk__uri *u, const char *uri)
{
    char known[400] = "";
    size_t len = 0;
    for (size_t i = 0; i < N_BUILTINS; i++)
        len += (size_t)snprintf(known + len, sizeof known - len, "%s%s:", i ? ", " : "",
                                builtins[i]->scheme);
    pthread_mutex_lock(&users_mu);
    for (user_scheme *s = users; s && len < sizeof known; s = s->next)
        len += (size_t)snprintf(known + len, sizeof known - len, ", %s:", s->sc->scheme);
    pthread_mutex_unlock(&users_mu);
    return fbk_error_set(FBK_EINVAL, 0,
                         "fbk_store_open: unknown backend scheme \"%s:\" in \"%.200s\" (known: %s)",
                         u->scheme, uri, known);
}

int fbk__backend_create(const fbk_backend_scheme *sc, const fbk__uri *u, const char *uri,
                        fbk_store_options *o, const fbk_backend_ops **ops, void **self)
{
    if (!sc && !(sc = fbk_backend_lookup(u->scheme)))
        return unknown_scheme(u, uri);
    fbk_backend_params *core, *own;
    int rc = params_parse(u, sc, &core, &own);
    if (rc)
        return rc;
    rc = apply_core(core, o);
    if (rc == FBK_OK && (sc->flags & FBK_BACKEND_SCHEME_NEEDS_ARG) && !*u->arg)
        rc = fbk_error_set(FBK_EINVAL, 0, "fbk_store_open: \"%.200s\" names no directory", uri);
    if (rc == FBK_OK) {
        *ops = NULL;
        *self = NULL;
        rc = sc->create(sc->ctx, u->arg, own, o, ops, self);
    }
    params_free(core);
    params_free(own);
    return rc;
}
