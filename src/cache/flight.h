/* flight.h — single flight: one call per key, the callers waiting on it,
 * and one result for all of them, always delivered from the loop, never
 * from inside the call that registered a waiter. It knows nothing of what
 * a call does or how its result came about: its owner (cache.c's fill)
 * embeds a struct flight_call, sets the result and settles it. Internal to
 * libcorral. */
#ifndef CORRAL_FLIGHT_H
#define CORRAL_FLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "corral/result.h"
#include "dict.h"

struct event;
struct event_base;

enum flight_waiter_state {
    W_OWNER = 0, /* not single flight's: its owner holds it */
    W_READY,     /* result known, on the ready queue */
    W_PENDING,   /* on a call's list */
    W_FIRING,    /* its callback is running: cancel is a no-op */
};

/* A caller. The owner's waiter type starts with one (corral_flight_waiter_new
 * allocates the whole). */
struct flight_waiter {
    TAILQ_ENTRY(flight_waiter) link; /* ready queue or a call's list */
    struct flight_call *call;        /* when W_PENDING */
    corral_result_cb *cb;
    void *arg;
    enum flight_waiter_state state;
    bool leader; /* started the call */
    /* result, when W_READY */
    int error;
    const char *message;
    char *owned;             /* message, when the waiter owns a copy */
    uint64_t retry_after_ms; /* of an error: when asking again is useful */
    enum corral_source source;
    struct corral_value *value; /* a reference */
};

TAILQ_HEAD(waiter_list, flight_waiter);

/* One call in flight for a key, embedded in its owner's record. */
struct flight_call {
    struct corral_dict_keyed entry;         /* the table: key and hash */
    STAILQ_ENTRY(flight_call) settled_link; /* queued for fan-out */
    struct waiter_list waiters;
    size_t nwaiters;
    /* the one result, set by the owner before corral_flight_settle() */
    int error;
    const char *message;
    uint64_t retry_after_ms;        /* of an error */
    struct corral_value *value;     /* borrowed from the owner */
    enum corral_source leader_says; /* the source the leader is told */
    enum corral_source others_say;  /* the source every other waiter is told */
};

STAILQ_HEAD(call_queue, flight_call);

struct corral_flight {
    struct corral_dict calls;  /* open calls by key */
    struct call_queue settled; /* to fan out */
    struct waiter_list ready;  /* answers to deliver */
    size_t nready;
    struct event *dispatch_ev;
    int in_callback;     /* depth of delivery */
    bool free_requested; /* the owner asked to be freed from a callback */
    uint64_t cancelled;  /* waiters answered -ECANCELED */
    /* The owner's hooks: a settled call has been delivered to every waiter
     * (release it); the owner asked to be freed and delivery is over. */
    void (*released)(struct flight_call *call);
    void (*destroy)(void *owner);
    void *owner;
};

/* Sets fl up on base. Aborts when out of memory (see xalloc.h). */
void corral_flight_init(struct corral_flight *fl, struct event_base *base,
                        void (*released)(struct flight_call *),
                        void (*destroy)(void *), void *owner);

/* Answers every queued waiter -ECANCELED and hands every call, open or
 * settled, to abandon (which must drop its waiters with
 * corral_flight_cancel_waiters()). Frees the table. */
void corral_flight_finish(struct corral_flight *fl,
                          void (*abandon)(struct flight_call *));

/* The open call for key (hash its corral_key_hash()), or NULL. */
struct flight_call *corral_flight_find(struct corral_flight *fl,
                                       const void *key, size_t keylen,
                                       uint64_t hash);

/* Opens call (its entry's key, keylen and hash set; none open for its
 * key). */
void corral_flight_add(struct corral_flight *fl, struct flight_call *call);

/* Calls fn for every open call (not those settled). fn may not open or
 * settle calls. */
void corral_flight_each(struct corral_flight *fl,
                        void (*fn)(struct flight_call *, void *), void *arg);

/* A new waiter of size bytes (at least a struct flight_waiter, which it
 * starts with), zeroed but for the callback. Free with
 * corral_flight_waiter_free(). */
struct flight_waiter *corral_flight_waiter_new(size_t size,
                                               corral_result_cb *cb, void *arg);

/* Frees a waiter that has fired or been cancelled. */
void corral_flight_waiter_free(struct flight_waiter *w);

/* Queues w's answer for delivery from the loop. Takes a reference to
 * value. */
void corral_flight_ready(struct corral_flight *fl, struct flight_waiter *w,
                         int error, const char *message,
                         enum corral_source source, struct corral_value *value);

/* w waits on call (leader: it started the call). */
void corral_flight_join(struct flight_call *call, struct flight_waiter *w,
                        bool leader);

/* call's result is set: close it and fan the result out to its waiters
 * from the loop. */
void corral_flight_settle(struct corral_flight *fl, struct flight_call *call);

/* Answers every waiter of call now (from the loop) with value, as source;
 * the call goes on without them. */
void corral_flight_answer_all(struct corral_flight *fl,
                              struct flight_call *call,
                              enum corral_source source,
                              struct corral_value *value);

/* Calls w's callback (w->retry_after_ms goes with an error). */
void corral_flight_fire(struct flight_waiter *w, int error, const char *message,
                        enum corral_source source, struct corral_value *value);

/* Answers every waiter of call -ECANCELED ("cache torn down") and frees
 * them. */
void corral_flight_cancel_waiters(struct corral_flight *fl,
                                  struct flight_call *call);

/* Cancels a W_READY or W_PENDING waiter (answers -ECANCELED, frees it);
 * a W_FIRING one is left alone. Returns false for a W_OWNER one. */
bool corral_flight_cancel(struct corral_flight *fl, struct flight_waiter *w);

#endif
