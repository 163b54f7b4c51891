/* worker.c -- the store's background threads and the count of work in
 * flight (for fbk_store_drain).
 *
 * Deadlock freedom: a job never waits for another job.  Jobs only wait for
 * (a) a mutex that no thread holds across a wait, or (b) a backend or codec
 * call running on another thread, which itself never waits for a job.  So a
 * store with one worker cannot deadlock (tests/test_deadlock.c).
 */
#include "fbk_internal.h"

#include <errno.h>
#include <string.h>

/* The workers object the current thread works for, if any. */
static _Thread_local fbk__workers *tls_workers;

static void *worker_main(void *arg)
{
    fbk__workers *w = arg;
    tls_workers = w;
    pthread_mutex_lock(&w->mu);
    w->started++; /* fbk__workers_start waits for every thread to get here */
    pthread_cond_broadcast(&w->exit_cv);
    for (;;) {
        while (!w->head && !w->stop)
            pthread_cond_wait(&w->work_cv, &w->mu);
        if (!w->head)
            break; /* stop, and nothing left */
        fbk__job *job = w->head, *last = job;
        size_t n = 1;
        if (job->run_many)
            while (n < w->batch_max && last->next && last->next->run_many == job->run_many) {
                last = last->next;
                n++;
            }
        w->head = last->next;
        if (!w->head)
            w->tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&w->mu);
        fbk__error_clear();
        /* both may free the objects the jobs are embedded in */
        if (n > 1)
            job->run_many(job, n);
        else
            job->run(job);
        pthread_mutex_lock(&w->mu);
        w->pending -= n;
        if (w->pending == 0)
            pthread_cond_broadcast(&w->idle_cv);
    }
    bool last = --w->alive == 0;
    bool fin = last && w->free_on_exit;
    pthread_cond_broadcast(&w->exit_cv);
    pthread_mutex_unlock(&w->mu);
    tls_workers = NULL;
    if (fin)
        w->finalize(w->arg); /* frees w: touch nothing after this */
    return NULL;
}

int fbk__workers_start(fbk__workers *w, unsigned n, void (*finalize)(void *), void *arg)
{
    memset(w, 0, sizeof *w);
    w->finalize = finalize;
    w->arg = arg;
    w->batch_max = 1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->work_cv, NULL);
    pthread_cond_init(&w->idle_cv, NULL);
    pthread_cond_init(&w->exit_cv, NULL);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = FBK_OK;
    for (unsigned i = 0; i < n; i++) {
        pthread_t t;
        pthread_mutex_lock(&w->mu);
        w->alive++;
        pthread_mutex_unlock(&w->mu);
        int e = pthread_create(&t, &attr, worker_main, w);
        if (e) {
            pthread_mutex_lock(&w->mu);
            w->alive--;
            pthread_mutex_unlock(&w->mu);
            rc = fbk_error_from_errno(e, "cannot start worker thread %u of %u", i + 1, n);
            if (rc != FBK_ENOMEM)
                rc = FBK_ENOMEM; /* EAGAIN: out of thread resources */
            break;
        }
    }
    pthread_attr_destroy(&attr);
    /* Return only once every thread runs its loop: a thread still starting
     * may hold locks of the C library's or a sanitizer's allocator, and a
     * program that forks right after opening a store would hand its child
     * those locks taken (a deadlock in the child's first allocation). */
    pthread_mutex_lock(&w->mu);
    while (w->started < w->alive)
        pthread_cond_wait(&w->exit_cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    if (rc) {
        fbk__workers_shutdown(w);
        fbk__workers_destroy(w);
    }
    return rc;
}

void fbk__workers_submit(fbk__workers *w, fbk__job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&w->mu);
    if (w->tail)
        w->tail->next = job;
    else
        w->head = job;
    w->tail = job;
    w->pending++;
    pthread_cond_signal(&w->work_cv);
    pthread_mutex_unlock(&w->mu);
}

void fbk__workers_set_batch(fbk__workers *w, size_t batch_max)
{
    pthread_mutex_lock(&w->mu);
    w->batch_max = batch_max ? batch_max : 1;
    pthread_mutex_unlock(&w->mu);
}

void fbk__workers_drain(fbk__workers *w)
{
    pthread_mutex_lock(&w->mu);
    while (w->pending > 0)
        pthread_cond_wait(&w->idle_cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

bool fbk__workers_shutdown(fbk__workers *w)
{
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->work_cv);
    if (tls_workers == w && w->alive > 0) {
        w->free_on_exit = true;
        pthread_mutex_unlock(&w->mu);
        return false;
    }
    while (w->alive > 0)
        pthread_cond_wait(&w->exit_cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    return true;
}

void fbk__workers_destroy(fbk__workers *w)
{
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->work_cv);
    pthread_cond_destroy(&w->idle_cv);
    pthread_cond_destroy(&w->exit_cv);
}

bool fbk__workers_on_worker(const fbk__workers *w) { return tls_workers == w; }
