"""Issue 17, subscriber gap: the pub/sub connections killed (CLIENT KILL
TYPE pubsub) while a message is published. A remote waiter must not depend
on that one message (doc/fleet.md: it polls every 100 ms while its
subscriber is down, and looks again when it resubscribes), and a purge
published while an instance was deaf reaches it from the purge log when it
resubscribes. And a purge logged whose message never came, with no
subscriber dropped (a cluster node publishing before its bus links are up
reaches only its own subscribers), reaches the instances by the purge
log's last entry, read with the epoch every second; and when a later
message is heard, by the entry before it that the message names."""
import asyncio
import concurrent.futures
import json
import time

from harness import (check, check_eq, done, fleet_of_two, l2_name, require,
                     status_or_error, timed_request)

origin, redis, a, b = fleet_of_two()
NEW = b'{"v": "new"}'


def new_body_within(path, seconds):
    """How long B took to serve NEW for path (polling every 50 ms), or
    None if it still had not after seconds."""
    t0 = time.monotonic()
    while time.monotonic() < t0 + seconds:
        if b.get(path).body == NEW:
            return time.monotonic() - t0
        time.sleep(0.05)
    return None

# A fills for 2 s; 10 clients wait on B (for A's lease). The subscribers
# are killed just before A's fill ends, so B is deaf when it is announced.
origin.behave("/v/gap", delay_ms=2000)


def fill_started():
    """When the origin got A's call (time.monotonic, the origin's clock)."""
    for _ in range(200):
        log = origin.control("GET", "/_origin/log?path=/v/gap")["requests"]
        if log:
            return log[0]["t"]
        time.sleep(0.01)
    return None


async def gap():
    holder = asyncio.ensure_future(timed_request(a.port, "/api/gap"))
    start = await asyncio.get_running_loop().run_in_executor(
        None, fill_started)
    require(start is not None, "the origin got A's call")
    waiters = [asyncio.ensure_future(timed_request(b.port, "/api/gap",
                                                   delay=0.2))
               for _ in range(10)]
    await asyncio.sleep(max(0.0, start + 1.8 - time.monotonic()))
    killed = redis.client_kill("pubsub")
    return start, killed, await holder, await asyncio.gather(*waiters)
start, killed, held, waited = asyncio.run(gap())
check(killed >= 2, f"both subscribers killed: {killed}")
check_eq(status_or_error(held[2]), 200, "A's client answered")
bad = [x[2] for x in waited if status_or_error(x[2]) != 200 or
       x[2].body != getattr(held[2], "body", None)]
check(not bad, f"B's 10 waiters get A's body: {bad[:2]}")
last = max(end for _, end, _ in waited) - start
check(last <= 2.6, f"B's waiters answered within 2.6 s of the fill's "
      f"start, not at the lease's end: the last at {last:.2f} s")
check_eq(origin.calls("/v/gap"), 1, "one origin call for the fleet")

# B caches a key; the subscribers are killed and at once a purge goes
# through A: B, deaf when it was published, still drops its copy.
check_eq(b.get("/api/p").status, 200, "B caches /api/p")
check_eq(b.get("/api/p").json()["n"], 1, "B answers from its copy")
check(redis.client_kill("pubsub") >= 2, "subscribers killed")
r = a.admin("DELETE", "/cache/api/p")
check_eq(r.status, 200, f"the purge through A, Redis up: {r}")
origin.behave("/v/p", body=json.dumps({"v": "new"}))
check(new_body_within("/api/p", 2.0) is not None,
      "within 2 s B serves the new body")

# B caches /api/q. Its purge is logged as A would log it, but published to
# nobody, and no subscriber drops: B still drops its copy, within two
# epoch reads.
def unheard(inst=b):
    return sum(v for (n, _), v in inst.metrics().items()
               if n == "corral_l2_unheard_purges_total")


STREAM = b"t:{fleet}purges"
entry = redis.cmd("XREVRANGE", STREAM, "+", "-", "COUNT", "1")
check(entry and entry[0][1][0] == b"k" and b"/api/p" in entry[0][1][1],
      f"the purge of /api/p is the log's last entry: {entry}")
key = entry[0][1][1].replace(b"/api/p", b"/api/q")
check_eq(b.get("/api/q").status, 200, "B caches /api/q")
check_eq(b.get("/api/q").json()["n"], 1, "B answers from its copy")
check_eq(unheard(), 0, "every purge so far heard (or resynced after a gap)")
origin.behave("/v/q", body=json.dumps({"v": "new"}))
redis.cmd("DEL", l2_name(b"t:", b"v:", key))
redis.cmd("XADD", STREAM, "*", "k", key)
took = new_body_within("/api/q", 4.0)
check(took is not None, "B drops its copy of /api/q within 4 s")
check(took is None or took >= 0.9, f"by the log, not a message: {took} s")
check_eq(unheard(), 1, "counted once")

# A lost message followed by a heard one: /api/r's purge is logged and
# published to nobody, then /api/s is purged through A. The heard message
# names the entry before it, so B sees the gap and applies /api/r's purge
# from the log at once. The log's end (/api/s, heard) would never show it.
for path in ("/api/r", "/api/s"):
    check_eq(b.get(path).status, 200, f"B caches {path}")
    check_eq(b.get(path).json()["n"], 1, f"B answers {path} from its copy")
    origin.behave(path.replace("/api", "/v"), body=json.dumps({"v": "new"}))
redis.cmd("DEL", l2_name(b"t:", b"v:", key.replace(b"/api/q", b"/api/r")))
redis.cmd("XADD", STREAM, "*", "k", key.replace(b"/api/q", b"/api/r"))
r = a.admin("DELETE", "/cache/api/s")
check_eq(r.status, 200, f"the purge of /api/s through A: {r}")
took = new_body_within("/api/r", 4.0)
check(took is not None, "B drops its copy of /api/r within 4 s")
check(took is None or took < 0.9,
      f"at the next message, not the log's end: {took} s")
check_eq(b.get("/api/s").body, NEW, "and its copy of /api/s")
check_eq(unheard(), 2, "the gap counted once more")

# No gap where there is none: 40 purges through A and B, two at a time,
# each instance hearing its own and the other's, and neither resyncs.
was = (unheard(a), unheard(b))
with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    codes = list(pool.map(
        lambda i: (a if i % 2 else b).admin("DELETE", f"/cache/api/n{i}").status,
        range(40)))
check_eq(codes, [200] * 40, "the 40 purges confirmed")
logged = redis.cmd("XLEN", STREAM)
time.sleep(1.5)  # every message heard, and an epoch read
check_eq((unheard(a), unheard(b)), was,
         f"no resync for purges all heard ({logged} in the log)")
done("subscriber_gap")
