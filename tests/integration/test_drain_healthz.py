#!/usr/bin/env python3
"""/healthz answers 503 "draining" while a SIGTERM's drain runs, one
process and workers alike: the admin listener used to close at the
SIGTERM, so a health check got "connection refused" instead of the
documented answer, while requests in flight were still being finished."""
import asyncio
import signal
import threading
import time

from harness import World, check, check_eq, done, free_port, request, wait_port

w = World()
origin = w.start_origin()
origin.behave("/slow", delay_ms=2500, body='{"slow":1}')

for workers in (1, 2):
    aport = free_port()
    c = w.start_corral({
        "workers": workers,
        "drain_timeout": "20s",
        "admin": {"listen": f"127.0.0.1:{aport}"},
        "upstreams": {"o": {"base": origin.base(), "timeout": "10s"}},
        "routes": [{"path": "/api/slow", "upstream": "o", "fetch": "/slow"}],
    })
    wait_port(aport, c.proc)
    time.sleep(0.3)  # every worker up
    h = asyncio.run(request(aport, "/healthz"))
    check_eq(h.status, 200, f"workers {workers}: healthy before the stop")

    # Requests in flight keep the drain going for a while.
    slow = []
    threads = [threading.Thread(
        target=lambda: slow.append(c.get("/api/slow", timeout=20)))
        for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    c.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    for _ in range(3):  # with workers, whichever takes it
        try:
            h = asyncio.run(request(aport, "/healthz"))
        except OSError as e:
            check(False, f"workers {workers}: /healthz during the drain: {e}")
        check_eq(h.status, 503, f"workers {workers}: /healthz while draining")
        check_eq(h.json()["status"], "draining",
                 f"workers {workers}: says draining")
    for t in threads:
        t.join()
    check_eq([r.status for r in slow], [200] * 4,
             f"workers {workers}: requests in flight finished")
    c.proc.wait(timeout=20)
    check_eq(c.proc.returncode, 0, f"workers {workers}: drained, exit 0")

done("drain_healthz")
