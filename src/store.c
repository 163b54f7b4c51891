/* store.c -- fbk_store: the backend table, the worker threads and the
 * store-wide counters.  The scheme registry (registry.c) picks the backend
 * of a URI at run time. */
#include "fbk_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One worker: LMDB has one writer, and on lmdb: a single worker thread puts
 * evicted objects faster (23 us per 16 KiB object) than two that queue for
 * each other's transactions (33 us); raise opts.threads for slow backends
 * whose writes overlap well (network file systems). */
#define FBK__DEFAULT_THREADS 1
/* default max_queued_bytes */
#define FBK__DEFAULT_QUEUED_BYTES (16ll << 20)

const char *fbk_version(void) { return "0.1.0"; }

/* Closes the backend and frees what fbk_store_open_backend made, workers
 * aside (they are stopped and destroyed by then). */
static void store_free(fbk_store *s)
{
    s->ops->close(s->self);
    for (size_t i = 0; i < s->tokens.cap; i++)
        if (s->tokens.used[i])
            fbk__free(s->tokens.vals[i]); /* unreachable: every token is released first */
    fbk__keymap_free(&s->tokens);
    pthread_mutex_destroy(&s->tok_mu);
    pthread_cond_destroy(&s->tok_cv);
    pthread_mutex_destroy(&s->err_mu);
    pthread_mutex_destroy(&s->bp_mu);
    pthread_cond_destroy(&s->bp_cv);
    pthread_mutex_destroy(&s->loc_mu);
    fbk__free(s);
}

static void store_finalize(void *arg)
{
    fbk_store *s = arg;
    fbk__workers_destroy(&s->workers);
    store_free(s);
}

