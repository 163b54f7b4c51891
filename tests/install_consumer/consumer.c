/* A user's program: inserts, spills and reads back through an installed libfbk. */
#include <fbk.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    fbk_store *s;
    fbk_pool *p;
    if (fbk_store_open(&s, "mem:", NULL) || fbk_pool_create(&p, s, &fbk_blob_codec, 2))
        return 1;
    fbk_handle *h[8];
    for (int i = 0; i < 8; i++)
        if (fbk_insert(p, fbk_blob_new("abcdefgh" + i, 1), &h[i]))
            return 1;
    int bad = 0;
    for (int i = 0; i < 8; i++) {
        const void *o;
        if (fbk_load(h[i], &o))
            return 1;
        bad += ((const fbk_blob *)o)->data[0] != "abcdefgh"[i];
        fbk_unload(h[i]);
        fbk_handle_release(h[i]);
    }
    fbk_pool_release(p);
    fbk_store_close(s);
    printf("consumer: libfbk %s %s\n", fbk_version(), bad ? "FAILED" : "OK");
    return bad;
}
