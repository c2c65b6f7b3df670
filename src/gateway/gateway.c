/* gateway.c — serving routes: match, answer from L1 with one writev of the
 * value's pre-rendered head, its small dynamic part and its body, or join
 * the key's one fill (compute.c). Every waiter of a fill gets the same
 * answer. Also the serving sets a reload replaces, and the wiring of the
 * modules one reactor runs: L2 and the fleet, route generations
 * (generations.c), the workers' purge bus (purge_bus.c). */
#include "gateway.h"
#include "log.h"

#include <errno.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"
#include "aggregate.h"
#include "breaker.h"
#include "budget.h"
#include "config.h"
#include "corral/cache.h"
#include "encoding.h"
#include "corral/redis.h"
#include "corral/redis_tier.h"
#include "fetch.h"
#include "compute.h"
#include "fleet.h"
#include "fmt.h"
#include "generations.h"
#include "ledger.h"
#include "metrics.h"
#include "purge_bus.h"
#include "route.h"
#include "server.h"
#include "timeutil.h"
#include "tls.h"
#include "xalloc.h"

/* A serving set: what one config makes, its routes, upstream pools,
 * budgets and breakers. A reload builds a new one and retires the old,
 * which is freed
 * once nothing in flight uses it: no client waits on it and none of its
 * fills runs. They are freed oldest first, since a newer one may share a
 * budget an older one's calls still wait on. */
struct serving {
    struct corral_gateway *g;
    const struct corral_config *cfg;
    bool owns_cfg;                            /* the first is the caller's */
    const struct corral_route_table *routes;  /* cfg's */
    struct corral_fetch_upstream **upstreams; /* by config index */
    struct corral_budget **budgets;           /* by config index; NULL:
                                               * handed to a newer one */
    struct corral_budget **keys; /* by route index: its new_keys; or NULL */
    struct corral_breaker **breakers;           /* by config index; their
                                                 * state is the server's */
    struct corral_route_compute *route_compute; /* by config index */
    /* This worker's counters of each route and upstream, kept under their
     * names; NULL: that one has no series (see metrics.h). */
    struct corral_metrics_route **mroute;       /* by config index */
    struct corral_metrics_upstream **mupstream; /* by config index */
    unsigned *generation_slot; /* by config index (generations.h) */
    struct corral_aggregate_compute *agg_compute; /* by config index */
    unsigned clients;                             /* waiting on a fill */
    unsigned jobs; /* fills holding its routes: from a fill's start
                    * (reading L2, waiting on another instance) to its
                    * end, counted by compute.c and aggregate.c */
    TAILQ_ENTRY(serving) link;
};
TAILQ_HEAD(serving_list, serving);

struct corral_gateway {
    struct event_base *base;
    const struct corral_config *cfg; /* serving->cfg */
    struct serving *serving;         /* takes new requests */
    struct serving_list retired;     /* oldest first */
    struct corral_cache *cache;
    struct corral_server *server;
    struct corral_tls *tls;       /* listen_tls's certificate; NULL: none */
    struct corral_redis *redis;   /* NULL: L1 only */
    struct corral_redis_tier *l2; /* L2, on redis */
    struct corral_fleet *fleet;   /* pauses, windows, generations, on redis */
    struct corral_metrics *metrics;
    bool own_metrics;             /* mapped here, for one worker */
    struct corral_ledger *ledger; /* the upstreams' rates and pauses */
    bool own_ledger;
    struct corral_metrics_block *block; /* this worker's */
    struct corral_generations *generations;
    struct event *snapshot_ev;
    struct corral_access_log *access_log; /* NULL: off */
    struct corral_purge_bus *bus;         /* NULL: one worker */
    bool draining;
};

/* A client waiting on a fill. */
struct client {
    struct corral_gateway *g;
    struct serving *serving; /* its route's; kept until it is answered */
    struct corral_request *req;
    struct corral_waiter *waiter;
    size_t route;
    bool gone;        /* the connection closed: answer nothing */
    bool only_cached; /* only-if-cached: a stored value or 504, no fill */
};

/* ---- answers ---- */

/* Header lines an error answer of a route's cache carries: Cache-Status
 * with detail (NULL: none), and Retry-After in whole seconds, rounded up
 * (0 ms: none). Returns the end of what it wrote in out (room for 128;
 * detail is one of the short words below). */
static char *
error_headers(char *out, const char *detail, uint64_t retry_after_ms)
{
    char *p = out;
    if (detail != NULL) {
        p = FMT_PUT(p, "Cache-Status: corral; fwd=miss; detail=");
        p = fmt_put(p, detail, strlen(detail));
        p = FMT_PUT(p, "\r\n");
    }
    if (retry_after_ms > 0) {
        p = FMT_PUT(p, "Retry-After: ");
        p = fmt_uint(p, (retry_after_ms + 999) / 1000);
        p = FMT_PUT(p, "\r\n");
    }
    *p = '\0';
    return p;
}

/* An error JSON body; with detail, an answer of the route's cache (see
 * error_headers()). */
static void
respond_error_cached(struct corral_request *req, int status, const char *error,
                     const char *route, const char *detail,
                     uint64_t retry_after_ms)
{
    char e[512], r[512], body[1200];
    fmt_json_escape(e, sizeof(e), error);
    int n;
    if (route) {
        fmt_json_escape(r, sizeof(r), route);
        n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"route\":\"%s\"}",
                     e, r);
    } else {
        n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", e);
    }
    char extra[128];
    if (status == 405)
        snprintf(extra, sizeof(extra), "Allow: GET, HEAD\r\n");
    else
        error_headers(extra, detail, retry_after_ms);
    corral_request_respond_simple(req, status, "application/json",
                                  extra[0] ? extra : NULL, body, (size_t)n);
}

static void
respond_error(struct corral_request *req, int status, const char *error,
              const char *route)
{
    respond_error_cached(req, status, error, route, NULL, 0);
}

/* What Cache-Status says of a fill's error: remembered while the key
 * backs off, or what made it. */
static const char *
error_detail(const struct corral_result *res)
{
    if (res->source == CORRAL_SOURCE_BACKOFF)
        return "backoff";
    switch (res->error) {
    case -EBUSY: /* paused by its Retry-After, or over its rate */
        return "upstream-busy";
    case -EAGAIN:
        return "too-many-waiters";
    case -ECANCELED:
        return "cancelled";
    default:
        return "upstream-error";
    }
}

/* Does If-None-Match name this ETag (or "*")? Weak comparison, as RFC 9110
 * asks for If-None-Match. */
static bool
etag_matches(const struct corral_request *req, const char *etag)
{
    const char *p = req->if_none_match, *end = p + req->inm_len;
    size_t elen = strlen(etag);
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        if (p < end && *p == '*')
            return true;
        if (end - p >= 2 && p[0] == 'W' && p[1] == '/')
            p += 2;
        const char *q = p;
        while (q < end && *q != ',')
            q++;
        const char *t = q;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - p) == elen && memcmp(p, etag, elen) == 0)
            return true;
        p = q;
    }
    return false;
}

