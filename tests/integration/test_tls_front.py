"""listen_tls: the TLS front of the client port. curl --http2 negotiates
h2 by ALPN and gets cached answers with Cache-Status; --http1.1 gets
HTTP/1.1; h2load over TLS succeeds; TLS 1.1 is refused; a client that
never sends its ClientHello is closed by client_timeout and garbage
instead of one closes only that connection, while others are served;
SIGHUP re-reads the certificate (and a bad one keeps the old); --check
names a missing key; metrics and the access log carry h1/h2 and TLS."""
import re
import signal
import socket
import subprocess
import time

from harness import (CORRAL, World, check, check_eq, done, free_port,
                     require, tool, wait_port)

w = World()
curl = tool("curl")
h2load = tool("h2load")
openssl = tool("openssl")
require(curl and h2load and openssl, "curl, h2load and openssl are installed")


def make_cert(name):
    cert, key = w.path(f"{name}-cert.pem"), w.path(f"{name}-key.pem")
    r = subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days",
                        "1", "-subj", "/CN=localhost", "-keyout", key,
                        "-out", cert], capture_output=True, timeout=30)
    require(r.returncode == 0, f"openssl req: {r.stderr!r}")
    return cert, key


def fingerprint_of_file(cert):
    r = subprocess.run([openssl, "x509", "-noout", "-fingerprint",
                        "-sha256", "-in", cert], capture_output=True,
                       timeout=10)
    return r.stdout.decode().strip()


def s_client(port, *args):
    return subprocess.run([openssl, "s_client", "-connect",
                           f"127.0.0.1:{port}", *args],
                          input=b"", capture_output=True, timeout=15)


def served_fingerprint(port):
    r = s_client(port, "-servername", "localhost")
    pem = re.search(rb"-----BEGIN CERTIFICATE-----.*?"
                    rb"-----END CERTIFICATE-----", r.stdout, re.S)
    check(pem is not None, f"s_client shows the certificate: {r.stderr!r}")
    p = subprocess.run([openssl, "x509", "-noout", "-fingerprint",
                        "-sha256"], input=pem.group(0), capture_output=True,
                       timeout=10)
    return p.stdout.decode().strip()


cert, key = make_cert("a")
cert_b, key_b = make_cert("b")
live_cert, live_key = w.path("live-cert.pem"), w.path("live-key.pem")
for src, dst in ((cert, live_cert), (key, live_key)):
    with open(src, "rb") as f, open(dst, "wb") as g:
        g.write(f.read())

origin = w.start_origin()
alog = w.path("access.log")
tport = free_port()
corral = w.start_corral({
    "access_log": alog,
    "listen_tls": {"listen": f"127.0.0.1:{tport}", "cert": live_cert,
                   "key": live_key},
    "limits": {"client_timeout": "1s"},
    "upstreams": {"o": {"base": origin.base(), "timeout": "10s"}},
    "routes": [
        {"path": "/api/x", "upstream": "o", "fetch": "/x",
         "strategy": "short"},
        {"path": "/api/load", "upstream": "o", "fetch": "/load",
         "strategy": "short"},
    ],
}, admin=True, log=True)
wait_port(tport, corral.proc)
base = f"https://127.0.0.1:{tport}"


def get(path, *args):
    """One request over TLS: (status, headers, body, http_version)."""
    hfile = w.path("headers")
    r = subprocess.run([curl, "-sS", "-k", "--max-time", "10", "-D", hfile,
                        "-o", "-", "-w", "\n%{http_version}", *args,
                        base + path], capture_output=True)
    check_eq(r.returncode, 0, f"curl {args} {path}: {r.stderr!r}")
    body, _, version = r.stdout.rpartition(b"\n")
    with open(hfile, "rb") as f:
        lines = f.read().decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, body, version.decode()


# ---- h2 by ALPN, then HTTP/1.1, the same cache ----
status, hd, body, version = get("/api/x", "--http2")
check_eq(version, "2", "ALPN chose h2")
check_eq(status, 200, "first answer over h2")
check_eq(hd.get("cache-status"), "corral; fwd=miss; stored", "stored")
status, hd, body2, version = get("/api/x", "--http2")
check_eq(version, "2", "h2 again")
check(hd.get("cache-status", "").startswith("corral; hit; ttl="),
      f"a hit over h2: {hd.get('cache-status')}")
