/* h2.c — HTTP/2 framing of the client port (see h2.h).
 * One nghttp2_session per connection, fed with nghttp2_session_mem_recv()
 * from readiness events; frames go out through nghttp2's send callbacks
 * into a queue of [copied bytes | borrowed body] pieces written with one
 * writev. A body leaves as DATA frames whose 9-byte header is copied and
 * whose payload is the value's own bytes, each piece holding a reference
 * until written. Streams are requests: each is handed to the handler once
 * its header block is complete, answered in any order. The limits nginx
 * and h2o apply are here or in nghttp2's options: concurrent streams,
 * header list size, rapid reset, CONTINUATION, HPACK and control-frame
 * floods, queued bytes, idle and stalled clients. */

#include "h2.h"

#include "fmt.h"
#include "target.h"
#include "tls.h"
#include "xalloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "corral/value.h"

#define READ_CHUNK 16384      /* bytes read per turn */
#define OUT_HIGH (256 << 10)  /* queued output bytes: frames wait beyond */
#define OUT_PIECES_MAX 512    /* queued output pieces: ditto */
#define IOV_BATCH 64          /* pieces per writev */
#define RESET_BURST 1000      /* RST_STREAMs a client may send at once, */
#define RESET_RATE 33         /* ... and per second after that */
#define MAX_CONTINUATIONS 8   /* CONTINUATION frames after one HEADERS */
#define MAX_OUTBOUND_ACK 1000 /* SETTINGS and PING ACKs queued, unread */
#define MAX_SETTINGS 32       /* entries in one SETTINGS frame */
/* A header block that decodes to more than this many times max_header is
 * an HPACK bomb, not a big request: the connection ends. */
#define BOMB_FACTOR 16
/* Control frames are flood when their bytes over 8 exceed the payload
 * (request headers and bodies) by this much, as nginx counts. */
#define FLOOD_SLACK (1 << 20)
#define LINGER_MS 5000             /* at most, discarding input at the end */
#define LINGER_MAX_BYTES (1 << 20) /* ... and at most this much of it */

enum stream_state {
    ST_HEADERS,  /* its header block is arriving */
    ST_PARKED,   /* complete, waiting for the queued-bytes budget */
    ST_WAITING,  /* handed to the handler, not answered */
    ST_ANSWERED, /* answer submitted to nghttp2 */
    ST_GONE,     /* waiting, but its stream or connection is gone */
};

enum dl_kind {
    DL_NONE = 0, /* waiting on the handler: the client owes nothing */
    DL_IDLE,     /* no request in flight */
    DL_WRITE,    /* answers wait for the client to read them */
};

struct h2conn;

struct stream {
    struct corral_request req; /* first: a request pointer is a stream */
    struct h2conn *conn;       /* NULL once gone */
    struct corral_h2 *h2;
    int32_t id;
    enum stream_state state;
    int err; /* a status to refuse the request with, or 0 */
    corral_request_close_cb *on_close;
    void *on_close_arg;
    /* Request strings as they arrive: offsets into own. */
    char *own;
    size_t own_len, own_cap;
    size_t path_off, path_len; /* :path, raw */
    size_t inm_off, inm_len;
    size_t auth_off, auth_len;
    bool has_path, has_inm, has_auth;
    size_t hbytes; /* decoded header list so far (RFC 9113 6.5.2) */
    /* The answer's body: borrowed from hold, or owned (simple answers). */
    const char *body;
    size_t body_len, body_off;
    struct corral_value *hold;
    char *owned_body;
    size_t qbytes;             /* counted in conn and server queued bytes */
    TAILQ_ENTRY(stream) link;  /* in conn->streams, or h2->gone */
    TAILQ_ENTRY(stream) plink; /* in conn->parked */
};

TAILQ_HEAD(stream_list, stream);

/* One piece of output: borrowed bytes (ptr, holding hold) or bytes in the
 * obuf (ptr NULL, at off: the obuf may move when it grows). */
struct piece {
    const char *ptr;
    size_t off, len;
    struct corral_value *hold;
};

struct h2conn {
    struct corral_h2 *h2;
    int fd;
    SSL *ssl;                /* NULL: h2c over cleartext TCP */
    enum corral_proto proto; /* CORRAL_PROTO_H2 or CORRAL_PROTO_H2C */
    nghttp2_session *ng;
    struct event *rev, *wev, *tev, *kev;
    bool reading, writing;
    bool in_run;     /* inside run(): answers wait for its send */
    bool closing;    /* send what is queued (a GOAWAY), then close */
    bool lingering;  /* all sent and shut down: discarding input */
    size_t lingered; /* bytes discarded */
    bool calm;       /* ending for abuse: GOAWAY ENHANCE_YOUR_CALM */
    bool progress;   /* output bytes written since the deadline was set */
    bool asked;      /* a request handed over since the deadline was set */
    bool paused;     /* streams parked for the budget */
    struct stream_list streams; /* every open stream */
    struct stream_list parked;
    unsigned waiting;                    /* streams handed to the handler */
    size_t queued;                       /* bytes of answers not yet written */
    uint64_t frame_bytes, payload_bytes; /* received, for flood checks */

    struct piece *out;
    size_t nout, out_cap, out_head; /* pieces; first unwritten */
    size_t out_off;                 /* bytes of out[out_head] written */
    size_t out_bytes;               /* unwritten */
    char *obuf;
    size_t obuf_len, obuf_cap;

    enum dl_kind dl;
    char peer[48];
    TAILQ_ENTRY(h2conn) link;
};

