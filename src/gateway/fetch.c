/* fetch.c — the upstream connection pool and its HTTP/1.1 GETs.
 * A connection carries one request at a time. One that closed or failed is
 * freed and replaced, never reconnected: libevent 2.1 reuses the bufferevent
 * on reconnect, which breaks TLS. Our own timer bounds each fetch. User
 * callbacks run only through finish(); the upstream itself is freed only when
 * none of our frames that can call back is on the stack (depth). */
#include "fetch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define MAX_HEADERS_SIZE (64 * 1024) /* bytes of response head */
#define MAX_PATH_LEN 8192            /* bytes of path and query */
#define MAX_TIMEOUT_MS (24ULL * 3600 * 1000)
/* evhttp's own I/O timeouts stay behind our deadline so ours decides; they
 * also close idle keep-alive connections. */
#define IO_TIMEOUT_SLACK_MS 1000

enum fetch_state {
    FETCH_QUEUED, /* in u->queue, waiting for a connection */
    FETCH_ACTIVE, /* its request is on f->conn */
    FETCH_DONE,   /* its callback is running */
};

struct conn {
    struct corral_fetch_upstream *u;
    struct evhttp_connection *evcon;
    SSL *ssl;                   /* owned by the bufferevent; NULL for http */
    struct corral_fetch *fetch; /* NULL when idle */
    struct conn *prev, *next;   /* u->conns */
    unsigned requests;          /* requests started on it */
    int dead;                   /* evhttp closed it: free, never reuse */
    int tls_done;               /* handshake completed */
    long verify_error;          /* first X509_V_ERR_*, 0 = none */
};

struct corral_fetch {
    struct corral_fetch_upstream *u;
    corral_fetch_cb *cb;
    void *arg;
    char *path;
    enum fetch_state state;
    struct corral_fetch *prev, *next; /* u->queue while QUEUED */
    struct conn *conn;                /* while ACTIVE */
    struct evhttp_request *req;       /* while ACTIVE; evhttp frees it */
    struct event *timer;              /* the whole-exchange deadline */
    uint64_t start_ms;                /* monotonic */
    int ev_error;                     /* enum evhttp_request_error, -1 = none */
    int status;                       /* from the response head, 0 = none yet */
    int got_headers;                  /* the response head was parsed */
    int chunked;                      /* Transfer-Encoding: chunked */
    int too_big;                      /* Content-Length over max_body */
    int reused;                       /* sent on a kept-alive connection */
    int retried;                      /* re-sent once after a stale conn */
    char msg[256];
};

struct corral_fetch_upstream {
    struct event_base *base;
    struct evdns_base *dns;
    char *host;        /* without brackets */
    char *host_header; /* "host[:port]" */
    int host_is_ip;
    uint16_t port;
    uint64_t timeout_ms;
    unsigned max_connections;
    size_t max_body;
    char **headers;       /* name, value, ..., NULL */
    SSL_CTX *ssl_ctx;     /* NULL for http */
    SSL_SESSION *session; /* last one the server gave us, for resumption */
    struct conn *conns;
    unsigned nconns;
    struct corral_fetch *queue_head, *queue_tail;
    struct event *dispatch_ev;
    unsigned depth; /* our frames on the stack that may call back */
    int dying;      /* corral_fetch_upstream_free() was called */
};

static const char *const error_names[] = {
    [CORRAL_FETCH_E_NONE] = "none",
    [CORRAL_FETCH_E_CONNECT] = "connect",
    [CORRAL_FETCH_E_TIMEOUT] = "timeout",
    [CORRAL_FETCH_E_TLS] = "tls",
    [CORRAL_FETCH_E_TOO_BIG] = "too_big",
    [CORRAL_FETCH_E_PROTOCOL] = "protocol",
    [CORRAL_FETCH_E_CANCELLED] = "cancelled",
};

const char *
corral_fetch_error_name(int error)
{
    if (error < 0 ||
        (size_t)error >= sizeof(error_names) / sizeof(*error_names))
        return "unknown";
    return error_names[error];
}

static uint64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct timeval
ms_to_tv(uint64_t ms)
{
    struct timeval tv;

    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    return tv;
}

