/* server.c — the client-facing HTTP/1.1 front end.
 * Readiness events on non-blocking sockets, http_parser over a pooled
 * per-connection read buffer, up to PIPELINE_MAX requests in flight per
 * connection, answered strictly in order with one sendmsg of [head, copied
 * part, body] each. Once a connection is warm nothing is allocated per
 * request; bodies are never copied. A connection from the TLS listener
 * does the same through tls.h (SSL_read, gathered SSL_write) once its
 * handshake is done, or goes to h2.c when ALPN chose "h2". */

#include "server.h"

#include "fmt.h"
#include "h2.h"
#include "listener.h"
#include "target.h"
#include "timeutil.h"
#include "tls.h"
#include "xalloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <http_parser.h>

#include "corral/value.h"

#define PIPELINE_MAX 16    /* requests in flight per connection */
#define RBUF_SLACK 4096    /* bytes read ahead beyond max_header_bytes */
#define RBUF_POOL_MAX 256  /* idle read buffers kept for reuse */
#define OWN_MIN 128        /* bytes, first request-string copy area */
#define OBUF_MIN 1024      /* bytes, first answer scratch */
#define LINGER_MAX_MS 5000 /* discarding input after our last answer */
#define LINGER_MAX_BYTES (1 << 20)
#define DATE_LEN 37     /* "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n" */
#define CONN_HDR_MAX 24 /* "Connection: keep-alive\r\n" */

enum slot_state {
    SLOT_FREE = 0, /* unused */
    SLOT_WAITING,  /* handed to the handler, not answered yet */
    SLOT_ANSWERED, /* answer queued, not completely written */
};

enum deadline_kind {
    DL_NONE = 0, /* waiting on the handler: the client owes nothing */
    DL_IDLE,     /* between requests */
    DL_REQUEST,  /* a request is arriving: counted from its first byte */
    DL_WRITE,    /* our answer waits for the client to read */
    DL_LINGER,   /* closing: discarding what the client still sends */
};

enum header_state { HS_NONE, HS_FIELD, HS_VALUE };

/* The parts of the head being parsed, kept as offsets into the read buffer,
 * which moves them when it is compacted: rbuf_compact() rebases every span
 * in one loop, so a kind added here cannot be forgotten there. */
enum span_kind {
    SPAN_URL,   /* the request target */
    SPAN_FIELD, /* the field name being read */
    SPAN_VALUE, /* its value */
    SPAN_INM,   /* If-None-Match's value */
    SPAN_AUTH,  /* Authorization's value */
    SPAN_COUNT,
};

struct span {
    size_t off, len;
};

/* One piece of an answer: borrowed bytes, or bytes in the obuf (ptr NULL),
 * kept as an offset because the obuf may move when it grows. */
struct part {
    const char *ptr;
    size_t off;
    size_t len;
};

struct conn;

struct slot {
    struct corral_request req; /* first: a request pointer is a slot */
    struct conn *conn;
    enum slot_state state;
    bool close;         /* the connection closes after this answer */
    bool keep_alive_10; /* HTTP/1.0 client that asked for keep-alive */
    corral_request_close_cb *on_close;
    void *on_close_arg;
    struct part part[3]; /* head, copied part, body */
    struct corral_value *hold;
    char *own; /* copies of path, query and If-None-Match */
    size_t own_cap;
    size_t qbytes; /* of the answer, counted in conn and server queued */
};

struct conn {
    struct corral_server *server;
    int fd; /* -1 once closed (a zombie waiting on answers) */
    struct event *rev, *wev;
    struct event *kev;     /* deferred work: answers, drain, late on_close */
    bool reading, writing; /* rev / wev added */
    bool in_run;           /* inside conn_run(): answers wait for its flush */
    bool stop;             /* parse nothing more; close once all answered */
    bool lingering;
    bool broken;      /* out of memory: close at the next chance */
    bool fresh;       /* no byte looked at yet: HTTP/2's preface may come */
    bool handshaking; /* TLS: its handshake not done yet */
    SSL *ssl;         /* NULL: cleartext */
    bool reaping;     /* firing on_close callbacks */

    http_parser parser;
    char *rbuf;                /* pooled; NULL while idle */
    size_t rpos, wpos;         /* parsed up to, filled up to */
    bool in_message;           /* from the request's first byte to its end */
    bool in_head;              /* ... to the end of its head */
    bool method_read;          /* read_method() is done with it */
    enum corral_method method; /* of the request being parsed, once read */
    enum header_state hstate;
    int err_status;              /* why a parser callback refused the request */
    unsigned n_host, n_te;       /* Host and Transfer-Encoding fields seen */
    bool only_if_cached;         /* Cache-Control: only-if-cached seen */
    struct corral_accept accept; /* Accept-Encoding, read as it arrives */
    struct span span[SPAN_COUNT];
    unsigned spans;  /* bit 1 << kind: span[kind] is set */
    size_t lingered; /* bytes discarded while lingering */

    size_t queued; /* bytes of answers not yet written */
    bool paused;   /* not read for the queued-bytes budget */
    char *obuf;    /* copied parts of queued answers */
    size_t obuf_len, obuf_cap;

    unsigned head, count; /* ring of slots in request order */
    unsigned waiting;     /* slots in SLOT_WAITING (slot_set_state) */
    size_t wr_off;        /* bytes of slots[head] already written */

    enum deadline_kind dl_kind;
    uint64_t deadline; /* ms, CLOCK_MONOTONIC_COARSE */
    TAILQ_ENTRY(conn) dl_link;
    TAILQ_ENTRY(conn) link; /* in server->conns, or ->zombies once closed */

    char peer[48]; /* with an access_cb: the client's address */

    /* Last, 4 KB: the fields above, read for every request, stay within
     * a few cache lines of each other. */
    struct slot slots[PIPELINE_MAX];
};

TAILQ_HEAD(conn_list, conn);

struct pooled_buf {
    SLIST_ENTRY(pooled_buf) link;
};

struct corral_server {
    struct event_base *base;
    corral_request_cb *cb;
    void *arg;
    size_t max_header;
    uint64_t timeout_ms;
    uint64_t linger_ms;
    unsigned max_clients;
    bool evict_idle;
    size_t max_queued, max_client_queued;
    size_t rbuf_cap;
    corral_access_cb *access_cb;
    void *access_arg;
    http_parser_settings settings;

    struct corral_listener *listener;
    uint16_t port;
    struct corral_tls *tls; /* borrowed; NULL: no TLS listener */
    struct corral_listener *tls_listener;
    uint16_t tls_port;
    struct corral_h2 *h2; /* the connections that speak HTTP/2 */
    struct event *sweep_ev;
    struct event *drain_ev;

    struct conn_list conns;     /* open */
    struct conn_list zombies;   /* closed, with unanswered requests */
    struct conn_list deadlines; /* open with a deadline, by time */
    struct conn_list lingering; /* closing, by deadline */

    SLIST_HEAD(, pooled_buf) pool;
    unsigned pool_n;

    time_t date_sec;
    char date[64]; /* "Date: ...\r\n", DATE_LEN bytes used */

    bool draining;
    void (*drain_done)(void *arg);
    void *drain_arg;

    struct corral_server_stats stats;
};

static void conn_run(struct conn *c);
static void conn_close(struct conn *c);

/* ---- small helpers ---------------------------------------------------- */

