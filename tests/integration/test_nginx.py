"""conf/nginx.conf, as shipped, in front of corral: requests pass through
with corral's headers, a stampede through nginx is still one upstream
call, and nginx keeps its connections to corral alive."""
import os
import re
import subprocess

from harness import (Corral, World, check, check_eq, done, free_port,
                     wait_port)

NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
HERE = os.path.dirname(os.path.abspath(__file__))
SHIPPED = os.path.join(HERE, "..", "..", "conf", "nginx.conf")

w = World()
origin = w.start_origin()
corral = w.start_corral({
    "upstreams": {"o": {"base": origin.base()}},
    "routes": [{"path": "/api/btc", "upstream": "o", "fetch": "/btc",
                "strategy": "realtime"}],
})

# The shipped file, pointed at this test's ports, inside a minimal main
# config of our own (prefix, pid and logs in the temp dir, one worker).
port = free_port()
snippet = open(SHIPPED).read()
snippet = snippet.replace("127.0.0.1:8080", f"127.0.0.1:{corral.port}")
snippet = re.sub(r"listen 80;", f"listen 127.0.0.1:{port};", snippet)
check(f"127.0.0.1:{corral.port}" in snippet and str(port) in snippet,
      "the shipped config has the ports the test replaces")
conf = w.path("nginx.conf")
with open(conf, "w") as f:
    f.write(f"""
daemon off;
worker_processes 1;
pid {w.path("nginx.pid")};
error_log {w.path("nginx-error.log")} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {w.dir}/body;
    proxy_temp_path {w.dir}/proxy;
    fastcgi_temp_path {w.dir}/fastcgi;
    uwsgi_temp_path {w.dir}/uwsgi;
    scgi_temp_path {w.dir}/scgi;
{snippet}
}}
""")
nginx = subprocess.Popen([NGINX, "-p", w.dir, "-c", conf, "-e",
                          w.path("nginx-error.log")])
w.procs.append(nginx)
wait_port(port, nginx)

via = Corral(port, nginx)  # the harness's client, pointed at nginx
origin.behave("/btc", delay_ms=300, body='{"bitcoin": {"usd": 1}}')
answers = via.many("/api/btc", 200)
check_eq({a.status for a in answers}, {200}, "all 200 through nginx")
check_eq({a.body for a in answers}, {b'{"bitcoin": {"usd": 1}}'}, "bodies")
check_eq(origin.calls("/btc"), 1, "200 clients through nginx: one call")
statuses = [a.headers.get("cache-status") for a in answers]
check_eq(statuses.count("corral; fwd=miss; stored"), 1, "one stored")

hit = via.get("/api/btc")
check(hit.headers["cache-status"].startswith("corral; hit; ttl="),
      "corral's Cache-Status passes through")
for h in ("age", "etag", "cache-control"):
    check(h in hit.headers, f"{h} passes through")
check_eq(via.get("/api/btc", {"If-None-Match": hit.headers["etag"]}).status,
         304, "If-None-Match through nginx")
check("cache-status" not in via.get("/nope").headers,
      "paths outside /api/ stay with nginx")
check_eq(via.get("/api/nope").status, 404, "corral's 404 through nginx")

# Keep-alive upstream: 100 sequential requests reuse nginx's connections.
for _ in range(100):
    check_eq(via.get("/api/btc").status, 200, "sequential")
conns = subprocess.run(["ss", "-Htn", "state", "established",
                        f"( sport = :{corral.port} )"],
                       capture_output=True, text=True).stdout.splitlines()
check(0 < len(conns) <= 64, f"nginx keeps a few connections to corral "
      f"alive: {len(conns)}")
check(corral.alive(), "corral still running")
done("nginx")