__attribute__((format(printf, 3, 4))) static void
say(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;

    if (buf == NULL || len == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

static const char *
openssl_reason(unsigned long e, char *buf, size_t len)
{
    const char *r = ERR_reason_error_string(e);

    if (r != NULL)
        return r;
    ERR_error_string_n(e, buf, len);
    return buf;
}

/* ---- lifetime guard ---- */

static void destroy(struct corral_fetch_upstream *u);

static void
enter(struct corral_fetch_upstream *u)
{
    u->depth++;
}

/* May free u: callers return right after. */
static void
leave(struct corral_fetch_upstream *u)
{
    if (--u->depth == 0 && u->dying)
        destroy(u);
}

static void
schedule_dispatch(struct corral_fetch_upstream *u)
{
    if (!u->dying)
        event_active(u->dispatch_ev, EV_TIMEOUT, 1);
}

/* ---- TLS ---- */

static int
verify_cb(int ok, X509_STORE_CTX *store)
{
    SSL *ssl;
    struct conn *c;

    if (ok)
        return ok;
    ssl =
        X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    c = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
    if (c != NULL && c->verify_error == 0)
        c->verify_error = X509_STORE_CTX_get_error(store);
    return ok;
}

static void
info_cb(const SSL *ssl, int where, int ret)
{
    struct conn *c;

    (void)ret;
    if (!(where & SSL_CB_HANDSHAKE_DONE))
        return;
    c = SSL_get_app_data(ssl);
    if (c != NULL)
        c->tls_done = 1;
}

/* Keeps a copy of the newest session for the next connection's handshake.
 * A copy, because the original stays tied to its SSL, and OpenSSL marks it
 * not resumable when evhttp resets that SSL without a TLS shutdown, which
 * is how every kept-alive connection ends. */
static int
session_new_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct conn *c = SSL_get_app_data(ssl);
    SSL_SESSION *copy;

    if (c == NULL || (copy = SSL_SESSION_dup(sess)) == NULL)
        return 0;
    if (c->u->session != NULL)
        SSL_SESSION_free(c->u->session);
    c->u->session = copy;
    return 0; /* the reference passed in stays OpenSSL's */
}

static SSL_CTX *
tls_ctx_new(const char *ca_file, char *err, size_t errlen)
{
    char buf[256];
    SSL_CTX *ctx;
    int ok;

    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        say(err, errlen, "cannot create a TLS context: %s",
            openssl_reason(ERR_get_error(), buf, sizeof(buf)));
        return NULL;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
        say(err, errlen, "cannot require TLS 1.2");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
    if (ca_file != NULL)
        ok = SSL_CTX_load_verify_locations(ctx, ca_file, NULL);
    else
        ok = SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        say(err, errlen, "cannot load %s: %s",
            ca_file != NULL ? ca_file : "the system CA store",
            openssl_reason(ERR_get_error(), buf, sizeof(buf)));
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                            SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, session_new_cb);
    SSL_CTX_set_info_callback(ctx, info_cb);
    return ctx;
}

/* A TLS bufferevent for one new connection: SNI and the name (or address)
 * the certificate must match. NULL on failure. */
static struct bufferevent *
tls_bev_new(struct conn *c, int opts)
{
    struct corral_fetch_upstream *u = c->u;
    struct bufferevent *bev;
    SSL *ssl;
    int ok;

    ssl = SSL_new(u->ssl_ctx);
    if (ssl == NULL)
        return NULL;
    SSL_set_app_data(ssl, c);
    if (u->host_is_ip) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), u->host);
    } else {
        ok = SSL_set_tlsext_host_name(ssl, u->host) &&
             SSL_set1_host(ssl, u->host);
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    }
    if (!ok || (u->session != NULL && !SSL_set_session(ssl, u->session))) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    /* On failure this frees ssl too (BEV_OPT_CLOSE_ON_FREE). */
    bev = bufferevent_openssl_socket_new(u->base, -1, ssl,
                                         BUFFEREVENT_SSL_CONNECTING, opts);
    if (bev == NULL)
        return NULL;
    /* Many servers close without close_notify; bodies are framed by
     * Content-Length or chunks, and read-to-close bodies are validated by
     * the caller. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    c->ssl = ssl;
    return bev;
}

/* ---- connections ---- */

static void
conn_closed_cb(struct evhttp_connection *evcon, void *arg)
{
    struct conn *c = arg;

    (void)evcon;
    /* Called from inside evhttp's reset: only note it. An idle one is reaped
     * by dispatch; a busy one by its request's completion. */
    c->dead = 1;
    if (c->fetch == NULL)
        schedule_dispatch(c->u);
}