/* "Date: ...\r\n", formatted once per second. */
static const char *
server_date(struct corral_server *s)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed",
                                    "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr",
                                       "May", "Jun", "Jul", "Aug",
                                       "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now != s->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(s->date, sizeof s->date,
                 "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n",
                 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
                 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
        s->date_sec = now;
    }
    return s->date;
}

static const char *
reason_phrase(int status)
{
    const char *r = http_status_str((enum http_status)status);
    return strcmp(r, "<unknown>") == 0 ? "Unknown" : r;
}

/* ---- pooled read buffers ------------------------------------------------ */

static char *
rbuf_get(struct corral_server *s)
{
    struct pooled_buf *b = SLIST_FIRST(&s->pool);
    if (b) {
        SLIST_REMOVE_HEAD(&s->pool, link);
        s->pool_n--;
        return (char *)b;
    }
    return xmalloc(s->rbuf_cap);
}

static void
rbuf_put(struct corral_server *s, char *p)
{
    if (s->pool_n >= RBUF_POOL_MAX) {
        free(p);
        return;
    }
    struct pooled_buf *b = (struct pooled_buf *)(void *)p;
    SLIST_INSERT_HEAD(&s->pool, b, link);
    s->pool_n++;
}

static void
conn_release_rbuf(struct conn *c)
{
    if (c->rbuf) {
        rbuf_put(c->server, c->rbuf);
        c->rbuf = NULL;
    }
    c->rpos = c->wpos = 0;
}

/* ---- deadlines ------------------------------------------------------------
 */

/* Every deadline of a kind is now + the same duration, so appending keeps
 * each list sorted: lingering closes (shorter) have a list of their own. */
static struct conn_list *
dl_list(struct corral_server *s, enum deadline_kind kind)
{
    return kind == DL_LINGER ? &s->lingering : &s->deadlines;
}

static void
dl_set(struct conn *c, enum deadline_kind kind, uint64_t ms)
{
    struct corral_server *s = c->server;
    /* Already last of the list it goes to (a request's head, then its
     * answer, in one turn): a later deadline keeps it last, so it stays,
     * and its neighbours' cache lines are not touched. */
    if (kind != DL_NONE && c->dl_kind != DL_NONE &&
        dl_list(s, kind) == dl_list(s, c->dl_kind) &&
        TAILQ_NEXT(c, dl_link) == NULL) {
        c->dl_kind = kind;
        c->deadline = corral_now_ms() + ms;
        return;
    }
    if (c->dl_kind != DL_NONE)
        TAILQ_REMOVE(dl_list(s, c->dl_kind), c, dl_link);
    c->dl_kind = kind;
    if (kind == DL_NONE)
        return;
    c->deadline = corral_now_ms() + ms;
    TAILQ_INSERT_TAIL(dl_list(s, kind), c, dl_link);
}

/* Adds or removes ev as on says, unless *added says it already is. */
static void
event_want(struct event *ev, bool *added, bool on)
{
    if (on == *added)
        return;
    if (on)
        event_add(ev, NULL);
    else
        event_del(ev);
    *added = on;
}

static void
conn_want_read(struct conn *c, bool on)
{
    event_want(c->rev, &c->reading, on);
    /* Bytes TLS already decrypted: the socket will not say so. */
    if (on && c->ssl && !c->handshaking && corral_tls_pending(c->ssl))
        event_active(c->rev, EV_READ, 1);
}

static void
conn_want_write(struct conn *c, bool on)
{
    event_want(c->wev, &c->writing, on);
}

static void
conn_kick(struct conn *c)
{
    event_active(c->kev, EV_WRITE, 1);
}

/* ---- answers ----------------------------------------------------------- */

/* Room for n more bytes in the obuf; returns their offset. */
static size_t
obuf_reserve(struct conn *c, size_t n)
{
    if (c->obuf_cap - c->obuf_len < n) {
        size_t cap = c->obuf_cap ? c->obuf_cap : OBUF_MIN;
        while (cap - c->obuf_len < n)
            cap *= 2;
        c->obuf = xrealloc(c->obuf, cap);
        c->obuf_cap = cap;
    }
    size_t off = c->obuf_len;
    c->obuf_len += n;
    return off;
}

/* The server's part of every head: Date, Connection, the blank line. */
static char *
put_tail(struct corral_server *s, const struct slot *sl, char *p)
{
    p = fmt_put(p, server_date(s), DATE_LEN);
    if (sl->close)
        p = FMT_PUT(p, "Connection: close\r\n");
    else if (sl->keep_alive_10)
        p = FMT_PUT(p, "Connection: keep-alive\r\n");
    return FMT_PUT(p, "\r\n");
}

static size_t
slot_total(const struct slot *sl)
{
    return sl->part[0].len + sl->part[1].len + sl->part[2].len;
}

/* Gives back a request-string copy bigger than the first size, so a
 * connection that once sent long targets does not keep 16 big copies. */
static void
slot_trim(struct slot *sl, size_t keep)
{
    struct corral_server *s = sl->conn->server;
    if (sl->own_cap > keep) {
        s->stats.copy_bytes -= sl->own_cap;
        free(sl->own);
        sl->own = NULL;
        sl->own_cap = 0;
    }
}

/* Every change of a slot's state goes through here, so conn->waiting is
 * a count the hit path reads without touching the 16 slots. */
static void
slot_set_state(struct slot *sl, enum slot_state st)
{
    struct conn *c = sl->conn;
    if (sl->state == SLOT_WAITING)
        c->waiting--;
    if (st == SLOT_WAITING)
        c->waiting++;
    sl->state = st;
}

static void
slot_release(struct slot *sl)
{
    struct conn *c = sl->conn;
    if (sl->hold) {
        corral_value_unref(sl->hold);
        sl->hold = NULL;
    }
    c->queued -= sl->qbytes;
    c->server->stats.queued_bytes -= sl->qbytes;
    sl->qbytes = 0;
    slot_trim(sl, OWN_MIN);
    sl->on_close = NULL;
    slot_set_state(sl, SLOT_FREE);
}

/* May the connection take another request now? One request at a time is
 * always allowed. Pipelined ones are taken while every earlier one has its
 * answer (hits answer at once, so they pipeline at full speed), up to 16,
 * and while the answers the client has not read yet hold less than its
 * share and the server's budget. An answer still being made has no size
 * yet, so waiting for it is what bounds memory: each client holds at most
 * its share plus one answer, as in nginx, which reads a pipelined request
 * only once the one before it is done. */
static bool
conn_may_take(struct conn *c)
{
    struct corral_server *s = c->server;
    if (c->count == 0)
        return true;
    if (c->count >= PIPELINE_MAX)
        return false;
    bool over = c->queued >= s->max_client_queued ||
                s->stats.queued_bytes >= s->max_queued;
    if (over && !c->paused)
        s->stats.paused++;
    c->paused = over;
    return !over && c->waiting == 0;
}

static void
conn_free(struct conn *c)
{
    TAILQ_REMOVE(&c->server->zombies, c, link);
    event_free(c->kev);
    for (unsigned i = 0; i < PIPELINE_MAX; i++)
        slot_trim(&c->slots[i], 0);
    free(c->obuf);
    free(c);
}

/* A request of a closed connection is answered (or given up): forget it. */
static void
slot_gone(struct slot *sl)
{
    struct conn *c = sl->conn;
    slot_set_state(sl, SLOT_FREE);
    sl->on_close = NULL;
    if (!c->reaping && c->waiting == 0)
        conn_free(c);
}

