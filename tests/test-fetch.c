/* test-fetch.c — the upstream fetch module against in-process servers.
 * An evhttp server on the same event_base answers JSON, errors, delays, hangs
 * and big bodies and counts connections and concurrent requests; a raw socket
 * server sends what evhttp would not. TLS cases make their certificates with
 * the openssl CLI at test time; without it the test ends as a skip (77). */
#include "fetch.h"
#include "testlib.h"
#include "corral/version.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>

#include <openssl/ssl.h>

static struct event_base *base;
static int in_get; /* set while corral_fetch_get() runs */

/* Runs the loop until *counter reaches want or max_ms pass. */
static int
run_until(const unsigned *counter, unsigned want, unsigned max_ms)
{
    RUN_UNTIL(base, *counter >= want, max_ms);
    return *counter >= want;
}

/* ---- the evhttp server ---- */

struct server;

struct pending {
    struct evhttp_request *req;
    struct event *ev; /* NULL for a hang */
    struct server *s;
    struct pending *next;
};

struct server {
    struct evhttp *http;
    uint16_t port;
    SSL_CTX *ssl; /* NULL = plain http */
    unsigned connections, requests, inflight, max_inflight;
    struct evhttp_connection *last_evcon;
    char host[128], accept[128], user_agent[128], api_key[128];
    struct pending *pending;
};

static struct bufferevent *
server_bev_cb(struct event_base *b, void *arg)
{
    struct server *s = arg;

    s->connections++;
    if (s->ssl == NULL)
        return bufferevent_socket_new(b, -1, BEV_OPT_CLOSE_ON_FREE);
    return bufferevent_openssl_socket_new(b, -1, SSL_new(s->ssl),
                                          BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE);
}

static void
reply(struct server *s, struct evhttp_request *req, int code, const char *body)
{
    struct evbuffer *buf = evbuffer_new();

    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    evbuffer_add(buf, body, strlen(body));
    evhttp_send_reply(req, code, NULL, buf);
    evbuffer_free(buf);
    s->inflight--;
}

static void
pending_unlink(struct pending *p)
{
    struct pending **pp;

    for (pp = &p->s->pending; *pp != p; pp = &(*pp)->next)
        ;
    *pp = p->next;
}

static void
delay_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pending *p = arg;

    (void)fd;
    (void)what;
    pending_unlink(p);
    reply(p->s, p->req, 200, "{\"delayed\":true}");
    event_free(p->ev);
    free(p);
}

static void
hold(struct server *s, struct evhttp_request *req, int delay_ms)
{
    struct pending *p = calloc(1, sizeof(*p));
    struct timeval tv = {0, delay_ms * 1000};

    CHECK(p != NULL);
    p->req = req;
    p->s = s;
    p->next = s->pending;
    s->pending = p;
    if (delay_ms >= 0) {
        p->ev = evtimer_new(base, delay_cb, p);
        evtimer_add(p->ev, &tv);
    }
}

static void
copy_header(struct evhttp_request *req, const char *name, char *out, size_t len)
{
    const char *v =
        evhttp_find_header(evhttp_request_get_input_headers(req), name);

    snprintf(out, len, "%s", v != NULL ? v : "");
}

static void
send_big(struct evhttp_request *req, int chunked)
{
    char chunk[10000];
    struct evbuffer *buf = evbuffer_new();
    int i;

    memset(chunk, 'x', sizeof(chunk));
    if (!chunked) {
        for (i = 0; i < 10; i++)
            evbuffer_add(buf, chunk, sizeof(chunk));
        evhttp_send_reply(req, 200, "OK", buf);
    } else {
        evhttp_send_reply_start(req, 200, "OK");
        for (i = 0; i < 10; i++) {
            evbuffer_add(buf, chunk, sizeof(chunk));
            evhttp_send_reply_chunk(req, buf);
        }
        evhttp_send_reply_end(req);
    }
    evbuffer_free(buf);
}

static void
server_cb(struct evhttp_request *req, void *arg)
{
    struct server *s = arg;
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    const char *uri = evhttp_request_get_uri(req);
    char date[64];
    time_t t;

    if (uri == NULL) {
        evhttp_send_error(req, 400, NULL);
        return;
    }
    s->requests++;
    if (++s->inflight > s->max_inflight)
        s->max_inflight = s->inflight;
    s->last_evcon = evhttp_request_get_connection(req);
    copy_header(req, "Host", s->host, sizeof(s->host));
    copy_header(req, "Accept", s->accept, sizeof(s->accept));
    copy_header(req, "User-Agent", s->user_agent, sizeof(s->user_agent));
    copy_header(req, "X-Api-Key", s->api_key, sizeof(s->api_key));

    if (strcmp(uri, "/json") == 0 || strcmp(uri, "/json?a=1&b=2") == 0) {
        reply(s, req, 200, "{\"ok\":true}");
    } else if (strcmp(uri, "/500") == 0) {
        reply(s, req, 500, "{\"error\":\"boom\"}");
    } else if (strcmp(uri, "/429") == 0) {
        evhttp_add_header(out, "Retry-After", "7");
        reply(s, req, 429, "{}");
    } else if (strcmp(uri, "/429date") == 0) {
        t = time(NULL) + 30;
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", gmtime(&t));
        evhttp_add_header(out, "Retry-After", date);
        reply(s, req, 503, "{}");
    } else if (strcmp(uri, "/private") == 0) {
        /* Two field lines, one list: both count. */
        evhttp_add_header(out, "Cache-Control", "max-age=60, Private");
        evhttp_add_header(out, "cache-control", "s-maxage=\"30\"");
        evhttp_add_header(out, "Age", "12");
        reply(s, req, 200, "{}");
    } else if (strcmp(uri, "/close") == 0) {
        evhttp_add_header(out, "Connection", "close");
        reply(s, req, 200, "{\"closing\":true}");
    } else if (strncmp(uri, "/delay/", 7) == 0) {
        hold(s, req, atoi(uri + 7));
    } else if (strcmp(uri, "/hang") == 0) {
        hold(s, req, -1);
    } else if (strcmp(uri, "/big") == 0 || strcmp(uri, "/bigchunked") == 0) {
        send_big(req, strcmp(uri, "/bigchunked") == 0);
        s->inflight--;
    } else {
        reply(s, req, 404, "{\"error\":\"not found\"}");
    }
}

static struct server *
server_new(const char *addr, SSL_CTX *ssl)
{
    struct server *s = calloc(1, sizeof(*s));
    struct evhttp_bound_socket *h;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);

    CHECK(s != NULL);
    s->ssl = ssl;
    s->http = evhttp_new(base);
    CHECK(s->http != NULL);
    evhttp_set_gencb(s->http, server_cb, s);
    evhttp_set_bevcb(s->http, server_bev_cb, s);
    h = evhttp_bind_socket_with_handle(s->http, addr, 0);
    if (h == NULL) {
        evhttp_free(s->http);
        free(s);
        return NULL;
    }
    CHECK(getsockname(evhttp_bound_socket_get_fd(h), (struct sockaddr *)&ss,
                      &sl) == 0);
    if (ss.ss_family == AF_INET)
        s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    else
        s->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return s;
}

