"""Issue 21, a slot migrated while corral serves: on a 3-primary cluster
shared by two instances, one slot moves from primary A to primary B by
hand (SETSLOT IMPORTING on B and MIGRATING on A, MIGRATE of its keys in
batches with the KEYS option, then SETSLOT NODE on every primary) while a
bounded load runs on both instances over keys of that slot and of others.
Keys first asked after MIGRATING began are filled through an ASK (they
are on B); keys asked after the move, through a MOVED; both are counted.
Every request is answered 200, none waits past l2.timeout + the
upstream's delay (+ slack), warm keys cost no upstream call, fills that
outlive a lease keep it through the move, a purge during the move is
answered 200 and reaches both, and every key filled during or after the
move costs one call for the fleet. A node answering TRYAGAIN is not down
(doc/corral.8, "REDIS CLUSTER")."""
import asyncio
import json
import threading
import time

from harness import (World, check, check_eq, done, fleet_config, key_slot,
                     l2_name, require, status_or_error, timed_request)

TIMEOUT_S = 0.2          # l2.timeout of cluster.l2
FILL_MS = 2500           # the upstream's delay for keys filled in the move:
                         # longer than a lease lives (1 s) unrenewed
SLACK_S = 3.0            # generous: a shared machine, sanitizers
BATCH = 3                # names per MIGRATE
CANDIDATES = 200000      # route keys looked at to find one slot's keys

w = World()
cluster = w.start_cluster(primaries=3, replicas=0)
primaries = cluster.primaries()
require(len(primaries) == 3, "three primaries")
A, B = primaries[0], primaries[1]
origin = w.start_origin()
cfg = fleet_config(origin, 0)
cfg["l2"] = cluster.l2
a, b = w.start_fleet(cfg, log=True)


def value_name(key):
    return l2_name(b"t:", b"v:", key.encode())


# ---- one slot of A, and route keys whose names land in it ----
check_eq(key_slot(b"t:{fleet}purges"),
         cluster.keyslot(b"t:{fleet}purges"), "key_slot() is Redis's")
check_eq(key_slot(value_name("/api/x")), cluster.keyslot(value_name("/api/x")),
         "key_slot() of a value's name is Redis's")
a_slots = set()
for first, last, (host, port, *_), *_ in A.cmd("CLUSTER", "SLOTS"):
    if port == A.port:
        a_slots.update(range(first, last + 1))
busy = {key_slot(b"t:{fleet}purges"),
        key_slot(l2_name(b"t:", b"rate:", b"o"))}
by_slot = {}
for i in range(CANDIDATES):
    key = f"/api/r{i}"
    s = key_slot(value_name(key))
    if s in a_slots and s not in busy:
        by_slot.setdefault(s, []).append(f"r{i}")
slot, names = max(by_slot.items(), key=lambda kv: len(kv[1]))
require(len(names) >= 24, f"24 keys in one slot of A: {len(names)}")
WARM, COLD_ASK, COLD_MOVE, NEW = (names[0:10], names[10:14], names[14:20],
                                  names[20:24])
OTHER = [f"o{i}" for i in range(10)]  # keys of any slot
check(all(cluster.keyslot(value_name(f"/api/{k}")) == slot
          for k in WARM + COLD_ASK + COLD_MOVE + NEW),
      f"every chosen key's value is in slot {slot}")
check_eq(cluster.owner(value_name(f"/api/{WARM[0]}")).port, A.port,
         "slot's owner is A")
for k in COLD_MOVE:
    origin.behave(f"/v/{k}", delay_ms=FILL_MS)


def gather(jobs):
    """jobs: (instance, key) pairs, asked at once: [(sent, answered, r)]."""
    async def go():
        return await asyncio.gather(
            *(timed_request(x.port, f"/api/{k}", timeout=30)
              for x, k in jobs))
    return asyncio.run(go())