/* The answer is queued: flush it now if conn_run() is not about to. */
static void
slot_answered(struct slot *sl)
{
    struct conn *c = sl->conn;
    slot_set_state(sl, SLOT_ANSWERED);
    sl->qbytes = slot_total(sl);
    c->queued += sl->qbytes;
    c->server->stats.queued_bytes += sl->qbytes;
    if (!c->in_run)
        conn_kick(c);
}

void
corral_request_respond(struct corral_request *req,
                       const struct corral_response *r)
{
    if (req->proto != CORRAL_PROTO_H1) {
        corral_h2_respond(req, r);
        return;
    }
    struct slot *sl = (struct slot *)(void *)req;
    struct conn *c = sl->conn;
    if (sl->state != SLOT_WAITING)
        return;
    if (c->fd < 0) {
        slot_gone(sl);
        return;
    }
    size_t n = r->extra_len + DATE_LEN + CONN_HDR_MAX + 2;
    size_t off = obuf_reserve(c, n);
    char *start = c->obuf + off, *p = start;
    if (r->extra_len)
        p = fmt_put(p, r->extra, r->extra_len);
    p = put_tail(c->server, sl, p);
    c->obuf_len -= n - (size_t)(p - start);

    sl->part[0] = (struct part){r->head, 0, r->head_len};
    sl->part[1] = (struct part){NULL, (size_t)off, (size_t)(p - start)};
    sl->part[2] = (struct part){
        r->body, 0, req->method == CORRAL_METHOD_HEAD ? 0 : r->body_len};
    if (r->hold)
        sl->hold = corral_value_ref(r->hold);
    if (c->server->access_cb)
        c->server->access_cb(req, r->status, sl->part[2].len,
                             c->server->access_arg);
    slot_answered(sl);
}

void
corral_request_respond_simple(struct corral_request *req, int status,
                              const char *content_type,
                              const char *extra_headers, const char *body,
                              size_t len)
{
    if (req->proto != CORRAL_PROTO_H1) {
        corral_h2_respond_simple(req, status, content_type, extra_headers, body,
                                 len);
        return;
    }
    struct slot *sl = (struct slot *)(void *)req;
    struct conn *c = sl->conn;
    if (sl->state != SLOT_WAITING)
        return;
    if (c->fd < 0) {
        slot_gone(sl);
        return;
    }
    if (status < 100 || status > 999)
        status = 500;
    bool no_body = status < 200 || status == 204 || status == 304;
    if (no_body || !body)
        len = 0;
    const char *reason = reason_phrase(status);
    size_t rlen = strlen(reason);
    size_t ctlen = content_type ? strlen(content_type) : 0;
    size_t xlen = extra_headers ? strlen(extra_headers) : 0;
    size_t blen = req->method == CORRAL_METHOD_HEAD ? 0 : len;
    size_t n = 13 + rlen + 2 + (content_type ? 14 + ctlen + 2 : 0) +
               (no_body ? 0 : 16 + 20 + 2) + xlen + DATE_LEN + CONN_HDR_MAX +
               2 + blen;
    size_t off = obuf_reserve(c, n);
    char *start = c->obuf + off, *p = start;
    p = FMT_PUT(p, "HTTP/1.1 ");
    p = fmt_uint(p, (uint64_t)status);
    *p++ = ' ';
    p = fmt_put(p, reason, rlen);
    p = FMT_PUT(p, "\r\n");
    p = fmt_simple_fields(p, content_type, ctlen, no_body, len, extra_headers,
                          xlen);
    p = put_tail(c->server, sl, p);
    if (blen)
        p = fmt_put(p, body, blen);
    c->obuf_len -= n - (size_t)(p - start);

    sl->part[0] = (struct part){NULL, (size_t)off, (size_t)(p - start)};
    sl->part[1] = (struct part){NULL, 0, 0};
    sl->part[2] = (struct part){NULL, 0, 0};
    if (c->server->access_cb)
        c->server->access_cb(req, status, blen, c->server->access_arg);
    slot_answered(sl);
}

void
corral_request_on_close(struct corral_request *req, corral_request_close_cb *cb,
                        void *arg)
{
    if (req->proto != CORRAL_PROTO_H1) {
        corral_h2_on_close(req, cb, arg);
        return;
    }
    struct slot *sl = (struct slot *)(void *)req;
    if (sl->state != SLOT_WAITING)
        return;
    sl->on_close = cb;
    sl->on_close_arg = arg;
    /* Already gone: tell it from the loop, never from inside this call. */
    if (cb && sl->conn->fd < 0)
        conn_kick(sl->conn);
}

/* Drops w written bytes from the front of the queue. */
static void
conn_advance(struct conn *c, size_t w)
{
    while (c->count) {
        struct slot *sl = &c->slots[c->head];
        if (sl->state != SLOT_ANSWERED)
            break;
        size_t rem = slot_total(sl) - c->wr_off;
        if (w < rem) {
            c->wr_off += w;
            return;
        }
        w -= rem;
        c->wr_off = 0;
        slot_release(sl);
        c->head = (c->head + 1) % PIPELINE_MAX;
        /* Empty, the ring starts over at slot 0: a client with one request
         * at a time keeps using one slot (and its copy area), whose cache
         * lines are still warm, instead of walking all sixteen. */
        if (--c->count == 0)
            c->head = 0;
    }
}

/* Drops the obuf bytes no queued answer points at any more: all of them
 * when none does, else the dead front once it is half the buffer, so a
 * connection that always has an answer in flight cannot grow it forever. */
static void
obuf_compact(struct conn *c)
{
    size_t low = c->obuf_len;
    for (unsigned i = 0; i < c->count; i++) {
        struct slot *sl = &c->slots[(c->head + i) % PIPELINE_MAX];
        if (sl->state != SLOT_ANSWERED)
            continue;
        for (int k = 0; k < 3; k++)
            if (!sl->part[k].ptr && sl->part[k].len && sl->part[k].off < low)
                low = sl->part[k].off;
    }
    if (low == c->obuf_len) {
        c->obuf_len = 0;
        return;
    }
    if (low == 0 || low < c->obuf_cap / 2)
        return;
    memmove(c->obuf, c->obuf + low, c->obuf_len - low);
    c->obuf_len -= low;
    for (unsigned i = 0; i < c->count; i++) {
        struct slot *sl = &c->slots[(c->head + i) % PIPELINE_MAX];
        if (sl->state != SLOT_ANSWERED)
            continue;
        for (int k = 0; k < 3; k++)
            if (!sl->part[k].ptr && sl->part[k].len)
                sl->part[k].off -= low;
    }
}

/* Writes the answered prefix of the queue. Returns 0, or -1 when the
 * connection is broken. */
