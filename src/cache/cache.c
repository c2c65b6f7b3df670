/* cache.c — the two-tier cache's policy: L1, then the tier below (with
 * promotion), then one compute per key, with deadlines, stores and
 * teardown. One cache per event_base; no locks. A fill embeds single
 * flight's call (flight.c: its waiters, one result for all, delivery from
 * the loop); failed keys back off in backoff.c. A call hashes its key once
 * and every table takes that hash. A fill ends exactly once (done, fail,
 * deadline, teardown) and so does every waiter. */
#include "corral/cache.h"

#include <errno.h>
#include <event2/event.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>

#include "backoff.h"
#include "flight.h"
#include "l1.h"
#include "siphash.h"
#include "timeutil.h"
#include "value_impl.h"
#include "xalloc.h"

/* Where a corral_get() waiter is with the tier (single flight never
 * holds it then: its state is W_OWNER). */
enum tier_wait {
    T_NONE,   /* not waiting on the tier */
    T_ASKED,  /* the tier owes its get callback */
    T_ZOMBIE, /* answered (timeout, cancel, teardown): the tier's late
               * callback frees it */
};

/* A caller's handle: single flight's waiter, and what corral_get() needs
 * while the tier is asked. */
struct corral_waiter {
    struct flight_waiter fw;    /* first: single flight allocates it */
    struct corral_cache *cache; /* NULL once the cache is gone */
    enum tier_wait tier;
    TAILQ_ENTRY(corral_waiter) tier_link; /* the cache's tier_waiters */
    uint64_t hash;                        /* the key's, for a promotion */
    struct event *timer; /* T_ASKED: how long the tier may take */
    corral_fit_cb *fit;  /* is the tier's value fit (NULL: yes) */
    void *fit_arg;
};

TAILQ_HEAD(tier_waiter_list, corral_waiter);

enum fill_state {
    F_LOOKUP,    /* reading the tier below (one without a lease) */
    F_ACQUIRE,   /* asking the tier for a value, else the key's lease */
    F_REMOTE,    /* another instance holds the lease: waiting for it */
    F_COMPUTING, /* compute started, not reported */
    F_SETTLED,   /* result known, fanning out or waiting to */
};

/* One key's fill: single flight's call (its waiters and the one result),
 * and how the result is got: the tier, a lease, another instance, the
 * compute. */
struct corral_fill {
    struct flight_call call;    /* key, hash, waiters, result */
    struct corral_cache *cache; /* NULL once detached */
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
    bool deadline_moved;     /* the one extension for a remote wait is used */
    bool refresh;            /* replaces a value L1 has: a tier value must be
                              * newer than refresh_of to count */
    bool stale_served;       /* failed, answered with a stale value instead */
    bool retry;              /* the key's last fill failed: this is its next
                              * try, and a copy inside its stale-if-error
                              * window answers instead of waiting on it */
    uint64_t refresh_of;     /* stored_at of the value it replaces */
    uint64_t started_ms;     /* when compute started, for the value's fill_ms */
    uint64_t asked_ms;       /* when the tier was last asked */
    uint64_t retry_after_ms; /* of a failure: from corral_fill_fail_retry */
    uint64_t timeout_ms;     /* its deadline, and the lease's lifetime */
    struct event *wait_ev;   /* F_REMOTE: when to look again */
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
    char *message;              /* the result's, owned */
    struct corral_value *value; /* the result's, a reference */
    size_t keylen;
    char key[];
};

/* Keys remembered as backing off, at most; the oldest go first. */
#define BACKOFF_MAX 65536

struct corral_cache {
    struct event_base *base;
    struct corral_l1 *l1;
    const struct corral_tier *tier;
    void *tier_ctx;
    uint64_t (*clock)(void *);
    void *clock_arg;
    uint64_t fill_timeout_ms;
    uint32_t max_waiters;

    struct corral_flight fl;              /* fills, waiters, delivery */
    struct tier_waiter_list tier_waiters; /* corral_get() on the tier */
    struct event *sweep_ev;
    bool closing;
    struct corral_stats stats;
    uint64_t rng; /* xorshift64* state: TTL jitter, backoff, early refresh */
    struct corral_backoff backoff; /* failing keys */
};

static const char *const source_names[] = {
    [CORRAL_SOURCE_NONE] = "none",
    [CORRAL_SOURCE_L1] = "l1",
    [CORRAL_SOURCE_L2] = "l2",
    [CORRAL_SOURCE_STORED] = "stored",
    [CORRAL_SOURCE_COLLAPSED] = "collapsed",
    [CORRAL_SOURCE_STALE] = "stale",
    [CORRAL_SOURCE_STALE_ERROR] = "stale-error",
    [CORRAL_SOURCE_STALE_RETRY] = "stale-retry",
    [CORRAL_SOURCE_BACKOFF] = "backoff",
};

const char *
corral_source_name(enum corral_source source)
{
    if ((unsigned)source > CORRAL_SOURCE_BACKOFF)
        return "unknown";
    return source_names[source];
}