/* The result a source counts as. */
static enum corral_metrics_result
result_of(enum corral_source source, bool negative)
{
    switch (source) {
    case CORRAL_SOURCE_STALE:
        return M_STALE;
    case CORRAL_SOURCE_STALE_ERROR:
    case CORRAL_SOURCE_STALE_RETRY:
    case CORRAL_SOURCE_BACKOFF:
        return M_STALE_ERROR;
    default:
        break;
    }
    if (negative)
        return M_NEGATIVE;
    switch (source) {
    case CORRAL_SOURCE_L2:
        return M_L2_HIT;
    case CORRAL_SOURCE_STORED:
        return M_STORED;
    case CORRAL_SOURCE_COLLAPSED:
        return M_COLLAPSED;
    default:
        return M_HIT;
    }
}

/* Counts an answer of the route with index route in sv's config. */
static void
count(const struct serving *sv, size_t route, enum corral_metrics_result r)
{
    struct corral_metrics_route *mr = sv->mroute[route];
    if (mr)
        mr->results[r]++;
}

/* The hit path, kept in one piece (over 80 lines) on purpose: each step
 * (the count, the Cache-Status detail and ttl, Age, a 304, the writev)
 * reads the same locals, and splitting it would hand them all around on
 * the path where every call is counted against a hit's cost. */
static void
respond_value(struct corral_gateway *g, const struct serving *sv,
              struct corral_request *req, size_t route, struct corral_value *v,
              enum corral_source source)
{
    uint64_t now = corral_cache_now(g->cache);
    int64_t left = corral_value_ttl_s(v, now);
    /* max-age is the whole lifetime: a cache downstream takes Age off it
     * (RFC 9111 4.2), so the remaining ttl there would count age twice.
     * A fresh value lives at least a second there: 0 would be "stale". */
    uint64_t lifetime =
        (corral_value_expires_at(v) - corral_value_stored_at(v)) / 1000;
    if (lifetime == 0 && now < corral_value_expires_at(v))
        lifetime = 1;
    /* A cached upstream 4xx (negative caching) has its own status line;
     * an aggregate assembled with a stale member says so (aggregate.h). */
    uint8_t flags = corral_value_flags(v);
    bool negative = flags & CORRAL_COMPUTE_NEGATIVE;
    bool stale_members = flags & CORRAL_COMPUTE_STALE_MEMBERS;
    /* What the upstream said must not be stored: its fill's clients get
     * it, and tell the caches after them the same. */
    bool pass =
        (source == CORRAL_SOURCE_STORED || source == CORRAL_SOURCE_COLLAPSED) &&
        corral_value_nostore(v);
    enum corral_metrics_result result = result_of(source, negative);
    if (pass)
        result = source == CORRAL_SOURCE_STORED ? M_UNCACHEABLE : M_COLLAPSED;
    count(sv, route, result);
    /* An answer this request did not fill: a call saved. */
    if (source == CORRAL_SOURCE_L1 || source == CORRAL_SOURCE_L2 ||
        source == CORRAL_SOURCE_COLLAPSED || source == CORRAL_SOURCE_STALE ||
        source == CORRAL_SOURCE_STALE_RETRY)
        g->block->saved++;
    req->note = corral_metrics_result_name(result);
    if (source == CORRAL_SOURCE_STORED || source == CORRAL_SOURCE_COLLAPSED)
        req->upstream_ms = (int64_t)corral_value_fill_ms(v);
    char extra[192]; /* at most 160 bytes */
    char *p = FMT_PUT(extra, "Cache-Status: corral; ");
    /* One detail at most: why a copy is stale, else what the value is. */
    const char *detail = negative                     ? "negative"
                         : stale_members              ? "stale-members"
                         : source == CORRAL_SOURCE_L2 ? "l2"
                                                      : NULL;
    switch (source) {
    case CORRAL_SOURCE_STORED:
        p = FMT_PUT(p, "fwd=miss");
        if (!pass)
            p = FMT_PUT(p, "; stored");
        break;
    case CORRAL_SOURCE_COLLAPSED:
        p = FMT_PUT(p, "fwd=miss; collapsed");
        break;
    case CORRAL_SOURCE_STALE:
    case CORRAL_SOURCE_STALE_RETRY:
    case CORRAL_SOURCE_STALE_ERROR:
    case CORRAL_SOURCE_BACKOFF:
        /* ttl=-N: N whole seconds past expiry, at least 1. */
        p = FMT_PUT(p, "hit; fwd=stale; ttl=-");
        p = fmt_uint(p, left < 0 ? (uint64_t)-left : 1);
        detail = source == CORRAL_SOURCE_STALE_ERROR ? "upstream-error"
                 : source == CORRAL_SOURCE_BACKOFF   ? "backoff"
                                                     : "revalidating";
        break;
    default:
        p = fmt_uint(FMT_PUT(p, "hit; ttl="), left > 0 ? (uint64_t)left : 0);
        break;
    }
    if (pass) /* what this answer is says more than how it came */
        detail = "uncacheable";
    if (detail != NULL) {
        p = FMT_PUT(p, "; detail=");
        p = fmt_put(p, detail, strlen(detail));
    }
    p = FMT_PUT(p, "\r\n");
    if (pass) {
        p = FMT_PUT(p, "Cache-Control: private, no-store\r\n");
    } else {
        p = fmt_uint(FMT_PUT(p, "Age: "), corral_value_age_s(v, now));
        p = fmt_uint(FMT_PUT(p, "\r\nCache-Control: max-age="), lifetime);
        p = FMT_PUT(p, "\r\n");
    }
    int n = (int)(p - extra);
    /* The representation: the coding the client prefers among those v
     * keeps, identity always (decoded when its bytes are not kept). */
    unsigned codings = corral_compute_codings(v);
    enum corral_coding coding = corral_accept_choose(&req->accept, codings);
    while (!corral_compute_form_ok(v, coding)) {
        /* A form read from L2 that does not decode to its body: never
         * served, the next coding instead (identity at the latest). */
        g->block->bad_forms++;
        codings &= ~(1u << coding);
        coding = corral_accept_choose(&req->accept, codings);
    }
    g->block->answers_coded[coding]++;
    if (!negative && req->if_none_match) {
        char etag[CORRAL_COMPUTE_ETAG_MAX];
        corral_compute_etag(v, coding, etag);
        if (etag_matches(req, etag)) {
            char more[384];
            snprintf(more, sizeof(more),
                     "ETag: %s\r\nVary: Accept-Encoding\r\n%.*s", etag, n,
                     extra);
            corral_request_respond_simple(req, 304, NULL, more, NULL, 0);
            return;
        }
    }
    size_t hlen, blen;
    const char *body = corral_value_form(v, coding, &blen);
    struct corral_value *w = NULL;
    if (body == NULL && req->method != CORRAL_METHOD_HEAD) {
        /* The first client of v that takes no coding: its identity bytes
         * decoded once, and kept with it in L1 for the ones that follow
         * (memory only for the values such clients ask for). */
        w = corral_compute_with_identity(v);
        if (w == NULL) {
            respond_error(req, 502, "stored value does not decode", NULL);
            return;
        }
        corral_cache_replace(g->cache, v, w);
        v = w;
        body = corral_value_body(w);
        blen = corral_value_len(w);
    }
    const char *head = corral_compute_head(v, coding, &hlen);
    struct corral_response r = {
        .status = 200,
        .head = head,
        .head_len = hlen,
        .extra = extra,
        .extra_len = (size_t)n,
        .body = body,
        .body_len = blen,
        .hold = v,
    };
    corral_request_respond(req, &r);
    corral_value_unref(w);
}

