/* blob.c -- fbk_blob, the ready-made byte-string object, and its codec. */
#include "fbk_internal.h"

#include <stdlib.h>
#include <string.h>

fbk_blob *fbk_blob_new(const void *data, size_t len)
{
    if (len > SIZE_MAX - sizeof(fbk_blob))
        return NULL;
    fbk_blob *b = fbk__malloc(sizeof(fbk_blob) + len);
    if (!b)
        return NULL;
    b->len = len;
    if (data && len)
        memcpy(b->data, data, len);
    return b;
}

void fbk_blob_free(fbk_blob *b) { fbk__free(b); }

static size_t blob_size(const void *obj, void *ctx)
{
    (void)ctx;
    return ((const fbk_blob *)obj)->len;
}

static int blob_encode(const void *obj, void *dst, size_t len, void *ctx)
{
    (void)ctx;
    const fbk_blob *b = obj;
    if (len != b->len)
        return FBK_ECODEC;
    if (len)
        memcpy(dst, b->data, len);
    return 0;
}

static int blob_decode(const void *src, size_t len, void **out, void *ctx)
{
    (void)ctx;
    fbk_blob *b = fbk_blob_new(src, len);
    if (!b)
        return FBK_ENOMEM;
    *out = b;
    return 0;
}

static void blob_destroy(void *obj, void *ctx)
{
    (void)ctx;
    fbk_blob_free(obj);
}

static int blob_clone(const void *obj, void **out, void *ctx)
{
    (void)ctx;
    const fbk_blob *b = obj;
    fbk_blob *c = fbk_blob_new(b->data, b->len);
    if (!c)
        return FBK_ENOMEM;
    *out = c;
    return 0;
}

/* zero copy: a blob's encoded form is its data */
static const void *blob_view(const void *obj, void *ctx)
{
    (void)ctx;
    return ((const fbk_blob *)obj)->data;
}

static int blob_reserve(size_t len, void **obj, void **dst, void *ctx)
{
    (void)ctx;
    fbk_blob *b = fbk_blob_new(NULL, len);
    if (!b)
        return FBK_ENOMEM;
    *obj = b;
    *dst = b->data;
    return 0;
}

const fbk_codec fbk_blob_codec = {
    .size = blob_size,
    .encode = blob_encode,
    .decode = blob_decode,
    .destroy = blob_destroy,
    .clone = blob_clone,
    .ctx = NULL,
    .view = blob_view,
    .reserve = blob_reserve,
};