bool
corral_source_stale(enum corral_source source)
{
    return source == CORRAL_SOURCE_STALE ||
           source == CORRAL_SOURCE_STALE_ERROR ||
           source == CORRAL_SOURCE_STALE_RETRY ||
           source == CORRAL_SOURCE_BACKOFF;
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

static uint64_t
next_rand(struct corral_cache *c)
{
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return c->rng * 0x2545f4914f6cdd1dull;
}

/* ---- fills ---- */

static struct corral_fill *
fill_of(struct flight_call *call)
{
    return corral_dict_entry(call, struct corral_fill, call);
}

/* The fill running for key (hash its corral_key_hash()), or NULL. */
static struct corral_fill *
fill_find(struct corral_cache *c, const void *key, size_t keylen, uint64_t hash)
{
    struct flight_call *call = corral_flight_find(&c->fl, key, keylen, hash);
    return call != NULL ? fill_of(call) : NULL;
}

/* key failed: it backs off. Returns the wait, ms. */
static uint64_t
backoff_note(struct corral_cache *c, const void *key, size_t keylen,
             uint64_t hash, int error, const char *message,
             uint64_t retry_after_ms)
{
    c->stats.backoffs++;
    return corral_backoff_note(
        &c->backoff, key, keylen, hash, corral_cache_now(c), error, message,
        retry_after_ms, error == -EBUSY ? 0 : next_rand(c));
}

static void
fill_maybe_free(struct corral_fill *f)
{
    if (f->state != F_SETTLED || f->in_tier || f->computing ||
        f->call.nwaiters > 0 || f->cache != NULL)
        return;
    if (f->hold)
        f->hold(f->compute_arg, -1);
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
    if (f->wait_ev) {
        event_free(f->wait_ev);
        f->wait_ev = NULL;
    }
    f->cache = NULL;
    fill_maybe_free(f);
}

/* Gives f's lease back, if it holds one, with how it ended. */
static void
give_back(struct corral_fill *f, const struct corral_outcome *o)
{
    if (f->lease == NULL)
        return;
    struct corral_tier_lease *l = f->lease;
    f->lease = NULL;
    f->tier->release(f->tier_ctx, l, o);
}

/* Records a fill's result and hands it to single flight to fan out.
 * Takes a reference to value. A failure sets the key's backoff, and is
 * answered with a stale value inside its stale-if-error window when L1
 * keeps one. A lease goes back with the outcome, after the store (the
 * same connection, in order): the fleet hears it once the value is there. */
static void
fill_settle(struct corral_fill *f, int error, const char *message,
            struct corral_value *value)
{
    struct corral_cache *c = f->cache;
    if (f->deadline)
        event_del(f->deadline);
    if (f->wait_ev)
        event_del(f->wait_ev);
    if (message == NULL)
        message = "";
    if (error == 0) {
        corral_backoff_clear(&c->backoff, f->key, f->keylen,
                             f->call.entry.hash);
        struct corral_outcome o = {.kind = f->purged ? CORRAL_OUTCOME_ABANDONED
                                                     : CORRAL_OUTCOME_STORED,
                                   .stored_at = value ? value->stored_at : 0};
        give_back(f, &o);
    } else {
        uint64_t wait = backoff_note(c, f->key, f->keylen, f->call.entry.hash,
                                     error, message, f->retry_after_ms);
        f->retry_after_ms = wait; /* its waiters may ask again by then */
        struct corral_outcome o = {.kind = CORRAL_OUTCOME_FAILED,
                                   .error = error,
                                   .message = message,
                                   .retry_ms = wait};
        give_back(f, &o);
        struct corral_value *sv =
            f->purged
                ? NULL
                : corral_l1_find(c->l1, f->key, f->keylen, f->call.entry.hash);
        if (sv != NULL && corral_cache_now(c) < sv->expires_at + sv->sie_ms) {
            c->stats.stale_errors += f->call.nwaiters;
            f->stale_served = true;
            error = 0;
            value = corral_value_ref(sv);
        }
    }
    f->message = xstrndup(message, strlen(message));
    f->value = value;
    f->state = F_SETTLED;
    c->stats.fills_in_flight--;
    struct flight_call *call = &f->call;
    call->error = error;
    call->message = f->message;
    call->value = value;
    call->retry_after_ms = f->retry_after_ms;
    /* The leader stored what it computed; the others collapsed onto it. */
    call->leader_says = f->stale_served ? CORRAL_SOURCE_STALE_ERROR
                        : f->remote     ? CORRAL_SOURCE_COLLAPSED
                        : f->from_tier  ? CORRAL_SOURCE_L2
                                        : CORRAL_SOURCE_STORED;
    call->others_say = call->leader_says == CORRAL_SOURCE_STORED
                           ? CORRAL_SOURCE_COLLAPSED
                           : call->leader_says;
    corral_flight_settle(&c->fl, call);
}

static void cache_destroy(struct corral_cache *c);

static void
destroy_cb(void *arg)
{
    cache_destroy(arg);
}

/* Single flight delivered a fill's result to every waiter. */
static void
released_cb(struct flight_call *call)
{
    fill_release(fill_of(call));
}

static void
sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_cache *c = arg;
    uint64_t now = corral_cache_now(c);
    corral_l1_sweep(c->l1, now, 4096);
    corral_backoff_sweep(&c->backoff, now);
}

/* ---- lifecycle ---- */

/* A fill for key, if one runs, started before its purge. Computing: what
 * it brings back still answers the callers who asked before the purge but
 * is not stored, so the purge is not undone and the next request starts a
 * new fill. Reading the tier: what that read returns may predate the
 * purge, so it reads again. Waiting on another instance: its next look is
 * after the purge. */
static void
purge_fill(struct corral_cache *c, const void *key, size_t keylen, uint64_t h)
{
    struct corral_fill *f = fill_find(c, key, keylen, h);
    if (f != NULL) {
        if (f->state == F_COMPUTING)
            f->purged = true;
        else if (f->in_tier)
            f->reread = true;
    }
    /* a purge asks for a new try */
    corral_backoff_clear(&c->backoff, key, keylen, h);
}

static void
tier_invalidated(const void *key, size_t keylen, void *arg)
{
    struct corral_cache *c = arg;
    uint64_t h = corral_key_hash(key, keylen);
    corral_l1_del(c->l1, key, keylen, h);
    purge_fill(c, key, keylen, h);
}

static void look_again(struct corral_fill *f);

/* Another instance's fill of key ended. Stored: a copy here is older (a
 * refresh elsewhere), and a wait here reads it. Failed: every waiter here
 * gets the same failure now, and the key backs off here too. Abandoned:
 * a wait here looks again (and may take over). */
static void
tier_released(const void *key, size_t keylen, const struct corral_outcome *o,
              void *arg)
{
    struct corral_cache *c = arg;
    uint64_t h = corral_key_hash(key, keylen);
    struct corral_fill *f = fill_find(c, key, keylen, h);
    if (o->kind == CORRAL_OUTCOME_FAILED) {
        if (f != NULL && f->in_tier)
            f->woken = true;
        if (f != NULL && f->state == F_REMOTE) {
            c->stats.failures_shared++;
            f->retry_after_ms = o->retry_ms;
            fill_settle(f, o->error < 0 ? o->error : -EIO, o->message, NULL);
        } else if (f == NULL) {
            backoff_note(c, key, keylen, h, o->error < 0 ? o->error : -EIO,
                         o->message ? o->message : "", o->retry_ms);
        }
        return;
    }
    if (o->kind == CORRAL_OUTCOME_STORED && f == NULL) {
        /* A copy here older than the one stored elsewhere goes (the next
         * caller reads the new one); one as new, read from the tier
         * before this word came, stays. */
        struct corral_value *v = corral_l1_find(c->l1, key, keylen, h);
        if (v != NULL && (o->stored_at == 0 || v->stored_at < o->stored_at))
            corral_l1_del(c->l1, key, keylen, h);
    }
    if (f != NULL && f->state == F_REMOTE)
        look_again(f);
    else if (f != NULL && f->in_tier)
        f->woken = true; /* the word may overtake the answer it ends */
}

