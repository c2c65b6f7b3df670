"""HTTP/2 attacks, each sent as raw frames: rapid reset (CVE-2023-44487),
CONTINUATION flood, HPACK bomb, SETTINGS, PING and WINDOW_UPDATE floods,
streams over max_streams, a zero-window stall, an idle client and a
header block never finished. Each ends in a GOAWAY (or a RST_STREAM for
the one stream over the limit) or a close within client_timeout, and
another client is served right after."""
import subprocess
import struct
import time

import h2raw
from h2raw import Conn, frame
from harness import World, check, check_eq, done, require, tool

w = World()
origin = w.start_origin()
corral = w.start_corral({
    "limits": {"client_timeout": "2s", "max_streams": 8,
               "max_client_queued_bytes": "64KB"},
    "upstreams": {"o": {"base": origin.base(), "timeout": "10s"}},
    "routes": [
        {"path": "/api/x", "upstream": "o", "fetch": "/x",
         "strategy": "short"},
        {"path": "/api/slow", "upstream": "o", "fetch": "/slow",
         "strategy": "short"},
        {"path": "/api/big", "upstream": "o", "fetch": "/big",
         "strategy": "short", "json": False},
        {"path": "/api/q", "upstream": "o", "fetch": "/q",
         "strategy": "short", "json": False, "query": ["i"]},
    ],
}, admin=True)
curl = tool("curl")
require(curl, "curl is installed")
port = corral.port


def served(what):
    """Another client, over HTTP/2, is answered."""
    r = subprocess.run([curl, "-sS", "--http2-prior-knowledge",
                        "--max-time", "10", "-o", "/dev/null",
                        "-w", "%{http_code}",
                        f"http://127.0.0.1:{port}/api/x"],
                       capture_output=True)
    check_eq(r.stdout, b"200", f"after {what}: another client served")
    check(corral.alive(), f"after {what}: corral alive")


def goaways():
    return corral.metrics().get(("corral_h2_goaways_total", frozenset()), 0)


served("nothing")

# A plain raw client works, so the attacks below fail for what they do.
c = Conn(port)
c.get(1, "/api/x")
got = c.frames_until(lambda f: f[0] == h2raw.DATA and f[1] & 1)
check(got[-1] is not None, "raw client: a DATA frame ending the stream")
check(any(f and f[0] == h2raw.HEADERS and f[2] == 1 for f in got),
      "raw client: a HEADERS answer")
c.close()

# ---- rapid reset: HEADERS then RST_STREAM, over and over ----
before = goaways()
c = Conn(port)
burst = b""
for i in range(2000):
    sid = 1 + 2 * i
    burst += frame(h2raw.HEADERS, h2raw.END_STREAM | h2raw.END_HEADERS, sid,
                   h2raw.request_block("/api/x"))
    burst += frame(h2raw.RST_STREAM, 0, sid, struct.pack(">I", 8))
try:
    c.send(burst)
except (BrokenPipeError, ConnectionResetError):
    pass
code = c.goaway()
print(f"# rapid reset: GOAWAY {code}")
check(code not in ("timeout", None), f"rapid reset: a GOAWAY ({code})")
c.close()
served("rapid reset")

# ---- CONTINUATION flood: a header block that never ends ----
c = Conn(port)
c.send(frame(h2raw.HEADERS, h2raw.END_STREAM, 1,
             h2raw.request_block("/api/x")))
try:
    for i in range(200):
        c.send(frame(h2raw.CONTINUATION, 0, 1,
                     h2raw.literal(f"x-c{i}", "v" * 10)))
except (BrokenPipeError, ConnectionResetError):
    pass
code = c.goaway()
print(f"# CONTINUATION flood: GOAWAY {code}")
check(code not in ("timeout", None), f"CONTINUATION flood: GOAWAY ({code})")
c.close()
served("CONTINUATION flood")

# ---- HPACK bomb: one 4 KB table entry referenced thousands of times ----
c = Conn(port)
block = h2raw.request_block("/api/x") + \
    h2raw.literal("x-bomb", "b" * 4000, index=True) + \
    h2raw.indexed(62) * 4000
c.send(frame(h2raw.HEADERS, h2raw.END_STREAM | h2raw.END_HEADERS, 1, block))
code = c.goaway()
check_eq(code, h2raw.ENHANCE_YOUR_CALM, "HPACK bomb: GOAWAY ENHANCE_YOUR_CALM")
c.close()
served("HPACK bomb")


