/* test-config.c — loading and validating the JSON configuration.
 * Inline configs use ' for " to stay readable; error checks pin the
 * "file:line: key.path: " prefix and a piece of the reason. Sample files
 * live in tests/configs/, found beside this source file. */
#include "config.h"
#include "fetch.h"
#include "route.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testlib.h"

static const char *source_dir(void);

#define SECRET "s3cr3t_Value" /* also a valid {param} name */

static char errbuf[512];

/* Parses text as "t.json" after turning each ' into ". */
static struct corral_config *
parse(const char *text)
{
    char *json = strdup(text);
    CHECK(json != NULL);
    for (char *p = json; *p; p++)
        if (*p == '\'')
            *p = '"';
    struct corral_config *cfg = corral_config_parse(
        json, strlen(json), "t.json", errbuf, sizeof(errbuf));
    free(json);
    return cfg;
}

/* Parsing must fail with an error that starts with prefix and holds
 * reason. */
static void
check_error(int line, const char *text, const char *prefix, const char *reason)
{
    struct corral_config *cfg = parse(text);
    if (cfg != NULL || strncmp(errbuf, prefix, strlen(prefix)) != 0 ||
        strstr(errbuf, reason) == NULL)
        fprintf(stderr, "line %d: got \"%s\"\n", line,
                cfg ? "(parsed)" : errbuf);
    corral_config_free(cfg);
    CHECK(cfg == NULL);
    CHECK(strncmp(errbuf, prefix, strlen(prefix)) == 0);
    CHECK(strstr(errbuf, reason) != NULL);
}

#define CHECK_ERROR(text, prefix, reason)                                      \
    check_error(__LINE__, text, prefix, reason)

/* A valid config around one route (line 3) or with extra top-level keys
 * (line 2). */
#define TOP "{'listen': '127.0.0.1:8080',\n"
#define UP "'upstreams': {'u': {'base': 'http://127.0.0.1:8081'}},\n"
#define ROUTE(r) TOP UP "'routes': [" r "]}"
#define ROUTE_A "{'path': '/a', 'upstream': 'u', 'fetch': '/a'}"
#define WITH(top) TOP top ",\n" UP "'routes': [" ROUTE_A "]}"

static void
test_defaults(void)
{
    struct corral_config *cfg = parse(ROUTE(ROUTE_A));
    CHECK(cfg != NULL);
    CHECK_EQ_STR(cfg->listen.host, "127.0.0.1");
    CHECK_EQ_INT(cfg->listen.port, 8080);
    CHECK(cfg->admin == NULL);
    CHECK_EQ_INT(cfg->workers, 1);
    CHECK(cfg->access_log == NULL);
    CHECK_EQ_INT(cfg->l1_max_bytes, 256 << 20);
    CHECK(cfg->l2 == NULL);
    CHECK_EQ_INT(cfg->limits.max_header_bytes, 8192);
    CHECK_EQ_INT(cfg->limits.client_timeout_ms, 30000);
    CHECK_EQ_INT(cfg->limits.max_clients, 10000);
    CHECK_EQ_INT(cfg->limits.max_waiters, 10000);
    CHECK_EQ_INT(cfg->limits.max_body_bytes, 8 << 20);
    CHECK_EQ_INT(cfg->limits.max_streams, 128);

    CHECK_EQ_INT(cfg->n_upstreams, 1);
    const struct corral_config_upstream *u = &cfg->upstreams[0];
    CHECK_EQ_STR(u->name, "u");
    CHECK(!u->tls);
    CHECK_EQ_STR(u->host, "127.0.0.1");
    CHECK_EQ_INT(u->port, 8081);
    CHECK_EQ_STR(u->prefix, "");
    CHECK_EQ_INT(u->timeout_ms, 10000);
    CHECK_EQ_INT(u->max_connections, 8);
    CHECK_EQ_INT(u->rate_count, 0);
    CHECK_EQ_INT(u->breaker_failures, 5);
    CHECK_EQ_INT(u->n_headers, 0);
    CHECK(u->ca_file == NULL);

    CHECK_EQ_INT(cfg->n_routes, 1);
    const struct corral_config_route *r = &cfg->routes[0];
    CHECK_EQ_STR(r->path, "/a");
    CHECK(r->upstream == u);
    CHECK_EQ_STR(r->fetch, "/a");
    CHECK(r->key == NULL);
    CHECK_EQ_INT(r->strategy.kind, CORRAL_STRATEGY_DEFAULT);
    CHECK_EQ_INT(r->strategy.swr_ms, 0);
    CHECK_EQ_INT(r->strategy.sie_ms, 0);
    CHECK_EQ_INT(r->n_params, 0);
    CHECK_EQ_INT(r->n_query, 0);
    CHECK_EQ_INT(r->n_members, 0);
    CHECK(r->json);
    CHECK_EQ_INT(r->cache_control, CORRAL_CONFIG_CC_DEFAULT);
    CHECK_EQ_INT(u->cache_control, CORRAL_CONFIG_CC_DEFAULT);
    corral_config_free(cfg);

    /* l2 given with only redis: the rest defaults */
    cfg = parse(WITH("'l2': {'redis': 'localhost:6379'}"));
    CHECK(cfg != NULL && cfg->l2 != NULL);
    CHECK_EQ_STR(cfg->l2->redis.host, "localhost");
    CHECK_EQ_INT(cfg->l2->redis.port, 6379);
    CHECK_EQ_INT(cfg->l2->db, 0);
    CHECK_EQ_STR(cfg->l2->prefix, "corral:");
    CHECK_EQ_INT(cfg->l2->timeout_ms, 50);
    corral_config_free(cfg);

    /* a {param} without a pattern gets the default one */
    cfg = parse(ROUTE("{'path': '/p/{id}', 'upstream': 'u', "
                      "'fetch': '/p/{id}'}"));
    CHECK(cfg != NULL);
    CHECK_EQ_INT(cfg->routes[0].n_params, 1);
    CHECK_EQ_STR(cfg->routes[0].params[0].name, "id");
    CHECK_EQ_STR(cfg->routes[0].params[0].pattern,
                 CORRAL_CONFIG_DEFAULT_PARAM_PATTERN);
    CHECK(corral_pattern_match(cfg->routes[0].params[0].re, "btc-1.0", 7));
    CHECK(!corral_pattern_match(cfg->routes[0].params[0].re, "a/b", 3));
    corral_config_free(cfg);
}

static void
test_json_syntax(void)
{
    CHECK_ERROR("{'listen': '127.0.0.1:8080',\n\n'workers': 1,,\n}",
                "t.json:3: invalid JSON: ", "");
    CHECK_ERROR("{'listen': '127.0.0.1:8080',\n",
                "t.json:2: invalid JSON: ", "premature EOF");
    CHECK_ERROR("", "t.json:1: invalid JSON: ", "premature EOF");
    CHECK_ERROR(TOP "'x': 'a\\u0000b'}", "t.json:2: ", "\\u0000");
    CHECK_ERROR("[1]", "t.json:1: ", "the top level must be an object");
    CHECK_ERROR(ROUTE(ROUTE_A) " {}",
                "t.json:3: invalid JSON: ", "trailing garbage");
    char deep[400] = "{'listen': ";
    for (int i = 0; i < 70; i++)
        strcat(deep, "[");
    CHECK_ERROR(deep, "t.json:1: ", "nested too deeply");

    /* comments of both kinds, and lines counted through them */
    struct corral_config *cfg =
        parse("// leading\n{/* a\n b */ 'listen': '127.0.0.1:1', // x\n" UP
              "'routes': [" ROUTE_A "]}");
    CHECK(cfg != NULL);
    corral_config_free(cfg);
    CHECK_ERROR("// one\n/* two\n three */ {'listen': 7}",
                "t.json:3: listen: ", "expected a string, not an integer");
}

static void
test_unknown_keys(void)
{
    CHECK_ERROR(WITH("'listn': '1.2.3.4:5'"),
                "t.json:2: listn: ", "unknown key");
    CHECK_ERROR(WITH("'admin': {'listen': '127.0.0.1:9', 'tokn': 'x'}"),
                "t.json:2: admin.tokn: ", "unknown key");
    CHECK_ERROR(WITH("'l1': {'max_byte': '1MB'}"),
                "t.json:2: l1.max_byte: ", "unknown key");
    CHECK_ERROR(WITH("'l2': {'redis': 'r:1', 'pass': 'x'}"),
                "t.json:2: l2.pass: ", "unknown key");
    CHECK_ERROR(WITH("'limits': {'max_body': '1MB'}"),
                "t.json:2: limits.max_body: ", "unknown key");
    CHECK_ERROR(TOP "'upstreams': {'u': {'base': 'http://h',\n"
                    "'retries': 3}}, 'routes': [" ROUTE_A "]}",
                "t.json:3: upstreams.u.retries: ", "unknown key");
    CHECK_ERROR(ROUTE(ROUTE_A
                      ", {'path': '/b', 'upstream': 'u', "
                      "'fetch': '/b'},\n{'path': '/c', 'upstream': 'u', "
                      "'fetch': '/c',\n'strategyy': 'short'}"),
                "t.json:5: routes[2].strategyy: ", "unknown key");
    CHECK_ERROR(WITH("'workers': 1, 'workers': 2"),
                "t.json:2: workers: ", "repeated key");
}

