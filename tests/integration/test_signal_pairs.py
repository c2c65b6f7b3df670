#!/usr/bin/env python3
"""Signals sent back to back to a supervisor (workers: 2) are each handled:
every ordered pair of SIGHUP, SIGTERM and SIGUSR1, and HUP, HUP, TERM. A
SIGHUP before the stop reloads (a route the new file adds answers, or every
worker logs the reload), a SIGUSR1 before it reopens the access log (a new
file appears where the old one was renamed away), and a SIGTERM stops the
server with status 0. The supervisor used to keep only the last signal of
those pending together, so a stop or a reload was lost."""
import itertools
import os
import signal
import subprocess
import time

from harness import (CORRAL, Corral, World, check, check_eq, children, done,
                     free_port, wait_port)

w = World()
origin = w.start_origin()
NEW = {"path": "/api/new", "upstream": "o", "fetch": "/new"}


def config(port, alog, routes=()):
    return {
        "listen": f"127.0.0.1:{port}",
        "workers": 2,
        "access_log": alog,
        "upstreams": {"o": {"base": origin.base()}},
        "routes": [{"path": "/api/x/{id}", "upstream": "o", "fetch": "/x/{id}"},
                   *routes],
    }



def wait_for(cond, what, timeout=10):
    deadline = time.time() + timeout
    while not cond():
        check(time.time() < deadline, what)
        time.sleep(0.05)


HUP, TERM, USR1 = signal.SIGHUP, signal.SIGTERM, signal.SIGUSR1
sequences = [list(p) for p in itertools.product([HUP, TERM, USR1], repeat=2)]
sequences.append([HUP, HUP, TERM])

for n, seq in enumerate(sequences):
    name = ",".join(signal.Signals(s).name[3:] for s in seq)
    port = free_port()
    alog = w.path(f"access-{n}.log")
    path = w.write_config(config(port, alog), f"signals-{n}.json")
    errlog = w.path(f"signals-{n}.err")
    with open(errlog, "w") as err:
        p = subprocess.Popen([CORRAL, "-c", path], stderr=err)
    w.procs.append(p)
    wait_port(port, p)
    wait_for(lambda: len(children(p.pid)) == 2, f"{name}: two workers")
    # Each worker has its access log open once it serves.
    wait_for(lambda: os.path.exists(alog), f"{name}: the access log")
    time.sleep(0.3)

    stop = seq.index(TERM) if TERM in seq else len(seq)
    reload_ = HUP in seq[:stop]
    reopen = USR1 in seq[:stop]
    os.rename(alog, alog + ".1")
    w.write_config(config(port, alog, [NEW]), f"signals-{n}.json")
    for s in seq:
        os.kill(p.pid, s)

    if stop < len(seq):
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            check(False, f"{name}: SIGTERM stopped the server")
        check_eq(p.returncode, 0, f"{name}: exit status after the drain")
        if reload_:
            text = open(errlog).read()
            # Two HUPs pending at once merge into one (in the kernel, or
            # in the reactor's self-pipe); sent a moment apart under load,
            # they do not: each worker reloads once per HUP it saw, at
            # least once.
            hups = seq[:stop].count(HUP)
            n = text.count("reload: serving")
            check(2 <= n <= 2 * hups,
                  f"{name}: both workers reloaded before the stop "
                  f"({n} reloads for {hups} HUPs): {text}")
    else:
        if reload_:
            c = Corral(port, p)
            wait_for(lambda: {a.status for a in c.many("/api/new", 20)}
                     == {200},
                     f"{name}: every worker serves the reloaded config")
        time.sleep(0.5)
        check(p.poll() is None, f"{name}: no stop without SIGTERM")
    if reopen:
        wait_for(lambda: os.path.exists(alog),
                 f"{name}: SIGUSR1 reopened the access log", timeout=5)
    if p.poll() is None:
        p.send_signal(TERM)
        p.wait(timeout=15)
        check_eq(p.returncode, 0, f"{name}: exit status")

done("signal_pairs")
