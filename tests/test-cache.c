/* test-cache.c — single flight and the tiers: one compute for 10,000
 * waiters, shared failures, deadlines, cancels (also from callbacks),
 * re-entrancy, teardown with fills in flight, TTLs on a fake clock and
 * promotion from the fake tier. */
#include <errno.h>
#include <event2/event.h>
#include <stdbool.h>
#include <unistd.h>

#include "corral/cache.h"
#include "fake_tier.h"
#include "testlib.h"
#include "value_impl.h"

static uint64_t fake_now = 1000000;
static uint64_t
fake_clock(void *arg)
{
    return fake_now;
}

static struct event_base *base;
static int in_register; /* > 0 while inside a registering call */

/* ---- computes ---- */

struct compute {
    int calls;
    int aborts;
    int delay_ms;   /* answer after this long; < 0 = never */
    int fail;       /* answer with this error instead */
    bool immediate; /* answer from inside compute */
    bool abort_hook;
    bool nostore;    /* corral_fill_done_nostore() */
    uint64_t cap_ms; /* corral_fill_done_capped() with this, when > 0 */
    struct corral_fill *fill;
    struct event *timer;
    char body[64];
};

static void
compute_answer(struct compute *cp)
{
    struct corral_fill *f = cp->fill;
    cp->fill = NULL;
    if (cp->fail) {
        corral_fill_fail(f, cp->fail, "upstream said no");
        return;
    }
    const char *key = cp->body; /* body doubles as the key in these tests */
    struct corral_value *v = corral_value_new(
        key, strlen(key), cp->body, strlen(cp->body), "application/json", 0);
    if (cp->nostore)
        corral_fill_done_nostore(f, v);
    else if (cp->cap_ms > 0)
        corral_fill_done_capped(f, v, cp->cap_ms);
    else
        corral_fill_done(f, v);
}

static void
compute_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    compute_answer(arg);
}

static void
compute_abort(void *arg)
{
    struct compute *cp = arg;
    cp->aborts++;
    cp->fill = NULL;
    if (cp->timer)
        evtimer_del(cp->timer);
}

static void
compute_fn(struct corral_fill *fill, const char *key, size_t keylen, void *arg)
{
    struct compute *cp = arg;
    cp->calls++;
    cp->fill = fill;
    CHECK(keylen == strlen(cp->body) && memcmp(key, cp->body, keylen) == 0);
    size_t len = 0, kl = 0;
    const char *k = corral_fill_key(fill, &kl);
    CHECK(kl == keylen && memcmp(k, key, kl) == 0);
    const char *data = corral_fill_data(fill, &len);
    if (len > 0) /* ask() passes the key; get_with_fallback passes none */
        CHECK(len == keylen && memcmp(data, key, len) == 0);
    if (cp->abort_hook)
        corral_fill_on_abort(fill, compute_abort, cp);
    if (cp->immediate) {
        compute_answer(cp);
        return;
    }
    if (cp->delay_ms < 0)
        return;
    if (cp->timer == NULL)
        cp->timer = evtimer_new(base, compute_timer_cb, cp);
    struct timeval tv = {cp->delay_ms / 1000, (cp->delay_ms % 1000) * 1000};
    evtimer_add(cp->timer, &tv);
}

static void
compute_init(struct compute *cp, const char *key, int delay_ms)
{
    memset(cp, 0, sizeof(*cp));
    snprintf(cp->body, sizeof(cp->body), "%s", key);
    cp->delay_ms = delay_ms;
    cp->abort_hook = true;
}

static void
compute_finish(struct compute *cp)
{
    if (cp->timer)
        event_free(cp->timer);
    cp->timer = NULL;
}

/* ---- waiters ---- */

struct waiter {
    int fired;
    int error;
    enum corral_source source;
    struct corral_value *value; /* pointer only, to compare */
    bool nostore;               /* corral_value_nostore(value) */
    uint64_t lifetime_ms;       /* value's expiry less its store time */
    char message[64];
    uint64_t retry_after_ms;
    struct corral_waiter *handle;
    void (*then)(struct waiter *w); /* runs inside the callback */
    void *ctx;
};

static void
waiter_cb(const struct corral_result *res, void *arg)
{
    struct waiter *w = arg;
    CHECK(in_register == 0);
    w->fired++;
    w->error = res->error;
    w->source = res->source;
    w->value = res->value;
    w->nostore = res->value != NULL && corral_value_nostore(res->value);
    w->lifetime_ms = res->value == NULL
                         ? 0
                         : corral_value_expires_at(res->value) -
                               corral_value_stored_at(res->value);
    w->retry_after_ms = res->retry_after_ms;
    snprintf(w->message, sizeof(w->message), "%s", res->message);
    CHECK(res->error != 0 || res->value != NULL);
    if (w->then)
        w->then(w);
}

static const struct corral_strategy realtime = {.kind =
                                                    CORRAL_STRATEGY_REALTIME};

static void
ask(struct corral_cache *c, const char *key, struct compute *cp,
    struct waiter *w, uint64_t timeout_ms)
{
    const struct corral_compute how = {
        .fn = compute_fn, .arg = cp, .data = key, .data_len = strlen(key)};
    in_register++;
    w->handle = corral_get_or_compute(c, key, strlen(key), &realtime,
                                      timeout_ms, &how, waiter_cb, w);
    in_register--;
    CHECK(w->handle != NULL);
}

static struct corral_cache *
cache_new(const struct corral_tier *tier, void *tier_ctx)
{
    struct corral_cache_options o = {
        .max_bytes = 1 << 20,
        .clock = fake_clock,
        .tier = tier,
        .tier_ctx = tier_ctx,
        .max_waiters = 20000,
    };
    struct corral_cache *c = corral_cache_new(base, &o);
    CHECK(c != NULL);
    return c;
}

static bool
all_fired(struct waiter *ws, int n)
{
    for (int i = 0; i < n; i++)
        if (ws[i].fired == 0)
            return false;
    return true;
}

/* Runs the loop until every one of ws has fired, for at most ms (a
 * loaded machine may take longer than the few ms a step needs). */
static void
run_until_fired(struct waiter *ws, int n, int ms)
{
    for (int waited = 0; waited < ms && !all_fired(ws, n); waited += 10)
        run_for(base, 10);
}

/* ---- tests ---- */

#define MANY 10000

static void
test_ten_thousand_waiters(void)
{
    struct corral_cache *c = cache_new(NULL, NULL);
    struct compute cp;
    compute_init(&cp, "popular", 30);
    struct waiter *ws = calloc(MANY, sizeof(*ws));
    for (int i = 0; i < MANY; i++)
        ask(c, "popular", &cp, &ws[i], 5000);
    CHECK_EQ_INT(cp.calls, 1);
    CHECK_EQ_INT(ws[0].fired, 0); /* nothing answered inside the calls */
    WAIT_FOR(base, all_fired(ws, MANY));
    struct corral_value *v = ws[0].value;
    CHECK(v != NULL);
    for (int i = 0; i < MANY; i++) {
        CHECK_EQ_INT(ws[i].fired, 1);
        CHECK_EQ_INT(ws[i].error, 0);
        CHECK(ws[i].value == v);
        CHECK_EQ_INT(ws[i].source,
                     i == 0 ? CORRAL_SOURCE_STORED : CORRAL_SOURCE_COLLAPSED);
    }
    CHECK_EQ_INT(cp.calls, 1);
    /* After the fan-out only L1 holds the value. */
    CHECK_EQ_INT(v->refs, 1);
    struct corral_stats st;
    corral_cache_stats(c, &st);
    CHECK_EQ_INT(st.fills_started, 1);
    CHECK_EQ_INT(st.fills_ok, 1);
    CHECK_EQ_INT(st.waiters_collapsed, MANY - 1);
    CHECK_EQ_INT(st.fills_in_flight, 0);
    CHECK_EQ_INT(st.entries, 1);
    /* A later caller is a hit, delivered through the loop. */
    struct waiter late = {0};
    ask(c, "popular", &cp, &late, 0);
    CHECK_EQ_INT(late.fired, 0);
    WAIT_FOR(base, late.fired != 0);
    CHECK_EQ_INT(late.source, CORRAL_SOURCE_L1);
    CHECK(late.value == v);
    CHECK_EQ_INT(cp.calls, 1);
    compute_finish(&cp);
    corral_cache_free(c);
    free(ws);
}

static void
test_leader_fails(void)
{
    struct corral_cache *c = cache_new(NULL, NULL);
    struct compute cp;
    compute_init(&cp, "flaky", 20);
    cp.fail = -EPROTO;
    struct waiter ws[50] = {0};
    for (int i = 0; i < 50; i++)
        ask(c, "flaky", &cp, &ws[i], 5000);
    WAIT_FOR(base, all_fired(ws, 50));
    for (int i = 0; i < 50; i++) {
        CHECK_EQ_INT(ws[i].fired, 1);
        CHECK_EQ_INT(ws[i].error, -EPROTO);
        CHECK_EQ_STR(ws[i].message, "upstream said no");
        CHECK(ws[i].value == NULL);
    }
    CHECK_EQ_INT(cp.calls, 1);
    struct corral_stats st;
    corral_cache_stats(c, &st);
    CHECK_EQ_INT(st.fills_failed, 1);
    CHECK_EQ_INT(st.entries, 0); /* nothing failed is stored */
    /* The key backs off: callers get the remembered error at once. */
    cp.fail = 0;
    struct waiter held = {0};
    ask(c, "flaky", &cp, &held, 5000);
    WAIT_FOR(base, held.fired);
    CHECK_EQ_INT(held.error, -EPROTO);
    CHECK_EQ_STR(held.message, "upstream said no");
    CHECK(held.retry_after_ms > 0 && held.retry_after_ms <= 1000);
    CHECK_EQ_INT(cp.calls, 1);
    /* Once it is over, the next requests start exactly one new fill. */
    fake_now += 1000;
    struct waiter again[5] = {0};
    for (int i = 0; i < 5; i++)
        ask(c, "flaky", &cp, &again[i], 5000);
    CHECK_EQ_INT(cp.calls, 2);
    WAIT_FOR(base, all_fired(again, 5));
    for (int i = 0; i < 5; i++) {
        CHECK_EQ_INT(again[i].error, 0);
        CHECK(again[i].value == again[0].value);
    }
    compute_finish(&cp);
    corral_cache_free(c);
}

static void
test_deadline(void)
{
    struct corral_cache *c = cache_new(NULL, NULL);
    struct compute cp;
    compute_init(&cp, "hung", -1);
    struct waiter ws[100] = {0};
    for (int i = 0; i < 100; i++)
        ask(c, "hung", &cp, &ws[i], 60);
    WAIT_FOR(base, all_fired(ws, 100));
    for (int i = 0; i < 100; i++) {
        CHECK_EQ_INT(ws[i].fired, 1);
        CHECK_EQ_INT(ws[i].error, -ETIMEDOUT);
    }
    CHECK_EQ_INT(cp.calls, 1);
    CHECK_EQ_INT(cp.aborts, 1);
    run_for(base, 100);
    for (int i = 0; i < 100; i++)
        CHECK_EQ_INT(ws[i].fired, 1);
    struct corral_stats st;
    corral_cache_stats(c, &st);
    CHECK_EQ_INT(st.fills_timed_out, 1);

    /* Without an abort hook the late answer is dropped, safely. */
    struct compute late;
    compute_init(&late, "late", -1);
    late.abort_hook = false;
    struct waiter lw = {0};
    ask(c, "late", &late, &lw, 30);
    WAIT_FOR(base, lw.fired);
    CHECK_EQ_INT(lw.error, -ETIMEDOUT);
    CHECK(late.fill != NULL);
    compute_answer(&late);
    CHECK(corral_cache_peek(c, "late", 4) == NULL);
    compute_finish(&cp);
    corral_cache_free(c);
}

static struct waiter *cancel_target;
static void
cancel_other(struct waiter *w)
{
    if (cancel_target->fired == 0)
        corral_waiter_cancel(cancel_target->handle);
}

/* Cancelling oneself from inside one's own callback does nothing: it was
 * a use-after-free, and with fan-out a NULL dereference. */
