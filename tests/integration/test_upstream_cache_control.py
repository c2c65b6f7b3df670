"""An upstream's Cache-Control counts (issue 19, item 7). By default an
answer with no-store, private or no-cache is passed to the clients of its
one fill and stored nowhere (L1, L2), and says `Cache-Control: private,
no-store` so the caches in front of corral store nothing either; the
route's lifetime is not shortened by a max-age. "ignore" stores as the
route says; "honour" also caps the lifetime by s-maxage, else max-age,
less Age. Set-Cookie neither stops storing nor reaches a client."""
import json
import time

from harness import (World, check, check_eq, done, l2_name, raw, status_of)

w = World()
origin = w.start_origin()
redis = w.start_redis()


def route(path, fetch, **kw):
    return {"path": path, "upstream": "o", "fetch": fetch, "strategy": "1m",
            **kw}


corral = w.start_corral({
    "upstreams": {"o": {"base": origin.base()},
                  "trusting": {"base": origin.base(),
                               "upstream_cache_control": "ignore"}},
    "routes": [
        route("/d/{k}", "/d/{k}"),
        route("/ig/{k}", "/ig/{k}", upstream_cache_control="ignore"),
        route("/ho/{k}", "/ho/{k}", upstream_cache_control="honour"),
        {"path": "/tr/{k}", "upstream": "trusting", "fetch": "/tr/{k}",
         "strategy": "1m"},
        {"path": "/tr-strict/{k}", "upstream": "trusting",
         "fetch": "/tr/{k}", "strategy": "1m",
         "upstream_cache_control": "default"},
        route("/neg/{k}", "/neg/{k}", cache_errors={"404": "1m"}),
        route("/sw/{k}", "/sw/{k}", strategy="1s",
              stale_while_revalidate="30s"),
        {"path": "/agg", "strategy": "1m",
         "aggregate": {"a": "/d/agg-pass", "b": "/d/agg-kept"}},
    ],
}, admin=True)


def calls(path):
    return origin.calls(path)


def head_lines(answer):
    head = answer.partition(b"\r\n\r\n")[0].decode("latin-1")
    return [line.lower() for line in head.split("\r\n")[1:]]


def passed(r, what, collapsed=False):
    """r is a pass-through answer: not stored, and says so downstream."""
    check_eq(r.headers.get("cache-control"), "private, no-store",
             f"{what}: Cache-Control")
    want = ("corral; fwd=miss; collapsed; detail=uncacheable" if collapsed
            else "corral; fwd=miss; detail=uncacheable")
    check_eq(r.headers.get("cache-status"), want, f"{what}: Cache-Status")
    check("age" not in r.headers, f"{what}: no Age: {r.headers}")
    check("set-cookie" not in r.headers, f"{what}: no Set-Cookie")


# no-store, private, no-cache (bare or qualified, any case, any line):
# three requests, three calls, each answer the upstream's.
for name, cc in [("no-store", "no-store"), ("private", "private"),
                 ("private-field", 'private="X-User", max-age=600'),
                 ("no-cache", "No-Cache"),
                 ("public-no-store", "public, max-age=3600, no-store")]:
    origin.behave(f"/d/{name}", headers={"Cache-Control": cc},
                  content_type="application/json; charset=utf-8")
    bodies = set()
    for i in range(3):
        r = corral.get(f"/d/{name}")
        check_eq(r.status, 200, f"{cc}: status")
        check_eq(r.headers.get("content-type"),
                 "application/json; charset=utf-8", f"{cc}: Content-Type")
        passed(r, cc)
        bodies.add(json.loads(r.body)["n"])
    check_eq(calls(f"/d/{name}"), 3, f"{cc}: 3 requests, 3 calls")
    check_eq(bodies, {1, 2, 3}, f"{cc}: each answer is its own call's")

