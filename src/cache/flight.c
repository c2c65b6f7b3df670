/* flight.c — single flight: the table of open calls (dict.h), waiters, and
 * delivery from the loop through one deferred event. */
#include "flight.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "value_impl.h"
#include "xalloc.h"

static void dispatch_cb(evutil_socket_t fd, short what, void *arg);

static struct flight_call *
call_of(const struct corral_dict_link *l)
{
    return corral_dict_entry(l, struct flight_call, entry.link);
}

void
corral_flight_init(struct corral_flight *fl, struct event_base *base,
                   void (*released)(struct flight_call *),
                   void (*destroy)(void *), void *owner)
{
    memset(fl, 0, sizeof(*fl));
    corral_dict_init(&fl->calls, 64, corral_dict_keyed_hash);
    STAILQ_INIT(&fl->settled);
    TAILQ_INIT(&fl->ready);
    fl->dispatch_ev = event_new(base, -1, 0, dispatch_cb, fl);
    if (fl->dispatch_ev == NULL)
        abort(); /* the policy of xalloc.h */
    fl->released = released;
    fl->destroy = destroy;
    fl->owner = owner;
}

/* ---- the table ---- */

struct flight_call *
corral_flight_find(struct corral_flight *fl, const void *key, size_t keylen,
                   uint64_t hash)
{
    struct corral_dict_keyed *k =
        corral_dict_keyed_find(&fl->calls, key, keylen, hash);
    return k != NULL ? call_of(&k->link) : NULL;
}

void
corral_flight_add(struct corral_flight *fl, struct flight_call *call)
{
    TAILQ_INIT(&call->waiters);
    call->nwaiters = 0;
    corral_dict_add(&fl->calls, call->entry.hash, &call->entry.link);
}

void
corral_flight_each(struct corral_flight *fl,
                   void (*fn)(struct flight_call *, void *), void *arg)
{
    for (size_t i = 0; i <= fl->calls.mask; i++)
        for (struct corral_dict_link *l = fl->calls.buckets[i]; l != NULL;
             l = l->next)
            fn(call_of(l), arg);
}

/* ---- waiters ---- */

static void
schedule(struct corral_flight *fl)
{
    event_active(fl->dispatch_ev, EV_TIMEOUT, 0);
}

struct flight_waiter *
corral_flight_waiter_new(size_t size, corral_result_cb *cb, void *arg)
{
    struct flight_waiter *w = xcalloc(1, size);

    w->cb = cb;
    w->arg = arg;
    return w;
}

void
corral_flight_waiter_free(struct flight_waiter *w)
{
    free(w->owned);
    free(w);
}

void
corral_flight_ready(struct corral_flight *fl, struct flight_waiter *w,
                    int error, const char *message, enum corral_source source,
                    struct corral_value *value)
{
    w->state = W_READY;
    w->error = error;
    w->message = message;
    w->source = source;
    w->value = value ? corral_value_ref(value) : NULL;
    TAILQ_INSERT_TAIL(&fl->ready, w, link);
    fl->nready++;
    schedule(fl);
}

void
corral_flight_join(struct flight_call *call, struct flight_waiter *w,
                   bool leader)
{
    w->state = W_PENDING;
    w->call = call;
    w->leader = leader;
    TAILQ_INSERT_TAIL(&call->waiters, w, link);
    call->nwaiters++;
}

void
corral_flight_answer_all(struct corral_flight *fl, struct flight_call *call,
                         enum corral_source source, struct corral_value *value)
{
    struct flight_waiter *w;

    while ((w = TAILQ_FIRST(&call->waiters)) != NULL) {
        TAILQ_REMOVE(&call->waiters, w, link);
        call->nwaiters--;
        w->call = NULL;
        corral_flight_ready(fl, w, 0, "", source, value);
    }
}

void
corral_flight_fire(struct flight_waiter *w, int error, const char *message,
                   enum corral_source source, struct corral_value *value)
{
    struct corral_result res = {
        .error = error,
        .message = message ? message : "",
        .source = source,
        .value = error ? NULL : value,
        .retry_after_ms = error ? w->retry_after_ms : 0,
    };
    w->cb(&res, w->arg);
}

void
corral_flight_settle(struct corral_flight *fl, struct flight_call *call)
{
    corral_dict_remove(&fl->calls, call->entry.hash, &call->entry.link);
    STAILQ_INSERT_TAIL(&fl->settled, call, settled_link);
    schedule(fl);
}

