/* pattern.c — {param} patterns: a character table for ^[class]{m,n}$, PCRE2
 * with JIT and limits for everything else. */
#include "pattern.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PATTERN_LEN 1024 /* bytes of source */
#define MAX_NEST 32          /* parentheses deep */
#define MATCH_LIMIT 100000   /* backtracking steps per match */
#define DEPTH_LIMIT 1000     /* backtracking depth per match */
#define HEAP_LIMIT_KB 1024   /* heap one match may use */
#define MAX_COMPILED 65536   /* bytes of compiled pattern */

struct corral_pattern {
    /* The character table form: every byte in set, length in [min, max]. */
    bool simple;
    uint8_t set[256]; /* 1 for a byte in the class: one load per byte */
    size_t min, max;
    /* The PCRE2 form. */
    pcre2_code *code;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
};

static void
set_add(struct corral_pattern *p, unsigned lo, unsigned hi)
{
    for (unsigned c = lo; c <= hi; c++)
        p->set[c] = 1;
}

/* One class member at *s: a literal, or "\x" for a punctuation x. Returns
 * its byte, or -1 for anything we leave to PCRE2 (\d, \w, POSIX classes,
 * non-ASCII). */
static int
class_char(const char **s)
{
    unsigned char c = (unsigned char)**s;

    if (c == '\\') {
        c = (unsigned char)(*s)[1];
        if (c == '\0' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9'))
            return -1;
        *s += 2;
        return c;
    }
    if (c == '\0' || c == '[' || c >= 0x80 || c < 0x20)
        return -1;
    (*s)++;
    return c;
}

static bool
parse_count(const char **s, size_t *out)
{
    size_t n = 0;
    const char *p = *s;

    if (*p < '0' || *p > '9')
        return false;
    for (; *p >= '0' && *p <= '9'; p++) {
        n = n * 10 + (size_t)(*p - '0');
        if (n > 65535)
            return false;
    }
    *out = n;
    *s = p;
    return true;
}

/* ^[class]{m,n}$, ^[class]{m}$, ^[class]+$ or ^[class]*$ with a class of
 * plain characters and ranges (no negation). */
static bool
parse_simple(struct corral_pattern *p, const char *s)
{
    if (*s++ != '^' || *s++ != '[' || *s == '^' || *s == ']')
        return false;
    while (*s != ']') {
        int lo = class_char(&s), hi;
        if (lo < 0)
            return false;
        hi = lo;
        if (s[0] == '-' && s[1] != ']') {
            s++;
            if ((hi = class_char(&s)) < 0 || hi < lo)
                return false;
        }
        set_add(p, (unsigned)lo, (unsigned)hi);
    }
    s++;
    if (*s == '+' || *s == '*') {
        p->min = *s == '+';
        p->max = SIZE_MAX;
        s++;
    } else if (*s == '{') {
        s++;
        if (!parse_count(&s, &p->min))
            return false;
        p->max = p->min;
        if (*s == ',') {
            s++;
            if (!parse_count(&s, &p->max) || p->max < p->min)
                return false;
        }
        if (*s++ != '}')
            return false;
    } else {
        return false;
    }
    return s[0] == '$' && s[1] == '\0';
}

struct corral_pattern *
corral_pattern_new(const char *src, char *err, size_t errlen)
{
    struct corral_pattern *p = calloc(1, sizeof(*p));
    pcre2_compile_context *cctx = NULL;
    int code;
    PCRE2_SIZE at, size;

    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (strlen(src) > MAX_PATTERN_LEN) {
        snprintf(err, errlen, "longer than %d bytes", MAX_PATTERN_LEN);
        free(p);
        return NULL;
    }
    if (parse_simple(p, src)) {
        p->simple = true;
        return p;
    }
    memset(p, 0, sizeof(*p));
    cctx = pcre2_compile_context_create(NULL);
    if (cctx == NULL)
        goto nomem;
    pcre2_set_parens_nest_limit(cctx, MAX_NEST);
    p->code = pcre2_compile((PCRE2_SPTR)src, PCRE2_ZERO_TERMINATED,
                            PCRE2_DOLLAR_ENDONLY | PCRE2_NEVER_UTF |
                                PCRE2_NEVER_UCP | PCRE2_NEVER_BACKSLASH_C,
                            &code, &at, cctx);
    pcre2_compile_context_free(cctx);
    if (p->code == NULL) {
        char why[128];
        pcre2_get_error_message(code, (PCRE2_UCHAR *)why, sizeof(why));
        snprintf(err, errlen, "%s at offset %zu", why, (size_t)at);
        free(p);
        return NULL;
    }
    if (pcre2_pattern_info(p->code, PCRE2_INFO_SIZE, &size) != 0 ||
        size > MAX_COMPILED) {
        snprintf(err, errlen, "compiles to more than %d bytes", MAX_COMPILED);
        corral_pattern_free(p);
        return NULL;
    }
    /* Without JIT (not built, or no executable memory) the interpreter
     * runs under the same limits. */
    (void)pcre2_jit_compile(p->code, PCRE2_JIT_COMPLETE);
    p->md = pcre2_match_data_create(1, NULL);
    p->mctx = pcre2_match_context_create(NULL);
    if (p->md == NULL || p->mctx == NULL)
        goto nomem;
    pcre2_set_match_limit(p->mctx, MATCH_LIMIT);
    pcre2_set_depth_limit(p->mctx, DEPTH_LIMIT);
    pcre2_set_heap_limit(p->mctx, HEAP_LIMIT_KB);
    return p;

nomem:
    snprintf(err, errlen, "out of memory");
    corral_pattern_free(p);
    return NULL;
}

bool
corral_pattern_match(const struct corral_pattern *p, const char *s, size_t len)
{
    if (p->simple) {
        if (len < p->min || len > p->max)
            return false;
        unsigned ok = 1;
        for (size_t i = 0; i < len; i++)
            ok &= p->set[(unsigned char)s[i]];
        return ok != 0;
    }
    /* The match data is the pattern's own: one loop, one match at a time. */
    return pcre2_match(p->code, (PCRE2_SPTR)s, len, 0, 0, p->md, p->mctx) >= 0;
}

bool
corral_pattern_is_simple(const struct corral_pattern *p)
{
    return p->simple;
}

void
corral_pattern_free(struct corral_pattern *p)
{
    if (p == NULL)
        return;
    pcre2_match_data_free(p->md);
    pcre2_match_context_free(p->mctx);
    pcre2_code_free(p->code);
    free(p);
}
