/* test-admin.c — the admin's pieces without a listener: which endpoint a
 * method and path reach (405 and 404 included), the bearer token check,
 * and the Prometheus text rendered from a fixed snapshot of two workers'
 * blocks (summed, routes and upstreams merged by name, L2 shown only
 * with l2, every family once). */
#include <event2/buffer.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "breaker.h"
#include "config.h"
#include "metrics.h"
#include "testlib.h"

static enum corral_admin_op
op(enum corral_method method, const char *path, size_t *arg, const char **allow)
{
    size_t a = 0;
    const char *al = NULL;
    enum corral_admin_op o =
        corral_admin_match(method, path, strlen(path), &a, &al);
    if (arg)
        *arg = a;
    if (allow)
        *allow = al;
    return o;
}

static void
test_match(void)
{
    size_t arg;
    const char *allow;
    CHECK_EQ_INT(op(CORRAL_METHOD_GET, "/healthz", NULL, NULL),
                 CORRAL_ADMIN_HEALTHZ);
    CHECK_EQ_INT(op(CORRAL_METHOD_HEAD, "/healthz", NULL, NULL),
                 CORRAL_ADMIN_HEALTHZ);
    CHECK_EQ_INT(op(CORRAL_METHOD_GET, "/metrics", NULL, NULL),
                 CORRAL_ADMIN_METRICS);
    CHECK_EQ_INT(op(CORRAL_METHOD_POST, "/metrics", NULL, &allow),
                 CORRAL_ADMIN_NOT_ALLOWED);
    CHECK_EQ_STR(allow, "GET, HEAD");
    CHECK_EQ_INT(op(CORRAL_METHOD_DELETE, "/cache/api/btc", &arg, NULL),
                 CORRAL_ADMIN_PURGE);
    CHECK_EQ_INT(arg, 6); /* "/api/btc" */
    CHECK_EQ_INT(op(CORRAL_METHOD_GET, "/cache/api/btc", NULL, &allow),
                 CORRAL_ADMIN_NOT_ALLOWED);
    CHECK_EQ_STR(allow, "DELETE");
    CHECK_EQ_INT(op(CORRAL_METHOD_DELETE, "/route/api/%7Bcoin%7D", &arg, NULL),
                 CORRAL_ADMIN_PURGE_ROUTE);
    CHECK_EQ_INT(arg, 6);
    CHECK_EQ_INT(op(CORRAL_METHOD_POST, "/refresh/api/btc", &arg, NULL),
                 CORRAL_ADMIN_REFRESH);
    CHECK_EQ_INT(arg, 8);
    CHECK_EQ_INT(op(CORRAL_METHOD_DELETE, "/refresh/api/btc", NULL, &allow),
                 CORRAL_ADMIN_NOT_ALLOWED);
    CHECK_EQ_STR(allow, "POST");
    /* A prefix needs its '/' and something after it. */
    CHECK_EQ_INT(op(CORRAL_METHOD_DELETE, "/cache", NULL, NULL),
                 CORRAL_ADMIN_NOT_FOUND);
    CHECK_EQ_INT(op(CORRAL_METHOD_DELETE, "/cachex/a", NULL, NULL),
                 CORRAL_ADMIN_NOT_FOUND);
    CHECK_EQ_INT(op(CORRAL_METHOD_GET, "/healthz/", NULL, NULL),
                 CORRAL_ADMIN_NOT_FOUND);
    CHECK_EQ_INT(op(CORRAL_METHOD_GET, "/", NULL, NULL),
                 CORRAL_ADMIN_NOT_FOUND);
}

static int
auth(const char *token, const char *header)
{
    return corral_admin_authorize(token, header, header ? strlen(header) : 0);
}

