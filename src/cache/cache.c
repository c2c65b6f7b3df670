/* cache.c — the two-tier cache and its single flight. One cache per
 * event_base; no locks. A miss creates a fill (the pending record) keyed in
 * its own table; later callers attach as waiters; the result fans out from
 * the loop, never from inside the call that registered a waiter. A fill ends
 * exactly once (done, fail, deadline, teardown) and so does every waiter. */
#include "corral/cache.h"

#include <errno.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>

#include "l1.h"
#include "siphash.h"
#include "timeutil.h"
#include "xalloc.h"
#include "value_impl.h"

struct waiter_list {
    struct corral_waiter *head, *tail;
    size_t count;
};

enum waiter_state {
    W_READY,   /* result known, on the cache's ready list */
    W_PENDING, /* on a fill's list */
    W_TIER,    /* corral_get() waiting on the tier alone */
    W_ZOMBIE,  /* answered, but the tier still holds it */
    W_FIRING,  /* its callback is running: cancel is a no-op */
};

struct corral_waiter {
    struct corral_waiter *next, *prev;
    struct corral_cache *cache; /* NULL once the cache is gone */
    struct corral_fill *fill;   /* when W_PENDING */
    corral_result_cb *cb;
    void *arg;
    enum waiter_state state;
    bool leader;         /* started the fill */
    struct event *timer; /* W_TIER: how long the tier may take */
    /* result, when W_READY */
    int error;
    const char *message;
    enum corral_source source;
    struct corral_value *value; /* a reference */
};

enum fill_state {
    F_LOOKUP,    /* asking the tier below */
    F_COMPUTING, /* compute started, not reported */
    F_SETTLED,   /* result known, fanning out or waiting to */
};

struct corral_fill {
    struct corral_fill *hnext;  /* fill table chain, or settled list */
    struct corral_cache *cache; /* NULL once the cache is gone */
    struct waiter_list waiters;
    enum fill_state state;
    bool in_tier;   /* the tier still owes a get callback */
    bool computing; /* compute still owes a report */
    bool from_tier; /* result came from the tier below */
    struct corral_strategy strategy;
    corral_compute_cb *compute;
    void *compute_arg;
    corral_abort_cb *abort_cb;
    void *abort_arg;
    char *data; /* the compute's data, copied */
    size_t data_len;
    struct event *deadline;
    int error;
    char *message;
    struct corral_value *value; /* a reference, once settled ok */
    uint64_t hash;
    size_t keylen;
    char key[];
};

struct corral_cache {
    struct event_base *base;
    struct corral_l1 *l1;
    const struct corral_tier *tier;
    void *tier_ctx;
    uint64_t (*clock)(void *);
    void *clock_arg;
    uint64_t fill_timeout_ms;
    uint32_t max_waiters;

    struct corral_fill **fills; /* open fills by key */
    size_t fills_mask;
    size_t nfills;
    struct corral_fill *settled_head, *settled_tail; /* to fan out */
    struct waiter_list ready;                        /* answers to deliver */
    struct waiter_list tier_waiters; /* corral_get() on the tier */
    struct event *dispatch_ev;
    struct event *sweep_ev;
    int in_callback;     /* depth of dispatch */
    bool free_requested; /* corral_cache_free() from a callback */
    bool closing;
    struct corral_stats stats;
    uint8_t seed[16];
};

static const char *const source_names[] = {
    [CORRAL_SOURCE_NONE] = "none",
    [CORRAL_SOURCE_L1] = "l1",
    [CORRAL_SOURCE_L2] = "l2",
    [CORRAL_SOURCE_STORED] = "stored",
    [CORRAL_SOURCE_COLLAPSED] = "collapsed",
};

const char *
corral_source_name(enum corral_source source)
{
    if ((unsigned)source > CORRAL_SOURCE_COLLAPSED)
        return "unknown";
    return source_names[source];
}

/* ---- waiter lists ---- */

