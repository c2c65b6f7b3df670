#!/usr/bin/env python3
"""A route purge must never make one route serve another's data. A purged
route's keys carry its generation, "~N~key"; a configured key that starts
with "~" could be such a key: /a keyed "~1~k" and /b keyed "k" meet once
/b's generation is 1, and /b would serve /a's body. corral refuses such a
key when it loads the config. (Were it accepted, this test shows the
collision itself.)"""
import asyncio
import subprocess

from harness import (CORRAL, World, check, check_eq, done, free_port,
                     request, wait_port)

w = World()
origin = w.start_origin()
origin.behave("/a", body='{"route":"a"}')
origin.behave("/b", body='{"route":"b"}')
TOKEN = "collision-token"
aport = free_port()
cfg = {
    "listen": f"127.0.0.1:{free_port()}",
    "admin": {"listen": f"127.0.0.1:{aport}", "token": TOKEN},
    "upstreams": {"o": {"base": origin.base(), "timeout": "5s"}},
    "routes": [
        {"path": "/a", "upstream": "o", "fetch": "/a", "key": "~1~k"},
        {"path": "/b", "upstream": "o", "fetch": "/b", "key": "k"},
    ],
}
path = w.write_config(cfg, "collide.json")
p = subprocess.run([CORRAL, "--check", "-c", path], capture_output=True,
                   text=True, timeout=10)
if p.returncode == 0:
    # The old behaviour: show what the key allows.
    c = w.start_corral(cfg)
    wait_port(aport, c.proc)
    check_eq(c.get("/a").body, b'{"route":"a"}', "/a: its own body")
    r = asyncio.run(request(aport, "/route/b", {"Authorization":
                                                f"Bearer {TOKEN}"},
                            "DELETE", 10))
    check_eq(r.status, 200, "route purge of /b")
    got = c.get("/b").body
    check_eq(got, b'{"route":"b"}', "after DELETE /route/b, /b's own body "
             "(not /a's)")
    check(False, "--check accepted a key that starts with ~")
out = p.stdout + p.stderr
check("routes[0].key" in out, f"--check names the key: {out}")
check("~" in out, f"--check says why: {out}")

# '~' inside a key is fine, and a purge of one route leaves the other be.
cfg["routes"][0]["key"] = "k~1~"
c = w.start_corral(cfg)
wait_port(aport, c.proc)
check_eq(c.get("/a").body, b'{"route":"a"}', "/a: its own body")
check_eq(c.get("/b").body, b'{"route":"b"}', "/b: its own body")
r = asyncio.run(request(aport, "/route/b", {"Authorization":
                                            f"Bearer {TOKEN}"}, "DELETE", 10))
check_eq(r.status, 200, "route purge of /b")
check_eq(c.get("/b").body, b'{"route":"b"}', "/b after its purge: its own")
check_eq(c.get("/a").body, b'{"route":"a"}', "/a after /b's purge: its own")
check(c.alive(), "corral still running")
done("generation_key_collision")
