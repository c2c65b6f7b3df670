#!/usr/bin/env python3
"""The admin listener: /healthz, /metrics (counted right after a known
sequence, valid for promtool, scraped by a real Prometheus), purge and
refresh with every token case, purge reaching a second instance through
Redis, and metrics summed over workers. Each section starts its own
corral on a reset origin, so none depends on another's counters or
cached values; without promtool or prometheus the test ends as a skip."""
import json
import os
import subprocess
import time
import urllib.parse
import urllib.request

from harness import (World, check, check_eq, done, free_port, parse_metrics,
                     request, tool, wait_port)
import asyncio

w = World()
origin = w.start_origin()
redis = w.start_redis()
TOKEN = "it-admin-token"


def admin_cfg(port, token=True, workers=1, l2=False):
    cfg = {
        "admin": {"listen": f"127.0.0.1:{port}"},
        "upstreams": {"o": {"base": origin.base(), "timeout": "5s"}},
        "routes": [
            {"path": "/api/x/{id}", "upstream": "o", "fetch": "/x/{id}"},
            {"path": "/api/slow", "upstream": "o", "fetch": "/slow"},
            {"path": "/api/gone", "upstream": "o", "fetch": "/gone"},
        ],
        "workers": workers,
    }
    if token:
        cfg["admin"]["token"] = "${CORRAL_ADMIN_TOKEN}"
    if l2:
        cfg["l2"] = {"redis": f"127.0.0.1:{redis.port}", "prefix": "adm:"}
    return cfg


def admin(port, method, path, token=None, auth=None):
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if auth is not None:
        headers["Authorization"] = auth
    return asyncio.run(request(port, path, headers, method, 10))


def metrics(port):
    """{(name, frozenset(labels)): value} of a scrape, and its text."""
    r = admin(port, "GET", "/metrics")
    check_eq(r.status, 200, "metrics: 200")
    check(r.headers["content-type"].startswith("text/plain; version=0.0.4"),
          f"metrics: content type {r.headers['content-type']}")
    return parse_metrics(r.body), r.body


def req_count(m, route, result):
    return m[("corral_requests_total",
              frozenset({("route", route), ("result", result)}))]


env = {"CORRAL_ADMIN_TOKEN": TOKEN}


servers = []


def start(port, **kw):
    """A corral with its admin on port, once both ports accept (the
    harness waits for the client port only; the admin comes up after)."""
    c = w.start_corral(admin_cfg(port, **kw), env=env)
    wait_port(port, c.proc)
    servers.append(c)
    return c


def section(**kw):
    """A fresh corral on a reset origin (no calls counted, no scripted
    behaviour): (corral, its admin port)."""
    origin.reset()
    port = free_port()
    return start(port, **kw), port


# ---- healthz ----
corral, aport = section()
h = admin(aport, "GET", "/healthz")
check_eq(h.status, 200, "healthz: 200")
body = h.json()
check_eq(body["status"], "ok", "healthz: ok")
check_eq(body["l2"], "disabled", "healthz: no l2")
check_eq(body["workers"], 1, "healthz: one worker")
check(isinstance(body["uptime_s"], int) and body["uptime_s"] >= 0,
      f"healthz: uptime {body}")
check_eq(admin(aport, "POST", "/healthz").status, 405, "healthz: GET only")
check_eq(admin(aport, "GET", "/nope").status, 404, "unknown endpoint: 404")

# ---- metrics after a known sequence ----
corral, aport = section()
origin.behave("/slow", delay_ms=300)
origin.behave("/gone", status=500)
check_eq(corral.get("/api/x/1").status, 200, "x/1 stored")
for _ in range(3):
    check_eq(corral.get("/api/x/1").status, 200, "x/1 hit")
