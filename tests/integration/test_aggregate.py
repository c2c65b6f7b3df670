#!/usr/bin/env python3
"""The seed's five endpoints from conf/demo.json against tools/origin with
conf/demo-origin.json: each answers with its strategy, the dashboard holds
every member, and a 250-client cold burst on it costs one upstream call
per member. Aggregates: a member asked for directly shares the member's
fill, a failed member is null and listed, all failed is a 502, a stale
member is used and said, and nested aggregates are refused by --check."""
import json
import os
import re
import subprocess
import time

from harness import CORRAL, World, check, check_eq, done, request
import asyncio

HERE = os.path.dirname(os.path.abspath(__file__))
CONF = os.path.join(HERE, "..", "..", "conf")

w = World()


def load(name):
    """A conf/ file without its // comments, as a dict."""
    text = open(os.path.join(CONF, name)).read()
    return json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.M))


def start_origin_with(routes):
    path = w.path(f"origin-routes-{len(w.procs)}.json")
    with open(path, "w") as f:
        json.dump(routes, f)
    import sys
    from harness import ORIGIN, Origin, check as ck
    portfile = w.path(f"origin-{len(w.procs)}.port")
    p = subprocess.Popen([sys.executable, ORIGIN, "--port", "0", "--portfile",
                          portfile, "--routes", path])
    w.procs.append(p)
    deadline = time.time() + 10
    while not os.path.exists(portfile) or not open(portfile).read():
        ck(p.poll() is None and time.time() < deadline, "origin started")
        time.sleep(0.02)
    return Origin(int(open(portfile).read()))


demo_origin = json.load(open(os.path.join(CONF, "demo-origin.json")))
origin = start_origin_with(demo_origin)
cfg = load("demo.json")
del cfg["admin"]  # its fixed port: this test needs no admin
for u in cfg["upstreams"].values():
    u["base"] = origin.base()
corral = w.start_corral(cfg)

# ---- a 250-client cold burst on the dashboard: one call per member ----
answers = corral.many("/api/dashboard", 250)
check_eq({a.status for a in answers}, {200}, "dashboard: all 200")
check_eq(len({a.body for a in answers}), 1, "dashboard: the same body")
dash = answers[0].json()
check_eq(sorted(dash), ["btc", "fear_greed", "global", "rsi"],
         "dashboard: every member, no errors")
check_eq(dash["btc"], {"bitcoin": {"usd": 97123.45}}, "dashboard: btc body")
check_eq(dash["rsi"], {"value": 61.37}, "dashboard: rsi body")
calls = origin.control("GET", "/_origin/calls")["paths"]
check_eq(calls, {"/api/v3/simple/price": 1, "/fng/": 1, "/api/v3/global": 1,
                 "/rsi": 1}, "dashboard: one upstream call per member")
statuses = sorted(a.headers["cache-status"] for a in answers)
check_eq(statuses.count("corral; fwd=miss; stored"), 1, "one assembly")
check_eq(statuses.count("corral; fwd=miss; collapsed"), 249,
         "249 collapsed on it")

# ---- each endpoint with its strategy ----
for path, ttl in (("/api/btc", 30), ("/api/fear-greed", 300),
                  ("/api/global", 30), ("/api/rsi", 10800),
                  ("/api/dashboard", 30)):
    r = corral.get(path)
    check_eq(r.status, 200, f"{path}: 200")
    m = re.match(r"corral; hit; ttl=(\d+)$", r.headers["cache-status"])
    check(m is not None, f"{path}: a hit ({r.headers['cache-status']})")
    left = int(m.group(1))
    age = int(r.headers["age"])
    maxage = int(r.headers["cache-control"].split("=")[1])
    # ttl_jitter 10%: a lifetime between 90% and 100% of the strategy's.
    check(ttl * 0.9 - 1 <= maxage <= ttl, f"{path}: max-age {maxage} ~ {ttl}")
    check(maxage - age - 1 <= left <= maxage, f"{path}: ttl={left} truthful")
check_eq(origin.total(), 4, "endpoints: all from the cache")

# ---- a member asked for directly shares the member's fill ----
cold = start_origin_with({"/m": {"delay_ms": 400, "body": '{"m":1}'},
                          "/bad": {"status": 500},
                          "/s": {"body": '{"s":1}'}})
