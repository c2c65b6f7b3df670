/* reactor.h — one reactor process: the gateway and its admin on one event
 * loop, run until SIGTERM or SIGINT, then drained. SIGHUP reloads the
 * config file, SIGUSR1 reopens the access log. With workers, a supervisor
 * (supervisor.h) runs one of these per worker process. */
#ifndef CORRAL_REACTOR_H
#define CORRAL_REACTOR_H

struct corral_config;
struct corral_metrics;
struct corral_ledger;

/* What a reactor is given: sockets a supervisor bound for all its workers
 * (without a supervisor, -1: it binds its own), the server's metrics
 * blocks and upstream ledger (NULL: its own) and which block is its. */
struct corral_reactor_env {
    const char *config_path; /* read again on SIGHUP */
    int listen_fd, admin_fd; /* admin_fd -1 with a supervisor: no admin */
    /* With a supervisor: its end of a datagram socket pair, on which it
     * sends the admin socket of a reloaded config that needs another one
     * (corral_reactor_send_admin()), before the SIGHUP. -1: none; the
     * reactor then binds what a reload asks for itself. */
    int ctl_fd;
    struct corral_metrics *metrics;
    struct corral_ledger *ledger; /* the upstreams' rates and pauses */
    unsigned worker;
    const int *bus_fds; /* the purge bus, a pair per worker; or NULL */
    unsigned n_bus;
};

/* Serves cfg (borrowed; a reload replaces what is served, not cfg) until
 * SIGTERM or SIGINT and the drain that follows. Returns the process's exit
 * status. */
int corral_reactor_run(const struct corral_config *cfg,
                       const struct corral_reactor_env *env);

/* Tells the reactor at the other end of ctl_fd, before its SIGHUP, the
 * admin socket its reloaded config is to be served on: a copy of
 * admin_fd (the caller keeps its own), or none when admin_fd is -1.
 * Returns 0, or -errno. */
int corral_reactor_send_admin(int ctl_fd, int admin_fd);

#endif