static void
test_authorize(void)
{
    CHECK_EQ_INT(auth("s3cret", "Bearer s3cret"), 0);
    CHECK_EQ_INT(auth("s3cret", "bearer s3cret"), 0); /* scheme: any case */
    CHECK_EQ_INT(auth("s3cret", NULL), 401);
    CHECK_EQ_INT(auth("s3cret", "Bearer s3cre"), 401);
    CHECK_EQ_INT(auth("s3cret", "Bearer s3cret2"), 401);
    CHECK_EQ_INT(auth("s3cret", "Bearer S3cret"), 401);
    CHECK_EQ_INT(auth("s3cret", "Basic s3cret"), 401);
    CHECK_EQ_INT(auth("s3cret", "Bearer"), 401);
    CHECK_EQ_INT(auth("s3cret", "s3cret"), 401);
    /* No token configured: purge and refresh are off for everyone. */
    CHECK_EQ_INT(auth(NULL, "Bearer s3cret"), 403);
    CHECK_EQ_INT(auth("", "Bearer "), 403);
}

static const char conf[] =
    "{ \"listen\": \"127.0.0.1:1\",\n"
    "  \"upstreams\": { \"u\": { \"base\": \"http://127.0.0.1:9\" } },\n"
    "  \"routes\": [ { \"path\": \"/r\", \"upstream\": \"u\",\n"
    "                  \"fetch\": \"/x\" } ] }\n";

/* Two workers' blocks as a scrape finds them. */
static struct corral_metrics *
snapshot(bool l2)
{
    struct corral_metrics *m = corral_metrics_new(2, 1, 1);
    CHECK(m != NULL);
    for (unsigned w = 0; w < 2; w++) {
        struct corral_metrics_block *b = corral_metrics_block(m, w);
        b->pid = getpid();
        b->l2_enabled = l2;
        b->saved = 3 + w;
        b->cache.fills_in_flight = 1;
        b->cache.fills_ok = 10 + w;
        b->cache.fills_failed = 2;
        b->cache.fills_timed_out = 1;
        b->cache.refreshes = 5;
        b->cache.early_refreshes = 2;
        b->cache.entries = 7;
        b->cache.bytes = 700;
        b->cache.max_bytes = 1000;
        b->cache.form_bytes[CORRAL_CODING_GZIP] = 300;
        b->answers_coded[CORRAL_CODING_BR] = 6 + w;
        b->bad_forms = 2 + w;
        b->encoding.in_bytes[CORRAL_CODING_GZIP] = 5000;
        b->encoding.out_bytes[CORRAL_CODING_GZIP] = 1000;
        b->encoding.cpu_us = 1500000 + w;
        b->l2t.hits = 4;
        b->l2t.resyncs = 3;
        b->l2t.resync_losses = 1;
        b->l2t.unheard = 1 + w;
        b->l2.state = w == 0 ? CORRAL_REDIS_UP : CORRAL_REDIS_DOWN;
        b->l2.switches = 1 + w;
        b->l2.moved = 5 + w;
        b->l2.replies = 4;                 /* 300 µs, 300, 2 ms, 300 ms */
        b->l2.reply_us = 300900 + w * 100; /* ... and 100 µs more on w 1 */
        for (int k = 2; k < 11; k++)       /* within 500 µs and up */
            b->l2.reply_le[k] = k < 4 ? 2 : 3;
        b->l2.ask = 2;
        b->l2.primaries = 3 + w; /* one worker read a map with a 4th */
        b->server.open = 2;
        b->server.accepted = 9;
        b->server.tls_connections[CORRAL_PROTO_H2] = 3;
        b->server.tls_failed = 1;
        struct corral_metrics_route *r = corral_metrics_route_take(m, b, "/r");
        CHECK(r != NULL);
        r->results[M_HIT] = 5 + w;
        r->results[M_ERROR] = 1;
        struct corral_metrics_upstream *u =
            corral_metrics_upstream_take(m, b, "u\"q");
        CHECK(u != NULL);
        corral_metrics_upstream_call(u, 200, 7);
        u->budget.waited = 1;
    }
    return m;
}

