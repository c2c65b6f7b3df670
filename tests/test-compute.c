/* test-compute.c — a route's compute: the head it renders and the flags it
 * keeps with it, the check of a value read from L2 (which sets those flags
 * again), the HTTP status of a fill's error, and the fill job itself,
 * through a real cache, budget, breaker and fetch, against a raw origin
 * on a loopback socket that answers each path as a table says. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "breaker.h"
#include "budget.h"
#include "config.h"
#include "corral/cache.h"
#include "corral/value.h"
#include "fetch.h"
#include "compute.h"
#include "l2codec.h"
#include "route.h"
#include "raw_origin.h"
#include "testlib.h"

static struct event_base *base;

/* ---- the origin: one answer per path, then close ---- */

static const struct raw_origin_answer answers[] = {
    {"/v/a", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
             "Content-Length: 9\r\n\r\n{\"v\":\"a\"}"},
    {"/v/gone", "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
                "Content-Length: 4\r\n\r\nnope"},
    {"/v/broken", "HTTP/1.1 500 Internal Server Error\r\n"
                  "Content-Length: 2\r\n\r\nno"},
    {"/v/text", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                "Content-Length: 8\r\n\r\nnot json"},
    {"/v/busy", "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\n"
                "Content-Length: 0\r\n\r\n"},
};
static struct raw_origin origin;

/* ---- the gateway's side ---- */

static struct corral_config *cfg;
static struct corral_cache *cache;
static struct corral_route_compute rf;

struct got {
    int fired, error, status;
    enum corral_source source;
    uint8_t flags;
    uint64_t retry_ms;
    char body[64];
};

static void
got_cb(const struct corral_result *res, void *arg)
{
    struct got *g = arg;
    g->fired++;
    g->error = res->error;
    g->source = res->source;
    g->retry_ms = res->retry_after_ms;
    if (res->error == 0) {
        g->flags = corral_value_flags(res->value);
        g->status = corral_compute_status(res->value);
        snprintf(g->body, sizeof(g->body), "%.*s",
                 (int)corral_value_len(res->value),
                 corral_value_body(res->value));
    }
}

/* Asks for the key of path and runs the loop until it is answered (a
 * bounded wait). */
static struct got
get(const char *path)
{
    struct corral_route_match m;
    struct got g = {0};
    struct corral_waiter *w = NULL;
    CHECK_EQ_INT(corral_route_match(cfg->table, path, strlen(path), "", 0, &m),
                 CORRAL_ROUTE_OK);
    CHECK_EQ_INT(corral_route_compute_get(cache, &rf, &m, got_cb, &g, &w), 0);
    CHECK(w != NULL);
    WAIT_FOR(base, g.fired != 0);
    CHECK_EQ_INT(g.fired, 1);
    return g;
}

static void
test_render_sets_flags(void)
{
    struct corral_value *v =
        corral_compute_render("k", 1, "{}", 2, NULL, 200, NULL);
    CHECK(v != NULL);
    CHECK_EQ_INT(corral_value_flags(v), 0);
    CHECK_EQ_INT(corral_compute_status(v), 200);
    char want[300];
    snprintf(want, sizeof(want),
             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
             "Content-Length: 2\r\nETag: %s\r\nVary: Accept-Encoding\r\n",
             corral_value_etag(v));
    size_t hlen;
    const char *head = corral_compute_head(v, CORRAL_CODING_IDENTITY, &hlen);
    CHECK_EQ_INT(hlen, strlen(want));
    CHECK(memcmp(head, want, strlen(want)) == 0);
    /* Too short to pay for a coding: identity only. */
    CHECK(corral_compute_head(v, CORRAL_CODING_GZIP, &hlen) == NULL);
    CHECK_EQ_INT(corral_value_forms(v), 1);
    corral_value_unref(v);

    v = corral_compute_render("k", 1, "nope", 4, "text/plain", 404, NULL);
    CHECK_EQ_INT(corral_value_flags(v), CORRAL_COMPUTE_NEGATIVE);
    CHECK_EQ_INT(corral_compute_status(v), 404);
    corral_value_unref(v);
    /* A Content-Type too long for the value: nothing. */
    char ctype[1100];
    memset(ctype, 'x', sizeof(ctype) - 1);
    ctype[sizeof(ctype) - 1] = '\0';
    CHECK(corral_compute_render("k", 1, "{}", 2, ctype, 200, NULL) == NULL);
}

/* A body long enough to pay: one head per form kept, each with its own
 * length, coding and ETag, and the same Vary. */
