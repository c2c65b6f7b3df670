"""Issue 17, planted values: bytes under corral's key in Redis that are
not what corral would have stored must be a counted miss, refetched and
overwritten, never served. doc/fleet.md ("What comes from Redis is
checked"): the response head must be exactly what corral renders, the
body JSON on a json route, lifetimes and stale windows no longer than the
route's, stored no later than a minute ahead. Each planted value is built
in the version 2 layout of src/cache/l2codec.h from a value corral really
stored, changed in one way only."""
import json
import re
import socket
import struct
import time

from harness import (RedisError, World, check, check_eq, done, fleet_config,
                     l2_name, l2_split)

HEAD = struct.Struct("<3sBQQIIHHHII")  # version 2, 42 bytes
# Version 3 (what corral writes) adds the forms kept, two lengths, the ETag.
HEAD3 = struct.Struct("<3sBQQIIHHHIIBII18s")


def decode(blob):
    """(fields, key, ctype, aux, body) of a version 3 value with its body
    (the identity bytes of a small value)."""
    f = HEAD3.unpack_from(blob)
    magic, version, stored, expires, swr, sie, klen, clen, alen, blen = f[:10]
    check(magic == b"CRV" and version == 3, f"a version 3 value: {blob[:8]!r}")
    check(f[11] & 1, "its body kept")
    p = HEAD3.size
    key, p = blob[p:p + klen], p + klen
    ctype, p = blob[p:p + clen], p + clen
    aux, p = blob[p:p + alen], p + alen
    return f[:11], key, ctype, aux, blob[p:p + blen]


def encode(key, ctype, aux, body, stored, expires, swr=0, sie=0, fill_ms=1):
    return HEAD.pack(b"CRV", 2, stored, expires, swr, sie, len(key),
                     len(ctype), len(aux), len(body), fill_ms) + \
        key + ctype + aux + body


w = World()
origin = w.start_origin()
redis = w.start_redis()
cfg = fleet_config(origin, redis.port, timeout="500ms", routes=[
    {"path": "/api/{k}", "upstream": "o", "fetch": "/v/{k}",
     "strategy": "1m"},
    {"path": "/raw/{k}", "upstream": "o", "fetch": "/v/{k}",
     "strategy": "1m", "json": False}])
a, b = w.start_fleet(cfg)

# Real values to start from: a JSON one, and a non-JSON one with its head.
check_eq(a.get("/api/probe").status, 200, "A stores /api/probe")
origin.behave("/v/nj", body="not json")
check_eq(a.get("/raw/nj").status, 200, "A stores /raw/nj (json: false)")


def stored_values():
    """{decoded key: (redis name, bytes)} of every value in Redis."""
    out = {}
    for name in redis.scan("t:*"):
        try:
            v = redis.cmd("GET", name)
        except RedisError:
            continue  # not a string
        if v and v.startswith(b"CRV"):
            out[decode(v)[1]] = (name, v)
    return out


found = {}
for _ in range(50):
    found = stored_values()
    if b"/api/probe" in found and b"/raw/nj" in found:
        break
    time.sleep(0.05)
check(b"/api/probe" in found and b"/raw/nj" in found,
      f"corral's values found in Redis: {sorted(found)}")
probe_name, probe = found[b"/api/probe"]
check(probe_name.endswith(b"/api/probe"), f"named after its key: {probe_name}")
prefix, kind, probe_key = l2_split(probe_name)
prefix = probe_key[:-len(b"/api/probe")]


def name_of(key):
    """The name B reads key's value under."""
    return l2_name(l2_split(probe_name)[0], kind, prefix + key)
_, _, p_ctype, p_aux, p_body = decode(probe)
_, _, n_ctype, n_aux, n_body = decode(found[b"/raw/nj"][1])
check_eq(b.get("/api/probe").body, p_body, "B holds /api/probe")