struct corral_h2 {
    struct corral_h2_env env;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    TAILQ_HEAD(, h2conn) conns;
    struct stream_list gone; /* waiting streams of gone clients */
    struct event *reap_ev;   /* fires on_close of gone streams */
    bool draining;
    /* client_timeout as a libevent common timeout: every connection's
     * deadline is the same length, so adding one is a queue append. */
    const struct timeval *timeout_tv;
    char rbuf[READ_CHUNK]; /* shared: mem_recv consumes all it is given */
    /* Scratch for converting a head into header pairs; nghttp2 copies
     * them when a response is submitted. */
    nghttp2_nv *nv;
    size_t nv_cap;
    char *names;
    size_t names_cap;
};

static void run(struct h2conn *hc);
static void conn_close(struct h2conn *hc);

static struct corral_server_stats *
stats_of(struct corral_h2 *h2)
{
    return h2->env.stats;
}

/* ---- streams ------------------------------------------------------------ */

static void
stream_free(struct stream *st)
{
    if (st->qbytes) {
        if (st->conn)
            st->conn->queued -= st->qbytes;
        stats_of(st->h2)->queued_bytes -= st->qbytes;
    }
    if (st->hold)
        corral_value_unref(st->hold);
    free(st->owned_body);
    free(st->own);
    free(st);
}

/* Takes st out of its connection's lists. */
static void
stream_unlink(struct stream *st)
{
    struct h2conn *hc = st->conn;
    TAILQ_REMOVE(&hc->streams, st, link);
    if (st->state == ST_PARKED)
        TAILQ_REMOVE(&hc->parked, st, plink);
    if (st->state == ST_WAITING)
        hc->waiting--;
    if (st->qbytes) {
        hc->queued -= st->qbytes;
        stats_of(st->h2)->queued_bytes -= st->qbytes;
        st->qbytes = 0;
    }
    if (hc->ng)
        nghttp2_session_set_stream_user_data(hc->ng, st->id, NULL);
    st->conn = NULL;
}

/* st's stream or connection went away: a request the handler holds learns
 * it through on_close, or is kept until answered; any other is freed. */
static void
stream_lost(struct stream *st)
{
    struct corral_h2 *h2 = st->h2;
    enum stream_state was = st->state;
    stream_unlink(st);
    if (was != ST_WAITING) {
        stream_free(st);
        return;
    }
    if (st->on_close) {
        corral_request_close_cb *cb = st->on_close;
        st->on_close = NULL;
        cb(&st->req, st->on_close_arg);
        stream_free(st);
        return;
    }
    st->state = ST_GONE;
    TAILQ_INSERT_TAIL(&h2->gone, st, link);
}

static void
on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct corral_h2 *h2 = arg;
    struct stream *st, *next;
    (void)fd;
    (void)what;
    for (st = TAILQ_FIRST(&h2->gone); st; st = next) {
        next = TAILQ_NEXT(st, link);
        if (!st->on_close)
            continue;
        corral_request_close_cb *cb = st->on_close;
        TAILQ_REMOVE(&h2->gone, st, link);
        cb(&st->req, st->on_close_arg);
        stream_free(st);
    }
}

/* Appends n bytes to the stream's request strings; returns their offset. */
static size_t
own_add(struct stream *st, const uint8_t *p, size_t n)
{
    if (st->own_cap - st->own_len < n + 2) {
        size_t cap = st->own_cap ? st->own_cap : 128;
        while (cap - st->own_len < n + 2)
            cap *= 2;
        st->own = xrealloc(st->own, cap);
        st->own_cap = cap;
    }
    size_t off = st->own_len;
    memcpy(st->own + off, p, n);
    st->own_len += n;
    return off;
}

/* ---- output --------------------------------------------------------------
 */

static bool
out_full(const struct h2conn *hc)
{
    return hc->out_bytes >= OUT_HIGH || hc->nout + 3 > OUT_PIECES_MAX;
}

static struct piece *
out_push(struct h2conn *hc)
{
    if (hc->nout == hc->out_cap) {
        hc->out_cap = hc->out_cap ? hc->out_cap * 2 : 16;
        hc->out = xrealloc(hc->out, hc->out_cap * sizeof *hc->out);
    }
    return &hc->out[hc->nout++];
}

static void
out_copy(struct h2conn *hc, const void *p, size_t n)
{
    if (hc->obuf_cap - hc->obuf_len < n) {
        size_t cap = hc->obuf_cap ? hc->obuf_cap : 4096;
        while (cap - hc->obuf_len < n)
            cap *= 2;
        hc->obuf = xrealloc(hc->obuf, cap);
        hc->obuf_cap = cap;
    }
    struct piece *last =
        hc->nout > hc->out_head ? &hc->out[hc->nout - 1] : NULL;
    if (last && !last->ptr && last->off + last->len == hc->obuf_len)
        last->len += n;
    else
        *out_push(hc) = (struct piece){NULL, hc->obuf_len, n, NULL};
    memcpy(hc->obuf + hc->obuf_len, p, n);
    hc->obuf_len += n;
    hc->out_bytes += n;
}

static void
out_borrow(struct h2conn *hc, const char *p, size_t n, struct corral_value *v)
{
    *out_push(hc) = (struct piece){p, 0, n, corral_value_ref(v)};
    hc->out_bytes += n;
}

