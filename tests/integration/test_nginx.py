"""conf/nginx.conf, as shipped, in front of corral: requests pass through
with corral's headers, a stampede through nginx is still one upstream
call, nginx keeps its connections to corral alive, and corral's encoded
answers pass through byte-exact (gzip to a gzip client, br to a br client,
identity to a client without Accept-Encoding), never compressed again nor
cached by nginx, even under an http {} block that turns gzip and a cache
on."""
import grp
import gzip
import json
import os
import pwd
import re
import socket
import subprocess

from harness import (Corral, World, check, check_eq, done, free_port,
                     wait_port)

NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
HERE = os.path.dirname(os.path.abspath(__file__))
SHIPPED = os.path.join(HERE, "..", "..", "conf", "nginx.conf")

w = World()
origin = w.start_origin()
corral = w.start_corral({
    "upstreams": {"o": {"base": origin.base()}},
    "routes": [{"path": "/api/btc", "upstream": "o", "fetch": "/btc",
                "strategy": "realtime"},
               {"path": "/api/m/{p}", "upstream": "o", "fetch": "/m/{p}",
                "strategy": "1h"}],
}, admin=True)

# The shipped file, pointed at this test's ports, inside a main config of
# our own (prefix, pid and logs in the temp dir, one worker) with what a
# distribution's http {} block often has: gzip on for JSON (Debian's
# nginx.conf ships "gzip on" and the gzip_types line) and a proxy cache.
# The corral location must switch both off.
port = free_port()
snippet = open(SHIPPED).read()
snippet = snippet.replace("127.0.0.1:8080", f"127.0.0.1:{corral.port}")
snippet = re.sub(r"listen 80;", f"listen 127.0.0.1:{port};", snippet)
check(f"127.0.0.1:{corral.port}" in snippet and str(port) in snippet,
      "the shipped config has the ports the test replaces")
conf = w.path("nginx.conf")
# As root, nginx's worker would run as nobody, who cannot enter the temp dir
# its cache is in.
user = ""
if os.getuid() == 0:
    user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};"
with open(conf, "w") as f:
    f.write(f"""
{user}
daemon off;
worker_processes 1;
pid {w.path("nginx.pid")};
error_log {w.path("nginx-error.log")} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {w.dir}/body;
    proxy_temp_path {w.dir}/proxy;
    fastcgi_temp_path {w.dir}/fastcgi;
    uwsgi_temp_path {w.dir}/uwsgi;
    scgi_temp_path {w.dir}/scgi;
    gzip on;
    gzip_vary on;
    gzip_proxied any;
    gzip_min_length 1;
    gzip_types application/json text/plain;
    proxy_cache_path {w.dir}/cache keys_zone=front:1m;
    proxy_cache front;
    proxy_cache_valid 200 1h;
{snippet}
}}
""")
nginx = subprocess.Popen([NGINX, "-p", w.dir, "-c", conf, "-e",
                          w.path("nginx-error.log")])
w.procs.append(nginx)
wait_port(port, nginx)

via = Corral(port, nginx)  # the harness's client, pointed at nginx
origin.behave("/btc", delay_ms=300, body='{"bitcoin": {"usd": 1}}')
answers = via.many("/api/btc", 200)
check_eq({a.status for a in answers}, {200}, "all 200 through nginx")
check_eq({a.body for a in answers}, {b'{"bitcoin": {"usd": 1}}'}, "bodies")
check_eq(origin.calls("/btc"), 1, "200 clients through nginx: one call")
statuses = [a.headers.get("cache-status") for a in answers]
check_eq(statuses.count("corral; fwd=miss; stored"), 1, "one stored")

hit = via.get("/api/btc")
check(hit.headers["cache-status"].startswith("corral; hit; ttl="),
      "corral's Cache-Status passes through")
for h in ("age", "etag", "cache-control"):
    check(h in hit.headers, f"{h} passes through")
check_eq(via.get("/api/btc", {"If-None-Match": hit.headers["etag"]}).status,
         304, "If-None-Match through nginx")
check("cache-status" not in via.get("/nope").headers,
      "paths outside /api/ stay with nginx")
check_eq(via.get("/api/nope").status, 404, "corral's 404 through nginx")

# Keep-alive upstream: 100 sequential requests reuse nginx's connections.
for _ in range(100):
    check_eq(via.get("/api/btc").status, 200, "sequential")
conns = subprocess.run(["ss", "-Htn", "state", "established",
                        f"( sport = :{corral.port} )"],
                       capture_output=True, text=True).stdout.splitlines()
check(0 < len(conns) <= 64, f"nginx keeps a few connections to corral "
      f"alive: {len(conns)}")


