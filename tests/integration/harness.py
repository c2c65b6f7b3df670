"""harness.py — real processes for corral's integration tests.

Starts tools/origin, redis-server, tools/delay-proxy and corral on free
loopback ports in a temp dir, talks HTTP to them (one-off requests and
thousands of concurrent clients over raw asyncio sockets) and RESP to
Redis, stops, resumes and restarts Redis, and stops everything by PID at
exit. Paths come from the environment meson sets: CORRAL (the binary),
ORIGIN (tools/origin) and DELAY_PROXY (tools/delay-proxy).
With CORRAL_IT_KEEP_GOING=1 a failed check is reported and the test goes
on (it still fails at the end): to see every assertion a change breaks.
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
DELAY_PROXY = os.environ.get("DELAY_PROXY", "build/tools/delay-proxy")
ADMIN_TOKEN = "it-admin-token"
KEEP_GOING = os.environ.get("CORRAL_IT_KEEP_GOING") == "1"

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

checks = 0
failures = 0
missing = []  # tools a part of the test needed and did not find


def check(cond, msg):
    global checks, failures
    checks += 1
    if not cond:
        print("FAIL:", msg, file=sys.stderr)
        failures += 1
        if not KEEP_GOING:
            sys.exit(1)


def fills_reach(corral, node, name, timeout=15):
    """Asks corral for /api/<name>N, a new key each time, until one fill is
    found written to node (a Redis): True, or False after timeout s."""
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n += 1
        if (corral.get(f"/api/{name}{n}").status == 200 and
                node.scan(f"t:*{name}{n}*".encode()) != []):
            return True
        time.sleep(0.1)
    return False


def require(cond, msg):
    """A check the rest of the test cannot do without: fails at once."""
    if not cond:
        print("FAIL:", msg, file=sys.stderr)
        sys.exit(1)


def check_eq(got, want, msg):
    check(got == want, f"{msg}: got {got!r}, want {want!r}")


def tool(name):
    """The path of a program a part of the test needs, or None when it is
    not installed. Then the caller skips that part, and the test, when
    nothing failed, exits 77 (meson's skip) instead of passing: a check
    that did not run is never counted as one that passed."""
    path = shutil.which(name)
    if path is None:
        cannot_run(f"{name} is not installed")
    return path


def cannot_run(why):
    """A part of the test could not run here (why): the test ends as a
    skip (77) unless something failed."""
    print(f"# skipped part: {why}")
    missing.append(why)


def children(pid):
    """The pids of pid's children (a supervisor's workers)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


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
            require(p.poll() is None and time.time() < deadline,
                    "origin did not start")
            time.sleep(0.02)
        port = int(open(portfile).read())
        return Origin(port, tls=cert is not None)

    def start_redis(self, extra=(), password=None):
        """A real redis-server on a free loopback port (extra: more of its
        arguments, e.g. "--replicaof", "127.0.0.1", port); with password,
        it requires it (and gives it to its primary when a replica)."""
        if password:
            extra = (*extra, "--requirepass", password,
                     "--masterauth", password)
        r = Redis(self, free_port(), extra, password=password)
        if not hasattr(self, "redises"):
            self.redises = []
        self.redises.append(r)
        r.start()
        return r

    def start_sentinel(self, master, master_port, down_after_ms=500,
                       failover_timeout_ms=2000, password=None):
        """redis-server --sentinel on a free loopback port, watching the
        primary at master_port as master (quorum 2); with password, its
        clients (and the other sentinels) must AUTH with it. Returns its
        Redis (which kill() stops)."""
        port = free_port()
        conf = self.path(f"sentinel-{port}.conf")
        with open(conf, "w") as f:
            f.write(f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                    f"sentinel monitor {master} 127.0.0.1 {master_port} 2\n"
                    f"sentinel down-after-milliseconds {master} "
                    f"{down_after_ms}\n"
                    f"sentinel failover-timeout {master} "
                    f"{failover_timeout_ms}\n")
            if password:
                f.write(f"requirepass {password}\n"
                        f"sentinel sentinel-pass {password}\n")
        r = Redis(self, port, sentinel_conf=conf, password=password)
        if not hasattr(self, "redises"):
            self.redises = []
        self.redises.append(r)
        r.start()
        return r

    def start_sentinel_group(self, master, down_after_ms=500,
                             failover_timeout_ms=2000, password=None):
        """A primary, one replica and three sentinels watching them, ready:
        the replica holds the primary's data, every sentinel sees the
        replica and the two others (a failover can then be elected); with
        password, the sentinels require it. Returns (primary, replica,
        sentinels, l2), l2 being the config's "l2" object that reaches the
        primary through them (without the password)."""
        # Redis waits repl-diskless-sync-delay (5 s) before the first full
        # sync: a primary killed before it leaves an empty replica, and a
        # promoted empty replica is Redis losing its data.
        primary = self.start_redis(("--repl-diskless-sync-delay", "0"))
        replica = self.start_redis(("--replicaof", "127.0.0.1",
                                    str(primary.port)))
        sentinels = [self.start_sentinel(master, primary.port, down_after_ms,
                                         failover_timeout_ms, password)
                     for _ in range(3)]

        def ready():
            info = replica.cmd("INFO", "replication").decode()
            if "master_link_status:up" not in info:
                return False
            for s in sentinels:
                m = s.cmd("SENTINEL", "MASTER", master)
                info = dict(zip(m[::2], m[1::2]))
                if (int(info[b"num-slaves"]) < 1 or
                        int(info[b"num-other-sentinels"]) < 2):
                    return False
            return True

        deadline = time.monotonic() + 30
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.2)
        require(ready(), "the sentinels see the replica and each other")
        l2 = {"sentinel": {"master": master,
                           "nodes": [f"127.0.0.1:{s.port}"
                                     for s in sentinels]},
              "prefix": "t:", "timeout": "200ms"}
        return primary, replica, sentinels, l2

    def start_cluster(self, primaries=3, replicas=0, node_timeout_ms=2000,
                      password=None):
        """A Redis Cluster on free loopback ports: primaries * (1 +
        replicas) redis-servers with cluster-enabled, joined by redis-cli
        --cluster create, ready when every node says cluster_state:ok and
        knows every other; with password, every node requires it. Stopped
        by PID with the rest. Returns a Cluster (its nodes, and the
        config's "l2" with every node a seed, without the password)."""
        require(shutil.which("redis-cli") is not None, "redis-cli")
        nodes = []
        for _ in range(primaries * (1 + replicas)):
            port = free_port()
            nodes.append(self.start_redis((
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-port", str(free_port()),
                "--cluster-node-timeout", str(node_timeout_ms),
                "--repl-diskless-sync-delay", "0"), password=password))
        auth = ["-a", password, "--no-auth-warning"] if password else []
        p = subprocess.run(
            ["redis-cli", *auth, "--cluster", "create",
             *[f"127.0.0.1:{n.port}" for n in nodes],
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
        require(p.returncode == 0,
                f"redis-cli --cluster create: {p.stderr.decode()[-300:]}")
        c = Cluster(nodes)
        deadline = time.monotonic() + 30
        while not c.ready() and time.monotonic() < deadline:
            time.sleep(0.1)
        require(c.ready(), "every cluster node says cluster_state:ok")
        return c

    def write_config(self, cfg, name="corral.json"):
        path = self.path(name)
        with open(path, "w") as f:
            if isinstance(cfg, str):
                f.write(cfg)
            else:
                json.dump(cfg, f, indent=2)
        return path

    def start_corral(self, cfg, env=None, admin=False, log=False):
        """corral on a free port. admin: an admin listener on another free
        port with ADMIN_TOKEN, waited for too. log: its stderr goes to a
        file (Corral.log() reads it) instead of the test's."""
        port = free_port()
        cfg = dict(cfg)
        cfg["listen"] = f"127.0.0.1:{port}"
        env = dict(env or {})
        admin_port = None
        if admin:
            admin_port = free_port()
            cfg["admin"] = {"listen": f"127.0.0.1:{admin_port}",
                            "token": "${CORRAL_ADMIN_TOKEN}"}
            env["CORRAL_ADMIN_TOKEN"] = ADMIN_TOKEN
        n = len(self.corrals)
        path = self.write_config(cfg, f"corral-{n}.json")
        logpath = self.path(f"corral-{n}.log") if log else None
        stderr = open(logpath, "wb") if log else None
        p = subprocess.Popen([CORRAL, "-c", path], stderr=stderr,
                             env={**os.environ, **env})
        if stderr:
            stderr.close()
        self.procs.append(p)
        self.corrals.append(p)
        wait_port(port, p)
        if admin_port:
            wait_port(admin_port, p)
        return Corral(port, p, admin_port, logpath)

    def start_fleet(self, cfg, n=2, **kw):
        """n corrals on cfg (sharing its l2), each with an admin listener,
        once each sees Redis up."""
        cs = [self.start_corral(cfg, admin=True, **kw) for _ in range(n)]
        for c in cs:
            check(c.wait_l2("up"), "every instance sees Redis")
        return cs

    def start_delay_proxy(self, to_port, delay_ms):
        """tools/delay-proxy in front of 127.0.0.1:to_port, delay_ms of
        round trip; returns its port."""
        require(os.access(DELAY_PROXY, os.X_OK),
                f"DELAY_PROXY is not built: {DELAY_PROXY}")
        portfile = self.path(f"proxy-{len(self.procs)}.port")
        p = subprocess.Popen([DELAY_PROXY, "--listen", "0", "--portfile",
                              portfile, "--to", f"127.0.0.1:{to_port}",
                              "--delay-ms", str(delay_ms)])
        self.procs.append(p)
        deadline = time.time() + 10
        while not os.path.exists(portfile):
            require(p.poll() is None and time.time() < deadline,
                    "delay-proxy did not start")
            time.sleep(0.02)
        return int(open(portfile).read())


class Cluster:
    """The nodes of a Redis Cluster (Redis objects) and what a test asks of
    them."""

    def __init__(self, nodes):
        self.nodes = nodes
        self.l2 = {"cluster": [f"127.0.0.1:{n.port}" for n in nodes],
                   "prefix": "t:", "timeout": "200ms"}

    def ready(self):
        n = len(self.nodes)
        for node in self.nodes:
            try:
                info = node.cmd("CLUSTER", "INFO").decode()
                known = node.cmd("CLUSTER", "NODES").decode()
            except (OSError, RedisError):
                return False
            if ("cluster_state:ok" not in info or
                    f"cluster_known_nodes:{n}" not in info or
                    len(known.strip().splitlines()) != n):
                return False
        return True

    def primaries(self):
        """The nodes that own slots, by CLUSTER SLOTS."""
        ports = {r[2][1] for r in self.any().cmd("CLUSTER", "SLOTS")}
        return [n for n in self.nodes if n.port in ports]

    def any(self):
        for n in self.nodes:
            if n.proc and n.proc.poll() is None:
                return n
        raise AssertionError("no cluster node runs")

    def keyslot(self, name):
        return self.any().cmd("CLUSTER", "KEYSLOT", name)

    def owner(self, name):
        """The primary whose slots hold name."""
        slot = self.keyslot(name)
        for first, last, (host, port, *_), *_ in self.any().cmd("CLUSTER",
                                                                "SLOTS"):
            if first <= slot <= last:
                return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"no primary for slot {slot}")


class RedisError(Exception):
    """An error reply."""


class RedisConn:
    """One RESP connection: commands in, parsed replies out."""

    def __init__(self, port, password=None, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.buf = b""
        if password:
            self.cmd("AUTH", password)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n" % len(a))
            out.append(a)
            out.append(b"\r\n")
        self.sock.sendall(b"".join(out))

    def _fill(self, n):
        while len(self.buf) < n:
            b = self.sock.recv(max(65536, n - len(self.buf)))
            if not b:
                raise ConnectionError("redis closed the connection")
            self.buf += b

    def _line(self):
        while b"\r\n" not in self.buf:
            b = self.sock.recv(65536)
            if not b:
                raise ConnectionError("redis closed the connection")
            self.buf += b
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def reply(self):
        """The next reply: bytes, int, None, a list, or RedisError (not
        raised: an element of an array may be one)."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RedisError(rest.decode("latin-1"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            self._fill(n + 2)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ConnectionError(f"not RESP: {line[:80]!r}")

    def cmd(self, *args):
        """One command; an error reply is raised as RedisError."""
        self.send(*args)
        r = self.reply()
        if isinstance(r, RedisError):
            raise r
        return r


class Redis:
    """redis-server, which a test can stop (SIGSTOP) and resume, SIGKILL
    and start again on the same port (with its data or empty), and talk
    to with RESP."""

    def __init__(self, world, port, extra=(), sentinel_conf=None,
                 password=None):
        self.world = world
        self.port = port
        self.proc = None
        self.requirepass = password  # what its configuration requires
        self.password = None
        self.rdb = f"redis-{port}.rdb"
        self.extra = list(extra)
        self.sentinel_conf = sentinel_conf

    def start(self):
        if self.sentinel_conf:
            cmd = ["redis-server", self.sentinel_conf, "--sentinel"]
        else:
            cmd = ["redis-server", "--port", str(self.port), "--bind",
                   "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
                   self.world.dir, "--dbfilename", self.rdb, *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)
        self.password = self.requirepass

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        """SIGSTOP: connections stay open, nothing is answered."""
        self.proc.send_signal(signal.SIGSTOP)

    def cont(self):
        self.proc.send_signal(signal.SIGCONT)

    def restart(self, persist=False):
        """SIGKILL and start again on the same port: with persist, with
        the data it had (saved just before); else empty."""
        path = os.path.join(self.world.dir, self.rdb)
        if persist:
            self.cmd("SAVE")
        self.kill()
        if not persist and os.path.exists(path):
            os.unlink(path)
        self.start()

    def conn(self):
        return RedisConn(self.port, self.password)

    def cmd(self, *args):
        """One command on a new connection; returns the parsed reply
        (RedisError raised)."""
        with self.conn() as c:
            return c.cmd(*args)

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

    def scan(self, pattern, db=None):
        """Every key matching pattern (bytes), in db (default 0)."""
        keys = set()
        with self.conn() as c:
            if db is not None:
                c.cmd("SELECT", db)
            cursor = b"0"
            for _ in range(100000):
                cursor, batch = c.cmd("SCAN", cursor, "MATCH", pattern,
                                      "COUNT", 1000)
                keys.update(batch)
                if cursor == b"0":
                    break
        return sorted(keys)

    def client_kill(self, kind):
        """CLIENT KILL TYPE kind (normal, pubsub): how many went."""
        return self.cmd("CLIENT", "KILL", "TYPE", kind)


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


def l2_name(prefix, kind, key):
    """corral's name in Redis of one thing (kind: b"v:" value, b"l:" lease,
    b"rate:"...) of key (all bytes): prefix {tag} kind key, tag 8 hex
    digits of FNV-1a over key (doc/fleet.md)."""
    h = 2166136261
    for b in key:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return prefix + b"{%08x}" % h + kind + key


def _crc16_table():
    table = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = (c << 1) ^ 0x1021 if c & 0x8000 else c << 1
        table.append(c & 0xFFFF)
    return table


CRC16 = _crc16_table()


def key_slot(name):
    """A Redis Cluster slot of name (bytes), as CLUSTER KEYSLOT says:
    CRC16-XMODEM of its hash tag (between the first '{' and the next '}',
    when not empty) or of the whole name, mod 16384."""
    s = name.find(b"{")
    if s >= 0:
        e = name.find(b"}", s + 1)
        if e > s + 1:
            name = name[s + 1:e]
    c = 0
    for x in name:
        c = ((c << 8) & 0xFFFF) ^ CRC16[((c >> 8) ^ x) & 0xFF]
    return c & 16383


def l2_split(name):
    """(prefix, kind, key) of a name l2_name() makes (kind up to ':')."""
    i = name.index(b"{")
    j = name.index(b"}", i)
    k = name.index(b":", j) + 1
    return name[:i], name[j + 1:k], name[k:]


def fleet_config(origin, redis_port, timeout="200ms", prefix="t:", l2=None,
                 upstream=None, routes=None, **top):
    """A config for an instance of a fleet sharing the Redis on redis_port:
    upstream "o" is origin; by default one route /api/{k} -> /v/{k}, 1m."""
    cfg = {
        "l2": {"redis": f"127.0.0.1:{redis_port}", "prefix": prefix,
               "timeout": timeout, **(l2 or {})},
        "upstreams": {"o": {"base": origin.base(), **(upstream or {})}},
        "routes": routes or [{"path": "/api/{k}", "upstream": "o",
                              "fetch": "/v/{k}", "strategy": "1m"}],
    }
    cfg.update(top)
    return cfg


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case name -> value
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.headers} {self.body[:200]!r}>"


def parse_metrics(text):
    """{(name, frozenset(labels)): value} of a Prometheus text scrape."""
    out = {}
    for line in text.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        labels = frozenset()
        if "{" in name:
            name, _, rest = name.partition("{")
            labels = frozenset(
                tuple(p.split("=", 1)) for p in
                rest.rstrip("}").replace('"', "").split(",") if p)
        out[(name, labels)] = float(value)
    return out


def max_in_window(times, window):
    """The most of the sorted times in any window of that length."""
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def fleet_of_two(timeout="200ms"):
    """What most fleet tests start with: an origin, a redis-server and two
    corrals sharing it (fleet_config), each with an admin listener and
    Redis up. Returns (origin, redis, a, b)."""
    w = World()
    origin = w.start_origin()
    redis = w.start_redis()
    a, b = w.start_fleet(fleet_config(origin, redis.port, timeout=timeout))
    return origin, redis, a, b


class Corral:
    def __init__(self, port, proc, admin_port=None, logpath=None):
        self.port = port
        self.proc = proc
        self.admin_port = admin_port
        self.logpath = logpath

    def admin(self, method, path, token=ADMIN_TOKEN, timeout=15):
        """A call on the admin listener, with the token."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return asyncio.run(request(self.admin_port, path, headers, method,
                                   timeout))

    def healthz(self):
        return self.admin("GET", "/healthz", token=None).json()

    def wait_l2(self, state, timeout=10.0, poke=None):
        """Polls /healthz until l2 is state (calling poke() between
        polls, e.g. to make traffic); returns whether it got there."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.healthz().get("l2") == state:
                return True
            if poke:
                poke()
            time.sleep(0.05)
        return self.healthz().get("l2") == state

    def metrics(self):
        """{(name, frozenset(labels)): value} of a /metrics scrape."""
        return parse_metrics(self.admin("GET", "/metrics", token=None).body)

    def log(self):
        """What it wrote on stderr so far (started with log=True)."""
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

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


async def timed_request(port, path, delay=0.0, timeout=15, headers=None):
    """Waits delay seconds, then one request. Returns (sent, answered,
    response or the exception), times on time.monotonic()."""
    await asyncio.sleep(delay)
    sent = time.monotonic()
    try:
        r = await request(port, path, headers, "GET", timeout)
    except Exception as e:  # noqa: BLE001 - the test reports it
        r = e
    return sent, time.monotonic(), r


def status_or_error(x):
    """A Response's status, or what went wrong instead (for messages)."""
    return x.status if isinstance(x, Response) else repr(x)


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
    if failures:
        print(f"FAIL {name} ({failures} of {checks} checks)", file=sys.stderr)
        sys.exit(1)
    require(checks > 0, f"{name} checked nothing")
    if missing:
        print(f"SKIP {name} ({checks} checks passed; not run: "
              f"{'; '.join(missing)})")
        sys.exit(77)
    print(f"ok {name} ({checks} checks)")
