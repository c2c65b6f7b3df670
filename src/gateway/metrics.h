/* metrics.h — the gateway's numbers, one block per worker, in memory
 * shared by every worker of a server (mapped before they are forked), so
 * whichever worker answers a scrape answers for the whole server; the
 * same mapping holds the state the workers share (route generations,
 * upstream breakers) and the supervisor's count of restarts. A worker
 * writes only its own block: the counters it bumps as it serves, and a
 * copy of its modules' plain stats (cache, L2, front end, upstream
 * budgets) taken every second and at each scrape.
 * Nothing here knows an exposition format: admin.c renders the blocks. */
#ifndef CORRAL_METRICS_H
#define CORRAL_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "breaker.h"
#include "budget.h"
#include "corral/cache.h"
#include "corral/redis_tier.h"
#include "encoding.h"
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
    M_UNCACHEABLE, /* this request's fill got what must not be stored */
    M_ERROR,       /* an error answer (4xx for bad requests, 5xx) */
    M_RESULTS
};
const char *corral_metrics_result_name(enum corral_metrics_result r);

/* Upstream answers by class: 1xx..5xx, and calls with no answer. */
enum { M_CLASSES = 6 };

/* Upper bounds of the upstream latency histogram, ms. */
#define CORRAL_METRICS_BUCKETS                                                 \
    {                                                                          \
        5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000                  \
    }
enum { M_BUCKETS = 11 };

/* Route and upstream counters are kept under their names (route path,
 * upstream name), not their places in a config: a reload that reorders,
 * removes or adds some leaves every counter where it was. A name holds
 * its slot until the server restarts, or until a slot is needed and no
 * config of its worker uses that name any more. Longer names have no
 * slot. */
#define CORRAL_METRICS_NAME_MAX 256 /* bytes, the NUL included */

/* A slot's name, which other workers read while its worker may change
 * it: seq is odd while the worker writes the name (and zeroes the
 * counters), so a reader copies the slot and keeps the copy only when
 * seq was the same even number before and after. */
struct corral_metrics_name {
    uint32_t seq;
    uint32_t users;                     /* configs of its worker using it */
    char text[CORRAL_METRICS_NAME_MAX]; /* "": a free slot */
};

struct corral_metrics_route {
    struct corral_metrics_name name; /* the route's path */
    uint64_t results[M_RESULTS];
};

struct corral_metrics_upstream {
    struct corral_metrics_name name; /* the upstream's name */
    uint64_t calls[M_CLASSES];       /* [0]: no answer; [k]: status k00..k99 */
    uint64_t le[M_BUCKETS];          /* calls that took at most the bound */
    uint64_t count, sum_ms;          /* every call, and their total time */
    /* What its budget counted (queued: waiting now), as of the last
     * snapshot, and what it showed when its budget was last replaced (a
     * reload that changes the rate, or drops and adds the upstream):
     * budget = budget_before + the current budget's counters. */
    struct corral_budget_stats budget, budget_before;
};

/* One worker's block. Its routes and upstreams follow it. */
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
    struct corral_redis_stats l2;       /* the connection */
    struct corral_redis_tier_stats l2t; /* the tier on it */
    struct corral_server_stats server;
    struct corral_encoding_stats encoding; /* the fills' compression */
    /* Answers with a stored value (200 and 304), by the coding of the
     * representation sent. Counted as they are answered. */
    uint64_t answers_coded[CORRAL_CODINGS];
    /* Forms of values read from L2 found not to decode to their body when
     * a client first asked for them (corral_compute_form_ok()): each
     * counted once per client it was refused to. */
    uint64_t bad_forms;
    /* struct corral_metrics_route[cap_routes], then
     * struct corral_metrics_upstream[cap_upstreams] */
};

struct corral_metrics; /* opaque: the shared blocks */

/* Blocks for nworkers workers of a config with nroutes routes and
 * nupstreams upstreams, in shared anonymous memory, with room for twice
 * as many and at least 1024 routes and 256 upstreams, so reloads can add
 * some. NULL when mmap fails. */
struct corral_metrics *corral_metrics_new(unsigned nworkers, size_t nroutes,
                                          size_t nupstreams);
void corral_metrics_free(struct corral_metrics *m);

unsigned corral_metrics_workers(const struct corral_metrics *m);
struct corral_metrics_block *corral_metrics_block(struct corral_metrics *m,
                                                  unsigned worker);
/* Zeroes b, its routes and upstreams (a worker that starts). */
void corral_metrics_block_clear(struct corral_metrics *m,
                                struct corral_metrics_block *b);
unsigned corral_metrics_cap_routes(const struct corral_metrics *m);
unsigned corral_metrics_cap_upstreams(const struct corral_metrics *m);

/* The slot of b (the caller's own block) for the route path, with one
 * more user: the slot kept under that path, else a free one, else one no
 * config uses any more (whose counts go). NULL when there is none, or
 * the path is too long. Borrowed; valid until released. */
struct corral_metrics_route *
corral_metrics_route_take(struct corral_metrics *m,
                          struct corral_metrics_block *b, const char *path);
/* One user less; the slot keeps its name and counts. NULL: no-op. */
void corral_metrics_route_release(struct corral_metrics_route *r);
/* The same for an upstream's slot. */
struct corral_metrics_upstream *
corral_metrics_upstream_take(struct corral_metrics *m,
                             struct corral_metrics_block *b, const char *name);
void corral_metrics_upstream_release(struct corral_metrics_upstream *u);

/* Copies slot i of b (any worker's) to out. False when the slot is free,
 * or its worker kept renaming it while it was read. */
bool corral_metrics_route_read(const struct corral_metrics *m,
                               const struct corral_metrics_block *b, unsigned i,
                               struct corral_metrics_route *out);
bool corral_metrics_upstream_read(const struct corral_metrics *m,
                                  const struct corral_metrics_block *b,
                                  unsigned i,
                                  struct corral_metrics_upstream *out);

/* The slots of the route generations (generations.h), shared by every
 * worker: CORRAL_METRICS_GENERATIONS of them, zeroed at first. */
#define CORRAL_METRICS_GENERATIONS 1024
uint32_t *corral_metrics_generations(struct corral_metrics *m);

/* Workers the supervisor restarted after they died, since it started:
 * it adds, any worker's scrape reads. */
void corral_metrics_restart_add(struct corral_metrics *m);
uint64_t corral_metrics_restarts(const struct corral_metrics *m);

/* The upstreams' breakers (breaker.h), shared by every worker: one per
 * upstream name, room for as many as there are upstream slots. */
struct corral_breaker_table *corral_metrics_breakers(struct corral_metrics *m);

/* Counts one upstream call that took ms and answered status (0: none). */
void corral_metrics_upstream_call(struct corral_metrics_upstream *u, int status,
                                  uint64_t ms);

#endif