static void
list_push(struct waiter_list *l, struct corral_waiter *w)
{
    w->next = NULL;
    w->prev = l->tail;
    if (l->tail)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
    l->count++;
}

static void
list_remove(struct waiter_list *l, struct corral_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        l->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        l->tail = w->prev;
    w->next = w->prev = NULL;
    l->count--;
}

static struct corral_waiter *
list_pop(struct waiter_list *l)
{
    struct corral_waiter *w = l->head;
    if (w)
        list_remove(l, w);
    return w;
}

/* ---- clock ---- */

static uint64_t
loop_clock(void *arg)
{
    /* The wall clock, cached per loop turn: see timeutil.h for why. */
    struct timeval tv;
    event_base_gettimeofday_cached(arg, &tv);
    return corral_tv_to_ms(&tv);
}

uint64_t
corral_cache_now(const struct corral_cache *c)
{
    return c->clock(c->clock_arg);
}

/* ---- fill table ---- */

static struct corral_fill **
fill_slot(struct corral_cache *c, const void *key, size_t keylen, uint64_t h)
{
    struct corral_fill **pp = &c->fills[h & c->fills_mask];
    for (; *pp; pp = &(*pp)->hnext)
        if ((*pp)->keylen == keylen && memcmp((*pp)->key, key, keylen) == 0)
            break;
    return pp;
}

static void
fills_grow(struct corral_cache *c)
{
    size_t n = (c->fills_mask + 1) * 2;
    struct corral_fill **t = xcalloc(n, sizeof(*t));
    for (size_t i = 0; i <= c->fills_mask; i++) {
        struct corral_fill *f = c->fills[i], *next;
        for (; f; f = next) {
            next = f->hnext;
            f->hnext = t[f->hash & (n - 1)];
            t[f->hash & (n - 1)] = f;
        }
    }
    free(c->fills);
    c->fills = t;
    c->fills_mask = n - 1;
}

static void
fills_unlink(struct corral_cache *c, struct corral_fill *f)
{
    struct corral_fill **pp = fill_slot(c, f->key, f->keylen, f->hash);
    if (*pp == f) {
        *pp = f->hnext;
        f->hnext = NULL;
        c->nfills--;
    }
}

/* ---- delivery ---- */

static void
schedule_dispatch(struct corral_cache *c)
{
    event_active(c->dispatch_ev, EV_TIMEOUT, 0);
}

static struct corral_waiter *
waiter_new(struct corral_cache *c, corral_result_cb *cb, void *arg)
{
    struct corral_waiter *w = xcalloc(1, sizeof(*w));
    w->cache = c;
    w->cb = cb;
    w->arg = arg;
    return w;
}

/* Queues w's answer for the next dispatch. Takes a reference to value. */
static void
waiter_ready(struct corral_cache *c, struct corral_waiter *w, int error,
             const char *message, enum corral_source source,
             struct corral_value *value)
{
    w->state = W_READY;
    w->error = error;
    w->message = message;
    w->source = source;
    w->value = value ? corral_value_ref(value) : NULL;
    list_push(&c->ready, w);
    schedule_dispatch(c);
}

static void
fire(struct corral_waiter *w, int error, const char *message,
     enum corral_source source, struct corral_value *value)
{
    struct corral_result res = {
        .error = error,
        .message = message ? message : "",
        .source = error ? CORRAL_SOURCE_NONE : source,
        .value = error ? NULL : value,
    };
    w->cb(&res, w->arg);
}

static void
fill_maybe_free(struct corral_fill *f)
{
    if (f->state != F_SETTLED || f->in_tier || f->computing ||
        f->waiters.count > 0 || f->cache != NULL)
        return;
    corral_value_unref(f->value);
    free(f->message);
    free(f->data);
    free(f);
}

/* Detaches a fill from the cache after it settled and fanned out. */
static void
fill_release(struct corral_fill *f)
{
    if (f->deadline) {
        event_free(f->deadline);
        f->deadline = NULL;
    }
    f->cache = NULL;
    fill_maybe_free(f);
}