void fbk__store_retain(fbk_store *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void fbk__store_release(fbk_store *s)
{
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    /* No reference left means no job left: every job holds one. */
    if (fbk__workers_shutdown(&s->workers))
        store_finalize(s);
}

static bool ops_complete(const fbk_backend_ops *ops)
{
    return ops->store && ops->load && ops->remove && ops->open_location && ops->close_location &&
           ops->scan && ops->persist && ops->register_key && ops->remove_persisted && ops->sync &&
           ops->close;
}

int fbk_store_open_backend(fbk_store **out, const fbk_backend_ops *ops, void *self,
                           const fbk_store_options *opts)
{
    if (!ops)
        return fbk_error_set(FBK_EINVAL, 0, "fbk_store_open_backend: ops is NULL");
    if (!out || ops->version < 1 || !ops_complete(ops)) {
        if (ops->close)
            ops->close(self);
        return fbk_error_set(FBK_EINVAL, 0,
                             !out
                                 ? "fbk_store_open_backend: out is NULL"
                                 : "fbk_store_open_backend: backend table version %u or a required "
                                   "function is missing",
                             ops->version);
    }
    fbk__malloc_nudge();
    fbk_store *s = fbk__calloc(1, sizeof *s);
    if (!s) {
        ops->close(self);
        return fbk_error_set(FBK_ENOMEM, 0, "cannot allocate a store");
    }
    atomic_init(&s->refs, 1);
    s->ops = ops;
    s->self = self;
    s->threads = (opts && opts->threads)               ? opts->threads
                 : (ops->version >= 3 && ops->workers) ? ops->workers
                                                       : FBK__DEFAULT_THREADS;
    s->flags = opts ? opts->flags : 0;
    s->on_error = opts ? opts->on_error : NULL;
    s->on_error_arg = opts ? opts->on_error_arg : NULL;
    pthread_mutex_init(&s->tok_mu, NULL);
    pthread_cond_init(&s->tok_cv, NULL);
    pthread_mutex_init(&s->err_mu, NULL);
    pthread_mutex_init(&s->bp_mu, NULL);
    pthread_cond_init(&s->bp_cv, NULL);
    pthread_mutex_init(&s->loc_mu, NULL);
    atomic_init(&s->evict_inflight, 0);
    /* enough queued writes to keep every worker busy and an LMDB group
     * commit fed, few enough that memory stays near mem_items */
    s->evict_limit =
        (opts && opts->max_queued_writes) ? (long)opts->max_queued_writes : 32 * (long)s->threads;
    /* and few enough bytes that large objects do not pile up: the queue's
     * memory is recycled by malloc instead of being faulted in afresh */
    atomic_init(&s->evict_bytes, 0);
    s->evict_bytes_limit =
        (opts && opts->max_queued_bytes)
            ? (opts->max_queued_bytes > (size_t)LLONG_MAX / 2 ? LLONG_MAX / 2
                                                              : (long long)opts->max_queued_bytes)
            : FBK__DEFAULT_QUEUED_BYTES;
    fbk__keymap_init(&s->tokens);
    int rc = fbk__workers_start(&s->workers, s->threads, store_finalize, s);
    if (rc) {
        store_free(s); /* the workers are stopped and destroyed already */
        return rc;
    }
    /* A worker takes at most half the backpressure limit of queued eviction
     * writes at once, so the program can queue the next ones meanwhile. */
    long half = s->evict_limit / 2;
    fbk__workers_set_batch(&s->workers, half < 1                  ? 1
                                        : half > FBK__EVICT_BATCH ? FBK__EVICT_BATCH
                                                                  : (size_t)half);
    *out = s;
    return FBK_OK;
}

int fbk_store_open(fbk_store **out, const char *uri, const fbk_store_options *opts)
{
    if (!out)
        return fbk_error_set(FBK_EINVAL, 0, "fbk_store_open: out is NULL");
    fbk__uri u;
    int rc = fbk__uri_parse(uri, &u);
    if (rc)
        return rc;
    /* the scheme registry (registry.c) checks the parameters, applies the
     * core's to o and constructs the backend */
    fbk_store_options o = {0};
    if (opts)
        o = *opts;
    const fbk_backend_ops *ops = NULL;
    void *self = NULL;
    rc = fbk__backend_create(NULL, &u, uri, &o, &ops, &self);
    if (rc == FBK_OK)
        rc = fbk_store_open_backend(out, ops, self, &o);
    fbk__uri_free(&u);
    return rc ? fbk__error_keep(rc) : FBK_OK;
}

bool fbk__store_readonly(const fbk_store *s) { return s->flags & FBK_STORE_READONLY; }

int fbk__store_check_writable(const fbk_store *s, const char *what)
{
    if (!fbk__store_readonly(s))
        return FBK_OK;
    return fbk_error_set(FBK_EREADONLY, 0, "%s: the store was opened read-only", what);
}

int fbk_store_drain(fbk_store *s)
{
    if (!s)
        return fbk_error_set(FBK_EINVAL, 0, "fbk_store_drain: store is NULL");
    fbk__workers_drain(&s->workers);
    pthread_mutex_lock(&s->err_mu);
    int rc = s->drain_err;
    int os = s->drain_errno;
    char msg[sizeof s->drain_msg];
    memcpy(msg, s->drain_msg, sizeof msg);
    s->drain_err = 0;
    pthread_mutex_unlock(&s->err_mu);
    return rc ? fbk_error_set(rc, os, "background work failed: %s", msg) : FBK_OK;
}

void fbk_store_close(fbk_store *s)
{
    if (!s)
        return;
    fbk__workers_drain(&s->workers);
    fbk__store_release(s);
}

void fbk__store_report(fbk_store *s, int err)
{
    fbk__error_keep(err);
    atomic_fetch_add(&s->n_bg_errors, 1);
    pthread_mutex_lock(&s->err_mu);
    if (!s->drain_err) {
        s->drain_err = err;
        s->drain_errno = fbk_last_os_error();
        snprintf(s->drain_msg, sizeof s->drain_msg, "%s", fbk_errmsg());
    }
    pthread_mutex_unlock(&s->err_mu);
    if (s->on_error)
        s->on_error(err, fbk_errmsg(), s->on_error_arg);
}

/* Hysteresis: a caller that finds more than evict_limit writes (or
 * evict_bytes_limit bytes) in flight waits until half of them are done, so
 * that it sleeps once per burst of writes rather than once per write. */
static bool over(fbk_store *s, long n, long long bytes, int shift)
{
    return n > (s->evict_limit >> shift) || bytes > (s->evict_bytes_limit >> shift);
}

void fbk__store_backpressure(fbk_store *s)
{
    if (!over(s, atomic_load_explicit(&s->evict_inflight, memory_order_relaxed),
              atomic_load_explicit(&s->evict_bytes, memory_order_relaxed), 0) ||
        fbk__workers_on_worker(&s->workers))
        return;
    pthread_mutex_lock(&s->bp_mu);
    s->bp_waiters++;
    while (over(s, atomic_load(&s->evict_inflight), atomic_load(&s->evict_bytes), 1))
        pthread_cond_wait(&s->bp_cv, &s->bp_mu);
    s->bp_waiters--;
    pthread_mutex_unlock(&s->bp_mu);
}

void fbk__store_evict_queued(fbk_store *s, size_t bytes)
{
    atomic_fetch_add_explicit(&s->evict_bytes, (long long)bytes, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->evict_inflight, 1, memory_order_relaxed);
}

void fbk__store_evict_done(fbk_store *s, size_t bytes)
{
    long long b = atomic_fetch_sub(&s->evict_bytes, (long long)bytes) - (long long)bytes;
    long left = atomic_fetch_sub(&s->evict_inflight, 1) - 1;
    if (over(s, left, b, 1))
        return;
    pthread_mutex_lock(&s->bp_mu);
    if (s->bp_waiters)
        pthread_cond_broadcast(&s->bp_cv);
    pthread_mutex_unlock(&s->bp_mu);
}

unsigned fbk_store_threads(const fbk_store *s) { return s ? s->threads : 0; }

void fbk_store_stats_get(fbk_store *s, fbk_store_stats *out)
{
    if (!s || !out)
        return;
    out->stores = atomic_load(&s->n_stores);
    out->loads = atomic_load(&s->n_loads);
    out->removes = atomic_load(&s->n_removes);
    out->evictions = atomic_load(&s->n_evictions);
    out->eviction_failures = atomic_load(&s->n_evict_fail);
    out->background_errors = atomic_load(&s->n_bg_errors);
    out->store_batches = atomic_load(&s->n_store_batches);
    out->batched_stores = atomic_load(&s->n_batched_stores);
}
