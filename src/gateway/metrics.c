/* metrics.c — the shared blocks of the gateway's numbers (see metrics.h). */
#include "metrics.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define GEN_BYTES (CORRAL_METRICS_GENERATIONS * sizeof(uint32_t))
/* The supervisor's own counters, after the generations: a line of their
 * own. */
#define SERVER_BYTES 64

struct corral_metrics {
    unsigned nworkers, cap_routes, cap_upstreams;
    size_t block_size; /* rounded to 64 bytes: no false sharing */
    size_t breaker_bytes;
    struct corral_breaker_table *breakers;
    char *mem;
    size_t len;
};

static const char *const result_names[M_RESULTS] = {
    [M_HIT] = "hit",           [M_L2_HIT] = "l2_hit",
    [M_STORED] = "stored",     [M_COLLAPSED] = "collapsed",
    [M_STALE] = "stale",       [M_STALE_ERROR] = "stale_error",
    [M_NEGATIVE] = "negative", [M_UNCACHEABLE] = "uncacheable",
    [M_ERROR] = "error",
};

const char *
corral_metrics_result_name(enum corral_metrics_result r)
{
    return (unsigned)r < M_RESULTS ? result_names[r] : "unknown";
}

/* Twice n, at least least: room for what reloads add. */
static unsigned
room(size_t n, unsigned least)
{
    return n * 2 > least ? (unsigned)(n * 2) : least;
}

struct corral_metrics *
corral_metrics_new(unsigned nworkers, size_t nroutes, size_t nupstreams)
{
    struct corral_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->nworkers = nworkers ? nworkers : 1;
    m->cap_routes = room(nroutes, 1024);
    m->cap_upstreams = room(nupstreams, 256);
    size_t cap_routes = m->cap_routes, cap_upstreams = m->cap_upstreams;
    size_t size = sizeof(struct corral_metrics_block) +
                  cap_routes * sizeof(struct corral_metrics_route) +
                  cap_upstreams * sizeof(struct corral_metrics_upstream);
    m->block_size = (size + 63) & ~(size_t)63;
    m->breaker_bytes = corral_breaker_table_size(m->cap_upstreams);
    /* The generations first, the supervisor's counters, the breakers,
     * then one block per worker. */
    m->len = GEN_BYTES + SERVER_BYTES + m->breaker_bytes +
             m->block_size * m->nworkers;
    void *p = mmap(NULL, m->len, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        free(m);
        return NULL;
    }
    m->mem = p; /* zero-filled */
    m->breakers = corral_breaker_table_init(m->mem + GEN_BYTES + SERVER_BYTES,
                                            m->cap_upstreams);
    return m;
}

void
corral_metrics_free(struct corral_metrics *m)
{
    if (m == NULL)
        return;
    munmap(m->mem, m->len);
    free(m);
}

unsigned
corral_metrics_workers(const struct corral_metrics *m)
{
    return m->nworkers;
}

struct corral_metrics_block *
corral_metrics_block(struct corral_metrics *m, unsigned worker)
{
    return (struct corral_metrics_block *)(m->mem + GEN_BYTES + SERVER_BYTES +
                                           m->breaker_bytes +
                                           m->block_size * worker);
}

uint32_t *
corral_metrics_generations(struct corral_metrics *m)
{
    return (uint32_t *)(void *)m->mem;
}

/* The count of restarts, in the supervisor's line: one writer, read by
 * any worker's scrape. */
static uint64_t *
restarts(const struct corral_metrics *m)
{
    return (uint64_t *)(void *)(m->mem + GEN_BYTES);
}

void
corral_metrics_restart_add(struct corral_metrics *m)
{
    __atomic_add_fetch(restarts(m), 1, __ATOMIC_RELAXED);
}

uint64_t
corral_metrics_restarts(const struct corral_metrics *m)
{
    return __atomic_load_n(restarts(m), __ATOMIC_RELAXED);
}

struct corral_breaker_table *
corral_metrics_breakers(struct corral_metrics *m)
{
    return m->breakers;
}

unsigned
corral_metrics_cap_routes(const struct corral_metrics *m)
{
    return m->cap_routes;
}

unsigned
corral_metrics_cap_upstreams(const struct corral_metrics *m)
{
    return m->cap_upstreams;
}

void
corral_metrics_block_clear(struct corral_metrics *m,
                           struct corral_metrics_block *b)
{
    memset(b, 0, m->block_size);
}

/* ---- named slots ---- */

/* A block's slots of one kind: routes or upstreams. Each starts with its
 * struct corral_metrics_name. */
struct table {
    char *base;
    size_t stride;
    unsigned cap;
};

static struct table
routes_of(const struct corral_metrics *m, const struct corral_metrics_block *b)
{
    return (struct table){(char *)(b + 1), sizeof(struct corral_metrics_route),
                          m->cap_routes};
}