static void
cancel_self(struct waiter *w)
{
    corral_waiter_cancel(w->handle);
}

static void
test_cancel_self(void)
{
    struct corral_fake_tier *tier = corral_fake_tier_new(base, 1, NULL, NULL);
    struct corral_cache *c = cache_new(&corral_fake_tier_ops, tier);
    struct compute cp;
    struct waiter fan[3] = {0}, hit = {0}, got = {0};

    compute_init(&cp, "self", 5);
    for (int i = 0; i < 3; i++) { /* the leader and two collapsed */
        fan[i].then = cancel_self;
        ask(c, "self", &cp, &fan[i], 5000);
    }
    run_for(base, 50);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(fan[i].fired, 1);
        CHECK_EQ_INT(fan[i].error, 0);
    }
    hit.then = cancel_self; /* an L1 hit, answered from the ready list */
    ask(c, "self", &cp, &hit, 5000);
    got.then = cancel_self; /* corral_get() */
    in_register++;
    got.handle = corral_get(c, "self", 4, waiter_cb, &got);
    in_register--;
    run_for(base, 20);
    CHECK_EQ_INT(hit.fired, 1);
    CHECK_EQ_INT(hit.error, 0);
    CHECK_EQ_INT(got.fired, 1);
    CHECK_EQ_INT(got.error, 0);
    CHECK_EQ_INT(cp.calls, 1);
    struct corral_stats st;
    corral_cache_stats(c, &st);
    CHECK_EQ_INT(st.waiters_cancelled, 0);
    compute_finish(&cp);
    corral_cache_free(c);
    corral_fake_tier_free(tier);
}

/* A tier that never answers: corral_get() answers -ETIMEDOUT at the fill
 * timeout, and the tier's late answer is dropped safely. */
static void
test_tier_hangs(void)
{
    struct corral_fake_tier *tier =
        corral_fake_tier_new(base, 24 * 3600 * 1000, NULL, NULL);
    struct corral_cache_options o = {
        .max_bytes = 1 << 20,
        .tier = &corral_fake_tier_ops,
        .tier_ctx = tier,
        .fill_timeout_ms = 50,
    };
    struct corral_cache *c = corral_cache_new(base, &o);
    struct waiter a = {0}, b = {0}, d = {0};

    CHECK(c != NULL);
    a.handle = corral_get(c, "k", 1, waiter_cb, &a);
    b.handle = corral_get(c, "k", 1, waiter_cb, &b);
    d.handle = corral_get(c, "k", 1, waiter_cb, &d);
    CHECK(a.handle != NULL && b.handle != NULL && d.handle != NULL);
    corral_waiter_cancel(b.handle);
    CHECK_EQ_INT(b.fired, 1);
    CHECK_EQ_INT(b.error, -ECANCELED);
    d.then = cancel_self; /* cancels itself in its timeout callback */
    run_for(base, 200);
    CHECK_EQ_INT(a.fired, 1);
    CHECK_EQ_INT(a.error, -ETIMEDOUT);
    CHECK_EQ_INT(b.fired, 1);
    CHECK_EQ_INT(d.fired, 1);
    CHECK_EQ_INT(d.error, -ETIMEDOUT);
    /* A waiter still held by the tier when the cache goes. */
    struct waiter e = {0};
    e.handle = corral_get(c, "k", 1, waiter_cb, &e);
    corral_cache_free(c);
    CHECK_EQ_INT(e.fired, 1);
    CHECK_EQ_INT(e.error, -ECANCELED);
    corral_fake_tier_free(tier); /* the late answers free the waiters */
    CHECK_EQ_INT(a.fired, 1);
}

/* A purge during a fill: the fill's waiters get its value, which is not
 * stored, so the next request fills again. Also when the purge comes from
 * another instance through the tier. */
static void
test_purge_during_fill(void)
{
    struct corral_fake_tier *tier = corral_fake_tier_new(base, 1, NULL, NULL);
    struct corral_cache *c = cache_new(&corral_fake_tier_ops, tier);
    struct corral_fake_tier_counts counts;
    struct compute cp;
    struct waiter a = {0}, b = {0}, d = {0};

    compute_init(&cp, "purged", 30);
    ask(c, "purged", &cp, &a, 5000);
    run_for(base, 10); /* past the tier lookup: computing */
    CHECK_EQ_INT(corral_invalidate(c, "purged", 6), 0);
    ask(c, "purged", &cp, &b, 5000); /* joins the running fill */
    run_for(base, 60);
    CHECK_EQ_INT(a.fired, 1);
    CHECK_EQ_INT(a.error, 0);
    CHECK_EQ_INT(b.fired, 1);
    CHECK(b.value == a.value);
    CHECK_EQ_INT(cp.calls, 1);
    CHECK(corral_cache_peek(c, "purged", 6) == NULL); /* not stored */
    corral_fake_tier_counts(tier, &counts);
    CHECK_EQ_INT(counts.sets, 0);
    ask(c, "purged", &cp, &d, 5000);
    run_for(base, 60);
    CHECK_EQ_INT(d.fired, 1);
    CHECK_EQ_INT(cp.calls, 2); /* a new fill */
    CHECK(corral_cache_peek(c, "purged", 6) == d.value);

    /* Heard from another instance while a fill runs. */
    struct waiter e = {0}, f = {0};
    fake_now += 3600 * 1000;
    ask(c, "purged", &cp, &e, 5000);
    run_for(base, 10);
    corral_fake_tier_remote_invalidate(tier, "purged", 6);
    run_for(base, 60);
    CHECK_EQ_INT(e.fired, 1);
    CHECK_EQ_INT(e.error, 0);
    CHECK(corral_cache_peek(c, "purged", 6) == NULL);
    ask(c, "purged", &cp, &f, 5000);
    run_for(base, 60);
    CHECK_EQ_INT(cp.calls, 4);
    compute_finish(&cp);
    corral_cache_free(c);
    corral_fake_tier_free(tier);
}

/* Fleet-wide single flight against the fake tier playing another
 * instance: it holds the lease and fills (every waiter here collapsed, no
 * compute); it holds the lease and dies (one takeover when the lease runs
 * out); it fails and says so (one takeover at once). */
static void
test_remote_lease(void)
{
    struct corral_fake_tier *tier = corral_fake_tier_new(base, 1, NULL, NULL);
    struct corral_cache *c = cache_new(&corral_fake_tier_ops, tier);
    struct corral_fake_tier_counts counts;
    struct compute cp;
    struct waiter w[3];

    /* 1. The other instance fills. */
    memset(w, 0, sizeof(w));
    compute_init(&cp, "fleet", 5);
    corral_fake_tier_hold_lease(tier, "fleet", 5, 5000);
    for (int i = 0; i < 3; i++)
        ask(c, "fleet", &cp, &w[i], 1000);
    run_for(base, 30);
    CHECK_EQ_INT(w[0].fired, 0); /* waiting on the other instance */
    struct corral_value *v = corral_value_new("fleet", 5, "remote", 6, "", 0);
    corral_value_set_times(v, fake_now, fake_now + 30000, 0, 0);
    corral_fake_tier_remote_fill(tier, v, 30000);
    corral_value_unref(v);
    run_for(base, 30);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(w[i].fired, 1);
        CHECK_EQ_INT(w[i].error, 0);
        CHECK_EQ_INT(w[i].source, CORRAL_SOURCE_COLLAPSED);
        CHECK(w[i].value == w[0].value);
    }
    CHECK_EQ_STR(corral_value_body(w[0].value), "remote");
    CHECK_EQ_INT(cp.calls, 0);
    struct corral_stats st;
    corral_cache_stats(c, &st);
    CHECK_EQ_INT(st.waits_remote, 1);
    compute_finish(&cp);

    /* 2. The holder dies: its lease runs out, and this instance takes over
     * once, however many wait here. */
    memset(w, 0, sizeof(w));
    compute_init(&cp, "orphan", 5);
    corral_fake_tier_hold_lease(tier, "orphan", 6, 50);
    for (int i = 0; i < 3; i++)
        ask(c, "orphan", &cp, &w[i], 100);
    run_for(base, 60);
    CHECK_EQ_INT(w[0].fired, 0);
    run_for(base, 200);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(w[i].fired, 1);
        CHECK_EQ_INT(w[i].error, 0);
    }
    CHECK_EQ_INT(cp.calls, 1);
    CHECK_EQ_STR(corral_value_body(w[0].value), "orphan");
    compute_finish(&cp);

    /* 3. The holder fails and releases: one takeover at once. */
    memset(w, 0, sizeof(w));
    compute_init(&cp, "failed", 5);
    corral_fake_tier_hold_lease(tier, "failed", 6, 5000);
    for (int i = 0; i < 3; i++)
        ask(c, "failed", &cp, &w[i], 1000);
    run_for(base, 30);
    corral_fake_tier_remote_fill(tier, NULL, 0);
    run_until_fired(w, 3, 2000);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(w[i].fired, 1);
        CHECK_EQ_INT(w[i].error, 0);
    }
    CHECK_EQ_INT(cp.calls, 1);
    /* This instance held the lease for that fill and gave it back. */
    corral_fake_tier_counts(tier, &counts);
    CHECK(counts.releases >= 2);
    compute_finish(&cp);
    corral_cache_free(c);
    corral_fake_tier_free(tier);
}

static struct corral_value *
tier_value(const char *key, const char *body)
{
    struct corral_value *v =
        corral_value_new(key, strlen(key), body, strlen(body), "", 0);
    corral_value_set_times(v, fake_now, fake_now + 30000, 0, 0);
    return v;
}

/* A tier that answers every get, from the loop, with a value for
 * another key ("other"). */
struct liar_get {
    corral_tier_get_cb *cb;
    void *arg;
};

static void
liar_answer(evutil_socket_t fd, short what, void *arg)
{
    struct liar_get *g = arg;
    (void)fd;
    (void)what;
    g->cb(tier_value("other", "not yours"), 0, g->arg);
    free(g);
}

static void
liar_get(void *ctx, const void *key, size_t keylen, corral_tier_get_cb *cb,
         void *arg)
{
    struct liar_get *g = malloc(sizeof(*g));
    (void)ctx;
    (void)key;
    (void)keylen;
    CHECK(g != NULL);
    g->cb = cb;
    g->arg = arg;
    CHECK(event_base_once(base, -1, EV_TIMEOUT, liar_answer, g, NULL) == 0);
}

static void
liar_set(void *ctx, const struct corral_value *v, uint64_t ttl_ms)
{
    (void)ctx;
    (void)v;
    (void)ttl_ms;
}

static void
liar_del(void *ctx, const void *key, size_t keylen, corral_tier_done_cb *cb,
         void *arg)
{
    (void)ctx;
    (void)key;
    (void)keylen;
    if (cb)
        cb(0, arg);
}

static const struct corral_tier liar_tier = {
    .name = "liar", .get = liar_get, .set = liar_set, .del = liar_del};

/* A tier's value for another key than the one asked is a miss, never
 * promoted into L1 under the asked key's hash (where evicting it later
 * would not find it). */
static void
test_tier_value_for_another_key(void)
{
    struct corral_cache *c = cache_new(&liar_tier, NULL);
    struct waiter w = {0};
    w.handle = corral_get(c, "mine", 4, waiter_cb, &w);
    CHECK(w.handle != NULL);
    WAIT_FOR(base, w.fired == 1);
    CHECK_EQ_INT(w.error, -ENOENT);
    CHECK(corral_cache_peek(c, "mine", 4) == NULL);
    CHECK(corral_cache_peek(c, "other", 5) == NULL);
    struct corral_stats st;
    corral_cache_stats(c, &st);
    CHECK_EQ_INT(st.tier_rejects, 1);
    corral_cache_free(c);
}

/* The fleet's outcomes: a failure elsewhere answers every waiter here at
 * once and backs the key off here; a failure kept in the tier answers an
 * acquire; a holder that abandons is taken over. */
