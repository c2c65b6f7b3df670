/* corral/cache.h — libcorral: a two-tier cache with single flight.
 * One struct corral_cache per event_base, never shared across threads, no
 * locks. On a miss the first caller creates a pending record and starts
 * compute; later callers for the same key wait on it, and the one result fans
 * out to all of them. Every result callback fires exactly once, always from
 * the loop (never from inside the call that registered it), except for
 * corral_waiter_cancel() and corral_cache_free(), which answer -ECANCELED
 * before they return. */
#ifndef CORRAL_CACHE_H
#define CORRAL_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "corral/result.h"
#include "corral/strategy.h"
#include "corral/tier.h"
#include "corral/value.h"

struct event_base;
struct corral_cache;  /* opaque */
struct corral_fill;   /* opaque: one compute in flight */
struct corral_waiter; /* opaque: one caller waiting for a result */

/* Starts producing the value for key; later reports with corral_fill_done()
 * or corral_fill_fail(). May report before returning. */
typedef void corral_compute_cb(struct corral_fill *fill, const char *key,
                               size_t keylen, void *arg);
/* The cache gave up on a fill (deadline or teardown): stop the work; the
 * fill handle is dead and must not be reported on. */
typedef void corral_abort_cb(void *arg);

struct corral_cache_options {
    size_t max_bytes;           /* L1 budget; 0 = 64 MB */
    uint64_t fill_timeout_ms;   /* deadline of a fill; 0 = 10 s */
    uint32_t max_waiters;       /* per key; 0 = 10000 */
    uint64_t sweep_interval_ms; /* background expiry sweep; 0 = 1000 */
    /* After a failed fill, the key's next fill waits a jittered interval
     * that starts at backoff_min_ms and doubles up to backoff_max_ms; one
     * success resets it. Meanwhile callers get a stale value if L1 keeps
     * one, else the remembered error. 0 = 1 s and 60 s. */
    uint64_t backoff_min_ms;
    uint64_t backoff_max_ms;
    const struct corral_tier *tier; /* the tier below; NULL = L1 only */
    void *tier_ctx;
    /* ms on the wall clock; NULL = CLOCK_REALTIME. Tests pass a fake. */
    uint64_t (*clock)(void *arg);
    void *clock_arg;
};

/* A new cache on base. opts may be NULL. Returns NULL on bad options.
 * Caller frees with corral_cache_free(). */
struct corral_cache *corral_cache_new(struct event_base *base,
                                      const struct corral_cache_options *opts);
/* Answers every waiter with -ECANCELED, aborts every fill, frees. Safe from
 * inside a result callback (the free then happens when it returns). NULL is
 * a no-op. The tier must outlive the cache. */
void corral_cache_free(struct corral_cache *c);

/* The cache's clock, in ms. */
uint64_t corral_cache_now(const struct corral_cache *c);

/* Synchronous L1 lookup for the hot path: a fresh value, or NULL. Counts a
 * hit; a NULL counts nothing (the caller's next call decides). Borrowed;
 * valid until the caller returns to the loop: corral_value_ref() to keep. */
struct corral_value *corral_cache_peek(struct corral_cache *c, const void *key,
                                       size_t keylen);

/* L1, then the tier below (promoting a hit into L1 for its remaining ttl);
 * never computes: a miss answers -ENOENT, and a tier that has not answered
 * within the cache's fill_timeout_ms answers -ETIMEDOUT. Returns the
 * waiter, valid until its callback fires; NULL only while the cache is
 * being freed (corral_cache_free() called from a result callback), when no
 * callback will fire. */
struct corral_waiter *corral_get(struct corral_cache *c, const void *key,
                                 size_t keylen, corral_result_cb *cb,
                                 void *arg);

/* Is v, read from the tier below (another process wrote it), fit to
 * serve for this compute's key at now_ms? false makes it a counted miss
 * that the fill replaces. */
typedef bool corral_fit_cb(const struct corral_value *v, uint64_t now_ms,
                           void *arg);

/* corral_get() that takes a value from the tier below only when fit
 * (may be NULL: every value is) says it is fit; else a counted miss
 * (-ENOENT). fit_arg: borrowed, until the callback fires. */
struct corral_waiter *corral_get_fit(struct corral_cache *c, const void *key,
                                     size_t keylen, corral_fit_cb *fit,
                                     void *fit_arg, corral_result_cb *cb,
                                     void *arg);

/* A fill starts (delta 1) or stops (-1) holding a compute's arg: arg
 * must stay valid from the one to the other, whatever the fill does
 * between (read the tier, wait on another instance, compute, or never
 * compute at all). */
typedef void corral_hold_cb(void *arg, int delta);

/* How to compute a missing value. */
struct corral_compute {
    corral_compute_cb *fn;
    void *arg;        /* borrowed: must outlive every fill it starts (or
                       * be held: see hold); fn's, fit's and hold's */
    const void *data; /* what this caller's fill needs (a path, say):
                       * copied into a fill this call starts, read back with
                       * corral_fill_data(); never copied for a waiter that
                       * joins a fill already running */
    size_t data_len;
    corral_fit_cb *fit;   /* may be NULL: every tier value is fit */
    corral_hold_cb *hold; /* may be NULL: arg outlives the cache */
};

