/* test-gateway.c — one reactor of the gateway, end to end on one
 * event_base: corral_gateway_new() from a JSON config on a free loopback
 * port, a raw origin (raw_origin.h) behind it, and clients on
 * non-blocking sockets whose answers the loop reads. What is checked is
 * what gateway.h and the HTTP contract promise: misses and hits with
 * their Cache-Status, Age and ETag, 304, the refusals (404, 405, 400),
 * one upstream call for a stampede, negative answers, reload, purges of
 * a key and of a route, refresh and drain. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "config.h"
#include "gateway.h"
#include "metrics.h"
#include "raw_origin.h"
#include "testlib.h"

static struct event_base *base;
static struct raw_origin origin;
static struct corral_gateway *gw;

static const struct raw_origin_answer answers[] = {
    {"/v/gone", "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
                "Content-Length: 4\r\n\r\nnope"},
    {"/v/broken", "HTTP/1.1 500 Internal Server Error\r\n"
                  "Content-Length: 2\r\n\r\nno"},
};

/* The routes served first; a reload replaces /old/{id} with /new/{id}. */
static const char routes_first[] =
    "    { \"path\": \"/old/{id}\", \"upstream\": \"up\",\n"
    "      \"fetch\": \"/o/{id}\", \"strategy\": \"1m\" }\n";
static const char routes_reloaded[] =
    "    { \"path\": \"/new/{id}\", \"upstream\": \"up\",\n"
    "      \"fetch\": \"/n/{id}\", \"strategy\": \"1m\" }\n";

/* A config on the origin, with the routes every test uses and then more;
 * listening on port 0 (a free one). */
static struct corral_config *
config_with(const char *more)
{
    char conf[2048], err[512];
    int n = snprintf(
        conf, sizeof(conf),
        "{ \"listen\": \"127.0.0.1:1\",\n"
        "  \"upstreams\": { \"up\": { \"base\": \"http://127.0.0.1:%u\",\n"
        "                           \"timeout\": \"20s\" } },\n"
        "  \"routes\": [\n"
        "    { \"path\": \"/ok/{id}\", \"upstream\": \"up\",\n"
        "      \"fetch\": \"/v/{id}\", \"strategy\": \"1m\",\n"
        "      \"cache_errors\": { \"404\": \"1m\" } },\n"
        "    { \"path\": \"/gen/{id}\", \"upstream\": \"up\",\n"
        "      \"fetch\": \"/g/{id}\", \"strategy\": \"1m\" },\n"
        "%s"
        "  ] }\n",
        origin.port, more);
    CHECK(n > 0 && (size_t)n < sizeof(conf));
    struct corral_config *cfg =
        corral_config_parse(conf, (size_t)n, "test.json", err, sizeof(err));
    if (cfg == NULL)
        fprintf(stderr, "%s\n", err);
    CHECK(cfg != NULL);
    /* The parser wants a port to bind; a test takes any free one. */
    cfg->listen.port = 0;
    return cfg;
}

/* This worker's block, refreshed. */
static const struct corral_metrics_block *
block(void)
{
    corral_gateway_snapshot(gw);
    return corral_metrics_block(corral_gateway_metrics(gw), 0);
}

/* ---- clients ---- */

struct cli {
    int fd;
    struct event *ev;
    bool head;   /* asked with HEAD: no body follows */
    bool done;   /* a whole answer came, or the connection closed */
    bool closed; /* by the gateway */
    char buf[8192];
    size_t len;
};

/* What a client got. */
struct answer {
    int status;
    char head[4096]; /* status line and headers, NUL-ended */
    char body[2048];
    size_t body_len;
    char cache_status[128]; /* "": none */
    char etag[128];
    char age[32];
};

/* The value of header name (with its colon) in head, or "". */
static void
header(const char *head, const char *name, char *out, size_t cap)
{
    out[0] = '\0';
    size_t n = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p != NULL;
         p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, name, n) != 0)
            continue;
        const char *v = p + 2 + n;
        while (*v == ' ')
            v++;
        const char *end = strstr(v, "\r\n");
        size_t len = end ? (size_t)(end - v) : strlen(v);
        snprintf(out, cap, "%.*s", (int)len, v);
        return;
    }
}