/* ---- requests ---- */

static void
client_answered(const struct corral_result *res, void *arg)
{
    struct client *cl = arg;
    if (!cl->gone) {
        corral_request_on_close(cl->req, NULL, NULL);
        const char *route = cl->serving->cfg->routes[cl->route].path;
        if (res->error == 0) {
            respond_value(cl->g, cl->serving, cl->req, cl->route, res->value,
                          res->source);
        } else if (cl->only_cached) {
            count(cl->serving, cl->route, M_ERROR);
            respond_error_cached(cl->req, 504, "not cached (only-if-cached)",
                                 route, "only-if-cached", 0);
        } else if (res->error == -ENODATA) {
            /* An aggregate whose every member failed: the message is the
             * body, each member null and its error listed. */
            count(cl->serving, cl->route, M_ERROR);
            char extra[128];
            error_headers(extra, error_detail(res), res->retry_after_ms);
            corral_request_respond_simple(cl->req, 502, "application/json",
                                          extra, res->message,
                                          strlen(res->message));
        } else {
            count(cl->serving, cl->route, M_ERROR);
            respond_error_cached(
                cl->req, corral_compute_error_status(res->error), res->message,
                route, error_detail(res), res->retry_after_ms);
        }
    }
    cl->serving->clients--;
    free(cl);
}

static void
client_gone(struct corral_request *req, void *arg)
{
    struct client *cl = arg;
    cl->gone = true;
    corral_waiter_cancel(cl->waiter); /* answers and frees cl */
}

/* m's key with its route's generation (generations.h). False when the
 * key no longer fits. */
static bool
fold_generation(const struct corral_gateway *g, const struct serving *sv,
                struct corral_route_match *m)
{
    return corral_generations_fold(g->generations,
                                   sv->generation_slot[m->index], m->key,
                                   &m->keylen, sizeof(m->key)) == 0;
}

/* Is v, read from L2, fit to serve on the route arg? */
static bool
stored_fit(const struct corral_value *v, uint64_t now_ms, void *arg)
{
    return corral_compute_fit(arg, v, now_ms);
}

/* A client request, from match to answer or wait. Over 80 lines: one
 * refusal per way a request can fail to match, each with its own status,
 * then hit, refresh or wait, in the order the request meets them. */
static void
on_request(struct corral_request *req, void *arg)
{
    struct corral_gateway *g = arg;
    struct corral_route_match m;
    struct serving *sv = g->serving;
    enum corral_route_status st = corral_route_match(
        sv->routes, req->path, req->path_len, req->query, req->query_len, &m);
    if (st == CORRAL_ROUTE_NOT_FOUND) {
        respond_error(req, 404, "no such route", NULL);
        return;
    }
    if (req->method != CORRAL_METHOD_GET && req->method != CORRAL_METHOD_HEAD) {
        count(sv, m.index, M_ERROR);
        respond_error(req, 405, "method not allowed", m.route->path);
        return;
    }
    if (st == CORRAL_ROUTE_BAD_PARAM || st == CORRAL_ROUTE_BAD_QUERY) {
        char msg[160];
        snprintf(msg, sizeof(msg), "bad %s parameter: %s",
                 st == CORRAL_ROUTE_BAD_PARAM ? "path" : "query", m.bad_param);
        count(sv, m.index, M_ERROR);
        respond_error(req, 400, msg, m.route->path);
        return;
    }
    if (st != CORRAL_ROUTE_OK) {
        count(sv, m.index, M_ERROR);
        respond_error(req, 400, "request too long for this route",
                      m.route->path);
        return;
    }
    if (!fold_generation(g, sv, &m)) {
        count(sv, m.index, M_ERROR);
        respond_error(req, 400, "request too long for this route",
                      m.route->path);
        return;
    }
    struct corral_value *v = corral_cache_peek(g->cache, m.key, m.keylen);
    bool agg = m.route->upstream == NULL;
    if (v) {
        /* A hot key is refreshed before it expires (XFetch). Asked
         * first: answering may put a copy in v's place (and free v). */
        bool early = corral_cache_early(g->cache, v, m.route->strategy.beta);
        respond_value(g, sv, req, m.index, v, CORRAL_SOURCE_L1);
        if (early) {
            if (agg)
                corral_aggregate_refresh(g->cache, &sv->agg_compute[m.index],
                                         m.key, m.keylen, false);
            else
                corral_route_compute_refresh(
                    g->cache, &sv->route_compute[m.index], &m, false);
        }
        return;
    }

    /* A miss: wait on the key's one fill. */
    struct client *cl = xcalloc(1, sizeof(*cl));
    int rc;
    cl->g = g;
    cl->serving = sv;
    cl->req = req;
    cl->route = m.index;
    sv->clients++;
    if (req->only_if_cached) {
        /* RFC 9111 5.2.1.7: a value stored fresh (L1, L2), else 504;
         * never a fill. */
        cl->only_cached = true;
        cl->waiter = corral_get_fit(g->cache, m.key, m.keylen, stored_fit,
                                    (void *)m.route, client_answered, cl);
        rc = cl->waiter != NULL ? 0 : -ESHUTDOWN;
    } else {
        rc = agg ? corral_aggregate_get(g->cache, &sv->agg_compute[m.index],
                                        m.key, m.keylen, client_answered, cl,
                                        &cl->waiter)
                 : corral_route_compute_get(g->cache,
                                            &sv->route_compute[m.index], &m,
                                            client_answered, cl, &cl->waiter);
    }
    if (rc < 0) {
        sv->clients--;
        free(cl);
        count(sv, m.index, M_ERROR);
        if (rc == -EMSGSIZE)
            respond_error(req, 400, "request too long for this route",
                          m.route->path);
        else
            respond_error(req, 503, "shutting down", m.route->path);
        return;
    }
    corral_request_on_close(req, client_gone, cl);
}

