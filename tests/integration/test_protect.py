#!/usr/bin/env python3
"""Protecting the upstream: per-key failure backoff, Retry-After pauses
(delta-seconds and HTTP-date, and across two instances sharing a Redis),
the sliding-window rate (one instance and a fleet), and the FIFO queue of
max_connections with its wait counted against the timeout. Times are
asserted from the origin's own arrival log."""
import asyncio
import email.utils
import threading
import time

from harness import World, check, check_eq, done, max_in_window, request

w = World()
origin = w.start_origin()
redis = w.start_redis()


def arrivals(prefix):
    """Arrival times (origin's monotonic clock) of calls whose path starts
    with prefix, in order."""
    log = origin.control("GET", "/_origin/log")["requests"]
    return [r["t"] for r in log if r["path"].startswith(prefix)]


def concurrent(targets):
    """One client per (corral, path), all at once; answers in order."""
    async def all_():
        return await asyncio.gather(*(request(c.port, p, None, "GET", 30)
                                      for c, p in targets))
    return asyncio.run(all_())


UPSTREAMS = {
    "dead": {"base": origin.base(), "timeout": "5s"},
    "lim": {"base": origin.base(), "timeout": "5s"},
    "rated": {"base": origin.base(), "timeout": "10s", "rate": "5/s",
              "max_connections": 32},
    "strict": {"base": origin.base(), "timeout": "1s", "rate": "1/5s"},
    "one": {"base": origin.base(), "timeout": "1s", "max_connections": 1},
}
ROUTES = [
    {"path": "/api/dead", "upstream": "dead", "fetch": "/dead"},
    {"path": "/api/lim/{k}", "upstream": "lim", "fetch": "/lim/{k}",
     "strategy": "1s", "stale_if_error": "1m", "early_refresh": 0,
     "ttl_jitter": "0%"},
    {"path": "/api/rated/{k}", "upstream": "rated", "fetch": "/rated/{k}"},
    {"path": "/api/strict/{k}", "upstream": "strict", "fetch": "/strict/{k}"},
    {"path": "/api/one/{k}", "upstream": "one", "fetch": "/one/{k}"},
]
LIMITS = {"backoff_min": "200ms", "backoff_max": "800ms"}
corral = w.start_corral({"upstreams": UPSTREAMS, "routes": ROUTES,
                         "limits": LIMITS})

# ---- failure backoff: one probe per step while 100 clients ask ----
origin.behave("/dead", status=500)
answers = []
stop = time.time() + 3.0


def asker():
    while time.time() < stop:
        answers.append(corral.get("/api/dead"))
        time.sleep(0.01)


threads = [threading.Thread(target=asker) for _ in range(10)]
for t in threads:
    t.start()
burst = corral.many("/api/dead", 100)
for t in threads:
    t.join()
answers += burst
check_eq({a.status for a in answers}, {502}, "dead: every answer 502")
check_eq(len({a.body for a in answers}), 1, "dead: the remembered body")
held = [a for a in answers if "retry-after" in a.headers]
check(len(held) > len(answers) / 2, "dead: most answers from the backoff")
times = arrivals("/dead")
check(3 <= len(times) <= 7, f"dead: one call per step ({len(times)} calls)")
for i in range(1, len(times)):
    step = min(0.2 * 2 ** (i - 1), 0.8)
    gap = times[i] - times[i - 1]
    check(gap >= step * 0.75 - 0.02,
          f"dead: call {i} came {gap:.3f} s after the last (step {step})")
# It heals: within one step the key is filled again.
origin.behave("/dead", status=200, body='{"alive":true}')
time.sleep(0.85)
ok = corral.get("/api/dead")
check_eq(ok.status, 200, "dead: recovers after the origin heals")
check_eq(ok.body, b'{"alive":true}', "dead: the new body")

# ---- 429 with Retry-After: 2 pauses the whole upstream ----
origin.behave("/lim/a", body='{"a":1}')
check_eq(corral.get("/api/lim/a").status, 200, "lim: a filled")
origin.behave("/lim/b", status=429, retry_after=2)
origin.behave("/lim/c", body='{"c":1}')
t0 = time.time()
r = corral.get("/api/lim/b")
check_eq(r.status, 503, "lim: a 429 is a 503")
check_eq(r.headers.get("retry-after"), "2", "lim: the upstream's Retry-After")
calls = origin.total()
time.sleep(1.1)  # a has expired: stale-if-error serves it
while time.time() - t0 < 1.8:
    rc = corral.get("/api/lim/c")
    check_eq(rc.status, 503, "lim: paused: another key is not fetched")
    check(rc.headers.get("retry-after") in ("1", "2"),
          f"lim: Retry-After while paused: {rc.headers}")
    ra = corral.get("/api/lim/a")
    check_eq(ra.body, b'{"a":1}', "lim: paused: a stale value is served")
    check(ra.headers["cache-status"] in
          ("corral; hit; fwd=stale; ttl=-1; detail=upstream-error",
           "corral; hit; fwd=stale; ttl=-1; detail=backoff"),
          f"lim: stale because of the pause: {ra.headers}")
    time.sleep(0.1)
