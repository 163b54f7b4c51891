/* frame.c -- the blob frame every backend stores, written and checked here
 * once so that all backends detect corruption the same way.
 *
 *   offset  size  field
 *   0       4     magic "FBKB"
 *   4       1     format version (1)
 *   5       3     reserved, zero
 *   8       8     payload length, little-endian
 *   16      8     XXH3-64 of the payload (seed 0), little-endian
 *   24      n     payload: the codec's bytes
 */
#include "fbk_internal.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#ifdef FBK_HAVE_XXH_DISPATCH
/* the same XXH3, with the widest vector unit the CPU has (CMakeLists.txt) */
#include <xxh_x86dispatch.h>
#endif

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* A codec's non-zero result: ENOMEM is passed on, anything else is ECODEC. */
int fbk__codec_error(int rc, const char *what)
{
    if (rc == FBK_ENOMEM)
        return fbk_error_set(FBK_ENOMEM, 0, "codec %s: out of memory", what);
    return fbk_error_set(FBK_ECODEC, 0, "codec %s failed (returned %d)", what, rc);
}

void fbk__frame_header(unsigned char hdr[FBK__FRAME_HDR], const void *payload, size_t len)
{
    memcpy(hdr, FBK__FRAME_MAGIC, 4);
    hdr[4] = FBK__FRAME_VERSION;
    hdr[5] = hdr[6] = hdr[7] = 0;
    put_le64(hdr + 8, (uint64_t)len);
    put_le64(hdr + 16, XXH3_64bits(payload, len));
}

int fbk__frame_fill(void *dst, size_t len, void *arg)
{
    const fbk__fill_ctx *c = arg;
    unsigned char *p = dst;
    if (len != FBK__FRAME_HDR + c->payload)
        return fbk_error_set(FBK_EINVAL, 0, "frame: backend gave %zu bytes, %zu wanted", len,
                             (size_t)FBK__FRAME_HDR + c->payload);
    int rc = c->codec->encode(c->obj, p + FBK__FRAME_HDR, c->payload, c->codec->ctx);
    if (rc)
        return fbk__codec_error(rc, "encode");
    fbk__frame_header(p, p + FBK__FRAME_HDR, c->payload);
    return FBK_OK;
}

int fbk__frame_check_header(const unsigned char *p, size_t len, size_t *plen)
{
    if (!p || len < FBK__FRAME_HDR)
        return fbk_error_set(FBK_ECORRUPT, 0, "frame: %zu bytes, shorter than the %d-byte header",
                             len, FBK__FRAME_HDR);
    if (memcmp(p, FBK__FRAME_MAGIC, 4) != 0)
        return fbk_error_set(FBK_ECORRUPT, 0, "frame: bad magic");
    if (p[4] != FBK__FRAME_VERSION)
        return fbk_error_set(FBK_ECORRUPT, 0, "frame: unknown format version %u", p[4]);
    if (p[5] | p[6] | p[7])
        return fbk_error_set(FBK_ECORRUPT, 0, "frame: reserved header bytes are not zero");
    uint64_t n = get_le64(p + 8);
    if (n != (uint64_t)(len - FBK__FRAME_HDR))
        return fbk_error_set(FBK_ECORRUPT, 0,
                             "frame: header says %llu payload bytes, %zu are stored",
                             (unsigned long long)n, len - FBK__FRAME_HDR);
    *plen = (size_t)n;
    return FBK_OK;
}

int fbk__frame_check_sum(const unsigned char *hdr, const void *payload, size_t plen)
{
    uint64_t want = get_le64(hdr + 16);
    uint64_t got = XXH3_64bits(payload, plen);
    if (want != got)
        return fbk_error_set(FBK_ECORRUPT, 0,
                             "frame: checksum mismatch (stored %016llx, computed %016llx)",
                             (unsigned long long)want, (unsigned long long)got);
    return FBK_OK;
}

/* Pieces of fbk__frame_copy: small enough to stay in L2 between the copy and
 * the hash. */