check_eq(body2, body, "the hit's body over h2")
status, hd, body3, version = get("/api/x", "--http1.1")
check_eq(version, "1.1", "ALPN chose http/1.1")
check_eq(status, 200, "answer over TLS HTTP/1.1")
check(hd.get("cache-status", "").startswith("corral; hit; ttl="),
      f"a hit over HTTP/1.1: {hd.get('cache-status')}")
check_eq(body3, body, "the same body over HTTP/1.1")
check_eq(origin.calls("/x"), 1, "one upstream call for all three")
# The cleartext port still answers.
check_eq(corral.get("/api/x").status, 200, "the plain port")

# ---- h2load over TLS ----
for args in (["-n", "200", "-c", "4"], ["-n", "200", "-c", "4", "-m", "8"],
             ["-n", "200", "-c", "4", "--h1"]):
    r = subprocess.run([h2load, *args, base + "/api/load"],
                       capture_output=True, timeout=60)
    out = r.stdout.decode()
    check("200 succeeded, 0 failed, 0 errored" in out,
          f"h2load {' '.join(args)} over TLS: {out[-600:]}")
    check(("h2" in out) if "--h1" not in args else ("http/1.1" in out),
          f"h2load {' '.join(args)} protocol: {out[:400]}")

# ---- TLS 1.1 refused, TLS 1.2 and 1.3 accepted ----
r = s_client(tport, "-tls1_2")
check(r.returncode == 0 and b"TLSv1.2" in r.stdout,
      f"TLS 1.2 accepted: {r.stdout[-300:]!r}")
r = s_client(tport, "-tls1_3")
check(r.returncode == 0 and b"TLSv1.3" in r.stdout,
      f"TLS 1.3 accepted: {r.stdout[-300:]!r}")