check_eq(origin.total(), calls, "lim: zero origin calls during the pause")
time.sleep(max(0, 2.1 - (time.time() - t0)))
check_eq(corral.get("/api/lim/c").status, 200, "lim: calls resume after it")

# The HTTP-date form: a 503 with Retry-After 3 s from now.
when = email.utils.formatdate(time.time() + 3, usegmt=True)
origin.behave("/lim/d", status=503, headers={"Retry-After": when})
t0 = time.time()
r = corral.get("/api/lim/d")
check_eq(r.status, 503, "lim date: 503")
check(r.headers.get("retry-after") in ("2", "3"), f"lim date: {r.headers}")
calls = origin.total()
while time.time() - t0 < 1.8:
    check_eq(corral.get("/api/lim/e").status, 503, "lim date: paused")
    time.sleep(0.1)
check_eq(origin.total(), calls, "lim date: zero calls during the pause")
time.sleep(max(0, 3.2 - (time.time() - t0)))
check_eq(corral.get("/api/lim/e").status, 200, "lim date: resumes")

# ---- rate 5/s: 20 cold keys at once ----
origin.reset()
answers = corral.many(None, 20, paths=[f"/api/rated/k{i}" for i in range(20)])
check_eq({a.status for a in answers}, {200}, "rated: every key answered")
times = arrivals("/rated/")
check_eq(len(times), 20, "rated: one call per key")
check(max_in_window(times, 1.0) <= 5,
      f"rated: at most 5 calls in any 1 s ({max_in_window(times, 1.0)})")
check(times[-1] - times[0] >= 3.0, "rated: spread over 3+ s")

# Over budget for longer than the timeout: 503 with Retry-After, at once
# (test_certain_503 times it).
answers = concurrent([(corral, "/api/strict/a"), (corral, "/api/strict/b")])
check_eq(sorted(a.status for a in answers), [200, 503],
         "strict: the second's slot lies beyond its timeout: 503")
late = [a for a in answers if a.status == 503][0]
check(int(late.headers.get("retry-after", "0")) >= 3,
      f"strict: Retry-After until a slot frees: {late.headers}")
check_eq(len(arrivals("/strict/")), 1, "strict: one call")

# ---- max_connections 1: FIFO, the queue wait counts against 1 s ----
for k in "abc":
    origin.behave(f"/one/{k}", body=f'{{"k":"{k}"}}', delay_ms=400)
res = {}


def one(k, after):
    time.sleep(after)
    res[k] = corral.get(f"/api/one/{k}")


threads = [threading.Thread(target=one, args=(k, i * 0.05))
           for i, k in enumerate("abc")]
for t in threads:
    t.start()
for t in threads:
    t.join()
check_eq(res["a"].status, 200, "one: first in line")
check_eq(res["b"].status, 200, "one: second, after the first")
check_eq(res["c"].status, 504, "one: third waits past its timeout: 504")
order = [r["path"] for r in origin.control("GET", "/_origin/log")["requests"]
         if r["path"].startswith("/one/")]
check_eq(order[:2], ["/one/a", "/one/b"], "one: FIFO order")

# ---- the fleet: the window and the pause are shared through Redis ----
l2 = {"redis": f"127.0.0.1:{redis.port}", "prefix": "prot:"}
fleet = [w.start_corral({"upstreams": UPSTREAMS, "routes": ROUTES,
                         "limits": LIMITS, "l2": l2}) for _ in range(2)]
origin.reset()
targets = [(fleet[i % 2], f"/api/rated/f{i}") for i in range(12)]
answers = concurrent(targets)
check_eq({a.status for a in answers}, {200}, "fleet rated: all answered")
times = arrivals("/rated/")
check_eq(len(times), 12, "fleet rated: one call per key")
check(max_in_window(times, 1.0) <= 5,
      f"fleet rated: at most 5 in any 1 s ({max_in_window(times, 1.0)})")
origin.behave("/lim/x", status=429, retry_after=2)
check_eq(fleet[0].get("/api/lim/x").status, 503, "fleet pause: 429 on a")
calls = origin.total()
time.sleep(0.1)
r = fleet[1].get("/api/lim/y")
check_eq(r.status, 503, "fleet pause: b does not call either")
check(r.headers.get("retry-after") in ("1", "2"), f"fleet pause: {r.headers}")
check_eq(origin.total(), calls, "fleet pause: zero calls from b")

for c in [corral] + fleet:
    check(c.alive(), "corral still running")
done("protect")
