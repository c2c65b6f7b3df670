/* aggregate.h — an aggregate route's compute: every member resolved through
 * the cache in parallel, each under its own key, strategy, freshness and
 * single flight (a member also asked for directly shares that fill), and
 * their stored bodies, already validated JSON, spliced without parsing
 * into {"member": <body>, ...}. The assembled answer is itself a value
 * under the aggregate's key, with its own single flight: many concurrent
 * requests cost one assembly and one fill per member.
 *
 * A member that fails is null and listed under "errors" ({"name":
 * {"status": N, "error": "..."}}); the answer is 200 unless every member
 * failed, when the fill fails with -ENODATA and the message is the whole
 * JSON body to answer with 502. A stale member is used; its name goes in
 * a "Corral-Stale-Members" header. The assembled value lives no longer
 * than the earliest member's freshness (at least 1 s, so a stale member's
 * refresh is picked up a second later), than a failed member's next try
 * (its backoff, the retry_after_ms of its error; a cached 4xx: until that
 * expires), and than the aggregate's own strategy: a member refreshed
 * early leaves the dashboard stale no longer than its old value would
 * have lived, and one that recovers shows in the next answer. When every
 * member failed, the error carries the soonest of their next tries. */
#ifndef CORRAL_AGGREGATE_H
#define CORRAL_AGGREGATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "corral/cache.h"

struct corral_config_member;
struct corral_config_route;

/* Waits on member's value for an aggregate: the gateway matches its path
 * and joins (or starts) the member route's fill. As
 * corral_route_compute_get(): 0 with the wait in *out, or a negative errno
 * (-EINVAL: the path does not fit its route) and cb never fires. */
typedef int corral_member_get_fn(void *ctx,
                                 const struct corral_config_member *member,
                                 corral_result_cb *cb, void *arg,
                                 struct corral_waiter **out);

/* Per aggregate route, fixed while its config is served. */
struct corral_aggregate_compute {
    const struct corral_config_route *route;
    struct corral_cache *cache;
    corral_member_get_fn *get;
    void *get_ctx;
    unsigned *jobs;      /* fills that hold these, from start to end (counted
                          * here), or NULL */
    uint64_t timeout_ms; /* the slowest member's, plus room */
};

/* Waits on the assembled value of key (the aggregate's, generation folded
 * in), starting an assembly if none runs. As corral_route_compute_get(): 0,
 * or -ESHUTDOWN. */
int corral_aggregate_get(struct corral_cache *c,
                         const struct corral_aggregate_compute *af,
                         const char *key, size_t keylen, corral_result_cb *cb,
                         void *arg, struct corral_waiter **out);

/* Starts a background assembly of key (XFetch chose it; with refetch,
 * the admin's refresh). As corral_refresh() / corral_refetch(). */
int corral_aggregate_refresh(struct corral_cache *c,
                             const struct corral_aggregate_compute *af,
                             const char *key, size_t keylen, bool refetch);

#endif
