/* raw_origin.h — a fake upstream for the unit tests, on a loopback socket
 * and the test's event_base: it reads one request per connection, answers
 * it as the test's table says (by path; a path not in the table gets 200
 * and {"path":"<path>"}), logs the path and closes. Held, it reads and
 * logs requests but answers none until released, so a test can see a
 * fill in flight. */
#ifndef CORRAL_RAW_ORIGIN_H
#define CORRAL_RAW_ORIGIN_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "testlib.h"

struct raw_origin_answer {
    const char *path;
    const char *answer; /* the whole answer: status line, head, body */
};

#define RAW_ORIGIN_LOG 256 /* paths remembered */

struct raw_origin_conn {
    struct raw_origin *origin;
    int fd;
    struct event *ev;
    char buf[4096];
    size_t len;
    bool held;
    char path[256];
    struct raw_origin_conn *next;
};

struct raw_origin {
    struct event_base *base;
    const struct raw_origin_answer *answers;
    size_t n_answers;
    uint16_t port;
    int fd;
    struct event *accept_ev;
    bool hold;      /* answer nothing until raw_origin_release() */
    unsigned total; /* requests read, answered or held */
    char log[RAW_ORIGIN_LOG][256];
    struct raw_origin_conn *conns;
};

static inline void
raw_origin_close(struct raw_origin_conn *c)
{
    struct raw_origin_conn **pp = &c->origin->conns;
    while (*pp != c)
        pp = &(*pp)->next;
    *pp = c->next;
    event_free(c->ev);
    close(c->fd);
    free(c);
}

static inline void
raw_origin_respond(struct raw_origin_conn *c)
{
    const struct raw_origin *o = c->origin;
    char echo[512];
    const char *out = NULL;
    for (size_t i = 0; i < o->n_answers; i++)
        if (strcmp(c->path, o->answers[i].path) == 0)
            out = o->answers[i].answer;
    if (out == NULL) {
        char body[300];
        int n = snprintf(body, sizeof(body), "{\"path\":\"%s\"}", c->path);
        snprintf(echo, sizeof(echo),
                 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 "Content-Length: %d\r\n\r\n%s",
                 n, body);
        out = echo;
    }
    CHECK(write(c->fd, out, strlen(out)) == (ssize_t)strlen(out));
    raw_origin_close(c);
}

static inline void
raw_origin_read(evutil_socket_t fd, short what, void *arg)
{
    struct raw_origin_conn *c = arg;
    struct raw_origin *o = c->origin;
    (void)what;
    ssize_t n = read(fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
    if (n <= 0) {
        raw_origin_close(c);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    if (c->held || strstr(c->buf, "\r\n\r\n") == NULL)
        return;
    sscanf(c->buf, "GET %255s ", c->path);
    snprintf(o->log[o->total % RAW_ORIGIN_LOG], sizeof(o->log[0]), "%s",
             c->path);
    o->total++;
    if (o->hold)
        c->held = true;
    else
        raw_origin_respond(c);
}

static inline void
raw_origin_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct raw_origin *o = arg;
    (void)what;
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        return;
    struct raw_origin_conn *c = calloc(1, sizeof(*c));
    CHECK(c != NULL);
    c->origin = o;
    c->fd = fd;
    c->ev = event_new(o->base, fd, EV_READ | EV_PERSIST, raw_origin_read, c);
    CHECK(c->ev != NULL && event_add(c->ev, NULL) == 0);
    c->next = o->conns;
    o->conns = c;
}

/* Listens on a free loopback port (o->port) and serves answers (borrowed;
 * n of them) on base. */
static inline void
raw_origin_start(struct raw_origin *o, struct event_base *base,
                 const struct raw_origin_answer *answers, size_t n)
{
    memset(o, 0, sizeof(*o));
    o->base = base;
    o->answers = answers;
    o->n_answers = n;
    o->fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(o->fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t salen = sizeof(sa);
    CHECK(bind(o->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CHECK(listen(o->fd, 64) == 0);
    CHECK(getsockname(o->fd, (struct sockaddr *)&sa, &salen) == 0);
    o->port = ntohs(sa.sin_port);
    o->accept_ev =
        event_new(base, o->fd, EV_READ | EV_PERSIST, raw_origin_accept, o);
    CHECK(o->accept_ev != NULL && event_add(o->accept_ev, NULL) == 0);
}

/* Answers what it holds and stops holding. */
static inline void
raw_origin_release(struct raw_origin *o)
{
    o->hold = false;
    struct raw_origin_conn *c = o->conns, *next;
    for (; c != NULL; c = next) {
        next = c->next;
        if (c->held)
            raw_origin_respond(c);
    }
}

/* How many requests for path it read (of its last RAW_ORIGIN_LOG). */
static inline unsigned
raw_origin_calls(const struct raw_origin *o, const char *path)
{
    unsigned n = 0;
    unsigned kept = o->total < RAW_ORIGIN_LOG ? o->total : RAW_ORIGIN_LOG;
    for (unsigned i = 0; i < kept; i++)
        n += strcmp(o->log[i], path) == 0;
    return n;
}

/* Closes the socket and every connection. */
static inline void
raw_origin_stop(struct raw_origin *o)
{
    while (o->conns != NULL)
        raw_origin_close(o->conns);
    event_free(o->accept_ev);
    close(o->fd);
}

#endif
