/* route.h — matching request paths to configured routes, checking path
 * parameters, and building cache keys and upstream paths. Matching walks a
 * trie of path segments (a literal beats a parameter), so no request runs a
 * regex it does not need; nothing here allocates per request.
 * Errors are negative errnos, as everywhere in the gateway; a match's
 * result stays an enum: its values are outcomes the caller answers
 * differently (404, 400), not failures of the matcher. */
#ifndef CORRAL_ROUTE_H
#define CORRAL_ROUTE_H

#include <stddef.h>

#include "config.h"

#define CORRAL_ROUTE_MAX_PARAMS CORRAL_CONFIG_MAX_PARAMS
#define CORRAL_ROUTE_KEY_MAX 2048 /* bytes of a built key */
#define CORRAL_ROUTE_SCRATCH 4096 /* bytes of decoded values */

struct corral_route_table; /* opaque */

enum corral_route_status {
    CORRAL_ROUTE_OK = 0,
    CORRAL_ROUTE_NOT_FOUND, /* no route has this path */
    CORRAL_ROUTE_BAD_PARAM, /* a parameter failed its pattern */
    CORRAL_ROUTE_TOO_LONG,  /* key or values over the limits */
    CORRAL_ROUTE_BAD_QUERY, /* a forwarded query value is malformed */
};

/* One match: the route, its decoded parameter values and forwarded query
 * values, and the cache key. Lives on the caller's stack. */
struct corral_route_match {
    const struct corral_config_route *route;
    size_t index;                                /* of route in the config */
    const char *values[CORRAL_ROUTE_MAX_PARAMS]; /* decoded, NUL-ended */
    size_t n_values;
    const char *query_values[CORRAL_ROUTE_MAX_PARAMS]; /* NULL: absent */
    const char *bad_param; /* name, when BAD_PARAM or BAD_QUERY */
    char key[CORRAL_ROUTE_KEY_MAX];
    size_t keylen;
    char scratch[CORRAL_ROUTE_SCRATCH];
    size_t scratch_used;
};

/* Builds the matcher for cfg's routes (cfg is borrowed and must outlive
 * it). Returns NULL with err set (too many params on a route). Caller
 * frees with corral_route_table_free(). */
struct corral_route_table *
corral_route_table_new(const struct corral_config *cfg, char *err,
                       size_t errlen);
void corral_route_table_free(struct corral_route_table *t);

/* Matches a raw request path and query string, checks the parameters and
 * builds the key in m. */
enum corral_route_status corral_route_match(const struct corral_route_table *t,
                                            const char *path, size_t path_len,
                                            const char *query, size_t query_len,
                                            struct corral_route_match *m);

/* Writes the upstream path and query for a match (parameters and query
 * values percent-encoded) into buf, NUL-ended. Returns its length, or
 * -EMSGSIZE if it does not fit. */
int corral_route_upstream_path(const struct corral_route_match *m, char *buf,
                               size_t len);

#endif
