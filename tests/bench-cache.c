/* bench-cache.c — micro-benchmark of the L1 hot path at 100k keys: hit
 * lookups per second through corral_cache_peek(), inserts per second
 * through corral_set_with_strategy(), and the allocator's real bytes per
 * entry beyond key and body. Run with `meson test --benchmark`. */
#include <event2/event.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "corral/cache.h"
#include "testlib.h"

#define KEYS 100000
#define LOOKUPS 10000000
#define BODY 1024

int
main(void)
{
    struct event_base *base = event_base_new();
    struct corral_cache_options o = {.max_bytes = 1u << 30};
    struct corral_cache *c = corral_cache_new(base, &o);
    struct corral_strategy s = {.kind = CORRAL_STRATEGY_LONG};
    static char body[BODY];
    memset(body, 'x', sizeof(body));
    static char keys[KEYS][24];
    for (int i = 0; i < KEYS; i++)
        snprintf(keys[i], sizeof(keys[i]), "route:/api/p/%d", i);

    size_t heap0 = mallinfo2().uordblks;
    size_t payload = 0;
    double t0 = mono_s();
    for (int i = 0; i < KEYS; i++) {
        size_t kl = strlen(keys[i]);
        struct corral_value *v =
            corral_value_new(keys[i], kl, body, sizeof(body), NULL, 0);
        corral_set_with_strategy(c, v, &s);
        corral_value_unref(v);
        payload += kl + sizeof(body);
    }
    double t1 = mono_s();
    size_t heap1 = mallinfo2().uordblks;

    unsigned long found = 0;
    unsigned x = 12345;
    double t2 = mono_s();
    for (int i = 0; i < LOOKUPS; i++) {
        x = x * 1103515245u + 12345u;
        const char *k = keys[(x >> 8) % KEYS];
        found += corral_cache_peek(c, k, strlen(k)) != NULL;
    }
    double t3 = mono_s();

    printf("inserts: %.0f/s (%d keys, %d B bodies)\n", KEYS / (t1 - t0), KEYS,
           BODY);
    printf("hit lookups: %.0f/s (%.1f ns each, %lu found)\n",
           LOOKUPS / (t3 - t2), (t3 - t2) * 1e9 / LOOKUPS, found);
    printf("heap bytes per entry beyond key and body: %.1f\n",
           (double)(heap1 - heap0 - payload) / KEYS);
    corral_cache_free(c);
    event_base_free(base);
    return found == LOOKUPS ? 0 : 1;
}
