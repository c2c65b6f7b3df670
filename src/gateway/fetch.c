/* fetch.c — the upstream connection pool and its HTTP/1.1 GETs, on libcurl's
 * multi interface driven by our libevent loop (curl_multi_socket_action).
 *
 * libcurl does the protocol: it skips interim 1xx responses and reads the
 * final one, reuses a connection only after a completely framed response,
 * closes one that had bytes left over or became readable while idle, tries
 * every address a name resolves to, and decodes Content-Encoding. This file
 * adds what a cache needs on top: a FIFO of fetches waiting for one of
 * max_connections slots, one deadline per fetch that covers the queue wait,
 * a body cap that holds for chunked and compressed bodies too (counted
 * decoded: a small body that inflates past it is -EFBIG), only the codings
 * offered (gzip, br), 101 treated as a broken exchange, and results in the
 * shape of fetch.h.
 *
 * User callbacks run only from finish(), which runs only from our own event
 * callbacks, never from inside a libcurl call. The upstream itself is freed
 * only when none of our frames that can call back is on the stack (depth). */
#include "fetch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "corral/version.h"
#include "fmt.h"
#include "timeutil.h"
#include "xalloc.h"

#define MAX_PATH_LEN 8192    /* bytes of path and query */
#define MAX_BODY (1LL << 40) /* bytes; keeps Content-Length in range */
/* What corral asks upstreams for: the codings it decodes (libcurl) and
 * stores again itself. Any other coding in an answer is refused. */
#define UPSTREAM_CODINGS "gzip, br"
#define MAX_TIMEOUT_MS (24ULL * 3600 * 1000)
/* libcurl's own timeout stays behind our deadline so ours decides. */
#define CURL_TIMEOUT_SLACK_MS 1000

enum fetch_state {
    FETCH_QUEUED, /* in u->queue, waiting for a slot */
    FETCH_ACTIVE, /* its easy handle is in u->multi */
    FETCH_DONE,   /* its callback is running */
};

struct corral_fetch {
    struct corral_fetch_upstream *u;
    corral_fetch_cb *cb;
    void *arg;
    char *url;
    enum fetch_state state;
    TAILQ_ENTRY(corral_fetch) link; /* u->queue or u->active */
    CURL *easy;                     /* while ACTIVE */
    struct event *timer;            /* the whole-exchange deadline */
    uint64_t start_ms;              /* monotonic */
    /* The response being read. An interim 1xx resets these. */
    int status;
    char reason[64];
    char *content_type;
    char retry_after[64];
    struct corral_fetch_cache_control cache_control;
    uint64_t age_s;
    long long clen; /* Content-Length, -1 if none */
    char *body;
    size_t len, cap;
    int too_big;         /* the body passed max_body */
    int switched;        /* 101: the stream is no longer HTTP */
    int bodyless;        /* ended at its head: we stopped the transfer */
    char bad_coding[32]; /* a Content-Encoding not offered: stopped there */
    char errbuf[CURL_ERROR_SIZE];
    char msg[256];
};

TAILQ_HEAD(fetch_list, corral_fetch);

/* A socket libcurl asked us to watch, or a connection it opened. */
struct watch {
    struct corral_fetch_upstream *u;
    curl_socket_t fd;
    struct event *ev;      /* what libcurl wants; NULL when it wants nothing */
    struct event *idle_ev; /* a pooled connection at rest: any byte is bad */
    int is_conn;           /* opened through open_socket_cb */
    int resting;           /* libcurl stopped watching it: guard it */
    LIST_ENTRY(watch) link;
};

struct corral_fetch_upstream {
    struct event_base *base;
    CURLM *multi;
    CURLSH *share; /* TLS sessions and DNS answers across handles */
    CURL *model;   /* every option but the request's: duplicated */
    struct event *curl_timer;
    struct event *dispatch_ev;
    char *origin; /* "http://host:port", host in brackets if IPv6 */
    char *ca_file;
    struct curl_slist *headers;
    int tls;
    uint64_t timeout_ms;
    unsigned max_connections;
    size_t max_body;
    struct fetch_list queue;  /* waiting for a slot, oldest first */
    struct fetch_list active; /* on the wire */
    unsigned nactive;
    LIST_HEAD(, watch) watches;
    unsigned depth; /* our frames on the stack that may call back */
    int dying;      /* corral_fetch_upstream_free() was called */
};

