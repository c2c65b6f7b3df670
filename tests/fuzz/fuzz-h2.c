/* fuzz-h2.c — libFuzzer target: the HTTP/2 front (h2.c) behind server.c's
 * preface check, fed raw frames. Each input is what one client sends on
 * one connection after the preface (prepended here, so the fuzzer spends
 * its time on frames), then it half-closes and reads. Requests whose path
 * starts "/d" wait with an on_close callback and are answered on the next
 * loop turn, when their stream may be gone; "/b" gets a body borrowed
 * from a refcounted value over several DATA frames; the rest a simple
 * answer at once. The access log sees every answer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "accesslog.h"
#include "h2.h"
#include "server.h"

#include "corral/value.h"

#define DEFER_MAX 64

static struct event_base *base;
static struct corral_server *srv;
static struct corral_access_log *alog;
static struct corral_value *value;
static struct corral_request *deferred[DEFER_MAX];
static unsigned n_deferred;
static struct event *answer_ev;

static void
check_string(const char *s, size_t n)
{
    volatile char sink = 0;
    for (size_t i = 0; i < n; i++)
        sink ^= s[i];
    (void)sink;
}

static void
gone(struct corral_request *req, void *arg)
{
    (void)arg;
    for (unsigned i = 0; i < n_deferred; i++)
        if (deferred[i] == req)
            deferred[i] = deferred[--n_deferred];
}

static void
answer_deferred(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    while (n_deferred) {
        struct corral_request *req = deferred[--n_deferred];
        corral_request_on_close(req, NULL, NULL);
        corral_request_respond_simple(req, 503, "application/json", NULL, "{}",
                                      2);
    }
}

static void
handler(struct corral_request *req, void *arg)
{
    static const char head[] = "HTTP/1.1 200 OK\r\n"
                               "Content-Type: application/json\r\n"
                               "Connection: keep-alive\r\n"
                               "Content-Length: 40000\r\n";
    (void)arg;
    if (req->proto != CORRAL_PROTO_H2C)
        abort();
    check_string(req->path, req->path_len);
    check_string(req->query, req->query_len);
    if (req->if_none_match)
        check_string(req->if_none_match, req->inm_len);
    if (req->authorization)
        check_string(req->authorization, req->auth_len);
    if (req->path_len == 0 ||
        (req->path[0] != '/' && !(req->path_len == 1 && req->path[0] == '*')))
        abort();
    req->note = "hit";
    if (req->path_len >= 2 && req->path[1] == 'd' && n_deferred < DEFER_MAX) {
        deferred[n_deferred++] = req;
        corral_request_on_close(req, gone, NULL);
        event_active(answer_ev, EV_TIMEOUT, 1);
        return;
    }
    if (req->path_len >= 2 && req->path[1] == 'b') {
        struct corral_response r = {
            .status = 200,
            .head = head,
            .head_len = sizeof head - 1,
            .extra = "Age: 1\r\n",
            .extra_len = 8,
            .body = corral_value_body(value),
            .body_len = corral_value_len(value),
            .hold = value,
        };
        corral_request_respond(req, &r);
        return;
    }
    corral_request_respond_simple(req, 404, "application/json", "X-A: b\r\n",
                                  "{}", 2);
}

static void
setup(void)
{
    char err[256];
    static char body[40000];

    base = event_base_new();
    if (base == NULL)
        abort();
    memset(body, 'x', sizeof body);
    value = corral_value_new("k", 1, body, sizeof body, "application/json", 0);
    alog = corral_access_log_open(base, "/dev/null", err, sizeof(err));
    struct corral_server_options o = {
        .host = "127.0.0.1",
        .max_header_bytes = 2048,
        .client_timeout_ms = 1000,
        .max_clients = 16,
        .max_streams = 16,
        .max_client_queued_bytes = 64 << 10,
        .access_cb = corral_access_log_write,
        .access_arg = alog,
    };
    srv = corral_server_new(base, &o, handler, NULL, err, sizeof(err));
    answer_ev = event_new(base, -1, 0, answer_deferred, NULL);
    if (alog == NULL || srv == NULL || value == NULL || answer_ev == NULL)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    char buf[65536];
    size_t off = 0;

    if (base == NULL)
        setup();
    if (size > 60000 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return 0;
    if (corral_server_adopt(srv, sv[0]) < 0) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    if (send(sv[1], CORRAL_H2_PREFACE, CORRAL_H2_PREFACE_LEN,
             MSG_DONTWAIT | MSG_NOSIGNAL) != CORRAL_H2_PREFACE_LEN)
        abort();
    /* Feed it in pieces, as a network would, running the loop between. */
    while (off < size) {
        size_t n = size - off < 512 ? size - off : 512;
        ssize_t w = send(sv[1], data + off, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
        event_base_loop(base, EVLOOP_NONBLOCK);
        while (recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT) > 0)
            ;
    }
    shutdown(sv[1], SHUT_WR);
    for (int i = 0; i < 2000; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        ssize_t r = recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT);
        if (r == 0)
            break;
    }
    close(sv[1]);
    for (int i = 0; i < 4; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    if (n_deferred) /* on_close fired for each, or each was answered */
        abort();
    return 0;
}