static int
conn_flush(struct conn *c)
{
    struct iovec iov[PIPELINE_MAX * 3];
    bool progressed = false;

    if (c->broken)
        return -1;
    while (c->count && c->slots[c->head].state == SLOT_ANSWERED) {
        int n = 0;
        size_t total = 0, skip = c->wr_off;
        for (unsigned i = 0; i < c->count; i++) {
            struct slot *sl = &c->slots[(c->head + i) % PIPELINE_MAX];
            if (sl->state != SLOT_ANSWERED)
                break;
            for (int k = 0; k < 3; k++) {
                const struct part *pt = &sl->part[k];
                const char *b = pt->ptr ? pt->ptr : c->obuf + pt->off;
                size_t len = pt->len;
                if (skip) {
                    size_t d = skip < len ? skip : len;
                    b += d;
                    len -= d;
                    skip -= d;
                }
                if (!len)
                    continue;
                iov[n].iov_base = (void *)b;
                iov[n].iov_len = len;
                total += len;
                n++;
            }
        }
        ssize_t w = 0;
        if (n) {
            struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
            w = c->ssl ? corral_tls_writev(c->ssl, iov, n)
                       : sendmsg(c->fd, &m, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                return -1;
            }
        }
        conn_advance(c, (size_t)w);
        if (w > 0)
            progressed = true;
        if ((size_t)w < total)
            break;
    }

    bool blocked = c->count && c->slots[c->head].state == SLOT_ANSWERED;
    conn_want_write(c, blocked);
    if (blocked && (c->dl_kind != DL_WRITE || progressed))
        dl_set(c, DL_WRITE, c->server->timeout_ms);
    if (!blocked && c->dl_kind == DL_WRITE)
        dl_set(c, DL_NONE, 0);

    obuf_compact(c);
    return 0;
}

/* ---- parsing ------------------------------------------------------------- */

static bool
has_span(const struct conn *c, enum span_kind k)
{
    return c->spans & 1u << k;
}

/* Starts span k at the parser's bytes at, or extends it with them. */
static void
span_add(struct conn *c, enum span_kind k, const char *at, size_t len)
{
    if (has_span(c, k)) {
        c->span[k].len += len;
        return;
    }
    c->span[k] = (struct span){(size_t)(at - c->rbuf), len};
    c->spans |= 1u << k;
}

static const char *
span_ptr(const struct conn *c, enum span_kind k)
{
    return c->rbuf + c->span[k].off;
}

/* Moves what is still needed to the front of the read buffer: the bytes
 * not parsed yet and the head being parsed, which the spans point into. */
static void
rbuf_compact(struct conn *c)
{
    size_t keep = c->rpos;
    for (unsigned k = 0; k < SPAN_COUNT; k++)
        if (has_span(c, k) && c->span[k].off < keep)
            keep = c->span[k].off;
    memmove(c->rbuf, c->rbuf + keep, c->wpos - keep);
    c->wpos -= keep;
    c->rpos -= keep;
    for (unsigned k = 0; k < SPAN_COUNT; k++)
        if (has_span(c, k))
            c->span[k].off -= keep;
}

/* A request's first byte has arrived. */
static void
message_begin(struct conn *c)
{
    c->in_message = c->in_head = true;
    c->method_read = false;
    c->method = CORRAL_METHOD_NONE;
    c->spans = 0;
    c->hstate = HS_NONE;
    c->err_status = 0;
    c->n_host = c->n_te = 0;
    c->only_if_cached = false;
    c->accept = (struct corral_accept){0};
    dl_set(c, DL_REQUEST, c->server->timeout_ms);
}

static int
on_url(http_parser *p, const char *at, size_t len)
{
    span_add(p->data, SPAN_URL, at, len);
    return 0;
}

/* Reads the method of the request at rpos. http_parser knows a fixed list
 * of methods and refuses any other token (HPE_INVALID_METHOD: a 400 and a
 * close), where RFC 9110 (9.1, 15.5.6) has an unknown method answered as
 * one the target does not allow, and the connection kept, as nginx does.
 * So the method is read here, and one other than GET, HEAD, POST and
 * DELETE reaches the parser as "GET ": the server treats them all alike.
 * Returns 1 to parse on, 0 to wait for more bytes, or -1 with err_status
 * set to refuse the request. */
static int
read_method(struct conn *c)
{
    static const struct {
        char name[8];
        size_t len;
        enum corral_method method;
    } known[] = {
        {"GET", 3, CORRAL_METHOD_GET},
        {"HEAD", 4, CORRAL_METHOD_HEAD},
        {"POST", 4, CORRAL_METHOD_POST},
        {"DELETE", 6, CORRAL_METHOD_DELETE},
    };
    struct corral_server *s = c->server;
    const char *b = c->rbuf + c->rpos, *end = c->rbuf + c->wpos;
    if (!c->in_message) {
        /* Empty lines before a request line are ignored (RFC 9112 2.2). */
        while (b < end && (*b == '\r' || *b == '\n'))
            b++;
        c->rpos = (size_t)(b - c->rbuf);
        if (b == end)
            return 0;
        message_begin(c);
    }
    const char *t = b;
    while (t < end && fmt_is_tchar((unsigned char)*t))
        t++;
    if (t == end) {
        if ((size_t)(end - b) <= s->max_header)
            return 0;
        c->err_status = 431;
        return -1;
    }
    c->method_read = true;
    if (t == b || *t != ' ')
        return 1; /* not a method: the parser refuses the line */
    size_t len = (size_t)(t - b);
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (len == known[i].len && memcmp(b, known[i].name, len) == 0) {
            c->method = known[i].method;
            return 1;
        }
    }
    c->method = CORRAL_METHOD_OTHER;
    http_parser_execute(&c->parser, &s->settings, "GET ", 4);
    if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) { /* s_dead: cannot be */
        c->err_status = 400;
        return -1;
    }
    c->parser.nread = c->parser.nread - 4 + (uint32_t)(len + 1); /* as sent */
    c->rpos += len + 1;
    return 1;
}

static bool
field_is(const struct conn *c, const char *name, size_t len)
{
    return c->span[SPAN_FIELD].len == len &&
           strncasecmp(span_ptr(c, SPAN_FIELD), name, len) == 0;
}

/* One field line is complete (SPAN_FIELD, SPAN_VALUE). http_parser is
 * lenient where RFC 9112 says to reject, and a proxy in front of us may
 * read the same bytes differently, so refuse: whitespace or any non-token
 * byte in a name (5.1), a folded value (5.2), a second Host or none in
 * HTTP/1.1 (3.2), a second Authorization (RFC 9110 11.6.2 allows one
 * credential), and Transfer-Encoding other than one plain "chunked"
 * (6.1). Returns -1 with err_status set to refuse. */
static int
field_done(struct conn *c)
{
    const char *f = span_ptr(c, SPAN_FIELD);
    size_t flen = c->span[SPAN_FIELD].len;
    const char *v = span_ptr(c, SPAN_VALUE);
    size_t n = c->span[SPAN_VALUE].len;

    for (size_t i = 0; i < flen; i++)
        if (!fmt_is_tchar((unsigned char)f[i]))
            goto bad;
    if (flen == 0 || memchr(v, '\n', n) != NULL || memchr(v, '\r', n) != NULL)
        goto bad;
    /* A fold before the value's first byte is skipped with the blanks, so
     * "X-A:\r\n b" reports a value "b": look between the colon and the
     * value too. An empty value is reported where the next line starts. */
    const char *gap = f + flen + 1;
    size_t glen = (size_t)(v - gap);
    if (n == 0 && glen > 0 && gap[glen - 1] == '\n')
        glen--;
    if (memchr(gap, '\n', glen) != NULL)
        goto bad;
    if (field_is(c, "host", 4) && ++c->n_host > 1)
        goto bad;
    if (field_is(c, "transfer-encoding", 17)) {
        while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        if (++c->n_te > 1 || n != 7 || strncasecmp(v, "chunked", 7) != 0) {
            /* "gzip, chunked" is HTTP we do not implement; anything else
             * (chunked twice, not last, or no chunked) is not HTTP. */
            bool last = n > 7 && strncasecmp(v + n - 7, "chunked", 7) == 0;
            for (size_t i = 0; last && i + 7 < n; i++)
                last = strncasecmp(v + i, "chunked", 7) != 0;
            c->err_status = c->n_te == 1 && last ? 501 : 400;
            return -1;
        }
    }
    if (field_is(c, "cache-control", 13) &&
        fmt_names_directive(v, n, "only-if-cached", 14))
        c->only_if_cached = true;
    if (field_is(c, "accept-encoding", 15))
        corral_accept_add(&c->accept, v, n);
    if (field_is(c, "if-none-match", 13)) {
        c->span[SPAN_INM] = c->span[SPAN_VALUE];
        c->spans |= 1u << SPAN_INM;
    } else if (field_is(c, "authorization", 13)) {
        if (has_span(c, SPAN_AUTH))
            goto bad; /* which one would the admin check? */
        c->span[SPAN_AUTH] = c->span[SPAN_VALUE];
        c->spans |= 1u << SPAN_AUTH;
    }
    return 0;
bad:
    c->err_status = 400;
    return -1;
}

