#!/usr/bin/env python3
"""Issue 19 (9), the smaller HTTP points: "Cache-Control: only-if-cached"
on a miss answered after an upstream call instead of 504 without one
(RFC 9111 5.2.1.7); 502/503/504 answers carried no Cache-Status, so a
remembered error (backoff) looked like a fresh one; the 502 of an
aggregate whose every member failed had no Retry-After; a value half a
second stale said "ttl=-0"; and a TTL under 1 s (jitter on "1s") became
"max-age=0" for a value that was fresh."""
import time

from harness import World, check, check_eq, done

w = World()
origin = w.start_origin()
redis = w.start_redis()

ROUTES = [
    {"path": "/api/x/{k}", "upstream": "o", "fetch": "/x/{k}",
     "strategy": "1m"},
    {"path": "/api/slow", "upstream": "slow", "fetch": "/slow"},
    {"path": "/api/lim", "upstream": "lim", "fetch": "/lim"},
    {"path": "/api/dead/{k}", "upstream": "o", "fetch": "/dead/{k}"},
    {"path": "/api/dash", "strategy": "1m",
     "aggregate": {"p": "/api/dead/p", "q": "/api/dead/q"}},
    {"path": "/api/swr", "upstream": "o", "fetch": "/swr", "strategy": "1s",
     "stale_while_revalidate": "30s", "early_refresh": 0, "ttl_jitter": "0%"},
    {"path": "/api/short", "upstream": "o", "fetch": "/short",
     "strategy": "1s", "ttl_jitter": "10%", "early_refresh": 0},
]
UPSTREAMS = {"o": {"base": origin.base(), "timeout": "2s"},
             "slow": {"base": origin.base(), "timeout": "300ms"},
             "lim": {"base": origin.base(), "timeout": "2s"}}
LIMITS = {"backoff_min": "2s", "backoff_max": "4s"}
l2 = {"redis": f"127.0.0.1:{redis.port}", "prefix": "edges:"}
a, b = [w.start_corral({"upstreams": UPSTREAMS, "routes": ROUTES,
                        "limits": LIMITS, "l2": l2}) for _ in range(2)]
OIC = {"Cache-Control": "max-age=0, Only-If-Cached"}

# ---- only-if-cached ----
r = a.get("/api/x/1", headers=OIC)
check_eq(r.status, 504, "only-if-cached: a miss is 504")
check_eq(r.headers.get("cache-status"), "corral; fwd=miss; detail=only-if-cached",
         "only-if-cached: Cache-Status says why")
check_eq(origin.total(), 0, "only-if-cached: no upstream call")
check_eq(a.get("/api/x/1").status, 200, "a plain request fills")
r = a.get("/api/x/1", headers=OIC)
check_eq(r.status, 200, "only-if-cached: a hit in L1")
check(r.headers["cache-status"].startswith("corral; hit; ttl="),
      f"only-if-cached: from L1: {r.headers}")
r = b.get("/api/x/1", headers=OIC)
check_eq(r.status, 200, "only-if-cached: another instance reads L2")
check(r.headers["cache-status"].endswith("; detail=l2"),
      f"only-if-cached: from L2: {r.headers}")
check_eq(origin.total(), 1, "only-if-cached: one call in all")
r = a.get("/api/dash", headers=OIC)
check_eq(r.status, 504, "only-if-cached: an aggregate's miss is 504")
check_eq(origin.total(), 1, "only-if-cached: no member call either")

# ---- upstream errors carry Cache-Status; a remembered one says so ----
origin.behave("/dead/p", status=500)
origin.behave("/dead/q", status=500)
r = a.get("/api/dead/p")
check_eq(r.status, 502, "502: a failing upstream")
check_eq(r.headers.get("cache-status"),
         "corral; fwd=miss; detail=upstream-error", "502: Cache-Status")
check_eq(r.headers.get("retry-after"), "2", "502: until the key's next try")
r = a.get("/api/dead/p")
check_eq(r.status, 502, "502 again, from the backoff")
check_eq(r.headers.get("cache-status"), "corral; fwd=miss; detail=backoff",
         "502: remembered, and said so")
check(r.headers.get("retry-after") in ("1", "2"), f"502: {r.headers}")
check_eq(origin.calls("/dead/p"), 1, "502: no call while backing off")

origin.behave("/slow", hang=True)
r = a.get("/api/slow")
check_eq(r.status, 504, "504: a timeout")
check_eq(r.headers.get("cache-status"),
         "corral; fwd=miss; detail=upstream-error", "504: Cache-Status")
r = a.get("/api/slow")
check_eq((r.status, r.headers.get("cache-status")),
         (504, "corral; fwd=miss; detail=backoff"), "504: remembered")

origin.behave("/lim", status=429, retry_after=3)
r = a.get("/api/lim")
check_eq(r.status, 503, "503: the upstream asked for a pause")
check_eq(r.headers.get("cache-status"),
         "corral; fwd=miss; detail=upstream-busy", "503: Cache-Status")
check_eq(r.headers.get("retry-after"), "3", "503: the upstream's pause")

# ---- an aggregate whose every member failed ----
r = b.get("/api/dash")
check_eq(r.status, 502, "aggregate: every member failed")
check_eq(set(r.json()["errors"]), {"p", "q"}, "aggregate: both listed")
check(r.headers.get("retry-after") in ("1", "2"),
      f"aggregate: Retry-After: {r.headers}")
check(r.headers.get("cache-status", "").startswith("corral; fwd=miss; detail="),
      f"aggregate: Cache-Status: {r.headers}")
r = b.get("/api/dash")
check_eq((r.status, r.headers.get("cache-status")),
         (502, "corral; fwd=miss; detail=backoff"), "aggregate: remembered")
check("retry-after" in r.headers, f"aggregate: remembered: {r.headers}")

# ---- stale: ttl=-N, N >= 1 ----
check_eq(a.get("/api/swr").status, 200, "swr: filled")
origin.behave("/swr", delay_ms=1000)
time.sleep(1.3)
r = a.get("/api/swr")
check_eq(r.headers.get("cache-status"),
         "corral; hit; fwd=stale; ttl=-1; detail=revalidating",
         "swr: 0.3 s past expiry is ttl=-1, not -0")

# ---- a TTL under 1 s is max-age=1 while fresh ----
for i in range(5):
    fresh = [a.get("/api/short") for _ in range(3)]
    for r in fresh:
        if r.headers["cache-status"].startswith(("corral; hit; ttl=",
                                                 "corral; fwd=miss")):
            check_eq(r.headers.get("cache-control"), "max-age=1",
                     f"short: fresh, not max-age=0: {r.headers}")
    time.sleep(1.0)

for c in (a, b):
    check(c.alive(), "corral still running")
done("cache_status_edges")
