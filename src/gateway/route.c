/* route.c — a trie over path segments for the configured routes. Parameter
 * values are percent-decoded, refused if they hold a NUL or '/' or are "."
 * or "..", checked against their pattern, and percent-encoded again
 * wherever they go, so a client can never change which upstream host or
 * path prefix is asked. Forwarded query values are decoded and checked
 * against theirs alike: a route's keys are the ones its config allows. */
#include "route.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmt.h"
#include "xalloc.h"

struct node {
    char *literal;          /* this segment's text; NULL for a parameter */
    struct node **children; /* literals first, then at most one parameter */
    size_t n_children;
    const struct corral_config_route *route; /* a route ends here */
    size_t index;
};

struct corral_route_table {
    struct node root;
};

static void
node_finish(struct node *n)
{
    for (size_t i = 0; i < n->n_children; i++) {
        node_finish(n->children[i]);
        free(n->children[i]);
    }
    free(n->children);
    free(n->literal);
}

void
corral_route_table_free(struct corral_route_table *t)
{
    if (t == NULL)
        return;
    node_finish(&t->root);
    free(t);
}

static struct node *
child(struct node *n, const char *seg, size_t len, bool param)
{
    for (size_t i = 0; i < n->n_children; i++) {
        struct node *c = n->children[i];
        if (param ? c->literal == NULL
                  : c->literal && strlen(c->literal) == len &&
                        memcmp(c->literal, seg, len) == 0)
            return c;
    }
    struct node *c = xcalloc(1, sizeof(*c));
    struct node **kids =
        xrealloc(n->children, (n->n_children + 1) * sizeof(*kids));
    n->children = kids;
    if (!param)
        c->literal = xstrndup(seg, len);
    /* Keep the parameter child last, so literals are tried first. */
    size_t at = n->n_children;
    if (!param && at > 0 && kids[at - 1]->literal == NULL) {
        kids[at] = kids[at - 1];
        at--;
    }
    kids[at] = c;
    n->n_children++;
    return c;
}

struct corral_route_table *
corral_route_table_new(const struct corral_config *cfg, char *err,
                       size_t errlen)
{
    struct corral_route_table *t = xcalloc(1, sizeof(*t));
    for (size_t r = 0; r < cfg->n_routes; r++) {
        const struct corral_config_route *route = &cfg->routes[r];
        if (route->n_params > CORRAL_ROUTE_MAX_PARAMS ||
            route->n_query > CORRAL_ROUTE_MAX_PARAMS) {
            snprintf(err, errlen,
                     "routes[%zu]: more than %d params or query "
                     "names",
                     r, CORRAL_ROUTE_MAX_PARAMS);
            corral_route_table_free(t);
            return NULL;
        }
        struct node *n = &t->root;
        const char *p = route->path + 1, *end = p + strlen(p);
        while (p < end) {
            const char *slash = memchr(p, '/', (size_t)(end - p));
            const char *seg_end = slash ? slash : end;
            bool param = seg_end - p >= 2 && *p == '{' && seg_end[-1] == '}';
            n = child(n, p, (size_t)(seg_end - p), param);
            p = slash ? slash + 1 : end;
            if (slash && p == end)
                n = child(n, "", 0, false); /* trailing slash */
        }
        n->route = route;
        n->index = r;
    }
    return t;
}

/* Decodes len bytes of s into m's scratch; returns the NUL-ended copy, or
 * NULL for a bad escape or a NUL (or no room: see has_room()). A path
 * segment may not hold an encoded '/'; in a query value (query) it is
 * just a character, and '+' is a space. */
static const char *
decode(struct corral_route_match *m, const char *s, size_t len, bool query)
{
    if (m->scratch_used + len + 1 > sizeof(m->scratch))
        return NULL;
    char *out = m->scratch + m->scratch_used;
    ptrdiff_t n = fmt_percent_decode(out, s, len,
                                     query ? FMT_PCT_PLUS : FMT_PCT_NO_SLASH);
    if (n < 0)
        return NULL;
    m->scratch_used += (size_t)n + 1;
    return out;
}

static bool
unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
           c == '~';
}

static bool
alnum(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9');
}

/* Appends s percent-encoded to buf at *at; false if it does not fit.
 * strict: encode all but letters and digits, so a value cannot pass for a
 * configured key's separators ("k_{a}_{b}"). */
