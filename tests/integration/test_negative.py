"""Negative caching: a route's cache_errors keeps upstream 4xx answers
briefly, with their status and body, so clients asking for an unknown id
again and again cost one upstream call per window; other errors are
never stored."""
import time

from harness import World, check, check_eq, done

w = World()
origin = w.start_origin()
corral = w.start_corral({
    "upstreams": {"o": {"base": origin.base()}},
    "routes": [{"path": "/api/coin/{id}", "upstream": "o",
                "fetch": "/coins/{id}", "cache_errors": {"404": "2s"}}],
    # Failed keys are asked again at once: this test is about what is
    # stored (test_failures covers the backoff).
    "limits": {"backoff_min": "1ms", "backoff_max": "1ms"},
})
origin.behave("/coins/nope", status=404, body='{"error":"no such coin"}')

answers = corral.many("/api/coin/nope", 100)
check_eq({a.status for a in answers}, {404}, "the upstream's status")
check_eq({a.body for a in answers}, {b'{"error":"no such coin"}'},
         "the upstream's body")
check_eq(origin.calls("/coins/nope"), 1, "one call for 100 clients")
for _ in range(20):
    a = corral.get("/api/coin/nope")
check_eq(a.status, 404, "a hit is still the 404")
cs = a.headers.get("cache-status", "")
check(cs.startswith("corral; hit; ttl=") and cs.endswith("detail=negative"),
      f"Cache-Status says so: {cs}")
check_eq(origin.calls("/coins/nope"), 1, "still one call")
# A conditional request does not turn a cached 404 into a 304.
r = corral.get("/api/coin/nope", headers={"If-None-Match": a.headers["etag"]})
check_eq(r.status, 404, "no 304 for a cached error")

# After its window, one more call.
time.sleep(2.2)
check_eq(corral.get("/api/coin/nope").status, 404, "after the window")
check_eq(origin.calls("/coins/nope"), 2, "one more call per window")

# A status the route does not list is never stored.
origin.behave("/coins/busy", status=500)
for i in range(3):
    check_eq(corral.get("/api/coin/busy").status, 502, "500 is a 502")
    time.sleep(0.01)
check_eq(origin.calls("/coins/busy"), 3, "500 is not cached")
origin.behave("/coins/gone", status=410)
for i in range(2):
    check_eq(corral.get("/api/coin/gone").status, 502, "410 not listed")
    time.sleep(0.01)
check_eq(origin.calls("/coins/gone"), 2, "410 is not cached here")
check(corral.alive(), "corral still up")
done("negative")
