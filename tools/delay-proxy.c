/* delay-proxy.c — a TCP proxy on loopback that holds every byte back for a
 * fixed time each way, so tests and benchmarks can put a slow network
 * between corral and Redis (30 ms of round trip, say) on one machine.
 *
 *   delay-proxy --listen PORT|0 --portfile F --to HOST:PORT --delay-ms N
 *
 * Owns its listener and a pair of bufferevents per accepted connection.
 * Each direction keeps a queue of chunks (one per read, moved whole out of
 * the bufferevent, never copied) stamped with the time they are due, N/2 ms
 * after they arrived; one timer per direction fires at the head's due time
 * and moves every due chunk to the other side, so order is kept. A side
 * that closes is a chunk too: the other side is closed once what came
 * before it has been delivered. A direction holding more than HIGH_BYTES
 * stops reading until it is below LOW_BYTES again. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>

#define HIGH_BYTES (8u << 20)
#define LOW_BYTES (2u << 20)

struct chunk {
    TAILQ_ENTRY(chunk) link;
    uint64_t due_us;      /* monotonic */
    struct evbuffer *buf; /* NULL: the sending side closed */
};

TAILQ_HEAD(chunk_list, chunk);

struct link;

/* One direction of a link: bytes read from `from`, written to `to`. */
struct dir {
    struct link *l;
    struct bufferevent *from, *to;
    struct chunk_list q;
    size_t held;  /* bytes in q */
    bool closed;  /* from is done: a closing chunk is queued */
    bool stopped; /* reading paused for backpressure */
    struct event *timer;
};

struct link {
    TAILQ_ENTRY(link) next;
    struct bufferevent *client, *server;
    struct dir up, down; /* client to server, server to client */
    bool closing;        /* flushing `to` before the link goes */
};

TAILQ_HEAD(link_list, link);

static struct event_base *base;
static struct sockaddr_storage target;
static int target_len;
static uint64_t half_us; /* the delay of one direction */
static struct link_list links = TAILQ_HEAD_INITIALIZER(links);

static uint64_t
now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void
nodelay(struct bufferevent *bev)
{
    int one = 1;
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void
link_free(struct link *l)
{
    struct dir *dirs[2] = {&l->up, &l->down};
    for (int i = 0; i < 2; i++) {
        struct chunk *c;
        while ((c = TAILQ_FIRST(&dirs[i]->q)) != NULL) {
            TAILQ_REMOVE(&dirs[i]->q, c, link);
            if (c->buf)
                evbuffer_free(c->buf);
            free(c);
        }
        event_free(dirs[i]->timer);
    }
    bufferevent_free(l->client);
    bufferevent_free(l->server);
    TAILQ_REMOVE(&links, l, next);
    free(l);
}

static void
arm(struct dir *d)
{
    struct chunk *c = TAILQ_FIRST(&d->q);
    if (c == NULL)
        return;
    uint64_t now = now_us();
    uint64_t in = c->due_us > now ? c->due_us - now : 0;
    struct timeval tv = {(time_t)(in / 1000000u), (suseconds_t)(in % 1000000u)};
    evtimer_add(d->timer, &tv);
}

/* Reading resumes once what this direction holds has gone down. */
static void
flow(struct dir *d)
{
    size_t out = evbuffer_get_length(bufferevent_get_output(d->to));
    if (d->stopped && !d->closed && d->held + out < LOW_BYTES) {
        d->stopped = false;
        bufferevent_enable(d->from, EV_READ);
    }
}

/* The side a closing chunk reached gets what it was sent, then the link
 * goes (write_cb frees it once the output is empty). */
static void
close_after_flush(struct link *l, struct bufferevent *to)
{
    l->closing = true;
    bufferevent_disable(l->client, EV_READ);
    bufferevent_disable(l->server, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(to)) == 0)
        link_free(l);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct dir *d = arg;
    uint64_t now = now_us() + 200; /* a timer may fire a hair early */
    struct chunk *c;

    (void)fd;
    (void)what;
    while ((c = TAILQ_FIRST(&d->q)) != NULL && c->due_us <= now) {
        TAILQ_REMOVE(&d->q, c, link);
        if (c->buf == NULL) {
            free(c);
            close_after_flush(d->l, d->to);
            return;
        }
        d->held -= evbuffer_get_length(c->buf);
        evbuffer_add_buffer(bufferevent_get_output(d->to), c->buf);
        evbuffer_free(c->buf);
        free(c);
    }
    arm(d);
    flow(d);
}

static struct dir *
dir_of(struct link *l, struct bufferevent *from)
{
    return from == l->client ? &l->up : &l->down;
}

static void
hold(struct dir *d, struct evbuffer *buf)
{
    struct chunk *c = calloc(1, sizeof(*c));
    if (c == NULL)
        abort();
    c->due_us = now_us() + half_us;
    c->buf = buf;
    if (buf != NULL)
        d->held += evbuffer_get_length(buf);
    bool idle = TAILQ_EMPTY(&d->q);
    TAILQ_INSERT_TAIL(&d->q, c, link);
    if (idle)
        arm(d);
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
    struct link *l = arg;
    struct dir *d = dir_of(l, bev);
    struct evbuffer *buf = evbuffer_new();

    if (buf == NULL)
        abort();
    bufferevent_read_buffer(bev, buf);
    if (evbuffer_get_length(buf) == 0) {
        evbuffer_free(buf);
        return;
    }
    hold(d, buf);
    if (d->held >= HIGH_BYTES) {
        d->stopped = true;
        bufferevent_disable(bev, EV_READ);
    }
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
    struct link *l = arg;

    if (l->closing) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            link_free(l);
        return;
    }
    /* bev's output drained: the direction that writes to it may read. */
    flow(bev == l->client ? &l->down : &l->up);
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct link *l = arg;
    struct dir *d = dir_of(l, bev);

    if (what & BEV_EVENT_CONNECTED) {
        nodelay(bev);
        return;
    }
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) || d->closed)
        return;
    if (l->closing) {
        link_free(l); /* the side being flushed went away */
        return;
    }
    d->closed = true;
    bufferevent_disable(bev, EV_READ);
    hold(d, NULL);
}

