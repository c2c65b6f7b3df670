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

struct event_base;
struct corral_gateway;
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

#endif
