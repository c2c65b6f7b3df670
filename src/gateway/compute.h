/* compute.h — how a route's key gets its value: one fill per key (single
 * flight in libcorral) that fetches the route's upstream path, refuses
 * what must not be stored (a status other than 200 or 203, a Content-Type
 * with control bytes, invalid JSON on a JSON route, an answer over the
 * cap), renders the head every hit reuses and stores it for as long as
 * the route and the upstream's Cache-Control allow, or passes it to the
 * fill's waiters only when the upstream says not to store it; that asks the
 * upstream's breaker and budget before each call (and tells the breaker how
 * the call went) and pauses the upstream on a 429 or 503 with Retry-After;
 * and how a fill's
 * error becomes an HTTP status. Client requests, an aggregate's members
 * and the admin's refresh all go through it. */
#ifndef CORRAL_COMPUTE_H
#define CORRAL_COMPUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "corral/cache.h"
#include "encoding.h"

struct corral_breaker;
struct corral_budget;
struct corral_config_route;
struct corral_metrics_upstream;
struct corral_fetch_upstream;
struct corral_route_match;

/* Per route, fixed at start. */
struct corral_route_compute {
    const struct corral_config_route *route;
    struct corral_fetch_upstream *upstream; /* NULL for an aggregate */
    struct corral_budget *budget;           /* the upstream's rate, pause */
    struct corral_budget *keys;     /* the route's new_keys: cold fills it
                                     * may start per window; or NULL */
    struct corral_breaker *breaker; /* the upstream's breaker */
    struct corral_metrics_upstream *metrics; /* its calls; may be NULL */
    unsigned *jobs;      /* fills that hold these, from start to end (counted
                          * here), or NULL */
    uint64_t timeout_ms; /* the upstream's */
};

/* Waits on the fill of m's key, starting it if none runs: cb gets the
 * value (or the fill's error) once, from the loop. rf must outlive the
 * fill. Returns 0 with the wait in *out (Borrowed; valid until cb fires
 * or corral_waiter_cancel()), or, and cb never fires, -EMSGSIZE when the
 * upstream path does not fit (answer 400) or -ESHUTDOWN when the cache is
 * closing. */
int corral_route_compute_get(struct corral_cache *c,
                             const struct corral_route_compute *rf,
                             const struct corral_route_match *m,
                             corral_result_cb *cb, void *arg,
                             struct corral_waiter **out);

/* Starts a background refresh of m's key (a hit that XFetch chose; with
 * refetch, the admin's "fetch it now", which a copy in L2 does not end)
 * unless one runs or the key backs off. Returns corral_refresh()'s code,
 * or -EMSGSIZE when the upstream path does not fit. */
int corral_route_compute_refresh(struct corral_cache *c,
                                 const struct corral_route_compute *rf,
                                 const struct corral_route_match *m,
                                 bool refetch);

/* What a value's rendered head says that a hit must know, kept in the
 * value's flags (corral_value_flags()) when it is rendered, and set again
 * by corral_compute_fit() on a value read from L2, so no hit parses a head. */
enum corral_compute_flag {
    CORRAL_COMPUTE_NEGATIVE = 1 << 0,        /* a cached upstream 4xx */
    CORRAL_COMPUTE_STALE_MEMBERS = 1 << 1,   /* an aggregate assembled with a
                                              * stale member (aggregate.h) */
    CORRAL_COMPUTE_UNCHECKED_FORMS = 1 << 2, /* read from L2 with its
                                              * identity bytes: its other
                                              * forms not checked yet */
};

/* A value for key with body, kept in the forms worth keeping
 * (encoding.h) and rendered once with a head for each coding it can be
 * served in: status line, Content-Type (ctype; NULL or "": JSON),
 * Content-Length of that form, its ETag (corral_compute_etag()), its
 * Content-Encoding (none for identity), "Vary: Accept-Encoding", then extra
 * (NULL, or header lines each ending CRLF); its flags say
 * CORRAL_COMPUTE_NEGATIVE for a status other than 2xx. NULL when it does
 * not fit. */
struct corral_value *corral_compute_render(const char *key, size_t keylen,
                                           const char *body, size_t len,
                                           const char *ctype, int status,
                                           const char *extra);

/* The head rendered for v's coding c, *len bytes of lines each ending
 * CRLF, without the blank line. Borrowed, as v's aux area. NULL when v
 * has none for c: every value has identity's (served decoded when its
 * bytes are not kept), and one for each other form it keeps. */
const char *corral_compute_head(const struct corral_value *v,
                                enum corral_coding c, size_t *len);

/* A copy of v (not stored yet) that keeps its identity bytes too, decoded
 * from another form, with v's heads and flags: for v's first client that
 * takes no coding, and L1 in v's place for the ones that follow. NULL
 * when no form decodes. Caller owns the one reference. */
struct corral_value *corral_compute_with_identity(const struct corral_value *v);

/* Bit c set: v has a head for coding c (corral_compute_head()). */
unsigned corral_compute_codings(const struct corral_value *v);

/* May v be served in coding c (a coding corral_compute_codings() lists)?
 * Yes for identity and for every form of a value this corral made; a
 * form of a value read from L2 that corral_compute_fit() left unchecked is
 * decoded and compared with the identity bytes the first time a client
 * asks for it, and the answer kept on v (corral_value_mark()) for the
 * ones that follow. */
bool corral_compute_form_ok(struct corral_value *v, enum corral_coding c);

/* The strong ETag of v's representation in coding c: identity's is the
 * body's (corral_value_etag()), the others add "-" and the coding's name
 * inside the quotes. */
#define CORRAL_COMPUTE_ETAG_MAX (CORRAL_ETAG_LEN + 10)
void corral_compute_etag(const struct corral_value *v, enum corral_coding c,
                         char out[CORRAL_COMPUTE_ETAG_MAX]);

/* Is v, read from L2 (another process wrote it, or something else did),
 * fit to serve on route at now_ms? Its heads must be exactly what corral
 * renders for its forms (status line with a status the route keeps,
 * Content-Type, each form's length, ETag and coding, and on an aggregate
 * a Corral-Stale-Members line), its lifetime and stale windows no longer
 * than the route's, its store time no later than a minute from now, its
 * identity bytes (kept or decoded) those of its ETag, every other form
 * those bytes encoded (checked when a client first asks for it, when the
 * identity bytes are kept: corral_compute_form_ok()), and on a JSON route
 * its body JSON. A fit v is not
 * stored yet: its flags are set from its head, as corral_compute_render()
 * sets them. */
bool corral_compute_fit(const struct corral_config_route *route,
                        const struct corral_value *v, uint64_t now_ms);

/* The status v's head was rendered with (corral_compute_render(), or
 * checked by corral_compute_fit()). */
int corral_compute_status(const struct corral_value *v);

/* The HTTP status for a fill's error: 504 for a timeout, 503 when the key
 * has too many waiters, the wait was cancelled, or the upstream may not be
 * called now (paused by its Retry-After, over its rate, or its breaker
 * open), 502 for the rest (the upstream failed or sent what cannot be
 * stored). */
int corral_compute_error_status(int error);

#endif
