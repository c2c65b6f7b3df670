#!/usr/bin/env python3
"""Counters never go down. Every counter series of /metrics (each _total,
and the latency histogram's buckets, _count and _sum) is scraped before
and after an aggregate that costs two member calls, a POST /refresh, a
stale answer with its background refresh, key and route purges, and
reloads that reorder, remove and add routes: none may decrease, and none
may vanish. corral_upstream_calls_saved_total counts exactly the requests
answered hit, l2_hit, collapsed or stale (there is no negative caching
here). Series are keyed by route path: requests that waited on a fill
across a reload that removed their route count under that route's path,
never under the route that took its place; and a reload to 70 routes
gives every route its series."""
import asyncio
import signal
import threading
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
        {"path": "/api/rated/{id}", "upstream": "r", "fetch": "/rated/{id}"},
        {"path": "/api/slow", "upstream": "o", "fetch": "/slow"},
        {"path": "/api/old", "upstream": "o", "fetch": "/old"},
        {"path": "/api/swr", "upstream": "o", "fetch": "/swr",
         "strategy": "1s", "stale_while_revalidate": "60s"},
        {"path": "/api/agg", "aggregate": {"a": "/api/x/a1",
                                           "b": "/api/x/a2"}},
    ]


def config(routes, probe, rate="2/2s"):
    return {
        "listen": f"127.0.0.1:{corral_port}",
        "admin": {"listen": f"127.0.0.1:{aport}", "token": TOKEN},
        "upstreams": {"o": {"base": origin.base(), "timeout": "10s"},
                      "r": {"base": origin.base(), "timeout": "10s",
                            "rate": rate}},
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


def reload(routes, probe, **kw):
    w.write_config(config(routes, probe, **kw), "corral-0.json")
    corral.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while corral.get(f"/probe/{probe}").status != 200:
        check(time.time() < deadline, f"reload to config {probe}")
        time.sleep(0.05)


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

# ---- reload: reordered, a new rate (a new budget): every counter kept ----
for i in range(3):  # the third waits for a slot of the rate window
    check_eq(corral.get(f"/api/rated/{i}").status, 200, f"rated/{i}")
before = step("rated")
check(before['corral_rate_limit_waits_total{upstream="r"}'] >= 1,
      "a call waited for the rate window")
routes = base_routes()
routes.reverse()
reload(routes, 1, rate="3/2s")
m = step("reload (reordered)")
for k, v in before.items():
    if k.startswith("corral_requests_total{"):
        check_eq(m[k] - (1 if k == 'corral_requests_total{route="/probe/1",'
                         'result="stored"}' else 0), v,
                 f"reload keeps {k}")
check_eq(requests(m, "/api/x/{id}", "hit"), requests(before, "/api/x/{id}",
                                                     "hit"),
         "reload: /api/x/{id}'s hits kept under its path")

# ---- reload that removes a route while clients wait on its fill ----
origin.behave("/old", delay_ms=1500, body='{"old":1}')
answers = {}


def wait_old(i):
    answers[i] = corral.get("/api/old", timeout=20)


threads = [threading.Thread(target=wait_old, args=(i,)) for i in range(5)]
for t in threads:
    t.start()
deadline = time.time() + 10
while origin.calls("/old") < 1:
    check(time.time() < deadline, "old: the fill started")
    time.sleep(0.02)
time.sleep(0.2)  # every client has joined it
# /api/new takes /api/old's place in the list.
routes = [r if r["path"] != "/api/old" else
          {"path": "/api/new", "upstream": "o", "fetch": "/new"}
          for r in routes]
reload(routes, 2)
for t in threads:
    t.join()
check_eq({a.status for a in answers.values()}, {200}, "old: every waiter 200")
m = step("reload (route removed)")
check_eq(requests(m, "/api/old", "stored"), 1,
         "the removed route's fill counts under its own path")
check_eq(requests(m, "/api/old", "collapsed"), 4,
         "the removed route's waiters count under its own path")
for r in ("stored", "collapsed", "hit", "error"):
    check_eq(requests(m, "/api/new", r), 0,
             f"/api/new took the place, not the counts ({r})")
check(m.get('corral_upstream_calls_total{upstream="o",class="2xx"}', 0) >=
      before['corral_upstream_calls_total{upstream="o",class="2xx"}'] + 1,
      "upstream calls kept across reloads")

# ---- reload to 70 routes: every route has its series ----
many = [{"path": f"/r{i}", "upstream": "o", "fetch": f"/r{i}"}
        for i in range(70)]
reload(base_routes() + many, 3)
m = step("reload (70 routes)")
for i in range(70):
    check(requests(m, f"/r{i}", "hit") is not None,
          f"/r{i} has its series after a reload to 76 routes")
check_eq(corral.get("/r69").status, 200, "/r69 served")
check_eq(corral.get("/r69").status, 200, "/r69 hit")
m = step("70 routes served")
check_eq(requests(m, "/r69", "hit"), 1, "/r69 counted")

check(corral.alive(), "corral still running")
done("metrics_monotonic")