/* Is c's answer whole? An answer without a body ends at its blank line. */
static bool
answer_whole(const struct cli *c)
{
    const char *end = strstr(c->buf, "\r\n\r\n");
    if (end == NULL)
        return false;
    size_t head_len = (size_t)(end - c->buf) + 4;
    int status = 0;
    sscanf(c->buf, "HTTP/1.1 %d", &status);
    if (c->head || status == 304)
        return true;
    char cl[32];
    header(c->buf, "Content-Length:", cl, sizeof(cl));
    return cl[0] != '\0' && c->len >= head_len + strtoul(cl, NULL, 10);
}

static void
cli_read(evutil_socket_t fd, short what, void *arg)
{
    struct cli *c = arg;
    (void)what;
    for (;;) {
        ssize_t n = read(fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
        if (n > 0) {
            c->len += (size_t)n;
            c->buf[c->len] = '\0';
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            c->closed = true;
            c->done = true;
        }
        break;
    }
    if (answer_whole(c))
        c->done = true;
    if (c->done)
        event_del(c->ev);
}

/* Connects c to the gateway. 0, or -errno. */
static int
cli_open(struct cli *c)
{
    memset(c, 0, sizeof(*c));
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(c->fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons(corral_gateway_port(gw))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(c->fd);
        return -e;
    }
    CHECK(fcntl(c->fd, F_SETFL, O_NONBLOCK) == 0);
    c->ev = event_new(base, c->fd, EV_READ | EV_PERSIST, cli_read, c);
    CHECK(c->ev != NULL && event_add(c->ev, NULL) == 0);
    return 0;
}

/* Sends method path with the header lines extra ("" or lines ending CRLF). */
static void
cli_send(struct cli *c, const char *method, const char *path, const char *extra)
{
    char req[1024];
    int n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: test\r\n%s\r\n",
                     method, path, extra);
    CHECK(n > 0 && (size_t)n < sizeof(req));
    c->head = strcmp(method, "HEAD") == 0;
    CHECK(write(c->fd, req, (size_t)n) == n);
}

/* Waits for c's answer (bounded), closes c and says what it got. */
static struct answer
cli_answer(struct cli *c)
{
    struct answer a;
    memset(&a, 0, sizeof(a));
    WAIT_FOR(base, c->done);
    const char *end = strstr(c->buf, "\r\n\r\n");
    CHECK(end != NULL);
    size_t head_len = (size_t)(end - c->buf) + 2;
    CHECK(head_len < sizeof(a.head));
    memcpy(a.head, c->buf, head_len);
    CHECK(sscanf(a.head, "HTTP/1.1 %d", &a.status) == 1);
    a.body_len = c->len - head_len - 2;
    CHECK(a.body_len < sizeof(a.body));
    memcpy(a.body, end + 4, a.body_len);
    header(a.head, "Cache-Status:", a.cache_status, sizeof(a.cache_status));
    header(a.head, "ETag:", a.etag, sizeof(a.etag));
    header(a.head, "Age:", a.age, sizeof(a.age));
    event_free(c->ev);
    close(c->fd);
    return a;
}

static struct answer
ask(const char *method, const char *path, const char *extra)
{
    struct cli c;
    CHECK_EQ_INT(cli_open(&c), 0);
    cli_send(&c, method, path, extra);
    return cli_answer(&c);
}

static struct answer
get(const char *path)
{
    return ask("GET", path, "");
}

static bool
starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ---- purges ---- */

struct purged {
    int fired, error;
    int64_t gen;
};

static void
purged_cb(int error, int64_t gen, void *arg)
{
    struct purged *p = arg;
    p->fired++;
    p->error = error;
    p->gen = gen;
}

static int
purge(const char *path, char *key, size_t keycap, struct purged *p)
{
    return corral_gateway_purge(gw, path, strlen(path), "", 0, key, keycap,
                                purged_cb, p);
}

/* ---- the tests ---- */

