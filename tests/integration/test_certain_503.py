#!/usr/bin/env python3
"""Issue 19, item 4: a cold miss whose slot in the upstream's rate lies
beyond its timeout is answered 503 with Retry-After at once, instead of
after waiting the whole timeout for a 503 that was certain. Calls whose
slot comes in time still wait for it and are answered 200."""
import asyncio
import time

from harness import World, check, check_eq, done, timed_request

w = World()
origin = w.start_origin()
c = w.start_corral({
    "upstreams": {
        "strict": {"base": origin.base(), "timeout": "3s", "rate": "1/10s"},
        "rated": {"base": origin.base(), "timeout": "2s", "rate": "5/s",
                  "max_connections": 32},
    },
    "routes": [
        {"path": "/s/{k}", "upstream": "strict", "fetch": "/s/{k}"},
        {"path": "/r/{k}", "upstream": "rated", "fetch": "/r/{k}"},
    ],
})

# rate 1/10s: the second key's slot is ~10 s away, its timeout 3 s.
check_eq(c.get("/s/a").status, 200, "the first key is fetched")
t0 = time.monotonic()
r = c.get("/s/b")
took = time.monotonic() - t0
check_eq(r.status, 503, "the second is over the rate")
check(took < 1.0, f"answered at once, not after the 3 s timeout ({took:.2f} s)")
check(int(r.headers.get("retry-after", "0")) >= 8,
      f"Retry-After until the slot frees: {r.headers}")
check_eq(origin.calls("/s/b"), 0, "no call for it")


# rate 5/s, 30 req/s of distinct keys for 3 s: the ones that fit in the
# 2 s timeout wait and get 200; every 503 comes at once.
async def load():
    return await asyncio.gather(*(
        timed_request(c.port, f"/r/k{i}", i / 30, 15) for i in range(90)))

results = asyncio.run(load())
ok = [(a - s) for s, a, r in results if r.status == 200]
busy = [(a - s, r) for s, a, r in results if r.status == 503]
check_eq(len(ok) + len(busy), 90, "every answer 200 or 503")
check(len(ok) >= 10, f"those that fit were served ({len(ok)})")
check(len(busy) >= 40, f"the rest were refused ({len(busy)})")
slowest = max(t for t, _ in busy)
check(slowest < 1.0,
      f"every 503 at once, well under the 2 s timeout (slowest {slowest:.2f} s)")
check(all(r.headers.get("retry-after") for _, r in busy),
      "every 503 says when to come back")
check(max(ok) < 2.5, f"a 200 waited at most its timeout ({max(ok):.2f} s)")
check_eq(origin.total(), 1 + len(ok), "one call per key served, no other")

check(c.alive(), "corral still running")
done("certain_503")
