/* task.c -- the async forms (spawn_* + JoinHandle): the caller pins the
 * item's current value, a worker does the work, fbk_task_wait joins. */
#include "fbk_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { TASK_WRITE, TASK_PERSIST, TASK_PREFETCH } task_kind;

struct fbk_task {
    fbk__job job;
    task_kind kind;
    uint32_t magic; /* FBK__MAGIC_TASK until freed */
    fbk_handle *h;
    fbk_location *loc;
    pthread_mutex_t mu; /* leaf */
    pthread_cond_t cv;
    int refs; /* the job's + the caller's (unless fire-and-forget) */
    bool caller_gone; /* fbk_task_wait/fbk_task_release dropped the caller's */
    bool done;
    int result;
    char msg[256]; /* fbk_errmsg() of the worker, handed to the waiter */
};

/* Debug builds: t has not been freed (as long as its memory was not reused). */
static void check_task(const fbk_task *t, const char *fn)
{
    FBK__DEBUG_ASSERT(t->magic == FBK__MAGIC_TASK, fn,
                      "the task was already freed (fbk_task_wait or fbk_task_release twice?)");
}

/* With t->mu held: the caller's reference is still there; drops it. */
static void check_caller_locked(fbk_task *t, const char *fn)
{
    FBK__DEBUG_ASSERT(!t->caller_gone, fn,
                      "the task was already waited for or released (fbk_task_wait and "
                      "fbk_task_release each end the caller's use of it)");
    t->caller_gone = true;
}

static void task_unref_locked_and_unlock(fbk_task *t)
{
    bool last = --t->refs == 0;
    pthread_mutex_unlock(&t->mu);
    if (last) {
        pthread_mutex_destroy(&t->mu);
        pthread_cond_destroy(&t->cv);
        t->magic = FBK__MAGIC_DEAD;
        fbk__free(t);
    }
}

static void task_run(fbk__job *job)
{
    fbk_task *t = (fbk_task *)job;
    fbk_handle *h = t->h;
    fbk_location *loc = t->loc;
    int rc;
    switch (t->kind) {
    case TASK_WRITE:
        rc = fbk__item_ensure_stored(h, NULL, NULL);
        fbk__item_unpin(h);
        break;
    case TASK_PERSIST:
        rc = fbk__item_persist_pinned(h, loc);
        break;
    default:
        rc = fbk__item_fill(h);
        fbk__item_unpin(h);
        break;
    }
    if (rc)
        fbk__error_keep(rc);
    pthread_mutex_lock(&t->mu);
    bool waited = t->refs > 1;
    t->done = true;
    t->result = rc;
    snprintf(t->msg, sizeof t->msg, "%s", rc ? fbk_errmsg() : "");
    pthread_cond_broadcast(&t->cv);
    task_unref_locked_and_unlock(t);
    if (rc && !waited)
        fbk__store_report(h->pool->store, rc); /* nobody will read the result */
    if (loc)
        fbk__location_release(loc);
    fbk__item_unref(h);
}

static int task_start(fbk_handle *h, fbk_location *loc, task_kind kind, fbk_task **out,
                      const char *fn)
{
    if (!h || (kind == TASK_PERSIST && !loc))
        return fbk_error_set(FBK_EINVAL, 0, "%s: NULL argument", fn);
    if (loc && loc->store != h->pool->store)
        return fbk_error_set(FBK_EINVAL, 0, "%s: the location belongs to another store", fn);
    FBK__CHECK_HANDLE(h, fn);
    fbk_task *t = fbk__calloc(1, sizeof *t);
    if (!t)
        return fbk_error_set(FBK_ENOMEM, 0, "%s: cannot allocate a task", fn);
    int rc = fbk__item_pin(h);
    if (rc) {
        fbk__free(t);
        return rc;
    }
    t->kind = kind;
    t->magic = FBK__MAGIC_TASK;
    t->h = h;
    t->loc = loc;
    t->refs = out ? 2 : 1;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    fbk__item_ref(h);
    if (loc)
        fbk__location_retain(loc);
    t->job.run = task_run;
    t->job.run_many = NULL;
    if (out)
        *out = t;
    fbk__workers_submit(&h->pool->store->workers, &t->job);
    return FBK_OK;
}

int fbk_write_now_async(fbk_handle *h, fbk_task **out)
{
    return task_start(h, NULL, TASK_WRITE, out, "fbk_write_now_async");
}

int fbk_persist_async(fbk_handle *h, fbk_location *loc, fbk_task **out)
{
    if (loc && fbk__store_readonly(loc->store))
        return fbk__store_check_writable(loc->store, "fbk_persist_async");
    return task_start(h, loc, TASK_PERSIST, out, "fbk_persist_async");
}

int fbk_prefetch(fbk_handle *h, fbk_task **out)
{
    return task_start(h, NULL, TASK_PREFETCH, out, "fbk_prefetch");
}

int fbk_task_wait(fbk_task *t)
{
    if (!t)
        return fbk_error_set(FBK_EINVAL, 0, "fbk_task_wait: task is NULL");
    check_task(t, "fbk_task_wait");
    pthread_mutex_lock(&t->mu);
    check_caller_locked(t, "fbk_task_wait");
    while (!t->done)
        pthread_cond_wait(&t->cv, &t->mu);
    int rc = t->result;
    if (rc)
        fbk_error_set(rc, 0, "%s", t->msg);
    task_unref_locked_and_unlock(t);
    return rc;
}

int fbk_task_done(const fbk_task *t)
{
    if (!t)
        return 0;
    check_task(t, "fbk_task_done");
    fbk_task *m = (fbk_task *)t;
    pthread_mutex_lock(&m->mu);
    FBK__DEBUG_ASSERT(!m->caller_gone, "fbk_task_done",
                      "the task was already waited for or released");
    int d = m->done;
    pthread_mutex_unlock(&m->mu);
    return d;
}

void fbk_task_release(fbk_task *t)
{
    if (!t)
        return;
    check_task(t, "fbk_task_release");
    pthread_mutex_lock(&t->mu);
    check_caller_locked(t, "fbk_task_release");
    task_unref_locked_and_unlock(t);
}
