/* fake_tier.c — an in-memory tier with loop latency, for tests and demos.
 * It stores its own copy of each value (as a remote store would) and hands
 * out fresh copies, so L1 and the tier never share memory. Entries and
 * leases live in plain lists: tests hold few keys. Every answer goes
 * through the loop, after the latency. */
#include "fake_tier.h"

#include <errno.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/time.h>

#include "corral/value.h"
#include "timeutil.h"

struct fake_entry {
    SLIST_ENTRY(fake_entry) link;
    struct corral_value *copy;
    uint64_t dies_at; /* ms */
};

/* A key's lease: held by this instance or another, or a failure kept for
 * the key's backoff. */
struct fake_lease {
    SLIST_ENTRY(fake_lease) link;
    uint64_t id; /* ours: the handle's */
    bool ours;   /* taken through the ops, not by "another instance" */
    bool failed; /* a failure outcome, not a holder */
    int error;
    char message[128];
    uint64_t dies_at; /* ms */
    size_t keylen;
    char key[];
};

struct corral_tier_lease {
    uint64_t id;
    size_t keylen;
    char key[];
};

enum call_kind { CALL_GET, CALL_ACQUIRE, CALL_DEL };

/* An answer on its way through the loop. */
struct fake_call {
    LIST_ENTRY(fake_call) link;
    struct corral_fake_tier *tier;
    struct event *timer;
    enum call_kind kind;
    corral_tier_get_cb *get_cb;
    corral_tier_acquire_cb *acquire_cb;
    corral_tier_done_cb *done_cb;
    void *arg;
    struct corral_tier_want want;
    struct corral_tier_answer answer; /* an acquire's, found at the call */
    char message[128];                /* answer.message's */
    size_t keylen;
    char key[];
};

struct corral_fake_tier {
    struct event_base *base;
    uint64_t latency_ms;
    uint64_t (*clock)(void *);
    void *clock_arg;
    bool unknown;
    uint64_t next_id;
    SLIST_HEAD(, fake_entry) entries;
    SLIST_HEAD(, fake_lease) leases;
    LIST_HEAD(, fake_call) calls; /* in flight */
    const struct corral_tier_events *ev;
    void *ev_arg;
    struct corral_fake_tier_counts counts;
};

static uint64_t
loop_clock(void *arg)
{
    struct timeval tv;
    event_base_gettimeofday_cached(arg, &tv);
    return corral_tv_to_ms(&tv);
}

static struct corral_value *
copy_value(const struct corral_value *v)
{
    struct corral_value *c = corral_value_new(
        corral_value_key(v), corral_value_keylen(v), corral_value_body(v),
        corral_value_len(v), corral_value_content_type(v), 0);
    if (c == NULL)
        abort();
    corral_value_set_times(c, corral_value_stored_at(v),
                           corral_value_expires_at(v), corral_value_swr_ms(v),
                           corral_value_sie_ms(v));
    return c;
}

static bool drop(struct corral_fake_tier *t, const void *key, size_t keylen);

static struct fake_entry *
find(struct corral_fake_tier *t, const void *key, size_t keylen)
{
    struct fake_entry *e;
    SLIST_FOREACH(e, &t->entries, link)
    if (corral_value_keylen(e->copy) == keylen &&
        memcmp(corral_value_key(e->copy), key, keylen) == 0)
        break;
    if (e && t->clock(t->clock_arg) >= e->dies_at) {
        drop(t, key, keylen);
        e = NULL;
    }
    return e;
}

static bool
drop(struct corral_fake_tier *t, const void *key, size_t keylen)
{
    struct fake_entry *e;
    SLIST_FOREACH(e, &t->entries, link)
    if (corral_value_keylen(e->copy) == keylen &&
        memcmp(corral_value_key(e->copy), key, keylen) == 0)
        break;
    if (e == NULL)
        return false;
    SLIST_REMOVE(&t->entries, e, fake_entry, link);
    corral_value_unref(e->copy);
    free(e);
    return true;
}

