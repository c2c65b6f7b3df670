/* tools/rate-load.c — a small HTTP/1.1 load generator for tools/bench: a fixed
 * request schedule, latency measured from each request's scheduled time.
 *
 *   rate-load -p PORT [-H 127.0.0.1] [-c CONNS] [-n REQUESTS] [-r RATE]
 *             [-d MAX_SECONDS] [-u PATH] [-k KEYS] [-Q] [-s SEED]
 *             [-b CONNECT_BATCH] [-S SETTLE_MS] [-t HEADER]
 *
 * CONNS keep-alive connections are opened first (in batches of CONNECT_BATCH,
 * each batch fully connected before the next), then after SETTLE_MS the clock
 * t0 starts. Request i is due at t0 + i/RATE (RATE 0: every request is due at
 * t0, a burst). A due request goes out on the next idle connection (one
 * request in flight per connection, no pipelining); when none is idle it
 * waits, and its latency still counts from its scheduled time, so a stalled
 * server shows in the percentiles instead of slowing the schedule down (no
 * coordinated omission). PATH may contain {k}, replaced by a key 1..KEYS:
 * random (xorshift, SEED) or, with -Q, request i gets key i % KEYS + 1.
 * The run stops when all REQUESTS are answered or MAX_SECONDS after t0.
 * SIGUSR1 ends the schedule early: no request is sent after it, the ones
 * in flight are waited for, and requests= counts only those sent (a load
 * that lasts exactly as long as something else, e.g. a resharding).
 *
 * Output, one key=value per line: requests, connected, connect_failed,
 * connect_ms, answered, ok (2xx), non2xx, errors (a connection lost with a
 * request in flight, an unparsable answer), unfinished, elapsed_s, rate
 * (answers per second), p50_ms p90_ms p99_ms p999_ms max_ms (from the
 * scheduled time), svc_p50_ms svc_p99_ms (from the send: what a closed-loop
 * tool would report), last_ms (t0 to the last answer), and with -t the
 * answers by that header's value (digits replaced by #): "tally COUNT VALUE".
 * Exit 0 when it ran (whatever the answers), 2 on bad usage or no connection.
 * Build: cc -O2 -o rate-load tools/rate-load.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define INBUF 4096
#define MAX_TALLY 32
#define NOT_DONE UINT32_MAX

enum { C_CONNECTING, C_IDLE, C_BUSY, C_DEAD };

struct conn {
    int fd, state;
    long req;        /* request in flight */
    int64_t sent_ns; /* when it was written */
    char out[512];
    int outlen, outoff;
    char *in;
    int inlen;
    long body_left; /* -1 while the head is being read */
    int status, close_after, tally;
};

static const char *host = "127.0.0.1", *path = "/", *tally_header;
static int port, nconns = 64, batch = 500, settle_ms = 200, seq;
static long nreq = -1, keys = 1;
static double rate, max_s = 30;
static uint64_t rng = 88172645463325252ull;
static struct sockaddr_in addr;
static int ep;
static struct conn *conns;
static int *idle, nidle;
static uint32_t *lat_us, *svc_us;
static int64_t t0, last_ns;
static long answered, ok, non2xx, errors, completed, connect_failed;
static volatile sig_atomic_t stop_sched;
static char tally_val[MAX_TALLY][104];
static long tally_cnt[MAX_TALLY], tally_other;
static int ntally;

static void
on_usr1(int sig)
{
    (void)sig;
    stop_sched = 1;
}

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t
sched_ns(long i)
{
    return rate > 0 ? t0 + (int64_t)((double)i * 1e9 / rate) : t0;
}

static void
die(const char *msg)
{
    fprintf(stderr, "rate-load: %s\n", msg);
    exit(2);
}

static void
watch(struct conn *c, int op, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, op, c->fd, &ev) < 0)
        die("epoll_ctl failed");
}

static int
start_connect(struct conn *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 &&
        errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    c->state = C_CONNECTING;
    c->inlen = 0;
    watch(c, EPOLL_CTL_ADD, EPOLLOUT);
    return 0;
}

