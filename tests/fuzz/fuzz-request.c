/* fuzz-request.c — libFuzzer target: the client request parser and
 * everything behind it in server.c (field checks, pipelining, bodies,
 * answers, lingering close). Each input is what one client sends on one
 * connection, then it half-closes and reads every answer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "server.h"

static struct event_base *base;
static struct corral_server *srv;

static void
handler(struct corral_request *req, void *arg)
{
    (void)arg;
    /* Borrowed fields must be readable for their whole length. */
    volatile char sink = 0;
    for (size_t i = 0; i < req->path_len; i++)
        sink ^= req->path[i];
    for (size_t i = 0; i < req->query_len; i++)
        sink ^= req->query[i];
    if (req->if_none_match)
        for (size_t i = 0; i < req->inm_len; i++)
            sink ^= req->if_none_match[i];
    if (req->path_len == 0 ||
        (req->path[0] != '/' && !(req->path_len == 1 && req->path[0] == '*')) ||
        (sink && !sink))
        abort();
    corral_request_respond_simple(req, 200, "application/json", NULL, "{}", 2);
}

static void
setup(void)
{
    struct corral_server_options o = {
        .host = "127.0.0.1",
        .max_header_bytes = 2048,
        .client_timeout_ms = 1000,
        .max_clients = 16,
    };
    char err[256];

    base = event_base_new();
    srv = corral_server_new(base, &o, handler, NULL, err, sizeof(err));
    if (base == NULL || srv == NULL)
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
