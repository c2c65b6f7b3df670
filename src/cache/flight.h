/* flight.h — single flight: the part of libcorral that makes one result
 * serve many callers. It owns the table of fills in progress (one pending
 * record per key), the waiters on each, and the delivery of results from
 * the loop, never from inside the call that registered a waiter. It knows
 * nothing of L1, tiers, strategies or computes: cache.c decides what a
 * fill does and when it settles. Internal to libcorral. */
#ifndef CORRAL_FLIGHT_H
#define CORRAL_FLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "corral/cache.h"

struct event;
struct event_base;

enum waiter_state {
    W_READY,   /* result known, on the ready queue */
    W_PENDING, /* on a fill's list */
    W_TIER,    /* corral_get() waiting on the tier alone (cache.c) */
    W_ZOMBIE,  /* answered, but the tier still holds it (cache.c) */
    W_FIRING,  /* its callback is running: cancel is a no-op */
};

struct corral_waiter {
    TAILQ_ENTRY(corral_waiter) link; /* ready queue, fill or tier list */
    struct corral_cache *cache;      /* NULL once the cache is gone */
    struct corral_fill *fill;        /* when W_PENDING */
    corral_result_cb *cb;
    void *arg;
    enum waiter_state state;
    bool leader;         /* started the fill */
    struct event *timer; /* W_TIER: how long the tier may take */
    corral_fit_cb *fit;  /* W_TIER: is the tier's value fit (NULL: yes) */
    void *fit_arg;
    /* result, when W_READY */
    int error;
    const char *message;
    char *owned;             /* message, when the waiter owns a copy */
    uint64_t retry_after_ms; /* of an error: when asking again is useful */
    enum corral_source source;
    struct corral_value *value; /* a reference */
};

TAILQ_HEAD(waiter_list, corral_waiter);

enum fill_state {
    F_LOOKUP,    /* reading the tier below (one without a lease) */
    F_ACQUIRE,   /* asking the tier for a value, else the key's lease */
    F_REMOTE,    /* another instance holds the lease: waiting for it */
    F_COMPUTING, /* compute started, not reported */
    F_SETTLED,   /* result known, fanning out or waiting to */
};

/* The pending record. Single flight uses the table link, the waiters and
 * the result; the rest is cache.c's. */
struct corral_fill {
    struct corral_fill *hnext;              /* fill table chain */
    STAILQ_ENTRY(corral_fill) settled_link; /* queued for fan-out */
    struct corral_cache *cache;             /* NULL once detached */
    struct waiter_list waiters;
    size_t nwaiters;
    enum fill_state state;
    bool in_tier;   /* the tier still owes a get or acquire callback */
    bool computing; /* compute still owes a report */
    bool from_tier; /* result came from the tier below */
    bool purged;    /* its key was purged while it computed: not stored */
    bool reread;    /* purged while it read the tier: read again */
    uint8_t reasks; /* the tier's values were unfit: asked past them */
    bool woken;     /* the fleet's word came while the tier was asked:
                     * an answer "held" is older than it, look again */
    bool remote;    /* filled by another instance: every waiter collapsed */
    bool deadline_moved; /* the one extension for a remote wait is used */
    bool refresh;        /* replaces a value L1 has: a tier value must be
                          * newer than refresh_of to count */
    bool stale_served;   /* failed, answered with a stale value instead */
    bool retry;          /* the key's last fill failed: this is its next
                          * try, and a copy inside its stale-if-error
                          * window answers instead of waiting on it */
    uint64_t refresh_of; /* stored_at of the value it replaces */
    uint64_t started_ms; /* when compute started, for the value's fill_ms */
    uint64_t asked_ms;   /* when the tier was last asked */
    uint64_t retry_after_ms; /* of a failure: from corral_fill_fail_retry */
    uint64_t timeout_ms;   /* its deadline, and the lease's lifetime */
    struct event *wait_ev; /* F_REMOTE: when to look again */
    struct corral_tier_lease *lease; /* held: given back when it settles */
    const struct corral_tier *tier;  /* the cache's, for a late lease */
    void *tier_ctx;
    struct corral_strategy strategy;
    corral_compute_cb *compute;
    corral_fit_cb *fit;
    corral_hold_cb *hold; /* told when the fill lets compute_arg go */
    void *compute_arg;
    corral_abort_cb *abort_cb;
    void *abort_arg;
    char *data; /* the compute's data, copied */
    size_t data_len;
    struct event *deadline;
    /* the result, once settled */
    int error;
    char *message;
    struct corral_value *value; /* a reference, once settled ok */
    uint64_t hash;
    size_t keylen;
    char key[];
};

