#!/usr/bin/env python3
"""Idle connections to the admin port cannot make /healthz fail: at its
limit the admin closes the connection idle longest instead of refusing the
new one. 64 idle connections (a hard-coded cap) used to make /healthz
answer 503 "too many clients" for as long as they were held, so health
probes pulled the instance. Also: admin.max_clients and admin.client_timeout
are honoured."""
import asyncio
import socket
import time

from harness import World, check, check_eq, done, free_port, request, wait_port

w = World()
origin = w.start_origin()


def start(admin, workers=1):
    aport = free_port()
    c = w.start_corral({
        "workers": workers,
        "admin": {"listen": f"127.0.0.1:{aport}", **admin},
        "upstreams": {"o": {"base": origin.base()}},
        "routes": [{"path": "/api/x", "upstream": "o", "fetch": "/x"}],
    })
    wait_port(aport, c.proc)
    time.sleep(0.3)  # every worker up
    return c, aport


def idle(port, n):
    """n connections that never send a byte."""
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        out.append(s)
    return out


def healthz(port):
    return asyncio.run(request(port, "/healthz", timeout=10))


for workers in (1, 2):
    c, aport = start({}, workers)
    held = idle(aport, 300)
    time.sleep(0.3)
    for i in range(5):
        h = healthz(aport)
        check_eq(h.status, 200, f"workers {workers}: /healthz under 300 idle "
                 f"connections (try {i}): {h.body!r}")
        # They reconnect as fast as they are closed.
        held += idle(aport, 50)
    for s in held:
        s.close()
    check(c.alive(), f"workers {workers}: still running")

# A request still arriving holds no slot forever either (slowloris).
c, aport = start({"max_clients": 4})
slow = []
for _ in range(8):
    s = socket.create_connection(("127.0.0.1", aport), timeout=5)
    s.sendall(b"GET /healthz HTTP/1.1\r\n")
    slow.append(s)
time.sleep(0.2)
check_eq(healthz(aport).status, 200, "max_clients 4: a new client is served")
for s in slow:
    s.close()

# admin.client_timeout closes an idle admin connection.
c, aport = start({"client_timeout": "1s"})
s = socket.create_connection(("127.0.0.1", aport), timeout=10)
t0 = time.time()
got = s.recv(100)
took = time.time() - t0
check_eq(got, b"", "client_timeout: the idle connection is closed")
check(took < 5, f"client_timeout: after about 1 s ({took:.1f} s)")
s.close()
done("admin_idle_flood")
