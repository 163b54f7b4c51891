/* file_buf.c -- the write/read buffers a file: store keeps for reuse
 * (FILE_BUF_CACHE of them, none above FILE_BUF_KEEP_MAX). */
#include "file_internal.h"

#include <pthread.h>
#include <stdlib.h>

/* --------------------------------------------------------- buffer cache */

void *fbk__file_buf_get(file_backend *b, size_t len, size_t *cap)
{
    size_t want = len ? len : 1;
    void *p = NULL;
    pthread_mutex_lock(&b->buf_mu);
    for (size_t i = 0; i < b->nbufs; i++) {
        if (b->bufs[i].cap >= want) {
            p = b->bufs[i].p;
            *cap = b->bufs[i].cap;
            b->bufs[i] = b->bufs[--b->nbufs];
            break;
        }
    }
    pthread_mutex_unlock(&b->buf_mu);
    if (p)
        return p;
    p = malloc(want);
    *cap = want;
    return p;
}

void fbk__file_buf_put(file_backend *b, void *p, size_t cap)
{
    if (!p)
        return;
    if (cap <= FILE_BUF_KEEP_MAX) {
        pthread_mutex_lock(&b->buf_mu);
        if (b->nbufs < FILE_BUF_CACHE) {
            b->bufs[b->nbufs].p = p;
            b->bufs[b->nbufs].cap = cap;
            b->nbufs++;
            p = NULL;
        } else {
            /* replace the smallest cached buffer if this one is bigger */
            size_t small = 0;
            for (size_t i = 1; i < b->nbufs; i++)
                if (b->bufs[i].cap < b->bufs[small].cap)
                    small = i;
            if (b->bufs[small].cap < cap) {
                void *old = b->bufs[small].p;
                b->bufs[small].p = p;
                b->bufs[small].cap = cap;
                p = old;
            }
        }
        pthread_mutex_unlock(&b->buf_mu);
    }
    free(p);
}
