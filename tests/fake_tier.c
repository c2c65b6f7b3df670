/* fake_tier.c — an in-memory tier with loop latency, for tests and demos.
 * It stores its own copy of each value (as a remote store would) and hands
 * out fresh copies, so L1 and the tier never share memory. Entries live in a
 * plain list: tests hold few keys. */
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

struct fake_get {
    LIST_ENTRY(fake_get) link;
    struct corral_fake_tier *tier;
    struct event *timer;
    corral_tier_get_cb *cb;
    void *arg;
    size_t keylen;
    char key[];
};

struct fake_lease {
    SLIST_ENTRY(fake_lease) link;
    bool ours;        /* taken through the ops, not by "another instance" */
    uint64_t dies_at; /* ms */
    size_t keylen;
    char key[];
};

/* A lease answer on its way, through the loop like a get. */
struct fake_lease_req {
    LIST_ENTRY(fake_lease_req) link;
    struct corral_fake_tier *tier;
    struct event *timer;
    corral_tier_lease_cb *cb;
    void *arg;
    int won;
};

struct corral_fake_tier {
    struct event_base *base;
    uint64_t latency_ms;
    uint64_t (*clock)(void *);
    void *clock_arg;
    SLIST_HEAD(, fake_entry) entries;
    LIST_HEAD(, fake_get) gets; /* in flight */
    corral_tier_invalidate_cb *sub_cb;
    void *sub_arg;
    corral_tier_released_cb *rel_cb;
    void *rel_arg;
    SLIST_HEAD(, fake_lease) leases;
    LIST_HEAD(, fake_lease_req) lease_reqs; /* answers on their way */
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

static struct fake_entry *
find(struct corral_fake_tier *t, const void *key, size_t keylen)
{
    struct fake_entry *e;
    SLIST_FOREACH(e, &t->entries, link)
        if (corral_value_keylen(e->copy) == keylen &&
            memcmp(corral_value_key(e->copy), key, keylen) == 0)
            break;
    return e;
}

static bool
drop(struct corral_fake_tier *t, const void *key, size_t keylen)
{
    struct fake_entry *e = find(t, key, keylen);
    if (e == NULL)
        return false;
    SLIST_REMOVE(&t->entries, e, fake_entry, link);
    corral_value_unref(e->copy);
    free(e);
    return true;
}

static void
get_finish(struct fake_get *g, struct corral_value *v, int error)
{
    LIST_REMOVE(g, link);
    event_free(g->timer);
    corral_tier_get_cb *cb = g->cb;
    void *arg = g->arg;
    free(g);
    cb(v, error, arg);
}

static void
get_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct fake_get *g = arg;
    struct corral_fake_tier *t = g->tier;
    struct fake_entry *e = find(t, g->key, g->keylen);
    if (e && t->clock(t->clock_arg) >= e->dies_at) {
        drop(t, g->key, g->keylen);
        e = NULL;
    }
    if (e == NULL) {
        get_finish(g, NULL, -ENOENT);
        return;
    }
    t->counts.hits++;
    get_finish(g, copy_value(e->copy), 0);
}

