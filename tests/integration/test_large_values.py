"""Issue 17, large values: a value over l2.max_value_bytes (default 1 MB)
is kept in L1 only and counted; a huge blob planted under a key is never
transferred (the scripts check its length first), so it cannot stall the
other keys' reads on the pipelined connection, and the next fill of its
key overwrites it (doc/fleet.md). Whether 60 MB outlasts l2.timeout
depends on the machine; that Redis sent it does not: its own count of
bytes written says."""
import asyncio
import base64
import os
import time

from harness import (RedisError, check, check_eq, done, fleet_of_two, l2_name,
                     l2_split, status_or_error, timed_request)

origin, redis, a, b = fleet_of_two()

# 2 MB from the origin: served, kept in L1, not written to Redis. Random
# base64, which no coding brings under 1 MB (padding would gzip to 2 KB).
BIG = 2 * 1024 * 1024
noise = base64.b64encode(os.urandom(BIG)).decode()[:BIG - 8]
origin.behave("/v/big", body='{"r":"' + noise + '"}')
r = a.get("/api/big")
check_eq((r.status, len(r.body)), (200, BIG), "the 2 MB body is served")
r = a.get("/api/big")
cs = r.headers.get("cache-status", "")
check(cs.startswith("corral; hit") and "l2" not in cs, f"from L1: {cs}")
time.sleep(0.3)  # a write to Redis would have landed


def strings():
    """{name: length} of every string key under the prefix."""
    out = {}
    for name in redis.scan("t:*"):
        try:
            out[name] = redis.cmd("STRLEN", name)
        except RedisError:
            pass  # not a string
    return out


huge = {k: n for k, n in strings().items() if n >= BIG}
check(not huge, f"no value of that size in Redis: {huge}")
# doc/fleet.md says "counted", not under which name: any corral_l2_
# sample that names the size will do (corral_l2_too_large_total, or a
# result="too_large" label, say).
counted = {k: v for k, v in a.metrics().items()
           if k[0].startswith("corral_l2_") and
           any(word in (k[0] + repr(sorted(k[1]))).lower()
               for word in ("large", "big", "oversize", "over_max",
                            "max_value"))}
check(sum(counted.values()) >= 1,
      f"counted as too large for L2 in /metrics: {counted}")

# 20 keys in L2; 60 MB of junk planted under another. B reads the junk
# key and the 20 at once: the 20 are L2 hits all the same.
for i in range(20):
    check_eq(a.get(f"/api/k{i}").status, 200, f"A fills k{i}")
names = []
for _ in range(40):
    names = redis.scan("t:*/api/k0")
    if names:
        break
    time.sleep(0.05)
check_eq(len(names), 1, "k0's value found in Redis")
prefix, kind, k0 = l2_split(names[0])
junk_name = l2_name(prefix, kind, k0[:-len(b"/api/k0")] + b"/api/junk")
redis.cmd("SET", junk_name, b"x" * (60 * 1000 * 1000))


def redis_sent():
    """Bytes Redis has written to its clients, all together."""
    info = redis.cmd("INFO", "stats").decode()
    return int(info.split("total_net_output_bytes:")[1].split()[0])


sent = redis_sent()


async def reads():
    junk = asyncio.ensure_future(timed_request(b.port, "/api/junk"))
    keys = [timed_request(b.port, f"/api/k{i}", delay=0.02)
            for i in range(20)]
    return await junk, await asyncio.gather(*keys)
junk, got = asyncio.run(reads())
sent = redis_sent() - sent
check_eq({status_or_error(x[2]) for x in got}, {200}, "the 20 keys served")
misses = [i for i, x in enumerate(got) if status_or_error(x[2]) != 200 or
          not x[2].headers.get("cache-status", "").endswith("detail=l2")]
check(not misses, f"the 20 keys are L2 hits beside the junk: not {misses}")
extra = sum(origin.calls(f"/v/k{i}") for i in range(20)) - 20
check_eq(extra, 0, "no extra origin call for the 20 keys")
check(sent < 5 * 1000 * 1000, f"the junk was never transferred: Redis sent "
      f"{sent} bytes meanwhile")

# The junk key itself: refetched, and corral's value replaces the junk.
check(status_or_error(junk[2]) == 200 and
      junk[2].body.startswith(b'{"path": "/v/junk"'),
      f"the junk key answered with the origin's body: {junk[2]!r}"[:300])
check_eq(origin.calls("/v/junk"), 1, "the junk key refetched once")
value = None
for _ in range(60):
    value = redis.cmd("GETRANGE", junk_name, 0, 199)
    if value.startswith(b"CRV"):
        break
    time.sleep(0.05)
check(value.startswith(b"CRV") and b"/api/junk" in value,
      f"the junk overwritten with corral's value: {value[:40]!r}")
done("large_values")
