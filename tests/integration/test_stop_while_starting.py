#!/usr/bin/env python3
"""A stop that reaches a worker while it is still starting is a drain like
any other: the supervisor (workers: 2) exits 0. A worker used to die of the
SIGTERM itself when it came before the worker watched its signals, and the
supervisor then exited 1, as if the stop had failed."""
import subprocess
import time

from harness import CORRAL, World, check, check_eq, children, done, free_port

w = World()
origin = w.start_origin()



for i in range(8):
    cfg = {
        "listen": f"127.0.0.1:{free_port()}",
        "workers": 2,
        "upstreams": {"o": {"base": origin.base()}},
        "routes": [{"path": "/api/x", "upstream": "o", "fetch": "/x"}],
    }
    path = w.write_config(cfg, f"starting-{i}.json")
    p = subprocess.Popen([CORRAL, "-c", path])
    w.procs.append(p)
    # Both workers forked, and at most just started.
    deadline = time.time() + 10
    while len(children(p.pid)) < 2:
        check(time.time() < deadline, "two workers")
        time.sleep(0.001)
    p.terminate()
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        check(False, f"run {i}: SIGTERM stopped it")
    check_eq(p.returncode, 0, f"run {i}: exit status of a stop at start")

done("stop_while_starting")