static void
test_fleet_failure_shared(void)
{
    struct corral_fake_tier *tier = corral_fake_tier_new(base, 1, NULL, NULL);
    struct corral_cache *c = cache_new(&corral_fake_tier_ops, tier);
    struct corral_fake_tier_counts n0, n1;
    struct compute cp;
    struct waiter w[3];

    memset(w, 0, sizeof(w));
    compute_init(&cp, "shared", 5);
    corral_fake_tier_hold_lease(tier, "shared", 6, 5000);
    for (int i = 0; i < 3; i++)
        ask(c, "shared", &cp, &w[i], 1000);
    run_for(base, 20);
    CHECK_EQ_INT(w[0].fired, 0);
    corral_fake_tier_remote_fail(tier, "shared", 6, -ETIMEDOUT,
                                 "upstream timed out", 2000);
    run_for(base, 5);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(w[i].fired, 1);
        CHECK_EQ_INT(w[i].error, -ETIMEDOUT);
        CHECK_EQ_STR(w[i].message, "upstream timed out");
        CHECK(w[i].retry_after_ms >= 1500);
    }
    CHECK_EQ_INT(cp.calls, 0);
    /* The key backs off here: the next caller is answered from the
     * backoff, without asking the tier. */
    corral_fake_tier_counts(tier, &n0);
    memset(w, 0, sizeof(w));
    ask(c, "shared", &cp, &w[0], 1000);
    run_for(base, 5);
    corral_fake_tier_counts(tier, &n1);
    CHECK_EQ_INT(w[0].fired, 1);
    CHECK_EQ_INT(w[0].error, -ETIMEDOUT);
    CHECK_EQ_INT(n1.gets, n0.gets);
    struct corral_stats st;
    corral_cache_stats(c, &st);
    CHECK_EQ_INT(st.failures_shared, 1);
    compute_finish(&cp);

    /* A failure found by acquire (no word heard): the same answer. */
    memset(w, 0, sizeof(w));
    compute_init(&cp, "marked", 5);
    corral_fake_tier_remote_fail(tier, "marked", 6, -EIO, "bad gateway", 3000);
    ask(c, "marked", &cp, &w[0], 1000);
    run_for(base, 10);
    CHECK_EQ_INT(w[0].fired, 1);
    CHECK_EQ_INT(w[0].error, -EIO);
    CHECK_EQ_STR(w[0].message, "bad gateway");
    CHECK_EQ_INT(cp.calls, 0);
    compute_finish(&cp);

    /* This instance's own failure goes back to the tier as the outcome. */
    memset(w, 0, sizeof(w));
    compute_init(&cp, "ownfail", 5);
    cp.fail = -EIO;
    ask(c, "ownfail", &cp, &w[0], 1000);
    run_for(base, 20);
    CHECK_EQ_INT(w[0].error, -EIO);
    corral_fake_tier_counts(tier, &n1);
    CHECK_EQ_INT(n1.failed, 1);
    compute_finish(&cp);
    corral_cache_free(c);
    corral_fake_tier_free(tier);
}

/* A purge while a read of the tier is out: what it read predates the
 * purge, so it is not served; the key is read again and filled. A purge
 * while waiting on another instance, then a takeover: the takeover's
 * value is stored. */
static void
test_fleet_purge_races(void)
{
    struct corral_fake_tier *tier = corral_fake_tier_new(base, 20, NULL, NULL);
    struct corral_cache *c = cache_new(&corral_fake_tier_ops, tier);
    struct compute cp;
    struct waiter w[1];

    struct corral_value *old = tier_value("reread", "old");
    corral_fake_tier_ops.set(tier, old, 30000);
    corral_value_unref(old);
    memset(w, 0, sizeof(w));
    compute_init(&cp, "reread", 5);
    ask(c, "reread", &cp, &w[0], 1000);
    corral_invalidate(c, "reread", 6); /* the read already ran */
    run_for(base, 80);
    CHECK_EQ_INT(w[0].fired, 1);
    CHECK_EQ_INT(w[0].error, 0);
    CHECK_EQ_STR(corral_value_body(w[0].value), "reread");
    CHECK_EQ_INT(cp.calls, 1);
    compute_finish(&cp);

    memset(w, 0, sizeof(w));
    compute_init(&cp, "takeover", 5);
    corral_fake_tier_hold_lease(tier, "takeover", 8, 5000);
    ask(c, "takeover", &cp, &w[0], 1000);
    run_for(base, 40);
    corral_invalidate(c, "takeover", 8);         /* while waiting remotely */
    corral_fake_tier_remote_fill(tier, NULL, 0); /* the holder abandons */
    run_for(base, 60);
    CHECK_EQ_INT(w[0].fired, 1);
    CHECK_EQ_INT(cp.calls, 1);
    /* Fetched after the purge: stored. */
    CHECK(corral_cache_peek(c, "takeover", 8) != NULL);
    compute_finish(&cp);

    /* A value that expires while the tier's answer travels is still the
     * answer: asking again would race the refresh replacing it. */
    memset(w, 0, sizeof(w));
    compute_init(&cp, "expiring", 5);
    struct corral_value *ev = corral_value_new("expiring", 8, "last", 4, "", 0);
    corral_value_set_times(ev, fake_now - 1000, fake_now + 10, 0, 0);
    corral_fake_tier_ops.set(tier, ev, 30000);
    corral_value_unref(ev);
    ask(c, "expiring", &cp, &w[0], 3000);
    fake_now += 15; /* expired by the time the answer lands */
    run_for(base, 60);
    fake_now -= 15;
    CHECK_EQ_INT(w[0].fired, 1);
    CHECK_EQ_STR(corral_value_body(w[0].value), "last");
    CHECK_EQ_INT(cp.calls, 0);
    compute_finish(&cp);

    /* The holder's word overtakes the answer "held" (two connections):
     * the wait looks again at once, not at the next poll. */
    memset(w, 0, sizeof(w));
    compute_init(&cp, "overtaken", 5);
    corral_fake_tier_hold_lease(tier, "overtaken", 9, 5000);
    ask(c, "overtaken", &cp, &w[0], 3000);
    struct corral_value *nv = tier_value("overtaken", "fresh");
    corral_fake_tier_remote_fill(tier, nv, 30000); /* before the answer */
    corral_value_unref(nv);
    run_for(base, 100);
    CHECK_EQ_INT(w[0].fired, 1);
    CHECK_EQ_STR(corral_value_body(w[0].value), "fresh");
    CHECK_EQ_INT(cp.calls, 0);
    compute_finish(&cp);
    corral_cache_free(c);
    corral_fake_tier_free(tier);
}

/* A resync that lost purges drops L1 and keeps nothing a fill computed
 * before it; any resync makes remote waits look again at once; a deaf
 * tier makes them look again within 100 ms. */
static void
test_fleet_resync(void)
{
    struct corral_fake_tier *tier = corral_fake_tier_new(base, 1, NULL, NULL);
    struct corral_cache *c = cache_new(&corral_fake_tier_ops, tier);
    struct compute cp, slow;
    struct waiter w[2];

    memset(w, 0, sizeof(w));
    compute_init(&cp, "kept", 1);
    compute_init(&slow, "slow", 50);
    ask(c, "kept", &cp, &w[0], 1000);
    run_for(base, 20);
    CHECK(corral_cache_peek(c, "kept", 4) != NULL);
    ask(c, "slow", &slow, &w[1], 1000);
    run_for(base, 10);
    CHECK_EQ_INT(slow.calls, 1);
    corral_fake_tier_resync(tier, true);
    CHECK(corral_cache_peek(c, "kept", 4) == NULL);
    run_for(base, 80);
    CHECK_EQ_INT(w[1].fired, 1); /* answered, but not stored */
    CHECK(corral_cache_peek(c, "slow", 4) == NULL);
    struct corral_stats st;
    corral_cache_stats(c, &st);
    CHECK_EQ_INT(st.tier_resyncs_lost, 1);
    compute_finish(&cp);
    compute_finish(&slow);

    /* A value lands in the tier without a word: the resync finds it. */
    memset(w, 0, sizeof(w));
    compute_init(&cp, "quiet", 5);
    corral_fake_tier_hold_lease(tier, "quiet", 5, 5000);
    ask(c, "quiet", &cp, &w[0], 3000);
    run_for(base, 20);
    struct corral_value *v = tier_value("quiet", "landed");
    corral_fake_tier_ops.set(tier, v, 30000);
    corral_value_unref(v);
    run_for(base, 100);
    CHECK_EQ_INT(w[0].fired, 0); /* no word, next poll in a second */
    corral_fake_tier_resync(tier, false);
    run_for(base, 20);
    CHECK_EQ_INT(w[0].fired, 1);
    CHECK_EQ_STR(corral_value_body(w[0].value), "landed");
    compute_finish(&cp);

    /* Deaf: remote waits look again within 100 ms. */
    memset(w, 0, sizeof(w));
    compute_init(&cp, "deaf", 5);
    corral_fake_tier_hold_lease(tier, "deaf", 4, 5000);
    ask(c, "deaf", &cp, &w[0], 3000);
    run_for(base, 20);
    corral_fake_tier_deaf(tier);
    v = tier_value("deaf", "heard");
    corral_fake_tier_ops.set(tier, v, 30000);
    corral_value_unref(v);
    run_for(base, 150);
    CHECK_EQ_INT(w[0].fired, 1);
    CHECK_EQ_STR(corral_value_body(w[0].value), "heard");
    CHECK_EQ_INT(cp.calls, 0);
    compute_finish(&cp);
    corral_cache_free(c);
    corral_fake_tier_free(tier);
}

static bool
not_bad(const struct corral_value *v, uint64_t now_ms, void *arg)
{
    (void)now_ms;
    (void)arg;
    return strcmp(corral_value_body(v), "bad") != 0;
}

/* A value from the tier the compute finds unfit is a counted miss: the
 * fill asks past it, takes the lease and computes. A tier that cannot
 * tell: computed here. */
static void
test_fleet_unfit_and_unknown(void)
{
    struct corral_fake_tier *tier = corral_fake_tier_new(base, 1, NULL, NULL);
    struct corral_cache *c = cache_new(&corral_fake_tier_ops, tier);
    struct compute cp;
    struct waiter w = {0};

    struct corral_value *v = tier_value("fit", "bad");
    corral_fake_tier_ops.set(tier, v, 30000);
    corral_value_unref(v);
    compute_init(&cp, "fit", 1);
    const struct corral_compute how = {.fn = compute_fn,
                                       .arg = &cp,
                                       .data = "fit",
                                       .data_len = 3,
                                       .fit = not_bad};
    w.handle = corral_get_or_compute(c, "fit", 3, &realtime, 1000, &how,
                                     waiter_cb, &w);
    run_for(base, 30);
    CHECK_EQ_INT(w.fired, 1);
    CHECK_EQ_STR(corral_value_body(w.value), "fit");
    CHECK_EQ_INT(cp.calls, 1);
    struct corral_stats st;
    corral_cache_stats(c, &st);
    CHECK_EQ_INT(st.tier_rejects, 1);
    struct corral_fake_tier_counts n;
    corral_fake_tier_counts(tier, &n);
    CHECK_EQ_INT(n.stored, 1); /* it held the lease */
    compute_finish(&cp);

    memset(&w, 0, sizeof(w));
    compute_init(&cp, "unknown", 1);
    corral_fake_tier_unknown(tier, true);
    ask(c, "unknown", &cp, &w, 1000);
    run_for(base, 30);
    CHECK_EQ_INT(w.fired, 1);
    CHECK_EQ_INT(w.error, 0);
    CHECK_EQ_INT(cp.calls, 1);
    corral_fake_tier_counts(tier, &n);
    CHECK_EQ_INT(n.stored, 1); /* no lease: nothing to give back */
    corral_fake_tier_unknown(tier, false);
    compute_finish(&cp);
    corral_cache_free(c);
    corral_fake_tier_free(tier);
}

static int args_held; /* compute args held by fills */

static void
hold_cb(void *arg, int delta)
{
    (void)arg;
    args_held += delta;
    CHECK(args_held >= 0);
}

/* A fill holds its compute's arg from its start to its end, whatever it
 * does between: reading the tier, waiting on another instance, never
 * computing (a reload frees the arg once none holds it). */