static void
server_free(struct server *s)
{
    struct pending *p;

    /* Answer what is held: evhttp frees a request whose client left. */
    while ((p = s->pending) != NULL) {
        s->pending = p->next;
        if (p->ev != NULL)
            event_free(p->ev);
        evhttp_send_reply(p->req, 503, NULL, NULL);
        free(p);
    }
    evhttp_free(s->http);
    free(s);
}

/* ---- a raw server for what evhttp would not send ---- */

enum raw_mode {
    RAW_GARBAGE,      /* a status line that is not HTTP */
    RAW_BAD_LENGTH,   /* Content-Length: abc */
    RAW_CLOSE,        /* close right after accept */
    RAW_TRUNCATED,    /* Content-Length: 100, 2 bytes, close */
    RAW_ONE_PER_CONN, /* answer once per connection, then close on the
                       * second request */
    RAW_LATE,         /* answer, then a second answer while idle */
    RAW_UNFRAMED,     /* no Content-Length: the body ends at close */
    RAW_SWITCH,       /* 101, then bytes that are not HTTP */
    RAW_BODYLESS,     /* a 204 and a 200 with Content-Length: 0, each with
                       * a second answer in the same write */
    RAW_LATE204,      /* a 204 head claiming a body, the second answer 1 ms
                       * later */
    RAW_FOLD,         /* a response whose first field line is folded */
};

struct raw_conn {
    struct bufferevent *bev;
    struct raw_server *s;
    unsigned requests;
    struct event *late;
    struct raw_conn *next;
};

struct raw_server {
    struct evconnlistener *lis;
    uint16_t port;
    enum raw_mode mode;
    unsigned connections, requests;
    struct raw_conn *conns;
};

static void
raw_conn_free(struct raw_conn *rc)
{
    struct raw_conn **pp;

    for (pp = &rc->s->conns; *pp != rc; pp = &(*pp)->next)
        ;
    *pp = rc->next;
    if (rc->late != NULL)
        event_free(rc->late);
    bufferevent_free(rc->bev);
    free(rc);
}

static void
raw_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    raw_conn_free(arg); /* only armed to close after a write */
}

static void
raw_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        raw_conn_free(arg);
}

static void
raw_send_then_close(struct raw_conn *rc, const char *text)
{
    bufferevent_setcb(rc->bev, NULL, raw_write_cb, raw_event_cb, rc);
    bufferevent_write(rc->bev, text, strlen(text));
}

static void
raw_late_cb(evutil_socket_t fd, short what, void *arg)
{
    struct raw_conn *rc = arg;
    const char *poison =
        "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n\"POISON\"";

    (void)fd;
    (void)what;
    bufferevent_write(rc->bev, poison, strlen(poison));
}

static void
raw_read_cb(struct bufferevent *bev, void *arg)
{
    struct raw_conn *rc = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_ptr end;
    const char *ok = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     "Content-Length: 2\r\n\r\n{}";

    end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0)
        return;
    evbuffer_drain(in, (size_t)end.pos + 4);
    rc->requests++;
    rc->s->requests++;
    switch (rc->s->mode) {
    case RAW_GARBAGE:
        bufferevent_write(bev, "garbage\r\n\r\n", 11);
        break;
    case RAW_BAD_LENGTH:
        bufferevent_write(bev, "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
                          40);
        break;
    case RAW_TRUNCATED:
        raw_send_then_close(rc, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n"
                                "\r\n{}");
        break;
    case RAW_ONE_PER_CONN:
        if (rc->requests == 1)
            bufferevent_write(bev, ok, strlen(ok));
        else
            raw_conn_free(rc);
        break;
    case RAW_LATE: {
        char answer[128];
        struct timeval tv = {0, 20000};
        snprintf(answer, sizeof(answer),
                 "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"n\":%u}",
                 rc->s->requests % 10);
        bufferevent_write(bev, answer, strlen(answer));
        if (rc->late == NULL) {
            rc->late = evtimer_new(base, raw_late_cb, rc);
            evtimer_add(rc->late, &tv);
        }
        break;
    }
    case RAW_UNFRAMED:
        raw_send_then_close(rc, "HTTP/1.1 200 OK\r\n\r\n{\"unframed\":1}");
        break;
    case RAW_SWITCH:
        evbuffer_add_printf(bufferevent_get_output(bev),
                            "HTTP/1.1 101 Switching Protocols\r\n"
                            "Upgrade: x\r\n\r\nHTTP/1.1 200 OK\r\n"
                            "Content-Length: 2\r\n\r\n{}");
        break;
    case RAW_FOLD:
        raw_send_then_close(rc, "HTTP/1.1 200 OK\r\n\tfolded\r\nX: 1\r\n"
                                "Content-Length: 2\r\n\r\n{}");
        break;
    case RAW_LATE204: {
        char answer[128];
        struct timeval tv = {0, 1000};
        if (rc->s->requests % 2 == 1) {
            bufferevent_write(bev,
                              "HTTP/1.1 204 No Content\r\n"
                              "Content-Length: 46\r\n\r\n",
                              45);
            if (rc->late == NULL)
                rc->late = evtimer_new(base, raw_late_cb, rc);
            evtimer_add(rc->late, &tv);
            break;
        }
        snprintf(answer, sizeof(answer),
                 "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"n\":%u}",
                 rc->s->requests % 10);
        bufferevent_write(bev, answer, strlen(answer));
        break;
    }
    case RAW_BODYLESS: {
        static const char *const first[] = {
            "HTTP/1.1 204 No Content\r\nContent-Length: 46\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             "2;x=y\r\n{}\r\n0\r\nT: 1\r\n\r\n"),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        };
        char answer[256];
        if (rc->s->requests % 2 == 1)
            snprintf(answer, sizeof(answer),
                     "%sHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n"
                     "\"POISON\"",
                     first[(rc->s->requests / 2) % 4]);
        else
            snprintf(answer, sizeof(answer),
                     "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
                     "{\"n\":%u}",
                     rc->s->requests % 10);
        bufferevent_write(bev, answer, strlen(answer));
        break;
    }
    case RAW_CLOSE:
        break;
    }
}

static void
raw_accept_cb(struct evconnlistener *lis, evutil_socket_t fd,
              struct sockaddr *sa, int socklen, void *arg)
{
    struct raw_server *s = arg;
    struct raw_conn *rc;

    (void)lis;
    (void)sa;
    (void)socklen;
    s->connections++;
    if (s->mode == RAW_CLOSE) {
        evutil_closesocket(fd);
        return;
    }
    rc = calloc(1, sizeof(*rc));
    CHECK(rc != NULL);
    rc->s = s;
    rc->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(rc->bev, raw_read_cb, NULL, raw_event_cb, rc);
    bufferevent_enable(rc->bev, EV_READ | EV_WRITE);
    rc->next = s->conns;
    s->conns = rc;
}

