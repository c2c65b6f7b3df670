/* corral/fake_tier.h — an in-memory tier for tests and demos: it keeps
 * copies, answers through the loop after a configurable latency, and can
 * play "another instance" invalidating a key. Not for production. */
#ifndef CORRAL_FAKE_TIER_H
#define CORRAL_FAKE_TIER_H

#include <stddef.h>
#include <stdint.h>

#include "corral/tier.h"

struct event_base;
struct corral_fake_tier; /* opaque */

extern const struct corral_tier corral_fake_tier_ops;

struct corral_fake_tier_counts {
    uint64_t gets, hits, sets, dels, leases, releases;
};

/* A new fake tier answering after latency_ms, reading time from clock (ms;
 * NULL = the loop's cached wall clock). Caller frees. */
struct corral_fake_tier *corral_fake_tier_new(struct event_base *base,
                                              uint64_t latency_ms,
                                              uint64_t (*clock)(void *),
                                              void *clock_arg);
/* Answers every get still in flight with -ECANCELED, then frees. NULL is a
 * no-op. */
void corral_fake_tier_free(struct corral_fake_tier *t);

/* Plays another instance: drops key and tells the subscriber. */
void corral_fake_tier_remote_invalidate(struct corral_fake_tier *t,
                                        const void *key, size_t keylen);
/* Plays another instance that takes key's lease for ttl_ms (and computes
 * somewhere else). */
void corral_fake_tier_hold_lease(struct corral_fake_tier *t, const void *key,
                                 size_t keylen, uint64_t ttl_ms);
/* Plays that instance finishing: stores v (NULL: it failed) for ttl_ms,
 * gives its lease back and announces the key released. With v NULL, the
 * first lease another instance holds is released. */
void corral_fake_tier_remote_fill(struct corral_fake_tier *t,
                                  const struct corral_value *v,
                                  uint64_t ttl_ms);

void corral_fake_tier_counts(const struct corral_fake_tier *t,
                             struct corral_fake_tier_counts *out);

#endif
