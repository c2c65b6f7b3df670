"""Issue 21, Sentinel: the +switch-master watch never stays deaf on a
sentinel that does not answer. Bug: the watch had no deadline for its
subscription and no keepalive, so a sentinel that accepts and never
answers (or a half-open connection) kept it deaf for good. Now: a
listening socket nobody reads, first in l2.sentinel.nodes, is given up
within l2.timeout and the watch subscribes on the next sentinel; that
sentinel stopped (SIGSTOP: the connection stays open, silent), the
watch's keepalive goes unanswered and it moves to another one, where it
hears a failover's switch with no traffic (doc/corral.8, "L2 MODES")."""
import socket
import time

from harness import (World, check, check_eq, done, fills_reach, fleet_config,
                     require)

MASTER = "mymaster"

w = World()
origin = w.start_origin()
primary, replica, sentinels, l2 = w.start_sentinel_group(MASTER)
mute = socket.socket()
mute.bind(("127.0.0.1", 0))
mute.listen(16)  # the kernel accepts; nobody reads or answers
l2["sentinel"]["nodes"].insert(0, f"127.0.0.1:{mute.getsockname()[1]}")
cfg = fleet_config(origin, 0)
cfg["l2"] = l2
x = w.start_corral(cfg, admin=True, log=True)
require(x.wait_l2("up"), "corral sees the primary through the sentinels")


def holders(among):
    """The sentinels holding a subscriber: corral's watch (sentinels have
    no subscribers of their own)."""
    return [s for s in among if s.cmd("CLIENT", "LIST", "TYPE", "pubsub")]


def wait_holder(among, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = holders(among)
        if h:
            return h
        time.sleep(0.1)
    return []


h = wait_holder(sentinels)
require(len(h) == 1, "the watch left the mute sentinel for a real one")
holder = h[0]
holder.stop()  # silent, the connection open
others = [s for s in sentinels if s is not holder]
h = wait_holder(others)
check_eq(len(h), 1, "the watch left the stopped sentinel for another one")

SWITCHES = ("corral_l2_sentinel_switches_total", frozenset())
check_eq(x.metrics().get(SWITCHES), 0.0, "no switch yet")
primary.stop()  # the two running sentinels fail it over
deadline = time.monotonic() + 20
while time.monotonic() < deadline and x.metrics().get(SWITCHES, 0) < 1:
    time.sleep(0.1)
check_eq(x.metrics().get(SWITCHES), 1.0,
         "the switch is heard with no traffic, and counted once")
check(fills_reach(x, replica, "next"),
      "the next fill is written to the new primary")
holder.cont()
mute.close()
done("sentinel_silent_watch")
