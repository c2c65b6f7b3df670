"""h2raw.py — HTTP/2 frames by hand, for tests that send what no honest
client would: a frame encoder, request header blocks in HPACK literals
(without indexing, or with incremental indexing for the HPACK bomb, and
indexed references), and a reader that returns the frames a server sends
without decoding its header blocks."""
import socket
import struct
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, \
    GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR = 0x0, 0x1, 0x2
REFUSED_STREAM, ENHANCE_YOUR_CALM = 0x7, 0xb
SETTINGS_INITIAL_WINDOW_SIZE = 0x4


def frame(ftype, flags, stream, payload=b""):
    return (struct.pack(">I", len(payload))[1:] +
            struct.pack(">BBI", ftype, flags, stream & 0x7FFFFFFF) + payload)


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def literal(name, value, index=False):
    """A field as a literal with a new name: without indexing, or with
    incremental indexing (it enters the dynamic table)."""
    name = name.encode() if isinstance(name, str) else name
    value = value.encode() if isinstance(value, str) else value
    return (bytes([0x40 if index else 0x00]) + hpack_int(len(name), 7) +
            name + hpack_int(len(value), 7) + value)


def indexed(i):
    return hpack_int(i, 7, 0x80)


def request_block(path, method="GET", extra=()):
    b = (literal(":method", method) + literal(":scheme", "http") +
         literal(":authority", "localhost") + literal(":path", path))
    for n, v in extra:
        b += literal(n, v)
    return b


def settings(pairs=()):
    return frame(SETTINGS, 0, 0,
                 b"".join(struct.pack(">HI", k, v) for k, v in pairs))


class Conn:
    """A raw HTTP/2 connection that has sent the preface and SETTINGS."""

    def __init__(self, port, settings_pairs=(), timeout=10, ack=True):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        self.buf = b""
        self.ack = ack  # acknowledge the server's SETTINGS
        self.sock.sendall(PREFACE + settings(settings_pairs))

    def send(self, data):
        self.sock.sendall(data)

    def get(self, stream, path, extra=()):
        self.send(frame(HEADERS, END_STREAM | END_HEADERS, stream,
                        request_block(path, extra=extra)))

    def read_frame(self, deadline):
        while len(self.buf) < 9 or \
                len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        n = int.from_bytes(self.buf[:3], "big")
        ftype, flags = self.buf[3], self.buf[4]
        stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
        payload = self.buf[9:9 + n]
        self.buf = self.buf[9 + n:]
        if ftype == SETTINGS and not flags & ACK and self.ack:
            self.send(frame(SETTINGS, ACK, 0))
        return ftype, flags, stream, payload

    def frames_until(self, stop, timeout=10):
        """Frames read until stop(frame) is true (that frame included), the
        server closes (None last) or timeout s pass (TimeoutError)."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            try:
                f = self.read_frame(deadline)
            except (ConnectionResetError, BrokenPipeError):
                f = None
            got.append(f)
            if f is None or stop(f):
                return got

    def goaway(self, timeout=10):
        """The error code of the GOAWAY the server sends, reading past
        anything else; None when it closes without one."""
        try:
            got = self.frames_until(lambda f: f[0] == GOAWAY, timeout)
        except TimeoutError:
            return "timeout"
        last = got[-1]
        if last is None:
            return None
        return int.from_bytes(last[3][4:8], "big")

    def bodies(self, streams, timeout=30):
        """{stream: body} of the DATA frames of streams, read until each
        has ended (END_STREAM on its HEADERS or DATA)."""
        deadline = time.monotonic() + timeout
        bodies, open_ = {}, set(streams)
        while open_:
            f = self.read_frame(deadline)
            if f is None:
                break
            ftype, flags, sid, payload = f
            if ftype == DATA:
                bodies[sid] = bodies.get(sid, b"") + payload
            if ftype in (DATA, HEADERS) and flags & END_STREAM:
                open_.discard(sid)
            if ftype in (RST_STREAM, GOAWAY):
                break
        return bodies

    def close(self):
        self.sock.close()
