/* admin.c — health, metrics, purge and refresh (see admin.h). */
#include "admin.h"

#include <errno.h>
#include <event2/buffer.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "breaker.h"
#include "config.h"
#include "fmt.h"
#include "gateway.h"
#include "metrics.h"
#include "server.h"
#include "timeutil.h"
#include "xalloc.h"

struct corral_admin {
    struct corral_gateway *g;
    struct corral_server *server;
};

static void answer_json(struct corral_request *req, int status,
                        const char *extra, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
answer_json(struct corral_request *req, int status, const char *extra,
            const char *fmt, ...)
{
    char body[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(body, sizeof(body), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(body))
        n = sizeof(body) - 1;
    corral_request_respond_simple(req, status, "application/json", extra, body,
                                  (size_t)n);
}

/* Is a a prefix of the request path's first len bytes? */
static bool
path_is(const struct corral_request *req, const char *a)
{
    size_t n = strlen(a);
    return req->path_len == n && memcmp(req->path, a, n) == 0;
}

static bool
path_under(const struct corral_request *req, const char *prefix)
{
    size_t n = strlen(prefix);
    return req->path_len > n && memcmp(req->path, prefix, n) == 0 &&
           req->path[n] == '/';
}

/* The blocks of workers alive now. */
static bool
block_live(const struct corral_metrics_block *b)
{
    return b->pid > 0 && (b->pid == getpid() || kill((pid_t)b->pid, 0) == 0);
}

/* ---- auth ---- */

/* Equal without an early exit: the time does not tell how much of a guess
 * was right (its length neither: every byte of the longer is looked at). */
static bool
same_secret(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen > blen ? alen : blen;
    unsigned char diff = alen != blen;
    for (size_t i = 0; i < n; i++) {
        unsigned char x = i < alen ? (unsigned char)a[i] : 0;
        unsigned char y = i < blen ? (unsigned char)b[i] : 0;
        diff |= x ^ y;
    }
    return diff == 0;
}

/* 0 when req may mutate; else answered (401, 403). */
static int
authorize(struct corral_admin *a, struct corral_request *req)
{
    const struct corral_config *cfg = corral_gateway_config(a->g);
    const char *token = cfg->admin ? cfg->admin->token : NULL;
    if (token == NULL || *token == '\0') {
        answer_json(req, 403, NULL,
                    "{\"error\":\"no admin.token is configured: purge and "
                    "refresh are off\"}");
        return -1;
    }
    const char *h = req->authorization;
    size_t n = req->auth_len;
    if (h == NULL || n < 7 || strncasecmp(h, "Bearer ", 7) != 0 ||
        !same_secret(h + 7, n - 7, token, strlen(token))) {
        answer_json(req, 401, "WWW-Authenticate: Bearer realm=\"corral\"\r\n",
                    "{\"error\":\"a valid Authorization: Bearer token is "
                    "needed\"}");
        return -1;
    }
    return 0;
}

/* ---- endpoints ---- */

/* Each upstream of the config served now whose breaker is not closed. */
static void
breakers_open(struct corral_admin *a, struct evbuffer *o)
{
    const struct corral_config *cfg = corral_gateway_config(a->g);
    struct corral_breaker_table *t =
        corral_metrics_breakers(corral_gateway_metrics(a->g));
    uint64_t now = corral_now_ms();
    const char *sep = "";
    evbuffer_add_printf(o, "[");
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        struct corral_breaker_stats st;
        /* Upstream names need no JSON escape (config.c). */
        if (corral_breaker_table_read(t, cfg->upstreams[i].name, now, &st) &&
            st.state != CORRAL_BREAKER_CLOSED) {
            evbuffer_add_printf(o, "%s\"%s\"", sep, cfg->upstreams[i].name);
            sep = ",";
        }
    }
    evbuffer_add_printf(o, "]");
}

/* An open breaker is the server protecting an upstream, not the server
 * failing: the status stays "ok" and the breakers are listed. */
static void
healthz(struct corral_admin *a, struct corral_request *req)
{
    struct corral_metrics *m = corral_gateway_metrics(a->g);
    unsigned live = 0;
    int64_t first = 0;
    for (unsigned i = 0; i < corral_metrics_workers(m); i++) {
        struct corral_metrics_block *b = corral_metrics_block(m, i);
        if (!block_live(b))
            continue;
        live++;
        if (first == 0 || b->started_s < first)
            first = b->started_s;
    }
    int64_t up = first ? (int64_t)time(NULL) - first : 0;
    bool ok = !corral_gateway_draining(a->g);
    struct evbuffer *o = xcheck(evbuffer_new());
    evbuffer_add_printf(o,
                        "{\"status\":\"%s\",\"l2\":\"%s\",\"workers\":%u,"
                        "\"uptime_s\":%" PRId64 ",\"breakers_open\":",
                        ok ? "ok" : "draining", corral_gateway_l2_state(a->g),
                        live, up < 0 ? 0 : up);
    breakers_open(a, o);
    evbuffer_add_printf(o, "}");
    size_t len = evbuffer_get_length(o);
    corral_request_respond_simple(req, ok ? 200 : 503, "application/json", NULL,
                                  (char *)evbuffer_pullup(o, -1), len);
    evbuffer_free(o);
}

/* A purge waiting for the fleet's word. */
struct pending_purge {
    struct corral_request *req; /* NULL once its client went */
    bool was_cached;
    bool route;
    char name[1100]; /* the key or route path, JSON-escaped */
};

static void
purge_client_gone(struct corral_request *req, void *arg)
{
    struct pending_purge *pp = arg;
    (void)req;
    pp->req = NULL;
}

/* 200 only when the fleet will hear of it; else 503, and say what was
 * done: applied in this server, kept to be replayed. */
static void
purged(int error, int64_t gen, void *arg)
{
    struct pending_purge *pp = arg;
    struct corral_request *req = pp->req;
    if (req != NULL) {
        corral_request_on_close(req, NULL, NULL);
        const char *what = pp->route ? "purged_route" : "purged";
        char detail[64];
        if (pp->route)
            snprintf(detail, sizeof(detail), "\"generation\":%" PRId64, gen);
        else
            snprintf(detail, sizeof(detail), "\"was_cached\":%s",
                     pp->was_cached ? "true" : "false");
        if (error == 0)
            answer_json(req, 200, NULL, "{\"%s\":\"%s\",%s}", what,
                        pp->name, detail);
        else
            answer_json(req, 503, "Retry-After: 1\r\n",
                        "{\"error\":\"Redis did not confirm the purge: it "
                        "is applied in this server and queued for the other "
                        "instances; retry\",\"%s\":\"%s\",%s,"
                        "\"fleet\":\"queued\"}",
                        what, pp->name, detail);
    }
    free(pp);
}

static struct pending_purge *
pending_purge(struct corral_request *req, bool route, const char *name)
{
    struct pending_purge *pp = xcalloc(1, sizeof(*pp));
    pp->req = req;
    pp->route = route;
    fmt_json_escape(pp->name, sizeof(pp->name), name);
    corral_request_on_close(req, purge_client_gone, pp);
    return pp;
}

/* purge or refresh the key of the client path after prefix. */
static void
key_op(struct corral_admin *a, struct corral_request *req, size_t skip,
       bool purge)
{
    if (authorize(a, req) < 0)
        return;
    char key[512], k[1100];
    const char *path = req->path + skip;
    size_t plen = req->path_len - skip;
    struct pending_purge *pp = NULL;
    if (purge)
        pp = pending_purge(req, false, "");
    int rc = purge ? corral_gateway_purge(a->g, path, plen, req->query,
                                          req->query_len, key, sizeof(key),
                                          purged, pp)
                   : corral_gateway_refresh(a->g, path, plen, req->query,
                                            req->query_len, key, sizeof(key));
    if (pp != NULL && rc >= 0) {
        pp->was_cached = rc == 1;
        fmt_json_escape(pp->name, sizeof(pp->name), key);
        return; /* purged() answers */
    }
    if (pp != NULL) {
        corral_request_on_close(req, NULL, NULL);
        free(pp);
    }
    if (rc == -ENOENT) {
        answer_json(req, 404, NULL, "{\"error\":\"no route matches\"}");
        return;
    }
    if (rc == -EINVAL || rc == -ENOTSUP) {
        answer_json(req, 400, NULL, "{\"error\":\"%s\"}",
                    rc == -EINVAL ? "bad parameters for this route"
                                  : "an aggregate has no key of its own");
        return;
    }
    fmt_json_escape(k, sizeof(k), key);
    if (rc == 0 || rc == -EALREADY) {
        answer_json(req, 202, NULL, "{\"refreshing\":\"%s\",\"started\":%s}",
                    k, rc == 0 ? "true" : "false");
    } else { /* -EBUSY: backing off */
        answer_json(req, 409, NULL,
                    "{\"error\":\"the key is backing off after a failure\","
                    "\"key\":\"%s\"}",
                    k);
    }
}

/* DELETE /route/<route path as configured>: every key of that route. The
 * path may be percent-encoded ("%7Bcoin%7D" for "{coin}"). */
static void
route_purge(struct corral_admin *a, struct corral_request *req)
{
    if (authorize(a, req) < 0)
        return;
    char path[512], p[1100];
    const char *raw = req->path + 6;
    size_t len = req->path_len - 6;
    /* One that does not decode names no route: none holds a '%' or NUL. */
    if (len < sizeof(path) && fmt_percent_decode(path, raw, len, 0) >= 0) {
        struct pending_purge *pp = pending_purge(req, true, path);
        if (corral_gateway_purge_route(a->g, path, purged, pp) == 0)
            return; /* purged() answers */
        corral_request_on_close(req, NULL, NULL);
        free(pp);
    } else {
        if (len >= sizeof(path))
            len = sizeof(path) - 1;
        memcpy(path, raw, len);
        path[len] = '\0';
    }
    fmt_json_escape(p, sizeof(p), path);
    answer_json(req, 404, NULL, "{\"error\":\"no route %s\"}", p);
}

/* ---- Prometheus text format 0.0.4 ---- */

/* A label value: backslash, double quote and newline escaped. */
static void
label(struct evbuffer *o, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            evbuffer_add_printf(o, "\\%c", *s);
        else if (*s == '\n')
            evbuffer_add(o, "\\n", 2);
        else
            evbuffer_add(o, s, 1);
    }
}