/* ---- lifecycle ---- */

static struct corral_fetch_upstream *
upstream_new(struct corral_gateway *g, const struct corral_config *cfg,
             const struct corral_config_upstream *u, char *err, size_t errlen)
{
    const char **headers = xcalloc(u->n_headers * 2 + 1, sizeof(*headers));
    for (size_t i = 0; i < u->n_headers; i++) {
        headers[2 * i] = u->headers[i].name;
        headers[2 * i + 1] = u->headers[i].value;
    }
    struct corral_fetch_options o = {
        .scheme = u->tls ? "https" : "http",
        .host = u->host,
        .port = u->port,
        .timeout_ms = u->timeout_ms,
        .max_connections = u->max_connections,
        .max_body = cfg->limits.max_body_bytes,
        .ca_file = u->ca_file,
        .headers = headers,
    };
    char why[256];
    struct corral_fetch_upstream *f =
        corral_fetch_upstream_new(g->base, &o, why, sizeof(why));
    if (f == NULL)
        snprintf(err, errlen, "upstream %s: %s", u->name, why);
    free(headers);
    return f;
}

/* Copies the modules' stats into this worker's block. */
void
corral_gateway_snapshot(struct corral_gateway *g)
{
    struct corral_metrics_block *b = g->block;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    b->updated_ms = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    corral_cache_stats(g->cache, &b->cache);
    corral_encoding_stats(&b->encoding);
    b->l2_enabled = g->l2 != NULL;
    if (g->l2) {
        corral_redis_stats(g->redis, &b->l2);
        corral_redis_tier_stats(g->l2, &b->l2t);
    }
    if (g->server)
        corral_server_stats(g->server, &b->server);
    const struct serving *sv = g->serving;
    for (size_t i = 0; sv && i < sv->cfg->n_upstreams; i++) {
        struct corral_metrics_upstream *u = sv->mupstream[i];
        if (u == NULL)
            continue;
        struct corral_budget_stats now, *was = &u->budget_before;
        corral_budget_stats(sv->budgets[i], &now);
        now.granted += was->granted;
        now.waited += was->waited;
        now.refused += was->refused;
        now.pauses += was->pauses;
        now.fleet_errors += was->fleet_errors;
        u->budget = now;
    }
}

static void serving_free(struct serving *sv);

/* An aggregate's member: the match its path resolved to when the config
 * loaded (in the aggregate's serving set), joined to (or starting) that
 * route's fill like any request. */
static int
member_get(void *ctx, const struct corral_config_member *mb,
           corral_result_cb *cb, void *arg, struct corral_waiter **out)
{
    struct serving *sv = ctx;
    struct corral_gateway *g = sv->g;
    /* A copy for the generation's prefix; its values stay the config's. */
    struct corral_route_match m = *mb->match;
    if (!fold_generation(g, sv, &m))
        return -EINVAL;
    return corral_route_compute_get(g->cache, &sv->route_compute[m.index], &m,
                                    cb, arg, out);
}

static void track(struct corral_gateway *g, const struct corral_config *cfg);
static void bus_heard(const char *key, size_t len, void *arg);

/* Frees retired serving sets nothing uses any more, oldest first. */
static void
sweep_retired(struct corral_gateway *g)
{
    struct serving *old;
    while ((old = TAILQ_FIRST(&g->retired)) != NULL && old->clients == 0 &&
           old->jobs == 0) {
        TAILQ_REMOVE(&g->retired, old, link);
        serving_free(old);
    }
}

static void
snapshot_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_gateway *g = arg;
    corral_gateway_snapshot(g);
    sweep_retired(g);
}

/* Takes this worker's block, zeroed. */
static void
metrics_attach(struct corral_gateway *g, unsigned worker)
{
    g->block = corral_metrics_block(g->metrics, worker);
    corral_metrics_block_clear(g->metrics, g->block);
    g->block->pid = getpid();
    g->block->started_s = time(NULL);
}

static void
serving_free(struct serving *sv)
{
    if (sv == NULL)
        return;
    const struct corral_config *cfg = sv->cfg;
    if (sv->upstreams)
        for (size_t i = 0; i < cfg->n_upstreams; i++)
            corral_fetch_upstream_free(sv->upstreams[i]);
    if (sv->budgets)
        for (size_t i = 0; i < cfg->n_upstreams; i++)
            corral_budget_free(sv->budgets[i]);
    free(sv->budgets);
    for (size_t r = 0; sv->keys && r < cfg->n_routes; r++)
        corral_budget_free(sv->keys[r]);
    free(sv->keys);
    for (size_t i = 0; sv->breakers && i < cfg->n_upstreams; i++)
        corral_breaker_free(sv->breakers[i]);
    free(sv->breakers);
    free(sv->upstreams);
    for (size_t r = 0; sv->mroute && r < cfg->n_routes; r++)
        corral_metrics_route_release(sv->mroute[r]);
    for (size_t i = 0; sv->mupstream && i < cfg->n_upstreams; i++)
        corral_metrics_upstream_release(sv->mupstream[i]);
    free(sv->mroute);
    free(sv->mupstream);
    free(sv->route_compute);
    free(sv->generation_slot);
    free(sv->agg_compute);
    if (sv->owns_cfg)
        corral_config_free((struct corral_config *)sv->cfg);
    free(sv);
}

/* Takes this worker's counters for sv's routes and upstreams, by name:
 * a route or upstream that a reload keeps keeps its counts. One without
 * room (or with too long a name) has none, and the log says so. */
static void
metrics_take(struct corral_gateway *g, struct serving *sv)
{
    const struct corral_config *cfg = sv->cfg;
    sv->mroute = xcalloc(cfg->n_routes + 1, sizeof(*sv->mroute));
    sv->mupstream = xcalloc(cfg->n_upstreams + 1, sizeof(*sv->mupstream));
    for (size_t r = 0; r < cfg->n_routes; r++) {
        const char *path = cfg->routes[r].path;
        sv->mroute[r] = corral_metrics_route_take(g->metrics, g->block, path);
        if (sv->mroute[r] == NULL)
            corral_log(CORRAL_LOG_WARNING,
                       "metrics: route %s has no series (%s)", path,
                       strlen(path) >= CORRAL_METRICS_NAME_MAX
                           ? "its path is too long"
                           : "no room left until a restart");
    }
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const char *name = cfg->upstreams[i].name;
        sv->mupstream[i] =
            corral_metrics_upstream_take(g->metrics, g->block, name);
        if (sv->mupstream[i] == NULL)
            corral_log(CORRAL_LOG_WARNING,
                       "metrics: upstream %s has no series (%s)", name,
                       strlen(name) >= CORRAL_METRICS_NAME_MAX
                           ? "its name is too long"
                           : "no room left until a restart");
    }
}

/* sv's budgets: prev's of an upstream with the same name and rate (with
 * the calls it queues), else new ones. */