static void
test_miss_then_hit(void)
{
    struct answer a = get("/ok/a");
    CHECK_EQ_INT(a.status, 200);
    CHECK_EQ_STR(a.body, "{\"path\":\"/v/a\"}");
    CHECK_EQ_STR(a.cache_status, "corral; fwd=miss; stored");
    CHECK_EQ_STR(a.age, "0");
    CHECK(a.etag[0] == '"');
    CHECK(strstr(a.head, "Content-Type: application/json\r\n") != NULL);

    struct answer b = get("/ok/a");
    CHECK_EQ_INT(b.status, 200);
    CHECK_EQ_STR(b.body, a.body);
    CHECK(starts_with(b.cache_status, "corral; hit; ttl="));
    long ttl = strtol(b.cache_status + strlen("corral; hit; ttl="), NULL, 10);
    CHECK(ttl > 0 && ttl <= 60);
    CHECK(b.age[0] != '\0');
    CHECK_EQ_STR(b.etag, a.etag);
    /* The whole lifetime, a little jittered (a downstream cache takes Age
     * off it). */
    char cc[64];
    header(b.head, "Cache-Control:", cc, sizeof(cc));
    CHECK(starts_with(cc, "max-age="));
    long max_age = strtol(cc + strlen("max-age="), NULL, 10);
    CHECK(max_age >= ttl && max_age <= 60);

    /* HEAD: the same head, no body. */
    struct answer h = ask("HEAD", "/ok/a", "");
    CHECK_EQ_INT(h.status, 200);
    CHECK_EQ_INT(h.body_len, 0);
    CHECK_EQ_STR(h.etag, a.etag);
    CHECK(strstr(h.head, "Content-Length: 15\r\n") != NULL);

    CHECK_EQ_INT(raw_origin_calls(&origin, "/v/a"), 1);
}

static void
test_if_none_match(void)
{
    struct answer a = get("/ok/b");
    CHECK_EQ_INT(a.status, 200);
    char inm[200];
    snprintf(inm, sizeof(inm), "If-None-Match: %s\r\n", a.etag);
    struct answer b = ask("GET", "/ok/b", inm);
    CHECK_EQ_INT(b.status, 304);
    CHECK_EQ_INT(b.body_len, 0);
    CHECK_EQ_STR(b.etag, a.etag);
    CHECK(starts_with(b.cache_status, "corral; hit; ttl="));
    /* Weak comparison, and one of a list. */
    snprintf(inm, sizeof(inm), "If-None-Match: \"x\", W/%s\r\n", a.etag);
    CHECK_EQ_INT(ask("GET", "/ok/b", inm).status, 304);
    CHECK_EQ_INT(ask("GET", "/ok/b", "If-None-Match: *\r\n").status, 304);
    struct answer c = ask("GET", "/ok/b", "If-None-Match: \"other\"\r\n");
    CHECK_EQ_INT(c.status, 200);
    CHECK_EQ_STR(c.body, "{\"path\":\"/v/b\"}");
    CHECK_EQ_INT(raw_origin_calls(&origin, "/v/b"), 1);
}

static void
test_no_route(void)
{
    unsigned before = origin.total;
    struct answer a = get("/nowhere");
    CHECK_EQ_INT(a.status, 404);
    CHECK_EQ_STR(a.body, "{\"error\":\"no such route\"}");
    CHECK(strstr(a.head, "Content-Type: application/json\r\n") != NULL);
    CHECK_EQ_INT(origin.total, before);
}

static void
test_method_not_allowed(void)
{
    unsigned before = origin.total;
    struct answer a = ask("POST", "/ok/a", "Content-Length: 0\r\n");
    CHECK_EQ_INT(a.status, 405);
    CHECK(strstr(a.head, "\r\nAllow: GET, HEAD\r\n") != NULL);
    CHECK_EQ_STR(a.body,
                 "{\"error\":\"method not allowed\",\"route\":\"/ok/{id}\"}");
    a = ask("DELETE", "/ok/a", "");
    CHECK_EQ_INT(a.status, 405);
    CHECK(strstr(a.head, "\r\nAllow: GET, HEAD\r\n") != NULL);
    CHECK_EQ_INT(origin.total, before);
}

static void
test_bad_param(void)
{
    unsigned before = origin.total;
    struct answer a = get("/ok/a!b");
    CHECK_EQ_INT(a.status, 400);
    CHECK_EQ_STR(a.body, "{\"error\":\"bad path parameter: id\","
                         "\"route\":\"/ok/{id}\"}");
    /* Decoded before the check: "a/b" is no id either. */
    CHECK_EQ_INT(get("/ok/a%2Fb").status, 400);
    CHECK_EQ_INT(origin.total, before);
}

