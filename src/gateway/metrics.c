/* metrics.c — the shared blocks of the gateway's numbers (see metrics.h). */
#include "metrics.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define GEN_BYTES (CORRAL_METRICS_GENERATIONS * sizeof(uint32_t))

struct corral_metrics {
    unsigned nworkers, cap_routes, cap_upstreams;
    size_t block_size; /* rounded to 64 bytes: no false sharing */
    char *mem;
    size_t len;
};

static const char *const result_names[M_RESULTS] = {
    [M_HIT] = "hit",
    [M_L2_HIT] = "l2_hit",
    [M_STORED] = "stored",
    [M_COLLAPSED] = "collapsed",
    [M_STALE] = "stale",
    [M_STALE_ERROR] = "stale_error",
    [M_NEGATIVE] = "negative",
    [M_ERROR] = "error",
};

const char *
corral_metrics_result_name(enum corral_metrics_result r)
{
    return (unsigned)r < M_RESULTS ? result_names[r] : "unknown";
}

/* Twice n, at least least: room for what a reload adds. */
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
    m->cap_routes = room(nroutes, 64);
    m->cap_upstreams = room(nupstreams, 16);
    size_t cap_routes = m->cap_routes, cap_upstreams = m->cap_upstreams;
    size_t size = sizeof(struct corral_metrics_block) +
                  cap_routes * sizeof(struct corral_metrics_route) +
                  cap_upstreams * sizeof(struct corral_metrics_upstream);
    m->block_size = (size + 63) & ~(size_t)63;
    /* The generations first, then one block per worker. */
    m->len = GEN_BYTES + m->block_size * m->nworkers;
    void *p = mmap(NULL, m->len, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        free(m);
        return NULL;
    }
    m->mem = p; /* zero-filled */
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
    return (struct corral_metrics_block *)(m->mem + GEN_BYTES +
                                           m->block_size * worker);
}

uint32_t *
corral_metrics_generations(struct corral_metrics *m)
{
    return (uint32_t *)(void *)m->mem;
}

unsigned
corral_metrics_generation_slot(const char *route_path)
{
    uint32_t h = 2166136261u; /* FNV-1a: config strings, not client input */
    for (; *route_path; route_path++)
        h = (h ^ (unsigned char)*route_path) * 16777619u;
    return h % CORRAL_METRICS_GENERATIONS;
}

struct corral_metrics_route *
corral_metrics_routes(const struct corral_metrics *m,
                      struct corral_metrics_block *b)
{
    (void)m;
    return (struct corral_metrics_route *)(b + 1);
}

struct corral_metrics_upstream *
corral_metrics_upstreams(const struct corral_metrics *m,
                         struct corral_metrics_block *b)
{
    return (struct corral_metrics_upstream *)(corral_metrics_routes(m, b) +
                                              m->cap_routes);
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