static void
take_budgets(struct corral_gateway *g, struct serving *sv, struct serving *prev)
{
    const struct corral_config *cfg = sv->cfg;
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const struct corral_config_upstream *u = &cfg->upstreams[i];
        for (size_t j = 0; prev && j < prev->cfg->n_upstreams; j++) {
            const struct corral_config_upstream *p = &prev->cfg->upstreams[j];
            if (prev->budgets[j] && strcmp(p->name, u->name) == 0 &&
                p->rate_count == u->rate_count &&
                p->rate_window_ms == u->rate_window_ms &&
                p->refresh_share == u->refresh_share) {
                sv->budgets[i] = prev->budgets[j];
                prev->budgets[j] = NULL;
                break;
            }
        }
        if (sv->budgets[i] == NULL) {
            struct corral_budget_rate rate = {
                .count = u->rate_count,
                .window_ms = u->rate_window_ms,
                .refresh_share = u->refresh_share,
            };
            sv->budgets[i] = corral_budget_new(g->base, NULL, u->name, &rate,
                                               g->fleet, g->ledger);
            /* A new budget counts from zero: its upstream's counters go on
             * from what they last showed. */
            struct corral_metrics_upstream *mu = sv->mupstream[i];
            if (mu) {
                mu->budget_before = mu->budget;
                mu->budget_before.queued = 0;
            }
        }
    }
}

/* Each route's compute (or an aggregate's) on its upstream's pool, budget
 * and breaker, and its new-keys budget. */
static void
wire_routes(struct corral_gateway *g, struct serving *sv)
{
    const struct corral_config *cfg = sv->cfg;
    for (size_t r = 0; r < cfg->n_routes; r++) {
        const struct corral_config_route *route = &cfg->routes[r];
        struct corral_route_compute *rc = &sv->route_compute[r];
        rc->route = route;
        rc->jobs = &sv->jobs;
        if (route->new_keys_count > 0) {
            /* Kept in the ledger under the route's path, which no
             * upstream name can be. */
            struct corral_budget_rate rate = {
                .count = route->new_keys_count,
                .window_ms = route->new_keys_window_ms,
            };
            sv->keys[r] = corral_budget_new(g->base, NULL, route->path, &rate,
                                            NULL, g->ledger);
            rc->keys = sv->keys[r];
        }
        if (route->upstream == NULL) {
            struct corral_aggregate_compute *af = &sv->agg_compute[r];
            af->route = route;
            af->cache = g->cache;
            af->get = member_get;
            af->get_ctx = sv;
            af->jobs = &sv->jobs;
            /* Members time out first; their errors then make the answer. */
            for (size_t i = 0; i < route->n_members; i++) {
                uint64_t t = route->members[i].route->upstream->timeout_ms;
                if (t + 2000 > af->timeout_ms)
                    af->timeout_ms = t + 2000;
            }
        }
        if (route->upstream) {
            size_t u = (size_t)(route->upstream - cfg->upstreams);
            rc->upstream = sv->upstreams[u];
            rc->budget = sv->budgets[u];
            rc->breaker = sv->breakers[u];
            rc->metrics = sv->mupstream[u];
            rc->timeout_ms = route->upstream->timeout_ms;
        }
    }
}

/* The routes, pools and budgets of cfg. An upstream of prev with the same
 * name and rate hands its budget over with the calls it queues; the
 * window and the pause are the ledger's, kept by name whatever the
 * reload does (see ledger.h). */
static struct serving *
serving_new(struct corral_gateway *g, const struct corral_config *cfg,
            struct serving *prev, char *err, size_t errlen)
{
    struct serving *sv = xcalloc(1, sizeof(*sv));
    sv->g = g;
    sv->cfg = cfg;
    sv->routes = cfg->table;
    sv->upstreams = xcalloc(cfg->n_upstreams + 1, sizeof(*sv->upstreams));
    sv->budgets = xcalloc(cfg->n_upstreams + 1, sizeof(*sv->budgets));
    sv->breakers = xcalloc(cfg->n_upstreams + 1, sizeof(*sv->breakers));
    sv->route_compute = xcalloc(cfg->n_routes + 1, sizeof(*sv->route_compute));
    sv->generation_slot =
        xcalloc(cfg->n_routes + 1, sizeof(*sv->generation_slot));
    sv->agg_compute = xcalloc(cfg->n_routes + 1, sizeof(*sv->agg_compute));
    for (size_t r = 0; r < cfg->n_routes; r++)
        sv->generation_slot[r] =
            corral_generations_slot(g->generations, cfg->routes[r].path);
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const struct corral_config_upstream *u = &cfg->upstreams[i];
        sv->upstreams[i] = upstream_new(g, cfg, u, err, errlen);
        if (sv->upstreams[i] == NULL)
            goto fail;
    }
    /* Nothing can fail from here: budgets and counters move over only
     * now. */
    metrics_take(g, sv);
    take_budgets(g, sv, prev);
    sv->keys = xcalloc(cfg->n_routes + 1, sizeof(*sv->keys));
    /* A breaker's state lives in the mapping every worker shares, under
     * its upstream's name: a reload keeps it. */
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const struct corral_config_upstream *u = &cfg->upstreams[i];
        struct corral_breaker_options bo = {
            .name = u->name,
            .failures = u->breaker_failures,
            .step_min_ms = cfg->limits.backoff_min_ms,
            .step_max_ms = cfg->limits.backoff_max_ms,
            .hold_ms = u->timeout_ms + 2000,
        };
        sv->breakers[i] = corral_breaker_new(
            corral_metrics_breakers(g->metrics), &bo, g->fleet);
    }
    wire_routes(g, sv);
    return sv;
fail:
    serving_free(sv);
    return NULL;
}

static int l2_start(struct corral_gateway *g, const struct corral_config *cfg,
                    char *err, size_t errlen);

/* Over 80 lines: the setup order is the point (metrics and ledger, L2 and
 * the fleet, the cache on it, the serving set, the front end, the bus),
 * one failure exit for all. */
