"""workers: 2 on one port: each serves and, without L2, fills a key once
(each worker is asked alone, the other stopped, so both surely answer);
--check and the log say coalescing is per worker; a SIGKILLed worker is
restarted (and counted in /metrics) and no request is refused meanwhile; SIGHUP reloads both in
place; SIGTERM drains both and the supervisor exits 0."""
import json
import os
import signal
import subprocess
import time

from harness import CORRAL, World, check, check_eq, done

w = World()
origin = w.start_origin()
cfg = {
    "workers": 2,
    "upstreams": {"o": {"base": origin.base()}},
    "routes": [{"path": "/api/{k}", "upstream": "o", "fetch": "/v/{k}"}],
}
path = w.write_config(dict(cfg, listen="127.0.0.1:9"), "check.json")
p = subprocess.run([CORRAL, "--check", "-c", path], capture_output=True,
                   text=True)
check_eq(p.returncode, 0, f"--check: {p.stderr}")
check("once per worker" in p.stdout, f"--check says so: {p.stdout}")

# The port is taken: the supervisor says so and exits 1 at once.
import socket
taken = socket.socket()
taken.bind(("127.0.0.1", 0))
taken.listen(1)
busy = w.write_config(dict(cfg, listen=f"127.0.0.1:{taken.getsockname()[1]}"),
                      "busy.json")
p = subprocess.run([CORRAL, "-c", busy], capture_output=True, text=True,
                   timeout=20)
check_eq(p.returncode, 1, f"a taken port: {p.stderr}")
check("listen" in p.stderr and "in use" in p.stderr, f"says why: {p.stderr}")
taken.close()

c = w.start_corral(cfg, admin=True)
cfg_path = w.path("corral-0.json")


def restarts():
    return c.metrics()[("corral_worker_restarts_total", frozenset())]




def workers():
    with open(f"/proc/{c.proc.pid}/task/{c.proc.pid}/children") as f:
        return [int(x) for x in f.read().split()]


def state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def on_worker(pid, path):
    """path asked of worker pid alone: the others are stopped (SIGSTOP)
    first, so only pid can take the connection from the shared queue."""
    others = [p for p in workers() if p != pid]
    for p in others:
        os.kill(p, signal.SIGSTOP)
    try:
        deadline = time.time() + 10
        while (any(state(p) != "T" for p in others)
               and time.time() < deadline):
            time.sleep(0.01)
        check(all(state(p) == "T" for p in others), "the others stopped")
        return c.get(path)
    finally:
        for p in others:
            os.kill(p, signal.SIGCONT)


deadline = time.time() + 10
while len(workers()) < 2 and time.time() < deadline:
    time.sleep(0.05)
check_eq(len(workers()), 2, "two workers")

# Each worker serves and fills the key once, on its own.
first = {pid: on_worker(pid, "/api/a") for pid in workers()}
check_eq({a.status for a in first.values()}, {200}, "both served")
check_eq({a.json()["path"] for a in first.values()}, {"/v/a"},
         "the right answer")
# The origin numbers its answers: one body per worker's fill.
check_eq(sorted(a.json()["n"] for a in first.values()), [1, 2],
         "each worker's own fill")
for pid, a in first.items():
    check_eq(on_worker(pid, "/api/a").json()["n"], a.json()["n"],
             "a worker hits its own copy")
# Many connections at once, wherever they land: all served, no more fills.
answers = c.many("/api/a", 200)
check_eq({a.status for a in answers}, {200}, "all served")
check(all(a.json()["n"] in (1, 2) for a in answers), "from the two copies")
check_eq(origin.calls("/v/a"), 2, "one fill per worker")

# Kill one worker: the workers share one listening socket, so no request
# sent from then on is refused (the other one takes the queue), and the
# killed worker comes back.
check_eq(restarts(), 0, "no worker restarted yet")
victim = workers()[0]
os.kill(victim, signal.SIGKILL)
statuses = []
t0 = time.time()
while time.time() - t0 < 2:
    statuses.append(c.get("/api/b").status)
check_eq(set(statuses), {200}, f"no request refused ({len(statuses)} sent)")
deadline = time.time() + 5
while (len(workers()) < 2 or victim in workers()) and time.time() < deadline:
    time.sleep(0.05)
check_eq(len(workers()), 2, "the worker was restarted")
check(victim not in workers(), "by a new process")
check(c.alive(), "the supervisor lives")
check_eq(restarts(), 1, "/metrics counts the restart")

# SIGHUP reloads every worker, in place: a route the file gains is served
# by each of the same processes.
before = sorted(workers())
for pid in before:
    check(on_worker(pid, "/new/x").status != 200, "no /new route yet")
with open(cfg_path) as f:
    new_cfg = json.load(f)
new_cfg["routes"].append({"path": "/new/{k}", "upstream": "o",
                          "fetch": "/v/new-{k}"})
w.write_config(new_cfg, "corral-0.json")
c.proc.send_signal(signal.SIGHUP)
for pid in before:
    deadline = time.time() + 10
    r = on_worker(pid, "/new/x")
    while r.status != 200 and time.time() < deadline:
        time.sleep(0.05)
        r = on_worker(pid, "/new/x")
    check_eq(r.status, 200, f"worker {pid} serves the new route")
    check_eq(r.json()["path"], "/v/new-x", "from the new file")
check_eq(sorted(workers()), before, "the same workers after SIGHUP")
check(c.alive(), "the supervisor survives SIGHUP")
done("workers")