static int
on_header_field(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->hstate == HS_VALUE && field_done(c) != 0)
        return -1;
    if (c->hstate != HS_FIELD) {
        c->hstate = HS_FIELD;
        c->spans &= ~(1u << SPAN_FIELD | 1u << SPAN_VALUE);
    }
    span_add(c, SPAN_FIELD, at, len);
    return 0;
}

static int
on_header_value(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    c->hstate = HS_VALUE;
    span_add(c, SPAN_VALUE, at, len);
    return 0;
}

static int
on_headers_complete(http_parser *p)
{
    struct conn *c = p->data;
    c->in_head = false;
    if (c->hstate == HS_FIELD) { /* a name without a value: not HTTP */
        c->err_status = 400;
        return -1;
    }
    if (c->hstate == HS_VALUE && field_done(c) != 0)
        return -1;
    if (p->http_major != 1) {
        c->err_status = p->http_major == 0 ? 400 : 505;
        return -1;
    }
    if (p->http_minor >= 1 && c->n_host != 1) {
        c->err_status = 400;
        return -1;
    }
    /* A body whose length cannot be known (Transfer-Encoding without a
     * final chunked): http_parser would fail only after this callback, so
     * refuse here, before the handler sees the request (RFC 9112 6.3). */
    if (p->uses_transfer_encoding && !(p->flags & F_CHUNKED)) {
        c->err_status = 400;
        return -1;
    }
    /* No upgrades (and no CONNECT tunnels): what follows is another
     * request. */
    p->upgrade = 0;
    /* Stop right here, so the request is dispatched outside the parser and
     * parser->nread says how long its head was. */
    http_parser_pause(p, 1);
    return 0;
}

static int
on_message_complete(http_parser *p)
{
    struct conn *c = p->data;
    c->in_message = false;
    /* Stop here too: the next request's method is read_method()'s. */
    http_parser_pause(p, 1);
    return 0;
}

/* The next free slot, at the tail of the queue, for the request being
 * parsed. Nothing of the request the slot held before survives: its
 * strings may be freed (slot_trim), and a refused request is logged with
 * what is set here. */
static struct slot *
conn_push(struct conn *c)
{
    struct corral_server *s = c->server;
    struct slot *sl = &c->slots[(c->head + c->count) % PIPELINE_MAX];
    c->count++;
    slot_set_state(sl, SLOT_WAITING);
    sl->on_close = NULL;
    sl->hold = NULL;
    sl->close = false;
    sl->keep_alive_10 = false;
    sl->req = (struct corral_request){
        .method = c->method,
        .path = "",
        .query = "",
        .upstream_ms = -1,
    };
    if (s->access_cb) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        sl->req.start_us =
            (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
        sl->req.peer = c->peer;
    }
    return sl;
}

/* Answers a bad request (or a timeout) and stops the connection. */
static void
conn_fail(struct conn *c, int status)
{
    static const struct {
        int status;
        const char *body;
    } bodies[] = {
        {400, "{\"error\":\"bad request\"}"},
        {408, "{\"error\":\"request timeout\"}"},
        {431, "{\"error\":\"request header fields too large\"}"},
        {500, "{\"error\":\"internal error\"}"},
        {501, "{\"error\":\"transfer coding not implemented\"}"},
        {505, "{\"error\":\"http version not supported\"}"},
    };
    const char *body = bodies[0].body;
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
        if (bodies[i].status == status)
            body = bodies[i].body;
    if (status != 408)
        c->server->stats.bad_requests++;
    c->stop = true;
    if (c->count >= PIPELINE_MAX) {
        c->broken = true;
        return;
    }
    struct slot *sl = conn_push(c);
    sl->close = true;
    corral_request_respond_simple(&sl->req, status, "application/json", NULL,
                                  body, strlen(body));
}

/* Copies the parsed head's strings into a slot and hands it to the handler. */
static void
conn_dispatch(struct conn *c)
{
    struct corral_server *s = c->server;
    const char *path = "/", *query = "", *inm = NULL, *auth = NULL;
    size_t plen = 1, qlen = 0, ilen = 0, alen = 0;

    if (has_span(c, SPAN_URL) &&
        !corral_target_split(span_ptr(c, SPAN_URL), c->span[SPAN_URL].len,
                             &path, &plen, &query, &qlen)) {
        conn_fail(c, 400);
        return;
    }
    if (plen == 0) {
        path = "/";
        plen = 1;
    }
    if (has_span(c, SPAN_INM)) {
        inm = span_ptr(c, SPAN_INM);
        ilen = c->span[SPAN_INM].len;
        while (ilen && (inm[ilen - 1] == ' ' || inm[ilen - 1] == '\t'))
            ilen--;
    }
    if (has_span(c, SPAN_AUTH)) {
        auth = span_ptr(c, SPAN_AUTH);
        alen = c->span[SPAN_AUTH].len;
        while (alen && (auth[alen - 1] == ' ' || auth[alen - 1] == '\t'))
            alen--;
    }

    /* The copies go to the slot the request will take (free until then). */
    struct slot *sl = &c->slots[(c->head + c->count) % PIPELINE_MAX];
    size_t need = plen + qlen + ilen + alen;
    if (need > sl->own_cap) {
        size_t cap = sl->own_cap ? sl->own_cap : OWN_MIN;
        while (cap < need)
            cap *= 2;
        s->stats.copy_bytes += cap - sl->own_cap;
        sl->own = xrealloc(sl->own, cap);
        sl->own_cap = cap;
    }
    char *o = sl->own; /* need >= plen >= 1: never NULL */
    if (path[0] == '/') {
        long n = corral_target_resolve_dots(o, path, plen);
        if (n < 0) {
            conn_fail(c, 400);
            return;
        }
        plen = (size_t)n;
    } else {
        memcpy(o, path, plen); /* "*" */
    }
    memcpy(o + plen, query, qlen);
    if (inm)
        memcpy(o + plen + qlen, inm, ilen);
    if (auth)
        memcpy(o + plen + qlen + ilen, auth, alen);
    sl = conn_push(c);
    sl->req.path = o;
    sl->req.path_len = plen;
    sl->req.query = o + plen;
    sl->req.query_len = qlen;
    sl->req.if_none_match = inm ? o + plen + qlen : NULL;
    sl->req.inm_len = ilen;
    sl->req.authorization = auth ? o + plen + qlen + ilen : NULL;
    sl->req.auth_len = alen;
    sl->req.only_if_cached = c->only_if_cached;
    sl->req.accept = c->accept;
    c->spans = 0; /* copied: the buffer may let the head go */
    sl->close = !http_should_keep_alive(&c->parser) || s->draining;
    sl->keep_alive_10 = !sl->close && c->parser.http_minor == 0;
    if (sl->close)
        c->stop = true;
    s->stats.requests++;
    s->stats.proto_requests[CORRAL_PROTO_H1]++;
    s->cb(&sl->req, s->arg);
}

