"""L2 keeps the compressed forms: one instance fills a key, the other
promotes it from Redis with its gzip and br forms and serves each coding
byte-exact, while Redis holds a fraction of the identity bytes. A value
an older corral wrote (L2 version 2: identity only, its head without
Vary) is still served, brought up to date; a stored form that does not
decode to its body is never served: without the identity bytes, a miss;
with them (a small body), the value is served and a client that asks for
the bad form gets another coding, checked when it first asks."""
import gzip
import json
import shutil
import struct
import subprocess
import time

from harness import (RedisError, check, check_eq, done, fleet_of_two,
                     l2_name)

origin, redis, a, b = fleet_of_two(timeout="500ms")
BROTLI = shutil.which("brotli")
HEAD2 = struct.Struct("<3sBQQIIHHHII")
HEAD3 = struct.Struct("<3sBQQIIHHHIIBII18s")

rows, i = [], 0
while len(json.dumps(rows)) < 16 * 1024:
    rows.append({"id": f"coin-{i}", "symbol": f"c{i % 97}",
                 "current_price": round(1000 / (i + 1), 4),
                 "market_cap_rank": i + 1})
    i += 1
body = json.dumps(rows).encode()
origin.behave("/v/big", body=body.decode())


def value_in_redis(suffix):
    for _ in range(100):
        for name in redis.scan("t:*"):
            if name.endswith(suffix):
                try:
                    v = redis.cmd("GET", name)
                except RedisError:
                    continue
                if v and v.startswith(b"CRV"):
                    return name, v
        time.sleep(0.05)
    return None, None


check_eq(a.get("/api/big", headers={"Accept-Encoding": "gzip"}).status, 200,
         "A fills /api/big")
name, blob = value_in_redis(b"/api/big")
check(blob is not None, "the value is in Redis")
f = HEAD3.unpack_from(blob)
check_eq(f[1], 3, "written as version 3")
check_eq(f[11] & 1, 0, "without its identity bytes")
check(f[11] & 2, "with its gzip form")
check(len(blob) < len(body) // 3,
      f"Redis holds {len(blob)} bytes for {len(body)} of JSON")

for ae, coding in (("gzip", "gzip"), ("br", "br"), (None, None)):
    r = b.get("/api/big", headers={"Accept-Encoding": ae} if ae else {})
    check_eq(r.status, 200, f"B, {coding}")
    if coding is None or coding == r.headers.get("content-encoding"):
        got = r.body
        if coding == "gzip":
            got = gzip.decompress(r.body)
        elif coding == "br":
            got = subprocess.run([BROTLI, "-dc"], input=r.body,
                                 capture_output=True).stdout if BROTLI \
                else body
        check(got == body, f"B, {coding}: byte-exact")
    if ae == "gzip":
        cs = r.headers.get("cache-status", "")
        check("detail=l2" in cs, f"B's first answer came from L2: {cs}")
        check_eq(r.headers.get("content-encoding"), "gzip", "B: gzip")
check_eq(origin.calls("/v/big"), 1, "one upstream call for both")

# A value an older corral wrote: version 2, identity only, one head
# without Vary. Its ETag is the body's, as corral computes it: read from
# the same body stored under another key.
small = b'{"legacy":true}'
origin.behave("/v/etag", body=small.decode())
etag = a.get("/api/etag").headers["etag"]
head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nETag: %s\r\n" % (len(small), etag.encode()))
key = b"/api/old"
now = int(time.time() * 1000)
old = HEAD2.pack(b"CRV", 2, now, now + 50000, 0, 0, len(key), 16, len(head),
                 len(small), 1) + key + b"application/json" + head + small
redis.cmd("SET", l2_name(b"t:", b"v:", key), old)
r = b.get("/api/old")
check_eq(r.status, 200, "the old value is served")
check_eq(r.body, small, "its body")
check("detail=l2" in r.headers.get("cache-status", ""), f"from L2: {r.headers}")
check_eq(r.headers.get("vary"), "Accept-Encoding", "with Vary now")
check_eq(r.headers.get("etag"), etag, "its ETag")
check_eq(origin.calls("/v/old"), 0, "no upstream call")