/* N clients ask for one cold key at once: one upstream call, one answer
 * stored, the others collapsed onto it, all with the key's body. */
static void
test_stampede(void)
{
    enum { N = 16 };
    static struct cli c[N];
    uint64_t requests = block()->server.requests;
    origin.hold = true;
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(cli_open(&c[i]), 0);
        cli_send(&c[i], "GET", "/ok/s", "");
    }
    /* Every request reached the gateway while the one fill is held. */
    WAIT_FOR(base, raw_origin_calls(&origin, "/v/s") == 1 &&
                       block()->server.requests == requests + N);
    raw_origin_release(&origin);
    int stored = 0, collapsed = 0;
    for (int i = 0; i < N; i++) {
        struct answer a = cli_answer(&c[i]);
        CHECK_EQ_INT(a.status, 200);
        CHECK_EQ_STR(a.body, "{\"path\":\"/v/s\"}");
        stored += strcmp(a.cache_status, "corral; fwd=miss; stored") == 0;
        collapsed += strcmp(a.cache_status, "corral; fwd=miss; collapsed") == 0;
    }
    CHECK_EQ_INT(stored, 1);
    CHECK_EQ_INT(collapsed, N - 1);
    CHECK_EQ_INT(raw_origin_calls(&origin, "/v/s"), 1);
    CHECK(starts_with(get("/ok/s").cache_status, "corral; hit;"));
    CHECK_EQ_INT(raw_origin_calls(&origin, "/v/s"), 1);
}

/* A cached 404 is served again with its status and body, said to be
 * negative, and no validator turns it into a 304. */
static void
test_negative(void)
{
    struct answer a = get("/ok/gone");
    CHECK_EQ_INT(a.status, 404);
    CHECK_EQ_STR(a.body, "nope");
    CHECK_EQ_STR(a.cache_status, "corral; fwd=miss; stored; detail=negative");
    struct answer b = get("/ok/gone");
    CHECK_EQ_INT(b.status, 404);
    CHECK_EQ_STR(b.body, "nope");
    CHECK(strstr(b.head, "Content-Type: text/plain\r\n") != NULL);
    CHECK(starts_with(b.cache_status, "corral; hit; ttl="));
    CHECK(strstr(b.cache_status, "; detail=negative") != NULL);
    struct answer c = ask("GET", "/ok/gone", "If-None-Match: *\r\n");
    CHECK_EQ_INT(c.status, 404);
    CHECK_EQ_STR(c.body, "nope");
    CHECK_EQ_INT(raw_origin_calls(&origin, "/v/gone"), 1);
}

/* An upstream 500 is a 502 with the route, and nothing is stored. */
static void
test_upstream_error(void)
{
    struct answer a = get("/ok/broken");
    CHECK_EQ_INT(a.status, 502);
    CHECK(strstr(a.body, "\"route\":\"/ok/{id}\"") != NULL);
    CHECK_EQ_STR(a.cache_status, "corral; fwd=miss; detail=upstream-error");
    CHECK_EQ_INT(raw_origin_calls(&origin, "/v/broken"), 1);
}

/* only-if-cached: a stored value, else 504 without a call. */
static void
test_only_if_cached(void)
{
    const char *oic = "Cache-Control: only-if-cached\r\n";
    struct answer a = ask("GET", "/ok/cold", oic);
    CHECK_EQ_INT(a.status, 504);
    CHECK_EQ_INT(raw_origin_calls(&origin, "/v/cold"), 0);
    a = ask("GET", "/ok/a", oic);
    CHECK_EQ_INT(a.status, 200);
    CHECK_EQ_STR(a.body, "{\"path\":\"/v/a\"}");
}