static void
test_types(void)
{
    CHECK_ERROR(WITH("'workers': '4'"), "t.json:2: workers: ",
                "expected an integer or \"auto\", not a string");
    /* a value on the line after its key: the error points at the key */
    CHECK_ERROR(WITH("'workers':\n'4'"),
                "t.json:2: workers: ", "expected an integer");
    CHECK_ERROR(WITH("'workers': 1.5"), "t.json:2: workers: ",
                "expected an integer, not a fractional number");
    CHECK_ERROR(WITH("'access_log': true"), "t.json:2: access_log: ",
                "expected a string, not true or false");
    CHECK_ERROR(WITH("'l1': '64MB'"),
                "t.json:2: l1: ", "expected an object, not a string");
    CHECK_ERROR(WITH("'limits': {'client_timeout': 30}"),
                "t.json:2: limits.client_timeout: ",
                "expected a string, not an integer");
    CHECK_ERROR(
        WITH("'limits': {'max_streams': 0}"),
        "t.json:2: limits.max_streams: ", "0 is out of range (1 to 65536)");
    CHECK_ERROR(
        WITH("'limits': {'max_streams': '128'}"),
        "t.json:2: limits.max_streams: ", "expected an integer, not a string");
    CHECK_ERROR(TOP UP "'routes': {}}",
                "t.json:3: routes: ", "expected an array, not an object");
    CHECK_ERROR(
        ROUTE("{'path': '/a', 'upstream': 'u', 'fetch': '/a', "
              "'json': 'yes'}"),
        "t.json:3: routes[0].json: ", "expected true or false, not a string");
    CHECK_ERROR(ROUTE("{'path': '/a', 'upstream': 'u', 'fetch': '/a', "
                      "'query': [1]}"),
                "t.json:3: routes[0].query[0]: ", "expected a string");
    CHECK_ERROR(ROUTE("{'path': '/a', 'upstream': 'u', 'fetch': '/a', "
                      "'params': []}"),
                "t.json:3: routes[0].params: ", "expected an object");
    CHECK_ERROR(ROUTE("null"), "t.json:3: routes[0]: ", "expected an object");
}

static void
test_missing(void)
{
    CHECK_ERROR("{\n" UP "'routes': [" ROUTE_A "]}",
                "t.json:1: listen: ", "required key is missing");
    CHECK_ERROR(TOP "'routes': [" ROUTE_A "]}",
                "t.json:1: upstreams: ", "required key is missing");
    CHECK_ERROR(TOP UP "'x': 1}", "t.json:3: x: ", "unknown key");
    CHECK_ERROR(TOP UP "'routes': []}",
                "t.json:3: routes: ", "at least one route");
    CHECK_ERROR(TOP "'upstreams': {}, 'routes': [" ROUTE_A "]}",
                "t.json:2: upstreams: ", "at least one upstream");
    CHECK_ERROR(TOP "'upstreams': {'u': {}}, 'routes': [" ROUTE_A "]}",
                "t.json:2: upstreams.u.base: ", "required key is missing");
    CHECK_ERROR(ROUTE("{'upstream': 'u', 'fetch': '/a'}"),
                "t.json:3: routes[0].path: ", "required key is missing");
    CHECK_ERROR(ROUTE("{'path': '/a', 'upstream': 'u'}"),
                "t.json:3: routes[0].fetch: ", "required key is missing");
    CHECK_ERROR(ROUTE("{'path': '/a', 'fetch': '/a'}"),
                "t.json:3: routes[0].upstream: ", "required key is missing");
    CHECK_ERROR(ROUTE("{'path': '/a'}"), "t.json:3: routes[0]: ",
                "needs upstream and fetch, or aggregate");
    /* admin.listen defaults to loopback. */
    struct corral_config *ad = parse(WITH("'admin': {'token': 'x'}"));
    CHECK(ad != NULL && ad->admin != NULL);
    CHECK_EQ_STR(ad->admin->listen.host, "127.0.0.1");
    CHECK_EQ_INT(ad->admin->listen.port, 9090);
    corral_config_free(ad);
    CHECK_ERROR(WITH("'l2': {}"),
                "t.json:2: l2.redis: ", "required key is missing");
}

static void
test_addresses(void)
{
    struct corral_config *cfg =
        parse("{'listen': '[::]:80', 'admin': {'listen': 'localhost:9'},\n" UP
              "'routes': [" ROUTE_A "]}");
    CHECK(cfg != NULL);
    CHECK_EQ_STR(cfg->listen.host, "::");
    CHECK_EQ_INT(cfg->listen.port, 80);
    CHECK_EQ_STR(cfg->admin->listen.host, "localhost");
    CHECK(cfg->admin->token == NULL);
    corral_config_free(cfg);

    CHECK_ERROR("{'listen': 'example.com:80'}", "t.json:1: listen: ",
                "\"example.com:80\": the host must be an IP address");
    CHECK_ERROR("{'listen': '127.0.0.1'}",
                "t.json:1: listen: ", "missing :port");
    CHECK_ERROR("{'listen': '127.0.0.1:0'}",
                "t.json:1: listen: ", "port must be a number from 1 to 65535");
    CHECK_ERROR("{'listen': '127.0.0.1:65536'}",
                "t.json:1: listen: ", "port must be");
    CHECK_ERROR("{'listen': '127.0.0.1:80x'}",
                "t.json:1: listen: ", "port must be");
    CHECK_ERROR("{'listen': '::1:80'}", "t.json:1: listen: ", "needs brackets");
    CHECK_ERROR("{'listen': '[::1]80'}", "t.json:1: listen: ", "[::1]:port");
    CHECK_ERROR("{'listen': ':80'}", "t.json:1: listen: ", "missing host");
    CHECK_ERROR(WITH("'admin': {'listen': '127.0.0.1:8080'}"),
                "t.json:2: admin.listen: ", "the same address as listen");
    CHECK_ERROR(WITH("'admin': {'listen': '127.0.0.1:9', 'token': ''}"),
                "t.json:2: admin.token: ", "empty");
    CHECK_ERROR(WITH("'l2': {'redis': '-bad.host:1'}"),
                "t.json:2: l2.redis: ", "not a host name or IP address");
}

static void
test_values(void)
{
    CHECK_ERROR(WITH("'workers': 1025"),
                "t.json:2: workers: ", "1025 is out of range (0 to 1024)");
    struct corral_config *w0 = parse(WITH("'workers': 'auto'"));
    CHECK(w0 != NULL && w0->workers == 0);
    corral_config_free(w0);
    w0 = parse(WITH("'workers': 0"));
    CHECK(w0 != NULL && w0->workers == 0);
    corral_config_free(w0);
    CHECK_ERROR(WITH("'access_log': ''"), "t.json:2: access_log: ", "empty");
    CHECK_ERROR(WITH("'l1': {'max_bytes': '12XB'}"),
                "t.json:2: l1.max_bytes: ", "\"12XB\": unknown unit");
    CHECK_ERROR(WITH("'l1': {'max_bytes': '0'}"),
                "t.json:2: l1.max_bytes: ", "must be greater than 0");
    CHECK_ERROR(WITH("'limits': {'max_header_bytes': '2MB'}"),
                "t.json:2: limits.max_header_bytes: ",
                "\"2MB\": must be at most 1048576 bytes");
    CHECK_ERROR(WITH("'limits': {'client_timeout': '30'}"),
                "t.json:2: limits.client_timeout: ", "\"30\": missing unit");
    CHECK_ERROR(WITH("'limits': {'client_timeout': '0s'}"),
                "t.json:2: limits.client_timeout: ", "longer than 0");
    CHECK_ERROR(
        WITH("'limits': {'backoff_min': '2s', 'backoff_max': '1s'}"),
        "t.json:2: limits.backoff_max: ", "at least limits.backoff_min");
    CHECK_ERROR(WITH("'limits': {'backoff_max': '2d'}"),
                "t.json:2: limits.backoff_max: ", "at most 1d");
    struct corral_config *bo =
        parse(WITH("'limits': {'backoff_min': '250ms', 'backoff_max': '5s'}"));
    CHECK(bo != NULL && bo->limits.backoff_min_ms == 250 &&
          bo->limits.backoff_max_ms == 5000);
    corral_config_free(bo);
    CHECK_ERROR(WITH("'limits': {'max_clients': -1}"),
                "t.json:2: limits.max_clients: ", "out of range");
    CHECK_ERROR(WITH("'l2': {'redis': 'r:1', 'db': -1}"),
                "t.json:2: l2.db: ", "out of range");
    CHECK_ERROR(WITH("'l2': {'redis': 'r:1', 'db': 65536}"),
                "t.json:2: l2.db: ", "out of range");
    CHECK_ERROR(WITH("'l2': {'redis': 'r:1', 'user': 'u'}"),
                "t.json:2: l2.user: ", "a user needs a password");
    CHECK_ERROR(WITH("'l2': {'redis': 'r:1', 'max_value_bytes': '0'}"),
                "t.json:2: l2.max_value_bytes: ", "greater than 0");
    CHECK_ERROR(WITH("'l2': {'redis': 'r:1', 'max_value_bytes': '1GB'}"),
                "t.json:2: l2.max_value_bytes: ", "at most");
    struct corral_config *l2 = parse(WITH(
        "'l2': {'redis': 'r:1', 'db': 65535, 'user': 'u', 'password': 'p'}"));
    CHECK(l2 != NULL && l2->l2->db == 65535 &&
          l2->l2->max_value_bytes == 1u << 20 &&
          strcmp(l2->l2->user, "u") == 0);
    corral_config_free(l2);
    l2 = parse(WITH("'l2': {'redis': 'r:1', 'max_value_bytes': '64KB'}"));
    CHECK(l2 != NULL && l2->l2->max_value_bytes == 65536);
    corral_config_free(l2);
}

/* l2.sentinel: its fields, its own AUTH, and l2.redis beside it refused
 * at l2.sentinel's line. */