const char *
corral_fetch_error_name(int error)
{
    switch (error) {
    case 0:
        return "none";
    case -ECONNREFUSED:
        return "connect";
    case -ETIMEDOUT:
        return "timeout";
    case -EKEYREJECTED:
        return "tls";
    case -EFBIG:
        return "too_big";
    case -EPROTO:
        return "protocol";
    case -ECANCELED:
        return "cancelled";
    default:
        return "unknown";
    }
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

/* ---- libcurl's sockets and timer on our loop ---- */

static void check_done(struct corral_fetch_upstream *u);
static void guard_resting(struct corral_fetch_upstream *u);

static void
socket_action(struct corral_fetch_upstream *u, curl_socket_t fd, int mask)
{
    int running;

    enter(u);
    curl_multi_socket_action(u->multi, fd, mask, &running);
    guard_resting(u);
    check_done(u);
    leave(u);
}

static void
watch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct watch *w = arg;

    socket_action(w->u, fd,
                  ((what & EV_READ) ? CURL_CSELECT_IN : 0) |
                      ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0));
}

/* Drops what a pooled connection has waiting and shuts it down: libcurl
 * then finds it dead when it looks for one to reuse, closes it and opens a
 * fresh one. */
static void
retire(curl_socket_t fd)
{
    char buf[4096];
    unsigned i;

    for (i = 0; i < 64 && recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0; i++)
        ;
    shutdown(fd, SHUT_RDWR);
}

/* A connection in libcurl's pool, between two requests, became readable:
 * late bytes, an answer to a request never sent, or the server closing.
 * Nothing it says now may be read as the next request's answer.
 * (libcurl 7.88 reuses a connection with pending input.) */
static void
idle_cb(evutil_socket_t fd, short what, void *arg)
{
    struct watch *w = arg;

    (void)what;
    retire(fd);
    event_free(w->idle_ev);
    w->idle_ev = NULL;
}

/* Before libcurl picks a pooled connection for new requests, retire every
 * connection it is not watching (so no transfer is using it) that has
 * bytes waiting or was closed. idle_cb does this as soon as it can, but
 * only for the connections libcurl said it stopped watching; this does not
 * depend on that. It costs one recv() per pooled connection per upstream
 * call. */
static void
guard_idle(struct corral_fetch_upstream *u)
{
    struct watch *w;
    char c;

    LIST_FOREACH(w, &u->watches, link)
    if (w->is_conn && w->ev == NULL &&
        recv(w->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) >= 0)
        retire(w->fd);
}

/* Watches the connections libcurl stopped watching (and kept open): any
 * byte on one while it rests retires it. Called after every libcurl call
 * that can stop watching a socket, when no close is pending inside it. */
static void
guard_resting(struct corral_fetch_upstream *u)
{
    struct watch *w;

    LIST_FOREACH(w, &u->watches, link)
    {
        if (!w->resting || w->idle_ev != NULL)
            continue;
        w->resting = 0;
        w->idle_ev = event_new(u->base, w->fd, EV_READ, idle_cb, w);
        if (w->idle_ev == NULL || event_add(w->idle_ev, NULL) != 0) {
            if (w->idle_ev != NULL)
                event_free(w->idle_ev);
            w->idle_ev = NULL;
            retire(w->fd); /* cannot guard it: retire it now */
        }
    }
}

static struct watch *
watch_find(struct corral_fetch_upstream *u, curl_socket_t fd)
{
    struct watch *w;

    LIST_FOREACH(w, &u->watches, link)
    if (w->fd == fd)
        return w;
    return NULL;
}

static struct watch *
watch_new(struct corral_fetch_upstream *u, curl_socket_t fd)
{
    struct watch *w = xcalloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    w->u = u;
    w->fd = fd;
    LIST_INSERT_HEAD(&u->watches, w, link);
    return w;
}

static void
watch_free(struct watch *w)
{
    LIST_REMOVE(w, link);
    if (w->ev != NULL)
        event_free(w->ev);
    if (w->idle_ev != NULL)
        event_free(w->idle_ev);
    free(w);
}

static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *sockp)
{
    struct corral_fetch_upstream *u = userp;
    struct watch *w = sockp != NULL ? sockp : watch_find(u, fd);
    short kind = EV_PERSIST;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (w == NULL)
            return 0;
        event_free(w->ev);
        w->ev = NULL;
        if (!w->is_conn) {
            watch_free(w);
            return 0;
        }
        /* libcurl is done with the connection for now, or about to close
         * it: guard_resting() guards it once libcurl has returned, if it is
         * still open then. */
        w->resting = 1;
        return 0;
    }
    if (w == NULL && (w = watch_new(u, fd)) == NULL)
        return -1;
    curl_multi_assign(u->multi, fd, w);
    w->resting = 0;
    if (w->idle_ev != NULL) {
        event_free(w->idle_ev);
        w->idle_ev = NULL;
    }
    if (w->ev != NULL)
        event_free(w->ev);
    if (what & CURL_POLL_IN)
        kind |= EV_READ;
    if (what & CURL_POLL_OUT)
        kind |= EV_WRITE;
    w->ev = event_new(u->base, fd, kind, watch_cb, w);
    if (w->ev == NULL || event_add(w->ev, NULL) != 0)
        return -1;
    return 0;
}