static void
family(struct evbuffer *o, const char *name, const char *type,
       const char *help)
{
    evbuffer_add_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
                        type);
}

static void
sample(struct evbuffer *o, const char *name, uint64_t v)
{
    evbuffer_add_printf(o, "%s %" PRIu64 "\n", name, v);
}

/* One family of a single value, summed over the blocks. */
#define SUMMED(field)                                                          \
    ({                                                                         \
        uint64_t s_ = 0;                                                       \
        for (unsigned i_ = 0; i_ < nb; i_++)                                   \
            s_ += (uint64_t)(b[i_]->field);                                    \
        s_;                                                                    \
    })

/* ---- route and upstream series, merged by name over the workers ---- */

/* One kind of named slot (metrics.h): how to read one and add one to
 * another of the same name. */
struct slot_kind {
    size_t size;
    unsigned (*cap)(const struct corral_metrics *m);
    bool (*read)(const struct corral_metrics *m,
                 const struct corral_metrics_block *b, unsigned i, void *out);
    void (*add)(void *into, const void *from);
};

static bool
read_route(const struct corral_metrics *m, const struct corral_metrics_block *b,
           unsigned i, void *out)
{
    return corral_metrics_route_read(m, b, i, out);
}

static void
add_route(void *into, const void *from)
{
    struct corral_metrics_route *x = into;
    const struct corral_metrics_route *y = from;
    for (int k = 0; k < M_RESULTS; k++)
        x->results[k] += y->results[k];
}