static void
test_l2_sentinel(void)
{
    struct corral_config *cfg = parse(WITH(
        "'l2': {'sentinel': {'master': 'mymaster', 'nodes': "
        "['127.0.0.1:26379', "
        "'s2:26380'], 'user': 'su', 'password': 'sp'}, 'password': 'dp'}"));
    CHECK(cfg != NULL && cfg->l2 != NULL && cfg->l2->sentinel != NULL);
    const struct corral_config_sentinel *s = cfg->l2->sentinel;
    CHECK_EQ_STR(s->master, "mymaster");
    CHECK_EQ_INT(s->n_nodes, 2);
    CHECK_EQ_STR(s->nodes[0].host, "127.0.0.1");
    CHECK_EQ_INT(s->nodes[0].port, 26379);
    CHECK_EQ_STR(s->nodes[1].host, "s2");
    CHECK_EQ_INT(s->nodes[1].port, 26380);
    CHECK_EQ_STR(s->user, "su");
    CHECK_EQ_STR(s->password, "sp");
    CHECK_EQ_STR(cfg->l2->password, "dp");
    CHECK(cfg->l2->redis.host == NULL && cfg->l2->unix_path == NULL);
    corral_config_free(cfg);

    CHECK_ERROR(TOP "'l2': {'redis': 'r:1',\n"
                    "'sentinel': {'master': 'm', 'nodes': ['s:1']}},\n" UP
                    "'routes': [" ROUTE_A "]}",
                "t.json:3: l2.sentinel: ", "mutually exclusive");
    CHECK_ERROR(WITH("'l2': {'sentinel': {'nodes': ['s:1']}}"),
                "t.json:2: l2.sentinel.master: ", "required key is missing");
    CHECK_ERROR(WITH("'l2': {'sentinel': {'master': 'm'}}"),
                "t.json:2: l2.sentinel.nodes: ", "required key is missing");
    CHECK_ERROR(WITH("'l2': {'sentinel': {'master': 'm', 'nodes': []}}"),
                "t.json:2: l2.sentinel.nodes: ", "at least one");
    CHECK_ERROR(WITH("'l2': {'sentinel': {'master': 'm', 'nodes': ['s']}}"),
                "t.json:2: l2.sentinel.nodes[0]: ", "");
    CHECK_ERROR(WITH("'l2': {'sentinel': {'master': 'a b', 'nodes': ['s:1']}}"),
                "t.json:2: l2.sentinel.master: ", "without blanks");
    CHECK_ERROR(
        WITH("'l2': {'sentinel': {'master': 'm', 'nodes': ['s:1'], 'user': "
             "'u'}}"),
        "t.json:2: l2.sentinel.user: ", "a user needs a password");
    CHECK_ERROR(
        WITH("'l2': {'sentinel': {'master': 'm', 'nodes': ['s:1'], 'x': 1}}"),
        "t.json:2: l2.sentinel.x: ", "unknown key");
}

/* l2.cluster: its seeds; any two of l2.redis, l2.sentinel and l2.cluster
 * refused at the second's line; db 0 and a prefix without braces. */
static void
test_l2_cluster(void)
{
    struct corral_config *cfg =
        parse(WITH("'l2': {'cluster': ['127.0.0.1:7000', 'c2:7001'], "
                   "'user': 'u', 'password': 'p', 'prefix': 'app:', "
                   "'timeout': '80ms'}"));
    CHECK(cfg != NULL && cfg->l2 != NULL && cfg->l2->n_cluster == 2);
    CHECK_EQ_STR(cfg->l2->cluster[0].host, "127.0.0.1");
    CHECK_EQ_INT(cfg->l2->cluster[0].port, 7000);
    CHECK_EQ_STR(cfg->l2->cluster[1].host, "c2");
    CHECK_EQ_INT(cfg->l2->cluster[1].port, 7001);
    CHECK_EQ_STR(cfg->l2->prefix, "app:");
    CHECK_EQ_INT(cfg->l2->timeout_ms, 80);
    CHECK(cfg->l2->redis.host == NULL && cfg->l2->sentinel == NULL);
    corral_config_free(cfg);

    CHECK_ERROR(TOP "'l2': {'redis': 'r:1',\n"
                    "'cluster': ['c:1']},\n" UP "'routes': [" ROUTE_A "]}",
                "t.json:3: l2.cluster: ",
                "l2.redis and l2.cluster are mutually exclusive");
    CHECK_ERROR(TOP "'l2': {'cluster': ['c:1'],\n"
                    "'sentinel': {'master': 'm', 'nodes': ['s:1']}},\n" UP
                    "'routes': [" ROUTE_A "]}",
                "t.json:3: l2.sentinel: ",
                "l2.sentinel and l2.cluster are mutually exclusive");
    CHECK_ERROR(WITH("'l2': {'cluster': []}"),
                "t.json:2: l2.cluster: ", "at least one");
    CHECK_ERROR(WITH("'l2': {'cluster': 'c:1'}"), "t.json:2: l2.cluster: ", "");
    CHECK_ERROR(WITH("'l2': {'cluster': ['c']}"),
                "t.json:2: l2.cluster[0]: ", "");
    CHECK_ERROR(TOP "'l2': {'cluster': ['c:1'],\n'db': 2},\n" UP
                    "'routes': [" ROUTE_A "]}",
                "t.json:3: l2.db: ", "one database");
    CHECK_ERROR(TOP "'l2': {'cluster': ['c:1'],\n'prefix': 'a{b}:'},\n" UP
                    "'routes': [" ROUTE_A "]}",
                "t.json:3: l2.prefix: ", "no '{' or '}' on a cluster");
    /* One server takes either. */
    cfg = parse(WITH("'l2': {'redis': 'r:1', 'prefix': 'a{b}:', 'db': 2}"));
    CHECK(cfg != NULL);
    corral_config_free(cfg);
}

/* The admin's own limits: defaults, values, and every bad one. */
static void
test_admin_limits(void)
{
    struct corral_config *cfg =
        parse(WITH("'admin': {'listen': '127.0.0.1:9'}"));
    CHECK(cfg != NULL && cfg->admin != NULL);
    CHECK_EQ_INT(cfg->admin->max_clients, 64);
    CHECK_EQ_INT(cfg->admin->client_timeout_ms, 5000);
    corral_config_free(cfg);
    cfg = parse(WITH("'admin': {'max_clients': 8, 'client_timeout': '250ms'}"));
    CHECK(cfg != NULL && cfg->admin != NULL);
    CHECK_EQ_INT(cfg->admin->max_clients, 8);
    CHECK_EQ_INT(cfg->admin->client_timeout_ms, 250);
    corral_config_free(cfg);

    CHECK_ERROR(WITH("'admin': {'max_clients': 0}"),
                "t.json:2: admin.max_clients: ", "out of range (1 to 100000)");
    CHECK_ERROR(WITH("'admin': {'max_clients': 100001}"),
                "t.json:2: admin.max_clients: ", "out of range");
    CHECK_ERROR(WITH("'admin': {'max_clients': '64'}"),
                "t.json:2: admin.max_clients: ", "expected an integer");
    CHECK_ERROR(WITH("'admin': {'client_timeout': '0s'}"),
                "t.json:2: admin.client_timeout: ", "longer than 0");
    CHECK_ERROR(WITH("'admin': {'client_timeout': '5'}"),
                "t.json:2: admin.client_timeout: ", "missing unit");
    CHECK_ERROR(WITH("'admin': {'client_timeout': '2d'}"),
                "t.json:2: admin.client_timeout: ", "at most 1d");
    CHECK_ERROR(WITH("'admin': {'client_timeout': 5}"),
                "t.json:2: admin.client_timeout: ", "expected a string");
    CHECK_ERROR(WITH("'admin': {'max_client': 8}"),
                "t.json:2: admin.max_client: ", "unknown key");
}

/* One upstream u with the given fields on line 2. */
#define UPSTREAM(fields)                                                       \
    TOP "'upstreams': {'u': {" fields "}},\n'routes': [" ROUTE_A "]}"

