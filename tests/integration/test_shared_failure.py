"""Issue 17, shared failure: a fill that fails must answer every waiter of
the fleet with its error, and the key must back off fleet-wide. Before,
each waiting instance took the lease over in turn and called the failing
origin again. doc/fleet.md: the release turns the lease into the failure
outcome for the backoff interval and publishes it; waiters everywhere get
the error at once, and an acquire that finds the outcome answers it."""
import asyncio

from harness import (World, check, check_eq, done, fleet_config,
                     status_or_error, timed_request)

w = World()
origin = w.start_origin()
redis = w.start_redis()
# A long first backoff step, so "the next second" is well inside it.
cfg = fleet_config(origin, redis.port, timeout="200ms",
                   limits={"backoff_min": "5s"})
fleet = [w.start_corral(cfg, admin=True) for _ in range(3)]
for c in fleet:
    check(c.wait_l2("up"), "every instance sees Redis")
origin.behave("/v/f", status=500, delay_ms=2000)


async def clients():
    jobs = [timed_request(fleet[0].port, "/api/f")]
    jobs += [timed_request(c.port, "/api/f", delay=0.1)
             for c in fleet for _ in range(5)]
    return await asyncio.gather(*jobs)
got = asyncio.run(clients())
first = min(start for start, _, _ in got)
statuses = [status_or_error(x[2]) for x in got]
check_eq(set(statuses), {502}, "every client gets the fill's error")
check_eq(origin.calls("/v/f"), 1, "one origin call for the fleet")
last = max(end for _, end, _ in got) - first
check(last < 3.0, f"all answered within 3 s of the first, with the one "
      f"failure: the last after {last:.2f} s")

# Within the next second, each instance answers from the fleet's backoff.
for i, c in enumerate(fleet):
    r = c.get("/api/f")
    check_eq(r.status, 502, f"instance {i}: the error again, backing off")
check_eq(origin.calls("/v/f"), 1, "still one origin call: the backoff is "
         "the fleet's")
done("shared_failure")