/* L1, then the tier below, then one compute per key however many callers
 * ask. An expired value inside its stale-while-revalidate window is
 * answered at once (CORRAL_SOURCE_STALE) while one background refresh
 * runs; a fresh one may start an early refresh (strategy->beta). A key
 * whose last fill failed answers from its backoff (see the options) until
 * its next try; while that try runs, an expired value inside its
 * stale-if-error window is answered at once (CORRAL_SOURCE_STALE_RETRY).
 * No caller waits on a fill while L1 keeps such a copy. strategy and
 * compute: borrowed, copied. fill_timeout_ms: the deadline
 * of a fill this call starts (0 = the cache's). Returns the waiter, valid
 * until its callback fires; NULL only while the cache is being freed, as
 * for corral_get(). */
struct corral_waiter *corral_get_or_compute(
    struct corral_cache *c, const void *key, size_t keylen,
    const struct corral_strategy *strategy, uint64_t fill_timeout_ms,
    const struct corral_compute *compute, corral_result_cb *cb, void *arg);

/* corral_get_or_compute() with the default strategy and deadline, for a
 * compute that needs no data. */
struct corral_waiter *corral_get_with_fallback(struct corral_cache *c,
                                               const void *key, size_t keylen,
                                               corral_compute_cb *compute,
                                               void *compute_arg,
                                               corral_result_cb *cb, void *arg);

/* Starts a background fill of key (no caller waits on it; its value is
 * stored and later callers get it) unless one is running or the key is
 * backing off. Arguments as for corral_get_or_compute(). Returns 0 when
 * started, -EALREADY (a fill runs), -EBUSY (backing off), -EINVAL (bad key
 * length) or -ESHUTDOWN (the cache is being freed). */
int corral_refresh(struct corral_cache *c, const void *key, size_t keylen,
                   const struct corral_strategy *strategy,
                   uint64_t fill_timeout_ms,
                   const struct corral_compute *compute);

/* corral_refresh() that wants a new value, not a copy the tier below
 * already has: only a value stored after this call (here, or by another
 * instance's fill) ends it. For an operator's "refetch now". */
int corral_refetch(struct corral_cache *c, const void *key, size_t keylen,
                   const struct corral_strategy *strategy,
                   uint64_t fill_timeout_ms,
                   const struct corral_compute *compute);

/* Should a hit on v (fresh) refresh it early? The XFetch draw of
 * strategy->beta; false when beta is 0. For callers that answer from
 * corral_cache_peek() and then call corral_refresh(). */
bool corral_cache_early(struct corral_cache *c, const struct corral_value *v,
                        double beta);

/* Stops waiting: the callback fires with -ECANCELED before this returns. The
 * fill and the other waiters go on. Called on a waiter whose callback is
 * running (from inside that callback), it does nothing. */
void corral_waiter_cancel(struct corral_waiter *w);

/* Stores value under its own key in L1 and the tier below. Takes a
 * reference (the caller keeps its own). Returns 0, or -EINVAL (already
 * stored elsewhere, or a zero ttl) / -E2BIG (larger than the L1 budget). */
int corral_set_with_strategy(struct corral_cache *c, struct corral_value *value,
                             const struct corral_strategy *strategy);

/* Puts v (not stored yet, under old's key) in L1 in old's place, with
 * old's times, when old is still L1's value for that key: for an embedder
 * that made more of old (another form of its body, say) and keeps it for
 * the readers that follow. The tier below is not written. Takes a
 * reference (the caller keeps its own). Returns 0, or -ESTALE (old is no
 * longer L1's value: v is not stored), -EINVAL (v stored already, or under
 * another key) or -E2BIG (larger than the L1 budget). */
int corral_cache_replace(struct corral_cache *c, const struct corral_value *old,
                         struct corral_value *v);

/* Drops key from L1 and the tier below (which tells other instances, whose
 * caches drop it too). A fill in flight for the key, here or where the
 * purge is heard, goes on and answers its waiters, but its value is not
 * stored: the purge is not undone, and the next request starts a new fill.
 * Returns 1 if L1 had it, else 0. */
int corral_invalidate(struct corral_cache *c, const void *key, size_t keylen);

/* Drops key from this cache only: L1, and a fill in flight as for
 * corral_invalidate(). For a purge another process of the same program
 * took, which tells the tier below itself. Returns 1 if L1 had it. */
int corral_invalidate_local(struct corral_cache *c, const void *key,
                            size_t keylen);

/* How a purge fared beyond this cache: 0 when the tier below confirmed it
 * (every instance will hear of it), or there is no tier; -errno when it
 * could not (the tier keeps it to try again, where it can). */
typedef void corral_purged_cb(int error, void *arg);
/* corral_invalidate() that tells cb (once, from the loop) how it fared
 * beyond this cache. Returns what corral_invalidate() returns. */
int corral_purge(struct corral_cache *c, const void *key, size_t keylen,
                 corral_purged_cb *cb, void *arg);

