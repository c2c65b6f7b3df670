/* generations.h — route generations: one number per route that a purge of
 * the whole route raises, folded into every key of the route, so each key
 * it had is out of reach at once (the old values age out of L1 and L2 by
 * themselves). The numbers live in slots the caller maps for every worker
 * of a server (metrics.h); with l2, the fleet (fleet.h) carries them to
 * every instance, and back from it. They only ever go up.
 *
 * Not to be confused with a serving set (gateway.c): what one config
 * makes, replaced by a reload. */
#ifndef CORRAL_GENERATIONS_H
#define CORRAL_GENERATIONS_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct corral_generations; /* opaque */

/* A route purge's answer: error 0 when every instance will hear of it,
 * -errno when not (it is applied in every worker of this server, and
 * kept for the fleet's next write-back); gen is the route's new
 * generation. */
typedef void corral_generations_purged_cb(int error, int64_t gen, void *arg);

/* What the fleet answers a raise: 0 and the generation it holds now, or
 * -errno (Redis did not confirm). */
typedef void corral_generations_sent_cb(int error, uint64_t gen, void *arg);
/* Raises path's generation above here in every instance, then calls cb
 * once, from the loop (corral_fleet_bump()). */
typedef void corral_generations_send_fn(void *ctx, const char *path,
                                        uint64_t here,
                                        corral_generations_sent_cb *cb,
                                        void *arg);

/* The generations in slots[n_slots] (borrowed; zeroed before any worker
 * uses them; must outlive it). NULL when out of memory. */
struct corral_generations *corral_generations_new(struct event_base *base,
                                                  uint32_t *slots,
                                                  unsigned n_slots);
/* NULL is a no-op. */
void corral_generations_free(struct corral_generations *gens);
/* Route purges go through send(ctx, ...) from now on (the fleet, once
 * it exists); NULL: this server only. */
void corral_generations_use_fleet(struct corral_generations *gens,
                                  corral_generations_send_fn *send, void *ctx);

/* The slot of the route whose configured path is route_path: a hash of
 * the path, the same in every worker and instance, so two routes may
 * share one (a purge of either then purges both: more misses, never a
 * wrong answer). */
unsigned corral_generations_slot(const struct corral_generations *gens,
                                 const char *route_path);
/* The one place a key gets its route's generation: key[*keylen] becomes
 * "~<generation>~<key>" (CORRAL_CONFIG_GENERATION_MARK) unless the
 * generation is 0. No key without a generation starts with '~', and the
 * digits end at the second one, so a key with one can be no other key.
 * Returns 0, or -EMSGSIZE (it would not fit in keycap; key unchanged). */
int corral_generations_fold(const struct corral_generations *gens,
                            unsigned slot, char *key, size_t *keylen,
                            size_t keycap);

/* path's generation here (the fleet's write-back reads it). */
uint64_t corral_generations_current(const struct corral_generations *gens,
                                    const char *path);
/* path's generation is at least value (heard from the fleet, or read
 * from Redis at start); a lower one is ignored. */
void corral_generations_raise(struct corral_generations *gens, const char *path,
                              uint64_t value);
/* Purges every key of the route path: its generation goes up in every
 * worker, and through the fleet in every instance. cb fires once, from
 * the loop. */
void corral_generations_purge(struct corral_generations *gens, const char *path,
                              corral_generations_purged_cb *cb, void *arg);

#endif
