"""Failures are shared and never cached: a 500 from the leader's call, a
hanging upstream, invalid JSON. And what clients send cannot multiply
upstream calls (query strings) or reach another path (parameters)."""
import random
import string
import time

from harness import World, check, check_eq, done

w = World()
origin = w.start_origin()
corral = w.start_corral({
    "upstreams": {
        "o": {"base": origin.base(), "timeout": "10s",
              "headers": {"x-api-key": "${CORRAL_IT_KEY}"}},
        "slow": {"base": origin.base(), "timeout": "500ms"},
        "one": {"base": origin.base(), "max_connections": 1},
    },
    "routes": [
        {"path": "/api/fails", "upstream": "o", "fetch": "/fails"},
        {"path": "/api/hangs", "upstream": "slow", "fetch": "/hangs"},
        {"path": "/api/broken", "upstream": "o", "fetch": "/broken"},
        {"path": "/api/text", "upstream": "o", "fetch": "/text",
         "json": False},
        {"path": "/api/q", "upstream": "o", "fetch": "/q"},
        {"path": "/api/fq", "upstream": "o", "fetch": "/fq",
         "query": ["currency"]},
        {"path": "/api/price/{coin}", "upstream": "o",
         "fetch": "/price/{coin}?vs=usd"},
        {"path": "/api/big", "upstream": "o", "fetch": "/big"},
        {"path": "/api/smuggle", "upstream": "one", "fetch": "/smuggle"},
        {"path": "/api/victim", "upstream": "one", "fetch": "/victim"},
        {"path": "/up/{p}", "upstream": "o", "fetch": "/up/{p}"},
        {"path": "/raw/{p}", "upstream": "o", "fetch": "/up/{p}",
         "json": False},
    ],
    # Failed keys are asked again at once here: test_protect covers the
    # backoff.
    "limits": {"max_body_bytes": "64KB", "backoff_min": "1ms",
               "backoff_max": "1ms"},
}, env={"CORRAL_IT_KEY": "it-secret"})

# The leader's call fails: one call, every waiter the same 502.
origin.behave("/fails", status=500, delay_ms=200)
answers = corral.many("/api/fails", 100)
check_eq(origin.calls("/fails"), 1, "one call for 100 clients")
check_eq({a.status for a in answers}, {502}, "all 502")
check_eq(len({a.body for a in answers}), 1, "the same answer for all")
body = answers[0].json()
check_eq(body["route"], "/api/fails", "error names the route")
check("500" in body["error"], f"error says why: {body}")
# Not cached: the next request asks again.
origin.behave("/fails", delay_ms=0)
ok = corral.get("/api/fails")
check_eq(ok.status, 200, "after the failure, a new fill")
check_eq(origin.calls("/fails"), 2, "exactly one new call")

# A hanging upstream: 504 for all at the upstream's timeout.
origin.behave("/hangs", hang=True)
answers = corral.many("/api/hangs", 50, timeout=20)
check_eq({a.status for a in answers}, {504}, "all 504")
check_eq(origin.calls("/hangs"), 1, "one call for 50 clients")
check_eq(answers[0].json()["route"], "/api/hangs", "504 names the route")

# Invalid JSON: 502, not cached.
origin.behave("/broken", invalid_json=True)
for i in range(2):
    time.sleep(0.01)  # past the 1 ms backoff
    r = corral.get("/api/broken")
    check_eq(r.status, 502, "invalid JSON is a 502")
    check("JSON" in r.json()["error"], "says why")
check_eq(origin.calls("/broken"), 2, "invalid JSON was not cached")
# ...unless the route says the body is not JSON.
origin.behave("/text", body="plain words", content_type="text/plain")
r = corral.get("/api/text")
check_eq((r.status, r.body), (200, b"plain words"), "json: false")
check_eq(r.headers["content-type"], "text/plain", "upstream's content type")
check_eq(corral.get("/api/text").headers["cache-status"][:12],
         "corral; hit;", "stored")

# 200 random query strings on a route without "query": one call.
def rnd():
    return "".join(random.choice(string.ascii_lowercase) for _ in range(8))

paths = [f"/api/q?{rnd()}={rnd()}" for _ in range(200)]
answers = corral.many(None, 200, paths=paths)
check_eq({a.status for a in answers}, {200}, "all 200")
check_eq(origin.calls("/q"), 1, "random query strings: one call")
reqs = origin.control("GET", "/_origin/requests?path=/q")
check_eq(reqs[0]["query"], "", "nothing forwarded")
check_eq(reqs[0]["headers"].get("x-api-key"), "it-secret",
         "configured header, expanded from the environment")