/* Drops w written bytes from the front of the output. */
static void
out_advance(struct h2conn *hc, size_t w)
{
    hc->out_bytes -= w;
    while (w && hc->out_head < hc->nout) {
        struct piece *pc = &hc->out[hc->out_head];
        size_t rem = pc->len - hc->out_off;
        if (w < rem) {
            hc->out_off += w;
            return;
        }
        w -= rem;
        hc->out_off = 0;
        if (pc->hold)
            corral_value_unref(pc->hold);
        hc->out_head++;
    }
}

static void
out_reset(struct h2conn *hc)
{
    for (size_t i = hc->out_head; i < hc->nout; i++)
        if (hc->out[i].hold)
            corral_value_unref(hc->out[i].hold);
    hc->nout = hc->out_head = hc->out_off = hc->out_bytes = 0;
    hc->obuf_len = 0;
}

/* Writes queued output. Returns 0 when all is written, 1 when the socket
 * is full, -1 when it is broken. */
static int
out_flush(struct h2conn *hc)
{
    while (hc->out_head < hc->nout) {
        struct iovec iov[IOV_BATCH];
        int n = 0;
        size_t skip = hc->out_off;
        for (size_t i = hc->out_head; i < hc->nout && n < IOV_BATCH; i++) {
            const struct piece *pc = &hc->out[i];
            const char *b = pc->ptr ? pc->ptr : hc->obuf + pc->off;
            iov[n].iov_base = (void *)(b + skip);
            iov[n].iov_len = pc->len - skip;
            skip = 0;
            n++;
        }
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = hc->ssl ? corral_tls_writev(hc->ssl, iov, n)
                            : sendmsg(hc->fd, &m, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 1;
            return -1;
        }
        if (w > 0)
            hc->progress = true;
        out_advance(hc, (size_t)w);
    }
    out_reset(hc);
    return 0;
}

/* ---- nghttp2 callbacks ---------------------------------------------------
 */

static ssize_t
send_cb(nghttp2_session *ng, const uint8_t *data, size_t len, int flags,
        void *ud)
{
    struct h2conn *hc = ud;
    (void)ng;
    (void)flags;
    if (out_full(hc))
        return NGHTTP2_ERR_WOULDBLOCK;
    out_copy(hc, data, len);
    return (ssize_t)len;
}

/* A DATA frame of a body: its header copied, its payload borrowed when a
 * value holds it (copied otherwise: a simple answer's body dies with its
 * stream, which may close before the bytes are written). */
static int
send_data_cb(nghttp2_session *ng, nghttp2_frame *frame, const uint8_t *hd,
             size_t len, nghttp2_data_source *src, void *ud)
{
    struct h2conn *hc = ud;
    struct stream *st = src->ptr;
    (void)ng;
    if (out_full(hc))
        return NGHTTP2_ERR_WOULDBLOCK;
    out_copy(hc, hd, 9);
    if (frame->data.padlen > 0) { /* never asked for: no padding callback */
        uint8_t pad = (uint8_t)(frame->data.padlen - 1);
        out_copy(hc, &pad, 1);
    }
    if (len) {
        const char *p = st->body + st->body_off;
        if (st->hold)
            out_borrow(hc, p, len, st->hold);
        else
            out_copy(hc, p, len);
    }
    for (size_t i = 1; i < frame->data.padlen; i++)
        out_copy(hc, "", 1);
    st->body_off += len;
    return 0;
}

