"""Issue 21, Sentinel: a primary demoted behind the sentinels' back (made a
replica by hand, REPLICAOF, while the sentinels still name it) answers
READONLY; corral drops it, asks the sentinels again, refuses it on ROLE,
and writes nothing more to it, while every request is still answered
from the upstream. Made a primary again, it gets corral's writes again
(doc/corral.json.5, "Sentinel")."""
import time

from harness import (World, check, check_eq, done, fills_reach, fleet_config,
                     require)

MASTER = "mymaster"

w = World()
origin = w.start_origin()
primary = w.start_redis()
other = w.start_redis(("--replicaof", "127.0.0.1", str(primary.port)))
# One sentinel with a quorum of 2: it names the primary and never fails
# it over.
sentinel = w.start_sentinel(MASTER, primary.port, down_after_ms=60000)

cfg = fleet_config(origin, 0)
cfg["l2"] = {"sentinel": {"master": MASTER,
                          "nodes": [f"127.0.0.1:{sentinel.port}"]},
             "prefix": "t:", "timeout": "200ms"}
x = w.start_corral(cfg, admin=True)
require(x.wait_l2("up"), "corral sees the primary through the sentinel")
check_eq(x.get("/api/first").status, 200, "a fill")
check(primary.scan(b"t:*first*") != [], "its value is on the primary")


def readonly_errors():
    info = primary.cmd("INFO", "errorstats").decode()
    for line in info.splitlines():
        if line.startswith("errorstat_READONLY:"):
            return int(line.split("count=")[1].split(",")[0])
    return 0


other.cmd("REPLICAOF", "NO", "ONE")
primary.cmd("REPLICAOF", "127.0.0.1", str(other.port))
check_eq(primary.cmd("ROLE")[0], b"slave", "the primary is a replica now")
check_eq(sentinel.cmd("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)[1],
         str(primary.port).encode(), "the sentinel still names it")

statuses = [x.get(f"/api/a{i}").status for i in range(10)]
check(all(s == 200 for s in statuses), f"answered meanwhile: {statuses}")
seen = readonly_errors()
check(seen >= 1, f"corral met READONLY: {seen}")
statuses = [x.get(f"/api/b{i}").status for i in range(30)]
time.sleep(1.5)  # reconnects come and go meanwhile
statuses += [x.get(f"/api/c{i}").status for i in range(10)]
check(all(s == 200 for s in statuses), f"answered meanwhile: {statuses}")
check_eq(readonly_errors(), seen,
         "no write reached the demoted primary after its first READONLY")
check_eq(origin.calls("/v/b0"), 1, "served from the upstream")

# A primary again: corral writes to it again.
primary.cmd("REPLICAOF", "NO", "ONE")
check(fills_reach(x, primary, "again"),
      "a primary again: corral writes to it again")
done("sentinel_readonly")
