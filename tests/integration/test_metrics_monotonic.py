#!/usr/bin/env python3
"""Counters never go down. Every counter series of /metrics (each _total,
and the latency histogram's buckets, _count and _sum) is scraped before
and after an aggregate that costs two member calls, a POST /refresh, a
stale answer with its background refresh, and key and route purges: none
may decrease, and none may vanish. corral_upstream_calls_saved_total
counts exactly the requests answered hit, l2_hit, collapsed or stale
(there is no negative caching here)."""
import asyncio
import time

from harness import World, check, check_eq, done, free_port, request, \
    wait_port

w = World()
origin = w.start_origin()
TOKEN = "metrics-token"
SAVED = ("hit", "l2_hit", "collapsed", "stale")
aport = free_port()


def base_routes():
    return [
        {"path": "/api/x/{id}", "upstream": "o", "fetch": "/x/{id}"},
        {"path": "/api/slow", "upstream": "o", "fetch": "/slow"},
        {"path": "/api/old", "upstream": "o", "fetch": "/old"},
        {"path": "/api/swr", "upstream": "o", "fetch": "/swr",
         "strategy": "1s", "stale_while_revalidate": "60s"},
        {"path": "/api/agg", "aggregate": {"a": "/api/x/a1",
                                           "b": "/api/x/a2"}},
    ]


def config(routes, probe):
    return {
        "listen": f"127.0.0.1:{corral_port}",
        "admin": {"listen": f"127.0.0.1:{aport}", "token": TOKEN},
        "upstreams": {"o": {"base": origin.base(), "timeout": "10s"}},
        # The probe route says which config is served.
        "routes": routes + [{"path": f"/probe/{probe}", "upstream": "o",
                             "fetch": "/probe"}],
    }


def admin(method, path):
    return asyncio.run(request(aport, path,
                               {"Authorization": f"Bearer {TOKEN}"}, method,
                               10))


def scrape():
    """{(name, labels): value} of every sample."""
    r = admin("GET", "/metrics")
    check_eq(r.status, 200, "metrics: 200")
    out = {}
    for line in r.body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def is_counter(series):
    name = series.partition("{")[0]
    return (name.endswith("_total") or name.endswith("_bucket") or
            name.endswith("_count") or name.endswith("_sum"))


def requests(m, route, result):
    return m.get(f'corral_requests_total{{route="{route}",result="{result}"}}')


def saved_ok(m, what):
    want = sum(v for k, v in m.items()
               if k.startswith("corral_requests_total{") and
               any(f'result="{r}"' in k for r in SAVED))
    check_eq(m["corral_upstream_calls_saved_total"], want,
             f"{what}: saved = requests answered {'/'.join(SAVED)}")


last = {}


def step(what):
    """Scrapes and checks against the scrape before."""
    global last
    m = scrape()
    for k, v in last.items():
        if not is_counter(k):
            continue
        check(k in m, f"{what}: {k} is still there")
        check(m.get(k, 0) >= v, f"{what}: {k} went down ({v} -> {m.get(k)})")
    saved_ok(m, what)
    last = m
    return m


corral_port = None  # the harness picks it
corral = w.start_corral(config(base_routes(), 0))
corral_port = corral.port
wait_port(aport, corral.proc)
step("start")

# ---- requests: stored, hits, collapsed ----
check_eq(corral.get("/api/x/1").status, 200, "x/1 stored")
for _ in range(3):
    check_eq(corral.get("/api/x/1").status, 200, "x/1 hit")
origin.behave("/slow", delay_ms=300)
check_eq({a.status for a in corral.many("/api/slow", 8)}, {200}, "slow: 200")
m = step("requests")
check_eq(m["corral_upstream_calls_saved_total"], 3 + 7,
         "saved: 3 hits and 7 collapsed waiters")

# ---- an aggregate of two cold members: two calls, one request ----
check_eq(corral.get("/api/agg").status, 200, "aggregate: 200")
check_eq(origin.calls("/x/a1") + origin.calls("/x/a2"), 2,
         "aggregate: one call per member")
m = step("aggregate")
check_eq(m["corral_upstream_calls_saved_total"], 10, "aggregate saves none")
check_eq(corral.get("/api/agg").status, 200, "aggregate: hit")
step("aggregate hit")

# ---- refresh: a call, no request ----
calls = origin.calls("/x/1")
check_eq(admin("POST", "/refresh/api/x/1").status, 202, "refresh: 202")
deadline = time.time() + 10
while origin.calls("/x/1") < calls + 1:
    check(time.time() < deadline, "refresh: the call")
    time.sleep(0.02)
time.sleep(0.2)
step("refresh")

# ---- stale while a background refresh runs ----
check_eq(corral.get("/api/swr").status, 200, "swr: stored")
time.sleep(1.5)
got = corral.get("/api/swr")
check("fwd=stale" in got.headers["cache-status"],
      f"swr: stale after its second ({got.headers['cache-status']})")
deadline = time.time() + 10
while origin.calls("/swr") < 2:
    check(time.time() < deadline, "swr: the background refresh")
    time.sleep(0.02)
time.sleep(0.2)
m = step("stale")
check_eq(requests(m, "/api/swr", "stale"), 1, "one stale answer")

# ---- purges ----
check_eq(admin("DELETE", "/cache/api/x/1").status, 200, "key purge")
check_eq(corral.get("/api/x/1").status, 200, "x/1 again")
check_eq(admin("DELETE", "/route/api/x/%7Bid%7D").status, 200, "route purge")
check_eq(corral.get("/api/x/1").status, 200, "x/1 after the route purge")
step("purges")

check(corral.alive(), "corral still running")
done("metrics_monotonic")
