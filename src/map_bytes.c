/* map_bytes.c -- fbk_map_put_bytes / fbk_map_get_bytes: values as bytes,
 * copied once into memory the map holds until the batch writes them into
 * the location with their bindings (write_names), and read straight from
 * the location into the caller's buffer (docs/maps.md). */
#include "map_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------- bytes put/get */

/* fbk_map_put_bytes on a backend without write_names: through an item. */
static int put_decoded(fbk_map *m, const void *name, size_t len, const void *data, size_t size)
{
    const fbk_codec *c = &m->pool->codec;
    void *obj = NULL;
    int rc = c->decode(data, size, &obj, c->ctx);
    if (rc)
        return fbk__codec_error(rc, "decode");
    fbk_handle *h;
    rc = fbk_insert(m->pool, obj, &h);
    if (rc) {
        c->destroy(obj, c->ctx);
        return rc;
    }
    rc = fbk_map_put(m, name, len, h);
    fbk_handle_release(h);
    return rc;
}

int fbk_map_put_bytes(fbk_map *m, const void *name, size_t len, const void *data, size_t size)
{
    if (!m || (!data && size))
        return fbk__map_bad("fbk_map_put_bytes", !m ? "map is NULL" : "data is NULL");
    int rc = fbk__map_check_name("fbk_map_put_bytes", name, len);
    if (rc == FBK_OK)
        rc = fbk__store_check_writable(m->s, "fbk_map_put_bytes");
    if (rc)
        return rc;
    if (!FBK__WRITE_NAMES(m->s))
        return put_decoded(m, name, len, data, size);
    /* more than MAP_FRAMES_MAX pending in memory: this one goes through an
     * item and the spill area, as fbk_map_put does (no stall, memory
     * bounded) */
    pthread_mutex_lock(&m->mu);
    bool full = m->frame_bytes + size > MAP_FRAMES_MAX;
    pthread_mutex_unlock(&m->mu);
    if (full)
        return put_decoded(m, name, len, data, size);
    if (size > SIZE_MAX - sizeof(mframe) - 1)
        return fbk__map_bad("fbk_map_put_bytes", "size too large");
    mframe *f = fbk__malloc(sizeof *f + (size ? size : 1));
    if (!f)
        return fbk_error_set(FBK_ENOMEM, 0, "fbk_map_put_bytes: cannot copy a value of %zu bytes",
                             size);
    atomic_init(&f->refs, 1);
    f->len = size;
    rc = fbk__frame_copy(f->hdr, f->data, data, size);
    if (rc) {
        fbk__free(f);
        return rc;
    }
    fbk_key key;
    fbk_key_generate(&key);
    pthread_mutex_lock(&m->mu);
    mentry *e;
    rc = fbk__map_bind_name(m, name, len, &key, size, "fbk_map_put_bytes", &e);
    if (rc) {
        pthread_mutex_unlock(&m->mu);
        fbk__map_frame_release(f);
        return rc;
    }
    /* the change owns f; the entry lends it to gets until the batch */
    bool nosync = m->flags & FBK_MAP_NOSYNC;
    e->ptok = NULL;
    e->pframe = f;
    m->ops[m->nops++] = (mop){e, key, size, NULL, f, true, nosync};
    e->pending++;
    m->frame_bytes += size;
    uint64_t gen = fbk__map_enforce_limit(m, e, ++m->op_gen);
    return fbk__map_finish_change(m, gen);
}

/* fbk_map_get_bytes's read callback: the frame's payload into the caller's
 * memory, checked in the same pass. */
typedef struct read_ctx {
    fbk_buf_fn buf;
    void *arg;
} read_ctx;

static int read_into(const void *src, size_t len, void *arg)
{
    read_ctx *r = arg;
    size_t plen;
    int rc = fbk__frame_check_header(src, len, &plen);
    if (rc)
        return rc;
    void *dst = r->buf(plen, r->arg);
    if (!dst)
        return fbk_error_set(FBK_ENOMEM, 0, "fbk_map_get_bytes: no buffer for %zu bytes", plen);
    return fbk__frame_copy_check(src, dst, (const unsigned char *)src + FBK__FRAME_HDR, plen);
}

