/* alloc.c -- every allocation libfbk makes goes through here, so a program
 * (or the out-of-memory test loop) can plug in its own allocator. */
#include "fbk_internal.h"

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

void fbk__free(void *p)
{
    if (p)
        current.free(p, current.ctx);
}

char *fbk__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = fbk__malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}
