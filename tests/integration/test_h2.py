"""HTTP/2 with prior knowledge on the client port: the cache answers as
over HTTP/1.1 (Cache-Status, Age, ETag and 304, HEAD, 404, 405, dot
segments), HTTP/1.1 still works on the same port, and a stampede of 1000
streams on one key over 10 connections makes one upstream call and gives
every stream the same body. curl and h2load, the clients users have, and
raw frames for the stampede (curl 7.88 cannot reuse a prior-knowledge
connection for --parallel transfers: curl issue 10634)."""
import re
import signal
import subprocess
import time

import h2raw
from h2raw import Conn, frame
from harness import World, check, check_eq, done, require, tool

w = World()
origin = w.start_origin()
alog = w.path("access.log")
corral = w.start_corral({
    "access_log": alog,
    "upstreams": {"o": {"base": origin.base(), "timeout": "10s"}},
    "routes": [
        {"path": "/api/x", "upstream": "o", "fetch": "/x",
         "strategy": "short", "query": ["q"]},
        {"path": "/api/cold", "upstream": "o", "fetch": "/cold",
         "strategy": "short"},
        {"path": "/api/load", "upstream": "o", "fetch": "/load",
         "strategy": "short"},
    ],
}, admin=True)
curl = tool("curl")
h2load = tool("h2load")
require(curl and h2load, "curl and h2load (nghttp2-client) are installed")
base = f"http://127.0.0.1:{corral.port}"


def h2(path, *args):
    """One request over HTTP/2 with prior knowledge: (status, headers,
    body, http_version)."""
    hfile = w.path("h2-headers")
    r = subprocess.run([curl, "-sS", "--http2-prior-knowledge",
                        "--max-time", "10", "-D", hfile, "-o", "-",
                        "-w", "\n%{http_version}", *args, base + path],
                       capture_output=True)
    check_eq(r.returncode, 0, f"curl {path}: {r.stderr!r}")
    body, _, version = r.stdout.rpartition(b"\n")
    with open(hfile, "rb") as f:
        lines = f.read().decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers, body, version.decode()


# ---- the cache, over HTTP/2 ----
status, hd, body, version = h2("/api/x")
check_eq(version, "2", "curl spoke HTTP/2")
check_eq(status, 200, "first answer")
check_eq(hd.get("cache-status"), "corral; fwd=miss; stored", "stored")
check_eq(hd.get("age"), "0", "Age")
check_eq(hd.get("content-length"), str(len(body)), "Content-Length")
check("connection" not in hd and "transfer-encoding" not in hd,
      f"no connection-specific field: {hd}")
check("date" in hd, "Date")
etag = hd.get("etag")
check(etag and etag.startswith('"'), f"an ETag: {etag}")
check(b'"n": 1' in body, f"the origin's body: {body!r}")

status, hd, body2, _ = h2("/api/x")
check_eq(status, 200, "hit")
check(hd.get("cache-status", "").startswith("corral; hit; ttl="),
      f"hit: {hd.get('cache-status')}")
check_eq(body2, body, "the hit's body")
check_eq(origin.calls("/x"), 1, "a hit calls nobody")

status, hd, body3, _ = h2("/api/x", "-H", f"If-None-Match: {etag}")
check_eq(status, 304, "If-None-Match")
check_eq(body3, b"", "304 without body")
check_eq(hd.get("etag"), etag, "304 names the ETag")

status, hd, body4, _ = h2("/api/x", "-I")  # -I prints the head as body
check_eq(status, 200, "HEAD")
check(body4.endswith(b"\r\n\r\n"), f"HEAD without body: {body4[-40:]!r}")
check_eq(hd.get("content-length"), str(len(body)), "HEAD content-length")

status, _, body5, _ = h2("/api/nope")
check_eq(status, 404, "unknown path")
check(body5.startswith(b"{"), "404 JSON")
status, _, _, _ = h2("/api/x", "-X", "POST", "-d", "{}")
check_eq(status, 405, "POST")

# Dot segments resolve as over HTTP/1.1, and an unlisted query is ignored.
status, hd, body6, _ = h2("/api/cold/../x?utm=1", "--path-as-is")
check_eq(status, 200, "dot segments")
check_eq(body6, body, "/api/cold/../x is /api/x")
status, _, _, _ = h2("/../x", "--path-as-is")
check_eq(status, 400, "above the root")
status, hd, _, _ = h2("/api/x?q=2")
check_eq(hd.get("cache-status"), "corral; fwd=miss; stored",
         "a forwarded query is its own key")
check_eq(origin.calls("/x"), 2, "two keys, two calls")

