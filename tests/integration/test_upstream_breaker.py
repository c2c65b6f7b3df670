"""Issue 19, item 5: no upstream-level breaker. Backoff was per key, so an
upstream answering 500, asked for distinct keys at 100 req/s for 5 s, got
500 calls. Now, after 5 failures in a row (breaker_failures) across the
upstream's keys, its breaker opens: one probe per backoff step (1 s
doubling), every other client answered at once (503, Retry-After, the
breaker named; or a stale copy), and the first success closes it. One
breaker per server (workers: 2 share it) and, with l2, per fleet. The call
counts are checked against the probe schedule from the origin's arrival
log."""
import asyncio
import time

from harness import (World, check, check_eq, children, done, fleet_config,
                     require, status_or_error, timed_request)

N = 5          # breaker_failures, the default
STEP = 1.0     # limits.backoff_min, the default: probes 1, 2, 4 s apart
RATE = 100     # requests a second
SECONDS = 5.0

w = World()
origin = w.start_origin()
redis = w.start_redis()


def stream(ports, prefix, seconds=SECONDS, rate=RATE, first=0):
    """rate requests a second for seconds, each for a key of its own
    (/api/p/<prefix><i>); request i goes to ports[0] while i < first, then
    round robin. Returns (sent, answered, response) in order."""
    n = int(rate * seconds)

    def port(i):
        return ports[0] if i < first else ports[i % len(ports)]

    async def all_():
        t0 = time.monotonic()
        jobs = [timed_request(port(i), f"/api/p/{prefix}{i}",
                              delay=t0 + i / rate - time.monotonic())
                for i in range(n)]
        return await asyncio.gather(*jobs)
    return asyncio.run(all_())


def arrivals(prefix):
    log = origin.control("GET", "/_origin/log")["requests"]
    return [r["t"] for r in log if r["path"].startswith(f"/p/{prefix}")]


def check_schedule(name, prefix, got):
    """The calls of a run against the probe schedule: N failures, calls in
    flight when the breaker opened, then exactly one probe per due step
    (1, 2, 4 s ...) and nothing else. Returns when the breaker opened
    (origin's clock: the N-th call) and the last probe."""
    calls = arrivals(prefix)
    check(len(calls) >= N, f"{name}: {len(calls)} calls, at least {N}")
    t_open = calls[N - 1]
    # The client got the N-th error answer after the breaker opened; a
    # request sent before that may have been in flight.
    errors = sorted(end for _, end, r in got
                    if not isinstance(r, Exception) and r.status == 502)
    check(len(errors) >= N, f"{name}: {len(errors)} 502s, at least {N}")
    opened = errors[N - 1]
    in_flight = sum(1 for sent, _, _ in got if sent < opened) - N
    last_sent = max(sent for sent, _, _ in got)
    due, step, dues = t_open, STEP, []
    while due + step <= last_sent:
        due += step
        dues.append(due)
        step *= 2
    check(abs(due + step - last_sent) > 0.3 and
          all(abs(d - last_sent) > 0.3 for d in dues),
          f"{name}: no probe is due near the end of the run")
    bound = N + max(in_flight, 0) + len(dues)
    check(len(calls) <= bound,
          f"{name}: {len(calls)} calls; the probe schedule allows {bound} "
          f"({N} failures, {max(in_flight, 0)} in flight, {len(dues)} "
          f"probes)")
    probes = calls[len(calls) - len(dues):]
    check(len(calls) >= N + len(dues),
          f"{name}: {len(calls)} calls: {N} failures and {len(dues)} probes")
    for k, (t, d) in enumerate(zip(probes, dues)):
        check(d - 0.05 <= t <= d + 1.0,
              f"{name}: probe {k + 1} at {t - t_open:.3f} s after opening, "
              f"due at {d - t_open:.3f} s")
    refused = [(sent, end, r) for sent, end, r in got
               if not isinstance(r, Exception) and r.status == 503]
    check(len(refused) >= len(got) - bound,
          f"{name}: {len(refused)} of {len(got)} refused by the breaker")
    slow = [end - sent for sent, end, _ in refused if end - sent > 0.5]
    check(not slow, f"{name}: refused at once, {len(slow)} over 0.5 s")
    others = {status_or_error(r) for _, _, r in got} - {502, 503}
    check(not others, f"{name}: only 502 and 503, also {others}")
    return t_open, (probes[-1] if probes else t_open), len(dues)


def metric(c, name):
    return c.metrics().get((name, frozenset({("upstream", "o")})), -1)


ROUTES = [
    {"path": "/api/p/{k}", "upstream": "o", "fetch": "/p/{k}",
     "strategy": "1m"},
    {"path": "/api/s/{k}", "upstream": "o", "fetch": "/s/{k}",
     "strategy": "1s", "stale_if_error": "1m", "ttl_jitter": "0%",
     "early_refresh": 0},
]
cfg = {"upstreams": {"o": {"base": origin.base()}}, "routes": ROUTES}