/* The encoded form of h's object into the caller's memory; releases h. */
static int copy_handle(fbk_map *m, fbk_handle *h, fbk_buf_fn buf, void *arg)
{
    const void *obj;
    int rc = fbk_load(h, &obj);
    if (rc == FBK_OK) {
        const fbk_codec *c = &m->pool->codec;
        size_t n = c->size(obj, c->ctx);
        void *dst = buf(n, arg);
        const void *v = dst && c->view ? c->view(obj, c->ctx) : NULL;
        if (!dst) {
            rc = fbk_error_set(FBK_ENOMEM, 0, "fbk_map_get_bytes: no buffer for %zu bytes", n);
        } else if (v) {
            if (n)
                memcpy(dst, v, n);
        } else {
            int e = c->encode(obj, dst, n, c->ctx);
            if (e)
                rc = fbk__codec_error(e, "encode");
        }
        fbk_unload(h);
    }
    fbk_handle_release(h);
    return rc;
}

int fbk_map_get_bytes(fbk_map *m, const void *name, size_t len, fbk_buf_fn buf, void *arg)
{
    if (!m || !buf)
        return fbk__map_bad("fbk_map_get_bytes", "NULL argument");
    int rc = fbk__map_check_name("fbk_map_get_bytes", name, len);
    if (rc)
        return rc;
    fbk_store *s = m->s;
    fbk_key prev;
    bool have_prev = false;
    for (;;) {
        fbk_key key;
        bool pending;
        fbk__token *ptok = NULL;
        mframe *pframe = NULL;
        rc = fbk__map_lookup_for(m, "fbk_map_get_bytes", name, len, &key, &pending, &ptok,
                                 &pframe);
        if (rc)
            return rc;
        if (pframe) { /* put_bytes, not in the location yet: from memory */
            size_t n = pframe->len;
            void *dst = buf(n, arg);
            if (dst && n)
                memcpy(dst, pframe->data, n);
            fbk__map_frame_release(pframe);
            return dst ? FBK_OK
                       : fbk_error_set(FBK_ENOMEM, 0, "fbk_map_get_bytes: no buffer for %zu bytes",
                                       n);
        }
        fbk_handle *h = fbk__map_shared(m, name, len, &key);
        if (!h && (ptok || pending || !FBK__LOAD_PERSISTED(s))) {
            /* a spill copy, or not in the location yet: through an item */
            if (ptok)
                fbk__token_release(ptok);
            rc = fbk_map_get(m, name, len, &h);
            if (rc)
                return rc;
        } else if (ptok) {
            fbk__token_release(ptok);
        }
        if (h) /* an item of this map holds it */
            return copy_handle(m, h, buf, arg);
        if (have_prev && fbk_key_equal(&key, &prev))
            return fbk__map_vanished(m, "fbk_map_get_bytes", name, len, &key);
        prev = key;
        have_prev = true;
        rc = fbk__location_register_begin(m->loc, &key);
        if (rc == FBK_OK) {
            read_ctx r = {buf, arg};
            rc = FBK__LOAD_PERSISTED(s)(s->self, m->loc->bloc, &key, read_into, &r);
            fbk__location_register_end(m->loc, &key);
        }
        if (rc == FBK_ECORRUPT) {
            char why[256], t[FBK_KEY_STRLEN + 1];
            snprintf(why, sizeof why, "%s", fbk_errmsg());
            fbk_key_format(&key, t);
            return fbk_error_set(FBK_ECORRUPT, 0,
                                 "fbk_map_get_bytes: the object %s of name \"%.*s\"%s in location "
                                 "\"%s\" is damaged: %s",
                                 t, (int)(len > 64 ? 64 : len), (const char *)name,
                                 len > 64 ? "..." : "", m->loc->name, why);
        }
        /* gone meanwhile (another process rebound the name): look again */
        if (rc != FBK_ENOTFOUND)
            return rc;
    }
}

