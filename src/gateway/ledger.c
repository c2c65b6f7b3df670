/* ledger.c — the upstreams' shared accounts (see ledger.h). The mapping
 * holds a head (the lock that names accounts), the accounts, then each
 * account's two rings of call times: every call, and cold calls. A ring
 * is sorted oldest first: times are taken under the account's lock and
 * never go back. Naming happens at start and reload only; everything
 * else takes one account's lock for a few comparisons. */
#include "ledger.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "xalloc.h"

enum { ALL, COLD, RINGS };

struct ring {
    uint32_t head; /* the newest batch */
    uint32_t n;    /* batches held, at most the account's cap */
    uint32_t fill; /* calls in the newest batch, at most batch */
};

struct slot {
    pthread_mutex_t lock;
    uint32_t users; /* open handles, in every process (the head's lock) */
    uint32_t count; /* the rate's calls per window; 0: none */
    uint32_t batch; /* calls per remembered time */
    uint32_t cap;   /* batches per ring: count / batch */
    uint64_t paused_until;
    struct ring ring[RINGS];
    char name[CORRAL_LEDGER_NAME_MAX]; /* "": free */
};

struct head {
    pthread_mutex_t lock; /* naming */
};

struct corral_ledger {
    unsigned cap;
    struct head *head;
    struct slot *slots;
    uint64_t *times; /* [cap][RINGS][CORRAL_LEDGER_RING] */
    void *mem;
    size_t len;
};

struct corral_account {
    struct corral_ledger *l;
    struct slot *s;
    uint64_t *times; /* its RINGS rings */
};

/* A worker that died holding it left the account as it was mid-call: a
 * ring that is a call short or long, which costs at most one call of
 * precision, never the lock. */
static void
lock(pthread_mutex_t *m)
{
    int rc = pthread_mutex_lock(m);
    if (rc == EOWNERDEAD)
        pthread_mutex_consistent(m);
    else if (rc != 0)
        abort();
}

static void
unlock(pthread_mutex_t *m)
{
    pthread_mutex_unlock(m);
}

static int
lock_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    if (pthread_mutexattr_init(&a) != 0)
        return -1;
    int rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (rc == 0)
        rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (rc == 0)
        rc = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return rc == 0 ? 0 : -1;
}

struct corral_ledger *
corral_ledger_new(size_t n)
{
    struct corral_ledger *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->cap = n * 2 > 256 ? (unsigned)(n * 2) : 256;
    size_t head = (sizeof(struct head) + 63) & ~(size_t)63;
    size_t slots = ((size_t)l->cap * sizeof(struct slot) + 63) & ~(size_t)63;
    size_t times =
        (size_t)l->cap * RINGS * CORRAL_LEDGER_RING * sizeof(uint64_t);
    l->len = head + slots + times;
    void *p = mmap(NULL, l->len, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        free(l);
        return NULL;
    }
    l->mem = p; /* zero-filled */
    l->head = p;
    l->slots = (struct slot *)(void *)((char *)p + head);
    l->times = (uint64_t *)(void *)((char *)p + head + slots);
    int rc = lock_init(&l->head->lock);
    for (unsigned i = 0; rc == 0 && i < l->cap; i++)
        rc = lock_init(&l->slots[i].lock);
    if (rc != 0) {
        munmap(p, l->len);
        free(l);
        return NULL;
    }
    return l;
}

void
corral_ledger_free(struct corral_ledger *l)
{
    if (l == NULL)
        return;
    munmap(l->mem, l->len);
    free(l);
}

/* ---- naming ---- */

static void
slot_reset(struct slot *s, const char *name, size_t len, unsigned count)
{
    memset(s->name, 0, sizeof(s->name));
    memcpy(s->name, name, len);
    s->count = count;
    s->batch = count > CORRAL_LEDGER_RING
                   ? (count + CORRAL_LEDGER_RING - 1) / CORRAL_LEDGER_RING
                   : 1;
    s->cap = count / s->batch;
    s->paused_until = 0;
    memset(s->ring, 0, sizeof(s->ring));
}

struct corral_account *
corral_account_open(struct corral_ledger *l, const char *name, unsigned count)
{
    size_t len = strlen(name);
    if (l == NULL || len == 0 || len >= CORRAL_LEDGER_NAME_MAX)
        return NULL;
    struct slot *found = NULL, *free_slot = NULL, *unused = NULL;
    uint64_t pause = 0;
    lock(&l->head->lock);
    for (unsigned i = 0; i < l->cap; i++) {
        struct slot *s = &l->slots[i];
        if (s->name[0] == '\0') {
            if (free_slot == NULL)
                free_slot = s;
        } else if (strcmp(s->name, name) == 0) {
            if (s->count == count && found == NULL)
                found = s;
            lock(&s->lock);
            if (s->paused_until > pause)
                pause = s->paused_until;
            unlock(&s->lock);
        } else if (s->users == 0 && unused == NULL) {
            unused = s;
        }
    }
    struct slot *s = found ? found : free_slot ? free_slot : unused;
    if (s != NULL && s != found) {
        lock(&s->lock);
        slot_reset(s, name, len, count);
        s->paused_until = pause;
        unlock(&s->lock);
        s->users = 0;
    }
    if (s != NULL)
        s->users++;
    unlock(&l->head->lock);
    if (s == NULL)
        return NULL;
    struct corral_account *a = xcalloc(1, sizeof(*a));
    a->s = s;
    a->times = l->times + (size_t)(s - l->slots) * RINGS * CORRAL_LEDGER_RING;
    a->l = l;
    return a;
}

