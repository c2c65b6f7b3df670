/* reactor.c — one reactor process (see reactor.h): signals as loop events,
 * a reload that keeps the old config when the new one is bad, and a drain
 * bounded by drain_timeout. */
#include "reactor.h"

#include <event2/event.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "config.h"
#include "gateway.h"
#include "log.h"
#include "timeutil.h"

#define DRAIN_GRACE_MS 1000 /* to write the 503s of an expired drain */

struct run {
    struct event_base *base;
    const struct corral_config *cfg;
    struct corral_gateway *gateway;
    struct corral_admin *admin;
    struct event *drain_timer;
    const char *config_path; /* read again on SIGHUP */
    int signals;
    bool expired; /* drain_timeout passed; the grace runs */
};

static void
drained(void *arg)
{
    struct run *run = arg;
    event_base_loopexit(run->base, NULL);
}

/* SIGHUP: read and check the config again; serve it if it is good, else
 * keep serving the one we have and say why. */
static void
on_hup(evutil_socket_t sig, short what, void *arg)
{
    struct run *run = arg;
    char err[1024];
    if (run->signals > 0)
        return; /* draining */
    struct corral_config *cfg =
        corral_config_load(run->config_path, err, sizeof(err));
    if (cfg == NULL) {
        corral_log(CORRAL_LOG_ERROR, "reload: %s; still serving the old config",
                   err);
        return;
    }
    if (corral_gateway_reload(run->gateway, cfg, err, sizeof(err)) < 0) {
        corral_log(CORRAL_LOG_ERROR, "reload: %s; still serving the old config",
                   err);
        corral_config_free(cfg);
        return;
    }
    run->cfg = cfg;
    corral_log(CORRAL_LOG_NOTICE,
               "reload: serving %s (%zu upstreams, %zu routes)",
               run->config_path, cfg->n_upstreams, cfg->n_routes);
}

/* Clients still waiting are told (503, Retry-After) rather than dropped;
 * those answers get a moment to be written before everything closes. */
static void
drain_expired(evutil_socket_t fd, short what, void *arg)
{
    struct run *run = arg;
    if (run->expired) {
        event_base_loopbreak(run->base);
        return;
    }
    run->expired = true;
    corral_log(CORRAL_LOG_WARNING,
               "drain_timeout passed; answering what is left 503");
    corral_gateway_drain_expire(run->gateway);
    struct timeval tv = corral_ms_to_tv(DRAIN_GRACE_MS);
    if (evtimer_add(run->drain_timer, &tv) != 0)
        abort(); /* the policy of xalloc.h */
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct run *run = arg;
    if (run->signals++ > 0) {
        event_base_loopbreak(run->base); /* second signal: now */
        return;
    }
    corral_log(CORRAL_LOG_NOTICE, "%s, draining (at most %llu ms)",
               strsignal((int)sig),
               (unsigned long long)run->cfg->drain_timeout_ms);
    /* Clients get drain_timeout to be answered. The admin stays until
     * the end, so health checks see "draining" rather than a refusal. */
    corral_gateway_drain(run->gateway, drained, run);
    struct timeval tv = corral_ms_to_tv(run->cfg->drain_timeout_ms);
    run->drain_timer = evtimer_new(run->base, drain_expired, run);
    if (run->drain_timer == NULL || evtimer_add(run->drain_timer, &tv) != 0)
        abort(); /* the policy of xalloc.h */
}

/* SIGUSR1: logrotate moved the access log away. */
static void
on_usr1(evutil_socket_t sig, short what, void *arg)
{
    struct run *run = arg;
    char err[300];
    if (corral_gateway_reopen_log(run->gateway, err, sizeof(err)) < 0)
        corral_log(CORRAL_LOG_ERROR, "%s; still writing the old file", err);
}

int
corral_reactor_run(const struct corral_config *cfg,
                   const struct corral_reactor_env *env)
{
    char err[1024];
    struct run run = {
        .base = event_base_new(), .cfg = cfg, .config_path = env->config_path};
    if (run.base == NULL) {
        corral_log(CORRAL_LOG_ERROR, "cannot create the event loop");
        return 1;
    }
    struct corral_gateway_options go = {
        .listen_fd = env->listen_fd,
        .metrics = env->metrics,
        .worker = env->worker,
        .bus_fds = env->bus_fds,
        .n_bus = env->n_bus,
    };
    run.gateway = corral_gateway_new(run.base, cfg, &go, err, sizeof(err));
    if (run.gateway == NULL) {
        corral_log(CORRAL_LOG_ERROR, "%s", err);
        event_base_free(run.base);
        return 1;
    }
    corral_log(CORRAL_LOG_NOTICE, "listening on %s:%u", cfg->listen.host,
               corral_gateway_port(run.gateway));
    if (cfg->admin) {
        run.admin = corral_admin_new(run.base, run.gateway, env->admin_fd, err,
                                     sizeof(err));
        if (run.admin == NULL) {
            corral_log(CORRAL_LOG_ERROR, "%s", err);
            corral_gateway_free(run.gateway);
            event_base_free(run.base);
            return 1;
        }
        corral_log(CORRAL_LOG_NOTICE, "admin on %s:%u", cfg->admin->listen.host,
                   corral_admin_port(run.admin));
    }
    struct event *term = evsignal_new(run.base, SIGTERM, on_signal, &run);
    struct event *intr = evsignal_new(run.base, SIGINT, on_signal, &run);
    struct event *hup = evsignal_new(run.base, SIGHUP, on_hup, &run);
    struct event *usr1 = evsignal_new(run.base, SIGUSR1, on_usr1, &run);
    if (term == NULL || intr == NULL || hup == NULL || usr1 == NULL ||
        event_add(term, NULL) != 0 || event_add(intr, NULL) != 0 ||
        event_add(hup, NULL) != 0 || event_add(usr1, NULL) != 0) {
        corral_log(CORRAL_LOG_ERROR, "cannot watch signals");
        return 1;
    }
    /* A supervisor's worker starts with them blocked (see supervisor.c). */
    sigset_t watched;
    sigemptyset(&watched);
    sigaddset(&watched, SIGTERM);
    sigaddset(&watched, SIGINT);
    sigaddset(&watched, SIGHUP);
    sigaddset(&watched, SIGUSR1);
    sigprocmask(SIG_UNBLOCK, &watched, NULL);
    event_base_dispatch(run.base);
    event_free(term);
    event_free(intr);
    event_free(hup);
    event_free(usr1);
    if (run.drain_timer)
        event_free(run.drain_timer);
    corral_admin_free(run.admin);
    corral_gateway_free(run.gateway);
    event_base_free(run.base);
    return 0;
}
