#!/usr/bin/env python3
"""Lifecycle: SIGHUP reload (new routes served, L1 kept, fills in flight
finish, a broken file keeps the old config, no failed request under h2load,
and the same through a supervisor of workers), the access log and its
reopening on SIGUSR1, and SIGTERM bounded by drain_timeout. Without
h2load the test ends as a skip."""
import os
import re
import signal
import subprocess
import threading
import time

from harness import World, check, check_eq, done, free_port, tool

w = World()
origin = w.start_origin()
alog = w.path("access.log")


def config(extra_routes=(), **top):
    cfg = {
        "upstreams": {"o": {"base": origin.base(), "timeout": "10s"}},
        "routes": [{"path": "/api/x/{id}", "upstream": "o", "fetch": "/x/{id}"},
                   {"path": "/api/slow", "upstream": "o", "fetch": "/slow"},
                   *extra_routes],
    }
    cfg.update(top)
    return cfg


def rewrite(corral_port, cfg, name):
    """Writes cfg (with its listen address) over the file corral reads."""
    cfg = dict(cfg)
    cfg["listen"] = f"127.0.0.1:{corral_port}"
    w.write_config(cfg, name)


def wait_for(cond, what, timeout=10):
    deadline = time.time() + timeout
    while not cond():
        check(time.time() < deadline, what)
        time.sleep(0.05)


NEW = {"path": "/api/new", "upstream": "o", "fetch": "/new"}

# ---- reload: one process ----
corral = w.start_corral(config(access_log=alog))
cfg_name = "corral-0.json"
check_eq(corral.get("/api/x/1").status, 200, "x/1 stored")
check_eq(corral.get("/api/new").status, 404, "no /api/new yet")
calls = origin.calls("/x/1")
# A fill in flight across the reload.
origin.behave("/slow", delay_ms=1500, body='{"slow":1}')
slow = {}
t = threading.Thread(target=lambda: slow.update(r=corral.get("/api/slow")))
t.start()
time.sleep(0.3)
rewrite(corral.port, config([NEW], access_log=alog), cfg_name)
corral.proc.send_signal(signal.SIGHUP)
wait_for(lambda: corral.get("/api/new").status == 200, "reload: /api/new")
t.join()
check_eq(slow["r"].status, 200, "reload: the fill in flight finished")
check_eq(slow["r"].body, b'{"slow":1}', "reload: with its body")
hit = corral.get("/api/x/1")
check(hit.headers["cache-status"].startswith("corral; hit"),
      f"reload: L1 kept for an unchanged key ({hit.headers})")
check_eq(origin.calls("/x/1"), calls, "reload: no new call for it")

# A broken file: the old config keeps serving.
with open(w.path(cfg_name), "w") as f:
    f.write('{"listen": broken')
corral.proc.send_signal(signal.SIGHUP)
time.sleep(0.5)
check(corral.alive(), "broken reload: still running")
check_eq(corral.get("/api/new").status, 200, "broken reload: old config")
# A config that loads but names an unreadable CA: also refused.
bad = config([NEW], access_log=alog)
bad["upstreams"]["o"]["ca_file"] = w.path("missing.pem")
rewrite(corral.port, bad, cfg_name)
corral.proc.send_signal(signal.SIGHUP)
time.sleep(0.5)
check_eq(corral.get("/api/new").status, 200, "bad upstream: old config")

