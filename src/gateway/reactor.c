/* reactor.c — one reactor process (see reactor.h): signals as loop events,
 * a reload that keeps the old config when the new one is bad, an admin
 * that follows the config (on a socket of its own, or the one a supervisor
 * sends), and a drain bounded by drain_timeout that the admin outlives. */
#include "reactor.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.h"
#include "config.h"
#include "gateway.h"
#include "listener.h"
#include "log.h"
#include "timeutil.h"

#define DRAIN_GRACE_MS 1000 /* to write the 503s of an expired drain */

struct run {
    struct event_base *base;
    const struct corral_config *cfg;
    struct corral_gateway *gateway;
    struct corral_admin *admin;
    struct event *drain_timer;
    int admin_fd; /* the admin socket, a copy of which the admin serves;
                   * -1: none */
    int ctl_fd;   /* the supervisor's channel; -1: no supervisor */
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

#define ADMIN_SAME (-2) /* a reload keeps the admin socket it had */

/* A socket on cfg's admin.listen, or -1 with err. */
static int
admin_bind(const struct corral_config *cfg, char *err, size_t errlen)
{
    char why[512];
    int fd =
        corral_listen_socket(cfg->admin->listen.host, cfg->admin->listen.port,
                             0, false, why, sizeof(why));
    if (fd < 0)
        snprintf(err, errlen, "admin.listen: %s", why);
    return fd;
}

/* Serves the admin the gateway's config asks for on a copy of
 * run->admin_fd (the admin's listener owns the copy). 0, or -1 with err. */
static int
admin_start(struct run *run, char *err, size_t errlen)
{
    const struct corral_config *cfg = corral_gateway_config(run->gateway);
    if (cfg->admin == NULL || run->admin_fd < 0)
        return 0;
    int fd = fcntl(run->admin_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "admin.listen: %s", strerror(errno));
        return -1;
    }
    run->admin = corral_admin_new(run->base, run->gateway, fd, err, errlen);
    if (run->admin == NULL)
        return -1;
    corral_log(CORRAL_LOG_NOTICE, "admin on %s:%u", cfg->admin->listen.host,
               corral_admin_port(run->admin));
    return 0;
}

/* The admin socket the supervisor sent for this reload: the last one
 * waiting (it is sent before the SIGHUP), -1 for none, or ADMIN_SAME. */
static int
admin_sent(int ctl_fd)
{
    int got = ADMIN_SAME;
    for (;;) {
        char tag;
        char cbuf[CMSG_SPACE(sizeof(int))];
        struct iovec iov = {&tag, 1};
        struct msghdr m = {.msg_iov = &iov,
                           .msg_iovlen = 1,
                           .msg_control = cbuf,
                           .msg_controllen = sizeof(cbuf)};
        if (recvmsg(ctl_fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) != 1)
            return got;
        if (got >= 0)
            close(got);
        got = -1;
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            memcpy(&got, CMSG_DATA(c), sizeof(int));
    }
}

