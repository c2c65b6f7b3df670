#!/usr/bin/env python3
"""Freshness: stale-while-revalidate (one instance, and two sharing a
Redis), probabilistic early refresh of a hot key, stale-if-error."""
import asyncio
import threading
import time

from harness import World, check, check_eq, done, request

w = World()
origin = w.start_origin()
redis = w.start_redis()

ROUTES = [
    # Stale-while-revalidate, no early refresh: it must expire.
    {"path": "/api/swr", "upstream": "o", "fetch": "/swr", "strategy": "1s",
     "stale_while_revalidate": "30s", "early_refresh": 0, "ttl_jitter": "0%"},
    # A hot key refreshed early (beta 1, the default).
    {"path": "/api/hot", "upstream": "o", "fetch": "/hot", "strategy": "2s"},
    # Stale-if-error only.
    {"path": "/api/sie", "upstream": "o", "fetch": "/sie", "strategy": "1s",
     "stale_if_error": "1m", "early_refresh": 0, "ttl_jitter": "0%"},
]
UPSTREAMS = {"o": {"base": origin.base(), "timeout": "5s",
                   "max_connections": 16}}
corral = w.start_corral({"upstreams": UPSTREAMS, "routes": ROUTES})
l2 = {"redis": f"127.0.0.1:{redis.port}", "prefix": "fresh:"}
fleet = [w.start_corral({"upstreams": UPSTREAMS, "routes": ROUTES, "l2": l2})
         for _ in range(2)]


def burst(targets, n):
    """n concurrent clients spread over (corral, path) targets."""
    async def all_():
        return await asyncio.gather(*(
            request(targets[i % len(targets)][0].port,
                    targets[i % len(targets)][1], None, "GET", 30)
            for i in range(n)))
    return asyncio.run(all_())


def check_stale_burst(answers, old, what):
    check_eq({a.status for a in answers}, {200}, f"{what}: all 200")
    check_eq({a.body for a in answers}, {old}, f"{what}: all the old body")
    for a in answers:
        cs = a.headers.get("cache-status", "")
        check(cs.startswith("corral; hit; fwd=stale; ttl=-"),
              f"{what}: stale Cache-Status: {cs}")
        check(int(a.headers["age"]) >= 1, f"{what}: an honest Age: {a}")


# ---- stale-while-revalidate, one instance ----
origin.behave("/swr", body='{"v":1}')
first = corral.get("/api/swr")
check_eq(first.body, b'{"v":1}', "first fill")
time.sleep(1.3)
# The upstream is now slow and has news: 300 clients must not wait for it.
origin.behave("/swr", body='{"v":2}', delay_ms=2000)
t0 = time.time()
answers = corral.many("/api/swr", 300)
took = time.time() - t0
# Every answer is the old body, and all came well before the refresh (which
# brings v2 and takes 2 s) could land.
check_stale_burst(answers, b'{"v":1}', "swr")
check(took < 1.5, f"swr: 300 answers in {took:.2f} s, under the origin's 2 s")
check_eq(origin.calls("/swr"), 2, "exactly one refresh for 300 clients")
time.sleep(max(0, 2.4 - (time.time() - t0)))
fresh = corral.get("/api/swr")
check_eq(fresh.body, b'{"v":2}', "the refresh landed")
check(fresh.headers["cache-status"].startswith("corral; hit; ttl="),
      f"fresh again: {fresh.headers['cache-status']}")
check_eq(origin.calls("/swr"), 2, "still one refresh")

# ---- stale-while-revalidate across two instances sharing a Redis ----
origin.reset()
origin.behave("/swr", body='{"v":1}')
a, b = fleet
check_eq(a.get("/api/swr").body, b'{"v":1}', "fleet: a fills")
rb = b.get("/api/swr")
check_eq(rb.body, b'{"v":1}', "fleet: b reads L2")
check("detail=l2" in rb.headers["cache-status"], f"fleet: {rb.headers}")
time.sleep(1.3)
origin.behave("/swr", body='{"v":2}', delay_ms=2000)
t0 = time.time()
answers = burst([(a, "/api/swr"), (b, "/api/swr")], 300)
took = time.time() - t0
check_stale_burst(answers, b'{"v":1}', "fleet swr")
check(took < 1.5, f"fleet swr: 300 answers in {took:.2f} s, under 2 s")
time.sleep(max(0, 2.6 - (time.time() - t0)))
check_eq(origin.calls("/swr"), 2, "fleet: one refresh for both instances")
for c in (a, b):
    check_eq(c.get("/api/swr").body, b'{"v":2}', "fleet: both fresh again")
check_eq(origin.calls("/swr"), 2, "fleet: still one refresh")

# ---- early refresh: a hot key never expires ----
origin.behave("/hot", body='{"hot":true}', delay_ms=50)
check_eq(corral.get("/api/hot").status, 200, "hot: first fill")
seen = []
stop = time.time() + 7.0


def hammer():
    async def loop():
        reader, writer = await asyncio.open_connection("127.0.0.1",
                                                       corral.port)
        from harness import read_response
        try:
            while time.time() < stop:
                writer.write(b"GET /api/hot HTTP/1.1\r\nHost: x\r\n\r\n")
                await writer.drain()
                r = await asyncio.wait_for(read_response(reader), 10)
                seen.append((r.status, r.headers.get("cache-status", "")))
        finally:
            writer.close()
    asyncio.run(loop())


threads = [threading.Thread(target=hammer) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
check(len(seen) > 100, f"hot: requests made ({len(seen)})")
check_eq({s for s, _ in seen}, {200}, "hot: all 200")
kinds = {cs.split(";")[1].strip() for _, cs in seen}
check_eq(kinds, {"hit"}, "hot: only hits, never a miss")
check(not any("fwd=" in cs for _, cs in seen), "hot: never stale or a miss")
calls = origin.calls("/hot")
# 7 s at a 2 s ttl (less up to 10% jitter, refreshed early by about
# delta * ln(request rate * delta), here some 0.2 s): about one call per
# period, never one per request.
check(3 <= calls <= 7, f"hot: about one upstream call per ttl ({calls})")

# ---- stale-if-error ----
origin.behave("/sie", body='{"sie":1}')
check_eq(corral.get("/api/sie").status, 200, "sie: first fill")
origin.behave("/sie", status=503)
time.sleep(1.2)
answers = corral.many("/api/sie", 20)
check_eq({a.status for a in answers}, {200}, "sie: 200 from stale")
check_eq({a.body for a in answers}, {b'{"sie":1}'}, "sie: the old body")
# The fill's own clients, and any that came after it failed (backoff).
statuses = {a.headers["cache-status"] for a in answers}
check("corral; hit; fwd=stale; ttl=-1; detail=upstream-error" in statuses and
      statuses <= {"corral; hit; fwd=stale; ttl=-1; detail=upstream-error",
                   "corral; hit; fwd=stale; ttl=-1; detail=backoff"},
      f"sie: Cache-Status says why: {statuses}")
check_eq(origin.calls("/sie"), 2, "sie: one failed call for 20 clients")
# The key backs off meanwhile: still stale, no call.
check_eq(corral.get("/api/sie").body, b'{"sie":1}', "sie: stale in backoff")
check_eq(origin.calls("/sie"), 2, "sie: no call while backing off")

for c in [corral] + fleet:
    check(c.alive(), "corral still running")
done("freshness")
