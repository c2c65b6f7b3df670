/* fleet.h — what the gateway shares with every instance of its fleet
 * through Redis (the design is doc/fleet.md): upstream pauses (an
 * upstream's Retry-After, heard by every instance at once), upstream rate
 * windows (one admission script per call, pipelined), upstream breakers
 * (an opening heard by every instance at once, one probe per step for the
 * fleet, claimed in Redis) and route generations (a route purge raises
 * one; they only go up, are written back after Redis loses them, and are
 * read before an instance serves).
 * It runs on the connection of corral/redis.h, beside the L2 tier, and
 * listens on its own channel. Every callback fires once, from the loop. */
#ifndef CORRAL_FLEET_H
#define CORRAL_FLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "corral/redis.h"

struct event_base;
struct corral_fleet; /* opaque */

/* The generations hash's name after the prefix: under the fleet's one
 * tag, so every instance reads every generation from one primary. */
#define CORRAL_FLEET_GENS CORRAL_REDIS_FLEET_TAG "gens"

/* What the fleet tells the gateway. */
struct corral_fleet_events {
    /* The upstream called name is paused for ms (by any instance). */
    void (*paused)(const char *name, uint64_t ms, void *arg);
    /* path's generation is at least gen (heard, or read at a resync). */
    void (*generation)(const char *path, uint64_t gen, void *arg);
    /* path's generation here, for the write-back. */
    uint64_t (*current)(const char *path, void *arg);
    /* The upstream called name's breaker is open, no probe for ms, at a
     * backoff step of step_ms (heard, or read at a resync); ms 0: it
     * closed. */
    void (*breaker)(const char *name, uint64_t ms, uint64_t step_ms, void *arg);
    /* A resync finished: generations, pauses and breakers are known. */
    void (*synced)(void *arg);
};

/* The fleet state on conn (borrowed; it must outlive the fleet), under
 * prefix, on db's channel; id names this instance. ev borrowed. Aborts
 * when out of memory (see xalloc.h). */
struct corral_fleet *
corral_fleet_new(struct event_base *base, struct corral_redis *conn,
                 const char *prefix, unsigned db, const char *id,
                 const struct corral_fleet_events *ev, void *arg);
/* Answers every admission and probe in flight -ECANCELED, stops
 * listening, frees. NULL is a no-op. */
void corral_fleet_free(struct corral_fleet *f);

/* The routes (their paths) and upstreams (their names) whose state the
 * fleet keeps and reads again at every resync. Copied. Call again at a
 * reload. */
void corral_fleet_track(struct corral_fleet *f, const char *const *paths,
                        size_t n_paths, const char *const *upstreams,
                        size_t n_upstreams);

/* Has a resync completed since the fleet was made? */
bool corral_fleet_synced(const struct corral_fleet *f);
/* Redis cannot answer now (down, or its last commands timed out):
 * callers that can decide alone should. */
bool corral_fleet_struggling(const struct corral_fleet *f);

/* Admits one call to the upstream called name: verdict 1 go (member names
 * the call in the window: corral_fleet_unadmit() gives it back); 0 count
 * calls were made in the last window_ms, the oldest leaves in ms; -EBUSY
 * paused for ms more; any other -errno: Redis could not tell. */
typedef void corral_fleet_admit_cb(int verdict, uint64_t ms, const char *member,
                                   void *arg);
void corral_fleet_admit(struct corral_fleet *f, const char *name,
                        unsigned count, uint64_t window_ms,
                        corral_fleet_admit_cb *cb, void *arg);
/* Gives an admitted call back to the window (nobody made it). */
void corral_fleet_unadmit(struct corral_fleet *f, const char *name,
                          const char *member);

/* Pauses the upstream called name for ms, for every instance. Fire and
 * forget; a resync of another instance reads it later if it missed it. */
void corral_fleet_pause(struct corral_fleet *f, const char *name, uint64_t ms);

/* The breaker of the upstream called name opened here, or its probe
 * failed: no probe for step_ms, for every instance. With nx only when the
 * fleet's is not open already (a breaker that opens here while another
 * instance's runs a longer step keeps that one). Fire and forget. */
void corral_fleet_breaker_open(struct corral_fleet *f, const char *name,
                               uint64_t step_ms, bool nx);
/* ...closed (a call succeeded), for every instance. Fire and forget. */
void corral_fleet_breaker_close(struct corral_fleet *f, const char *name);
/* Claims the fleet's one probe of name's breaker, held hold_ms: verdict 1
 * this instance probes; 0 not before ms from now (a step or another's
 * probe runs; step_ms the fleet's step, 0 when unknown); any -errno: Redis
 * could not tell. */
typedef void corral_fleet_probe_cb(int verdict, uint64_t ms, uint64_t step_ms,
                                   void *arg);
void corral_fleet_probe(struct corral_fleet *f, const char *name,
                        uint64_t step_ms, uint64_t hold_ms,
                        corral_fleet_probe_cb *cb, void *arg);

/* Raises path's generation above both here and Redis, for every instance.
 * cb hears 0 and the new generation, or -errno when Redis did not confirm
 * (then the caller raises it here alone, and the next resync writes it
 * back). */
typedef void corral_fleet_bump_cb(int error, uint64_t gen, void *arg);
void corral_fleet_bump(struct corral_fleet *f, const char *path, uint64_t here,
                       corral_fleet_bump_cb *cb, void *arg);

#endif
