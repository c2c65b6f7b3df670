/* test-generations.c — route generations: the slot of a path, folding a
 * generation into a key (and a key that no longer fits), raising (only
 * up, bounded), a purge without a fleet (bumped here, answered once from
 * the loop, never from inside the call) and through a fake fleet that
 * confirms or fails. */
#include <errno.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

#include "generations.h"
#include "testlib.h"

enum { N_SLOTS = 64 };

struct answer {
    unsigned calls;
    int error;
    int64_t gen;
};

static void
purged(int error, int64_t gen, void *arg)
{
    struct answer *a = arg;
    a->calls++;
    a->error = error;
    a->gen = gen;
}

static void
test_slot(void)
{
    uint32_t slots[N_SLOTS] = {0};
    struct corral_generations *g = corral_generations_new(NULL, slots, N_SLOTS);
    unsigned s = corral_generations_slot(g, "/api/price/{coin}");
    CHECK(s < N_SLOTS);
    CHECK_EQ_INT(corral_generations_slot(g, "/api/price/{coin}"), s);
    /* FNV-1a of the path: the same in every process and instance. */
    CHECK_EQ_INT(corral_generations_slot(g, ""), 2166136261u % N_SLOTS);
    corral_generations_free(g);
    corral_generations_free(NULL);
}

static void
test_fold(void)
{
    uint32_t slots[N_SLOTS] = {0};
    struct corral_generations *g = corral_generations_new(NULL, slots, N_SLOTS);
    unsigned s = corral_generations_slot(g, "/r");
    char key[16] = "price:btc";
    size_t len = 9;
    /* Generation 0: the key as the route built it. */
    CHECK_EQ_INT(corral_generations_fold(g, s, key, &len, sizeof(key)), 0);
    CHECK_EQ_INT(len, 9);
    corral_generations_raise(g, "/r", 42);
    CHECK_EQ_INT(corral_generations_fold(g, s, key, &len, sizeof(key)), 0);
    CHECK_EQ_INT(len, 13);
    CHECK(memcmp(key, "~42~price:btc", 13) == 0);
    /* Another 4 bytes would not fit in 16: the key stays as it was. */
    CHECK_EQ_INT(corral_generations_fold(g, s, key, &len, sizeof(key)),
                 -EMSGSIZE);
    CHECK_EQ_INT(len, 13);
    CHECK(memcmp(key, "~42~price:btc", 13) == 0);
    corral_generations_free(g);
}

static void
test_raise(void)
{
    uint32_t slots[N_SLOTS] = {0};
    struct corral_generations *g = corral_generations_new(NULL, slots, N_SLOTS);
    CHECK_EQ_INT(corral_generations_current(g, "/r"), 0);
    corral_generations_raise(g, "/r", 5);
    CHECK_EQ_INT(corral_generations_current(g, "/r"), 5);
    corral_generations_raise(g, "/r", 3); /* only up */
    CHECK_EQ_INT(corral_generations_current(g, "/r"), 5);
    corral_generations_raise(g, "/r", (uint64_t)UINT32_MAX + 1); /* ignored */
    CHECK_EQ_INT(corral_generations_current(g, "/r"), 5);
    /* The slots are the caller's memory: another worker sees them. */
    CHECK_EQ_INT(slots[corral_generations_slot(g, "/r")], 5);
    corral_generations_free(g);
}

static void
test_purge_here(void)
{
    struct event_base *base = event_base_new();
    uint32_t slots[N_SLOTS] = {0};
    struct corral_generations *g = corral_generations_new(base, slots, N_SLOTS);
    struct answer a = {0};
    corral_generations_purge(g, "/r", purged, &a);
    CHECK_EQ_INT(a.calls, 0); /* from the loop, not from the call */
    settle(base);
    CHECK_EQ_INT(a.calls, 1);
    CHECK_EQ_INT(a.error, 0);
    CHECK_EQ_INT(a.gen, 1);
    CHECK_EQ_INT(corral_generations_current(g, "/r"), 1);
    corral_generations_free(g);
    event_base_free(base);
}

/* A fake fleet: holds the last raise until the test answers it. */
struct fleet {
    unsigned sends;
    uint64_t here;
    char path[32];
    corral_generations_sent_cb *cb;
    void *arg;
};

static void
fleet_send(void *ctx, const char *path, uint64_t here,
           corral_generations_sent_cb *cb, void *arg)
{
    struct fleet *f = ctx;
    f->sends++;
    f->here = here;
    snprintf(f->path, sizeof(f->path), "%s", path);
    f->cb = cb;
    f->arg = arg;
}

static void
test_purge_fleet(void)
{
    uint32_t slots[N_SLOTS] = {0};
    struct corral_generations *g = corral_generations_new(NULL, slots, N_SLOTS);
    struct fleet f = {0};
    corral_generations_use_fleet(g, fleet_send, &f);
    corral_generations_raise(g, "/r", 7);

    /* Confirmed: the fleet's number wins, here too. */
    struct answer a = {0};
    corral_generations_purge(g, "/r", purged, &a);
    CHECK_EQ_INT(f.sends, 1);
    CHECK_EQ_INT(f.here, 7);
    CHECK_EQ_STR(f.path, "/r");
    CHECK_EQ_INT(a.calls, 0);
    f.cb(0, 12, f.arg);
    CHECK_EQ_INT(a.calls, 1);
    CHECK_EQ_INT(a.error, 0);
    CHECK_EQ_INT(a.gen, 12);
    CHECK_EQ_INT(corral_generations_current(g, "/r"), 12);

    /* Not confirmed: bumped here all the same, and the error said. */
    struct answer b = {0};
    corral_generations_purge(g, "/r", purged, &b);
    CHECK_EQ_INT(f.sends, 2);
    f.cb(-EIO, 0, f.arg);
    CHECK_EQ_INT(b.calls, 1);
    CHECK_EQ_INT(b.error, -EIO);
    CHECK_EQ_INT(b.gen, 13);
    CHECK_EQ_INT(corral_generations_current(g, "/r"), 13);
    corral_generations_free(g);
}

int
main(void)
{
    RUN(test_slot);
    RUN(test_fold);
    RUN(test_raise);
    RUN(test_purge_here);
    RUN(test_purge_fleet);
    return 0;
}
