"""An upstream that misbehaves on a kept-alive connection must never get an
answer stored under another key: interim 1xx responses (in one packet and
split), 101, bytes left over after a framed answer, bytes sent while the
connection is idle (an answer before its request), chunk extensions and
trailers. The upstream allows one connection, so every fetch reuses it."""
import time

from harness import World, check, check_eq, done

# A whole extra response, as a broken or hostile upstream might send it.
POISON = ('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n'
          'Content-Length: 18\r\n\r\n{"path":"POISON"}\n')

MODES = {
    "interim103-split": {"interim": 103, "interim_delay_ms": 100},
    "interim103-one": {"interim": 103},
    "interim102": {"interim": 102, "interim_delay_ms": 30},
    "interim100": {"interim": 100},
    "extra": {"trailing": POISON},
    "late": {"late": POISON, "late_ms": 50},
    "early": {"late": POISON, "late_ms": 0},
    "chunked": {"chunked": True},
    "chunked-extra": {"chunked": True, "trailing": POISON},
    "interim103-extra": {"interim": 103, "trailing": POISON},
    "switch101": {"interim": 101},
    # Bodyless answers (by status or Content-Length: 0) with bytes behind.
    "nocontent": {"status": 204, "trailing": POISON},
    "notmodified": {"status": 304, "trailing": POISON},
    "empty": {"body": "", "trailing": POISON},
}
# Not a storable answer: an error, never cached.
FAILS = {"switch101", "nocontent", "notmodified", "empty"}

w = World()
origin = w.start_origin()
corral = w.start_corral({
    "upstreams": {"one": {"base": origin.base(), "max_connections": 1,
                          "timeout": "5s"}},
    "routes": [{"path": "/evil/{mode}", "upstream": "one",
                "fetch": "/pre/m/{mode}"}],
    # Failed keys are asked again at once: this test is about connections.
    "limits": {"backoff_min": "1ms", "backoff_max": "1ms"},
})

stored = {}  # key -> the body corral answered with


def own(mode, answer):
    check_eq(answer.status, 200, f"{mode}: status ({answer})")
    if answer.status == 200:
        check_eq(answer.json()["path"], f"/pre/m/{mode}", f"{mode}: own body")
        stored[mode] = answer.body


for mode, beh in MODES.items():
    origin.behave(f"/pre/m/{mode}", **beh)
    first = corral.get(f"/evil/{mode}")
    if mode in FAILS:
        check_eq(first.status, 502, f"{mode}: refused ({first})")
    else:
        own(mode, first)
    time.sleep(0.15)  # late bytes land on the idle pooled connection
    victim = f"victim-{mode}"
    own(victim, corral.get(f"/evil/{victim}"))
    again = corral.get(f"/evil/{victim}")
    check_eq(again.body, stored.get(victim), f"{victim}: the hit is the same")
    check_eq(again.headers.get("cache-status", "").startswith("corral; hit"),
             True, f"{victim}: a hit ({again.headers})")
    check_eq(origin.calls(f"/pre/m/{victim}"), 1, f"{victim}: one call")

# Every stored key still answers with its own body, and nothing anywhere
# came from the poison.
for key, body in stored.items():
    a = corral.get(f"/evil/{key}")
    check_eq(a.status, 200, f"{key}: still served")
    check_eq(a.body, body, f"{key}: still its own body")
    check(b"POISON" not in a.body, f"{key}: no poison")

# A failed 101 is not cached: the next request asks again, and gets its
# answer once the upstream behaves.
origin.behave("/pre/m/switch101")
own("switch101", corral.get("/evil/switch101"))
check_eq(origin.calls("/pre/m/switch101"), 2, "101 was not cached")
check(corral.alive(), "corral still up")
done("poison")
