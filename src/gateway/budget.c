/* budget.c — an upstream's queue of calls before its window and pause,
 * which live in the server's ledger (see budget.h, ledger.h). */
#include "budget.h"
#include "log.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "fleet.h"
#include "ledger.h"
#include "timeutil.h"
#include "xalloc.h"

/* Admissions in flight per upstream, at most (and never more than its
 * rate's count, nor than the calls waiting). */
#define ADMIT_MAX 64
/* The end of a wait that is too late for a slot (see acquire). */
#define LAST_MS 100

struct corral_budget_wait {
    TAILQ_ENTRY(corral_budget_wait) link;
    struct corral_budget *b;
    struct event *timer; /* the caller's timeout */
    uint64_t deadline;   /* ms of the budget's clock */
    bool refresh;
    corral_budget_cb *cb;
    void *arg;
};

TAILQ_HEAD(wait_list, corral_budget_wait);

struct corral_budget {
    struct event_base *base;
    struct corral_clock clock;
    char *name;
    unsigned count;                  /* 0: no rate */
    struct corral_account_rule rule; /* its windows, with the margin */
    struct corral_account *account;  /* the window and the pause */
    struct corral_ledger *own;       /* when the server's had no room */
    struct corral_fleet *fleet;
    unsigned asking;     /* admissions out in Redis */
    uint64_t full_until; /* ms of its clock: the fleet's window is full */
    bool dying;          /* freed while asking: the last answer frees it */
    struct wait_list cold, refresh;
    unsigned n_cold, n_refresh; /* queued */
    struct event *pump_ev;      /* the next slot, or the fleet's */
    struct corral_budget_stats stats;
};

