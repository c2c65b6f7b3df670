/* admin.h — the admin listener (admin.listen): health, Prometheus metrics,
 * purge and refresh, on its own port through its own front end. It is
 * the only module that knows the Prometheus text format; the numbers come
 * from the metrics blocks of every worker of the server (metrics.h), so
 * whichever worker takes a scrape answers for the whole server, counters
 * summed.
 *
 *   GET  /healthz            {"status":"ok","l2":"up|down|disabled",
 *                             "workers":N,"uptime_s":S}; 503 "draining"
 *   GET  /metrics            Prometheus text exposition format 0.0.4
 *   DELETE /cache/<path>     purge the key a client request for <path>
 *                            (with its query) uses, everywhere
 *   POST /refresh/<path>     refetch that key now, through single flight
 *
 * The last two need "Authorization: Bearer <admin.token>": 401 without it
 * or with a wrong one (compared in constant time), and 403 for everyone
 * when no token is configured. */
#ifndef CORRAL_ADMIN_H
#define CORRAL_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"

struct event_base;
struct evbuffer;
struct corral_config;
struct corral_gateway;
struct corral_metrics;
struct corral_admin; /* opaque */

/* Serves the admin of g on base: on listen_fd when >= 0 (a supervisor's
 * socket), else on g's config's admin.listen. Returns NULL with err set.
 * Free before g. */
struct corral_admin *corral_admin_new(struct event_base *base,
                                      struct corral_gateway *g, int listen_fd,
                                      char *err, size_t errlen);
uint16_t corral_admin_port(const struct corral_admin *a);
/* Closes the listener and its connections now. NULL is a no-op. */
void corral_admin_free(struct corral_admin *a);

/* ---- the parts of a request's answer, on their own for the tests ---- */

/* What the admin does with a request. */
enum corral_admin_op {
    CORRAL_ADMIN_HEALTHZ,
    CORRAL_ADMIN_METRICS,
    CORRAL_ADMIN_PURGE,       /* DELETE /cache/<client path> */
    CORRAL_ADMIN_PURGE_ROUTE, /* DELETE /route/<route path> */
    CORRAL_ADMIN_REFRESH,     /* POST /refresh/<client path> */
    CORRAL_ADMIN_NOT_ALLOWED, /* a known path, another method: 405 */
    CORRAL_ADMIN_NOT_FOUND,   /* no such path: 404 */
};
/* The op for method on path[len]. For a known path, *arg is where its
 * argument starts in path ("/<client path>" or "/<route path>") and
 * *allow the methods it takes (for Allow). */
enum corral_admin_op corral_admin_match(enum corral_method method,
                                        const char *path, size_t len,
                                        size_t *arg, const char **allow);
/* 0 when the Authorization header's value (NULL: absent) carries token;
 * else the status to answer: 403 when no token is configured (NULL or
 * ""), 401 when the header is missing or wrong. */
int corral_admin_authorize(const char *token, const char *authorization,
                           size_t auth_len);
/* Appends the Prometheus text of m (every live worker's block) to o;
 * cfg's upstreams are the breakers to show, read at now_ms. */
void corral_admin_metrics_render(struct evbuffer *o, struct corral_metrics *m,
                                 const struct corral_config *cfg,
                                 uint64_t now_ms);

#endif