static bool
read_upstream(const struct corral_metrics *m,
              const struct corral_metrics_block *b, unsigned i, void *out)
{
    return corral_metrics_upstream_read(m, b, i, out);
}

static void
add_upstream(void *into, const void *from)
{
    struct corral_metrics_upstream *x = into;
    const struct corral_metrics_upstream *y = from;
    for (int k = 0; k < M_CLASSES; k++)
        x->calls[k] += y->calls[k];
    for (int k = 0; k < M_BUCKETS; k++)
        x->le[k] += y->le[k];
    x->count += y->count;
    x->sum_ms += y->sum_ms;
    x->budget.waited += y->budget.waited;
    x->budget.refused += y->budget.refused;
    x->budget.pauses += y->budget.pauses;
    x->budget.queued += y->budget.queued;
}

static const struct slot_kind route_slots = {
    sizeof(struct corral_metrics_route), corral_metrics_cap_routes, read_route,
    add_route};
static const struct slot_kind upstream_slots = {
    sizeof(struct corral_metrics_upstream), corral_metrics_cap_upstreams,
    read_upstream, add_upstream};

static int
by_name(const void *a, const void *b)
{
    return strcmp(((const struct corral_metrics_name *)a)->text,
                  ((const struct corral_metrics_name *)b)->text);
}

