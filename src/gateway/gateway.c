/* gateway.c — serving routes: match, answer from L1 with one writev of the
 * value's pre-rendered head, its small dynamic part and its body, or join
 * the key's one fill (fill.c). Every waiter of a fill gets the same
 * answer. */
#include "gateway.h"
#include "log.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"
#include "aggregate.h"
#include "budget.h"
#include "config.h"
#include "corral/cache.h"
#include "corral/redis_tier.h"
#include "fetch.h"
#include "fill.h"
#include "fmt.h"
#include "metrics.h"
#include "route.h"
#include "server.h"
#include "xalloc.h"

/* What one config makes: its routes, upstream pools and budgets. A reload
 * builds a new one and retires the old, which is freed once nothing in
 * flight uses it: no client waits on it and none of its fills runs. They
 * are freed oldest first, since a newer one may share a budget an older
 * one's calls still wait on. */
struct gen {
    const struct corral_config *cfg;
    bool owns_cfg; /* the first is the caller's */
    struct corral_route_table *routes;
    struct corral_fetch_upstream **upstreams; /* by config index */
    struct corral_budget **budgets;           /* by config index; NULL:
                                               * handed to a newer one */
    struct corral_route_fill *route_fill;     /* by config index */
    unsigned *gen_slot; /* by config index: its route generation slot */
    struct corral_aggregate_fill *agg_fill; /* by config index */
    unsigned clients; /* waiting on a fill */
    unsigned jobs;    /* fills in flight, counted by fill.c */
    TAILQ_ENTRY(gen) link;
};
TAILQ_HEAD(gen_list, gen);

struct corral_gateway {
    struct event_base *base;
    const struct corral_config *cfg; /* gen->cfg */
    struct gen *gen;                 /* serving new requests */
    struct gen_list retired;         /* oldest first */
    struct corral_cache *cache;
    struct corral_server *server;
    struct corral_redis_tier *l2;             /* NULL: L1 only */
    struct corral_metrics *metrics;
    bool own_metrics; /* mapped here, for one worker */
    struct corral_metrics_block *block;      /* this worker's */
    struct corral_metrics_route *mroutes;    /* by config index */
    struct corral_metrics_upstream *mups;    /* by config index */
    uint32_t *gens; /* route generations, shared by the workers */
    struct event *snapshot_ev;
    struct corral_access_log *access_log; /* NULL: off */
    const int *bus_fds; /* the workers' purge bus; NULL: none */
    unsigned n_bus, worker;
    struct event *bus_ev; /* this worker's end */
    bool draining;
};

/* A client waiting on a fill. */
struct client {
    struct corral_gateway *g;
    struct gen *gen; /* its route's; kept until it is answered */
    struct corral_request *req;
    struct corral_waiter *waiter;
    size_t route;
    bool gone; /* the connection closed: answer nothing */
};

/* ---- answers ---- */

static void
respond_error_after(struct corral_request *req, int status, const char *error,
                    const char *route, uint64_t retry_after_ms)
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
    char extra[48];
    if (status == 405)
        snprintf(extra, sizeof(extra), "Allow: GET, HEAD\r\n");
    else if (retry_after_ms > 0) /* whole seconds, rounded up */
        snprintf(extra, sizeof(extra), "Retry-After: %llu\r\n",
                 (unsigned long long)((retry_after_ms + 999) / 1000));
    else
        extra[0] = '\0';
    corral_request_respond_simple(req, status, "application/json",
                                  extra[0] ? extra : NULL, body, (size_t)n);
}