static char *
render(struct corral_metrics *m, const struct corral_config *cfg)
{
    struct evbuffer *o = evbuffer_new();
    corral_admin_metrics_render(o, m, cfg, 1000);
    size_t len = evbuffer_get_length(o);
    char *text = malloc(len + 1);
    evbuffer_remove(o, text, len);
    text[len] = '\0';
    evbuffer_free(o);
    return text;
}

static bool
has(const char *text, const char *line)
{
    return strstr(text, line) != NULL;
}

static void
test_metrics(void)
{
    char err[256];
    struct corral_config *cfg =
        corral_config_parse(conf, sizeof(conf) - 1, "t.json", err, sizeof(err));
    CHECK(cfg != NULL);
    struct corral_metrics *m = snapshot(true);
    struct corral_breaker_options bo = {.name = "u", .failures = 3};
    struct corral_breaker *br =
        corral_breaker_new(corral_metrics_breakers(m), &bo, NULL);
    char *t = render(m, cfg);

    CHECK(has(t, "# HELP corral_requests_total Requests answered, by route "
                 "and how the cache answered.\n"
                 "# TYPE corral_requests_total counter\n"));
    CHECK(has(t, "corral_requests_total{route=\"/r\",result=\"hit\"} 11\n"));
    CHECK(has(t, "corral_requests_total{route=\"/r\",result=\"error\"} 2\n"));
    /* Label values escaped. */
    CHECK(has(t, "corral_upstream_calls_total{upstream=\"u\\\"q\","
                 "class=\"2xx\"} 2\n"));
    CHECK(has(t, "corral_upstream_call_duration_seconds_bucket{upstream="
                 "\"u\\\"q\",le=\"0.005\"} 0\n"));
    CHECK(has(t, "corral_upstream_call_duration_seconds_bucket{upstream="
                 "\"u\\\"q\",le=\"0.01\"} 2\n"));
    CHECK(has(t, "corral_upstream_call_duration_seconds_bucket{upstream="
                 "\"u\\\"q\",le=\"+Inf\"} 2\n"));
    CHECK(has(t, "corral_upstream_call_duration_seconds_sum{upstream="
                 "\"u\\\"q\"} 0.014\n"));
    CHECK(has(t, "corral_upstream_call_duration_seconds_count{upstream="
                 "\"u\\\"q\"} 2\n"));
    CHECK(has(t, "corral_rate_limit_waits_total{upstream=\"u\\\"q\"} 2\n"));
    CHECK(has(t, "corral_upstream_breaker_state{upstream=\"u\"} 0\n"));
    CHECK(has(t, "corral_upstream_breaker_opened_total{upstream=\"u\"} 0\n"));
    CHECK(has(t, "corral_upstream_calls_saved_total 7\n"));
    CHECK(has(t, "corral_route_info{route=\"/r\",upstream=\"u\"} 1\n"));
    CHECK(has(t, "corral_fills_in_flight 2\n"));
    CHECK(has(t, "corral_fills_total{outcome=\"ok\"} 21\n"
                 "corral_fills_total{outcome=\"failed\"} 4\n"
                 "corral_fills_total{outcome=\"timeout\"} 2\n"));
    CHECK(has(t, "corral_refreshes_total{reason=\"early\"} 4\n"
                 "corral_refreshes_total{reason=\"stale\"} 6\n"));
    CHECK(has(t, "corral_l1_entries 14\n"));
    CHECK(has(t, "corral_l1_max_bytes 2000\n"));
    CHECK(has(t, "corral_l1_form_bytes{coding=\"identity\"} 0\n"
                 "corral_l1_form_bytes{coding=\"gzip\"} 600\n"));
    CHECK(has(t, "corral_answers_by_coding_total{coding=\"br\"} 13\n"));
    CHECK(has(t, "corral_l2_bad_forms_total 5\n"));
    CHECK(has(t, "corral_l2_unheard_purges_total 3\n"));
    CHECK(has(t, "corral_compression_input_bytes_total{coding=\"gzip\"} "
                 "10000\n"));
    CHECK(has(t, "corral_compression_output_bytes_total{coding=\"gzip\"} "
                 "2000\n"));
    CHECK(has(t, "corral_compression_cpu_seconds_total 3.000001\n"));
    CHECK(has(t, "corral_l2_operations_total{result=\"hit\"} 8\n"));
    CHECK(has(t, "corral_l2_resyncs_total{result=\"replayed\"} 4\n"
                 "corral_l2_resyncs_total{result=\"lost\"} 2\n"));
    CHECK(has(t, "corral_l2_up 0\n")); /* one worker's Redis is down */
    CHECK(has(t, "corral_l2_sentinel_switches_total 3\n"));
    CHECK(has(t, "corral_l2_moved_total 11\n"));
    CHECK(has(t, "corral_l2_reply_duration_seconds_bucket{le=\"0.00025\"} 0\n"
                 "corral_l2_reply_duration_seconds_bucket{le=\"0.0005\"} 4\n"));
    CHECK(has(t, "corral_l2_reply_duration_seconds_bucket{le=\"0.0025\"} 6\n"));
    CHECK(has(t, "corral_l2_reply_duration_seconds_bucket{le=\"0.25\"} 6\n"
                 "corral_l2_reply_duration_seconds_bucket{le=\"+Inf\"} 8\n"
                 "corral_l2_reply_duration_seconds_sum 0.601900\n"
                 "corral_l2_reply_duration_seconds_count 8\n"));
    CHECK(has(t, "corral_l2_ask_total 4\n"));
    CHECK(has(t, "corral_l2_cluster_primaries 4\n")); /* the most, no sum */
    CHECK(has(t, "corral_client_connections 4\n"));
    CHECK(has(t, "corral_client_connections_total{result=\"accepted\"} 18\n"));
    CHECK(has(t, "corral_workers 2\n"));
    CHECK(has(t, "corral_client_tls_connections_total{tls=\"1\",proto=\"h2\"} "
                 "6\n"));
    CHECK(has(
        t, "corral_client_tls_connections_total{tls=\"1\",result=\"failed\"} "
           "2\n"));
    CHECK(has(t, "corral_worker_restarts_total 0\n"));
    /* Every family once, each with its HELP and TYPE. */
    unsigned helps = 0, types = 0;
    for (const char *p = t; (p = strstr(p, "# HELP ")) != NULL; p++)
        helps++;
    for (const char *p = t; (p = strstr(p, "# TYPE ")) != NULL; p++)
        types++;
    CHECK_EQ_INT(helps, 58);
    CHECK_EQ_INT(types, helps);
    free(t);

    /* Both Redis connections up. */
    corral_metrics_block(m, 1)->l2.state = CORRAL_REDIS_UP;
    t = render(m, cfg);
    CHECK(has(t, "corral_l2_up 1\n"));
    free(t);

    /* A worker gone: its block no longer counts. Restarts are the
     * supervisor's count, whichever blocks are live. */
    corral_metrics_block(m, 1)->pid = 0;
    corral_metrics_restart_add(m);
    corral_metrics_restart_add(m);
    t = render(m, cfg);
    CHECK(has(t, "corral_workers 1\n"));
    CHECK(has(t, "corral_worker_restarts_total 2\n"));
    CHECK(has(t, "corral_requests_total{route=\"/r\",result=\"hit\"} 5\n"));
    free(t);
    corral_breaker_free(br);
    corral_metrics_free(m);

    /* Without l2, no L2 family. */
    m = snapshot(false);
    t = render(m, cfg);
    CHECK(!has(t, "corral_l2_"));
    CHECK(has(t, "corral_workers 2\n"));
    free(t);
    corral_metrics_free(m);
    corral_config_free(cfg);
}

int
main(void)
{
    RUN(test_match);
    RUN(test_authorize);
    RUN(test_metrics);
    return 0;
}