static struct fake_lease *
lease_find(struct corral_fake_tier *t, const void *key, size_t keylen)
{
    struct fake_lease *l;
    uint64_t now = t->clock(t->clock_arg);
    SLIST_FOREACH(l, &t->leases, link)
    if (l->keylen == keylen && memcmp(l->key, key, keylen) == 0) {
        if (now >= l->dies_at) { /* ran out */
            SLIST_REMOVE(&t->leases, l, fake_lease, link);
            free(l);
            return NULL;
        }
        return l;
    }
    return NULL;
}

static struct fake_lease *
lease_add(struct corral_fake_tier *t, const void *key, size_t keylen,
          uint64_t ttl_ms, bool ours)
{
    struct fake_lease *l = calloc(1, sizeof(*l) + keylen);
    if (l == NULL)
        abort();
    l->id = ++t->next_id;
    l->ours = ours;
    l->dies_at = t->clock(t->clock_arg) + ttl_ms;
    l->keylen = keylen;
    memcpy(l->key, key, keylen);
    SLIST_INSERT_HEAD(&t->leases, l, link);
    return l;
}

static void
lease_drop(struct corral_fake_tier *t, struct fake_lease *l)
{
    SLIST_REMOVE(&t->leases, l, fake_lease, link);
    free(l);
}

/* What an acquire finds now, as the script does. */
static void
acquire_now(struct corral_fake_tier *t, struct fake_call *c,
            struct corral_tier_answer *a)
{
    uint64_t now = t->clock(t->clock_arg);
    struct fake_entry *e = find(t, c->key, c->keylen);
    *a = (struct corral_tier_answer){.verdict = CORRAL_TIER_UNKNOWN};
    if (e != NULL) {
        a->value = copy_value(e->copy);
        t->counts.hits++;
        if (corral_value_expires_at(e->copy) > c->want.now_ms &&
            corral_value_stored_at(e->copy) > c->want.newer_than) {
            a->verdict = CORRAL_TIER_VALUE;
            return;
        }
    }
    if (t->unknown) {
        a->error = -ETIMEDOUT;
        return;
    }
    t->counts.leases++;
    struct fake_lease *l = lease_find(t, c->key, c->keylen);
    if (l == NULL) {
        l = lease_add(t, c->key, c->keylen, 1000, true);
        struct corral_tier_lease *h = malloc(sizeof(*h) + c->keylen);
        if (h == NULL)
            abort();
        h->id = l->id;
        h->keylen = c->keylen;
        memcpy(h->key, c->key, c->keylen);
        a->verdict = CORRAL_TIER_WON;
        a->lease = h;
        return;
    }
    uint64_t left = l->dies_at - now;
    if (l->failed) {
        a->verdict = CORRAL_TIER_FAILED;
        a->ms = left;
        a->error = l->error;
        snprintf(c->message, sizeof(c->message), "%s", l->message);
        a->message = c->message;
        return;
    }
    a->verdict = CORRAL_TIER_HELD;
    a->ms = left + 10 < 1000 ? left + 10 : 1000;
}

static void
call_fire(struct fake_call *c, bool cancel)
{
    struct corral_fake_tier *t = c->tier;
    LIST_REMOVE(c, link);
    event_free(c->timer);
    if (c->kind == CALL_GET) {
        struct fake_entry *e = cancel ? NULL : find(t, c->key, c->keylen);
        if (e)
            t->counts.hits++;
        c->get_cb(e ? copy_value(e->copy) : NULL,
                  cancel ? -ECANCELED
                  : e    ? 0
                         : -ENOENT,
                  c->arg);
    } else if (c->kind == CALL_ACQUIRE) {
        struct corral_tier_answer a = c->answer;
        if (cancel) {
            corral_value_unref(a.value);
            free(a.lease);
            a = (struct corral_tier_answer){.verdict = CORRAL_TIER_UNKNOWN,
                                            .error = -ECANCELED};
        }
        c->acquire_cb(&a, c->arg);
    } else if (c->done_cb != NULL) {
        c->done_cb(cancel ? -ECANCELED : 0, c->arg);
    }
    free(c);
}

