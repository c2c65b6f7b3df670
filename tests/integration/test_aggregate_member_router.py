#!/usr/bin/env python3
"""An aggregate's member is resolved by the router that serves requests,
once, when the config loads, and is fetched with that route's rules. For
/x/y, the route /x/{b} (a literal first segment) wins over /{a}/y
whichever is listed first, so --check judges the member by /x/{b}'s rules
and the aggregate serves /x/{b}'s body, validated as /x/{b} says."""
import subprocess

from harness import CORRAL, World, check, check_eq, done

w = World()
origin = w.start_origin()
origin.behave("/from-a", body="not json at all")
origin.behave("/from-b/y", body='{"from":"b"}')


def config(a_json, b_json):
    return {
        "listen": "127.0.0.1:9",
        "upstreams": {"o": {"base": origin.base(), "timeout": "5s"}},
        "routes": [
            {"path": "/{a}/y", "upstream": "o", "fetch": "/from-a",
             "json": a_json},
            {"path": "/x/{b}", "upstream": "o", "fetch": "/from-b/{b}",
             "json": b_json},
            {"path": "/all", "aggregate": {"m": "/x/y"}},
        ],
    }


def run_check(cfg, name):
    path = w.write_config(cfg, name)
    p = subprocess.run([CORRAL, "--check", "-c", path], capture_output=True,
                       text=True, timeout=10)
    return p.returncode, p.stdout + p.stderr


# The member's route has json: false: refused, whatever /{a}/y says.
rc, out = run_check(config(True, False), "b-not-json.json")
check(rc != 0, f"--check refuses a member served by a json: false route "
      f"({out.strip()})")
check("routes[2].aggregate.m" in out and "routes[1] has json: false" in out,
      f"--check names the member and its route: {out}")

# /{a}/y has json: false, but it is not the member's route: accepted.
cfg = config(False, True)
rc, out = run_check(cfg, "a-not-json.json")
check_eq(rc, 0, f"--check accepts a member whose own route is JSON ({out})")
corral = w.start_corral(cfg)
got = corral.get("/all")
check_eq(got.status, 200, "aggregate: 200")
check_eq(got.json(), {"m": {"from": "b"}}, "aggregate: /x/{b}'s body")
check_eq(origin.calls("/from-a"), 0, "/{a}/y's upstream never asked")
check_eq(corral.get("/x/y").headers["cache-status"][:11], "corral; hit",
         "a request for /x/y shares the member's key")
# The member route's rules: a body that is not JSON is not stored.
origin.behave("/from-b/z", body="not json at all")
cfg2 = config(False, True)
cfg2["routes"][2]["aggregate"] = {"m": "/x/z"}
corral2 = w.start_corral(cfg2)
got = corral2.get("/all")
check_eq(got.status, 502, "aggregate of one failed member: 502")
check(got.json()["m"] is None and "m" in got.json()["errors"],
      f"the member failed /x/{{b}}'s JSON check: {got.body!r}")
check(corral.alive() and corral2.alive(), "corral still running")
done("aggregate_member_router")
