"""harness.py — real processes for corral's integration tests.

Starts tools/origin and corral on free loopback ports in a temp dir, talks
HTTP to them (one-off requests and thousands of concurrent clients over raw
asyncio sockets), and stops everything by PID at exit. Paths come from the
environment meson sets: CORRAL (the binary) and ORIGIN (tools/origin).
"""
import asyncio
import atexit
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

CORRAL = os.environ.get("CORRAL", "build/src/gateway/corral")
ORIGIN = os.environ.get("ORIGIN", "tools/origin")

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

checks = 0


def check(cond, msg):
    global checks
    checks += 1
    if not cond:
        print("FAIL:", msg, file=sys.stderr)
        sys.exit(1)


def check_eq(got, want, msg):
    check(got == want, f"{msg}: got {got!r}, want {want!r}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"port {port} did not open")


worlds = []


class World:
    """The processes of one test file, stopped at exit."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="corral-it-")
        self.procs = []
        self.corrals = []
        worlds.append(self)
        atexit.register(self.stop)

    def stop(self):
        """Stops everything; returns the exit codes of the corrals."""
        for r in getattr(self, "redises", []):
            r.kill()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
        shutil.rmtree(self.dir, ignore_errors=True)
        return [p.returncode for p in self.corrals]

    def path(self, name):
        return os.path.join(self.dir, name)

    def start_origin(self, cert=None, key=None):
        portfile = self.path(f"origin-{len(self.procs)}.port")
        cmd = [sys.executable, ORIGIN, "--port", "0", "--portfile", portfile]
        if cert:
            cmd += ["--tls-cert", cert, "--tls-key", key]
        p = subprocess.Popen(cmd)
        self.procs.append(p)
        deadline = time.time() + 10
        while not os.path.exists(portfile):
            check(p.poll() is None and time.time() < deadline,
                  "origin did not start")
            time.sleep(0.02)
        port = int(open(portfile).read())
        return Origin(port, tls=cert is not None)

    def start_redis(self):
        """A real redis-server on a free loopback port."""
        r = Redis(self, free_port())
        if not hasattr(self, "redises"):
            self.redises = []
        self.redises.append(r)
        r.start()
        return r

    def write_config(self, cfg, name="corral.json"):
        path = self.path(name)
        with open(path, "w") as f:
            if isinstance(cfg, str):
                f.write(cfg)
            else:
                json.dump(cfg, f, indent=2)
        return path

    def start_corral(self, cfg, env=None):
        port = free_port()
        cfg = dict(cfg)
        cfg["listen"] = f"127.0.0.1:{port}"
        path = self.write_config(cfg, f"corral-{len(self.corrals)}.json")
        p = subprocess.Popen([CORRAL, "-c", path],
                             env={**os.environ, **(env or {})})
        self.procs.append(p)
        self.corrals.append(p)
        wait_port(port, p)
        return Corral(port, p)


class Redis:
    """redis-server, which a test can SIGKILL and start again on the same
    port, and talk to with raw RESP."""

    def __init__(self, world, port):
        self.world = world
        self.port = port
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.world.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def command(self, *args):
        """One command; returns the raw reply bytes."""
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        with socket.create_connection(("127.0.0.1", self.port), 5) as s:
            s.sendall(out)
            reply = s.recv(1 << 20)
        return reply


class Origin:
    def __init__(self, port, tls=False):
        self.port = port
        self.tls = tls

    def base(self):
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def control(self, method, path, body=None):
        # The control API is plain HTTP even when serving TLS only when not
        # tls; with TLS we skip verification for the control channel only.
        import ssl
        ctx = None
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base() + path, data=data,
                                     method=method)
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return json.loads(r.read() or b"null")

    def behave(self, path, **beh):
        return self.control("PUT", f"/_origin/behaviour?path={path}", beh)

    def calls(self, path):
        return self.control("GET", f"/_origin/calls?path={path}")["calls"]

    def total(self):
        return self.control("GET", "/_origin/calls")["total"]

    def reset(self):
        return self.control("POST", "/_origin/reset", {})


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case name -> value
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.headers} {self.body[:200]!r}>"


class Corral:
    def __init__(self, port, proc):
        self.port = port
        self.proc = proc

    def alive(self):
        return self.proc.poll() is None

    def get(self, path, headers=None, method="GET", timeout=15):
        return asyncio.run(request(self.port, path, headers, method, timeout))

    def many(self, path, n, timeout=30, paths=None):
        """n concurrent clients, one connection each."""
        async def all_():
            ps = paths or [path] * n
            return await asyncio.gather(
                *(request(self.port, p, None, "GET", timeout) for p in ps))
        return asyncio.run(all_())


async def read_response(reader, method="GET"):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    body = b""
    if method != "HEAD" and status not in (204, 304) and n:
        body = await reader.readexactly(n)
    return Response(status, headers, body)


async def request(port, path, headers=None, method="GET", timeout=15):
    async def go():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
            for k, v in (headers or {}).items():
                lines.append(f"{k}: {v}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            await writer.drain()
            return await read_response(reader, method)
        finally:
            writer.close()
    return await asyncio.wait_for(go(), timeout)


def raw(port, data, timeout=5.0, chunks=None, delay=0.0):
    """Sends bytes (optionally in pieces) and returns all the server says
    until it closes or goes quiet."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        if chunks:
            for c in chunks:
                s.sendall(c)
                time.sleep(delay)
        else:
            s.sendall(data)
        out = b""
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            out += b
            if b"\r\n\r\n" in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        if len(rest) >= int(line.split(b":")[1]):
                            return out
        return out
    finally:
        s.close()


def status_of(answer):
    if not answer.startswith(b"HTTP/1."):
        return None
    return int(answer.split(b" ")[1])


def done(name):
    """Stops every process; a corral that did not drain and exit 0 (a
    sanitizer report, a crash) fails the test."""
    for w in worlds:
        for rc in w.stop():
            check_eq(rc, 0, "corral's exit status after SIGTERM")
    print(f"ok {name} ({checks} checks)")
