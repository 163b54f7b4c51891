/* uri_fuzzer -- splitting a store URI: never out of bounds, the scheme is
 * always a short lowercase name and the argument a suffix of the URI. */
#include "fbk_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *uri = malloc(size + 1);
    if (!uri)
        return 0;
    memcpy(uri, data, size);
    uri[size] = '\0';
    char scheme[FBK__SCHEME_MAX + 1];
    const char *arg = NULL;
    if (fbk__uri_split(uri, scheme, &arg) == FBK_OK) {
        size_t n = strlen(scheme);
        if (n == 0 || n > FBK__SCHEME_MAX || arg < uri || arg > uri + strlen(uri))
            __builtin_trap();
        for (size_t i = 0; i < n; i++)
            if (scheme[i] >= 'A' && scheme[i] <= 'Z')
                __builtin_trap();
    }
    free(uri);
    return 0;
}
