/* gateway.h — one reactor of the gateway: the front end, the route table,
 * the cache and the upstream pools on one event_base, wired from a config.
 * A request is answered from L1 at once, or joins the one fill for its key,
 * which fetches from the upstream, validates and stores.
 *
 * Layer 2's conventions, as libcorral's: a call that can fail returns 0
 * or a negative errno and, where a human needs to know why, a message too
 * (an err buffer the caller passes, or a result's message: libcurl's
 * CURLcode and errbuf); one that waits says -EINPROGRESS and calls back
 * once; a constructor returns NULL (with err when it takes one). What is
 * an outcome rather than a failure (a route match, a breaker's state)
 * stays an enum. Out of memory: xalloc.h's one policy. */
#ifndef CORRAL_GATEWAY_H
#define CORRAL_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct corral_config;
struct corral_gateway; /* opaque */
struct corral_metrics;
struct corral_ledger;

struct corral_gateway_options {
    int listen_fd; /* >= 0: serve this socket (a supervisor's, shared by
                    * its workers); -1: bind cfg's address */
    struct corral_metrics *metrics; /* the server's blocks; NULL: the
                                     * gateway maps its own, for one */
    unsigned worker;                /* which block is this gateway's */
    /* The server's upstream accounts (rates and pauses), shared by its
     * workers; NULL: the gateway maps its own, for one. */
    struct corral_ledger *ledger;
    /* The workers' purge bus (purge_bus.h), for a server of several
     * workers: its socket pairs, from corral_purge_bus_pairs(). NULL: one
     * worker, no bus. */
    const int *bus_fds;
    unsigned n_bus; /* workers, pairs */
};

/* Builds a gateway on base from cfg (borrowed; must outlive it) and starts
 * listening. o may be NULL (bind cfg's address, own metrics). Returns NULL
 * with err set. Caller frees. */
struct corral_gateway *
corral_gateway_new(struct event_base *base, const struct corral_config *cfg,
                   const struct corral_gateway_options *o, char *err,
                   size_t errlen);
/* Serves cfg from now on (taking it; freed with the gateway): new routes
 * and upstreams take the next requests, fills in flight finish on the old
 * ones, and L1 stays as it is, so a route whose key template did not
 * change keeps its values. The client socket, L1, L2, limits and the
 * access log stay as they were (a warning names what changed); the admin
 * is the caller's. Returns 0, or -EINVAL with err (an upstream that
 * cannot be set up) and the old config still served; the caller then
 * frees cfg. */
int corral_gateway_reload(struct corral_gateway *g, struct corral_config *cfg,
                          char *err, size_t errlen);
/* The config it serves. */
const struct corral_config *
corral_gateway_config(const struct corral_gateway *g);
/* Its metrics blocks; its own block is refreshed by
 * corral_gateway_snapshot() (also every second by itself). */
struct corral_metrics *corral_gateway_metrics(const struct corral_gateway *g);
void corral_gateway_snapshot(struct corral_gateway *g);
/* "up", "down", or "disabled" (no l2). */
const char *corral_gateway_l2_state(const struct corral_gateway *g);
/* Reopens the access log (logrotate's SIGUSR1). 0, or -errno with err. */
int corral_gateway_reopen_log(struct corral_gateway *g, char *err,
                              size_t errlen);
/* True once draining has begun. */
bool corral_gateway_draining(const struct corral_gateway *g);

/* How a purge fared: 0 when every instance will hear of it (Redis
 * confirmed it, or there is no l2), -errno when not (it was applied in
 * every worker of this server, and is kept to be replayed to the fleet).
 * gen: a route purge's new generation. */
typedef void corral_gateway_purged_cb(int error, int64_t gen, void *arg);

/* The admin's operations on the key a client request for path?query would
 * use (path and query raw, as on the wire). purge drops it everywhere
 * (L1 of every worker, and with l2 Redis and every instance). Returns 1
 * (it was in this L1) or 0 (it was not), and cb fires once, from the
 * loop; or -ENOENT (no route) or -EINVAL (the request is bad for its
 * route), and cb never fires. refresh starts a background fill: 0,
 * -EALREADY (one runs), -EBUSY (the key backs off), or the same errors. The key
 * goes to key (NUL-terminated, cut to keycap). */
int corral_gateway_purge(struct corral_gateway *g, const char *path,
                         size_t path_len, const char *query, size_t query_len,
                         char *key, size_t keycap, corral_gateway_purged_cb *cb,
                         void *arg);
/* Purges every key of the route whose configured path is path ("/api/
 * price/{coin}") in O(1): its generation goes up (for every worker, and
 * with l2 for every instance, also those that start later), and its keys
 * carry it. Returns 0 and cb fires once with the new generation, or
 * -ENOENT (no such route) and cb never fires. */
int corral_gateway_purge_route(struct corral_gateway *g, const char *path,
                               corral_gateway_purged_cb *cb, void *arg);
int corral_gateway_refresh(struct corral_gateway *g, const char *path,
                           size_t path_len, const char *query, size_t query_len,
                           char *key, size_t keycap);
/* The port the front end listens on. */
uint16_t corral_gateway_port(const struct corral_gateway *g);

/* The TLS port (listen_tls), or 0 without one. */
uint16_t corral_gateway_tls_port(const struct corral_gateway *g);
/* Stops accepting, answers what is in flight, then calls done. */
void corral_gateway_drain(struct corral_gateway *g, void (*done)(void *arg),
                          void *arg);
/* drain_timeout passed: every request still waiting on a fill is
 * answered 503 with Retry-After and "Connection: close" (the fills go on
 * for nobody until the gateway is freed). */
void corral_gateway_drain_expire(struct corral_gateway *g);
/* Frees everything now. NULL is a no-op. */
void corral_gateway_free(struct corral_gateway *g);

#endif
