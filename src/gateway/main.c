/* main.c — the corral command: parse arguments, load and check the config,
 * then run one reactor (reactor.h) until SIGTERM or SIGINT, drain and exit;
 * or, with workers other than 1, a supervisor of N reactor processes on
 * one port (supervisor.h). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "config.h"
#include "corral/version.h"
#include "log.h"
#include "reactor.h"
#include "supervisor.h"

static void
usage(FILE *out)
{
    fputs("usage: corral -c FILE        run the gateway\n"
          "       corral --check -c FILE  validate FILE and exit\n"
          "       corral --version\n"
          "       corral -h | --help\n",
          out);
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
            printf("corral %s\n", CORRAL_VERSION_STRING);
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
    struct corral_reactor_env env = {
        .config_path = path, .listen_fd = -1, .admin_fd = -1, .ctl_fd = -1};
    int rc = workers > 1 ? corral_supervisor_run(&cfg, workers, path)
                         : corral_reactor_run(cfg, &env);
    corral_config_free(cfg);
    return rc;
}