/* After a resync: what a fill read or computed before a loss of purges is
 * not kept, and a remote wait looks again, in case the message that would
 * have woken it was missed. look_again() only starts a tier call, which
 * never answers from inside it: the table stays as it is. */
static void
resync_fill(struct flight_call *call, void *arg)
{
    struct corral_fill *f = fill_of(call);
    bool lost = *(bool *)arg;
    if (lost && f->state == F_COMPUTING)
        f->purged = true;
    else if (lost && f->in_tier)
        f->reread = true;
    else if (f->state == F_REMOTE)
        look_again(f);
}

/* The tier hears the fleet again. Lost: purges were missed, so no copy
 * here can be trusted: L1 goes. */
static void
tier_resync(bool lost, void *arg)
{
    struct corral_cache *c = arg;
    if (lost) {
        c->stats.tier_resyncs_lost++;
        corral_l1_clear(c->l1);
    }
    corral_flight_each(&c->fl, resync_fill, &lost);
}

/* How soon a wait on another instance looks again while the tier is
 * deaf: the word it waits for may never come. */
#define DEAF_POLL_MS 100

static void
deaf_fill(struct flight_call *call, void *arg)
{
    struct corral_fill *f = fill_of(call);
    (void)arg;
    if (f->state == F_REMOTE) {
        struct timeval soon = corral_ms_to_tv(DEAF_POLL_MS);
        evtimer_add(f->wait_ev, &soon);
    }
}

static void
tier_deaf(void *arg)
{
    struct corral_cache *c = arg;
    corral_flight_each(&c->fl, deaf_fill, NULL);
}

static const struct corral_tier_events tier_events = {
    .invalidated = tier_invalidated,
    .released = tier_released,
    .resync = tier_resync,
    .deaf = tier_deaf,
};

struct corral_cache *
corral_cache_new(struct event_base *base,
                 const struct corral_cache_options *opts)
{
    struct corral_cache_options o = {0};
    if (opts)
        o = *opts;
    if (base == NULL ||
        (o.tier && (!o.tier->get || !o.tier->set || !o.tier->del ||
                    (o.tier->acquire && !o.tier->release))))
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
    corral_backoff_init(&c->backoff, o.backoff_min_ms ? o.backoff_min_ms : 1000,
                        o.backoff_max_ms ? o.backoff_max_ms : 60000,
                        BACKOFF_MAX);
    TAILQ_INIT(&c->tier_waiters);
    if (getrandom(&c->rng, sizeof(c->rng), 0) != sizeof(c->rng) || !c->rng)
        c->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)c;
    corral_flight_init(&c->fl, base, released_cb, destroy_cb, c);
    c->sweep_ev = event_new(base, -1, EV_PERSIST, sweep_cb, c);
    if (c->sweep_ev == NULL)
        abort();
    uint64_t sweep_ms = o.sweep_interval_ms ? o.sweep_interval_ms : 1000;
    struct timeval tv = corral_ms_to_tv(sweep_ms);
    event_add(c->sweep_ev, &tv);
    c->stats.max_bytes = o.max_bytes ? o.max_bytes : 64u << 20;
    if (c->tier && c->tier->listen)
        c->tier->listen(c->tier_ctx, &tier_events, c);
    return c;
}

static void
fill_abandon(struct flight_call *call)
{
    struct corral_fill *f = fill_of(call);
    struct corral_cache *c = f->cache;
    corral_flight_cancel_waiters(&c->fl, call);
    if (f->computing && f->abort_cb) {
        f->computing = false;
        f->abort_cb(f->abort_arg);
    }
    static const struct corral_outcome gone = {.kind =
                                                   CORRAL_OUTCOME_ABANDONED};
    give_back(f, &gone);
    f->state = F_SETTLED;
    if (f->deadline)
        event_del(f->deadline);
    /* The fill may outlive the cache until the tier answers what it
     * asked, and its compute's owner may be freed before the tier: it
     * lets go of the arg now. */
    if (f->hold) {
        f->hold(f->compute_arg, -1);
        f->hold = NULL;
    }
    fill_release(f);
}

static void
cache_destroy(struct corral_cache *c)
{
    c->closing = true;
    if (c->tier && c->tier->listen)
        c->tier->listen(c->tier_ctx, NULL, NULL);
    event_free(c->sweep_ev);
    corral_flight_finish(&c->fl, fill_abandon);
    struct corral_waiter *w;
    while ((w = TAILQ_FIRST(&c->tier_waiters)) != NULL) {
        TAILQ_REMOVE(&c->tier_waiters, w, tier_link);
        /* The tier owes a callback: it frees the waiter. */
        bool tell = w->tier == T_ASKED;
        if (w->timer != NULL) {
            event_free(w->timer);
            w->timer = NULL;
        }
        w->tier = T_ZOMBIE;
        w->cache = NULL;
        if (tell) {
            c->stats.waiters_cancelled++;
            corral_flight_fire(&w->fw, -ECANCELED, "cache torn down",
                               CORRAL_SOURCE_NONE, NULL);
        }
    }
    corral_l1_free(c->l1);
    corral_backoff_finish(&c->backoff);
    free(c);
}

void
corral_cache_free(struct corral_cache *c)
{
    if (c == NULL || c->closing)
        return;
    if (c->fl.in_callback > 0) {
        c->fl.free_requested = true;
        return;
    }
    cache_destroy(c);
}

/* ---- lookups ---- */

