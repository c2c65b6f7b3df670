/* corral/redis_tier.h — the second tier in Redis, behind struct corral_tier,
 * on a connection of corral/redis.h. It implements the fleet protocol's
 * Layer-1 half: values stored binary-safe and versioned with PX expiry
 * (anything else under a key is a counted miss, and nothing larger than
 * max_value_bytes is written or read), acquire (a usable value by a
 * plain read, else the key's lease by a script that reads it again; the
 * script at once while misses prevail, so a miss is one round trip after
 * a cold start), leases that live a second and are renewed while their
 * fill runs, fill outcomes published to the fleet,
 * purges confirmed by Redis (or queued and replayed), and the resync of a
 * subscriber that was deaf (the purge log replayed; every copy dropped when
 * it cannot be). Every command answers within the connection's timeout. It
 * knows nothing of what a value holds or who asks for it. */
#ifndef CORRAL_REDIS_TIER_H
#define CORRAL_REDIS_TIER_H

#include <stddef.h>
#include <stdint.h>

#include "corral/redis.h"
#include "corral/tier.h"

struct event_base;
struct corral_redis_tier; /* opaque: the ctx of corral_redis_tier_ops */

extern const struct corral_tier corral_redis_tier_ops;

struct corral_redis_tier_options {
    const char *prefix;     /* before every key and channel; NULL = "" */
    unsigned db;            /* the connection's db: it names the channel */
    size_t max_value_bytes; /* larger values stay above the tier; 0 = 1 MB */
};

struct corral_redis_tier_stats {
    uint64_t hits, misses;
    uint64_t bad_values;  /* garbage, foreign versions, wrong types */
    uint64_t too_large;   /* values not written: over max_value_bytes */
    uint64_t large_found; /* values found over it: not read, a miss */
    uint64_t leases_won;
    uint64_t leases_lost;    /* ran out while held (Redis stalled) */
    uint64_t late_leases;    /* granted after the asker stopped waiting,
                              * given back */
    uint64_t purges_queued;  /* not confirmed: kept for a replay */
    uint64_t purges_dropped; /* the replay queue was full */
    uint64_t resyncs;        /* after a deaf subscriber */
    uint64_t resync_losses;  /* of those, purges could not be replayed */
    uint64_t unheard;        /* resyncs for a purge logged, not heard */
    uint64_t split_acquires; /* asked one name at a time: the key's slot
                              * was being migrated (TRYAGAIN) */
};

/* The tier on conn (borrowed: it must outlive the tier). Subscribes to
 * the tier's channel. Returns NULL with a reason in err on bad options.
 * Free after the caches that use it. */
struct corral_redis_tier *
corral_redis_tier_new(struct event_base *base, struct corral_redis *conn,
                      const struct corral_redis_tier_options *o, char *err,
                      size_t errlen);

/* Gives back every lease it holds (as abandoned), answers every callback
 * still owed -ECANCELED, unsubscribes and frees t. NULL is a no-op. */
void corral_redis_tier_free(struct corral_redis_tier *t);

/* This instance's id in the fleet ("<pid>-<random>"). */
const char *corral_redis_tier_id(const struct corral_redis_tier *t);

void corral_redis_tier_stats(const struct corral_redis_tier *t,
                             struct corral_redis_tier_stats *out);

#endif