static struct flight_waiter *
pop(struct waiter_list *l, size_t *n)
{
    struct flight_waiter *w = TAILQ_FIRST(l);

    if (w != NULL) {
        TAILQ_REMOVE(l, w, link);
        (*n)--;
    }
    return w;
}

static void
fan_out(struct corral_flight *fl, struct flight_call *call)
{
    struct flight_waiter *w;

    /* Pop one at a time: a callback may cancel the waiters still listed. */
    while ((w = pop(&call->waiters, &call->nwaiters)) != NULL) {
        enum corral_source src = call->error ? CORRAL_SOURCE_NONE
                                 : w->leader ? call->leader_says
                                             : call->others_say;
        w->call = NULL;
        w->state = W_FIRING;
        w->retry_after_ms = call->retry_after_ms;
        corral_flight_fire(w, call->error, call->message, src, call->value);
        corral_flight_waiter_free(w);
        if (fl->free_requested)
            break;
    }
}

static void
dispatch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_flight *fl = arg;
    struct call_queue todo = STAILQ_HEAD_INITIALIZER(todo);
    struct flight_waiter *w;
    struct flight_call *call;

    (void)fd;
    (void)what;
    fl->in_callback++;
    /* Deliver what is queued now; what callbacks queue waits a turn. */
    size_t n = fl->nready;
    STAILQ_CONCAT(&todo, &fl->settled);
    /* A callback may cancel queued waiters: the queue can run dry early. */
    while (n-- > 0 && !fl->free_requested &&
           (w = pop(&fl->ready, &fl->nready)) != NULL) {
        w->state = W_FIRING;
        corral_flight_fire(w, w->error, w->message, w->source, w->value);
        corral_value_unref(w->value);
        corral_flight_waiter_free(w);
    }
    while ((call = STAILQ_FIRST(&todo)) != NULL) {
        STAILQ_REMOVE_HEAD(&todo, settled_link);
        if (!fl->free_requested)
            fan_out(fl, call);
        if (call->nwaiters == 0)
            fl->released(call);
        else /* freeing mid fan-out: teardown answers the rest */
            STAILQ_INSERT_TAIL(&fl->settled, call, settled_link);
    }
    fl->in_callback--;
    if (fl->free_requested) {
        if (fl->in_callback == 0)
            fl->destroy(fl->owner);
        return;
    }
    if (fl->nready > 0 || !STAILQ_EMPTY(&fl->settled))
        schedule(fl);
}

/* ---- cancelling ---- */

static void
cancel_list(struct corral_flight *fl, struct waiter_list *l, size_t *n)
{
    struct flight_waiter *w;

    while ((w = pop(l, n)) != NULL) {
        fl->cancelled++;
        w->state = W_FIRING;
        corral_flight_fire(w, -ECANCELED, "cache torn down", CORRAL_SOURCE_NONE,
                           NULL);
        corral_value_unref(w->value);
        corral_flight_waiter_free(w);
    }
}

void
corral_flight_cancel_waiters(struct corral_flight *fl, struct flight_call *call)
{
    cancel_list(fl, &call->waiters, &call->nwaiters);
}

bool
corral_flight_cancel(struct corral_flight *fl, struct flight_waiter *w)
{
    switch (w->state) {
    case W_READY:
        TAILQ_REMOVE(&fl->ready, w, link);
        fl->nready--;
        corral_value_unref(w->value);
        break;
    case W_PENDING:
        TAILQ_REMOVE(&w->call->waiters, w, link);
        w->call->nwaiters--;
        break;
    case W_FIRING: /* answered already: from inside its own callback */
        return true;
    case W_OWNER:
        return false;
    }
    w->state = W_FIRING;
    w->retry_after_ms = 0;
    fl->cancelled++;
    corral_flight_fire(w, -ECANCELED, "cancelled", CORRAL_SOURCE_NONE, NULL);
    corral_flight_waiter_free(w);
    return true;
}

void
corral_flight_finish(struct corral_flight *fl,
                     void (*abandon)(struct flight_call *))
{
    struct flight_call *call;

    event_free(fl->dispatch_ev);
    cancel_list(fl, &fl->ready, &fl->nready);
    while ((call = STAILQ_FIRST(&fl->settled)) != NULL) {
        STAILQ_REMOVE_HEAD(&fl->settled, settled_link);
        abandon(call);
    }
    for (size_t i = 0; i <= fl->calls.mask; i++) {
        struct corral_dict_link *l;
        while ((l = fl->calls.buckets[i]) != NULL) {
            corral_dict_unlink(&fl->calls, &fl->calls.buckets[i]);
            abandon(call_of(l));
        }
    }
    corral_dict_finish(&fl->calls);
}
