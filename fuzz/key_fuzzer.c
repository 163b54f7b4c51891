/* key_fuzzer -- fbk_key_parse accepts exactly the 36-char hyphenated and the
 * 32-hex forms, and what it accepts formats back to an equal key. */
#include <fbk.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    fbk_key k, k2;
    if (fbk_key_parse(text, &k) == FBK_OK) {
        size_t n = strlen(text);
        if (n != 32 && n != 36)
            __builtin_trap();
        char out[FBK_KEY_STRLEN + 1];
        fbk_key_format(&k, out);
        if (fbk_key_parse(out, &k2) != FBK_OK || !fbk_key_equal(&k, &k2))
            __builtin_trap();
        char hex[33];
        fbk_key_format_hex(&k, hex);
        if (fbk_key_parse(hex, &k2) != FBK_OK || !fbk_key_equal(&k, &k2))
            __builtin_trap();
    }
    free(text);
    return 0;
}