static void
fake_get(void *ctx, const void *key, size_t keylen, corral_tier_get_cb *cb,
         void *arg)
{
    struct corral_fake_tier *t = ctx;
    struct fake_get *g = calloc(1, sizeof(*g) + keylen);
    if (g == NULL)
        abort();
    g->tier = t;
    g->cb = cb;
    g->arg = arg;
    g->keylen = keylen;
    memcpy(g->key, key, keylen);
    g->timer = evtimer_new(t->base, get_timer_cb, g);
    struct timeval tv = corral_ms_to_tv(t->latency_ms);
    if (g->timer == NULL || evtimer_add(g->timer, &tv) != 0)
        abort();
    LIST_INSERT_HEAD(&t->gets, g, link);
    t->counts.gets++;
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
fake_del(void *ctx, const void *key, size_t keylen)
{
    struct corral_fake_tier *t = ctx;
    drop(t, key, keylen);
    t->counts.dels++;
}

static void
fake_subscribe(void *ctx, corral_tier_invalidate_cb *cb, void *arg)
{
    struct corral_fake_tier *t = ctx;
    t->sub_cb = cb;
    t->sub_arg = arg;
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

static void
lease_add(struct corral_fake_tier *t, const void *key, size_t keylen,
          uint64_t ttl_ms, bool ours)
{
    struct fake_lease *l = calloc(1, sizeof(*l) + keylen);
    if (l == NULL)
        abort();
    l->ours = ours;
    l->dies_at = t->clock(t->clock_arg) + ttl_ms;
    l->keylen = keylen;
    memcpy(l->key, key, keylen);
    SLIST_INSERT_HEAD(&t->leases, l, link);
}

static void
lease_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct fake_lease_req *r = arg;
    LIST_REMOVE(r, link);
    event_free(r->timer);
    r->cb(r->won, r->arg);
    free(r);
}

static void
fake_lease(void *ctx, const void *key, size_t keylen, uint64_t ttl_ms,
           corral_tier_lease_cb *cb, void *arg)
{
    struct corral_fake_tier *t = ctx;
    struct fake_lease_req *r = calloc(1, sizeof(*r));
    if (r == NULL)
        abort();
    t->counts.leases++;
    r->won = lease_find(t, key, keylen) == NULL;
    if (r->won)
        lease_add(t, key, keylen, ttl_ms, true);
    r->tier = t;
    r->cb = cb;
    r->arg = arg;
    r->timer = evtimer_new(t->base, lease_timer_cb, r);
    LIST_INSERT_HEAD(&t->lease_reqs, r, link);
    struct timeval tv = corral_ms_to_tv(t->latency_ms);
    if (r->timer == NULL || evtimer_add(r->timer, &tv) != 0)
        abort();
}

static void
fake_release(void *ctx, const void *key, size_t keylen, int ok)
{
    struct corral_fake_tier *t = ctx;
    struct fake_lease *l = lease_find(t, key, keylen);
    (void)ok;
    t->counts.releases++;
    if (l != NULL && l->ours) { /* compare-and-delete */
        SLIST_REMOVE(&t->leases, l, fake_lease, link);
        free(l);
    }
}

static void
fake_watch_released(void *ctx, corral_tier_released_cb *cb, void *arg)
{
    struct corral_fake_tier *t = ctx;
    t->rel_cb = cb;
    t->rel_arg = arg;
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
        if (!l->ours && (v == NULL || (l->keylen == keylen &&
                                       memcmp(l->key, key, keylen) == 0)))
            break;
    if (l == NULL)
        return;
    SLIST_REMOVE(&t->leases, l, fake_lease, link);
    if (t->rel_cb)
        t->rel_cb(l->key, l->keylen, v != NULL, t->rel_arg);
    free(l);
}

const struct corral_tier corral_fake_tier_ops = {
    .name = "fake",
    .get = fake_get,
    .set = fake_set,
    .del = fake_del,
    .subscribe = fake_subscribe,
    .lease = fake_lease,
    .release = fake_release,
    .watch_released = fake_watch_released,
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
    while (!LIST_EMPTY(&t->gets))
        get_finish(LIST_FIRST(&t->gets), NULL, -ECANCELED);
    while (!SLIST_EMPTY(&t->entries))
        drop(t, corral_value_key(SLIST_FIRST(&t->entries)->copy),
             corral_value_keylen(SLIST_FIRST(&t->entries)->copy));
    while (!LIST_EMPTY(&t->lease_reqs)) {
        struct fake_lease_req *r = LIST_FIRST(&t->lease_reqs);
        LIST_REMOVE(r, link);
        event_free(r->timer);
        r->cb(-ECANCELED, r->arg);
        free(r);
    }
    while (!SLIST_EMPTY(&t->leases)) {
        struct fake_lease *l = SLIST_FIRST(&t->leases);
        SLIST_REMOVE_HEAD(&t->leases, link);
        free(l);
    }
    free(t);
}

void
corral_fake_tier_remote_invalidate(struct corral_fake_tier *t, const void *key,
                                   size_t keylen)
{
    drop(t, key, keylen);
    if (t->sub_cb)
        t->sub_cb(key, keylen, t->sub_arg);
}

void
corral_fake_tier_counts(const struct corral_fake_tier *t,
                        struct corral_fake_tier_counts *out)
{
    *out = t->counts;
}