static void
test_hold(void)
{
    struct corral_fake_tier *tier = corral_fake_tier_new(base, 1, NULL, NULL);
    struct corral_cache *c = cache_new(&corral_fake_tier_ops, tier);
    struct compute cp;
    struct waiter w = {0};
    compute_init(&cp, "held", 5);
    const struct corral_compute how = {.fn = compute_fn,
                                       .arg = &cp,
                                       .data = "held",
                                       .data_len = 4,
                                       .hold = hold_cb};
    args_held = 0;
    corral_fake_tier_hold_lease(tier, "held", 4, 5000);
    w.handle = corral_get_or_compute(c, "held", 4, &realtime, 1000, &how,
                                     waiter_cb, &w);
    CHECK_EQ_INT(args_held, 1);
    run_for(base, 20); /* waiting on the other instance: held, not computing */
    CHECK_EQ_INT(args_held, 1);
    CHECK_EQ_INT(cp.calls, 0);
    struct corral_value *v = tier_value("held", "remote");
    corral_fake_tier_remote_fill(tier, v, 30000);
    corral_value_unref(v);
    run_for(base, 20);
    CHECK_EQ_INT(w.fired, 1);
    CHECK_EQ_INT(args_held, 0);
    /* A background refresh waiting remotely when the cache goes. */
    corral_fake_tier_hold_lease(tier, "bg", 2, 5000);
    snprintf(cp.body, sizeof(cp.body), "bg");
    const struct corral_compute bg = {.fn = compute_fn,
                                      .arg = &cp,
                                      .data = "bg",
                                      .data_len = 2,
                                      .hold = hold_cb};
    CHECK_EQ_INT(corral_refresh(c, "bg", 2, &realtime, 1000, &bg), 0);
    run_for(base, 20);
    CHECK_EQ_INT(args_held, 1);
    corral_cache_free(c);
    run_for(base, 20);
    CHECK_EQ_INT(args_held, 0);
    /* A fill whose question to the tier is in flight when the cache
     * goes lets go of its arg with the cache, not when the tier answers:
     * the arg's owner (a gateway's route) may be gone by then. */
    c = cache_new(&corral_fake_tier_ops, tier);
    snprintf(cp.body, sizeof(cp.body), "asking");
    const struct corral_compute asking = {.fn = compute_fn,
                                          .arg = &cp,
                                          .data = "asking",
                                          .data_len = 6,
                                          .hold = hold_cb};
    struct waiter aw = {0};
    aw.handle = corral_get_or_compute(c, "asking", 6, &realtime, 1000, &asking,
                                      waiter_cb, &aw);
    CHECK_EQ_INT(args_held, 1);
    corral_cache_free(c);
    CHECK_EQ_INT(args_held, 0);
    run_for(base, 20); /* the tier's answer finds no arg to let go of */
    CHECK_EQ_INT(args_held, 0);
    compute_finish(&cp);
    corral_fake_tier_free(tier);
}

/* TTL jitter: expiry drawn between (100 - pct)% and 100% of the ttl,
 * spread out; 0 keeps the exact ttl. */
/* A value replaced in L1 by a richer one of the same key: only while it
 * is still L1's value, and with its times. */
static void
test_replace(void)
{
    struct corral_cache *c = cache_new(NULL, NULL);
    struct corral_strategy s = {.kind = CORRAL_STRATEGY_CUSTOM,
                                .custom_ms = 100000};
    struct corral_value *v = corral_value_new("r", 1, "1", 1, "", 0);
    CHECK_EQ_INT(corral_set_with_strategy(c, v, &s), 0);
    struct corral_value *w = corral_value_new("r", 1, "11", 2, "", 0);
    CHECK_EQ_INT(corral_cache_replace(c, v, w), 0);
    CHECK(corral_cache_peek(c, "r", 1) == w);
    CHECK_EQ_INT(corral_value_stored_at(w), corral_value_stored_at(v));
    CHECK_EQ_INT(corral_value_expires_at(w), corral_value_expires_at(v));
    /* v is no longer there; w is stored; another key is not v's. */
    struct corral_value *x = corral_value_new("r", 1, "111", 3, "", 0);
    CHECK_EQ_INT(corral_cache_replace(c, v, x), -ESTALE);
    CHECK(corral_cache_peek(c, "r", 1) == w);
    CHECK_EQ_INT(corral_cache_replace(c, w, w), -EINVAL);
    struct corral_value *y = corral_value_new("q", 1, "1", 1, "", 0);
    CHECK_EQ_INT(corral_cache_replace(c, w, y), -EINVAL);
    corral_invalidate(c, "r", 1);
    CHECK_EQ_INT(corral_cache_replace(c, w, x), -ESTALE);
    CHECK(corral_cache_peek(c, "r", 1) == NULL);
    corral_value_unref(v);
    corral_value_unref(w);
    corral_value_unref(x);
    corral_value_unref(y);
    corral_cache_free(c);
}

static void
test_ttl_jitter(void)
{
    struct corral_cache *c = cache_new(NULL, NULL);
    struct corral_strategy s = {
        .kind = CORRAL_STRATEGY_CUSTOM, .custom_ms = 100000, .jitter_pct = 10};
    uint64_t lo = UINT64_MAX, hi = 0;
    char key[16];

    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "j%d", i);
        struct corral_value *v =
            corral_value_new(key, strlen(key), "1", 1, "", 0);
        CHECK_EQ_INT(corral_set_with_strategy(c, v, &s), 0);
        uint64_t life = corral_value_expires_at(v) - corral_value_stored_at(v);
        CHECK(life >= 90000 && life <= 100000);
        lo = life < lo ? life : lo;
        hi = life > hi ? life : hi;
        corral_value_unref(v);
    }
    CHECK(hi - lo > 5000); /* spread over the window, not one value */
    s.jitter_pct = 0;
    struct corral_value *v = corral_value_new("exact", 5, "1", 1, "", 0);
    CHECK_EQ_INT(corral_set_with_strategy(c, v, &s), 0);
    CHECK_EQ_INT(corral_value_expires_at(v) - corral_value_stored_at(v),
                 100000);
    corral_value_unref(v);
    corral_cache_free(c);
}

static void
test_cancel(void)
{
    struct corral_cache *c = cache_new(NULL, NULL);
    struct compute cp;
    compute_init(&cp, "half", 20);
    enum { N = 200 };
    struct waiter ws[N] = {0};
    for (int i = 0; i < N; i++)
        ask(c, "half", &cp, &ws[i], 5000);
    /* Waiter 11 cancels waiter 151 from inside its callback. */
    ws[11].then = cancel_other;
    cancel_target = &ws[151];
    int cancelled = 0;
    for (int i = 0; i < N; i += 2) { /* the leader among them */
        corral_waiter_cancel(ws[i].handle);
        CHECK_EQ_INT(ws[i].fired, 1); /* answered before cancel returns */
        CHECK_EQ_INT(ws[i].error, -ECANCELED);
        cancelled++;
    }
    WAIT_FOR(base, all_fired(ws, N));
    CHECK_EQ_INT(cp.calls, 1);
    struct corral_value *v = NULL;
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(ws[i].fired, 1);
        if (i % 2 == 0 || i == 151) {
            CHECK_EQ_INT(ws[i].error, -ECANCELED);
            continue;
        }
        CHECK_EQ_INT(ws[i].error, 0);
        CHECK_EQ_INT(ws[i].source, CORRAL_SOURCE_COLLAPSED);
        if (v == NULL)
            v = ws[i].value;
        CHECK(ws[i].value == v);
    }
    /* The fill went on and stored, though its leader left. */
    CHECK(corral_cache_peek(c, "half", 4) == v);
    struct corral_stats st;
    corral_cache_stats(c, &st);
    CHECK_EQ_INT(st.waiters_cancelled, cancelled + 1);
    compute_finish(&cp);
    corral_cache_free(c);
}

static void
test_teardown_in_flight(void)
{
    struct corral_cache *c = cache_new(NULL, NULL);
    struct compute a, b;
    compute_init(&a, "a", -1);
    compute_init(&b, "b", 10000);
    struct waiter wa[20] = {0}, wb[20] = {0}, hit = {0};
    for (int i = 0; i < 20; i++) {
        ask(c, "a", &a, &wa[i], 5000);
        ask(c, "b", &b, &wb[i], 5000);
    }
    struct corral_value *v = corral_value_new("h", 1, "x", 1, NULL, 0);
    CHECK_EQ_INT(corral_set_with_strategy(c, v, &realtime), 0);
    corral_value_unref(v);
    ask(c, "h", &a, &hit, 0); /* a hit waiting for the loop */
    corral_cache_free(c);
    for (int i = 0; i < 20; i++) {
        CHECK_EQ_INT(wa[i].fired, 1);
        CHECK_EQ_INT(wa[i].error, -ECANCELED);
        CHECK_EQ_INT(wb[i].fired, 1);
        CHECK_EQ_INT(wb[i].error, -ECANCELED);
    }
    CHECK_EQ_INT(hit.fired, 1);
    CHECK_EQ_INT(hit.error, -ECANCELED);
    CHECK_EQ_INT(a.aborts, 1);
    CHECK_EQ_INT(b.aborts, 1);
    compute_finish(&a);
    compute_finish(&b);
}

/* A compute that reports while the cache is being freed (here from a
 * waiter's -ECANCELED callback, as an aggregate assembling from its
 * members would) is let go: nothing is stored or fanned out into a cache
 * that is going away. Each waiter reports the other key's fill, so
 * whichever fill teardown reaches first, the other is still open. */
static struct compute cross[2];

static void
report_other(struct waiter *w)
{
    struct compute *other = w->ctx;
    if (w->error == -ECANCELED && other->fill != NULL)
        compute_answer(other);
}

static void
test_report_during_teardown(void)
{
    struct corral_cache *c = cache_new(NULL, NULL);
    compute_init(&cross[0], "x", -1);
    compute_init(&cross[1], "y", -1);
    cross[0].abort_hook = cross[1].abort_hook = false;
    struct waiter wx = {.then = report_other, .ctx = &cross[1]};
    struct waiter wy = {.then = report_other, .ctx = &cross[0]};
    ask(c, "x", &cross[0], &wx, 5000);
    ask(c, "y", &cross[1], &wy, 5000);
    CHECK(cross[0].fill != NULL && cross[1].fill != NULL);
    corral_cache_free(c);
    CHECK_EQ_INT(wx.fired, 1);
    CHECK_EQ_INT(wy.fired, 1);
    CHECK_EQ_INT(wx.error, -ECANCELED);
    CHECK_EQ_INT(wy.error, -ECANCELED);
    /* Both computes reported (one into the dying cache, one after its
     * fill was let go), and both reports were dropped. */
    CHECK(cross[0].fill == NULL && cross[1].fill == NULL);
    compute_finish(&cross[0]);
    compute_finish(&cross[1]);
}

static struct corral_cache *reentrant_cache;
static struct compute reentrant_cp;
static struct waiter reentrant_again;
static void
ask_again_and_invalidate(struct waiter *w)
{
    ask(reentrant_cache, "re", &reentrant_cp, &reentrant_again, 5000);
    CHECK_EQ_INT(corral_invalidate(reentrant_cache, "re", 2), 1);
}

static void
free_from_callback(struct waiter *w)
{
    corral_cache_free(reentrant_cache);
    corral_cache_free(reentrant_cache); /* a second call is harmless */
}