static bool
put_encoded(char *buf, size_t len, size_t *at, const char *s, bool strict)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (strict ? alnum(c) : unreserved(c)) {
            if (*at + 1 >= len)
                return false;
            buf[(*at)++] = (char)c;
        } else {
            if (*at + 3 >= len)
                return false;
            fmt_pct_byte(buf + *at, c);
            *at += 3;
        }
    }
    return true;
}

static bool
put_raw(char *buf, size_t len, size_t *at, const char *s, size_t n)
{
    if (*at + n >= len)
        return false;
    memcpy(buf + *at, s, n);
    *at += n;
    return true;
}

/* Fills a template's {param} placeholders with m's values, encoded
 * (strictly for a configured key). */
static bool
fill_template(const struct corral_route_match *m, const char *tpl, char *buf,
              size_t len, size_t *at, bool strict)
{
    const struct corral_config_route *r = m->route;
    for (const char *p = tpl; *p;) {
        const char *open = strchr(p, '{');
        if (open == NULL)
            return put_raw(buf, len, at, p, strlen(p));
        const char *close = strchr(open, '}');
        if (close == NULL)
            return put_raw(buf, len, at, p, strlen(p));
        if (!put_raw(buf, len, at, p, (size_t)(open - p)))
            return false;
        size_t nlen = (size_t)(close - open - 1);
        bool found = false;
        for (size_t i = 0; i < r->n_params; i++) {
            if (strlen(r->params[i].name) == nlen &&
                memcmp(r->params[i].name, open + 1, nlen) == 0) {
                if (!put_encoded(buf, len, at, m->values[i], strict))
                    return false;
                found = true;
                break;
            }
        }
        if (!found && !put_raw(buf, len, at, open, nlen + 2))
            return false;
        p = close + 1;
    }
    return true;
}

/* Appends the forwarded query values as "?a=1&b=2" (or "&..." after an
 * existing '?'), in the route's order. */
static bool
put_query(const struct corral_route_match *m, char *buf, size_t len, size_t *at,
          bool has_query)
{
    const struct corral_config_route *r = m->route;
    for (size_t i = 0; i < r->n_query; i++) {
        if (m->query_values[i] == NULL)
            continue;
        char sep = has_query ? '&' : '?';
        has_query = true;
        if (!put_raw(buf, len, at, &sep, 1) ||
            !put_encoded(buf, len, at, r->query[i].name, false) ||
            !put_raw(buf, len, at, "=", 1) ||
            !put_encoded(buf, len, at, m->query_values[i], false))
            return false;
    }
    return true;
}

/* Finds the forwarded parameters in the raw query string. */
static enum corral_route_status
parse_query(struct corral_route_match *m, const char *q, size_t qlen)
{
    const struct corral_config_route *r = m->route;
    for (size_t i = 0; i < r->n_query; i++)
        m->query_values[i] = NULL;
    if (r->n_query == 0)
        return CORRAL_ROUTE_OK;
    const char *end = q + qlen;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pair_end = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(pair_end - q));
        const char *name_end = eq ? eq : pair_end;
        for (size_t i = 0; i < r->n_query; i++) {
            size_t nlen = strlen(r->query[i].name);
            if ((size_t)(name_end - q) != nlen ||
                memcmp(q, r->query[i].name, nlen) != 0 || m->query_values[i])
                continue;
            const char *v = eq ? eq + 1 : pair_end;
            size_t vlen = (size_t)(pair_end - v);
            if (m->scratch_used + vlen + 1 > sizeof(m->scratch))
                return CORRAL_ROUTE_TOO_LONG;
            const char *d = decode(m, v, vlen, true);
            if (d == NULL ||
                !corral_pattern_match(r->query[i].re, d, strlen(d))) {
                m->bad_param = r->query[i].name;
                return CORRAL_ROUTE_BAD_QUERY;
            }
            m->query_values[i] = d;
        }
        q = amp ? amp + 1 : end;
    }
    return CORRAL_ROUTE_OK;
}

/* Does the raw segment, percent-decoded, equal lit? Compared decoded, so
 * "/a/%62" is "/a/b" and cannot slip past a literal to a parameter route
 * that would then fill the literal route's key. */
