#!/usr/bin/env python3
"""Issue 19, item 2: cold keys cannot starve a hot key. Rate 5/s, random
cold keys at 25 req/s (5x the rate) while one hot key (strategy 2 s,
stale-while-revalidate 30 s) is asked 10 times a second: the hot key is
still refreshed about once per ttl (its refreshes keep the default 25% of
the rate that cold misses cannot take; they used to queue behind every
cold miss and time out), and no hot-key client waits."""
import asyncio
import random
import string
import time

from harness import (World, check, check_eq, done, max_in_window,
                     timed_request)

w = World()
origin = w.start_origin()
c = w.start_corral({
    "upstreams": {"o": {"base": origin.base(), "timeout": "2s",
                        "rate": "5/s", "max_connections": 32}},
    "routes": [
        {"path": "/hot", "upstream": "o", "fetch": "/hot", "strategy": "2s",
         "stale_while_revalidate": "30s"},
        {"path": "/c/{k}", "upstream": "o", "fetch": "/c/{k}"},
    ],
})
check_eq(c.get("/hot").status, 200, "the hot key is stored")
check_eq(origin.calls("/hot"), 1, "one call")
time.sleep(1.1)  # a fresh window for the load

SECONDS = 12
TTL = 2.0


def rnd():
    return "".join(random.choice(string.ascii_lowercase) for _ in range(10))


async def load():
    cold = [timed_request(c.port, f"/c/{rnd()}", i / 25, 15)
            for i in range(25 * SECONDS)]
    hot = [timed_request(c.port, "/hot", i / 10, 15)
           for i in range(10 * SECONDS)]
    return await asyncio.gather(*(hot + cold))

start = time.monotonic()
results = asyncio.run(load())
hot = results[:10 * SECONDS]
cold = results[10 * SECONDS:]

# The cold flood was over the rate: most cold keys got 503 at once.
cold_status = [r.status for _, _, r in cold]
check(set(cold_status) <= {200, 503}, f"cold: 200 or 503 ({set(cold_status)})")
check(cold_status.count(503) > len(cold) / 2,
      f"cold: the flood was over the rate ({cold_status.count(503)} 503s)")

# Every hot-key client was answered at once, from a copy or fresh.
for sent, answered, r in hot:
    check_eq(r.status, 200, "hot: 200")
    check(answered - sent < 0.5,
          f"hot: no client waits ({answered - sent:.2f} s at "
          f"{sent - start:.1f} s, {r.headers.get('cache-status')})")

# The hot key was refreshed about once per ttl: a refresh starts at the
# first request after expiry and waits at most for a slot of its share.
log = origin.control("GET", "/_origin/log")["requests"]
hot_calls = [x["t"] for x in log if x["path"] == "/hot"][1:]
check(len(hot_calls) >= SECONDS / (TTL + 1.0) - 1,
      f"hot: refreshed {len(hot_calls)} times in {SECONDS} s (ttl {TTL} s)")
gaps = [b - a for a, b in zip(hot_calls, hot_calls[1:])]
check(not gaps or max(gaps) < 2 * TTL + 1.0,
      f"hot: refreshes never far apart ({[round(g, 2) for g in gaps]})")


times = [x["t"] for x in log]
check(max_in_window(times, 1.0) <= 5,
      f"never over the rate ({max_in_window(times, 1.0)} in 1 s)")

check(c.alive(), "corral still running")
done("refresh_share")
