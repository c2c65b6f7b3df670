"""tools/demo on free ports: it prints the URLs to try (routes, metrics,
healthz), its admin answers /metrics and takes purges with the demo token,
and on SIGINT (Ctrl-C) it prints one summary line whose requests served,
upstream calls made and calls saved are what the test sent, what the
origin counted and what /metrics said, then stops everything it started."""
import atexit
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request

from harness import CORRAL, Corral, check, check_eq, done, free_port, require

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.normpath(os.path.join(HERE, "..", ".."))
DEMO = os.path.join(SOURCE, "tools", "demo")

port, admin_port, origin_port = free_port(), free_port(), free_port()
env = {k: v for k, v in os.environ.items() if k != "CORRAL_ADMIN_TOKEN"}
env["CORRAL"] = os.path.abspath(CORRAL)  # this build's, which tools/demo runs
demo = subprocess.Popen([DEMO, "--port", str(port), "--admin-port",
                         str(admin_port), "--origin-port", str(origin_port)],
                        stdout=subprocess.PIPE, text=True, env=env,
                        cwd=SOURCE)


def stop_demo():
    if demo.poll() is None:
        demo.terminate()
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()


atexit.register(stop_demo)

lines = []


def read():
    for line in demo.stdout:
        print("# demo: " + line.rstrip())
        lines.append(line.rstrip())


reader = threading.Thread(target=read, daemon=True)
reader.start()
deadline = time.monotonic() + 60
while not any(l.startswith("Ctrl-C") for l in lines):
    require(demo.poll() is None and time.monotonic() < deadline,
            f"tools/demo starts and says what to try: {lines}")
    time.sleep(0.05)

text = "\n".join(lines)
for url in (f"localhost:{port}/api/dashboard",
            f"localhost:{admin_port}/metrics | grep calls_saved",
            f"localhost:{admin_port}/healthz",
            f"localhost:{origin_port}/_origin/calls",
            "'Authorization: Bearer demo'"):
    check(url in text, f"tools/demo prints {url}")

corral = Corral(port, demo, admin_port)
check_eq(corral.healthz().get("status"), "ok", "the demo's admin: /healthz")

# 50 at once on a cold key (one fill, the others collapsed), then 20 hits.
answers = corral.many("/api/global", 50)
check_eq({a.status for a in answers}, {200}, "the burst is answered 200")
for _ in range(20):
    check_eq(corral.get("/api/global").status, 200, "a hit")
served = 50 + 20

# The admin takes the demo's default token, and only it.
check_eq(corral.admin("DELETE", "/cache/api/btc", token="nope").status, 401,
         "a purge with a wrong token")
check_eq(corral.admin("DELETE", "/cache/api/btc", token="demo").status, 200,
         "a purge with the demo token")

m = corral.metrics()
saved = sum(v for (name, _), v in m.items()
            if name == "corral_upstream_calls_saved_total")
check_eq(saved, served - 1, "/metrics: every request but the fill saved one")
with urllib.request.urlopen(
        f"http://127.0.0.1:{origin_port}/_origin/calls", timeout=10) as r:
    calls = json.load(r)["total"]
check_eq(calls, 1, "the origin saw one call")

demo.send_signal(signal.SIGINT)
try:
    rc = demo.wait(timeout=60)
except subprocess.TimeoutExpired:
    rc = None
reader.join(timeout=10)
check_eq(rc, 0, "tools/demo exits 0 on SIGINT")
summary = [l for l in lines if l.startswith("summary:")]
check_eq(len(summary), 1, f"one summary line: {lines[-3:]}")
m = re.fullmatch(r"summary: (\d+) requests served, (\d+) upstream calls "
                 r"made, (\d+) calls saved", summary[0] if summary else "")
check(m is not None, f"the summary line's shape: {summary}")
if m:
    check_eq(tuple(int(x) for x in m.groups()), (served, calls, saved),
             "the summary: requests served, upstream calls, calls saved")

# Everything it started is gone.
for p in (port, admin_port, origin_port):
    with socket.socket() as s:
        check(s.connect_ex(("127.0.0.1", p)) != 0,
              f"nothing listens on :{p} after the demo")

done("demo")
