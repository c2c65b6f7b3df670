#!/usr/bin/env python3
"""An admin listener added (or moved, or removed) by a reload is served at
once, by every worker, on a socket the supervisor binds, also for workers
started later. It used to be bound only at start: after a reload that
added admin with workers: 2, a restarted worker bound the port itself, the
next got "Address already in use", exited 1 and was restarted forever.
Other admin limits rebuild it on the same socket; a reload whose admin
port cannot be bound is refused whole."""
import asyncio
import os
import signal
import socket
import subprocess
import time

from harness import (CORRAL, Corral, World, check, check_eq, children, done,
                     free_port, request, wait_port)

w = World()
origin = w.start_origin()


def config(port, admin=None, extra=()):
    cfg = {
        "listen": f"127.0.0.1:{port}",
        "upstreams": {"o": {"base": origin.base()}},
        "routes": [{"path": "/api/x/{id}", "upstream": "o", "fetch": "/x/{id}"},
                   *extra],
    }
    if admin:
        cfg["admin"] = {"listen": f"127.0.0.1:{admin}", **ADMIN}
    return cfg


ADMIN = {"token": "t"}
NEW = {"path": "/api/new", "upstream": "o", "fetch": "/new"}



def healthz(port):
    try:
        return asyncio.run(request(port, "/healthz", timeout=5))
    except OSError:
        return None


def wait_for(cond, what, timeout=10):
    deadline = time.time() + timeout
    while not cond():
        check(time.time() < deadline, what)
        time.sleep(0.05)


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except OSError:
        return True


def idle_closed_within(port, seconds):
    s = socket.create_connection(("127.0.0.1", port), timeout=seconds)
    try:
        return s.recv(1) == b""
    except OSError:
        return False
    finally:
        s.close()


for workers in (2, 1):
    tag = f"workers {workers}"
    port, a1, a2 = free_port(), free_port(), free_port()
    name = f"reload-admin-{workers}.json"
    path = w.write_config(dict(config(port), workers=workers), name)
    errlog = w.path(f"reload-admin-{workers}.err")
    with open(errlog, "w") as err:
        p = subprocess.Popen([CORRAL, "-c", path], stderr=err)
    w.procs.append(p)
    w.corrals.append(p)
    wait_port(port, p)
    c = Corral(port, p)
    if workers > 1:
        wait_for(lambda: len(children(p.pid)) == workers, f"{tag}: workers")
    time.sleep(0.3)

    # Added by a reload: every worker answers on it.
    w.write_config(dict(config(port, a1), workers=workers), name)
    p.send_signal(signal.SIGHUP)
    wait_for(lambda: (healthz(a1) or 0) and healthz(a1).status == 200,
             f"{tag}: admin added by the reload answers")
    for _ in range(6):
        check_eq(healthz(a1).json()["workers"], workers,
                 f"{tag}: every worker serves the admin")

    if workers > 1:
        # Workers started after the reload get the supervisor's socket.
        for victim in children(p.pid):
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: victim not in children(p.pid) and
                     len(children(p.pid)) == workers,
                     f"{tag}: the killed worker is restarted")
            time.sleep(0.3)
        settled = sorted(children(p.pid))
        time.sleep(2)
        check_eq(sorted(children(p.pid)), settled,
                 f"{tag}: no worker restarting over and over")
        text = open(errlog).read()
        check("in use" not in text and "exited with" not in text,
              f"{tag}: no restarted worker failed: {text}")
        wait_for(lambda: healthz(a1).json()["workers"] == workers,
                 f"{tag}: admin answering for every worker")

    # Moved by a reload: the new port answers, the old one is closed.
    w.write_config(dict(config(port, a2), workers=workers), name)
    p.send_signal(signal.SIGHUP)
    wait_for(lambda: (healthz(a2) or 0) and healthz(a2).status == 200,
             f"{tag}: admin moved by the reload answers")
    wait_for(lambda: refused(a1), f"{tag}: the old admin port is closed")

    # Other limits on the same address: the admin is built again on it.
    ADMIN["client_timeout"] = "1s"
    w.write_config(dict(config(port, a2), workers=workers), name)
    p.send_signal(signal.SIGHUP)
    wait_for(lambda: idle_closed_within(a2, 3),
             f"{tag}: the reloaded admin.client_timeout holds")
    del ADMIN["client_timeout"]

    # A reload whose admin port is taken is refused whole.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    a3 = taken.getsockname()[1]
    w.write_config(dict(config(port, a3, [NEW]), workers=workers), name)
    p.send_signal(signal.SIGHUP)
    wait_for(lambda: "admin.listen" in open(errlog).read() and
             "still serving the old config" in open(errlog).read(),
             f"{tag}: the refused reload says why")
    check_eq(c.get("/api/new").status, 404, f"{tag}: the old config serves")
    check_eq(healthz(a2).status, 200, f"{tag}: on the old admin port")
    taken.close()

    # Removed by a reload: the port is closed, the server serves on.
    w.write_config(dict(config(port, None, [NEW]), workers=workers), name)
    p.send_signal(signal.SIGHUP)
    wait_for(lambda: refused(a2), f"{tag}: admin removed by the reload")
    wait_for(lambda: c.get("/api/new").status == 200, f"{tag}: reloaded")
    check(p.poll() is None, f"{tag}: still running")

done("admin_added_by_reload")
