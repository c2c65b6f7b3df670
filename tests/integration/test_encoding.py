"""Answers by Accept-Encoding (RFC 9110 12.5.3): each value is stored once
in gzip (and br where it pays) at fill time and served in the coding the
client prefers, with Content-Encoding, Vary: Accept-Encoding on every
answer, one strong ETag per representation, HEAD and 304 per
representation; bodies round-trip byte-exact through every coding for
sizes from 0 B to 1 MB, also through curl --compressed."""
import gzip
import json
import shutil
import subprocess

from harness import World, check, check_eq, done

w = World()
origin = w.start_origin()
corral = w.start_corral({
    "upstreams": {"o": {"base": origin.base(), "timeout": "10s"}},
    "routes": [
        {"path": "/j/{p}", "upstream": "o", "fetch": "/j/{p}"},
        {"path": "/raw/{p}", "upstream": "o", "fetch": "/raw/{p}",
         "json": False},
    ],
})
BROTLI = shutil.which("brotli")
if not BROTLI:
    print("note: no brotli command: br bodies are checked by length only")


def market(n):
    """About n bytes of JSON as price APIs answer it."""
    rows, i = [], 0
    while len(json.dumps(rows)) < n:
        rows.append({"id": f"coin-{i}", "symbol": f"c{i % 97}",
                     "current_price": round(1000 / (i + 1), 4),
                     "market_cap_rank": i + 1, "roi": None,
                     "last_updated": "2026-12-06T10:11:12.000Z"})
        i += 1
    return json.dumps(rows)


def decode(r):
    """The identity bytes of an answer, by its Content-Encoding."""
    ce = r.headers.get("content-encoding")
    if ce is None:
        return r.body
    if ce == "gzip":
        return gzip.decompress(r.body)
    if ce == "br" and BROTLI:
        return subprocess.run([BROTLI, "-dc"], input=r.body,
                              capture_output=True, check=True).stdout
    return None


def get(path, ae=None, method="GET", inm=None):
    h = {}
    if ae is not None:
        h["Accept-Encoding"] = ae
    if inm is not None:
        h["If-None-Match"] = inm
    return corral.get(path, headers=h, method=method)


body = market(16 * 1024).encode()
origin.behave("/j/m", body=body.decode())

# Each Accept-Encoding, the coding answered.
table = [
    (None, None), ("", None), ("identity", None), ("gzip", "gzip"),
    ("br", "br"), ("gzip, br", "br"), ("gzip, deflate, br, zstd", "br"),
    ("br;q=0.5, gzip", "gzip"), ("x-gzip", "gzip"), ("GZIP", "gzip"),
    ("*", "br"), ("*;q=0", None), ("identity;q=0", None),
    ("identity;q=0, gzip", "gzip"), ("gzip;q=0", None),
    ("deflate", None), ("gzip;q=0.5, identity", None),
]
etags = {}
for ae, want in table:
    r = get("/j/m", ae)
    check_eq(r.status, 200, f"AE {ae!r}")
    check_eq(r.headers.get("content-encoding"), want, f"AE {ae!r}: coding")
    check_eq(r.headers.get("vary"), "Accept-Encoding", f"AE {ae!r}: Vary")
    check_eq(int(r.headers["content-length"]), len(r.body),
             f"AE {ae!r}: Content-Length is the form's")
    got = decode(r)
    if got is not None:
        check(got == body, f"AE {ae!r}: byte-exact ({len(got)} bytes)")
    etags.setdefault(want, set()).add(r.headers["etag"])
check_eq(origin.calls("/j/m"), 1, "one fill for every coding")
check(len(get("/j/m", "gzip").body) < len(body) // 4, "gzip is 4x smaller")
# One strong ETag per representation, the same for every request of it.
for coding, tags in etags.items():
    check_eq(len(tags), 1, f"{coding}: one ETag")
all_tags = [next(iter(t)) for t in etags.values()]
check_eq(len(set(all_tags)), len(all_tags), f"distinct ETags: {all_tags}")
for t in all_tags:
    check(t.startswith('"') and not t.startswith("W/"), f"strong: {t}")

# HEAD and 304 per representation.
for ae, coding in ((None, None), ("gzip", "gzip"), ("br", "br")):
    g = get("/j/m", ae)
    h = get("/j/m", ae, method="HEAD")
    check_eq(h.status, 200, f"HEAD {coding}")
    check_eq(h.body, b"", f"HEAD {coding}: no body")
    for k in ("content-length", "content-encoding", "etag", "vary"):
        check_eq(h.headers.get(k), g.headers.get(k), f"HEAD {coding}: {k}")
    tag = g.headers["etag"]
    for inm in (tag, "W/" + tag, f'"other", {tag}'):
        n = get("/j/m", ae, inm=inm)
        check_eq(n.status, 304, f"{coding}: If-None-Match {inm}")
        check_eq(n.headers.get("etag"), tag, f"{coding}: 304's ETag")
        check_eq(n.headers.get("vary"), "Accept-Encoding", f"{coding}: 304 Vary")
        check("content-encoding" not in n.headers, f"{coding}: 304 no coding")
# Another representation's ETag does not match this one.
ident, gz = get("/j/m").headers["etag"], get("/j/m", "gzip").headers["etag"]
check_eq(get("/j/m", "gzip", inm=ident).status, 200, "identity's tag, gzip")
check_eq(get("/j/m", None, inm=gz).status, 200, "gzip's tag, identity")

# Sizes: 0 B and 1 B (a raw route), the threshold and either side of it,
# 1 MB: byte-exact in every coding.
for n in (0, 1, 255, 256, 257, 4095, 4096, 1 << 20):
    b = (b'"' + b"ab" * n)[:max(n - 1, 0)] + b'"' if n >= 2 else b"7"[:n]
    origin.behave(f"/raw/s{n}", body=b.decode(), content_type="text/plain")
    for ae in (None, "gzip", "br"):
        r = get(f"/raw/s{n}", ae)
        check_eq(r.status, 200, f"{n} B, {ae}")
        got = decode(r)
        if got is not None:
            check(got == b, f"{n} B, {ae}: byte-exact ({len(got)} bytes)")
        if n < 256:
            check("content-encoding" not in r.headers, f"{n} B: identity")
        check_eq(r.headers.get("vary"), "Accept-Encoding", f"{n} B: Vary")
    if n >= 4096:
        check_eq(get(f"/raw/s{n}", "gzip").headers.get("content-encoding"),
                 "gzip", f"{n} B: gzip kept")

# A real client: curl --compressed asks for what it decodes and checks.
curl = shutil.which("curl")
if curl:
    out = subprocess.run([curl, "-s", "--compressed", "-D", "-", "-o",
                          w.path("curl.out"),
                          f"http://127.0.0.1:{corral.port}/j/m"],
                         capture_output=True, check=True).stdout.decode()
    check("content-encoding:" in out.lower(), f"curl got a coding: {out}")
    with open(w.path("curl.out"), "rb") as f:
        check(f.read() == body, "curl --compressed: byte-exact")
check(corral.alive(), "corral still running")
done("encoding")
