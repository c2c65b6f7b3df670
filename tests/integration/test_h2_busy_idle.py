"""An HTTP/2 connection busy with hits is not idle: a hit answered in the
turn its request came used to leave the connection's idle deadline where
it was, so client_timeout after the connection first went idle it got a
GOAWAY in the middle of its requests (h2load counted them failed). Now
each request restarts the idle time, over h2c and over TLS (h2), while a
connection that sends nothing is still closed."""
import socket
import subprocess
import time

from harness import (World, check, done, free_port, require, tool,
                     wait_port)

w = World()
h2load = tool("h2load")
openssl = tool("openssl")
require(h2load and openssl, "h2load and openssl are installed")
cert, key = w.path("cert.pem"), w.path("key.pem")
r = subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                   capture_output=True, timeout=30)
require(r.returncode == 0, f"openssl req: {r.stderr!r}")
origin = w.start_origin()
tport = free_port()
corral = w.start_corral({
    "listen_tls": {"listen": f"127.0.0.1:{tport}", "cert": cert,
                   "key": key},
    "limits": {"client_timeout": "1s"},
    "upstreams": {"o": {"base": origin.base(), "timeout": "10s"}},
    "routes": [{"path": "/api/x", "upstream": "o", "fetch": "/x",
                "strategy": "short"}],
})
wait_port(tport, corral.proc)

# Four times client_timeout of back-to-back hits on two connections.
for url in (f"http://127.0.0.1:{corral.port}/api/x",
            f"https://127.0.0.1:{tport}/api/x"):
    r = subprocess.run([h2load, "-D", "4", "-c", "2", "-m", "1", url],
                       capture_output=True, timeout=60)
    out = r.stdout.decode()
    check(" 0 failed, 0 errored, 0 timeout" in out and
          "succeeded" in out and " 0 succeeded" not in out,
          f"4 s of hits with client_timeout 1s, {url}: {out[-700:]}")

# Idle is still idle: a connection that only opened is closed.
s = socket.create_connection(("127.0.0.1", corral.port), timeout=10)
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
t0 = time.monotonic()
closed = False
try:
    while time.monotonic() - t0 < 8:
        if s.recv(4096) == b"":
            closed = True
            break
except (ConnectionResetError, socket.timeout):
    closed = True
check(closed, "an idle h2c connection is still closed by client_timeout")
done("h2_busy_idle")