# SECLEVEL=0 lets this client offer TLS 1.1: the refusal is the server's.
r = s_client(tport, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
err = r.stderr.decode()
check(r.returncode != 0, f"TLS 1.1 refused: {r.stdout[-300:]!r}")
check("protocol version" in err or "unsupported protocol" in err,
      f"refused for its version: {err[-300:]}")


def open_raw():
    s = socket.create_connection(("127.0.0.1", tport), timeout=10)
    return s


def closed_within(s, seconds):
    """Whether the server closes s within seconds (reading what it sends)."""
    s.settimeout(seconds)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            if s.recv(4096) == b"":
                return True
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True
    return False


# ---- a client that never sends its ClientHello, and one that sends
# garbage: each closed, the others served ----
silent = open_raw()
garbage = open_raw()
garbage.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
check(closed_within(garbage, 5), "garbage instead of a ClientHello: closed")
status, _, _, version = get("/api/x", "--http2")
check_eq((status, version), (200, "2"), "served while a client is silent")
check(closed_within(silent, 10), "a silent client closed by client_timeout")
status, _, _, version = get("/api/x", "--http1.1")
check_eq((status, version), (200, "1.1"), "served after both")

# ---- metrics and the access log ----
m = corral.metrics()


def metric(name, **labels):
    return m.get((name, frozenset(labels.items())), 0)


check(metric("corral_client_protocol_connections_total", proto="h2") >= 3,
      "h2 connections counted")
check(metric("corral_client_protocol_requests_total", proto="h2") >= 400,
      "h2 requests counted")
check(metric("corral_client_tls_connections_total", tls="1",
             proto="h2") >= 3, "TLS h2 connections counted")
check(metric("corral_client_tls_connections_total", tls="1",
             proto="h1") >= 2, "TLS h1 connections counted")
check(metric("corral_client_tls_connections_total", tls="1",
             result="failed") >= 2, "failed handshakes counted")
check(metric("corral_client_timeouts_total") >= 1, "the timeout counted")
time.sleep(1.3)  # the access log is flushed every second
lines = open(alog).read().splitlines()
check(any(l.endswith(" h2") and " GET /api/x 200 " in l for l in lines),
      "an h2 line in the access log")
check(sum(l.endswith(" h1") and " GET /api/x 200 " in l for l in lines) >= 3,
      "h1 lines (TLS and plain) in the access log")

# ---- SIGHUP re-reads the certificate; a bad one keeps the old ----
check_eq(served_fingerprint(tport), fingerprint_of_file(cert),
         "the first certificate is served")
for src, dst in ((cert_b, live_cert), (key_b, live_key)):
    with open(src, "rb") as f, open(dst, "wb") as g:
        g.write(f.read())


def reloads():
    return corral.log().count("reload: serving")


n = reloads()
corral.proc.send_signal(signal.SIGHUP)
deadline = time.monotonic() + 10
while reloads() == n and time.monotonic() < deadline:
    time.sleep(0.05)
check(reloads() > n, f"reloaded: {corral.log()[-500:]}")
check_eq(served_fingerprint(tport), fingerprint_of_file(cert_b),
         "new connections see the new certificate")
with open(live_cert, "w") as f:
    f.write("not a certificate\n")
corral.proc.send_signal(signal.SIGHUP)
deadline = time.monotonic() + 10
while "still serving the old config" not in corral.log() and \
        time.monotonic() < deadline:
    time.sleep(0.05)
log = corral.log()
check("still serving the old config" in log and "listen_tls.cert" in log,
      f"a bad certificate is refused with an error: {log[-500:]}")
check_eq(served_fingerprint(tport), fingerprint_of_file(cert_b),
         "the old certificate stays")
status, _, _, version = get("/api/x", "--http2")
check_eq((status, version), (200, "2"), "still served over h2")
check(corral.alive(), "corral is alive")

# ---- --check ----
for what, cfg_tls, want in (
        ("missing key", {"listen": "127.0.0.1:1", "cert": cert,
                         "key": w.path("nope.pem")}, "listen_tls.key"),
        ("mismatched key", {"listen": "127.0.0.1:1", "cert": cert,
                            "key": key_b}, "listen_tls.key"),
        ("missing cert", {"listen": "127.0.0.1:1",
                          "cert": w.path("nope.pem"), "key": key},
         "listen_tls.cert"),
        ("bad address", {"listen": "127.0.0.1", "cert": cert, "key": key},
         "listen_tls.listen")):
    path = w.write_config({
        "listen": "127.0.0.1:2",
        "listen_tls": cfg_tls,
        "upstreams": {"o": {"base": "http://127.0.0.1:3"}},
        "routes": [{"path": "/a", "upstream": "o", "fetch": "/a"}],
    }, f"check-{what.replace(' ', '-')}.json")
    r = subprocess.run([CORRAL, "--check", "-c", path], capture_output=True,
                       timeout=10)
    out = (r.stdout + r.stderr).decode()
    check(r.returncode != 0, f"--check refuses a {what}")
    check(re.search(re.escape(path) + r":\d+: " + re.escape(want), out)
          is not None, f"--check names file:line: {want} for a {what}: {out}")

# ---- two workers: each binds the TLS port beside the other ----
tport2 = free_port()
c2 = w.start_corral({
    "workers": 2,
    "listen_tls": {"listen": f"127.0.0.1:{tport2}", "cert": cert,
                   "key": key},
    "upstreams": {"o": {"base": origin.base(), "timeout": "10s"}},
    "routes": [{"path": "/api/x", "upstream": "o", "fetch": "/x",
                "strategy": "short"}],
})
wait_port(tport2, c2.proc)
base = f"https://127.0.0.1:{tport2}"
for i in range(8):
    status, _, _, version = get("/api/x", "--http2" if i % 2 else "--http1.1")
    check_eq(status, 200, f"two workers, TLS request {i}")
r = subprocess.run([h2load, "-n", "200", "-c", "8", base + "/api/x"],
                   capture_output=True, timeout=60)
check("200 succeeded, 0 failed, 0 errored" in r.stdout.decode(),
      f"h2load over TLS on two workers: {r.stdout.decode()[-400:]}")

# A client silent in its handshake when SIGTERM comes does not hold the
# drain up, and the exit is clean (done() checks both corrals' status).
tport = tport2
late = open_raw()
done("tls_front")
