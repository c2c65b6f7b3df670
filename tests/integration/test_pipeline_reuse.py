#!/usr/bin/env python3
"""Pipelined requests reuse a connection's request slots and its read
buffer. Regressions: a refused request (400) took the slot of the request
before it and its access log line read that request's freed path (a
use-after-free under ASan), or on a first request logged no client; and an
admin request's Authorization was read from the wrong bytes once the read
buffer was compacted under it (401 with the right token)."""
import socket
import time

from harness import World, check, check_eq, done, free_port, wait_port

w = World()
origin = w.start_origin()
TOKEN = "pipeline-token"
LOG = w.path("access.log")
aport = free_port()
corral = w.start_corral({
    "admin": {"listen": f"127.0.0.1:{aport}", "token": "${CORRAL_ADMIN_TOKEN}"},
    "access_log": LOG,
    "upstreams": {"o": {"base": origin.base()}},
    "routes": [{"path": "/api/x", "upstream": "o", "fetch": "/x"}],
}, env={"CORRAL_ADMIN_TOKEN": TOKEN})
wait_port(aport, corral.proc)


def answers(s, n):
    """Reads n answers (or until the server closes); returns their
    statuses and whether the connection was closed."""
    buf, statuses, closed = b"", [], False
    while len(statuses) < n:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if sep:
            lines = head.split(b"\r\n")
            length = 0
            for line in lines[1:]:
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(rest) >= length:
                statuses.append(int(lines[0].split(b" ")[1]))
                buf = rest[length:]
                continue
        more = s.recv(65536)
        if not more:
            closed = True
            break
        buf += more
    return statuses, closed


def log_lines(want_refused, timeout=10.0):
    """The access log's lines, once want_refused lines of status 400 are
    in it (lines are written every second)."""
    deadline = time.time() + timeout
    while True:
        try:
            with open(LOG) as f:
                lines = [line.split() for line in f]
        except FileNotFoundError:
            lines = []
        if sum(1 for f in lines if len(f) > 4 and f[4] == "400") >= \
                want_refused or time.time() > deadline:
            return lines
        time.sleep(0.1)


# ---- a refused request after 16 pipelined ones with long targets ----
target = "/api/x?" + "q" * 300
req = f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
bad = b"GET /api/x HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n"
s = socket.create_connection(("127.0.0.1", corral.port), timeout=10)
s.sendall(req * 16 + bad)
statuses, closed = answers(s, 17)
s.close()
check_eq(statuses, [200] * 16 + [400], "16 answers, then the refusal")
check(corral.alive(), "corral survives a refused request in a reused slot")

# ---- a refused first request ----
s = socket.create_connection(("127.0.0.1", corral.port), timeout=10)
s.sendall(b"GET /api/x HTTP/1.1\r\nBad Header: x\r\n\r\n")
statuses, closed = answers(s, 1)
s.close()
check_eq(statuses, [400], "a refused first request")

lines = log_lines(2)
refused = [f for f in lines if len(f) > 4 and f[4] == "400"]
served = [f for f in lines if len(f) > 4 and f[4] == "200"]
check_eq(len(served), 16, f"16 lines of 200: {lines}")
for f in served:
    check_eq(f[1:4], ["127.0.0.1", "GET", "/api/x"], f"a 200 line: {f}")
check_eq(len(refused), 2, f"two lines of 400: {lines}")
for f in refused:
    # time, client, method, path, status, bytes, cache, upstream ms, µs,
    # protocol
    check_eq(len(f), 10, f"a whole line: {f}")
    check_eq(f[9], "h1", "a refused request's protocol")
    check_eq(f[1:8], ["127.0.0.1", "GET", "-", "400", "23", "-", "-"],
             "a refused request's own client, no path, no cache result")
    check(int(f[8]) < 10_000_000, f"µs to the answer: {f[8]}")

# ---- the admin token after the read buffer is compacted ----
# max_header_bytes is 8 KB: the read buffer holds 12 KB and is compacted
# when less than 2 KB of it are free. The first write fills it past that
# with answered requests and the start of a purge; the second completes
# the purge's head, and its other 12 KB land where the token was.
pad = "p" * 2000
healthz = f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {pad}\r\n\r\n".encode()
purge_start = (f"DELETE /cache/api/x HTTP/1.1\r\nHost: x\r\n"
               f"Authorization: Bearer {TOKEN}\r\nX-Pad: ").encode() + b"a" * 300
first = healthz * 5 + purge_start
check(10_300 < len(first) < 11_000, f"first write: {len(first)} bytes")
s = socket.create_connection(("127.0.0.1", aport), timeout=10)
s.sendall(first)
statuses, _ = answers(s, 5)
check_eq(statuses, [200] * 5, "the answered requests before the purge")
time.sleep(0.2)  # the server reads the purge's start on its own
s.sendall(b"\r\n\r\n" + healthz * 6)
statuses, _ = answers(s, 7)
s.close()
check_eq(statuses, [200] * 7, "the purge with the right token, and after it")

check(corral.alive(), "corral still running")
done("pipeline_reuse")
