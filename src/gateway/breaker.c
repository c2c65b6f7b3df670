/* breaker.c — an upstream's circuit breaker (see breaker.h). Its state is
 * one 64-bit word in the shared table: the state (2 bits), the exponent of
 * the backoff step (6), the failures in a row (16) and a time (40 bits of
 * monotonic ms: when OPEN, when the next probe may go; when HALF_OPEN,
 * when the probe out lapses). Every change is a compare-and-swap of the
 * whole word, so workers never lock each other out; a probe's ticket is
 * the word its claim wrote, so only that probe settles it. Counts are
 * atomic adds beside the word. */
#include "breaker.h"
#include "log.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "fleet.h"
#include "timeutil.h"
#include "xalloc.h"

#define NAME_BYTES 256  /* an upstream name, the NUL included */
#define SPIN_MAX 100000 /* yields while another worker names a slot */

/* One upstream's breaker state, shared: in memory every worker of the
 * server maps, a slot of the table. */
struct shared {
    uint32_t claim; /* 0: free; 1: being named; 2: named */
    uint32_t unused;
    uint64_t word;
    uint64_t opened, closed, probes, refused;
    char name[NAME_BYTES];
};

struct corral_breaker_table {
    uint64_t cap;
    struct shared slots[];
};

struct corral_breaker {
    struct shared *s; /* in the table, or own */
    struct shared own;
    char *name;
    unsigned failures;
    uint64_t step_min, step_max, hold;
    struct corral_fleet *fleet;
    unsigned asking; /* probes the fleet owes an answer on */
    bool dying;      /* freed while asking: the last answer frees it */
};

struct corral_breaker_wait {
    struct corral_breaker *b;
    uint64_t ticket;
    corral_breaker_cb *cb; /* NULL: cancelled */
    void *arg;
};

static const char *const state_names[] = {
    [CORRAL_BREAKER_CLOSED] = "closed",
    [CORRAL_BREAKER_OPEN] = "open",
    [CORRAL_BREAKER_HALF_OPEN] = "half_open",
};

const char *
corral_breaker_state_name(enum corral_breaker_state s)
{
    return (unsigned)s <= CORRAL_BREAKER_HALF_OPEN ? state_names[s] : "unknown";
}

/* ---- the word ---- */

#define EXP_SHIFT 2
#define FAILS_SHIFT 8
#define TIME_SHIFT 24
#define TIME_MASK ((UINT64_C(1) << 40) - 1)

static uint64_t
pack(enum corral_breaker_state st, unsigned exp, unsigned fails, uint64_t t)
{
    return (uint64_t)st | (uint64_t)(exp & 63) << EXP_SHIFT |
           (uint64_t)(fails & 0xffff) << FAILS_SHIFT |
           (t & TIME_MASK) << TIME_SHIFT;
}

static enum corral_breaker_state
state_of(uint64_t w)
{
    return (enum corral_breaker_state)(w & 3);
}

static unsigned
exp_of(uint64_t w)
{
    return (unsigned)(w >> EXP_SHIFT) & 63;
}

static unsigned
fails_of(uint64_t w)
{
    return (unsigned)(w >> FAILS_SHIFT) & 0xffff;
}

static uint64_t
time_of(uint64_t w)
{
    return w >> TIME_SHIFT;
}

static uint64_t
load(const struct shared *s)
{
    return __atomic_load_n(&s->word, __ATOMIC_ACQUIRE);
}

