/* main.c — the corral command: parse arguments, load and check the config,
 * then run one reactor until SIGTERM or SIGINT, drain and exit; or, with
 * workers other than 1, a small supervisor of N reactor processes on one
 * port (SO_REUSEPORT) that restarts a worker that dies and forwards
 * SIGTERM, SIGINT, SIGHUP and SIGUSR1. */
#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "config.h"
#include "gateway.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "timeutil.h"

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

struct run {
    struct event_base *base;
    const struct corral_config *cfg;
    struct corral_gateway *gateway;
    struct corral_admin *admin;
    struct event *drain_timer;
    int signals;
};

/* What a reactor is given: sockets a supervisor bound for all its workers
 * (-1: bind its own), the server's metrics blocks (NULL: its own) and
 * which block is its. */
struct reactor_env {
    int listen_fd, admin_fd;
    struct corral_metrics *metrics;
    unsigned worker;
    const int *bus_fds; /* the purge bus, a pair per worker; or NULL */
    unsigned n_bus;
};

static void
drained(void *arg)
{
    struct run *run = arg;
    event_base_loopexit(run->base, NULL);
}

/* The config file, read again on SIGHUP. */
static const char *config_path;

/* SIGHUP: read and check the config again; serve it if it is good, else
 * keep serving the one we have and say why. */
static void
on_hup(evutil_socket_t sig, short what, void *arg)
{
    struct run *run = arg;
    char err[1024];
    if (run->signals > 0)
        return; /* draining */
    struct corral_config *cfg = corral_config_load(config_path, err,
                                                   sizeof(err));
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
               "reload: serving %s (%zu upstreams, %zu routes)", config_path,
               cfg->n_upstreams, cfg->n_routes);
}