# One Cache-Control line on the wire, not the route's max-age as well.
a = raw(corral.port, b"GET /d/no-store HTTP/1.1\r\nHost: x\r\n\r\n")
check_eq(status_of(a), 200, "raw request")
cc_lines = [x for x in head_lines(a) if x.startswith("cache-control:")]
check_eq(cc_lines, ["cache-control: private, no-store"], "one Cache-Control")

# Collapsed waiters of one no-store fill all get its answer: one call for
# a concurrent burst, and nothing kept for the next.
origin.behave("/d/burst", headers={"Cache-Control": "no-store"},
              delay_ms=600)
rs = corral.many("/d/burst", 40)
check_eq(calls("/d/burst"), 1, "a burst of 40: one call")
check_eq({r.status for r in rs}, {200}, "every waiter answered 200")
check_eq(len({r.body for r in rs}), 1, "every waiter got the one body")
leaders = [r for r in rs if "collapsed" not in r.headers["cache-status"]]
check_eq(len(leaders), 1, "one request filled")
for r in rs:
    passed(r, "burst", collapsed=r not in leaders)
r = corral.get("/d/burst")
check_eq(calls("/d/burst"), 2, "the next request calls again")

# A cached 4xx (cache_errors) that says no-store is not kept either.
origin.behave("/neg/gone", status=404, body='{"error":"gone"}',
              headers={"Cache-Control": "no-store"})
for i in range(2):
    r = corral.get("/neg/gone")
    check_eq(r.status, 404, "the upstream's 404")
    check_eq(r.body, b'{"error":"gone"}', "its body")
    passed(r, "404 no-store")
check_eq(calls("/neg/gone"), 2, "a no-store 404 is not kept")

# An aggregate with a member that must not be kept is not kept either.
origin.behave("/d/agg-pass", headers={"Cache-Control": "private"})
for i in range(2):
    r = corral.get("/agg")
    check_eq(r.status, 200, "aggregate")
    check_eq(sorted(r.json()), ["a", "b"], "both members")
    check_eq(r.headers.get("cache-control"), "private, no-store",
             "aggregate: Cache-Control")
check_eq(calls("/d/agg-pass"), 2, "the private member: a call each")
check_eq(calls("/d/agg-kept"), 1, "the other member is kept")

# A key that was kept, then turns no-store: its refresh drops the copy,
# so the stale window does not hide the upstream's new word.
r = corral.get("/sw/k")
check_eq(r.headers.get("cache-status"), "corral; fwd=miss; stored", "kept")
origin.behave("/sw/k", headers={"Cache-Control": "no-store"})
time.sleep(1.2)
r = corral.get("/sw/k")
check(r.headers.get("cache-status", "").startswith("corral; hit; fwd=stale"),
      f"stale while the refresh runs: {r.headers}")
deadline = time.time() + 10
while calls("/sw/k") < 2 and time.time() < deadline:
    time.sleep(0.05)
time.sleep(0.2)
r = corral.get("/sw/k")
passed(r, "after the refresh said no-store")
check_eq(calls("/sw/k"), 3, "the copy is gone: a call")

# "ignore" (on the route, or on the upstream for its routes) stores as
# before; a route can ask for the default back.
for path, fetch in [("/ig/a", "/ig/a"), ("/tr/a", "/tr/a")]:
    origin.behave(fetch, headers={"Cache-Control": "private, no-store"})
    r1, r2, r3 = (corral.get(path) for _ in range(3))
    check_eq(r1.headers.get("cache-status"), "corral; fwd=miss; stored",
             f"{path}: stored")
    check(r3.headers.get("cache-status", "").startswith("corral; hit"),
          f"{path}: a hit: {r3.headers}")
    check(r3.headers.get("cache-control", "").startswith("max-age="),
          f"{path}: the route's max-age: {r3.headers}")
    check_eq(calls(fetch), 1, f"{path}: 3 requests, 1 call")
origin.behave("/tr/b", headers={"Cache-Control": "no-store"})
for i in range(2):
    passed(corral.get("/tr-strict/b"), "default on an ignoring upstream")
check_eq(calls("/tr/b"), 2, "the route's own default wins")