def holds(node, key, asking=False):
    """Whether node holds key's value (asking: as the importing node
    answers an ASKING client; a redirection is a no)."""
    with node.conn() as c:
        if asking:
            c.cmd("ASKING")
        c.send("EXISTS", value_name(f"/api/{key}"))
        return c.reply() == 1


def lease_name(key):
    return l2_name(b"t:", b"l:", f"/api/{key}".encode())


def calls(keys):
    return {k: origin.calls(f"/v/{k}") for k in keys}


def n_of(r):
    return json.loads(r.body)["n"]


bad = []       # answers other than 200, or errors
slow = []      # answers slower than the bound
answered = [0]


def judge(results, bound):
    for (x, k), (sent, got, r) in results:
        answered[0] += 1
        if getattr(r, "status", None) != 200:
            bad.append((k, status_or_error(r)))
        elif got - sent > bound:
            slow.append((k, round(got - sent, 3)))


# ---- warm: each key filled through one instance, so the other must read
# it from L2 during the move ----
jobs = [((a, b)[i % 2], k) for i, k in enumerate(WARM + OTHER)]
judge(zip(jobs, gather(jobs)), TIMEOUT_S + SLACK_S)
check_eq(bad, [], "warm keys answered")
check_eq(set(calls(WARM + OTHER).values()), {1}, "one call per warm key")
check(A.cmd("CLUSTER", "COUNTKEYSINSLOT", slot) >= len(WARM),
      "the warm keys' values are on A")

# ---- fills that run through the move: their leases taken on A ----
# COLD_MOVE[:3] filled by a, the rest by b, each asked twice.
KICK = ([(a, k) for k in COLD_MOVE[:3] for _ in range(2)] +
        [(b, k) for k in COLD_MOVE[3:] for _ in range(2)])
kicked = []
kick = threading.Thread(target=lambda: kicked.extend(zip(KICK,
                                                         gather(KICK))))
kick.start()
for _ in range(200):
    if all(A.cmd("EXISTS", lease_name(k)) == 1 for k in COLD_MOVE):
        break
    time.sleep(0.02)
check(all(A.cmd("EXISTS", lease_name(k)) == 1 for k in COLD_MOVE),
      "the fills' leases are on A")

# ---- the slot opens: B imports, A migrates ----
a_id = A.cmd("CLUSTER", "MYID").decode()
b_id = B.cmd("CLUSTER", "MYID").decode()
B.cmd("CLUSTER", "SETSLOT", slot, "IMPORTING", a_id)
A.cmd("CLUSTER", "SETSLOT", slot, "MIGRATING", b_id)


def migrate(names):
    A.cmd("MIGRATE", "127.0.0.1", B.port, "", 0, 5000, "KEYS", *names)


# Cold keys asked now are on neither node: A answers ASK, and they are
# filled on B, once for the fleet.
jobs = [(x, k) for k in COLD_ASK for x in (a, b) for _ in range(4)]
judge(zip(jobs, gather(jobs)), TIMEOUT_S * 3 + SLACK_S)
check_eq(bad, [], "keys cold in the migrating slot answered 200")
check_eq(calls(COLD_ASK), {k: 1 for k in COLD_ASK},
         "keys cold in the migrating slot: one call each for the fleet")
check(all(holds(B, k, asking=True) and not holds(A, k) for k in COLD_ASK),
      "and stored on B, the importing node")
for x in (a, b):
    m = x.metrics()
    check(m.get(("corral_l2_ask_total", frozenset()), 0) > 0,
          f"ASK counted on {x.port}")

# Half the warm keys move before the load: the other instance finds some
# on B (ASK) and some still on A. So does one lease of each instance's
# fills: its leases are on two nodes until the rest move.
migrate([value_name(f"/api/{k}") for k in WARM[:5]] +
        [lease_name(COLD_MOVE[0]), lease_name(COLD_MOVE[3])])

# ---- a bounded load on both instances while the rest migrates ----
stop = threading.Event()
LOAD_KEYS = WARM + OTHER + COLD_MOVE