static struct table
upstreams_of(const struct corral_metrics *m,
             const struct corral_metrics_block *b)
{
    struct table r = routes_of(m, b);
    return (struct table){r.base + r.stride * r.cap,
                          sizeof(struct corral_metrics_upstream),
                          m->cap_upstreams};
}

static struct corral_metrics_name *
slot_at(struct table t, unsigned i)
{
    return (struct corral_metrics_name *)(void *)(t.base + t.stride * i);
}

/* Names slot n (counters zeroed), odd seq around it for readers. */
static void
slot_rename(struct corral_metrics_name *n, size_t stride, const char *name,
            size_t len)
{
    uint32_t seq = n->seq;
    __atomic_store_n(&n->seq, seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memset(n + 1, 0, stride - sizeof(*n));
    memset(n->text, 0, sizeof(n->text));
    memcpy(n->text, name, len);
    __atomic_store_n(&n->seq, seq + 2, __ATOMIC_RELEASE);
}

static struct corral_metrics_name *
slot_take(struct table t, const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len >= CORRAL_METRICS_NAME_MAX)
        return NULL;
    struct corral_metrics_name *free_slot = NULL, *unused = NULL;
    for (unsigned i = 0; i < t.cap; i++) {
        struct corral_metrics_name *n = slot_at(t, i);
        if (n->text[0] == '\0') {
            if (free_slot == NULL)
                free_slot = n;
        } else if (strcmp(n->text, name) == 0) {
            n->users++;
            return n;
        } else if (n->users == 0 && unused == NULL) {
            unused = n;
        }
    }
    struct corral_metrics_name *n = free_slot ? free_slot : unused;
    if (n == NULL)
        return NULL;
    slot_rename(n, t.stride, name, len);
    n->users = 1;
    return n;
}

static void
slot_release(struct corral_metrics_name *n)
{
    if (n != NULL && n->users > 0)
        n->users--;
}

/* Copies slot i to out, unless it is free or kept changing: a few
 * tries, since a worker renames slots only at a reload. */
static bool
slot_read(struct table t, unsigned i, void *out)
{
    const struct corral_metrics_name *n = slot_at(t, i);
    struct corral_metrics_name *o = out;
    for (int tries = 0; tries < 4; tries++) {
        uint32_t seq = __atomic_load_n(&n->seq, __ATOMIC_ACQUIRE);
        if (seq & 1)
            continue;
        if (__atomic_load_n(&n->text[0], __ATOMIC_RELAXED) == '\0') {
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (__atomic_load_n(&n->seq, __ATOMIC_RELAXED) == seq)
                return false; /* free: not worth a copy */
            continue;
        }
        memcpy(out, n, t.stride);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&n->seq, __ATOMIC_RELAXED) != seq)
            continue;
        o->text[sizeof(o->text) - 1] = '\0';
        return o->text[0] != '\0';
    }
    return false;
}

struct corral_metrics_route *
corral_metrics_route_take(struct corral_metrics *m,
                          struct corral_metrics_block *b, const char *path)
{
    return (struct corral_metrics_route *)slot_take(routes_of(m, b), path);
}

void
corral_metrics_route_release(struct corral_metrics_route *r)
{
    slot_release(r ? &r->name : NULL);
}

struct corral_metrics_upstream *
corral_metrics_upstream_take(struct corral_metrics *m,
                             struct corral_metrics_block *b, const char *name)
{
    return (struct corral_metrics_upstream *)slot_take(upstreams_of(m, b),
                                                       name);
}

void
corral_metrics_upstream_release(struct corral_metrics_upstream *u)
{
    slot_release(u ? &u->name : NULL);
}

bool
corral_metrics_route_read(const struct corral_metrics *m,
                          const struct corral_metrics_block *b, unsigned i,
                          struct corral_metrics_route *out)
{
    return i < m->cap_routes && slot_read(routes_of(m, b), i, out);
}

bool
corral_metrics_upstream_read(const struct corral_metrics *m,
                             const struct corral_metrics_block *b, unsigned i,
                             struct corral_metrics_upstream *out)
{
    return i < m->cap_upstreams && slot_read(upstreams_of(m, b), i, out);
}

void
corral_metrics_upstream_call(struct corral_metrics_upstream *u, int status,
                             uint64_t ms)
{
    static const uint64_t bounds[M_BUCKETS] = CORRAL_METRICS_BUCKETS;
    int cls = status >= 100 && status <= 599 ? status / 100 : 0;
    u->calls[cls]++;
    for (int i = 0; i < M_BUCKETS; i++)
        u->le[i] += ms <= bounds[i];
    u->count++;
    u->sum_ms += ms;
}