# By default a shorter max-age does not shorten the route's lifetime (a
# rate-limited API would be called more often); "honour" caps it by
# s-maxage (first) or max-age, less Age, never lengthens it.
cases = [("/d/short", {"Cache-Control": "max-age=1"}, 1),
         ("/ho/max-age", {"Cache-Control": "max-age=1"}, 2),
         ("/ho/s-maxage", {"Cache-Control": "max-age=600, s-maxage=1"}, 2),
         ("/ho/aged", {"Cache-Control": "max-age=10", "Age": "9"}, 2),
         ("/ho/long", {"Cache-Control": "max-age=86400"}, 1)]
for path, headers, _ in cases:
    origin.behave(path, headers=headers)
    check_eq(corral.get(path).headers.get("cache-status"),
             "corral; fwd=miss; stored", f"{path}: stored")
    check(corral.get(path).headers.get("cache-status", "").startswith(
        "corral; hit"), f"{path}: a hit at once")
time.sleep(1.3)
for path, headers, want in cases:
    corral.get(path)
    check_eq(calls(path), want, f"{path} {headers}: calls after 1.3 s")
r = corral.get("/ho/long")
check(int(r.headers["cache-control"].split("=")[1]) <= 60,
      f"honour never lengthens the route's 1m: {r.headers}")
origin.behave("/ho/no-store", headers={"Cache-Control": "no-store"})
passed(corral.get("/ho/no-store"), "honour passes no-store too")
passed(corral.get("/ho/no-store"), "honour passes no-store too")
check_eq(calls("/ho/no-store"), 2, "honour: no-store is not kept")
origin.behave("/ho/stale", headers={"Cache-Control": "max-age=5",
                                    "Age": "7"})
passed(corral.get("/ho/stale"), "honour: stale on arrival is not kept")

# Set-Cookie: the answer is kept (it answers corral's request, which never
# carries a client's cookies), and the cookie never reaches a client.
origin.behave("/d/cookie", headers={"Set-Cookie": "sid=abc; HttpOnly"})
r1, r2 = corral.get("/d/cookie"), corral.get("/d/cookie")
check("set-cookie" not in r1.headers and "set-cookie" not in r2.headers,
      f"no Set-Cookie to clients: {r1.headers}")
check(r2.headers.get("cache-status", "").startswith("corral; hit"),
      "a Set-Cookie answer is kept")
check_eq(calls("/d/cookie"), 1, "Set-Cookie: one call")

# The request that filled a pass-through answer counts as "uncacheable".
m = corral.metrics()
got = m.get(("corral_requests_total",
             frozenset({("route", "/d/{k}"), ("result", "uncacheable")})))
check(got is not None and got >= 17, f"uncacheable counted: {got}")

# With L2: a no-store answer is not written to Redis, and an instance
# sharing it calls the upstream for its own clients.
cfg = {
    "l2": {"redis": f"127.0.0.1:{redis.port}", "prefix": "cc:",
           "timeout": "500ms"},
    "upstreams": {"o": {"base": origin.base()}},
    "routes": [route("/l2/{k}", "/l2/{k}")],
}
a = w.start_corral(cfg)
b = w.start_corral(cfg)
time.sleep(0.3)
origin.behave("/l2/ns", headers={"Cache-Control": "no-store"})
origin.behave("/l2/kept")
for c in (a, b, a):
    passed(c.get("/l2/ns"), "L2: no-store")
    c.get("/l2/kept")
check_eq(calls("/l2/ns"), 3, "L2: each request calls")
check_eq(calls("/l2/kept"), 1, "L2: the other key is shared")
keys = redis.scan("cc:*")
check(l2_name(b"cc:", b"v:", b"/l2/kept") in keys,
      f"L2 holds the kept value: {keys}")
check([k for k in keys if b"/l2/ns" in k] == [],
      f"nothing of the no-store key in L2: {keys}")
check(corral.alive() and a.alive() and b.alive(), "all up")
done("upstream_cache_control")