static struct raw_server *
raw_server_new(enum raw_mode mode)
{
    struct raw_server *s = calloc(1, sizeof(*s));
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);

    CHECK(s != NULL);
    s->mode = mode;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->lis = evconnlistener_new_bind(base, raw_accept_cb, s,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                     -1, (struct sockaddr *)&sin, sizeof(sin));
    CHECK(s->lis != NULL);
    CHECK(getsockname(evconnlistener_get_fd(s->lis), (struct sockaddr *)&sin,
                      &sl) == 0);
    s->port = ntohs(sin.sin_port);
    return s;
}

static void
raw_server_free(struct raw_server *s)
{
    while (s->conns != NULL)
        raw_conn_free(s->conns);
    evconnlistener_free(s->lis);
    free(s);
}

/* ---- the client side ---- */

struct got {
    unsigned calls;
    int sync; /* a callback ran inside corral_fetch_get() */
    int error, status;
    char message[256];
    char content_type[64];
    char body[256];
    size_t len;
    uint64_t retry_after_s, elapsed_ms;
    struct corral_fetch_cache_control cc;
    uint64_t age_s;
};

static void
got_cb(const struct corral_fetch_result *r, void *arg)
{
    struct got *g = arg;

    g->calls++;
    g->sync |= in_get;
    g->error = r->error;
    g->status = r->status;
    CHECK(r->message != NULL);
    snprintf(g->message, sizeof(g->message), "%s", r->message);
    snprintf(g->content_type, sizeof(g->content_type), "%s",
             r->content_type != NULL ? r->content_type : "");
    g->len = r->len;
    if (r->body != NULL) {
        CHECK(r->body[r->len] == '\0');
        snprintf(g->body, sizeof(g->body), "%s", r->body);
    } else {
        CHECK(r->len == 0);
        g->body[0] = '\0';
    }
    g->retry_after_s = r->retry_after_s;
    g->elapsed_ms = r->elapsed_ms;
    g->cc = r->cache_control;
    g->age_s = r->age_s;
}

static struct corral_fetch *
get(struct corral_fetch_upstream *u, const char *path, struct got *g)
{
    unsigned before = g->calls;
    struct corral_fetch *f;

    in_get = 1;
    f = corral_fetch_get(u, path, got_cb, g);
    in_get = 0;
    CHECK(f != NULL);
    CHECK_EQ_INT(g->calls, before);
    return f;
}

static const char *const test_headers[] = {"X-Api-Key", "secret", NULL};

static struct corral_fetch_upstream *
upstream_full(const char *scheme, const char *host, uint16_t port,
              uint64_t timeout_ms, unsigned max_connections, size_t max_body,
              const char *ca_file)
{
    struct corral_fetch_options o;
    struct corral_fetch_upstream *u;
    char err[256] = "";

    memset(&o, 0, sizeof(o));
    o.scheme = scheme;
    o.host = host;
    o.port = port;
    o.timeout_ms = timeout_ms;
    o.max_connections = max_connections;
    o.max_body = max_body;
    o.ca_file = ca_file;
    o.headers = test_headers;
    u = corral_fetch_upstream_new(base, &o, err, sizeof(err));
    if (u == NULL)
        fprintf(stderr, "corral_fetch_upstream_new: %s\n", err);
    CHECK(u != NULL);
    return u;
}

static struct corral_fetch_upstream *
upstream(uint16_t port, unsigned max_connections)
{
    return upstream_full("http", "127.0.0.1", port, 5000, max_connections,
                         1 << 20, NULL);
}

/* ---- plain http ---- */

static void
test_ok(void)
{
    struct server *s = server_new("127.0.0.1", NULL);
    struct corral_fetch_upstream *u = upstream(s->port, 4);
    struct got g = {0};
    char host[32];

    get(u, "/json?a=1&b=2", &g);
    CHECK(run_until(&g.calls, 1, 10000));
    CHECK_EQ_INT(g.sync, 0);
    CHECK_EQ_INT(g.error, 0);
    CHECK_EQ_INT(g.status, 200);
    CHECK_EQ_STR(g.message, "OK");
    CHECK_EQ_STR(g.content_type, "application/json");
    CHECK_EQ_STR(g.body, "{\"ok\":true}");
    CHECK_EQ_INT(g.len, 11);
    CHECK_EQ_INT(g.retry_after_s, 0);
    CHECK(g.elapsed_ms < 5000);
    snprintf(host, sizeof(host), "127.0.0.1:%u", (unsigned)s->port);
    CHECK_EQ_STR(s->host, host);
    CHECK_EQ_STR(s->accept, "application/json");
    CHECK_EQ_STR(s->user_agent, "corral/" CORRAL_VERSION_STRING);
    CHECK_EQ_STR(s->api_key, "secret");
    run_for(base, 20);
    CHECK_EQ_INT(g.calls, 1);
    corral_fetch_upstream_free(u);
    server_free(s);
}

static void
test_status_passthrough(void)
{
    struct server *s = server_new("127.0.0.1", NULL);
    struct corral_fetch_upstream *u = upstream(s->port, 4);
    struct got a = {0}, b = {0}, c = {0}, d = {0};

    get(u, "/500", &a);
    get(u, "/429", &b);
    get(u, "/429date", &c);
    get(u, "/nowhere", &d);
    CHECK(run_until(&a.calls, 1, 10000));
    CHECK(run_until(&b.calls, 1, 10000));
    CHECK(run_until(&c.calls, 1, 10000));
    CHECK(run_until(&d.calls, 1, 10000));
    CHECK_EQ_INT(a.error, 0);
    CHECK_EQ_INT(a.status, 500);
    CHECK_EQ_STR(a.body, "{\"error\":\"boom\"}");
    CHECK_EQ_INT(b.error, 0);
    CHECK_EQ_INT(b.status, 429);
    CHECK_EQ_INT(b.retry_after_s, 7);
    CHECK_EQ_INT(c.error, 0);
    CHECK_EQ_INT(c.status, 503);
    CHECK(c.retry_after_s >= 28 && c.retry_after_s <= 30);
    CHECK_EQ_INT(d.error, 0);
    CHECK_EQ_INT(d.status, 404);
    corral_fetch_upstream_free(u);
    server_free(s);
}

static struct corral_fetch_cache_control
cc_of(const char *v)
{
    struct corral_fetch_cache_control cc = CORRAL_FETCH_CACHE_CONTROL_NONE;

    corral_fetch_cache_control_parse(&cc, v, strlen(v));
    return cc;
}

/* Every Cache-Control directive that decides storing, in the forms RFC
 * 9111 allows and a few it does not. */
