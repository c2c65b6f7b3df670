#!/usr/bin/env python3
"""Issue 19 (8): an aggregate stored a member's one failure for its whole
TTL: the dashboard served the member as null for 20 s although it
answered again 1.5 s later. A partial aggregate lives no longer than the
failed member's backoff step, so once the member recovers the next
aggregate answer shows it; a member whose error is a cached 4xx limits it
to that answer's own lifetime."""
import time

from harness import World, check, check_eq, done

w = World()
origin = w.start_origin()
MEMBER = {"upstream": "o", "strategy": "20s", "ttl_jitter": "0%",
          "early_refresh": 0}
corral = w.start_corral({
    "upstreams": {"o": {"base": origin.base(), "timeout": "2s"}},
    "routes": [
        {"path": "/api/a", "fetch": "/a", **MEMBER},
        {"path": "/api/b", "fetch": "/b", **MEMBER},
        {"path": "/api/c", "fetch": "/c", "cache_errors": {"404": "2s"},
         **MEMBER},
        {"path": "/api/dash", "strategy": "20s", "early_refresh": 0,
         "aggregate": {"a": "/api/a", "b": "/api/b"}},
        {"path": "/api/dash2", "strategy": "20s", "early_refresh": 0,
         "aggregate": {"a": "/api/a", "c": "/api/c"}},
    ],
    "limits": {"backoff_min": "1s", "backoff_max": "4s"},
})

# ---- a member fails once, then answers again ----
origin.behave("/a", body='{"a":1}')
origin.behave("/b", body='{"b":1}', fail_times=1, fail_status=500)
t0 = time.monotonic()
first = corral.get("/api/dash")
check_eq(first.status, 200, "partial: 200")
check_eq(first.json()["b"], None, "partial: b is null")
check_eq(first.json()["errors"]["b"]["status"], 502, "partial: b's error")
age = int(first.headers["cache-control"].split("=")[1])
check(age <= 1, f"partial: lives no longer than b's 1 s step ({age})")
recovered = None
while time.monotonic() - t0 < 5.0:
    r = corral.get("/api/dash")
    check_eq(r.status, 200, "dash: 200")
    if r.json().get("b") is not None:
        recovered = time.monotonic() - t0
        break
    time.sleep(0.05)
check(recovered is not None and recovered < 1.6,
      f"b shows within its 1 s step ({recovered})")
check_eq(r.json(), {"a": {"a": 1}, "b": {"b": 1}}, "dash: whole again")
check_eq(origin.calls("/b"), 2, "b: the failure, one try")
check_eq(origin.calls("/a"), 1, "a: one call")

# ---- a member answered by a cached 404 ----
origin.behave("/c", status=404, body='{"no":1}')
t0 = time.monotonic()
r = corral.get("/api/dash2")
check_eq(r.json()["errors"]["c"]["status"], 404, "negative: c's 404")
age = int(r.headers["cache-control"].split("=")[1])
check(age <= 2, f"negative: lives no longer than c's 404 ({r.headers})")
origin.behave("/c", body='{"c":1}')
time.sleep(max(0.0, 2.2 - (time.monotonic() - t0)))
check_eq(corral.get("/api/dash2").json(), {"a": {"a": 1}, "c": {"c": 1}},
         "negative: c shows once its 404 expired")

check(corral.alive(), "corral still running")
done("aggregate_member_recovers")