/* Parses what is buffered and dispatches complete heads, while slots last.
 * Returns true when it stopped for want of a slot, with bytes left. */
static bool
conn_parse(struct conn *c)
{
    struct corral_server *s = c->server;
    while (!c->stop && c->rpos < c->wpos) {
        if (!conn_may_take(c))
            return true;
        if (!c->in_message || !c->method_read) {
            int r = read_method(c);
            if (r < 0)
                conn_fail(c, c->err_status);
            if (r <= 0)
                return false;
        }
        if (c->rpos == c->wpos)
            break;
        size_t len = c->wpos - c->rpos;
        size_t n = http_parser_execute(&c->parser, &s->settings,
                                       c->rbuf + c->rpos, len);
        c->rpos += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            if (!c->in_message) /* it ended, with its body */
                continue;
            if (c->parser.nread > s->max_header)
                conn_fail(c, 431);
            else
                conn_dispatch(c);
            continue;
        }
        if (e != HPE_OK) {
            conn_fail(c, e == HPE_HEADER_OVERFLOW ? 431
                         : c->err_status          ? c->err_status
                                                  : 400);
            return false;
        }
        if (c->in_head && c->parser.nread > s->max_header) {
            conn_fail(c, 431);
            return false;
        }
        if (n < len) { /* cannot happen without upgrades; never spin */
            conn_fail(c, 400);
            return false;
        }
    }
    return false;
}

/* ---- connection life ------------------------------------------------------
 */

/* After the last answer: half-close and discard input until the client
 * closes, so our answer is not lost to a reset. */
static void
conn_linger(struct conn *c)
{
    c->lingering = true;
    conn_release_rbuf(c);
    conn_want_write(c, false);
    if (c->ssl)
        corral_tls_shutdown(c->ssl);
    if (shutdown(c->fd, SHUT_WR) < 0) {
        conn_close(c);
        return;
    }
    conn_want_read(c, true);
    dl_set(c, DL_LINGER, c->server->linger_ms);
}

/* Settles events, buffers and the deadline after a round of work. */
static void
conn_update(struct conn *c)
{
    if (c->lingering)
        return;
    if (c->broken) {
        conn_close(c);
        return;
    }
    if (c->stop && c->count == 0) {
        conn_linger(c);
        return;
    }
    bool take = !c->stop && conn_may_take(c);
    /* Not taking requests, keep reading ahead while the buffer has room, so
     * a client that leaves is seen (and its waiters cancelled) at once. */
    bool room =
        !c->rbuf || c->wpos - c->rpos < c->server->rbuf_cap - RBUF_SLACK / 2;
    conn_want_read(c, take || (!c->stop && c->count < PIPELINE_MAX && room));
    if (c->stop || (c->rpos == c->wpos && c->spans == 0))
        conn_release_rbuf(c);
    if (c->writing)
        return; /* conn_flush keeps the write deadline */
    /* A full pipeline stops parsing mid-message: the client owes nothing
     * then, and the handler's time is not the client's. */
    if (take && c->in_message) {
        if (c->dl_kind != DL_REQUEST)
            dl_set(c, DL_REQUEST, c->server->timeout_ms);
    } else if (!c->stop && c->count == 0) {
        if (c->dl_kind != DL_IDLE)
            dl_set(c, DL_IDLE, c->server->timeout_ms);
    } else if (c->dl_kind != DL_NONE) {
        dl_set(c, DL_NONE, 0);
    }
}

static void
conn_run(struct conn *c)
{
    c->in_run = true;
    for (;;) {
        bool blocked = conn_parse(c);
        if (conn_flush(c) < 0) {
            c->in_run = false;
            conn_close(c);
            return;
        }
        /* Flushing freed slots: parse what waited for them. */
        if (!blocked || c->stop || !conn_may_take(c))
            break;
    }
    c->in_run = false;
    conn_update(c);
}

/* Fires on_close for the unanswered requests of a closed connection; frees
 * it once nothing is unanswered. */
static void
conn_reap(struct conn *c)
{
    c->reaping = true;
    for (unsigned i = 0; i < PIPELINE_MAX; i++) {
        struct slot *sl = &c->slots[i];
        if (sl->state == SLOT_WAITING && sl->on_close) {
            corral_request_close_cb *cb = sl->on_close;
            sl->on_close = NULL;
            slot_set_state(sl, SLOT_FREE);
            cb(&sl->req, sl->on_close_arg);
        }
    }
    c->reaping = false;
    if (c->waiting == 0)
        conn_free(c);
}

static void
conn_close(struct conn *c)
{
    struct corral_server *s = c->server;
    if (c->fd < 0)
        return;
    dl_set(c, DL_NONE, 0);
    event_free(c->rev);
    event_free(c->wev);
    c->rev = c->wev = NULL;
    c->reading = c->writing = false;
    corral_tls_close(c->ssl);
    c->ssl = NULL;
    close(c->fd);
    c->fd = -1;
    conn_release_rbuf(c);
    TAILQ_REMOVE(&s->conns, c, link);
    TAILQ_INSERT_TAIL(&s->zombies, c, link);
    s->stats.open--;
    for (unsigned i = 0; i < PIPELINE_MAX; i++)
        if (c->slots[i].state == SLOT_ANSWERED)
            slot_release(&c->slots[i]);
    c->count = 0;
    if (s->draining && s->stats.open == 0 && s->drain_ev)
        event_active(s->drain_ev, EV_TIMEOUT, 1);
    conn_reap(c);
}