static void
test_cache_control_parse(void)
{
    struct corral_fetch_cache_control cc;

    cc = cc_of("");
    CHECK_EQ_INT(cc.flags, 0);
    CHECK_EQ_INT(cc.max_age_s, -1);
    CHECK_EQ_INT(cc.s_maxage_s, -1);
    cc = cc_of("no-store");
    CHECK_EQ_INT(cc.flags, CORRAL_FETCH_CC_NO_STORE);
    cc = cc_of("public, max-age=300");
    CHECK_EQ_INT(cc.flags, 0);
    CHECK_EQ_INT(cc.max_age_s, 300);
    CHECK_EQ_INT(cc.s_maxage_s, -1);
    cc = cc_of("PRIVATE,NO-CACHE");
    CHECK_EQ_INT(cc.flags, CORRAL_FETCH_CC_PRIVATE | CORRAL_FETCH_CC_NO_CACHE);
    /* Qualified forms count whole; a quoted list's commas are not
     * directives of their own. */
    cc = cc_of("private=\"Set-Cookie, max-age=5\", max-age=60");
    CHECK_EQ_INT(cc.flags, CORRAL_FETCH_CC_PRIVATE);
    CHECK_EQ_INT(cc.max_age_s, 60);
    cc = cc_of("no-cache=\"x\\\"no-store\", s-maxage=\"30\"");
    CHECK_EQ_INT(cc.flags, CORRAL_FETCH_CC_NO_CACHE);
    CHECK_EQ_INT(cc.s_maxage_s, 30);
    /* Names must be whole: these are other directives. */
    cc = cc_of("no-storex, xprivate, max-agex=1, must-revalidate");
    CHECK_EQ_INT(cc.flags, 0);
    CHECK_EQ_INT(cc.max_age_s, -1);
    /* A garbled lifetime is 0, never longer; twice keeps the shorter;
     * past 2^31 is 2^31. */
    cc = cc_of("max-age=abc");
    CHECK_EQ_INT(cc.max_age_s, 0);
    cc = cc_of("max-age");
    CHECK_EQ_INT(cc.max_age_s, 0);
    cc = cc_of("max-age=-5");
    CHECK_EQ_INT(cc.max_age_s, 0);
    cc = cc_of("max-age=60, max-age=10 , max-age=30");
    CHECK_EQ_INT(cc.max_age_s, 10);
    cc = cc_of("max-age=99999999999999999999999");
    CHECK_EQ_INT(cc.max_age_s, 2147483648LL);
    /* Empty elements, spaces and stray bytes around them. */
    cc = cc_of(" ,, \t no-store ; x , ,max-age = 7,");
    CHECK_EQ_INT(cc.flags, CORRAL_FETCH_CC_NO_STORE);
    CHECK_EQ_INT(cc.max_age_s, 7);
    cc = cc_of("private=\"unterminated");
    CHECK_EQ_INT(cc.flags, CORRAL_FETCH_CC_PRIVATE);
    /* Accumulates across field lines. */
    cc = cc_of("max-age=60");
    corral_fetch_cache_control_parse(&cc, "no-store", 8);
    CHECK_EQ_INT(cc.flags, CORRAL_FETCH_CC_NO_STORE);
    CHECK_EQ_INT(cc.max_age_s, 60);
    /* Only len bytes are read. */
    cc = CORRAL_FETCH_CACHE_CONTROL_NONE;
    corral_fetch_cache_control_parse(&cc, "no-store", 7);
    CHECK_EQ_INT(cc.flags, 0);
}

/* The answer's Cache-Control lines and Age reach the result. */
static void
test_cache_control_answer(void)
{
    struct server *s = server_new("127.0.0.1", NULL);
    struct corral_fetch_upstream *u = upstream(s->port, 4);
    struct got g = {0};

    get(u, "/private", &g);
    CHECK(run_until(&g.calls, 1, 10000));
    CHECK_EQ_INT(g.error, 0);
    CHECK_EQ_INT(g.cc.flags, CORRAL_FETCH_CC_PRIVATE);
    CHECK_EQ_INT(g.cc.max_age_s, 60);
    CHECK_EQ_INT(g.cc.s_maxage_s, 30);
    CHECK_EQ_INT(g.age_s, 12);
    get(u, "/json", &g);
    CHECK(run_until(&g.calls, 2, 10000));
    CHECK_EQ_INT(g.cc.flags, 0);
    CHECK_EQ_INT(g.cc.max_age_s, -1);
    CHECK_EQ_INT(g.cc.s_maxage_s, -1);
    CHECK_EQ_INT(g.age_s, 0);
    corral_fetch_upstream_free(u);
    server_free(s);
}

static void
test_timeout(void)
{
    struct server *s = server_new("127.0.0.1", NULL);
    struct corral_fetch_upstream *u =
        upstream_full("http", "127.0.0.1", s->port, 300, 1, 1 << 20, NULL);
    struct got a = {0}, b = {0};
    uint64_t t0 = mono_ms();

    /* b waits in the queue behind a: the deadline counts that wait too. */
    get(u, "/hang", &a);
    get(u, "/json", &b);
    CHECK(run_until(&a.calls, 1, 10000));
    CHECK(run_until(&b.calls, 1, 10000));
    CHECK(mono_ms() - t0 < 1300);
    CHECK_EQ_INT(a.error, -ETIMEDOUT);
    CHECK_EQ_INT(b.error, -ETIMEDOUT);
    CHECK_EQ_INT(a.status, 0);
    /* libevent's clock may run a few ms behind CLOCK_MONOTONIC. */
    CHECK(a.elapsed_ms >= 290 && a.elapsed_ms < 1300);
    CHECK(b.elapsed_ms >= 290 && b.elapsed_ms < 1300);
    /* b's deadline ran out in the queue ("busy"), or, on a machine slow
     * enough that a's connection went first, on a connection of its own:
     * either way within its own deadline, which counted the wait. */
    bool queued = strstr(b.message, "busy") != NULL;
    CHECK(queued || strstr(b.message, "no answer within") != NULL);
    CHECK(s->requests >= 1);
    run_for(base, 300);
    CHECK_EQ_INT(a.calls, 1);
    CHECK_EQ_INT(b.calls, 1);
    /* The timed-out connection was dropped; a new fetch gets a new one. */
    get(u, "/json", &b);
    CHECK(run_until(&b.calls, 2, 10000));
    CHECK_EQ_INT(b.error, 0);
    /* a's, b's own when it did not wait in the queue, and the new one. */
    CHECK_EQ_INT(s->connections, queued ? 2 : 3);
    corral_fetch_upstream_free(u);
    server_free(s);
}

