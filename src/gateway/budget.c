/* budget.c — an upstream's rate window and pause (see budget.h). */
#include "budget.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "fleet.h"
#include "timeutil.h"
#include "xalloc.h"

/* Admissions in flight per upstream, at most (and never more than its
 * rate's count, nor than the calls waiting). */
#define ADMIT_MAX 64

struct corral_budget_wait {
    TAILQ_ENTRY(corral_budget_wait) link;
    struct corral_budget *b;
    struct event *timer; /* the caller's timeout */
    uint64_t deadline;   /* monotonic ms */
    bool refresh;
    corral_budget_cb *cb;
    void *arg;
};

TAILQ_HEAD(wait_list, corral_budget_wait);

struct corral_budget {
    struct event_base *base;
    char *name;
    unsigned count;     /* 0: no rate */
    uint64_t window_ms; /* with the margin */
    uint64_t *sent;     /* when the last count calls went, a ring */
    unsigned oldest, n;
    uint64_t paused_until; /* monotonic ms */
    struct corral_fleet *fleet;
    unsigned asking;     /* admissions out in Redis */
    uint64_t full_until; /* monotonic ms: the fleet's window is full */
    bool dying;          /* freed while asking: the last answer frees it */
    struct wait_list cold, refresh;
    struct event *pump_ev; /* the next slot, or the fleet's */
    struct corral_budget_stats stats;
};

/* ---- the local window ---- */

static bool
slot_free(const struct corral_budget *b, uint64_t now)
{
    return b->count == 0 || b->n < b->count ||
           now >= b->sent[b->oldest] + b->window_ms;
}

/* ms until a slot frees (0: one is free). */
static uint64_t
slot_in(const struct corral_budget *b, uint64_t now)
{
    return slot_free(b, now) ? 0 : b->sent[b->oldest] + b->window_ms - now;
}

static void
take_slot(struct corral_budget *b, uint64_t now)
{
    if (b->count == 0)
        return;
    if (b->n < b->count) {
        b->sent[b->n++] = now;
        return;
    }
    b->sent[b->oldest] = now;
    b->oldest = (b->oldest + 1) % b->count;
}

/* ---- the queue ---- */

static struct corral_budget_wait *
head(struct corral_budget *b)
{
    struct corral_budget_wait *w = TAILQ_FIRST(&b->cold);
    return w != NULL ? w : TAILQ_FIRST(&b->refresh);
}

static void
unqueue(struct corral_budget_wait *w)
{
    struct corral_budget *b = w->b;
    TAILQ_REMOVE(w->refresh ? &b->refresh : &b->cold, w, link);
    b->stats.queued--;
    event_free(w->timer);
}

static void
answer(struct corral_budget_wait *w, int error, uint64_t ms)
{
    corral_budget_cb *cb = w->cb;
    void *arg = w->arg;
    unqueue(w);
    free(w);
    cb(error, ms, arg);
}

static void
grant_head(struct corral_budget *b, uint64_t now)
{
    struct corral_budget_wait *w = head(b);
    take_slot(b, now);
    b->stats.granted++;
    b->stats.waited++;
    answer(w, 0, w->deadline > now ? w->deadline - now : 1);
}

static void
refuse_all(struct corral_budget *b, uint64_t ms)
{
    struct corral_budget_wait *w;
    while ((w = head(b)) != NULL) {
        b->stats.refused++;
        answer(w, -EBUSY, ms);
    }
}

static void admit_cb(int verdict, uint64_t ms, const char *member,
                     void *arg);

static void
arm_pump(struct corral_budget *b, uint64_t ms)
{
    struct timeval tv = corral_ms_to_tv(ms);
    evtimer_add(b->pump_ev, &tv);
}

/* Does the fleet's window decide this budget's calls now? Not without a
 * rate (a pause is heard, not asked for), and not while Redis cannot
 * answer (the local window decides at once, rather than make every call
 * wait for a timeout). */
static bool
fleet_window(const struct corral_budget *b)
{
    return b->fleet != NULL && b->count > 0 &&
           !corral_fleet_struggling(b->fleet);
}

/* Lets the queue's head go while it may, in order; with the fleet's
 * window, asks for as many admissions at once as calls wait (at most
 * ADMIT_MAX, and the rate's count), and hands each grant to the head of
 * the queue when it comes. */
static void
pump(struct corral_budget *b)
{
    while (head(b) != NULL) {
        uint64_t now = corral_now_ms();
        if (now < b->paused_until) {
            refuse_all(b, b->paused_until - now);
            return;
        }
        if (!slot_free(b, now)) {
            arm_pump(b, slot_in(b, now));
            return;
        }
        if (fleet_window(b)) {
            if (now < b->full_until) {
                arm_pump(b, b->full_until - now);
                return;
            }
            if (b->asking >= b->stats.queued || b->asking >= b->count ||
                b->asking >= ADMIT_MAX)
                return;
            b->asking++;
            corral_fleet_admit(b->fleet, b->name, b->count, b->window_ms,
                               admit_cb, b);
            continue;
        }
        grant_head(b, now);
    }
}