answers = corral.many("/api/slow", 10)
check_eq({a.status for a in answers}, {200}, "slow: all 200")
check_eq(corral.get("/api/gone").status, 502, "gone: 502")
check_eq(corral.get("/api/x/bad!").status, 400, "bad param: 400")
m, text = metrics(aport)
check_eq(req_count(m, "/api/x/{id}", "stored"), 1, "metrics: 1 stored")
check_eq(req_count(m, "/api/x/{id}", "hit"), 3, "metrics: 3 hits")
check_eq(req_count(m, "/api/x/{id}", "error"), 1, "metrics: 1 error (400)")
check_eq(req_count(m, "/api/slow", "stored"), 1, "metrics: slow stored")
check_eq(req_count(m, "/api/slow", "collapsed"), 9, "metrics: 9 collapsed")
check_eq(req_count(m, "/api/gone", "error"), 1, "metrics: gone error")
calls = m[("corral_upstream_calls_total",
           frozenset({("upstream", "o"), ("class", "2xx")}))]
check_eq(calls, 2, "metrics: two 2xx upstream calls")
check_eq(m[("corral_upstream_calls_total",
            frozenset({("upstream", "o"), ("class", "5xx")}))], 1,
         "metrics: one 5xx upstream call")
check_eq(m[("corral_upstream_calls_saved_total", frozenset())], 3 + 9,
         "metrics: calls saved = 3 hits + 9 collapsed (errors save none)")
check_eq(m[("corral_waiters_collapsed_total", frozenset())], 9,
         "metrics: collapsed waiters")
check_eq(m[("corral_l1_entries", frozenset())], 2, "metrics: L1 entries")
check_eq(m[("corral_upstream_call_duration_seconds_count",
            frozenset({("upstream", "o")}))], 3, "metrics: histogram count")
check_eq(m[("corral_upstream_call_duration_seconds_bucket",
            frozenset({("upstream", "o"), ("le", "0.1")}))], 2,
         "metrics: the slow call is over 100 ms")
check_eq(m[("corral_workers", frozenset())], 1, "metrics: workers")
promtool = tool("promtool")
if promtool:
    p = subprocess.run([promtool, "check", "metrics"], input=text,
                       capture_output=True)
    check_eq(p.returncode, 0, f"promtool check metrics: {p.stdout}{p.stderr}")

# ---- tokens ----
corral, aport = section()
for how, kw, want in [("none", {}, 401), ("wrong", {"token": "nope"}, 401),
                      ("prefix", {"token": TOKEN[:-1]}, 401),
                      ("longer", {"token": TOKEN + "x"}, 401),
                      ("basic", {"auth": "Basic " + TOKEN}, 401)]:
    r = admin(aport, "DELETE", "/cache/api/x/1", **kw)
    check_eq(r.status, want, f"purge with {how} token")
    r = admin(aport, "POST", "/refresh/api/x/1", **kw)
    check_eq(r.status, want, f"refresh with {how} token")
check("bearer" in admin(aport, "DELETE", "/cache/api/x/1")
      .headers.get("www-authenticate", "").lower(), "401 names the scheme")
check_eq(admin(aport, "GET", "/cache/api/x/1", token=TOKEN).status, 405,
         "purge is DELETE")
check_eq(admin(aport, "DELETE", "/cache/nope", token=TOKEN).status, 404,
         "purge: no route")

# ---- purge and refresh ----
corral, aport = section()
check_eq(corral.get("/api/x/1").headers["cache-status"],
         "corral; fwd=miss; stored", "x/1 stored")
before = origin.calls("/x/1")
check(corral.get("/api/x/1").headers["cache-status"].startswith("corral; hit"),
      "x/1 is cached")
r = admin(aport, "DELETE", "/cache/api/x/1", token=TOKEN)
check_eq(r.status, 200, "purge: 200")
check_eq(r.json(), {"purged": "/api/x/1", "was_cached": True}, "purge body")
check_eq(corral.get("/api/x/1").headers["cache-status"],
         "corral; fwd=miss; stored", "after a purge: a miss")
check_eq(origin.calls("/x/1"), before + 1, "purge: one new call")
origin.behave("/x/1", body='{"v":"new"}')
r = admin(aport, "POST", "/refresh/api/x/1", token=TOKEN)
check_eq(r.status, 202, "refresh: 202")
check_eq(r.json()["started"], True, "refresh: started")
deadline = time.time() + 5
while origin.calls("/x/1") < before + 2 and time.time() < deadline:
    time.sleep(0.02)
time.sleep(0.1)
got = corral.get("/api/x/1")
check_eq(got.body, b'{"v":"new"}', "refresh: the new body")
check(got.headers["cache-status"].startswith("corral; hit"),
      "refresh: a hit after it")

