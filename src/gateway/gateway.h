/* gateway.h — one reactor of the gateway: the front end, the route table,
 * the cache and the upstream pools on one event_base, wired from a config.
 * A request is answered from L1 at once, or joins the one fill for its key,
 * which fetches from the upstream, validates and stores. */
#ifndef CORRAL_GATEWAY_H
#define CORRAL_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct corral_config;
struct corral_gateway; /* opaque */

/* Builds a gateway on base from cfg (borrowed; must outlive it) and starts
 * listening on cfg's address, or on listen_fd when it is >= 0 (a socket a
 * supervisor bound for all its workers). Returns NULL with err set. Caller
 * frees. */
struct corral_gateway *corral_gateway_new(struct event_base *base,
                                          const struct corral_config *cfg,
                                          int listen_fd, char *err,
                                          size_t errlen);
/* The port the front end listens on. */
uint16_t corral_gateway_port(const struct corral_gateway *g);
/* Stops accepting, answers what is in flight, then calls done. */
void corral_gateway_drain(struct corral_gateway *g, void (*done)(void *arg),
                          void *arg);
/* Frees everything now. NULL is a no-op. */
void corral_gateway_free(struct corral_gateway *g);

#endif