static void
test_reentrancy(void)
{
    struct corral_cache *c = reentrant_cache = cache_new(NULL, NULL);
    compute_init(&reentrant_cp, "re", 10);
    struct waiter ws[3] = {0};
    for (int i = 0; i < 3; i++)
        ask(c, "re", &reentrant_cp, &ws[i], 5000);
    ws[0].then = ask_again_and_invalidate;
    WAIT_FOR(base, all_fired(ws, 3) && reentrant_again.fired);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(ws[i].error, 0);
    /* The new ask was a hit on the value just stored... */
    CHECK_EQ_INT(reentrant_again.source, CORRAL_SOURCE_L1);
    CHECK(reentrant_again.value == ws[0].value);
    /* ...and the invalidation took it out. */
    CHECK(corral_cache_peek(c, "re", 2) == NULL);
    CHECK_EQ_INT(reentrant_cp.calls, 1);

    /* Immediate computes still answer through the loop. */
    reentrant_cp.immediate = true;
    struct waiter imm = {0};
    ask(c, "re", &reentrant_cp, &imm, 5000);
    CHECK_EQ_INT(imm.fired, 0);
    WAIT_FOR(base, imm.fired);
    CHECK_EQ_INT(imm.source, CORRAL_SOURCE_STORED);
    CHECK_EQ_INT(reentrant_cp.calls, 2);

    /* Freeing the cache from a callback: the rest get -ECANCELED. */
    CHECK_EQ_INT(corral_invalidate(c, "re", 2), 1);
    reentrant_cp.immediate = false;
    struct waiter fw[4] = {0};
    for (int i = 0; i < 4; i++)
        ask(c, "re", &reentrant_cp, &fw[i], 5000);
    fw[1].then = free_from_callback;
    WAIT_FOR(base, all_fired(fw, 4));
    CHECK_EQ_INT(fw[0].error, 0);
    CHECK_EQ_INT(fw[1].error, 0);
    CHECK_EQ_INT(fw[2].error, -ECANCELED);
    CHECK_EQ_INT(fw[3].error, -ECANCELED);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(fw[i].fired, 1);
    compute_finish(&reentrant_cp);
}

static void
test_ttl_fake_clock(void)
{
    struct corral_cache *c = cache_new(NULL, NULL);
    fake_now = 5000000;
    struct corral_value *v = corral_value_new("t", 1, "1", 1, NULL, 0);
    CHECK_EQ_INT(corral_set_with_strategy(c, v, &realtime), 0);
    CHECK_EQ_INT(corral_set_with_strategy(c, v, &realtime), -EINVAL);
    corral_value_unref(v);
    fake_now += 29999;
    struct corral_value *hit = corral_cache_peek(c, "t", 1);
    CHECK(hit == v);
    CHECK_EQ_INT(corral_value_ttl_s(hit, fake_now), 0);
    CHECK_EQ_INT(corral_value_age_s(hit, fake_now), 29);
    fake_now += 1;
    CHECK(corral_cache_peek(c, "t", 1) == NULL);

    struct corral_strategy custom = {.kind = CORRAL_STRATEGY_CUSTOM,
                                     .custom_ms = 250};
    struct corral_value *w = corral_value_new("u", 1, "2", 1, NULL, 0);
    CHECK_EQ_INT(corral_set_with_strategy(c, w, &custom), 0);
    corral_value_unref(w);
    fake_now += 249;
    CHECK(corral_cache_peek(c, "u", 1) != NULL);
    fake_now += 1;
    CHECK(corral_cache_peek(c, "u", 1) == NULL);
    struct corral_strategy zero = {.kind = CORRAL_STRATEGY_CUSTOM};
    struct corral_value *z = corral_value_new("z", 1, "3", 1, NULL, 0);
    CHECK_EQ_INT(corral_set_with_strategy(c, z, &zero), -EINVAL);
    corral_value_unref(z);

    /* corral_get never computes: a miss is -ENOENT, through the loop. */
    struct waiter g = {0};
    in_register++;
    corral_get(c, "nope", 4, waiter_cb, &g);
    in_register--;
    WAIT_FOR(base, g.fired);
    CHECK_EQ_INT(g.error, -ENOENT);
    corral_cache_free(c);
}

static void
test_tier_promotion(void)
{
    fake_now = 9000000;
    struct corral_fake_tier *tier =
        corral_fake_tier_new(base, 5, fake_clock, NULL);
    struct corral_cache *a = cache_new(&corral_fake_tier_ops, tier);
    struct corral_cache *b = cache_new(&corral_fake_tier_ops, tier);

    /* a fills; the tier keeps a copy. */
    struct compute cp;
    compute_init(&cp, "shared", 5);
    struct waiter wa = {0};
    ask(a, "shared", &cp, &wa, 5000);
    WAIT_FOR(base, wa.fired);
    CHECK_EQ_INT(wa.source, CORRAL_SOURCE_STORED);
    uint64_t expires = corral_value_expires_at(wa.value);

    /* 10 s later b asks: an L2 hit with 20 s left, no compute. */
    fake_now += 10000;
    struct waiter wb[3] = {0};
    for (int i = 0; i < 3; i++)
        ask(b, "shared", &cp, &wb[i], 5000);
    WAIT_FOR(base, all_fired(wb, 3));
    CHECK_EQ_INT(cp.calls, 1);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(wb[i].error, 0);
        CHECK_EQ_INT(wb[i].source, CORRAL_SOURCE_L2);
        CHECK(wb[i].value == wb[0].value);
    }
    CHECK(wb[0].value != wa.value); /* b's own copy */
    CHECK_EQ_INT(corral_value_expires_at(wb[0].value), expires);
    CHECK_EQ_INT(corral_value_ttl_s(wb[0].value, fake_now), 20);
    CHECK_EQ_INT(corral_value_age_s(wb[0].value, fake_now), 10);
    CHECK_EQ_STR(corral_value_body(wb[0].value), "shared");
    /* Promoted: b now answers from L1 until the original expiry. */
    CHECK(corral_cache_peek(b, "shared", 6) == wb[0].value);
    fake_now = expires;
    CHECK(corral_cache_peek(b, "shared", 6) == NULL);
    struct corral_fake_tier_counts n;
    corral_fake_tier_counts(tier, &n);
    CHECK_EQ_INT(n.sets, 1);
    CHECK_EQ_INT(n.hits, 1);

    /* corral_get goes to the tier too. */
    fake_now -= 1000;
    struct corral_value *pv = corral_value_new("p", 1, "pp", 2, NULL, 0);
    CHECK_EQ_INT(corral_set_with_strategy(a, pv, &realtime), 0);
    corral_value_unref(pv);
    struct waiter g = {0};
    corral_get(b, "p", 1, waiter_cb, &g);
    WAIT_FOR(base, g.fired);
    CHECK_EQ_INT(g.error, 0);
    CHECK_EQ_INT(g.source, CORRAL_SOURCE_L2);

    /* Another instance invalidates: b's L1 drops it. */
    CHECK(corral_cache_peek(b, "p", 1) != NULL);
    corral_fake_tier_remote_invalidate(tier, "p", 1);
    CHECK(corral_cache_peek(b, "p", 1) == NULL);
    /* invalidate deletes in the tier as well */
    CHECK_EQ_INT(corral_invalidate(a, "p", 1), 1);
    corral_fake_tier_counts(tier, &n);
    CHECK_EQ_INT(n.dels, 1);

    /* Teardown while the tier still owes answers. */
    struct waiter pending[2] = {0};
    ask(b, "never-filled", &cp, &pending[0], 5000);
    corral_get(b, "other", 5, waiter_cb, &pending[1]);
    corral_cache_free(b);
    CHECK_EQ_INT(pending[0].error, -ECANCELED);
    CHECK_EQ_INT(pending[1].error, -ECANCELED);
    corral_cache_free(a);
    corral_fake_tier_free(tier); /* answers the orphans; frees them */
    compute_finish(&cp);
}

static void
test_max_waiters(void)
{
    struct corral_cache_options o = {.max_waiters = 3, .clock = fake_clock};
    struct corral_cache *c = corral_cache_new(base, &o);
    struct compute cp;
    compute_init(&cp, "busy", 10);
    struct waiter ws[5] = {0};
    for (int i = 0; i < 5; i++)
        ask(c, "busy", &cp, &ws[i], 5000);
    WAIT_FOR(base, all_fired(ws, 5));
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(ws[i].error, 0);
    CHECK_EQ_INT(ws[3].error, -EAGAIN);
    CHECK_EQ_INT(ws[4].error, -EAGAIN);
    compute_finish(&cp);
    corral_cache_free(c);
}

/* Regression: a fill past its deadline, with no abort hook, reported in
 * the same loop turn, before the fan-out: it must not settle twice. */
static void
test_late_report_before_fanout(void)
{
    struct corral_cache *c = cache_new(NULL, NULL);
    struct compute cp;
    compute_init(&cp, "late2", 21); /* answers 1 ms after the deadline */
    cp.abort_hook = false;
    struct compute other;
    compute_init(&other, "other2", 5000);
    struct waiter w = {0}, o = {0};
    ask(c, "late2", &cp, &w, 20);
    ask(c, "other2", &other, &o, 20); /* settles by deadline too */
    usleep(60 * 1000);  /* both deadlines and the answer are due at once */
    run_for(base, 100); /* bounded: a lost waiter must fail, not hang */
    CHECK_EQ_INT(w.fired, 1);
    CHECK_EQ_INT(w.error, -ETIMEDOUT);
    CHECK_EQ_INT(o.fired, 1);
    CHECK_EQ_INT(o.error, -ETIMEDOUT);
    CHECK_EQ_INT(cp.calls, 1);
    run_for(base, 20);
    CHECK_EQ_INT(w.fired, 1);
    struct corral_stats st;
    corral_cache_stats(c, &st);
    CHECK_EQ_INT(st.fills_in_flight, 0);
    CHECK_EQ_INT(st.fills_ok, 0);
    CHECK_EQ_INT(st.fills_timed_out, 2);
    CHECK(corral_cache_peek(c, "late2", 5) == NULL);
    compute_finish(&cp);
    compute_finish(&other);
    corral_cache_free(c);
}

/* Regression: a hit's callback cancels another hit still queued. */
static void
test_cancel_queued_hit(void)
{
    struct corral_cache *c = cache_new(NULL, NULL);
    struct corral_value *v = corral_value_new("q", 1, "1", 1, NULL, 0);
    CHECK_EQ_INT(corral_set_with_strategy(c, v, &realtime), 0);
    corral_value_unref(v);
    struct compute cp;
    compute_init(&cp, "q", 10);
    struct waiter ws[2] = {0};
    ask(c, "q", &cp, &ws[0], 0);
    ask(c, "q", &cp, &ws[1], 0);
    ws[0].then = cancel_other;
    cancel_target = &ws[1];
    WAIT_FOR(base, all_fired(ws, 2));
    CHECK_EQ_INT(ws[0].error, 0);
    CHECK_EQ_INT(ws[0].source, CORRAL_SOURCE_L1);
    CHECK_EQ_INT(ws[1].fired, 1);
    CHECK_EQ_INT(ws[1].error, -ECANCELED);
    CHECK_EQ_INT(cp.calls, 0);
    compute_finish(&cp);
    corral_cache_free(c);
}

static void
test_get_with_fallback(void)
{
    fake_now = 7000000;
    struct corral_cache *c = cache_new(NULL, NULL);
    struct compute cp;
    compute_init(&cp, "fallback", 5);
    cp.abort_hook = false;
    struct waiter ws[3] = {0};
    for (int i = 0; i < 3; i++) {
        in_register++;
        ws[i].handle = corral_get_with_fallback(c, "fallback", 8, compute_fn,
                                                &cp, waiter_cb, &ws[i]);
        in_register--;
    }
    WAIT_FOR(base, all_fired(ws, 3));
    CHECK_EQ_INT(cp.calls, 1);
    CHECK_EQ_INT(ws[0].source, CORRAL_SOURCE_STORED);
    CHECK(ws[1].value == ws[0].value && ws[2].value == ws[0].value);
    /* The default strategy: five minutes. */
    CHECK_EQ_INT(corral_value_expires_at(ws[0].value) - fake_now, 300000);
    compute_finish(&cp);
    corral_cache_free(c);
}

/* Answers one ask of key and returns the waiter's result. */
static struct waiter
ask_once(struct corral_cache *c, const char *key, struct compute *cp)
{
    struct waiter w = {0};
    ask(c, key, cp, &w, 5000);
    WAIT_FOR(base, w.fired);
    return w;
}

