/* key.c -- 16-byte keys: RFC 4122 v4 UUIDs from libuuid. */
#include "fbk_internal.h"

#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <uuid/uuid.h>

/* Key generation is on the insert path.  libuuid's uuid_generate_random()
 * makes four system calls per key (getpid, getppid, getuid, getrandom:
 * measured at ~9 us per insert), so keys are drawn from a per-thread buffer
 * filled by one getrandom() per 64 keys, the same kernel source libuuid
 * reads, and stamped as RFC 4122 version 4.  A forked child drops the buffer
 * it inherited, so parent and child never hand out the same key. */
#define KEYS_PER_FILL 64
static _Thread_local unsigned char key_buf[KEYS_PER_FILL * 16];
static _Thread_local unsigned key_left;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static atomic_bool atfork_done;

static void drop_buffer_in_child(void) { key_left = 0; }
static void install_atfork(void)
{
    pthread_atfork(NULL, NULL, drop_buffer_in_child);
    atomic_store_explicit(&atfork_done, true, memory_order_release);
}

void fbk_key_generate(fbk_key *out)
{
    if (!atomic_load_explicit(&atfork_done, memory_order_acquire))
        pthread_once(&atfork_once, install_atfork);
    if (key_left == 0) {
        ssize_t n = getrandom(key_buf, sizeof key_buf, 0);
        if (n != (ssize_t)sizeof key_buf) {
            uuid_generate_random(out->bytes); /* no getrandom(): libuuid's own fallbacks */
            return;
        }
        key_left = KEYS_PER_FILL;
    }
    key_left--;
    memcpy(out->bytes, key_buf + 16 * key_left, 16);
    memset(key_buf + 16 * key_left, 0, 16);
    out->bytes[6] = (unsigned char)((out->bytes[6] & 0x0F) | 0x40); /* version 4 */
    out->bytes[8] = (unsigned char)((out->bytes[8] & 0x3F) | 0x80); /* RFC 4122 variant */
}

void fbk_key_format(const fbk_key *key, char out[FBK_KEY_STRLEN + 1])
{
    uuid_unparse_lower(key->bytes, out);
}

int fbk__hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int fbk_key_parse(const char *text, fbk_key *out)
{
    if (!text || !out)
        return fbk_error_set(FBK_EINVAL, 0, "fbk_key_parse: NULL argument");
    size_t n = strnlen(text, FBK_KEY_STRLEN + 1);
    fbk_key k;
    if (n == FBK_KEY_STRLEN) {
        /* libuuid's parser accepts exactly the 8-4-4-4-12 form, either case */
        if (uuid_parse(text, k.bytes) != 0)
            return fbk_error_set(FBK_EINVAL, 0, "not a key: \"%.36s\"", text);
    } else if (n == 32) {
        for (int i = 0; i < 16; i++) {
            int hi = fbk__hexval(text[2 * i]), lo = fbk__hexval(text[2 * i + 1]);
            if (hi < 0 || lo < 0)
                return fbk_error_set(FBK_EINVAL, 0, "not a key: \"%.32s\"", text);
            k.bytes[i] = (unsigned char)(hi << 4 | lo);
        }
    } else {
        return fbk_error_set(FBK_EINVAL, 0, "not a key: length %zu is neither 32 nor 36", n);
    }
    *out = k;
    return FBK_OK;
}

int fbk_key_equal(const fbk_key *a, const fbk_key *b)
{
    return memcmp(a->bytes, b->bytes, sizeof a->bytes) == 0;
}

void fbk_key_format_hex(const fbk_key *key, char out[33])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = digits[key->bytes[i] >> 4];
        out[2 * i + 1] = digits[key->bytes[i] & 15];
    }
    out[32] = '\0';
}
