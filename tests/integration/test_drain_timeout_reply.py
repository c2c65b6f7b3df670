#!/usr/bin/env python3
"""A request still waiting on its upstream when drain_timeout passes is
answered 503 with Retry-After and "Connection: close", one process and
workers alike. It used to get an empty reply: the connection was just
closed."""
import signal
import threading
import time

from harness import World, check, check_eq, done

w = World()
origin = w.start_origin()
origin.behave("/hang", hang=True)

for workers in (1, 2):
    c = w.start_corral({
        "workers": workers,
        "drain_timeout": "1s",
        "upstreams": {"o": {"base": origin.base(), "timeout": "60s"}},
        "routes": [{"path": "/api/{k}", "upstream": "o", "fetch": "/hang"}],
    })
    time.sleep(0.3)  # every worker up
    answers, errors = [], []

    def ask(path):
        try:
            answers.append(c.get(path, timeout=30))
        except Exception as e:  # an empty reply
            errors.append(repr(e))

    # Two clients on one key (one fill, two waiters) and one on another.
    threads = [threading.Thread(target=ask, args=(p,))
               for p in ("/api/a", "/api/a", "/api/b")]
    for t in threads:
        t.start()
    time.sleep(0.5)
    t0 = time.time()
    c.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=30)
    check_eq(errors, [], f"workers {workers}: no empty reply")
    check_eq(len(answers), 3, f"workers {workers}: every client answered")
    for a in answers:
        check_eq(a.status, 503, f"workers {workers}: 503 at drain_timeout")
        check("retry-after" in a.headers,
              f"workers {workers}: with Retry-After: {a.headers}")
        check_eq(a.headers.get("connection"), "close",
                 f"workers {workers}: and Connection: close")
    c.proc.wait(timeout=20)
    took = time.time() - t0
    check_eq(c.proc.returncode, 0, f"workers {workers}: exit 0")
    check(took < 10, f"workers {workers}: stopped soon after ({took:.1f} s)")

done("drain_timeout_reply")