/* Reports the fill's value: stores it (with the fill's strategy) and fans
 * the same reference out to every waiter. Takes ownership of the reference,
 * also on failure. value's key must be the fill's key. */
void corral_fill_done(struct corral_fill *fill, struct corral_value *value);
/* corral_fill_done() with its own lifetime instead of the strategy's (a
 * negative answer kept briefly, say). ttl_ms > 0. */
void corral_fill_done_ttl(struct corral_fill *fill, struct corral_value *value,
                          uint64_t ttl_ms);
/* corral_fill_done() with a lifetime no longer than max_ttl_ms: the
 * strategy's ttl, or max_ttl_ms when that is shorter, either drawn with
 * the strategy's jitter, so it never lives longer than the cap. A
 * max_ttl_ms of 0 keeps nothing (corral_fill_done_nostore()). */
void corral_fill_done_capped(struct corral_fill *fill,
                             struct corral_value *value, uint64_t max_ttl_ms);
/* Reports a value that must not be kept: every waiter of the fill gets it
 * (the leader as STORED, the others as COLLAPSED, as with
 * corral_fill_done()), marked corral_value_nostore(), but it is stored
 * nowhere, neither in L1 nor in the tier below, and a copy the key had is
 * dropped from L1 (and, when L1 had one, from the tier below, which tells
 * the other instances), so no stale window serves it instead of what the
 * compute now says. A lease goes back as abandoned: a waiter elsewhere
 * computes for its own callers. It counts as a success (the key's backoff
 * ends). Takes ownership of the reference, also on failure. */
void corral_fill_done_nostore(struct corral_fill *fill,
                              struct corral_value *value);
/* Reports failure: every waiter gets the same error (< 0) and message
 * (copied), or a stale value inside its stale-if-error window. Nothing is
 * stored. The key backs off (see the options). */
void corral_fill_fail(struct corral_fill *fill, int error, const char *message);
/* corral_fill_fail() that also says when trying again can help (the
 * source's own word on it, say): the key's next fill waits at least that
 * long, and the error carries it. -EBUSY (a pause or a rate budget, not a
 * failure of the key) sets that wait without growing the backoff. */
void corral_fill_fail_retry(struct corral_fill *fill, int error,
                            const char *message, uint64_t retry_after_ms);
/* The compute's own work (a call to its source, say) starts now: the value's
 * fill_ms, the early refresh's delta, counts from here, not from when
 * compute was called (a wait for a rate slot is not the work's time).
 * Optional: without it, fill_ms counts from the compute's start. */
void corral_fill_started(struct corral_fill *fill);
/* Asks to be told if the cache gives up on this fill. Call from compute. */
void corral_fill_on_abort(struct corral_fill *fill, corral_abort_cb *cb,
                          void *arg);
/* The key f fills (not NUL-terminated); valid while f is. */
const void *corral_fill_key(const struct corral_fill *f, size_t *keylen);

/* The data the fill's first caller gave (corral_compute.data), and its
 * length in *len. Borrowed; valid until the fill is reported or aborted. */
const void *corral_fill_data(const struct corral_fill *f, size_t *len);
/* True when no caller waits on f: a background refresh (its callers had
 * a stale answer, or none asked: an early refresh). A compute may give it
 * a lower priority. */
bool corral_fill_background(const struct corral_fill *f);

struct corral_stats {
    uint64_t hits_l1; /* fresh L1 answers (peek and get) */
    uint64_t hits_l2; /* answers promoted from the tier below */
    uint64_t misses;  /* lookups that found nothing fresh */
    uint64_t fills_started;
    uint64_t fills_ok;
    uint64_t fills_failed;    /* fill_fail and deadlines */
    uint64_t fills_timed_out; /* of fills_failed, by deadline */
    uint64_t fills_in_flight;
    uint64_t waiters_collapsed; /* callers that joined another's fill */
    uint64_t waits_remote; /* fills that waited on another instance's lease */
    uint64_t failures_shared; /* fills answered by another's failure */
    uint64_t tier_rejects;    /* tier values refused: another key's, or unfit */
    uint64_t tier_resyncs_lost; /* L1 dropped: the tier missed purges */
    uint64_t waiters_cancelled;
    uint64_t stale_hits;      /* stale answers while a refresh runs */
    uint64_t stale_errors;    /* stale answers instead of an error, or
                               * instead of waiting on a failed key's try */
    uint64_t refreshes;       /* background fills started (stale, early) */
    uint64_t early_refreshes; /* of refreshes, started early by a hit */
    uint64_t backoffs;        /* failed fills that set a key's backoff */
    uint64_t backoff_answers; /* callers answered from a backoff */
    uint64_t entries;         /* in L1 now */
    uint64_t bytes;           /* charged to the L1 budget now */
    uint64_t form_bytes[CORRAL_VALUE_FORMS]; /* L1's bytes of each form
                                              * kept (corral/value.h) */
    uint64_t max_bytes;
    uint64_t evictions;
    uint64_t expirations;
};
void corral_cache_stats(const struct corral_cache *c, struct corral_stats *out);

#endif
