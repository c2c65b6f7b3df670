/* corral/fake_tier.h — an in-memory tier for tests and demos: it keeps
 * copies, answers through the loop after a configurable latency, gives
 * fleet-wide leases, and can play "another instance" purging a key,
 * holding a lease, filling, failing, or the fleet coming back after a gap.
 * Not for production. */
#ifndef CORRAL_FAKE_TIER_H
#define CORRAL_FAKE_TIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "corral/tier.h"

struct event_base;
struct corral_fake_tier; /* opaque */

extern const struct corral_tier corral_fake_tier_ops;

struct corral_fake_tier_counts {
    uint64_t gets, hits, sets, dels, leases, releases;
    uint64_t stored, failed, abandoned; /* releases, by outcome */
};

/* A new fake tier answering after latency_ms, reading time from clock (ms;
 * NULL = the loop's cached wall clock). Caller frees. */
struct corral_fake_tier *corral_fake_tier_new(struct event_base *base,
                                              uint64_t latency_ms,
                                              uint64_t (*clock)(void *),
                                              void *clock_arg);
/* Answers every call still in flight (-ECANCELED), then frees. NULL is a
 * no-op. */
void corral_fake_tier_free(struct corral_fake_tier *t);

/* Plays another instance: drops key and tells the listener. */
void corral_fake_tier_remote_invalidate(struct corral_fake_tier *t,
                                        const void *key, size_t keylen);
/* Plays another instance that takes key's lease for ttl_ms (and computes
 * somewhere else). */
void corral_fake_tier_hold_lease(struct corral_fake_tier *t, const void *key,
                                 size_t keylen, uint64_t ttl_ms);
/* Plays that instance finishing: stores v for ttl_ms, gives its lease back
 * and announces the key stored. With v NULL, the first lease another
 * instance holds is given back without a result (abandoned). */
void corral_fake_tier_remote_fill(struct corral_fake_tier *t,
                                  const struct corral_value *v,
                                  uint64_t ttl_ms);
/* Plays that instance failing: key's lease becomes its failure for
 * retry_ms, and the failure is announced. */
void corral_fake_tier_remote_fail(struct corral_fake_tier *t, const void *key,
                                  size_t keylen, int error, const char *message,
                                  uint64_t retry_ms);
/* Plays the fleet heard again after a gap (lost: purges were missed). */
void corral_fake_tier_resync(struct corral_fake_tier *t, bool lost);
/* Plays the fleet going quiet (the tier cannot hear it for now). */
void corral_fake_tier_deaf(struct corral_fake_tier *t);
/* Makes the next acquires answer "cannot tell" (a Redis that times out),
 * or not. */
void corral_fake_tier_unknown(struct corral_fake_tier *t, bool on);

void corral_fake_tier_counts(const struct corral_fake_tier *t,
                             struct corral_fake_tier_counts *out);

#endif
