"""Issue 17, purge and takeover: a purge during A's fill marked B's remote
wait as purged too, so when B took the lease over and fetched (after the
purge) it did not store, and the next request made a third call.
doc/fleet.md: a purge wins over a fill computing when it came, not over a
fill that starts computing after it (a remote waiter taking over stores
normally)."""
import asyncio
import time

from harness import (check, check_eq, done, fleet_of_two, status_or_error,
                     timed_request)

origin, redis, a, b = fleet_of_two()
origin.behave("/v/t", delay_ms=1000)


async def fill():
    holder = asyncio.ensure_future(timed_request(a.port, "/api/t"))
    waiters = [asyncio.ensure_future(timed_request(b.port, "/api/t",
                                                   delay=0.2))
               for _ in range(5)]
    await asyncio.sleep(0.5)
    purged = await asyncio.get_running_loop().run_in_executor(
        None, lambda: a.admin("DELETE", "/cache/api/t"))
    return purged, await holder, await asyncio.gather(*waiters)
purged, held, waited = asyncio.run(fill())
check_eq(purged.status, 200, f"the purge during A's fill: {purged}")
check_eq(status_or_error(held[2]), 200, "A's client answered")
check_eq({status_or_error(x[2]) for x in waited}, {200},
         "B's clients answered")
calls = origin.calls("/v/t")
check(calls <= 2, f"at most 2 origin calls for the fill and the purge: "
      f"{calls}")

# B's takeover fetched after the purge: it was stored.
time.sleep(0.2)
r = b.get("/api/t")
cs = r.headers.get("cache-status", "")
check_eq(r.status, 200, "B's next request")
check(cs.startswith("corral; hit"), f"B's next request is a hit: {cs}")
calls = origin.calls("/v/t")
check(calls <= 2, f"no third call: {calls} origin calls")
done("purge_takeover")
