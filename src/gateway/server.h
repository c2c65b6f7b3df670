/* server.h — the client-facing front end: listener, connections, HTTP/1.1
 * parsing, keep-alive, pipelining, limits and writing answers; a
 * connection that opens with the HTTP/2 preface is handed to h2.c, whose
 * streams are requests of this same shape.
 * It knows nothing of routes or caching: each parsed request goes to one
 * handler callback, and the answer is written with one writev of [head,
 * small copied part, body], body and head borrowed. One server per
 * event_base; never shared across threads. */
#ifndef CORRAL_SERVER_H
#define CORRAL_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "negotiate.h"

struct event_base;
struct corral_value;
struct corral_server; /* opaque */
struct corral_request;
struct corral_tls;

/* An answer is queued for req: status, and the body bytes it carries. */
typedef void corral_access_cb(const struct corral_request *req, int status,
                              size_t body_bytes, void *arg);

struct corral_server_options {
    const char *host;        /* IPv4/IPv6 literal or a name ("localhost");
                                NULL or "" = all interfaces */
    uint16_t port;           /* 0 = any; read it with corral_server_port() */
    size_t max_header_bytes; /* request line + headers; 0 = 8 KB; over: 431 */
    uint64_t client_timeout_ms; /* idle, slow or stuck client; 0 = 30 s */
    unsigned max_clients;       /* open connections; 0 = 10000; over: 503 */
    int backlog;                /* listen(2) backlog; 0 = 511 */
    bool reuse_port;            /* SO_REUSEPORT, for one listener per worker */
    bool has_listen_fd;         /* serve listen_fd instead of binding */
    /* At max_clients, close the connection the server has waited on
     * longest (lingering, idle, a request still arriving, an answer left
     * unread) to take the new one instead of refusing it: for a port that
     * must stay answerable, such as the admin's. */
    bool evict_idle;
    int listen_fd; /* a listening socket the server adopts */
    /* HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS: streams one connection may
     * have open; 0 = 128. */
    unsigned max_streams;
    /* Answers queued and not yet written hold their bytes (and the values
     * they borrow). A client with requests in flight is not read while its
     * own queue holds max_client_queued_bytes (0 = 1 MB) or all clients'
     * queues hold max_queued_bytes (0 = 64 MB); a client with nothing in
     * flight may always send one request. Slow readers then meet
     * client_timeout. */
    size_t max_queued_bytes;
    size_t max_client_queued_bytes;
    /* Called for every answer (an access log); NULL: none, and requests
     * carry no peer or start time. */
    corral_access_cb *access_cb;
    void *access_arg;
    /* A second listener whose clients speak TLS (listen_tls): NULL: none.
     * Borrowed for the server's life; a reload may swap its certificate.
     * The handshake counts against client_timeout; ALPN "h2" goes to
     * HTTP/2, anything else is HTTP/1.1. */
    struct corral_tls *tls;
    const char *tls_host; /* as host */
    uint16_t tls_port;    /* 0 = any; see corral_server_tls_port() */
};

/* Which framing a request came in. */
enum corral_proto {
    CORRAL_PROTO_H1 = 0, /* HTTP/1.x */
    CORRAL_PROTO_H2C,    /* HTTP/2 over cleartext TCP (prior knowledge) */
    CORRAL_PROTO_H2,     /* HTTP/2 over TLS (ALPN "h2") */
    CORRAL_PROTO_COUNT,
};

/* "h1", "h2c", "h2": for logs and metrics. HTTP/1.1 is "h1" with TLS or
 * without. */
const char *corral_proto_name(enum corral_proto p);

enum corral_method {
    CORRAL_METHOD_GET,
    CORRAL_METHOD_HEAD,
    CORRAL_METHOD_POST,
    CORRAL_METHOD_DELETE,
    CORRAL_METHOD_OTHER, /* any other method */
    CORRAL_METHOD_NONE,  /* refused before its method was read (seen by the
                            access_cb only) */
};

/* One parsed request. Owned by the server, embedded in a per-connection
 * slot: never copy it. Every field, and the bytes they point to, is
 * borrowed; valid until the request is answered, or until its on_close
 * callback fires (see corral_request_on_close()). Strings are not
 * NUL-terminated. A request the server refuses itself (400, 408, 431, 501,
 * 505) reaches only the access_cb, with an empty path and query. */
struct corral_request {
    enum corral_method method;
    const char *path; /* raw (not decoded) but with its dot segments
                         resolved ("/a/../b" is "/b"); without the query */
    size_t path_len;
    const char *query; /* raw, after '?'; "" if none */
    size_t query_len;
    const char *if_none_match; /* the header's value; NULL if absent */
    size_t inm_len;
    const char *authorization; /* the header's value; NULL if absent */
    size_t auth_len;
    bool only_if_cached;         /* Cache-Control: only-if-cached */
    struct corral_accept accept; /* what Accept-Encoding says */
    enum corral_proto proto;     /* the framing it came in */
    /* With an access_cb only: */
    const char *peer;  /* the client's address, NUL-terminated */
    uint64_t start_us; /* CLOCK_MONOTONIC when the request was parsed */
    /* The handler's notes for the access log: how the cache answered
     * (static string; NULL: "-") and how long its upstream call took
     * (-1: none). Reset for every request. */
    const char *note;
    int64_t upstream_ms;
};

