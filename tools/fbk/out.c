/* out.c -- messages, JSON strings and names. */
#include "fbk_tool.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const char *tool_usage_of(const char *cmd);

/* "fbk: CMD: <what>: <fbk_errmsg() or fbk_strerror()>" when rc is an FBK_E*
 * code; fmt alone otherwise.  Returns the exit status: 1 for FBK_ENOTFOUND
 * (the key/name is not there) and FBK_TOOL_MISSING, else 2. */
int tool_fail(const char *cmd, int rc, const char *fmt, ...)
{
    fprintf(stderr, "fbk: %s: ", cmd);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (rc < 0) {
        const char *m = fbk_errmsg();
        fprintf(stderr, ": %s (%s)", m && *m ? m : fbk_strerror(rc), fbk_err_name(rc));
    }
    fputc('\n', stderr);
    return rc == FBK_ENOTFOUND || rc == FBK_TOOL_MISSING ? FBK_TOOL_MISSING : FBK_TOOL_ERROR;
}

int tool_usage(const char *cmd, const char *fmt, ...)
{
    fprintf(stderr, "fbk: %s: ", cmd);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: %s\n", tool_usage_of(cmd));
    return FBK_TOOL_ERROR;
}

/* Length of the valid UTF-8 sequence at s (1..4), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t left)
{
    size_t n;
    uint32_t cp;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xe0) == 0xc0)
        n = 2, cp = s[0] & 0x1f;
    else if ((s[0] & 0xf0) == 0xe0)
        n = 3, cp = s[0] & 0x0f;
    else if ((s[0] & 0xf8) == 0xf0)
        n = 4, cp = s[0] & 0x07;
    else
        return 0;
    if (n > left)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

static int utf8_valid(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        size_t n = utf8_len(s + i, len - i);
        if (!n)
            return 0;
        i += n;
    }
    return 1;
}

/* A JSON string of valid UTF-8 s (callers check); NULL prints null. */
void json_str(FILE *f, const void *s, size_t len)
{
    if (!s) {
        fputs("null", f);
        return;
    }
    const unsigned char *p = s;
    fputc('"', f);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = p[i];
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", f);
        else if (ch == '\t')
            fputs("\\t", f);
        else if (ch < 0x20 || ch == 0x7f)
            fprintf(f, "\\u%04x", ch);
        else if (ch >= 0x80 && !utf8_len(p + i, len - i))
            fputs("\\ufffd", f); /* never reached for checked input */
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

/* A name is any bytes: "name" is its text when it is UTF-8 (else null),
 * "name_hex" always its bytes in hex. */
void json_name(FILE *f, const void *name, size_t len)
{
    fputs("\"name\": ", f);
    if (utf8_valid(name, len))
        json_str(f, name, len);
    else
        fputs("null", f);
    fputs(", \"name_hex\": \"", f);
    for (size_t i = 0; i < len; i++)
        fprintf(f, "%02x", ((const unsigned char *)name)[i]);
    fputc('"', f);
}

/* Printable ASCII and UTF-8 as is; other bytes, backslash and tab as \xHH,
 * the form --name accepts back. */
void text_name(FILE *f, const void *name, size_t len)
{
    const unsigned char *p = name;
    for (size_t i = 0; i < len;) {
        size_t n = p[i] >= 0x80 ? utf8_len(p + i, len - i) : 1;
        if (p[i] >= 0x80 && n) {
            fwrite(p + i, 1, n, f);
            i += n;
        } else {
            if (p[i] < 0x20 || p[i] == 0x7f || p[i] >= 0x80 || p[i] == '\\')
                fprintf(f, "\\x%02x", p[i]);
            else
                fputc(p[i], f);
            i++;
        }
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* --name NAME: the bytes of NAME, with \xHH standing for one byte and \\ for
 * a backslash (so every name text_name prints can be given back). */
int name_parse(const char *text, char **out, size_t *len)
{
    size_t n = strlen(text), k = 0;
    char *b = malloc(n + 1);
    if (!b)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (text[i] != '\\') {
            b[k++] = text[i];
        } else if (text[i + 1] == '\\') {
            b[k++] = '\\';
            i++;
        } else if (text[i + 1] == 'x' && hexval(text[i + 2]) >= 0 && hexval(text[i + 3]) >= 0) {
            b[k++] = (char)(hexval(text[i + 2]) << 4 | hexval(text[i + 3]));
            i += 3;
        } else {
            free(b);
            return -1;
        }
    }
    *out = b;
    *len = k;
    return 0;
}
