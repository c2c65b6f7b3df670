"""Issue 17, ghost lease: Redis stopped (SIGSTOP) while an instance asks
for a key's lease. The lease reply times out, so the instance fills on its
own; when Redis resumes, the queued lease command still runs. Nobody holds
that lease, so it must not outlive a second (doc/fleet.md: a lease lives
1 s unless its holder renews it, and a late grant is given back at once),
and after a purge the fleet's clients must not wait for it to run out."""
import asyncio
import time

from harness import (check, check_eq, done, fleet_of_two, status_or_error,
                     timed_request)

origin, redis, a, b = fleet_of_two()

# Redis stalls; one request for a cold key. Its lease reply times out and
# A fills on its own (Redis could not tell).
redis.stop()
sent = time.monotonic()
r = a.get("/api/ghost", timeout=15)
check_eq(r.status, 200, "A answers during the stall")
check_eq(r.json()["path"], "/v/ghost", "with the origin's body")
# CONT 0.5 s after the request, when the lease reply had long timed out.
time.sleep(max(0.1, sent + 0.5 - time.monotonic()))
redis.cont()
time.sleep(1.5)

# No lease outlives a second. A failure outcome ("F:...") is not a lease
# anyone waits on; anything else under a lease name is a holder's, and
# nobody holds this key.
leases = redis.scan("t:{*}l:*")
for k in leases:
    v = redis.cmd("GET", k)
    pttl = redis.cmd("PTTL", k)
    if v is None or v.startswith(b"F:"):
        continue
    check(pttl <= 1000,
          f"a lease nobody holds: {k!r} = {v!r}, PTTL {pttl} ms, "
          f"1.5 s after Redis resumed")

# Purged, the key is cold again: 20 clients over both instances are all
# answered, one fill for the fleet, without waiting on a dead lease.
r = a.admin("DELETE", "/cache/api/ghost")
check_eq(r.status, 200, f"purge: {r}")


async def burst():
    return await asyncio.gather(*(
        timed_request((a if i % 2 else b).port, "/api/ghost", timeout=15)
        for i in range(20)))
got = asyncio.run(burst())
bad = [x for x in got if status_or_error(x[2]) != 200]
check(not bad, f"all 20 answered 200: {bad[:3]}")
slowest = max(end - start for start, end, _ in got)
check(slowest < 3.0, f"all 20 answered within 3 s, not after the ghost "
      f"lease ran out: the slowest took {slowest:.2f} s")
done("ghost_lease")