void
corral_account_close(struct corral_account *a)
{
    if (a == NULL)
        return;
    lock(&a->l->head->lock);
    if (a->s->users > 0)
        a->s->users--;
    unlock(&a->l->head->lock);
    free(a);
}

/* ---- rings ---- */

static uint64_t *
times_of(const struct corral_account *a, int which)
{
    return a->times + (size_t)which * CORRAL_LEDGER_RING;
}

/* The time of the i-th batch held, oldest first. */
static uint64_t
at(const struct slot *s, const struct ring *r, const uint64_t *t, uint32_t i)
{
    return t[(r->head + s->cap + 1 - r->n + i) % s->cap];
}

/* How many of the oldest batches left the window of w ms by now. */
static uint32_t
expired(const struct slot *s, const struct ring *r, const uint64_t *t,
        uint64_t w, uint64_t now)
{
    uint32_t lo = 0, hi = r->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (at(s, r, t, mid) + w <= now)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ms until one more call fits in the window of w ms (0: it fits now). */
static uint64_t
ring_wait(const struct slot *s, const struct ring *r, const uint64_t *t,
          uint64_t w, uint64_t now)
{
    if (r->n < s->cap)
        return 0;
    if (r->fill < s->batch && t[r->head] + w > now)
        return 0; /* it joins the newest batch */
    uint64_t free_at = at(s, r, t, 0) + w;
    return free_at > now ? free_at - now : 0;
}

static void
ring_take(const struct slot *s, struct ring *r, uint64_t *t, uint64_t w,
          uint64_t now)
{
    if (r->n > 0) {
        if (t[r->head] > now)
            now = t[r->head]; /* never back: the ring stays sorted */
        if (r->fill < s->batch && t[r->head] + w > now) {
            t[r->head] = now;
            r->fill++;
            return;
        }
        r->head = (r->head + 1) % s->cap;
    } else {
        r->head = 0;
    }
    t[r->head] = now;
    r->fill = 1;
    if (r->n < s->cap)
        r->n++;
}

/* When the call with ahead others before it fits in the window of w ms,
 * if nobody else takes one: the newest batch's room at once, then a batch
 * each time one is free: the free ones now, the held ones as they leave,
 * and each again w after it is taken. */
static uint64_t
ring_slot_at(const struct slot *s, const struct ring *r, const uint64_t *t,
             uint64_t w, uint64_t now, unsigned ahead)
{
    uint32_t gone = expired(s, r, t, w, now);
    uint32_t live = r->n - gone, idle = s->cap - live;
    uint64_t joins = live > 0 ? s->batch - r->fill : 0;
    if (ahead < joins)
        return now;
    uint64_t m = (ahead - joins) / s->batch;
    uint64_t i = m % s->cap, round = w * (m / s->cap);
    if (i < idle)
        return now + round;
    return at(s, r, t, gone + (uint32_t)(i - idle)) + w + round;
}

/* ---- calls ---- */

static bool
two_windows(const struct corral_account_rule *r, bool cold)
{
    return cold && r->cold_window_ms > r->window_ms;
}

int
corral_account_take(struct corral_account *a,
                    const struct corral_account_rule *r, bool cold,
                    uint64_t now, bool dry, uint64_t *wait_ms)
{
    struct slot *s = a->s;
    int rc = 0;
    *wait_ms = 0;
    lock(&s->lock);
    if (s->paused_until > now) {
        *wait_ms = s->paused_until - now;
        rc = -EBUSY;
    } else if (s->count > 0) {
        uint64_t *all = times_of(a, ALL), *cl = times_of(a, COLD);
        uint64_t w = ring_wait(s, &s->ring[ALL], all, r->window_ms, now);
        if (two_windows(r, cold)) {
            uint64_t wc =
                ring_wait(s, &s->ring[COLD], cl, r->cold_window_ms, now);
            if (wc > w)
                w = wc;
        }
        if (w > 0) {
            *wait_ms = w;
            rc = 1;
        } else if (!dry) {
            ring_take(s, &s->ring[ALL], all, r->window_ms, now);
            /* Counted whatever this caller's rule: another worker's may
             * hold cold calls to a longer window (a reload under way). */
            if (cold)
                ring_take(s, &s->ring[COLD], cl,
                          two_windows(r, cold) ? r->cold_window_ms
                                               : r->window_ms,
                          now);
        }
    }
    unlock(&s->lock);
    return rc;
}

uint64_t
corral_account_slot_at(struct corral_account *a,
                       const struct corral_account_rule *r, bool cold,
                       unsigned ahead, uint64_t now)
{
    struct slot *s = a->s;
    lock(&s->lock);
    uint64_t t = s->paused_until > now ? s->paused_until : now;
    if (s->count > 0) {
        uint64_t x = ring_slot_at(s, &s->ring[ALL], times_of(a, ALL),
                                  r->window_ms, now, ahead);
        if (x > t)
            t = x;
        if (two_windows(r, cold)) {
            x = ring_slot_at(s, &s->ring[COLD], times_of(a, COLD),
                             r->cold_window_ms, now, ahead);
            if (x > t)
                t = x;
        }
    }
    unlock(&s->lock);
    return t;
}

void
corral_account_pause(struct corral_account *a, uint64_t until)
{
    lock(&a->s->lock);
    if (a->s->paused_until < until)
        a->s->paused_until = until;
    unlock(&a->s->lock);
}

uint64_t
corral_account_paused_until(struct corral_account *a)
{
    lock(&a->s->lock);
    uint64_t until = a->s->paused_until;
    unlock(&a->s->lock);
    return until;
}