static ssize_t
read_body_cb(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len,
             uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct stream *st = src->ptr;
    (void)ng;
    (void)id;
    (void)buf;
    (void)ud;
    size_t rem = st->body_len - st->body_off;
    size_t n = rem < len ? rem : len;
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == rem)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int
on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *ud)
{
    struct h2conn *hc = ud;
    (void)ng;
    hc->frame_bytes += 9 + hd->length;
    if (hd->type == NGHTTP2_DATA || hd->type == NGHTTP2_HEADERS ||
        hd->type == NGHTTP2_CONTINUATION)
        return 0;
    if (hc->frame_bytes / 8 > hc->payload_bytes + FLOOD_SLACK) {
        hc->calm = true;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int
on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    struct h2conn *hc = ud;
    if (frame->hd.type != NGHTTP2_HEADERS ||
        frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct stream *st = xcalloc(1, sizeof *st);
    st->conn = hc;
    st->h2 = hc->h2;
    st->id = frame->hd.stream_id;
    st->state = ST_HEADERS;
    st->req.method = CORRAL_METHOD_OTHER;
    st->req.proto = hc->proto;
    TAILQ_INSERT_TAIL(&hc->streams, st, link);
    nghttp2_session_set_stream_user_data(ng, st->id, st);
    return 0;
}

static bool
name_is(const uint8_t *name, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n == l && memcmp(name, lit, l) == 0;
}

static enum corral_method
method_of(const uint8_t *v, size_t n)
{
    if (name_is(v, n, "GET"))
        return CORRAL_METHOD_GET;
    if (name_is(v, n, "HEAD"))
        return CORRAL_METHOD_HEAD;
    if (name_is(v, n, "POST"))
        return CORRAL_METHOD_POST;
    if (name_is(v, n, "DELETE"))
        return CORRAL_METHOD_DELETE;
    return CORRAL_METHOD_OTHER;
}

/* Field names arrive lower-case (nghttp2 refuses others). The fields the
 * handler reads are collected as HTTP/1.1's are, with the same refusals:
 * a second Authorization is a 400. */
static int
on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
          size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags,
          void *ud)
{
    struct h2conn *hc = ud;
    (void)flags;
    hc->payload_bytes += nlen + vlen;
    struct stream *st =
        nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (!st || st->state != ST_HEADERS)
        return 0;
    st->hbytes += nlen + vlen + 32;
    if (st->hbytes > hc->h2->env.max_header * BOMB_FACTOR) {
        hc->calm = true;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (st->hbytes > hc->h2->env.max_header && !st->err)
        st->err = 431;
    if (st->err)
        return 0;
    if (name_is(name, nlen, ":method")) {
        st->req.method = method_of(value, vlen);
    } else if (name_is(name, nlen, ":path")) {
        st->path_off = own_add(st, value, vlen);
        st->path_len = vlen;
        st->has_path = true;
    } else if (name_is(name, nlen, "if-none-match")) {
        if (st->has_inm) { /* one list, split over lines (RFC 9110 5.3) */
            own_add(st, (const uint8_t *)", ", 2);
            own_add(st, value, vlen);
            st->inm_len += 2 + vlen;
            return 0;
        }
        st->inm_off = own_add(st, value, vlen);
        st->inm_len = vlen;
        st->has_inm = true;
    } else if (name_is(name, nlen, "authorization")) {
        if (st->has_auth) { /* which one would the admin check? */
            st->err = 400;
            return 0;
        }
        st->auth_off = own_add(st, value, vlen);
        st->auth_len = vlen;
        st->has_auth = true;
    } else if (name_is(name, nlen, "cache-control")) {
        if (fmt_names_directive((const char *)value, vlen, "only-if-cached",
                                14))
            st->req.only_if_cached = true;
    } else if (name_is(name, nlen, "accept-encoding")) {
        corral_accept_add(&st->req.accept, (const char *)value, vlen);
    }
    return 0;
}

static bool
may_take(struct h2conn *hc)
{
    struct corral_h2 *h2 = hc->h2;
    bool over = hc->queued >= h2->env.max_client_queued ||
                stats_of(h2)->queued_bytes >= h2->env.max_queued;
    if (over && !hc->paused)
        stats_of(h2)->paused++;
    hc->paused = over;
    return !over;
}

/* The stream's strings into the request, as HTTP/1.1's: the target split,
 * its dot segments resolved; the copies go after the raw ones. Returns 0,
 * or a status to refuse the request with. */
static int
build_request(struct stream *st)
{
    const char *path = "/", *query = "";
    size_t plen = 1, qlen = 0;
    if (st->has_path &&
        !corral_target_split(st->own + st->path_off, st->path_len, &path, &plen,
                             &query, &qlen))
        return 400;
    if (plen == 0) {
        path = "/";
        plen = 1;
    }
    size_t poff = st->has_path ? (size_t)(path - st->own) : 0;
    size_t qoff = st->has_path ? (size_t)(query - st->own) : 0;
    size_t base = st->own_len;
    own_add(st, (const uint8_t *)"", 0);
    /* Room for the resolved path and the query; own may move. */
    size_t need = plen + qlen;
    if (st->own_cap - base < need) {
        size_t cap = st->own_cap ? st->own_cap : 128;
        while (cap - base < need)
            cap *= 2;
        st->own = xrealloc(st->own, cap);
        st->own_cap = cap;
    }
    const char *p = st->has_path ? st->own + poff : path;
    char *o = st->own + base;
    if (p[0] == '/') {
        long n = corral_target_resolve_dots(o, p, plen);
        if (n < 0)
            return 400;
        plen = (size_t)n;
    } else {
        memcpy(o, p, plen); /* "*" */
    }
    if (qlen)
        memcpy(o + plen, st->own + qoff, qlen);
    st->own_len = base + plen + qlen;
    st->req.path = o;
    st->req.path_len = plen;
    st->req.query = qlen ? o + plen : "";
    st->req.query_len = qlen;
    if (st->has_inm) {
        st->req.if_none_match = st->own + st->inm_off;
        st->req.inm_len = st->inm_len;
    }
    if (st->has_auth) {
        st->req.authorization = st->own + st->auth_off;
        st->req.auth_len = st->auth_len;
    }
    return 0;
}

/* Hands a complete request to the handler, or refuses it. */
static void
dispatch(struct stream *st)
{
    struct h2conn *hc = st->conn;
    struct corral_h2 *h2 = hc->h2;
    st->req.upstream_ms = -1;
    st->req.note = NULL;
    if (h2->env.access_cb) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        st->req.start_us =
            (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
        st->req.peer = hc->peer;
    }
    int err = st->err ? st->err : build_request(st);
    st->state = ST_WAITING;
    hc->waiting++;
    if (err) {
        static const char bad[] = "{\"error\":\"bad request\"}";
        static const char big[] =
            "{\"error\":\"request header fields too large\"}";
        st->req.path = st->req.query = "";
        st->req.path_len = st->req.query_len = 0;
        st->req.if_none_match = st->req.authorization = NULL;
        stats_of(h2)->bad_requests++;
        corral_h2_respond_simple(&st->req, err, "application/json", NULL,
                                 err == 431 ? big : bad,
                                 err == 431 ? sizeof big - 1 : sizeof bad - 1);
        return;
    }
    stats_of(h2)->requests++;
    stats_of(h2)->proto_requests[st->req.proto]++;
    hc->asked = true;
    h2->env.cb(&st->req, h2->env.arg);
}

static void
dispatch_parked(struct h2conn *hc)
{
    struct stream *st;
    while ((st = TAILQ_FIRST(&hc->parked)) && !hc->closing && may_take(hc)) {
        TAILQ_REMOVE(&hc->parked, st, plink);
        dispatch(st);
    }
}

static int
on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    struct h2conn *hc = ud;
    if (frame->hd.type != NGHTTP2_HEADERS ||
        frame->headers.cat != NGHTTP2_HCAT_REQUEST ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_HEADERS))
        return 0;
    struct stream *st =
        nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (!st || st->state != ST_HEADERS)
        return 0;
    if (!TAILQ_EMPTY(&hc->parked) || hc->closing || !may_take(hc)) {
        st->state = ST_PARKED;
        TAILQ_INSERT_TAIL(&hc->parked, st, plink);
        return 0;
    }
    dispatch(st);
    return 0;
}

