/* supervisor.c — N reactor processes on one port (see supervisor.h). The
 * supervisor binds the sockets, forks the workers and restarts one that
 * dies: at once when it had run a while, else after a delay that doubles
 * from 100 ms to 5 s. Signals are blocked but while it sleeps, and handled
 * between sleeps. */
#include "supervisor.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "listener.h"
#include "log.h"
#include "ledger.h"
#include "metrics.h"
#include "purge_bus.h"
#include "reactor.h"
#include "timeutil.h"

#define RESTART_MIN_MS 100  /* a worker that died at once: first delay */
#define RESTART_MAX_MS 5000 /* ... doubling up to this */
#define QUICK_DEATH_MS 1000 /* died sooner than this after its start */
#define TICK_MS 100         /* the longest sleep between checks */

/* One flag per signal: signals that arrive together are each handled
 * (one slot for all of them kept only the last). */
static volatile sig_atomic_t pending[NSIG];

static void
on_supervisor_signal(int sig)
{
    pending[sig] = 1;
}

/* Was sig pending? Clears it. Signals are blocked while this runs. */
static bool
take(int sig)
{
    if (!pending[sig])
        return false;
    pending[sig] = 0;
    return true;
}

struct worker {
    pid_t pid;           /* 0: not running */
    int ctl;             /* our end of its channel (reactor.h); -1: none */
    uint64_t started;    /* mono ms */
    uint64_t restart_at; /* mono ms; 0: now */
    uint64_t delay_ms;   /* next delay after a quick death */
};

struct supervisor {
    struct corral_config **cfgp; /* what workers started now run */
    const char *config_path;
    unsigned n;
    struct worker *w; /* n */
    /* Every listening socket is bound here, also one a reload adds, so a
     * worker started at any time finds it and never binds one itself. */
    int lfd, afd; /* the client and admin sockets; -1: none */
    struct corral_metrics *metrics;
    struct corral_ledger *ledger; /* the upstreams' rates and pauses */
    int *bus; /* [2i]: write end, [2i+1]: worker i's read end; or NULL */
    sigset_t block, old;
    bool stopping, ever_up;
    int status; /* the exit status */
};

/* The worker keeps only its own end of the channels. */
static pid_t
fork_worker(struct supervisor *s, const struct corral_reactor_env *env,
            int our_end)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        close(our_end);
        for (unsigned k = 0; k < s->n; k++)
            if (s->w[k].ctl >= 0)
                close(s->w[k].ctl);
        /* A supervisor that dies, even by SIGKILL, takes its workers with
         * it: they drain and exit instead of keeping its ports. A parent
         * that died before prctl() could see to it is caught by getppid(). */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        /* The worker: default signal handling, then the reactor. */
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigaction(SIGTERM, &dfl, NULL);
        sigaction(SIGINT, &dfl, NULL);
        sigaction(SIGHUP, &dfl, NULL);
        sigaction(SIGUSR1, &dfl, NULL);
        sigaction(SIGCHLD, &dfl, NULL);
        /* The reactor lets the signals it watches in once it watches
         * them: one that comes while it starts waits for it. */
        sigset_t mask = s->old;
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGUSR1);
        sigprocmask(SIG_SETMASK, &mask, NULL);
        _exit(corral_reactor_run(*s->cfgp, env));
    }
    return pid;
}

/* Starts worker i, with a fresh channel (so that nothing sent to a worker
 * that died reaches the next). */
static void
spawn(struct supervisor *s, unsigned i)
{
    struct worker *w = &s->w[i];
    int ctl[2];
    w->pid = -1;
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, ctl) == 0) {
        struct corral_reactor_env env = {
            .config_path = s->config_path,
            .listen_fd = s->lfd,
            .admin_fd = s->afd,
            .ctl_fd = ctl[1],
            .metrics = s->metrics,
            .ledger = s->ledger,
            .worker = i,
            .bus_fds = s->bus,
            .n_bus = s->bus ? s->n : 0,
        };
        w->pid = fork_worker(s, &env, ctl[0]);
        int saved = errno;
        close(ctl[1]);
        if (w->pid > 0)
            w->ctl = ctl[0];
        else
            close(ctl[0]);
        errno = saved;
    }
    if (w->pid < 0)
        corral_log(CORRAL_LOG_ERROR, "cannot start worker %u: %s", i,
                   strerror(errno));
}

/* The sockets every worker shares, the metrics each writes its own part
 * of and any reads all of, and the ledger of upstream rates and pauses
 * they all keep. 0, or -1 after saying why. */
