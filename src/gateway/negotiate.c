/* negotiate.c — Accept-Encoding read into q-values, and the choice of a
 * coding (see negotiate.h). Clients send a handful of exact values
 * ("gzip, deflate, br"), so the values read last are remembered, a few per
 * thread, by their bytes: a request's field is then one short compare and
 * a copy; any other is one pass over its bytes. No allocation. */
#include "negotiate.h"

#include <string.h>
#include <strings.h>

#include "fmt.h"

static bool
ows(char c)
{
    return c == ' ' || c == '\t';
}

/* A weight's value (RFC 9110 12.4.2): "0" to "1" with up to three
 * decimals, "1" with zeros only. Returns 0..1000, or -1 when it is not
 * one. */
static int
qvalue(const char *p, size_t n)
{
    if (n == 0 || (p[0] != '0' && p[0] != '1') || (n > 1 && p[1] != '.') ||
        n > 5)
        return -1;
    int q = (p[0] - '0') * 1000, scale = 100;
    for (size_t i = 2; i < n; i++, scale /= 10) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        q += (p[i] - '0') * scale;
    }
    return q > 1000 ? -1 : q;
}

/* The coding a token names, or -1 for "*", or -2 for one corral does not
 * keep. */
static int
coding_of(const char *t, size_t n)
{
    switch (n) {
    case 1:
        return t[0] == '*' ? -1 : -2;
    case 2:
        return strncasecmp(t, "br", 2) == 0 ? CORRAL_CODING_BR : -2;
    case 4:
        return strncasecmp(t, "gzip", 4) == 0 ? CORRAL_CODING_GZIP : -2;
    case 6:
        return strncasecmp(t, "x-gzip", 6) == 0 ? CORRAL_CODING_GZIP : -2;
    case 8:
        return strncasecmp(t, "identity", 8) == 0 ? CORRAL_CODING_IDENTITY : -2;
    default:
        return -2;
    }
}

/* The weight of the element at v[*i .. n) after its coding: parameters
 * up to the next comma, each "; name=value"; q decides, others are
 * ignored. Moves *i to the comma (or n). Returns 0..1000, or -1 when the
 * element is malformed. */
static int
weight(const char *v, size_t n, size_t *i)
{
    size_t k = *i;
    int q = 1000;
    for (;;) {
        while (k < n && ows(v[k]))
            k++;
        if (k == n || v[k] == ',')
            break;
        if (v[k] != ';')
            goto bad;
        for (k++; k < n && ows(v[k]); k++)
            ;
        size_t name = k;
        while (k < n && fmt_is_tchar((unsigned char)v[k]))
            k++;
        size_t nlen = k - name;
        while (k < n && ows(v[k]))
            k++;
        if (nlen == 0 || k == n || v[k] != '=')
            goto bad;
        for (k++; k < n && ows(v[k]); k++)
            ;
        size_t val = k;
        while (k < n && fmt_is_tchar((unsigned char)v[k]))
            k++;
        if (nlen == 1 && (v[name] == 'q' || v[name] == 'Q')) {
            q = qvalue(v + val, k - val);
            if (q < 0)
                goto bad;
        }
    }
    *i = k;
    return q;
bad:
    while (k < n && v[k] != ',')
        k++;
    *i = k;
    return -1;
}

/* A field value read before, and what it said. */
#define MEMO_SLOTS 16
#define MEMO_MAX 48 /* bytes of a value remembered */
struct memo {
    uint8_t len; /* 0: empty slot */
    char bytes[MEMO_MAX];
    struct corral_accept said;
};
static _Thread_local struct memo memo[MEMO_SLOTS];

static void parse(struct corral_accept *a, const char *v, size_t n);

void
corral_accept_add(struct corral_accept *a, const char *v, size_t n)
{
    /* Only a request's first field line is looked up: later ones merge. */
    if (a->present || n == 0 || n > MEMO_MAX) {
        parse(a, v, n);
        return;
    }
    struct memo *m =
        &memo[(n * 7 + (unsigned char)v[0] + (unsigned char)v[n - 1] * 3) %
              MEMO_SLOTS];
    if (m->len == n && memcmp(m->bytes, v, n) == 0) {
        *a = m->said;
        return;
    }
    parse(a, v, n);
    m->len = (uint8_t)n;
    memcpy(m->bytes, v, n);
    m->said = *a;
}

static void
parse(struct corral_accept *a, const char *v, size_t n)
{
    a->present = true;
    size_t i = 0;
    while (i < n) {
        while (i < n && (ows(v[i]) || v[i] == ','))
            i++;
        size_t t = i;
        while (i < n && fmt_is_tchar((unsigned char)v[i]))
            i++;
        int c = coding_of(v + t, i - t);
        int q = weight(v, n, &i);
        if (i - t == 0 || q < 0 || c == -2)
            continue;
        if (c == -1) {
            if (!(a->named & CORRAL_ACCEPT_STAR) || q > a->star)
                a->star = (uint16_t)q;
            a->named |= CORRAL_ACCEPT_STAR;
        } else {
            if (!(a->named & 1u << c) || q > a->q[c])
                a->q[c] = (uint16_t)q;
            a->named |= (uint8_t)(1u << c);
        }
    }
}

enum corral_coding
corral_accept_choose(const struct corral_accept *a, unsigned available)
{
    if (!a->present)
        return CORRAL_CODING_IDENTITY;
    /* Identity not named, with no "*" to speak for it, is acceptable but
     * comes last: 1, below any named q. */
    int best = CORRAL_CODING_IDENTITY, best_q = 0;
    for (int c = CORRAL_CODINGS - 1; c >= 0; c--) {
        if (c != CORRAL_CODING_IDENTITY && !(available & 1u << c))
            continue;
        int q = a->named & 1u << c              ? a->q[c]
                : a->named & CORRAL_ACCEPT_STAR ? a->star
                : c == CORRAL_CODING_IDENTITY   ? 1
                                                : 0;
        if (q > best_q) {
            best = c;
            best_q = q;
        }
    }
    return (enum corral_coding)best;
}
