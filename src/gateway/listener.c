/* listener.c — bind, accept in batches, and descriptors running out: a
 * spare descriptor is given up to accept and close the client (so the
 * listener does not spin on a connection it cannot take), or, without one,
 * accepting pauses for 100 ms. */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#define ACCEPT_BATCH 64 /* accepts per wakeup */
#define PAUSE_MS 100    /* no descriptor and no spare: wait this long */

struct corral_listener {
    int fd;
    int spare_fd; /* given up to accept-and-close on EMFILE */
    uint16_t port;
    uint64_t refused;
    struct event *ev;
    struct event *pause_ev; /* resumes accepting after running out */
    corral_accept_cb *cb;
    void *arg;
};

static void
on_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct corral_listener *l = arg;

    (void)what;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EMFILE && errno != ENFILE)
                return;
            if (l->spare_fd >= 0) {
                close(l->spare_fd);
                fd = accept(lfd, NULL, NULL);
                if (fd >= 0)
                    close(fd);
                l->refused++;
                l->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            } else {
                struct timeval tv = {0, PAUSE_MS * 1000};
                event_del(l->ev);
                event_add(l->pause_ev, &tv);
            }
            return;
        }
        l->cb(fd, l->arg);
    }
}

static void
on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct corral_listener *l = arg;

    (void)fd;
    (void)what;
    event_add(l->ev, NULL);
    if (l->spare_fd < 0)
        l->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

int
corral_listen_socket(const char *h, uint16_t p, int backlog, bool reuse_port,
                     char *err, size_t errlen)
{
    char host[256], port[8];
    const char *node = NULL;

    if (h && h[0]) {
        size_t len = strlen(h);
        if (len >= sizeof host) {
            snprintf(err, errlen, "listen: host name too long");
            return -1;
        }
        if (h[0] == '[' && len > 2 && h[len - 1] == ']') {
            memcpy(host, h + 1, len - 2);
            host[len - 2] = '\0';
        } else {
            memcpy(host, h, len + 1);
        }
        node = host;
    }
    snprintf(port, sizeof port, "%u", (unsigned)p);

    struct addrinfo hints = {0}, *res, *ai;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(node, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "listen %s:%s: %s", node ? node : "*", port,
                 gai_strerror(rc));
        return -1;
    }
    int fd = -1, saved = 0;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family,
                    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (reuse_port &&
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
            saved = errno;
            close(fd);
            fd = -1;
            continue;
        }
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            listen(fd, backlog > 0 ? backlog : 511) == 0)
            break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(err, errlen, "listen %s:%s: %s", node ? node : "*", port,
                 strerror(saved ? saved : EADDRNOTAVAIL));
    return fd;
}

/* host_fd >= 0: adopt that listening socket instead of binding one. */
static struct corral_listener *
listener_new(struct event_base *base, int host_fd, const char *host,
             uint16_t port, int backlog, bool reuse_port, corral_accept_cb *cb,
             void *arg, char *err, size_t errlen)
{
    struct corral_listener *l = calloc(1, sizeof(*l));
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof ss;

    if (l == NULL) {
        snprintf(err, errlen, "listen: out of memory");
        return NULL;
    }
    l->cb = cb;
    l->arg = arg;
    l->spare_fd = -1;
    l->fd = host_fd >= 0 ? host_fd
                         : corral_listen_socket(host, port, backlog, reuse_port,
                                                err, errlen);
    if (l->fd < 0) {
        free(l);
        return NULL;
    }
    if (host_fd >= 0 &&
        fcntl(l->fd, F_SETFL, fcntl(l->fd, F_GETFL) | O_NONBLOCK) < 0) {
        snprintf(err, errlen, "listen: %s", strerror(errno));
        free(l);
        return NULL;
    }
    if (getsockname(l->fd, (struct sockaddr *)&ss, &sslen) == 0)
        l->port = ntohs(ss.ss_family == AF_INET6
                            ? ((struct sockaddr_in6 *)&ss)->sin6_port
                            : ((struct sockaddr_in *)&ss)->sin_port);
    l->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    l->ev = event_new(base, l->fd, EV_READ | EV_PERSIST, on_accept, l);
    l->pause_ev = event_new(base, -1, 0, on_resume, l);
    if (!l->ev || !l->pause_ev || event_add(l->ev, NULL) < 0) {
        snprintf(err, errlen, "listen: cannot add events");
        corral_listener_free(l);
        return NULL;
    }
    return l;
}

struct corral_listener *
corral_listener_new(struct event_base *base, const char *host, uint16_t port,
                    int backlog, bool reuse_port, corral_accept_cb *cb,
                    void *arg, char *err, size_t errlen)
{
    return listener_new(base, -1, host, port, backlog, reuse_port, cb, arg, err,
                        errlen);
}

struct corral_listener *
corral_listener_adopt(struct event_base *base, int fd, corral_accept_cb *cb,
                      void *arg, char *err, size_t errlen)
{
    return listener_new(base, fd, NULL, 0, 0, false, cb, arg, err, errlen);
}

uint16_t
corral_listener_port(const struct corral_listener *l)
{
    return l->port;
}

uint64_t
corral_listener_refused(const struct corral_listener *l)
{
    return l->refused;
}

void
corral_listener_free(struct corral_listener *l)
{
    if (l == NULL)
        return;
    if (l->ev)
        event_free(l->ev);
    if (l->pause_ev)
        event_free(l->pause_ev);
    if (l->spare_fd >= 0)
        close(l->spare_fd);
    if (l->fd >= 0)
        close(l->fd);
    free(l);
}