static int
open_shared(struct supervisor *s)
{
    const struct corral_config *cfg = *s->cfgp;
    char err[512];
    s->lfd = corral_listen_socket(cfg->listen.host, cfg->listen.port, 0, false,
                                  err, sizeof(err));
    if (s->lfd < 0) {
        corral_log(CORRAL_LOG_ERROR, "%s", err);
        return -1;
    }
    if (cfg->admin && (s->afd = corral_listen_socket(
                           cfg->admin->listen.host, cfg->admin->listen.port, 0,
                           false, err, sizeof(err))) < 0) {
        corral_log(CORRAL_LOG_ERROR, "admin.listen: %s", err);
        return -1;
    }
    s->metrics = corral_metrics_new(s->n, cfg->n_routes, cfg->n_upstreams);
    s->ledger = corral_ledger_new(cfg->n_upstreams + cfg->n_routes);
    s->bus = corral_purge_bus_pairs(s->n); /* also for an admin a reload adds */
    if (s->metrics == NULL || s->ledger == NULL) {
        corral_log(CORRAL_LOG_ERROR, "cannot map the metrics and ledger");
        return -1;
    }
    return 0;
}

static void
close_shared(struct supervisor *s)
{
    if (s->lfd >= 0)
        close(s->lfd);
    if (s->afd >= 0)
        close(s->afd);
    corral_purge_bus_pairs_free(s->bus, s->n);
    corral_metrics_free(s->metrics);
    corral_ledger_free(s->ledger);
}

/* Starts the workers that are due; counts those running and finds when
 * the next restart is due (0: none). */
static unsigned
start_due(struct supervisor *s, uint64_t now, uint64_t *next)
{
    unsigned running = 0;
    *next = 0;
    for (unsigned i = 0; i < s->n; i++) {
        struct worker *w = &s->w[i];
        if (w->pid == 0 && !s->stopping && w->restart_at <= now) {
            spawn(s, i);
            w->started = now;
            if (w->pid < 0) {
                w->pid = 0;
                w->restart_at = now + RESTART_MIN_MS;
            }
        }
        if (w->pid > 0) {
            running++;
            if (now - w->started >= QUICK_DEATH_MS)
                s->ever_up = true;
        } else if (!s->stopping && (*next == 0 || w->restart_at < *next)) {
            *next = w->restart_at;
        }
    }
    return running;
}

/* Sleeps with the signals let in, until one comes or the next restart or
 * up-check is due. */
static void
sleep_until(struct supervisor *s, uint64_t now, uint64_t next)
{
    struct timespec ts = {0, TICK_MS * 1000000L};
    if (next > now && next - now < TICK_MS)
        ts.tv_nsec = (long)(next - now) * 1000000L;
    sigset_t wait = s->old;
    sigdelset(&wait, SIGTERM);
    sigdelset(&wait, SIGINT);
    sigdelset(&wait, SIGHUP);
    sigdelset(&wait, SIGUSR1);
    sigdelset(&wait, SIGCHLD);
    sigprocmask(SIG_SETMASK, &wait, NULL);
    nanosleep(&ts, NULL);
    sigprocmask(SIG_BLOCK, &s->block, NULL);
}

static void
forward(struct supervisor *s, int sig)
{
    for (unsigned i = 0; i < s->n; i++)
        if (s->w[i].pid > 0)
            kill(s->w[i].pid, sig);
}

/* SIGHUP: the file is checked here first, so a bad one reaches no worker;
 * the good one is also what workers started later run. An admin it adds
 * or moves is bound here, and the workers are sent the socket before the
 * signal; one that cannot be bound fails the reload. */
static bool
reload(struct supervisor *s)
{
    char err[1024], why[512];
    struct corral_config *fresh =
        corral_config_load(s->config_path, err, sizeof(err));
    int afd = s->afd;
    bool moved = fresh && corral_config_admin_moved(*s->cfgp, fresh);
    if (moved && fresh->admin &&
        (afd = corral_listen_socket(fresh->admin->listen.host,
                                    fresh->admin->listen.port, 0, false, why,
                                    sizeof(why))) < 0) {
        snprintf(err, sizeof(err), "admin.listen: %s", why);
        corral_config_free(fresh);
        fresh = NULL;
    }
    if (fresh == NULL) {
        corral_log(CORRAL_LOG_ERROR, "reload: %s; still serving the old config",
                   err);
        return false;
    }
    corral_config_free(*s->cfgp);
    *s->cfgp = fresh;
    if (!moved)
        return true;
    if (!fresh->admin)
        afd = -1;
    for (unsigned i = 0; i < s->n; i++)
        if (s->w[i].pid > 0 && corral_reactor_send_admin(s->w[i].ctl, afd) < 0)
            corral_log(CORRAL_LOG_ERROR,
                       "reload: worker %d gets no admin socket: %s",
                       (int)s->w[i].pid, strerror(errno));
    if (s->afd >= 0)
        close(s->afd);
    s->afd = afd;
    return true;
}

