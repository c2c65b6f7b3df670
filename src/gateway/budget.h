/* budget.h — when an upstream may be called: its rate (never more than
 * count calls in any window_ms, a sliding window) and its pause (an
 * upstream's 429 or 503 with Retry-After stops every call until then).
 * The window and the pause are the server's, one per upstream for all its
 * workers (an account in the ledger, ledger.h); the queue of calls that
 * wait is this process's. A fill asks before it fetches. Refreshes of
 * keys being served (callers already answered from a copy) keep a share
 * of the rate that cold misses (callers waiting on a key with no copy)
 * cannot take: cold calls must also fit count in a window longer by that
 * share, so whatever cold traffic does, refreshes get at least that share
 * of the calls. Otherwise cold misses go first, FIFO within each kind. A
 * wait is bounded by the caller's timeout, and a call whose slot lies
 * beyond it is refused at once rather than at the timeout. With a fleet
 * (fleet.h) the window and the pause are the fleet's as well as this
 * server's: a pause is heard by every instance at once (no round trip per
 * call), and with a rate every call is admitted by one script in Redis,
 * pipelined (never one at a time); while Redis cannot answer, the
 * server's window decides at once. Windows carry a margin of 5% (at most
 * 250 ms) for the network's jitter, so the upstream, which sees calls a
 * little later than they are sent, still never sees more than count in
 * any window. */
#ifndef CORRAL_BUDGET_H
#define CORRAL_BUDGET_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct corral_clock;
struct corral_fleet;
struct corral_ledger;
struct corral_budget;      /* opaque: one per upstream */
struct corral_budget_wait; /* opaque: one queued call */

/* error 0: call now, within timeout_left_ms; -EBUSY: do not call (paused,
 * or no slot within the timeout), try again in retry_after_ms. */
typedef void corral_budget_cb(int error, uint64_t ms, void *arg);

struct corral_budget_rate {
    unsigned count;     /* calls per window; 0: no rate, only pauses */
    uint64_t window_ms; /* 0: no rate */
    /* Percent of the calls cold misses cannot take (0 to 90): they must
     * fit count calls in window_ms * 100 / (100 - refresh_share). */
    unsigned refresh_share;
};

/* A budget for the upstream called name, on its account in ledger (the
 * server's, shared by its workers; NULL, or no room there: one of its
 * own). clock (copied; NULL: CLOCK_MONOTONIC) is what its windows, pauses
 * and deadlines are read on; every budget on one ledger needs the same
 * one (tests pass a fake; its timers still sleep on the loop's). fleet
 * may be NULL. Aborts when out of memory (see xalloc.h). */
struct corral_budget *
corral_budget_new(struct event_base *base, const struct corral_clock *clock,
                  const char *name, const struct corral_budget_rate *rate,
                  struct corral_fleet *fleet, struct corral_ledger *ledger);
/* The budget's upstream name. Borrowed. */
const char *corral_budget_name(const struct corral_budget *b);
/* Answers every queued call -EBUSY (before it returns) and frees b. NULL
 * is a no-op. */
void corral_budget_free(struct corral_budget *b);

/* Asks for one call: a refresh, or a cold miss. Returns 0 when it may go
 * now (the slot is taken); -EBUSY with *retry_after_ms when it may not
 * (paused, or its slot would come later than timeout_ms from now); or
 * -EINPROGRESS with *out set when it waits (as a non-blocking connect()):
 * cb then fires once, from the loop, unless corral_budget_cancel(*out)
 * comes first. */
int corral_budget_acquire(struct corral_budget *b, bool refresh,
                          uint64_t timeout_ms, corral_budget_cb *cb, void *arg,
                          struct corral_budget_wait **out,
                          uint64_t *retry_after_ms);
/* Takes one call now or never, without a queue or the fleet: 0 (taken),
 * or -EBUSY with *retry_after_ms (paused, or no slot now). For limits
 * that count and never wait, such as a route's new keys. */
int corral_budget_try(struct corral_budget *b, bool refresh,
                      uint64_t *retry_after_ms);
/* Leaves the queue: cb will not fire. */
void corral_budget_cancel(struct corral_budget_wait *w);

/* The upstream asked for a pause of ms (Retry-After): every call waits,
 * here and, with a fleet, everywhere. Queued calls are refused. */
void corral_budget_pause(struct corral_budget *b, uint64_t ms);
/* Another instance paused the upstream for ms: the same here, without
 * telling the fleet again. */
void corral_budget_paused(struct corral_budget *b, uint64_t ms);

struct corral_budget_stats {
    uint64_t granted;      /* calls let through */
    uint64_t waited;       /* of those, after waiting in the queue */
    uint64_t refused;      /* calls refused: paused or no slot in time */
    uint64_t pauses;       /* Retry-After pauses taken */
    uint64_t fleet_errors; /* admissions Redis could not answer */
    uint64_t queued;       /* waiting now */
};
void corral_budget_stats(const struct corral_budget *b,
                         struct corral_budget_stats *out);

#endif
