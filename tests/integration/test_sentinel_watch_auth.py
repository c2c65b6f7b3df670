"""Issue 21, Sentinel: a sentinel that refuses corral's AUTH (a
redis-server with another password, first in l2.sentinel.nodes, the
password given as ${VAR}). Bug: the +switch-master watch sent AUTH with
nobody reading the answer, so a refusal was never said. Now the watch
logs the refusal once (never the password), moves on to the next
sentinel with backoff, and hears a failover's switch there with no
traffic (doc/corral.8, "L2 MODES")."""
import os
import time

from harness import (World, check, check_eq, done, fills_reach, fleet_config,
                     require)

MASTER = "mymaster"
PASSWORD = f"sentinel-secret-{os.getpid()}"

w = World()
origin = w.start_origin()
primary, replica, sentinels, l2 = w.start_sentinel_group(MASTER,
                                                         password=PASSWORD)
refuser = w.start_redis(("--requirepass", "another-password"))
l2["sentinel"]["nodes"].insert(0, f"127.0.0.1:{refuser.port}")
l2["sentinel"]["password"] = "${SENTINEL_PASSWORD}"
cfg = fleet_config(origin, 0)
cfg["l2"] = l2
x = w.start_corral(cfg, env={"SENTINEL_PASSWORD": PASSWORD}, admin=True,
                   log=True)
require(x.wait_l2("up"), "corral sees the primary through the sentinels")


def holders():
    """The sentinels holding a subscriber: corral's watch (sentinels have
    no subscribers of their own)."""
    return [s for s in sentinels if s.cmd("CLIENT", "LIST", "TYPE", "pubsub")]


deadline = time.monotonic() + 15
while time.monotonic() < deadline and not holders():
    time.sleep(0.1)
check_eq(len(holders()), 1, "the watch is on a sentinel that took the AUTH")


def refusals():
    name = f"127.0.0.1:{refuser.port}"
    return [line for line in x.log().splitlines()
            if "switch-master" in line and name in line and "AUTH" in line]


deadline = time.monotonic() + 5
while time.monotonic() < deadline and not refusals():
    time.sleep(0.1)
check_eq(len(refusals()), 1, "the watch's refused AUTH is logged, once")
check(PASSWORD not in x.log(), "the password is never logged")

SWITCHES = ("corral_l2_sentinel_switches_total", frozenset())
primary.stop()  # SIGSTOP: corral's own connection stays open, unanswered
deadline = time.monotonic() + 20
while time.monotonic() < deadline and x.metrics().get(SWITCHES, 0) < 1:
    time.sleep(0.1)
check_eq(x.metrics().get(SWITCHES), 1.0,
         "the switch is heard with no traffic, and counted once")
check(fills_reach(x, replica, "next"),
      "the next fill is written to the new primary")
check_eq(len(refusals()), 1, "still logged once")
check(PASSWORD not in x.log(), "the password is never logged")
done("sentinel_watch_auth")