static void
test_upstreams(void)
{
    struct corral_config *cfg = parse(UPSTREAM(
        "'base': 'https://[2001:db8::1]:8443/api/v2//', 'rate': '5/s', "
        "'headers': {'X-A': 'a\\tb'}, 'breaker_failures': 0"));
    CHECK(cfg != NULL);
    const struct corral_config_upstream *u = &cfg->upstreams[0];
    CHECK(u->tls);
    CHECK_EQ_STR(u->host, "2001:db8::1");
    CHECK_EQ_INT(u->port, 8443);
    CHECK_EQ_STR(u->prefix, "/api/v2");
    CHECK_EQ_INT(u->rate_count, 5);
    CHECK_EQ_INT(u->rate_window_ms, 1000);
    CHECK_EQ_INT(u->breaker_failures, 0);
    CHECK_EQ_INT(u->n_headers, 1);
    CHECK_EQ_STR(u->headers[0].value, "a\tb");
    corral_config_free(cfg);

    static const struct {
        const char *rate;
        unsigned count;
        uint64_t window_ms;
    } rates[] = {
        {"30/min", 30, 60000}, {"100/h", 100, 3600000}, {"1/15s", 1, 15000},
        {"2/m", 2, 60000},     {"10/250ms", 10, 250},   {"7/1d", 7, 86400000},
    };
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text),
                 UPSTREAM("'base': 'https://h.example', 'rate': '%s'"),
                 rates[i].rate);
        cfg = parse(text);
        CHECK(cfg != NULL);
        CHECK_EQ_INT(cfg->upstreams[0].port, 443);
        CHECK_EQ_INT(cfg->upstreams[0].rate_count, rates[i].count);
        CHECK_EQ_INT(cfg->upstreams[0].rate_window_ms, rates[i].window_ms);
        corral_config_free(cfg);
    }

    CHECK_ERROR(UPSTREAM("'base': 'ftp://h'"), "t.json:2: upstreams.u.base: ",
                "\"ftp://h\": must start with http:// or https://");
    CHECK_ERROR(UPSTREAM("'base': 'http://h/x?a=1'"),
                "t.json:2: upstreams.u.base: ", "query or fragment");
    CHECK_ERROR(UPSTREAM("'base': 'http://h#top'"),
                "t.json:2: upstreams.u.base: ", "query or fragment");
    CHECK_ERROR(UPSTREAM("'base': 'http://me:pw@h'"),
                "t.json:2: upstreams.u.base: ", "user:password@");
    CHECK_ERROR(UPSTREAM("'base': 'http://h:99999'"),
                "t.json:2: upstreams.u.base: ", "port must be");
    CHECK_ERROR(UPSTREAM("'base': 'http://'"),
                "t.json:2: upstreams.u.base: ", "missing host");
    CHECK_ERROR(UPSTREAM("'base': 'http://h/a b'"),
                "t.json:2: upstreams.u.base: ", "spaces");
    CHECK_ERROR(UPSTREAM("'base': 'http://h', 'timeout': '0ms'"),
                "t.json:2: upstreams.u.timeout: ", "longer than 0");
    CHECK_ERROR(UPSTREAM("'base': 'http://h', 'timeout': '2d'"),
                "t.json:2: upstreams.u.timeout: ", "at most 1d");
    CHECK_ERROR(UPSTREAM("'base': 'http://h', 'max_connections': 2000"),
                "t.json:2: upstreams.u.max_connections: ",
                "2000 is out of range (1 to 1024)");
    CHECK_ERROR(UPSTREAM("'base': 'http://h', 'breaker_failures': 10001"),
                "t.json:2: upstreams.u.breaker_failures: ",
                "10001 is out of range (0 to 10000)");
    CHECK_ERROR(UPSTREAM("'base': 'http://h', 'breaker_failures': '5'"),
                "t.json:2: upstreams.u.breaker_failures: ", "");
    static const char *const bad_rates[] = {
        "30", "0/s", "x/s", "5/", "5/fortnight", "5/0s",
        /* once read as 5/s: the unit was cut to fit a buffer */
        "5/000000000000000000000000000001sJUNKJUNK"};
    for (size_t i = 0; i < sizeof(bad_rates) / sizeof(bad_rates[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text),
                 UPSTREAM("'base': 'http://h', 'rate': '%s'"), bad_rates[i]);
        CHECK_ERROR(text, "t.json:2: upstreams.u.rate: \"", bad_rates[i]);
    }
    CHECK_ERROR(
        UPSTREAM("'base': 'http://h', 'headers': {'x y': 'v'}"),
        "t.json:2: upstreams.u.headers.x y: ", "a character HTTP forbids");
    CHECK_ERROR(UPSTREAM("'base': 'http://h', 'headers': {'x': 'a\\r\\nb'}"),
                "t.json:2: upstreams.u.headers.x: ", "control character");
    /* What the fetch module refuses, --check refuses: one rule. */
    static const char *const managed[] = {"TE", "Upgrade", "Keep-Alive",
                                          "Transfer-Encoding", "connection"};
    for (size_t i = 0; i < sizeof(managed) / sizeof(managed[0]); i++) {
        char text[256], prefix[96];
        snprintf(text, sizeof(text),
                 UPSTREAM("'base': 'http://h', 'headers': {'%s': 'x'}"),
                 managed[i]);
        snprintf(prefix, sizeof(prefix),
                 "t.json:2: upstreams.u.headers.%s: ", managed[i]);
        CHECK_ERROR(text, prefix, "a header that corral sets itself");
        CHECK(corral_fetch_check_header(managed[i], "x") != NULL);
    }
    CHECK_ERROR(UPSTREAM("'base': 'http://h', 'headers': {'x': 1}"),
                "t.json:2: upstreams.u.headers.x: ", "expected a string");
    CHECK_ERROR(UPSTREAM("'base': 'http://h', 'headers': {'Host': 'evil'}"),
                "t.json:2: upstreams.u.headers.Host: ", "corral sets itself");
    CHECK_ERROR(UPSTREAM("'base': 'http://h', 'headers': {'a': '1', 'A': '2'}"),
                "t.json:2: upstreams.u.headers.A: ", "repeated header");
    CHECK_ERROR(UPSTREAM("'base': 'http://h', 'ca_file': '/nonexistent/ca'"),
                "t.json:2: upstreams.u.ca_file: ",
                "\"/nonexistent/ca\": No such file or directory");
    CHECK_ERROR(UPSTREAM("'base': 'http://h', 'ca_file': '/'"),
                "t.json:2: upstreams.u.ca_file: ", "not a regular file");
    /* A file that is there but holds no certificate. */
    char junk[PATH_MAX + 64], text[2 * PATH_MAX];
    snprintf(junk, sizeof(junk), "%s/configs/good.json", source_dir());
    snprintf(text, sizeof(text),
             UPSTREAM("'base': 'http://h', 'ca_file': '%s'"), junk);
    CHECK_ERROR(text, "t.json:2: upstreams.u.ca_file: ", "no PEM certificate");
    /* Host names: the rule the fetch module uses. */
    CHECK_ERROR(UPSTREAM("'base': 'http://a..b'"), "t.json:2: upstreams.u.base",
                "");
    CHECK_ERROR(UPSTREAM("'base': 'http://-a.b'"), "t.json:2: upstreams.u.base",
                "");
    CHECK(corral_fetch_check_host("a..b", 4) != NULL);
    CHECK(corral_fetch_check_host("-a.b", 4) != NULL);
    CHECK(corral_fetch_check_host("my_host.internal", 16) == NULL);
    CHECK_ERROR(TOP "'upstreams': {'a b': {'base': 'http://h'}}}",
                "t.json:2: upstreams.a b: ", "upstream names use");
}