struct corral_gateway *
corral_gateway_new(struct event_base *base, const struct corral_config *cfg,
                   const struct corral_gateway_options *opts, char *err,
                   size_t errlen)
{
    struct corral_gateway_options o = {.listen_fd = -1};
    if (opts)
        o = *opts;
    int listen_fd = o.listen_fd;
    /* What every failure below says unless a step gives its own reason. */
    snprintf(err, errlen, "out of memory");
    struct corral_gateway *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->base = base;
    g->cfg = cfg;
    TAILQ_INIT(&g->retired);
    g->metrics = o.metrics;
    if (g->metrics == NULL) {
        g->metrics = corral_metrics_new(1, cfg->n_routes, cfg->n_upstreams);
        g->own_metrics = true;
        o.worker = 0;
        if (g->metrics == NULL) {
            free(g);
            return NULL;
        }
    }
    g->generations =
        corral_generations_new(base, corral_metrics_generations(g->metrics),
                               CORRAL_METRICS_GENERATIONS);
    if (g->generations == NULL) {
        corral_gateway_free(g);
        return NULL;
    }
    g->ledger = o.ledger;
    if (g->ledger == NULL) {
        g->ledger = corral_ledger_new(cfg->n_upstreams + cfg->n_routes);
        g->own_ledger = true;
        if (g->ledger == NULL) {
            corral_gateway_free(g);
            return NULL;
        }
    }
    if (cfg->l2 && l2_start(g, cfg, err, errlen) < 0) {
        corral_gateway_free(g);
        return NULL;
    }
    struct corral_cache_options co = {
        .max_bytes = cfg->l1_max_bytes,
        .max_waiters = cfg->limits.max_waiters,
        .backoff_min_ms = cfg->limits.backoff_min_ms,
        .backoff_max_ms = cfg->limits.backoff_max_ms,
        .tier = g->l2 ? &corral_redis_tier_ops : NULL,
        .tier_ctx = g->l2,
    };
    g->cache = corral_cache_new(base, &co);
    if (g->cache == NULL)
        goto fail;
    metrics_attach(g, o.worker);
    g->serving = serving_new(g, cfg, NULL, err, errlen);
    if (g->serving == NULL)
        goto fail;
    track(g, cfg);
    if (cfg->access_log) {
        g->access_log =
            corral_access_log_open(base, cfg->access_log, err, errlen);
        if (g->access_log == NULL)
            goto fail;
    }
    if (cfg->listen_tls) {
        g->tls = corral_tls_new(cfg->listen_tls->cert, cfg->listen_tls->key,
                                err, errlen);
        if (g->tls == NULL)
            goto fail;
    }
    struct corral_server_options so = {
        .access_cb = g->access_log ? corral_access_log_write : NULL,
        .access_arg = g->access_log,
        .host = cfg->listen.host,
        .port = cfg->listen.port,
        .max_header_bytes = cfg->limits.max_header_bytes,
        .client_timeout_ms = cfg->limits.client_timeout_ms,
        .max_clients = cfg->limits.max_clients,
        .max_queued_bytes = cfg->limits.max_queued_bytes,
        .max_client_queued_bytes = cfg->limits.max_client_queued_bytes,
        .max_streams = cfg->limits.max_streams,
        .has_listen_fd = listen_fd >= 0,
        .listen_fd = listen_fd,
        .tls = g->tls,
        .tls_host = cfg->listen_tls ? cfg->listen_tls->listen.host : NULL,
        .tls_port = cfg->listen_tls ? cfg->listen_tls->listen.port : 0,
        /* Workers share the client port through the supervisor's socket;
         * each binds the TLS port itself, beside the others. */
        .reuse_port = listen_fd >= 0,
    };
    g->server = corral_server_new(base, &so, on_request, g, err, errlen);
    if (g->server == NULL)
        goto fail;
    if (o.bus_fds != NULL && o.worker < o.n_bus) {
        g->bus = corral_purge_bus_new(base, o.bus_fds, o.n_bus, o.worker,
                                      bus_heard, g);
        if (g->bus == NULL)
            goto fail;
    }
    g->snapshot_ev = event_new(base, -1, EV_PERSIST, snapshot_cb, g);
    struct timeval second = {1, 0};
    if (g->snapshot_ev == NULL || event_add(g->snapshot_ev, &second) != 0)
        goto fail;
    corral_gateway_snapshot(g);
    return g;
fail:
    corral_gateway_free(g);
    return NULL;
}

uint16_t
corral_gateway_port(const struct corral_gateway *g)
{
    return corral_server_port(g->server);
}

uint16_t
corral_gateway_tls_port(const struct corral_gateway *g)
{
    return corral_server_tls_port(g->server);
}

