#!/usr/bin/env python3
"""tools/rate-load against a server that closes keep-alive connections
left idle (as corral does after client_timeout). Regression: a connection
closed while idle was reconnected and made idle a second time while its
first entry was still on the idle stack, so the stack outgrew its array
(a heap overflow under ASan; a "malloc(): corrupted top size" abort in
a long tools/bench-l2 --cluster storm run)."""
import os
import shutil
import socket
import socketserver
import subprocess
import threading

from harness import World, cannot_run, check, check_eq, done

IDLE_S = 0.2
SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                   "tools", "rate-load.c")


class Handler(socketserver.BaseRequestHandler):
    """HTTP/1.1 keep-alive: one 2-byte answer per request head; the
    connection is closed once idle for IDLE_S."""

    def handle(self):
        self.request.settimeout(IDLE_S)
        buf = b""
        try:
            while True:
                try:
                    data = self.request.recv(4096)
                except socket.timeout:
                    return
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    self.request.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            return  # rate-load ends with RST


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


w = World()
cc = shutil.which("cc")
exe = w.path("rate-load")
built = cc is not None and subprocess.run(
    [cc, "-O1", "-g", "-fsanitize=address", "-o", exe, SRC],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
if not built:
    cannot_run("no cc able to build tools/rate-load.c with ASan")
else:
    srv = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    # 16 connections at 40 req/s: the idle stack is LIFO, so the ones at
    # its bottom sit idle far longer than IDLE_S and are closed, over and
    # over, during the 3 s run.
    p = subprocess.run(
        [exe, "-p", str(srv.server_address[1]), "-c", "16", "-r", "40",
         "-n", "120", "-d", "30"],
        capture_output=True, timeout=60)
    srv.shutdown()
    err = p.stderr.decode(errors="replace")
    report = [line for line in err.splitlines()
              if "AddressSanitizer" in line or line.strip().startswith("#0")]
    check(report == [], f"no ASan report: {' | '.join(report[:3])}")
    check_eq(p.returncode, 0, "rate-load's exit status")
    out = dict(line.split("=", 1) for line in p.stdout.decode().split()
               if "=" in line)
    check_eq(out.get("ok"), "120", "every request answered 200")
    check_eq(out.get("errors"), "0", "no request lost")
    check_eq(out.get("unfinished"), "0", "none unfinished")
done("rate_load_idle_close")
