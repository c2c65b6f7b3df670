#!/usr/bin/env python3
"""Issue 19, item 2: "new_keys": "3/10s" lets a route start at most 3
cold fills in any 10 s, for the whole server (workers: 2 here): the next
new keys get 503 with Retry-After and no upstream call, while the keys the
route holds are served as ever. Clients could make a route create keys
at will through {param} values."""
import time

from harness import World, check, check_eq, done

w = World()
origin = w.start_origin()
c = w.start_corral({
    "workers": 2,
    "upstreams": {"o": {"base": origin.base()}},
    "routes": [
        {"path": "/n/{k}", "upstream": "o", "fetch": "/n/{k}",
         "new_keys": "3/10s"},
    ],
})
time.sleep(0.5)  # both workers listening

answers = c.many(None, 8, paths=[f"/n/k{i}" for i in range(8)])
statuses = [a.status for a in answers]
check_eq(sorted(statuses), [200] * 3 + [503] * 5, "three new keys, then 503")
late = [a for a in answers if a.status == 503][0]
check(1 <= int(late.headers.get("retry-after", "0")) <= 11,
      f"Retry-After until the window frees: {late.headers}")
check("new_keys" in late.json()["error"], f"says why: {late.body}")
check_eq(origin.total(), 3, "three calls")
served = [i for i, s in enumerate(statuses) if s == 200]
for i in served:
    for _ in range(4):  # whichever worker answers has it or fills it once
        c.get(f"/n/k{i}")
check(origin.total() <= 3 + 3, f"the keys it has are served "
      f"({origin.total()} calls)")

check(c.alive(), "corral still running")
done("new_keys")
