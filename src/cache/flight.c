/* flight.c — single flight: the fill table, waiters and delivery. */
#include "flight.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "siphash.h"
#include "value_impl.h"
#include "xalloc.h"

static void dispatch_cb(evutil_socket_t fd, short what, void *arg);

void
corral_flight_init(struct corral_flight *fl, struct event_base *base,
                   void (*released)(struct corral_fill *),
                   void (*destroy)(void *), void *owner)
{
    memset(fl, 0, sizeof(*fl));
    fl->fills = xcalloc(64, sizeof(*fl->fills));
    fl->mask = 63;
    STAILQ_INIT(&fl->settled);
    TAILQ_INIT(&fl->ready);
    if (getrandom(fl->seed, sizeof(fl->seed), 0) != sizeof(fl->seed))
        memcpy(fl->seed, "corral-fill-seed", 16);
    fl->dispatch_ev = event_new(base, -1, 0, dispatch_cb, fl);
    if (fl->dispatch_ev == NULL)
        abort(); /* the policy of xalloc.h */
    fl->released = released;
    fl->destroy = destroy;
    fl->owner = owner;
}

/* ---- the table ---- */

struct corral_fill **
corral_flight_slot(struct corral_flight *fl, const void *key, size_t keylen,
                   uint64_t *hash)
{
    uint64_t h = corral_siphash(key, keylen, fl->seed);
    struct corral_fill **pp = &fl->fills[h & fl->mask];

    for (; *pp; pp = &(*pp)->hnext)
        if ((*pp)->keylen == keylen && memcmp((*pp)->key, key, keylen) == 0)
            break;
    *hash = h;
    return pp;
}

static void
grow(struct corral_flight *fl)
{
    size_t n = (fl->mask + 1) * 2;
    struct corral_fill **t = xcalloc(n, sizeof(*t));

    for (size_t i = 0; i <= fl->mask; i++) {
        struct corral_fill *f = fl->fills[i], *next;
        for (; f; f = next) {
            next = f->hnext;
            f->hnext = t[f->hash & (n - 1)];
            t[f->hash & (n - 1)] = f;
        }
    }
    free(fl->fills);
    fl->fills = t;
    fl->mask = n - 1;
}

void
corral_flight_add(struct corral_flight *fl, struct corral_fill **slot,
                  struct corral_fill *f)
{
    f->hnext = NULL;
    *slot = f;
    if (++fl->n > fl->mask + 1)
        grow(fl);
}

void
corral_flight_remove(struct corral_flight *fl, struct corral_fill *f)
{
    uint64_t h;
    struct corral_fill **pp = corral_flight_slot(fl, f->key, f->keylen, &h);

    if (*pp == f) {
        *pp = f->hnext;
        f->hnext = NULL;
        fl->n--;
    }
}

void
corral_flight_each(struct corral_flight *fl, void (*fn)(struct corral_fill *, void *),
            void *arg)
{
    for (size_t i = 0; i <= fl->mask; i++)
        for (struct corral_fill *f = fl->fills[i]; f != NULL; f = f->hnext)
            fn(f, arg);
}

/* ---- waiters ---- */

static void
schedule(struct corral_flight *fl)
{
    event_active(fl->dispatch_ev, EV_TIMEOUT, 0);
}

struct corral_waiter *
corral_flight_waiter_new(struct corral_cache *c, corral_result_cb *cb,
                         void *arg)
{
    struct corral_waiter *w = xcalloc(1, sizeof(*w));

    w->cache = c;
    w->cb = cb;
    w->arg = arg;
    return w;
}

