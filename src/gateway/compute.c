/* compute.c — a route's compute: the upstream's breaker and budget, fetch,
 * validate, render the head, and store for as long as the route and the
 * upstream's cache directives allow, or pass the answer to the fill's
 * clients only. */
#include "compute.h"
#include "log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <http_parser.h>

#include "breaker.h"
#include "budget.h"
#include "config.h"
#include "encoding.h"
#include "fetch.h"
#include "json.h"
#include "metrics.h"
#include "route.h"
#include "timeutil.h"
#include "xalloc.h"

/* A fill in flight: its pass through the upstream's breaker and its wait
 * for the budget, then the fetch that computes it. */
struct job {
    struct corral_fill *fill;
    struct corral_breaker_wait *bwait; /* the fleet is asked for a probe */
    uint64_t probe; /* this call is the breaker's probe: its ticket */
    struct corral_budget_wait *wait;
    struct corral_fetch *fetch;
    const struct corral_route_compute *rf;
};

/* What yajl_parse and yajl_complete_parse would say, without yajl's
 * allocations and callbacks: this runs on every L2 read (json.h). */
static bool
valid_json(const char *body, size_t len)
{
    return corral_json_valid(body, len);
}

/* Any byte a header value must not carry (RFC 9110 5.5): CR, LF, NUL and
 * the other controls but tab, such as VT and FF. */
static bool
has_controls(const char *s)
{
    for (; *s; s++)
        if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
            return true;
    return false;
}

/* ---- the heads a value keeps ----
 *
 * The aux area holds one rendered head per coding the value can be served
 * in, after a table of where each is: for each coding, its offset and
 * length, two bytes each, little-endian (length 0: no head). Identity
 * always has one, whether or not its bytes are kept; every other coding has
 * one when its form is kept. */

#define HEAD_TABLE (4 * CORRAL_CODINGS)

static void
put16(char *p, size_t v)
{
    p[0] = (char)(v & 0xff);
    p[1] = (char)(v >> 8);
}

static size_t
get16(const char *p)
{
    return (size_t)(unsigned char)p[0] | (size_t)(unsigned char)p[1] << 8;
}

/* A head being rendered into a caller's buffer, by appends: no format
 * string to interpret, as every value read from L2 has its heads rendered
 * again to be compared. over: it did not fit. */
struct out {
    char *p;
    size_t len, cap;
    bool over;
};