/* Every named slot of kind in the nb blocks, one per name (counts summed
 * over the workers), sorted by name. Caller frees; *n entries. */
static void *
merged(const struct corral_metrics *m, struct corral_metrics_block **b,
       unsigned nb, const struct slot_kind *kind, size_t *n)
{
    size_t len = 0, cap = 16;
    char *all = xmalloc(cap * kind->size);
    for (unsigned w = 0; w < nb; w++)
        for (unsigned i = 0; i < kind->cap(m); i++) {
            if (len == cap)
                all = xrealloc(all, (cap *= 2) * kind->size);
            len += kind->read(m, b[w], i, all + len * kind->size);
        }
    qsort(all, len, kind->size, by_name);
    size_t k = 0;
    for (size_t j = 0; j < len; j++) {
        char *e = all + j * kind->size;
        if (k > 0 && by_name(all + (k - 1) * kind->size, e) == 0)
            kind->add(all + (k - 1) * kind->size, e);
        else
            memmove(all + k++ * kind->size, e, kind->size);
    }
    *n = k;
    return all;
}

static void
route_series(struct evbuffer *o, const struct corral_metrics_route *r, size_t n)
{
    family(o, "corral_requests_total", "counter",
           "Requests answered, by route and how the cache answered.");
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < M_RESULTS; k++) {
            evbuffer_add_printf(o, "corral_requests_total{route=\"");
            label(o, r[i].name.text);
            evbuffer_add_printf(o, "\",result=\"%s\"} %" PRIu64 "\n",
                                corral_metrics_result_name(k), r[i].results[k]);
        }
}

