/* fuzz-request.c — libFuzzer target: the client request parser and
 * everything behind it in server.c (field checks, pipelining, bodies,
 * answers, lingering close) and the access log, which every answer goes
 * through (to /dev/null), refused ones too. Each input is what one client
 * sends on one connection, then it half-closes and reads every answer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "accesslog.h"
#include "server.h"

static struct event_base *base;
static struct corral_server *srv;
static struct corral_access_log *alog;

/* Reads a borrowed string whole; no CR or LF is in any that the parser
 * passed (a value's offset gone stale would read other lines). */
static void
check_string(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\r' || s[i] == '\n')
            abort();
}

static void
handler(struct corral_request *req, void *arg)
{
    (void)arg;
    /* Borrowed fields must be readable for their whole length. */
    check_string(req->path, req->path_len);
    check_string(req->query, req->query_len);
    if (req->if_none_match)
        check_string(req->if_none_match, req->inm_len);
    if (req->authorization)
        check_string(req->authorization, req->auth_len);
    if (req->path_len == 0 ||
        (req->path[0] != '/' && !(req->path_len == 1 && req->path[0] == '*')))
        abort();
    /* Dot segments are resolved: none is left. */
    for (size_t i = 0; i + 2 <= req->path_len; i++)
        if (req->path[i] == '/' && req->path[i + 1] == '.' &&
            (i + 2 == req->path_len || req->path[i + 2] == '/' ||
             (req->path[i + 2] == '.' &&
              (i + 3 == req->path_len || req->path[i + 3] == '/'))))
            abort();
    req->note = "hit";
    req->upstream_ms = 1;
    if (req->method != CORRAL_METHOD_GET && req->method != CORRAL_METHOD_HEAD)
        corral_request_respond_simple(req, 405, "application/json",
                                      "Allow: GET, HEAD\r\n", "{}", 2);
    else
        corral_request_respond_simple(req, 200, "application/json", NULL, "{}",
                                      2);
}

static void
setup(void)
{
    char err[256];

    base = event_base_new();
    if (base == NULL)
        abort();
    alog = corral_access_log_open(base, "/dev/null", err, sizeof(err));
    struct corral_server_options o = {
        .host = "127.0.0.1",
        .max_header_bytes = 2048,
        .client_timeout_ms = 1000,
        .max_clients = 16,
        .access_cb = corral_access_log_write,
        .access_arg = alog,
    };
    srv = corral_server_new(base, &o, handler, NULL, err, sizeof(err));
    if (alog == NULL || srv == NULL)
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
    /* Read answers until the server closes (bounded). */
    for (int i = 0; i < 2000; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        ssize_t r = recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT);
        if (r == 0)
            break;
    }
    close(sv[1]);
    event_base_loop(base, EVLOOP_NONBLOCK);
    return 0;
}
