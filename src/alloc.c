/* alloc.c -- every allocation libfbk makes goes through here, so a program
 * (or the out-of-memory test loop) can plug in its own allocator. */
#include "fbk_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static void *sys_malloc(size_t n, void *ctx)
{
    (void)ctx;
    return malloc(n);
}
static void *sys_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    return realloc(p, n);
}
static void sys_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

static const fbk_allocator sys_allocator = {sys_malloc, sys_realloc, sys_free, NULL};
static fbk_allocator current = {sys_malloc, sys_realloc, sys_free, NULL};

int fbk_set_allocator(const fbk_allocator *a)
{
    if (a && (!a->malloc || !a->realloc || !a->free))
        return fbk_error_set(FBK_EINVAL, 0,
                             "fbk_set_allocator: malloc, realloc and free are required");
    current = a ? *a : sys_allocator;
    return FBK_OK;
}

void *fbk__malloc(size_t n) { return current.malloc(n ? n : 1, current.ctx); }

void *fbk__calloc(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    size_t n = count * size;
    void *p = fbk__malloc(n);
    if (p)
        memset(p, 0, n ? n : 1);
    return p;
}

void *fbk__realloc(void *p, size_t n) { return current.realloc(p, n ? n : 1, current.ctx); }

void fbk__free(void *p)
{
    if (p)
        current.free(p, current.ctx);
}

/* the same, for backends (fbk_backend.h) */
void *fbk_malloc(size_t size) { return fbk__malloc(size); }
void *fbk_calloc(size_t count, size_t size) { return fbk__calloc(count, size); }
void *fbk_realloc(void *ptr, size_t size) { return fbk__realloc(ptr, size); }
void fbk_free(void *ptr) { fbk__free(ptr); }

char *fbk__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = fbk__malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Two patterns make glibc hand memory back to the kernel and fault it in
 * afresh -- one page fault per 4 KiB, several microseconds each on a VM:
 *  - LMDB mallocs the dirty overflow pages of a write transaction (20 KiB
 *    for a 16 KiB value) and frees them all at commit: a worker's arena then
 *    finds its top chunk above the trim threshold (128 KiB until the program
 *    first frees a large block) and gives the pages back after every commit;
 *  - large objects are malloc'd on the program's threads and freed on the
 *    workers' after their eviction write: with a 1 MiB blob, each one went
 *    to fresh pages.
 * Freeing one mmapped block (never touched, so it costs no page fault)
 * makes glibc raise its thresholds the way it does by itself the first time
 * a program frees a block over 128 KiB: mmap threshold 16 MiB, trim
 * threshold 32 MiB, so the memory is reused instead.  Measured: libfbk-alone
 * put on lmdb: 30-34 -> 13-20 us per 16 KiB object (BENCH_ONLY=fbk
 * bench_lmdb 20000; page faults 33-37k -> 19k); see docs/design.md for
 * file:.  Without effect when the program fixed the thresholds (mallopt,
 * GLIBC_TUNABLES) or uses another allocator.  Once per process, at the
 * first store open. */
static void nudge(void)
{
#ifdef __GLIBC__
    void *volatile p = malloc((size_t)16 << 20);
    free(p);
#endif
}

void fbk__malloc_nudge(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, nudge);
}
