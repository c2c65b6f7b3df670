"""Issue 17, purge while Redis is down: the admin must not answer 200 for
a purge the fleet has not heard. doc/fleet.md: 503 with "fleet":"queued",
applied in this server (every worker, over the workers' purge bus, also
with l2) and replayed when Redis is back, so the other instances drop
their copies then."""
import asyncio
import itertools
import json
import time

from harness import World, check, check_eq, done, fleet_config, request

w = World()
origin = w.start_origin()
redis = w.start_redis()
cfg = fleet_config(origin, redis.port, timeout="200ms")
a, b = w.start_fleet(cfg)


def both_cache(key):
    """A fills key; B reads it from L2 into its L1."""
    check_eq(a.get(f"/api/{key}").status, 200, f"A fills {key}")
    r = b.get(f"/api/{key}")
    check_eq(r.status, 200, f"B has {key}")
    check_eq(r.json()["n"], 1, f"B's copy of {key} is A's")


def queued(r, what):
    check_eq(r.status, 503, f"{what}: the purge is not confirmed by the "
             f"fleet: {r}")
    try:
        body = json.loads(r.body)
    except ValueError:
        body = None
    check(body is not None and "queued" in json.dumps(body),
          f"{what}: a JSON body that says queued: {r.body!r}")


def serves_new(c, key, within, what):
    """Polls c for key's new body; A serves other keys meanwhile, as a
    live instance would (its Redis connection sees traffic)."""
    deadline = time.monotonic() + within
    body = None
    for i in itertools.count():
        if time.monotonic() >= deadline:
            break
        a.get(f"/api/{key}-other{i}")
        body = c.get(f"/api/{key}").body
        if body == b'{"v": "new"}':
            break
        time.sleep(0.1)
    check_eq(body, b'{"v": "new"}', what)


# Redis stopped: the purge is answered 503 queued; once Redis resumes,
# B drops its copy.
both_cache("s1")
redis.stop()
r = a.admin("DELETE", "/cache/api/s1")
origin.behave("/v/s1", body=json.dumps({"v": "new"}))
redis.cont()
queued(r, "Redis stopped")
serves_new(b, "s1", 3.0, "B serves the new body within 3 s of SIGCONT")

# Redis killed: 503 queued; restarted with its data (the old value and
# all), B still drops its copy: the purge is replayed.
both_cache("s2")
redis.cmd("SAVE")
redis.kill()
r = a.admin("DELETE", "/cache/api/s2")
origin.behave("/v/s2", body=json.dumps({"v": "new"}))
queued(r, "Redis killed")
redis.start()  # loads what SAVE wrote
serves_new(b, "s2", 3.0, "B serves the new body within 3 s of the restart")

# workers: 2 with l2, Redis down: a purge reaches both workers of the
# server that took it (their L1s), though the fleet has not heard it.
wcfg = fleet_config(origin, redis.port, timeout="200ms", workers=2)
s = w.start_corral(wcfg, admin=True)
check(s.wait_l2("up"), "the 2-worker server sees Redis")
check_eq(s.get("/api/s3").status, 200, "one worker fills s3")
time.sleep(0.2)
# Clients land on either worker: once one is answered from L2, both
# workers hold s3 in L1.
both = False
for _ in range(20):
    got = s.many("/api/s3", 20)
    check_eq({x.status for x in got}, {200}, "s3 served")
    if any("detail=l2" in x.headers.get("cache-status", "") for x in got):
        both = True
        break
check(both, "both workers hold s3")
redis.kill()
r = s.admin("DELETE", "/cache/api/s3")
queued(r, "workers: 2, Redis killed")
origin.behave("/v/s3", body=json.dumps({"v": "new"}))


async def twenty():
    out = []
    for _ in range(20):  # one connection each: both workers take some
        out.append(await request(s.port, "/api/s3", None, "GET", 15))
    return out
got = asyncio.run(twenty())
stale = [x.body for x in got if x.body != b'{"v": "new"}']
check(not stale, f"all 20 answers after the purge have the new body: "
      f"{len(stale)} stale, e.g. {stale[:1]}")
done("purge_redis_down")