static void
upstream_series(struct evbuffer *o, const struct corral_metrics_upstream *u,
                size_t n)
{
    static const char *const classes[M_CLASSES] = {"error", "1xx", "2xx",
                                                   "3xx",   "4xx", "5xx"};
    static const uint64_t bounds[M_BUCKETS] = CORRAL_METRICS_BUCKETS;
    family(o, "corral_upstream_calls_total", "counter",
           "Upstream calls, by upstream and status class (error: no "
           "answer).");
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < M_CLASSES; k++) {
            evbuffer_add_printf(o, "corral_upstream_calls_total{upstream=\"");
            label(o, u[i].name.text);
            evbuffer_add_printf(o, "\",class=\"%s\"} %" PRIu64 "\n", classes[k],
                                u[i].calls[k]);
        }
    family(o, "corral_upstream_call_duration_seconds", "histogram",
           "How long upstream calls took, by upstream.");
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k <= M_BUCKETS; k++) {
            evbuffer_add_printf(o, "corral_upstream_call_duration_seconds_"
                                   "bucket{upstream=\"");
            label(o, u[i].name.text);
            if (k < M_BUCKETS)
                evbuffer_add_printf(o, "\",le=\"%g\"} %" PRIu64 "\n",
                                    (double)bounds[k] / 1000, u[i].le[k]);
            else
                evbuffer_add_printf(o, "\",le=\"+Inf\"} %" PRIu64 "\n",
                                    u[i].count);
        }
        evbuffer_add_printf(o, "corral_upstream_call_duration_seconds_sum"
                               "{upstream=\"");
        label(o, u[i].name.text);
        evbuffer_add_printf(o, "\"} %.3f\n", (double)u[i].sum_ms / 1000);
        evbuffer_add_printf(o, "corral_upstream_call_duration_seconds_count"
                               "{upstream=\"");
        label(o, u[i].name.text);
        evbuffer_add_printf(o, "\"} %" PRIu64 "\n", u[i].count);
    }
    static const struct {
        const char *name, *type, *help;
        size_t off;
    } budget[] = {
        {"corral_rate_limit_waits_total", "counter",
         "Upstream calls that waited for a slot of the rate window.",
         offsetof(struct corral_budget_stats, waited)},
        {"corral_rate_limit_refused_total", "counter",
         "Upstream calls refused: paused, or no slot within the timeout.",
         offsetof(struct corral_budget_stats, refused)},
        {"corral_upstream_pauses_total", "counter",
         "Pauses an upstream asked for with Retry-After.",
         offsetof(struct corral_budget_stats, pauses)},
        {"corral_rate_limit_queued", "gauge",
         "Upstream calls waiting for a slot now.",
         offsetof(struct corral_budget_stats, queued)},
    };
    for (size_t f = 0; f < sizeof(budget) / sizeof(budget[0]); f++) {
        family(o, budget[f].name, budget[f].type, budget[f].help);
        for (size_t i = 0; i < n; i++) {
            uint64_t v;
            memcpy(&v, (const char *)&u[i].budget + budget[f].off, sizeof(v));
            evbuffer_add_printf(o, "%s{upstream=\"", budget[f].name);
            label(o, u[i].name.text);
            evbuffer_add_printf(o, "\"} %" PRIu64 "\n", v);
        }
    }
}

/* The breakers of the upstreams of the config served now: their state
 * and transitions are the server's (every worker shares them). */
static void
breaker_series(struct evbuffer *o, const struct corral_config *cfg,
               const struct corral_breaker_table *t)
{
    static const struct {
        const char *name, *type, *help;
        size_t off; /* in struct corral_breaker_stats; SIZE_MAX: state */
    } fam[] = {
        {"corral_upstream_breaker_state", "gauge",
         "The upstream's circuit breaker: 0 closed, 1 open (no calls), 2 "
         "half-open (one probe is out).",
         SIZE_MAX},
        {"corral_upstream_breaker_opened_total", "counter",
         "Times the upstream's breaker opened (failures in a row, or the "
         "fleet's word).",
         offsetof(struct corral_breaker_stats, opened)},
        {"corral_upstream_breaker_closed_total", "counter",
         "Times the upstream's breaker closed again (a call succeeded).",
         offsetof(struct corral_breaker_stats, closed)},
        {"corral_upstream_breaker_probes_total", "counter",
         "Probes the open breaker let through, one per backoff step.",
         offsetof(struct corral_breaker_stats, probes)},
        {"corral_upstream_breaker_refused_total", "counter",
         "Upstream calls the open breaker refused.",
         offsetof(struct corral_breaker_stats, refused)},
    };
    uint64_t now = corral_now_ms();
    struct corral_breaker_stats *st =
        xcalloc(cfg->n_upstreams + 1, sizeof(*st));
    bool *have = xcalloc(cfg->n_upstreams + 1, sizeof(*have));
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        have[i] =
            corral_breaker_table_read(t, cfg->upstreams[i].name, now, &st[i]);
    for (size_t f = 0; f < sizeof(fam) / sizeof(fam[0]); f++) {
        family(o, fam[f].name, fam[f].type, fam[f].help);
        for (size_t i = 0; i < cfg->n_upstreams; i++) {
            if (!have[i])
                continue;
            uint64_t v = st[i].state;
            if (fam[f].off != SIZE_MAX)
                memcpy(&v, (const char *)&st[i] + fam[f].off, sizeof(v));
            evbuffer_add_printf(o, "%s{upstream=\"", fam[f].name);
            label(o, cfg->upstreams[i].name);
            evbuffer_add_printf(o, "\"} %" PRIu64 "\n", v);
        }
    }
    free(have);
    free(st);
}