static void
conn_discard(struct conn *c)
{
    char tmp[4096];
    for (int i = 0; i < 16; i++) {
        ssize_t n = read(c->fd, tmp, sizeof tmp);
        if (n > 0) {
            c->lingered += (size_t)n;
            if (c->lingered > LINGER_MAX_BYTES)
                break;
            continue;
        }
        if (n < 0 &&
            (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        conn_close(c); /* EOF or error: the client is done */
        return;
    }
    /* 64 KB read this turn: go on at the next one, unless over the cap. */
    if (c->lingered <= LINGER_MAX_BYTES)
        return;
    conn_close(c);
}

/* The connection opened with HTTP/2's preface: h2.c takes its socket and
 * the bytes read so far, and the HTTP/1.1 connection is let go. It stays
 * counted as open until h2.c says it closed. */
static void
conn_to_h2(struct conn *c)
{
    struct corral_server *s = c->server;
    char peer[sizeof c->peer];
    char *rbuf = c->rbuf;
    size_t len = rbuf ? c->wpos : 0;
    int fd = c->fd;
    SSL *ssl = c->ssl;
    memcpy(peer, c->peer, sizeof peer);
    dl_set(c, DL_NONE, 0);
    event_free(c->rev);
    event_free(c->wev);
    event_free(c->kev);
    TAILQ_REMOVE(&s->conns, c, link);
    free(c->obuf);
    free(c);
    corral_h2_adopt(s->h2, fd, ssl, rbuf, len, peer);
    if (rbuf)
        rbuf_put(s, rbuf);
}

/* Drives a TLS handshake; once done, the connection goes to h2.c (ALPN
 * "h2") or stays here as HTTP/1.1. Returns true when it is done and the
 * connection still here. */
static bool
conn_handshake(struct conn *c)
{
    struct corral_server *s = c->server;
    bool ww = false;
    int r = corral_tls_handshake(c->ssl, &ww);
    if (r < 0) {
        s->stats.tls_failed++;
        conn_close(c);
        return false;
    }
    if (r == 0) {
        conn_want_read(c, !ww);
        conn_want_write(c, ww);
        return false;
    }
    c->handshaking = false;
    conn_want_write(c, false);
    if (corral_tls_is_h2(c->ssl)) {
        s->stats.tls_connections[CORRAL_PROTO_H2]++;
        conn_to_h2(c);
        return false;
    }
    s->stats.tls_connections[CORRAL_PROTO_H1]++;
    s->stats.proto_connections[CORRAL_PROTO_H1]++;
    conn_want_read(c, true);
    return true;
}

static void
on_read(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    struct corral_server *s = c->server;
    (void)what;

    if (c->handshaking && !conn_handshake(c))
        return;
    if (c->lingering) {
        conn_discard(c);
        return;
    }
    if (!c->rbuf) {
        c->rbuf = rbuf_get(s);
        c->rpos = c->wpos = 0;
    }
    if (s->rbuf_cap - c->wpos < RBUF_SLACK / 2)
        rbuf_compact(c);
    if (c->wpos == s->rbuf_cap) { /* a head beyond the limit slipped by */
        conn_close(c);
        return;
    }
    size_t room = s->rbuf_cap - c->wpos;
    ssize_t n = c->ssl ? corral_tls_read(c->ssl, c->rbuf + c->wpos, room)
                       : read(fd, c->rbuf + c->wpos, room);
    if (n <= 0) {
        if (n < 0 &&
            (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        conn_close(c);
        return;
    }
    c->wpos += (size_t)n;
    if (c->fresh) {
        size_t k =
            c->wpos < CORRAL_H2_PREFACE_LEN ? c->wpos : CORRAL_H2_PREFACE_LEN;
        if (memcmp(c->rbuf, CORRAL_H2_PREFACE, k) == 0) {
            if (k == CORRAL_H2_PREFACE_LEN)
                conn_to_h2(c);
            return; /* else wait for the rest of it */
        }
        c->fresh = false;
        s->stats.proto_connections[CORRAL_PROTO_H1]++;
    }
    conn_run(c);
}

static void
on_write(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (c->handshaking) {
        if (conn_handshake(c))
            on_read(fd, what, c);
        return;
    }
    conn_run(c);
}

static void
on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    if (c->fd < 0)
        conn_reap(c);
    else
        conn_run(c);
}

/* "192.0.2.1", "2001:db8::1", "unix" or "-". */
static void
peer_name(int fd, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    snprintf(out, cap, "-");
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
        return;
    if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out,
                  (socklen_t)cap);
    else if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out,
                  (socklen_t)cap);
    else if (ss.ss_family == AF_UNIX)
        snprintf(out, cap, "unix");
}

static void
conn_new(struct corral_server *s, int fd, bool tls)
{
    struct conn *c = xcalloc(1, sizeof *c);
    c->server = s;
    c->fd = fd;
    c->rev = event_new(s->base, fd, EV_READ | EV_PERSIST, on_read, c);
    c->wev = event_new(s->base, fd, EV_WRITE | EV_PERSIST, on_write, c);
    c->kev = event_new(s->base, -1, 0, on_kick, c);
    if (!c->rev || !c->wev || !c->kev) {
        if (c->rev)
            event_free(c->rev);
        if (c->wev)
            event_free(c->wev);
        if (c->kev)
            event_free(c->kev);
        free(c);
        close(fd);
        return;
    }
    if (tls && (c->ssl = corral_tls_accept(s->tls, fd)) == NULL) {
        event_free(c->rev);
        event_free(c->wev);
        event_free(c->kev);
        free(c);
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (s->access_cb)
        peer_name(fd, c->peer, sizeof(c->peer));
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->fresh = !tls;
    c->handshaking = tls;
    for (unsigned i = 0; i < PIPELINE_MAX; i++)
        c->slots[i].conn = c;
    TAILQ_INSERT_TAIL(&s->conns, c, link);
    s->stats.open++;
    s->stats.accepted++;
    conn_want_read(c, true);
    dl_set(c, DL_IDLE, s->timeout_ms);
}

/* ---- the server -------------------------------------------------------------
 */

static void
reject(int fd)
{
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
                               "Content-Type: application/json\r\n"
                               "Content-Length: 28\r\n"
                               "Connection: close\r\n\r\n"
                               "{\"error\":\"too many clients\"}";
    ssize_t n = send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n;
    shutdown(fd, SHUT_WR);
    close(fd);
}

/* The connection the server has waited on longest for its client: the
 * first lingering one, else the first deadline (every deadline is its
 * last activity plus the same timeout). NULL when every one waits on the
 * handler. */
static struct conn *
idle_longest(struct corral_server *s)
{
    struct conn *c = TAILQ_FIRST(&s->lingering);
    return c ? c : TAILQ_FIRST(&s->deadlines);
}

/* A new client from a listener, or handed over by the embedder. */
static void
accept_conn(struct corral_server *s, int fd, bool tls)
{
    if (s->stats.open >= s->max_clients) {
        struct conn *old = s->evict_idle ? idle_longest(s) : NULL;
        if (old == NULL) {
            s->stats.rejected++;
            if (tls) /* a TLS client could not read a plain answer */
                close(fd);
            else
                reject(fd);
            return;
        }
        conn_close(old);
    }
    conn_new(s, fd, tls);
}

static void
on_accept(int fd, void *arg)
{
    accept_conn(arg, fd, false);
}

static void
on_accept_tls(int fd, void *arg)
{
    accept_conn(arg, fd, true);
}

int
corral_server_adopt(struct corral_server *s, int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 || s->draining)
        return -1;
    on_accept(fd, s);
    return 0;
}

static void
on_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct corral_server *s = arg;
    struct conn *c;
    uint64_t now = corral_now_ms();
    (void)fd;
    (void)what;
    while ((c = TAILQ_FIRST(&s->lingering)) && c->deadline <= now) {
        dl_set(c, DL_NONE, 0);
        conn_close(c);
    }
    while ((c = TAILQ_FIRST(&s->deadlines)) && c->deadline <= now) {
        enum deadline_kind kind = c->dl_kind;
        dl_set(c, DL_NONE, 0);
        s->stats.timeouts++;
        if (kind == DL_REQUEST && c->in_head) {
            conn_fail(c, 408);
            conn_run(c);
        } else {
            conn_close(c);
        }
    }
}

static void
on_drained(evutil_socket_t fd, short what, void *arg)
{
    struct corral_server *s = arg;
    (void)fd;
    (void)what;
    void (*done)(void *) = s->drain_done;
    s->drain_done = NULL;
    if (done)
        done(s->drain_arg);
}

static const char *
h2_date(void *arg)
{
    return server_date(arg);
}

/* An HTTP/2 connection closed. */
static void
h2_closed(void *arg)
{
    struct corral_server *s = arg;
    s->stats.open--;
    if (s->draining && s->stats.open == 0 && s->drain_ev)
        event_active(s->drain_ev, EV_TIMEOUT, 1);
}

static void
raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

