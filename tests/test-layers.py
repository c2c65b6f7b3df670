#!/usr/bin/env python3
"""test-layers.py — Layer 1 (src/cache, include/corral) holds no gateway
policy. It fails when a file there includes a header of src/gateway, or
names a gateway noun: a route, an upstream, admission. A name is told as
an identifier would be: each run of letters, digits and underscores in the
file (code, comments and strings alike, so a comment cannot smuggle the
policy back in), split at underscores and at lower-to-upper case changes;
a part that is one of the words below (any case) is a hit, so
corral_route_x, upstreamMs and "an upstream path" are, while "router" in
"routerless" is not. Run by meson with the source root."""
import os
import re
import sys

WORDS = {"route", "routes", "routed", "routing", "router", "routers",
         "upstream", "upstreams", "admission", "admissions", "admit",
         "admits", "admitted"}
LAYER1 = ("src/cache", "include/corral")

root = sys.argv[1]
gateway = os.path.join(root, "src", "gateway")
gateway_headers = {f for f in os.listdir(gateway) if f.endswith(".h")}
include = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]')
token = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
camel = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

bad, files = [], 0
for layer in LAYER1:
    for dirpath, _, names in os.walk(os.path.join(root, layer)):
        for name in sorted(names):
            if not name.endswith((".c", ".h", ".h.in")):
                continue
            files += 1
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
            for n, line in enumerate(lines, 1):
                m = include.match(line)
                if m and ("gateway/" in m.group(1)
                          or os.path.basename(m.group(1)) in gateway_headers):
                    bad.append(f"{rel}:{n}: includes {m.group(1)}")
                for tok in token.findall(line):
                    parts = [p for w in tok.split("_") for p in camel.split(w)]
                    hits = [p for p in parts if p.lower() in WORDS]
                    if hits:
                        bad.append(f"{rel}:{n}: names {hits[0].lower()} ({tok})")
if files == 0:
    print(f"FAIL: no Layer 1 files under {root}", file=sys.stderr)
    sys.exit(1)
if bad:
    print(f"FAIL: Layer 1 holds gateway policy ({len(bad)}):", file=sys.stderr)
    for b in bad:
        print("  " + b, file=sys.stderr)
    sys.exit(1)
print(f"ok layers ({files} Layer 1 files: no gateway header, no gateway noun)")
