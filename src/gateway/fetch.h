/* fetch.h — non-blocking HTTP/1.1 GETs to one configured upstream, on
 * libcurl's multi interface driven by the caller's libevent loop.
 * An upstream owns a keep-alive pool of at most max_connections connections,
 * each carrying one request at a time, and a FIFO of requests waiting for
 * one. Interim 1xx responses are skipped and the final one is the answer; a
 * connection is reused only after a completely framed response with nothing
 * left over, and one that becomes readable while idle is closed, never read
 * as an answer. Bodies sent with Content-Encoding (gzip, deflate, br, zstd)
 * are decoded; what the answer's Cache-Control and Age say is read for the
 * cache above. Every address a name resolves to is tried in turn (names are
 * resolved off the loop by libcurl's resolver). Proxies come from the usual
 * environment variables (http_proxy, https_proxy, no_proxy).
 * Every fetch's callback fires exactly once and always from the loop,
 * unless the fetch is cancelled first. https always verifies the certificate
 * chain and the host name; there is no switch to turn that off. */
#ifndef CORRAL_FETCH_H
#define CORRAL_FETCH_H

#include <stddef.h>
#include <stdint.h>

struct event_base;

struct corral_fetch_upstream; /* opaque */
struct corral_fetch;          /* opaque */

/* A fetch's error (corral_fetch_result.error) is 0 when an HTTP answer
 * arrived, whatever its status, else a negative errno, the result's
 * message saying why for a human (as libcurl's CURLcode and its errbuf):
 *   -ECONNREFUSED  refused, reset, closed early, DNS failure ("connect")
 *   -ETIMEDOUT     timeout_ms passed before the answer was in ("timeout")
 *   -EKEYREJECTED  TLS handshake or certificate verify failed ("tls")
 *   -EFBIG         body longer than max_body ("too_big")
 *   -EPROTO        malformed response ("protocol")
 *   -ECANCELED     the upstream was freed before the answer ("cancelled")
 */

struct corral_fetch_options {
    const char *scheme;         /* "http" or "https" */
    const char *host;           /* name or IP literal ("[::1]" or "::1");
                                 * also the SNI and the verified name */
    uint16_t port;              /* 1..65535 */
    uint64_t timeout_ms;        /* whole exchange: queue wait, connect, TLS,
                                 * request, response; > 0 */
    unsigned max_connections;   /* keep-alive pool cap, > 0; more requests
                                 * queue */
    size_t max_body;            /* bytes, > 0; a longer body is -EFBIG */
    const char *ca_file;        /* PEM trust anchors; NULL = system store */
    const char *const *headers; /* NULL or NULL-terminated name, value, ...
                                 * added to every request */
};

/* What an answer says about being kept by a cache: its Cache-Control
 * (RFC 9111 5.2.2), every field line and every directive of it, names in
 * any case. The gateway decides what counts (compute.c). */
enum corral_fetch_cc_flag {
    CORRAL_FETCH_CC_NO_STORE = 1 << 0, /* no-store */
    CORRAL_FETCH_CC_PRIVATE = 1 << 1,  /* private, also private="field" */
    CORRAL_FETCH_CC_NO_CACHE = 1 << 2, /* no-cache, also no-cache="field" */
};

struct corral_fetch_cache_control {
    unsigned flags;     /* enum corral_fetch_cc_flag */
    int64_t max_age_s;  /* max-age; -1 when absent */
    int64_t s_maxage_s; /* s-maxage; -1 when absent */
};

/* Nothing said yet: no flags, no lifetimes. */
#define CORRAL_FETCH_CACHE_CONTROL_NONE                                        \
    ((struct corral_fetch_cache_control){0, -1, -1})

struct corral_fetch_result {
    int error;                /* 0 or a negative errno (above) */
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
    uint64_t age_s;           /* Age (the largest valid one), 0 if none */
    struct corral_fetch_cache_control cache_control;
};