/* Records a fill's result and queues its fan-out. Takes a reference. */
static void
fill_settle(struct corral_fill *f, int error, const char *message,
            struct corral_value *value)
{
    struct corral_cache *c = f->cache;
    fills_unlink(c, f);
    if (f->deadline)
        event_del(f->deadline);
    f->state = F_SETTLED;
    f->error = error;
    f->message = strdup(message ? message : "");
    if (f->message == NULL)
        abort();
    f->value = value;
    c->stats.fills_in_flight--;
    f->hnext = NULL;
    if (c->settled_tail)
        c->settled_tail->hnext = f;
    else
        c->settled_head = f;
    c->settled_tail = f;
    schedule_dispatch(c);
}

static void
fan_out(struct corral_fill *f)
{
    struct corral_waiter *w;
    /* Pop one at a time: a callback may cancel the waiters still listed. */
    while ((w = list_pop(&f->waiters)) != NULL) {
        enum corral_source src = f->from_tier ? CORRAL_SOURCE_L2
                                 : w->leader  ? CORRAL_SOURCE_STORED
                                              : CORRAL_SOURCE_COLLAPSED;
        w->fill = NULL;
        w->state = W_FIRING;
        fire(w, f->error, f->message, src, f->value);
        free(w);
        if (f->cache->free_requested)
            break;
    }
}

static void cache_destroy(struct corral_cache *c);

static void
dispatch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_cache *c = arg;
    c->in_callback++;
    /* Deliver what is queued now; what callbacks queue waits a turn. */
    size_t n = c->ready.count;
    struct corral_fill *f = c->settled_head, *last = c->settled_tail;
    c->settled_head = c->settled_tail = NULL;
    struct corral_waiter *w;
    /* A callback may cancel queued waiters: the list can run dry early. */
    while (n-- > 0 && !c->free_requested && (w = list_pop(&c->ready))) {
        w->state = W_FIRING;
        fire(w, w->error, w->message, w->source, w->value);
        corral_value_unref(w->value);
        free(w);
    }
    while (f != NULL) {
        struct corral_fill *next = f == last ? NULL : f->hnext;
        if (!c->free_requested)
            fan_out(f);
        if (f->waiters.count == 0) {
            fill_release(f);
        } else {
            /* Freeing mid fan-out: teardown answers the rest. */
            f->hnext = c->settled_head;
            c->settled_head = f;
            if (c->settled_tail == NULL)
                c->settled_tail = f;
        }
        f = next;
    }
    c->in_callback--;
    if (c->free_requested) {
        if (c->in_callback == 0)
            cache_destroy(c);
        return;
    }
    if (c->ready.count > 0 || c->settled_head != NULL)
        schedule_dispatch(c);
}

static void
sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_cache *c = arg;
    corral_l1_sweep(c->l1, corral_cache_now(c), 4096);
}

/* ---- lifecycle ---- */

static void
tier_invalidated(const void *key, size_t keylen, void *arg)
{
    struct corral_cache *c = arg;
    corral_l1_del(c->l1, key, keylen);
}