static void
drain_expired(evutil_socket_t fd, short what, void *arg)
{
    struct run *run = arg;
    corral_log(CORRAL_LOG_WARNING,
               "drain_timeout passed; closing what is left");
    event_base_loopbreak(run->base);
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
    /* The admin stops now; clients get drain_timeout to be answered. */
    corral_admin_free(run->admin);
    run->admin = NULL;
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

/* One reactor: the gateway (and its admin) on its own loop until SIGTERM
 * or SIGINT. Returns the process's exit status. */
static int
reactor(const struct corral_config *cfg, const struct reactor_env *env)
{
    char err[1024];
    struct run run = {.base = event_base_new(), .cfg = cfg};
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

/* ---- the supervisor ---- */

#define RESTART_MIN_MS 100   /* a worker that died at once: first delay */
#define RESTART_MAX_MS 5000  /* ... doubling up to this */
#define QUICK_DEATH_MS 1000  /* died sooner than this after its start */

static volatile sig_atomic_t got_signal; /* the last SIGTERM/INT/HUP */
static volatile sig_atomic_t got_child;

static void
on_supervisor_signal(int sig)
{
    if (sig == SIGCHLD)
        got_child = 1;
    else
        got_signal = sig;
}

struct worker {
    pid_t pid;          /* 0: not running */
    uint64_t started;   /* mono ms */
    uint64_t restart_at; /* mono ms; 0: now */
    uint64_t delay_ms;  /* next delay after a quick death */
};

static pid_t
spawn(const struct corral_config *cfg, const struct reactor_env *env,
      sigset_t *old)
{
    pid_t pid = fork();
    if (pid == 0) {
        /* The worker: default signal handling, then the reactor. */
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigaction(SIGTERM, &dfl, NULL);
        sigaction(SIGINT, &dfl, NULL);
        sigaction(SIGHUP, &dfl, NULL);
        sigaction(SIGUSR1, &dfl, NULL);
        sigaction(SIGCHLD, &dfl, NULL);
        sigprocmask(SIG_SETMASK, old, NULL);
        _exit(reactor(cfg, env));
    }
    return pid;
}

/* Runs n workers until SIGTERM or SIGINT (forwarded to them; then waits for
 * their drain). They share one listening socket, bound here, so its accept
 * queue outlives any worker: a worker that dies takes only the clients it
 * had accepted. A worker that dies is started again: at once when it had
 * run a while, else after a delay that doubles from 100 ms to 5 s. When
 * every first worker fails at once (a bad upstream...), the supervisor
 * gives up with status 1. */
static int
supervise(struct corral_config **cfgp, unsigned n)
{
    struct corral_config *cfg = *cfgp;
    struct worker *w = calloc(n, sizeof(*w));
    struct sigaction sa = {.sa_handler = on_supervisor_signal};
    sigset_t block, old;
    bool stopping = false, ever_up = false;
    int status = 0;

    if (w == NULL) {
        corral_log(CORRAL_LOG_ERROR, "out of memory");
        return 1;
    }
    char err[512];
    int lfd = corral_listen_socket(cfg->listen.host, cfg->listen.port, 0,
                                   false, err, sizeof(err));
    if (lfd < 0) {
        corral_log(CORRAL_LOG_ERROR, "%s", err);
        free(w);
        return 1;
    }
    /* The admin port too, and the metrics every worker writes its own
     * part of and any worker reads all of. */
    int afd = -1;
    if (cfg->admin &&
        (afd = corral_listen_socket(cfg->admin->listen.host,
                                    cfg->admin->listen.port, 0, false, err,
                                    sizeof(err))) < 0) {
        corral_log(CORRAL_LOG_ERROR, "admin.listen: %s", err);
        close(lfd);
        free(w);
        return 1;
    }
    struct corral_metrics *metrics =
        corral_metrics_new(n, cfg->n_routes, cfg->n_upstreams);
    /* Without l2, a purge reaches the other workers on this bus: a
     * datagram socket pair per worker, which it reads and the others
     * write. Workers started again later inherit the same pairs. */
    int *bus = NULL; /* [2i]: write end, [2i+1]: worker i's read end */
    if (cfg->l2 == NULL && cfg->admin != NULL &&
        (bus = calloc(2 * (size_t)n, sizeof(*bus))) != NULL) {
        for (unsigned i = 0; i < n; i++) {
            if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0,
                           &bus[2 * i]) != 0) {
                corral_log(CORRAL_LOG_WARNING,
                           "no purge bus: a purge reaches one worker only");
                for (unsigned k = 0; k < 2 * i; k++)
                    close(bus[k]);
                free(bus);
                bus = NULL;
                break;
            }
        }
    }
    if (metrics == NULL) {
        corral_log(CORRAL_LOG_ERROR, "cannot map the metrics");
        close(lfd);
        if (afd >= 0)
            close(afd);
        free(w);
        return 1;
    }
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, &old);
    corral_log(CORRAL_LOG_NOTICE, "supervising %u workers", n);
    for (;;) {
        uint64_t now = corral_now_ms(), next = 0;
        unsigned running = 0;
        for (unsigned i = 0; i < n; i++) {
            if (w[i].pid == 0 && !stopping && w[i].restart_at <= now) {
                struct reactor_env env = {
                    .listen_fd = lfd,
                    .admin_fd = afd,
                    .metrics = metrics,
                    .worker = i,
                    .bus_fds = bus,
                    .n_bus = bus ? n : 0,
                };
                w[i].pid = spawn(cfg, &env, &old);
                w[i].started = now;
                if (w[i].pid < 0) {
                    w[i].pid = 0;
                    w[i].restart_at = now + RESTART_MIN_MS;
                }
            }
            if (w[i].pid > 0) {
                running++;
                if (now - w[i].started >= QUICK_DEATH_MS)
                    ever_up = true;
            } else if (!stopping && (next == 0 || w[i].restart_at < next)) {
                next = w[i].restart_at;
            }
        }
        if (stopping && running == 0)
            break;
        /* Sleep until a signal, or the next restart or up-check is due. */
        struct timespec ts = {0, 100 * 1000000L};
        if (next > now && next - now < 100)
            ts.tv_nsec = (long)(next - now) * 1000000L;
        sigset_t wait = old;
        sigdelset(&wait, SIGTERM);
        sigdelset(&wait, SIGINT);
        sigdelset(&wait, SIGHUP);
        sigdelset(&wait, SIGUSR1);
        sigdelset(&wait, SIGCHLD);
        sigprocmask(SIG_SETMASK, &wait, NULL);
        nanosleep(&ts, NULL);
        sigprocmask(SIG_BLOCK, &block, NULL);
        if (got_signal) {
            int sig = got_signal;
            got_signal = 0;
            if (sig == SIGHUP && !stopping) {
                /* Checked here first: a bad file reaches no worker. The
                 * good one is also what workers started later run. */
                struct corral_config *fresh =
                    corral_config_load(config_path, err, sizeof(err));
                if (fresh == NULL) {
                    corral_log(CORRAL_LOG_ERROR,
                               "reload: %s; still serving the "
                               "old config",
                               err);
                    sig = 0;
                } else {
                    corral_config_free(cfg);
                    cfg = *cfgp = fresh;
                }
            }
            if ((sig == SIGTERM || sig == SIGINT) && !stopping) {
                stopping = true;
                /* Workers drain: new clients are refused, not queued. */
                close(lfd);
                lfd = -1;
                if (afd >= 0)
                    close(afd);
                afd = -1;
            }
            for (unsigned i = 0; sig != 0 && i < n; i++)
                if (w[i].pid > 0)
                    kill(w[i].pid, sig);
        }
        got_child = 0;
        int st;
        pid_t pid;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
            for (unsigned i = 0; i < n; i++) {
                if (w[i].pid != pid)
                    continue;
                uint64_t lived = corral_now_ms() - w[i].started;
                w[i].pid = 0;
                if (stopping) {
                    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                        status = 1;
                    break;
                }
                if (WIFSIGNALED(st))
                    corral_log(CORRAL_LOG_ERROR,
                               "worker %d killed by %s; "
                               "restarting",
                               (int)pid, strsignal(WTERMSIG(st)));
                else
                    corral_log(CORRAL_LOG_ERROR,
                               "worker %d exited with %d; "
                               "restarting",
                               (int)pid, WEXITSTATUS(st));
                if (lived < QUICK_DEATH_MS) {
                    if (!ever_up && WIFEXITED(st) && WEXITSTATUS(st) != 0) {
                        corral_log(CORRAL_LOG_ERROR, "workers fail at start; "
                                                     "giving up");
                        stopping = true;
                        status = 1;
                        for (unsigned k = 0; k < n; k++)
                            if (w[k].pid > 0)
                                kill(w[k].pid, SIGTERM);
                        break;
                    }
                    w[i].delay_ms = w[i].delay_ms ? w[i].delay_ms * 2
                                                  : RESTART_MIN_MS;
                    if (w[i].delay_ms > RESTART_MAX_MS)
                        w[i].delay_ms = RESTART_MAX_MS;
                    w[i].restart_at = corral_now_ms() + w[i].delay_ms;
                } else {
                    w[i].delay_ms = 0;
                    w[i].restart_at = 0;
                }
                break;
            }
        }
    }
    if (lfd >= 0)
        close(lfd);
    if (afd >= 0)
        close(afd);
    for (unsigned i = 0; bus && i < 2 * n; i++)
        close(bus[i]);
    free(bus);
    corral_metrics_free(metrics);
    free(w);
    return status;
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
    config_path = path;
    struct corral_config *cfg = corral_config_load(path, err, sizeof(err));
    if (cfg == NULL) {
        corral_log(CORRAL_LOG_ERROR, "%s", err);
        return 1;
    }
    if (check) {
        printf("%s: ok (%zu upstreams, %zu routes)\n", path, cfg->n_upstreams,
               cfg->n_routes);
        if (cfg->workers != 1 && cfg->l2 == NULL)
            printf("%s: note: workers without l2 fill each key once per "
                   "worker, not once for the server\n",
                   path);
        corral_config_free(cfg);
        return 0;
    }
    unsigned workers = cfg->workers;
    if (workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        workers = n > 0 ? (unsigned)n : 1;
    }
    if (workers > 1 && cfg->l2 == NULL)
        corral_log(CORRAL_LOG_WARNING,
                   "%u workers without l2: each worker has its "
                   "own L1 and its own single flight (a key is filled "
                   "at most once per worker)",
                   workers);
    signal(SIGPIPE, SIG_IGN);
    struct reactor_env env = {.listen_fd = -1, .admin_fd = -1};
    int rc = workers > 1 ? supervise(&cfg, workers) : reactor(cfg, &env);
    corral_config_free(cfg);
    return rc;
}
