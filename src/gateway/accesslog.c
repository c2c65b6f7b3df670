/* accesslog.c — the buffered access log (see accesslog.h). */
#include "accesslog.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "fmt.h"
#include "server.h"
#include "xalloc.h"

#define BUF_CAP (64 * 1024)
#define LINE_MAX_BYTES 1024 /* a longer path is cut */

struct corral_access_log {
    char *path; /* NULL: standard output */
    int fd;
    struct event *flush_ev;
    char buf[BUF_CAP];
    size_t len;
    time_t stamp_sec;      /* the second stamp[] is for */
    char stamp[24];        /* "2026-12-03T09:20:01" */
    unsigned long dropped; /* bytes lost to write errors */
};

static int
open_path(const char *path, char *err, size_t errlen)
{
    if (path == NULL)
        return STDOUT_FILENO;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        snprintf(err, errlen, "access_log: cannot open %s: %s", path,
                 strerror(errno));
    return fd;
}

void
corral_access_log_flush(struct corral_access_log *l)
{
    size_t off = 0;
    while (off < l->len) {
        ssize_t n = write(l->fd, l->buf + off, l->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) { /* full disk, closed pipe: the lines are lost */
            l->dropped += l->len - off;
            break;
        }
        off += (size_t)n;
    }
    l->len = 0;
}

static void
flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_access_log *l = arg;
    if (l->len > 0)
        corral_access_log_flush(l);
}

struct corral_access_log *
corral_access_log_open(struct event_base *base, const char *path, char *err,
                       size_t errlen)
{
    bool out = strcmp(path, "-") == 0;
    int fd = open_path(out ? NULL : path, err, errlen);
    if (fd < 0)
        return NULL;
    struct corral_access_log *l = xcalloc(1, sizeof(*l));
    l->path = out ? NULL : xstrndup(path, strlen(path));
    l->fd = fd;
    l->stamp_sec = (time_t)-1;
    l->flush_ev = event_new(base, -1, EV_PERSIST, flush_cb, l);
    struct timeval second = {1, 0};
    if (l->flush_ev == NULL || event_add(l->flush_ev, &second) != 0)
        abort(); /* the policy of xalloc.h */
    return l;
}

int
corral_access_log_reopen(struct corral_access_log *l, char *err, size_t errlen)
{
    corral_access_log_flush(l);
    if (l->path == NULL)
        return 0;
    int fd = open_path(l->path, err, errlen);
    if (fd < 0)
        return -errno;
    close(l->fd);
    l->fd = fd;
    return 0;
}

void
corral_access_log_free(struct corral_access_log *l)
{
    if (l == NULL)
        return;
    corral_access_log_flush(l);
    event_free(l->flush_ev);
    if (l->path != NULL)
        close(l->fd);
    free(l->path);
    free(l);
}

static const char *
method_name(enum corral_method m)
{
    switch (m) {
    case CORRAL_METHOD_GET:
        return "GET";
    case CORRAL_METHOD_HEAD:
        return "HEAD";
    case CORRAL_METHOD_POST:
        return "POST";
    case CORRAL_METHOD_DELETE:
        return "DELETE";
    case CORRAL_METHOD_NONE:
        return "-";
    default:
        return "OTHER";
    }
}

/* The path as sent, with bytes a log reader could trip on (controls,
 * space, quote, backslash, non-ASCII) as %XX. */
static char *
put_path(char *p, const char *s, size_t n, size_t room)
{
    for (size_t i = 0; i < n && room >= 3; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\') {
            p = fmt_pct_byte(p, c);
            room -= 3;
        } else {
            *p++ = (char)c;
            room--;
        }
    }
    return p;
}

void
corral_access_log_write(const struct corral_request *req, int status,
                        size_t body_bytes, void *arg)
{
    struct corral_access_log *l = arg;
    if (l->len + LINE_MAX_BYTES > BUF_CAP)
        corral_access_log_flush(l);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (tv.tv_sec != l->stamp_sec) {
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        strftime(l->stamp, sizeof(l->stamp), "%Y-%m-%dT%H:%M:%S", &tm);
        l->stamp_sec = tv.tv_sec;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now_us =
        (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
    uint64_t took = now_us > req->start_us ? now_us - req->start_us : 0;
    unsigned ms = (unsigned)(tv.tv_usec / 1000);

    char *start = l->buf + l->len, *p = start;
    p = fmt_put(p, l->stamp, strlen(l->stamp));
    *p++ = '.';
    *p++ = (char)('0' + ms / 100);
    *p++ = (char)('0' + ms / 10 % 10);
    *p++ = (char)('0' + ms % 10);
    p = FMT_PUT(p, "Z ");
    const char *peer = req->peer ? req->peer : "-";
    p = fmt_put(p, peer, strnlen(peer, 47));
    *p++ = ' ';
    const char *m = method_name(req->method);
    p = fmt_put(p, m, strlen(m));
    *p++ = ' ';
    if (req->path_len == 0) /* refused before it had one */
        *p++ = '-';
    else
        p = put_path(p, req->path, req->path_len, LINE_MAX_BYTES - 200);
    *p++ = ' ';
    p = fmt_uint(p, (uint64_t)status);
    *p++ = ' ';
    p = fmt_uint(p, body_bytes);
    *p++ = ' ';
    const char *note = req->note ? req->note : "-";
    p = fmt_put(p, note, strnlen(note, 32));
    *p++ = ' ';
    if (req->upstream_ms >= 0)
        p = fmt_uint(p, (uint64_t)req->upstream_ms);
    else
        *p++ = '-';
    *p++ = ' ';
    p = fmt_uint(p, took);
    *p++ = ' ';
    const char *proto = corral_proto_name(req->proto);
    p = fmt_put(p, proto, strlen(proto));
    *p++ = '\n';
    l->len += (size_t)(p - start);
}