/* SIGTERM, SIGINT: the workers drain; new clients are refused, not
 * queued. */
static void
stop(struct supervisor *s)
{
    s->stopping = true;
    close(s->lfd);
    s->lfd = -1;
    if (s->afd >= 0)
        close(s->afd);
    s->afd = -1;
}

/* Every signal that came, in this order whatever the order they came in:
 * a reload and a reopen asked for just before a stop are done before it.
 * A reload after the stop began is pointless: it is dropped. */
static void
handle_signals(struct supervisor *s)
{
    if (take(SIGHUP) && !s->stopping && reload(s))
        forward(s, SIGHUP);
    if (take(SIGUSR1))
        forward(s, SIGUSR1);
    static const int stops[] = {SIGTERM, SIGINT};
    for (size_t k = 0; k < sizeof(stops) / sizeof(stops[0]); k++) {
        if (!take(stops[k]))
            continue;
        if (!s->stopping)
            stop(s);
        forward(s, stops[k]);
    }
}

/* Worker i ended with wait status st: restarted at once when it had run a
 * while, else after a delay that doubles. */
static void
worker_ended(struct supervisor *s, unsigned i, int st)
{
    struct worker *w = &s->w[i];
    pid_t pid = w->pid;
    uint64_t lived = corral_now_ms() - w->started;
    w->pid = 0;
    close(w->ctl);
    w->ctl = -1;
    if (s->stopping) {
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            s->status = 1;
        return;
    }
    if (WIFSIGNALED(st))
        corral_log(CORRAL_LOG_ERROR, "worker %d killed by %s; restarting",
                   (int)pid, strsignal(WTERMSIG(st)));
    else
        corral_log(CORRAL_LOG_ERROR, "worker %d exited with %d; restarting",
                   (int)pid, WEXITSTATUS(st));
    corral_metrics_restart_add(s->metrics);
    if (lived >= QUICK_DEATH_MS) {
        w->delay_ms = 0;
        w->restart_at = 0;
        return;
    }
    if (!s->ever_up && WIFEXITED(st) && WEXITSTATUS(st) != 0) {
        corral_log(CORRAL_LOG_ERROR, "workers fail at start; giving up");
        s->stopping = true;
        s->status = 1;
        forward(s, SIGTERM);
        return;
    }
    w->delay_ms = w->delay_ms ? w->delay_ms * 2 : RESTART_MIN_MS;
    if (w->delay_ms > RESTART_MAX_MS)
        w->delay_ms = RESTART_MAX_MS;
    w->restart_at = corral_now_ms() + w->delay_ms;
}

static void
reap(struct supervisor *s)
{
    int st;
    pid_t pid;
    take(SIGCHLD);
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
        for (unsigned i = 0; i < s->n; i++)
            if (s->w[i].pid == pid) {
                worker_ended(s, i, st);
                break;
            }
}

static void
watch_signals(struct supervisor *s)
{
    struct sigaction sa = {.sa_handler = on_supervisor_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    sigemptyset(&s->block);
    sigaddset(&s->block, SIGTERM);
    sigaddset(&s->block, SIGINT);
    sigaddset(&s->block, SIGHUP);
    sigaddset(&s->block, SIGUSR1);
    sigaddset(&s->block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &s->block, &s->old);
}

int
corral_supervisor_run(struct corral_config **cfgp, unsigned n,
                      const char *config_path)
{
    struct supervisor s = {
        .cfgp = cfgp,
        .config_path = config_path,
        .n = n,
        .w = calloc(n, sizeof(struct worker)),
        .lfd = -1,
        .afd = -1,
    };
    if (s.w == NULL) {
        corral_log(CORRAL_LOG_ERROR, "out of memory");
        return 1;
    }
    for (unsigned i = 0; i < n; i++)
        s.w[i].ctl = -1;
    if (open_shared(&s) < 0) {
        close_shared(&s);
        free(s.w);
        return 1;
    }
    watch_signals(&s);
    corral_log(CORRAL_LOG_NOTICE, "supervising %u workers", n);
    for (;;) {
        uint64_t now = corral_now_ms(), next;
        if (start_due(&s, now, &next) == 0 && s.stopping)
            break;
        sleep_until(&s, now, next);
        handle_signals(&s);
        reap(&s);
    }
    close_shared(&s);
    free(s.w);
    return s.status;
}