acfg = {
    "upstreams": {"o": {"base": cold.base(), "timeout": "5s"}},
    "routes": [
        {"path": "/api/m", "upstream": "o", "fetch": "/m"},
        {"path": "/api/bad", "upstream": "o", "fetch": "/bad"},
        {"path": "/api/s", "upstream": "o", "fetch": "/s", "strategy": "1s",
         "stale_while_revalidate": "1m", "early_refresh": 0,
         "ttl_jitter": "0%"},
        {"path": "/api/both", "aggregate": {"m": "/api/m", "bad": "/api/bad"}},
        {"path": "/api/none", "aggregate": {"bad": "/api/bad"}},
        {"path": "/api/st", "aggregate": {"s": "/api/s", "m": "/api/m"}},
    ],
    "limits": {"backoff_min": "1ms", "backoff_max": "1ms"},
}
agg = w.start_corral(acfg)


async def mixed():
    return await asyncio.gather(
        *(request(agg.port, p, None, "GET", 30)
          for p in ["/api/both"] * 20 + ["/api/m"] * 20))


answers = asyncio.run(mixed())
check_eq({a.status for a in answers}, {200}, "mixed: all 200")
check_eq(cold.calls("/m"), 1, "mixed: the member and direct requests share one fill")
both = answers[0].json()
check_eq(both["m"], {"m": 1}, "partial: the good member")
check(both["bad"] is None, "partial: the failed member is null")
check_eq(both["errors"], {"bad": {"status": 502,
                                  "error": "upstream answered 500"}},
         "partial: the failure is listed")

# ---- every member failed: 502 with the errors ----
r = agg.get("/api/none")
check_eq(r.status, 502, "all failed: 502")
check_eq(r.json(), {"bad": None, "errors": {"bad": {
    "status": 502, "error": "upstream answered 500"}}}, "all failed: body")

# ---- a stale member is used, and said ----
check_eq(agg.get("/api/st").status, 200, "stale: first assembly")
time.sleep(2.2)  # /api/s (1 s) and the assembly (at most 1 s) expired
cold.behave("/s", delay_ms=1000, body='{"s":2}')
r = agg.get("/api/st")
check_eq(r.status, 200, "stale: 200")
check_eq(r.json()["s"], {"s": 1}, "stale: the old member value")
check(r.headers.get("corral-stale-members") == "s",
      f"stale: named ({r.headers})")
check(r.headers["cache-status"].endswith("detail=stale-members"),
      f"stale: Cache-Status says so ({r.headers['cache-status']})")

# ---- nested aggregates are refused by --check ----
bad = dict(acfg)
bad["listen"] = "127.0.0.1:1"
bad["routes"] = acfg["routes"] + [
    {"path": "/api/nest", "aggregate": {"inner": "/api/both"}}]
path = w.write_config(bad, "nested.json")
p = subprocess.run([CORRAL, "--check", "-c", path], capture_output=True,
                   text=True, timeout=10)
check(p.returncode != 0 and "cannot hold another" in p.stderr,
      f"nested aggregate refused: {p.stderr}")

# ---- teardown with an assembly in flight (a member that hangs) ----
hang = start_origin_with({"/h": {"hang": True}, "/ok": {"body": "{}"}})
tcfg = {
    "upstreams": {"o": {"base": hang.base(), "timeout": "30s"}},
    "routes": [
        {"path": "/api/h", "upstream": "o", "fetch": "/h"},
        {"path": "/api/ok", "upstream": "o", "fetch": "/ok"},
        {"path": "/api/t", "aggregate": {"h": "/api/h", "ok": "/api/ok"}},
    ],
    "drain_timeout": "500ms",
}
td = w.start_corral(tcfg)
import threading


def ask_t():
    try:
        td.get("/api/t", timeout=10)
    except Exception:
        pass


threading.Thread(target=ask_t, daemon=True).start()
deadline = time.time() + 5
while hang.calls("/h") < 1 and time.time() < deadline:
    time.sleep(0.02)
check_eq(hang.calls("/h"), 1, "teardown: the member is in flight")
import signal as sig
td.proc.send_signal(sig.SIGTERM)
check_eq(td.proc.wait(timeout=15), 0,
         "teardown with an assembly in flight: a clean exit")

check(corral.alive() and agg.alive(), "corral still running")
done("aggregate")
