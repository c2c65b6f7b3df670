/* raw-responder.c — the benchmark floor for tools/bench: a single-threaded
 * epoll HTTP/1.1 server on 127.0.0.1 that answers every request with the same
 * JSON body (1 KB unless told) and realistic headers, keep-alive, one read and
 * one write per request. No parsing beyond finding "\r\n\r\n"; request bodies
 * are not supported (GET/HEAD only).
 *
 *   raw-responder PORT [PORTFILE [BODY_BYTES]]
 *                       PORT 0 picks a free port; the bound port is written to
 *                       PORTFILE (or stdout; "-" for stdout with BODY_BYTES).
 *                       BODY_BYTES (10 to 1 MB, default 1024): the body's size,
 *                       so the floor can be measured for any answer's bytes.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BODY_DEFAULT 1024
#define BODY_MAX (1 << 20)
#define IN_SIZE 8192
#define MAX_FDS 65536
#define MAX_EVENTS 256

struct conn {
    size_t inlen; /* bytes of an unfinished request kept in `in` */
    char *out;    /* unsent answer bytes (rare: partial write) */
    size_t outlen, outoff;
    char in[IN_SIZE];
};

static struct conn *conns[MAX_FDS];
static char *answer; /* headers + body; the Date is patched in place */
static size_t answer_len;
static char *date_at; /* where the 29-byte Date value starts */
static time_t date_sec;

static int
render_answer(size_t body_size)
{
    char *body = malloc(body_size + 1);
    size_t cap = body_size + 512;
    answer = malloc(cap);
    if (!body || !answer)
        return -1;
    memcpy(body, "{\"pad\":\"", 8);
    memset(body + 8, 'x', body_size - 10);
    memcpy(body + body_size - 2, "\"}", 3);
    int n = snprintf(answer, cap,
                     "HTTP/1.1 200 OK\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: %zu\r\n"
                     "ETag: \"bf4fb9dccd9380c4\"\r\n"
                     "Cache-Status: raw; hit; ttl=3599\r\n"
                     "Age: 0\r\n"
                     "Cache-Control: max-age=3599\r\n"
                     "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
                     "\r\n%s",
                     body_size, body);
    free(body);
    answer_len = (size_t)n;
    date_at = strstr(answer, "Date: ") + 6;
    return 0;
}

static void
update_date(void)
{
    time_t now = time(NULL);
    if (now == date_sec)
        return;
    date_sec = now;
    struct tm tm;
    char buf[64];
    gmtime_r(&now, &tm);
    strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    memcpy(date_at, buf, 29);
}

static void
close_conn(int fd)
{
    if (conns[fd]) {
        free(conns[fd]->out);
        free(conns[fd]);
        conns[fd] = NULL;
    }
    close(fd);
}

/* Sends out[outoff..outlen); returns 0 when done, 1 when blocked, -1 on error.
 */
static int
flush_out(int ep, int fd, struct conn *c)
{
    while (c->outoff < c->outlen) {
        ssize_t n = write(fd, c->out + c->outoff, c->outlen - c->outoff);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            struct epoll_event ev = {.events = EPOLLOUT, .data.fd = fd};
            epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
            return 1;
        }
        if (n <= 0)
            return -1;
        c->outoff += (size_t)n;
    }
    free(c->out);
    c->out = NULL;
    c->outlen = c->outoff = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
    return 0;
}

/* Answers `count` requests with one write; keeps any unsent tail. */
static int
answer_requests(int ep, int fd, struct conn *c, size_t count)
{
    const char *buf = answer;
    size_t len = answer_len;
    char *many = NULL;
    if (count > 1) { /* pipelined: still one write */
        many = malloc(answer_len * count);
        if (!many)
            return -1;
        for (size_t i = 0; i < count; i++)
            memcpy(many + i * answer_len, answer, answer_len);
        buf = many;
        len = answer_len * count;
    }
    ssize_t n = write(fd, buf, len);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        free(many);
        return -1;
    }
    size_t sent = n > 0 ? (size_t)n : 0;
    if (sent == len) {
        free(many);
        return 0;
    }
    if (!many) {
        many = malloc(len);
        if (!many)
            return -1;
        memcpy(many, buf, len);
    }
    c->out = many;
    c->outlen = len;
    c->outoff = sent;
    return flush_out(ep, fd, c) < 0 ? -1 : 0;
}

static void
on_readable(int ep, int fd, struct conn *c)
{
    ssize_t n = read(fd, c->in + c->inlen, IN_SIZE - c->inlen);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        close_conn(fd);
        return;
    }
    size_t end = c->inlen + (size_t)n, start = 0, count = 0;
    size_t scan = c->inlen >= 3 ? c->inlen - 3 : 0;
    char *p;
    while ((p = memmem(c->in + scan, end - scan, "\r\n\r\n", 4)) != NULL) {
        count++;
        start = scan = (size_t)(p - c->in) + 4;
    }
    if (start == 0 && end == IN_SIZE) { /* header block too large */
        close_conn(fd);
        return;
    }
    memmove(c->in, c->in + start, end - start);
    c->inlen = end - start;
    if (count > 0) {
        update_date();
        if (answer_requests(ep, fd, c, count) < 0)
            close_conn(fd);
    }
}

static void
on_accept(int ep, int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN, or out of fds: try again on the next event */
        if (fd >= MAX_FDS || !(conns[fd] = calloc(1, sizeof(struct conn)))) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            close_conn(fd);
    }
}

int
main(int argc, char **argv)
{
    long body_size = argc == 4 ? strtol(argv[3], NULL, 10) : BODY_DEFAULT;
    if (argc < 2 || argc > 4 || body_size < 10 || body_size > BODY_MAX) {
        fprintf(stderr, "usage: raw-responder PORT [PORTFILE [BODY_BYTES]]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (render_answer((size_t)body_size) < 0) {
        perror("raw-responder: malloc");
        return 1;
    }

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)atoi(argv[1])),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t salen = sizeof sa;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(lfd, 4096) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &salen) < 0) {
        perror("raw-responder: listen");
        return 1;
    }
    /* A portfile is written to a temp name, then renamed: readers see all
     * or nothing. */
    if (argc >= 3 && strcmp(argv[2], "-") != 0) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", argv[2]);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%d\n", ntohs(sa.sin_port)) < 0 ||
            fclose(f) != 0 || rename(tmp, argv[2]) != 0) {
            perror("raw-responder: portfile");
            return 1;
        }
    } else {
        printf("%d\n", ntohs(sa.sin_port));
        fflush(stdout);
    }

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) {
        perror("raw-responder: epoll");
        return 1;
    }
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd)
                on_accept(ep, lfd);
            else if (!conns[fd])
                continue;
            else if (conns[fd]->out) {
                if (flush_out(ep, fd, conns[fd]) < 0)
                    close_conn(fd);
            } else
                on_readable(ep, fd, conns[fd]);
        }
    }
}