static void
call_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    call_fire(arg, false);
}

static struct fake_call *
call_new(struct corral_fake_tier *t, enum call_kind kind, const void *key,
         size_t keylen, void *arg)
{
    struct fake_call *c = calloc(1, sizeof(*c) + keylen);
    if (c == NULL)
        abort();
    c->tier = t;
    c->kind = kind;
    c->arg = arg;
    c->keylen = keylen;
    memcpy(c->key, key, keylen);
    c->timer = evtimer_new(t->base, call_timer_cb, c);
    struct timeval tv = corral_ms_to_tv(t->latency_ms);
    if (c->timer == NULL || evtimer_add(c->timer, &tv) != 0)
        abort();
    LIST_INSERT_HEAD(&t->calls, c, link);
    return c;
}

static void
fake_get(void *ctx, const void *key, size_t keylen, corral_tier_get_cb *cb,
         void *arg)
{
    struct corral_fake_tier *t = ctx;
    call_new(t, CALL_GET, key, keylen, arg)->get_cb = cb;
    t->counts.gets++;
}

static void
fake_acquire(void *ctx, const void *key, size_t keylen,
             const struct corral_tier_want *want, corral_tier_acquire_cb *cb,
             void *arg)
{
    struct corral_fake_tier *t = ctx;
    struct fake_call *c = call_new(t, CALL_ACQUIRE, key, keylen, arg);
    c->acquire_cb = cb;
    c->want = *want;
    t->counts.gets++;
    /* As a script does: Redis runs it now, the answer travels back. */
    acquire_now(t, c, &c->answer);
}

static void
fake_set(void *ctx, const struct corral_value *v, uint64_t ttl_ms)
{
    struct corral_fake_tier *t = ctx;
    drop(t, corral_value_key(v), corral_value_keylen(v));
    struct fake_entry *e = calloc(1, sizeof(*e));
    if (e == NULL)
        abort();
    e->copy = copy_value(v);
    e->dies_at = t->clock(t->clock_arg) + ttl_ms;
    SLIST_INSERT_HEAD(&t->entries, e, link);
    t->counts.sets++;
}

static void
fake_del(void *ctx, const void *key, size_t keylen, corral_tier_done_cb *cb,
         void *arg)
{
    struct corral_fake_tier *t = ctx;
    drop(t, key, keylen);
    struct fake_lease *l = lease_find(t, key, keylen);
    if (l != NULL && l->failed)
        lease_drop(t, l);
    t->counts.dels++;
    call_new(t, CALL_DEL, key, keylen, arg)->done_cb = cb;
}

static void
fake_listen(void *ctx, const struct corral_tier_events *ev, void *arg)
{
    struct corral_fake_tier *t = ctx;
    t->ev = ev;
    t->ev_arg = arg;
}

static void
fake_release(void *ctx, struct corral_tier_lease *h,
             const struct corral_outcome *o)
{
    struct corral_fake_tier *t = ctx;
    struct fake_lease *l = lease_find(t, h->key, h->keylen);
    t->counts.releases++;
    t->counts.stored += o->kind == CORRAL_OUTCOME_STORED;
    t->counts.failed += o->kind == CORRAL_OUTCOME_FAILED;
    t->counts.abandoned += o->kind == CORRAL_OUTCOME_ABANDONED;
    if (l != NULL && l->ours && !l->failed && l->id == h->id) {
        if (o->kind == CORRAL_OUTCOME_FAILED && o->retry_ms > 0) {
            l->failed = true;
            l->error = o->error;
            snprintf(l->message, sizeof(l->message), "%s",
                     o->message ? o->message : "");
            l->dies_at = t->clock(t->clock_arg) + o->retry_ms;
        } else {
            lease_drop(t, l);
        }
    }
    free(h);
}

void
corral_fake_tier_hold_lease(struct corral_fake_tier *t, const void *key,
                            size_t keylen, uint64_t ttl_ms)
{
    lease_add(t, key, keylen, ttl_ms, false);
}

