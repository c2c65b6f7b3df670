#!/usr/bin/env python3
"""Issue 19 (6): early refresh (XFetch) counted a fill's wait for a rate
slot as the fill's time. With rate 1/s and an 8 s TTL, a first fill
queued 3 s made its value look 3 s expensive to compute, so hits refreshed
it early again and again (3 calls where 1 was due), on exactly the
upstreams whose calls are scarce. The value's fill time is the upstream
call's own: a hot key queued once is called once per TTL. Calls are
counted from the origin's arrival log."""
import asyncio
import threading
import time

from harness import World, check, check_eq, done, request

w = World()
origin = w.start_origin()
corral = w.start_corral({
    "upstreams": {"r": {"base": origin.base(), "timeout": "10s",
                        "rate": "1/s"}},
    "routes": [{"path": "/api/x/{k}", "upstream": "r", "fetch": "/x/{k}",
                "strategy": "8s", "ttl_jitter": "0%"}],
})


async def burst():
    return await asyncio.gather(*(request(corral.port, f"/api/x/k{i}", None,
                                          "GET", 30) for i in range(4)))

# Four cold keys at once: one call per second, the last queued some 3 s.
answers = asyncio.run(burst())
check_eq({a.status for a in answers}, {200}, "burst: all 200")
log = origin.control("GET", "/_origin/log")["requests"]
check_eq(len(log), 4, "burst: one call per key")
last = log[-1]["path"]
queued = log[-1]["t"] - log[0]["t"]
check(queued >= 2.5, f"burst: the last fill waited for its slot ({queued:.2f} s)")
filled = time.monotonic()

# The last key is hot from now: hammered for 6.5 s of its 8 s.
key = "/api/x/" + last.rsplit("/", 1)[1]
seen = []
stop = filled + 6.5


def hammer():
    while time.monotonic() < stop:
        seen.append(corral.get(key).status)


threads = [threading.Thread(target=hammer) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
check(len(seen) > 200, f"hot: requests made ({len(seen)})")
check_eq(set(seen), {200}, "hot: all 200")
calls = origin.calls(last)
check_eq(calls, 1, "hot: no early refresh long before expiry")

check(corral.alive(), "corral still running")
done("early_refresh_queue_time")
