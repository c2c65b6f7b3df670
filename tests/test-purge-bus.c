/* test-purge-bus.c — the workers' purge bus, three workers on one loop:
 * a key sent by one reaches each of the others once and never its
 * sender, keys stay whole, and an end for a worker the bus has not is
 * refused. */
#include <event2/event.h>
#include <stdbool.h>
#include <string.h>

#include "purge_bus.h"
#include "testlib.h"

enum { N = 3 };

struct heard {
    unsigned n;
    char last[64];
    size_t last_len;
};

static void
heard(const char *key, size_t len, void *arg)
{
    struct heard *h = arg;
    h->n++;
    if (len < sizeof(h->last)) {
        memcpy(h->last, key, len);
        h->last_len = len;
    }
}

static void
test_bus(void)
{
    struct event_base *base = event_base_new();
    int *fds = corral_purge_bus_pairs(N);
    CHECK(fds != NULL);
    struct heard h[N] = {{0}};
    struct corral_purge_bus *bus[N];
    for (unsigned i = 0; i < N; i++) {
        bus[i] = corral_purge_bus_new(base, fds, N, i, heard, &h[i]);
        CHECK(bus[i] != NULL);
    }
    CHECK(corral_purge_bus_new(base, fds, N, N, heard, NULL) == NULL);

    corral_purge_bus_send(bus[1], "price:btc", 9);
    settle(base);
    CHECK_EQ_INT(h[0].n, 1);
    CHECK_EQ_INT(h[1].n, 0); /* its own purge is already done */
    CHECK_EQ_INT(h[2].n, 1);
    CHECK_EQ_INT(h[0].last_len, 9);
    CHECK(memcmp(h[2].last, "price:btc", 9) == 0);

    /* Two keys in a row arrive as two. */
    corral_purge_bus_send(bus[0], "a", 1);
    corral_purge_bus_send(bus[0], "bb", 2);
    settle(base);
    CHECK_EQ_INT(h[0].n, 1);
    CHECK_EQ_INT(h[1].n, 2);
    CHECK_EQ_INT(h[2].n, 3);
    CHECK_EQ_INT(h[2].last_len, 2);
    CHECK(memcmp(h[2].last, "bb", 2) == 0);

    for (unsigned i = 0; i < N; i++)
        corral_purge_bus_free(bus[i]);
    corral_purge_bus_free(NULL);
    corral_purge_bus_pairs_free(fds, N);
    corral_purge_bus_pairs_free(NULL, 0);
    event_base_free(base);
}

int
main(void)
{
    RUN(test_bus);
    return 0;
}