static void
metrics(struct corral_admin *a, struct corral_request *req)
{
    struct corral_metrics *m = corral_gateway_metrics(a->g);
    corral_gateway_snapshot(a->g);
    unsigned nw = corral_metrics_workers(m), nb = 0;
    struct corral_metrics_block **b = xcalloc(nw, sizeof(*b));
    for (unsigned i = 0; i < nw; i++) {
        struct corral_metrics_block *x = corral_metrics_block(m, i);
        if (block_live(x))
            b[nb++] = x;
    }
    struct evbuffer *o = xcheck(evbuffer_new());

    /* Routes and upstreams by name, whatever their places in the configs
     * the workers serve now or served before a reload. */
    size_t nroutes, nups;
    struct corral_metrics_route *routes =
        merged(m, b, nb, &route_slots, &nroutes);
    struct corral_metrics_upstream *ups =
        merged(m, b, nb, &upstream_slots, &nups);
    route_series(o, routes, nroutes);
    upstream_series(o, ups, nups);
    breaker_series(o, corral_gateway_config(a->g), corral_metrics_breakers(m));
    free(routes);
    free(ups);
    family(o, "corral_upstream_calls_saved_total", "counter",
           "Requests answered with a value they did not fill themselves: "
           "hits from L1 or L2 (negative ones too), requests collapsed onto "
           "another's fill, stale answers while a refresh runs.");
    sample(o, "corral_upstream_calls_saved_total", SUMMED(saved));

    /* The cache. */
    family(o, "corral_fills_in_flight", "gauge", "Fills running now.");
    sample(o, "corral_fills_in_flight", SUMMED(cache.fills_in_flight));
    family(o, "corral_fills_total", "counter",
           "Fills finished, by outcome (timeout is also counted failed).");
    evbuffer_add_printf(o,
                        "corral_fills_total{outcome=\"ok\"} %" PRIu64 "\n"
                        "corral_fills_total{outcome=\"failed\"} %" PRIu64 "\n"
                        "corral_fills_total{outcome=\"timeout\"} %" PRIu64
                        "\n",
                        SUMMED(cache.fills_ok), SUMMED(cache.fills_failed),
                        SUMMED(cache.fills_timed_out));
    family(o, "corral_waiters_collapsed_total", "counter",
           "Requests that waited on another request's fill.");
    sample(o, "corral_waiters_collapsed_total",
           SUMMED(cache.waiters_collapsed));
    family(o, "corral_refreshes_total", "counter",
           "Background refreshes started, by why.");
    uint64_t early = SUMMED(cache.early_refreshes);
    uint64_t all = SUMMED(cache.refreshes);
    evbuffer_add_printf(o,
                        "corral_refreshes_total{reason=\"early\"} %" PRIu64
                        "\ncorral_refreshes_total{reason=\"stale\"} %" PRIu64
                        "\n",
                        early, all > early ? all - early : 0);
    family(o, "corral_backoff_events_total", "counter",
           "Failed fills that set a key's backoff.");
    sample(o, "corral_backoff_events_total", SUMMED(cache.backoffs));
    family(o, "corral_backoff_answers_total", "counter",
           "Requests answered from a key's backoff, without a call.");
    sample(o, "corral_backoff_answers_total", SUMMED(cache.backoff_answers));
    family(o, "corral_l1_entries", "gauge", "Values in L1.");
    sample(o, "corral_l1_entries", SUMMED(cache.entries));
    family(o, "corral_l1_bytes", "gauge", "Bytes charged to the L1 budget.");
    sample(o, "corral_l1_bytes", SUMMED(cache.bytes));
    family(o, "corral_l1_max_bytes", "gauge", "The L1 budget, all workers.");
    sample(o, "corral_l1_max_bytes", SUMMED(cache.max_bytes));
    family(o, "corral_l1_evictions_total", "counter",
           "Values evicted from L1 for room.");
    sample(o, "corral_l1_evictions_total", SUMMED(cache.evictions));
    family(o, "corral_l1_expirations_total", "counter",
           "Values dropped from L1 past their stale windows.");
    sample(o, "corral_l1_expirations_total", SUMMED(cache.expirations));

    /* L2. */
    if (nb > 0 && b[0]->l2_enabled) {
        family(o, "corral_l2_operations_total", "counter",
               "L2 reads, by result.");
        evbuffer_add_printf(
            o,
            "corral_l2_operations_total{result=\"hit\"} %" PRIu64 "\n"
            "corral_l2_operations_total{result=\"miss\"} %" PRIu64 "\n"
            "corral_l2_operations_total{result=\"timeout\"} %" PRIu64 "\n",
            SUMMED(l2t.hits), SUMMED(l2t.misses), SUMMED(l2.timeouts));
        family(o, "corral_l2_errors_total", "counter",
               "Redis error replies, lost connections and commands not "
               "sent while it was down.");
        sample(o, "corral_l2_errors_total", SUMMED(l2.errors));
        family(o, "corral_l2_bad_values_total", "counter",
               "Values in L2 that were not corral's (or another version).");
        sample(o, "corral_l2_bad_values_total", SUMMED(l2t.bad_values));
        family(o, "corral_l2_rejected_total", "counter",
               "Values read from L2 that failed the route's checks (head, "
               "lifetime, JSON): served from a new fill instead.");
        sample(o, "corral_l2_rejected_total", SUMMED(cache.tier_rejects));
        family(o, "corral_l2_too_large_total", "counter",
               "Values kept out of L2 (or not read from it) for being "
               "larger than l2.max_value_bytes, by where.");
        evbuffer_add_printf(
            o,
            "corral_l2_too_large_total{op=\"write\"} %" PRIu64 "\n"
            "corral_l2_too_large_total{op=\"read\"} %" PRIu64 "\n",
            SUMMED(l2t.too_large), SUMMED(l2t.large_found));
        family(o, "corral_l2_leases_total", "counter",
               "Fleet leases: won by this server, lost (ran out while "
               "held), granted too late and given back.");
        evbuffer_add_printf(
            o,
            "corral_l2_leases_total{result=\"won\"} %" PRIu64 "\n"
            "corral_l2_leases_total{result=\"lost\"} %" PRIu64 "\n"
            "corral_l2_leases_total{result=\"late\"} %" PRIu64 "\n",
            SUMMED(l2t.leases_won), SUMMED(l2t.leases_lost),
            SUMMED(l2t.late_leases));
        family(o, "corral_l2_purges_queued_total", "counter",
               "Purges Redis did not confirm, kept to be replayed.");
        sample(o, "corral_l2_purges_queued_total", SUMMED(l2t.purges_queued));
        family(o, "corral_l2_resyncs_total", "counter",
               "Resyncs after the subscriber was deaf, and of those, the "
               "ones that found purges missed (L1 dropped).");
        evbuffer_add_printf(
            o,
            "corral_l2_resyncs_total{result=\"replayed\"} %" PRIu64 "\n"
            "corral_l2_resyncs_total{result=\"lost\"} %" PRIu64 "\n",
            SUMMED(l2t.resyncs) - SUMMED(l2t.resync_losses),
            SUMMED(l2t.resync_losses));
        family(o, "corral_l2_connects_total", "counter",
               "Connections made to Redis.");
        sample(o, "corral_l2_connects_total", SUMMED(l2.connects));
        uint64_t up = 0;
        for (unsigned i = 0; i < nb; i++)
            up += b[i]->l2.state == CORRAL_REDIS_UP;
        family(o, "corral_l2_up", "gauge",
               "1 when every worker's Redis connection is up.");
        sample(o, "corral_l2_up", up == nb);
    }

    /* Clients and workers. */
    family(o, "corral_client_connections", "gauge", "Client connections open.");
    sample(o, "corral_client_connections", SUMMED(server.open));
    family(o, "corral_client_connections_total", "counter",
           "Client connections, by what became of them at accept.");
    evbuffer_add_printf(
        o,
        "corral_client_connections_total{result=\"accepted\"} %" PRIu64 "\n"
        "corral_client_connections_total{result=\"rejected\"} %" PRIu64 "\n",
        SUMMED(server.accepted), SUMMED(server.rejected));
    family(o, "corral_client_timeouts_total", "counter",
           "Client connections closed by client_timeout.");
    sample(o, "corral_client_timeouts_total", SUMMED(server.timeouts));
    family(o, "corral_bad_requests_total", "counter",
           "Requests refused before routing (400, 431, 505).");
    sample(o, "corral_bad_requests_total", SUMMED(server.bad_requests));
    family(o, "corral_workers", "gauge", "Worker processes serving now.");
    sample(o, "corral_workers", nb);

    size_t len = evbuffer_get_length(o);
    char *text = (char *)evbuffer_pullup(o, -1);
    corral_request_respond_simple(req, 200,
                                  "text/plain; version=0.0.4; charset=utf-8",
                                  NULL, text ? text : "", text ? len : 0);
    evbuffer_free(o);
    free(b);
}