static void
test_backoff(void)
{
    struct corral_cache_options o = {
        .clock = fake_clock, .backoff_min_ms = 1000, .backoff_max_ms = 4000};
    struct corral_cache *c = corral_cache_new(base, &o);
    fake_now = 20000000;
    struct compute cp;
    compute_init(&cp, "dead", 0);
    cp.immediate = true;
    cp.fail = -EIO;
    /* Steps 1, 2, 4, 4 s, each drawn from its upper quarter; callers in
     * between cost no call. */
    uint64_t steps[] = {1000, 2000, 4000, 4000};
    for (int i = 0; i < 4; i++) {
        struct waiter w = ask_once(c, "dead", &cp);
        CHECK_EQ_INT(w.error, -EIO);
        CHECK_EQ_INT(cp.calls, i + 1);
        struct waiter held = ask_once(c, "dead", &cp);
        CHECK_EQ_INT(held.error, -EIO);
        CHECK_EQ_STR(held.message, "upstream said no");
        CHECK(held.retry_after_ms <= steps[i] &&
              held.retry_after_ms >= steps[i] * 3 / 4);
        CHECK_EQ_INT(cp.calls, i + 1);
        fake_now += held.retry_after_ms - 1;
        held = ask_once(c, "dead", &cp); /* still backing off */
        CHECK_EQ_INT(held.retry_after_ms, 1);
        CHECK_EQ_INT(cp.calls, i + 1);
        fake_now += 1;
    }
    struct corral_stats st;
    corral_cache_stats(c, &st);
    CHECK_EQ_INT(st.backoffs, 4);
    CHECK_EQ_INT(st.backoff_answers, 8);
    /* One success resets it: the next failure starts at 1 s again. */
    cp.fail = 0;
    struct waiter ok = ask_once(c, "dead", &cp);
    CHECK_EQ_INT(ok.error, 0);
    CHECK_EQ_INT(ok.source, CORRAL_SOURCE_STORED);
    fake_now += 31000; /* expired, no stale window */
    cp.fail = -EIO;
    ask_once(c, "dead", &cp);
    struct waiter held = ask_once(c, "dead", &cp);
    CHECK(held.retry_after_ms <= 1000 && held.retry_after_ms >= 750);
    /* A purge asks for a new try at once. */
    corral_invalidate(c, "dead", 4);
    int calls = cp.calls;
    ask_once(c, "dead", &cp);
    CHECK_EQ_INT(cp.calls, calls + 1);
    /* An upstream's Retry-After is a floor; -EBUSY does not grow the
     * step. */
    compute_finish(&cp);
    corral_cache_free(c);
}

/* A compute that fails -EBUSY with a retry-after of 5 s. */
static void
busy_fn(struct corral_fill *fill, const char *key, size_t keylen, void *arg)
{
    (*(int *)arg)++;
    corral_fill_fail_retry(fill, -EBUSY, "paused", 5000);
}

static void
test_backoff_retry_after(void)
{
    struct corral_cache *c = cache_new(NULL, NULL);
    fake_now = 21000000;
    int calls = 0;
    const struct corral_compute how = {.fn = busy_fn, .arg = &calls};
    struct waiter w[3] = {{0}};
    for (int i = 0; i < 3; i++) {
        corral_get_or_compute(c, "p", 1, &realtime, 0, &how, waiter_cb, &w[i]);
        WAIT_FOR(base, w[i].fired);
        CHECK_EQ_INT(w[i].error, -EBUSY);
        fake_now += 1000;
    }
    CHECK_EQ_INT(calls, 1);
    CHECK_EQ_INT(w[0].retry_after_ms, 5000);
    CHECK_EQ_INT(w[1].retry_after_ms, 4000);
    CHECK_EQ_INT(w[2].retry_after_ms, 3000);
    fake_now += 3000;
    struct waiter again = {0};
    corral_get_or_compute(c, "p", 1, &realtime, 0, &how, waiter_cb, &again);
    WAIT_FOR(base, again.fired);
    CHECK_EQ_INT(calls, 2);
    corral_cache_free(c);
}

static const struct corral_strategy swr_1s = {
    .kind = CORRAL_STRATEGY_CUSTOM, .custom_ms = 1000, .swr_ms = 30000};

static void
ask_with(struct corral_cache *c, const char *key, struct compute *cp,
         struct waiter *w, const struct corral_strategy *s)
{
    const struct corral_compute how = {
        .fn = compute_fn, .arg = cp, .data = key, .data_len = strlen(key)};
    in_register++;
    w->handle =
        corral_get_or_compute(c, key, strlen(key), s, 5000, &how, waiter_cb, w);
    in_register--;
}

static void
test_stale_while_revalidate(void)
{
    struct corral_cache *c = cache_new(NULL, NULL);
    fake_now = 22000000;
    struct compute cp;
    compute_init(&cp, "swr", 50);
    struct waiter first = {0};
    ask_with(c, "swr", &cp, &first, &swr_1s);
    WAIT_FOR(base, first.fired);
    struct corral_value *old = first.value;
    corral_value_ref(old);
    fake_now += 1500; /* expired 0.5 s ago, inside the window */
    struct waiter ws[300] = {{0}};
    for (int i = 0; i < 300; i++)
        ask_with(c, "swr", &cp, &ws[i], &swr_1s);
    CHECK_EQ_INT(cp.calls, 2); /* one refresh, started by the first */
    /* Every caller has the old value on the next turn, before the
     * refresh (50 ms) lands. */
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    for (int i = 0; i < 300; i++) {
        CHECK_EQ_INT(ws[i].fired, 1);
        CHECK_EQ_INT(ws[i].source, CORRAL_SOURCE_STALE);
        CHECK(ws[i].value == old);
    }
    CHECK_EQ_INT(corral_value_ttl_s(old, fake_now), -1); /* -0.5 s */
    run_for(base, 100);
    struct waiter fresh = {0};
    ask_with(c, "swr", &cp, &fresh, &swr_1s);
    WAIT_FOR(base, fresh.fired);
    CHECK_EQ_INT(fresh.source, CORRAL_SOURCE_L1);
    CHECK(fresh.value != old);
    CHECK_EQ_INT(cp.calls, 2);
    struct corral_stats st;
    corral_cache_stats(c, &st);
    CHECK_EQ_INT(st.stale_hits, 300);
    CHECK_EQ_INT(st.refreshes, 1);
    /* Past the window a caller waits for a fill again. */
    fake_now += 1000 + 30000;
    struct waiter late = {0};
    ask_with(c, "swr", &cp, &late, &swr_1s);
    WAIT_FOR(base, late.fired);
    CHECK_EQ_INT(late.source, CORRAL_SOURCE_STORED);
    CHECK_EQ_INT(cp.calls, 3);
    corral_value_unref(old);
    compute_finish(&cp);
    corral_cache_free(c);
}

static void
test_stale_if_error(void)
{
    static const struct corral_strategy s = {
        .kind = CORRAL_STRATEGY_CUSTOM, .custom_ms = 1000, .sie_ms = 60000};
    struct corral_cache *c = cache_new(NULL, NULL);
    fake_now = 23000000;
    struct compute cp;
    compute_init(&cp, "sie", 10);
    struct waiter first = {0};
    ask_with(c, "sie", &cp, &first, &s);
    WAIT_FOR(base, first.fired);
    fake_now += 2000;
    cp.fail = -EIO;
    struct waiter ws[10] = {{0}};
    for (int i = 0; i < 10; i++)
        ask_with(c, "sie", &cp, &ws[i], &s);
    CHECK_EQ_INT(ws[0].fired, 0); /* waiting for the fill: no swr */
    WAIT_FOR(base, all_fired(ws, 10));
    for (int i = 0; i < 10; i++) {
        CHECK_EQ_INT(ws[i].error, 0);
        CHECK_EQ_INT(ws[i].source, CORRAL_SOURCE_STALE_ERROR);
        CHECK(ws[i].value == first.value);
    }
    /* Backing off: stale at once, no call. */
    struct waiter held = ask_once(c, "sie", &cp);
    CHECK_EQ_INT(held.source, CORRAL_SOURCE_BACKOFF);
    CHECK_EQ_INT(cp.calls, 2);
    /* Past the window: the error itself. */
    fake_now += 60000;
    struct waiter late = ask_once(c, "sie", &cp);
    CHECK_EQ_INT(late.error, -EIO);
    CHECK_EQ_INT(cp.calls, 3);
    compute_finish(&cp);
    corral_cache_free(c);
}

/* Counts fills the compute gets, answers after 1 s of fake time. */
static void
test_early_refresh(void)
{
    struct corral_strategy s = {
        .kind = CORRAL_STRATEGY_CUSTOM, .custom_ms = 60000, .beta = 1.0};
    struct corral_cache *c = cache_new(NULL, NULL);
    fake_now = 24000000;
    struct compute cp;
    compute_init(&cp, "hot", -1);
    struct waiter first = {0};
    ask_with(c, "hot", &cp, &first, &s);
    fake_now += 1000; /* the fill takes 1 s */
    compute_answer(&cp);
    WAIT_FOR(base, first.fired);
    struct corral_value *v = first.value;
    uint64_t exp = corral_value_expires_at(v);
    /* Far from expiry (over 36.7 fill times): never. */
    fake_now = exp - 37000;
    int n = 0;
    for (int i = 0; i < 10000; i++)
        n += corral_cache_early(c, v, 1.0);
    CHECK_EQ_INT(n, 0);
    /* ln 2 fill times before: half the draws. */
    fake_now = exp - 693;
    for (int i = 0; i < 10000; i++)
        n += corral_cache_early(c, v, 1.0);
    CHECK(n > 4000 && n < 6000);
    CHECK(!corral_cache_early(c, v, 0.0));
    /* Right at expiry, a hit starts one refresh, and only one. */
    fake_now = exp - 1;
    s.beta = 1e9;
    struct waiter hits[3] = {{0}};
    for (int i = 0; i < 3; i++)
        ask_with(c, "hot", &cp, &hits[i], &s);
    CHECK_EQ_INT(cp.calls, 2);
    WAIT_FOR(base, all_fired(hits, 3));
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(hits[i].source, CORRAL_SOURCE_L1);
    compute_answer(&cp);
    run_for(base, 5);
    struct corral_stats st;
    corral_cache_stats(c, &st);
    CHECK_EQ_INT(st.early_refreshes, 1);
    CHECK(corral_value_expires_at(corral_cache_peek(c, "hot", 3)) > exp);
    compute_finish(&cp);
    corral_cache_free(c);
}

/* Through a tier with leases: an early refresh does not take the tier's
 * copy of the value it replaces for an answer; a stale key whose lease
 * another instance holds is answered stale, computes nothing here, and
 * takes that instance's value when it is announced. */
static void
test_refresh_through_tier(void)
{
    fake_now = 25000000;
    struct corral_fake_tier *t =
        corral_fake_tier_new(base, 1, fake_clock, NULL);
    struct corral_cache *c = cache_new(&corral_fake_tier_ops, t);
    struct corral_strategy s = swr_1s;
    struct compute cp;
    compute_init(&cp, "k", 5);
    struct waiter w = {0};
    ask_with(c, "k", &cp, &w, &s);
    WAIT_FOR(base, w.fired);
    uint64_t exp = corral_value_expires_at(w.value);
    fake_now = exp - 1;
    s.beta = 1e9;
    struct waiter hit = {0};
    ask_with(c, "k", &cp, &hit, &s);
    run_for(base, 50);
    CHECK_EQ_INT(hit.source, CORRAL_SOURCE_L1);
    CHECK_EQ_INT(cp.calls, 2); /* the tier's copy was not taken */
    struct corral_value *v = corral_cache_peek(c, "k", 1);
    CHECK(v != NULL && corral_value_stored_at(v) == exp - 1);
    /* Expired inside the window while another instance holds the lease. */
    fake_now = corral_value_expires_at(v) + 500;
    s.beta = 0;
    corral_fake_tier_hold_lease(t, "k", 1, 5000);
    struct waiter st[5] = {{0}};
    for (int i = 0; i < 5; i++)
        ask_with(c, "k", &cp, &st[i], &s);
    run_for(base, 50);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(st[i].source, CORRAL_SOURCE_STALE);
    CHECK_EQ_INT(cp.calls, 2);
    struct corral_value *nv = corral_value_new("k", 1, "remote", 6, NULL, 0);
    corral_value_set_times(nv, fake_now, fake_now + 1000, 30000, 0);
    corral_fake_tier_remote_fill(t, nv, 31000);
    corral_value_unref(nv);
    run_for(base, 50);
    v = corral_cache_peek(c, "k", 1);
    CHECK(v != NULL && memcmp(corral_value_body(v), "remote", 6) == 0);
    CHECK_EQ_INT(cp.calls, 2);
    compute_finish(&cp);
    corral_cache_free(c);
    corral_fake_tier_free(t);
}