struct corral_cache *
corral_cache_new(struct event_base *base,
                 const struct corral_cache_options *opts)
{
    struct corral_cache_options o = {0};
    if (opts)
        o = *opts;
    if (base == NULL ||
        (o.tier && (!o.tier->get || !o.tier->set || !o.tier->del)))
        return NULL;
    struct corral_cache *c = xcalloc(1, sizeof(*c));
    c->base = base;
    c->l1 = corral_l1_new(o.max_bytes ? o.max_bytes : 64u << 20);
    c->tier = o.tier;
    c->tier_ctx = o.tier_ctx;
    c->clock = o.clock ? o.clock : loop_clock;
    c->clock_arg = o.clock ? o.clock_arg : base;
    c->fill_timeout_ms = o.fill_timeout_ms ? o.fill_timeout_ms : 10000;
    c->max_waiters = o.max_waiters ? o.max_waiters : 10000;
    c->fills = xcalloc(64, sizeof(*c->fills));
    c->fills_mask = 63;
    if (getrandom(c->seed, sizeof(c->seed), 0) != sizeof(c->seed))
        memcpy(c->seed, "corral-fill-seed", 16);
    c->dispatch_ev = event_new(base, -1, 0, dispatch_cb, c);
    c->sweep_ev = event_new(base, -1, EV_PERSIST, sweep_cb, c);
    if (c->dispatch_ev == NULL || c->sweep_ev == NULL)
        abort();
    uint64_t sweep_ms = o.sweep_interval_ms ? o.sweep_interval_ms : 1000;
    struct timeval tv = corral_ms_to_tv(sweep_ms);
    event_add(c->sweep_ev, &tv);
    c->stats.max_bytes = o.max_bytes ? o.max_bytes : 64u << 20;
    if (c->tier && c->tier->subscribe)
        c->tier->subscribe(c->tier_ctx, tier_invalidated, c);
    return c;
}

static void
cancel_all(struct waiter_list *l, struct corral_cache *c)
{
    struct corral_waiter *w;
    while ((w = list_pop(l)) != NULL) {
        c->stats.waiters_cancelled++;
        w->state = W_FIRING;
        fire(w, -ECANCELED, "cache torn down", CORRAL_SOURCE_NONE, NULL);
        corral_value_unref(w->value);
        free(w);
    }
}

static void
fill_abandon(struct corral_fill *f)
{
    struct corral_cache *c = f->cache;
    cancel_all(&f->waiters, c);
    if (f->computing && f->abort_cb) {
        f->computing = false;
        f->abort_cb(f->abort_arg);
    }
    f->state = F_SETTLED;
    if (f->deadline)
        event_del(f->deadline);
    fill_release(f);
}

static void
cache_destroy(struct corral_cache *c)
{
    c->closing = true;
    if (c->tier && c->tier->subscribe)
        c->tier->subscribe(c->tier_ctx, NULL, NULL);
    event_free(c->dispatch_ev);
    event_free(c->sweep_ev);
    cancel_all(&c->ready, c);
    while (c->settled_head) {
        struct corral_fill *f = c->settled_head;
        c->settled_head = f->hnext;
        fill_abandon(f);
    }
    for (size_t i = 0; i <= c->fills_mask; i++) {
        struct corral_fill *f;
        while ((f = c->fills[i]) != NULL) {
            c->fills[i] = f->hnext;
            fill_abandon(f);
        }
    }
    struct corral_waiter *w;
    while ((w = list_pop(&c->tier_waiters)) != NULL) {
        /* The tier owes a callback: it frees the waiter. */
        bool tell = w->state == W_TIER;
        if (w->timer != NULL) {
            event_free(w->timer);
            w->timer = NULL;
        }
        w->state = W_ZOMBIE;
        w->cache = NULL;
        if (tell) {
            c->stats.waiters_cancelled++;
            fire(w, -ECANCELED, "cache torn down", CORRAL_SOURCE_NONE, NULL);
        }
    }
    free(c->fills);
    corral_l1_free(c->l1);
    free(c);
}

void
corral_cache_free(struct corral_cache *c)
{
    if (c == NULL || c->closing)
        return;
    if (c->in_callback > 0) {
        c->free_requested = true;
        return;
    }
    cache_destroy(c);
}

/* ---- lookups ---- */

struct corral_value *
corral_cache_peek(struct corral_cache *c, const void *key, size_t keylen)
{
    struct corral_value *v =
        corral_l1_get(c->l1, key, keylen, c->clock(c->clock_arg));
    if (v)
        c->stats.hits_l1++;
    return v;
}

