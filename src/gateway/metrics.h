/* metrics.h — the gateway's numbers, one block per worker, in memory
 * shared by every worker of a server (mapped before they are forked), so
 * whichever worker answers a scrape answers for the whole server. A
 * worker writes only its own block: the counters it bumps as it serves,
 * and a copy of its modules' plain stats (cache, L2, front end, upstream
 * budgets) taken every second and at each scrape. Nothing here knows an
 * exposition format: admin.c renders the blocks. */
#ifndef CORRAL_METRICS_H
#define CORRAL_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "budget.h"
#include "corral/cache.h"
#include "corral/redis_tier.h"
#include "server.h"

/* How a request was answered. */
enum corral_metrics_result {
    M_HIT,         /* fresh from L1 */
    M_L2_HIT,      /* fresh from L2 */
    M_STORED,      /* this request's fill stored it */
    M_COLLAPSED,   /* waited on another request's fill */
    M_STALE,       /* stale while a refresh runs */
    M_STALE_ERROR, /* stale because the upstream failed */
    M_NEGATIVE,    /* a cached upstream 4xx */
    M_ERROR,       /* an error answer (4xx for bad requests, 5xx) */
    M_RESULTS
};
const char *corral_metrics_result_name(enum corral_metrics_result r);

/* Upstream answers by class: 1xx..5xx, and calls with no answer. */
enum { M_CLASSES = 6 };

/* Upper bounds of the upstream latency histogram, ms. */
#define CORRAL_METRICS_BUCKETS                                                 \
    {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}
enum { M_BUCKETS = 11 };

struct corral_metrics_route {
    uint64_t results[M_RESULTS];
};

struct corral_metrics_upstream {
    uint64_t calls[M_CLASSES]; /* [0]: no answer; [k]: status k00..k99 */
    uint64_t le[M_BUCKETS];    /* calls that took at most the bound */
    uint64_t count, sum_ms;    /* every call, and their total time */
    struct corral_budget_stats budget;
};

/* One worker's block. routes and upstreams follow it. */
struct corral_metrics_block {
    int64_t pid;       /* 0: no worker uses it */
    int64_t started_s; /* wall clock, s */
    int64_t updated_ms;
    int64_t l2_enabled;
    /* Requests answered with a value they did not fill themselves: from
     * L1 or L2 (a negative answer too), collapsed onto another's fill, or
     * stale while a refresh runs. Counted as they are answered. */
    uint64_t saved;
    struct corral_stats cache;
    struct corral_redis_stats l2;
    struct corral_server_stats server;
    uint32_t nroutes, nupstreams; /* in use, at most the capacity */
    /* struct corral_metrics_route[cap_routes], then
     * struct corral_metrics_upstream[cap_upstreams] */
};

struct corral_metrics; /* opaque: the shared blocks */

/* Blocks for nworkers workers of a config with nroutes routes and
 * nupstreams upstreams, in shared anonymous memory, with room for twice
 * as many (at least 64 routes and 16 upstreams) so a reload can add some.
 * NULL when mmap fails. */
struct corral_metrics *corral_metrics_new(unsigned nworkers, size_t nroutes,
                                          size_t nupstreams);
void corral_metrics_free(struct corral_metrics *m);

unsigned corral_metrics_workers(const struct corral_metrics *m);
struct corral_metrics_block *corral_metrics_block(struct corral_metrics *m,
                                                  unsigned worker);
/* The block's routes and upstreams, cap_* long. */
struct corral_metrics_route *
corral_metrics_routes(const struct corral_metrics *m,
                      struct corral_metrics_block *b);
struct corral_metrics_upstream *
corral_metrics_upstreams(const struct corral_metrics *m,
                         struct corral_metrics_block *b);
unsigned corral_metrics_cap_routes(const struct corral_metrics *m);
unsigned corral_metrics_cap_upstreams(const struct corral_metrics *m);

/* Route generations, shared by every worker: a purge of a whole route
 * bumps its slot, and the slot's number is folded into the route's keys
 * (see gateway.c). CORRAL_METRICS_GENERATIONS slots; a route's is a hash
 * of its path, so two routes may share one (a purge of either then
 * purges both: more misses, never a wrong answer). */
#define CORRAL_METRICS_GENERATIONS 1024
uint32_t *corral_metrics_generations(struct corral_metrics *m);
unsigned corral_metrics_generation_slot(const char *route_path);

/* Counts one upstream call that took ms and answered status (0: none). */
void corral_metrics_upstream_call(struct corral_metrics_upstream *u,
                                  int status, uint64_t ms);

#endif