static void
on_admin(struct corral_request *req, void *arg)
{
    struct corral_admin *a = arg;
    bool get = req->method == CORRAL_METHOD_GET ||
               req->method == CORRAL_METHOD_HEAD;
    if (path_is(req, "/healthz") || path_is(req, "/metrics")) {
        if (!get) {
            answer_json(req, 405, "Allow: GET, HEAD\r\n",
                        "{\"error\":\"method not allowed\"}");
            return;
        }
        if (req->path[1] == 'h')
            healthz(a, req);
        else
            metrics(a, req);
        return;
    }
    if (path_under(req, "/cache")) {
        if (req->method != CORRAL_METHOD_DELETE) {
            answer_json(req, 405, "Allow: DELETE\r\n",
                        "{\"error\":\"method not allowed\"}");
            return;
        }
        key_op(a, req, 6, true);
        return;
    }
    if (path_under(req, "/route")) {
        if (req->method != CORRAL_METHOD_DELETE) {
            answer_json(req, 405, "Allow: DELETE\r\n",
                        "{\"error\":\"method not allowed\"}");
            return;
        }
        route_purge(a, req);
        return;
    }
    if (path_under(req, "/refresh")) {
        if (req->method != CORRAL_METHOD_POST) {
            answer_json(req, 405, "Allow: POST\r\n",
                        "{\"error\":\"method not allowed\"}");
            return;
        }
        key_op(a, req, 8, false);
        return;
    }
    answer_json(req, 404, NULL, "{\"error\":\"no such admin endpoint\"}");
}

struct corral_admin *
corral_admin_new(struct event_base *base, struct corral_gateway *g,
                 int listen_fd, char *err, size_t errlen)
{
    const struct corral_config *cfg = corral_gateway_config(g);
    struct corral_admin *a = xcalloc(1, sizeof(*a));
    a->g = g;
    struct corral_server_options so = {
        .host = cfg->admin->listen.host,
        .port = cfg->admin->listen.port,
        .max_clients = cfg->admin->max_clients,
        .client_timeout_ms = cfg->admin->client_timeout_ms,
        /* Whoever reaches the port must not be able to keep a health
         * check out by holding connections. */
        .evict_idle = true,
        .has_listen_fd = listen_fd >= 0,
        .listen_fd = listen_fd,
    };
    char why[256];
    a->server = corral_server_new(base, &so, on_admin, a, why, sizeof(why));
    if (a->server == NULL) {
        snprintf(err, errlen, "admin.listen: %s", why);
        free(a);
        return NULL;
    }
    return a;
}

uint16_t
corral_admin_port(const struct corral_admin *a)
{
    return corral_server_port(a->server);
}

void
corral_admin_free(struct corral_admin *a)
{
    if (a == NULL)
        return;
    corral_server_free(a->server);
    free(a);
}
