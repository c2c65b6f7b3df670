/* fmt.h — the few formatting steps the response paths take by hand, since
 * snprintf costs more than the rest of a hit. Each writes at p (the caller
 * made room) and returns the new end. */
#ifndef CORRAL_FMT_H
#define CORRAL_FMT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline char *
fmt_put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

/* A string literal, without its NUL. */
#define FMT_PUT(p, lit) fmt_put((p), (lit), sizeof(lit) - 1)

/* v in decimal: at most 20 bytes. */
static inline char *
fmt_uint(char *p, uint64_t v)
{
    char digits[20];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = digits[--n];
    return p;
}

/* s as the inside of a JSON string (quote, backslash and controls
 * escaped) into out, NUL-terminated, cut to fit cap (> 7). Returns the
 * length. */
static inline size_t
fmt_json_escape(char *out, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    for (; *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20) {
            memcpy(out + n, "\\u00", 4);
            out[n + 4] = hex[c >> 4];
            out[n + 5] = hex[c & 15];
            n += 6;
        } else {
            out[n++] = (char)c;
        }
    }
    out[n] = '\0';
    return n;
}

/* The value of hex digit c, or -1. */
static inline int
fmt_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