static void
test_routes(void)
{
    struct corral_config *cfg =
        parse(ROUTE("{'path': '/', 'upstream': 'u', 'fetch': '/'},\n"
                    "{'path': '/x/{a}/y/{b_2}', 'upstream': 'u',\n"
                    "'fetch': '/q?b={b_2}&a={a}', 'key': 'k:{a}:{b_2}',\n"
                    "'params': {'b_2': '^[0-9]+$'}, 'query': ['c', 'd.e'],\n"
                    "'strategy': '90s', 'stale_while_revalidate': '5s',\n"
                    "'stale_if_error': '1h', 'json': false}"));
    CHECK(cfg != NULL);
    CHECK_EQ_INT(cfg->n_routes, 2);
    const struct corral_config_route *r = &cfg->routes[1];
    CHECK_EQ_STR(r->path, "/x/{a}/y/{b_2}");
    CHECK_EQ_STR(r->fetch, "/q?b={b_2}&a={a}");
    CHECK_EQ_STR(r->key, "k:{a}:{b_2}");
    CHECK_EQ_INT(r->n_params, 2);
    CHECK_EQ_STR(r->params[0].name, "a");
    CHECK_EQ_STR(r->params[0].pattern, CORRAL_CONFIG_DEFAULT_PARAM_PATTERN);
    CHECK_EQ_STR(r->params[1].name, "b_2");
    CHECK_EQ_STR(r->params[1].pattern, "^[0-9]+$");
    CHECK(corral_pattern_match(r->params[1].re, "42", 2));
    CHECK(!corral_pattern_match(r->params[1].re, "4a", 2));
    CHECK_EQ_INT(r->n_query, 2);
    CHECK_EQ_STR(r->query[1].name, "d.e");
    CHECK_EQ_INT(r->strategy.kind, CORRAL_STRATEGY_CUSTOM);
    CHECK_EQ_INT(r->strategy.custom_ms, 90000);
    CHECK_EQ_INT(r->strategy.swr_ms, 5000);
    CHECK_EQ_INT(r->strategy.sie_ms, 3600000);
    CHECK(!r->json);
    corral_config_free(cfg);

#define R(fields)                                                              \
    ROUTE("{'path': '/a', 'upstream': 'u', 'fetch': '/a', " fields "}")
#define P(path, fetch)                                                         \
    ROUTE("{'path': '" path "', 'upstream': 'u', "                             \
          "'fetch': '" fetch "'}")
    CHECK_ERROR(P("a", "/a"),
                "t.json:3: routes[0].path: ", "\"a\": must start with /");
    CHECK_ERROR(P("/a//b", "/a"),
                "t.json:3: routes[0].path: ", "empty segment");
    CHECK_ERROR(P("/a/", "/a"), "t.json:3: routes[0].path: ", "empty segment");
    CHECK_ERROR(P("/a/{1x}", "/a"),
                "t.json:3: routes[0].path: ", "a {param} segment is {name}");
    CHECK_ERROR(P("/a/{}", "/a"),
                "t.json:3: routes[0].path: ", "a {param} segment is {name}");
    CHECK_ERROR(P("/a/v{x}", "/a"),
                "t.json:3: routes[0].path: ", "a segment is {name} or made of");
    CHECK_ERROR(P("/a?b", "/a"),
                "t.json:3: routes[0].path: ", "a segment is {name}");
    CHECK_ERROR(P("/{x}/{x}", "/a"),
                "t.json:3: routes[0].path: ", "a {param} name appears twice");
    CHECK_ERROR(ROUTE(ROUTE_A ",\n" ROUTE_A),
                "t.json:4: routes[1].path: ", "another route has this path");
    CHECK_ERROR(ROUTE("{'path': '/a/{x}', 'upstream': 'u', 'fetch': '/'},\n"
                      "{'path': '/a/{y}', 'upstream': 'u', 'fetch': '/'}"),
                "t.json:4: routes[1].path: ", "another route has this path");
    /* a literal and a param in the same place are not duplicates */
    cfg = parse(ROUTE("{'path': '/a/{x}', 'upstream': 'u', 'fetch': '/'},\n"
                      "{'path': '/a/b', 'upstream': 'u', 'fetch': '/'}"));
    CHECK(cfg != NULL);
    corral_config_free(cfg);

    CHECK_ERROR(ROUTE("{'path': '/a', 'upstream': 'v', 'fetch': '/a'}"),
                "t.json:3: routes[0].upstream: ", "\"v\": no such upstream");
    CHECK_ERROR(P("/a", "a"),
                "t.json:3: routes[0].fetch: ", "must start with /");
    CHECK_ERROR(P("/a", "/a b"),
                "t.json:3: routes[0].fetch: ", "without spaces");
    CHECK_ERROR(P("/a", "/a#b"), "t.json:3: routes[0].fetch: ", "or #");
    CHECK_ERROR(P("/a/{x}", "/a?id={y}"), "t.json:3: routes[0].fetch: ",
                "{y} is not a {param} of the path");
    CHECK_ERROR(P("/a/{x}", "/a?id={x"),
                "t.json:3: routes[0].fetch: ", "{ must open a {param}");
    CHECK_ERROR(P("/a/{x}", "/a?id=x}"),
                "t.json:3: routes[0].fetch: ", "} without {");
    CHECK_ERROR(ROUTE("{'path': '/a/{x}', 'upstream': 'u', 'fetch': '/',\n"
                      "'key': 'k'}"),
                "t.json:4: routes[0].key: \"k\": ", "must hold every {param}");
    CHECK_ERROR(ROUTE("{'path': '/a', 'upstream': 'u', 'fetch': '/a', "
                      "'key': 'k'},\n"
                      "{'path': '/b', 'upstream': 'u', 'fetch': '/b', "
                      "'key': 'k'}"),
                "t.json:4: routes[1].key: ", "may build the same cache key");
    /* Keys that can meet: a literal and a template, a key and a path. */
    CHECK_ERROR(ROUTE("{'path': '/a', 'upstream': 'u', 'fetch': '/a', "
                      "'key': 'btc_price'},\n"
                      "{'path': '/b/{coin}', 'upstream': 'u', 'fetch': '/b', "
                      "'key': '{coin}_price'}"),
                "t.json:4: routes[1].key: ", "may build the same cache key");
    CHECK_ERROR(ROUTE("{'path': '/x', 'upstream': 'u', 'fetch': '/a'},\n"
                      "{'path': '/b', 'upstream': 'u', 'fetch': '/b', "
                      "'key': '/x'}"),
                "t.json:4: routes[1].key: ", "may build the same cache key");
    /* Forwarded query values are part of the key: /a?q=x is /a's. */
    CHECK_ERROR(ROUTE("{'path': '/a', 'upstream': 'u', 'fetch': '/a', "
                      "'query': ['q']},\n"
                      "{'path': '/b', 'upstream': 'u', 'fetch': '/b', "
                      "'key': '/a?q=x'}"),
                "t.json:4: routes[1].key: ", "may build the same cache key");
    CHECK_ERROR(ROUTE("{'path': '/b', 'upstream': 'u', 'fetch': '/b', "
                      "'key': '/a?q=x'},\n"
                      "{'path': '/a', 'upstream': 'u', 'fetch': '/a', "
                      "'query': ['q']}"),
                "t.json:4: routes[1]", "may build the same cache key");
    CHECK_ERROR(ROUTE("{'path': '/k/{a}/{b}', 'upstream': 'u', 'fetch': '/', "
                      "'key': 'k{a}{b}'}"),
                "t.json:3: routes[0].key: ", "side by side");
    /* TTL jitter: 10% unless told, 0..50%. */
    struct corral_config *tj = parse(R("'ttl_jitter': '0%'"));
    CHECK(tj != NULL && tj->routes[0].strategy.jitter_pct == 0);
    corral_config_free(tj);
    tj = parse(R("'strategy': 'short'"));
    CHECK(tj != NULL && tj->routes[0].strategy.jitter_pct == 10);
    corral_config_free(tj);
    CHECK_ERROR(R("'ttl_jitter': '60%'"),
                "t.json:3: routes[0].ttl_jitter: ", "a percentage from");
    CHECK_ERROR(R("'ttl_jitter': '10'"),
                "t.json:3: routes[0].ttl_jitter: ", "a percentage from");
    CHECK_ERROR(R("'ttl_jitter': '-5%'"),
                "t.json:3: routes[0].ttl_jitter: ", "a percentage from");
    /* Early refresh: beta 1 unless told, 0 (off) to 10. */
    struct corral_config *er = parse(R("'early_refresh': 0.5"));
    CHECK(er != NULL && er->routes[0].strategy.beta == 0.5);
    corral_config_free(er);
    er = parse(R("'early_refresh': 0"));
    CHECK(er != NULL && er->routes[0].strategy.beta == 0);
    corral_config_free(er);
    er = parse(R("'strategy': 'short'"));
    CHECK(er != NULL && er->routes[0].strategy.beta == 1);
    corral_config_free(er);
    CHECK_ERROR(R("'early_refresh': 11"), "t.json:3: routes[0].early_refresh: ",
                "out of range (0 to 10)");
    CHECK_ERROR(R("'early_refresh': -0.5"),
                "t.json:3: routes[0].early_refresh: ", "out of range");
    CHECK_ERROR(R("'early_refresh': '1'"),
                "t.json:3: routes[0].early_refresh: ", "must be a number");
    /* Negative caching: 4xx only, each with a duration. */
    struct corral_config *ce =
        parse(R("'cache_errors': {'404': '1m', '410': '10s'}"));
    CHECK(ce != NULL);
    CHECK_EQ_INT(ce->routes[0].n_cache_errors, 2);
    CHECK_EQ_INT(ce->routes[0].cache_errors[0].status, 404);
    CHECK_EQ_INT(ce->routes[0].cache_errors[0].ttl_ms, 60000);
    CHECK_EQ_INT(ce->routes[0].cache_errors[1].ttl_ms, 10000);
    corral_config_free(ce);
    CHECK_ERROR(R("'cache_errors': {'500': '1m'}"),
                "t.json:3: routes[0].cache_errors.500: ", "only 4xx");
    CHECK_ERROR(R("'cache_errors': {'4x4': '1m'}"),
                "t.json:3: routes[0].cache_errors.4x4: ", "only 4xx");
    CHECK_ERROR(R("'cache_errors': {'404': 60}"),
                "t.json:3: routes[0].cache_errors.404: ", "expected a string");
    CHECK_ERROR(R("'cache_errors': ['404']"),
                "t.json:3: routes[0].cache_errors: ", "expected an object");
    CHECK_ERROR(R("'strategy': '400d'"),
                "t.json:3: routes[0].strategy: ", "at most 365d");
    CHECK_ERROR(R("'stale_if_error': '999999999d'"),
                "t.json:3: routes[0].stale_if_error: ", "at most 365d");
    CHECK_ERROR(R("'query': ['a','b','c','d','e','f','g','h','i']"),
                "t.json:3: routes[0].query[8]: ", "more than 8 query names");
    CHECK_ERROR(R("'key': ''"), "t.json:3: routes[0].key: ", "non-empty");
    CHECK_ERROR(R("'params': {'id': '^x$'}"), "t.json:3: routes[0].params.id: ",
                "not a {param} of the route's path");
    CHECK_ERROR(ROUTE("{'path': '/p/{id}', 'upstream': 'u', 'fetch': '/',\n"
                      "'params': {'id': '^[a-z+$'}}"),
                "t.json:4: routes[0].params.id: \"^[a-z+$\": ", "");
    CHECK_ERROR(ROUTE("{'path': '/p/{id}', 'upstream': 'u', 'fetch': '/',\n"
                      "'params': {'id': 5}}"),
                "t.json:4: routes[0].params.id: ", "expected a string");
    CHECK_ERROR(R("'query': ['a', 'b', 'a']"),
                "t.json:3: routes[0].query[2]: ", "\"a\": repeated");
    CHECK_ERROR(R("'query': ['a=b']"),
                "t.json:3: routes[0].query[0]: ", "names use letters");
    CHECK_ERROR(R("'strategy': 'fast'"),
                "t.json:3: routes[0].strategy: ", "\"fast\": not a strategy");
    CHECK_ERROR(R("'strategy': '0s'"),
                "t.json:3: routes[0].strategy: ", "longer than 0");
    CHECK_ERROR(R("'stale_if_error': 'soon'"),
                "t.json:3: routes[0].stale_if_error: ", "\"soon\"");
#undef R
#undef P
}

/* upstream_cache_control: on a route, or on its upstream for every route
 * of it that says nothing; three words, nothing else; not on an
 * aggregate. */
static void
test_upstream_cache_control(void)
{
    struct corral_config *cfg =
        parse(TOP "'upstreams': {'u': {'base': 'http://127.0.0.1:8081', "
                  "'upstream_cache_control': 'ignore'},\n"
                  "'v': {'base': 'http://127.0.0.1:8082'}},\n"
                  "'routes': [{'path': '/a', 'upstream': 'u', 'fetch': '/a'},\n"
                  "{'path': '/b', 'upstream': 'u', 'fetch': '/b', "
                  "'upstream_cache_control': 'honour'},\n"
                  "{'path': '/c', 'upstream': 'v', 'fetch': '/c'},\n"
                  "{'path': '/d', 'upstream': 'v', 'fetch': '/d', "
                  "'upstream_cache_control': 'ignore'},\n"
                  "{'path': '/e', 'upstream': 'u', 'fetch': '/e', "
                  "'upstream_cache_control': 'default'},\n"
                  "{'path': '/all', 'aggregate': {'a': '/a', 'c': '/c'}}]}");
    CHECK(cfg != NULL);
    CHECK_EQ_INT(cfg->upstreams[0].cache_control, CORRAL_CONFIG_CC_IGNORE);
    CHECK_EQ_INT(cfg->upstreams[1].cache_control, CORRAL_CONFIG_CC_DEFAULT);
    CHECK_EQ_INT(cfg->routes[0].cache_control, CORRAL_CONFIG_CC_IGNORE);
    CHECK_EQ_INT(cfg->routes[1].cache_control, CORRAL_CONFIG_CC_HONOUR);
    CHECK_EQ_INT(cfg->routes[2].cache_control, CORRAL_CONFIG_CC_DEFAULT);
    CHECK_EQ_INT(cfg->routes[3].cache_control, CORRAL_CONFIG_CC_IGNORE);
    CHECK_EQ_INT(cfg->routes[4].cache_control, CORRAL_CONFIG_CC_DEFAULT);
    CHECK_EQ_STR(corral_config_cache_control_name(cfg->routes[1].cache_control),
                 "honour");
    corral_config_free(cfg);

    CHECK_ERROR(ROUTE("{'path': '/a', 'upstream': 'u', 'fetch': '/a', "
                      "'upstream_cache_control': 'honor'}"),
                "t.json:3: routes[0].upstream_cache_control: ",
                "\"honor\": one of \"default\", \"ignore\", \"honour\"");
    CHECK_ERROR(
        ROUTE("{'path': '/a', 'upstream': 'u', 'fetch': '/a', "
              "'upstream_cache_control': true}"),
        "t.json:3: routes[0].upstream_cache_control: ", "expected a string");
    CHECK_ERROR(
        UPSTREAM("'base': 'http://127.0.0.1:1', "
                 "'upstream_cache_control': ''"),
        "t.json:2: upstreams.u.upstream_cache_control: ", "one of \"default\"");
    CHECK_ERROR(ROUTE(ROUTE_A ",\n{'path': '/all', 'aggregate': {'a': '/a'}, "
                              "'upstream_cache_control': 'ignore'}"),
                "t.json:4: routes[1].upstream_cache_control: ",
                "not allowed in an aggregate route");
}