typedef void corral_request_cb(struct corral_request *req, void *arg);
typedef void corral_request_close_cb(struct corral_request *req, void *arg);

/* Listens on o->host:o->port and calls cb for every request, in order per
 * connection, with up to 16 requests in flight per connection. Raises the
 * RLIMIT_NOFILE soft limit to the hard limit. Returns NULL with a reason in
 * err on failure. Caller frees with corral_server_free(). */
struct corral_server *corral_server_new(struct event_base *base,
                                        const struct corral_server_options *o,
                                        corral_request_cb *cb, void *arg,
                                        char *err, size_t errlen);

/* Serves a socket connected elsewhere (inherited, socket activation, a
 * socketpair in tests) as if it had been accepted: made non-blocking and
 * close-on-exec, counted against max_clients (over it: 503 and closed).
 * The server owns fd from here. Returns -1 (fd untouched) when fcntl
 * fails or the server drains. */
int corral_server_adopt(struct corral_server *s, int fd);

/* The port the server listens on (useful after port 0), in host order. */
uint16_t corral_server_port(const struct corral_server *s);

/* The port of its TLS listener, or 0 without one. */
uint16_t corral_server_tls_port(const struct corral_server *s);

/* Stops accepting, closes idle connections, answers the requests already
 * parsed (the last with "Connection: close") and closes each connection when
 * its queue is empty. done (may be NULL) fires once, from the loop, when no
 * connection is left. Do not call twice. */
void corral_server_drain(struct corral_server *s, void (*done)(void *arg),
                         void *arg);

/* Ends a drain that ran out of time: every request still waiting on the
 * handler with an on_close callback gets it, as if its client had gone,
 * and is answered 503 with "Retry-After: retry_after_s" and "Connection:
 * close" instead of having its connection just closed. Requests without
 * one are left to the handler. */
void corral_server_drain_expire(struct corral_server *s,
                                unsigned retry_after_s);

/* Closes the listener and every connection now; unanswered requests get
 * their on_close callback, and the ones without one are dropped (answering
 * them afterwards is a use-after-free). Not from inside a server callback.
 * NULL is a no-op. */
void corral_server_free(struct corral_server *s);

struct corral_server_stats {
    uint64_t accepted;     /* connections accepted and kept */
    uint64_t rejected;     /* connections refused over max_clients */
    uint64_t requests;     /* requests handed to the handler */
    uint64_t bad_requests; /* 400, 431 and 505 answers */
    uint64_t timeouts;     /* connections closed by client_timeout */
    unsigned open;         /* connections open now */
    size_t queued_bytes;   /* answer bytes queued to clients now */
    size_t copy_bytes;     /* request strings copied for handlers now */
    uint64_t paused;       /* times a client was not read for the budget */
    /* By framing (enum corral_proto): */
    uint64_t proto_connections[CORRAL_PROTO_COUNT]; /* accepted */
    uint64_t proto_requests[CORRAL_PROTO_COUNT];    /* handed over */
    uint64_t h2_goaways; /* HTTP/2 connections ended for an abuse or error
                            (flood, rapid reset, bad frames) */
    /* TLS connections whose handshake ended, by the framing ALPN chose
     * (CORRAL_PROTO_H1 or CORRAL_PROTO_H2); also counted above. */
    uint64_t tls_connections[CORRAL_PROTO_COUNT];
    uint64_t tls_failed; /* handshakes refused (garbage, old TLS, no
                            common cipher) */
};
void corral_server_stats(const struct corral_server *s,
                         struct corral_server_stats *out);

struct corral_response {
    int status;       /* for logs; the status line is in head */
    const char *head; /* status line and fixed headers, each ending CRLF,
                         without the blank line; borrowed */
    size_t head_len;
    const char *extra; /* more header lines, each ending CRLF; copied */
    size_t extra_len;
    const char *body; /* borrowed; not written for HEAD */
    size_t body_len;
    struct corral_value *hold; /* NULL, or kept alive (corral_value_ref)
                                  until head and body are written */
};

/* Answers req, now or later from any loop callback. The server appends
 * "Date:", "Connection: close" when it will close (or "Connection:
 * keep-alive" for an HTTP/1.0 keep-alive client) and the blank line. head
 * and body must stay valid until written: point them into r->hold, or into
 * static storage. Answers go out in request order. After this call req is
 * dead. Answering a request whose client has gone (and that has no on_close
 * callback) is a no-op. */
void corral_request_respond(struct corral_request *req,
                            const struct corral_response *r);

/* Answers req with a small answer copied into the connection (errors, 304,
 * 404): "HTTP/1.1 <status> <reason>", Content-Type (if content_type is not
 * NULL) and Content-Length (not for 1xx, 204 and 304, which carry no body),
 * then extra_headers (NULL, or lines each ending CRLF), then body. */
void corral_request_respond_simple(struct corral_request *req, int status,
                                   const char *content_type,
                                   const char *extra_headers, const char *body,
                                   size_t len);

/* cb fires once if the connection closes (client gone, timeout, server
 * freed) before req is answered; req is dead after cb returns and must not
 * be answered. Without it, req stays valid until answered even if the client
 * went away. Call again to replace; cb NULL removes. */
void corral_request_on_close(struct corral_request *req,
                             corral_request_close_cb *cb, void *arg);

#endif
