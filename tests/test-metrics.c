/* test-metrics.c — the workers' shared counters: route and upstream slots
 * kept by name (the same name, the same slot and counts; a free slot
 * otherwise, then one no config uses), read by name from any block, and
 * the room a server gets. */
#include <stdbool.h>
#include <stdio.h>

#include "metrics.h"
#include "testlib.h"

static void
test_room(void)
{
    struct corral_metrics *m = corral_metrics_new(2, 6, 1);
    CHECK(m != NULL);
    CHECK_EQ_INT(corral_metrics_workers(m), 2);
    CHECK_EQ_INT(corral_metrics_cap_routes(m), 1024);
    CHECK_EQ_INT(corral_metrics_cap_upstreams(m), 256);
    corral_metrics_free(m);
    m = corral_metrics_new(1, 3000, 200);
    CHECK(m != NULL);
    CHECK_EQ_INT(corral_metrics_cap_routes(m), 6000);
    CHECK_EQ_INT(corral_metrics_cap_upstreams(m), 400);
    corral_metrics_free(m);
}

/* The index of the slot of b named name, or -1. */
static int
find_route(struct corral_metrics *m, struct corral_metrics_block *b,
           const char *name, struct corral_metrics_route *out)
{
    for (unsigned i = 0; i < corral_metrics_cap_routes(m); i++)
        if (corral_metrics_route_read(m, b, i, out) &&
            strcmp(out->name.text, name) == 0)
            return (int)i;
    return -1;
}

static void
test_slots_by_name(void)
{
    struct corral_metrics *m = corral_metrics_new(2, 1, 1);
    struct corral_metrics_block *b = corral_metrics_block(m, 0);
    struct corral_metrics_route got;
    struct corral_metrics_route *a = corral_metrics_route_take(m, b, "/a");
    struct corral_metrics_route *x = corral_metrics_route_take(m, b, "/x/{id}");
    CHECK(a != NULL && x != NULL && a != x);
    a->results[M_HIT] = 3;
    /* A reload: the new config takes /a again before the old lets go. */
    CHECK(corral_metrics_route_take(m, b, "/a") == a);
    corral_metrics_route_release(a);
    CHECK_EQ_INT(a->results[M_HIT], 3);
    CHECK(find_route(m, b, "/a", &got) >= 0);
    CHECK_EQ_INT(got.results[M_HIT], 3);
    /* Released by every config: still read, counts kept. */
    corral_metrics_route_release(a);
    CHECK(find_route(m, b, "/a", &got) >= 0);
    CHECK_EQ_INT(got.results[M_HIT], 3);
    CHECK(corral_metrics_route_take(m, b, "/a") == a);
    CHECK_EQ_INT(a->results[M_HIT], 3);
    /* Another worker's block is its own. */
    struct corral_metrics_block *b1 = corral_metrics_block(m, 1);
    CHECK(find_route(m, b1, "/a", &got) < 0);
    struct corral_metrics_route *a1 = corral_metrics_route_take(m, b1, "/a");
    CHECK(a1 != NULL && a1 != a);
    CHECK_EQ_INT(a1->results[M_HIT], 0);
    /* Upstreams alike, apart from routes. */
    struct corral_metrics_upstream *u =
        corral_metrics_upstream_take(m, b, "/a");
    CHECK(u != NULL && (void *)u != (void *)a);
    corral_metrics_upstream_call(u, 200, 7);
    struct corral_metrics_upstream ugot;
    bool found = false;
    for (unsigned i = 0; i < corral_metrics_cap_upstreams(m); i++)
        if (corral_metrics_upstream_read(m, b, i, &ugot))
            found |= strcmp(ugot.name.text, "/a") == 0 && ugot.calls[2] == 1;
    CHECK(found);
    /* A name too long has no slot; a block cleared has none named. */
    char longname[CORRAL_METRICS_NAME_MAX + 1];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    CHECK(corral_metrics_route_take(m, b, longname) == NULL);
    longname[CORRAL_METRICS_NAME_MAX - 1] = '\0';
    CHECK(corral_metrics_route_take(m, b, longname) != NULL);
    corral_metrics_block_clear(m, b);
    CHECK(find_route(m, b, "/a", &got) < 0);
    CHECK(find_route(m, b, "/x/{id}", &got) < 0);
    corral_metrics_free(m);
}

static void
test_full_room(void)
{
    struct corral_metrics *m = corral_metrics_new(1, 1, 1);
    struct corral_metrics_block *b = corral_metrics_block(m, 0);
    unsigned cap = corral_metrics_cap_routes(m);
    char name[32];
    struct corral_metrics_route *first = NULL, *r;
    for (unsigned i = 0; i < cap; i++) {
        snprintf(name, sizeof(name), "/r%u", i);
        r = corral_metrics_route_take(m, b, name);
        CHECK(r != NULL);
        r->results[M_STORED] = 1;
        if (i == 0)
            first = r;
    }
    CHECK(corral_metrics_route_take(m, b, "/more") == NULL);
    /* A slot no config uses is taken for a new name, counts zeroed. */
    corral_metrics_route_release(first);
    r = corral_metrics_route_take(m, b, "/more");
    CHECK(r == first);
    CHECK_EQ_INT(r->results[M_STORED], 0);
    struct corral_metrics_route got;
    CHECK(find_route(m, b, "/r0", &got) < 0);
    CHECK(find_route(m, b, "/more", &got) >= 0);
    corral_metrics_free(m);
}

int
main(void)
{
    RUN(test_room);
    RUN(test_slots_by_name);
    RUN(test_full_room);
    printf("%lu checks\n", testlib_checks);
    return 0;
}
