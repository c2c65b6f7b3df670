"""Stampedes: 1,000 cold clients on one key, the seed's table of 4 / 25 /
100 / 250, and 300 clients after expiry — one upstream call each time, and
every client gets the right body."""
import time

from harness import World, check, check_eq, done

w = World()
origin = w.start_origin()
routes = [
    {"path": "/api/cold", "upstream": "o", "fetch": "/cold",
     "strategy": "realtime"},
    {"path": "/api/expiring", "upstream": "o", "fetch": "/expiring",
     "strategy": "1s"},
]
routes.append({"path": "/api/leave", "upstream": "o", "fetch": "/leave"})
for n in (4, 25, 100, 250):
    routes.append({"path": f"/api/seed{n}", "upstream": "o",
                   "fetch": f"/seed{n}", "strategy": "short"})
corral = w.start_corral({
    "upstreams": {"o": {"base": origin.base(), "timeout": "10s"}},
    "routes": routes,
})


def stampede(path, n, origin_path):
    t0 = time.time()
    answers = corral.many(path, n)
    took = time.time() - t0
    calls = origin.calls(origin_path)
    print(f"# {path}: {n} clients, {calls} upstream call(s), {took:.3f} s")
    check_eq(calls, 1, f"{path}: upstream calls for {n} clients")
    check_eq(sorted({a.status for a in answers}), [200], f"{path}: statuses")
    bodies = {a.body for a in answers}
    check_eq(len(bodies), 1, f"{path}: distinct bodies")
    statuses = [a.headers.get("cache-status") for a in answers]
    check_eq(statuses.count("corral; fwd=miss; stored"), 1, "one stored")
    check_eq(statuses.count("corral; fwd=miss; collapsed"), n - 1,
             "the rest collapsed")
    return answers


# Cold stampede: 1,000 clients, the origin takes 300 ms.
origin.behave("/cold", delay_ms=300)
answers = stampede("/api/cold", 1000, "/cold")
check(b'"n": 1' in answers[0].body, "the body of the first call")
etag = answers[0].headers.get("etag")
check(etag and etag.startswith('"'), "an ETag")
check_eq(answers[0].headers.get("content-type"), "application/json", "ctype")

# Then it is a hit, with honest headers.
hit = corral.get("/api/cold")
check_eq(hit.status, 200, "hit status")
check(hit.headers["cache-status"].startswith("corral; hit; ttl="), "hit")
ttl = int(hit.headers["cache-status"].split("ttl=")[1])
# realtime is 30 s, drawn down by up to 10% (the default ttl_jitter).
check(22 <= ttl <= 30, f"realtime ttl {ttl}")
max_age = int(hit.headers["cache-control"].split("max-age=")[1])
check(27 <= max_age <= 30, f"max-age is the (jittered) lifetime: {max_age}")
check(ttl <= max_age - int(hit.headers["age"]),
      "Age says how much of it is gone")
check(int(hit.headers["age"]) <= 5, "age")
check_eq(hit.body, answers[0].body, "hit body")
check_eq(origin.calls("/cold"), 1, "a hit calls nobody")

# Conditional and HEAD.
nm = corral.get("/api/cold", headers={"If-None-Match": etag})
check_eq(nm.status, 304, "If-None-Match")
check_eq(nm.body, b"", "304 without body")
check_eq(nm.headers.get("etag"), etag, "304 names the ETag")
other = corral.get("/api/cold", headers={"If-None-Match": '"nope"'})
check_eq(other.status, 200, "other ETag")
head = corral.get("/api/cold", method="HEAD")
check_eq(head.status, 200, "HEAD")
check_eq(head.headers["content-length"], str(len(answers[0].body)),
         "HEAD content-length")

# The seed's table.
for n in (4, 25, 100, 250):
    origin.behave(f"/seed{n}", delay_ms=200)
    stampede(f"/api/seed{n}", n, f"/seed{n}")

# Expired stampede: filled, expired, then 300 clients on a slow origin.
first = corral.get("/api/expiring")
check_eq(first.status, 200, "expiring fill")
check_eq(origin.calls("/expiring"), 1, "first fill")
time.sleep(1.2)
origin.behave("/expiring", delay_ms=300, body='{"v": "new"}')
t0 = time.time()
answers = corral.many("/api/expiring", 300)
took = time.time() - t0
calls = origin.calls("/expiring")
print(f"# /api/expiring after expiry: 300 clients, {calls - 1} upstream "
      f"call(s), {took:.3f} s")
check_eq(calls, 2, "one more upstream call for 300 clients after expiry")
check(all(a.status == 200 and a.body == b'{"v": "new"}' for a in answers),
      "all 300 got the new body")
# Clients that leave while waiting: the fill goes on, is stored, and the
# others get their answer.
import asyncio

from harness import read_response


async def leave_early():
    origin.behave("/leave", delay_ms=500)
    conns = [await asyncio.open_connection("127.0.0.1", corral.port)
             for _ in range(10)]
    for i, (_, wr) in enumerate(conns):
        wr.write(b"GET /api/leave HTTP/1.1\r\nHost: x\r\n\r\n")
        await wr.drain()
        if i == 0:
            await asyncio.sleep(0.05)  # conns[0] surely leads
    await asyncio.sleep(0.1)
    for _, wr in conns[:5]:  # the leader among them
        wr.close()
    answers = [await asyncio.wait_for(read_response(rd), 10)
               for rd, _ in conns[5:]]
    for _, wr in conns[5:]:
        wr.close()
    return answers

answers = asyncio.run(leave_early())
check(all(a.status == 200 for a in answers), "those who stayed got 200")
check(all(a.headers["cache-status"] == "corral; fwd=miss; collapsed"
          for a in answers), "collapsed onto the fill the leader started")
again = corral.get("/api/leave")
check(again.headers["cache-status"].startswith("corral; hit"),
      "the fill was stored though its leader left")
check_eq(origin.calls("/leave"), 1, "one call")
check(corral.alive(), "corral still running")
done("stampede")
