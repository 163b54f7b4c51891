/* lmdb_txn.c -- group commit: many threads' writes share one LMDB write
 * transaction.
 *
 * LMDB has one writer per environment and a commit costs a write of the meta
 * page (and, for the durable environment, an fdatasync).  So a writer joins
 * the batch that is open, if any, runs its operation in the batch's
 * transaction, and waits until the batch commits.  The batch's *leader* (the
 * thread that began the transaction) commits it once every member has left:
 * LMDB's writer lock is a mutex owned by the thread that began the
 * transaction, so begin and commit must happen on the same thread (see
 * MDB_NOTLS in lmdb.h).  Members use the transaction one at a time, under m.
 *
 * Writers that arrive while a batch is full or committing queue for the next
 * one; when it opens, all queued writers are admitted at once (counted in
 * `members` up front), so the batch grows to the number of waiting threads
 * instead of committing after the first write.
 *
 * Map growth: before an operation runs, its pages (an upper bound) must fit in
 * the map next to what the batch already wrote; if not, the batch is closed
 * and the next leader grows the map first, while no transaction is open.  If
 * LMDB still reports MDB_MAP_FULL (the estimate was wrong), the transaction is
 * lost: every member of the batch runs its operation again after a growth.
 */
#include "lmdb_internal.h"

#define BATCH_MAX_OPS 1024
#define BATCH_MAX_BYTES ((size_t)64 << 20)
#define MAX_RETRIES 8

static int joinable(const fbk__lmdb_env *e, size_t need)
{
    return !e->doomed && e->batch_ops < BATCH_MAX_OPS && e->batch_bytes < BATCH_MAX_BYTES &&
           fbk__lmdb_fits(e, need);
}

/* Begins the next batch as its leader (m held, state IDLE).  1: begun;
 * 0: the map was resized or the environment reopened meanwhile, look again;
 * < 0: error.  LMDB's writer mutex is taken with m released (state BEGINNING
 * keeps others out), so m is never held while waiting for it.  *reopened:
 * this writer already reopened the environment once (it does not twice). */
static int begin_batch(fbk__lmdb_env *e, size_t need, int *reopened)
{
    if (e->broken && (!e->reopenable || *reopened)) {
        pthread_cond_broadcast(&e->cv);
        return fbk__lmdb_error(e->broken, "%s: unusable after a failed map resize", e->what);
    }
    if ((e->broken || !e->env) && !*reopened) {
        /* a resize failed and left no map, or the last reopen failed: reopen
         * at the last map size that worked, then look again */
        *reopened = 1;
        int err = fbk__lmdb_reopen(e, e->reopens);
        return err ? err : 0;
    }
    if (!e->env) {
        pthread_cond_broadcast(&e->cv);
        return fbk__lmdb_error(MDB_PANIC, "%s: environment %s could not be reopened", e->what,
                               e->path);
    }
    if (e->force_grow || !fbk__lmdb_fits(e, need)) {
        int err = fbk__lmdb_grow(e, need);
        return err ? err : 0;
    }
    e->state = FBK__LMDB_BEGINNING;
    pthread_mutex_unlock(&e->m);
    MDB_txn *txn;
    int rc = mdb_txn_begin(e->env, NULL, 0, &txn);
    pthread_mutex_lock(&e->m);
    e->state = FBK__LMDB_IDLE;
    if (rc == MDB_MAP_RESIZED) { /* another process grew the map */
        int err = fbk__lmdb_grow(e, 0);
        return err ? err : 0;
    }
    if (rc == MDB_PANIC && e->reopenable && !*reopened) {
        /* LMDB marked the environment fatal (a failed meta-page write of an
         * earlier commit, whose writers got that error): reopen it in
         * place, then begin on it. */
        *reopened = 1;
        int err = fbk__lmdb_reopen(e, e->reopens);
        return err ? err : 0;
    }
    if (rc != 0) {
        pthread_cond_broadcast(&e->cv);
        return fbk__lmdb_error(rc, "%s: begin write transaction", e->what);
    }
    e->txn = txn;
    e->batch_gen++;
    e->queued--; /* the leader itself */
    e->members = 1 + e->queued;
    e->queued = 0;
    e->state = FBK__LMDB_OPEN;
    pthread_cond_broadcast(&e->cv);
    return 1;
}

/* Enters a batch (m held): joins the open one or waits for the next.  Sets
 * *leader when this thread began it.  0 or FBK_E*. */
