"""Bad HTTP never crashes corral: oversized headers, garbage, unknown
versions, headers without a colon, a request one byte at a time, 2,000 idle
connections. After each, a normal request still works."""
import re
import socket
import time

from harness import World, check, check_eq, done, raw, status_of

w = World()
origin = w.start_origin()
corral = w.start_corral({
    "upstreams": {"o": {"base": origin.base()}},
    "routes": [{"path": "/api/x", "upstream": "o", "fetch": "/x"}],
    "limits": {"max_header_bytes": "4KB", "client_timeout": "2s",
               "max_clients": 3000},
})
P = corral.port


def still_serving(what):
    r = corral.get("/api/x")
    check_eq(r.status, 200, f"a normal request after {what}")
    check(corral.alive(), f"alive after {what}")


still_serving("start")
GOOD = b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n"

cases = [
    ("oversized headers",
     b"GET /api/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 +
     b"\r\n\r\n", {431}),
    ("garbage request line", b"\x16\x03\x01garbage\r\n\r\n", {400}),
    ("no version", b"GET /api/x\r\n\r\n", {400}),
    ("unknown version", b"GET /api/x HTTP/9.9\r\nHost: x\r\n\r\n",
     {400, 505}),
    ("HTTP/2 text", b"GET /api/x HTTP/2.0\r\nHost: x\r\n\r\n", {400, 505}),
    ("header without colon",
     b"GET /api/x HTTP/1.1\r\nHost x\r\n\r\n", {400}),
    ("NUL in the path", b"GET /api/\x00x HTTP/1.1\r\nHost: x\r\n\r\n",
     {400}),
    ("a body of unknown length",
     b"GET /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
     {400}),
    ("Content-Length and Transfer-Encoding",
     b"GET /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}),
]
for what, data, want in cases:
    answer = raw(P, data)
    check(status_of(answer) in want, f"{what}: {answer[:80]!r}")
    still_serving(what)

# One byte at a time.
answer = raw(P, None, chunks=[GOOD[i:i + 1] for i in range(len(GOOD))],
             delay=0.002)
check_eq(status_of(answer), 200, "one byte at a time")
still_serving("one byte at a time")

# Pipelined: three requests in one write, answered in order.
s = socket.create_connection(("127.0.0.1", P), timeout=5)
s.sendall(GOOD + b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" + GOOD)
answer = b""
while answer.count(b"HTTP/1.1 ") < 3 or not answer.endswith(b"}"):
    more = s.recv(65536)
    if not more:
        break
    answer += more
s.close()
codes = [int(c) for c in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
check_eq(codes, [200, 404, 200], "pipelined answers in order")

# A slow client is timed out (client_timeout 2 s).
s = socket.create_connection(("127.0.0.1", P))
s.sendall(b"GET /api/x HTTP/1.1\r\n")
s.settimeout(10)
t0 = time.time()
try:
    data = s.recv(4096)
    while data and b"\r\n\r\n" not in data:
        more = s.recv(4096)
        if not more:
            break
        data += more
except OSError:
    data = b""
took = time.time() - t0
s.close()
check(1.5 <= took <= 8, f"slow client closed after {took:.1f} s")
check(data == b"" or status_of(data) == 408, f"slow client: {data[:60]!r}")
still_serving("a slow client")

# 2,000 idle connections, then a normal request.
idle = []
for i in range(2000):
    idle.append(socket.create_connection(("127.0.0.1", P)))
still_serving("2,000 idle connections")
for s in idle:
    s.close()
time.sleep(0.2)
still_serving("2,000 closed connections")
done("badhttp")