void
corral_fake_tier_remote_fill(struct corral_fake_tier *t,
                             const struct corral_value *v, uint64_t ttl_ms)
{
    struct fake_lease *l;
    if (v != NULL)
        fake_set(t, v, ttl_ms);
    const char *key = v ? corral_value_key(v) : NULL;
    size_t keylen = v ? corral_value_keylen(v) : 0;
    SLIST_FOREACH(l, &t->leases, link)
    if (!l->ours && !l->failed &&
        (v == NULL ||
         (l->keylen == keylen && memcmp(l->key, key, keylen) == 0)))
        break;
    if (l == NULL)
        return;
    SLIST_REMOVE(&t->leases, l, fake_lease, link);
    struct corral_outcome o = {.kind = v ? CORRAL_OUTCOME_STORED
                                         : CORRAL_OUTCOME_ABANDONED};
    if (t->ev && t->ev->released)
        t->ev->released(l->key, l->keylen, &o, t->ev_arg);
    free(l);
}

void
corral_fake_tier_remote_fail(struct corral_fake_tier *t, const void *key,
                             size_t keylen, int error, const char *message,
                             uint64_t retry_ms)
{
    struct fake_lease *l = lease_find(t, key, keylen);
    if (l == NULL)
        l = lease_add(t, key, keylen, retry_ms, false);
    l->failed = true;
    l->error = error;
    snprintf(l->message, sizeof(l->message), "%s", message);
    l->dies_at = t->clock(t->clock_arg) + retry_ms;
    struct corral_outcome o = {.kind = CORRAL_OUTCOME_FAILED,
                               .error = error,
                               .message = message,
                               .retry_ms = retry_ms};
    if (t->ev && t->ev->released)
        t->ev->released(key, keylen, &o, t->ev_arg);
}

void
corral_fake_tier_resync(struct corral_fake_tier *t, bool lost)
{
    if (t->ev && t->ev->resync)
        t->ev->resync(lost, t->ev_arg);
}

void
corral_fake_tier_deaf(struct corral_fake_tier *t)
{
    if (t->ev && t->ev->deaf)
        t->ev->deaf(t->ev_arg);
}

void
corral_fake_tier_unknown(struct corral_fake_tier *t, bool on)
{
    t->unknown = on;
}

const struct corral_tier corral_fake_tier_ops = {
    .name = "fake",
    .get = fake_get,
    .set = fake_set,
    .del = fake_del,
    .listen = fake_listen,
    .acquire = fake_acquire,
    .release = fake_release,
};

struct corral_fake_tier *
corral_fake_tier_new(struct event_base *base, uint64_t latency_ms,
                     uint64_t (*clock)(void *), void *clock_arg)
{
    struct corral_fake_tier *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->base = base;
    t->latency_ms = latency_ms;
    t->clock = clock ? clock : loop_clock;
    t->clock_arg = clock ? clock_arg : base;
    return t;
}

void
corral_fake_tier_free(struct corral_fake_tier *t)
{
    if (t == NULL)
        return;
    while (!LIST_EMPTY(&t->calls))
        call_fire(LIST_FIRST(&t->calls), true);
    while (!SLIST_EMPTY(&t->entries))
        drop(t, corral_value_key(SLIST_FIRST(&t->entries)->copy),
             corral_value_keylen(SLIST_FIRST(&t->entries)->copy));
    while (!SLIST_EMPTY(&t->leases))
        lease_drop(t, SLIST_FIRST(&t->leases));
    free(t);
}

void
corral_fake_tier_remote_invalidate(struct corral_fake_tier *t, const void *key,
                                   size_t keylen)
{
    drop(t, key, keylen);
    if (t->ev && t->ev->invalidated)
        t->ev->invalidated(key, keylen, t->ev_arg);
}

void
corral_fake_tier_counts(const struct corral_fake_tier *t,
                        struct corral_fake_tier_counts *out)
{
    *out = t->counts;
}