# Under load: h2load on a cached key while the config is reloaded 3 times.
h2load = tool("h2load")
if h2load:
    rewrite(corral.port, config([NEW], access_log=alog), cfg_name)
    corral.get("/api/x/2")
    load = subprocess.Popen(
        [h2load, "--h1", "-c", "32", "-D", "4", "-t", "1",
         f"http://127.0.0.1:{corral.port}/api/x/2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for i in range(3):
        time.sleep(0.8)
        extra = [NEW, {"path": f"/api/r{i}", "upstream": "o",
                       "fetch": f"/r{i}"}]
        rewrite(corral.port, config(extra, access_log=alog), cfg_name)
        corral.proc.send_signal(signal.SIGHUP)
    out, _ = load.communicate(timeout=60)
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, "
                  r"(\d+) succeeded, (\d+) failed, (\d+) errored", out)
    check(m is not None, f"h2load ran: {out[-500:]}")
    total, _, done_, ok, failed, errored = map(int, m.groups())
    check(ok > 1000, f"under load: requests made ({ok})")
    check_eq((failed, errored), (0, 0), "under load: no request failed")
    check_eq(corral.get("/api/r2").status, 200, "under load: last reload")

# ---- the access log, and SIGUSR1 ----
corral.get("/api/x/1?api_key=SECRET-IN-QUERY")
corral.get("/api/x/bad!")
time.sleep(1.3)  # flushed every second
lines = open(alog).read().splitlines()
check(len(lines) >= 5, f"access log: lines written ({len(lines)})")
pat = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z 127\.0\.0\.1 "
                 r"(GET|HEAD|POST|DELETE|OTHER) (\S+) (\d{3}) (\d+) (\S+) "
                 r"(\S+) (\d+) (h1|h2c)$")
parsed = [pat.match(l) for l in lines]
check(all(parsed), f"access log: every line well formed: {lines[:3]}")
first = parsed[0].groups()
check_eq(first[1:5], ("/api/x/1", "200", str(len(b'{"path": "/x/1", '
                                                   b'"query": "", "n": 1}')),
                      "stored"), "access log: the first request")
check(first[5] != "-", "access log: the stored one has its upstream ms")
check(any(p.group(2) == "/api/x/bad%21" or p.group(2) == "/api/x/bad!"
          for p in parsed if p.group(3) == "400"), "access log: the 400")
check(any(p.group(5) == "hit" for p in parsed), "access log: a hit")
check("SECRET" not in open(alog).read(), "access log: no query, no secret")
os.rename(alog, alog + ".1")
corral.proc.send_signal(signal.SIGUSR1)
time.sleep(0.3)
corral.get("/api/x/1")
wait_for(lambda: os.path.exists(alog) and os.path.getsize(alog) > 0,
         "SIGUSR1: a new file, written", timeout=5)
check_eq(len(open(alog).read().splitlines()), 1, "SIGUSR1: one new line")
check_eq(len(open(alog + ".1").read().splitlines()), len(lines),
         "SIGUSR1: the old file has only the old lines")

# ---- drain_timeout bounds SIGTERM ----
quick = w.start_corral(config(drain_timeout="1s"))
origin.behave("/slow", hang=True)


def ask_hung():
    try:
        quick.get("/api/slow", timeout=30)
    except Exception:
        pass


hung = threading.Thread(target=ask_hung, daemon=True)
hung.start()
time.sleep(0.3)
t0 = time.time()
quick.proc.send_signal(signal.SIGTERM)
quick.proc.wait(timeout=15)
took = time.time() - t0
check(0.9 <= took < 5, f"drain_timeout: exit after about 1 s ({took:.2f})")

# ---- reload through a supervisor of workers ----
origin.behave("/slow", delay_ms=0, hang=False)
sup = w.start_corral(config(workers=2))
sup_name = f"corral-{len(w.corrals) - 1}.json"
check_eq(sup.get("/api/new").status, 404, "workers: no /api/new yet")
rewrite(sup.port, config([NEW], workers=2), sup_name)
sup.proc.send_signal(signal.SIGHUP)
time.sleep(0.8)
answers = sup.many("/api/new", 20)
check_eq({a.status for a in answers}, {200}, "workers: every worker reloaded")
with open(w.path(sup_name), "w") as f:
    f.write("{")
sup.proc.send_signal(signal.SIGHUP)
time.sleep(0.5)
check(sup.alive(), "workers: a broken reload keeps the supervisor")
answers = sup.many("/api/new", 20)
check_eq({a.status for a in answers}, {200}, "workers: old config kept")

check(corral.alive() and sup.alive(), "corral still running")
done("lifecycle")
