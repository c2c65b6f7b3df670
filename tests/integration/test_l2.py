"""Two corral instances sharing a real redis-server: one fills, the other
answers from L2 with the remaining TTL and an honest Age; garbage and a
foreign encoding under a key are misses; Redis killed and restarted;
a Redis that accepts and never answers costs at most l2.timeout."""
import socket
import time

from harness import World, check, check_eq, done

w = World()
origin = w.start_origin()
redis = w.start_redis()


# Generous: the default 50 ms is for production; a loaded 2-core test
# machine can be slower than that, and a slow reply is a miss by design.
def config(redis_port, timeout="500ms"):
    return {
        "l2": {"redis": f"127.0.0.1:{redis_port}", "prefix": "it:",
               "timeout": timeout},
        "upstreams": {"o": {"base": origin.base()}},
        "routes": [{"path": "/api/{k}", "upstream": "o", "fetch": "/v/{k}",
                    "strategy": "1m"}],
    }


a = w.start_corral(config(redis.port))
b = w.start_corral(config(redis.port))
time.sleep(0.3)  # both connected to Redis

# A fills; B answers from L2: same body, remaining TTL, Age from A's store.
r = a.get("/api/one")
check_eq(r.status, 200, "A fills")
check_eq(r.headers.get("cache-status"), "corral; fwd=miss; stored", "stored")
time.sleep(1.2)
r2 = b.get("/api/one")
check_eq(r2.status, 200, "B answers")
check_eq(r2.body, r.body, "the same body")
cs = r2.headers.get("cache-status", "")
check(cs.startswith("corral; hit; ttl=") and cs.endswith("; detail=l2"),
      f"an L2 hit: {cs}")
ttl = int(cs.split("ttl=")[1].split(";")[0])
check(50 <= ttl <= 59, f"the remaining (jittered) ttl: {ttl}")
check(int(r2.headers["age"]) >= 1, f"Age counts from A's store: {r2.headers}")
check_eq(r2.headers.get("etag"), r.headers.get("etag"), "the same ETag")
check_eq(origin.calls("/v/one"), 1, "one origin call for both instances")
# Promoted: B's next answer is its own L1 hit.
cs = b.get("/api/one").headers.get("cache-status", "")
check(cs.startswith("corral; hit") and "l2" not in cs, f"L1 now: {cs}")

# Fleet-wide single flight: 200 concurrent cold clients split across both
# instances, a slow origin: one origin call, one body, and B's clients
# (or A's, whichever lost the lease) collapsed onto the other's fill.
origin.behave("/v/cold", delay_ms=500)
import asyncio
from harness import request


async def split():
    return await asyncio.gather(*(
        request((a if i % 2 else b).port, "/api/cold", None, "GET", 30)
        for i in range(200)))
answers = asyncio.run(split())
check_eq({x.status for x in answers}, {200}, "200 clients served")
check_eq(len({x.body for x in answers}), 1, "one body for all")
check_eq(origin.calls("/v/cold"), 1, "one origin call for two instances")
statuses = {x.headers.get("cache-status") for x in answers}
check_eq(statuses, {"corral; fwd=miss; stored",
                    "corral; fwd=miss; collapsed"}, "stored and collapsed")

# The lease holder SIGKILLed mid-fill: once its lease runs out (the fill
# timeout: upstream timeout 2 s + 1 s), the other instance fetches; every
# client of the survivor gets an answer; at most 2 origin calls.
cfg_slow = config(redis.port)
cfg_slow["upstreams"]["o"]["timeout"] = "2s"
h = w.start_corral(cfg_slow)
s = w.start_corral(cfg_slow)
time.sleep(0.3)
origin.behave("/v/orphan", delay_ms=1500)


async def orphan():
    holder = asyncio.ensure_future(
        request(h.port, "/api/orphan", None, "GET", 10))
    await asyncio.sleep(0.3)  # h holds the lease and is fetching
    waiters = [asyncio.ensure_future(
        request(s.port, "/api/orphan", None, "GET", 15)) for _ in range(20)]
    await asyncio.sleep(0.3)
    h.proc.kill()
    got = await asyncio.gather(*waiters)
    try:
        await holder
    except Exception:
        pass
    return got
t0 = time.time()
got = asyncio.run(orphan())
check_eq({x.status for x in got}, {200}, "every survivor's client answered")
check_eq(len({x.body for x in got}), 1, "one body")
check(origin.calls("/v/orphan") <= 2, f"at most 2 origin calls: "
      f"{origin.calls('/v/orphan')}")
check(time.time() - t0 < 8, "bounded by the lease and one fetch")
h.proc.wait()
w.corrals.remove(h.proc)  # killed on purpose: no exit status to check

# Garbage and a foreign encoding under keys: misses, no crash.
redis.command("SET", "it:/api/junk", "garbage")
redis.command("SET", "it:/api/v9", b"CRV\x09" + b"x" * 60)
for k in ("junk", "v9"):
    r = b.get(f"/api/{k}")
    check_eq(r.status, 200, f"{k}: served from the origin")
    check_eq(r.json()["path"], f"/v/{k}", f"{k}: the origin's body")
    check_eq(origin.calls(f"/v/{k}"), 1, f"{k}: one call")

# Redis killed under load: every request is answered, cached keys from
# L1, new keys from the origin, and nothing hangs.
import threading


async def load():
    paths = [f"/api/{'one' if i % 2 else f'load{i}'}" for i in range(300)]
    return await asyncio.gather(*(
        request((a if i % 3 else b).port, p, None, "GET", 15)
        for i, p in enumerate(paths)))
killer = threading.Timer(0.05, redis.kill)
killer.start()
t0 = time.time()
got = asyncio.run(load())
killer.join()
check_eq({x.status for x in got}, {200}, "all 300 answered across the kill")
check(time.time() - t0 < 10, f"nothing hung: {time.time() - t0:.2f} s")

# Redis down: L1 keeps answering, new keys go to the origin at once.
redis.kill()
t0 = time.time()
check_eq(a.get("/api/one").status, 200, "cached key with Redis down")
check_eq(a.get("/api/new1").status, 200, "new key with Redis down")
check(time.time() - t0 < 2, "nothing hangs with Redis down")
check_eq(origin.calls("/v/new1"), 1, "new key: one origin call")
# Restarted on the same port: used again within a second.
redis.start()
time.sleep(1.0)
check_eq(a.get("/api/two").status, 200, "A fills after the restart")
cs = b.get("/api/two").headers.get("cache-status", "")
check(cs.endswith("detail=l2"), f"B reads L2 again: {cs}")
check_eq(origin.calls("/v/two"), 1, "one call after the restart")

# A Redis that accepts and never answers: every request completes within
# l2.timeout plus the upstream's time.
silent = socket.socket()
silent.bind(("127.0.0.1", 0))
silent.listen(64)
c = w.start_corral(config(silent.getsockname()[1], timeout="100ms"))
time.sleep(0.2)
for i in range(5):
    t0 = time.time()
    r = c.get(f"/api/silent{i}")
    took = time.time() - t0
    check_eq(r.status, 200, "served without L2")
    check(took < 1.5, f"bounded by l2.timeout: {took:.3f} s")
check(a.alive() and b.alive() and c.alive(), "all still up")
silent.close()
done("l2")
