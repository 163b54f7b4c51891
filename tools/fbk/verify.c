/* verify.c -- read and check every object of every location (the frame and
 * checksum are checked by every load, src/frame.c), and that every name
 * resolves to an object of its location.
 *
 * Objects are read by --jobs threads at once (each: register, load, release),
 * so a slow disk or LMDB's group commit of the registers is overlapped.
 * Memory stays constant in the objects' sizes: a thread holds one object at a
 * time.  Progress goes to stderr only when it is a terminal. */
#include "fbk_tool.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct vloc {
    const char *name;
    fbk_location *loc;
    fbk_key *keys;
    size_t n;
} vloc;

typedef struct verifier {
    const fbk_cli *c;
    const tool_uri *u;
    unsigned jobs; /* objects read at once (threads) */
    fbk_store *s;
    fbk_pool *p;
    vloc *locs;
    size_t nlocs;
    /* work: the next (location, index) to read, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t cur_loc, cur_idx;
    int done; /* workers finished (progress thread stops) */
    /* results, under mu */
    uint64_t total, checked, bytes, damaged, names, names_damaged;
    int json_first;
    int progress;        /* stderr is a terminal */
    int progress_shown;  /* a progress line is on the terminal now */
    struct timespec t0;
    FILE *jdamage;       /* JSON: the damaged entries, written at the end */
    char *jbuf;          /* jdamage's buffer */
    size_t jlen;
} verifier;

static double now_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void human(char *out, size_t cap, double b)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4)
        b /= 1024, i++;
    snprintf(out, cap, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

/* Under mu. */
static void progress_clear(verifier *v)
{
    if (v->progress_shown) {
        fputs("\r\033[K", stderr);
        v->progress_shown = 0;
    }
}

static void progress_show(verifier *v)
{
    double t = now_since(&v->t0);
    char b[32], r[32], eta[32] = "-";
    human(b, sizeof b, (double)v->bytes);
    human(r, sizeof r, t > 0 ? (double)v->bytes / t : 0);
    double ops = t > 0 ? (double)v->checked / t : 0;
    if (ops > 0 && v->total >= v->checked) {
        unsigned long s = (unsigned long)((double)(v->total - v->checked) / ops + 0.5);
        snprintf(eta, sizeof eta, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
    }
    fprintf(stderr, "\r\033[Kverify: %llu/%llu objects, %s, %s/s, %.0f objects/s, ETA %s",
            (unsigned long long)v->checked, (unsigned long long)v->total, b, r, ops, eta);
    v->progress_shown = 1;
    fflush(stderr);
}

/* Under mu.  kind: "object" or "name". */
static void report(verifier *v, const char *loc, const char *kind, const char *key,
                   const void *name, size_t nlen, int err, const char *msg)
{
    if (v->c->json) {
        FILE *f = v->jdamage;
        fprintf(f, "%s{\"location\": ", v->json_first++ ? ", " : "");
        json_str(f, loc, strlen(loc));
        fprintf(f, ", \"kind\": \"%s\", \"key\": ", kind);
        key ? fprintf(f, "\"%s\"", key) : fprintf(f, "null");
        if (name) {
            fputs(", ", f);
            json_name(f, name, nlen);
        }
        fprintf(f, ", \"error\": \"%s\", \"message\": ", fbk_err_name(err));
        json_str(f, msg, strlen(msg));
        fputc('}', f);
        return;
    }
    progress_clear(v);
    printf("damaged %s: %s ", kind, loc);
    if (name) {
        fputs("name '", stdout);
        text_name(stdout, name, nlen);
        fputs("'", stdout);
        if (key)
            putchar(' ');
    }
    if (key)
        fputs(key, stdout);
    printf(": %s: %s\n", fbk_err_name(err), msg);
    fflush(stdout);
}

static void *worker(void *arg)
{
    verifier *v = arg;
    for (;;) {
        pthread_mutex_lock(&v->mu);
        while (v->cur_loc < v->nlocs && v->cur_idx >= v->locs[v->cur_loc].n)
            v->cur_loc++, v->cur_idx = 0;
        if (v->cur_loc >= v->nlocs) {
            pthread_mutex_unlock(&v->mu);
            return NULL;
        }
        vloc *l = &v->locs[v->cur_loc];
        fbk_key k = l->keys[v->cur_idx++];
        pthread_mutex_unlock(&v->mu);

        fbk_handle *h;
        const void *obj;
        size_t len = 0;
        int rc = fbk_register(v->p, l->loc, &k, &h);
        if (!rc) {
            rc = fbk_load(h, &obj);
            if (!rc) {
                len = ((const fbk_blob *)obj)->len;
                fbk_unload(h);
            }
            fbk_handle_release(h);
        }
        char msg[1024] = "";
        if (rc)
            snprintf(msg, sizeof msg, "%s", *fbk_errmsg() ? fbk_errmsg() : fbk_strerror(rc));
        pthread_mutex_lock(&v->mu);
        v->checked++;
        v->bytes += len;
        if (rc) {
            char ks[FBK_KEY_STRLEN + 1];
            fbk_key_format(&k, ks);
            v->damaged++;
            report(v, l->name, "object", ks, NULL, 0, rc, msg);
        }
        pthread_mutex_unlock(&v->mu);
    }
}

static void *progress_thread(void *arg)
{
    verifier *v = arg;
    pthread_mutex_lock(&v->mu);
    progress_show(v); /* at once: a terminal always sees where it starts */
    while (!v->done) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        t.tv_nsec += 250 * 1000 * 1000;
        if (t.tv_nsec >= 1000000000)
            t.tv_sec++, t.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&v->cv, &v->mu, &t);
        if (!v->done)
            progress_show(v);
    }
    progress_clear(v);
    pthread_mutex_unlock(&v->mu);
    return NULL;
}

