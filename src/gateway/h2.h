/* h2.h — HTTP/2 framing of the client port (h2c with prior knowledge),
 * through libnghttp2. The server (server.c) owns the listener and hands
 * over a connection whose first bytes are the HTTP/2 preface; from then
 * on this module owns it: one nghttp2_session on the same event_base,
 * each stream a struct corral_request for the same handler, answered with
 * the same corral_request_respond() (server.c forwards requests whose
 * proto is not CORRAL_PROTO_H1 here). Over TLS (h2 by ALPN) it reads
 * and writes through tls.h instead of the socket. Answers are the rendered
 * HTTP/1 head converted into header pairs and the body borrowed from the value,
 * written with writev and never copied. One corral_h2 per server. */
#ifndef CORRAL_H2_H
#define CORRAL_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server.h"

#include <openssl/ssl.h>

struct event_base;
struct corral_h2; /* opaque */

/* The 24 bytes every HTTP/2 client with prior knowledge sends first. */
#define CORRAL_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define CORRAL_H2_PREFACE_LEN 24

/* What a server lends its HTTP/2 connections; pointers borrowed for the
 * life of the corral_h2. */
struct corral_h2_env {
    struct event_base *base;
    corral_request_cb *cb; /* the server's handler */
    void *arg;
    corral_access_cb *access_cb; /* NULL: none */
    void *access_arg;
    size_t max_header;        /* decoded header list bytes of a request */
    uint64_t timeout_ms;      /* idle, slow or stalled client */
    unsigned max_streams;     /* SETTINGS_MAX_CONCURRENT_STREAMS */
    size_t max_queued;        /* answer bytes queued, all clients */
    size_t max_client_queued; /* ... one client */
    struct corral_server_stats *stats; /* the server's, updated here */
    /* "Date: ...\r\n" for now; borrowed until the next call. */
    const char *(*date)(void *arg);
    void *date_arg;
    /* A connection closed (the server counts open connections). */
    void (*closed)(void *arg);
    void *closed_arg;
};

/* Returns a new HTTP/2 front with env copied. Returns NULL (out of
 * memory in nghttp2) with a reason in err. Caller frees with
 * corral_h2_free(). */
struct corral_h2 *corral_h2_new(const struct corral_h2_env *env, char *err,
                                size_t errlen);

/* Takes over the connected, non-blocking socket fd whose first bytes,
 * in[0..len), start with the preface, and serves it: as h2c, or as h2
 * over ssl when ssl is not NULL (its handshake done, ALPN "h2"; in may
 * then be empty, the preface still to come through ssl). The socket and
 * ssl are the module's from here, also on failure (then closed, and
 * env->closed fires). peer: the client's address for the access log
 * (copied). */
void corral_h2_adopt(struct corral_h2 *h2, int fd, SSL *ssl, const char *in,
                     size_t len, const char *peer);

/* The server drains: every connection gets a GOAWAY, its streams already
 * opened are answered, and it closes when they are written. */
void corral_h2_drain(struct corral_h2 *h2);

/* As corral_server_drain_expire(): every stream waiting on the handler
 * with an on_close callback gets it and is answered 503 with
 * "Retry-After: retry_after_s". */
void corral_h2_drain_expire(struct corral_h2 *h2, unsigned retry_after_s);

/* Closes every connection now (on_close callbacks fire) and frees h2;
 * streams still waiting without one are dropped. NULL is a no-op. */
void corral_h2_free(struct corral_h2 *h2);

/* server.c's entry points for a request whose proto is HTTP/2; same
 * contract as corral_request_respond() and friends in server.h. */
void corral_h2_respond(struct corral_request *req,
                       const struct corral_response *r);
void corral_h2_respond_simple(struct corral_request *req, int status,
                              const char *content_type,
                              const char *extra_headers, const char *body,
                              size_t len);
void corral_h2_on_close(struct corral_request *req, corral_request_close_cb *cb,
                        void *arg);

#endif