static void
tier_get_done(struct corral_value *value, int error, void *arg)
{
    struct corral_waiter *w = arg;
    struct corral_cache *c = w->cache;
    if (w->timer != NULL) {
        event_free(w->timer);
        w->timer = NULL;
    }
    if (w->state == W_ZOMBIE) {
        corral_value_unref(value);
        if (c)
            list_remove(&c->tier_waiters, w);
        free(w);
        return;
    }
    list_remove(&c->tier_waiters, w);
    uint64_t now = corral_cache_now(c);
    if (value && now < value->expires_at) {
        corral_l1_put(c->l1, value);
        c->stats.hits_l2++;
        waiter_ready(c, w, 0, "", CORRAL_SOURCE_L2, value);
    } else {
        c->stats.misses++;
        waiter_ready(c, w, -ENOENT, "not found", CORRAL_SOURCE_NONE, NULL);
    }
    corral_value_unref(value);
}

/* The tier took longer than a fill may: answer now; the tier's late
 * callback frees the waiter. */
static void
tier_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_waiter *w = arg;
    struct corral_cache *c = w->cache;
    event_free(w->timer);
    w->timer = NULL;
    w->state = W_ZOMBIE;
    c->stats.misses++;
    c->in_callback++;
    fire(w, -ETIMEDOUT, "the tier did not answer in time", CORRAL_SOURCE_NONE,
         NULL);
    if (--c->in_callback == 0 && c->free_requested)
        cache_destroy(c);
}

struct corral_waiter *
corral_get(struct corral_cache *c, const void *key, size_t keylen,
           corral_result_cb *cb, void *arg)
{
    if (c->closing)
        return NULL;
    struct corral_waiter *w = waiter_new(c, cb, arg);
    struct corral_value *v =
        corral_l1_get(c->l1, key, keylen, corral_cache_now(c));
    if (v) {
        c->stats.hits_l1++;
        waiter_ready(c, w, 0, "", CORRAL_SOURCE_L1, v);
    } else if (c->tier) {
        struct timeval tv = corral_ms_to_tv(c->fill_timeout_ms);
        w->state = W_TIER;
        w->timer = evtimer_new(c->base, tier_timeout_cb, w);
        if (w->timer == NULL || evtimer_add(w->timer, &tv) != 0)
            abort(); /* out of memory: the policy of xalloc.h */
        list_push(&c->tier_waiters, w);
        c->tier->get(c->tier_ctx, key, keylen, tier_get_done, w);
    } else {
        c->stats.misses++;
        waiter_ready(c, w, -ENOENT, "not found", CORRAL_SOURCE_NONE, NULL);
    }
    return w;
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_fill *f = arg;
    struct corral_cache *c = f->cache;
    c->stats.fills_failed++;
    c->stats.fills_timed_out++;
    bool tell = f->computing && f->abort_cb;
    if (tell)
        f->computing = false;
    fill_settle(f, -ETIMEDOUT, "fill deadline passed", NULL);
    if (tell)
        f->abort_cb(f->abort_arg);
}

static void
start_compute(struct corral_fill *f)
{
    struct corral_cache *c = f->cache;
    f->state = F_COMPUTING;
    f->computing = true;
    c->stats.fills_started++;
    f->compute(f, f->key, f->keylen, f->compute_arg);
}

static void
fill_tier_done(struct corral_value *value, int error, void *arg)
{
    struct corral_fill *f = arg;
    f->in_tier = false;
    if (f->cache == NULL || f->state != F_LOOKUP) {
        corral_value_unref(value);
        fill_maybe_free(f);
        return;
    }
    struct corral_cache *c = f->cache;
    if (value && corral_cache_now(c) < value->expires_at &&
        value->keylen == f->keylen &&
        memcmp(value_key(value), f->key, f->keylen) == 0) {
        corral_l1_put(c->l1, value);
        c->stats.hits_l2++;
        f->from_tier = true;
        fill_settle(f, 0, "", value);
        return;
    }
    corral_value_unref(value);
    start_compute(f);
}