def raw_get(path, headers=None, method="GET"):
    """One request to nginx on its own connection, read to its close:
    (status, [(name, value)] in order, body), a chunked body unchunked, so
    a header nginx added twice or a body it re-encoded shows."""
    req = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1",
           "Connection: close"]
    req += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=15) as c:
        c.sendall(("\r\n".join(req) + "\r\n\r\n").encode())
        data = b""
        while len(data) < 16 << 20:
            b = c.recv(65536)
            if not b:
                break
            data += b
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = [(k.strip().lower(), v.strip()) for k, v in
              (ln.split(":", 1) for ln in lines[1:] if ":" in ln)]
    if ("transfer-encoding", "chunked") in fields:
        out = b""
        while body:
            size, _, rest = body.partition(b"\r\n")
            n = int(size.split(b";")[0], 16)
            if n == 0:
                break
            out, body = out + rest[:n], rest[n + 2:]
        body = out
    return int(lines[0].split(" ")[1]), fields, body


def one(fields, name):
    """The value of a field that must appear once (None when absent)."""
    vals = [v for k, v in fields if k == name]
    check(len(vals) <= 1, f"{name} once, not {vals}")
    return vals[0] if vals else None


def answered():
    """corral's answers of stored values, all codings."""
    return sum(v for (n, _), v in corral.metrics().items()
               if n == "corral_answers_by_coding_total")


# Encoded answers pass through untouched: for each Accept-Encoding the same
# status, bytes, Content-Encoding, ETag and Vary as corral's own answer.
rows = [{"id": f"coin-{i}", "symbol": f"c{i % 97}",
         "current_price": round(1000 / (i + 1), 4), "market_cap_rank": i + 1,
         "last_updated": "2026-12-06T10:11:12.000Z"} for i in range(140)]
market = json.dumps(rows).encode()
check(len(market) > 16 * 1024, f"a 16 KB body: {len(market)}")
origin.behave("/m/a", body=market.decode())
for ae, want in ((None, None), ("gzip", "gzip"), ("br", "br"),
                 ("gzip, deflate, br", "br"), ("deflate", None),
                 ("identity", None), ("br;q=0.5, gzip", "gzip")):
    h = {} if ae is None else {"Accept-Encoding": ae}
    direct = corral.get("/api/m/a", h)
    before = answered()
    status, fields, body = raw_get("/api/m/a", h)
    check_eq(answered() - before, 1, f"AE {ae!r}: corral answered, "
             "not a cache in nginx")
    check_eq(status, 200, f"AE {ae!r}: status through nginx")
    check_eq(one(fields, "content-encoding"), want, f"AE {ae!r}: coding")
    check_eq(direct.headers.get("content-encoding"), want,
             f"AE {ae!r}: corral's own coding")
    check(body == direct.body, f"AE {ae!r}: corral's bytes, byte-exact "
          f"({len(body)} through nginx, {len(direct.body)} direct)")
    check_eq(one(fields, "etag"), direct.headers["etag"], f"AE {ae!r}: ETag")
    check_eq(one(fields, "vary"), "Accept-Encoding", f"AE {ae!r}: Vary")
    if want == "gzip":
        check(gzip.decompress(body) == market, "gzip: decodes to the body")
    if want is None:
        check(body == market, f"AE {ae!r}: identity bytes")
check_eq(origin.calls("/m/a"), 1, "one fill for every coding")

# A body too small for a coded form (corral keeps identity only): a gzip
# client gets corral's identity bytes, not nginx's gzip of them.
direct = corral.get("/api/btc", {"Accept-Encoding": "gzip"})
status, fields, body = raw_get("/api/btc", {"Accept-Encoding": "gzip"})
check_eq((status, one(fields, "content-encoding")), (200, None),
         "a small body stays identity through nginx")
check_eq(body, b'{"bitcoin": {"usd": 1}}', "small body, byte-exact")
check_eq(one(fields, "etag"), direct.headers["etag"], "small body's ETag")
check_eq(one(fields, "vary"), "Accept-Encoding", "small body: one Vary")

# HEAD and 304 per representation through nginx.
for ae in ("gzip", "br", None):
    h = {} if ae is None else {"Accept-Encoding": ae}
    _, got, _ = raw_get("/api/m/a", h)
    status, fields, body = raw_get("/api/m/a", h, method="HEAD")
    check_eq((status, body), (200, b""), f"HEAD {ae}")
    for k in ("content-encoding", "content-length", "etag", "vary"):
        check_eq(one(fields, k), one(got, k), f"HEAD {ae}: {k}")
    tag = one(got, "etag")
    status, fields, _ = raw_get("/api/m/a", {**h, "If-None-Match": tag})
    check_eq(status, 304, f"{ae}: If-None-Match its own ETag")
    check_eq(one(fields, "etag"), tag, f"{ae}: the 304's ETag")
gz_tag = corral.get("/api/m/a", {"Accept-Encoding": "gzip"}).headers["etag"]
status, fields, body = raw_get("/api/m/a", {"If-None-Match": gz_tag})
check_eq((status, one(fields, "content-encoding")), (200, None),
         "gzip's ETag does not validate the identity answer")
check(body == market, "the identity answer in full")
check(corral.alive(), "corral still running")
done("nginx")