void
corral_flight_ready(struct corral_flight *fl, struct corral_waiter *w,
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
corral_flight_join(struct corral_fill *f, struct corral_waiter *w, bool leader)
{
    w->state = W_PENDING;
    w->fill = f;
    w->leader = leader;
    TAILQ_INSERT_TAIL(&f->waiters, w, link);
    f->nwaiters++;
}

void
corral_flight_answer_all(struct corral_flight *fl, struct corral_fill *f,
                         enum corral_source source, struct corral_value *value)
{
    struct corral_waiter *w;

    while ((w = TAILQ_FIRST(&f->waiters)) != NULL) {
        TAILQ_REMOVE(&f->waiters, w, link);
        f->nwaiters--;
        w->fill = NULL;
        corral_flight_ready(fl, w, 0, "", source, value);
    }
}

void
corral_flight_fire(struct corral_waiter *w, int error, const char *message,
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
corral_flight_waiter_free(struct corral_waiter *w)
{
    free(w->owned);
    free(w);
}

void
corral_flight_settle(struct corral_flight *fl, struct corral_fill *f)
{
    corral_flight_remove(fl, f);
    f->state = F_SETTLED;
    STAILQ_INSERT_TAIL(&fl->settled, f, settled_link);
    schedule(fl);
}

static struct corral_waiter *
pop(struct waiter_list *l, size_t *n)
{
    struct corral_waiter *w = TAILQ_FIRST(l);

    if (w != NULL) {
        TAILQ_REMOVE(l, w, link);
        (*n)--;
    }
    return w;
}

static void
fan_out(struct corral_flight *fl, struct corral_fill *f)
{
    struct corral_waiter *w;

    /* Pop one at a time: a callback may cancel the waiters still listed. */
    while ((w = pop(&f->waiters, &f->nwaiters)) != NULL) {
        enum corral_source src = f->error          ? CORRAL_SOURCE_NONE
                                 : f->stale_served ? CORRAL_SOURCE_STALE_ERROR
                                 : f->remote       ? CORRAL_SOURCE_COLLAPSED
                                 : f->from_tier    ? CORRAL_SOURCE_L2
                                 : w->leader       ? CORRAL_SOURCE_STORED
                                                   : CORRAL_SOURCE_COLLAPSED;
        w->fill = NULL;
        w->state = W_FIRING;
        w->retry_after_ms = f->retry_after_ms;
        corral_flight_fire(w, f->error, f->message, src, f->value);
        corral_flight_waiter_free(w);
        if (fl->free_requested)
            break;
    }
}

static void
dispatch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_flight *fl = arg;
    struct fill_queue todo = STAILQ_HEAD_INITIALIZER(todo);
    struct corral_waiter *w;
    struct corral_fill *f;

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
    while ((f = STAILQ_FIRST(&todo)) != NULL) {
        STAILQ_REMOVE_HEAD(&todo, settled_link);
        if (!fl->free_requested)
            fan_out(fl, f);
        if (f->nwaiters == 0)
            fl->released(f);
        else /* freeing mid fan-out: teardown answers the rest */
            STAILQ_INSERT_TAIL(&fl->settled, f, settled_link);
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
    struct corral_waiter *w;

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
corral_flight_cancel_waiters(struct corral_flight *fl, struct corral_fill *f)
{
    cancel_list(fl, &f->waiters, &f->nwaiters);
}

bool
corral_flight_cancel(struct corral_flight *fl, struct corral_waiter *w)
{
    switch (w->state) {
    case W_READY:
        TAILQ_REMOVE(&fl->ready, w, link);
        fl->nready--;
        corral_value_unref(w->value);
        break;
    case W_PENDING:
        TAILQ_REMOVE(&w->fill->waiters, w, link);
        w->fill->nwaiters--;
        break;
    case W_FIRING: /* answered already: from inside its own callback */
        return true;
    case W_TIER:
    case W_ZOMBIE:
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
                     void (*abandon)(struct corral_fill *))
{
    struct corral_fill *f;

    event_free(fl->dispatch_ev);
    cancel_list(fl, &fl->ready, &fl->nready);
    while ((f = STAILQ_FIRST(&fl->settled)) != NULL) {
        STAILQ_REMOVE_HEAD(&fl->settled, settled_link);
        abandon(f);
    }
    for (size_t i = 0; i <= fl->mask; i++)
        while ((f = fl->fills[i]) != NULL) {
            fl->fills[i] = f->hnext;
            abandon(f);
        }
    free(fl->fills);
}