struct corral_waiter *
corral_get_or_compute(struct corral_cache *c, const void *key, size_t keylen,
                      const struct corral_strategy *strategy,
                      uint64_t fill_timeout_ms,
                      const struct corral_compute *compute,
                      corral_result_cb *cb, void *arg)
{
    if (c->closing)
        return NULL;
    struct corral_waiter *w = waiter_new(c, cb, arg);
    uint64_t now = corral_cache_now(c);
    struct corral_value *v = corral_l1_get(c->l1, key, keylen, now);
    if (v) {
        c->stats.hits_l1++;
        waiter_ready(c, w, 0, "", CORRAL_SOURCE_L1, v);
        return w;
    }
    if (keylen == 0 || keylen > CORRAL_KEY_MAX) {
        waiter_ready(c, w, -EINVAL, "bad key length", CORRAL_SOURCE_NONE, NULL);
        return w;
    }
    uint64_t h = corral_siphash(key, keylen, c->seed);
    struct corral_fill **slot = fill_slot(c, key, keylen, h);
    struct corral_fill *f = *slot;
    if (f) {
        if (f->waiters.count >= c->max_waiters) {
            waiter_ready(c, w, -EAGAIN, "too many waiters on this key",
                         CORRAL_SOURCE_NONE, NULL);
            return w;
        }
        c->stats.misses++;
        c->stats.waiters_collapsed++;
        w->state = W_PENDING;
        w->fill = f;
        list_push(&f->waiters, w);
        return w;
    }

    c->stats.misses++;
    f = xcalloc(1, sizeof(*f) + keylen);
    f->cache = c;
    f->hash = h;
    f->keylen = keylen;
    memcpy(f->key, key, keylen);
    f->strategy = *strategy;
    f->compute = compute->fn;
    f->compute_arg = compute->arg;
    if (compute->data_len > 0) {
        f->data = xmalloc(compute->data_len + 1);
        memcpy(f->data, compute->data, compute->data_len);
        f->data[compute->data_len] = '\0';
        f->data_len = compute->data_len;
    }
    f->deadline = evtimer_new(c->base, deadline_cb, f);
    if (f->deadline == NULL)
        abort();
    uint64_t ms = fill_timeout_ms ? fill_timeout_ms : c->fill_timeout_ms;
    struct timeval tv = corral_ms_to_tv(ms);
    evtimer_add(f->deadline, &tv);
    *slot = f;
    if (++c->nfills > c->fills_mask + 1)
        fills_grow(c);
    c->stats.fills_in_flight++;
    w->state = W_PENDING;
    w->fill = f;
    w->leader = true;
    list_push(&f->waiters, w);
    if (c->tier) {
        f->state = F_LOOKUP;
        f->in_tier = true;
        c->tier->get(c->tier_ctx, key, keylen, fill_tier_done, f);
    } else {
        start_compute(f);
    }
    return w;
}

struct corral_waiter *
corral_get_with_fallback(struct corral_cache *c, const void *key, size_t keylen,
                         corral_compute_cb *compute, void *compute_arg,
                         corral_result_cb *cb, void *arg)
{
    static const struct corral_strategy dflt = {.kind =
                                                    CORRAL_STRATEGY_DEFAULT};
    const struct corral_compute cp = {.fn = compute, .arg = compute_arg};
    return corral_get_or_compute(c, key, keylen, &dflt, 0, &cp, cb, arg);
}

void
corral_waiter_cancel(struct corral_waiter *w)
{
    struct corral_cache *c = w->cache;
    switch (w->state) {
    case W_READY:
        list_remove(&c->ready, w);
        corral_value_unref(w->value);
        break;
    case W_PENDING:
        list_remove(&w->fill->waiters, w);
        break;
    case W_TIER:
        /* The tier still owes its callback, which frees w. */
        event_free(w->timer);
        w->timer = NULL;
        w->state = W_ZOMBIE;
        c->stats.waiters_cancelled++;
        fire(w, -ECANCELED, "cancelled", CORRAL_SOURCE_NONE, NULL);
        return;
    case W_ZOMBIE:
    case W_FIRING: /* answered already: from inside its own callback */
        return;
    }
    w->state = W_FIRING;
    c->stats.waiters_cancelled++;
    fire(w, -ECANCELED, "cancelled", CORRAL_SOURCE_NONE, NULL);
    free(w);
}