static void
test_render_forms(void)
{
    char body[4000];
    int n = snprintf(body, sizeof(body), "[");
    for (int i = 0; n < 3900; i++)
        n += snprintf(body + n, sizeof(body) - (size_t)n,
                      "%s{\"id\":%d,\"name\":\"coin-%d\",\"price\":%d.25}",
                      i ? "," : "", i, i % 17, i * 37 % 1000);
    n += snprintf(body + n, sizeof(body) - (size_t)n, "]");
    struct corral_value *v =
        corral_compute_render("k", 1, body, (size_t)n, NULL, 200, NULL);
    CHECK(v != NULL);
    CHECK(corral_value_forms(v) & 1u << CORRAL_CODING_GZIP);
    for (int c = 0; c < CORRAL_CODINGS; c++) {
        size_t hlen, flen;
        const char *head = corral_compute_head(v, c, &hlen);
        const char *form = corral_value_form(v, (unsigned)c, &flen);
        CHECK((head != NULL) == (form != NULL));
        if (head == NULL)
            continue;
        char etag[CORRAL_COMPUTE_ETAG_MAX], want[400];
        corral_compute_etag(v, c, etag);
        snprintf(want, sizeof(want),
                 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\nETag: %s\r\n%s%s%s"
                 "Vary: Accept-Encoding\r\n",
                 flen, etag, c ? "Content-Encoding: " : "",
                 c ? corral_coding_name(c) : "", c ? "\r\n" : "");
        CHECK_EQ_INT(hlen, strlen(want));
        CHECK(memcmp(head, want, hlen) == 0);
    }
    char etag[CORRAL_COMPUTE_ETAG_MAX];
    corral_compute_etag(v, CORRAL_CODING_GZIP, etag);
    CHECK_EQ_INT(strlen(etag), CORRAL_ETAG_LEN + 5);
    CHECK(memcmp(etag, corral_value_etag(v), CORRAL_ETAG_LEN - 1) == 0);
    CHECK(strcmp(etag + CORRAL_ETAG_LEN - 1, "-gzip\"") == 0);
    corral_value_unref(v);
}

/* v as L2 gives it back: encoded, then decoded into a new value. */
static struct corral_value *
through_l2(struct corral_value *v)
{
    char buf[2048];
    CHECK(corral_l2_size(v) <= sizeof(buf));
    corral_l2_encode(v, buf);
    struct corral_value *out = NULL;
    CHECK_EQ_INT(corral_l2_decode(buf, corral_l2_size(v), corral_value_key(v),
                                  corral_value_keylen(v), &out),
                 CORRAL_L2_OK);
    return out;
}

/* The flags are the gateway's, so L2 does not carry them: the fit check
 * of a value read from there sets them from its head. */
static void
test_fit_sets_flags_from_l2(void)
{
    const struct corral_config_route *route = &cfg->routes[0];
    const struct corral_config_route *agg = &cfg->routes[1];
    uint64_t now = 1700000000000ull;

    struct corral_value *v =
        corral_compute_render("k", 1, "nope", 4, "text/plain", 404, NULL);
    corral_value_set_times(v, now, now + 30000, 0, 0);
    struct corral_value *back = through_l2(v);
    CHECK_EQ_INT(corral_value_flags(back), 0);
    CHECK(corral_compute_fit(route, back, now));
    CHECK_EQ_INT(corral_value_flags(back), CORRAL_COMPUTE_NEGATIVE);
    corral_value_unref(back);
    /* Kept longer than the route keeps a 404: refused. */
    corral_value_set_times(v, now, now + 120000, 0, 0);
    back = through_l2(v);
    CHECK(!corral_compute_fit(route, back, now));
    corral_value_unref(back);
    corral_value_unref(v);

    v = corral_compute_render("k", 1, "{\"a\":1}", 7, NULL, 200, NULL);
    corral_value_set_times(v, now, now + 1000, 0, 0);
    back = through_l2(v);
    CHECK(corral_compute_fit(route, back, now));
    CHECK_EQ_INT(corral_value_flags(back), 0);
    corral_value_unref(back);
    corral_value_unref(v);

    /* An aggregate assembled with a stale member. */
    v = corral_compute_render("all", 3, "{\"a\":null}", 10, NULL, 200,
                              "Corral-Stale-Members: a\r\n");
    corral_value_set_times(v, now, now + 1000, 0, 0);
    back = through_l2(v);
    CHECK(corral_compute_fit(agg, back, now));
    CHECK_EQ_INT(corral_value_flags(back), CORRAL_COMPUTE_STALE_MEMBERS);
    /* Only an aggregate may say so. */
    corral_value_unref(back);
    back = through_l2(v);
    CHECK(!corral_compute_fit(route, back, now));
    corral_value_unref(back);
    corral_value_unref(v);

    /* A head corral would not render: refused. */
    v = corral_value_new("k", 1, "{}", 2, "application/json", 64);
    size_t cap;
    char *aux = corral_value_aux_mut(v, &cap);
    memcpy(aux, "HTTP/1.1 200 OK\r\nX: y\r\n", 23);
    corral_value_set_aux_len(v, 23);
    corral_value_set_times(v, now, now + 1000, 0, 0);
    CHECK(!corral_compute_fit(route, v, now));
    corral_value_unref(v);
}

