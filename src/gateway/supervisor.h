/* supervisor.h — workers: N reactor processes (reactor.h) on one listening
 * socket, which the supervisor binds, so its accept queue outlives any
 * worker. It restarts a worker that dies, checks the config on SIGHUP
 * before passing the signal on, and forwards SIGTERM, SIGINT and SIGUSR1. */
#ifndef CORRAL_SUPERVISOR_H
#define CORRAL_SUPERVISOR_H

struct corral_config;

/* Runs n workers of *cfgp until SIGTERM or SIGINT and their drain. A good
 * reload replaces *cfgp (the old one is freed; the caller frees the last).
 * Returns the process's exit status: 0 when every worker drained, 1 when
 * one did not, or when the workers all failed at start. */
int corral_supervisor_run(struct corral_config **cfgp, unsigned n,
                          const char *config_path);

#endif
