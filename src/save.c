/* save.c -- fbk_save (the original blocking_save_with): persist a set of
 * items, sync, let the user commit, then drop what the new save no longer
 * references.  Until commit returns 0 the previous save stays intact. */
#include "fbk_internal.h"

#include <stdlib.h>

/* Runs `start` for every handle whose key loc lacks, with at most `width`
 * tasks in flight (a FIFO window: the oldest is joined before a new one
 * starts).  Returns the first failure, after every started task finished. */
typedef int (*task_fn)(fbk_handle *h, fbk_location *loc, fbk_task **out);

static int run_windowed(fbk_location *loc, fbk_handle *const *handles, size_t n, unsigned width,
                        task_fn start, bool skip_spilled)
{
    fbk_task **ring = fbk__calloc(width, sizeof *ring);
    if (!ring)
        return fbk_error_set(FBK_ENOMEM, 0, "fbk_save: cannot allocate the task window");
    size_t head = 0, used = 0;
    int err = FBK_OK;
    for (size_t i = 0; i < n && !err; i++) {
        fbk_key key;
        fbk_handle_key(handles[i], &key);
        if (fbk_location_contains(loc, &key))
            continue; /* saved before: no backend call */
        if (skip_spilled && fbk__item_spilled(handles[i]))
            continue; /* written out already: no task, no round trip to a worker */
        if (used == width) {
            err = fbk_task_wait(ring[head]);
            head = (head + 1) % width;
            used--;
            if (err)
                break;
        }
        err = start(handles[i], loc, &ring[(head + used) % width]);
        if (!err)
            used++;
    }
    for (; used > 0; used--, head = (head + 1) % width) {
        int rc = fbk_task_wait(ring[head]);
        if (rc && !err)
            err = rc;
    }
    fbk__free(ring);
    return err;
}

static int start_write(fbk_handle *h, fbk_location *loc, fbk_task **out)
{
    (void)loc;
    return fbk_write_now_async(h, out);
}

/* With a batch-capable backend: write every item out (in parallel), then
 * persist them in chunks of one backend call each (one LMDB transaction and
 * one commit per chunk instead of one per item). */
#define FBK__PERSIST_CHUNK 2048

static int persist_batched(fbk_location *loc, fbk_handle *const *handles, size_t n, unsigned width)
{
    int rc = run_windowed(loc, handles, n, width, start_write, true);
    if (rc)
        return rc;
    fbk_key *keys = fbk__malloc(FBK__PERSIST_CHUNK * sizeof *keys);
    fbk__token **toks = fbk__malloc(FBK__PERSIST_CHUNK * sizeof *toks);
    if (!keys || !toks) {
        fbk__free(keys);
        fbk__free(toks);
        return fbk_error_set(FBK_ENOMEM, 0, "fbk_save: cannot allocate a persist batch");
    }
    size_t i = 0;
    while (i < n && rc == FBK_OK) {
        size_t k = 0;
        for (; i < n && k < FBK__PERSIST_CHUNK; i++) {
            fbk_handle *h = handles[i];
            rc = fbk__item_pin(h);
            if (rc)
                break;
            /* written above, so no I/O here unless load_mut ran meanwhile;
             * the token use keeps the spill copy until the persist is done */
            rc = fbk__item_ensure_stored(h, &toks[k], &keys[k]);
            fbk__item_unpin(h);
            if (rc)
                break;
            k++;
        }
        if (rc == FBK_OK && k)
            rc = fbk__location_persist_many(loc, keys, k);
        for (size_t j = 0; j < k; j++)
            fbk__token_release(toks[j]);
    }
    fbk__free(keys);
    fbk__free(toks);
    return rc;
}

static int persist_all(fbk_location *loc, fbk_handle *const *handles, size_t n, unsigned width)
{
    if (loc->store->ops->persist_many)
        return persist_batched(loc, handles, n, width);
    return run_windowed(loc, handles, n, width, fbk_persist_async, false);
}

int fbk_save(fbk_location *loc, fbk_handle *const *handles, size_t n, unsigned max_parallel,
             fbk_commit_fn commit, void *arg)
{
    if (!loc || (n > 0 && !handles))
        return fbk_error_set(FBK_EINVAL, 0, "fbk_save: NULL argument");
    for (size_t i = 0; i < n; i++)
        if (!handles[i])
            return fbk_error_set(FBK_EINVAL, 0, "fbk_save: handles[%zu] is NULL", i);
    int rc = fbk__store_check_writable(loc->store, "fbk_save");
    if (rc)
        return rc;
    rc = fbk__location_named(loc);
    if (rc < 0)
        return rc;
    if (rc > 0)
        return fbk_error_set(FBK_EINVAL, 0,
                             "fbk_save: location \"%s\" holds names, so it belongs to its maps "
                             "(a save would delete the objects they name): use fbk_map_put, or "
                             "save into another location",
                             loc->name);
    /* a key this store believes the location holds may have been removed
     * by another store (or process) since: ask the backend, so that no
     * persist is skipped on the strength of a stale key set */
    for (size_t i = 0; i < n; i++) {
        fbk_key key;
        fbk_handle_key(handles[i], &key);
        if (fbk_location_contains(loc, &key) && (rc = fbk__location_recheck(loc, &key)) != 0)
            return rc;
    }
    unsigned width = max_parallel ? max_parallel : loc->store->threads;

    /* what the previous save left, to drop after commit */
    size_t nbefore = fbk_location_keys(loc, NULL, 0);
    fbk_key *before = fbk__malloc((nbefore ? nbefore : 1) * sizeof *before);
    if (!before)
        return fbk_error_set(FBK_ENOMEM, 0, "fbk_save: cannot allocate %zu keys", nbefore);
    nbefore = fbk_location_keys(loc, before, nbefore);

    /* everything the steps after commit need is allocated before it, so a
     * failure returned after a successful commit can only be a failed remove */
    fbk__keymap keep;
    fbk__keymap_init(&keep);
    rc = fbk__keymap_reserve(&keep, n);
    if (rc) {
        fbk__free(before);
        return fbk_error_set(FBK_ENOMEM, 0, "fbk_save: cannot allocate the set of %zu keys", n);
    }
    rc = persist_all(loc, handles, n, width);
    if (rc == FBK_OK)
        rc = fbk_location_sync(loc);
    if (rc == FBK_OK && commit)
        rc = commit(arg);
    if (rc) {
        fbk__keymap_free(&keep);
        fbk__free(before);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        fbk_key key;
        fbk_handle_key(handles[i], &key);
        fbk__keymap_put(&keep, &key, (void *)1); /* reserved above: cannot fail */
    }
    /* Committed: the save succeeded.  A stale key that cannot be removed is
     * garbage, not a failure of this save: it is reported to on_error (and
     * by the next fbk_store_drain) and removed by a later save. */
    for (size_t i = 0; i < nbefore; i++) {
        if (fbk__keymap_get(&keep, &before[i]))
            continue;
        int r = fbk_location_remove(loc, &before[i]);
        if (r)
            fbk__store_report(loc->store, r);
    }
    fbk__keymap_free(&keep);
    fbk__free(before);
    fbk__error_clear();
    return FBK_OK;
}