/* A value read from L2 with its identity bytes: fit leaves its other
 * forms to be checked when a client first asks for one, and remembers
 * the answer; a value made here, or one whose identity came decoded, is
 * checked whole. */
static void
test_forms_checked_when_asked(void)
{
    const struct corral_config_route *route = &cfg->routes[0];
    uint64_t now = 1700000000000ull;
    char body[1200];
    int n = snprintf(body, sizeof(body), "[");
    for (int i = 0; n < 1100; i++)
        n += snprintf(body + n, sizeof(body) - (size_t)n, "%s{\"id\":%d}",
                      i ? "," : "", i % 7);
    n += snprintf(body + n, sizeof(body) - (size_t)n, "]");
    struct corral_value *v =
        corral_compute_render("k", 1, body, (size_t)n, NULL, 200, NULL);
    CHECK(corral_value_forms(v) & 1u << CORRAL_CODING_GZIP);
    CHECK(corral_value_body(v) != NULL);
    /* Made here: every form good, nothing to mark. */
    CHECK(corral_compute_form_ok(v, CORRAL_CODING_GZIP));
    CHECK_EQ_INT(corral_value_marks(v), 0);
    corral_value_set_times(v, now, now + 1000, 0, 0);

    struct corral_value *back = through_l2(v);
    CHECK(corral_compute_fit(route, back, now));
    CHECK_EQ_INT(corral_value_flags(back), CORRAL_COMPUTE_UNCHECKED_FORMS);
    CHECK(corral_compute_form_ok(back, CORRAL_CODING_IDENTITY));
    CHECK_EQ_INT(corral_value_marks(back), 0);
    CHECK(corral_compute_form_ok(back, CORRAL_CODING_GZIP));
    unsigned marks = corral_value_marks(back);
    CHECK(marks != 0);
    CHECK(corral_compute_form_ok(back, CORRAL_CODING_GZIP));
    CHECK_EQ_INT(corral_value_marks(back), marks);
    corral_value_unref(back);

    /* Its gzip form spoilt in L2: fit still takes it (the identity bytes
     * are good), the form is refused when asked for, and stays refused. */
    char buf[2048];
    size_t len = corral_l2_size(v), glen;
    CHECK(len <= sizeof(buf));
    corral_l2_encode(v, buf);
    const char *gz = corral_value_form(v, CORRAL_CODING_GZIP, &glen);
    char *at = memmem(buf, len, gz, glen);
    CHECK(at != NULL);
    at[glen / 2] ^= 0x55;
    CHECK_EQ_INT(corral_l2_decode(buf, len, "k", 1, &back), CORRAL_L2_OK);
    CHECK(corral_compute_fit(route, back, now));
    CHECK(!corral_compute_form_ok(back, CORRAL_CODING_GZIP));
    marks = corral_value_marks(back);
    CHECK(!corral_compute_form_ok(back, CORRAL_CODING_GZIP));
    CHECK_EQ_INT(corral_value_marks(back), marks);
    CHECK(corral_compute_form_ok(back, CORRAL_CODING_IDENTITY));
    if (corral_value_forms(v) & 1u << CORRAL_CODING_BR)
        CHECK(corral_compute_form_ok(back, CORRAL_CODING_BR));
    corral_value_unref(back);
    corral_value_unref(v);
}

static void
test_error_status(void)
{
    CHECK_EQ_INT(corral_compute_error_status(-ETIMEDOUT), 504);
    CHECK_EQ_INT(corral_compute_error_status(-EBUSY), 503);
    CHECK_EQ_INT(corral_compute_error_status(-EAGAIN), 503);
    CHECK_EQ_INT(corral_compute_error_status(-ECANCELED), 503);
    CHECK_EQ_INT(corral_compute_error_status(-EIO), 502);
    CHECK_EQ_INT(corral_compute_error_status(-EBADMSG), 502);
}

static void
test_fill_stores(void)
{
    struct got g = get("/ok/a");
    CHECK_EQ_INT(g.error, 0);
    CHECK_EQ_INT(g.source, CORRAL_SOURCE_STORED);
    CHECK_EQ_STR(g.body, "{\"v\":\"a\"}");
    CHECK_EQ_INT(g.status, 200);
    CHECK_EQ_INT(g.flags, 0);
    /* Then from L1: one call. */
    g = get("/ok/a");
    CHECK_EQ_INT(g.error, 0);
    CHECK_EQ_INT(g.source, CORRAL_SOURCE_L1);
    CHECK_EQ_INT(raw_origin_calls(&origin, "/v/a"), 1);
}