static int
on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id,
              const uint8_t *data, size_t len, void *ud)
{
    struct h2conn *hc = ud;
    (void)ng;
    (void)flags;
    (void)id;
    (void)data;
    hc->payload_bytes += len; /* request bodies are read and dropped */
    return 0;
}

static int
on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    (void)ud;
    (void)code;
    struct stream *st = nghttp2_session_get_stream_user_data(ng, id);
    if (st)
        stream_lost(st);
    return 0;
}

/* ---- answers -------------------------------------------------------------
 */

static nghttp2_nv *
nv_slot(struct corral_h2 *h2, size_t i)
{
    if (i == h2->nv_cap) {
        h2->nv_cap = h2->nv_cap ? h2->nv_cap * 2 : 32;
        h2->nv = xrealloc(h2->nv, h2->nv_cap * sizeof *h2->nv);
    }
    return &h2->nv[i];
}

static void
nv_set(nghttp2_nv *nv, const char *name, size_t nlen, const char *value,
       size_t vlen)
{
    *nv = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, nlen, vlen,
                       NGHTTP2_NV_FLAG_NONE};
}

/* Fields HTTP/2 forbids (RFC 9113 8.2.2), and Date, which goes last. */
static bool
dropped_field(const char *n, size_t len)
{
    static const char *const names[] = {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "proxy-connection",
        "upgrade",
        "te",
        "date",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == len && memcmp(names[i], n, len) == 0)
            return true;
    return false;
}

/* Appends the field lines of p[0..n) ("Name: value\r\n"...) to h2->nv from
 * index i, names lower-cased into h2->names at *noff. Returns the new i. */
static size_t
add_lines(struct corral_h2 *h2, size_t i, const char *p, size_t n, size_t *noff)
{
    const char *end = p + n;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon && colon > p) {
            size_t nl = (size_t)(colon - p);
            char *name = h2->names + *noff;
            for (size_t k = 0; k < nl; k++)
                name[k] = (char)(p[k] >= 'A' && p[k] <= 'Z' ? p[k] + 32 : p[k]);
            const char *v = colon + 1;
            const char *ve = le;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v &&
                   (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (!dropped_field(name, nl)) {
                *noff += nl;
                nv_set(nv_slot(h2, i++), name, nl, v, (size_t)(ve - v));
            }
        }
        p = eol ? eol + 1 : end;
    }
    return i;
}

/* Submits st's answer: head is an HTTP/1 head (status line and field
 * lines), extra more field lines. */
static void
stream_answer(struct stream *st, int status, const char *head, size_t head_len,
              const char *extra, size_t extra_len, size_t body_len)
{
    struct h2conn *hc = st->conn;
    struct corral_h2 *h2 = st->h2;
    size_t need = head_len + extra_len;
    if (need > h2->names_cap) {
        h2->names_cap = need < 1024 ? 1024 : need;
        h2->names = xrealloc(h2->names, h2->names_cap);
    }
    char code[4] = {(char)('0' + status / 100 % 10),
                    (char)('0' + status / 10 % 10), (char)('0' + status % 10),
                    0};
    size_t i = 0, noff = 0;
    nv_set(nv_slot(h2, i++), ":status", 7, code, 3);
    const char *first = memchr(head, '\n', head_len);
    if (first) {
        first++;
        i = add_lines(h2, i, first, head_len - (size_t)(first - head), &noff);
    }
    i = add_lines(h2, i, extra, extra_len, &noff);
    const char *date = h2->env.date(h2->env.date_arg); /* "Date: ...\r\n" */
    nv_set(nv_slot(h2, i++), "date", 4, date + 6, strlen(date) - 8);

    st->body_len = body_len;
    st->body_off = 0;
    st->qbytes = need + body_len;
    hc->queued += st->qbytes;
    stats_of(h2)->queued_bytes += st->qbytes;
    st->state = ST_ANSWERED;
    hc->waiting--;
    nghttp2_data_provider prd = {.source.ptr = st,
                                 .read_callback = read_body_cb};
    int rv = nghttp2_submit_response(hc->ng, st->id, h2->nv, i,
                                     body_len ? &prd : NULL);
    if (rv != 0) /* the stream is closing: let it go */
        nghttp2_submit_rst_stream(hc->ng, NGHTTP2_FLAG_NONE, st->id,
                                  NGHTTP2_INTERNAL_ERROR);
    if (!hc->in_run)
        event_active(hc->kev, EV_WRITE, 1);
}

/* The head's status: "HTTP/1.1 200 ..." */
static int
head_status(const char *head, size_t len, int fallback)
{
    if (len < 12 || head[8] != ' ')
        return fallback;
    int s = 0;
    for (int k = 9; k < 12; k++) {
        if (head[k] < '0' || head[k] > '9')
            return fallback;
        s = s * 10 + (head[k] - '0');
    }
    return s;
}