# ---- one server: the schedule, answers, a stale copy, recovery ----
one = w.start_corral(cfg, admin=True)
check_eq(one.get("/api/s/warm").status, 200, "a copy to serve stale later")
check_eq(one.healthz().get("breakers_open"), [], "/healthz: none open")
check_eq(metric(one, "corral_upstream_breaker_state"), 0, "closed")
origin.behave("*", status=500)
got = stream([one.port], "a")
t_open, last_probe, n_probes = check_schedule("one server", "a", got)
refused = next((r for _, _, r in got
                if not isinstance(r, Exception) and r.status == 503), None)
check(refused is not None, "a client refused by the breaker")
if refused is not None:
    check("retry-after" in refused.headers, f"Retry-After: {refused.headers}")
    check_eq(refused.json().get("error"),
             "circuit breaker open: upstream o is failing",
             "the JSON error names the open breaker")
    check_eq(refused.json().get("route"), "/api/p/{k}", "and the route")

# The copy of /api/s/warm expired a while ago: it is served stale, and the
# open breaker costs no call.
before = origin.calls("/s/warm")
r = one.get("/api/s/warm")
check_eq(r.status, 200, "a stale copy while the breaker is open")
cs = r.headers.get("cache-status", "")
check("fwd=stale" in cs and cs.endswith("detail=upstream-error"),
      f"marked stale: {cs}")
check_eq(origin.calls("/s/warm"), before, "no call for it")

health = one.healthz()
check_eq(health.get("status"), "ok", "an open breaker is not unhealthy")
check_eq(health.get("breakers_open"), ["o"], "/healthz names the breaker")
check(metric(one, "corral_upstream_breaker_state") in (1, 2),
      "corral_upstream_breaker_state: open")
check_eq(metric(one, "corral_upstream_breaker_opened_total"), 1, "opened once")
check_eq(metric(one, "corral_upstream_breaker_probes_total"), n_probes,
         "a probe per step")
check(metric(one, "corral_upstream_breaker_refused_total") >= 400,
      "refused calls counted")

# Recovery: the next probe (a step of 4 s after the last) succeeds, the
# breaker closes and every later key is fetched again.
origin.behave("*")
due = last_probe + STEP * 2 ** n_probes
wait = due - time.monotonic()
check(wait > 0.3, f"the next probe is still ahead ({wait:.2f} s)")
got = stream([one.port], "r", seconds=wait + 1.5, rate=20)
ok = [(sent, end, r) for sent, end, r in got
      if not isinstance(r, Exception) and r.status == 200]
require(ok, "the upstream answers again")
first_ok = ok[0][0]
check(due - 0.1 <= first_ok <= due + 1.0,
      f"the first success is the probe: sent {first_ok - due:+.3f} s from "
      f"its due time")
after = [(sent, r) for sent, _, r in got if sent > ok[0][1]]
check(after and all(status_or_error(r) == 200 for _, r in after),
      f"every request after it is fetched: "
      f"{[status_or_error(r) for _, r in after][:10]}")
check_eq(len(arrivals("r")), len(ok), "one call per key since it closed")
check_eq(one.healthz().get("breakers_open"), [], "/healthz: closed again")
check_eq(metric(one, "corral_upstream_breaker_state"), 0, "closed again")
check_eq(metric(one, "corral_upstream_breaker_closed_total"), 1, "closed once")

# ---- workers: 2 share one breaker ----
two = w.start_corral(dict(cfg, workers=2), admin=True)
deadline = time.time() + 10
while len(children(two.proc.pid)) < 2 and time.time() < deadline:
    time.sleep(0.05)
time.sleep(0.5)  # both workers listening
for i in range(5):  # the kernel spreads connections, not always at once
    served = two.many(f"/api/p/both{i}", 200)
    check_eq({a.status for a in served}, {200}, "served")
    if origin.calls(f"/p/both{i}") == 2:
        break
check_eq(origin.calls(f"/p/both{i}"), 2, "both workers serve (one fill each)")
origin.behave("*", status=500)
got = stream([two.port], "w")
check_schedule("workers: 2", "w", got)
check_eq(metric(two, "corral_upstream_breaker_opened_total"), 1,
         "one breaker for the server, opened once")
origin.behave("*")

# ---- two instances sharing l2: one breaker for the fleet ----
fcfg = fleet_config(origin, redis.port, routes=ROUTES)
a, b = w.start_fleet(fcfg)
origin.behave("*", status=500)
# Instance a alone sees the first failures; then both share the stream.
got = stream([a.port, b.port], "f", first=20)
check_schedule("fleet of two", "f", got)
check_eq(b.healthz().get("breakers_open"), ["o"],
         "the other instance has it open too")
check_eq(metric(b, "corral_upstream_breaker_opened_total"), 1,
         "the fleet's word opened it")
done("upstream_breaker")
