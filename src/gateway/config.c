/* config.c — loads the JSON configuration into a struct corral_config.
 * jtree.c turns the text into a tree that remembers each value's line; the
 * validator here walks it, expanding ${NAME} in each string as it reads
 * it. The first error wins. Messages quote only the file's raw text,
 * so a secret from the environment never reaches a log. */
#include "config.h"
#include "fetch.h"
#include "jtree.h"
#include "route.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_FILE_BYTES (16u << 20)
#define MAX_PARAMS CORRAL_CONFIG_MAX_PARAMS
#define DAY_MS (24 * 3600 * 1000ull)
#define MAX_DURATION_MS (365 * DAY_MS) /* ttls and stale windows */
#define MAX_TIMEOUT_MS DAY_MS          /* timeouts */
#define PATH_LEN 256 /* key paths in messages; longer ones are cut */

#define IDENT_FIRST "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"
#define IDENT IDENT_FIRST "0123456789"
#define NAME_CHARS IDENT ".-"                  /* upstream and member names */
#define QUERY_CHARS IDENT ".~-"                /* query parameter names */
#define SEGMENT_CHARS IDENT ".~-!$&'()*+,;=:@" /* literal path segments */

/* ---- ${NAME} expansion ----------------------------------------------- */

/* As corral_config_expand; a variable's value must not contain any byte of
 * reject (NULL: anything goes). */