static void
pump_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pump(arg);
}

static void
budget_destroy(struct corral_budget *b)
{
    event_free(b->pump_ev);
    free(b->sent);
    free(b->name);
    free(b);
}

static void
admit_cb(int verdict, uint64_t ms, const char *member, void *arg)
{
    struct corral_budget *b = arg;
    uint64_t now = corral_now_ms();

    b->asking--;
    if (b->dying) {
        if (verdict == 1 && member != NULL)
            corral_fleet_unadmit(b->fleet, b->name, member);
        if (b->asking == 0)
            budget_destroy(b);
        return;
    }
    if (verdict == 1) {
        if (head(b) != NULL)
            grant_head(b, now);
        else if (member != NULL) /* they left: the call is not made */
            corral_fleet_unadmit(b->fleet, b->name, member);
    } else if (verdict == 0) {
        if (b->full_until < now + ms)
            b->full_until = now + ms;
    } else if (verdict == -EBUSY) {
        if (b->paused_until < now + ms)
            b->paused_until = now + ms;
    } else if (verdict != -ECANCELED) {
        /* Redis cannot tell: the local window alone decides this one. */
        b->stats.fleet_errors++;
        if (head(b) != NULL && slot_free(b, now))
            grant_head(b, now);
    }
    pump(b);
}

static void
timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_budget_wait *w = arg;
    struct corral_budget *b = w->b;
    uint64_t now = corral_now_ms();
    uint64_t in = slot_in(b, now);

    (void)fd;
    (void)what;
    b->stats.refused++;
    answer(w, -EBUSY, in > 0 ? in : 1000);
}

/* ---- API ---- */

struct corral_budget *
corral_budget_new(struct event_base *base, const char *name, unsigned count,
                  uint64_t window_ms, struct corral_fleet *fleet)
{
    struct corral_budget *b = xcalloc(1, sizeof(*b));
    uint64_t margin = window_ms / 20 < 250 ? window_ms / 20 : 250;

    b->base = base;
    b->name = xstrndup(name, strlen(name));
    b->count = window_ms > 0 ? count : 0;
    b->window_ms = window_ms + margin;
    if (b->count > 0)
        b->sent = xcalloc(b->count, sizeof(*b->sent));
    b->fleet = fleet;
    TAILQ_INIT(&b->cold);
    TAILQ_INIT(&b->refresh);
    b->pump_ev = evtimer_new(base, pump_cb, b);
    if (b->pump_ev == NULL)
        abort(); /* the policy of xalloc.h */
    return b;
}

void
corral_budget_free(struct corral_budget *b)
{
    if (b == NULL)
        return;
    refuse_all(b, 1000);
    if (b->asking > 0) { /* Redis owes answers: the last frees b */
        b->dying = true;
        event_del(b->pump_ev);
        return;
    }
    budget_destroy(b);
}

const char *
corral_budget_name(const struct corral_budget *b)
{
    return b->name;
}

int
corral_budget_acquire(struct corral_budget *b, bool refresh,
                      uint64_t timeout_ms, corral_budget_cb *cb, void *arg,
                      struct corral_budget_wait **out, uint64_t *retry_after_ms)
{
    uint64_t now = corral_now_ms();

    if (now < b->paused_until) {
        b->stats.refused++;
        *retry_after_ms = b->paused_until - now;
        return -EBUSY;
    }
    if (!fleet_window(b) && head(b) == NULL && slot_free(b, now)) {
        take_slot(b, now);
        b->stats.granted++;
        return 0;
    }
    struct corral_budget_wait *w = xcalloc(1, sizeof(*w));
    w->b = b;
    w->refresh = refresh;
    w->cb = cb;
    w->arg = arg;
    w->deadline = now + timeout_ms;
    w->timer = evtimer_new(b->base, timeout_cb, w);
    if (w->timer == NULL)
        abort();
    struct timeval tv = corral_ms_to_tv(timeout_ms);
    evtimer_add(w->timer, &tv);
    TAILQ_INSERT_TAIL(refresh ? &b->refresh : &b->cold, w, link);
    b->stats.queued++;
    *out = w;
    /* From the loop: cb never fires inside this call. */
    if (!evtimer_pending(b->pump_ev, NULL))
        arm_pump(b, 0);
    return 1;
}

void
corral_budget_cancel(struct corral_budget_wait *w)
{
    if (w == NULL)
        return;
    unqueue(w);
    free(w);
}

void
corral_budget_paused(struct corral_budget *b, uint64_t ms)
{
    uint64_t now = corral_now_ms();
    if (b->paused_until < now + ms)
        b->paused_until = now + ms;
    refuse_all(b, ms);
}

void
corral_budget_pause(struct corral_budget *b, uint64_t ms)
{
    b->stats.pauses++;
    if (b->fleet != NULL)
        corral_fleet_pause(b->fleet, b->name, ms);
    corral_budget_paused(b, ms);
}

void
corral_budget_stats(const struct corral_budget *b,
                    struct corral_budget_stats *out)
{
    *out = b->stats;
}
