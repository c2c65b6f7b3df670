/* test-aggregate.c — an aggregate's assembly on a real cache, its members
 * answered by a fake getter through the same cache: the spliced body, a
 * failed or negative member as null under "errors", the stale-members
 * flag and header, the lifetime (no longer than the earliest member's, nor
 * a failed member's next try), every member failed (-ENODATA with the
 * whole body as the message), a member path that does not fit, and one
 * assembly for many concurrent callers. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "aggregate.h"
#include "config.h"
#include "corral/cache.h"
#include "corral/value.h"
#include "compute.h"
#include "testlib.h"

static struct event_base *base;
static struct corral_cache *cache;
static struct corral_config *cfg;
static uint64_t fake_now = 1700000000000ull;
static unsigned member_fills, gets;

static uint64_t
fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

/* A member's fill, by the member route's fetch template ("/<what>"):
 * "/ok" a JSON body for 60 s, "/short" one for 5 s, "/gone" a negative
 * 404 for 20 s, "/fail" an error to try again in 7 s. */
static void
member_compute(struct corral_fill *fill, const char *key, size_t keylen,
               void *arg)
{
    const struct corral_config_route *route = arg;
    member_fills++;
    if (strcmp(route->fetch, "/fail") == 0) {
        corral_fill_fail_retry(fill, -EIO, "upstream broke", 7000);
        return;
    }
    bool gone = strcmp(route->fetch, "/gone") == 0;
    const char *body = gone ? "nope" : "{\"m\":1}";
    struct corral_value *v = corral_compute_render(
        key, keylen, body, strlen(body), gone ? "text/plain" : NULL,
        gone ? 404 : 200, NULL);
    uint64_t ttl = gone                                  ? 20000
                   : strcmp(route->fetch, "/short") == 0 ? 5000
                                                         : 60000;
    corral_fill_done_ttl(fill, v, ttl);
}

static int
member_get(void *ctx, const struct corral_config_member *mb,
           corral_result_cb *cb, void *arg, struct corral_waiter **out)
{
    (void)ctx;
    gets++;
    if (strcmp(mb->name, "bad") == 0)
        return -EINVAL;
    const struct corral_compute compute = {.fn = member_compute,
                                           .arg = (void *)mb->route};
    *out =
        corral_get_or_compute(cache, mb->route->path, strlen(mb->route->path),
                              &mb->route->strategy, 5000, &compute, cb, arg);
    return *out != NULL ? 0 : -ESHUTDOWN;
}

struct got {
    int fired, error;
    enum corral_source source;
    uint8_t flags;
    uint64_t ttl_ms, retry_ms;
    char body[512];
    char head[512];
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
        const struct corral_value *v = res->value;
        g->flags = corral_value_flags(v);
        g->ttl_ms = corral_value_expires_at(v) - corral_value_stored_at(v);
        snprintf(g->body, sizeof(g->body), "%.*s", (int)corral_value_len(v),
                 corral_value_body(v));
        size_t hlen;
        const char *head =
            corral_compute_head(v, CORRAL_CODING_IDENTITY, &hlen);
        snprintf(g->head, sizeof(g->head), "%.*s", (int)hlen, head);
    } else {
        snprintf(g->body, sizeof(g->body), "%s", res->message);
    }
}

static void
run_until(const int *fired, int want)
{
    WAIT_FOR(base, *fired >= want);
    CHECK_EQ_INT(*fired, want);
}

static const struct corral_config_route *
route_at(const char *path)
{
    for (size_t i = 0; i < cfg->n_routes; i++)
        if (strcmp(cfg->routes[i].path, path) == 0)
            return &cfg->routes[i];
    CHECK(!"no such route");
    return NULL;
}

static struct got
assemble(const char *path, struct corral_aggregate_compute *af)
{
    *af = (struct corral_aggregate_compute){
        .route = route_at(path),
        .cache = cache,
        .get = member_get,
        .timeout_ms = 5000,
    };
    struct got g = {0};
    struct corral_waiter *w = NULL;
    CHECK_EQ_INT(
        corral_aggregate_get(cache, af, path, strlen(path), got_cb, &g, &w), 0);
    CHECK(w != NULL);
    CHECK_EQ_INT(g.fired, 0); /* never from inside the call */
    run_until(&g.fired, 1);
    return g;
}

static void
test_members_spliced(void)
{
    struct corral_aggregate_compute af;
    struct got g = assemble("/two", &af);
    CHECK_EQ_INT(g.error, 0);
    CHECK_EQ_STR(g.body, "{\"a\":{\"m\":1},\"b\":{\"m\":1}}");
    CHECK_EQ_INT(g.flags, 0);
    /* No longer than its earliest member: b's 5 s. */
    CHECK_EQ_INT(g.ttl_ms, 5000);
    CHECK(strstr(g.head, "HTTP/1.1 200 OK\r\n") == g.head);
    CHECK(strstr(g.head, "Corral-Stale-Members") == NULL);
    /* Asked again: the assembled value, from L1. */
    unsigned fills = member_fills;
    g = assemble("/two", &af);
    CHECK_EQ_INT(g.source, CORRAL_SOURCE_L1);
    CHECK_EQ_INT(member_fills, fills);
}

static void
test_failed_members(void)
{
    struct corral_aggregate_compute af;
    struct got g = assemble("/mixed", &af);
    CHECK_EQ_INT(g.error, 0);
    CHECK_EQ_STR(g.body,
                 "{\"ok\":{\"m\":1},\"gone\":null,\"broke\":null,\"bad\":null,"
                 "\"errors\":{\"gone\":{\"status\":404,\"error\":\"upstream "
                 "answered 404\"},\"broke\":{\"status\":502,\"error\":"
                 "\"upstream broke\"},\"bad\":{\"status\":400,\"error\":"
                 "\"member path does not fit its route\"}}}");
    /* No longer than the soonest next try: not known for the member that
     * does not fit, so a second. */
    CHECK_EQ_INT(g.ttl_ms, 1000);
}

