"""Issue 21, Redis Cluster with AUTH: every node requires a password, and
corral logs in as an ACL user whose password comes from ${VAR}
(l2.user, l2.password). Two instances share the cluster: one upstream
call per key, values on the primaries. A wrong password stops corral at
start with Redis's reason (a configuration error, not an outage), and no
password is ever written to its log."""
import asyncio
import subprocess

from harness import (CORRAL, World, check, check_eq, done, fleet_config,
                     free_port, l2_name, request, require)

ADMIN_PASSWORD = "cluster-admin-secret"
USER, PASSWORD = "corral", "corral-acl-secret"

w = World()
cluster = w.start_cluster(primaries=3, replicas=0, password=ADMIN_PASSWORD)
for node in cluster.nodes:  # ACLs are per node on a cluster
    node.cmd("ACL", "SETUSER", USER, "on", f">{PASSWORD}", "~*", "&*",
             "+@all")
origin = w.start_origin()


def config(password_var):
    cfg = fleet_config(origin, 0)
    cfg["l2"] = dict(cluster.l2, user=USER, password="${" + password_var + "}")
    return cfg


# A wrong password: corral stops at start and says why.
cfg = config("WRONG")
cfg["listen"] = f"127.0.0.1:{free_port()}"
p = subprocess.Popen([CORRAL, "-c", w.write_config(cfg, "wrong.json")],
                     stderr=subprocess.PIPE,
                     env={"WRONG": "not-the-password", "PATH": "/usr/bin:/bin"})
try:
    _, err = p.communicate(timeout=15)
except subprocess.TimeoutExpired:
    p.kill()
    _, err = p.communicate()
    err = b"(still running after 15 s) " + err
err = err.decode(errors="replace")
check(p.returncode is not None and p.returncode > 0,
      f"a wrong password: corral exits non-zero: {p.returncode}")
check("WRONGPASS" in err or "AUTH" in err,
      f"and says Redis refused it: {err[-300:]}")
check("not-the-password" not in err, "the password is never logged")

# The right one, from the environment: one fleet.
cfg = config("L2_PASSWORD")
a, b = (w.start_corral(cfg, env={"L2_PASSWORD": PASSWORD}, admin=True,
                       log=True) for _ in range(2))
require(a.wait_l2("up", 15) and b.wait_l2("up", 15),
        "both instances log in to every primary")
origin.behave("/v/auth", delay_ms=200)


async def burst():
    return await asyncio.gather(
        *(request((a, b)[i % 2].port, "/api/auth", timeout=30)
          for i in range(60)))


rs = asyncio.run(burst())
check_eq({r.status for r in rs}, {200}, "60 cold requests over two: all 200")
check_eq(len({r.body for r in rs}), 1, "one body for all")
check_eq(origin.calls("/v/auth"), 1, "one upstream call for the fleet")
name = l2_name(b"t:", b"v:", b"/api/auth")
check_eq(cluster.owner(name).cmd("EXISTS", name), 1,
         "the value is on its slot's primary")
for x in (a, b):
    check(PASSWORD not in x.log(), "the password is never logged")
done("cluster_auth")
