"""Issue 17, Redis as operators run it: a database that does not exist
stops corral at start; /healthz reports Redis down when every command
fails (NOAUTH, OOM), not only when the connection is gone; fleets on two
databases of one Redis do not hear each other's purges; a stalled Redis
costs a cold miss one l2.timeout, not one per command; and a long stall
logs one "down" and one "up", not a line per reconnect (doc/fleet.md,
"Connections" and "Keys and channels")."""
import itertools
import json
import re
import subprocess
import time

from harness import (CORRAL, World, check, check_eq, done, fleet_config,
                     free_port)

w = World()
origin = w.start_origin()
redis = w.start_redis()

# db 99 on a Redis with 16: a configuration error, not an outage.
path = w.write_config(dict(fleet_config(origin, redis.port, l2={"db": 99}),
                           listen=f"127.0.0.1:{free_port()}"), "db99.json")
p = subprocess.Popen([CORRAL, "-c", path], stderr=subprocess.PIPE)
try:
    _, err = p.communicate(timeout=10)
except subprocess.TimeoutExpired:
    p.kill()
    _, err = p.communicate()
    err = b"(still running after 10 s) " + err
err = err.decode(errors="replace")
check(p.returncode not in (0, None) and p.returncode > 0,
      f"db 99: corral exits non-zero at start: {p.returncode}, {err[-300:]}")
check(re.search(r"select|\bdb\b|l2\.db", err, re.I) is not None,
      f"db 99: the error names SELECT or the db: {err[-300:]}")

# Every command failing is Redis down, whatever the connection says.
x = w.start_corral(fleet_config(origin, redis.port), admin=True)
check(x.wait_l2("up"), "x sees Redis")
keys = itertools.count()


def poke():
    """A cold miss: commands for Redis to answer (or not)."""
    x.get(f"/api/poke{next(keys)}", timeout=10)


redis.cmd("CONFIG", "SET", "requirepass", "x")
redis.password = "x"
redis.client_kill("normal")  # corral's connections, not this one
# Down for good, not for the moment between the kill and the reconnect:
# traffic for 1.5 s first, then down within the next 1.5 s.
until = time.monotonic() + 1.5
while time.monotonic() < until:
    poke()
check(x.wait_l2("down", 1.5, poke),
      f"requirepass, no password: /healthz says l2 down within 3 s: "
      f"{x.healthz()}")
redis.cmd("CONFIG", "SET", "requirepass", "")
redis.password = None
check(x.wait_l2("up", 10.0, poke), "no password again: l2 up")

redis.cmd("CONFIG", "SET", "maxmemory-policy", "noeviction")
redis.cmd("CONFIG", "SET", "maxmemory", "1")
check(x.wait_l2("down", 3.0, poke),
      f"OOM on every write: /healthz says l2 down within 3 s: {x.healthz()}")
redis.cmd("CONFIG", "SET", "maxmemory", "0")
check(x.wait_l2("up", 10.0, poke), "memory again: l2 up")

# Two fleets, db 1 and db 2 of one Redis, the same prefix: a purge in one
# leaves the other's copy alone.
f1 = w.start_corral(fleet_config(origin, redis.port, l2={"db": 1}),
                    admin=True)
f2 = w.start_corral(fleet_config(origin, redis.port, l2={"db": 2}),
                    admin=True)
for c in (f1, f2):
    check(c.wait_l2("up"), "both fleets see Redis")
    check_eq(c.get("/api/d").status, 200, "each fleet caches /api/d")
check_eq(origin.calls("/v/d"), 2, "one call per fleet (per database)")
old = f2.get("/api/d").body
check_eq(f1.admin("DELETE", "/cache/api/d").status, 200, "purge on db 1")
origin.behave("/v/d", body=json.dumps({"v": "new"}))
time.sleep(0.5)
r = f2.get("/api/d")
check_eq(r.body, old, "db 2's fleet keeps its copy")
cs = r.headers.get("cache-status", "")
check(cs.startswith("corral; hit") and "l2" not in cs,
      f"db 2's fleet did not drop its L1 copy: {cs}")

# Redis stalled, with a rate (an admission to ask too): a cold miss waits
# one l2.timeout. Then 5 s of stall under traffic log one "down" and,
# once Redis answers again, one "up".
z = w.start_corral(fleet_config(origin, redis.port, timeout="300ms",
                                upstream={"rate": "100/s"}),
                   admin=True, log=True)
check(z.wait_l2("up"), "z sees Redis")
logged = len(z.log())
redis.stop()
stalled = time.monotonic()
t0 = time.monotonic()
r = z.get("/api/e0", timeout=10)
took = time.monotonic() - t0
check_eq(r.status, 200, "a cold miss with Redis stalled is served")
check(took <= 0.3 * 1.5 + 0.15, f"within one l2.timeout (300 ms) and the "
      f"origin's time, not one per command: {took:.2f} s")
for i in range(1, 1000):
    if time.monotonic() >= stalled + 5.0:
        break
    z.get(f"/api/e{i}", timeout=10)
    time.sleep(0.05)
redis.cont()
end = time.monotonic() + 1.5
for i in range(1000, 2000):
    if time.monotonic() >= end:
        break
    z.get(f"/api/e{i}", timeout=10)
    time.sleep(0.05)
lines = [ln for ln in z.log()[logged:].splitlines()
         if re.search(r"redis|l2", ln, re.I) and
         re.search(r"\b(down|up)\b", ln)]
check(len(lines) <= 2, f"a 5 s stall logs at most 2 l2 state lines, not "
      f"{len(lines)}: {lines[:4]}")
done("redis_ops")
