"""Issue 21, Sentinel: a failover while corral is idle and its connection
to the old primary stays open but silent (the primary SIGSTOPped, as
behind a partition): corral hears +switch-master (its log says so), counts
the switch once, and its next fill is written to the new primary
(doc/corral.json.5, "Sentinel")."""
import time

from harness import (World, check, check_eq, done, fills_reach, fleet_config,
                     require)

MASTER = "mymaster"

w = World()
origin = w.start_origin()
primary, replica, sentinels, l2 = w.start_sentinel_group(MASTER)

cfg = fleet_config(origin, 0)
cfg["l2"] = l2
x = w.start_corral(cfg, admin=True, log=True)
require(x.wait_l2("up"), "corral sees the primary through the sentinel")
check_eq(x.get("/api/first").status, 200, "a fill")
check(primary.scan(b"t:*first*") != [], "its value is on the primary")

SWITCHES = ("corral_l2_sentinel_switches_total", frozenset())
check_eq(x.metrics().get(SWITCHES), 0.0, "no switch yet")

primary.stop()  # SIGSTOP: corral's socket stays open, unanswered
deadline = time.monotonic() + 20
while time.monotonic() < deadline and x.metrics().get(SWITCHES, 0) < 1:
    time.sleep(0.1)
check_eq(x.metrics().get(SWITCHES), 1.0,
         "the switch is heard with no traffic, and counted once")
check_eq(replica.cmd("ROLE")[0], b"master", "the replica was promoted")
# corral's own health PING can find the stopped primary first and ask the
# sentinels again; the message is heard all the same, maybe a moment later.
deadline = time.monotonic() + 10
while time.monotonic() < deadline and "+switch-master" not in x.log():
    time.sleep(0.1)
check("+switch-master" in x.log(), "the switch was heard from a sentinel")
check_eq(x.metrics().get(SWITCHES), 1.0, "and counted once")
check_eq(origin.calls("/v/first"), 1, "nothing asked meanwhile")
check(fills_reach(x, replica, "next"),
      "the next fill is written to the new primary")
done("sentinel_switch")
