/* listener.h — a listening TCP socket on the loop: bind (IPv4, IPv6 or a
 * name), accept in batches, and a plan for running out of descriptors.
 * Every accepted socket is non-blocking and close-on-exec and goes to one
 * callback, which owns it. */
#ifndef CORRAL_LISTENER_H
#define CORRAL_LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct corral_listener; /* opaque */

typedef void corral_accept_cb(int fd, void *arg);

/* Listens on host:port (host NULL or "" = all interfaces; an IPv6 literal
 * may be in brackets; port 0 = any) with backlog (0 = 511), SO_REUSEPORT
 * when reuse_port. Returns NULL with a reason in err on failure. */
struct corral_listener *corral_listener_new(struct event_base *base,
                                            const char *host, uint16_t port,
                                            int backlog, bool reuse_port,
                                            corral_accept_cb *cb, void *arg,
                                            char *err, size_t errlen);

/* Serves fd, a socket already bound and listening (inherited from a
 * supervisor, so that several worker processes share one accept queue),
 * made non-blocking. The listener owns fd from here (it closes its copy).
 * Returns NULL with a reason in err. */
struct corral_listener *corral_listener_adopt(struct event_base *base, int fd,
                                              corral_accept_cb *cb, void *arg,
                                              char *err, size_t errlen);

/* A bound, listening, non-blocking, close-on-exec TCP socket on host:port
 * (as for corral_listener_new()), or -1 with a reason in err. */
int corral_listen_socket(const char *host, uint16_t port, int backlog,
                         bool reuse_port, char *err, size_t errlen);

/* The port it listens on, in host order. */
uint16_t corral_listener_port(const struct corral_listener *l);

/* Clients closed at once because the process had no descriptor left. */
uint64_t corral_listener_refused(const struct corral_listener *l);

/* Stops listening and closes the socket. NULL is a no-op. */
void corral_listener_free(struct corral_listener *l);

#endif
