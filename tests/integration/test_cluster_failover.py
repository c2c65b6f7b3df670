"""Issue 21, a primary failed over while corral serves: a cluster of 3
primaries and 3 replicas (cluster-node-timeout 1 s) shared by two
instances; one primary SIGKILLed under a bounded load on both. Every
request is answered 200 (from L1 or the upstream) and none waits past
l2.timeout + the upstream's delay (+ slack); the errors are counted;
corral follows the promotion (a fill for a key of the dead primary's
slots lands on its promoted replica, SCAN on that node) within the
node timeout + the election + a margin; N concurrent cold requests over
both instances make one upstream call, before and after, for a key of
the failed-over shard and one of another; the dead primary was the only
seed, so both subscribed on it: a purge after the failover still
reaches both (doc/corral.8, "REDIS CLUSTER")."""
import asyncio
import json
import threading
import time

from harness import (World, check, check_eq, done, fleet_config, key_slot,
                     l2_name, require, status_or_error, timed_request)

NODE_TIMEOUT_MS = 1000
ELECTION_S = 2.0     # a replica's election after the node timeout
MARGIN_S = 5.0       # generous: a shared machine, sanitizers
FOLLOW_S = 2.0       # corral after the cluster names the replica
TIMEOUT_S = 0.2      # l2.timeout of cluster.l2
DELAY_MS = 100       # the upstream's delay, every path
SLACK_S = 3.0
N = 40               # concurrent cold requests over both instances

w = World()
cluster = w.start_cluster(primaries=3, replicas=1,
                          node_timeout_ms=NODE_TIMEOUT_MS)
primaries = cluster.primaries()
require(len(primaries) == 3, "three primaries")
victim = primaries[0]
replicas = [n for n in cluster.nodes if n not in primaries]
replica = None
for r in replicas:
    role = r.cmd("ROLE")
    if role[0] == b"slave" and int(role[2]) == victim.port:
        replica = r
require(replica is not None, "the victim's replica")

origin = w.start_origin()
origin.behave("*", delay_ms=DELAY_MS)
cfg = fleet_config(origin, 0)
# The victim the only seed: both instances subscribe on it, so their
# subscriptions must move when it dies.
cfg["l2"] = {**cluster.l2, "cluster": [f"127.0.0.1:{victim.port}"]}
a, b = w.start_fleet(cfg)

# Route keys by shard: on the victim's slots, or another primary's.
victim_slots = set()
for first, last, (host, port, *_), *_ in victim.cmd("CLUSTER", "SLOTS"):
    if port == victim.port:
        victim_slots.update(range(first, last + 1))


def on_victim(key):
    return key_slot(l2_name(b"t:", b"v:", key.encode())) in victim_slots


def keys(prefix, n, victims):
    """n route keys /api/<prefix>I on the victim's slots (or not)."""
    out = []
    i = 0
    while len(out) < n:
        i += 1
        if on_victim(f"/api/{prefix}{i}") == victims:
            out.append(f"{prefix}{i}")
    return out


def gather(jobs):
    """jobs: (instance, key) pairs, asked at once: [(sent, answered, r)]."""
    async def go():
        return await asyncio.gather(
            *(timed_request(x.port, f"/api/{k}", timeout=60)
              for x, k in jobs))
    return asyncio.run(go())


def one_flight(key, when):
    """N concurrent cold requests for key over both: all 200, one call."""
    rs = gather([((a, b)[i % 2], key) for i in range(N)])
    check(all(getattr(r, "status", None) == 200 for _, _, r in rs),
          f"{when}: {N} cold requests for {key}: all 200: "
          f"{sorted({status_or_error(r) for _, _, r in rs}, key=str)}")
    shard = "the victim's" if on_victim(f"/api/{key}") else "another"
    check_eq(origin.calls(f"/v/{key}"), 1,
             f"{when}: one upstream call for {key} ({shard} shard)")


def value_name(key):
    return l2_name(b"t:", b"v:", f"/api/{key}".encode())


mine, other = keys("before", 1, True)[0], keys("before", 1, False)[0]
one_flight(mine, "before")
one_flight(other, "before")
check_eq(cluster.owner(value_name(mine)).port, victim.port,
         "the victim's key is on the victim")

# ---- a bounded load on both instances: warm keys of every shard, and
# a cold one of the victim's and another's each round ----
WARM = keys("w", 5, True) + keys("w", 5, False)
rs = gather([((a, b)[i % 2], k) for i, k in enumerate(WARM)])
check(all(getattr(r, "status", None) == 200 for _, _, r in rs), "warm")
COLD = list(zip(keys("c", 2000, True), keys("c", 2000, False)))

