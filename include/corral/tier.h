/* corral/tier.h — the tier below L1 (L2), as a small table of functions.
 * Redis plugs in here; so does the in-memory fake the tests use. A tier never
 * calls back from inside the call that registered the callback, and calls
 * every get callback exactly once, also when it is torn down. */
#ifndef CORRAL_TIER_H
#define CORRAL_TIER_H

#include <stddef.h>
#include <stdint.h>

struct corral_value;

/* value: a new value with its times set, ownership passed to the callee
 * (NULL on a miss or an error); error: 0, -ENOENT (miss) or another -errno. */
typedef void corral_tier_get_cb(struct corral_value *value, int error,
                                void *arg);
/* Another instance invalidated key, or (for filled callbacks) stored it. */
typedef void corral_tier_invalidate_cb(const void *key, size_t keylen,
                                       void *arg);
/* Another instance gave key's lease back: stored says whether it stored a
 * new value in the tier (then a copy held above the tier is older). */
typedef void corral_tier_released_cb(const void *key, size_t keylen,
                                     int stored, void *arg);
/* won: 1 when this instance now holds the lease, 0 when another does;
 * -errno when the tier cannot tell (the caller then fills on its own). */
typedef void corral_tier_lease_cb(int won, void *arg);

struct corral_tier {
    const char *name; /* for logs: "redis", "fake" */
    void (*get)(void *ctx, const void *key, size_t keylen,
                corral_tier_get_cb *cb, void *arg);
    /* Stores v (borrowed) for ttl_ms, fire and forget. */
    void (*set)(void *ctx, const struct corral_value *v, uint64_t ttl_ms);
    /* Deletes key here and announces it to the other instances. */
    void (*del)(void *ctx, const void *key, size_t keylen);
    /* Calls cb for every key another instance invalidates; cb NULL stops.
     * May be NULL when the tier cannot tell. */
    void (*subscribe)(void *ctx, corral_tier_invalidate_cb *cb, void *arg);

    /* Fleet-wide single flight; all three NULL when the tier has none.
     * lease: try to take key's lease for ttl_ms (one holder fleet-wide;
     * it runs out by itself). cb fires once, from the loop. */
    void (*lease)(void *ctx, const void *key, size_t keylen, uint64_t ttl_ms,
                  corral_tier_lease_cb *cb, void *arg);
    /* Gives key's lease back if this instance still holds it, and tells the
     * others that key was filled (stored: ok != 0) or not. */
    void (*release)(void *ctx, const void *key, size_t keylen, int ok);
    /* Calls cb for every key another instance announces released (never
     * for this instance's own releases); cb NULL stops. */
    void (*watch_released)(void *ctx, corral_tier_released_cb *cb,
                           void *arg);
};

#endif