now = int(time.time() * 1000)
MIN = 60000
CASES = {
    # name: (ctype, aux, body, stored_at, expires_at, swr, sie)
    "emptyhead": (p_ctype, b"", b'{"planted": 1}', now, now + 50000, 0, 0),
    "shortlength": (p_ctype, p_aux.replace(
        b"Content-Length: %d\r\n" % len(p_body), b"Content-Length: 2\r\n"),
        b'{"p":1234}', now, now + 50000, 0, 0),
    "notjson": (n_ctype, n_aux, n_body, now, now + 50000, 0, 0),
    "forever": (p_ctype, p_aux, p_body, now, 2**64 - 1, 0, 0),
    "future": (p_ctype, p_aux, p_body, now + 60 * MIN, now + 60 * MIN + 50000,
               0, 0),
    "toolong": (p_ctype, p_aux, p_body, now, now + 24 * 60 * MIN, 0, 0),
    "stalewindow": (p_ctype, p_aux, p_body, now - 2 * MIN, now - MIN,
                    24 * 60 * MIN, 24 * 60 * MIN),
}
check(b"Content-Length: 2\r\n" in CASES["shortlength"][1],
      f"the head has a Content-Length to change: {p_aux!r}")


def read_response(sock, buf):
    """One response from sock, strictly framed: (status, headers, body,
    rest) or (None, what came, None, b"")."""
    sock.settimeout(5)
    try:
        while b"\r\n\r\n" not in buf:
            more = sock.recv(65536)
            if not more:
                break
            buf += more
    except socket.timeout:
        pass
    head, sep, rest = buf.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.1 (\d{3}) [^\r\n]*$", head.split(b"\r\n")[0])
    if not sep or not m:
        return None, buf[:300], None, b""
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode()] = v.strip().decode()
    n = int(headers.get("content-length", "0"))
    try:
        while len(rest) < n:
            more = sock.recv(65536)
            if not more:
                break
            rest += more
    except socket.timeout:
        pass
    return int(m.group(1)), headers, rest[:n], rest[n:]


def as_json(body):
    try:
        return json.loads(body)
    except ValueError:
        return body


def rejected():
    return sum(v for (name, _), v in b.metrics().items()
               if name == "corral_l2_rejected_total")


for case, (ctype, aux, body, stored, expires, swr, sie) in CASES.items():
    key = f"/api/{case}".encode()
    planted = encode(key, ctype, aux, body, stored, expires, swr, sie)
    redis.cmd("SET", name_of(key), planted, "PX", 120000)
    before = rejected()
    # Two pipelined requests on one keep-alive connection: the planted key,
    # then a key B holds. Both must parse, in order.
    with socket.create_connection(("127.0.0.1", b.port), 5) as s:
        s.sendall(b"GET /api/%s HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /api/probe HTTP/1.1\r\nHost: x\r\n\r\n" %
                  case.encode())
        status, headers, got, rest = read_response(s, b"")
        if status is None:
            check(False, f"{case}: a status line first, got {headers!r}")
            continue
        check_eq(status, 200, f"{case}: answered 200")
        check_eq(as_json(got),
                 {"path": f"/v/{case}", "query": "", "n": 1},
                 f"{case}: the origin's body, not the planted one")
        cs = headers.get("cache-status", "")
        check("fwd=miss" in cs, f"{case}: a miss: {cs}")
        age = int(re.sub(r"\D", "", headers.get("cache-control", "")) or -1)
        check(0 <= age <= 60, f"{case}: max-age within the route's ttl: "
              f"{headers.get('cache-control')}")
        status, headers, got, _ = read_response(s, rest)
        check_eq((status, got), (200, p_body),
                 f"{case}: the next pipelined answer is in sync")
    check_eq(origin.calls(f"/v/{case}"), 1, f"{case}: one origin call")
    now_there = None
    for _ in range(40):
        now_there = redis.cmd("GET", name_of(key))
        if now_there != planted:
            break
        time.sleep(0.05)
    check(now_there != planted and now_there is not None and
          f'"/v/{case}"'.encode() in now_there,
          f"{case}: the planted value was overwritten with corral's: "
          f"{(now_there or b'')[:80]!r}")
    check(rejected() >= before + 1,
          f"{case}: counted in corral_l2_rejected_total "
          f"({before} -> {rejected()})")
done("planted_values")