static int
expand(const char *raw, const char *reject, char **out, char *err,
       size_t errlen)
{
    size_t size;
    FILE *f = open_memstream(out, &size);
    if (f == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int rc = 0;
    for (const char *p = raw; rc == 0 && *p;) {
        if (p[0] != '$' || p[1] != '{') {
            fputc(*p++, f);
            continue;
        }
        const char *name = p + 2;
        size_t n = strspn(name, IDENT);
        char var[128];
        if (name[n] != '}' || n == 0 || strchr(IDENT_FIRST, name[0]) == NULL) {
            snprintf(err, errlen,
                     "${ must be followed by NAME} with NAME "
                     "made of letters, digits and _");
            rc = -EINVAL;
        } else if (n >= sizeof(var)) {
            snprintf(err, errlen, "variable name too long");
            rc = -EINVAL;
        } else {
            memcpy(var, name, n);
            var[n] = '\0';
            const char *v = getenv(var);
            if (v == NULL) {
                snprintf(err, errlen, "${%s} is not set", var);
                rc = -EINVAL;
            } else if (reject && strpbrk(v, reject)) {
                snprintf(err, errlen,
                         "the value of ${%s} must not contain any of \"%s\"",
                         var, reject);
                rc = -EINVAL;
            } else {
                fputs(v, f);
            }
        }
        p = name + n + 1;
    }
    if (fclose(f) != 0 && rc == 0) {
        snprintf(err, errlen, "out of memory");
        rc = -ENOMEM;
    }
    if (rc < 0) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

int
corral_config_expand(const char *raw, char **out, char *err, size_t errlen)
{
    return expand(raw, NULL, out, err, errlen);
}

/* ---- validation helpers ---------------------------------------------- */

struct ctx {
    const char *name; /* the file, for messages */
    char *err;
    size_t errlen;
    bool failed;
    char quoted[96];
};

/* Records the first error, at n's line when n is given. Returns -1. */
__attribute__((format(printf, 4, 5))) static int
fail(struct ctx *c, const struct jnode *n, const char *path, const char *fmt,
     ...)
{
    if (c->failed)
        return -1;
    c->failed = true;
    char line[16] = "", reason[512];
    if (n)
        snprintf(line, sizeof(line), ":%u", n->line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "%s%s: %s%s%s", c->name, line, path,
             *path ? ": " : "", reason);
    return -1;
}

/* n's raw text, shortened and with control bytes masked, for a message. */
static const char *
quote(struct ctx *c, const struct jnode *n)
{
    size_t max = sizeof(c->quoted) - 4, i;
    for (i = 0; n->raw[i] && i < max; i++)
        c->quoted[i] = (unsigned char)n->raw[i] < 0x20 ? '?' : n->raw[i];
    strcpy(c->quoted + i, n->raw[i] ? "..." : "");
    return c->quoted;
}

static void
mask_controls(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = '?';
}

static const char *
join_key(char buf[static PATH_LEN], const char *parent, const char *key)
{
    /* A path longer than PATH_LEN is cut: the message keeps its start. */
    if (snprintf(buf, PATH_LEN, "%s%s%s", parent, *parent ? "." : "", key) >=
        PATH_LEN)
        buf[PATH_LEN - 1] = '\0';
    mask_controls(buf);
    return buf;
}

static const char *
join_index(char buf[static PATH_LEN], const char *parent, size_t i)
{
    if (snprintf(buf, PATH_LEN, "%s[%zu]", parent, i) >= PATH_LEN)
        buf[PATH_LEN - 1] = '\0'; /* cut, as in join_key() */
    return buf;
}

static const char *
type_name(enum jtype t)
{
    static const char *const names[] = {
        [J_NULL] = "null",       [J_BOOL] = "true or false",
        [J_INT] = "an integer",  [J_DOUBLE] = "a fractional number",
        [J_STRING] = "a string", [J_OBJECT] = "an object",
        [J_ARRAY] = "an array",
    };
    return names[t];
}

static bool
expect(struct ctx *c, const struct jnode *n, const char *path, enum jtype t)
{
    if (n->type == t)
        return true;
    fail(c, n, path, "expected %s, not %s", type_name(t), type_name(n->type));
    return false;
}

static struct jnode *
member(const struct jnode *obj, const char *key)
{
    for (size_t i = 0; i < obj->n; i++)
        if (strcmp(obj->kids[i]->key, key) == 0)
            return obj->kids[i];
    return NULL;
}

/* Checks obj is an object without repeated keys and, when known is given,
 * only with keys it lists. */
static int
check_object(struct ctx *c, const struct jnode *obj, const char *path,
             const char *const *known)
{
    char p[PATH_LEN];
    if (!expect(c, obj, path, J_OBJECT))
        return -1;
    for (size_t i = 0; i < obj->n; i++) {
        const struct jnode *k = obj->kids[i];
        if (member(obj, k->key) != k)
            return fail(c, k, join_key(p, path, k->key), "repeated key");
        if (known == NULL)
            continue;
        const char *const *w = known;
        while (*w && strcmp(*w, k->key) != 0)
            w++;
        if (*w == NULL)
            return fail(c, k, join_key(p, path, k->key), "unknown key");
    }
    return 0;
}

static struct jnode *
need(struct ctx *c, const struct jnode *obj, const char *path, const char *key)
{
    char p[PATH_LEN];
    struct jnode *n = member(obj, key);
    if (n == NULL)
        fail(c, obj, join_key(p, path, key), "required key is missing");
    return n;
}

/* The string at n, ${NAME} expanded; a variable's value must not contain
 * any byte of reject. Borrowed; valid as long as the tree. */
static const char *
get_str(struct ctx *c, struct jnode *n, const char *path, const char *reject)
{
    if (!expect(c, n, path, J_STRING))
        return NULL;
    if (n->val == NULL) {
        char why[192];
        if (expand(n->raw, reject, &n->val, why, sizeof(why)) < 0) {
            fail(c, n, path, "%s", why);
            return NULL;
        }
    }
    return n->val;
}

static int
dup_str(struct ctx *c, struct jnode *n, const char *path, char **out)
{
    const char *s = get_str(c, n, path, NULL);
    if (s == NULL)
        return -1;
    if ((*out = strdup(s)) == NULL)
        return fail(c, n, path, "out of memory");
    return 0;
}

static int
get_unsigned(struct ctx *c, struct jnode *n, const char *path, unsigned min,
             unsigned max, unsigned *out)
{
    if (!expect(c, n, path, J_INT))
        return -1;
    if (n->num < min || n->num > max)
        return fail(c, n, path, "%lld is out of range (%u to %u)", n->num, min,
                    max);
    *out = (unsigned)n->num;
    return 0;
}

/* A duration from min to max ms, so that now + it never wraps. */
static int
get_duration(struct ctx *c, struct jnode *n, const char *path, uint64_t min,
             uint64_t max, uint64_t *out)
{
    const char *why, *s = get_str(c, n, path, NULL);
    if (s == NULL)
        return -1;
    if (corral_duration_parse(s, out, &why) < 0)
        return fail(c, n, path, "\"%s\": %s", quote(c, n), why);
    if (*out < min)
        return fail(c, n, path, "must be longer than 0");
    if (*out > max)
        return fail(c, n, path, "\"%s\": must be at most %s", quote(c, n),
                    max == MAX_TIMEOUT_MS ? "1d" : "365d");
    return 0;
}

static int
get_size(struct ctx *c, struct jnode *n, const char *path, uint64_t max,
         uint64_t *out)
{
    const char *why, *s = get_str(c, n, path, NULL);
    if (s == NULL)
        return -1;
    if (corral_size_parse(s, out, &why) < 0)
        return fail(c, n, path, "\"%s\": %s", quote(c, n), why);
    if (*out == 0)
        return fail(c, n, path, "must be greater than 0");
    if (*out > max)
        return fail(c, n, path, "\"%s\": must be at most %llu bytes",
                    quote(c, n), (unsigned long long)max);
    return 0;
}

static bool
all_of(const char *s, size_t len, const char *set)
{
    return len > 0 && strspn(s, set) >= len;
}

static bool
is_ident(const char *s, size_t len)
{
    return all_of(s, len, IDENT) && strchr(IDENT_FIRST, s[0]) != NULL;
}

static bool
has_controls(const char *s, bool allow_tab)
{
    for (; *s; s++)
        if (((unsigned char)*s < 0x20 && !(allow_tab && *s == '\t')) ||
            *s == 0x7f)
            return true;
    return false;
}

/* ---- addresses and upstreams ----------------------------------------- */

/* Splits len bytes of "host[:port]" (IPv6 in brackets) into out. Returns 0,
 * or -1 with *why set. */
static int
split_hostport(const char *s, size_t len, bool names, bool port_required,
               struct corral_config_addr *out, const char **why)
{
    char host[256], tmp[sizeof(struct in6_addr)];
    const char *end = s + len, *h = s, *colon;
    size_t hlen;
    bool v6 = s[0] == '[';
    if (v6) {
        const char *close = memchr(s, ']', len);
        if (close == NULL || (close + 1 != end && close[1] != ':')) {
            *why = "an IPv6 address needs the form [::1]:port";
            return -1;
        }
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1 == end ? NULL : close + 1;
    } else {
        colon = memchr(s, ':', len);
        hlen = colon ? (size_t)(colon - s) : len;
        if (colon && memchr(colon + 1, ':', (size_t)(end - colon - 1))) {
            *why = "an IPv6 address needs brackets: [::1]:port";
            return -1;
        }
    }
    if (hlen == 0 || hlen >= sizeof(host)) {
        *why = "missing host";
        return -1;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (v6 ? inet_pton(AF_INET6, host, tmp) != 1
           : inet_pton(AF_INET, host, tmp) != 1 &&
                 strcmp(host, "localhost") != 0 &&
                 !(names && corral_fetch_check_host(host, hlen) == NULL)) {
        *why = names ? "not a host name or IP address"
                     : "the host must be an IP address or localhost";
        return -1;
    }
    unsigned long port = 0;
    if (colon == NULL && port_required) {
        *why = "missing :port";
        return -1;
    }
    if (colon) {
        const char *p = colon + 1;
        size_t plen = (size_t)(end - p);
        if (!all_of(p, plen, "0123456789") || plen > 5 ||
            (port = strtoul(p, NULL, 10)) < 1 || port > 65535) {
            *why = "the port must be a number from 1 to 65535";
            return -1;
        }
    }
    if ((out->host = strdup(host)) == NULL) {
        *why = "out of memory";
        return -1;
    }
    out->port = (uint16_t)port;
    return 0;
}

static int
get_addr(struct ctx *c, struct jnode *n, const char *path, bool names,
         struct corral_config_addr *out)
{
    const char *why, *s = get_str(c, n, path, NULL);
    if (s == NULL)
        return -1;
    if (split_hostport(s, strlen(s), names, true, out, &why) < 0)
        return fail(c, n, path, "\"%s\": %s", quote(c, n), why);
    return 0;
}

static int
parse_base(struct ctx *c, struct jnode *n, const char *path,
           struct corral_config_upstream *up)
{
    const char *why, *s = get_str(c, n, path, NULL);
    if (s == NULL)
        return -1;
    if (strncmp(s, "http://", 7) == 0) {
        s += 7;
        up->port = 80;
    } else if (strncmp(s, "https://", 8) == 0) {
        s += 8;
        up->port = 443;
        up->tls = true;
    } else {
        return fail(c, n, path, "\"%s\": must start with http:// or https://",
                    quote(c, n));
    }
    size_t alen = strcspn(s, "/?#");
    const char *prefix = s + alen;
    if (memchr(s, '@', alen))
        return fail(c, n, path, "\"%s\": must not hold user:password@",
                    quote(c, n));
    if (strpbrk(prefix, "?#"))
        return fail(c, n, path,
                    "\"%s\": must not have a query or fragment (put those in "
                    "fetch)",
                    quote(c, n));
    if (has_controls(prefix, false) || strchr(prefix, ' '))
        return fail(c, n, path,
                    "\"%s\": must not contain spaces or control characters",
                    quote(c, n));
    uint16_t port = up->port;
    struct corral_config_addr addr;
    if (split_hostport(s, alen, true, false, &addr, &why) < 0)
        return fail(c, n, path, "\"%s\": %s", quote(c, n), why);
    up->host = addr.host;
    up->port = addr.port ? addr.port : port;
    size_t plen = strlen(prefix);
    while (plen > 0 && prefix[plen - 1] == '/')
        plen--;
    if ((up->prefix = strndup(prefix, plen)) == NULL)
        return fail(c, n, path, "out of memory");
    return 0;
}

/* "N%" with N from 0 to max. */
static int
get_percent(struct ctx *c, struct jnode *n, const char *path, unsigned max,
            unsigned *out)
{
    const char *s = get_str(c, n, path, NULL);
    char *end;
    if (s == NULL)
        return -1;
    unsigned long pct = strtoul(s, &end, 10);
    if (end == s || strcmp(end, "%") != 0 || pct > max || s[0] == '-' ||
        s[0] == '+' || s[0] == ' ')
        return fail(c, n, path,
                    "\"%s\": a percentage from \"0%%\" to "
                    "\"%u%%\"",
                    quote(c, n), max);
    *out = (unsigned)pct;
    return 0;
}

/* "N/s", "N/min", "N/h" or "N/<duration>" such as "1/15s": an upstream's
 * rate or a route's new_keys. */
static int
parse_rate(struct ctx *c, struct jnode *n, const char *path,
           unsigned *count_out, uint64_t *window_ms)
{
    const char *why, *s = get_str(c, n, path, NULL);
    if (s == NULL)
        return -1;
    const char *slash = strchr(s, '/');
    size_t nlen = slash ? (size_t)(slash - s) : 0;
    unsigned long count = 0;
    if (all_of(s, nlen, "0123456789") && nlen <= 7)
        count = strtoul(s, NULL, 10);
    if (count < 1 || count > 1000000)
        return fail(c, n, path,
                    "\"%s\": must be N/s, N/min, N/h or N/<duration> (such "
                    "as 1/15s) with N from 1 to 1000000",
                    quote(c, n));
    char unit[32];
    const char *u = slash + 1;
    if (strlen(u) + 2 > sizeof(unit))
        return fail(c, n, path, "\"%s\": the window is too long", quote(c, n));
    snprintf(unit, sizeof(unit), "%s%s", *u >= '0' && *u <= '9' ? "" : "1",
             strcmp(u, "min") == 0 ? "m" : u);
    if (corral_duration_parse(unit, window_ms, &why) < 0 || *window_ms == 0)
        return fail(c, n, path,
                    "\"%s\": the window must be s, min, h or a "
                    "duration such as 15s",
                    quote(c, n));
    *count_out = (unsigned)count;
    return 0;
}

static int
parse_headers(struct ctx *c, struct jnode *obj, const char *path,
              struct corral_config_upstream *up)
{
    char p[PATH_LEN];
    if (check_object(c, obj, path, NULL) < 0)
        return -1;
    if ((up->headers = calloc(obj->n, sizeof(*up->headers))) == NULL &&
        obj->n > 0)
        return fail(c, obj, path, "out of memory");
    for (size_t i = 0; i < obj->n; i++) {
        struct jnode *h = obj->kids[i];
        struct corral_config_header *hdr = &up->headers[i];
        join_key(p, path, h->key);
        for (size_t j = 0; j < i; j++)
            if (strcasecmp(h->key, up->headers[j].name) == 0)
                return fail(c, h, p, "repeated header");
        if ((hdr->name = strdup(h->key)) == NULL)
            return fail(c, h, p, "out of memory");
        up->n_headers++;
        if (dup_str(c, h, p, &hdr->value) < 0)
            return -1;
        /* The same rule the fetch module applies when it starts. */
        const char *why = corral_fetch_check_header(hdr->name, hdr->value);
        if (why != NULL)
            return fail(c, h, p, "%s", why);
    }
    return 0;
}

static const char *const cache_control_names[] = {
    [CORRAL_CONFIG_CC_DEFAULT] = "default",
    [CORRAL_CONFIG_CC_IGNORE] = "ignore",
    [CORRAL_CONFIG_CC_HONOUR] = "honour",
};

const char *
corral_config_cache_control_name(enum corral_config_cache_control cc)
{
    if ((unsigned)cc > CORRAL_CONFIG_CC_HONOUR)
        return "unknown";
    return cache_control_names[cc];
}

/* "upstream_cache_control": "default", "ignore" or "honour". */
static int
parse_cache_control(struct ctx *c, struct jnode *n, const char *path,
                    enum corral_config_cache_control *out)
{
    const char *s = get_str(c, n, path, NULL);
    if (s == NULL)
        return -1;
    for (unsigned i = 0; i <= CORRAL_CONFIG_CC_HONOUR; i++)
        if (strcmp(s, cache_control_names[i]) == 0) {
            *out = (enum corral_config_cache_control)i;
            return 0;
        }
    return fail(c, n, path,
                "\"%s\": one of \"default\", \"ignore\", \"honour\"",
                quote(c, n));
}

static int
parse_upstream(struct ctx *c, struct jnode *n, const char *path,
               struct corral_config_upstream *up)
{
    static const char *const keys[] = {
        "base",
        "timeout",
        "max_connections",
        "rate",
        "refresh_share",
        "headers",
        "ca_file",
        "upstream_cache_control",
        "breaker_failures",
        NULL,
    };
    char p[PATH_LEN];
    struct jnode *m;
    struct stat st;

    if ((up->name = strdup(n->key)) == NULL)
        return fail(c, n, path, "out of memory");
    if (!all_of(n->key, strlen(n->key), NAME_CHARS))
        return fail(c, n, path,
                    "upstream names use letters, digits, '_', "
                    "'-' and '.'");
    if (check_object(c, n, path, keys) < 0)
        return -1;
    if ((m = need(c, n, path, "base")) == NULL ||
        parse_base(c, m, join_key(p, path, "base"), up) < 0)
        return -1;
    up->timeout_ms = 10000;
    if ((m = member(n, "timeout")) &&
        get_duration(c, m, join_key(p, path, "timeout"), 1, MAX_TIMEOUT_MS,
                     &up->timeout_ms) < 0)
        return -1;
    up->max_connections = 8;
    if ((m = member(n, "max_connections")) &&
        get_unsigned(c, m, join_key(p, path, "max_connections"), 1, 1024,
                     &up->max_connections) < 0)
        return -1;
    if ((m = member(n, "rate")) &&
        parse_rate(c, m, join_key(p, path, "rate"), &up->rate_count,
                   &up->rate_window_ms) < 0)
        return -1;
    up->refresh_share = 25;
    if ((m = member(n, "refresh_share")) &&
        get_percent(c, m, join_key(p, path, "refresh_share"), 90,
                    &up->refresh_share) < 0)
        return -1;
    if ((m = member(n, "headers")) &&
        parse_headers(c, m, join_key(p, path, "headers"), up) < 0)
        return -1;
    if ((m = member(n, "upstream_cache_control")) &&
        parse_cache_control(c, m, join_key(p, path, "upstream_cache_control"),
                            &up->cache_control) < 0)
        return -1;
    up->breaker_failures = 5;
    if ((m = member(n, "breaker_failures")) &&
        get_unsigned(c, m, join_key(p, path, "breaker_failures"), 0, 10000,
                     &up->breaker_failures) < 0)
        return -1;
    if ((m = member(n, "ca_file"))) {
        join_key(p, path, "ca_file");
        if (dup_str(c, m, p, &up->ca_file) < 0)
            return -1;
        char why[256];
        if (stat(up->ca_file, &st) < 0 || access(up->ca_file, R_OK) < 0)
            return fail(c, m, p, "\"%s\": %s", quote(c, m), strerror(errno));
        if (!S_ISREG(st.st_mode))
            return fail(c, m, p, "\"%s\": not a regular file", quote(c, m));
        if (corral_fetch_check_ca_file(up->ca_file, why, sizeof(why)) < 0)
            return fail(c, m, p, "\"%s\": %s", quote(c, m), why);
    }
    return 0;
}

/* ---- routes ---------------------------------------------------------- */

/* Steps past the segment after the '/' at *cursor: returns it and its
 * length, or NULL at the end. */
static const char *
next_segment(const char **cursor, size_t *len)
{
    const char *s = *cursor;
    if (*s != '/')
        return NULL;
    s++;
    *len = strcspn(s, "/");
    *cursor = s + *len;
    return s;
}

static int
find_param(const struct corral_config_route *r, const char *name, size_t len)
{
    for (size_t i = 0; i < r->n_params; i++)
        if (strlen(r->params[i].name) == len &&
            memcmp(r->params[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

static int
add_param(struct ctx *c, struct jnode *n, const char *path,
          struct corral_config_route *r, const char *name, size_t len,
          struct jnode *params, const char *params_path)
{
    char p[PATH_LEN], why[128];
    struct corral_config_param *prm = &r->params[r->n_params];
    const char *pattern = CORRAL_CONFIG_DEFAULT_PARAM_PATTERN;
    struct jnode *pat = NULL;

    if (!is_ident(name, len))
        return fail(c, n, path,
                    "\"%s\": a {param} segment is {name}, name made of "
                    "letters, digits and _",
                    quote(c, n));
    if (find_param(r, name, len) >= 0)
        return fail(c, n, path, "\"%s\": a {param} name appears twice",
                    quote(c, n));
    if (r->n_params == MAX_PARAMS)
        return fail(c, n, path, "more than %d {param} segments", MAX_PARAMS);
    if ((prm->name = strndup(name, len)) == NULL)
        return fail(c, n, path, "out of memory");
    if (params && (pat = member(params, prm->name))) {
        join_key(p, params_path, prm->name);
        if ((pattern = get_str(c, pat, p, NULL)) == NULL) {
            free(prm->name);
            return -1;
        }
    }
    if ((prm->re = corral_pattern_new(pattern, why, sizeof(why))) == NULL) {
        free(prm->name);
        return fail(c, pat, p, "\"%s\": %s", quote(c, pat), why);
    }
    if ((prm->pattern = strdup(pattern)) == NULL) {
        corral_pattern_free(prm->re);
        free(prm->name);
        return fail(c, n, path, "out of memory");
    }
    r->n_params++;
    return 0;
}

/* The route path: "/" or "/seg/..." where each segment is a literal or a
 * {param}; each param gets its pattern from the params object. */
static int
parse_route_path(struct ctx *c, struct jnode *n, const char *path,
                 struct corral_config_route *r, struct jnode *params,
                 const char *params_path)
{
    char p[PATH_LEN];
    const char *seg, *s = get_str(c, n, path, NULL);
    size_t len;
    if (s == NULL)
        return -1;
    if ((r->path = strdup(s)) == NULL)
        return fail(c, n, path, "out of memory");
    if (s[0] != '/')
        return fail(c, n, path, "\"%s\": must start with /", quote(c, n));
    size_t braces = 1;
    for (const char *b = s; (b = strchr(b, '{')); b++)
        braces++;
    if ((r->params = calloc(braces, sizeof(*r->params))) == NULL)
        return fail(c, n, path, "out of memory");
    for (const char *cur = strcmp(s, "/") == 0 ? "" : s;
         (seg = next_segment(&cur, &len));) {
        if (len == 0)
            return fail(c, n, path,
                        "\"%s\": empty segment (// or a "
                        "trailing /)",
                        quote(c, n));
        if (seg[0] == '{' && seg[len - 1] == '}') {
            if (add_param(c, n, path, r, seg + 1, len - 2, params,
                          params_path) < 0)
                return -1;
        } else if (!all_of(seg, len, SEGMENT_CHARS)) {
            return fail(c, n, path,
                        "\"%s\": a segment is {name} or made of letters, "
                        "digits and -._~!$&'()*+,;=:@",
                        quote(c, n));
        }
    }
    for (size_t i = 0; params && i < params->n; i++)
        if (find_param(r, params->kids[i]->key, strlen(params->kids[i]->key)) <
            0)
            return fail(c, params->kids[i],
                        join_key(p, params_path, params->kids[i]->key),
                        "not a {param} of the route's path");
    return 0;
}

/* Checks each {name} in the template at n names a param of r; sets a bit in
 * *used for each. Scans the raw text so a message can quote the name; the
 * variables of ${NAME} may not add braces. */
static int
check_template(struct ctx *c, struct jnode *n, const char *path,
               const struct corral_config_route *r, uint32_t *used)
{
    if (get_str(c, n, path, "{}") == NULL)
        return -1;
    *used = 0;
    for (const char *s = n->raw; *s; s++) {
        if (s[0] == '$' && s[1] == '{') {
            s = strchr(s, '}');
            continue;
        }
        if (*s == '}')
            return fail(c, n, path, "\"%s\": } without {", quote(c, n));
        if (*s != '{')
            continue;
        size_t len = strcspn(s + 1, "{}");
        int i = s[len + 1] == '}' ? find_param(r, s + 1, len) : -1;
        if (i < 0 && is_ident(s + 1, len) && s[len + 1] == '}')
            return fail(c, n, path, "{%.*s} is not a {param} of the path",
                        (int)len, s + 1);
        if (i < 0)
            return fail(c, n, path, "\"%s\": { must open a {param} placeholder",
                        quote(c, n));
        *used |= 1u << i;
        s += len + 1;
    }
    return 0;
}

static int
parse_fetch(struct ctx *c, struct jnode *n, const char *path,
            struct corral_config_route *r)
{
    uint32_t used;
    if (check_template(c, n, path, r, &used) < 0)
        return -1;
    const unsigned char *s = (const unsigned char *)n->val;
    if (s[0] != '/')
        return fail(c, n, path, "\"%s\": must start with /", quote(c, n));
    for (; *s; s++)
        if (*s <= ' ' || *s >= 0x7f || *s == '#')
            return fail(c, n, path,
                        "must be ASCII without spaces, control characters "
                        "or # (percent-encode them)");
    if ((r->fetch = strdup(n->val)) == NULL)
        return fail(c, n, path, "out of memory");
    return 0;
}

static int
parse_key(struct ctx *c, struct jnode *n, const char *path,
          struct corral_config_route *r)
{
    uint32_t used;
    if (check_template(c, n, path, r, &used) < 0)
        return -1;
    if (n->val[0] == '\0' || has_controls(n->val, false))
        return fail(c, n, path,
                    "must be non-empty, without control "
                    "characters");
    if (n->val[0] == CORRAL_CONFIG_GENERATION_MARK)
        return fail(c, n, path,
                    "\"%s\": may not start with %c, which marks the keys "
                    "of a purged route",
                    quote(c, n), CORRAL_CONFIG_GENERATION_MARK);
    if (strstr(n->val, "}{"))
        return fail(c, n, path,
                    "\"%s\": two {param}s side by side would share keys "
                    "(\"ab\"+\"c\" and \"a\"+\"bc\"); put a character between",
                    quote(c, n));
    if (used != (1ull << r->n_params) - 1)
        return fail(c, n, path,
                    "\"%s\": must hold every {param} of the path, or their "
                    "values would share one cache entry",
                    quote(c, n));
    if ((r->key = strdup(n->val)) == NULL)
        return fail(c, n, path, "out of memory");
    return 0;
}

/* One forwarded query name with its value's pattern (NULL: the
 * default), at n (its array element or its object member). */
static int
add_query(struct ctx *c, struct jnode *n, const char *path,
          struct corral_config_route *r, const char *name, struct jnode *pat)
{
    char why[128];
    struct corral_config_param *q = &r->query[r->n_query];
    const char *pattern = CORRAL_CONFIG_DEFAULT_PARAM_PATTERN;
    if (r->n_query == MAX_PARAMS)
        return fail(c, n, path, "more than %d query names", MAX_PARAMS);
    if ((q->name = strdup(name)) == NULL)
        return fail(c, n, path, "out of memory");
    r->n_query++;
    /* An array element's text as the file has it, not expanded. */
    const char *shown = pat ? name : quote(c, n);
    if (!all_of(name, strlen(name), QUERY_CHARS))
        return fail(c, n, path, "\"%s\": names use letters, digits and ._~-",
                    shown);
    for (size_t j = 0; j + 1 < r->n_query; j++)
        if (strcmp(name, r->query[j].name) == 0)
            return fail(c, n, path, "\"%s\": repeated", shown);
    if (pat && (pattern = get_str(c, pat, path, NULL)) == NULL)
        return -1;
    if ((q->re = corral_pattern_new(pattern, why, sizeof(why))) == NULL)
        return fail(c, n, path, "\"%s\": %s", quote(c, n), why);
    if ((q->pattern = strdup(pattern)) == NULL)
        return fail(c, n, path, "out of memory");
    return 0;
}

/* ["name", ...] (each value matches the default pattern of a {param}) or
 * {"name": "pattern", ...}. */
static int
parse_query(struct ctx *c, struct jnode *n, const char *path,
            struct corral_config_route *r)
{
    char p[PATH_LEN];
    bool object = n->type == J_OBJECT;
    if (object ? check_object(c, n, path, NULL) < 0
               : !expect(c, n, path, J_ARRAY))
        return -1;
    if ((r->query = calloc(n->n + 1, sizeof(*r->query))) == NULL)
        return fail(c, n, path, "out of memory");
    for (size_t i = 0; i < n->n; i++) {
        struct jnode *q = n->kids[i];
        if (object) {
            join_key(p, path, q->key);
            if (add_query(c, q, p, r, q->key, q) < 0)
                return -1;
            continue;
        }
        join_index(p, path, i);
        const char *name = get_str(c, q, p, NULL);
        if (name == NULL || add_query(c, q, p, r, name, NULL) < 0)
            return -1;
    }
    return 0;
}

/* Could key templates a and b (literal text and {param}s) ever build the
 * same key? Conservatively yes when their literal heads and tails agree:
 * "btc_price" and "{coin}_price", "k_{a}" and "k_{b}". */
static bool
keys_may_collide(const char *a, const char *b)
{
    const char *ao = strchr(a, '{'), *bo = strchr(b, '{');
    if (!ao && !bo)
        return strcmp(a, b) == 0;
    size_t ah = ao ? (size_t)(ao - a) : strlen(a);
    size_t bh = bo ? (size_t)(bo - b) : strlen(b);
    size_t h = ah < bh ? ah : bh;
    if (strncmp(a, b, h) != 0)
        return false;
    const char *ac = strrchr(a, '}'), *bc = strrchr(b, '}');
    const char *at = ac ? ac + 1 : a + ah, *bt = bc ? bc + 1 : b + bh;
    size_t al = strlen(at), bl = strlen(bt), t = al < bl ? al : bl;
    return strcmp(at + al - t, bt + bl - t) == 0;
}

/* The template of r's keys for keys_may_collide(): its key (or path), and a
 * placeholder for any text at the end when it forwards query values. */
static void
key_shape(const struct corral_config_route *r, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s", r->key ? r->key : r->path,
             r->n_query > 0 ? "{?}" : "");
}

/* Whether two route paths differ only in their params' names. */
static bool
same_shape(const char *a, const char *b)
{
    while (*a && *b) {
        if (*a == '{' && *b == '{') {
            a = strchr(a, '}') + 1;
            b = strchr(b, '}') + 1;
        } else if (*a++ != *b++) {
            return false;
        }
    }
    return *a == *b;
}

static int
parse_strategy(struct ctx *c, struct jnode *n, const char *path,
               struct corral_config_route *r)
{
    char p[PATH_LEN];
    const char *why, *s;
    struct jnode *m;
    if ((m = member(n, "strategy"))) {
        join_key(p, path, "strategy");
        if ((s = get_str(c, m, p, NULL)) == NULL)
            return -1;
        if (corral_strategy_parse(s, &r->strategy, &why) < 0)
            return fail(c, m, p, "\"%s\": %s", quote(c, m), why);
        if (corral_strategy_ttl_ms(&r->strategy) > MAX_DURATION_MS)
            return fail(c, m, p, "\"%s\": must be at most 365d", quote(c, m));
    }
    if ((m = member(n, "stale_while_revalidate")) &&
        get_duration(c, m, join_key(p, path, "stale_while_revalidate"), 0,
                     MAX_DURATION_MS, &r->strategy.swr_ms) < 0)
        return -1;
    if ((m = member(n, "stale_if_error")) &&
        get_duration(c, m, join_key(p, path, "stale_if_error"), 0,
                     MAX_DURATION_MS, &r->strategy.sie_ms) < 0)
        return -1;
    /* XFetch's beta: 1 (the paper's) unless told otherwise; 0 = off. */
    r->strategy.beta = 1.0;
    if ((m = member(n, "early_refresh"))) {
        join_key(p, path, "early_refresh");
        if (m->type != J_INT && m->type != J_DOUBLE)
            return fail(c, m, p, "must be a number from 0 (off) to 10");
        if (!(m->dbl >= 0 && m->dbl <= 10))
            return fail(c, m, p, "%g is out of range (0 to 10)", m->dbl);
        r->strategy.beta = m->dbl;
    }
    return 0;
}

/* Parses routes[i]; aggregate members are resolved once all are known. */
/* {"404": "1m", ...}: which upstream 4xx answers are cached, how long. */
static int
parse_cache_errors(struct ctx *c, struct jnode *n, const char *path,
                   struct corral_config_route *r)
{
    char p[PATH_LEN];
    if (check_object(c, n, path, NULL) < 0)
        return -1;
    if (n->n > sizeof(r->cache_errors) / sizeof(r->cache_errors[0]))
        return fail(c, n, path, "at most %zu statuses",
                    sizeof(r->cache_errors) / sizeof(r->cache_errors[0]));
    for (size_t i = 0; i < n->n; i++) {
        struct jnode *e = n->kids[i];
        const char *k = e->key;
        join_key(p, path, k);
        if (strlen(k) != 3 || k[0] != '4' || k[1] < '0' || k[1] > '9' ||
            k[2] < '0' || k[2] > '9')
            return fail(c, e, p,
                        "only 4xx answers are cached (a status such as "
                        "\"404\")");
        r->cache_errors[i].status = atoi(k);
        if (get_duration(c, e, p, 1000, MAX_TIMEOUT_MS,
                         &r->cache_errors[i].ttl_ms) < 0)
            return -1;
        r->n_cache_errors++;
    }
    return 0;
}

/* Where r's value comes from: an upstream and fetch, or an aggregate of
 * other routes (whose own keys it may then not use). */
static int
parse_route_source(struct ctx *c, struct jnode *n, const char *path,
                   struct corral_config *cfg, struct corral_config_route *r)
{
    static const char *const upstream_only[] = {
        "params",   "query", "json", "cache_errors", "upstream_cache_control",
        "new_keys", NULL};
    char p[PATH_LEN];
    struct jnode *m, *up = member(n, "upstream"), *fetch = member(n, "fetch"),
                     *agg = member(n, "aggregate");
    if (agg && (up || fetch))
        return fail(c, agg, join_key(p, path, "aggregate"),
                    "a route has upstream and fetch, or aggregate, not both");
    if (agg) {
        if (r->n_params > 0)
            return fail(c, member(n, "path"), join_key(p, path, "path"),
                        "an aggregate route has no {param} segments");
        for (size_t i = 0; upstream_only[i]; i++)
            if ((m = member(n, upstream_only[i])))
                return fail(c, m, join_key(p, path, upstream_only[i]),
                            "not allowed in an aggregate route");
    } else {
        if (!up && !fetch)
            return fail(c, n, path, "needs upstream and fetch, or aggregate");
        if ((up = need(c, n, path, "upstream")) == NULL ||
            (fetch = need(c, n, path, "fetch")) == NULL)
            return -1;
        const char *name = get_str(c, up, join_key(p, path, "upstream"), NULL);
        if (name == NULL)
            return -1;
        for (size_t i = 0; i < cfg->n_upstreams && !r->upstream; i++)
            if (strcmp(cfg->upstreams[i].name, name) == 0)
                r->upstream = &cfg->upstreams[i];
        if (r->upstream == NULL)
            return fail(c, up, p, "\"%s\": no such upstream", quote(c, up));
        if (parse_fetch(c, fetch, join_key(p, path, "fetch"), r) < 0)
            return -1;
    }
    return 0;
}

/* Keys built from the path are as distinct as the paths; a configured key
 * must not be able to meet another route's key, forwarded query values
 * ("?q=...", any text at the end) included. */
static int
check_key_apart(struct ctx *c, struct jnode *n, const char *path,
                struct corral_config *cfg, struct corral_config_route *r)
{
    char p[PATH_LEN], rk[PATH_LEN + 8], ok[PATH_LEN + 8];
    key_shape(r, rk, sizeof(rk));
    for (struct corral_config_route *o = cfg->routes; o < r; o++) {
        key_shape(o, ok, sizeof(ok));
        if ((o->key || r->key) && keys_may_collide(ok, rk)) {
            struct jnode *at = member(n, "key") ? member(n, "key") : n;
            return fail(c, at, join_key(p, path, "key"),
                        "may build the same cache key as route \"%s\"; give "
                        "each route a key of its own",
                        o->path);
        }
    }
    return 0;
}

static int
parse_route(struct ctx *c, struct jnode *n, const char *path,
            struct corral_config *cfg, struct corral_config_route *r)
{
    static const char *const keys[] = {
        "path",
        "upstream",
        "fetch",
        "aggregate",
        "key",
        "strategy",
        "stale_while_revalidate",
        "stale_if_error",
        "params",
        "query",
        "json",
        "cache_errors",
        "ttl_jitter",
        "early_refresh",
        "upstream_cache_control",
        "new_keys",
        NULL,
    };
    char p[PATH_LEN], pp[PATH_LEN];
    struct jnode *m, *params;

    if (check_object(c, n, path, keys) < 0)
        return -1;
    r->json = true;
    join_key(pp, path, "params");
    if ((params = member(n, "params")) && check_object(c, params, pp, NULL) < 0)
        return -1;
    if ((m = need(c, n, path, "path")) == NULL ||
        parse_route_path(c, m, join_key(p, path, "path"), r, params, pp) < 0)
        return -1;
    for (struct corral_config_route *o = cfg->routes; o < r; o++)
        if (same_shape(o->path, r->path))
            return fail(c, m, p, "\"%s\": another route has this path",
                        quote(c, m));

    if (parse_route_source(c, n, path, cfg, r) < 0)
        return -1;
    if ((m = member(n, "key"))) {
        if (parse_key(c, m, join_key(p, path, "key"), r) < 0)
            return -1;
    }
    if (parse_strategy(c, n, path, r) < 0)
        return -1;
    if ((m = member(n, "query")) &&
        parse_query(c, m, join_key(p, path, "query"), r) < 0)
        return -1;
    if (check_key_apart(c, n, path, cfg, r) < 0)
        return -1;
    if ((m = member(n, "json"))) {
        if (!expect(c, m, join_key(p, path, "json"), J_BOOL))
            return -1;
        r->json = m->num != 0;
    }
    if ((m = member(n, "cache_errors")) &&
        parse_cache_errors(c, m, join_key(p, path, "cache_errors"), r) < 0)
        return -1;
    if (r->upstream)
        r->cache_control = r->upstream->cache_control;
    if ((m = member(n, "upstream_cache_control")) &&
        parse_cache_control(c, m, join_key(p, path, "upstream_cache_control"),
                            &r->cache_control) < 0)
        return -1;
    /* Expiry drawn between 90% and 100% of the ttl unless told otherwise:
     * keys filled together then do not all expire together. */
    r->strategy.jitter_pct = 10;
    if ((m = member(n, "ttl_jitter")) &&
        get_percent(c, m, join_key(p, path, "ttl_jitter"), 50,
                    &r->strategy.jitter_pct) < 0)
        return -1;
    if ((m = member(n, "new_keys")) &&
        parse_rate(c, m, join_key(p, path, "new_keys"), &r->new_keys_count,
                   &r->new_keys_window_ms) < 0)
        return -1;
    return 0;
}

/* Resolves member n through cfg's route table, as a request for its path
 * would be resolved: the route, its parameters checked, the key built. */
static int
parse_member(struct ctx *c, struct jnode *n, const char *path,
             const struct corral_config *cfg, struct corral_config_member *mb)
{
    if ((mb->name = strdup(n->key)) == NULL)
        return fail(c, n, path, "out of memory");
    if (!all_of(n->key, strlen(n->key), NAME_CHARS))
        return fail(c, n, path,
                    "member names use letters, digits, '_', '-' and '.'");
    if (strcmp(n->key, "errors") == 0)
        return fail(c, n, path, "\"errors\" is reserved for failed members");
    if (dup_str(c, n, path, &mb->path) < 0)
        return -1;
    if (mb->path[0] != '/' || has_controls(mb->path, false) ||
        strchr(mb->path, '#'))
        return fail(c, n, path, "\"%s\": must be a path starting with /",
                    quote(c, n));
    if ((mb->match = malloc(sizeof(*mb->match))) == NULL)
        return fail(c, n, path, "out of memory");
    const char *qmark = strchr(mb->path, '?');
    size_t plen = qmark ? (size_t)(qmark - mb->path) : strlen(mb->path);
    const char *query = qmark ? qmark + 1 : "";
    switch (corral_route_match(cfg->table, mb->path, plen, query, strlen(query),
                               mb->match)) {
    case CORRAL_ROUTE_OK:
        break;
    case CORRAL_ROUTE_NOT_FOUND:
        return fail(c, n, path, "\"%s\": matches no route", quote(c, n));
    case CORRAL_ROUTE_BAD_PARAM:
        return fail(c, n, path, "\"%s\": {%s} fails its pattern in routes[%zu]",
                    quote(c, n), mb->match->bad_param, mb->match->index);
    case CORRAL_ROUTE_BAD_QUERY:
        return fail(c, n, path, "\"%s\": the value of %s is malformed",
                    quote(c, n), mb->match->bad_param);
    default:
        return fail(c, n, path, "\"%s\": too long for its route", quote(c, n));
    }
    const struct corral_config_route *r = mb->match->route;
    size_t ri = mb->match->index;
    if (r->upstream == NULL)
        return fail(c, n, path, "\"%s\": an aggregate cannot hold another",
                    quote(c, n));
    if (!r->json)
        return fail(c, n, path, "\"%s\": routes[%zu] has json: false",
                    quote(c, n), ri);
    for (const char *q = qmark; q; q = strchr(q + 1, '&')) {
        size_t len = strcspn(q + 1, "=&");
        size_t j = 0;
        while (j < r->n_query && (strlen(r->query[j].name) != len ||
                                  memcmp(r->query[j].name, q + 1, len) != 0))
            j++;
        if (j == r->n_query)
            return fail(c, n, path,
                        "\"%s\": routes[%zu] does not forward all of its "
                        "query parameters",
                        quote(c, n), ri);
    }
    mb->route = r;
    return 0;
}

static int
parse_aggregate(struct ctx *c, struct jnode *n, const char *path,
                const struct corral_config *cfg, struct corral_config_route *r)
{
    char p[PATH_LEN];
    if (check_object(c, n, path, NULL) < 0)
        return -1;
    if (n->n == 0)
        return fail(c, n, path, "needs at least one member");
    if ((r->members = calloc(n->n, sizeof(*r->members))) == NULL)
        return fail(c, n, path, "out of memory");
    for (size_t i = 0; i < n->n; i++) {
        r->n_members++;
        if (parse_member(c, n->kids[i], join_key(p, path, n->kids[i]->key), cfg,
                         &r->members[i]) < 0)
            return -1;
    }
    return 0;
}

/* ---- the top level --------------------------------------------------- */

static int
parse_admin(struct ctx *c, struct jnode *n, struct corral_config *cfg)
{
    static const char *const keys[] = {"listen", "token", "max_clients",
                                       "client_timeout", NULL};
    struct jnode *m;
    struct corral_config_admin *a;
    if (check_object(c, n, "admin", keys) < 0)
        return -1;
    if ((a = cfg->admin = calloc(1, sizeof(*a))) == NULL)
        return fail(c, n, "admin", "out of memory");
    a->max_clients = 64;
    a->client_timeout_ms = 5000;
    if ((m = member(n, "max_clients")) &&
        get_unsigned(c, m, "admin.max_clients", 1, 100000, &a->max_clients) < 0)
        return -1;
    if ((m = member(n, "client_timeout")) &&
        get_duration(c, m, "admin.client_timeout", 1, MAX_TIMEOUT_MS,
                     &a->client_timeout_ms) < 0)
        return -1;
    /* Loopback unless told otherwise: the admin purges and refreshes. */
    if ((m = member(n, "listen")) == NULL) {
        if ((a->listen.host = strdup("127.0.0.1")) == NULL)
            return fail(c, n, "admin", "out of memory");
        a->listen.port = 9090;
        m = n;
    } else if (get_addr(c, m, "admin.listen", false, &a->listen) < 0) {
        return -1;
    }
    if (strcmp(a->listen.host, cfg->listen.host) == 0 &&
        a->listen.port == cfg->listen.port)
        return fail(c, m, "admin.listen", "the same address as listen");
    if ((m = member(n, "token"))) {
        if (dup_str(c, m, "admin.token", &a->token) < 0)
            return -1;
        if (a->token[0] == '\0')
            return fail(c, m, "admin.token",
                        "empty (leave the key out for no token)");
    }
    return 0;
}

/* Also loads cert and key, so that --check and a reload see a file that is
 * missing, unreadable, not PEM, or a key that does not match. */
static int
parse_listen_tls(struct ctx *c, struct jnode *n, struct corral_config *cfg)
{
    static const char *const keys[] = {"listen", "cert", "key", NULL};
    struct jnode *m, *mc, *mk;
    struct corral_config_tls *t;
    char why[512];
    const char *which = "cert";
    if (check_object(c, n, "listen_tls", keys) < 0)
        return -1;
    if ((t = cfg->listen_tls = calloc(1, sizeof(*t))) == NULL)
        return fail(c, n, "listen_tls", "out of memory");
    if ((m = need(c, n, "listen_tls", "listen")) == NULL ||
        get_addr(c, m, "listen_tls.listen", false, &t->listen) < 0)
        return -1;
    if (strcmp(t->listen.host, cfg->listen.host) == 0 &&
        t->listen.port == cfg->listen.port)
        return fail(c, m, "listen_tls.listen", "the same address as listen");
    if (cfg->admin && strcmp(t->listen.host, cfg->admin->listen.host) == 0 &&
        t->listen.port == cfg->admin->listen.port)
        return fail(c, m, "listen_tls.listen",
                    "the same address as admin.listen");
    if ((mc = need(c, n, "listen_tls", "cert")) == NULL ||
        dup_str(c, mc, "listen_tls.cert", &t->cert) < 0 ||
        (mk = need(c, n, "listen_tls", "key")) == NULL ||
        dup_str(c, mk, "listen_tls.key", &t->key) < 0)
        return -1;
    if (corral_tls_check(t->cert, t->key, &which, why, sizeof why) < 0)
        return strcmp(which, "key") == 0
                   ? fail(c, mk, "listen_tls.key", "%s", why)
                   : fail(c, mc, "listen_tls.cert", "%s", why);
    return 0;
}

static int
parse_sentinel(struct ctx *c, struct jnode *n, struct corral_config_l2 *l2)
{
    static const char *const keys[] = {"master", "nodes", "user", "password",
                                       NULL};
    char p[PATH_LEN];
    struct jnode *m;
    struct corral_config_sentinel *s;
    if (check_object(c, n, "l2.sentinel", keys) < 0)
        return -1;
    if ((s = l2->sentinel = calloc(1, sizeof(*s))) == NULL)
        return fail(c, n, "l2.sentinel", "out of memory");
    if ((m = need(c, n, "l2.sentinel", "master")) == NULL ||
        dup_str(c, m, "l2.sentinel.master", &s->master) < 0)
        return -1;
    if (s->master[0] == '\0' || strpbrk(s->master, " \t\r\n") != NULL)
        return fail(c, m, "l2.sentinel.master", "\"%s\": a name without blanks",
                    quote(c, m));
    if ((m = need(c, n, "l2.sentinel", "nodes")) == NULL ||
        !expect(c, m, "l2.sentinel.nodes", J_ARRAY))
        return -1;
    if (m->n == 0)
        return fail(c, m, "l2.sentinel.nodes", "at least one host:port");
    if ((s->nodes = calloc(m->n, sizeof(*s->nodes))) == NULL)
        return fail(c, m, "l2.sentinel.nodes", "out of memory");
    for (size_t i = 0; i < m->n; i++) {
        snprintf(p, sizeof(p), "l2.sentinel.nodes[%zu]", i);
        if (get_addr(c, m->kids[i], p, true, &s->nodes[i]) < 0)
            return -1;
        s->n_nodes++;
    }
    if ((m = member(n, "user")) &&
        dup_str(c, m, "l2.sentinel.user", &s->user) < 0)
        return -1;
    if ((m = member(n, "password")) &&
        dup_str(c, m, "l2.sentinel.password", &s->password) < 0)
        return -1;
    if (s->user != NULL && s->password == NULL)
        return fail(c, n, "l2.sentinel.user", "a user needs a password");
    return 0;
}

static int
parse_cluster(struct ctx *c, struct jnode *n, struct corral_config_l2 *l2)
{
    char p[PATH_LEN];
    if (!expect(c, n, "l2.cluster", J_ARRAY))
        return -1;
    if (n->n == 0)
        return fail(c, n, "l2.cluster", "at least one host:port");
    if ((l2->cluster = calloc(n->n, sizeof(*l2->cluster))) == NULL)
        return fail(c, n, "l2.cluster", "out of memory");
    for (size_t i = 0; i < n->n; i++) {
        snprintf(p, sizeof(p), "l2.cluster[%zu]", i);
        if (get_addr(c, n->kids[i], p, true, &l2->cluster[i]) < 0)
            return -1;
        l2->n_cluster++;
    }
    return 0;
}

/* What a cluster asks of the other l2 keys: db 0 (a cluster has one),
 * and a prefix without braces (names are tagged with them). */
static int
check_cluster(struct ctx *c, struct jnode *n, struct corral_config_l2 *l2)
{
    struct jnode *m;
    if (l2->db != 0 && (m = member(n, "db")) != NULL)
        return fail(c, m, "l2.db", "%u: a cluster has one database, 0", l2->db);
    if (strpbrk(l2->prefix, "{}") != NULL && (m = member(n, "prefix")))
        return fail(c, m, "l2.prefix",
                    "\"%s\": no '{' or '}' on a cluster (corral tags "
                    "names with them, and a cluster hashes the first tag)",
                    quote(c, m));
    return 0;
}

static int
parse_l2(struct ctx *c, struct jnode *n, struct corral_config *cfg)
{
    static const char *const keys[] = {
        "redis", "sentinel", "cluster",         "db", "prefix", "timeout",
        "user",  "password", "max_value_bytes", NULL};
    static const char *const modes[] = {"redis", "sentinel", "cluster"};
    struct jnode *m, *mode[3];
    struct corral_config_l2 *l2;
    if (check_object(c, n, "l2", keys) < 0)
        return -1;
    if ((l2 = cfg->l2 = calloc(1, sizeof(*l2))) == NULL)
        return fail(c, n, "l2", "out of memory");
    /* One of them: a second is the error, at the later line. */
    int first = -1, second = -1;
    for (int i = 0; i < 3; i++) {
        if ((mode[i] = member(n, modes[i])) == NULL)
            continue;
        if (first < 0)
            first = i;
        else if (second < 0)
            second = i;
    }
    if (second >= 0) {
        char key[16];
        int at = mode[second]->line >= mode[first]->line ? second : first;
        snprintf(key, sizeof(key), "l2.%s", modes[at]);
        return fail(c, mode[at], key, "l2.%s and l2.%s are mutually exclusive",
                    modes[first], modes[second]);
    }
    if (mode[1] != NULL) {
        if (parse_sentinel(c, mode[1], l2) < 0)
            return -1;
    } else if (mode[2] != NULL) {
        if (parse_cluster(c, mode[2], l2) < 0)
            return -1;
    } else if ((m = need(c, n, "l2", "redis")) == NULL) {
        return -1;
    }
    m = mode[0];
    const char *r = m == NULL ? "" : get_str(c, m, "l2.redis", NULL);
    if (r == NULL)
        return -1;
    if (m == NULL) {
        /* the sentinels name the server, or the cluster its nodes */
    } else if (strncmp(r, "unix:", 5) == 0) {
        if (r[5] != '/')
            return fail(c, m, "l2.redis",
                        "\"%s\": unix: takes an absolute path", quote(c, m));
        if ((l2->unix_path = strdup(r + 5)) == NULL)
            return fail(c, m, "l2.redis", "out of memory");
    } else if (get_addr(c, m, "l2.redis", true, &l2->redis) < 0) {
        return -1;
    }
    if ((m = member(n, "user")) && dup_str(c, m, "l2.user", &l2->user) < 0)
        return -1;
    if ((m = member(n, "password")) &&
        dup_str(c, m, "l2.password", &l2->password) < 0)
        return -1;
    if (l2->user != NULL && l2->password == NULL)
        return fail(c, n, "l2.user", "a user needs a password");
    /* Redis's own limit on databases is its "databases" setting (16 by
     * default); past 65535 a value can only be a mistake. */
    if ((m = member(n, "db")) &&
        get_unsigned(c, m, "l2.db", 0, 65535, &l2->db) < 0)
        return -1;
    l2->max_value_bytes = 1u << 20;
    if ((m = member(n, "max_value_bytes")) &&
        get_size(c, m, "l2.max_value_bytes", 512u << 20, &l2->max_value_bytes) <
            0)
        return -1;
    if ((m = member(n, "prefix"))) {
        if (dup_str(c, m, "l2.prefix", &l2->prefix) < 0)
            return -1;
    } else if ((l2->prefix = strdup("corral:")) == NULL) {
        return fail(c, n, "l2.prefix", "out of memory");
    }
    l2->timeout_ms = 50;
    if ((m = member(n, "timeout")) &&
        get_duration(c, m, "l2.timeout", 1, MAX_TIMEOUT_MS, &l2->timeout_ms) <
            0)
        return -1;
    if (l2->n_cluster > 0 && check_cluster(c, n, l2) < 0)
        return -1;
    return 0;
}

static int
parse_limits(struct ctx *c, struct jnode *n, struct corral_config_limits *l)
{
    static const char *const keys[] = {
        "max_header_bytes",
        "client_timeout",
        "max_clients",
        "max_waiters",
        "max_body_bytes",
        "max_queued_bytes",
        "max_client_queued_bytes",
        "max_streams",
        "backoff_min",
        "backoff_max",
        NULL,
    };
    struct jnode *m;
    if (check_object(c, n, "limits", keys) < 0)
        return -1;
    if ((m = member(n, "max_header_bytes")) &&
        get_size(c, m, "limits.max_header_bytes", 1 << 20,
                 &l->max_header_bytes) < 0)
        return -1;
    if ((m = member(n, "client_timeout")) &&
        get_duration(c, m, "limits.client_timeout", 1, MAX_TIMEOUT_MS,
                     &l->client_timeout_ms) < 0)
        return -1;
    if ((m = member(n, "max_clients")) &&
        get_unsigned(c, m, "limits.max_clients", 1, 1000000, &l->max_clients) <
            0)
        return -1;
    if ((m = member(n, "max_waiters")) &&
        get_unsigned(c, m, "limits.max_waiters", 1, 1000000, &l->max_waiters) <
            0)
        return -1;
    if ((m = member(n, "max_body_bytes")) &&
        get_size(c, m, "limits.max_body_bytes", 1ull << 30,
                 &l->max_body_bytes) < 0)
        return -1;
    if ((m = member(n, "max_queued_bytes")) &&
        get_size(c, m, "limits.max_queued_bytes", 1ull << 40,
                 &l->max_queued_bytes) < 0)
        return -1;
    if ((m = member(n, "max_client_queued_bytes")) &&
        get_size(c, m, "limits.max_client_queued_bytes", 1ull << 40,
                 &l->max_client_queued_bytes) < 0)
        return -1;
    if ((m = member(n, "max_streams")) &&
        get_unsigned(c, m, "limits.max_streams", 1, 65536, &l->max_streams) < 0)
        return -1;
    if ((m = member(n, "backoff_min")) &&
        get_duration(c, m, "limits.backoff_min", 1, MAX_TIMEOUT_MS,
                     &l->backoff_min_ms) < 0)
        return -1;
    if ((m = member(n, "backoff_max")) &&
        get_duration(c, m, "limits.backoff_max", 1, MAX_TIMEOUT_MS,
                     &l->backoff_max_ms) < 0)
        return -1;
    if (l->backoff_max_ms < l->backoff_min_ms)
        return fail(c, m ? m : n, "limits.backoff_max",
                    "must be at least limits.backoff_min");
    return 0;
}

static int
parse_upstreams(struct ctx *c, struct jnode *n, struct corral_config *cfg)
{
    char p[PATH_LEN];
    if (check_object(c, n, "upstreams", NULL) < 0)
        return -1;
    if (n->n == 0)
        return fail(c, n, "upstreams", "needs at least one upstream");
    if ((cfg->upstreams = calloc(n->n, sizeof(*cfg->upstreams))) == NULL)
        return fail(c, n, "upstreams", "out of memory");
    for (size_t i = 0; i < n->n; i++) {
        cfg->n_upstreams++;
        if (parse_upstream(c, n->kids[i],
                           join_key(p, "upstreams", n->kids[i]->key),
                           &cfg->upstreams[i]) < 0)
            return -1;
    }
    return 0;
}

static int
parse_routes(struct ctx *c, struct jnode *n, struct corral_config *cfg)
{
    char p[PATH_LEN], pa[PATH_LEN];
    struct jnode *agg;
    if (!expect(c, n, "routes", J_ARRAY))
        return -1;
    if (n->n == 0)
        return fail(c, n, "routes", "needs at least one route");
    if ((cfg->routes = calloc(n->n, sizeof(*cfg->routes))) == NULL)
        return fail(c, n, "routes", "out of memory");
    for (size_t i = 0; i < n->n; i++) {
        cfg->n_routes++;
        if (parse_route(c, n->kids[i], join_index(p, "routes", i), cfg,
                        &cfg->routes[i]) < 0)
            return -1;
    }
    char why[256];
    if ((cfg->table = corral_route_table_new(cfg, why, sizeof(why))) == NULL)
        return fail(c, n, "routes", "%s", why);
    for (size_t i = 0; i < n->n; i++)
        if ((agg = member(n->kids[i], "aggregate")) &&
            parse_aggregate(
                c, agg, join_key(pa, join_index(p, "routes", i), "aggregate"),
                cfg, &cfg->routes[i]) < 0)
            return -1;
    return 0;
}

static int
parse_config(struct ctx *c, struct jnode *root, struct corral_config *cfg)
{
    static const char *const keys[] = {
        "listen",    "admin",  "workers", "access_log",    "l1",         "l2",
        "upstreams", "routes", "limits",  "drain_timeout", "listen_tls", NULL,
    };
    static const char *const l1_keys[] = {"max_bytes", NULL};
    struct jnode *m;

    cfg->workers = 1;
    cfg->drain_timeout_ms = 30000;
    cfg->l1_max_bytes = 256ull << 20;
    cfg->limits = (struct corral_config_limits){
        .max_header_bytes = 8 << 10,
        .client_timeout_ms = 30000,
        .max_clients = 10000,
        .max_waiters = 10000,
        .backoff_min_ms = 1000,
        .backoff_max_ms = 60000,
        .max_body_bytes = 8 << 20,
        .max_queued_bytes = 64 << 20,
        .max_client_queued_bytes = 1 << 20,
        .max_streams = 128,
    };
    if (root->type != J_OBJECT)
        return fail(c, root, "", "the top level must be an object");
    if (check_object(c, root, "", keys) < 0)
        return -1;
    if ((m = need(c, root, "", "listen")) == NULL ||
        get_addr(c, m, "listen", false, &cfg->listen) < 0)
        return -1;
    if ((m = member(root, "admin")) && parse_admin(c, m, cfg) < 0)
        return -1;
    if ((m = member(root, "listen_tls")) && parse_listen_tls(c, m, cfg) < 0)
        return -1;
    if ((m = member(root, "workers"))) {
        /* 0 or "auto": one per core, decided at start. */
        if (m->type == J_STRING) {
            if (strcmp(m->raw, "auto") != 0)
                return fail(c, m, "workers",
                            "expected an integer or \"auto\", not a string");
            cfg->workers = 0;
        } else if (get_unsigned(c, m, "workers", 0, 1024, &cfg->workers) < 0) {
            return -1;
        }
    }
    if ((m = member(root, "drain_timeout")) &&
        get_duration(c, m, "drain_timeout", 1, MAX_TIMEOUT_MS,
                     &cfg->drain_timeout_ms) < 0)
        return -1;
    if ((m = member(root, "access_log"))) {
        if (dup_str(c, m, "access_log", &cfg->access_log) < 0)
            return -1;
        if (cfg->access_log[0] == '\0')
            return fail(c, m, "access_log",
                        "empty (a path, \"-\" for stdout, or leave it out)");
    }
    if ((m = member(root, "l1"))) {
        struct jnode *mb;
        if (check_object(c, m, "l1", l1_keys) < 0)
            return -1;
        if ((mb = member(m, "max_bytes")) &&
            get_size(c, mb, "l1.max_bytes", UINT64_MAX, &cfg->l1_max_bytes) < 0)
            return -1;
    }
    if ((m = member(root, "l2")) && parse_l2(c, m, cfg) < 0)
        return -1;
    if ((m = member(root, "limits")) && parse_limits(c, m, &cfg->limits) < 0)
        return -1;
    if ((m = need(c, root, "", "upstreams")) == NULL ||
        parse_upstreams(c, m, cfg) < 0)
        return -1;
    if ((m = need(c, root, "", "routes")) == NULL ||
        parse_routes(c, m, cfg) < 0)
        return -1;
    return 0;
}

/* ---- public ---------------------------------------------------------- */

bool
corral_config_admin_moved(const struct corral_config *a,
                          const struct corral_config *b)
{
    if (a->admin == NULL || b->admin == NULL)
        return a->admin != b->admin;
    return strcmp(a->admin->listen.host, b->admin->listen.host) != 0 ||
           a->admin->listen.port != b->admin->listen.port;
}

struct corral_config *
corral_config_parse(const char *text, size_t len, const char *name, char *err,
                    size_t errlen)
{
    char scratch[1];
    struct ctx c = {.name = name ? name : "config",
                    .err = errlen ? err : scratch,
                    .errlen = errlen ? errlen : sizeof(scratch)};
    c.err[0] = '\0';
    struct jnode *root = corral_jtree_parse(text, len, c.name, c.err, c.errlen);
    if (root == NULL)
        return NULL;
    struct corral_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        fail(&c, NULL, "", "out of memory");
    else if (parse_config(&c, root, cfg) < 0) {
        corral_config_free(cfg);
        cfg = NULL;
    }
    corral_jtree_free(root);
    return cfg;
}

struct corral_config *
corral_config_load(const char *path, char *err, size_t errlen)
{
    char *text = NULL, *bigger, scratch[1];
    size_t len = 0, cap = 0, got;
    struct corral_config *cfg = NULL;
    if (errlen == 0) {
        err = scratch;
        errlen = sizeof(scratch);
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    do {
        if (len == cap) {
            cap = cap ? 2 * cap : 16384;
            if (cap > MAX_FILE_BYTES) {
                snprintf(err, errlen, "%s: larger than %u bytes", path,
                         MAX_FILE_BYTES);
                goto out;
            }
            if ((bigger = realloc(text, cap)) == NULL) {
                snprintf(err, errlen, "%s: out of memory", path);
                goto out;
            }
            text = bigger;
        }
        len += got = fread(text + len, 1, cap - len, f);
    } while (got > 0);
    if (ferror(f))
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
    else
        cfg = corral_config_parse(text, len, path, err, errlen);
out:
    free(text);
    fclose(f);
    return cfg;
}

static void
free_upstream(struct corral_config_upstream *up)
{
    free(up->name);
    free(up->host);
    free(up->prefix);
    for (size_t i = 0; i < up->n_headers; i++) {
        free(up->headers[i].name);
        free(up->headers[i].value);
    }
    free(up->headers);
    free(up->ca_file);
}

static void
free_route(struct corral_config_route *r)
{
    free(r->path);
    free(r->fetch);
    for (size_t i = 0; i < r->n_members; i++) {
        free(r->members[i].name);
        free(r->members[i].path);
        free(r->members[i].match);
    }
    free(r->members);
    free(r->key);
    for (size_t i = 0; i < r->n_params; i++) {
        free(r->params[i].name);
        free(r->params[i].pattern);
        corral_pattern_free(r->params[i].re);
    }
    free(r->params);
    for (size_t i = 0; i < r->n_query; i++) {
        free(r->query[i].name);
        free(r->query[i].pattern);
        corral_pattern_free(r->query[i].re);
    }
    free(r->query);
}

void
corral_config_free(struct corral_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->listen.host);
    if (cfg->admin) {
        free(cfg->admin->listen.host);
        free(cfg->admin->token);
        free(cfg->admin);
    }
    if (cfg->listen_tls) {
        free(cfg->listen_tls->listen.host);
        free(cfg->listen_tls->cert);
        free(cfg->listen_tls->key);
        free(cfg->listen_tls);
    }
    free(cfg->access_log);
    if (cfg->l2) {
        free(cfg->l2->redis.host);
        free(cfg->l2->unix_path);
        free(cfg->l2->user);
        if (cfg->l2->password)
            explicit_bzero(cfg->l2->password, strlen(cfg->l2->password));
        free(cfg->l2->password);
        free(cfg->l2->prefix);
        for (size_t i = 0; i < cfg->l2->n_cluster; i++)
            free(cfg->l2->cluster[i].host);
        free(cfg->l2->cluster);
        struct corral_config_sentinel *s = cfg->l2->sentinel;
        if (s != NULL) {
            free(s->master);
            for (size_t i = 0; i < s->n_nodes; i++)
                free(s->nodes[i].host);
            free(s->nodes);
            free(s->user);
            if (s->password)
                explicit_bzero(s->password, strlen(s->password));
            free(s->password);
            free(s);
        }
        free(cfg->l2);
    }
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        free_upstream(&cfg->upstreams[i]);
    free(cfg->upstreams);
    corral_route_table_free(cfg->table);
    for (size_t i = 0; i < cfg->n_routes; i++)
        free_route(&cfg->routes[i]);
    free(cfg->routes);
    free(cfg);
}