#if FBK_TOOL_HAVE_MAPS
typedef struct vname {
    verifier *v;
    vloc *l;
    fbk_map *m;
} vname;

/* A name resolves when the map gives a handle whose key its location holds
 * (the object itself is read by the key pass). */
static int check_name(const void *name, size_t len, void *arg)
{
    vname *a = arg;
    fbk_handle *h;
    int rc = fbk_map_get(a->m, name, len, &h);
    char ks[FBK_KEY_STRLEN + 1] = "";
    char msg[1024] = "";
    if (rc == 0) {
        fbk_key k;
        fbk_handle_key(h, &k);
        fbk_key_format(&k, ks);
        if (!fbk_location_contains(a->l->loc, &k)) {
            rc = FBK_ENOTFOUND;
            snprintf(msg, sizeof msg, "its object %s is not in the location", ks);
        }
        fbk_handle_release(h);
    } else {
        snprintf(msg, sizeof msg, "%s", *fbk_errmsg() ? fbk_errmsg() : fbk_strerror(rc));
    }
    pthread_mutex_lock(&a->v->mu);
    a->v->names++;
    if (rc) {
        a->v->names_damaged++;
        report(a->v, a->l->name, "name", *ks ? ks : NULL, name, len, rc, msg);
    }
    pthread_mutex_unlock(&a->v->mu);
    return 0;
}
#endif

/* One location opened, with the list of its keys. */
static int verify_open_location(verifier *v, const char *name, vloc *l)
{
    l->name = name;
    int rc = tool_location_open(v->c->cmd, v->u, v->s, l->name, &l->loc);
    if (rc)
        return rc;
    l->n = fbk_location_count(l->loc);
    l->keys = malloc((l->n ? l->n : 1) * sizeof *l->keys);
    if (!l->keys)
        return tool_fail(v->c->cmd, FBK_ENOMEM, "list keys");
    size_t got = fbk_location_keys(l->loc, l->keys, l->n);
    if (got < l->n)
        l->n = got;
    v->total += l->n;
    return 0;
}

/* The store (read-only), a pool with room for every job's loads, and every
 * location; verify_close releases what is open, also after a failure. */
static int verify_open(verifier *v, char **names)
{
    const fbk_cli *c = v->c;
    v->locs = calloc(v->nlocs ? v->nlocs : 1, sizeof *v->locs);
    if (!v->locs)
        return tool_fail(c->cmd, FBK_ENOMEM, "verify");
    int rc = tool_store_open(c->cmd, v->u, 1, &v->s);
    if (!rc && (rc = fbk_pool_create(&v->p, v->s, &fbk_blob_codec, 2 * v->jobs + 2)) != 0)
        rc = tool_fail(c->cmd, rc, "create pool");
    for (size_t i = 0; i < v->nlocs && !rc; i++)
        rc = verify_open_location(v, c->npos == 2 ? c->pos[1] : names[i], &v->locs[i]);
    return rc;
}

/* Every object, read by v->jobs threads (wt: room for their ids); by this
 * thread when none starts. */
static void verify_objects(verifier *v, pthread_t *wt)
{
    unsigned started = 0;
    for (; started < v->jobs; started++)
        if (pthread_create(&wt[started], NULL, worker, v))
            break;
    if (started == 0)
        worker(v);
    for (unsigned i = 0; i < started; i++)
        pthread_join(wt[i], NULL);
    /* the spill copies the loads left are removed in the background:
     * their removal is part of the work, so it is in the time too */
    fbk_store_drain(v->s);
}