static void
hard_close(struct conn *c)
{
    /* RST instead of FIN: 10,000 connections leave no TIME_WAIT behind. */
    struct linger lg = {1, 0};
    if (c->fd < 0)
        return;
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(c->fd);
    c->fd = -1;
}

static void
make_idle(struct conn *c)
{
    c->state = C_IDLE;
    idle[nidle++] = (int)(c - conns);
}

/* Takes an idle connection off the idle stack (the server closed it). */
static void
unidle(struct conn *c)
{
    int i = (int)(c - conns);
    for (int k = 0; k < nidle; k++)
        if (idle[k] == i) {
            idle[k] = idle[--nidle];
            return;
        }
}

/* The connection is gone: the request in flight (if any) is an error; reconnect
 * only while requests remain to be sent. */
static void
lost(struct conn *c, long next)
{
    if (c->state == C_IDLE)
        unidle(c); /* it goes back on the stack once reconnected */
    if (c->state == C_BUSY) {
        errors++;
        completed++;
    }
    if (c->state == C_CONNECTING)
        connect_failed++;
    hard_close(c);
    c->state = C_DEAD;
    if (next < nreq && start_connect(c) < 0)
        c->state = C_DEAD;
}

static void
send_req(struct conn *c, long i)
{
    long key = seq ? i % keys + 1
                   : (long)(((rng ^= rng >> 12, rng ^= rng << 25,
                              rng ^= rng >> 27, rng * 2685821657736338717ull) >>
                             1) %
                            (uint64_t)keys) +
                         1;
    char p[256];
    const char *m = strstr(path, "{k}");
    if (m)
        snprintf(p, sizeof(p), "%.*s%ld%s", (int)(m - path), path, key, m + 3);
    else
        snprintf(p, sizeof(p), "%s", path);
    c->outlen =
        snprintf(c->out, sizeof(c->out),
                 "GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n", p, host, port);
    c->outoff = 0;
    c->req = i;
    c->state = C_BUSY;
    c->inlen = 0;
    c->body_left = -1;
    c->sent_ns = now_ns();
    ssize_t w = write(c->fd, c->out, c->outlen);
    if (w > 0)
        c->outoff = (int)w;
    if (c->outoff < c->outlen) {
        if (w < 0 && errno != EAGAIN) {
            lost(c, i + 1);
            return;
        }
        watch(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
    }
}

static void
tally(const char *v, size_t len)
{
    char norm[104];
    size_t n = 0;
    while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    for (size_t i = 0; i < len && n < 100; i++) {
        if (isdigit((unsigned char)v[i])) {
            if (n == 0 || norm[n - 1] != '#')
                norm[n++] = '#';
        } else
            norm[n++] = v[i];
    }
    norm[n] = 0;
    for (int i = 0; i < ntally; i++)
        if (strcmp(tally_val[i], norm) == 0) {
            tally_cnt[i]++;
            return;
        }
    if (ntally < MAX_TALLY) {
        strcpy(tally_val[ntally], norm);
        tally_cnt[ntally++] = 1;
    } else
        tally_other++;
}

/* Parses the head in c->in[0..len): status, Content-Length, Connection. */
static int
parse_head(struct conn *c, size_t len, const char **tv, size_t *tvlen)
{
    long cl = -1;
    *tv = NULL;
    if (len < 12 || strncmp(c->in, "HTTP/1.", 7) != 0)
        return -1;
    c->status = atoi(c->in + 9);
    c->close_after = c->in[7] == '0';
    const char *p = memchr(c->in, '\n', len), *end = c->in + len;
    while (p && ++p < end) {
        const char *eol = memchr(p, '\n', end - p), *colon;
        if (!eol)
            break;
        colon = memchr(p, ':', eol - p);
        if (colon) {
            size_t nlen = colon - p;
            const char *v = colon + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            size_t vlen = eol - v;
            if (vlen && v[vlen - 1] == '\r')
                vlen--;
            if (nlen == 14 && strncasecmp(p, "content-length", 14) == 0)
                cl = strtol(v, NULL, 10);
            else if (nlen == 10 && strncasecmp(p, "connection", 10) == 0)
                c->close_after = vlen >= 5 && strncasecmp(v, "close", 5) == 0;
            else if (nlen == 17 && strncasecmp(p, "transfer-encoding", 17) == 0)
                return -1; /* not needed by tools/bench: every server here sends
                              a length */
            if (tally_header && nlen == strlen(tally_header) &&
                strncasecmp(p, tally_header, nlen) == 0) {
                *tv = v;
                *tvlen = vlen;
            }
        }
        p = eol;
    }
    if (cl < 0 && c->status != 204 && c->status != 304)
        return -1;
    return cl < 0 ? 0 : (int)cl;
}

static void
answer_done(struct conn *c, long next)
{
    int64_t t = now_ns();
    int64_t l = (t - sched_ns(c->req)) / 1000, s = (t - c->sent_ns) / 1000;
    lat_us[c->req] = l < 0 ? 0 : (uint32_t)(l > 4000000000 ? 4000000000 : l);
    svc_us[c->req] = s < 0 ? 0 : (uint32_t)(s > 4000000000 ? 4000000000 : s);
    last_ns = t;
    answered++;
    completed++;
    if (c->status >= 200 && c->status < 300)
        ok++;
    else
        non2xx++;
    if (c->close_after) {
        hard_close(c);
        c->state = C_DEAD;
        if (next < nreq && start_connect(c) < 0)
            c->state = C_DEAD;
    } else
        make_idle(c);
}

static void
on_readable(struct conn *c, long next)
{
    for (;;) {
        ssize_t r = read(c->fd, c->in + c->inlen, INBUF - c->inlen);
        if (r < 0 && errno == EAGAIN)
            return;
        if (r <= 0 || c->state != C_BUSY) {
            lost(c, next);
            return;
        }
        if (c->body_left >= 0) { /* reading the body: discard it */
            c->body_left -= r;
        } else {
            c->inlen += (int)r;
            char *e = memmem(c->in, c->inlen, "\r\n\r\n", 4);
            if (!e) {
                if (c->inlen == INBUF) {
                    lost(c, next);
                    return;
                }
                continue;
            }
            size_t hlen = e + 4 - c->in;
            const char *tv;
            size_t tvlen = 0;
            int cl = parse_head(c, hlen, &tv, &tvlen);
            if (cl < 0) {
                lost(c, next);
                return;
            }
            if (tv)
                tally(tv, tvlen);
            c->body_left = cl - (long)(c->inlen - hlen);
            c->inlen = 0;
        }
        if (c->body_left < 0) { /* more than one answer: not expected */
            lost(c, next);
            return;
        }
        if (c->body_left == 0) {
            answer_done(c, next);
            return;
        }
    }
}

static int
cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile (per mille) of the first n sorted values, in ms. */
static double
pct(const uint32_t *v, long n, int per_mille)
{
    if (n == 0)
        return -1;
    long rank = (n * per_mille + 999) / 1000;
    if (rank < 1)
        rank = 1;
    return v[rank - 1] / 1000.0;
}

static long
compact_sorted(uint32_t *v)
{
    long n = 0;
    for (long i = 0; i < nreq; i++)
        if (v[i] != NOT_DONE)
            v[n++] = v[i];
    qsort(v, n, sizeof(*v), cmp_u32);
    return n;
}

/* One straight run, read top to bottom: options, connections, the paced
 * load, then the report. Split, it would only pass its dozen settings
 * around. */
int
main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "p:H:c:n:r:d:u:k:Qs:b:S:t:")) != -1) {
        switch (opt) {
        case 'p':
            port = atoi(optarg);
            break;
        case 'H':
            host = optarg;
            break;
        case 'c':
            nconns = atoi(optarg);
            break;
        case 'n':
            nreq = atol(optarg);
            break;
        case 'r':
            rate = atof(optarg);
            break;
        case 'd':
            max_s = atof(optarg);
            break;
        case 'u':
            path = optarg;
            break;
        case 'k':
            keys = atol(optarg);
            break;
        case 'Q':
            seq = 1;
            break;
        case 's':
            rng = strtoull(optarg, NULL, 10) * 2654435761u + 1;
            break;
        case 'b':
            batch = atoi(optarg);
            break;
        case 'S':
            settle_ms = atoi(optarg);
            break;
        case 't':
            tally_header = optarg;
            break;
        default:
            fprintf(
                stderr,
                "usage: rate-load -p PORT [-H HOST] [-c CONNS] [-n REQUESTS] "
                "[-r RATE] [-d MAX_SECONDS] [-u PATH] [-k KEYS] [-Q] [-s SEED] "
                "[-b BATCH] [-S SETTLE_MS] [-t HEADER]\n");
            return 2;
        }
    }
    if (nreq < 0)
        nreq = nconns;
    if (port <= 0 || nconns <= 0 || nreq <= 0 || rate < 0 || max_s <= 0 ||
        keys <= 0 || batch <= 0 || strlen(path) > 200)
        die("bad arguments (see the comment at the top of tools/rate-load.c)");
    if (nreq > 50000000)
        die("at most 50,000,000 requests");

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (rlim_t)nconns + 16 > rl.rlim_cur)
        die("not enough file descriptors for -c (raise ulimit -n)");
    signal(SIGPIPE, SIG_IGN);
    signal(SIGUSR1, on_usr1);

    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1)
        die("-H must be an IPv4 address");

    conns = calloc(nconns, sizeof(*conns));
    idle = calloc(nconns, sizeof(*idle));
    lat_us = malloc(nreq * sizeof(*lat_us));
    svc_us = malloc(nreq * sizeof(*svc_us));
    char *inbufs = malloc((size_t)nconns * INBUF);
    if (!conns || !idle || !lat_us || !svc_us || !inbufs)
        die("out of memory");
    for (long i = 0; i < nreq; i++)
        lat_us[i] = svc_us[i] = NOT_DONE;
    ep = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (ep < 0 || tfd < 0)
        die("epoll or timerfd failed");
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);

    enum { MAXEV = 1024 };
    struct epoll_event evs[MAXEV];

    /* Connect, a batch at a time. */
    int64_t c0 = now_ns();
    int connected = 0;
    for (int b0 = 0; b0 < nconns; b0 += batch) {
        int b1 = b0 + batch < nconns ? b0 + batch : nconns, pending = 0;
        for (int i = b0; i < b1; i++) {
            conns[i].in = inbufs + (size_t)i * INBUF;
            if (start_connect(&conns[i]) < 0) {
                conns[i].fd = -1;
                conns[i].state = C_DEAD;
                connect_failed++;
            } else
                pending++;
        }
        int64_t bdeadline = now_ns() + 10000000000ll;
        while (pending > 0 && now_ns() < bdeadline) {
            int n = epoll_wait(ep, evs, MAXEV, 100);
            for (int e = 0; e < n; e++) {
                struct conn *c = evs[e].data.ptr;
                if (!c || c->state != C_CONNECTING)
                    continue;
                int err = 0;
                socklen_t el = sizeof(err);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                pending--;
                if (err) {
                    connect_failed++;
                    hard_close(c);
                    c->state = C_DEAD;
                } else {
                    watch(c, EPOLL_CTL_MOD, EPOLLIN);
                    make_idle(c);
                    connected++;
                }
            }
        }
        for (int i = b0; i < b1; i++)
            if (conns[i].state == C_CONNECTING) {
                connect_failed++;
                hard_close(&conns[i]);
                conns[i].state = C_DEAD;
            }
    }
    int64_t connect_ns = now_ns() - c0;
    if (connected == 0)
        die("no connection could be made");
    if (settle_ms > 0)
        usleep((useconds_t)settle_ms * 1000);

    t0 = now_ns();
    int64_t deadline = t0 + (int64_t)(max_s * 1e9), armed = -1;
    long next = 0;
    while (completed < nreq) {
        int64_t now = now_ns();
        if (now >= deadline)
            break;
        if (stop_sched && nreq > next) {
            nreq = next;
            if (completed >= nreq)
                break;
        }
        long due =
            rate > 0 ? (long)((double)(now - t0) * rate / 1e9) + 1 : nreq;
        if (due > nreq)
            due = nreq;
        while (next < due && nidle > 0) {
            struct conn *c = &conns[idle[--nidle]];
            send_req(c, next++);
        }
        if (rate > 0 && next < nreq && next >= due && sched_ns(next) != armed) {
            armed = sched_ns(next);
            struct itimerspec its = {
                .it_value = {armed / 1000000000, armed % 1000000000}};
            timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        }
        int alive = 0;
        for (int i = 0; i < nconns && !alive; i++)
            alive = conns[i].state != C_DEAD;
        if (!alive)
            break;
        int timeout = (int)((deadline - now) / 1000000) + 1;
        int n = epoll_wait(ep, evs, MAXEV, timeout);
        for (int e = 0; e < n; e++) {
            struct conn *c = evs[e].data.ptr;
            if (!c) {
                uint64_t x;
                while (read(tfd, &x, sizeof(x)) > 0)
                    ;
                continue;
            }
            if (c->fd < 0)
                continue;
            if (c->state == C_CONNECTING) {
                int err = 0;
                socklen_t el = sizeof(err);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err)
                    lost(c, next);
                else {
                    watch(c, EPOLL_CTL_MOD, EPOLLIN);
                    make_idle(c);
                }
                continue;
            }
            if ((evs[e].events & EPOLLOUT) && c->state == C_BUSY &&
                c->outoff < c->outlen) {
                ssize_t w =
                    write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
                if (w < 0 && errno != EAGAIN) {
                    lost(c, next);
                    continue;
                }
                if (w > 0)
                    c->outoff += (int)w;
                if (c->outoff == c->outlen)
                    watch(c, EPOLL_CTL_MOD, EPOLLIN);
            }
            if (evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                on_readable(c, next);
        }
    }
    int64_t end = now_ns();
    for (int i = 0; i < nconns; i++)
        hard_close(&conns[i]);

    long nl = compact_sorted(lat_us), ns = compact_sorted(svc_us);
    double elapsed = (end - t0) / 1e9;
    printf("requests=%ld\nconnected=%d\nconnect_failed=%ld\nconnect_ms=%.1f\n",
           nreq, connected, connect_failed, connect_ns / 1e6);
    printf("answered=%ld\nok=%ld\nnon2xx=%ld\nerrors=%ld\nunfinished=%ld\n",
           answered, ok, non2xx, errors, nreq - completed);
    printf("elapsed_s=%.3f\nrate=%.1f\n", elapsed,
           elapsed > 0 ? answered / elapsed : 0);
    printf("p50_ms=%.3f\np90_ms=%.3f\np99_ms=%.3f\np999_ms=%.3f\nmax_ms=%.3f\n",
           pct(lat_us, nl, 500), pct(lat_us, nl, 900), pct(lat_us, nl, 990),
           pct(lat_us, nl, 999), nl ? lat_us[nl - 1] / 1000.0 : -1);
    printf("svc_p50_ms=%.3f\nsvc_p99_ms=%.3f\n", pct(svc_us, ns, 500),
           pct(svc_us, ns, 990));
    printf("last_ms=%.3f\n", answered ? (last_ns - t0) / 1e6 : -1);
    for (int i = 0; i < ntally; i++)
        printf("tally %ld %s\n", tally_cnt[i], tally_val[i]);
    if (tally_other)
        printf("tally %ld (other values)\n", tally_other);
    return 0;
}