static void
test_refused(void)
{
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    evutil_socket_t fd;
    struct corral_fetch_upstream *u;
    struct got g = {0};

    /* A port that was just free and has nobody listening. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&sin, &sl) == 0);
    close(fd);
    u = upstream(ntohs(sin.sin_port), 2);
    get(u, "/json", &g);
    CHECK(run_until(&g.calls, 1, 10000));
    CHECK_EQ_INT(g.sync, 0);
    CHECK_EQ_INT(g.error, -ECONNREFUSED);
    CHECK(strstr(g.message, "cannot connect") != NULL);
    CHECK(g.elapsed_ms < 5000);
    run_for(base, 20);
    CHECK_EQ_INT(g.calls, 1);
    corral_fetch_upstream_free(u);
}

static void
test_too_big(void)
{
    struct server *s = server_new("127.0.0.1", NULL);
    struct corral_fetch_upstream *small =
        upstream_full("http", "127.0.0.1", s->port, 5000, 2, 99999, NULL);
    struct corral_fetch_upstream *exact =
        upstream_full("http", "127.0.0.1", s->port, 5000, 2, 100000, NULL);
    struct got a = {0}, b = {0}, c = {0}, d = {0};

    get(small, "/big", &a);
    get(small, "/bigchunked", &b);
    get(exact, "/big", &c);
    get(exact, "/bigchunked", &d);
    CHECK(run_until(&a.calls, 1, 10000));
    CHECK(run_until(&b.calls, 1, 10000));
    CHECK(run_until(&c.calls, 1, 10000));
    CHECK(run_until(&d.calls, 1, 10000));
    CHECK_EQ_INT(a.error, -EFBIG);
    CHECK(strstr(a.message, "100000") != NULL);
    CHECK_EQ_INT(b.error, -EFBIG);
    CHECK_EQ_INT(c.error, 0);
    CHECK_EQ_INT(c.len, 100000);
    CHECK_EQ_INT(d.error, 0);
    CHECK_EQ_INT(d.len, 100000);
    corral_fetch_upstream_free(small);
    corral_fetch_upstream_free(exact);
    server_free(s);
}

static void
test_pool_limit(void)
{
    struct server *s = server_new("127.0.0.1", NULL);
    struct corral_fetch_upstream *u = upstream(s->port, 2);
    struct got g[10];
    unsigned i, done = 0;

    memset(g, 0, sizeof(g));
    for (i = 0; i < 10; i++)
        get(u, "/delay/20", &g[i]);
    for (i = 0; i < 10; i++) {
        CHECK(run_until(&g[i].calls, 1, 10000));
        CHECK_EQ_INT(g[i].error, 0);
        CHECK_EQ_INT(g[i].status, 200);
        done += g[i].calls;
    }
    CHECK_EQ_INT(done, 10);
    CHECK_EQ_INT(s->requests, 10);
    CHECK_EQ_INT(s->max_inflight, 2);
    CHECK(s->connections <= 2);
    corral_fetch_upstream_free(u);
    server_free(s);
}

struct chain {
    struct corral_fetch_upstream *u;
    struct got g;
    unsigned left;
};

static void
chain_cb(const struct corral_fetch_result *r, void *arg)
{
    struct chain *ch = arg;

    got_cb(r, &ch->g);
    CHECK_EQ_INT(r->error, 0);
    if (--ch->left > 0)
        CHECK(corral_fetch_get(ch->u, "/json", chain_cb, ch) != NULL);
}

static void
test_keepalive_reuse(void)
{
    struct server *s = server_new("127.0.0.1", NULL);
    struct chain ch;

    memset(&ch, 0, sizeof(ch));
    ch.u = upstream(s->port, 4);
    ch.left = 10;
    CHECK(corral_fetch_get(ch.u, "/json", chain_cb, &ch) != NULL);
    CHECK(run_until(&ch.g.calls, 10, 10000));
    CHECK_EQ_INT(s->requests, 10);
    CHECK_EQ_INT(s->connections, 1);
    corral_fetch_upstream_free(ch.u);
    server_free(s);
}

static void
test_server_closes(void)
{
    struct server *s = server_new("127.0.0.1", NULL);
    struct corral_fetch_upstream *u = upstream(s->port, 1);
    struct got g = {0};

    /* "Connection: close" on the answer. */
    get(u, "/close", &g);
    CHECK(run_until(&g.calls, 1, 10000));
    CHECK_EQ_INT(g.error, 0);
    CHECK_EQ_STR(g.body, "{\"closing\":true}");
    get(u, "/json", &g);
    CHECK(run_until(&g.calls, 2, 10000));
    CHECK_EQ_INT(g.error, 0);
    CHECK_EQ_INT(s->connections, 2);
    /* The server drops an idle kept-alive connection. */
    evhttp_connection_free(s->last_evcon);
    run_for(base, 30);
    get(u, "/json", &g);
    CHECK(run_until(&g.calls, 3, 10000));
    CHECK_EQ_INT(g.error, 0);
    CHECK_EQ_INT(s->connections, 3);
    corral_fetch_upstream_free(u);
    server_free(s);
}

static void
cancel_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    corral_fetch_cancel(arg);
}

/* Cancels a fetch on a fresh upstream right after dispatch has started its
 * connection: an event activated after corral_fetch_get() runs after the
 * upstream's dispatch event in the same loop turn. */
static void
cancel_after_dispatch(uint16_t port, const char *ca_file)
{
    struct corral_fetch_upstream *u =
        upstream_full(ca_file != NULL ? "https" : "http", "127.0.0.1", port,
                      5000, 1, 1 << 20, ca_file);
    struct got g = {0};
    struct event *ev = event_new(base, -1, 0, cancel_cb, get(u, "/json", &g));

    event_active(ev, EV_TIMEOUT, 1);
    run_for(base, 30);
    CHECK_EQ_INT(g.calls, 0);
    event_free(ev);
    get(u, "/json", &g);
    CHECK(run_until(&g.calls, 1, 10000));
    CHECK_EQ_INT(g.error, 0);
    corral_fetch_upstream_free(u);
}

static void
test_cancel(void)
{
    struct server *s = server_new("127.0.0.1", NULL);
    struct corral_fetch_upstream *u = upstream(s->port, 1);
    struct got a = {0}, b = {0}, c = {0}, d = {0};
    struct corral_fetch *fb, *fc, *fd;
    unsigned before;

    /* Before dispatch, while queued, while connecting. */
    fc = get(u, "/json", &c);
    corral_fetch_cancel(fc);
    get(u, "/delay/30", &a);
    fb = get(u, "/json", &b);
    CHECK(run_until(&s->requests, 1, 10000));
    corral_fetch_cancel(fb);
    CHECK(run_until(&a.calls, 1, 10000));
    CHECK_EQ_INT(a.error, 0);
    run_for(base, 30);
    CHECK_EQ_INT(b.calls, 0);
    CHECK_EQ_INT(c.calls, 0);
    CHECK_EQ_INT(s->requests, 1);

    cancel_after_dispatch(s->port, NULL);

    /* In flight: the server has the request. */
    before = s->requests;
    fd = get(u, "/hang", &d);
    CHECK(run_until(&s->requests, before + 1, 10000));
    corral_fetch_cancel(fd);
    run_for(base, 30);
    CHECK_EQ_INT(d.calls, 0);

    /* The connection was dropped, not handed on mid-answer. */
    get(u, "/json", &a);
    CHECK(run_until(&a.calls, 2, 10000));
    CHECK_EQ_INT(a.error, 0);
    CHECK_EQ_STR(a.body, "{\"ok\":true}");
    corral_fetch_cancel(NULL);
    corral_fetch_upstream_free(u);
    server_free(s);
}

static void
test_free_in_flight(void)
{
    struct server *s = server_new("127.0.0.1", NULL);
    struct corral_fetch_upstream *u = upstream(s->port, 2);
    struct got g[3];
    unsigned i;

    memset(g, 0, sizeof(g));
    for (i = 0; i < 3; i++)
        get(u, "/hang", &g[i]);
    CHECK(run_until(&s->requests, 2, 10000));
    corral_fetch_upstream_free(u);
    for (i = 0; i < 3; i++) {
        CHECK_EQ_INT(g[i].calls, 1);
        CHECK_EQ_INT(g[i].error, -ECANCELED);
    }
    run_for(base, 30);
    for (i = 0; i < 3; i++)
        CHECK_EQ_INT(g[i].calls, 1);
    corral_fetch_upstream_free(NULL);
    server_free(s);
}