/* A refetch's first question to the tier already asks for a value newer
 * than the call: the copy the tier holds is passed by at once and the
 * lease handed out, not returned, refused here and asked for again. */
static void
test_refetch_asks_newer_at_once(void)
{
    fake_now = 25500000;
    struct corral_fake_tier *t =
        corral_fake_tier_new(base, 1, fake_clock, NULL);
    struct corral_cache *c = cache_new(&corral_fake_tier_ops, t);
    struct corral_value *old = corral_value_new("r", 1, "old", 3, NULL, 0);
    corral_value_set_times(old, fake_now - 10, fake_now + 60000, 0, 0);
    corral_fake_tier_remote_fill(t, old, 60000);
    corral_value_unref(old);
    run_for(base, 5);
    struct compute cp;
    compute_init(&cp, "r", 5);
    const struct corral_compute how = {.fn = compute_fn, .arg = &cp};
    struct corral_fake_tier_counts n0, n1;
    corral_fake_tier_counts(t, &n0);
    fake_now += 5;
    CHECK_EQ_INT(corral_refetch(c, "r", 1, &realtime, 1000, &how), 0);
    run_for(base, 50);
    corral_fake_tier_counts(t, &n1);
    CHECK_EQ_INT(cp.calls, 1);
    CHECK_EQ_INT(n1.gets - n0.gets, 1);
    struct corral_stats st;
    corral_cache_stats(c, &st);
    CHECK_EQ_INT(st.tier_rejects, 0);
    struct corral_value *v = corral_cache_peek(c, "r", 1);
    CHECK(v != NULL && corral_value_stored_at(v) > fake_now - 10);
    compute_finish(&cp);
    corral_cache_free(c);
    corral_fake_tier_free(t);
}

/* A value that must not be kept reaches every waiter of its fill and
 * nothing else: not L1, not the tier, not a later caller; a copy the key
 * had goes too, so its stale window does not hide the new answer; a
 * lease goes back abandoned. */
static void
test_fill_done_nostore(void)
{
    fake_now = 26000000;
    struct corral_fake_tier *t =
        corral_fake_tier_new(base, 1, fake_clock, NULL);
    struct corral_cache *c = cache_new(&corral_fake_tier_ops, t);
    struct corral_fake_tier_counts n;
    struct compute cp;
    compute_init(&cp, "pass", 10);
    cp.nostore = true;
    struct waiter ws[5] = {{0}};
    for (int i = 0; i < 5; i++)
        ask_with(c, "pass", &cp, &ws[i], &swr_1s);
    WAIT_FOR(base, all_fired(ws, 5));
    CHECK_EQ_INT(cp.calls, 1);
    for (int i = 0; i < 5; i++) {
        CHECK_EQ_INT(ws[i].error, 0);
        CHECK(ws[i].nostore);
        CHECK(ws[i].value == ws[0].value);
        CHECK_EQ_INT(ws[i].lifetime_ms, 0);
        CHECK_EQ_INT(ws[i].source,
                     i == 0 ? CORRAL_SOURCE_STORED : CORRAL_SOURCE_COLLAPSED);
    }
    CHECK(corral_cache_peek(c, "pass", 4) == NULL);
    corral_fake_tier_counts(t, &n);
    CHECK_EQ_INT(n.sets, 0);
    CHECK_EQ_INT(n.dels, 0); /* there was no copy to drop */
    CHECK_EQ_INT(n.abandoned, 1);
    CHECK_EQ_INT(n.stored, 0);
    /* The next caller computes again. */
    struct waiter again = {0};
    ask_with(c, "pass", &cp, &again, &swr_1s);
    WAIT_FOR(base, again.fired);
    CHECK_EQ_INT(cp.calls, 2);
    CHECK(again.nostore);
    struct corral_stats st;
    corral_cache_stats(c, &st);
    CHECK_EQ_INT(st.entries, 0);

    /* A kept value, then the compute says "do not keep": its refresh (a
     * stale answer while it runs) drops the copy here and in the tier. */
    compute_finish(&cp);
    compute_init(&cp, "turns", 10);
    struct waiter kept = {0};
    ask_with(c, "turns", &cp, &kept, &swr_1s);
    WAIT_FOR(base, kept.fired);
    CHECK(!kept.nostore);
    CHECK(corral_cache_peek(c, "turns", 5) != NULL);
    fake_now += 1500; /* expired, inside its stale window */
    cp.nostore = true;
    struct waiter stale = {0};
    ask_with(c, "turns", &cp, &stale, &swr_1s);
    run_for(base, 50);
    CHECK_EQ_INT(stale.source, CORRAL_SOURCE_STALE);
    CHECK_EQ_INT(cp.calls, 2); /* the refresh ran */
    corral_fake_tier_counts(t, &n);
    CHECK_EQ_INT(n.dels, 1);
    struct waiter after = {0};
    ask_with(c, "turns", &cp, &after, &swr_1s);
    WAIT_FOR(base, after.fired);
    CHECK_EQ_INT(after.source, CORRAL_SOURCE_STORED);
    CHECK(after.nostore);
    CHECK_EQ_INT(cp.calls, 3);
    compute_finish(&cp);
    corral_cache_free(c);
    corral_fake_tier_free(t);
}

/* A capped value lives no longer than the cap, nor than its strategy,
 * with the strategy's jitter below either; a cap of 0 keeps nothing. */
static void
test_fill_done_capped(void)
{
    static const struct corral_strategy s = {
        .kind = CORRAL_STRATEGY_CUSTOM, .custom_ms = 30000, .jitter_pct = 10};
    fake_now = 27000000;
    struct corral_cache *c = cache_new(NULL, NULL);
    struct compute cp;
    static const struct {
        uint64_t cap, lo, hi;
    } cases[] = {
        {1000, 900, 1000},
        {29000, 26100, 29000},
        {30000, 27000, 30000},
        {3600000, 27000, 30000},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char key[16];
        snprintf(key, sizeof(key), "cap%zu", i);
        compute_init(&cp, key, 1);
        cp.cap_ms = cases[i].cap;
        struct waiter w = {0};
        ask_with(c, key, &cp, &w, &s);
        WAIT_FOR(base, w.fired);
        CHECK(!w.nostore);
        CHECK(w.lifetime_ms >= cases[i].lo && w.lifetime_ms <= cases[i].hi);
        CHECK(corral_cache_peek(c, key, strlen(key)) != NULL);
        compute_finish(&cp);
    }
    compute_init(&cp, "zero", 1);
    /* cap_ms 0 is "uncapped" to the test compute: report by hand. */
    struct waiter w = {0};
    cp.delay_ms = -1;
    ask_with(c, "zero", &cp, &w, &s);
    run_for(base, 5);
    CHECK(cp.fill != NULL);
    struct corral_value *v = corral_value_new("zero", 4, "x", 1, NULL, 0);
    corral_fill_done_capped(cp.fill, v, 0);
    WAIT_FOR(base, w.fired);
    CHECK(w.nostore);
    CHECK(corral_cache_peek(c, "zero", 4) == NULL);
    compute_finish(&cp);
    corral_cache_free(c);
}

/* Runs the loop until every waiter of ws has fired (bounded). */
static void
wait_all(struct waiter *ws, int n)
{
    WAIT_FOR(base, all_fired(ws, n));
}

/* Issue 19 (3): inside stale_if_error, the try after each backoff step
 * made its callers wait on it (a whole upstream timeout when it hangs),
 * and the copy came out only once the try had failed again. While a
 * failed key's try runs, its callers have the copy at once; the try
 * answers nobody, and a failed try backs off again. */
static void
test_stale_if_error_retry_answers_at_once(void)
{
    static const struct corral_strategy s = {
        .kind = CORRAL_STRATEGY_CUSTOM, .custom_ms = 1000, .sie_ms = 60000};
    struct corral_cache *c = cache_new(NULL, NULL);
    fake_now = 26000000;
    struct compute cp;
    compute_init(&cp, "sier", -1); /* answered by hand */
    struct waiter first = {0};
    ask_with(c, "sier", &cp, &first, &s);
    compute_answer(&cp);
    wait_all(&first, 1);
    struct corral_value *old = corral_value_ref(first.value);
    /* Expired; its first failure is news: its callers wait on it. */
    fake_now += 2000;
    cp.fail = -ETIMEDOUT;
    struct waiter w1 = {0};
    ask_with(c, "sier", &cp, &w1, &s);
    run_for(base, 5);
    CHECK_EQ_INT(w1.fired, 0);
    compute_answer(&cp);
    wait_all(&w1, 1);
    CHECK_EQ_INT(w1.source, CORRAL_SOURCE_STALE_ERROR);
    CHECK_EQ_INT(cp.calls, 2);
    /* Backing off: the copy, no call. */
    struct waiter held = {0};
    ask_with(c, "sier", &cp, &held, &s);
    wait_all(&held, 1);
    CHECK_EQ_INT(held.source, CORRAL_SOURCE_BACKOFF);
    CHECK_EQ_INT(cp.calls, 2);
    /* The step is over: the first caller starts the try, in the
     * background, and every caller has the copy on the next turn. */
    for (int step = 0; step < 3; step++) {
        fake_now += 1000u << step; /* steps 1, 2, 4 s */
        struct waiter ws[20] = {{0}};
        for (int i = 0; i < 20; i++) {
            ask_with(c, "sier", &cp, &ws[i], &s);
            if (i == 9)
                fake_now += 500; /* later callers, while it runs */
        }
        CHECK_EQ_INT(cp.calls, 3 + step);
        CHECK(cp.fill != NULL && corral_fill_background(cp.fill));
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        for (int i = 0; i < 20; i++) {
            CHECK_EQ_INT(ws[i].fired, 1);
            CHECK_EQ_INT(ws[i].error, 0);
            CHECK_EQ_INT(ws[i].source, CORRAL_SOURCE_STALE_RETRY);
            CHECK(ws[i].value == old);
        }
        compute_answer(&cp); /* fails again, answering nobody */
        run_for(base, 2);
        struct waiter again = {0};
        ask_with(c, "sier", &cp, &again, &s);
        wait_all(&again, 1);
        CHECK_EQ_INT(again.source, CORRAL_SOURCE_BACKOFF);
        CHECK_EQ_INT(cp.calls, 3 + step);
    }
    /* The next try succeeds: later callers have the new value. */
    fake_now += 8000;
    cp.fail = 0;
    struct waiter last = {0};
    ask_with(c, "sier", &cp, &last, &s);
    wait_all(&last, 1);
    CHECK_EQ_INT(last.source, CORRAL_SOURCE_STALE_RETRY);
    compute_answer(&cp);
    run_for(base, 2);
    struct waiter fresh = {0};
    ask_with(c, "sier", &cp, &fresh, &s);
    wait_all(&fresh, 1);
    CHECK_EQ_INT(fresh.source, CORRAL_SOURCE_L1);
    CHECK(fresh.value != old);
    CHECK_EQ_INT(cp.calls, 6);
    struct corral_stats st;
    corral_cache_stats(c, &st);
    CHECK_EQ_INT(st.waiters_collapsed, 0);
    corral_value_unref(old);
    compute_finish(&cp);
    corral_cache_free(c);
}

/* Issue 19 (3), through a tier: L1 has no copy, the tier has one inside
 * stale_if_error, and the key failed (here, another instance's failure
 * was heard). The callers of its next try have the tier's copy as soon
 * as the tier answers, not when the try ends. */