static void
test_purge_key(void)
{
    CHECK_EQ_INT(get("/ok/p").status, 200);
    CHECK(starts_with(get("/ok/p").cache_status, "corral; hit;"));
    char key[256] = "";
    struct purged p = {0};
    CHECK_EQ_INT(purge("/ok/p", key, sizeof(key), &p), 1);
    CHECK(strstr(key, "/ok/p") != NULL);
    CHECK_EQ_INT(p.fired, 0); /* from the loop, not from the call */
    WAIT_FOR(base, p.fired != 0);
    CHECK_EQ_INT(p.fired, 1);
    CHECK_EQ_INT(p.error, 0); /* no l2: every instance heard */
    struct answer a = get("/ok/p");
    CHECK_EQ_STR(a.cache_status, "corral; fwd=miss; stored");
    CHECK_EQ_INT(raw_origin_calls(&origin, "/v/p"), 2);

    /* A key not in L1: 0, and cb still fires once. */
    struct purged q = {0};
    CHECK_EQ_INT(purge("/ok/never", key, sizeof(key), &q), 0);
    WAIT_FOR(base, q.fired != 0);
    CHECK_EQ_INT(q.error, 0);

    /* No route, a bad request: refused, and cb never fires. */
    struct purged r = {0};
    CHECK_EQ_INT(purge("/nowhere", key, sizeof(key), &r), -ENOENT);
    CHECK_EQ_INT(purge("/ok/a!b", key, sizeof(key), &r), -EINVAL);
    get("/ok/p"); /* runs the loop */
    CHECK_EQ_INT(p.fired, 1);
    CHECK_EQ_INT(q.fired, 1);
    CHECK_EQ_INT(r.fired, 0);
}

/* A route purge drops every key of that route (and of no other) with a
 * new generation. */
static void
test_purge_route(void)
{
    CHECK_EQ_INT(get("/gen/x").status, 200);
    CHECK_EQ_INT(get("/gen/y").status, 200);
    CHECK(starts_with(get("/gen/x").cache_status, "corral; hit;"));
    struct purged p = {0};
    CHECK_EQ_INT(corral_gateway_purge_route(gw, "/gen/{id}", purged_cb, &p), 0);
    CHECK_EQ_INT(p.fired, 0);
    WAIT_FOR(base, p.fired != 0);
    CHECK_EQ_INT(p.fired, 1);
    CHECK_EQ_INT(p.error, 0);
    CHECK(p.gen > 0);
    CHECK_EQ_STR(get("/gen/x").cache_status, "corral; fwd=miss; stored");
    CHECK_EQ_STR(get("/gen/y").cache_status, "corral; fwd=miss; stored");
    CHECK_EQ_INT(raw_origin_calls(&origin, "/g/x"), 2);
    CHECK_EQ_INT(raw_origin_calls(&origin, "/g/y"), 2);
    /* Another route keeps its keys. */
    CHECK(starts_with(get("/ok/a").cache_status, "corral; hit;"));
    CHECK_EQ_INT(raw_origin_calls(&origin, "/v/a"), 1);

    struct purged q = {0};
    CHECK_EQ_INT(corral_gateway_purge_route(gw, "/gen/{id}", purged_cb, &q), 0);
    WAIT_FOR(base, q.fired != 0);
    CHECK(q.gen > p.gen);
    struct purged r = {0};
    CHECK_EQ_INT(corral_gateway_purge_route(gw, "/gen/x", purged_cb, &r),
                 -ENOENT);
    get("/ok/a"); /* runs the loop */
    CHECK_EQ_INT(r.fired, 0);
}

/* A refresh fills in the background while the copy in hand is served; a
 * second one while it runs is refused. */
static void
test_refresh(void)
{
    char key[256];
    origin.hold = true;
    CHECK_EQ_INT(
        corral_gateway_refresh(gw, "/ok/a", 5, "", 0, key, sizeof(key)), 0);
    WAIT_FOR(base, raw_origin_calls(&origin, "/v/a") == 2);
    CHECK_EQ_INT(
        corral_gateway_refresh(gw, "/ok/a", 5, "", 0, key, sizeof(key)),
        -EALREADY);
    struct answer a = get("/ok/a");
    CHECK_EQ_INT(a.status, 200);
    CHECK(starts_with(a.cache_status, "corral; hit;"));
    CHECK_EQ_INT(
        corral_gateway_refresh(gw, "/nowhere", 8, "", 0, key, sizeof(key)),
        -ENOENT);
    raw_origin_release(&origin);
    WAIT_FOR(base, block()->cache.fills_in_flight == 0);
    CHECK_EQ_INT(raw_origin_calls(&origin, "/v/a"), 2);
}

