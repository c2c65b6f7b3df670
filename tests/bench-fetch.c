/* bench-fetch.c — what one upstream call costs the fetch module: CPU time
 * (user + system) and wall time per GET against a real HTTP server on
 * loopback, with C calls in flight at once over keep-alive connections.
 * Usage: bench-fetch PORT [N [C]]; the server should answer GET /bench.json
 * with a small body (tools/bench starts nginx for it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <event2/event.h>

#include "fetch.h"
#include "testlib.h"

static struct event_base *base;
static struct corral_fetch_upstream *up;
static unsigned long left, done, failed, want;

static double
cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void
got(const struct corral_fetch_result *r, void *arg)
{
    (void)arg;
    done++;
    if (r->error != 0 || r->status != 200) {
        if (failed++ < 3)
            fprintf(stderr, "bench-fetch: %s: %s\n",
                    corral_fetch_error_name(r->error), r->message);
    }
    if (left > 0) {
        left--;
        if (corral_fetch_get(up, "/bench.json", got, NULL) == NULL)
            failed++;
    }
    if (done == want)
        event_base_loopbreak(base);
}

int
main(int argc, char **argv)
{
    struct corral_fetch_options o = {0};
    unsigned long n, c, i;
    double t0, c0, wall, cpu;
    char err[256];

    if (argc < 2) {
        fprintf(stderr, "usage: bench-fetch PORT [N [C]]\n");
        return 2;
    }
    n = argc > 2 ? strtoul(argv[2], NULL, 10) : 20000;
    c = argc > 3 ? strtoul(argv[3], NULL, 10) : 4;
    base = event_base_new();
    if (base == NULL)
        return 1;
    o.scheme = "http";
    o.host = "127.0.0.1";
    o.port = (uint16_t)atoi(argv[1]);
    o.timeout_ms = 5000;
    o.max_connections = (unsigned)c;
    o.max_body = 1 << 20;
    up = corral_fetch_upstream_new(base, &o, err, sizeof(err));
    if (up == NULL) {
        fprintf(stderr, "bench-fetch: %s\n", err);
        return 1;
    }
    /* Warm the pool, then measure. */
    left = 0;
    want = c;
    for (i = 0; i < c; i++)
        corral_fetch_get(up, "/bench.json", got, NULL);
    event_base_dispatch(base);
    done = failed = 0;
    left = n - c;
    want = n;
    t0 = mono_s();
    c0 = cpu_s();
    for (i = 0; i < c; i++)
        corral_fetch_get(up, "/bench.json", got, NULL);
    event_base_dispatch(base);
    wall = mono_s() - t0;
    cpu = cpu_s() - c0;
    printf("%lu calls, %lu failed, %lu in flight: %.1f us CPU and %.1f us "
           "wall per call\n",
           done, failed, c, cpu / (double)done * 1e6,
           wall / (double)done * 1e6);
    corral_fetch_upstream_free(up);
    event_base_free(base);
    return failed != 0;
}
