/* uri.c -- splitting a store URI into scheme, argument and parameters. */
#include "fbk_internal.h"

#include <errno.h>
#include <stdlib.h>
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
        return fbk_error_set(FBK_EINVAL, 0,
                             "unknown backend scheme in \"%.64s\" (a scheme has at most %d "
                             "characters; fbk_backend_lookup tells the known ones)",
                             uri, FBK__SCHEME_MAX);
    for (size_t i = 0; i < n; i++) {
        char ch = uri[i];
        scheme[i] =
            (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch; /* schemes ignore case */
    }
    scheme[n] = '\0';
    *arg = c + 1;
    return FBK_OK;
}

/* Decodes src[0..n) (percent-encoding, '+' stays '+') into a fresh string
 * *res; 0 or FBK_E* with a message. */
static int pct_decode(const char *src, size_t n, const char *uri, char **res)
{
    char *out = fbk__malloc(n + 1);
    *res = NULL;
    if (!out)
        return fbk_error_set(FBK_ENOMEM, 0, "URI parameters: out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] != '%') {
            out[k++] = src[i];
            continue;
        }
        if (i + 2 >= n || fbk__hexval(src[i + 1]) < 0 || fbk__hexval(src[i + 2]) < 0) {
            fbk__free(out);
            return fbk_error_set(FBK_EINVAL, 0,
                                 "URI \"%.200s\": bad percent-encoding in \"%.*s\"", uri,
                                 (int)n, src);
        }
        char ch = (char)(fbk__hexval(src[i + 1]) * 16 + fbk__hexval(src[i + 2]));
        if (ch == '\0') {
            fbk__free(out);
            return fbk_error_set(FBK_EINVAL, 0, "URI \"%.200s\": %%00 is not allowed", uri);
        }
        out[k++] = ch;
        i += 2;
    }
    out[k] = '\0';
    *res = out;
    return FBK_OK;
}

void fbk__uri_free(fbk__uri *u)
{
    if (!u)
        return;
    for (size_t i = 0; i < u->n; i++) {
        fbk__free(u->params[i].key);
        fbk__free(u->params[i].value);
    }
    fbk__free(u->params);
    fbk__free(u->arg);
    memset(u, 0, sizeof *u);
}

int fbk__uri_parse(const char *uri, fbk__uri *u)
{
    memset(u, 0, sizeof *u);
    const char *arg;
    int rc = fbk__uri_split(uri, u->scheme, &arg);
    if (rc)
        return rc;
    const char *q = strchr(arg, '?');
    size_t alen = q ? (size_t)(q - arg) : strlen(arg);
    u->arg = fbk__malloc(alen + 1);
    if (!u->arg)
        return fbk_error_set(FBK_ENOMEM, 0, "URI: out of memory");
    memcpy(u->arg, arg, alen);
    u->arg[alen] = '\0';
    if (!q)
        return FBK_OK;
    /* count the pairs first so that one allocation holds them */
    size_t cap = 1;
    for (const char *p = q + 1; *p; p++)
        cap += *p == '&';
    u->params = fbk__calloc(cap, sizeof *u->params);
    if (!u->params) {
        fbk__uri_free(u);
        return fbk_error_set(FBK_ENOMEM, 0, "URI: out of memory");
    }
    const char *p = q + 1;
    while (*p) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > 0) {
            const char *eq = memchr(p, '=', len);
            if (!eq || eq == p) {
                rc = fbk_error_set(FBK_EINVAL, 0,
                                   "URI \"%.200s\": parameter \"%.*s\" is not key=value", uri,
                                   (int)len, p);
                fbk__uri_free(u);
                return rc;
            }
            fbk__uri_param *par = &u->params[u->n];
            rc = pct_decode(p, (size_t)(eq - p), uri, &par->key);
            if (rc == FBK_OK)
                rc = pct_decode(eq + 1, len - (size_t)(eq - p) - 1, uri, &par->value);
            if (rc) {
                u->n++; /* freed below */
                fbk__uri_free(u);
                return rc;
            }
            for (size_t i = 0; i < u->n; i++)
                if (strcmp(u->params[i].key, par->key) == 0) {
                    rc = fbk_error_set(FBK_EINVAL, 0,
                                       "URI \"%.200s\": parameter \"%s\" is given twice", uri,
                                       par->key);
                    u->n++;
                    fbk__uri_free(u);
                    return rc;
                }
            u->n++;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    return FBK_OK;
}

int fbk__parse_size(const char *text, const char *what, uint64_t *out)
{
    if (!text || !*text || *text == '-' || *text == ' ')
        return fbk_error_set(FBK_EINVAL, 0, "%s: \"%s\" is not a size", what, text ? text : "");
    errno = 0;
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text)
        return fbk_error_set(FBK_EINVAL, 0, "%s: \"%s\" is not a size", what, text);
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'b' || *end == 'B')
        end += (*end == 'i' && (end[1] == 'b' || end[1] == 'B')) ? 2 : 1;
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return fbk_error_set(FBK_EINVAL, 0, "%s: \"%s\" is not a size (digits, then k/m/g/t)",
                             what, text);
    *out = (uint64_t)v << shift;
    return FBK_OK;
}