STAILQ_HEAD(fill_queue, corral_fill);

struct corral_flight {
    struct corral_fill **fills; /* open fills by key */
    size_t mask, n;
    struct fill_queue settled; /* to fan out */
    struct waiter_list ready;  /* answers to deliver */
    size_t nready;
    struct event *dispatch_ev;
    int in_callback;     /* depth of delivery */
    bool free_requested; /* the owner asked to be freed from a callback */
    uint64_t cancelled;  /* waiters answered -ECANCELED */
    uint8_t seed[16];
    /* The owner's hooks: a settled fill has been delivered to every waiter
     * (release it); the owner asked to be freed and delivery is over. */
    void (*released)(struct corral_fill *f);
    void (*destroy)(void *owner);
    void *owner;
};

/* Sets fl up on base. Aborts when out of memory (see xalloc.h). */
void corral_flight_init(struct corral_flight *fl, struct event_base *base,
                        void (*released)(struct corral_fill *),
                        void (*destroy)(void *), void *owner);

/* Answers every queued waiter -ECANCELED and hands every fill, open or
 * settled, to abandon (which must drop its waiters with
 * corral_flight_cancel_waiters()). Frees the table. */
void corral_flight_finish(struct corral_flight *fl,
                          void (*abandon)(struct corral_fill *));

/* The slot where key's fill is (*slot != NULL) or would go. */
struct corral_fill **corral_flight_slot(struct corral_flight *fl,
                                        const void *key, size_t keylen,
                                        uint64_t *hash);

/* Puts f (hash set) in the empty slot. */
void corral_flight_add(struct corral_flight *fl, struct corral_fill **slot,
                       struct corral_fill *f);

/* Takes f out of the table, if it is there. */
void corral_flight_remove(struct corral_flight *fl, struct corral_fill *f);

/* A new waiter of cache c. */
struct corral_waiter *corral_flight_waiter_new(struct corral_cache *c,
                                               corral_result_cb *cb, void *arg);

/* Queues w's answer for delivery from the loop. Takes a reference to
 * value. */
void corral_flight_ready(struct corral_flight *fl, struct corral_waiter *w,
                         int error, const char *message,
                         enum corral_source source, struct corral_value *value);

/* w waits on f (leader: it started f). */
void corral_flight_join(struct corral_fill *f, struct corral_waiter *w,
                        bool leader);

/* f's result (error, message, value, from_tier) is set: take it out of the
 * table and fan it out to its waiters from the loop. */
void corral_flight_settle(struct corral_flight *fl, struct corral_fill *f);

/* Answers every waiter of f now (from the loop) with value, as source;
 * f goes on without them. */
void corral_flight_answer_all(struct corral_flight *fl, struct corral_fill *f,
                              enum corral_source source,
                              struct corral_value *value);

/* Calls w's callback (w->retry_after_ms goes with an error; source too,
 * which is NONE but for an error a backoff remembers). */
void corral_flight_fire(struct corral_waiter *w, int error, const char *message,
                        enum corral_source source, struct corral_value *value);

/* Frees a waiter that has fired or been cancelled. */
void corral_flight_waiter_free(struct corral_waiter *w);

/* Calls fn for every fill in the table (not those settled). fn may not
 * add or remove fills. */
void corral_flight_each(struct corral_flight *fl, void (*fn)(struct corral_fill *, void *),
                 void *arg);

/* Answers every waiter of f -ECANCELED ("cache torn down") and frees
 * them. */
void corral_flight_cancel_waiters(struct corral_flight *fl,
                                  struct corral_fill *f);

/* Cancels a W_READY or W_PENDING waiter (answers -ECANCELED, frees it);
 * a W_FIRING one is left alone. Returns false for the states cache.c owns
 * (W_TIER, W_ZOMBIE). */
bool corral_flight_cancel(struct corral_flight *fl, struct corral_waiter *w);

#endif
