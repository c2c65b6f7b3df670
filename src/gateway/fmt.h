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

#endif