static void
test_stale_if_error_retry_through_tier(void)
{
    static const struct corral_strategy s = {
        .kind = CORRAL_STRATEGY_CUSTOM, .custom_ms = 1000, .sie_ms = 60000};
    fake_now = 27000000;
    struct corral_fake_tier *t =
        corral_fake_tier_new(base, 1, fake_clock, NULL);
    struct corral_cache *c = cache_new(&corral_fake_tier_ops, t);
    struct corral_value *v = corral_value_new("tk", 2, "old", 3, NULL, 0);
    corral_value_set_times(v, fake_now - 5000, fake_now - 4000, 0, 60000);
    corral_fake_tier_remote_fill(t, v, 60000);
    corral_value_unref(v);
    corral_fake_tier_remote_fail(t, "tk", 2, -EIO, "down", 1000);
    fake_now += 1000;
    struct compute cp;
    compute_init(&cp, "tk", -1);
    struct waiter ws[5] = {{0}};
    for (int i = 0; i < 5; i++)
        ask_with(c, "tk", &cp, &ws[i], &s);
    run_for(base, 30);
    CHECK_EQ_INT(cp.calls, 1); /* the try runs */
    for (int i = 0; i < 5; i++) {
        CHECK_EQ_INT(ws[i].fired, 1);
        CHECK_EQ_INT(ws[i].source, CORRAL_SOURCE_STALE_RETRY);
        CHECK(ws[i].value != NULL &&
              memcmp(corral_value_body(ws[i].value), "old", 3) == 0);
    }
    compute_answer(&cp);
    run_for(base, 5);
    struct corral_value *nv = corral_cache_peek(c, "tk", 2);
    CHECK(nv != NULL && memcmp(corral_value_body(nv), "tk", 2) == 0);
    compute_finish(&cp);
    corral_cache_free(c);
    corral_fake_tier_free(t);
}

/* Issue 19 (8, 9): the callers of a failed fill learn when the key is
 * tried again (an aggregate limits its lifetime by it), and a caller
 * answered from the backoff is told so (source BACKOFF). */
static void
test_failure_carries_backoff(void)
{
    struct corral_cache *c = cache_new(NULL, NULL);
    fake_now = 28000000;
    struct compute cp;
    compute_init(&cp, "down", 10);
    cp.fail = -EIO;
    struct waiter ws[3] = {{0}};
    for (int i = 0; i < 3; i++)
        ask(c, "down", &cp, &ws[i], 5000);
    wait_all(ws, 3);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(ws[i].error, -EIO);
        CHECK_EQ_INT(ws[i].source, CORRAL_SOURCE_NONE);
        CHECK(ws[i].retry_after_ms >= 750 && ws[i].retry_after_ms <= 1000);
    }
    fake_now += 100;
    struct waiter held = ask_once(c, "down", &cp);
    CHECK_EQ_INT(held.error, -EIO);
    CHECK_EQ_INT(held.source, CORRAL_SOURCE_BACKOFF);
    CHECK_EQ_INT(held.retry_after_ms, ws[0].retry_after_ms - 100);
    CHECK_EQ_INT(cp.calls, 1);
    compute_finish(&cp);
    corral_cache_free(c);
}

/* A try that takes longer than twice its backoff step (an upstream that
 * hangs until a 5 s timeout, steps from 1 s) failed after the key's
 * backoff was forgotten: the step never doubled, and a dead upstream was
 * called every timeout plus a second for ever. */
static void
test_backoff_doubles_past_a_long_try(void)
{
    struct corral_cache_options o = {
        .clock = fake_clock, .backoff_min_ms = 1000, .backoff_max_ms = 8000};
    struct corral_cache *c = corral_cache_new(base, &o);
    fake_now = 31000000;
    struct compute cp;
    compute_init(&cp, "slowdead", -1);
    cp.fail = -ETIMEDOUT;
    uint64_t steps[] = {1000, 2000, 4000, 8000};
    for (int i = 0; i < 4; i++) {
        struct waiter w = {0};
        ask(c, "slowdead", &cp, &w, 20000);
        CHECK_EQ_INT(cp.calls, i + 1);
        fake_now += 5000; /* the upstream's timeout */
        compute_answer(&cp);
        wait_all(&w, 1);
        CHECK_EQ_INT(w.error, -ETIMEDOUT);
        struct waiter held = {0}; /* from the backoff: its wait */
        ask(c, "slowdead", &cp, &held, 20000);
        wait_all(&held, 1);
        CHECK_EQ_INT(cp.calls, i + 1);
        CHECK(held.retry_after_ms <= steps[i] &&
              held.retry_after_ms >= steps[i] * 3 / 4);
        fake_now += held.retry_after_ms;
    }
    compute_finish(&cp);
    corral_cache_free(c);
}

static void
hold_fill_fn(struct corral_fill *fill, const char *key, size_t keylen,
             void *arg)
{
    *(struct corral_fill **)arg = fill;
}

/* Issue 19 (6): a fill queued 3.1 s for a rate slot stored a fill_ms of
 * 3.1 s, and XFetch refreshed the key early again and again. fill_ms is
 * the work's own time, from corral_fill_started(). */
static void
test_fill_started_times_the_work(void)
{
    struct corral_cache *c = cache_new(NULL, NULL);
    fake_now = 29000000;
    static const struct corral_strategy s = {
        .kind = CORRAL_STRATEGY_CUSTOM, .custom_ms = 8000, .beta = 1.0};
    struct corral_fill *fill = NULL;
    const struct corral_compute how = {.fn = hold_fill_fn, .arg = &fill};
    struct waiter w = {0};
    corral_get_or_compute(c, "q", 1, &s, 0, &how, waiter_cb, &w);
    CHECK(fill != NULL);
    fake_now += 3100; /* waiting for a slot */
    corral_fill_started(fill);
    fake_now += 5; /* the upstream's own time */
    corral_fill_done(fill, corral_value_new("q", 1, "1", 1, NULL, 0));
    wait_all(&w, 1);
    CHECK_EQ_INT(w.source, CORRAL_SOURCE_STORED);
    CHECK_EQ_INT(corral_value_fill_ms(w.value), 5);
    struct corral_value *v = corral_cache_peek(c, "q", 1);
    /* 5 s before expiry: never early (with 3.1 s it was 1 in 5). */
    fake_now = corral_value_expires_at(v) - 5000;
    int n = 0;
    for (int i = 0; i < 10000; i++)
        n += corral_cache_early(c, v, 1.0);
    CHECK_EQ_INT(n, 0);
    corral_cache_free(c);
}

static bool
refuse_fit(const struct corral_value *v, uint64_t now_ms, void *arg)
{
    (*(int *)arg)++;
    return memcmp(corral_value_body(v), "bad", 3) != 0;
}

/* Issue 19 (9): only-if-cached answers from L1 or L2 without a fill; a
 * value read from L2 is served only when the caller's fit says so. */
static void
test_get_fit(void)
{
    fake_now = 30000000;
    struct corral_fake_tier *t =
        corral_fake_tier_new(base, 1, fake_clock, NULL);
    struct corral_cache *c = cache_new(&corral_fake_tier_ops, t);
    struct corral_value *good = corral_value_new("g", 1, "good", 4, NULL, 0);
    struct corral_value *bad = corral_value_new("b", 1, "bad", 3, NULL, 0);
    corral_value_set_times(good, fake_now, fake_now + 10000, 0, 0);
    corral_value_set_times(bad, fake_now, fake_now + 10000, 0, 0);
    corral_fake_tier_remote_fill(t, good, 10000);
    corral_fake_tier_remote_fill(t, bad, 10000);
    corral_value_unref(good);
    corral_value_unref(bad);
    int asked = 0;
    struct waiter wg = {0}, wb = {0}, wn = {0};
    in_register++;
    corral_get_fit(c, "g", 1, refuse_fit, &asked, waiter_cb, &wg);
    corral_get_fit(c, "b", 1, refuse_fit, &asked, waiter_cb, &wb);
    corral_get_fit(c, "n", 1, refuse_fit, &asked, waiter_cb, &wn);
    in_register--;
    run_for(base, 20);
    CHECK_EQ_INT(asked, 2);
    CHECK_EQ_INT(wg.error, 0);
    CHECK_EQ_INT(wg.source, CORRAL_SOURCE_L2);
    CHECK_EQ_INT(wb.error, -ENOENT);
    CHECK_EQ_INT(wn.error, -ENOENT);
    struct corral_stats st;
    corral_cache_stats(c, &st);
    CHECK_EQ_INT(st.tier_rejects, 1);
    CHECK_EQ_INT(st.fills_started, 0);
    CHECK(corral_cache_peek(c, "b", 1) == NULL);
    corral_cache_free(c);
    corral_fake_tier_free(t);
}

/* corral_siphash is wrapped (-Wl,--wrap, tests/meson.build) to count
 * how often the key is hashed. */
static unsigned siphash_calls;
uint64_t __real_corral_siphash(const void *data, size_t len,
                               const uint8_t key[16]);
uint64_t __wrap_corral_siphash(const void *data, size_t len,
                               const uint8_t key[16]);
uint64_t
__wrap_corral_siphash(const void *data, size_t len, const uint8_t key[16])
{
    siphash_calls++;
    return __real_corral_siphash(data, len, key);
}

/* A miss looks the key up in L1, in the fill table and in the backoff
 * table, looks for a stale copy, and stores the value: one hash for all. */
static void
test_miss_hashes_key_once(void)
{
    struct corral_cache *c = cache_new(NULL, NULL);
    struct compute cp;
    struct waiter w = {0};
    compute_init(&cp, "once", -1);
    /* Made first: its ETag is a hash of the body, not of the key. */
    struct corral_value *v =
        corral_value_new("once", 4, "body", 4, "application/json", 0);
    unsigned before = siphash_calls;
    ask(c, "once", &cp, &w, 5000);
    CHECK_EQ_INT(cp.calls, 1);
    corral_fill_done(cp.fill, v);
    run_until_fired(&w, 1, 5000);
    CHECK_EQ_INT(w.fired, 1);
    CHECK_EQ_INT(w.source, CORRAL_SOURCE_STORED);
    printf("# key hashes on a miss: %u\n", siphash_calls - before);
    CHECK_EQ_INT(siphash_calls - before, 1);
    before = siphash_calls;
    CHECK(corral_cache_peek(c, "once", 4) != NULL);
    CHECK_EQ_INT(siphash_calls - before, 1);
    corral_cache_free(c);
    compute_finish(&cp);
}

int
main(void)
{
    base = event_base_new();
    RUN(test_ten_thousand_waiters);
    RUN(test_replace);
    RUN(test_leader_fails);
    RUN(test_deadline);
    RUN(test_cancel);
    RUN(test_teardown_in_flight);
    RUN(test_report_during_teardown);
    RUN(test_reentrancy);
    RUN(test_ttl_fake_clock);
    RUN(test_tier_promotion);
    RUN(test_max_waiters);
    RUN(test_get_with_fallback);
    RUN(test_cancel_queued_hit);
    RUN(test_late_report_before_fanout);
    RUN(test_cancel_self);
    RUN(test_tier_hangs);
    RUN(test_purge_during_fill);
    RUN(test_remote_lease);
    RUN(test_tier_value_for_another_key);
    RUN(test_fleet_failure_shared);
    RUN(test_fleet_purge_races);
    RUN(test_fleet_resync);
    RUN(test_fleet_unfit_and_unknown);
    RUN(test_hold);
    RUN(test_stale_if_error_retry_answers_at_once);
    RUN(test_stale_if_error_retry_through_tier);
    RUN(test_failure_carries_backoff);
    RUN(test_fill_started_times_the_work);
    RUN(test_get_fit);
    RUN(test_backoff_doubles_past_a_long_try);
    RUN(test_ttl_jitter);
    RUN(test_backoff);
    RUN(test_backoff_retry_after);
    RUN(test_stale_while_revalidate);
    RUN(test_stale_if_error);
    RUN(test_early_refresh);
    RUN(test_refresh_through_tier);
    RUN(test_refetch_asks_newer_at_once);
    RUN(test_fill_done_nostore);
    RUN(test_fill_done_capped);
    RUN(test_miss_hashes_key_once);
    event_base_free(base);
    return 0;
}