static void
test_aggregates(void)
{
#define AGG(members) "{'path': '/all', 'aggregate': {" members "}}"
    struct corral_config *cfg = parse(
        ROUTE("{'path': '/p/{id}', 'upstream': 'u', 'fetch': '/p/{id}'},\n"
              "{'path': '/p/top', 'upstream': 'u', 'fetch': '/top'},\n"
              "{'path': '/g', 'upstream': 'u', 'fetch': '/g', 'query': "
              "['c']},\n" AGG("'one': '/p/eth', 'top': '/p/top', 'eur': "
                              "'/g?c=eur'") ",\n"
                                            "{'path': '/all2', 'aggregate': "
                                            "{'x': '/g'}, 'key': 'all2', "
                                            "'strategy': 'long'}"));
    CHECK(cfg != NULL);
    const struct corral_config_route *r = &cfg->routes[3];
    CHECK(r->upstream == NULL && r->fetch == NULL);
    CHECK_EQ_INT(r->n_members, 3);
    CHECK_EQ_STR(r->members[0].name, "one");
    CHECK_EQ_STR(r->members[0].path, "/p/eth");
    CHECK(r->members[0].route == &cfg->routes[0]);
    CHECK(r->members[1].route == &cfg->routes[1]); /* literal beats {id} */
    CHECK_EQ_STR(r->members[2].path, "/g?c=eur");
    CHECK(r->members[2].route == &cfg->routes[2]);
    CHECK_EQ_STR(cfg->routes[4].key, "all2");
    CHECK_EQ_INT(cfg->routes[4].strategy.kind, CORRAL_STRATEGY_LONG);
    corral_config_free(cfg);

    CHECK_ERROR(
        ROUTE(ROUTE_A ",\n" AGG("'a': '/a', 'b': '/b'")),
        "t.json:4: routes[1].aggregate.b: ", "\"/b\": matches no route");
    CHECK_ERROR(ROUTE("{'path': '/p/{id}', 'upstream': 'u', 'fetch': '/',\n"
                      "'params': {'id': '^[a-z]+$'}},\n" AGG("'x': '/p/42'")),
                "t.json:5: routes[1].aggregate.x: ",
                "\"/p/42\": {id} fails its pattern in routes[0]");
    CHECK_ERROR(
        ROUTE(ROUTE_A ",\n" AGG(
            "'a': '/a'") ",\n"
                         "{'path': '/b', 'aggregate': {'all': '/all'}}"),
        "t.json:5: routes[2].aggregate.all: ",
        "an aggregate cannot hold another");
    CHECK_ERROR(ROUTE(ROUTE_A ",\n" AGG("")),
                "t.json:4: routes[1].aggregate: ", "at least one member");
    CHECK_ERROR(ROUTE(ROUTE_A ",\n" AGG("'errors': '/a'")),
                "t.json:4: routes[1].aggregate.errors: ", "reserved");
    CHECK_ERROR(ROUTE(ROUTE_A ",\n" AGG("'a b': '/a'")),
                "t.json:4: routes[1].aggregate.a b: ", "member names use");
    CHECK_ERROR(ROUTE(ROUTE_A ",\n" AGG("'a': 'a'")),
                "t.json:4: routes[1].aggregate.a: ", "starting with /");
    CHECK_ERROR(ROUTE("{'path': '/a', 'upstream': 'u', 'fetch': '/a', "
                      "'json': false},\n" AGG("'a': '/a'")),
                "t.json:4: routes[1].aggregate.a: ",
                "\"/a\": routes[0] has json: false");
    CHECK_ERROR(ROUTE(ROUTE_A ",\n" AGG("'a': '/a?x=1'")),
                "t.json:4: routes[1].aggregate.a: ",
                "\"/a?x=1\": routes[0] does not forward");
    CHECK_ERROR(ROUTE(ROUTE_A ",\n{'path': '/all', 'upstream': 'u',\n"
                              "'aggregate': {'a': '/a'}}"),
                "t.json:5: routes[1].aggregate: ", "not both");
    CHECK_ERROR(
        ROUTE(ROUTE_A ",\n{'path': '/all', 'json': true,\n"
                      "'aggregate': {'a': '/a'}}"),
        "t.json:4: routes[1].json: ", "not allowed in an aggregate route");
    CHECK_ERROR(ROUTE(ROUTE_A ",\n{'path': '/all/{x}',\n"
                              "'aggregate': {'a': '/a'}}"),
                "t.json:4: routes[1].path: ", "no {param} segments");
    CHECK_ERROR(ROUTE(ROUTE_A ",\n{'path': '/all', 'aggregate': []}"),
                "t.json:4: routes[1].aggregate: ", "expected an object");
#undef AGG
}

static void
test_expand(void)
{
    char *out = NULL, err[256];
    setenv("CORRAL_TEST_A", "alpha", 1);
    setenv("CORRAL_TEST_EMPTY", "", 1);
    unsetenv("CORRAL_TEST_UNSET");

    CHECK_EQ_INT(corral_config_expand("x${CORRAL_TEST_A}-${CORRAL_TEST_A}$y",
                                      &out, err, sizeof(err)),
                 0);
    CHECK_EQ_STR(out, "xalpha-alpha$y");
    free(out);
    CHECK_EQ_INT(
        corral_config_expand("[${CORRAL_TEST_EMPTY}]$", &out, err, sizeof(err)),
        0);
    CHECK_EQ_STR(out, "[]$");
    free(out);

    out = (char *)"untouched";
    CHECK_EQ_INT(
        corral_config_expand("a${CORRAL_TEST_UNSET}", &out, err, sizeof(err)),
        -EINVAL);
    CHECK(out == NULL);
    CHECK_EQ_STR(err, "${CORRAL_TEST_UNSET} is not set");
    CHECK_EQ_INT(
        corral_config_expand("a${CORRAL_TEST_A", &out, err, sizeof(err)),
        -EINVAL);
    CHECK(strstr(err, "${ must be followed by NAME}") != NULL);
    CHECK_EQ_INT(corral_config_expand("${1X}", &out, err, sizeof(err)),
                 -EINVAL);
    CHECK_EQ_INT(corral_config_expand("${}", &out, err, sizeof(err)), -EINVAL);

    /* expansion applies to every string in the file */
    setenv("CORRAL_TEST_HOST", "origin.internal", 1);
    setenv("CORRAL_TEST_STRATEGY", "medium", 1);
    struct corral_config *cfg = parse(
        TOP "'upstreams': {'u': {'base': 'http://${CORRAL_TEST_HOST}:81',\n"
            "'headers': {'x-key': 'k=${CORRAL_TEST_A}'}}},\n"
            "'routes': [{'path': '/a', 'upstream': 'u',\n"
            "'fetch': '/a?key=${CORRAL_TEST_A}',\n"
            "'strategy': '${CORRAL_TEST_STRATEGY}'}]}");
    CHECK(cfg != NULL);
    CHECK_EQ_STR(cfg->upstreams[0].host, "origin.internal");
    CHECK_EQ_STR(cfg->upstreams[0].headers[0].value, "k=alpha");
    CHECK_EQ_STR(cfg->routes[0].fetch, "/a?key=alpha");
    CHECK_EQ_INT(cfg->routes[0].strategy.kind, CORRAL_STRATEGY_MEDIUM);
    corral_config_free(cfg);

    CHECK_ERROR(WITH("'admin': {'listen': '127.0.0.1:9',\n"
                     "'token': '${CORRAL_TEST_UNSET}'}"),
                "t.json:3: admin.token: ", "${CORRAL_TEST_UNSET} is not set");
}

/* Errors about values that came from the environment must not show them. */
static void
test_secrets_stay_out(void)
{
    static const struct {
        const char *text, *path; /* path: where the error must point */
    } cases[] = {
        {"{'listen': '${CORRAL_TEST_SECRET}'}", "listen"},
        {UPSTREAM("'base': '${CORRAL_TEST_SECRET}'"), "upstreams.u.base"},
        {UPSTREAM("'base': 'http://h/${CORRAL_TEST_SECRET}?'"),
         "upstreams.u.base"},
        {UPSTREAM("'base': 'http://h', 'rate': '${CORRAL_TEST_SECRET}'"),
         "upstreams.u.rate"},
        {UPSTREAM("'base': 'http://h', 'ca_file': '${CORRAL_TEST_SECRET}'"),
         "upstreams.u.ca_file"},
        {UPSTREAM("'base': 'http://h', 'timeout': '${CORRAL_TEST_SECRET}'"),
         "upstreams.u.timeout"},
        {UPSTREAM("'base': 'http://h', "
                  "'headers': {'k': '${CORRAL_TEST_SECRET}\\r\\n'}"),
         "upstreams.u.headers.k"},
        {UPSTREAM("'base': 'http://h', "
                  "'headers': {'k': '${CORRAL_TEST_CRLF}'}"),
         "upstreams.u.headers.k"},
        {WITH("'l2': {'redis': '${CORRAL_TEST_SECRET}'}"), "l2.redis"},
        {WITH("'limits': {'max_body_bytes': '${CORRAL_TEST_SECRET}'}"),
         "limits.max_body_bytes"},
        {ROUTE("{'path': '/a', 'upstream': 'u', "
               "'fetch': '/a?k=${CORRAL_TEST_SECRET} '}"),
         "routes[0].fetch"},
        {ROUTE("{'path': '/a', 'upstream': 'u', "
               "'fetch': '/a?k=${CORRAL_TEST_BRACED}'}"),
         "routes[0].fetch"},
        {ROUTE("{'path': '/a/{x}', 'upstream': 'u', "
               "'fetch': '/a?k={${CORRAL_TEST_SECRET}}'}"),
         "routes[0].fetch"},
        {ROUTE("{'path': '/a/{x}', 'upstream': 'u', 'fetch': '/a', "
               "'key': '${CORRAL_TEST_SECRET}'}"),
         "routes[0].key"},
        {ROUTE("{'path': '/a', 'upstream': 'u', 'fetch': '/a', "
               "'strategy': '${CORRAL_TEST_SECRET}'}"),
         "routes[0].strategy"},
        {ROUTE("{'path': '/a', 'upstream': '${CORRAL_TEST_SECRET}', "
               "'fetch': '/a'}"),
         "routes[0].upstream"},
        {ROUTE("{'path': '/a/{x}', 'upstream': 'u', 'fetch': '/a', "
               "'params': {'x': '${CORRAL_TEST_SECRET}['}}"),
         "routes[0].params.x"},
        {ROUTE(ROUTE_A ", {'path': '/all', "
                       "'aggregate': {'a': '/${CORRAL_TEST_SECRET}'}}"),
         "routes[1].aggregate.a"},
        {ROUTE("{'path': '/a/{${CORRAL_TEST_SECRET}}/{${CORRAL_TEST_SECRET}}', "
               "'upstream': 'u', 'fetch': '/a'}"),
         "routes[0].path"},
        {ROUTE("{'path': '/a/{${CORRAL_TEST_SECRET}}', 'upstream': 'u', "
               "'fetch': '/a', 'key': 'k'}"),
         "routes[0].key"},
        {ROUTE("{'path': '/${CORRAL_TEST_SECRET}', 'upstream': 'u', "
               "'fetch': '/a', 'json': false}, {'path': '/all', "
               "'aggregate': {'a': '/${CORRAL_TEST_SECRET}'}}"),
         "routes[1].aggregate.a"},
    };
    setenv("CORRAL_TEST_SECRET", SECRET, 1);
    setenv("CORRAL_TEST_CRLF", SECRET "\r\nX-Injected: 1", 1);
    setenv("CORRAL_TEST_BRACED", "{" SECRET "}", 1);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char want[128];
        snprintf(want, sizeof(want), ": %s: ", cases[i].path);
        struct corral_config *cfg = parse(cases[i].text);
        if (cfg != NULL || strstr(errbuf, want) == NULL ||
            strstr(errbuf, SECRET) != NULL)
            fprintf(stderr, "case %zu: got \"%s\"\n", i,
                    cfg ? "(parsed)" : errbuf);
        corral_config_free(cfg);
        CHECK(cfg == NULL);
        CHECK(strstr(errbuf, want) != NULL);
        CHECK(strstr(errbuf, SECRET) == NULL);
    }
}