struct freer {
    struct corral_fetch_upstream *u;
    struct got g;
    struct got *other;
};

static void
free_in_cb(const struct corral_fetch_result *r, void *arg)
{
    struct freer *fr = arg;

    got_cb(r, &fr->g);
    corral_fetch_upstream_free(fr->u);
    /* The others were answered before free returned. */
    CHECK_EQ_INT(fr->other->calls, 1);
    CHECK_EQ_INT(fr->other->error, -ECANCELED);
}

static void
test_free_from_callback(void)
{
    struct server *s = server_new("127.0.0.1", NULL);
    struct freer fr;
    struct got b = {0}, q = {0};

    /* A success frees the upstream while another request hangs. */
    memset(&fr, 0, sizeof(fr));
    fr.u = upstream(s->port, 2);
    fr.other = &b;
    CHECK(corral_fetch_get(fr.u, "/delay/30", free_in_cb, &fr) != NULL);
    get(fr.u, "/hang", &b);
    CHECK(run_until(&fr.g.calls, 1, 10000));
    CHECK_EQ_INT(fr.g.error, 0);
    run_for(base, 20);
    CHECK_EQ_INT(b.calls, 1);

    /* A failure (timeout) frees it while another waits in the queue. */
    memset(&fr, 0, sizeof(fr));
    fr.u = upstream_full("http", "127.0.0.1", s->port, 100, 1, 1024, NULL);
    fr.other = &q;
    CHECK(corral_fetch_get(fr.u, "/hang", free_in_cb, &fr) != NULL);
    run_for(base, 20);
    get(fr.u, "/json", &q);
    CHECK(run_until(&fr.g.calls, 1, 10000));
    CHECK_EQ_INT(fr.g.error, -ETIMEDOUT);
    run_for(base, 20);
    CHECK_EQ_INT(q.calls, 1);
    server_free(s);
}

static void
expect_bad_options(struct corral_fetch_options o, const char *why)
{
    char err[256] = "";

    CHECK(corral_fetch_upstream_new(base, &o, err, sizeof(err)) == NULL);
    if (strstr(err, why) == NULL)
        fprintf(stderr, "error \"%s\" lacks \"%s\"\n", err, why);
    CHECK(strstr(err, why) != NULL);
}

static void
test_bad_input(void)
{
    static const char *const crlf[] = {"X-A", "b\r\nEvil: 1", NULL};
    static const char *const host[] = {"Host", "elsewhere", NULL};
    static const char *const name[] = {"X A", "b", NULL};
    struct corral_fetch_options good = {"http", "127.0.0.1", 80,   1000,
                                        1,      1024,        NULL, NULL};
    struct corral_fetch_options o;
    struct corral_fetch_upstream *u;
    struct got g = {0};

    o = good, o.scheme = "ftp", expect_bad_options(o, "scheme");
    o = good, o.host = "a b", expect_bad_options(o, "host");
    o = good, o.host = "", expect_bad_options(o, "host");
    o = good, o.port = 0, expect_bad_options(o, "port");
    o = good, o.timeout_ms = 0, expect_bad_options(o, "timeout");
    o = good, o.max_connections = 0, expect_bad_options(o, "max_connections");
    o = good, o.max_body = 0, expect_bad_options(o, "max_body");
    o = good, o.headers = crlf, expect_bad_options(o, "control");
    o = good, o.headers = host, expect_bad_options(o, "sets itself");
    o = good, o.headers = name, expect_bad_options(o, "header name");
    o = good, o.scheme = "https", o.ca_file = "/nonexistent/ca.pem",
    expect_bad_options(o, "/nonexistent/ca.pem");
    o = good, o.host = "[::1]";
    u = corral_fetch_upstream_new(base, &o, NULL, 0);
    CHECK(u != NULL);
    corral_fetch_upstream_free(u);

    u = corral_fetch_upstream_new(base, &good, NULL, 0);
    CHECK(u != NULL);
    CHECK(corral_fetch_get(u, "no-slash", got_cb, &g) == NULL);
    CHECK(corral_fetch_get(u, "/a b", got_cb, &g) == NULL);
    CHECK(corral_fetch_get(u, "/a\r\nX: y", got_cb, &g) == NULL);
    CHECK(corral_fetch_get(u, "/ok", NULL, &g) == NULL);
    corral_fetch_upstream_free(u);
    run_for(base, 10);
    CHECK_EQ_INT(g.calls, 0);
    CHECK_EQ_STR(corral_fetch_error_name(-EFBIG), "too_big");
    CHECK_EQ_STR(corral_fetch_error_name(0), "none");
    CHECK_EQ_STR(corral_fetch_error_name(99), "unknown");
    CHECK_EQ_STR(corral_fetch_error_name(-1), "unknown");
}

static void
raw_case(enum raw_mode mode, int want_error, const char *want_message)
{
    struct raw_server *rs = raw_server_new(mode);
    struct corral_fetch_upstream *u = upstream(rs->port, 1);
    struct got g = {0};

    get(u, "/json", &g);
    CHECK(run_until(&g.calls, 1, 10000));
    if (g.error != want_error || strstr(g.message, want_message) == NULL)
        fprintf(stderr, "mode %d: %s: %s\n", (int)mode,
                corral_fetch_error_name(g.error), g.message);
    CHECK_EQ_INT(g.error, want_error);
    CHECK(strstr(g.message, want_message) != NULL);
    corral_fetch_upstream_free(u);
    run_for(base, 10);
    raw_server_free(rs);
}

static void
test_bad_answers(void)
{
    raw_case(RAW_GARBAGE, -EPROTO, "malformed");
    raw_case(RAW_BAD_LENGTH, -EPROTO, "malformed");
    raw_case(RAW_CLOSE, -ECONNREFUSED, "closed before the response");
    raw_case(RAW_TRUNCATED, -ECONNREFUSED, "body");
}

/* A kept-alive connection that speaks while idle is never read again: the
 * second request gets its own answer on a fresh connection. */
static void
test_idle_bytes(void)
{
    struct raw_server *rs = raw_server_new(RAW_LATE);
    struct corral_fetch_upstream *u = upstream(rs->port, 1);
    struct got g = {0};

    get(u, "/json", &g);
    CHECK(run_until(&g.calls, 1, 10000));
    CHECK_EQ_STR(g.body, "{\"n\":1}");
    run_for(base, 80); /* the late answer lands on the idle connection */
    get(u, "/json", &g);
    CHECK(run_until(&g.calls, 2, 10000));
    CHECK_EQ_INT(g.error, 0);
    CHECK_EQ_STR(g.body, "{\"n\":2}");
    CHECK_EQ_INT(rs->connections, 2);
    corral_fetch_upstream_free(u);
    run_for(base, 10);
    raw_server_free(rs);
}

/* A 204, a 200 with Content-Length: 0, a chunked 200 with a trailer and a
 * 200 with a body, each with another answer right behind it in the same
 * packet: the next request never reads that one. */
