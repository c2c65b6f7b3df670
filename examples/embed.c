/* embed.c — libcorral in any libevent program: 1,000 callers ask for one
 * key at once, a slow compute (200 ms, standing in for an upstream API)
 * runs once, and every caller gets the same value.
 * Build: cc embed.c $(pkg-config --cflags --libs libcorral) */
#include <event2/event.h>
#include <stdio.h>
#include <string.h>

#include "corral/cache.h"

#define CALLERS 1000

static int compute_calls, answers, same_value;
static struct corral_value *first;
static struct event *slow_timer;

static void
slow_done(evutil_socket_t fd, short what, void *arg)
{
    struct corral_fill *fill = arg;
    const char *key = "btc_price";
    const char *body = "{\"bitcoin\":{\"usd\":97000}}";
    corral_fill_done(fill,
                     corral_value_new(key, strlen(key), body, strlen(body),
                                      "application/json", 0));
}

/* The expensive part: an upstream call, here a 200 ms timer. */
static void
fetch_price(struct corral_fill *fill, const char *key, size_t keylen, void *arg)
{
    struct event_base *base = arg;
    compute_calls++;
    slow_timer = evtimer_new(base, slow_done, fill);
    struct timeval delay = {0, 200 * 1000};
    evtimer_add(slow_timer, &delay);
}

static void
on_answer(const struct corral_result *res, void *arg)
{
    struct event_base *base = arg;
    if (res->error == 0) {
        if (first == NULL)
            first = corral_value_ref(res->value);
        same_value += res->value == first;
    }
    if (++answers == CALLERS)
        event_base_loopexit(base, NULL);
}

int
main(void)
{
    struct event_base *base = event_base_new();
    struct corral_cache_options opts = {.max_bytes = 16 << 20};
    struct corral_cache *cache = corral_cache_new(base, &opts);
    struct corral_strategy realtime = {.kind = CORRAL_STRATEGY_REALTIME};

    struct corral_compute compute = {.fn = fetch_price, .arg = base};

    for (int i = 0; i < CALLERS; i++)
        corral_get_or_compute(cache, "btc_price", 9, &realtime, 0, &compute,
                              on_answer, base);
    event_base_dispatch(base);

    printf("callers: %d, answers: %d, same value: %d\n", CALLERS, answers,
           same_value);
    printf("body: %.*s\n", (int)corral_value_len(first),
           corral_value_body(first));
    printf("compute calls: %d\n", compute_calls);
    corral_value_unref(first);
    corral_cache_free(cache);
    event_free(slow_timer);
    event_base_free(base);
    return compute_calls == 1 && same_value == CALLERS ? 0 : 1;
}
