#!/usr/bin/env python3
"""test-symbols.py — libcorral claims no name an embedder may use: every
global symbol the archive defines starts with corral_ (a library that
exports flight_add or siphash takes those names from every program that
links it). Run by meson with nm and the archive's path."""
import subprocess
import sys

nm, archive = sys.argv[1], sys.argv[2]
out = subprocess.run([nm, "-g", "--defined-only", archive],
                     capture_output=True, text=True, check=True).stdout
bad, n = [], 0
for line in out.splitlines():
    parts = line.split()
    # "<value> <type> <name>" per symbol; "file.o:" heads and blanks skipped
    if len(parts) != 3:
        continue
    n += 1
    name = parts[2]
    # AddressSanitizer's one-definition-rule marker of a corral_ global
    for tool in ("__odr_asan.", "__odr_asan_gen_"):
        if name.startswith(tool):
            name = name[len(tool):]
    if not name.startswith("corral_"):
        bad.append(parts[2])
if n == 0:
    print(f"FAIL: nm found no global symbols in {archive}", file=sys.stderr)
    sys.exit(1)
if bad:
    print(f"FAIL: {len(bad)} global symbols without the corral_ prefix: "
          + ", ".join(sorted(bad)), file=sys.stderr)
    sys.exit(1)
print(f"ok symbols ({n} global symbols, all corral_)")