/* Connection sockets: we know them from birth to close, so that a pooled
 * one can be guarded and its guard is gone before its fd number is reused. */
static curl_socket_t
open_socket_cb(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct corral_fetch_upstream *u = arg;
    curl_socket_t fd;
    struct watch *w;

    (void)purpose;
    fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    if ((w = watch_find(u, fd)) != NULL) /* a stale entry: cannot happen */
        watch_free(w);
    if ((w = watch_new(u, fd)) == NULL) {
        close(fd);
        return CURL_SOCKET_BAD;
    }
    w->is_conn = 1;
    return fd;
}

static int
close_socket_cb(void *arg, curl_socket_t fd)
{
    struct corral_fetch_upstream *u = arg;
    struct watch *w = watch_find(u, fd);

    if (w != NULL)
        watch_free(w);
    return close(fd);
}

static void
curl_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    socket_action(arg, CURL_SOCKET_TIMEOUT, 0);
}

static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct corral_fetch_upstream *u = userp;
    struct timeval tv;

    (void)multi;
    if (timeout_ms < 0)
        return event_del(u->curl_timer);
    tv = corral_ms_to_tv((uint64_t)timeout_ms);
    return event_add(u->curl_timer, &tv);
}

/* ---- what an answer says about caching it ---- */

/* delta-seconds (RFC 9111 1.2.2): digits; past 2^31 it is 2^31; anything
 * else is 0, so a garbled lifetime never makes a value live longer. */
static int64_t
delta_seconds(const char *p, size_t n)
{
    const int64_t max = 2147483648LL;
    int64_t v = 0;

    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        if (v < max)
            v = v * 10 + (p[i] - '0');
    }
    return v < max ? v : max;
}

static void
keep_shorter(int64_t *have, int64_t v)
{
    if (*have < 0 || v < *have)
        *have = v;
}

void
corral_fetch_cache_control_parse(struct corral_fetch_cache_control *cc,
                                 const char *v, size_t len)
{
    size_t i = 0, nlen, alen;
    const char *name, *arg;

    while (fmt_directive_next(v, len, &i, &name, &nlen, &arg, &alen)) {
        if (nlen == 8 && strncasecmp(name, "no-store", 8) == 0)
            cc->flags |= CORRAL_FETCH_CC_NO_STORE;
        else if (nlen == 7 && strncasecmp(name, "private", 7) == 0)
            cc->flags |= CORRAL_FETCH_CC_PRIVATE;
        else if (nlen == 8 && strncasecmp(name, "no-cache", 8) == 0)
            cc->flags |= CORRAL_FETCH_CC_NO_CACHE;
        else if (nlen == 7 && strncasecmp(name, "max-age", 7) == 0)
            keep_shorter(&cc->max_age_s, delta_seconds(arg, alen));
        else if (nlen == 8 && strncasecmp(name, "s-maxage", 8) == 0)
            keep_shorter(&cc->s_maxage_s, delta_seconds(arg, alen));
    }
}

/* ---- one response, as libcurl hands it over ---- */

static void
response_reset(struct corral_fetch *f)
{
    f->status = 0;
    f->reason[0] = '\0';
    free(f->content_type);
    f->content_type = NULL;
    f->retry_after[0] = '\0';
    f->cache_control = CORRAL_FETCH_CACHE_CONTROL_NONE;
    f->age_s = 0;
    f->clen = -1;
    f->len = 0;
    f->too_big = 0;
    f->bodyless = 0;
    f->bad_coding[0] = '\0';
}

/* "HTTP/1.1 200 OK": the status and reason of a new response. */
static int
status_line(struct corral_fetch *f, const char *p, size_t n)
{
    size_t i = 0, r;

    while (i < n && p[i] != ' ')
        i++;
    if (n - i < 4 || p[i + 1] < '1' || p[i + 1] > '9' || p[i + 2] < '0' ||
        p[i + 2] > '9' || p[i + 3] < '0' || p[i + 3] > '9')
        return -1;
    response_reset(f);
    f->status = (p[i + 1] - '0') * 100 + (p[i + 2] - '0') * 10 + p[i + 3] - '0';
    for (i += 4; i < n && p[i] == ' '; i++)
        ;
    for (r = 0;
         i < n && p[i] != '\r' && p[i] != '\n' && r + 1 < sizeof(f->reason);
         i++)
        f->reason[r++] = p[i];
    f->reason[r] = '\0';
    return 0;
}

/* The value of field `name` in header line p, trimmed, or NULL. */
static const char *
field_value(const char *p, size_t n, const char *name, size_t *vlen)
{
    size_t k = strlen(name), e;

    if (n <= k || strncasecmp(p, name, k) != 0 || p[k] != ':')
        return NULL;
    for (p += k + 1, n -= k + 1; n > 0 && (*p == ' ' || *p == '\t'); p++, n--)
        ;
    for (e = n; e > 0 && (p[e - 1] == '\r' || p[e - 1] == '\n' ||
                          p[e - 1] == ' ' || p[e - 1] == '\t');
         e--)
        ;
    *vlen = e;
    return p;
}

