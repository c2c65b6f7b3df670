/* json.c — JSON validation as yajl 2.1.0 decides it (json.h says where
 * that differs from RFC 8259), in one pass: the grammar as gotos, the
 * plain bytes of strings and the digits of numbers skipped 8 at a time
 * (SSE2's 16 or 32 were no faster on bench-json's bodies), and whether
 * each open level is an object or an array in a bit stack. */
#include "json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LOCAL_DEPTH 4096 /* levels in the bit stack on the C stack */

/* yajl's whitespace: VT and FF too. */
static inline bool
is_space(unsigned c)
{
    return c == ' ' || c - '\t' < 5u;
}

static inline const unsigned char *
skip_space(const unsigned char *p, const unsigned char *end)
{
    /* Most bytes after a token are not space: one compare says so. */
    while (p < end && *p <= ' ' && is_space(*p))
        p++;
    return p;
}

static inline bool
is_digit(unsigned c)
{
    return c - '0' < 10u;
}

static inline bool
is_hex(unsigned c)
{
    return c - '0' < 10u || (c | 0x20) - 'a' < 6u;
}

/* A byte that needs no look in a string: not '"', '\', a control or part
 * of a UTF-8 sequence. */
static inline bool
is_plain(unsigned c)
{
    return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ONES 0x0101010101010101u
#define HIGHS 0x8080808080808080u

/* The high bit of each byte of x that is not plain, and maybe of bytes
 * after it. Below the first such byte every byte is 20-7F: no subtraction
 * borrows there and none sets a high bit, so the lowest bit set marks that
 * byte exactly: a control (x - 20 wraps), '"' or '\\' (q or b is 0, - 1
 * wraps), or 80-FF (its own high bit). */
static inline uint64_t
not_plain(uint64_t x)
{
    uint64_t q = x ^ (ONES * '"'), b = x ^ (ONES * '\\');
    return ((x - ONES * 0x20) | (q - ONES) | (b - ONES) | x) & HIGHS;
}

/* The high bit of each byte of x that is not a digit, and maybe of bytes
 * after it; again exact for the first: below it no subtraction borrows and
 * no addition carries, and it is either under '0' (x - '0' wraps), over
 * '9' and under BA (x + 46 reaches 80) or BA and over (x - '0' stays over
 * 80). */
static inline uint64_t
not_digit(uint64_t x)
{
    return ((x - ONES * '0') | (x + ONES * (0x7f - '9'))) & HIGHS;
}
#endif

/* Past the digits at p. A number's digits come in runs too long for a
 * byte loop's exit to be guessed right. */
static inline const unsigned char *
skip_digits(const unsigned char *p, const unsigned char *end)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (end - p >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        uint64_t m = not_digit(x);
        if (m != 0)
            return p + (size_t)__builtin_ctzll(m) / 8;
        p += 8;
    }
#endif
    while (p < end && is_digit(*p))
        p++;
    return p;
}

/* Past the plain bytes at p: where a string needs a look, or end. */
static inline const unsigned char *
skip_plain(const unsigned char *p, const unsigned char *end)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (end - p >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        uint64_t m = not_plain(x);
        if (m != 0)
            return p + (size_t)__builtin_ctzll(m) / 8;
        p += 8;
    }
#endif
    while (p < end && is_plain(*p))
        p++;
    return p;
}

/* The rest of a string from p, a byte that is not plain, on: escapes and
 * UTF-8, out of the way of the plain ASCII most strings are. True when
 * closed, with *pp just after its '"'; false when the input ends inside it
 * or holds a byte yajl's lexer refuses. */
static bool
scan_string_rest(const unsigned char **pp, const unsigned char *p,
                 const unsigned char *end)
{
    for (;;) {
        if (p == end)
            return false;
        unsigned c = *p++;
        if (c == '"') {
            *pp = p;
            return true;
        }
        if (c == '\\') {
            if (p == end)
                return false;
            switch (*p++) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                break;
            case 'u':
                if (end - p < 4 || !is_hex(p[0]) || !is_hex(p[1]) ||
                    !is_hex(p[2]) || !is_hex(p[3]))
                    return false;
                p += 4;
                break;
            default:
                return false;
            }
            p = skip_plain(p, end);
            continue;
        }
        /* Not plain, so a control or a byte of 80-FF: yajl counts only
         * the continuation bytes a lead byte says should follow. */
        ptrdiff_t n;
        if (c < 0xc0)
            return false;
        else if (c < 0xe0)
            n = 1;
        else if (c < 0xf0)
            n = 2;
        else if (c < 0xf8)
            n = 3;
        else
            return false;
        if (end - p < n)
            return false;
        for (ptrdiff_t i = 0; i < n; i++)
            if ((p[i] & 0xc0) != 0x80)
                return false;
        p += n;
        p = skip_plain(p, end);
    }
}

/* A string from just after its opening '"'. True when closed, with *pp
 * just after its closing '"'. */
static inline bool
scan_string(const unsigned char **pp, const unsigned char *end)
{
    const unsigned char *p = skip_plain(*pp, end);

    if (p < end && *p == '"') {
        *pp = p + 1;
        return true;
    }
    return scan_string_rest(pp, p, end);
}

/* A number from just after its first byte c ('-' or a digit): where it
 * ends, or NULL. Its end is wherever the grammar stops, as in yajl, so
 * "01" is 0 then 1. */
