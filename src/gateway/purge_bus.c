/* purge_bus.c — the workers' purge bus (see purge_bus.h): a key is one
 * datagram, so a reader never sees part of one. */
#include "purge_bus.h"

#include <event2/event.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "corral/value.h"
#include "log.h"

struct corral_purge_bus {
    const int *fds;
    unsigned n, worker;
    struct event *ev; /* this worker's end */
    corral_purge_bus_heard_cb *heard;
    void *arg;
};

int *
corral_purge_bus_pairs(unsigned n)
{
    int *fds = calloc(2 * (size_t)n, sizeof(*fds));
    for (unsigned i = 0; fds && i < n; i++) {
        if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, &fds[2 * i]) !=
            0) {
            for (unsigned k = 0; k < 2 * i; k++)
                close(fds[k]);
            free(fds);
            fds = NULL;
        }
    }
    if (fds == NULL)
        corral_log(CORRAL_LOG_WARNING,
                   "no purge bus: a purge reaches one worker only");
    return fds;
}

void
corral_purge_bus_pairs_free(int *fds, unsigned n)
{
    for (unsigned i = 0; fds && i < 2 * n; i++)
        close(fds[i]);
    free(fds);
}

static void
readable(evutil_socket_t fd, short what, void *arg)
{
    struct corral_purge_bus *bus = arg;
    char key[CORRAL_KEY_MAX];
    ssize_t n;
    while ((n = recv(fd, key, sizeof(key), MSG_DONTWAIT)) > 0)
        bus->heard(key, (size_t)n, bus->arg);
}

struct corral_purge_bus *
corral_purge_bus_new(struct event_base *base, const int *fds, unsigned n,
                     unsigned worker, corral_purge_bus_heard_cb *heard,
                     void *arg)
{
    if (worker >= n)
        return NULL;
    struct corral_purge_bus *bus = calloc(1, sizeof(*bus));
    if (bus == NULL)
        return NULL;
    bus->fds = fds;
    bus->n = n;
    bus->worker = worker;
    bus->heard = heard;
    bus->arg = arg;
    bus->ev = event_new(base, fds[2 * worker + 1], EV_READ | EV_PERSIST,
                        readable, bus);
    if (bus->ev == NULL || event_add(bus->ev, NULL) != 0) {
        corral_purge_bus_free(bus);
        return NULL;
    }
    return bus;
}

void
corral_purge_bus_send(struct corral_purge_bus *bus, const char *key, size_t len)
{
    for (unsigned i = 0; i < bus->n; i++)
        if (i != bus->worker &&
            send(bus->fds[2 * i], key, len, MSG_DONTWAIT) < 0)
            corral_log(CORRAL_LOG_WARNING,
                       "purge bus: worker %u did not hear a purge", i);
}

void
corral_purge_bus_free(struct corral_purge_bus *bus)
{
    if (bus == NULL)
        return;
    if (bus->ev)
        event_free(bus->ev);
    free(bus);
}
