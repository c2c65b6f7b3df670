#!/usr/bin/env python3
"""Issue 19, item 1: an upstream's rate and its Retry-After pause are one
per server, shared by its workers, without l2 as with it. workers: 2 and
rate 5/s under 30 req/s of distinct keys: no 1 s window of the origin's
arrival log holds more than 5 calls (each worker used to keep its own
window: up to 10). A 429 with Retry-After: 3 answered to one worker: no
call from either for 3 s (the other worker used to call on)."""
import asyncio
import time

from harness import (World, check, check_eq, done, max_in_window,
                     timed_request)

w = World()
origin = w.start_origin()


def arrivals(prefix, since=0.0):
    log = origin.control("GET", "/_origin/log")["requests"]
    return [r["t"] for r in log
            if r["path"].startswith(prefix) and r["t"] >= since]


def paced(port, paths, per_second, timeout=15):
    """One new connection per path, per_second of them a second."""
    async def all_():
        return await asyncio.gather(*(
            timed_request(port, p, i / per_second, timeout)
            for i, p in enumerate(paths)))
    return asyncio.run(all_())


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


c = w.start_corral({
    "workers": 2,
    "upstreams": {
        "rated": {"base": origin.base(), "timeout": "2s", "rate": "5/s",
                  "max_connections": 32},
        "lim": {"base": origin.base(), "timeout": "5s"},
    },
    "routes": [
        {"path": "/r/{k}", "upstream": "rated", "fetch": "/r/{k}"},
        {"path": "/p/{k}", "upstream": "lim", "fetch": "/p/{k}"},
    ],
})
deadline = time.time() + 10
while len(children(c.proc.pid)) < 2 and time.time() < deadline:
    time.sleep(0.05)
check_eq(len(children(c.proc.pid)), 2, "two workers")
time.sleep(0.3)  # both listening

# ---- rate 5/s, 30 req/s of distinct keys for 4 s, over both workers ----
results = paced(c.port, [f"/r/k{i}" for i in range(120)], 30)
statuses = [r.status for _, _, r in results]
check(set(statuses) <= {200, 503, 504},
      f"answers are 200, or 503 or 504 (over the rate): {set(statuses)}")
times = arrivals("/r/")
check_eq(len(times), statuses.count(200), "one call per key answered 200")
check(len(times) >= 15, f"the upstream was called ({len(times)} calls)")
check(max_in_window(times, 1.0) <= 5,
      f"at most 5 calls in any 1 s for the server "
      f"({max_in_window(times, 1.0)})")

# ---- a 429 with Retry-After: 3 pauses both workers ----
origin.behave("/p/x", status=429, retry_after=3)
r = c.get("/p/x")
check_eq(r.status, 503, "the 429 is a 503")
check_eq(r.headers.get("retry-after"), "3", "with the upstream's Retry-After")
paused_at = time.monotonic()
# 2.5 s of distinct keys, 20 a second, each on its own connection.
results = paced(c.port, [f"/p/k{i}" for i in range(50)], 20)
check_eq(arrivals("/p/k"), [], "no call from any worker while paused")
for sent, _, r in results:
    if sent - paused_at < 2.8:
        check_eq(r.status, 503, f"paused: 503 ({sent - paused_at:.2f} s in)")
        check(r.headers.get("retry-after") in ("1", "2", "3"),
              f"paused: Retry-After until the pause ends: {r.headers}")
time.sleep(max(0.0, 3.2 - (time.monotonic() - paused_at)))
check_eq(c.get("/p/after").status, 200, "calls again once the pause ends")

check(c.alive(), "corral still running")
done("rate_per_server")