struct corral_server *
corral_server_new(struct event_base *base,
                  const struct corral_server_options *o, corral_request_cb *cb,
                  void *arg, char *err, size_t errlen)
{
    char dummy[1];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof dummy;
    }
    if (!base || !o || !cb) {
        snprintf(err, errlen, "server: missing base, options or callback");
        return NULL;
    }
    struct corral_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "server: out of memory");
        return NULL;
    }
    s->base = base;
    s->cb = cb;
    s->arg = arg;
    s->max_header = o->max_header_bytes ? o->max_header_bytes : 8192;
    s->timeout_ms = o->client_timeout_ms ? o->client_timeout_ms : 30000;
    s->linger_ms =
        s->timeout_ms < LINGER_MAX_MS ? s->timeout_ms : LINGER_MAX_MS;
    s->max_clients = o->max_clients ? o->max_clients : 10000;
    s->evict_idle = o->evict_idle;
    s->max_queued = o->max_queued_bytes ? o->max_queued_bytes : 64u << 20;
    s->access_cb = o->access_cb;
    s->access_arg = o->access_arg;
    s->max_client_queued =
        o->max_client_queued_bytes ? o->max_client_queued_bytes : 1u << 20;
    s->rbuf_cap = s->max_header + RBUF_SLACK;
    s->date_sec = (time_t)-1;
    TAILQ_INIT(&s->conns);
    SLIST_INIT(&s->pool);
    TAILQ_INIT(&s->zombies);
    TAILQ_INIT(&s->deadlines);
    TAILQ_INIT(&s->lingering);
    s->settings.on_url = on_url;
    s->settings.on_header_field = on_header_field;
    s->settings.on_header_value = on_header_value;
    s->settings.on_headers_complete = on_headers_complete;
    s->settings.on_message_complete = on_message_complete;

    struct corral_h2_env env = {
        .base = base,
        .cb = cb,
        .arg = arg,
        .access_cb = o->access_cb,
        .access_arg = o->access_arg,
        .max_header = s->max_header,
        .timeout_ms = s->timeout_ms,
        .max_streams = o->max_streams,
        .max_queued = s->max_queued,
        .max_client_queued = s->max_client_queued,
        .stats = &s->stats,
        .date = h2_date,
        .date_arg = s,
        .closed = h2_closed,
        .closed_arg = s,
    };
    s->h2 = corral_h2_new(&env, err, errlen);
    if (!s->h2)
        goto fail;

    raise_nofile();
    s->listener =
        o->has_listen_fd
            ? corral_listener_adopt(base, o->listen_fd, on_accept, s, err,
                                    errlen)
            : corral_listener_new(base, o->host, o->port, o->backlog,
                                  o->reuse_port, on_accept, s, err, errlen);
    if (!s->listener)
        goto fail;
    s->port = corral_listener_port(s->listener);
    if (o->tls) {
        char why[256];
        s->tls = o->tls;
        s->tls_listener = corral_listener_new(
            base, o->tls_host, o->tls_port, o->backlog, o->reuse_port,
            on_accept_tls, s, why, sizeof why);
        if (!s->tls_listener) {
            snprintf(err, errlen, "listen_tls: %s", why);
            goto fail;
        }
        s->tls_port = corral_listener_port(s->tls_listener);
    }

    /* Deadlines are checked a few times per timeout, at most once a second:
     * a client is closed between timeout and timeout + tick. */
    uint64_t tick = s->timeout_ms / 4;
    tick = tick < 5 ? 5 : tick > 1000 ? 1000 : tick;
    struct timeval tv = corral_ms_to_tv(tick);
    s->sweep_ev = event_new(base, -1, EV_PERSIST, on_sweep, s);
    s->drain_ev = event_new(base, -1, 0, on_drained, s);
    if (!s->sweep_ev || !s->drain_ev || event_add(s->sweep_ev, &tv) < 0) {
        snprintf(err, errlen, "server: cannot add events");
        goto fail;
    }
    return s;
fail:
    corral_server_free(s);
    return NULL;
}

uint16_t
corral_server_port(const struct corral_server *s)
{
    return s->port;
}

uint16_t
corral_server_tls_port(const struct corral_server *s)
{
    return s->tls_port;
}

static void
server_stop_listening(struct corral_server *s)
{
    if (s->listener) {
        s->stats.rejected += corral_listener_refused(s->listener);
        corral_listener_free(s->listener);
        s->listener = NULL;
    }
    if (s->tls_listener) {
        s->stats.rejected += corral_listener_refused(s->tls_listener);
        corral_listener_free(s->tls_listener);
        s->tls_listener = NULL;
    }
}

void
corral_server_drain(struct corral_server *s, void (*done)(void *arg), void *arg)
{
    struct conn *c;
    s->draining = true;
    s->drain_done = done;
    s->drain_arg = arg;
    server_stop_listening(s);
    corral_h2_drain(s->h2);
    TAILQ_FOREACH(c, &s->conns, link)
    {
        c->stop = true;
        /* An answer already rendered keeps its headers; the close after it
         * then comes without "Connection: close", a race HTTP allows. */
        if (c->count) {
            struct slot *tail =
                &c->slots[(c->head + c->count - 1) % PIPELINE_MAX];
            if (tail->state == SLOT_WAITING)
                tail->close = true;
        }
        conn_kick(c);
    }
    if (s->stats.open == 0)
        event_active(s->drain_ev, EV_TIMEOUT, 1);
}

void
corral_server_drain_expire(struct corral_server *s, unsigned retry_after_s)
{
    static const char body[] = "{\"error\":\"shutting down\"}";
    char extra[40];
    struct conn *c;
    snprintf(extra, sizeof extra, "Retry-After: %u\r\n", retry_after_s);
    corral_h2_drain_expire(s->h2, retry_after_s);
    TAILQ_FOREACH(c, &s->conns, link)
    {
        for (unsigned i = 0; i < c->count; i++) {
            struct slot *sl = &c->slots[(c->head + i) % PIPELINE_MAX];
            if (sl->state != SLOT_WAITING || sl->on_close == NULL)
                continue;
            corral_request_close_cb *cb = sl->on_close;
            sl->on_close = NULL;
            cb(&sl->req, sl->on_close_arg);
            sl->close = true;
            corral_request_respond_simple(&sl->req, 503, "application/json",
                                          extra, body, sizeof body - 1);
        }
    }
}

void
corral_server_free(struct corral_server *s)
{
    struct conn *c;
    if (!s)
        return;
    server_stop_listening(s);
    if (s->drain_ev) {
        event_free(s->drain_ev);
        s->drain_ev = NULL;
    }
    while ((c = TAILQ_FIRST(&s->conns)))
        conn_close(c);
    while ((c = TAILQ_FIRST(&s->zombies)))
        conn_free(c);
    corral_h2_free(s->h2);
    if (s->sweep_ev)
        event_free(s->sweep_ev);
    struct pooled_buf *b;
    while ((b = SLIST_FIRST(&s->pool)) != NULL) {
        SLIST_REMOVE_HEAD(&s->pool, link);
        free(b);
    }
    free(s);
}

const char *
corral_proto_name(enum corral_proto p)
{
    static const char *const names[CORRAL_PROTO_COUNT] = {"h1", "h2c", "h2"};
    return (unsigned)p < CORRAL_PROTO_COUNT ? names[p] : "-";
}

void
corral_server_stats(const struct corral_server *s,
                    struct corral_server_stats *out)
{
    *out = s->stats;
    if (s->listener)
        out->rejected += corral_listener_refused(s->listener);
}
