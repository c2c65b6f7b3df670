"""Issue 21, Redis Cluster (l2.cluster): a 3-primary cluster made by
redis-cli --cluster create; two corral instances share it. Values spread
over every primary, and a key's value and lease share one slot (CLUSTER
KEYSLOT, COUNTKEYSINSLOT on the owner), as do an upstream's rate window
and pause, and the purge log, its epoch and the generations; 200
concurrent cold requests over both instances make one origin call and
every answer is the origin's; a key purge and a route purge reach both;
a seed that is not a cluster node stops corral at start (doc/corral.8,
"REDIS CLUSTER")."""
import asyncio
import json
import subprocess
import time

from harness import (CORRAL, World, check, check_eq, done, fleet_config,
                     free_port, l2_name, request)

w = World()

# A plain Redis named as a seed: a configuration error, not an outage.
plain = w.start_redis()
no_origin = type("O", (), {"base": lambda self: "http://127.0.0.1:1"})()
cfg = fleet_config(no_origin, 0, listen=f"127.0.0.1:{free_port()}")
cfg["l2"] = {"cluster": [f"127.0.0.1:{plain.port}"]}
p = subprocess.Popen([CORRAL, "-c", w.write_config(cfg, "plain.json")],
                     stderr=subprocess.PIPE)
try:
    _, err = p.communicate(timeout=10)
except subprocess.TimeoutExpired:
    p.kill()
    _, err = p.communicate()
    err = b"(still running after 10 s) " + err
err = err.decode(errors="replace")
check(p.returncode not in (0, None) and p.returncode > 0,
      f"a plain Redis as seed: corral exits non-zero: {p.returncode}")
check("not a cluster node" in err, f"and says why: {err[-300:]}")

cluster = w.start_cluster(primaries=3, replicas=0)
primaries = cluster.primaries()
check_eq(len(primaries), 3, "three primaries own the slots")
origin = w.start_origin()
# A minute-long window: its key outlives the checks below on a loaded
# machine (a 1 s one could expire before they read it).
cfg = fleet_config(origin, 0, upstream={"rate": "60000/1m"})
cfg["l2"] = cluster.l2
a, b = w.start_fleet(cfg)


def both(paths, first=0):
    """Every path asked at once, alternately of a and b (b first with
    first=1)."""
    async def go():
        return await asyncio.gather(
            *(request((a, b)[(i + first) % 2].port, p, timeout=30)
              for i, p in enumerate(paths)))
    return asyncio.run(go())


def n_of(r):
    """Which origin call made r's body."""
    return json.loads(r.body)["n"]


# ---- 200 concurrent cold requests over both: one origin call ----
origin.behave("/v/cold", delay_ms=300)
rs = both(["/api/cold"] * 200)
check_eq(sorted({r.status for r in rs}), [200], "200 cold requests: all 200")
check_eq({r.body for r in rs}, {rs[0].body}, "every answer is one body")
check_eq(json.loads(rs[0].body), {"path": "/v/cold", "query": "", "n": 1},
         "the origin's body")
check_eq(origin.calls("/v/cold"), 1, "one origin call for the fleet")

# ---- keys spread over the primaries, each key's names in one slot ----
KEYS = 60
rs = both([f"/api/k{i}" for i in range(KEYS)])
check_eq({r.status for r in rs}, {200}, f"{KEYS} keys answered")
check_eq(sum(origin.calls(f"/v/k{i}") for i in range(KEYS)), KEYS,
         "one origin call per key")
# Asked again of the other instance: from L2, no call.
rs = both([f"/api/k{i}" for i in range(KEYS)], first=1)
check(all(r.headers.get("cache-status", "").endswith("detail=l2")
          for r in rs), "the other instance reads them from L2")
check_eq(sum(origin.calls(f"/v/k{i}") for i in range(KEYS)), KEYS,
         "still one origin call per key")
owners = set()
for i in range(KEYS):
    key = f"/api/k{i}".encode()
    value, lease = l2_name(b"t:", b"v:", key), l2_name(b"t:", b"l:", key)
    slot = cluster.keyslot(value)
    check_eq(cluster.keyslot(lease), slot, f"{key}: value and lease, one slot")
    owner = cluster.owner(value)
    check_eq(owner.cmd("EXISTS", value), 1, f"{key}: on its slot's primary")
    check(owner.cmd("CLUSTER", "COUNTKEYSINSLOT", slot) >= 1,
          f"{key}: COUNTKEYSINSLOT {slot} on its owner")
    owners.add(owner.port)
check_eq(owners, {p.port for p in primaries}, "values on all three primaries")
for p in primaries:
    check(p.cmd("DBSIZE") > 0, f"primary {p.port} holds keys")
rate, pause = (l2_name(b"t:", kind, b"o") for kind in (b"rate:", b"pause:"))
check_eq(cluster.keyslot(rate), cluster.keyslot(pause),
         "an upstream's window and pause, one slot")
check_eq(cluster.owner(rate).cmd("EXISTS", rate), 1,
         "the rate window is on its slot's primary")

# ---- a key purge reaches both ----
check_eq(n_of(a.get("/api/k0")), 1, "a holds k0")
check_eq(n_of(b.get("/api/k0")), 1, "b holds k0")
r = a.admin("DELETE", "/cache/api/k0")
check_eq(r.status, 200, f"purge on a: {r}")
deadline = time.monotonic() + 5
seen = []
while time.monotonic() < deadline:
    seen = [n_of(x.get("/api/k0")) for x in (b, a)]
    if seen == [2, 2]:
        break
    time.sleep(0.05)
check_eq(seen, [2, 2], "after the purge both serve a new fill")
check_eq(origin.calls("/v/k0"), 2, "the purge cost one origin call")
fleet = [b"t:{fleet}purges", b"t:{fleet}epoch", b"t:{fleet}gens"]
check_eq(cluster.owner(fleet[0]).cmd("XLEN", fleet[0]), 1, "one log entry")

# ---- a route purge reaches both ----
for k in ("k1", "k2", "k3"):
    check_eq([n_of(x.get(f"/api/{k}")) for x in (a, b)], [1, 1],
             f"both hold {k}")
r = b.admin("DELETE", "/route/api/%7Bk%7D")
check_eq(r.status, 200, f"route purge on b: {r}")
deadline = time.monotonic() + 5
seen = []
while time.monotonic() < deadline:
    seen = [n_of(x.get(f"/api/{k}")) for k in ("k1", "k2", "k3")
            for x in (a, b)]
    if seen == [2] * 6:
        break
    time.sleep(0.05)
check_eq(seen, [2] * 6, "after the route purge both serve new fills")
check_eq([origin.calls(f"/v/{k}") for k in ("k1", "k2", "k3")], [2, 2, 2],
         "one new origin call per key for the fleet")
slots = {cluster.keyslot(n) for n in fleet}
check_eq(len(slots), 1, "the purge log, its epoch and the generations: one "
         "slot")
check_eq(cluster.owner(fleet[2]).cmd("HGET", fleet[2], "/api/{k}"), b"1",
         "the route's generation, under the fleet's tag")

# ---- what /metrics and /healthz say ----
for x in (a, b):
    m = x.metrics()
    check_eq(m.get(("corral_l2_cluster_primaries", frozenset())), 3.0,
             "three primaries in the map")
    check_eq(m.get(("corral_l2_moved_total", frozenset())), 0.0,
             "no MOVED: nothing resharded")
    check_eq(x.healthz()["l2"], "up", "l2 up")
check(a.alive() and b.alive(), "both up")
done("cluster")