static void
out_mem(struct out *o, const char *s, size_t n)
{
    if (o->over || n > o->cap - o->len) {
        o->over = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void
out_str(struct out *o, const char *s)
{
    out_mem(o, s, strlen(s));
}

static void
out_uint(struct out *o, uint64_t v)
{
    char b[20];
    size_t i = sizeof(b);
    do
        b[--i] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    out_mem(o, b + i, sizeof(b) - i);
}

/* The strong ETag of a body's representation in coding c, from the
 * body's own ETag: identity's is that, the others add the coding's name
 * inside the quotes ("...-gzip"). */
static void
coding_etag(const char *etag, enum corral_coding c,
            char out[CORRAL_COMPUTE_ETAG_MAX])
{
    memcpy(out, etag, CORRAL_ETAG_LEN + 1);
    if (c != CORRAL_CODING_IDENTITY) {
        const char *name = corral_coding_name(c);
        size_t n = strlen(name);
        out[CORRAL_ETAG_LEN - 1] = '-';
        memcpy(out + CORRAL_ETAG_LEN, name, n);
        memcpy(out + CORRAL_ETAG_LEN + n, "\"", 2);
    }
}

void
corral_compute_etag(const struct corral_value *v, enum corral_coding c,
                    char out[CORRAL_COMPUTE_ETAG_MAX])
{
    coding_etag(corral_value_etag(v), c, out);
}

/* Renders the aux area of a body with ETag etag, whose form in coding c
 * is len[c] bytes (0 past identity: not kept), for status, type and extra
 * into out (cap bytes): the table, then each head. Returns its length, or
 * -1 when it does not fit. */
static int
render_aux(const char *etag, const size_t len[CORRAL_CODINGS], int status,
           const char *ctype, const char *extra, char *out, size_t cap)
{
    if (cap < HEAD_TABLE)
        return -1;
    memset(out, 0, HEAD_TABLE);
    size_t off = HEAD_TABLE;
    for (int c = 0; c < CORRAL_CODINGS; c++) {
        if (c != CORRAL_CODING_IDENTITY && len[c] == 0)
            continue;
        char tag[CORRAL_COMPUTE_ETAG_MAX];
        coding_etag(etag, (enum corral_coding)c, tag);
        struct out o = {.p = out + off, .cap = cap - off};
        out_str(&o, "HTTP/1.1 ");
        out_uint(&o, (uint64_t)status);
        out_str(&o, " ");
        out_str(&o, http_status_str((enum http_status)status));
        out_str(&o, "\r\nContent-Type: ");
        out_str(&o, ctype);
        out_str(&o, "\r\nContent-Length: ");
        out_uint(&o, len[c]);
        out_str(&o, "\r\nETag: ");
        out_str(&o, tag);
        out_str(&o, "\r\n");
        if (c != CORRAL_CODING_IDENTITY) {
            out_str(&o, "Content-Encoding: ");
            out_str(&o, corral_coding_name((enum corral_coding)c));
            out_str(&o, "\r\n");
        }
        out_str(&o, "Vary: Accept-Encoding\r\n");
        out_str(&o, extra);
        /* Room for a NUL left, as snprintf() would. */
        if (status < 0 || o.over || o.len >= cap - off ||
            off + o.len > UINT16_MAX)
            return -1;
        put16(out + 4 * c, off);
        put16(out + 4 * c + 2, o.len);
        off += o.len;
    }
    return (int)off;
}

/* Room for render_aux(): three heads of the fixed lines, the type and
 * extra. */
static size_t
aux_room(const char *ctype, const char *extra)
{
    return HEAD_TABLE + CORRAL_CODINGS * (240 + strlen(ctype) + strlen(extra));
}

const char *
corral_compute_head(const struct corral_value *v, enum corral_coding c,
                    size_t *len)
{
    const char *aux = corral_value_aux(v);
    *len = 0;
    if (corral_value_aux_len(v) < HEAD_TABLE || (unsigned)c >= CORRAL_CODINGS)
        return NULL;
    size_t off = get16(aux + 4 * c), n = get16(aux + 4 * c + 2);
    if (n == 0 || off + n > corral_value_aux_len(v))
        return NULL;
    *len = n;
    return aux + off;
}

struct corral_value *
corral_compute_with_identity(const struct corral_value *v)
{
    char *own;
    const char *id = corral_encoding_identity(v, &own);
    if (id == NULL)
        return NULL;
    struct corral_value_form forms[CORRAL_CODINGS];
    for (int c = 0; c < CORRAL_CODINGS; c++) {
        forms[c].bytes = corral_value_form(v, (unsigned)c, &forms[c].len);
    }
    forms[CORRAL_CODING_IDENTITY] =
        (struct corral_value_form){id, corral_value_len(v)};
    struct corral_value *w = corral_value_new_forms(
        corral_value_key(v), corral_value_keylen(v), forms, corral_value_len(v),
        corral_value_etag(v), corral_value_content_type(v),
        corral_value_aux_len(v));
    free(own);
    if (w == NULL)
        return NULL;
    size_t cap;
    memcpy(corral_value_aux_mut(w, &cap), corral_value_aux(v),
           corral_value_aux_len(v));
    corral_value_set_aux_len(w, corral_value_aux_len(v));
    corral_value_set_flags(w, corral_value_flags(v));
    return w;
}

unsigned
corral_compute_codings(const struct corral_value *v)
{
    const char *aux = corral_value_aux(v);
    unsigned mask = 0;
    if (corral_value_aux_len(v) < HEAD_TABLE)
        return 0;
    for (int c = 0; c < CORRAL_CODINGS; c++)
        if (get16(aux + 4 * c + 2) != 0)
            mask |= 1u << c;
    return mask;
}

struct corral_value *
corral_compute_render(const char *key, size_t keylen, const char *body,
                      size_t len, const char *ctype, int status,
                      const char *extra)
{
    if (ctype == NULL || *ctype == '\0')
        ctype = "application/json";
    if (extra == NULL)
        extra = "";
    char etag[CORRAL_ETAG_LEN + 1];
    corral_value_etag_of(body, len, etag);
    struct corral_encoded enc;
    corral_encoding_make(body, len, &enc);
    size_t lens[CORRAL_CODINGS] = {len};
    for (int c = 1; c < CORRAL_CODINGS; c++)
        lens[c] = enc.form[c].bytes != NULL ? enc.form[c].len : 0;
    /* Rendered first, so the value's aux area is exactly as long. */
    size_t room = aux_room(ctype, extra);
    char *aux = xmalloc(room);
    int n = render_aux(etag, lens, status, ctype, extra, aux, room);
    struct corral_value *v =
        n < 0 ? NULL
              : corral_value_new_forms(key, keylen, enc.form, len, etag, ctype,
                                       (size_t)n);
    corral_encoding_finish(&enc);
    if (v != NULL) {
        size_t cap;
        memcpy(corral_value_aux_mut(v, &cap), aux, (size_t)n);
        corral_value_set_aux_len(v, (size_t)n);
        corral_value_set_flags(v,
                               status / 100 == 2 ? 0 : CORRAL_COMPUTE_NEGATIVE);
    }
    free(aux);
    return v;
}

int
corral_compute_status(const struct corral_value *v)
{
    size_t n;
    const char *head = corral_compute_head(v, CORRAL_CODING_IDENTITY, &n);
    if (head == NULL || n < 12)
        return 0;
    return (head[9] - '0') * 100 + (head[10] - '0') * 10 + (head[11] - '0');
}

/* The status a route may keep a value of: 200 and 203, and the 4xx its
 * cache_errors name. Returns the longest lifetime such a value may have
 * (ms), or 0 when the route does not keep that status. */
static uint64_t
lifetime_for(const struct corral_config_route *route, int status)
{
    if (status == 200 || status == 203)
        return corral_strategy_ttl_ms(&route->strategy);
    for (size_t i = 0; i < route->n_cache_errors; i++)
        if (route->cache_errors[i].status == status)
            return route->cache_errors[i].ttl_ms;
    return 0;
}

/* Is extra (after the ETag line) made of the lines corral may add: none,
 * or, on an aggregate, one Corral-Stale-Members line? */
static bool
extra_fit(const struct corral_config_route *route, const char *p, size_t n)
{
    static const char name[] = "Corral-Stale-Members: ";
    if (n == 0)
        return true;
    if (route->upstream != NULL || n < sizeof(name) + 2 ||
        memcmp(p, name, sizeof(name) - 1) != 0 || p[n - 2] != '\r' ||
        p[n - 1] != '\n')
        return false;
    for (size_t i = sizeof(name) - 1; i < n - 2; i++)
        if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
            return false;
    return true;
}

/* Does v's form in coding c decode to exactly id (its identity bytes)?
 * buf: room for them and one byte more. */
static bool
form_agrees(const struct corral_value *v, enum corral_coding c, const char *id,
            char *buf)
{
    size_t n, len = corral_value_len(v);
    const char *f = corral_value_form(v, (unsigned)c, &n);
    return f == NULL || f == id ||
           (corral_encoding_decode(c, f, n, buf, len) == 0 &&
            memcmp(buf, id, len) == 0);
}

/* Does every form v keeps past identity decode to exactly id? */
static bool
forms_agree(const struct corral_value *v, const char *id)
{
    char *buf = xmalloc(corral_value_len(v) + 1);
    bool ok = true;
    for (int c = 1; c < CORRAL_CODINGS && ok; c++)
        ok = form_agrees(v, (enum corral_coding)c, id, buf);
    free(buf);
    return ok;
}

/* The marks (corral_value_mark()) on a value whose forms
 * corral_compute_fit() left unchecked: form c checked and good, or bad. */
#define MARK_GOOD(c) (1u << (c) >> 1)
#define MARK_BAD(c) (1u << ((c) + 1))
_Static_assert(CORRAL_CODINGS <= 3, "two marks per coding past identity");

bool
corral_compute_form_ok(struct corral_value *v, enum corral_coding c)
{
    if (c == CORRAL_CODING_IDENTITY ||
        !(corral_value_flags(v) & CORRAL_COMPUTE_UNCHECKED_FORMS))
        return true;
    unsigned m = corral_value_marks(v);
    if (m & (MARK_GOOD(c) | MARK_BAD(c)))
        return m & MARK_GOOD(c);
    char *buf = xmalloc(corral_value_len(v) + 1);
    bool ok = form_agrees(v, c, corral_value_body(v), buf);
    free(buf);
    corral_value_mark(v, ok ? MARK_GOOD(c) : MARK_BAD(c));
    return ok;
}

/* Are v's bodies fit for route with status: its identity bytes (kept, or
 * decoded) of its ETag, JSON on a JSON route's 2xx, and every other form
 * the same bytes encoded? With its identity bytes kept, the other forms
 * are checked only when a client asks for them (corral_compute_form_ok()):
 * *unchecked says so. */
static bool
bodies_fit(const struct corral_config_route *route,
           const struct corral_value *v, int status, bool *unchecked)
{
    char *own;
    const char *id = corral_encoding_identity(v, &own);
    if (id == NULL)
        return false;
    bool ok = true;
    if (own != NULL) {
        /* Not kept: the ETag was read, not computed from these bytes. */
        char etag[CORRAL_ETAG_LEN + 1];
        corral_value_etag_of(id, corral_value_len(v), etag);
        ok = strcmp(etag, corral_value_etag(v)) == 0;
    }
    /* A JSON route's body is JSON, whoever wrote it. */
    if (ok && route->json && (status == 200 || status == 203))
        ok = valid_json(id, corral_value_len(v));
    *unchecked = own == NULL && corral_compute_codings(v) != 1u;
    if (ok && own != NULL)
        ok = forms_agree(v, id);
    free(own);
    return ok;
}

/* The status of a stored head, "HTTP/1.1 NNN ...", or -1. */
static int
head_status(const char *head, size_t hlen)
{
    if (hlen < 16 || memcmp(head, "HTTP/1.1 ", 9) != 0 || head[12] != ' ')
        return -1;
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (head[i] < '0' || head[i] > '9')
            return -1;
        status = status * 10 + (head[i] - '0');
    }
    return status;
}

/* A value an older corral stored: one head, at the aux area's start,
 * without Vary, for its body only (L2 versions 1 and 2). When the head is
 * exactly what that corral rendered, it is rendered again as this one
 * would, in place (l2codec gave the area room); the checks that follow
 * are the same for both. False when it cannot be brought up to date. */
static bool
upgrade_legacy(const struct corral_config_route *route, struct corral_value *v)
{
    const char *head = corral_value_aux(v);
    size_t hlen = corral_value_aux_len(v);
    int status = head_status(head, hlen);
    if (status < 0 || corral_value_forms(v) != 1)
        return false;
    char want[1400];
    int n = snprintf(want, sizeof(want),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\nETag: %s\r\n",
                     status, http_status_str((enum http_status)status),
                     corral_value_content_type(v), corral_value_len(v),
                     corral_value_etag(v));
    if (n < 0 || (size_t)n >= sizeof(want) || (size_t)n > hlen ||
        memcmp(want, head, (size_t)n) != 0 ||
        !extra_fit(route, head + n, hlen - (size_t)n) ||
        hlen - (size_t)n >= 600)
        return false;
    char extra[600];
    memcpy(extra, head + n, hlen - (size_t)n);
    extra[hlen - (size_t)n] = '\0';
    size_t lens[CORRAL_CODINGS] = {corral_value_len(v)};
    size_t cap;
    char *aux = corral_value_aux_mut(v, &cap);
    if (aux == NULL) /* stored already: not a value read from L2 */
        return false;
    char *tmp = xmalloc(cap);
    n = render_aux(corral_value_etag(v), lens, status,
                   corral_value_content_type(v), extra, tmp, cap);
    if (n >= 0) {
        memcpy(aux, tmp, (size_t)n);
        corral_value_set_aux_len(v, (size_t)n);
    }
    free(tmp);
    return n >= 0;
}

bool
corral_compute_fit(const struct corral_config_route *route,
                   const struct corral_value *v, uint64_t now_ms)
{
    /* The table starts with identity's offset, never "HT". */
    if (corral_value_aux_len(v) >= 9 &&
        memcmp(corral_value_aux(v), "HTTP/1.1 ", 9) == 0 &&
        !upgrade_legacy(route, (struct corral_value *)v))
        return false;
    size_t hlen;
    const char *head = corral_compute_head(v, CORRAL_CODING_IDENTITY, &hlen);
    int status = head == NULL ? -1 : head_status(head, hlen);
    if (status < 0)
        return false;
    /* Lifetimes no longer than the route gives (a value planted with an
     * expiry in 2^64 ms is not served for ever), made no later than a
     * minute from now by this clock. */
    uint64_t stored = corral_value_stored_at(v);
    uint64_t expires = corral_value_expires_at(v);
    uint64_t max = lifetime_for(route, status);
    if (max == 0 || expires < stored || expires - stored > max ||
        stored > now_ms + 60000 ||
        corral_value_swr_ms(v) > route->strategy.swr_ms ||
        corral_value_sie_ms(v) > route->strategy.sie_ms)
        return false;
    const char *ctype = corral_value_content_type(v);
    if (has_controls(ctype))
        return false;
    /* Exactly the heads corral renders: each form's status line, type,
     * length, ETag, coding and Vary, then only what corral adds. The
     * extra lines are what follows the fixed ones in identity's head. */
    size_t lens[CORRAL_CODINGS] = {corral_value_len(v)};
    for (int c = 1; c < CORRAL_CODINGS; c++)
        corral_value_form(v, (unsigned)c, &lens[c]);
    char fixed[1400];
    size_t none[CORRAL_CODINGS] = {lens[0]};
    int n = render_aux(corral_value_etag(v), none, status, ctype, "", fixed,
                       sizeof(fixed));
    if (n < 0 || hlen < (size_t)n - HEAD_TABLE ||
        memcmp(head, fixed + HEAD_TABLE, (size_t)n - HEAD_TABLE) != 0)
        return false;
    size_t elen = hlen - ((size_t)n - HEAD_TABLE);
    if (!extra_fit(route, head + hlen - elen, elen))
        return false;
    char extra[600];
    if (elen >= sizeof(extra))
        return false;
    memcpy(extra, head + hlen - elen, elen);
    extra[elen] = '\0';
    size_t room = aux_room(ctype, extra);
    char *want = xmalloc(room);
    n = render_aux(corral_value_etag(v), lens, status, ctype, extra, want,
                   room);
    bool same = n >= 0 && (size_t)n == corral_value_aux_len(v) &&
                memcmp(want, corral_value_aux(v), (size_t)n) == 0;
    free(want);
    bool unchecked;
    if (!same || !bodies_fit(route, v, status, &unchecked))
        return false;
    /* A value from the tier is not stored yet (L1 takes it after this):
     * writable, though the fit callback sees it const. */
    uint8_t flags = status / 100 == 2 ? 0 : CORRAL_COMPUTE_NEGATIVE;
    if (elen > 0)
        flags |= CORRAL_COMPUTE_STALE_MEMBERS; /* extra_fit() allows no other */
    if (unchecked)
        flags |= CORRAL_COMPUTE_UNCHECKED_FORMS;
    corral_value_set_flags((struct corral_value *)v, flags);
    return true;
}

static bool
route_fit(const struct corral_value *v, uint64_t now_ms, void *arg)
{
    const struct corral_route_compute *rf = arg;
    return corral_compute_fit(rf->route, v, now_ms);
}

/* Renders the head every hit reuses: status line and fixed headers. */
static struct corral_value *
make_value(const char *key, size_t keylen,
           const struct corral_fetch_result *res, int status)
{
    return corral_compute_render(key, keylen, res->body, res->len,
                                 res->content_type, status, NULL);
}

/* The one place an upstream's cache directives decide (RFC 9111 5.2.2,
 * as the route's upstream_cache_control says): how long res may be kept,
 * ms (UINT64_MAX: as long as the route says), or 0 when it must not be
 * kept and goes to this fill's clients only. no-cache counts as no-store,
 * as nginx and Varnish have it: corral cannot revalidate, so a copy could
 * never be used. Set-Cookie decides nothing: corral never sends a client's
 * cookies upstream, and never sends the upstream's cookies to clients. */
static uint64_t
keep_for(const struct corral_config_route *route,
         const struct corral_fetch_result *res)
{
    const struct corral_fetch_cache_control *cc = &res->cache_control;
    if (route->cache_control == CORRAL_CONFIG_CC_IGNORE)
        return UINT64_MAX;
    if (cc->flags & (CORRAL_FETCH_CC_NO_STORE | CORRAL_FETCH_CC_PRIVATE |
                     CORRAL_FETCH_CC_NO_CACHE))
        return 0;
    /* By default the route's lifetime stands: a shorter max-age would
     * multiply the calls to a rate-limited API. */
    if (route->cache_control != CORRAL_CONFIG_CC_HONOUR)
        return UINT64_MAX;
    /* A shared cache takes s-maxage first; Age is what the answer already
     * spent in caches upstream. */
    int64_t life = cc->s_maxage_s >= 0 ? cc->s_maxage_s : cc->max_age_s;
    if (life < 0)
        return UINT64_MAX;
    if ((uint64_t)life <= res->age_s)
        return 0;
    return ((uint64_t)life - res->age_s) * 1000;
}

static struct job *
job_new(struct corral_fill *fill, const struct corral_route_compute *rf)
{
    struct job *job = xcalloc(1, sizeof(*job));
    job->fill = fill;
    job->rf = rf;
    return job;
}

static void
job_free(struct job *job)
{
    /* A probe still held here was never made, or its end not seen. */
    corral_breaker_cancel(job->bwait);
    corral_breaker_report(job->rf->breaker, job->probe, CORRAL_BREAKER_UNTRIED,
                          corral_now_ms());
    free(job);
}

/* Every fill of the route, from its start to its end, keeps rf's
 * generation alive (a reload frees it once none is left). */
static void
route_hold(void *arg, int delta)
{
    const struct corral_route_compute *rf = arg;
    if (rf->jobs)
        *rf->jobs += (unsigned)delta;
}

/* ---- the upstream's breaker ---- */

/* How a call went, for the breaker: a 5xx, a timeout or no (or a broken)
 * answer fails; a 429 or 503 with Retry-After is the pause's business;
 * any other answer, a 4xx too, shows the upstream up. */
static enum corral_breaker_outcome
breaker_outcome(const struct corral_fetch_result *res)
{
    if (res->error == -ECANCELED)
        return CORRAL_BREAKER_UNTRIED;
    if (res->error == -EFBIG)
        return CORRAL_BREAKER_SUCCESS;
    if (res->error)
        return CORRAL_BREAKER_FAILURE;
    if ((res->status == 429 || res->status == 503) && res->retry_after_s > 0)
        return CORRAL_BREAKER_NEUTRAL;
    return res->status >= 500 ? CORRAL_BREAKER_FAILURE : CORRAL_BREAKER_SUCCESS;
}

/* The upstream's breaker is open: the fill fails at once (stale if the
 * key keeps a copy), saying when to ask again. */
static void
breaker_refused(struct job *job, uint64_t retry_ms)
{
    char msg[300];
    snprintf(msg, sizeof(msg), "circuit breaker open: upstream %s is failing",
             corral_breaker_name(job->rf->breaker));
    struct corral_fill *fill = job->fill;
    job_free(job);
    corral_fill_fail_retry(fill, -EBUSY, msg, retry_ms);
}

static void job_admit(struct job *job);

static void
job_breaker(int error, uint64_t ms, uint64_t probe, void *arg)
{
    struct job *job = arg;
    job->bwait = NULL;
    job->probe = probe;
    if (error)
        breaker_refused(job, ms);
    else
        job_admit(job);
}

/* ---- the call ---- */

/* An answer the upstream gave (no transport error, no pause): stored as
 * the route's value, as a kept 4xx, or refused. */
static void
take_answer(struct corral_fill *fill, const struct corral_config_route *route,
            const struct corral_fetch_result *res)
{
    char msg[300];
    /* Negative caching: a 4xx the route keeps, as it came (status, type,
     * body; no JSON check), for its own short time. */
    for (size_t i = 0; i < route->n_cache_errors; i++) {
        if (route->cache_errors[i].status != res->status)
            continue;
        size_t klen;
        const char *k = corral_fill_key(fill, &klen);
        struct corral_value *nv =
            res->content_type && has_controls(res->content_type)
                ? NULL
                : make_value(k, klen, res, res->status);
        if (nv == NULL) {
            snprintf(msg, sizeof(msg), "upstream answered %d", res->status);
            corral_fill_fail(fill, -EBADMSG, msg);
            return;
        }
        uint64_t keep = keep_for(route, res);
        if (keep == 0)
            corral_fill_done_nostore(fill, nv);
        else
            corral_fill_done_ttl(fill, nv,
                                 keep < route->cache_errors[i].ttl_ms
                                     ? keep
                                     : route->cache_errors[i].ttl_ms);
        return;
    }
    /* Only a whole representation is stored: not a 206 (a part), 204 (no
     * content) or 201/202 (about something else). */
    if (res->status != 200 && res->status != 203) {
        snprintf(msg, sizeof(msg), "upstream answered %d", res->status);
        corral_fill_fail(fill, -EBADMSG, msg);
        return;
    }
    if (res->content_type && has_controls(res->content_type)) {
        corral_fill_fail(fill, -EBADMSG,
                         "upstream sent a control character in Content-Type");
        return;
    }
    if (route->json && !valid_json(res->body, res->len)) {
        corral_fill_fail(fill, -EBADMSG, "upstream sent invalid JSON");
        return;
    }
    size_t keylen;
    const char *key = corral_fill_key(fill, &keylen);
    struct corral_value *v = make_value(key, keylen, res, 200);
    if (v == NULL) {
        corral_fill_fail(fill, -EBADMSG, "upstream answer too large to cache");
        return;
    }
    uint64_t keep = keep_for(route, res);
    if (keep == 0)
        corral_fill_done_nostore(fill, v);
    else if (keep == UINT64_MAX)
        corral_fill_done(fill, v);
    else
        corral_fill_done_capped(fill, v, keep);
}

static void
job_fetched(const struct corral_fetch_result *res, void *arg)
{
    struct job *job = arg;
    struct corral_fill *fill = job->fill;
    const struct corral_config_route *route = job->rf->route;
    struct corral_budget *budget = job->rf->budget;
    if (job->rf->metrics)
        corral_metrics_upstream_call(
            job->rf->metrics, res->error ? 0 : res->status, res->elapsed_ms);
    corral_breaker_report(job->rf->breaker, job->probe, breaker_outcome(res),
                          corral_now_ms());
    job->probe = 0;
    job_free(job);
    char msg[300];
    if (res->error == 0 && (res->status == 429 || res->status == 503) &&
        res->retry_after_s > 0) {
        /* The upstream asked for a pause: no call to it until then, from
         * any key. */
        uint64_t ms =
            res->retry_after_s > 86400 ? 86400000 : res->retry_after_s * 1000;
        corral_log(CORRAL_LOG_WARNING,
                   "upstream %s answered %d: paused for %llu s",
                   route->upstream->name, res->status,
                   (unsigned long long)(ms / 1000));
        corral_budget_pause(budget, ms);
        snprintf(msg, sizeof(msg), "upstream answered %d", res->status);
        corral_fill_fail_retry(fill, -EBUSY, msg, ms);
        return;
    }
    if (res->error == -ETIMEDOUT) {
        corral_fill_fail(fill, -ETIMEDOUT, "upstream timed out");
        return;
    }
    if (res->error) {
        /* The detail (host, port, TLS reason) goes to the log, not to
         * clients. */
        corral_log(CORRAL_LOG_ERROR, "%s: upstream %s error: %s", route->path,
                   corral_fetch_error_name(res->error), res->message);
        snprintf(msg, sizeof(msg), "upstream %s error",
                 corral_fetch_error_name(res->error));
        corral_fill_fail(fill, -EIO, msg);
        return;
    }
    take_answer(fill, route, res);
}

static void
job_abort(void *arg)
{
    struct job *job = arg;
    corral_budget_cancel(job->wait);
    corral_fetch_cancel(job->fetch);
    job_free(job);
}

/* Fill data is the upstream path (the cache keeps it NUL-terminated). */
static void
job_fetch(struct job *job, uint64_t timeout_ms)
{
    size_t len;
    const char *path = corral_fill_data(job->fill, &len);
    corral_fill_started(job->fill); /* fill_ms: the upstream's time only */
    job->fetch = corral_fetch_get_within(job->rf->upstream, path, timeout_ms,
                                         job_fetched, job);
    if (job->fetch == NULL) {
        struct corral_fill *fill = job->fill;
        job_free(job);
        corral_fill_fail(fill, -EINVAL, "bad upstream path");
    }
}

static void
job_budget(int error, uint64_t ms, void *arg)
{
    struct job *job = arg;
    job->wait = NULL;
    uint64_t retry_ms = 0;
    if (error == 0 && corral_breaker_check(job->rf->breaker, job->probe,
                                           corral_now_ms(), &retry_ms) < 0) {
        /* It opened while this call waited for a slot. */
        breaker_refused(job, retry_ms);
        return;
    }
    if (error == 0) {
        job_fetch(job, ms);
        return;
    }
    struct corral_fill *fill = job->fill;
    job_free(job);
    corral_fill_fail_retry(fill, -EBUSY,
                           "upstream busy: over its rate or "
                           "paused",
                           ms);
}

static void
job_admit(struct job *job)
{
    const struct corral_route_compute *rf = job->rf;
    uint64_t retry_ms = 0;
    int rc = corral_budget_acquire(
        rf->budget, corral_fill_background(job->fill), rf->timeout_ms,
        job_budget, job, &job->wait, &retry_ms);
    if (rc == 0) {
        job_fetch(job, rf->timeout_ms);
    } else if (rc != -EINPROGRESS) { /* waits: job_budget() goes on */
        struct corral_fill *fill = job->fill;
        job_free(job);
        corral_fill_fail_retry(fill, -EBUSY,
                               "upstream paused by its "
                               "Retry-After",
                               retry_ms);
    }
}

static void
job_start(struct corral_fill *fill, const char *key, size_t keylen, void *arg)
{
    struct corral_route_compute *rf = arg;
    uint64_t retry_ms = 0;
    /* A key with no copy is a new key for the route's new_keys. */
    if (rf->keys && !corral_fill_background(fill) &&
        corral_budget_try(rf->keys, false, &retry_ms) < 0) {
        corral_fill_fail_retry(fill, -EBUSY, "route over its new_keys limit",
                               retry_ms);
        return;
    }
    struct job *job = job_new(fill, rf);
    corral_fill_on_abort(fill, job_abort, job);
    int rc = corral_breaker_acquire(rf->breaker, corral_now_ms(), job_breaker,
                                    job, &job->bwait, &job->probe, &retry_ms);
    if (rc == 0)
        job_admit(job);
    else if (rc != -EINPROGRESS) /* waits: job_breaker() goes on */
        breaker_refused(job, retry_ms);
}

/* The fill data is the upstream path. */
#define FILL_DATA_MAX (CORRAL_ROUTE_KEY_MAX + 4096)

static bool
make_compute(const struct corral_route_compute *rf,
             const struct corral_route_match *m, char *data,
             struct corral_compute *out)
{
    int plen = corral_route_upstream_path(m, data, FILL_DATA_MAX);
    if (plen < 0)
        return false;
    *out = (struct corral_compute){
        .fn = job_start,
        .arg = (void *)rf,
        .data = data,
        .data_len = (size_t)plen,
        .fit = route_fit,
        .hold = route_hold,
    };
    return true;
}

int
corral_route_compute_refresh(struct corral_cache *c,
                             const struct corral_route_compute *rf,
                             const struct corral_route_match *m, bool refetch)
{
    char data[FILL_DATA_MAX];
    struct corral_compute compute;
    if (!make_compute(rf, m, data, &compute))
        return -EMSGSIZE;
    return (refetch ? corral_refetch
                    : corral_refresh)(c, m->key, m->keylen, &m->route->strategy,
                                      rf->timeout_ms + 1000, &compute);
}

int
corral_route_compute_get(struct corral_cache *c,
                         const struct corral_route_compute *rf,
                         const struct corral_route_match *m,
                         corral_result_cb *cb, void *arg,
                         struct corral_waiter **out)
{
    char data[FILL_DATA_MAX];
    struct corral_compute compute;
    if (!make_compute(rf, m, data, &compute))
        return -EMSGSIZE;
    /* The cache's deadline backs up the fetch's own timeout. */
    *out = corral_get_or_compute(c, m->key, m->keylen, &m->route->strategy,
                                 rf->timeout_ms + 1000, &compute, cb, arg);
    return *out != NULL ? 0 : -ESHUTDOWN;
}

int
corral_compute_error_status(int error)
{
    if (error == -ETIMEDOUT)
        return 504;
    if (error == -EAGAIN || error == -ECANCELED || error == -EBUSY)
        return 503;
    return 502;
}
