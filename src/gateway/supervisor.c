/* supervisor.c — N reactor processes on one port (see supervisor.h). The
 * supervisor binds the sockets, forks the workers and restarts one that
 * dies: at once when it had run a while, else after a delay that doubles
 * from 100 ms to 5 s. Signals are blocked but while it sleeps, and handled
 * between sleeps. */
#include "supervisor.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "reactor.h"
#include "timeutil.h"

#define RESTART_MIN_MS 100  /* a worker that died at once: first delay */
#define RESTART_MAX_MS 5000 /* ... doubling up to this */
#define QUICK_DEATH_MS 1000 /* died sooner than this after its start */

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
    pid_t pid;           /* 0: not running */
    uint64_t started;    /* mono ms */
    uint64_t restart_at; /* mono ms; 0: now */
    uint64_t delay_ms;   /* next delay after a quick death */
};

static pid_t
spawn(const struct corral_config *cfg, const struct corral_reactor_env *env,
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
        _exit(corral_reactor_run(cfg, env));
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
int
corral_supervisor_run(struct corral_config **cfgp, unsigned n,
                      const char *config_path)
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
    int lfd = corral_listen_socket(cfg->listen.host, cfg->listen.port, 0, false,
                                   err, sizeof(err));
    if (lfd < 0) {
        corral_log(CORRAL_LOG_ERROR, "%s", err);
        free(w);
        return 1;
    }
    /* The admin port too, and the metrics every worker writes its own
     * part of and any worker reads all of. */
    int afd = -1;
    if (cfg->admin && (afd = corral_listen_socket(
                           cfg->admin->listen.host, cfg->admin->listen.port, 0,
                           false, err, sizeof(err))) < 0) {
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
                struct corral_reactor_env env = {
                    .config_path = config_path,
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
                    w[i].delay_ms =
                        w[i].delay_ms ? w[i].delay_ms * 2 : RESTART_MIN_MS;
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