/* Is every coding of a Content-Encoding value one corral offered
 * (ACCEPT_ENCODING)? libcurl decodes every coding it knows, offered or
 * not; the first other one is copied to bad (cap bytes) and refused. */
static bool
codings_offered(const char *v, size_t n, char *bad, size_t cap)
{
    static const char *const offered[] = {"gzip", "x-gzip", "br", "identity"};
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t k = i;
        while (k < n && v[k] != ',' && v[k] != ' ' && v[k] != '\t')
            k++;
        if (k == i)
            break;
        bool ok = false;
        for (size_t j = 0; j < sizeof(offered) / sizeof(*offered); j++)
            if (strlen(offered[j]) == k - i &&
                strncasecmp(v + i, offered[j], k - i) == 0)
                ok = true;
        if (!ok) {
            say(bad, cap, "%.*s", (int)(k - i), v + i);
            return false;
        }
        i = k;
    }
    return true;
}

static size_t
header_cb(char *p, size_t size, size_t nitems, void *arg)
{
    struct corral_fetch *f = arg;
    size_t n = size * nitems, vlen;
    const char *v;

    /* The end of a final response's head. When its framing says there is
     * no body (204, 304, Content-Length: 0), libcurl stops reading there
     * and can keep whatever came in the same read for the next request on
     * the connection: a hostile upstream's second answer, read as another
     * key's. Stop the transfer here instead, which closes the connection;
     * done() reports the bodyless answer as the success it is. */
    if ((n == 2 && p[0] == '\r' && p[1] == '\n') || (n == 1 && p[0] == '\n')) {
        if (f->status >= 200 &&
            (f->status == 204 || f->status == 304 || f->clen == 0)) {
            f->bodyless = 1;
            return 0;
        }
        return n;
    }
    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        if (status_line(f, p, n) != 0)
            return 0;
        if (f->status == 101) {
            f->switched = 1;
            return 0; /* aborts the transfer; the connection is closed */
        }
    } else if ((v = field_value(p, n, "Content-Type", &vlen)) != NULL) {
        free(f->content_type);
        f->content_type = xstrndup(v, vlen);
    } else if ((v = field_value(p, n, "Content-Length", &vlen)) != NULL) {
        /* libcurl checks the framing; this is only to refuse early. */
        f->clen = 0;
        for (; vlen > 0 && *v >= '0' && *v <= '9'; v++, vlen--)
            if ((f->clen = f->clen * 10 + (*v - '0')) >
                (long long)(f->u->max_body < MAX_BODY ? f->u->max_body
                                                      : MAX_BODY)) {
                f->too_big = 1;
                return 0;
            }
    } else if ((v = field_value(p, n, "Content-Encoding", &vlen)) != NULL) {
        if (!codings_offered(v, vlen, f->bad_coding, sizeof(f->bad_coding)))
            return 0;
    } else if ((v = field_value(p, n, "Retry-After", &vlen)) != NULL) {
        if (vlen >= sizeof(f->retry_after))
            vlen = 0;
        memcpy(f->retry_after, v, vlen);
        f->retry_after[vlen] = '\0';
    } else if ((v = field_value(p, n, "Cache-Control", &vlen)) != NULL) {
        corral_fetch_cache_control_parse(&f->cache_control, v, vlen);
    } else if ((v = field_value(p, n, "Age", &vlen)) != NULL) {
        /* An invalid Age is ignored (RFC 9111 5.1). */
        int64_t age = delta_seconds(v, vlen);
        if ((uint64_t)age > f->age_s)
            f->age_s = (uint64_t)age;
    }
    return n;
}

static size_t
write_cb(char *p, size_t size, size_t nitems, void *arg)
{
    struct corral_fetch *f = arg;
    size_t n = size * nitems;

    if (n > f->u->max_body - f->len) {
        f->too_big = 1;
        return 0;
    }
    if (f->len + n + 1 > f->cap) {
        size_t cap = f->cap == 0 ? 4096 : f->cap;
        char *b;
        while (cap < f->len + n + 1)
            cap *= 2;
        if (cap > f->u->max_body + 1)
            cap = f->u->max_body + 1;
        b = xrealloc(f->body, cap);
        f->body = b;
        f->cap = cap;
    }
    memcpy(f->body + f->len, p, n);
    f->len += n;
    return n;
}

/* ---- fetches ---- */

static void
fetch_free(struct corral_fetch *f)
{
    event_free(f->timer);
    free(f->content_type);
    free(f->body);
    free(f->url);
    free(f);
}