bad, slow, answered = [], [], []  # answered: when each was sent
BOUND = TIMEOUT_S + DELAY_MS / 1000 + SLACK_S
stop = threading.Event()


def load():
    rounds = 0
    while not stop.is_set() and rounds < len(COLD):
        jobs = [(x, k) for x in (a, b) for k in WARM + list(COLD[rounds])]
        rounds += 1
        for (x, k), (sent, got, r) in zip(jobs, gather(jobs)):
            answered.append(sent)
            if getattr(r, "status", None) != 200:
                bad.append((k, status_or_error(r)))
            elif got - sent > BOUND:
                slow.append((k, round(got - sent, 3)))
        time.sleep(0.02)


def errors(x):
    m = x.metrics()
    return (m.get(("corral_l2_errors_total", frozenset()), 0) +
            m.get(("corral_l2_operations_total",
                   frozenset({("result", "timeout")})), 0))


before = [errors(x) for x in (a, b)]
t = threading.Thread(target=load)
t.start()
time.sleep(1.0)
killed = time.monotonic()
victim.kill()

# When the cluster names the replica a primary.
promoted = [None]
limit = killed + NODE_TIMEOUT_MS / 1000 + ELECTION_S + MARGIN_S


def watch_role():
    while promoted[0] is None and time.monotonic() < limit:
        try:
            if replica.cmd("ROLE")[0] == b"master":
                promoted[0] = time.monotonic()
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.02)


role = threading.Thread(target=watch_role)
role.start()

# corral follows: a fill of a key of the victim's slots lands on the
# promoted replica, through each instance.
followed = {}
fresh = iter(keys("f", 10000, True))
for x in (a, b):
    while time.monotonic() < limit:
        k = next(fresh)
        r = x.get(f"/api/{k}", timeout=30)
        if r.status == 200 and replica.scan(value_name(k)):
            followed[x.port] = time.monotonic()
            break
        time.sleep(0.05)
time.sleep(0.5)
stop.set()
t.join(120)
role.join(30)
check(not t.is_alive(), "the load ended")
if promoted[0] is not None:
    check(len([s for s in answered if killed < s < promoted[0]]) > 10,
          "the load ran between the kill and the promotion")
check(promoted[0] is not None, "the cluster promoted the replica")
check_eq(sorted(followed), sorted([a.port, b.port]),
         f"both instances write the victim's keys to the promoted replica "
         f"within {limit - killed:.1f} s of the kill")
if promoted[0] is not None:
    for port, when in followed.items():
        print(f"{port}: the replica was promoted {promoted[0] - killed:.2f} "
              f"s after the kill; corral wrote to it "
              f"{when - promoted[0]:.2f} s later")
        check(when - promoted[0] <= FOLLOW_S,
              f"corral follows within {FOLLOW_S} s of the promotion")
check_eq(bad, [], "every request answered 200 during the failover")
check_eq(slow, [], "no request waited past l2.timeout + the upstream's "
         "delay (+ slack)")
check_eq({k: origin.calls(f"/v/{k}") for k in WARM}, {k: 1 for k in WARM},
         "warm keys answered from L1 throughout")
after = [errors(x) for x in (a, b)]
check(all(n > o for n, o in zip(after, before)),
      f"the errors are counted: {before} -> {after}")

# ---- single flight after the failover, on both shards ----
for x in (a, b):
    check(x.wait_l2("up", 15), "both instances see every slot's primary up")
mine, other = keys("after", 1, True)[0], keys("after", 1, False)[0]
one_flight(mine, "after")
one_flight(other, "after")
check(replica.scan(value_name(mine)),
      "the victim's key after the failover is on the promoted replica")

# ---- a purge after the failover reaches both (their subscriptions
# moved off the dead seed, and they resynced) ----
for k in (WARM[0], WARM[-1]):
    r = a.admin("DELETE", f"/cache/api/{k}")
    check_eq(r.status, 200, f"purge of {k} after the failover: {r}")
    deadline = time.monotonic() + 10
    seen = None
    while time.monotonic() < deadline:
        seen = {json.loads(x.get(f"/api/{k}").body)["n"] for x in (a, b)}
        if seen == {2}:
            break
        time.sleep(0.05)
    check_eq(seen, {2}, f"after the purge of {k}, both serve a new fill")
    check_eq(origin.calls(f"/v/{k}"), 2, f"the purge of {k} cost one call")
check(a.alive() and b.alive(), "both up")
done("cluster_failover")