static bool
segment_is(const char *lit, const char *s, size_t len)
{
    const char *l = lit;
    for (size_t i = 0; i < len; l++) {
        char c;
        if (!fmt_percent_next(s, len, &i, &c) || *l == '\0' || *l != c)
            return false;
    }
    return *l == '\0';
}

struct walk {
    const char *raw[CORRAL_ROUTE_MAX_PARAMS]; /* parameter segments, raw */
    size_t raw_len[CORRAL_ROUTE_MAX_PARAMS];
    size_t nraw;
};

/* The node a route ends at for the segments from p, literals first, then
 * the parameter child if the literal way leads nowhere. The depth is the
 * trie's, so the backtracking stays small. */
static const struct node *
walk(const struct node *n, const char *p, const char *end, bool more,
     struct walk *w)
{
    if (!more)
        return n->route ? n : NULL;
    const char *slash = memchr(p, '/', (size_t)(end - p));
    size_t len = (size_t)((slash ? slash : end) - p);
    const char *next = slash ? slash + 1 : end;
    for (size_t i = 0; i < n->n_children; i++) {
        const struct node *c = n->children[i], *found;
        if (c->literal) {
            if (!segment_is(c->literal, p, len))
                continue;
            if ((found = walk(c, next, end, slash != NULL, w)) != NULL)
                return found;
        } else if (len > 0 && w->nraw < CORRAL_ROUTE_MAX_PARAMS) {
            w->raw[w->nraw] = p;
            w->raw_len[w->nraw++] = len;
            if ((found = walk(c, next, end, slash != NULL, w)) != NULL)
                return found;
            w->nraw--;
        }
    }
    return NULL;
}

enum corral_route_status
corral_route_match(const struct corral_route_table *t, const char *path,
                   size_t path_len, const char *query, size_t query_len,
                   struct corral_route_match *m)
{
    m->route = NULL;
    m->n_values = 0;
    m->bad_param = NULL;
    m->scratch_used = 0;
    m->keylen = 0;
    if (path_len == 0 || path[0] != '/')
        return CORRAL_ROUTE_NOT_FOUND;
    struct walk w;
    w.nraw = 0;
    const struct node *n =
        walk(&t->root, path + 1, path + path_len, path_len > 1, &w);
    if (n == NULL)
        return CORRAL_ROUTE_NOT_FOUND;
    const char **raw = w.raw;
    const size_t *raw_len = w.raw_len;
    size_t nraw = w.nraw;
    const struct corral_config_route *r = n->route;
    m->route = r;
    m->index = n->index;
    for (size_t i = 0; i < nraw && i < r->n_params; i++) {
        const char *v = decode(m, raw[i], raw_len[i], false);
        /* "." and ".." would walk the upstream path, pattern or not. */
        if (v == NULL || strcmp(v, ".") == 0 || strcmp(v, "..") == 0 ||
            !corral_pattern_match(r->params[i].re, v, strlen(v))) {
            m->bad_param = r->params[i].name;
            return CORRAL_ROUTE_BAD_PARAM;
        }
        m->values[i] = v;
    }
    m->n_values = nraw;
    enum corral_route_status rc = parse_query(m, query, query_len);
    if (rc != CORRAL_ROUTE_OK)
        return rc;

    size_t at = 0;
    bool ok =
        r->key ? fill_template(m, r->key, m->key, sizeof(m->key), &at, true)
               : fill_template(m, r->path, m->key, sizeof(m->key), &at, false);
    if (!ok || !put_query(m, m->key, sizeof(m->key), &at,
                          memchr(m->key, '?', at) != NULL))
        return CORRAL_ROUTE_TOO_LONG;
    m->key[at] = '\0';
    m->keylen = at;
    return CORRAL_ROUTE_OK;
}

int
corral_route_upstream_path(const struct corral_route_match *m, char *buf,
                           size_t len)
{
    const struct corral_config_route *r = m->route;
    const char *prefix = r->upstream ? r->upstream->prefix : "";
    size_t at = 0;
    if (!put_raw(buf, len, &at, prefix, strlen(prefix)) ||
        !fill_template(m, r->fetch, buf, len, &at, false) ||
        !put_query(m, buf, len, &at, strchr(r->fetch, '?') != NULL))
        return -EMSGSIZE;
    buf[at] = '\0';
    return (int)at;
}