/* Takes f's handle out of the multi and frees it. A handle removed
 * mid-transfer has its connection closed by libcurl. Handles are never
 * reused: libcurl 7.88 keeps a pointer to the last stored header in the
 * handle, and an obs-folded line in the next response on the same handle
 * is then written through it after it was freed (found by fuzz-upstream). */
static void
detach(struct corral_fetch *f)
{
    struct corral_fetch_upstream *u = f->u;
    CURL *easy = f->easy;

    TAILQ_REMOVE(&u->active, f, link);
    u->nactive--;
    f->easy = NULL;
    curl_multi_remove_handle(u->multi, easy);
    guard_resting(u);
    curl_easy_cleanup(easy);
    schedule_dispatch(u);
}

/* Answers f and frees it. May free the upstream: callers return right
 * after. */
static void
finish(struct corral_fetch *f, struct corral_fetch_result *res)
{
    struct corral_fetch_upstream *u = f->u;

    if (res->message == NULL)
        res->message = "";
    if (res->error != 0)
        res->cache_control = CORRAL_FETCH_CACHE_CONTROL_NONE;
    res->elapsed_ms = corral_now_ms() - f->start_ms;
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
    res.status = f->status;
    finish(f, &res);
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_fetch *f = arg;
    struct corral_fetch_upstream *u = f->u;
    int queued = f->state == FETCH_QUEUED;

    (void)fd;
    (void)what;
    if (queued)
        TAILQ_REMOVE(&u->queue, f, link);
    else
        detach(f);
    say(f->msg, sizeof(f->msg), "no answer within %llu ms%s",
        (unsigned long long)u->timeout_ms,
        queued ? " (all connections busy)" : "");
    finish_error(f, -ETIMEDOUT, f->msg);
}

static uint64_t
parse_retry_after(const char *v)
{
    uint64_t n = 0;
    struct tm tm;
    time_t t, now;
    char *end;

    if (*v >= '0' && *v <= '9') {
        for (; *v >= '0' && *v <= '9'; v++) {
            if (n > (UINT64_MAX - 9) / 10)
                return 0;
            n = n * 10 + (uint64_t)(*v - '0');
        }
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

/* Sorts a failed transfer into one of fetch.h's errors, with a message. */
static int
classify(struct corral_fetch *f, CURLcode rc)
{
    const char *why = f->errbuf[0] != '\0' ? f->errbuf : curl_easy_strerror(rc);

    if (f->too_big || rc == CURLE_FILESIZE_EXCEEDED) {
        if (f->clen >= 0)
            say(f->msg, sizeof(f->msg),
                "body of %lld bytes (Content-Length) is over %zu", f->clen,
                f->u->max_body);
        else
            say(f->msg, sizeof(f->msg), "body is over %zu bytes",
                f->u->max_body);
        return -EFBIG;
    }
    if (f->switched) {
        say(f->msg, sizeof(f->msg), "malformed response: 101 to a GET");
        return -EPROTO;
    }
    if (f->bad_coding[0] != '\0') {
        say(f->msg, sizeof(f->msg),
            "malformed response: Content-Encoding %s, which was not offered",
            f->bad_coding);
        return -EPROTO;
    }
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
        say(f->msg, sizeof(f->msg), "cannot connect: %s", why);
        return -ECONNREFUSED;
    case CURLE_GOT_NOTHING:
        say(f->msg, sizeof(f->msg), "closed before the response");
        return -ECONNREFUSED;
    case CURLE_PARTIAL_FILE:
        say(f->msg, sizeof(f->msg), "closed mid-body: %s", why);
        return -ECONNREFUSED;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
        say(f->msg, sizeof(f->msg), "connection failed: %s", why);
        return -ECONNREFUSED;
    case CURLE_OPERATION_TIMEDOUT:
        say(f->msg, sizeof(f->msg), "no answer within %llu ms",
            (unsigned long long)f->u->timeout_ms);
        return -ETIMEDOUT;
    case CURLE_PEER_FAILED_VERIFICATION:
        if (strncmp(why, "SSL certificate problem: ", 25) == 0)
            why += 25;
        say(f->msg, sizeof(f->msg), "certificate verify failed: %s", why);
        return -EKEYREJECTED;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
        say(f->msg, sizeof(f->msg), "TLS handshake failed: %s", why);
        return -EKEYREJECTED;
    case CURLE_OUT_OF_MEMORY:
        say(f->msg, sizeof(f->msg), "out of memory");
        return -ECONNREFUSED;
    default:
        say(f->msg, sizeof(f->msg), "malformed response: %s", why);
        return -EPROTO;
    }
}

static void
done(struct corral_fetch *f, CURLcode rc)
{
    struct corral_fetch_result res;

    memset(&res, 0, sizeof(res));
    res.status = f->status;
    if (f->bodyless && rc == CURLE_WRITE_ERROR) {
        rc = CURLE_OK;
        f->len = 0;
    }
    if (rc == CURLE_OK && f->status >= 200 && !f->switched) {
        if (f->body == NULL)
            f->body = xmalloc(1);
        f->body[f->len] = '\0';
        res.message = f->reason;
        res.content_type = f->content_type;
        res.body = f->body;
        res.len = f->len;
        res.retry_after_s = parse_retry_after(f->retry_after);
        res.cache_control = f->cache_control;
        res.age_s = f->age_s;
    } else {
        if (rc == CURLE_OK) /* no final response: cannot happen, but */
            rc = CURLE_WEIRD_SERVER_REPLY;
        res.error = classify(f, rc);
        res.message = f->msg;
    }
    detach(f);
    finish(f, &res);
}

/* Answers every transfer libcurl has finished. Stops once the upstream is
 * being freed: corral_fetch_upstream_free() answered the rest. */
static void
check_done(struct corral_fetch_upstream *u)
{
    struct corral_fetch *f;
    CURLMsg *m;
    int left;

    while (!u->dying && (m = curl_multi_info_read(u->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        f = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&f);
        if (f != NULL && f->easy == m->easy_handle)
            done(f, m->data.result);
    }
}

static CURL *
easy_new(struct corral_fetch_upstream *u)
{
    CURL *e = curl_easy_init();
    long timeout = (long)(u->timeout_ms + CURL_TIMEOUT_SLACK_MS);

    if (e == NULL)
        return NULL;
    if (curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") ||
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1) ||
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, u->headers) ||
        curl_easy_setopt(e, CURLOPT_USERAGENT,
                         "corral/" CORRAL_VERSION_STRING) ||
        curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, UPSTREAM_CODINGS) ||
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout) ||
        curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE,
                         (curl_off_t)u->max_body) ||
        curl_easy_setopt(e, CURLOPT_SHARE, u->share) ||
        curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket_cb) ||
        curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, u) ||
        curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket_cb) ||
        curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, u) ||
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb) ||
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb) ||
        (u->ca_file != NULL &&
         curl_easy_setopt(e, CURLOPT_CAINFO, u->ca_file))) {
        curl_easy_cleanup(e);
        return NULL;
    }
    return e;
}