# ---- purge a whole route in O(1) ----
corral, aport = section()
for k in ("r1", "r2"):
    corral.get(f"/api/x/{k}")
check_eq(corral.get("/api/slow").status, 200, "route: another route filled")
check_eq(origin.total(), 3, "route: three keys filled")
check_eq(admin(aport, "DELETE", "/route/api/x/%7Bid%7D").status, 401,
         "route purge needs the token")
check_eq(admin(aport, "DELETE", "/route/api/nope", token=TOKEN).status, 404,
         "route purge: unknown route")
r = admin(aport, "DELETE", "/route/api/x/%7Bid%7D", token=TOKEN)
check_eq(r.status, 200, "route purge: 200")
check_eq(r.json(), {"purged_route": "/api/x/{id}", "generation": 1},
         "route purge: body")
for k in ("r1", "r2"):
    got = corral.get(f"/api/x/{k}")
    check_eq(got.headers["cache-status"], "corral; fwd=miss; stored",
             f"route purge: {k} is a miss")
check_eq(origin.total(), 5, "route purge: one new call per key")
check(corral.get("/api/slow").headers["cache-status"].startswith("corral; hit"),
      "route purge: another route keeps its values")
r = admin(aport, "DELETE", "/cache/api/x/r1", token=TOKEN)
check_eq(r.json(), {"purged": "~1~/api/x/r1", "was_cached": True},
         "a key purge after a route purge finds the new key")

# ---- no token configured: 403 for every mutating call ----
notoken, nport = section(token=False)
for method, path in [("DELETE", "/cache/api/x/1"), ("POST", "/refresh/api/x/1")]:
    for kw in ({}, {"token": TOKEN}, {"token": ""}):
        check_eq(admin(nport, method, path, **kw).status, 403,
                 f"no token configured: {method} {kw}")
check_eq(admin(nport, "GET", "/healthz").status, 200, "healthz needs no token")

# ---- purge reaches a second instance through Redis ----
a, p1 = section(l2=True)
p2 = free_port()
b = start(p2, l2=True)
check_eq(admin(p1, "GET", "/healthz").json()["l2"], "up", "healthz: l2 up")
origin.behave("/x/7", body='{"seven":1}')
a.get("/api/x/7")
check("detail=l2" in b.get("/api/x/7").headers["cache-status"], "b: from L2")
check(b.get("/api/x/7").headers["cache-status"].startswith("corral; hit"),
      "b: now in its L1")
calls = origin.calls("/x/7")
check_eq(admin(p1, "DELETE", "/cache/api/x/7", token=TOKEN).status, 200,
         "purge on a")
time.sleep(0.2)
check_eq(b.get("/api/x/7").headers["cache-status"], "corral; fwd=miss; stored",
         "b: the purge reached it")
check_eq(origin.calls("/x/7"), calls + 1, "b: one new call")
# A refresh on a reaches b too: b's older copy goes, b reads the new one.
check(b.get("/api/x/7").headers["cache-status"].startswith("corral; hit"),
      "b: holds a copy")
origin.behave("/x/7", body='{"seven":2}')
check_eq(admin(p1, "POST", "/refresh/api/x/7", token=TOKEN).status, 202,
         "refresh on a")
deadline = time.time() + 5
while origin.calls("/x/7") < calls + 2 and time.time() < deadline:
    time.sleep(0.02)
check_eq(origin.calls("/x/7"), calls + 2, "a: the refresh called")
# (b's copy would live 5 minutes: within 5 s it can only be the news)
deadline = time.time() + 5
while (rb := b.get("/api/x/7")).body != b'{"seven":2}' and \
        time.time() < deadline:
    time.sleep(0.05)
check_eq(rb.body, b'{"seven":2}', "b: the refresh reached it")
check("detail=l2" in rb.headers["cache-status"], f"b: read from L2 {rb.headers}")
check_eq(origin.calls("/x/7"), calls + 2, "b: no call of its own")