# A listed query parameter is forwarded and keyed on.
check_eq(corral.get("/api/fq?currency=eur&junk=1").status, 200, "fq eur")
check_eq(corral.get("/api/fq?junk=2&currency=eur").status, 200, "fq eur 2")
check_eq(corral.get("/api/fq?currency=usd").status, 200, "fq usd")
check_eq(origin.calls("/fq"), 2, "one call per forwarded value")
queries = sorted(r["query"] for r in
                 origin.control("GET", "/_origin/requests?path=/fq"))
check_eq(queries, ["currency=eur", "currency=usd"], "forwarded queries")

# Path parameters: traversal, spaces, NUL, over-long → 400, origin idle.
before = origin.total()
for bad in ["/api/price/..%2Fadmin", "/api/price/a%20b",
            "/api/price/a%00b", "/api/price/" + "a" * 200, "/api/price/a;b"]:
    r = corral.get(bad)
    check_eq(r.status, 400, f"{bad}")
    check("coin" in r.json()["error"], f"{bad}: names the parameter")
# A dot segment is resolved before routing: it is never a parameter.
for dots in ["/api/price/..", "/api/price/%2e%2e"]:
    check_eq(corral.get(dots).status, 404, f"{dots} is /api/")
check_eq(origin.total(), before, "the origin saw nothing")
r = corral.get("/api/price/bitcoin")
check_eq(r.status, 200, "a good parameter")
check_eq(r.json()["path"], "/price/bitcoin", "reaches the templated path")

# A body over the cap: 502, not cached.
origin.behave("/big", size=100000)
r = corral.get("/api/big")
check_eq(r.status, 502, "body over max_body_bytes")
origin.behave("/big", size=1000)
time.sleep(0.01)  # past the 1 ms backoff
check_eq(corral.get("/api/big").status, 200, "a body under the cap")

# An upstream that sends more than its Content-Length (here a whole second
# answer) must not have those bytes read as the next request's answer on
# the reused connection: they would be cached under another key.
origin.behave("/smuggle", body='{"for": "/smuggle"}',
              trailing="HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                       "Content-Length: 19\r\n\r\n{\"for\": \"SMUGGLED\"}")
origin.behave("/victim", body='{"for": "/victim"}', delay_ms=50)
check_eq(corral.get("/api/smuggle").json(), {"for": "/smuggle"}, "smuggle")
check_eq(corral.get("/api/victim").json(), {"for": "/victim"},
         "regression: extra upstream bytes are not the next answer")

# Unknown paths and methods.
r = corral.get("/nope")
check_eq(r.status, 404, "unknown path")
check("error" in r.json(), "404 is JSON")
r = corral.get("/api/q", method="POST")
check_eq(r.status, 405, "POST")
check_eq(r.headers.get("allow"), "GET, HEAD", "Allow")
check(corral.alive(), "corral still running")

# Upstream answers that are not a whole, clean representation: a 206 (a
# part of one), a Content-Type with VT or FF in it. Never stored.
for status in (206, 204, 201):
    origin.behave(f"/up/s{status}", status=status)
    a = corral.get(f"/up/s{status}")
    check_eq(a.status, 502, f"{status} is not stored as a 200")
    check(str(status) in a.json()["error"], f"the error says {status}: {a}")
for bad in ("\x0b", "\x0c"):
    origin.behave("/up/ctype", content_type="application/json" + bad + "x")
    time.sleep(0.01)  # past the 1 ms backoff
    a = corral.get("/up/ctype")
    check_eq(a.status, 502, f"Content-Type with {bad!r}")
check_eq(origin.calls("/up/ctype"), 2, "neither was cached")
# A compressed body is decoded, on JSON and raw routes alike, and served
# without the Content-Encoding it no longer has.
origin.behave("/up/gz", gzip=True, body='{"zipped":true}')
for route in ("/up/gz", "/raw/gz"):
    a = corral.get(route)
    check_eq(a.status, 200, f"{route}: gzip")
    check_eq(a.body, b'{"zipped":true}', f"{route}: decoded")
    check("content-encoding" not in a.headers, f"{route}: no Content-Encoding")

# SIGHUP (no reload yet) neither kills corral nor drops a request.
import signal, threading, time
slow = {}
origin.behave("/price/hup", delay_ms=300)
t = threading.Thread(target=lambda: slow.update(r=corral.get("/api/price/hup")))
t.start()
time.sleep(0.1)
corral.proc.send_signal(signal.SIGHUP)
t.join()
check_eq(slow["r"].status, 200, "the request in flight over SIGHUP")
time.sleep(0.1)
check(corral.alive(), "corral survives SIGHUP")
check_eq(corral.get("/api/q").status, 200, "and serves after it")
done("failures")