static void
test_bodyless_then_more(void)
{
    struct raw_server *rs = raw_server_new(RAW_BODYLESS);
    struct corral_fetch_upstream *u = upstream(rs->port, 1);
    struct got g = {0};

    for (unsigned k = 0; k < 4; k++) {
        get(u, "/json", &g);
        CHECK(run_until(&g.calls, 2 * k + 1, 10000));
        CHECK_EQ_INT(g.error, 0);
        CHECK_EQ_INT(g.status, k == 0 ? 204 : 200);
        CHECK_EQ_INT(g.len, k < 2 ? 0 : 2);
        get(u, "/json", &g);
        CHECK(run_until(&g.calls, 2 * k + 2, 10000));
        CHECK_EQ_INT(g.error, 0);
        CHECK_EQ_INT(g.status, 200);
        if (strcmp(g.body, "\"POISON\"") == 0)
            fprintf(stderr, "round %u: the second answer was read\n", k);
        CHECK(strcmp(g.body, "\"POISON\"") != 0);
        CHECK(g.body[0] == '{');
    }
    corral_fetch_upstream_free(u);
    run_for(base, 10);
    raw_server_free(rs);

    /* The 204's "body" comes a moment after its head: libcurl 7.88 read
     * it as the next answer on the connection. */
    rs = raw_server_new(RAW_LATE204);
    u = upstream(rs->port, 1);
    memset(&g, 0, sizeof(g));
    for (unsigned k = 0; k < 3; k++) {
        get(u, "/json", &g);
        CHECK(run_until(&g.calls, 2 * k + 1, 10000));
        CHECK_EQ_INT(g.status, 204);
        get(u, "/json", &g);
        CHECK(run_until(&g.calls, 2 * k + 2, 10000));
        CHECK_EQ_INT(g.error, 0);
        CHECK(g.body[0] == '{');
    }
    corral_fetch_upstream_free(u);
    run_for(base, 10);
    raw_server_free(rs);
}

/* A response that starts with a folded line, twice: libcurl 7.88 folded it
 * into the previous transfer's last header, freed by then, when an easy
 * handle was reused (valgrind and ASan see it; found by fuzz-upstream). */
static void
test_fold_at_start(void)
{
    struct raw_server *rs = raw_server_new(RAW_FOLD);
    struct corral_fetch_upstream *u = upstream(rs->port, 1);
    struct got g = {0};

    for (unsigned k = 1; k <= 3; k++) {
        get(u, "/json", &g);
        CHECK(run_until(&g.calls, k, 10000));
    }
    corral_fetch_upstream_free(u);
    run_for(base, 10);
    raw_server_free(rs);
}

/* A body that ends at close is read whole, and its connection is not
 * reused; a 101 is an error and its connection is closed. */
static void
test_unframed_and_switch(void)
{
    struct raw_server *rs = raw_server_new(RAW_UNFRAMED);
    struct corral_fetch_upstream *u = upstream(rs->port, 1);
    struct got g = {0};

    get(u, "/json", &g);
    CHECK(run_until(&g.calls, 1, 10000));
    CHECK_EQ_INT(g.error, 0);
    CHECK_EQ_STR(g.body, "{\"unframed\":1}");
    get(u, "/json", &g);
    CHECK(run_until(&g.calls, 2, 10000));
    CHECK_EQ_STR(g.body, "{\"unframed\":1}");
    CHECK_EQ_INT(rs->connections, 2);
    corral_fetch_upstream_free(u);
    run_for(base, 10);
    raw_server_free(rs);

    rs = raw_server_new(RAW_SWITCH);
    u = upstream(rs->port, 1);
    get(u, "/json", &g);
    CHECK(run_until(&g.calls, 3, 10000));
    CHECK_EQ_INT(g.error, -EPROTO);
    CHECK(strstr(g.message, "101") != NULL);
    get(u, "/json", &g);
    CHECK(run_until(&g.calls, 4, 10000));
    CHECK_EQ_INT(g.error, -EPROTO);
    CHECK_EQ_INT(rs->connections, 2);
    corral_fetch_upstream_free(u);
    run_for(base, 10);
    raw_server_free(rs);
}

static void
test_stale_connection_retry(void)
{
    struct raw_server *rs = raw_server_new(RAW_ONE_PER_CONN);
    struct corral_fetch_upstream *u = upstream(rs->port, 1);
    struct got g = {0};

    /* The second request finds the kept-alive connection closed under it
     * and is sent once more on a fresh one. */
    get(u, "/json", &g);
    CHECK(run_until(&g.calls, 1, 10000));
    CHECK_EQ_INT(g.error, 0);
    get(u, "/json", &g);
    CHECK(run_until(&g.calls, 2, 10000));
    CHECK_EQ_INT(g.error, 0);
    CHECK_EQ_STR(g.body, "{}");
    CHECK_EQ_INT(rs->connections, 2);
    CHECK_EQ_INT(rs->requests, 3);
    corral_fetch_upstream_free(u);
    run_for(base, 10);
    raw_server_free(rs);
}

/* ---- https ---- */

static char tls_dir[64];

static int
make_cert(const char *name, const char *cn, const char *san)
{
    char cmd[1024];

    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt "
             "ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=%s "
             "-addext subjectAltName=%s -keyout %s/%s.key -out %s/%s.pem "
             ">/dev/null 2>&1",
             cn, san, tls_dir, name, tls_dir, name);
    return system(cmd) == 0 ? 0 : -1;
}

static char *
tls_path(const char *name, const char *ext)
{
    static char bufs[4][128];
    static unsigned next;
    char *p = bufs[next++ % 4];

    snprintf(p, 128, "%s/%s.%s", tls_dir, name, ext);
    return p;
}

static SSL_CTX *
server_ctx(const char *name)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    CHECK(ctx != NULL);
    CHECK(SSL_CTX_use_certificate_chain_file(ctx, tls_path(name, "pem")) == 1);
    CHECK(SSL_CTX_use_PrivateKey_file(ctx, tls_path(name, "key"),
                                      SSL_FILETYPE_PEM) == 1);
    return ctx;
}

static void
tls_expect(struct server *s, const char *host, const char *ca_file,
           int want_error, const char *want_message)
{
    struct corral_fetch_upstream *u =
        upstream_full("https", host, s->port, 5000, 2, 1 << 20, ca_file);
    struct got g = {0};

    get(u, "/json", &g);
    CHECK(run_until(&g.calls, 1, 10000));
    printf("# https://%s, ca %s: %s: %s\n", host,
           ca_file != NULL ? strrchr(ca_file, '/') + 1 : "system",
           corral_fetch_error_name(g.error), g.message);
    CHECK_EQ_INT(g.error, want_error);
    CHECK(strstr(g.message, want_message) != NULL);
    if (want_error == 0) {
        CHECK_EQ_INT(g.status, 200);
        CHECK_EQ_STR(g.body, "{\"ok\":true}");
    }
    run_for(base, 10);
    CHECK_EQ_INT(g.calls, 1);
    corral_fetch_upstream_free(u);
}

