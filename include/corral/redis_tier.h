/* corral/redis_tier.h — the second tier in Redis, behind struct corral_tier.
 * hiredis's async API on the caller's libevent loop: one pipelined command
 * connection, never a blocking call. Every get answers within timeout_ms:
 * a slow or silent Redis is a miss, and a reply that comes later is
 * dropped. While Redis is down every get is a miss (answered from the
 * loop), sets and deletes are dropped, and the tier reconnects with
 * capped exponential backoff (100 ms doubling to 500 ms, so a Redis that
 * comes back is used again within a second). Values are stored
 * binary-safe and versioned (stored-at and expires-at in ms, stale
 * windows, content type, the embedder's aux bytes, body), with PX expiry;
 * anything else found under a key is a miss, counted. It knows nothing of
 * HTTP or routes. */
#ifndef CORRAL_REDIS_TIER_H
#define CORRAL_REDIS_TIER_H

#include <stddef.h>
#include <stdint.h>

#include "corral/tier.h"

struct event_base;
struct corral_redis_tier; /* opaque: the ctx of corral_redis_tier_ops */

extern const struct corral_tier corral_redis_tier_ops;

struct corral_redis_options {
    const char *host;      /* name or IP; NULL when unix_path is set */
    uint16_t port;         /* 1..65535 */
    const char *unix_path; /* a Unix socket instead of host:port */
    unsigned db;           /* SELECT db when not 0 */
    const char *prefix;    /* before every key; NULL = "" */
    const char *password;  /* AUTH when not NULL; never logged */
    uint64_t timeout_ms;   /* per get; 0 = 50 ms */
};

enum corral_redis_state {
    CORRAL_REDIS_DOWN = 0, /* connecting or waiting to reconnect */
    CORRAL_REDIS_UP,
};

struct corral_redis_stats {
    uint64_t hits, misses;
    uint64_t timeouts;   /* gets answered as misses at timeout_ms */
    uint64_t errors;     /* error replies, dropped commands while down */
    uint64_t bad_values; /* foreign versions and garbage under a key */
    uint64_t connects;   /* connections made (1 + reconnects) */
    enum corral_redis_state state;
};

/* Connects in the background (the first gets may be misses). Returns NULL
 * with a reason in err on bad options. o's strings are copied. Free with
 * corral_redis_tier_free() after the caches that use it. */
struct corral_redis_tier *
corral_redis_tier_new(struct event_base *base,
                      const struct corral_redis_options *o, char *err,
                      size_t errlen);

/* Answers every get in flight -ECANCELED, closes the connection and frees
 * t. Not from inside one of its callbacks. NULL is a no-op. */
void corral_redis_tier_free(struct corral_redis_tier *t);

/* An upstream's call budget, fleet-wide: every instance sharing the Redis
 * (and prefix) asks before it calls the upstream called name. verdict 1:
 * go; 0: count calls were made in the last window_ms, the oldest leaves
 * the window in ms; -EBUSY: the upstream is paused (see below) for ms
 * more; any other -errno: Redis could not tell (down, slow, an error), so
 * the caller decides alone. count 0 checks the pause only. cb fires once,
 * from the loop. One EVAL of a short script per call, on Redis's clock. */
typedef void corral_redis_admit_cb(int verdict, uint64_t ms, void *arg);
void corral_redis_tier_admit(struct corral_redis_tier *t, const char *name,
                             unsigned count, uint64_t window_ms,
                             corral_redis_admit_cb *cb, void *arg);
/* Pauses every instance's calls to the upstream called name for ms (an
 * upstream's Retry-After). Fire and forget; dropped while Redis is down. */
void corral_redis_tier_pause(struct corral_redis_tier *t, const char *name,
                             uint64_t ms);

/* Notes: small numbers the fleet shares, each under a name, that only go
 * up (a generation, say). note sets name to value unless Redis holds more,
 * and tells every instance (this one too). Fire and forget; dropped while
 * Redis is down. */
void corral_redis_tier_note(struct corral_redis_tier *t, const char *name,
                            uint64_t value);
/* cb hears every note any instance sets, and the value of each of names
 * read from Redis now and at every reconnect (a note set while this
 * instance was away is not missed). names are copied; cb NULL stops. */
typedef void corral_redis_note_cb(const char *name, size_t len,
                                  uint64_t value, void *arg);
void corral_redis_tier_watch_notes(struct corral_redis_tier *t,
                                   const char *const *names, size_t n,
                                   corral_redis_note_cb *cb, void *arg);

void corral_redis_tier_stats(const struct corral_redis_tier *t,
                             struct corral_redis_stats *out);

/* "up" or "down". */
const char *corral_redis_state_name(enum corral_redis_state s);

#endif
