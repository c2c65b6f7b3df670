/* corral/tier.h — the tier below L1 (L2), as a small table of functions.
 * Redis plugs in here; so does the in-memory fake the tests use. A tier
 * never calls back from inside the call that registered the callback, and
 * calls every callback it was given exactly once, also when it is torn
 * down. A tier that is shared by several instances (a fleet) also gives
 * fleet-wide single flight: a fill first acquires the key, and only the
 * holder of its lease computes. */
#ifndef CORRAL_TIER_H
#define CORRAL_TIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct corral_value;
struct corral_tier_lease; /* opaque: a lease this instance holds */

/* value: a new value with its times set, ownership passed to the callee
 * (NULL on a miss or an error); error: 0, -ENOENT (miss) or another -errno. */
typedef void corral_tier_get_cb(struct corral_value *value, int error,
                                void *arg);
/* 0: done (for a purge: every instance will hear of it); -errno: not
 * (the tier keeps trying where it says so). */
typedef void corral_tier_done_cb(int error, void *arg);

/* What acquire found. */
enum corral_tier_verdict {
    CORRAL_TIER_VALUE,   /* a usable value: fresh, and newer if asked */
    CORRAL_TIER_WON,     /* this fill holds the key's lease: compute */
    CORRAL_TIER_HELD,    /* another instance computes: wait, look again */
    CORRAL_TIER_FAILED,  /* another instance's fill failed recently */
    CORRAL_TIER_UNKNOWN, /* the tier cannot tell (down, slow): compute */
};

struct corral_tier_answer {
    enum corral_tier_verdict verdict;
    /* VALUE: the value. Otherwise a copy past its expiry that a stale
     * window may still want, or NULL. Ownership passed to the callee. */
    struct corral_value *value;
    struct corral_tier_lease *lease; /* WON: give it back with release */
    /* HELD: look again in ms at the latest (the holder's lease left, or
     * sooner while the tier is deaf). FAILED: the key's backoff left, ms. */
    uint64_t ms;
    int error;           /* FAILED: the failure's -errno */
    const char *message; /* FAILED: borrowed for the callback */
};
typedef void corral_tier_acquire_cb(const struct corral_tier_answer *a,
                                    void *arg);

/* What acquire wants. */
struct corral_tier_want {
    uint64_t now_ms;     /* the asker's clock: a value must expire later */
    uint64_t newer_than; /* a value must be stored after this (a refresh);
                          * 0: any */
};

/* How a fill ended, for the fleet. */
enum corral_outcome_kind {
    CORRAL_OUTCOME_STORED,    /* a new value is in the tier */
    CORRAL_OUTCOME_FAILED,    /* no value; no new try before retry_ms */
    CORRAL_OUTCOME_ABANDONED, /* no result: someone else may try now */
};
struct corral_outcome {
    enum corral_outcome_kind kind;
    int error;           /* FAILED: -errno */
    const char *message; /* FAILED */
    uint64_t retry_ms;   /* FAILED: the key's backoff */
    uint64_t stored_at;  /* STORED: the new value's, ms (0: not known) */
};

/* What a tier tells the cache above it. */
struct corral_tier_events {
    /* Another instance (or this one) purged key. */
    void (*invalidated)(const void *key, size_t keylen, void *arg);
    /* A fill of key ended somewhere in the fleet (never this instance's
     * own). */
    void (*released)(const void *key, size_t keylen,
                     const struct corral_outcome *o, void *arg);
    /* The tier can hear the fleet again after a gap (or for the first
     * time). lost: purges may have been missed and cannot be replayed,
     * so every copy above the tier is suspect. Waits on other instances
     * should look again. */
    void (*resync)(bool lost, void *arg);
    /* The tier cannot hear the fleet for now: waits on other instances
     * had better look again soon rather than wait for word. */
    void (*deaf)(void *arg);
};

struct corral_tier {
    const char *name; /* for logs: "redis", "fake" */
    void (*get)(void *ctx, const void *key, size_t keylen,
                corral_tier_get_cb *cb, void *arg);
    /* Stores v (borrowed) for ttl_ms, fire and forget. */
    void (*set)(void *ctx, const struct corral_value *v, uint64_t ttl_ms);
    /* Deletes key here and announces it to the other instances. cb (may
     * be NULL) hears whether the fleet will hear of it. */
    void (*del)(void *ctx, const void *key, size_t keylen,
                corral_tier_done_cb *cb, void *arg);
    /* Tells ev (borrowed) what happens in the fleet; ev NULL stops. May
     * be NULL when the tier has no fleet. */
    void (*listen)(void *ctx, const struct corral_tier_events *ev, void *arg);

    /* Fleet-wide single flight; both NULL when the tier has none.
     * acquire: one look at key: a usable value, else the key's lease (or
     * why not). cb fires once, from the loop. */
    void (*acquire)(void *ctx, const void *key, size_t keylen,
                    const struct corral_tier_want *want,
                    corral_tier_acquire_cb *cb, void *arg);
    /* Gives a lease back with the fill's outcome, which every instance
     * hears. Takes the lease, which the tier keeps alive until then. */
    void (*release)(void *ctx, struct corral_tier_lease *lease,
                    const struct corral_outcome *o);
};

#endif