struct corral_value *
corral_cache_peek(struct corral_cache *c, const void *key, size_t keylen)
{
    struct corral_value *v =
        corral_l1_get(c->l1, key, keylen, corral_key_hash(key, keylen),
                      c->clock(c->clock_arg));
    if (v)
        c->stats.hits_l1++;
    return v;
}

/* A caller's handle, with its key's hash: the one hash of the call. */
static struct corral_waiter *
waiter_new(struct corral_cache *c, const void *key, size_t keylen,
           corral_result_cb *cb, void *arg)
{
    struct corral_waiter *w = (struct corral_waiter *)corral_flight_waiter_new(
        sizeof(struct corral_waiter), cb, arg);
    w->cache = c;
    w->hash = corral_key_hash(key, keylen);
    return w;
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
    if (w->tier == T_ZOMBIE) {
        corral_value_unref(value);
        if (c)
            TAILQ_REMOVE(&c->tier_waiters, w, tier_link);
        corral_flight_waiter_free(&w->fw);
        return;
    }
    TAILQ_REMOVE(&c->tier_waiters, w, tier_link);
    w->tier = T_NONE;
    uint64_t now = corral_cache_now(c);
    /* L1 files the value under the hash of the key asked for: a tier's
     * value for another key is refused, as a fill's is (accepted()). */
    if (value != NULL &&
        (corral_key_hash(value_key(value), value->keylen) != w->hash ||
         (w->fit != NULL && !w->fit(value, now, w->fit_arg)))) {
        c->stats.tier_rejects++;
        corral_value_unref(value);
        value = NULL;
    }
    if (value && now < value->expires_at) {
        corral_l1_put(c->l1, value, w->hash);
        c->stats.hits_l2++;
        corral_flight_ready(&c->fl, &w->fw, 0, "", CORRAL_SOURCE_L2, value);
    } else {
        c->stats.misses++;
        corral_flight_ready(&c->fl, &w->fw, -ENOENT, "not found",
                            CORRAL_SOURCE_NONE, NULL);
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
    w->tier = T_ZOMBIE;
    c->stats.misses++;
    c->fl.in_callback++;
    corral_flight_fire(&w->fw, -ETIMEDOUT, "the tier did not answer in time",
                       CORRAL_SOURCE_NONE, NULL);
    if (--c->fl.in_callback == 0 && c->fl.free_requested)
        cache_destroy(c);
}

struct corral_waiter *
corral_get(struct corral_cache *c, const void *key, size_t keylen,
           corral_result_cb *cb, void *arg)
{
    return corral_get_fit(c, key, keylen, NULL, NULL, cb, arg);
}

struct corral_waiter *
corral_get_fit(struct corral_cache *c, const void *key, size_t keylen,
               corral_fit_cb *fit, void *fit_arg, corral_result_cb *cb,
               void *arg)
{
    if (c->closing)
        return NULL;
    struct corral_waiter *w = waiter_new(c, key, keylen, cb, arg);
    w->fit = fit;
    w->fit_arg = fit_arg;
    struct corral_value *v =
        corral_l1_get(c->l1, key, keylen, w->hash, corral_cache_now(c));
    if (v) {
        c->stats.hits_l1++;
        corral_flight_ready(&c->fl, &w->fw, 0, "", CORRAL_SOURCE_L1, v);
    } else if (c->tier) {
        struct timeval tv = corral_ms_to_tv(c->fill_timeout_ms);
        w->tier = T_ASKED;
        w->timer = evtimer_new(c->base, tier_timeout_cb, w);
        if (w->timer == NULL || evtimer_add(w->timer, &tv) != 0)
            abort(); /* out of memory: the policy of xalloc.h */
        TAILQ_INSERT_TAIL(&c->tier_waiters, w, tier_link);
        c->tier->get(c->tier_ctx, key, keylen, tier_get_done, w);
    } else {
        c->stats.misses++;
        corral_flight_ready(&c->fl, &w->fw, -ENOENT, "not found",
                            CORRAL_SOURCE_NONE, NULL);
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

/* Computing starts after every purge heard so far: what it brings back
 * may be stored. */
static void
start_compute(struct corral_fill *f)
{
    struct corral_cache *c = f->cache;
    f->state = F_COMPUTING;
    f->computing = true;
    f->purged = false;
    f->started_ms = corral_cache_now(c);
    c->stats.fills_started++;
    f->compute(f, f->key, f->keylen, f->compute_arg);
}

/* Is a value from the tier fit to serve for f's key? */
static bool
accepted(struct corral_fill *f, struct corral_value *v, uint64_t now)
{
    if (v->keylen != f->keylen ||
        memcmp(value_key(v), f->key, f->keylen) != 0 ||
        (f->fit != NULL && !f->fit(v, now, f->compute_arg))) {
        f->cache->stats.tier_rejects++;
        return false;
    }
    return true;
}

static void fill_tier_done(struct corral_value *value, int error, void *arg);
static void fill_acquired(const struct corral_tier_answer *a, void *arg);

/* Asks the tier about f's key: a usable value, else (with a fleet) the
 * key's lease. */
static void
ask_tier(struct corral_fill *f)
{
    struct corral_cache *c = f->cache;
    f->in_tier = true;
    f->reread = false;
    f->woken = false;
    f->asked_ms = corral_cache_now(c);
    if (c->tier->acquire == NULL) {
        f->state = F_LOOKUP;
        c->tier->get(c->tier_ctx, f->key, f->keylen, fill_tier_done, f);
        return;
    }
    f->state = F_ACQUIRE;
    struct corral_tier_want want = {
        .now_ms = f->asked_ms,
        .newer_than = f->refresh ? f->refresh_of : 0,
    };
    c->tier->acquire(c->tier_ctx, f->key, f->keylen, &want, fill_acquired, f);
}

/* The holder announced the key, its lease may have run out, or it is time
 * to poll: read the tier once more (and take the lease over if it is
 * free). */
static void
look_again(struct corral_fill *f)
{
    event_del(f->wait_ev);
    f->remote = true;
    ask_tier(f);
}

static void
wait_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_fill *f = arg;
    if (f->state == F_REMOTE)
        look_again(f);
}

/* A copy past its expiry that the tier still keeps for its stale windows:
 * L1 keeps it too, and inside stale-while-revalidate (or stale-if-error,
 * when this fill retries a failed key) the callers have it now while this
 * fill goes on as a refresh. Takes the reference. */
static void
take_stale(struct corral_fill *f, struct corral_value *value, uint64_t now)
{
    struct corral_cache *c = f->cache;
    if (value != NULL && !f->refresh && now < value_keep_until(value) &&
        accepted(f, value, now) &&
        corral_l1_find(c->l1, f->key, f->keylen, f->call.entry.hash) == NULL) {
        corral_l1_put(c->l1, value, f->call.entry.hash);
        if (now < value->expires_at + value->swr_ms) {
            c->stats.stale_hits += f->call.nwaiters;
            corral_flight_answer_all(&c->fl, &f->call, CORRAL_SOURCE_STALE,
                                     value);
        } else if (f->retry && now < value->expires_at + value->sie_ms) {
            c->stats.stale_errors += f->call.nwaiters;
            corral_flight_answer_all(&c->fl, &f->call,
                                     CORRAL_SOURCE_STALE_RETRY, value);
        }
        f->refresh = true;
        f->refresh_of = value->stored_at;
    }
    corral_value_unref(value);
}

/* A fresh value from the tier answers the fill. Fresh when the tier was
 * asked: one that expires while the answer travels is still the answer
 * (asking again would race the refresh that replaces it). Borrows
 * value. */
static bool
take_fresh(struct corral_fill *f, struct corral_value *value, uint64_t now)
{
    struct corral_cache *c = f->cache;
    /* A refresh wants a value newer than the one it replaces. */
    if (value == NULL || f->asked_ms >= value->expires_at ||
        (f->refresh && value->stored_at <= f->refresh_of) ||
        !accepted(f, value, now))
        return false;
    corral_l1_put(c->l1, value, f->call.entry.hash);
    c->stats.hits_l2++;
    f->from_tier = true;
    fill_settle(f, 0, "", corral_value_ref(value));
    return true;
}

/* Another instance fills: wait for its word, and look again by then. The
 * first wait moves the deadline to twice the timeout from now, room for
 * the holder's call and one takeover; never again, so waits that keep
 * losing the lease still end. */
static void
wait_remote(struct corral_fill *f, uint64_t ms)
{
    struct corral_cache *c = f->cache;
    f->state = F_REMOTE;
    c->stats.waits_remote++;
    if (f->wait_ev == NULL &&
        (f->wait_ev = evtimer_new(c->base, wait_cb, f)) == NULL)
        abort(); /* the policy of xalloc.h */
    struct timeval tv = corral_ms_to_tv(ms ? ms : 1);
    evtimer_add(f->wait_ev, &tv);
    if (!f->deadline_moved) {
        f->deadline_moved = true;
        tv = corral_ms_to_tv(2 * f->timeout_ms);
        evtimer_add(f->deadline, &tv);
    }
}

static void
fill_acquired(const struct corral_tier_answer *a, void *arg)
{
    struct corral_fill *f = arg;
    struct corral_value *value = a->value;
    f->in_tier = false;
    if (f->cache == NULL || f->state != F_ACQUIRE) {
        /* Settled meanwhile (deadline, teardown): a lease it got goes
         * back at once rather than keep the others waiting. */
        if (a->lease != NULL) {
            static const struct corral_outcome gone = {
                .kind = CORRAL_OUTCOME_ABANDONED};
            f->tier->release(f->tier_ctx, a->lease, &gone);
        }
        corral_value_unref(value);
        fill_maybe_free(f);
        return;
    }
    uint64_t now = corral_cache_now(f->cache);
    if (f->reread) {
        /* A purge came while this read ran: what it read may predate it.
         * A lease is still good (computing starts after the purge). */
        corral_value_unref(value);
        value = NULL;
        if (a->verdict != CORRAL_TIER_WON) {
            ask_tier(f);
            return;
        }
    }
    switch (a->verdict) {
    case CORRAL_TIER_VALUE:
        if (take_fresh(f, value, now)) {
            corral_value_unref(value);
            return;
        }
        /* Unfit or garbage: ask again for a value stored after it (after
         * now, for garbage), which makes the tier pass it by and hand out
         * the lease. Bytes that keep passing for values (planted, with a
         * store time in the future) are given up on: fill here. */
        if (++f->reasks <= 3) {
            f->refresh = true;
            uint64_t floor = value ? value->stored_at : now;
            if (f->refresh_of < floor)
                f->refresh_of = floor;
            corral_value_unref(value);
            ask_tier(f);
            return;
        }
        corral_value_unref(value);
        f->remote = false;
        start_compute(f);
        return;
    case CORRAL_TIER_WON:
        f->lease = a->lease;
        f->remote = false;
        take_stale(f, value, now);
        start_compute(f);
        return;
    case CORRAL_TIER_HELD:
        take_stale(f, value, now);
        /* The holder's word came on the other connection before this
         * answer: it is done, so look again now, not at the poll. */
        wait_remote(f, f->woken ? 0 : a->ms);
        f->woken = false;
        return;
    case CORRAL_TIER_FAILED:
        take_stale(f, value, now);
        f->cache->stats.failures_shared++;
        f->retry_after_ms = a->ms;
        fill_settle(f, a->error < 0 ? a->error : -EIO, a->message, NULL);
        return;
    case CORRAL_TIER_UNKNOWN:
    default:
        /* The tier cannot tell (down, slow): fill in this process. */
        take_stale(f, value, now);
        f->remote = false;
        start_compute(f);
        return;
    }
}

/* A tier without leases answered a fill's read. */
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
    if (f->reread) {
        corral_value_unref(value);
        ask_tier(f);
        return;
    }
    uint64_t now = corral_cache_now(f->cache);
    if (take_fresh(f, value, now)) {
        corral_value_unref(value);
        return;
    }
    take_stale(f, value, now);
    start_compute(f);
}

/* A fill of key (h its hash; none runs for it), not started yet. */
static struct corral_fill *
fill_new(struct corral_cache *c, uint64_t h, const void *key, size_t keylen,
         const struct corral_strategy *strategy, uint64_t fill_timeout_ms,
         const struct corral_compute *compute)
{
    struct corral_fill *f = xcalloc(1, sizeof(*f) + keylen);
    f->cache = c;
    f->tier = c->tier;
    f->tier_ctx = c->tier_ctx;
    f->keylen = keylen;
    memcpy(f->key, key, keylen);
    f->call.entry.hash = h;
    f->call.entry.key = f->key;
    f->call.entry.keylen = keylen;
    f->strategy = *strategy;
    f->compute = compute->fn;
    f->fit = compute->fit;
    f->hold = compute->hold;
    f->compute_arg = compute->arg;
    if (f->hold)
        f->hold(f->compute_arg, 1);
    if (compute->data_len > 0) {
        f->data = xmalloc(compute->data_len + 1);
        memcpy(f->data, compute->data, compute->data_len);
        f->data[compute->data_len] = '\0';
        f->data_len = compute->data_len;
    }
    f->deadline = evtimer_new(c->base, deadline_cb, f);
    if (f->deadline == NULL)
        abort();
    f->timeout_ms = fill_timeout_ms ? fill_timeout_ms : c->fill_timeout_ms;
    return f;
}

/* Starts f for w (NULL: a refresh nobody waits on): the tier below first,
 * when there is one. old and b are L1's copy of the key and its backoff as
 * the caller found them (NULL: none); a fill with a copy is a refresh,
 * which wants a newer value. */
static void
fill_go(struct corral_fill *f, struct corral_waiter *w,
        const struct corral_value *old, struct corral_backoff_key *b)
{
    struct corral_cache *c = f->cache;
    if (old != NULL && !f->refresh) {
        f->refresh = true;
        f->refresh_of = old->stored_at;
    }
    f->retry = b != NULL;
    if (b != NULL) /* a remote wait may double the deadline */
        corral_backoff_keep(&c->backoff, b,
                            corral_cache_now(c) + 2 * f->timeout_ms);
    struct timeval tv = corral_ms_to_tv(f->timeout_ms);
    evtimer_add(f->deadline, &tv);
    corral_flight_add(&c->fl, &f->call);
    c->stats.fills_in_flight++;
    if (w != NULL)
        corral_flight_join(&f->call, &w->fw, true);
    else
        c->stats.refreshes++;
    if (c->tier)
        ask_tier(f);
    else
        start_compute(f);
}

bool
corral_cache_early(struct corral_cache *c, const struct corral_value *v,
                   double beta)
{
    if (!(beta > 0))
        return false;
    uint64_t now = corral_cache_now(c);
    if (now >= v->expires_at)
        return true;
    double delta = (double)(v->fill_ms ? v->fill_ms : 1) * beta;
    double gap = (double)(v->expires_at - now);
    /* -ln(u) of a 53-bit u is at most 36.7: no draw reaches further. */
    if (gap > 37.0 * delta)
        return false;
    double u = (double)((next_rand(c) >> 11) + 1) * 0x1.0p-53; /* (0, 1] */
    return -delta * log(u) >= gap;
}

static int
refresh_start(struct corral_cache *c, const void *key, size_t keylen,
              uint64_t h, const struct corral_strategy *strategy,
              uint64_t fill_timeout_ms, const struct corral_compute *compute,
              bool force)
{
    if (c->closing)
        return -ESHUTDOWN;
    if (keylen == 0 || keylen > CORRAL_KEY_MAX)
        return -EINVAL;
    if (fill_find(c, key, keylen, h) != NULL)
        return -EALREADY;
    uint64_t now = corral_cache_now(c);
    struct corral_backoff_key *b =
        corral_backoff_find(&c->backoff, key, keylen, h, now);
    if (b != NULL && now < b->until)
        return -EBUSY;
    struct corral_fill *f =
        fill_new(c, h, key, keylen, strategy, fill_timeout_ms, compute);
    if (force) {
        /* Only a value stored from now on will do, from the first
         * question to the tier on. */
        f->refresh = true;
        f->refresh_of = now > 0 ? now - 1 : 0;
    }
    fill_go(f, NULL, corral_l1_find(c->l1, key, keylen, h), b);
    return 0;
}

int
corral_refresh(struct corral_cache *c, const void *key, size_t keylen,
               const struct corral_strategy *strategy, uint64_t fill_timeout_ms,
               const struct corral_compute *compute)
{
    return refresh_start(c, key, keylen, corral_key_hash(key, keylen), strategy,
                         fill_timeout_ms, compute, false);
}

int
corral_refetch(struct corral_cache *c, const void *key, size_t keylen,
               const struct corral_strategy *strategy, uint64_t fill_timeout_ms,
               const struct corral_compute *compute)
{
    return refresh_start(c, key, keylen, corral_key_hash(key, keylen), strategy,
                         fill_timeout_ms, compute, true);
}

/* A caller of a key that is backing off: a value L1 keeps, else the
 * remembered error with the time left. */
static void
answer_backoff(struct corral_cache *c, struct flight_waiter *w,
               const struct corral_backoff_key *b, struct corral_value *stale,
               uint64_t now)
{
    c->stats.backoff_answers++;
    if (stale != NULL) {
        c->stats.stale_errors++;
        corral_flight_ready(&c->fl, w, 0, "", CORRAL_SOURCE_BACKOFF, stale);
        return;
    }
    w->owned = xstrndup(b->message, strlen(b->message));
    w->retry_after_ms = b->until - now;
    corral_flight_ready(&c->fl, w, b->error, w->owned, CORRAL_SOURCE_BACKOFF,
                        NULL);
}

/* A miss on key (h its hash): a stale copy L1 keeps (inside
 * stale-while-revalidate, or stale-if-error while a failed key is tried
 * again), the key's backoff, the fill running, else a new fill. */
static void
miss(struct corral_cache *c, struct corral_waiter *cw, const void *key,
     size_t keylen, uint64_t h, uint64_t now,
     const struct corral_strategy *strategy, uint64_t fill_timeout_ms,
     const struct corral_compute *compute)
{
    struct flight_waiter *w = &cw->fw;
    struct corral_fill *f = fill_find(c, key, keylen, h);
    /* Expired, but L1 keeps it for a stale window. */
    struct corral_value *stale = corral_l1_find(c->l1, key, keylen, h);
    struct corral_backoff_key *found =
        f ? NULL : corral_backoff_find(&c->backoff, key, keylen, h, now);
    /* The key's last fill failed: the fill running is its next try, or
     * the next try is due (or not yet: backing off). */
    bool failed = f ? f->retry : found != NULL;
    struct corral_backoff_key *b = found;
    if (b != NULL && now >= b->until)
        b = NULL; /* its next try is due: this fill */
    enum corral_source src = CORRAL_SOURCE_NONE;
    if (stale && now < stale->expires_at + stale->swr_ms)
        src = b != NULL ? CORRAL_SOURCE_BACKOFF : CORRAL_SOURCE_STALE;
    else if (stale && failed && b == NULL &&
             now < stale->expires_at + stale->sie_ms)
        /* Stale-if-error holds while the failed key is tried again: the
         * copy now, and the try (started here if due) in the background. */
        src = CORRAL_SOURCE_STALE_RETRY;
    else if (b != NULL)
        src = CORRAL_SOURCE_BACKOFF;
    else if (f != NULL && f->call.nwaiters >= c->max_waiters) {
        corral_flight_ready(&c->fl, w, -EAGAIN, "too many waiters on this key",
                            CORRAL_SOURCE_NONE, NULL);
        return;
    }
    c->stats.misses++;
    switch (src) {
    case CORRAL_SOURCE_BACKOFF:
        answer_backoff(c, w, b, stale, now);
        return;
    case CORRAL_SOURCE_STALE:
    case CORRAL_SOURCE_STALE_RETRY:
        if (src == CORRAL_SOURCE_STALE)
            c->stats.stale_hits++;
        else
            c->stats.stale_errors++;
        corral_flight_ready(&c->fl, w, 0, "", src, stale);
        if (f == NULL)
            fill_go(
                fill_new(c, h, key, keylen, strategy, fill_timeout_ms, compute),
                NULL, stale, found);
        return;
    default:
        break;
    }
    if (f == NULL) {
        fill_go(fill_new(c, h, key, keylen, strategy, fill_timeout_ms, compute),
                cw, stale, found);
        return;
    }
    c->stats.waiters_collapsed++;
    corral_flight_join(&f->call, w, false);
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
    struct corral_waiter *w = waiter_new(c, key, keylen, cb, arg);
    uint64_t now = corral_cache_now(c);
    struct corral_value *v = corral_l1_get(c->l1, key, keylen, w->hash, now);
    if (v) {
        c->stats.hits_l1++;
        corral_flight_ready(&c->fl, &w->fw, 0, "", CORRAL_SOURCE_L1, v);
        if (corral_cache_early(c, v, strategy->beta) &&
            refresh_start(c, key, keylen, w->hash, strategy, fill_timeout_ms,
                          compute, false) == 0)
            c->stats.early_refreshes++;
        return w;
    }
    if (keylen == 0 || keylen > CORRAL_KEY_MAX) {
        corral_flight_ready(&c->fl, &w->fw, -EINVAL, "bad key length",
                            CORRAL_SOURCE_NONE, NULL);
        return w;
    }
    miss(c, w, key, keylen, w->hash, now, strategy, fill_timeout_ms, compute);
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
    if (w->tier != T_ASKED) {
        /* Ready, pending or firing: single flight's; a zombie: answered. */
        if (w->tier != T_ZOMBIE)
            corral_flight_cancel(&c->fl, &w->fw);
        return;
    }
    /* The tier still owes its callback, which frees w. */
    event_free(w->timer);
    w->timer = NULL;
    w->tier = T_ZOMBIE;
    c->stats.waiters_cancelled++;
    corral_flight_fire(&w->fw, -ECANCELED, "cancelled", CORRAL_SOURCE_NONE,
                       NULL);
}

/* ---- stores ---- */

/* The strategy's ttl, less a random share of up to jitter_pct percent. */
static uint64_t
jittered_ttl(struct corral_cache *c, const struct corral_strategy *s)
{
    uint64_t ttl = corral_strategy_ttl_ms(s);
    unsigned pct = s->jitter_pct > 50 ? 50 : s->jitter_pct;
    if (pct == 0 || ttl == 0)
        return ttl;
    return ttl - next_rand(c) % (ttl / 100 * pct + 1);
}

/* Stamps v and keeps it in L1 (h its key's hash) and the tier. */
static void
store(struct corral_cache *c, struct corral_value *v, uint64_t h,
      const struct corral_strategy *s, uint64_t ttl)
{
    corral_value_stamp(v, corral_cache_now(c), ttl, s->swr_ms, s->sie_ms);
    corral_l1_put(c->l1, v, h);
    if (c->tier)
        c->tier->set(c->tier_ctx, v,
                     ttl + (value_keep_until(v) - v->expires_at));
}

int
corral_set_with_strategy(struct corral_cache *c, struct corral_value *value,
                         const struct corral_strategy *strategy)
{
    uint64_t ttl = jittered_ttl(c, strategy);
    if (ttl == 0 || (value->flags & VALUE_STORED))
        return -EINVAL;
    if (corral_l1_charge(value) > c->stats.max_bytes)
        return -E2BIG;
    store(c, value, corral_key_hash(value_key(value), value->keylen), strategy,
          ttl);
    return 0;
}

int
corral_cache_replace(struct corral_cache *c, const struct corral_value *old,
                     struct corral_value *v)
{
    if ((v->flags & VALUE_STORED) || v->keylen != old->keylen ||
        memcmp(value_key(v), value_key(old), old->keylen) != 0)
        return -EINVAL;
    if (corral_l1_charge(v) > c->stats.max_bytes)
        return -E2BIG;
    uint64_t h = corral_key_hash(value_key(v), v->keylen);
    if (corral_l1_find(c->l1, value_key(v), v->keylen, h) != old)
        return -ESTALE;
    corral_value_set_times(v, old->stored_at, old->expires_at, old->swr_ms,
                           old->sie_ms);
    v->fill_ms = old->fill_ms;
    unsigned freq = old->freq;
    int rc = corral_l1_put(c->l1, v, h);
    if (rc == 0)
        v->freq = freq & 3;
    return rc;
}

struct purge_note {
    corral_purged_cb *cb;
    void *arg;
};

static void
purged_tier(int error, void *arg)
{
    struct purge_note *pn = arg;
    pn->cb(error, pn->arg);
    free(pn);
}

static void
purged_here(evutil_socket_t fd, short what, void *arg)
{
    purged_tier(0, arg);
}

int
corral_purge(struct corral_cache *c, const void *key, size_t keylen,
             corral_purged_cb *cb, void *arg)
{
    uint64_t h = corral_key_hash(key, keylen);
    bool had = corral_l1_del(c->l1, key, keylen, h);
    purge_fill(c, key, keylen, h);
    struct purge_note *pn = NULL;
    if (cb != NULL) {
        pn = xmalloc(sizeof(*pn));
        pn->cb = cb;
        pn->arg = arg;
    }
    if (c->tier)
        c->tier->del(c->tier_ctx, key, keylen, pn ? purged_tier : NULL, pn);
    else if (pn != NULL && event_base_once(c->base, -1, EV_TIMEOUT, purged_here,
                                           pn, NULL) != 0)
        abort(); /* the policy of xalloc.h */
    return had;
}

int
corral_invalidate_local(struct corral_cache *c, const void *key, size_t keylen)
{
    uint64_t h = corral_key_hash(key, keylen);
    bool had = corral_l1_del(c->l1, key, keylen, h);
    purge_fill(c, key, keylen, h);
    return had;
}

int
corral_invalidate(struct corral_cache *c, const void *key, size_t keylen)
{
    return corral_purge(c, key, keylen, NULL, NULL);
}

/* ---- fills ---- */

/* Has the cache already given up on f (deadline, teardown)? Then a late
 * report only releases what it holds. A report while the cache is being
 * freed (a compute answering from a waiter's -ECANCELED callback) counts
 * as late too: nothing may be stored or fanned out any more, and the
 * teardown answers f's waiters itself. */
static bool
fill_given_up(const struct corral_fill *f)
{
    return !f->computing || f->cache == NULL || f->cache->closing ||
           f->state != F_COMPUTING;
}

void
corral_fill_done(struct corral_fill *f, struct corral_value *value)
{
    /* A fill given up on has no cache: the ttl is never used then. */
    corral_fill_done_ttl(f, value,
                         f->cache ? jittered_ttl(f->cache, &f->strategy) : 0);
}

/* The start every report of a value shares: a fill given up on (deadline,
 * teardown, without an abort hook) only releases what it holds, and a
 * value for another key, or one already stored, fails the fill. Takes
 * value when it returns false. Then f is done and its compute's time set
 * on value. */
static bool
take_value(struct corral_fill *f, struct corral_value *value)
{
    if (fill_given_up(f)) {
        f->computing = false;
        corral_value_unref(value);
        fill_maybe_free(f);
        return false;
    }
    if (value == NULL || value->keylen != f->keylen ||
        memcmp(value_key(value), f->key, f->keylen) != 0 ||
        (value->flags & VALUE_STORED)) {
        corral_value_unref(value);
        corral_fill_fail(f, -EINVAL, "compute gave a value for another key");
        return false;
    }
    f->computing = false;
    f->cache->stats.fills_ok++;
    uint64_t took = corral_cache_now(f->cache) - f->started_ms;
    value->fill_ms = took == 0           ? 1
                     : took > UINT16_MAX ? UINT16_MAX
                                         : (uint16_t)took;
    return true;
}

void
corral_fill_done_ttl(struct corral_fill *f, struct corral_value *value,
                     uint64_t ttl_ms)
{
    if (!take_value(f, value))
        return;
    struct corral_cache *c = f->cache;
    if (f->purged) /* stamped for its callers, stored nowhere */
        corral_value_stamp(value, corral_cache_now(c), ttl_ms,
                           f->strategy.swr_ms, f->strategy.sie_ms);
    else
        store(c, value, f->call.entry.hash, &f->strategy, ttl_ms);
    fill_settle(f, 0, "", value);
}

void
corral_fill_done_capped(struct corral_fill *f, struct corral_value *value,
                        uint64_t max_ttl_ms)
{
    if (max_ttl_ms == 0) {
        corral_fill_done_nostore(f, value);
        return;
    }
    struct corral_strategy s = f->strategy;
    if (max_ttl_ms < corral_strategy_ttl_ms(&s)) {
        s.kind = CORRAL_STRATEGY_CUSTOM;
        s.custom_ms = max_ttl_ms;
    }
    corral_fill_done_ttl(f, value, f->cache ? jittered_ttl(f->cache, &s) : 0);
}

void
corral_fill_done_nostore(struct corral_fill *f, struct corral_value *value)
{
    if (!take_value(f, value))
        return;
    struct corral_cache *c = f->cache;
    corral_value_stamp(value, corral_cache_now(c), 0, 0, 0);
    value->flags |= VALUE_NOSTORE;
    if (corral_l1_del(c->l1, f->key, f->keylen, f->call.entry.hash) && c->tier)
        c->tier->del(c->tier_ctx, f->key, f->keylen, NULL, NULL);
    /* Kept nowhere, as after a purge: the fleet hears "abandoned". */
    f->purged = true;
    fill_settle(f, 0, "", value);
}

void
corral_fill_fail(struct corral_fill *f, int error, const char *message)
{
    corral_fill_fail_retry(f, error, message, 0);
}

void
corral_fill_fail_retry(struct corral_fill *f, int error, const char *message,
                       uint64_t retry_after_ms)
{
    if (fill_given_up(f)) {
        f->computing = false;
        fill_maybe_free(f);
        return;
    }
    f->computing = false;
    f->retry_after_ms = retry_after_ms;
    f->cache->stats.fills_failed++;
    fill_settle(f, error < 0 ? error : -EIO, message, NULL);
}

void
corral_fill_started(struct corral_fill *f)
{
    if (!fill_given_up(f))
        f->started_ms = corral_cache_now(f->cache);
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

bool
corral_fill_background(const struct corral_fill *f)
{
    return f->call.nwaiters == 0;
}

void
corral_cache_stats(const struct corral_cache *c, struct corral_stats *out)
{
    struct corral_l1_stats l1;
    corral_l1_stats(c->l1, &l1);
    *out = c->stats;
    out->waiters_cancelled += c->fl.cancelled;
    out->entries = l1.entries;
    out->bytes = l1.bytes;
    memcpy(out->form_bytes, l1.form_bytes, sizeof(out->form_bytes));
    out->evictions = l1.evictions;
    out->expirations = l1.expirations;
}