/* Receives the one answer of a fetch. res and every pointer in it:
 * Borrowed; valid until the callback returns (copy the body to keep it).
 * The fetch handle is gone once the callback is called: never cancel it from
 * here. The callback may start new fetches, cancel other fetches or free the
 * upstream. */
typedef void corral_fetch_cb(const struct corral_fetch_result *res, void *arg);

/* Creates an upstream on base. o and its strings are copied. The process
 * must ignore SIGPIPE. Returns NULL with a reason in err (if errlen > 0) on
 * bad options, an unreadable ca_file or no memory. Caller frees with
 * corral_fetch_upstream_free(). */
struct corral_fetch_upstream *
corral_fetch_upstream_new(struct event_base *base,
                          const struct corral_fetch_options *o, char *err,
                          size_t errlen);

/* Answers every queued and in-flight fetch with -ECANCELED
 * (before it returns), closes the connections and frees u. Safe from inside
 * a fetch callback. NULL is a no-op. The connections and their TLS state
 * close with libcurl's handles before it returns, or, called from inside a
 * fetch callback, as that callback returns. */
void corral_fetch_upstream_free(struct corral_fetch_upstream *u);

/* Starts GET path_and_query (origin form: "/...", printable ASCII, no spaces
 * or '#'; the caller percent-encodes). cb fires exactly once, never from
 * inside this call. Returns a handle: Borrowed; valid until cb is called or
 * corral_fetch_cancel(). Returns NULL (and cb never fires) for a bad path,
 * an upstream being freed, or no memory. */
struct corral_fetch *corral_fetch_get(struct corral_fetch_upstream *u,
                                      const char *path_and_query,
                                      corral_fetch_cb *cb, void *arg);

/* corral_fetch_get() with less time than the upstream's timeout_ms (what
 * is left of it after a wait elsewhere); 0 = the upstream's. */
struct corral_fetch *corral_fetch_get_within(struct corral_fetch_upstream *u,
                                             const char *path_and_query,
                                             uint64_t timeout_ms,
                                             corral_fetch_cb *cb, void *arg);

/* Drops f: its callback will not fire. A queued fetch leaves the queue; one
 * on a connection closes that connection (it cannot be reused mid-answer).
 * NULL is a no-op. */
void corral_fetch_cancel(struct corral_fetch *f);

/* Why name: value cannot be a configured request header (a control
 * character, a bad name, or a header corral or libcurl manages itself such
 * as Host, Connection, Transfer-Encoding, TE, Upgrade or Keep-Alive), or
 * NULL when it can. Static string. The config checker uses the same rule. */
const char *corral_fetch_check_header(const char *name, const char *value);

/* Why host[0..len) cannot be an upstream host, or NULL when it can: a DNS
 * name (labels of letters, digits, '-' and '_', at most 63 bytes each, 253
 * in all), an IPv4 literal, or an IPv6 literal, bare or in brackets. Static
 * string. The config checker uses the same rule. */
const char *corral_fetch_check_host(const char *host, size_t len);

/* 0 when path holds at least one PEM certificate (trust anchors), else
 * -errno (-EINVAL: none in it) with the reason in why. The config
 * checker uses the same test. */
int corral_fetch_check_ca_file(const char *path, char *why, size_t len);

/* Adds what one Cache-Control field value v[0..len) says to *cc (start
 * from CORRAL_FETCH_CACHE_CONTROL_NONE; call once per field line). A
 * directive given twice keeps its shorter lifetime, a lifetime that is not
 * delta-seconds counts as 0 (stale at once), one past 2^31 as 2^31 (RFC
 * 9111 1.2.2); unknown directives and quoted arguments are skipped. */
void corral_fetch_cache_control_parse(struct corral_fetch_cache_control *cc,
                                      const char *v, size_t len);

/* The name of a fetch's error (above): "none" for 0, "connect",
 * "timeout", "tls", "too_big", "protocol", "cancelled"; "unknown"
 * otherwise. Static string. */
const char *corral_fetch_error_name(int error);

#endif