#define FRAME_PIECE ((size_t)64 << 10)

/* XXH3-64 of src[0..len) while copying it to dst (dst may be NULL: hash only). */
static int copy_hash(void *dst, const void *src, size_t len, uint64_t *sum)
{
    if (len <= FRAME_PIECE) {
        if (dst && len)
            memcpy(dst, src, len);
        *sum = XXH3_64bits(dst ? dst : src, len);
        return FBK_OK;
    }
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return fbk_error_set(FBK_ENOMEM, 0, "frame: cannot allocate a checksum state");
    XXH3_64bits_reset(st);
    const unsigned char *s = src;
    unsigned char *d = dst;
    for (size_t off = 0; off < len; off += FRAME_PIECE) {
        size_t n = len - off < FRAME_PIECE ? len - off : FRAME_PIECE;
        memcpy(d + off, s + off, n);
        XXH3_64bits_update(st, d + off, n);
    }
    *sum = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return FBK_OK;
}

int fbk__frame_copy(unsigned char hdr[FBK__FRAME_HDR], void *dst, const void *src, size_t len)
{
    uint64_t sum;
    int rc = copy_hash(dst, src, len, &sum);
    if (rc)
        return rc;
    memcpy(hdr, FBK__FRAME_MAGIC, 4);
    hdr[4] = FBK__FRAME_VERSION;
    hdr[5] = hdr[6] = hdr[7] = 0;
    put_le64(hdr + 8, (uint64_t)len);
    put_le64(hdr + 16, sum);
    return FBK_OK;
}

int fbk__frame_copy_check(const unsigned char *hdr, void *dst, const void *payload, size_t plen)
{
    uint64_t got;
    int rc = copy_hash(dst, payload, plen, &got);
    if (rc)
        return rc;
    uint64_t want = get_le64(hdr + 16);
    if (want != got)
        return fbk_error_set(FBK_ECORRUPT, 0,
                             "frame: checksum mismatch (stored %016llx, computed %016llx)",
                             (unsigned long long)want, (unsigned long long)got);
    return FBK_OK;
}

int fbk__frame_check(const void *src, size_t len, const unsigned char **payload, size_t *plen)
{
    const unsigned char *p = src;
    size_t n;
    int rc = fbk__frame_check_header(p, len, &n);
    if (rc == FBK_OK)
        rc = fbk__frame_check_sum(p, p + FBK__FRAME_HDR, n);
    if (rc)
        return rc;
    *payload = p + FBK__FRAME_HDR;
    *plen = n;
    return FBK_OK;
}

int fbk__frame_read(const void *src, size_t len, void *arg)
{
    fbk__read_ctx *c = arg;
    const unsigned char *payload;
    size_t plen;
    int rc = fbk__frame_check(src, len, &payload, &plen);
    if (rc)
        return rc;
    void *obj = NULL;
    rc = c->codec->decode(payload, plen, &obj, c->codec->ctx);
    if (rc)
        return fbk__codec_error(rc, "decode");
    c->obj = obj;
    return FBK_OK;
}

int fbk__codec_clone(const fbk_codec *codec, const void *obj, void **out)
{
    int rc;
    if (codec->clone) {
        rc = codec->clone(obj, out, codec->ctx);
        return rc ? fbk__codec_error(rc, "clone") : FBK_OK;
    }
    size_t n = codec->size(obj, codec->ctx);
    void *buf = fbk__malloc(n ? n : 1);
    if (!buf)
        return fbk_error_set(FBK_ENOMEM, 0, "clone: cannot allocate %zu bytes", n);
    rc = codec->encode(obj, buf, n, codec->ctx);
    if (rc) {
        fbk__free(buf);
        return fbk__codec_error(rc, "encode");
    }
    rc = codec->decode(buf, n, out, codec->ctx);
    fbk__free(buf);
    return rc ? fbk__codec_error(rc, "decode") : FBK_OK;
}