static void
test_fill_keeps_negative(void)
{
    struct got g = get("/ok/gone");
    CHECK_EQ_INT(g.error, 0);
    CHECK_EQ_INT(g.status, 404);
    CHECK_EQ_INT(g.flags, CORRAL_COMPUTE_NEGATIVE);
    CHECK_EQ_STR(g.body, "nope");
    g = get("/ok/gone");
    CHECK_EQ_INT(g.source, CORRAL_SOURCE_L1);
    CHECK_EQ_INT(g.flags, CORRAL_COMPUTE_NEGATIVE);
    CHECK_EQ_INT(raw_origin_calls(&origin, "/v/gone"), 1);
}

static void
test_fill_refuses(void)
{
    struct got g = get("/ok/broken");
    CHECK(g.error < 0);
    CHECK_EQ_INT(corral_compute_error_status(g.error), 502);
    CHECK_EQ_INT(raw_origin_calls(&origin, "/v/broken"), 1);
    /* A JSON route stores no body that is not JSON. */
    g = get("/ok/text");
    CHECK(g.error < 0);
    CHECK_EQ_INT(corral_compute_error_status(g.error), 502);
}

/* A 429 with Retry-After pauses the upstream: the next key's fill fails
 * at once, without a call. */
static void
test_fill_pauses_on_retry_after(void)
{
    struct got g = get("/ok/busy");
    CHECK_EQ_INT(g.error, -EBUSY);
    CHECK(g.retry_ms >= 29000 && g.retry_ms <= 30000);
    unsigned before = origin.total;
    g = get("/ok/other");
    CHECK_EQ_INT(g.error, -EBUSY);
    CHECK_EQ_INT(corral_compute_error_status(g.error), 503);
    CHECK_EQ_INT(origin.total, before);
    struct corral_budget_stats st;
    corral_budget_stats(rf.budget, &st);
    CHECK_EQ_INT(st.pauses, 1);
}

int
main(void)
{
    base = event_base_new();
    raw_origin_start(&origin, base, answers,
                     sizeof(answers) / sizeof(*answers));
    uint16_t port = origin.port;

    char conf[1024], err[512];
    int n = snprintf(
        conf, sizeof(conf),
        "{ \"listen\": \"127.0.0.1:1\",\n"
        "  \"upstreams\": { \"up\": { \"base\": \"http://127.0.0.1:%u\" } },\n"
        "  \"routes\": [\n"
        "    { \"path\": \"/ok/{id}\", \"upstream\": \"up\",\n"
        "      \"fetch\": \"/v/{id}\", \"strategy\": \"1m\",\n"
        "      \"cache_errors\": { \"404\": \"1m\" } },\n"
        "    { \"path\": \"/all\", \"aggregate\": { \"a\": \"/ok/a\" } }\n"
        "  ] }\n",
        port);
    cfg = corral_config_parse(conf, (size_t)n, "test.json", err, sizeof(err));
    if (cfg == NULL)
        fprintf(stderr, "%s\n", err);
    CHECK(cfg != NULL);

    RUN(test_render_sets_flags);
    RUN(test_render_forms);
    RUN(test_fit_sets_flags_from_l2);
    RUN(test_forms_checked_when_asked);
    RUN(test_error_status);

    cache = corral_cache_new(base, NULL);
    struct corral_fetch_options fo = {
        .scheme = "http",
        .host = "127.0.0.1",
        .port = port,
        .timeout_ms = 5000,
        .max_connections = 4,
        .max_body = 1 << 20,
    };
    struct corral_budget_rate rate = {0, 0, 0};
    struct corral_breaker_options bo = {.name = "up"};
    rf = (struct corral_route_compute){
        .route = &cfg->routes[0],
        .upstream = corral_fetch_upstream_new(base, &fo, err, sizeof(err)),
        .budget = corral_budget_new(base, NULL, "up", &rate, NULL, NULL),
        .breaker = corral_breaker_new(NULL, &bo, NULL),
        .timeout_ms = 5000,
    };
    CHECK(cache != NULL && rf.upstream != NULL);
    RUN(test_fill_stores);
    RUN(test_fill_keeps_negative);
    RUN(test_fill_refuses);
    RUN(test_fill_pauses_on_retry_after);

    corral_cache_free(cache);
    corral_breaker_free(rf.breaker);
    corral_budget_free(rf.budget);
    corral_fetch_upstream_free(rf.upstream);
    corral_config_free(cfg);
    raw_origin_stop(&origin);
    event_base_free(base);
    printf("%lu checks\n", testlib_checks);
    return 0;
}
