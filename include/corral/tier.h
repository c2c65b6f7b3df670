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
/* Another instance invalidated key. */
typedef void corral_tier_invalidate_cb(const void *key, size_t keylen,
                                       void *arg);

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
};

#endif
