/* fuzz-upstream.c — libFuzzer target: upstream response handling in the
 * fetch module (libcurl's parser under our header, body, size and
 * interim-response handling). Each input is what the upstream sends on a
 * fresh connection before closing it; two fetches share the pool, so a
 * response that leaves bytes behind is tried against the second. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "fetch.h"

#define MAX_BODY 4096

static struct event_base *base;
static struct corral_fetch_upstream *up;
static int lfd;
static unsigned answered;

static void
got(const struct corral_fetch_result *r, void *arg)
{
    (void)arg;
    answered++;
    if (r->message == NULL)
        abort();
    if (r->error == 0) {
        if (r->body == NULL || r->body[r->len] != '\0' || r->len > MAX_BODY ||
            r->status < 200 || r->status > 999)
            abort();
    } else if (r->body != NULL) {
        abort();
    }
}

static void
setup(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sin);
    struct corral_fetch_options o = {0};
    char err[256];

    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (base == NULL || lfd < 0 ||
        bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        listen(lfd, 16) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sin, &sl) < 0)
        abort();
    o.scheme = "http";
    o.host = "127.0.0.1";
    o.port = ntohs(sin.sin_port);
    o.timeout_ms = 2000;
    o.max_connections = 1;
    o.max_body = MAX_BODY;
    up = corral_fetch_upstream_new(base, &o, err, sizeof(err));
    if (up == NULL)
        abort();
}

/* Runs the loop until want answers are in: every fetch answers within
 * its 2 s deadline, so this ends. */
static void
wait_for(unsigned want)
{
    while (answered < want)
        event_base_loop(base, EVLOOP_ONCE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned want;
    int fd;

    if (base == NULL)
        setup();
    if (size > 16384)
        return 0;
    want = answered + 2;
    if (corral_fetch_get(up, "/a", got, NULL) == NULL ||
        corral_fetch_get(up, "/b", got, NULL) == NULL)
        abort();
    /* Let the first request reach us, answer it with the input, close. */
    for (int i = 0; i < 1000; i++) {
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd >= 0) {
            char req[4096];
            for (int k = 0; k < 1000 && recv(fd, req, sizeof(req), 0) <= 0; k++)
                event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
            if (send(fd, data, size, MSG_NOSIGNAL) < 0) {
                /* the client went away: fine */
            }
            shutdown(fd, SHUT_WR);
            wait_for(answered + 1);
            close(fd);
            break;
        }
    }
    /* The second fetch: on a new connection, answered the same way (it
     * must never be answered by what the first left behind). */
    for (int i = 0; i < 1000 && answered < want; i++) {
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd >= 0) {
            static const char ok[] =
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
            char req[4096];
            for (int k = 0; k < 1000 && recv(fd, req, sizeof(req), 0) <= 0; k++)
                event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
            if (send(fd, ok, sizeof(ok) - 1, MSG_NOSIGNAL) < 0) {
            }
            wait_for(want);
            close(fd);
        }
    }
    wait_for(want);
    return 0;
}
