/* breaker.h — an upstream's circuit breaker: after `failures` calls in a
 * row fail (5xx, timeout, no connection: what the caller reports as a
 * failure) across all of the upstream's keys, it opens: no call goes
 * except one probe per backoff step (step_min doubling to step_max), and
 * the first call that succeeds closes it. One breaker per upstream per
 * server: its state is one word in a table shared by the server's workers
 * (mapped before they fork), changed only by compare-and-swap, so a
 * worker that dies mid-call never blocks the others (a probe nobody
 * reports on lapses after hold_ms). With a fleet (fleet.h) the state is
 * the fleet's too: an opening is told to every instance, and a probe is
 * claimed in Redis first, so one probe per step goes for the whole fleet.
 * Time is a parameter (monotonic ms, one clock for every process of the
 * host); callbacks fire once, from the loop. */
#ifndef CORRAL_BREAKER_H
#define CORRAL_BREAKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct corral_fleet;
struct corral_breaker;       /* opaque: one per upstream per config */
struct corral_breaker_table; /* opaque: every breaker of a server */
struct corral_breaker_wait;  /* opaque: a probe the fleet is asked for */

enum corral_breaker_state {
    CORRAL_BREAKER_CLOSED,    /* calls go */
    CORRAL_BREAKER_OPEN,      /* no call until the next probe is due */
    CORRAL_BREAKER_HALF_OPEN, /* one probe is out; the rest wait on it */
};
const char *corral_breaker_state_name(enum corral_breaker_state s);

/* How a call went, as the caller sees it. */
enum corral_breaker_outcome {
    CORRAL_BREAKER_SUCCESS, /* the upstream answered (a 2xx, 3xx or 4xx) */
    CORRAL_BREAKER_FAILURE, /* a 5xx, a timeout, no connection */
    CORRAL_BREAKER_NEUTRAL, /* neither: a 429 or 503 with Retry-After */
    CORRAL_BREAKER_UNTRIED, /* the call was not made (or its end unseen) */
};

/* ---- the shared table ---- */

/* Bytes a table of cap breakers takes. */
size_t corral_breaker_table_size(unsigned cap);
/* Makes a table of cap breakers in mem (corral_breaker_table_size(cap)
 * bytes, zeroed; memory the workers share, mapped before they fork).
 * Borrowed; valid as long as mem. */
struct corral_breaker_table *corral_breaker_table_init(void *mem, unsigned cap);

struct corral_breaker_stats {
    enum corral_breaker_state state;
    uint64_t next_probe_ms; /* OPEN: ms until the next probe may go */
    uint64_t step_ms;       /* the backoff step now (0: closed) */
    uint64_t opened;        /* transitions to open */
    uint64_t closed;        /* transitions back to closed */
    uint64_t probes;        /* probes let through */
    uint64_t refused;       /* calls refused while open */
};
/* The server's breaker of the upstream called name, at now_ms. False when
 * the table has none under that name. */
bool corral_breaker_table_read(const struct corral_breaker_table *t,
                               const char *name, uint64_t now_ms,
                               struct corral_breaker_stats *out);

/* ---- one upstream's breaker ---- */

struct corral_breaker_options {
    const char *name;                  /* the upstream's */
    unsigned failures;                 /* in a row, to open; 0: no breaker */
    uint64_t step_min_ms, step_max_ms; /* the probe's backoff */
    uint64_t hold_ms; /* longest a probe may take before another goes */
};

/* The breaker of o->name in t (its state is the one every breaker of that
 * name in t shares; t NULL, full, or a name too long: this one's alone).
 * fleet may be NULL. Aborts when out of memory (see xalloc.h). */
struct corral_breaker *
corral_breaker_new(struct corral_breaker_table *t,
                   const struct corral_breaker_options *o,
                   struct corral_fleet *fleet);
/* Frees b; a probe the fleet still owes an answer on is given back when
 * it comes. NULL is a no-op. */
void corral_breaker_free(struct corral_breaker *b);
const char *corral_breaker_name(const struct corral_breaker *b);

/* probe: 0, or this call is the breaker's probe (a ticket for report). */
typedef void corral_breaker_cb(int error, uint64_t ms, uint64_t probe,
                               void *arg);

/* May a call go now? Returns 0 when it may (*probe set: nonzero when it is
 * the probe), -EBUSY when the breaker is open (*retry_after_ms: when asking
 * again can help), or -EINPROGRESS with *out set while the fleet is
 * asked whether this server's probe is the fleet's: cb then fires once,
 * from the loop (error 0 with the probe, or -EBUSY with ms), unless
 * corral_breaker_cancel(*out) comes first. b NULL: 0. */
int corral_breaker_acquire(struct corral_breaker *b, uint64_t now_ms,
                           corral_breaker_cb *cb, void *arg,
                           struct corral_breaker_wait **out, uint64_t *probe,
                           uint64_t *retry_after_ms);
/* cb will not fire; the probe, if the fleet grants it, is given back.
 * NULL is a no-op. */
void corral_breaker_cancel(struct corral_breaker_wait *w);
/* For a call admitted earlier that waited (for a rate slot): 0 when it
 * may still go (the breaker is closed, or it is the probe), else -EBUSY
 * with *retry_after_ms. */
int corral_breaker_check(struct corral_breaker *b, uint64_t probe,
                         uint64_t now_ms, uint64_t *retry_after_ms);
/* How a call that acquire let go ended (probe: what it gave, 0 if none).
 * Every call that went must be reported once, a probe too when it was
 * never made (UNTRIED: the next probe may go at once). */
void corral_breaker_report(struct corral_breaker *b, uint64_t probe,
                           enum corral_breaker_outcome outcome,
                           uint64_t now_ms);

/* The fleet says: open, no probe for ms, at a step of step_ms (another
 * instance opened it, or its probe failed); ms 0: closed (a probe
 * succeeded). Told to every worker; the first to hear it applies it. */
void corral_breaker_heard(struct corral_breaker *b, uint64_t ms,
                          uint64_t step_ms, uint64_t now_ms);

/* This breaker's shared state and counts at now_ms. */
void corral_breaker_stats(const struct corral_breaker *b, uint64_t now_ms,
                          struct corral_breaker_stats *out);

#endif