static struct conn *
conn_new(struct corral_fetch_upstream *u)
{
    const int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
    struct bufferevent *bev;
    struct timeval tv;
    struct conn *c;

    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->u = u;
    if (u->ssl_ctx != NULL)
        bev = tls_bev_new(c, opts);
    else
        bev = bufferevent_socket_new(u->base, -1, opts);
    if (bev == NULL) {
        free(c);
        return NULL;
    }
    c->evcon = evhttp_connection_base_bufferevent_new(u->base, u->dns, bev,
                                                      u->host, u->port);
    if (c->evcon == NULL) {
        if (c->ssl != NULL)
            SSL_set_app_data(c->ssl, NULL);
        bufferevent_free(bev);
        free(c);
        return NULL;
    }
    evhttp_connection_set_closecb(c->evcon, conn_closed_cb, c);
    evhttp_connection_set_retries(c->evcon, 0);
    evhttp_connection_set_max_headers_size(c->evcon, MAX_HEADERS_SIZE);
    evhttp_connection_set_max_body_size(
        c->evcon, u->max_body > (size_t)EV_SSIZE_MAX ? EV_SSIZE_MAX
                                                     : (ev_ssize_t)u->max_body);
    tv = ms_to_tv(u->timeout_ms + IO_TIMEOUT_SLACK_MS);
    evhttp_connection_set_timeout_tv(c->evcon, &tv);

    c->next = u->conns;
    if (u->conns != NULL)
        u->conns->prev = c;
    u->conns = c;
    u->nconns++;
    return c;
}

/* c must carry no request (c->fetch == NULL). Safe from inside c's own
 * request callback: evhttp touches neither the connection nor its
 * bufferevent (refcounted) after calling it. */
static void
conn_free(struct conn *c)
{
    struct corral_fetch_upstream *u = c->u;

    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        u->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    u->nconns--;
    if (c->ssl != NULL)
        SSL_set_app_data(c->ssl, NULL);
    evhttp_connection_set_closecb(c->evcon, NULL, NULL);
    evhttp_connection_free(c->evcon);
    free(c);
}

static int
conn_usable(struct conn *c)
{
    struct bufferevent *bev;

    if (c->dead || c->fetch != NULL)
        return 0;
    if (c->requests == 0)
        return 1;
    /* evhttp's reset leaves the socket at -1; belt and braces for the
     * close callback. Bytes waiting on an idle connection belong to no
     * request: evhttp would read them as the next answer. */
    bev = evhttp_connection_get_bufferevent(c->evcon);
    if (bufferevent_getfd(bev) < 0 ||
        evbuffer_get_length(bufferevent_get_input(bev)) > 0) {
        c->dead = 1;
        return 0;
    }
    return 1;
}

/* Did the upstream send more than its answer's framing said? Then the
 * connection cannot carry another request. */
static int
conn_has_leftovers(const struct conn *c)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(c->evcon);
    return evbuffer_get_length(bufferevent_get_input(bev)) > 0;
}

/* ---- the queue ---- */

static void
queue_push(struct corral_fetch_upstream *u, struct corral_fetch *f, int front)
{
    f->state = FETCH_QUEUED;
    if (front) {
        f->prev = NULL;
        f->next = u->queue_head;
        if (u->queue_head != NULL)
            u->queue_head->prev = f;
        else
            u->queue_tail = f;
        u->queue_head = f;
    } else {
        f->next = NULL;
        f->prev = u->queue_tail;
        if (u->queue_tail != NULL)
            u->queue_tail->next = f;
        else
            u->queue_head = f;
        u->queue_tail = f;
    }
}

static void
queue_remove(struct corral_fetch_upstream *u, struct corral_fetch *f)
{
    if (f->prev != NULL)
        f->prev->next = f->next;
    else
        u->queue_head = f->next;
    if (f->next != NULL)
        f->next->prev = f->prev;
    else
        u->queue_tail = f->prev;
    f->prev = f->next = NULL;
}

/* ---- fetches ---- */

static void
fetch_free(struct corral_fetch *f)
{
    event_free(f->timer);
    free(f->path);
    free(f);
}

/* Answers f and frees it. May free the upstream: callers return right
 * after. */
