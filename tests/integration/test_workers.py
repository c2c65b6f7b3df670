"""workers: 2 on one port: both serve (without L2 each fills a key once,
so two origin calls); --check and the log say coalescing is per worker; a
SIGKILLed worker is restarted and no request is refused meanwhile; SIGTERM
drains both and the supervisor exits 0."""
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

c = w.start_corral(cfg)


def workers():
    with open(f"/proc/{c.proc.pid}/task/{c.proc.pid}/children") as f:
        return [int(x) for x in f.read().split()]


deadline = time.time() + 10
while len(workers()) < 2 and time.time() < deadline:
    time.sleep(0.05)
check_eq(len(workers()), 2, "two workers")
time.sleep(0.3)  # both listening

# Many connections land on both workers: each fills the key once.
answers = c.many("/api/a", 200)
check_eq({a.status for a in answers}, {200}, "all served")
# The origin numbers its answers: one body per worker's fill.
check_eq({a.json()["n"] for a in answers}, {1, 2}, "each worker's own fill")
check_eq({a.json()["path"] for a in answers}, {"/v/a"}, "the right answer")
check_eq(origin.calls("/v/a"), 2, "one fill per worker")

# Kill one worker: the workers share one listening socket, so no request
# sent from then on is refused (the other one takes the queue), and the
# killed worker comes back.
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

# SIGHUP reaches the workers (no reload yet): nobody dies, all serve.
before = sorted(workers())
c.proc.send_signal(signal.SIGHUP)
time.sleep(0.3)
check_eq(sorted(workers()), before, "the same workers after SIGHUP")
check_eq(c.get("/api/a").status, 200, "serving after SIGHUP")
check(c.alive(), "the supervisor survives SIGHUP")
done("workers")
