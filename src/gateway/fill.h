/* fill.h — how a route's key gets its value: one fill per key (single
 * flight in libcorral) that fetches the route's upstream path, refuses
 * what must not be stored (a status other than 200 or 203, a Content-Type
 * with control bytes, invalid JSON on a JSON route, an answer over the
 * cap), renders the head every hit reuses and stores; and how a fill's
 * error becomes an HTTP status. The request path uses it; aggregates and
 * the admin's refresh are meant to. */
#ifndef CORRAL_FILL_H
#define CORRAL_FILL_H

#include <stdint.h>

#include "corral/cache.h"

struct corral_config_route;
struct corral_fetch_upstream;
struct corral_route_match;

/* Per route, fixed at start. */
struct corral_route_fill {
    const struct corral_config_route *route;
    struct corral_fetch_upstream *upstream; /* NULL for an aggregate */
    uint64_t timeout_ms;                    /* the upstream's */
};

/* Waits on the fill of m's key, starting it if none runs: cb gets the
 * value (or the fill's error) once, from the loop. rf must outlive the
 * fill. Returns NULL (cb never fires) with errno EMSGSIZE when the
 * upstream path does not fit (answer 400), or ESHUTDOWN when the cache is
 * closing. */
struct corral_waiter *corral_route_fill_get(struct corral_cache *c,
                                            const struct corral_route_fill *rf,
                                            const struct corral_route_match *m,
                                            corral_result_cb *cb, void *arg);

/* The HTTP status for a fill's error: 504 for a timeout, 503 when the key
 * has too many waiters or the wait was cancelled, 502 for the rest (the
 * upstream failed or sent what cannot be stored). */
int corral_fill_error_status(int error);

#endif