static void
finish(struct corral_fetch *f, struct corral_fetch_result *res)
{
    struct corral_fetch_upstream *u = f->u;

    if (res->message == NULL)
        res->message = "";
    res->elapsed_ms = now_ms() - f->start_ms;
    f->state = FETCH_DONE;
    event_del(f->timer);
    enter(u);
    f->cb(res, f->arg);
    fetch_free(f);
    leave(u);
}

static void
finish_error(struct corral_fetch *f, int error, const char *message)
{
    struct corral_fetch_result res;

    memset(&res, 0, sizeof(res));
    res.error = error;
    res.message = message;
    finish(f, &res);
}

/* Takes f's request off its connection and frees that connection, which
 * evhttp has reset. No callback of f's fires. */
static void
abort_active(struct corral_fetch *f)
{
    struct corral_fetch_upstream *u = f->u;
    struct conn *c = f->conn;
    struct evhttp_request *req = f->req;

    f->conn = NULL;
    f->req = NULL;
    c->fetch = NULL;
    /* Frees req; its error callback sees EVREQ_HTTP_REQUEST_CANCEL, which
     * request_error_cb ignores. */
    evhttp_cancel_request(req);
    conn_free(c);
    schedule_dispatch(u);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_fetch *f = arg;

    (void)fd;
    (void)what;
    if (f->state == FETCH_QUEUED)
        queue_remove(f->u, f);
    else if (f->state == FETCH_ACTIVE)
        abort_active(f);
    say(f->msg, sizeof(f->msg), "no answer within %llu ms%s",
        (unsigned long long)f->u->timeout_ms,
        f->state == FETCH_QUEUED ? " (all connections busy)" : "");
    finish_error(f, CORRAL_FETCH_E_TIMEOUT, f->msg);
}

static uint64_t
parse_retry_after(const char *v)
{
    uint64_t n = 0;
    struct tm tm;
    time_t t, now;
    char *end;

    if (v == NULL)
        return 0;
    while (*v == ' ' || *v == '\t')
        v++;
    if (*v >= '0' && *v <= '9') {
        for (; *v >= '0' && *v <= '9'; v++) {
            if (n > (UINT64_MAX - 9) / 10)
                return 0;
            n = n * 10 + (uint64_t)(*v - '0');
        }
        while (*v == ' ' || *v == '\t')
            v++;
        return *v == '\0' ? n : 0;
    }
    /* IMF-fixdate, e.g. "Wed, 21 Oct 2015 07:28:00 GMT". */
    memset(&tm, 0, sizeof(tm));
    end = strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (end == NULL || *end != '\0')
        return 0;
    t = timegm(&tm);
    now = time(NULL);
    return t > now ? (uint64_t)(t - now) : 0;
}

static int
request_headers_cb(struct evhttp_request *req, void *arg)
{
    struct corral_fetch *f = arg;
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    const char *te, *cl;
    char *end;
    unsigned long long n;

    f->got_headers = 1;
    f->status = evhttp_request_get_response_code(req);
    te = evhttp_find_header(h, "Transfer-Encoding");
    f->chunked = te != NULL && strcasecmp(te, "chunked") == 0;
    cl = evhttp_find_header(h, "Content-Length");
    if (cl == NULL || f->chunked)
        return 0;
    errno = 0;
    n = strtoull(cl, &end, 10);
    if (errno == 0 && end != cl && *end == '\0' && cl[0] != '-' &&
        n <= f->u->max_body)
        return 0;
    if (errno == 0 && end != cl && *end == '\0' && cl[0] != '-') {
        f->too_big = 1;
        say(f->msg, sizeof(f->msg),
            "response body of %llu bytes is over the %zu byte limit", n,
            f->u->max_body);
        return -1; /* evhttp closes the connection */
    }
    return 0; /* evhttp rejects a malformed Content-Length itself */
}

static void
request_error_cb(enum evhttp_request_error error, void *arg)
{
    struct corral_fetch *f = arg;

    /* Only we cancel, and then f is detached already; evhttp calls the
     * request callback (with NULL) right after any other error. */
    if (error != EVREQ_HTTP_REQUEST_CANCEL)
        f->ev_error = (int)error;
}

