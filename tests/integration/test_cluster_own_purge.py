"""Issue 21, an instance's own purge message, late: on a Redis Cluster an
instance subscribes on one node and hears a purge that the fleet's
primary published over the cluster bus, tens of milliseconds later at
times, so its own purge's message may come after the purge was answered
200. A fill begun in that instance after the 200 is a fill of the purged
key: hearing its own message must not throw it away (which cost the fleet
a second upstream call per purge). Two instances subscribe through a
delay proxy in front of their only seed (so every message comes late);
each purge, then requests on both at once, make exactly one upstream
call (doc/fleet.md, "Purges")."""
import asyncio
import json
import time

from harness import World, check, check_eq, done, fleet_config, request

KEYS = [f"k{i}" for i in range(6)]
DELAY_MS = 400  # the refill's: the own message comes while it runs
LATE_MS = 200   # the proxy's round trip: each message 100 ms late

w = World()
cluster = w.start_cluster(primaries=3, replicas=0)
seed = cluster.primaries()[0]
proxy = w.start_delay_proxy(seed.port, LATE_MS)
origin = w.start_origin()
for k in KEYS:
    origin.behave(f"/v/{k}", delay_ms=DELAY_MS)
cfg = fleet_config(origin, 0)
# The proxy the only seed, so both subscribe through it; commands go to
# the primaries the slot map names, without it.
cfg["l2"] = {**cluster.l2, "cluster": [f"127.0.0.1:{proxy}"],
             "timeout": "1s"}
a, b = w.start_fleet(cfg)


def n_of(r):
    return json.loads(r.body)["n"]


def both(k):
    async def go():
        return await asyncio.gather(request(a.port, f"/api/{k}", timeout=30),
                                    request(b.port, f"/api/{k}", timeout=30))
    return asyncio.run(go())


for k in KEYS:
    check_eq([n_of(x.get(f"/api/{k}")) for x in (a, b)], [1, 1],
             f"both hold {k}")
for k in KEYS:
    r = a.admin("DELETE", f"/cache/api/{k}")
    check_eq(r.status, 200, f"purge of {k} on a: {r}")
    rs = both(k)
    check_eq([x.status for x in rs], [200, 200], f"{k} answered after it")
    deadline = time.monotonic() + 10
    seen = None
    while time.monotonic() < deadline:
        seen = {n_of(x.get(f"/api/{k}")) for x in (a, b)}
        if seen == {2}:
            break
        time.sleep(0.05)
    check_eq(seen, {2}, f"both serve the one new fill of {k}")
    check_eq(origin.calls(f"/v/{k}"), 2,
             f"the purge of {k} cost one upstream call for the fleet")
check(a.alive() and b.alive(), "both up")
done("cluster_own_purge")