static int enter(fbk__lmdb_env *e, size_t need, int *leader)
{
    *leader = 0;
    if (e->state == FBK__LMDB_OPEN && joinable(e, need)) {
        e->members++;
        return FBK_OK;
    }
    if (e->state == FBK__LMDB_OPEN)
        e->state = FBK__LMDB_CLOSED; /* commit it soon; we take the next one */
    unsigned long long ticket = e->batch_gen + 1;
    int reopened = 0;
    e->queued++;
    for (;;) {
        if (e->batch_gen >= ticket)
            return FBK_OK; /* admitted: the leader counted us in members */
        if (e->state == FBK__LMDB_IDLE) {
            int r = begin_batch(e, need, &reopened);
            if (r == 1)
                *leader = 1;
            if (r == 1)
                return FBK_OK;
            if (r < 0) {
                e->queued--;
                return r;
            }
            continue;
        }
        pthread_cond_wait(&e->cv, &e->m);
    }
}

/* The leader: waits for the members, commits (or aborts) and hands every
 * waiter the result (m held; released during the commit). */
static void finish_batch(fbk__lmdb_env *e)
{
    while (e->members > 0)
        pthread_cond_wait(&e->cv, &e->m);
    e->state = FBK__LMDB_COMMITTING;
    MDB_txn *txn = e->txn;
    int doomed = e->doomed;
    int empty = e->waiters == NULL;
    pthread_mutex_unlock(&e->m);
    int rc = doomed;
    if (doomed || empty)
        mdb_txn_abort(txn);
    else
        rc = mdb_txn_commit(txn);
    pthread_mutex_lock(&e->m);
    e->txn = NULL;
    if (rc == MDB_MAP_FULL)
        e->force_grow = 1;
    else if (rc != 0 && !doomed)
        fbk__lmdb_commit_failed(e, rc); /* final for the sync of dirty locations */
    if (rc == 0)
        fbk__lmdb_env_refresh(e);
    for (fbk__lmdb_waiter *w = e->waiters, *next; w; w = next) {
        next = w->next;
        w->batch_rc = rc;
        w->done = 1;
    }
    e->waiters = NULL;
    e->batch_pages = e->batch_bytes = 0;
    e->batch_ops = 0;
    e->doomed = 0;
    e->state = FBK__LMDB_IDLE;
    pthread_cond_broadcast(&e->cv);
}

/* Runs op once in the batch this thread entered (m held).  Returns op's
 * result; links w into the batch's waiters when the op's outcome depends on
 * the commit. */
static int run_op(fbk__lmdb_env *e, fbk__lmdb_op_fn op, void *arg, size_t need, size_t bytes,
                  fbk__lmdb_waiter *w)
{
    int rc = e->doomed ? 0 : op(e->txn, arg);
    if (rc != 0 && !FBK__LMDB_FATAL(rc))
        return rc; /* the op undid its own writes; nothing to wait for */
    if (rc == 0) {
        e->batch_pages += need;
        e->batch_bytes += bytes;
        e->batch_ops++;
    } else if (!e->doomed) {
        e->doomed = rc;
    }
    w->next = e->waiters;
    e->waiters = w;
    return rc;
}

int fbk__lmdb_write(fbk__lmdb_env *e, fbk__lmdb_op_fn op, void *arg, size_t need_pages,
                    size_t bytes)
{
    int rc = 0, batch_rc = 0;
    pthread_mutex_lock(&e->m);
    for (int attempt = 0;; attempt++) {
        int leader;
        int err = enter(e, need_pages, &leader);
        if (err != FBK_OK) {
            pthread_mutex_unlock(&e->m);
            return err;
        }
        if (!leader && !e->doomed && !fbk__lmdb_fits(e, need_pages)) {
            /* admitted to a batch that has no room left: take the next */
            if (--e->members == 0)
                pthread_cond_broadcast(&e->cv);
            if (e->state == FBK__LMDB_OPEN)
                e->state = FBK__LMDB_CLOSED;
            attempt--;
            continue;
        }
        fbk__lmdb_waiter w = {0};
        rc = run_op(e, op, arg, need_pages, bytes, &w);
        e->members--;
        if (leader)
            finish_batch(e);
        else if (e->members == 0)
            pthread_cond_broadcast(&e->cv);
        if (rc != 0 && !FBK__LMDB_FATAL(rc)) {
            pthread_mutex_unlock(&e->m);
            return rc;
        }
        while (!w.done)
            pthread_cond_wait(&e->cv, &e->m);
        batch_rc = w.batch_rc;
        if (batch_rc != MDB_MAP_FULL || attempt >= MAX_RETRIES)
            break;
    }
    pthread_mutex_unlock(&e->m);
    if (batch_rc == 0)
        return FBK_OK;
    if (rc != 0)
        return fbk__lmdb_error(rc, "%s: write", e->what);
    return fbk__lmdb_error(batch_rc, "%s: commit of a shared write transaction", e->what);
}