/* The TLS reason for a failed connection, if it was one. */
static int
tls_failure(struct corral_fetch *f, struct conn *c)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(c->evcon);
    unsigned long e, first = 0;
    int ssl_error = 0;
    char buf[256];
    long v = c->verify_error;

    /* bufferevent_openssl keeps a stack; the last popped was the first. */
    while ((e = bufferevent_get_openssl_error(bev)) != 0) {
        if (ERR_GET_LIB(e) == 0)
            ssl_error |= e == SSL_ERROR_SSL; /* an SSL_get_error() code */
        else if (ERR_GET_LIB(e) != ERR_LIB_SYS)
            first = e;
    }
    if (v == X509_V_ERR_HOSTNAME_MISMATCH) {
        say(f->msg, sizeof(f->msg),
            "certificate verify failed: host name mismatch "
            "(certificate is not for %s)",
            f->u->host);
    } else if (v == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        say(f->msg, sizeof(f->msg),
            "certificate verify failed: IP address mismatch "
            "(certificate is not for %s)",
            f->u->host);
    } else if (v != 0) {
        say(f->msg, sizeof(f->msg), "certificate verify failed: %s",
            X509_verify_cert_error_string(v));
    } else if (first != 0) {
        say(f->msg, sizeof(f->msg), "TLS %s failed: %s",
            c->tls_done ? "connection" : "handshake",
            openssl_reason(first, buf, sizeof(buf)));
    } else if (ssl_error) {
        say(f->msg, sizeof(f->msg), "TLS %s failed: protocol error",
            c->tls_done ? "connection" : "handshake");
    } else {
        return 0;
    }
    return 1;
}

/* Fills res for a request that ended without a complete answer. c is still
 * allocated: its bufferevent holds the TLS and DNS errors. */
static void
classify(struct corral_fetch *f, struct conn *c,
         struct corral_fetch_result *res)
{
    struct bufferevent *bev;
    int dns_error;

    res->status = f->got_headers ? f->status : 0;
    res->message = f->msg;
    if (f->too_big) {
        res->error = CORRAL_FETCH_E_TOO_BIG; /* message set with the flag */
        return;
    }
    switch (f->ev_error) {
    case EVREQ_HTTP_TIMEOUT:
        res->error = CORRAL_FETCH_E_TIMEOUT;
        say(f->msg, sizeof(f->msg), "upstream stalled");
        return;
    case EVREQ_HTTP_INVALID_HEADER:
        res->error = CORRAL_FETCH_E_PROTOCOL;
        say(f->msg, sizeof(f->msg), "%s",
            f->got_headers ? "malformed response framing"
                           : "malformed response status line or headers");
        return;
    case EVREQ_HTTP_DATA_TOO_LONG:
        /* evhttp reports a bad chunk size with the same code. */
        res->error = CORRAL_FETCH_E_TOO_BIG;
        say(f->msg, sizeof(f->msg), "response body over %zu bytes%s",
            f->u->max_body, f->chunked ? " (or a malformed chunk)" : "");
        return;
    default:
        break;
    }
    if (c->ssl != NULL && tls_failure(f, c)) {
        res->error = CORRAL_FETCH_E_TLS;
        return;
    }
    res->error = CORRAL_FETCH_E_CONNECT;
    bev = evhttp_connection_get_bufferevent(c->evcon);
    dns_error = bufferevent_socket_get_dns_error(bev);
    if (dns_error != 0)
        say(f->msg, sizeof(f->msg), "cannot resolve %s: %s", f->u->host,
            evutil_gai_strerror(dns_error));
    else if (f->got_headers)
        say(f->msg, sizeof(f->msg),
            "connection closed while reading the response body");
    else if (c->dead || f->reused) /* evhttp reported it connected */
        say(f->msg, sizeof(f->msg), "connection closed before the response");
    else
        say(f->msg, sizeof(f->msg), "cannot connect to %s port %u%s",
            f->u->host, (unsigned)f->u->port,
            c->ssl != NULL ? " (or closed during the TLS handshake)" : "");
}

static void
answer(struct evhttp_request *req, struct corral_fetch_result *res)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    const char *line = evhttp_request_get_response_code_line(req);
    size_t len = evbuffer_get_length(in);

    res->status = evhttp_request_get_response_code(req);
    res->message = line != NULL ? line : "";
    res->content_type = evhttp_find_header(h, "Content-Type");
    res->retry_after_s =
        parse_retry_after(evhttp_find_header(h, "Retry-After"));
    /* evhttp frees the request (and this buffer) after our callback. */
    if (evbuffer_add(in, "", 1) == 0)
        res->body = (const char *)evbuffer_pullup(in, -1);
    if (res->body == NULL) {
        res->error = CORRAL_FETCH_E_PROTOCOL;
        res->message = "out of memory for the response body";
        return;
    }
    res->len = len;
}

