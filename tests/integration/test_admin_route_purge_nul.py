#!/usr/bin/env python3
"""DELETE /route/<path> decodes its path with the gateway's one
percent-decoder. The admin's own decoder, before, let an encoded NUL cut
the name short: DELETE /route/api%00junk purged the route /api. A path
that does not decode (an encoded NUL, a malformed escape) names no route:
404, and nothing is purged."""
import asyncio

from harness import World, check, check_eq, done, free_port, request, wait_port

w = World()
origin = w.start_origin()
origin.behave("/api", body='{"v":1}')
TOKEN = "nul-token"
aport = free_port()
c = w.start_corral({
    "listen": f"127.0.0.1:{free_port()}",
    "admin": {"listen": f"127.0.0.1:{aport}", "token": TOKEN},
    "upstreams": {"o": {"base": origin.base(), "timeout": "5s"}},
    "routes": [{"path": "/api", "upstream": "o", "fetch": "/api",
                "strategy": "1h"}],
})
wait_port(aport, c.proc)


def purge(path):
    return asyncio.run(request(aport, path, {"Authorization":
                                             f"Bearer {TOKEN}"},
                               "DELETE", 10))


check_eq(c.get("/api").status, 200, "/api answers")
check_eq(c.get("/api").status, 200, "/api again, from the cache")
calls = origin.calls("/api")
check_eq(calls, 1, "one upstream call")
for bad in ["/route/api%00junk", "/route/api%00", "/route/api%zz",
            "/route/api%4"]:
    r = purge(bad)
    check_eq(r.status, 404, f"DELETE {bad}: names no route")
check_eq(c.get("/api").status, 200, "/api after the refused purges")
check_eq(origin.calls("/api"), calls, "still cached: nothing was purged")
check_eq(purge("/route/%2Fapi").status, 404,
         "an encoded '/' is a character of the name: /%2Fapi is not /api")
check_eq(purge("/route/ap%69").status, 200, "ap%69 is /api")
check_eq(c.get("/api").status, 200, "/api after its purge")
check_eq(origin.calls("/api"), calls + 1, "fetched again after the purge")
check(c.alive(), "corral still running")
done("admin_route_purge_nul")