/* Puts f on the wire. Returns -1 (f untouched) when libcurl cannot take it. */
static int
start(struct corral_fetch *f)
{
    struct corral_fetch_upstream *u = f->u;
    CURL *e = curl_easy_duphandle(u->model);

    if (e == NULL)
        return -1;
    f->errbuf[0] = '\0';
    /* A duplicate does not inherit the share: set it again. */
    if (curl_easy_setopt(e, CURLOPT_SHARE, u->share) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_URL, f->url) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PRIVATE, f) ||
        curl_easy_setopt(e, CURLOPT_HEADERDATA, f) ||
        curl_easy_setopt(e, CURLOPT_WRITEDATA, f) ||
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, f->errbuf) ||
        curl_multi_add_handle(u->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        return -1;
    }
    f->easy = e;
    f->state = FETCH_ACTIVE;
    TAILQ_INSERT_TAIL(&u->active, f, link);
    u->nactive++;
    return 0;
}

static void
dispatch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_fetch_upstream *u = arg;
    struct corral_fetch *f;

    (void)fd;
    (void)what;
    enter(u);
    if (!TAILQ_EMPTY(&u->queue))
        guard_idle(u);
    while (!u->dying && u->nactive < u->max_connections &&
           (f = TAILQ_FIRST(&u->queue)) != NULL) {
        TAILQ_REMOVE(&u->queue, f, link);
        if (start(f) != 0)
            finish_error(f, -ECONNREFUSED, "out of memory");
    }
    leave(u);
}

/* ---- options ---- */

const char *
corral_fetch_check_header(const char *name, const char *value)
{
    static const char *const managed[] = {
        "Host",
        "Connection",
        "Content-Length",
        "Transfer-Encoding",
        "Keep-Alive",
        "TE",
        "Upgrade",
        "Trailer",
        "Accept-Encoding",
        "Proxy-Connection",
    };
    const char *p;
    size_t i;

    if (name == NULL || value == NULL)
        return "a header without a value";
    if (name[0] == '\0')
        return "an empty header name";
    for (p = name; *p != '\0'; p++)
        if (!fmt_is_tchar((unsigned char)*p))
            return "a header name with a character HTTP forbids";
    for (p = value; *p != '\0'; p++)
        if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
            return "a header value with a control character";
    for (i = 0; i < sizeof(managed) / sizeof(*managed); i++)
        if (strcasecmp(name, managed[i]) == 0)
            return "a header that corral sets itself";
    return NULL;
}

