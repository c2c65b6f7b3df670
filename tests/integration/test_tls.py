"""HTTPS upstreams: certificates and host names are always verified. A
self-signed origin fails without ca_file and works with it; a certificate
for another host name fails even with it."""
import subprocess

from harness import World, check, check_eq, done

w = World()


def make_cert(name, cn, san):
    cert, key = w.path(f"{name}.pem"), w.path(f"{name}.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-days", "1", "-subj", f"/CN={cn}", "-addext",
         f"subjectAltName={san}", "-keyout", key, "-out", cert],
        check=True, capture_output=True)
    return cert, key


good_cert, good_key = make_cert("good", "localhost",
                                "DNS:localhost,IP:127.0.0.1")
other_cert, other_key = make_cert("other", "other.example",
                                  "DNS:other.example")
good = w.start_origin(good_cert, good_key)
other = w.start_origin(other_cert, other_key)

corral = w.start_corral({
    "upstreams": {
        "system": {"base": f"https://localhost:{good.port}",
                   "timeout": "5s"},
        "pinned": {"base": f"https://localhost:{good.port}",
                   "timeout": "5s", "ca_file": good_cert},
        "pinned_ip": {"base": f"https://127.0.0.1:{good.port}",
                      "timeout": "5s", "ca_file": good_cert},
        "wrong_name": {"base": f"https://localhost:{other.port}",
                       "timeout": "5s", "ca_file": other_cert},
    },
    "routes": [
        {"path": "/system", "upstream": "system", "fetch": "/data"},
        {"path": "/pinned", "upstream": "pinned", "fetch": "/data"},
        {"path": "/pinned_ip", "upstream": "pinned_ip", "fetch": "/data"},
        {"path": "/wrong_name", "upstream": "wrong_name", "fetch": "/data"},
    ],
})

r = corral.get("/system")
check_eq(r.status, 502, "self-signed without ca_file")
check("tls" in r.json()["error"].lower() or
      "certificate" in r.json()["error"].lower(), f"says TLS: {r.body}")
check_eq(good.calls("/data"), 0, "no request went out")

r = corral.get("/pinned")
check_eq(r.status, 200, f"with ca_file: {r.body}")
check_eq(r.json()["path"], "/data", "the body")
check_eq(corral.get("/pinned_ip").status, 200, "IP SAN with ca_file")

r = corral.get("/wrong_name")
check_eq(r.status, 502, "certificate for another host")
check_eq(other.calls("/data"), 0, "no request went out")
check(corral.alive(), "corral still running")
done("tls")