/* evhttp's request callback: with the response, with NULL after an error
 * (request_error_cb ran), or with a response-less request when the
 * connection could not be made. */
static void
request_done_cb(struct evhttp_request *req, void *arg)
{
    struct corral_fetch *f = arg;
    struct corral_fetch_upstream *u = f->u;
    struct conn *c = f->conn;
    struct corral_fetch_result res;

    f->conn = NULL;
    f->req = NULL;
    c->fetch = NULL;
    memset(&res, 0, sizeof(res));
    if (req != NULL && evhttp_request_get_response_code(req) != 0 &&
        f->ev_error < 0 && !f->too_big) {
        answer(req, &res);
        if (c->dead || conn_has_leftovers(c))
            conn_free(c); /* the server asked to close, or said too much */
        schedule_dispatch(u);
        finish(f, &res);
        return;
    }
    classify(f, c, &res);
    conn_free(c);
    schedule_dispatch(u);
    /* A kept-alive connection the server closed just as we reused it: the
     * request never got an answer, so send it once more on a fresh one. */
    if (res.error == CORRAL_FETCH_E_CONNECT && f->reused && !f->retried &&
        !f->got_headers && f->ev_error == EVREQ_HTTP_EOF) {
        f->retried = 1;
        queue_push(u, f, 1);
        return;
    }
    finish(f, &res);
}

static int
add_request_headers(struct corral_fetch_upstream *u, struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    size_t i;

    if (evhttp_add_header(h, "Host", u->host_header) != 0 ||
        evhttp_add_header(h, "Accept", "application/json") != 0 ||
        evhttp_add_header(h, "User-Agent", "corral/0.1") != 0 ||
        evhttp_add_header(h, "Connection", "keep-alive") != 0)
        return -1;
    for (i = 0; u->headers[i] != NULL; i += 2) {
        /* A configured Accept or User-Agent replaces ours. */
        if (strcasecmp(u->headers[i], "Accept") == 0 ||
            strcasecmp(u->headers[i], "User-Agent") == 0)
            evhttp_remove_header(h, u->headers[i]);
        if (evhttp_add_header(h, u->headers[i], u->headers[i + 1]) != 0)
            return -1;
    }
    return 0;
}

/* Sends f on c. Everything is recorded before evhttp_make_request(), which
 * may answer f (and free it) before it returns. */
static void
start(struct corral_fetch *f, struct conn *c)
{
    struct corral_fetch_upstream *u = f->u;
    struct evhttp_request *req;

    req = evhttp_request_new(request_done_cb, f);
    if (req == NULL) {
        finish_error(f, CORRAL_FETCH_E_CONNECT, "out of memory");
        return;
    }
    evhttp_request_set_header_cb(req, request_headers_cb);
    evhttp_request_set_error_cb(req, request_error_cb);
    if (add_request_headers(u, req) != 0) {
        evhttp_request_free(req);
        finish_error(f, CORRAL_FETCH_E_CONNECT, "out of memory");
        return;
    }
    f->state = FETCH_ACTIVE;
    f->conn = c;
    f->req = req;
    f->ev_error = -1;
    f->status = 0;
    f->got_headers = f->chunked = f->too_big = 0;
    f->reused = c->requests > 0;
    c->fetch = f;
    c->requests++;
    if (evhttp_make_request(c->evcon, req, EVHTTP_REQ_GET, f->path) != 0) {
        /* No callback ran. Whether evhttp freed req depends on where it
         * failed (only on allocation failures), so it is not touched. */
        f->conn = NULL;
        f->req = NULL;
        c->fetch = NULL;
        c->dead = 1;
        conn_free(c);
        finish_error(f, CORRAL_FETCH_E_CONNECT, "cannot start the request");
    }
}

/* Runs from the loop: reaps closed idle connections and hands queued
 * fetches to idle or new connections, oldest first. */