const char *
corral_fetch_check_host(const char *host, size_t len)
{
    unsigned char addr[16];
    char buf[256];
    size_t i, label = 0;

    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        host++;
        len -= 2;
        if (len >= sizeof(buf))
            return "not an IPv6 address";
        memcpy(buf, host, len);
        buf[len] = '\0';
        return inet_pton(AF_INET6, buf, addr) == 1 ? NULL
                                                   : "not an IPv6 address";
    }
    if (len == 0)
        return "empty";
    if (len > 253)
        return "longer than 253 characters";
    memcpy(buf, host, len);
    buf[len] = '\0';
    if (memchr(buf, ':', len) != NULL)
        return inet_pton(AF_INET6, buf, addr) == 1
                   ? NULL
                   : "a ':' outside an IPv6 address in brackets";
    /* A DNS name (RFC 1123; '_' is tolerated, as resolvers do) or an IPv4
     * literal, which has the same shape. */
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)buf[i];
        if (ch == '.') {
            if (label == 0)
                return "an empty label";
            label = 0;
            continue;
        }
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
            return "a character a host name cannot have";
        if ((ch == '-' && label == 0) || ++label > 63)
            return label > 63 ? "a label longer than 63 characters"
                              : "a label that starts with '-'";
    }
    return NULL; /* a trailing '.' (an absolute name) is fine */
}

int
corral_fetch_check_ca_file(const char *path, char *why, size_t len)
{
    BIO *bio = BIO_new_file(path, "r");
    X509 *x;
    int n = 0;

    if (bio == NULL) {
        int e = errno != 0 ? errno : EIO;
        say(why, len, "%s", strerror(e));
        ERR_clear_error();
        return -e;
    }
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        X509_free(x);
        n++;
    }
    BIO_free(bio);
    ERR_clear_error(); /* the end of the file reads as an error */
    if (n == 0) {
        say(why, len, "no PEM certificate in it");
        return -EINVAL;
    }
    return 0;
}

/* The headers every request to u carries: o's, checked, and Accept:
 * application/json unless o gives an Accept. Setup: out of memory is an
 * error (xalloc.h). */
static int
copy_headers(struct corral_fetch_upstream *u,
             const struct corral_fetch_options *o, char *err, size_t errlen)
{
    const char *why;
    size_t n;

    /* Every request says what it takes; a configured Accept replaces it. */
    for (n = 0; o->headers != NULL && o->headers[n] != NULL; n += 2)
        if (strcasecmp(o->headers[n], "Accept") == 0)
            break;
    if ((o->headers == NULL || o->headers[n] == NULL) &&
        (u->headers = curl_slist_append(NULL, "Accept: application/json")) ==
            NULL)
        goto nomem;
    for (n = 0; o->headers != NULL && o->headers[n] != NULL; n += 2) {
        struct curl_slist *l;
        char *line;
        why = corral_fetch_check_header(o->headers[n], o->headers[n + 1]);
        if (why != NULL) {
            say(err, errlen, "header \"%s\": %s", o->headers[n], why);
            return -1;
        }
        /* "Name;" is libcurl's way to send a header with an empty value. */
        if (asprintf(&line, o->headers[n + 1][0] != '\0' ? "%s: %s" : "%s;",
                     o->headers[n], o->headers[n + 1]) < 0)
            goto nomem;
        l = curl_slist_append(u->headers, line);
        free(line);
        if (l == NULL)
            goto nomem;
        u->headers = l;
    }
    return 0;

nomem:
    say(err, errlen, "out of memory");
    return -1;
}