/* Every name of every location (none without maps): 0 or an exit status. */
static int verify_names(verifier *v)
{
    int rc = 0;
#if FBK_TOOL_HAVE_MAPS
    for (size_t i = 0; i < v->nlocs && !rc; i++) {
        fbk_map *m;
        int r = fbk_map_open(v->p, v->locs[i].loc, NULL, &m);
        if (r == FBK_ENOTSUP)
            break;
        if (r) {
            rc = tool_fail(v->c->cmd, r, "open the names of '%s'", v->locs[i].name);
            break;
        }
        vname a = {v, &v->locs[i], m};
        r = fbk_map_names(m, check_name, &a);
        if (r)
            rc = tool_fail(v->c->cmd, r, "list the names of '%s'", v->locs[i].name);
        fbk_map_close(m);
    }
#else
    (void)v;
#endif
    return rc;
}

/* The objects, then the names, with progress on a terminal meanwhile. */
static int verify_all(verifier *v)
{
    clock_gettime(CLOCK_MONOTONIC, &v->t0);
    v->progress = isatty(2);
    pthread_t pt, *wt = calloc(v->jobs, sizeof *wt);
    if (!wt)
        return tool_fail(v->c->cmd, FBK_ENOMEM, "verify");
    if (v->progress && pthread_create(&pt, NULL, progress_thread, v))
        v->progress = 0;
    verify_objects(v, wt);
    free(wt);
    int rc = verify_names(v);
    pthread_mutex_lock(&v->mu);
    v->done = 1;
    pthread_cond_signal(&v->cv);
    pthread_mutex_unlock(&v->mu);
    if (v->progress)
        pthread_join(pt, NULL);
    return rc;
}

static void verify_print_json(verifier *v, double t)
{
    fclose(v->jdamage);
    v->jdamage = NULL;
    printf("{\"uri\": ");
    json_str(stdout, v->u->uri, strlen(v->u->uri));
    printf(", \"locations\": %zu, \"objects\": %llu, \"bytes\": %llu, \"names\": %llu, "
           "\"damaged_objects\": %llu, \"damaged_names\": %llu, \"seconds\": %.3f, "
           "\"damaged\": [%s]}\n",
           v->nlocs, (unsigned long long)v->checked, (unsigned long long)v->bytes,
           (unsigned long long)v->names, (unsigned long long)v->damaged,
           (unsigned long long)v->names_damaged, t, v->jbuf ? v->jbuf : "");
}

static void verify_print_text(const verifier *v, double t)
{
    size_t n = v->nlocs;
    char b[32], r[32];
    human(b, sizeof b, (double)v->bytes);
    human(r, sizeof r, t > 0 ? (double)v->bytes / t : 0);
    printf("verified %llu objects (%s) and %llu names in %zu location%s, %.2f s "
           "(%.0f objects/s, %s/s): %s\n",
           (unsigned long long)v->checked, b, (unsigned long long)v->names, n,
           n == 1 ? "" : "s", t, t > 0 ? (double)v->checked / t : 0, r,
           v->damaged + v->names_damaged ? "DAMAGED" : "ok");
    if (v->damaged + v->names_damaged)
        printf("%llu damaged objects, %llu damaged names\n", (unsigned long long)v->damaged,
               (unsigned long long)v->names_damaged);
}

/* The summary (text or JSON); the exit status: 1 when anything is damaged. */
static int verify_print(verifier *v)
{
    double t = now_since(&v->t0);
    if (v->c->json)
        verify_print_json(v, t);
    else
        verify_print_text(v, t);
    return v->damaged + v->names_damaged ? FBK_TOOL_MISSING : FBK_TOOL_OK;
}

static void verify_close(verifier *v)
{
    if (v->jdamage)
        fclose(v->jdamage);
    free(v->jbuf);
    for (size_t i = 0; v->locs && i < v->nlocs; i++) {
        free(v->locs[i].keys);
        fbk_location_close(v->locs[i].loc);
    }
    free(v->locs);
    fbk_pool_release(v->p);
    tool_store_close(v->s);
}

int cmd_verify(const fbk_cli *c)
{
    tool_uri u;
    char **names = NULL;
    size_t n = 0;
    int rc = tool_targets(c, &u, &names, &n);
    if (rc)
        return rc;
    verifier v = {.c = c, .u = &u, .nlocs = n, .jobs = c->jobs ? c->jobs : 4};
    pthread_mutex_init(&v.mu, NULL);
    pthread_cond_init(&v.cv, NULL);
    if (c->json && !(v.jdamage = open_memstream(&v.jbuf, &v.jlen)))
        return tool_fail(c->cmd, FBK_ENOMEM, "verify");
    rc = verify_open(&v, names);
    if (!rc)
        rc = verify_all(&v);
    if (!rc)
        rc = verify_print(&v);
    verify_close(&v);
    layout_free_names(names, c->npos == 1 ? n : 0);
    return rc;
}