static void
test_reload(void)
{
    CHECK_EQ_INT(get("/old/x").status, 200);
    CHECK_EQ_INT(get("/new/x").status, 404);

    /* An upstream that cannot be set up: refused, the old config served. */
    struct corral_config *bad = config_with(routes_reloaded);
    bad->upstreams[0].max_connections = 0;
    char err[256] = "";
    CHECK_EQ_INT(corral_gateway_reload(gw, bad, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "upstream up") != NULL);
    corral_config_free(bad);
    CHECK_EQ_INT(get("/new/x").status, 404);
    CHECK(starts_with(get("/old/x").cache_status, "corral; hit;"));

    struct corral_config *next = config_with(routes_reloaded);
    CHECK_EQ_INT(corral_gateway_reload(gw, next, err, sizeof(err)), 0);
    CHECK(corral_gateway_config(gw) == next);
    struct answer a = get("/new/x");
    CHECK_EQ_INT(a.status, 200);
    CHECK_EQ_STR(a.body, "{\"path\":\"/n/x\"}");
    a = get("/old/x");
    CHECK_EQ_INT(a.status, 404);
    CHECK_EQ_STR(a.body, "{\"error\":\"no such route\"}");
    /* A route whose key did not change keeps its values. */
    CHECK(starts_with(get("/ok/a").cache_status, "corral; hit;"));
    CHECK_EQ_INT(raw_origin_calls(&origin, "/v/a"), 2);
    CHECK_EQ_INT(raw_origin_calls(&origin, "/o/x"), 1);
}

static void
drained(void *arg)
{
    (*(int *)arg)++;
}

/* Drain: no new connections, the request in flight is answered (and
 * told the connection closes), then done fires, once. */
static void
test_drain(void)
{
    struct cli c;
    int done = 0;
    origin.hold = true;
    CHECK_EQ_INT(cli_open(&c), 0);
    cli_send(&c, "GET", "/ok/d", "");
    WAIT_FOR(base, raw_origin_calls(&origin, "/v/d") == 1);
    CHECK(!corral_gateway_draining(gw));
    corral_gateway_drain(gw, drained, &done);
    CHECK(corral_gateway_draining(gw));
    struct cli late;
    CHECK_EQ_INT(cli_open(&late), -ECONNREFUSED);
    run_for(base, 100);
    CHECK_EQ_INT(done, 0);
    CHECK(!c.done);
    raw_origin_release(&origin);
    struct answer a = cli_answer(&c);
    CHECK_EQ_INT(a.status, 200);
    CHECK_EQ_STR(a.body, "{\"path\":\"/v/d\"}");
    CHECK(strstr(a.head, "\r\nConnection: close\r\n") != NULL);
    WAIT_FOR(base, done != 0);
    run_for(base, 50);
    CHECK_EQ_INT(done, 1);
}

int
main(void)
{
    base = event_base_new();
    CHECK(base != NULL);
    raw_origin_start(&origin, base, answers,
                     sizeof(answers) / sizeof(*answers));
    struct corral_config *cfg = config_with(routes_first);
    char err[256];
    gw = corral_gateway_new(base, cfg, NULL, err, sizeof(err));
    if (gw == NULL)
        fprintf(stderr, "%s\n", err);
    CHECK(gw != NULL);
    CHECK(corral_gateway_port(gw) != 0);
    CHECK_EQ_STR(corral_gateway_l2_state(gw), "disabled");

    RUN(test_miss_then_hit);
    RUN(test_if_none_match);
    RUN(test_no_route);
    RUN(test_method_not_allowed);
    RUN(test_bad_param);
    RUN(test_stampede);
    RUN(test_negative);
    RUN(test_upstream_error);
    RUN(test_only_if_cached);
    RUN(test_purge_key);
    RUN(test_purge_route);
    RUN(test_refresh);
    RUN(test_reload);
    RUN(test_drain); /* last: the gateway accepts no more */

    corral_gateway_free(gw);
    corral_config_free(cfg); /* the first config stays the caller's */
    raw_origin_stop(&origin);
    event_base_free(base);
    return testlib_result();
}