static bool
same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) ||
           (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool
same_addrs(const struct corral_config_addr *a, size_t na,
           const struct corral_config_addr *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (!same_str(a[i].host, b[i].host) || a[i].port != b[i].port)
            return false;
    return true;
}

static bool
same_sentinel(const struct corral_config_sentinel *a,
              const struct corral_config_sentinel *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return same_str(a->master, b->master) && same_str(a->user, b->user) &&
           same_str(a->password, b->password) &&
           same_addrs(a->nodes, a->n_nodes, b->nodes, b->n_nodes);
}

/* Says which settings of cfg differ from the running ones but only take
 * effect at a restart: the cache, L2, the client socket, limits and the
 * log. (The admin follows a reload: reactor.c.) */
static void
warn_restart(const struct corral_config *old, const struct corral_config *cfg)
{
    const char *what[9];
    size_t n = 0;
    if (!same_str(old->listen.host, cfg->listen.host) ||
        old->listen.port != cfg->listen.port)
        what[n++] = "listen";
    if ((old->listen_tls == NULL) != (cfg->listen_tls == NULL) ||
        (old->listen_tls &&
         (!same_str(old->listen_tls->listen.host,
                    cfg->listen_tls->listen.host) ||
          old->listen_tls->listen.port != cfg->listen_tls->listen.port)))
        what[n++] = "listen_tls.listen";
    if (old->workers != cfg->workers)
        what[n++] = "workers";
    if (!same_str(old->access_log, cfg->access_log))
        what[n++] = "access_log";
    if (old->l1_max_bytes != cfg->l1_max_bytes)
        what[n++] = "l1";
    if ((old->l2 == NULL) != (cfg->l2 == NULL) ||
        (old->l2 && (!same_str(old->l2->redis.host, cfg->l2->redis.host) ||
                     old->l2->redis.port != cfg->l2->redis.port ||
                     !same_str(old->l2->unix_path, cfg->l2->unix_path) ||
                     !same_str(old->l2->prefix, cfg->l2->prefix) ||
                     !same_str(old->l2->user, cfg->l2->user) ||
                     !same_str(old->l2->password, cfg->l2->password) ||
                     old->l2->db != cfg->l2->db ||
                     old->l2->timeout_ms != cfg->l2->timeout_ms ||
                     old->l2->max_value_bytes != cfg->l2->max_value_bytes ||
                     !same_sentinel(old->l2->sentinel, cfg->l2->sentinel) ||
                     !same_addrs(old->l2->cluster, old->l2->n_cluster,
                                 cfg->l2->cluster, cfg->l2->n_cluster))))
        what[n++] = "l2";
    if (memcmp(&old->limits, &cfg->limits, sizeof(cfg->limits)) != 0)
        what[n++] = "limits";
    if (old->drain_timeout_ms != cfg->drain_timeout_ms)
        what[n++] = "drain_timeout";
    for (size_t i = 0; i < n; i++)
        corral_log(CORRAL_LOG_WARNING,
                   "reload: %s changed; it takes effect at the "
                   "next restart",
                   what[i]);
}

int
corral_gateway_reload(struct corral_gateway *g, struct corral_config *cfg,
                      char *err, size_t errlen)
{
    /* The certificate first: a bad one fails the reload before anything
     * changed, and the running one stays. */
    if (g->tls && cfg->listen_tls &&
        corral_tls_reload(g->tls, cfg->listen_tls->cert, cfg->listen_tls->key,
                          err, errlen) < 0)
        return -EINVAL;
    /* serving_new() takes the running one's budgets only once nothing can
     * fail any more: a failure leaves everything as it was. */
    struct serving *sv = serving_new(g, cfg, g->serving, err, errlen);
    if (sv == NULL)
        return -EINVAL;
    sv->owns_cfg = true;
    warn_restart(g->cfg, cfg);
    TAILQ_INSERT_TAIL(&g->retired, g->serving, link);
    g->serving = sv;
    g->cfg = cfg;
    track(g, cfg);
    sweep_retired(g);
    return 0;
}

void
corral_gateway_drain(struct corral_gateway *g, void (*done)(void *arg),
                     void *arg)
{
    g->draining = true;
    corral_server_drain(g->server, done, arg);
}

void
corral_gateway_drain_expire(struct corral_gateway *g)
{
    /* A restarted server is usually back within a second; behind a load
     * balancer, another instance answers sooner. */
    corral_server_drain_expire(g->server, 1);
}

int
corral_gateway_reopen_log(struct corral_gateway *g, char *err, size_t errlen)
{
    return g->access_log ? corral_access_log_reopen(g->access_log, err, errlen)
                         : 0;
}

bool
corral_gateway_draining(const struct corral_gateway *g)
{
    return g->draining;
}

const struct corral_config *
corral_gateway_config(const struct corral_gateway *g)
{
    return g->cfg;
}

struct corral_metrics *
corral_gateway_metrics(const struct corral_gateway *g)
{
    return g->metrics;
}

const char *
corral_gateway_l2_state(const struct corral_gateway *g)
{
    if (g->l2 == NULL)
        return "disabled";
    struct corral_redis_stats st;
    corral_redis_stats(g->redis, &st);
    return corral_redis_state_name(st.state);
}

/* The route and key a request for path?query would use. */
static int
admin_match(struct corral_gateway *g, const char *path, size_t path_len,
            const char *query, size_t query_len, struct corral_route_match *m,
            char *key, size_t keycap)
{
    enum corral_route_status st = corral_route_match(
        g->serving->routes, path, path_len, query, query_len, m);
    if (st == CORRAL_ROUTE_NOT_FOUND)
        return -ENOENT;
    if (st != CORRAL_ROUTE_OK)
        return -EINVAL;
    if (!fold_generation(g, g->serving, m))
        return -EINVAL;
    if (keycap > 0)
        snprintf(key, keycap, "%.*s", (int)m->keylen, m->key);
    return 0;
}

/* ---- the fleet ---- */

static void
fleet_generation(const char *path, uint64_t value, void *arg)
{
    struct corral_gateway *g = arg;
    corral_generations_raise(g->generations, path, value);
}

static uint64_t
fleet_current(const char *path, void *arg)
{
    const struct corral_gateway *g = arg;
    return corral_generations_current(g->generations, path);
}

/* A route purge raises the route's generation in every instance. */
static void
fleet_send(void *ctx, const char *path, uint64_t here,
           corral_generations_sent_cb *cb, void *arg)
{
    corral_fleet_bump(ctx, path, here, cb, arg);
}

/* The index of the upstream called name in the config served, or -1
 * (none, or still starting: the fleet's next sync tells it again). */
static ptrdiff_t
served_upstream(const struct corral_gateway *g, const char *name)
{
    if (g->serving == NULL)
        return -1;
    const struct corral_config *cfg = g->serving->cfg;
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        if (strcmp(cfg->upstreams[i].name, name) == 0)
            return (ptrdiff_t)i;
    return -1;
}

/* Another instance paused an upstream: its budget here pauses too. */
static void
fleet_paused(const char *name, uint64_t ms, void *arg)
{
    struct corral_gateway *g = arg;
    ptrdiff_t i = served_upstream(g, name);
    if (i >= 0)
        corral_budget_paused(g->serving->budgets[i], ms);
}

/* The fleet's word on an upstream's breaker. */
static void
fleet_breaker(const char *name, uint64_t ms, uint64_t step_ms, void *arg)
{
    struct corral_gateway *g = arg;
    ptrdiff_t i = served_upstream(g, name);
    if (i >= 0)
        corral_breaker_heard(g->serving->breakers[i], ms, step_ms,
                             corral_now_ms());
}

static const struct corral_fleet_events fleet_events = {
    .paused = fleet_paused,
    .breaker = fleet_breaker,
    .generation = fleet_generation,
    .current = fleet_current,
};

/* The routes and upstreams whose fleet state to keep. */
static void
track(struct corral_gateway *g, const struct corral_config *cfg)
{
    if (g->fleet == NULL)
        return;
    const char **paths = xcalloc(cfg->n_routes + 1, sizeof(*paths));
    const char **names = xcalloc(cfg->n_upstreams + 1, sizeof(*names));
    for (size_t r = 0; r < cfg->n_routes; r++)
        paths[r] = cfg->routes[r].path;
    for (size_t u = 0; u < cfg->n_upstreams; u++)
        names[u] = cfg->upstreams[u].name;
    corral_fleet_track(g->fleet, paths, cfg->n_routes, names, cfg->n_upstreams);
    free(paths);
    free(names);
}

static void
ready_timeout(evutil_socket_t fd, short what, void *arg)
{
    *(bool *)arg = true;
}

static void
wait_ready(struct corral_gateway *g, uint64_t ms)
{
    bool expired = false;
    struct event *t = evtimer_new(g->base, ready_timeout, &expired);
    struct timeval tv = corral_ms_to_tv(ms);
    if (t == NULL || evtimer_add(t, &tv) != 0)
        abort(); /* the policy of xalloc.h */
    while (!expired &&
           !(corral_redis_ready(g->redis) && corral_redis_listening(g->redis)))
        event_base_loop(g->base, EVLOOP_ONCE);
    event_free(t);
}

/* With l2: the connection, the tier and the fleet state on it. Before
 * serving, the route generations Redis holds (a blocking read at start,
 * bounded), so a new instance keys as the running ones do; an AUTH or
 * SELECT that Redis refuses is a configuration error. */
static int
l2_start(struct corral_gateway *g, const struct corral_config *cfg, char *err,
         size_t errlen)
{
    const struct corral_config_l2 *l = cfg->l2;
    struct corral_redis_options ro = {
        .host = l->redis.host,
        .port = l->redis.port,
        .unix_path = l->unix_path,
        .db = l->db,
        .user = l->user,
        .password = l->password,
        .timeout_ms = l->timeout_ms,
    };
    struct corral_redis_node *nodes = NULL;
    const struct corral_config_sentinel *sl = l->sentinel;
    const struct corral_config_addr *addrs = sl ? sl->nodes : l->cluster;
    size_t n_addrs = sl ? sl->n_nodes : l->n_cluster;
    if (n_addrs > 0) {
        if ((nodes = calloc(n_addrs, sizeof(*nodes))) == NULL) {
            snprintf(err, errlen, "l2: out of memory");
            return -1;
        }
        for (size_t i = 0; i < n_addrs; i++) {
            nodes[i].host = addrs[i].host;
            nodes[i].port = addrs[i].port;
        }
        ro.host = NULL;
        ro.port = 0;
    }
    if (sl != NULL) {
        ro.master = sl->master;
        ro.sentinels = nodes;
        ro.n_sentinels = sl->n_nodes;
        ro.sentinel_user = sl->user;
        ro.sentinel_password = sl->password;
    } else if (l->n_cluster > 0) {
        ro.cluster = nodes;
        ro.n_cluster = l->n_cluster;
    }
    char why[256], gens[600];
    uint64_t ms = 4 * l->timeout_ms > 1000 ? 4 * l->timeout_ms : 1000;
    snprintf(gens, sizeof(gens), "%s" CORRAL_FLEET_GENS, l->prefix);
    const char *argv[2] = {"HGETALL", gens};
    redisReply *rep = NULL;
    int rc = corral_redis_probe(&ro, ms, 2, argv, &rep, why, sizeof(why));
    if (rc == -EINVAL) {
        snprintf(err, errlen, "l2: Redis refused %s", why);
        free(nodes);
        return -1;
    }
    if (rc < 0)
        corral_log(CORRAL_LOG_WARNING,
                   "l2: no answer from Redis at start (%s): serving from L1 "
                   "and the upstreams until it answers",
                   why);
    for (size_t i = 0;
         rep && rep->type == REDIS_REPLY_ARRAY && i + 1 < rep->elements; i += 2)
        if (rep->element[i]->type == REDIS_REPLY_STRING &&
            rep->element[i + 1]->type == REDIS_REPLY_STRING)
            corral_generations_raise(
                g->generations, rep->element[i]->str,
                strtoull(rep->element[i + 1]->str, NULL, 10));
    if (rep)
        freeReplyObject(rep);
    g->redis = corral_redis_new(g->base, &ro, err, errlen);
    free(nodes); /* copied */
    if (g->redis == NULL)
        return -1;
    struct corral_redis_tier_options to = {
        .prefix = l->prefix,
        .db = l->db,
        .max_value_bytes = l->max_value_bytes,
    };
    g->l2 = corral_redis_tier_new(g->base, g->redis, &to, err, errlen);
    if (g->l2 == NULL)
        return -1;
    g->fleet = corral_fleet_new(g->base, g->redis, l->prefix, l->db,
                                corral_redis_tier_id(g->l2), &fleet_events, g);
    corral_generations_use_fleet(g->generations, fleet_send, g->fleet);
    /* A Redis that answered the probe: serve once both connections are
     * up (bounded), so the first requests already fill as one fleet
     * rather than each process on its own. Nothing else is on the loop
     * yet. */
    if (rc == 0)
        wait_ready(g, ms);
    return 0;
}

int
corral_gateway_purge_route(struct corral_gateway *g, const char *path,
                           corral_gateway_purged_cb *cb, void *arg)
{
    const struct corral_config *cfg = g->cfg;
    for (size_t r = 0; r < cfg->n_routes; r++) {
        if (strcmp(cfg->routes[r].path, path) != 0)
            continue;
        corral_generations_purge(g->generations, path, cb, arg);
        return 0;
    }
    return -ENOENT;
}

struct key_purge {
    corral_gateway_purged_cb *cb;
    void *arg;
};

static void
key_purged(int error, void *arg)
{
    struct key_purge *kp = arg;
    kp->cb(error, 0, kp->arg);
    free(kp);
}

int
corral_gateway_purge(struct corral_gateway *g, const char *path,
                     size_t path_len, const char *query, size_t query_len,
                     char *key, size_t keycap, corral_gateway_purged_cb *cb,
                     void *arg)
{
    struct corral_route_match m;
    int rc = admin_match(g, path, path_len, query, query_len, &m, key, keycap);
    if (rc < 0)
        return rc;
    /* The other workers of this server hear of it on the bus at once,
     * whatever Redis does. */
    if (g->bus != NULL)
        corral_purge_bus_send(g->bus, m.key, m.keylen);
    struct key_purge *kp = xmalloc(sizeof(*kp));
    kp->cb = cb;
    kp->arg = arg;
    return corral_purge(g->cache, m.key, m.keylen, key_purged, kp);
}

/* Another worker purged keys: drop them here too (it told Redis). */
static void
bus_heard(const char *key, size_t len, void *arg)
{
    struct corral_gateway *g = arg;
    corral_invalidate_local(g->cache, key, len);
}

int
corral_gateway_refresh(struct corral_gateway *g, const char *path,
                       size_t path_len, const char *query, size_t query_len,
                       char *key, size_t keycap)
{
    struct corral_route_match m;
    int rc = admin_match(g, path, path_len, query, query_len, &m, key, keycap);
    if (rc < 0)
        return rc;
    if (m.route->upstream == NULL)
        rc = corral_aggregate_refresh(
            g->cache, &g->serving->agg_compute[m.index], m.key, m.keylen, true);
    else
        rc = corral_route_compute_refresh(
            g->cache, &g->serving->route_compute[m.index], &m, true);
    return rc == -EMSGSIZE ? -EINVAL : rc;
}

void
corral_gateway_free(struct corral_gateway *g)
{
    if (g == NULL)
        return;
    if (g->snapshot_ev)
        event_free(g->snapshot_ev);
    corral_purge_bus_free(g->bus);
    if (g->block)
        g->block->pid = 0;
    corral_server_free(g->server);
    corral_tls_free(g->tls);
    corral_access_log_free(g->access_log);
    corral_cache_free(g->cache);
    /* Budgets go before the tier: an answer Redis owes frees one. */
    struct serving *old;
    while ((old = TAILQ_FIRST(&g->retired)) != NULL) {
        TAILQ_REMOVE(&g->retired, old, link);
        serving_free(old);
    }
    serving_free(g->serving);
    /* After the cache and budgets, which give their leases and
     * admissions back through them; the connection last. */
    corral_fleet_free(g->fleet);
    corral_redis_tier_free(g->l2);
    corral_redis_free(g->redis);
    corral_generations_free(g->generations);
    if (g->own_metrics)
        corral_metrics_free(g->metrics);
    /* After every budget, fleet answers included, closed its account. */
    if (g->own_ledger)
        corral_ledger_free(g->ledger);
    free(g);
}
