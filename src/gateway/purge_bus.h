/* purge_bus.h — the workers' purge bus: a key purged through one worker's
 * admin reaches every other worker of the server at once, which drops it
 * from its L1 too, whatever Redis does (with l2, Redis tells the other
 * instances). One datagram socket pair per worker, made by the supervisor
 * before it forks, so workers started again later inherit the same pairs:
 * fds[2i] is written by the others, fds[2i+1] read by worker i. */
#ifndef CORRAL_PURGE_BUS_H
#define CORRAL_PURGE_BUS_H

#include <stddef.h>

struct event_base;
struct corral_purge_bus; /* opaque */

/* The pairs of n workers: 2n descriptors, close-on-exec. NULL (after
 * logging that a purge reaches one worker only) when they cannot be made.
 * Caller frees with corral_purge_bus_pairs_free(). */
int *corral_purge_bus_pairs(unsigned n);
/* Closes and frees them. NULL is a no-op. */
void corral_purge_bus_pairs_free(int *fds, unsigned n);

/* Another worker purged key[len]. */
typedef void corral_purge_bus_heard_cb(const char *key, size_t len, void *arg);

/* Worker worker's end of the bus fds[2n] (borrowed; must outlive it):
 * heard fires from base's loop for each key another worker sends. NULL
 * when worker >= n or the event cannot be added. Caller frees. */
struct corral_purge_bus *corral_purge_bus_new(struct event_base *base,
                                              const int *fds, unsigned n,
                                              unsigned worker,
                                              corral_purge_bus_heard_cb *heard,
                                              void *arg);
/* Sends key[len] to every other worker, without waiting: a worker whose
 * socket is full misses it, and the log says so. */
void corral_purge_bus_send(struct corral_purge_bus *bus, const char *key,
                           size_t len);
/* NULL is a no-op. */
void corral_purge_bus_free(struct corral_purge_bus *bus);

#endif
