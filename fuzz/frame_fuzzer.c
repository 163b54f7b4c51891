/* frame_fuzzer -- the blob frame parser never accepts bytes that fail the
 * checksum, never reads out of bounds, and round-trips what it accepts. */
#include "fbk_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* copy so that ASan sees the exact bounds */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    fbk__read_ctx rc_ctx = {.codec = &fbk_blob_codec, .obj = NULL};
    if (fbk__frame_read(buf, size, &rc_ctx) == FBK_OK) {
        fbk_blob *b = rc_ctx.obj;
        /* accepted: re-framing must give back exactly the same bytes */
        uint8_t *again = malloc(size);
        fbk__fill_ctx fc = {.codec = &fbk_blob_codec, .obj = b, .payload = b->len};
        if (!again || b->len + FBK__FRAME_HDR != size || fbk__frame_fill(again, size, &fc) != FBK_OK ||
            memcmp(again, buf, size) != 0)
            __builtin_trap();
        free(again);
        fbk_blob_free(b);
    } else if (fbk_errmsg()[0] == '\0') {
        __builtin_trap(); /* a rejection always says why */
    }
    free(buf);
    return 0;
}
