"""Issue 17, generations lost with Redis's data: after a restart without
persistence or a FLUSHALL, the running instances kept their route
generations (~2~) while a new instance keyed without one, so every key
cost two calls and the new instance's route purges missed the others.
doc/fleet.md: a new epoch makes the running instances write their
generations back (Redis keeps the larger), a new instance reads them
before it serves, and a route purge raises max(Redis's, its own)."""
import json
import time

from harness import RedisError, World, check, check_eq, done, fleet_config

w = World()
origin = w.start_origin()
redis = w.start_redis()
cfg = fleet_config(origin, redis.port, timeout="200ms")
ROUTE = "/route/api/%7Bk%7D"
a, b = w.start_fleet(cfg)

for n in (1, 2):
    r = a.admin("DELETE", ROUTE)
    check_eq(r.status, 200, f"route purge {n}: {r}")
    check_eq(r.json().get("generation"), n, f"route purge {n}: generation")
time.sleep(0.2)
check_eq(a.get("/api/g").status, 200, "A fills g at generation 2")
cs = b.get("/api/g").headers.get("cache-status", "")
check(cs.endswith("detail=l2"), f"B is at generation 2 too: {cs}")


def wait_gens(at_least):
    """Until Redis has the route's generation back (doc/fleet.md keeps it
    in the hash P{fleet}gens), at most 5 s; the checks below say what counts."""
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            g = redis.cmd("HGET", "t:{fleet}gens", "/api/{k}")
        except (RedisError, OSError):
            g = None
        if g is not None and int(g) >= at_least:
            return
        time.sleep(0.1)


def one_fleet(old, new, key, what):
    """A key filled on old is found by new: one origin call; then a route
    purge through new reaches every old instance."""
    check_eq(old[0].get(f"/api/{key}").status, 200, f"{what}: old fills")
    r = new.get(f"/api/{key}")
    check_eq(r.status, 200, f"{what}: the new instance answers")
    check_eq(origin.calls(f"/v/{key}"), 1,
             f"{what}: a key requested on an old instance, then on the new "
             f"one, costs 1 origin call (the same generation)")
    for c in old[1:]:
        check_eq(c.get(f"/api/{key}").status, 200, f"{what}: cached")
    r = new.admin("DELETE", ROUTE)
    check_eq(r.status, 200, f"{what}: route purge through the new instance")
    origin.behave(f"/v/{key}", body=json.dumps({"v": "new"}))
    for i, c in enumerate(old):
        deadline = time.monotonic() + 2.0
        body = None
        while time.monotonic() < deadline:
            body = c.get(f"/api/{key}").body
            if body == b'{"v": "new"}':
                break
            time.sleep(0.1)
        check_eq(body, b'{"v": "new"}',
                 f"{what}: the new instance's route purge reached old "
                 f"instance {i}: it refetches")


# Redis restarted empty: the running instances write 2 back; a new one
# starts at 2.
redis.restart(persist=False)
wait_gens(2)
c = w.start_corral(cfg, admin=True)
check(c.wait_l2("up"), "C sees Redis")
one_fleet([a, b], c, "x1", "restart")

# FLUSHALL: the same, for a fleet of three and a fourth instance.
redis.cmd("FLUSHALL")
wait_gens(3)
d = w.start_corral(cfg, admin=True)
check(d.wait_l2("up"), "D sees Redis")
one_fleet([a, b, c], d, "x2", "FLUSHALL")
done("generations_flush")
