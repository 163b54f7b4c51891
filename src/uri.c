/* uri.c -- splitting a store URI into scheme and argument. */
#include "fbk_internal.h"

#include <string.h>

int fbk__uri_split(const char *uri, char scheme[FBK__SCHEME_MAX + 1], const char **arg)
{
    if (!uri)
        return fbk_error_set(FBK_EINVAL, 0, "store URI is NULL");
    const char *c = strchr(uri, ':');
    size_t n = c ? (size_t)(c - uri) : 0;
    /* "scheme:rest" when the part before ':' looks like a URI scheme
     * (RFC 3986: a letter, then letters, digits, '+', '-', '.'); anything
     * else, "/srv/a:b" included, is a bare path and means lmdb. */
    bool is_scheme = n > 0;
    for (size_t i = 0; i < n && is_scheme; i++) {
        char ch = uri[i];
        bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
        bool other = (ch >= '0' && ch <= '9') || ch == '+' || ch == '-' || ch == '.';
        is_scheme = alpha || (i > 0 && other);
    }
    if (!is_scheme) {
        if (!*uri)
            return fbk_error_set(FBK_EINVAL, 0, "store URI is empty");
        strcpy(scheme, "lmdb");
        *arg = uri;
        return FBK_OK;
    }
    if (n > FBK__SCHEME_MAX)
        return fbk_error_set(
            FBK_EINVAL, 0, "unknown backend scheme in \"%.64s\" (known: lmdb:, file:, mem:)", uri);
    for (size_t i = 0; i < n; i++) {
        char ch = uri[i];
        scheme[i] =
            (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch; /* schemes ignore case */
    }
    scheme[n] = '\0';
    *arg = c + 1;
    return FBK_OK;
}