# only-if-cached on a cold key: 504, no call.
status, _, _, _ = h2("/api/x?q=3", "-H", "Cache-Control: only-if-cached")
check_eq(status, 504, "only-if-cached, cold")
check_eq(origin.calls("/x"), 2, "only-if-cached calls nobody")

# A header list over max_header_bytes: 431 on that stream.
status, _, _, _ = h2("/api/x", "-H", "X-Big: " + "a" * 9000)
check_eq(status, 431, "header list too large")

# ---- HTTP/1.1 on the same port ----
r = corral.get("/api/x")
check_eq(r.status, 200, "HTTP/1.1 on the same port")
check_eq(r.body, body, "HTTP/1.1 sees the same body")
check(r.headers.get("cache-status", "").startswith("corral; hit"),
      "HTTP/1.1 hit")

# ---- stampede: 1000 streams on one key over 10 connections ----
origin.behave("/cold", delay_ms=500)
conns = [Conn(corral.port) for _ in range(10)]
streams = [1 + 2 * i for i in range(100)]
for c in conns:  # every request is out before the first answer
    c.send(b"".join(frame(h2raw.HEADERS, h2raw.END_STREAM | h2raw.END_HEADERS,
                          sid, h2raw.request_block("/api/cold"))
                    for sid in streams))
bodies = []
for c in conns:
    got = c.bodies(streams)
    check_eq(len(got), 100, "100 streams answered with a body")
    bodies += got.values()
    c.close()
check_eq(len(bodies), 1000, "1000 bodies")
check_eq(origin.calls("/cold"), 1, "1000 streams, one upstream call")
check_eq(len(set(bodies)), 1, "every stream the same body")
check(b'"path": "/cold"' in bodies[0], f"the origin's body: {bodies[0]!r}")

# h2load, as a user runs it (no --h1): all of them answered.
origin.behave("/load", delay_ms=200)
r = subprocess.run([h2load, "-n", "2000", "-c", "10", "-m", "16",
                    base + "/api/load"], capture_output=True, timeout=60)
out = r.stdout.decode()
m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, "
              r"(\d+) succeeded", out)
check(m and m.group(3) == "2000", f"h2load: {out[-600:]}")
check(re.search(r"status codes: 2000 2xx", out), "h2load: 2000 2xx")
check_eq(origin.calls("/load"), 1, "h2load: one upstream call")

# ---- metrics and access log carry the protocol ----
m = corral.metrics()
h2req = m.get(("corral_client_protocol_requests_total",
               frozenset({("proto", "h2c")})), 0)
h1req = m.get(("corral_client_protocol_requests_total",
               frozenset({("proto", "h1")})), 0)
check(h2req >= 3000, f"h2c requests counted: {h2req}")
check(h1req >= 1, f"h1 requests counted: {h1req}")
h2conns = m.get(("corral_client_protocol_connections_total",
                 frozenset({("proto", "h2c")})), 0)
check(10 <= h2conns <= 60, f"h2c connections counted: {h2conns}")

time.sleep(1.3)  # the access log is flushed every second
lines = open(alog).read().splitlines()
check(any(l.endswith(" h2c") and " GET /api/x 200 " in l for l in lines),
      "an h2c line in the access log")
check(any(l.endswith(" h1") and " GET /api/x 200 " in l for l in lines),
      "an h1 line in the access log")
check(any(" 431 " in l and l.endswith(" h2c") for l in lines),
      "the 431 is logged")
# ---- SIGTERM drains HTTP/2 too: a GOAWAY, the stream in flight answered ----
origin.behave("/slow", delay_ms=800)
c2 = w.start_corral({
    "upstreams": {"o": {"base": origin.base(), "timeout": "10s"}},
    "routes": [{"path": "/api/slow", "upstream": "o", "fetch": "/slow"}],
})
c = Conn(c2.port)
c.get(1, "/api/slow")
time.sleep(0.3)  # the fill is under way
c2.proc.send_signal(signal.SIGTERM)
got = c.frames_until(lambda f: f[0] == h2raw.DATA and f[1] & 1 and f[2] == 1)
check(any(f and f[0] == h2raw.GOAWAY and
          int.from_bytes(f[3][4:8], "big") == h2raw.NO_ERROR for f in got),
      "drain: GOAWAY NO_ERROR")
check(got[-1] is not None and b'"path": "/slow"' in got[-1][3],
      f"drain: the stream in flight answered: {got[-1]}")
check(c.frames_until(lambda f: False, timeout=10)[-1] is None,
      "drain: then the connection closes")
c.close()
check_eq(c2.proc.wait(timeout=15), 0, "drain: corral exits 0")

done("h2")
