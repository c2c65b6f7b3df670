"""The upstream side of content codings: corral offers the upstream
"Accept-Encoding: gzip, br", decodes what comes back and validates the
decoded body as before; a coding it did not offer is a 502; a small body
that inflates past limits.max_body_bytes (a decompression bomb) is a 502
and nothing is stored."""
import json
import shutil
import time

from harness import World, check, check_eq, done

w = World()
origin = w.start_origin()
corral = w.start_corral({
    "upstreams": {"o": {"base": origin.base(), "timeout": "10s"}},
    "routes": [
        {"path": "/j/{p}", "upstream": "o", "fetch": "/j/{p}"},
        {"path": "/raw/{p}", "upstream": "o", "fetch": "/j/{p}",
         "json": False},
    ],
    "limits": {"max_body_bytes": "64KB", "backoff_min": "1ms",
               "backoff_max": "1ms"},
})


def offered(path):
    reqs = origin.control("GET", f"/_origin/requests?path={path}")
    return reqs[-1]["headers"].get("accept-encoding")


# What corral asks for.
origin.behave("/j/plain", body='{"a":1}')
check_eq(corral.get("/j/plain").status, 200, "plain")
check_eq(offered("/j/plain"), "gzip, br", "Accept-Encoding to the upstream")

# gzip and br are decoded and validated; the body is stored decoded.
codings = ["gzip"] + (["br"] if shutil.which("brotli") else [])
if "br" not in codings:
    print("note: no brotli command, br from the upstream not tested")
for coding in codings:
    body = json.dumps({"coding": coding, "pad": "y" * 3000})
    origin.behave(f"/j/{coding}", encoding=coding, body=body)
    a = corral.get(f"/j/{coding}")
    check_eq(a.status, 200, f"{coding}: decoded")
    check_eq(a.body, body.encode(), f"{coding}: the decoded bytes")
    check_eq(origin.calls(f"/j/{coding}"), 1, f"{coding}: one call")
    check_eq(corral.get(f"/j/{coding}").status, 200, f"{coding}: stored")
    check_eq(origin.calls(f"/j/{coding}"), 1, f"{coding}: a hit")
    # Invalid JSON inside the coding is still refused on a JSON route.
    origin.behave(f"/j/bad{coding}", encoding=coding, body='{"broken": ')
    check_eq(corral.get(f"/j/bad{coding}").status, 502,
             f"{coding}: invalid JSON inside")

# A coding corral did not offer: an error, never stored.
origin.behave("/j/deflate", encoding="deflate", body='{"d":1}')
for route in ("/j/deflate", "/raw/deflate"):
    a = corral.get(route)
    check_eq(a.status, 502, f"{route}: deflate was not offered")
check_eq(origin.calls("/j/deflate"), 2, "deflate: each asked, none stored")

# A decompression bomb: 2 MB of JSON in about 2 KB of gzip, over the
# 64 KB cap once decoded. 502, nothing stored: the next call asks again.
for coding in codings:
    path = f"/j/bomb{coding}"
    origin.behave(path, encoding=coding, size=2 << 20)
    a = corral.get(path)
    check_eq(a.status, 502, f"{coding} bomb refused")
    time.sleep(0.01)  # past the 1 ms backoff
    check_eq(corral.get(path).status, 502, f"{coding} bomb refused again")
    check_eq(origin.calls(path), 2, f"{coding} bomb: nothing stored")
check(corral.alive(), "corral still running")
done("upstream_encoding")