/* The directory holding this source file, so tests/configs/ can be found
 * whether __FILE__ is absolute, relative to the build directory (meson) or
 * to the working directory. */
static const char *
source_dir(void)
{
    static char dir[PATH_MAX];
    char file[PATH_MAX], exe[PATH_MAX], probe[PATH_MAX + 32];
    snprintf(file, sizeof(file), "%s", __FILE__);
    const char *d = dirname(file);
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    exe[n > 0 ? n : 0] = '\0';
    /* the test binary sits in <build>/tests/ */
    const char *bases[] = {"", n > 0 ? dirname(dirname(exe)) : ".", "."};
    for (size_t i = 0; i < sizeof(bases) / sizeof(bases[0]); i++) {
        if ((d[0] == '/') != (i == 0))
            continue;
        snprintf(dir, sizeof(dir), "%s%s%s", bases[i], i ? "/" : "", d);
        snprintf(probe, sizeof(probe), "%s/configs/good.json", dir);
        if (access(probe, R_OK) == 0)
            return dir;
    }
    fprintf(stderr, "cannot find tests/configs/ from %s\n", __FILE__);
    exit(1);
}

static struct corral_config *
load(const char *name)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/configs/%s", source_dir(), name);
    return corral_config_load(path, errbuf, sizeof(errbuf));
}

static void
test_good_file(void)
{
    char ca[PATH_MAX + 64];
    snprintf(ca, sizeof(ca), "%s/configs/ca.pem", source_dir());
    setenv("CORRAL_TEST_TOKEN", "tok-" SECRET, 1);
    setenv("CORRAL_TEST_KEY", "key-" SECRET, 1);
    setenv("CORRAL_TEST_CA", ca, 1);
    struct corral_config *cfg = load("good.json");
    if (cfg == NULL)
        fprintf(stderr, "%s\n", errbuf);
    CHECK(cfg != NULL);

    CHECK_EQ_STR(cfg->listen.host, "127.0.0.1");
    CHECK_EQ_INT(cfg->listen.port, 8080);
    CHECK(cfg->admin != NULL);
    CHECK_EQ_STR(cfg->admin->listen.host, "::1");
    CHECK_EQ_INT(cfg->admin->listen.port, 9090);
    CHECK_EQ_STR(cfg->admin->token, "tok-" SECRET);
    CHECK_EQ_INT(cfg->workers, 4);
    CHECK_EQ_STR(cfg->access_log, "-");
    CHECK_EQ_INT(cfg->l1_max_bytes, 64 << 20);
    CHECK(cfg->l2 != NULL);
    CHECK_EQ_STR(cfg->l2->redis.host, "redis.internal");
    CHECK_EQ_INT(cfg->l2->redis.port, 6380);
    CHECK_EQ_INT(cfg->l2->db, 2);
    CHECK_EQ_STR(cfg->l2->prefix, "gw:");
    CHECK_EQ_INT(cfg->l2->timeout_ms, 250);
    CHECK_EQ_INT(cfg->limits.max_header_bytes, 16 << 10);
    CHECK_EQ_INT(cfg->limits.client_timeout_ms, 10000);
    CHECK_EQ_INT(cfg->limits.max_clients, 500);
    CHECK_EQ_INT(cfg->limits.max_waiters, 50);
    CHECK_EQ_INT(cfg->limits.max_body_bytes, 2 << 20);

    CHECK_EQ_INT(cfg->n_upstreams, 2);
    const struct corral_config_upstream *cg = &cfg->upstreams[0],
                                        *ta = &cfg->upstreams[1];
    CHECK_EQ_STR(cg->name, "coingecko");
    CHECK(cg->tls);
    CHECK_EQ_STR(cg->host, "api.coingecko.com");
    CHECK_EQ_INT(cg->port, 443);
    CHECK_EQ_STR(cg->prefix, "");
    CHECK_EQ_INT(cg->timeout_ms, 5000);
    CHECK_EQ_INT(cg->max_connections, 16);
    CHECK_EQ_INT(cg->rate_count, 30);
    CHECK_EQ_INT(cg->rate_window_ms, 60000);
    CHECK_EQ_INT(cg->n_headers, 2);
    CHECK_EQ_STR(cg->headers[0].name, "x-cg-demo-api-key");
    CHECK_EQ_STR(cg->headers[0].value, "key-" SECRET);
    CHECK_EQ_STR(cg->headers[1].name, "Accept");
    CHECK_EQ_STR(cg->headers[1].value, "application/json");
    CHECK_EQ_STR(cg->ca_file, ca);
    CHECK_EQ_STR(ta->name, "taapi");
    CHECK(!ta->tls);
    CHECK_EQ_STR(ta->host, "127.0.0.1");
    CHECK_EQ_INT(ta->port, 8081);
    CHECK_EQ_STR(ta->prefix, "/v1");
    CHECK_EQ_INT(ta->timeout_ms, 10000);
    CHECK_EQ_INT(ta->max_connections, 8);
    CHECK_EQ_INT(ta->rate_count, 1);
    CHECK_EQ_INT(ta->rate_window_ms, 15000);
    CHECK(ta->ca_file == NULL);

    CHECK_EQ_INT(cfg->n_routes, 6);
    const struct corral_config_route *r = cfg->routes;
    CHECK_EQ_STR(r[0].path, "/api/btc");
    CHECK(r[0].upstream == cg);
    CHECK_EQ_STR(r[0].fetch,
                 "/api/v3/simple/price?ids=bitcoin&vs_currencies=usd");
    CHECK_EQ_STR(r[0].key, "btc_coingecko_30s");
    CHECK_EQ_INT(r[0].strategy.kind, CORRAL_STRATEGY_REALTIME);
    CHECK_EQ_INT(r[0].strategy.swr_ms, 30000);
    CHECK_EQ_INT(r[0].strategy.sie_ms, 600000);
    CHECK(r[0].json);
    CHECK(r[1].upstream == ta);
    CHECK_EQ_STR(r[1].fetch,
                 "/rsi?secret=key-" SECRET "&symbol=BTC/USDT&interval=1h");
    CHECK_EQ_INT(r[1].strategy.kind, CORRAL_STRATEGY_LONG);
    CHECK_EQ_INT(r[2].strategy.kind, CORRAL_STRATEGY_CUSTOM);
    CHECK_EQ_INT(r[2].strategy.custom_ms, 45000);
    CHECK(r[2].key == NULL);
    CHECK_EQ_INT(r[2].n_query, 2);
    CHECK_EQ_STR(r[2].query[0].name, "currency");
    CHECK_EQ_STR(r[2].query[1].name, "lang");
    CHECK_EQ_INT(r[3].strategy.kind, CORRAL_STRATEGY_SHORT);
    CHECK_EQ_INT(r[3].n_params, 1);
    CHECK_EQ_STR(r[3].params[0].pattern, "^[a-z0-9-]{1,64}$");
    CHECK_EQ_INT(r[4].n_params, 2);
    CHECK_EQ_STR(r[4].params[0].name, "symbol");
    CHECK_EQ_STR(r[4].params[0].pattern, CORRAL_CONFIG_DEFAULT_PARAM_PATTERN);
    CHECK_EQ_STR(r[4].params[1].name, "interval");
    CHECK(corral_pattern_match(r[4].params[1].re, "4h", 2));
    CHECK(!corral_pattern_match(r[4].params[1].re, "5h", 2));
    CHECK_EQ_STR(r[4].key, "candles:{symbol}:{interval}");
    CHECK(!r[4].json);
    CHECK_EQ_STR(r[5].path, "/api/dashboard");
    CHECK(r[5].upstream == NULL);
    CHECK_EQ_INT(r[5].strategy.kind, CORRAL_STRATEGY_REALTIME);
    CHECK_EQ_INT(r[5].n_members, 3);
    CHECK_EQ_STR(r[5].members[0].name, "btc");
    CHECK(r[5].members[0].route == &r[0]);
    CHECK_EQ_STR(r[5].members[1].name, "price_eth");
    CHECK_EQ_STR(r[5].members[1].path, "/api/price/ethereum");
    CHECK(r[5].members[1].route == &r[3]);
    CHECK(r[5].members[2].route == &r[2]);
    corral_config_free(cfg);

    /* the same file without its secrets names the first missing one */
    unsetenv("CORRAL_TEST_TOKEN");
    CHECK(load("good.json") == NULL);
    CHECK(strstr(errbuf, "configs/good.json:5: admin.token: "
                         "${CORRAL_TEST_TOKEN} is not set") != NULL);
}