static void
respond_error(struct corral_request *req, int status, const char *error,
              const char *route)
{
    respond_error_after(req, status, error, route, 0);
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

/* The header an aggregate assembled with stale members carries. */
#define STALE_MEMBERS "\r\nCorral-Stale-Members:"

/* The result a source counts as. */
static enum corral_metrics_result
result_of(enum corral_source source, bool negative)
{
    switch (source) {
    case CORRAL_SOURCE_STALE:
        return M_STALE;
    case CORRAL_SOURCE_STALE_ERROR:
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

static void
count(struct corral_gateway *g, size_t route, enum corral_metrics_result r)
{
    if (route < corral_metrics_cap_routes(g->metrics))
        g->mroutes[route].results[r]++;
}

static void
respond_value(struct corral_gateway *g, struct corral_request *req,
              size_t route, const struct corral_config_route *rt,
              struct corral_value *v, enum corral_source source)
{
    uint64_t now = corral_cache_now(g->cache);
    int64_t left = corral_value_ttl_s(v, now);
    uint64_t ttl = left > 0 ? (uint64_t)left : 0;
    /* max-age is the whole lifetime: a cache downstream takes Age off it
     * (RFC 9111 4.2), so the remaining ttl there would count age twice. */
    uint64_t lifetime =
        (corral_value_expires_at(v) - corral_value_stored_at(v)) / 1000;
    /* A cached upstream 4xx (negative caching) has its own status line. */
    const char *head = corral_value_aux(v);
    bool negative = corral_value_aux_len(v) > 12 && head[9] != '2';
    /* An aggregate assembled with a stale member says so (aggregate.h). */
    bool stale_members =
        rt->upstream == NULL &&
        memmem(head, corral_value_aux_len(v), STALE_MEMBERS,
               sizeof(STALE_MEMBERS) - 1) != NULL;
    enum corral_metrics_result result = result_of(source, negative);
    count(g, route, result);
    req->note = corral_metrics_result_name(result);
    if (source == CORRAL_SOURCE_STORED || source == CORRAL_SOURCE_COLLAPSED)
        req->upstream_ms = (int64_t)corral_value_fill_ms(v);
    char extra[192]; /* at most 142 bytes */
    char *p = FMT_PUT(extra, "Cache-Status: corral; ");
    switch (source) {
    case CORRAL_SOURCE_STORED:
        p = FMT_PUT(p, "fwd=miss; stored");
        break;
    case CORRAL_SOURCE_COLLAPSED:
        p = FMT_PUT(p, "fwd=miss; collapsed");
        break;
    case CORRAL_SOURCE_STALE: /* ttl=-N: N seconds past expiry */
        p = FMT_PUT(p, "hit; fwd=stale; ttl=-");
        p = fmt_uint(p, left < 0 ? (uint64_t)-left : 0);
        break;
    case CORRAL_SOURCE_STALE_ERROR:
        p = FMT_PUT(p, "hit; fwd=stale; detail=upstream-error");
        break;
    default:
        p = fmt_uint(FMT_PUT(p, "hit; ttl="), ttl);
        if (source == CORRAL_SOURCE_L2 && !negative && !stale_members)
            p = FMT_PUT(p, "; detail=l2");
        break;
    }
    if (stale_members && source != CORRAL_SOURCE_STALE_ERROR)
        p = FMT_PUT(p, "; detail=stale-members");
    if (negative && source != CORRAL_SOURCE_STALE_ERROR)
        p = FMT_PUT(p, "; detail=negative");
    p = FMT_PUT(p, "\r\n");
    p = fmt_uint(FMT_PUT(p, "Age: "), corral_value_age_s(v, now));
    p = fmt_uint(FMT_PUT(p, "\r\nCache-Control: max-age="), lifetime);
    p = FMT_PUT(p, "\r\n");
    int n = (int)(p - extra);
    if (!negative && req->if_none_match &&
        etag_matches(req, corral_value_etag(v))) {
        char more[384];
        snprintf(more, sizeof(more), "ETag: %s\r\n%.*s", corral_value_etag(v),
                 n, extra);
        corral_request_respond_simple(req, 304, NULL, more, NULL, 0);
        return;
    }
    struct corral_response r = {
        .status = 200,
        .head = corral_value_aux(v),
        .head_len = corral_value_aux_len(v),
        .extra = extra,
        .extra_len = (size_t)n,
        .body = corral_value_body(v),
        .body_len = corral_value_len(v),
        .hold = v,
    };
    corral_request_respond(req, &r);
}

/* ---- requests ---- */

static void
client_answered(const struct corral_result *res, void *arg)
{
    struct client *cl = arg;
    if (!cl->gone) {
        corral_request_on_close(cl->req, NULL, NULL);
        const char *route = cl->gen->cfg->routes[cl->route].path;
        if (res->error == 0) {
            respond_value(cl->g, cl->req, cl->route,
                          &cl->gen->cfg->routes[cl->route], res->value,
                          res->source);
        } else if (res->error == -ENODATA) {
            /* An aggregate whose every member failed: the message is the
             * body, each member null and its error listed. */
            count(cl->g, cl->route, M_ERROR);
            corral_request_respond_simple(cl->req, 502, "application/json",
                                          NULL, res->message,
                                          strlen(res->message));
        } else {
            count(cl->g, cl->route, M_ERROR);
            respond_error_after(cl->req, corral_fill_error_status(res->error),
                                res->message, route, res->retry_after_ms);
        }
    }
    cl->gen->clients--;
    free(cl);
}

static void
client_gone(struct corral_request *req, void *arg)
{
    struct client *cl = arg;
    cl->gone = true;
    corral_waiter_cancel(cl->waiter); /* answers and frees cl */
}

/* A route purged as a whole has a generation, folded into its keys:
 * "~<generation>~<key>", so every key it had is out of reach at once (the
 * old values age out of L1 and L2 by themselves). Returns false when the
 * key no longer fits. */
static bool
fold_generation(const struct corral_gateway *g, const struct gen *gen,
                struct corral_route_match *m)
{
    uint32_t n = __atomic_load_n(&g->gens[gen->gen_slot[m->index]],
                                 __ATOMIC_RELAXED);
    if (n == 0)
        return true;
    char pre[16];
    char *p = pre;
    *p++ = '~';
    p = fmt_uint(p, n);
    *p++ = '~';
    size_t plen = (size_t)(p - pre);
    if (m->keylen + plen > sizeof(m->key))
        return false;
    memmove(m->key + plen, m->key, m->keylen);
    memcpy(m->key, pre, plen);
    m->keylen += plen;
    return true;
}

static void
on_request(struct corral_request *req, void *arg)
{
    struct corral_gateway *g = arg;
    struct corral_route_match m;
    struct gen *gen = g->gen;
    int rc = corral_route_match(gen->routes, req->path, req->path_len, req->query,
                                req->query_len, &m);
    if (rc == CORRAL_ROUTE_NOT_FOUND) {
        respond_error(req, 404, "no such route", NULL);
        return;
    }
    if (req->method != CORRAL_METHOD_GET && req->method != CORRAL_METHOD_HEAD) {
        count(g, m.index, M_ERROR);
        respond_error(req, 405, "method not allowed", m.route->path);
        return;
    }
    if (rc == CORRAL_ROUTE_BAD_PARAM || rc == CORRAL_ROUTE_BAD_QUERY) {
        char msg[160];
        snprintf(msg, sizeof(msg), "bad %s parameter: %s",
                 rc == CORRAL_ROUTE_BAD_PARAM ? "path" : "query", m.bad_param);
        count(g, m.index, M_ERROR);
        respond_error(req, 400, msg, m.route->path);
        return;
    }
    if (rc != CORRAL_ROUTE_OK) {
        count(g, m.index, M_ERROR);
        respond_error(req, 400, "request too long for this route",
                      m.route->path);
        return;
    }
    if (!fold_generation(g, gen, &m)) {
        count(g, m.index, M_ERROR);
        respond_error(req, 400, "request too long for this route",
                      m.route->path);
        return;
    }
    struct corral_value *v = corral_cache_peek(g->cache, m.key, m.keylen);
    bool agg = m.route->upstream == NULL;
    if (v) {
        respond_value(g, req, m.index, m.route, v, CORRAL_SOURCE_L1);
        /* A hot key is refreshed before it expires (XFetch). */
        if (corral_cache_early(g->cache, v, m.route->strategy.beta)) {
            if (agg)
                corral_aggregate_refresh(g->cache, &gen->agg_fill[m.index],
                                         m.key, m.keylen, false);
            else
                corral_route_fill_refresh(
                    g->cache, &gen->route_fill[m.index], &m, false);
        }
        return;
    }

    /* A miss: wait on the key's one fill. */
    struct client *cl = xcalloc(1, sizeof(*cl));
    cl->g = g;
    cl->gen = gen;
    cl->req = req;
    cl->route = m.index;
    gen->clients++;
    cl->waiter = agg ? corral_aggregate_get(g->cache, &gen->agg_fill[m.index],
                                            m.key, m.keylen, client_answered,
                                            cl)
                     : corral_route_fill_get(g->cache,
                                             &gen->route_fill[m.index], &m,
                                             client_answered, cl);
    if (cl->waiter == NULL) {
        gen->clients--;
        free(cl);
        count(g, m.index, M_ERROR);
        if (errno == EMSGSIZE)
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
    const char **headers = calloc(u->n_headers * 2 + 1, sizeof(*headers));
    if (headers == NULL)
        return NULL;
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
    b->l2_enabled = g->l2 != NULL;
    if (g->l2)
        corral_redis_tier_stats(g->l2, &b->l2);
    if (g->server)
        corral_server_stats(g->server, &b->server);
    for (size_t i = 0; i < b->nupstreams; i++)
        corral_budget_stats(g->gen->budgets[i], &g->mups[i].budget);
}

static void gen_free(struct gen *gen);

/* An aggregate's member: its path matched against the routes served now,
 * joined to (or starting) that route's fill like any request. */
static struct corral_waiter *
member_get(void *ctx, const struct corral_config_member *mb,
           corral_result_cb *cb, void *arg)
{
    struct corral_gateway *g = ctx;
    struct gen *gen = g->gen;
    const char *q = strchr(mb->path, '?');
    size_t plen = q ? (size_t)(q - mb->path) : strlen(mb->path);
    struct corral_route_match m;
    if (corral_route_match(gen->routes, mb->path, plen, q ? q + 1 : "",
                           q ? strlen(q + 1) : 0, &m) != CORRAL_ROUTE_OK ||
        m.route->upstream == NULL || !fold_generation(g, gen, &m)) {
        errno = EINVAL;
        return NULL;
    }
    return corral_route_fill_get(g->cache, &gen->route_fill[m.index], &m, cb,
                                 arg);
}

static void watch_generations(struct corral_gateway *g,
                              const struct corral_config *cfg);
static void bus_cb(evutil_socket_t fd, short what, void *arg);

/* Frees retired generations nothing uses any more, oldest first. */
static void
sweep_retired(struct corral_gateway *g)
{
    struct gen *old;
    while ((old = TAILQ_FIRST(&g->retired)) != NULL && old->clients == 0 &&
           old->jobs == 0) {
        TAILQ_REMOVE(&g->retired, old, link);
        gen_free(old);
    }
}

static void
snapshot_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_gateway *g = arg;
    corral_gateway_snapshot(g);
    sweep_retired(g);
}

/* Per-route and per-upstream counters start from zero for cfg (at start,
 * and at a reload, which may renumber them). */
static void
metrics_reset(struct corral_gateway *g, const struct corral_config *cfg)
{
    struct corral_metrics *m = g->metrics;
    unsigned cr = corral_metrics_cap_routes(m);
    unsigned cu = corral_metrics_cap_upstreams(m);
    memset(g->mroutes, 0, cr * sizeof(*g->mroutes));
    memset(g->mups, 0, cu * sizeof(*g->mups));
    g->block->nroutes = cfg->n_routes < cr ? (uint32_t)cfg->n_routes : cr;
    g->block->nupstreams =
        cfg->n_upstreams < cu ? (uint32_t)cfg->n_upstreams : cu;
}

/* Takes this worker's block. */
static void
metrics_attach(struct corral_gateway *g, const struct corral_config *cfg,
               unsigned worker)
{
    struct corral_metrics *m = g->metrics;
    g->block = corral_metrics_block(m, worker);
    g->mroutes = corral_metrics_routes(m, g->block);
    g->mups = corral_metrics_upstreams(m, g->block);
    memset(g->block, 0, sizeof(*g->block));
    metrics_reset(g, cfg);
    g->block->pid = getpid();
    g->block->started_s = time(NULL);
}

static void
gen_free(struct gen *gen)
{
    if (gen == NULL)
        return;
    const struct corral_config *cfg = gen->cfg;
    if (gen->upstreams)
        for (size_t i = 0; i < cfg->n_upstreams; i++)
            corral_fetch_upstream_free(gen->upstreams[i]);
    if (gen->budgets)
        for (size_t i = 0; i < cfg->n_upstreams; i++)
            corral_budget_free(gen->budgets[i]);
    free(gen->budgets);
    free(gen->upstreams);
    free(gen->route_fill);
    free(gen->gen_slot);
    free(gen->agg_fill);
    corral_route_table_free(gen->routes);
    if (gen->owns_cfg)
        corral_config_free((struct corral_config *)gen->cfg);
    free(gen);
}

/* The routes, pools and budgets of cfg. An upstream of prev with the same
 * name and rate hands its budget over, so a reload neither forgets the
 * calls in the rate window nor lifts a pause. */
static struct gen *
gen_new(struct corral_gateway *g, const struct corral_config *cfg,
        struct gen *prev, char *err, size_t errlen)
{
    struct gen *gen = xcalloc(1, sizeof(*gen));
    gen->cfg = cfg;
    gen->routes = corral_route_table_new(cfg, err, errlen);
    gen->upstreams = xcalloc(cfg->n_upstreams + 1, sizeof(*gen->upstreams));
    gen->budgets = xcalloc(cfg->n_upstreams + 1, sizeof(*gen->budgets));
    gen->route_fill = xcalloc(cfg->n_routes + 1, sizeof(*gen->route_fill));
    gen->gen_slot = xcalloc(cfg->n_routes + 1, sizeof(*gen->gen_slot));
    gen->agg_fill = xcalloc(cfg->n_routes + 1, sizeof(*gen->agg_fill));
    for (size_t r = 0; r < cfg->n_routes; r++)
        gen->gen_slot[r] = corral_metrics_generation_slot(cfg->routes[r].path);
    if (gen->routes == NULL)
        goto fail;
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const struct corral_config_upstream *u = &cfg->upstreams[i];
        gen->upstreams[i] = upstream_new(g, cfg, u, err, errlen);
        if (gen->upstreams[i] == NULL)
            goto fail;
    }
    /* Nothing can fail from here: budgets move over only now. */
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const struct corral_config_upstream *u = &cfg->upstreams[i];
        for (size_t j = 0; prev && j < prev->cfg->n_upstreams; j++) {
            const struct corral_config_upstream *p = &prev->cfg->upstreams[j];
            if (prev->budgets[j] && strcmp(p->name, u->name) == 0 &&
                p->rate_count == u->rate_count &&
                p->rate_window_ms == u->rate_window_ms) {
                gen->budgets[i] = prev->budgets[j];
                prev->budgets[j] = NULL;
                break;
            }
        }
        if (gen->budgets[i] == NULL)
            gen->budgets[i] = corral_budget_new(
                g->base, u->name, u->rate_count, u->rate_window_ms, g->l2);
    }
    for (size_t r = 0; r < cfg->n_routes; r++) {
        const struct corral_config_route *route = &cfg->routes[r];
        struct corral_route_fill *rc = &gen->route_fill[r];
        rc->route = route;
        rc->jobs = &gen->jobs;
        if (route->upstream == NULL) {
            struct corral_aggregate_fill *af = &gen->agg_fill[r];
            af->route = route;
            af->cache = g->cache;
            af->get = member_get;
            af->get_ctx = g;
            af->jobs = &gen->jobs;
            /* Members time out first; their errors then make the answer. */
            for (size_t i = 0; i < route->n_members; i++) {
                uint64_t t = route->members[i].route->upstream->timeout_ms;
                if (t + 2000 > af->timeout_ms)
                    af->timeout_ms = t + 2000;
            }
        }
        if (route->upstream) {
            size_t u = (size_t)(route->upstream - cfg->upstreams);
            rc->upstream = gen->upstreams[u];
            rc->budget = gen->budgets[u];
            rc->metrics = u < corral_metrics_cap_upstreams(g->metrics)
                              ? &g->mups[u]
                              : NULL;
            rc->timeout_ms = route->upstream->timeout_ms;
        }
    }
    return gen;
fail:
    gen_free(gen);
    return NULL;
}

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
    if (cfg->l2) {
        struct corral_redis_options ro = {
            .host = cfg->l2->redis.host,
            .port = cfg->l2->redis.port,
            .unix_path = cfg->l2->unix_path,
            .db = cfg->l2->db,
            .prefix = cfg->l2->prefix,
            .password = cfg->l2->password,
            .timeout_ms = cfg->l2->timeout_ms,
        };
        g->l2 = corral_redis_tier_new(base, &ro, err, errlen);
        if (g->l2 == NULL) {
            if (g->own_metrics)
                corral_metrics_free(g->metrics);
            free(g);
            return NULL;
        }
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
    metrics_attach(g, cfg, o.worker);
    g->gens = corral_metrics_generations(g->metrics);
    g->gen = gen_new(g, cfg, NULL, err, errlen);
    if (g->gen == NULL)
        goto fail;
    watch_generations(g, cfg);
    if (cfg->access_log) {
        g->access_log =
            corral_access_log_open(base, cfg->access_log, err, errlen);
        if (g->access_log == NULL)
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
        .has_listen_fd = listen_fd >= 0,
        .listen_fd = listen_fd,
    };
    g->server = corral_server_new(base, &so, on_request, g, err, errlen);
    if (g->server == NULL)
        goto fail;
    g->bus_fds = o.bus_fds;
    g->n_bus = o.n_bus;
    g->worker = o.worker;
    if (g->bus_fds != NULL && o.worker < o.n_bus) {
        g->bus_ev = event_new(base, g->bus_fds[2 * o.worker + 1],
                              EV_READ | EV_PERSIST, bus_cb, g);
        if (g->bus_ev == NULL || event_add(g->bus_ev, NULL) != 0)
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

static bool
same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) ||
           (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Says which settings of cfg differ from the running ones but only take
 * effect at a restart: the cache, L2, the client socket, limits and the
 * log. (The admin follows a reload: reactor.c.) */
static void
warn_restart(const struct corral_config *old, const struct corral_config *cfg)
{
    const char *what[8];
    size_t n = 0;
    if (!same_str(old->listen.host, cfg->listen.host) ||
        old->listen.port != cfg->listen.port)
        what[n++] = "listen";
    if (old->workers != cfg->workers)
        what[n++] = "workers";
    if (!same_str(old->access_log, cfg->access_log))
        what[n++] = "access_log";
    if (old->l1_max_bytes != cfg->l1_max_bytes)
        what[n++] = "l1";
    if ((old->l2 == NULL) != (cfg->l2 == NULL) ||
        (old->l2 &&
         (!same_str(old->l2->redis.host, cfg->l2->redis.host) ||
          old->l2->redis.port != cfg->l2->redis.port ||
          !same_str(old->l2->unix_path, cfg->l2->unix_path) ||
          !same_str(old->l2->prefix, cfg->l2->prefix) ||
          !same_str(old->l2->password, cfg->l2->password) ||
          old->l2->db != cfg->l2->db ||
          old->l2->timeout_ms != cfg->l2->timeout_ms)))
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
    /* gen_new() takes the running one's budgets only once nothing can
     * fail any more: a failure leaves everything as it was. */
    struct gen *gen = gen_new(g, cfg, g->gen, err, errlen);
    if (gen == NULL)
        return -1;
    gen->owns_cfg = true;
    metrics_reset(g, cfg);
    warn_restart(g->cfg, cfg);
    TAILQ_INSERT_TAIL(&g->retired, g->gen, link);
    g->gen = gen;
    g->cfg = cfg;
    watch_generations(g, cfg);
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
    corral_redis_tier_stats(g->l2, &st);
    return corral_redis_state_name(st.state);
}

/* The route and key a request for path?query would use. */
static int
admin_match(struct corral_gateway *g, const char *path, size_t path_len,
            const char *query, size_t query_len, struct corral_route_match *m,
            char *key, size_t keycap)
{
    int rc = corral_route_match(g->gen->routes, path, path_len, query,
                                query_len, m);
    if (rc == CORRAL_ROUTE_NOT_FOUND)
        return -ENOENT;
    if (rc != CORRAL_ROUTE_OK)
        return -EINVAL;
    if (!fold_generation(g, g->gen, m))
        return -EINVAL;
    if (keycap > 0)
        snprintf(key, keycap, "%.*s", (int)m->keylen, m->key);
    return 0;
}

/* Another instance purged a route (or this one learns it at connect). */
static void
note_heard(const char *name, size_t len, uint64_t value, void *arg)
{
    struct corral_gateway *g = arg;
    char path[512];
    if (len >= sizeof(path) || value > UINT32_MAX)
        return;
    memcpy(path, name, len);
    path[len] = '\0';
    uint32_t *slot = &g->gens[corral_metrics_generation_slot(path)];
    uint32_t cur = __atomic_load_n(slot, __ATOMIC_RELAXED);
    while (cur < value &&
           !__atomic_compare_exchange_n(slot, &cur, (uint32_t)value, false,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

/* With l2: learn the routes' generations, now and at every reconnect. */
static void
watch_generations(struct corral_gateway *g, const struct corral_config *cfg)
{
    if (g->l2 == NULL)
        return;
    const char **names = xcalloc(cfg->n_routes + 1, sizeof(*names));
    for (size_t r = 0; r < cfg->n_routes; r++)
        names[r] = cfg->routes[r].path;
    corral_redis_tier_watch_notes(g->l2, names, cfg->n_routes, note_heard, g);
    free(names);
}

int64_t
corral_gateway_purge_route(struct corral_gateway *g, const char *path)
{
    const struct corral_config *cfg = g->cfg;
    for (size_t r = 0; r < cfg->n_routes; r++) {
        if (strcmp(cfg->routes[r].path, path) != 0)
            continue;
        uint32_t n = __atomic_add_fetch(&g->gens[g->gen->gen_slot[r]], 1,
                                        __ATOMIC_RELAXED);
        if (g->l2)
            corral_redis_tier_note(g->l2, path, n);
        return n;
    }
    return -ENOENT;
}

int
corral_gateway_purge(struct corral_gateway *g, const char *path,
                     size_t path_len, const char *query, size_t query_len,
                     char *key, size_t keycap)
{
    struct corral_route_match m;
    int rc = admin_match(g, path, path_len, query, query_len, &m, key, keycap);
    if (rc < 0)
        return rc;
    /* Without l2 the other workers hear of it on the bus (with l2, the
     * invalidation through Redis reaches them). */
    for (unsigned i = 0; g->l2 == NULL && g->bus_fds && i < g->n_bus; i++)
        if (i != g->worker &&
            send(g->bus_fds[2 * i], m.key, m.keylen, MSG_DONTWAIT) < 0)
            corral_log(CORRAL_LOG_WARNING,
                       "purge bus: worker %u did not hear a purge", i);
    return corral_invalidate(g->cache, m.key, m.keylen);
}

/* Another worker purged keys: drop them here too. */
static void
bus_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_gateway *g = arg;
    char key[CORRAL_KEY_MAX];
    ssize_t n;
    while ((n = recv(fd, key, sizeof(key), MSG_DONTWAIT)) > 0)
        corral_invalidate(g->cache, key, (size_t)n);
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
        rc = corral_aggregate_refresh(g->cache, &g->gen->agg_fill[m.index],
                                      m.key, m.keylen, true);
    else
        rc = corral_route_fill_refresh(g->cache,
                                       &g->gen->route_fill[m.index], &m, true);
    return rc == -EMSGSIZE ? -EINVAL : rc;
}

void
corral_gateway_free(struct corral_gateway *g)
{
    if (g == NULL)
        return;
    if (g->snapshot_ev)
        event_free(g->snapshot_ev);
    if (g->bus_ev)
        event_free(g->bus_ev);
    if (g->block)
        g->block->pid = 0;
    corral_server_free(g->server);
    corral_access_log_free(g->access_log);
    corral_cache_free(g->cache);
    /* Budgets go before the tier: an answer Redis owes frees one. */
    struct gen *old;
    while ((old = TAILQ_FIRST(&g->retired)) != NULL) {
        TAILQ_REMOVE(&g->retired, old, link);
        gen_free(old);
    }
    gen_free(g->gen);
    if (g->l2)
        corral_redis_tier_watch_notes(g->l2, NULL, 0, NULL, NULL);
    corral_redis_tier_free(g->l2); /* after the cache and budgets */
    if (g->own_metrics)
        corral_metrics_free(g->metrics);
    free(g);
}