static inline const unsigned char *
scan_number(const unsigned char *p, const unsigned char *end, unsigned c)
{
    if (c == '-') {
        if (p == end)
            return NULL;
        c = *p++;
    }
    const unsigned char *digits;
    if (c - '1' < 9u)
        p = skip_digits(p, end);
    else if (c != '0')
        return NULL;
    if (p < end && *p == '.') {
        digits = ++p;
        if ((p = skip_digits(p, end)) == digits)
            return NULL;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        if (++p < end && (*p == '+' || *p == '-'))
            p++;
        digits = p;
        if ((p = skip_digits(p, end)) == digits)
            return NULL;
    }
    return p;
}

/* A value but an object or array, from just after its first byte c:
 * where it ends, or NULL. */
static inline const unsigned char *
scan_scalar(const unsigned char *p, const unsigned char *end, unsigned c)
{
    switch (c) {
    case '"':
        return scan_string(&p, end) ? p : NULL;
    case 't':
        return end - p >= 3 && memcmp(p, "rue", 3) == 0 ? p + 3 : NULL;
    case 'f':
        return end - p >= 4 && memcmp(p, "alse", 4) == 0 ? p + 4 : NULL;
    case 'n':
        return end - p >= 3 && memcmp(p, "ull", 3) == 0 ? p + 3 : NULL;
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        return scan_number(p, end, c);
    default:
        return NULL;
    }
}

/* The bit stack: bit d is 1 when level d is an object. */
struct levels {
    uint64_t *bits;
    size_t cap; /* levels bits holds */
    uint64_t *heap;
    uint64_t local[LOCAL_DEPTH / 64];
};

/* Room for as deep as the rest of the input can go, at level depth with
 * left bytes to come: every level open then must be closed by a byte of
 * its own, and every level opened after by two, so no deeper than
 * (left + depth) / 2. Once, then, for any input. */
static bool
grow(struct levels *lv, size_t depth, size_t left)
{
    size_t cap = (left + depth) / 2 + 64;
    uint64_t *bits = malloc((cap / 64 + 1) * sizeof(*bits));

    if (bits == NULL)
        return false;
    memcpy(bits, lv->bits, (depth + 63) / 64 * sizeof(*bits));
    free(lv->heap);
    lv->bits = lv->heap = bits;
    lv->cap = cap;
    return true;
}

/* A new level at depth, an object or not, with left bytes after its
 * opening byte. false when it cannot be: each open level needs its close
 * still to come, so when the rest is too short there is no use going on
 * (and no deeper stack to get); or no memory. */
static inline bool
push(struct levels *lv, size_t depth, bool object, size_t left)
{
    if (depth >= left)
        return false;
    if (depth == lv->cap && !grow(lv, depth, left))
        return false;
    if (object)
        lv->bits[depth / 64] |= UINT64_C(1) << (depth % 64);
    else
        lv->bits[depth / 64] &= ~(UINT64_C(1) << (depth % 64));
    return true;
}

/* Where a value may start: an object or array opens a level, anything
 * else is scanned here and continues at after. The code is written out
 * once for each place a value goes (top, array, object), so that what
 * comes after it is known from where the program is, not from a branch
 * on a variable. */
#define VALUE(after)                                                           \
    do {                                                                       \
        p = skip_space(p, end);                                                \
        if (p == end)                                                          \
            goto out;                                                          \
        c = *p++;                                                              \
        if (c == '{')                                                          \
            goto open_object;                                                  \
        if (c == '[')                                                          \
            goto open_array;                                                   \
        if ((p = scan_scalar(p, end, c)) == NULL)                              \
            goto out;                                                          \
        goto after;                                                            \
    } while (0)

bool
corral_json_valid(const char *s, size_t len)
{
    /* Nothing is no JSON to yajl either; and s may then be NULL, where
     * even s + 0 is undefined. */
    if (len == 0)
        return false;

    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    struct levels lv;
    size_t depth = 0;
    bool ok = false;
    unsigned c;

    lv.bits = lv.local;
    lv.cap = LOCAL_DEPTH;
    lv.heap = NULL;

    VALUE(top);

open_object:
    if (!push(&lv, depth++, true, (size_t)(end - p)))
        goto out;
    p = skip_space(p, end);
    if (p < end && *p == '}') {
        p++;
        goto close;
    }
key:
    p = skip_space(p, end);
    if (p == end || *p != '"')
        goto out;
    p++;
    if (!scan_string(&p, end))
        goto out;
    p = skip_space(p, end);
    if (p == end || *p != ':')
        goto out;
    p++;
    VALUE(after_member);
after_member:
    p = skip_space(p, end);
    if (p == end)
        goto out;
    c = *p++;
    if (c == ',')
        goto key;
    if (c != '}')
        goto out;
    goto close;

open_array:
    if (!push(&lv, depth++, false, (size_t)(end - p)))
        goto out;
    p = skip_space(p, end);
    if (p < end && *p == ']') {
        p++;
        goto close;
    }
element:
    VALUE(after_element);
after_element:
    p = skip_space(p, end);
    if (p == end)
        goto out;
    c = *p++;
    if (c == ',')
        goto element;
    if (c != ']')
        goto out;

close:
    if (--depth == 0)
        goto top;
    if (lv.bits[(depth - 1) / 64] >> ((depth - 1) % 64) & 1)
        goto after_member;
    goto after_element;

top:
    /* The top-level value is whole: only whitespace may follow (not the
     * string yajl lets the input end inside: see json.h). */
    ok = skip_space(p, end) == end;
out:
    free(lv.heap);
    return ok;
}
