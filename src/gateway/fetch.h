/* fetch.h — non-blocking HTTP/1.1 GETs to one configured upstream.
 * An upstream owns a keep-alive pool of at most max_connections connections,
 * each carrying one request at a time, and a FIFO of requests waiting for
 * one. Every fetch's callback fires exactly once and always from the loop,
 * unless the fetch is cancelled first. https always verifies the certificate
 * chain and the host name; there is no switch to turn that off. */
#ifndef CORRAL_FETCH_H
#define CORRAL_FETCH_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evdns_base;

struct corral_fetch_upstream; /* opaque */
struct corral_fetch;          /* opaque */

enum corral_fetch_error {
    CORRAL_FETCH_E_NONE = 0,  /* an HTTP answer arrived, whatever its status */
    CORRAL_FETCH_E_CONNECT,   /* refused, reset, closed early, DNS failure */
    CORRAL_FETCH_E_TIMEOUT,   /* timeout_ms passed before the answer was in */
    CORRAL_FETCH_E_TLS,       /* TLS handshake or certificate verify failed */
    CORRAL_FETCH_E_TOO_BIG,   /* body longer than max_body */
    CORRAL_FETCH_E_PROTOCOL,  /* malformed response */
    CORRAL_FETCH_E_CANCELLED, /* the upstream was freed before the answer */
};

struct corral_fetch_options {
    const char *scheme;         /* "http" or "https" */
    const char *host;           /* name or IP literal ("[::1]" or "::1");
                                 * also the SNI and the verified name */
    uint16_t port;              /* 1..65535 */
    uint64_t timeout_ms;        /* whole exchange: queue wait, connect, TLS,
                                 * request, response; > 0 */
    unsigned max_connections;   /* keep-alive pool cap, > 0; more requests
                                 * queue */
    size_t max_body;            /* bytes, > 0; a longer body is TOO_BIG */
    const char *ca_file;        /* PEM trust anchors; NULL = system store */
    const char *const *headers; /* NULL or NULL-terminated name, value, ...
                                 * added to every request */
};

struct corral_fetch_result {
    int error;                /* 0 or enum corral_fetch_error */
    const char *message;      /* why it failed, or the reason phrase; never
                               * NULL */
    int status;               /* HTTP status; 0 when none was received */
    const char *content_type; /* NULL when absent */
    const char *body;         /* NUL-terminated for convenience; NULL on
                               * error */
    size_t len;               /* body bytes, without the NUL */
    uint64_t retry_after_s;   /* Retry-After (seconds or HTTP date), 0 if
                               * none */
    uint64_t elapsed_ms;      /* from corral_fetch_get() to the callback */
};

/* Receives the one answer of a fetch. res and every pointer in it:
 * Borrowed; valid until the callback returns (copy the body to keep it).
 * The fetch handle is gone once the callback is called: never cancel it from
 * here. The callback may start new fetches, cancel other fetches or free the
 * upstream. */
typedef void corral_fetch_cb(const struct corral_fetch_result *res, void *arg);

/* Creates an upstream on base. dns may be NULL: host names are then resolved
 * with a blocking getaddrinfo() in the loop, which is fine for IP literals
 * and /etc/hosts names such as localhost; pass an evdns_base (which must
 * outlive the upstream) for real names. Only the first address a name
 * resolves to is tried. o and its strings are copied. The process must
 * ignore SIGPIPE. Returns NULL with a reason in err (if errlen > 0) on bad
 * options, an unreadable ca_file or no memory. Caller frees with
 * corral_fetch_upstream_free(). */
struct corral_fetch_upstream *
corral_fetch_upstream_new(struct event_base *base, struct evdns_base *dns,
                          const struct corral_fetch_options *o, char *err,
                          size_t errlen);

/* Answers every queued and in-flight fetch with CORRAL_FETCH_E_CANCELLED
 * (before it returns), closes the connections and frees u. Safe from inside
 * a fetch callback. NULL is a no-op. Sockets and TLS state are released by
 * libevent on a later loop turn or by event_base_free(). */
void corral_fetch_upstream_free(struct corral_fetch_upstream *u);

/* Starts GET path_and_query (origin form: "/...", printable ASCII, no spaces
 * or '#'; the caller percent-encodes). cb fires exactly once, never from
 * inside this call. Returns a handle: Borrowed; valid until cb is called or
 * corral_fetch_cancel(). Returns NULL (and cb never fires) for a bad path,
 * an upstream being freed, or no memory. */
struct corral_fetch *corral_fetch_get(struct corral_fetch_upstream *u,
                                      const char *path_and_query,
                                      corral_fetch_cb *cb, void *arg);

/* Drops f: its callback will not fire. A queued fetch leaves the queue; one
 * on a connection closes that connection (it cannot be reused mid-answer).
 * NULL is a no-op. */
void corral_fetch_cancel(struct corral_fetch *f);

/* "none", "connect", "timeout", "tls", "too_big", "protocol", "cancelled";
 * "unknown" otherwise. Static string. */
const char *corral_fetch_error_name(int error);

#endif
