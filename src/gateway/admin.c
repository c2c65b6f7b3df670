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

int
corral_admin_authorize(const char *token, const char *authorization,
                       size_t auth_len)
{
    if (token == NULL || *token == '\0')
        return 403;
    const char *h = authorization;
    size_t n = auth_len;
    if (h == NULL || n < 7 || strncasecmp(h, "Bearer ", 7) != 0 ||
        !same_secret(h + 7, n - 7, token, strlen(token)))
        return 401;
    return 0;
}

/* 0 when req may mutate; else answered (401, 403). */
static int
authorize(struct corral_admin *a, struct corral_request *req)
{
    const struct corral_config *cfg = corral_gateway_config(a->g);
    switch (corral_admin_authorize(cfg->admin ? cfg->admin->token : NULL,
                                   req->authorization, req->auth_len)) {
    case 0:
        return 0;
    case 403:
        answer_json(req, 403, NULL,
                    "{\"error\":\"no admin.token is configured: purge and "
                    "refresh are off\"}");
        return -1;
    default:
        answer_json(req, 401, "WWW-Authenticate: Bearer realm=\"corral\"\r\n",
                    "{\"error\":\"a valid Authorization: Bearer token is "
                    "needed\"}");
        return -1;
    }
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
            answer_json(req, 200, NULL, "{\"%s\":\"%s\",%s}", what, pp->name,
                        detail);
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
    if (rc == -EINVAL) {
        answer_json(req, 400, NULL,
                    "{\"error\":\"bad parameters for this route\"}");
        return;
    }
    fmt_json_escape(k, sizeof(k), key);
    if (rc == 0 || rc == -EALREADY) {
        answer_json(req, 202, NULL, "{\"refreshing\":\"%s\",\"started\":%s}", k,
                    rc == 0 ? "true" : "false");
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
route_purge(struct corral_admin *a, struct corral_request *req, size_t skip)
{
    if (authorize(a, req) < 0)
        return;
    char path[512], p[1100];
    const char *raw = req->path + skip;
    size_t len = req->path_len - skip;
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

/* What one scrape reads: the live workers' blocks, their routes and
 * upstreams merged by name (whatever their places in the configs the
 * workers serve now or served before a reload), and the breakers of the
 * upstreams of the config served now (their state is the server's). */
struct scrape {
    struct corral_metrics_block **b;
    unsigned nb;
    struct corral_metrics_route *routes;
    size_t n_routes;
    struct corral_metrics_upstream *ups;
    size_t n_ups;
    const struct corral_config *cfg;
    const struct corral_metrics *m;
    struct corral_breaker_stats *breakers; /* by config index */
    bool *have_breaker;                    /* by config index */
};

struct family;
/* Writes a family's samples (its # HELP and # TYPE are written). */
typedef void series_fn(struct evbuffer *o, const struct family *f,
                       const struct scrape *s);

/* A sample summed over the blocks: labels ("": none), and the uint64_t
 * field of a block at off, or read's figure for one block. */
struct sample {
    const char *labels;
    size_t off;
    uint64_t (*read)(const struct corral_metrics_block *b);
};

/* One family: name, type, help, and how to read it: its samples (at
 * most 3) summed over the blocks, or series() for one sample per route,
 * upstream or breaker (off: a field series() reads). */
struct family {
    const char *name, *type, *help;
    bool l2;  /* only with l2 */
    bool all; /* 1 when the sum is every block, else 0 */
    struct sample samples[3];
    series_fn *series;
    size_t off;
};

static void
route_results(struct evbuffer *o, const struct family *f,
              const struct scrape *s)
{
    for (size_t i = 0; i < s->n_routes; i++)
        for (int k = 0; k < M_RESULTS; k++) {
            evbuffer_add_printf(o, "%s{route=\"", f->name);
            label(o, s->routes[i].name.text);
            evbuffer_add_printf(o, "\",result=\"%s\"} %" PRIu64 "\n",
                                corral_metrics_result_name(k),
                                s->routes[i].results[k]);
        }
}

static void
upstream_calls(struct evbuffer *o, const struct family *f,
               const struct scrape *s)
{
    static const char *const classes[M_CLASSES] = {"error", "1xx", "2xx",
                                                   "3xx",   "4xx", "5xx"};
    for (size_t i = 0; i < s->n_ups; i++)
        for (int k = 0; k < M_CLASSES; k++) {
            evbuffer_add_printf(o, "%s{upstream=\"", f->name);
            label(o, s->ups[i].name.text);
            evbuffer_add_printf(o, "\",class=\"%s\"} %" PRIu64 "\n", classes[k],
                                s->ups[i].calls[k]);
        }
}

/* name_<suffix>{upstream="<name>"<more> */
static void
upstream_series_head(struct evbuffer *o, const struct family *f,
                     const char *suffix, const char *name)
{
    evbuffer_add_printf(o, "%s%s{upstream=\"", f->name, suffix);
    label(o, name);
}

static void
upstream_durations(struct evbuffer *o, const struct family *f,
                   const struct scrape *s)
{
    static const uint64_t bounds[M_BUCKETS] = CORRAL_METRICS_BUCKETS;
    for (size_t i = 0; i < s->n_ups; i++) {
        const struct corral_metrics_upstream *u = &s->ups[i];
        for (int k = 0; k <= M_BUCKETS; k++) {
            upstream_series_head(o, f, "_bucket", u->name.text);
            if (k < M_BUCKETS)
                evbuffer_add_printf(o, "\",le=\"%g\"} %" PRIu64 "\n",
                                    (double)bounds[k] / 1000, u->le[k]);
            else
                evbuffer_add_printf(o, "\",le=\"+Inf\"} %" PRIu64 "\n",
                                    u->count);
        }
        upstream_series_head(o, f, "_sum", u->name.text);
        evbuffer_add_printf(o, "\"} %.3f\n", (double)u->sum_ms / 1000);
        upstream_series_head(o, f, "_count", u->name.text);
        evbuffer_add_printf(o, "\"} %" PRIu64 "\n", u->count);
    }
}

/* f->off: a field of struct corral_budget_stats. */
static void
upstream_budget(struct evbuffer *o, const struct family *f,
                const struct scrape *s)
{
    for (size_t i = 0; i < s->n_ups; i++) {
        uint64_t v;
        memcpy(&v, (const char *)&s->ups[i].budget + f->off, sizeof(v));
        upstream_series_head(o, f, "", s->ups[i].name.text);
        evbuffer_add_printf(o, "\"} %" PRIu64 "\n", v);
    }
}

/* One sample per route of the running config that calls an upstream
 * (an aggregate calls none of its own), naming it: the join that sums a
 * route family by upstream. */
static void
route_info(struct evbuffer *o, const struct family *f, const struct scrape *s)
{
    for (size_t i = 0; i < s->cfg->n_routes; i++) {
        const struct corral_config_route *r = &s->cfg->routes[i];
        if (r->upstream == NULL)
            continue;
        evbuffer_add_printf(o, "%s{route=\"", f->name);
        label(o, r->path);
        evbuffer_add(o, "\",upstream=\"", 12);
        label(o, r->upstream->name);
        evbuffer_add(o, "\"} 1\n", 5);
    }
}

/* f->off: a field of struct corral_breaker_stats; SIZE_MAX: the state. */
static void
upstream_breaker(struct evbuffer *o, const struct family *f,
                 const struct scrape *s)
{
    for (size_t i = 0; i < s->cfg->n_upstreams; i++) {
        if (!s->have_breaker[i])
            continue;
        uint64_t v = s->breakers[i].state;
        if (f->off != SIZE_MAX)
            memcpy(&v, (const char *)&s->breakers[i] + f->off, sizeof(v));
        upstream_series_head(o, f, "", s->cfg->upstreams[i].name);
        evbuffer_add_printf(o, "\"} %" PRIu64 "\n", v);
    }
}

/* The workers' Redis reply times, one histogram. */
static void
l2_durations(struct evbuffer *o, const struct family *f, const struct scrape *s)
{
    static const uint64_t bounds[CORRAL_REDIS_LATENCY_BUCKETS] =
        CORRAL_REDIS_LATENCY_BOUNDS;
    uint64_t le[CORRAL_REDIS_LATENCY_BUCKETS] = {0}, n = 0, us = 0;
    for (size_t i = 0; i < s->nb; i++) {
        const struct corral_redis_stats *st = &s->b[i]->l2;
        for (int k = 0; k < CORRAL_REDIS_LATENCY_BUCKETS; k++)
            le[k] += st->reply_le[k];
        n += st->replies;
        us += st->reply_us;
    }
    for (int k = 0; k < CORRAL_REDIS_LATENCY_BUCKETS; k++)
        evbuffer_add_printf(o, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", f->name,
                            (double)bounds[k] / 1e6, le[k]);
    evbuffer_add_printf(o, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", f->name, n);
    evbuffer_add_printf(o, "%s_sum %.6f\n", f->name, (double)us / 1e6);
    evbuffer_add_printf(o, "%s_count %" PRIu64 "\n", f->name, n);
}

/* The most primaries any worker's slot map holds: one figure for the
 * cluster, not a sum over the workers. */
static void
l2_primaries(struct evbuffer *o, const struct family *f, const struct scrape *s)
{
    uint64_t most = 0;
    for (size_t i = 0; i < s->nb; i++)
        if (s->b[i]->l2.primaries > most)
            most = s->b[i]->l2.primaries;
    evbuffer_add_printf(o, "%s %" PRIu64 "\n", f->name, most);
}

/* The supervisor's count, not a sum over the workers. */
static void
worker_restarts(struct evbuffer *o, const struct family *f,
                const struct scrape *s)
{
    evbuffer_add_printf(o, "%s %" PRIu64 "\n", f->name,
                        corral_metrics_restarts(s->m));
}

/* The workers' CPU time compressing, kept in µs, in seconds. */
static void
compression_cpu(struct evbuffer *o, const struct family *f,
                const struct scrape *s)
{
    uint64_t us = 0;
    for (unsigned i = 0; i < s->nb; i++)
        us += s->b[i]->encoding.cpu_us;
    evbuffer_add_printf(o, "%s %" PRIu64 ".%06" PRIu64 "\n", f->name,
                        us / 1000000, us % 1000000);
}

static uint64_t
stale_refreshes(const struct corral_metrics_block *b)
{
    return b->cache.refreshes > b->cache.early_refreshes
               ? b->cache.refreshes - b->cache.early_refreshes
               : 0;
}

static uint64_t
resyncs_replayed(const struct corral_metrics_block *b)
{
    return b->l2t.resyncs - b->l2t.resync_losses;
}

static uint64_t
l2_up(const struct corral_metrics_block *b)
{
    return b->l2.state == CORRAL_REDIS_UP;
}

static uint64_t
connections_open(const struct corral_metrics_block *b)
{
    return b->server.open;
}

static uint64_t
one(const struct corral_metrics_block *b)
{
    return 1;
}

#define AT(field) .off = offsetof(struct corral_metrics_block, field)
#define BUDGET(field) offsetof(struct corral_budget_stats, field)
#define BREAKER(field) offsetof(struct corral_breaker_stats, field)

/* Every family, in the order of the exposition: adding a metric is one
 * row (and, for a new kind of series, one function). */
static const struct family families[] = {
    {"corral_requests_total", "counter",
     "Requests answered, by route and how the cache answered.",
     .series = route_results},
    {"corral_upstream_calls_total", "counter",
     "Upstream calls, by upstream and status class (error: no answer).",
     .series = upstream_calls},
    {"corral_upstream_call_duration_seconds", "histogram",
     "How long upstream calls took, by upstream.",
     .series = upstream_durations},
    {"corral_rate_limit_waits_total", "counter",
     "Upstream calls that waited for a slot of the rate window.",
     .series = upstream_budget, .off = BUDGET(waited)},
    {"corral_rate_limit_refused_total", "counter",
     "Upstream calls refused: paused, or no slot within the timeout.",
     .series = upstream_budget, .off = BUDGET(refused)},
    {"corral_upstream_pauses_total", "counter",
     "Pauses an upstream asked for with Retry-After.",
     .series = upstream_budget, .off = BUDGET(pauses)},
    {"corral_rate_limit_queued", "gauge",
     "Upstream calls waiting for a slot now.", .series = upstream_budget,
     .off = BUDGET(queued)},
    {"corral_upstream_breaker_state", "gauge",
     "The upstream's circuit breaker: 0 closed, 1 open (no calls), 2 "
     "half-open (one probe is out).",
     .series = upstream_breaker, .off = SIZE_MAX},
    {"corral_upstream_breaker_opened_total", "counter",
     "Times the upstream's breaker opened (failures in a row, or the "
     "fleet's word).",
     .series = upstream_breaker, .off = BREAKER(opened)},
    {"corral_upstream_breaker_closed_total", "counter",
     "Times the upstream's breaker closed again (a call succeeded).",
     .series = upstream_breaker, .off = BREAKER(closed)},
    {"corral_upstream_breaker_probes_total", "counter",
     "Probes the open breaker let through, one per backoff step.",
     .series = upstream_breaker, .off = BREAKER(probes)},
    {"corral_upstream_breaker_refused_total", "counter",
     "Upstream calls the open breaker refused.", .series = upstream_breaker,
     .off = BREAKER(refused)},
    {"corral_upstream_calls_saved_total", "counter",
     "Requests answered with a value they did not fill themselves: hits "
     "from L1 or L2 (negative ones too), requests collapsed onto another's "
     "fill, stale answers while a refresh runs.",
     .samples = {{"", AT(saved)}}},
    {"corral_route_info", "gauge",
     "1 for each route of the running config that calls an upstream, "
     "naming it: multiply a route family by it, on route, to sum by "
     "upstream.",
     .series = route_info},

    /* The cache. */
    {"corral_fills_in_flight", "gauge", "Fills running now.",
     .samples = {{"", AT(cache.fills_in_flight)}}},
    {"corral_fills_total", "counter",
     "Fills finished, by outcome (timeout is also counted failed).",
     .samples = {{"outcome=\"ok\"", AT(cache.fills_ok)},
                 {"outcome=\"failed\"", AT(cache.fills_failed)},
                 {"outcome=\"timeout\"", AT(cache.fills_timed_out)}}},
    {"corral_waiters_collapsed_total", "counter",
     "Requests that waited on another request's fill.",
     .samples = {{"", AT(cache.waiters_collapsed)}}},
    {"corral_refreshes_total", "counter",
     "Background refreshes started, by why.",
     .samples = {{"reason=\"early\"", AT(cache.early_refreshes)},
                 {"reason=\"stale\"", .read = stale_refreshes}}},
    {"corral_backoff_events_total", "counter",
     "Failed fills that set a key's backoff.",
     .samples = {{"", AT(cache.backoffs)}}},
    {"corral_backoff_answers_total", "counter",
     "Requests answered from a key's backoff, without a call.",
     .samples = {{"", AT(cache.backoff_answers)}}},
    {"corral_l1_entries", "gauge", "Values in L1.",
     .samples = {{"", AT(cache.entries)}}},
    {"corral_l1_bytes", "gauge", "Bytes charged to the L1 budget.",
     .samples = {{"", AT(cache.bytes)}}},
    {"corral_l1_form_bytes", "gauge",
     "Bytes of L1's values by the coding they are kept in (a value keeps "
     "one or more).",
     .samples = {{"coding=\"identity\"", AT(cache.form_bytes[0])},
                 {"coding=\"gzip\"", AT(cache.form_bytes[1])},
                 {"coding=\"br\"", AT(cache.form_bytes[2])}}},
    {"corral_answers_by_coding_total", "counter",
     "Answers with a stored value (200 and 304), by the coding of the "
     "representation sent.",
     .samples = {{"coding=\"identity\"", AT(answers_coded[0])},
                 {"coding=\"gzip\"", AT(answers_coded[1])},
                 {"coding=\"br\"", AT(answers_coded[2])}}},
    {"corral_compression_input_bytes_total", "counter",
     "Body bytes compressed at fill time, by coding: over "
     "corral_compression_output_bytes_total, the compression ratio.",
     .samples = {{"coding=\"gzip\"", AT(encoding.in_bytes[1])},
                 {"coding=\"br\"", AT(encoding.in_bytes[2])}}},
    {"corral_compression_output_bytes_total", "counter",
     "Bytes those compressions made, kept or not (a form that does not pay "
     "is dropped).",
     .samples = {{"coding=\"gzip\"", AT(encoding.out_bytes[1])},
                 {"coding=\"br\"", AT(encoding.out_bytes[2])}}},
    {"corral_compression_cpu_seconds_total", "counter",
     "CPU time spent compressing at fill time (never on a hit).",
     .series = compression_cpu},
    {"corral_l1_max_bytes", "gauge", "The L1 budget, all workers.",
     .samples = {{"", AT(cache.max_bytes)}}},
    {"corral_l1_evictions_total", "counter", "Values evicted from L1 for room.",
     .samples = {{"", AT(cache.evictions)}}},
    {"corral_l1_expirations_total", "counter",
     "Values dropped from L1 past their stale windows.",
     .samples = {{"", AT(cache.expirations)}}},

    /* L2. */
    {"corral_l2_operations_total", "counter", "L2 reads, by result.", true,
     .samples = {{"result=\"hit\"", AT(l2t.hits)},
                 {"result=\"miss\"", AT(l2t.misses)},
                 {"result=\"timeout\"", AT(l2.timeouts)}}},
    {"corral_l2_errors_total", "counter",
     "Redis error replies, lost connections and commands not sent while it "
     "was down.",
     true, .samples = {{"", AT(l2.errors)}}},
    {"corral_l2_bad_values_total", "counter",
     "Values in L2 that were not corral's (or another version).", true,
     .samples = {{"", AT(l2t.bad_values)}}},
    {"corral_l2_rejected_total", "counter",
     "Values read from L2 that failed the route's checks (head, lifetime, "
     "JSON): served from a new fill instead.",
     true, .samples = {{"", AT(cache.tier_rejects)}}},
    {"corral_l2_bad_forms_total", "counter",
     "Answers that could not use a compressed form read from L2, as it did "
     "not decode to its body (checked when first asked for), and went out "
     "in another coding.",
     true, .samples = {{"", AT(bad_forms)}}},
    {"corral_l2_too_large_total", "counter",
     "Values kept out of L2 (or not read from it) for being larger than "
     "l2.max_value_bytes, by where.",
     true,
     .samples = {{"op=\"write\"", AT(l2t.too_large)},
                 {"op=\"read\"", AT(l2t.large_found)}}},
    {"corral_l2_leases_total", "counter",
     "Fleet leases: won by this server, lost (ran out while held), granted "
     "too late and given back.",
     true,
     .samples = {{"result=\"won\"", AT(l2t.leases_won)},
                 {"result=\"lost\"", AT(l2t.leases_lost)},
                 {"result=\"late\"", AT(l2t.late_leases)}}},
    {"corral_l2_purges_queued_total", "counter",
     "Purges Redis did not confirm, kept to be replayed.", true,
     .samples = {{"", AT(l2t.purges_queued)}}},
    {"corral_l2_resyncs_total", "counter",
     "Resyncs after the subscriber was deaf, and of those, the ones that "
     "found purges missed (L1 dropped).",
     true,
     .samples = {{"result=\"replayed\"", .read = resyncs_replayed},
                 {"result=\"lost\"", AT(l2t.resync_losses)}}},
    {"corral_l2_unheard_purges_total", "counter",
     "Resyncs started for a purge logged that this server never heard (a "
     "lost message, applied late): found by the next message, which names "
     "the entry before it, or by the log's last entry, read every second.",
     true, .samples = {{"", AT(l2t.unheard)}}},
    {"corral_l2_reply_duration_seconds", "histogram",
     "Redis commands, from sent to answered (one answered after l2.timeout "
     "too; a timed-out read is also counted in corral_l2_operations_total).",
     true, .series = l2_durations},
    {"corral_l2_connects_total", "counter", "Connections made to Redis.", true,
     .samples = {{"", AT(l2.connects)}}},
    {"corral_l2_sentinel_switches_total", "counter",
     "Times the sentinels named a new Redis primary.", true,
     .samples = {{"", AT(l2.switches)}}},
    {"corral_l2_up", "gauge", "1 when every worker's Redis connection is up.",
     true, true, .samples = {{"", .read = l2_up}}},
    {"corral_l2_moved_total", "counter",
     "Redis Cluster MOVED replies: a slot served by another primary now.", true,
     .samples = {{"", AT(l2.moved)}}},
    {"corral_l2_ask_total", "counter",
     "Redis Cluster ASK replies: a slot being migrated.", true,
     .samples = {{"", AT(l2.ask)}}},
    {"corral_l2_cluster_refreshes_total", "counter",
     "Redis Cluster slot maps read.", true,
     .samples = {{"", AT(l2.refreshes)}}},
    {"corral_l2_cluster_primaries", "gauge",
     "Primaries in the Redis Cluster slot map (0 on one server).", true,
     .series = l2_primaries},

    /* Clients and workers. */
    {"corral_client_connections", "gauge", "Client connections open.",
     .samples = {{"", .read = connections_open}}},
    {"corral_client_connections_total", "counter",
     "Client connections, by what became of them at accept.",
     .samples = {{"result=\"accepted\"", AT(server.accepted)},
                 {"result=\"rejected\"", AT(server.rejected)}}},
    {"corral_client_timeouts_total", "counter",
     "Client connections closed by client_timeout.",
     .samples = {{"", AT(server.timeouts)}}},
    {"corral_bad_requests_total", "counter",
     "Requests refused before routing (400, 431, 505).",
     .samples = {{"", AT(server.bad_requests)}}},
    {"corral_client_protocol_connections_total", "counter",
     "Client connections accepted, by the protocol they spoke.",
     .samples = {{"proto=\"h1\"", AT(server.proto_connections[0])},
                 {"proto=\"h2c\"", AT(server.proto_connections[1])},
                 {"proto=\"h2\"", AT(server.proto_connections[2])}}},
    {"corral_client_protocol_requests_total", "counter",
     "Requests handed to routing, by the protocol they came in.",
     .samples = {{"proto=\"h1\"", AT(server.proto_requests[0])},
                 {"proto=\"h2c\"", AT(server.proto_requests[1])},
                 {"proto=\"h2\"", AT(server.proto_requests[2])}}},
    {"corral_client_tls_connections_total", "counter",
     "Client connections on listen_tls, by how their handshake ended: the "
     "protocol ALPN chose, or failed (also counted by protocol above).",
     .samples = {{"tls=\"1\",proto=\"h1\"", AT(server.tls_connections[0])},
                 {"tls=\"1\",proto=\"h2\"", AT(server.tls_connections[2])},
                 {"tls=\"1\",result=\"failed\"", AT(server.tls_failed)}}},
    {"corral_h2_goaways_total", "counter",
     "HTTP/2 connections ended by a GOAWAY for abuse or a protocol error "
     "(floods, rapid reset, an HPACK bomb, bad frames).",
     .samples = {{"", AT(server.h2_goaways)}}},
    {"corral_workers", "gauge", "Worker processes serving now.",
     .samples = {{"", .read = one}}},
    {"corral_worker_restarts_total", "counter",
     "Workers the supervisor restarted after they died (0 with one worker: "
     "there is no supervisor).",
     .series = worker_restarts},
};

static uint64_t
summed(const struct sample *x, const struct scrape *s)
{
    uint64_t sum = 0;
    for (unsigned i = 0; i < s->nb; i++) {
        uint64_t v;
        if (x->read != NULL)
            v = x->read(s->b[i]);
        else
            memcpy(&v, (const char *)s->b[i] + x->off, sizeof(v));
        sum += v;
    }
    return sum;
}

static void
render(struct evbuffer *o, const struct family *f, const struct scrape *s)
{
    evbuffer_add_printf(o, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help,
                        f->name, f->type);
    if (f->series != NULL) {
        f->series(o, f, s);
        return;
    }
    for (size_t k = 0; k < 3 && f->samples[k].labels != NULL; k++) {
        const struct sample *x = &f->samples[k];
        uint64_t v = summed(x, s);
        if (f->all)
            v = v == s->nb;
        if (*x->labels == '\0')
            evbuffer_add_printf(o, "%s %" PRIu64 "\n", f->name, v);
        else
            evbuffer_add_printf(o, "%s{%s} %" PRIu64 "\n", f->name, x->labels,
                                v);
    }
}

void
corral_admin_metrics_render(struct evbuffer *o, struct corral_metrics *m,
                            const struct corral_config *cfg, uint64_t now_ms)
{
    struct scrape s = {.cfg = cfg, .m = m};
    unsigned nw = corral_metrics_workers(m);
    s.b = xcalloc(nw, sizeof(*s.b));
    for (unsigned i = 0; i < nw; i++) {
        struct corral_metrics_block *x = corral_metrics_block(m, i);
        if (block_live(x))
            s.b[s.nb++] = x;
    }
    s.routes = merged(m, s.b, s.nb, &route_slots, &s.n_routes);
    s.ups = merged(m, s.b, s.nb, &upstream_slots, &s.n_ups);
    const struct corral_breaker_table *t = corral_metrics_breakers(m);
    s.breakers = xcalloc(cfg->n_upstreams + 1, sizeof(*s.breakers));
    s.have_breaker = xcalloc(cfg->n_upstreams + 1, sizeof(*s.have_breaker));
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        s.have_breaker[i] = corral_breaker_table_read(t, cfg->upstreams[i].name,
                                                      now_ms, &s.breakers[i]);
    bool l2 = s.nb > 0 && s.b[0]->l2_enabled;
    for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++)
        if (l2 || !families[f].l2)
            render(o, &families[f], &s);
    free(s.have_breaker);
    free(s.breakers);
    free(s.routes);
    free(s.ups);
    free(s.b);
}

static void
metrics(struct corral_admin *a, struct corral_request *req)
{
    corral_gateway_snapshot(a->g);
    struct evbuffer *o = xcheck(evbuffer_new());
    corral_admin_metrics_render(o, corral_gateway_metrics(a->g),
                                corral_gateway_config(a->g), corral_now_ms());
    size_t len = evbuffer_get_length(o);
    char *text = (char *)evbuffer_pullup(o, -1);
    corral_request_respond_simple(req, 200,
                                  "text/plain; version=0.0.4; charset=utf-8",
                                  NULL, text ? text : "", text ? len : 0);
    evbuffer_free(o);
}

/* ---- routing ---- */

/* The admin's paths: exact, or followed by '/' and an argument. GET
 * endpoints answer HEAD too. */
static const struct {
    const char *path;
    bool under;
    enum corral_method method;
    const char *allow;
    enum corral_admin_op op;
} endpoints[] = {
    {"/healthz", false, CORRAL_METHOD_GET, "GET, HEAD", CORRAL_ADMIN_HEALTHZ},
    {"/metrics", false, CORRAL_METHOD_GET, "GET, HEAD", CORRAL_ADMIN_METRICS},
    {"/cache", true, CORRAL_METHOD_DELETE, "DELETE", CORRAL_ADMIN_PURGE},
    {"/route", true, CORRAL_METHOD_DELETE, "DELETE", CORRAL_ADMIN_PURGE_ROUTE},
    {"/refresh", true, CORRAL_METHOD_POST, "POST", CORRAL_ADMIN_REFRESH},
};

enum corral_admin_op
corral_admin_match(enum corral_method method, const char *path, size_t len,
                   size_t *arg, const char **allow)
{
    for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++) {
        size_t n = strlen(endpoints[i].path);
        bool at = endpoints[i].under
                      ? len > n && memcmp(path, endpoints[i].path, n) == 0 &&
                            path[n] == '/'
                      : len == n && memcmp(path, endpoints[i].path, n) == 0;
        if (!at)
            continue;
        *arg = n;
        *allow = endpoints[i].allow;
        bool get = endpoints[i].method == CORRAL_METHOD_GET &&
                   method == CORRAL_METHOD_HEAD;
        return method == endpoints[i].method || get ? endpoints[i].op
                                                    : CORRAL_ADMIN_NOT_ALLOWED;
    }
    return CORRAL_ADMIN_NOT_FOUND;
}

static void
on_admin(struct corral_request *req, void *arg)
{
    struct corral_admin *a = arg;
    size_t skip = 0;
    const char *allow = NULL;
    char extra[64];
    switch (corral_admin_match(req->method, req->path, req->path_len, &skip,
                               &allow)) {
    case CORRAL_ADMIN_HEALTHZ:
        healthz(a, req);
        return;
    case CORRAL_ADMIN_METRICS:
        metrics(a, req);
        return;
    case CORRAL_ADMIN_PURGE:
        key_op(a, req, skip, true);
        return;
    case CORRAL_ADMIN_PURGE_ROUTE:
        route_purge(a, req, skip);
        return;
    case CORRAL_ADMIN_REFRESH:
        key_op(a, req, skip, false);
        return;
    case CORRAL_ADMIN_NOT_ALLOWED:
        snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
        answer_json(req, 405, extra, "{\"error\":\"method not allowed\"}");
        return;
    case CORRAL_ADMIN_NOT_FOUND:
        break;
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