/* On failure *w is the word now. */
static bool
swap(struct shared *s, uint64_t *w, uint64_t nw)
{
    return __atomic_compare_exchange_n(&s->word, w, nw, false, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
}

static void
bump(uint64_t *counter)
{
    __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

/* ---- steps ---- */

static uint64_t
step_of(const struct corral_breaker *b, unsigned exp)
{
    uint64_t s = b->step_min;
    for (unsigned i = 0; i < exp && s < b->step_max; i++)
        s *= 2;
    return s < b->step_max ? s : b->step_max;
}

/* The step after exp's: doubled, until the longest. */
static unsigned
next_exp(const struct corral_breaker *b, unsigned exp)
{
    return step_of(b, exp) >= b->step_max || exp >= 63 ? exp : exp + 1;
}

/* The first step at least ms long. */
static unsigned
exp_for(const struct corral_breaker *b, uint64_t ms)
{
    unsigned e = 0;
    while (step_of(b, e) < ms && next_exp(b, e) != e)
        e++;
    return e;
}

/* When asking again can help, for a call refused on word w. */
static uint64_t
retry_in(const struct corral_breaker *b, uint64_t w, uint64_t now)
{
    uint64_t t = time_of(w);
    uint64_t left = t > now ? t - now : 1;
    /* A probe out says more before it lapses. */
    if (state_of(w) == CORRAL_BREAKER_HALF_OPEN && left > b->step_min)
        left = b->step_min;
    return left;
}

/* ---- the table ---- */

size_t
corral_breaker_table_size(unsigned cap)
{
    size_t n = sizeof(struct corral_breaker_table) +
               (size_t)cap * sizeof(struct shared);
    return (n + 63) & ~(size_t)63;
}

struct corral_breaker_table *
corral_breaker_table_init(void *mem, unsigned cap)
{
    struct corral_breaker_table *t = mem;
    t->cap = cap;
    return t;
}

static uint64_t
hash_name(const char *s)
{
    uint64_t h = 1469598103934665603u; /* FNV-1a: config names */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    return h;
}

/* The slot named name; with take, a free one named so if there is none.
 * Another worker may name slots at the same time: a slot is taken by a
 * compare-and-swap of its claim, and read only once named. */
static struct shared *
table_find(struct corral_breaker_table *t, const char *name, bool take)
{
    size_t len = strlen(name);
    if (t == NULL || t->cap == 0 || len == 0 || len >= NAME_BYTES)
        return NULL;
    uint64_t h = hash_name(name);
    for (uint64_t i = 0; i < t->cap; i++) {
        struct shared *s = &t->slots[(h + i) % t->cap];
        uint32_t c = __atomic_load_n(&s->claim, __ATOMIC_ACQUIRE);
        if (c == 0) {
            if (!take)
                return NULL;
            if (__atomic_compare_exchange_n(&s->claim, &c, 1, false,
                                            __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE)) {
                memcpy(s->name, name, len + 1);
                __atomic_store_n(&s->claim, 2, __ATOMIC_RELEASE);
                return s;
            }
        }
        /* Being named: a few instructions, unless its worker died there
         * (then it stays unnamed, and is passed by). */
        for (int k = 0; c == 1 && k < SPIN_MAX; k++) {
            sched_yield();
            c = __atomic_load_n(&s->claim, __ATOMIC_ACQUIRE);
        }
        if (c == 2 && strcmp(s->name, name) == 0)
            return s;
    }
    return NULL;
}

static void
stats_of(const struct shared *s, uint64_t now, struct corral_breaker_stats *out)
{
    uint64_t w = load(s);
    *out = (struct corral_breaker_stats){
        .state = state_of(w),
        .opened = __atomic_load_n(&s->opened, __ATOMIC_RELAXED),
        .closed = __atomic_load_n(&s->closed, __ATOMIC_RELAXED),
        .probes = __atomic_load_n(&s->probes, __ATOMIC_RELAXED),
        .refused = __atomic_load_n(&s->refused, __ATOMIC_RELAXED),
    };
    if (out->state == CORRAL_BREAKER_OPEN && time_of(w) > now)
        out->next_probe_ms = time_of(w) - now;
}

bool
corral_breaker_table_read(const struct corral_breaker_table *t,
                          const char *name, uint64_t now_ms,
                          struct corral_breaker_stats *out)
{
    const struct shared *s =
        table_find((struct corral_breaker_table *)t, name, false);
    if (s == NULL)
        return false;
    stats_of(s, now_ms, out);
    return true;
}

/* ---- transitions ---- */

/* Closes b (from any state): 'why' for the log, tell the fleet or not. */
static void
close_now(struct corral_breaker *b, const char *why, bool tell)
{
    uint64_t w = load(b->s);
    for (;;) {
        if (state_of(w) == CORRAL_BREAKER_CLOSED) {
            if (fails_of(w) == 0 || swap(b->s, &w, 0))
                return;
            continue;
        }
        if (swap(b->s, &w, pack(CORRAL_BREAKER_CLOSED, 0, 0, 0)))
            break;
    }
    bump(&b->s->closed);
    corral_log(CORRAL_LOG_NOTICE, "upstream %s: breaker closed (%s)", b->name,
               why);
    if (tell && b->fleet)
        corral_fleet_breaker_close(b->fleet, b->name);
}

static void
fail_now(struct corral_breaker *b, uint64_t probe, uint64_t now)
{
    uint64_t w = load(b->s);
    for (;;) {
        if (probe != 0 && w == probe) {
            unsigned e = next_exp(b, exp_of(w));
            uint64_t step = step_of(b, e);
            if (!swap(b->s, &w, pack(CORRAL_BREAKER_OPEN, e, 0, now + step)))
                continue;
            corral_log(CORRAL_LOG_NOTICE,
                       "upstream %s: the breaker's probe failed; the next "
                       "in %llu ms",
                       b->name, (unsigned long long)step);
            if (b->fleet)
                corral_fleet_breaker_open(b->fleet, b->name, step, false);
            return;
        }
        /* Open already: a call that went before it opened. */
        if (state_of(w) != CORRAL_BREAKER_CLOSED)
            return;
        unsigned f = fails_of(w) + 1;
        if (f < b->failures) {
            if (swap(b->s, &w, pack(CORRAL_BREAKER_CLOSED, 0, f, 0)))
                return;
            continue;
        }
        uint64_t step = step_of(b, 0);
        if (!swap(b->s, &w, pack(CORRAL_BREAKER_OPEN, 0, 0, now + step)))
            continue;
        bump(&b->s->opened);
        corral_log(CORRAL_LOG_WARNING,
                   "upstream %s: breaker open after %u failures in a row: "
                   "one probe per step, the first in %llu ms",
                   b->name, f, (unsigned long long)step);
        if (b->fleet)
            corral_fleet_breaker_open(b->fleet, b->name, step, true);
        return;
    }
}

/* The probe with this ticket is over without a verdict on the upstream:
 * the next may go after ms (0: at once), at the same step. */
static void
settle(struct corral_breaker *b, uint64_t probe, uint64_t ms, uint64_t now)
{
    uint64_t w = probe;
    swap(b->s, &w, pack(CORRAL_BREAKER_OPEN, exp_of(probe), 0, now + ms));
}

/* ---- one upstream's breaker ---- */

struct corral_breaker *
corral_breaker_new(struct corral_breaker_table *t,
                   const struct corral_breaker_options *o,
                   struct corral_fleet *fleet)
{
    struct corral_breaker *b = xcalloc(1, sizeof(*b));
    b->name = xstrndup(o->name, strlen(o->name));
    b->failures = o->failures > 0xffff ? 0xffff : o->failures;
    b->step_min = o->step_min_ms ? o->step_min_ms : 1000;
    b->step_max = o->step_max_ms > b->step_min ? o->step_max_ms : b->step_min;
    b->hold = o->hold_ms ? o->hold_ms : 1000;
    b->fleet = fleet;
    b->s = table_find(t, o->name, true);
    if (b->s == NULL)
        b->s = &b->own;
    /* A reload that turned it off: nothing reads it as open any more. */
    if (b->failures == 0)
        __atomic_store_n(&b->s->word, 0, __ATOMIC_RELEASE);
    return b;
}

static void
breaker_destroy(struct corral_breaker *b)
{
    free(b->name);
    free(b);
}

void
corral_breaker_free(struct corral_breaker *b)
{
    if (b == NULL)
        return;
    if (b->asking > 0) {
        b->dying = true;
        return;
    }
    breaker_destroy(b);
}

const char *
corral_breaker_name(const struct corral_breaker *b)
{
    return b->name;
}

/* The fleet's word on this server's probe. */
static void
fleet_probe_cb(int verdict, uint64_t ms, uint64_t step, void *arg)
{
    struct corral_breaker_wait *w = arg;
    struct corral_breaker *b = w->b;
    uint64_t now = corral_now_ms(), ticket = w->ticket;
    corral_breaker_cb *cb = b->dying ? NULL : w->cb;
    void *cb_arg = w->arg;
    int error = 0;
    free(w);
    b->asking--;
    if (verdict == 0) {
        /* A step, or another instance's probe, runs in the fleet. */
        uint64_t nw =
            pack(CORRAL_BREAKER_OPEN, step ? exp_for(b, step) : exp_of(ticket),
                 0, now + ms);
        uint64_t cur = ticket;
        swap(b->s, &cur, nw);
        error = -EBUSY;
    } else if (cb == NULL || verdict == -ECANCELED) {
        settle(b, ticket, 0, now);
        error = -EBUSY;
        ms = b->step_min;
    } else {
        /* Granted, or Redis could not tell: this server decides alone. */
        bump(&b->s->probes);
    }
    if (b->dying && b->asking == 0) {
        breaker_destroy(b);
        return;
    }
    if (cb)
        cb(error, error ? ms : 0, error ? 0 : ticket, cb_arg);
}

int
corral_breaker_acquire(struct corral_breaker *b, uint64_t now_ms,
                       corral_breaker_cb *cb, void *arg,
                       struct corral_breaker_wait **out, uint64_t *probe,
                       uint64_t *retry_after_ms)
{
    *probe = 0;
    if (b == NULL || b->failures == 0)
        return 0;
    uint64_t w = load(b->s), nw;
    for (;;) {
        if (state_of(w) == CORRAL_BREAKER_CLOSED)
            return 0;
        if (now_ms < time_of(w)) {
            bump(&b->s->refused);
            *retry_after_ms = retry_in(b, w, now_ms);
            return -EBUSY;
        }
        /* The next probe is due (or the last lapsed): this call. */
        nw = pack(CORRAL_BREAKER_HALF_OPEN, exp_of(w), 0, now_ms + b->hold);
        if (swap(b->s, &w, nw))
            break;
    }
    if (b->fleet != NULL && !corral_fleet_struggling(b->fleet)) {
        struct corral_breaker_wait *bw = xcalloc(1, sizeof(*bw));
        bw->b = b;
        bw->ticket = nw;
        bw->cb = cb;
        bw->arg = arg;
        b->asking++;
        *out = bw;
        corral_fleet_probe(b->fleet, b->name, step_of(b, exp_of(nw)), b->hold,
                           fleet_probe_cb, bw);
        return -EINPROGRESS;
    }
    bump(&b->s->probes);
    *probe = nw;
    return 0;
}

void
corral_breaker_cancel(struct corral_breaker_wait *w)
{
    if (w != NULL)
        w->cb = NULL;
}

int
corral_breaker_check(struct corral_breaker *b, uint64_t probe, uint64_t now_ms,
                     uint64_t *retry_after_ms)
{
    if (b == NULL || b->failures == 0 || probe != 0)
        return 0;
    uint64_t w = load(b->s);
    if (state_of(w) == CORRAL_BREAKER_CLOSED)
        return 0;
    bump(&b->s->refused);
    *retry_after_ms = retry_in(b, w, now_ms);
    return -EBUSY;
}

void
corral_breaker_report(struct corral_breaker *b, uint64_t probe,
                      enum corral_breaker_outcome outcome, uint64_t now_ms)
{
    if (b == NULL || b->failures == 0)
        return;
    switch (outcome) {
    case CORRAL_BREAKER_SUCCESS:
        close_now(b, probe ? "its probe succeeded" : "a call succeeded", true);
        break;
    case CORRAL_BREAKER_FAILURE:
        fail_now(b, probe, now_ms);
        break;
    case CORRAL_BREAKER_NEUTRAL:
        /* The upstream asked for a pause: the next probe a step later. */
        if (probe != 0 && load(b->s) == probe) {
            uint64_t step = step_of(b, exp_of(probe));
            settle(b, probe, step, now_ms);
            if (b->fleet)
                corral_fleet_breaker_open(b->fleet, b->name, step, false);
        }
        break;
    case CORRAL_BREAKER_UNTRIED:
        if (probe != 0)
            settle(b, probe, 0, now_ms);
        break;
    }
}

void
corral_breaker_heard(struct corral_breaker *b, uint64_t ms, uint64_t step_ms,
                     uint64_t now_ms)
{
    if (b == NULL || b->failures == 0)
        return;
    if (ms == 0) {
        close_now(b, "the fleet's probe succeeded", false);
        return;
    }
    unsigned e = exp_for(b, step_ms);
    uint64_t w = load(b->s);
    for (;;) {
        uint64_t t = now_ms + ms;
        switch (state_of(w)) {
        case CORRAL_BREAKER_CLOSED:
            if (!swap(b->s, &w, pack(CORRAL_BREAKER_OPEN, e, 0, t)))
                continue;
            bump(&b->s->opened);
            corral_log(CORRAL_LOG_WARNING,
                       "upstream %s: breaker open (another instance's), "
                       "the next probe in %llu ms",
                       b->name, (unsigned long long)ms);
            return;
        case CORRAL_BREAKER_OPEN:
            /* A longer step than this one knows (a probe elsewhere
             * failed); its own echo, or an older word, changes nothing. */
            if (e <= exp_of(w))
                return;
            if (time_of(w) > t)
                t = time_of(w);
            if (!swap(b->s, &w, pack(CORRAL_BREAKER_OPEN, e, 0, t)))
                continue;
            return;
        default: /* this server's probe is out: its answer decides */
            return;
        }
    }
}

void
corral_breaker_stats(const struct corral_breaker *b, uint64_t now_ms,
                     struct corral_breaker_stats *out)
{
    stats_of(b->s, now_ms, out);
}