/* ---- stores ---- */

static void
store(struct corral_cache *c, struct corral_value *v,
      const struct corral_strategy *s, uint64_t ttl)
{
    corral_value_stamp(v, corral_cache_now(c), ttl, s->swr_ms, s->sie_ms);
    corral_l1_put(c->l1, v);
    if (c->tier)
        c->tier->set(c->tier_ctx, v,
                     ttl + (value_keep_until(v) - v->expires_at));
}

int
corral_set_with_strategy(struct corral_cache *c, struct corral_value *value,
                         const struct corral_strategy *strategy)
{
    uint64_t ttl = corral_strategy_ttl_ms(strategy);
    if (ttl == 0 || (value->flags & VALUE_STORED))
        return -EINVAL;
    if (corral_l1_charge(value) > c->stats.max_bytes)
        return -E2BIG;
    store(c, value, strategy, ttl);
    return 0;
}

int
corral_invalidate(struct corral_cache *c, const void *key, size_t keylen)
{
    bool had = corral_l1_del(c->l1, key, keylen);
    if (c->tier)
        c->tier->del(c->tier_ctx, key, keylen);
    return had;
}

/* ---- fills ---- */

/* Has the cache already given up on f (deadline, teardown)? Then a late
 * report only releases what it holds. */
static bool
fill_given_up(const struct corral_fill *f)
{
    return !f->computing || f->cache == NULL || f->state != F_COMPUTING;
}

void
corral_fill_done(struct corral_fill *f, struct corral_value *value)
{
    if (fill_given_up(f)) {
        /* Given up on (deadline, teardown) without an abort hook. */
        f->computing = false;
        corral_value_unref(value);
        fill_maybe_free(f);
        return;
    }
    if (value == NULL || value->keylen != f->keylen ||
        memcmp(value_key(value), f->key, f->keylen) != 0 ||
        (value->flags & VALUE_STORED)) {
        corral_value_unref(value);
        corral_fill_fail(f, -EINVAL, "compute gave a value for another key");
        return;
    }
    struct corral_cache *c = f->cache;
    f->computing = false;
    c->stats.fills_ok++;
    store(c, value, &f->strategy, corral_strategy_ttl_ms(&f->strategy));
    fill_settle(f, 0, "", value);
}

void
corral_fill_fail(struct corral_fill *f, int error, const char *message)
{
    if (fill_given_up(f)) {
        f->computing = false;
        fill_maybe_free(f);
        return;
    }
    f->computing = false;
    f->cache->stats.fills_failed++;
    fill_settle(f, error < 0 ? error : -EIO, message, NULL);
}

void
corral_fill_on_abort(struct corral_fill *f, corral_abort_cb *cb, void *arg)
{
    f->abort_cb = cb;
    f->abort_arg = arg;
}

const void *
corral_fill_key(const struct corral_fill *f, size_t *keylen)
{
    *keylen = f->keylen;
    return f->key;
}

const void *
corral_fill_data(const struct corral_fill *f, size_t *len)
{
    *len = f->data_len;
    return f->data ? f->data : "";
}

const struct corral_strategy *
corral_fill_strategy(const struct corral_fill *f)
{
    return &f->strategy;
}

void
corral_cache_stats(const struct corral_cache *c, struct corral_stats *out)
{
    struct corral_l1_stats l1;
    corral_l1_stats(c->l1, &l1);
    *out = c->stats;
    out->entries = l1.entries;
    out->bytes = l1.bytes;
    out->evictions = l1.evictions;
    out->expirations = l1.expirations;
}