static void
dispatch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_fetch_upstream *u = arg;
    struct conn *c, *next;
    struct corral_fetch *f;

    (void)fd;
    (void)what;
    enter(u);
    for (c = u->conns; c != NULL; c = next) {
        next = c->next;
        if (c->fetch == NULL && !conn_usable(c))
            conn_free(c);
    }
    while (!u->dying && u->queue_head != NULL) {
        for (c = u->conns; c != NULL && !conn_usable(c); c = c->next)
            ;
        if (c == NULL && u->nconns < u->max_connections)
            c = conn_new(u);
        f = u->queue_head;
        if (c == NULL && u->nconns < u->max_connections) {
            queue_remove(u, f);
            finish_error(f, CORRAL_FETCH_E_CONNECT,
                         "cannot create a connection");
            continue;
        }
        if (c == NULL)
            break;
        queue_remove(u, f);
        start(f, c);
    }
    leave(u);
}

/* ---- options ---- */

static int
is_token_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static const char *
check_header(const char *name, const char *value)
{
    static const char *const managed[] = {
        "Host",       "Connection", "Content-Length", "Transfer-Encoding",
        "Keep-Alive", "TE",         "Upgrade",        "Trailer",
    };
    const char *p;
    size_t i;

    if (name == NULL || value == NULL)
        return "a header without a value";
    if (name[0] == '\0')
        return "an empty header name";
    for (p = name; *p != '\0'; p++)
        if (!is_token_char((unsigned char)*p))
            return "a header name with a character HTTP forbids";
    for (p = value; *p != '\0'; p++)
        if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
            return "a header value with a control character";
    for (i = 0; i < sizeof(managed) / sizeof(*managed); i++)
        if (strcasecmp(name, managed[i]) == 0)
            return "a header that corral sets itself";
    return NULL;
}

static int
check_host(const char *host, size_t len)
{
    size_t i;

    if (len == 0 || len > 253)
        return -1;
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)host[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' ||
              ch == ':'))
            return -1;
    }
    return 0;
}

static int
copy_options(struct corral_fetch_upstream *u,
             const struct corral_fetch_options *o, char *err, size_t errlen)
{
    unsigned char addr[16];
    const char *host = o->host;
    size_t hostlen, n = 0, i;
    int tls, v6 = 0;
    char port[8] = "";

    if (o->scheme == NULL ||
        (strcmp(o->scheme, "http") != 0 && strcmp(o->scheme, "https") != 0)) {
        say(err, errlen, "scheme must be http or https");
        return -1;
    }
    tls = strcmp(o->scheme, "https") == 0;
    if (host == NULL) {
        say(err, errlen, "no host");
        return -1;
    }
    hostlen = strlen(host);
    if (hostlen >= 2 && host[0] == '[' && host[hostlen - 1] == ']') {
        host++;
        hostlen -= 2;
    }
    if (check_host(host, hostlen) != 0) {
        say(err, errlen, "bad host \"%s\"", o->host);
        return -1;
    }
    u->host = strndup(host, hostlen);
    if (u->host == NULL)
        goto nomem;
    if (inet_pton(AF_INET6, u->host, addr) == 1)
        u->host_is_ip = v6 = 1;
    else if (inet_pton(AF_INET, u->host, addr) == 1)
        u->host_is_ip = 1;
    else if (strchr(u->host, ':') != NULL) {
        say(err, errlen, "bad host \"%s\"", o->host);
        return -1;
    }
    if (o->port == 0) {
        say(err, errlen, "no port");
        return -1;
    }
    u->port = o->port;
    if (o->port != (tls ? 443 : 80))
        snprintf(port, sizeof(port), ":%u", (unsigned)o->port);
    if (asprintf(&u->host_header, "%s%s%s%s", v6 ? "[" : "", u->host,
                 v6 ? "]" : "", port) < 0) {
        u->host_header = NULL;
        goto nomem;
    }
    if (o->timeout_ms == 0 || o->timeout_ms > MAX_TIMEOUT_MS) {
        say(err, errlen, "timeout must be between 1 ms and 1 day");
        return -1;
    }
    u->timeout_ms = o->timeout_ms;
    if (o->max_connections == 0) {
        say(err, errlen, "max_connections must be at least 1");
        return -1;
    }
    u->max_connections = o->max_connections;
    if (o->max_body == 0) {
        say(err, errlen, "max_body must be at least 1 byte");
        return -1;
    }
    u->max_body = o->max_body;

    if (o->headers != NULL)
        for (n = 0; o->headers[n] != NULL; n += 2) {
            const char *why = check_header(o->headers[n], o->headers[n + 1]);
            if (why != NULL) {
                say(err, errlen, "header \"%s\": %s", o->headers[n], why);
                return -1;
            }
        }
    u->headers = calloc(n + 1, sizeof(*u->headers));
    if (u->headers == NULL)
        goto nomem;
    for (i = 0; i < n; i++)
        if ((u->headers[i] = strdup(o->headers[i])) == NULL)
            goto nomem;

    if (tls) {
        u->ssl_ctx = tls_ctx_new(o->ca_file, err, errlen);
        if (u->ssl_ctx == NULL)
            return -1;
    }
    return 0;

nomem:
    say(err, errlen, "out of memory");
    return -1;
}