static int
copy_options(struct corral_fetch_upstream *u,
             const struct corral_fetch_options *o, char *err, size_t errlen)
{
    unsigned char addr[16];
    const char *why;
    int v6;

    if (o->scheme == NULL ||
        (strcmp(o->scheme, "http") != 0 && strcmp(o->scheme, "https") != 0)) {
        say(err, errlen, "scheme must be http or https");
        return -1;
    }
    u->tls = strcmp(o->scheme, "https") == 0;
    if (o->host == NULL) {
        say(err, errlen, "no host");
        return -1;
    }
    if ((why = corral_fetch_check_host(o->host, strlen(o->host))) != NULL) {
        say(err, errlen, "bad host \"%s\": %s", o->host, why);
        return -1;
    }
    if (o->port == 0) {
        say(err, errlen, "no port");
        return -1;
    }
    v6 = o->host[0] != '[' && inet_pton(AF_INET6, o->host, addr) == 1;
    if (asprintf(&u->origin, "%s://%s%s%s:%u", o->scheme, v6 ? "[" : "",
                 o->host, v6 ? "]" : "", (unsigned)o->port) < 0) {
        u->origin = NULL;
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

    if (copy_headers(u, o, err, errlen) < 0)
        return -1;

    if (u->tls && o->ca_file != NULL) {
        char reason[200];
        if (corral_fetch_check_ca_file(o->ca_file, reason, sizeof(reason))) {
            say(err, errlen, "ca_file %s: %s", o->ca_file, reason);
            return -1;
        }
        if ((u->ca_file = strdup(o->ca_file)) == NULL)
            goto nomem;
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
    struct watch *w;

    if (u->multi != NULL)
        curl_multi_cleanup(u->multi);
    if (u->model != NULL)
        curl_easy_cleanup(u->model);
    while ((w = LIST_FIRST(&u->watches)) != NULL)
        watch_free(w);
    if (u->share != NULL)
        curl_share_cleanup(u->share);
    if (u->curl_timer != NULL)
        event_free(u->curl_timer);
    if (u->dispatch_ev != NULL)
        event_free(u->dispatch_ev);
    curl_slist_free_all(u->headers);
    free(u->ca_file);
    free(u->origin);
    free(u);
}

struct corral_fetch_upstream *
corral_fetch_upstream_new(struct event_base *base,
                          const struct corral_fetch_options *o, char *err,
                          size_t errlen)
{
    static int curl_ready;
    struct corral_fetch_upstream *u;

    if (base == NULL || o == NULL) {
        say(err, errlen, "no event base or no options");
        return NULL;
    }
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            say(err, errlen, "libcurl failed to initialise");
            return NULL;
        }
        curl_ready = 1;
    }
    u = calloc(1, sizeof(*u));
    if (u == NULL) {
        say(err, errlen, "out of memory");
        return NULL;
    }
    u->base = base;
    TAILQ_INIT(&u->queue);
    TAILQ_INIT(&u->active);
    LIST_INIT(&u->watches);
    if (copy_options(u, o, err, errlen) != 0) {
        destroy(u);
        return NULL;
    }
    u->multi = curl_multi_init();
    u->share = curl_share_init();
    u->curl_timer = evtimer_new(base, curl_timer_cb, u);
    u->dispatch_ev = event_new(base, -1, 0, dispatch_cb, u);
    if (u->multi == NULL || u->share == NULL || u->curl_timer == NULL ||
        u->dispatch_ev == NULL ||
        curl_share_setopt(u->share, CURLSHOPT_SHARE,
                          CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK ||
        curl_share_setopt(u->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) ||
        curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, socket_cb) ||
        curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u) ||
        curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, timer_cb) ||
        curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u) ||
        curl_multi_setopt(u->multi, CURLMOPT_PIPELINING, CURLPIPE_NOTHING) ||
        curl_multi_setopt(u->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                          (long)u->max_connections) ||
        curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS,
                          (long)u->max_connections) ||
        (u->model = easy_new(u)) == NULL) {
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

    if (u == NULL || u->dying)
        return;
    u->dying = 1;
    enter(u);
    /* Callbacks may cancel other fetches, so look again after each. */
    for (;;) {
        if ((f = TAILQ_FIRST(&u->queue)) != NULL)
            TAILQ_REMOVE(&u->queue, f, link);
        else if ((f = TAILQ_FIRST(&u->active)) != NULL)
            detach(f);
        else
            break;
        finish_error(f, -ECANCELED, "upstream freed");
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
    return corral_fetch_get_within(u, path_and_query, 0, cb, arg);
}

struct corral_fetch *
corral_fetch_get_within(struct corral_fetch_upstream *u,
                        const char *path_and_query, uint64_t timeout_ms,
                        corral_fetch_cb *cb, void *arg)
{
    struct corral_fetch *f;
    struct timeval tv;

    if (u == NULL || u->dying || cb == NULL || path_and_query == NULL ||
        !valid_path(path_and_query)) {
        errno = EINVAL;
        return NULL;
    }
    f = xcalloc(1, sizeof(*f));
    f->u = u;
    f->cb = cb;
    f->arg = arg;
    f->start_ms = corral_now_ms();
    if (asprintf(&f->url, "%s%s", u->origin, path_and_query) < 0)
        f->url = NULL;
    f->timer = evtimer_new(u->base, deadline_cb, f);
    tv = corral_ms_to_tv(timeout_ms > 0 && timeout_ms < u->timeout_ms
                             ? timeout_ms
                             : u->timeout_ms);
    if (f->url == NULL || f->timer == NULL || evtimer_add(f->timer, &tv)) {
        if (f->timer != NULL)
            event_free(f->timer);
        free(f->url);
        free(f);
        errno = ENOMEM;
        return NULL;
    }
    f->state = FETCH_QUEUED;
    TAILQ_INSERT_TAIL(&u->queue, f, link);
    schedule_dispatch(u);
    return f;
}

void
corral_fetch_cancel(struct corral_fetch *f)
{
    if (f == NULL || f->state == FETCH_DONE)
        return;
    if (f->state == FETCH_QUEUED)
        TAILQ_REMOVE(&f->u->queue, f, link);
    else
        detach(f);
    fetch_free(f);
}