/* For the answers the request is not waiting for any more: 0 to go on. */
static int
answerable(struct stream *st)
{
    if (st->state == ST_GONE) {
        TAILQ_REMOVE(&st->h2->gone, st, link);
        stream_free(st);
        return -1;
    }
    return st->state == ST_WAITING ? 0 : -1;
}

void
corral_h2_respond(struct corral_request *req, const struct corral_response *r)
{
    struct stream *st = (struct stream *)(void *)req;
    if (answerable(st) < 0)
        return;
    struct corral_h2 *h2 = st->h2;
    bool head = req->method == CORRAL_METHOD_HEAD;
    int status = head_status(r->head, r->head_len, r->status);
    bool no_body = head || status == 304 || status == 204 || status < 200;
    size_t blen = no_body ? 0 : r->body_len;
    if (r->hold && blen) /* else static storage, as server.h allows */
        st->hold = corral_value_ref(r->hold);
    st->body = r->body;
    if (h2->env.access_cb)
        h2->env.access_cb(req, r->status, blen, h2->env.access_arg);
    stream_answer(st, status, r->head, r->head_len, r->extra, r->extra_len,
                  blen);
}

void
corral_h2_respond_simple(struct corral_request *req, int status,
                         const char *content_type, const char *extra_headers,
                         const char *body, size_t len)
{
    struct stream *st = (struct stream *)(void *)req;
    if (answerable(st) < 0)
        return;
    struct corral_h2 *h2 = st->h2;
    if (status < 100 || status > 999)
        status = 500;
    bool no_body = status < 200 || status == 204 || status == 304;
    if (no_body || !body)
        len = 0;
    size_t blen = req->method == CORRAL_METHOD_HEAD ? 0 : len;
    size_t ctlen = content_type ? strlen(content_type) : 0;
    size_t xlen = extra_headers ? strlen(extra_headers) : 0;
    /* An HTTP/1 head, converted as any other. */
    char *h = xmalloc(16 + 14 + ctlen + 2 + 16 + 20 + 2 + xlen);
    char *p = FMT_PUT(h, "HTTP/1.1 000 -\r\n");
    p = fmt_simple_fields(p, content_type, ctlen, no_body, len, extra_headers,
                          xlen);
    if (blen) {
        st->owned_body = xmalloc(blen);
        memcpy(st->owned_body, body, blen);
    }
    st->body = st->owned_body;
    if (h2->env.access_cb)
        h2->env.access_cb(req, status, blen, h2->env.access_arg);
    stream_answer(st, status, h, (size_t)(p - h), NULL, 0, blen);
    free(h);
}

void
corral_h2_on_close(struct corral_request *req, corral_request_close_cb *cb,
                   void *arg)
{
    struct stream *st = (struct stream *)(void *)req;
    if (st->state != ST_WAITING && st->state != ST_GONE)
        return;
    st->on_close = cb;
    st->on_close_arg = arg;
    /* Already gone: tell it from the loop, never from inside this call. */
    if (cb && st->state == ST_GONE)
        event_active(st->h2->reap_ev, EV_TIMEOUT, 1);
}

/* ---- connections ---------------------------------------------------------
 */

static void
want(struct event *ev, bool *added, bool on)
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
dl_set(struct h2conn *hc, enum dl_kind kind)
{
    hc->dl = kind;
    hc->progress = false;
    hc->asked = false;
    if (kind == DL_NONE) {
        event_del(hc->tev);
        return;
    }
    event_add(hc->tev, hc->h2->timeout_tv);
}

/* Ends the session for abuse or a broken peer: a GOAWAY if nghttp2 has not
 * sent one, then close once it is written. */
static void
conn_fail(struct h2conn *hc, int rv)
{
    if (hc->closing)
        return;
    hc->closing = true;
    stats_of(hc->h2)->h2_goaways++;
    if (rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC)
        return;
    uint32_t code = hc->calm || rv == NGHTTP2_ERR_FLOODED
                        ? NGHTTP2_ENHANCE_YOUR_CALM
                        : NGHTTP2_PROTOCOL_ERROR;
    if (rv != NGHTTP2_ERR_FLOODED &&
        nghttp2_session_terminate_session(hc->ng, code) == 0)
        return;
    /* nghttp2 sends nothing more on a flooded session: the GOAWAY goes
     * after what is queued, by hand. */
    int32_t last = nghttp2_session_get_last_proc_stream_id(hc->ng);
    uint8_t f[17] = {0, 0, 8, NGHTTP2_GOAWAY, 0, 0, 0, 0, 0};
    for (int k = 0; k < 4; k++) {
        f[9 + k] = (uint8_t)((uint32_t)last >> (24 - 8 * k));
        f[13 + k] = (uint8_t)(code >> (24 - 8 * k));
    }
    out_copy(hc, f, sizeof f);
}

/* Everything is written, the last a GOAWAY: half-close and discard what
 * the client still sends until it closes, so the GOAWAY is not lost to
 * the reset a close with unread input makes. The streams go now. */
