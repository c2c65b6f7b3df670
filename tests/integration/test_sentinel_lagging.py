"""Issue 21, Sentinel: sentinels learn of a switch a few ms apart, and the
old primary, back from a stall or a restart, says ROLE master until they
demote it (about 10 s). Bug (found by tools/chaos --sentinel): on a
+switch-master corral asked the next sentinel in turn instead of going
where the message said; one that had not heard yet named the old primary,
and corral wrote there until the demotion, the fleet split in two. Now the
message's address is used, and an answer naming the primary the switch
left is passed over while another sentinel of the round may know better.

Two fake sentinels (the real ones cannot be made to lag on purpose) in
front of two real redis-servers, both primaries: A holds the watch and
names the new primary at once; B lags and names the old one."""
import socket
import threading
import time

from harness import World, check, done, fills_reach, fleet_config, require

MASTER = "mymaster"


class FakeSentinel:
    """Answers SENTINEL get-master-addr-by-name with self.port's primary,
    confirms SUBSCRIBE (again, as a keepalive) and publishes to its
    subscribers; nothing else."""

    def __init__(self, primary_port):
        self.primary_port = primary_port
        self.subscribers = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    @staticmethod
    def bulk(s):
        b = s.encode()
        return b"$%d\r\n%s\r\n" % (len(b), b)

    def serve(self, c):
        f = c.makefile("rb")
        try:
            while True:
                line = f.readline()
                if not line.startswith(b"*"):
                    return
                args = []
                for _ in range(int(line[1:])):
                    n = int(f.readline()[1:])
                    args.append(f.read(n + 2)[:-2].decode())
                cmd = [a.lower() for a in args[:2]]
                if cmd == ["sentinel", "get-master-addr-by-name"]:
                    c.sendall(b"*2\r\n" + self.bulk("127.0.0.1") +
                              self.bulk(str(self.primary_port)))
                elif cmd[:1] == ["subscribe"]:
                    with self.lock:
                        if c not in self.subscribers:
                            self.subscribers.append(c)
                    c.sendall(b"*3\r\n" + self.bulk("subscribe") +
                              self.bulk(args[1]) + b":1\r\n")
                elif cmd[:1] == ["ping"]:
                    c.sendall(b"+PONG\r\n")
                else:
                    c.sendall(b"-ERR not a real sentinel\r\n")
        except (OSError, ValueError):
            pass
        finally:
            with self.lock:
                if c in self.subscribers:
                    self.subscribers.remove(c)
            c.close()

    def publish(self, channel, msg):
        with self.lock:
            subs = list(self.subscribers)
        for c in subs:
            c.sendall(b"*3\r\n" + self.bulk("message") + self.bulk(channel) +
                      self.bulk(msg))
        return len(subs)


w = World()
origin = w.start_origin()
old, new = w.start_redis(), w.start_redis()
a, b = FakeSentinel(old.port), FakeSentinel(old.port)
cfg = fleet_config(origin, 0)
cfg["l2"] = {"sentinel": {"master": MASTER,
                          "nodes": [f"127.0.0.1:{a.port}",
                                    f"127.0.0.1:{b.port}"]},
             "prefix": "t:", "timeout": "200ms"}
x = w.start_corral(cfg, admin=True, log=True)
require(x.wait_l2("up"), "corral sees the primary through the sentinels")
check(fills_reach(x, old, "first"), "fills land on the first primary")
deadline = time.monotonic() + 10
while time.monotonic() < deadline and not a.subscribers:
    time.sleep(0.05)
require(a.subscribers != [], "the watch is on sentinel A")

# A switches; B has not heard and still names the old primary.
a.primary_port = new.port
require(a.publish("+switch-master", f"{MASTER} 127.0.0.1 {old.port} "
                                    f"127.0.0.1 {new.port}") >= 1,
        "the switch is published to the watch")
check(fills_reach(x, new, "after", timeout=10),
      "after the switch, fills land on the new primary")
time.sleep(0.5)
check(not fills_reach(x, old, "stray", timeout=1),
      "and none on the old one, which B still names")

# corral's connections to the new primary go: it asks again, B first in
# turn, and passes over B's answer for A's.
new.cmd("CLIENT", "KILL", "TYPE", "normal")
new.cmd("CLIENT", "KILL", "TYPE", "pubsub")
check(fills_reach(x, new, "again", timeout=10),
      "after a reconnect, fills land on the new primary again")
check(not fills_reach(x, old, "stray2", timeout=1),
      "and none on the old one")
done("sentinel_lagging")
