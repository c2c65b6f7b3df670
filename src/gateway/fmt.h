/* fmt.h — the gateway's one copy of each small text step: the formatting
 * the response paths take by hand (snprintf costs more than the rest of a
 * hit; each writes at p, where the caller made room, and returns the new
 * end), the JSON string escaper, the RFC 9110 token characters, the
 * percent-decoder and the directive-list walker. No other file of the gateway
 * keeps its own. */
#ifndef CORRAL_FMT_H
#define CORRAL_FMT_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

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

/* A simple answer's fields after its status line: Content-Type when
 * ctype is not NULL (ctlen bytes), Content-Length: len unless the answer
 * has no body, then extra (xlen bytes of whole lines). At most
 * 14 + ctlen + 2 + 16 + 20 + 2 + xlen bytes. */
static inline char *
fmt_simple_fields(char *p, const char *ctype, size_t ctlen, bool no_body,
                  uint64_t len, const char *extra, size_t xlen)
{
    if (ctype) {
        p = FMT_PUT(p, "Content-Type: ");
        p = fmt_put(p, ctype, ctlen);
        p = FMT_PUT(p, "\r\n");
    }
    if (!no_body) {
        p = FMT_PUT(p, "Content-Length: ");
        p = fmt_uint(p, len);
        p = FMT_PUT(p, "\r\n");
    }
    if (xlen)
        p = fmt_put(p, extra, xlen);
    return p;
}

/* s as the inside of a JSON string (quote, backslash and controls
 * escaped) into out, NUL-terminated, cut to fit cap (> 7). Returns the
 * length. A cap of FMT_JSON_ROOM(strlen(s)) never cuts. */
#define FMT_JSON_ROOM(len) (6 * (len) + 8)
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

/* Is ch an RFC 9110 (5.6.2) token character ("tchar"): a method, a
 * header name, a Cache-Control directive? NUL is not. */
static inline bool
fmt_is_tchar(unsigned char ch)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') ||
           (ch != 0 && memchr(extra, ch, sizeof(extra) - 1) != NULL);
}

/* c as %XX (upper-case hex, RFC 3986 2.1): 3 bytes. */
static inline char *
fmt_pct_byte(char *p, unsigned char c)
{
    static const char hex[] = "0123456789ABCDEF";
    p[0] = '%';
    p[1] = hex[c >> 4];
    p[2] = hex[c & 15];
    return p + 3;
}

/* The byte at s[*i] (of len), a %XX escape decoded, into *c; moves *i
 * past it. False for a malformed escape. The one step of the decoder, for
 * a caller that compares as it decodes. */
static inline bool
fmt_percent_next(const char *s, size_t len, size_t *i, char *c)
{
    int hi, lo;
    if (s[*i] != '%') {
        *c = s[(*i)++];
        return true;
    }
    if (len - *i < 3 || (hi = fmt_hexval(s[*i + 1])) < 0 ||
        (lo = fmt_hexval(s[*i + 2])) < 0)
        return false;
    *c = (char)(hi << 4 | lo);
    *i += 3;
    return true;
}

enum fmt_pct_flag {
    FMT_PCT_PLUS = 1,     /* '+' is a space (a query value) */
    FMT_PCT_NO_SLASH = 2, /* an encoded '/' is refused (a path segment) */
};

/* Decodes the %XX escapes of s (len bytes) into out, which has room for
 * len + 1 bytes, NUL-terminated. Returns the decoded length, or -EINVAL
 * for a malformed escape, a NUL, encoded or not (it would cut the C
 * string short), or what flags (enum fmt_pct_flag) refuse. */
static inline ptrdiff_t
fmt_percent_decode(char *out, const char *s, size_t len, unsigned flags)
{
    char *o = out;
    for (size_t i = 0; i < len;) {
        bool escaped = s[i] == '%';
        char c;
        if (!fmt_percent_next(s, len, &i, &c) || c == '\0' ||
            (escaped && c == '/' && (flags & FMT_PCT_NO_SLASH)))
            return -EINVAL;
        if (!escaped && c == '+' && (flags & FMT_PCT_PLUS))
            c = ' ';
        *o++ = c;
    }
    *o = '\0';
    return o - out;
}

/* One element of a comma-separated directive list (Cache-Control, RFC
 * 9111 5.2): from *i, its name (*name, *nlen; 0 when the element is not a
 * token) and its argument, a token or a quoted string without the quotes
 * (*arg, *alen; NULL when none), a quoted string's commas included.
 * Moves *i past the element's comma. Returns false at the list's end. */
static inline bool
fmt_directive_next(const char *v, size_t len, size_t *i, const char **name,
                   size_t *nlen, const char **arg, size_t *alen)
{
    size_t k = *i;
    while (k < len && (v[k] == ' ' || v[k] == '\t'))
        k++;
    if (k >= len)
        return false;
    *name = v + k;
    while (k < len && fmt_is_tchar((unsigned char)v[k]))
        k++;
    *nlen = (size_t)(v + k - *name);
    *arg = NULL;
    *alen = 0;
    while (k < len && (v[k] == ' ' || v[k] == '\t'))
        k++;
    if (*nlen > 0 && k < len && v[k] == '=') {
        for (k++; k < len && (v[k] == ' ' || v[k] == '\t'); k++)
            ;
        if (k < len && v[k] == '"') {
            *arg = v + ++k;
            while (k < len && v[k] != '"')
                k += v[k] == '\\' && k + 1 < len ? 2 : 1;
            *alen = (size_t)(v + (k < len ? k : len) - *arg);
            if (k < len)
                k++;
        } else {
            *arg = v + k;
            while (k < len && fmt_is_tchar((unsigned char)v[k]))
                k++;
            *alen = (size_t)(v + k - *arg);
        }
    }
    /* Whatever else the element holds is not HTTP: skip to the next. */
    while (k < len && v[k] != ',') {
        if (v[k] == '"')
            for (k++; k < len && v[k] != '"'; k++)
                if (v[k] == '\\')
                    k++;
        k++;
    }
    *i = k + 1;
    return true;
}

/* Does a directive list (as above) name the directive d[0..dlen)?
 * Names are case-insensitive tokens. */
static inline bool
fmt_names_directive(const char *v, size_t len, const char *d, size_t dlen)
{
    size_t i = 0, nlen, alen;
    const char *name, *arg;
    while (fmt_directive_next(v, len, &i, &name, &nlen, &arg, &alen))
        if (nlen == dlen && strncasecmp(name, d, dlen) == 0)
            return true;
    return false;
}

#endif
