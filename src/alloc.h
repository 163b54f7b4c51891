/* alloc.h -- libfbk's own allocations, through the table set by
 * fbk_set_allocator (alloc.c).  Used by the core and the mem backend. */
#ifndef FBK_ALLOC_H
#define FBK_ALLOC_H

#include <stddef.h>

void *fbk__malloc(size_t n);
void *fbk__calloc(size_t count, size_t size);
/* NULL on failure, p untouched */
void *fbk__realloc(void *p, size_t n);
void fbk__free(void *p);
/* Raises glibc's malloc thresholds once per process (see alloc.c). */
void fbk__malloc_nudge(void);
char *fbk__strdup(const char *s);

#endif