static uint64_t
now_of(const struct corral_budget *b)
{
    return corral_clock_now(&b->clock);
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
    if (w->refresh) {
        TAILQ_REMOVE(&b->refresh, w, link);
        b->n_refresh--;
    } else {
        TAILQ_REMOVE(&b->cold, w, link);
        b->n_cold--;
    }
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
grant(struct corral_budget *b, struct corral_budget_wait *w, uint64_t now)
{
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

/* The first queued call that may go at now: the first cold one if the
 * windows let a cold call go, else the first refresh. Counted on the
 * account unless dry. NULL when none may: *ms until one might, or, with
 * *paused, the pause left. */
static struct corral_budget_wait *
next_call(struct corral_budget *b, uint64_t now, bool dry, bool *paused,
          uint64_t *ms)
{
    struct corral_budget_wait *lines[2] = {TAILQ_FIRST(&b->cold),
                                           TAILQ_FIRST(&b->refresh)};
    *paused = false;
    *ms = UINT64_MAX;
    for (int i = 0; i < 2; i++) {
        uint64_t wait;
        if (lines[i] == NULL)
            continue;
        int rc = corral_account_take(b->account, &b->rule, !lines[i]->refresh,
                                     now, dry, &wait);
        if (rc == 0)
            return lines[i];
        if (rc < 0) {
            *paused = true;
            *ms = wait;
            return NULL;
        }
        if (wait < *ms)
            *ms = wait;
    }
    return NULL;
}

static void admit_cb(int verdict, uint64_t ms, const char *member, void *arg);

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

/* Lets queued calls go while they may, cold ones first unless their
 * share is spent; with the fleet's window, asks for as many admissions
 * at once as calls wait (at most ADMIT_MAX, and the rate's count), and
 * hands each grant to the call that may go when it comes. Other workers
 * take slots too: a timer that finds none free waits again. */
static void
pump(struct corral_budget *b)
{
    while (head(b) != NULL) {
        uint64_t now = now_of(b), ms;
        bool paused, fleet = fleet_window(b);
        struct corral_budget_wait *w = next_call(b, now, fleet, &paused, &ms);
        if (paused) {
            refuse_all(b, ms);
            return;
        }
        if (w == NULL) {
            arm_pump(b, ms);
            return;
        }
        if (fleet) {
            if (now < b->full_until) {
                arm_pump(b, b->full_until - now);
                return;
            }
            if (b->asking >= b->stats.queued || b->asking >= b->count ||
                b->asking >= ADMIT_MAX)
                return;
            b->asking++;
            corral_fleet_admit(b->fleet, b->name, b->count, b->rule.window_ms,
                               admit_cb, b);
            continue;
        }
        grant(b, w, now);
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
    corral_account_close(b->account);
    corral_ledger_free(b->own);
    free(b->name);
    free(b);
}

static void
admit_cb(int verdict, uint64_t ms, const char *member, void *arg)
{
    struct corral_budget *b = arg;
    uint64_t now = now_of(b), wait;
    bool paused;

    b->asking--;
    if (b->dying) {
        if (verdict == 1 && member != NULL)
            corral_fleet_unadmit(b->fleet, b->name, member);
        if (b->asking == 0)
            budget_destroy(b);
        return;
    }
    if (verdict == 1) {
        /* The fleet's window let it go; the server's must too. */
        struct corral_budget_wait *w = next_call(b, now, false, &paused, &wait);
        if (w != NULL)
            grant(b, w, now);
        else if (member != NULL) /* the call is not made */
            corral_fleet_unadmit(b->fleet, b->name, member);
    } else if (verdict == 0) {
        if (b->full_until < now + ms)
            b->full_until = now + ms;
    } else if (verdict == -EBUSY) {
        corral_account_pause(b->account, now + ms);
    } else if (verdict != -ECANCELED) {
        /* Redis cannot tell: the server's window alone decides this one. */
        b->stats.fleet_errors++;
        struct corral_budget_wait *w = next_call(b, now, false, &paused, &wait);
        if (w != NULL)
            grant(b, w, now);
    }
    pump(b);
}

static void
timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_budget_wait *w = arg;
    struct corral_budget *b = w->b;
    uint64_t now = now_of(b), in = 0;

    (void)fd;
    (void)what;
    corral_account_take(b->account, &b->rule, !w->refresh, now, true, &in);
    b->stats.refused++;
    answer(w, -EBUSY, in > 0 ? in : 1000);
}

/* ---- API ---- */

struct corral_budget *
corral_budget_new(struct event_base *base, const struct corral_clock *clock,
                  const char *name, const struct corral_budget_rate *rate,
                  struct corral_fleet *fleet, struct corral_ledger *ledger)
{
    struct corral_budget *b = xcalloc(1, sizeof(*b));
    uint64_t window_ms = rate->window_ms;
    uint64_t margin = window_ms / 20 < 250 ? window_ms / 20 : 250;
    unsigned share = rate->refresh_share < 90 ? rate->refresh_share : 90;

    b->base = base;
    if (clock != NULL)
        b->clock = *clock;
    b->name = xstrndup(name, strlen(name));
    b->count = window_ms > 0 ? rate->count : 0;
    b->rule.window_ms = window_ms + margin;
    if (share > 0)
        b->rule.cold_window_ms = b->rule.window_ms * 100 / (100 - share);
    b->account = corral_account_open(ledger, name, b->count);
    if (b->account == NULL) {
        if (ledger != NULL)
            corral_log(CORRAL_LOG_WARNING,
                       "%s: no room in the server's ledger: its rate and "
                       "pause hold for this worker alone",
                       name);
        b->own = corral_ledger_new(1);
        if (b->own == NULL)
            abort(); /* the policy of xalloc.h */
        b->account = corral_account_open(b->own, name, b->count);
        if (b->account == NULL) /* a name too long for any ledger */
            b->account = corral_account_open(b->own, "-", b->count);
    }
    b->fleet = fleet;
    TAILQ_INIT(&b->cold);
    TAILQ_INIT(&b->refresh);
    b->pump_ev = xcheck(evtimer_new(base, pump_cb, b));
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
    uint64_t now = now_of(b), ms;
    bool fleet = fleet_window(b);
    /* It may go at once when none of its kind waits before it, nor, for
     * a refresh, a cold call (which the loop lets go first if it may). */
    bool first = refresh ? head(b) == NULL : TAILQ_EMPTY(&b->cold);
    int rc = corral_account_take(b->account, &b->rule, !refresh, now,
                                 fleet || !first, &ms);
    if (rc < 0) {
        b->stats.refused++;
        *retry_after_ms = ms;
        return -EBUSY;
    }
    if (rc == 0 && !fleet && first) {
        b->stats.granted++;
        return 0;
    }
    /* The slot it would get, if nobody else asked: later than its
     * timeout, it is refused now instead of then. A slot in the last
     * tenth of the timeout (at most LAST_MS) counts as later: it would
     * leave the call no time, and the timeout's timer may come first. */
    uint64_t at =
        corral_account_slot_at(b->account, &b->rule, !refresh,
                               refresh ? b->n_refresh : b->n_cold, now);
    uint64_t last = timeout_ms / 10 < LAST_MS ? timeout_ms / 10 : LAST_MS;
    if (fleet && at < b->full_until)
        at = b->full_until;
    if (at > now + timeout_ms - last) {
        b->stats.refused++;
        *retry_after_ms = at - now;
        return -EBUSY;
    }
    struct corral_budget_wait *w = xcalloc(1, sizeof(*w));
    w->b = b;
    w->refresh = refresh;
    w->cb = cb;
    w->arg = arg;
    w->deadline = now + timeout_ms;
    w->timer = xcheck(evtimer_new(b->base, timeout_cb, w));
    struct timeval tv = corral_ms_to_tv(timeout_ms);
    evtimer_add(w->timer, &tv);
    if (refresh) {
        TAILQ_INSERT_TAIL(&b->refresh, w, link);
        b->n_refresh++;
    } else {
        TAILQ_INSERT_TAIL(&b->cold, w, link);
        b->n_cold++;
    }
    b->stats.queued++;
    *out = w;
    /* From the loop (cb never fires inside this call), and now: a refresh
     * may go before the cold calls the timer waits for. */
    arm_pump(b, 0);
    return -EINPROGRESS;
}

int
corral_budget_try(struct corral_budget *b, bool refresh,
                  uint64_t *retry_after_ms)
{
    uint64_t ms;
    int rc = corral_account_take(b->account, &b->rule, !refresh, now_of(b),
                                 false, &ms);
    if (rc == 0) {
        b->stats.granted++;
        return 0;
    }
    b->stats.refused++;
    *retry_after_ms = ms > 0 ? ms : 1;
    return -EBUSY;
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
    corral_account_pause(b->account, now_of(b) + ms);
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