/* ---- the upstream ---- */

static void
destroy(struct corral_fetch_upstream *u)
{
    size_t i;

    while (u->conns != NULL)
        conn_free(u->conns);
    if (u->dispatch_ev != NULL)
        event_free(u->dispatch_ev);
    if (u->session != NULL)
        SSL_SESSION_free(u->session);
    if (u->ssl_ctx != NULL)
        SSL_CTX_free(u->ssl_ctx);
    if (u->headers != NULL) {
        for (i = 0; u->headers[i] != NULL; i++)
            free(u->headers[i]);
        free(u->headers);
    }
    free(u->host_header);
    free(u->host);
    free(u);
}

struct corral_fetch_upstream *
corral_fetch_upstream_new(struct event_base *base, struct evdns_base *dns,
                          const struct corral_fetch_options *o, char *err,
                          size_t errlen)
{
    struct corral_fetch_upstream *u;

    if (base == NULL || o == NULL) {
        say(err, errlen, "no event base or no options");
        return NULL;
    }
    u = calloc(1, sizeof(*u));
    if (u == NULL) {
        say(err, errlen, "out of memory");
        return NULL;
    }
    u->base = base;
    u->dns = dns;
    if (copy_options(u, o, err, errlen) != 0) {
        destroy(u);
        return NULL;
    }
    u->dispatch_ev = event_new(base, -1, 0, dispatch_cb, u);
    if (u->dispatch_ev == NULL) {
        say(err, errlen, "out of memory");
        destroy(u);
        return NULL;
    }
    return u;
}

void
corral_fetch_upstream_free(struct corral_fetch_upstream *u)
{
    struct corral_fetch *f;
    struct conn *c;

    if (u == NULL || u->dying)
        return;
    u->dying = 1;
    enter(u);
    /* Callbacks may cancel other fetches, so look again after each. */
    for (;;) {
        f = u->queue_head;
        if (f != NULL) {
            queue_remove(u, f);
        } else {
            for (c = u->conns; c != NULL && c->fetch == NULL; c = c->next)
                ;
            if (c == NULL)
                break;
            f = c->fetch;
            abort_active(f);
        }
        finish_error(f, CORRAL_FETCH_E_CANCELLED, "upstream freed");
    }
    leave(u);
}

static int
valid_path(const char *p)
{
    size_t n = 0;

    if (p[0] != '/')
        return 0;
    for (; *p != '\0'; p++, n++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f ||
            *p == '#' || n >= MAX_PATH_LEN)
            return 0;
    return 1;
}

struct corral_fetch *
corral_fetch_get(struct corral_fetch_upstream *u, const char *path_and_query,
                 corral_fetch_cb *cb, void *arg)
{
    struct corral_fetch *f;
    struct timeval tv;

    if (u == NULL || u->dying || cb == NULL || path_and_query == NULL ||
        !valid_path(path_and_query)) {
        errno = EINVAL;
        return NULL;
    }
    f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->u = u;
    f->cb = cb;
    f->arg = arg;
    f->ev_error = -1;
    f->start_ms = now_ms();
    f->path = strdup(path_and_query);
    f->timer = evtimer_new(u->base, timer_cb, f);
    tv = ms_to_tv(u->timeout_ms);
    if (f->path == NULL || f->timer == NULL || evtimer_add(f->timer, &tv)) {
        if (f->timer != NULL)
            event_free(f->timer);
        free(f->path);
        free(f);
        errno = ENOMEM;
        return NULL;
    }
    queue_push(u, f, 0);
    schedule_dispatch(u);
    return f;
}

void
corral_fetch_cancel(struct corral_fetch *f)
{
    if (f == NULL || f->state == FETCH_DONE)
        return;
    if (f->state == FETCH_QUEUED)
        queue_remove(f->u, f);
    else
        abort_active(f);
    fetch_free(f);
}