static void
conn_linger(struct h2conn *hc)
{
    struct stream *st;
    hc->lingering = true;
    while ((st = TAILQ_FIRST(&hc->streams)))
        stream_lost(st);
    if (hc->ssl)
        corral_tls_shutdown(hc->ssl);
    if (shutdown(hc->fd, SHUT_WR) < 0) {
        conn_close(hc);
        return;
    }
    want(hc->wev, &hc->writing, false);
    want(hc->rev, &hc->reading, true);
    struct timeval tv = {LINGER_MS / 1000, 0};
    if (hc->h2->env.timeout_ms < LINGER_MS)
        tv = (struct timeval){(time_t)(hc->h2->env.timeout_ms / 1000),
                              (suseconds_t)(hc->h2->env.timeout_ms % 1000) *
                                  1000};
    event_add(hc->tev, &tv);
}

/* Settles events and the deadline after a round of work; closes the
 * connection when nghttp2 is done with it. */
static void
update(struct h2conn *hc)
{
    nghttp2_session *ng = hc->ng;
    bool pending = hc->out_head < hc->nout;
    if (!pending && (hc->closing || (!nghttp2_session_want_read(ng) &&
                                     !nghttp2_session_want_write(ng)))) {
        conn_linger(hc);
        return;
    }
    want(hc->rev, &hc->reading, hc->closing || nghttp2_session_want_read(ng));
    /* Bytes TLS already decrypted: the socket will not say so. */
    if (hc->reading && hc->ssl && corral_tls_pending(hc->ssl))
        event_active(hc->rev, EV_READ, 1);
    want(hc->wev, &hc->writing, pending);
    enum dl_kind kind = pending || hc->queued ? DL_WRITE
                        : hc->waiting         ? DL_NONE
                                              : DL_IDLE;
    /* A hit answered in the turn its request came leaves the connection
     * idle as it was: the request still restarts the idle time. */
    if (kind != hc->dl || (kind == DL_WRITE && hc->progress) ||
        (kind == DL_IDLE && hc->asked))
        dl_set(hc, kind);
}

static void
run(struct h2conn *hc)
{
    if (hc->in_run || hc->lingering)
        return;
    hc->in_run = true;
    for (;;) {
        dispatch_parked(hc);
        int rv = nghttp2_session_send(hc->ng);
        if (rv != 0 && !hc->closing) {
            conn_fail(hc, rv);
            rv = nghttp2_session_send(hc->ng);
        }
        int f = out_flush(hc);
        if (f < 0) {
            hc->in_run = false;
            conn_close(hc);
            return;
        }
        if (f > 0 || rv != 0)
            break;
        /* Written answers may have freed the budget held streams wait on. */
        bool held = !hc->closing && !TAILQ_EMPTY(&hc->parked) && may_take(hc);
        if (!nghttp2_session_want_write(hc->ng) && !held)
            break;
    }
    hc->in_run = false;
    update(hc);
}

static void
on_read(evutil_socket_t fd, short what, void *arg)
{
    struct h2conn *hc = arg;
    struct corral_h2 *h2 = hc->h2;
    (void)what;
    ssize_t n = hc->ssl && !hc->lingering
                    ? corral_tls_read(hc->ssl, h2->rbuf, sizeof h2->rbuf)
                    : read(fd, h2->rbuf, sizeof h2->rbuf);
    if (n <= 0) {
        if (n < 0 &&
            (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        conn_close(hc);
        return;
    }
    if (hc->lingering || hc->closing) { /* a client blocked in its writes
                                            would never read our GOAWAY */
        hc->lingered += (size_t)n;
        if (hc->lingered > LINGER_MAX_BYTES)
            conn_close(hc);
        return;
    }
    hc->in_run = true; /* answers made while reading go out below */
    ssize_t rv =
        nghttp2_session_mem_recv(hc->ng, (const uint8_t *)h2->rbuf, (size_t)n);
    hc->in_run = false;
    if (rv < 0)
        conn_fail(hc, (int)rv);
    run(hc);
}

static void
on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    run(arg);
}

static void
on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct h2conn *hc = arg;
    (void)fd;
    (void)what;
    hc->dl = DL_NONE;
    if (hc->lingering) {
        conn_close(hc);
        return;
    }
    stats_of(hc->h2)->timeouts++;
    if (hc->closing || hc->out_head < hc->nout) { /* stuck: just go */
        conn_close(hc);
        return;
    }
    /* Idle, or streams the client does not let us send: say goodbye. */
    hc->closing = true;
    nghttp2_session_terminate_session(hc->ng, NGHTTP2_NO_ERROR);
    run(hc);
}

static void
conn_close(struct h2conn *hc)
{
    struct corral_h2 *h2 = hc->h2;
    struct stream *st;
    TAILQ_REMOVE(&h2->conns, hc, link);
    event_free(hc->rev);
    event_free(hc->wev);
    event_free(hc->tev);
    event_free(hc->kev);
    corral_tls_close(hc->ssl);
    close(hc->fd);
    nghttp2_session *ng = hc->ng;
    hc->ng = NULL; /* on_close callbacks below cannot reach nghttp2 */
    while ((st = TAILQ_FIRST(&hc->streams)))
        stream_lost(st);
    nghttp2_session_del(ng);
    out_reset(hc);
    free(hc->out);
    free(hc->obuf);
    free(hc);
    h2->env.closed(h2->env.closed_arg);
}

static void
on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    run(arg);
}

