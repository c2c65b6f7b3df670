/* main.c — the corral command: parse arguments, load and check the config,
 * run one reactor until SIGTERM or SIGINT, then drain and exit. */
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "gateway.h"

/* CORRAL_VERSION comes from meson's project version. */

static void
usage(FILE *out)
{
    fputs("usage: corral -c FILE        run the gateway\n"
          "       corral --check -c FILE  validate FILE and exit\n"
          "       corral --version\n"
          "       corral -h | --help\n",
          out);
}

/* Says which valid settings this build accepts but does not act on yet,
 * so nobody believes in a rate limit or an L2 that is not there. */
static void
warn_unserved(const struct corral_config *cfg)
{
    const char *what[8];
    size_t n = 0;
    if (cfg->l2)
        what[n++] = "fleet-wide single flight over l2 (each instance fills "
                    "on its own; L2 hits are served)";
    if (cfg->workers > 1)
        what[n++] = "workers (running one reactor)";
    if (cfg->admin)
        what[n++] = "admin";
    if (cfg->access_log)
        what[n++] = "access_log";
    bool rate = false, stale = false, aggregate = false;
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        rate |= cfg->upstreams[i].rate_count > 0;
    for (size_t i = 0; i < cfg->n_routes; i++) {
        stale |=
            cfg->routes[i].strategy.swr_ms || cfg->routes[i].strategy.sie_ms;
        aggregate |= cfg->routes[i].upstream == NULL;
    }
    if (rate)
        what[n++] = "upstream rate";
    if (stale)
        what[n++] = "stale_while_revalidate / stale_if_error";
    if (aggregate)
        what[n++] = "aggregate routes (answered 501)";
    for (size_t i = 0; i < n; i++)
        fprintf(stderr,
                "corral: warning: %s is not served by this build "
                "yet\n",
                what[i]);
}

struct run {
    struct event_base *base;
    struct corral_gateway *gateway;
    int signals;
};

static void
drained(void *arg)
{
    struct run *run = arg;
    event_base_loopexit(run->base, NULL);
}

/* Until live reload exists, SIGHUP (which would kill the process) only
 * says so: the running config stays. */
static void
on_hup(evutil_socket_t sig, short what, void *arg)
{
    fprintf(stderr, "corral: SIGHUP: reload is not supported yet; still "
                    "serving the config loaded at start\n");
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct run *run = arg;
    if (run->signals++ > 0) {
        event_base_loopbreak(run->base); /* second signal: now */
        return;
    }
    fprintf(stderr, "corral: %s, draining\n", strsignal((int)sig));
    corral_gateway_drain(run->gateway, drained, run);
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 'k'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int check = 0, opt;
    while ((opt = getopt_long(argc, argv, "c:hV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'k':
            check = 1;
            break;
        case 'V':
            printf("corral %s\n", CORRAL_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (path == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }

    char err[1024];
    struct corral_config *cfg = corral_config_load(path, err, sizeof(err));
    if (cfg == NULL) {
        fprintf(stderr, "corral: %s\n", err);
        return 1;
    }
    if (check) {
        printf("%s: ok (%zu upstreams, %zu routes)\n", path, cfg->n_upstreams,
               cfg->n_routes);
        corral_config_free(cfg);
        return 0;
    }
    warn_unserved(cfg);

    signal(SIGPIPE, SIG_IGN);
    struct run run = {.base = event_base_new()};
    if (run.base == NULL) {
        fprintf(stderr, "corral: cannot create the event loop\n");
        corral_config_free(cfg);
        return 1;
    }
    run.gateway = corral_gateway_new(run.base, cfg, err, sizeof(err));
    if (run.gateway == NULL) {
        fprintf(stderr, "corral: %s\n", err);
        event_base_free(run.base);
        corral_config_free(cfg);
        return 1;
    }
    fprintf(stderr, "corral: listening on %s:%u\n", cfg->listen.host,
            corral_gateway_port(run.gateway));
    struct event *term = evsignal_new(run.base, SIGTERM, on_signal, &run);
    struct event *intr = evsignal_new(run.base, SIGINT, on_signal, &run);
    struct event *hup = evsignal_new(run.base, SIGHUP, on_hup, &run);
    if (term == NULL || intr == NULL || hup == NULL ||
        event_add(term, NULL) != 0 || event_add(intr, NULL) != 0 ||
        event_add(hup, NULL) != 0) {
        fprintf(stderr, "corral: cannot watch signals\n");
        return 1;
    }
    event_base_dispatch(run.base);
    event_free(term);
    event_free(intr);
    event_free(hup);
    corral_gateway_free(run.gateway);
    event_base_free(run.base);
    corral_config_free(cfg);
    return 0;
}