static void
test_every_member_failed(void)
{
    struct corral_aggregate_compute af;
    struct got g = assemble("/none", &af);
    CHECK_EQ_INT(g.error, -ENODATA);
    CHECK_EQ_INT(corral_compute_error_status(g.error), 502);
    /* The soonest of the members' next tries: the failed one's 7 s. */
    CHECK(g.retry_ms >= 7000);
    CHECK_EQ_STR(g.body, "{\"broke\":null,\"errors\":{\"broke\":{\"status\":"
                         "502,\"error\":\"upstream broke\"}}}");
}

/* A member served stale: named in the header, and in the value's flags
 * so a hit need not look for it. */
static void
test_stale_member_flagged(void)
{
    struct corral_aggregate_compute af;
    struct got g = assemble("/lone", &af);
    CHECK_EQ_INT(g.error, 0);
    CHECK_EQ_INT(g.flags, 0);
    /* Past the member's 5 s, inside its stale window, and past the
     * assembly's own lifetime. */
    fake_now += 6000;
    g = assemble("/lone", &af);
    CHECK_EQ_INT(g.error, 0);
    CHECK_EQ_INT(g.flags, CORRAL_COMPUTE_STALE_MEMBERS);
    CHECK(strstr(g.head, "\r\nCorral-Stale-Members: s\r\n") != NULL);
    CHECK_EQ_INT(g.ttl_ms, 1000); /* picked up again a second later */
}

static void
test_one_assembly_for_many(void)
{
    struct corral_aggregate_compute af = {
        .route = route_at("/many"),
        .cache = cache,
        .get = member_get,
        .timeout_ms = 5000,
    };
    enum { N = 50 };
    struct got g[N];
    memset(g, 0, sizeof(g));
    int fired = 0;
    unsigned before = gets;
    for (int i = 0; i < N; i++) {
        struct corral_waiter *w;
        CHECK_EQ_INT(
            corral_aggregate_get(cache, &af, "/many", 5, got_cb, &g[i], &w), 0);
    }
    uint64_t end = mono_ms() + 10000;
    while (mono_ms() < end) {
        fired = 0;
        for (int i = 0; i < N; i++)
            fired += g[i].fired;
        if (fired == N)
            break;
        event_base_loop(base, EVLOOP_ONCE);
    }
    CHECK_EQ_INT(fired, N);
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(g[i].error, 0);
        CHECK_EQ_STR(g[i].body, "{\"x\":{\"m\":1}}");
    }
    CHECK_EQ_INT(gets - before, 1);
}

int
main(void)
{
    static const char conf[] =
        "{ \"listen\": \"127.0.0.1:1\",\n"
        "  \"upstreams\": { \"up\": { \"base\": \"http://127.0.0.1:9\" } },\n"
        "  \"routes\": [\n"
        "    { \"path\": \"/m/ok\", \"upstream\": \"up\", \"fetch\": \"/ok\",\n"
        "      \"strategy\": \"1m\" },\n"
        "    { \"path\": \"/m/short\", \"upstream\": \"up\",\n"
        "      \"fetch\": \"/short\", \"strategy\": \"1m\" },\n"
        "    { \"path\": \"/m/stale\", \"upstream\": \"up\",\n"
        "      \"fetch\": \"/short\",\n"
        "      \"strategy\": \"1m\", \"stale_while_revalidate\": \"1m\" },\n"
        "    { \"path\": \"/m/gone\", \"upstream\": \"up\", \"fetch\": "
        "\"/gone\",\n"
        "      \"cache_errors\": { \"404\": \"1m\" } },\n"
        "    { \"path\": \"/m/fail\", \"upstream\": \"up\", \"fetch\": "
        "\"/fail\" },\n"
        "    { \"path\": \"/m/x\", \"upstream\": \"up\", \"fetch\": \"/ok\" "
        "},\n"
        "    { \"path\": \"/two\", \"aggregate\": { \"a\": \"/m/ok\",\n"
        "      \"b\": \"/m/short\" } },\n"
        "    { \"path\": \"/mixed\", \"aggregate\": { \"ok\": \"/m/ok\",\n"
        "      \"gone\": \"/m/gone\", \"broke\": \"/m/fail\",\n"
        "      \"bad\": \"/m/ok\" } },\n"
        "    { \"path\": \"/none\", \"aggregate\": { \"broke\": \"/m/fail\" } "
        "},\n"
        "    { \"path\": \"/lone\", \"aggregate\": { \"s\": \"/m/stale\" } },\n"
        "    { \"path\": \"/many\", \"aggregate\": { \"x\": \"/m/x\" } }\n"
        "  ] }\n";
    char err[512];
    base = event_base_new();
    cfg = corral_config_parse(conf, sizeof(conf) - 1, "test.json", err,
                              sizeof(err));
    if (cfg == NULL)
        fprintf(stderr, "%s\n", err);
    CHECK(cfg != NULL);
    struct corral_cache_options co = {.clock = fake_clock};
    cache = corral_cache_new(base, &co);
    CHECK(cache != NULL);
    RUN(test_members_spliced);
    RUN(test_failed_members);
    RUN(test_every_member_failed);
    RUN(test_stale_member_flagged);
    RUN(test_one_assembly_for_many);
    corral_cache_free(cache);
    corral_config_free(cfg);
    event_base_free(base);
    printf("%lu checks\n", testlib_checks);
    return 0;
}