# A route purge reaches b, and an instance started later learns it.
origin.behave("/x/8")
n_old = a.get("/api/x/8").json()["n"]
check_eq(b.get("/api/x/8").json()["n"], n_old, "b: the same value (L2)")
r = admin(p1, "DELETE", "/route/api/x/%7Bid%7D", token=TOKEN)
check_eq(r.status, 200, "route purge on a")
time.sleep(0.2)
nb = b.get("/api/x/8").json()["n"]
check(nb > n_old, f"b: the route purge reached it ({nb} > {n_old})")
c = start(free_port(), l2=True)
time.sleep(0.3)
check_eq(c.get("/api/x/8").json()["n"], nb,
         "a later instance: the new generation's value, not the purged one")

# ---- workers: any worker answers for all, counters summed ----
workers, wport = section(workers=2)
deadline = time.time() + 10
while admin(wport, "GET", "/healthz").json()["workers"] < 2:
    check(time.time() < deadline, "two workers up")
    time.sleep(0.05)
for i in range(20):
    workers.get(f"/api/x/w{i % 4}")
for _ in range(6):  # scrapes land on either worker
    m, _ = metrics(wport)
    total = sum(v for (n, _), v in m.items() if n == "corral_requests_total")
    check_eq(total, 20, "workers: every request counted, whoever answers")
    check_eq(m[("corral_workers", frozenset())], 2, "workers: 2")

# A route purge reaches every worker (they share the generations).
# (the origin's n counts calls per path: any value from before the purge
# has n at most the count then)
before = {i: origin.calls(f"/x/w{i}") for i in range(4)}
check_eq(admin(wport, "DELETE", "/route/api/x/%7Bid%7D", token=TOKEN).status,
         200, "workers: route purge")
answers = workers.many(None, 20, paths=[f"/api/x/w{i % 4}" for i in range(20)])
for i, a_ in enumerate(answers):
    check(a_.json()["n"] > before[i % 4],
          f"workers: no worker kept a purged value (w{i % 4}: "
          f"{a_.json()['n']} <= {before[i % 4]})")

# A single key's purge reaches every worker too, without l2 (the bus).
origin.behave("/x/w9", delay_ms=50)  # concurrent misses meet both workers
w9_before = origin.calls("/x/w9")
deadline = time.time() + 10
while origin.calls("/x/w9") < w9_before + 2:  # each worker filled its own copy
    check(time.time() < deadline, "workers: both hold the key")
    workers.many(None, 30, paths=["/api/x/w9"] * 30)
before = origin.calls("/x/w9")
check_eq(admin(wport, "DELETE", "/cache/api/x/w9", token=TOKEN).status, 200,
         "workers: key purge")
time.sleep(0.1)
seen = {a_.json()["n"] for a_ in workers.many(None, 30,
                                               paths=["/api/x/w9"] * 30)}
check(min(seen) > before, f"workers: no worker kept the purged key "
      f"({sorted(seen)} after {before} calls)")

# ---- a real Prometheus scrapes it ----
corral, aport = section()
check_eq(corral.get("/api/x/1").status, 200, "prometheus: x/1 stored")
for _ in range(3):
    check_eq(corral.get("/api/x/1").status, 200, "prometheus: x/1 hit")
prom = tool("prometheus")
if prom:
    pport = free_port()
    conf = w.path("prometheus.yml")
    with open(conf, "w") as f:
        f.write("global: {scrape_interval: 1s}\n"
                "scrape_configs:\n"
                "  - job_name: corral\n"
                f"    static_configs: [{{targets: ['127.0.0.1:{aport}']}}]\n")
    pp = subprocess.Popen([prom, f"--config.file={conf}",
                           f"--storage.tsdb.path={w.path('tsdb')}",
                           f"--web.listen-address=127.0.0.1:{pport}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    w.procs.append(pp)
    q = urllib.parse.quote('corral_requests_total{route="/api/x/{id}",'
                           'result="hit"}')
    found = None
    deadline = time.time() + 30
    while found is None and time.time() < deadline:
        time.sleep(0.5)
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{pport}/api/v1/query?query={q}",
                    timeout=5) as resp:
                res = json.load(resp)["data"]["result"]
                if res:
                    found = float(res[0]["value"][1])
        except OSError:
            pass
    check_eq(found, 3, "prometheus found corral's series")

for c in servers:
    check(c.alive(), "corral still running")
done("admin")
