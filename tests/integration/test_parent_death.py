#!/usr/bin/env python3
"""A SIGKILLed supervisor takes its workers with it: they used to keep
serving the port, so the next start failed with "Address already in use".
With workers: 2, SIGKILL the supervisor: every worker is gone within a few
seconds, and a new corral binds the same ports and serves."""
import os
import signal
import subprocess
import time

from harness import (CORRAL, Corral, World, check, check_eq, children, done,
                     free_port, wait_port)

w = World()
origin = w.start_origin()
port, aport = free_port(), free_port()
cfg = {
    "listen": f"127.0.0.1:{port}",
    "workers": 2,
    "admin": {"listen": f"127.0.0.1:{aport}"},
    "upstreams": {"o": {"base": origin.base()}},
    "routes": [{"path": "/api/x/{id}", "upstream": "o", "fetch": "/x/{id}"}],
}
path = w.write_config(cfg, "parent-death.json")



def running(pid):
    """Alive and not a zombie waiting for whoever adopted it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


p = subprocess.Popen([CORRAL, "-c", path])
w.procs.append(p)
wait_port(port, p)
wait_port(aport, p)
deadline = time.time() + 10
while len(children(p.pid)) < 2 and time.time() < deadline:
    time.sleep(0.05)
pids = children(p.pid)
check_eq(len(pids), 2, "two workers")
check_eq(Corral(port, p).get("/api/x/1").status, 200, "serving")

p.kill()
p.wait()
deadline = time.time() + 5
while any(running(pid) for pid in pids) and time.time() < deadline:
    time.sleep(0.05)
left = [pid for pid in pids if running(pid)]
for pid in left:  # do not leave them behind when the check fails
    os.kill(pid, signal.SIGKILL)
check(not left, f"the workers left with their supervisor ({left} remained)")

# The ports are free: a new server starts on them and serves.
again = subprocess.Popen([CORRAL, "-c", path])
w.procs.append(again)
w.corrals.append(again)
wait_port(port, again)
wait_port(aport, again)
check_eq(Corral(port, again).get("/api/x/2").status, 200, "the new one serves")
check(again.poll() is None, "the new one runs")
done("parent_death")