void
corral_h2_adopt(struct corral_h2 *h2, int fd, SSL *ssl, const char *in,
                size_t len, const char *peer)
{
    struct h2conn *hc = xcalloc(1, sizeof *hc);
    hc->h2 = h2;
    hc->fd = fd;
    hc->ssl = ssl;
    hc->proto = ssl ? CORRAL_PROTO_H2 : CORRAL_PROTO_H2C;
    TAILQ_INIT(&hc->streams);
    TAILQ_INIT(&hc->parked);
    snprintf(hc->peer, sizeof hc->peer, "%s", peer ? peer : "-");
    struct event_base *base = h2->env.base;
    hc->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_read, hc);
    hc->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, on_write, hc);
    hc->tev = event_new(base, -1, 0, on_timeout, hc);
    hc->kev = event_new(base, -1, 0, on_kick, hc);
    if (!hc->rev || !hc->wev || !hc->tev || !hc->kev ||
        nghttp2_session_server_new2(&hc->ng, h2->cbs, hc, h2->opt) != 0) {
        if (hc->rev)
            event_free(hc->rev);
        if (hc->wev)
            event_free(hc->wev);
        if (hc->tev)
            event_free(hc->tev);
        if (hc->kev)
            event_free(hc->kev);
        free(hc);
        corral_tls_close(ssl);
        close(fd);
        h2->env.closed(h2->env.closed_arg);
        return;
    }
    TAILQ_INSERT_TAIL(&h2->conns, hc, link);
    stats_of(h2)->proto_connections[hc->proto]++;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, h2->env.max_streams},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)h2->env.max_header},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    nghttp2_submit_settings(hc->ng, NGHTTP2_FLAG_NONE, iv,
                            sizeof iv / sizeof iv[0]);
    hc->in_run = true;
    ssize_t rv =
        len ? nghttp2_session_mem_recv(hc->ng, (const uint8_t *)in, len) : 0;
    hc->in_run = false;
    if (rv < 0)
        conn_fail(hc, (int)rv);
    else if (h2->draining) /* it came in just before the drain */
        nghttp2_submit_goaway(hc->ng, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(hc->ng),
                              NGHTTP2_NO_ERROR, NULL, 0);
    run(hc);
}

/* ---- the front -----------------------------------------------------------
 */

struct corral_h2 *
corral_h2_new(const struct corral_h2_env *env, char *err, size_t errlen)
{
    struct corral_h2 *h2 = calloc(1, sizeof *h2);
    if (!h2) {
        snprintf(err, errlen, "h2: out of memory");
        return NULL;
    }
    h2->env = *env;
    if (h2->env.max_streams == 0)
        h2->env.max_streams = 128;
    TAILQ_INIT(&h2->conns);
    TAILQ_INIT(&h2->gone);
    uint64_t ms = h2->env.timeout_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    h2->timeout_tv = event_base_init_common_timeout(env->base, &tv);
    h2->reap_ev = event_new(env->base, -1, 0, on_reap, h2);
    if (!h2->reap_ev || !h2->timeout_tv ||
        nghttp2_session_callbacks_new(&h2->cbs) != 0 ||
        nghttp2_option_new(&h2->opt) != 0) {
        snprintf(err, errlen, "h2: out of memory");
        corral_h2_free(h2);
        return NULL;
    }
    nghttp2_session_callbacks *cb = h2->cbs;
    nghttp2_session_callbacks_set_send_callback(cb, send_cb);
    nghttp2_session_callbacks_set_send_data_callback(cb, send_data_cb);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb,
                                                            on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb,
                                                              on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option *o = h2->opt;
    nghttp2_option_set_no_closed_streams(o, 1);
    nghttp2_option_set_max_outbound_ack(o, MAX_OUTBOUND_ACK);
    nghttp2_option_set_max_settings(o, MAX_SETTINGS);
    nghttp2_option_set_stream_reset_rate_limit(o, RESET_BURST, RESET_RATE);
    nghttp2_option_set_max_continuations(o, MAX_CONTINUATIONS);
    return h2;
}

void
corral_h2_drain(struct corral_h2 *h2)
{
    struct h2conn *hc;
    h2->draining = true;
    TAILQ_FOREACH(hc, &h2->conns, link)
    {
        nghttp2_submit_goaway(hc->ng, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(hc->ng),
                              NGHTTP2_NO_ERROR, NULL, 0);
        event_active(hc->kev, EV_WRITE, 1);
    }
}

void
corral_h2_drain_expire(struct corral_h2 *h2, unsigned retry_after_s)
{
    static const char body[] = "{\"error\":\"shutting down\"}";
    char extra[40];
    struct h2conn *hc;
    struct stream *st;
    snprintf(extra, sizeof extra, "Retry-After: %u\r\n", retry_after_s);
    TAILQ_FOREACH(hc, &h2->conns, link)
    {
        TAILQ_FOREACH(st, &hc->streams, link)
        {
            if (st->state != ST_WAITING || st->on_close == NULL)
                continue;
            corral_request_close_cb *cb = st->on_close;
            st->on_close = NULL;
            cb(&st->req, st->on_close_arg);
            corral_h2_respond_simple(&st->req, 503, "application/json", extra,
                                     body, sizeof body - 1);
        }
    }
}

void
corral_h2_free(struct corral_h2 *h2)
{
    struct h2conn *hc;
    struct stream *st;
    if (!h2)
        return;
    while ((hc = TAILQ_FIRST(&h2->conns)))
        conn_close(hc);
    while ((st = TAILQ_FIRST(&h2->gone))) {
        TAILQ_REMOVE(&h2->gone, st, link);
        stream_free(st);
    }
    if (h2->reap_ev)
        event_free(h2->reap_ev);
    if (h2->cbs)
        nghttp2_session_callbacks_del(h2->cbs);
    if (h2->opt)
        nghttp2_option_del(h2->opt);
    free(h2->nv);
    free(h2->names);
    free(h2);
}