static void
dir_init(struct link *l, struct dir *d, struct bufferevent *from,
         struct bufferevent *to)
{
    d->l = l;
    d->from = from;
    d->to = to;
    TAILQ_INIT(&d->q);
    d->timer = evtimer_new(base, timer_cb, d);
    if (d->timer == NULL)
        abort();
}

static void
accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
          int salen, void *arg)
{
    struct link *l = calloc(1, sizeof(*l));

    (void)lis;
    (void)sa;
    (void)salen;
    (void)arg;
    if (l == NULL)
        abort();
    l->client = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    l->server = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (l->client == NULL || l->server == NULL)
        abort();
    TAILQ_INSERT_TAIL(&links, l, next);
    dir_init(l, &l->up, l->client, l->server);
    dir_init(l, &l->down, l->server, l->client);
    nodelay(l->client);
    bufferevent_setcb(l->client, read_cb, write_cb, event_cb, l);
    bufferevent_setcb(l->server, read_cb, write_cb, event_cb, l);
    bufferevent_enable(l->client, EV_READ | EV_WRITE);
    bufferevent_enable(l->server, EV_READ | EV_WRITE);
    /* A refused connect reports an error: the client is closed after the
     * delay, as a far server would. */
    bufferevent_socket_connect(l->server, (struct sockaddr *)&target,
                               target_len);
}

static void
stop_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    (void)arg;
    event_base_loopexit(base, NULL);
}

static int
write_portfile(const char *path, unsigned port)
{
    char tmp[4096];
    FILE *f;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp) ||
        (f = fopen(tmp, "w")) == NULL)
        return -1;
    fprintf(f, "%u\n", port);
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        return -1;
    return 0;
}

static void
usage(FILE *out)
{
    fprintf(out, "usage: delay-proxy --listen PORT|0 [--portfile F] "
                 "--to HOST:PORT --delay-ms N\n");
}

/* Options, the listening socket and the loop: a tool's main, long only
 * for its option parsing, which reads best in one place. */
int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"portfile", required_argument, NULL, 'p'},
        {"to", required_argument, NULL, 't'},
        {"delay-ms", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *portfile = NULL, *to = NULL;
    long listen_port = -1, delay_ms = -1;
    char *end;
    int o;

    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'l':
            listen_port = strtol(optarg, &end, 10);
            if (*end != '\0' || listen_port < 0 || listen_port > 65535)
                listen_port = -2;
            break;
        case 'p':
            portfile = optarg;
            break;
        case 't':
            to = optarg;
            break;
        case 'd':
            delay_ms = strtol(optarg, &end, 10);
            if (*end != '\0' || delay_ms < 0 || delay_ms > 3600000)
                delay_ms = -2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    target_len = (int)sizeof(target);
    if (optind != argc || listen_port < 0 || delay_ms < 0 || to == NULL ||
        evutil_parse_sockaddr_port(to, (struct sockaddr *)&target,
                                   &target_len) != 0) {
        usage(stderr);
        return 2;
    }
    half_us = (uint64_t)delay_ms * 1000u / 2u;
    signal(SIGPIPE, SIG_IGN);

    /* Timers to the microsecond (timerfd), not epoll's milliseconds: a
     * 1 ms delay must not become 2 or 3. */
    struct event_config *ec = event_config_new();
    if (ec != NULL)
        event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
    base = ec ? event_base_new_with_config(ec) : event_base_new();
    event_config_free(ec);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)listen_port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct evconnlistener *lis = evconnlistener_new_bind(
        base, accept_cb, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 1024,
        (struct sockaddr *)&sin, sizeof(sin));
    if (base == NULL || lis == NULL) {
        fprintf(stderr, "delay-proxy: cannot listen on 127.0.0.1:%ld: %s\n",
                listen_port, strerror(errno));
        return 1;
    }
    struct sockaddr_in bound;
    socklen_t blen = sizeof(bound);
    getsockname(evconnlistener_get_fd(lis), (struct sockaddr *)&bound, &blen);
    unsigned port = ntohs(bound.sin_port);
    if (portfile != NULL ? write_portfile(portfile, port) != 0
                         : printf("%u\n", port) < 0 || fflush(stdout) != 0) {
        fprintf(stderr, "delay-proxy: cannot write the port: %s\n",
                strerror(errno));
        return 1;
    }
    struct event *term = evsignal_new(base, SIGTERM, stop_cb, NULL);
    struct event *intr = evsignal_new(base, SIGINT, stop_cb, NULL);
    evsignal_add(term, NULL);
    evsignal_add(intr, NULL);

    event_base_dispatch(base);

    struct link *l;
    while ((l = TAILQ_FIRST(&links)) != NULL)
        link_free(l);
    event_free(term);
    event_free(intr);
    evconnlistener_free(lis);
    event_base_free(base);
    return 0;
}