static void
test_bad_files(void)
{
    static const struct {
        const char *file, *error; /* error follows "FILE" */
    } cases[] = {
        {"bad-syntax.json", ":6: invalid JSON: "},
        {"bad-unknown-key.json", ":8: routes[2].strategyy: unknown key"},
        {"bad-duplicate-route.json",
         ":6: routes[1].path: \"/coin/{name}\": another route has this path"},
        {"bad-upstream-ref.json",
         ":5: routes[0].upstream: \"nope\": no such upstream"},
        {"bad-aggregate.json",
         ":6: routes[1].aggregate.b: \"/b\": matches no route"},
        {"bad-regex.json", ":6: routes[0].params.id: \"^[a-z+$\": "},
        {"bad-env.json", ":5: upstreams.u.headers.authorization: "
                         "${CORRAL_TEST_UNSET} is not set"},
        {"bad-type.json",
         ":3: workers: expected an integer or \"auto\", not a string"},
        {"bad-missing.json", ":3: upstreams.u.base: required key is missing"},
        {"no-such-file.json", ": No such file or directory"},
    };
    unsetenv("CORRAL_TEST_UNSET");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char want[PATH_MAX + 256];
        snprintf(want, sizeof(want), "%s/configs/%s%s", source_dir(),
                 cases[i].file, cases[i].error);
        struct corral_config *cfg = load(cases[i].file);
        if (cfg != NULL || strncmp(errbuf, want, strlen(want)) != 0)
            fprintf(stderr, "%s: got \"%s\"\n", cases[i].file,
                    cfg ? "(parsed)" : errbuf);
        corral_config_free(cfg);
        CHECK(cfg == NULL);
        CHECK(strncmp(errbuf, want, strlen(want)) == 0);
    }
}

/* An aggregate's member resolves through the trie that serves requests
 * (route.c): for /x/y, /x/{b} (a literal first segment) beats /{a}/y,
 * whichever is listed first, and the member is checked against that
 * route's rules. */
static void
test_member_resolved_by_the_serving_trie(void)
{
#define AGG(members) "{'path': '/all', 'aggregate': {" members "}}"
    CHECK_ERROR(ROUTE("{'path': '/{a}/y', 'upstream': 'u', 'fetch': '/y'},\n"
                      "{'path': '/x/{b}', 'upstream': 'u', 'fetch': '/x',\n"
                      "'json': false},\n" AGG("'m': '/x/y'")),
                "t.json:6: routes[2].aggregate.m: ",
                "\"/x/y\": routes[1] has json: false");
    struct corral_config *cfg =
        parse(ROUTE("{'path': '/{a}/y', 'upstream': 'u', 'fetch': '/y',\n"
                    "'json': false},\n"
                    "{'path': '/x/{b}', 'upstream': 'u', 'fetch': '/x'},\n" AGG(
                        "'m': '/x/y'")));
    if (cfg == NULL)
        fprintf(stderr, "got \"%s\"\n", errbuf);
    CHECK(cfg != NULL);
    const struct corral_config_member *m = &cfg->routes[2].members[0];
    CHECK(m->route == &cfg->routes[1]);
    /* The match the requests get: the same route, its key. */
    struct corral_route_match rm;
    CHECK_EQ_INT(corral_route_match(cfg->table, "/x/y", 4, "", 0, &rm),
                 CORRAL_ROUTE_OK);
    CHECK(rm.route == m->route);
    CHECK_EQ_STR(m->match->key, "/x/y");
    CHECK_EQ_STR(m->match->values[0], "y");
    corral_config_free(cfg);
    /* Percent-encoded as a request would be: /x/%79 is /x/y. */
    cfg = parse(ROUTE("{'path': '/x/y', 'upstream': 'u', 'fetch': '/xy'},\n"
                      "{'path': '/x/{b}', 'upstream': 'u', 'fetch': "
                      "'/x'},\n" AGG("'m': '/x/%79'")));
    CHECK(cfg != NULL);
    CHECK(cfg->routes[2].members[0].route == &cfg->routes[0]);
    corral_config_free(cfg);
    CHECK_ERROR(
        ROUTE("{'path': '/g', 'upstream': 'u', 'fetch': '/g',\n"
              "'query': ['c']},\n" AGG("'m': '/g?c=%zz'")),
        "t.json:5: routes[1].aggregate.m: ", "the value of c is malformed");
#undef AGG
}

/* A purged route's keys are "~<generation>~<key>": a configured key
 * starting with '~' could be another route's key after a purge ("~1~k" is
 * /b's "k" once /b's generation is 1), so it is refused. */
static void
test_key_cannot_forge_a_generation(void)
{
    CHECK_ERROR(ROUTE("{'path': '/a', 'upstream': 'u', 'fetch': '/a',\n"
                      "'key': '~1~k'},\n"
                      "{'path': '/b', 'upstream': 'u', 'fetch': '/b', "
                      "'key': 'k'}"),
                "t.json:4: routes[0].key: \"~1~k\": ", "may not start with ~");
    CHECK_ERROR(ROUTE("{'path': '/a/{x}', 'upstream': 'u', 'fetch': '/a',\n"
                      "'key': '~{x}'}"),
                "t.json:4: routes[0].key: ", "may not start with ~");
    /* Elsewhere in a key '~' is just a character. */
    struct corral_config *cfg = parse(
        ROUTE("{'path': '/a', 'upstream': 'u', 'fetch': '/a', 'key': 'k~1~'}"));
    CHECK(cfg != NULL);
    corral_config_free(cfg);
}

/* Issue 19, item 2: an upstream keeps a share of its rate for
 * refreshes. */
static void
test_refresh_share(void)
{
    struct corral_config *cfg = parse(UPSTREAM("'base': 'http://h', "
                                               "'rate': '5/s'"));
    CHECK(cfg != NULL);
    CHECK_EQ_INT(cfg->upstreams[0].refresh_share, 25);
    corral_config_free(cfg);
    cfg = parse(UPSTREAM("'base': 'http://h', 'refresh_share': '0%'"));
    CHECK(cfg != NULL);
    CHECK_EQ_INT(cfg->upstreams[0].refresh_share, 0);
    corral_config_free(cfg);
    CHECK_ERROR(UPSTREAM("'base': 'http://h', 'refresh_share': '95%'"),
                "t.json:2: upstreams.u.refresh_share: ",
                "\"95%\": a percentage from \"0%\" to \"90%\"");
    CHECK_ERROR(UPSTREAM("'base': 'http://h', 'refresh_share': 0.25"),
                "t.json:2: upstreams.u.refresh_share: ", "expected a string");
}

#define R(extra)                                                               \
    ROUTE("{'path': '/p', 'upstream': 'u', 'fetch': '/p',\n" extra "}")

/* Issue 19, item 2: forwarded query values have patterns. */
static void
test_query_patterns(void)
{
    struct corral_config *cfg =
        parse(ROUTE("{'path': '/p/{id}', 'upstream': 'u', 'fetch': '/p',\n"
                    "'query': {'currency': '^[a-z]{3}$', 'n': '^[0-9]+$'}}"));
    CHECK(cfg != NULL);
    const struct corral_config_route *r = &cfg->routes[0];
    CHECK_EQ_INT(r->n_query, 2);
    CHECK_EQ_STR(r->query[0].name, "currency");
    CHECK_EQ_STR(r->query[0].pattern, "^[a-z]{3}$");
    CHECK(corral_pattern_match(r->query[0].re, "usd", 3));
    CHECK(!corral_pattern_match(r->query[0].re, "usdx", 4));
    CHECK_EQ_STR(r->query[1].name, "n");
    corral_config_free(cfg);
    /* The array form: the default pattern of a {param}. */
    cfg = parse(ROUTE("{'path': '/g', 'upstream': 'u', 'fetch': '/g', "
                      "'query': ['c']}"));
    CHECK(cfg != NULL);
    CHECK_EQ_STR(cfg->routes[0].query[0].pattern,
                 CORRAL_CONFIG_DEFAULT_PARAM_PATTERN);
    corral_config_free(cfg);
    CHECK_ERROR(R("'query': {'c': '^[a-z+$'}"),
                "t.json:4: routes[0].query.c: \"^[a-z+$\": ", "");
    CHECK_ERROR(R("'query': {'c': 5}"),
                "t.json:4: routes[0].query.c: ", "expected a string");
    CHECK_ERROR(R("'query': {'c=d': '^x$'}"), "t.json:4: routes[0].query.c=d: ",
                "\"c=d\": names use letters");
    CHECK_ERROR(R("'query': 'c'"),
                "t.json:4: routes[0].query: ", "expected an array");
}

/* Issue 19, item 2: a route may cap the new keys it creates. */
static void
test_new_keys(void)
{
    struct corral_config *cfg = parse(R("'new_keys': '100/min'"));
    CHECK(cfg != NULL);
    CHECK_EQ_INT(cfg->routes[0].new_keys_count, 100);
    CHECK_EQ_INT(cfg->routes[0].new_keys_window_ms, 60000);
    corral_config_free(cfg);
    cfg = parse(R("'json': true"));
    CHECK(cfg != NULL);
    CHECK_EQ_INT(cfg->routes[0].new_keys_count, 0);
    corral_config_free(cfg);
    CHECK_ERROR(R("'new_keys': '0/s'"),
                "t.json:4: routes[0].new_keys: ", "N from 1 to 1000000");
    CHECK_ERROR(R("'new_keys': '5/never'"),
                "t.json:4: routes[0].new_keys: ", "the window must be");
    CHECK_ERROR(
        ROUTE(ROUTE_A ",\n{'path': '/all', 'aggregate': {'a': '/a'}, "
                      "'new_keys': '5/s'}"),
        "t.json:4: routes[1].new_keys: ", "not allowed in an aggregate route");
}
#undef R

int
main(void)
{
    RUN(test_defaults);
    RUN(test_json_syntax);
    RUN(test_unknown_keys);
    RUN(test_types);
    RUN(test_missing);
    RUN(test_addresses);
    RUN(test_admin_limits);
    RUN(test_l2_sentinel);
    RUN(test_l2_cluster);
    RUN(test_values);
    RUN(test_upstreams);
    RUN(test_routes);
    RUN(test_upstream_cache_control);
    RUN(test_aggregates);
    RUN(test_key_cannot_forge_a_generation);
    RUN(test_refresh_share);
    RUN(test_query_patterns);
    RUN(test_new_keys);
    RUN(test_member_resolved_by_the_serving_trie);
    RUN(test_expand);
    RUN(test_secrets_stay_out);
    RUN(test_good_file);
    RUN(test_bad_files);
    printf("%lu checks\n", testlib_checks);
    return 0;
}