/* The address "localhost" resolves to first, as the fetch module sees it. */
static const char *
localhost_addr(void)
{
    struct addrinfo hints, *ai;
    const char *addr;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    if (getaddrinfo("localhost", NULL, &hints, &ai) != 0)
        return NULL;
    addr = ai->ai_family == AF_INET6 ? "::1" : "127.0.0.1";
    freeaddrinfo(ai);
    return addr;
}

static SSL_CTX *good_ctx, *other_ctx;
static char *good_ca, *other_ca;

static void
test_tls_verify(void)
{
    struct server *s = server_new("127.0.0.1", good_ctx);
    struct server *o = server_new("127.0.0.1", other_ctx);
    struct server *plain = server_new("127.0.0.1", NULL);
    const char *lh = localhost_addr();
    struct server *l;

    tls_expect(s, "127.0.0.1", good_ca, 0, "OK");
    tls_expect(s, "127.0.0.1", NULL, -EKEYREJECTED,
               "certificate verify failed: self-signed certificate");
    tls_expect(o, "127.0.0.1", other_ca, -EKEYREJECTED,
               "subject name matches target host name '127.0.0.1'");
    tls_expect(s, "127.0.0.1", other_ca, -EKEYREJECTED,
               "certificate verify failed");
    tls_expect(plain, "127.0.0.1", good_ca, -EKEYREJECTED, "handshake failed");
    CHECK(lh != NULL);
    l = server_new(lh, good_ctx);
    if (l == NULL) {
        skip_part("localhost cannot be bound: its TLS name check");
    } else {
        tls_expect(l, "localhost", good_ca, 0, "OK");
        l->ssl = other_ctx;
        tls_expect(l, "localhost", other_ca, -EKEYREJECTED,
                   "subject name matches target host name 'localhost'");
        server_free(l);
    }
    server_free(s);
    server_free(o);
    server_free(plain);
}

static void
test_tls_keepalive(void)
{
    struct server *s = server_new("127.0.0.1", good_ctx);
    struct corral_fetch_upstream *u =
        upstream_full("https", "127.0.0.1", s->port, 5000, 2, 1 << 20, good_ca);
    struct chain ch;
    struct got g = {0};
    long hits = SSL_CTX_sess_hits(good_ctx);

    memset(&ch, 0, sizeof(ch));
    ch.u = u;
    ch.left = 5;
    CHECK(corral_fetch_get(u, "/json", chain_cb, &ch) != NULL);
    CHECK(run_until(&ch.g.calls, 5, 10000));
    CHECK_EQ_INT(s->connections, 1);

    /* The server drops the idle TLS connection: the next fetch must get a
     * fresh connection, not a reconnected bufferevent. */
    evhttp_connection_free(s->last_evcon);
    run_for(base, 30);
    get(u, "/json", &g);
    CHECK(run_until(&g.calls, 1, 10000));
    CHECK_EQ_INT(g.error, 0);
    CHECK_EQ_INT(s->connections, 2);
    /* ... which resumed the first one's TLS session. */
    CHECK(SSL_CTX_sess_hits(good_ctx) == hits + 1);

    /* Connection: close, then again. */
    get(u, "/close", &g);
    CHECK(run_until(&g.calls, 2, 10000));
    CHECK_EQ_INT(g.error, 0);
    get(u, "/json", &g);
    CHECK(run_until(&g.calls, 3, 10000));
    CHECK_EQ_INT(g.error, 0);
    CHECK_EQ_INT(s->connections, 3);
    corral_fetch_upstream_free(u);
    server_free(s);
}

static void
test_tls_cancel_and_free(void)
{
    struct server *s = server_new("127.0.0.1", good_ctx);
    struct corral_fetch_upstream *u =
        upstream_full("https", "127.0.0.1", s->port, 5000, 2, 1 << 20, good_ca);
    struct got a = {0}, b = {0}, c = {0};
    struct corral_fetch *f;
    unsigned before;

    /* Cancel while connecting, and mid-handshake (the server has accepted
     * the connection). */
    cancel_after_dispatch(s->port, good_ca);
    before = s->connections;
    f = get(u, "/hang", &a); /* so it cannot finish before the cancel */
    CHECK(run_until(&s->connections, before + 1, 10000));
    corral_fetch_cancel(f);
    run_for(base, 30);
    CHECK_EQ_INT(a.calls, 0);
    /* Free with one request on the wire and one connecting. */
    before = s->requests;
    get(u, "/hang", &b);
    CHECK(run_until(&s->requests, before + 1, 10000));
    before = s->connections;
    get(u, "/json", &c);
    CHECK(run_until(&s->connections, before + 1, 10000));
    corral_fetch_upstream_free(u);
    CHECK_EQ_INT(b.calls, 1);
    CHECK_EQ_INT(b.error, -ECANCELED);
    CHECK_EQ_INT(c.calls, 1);
    CHECK_EQ_INT(c.error, -ECANCELED);
    run_for(base, 30);
    server_free(s);
}

/* Runs at exit, also when a CHECK fails. */
static void
remove_tls_dir(void)
{
    const char *names[] = {"good", "other"};
    unsigned i;

    for (i = 0; i < 2; i++) {
        unlink(tls_path(names[i], "pem"));
        unlink(tls_path(names[i], "key"));
    }
    rmdir(tls_dir);
}

static void
tls_setup(void)
{
    strcpy(tls_dir, "/tmp/corral-test-fetch-XXXXXX");
    CHECK(mkdtemp(tls_dir) != NULL);
    atexit(remove_tls_dir);
    CHECK(make_cert("good", "localhost", "DNS:localhost,IP:127.0.0.1") == 0);
    CHECK(make_cert("other", "other.example", "DNS:other.example") == 0);
    good_ctx = server_ctx("good");
    other_ctx = server_ctx("other");
    good_ca = strdup(tls_path("good", "pem"));
    other_ca = strdup(tls_path("other", "pem"));
}

static void
tls_teardown(void)
{
    SSL_CTX_free(good_ctx);
    SSL_CTX_free(other_ctx);
    free(good_ca);
    free(other_ca);
}

int
main(void)
{
    int have_openssl;

    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
    CHECK(base != NULL);

    RUN(test_ok);
    RUN(test_status_passthrough);
    RUN(test_cache_control_parse);
    RUN(test_cache_control_answer);
    RUN(test_timeout);
    RUN(test_refused);
    RUN(test_too_big);
    RUN(test_pool_limit);
    RUN(test_keepalive_reuse);
    RUN(test_server_closes);
    RUN(test_cancel);
    RUN(test_free_in_flight);
    RUN(test_free_from_callback);
    RUN(test_bad_input);
    RUN(test_bad_answers);
    RUN(test_stale_connection_retry);
    RUN(test_idle_bytes);
    RUN(test_bodyless_then_more);
    RUN(test_fold_at_start);
    RUN(test_unframed_and_switch);

    have_openssl = system("openssl version >/dev/null 2>&1") == 0;
    if (have_openssl) {
        tls_setup();
        RUN(test_tls_verify);
        RUN(test_tls_keepalive);
        RUN(test_tls_cancel_and_free);
        tls_teardown();
    } else {
        skip_part("no openssl CLI: the https cases");
    }
    event_base_free(base);
    return testlib_result();
}
