"""Issue 17, admission serialized: with L2, every upstream call was
admitted by its own Redis EVAL, one at a time per upstream, even with no
rate configured, so a far Redis made cold misses queue (and time out as
503). doc/fleet.md: with no rate there is no admission round trip; with a
rate, admissions are pipelined (up to 64 in flight per upstream). Redis is
put 30 ms of round trip away by tools/delay-proxy: the bounds below count
round trips, they do not time corral."""
import asyncio
import statistics

from harness import (World, check, check_eq, done, fleet_config,
                     status_or_error, timed_request)

w = World()
origin = w.start_origin()
redis = w.start_redis()
far = w.start_delay_proxy(redis.port, 30)
cfg = fleet_config(origin, far, timeout="500ms",
                   upstream={"timeout": "3s", "max_connections": 32},
                   routes=[{"path": "/api/{k}", "upstream": "o",
                            "fetch": "/v/{k}", "strategy": "1m"},
                           {"path": "/rated/{k}", "upstream": "r",
                            "fetch": "/r/{k}", "strategy": "1m"}])
cfg["upstreams"]["r"] = {"base": origin.base(), "timeout": "3s",
                         "max_connections": 32, "rate": "1000/s"}
a = w.start_corral(cfg, admin=True)
check(a.wait_l2("up"), "corral sees Redis through the proxy")


def burst(prefix):
    async def run():
        return await asyncio.gather(*(
            timed_request(a.port, f"/{prefix}/k{i}", timeout=20)
            for i in range(100)))
    got = asyncio.run(run())
    statuses = [status_or_error(x[2]) for x in got]
    took = [end - start for start, end, _ in got]
    return statuses, statistics.median(took)


# No rate: one Redis round trip before each upstream call, all at once.
statuses, p50 = burst("api")
check_eq(statuses.count(503), 0, "no rate: no 503 upstream busy")
check_eq(set(statuses), {200}, "no rate: 100 cold keys all 200")
check(p50 < 0.5, f"no rate: p50 {p50:.2f} s, at 30 ms a round trip (not "
      f"one EVAL at a time)")
check_eq(origin.total(), 100, "one origin call per key")

# rate 1000/s: 100 calls fit; admissions are pipelined.
statuses, p50 = burst("rated")
check_eq(set(statuses), {200}, "rate 1000/s: 100 cold keys all 200")
check(p50 < 1.0, f"rate 1000/s: p50 {p50:.2f} s (pipelined admissions)")
done("admission_pipelined")