def flood(name, one, count):
    c = Conn(port)
    data = one * count
    try:
        c.send(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    code = c.goaway(timeout=30)
    print(f"# {name} flood: GOAWAY {code}")
    check(code not in ("timeout",), f"{name} flood: ended ({code})")
    check(code in (None, h2raw.ENHANCE_YOUR_CALM),
          f"{name} flood: GOAWAY ENHANCE_YOUR_CALM or a close ({code})")
    c.close()
    served(f"{name} flood")


# ---- control-frame floods: 8 MB and more of frames with no request ----
flood("SETTINGS", h2raw.settings([(h2raw.SETTINGS_INITIAL_WINDOW_SIZE,
                                   65535)]), 700000)
flood("PING", frame(h2raw.PING, 0, 0, b"12345678"), 600000)
flood("WINDOW_UPDATE", frame(h2raw.WINDOW_UPDATE, 0, 0,
                             struct.pack(">I", 1)), 800000)
check(goaways() >= before + 5, f"GOAWAYs counted: {goaways() - before}")

# ---- streams over max_streams (8) are refused ----
origin.behave("/slow", delay_ms=1000)
c = Conn(port)
for i in range(10):
    c.get(1 + 2 * i, "/api/slow")
got = c.frames_until(lambda f: f[0] == h2raw.RST_STREAM, timeout=10)
last = got[-1]
check(last is not None and last[0] == h2raw.RST_STREAM and
      int.from_bytes(last[3], "big") == h2raw.REFUSED_STREAM,
      f"stream 9: RST_STREAM REFUSED_STREAM ({last})")
c.close()
served("too many streams")

# ---- zero-window stall: answers the client never lets us send ----
origin.behave("/big", body="z" * 200000)
c = Conn(port, settings_pairs=[(h2raw.SETTINGS_INITIAL_WINDOW_SIZE, 0)])
for i in range(4):
    c.get(1 + 2 * i, "/api/big")
t0 = time.monotonic()
try:
    got = c.frames_until(lambda f: f[0] == h2raw.GOAWAY, timeout=15)
    ended = True
except TimeoutError:
    ended = False
took = time.monotonic() - t0
check(ended, "zero window: the connection ends")
check(not any(f and f[0] == h2raw.DATA and f[3] for f in got),
      "zero window: no DATA sent")
print(f"# zero-window stall ended after {took:.1f} s (client_timeout 2 s)")
c.close()
served("zero-window stall")

# ---- the queued-bytes budget: a client whose answers wait (window 0) has
# its next streams held, not handed on, until they are written ----
origin.behave("/q", body="q" * 100000)
c = Conn(port, settings_pairs=[(h2raw.SETTINGS_INITIAL_WINDOW_SIZE, 0)])
c.get(1, "/api/q?i=0")
time.sleep(0.5)  # filled and answered: 100 KB queued, over the 64 KB share
for i in range(1, 4):
    c.get(1 + 2 * i, f"/api/q?i={i}")
time.sleep(0.5)
check_eq(origin.calls("/q"), 1,
         "budget: one 100 KB answer queued, the other streams held")
# The client opens its windows: everything is written, the held streams go.
c.send(frame(h2raw.WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30)) +
       h2raw.settings([(h2raw.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 30)]))
got = c.bodies([1, 3, 5, 7], timeout=10)
check_eq(sorted(len(b) for b in got.values()), [100000] * 4,
         "budget: every stream answered once the window opens")
check_eq(origin.calls("/q"), 4, "budget: the held streams went on")
c.close()

# ---- idle: a connection that sends nothing is let go ----
c = Conn(port)
t0 = time.monotonic()
code = c.goaway(timeout=15)
check_eq(code, h2raw.NO_ERROR, "idle: GOAWAY NO_ERROR")
check(c.frames_until(lambda f: False, timeout=5)[-1] is None,
      "idle: then closed")
print(f"# idle connection closed after {time.monotonic() - t0:.1f} s")
c.close()

# ... and so is one that keeps pinging without asking anything.
c = Conn(port)
t0 = time.monotonic()
closed = False
while not closed and time.monotonic() - t0 < 15:
    try:
        c.send(frame(h2raw.PING, 0, 0, b"pingping"))
        c.frames_until(lambda f: f[0] == h2raw.GOAWAY, timeout=0.3)
        closed = True  # a GOAWAY, or the close
    except TimeoutError:
        pass
    except (BrokenPipeError, ConnectionResetError):
        closed = True
check(closed, "pings alone do not keep a connection")
c.close()

# ---- a header block never finished: closed within client_timeout ----
c = Conn(port)
c.send(frame(h2raw.HEADERS, h2raw.END_STREAM, 1,
             h2raw.request_block("/api/x")))
code = c.goaway(timeout=15)
check(code != "timeout", f"unfinished header block: ended ({code})")
c.close()
served("an unfinished header block")

done("h2_attacks")