int
corral_reactor_send_admin(int ctl_fd, int admin_fd)
{
    char tag = admin_fd >= 0 ? 'A' : 'N';
    char cbuf[CMSG_SPACE(sizeof(int))] = {0};
    struct iovec iov = {&tag, 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (admin_fd >= 0) {
        m.msg_control = cbuf;
        m.msg_controllen = sizeof(cbuf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &admin_fd, sizeof(int));
    }
    return sendmsg(ctl_fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL) == 1 ? 0 : -errno;
}

/* Which admin socket cfg is to be served on: ADMIN_SAME, -1 (none) or a
 * new one. A supervisor bound it and sent it; alone, the reactor binds
 * it. Returns -3 when it cannot be bound (err says why). */
static int
admin_socket_for(struct run *run, const struct corral_config *cfg, char *err,
                 size_t errlen)
{
    if (run->ctl_fd >= 0)
        return admin_sent(run->ctl_fd);
    if (!corral_config_admin_moved(run->cfg, cfg))
        return ADMIN_SAME;
    if (cfg->admin == NULL)
        return -1;
    int fd = admin_bind(cfg, err, errlen);
    return fd < 0 ? -3 : fd;
}

/* Does the admin need to be built again for cfg: another socket, other
 * limits, or none any more? */
static bool
admin_changes(const struct run *run, const struct corral_config *cfg, int fd)
{
    const struct corral_config_admin *a = run->cfg->admin, *b = cfg->admin;
    if (fd != ADMIN_SAME || (a == NULL) != (b == NULL))
        return true;
    return a && (a->max_clients != b->max_clients ||
                 a->client_timeout_ms != b->client_timeout_ms);
}

/* SIGHUP: read and check the config again; serve it if it is good, else
 * keep serving the one we have and say why. The admin follows it: added,
 * moved, removed or with other limits. */
static void
on_hup(evutil_socket_t sig, short what, void *arg)
{
    struct run *run = arg;
    char err[1024];
    if (run->signals > 0)
        return; /* draining */
    int fd = ADMIN_SAME;
    struct corral_config *cfg =
        corral_config_load(run->config_path, err, sizeof(err));
    if (cfg != NULL &&
        (fd = admin_socket_for(run, cfg, err, sizeof(err))) == -3) {
        corral_config_free(cfg);
        cfg = NULL;
    }
    /* Decided before the reload, which may free the old config. */
    bool rebuild = cfg != NULL && admin_changes(run, cfg, fd);
    if (cfg != NULL &&
        corral_gateway_reload(run->gateway, cfg, err, sizeof(err)) < 0) {
        corral_config_free(cfg);
        cfg = NULL;
    }
    if (cfg == NULL) {
        corral_log(CORRAL_LOG_ERROR, "reload: %s; still serving the old config",
                   err);
        if (fd >= 0)
            close(fd);
        return;
    }
    run->cfg = cfg;
    corral_log(CORRAL_LOG_NOTICE,
               "reload: serving %s (%zu upstreams, %zu routes)",
               run->config_path, cfg->n_upstreams, cfg->n_routes);
    if (fd != ADMIN_SAME) {
        if (run->admin_fd >= 0)
            close(run->admin_fd);
        run->admin_fd = fd;
    }
    if (!rebuild)
        return;
    corral_admin_free(run->admin);
    run->admin = NULL;
    if (admin_start(run, err, sizeof(err)) < 0)
        corral_log(CORRAL_LOG_ERROR, "reload: %s; no admin", err);
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
    struct run run = {.base = event_base_new(),
                      .cfg = cfg,
                      .admin_fd = env->admin_fd,
                      .ctl_fd = env->ctl_fd,
                      .config_path = env->config_path};
    if (run.base == NULL) {
        corral_log(CORRAL_LOG_ERROR, "cannot create the event loop");
        return 1;
    }
    struct corral_gateway_options go = {
        .listen_fd = env->listen_fd,
        .metrics = env->metrics,
        .ledger = env->ledger,
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
    if (cfg->listen_tls)
        corral_log(CORRAL_LOG_NOTICE, "listening for TLS on %s:%u",
                   cfg->listen_tls->listen.host,
                   corral_gateway_tls_port(run.gateway));
    /* With a supervisor the admin socket is its (or none); alone, ours. */
    if ((cfg->admin && run.ctl_fd < 0 &&
         (run.admin_fd = admin_bind(cfg, err, sizeof(err))) < 0) ||
        admin_start(&run, err, sizeof(err)) < 0) {
        corral_log(CORRAL_LOG_ERROR, "%s", err);
        if (run.admin_fd >= 0)
            close(run.admin_fd);
        corral_gateway_free(run.gateway);
        event_base_free(run.base);
        return 1;
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
    if (run.admin_fd >= 0)
        close(run.admin_fd);
    corral_gateway_free(run.gateway);
    event_base_free(run.base);
    return 0;
}
