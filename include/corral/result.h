/* corral/result.h — what a caller waiting on a key gets: the value or the
 * error, and where it came from. Shared by the cache (corral/cache.h) and
 * its single flight, which delivers one result to every waiter and knows
 * nothing else of the cache. */
#ifndef CORRAL_RESULT_H
#define CORRAL_RESULT_H

#include <stdbool.h>
#include <stdint.h>

struct corral_value;

/* Where a result came from. */
enum corral_source {
    /* An error (but one a backing-off key remembers: BACKOFF), or a miss
     * of corral_get(). */
    CORRAL_SOURCE_NONE = 0,
    CORRAL_SOURCE_L1,        /* fresh in L1 */
    CORRAL_SOURCE_L2,        /* found in the tier below, promoted to L1 */
    CORRAL_SOURCE_STORED,    /* the caller whose miss started the fill */
    CORRAL_SOURCE_COLLAPSED, /* waited on a fill another caller started */
    /* Expired, inside its stale-while-revalidate window: answered at once
     * while one background refresh runs. */
    CORRAL_SOURCE_STALE,
    /* Expired, inside its stale-if-error window: answered because the
     * fill failed. */
    CORRAL_SOURCE_STALE_ERROR,
    /* Expired, inside its stale-if-error window: the key's last fill
     * failed and its next try runs (in any state: reading the tier,
     * waiting on another instance, computing). Answered at once; that try
     * answers nobody who got this. */
    CORRAL_SOURCE_STALE_RETRY,
    /* The key backs off after a failed fill: with a value, an expired one
     * L1 keeps (any of its stale windows); with an error, the one the
     * fill ended with. */
    CORRAL_SOURCE_BACKOFF,
};
const char *corral_source_name(enum corral_source source);
/* Is a value answered from source past its expiry? (STALE, STALE_ERROR,
 * STALE_RETRY, and BACKOFF with a value.) */
bool corral_source_stale(enum corral_source source);

struct corral_result {
    /* 0; -ENOENT (corral_get miss); -ETIMEDOUT (fill deadline); -ECANCELED
     * (waiter cancelled, cache torn down); -EAGAIN (too many waiters on the
     * key); or the code the compute gave corral_fill_fail(). */
    int error;
    const char *message; /* borrowed for the callback; "" when ok */
    enum corral_source source;
    struct corral_value *value; /* borrowed for the callback; NULL on error */
    /* With an error: ms until asking again can help (until the key's next
     * try: its backoff, at least what the compute said with
     * corral_fill_fail_retry()); 0 = unknown. */
    uint64_t retry_after_ms;
};

typedef void corral_result_cb(const struct corral_result *res, void *arg);

#endif