# A stored gzip form that does not decode to its body: a miss.
f = list(HEAD3.unpack_from(blob))
klen, clen, alen = f[6], f[7], f[8]
start = HEAD3.size + klen + clen + alen
bad = bytearray(blob)
bad[start + 20] ^= 0xff
key = b"/api/big"
redis.cmd("SET", l2_name(b"t:", b"v:", b"/api/bad"),
          bytes(bad).replace(key, b"/api/bad"))
origin.behave("/v/bad", body=body.decode())
r = b.get("/api/bad", headers={"Accept-Encoding": "gzip"})
check_eq(r.status, 200, "a corrupt form: refetched")
check_eq(gzip.decompress(r.body), body, "the right body")
check_eq(origin.calls("/v/bad"), 1, "from the upstream")

# A small body keeps its identity bytes with its forms: read from L2, the
# forms are checked only when a client first asks for one. A good one is
# served; a corrupt one never is: another coding instead, counted.
def bad_forms():
    return sum(v for (n, _), v in b.metrics().items()
               if n == "corral_l2_bad_forms_total")


sbody = json.dumps(rows[:20]).encode()
check(1024 < len(sbody) < 4096, f"a small body: {len(sbody)} bytes")
origin.behave("/v/small", body=sbody.decode())
check_eq(a.get("/api/small").status, 200, "A fills /api/small")
name, sblob = value_in_redis(b"/api/small")
check(sblob is not None, "the small value is in Redis")
f = HEAD3.unpack_from(sblob)
check_eq(f[11] & 3, 3, "kept with its identity bytes and its gzip form")
forms_before = bad_forms()
r = b.get("/api/small", headers={"Accept-Encoding": "gzip"})
check("detail=l2" in r.headers.get("cache-status", ""),
      f"B's gzip answer came from L2: {r.headers.get('cache-status')}")
check_eq(r.headers.get("content-encoding"), "gzip", "a good form: gzip")
check_eq(gzip.decompress(r.body), sbody, "its gzip form, byte-exact")

klen, clen, alen, blen, glen = f[6], f[7], f[8], f[9], f[12]
gz = HEAD3.size + klen + clen + alen + blen
bad = bytearray(sblob)
bad[gz + glen // 2] ^= 0xff
redis.cmd("SET", l2_name(b"t:", b"v:", b"/api/spoil"),
          bytes(bad).replace(b"/api/small", b"/api/spoil"))
origin.behave("/v/spoil", body=sbody.decode())
r = b.get("/api/spoil", headers={"Accept-Encoding": "gzip"})
check_eq(r.status, 200, "a corrupt gzip form with good identity bytes")
check("detail=l2" in r.headers.get("cache-status", ""),
      f"served from L2: {r.headers.get('cache-status')}")
check_eq(r.headers.get("content-encoding"), None, "not in gzip")
check_eq(r.body, sbody, "the identity bytes instead")
check_eq(bad_forms(), forms_before + 1, "the bad form counted")
r = b.get("/api/spoil", headers={"Accept-Encoding": "gzip;q=1, identity;q=0"})
check_eq((r.status, r.headers.get("content-encoding"), r.body),
         (200, None, sbody), "from L1: still never the bad form")
check_eq(bad_forms(), forms_before + 2, "counted for each answer")
if f[11] & 4:
    r = b.get("/api/spoil", headers={"Accept-Encoding": "br"})
    check_eq(r.headers.get("content-encoding"), "br", "its br form is good")
    if BROTLI:
        check(subprocess.run([BROTLI, "-dc"], input=r.body,
                             capture_output=True).stdout == sbody,
              "br, byte-exact")
check_eq(b.get("/api/spoil").body, sbody, "identity, byte-exact")
check_eq(origin.calls("/v/spoil"), 0, "no upstream call for it")
check_eq(bad_forms(), forms_before + 2, "only the bad form counted")
done("encoding_l2")
