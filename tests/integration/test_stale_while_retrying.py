#!/usr/bin/env python3
"""Issue 19 (3): no client waits on a fill while a copy inside a stale
window can be served. Inside stale_if_error, each try after a backoff step
was a fill with clients waiting on it: against a hanging origin (timeout
1 s) they waited the whole timeout, and the copy came out only when the
try failed again; a failed key whose try was queued for a rate slot kept
its clients waiting for the slot. Now, once the key has failed, its
clients get the copy at once while the try runs (Cache-Status
"fwd=stale; detail=revalidating"), and during the backoff steps
("detail=backoff"). Latencies are bounded generously; calls are counted
from the origin's arrival log."""
import threading
import time

from harness import World, check, check_eq, done

# "At once": far below the 1 s a hanging try takes (and the 2 s a queued
# one waits), with room for a loaded machine's scheduling.
AT_ONCE = 0.5

w = World()
origin = w.start_origin()

UPSTREAMS = {
    "hang": {"base": origin.base(), "timeout": "1s"},
    "rated": {"base": origin.base(), "timeout": "5s", "rate": "1/2s"},
}
SIE = {"strategy": "1s", "stale_if_error": "1m", "early_refresh": 0,
       "ttl_jitter": "0%"}
ROUTES = [
    {"path": "/api/hang", "upstream": "hang", "fetch": "/hang", **SIE},
    {"path": "/api/rated/{k}", "upstream": "rated", "fetch": "/rated/{k}",
     **SIE},
]
corral = w.start_corral({"upstreams": UPSTREAMS, "routes": ROUTES,
                         "limits": {"backoff_min": "1s",
                                    "backoff_max": "4s"}})


def timed_get(path):
    t = time.monotonic()
    r = corral.get(path, timeout=10)
    return time.monotonic() - t, r


def arrivals(path):
    log = origin.control("GET", f"/_origin/log?path={path}")["requests"]
    return [r["t"] for r in log]


# ---- a hanging origin: several seconds of clients across the retries ----
origin.behave("/hang", body='{"v":1}')
check_eq(corral.get("/api/hang").body, b'{"v":1}', "hang: first fill")
origin.behave("/hang", hang=True)
time.sleep(1.1)
# The first failure is news: its clients wait for it (the timeout), then
# get the copy.
took, first = timed_get("/api/hang")
check_eq(first.body, b'{"v":1}', "hang: the copy after the first failure")
cs = first.headers.get("cache-status", "")
check(cs.startswith("corral; hit; fwd=stale; ttl=-") and
      cs.endswith("; detail=upstream-error"),
      f"hang: stale because the fill failed: {cs}")

seen = []
stop = time.monotonic() + 8.0


def asker():
    while time.monotonic() < stop:
        seen.append(timed_get("/api/hang"))
        time.sleep(0.1)


threads = [threading.Thread(target=asker) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
check(len(seen) > 100, f"hang: clients asked ({len(seen)})")
slow = sorted(took for took, _ in seen)[-3:]
check(all(took < AT_ONCE for took, _ in seen),
      f"hang: every answer well within the 1 s hang (slowest {slow})")
check_eq({r.status for _, r in seen}, {200}, "hang: all 200")
check_eq({r.body for _, r in seen}, {b'{"v":1}'}, "hang: all the copy")
details = {r.headers["cache-status"].rpartition("detail=")[2]
           for _, r in seen}
check_eq(details, {"revalidating", "backoff"},
         "hang: the copy while a try runs, and while backing off")
for _, r in seen:
    cs = r.headers["cache-status"]
    check(cs.startswith("corral; hit; fwd=stale; ttl=-") and
          int(cs.split("ttl=-")[1].split(";")[0]) >= 1,
          f"hang: stale, ttl=-N with N >= 1: {cs}")
# One call per backoff step (1, 2, 4 s, each from the upper quarter below
# it, after a 1 s timeout): the fill, the first failure, and the tries
# made in those 8 s.
times = arrivals("/hang")
check(4 <= len(times) <= 5, f"hang: one try per step ({len(times)} calls)")
for i in range(2, len(times)):
    gap = times[i] - times[i - 1]
    check(gap >= 1.0 + 0.75 * min(2 ** (i - 2), 4) - 0.05,
          f"hang: try {i} came {gap:.2f} s after the last")

# ---- a failed key whose try waits for a rate slot ----
origin.behave("/rated/k", body='{"k":1}')
check_eq(corral.get("/api/rated/k").body, b'{"k":1}', "rated: first fill")
time.sleep(2.1)  # expired, and the rate window is free again
origin.behave("/rated/k", status=500)
took, failed = timed_get("/api/rated/k")
check_eq(failed.body, b'{"k":1}', "rated: the copy after a failure")
check(took < 1.0, f"rated: the failed call was not queued ({took:.2f} s)")
origin.behave("/rated/k", body='{"k":2}')
# Its next try comes after the 1 s step, and then waits for the slot the
# failed call took (2 s after it): clients between have the copy at once.
t0 = time.monotonic()
queued = []
while time.monotonic() - t0 < 1.6:
    queued.append(timed_get("/api/rated/k"))
    time.sleep(0.05)
slow = max(took for took, _ in queued)
check(slow < AT_ONCE,
      f"rated: answered at once while queued (slowest {slow:.3f})")
check_eq({r.body for _, r in queued}, {b'{"k":1}'}, "rated: the copy")
check("detail=revalidating" in queued[-1][1].headers["cache-status"],
      f"rated: while the try waits: {queued[-1][1].headers}")
time.sleep(1.2)
check_eq(corral.get("/api/rated/k").body, b'{"k":2}',
         "rated: the try's value, once its slot came")
check_eq(len(arrivals("/rated/k")), 3, "rated: fill, failure, one try")

check(corral.alive(), "corral still running")
done("stale_while_retrying")