def load():
    rounds = 0
    while not stop.is_set() and rounds < 2000:
        rounds += 1
        jobs = [(x, k) for k in LOAD_KEYS for x in (a, b)]
        judge(zip(jobs, gather(jobs)),
              TIMEOUT_S * 3 + FILL_MS / 1000 + SLACK_S)
        time.sleep(0.02)


t = threading.Thread(target=load)
t.start()
time.sleep(0.5)
# A purge during the move, of a warm key on B and one still on A: both
# reach the fleet, and each costs one new fill for the fleet.
PURGED = [WARM[0], WARM[9]]
for i, k in enumerate(PURGED):
    r = (a, b)[i].admin("DELETE", f"/cache/api/{k}")
    check_eq(r.status, 200, f"purge of {k} during the move: {r}")
time.sleep(1.0)  # longer than a lease lives: renewed while split
for _ in range(1000):
    batch = A.cmd("CLUSTER", "GETKEYSINSLOT", slot, BATCH)
    if not batch:
        break
    migrate(batch)
    time.sleep(0.15)
check_eq(A.cmd("CLUSTER", "COUNTKEYSINSLOT", slot), 0, "A emptied the slot")
kick.join(60)
check(not kick.is_alive(), "the fills through the move ended")
judge(kicked, TIMEOUT_S * 3 + FILL_MS / 1000 + SLACK_S)
# The slot is B's: the importing node first, then every other primary.
for p in [B, A] + [p for p in primaries if p not in (A, B)]:
    p.cmd("CLUSTER", "SETSLOT", slot, "NODE", b_id)
time.sleep(0.5)
stop.set()
t.join(120)
check(not t.is_alive(), "the load ended")
check(answered[0] > 4 * len(LOAD_KEYS), f"the load ran: {answered[0]}")
check_eq(bad, [], "every request answered 200 during the move")
check_eq(slow, [], "no request waited past l2.timeout + the upstream's "
         "delay (+ slack)")
WARM_CALLS = {k: 2 if k in PURGED else 1 for k in WARM + OTHER}
check_eq(calls(WARM + OTHER), WARM_CALLS,
         "warm keys: no upstream call during the move but a purge's fill")
for k in PURGED:
    check_eq({n_of(x.get(f"/api/{k}")) for x in (a, b)}, {2},
             f"after the purge, both serve the new fill of {k}")
check_eq(calls(COLD_MOVE), {k: 1 for k in COLD_MOVE},
         "keys filled during the move: one call each for the fleet")
for x in (a, b):
    m = x.metrics()
    check_eq(m.get(("corral_l2_leases_total",
                    frozenset({("result", "lost")})), 0), 0.0,
             f"no lease ran out while held, on {x.port}")
check_eq(B.cmd("CLUSTER", "COUNTKEYSINSLOT", slot),
         len(WARM) + len(COLD_ASK) + len(COLD_MOVE),
         "every value of the slot on B")

# ---- after the move: new keys through a MOVED, one call each ----
jobs = [(x, k) for k in NEW for x in (a, b) for _ in range(4)]
results = gather(jobs)
judge(zip(jobs, results), TIMEOUT_S * 3 + SLACK_S)
check_eq(bad, [], "new keys after the move answered 200")
check_eq(calls(NEW), {k: 1 for k in NEW},
         "new keys after the move: one call each for the fleet")
check(all(n_of(r) == 1 for _, _, r in results), "every answer the one fill's")
check(all(holds(B, k) for k in NEW), "and stored on B")
for x in (a, b):
    m = x.metrics()
    check(m.get(("corral_l2_moved_total", frozenset()), 0) > 0,
          f"MOVED counted on {x.port}")
    check_eq(x.healthz()["l2"], "up", "l2 up after the move")
check_eq(calls(WARM + OTHER), WARM_CALLS, "warm keys: no call since")
for x in (a, b):
    check("down (TRYAGAIN" not in x.log(),
          f"a migrating slot is no Redis down: {x.log()[-400:]}")
check(a.alive() and b.alive(), "both up")
done("cluster_reshard")
