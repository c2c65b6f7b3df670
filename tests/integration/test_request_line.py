#!/usr/bin/env python3
"""What the front end makes of a request before a route sees it, as nginx
would. Regressions: an unknown method was a 400 and a close (now 405 with
Allow, the connection kept); dot segments reached the router as sent
(/api/../api/x was a 404); two Authorization fields let the last one win;
a folded line after an empty value was taken in."""
import socket

from harness import World, check, check_eq, done, free_port, raw, status_of
from harness import wait_port

w = World()
origin = w.start_origin()
TOKEN = "request-line-token"
aport = free_port()
corral = w.start_corral({
    "admin": {"listen": f"127.0.0.1:{aport}", "token": "${CORRAL_ADMIN_TOKEN}"},
    "upstreams": {"o": {"base": origin.base()}},
    "routes": [{"path": "/api/x", "upstream": "o", "fetch": "/x"},
               {"path": "/api/p/{id}", "upstream": "o", "fetch": "/p/{id}"}],
}, env={"CORRAL_ADMIN_TOKEN": TOKEN})
wait_port(aport, corral.proc)
P = corral.port


def exchange(s, data):
    """Sends data on s and reads one answer: (status, headers, body)."""
    s.sendall(data)
    buf = b""
    while b"\r\n\r\n" not in buf:
        more = s.recv(65536)
        check(more, f"an answer to {data[:40]!r}")
        buf += more
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(body) < n:
        more = s.recv(65536)
        check(more, "the whole body")
        body += more
    return int(lines[0].split(" ")[1]), headers, body[:n]


# ---- unknown methods: 405 with Allow, and the connection goes on ----
s = socket.create_connection(("127.0.0.1", P), timeout=10)
for method in ["FOO", "PUT", "get", "MKCOFFEE"]:
    status, headers, body = exchange(
        s, f"{method} /api/x HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    check_eq(status, 405, f"{method} on a route")
    check_eq(headers.get("allow"), "GET, HEAD", f"{method}: Allow")
    check("connection" not in headers, f"{method}: the connection is kept")
    status, _, _ = exchange(s, b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n")
    check_eq(status, 200, f"GET after {method} on the same connection")
s.close()
s = socket.create_connection(("127.0.0.1", aport), timeout=10)
status, headers, _ = exchange(s, b"FOO /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
check_eq(status, 405, "an unknown method on the admin")
status, _, _ = exchange(s, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
check_eq(status, 200, "the admin connection goes on")
s.close()

# ---- dot segments ----
x = corral.get("/api/x")
check_eq(x.status, 200, "/api/x")
for path in ["/api/../api/x", "/api/./x", "/api/%2e%2e/api/x",
             "/api/%2E/x", "/./api/x", "/api/p/../x"]:
    r = corral.get(path)
    check_eq(r.status, 200, f"{path} is /api/x")
    check_eq(r.body, x.body, f"{path}: /api/x's body")
    check(r.headers["cache-status"].startswith("corral; hit"),
          f"{path}: /api/x's key")
for path in ["/../api/x", "/api/../../api/x", "/%2e%2e/api/x", "/.."]:
    check_eq(corral.get(path).status, 400, f"{path} climbs above the root")
check_eq(corral.get("/api/p/..").status, 404, "/api/p/.. is /api/")
check_eq(origin.calls("/x"), 1, "one upstream call for every spelling")

# ---- two Authorization fields ----
purge = ("DELETE /cache/api/x HTTP/1.1\r\nHost: x\r\n"
         "Authorization: Bearer wrong\r\n"
         f"Authorization: Bearer {TOKEN}\r\n\r\n").encode()
check_eq(status_of(raw(aport, purge)), 400, "wrong, then right: 400")
purge = ("DELETE /cache/api/x HTTP/1.1\r\nHost: x\r\n"
         f"Authorization: Bearer {TOKEN}\r\n\r\n").encode()
check_eq(status_of(raw(aport, purge)), 200, "one right token: 200")

# ---- a folded line after an empty value ----
for what, fold in [("Transfer-Encoding", b"Transfer-Encoding:\r\n chunked"),
                   ("X-A", b"X-A:\r\n b")]:
    answer = raw(P, b"GET /api/x HTTP/1.1\r\nHost: x\r\n" + fold +
                 b"\r\n\r\n0\r\n\r\n")
    check_eq(status_of(answer), 400, f"{what}: a fold after an empty value")
check_eq(status_of(raw(P, b"GET /api/x HTTP/1.1\r\nHost: x\r\nX-A:\r\n\r\n")),
         200, "an empty value")

check(corral.alive(), "corral still running")
done("request_line")
