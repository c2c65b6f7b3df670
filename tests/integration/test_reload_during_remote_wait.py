"""A reload while a background fill waits on another instance's lease:
the retired config was freed as soon as no client and no computing fill
used it, but the waiting fill still held its route; when the holder died
and the fill took the lease over, it computed with freed memory (found
by tools/chaos under ASan: heap-use-after-free in job_new). A fill now
holds its route's config from its start to its end."""
import json
import os
import signal
import threading
import time

from harness import World, check, check_eq, done, fleet_config

w = World()
origin = w.start_origin()
redis = w.start_redis()
cfg = fleet_config(origin, redis.port, timeout="200ms",
                   upstream={"timeout": "5s"})
a, b = w.start_fleet(cfg)
origin.behave("/v/slow", delay_ms=3000)

# A holds the lease for 3 s; B's refresh (no client waits on it) waits on
# A's lease.
holder = threading.Thread(target=lambda: a.get("/api/slow", timeout=10))
holder.start()
time.sleep(0.3)
check_eq(b.admin("POST", "/refresh/api/slow").status, 202,
         "B's refresh starts, and waits on A")
time.sleep(0.2)

# B reloads: its old config is retired with that wait still on it.
path = w.path("corral-1.json")
with open(path) as f:
    newcfg = json.load(f)
newcfg["routes"].append({"path": "/extra/{k}", "upstream": "o",
                         "fetch": "/v/{k}", "strategy": "1m"})
with open(path, "w") as f:
    json.dump(newcfg, f)
os.kill(b.proc.pid, signal.SIGHUP)
time.sleep(1.5)  # B sweeps retired configs every second
check_eq(b.get("/extra/x").status, 200, "B serves the new config")

# A dies: its lease runs out within a second, and B's wait takes over and
# computes with the route it started with.
a.proc.kill()
a.proc.wait()
w.corrals.remove(a.proc)
deadline = time.time() + 10
while origin.calls("/v/slow") < 2 and time.time() < deadline:
    time.sleep(0.05)
check_eq(origin.calls("/v/slow"), 2, "B took the fill over and called")
time.sleep(3.5)
r = b.get("/api/slow")
check_eq(r.status, 200, "B serves the key")
check(r.headers["cache-status"].startswith("corral; hit"),
      f"from B's takeover, stored: {r.headers['cache-status']}")
check(b.alive(), "B is alive")
holder.join(timeout=10)
done("reload_during_remote_wait")
