"""meson install puts a working tree in place: run into a temporary
DESTDIR, the installed corral reports its version and checks the installed
example configs, the man pages are there and render, libcorral's pkg-config
file builds and links examples/embed.c against the installed headers and
library, a second install keeps an edited config, and systemd-analyze
accepts the installed unit."""
import atexit
import json
import os
import re
import shutil
import subprocess
import tempfile

from harness import CORRAL, cannot_run, check, check_eq, done, tool

BUILD = os.environ.get("BUILD_ROOT", "")
HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.normpath(os.path.join(HERE, "..", ".."))
check(os.path.isfile(os.path.join(BUILD, "build.ninja")),
      f"BUILD_ROOT is a meson build dir: {BUILD!r}")
MESON = shutil.which("meson")
check(MESON is not None, "meson is on PATH")

tmp = tempfile.mkdtemp(prefix="corral-install-")
atexit.register(shutil.rmtree, tmp, ignore_errors=True)
dest = os.path.join(tmp, "root")


def run(cmd, env=None, timeout=120):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def introspect(what):
    p = run([MESON, "introspect", BUILD, what])
    check_eq(p.returncode, 0, f"meson introspect {what}: {p.stderr}")
    return json.loads(p.stdout)


opts = {o["name"]: o["value"] for o in introspect("--buildoptions")}
version = introspect("--projectinfo")["version"]
installed = introspect("--installed")  # build path -> installed path
prefix = opts["prefix"]


def path_of(opt, *rest):
    """Where meson installs rest under directory option opt (relative to
    the prefix unless absolute, as sysconfdir is with --prefix=/usr)."""
    return os.path.join(prefix, opts[opt], *rest)


def in_dest(path):
    return dest + path


def install():
    p = run([MESON, "install", "--quiet", "--no-rebuild", "--destdir", dest,
             "-C", BUILD], timeout=300)
    check_eq(p.returncode, 0, f"meson install: {p.stdout}{p.stderr}")


install()

# The binary, and that it is the one this build made.
corral = in_dest(path_of("bindir", "corral"))
check(os.access(corral, os.X_OK), f"{corral} is installed and executable")
p = run([corral, "--version"])
check_eq((p.returncode, p.stdout.strip()), (0, f"corral {version}"),
         "the installed corral --version")
with open(corral, "rb") as a, open(CORRAL, "rb") as b:
    check(a.read() == b.read(), "the installed binary is the built one")

# The example configs, checked by the installed binary.
conf = in_dest(path_of("sysconfdir", "corral", "corral.json"))
check(os.path.isfile(conf), f"{conf} is installed")
p = run([corral, "--check", "-c", conf], {"TAAPI_KEY": "install-test"})
check(p.returncode == 0 and "ok (3 upstreams, 6 routes)" in p.stdout,
      f"corral --check on the installed corral.json: {p.stdout}{p.stderr}")
env_without = {k: v for k, v in os.environ.items() if k != "TAAPI_KEY"}
p = subprocess.run([corral, "--check", "-c", conf], capture_output=True,
                   text=True, env=env_without, timeout=30)
check(p.returncode == 1 and "TAAPI_KEY" in p.stderr,
      f"without TAAPI_KEY the installed config fails: {p.stderr}")
demo = in_dest(path_of("datadir", "corral", "examples", "demo.json"))
p = run([corral, "--check", "-c", demo])
check(p.returncode == 0 and " ok (" in p.stdout,
      f"corral --check on the installed demo.json: {p.stdout}{p.stderr}")

# Installing again keeps a config someone edited.
with open(conf, "a") as f:
    f.write("// edited by the admin\n")
install()
with open(conf) as f:
    check(f.read().endswith("// edited by the admin\n"),
          "a second meson install keeps the existing corral.json")

# The man pages: built by scdoc unless the build turned them off.
mandir = in_dest(path_of("mandir"))
if opts.get("man") == "disabled":
    print("# -Dman=disabled: no man pages to check")
    mandir = None
elif opts.get("man") == "auto" and tool("scdoc") is None:
    mandir = None
else:
    for page, name in (("man8/corral.8", "corral - caching gateway"),
                       ("man5/corral.json.5", "corral.json - configuration")):
        path = os.path.join(mandir, page)
        check(os.path.isfile(path), f"{path} is installed")
        with open(path) as f:
            check(".TH " in f.read(), f"{page} is a man page")
        man = tool("man")
        if man:
            p = run([man, "-l", path], {"MANWIDTH": "80", "MANPAGER": "cat",
                                          "PAGER": "cat"})
            check(p.returncode == 0 and name in p.stdout,
                  f"man -l {page} renders: {p.stderr}")

# libcorral: headers, library and a pkg-config file that points at them.
check(os.path.isfile(in_dest(path_of("includedir", "corral", "cache.h"))),
      "corral/cache.h is installed")
check(os.path.isfile(in_dest(path_of("includedir", "corral", "version.h"))),
      "corral/version.h is installed")
pcdir = in_dest(path_of("libdir", "pkgconfig"))
check(os.path.isfile(os.path.join(pcdir, "libcorral.pc")),
      f"libcorral.pc is in {pcdir}")
pc_env = {"PKG_CONFIG_PATH": pcdir, "PKG_CONFIG_SYSROOT_DIR": dest,
          # Keep -I/-L for the install dirs even when they are system dirs
          # (--prefix=/usr), so the installed files are the ones used.
          "PKG_CONFIG_ALLOW_SYSTEM_CFLAGS": "1",
          "PKG_CONFIG_ALLOW_SYSTEM_LIBS": "1"}
p = run(["pkg-config", "--cflags", "--libs", "libcorral"], pc_env)
check_eq(p.returncode, 0, f"pkg-config libcorral: {p.stderr}")
flags = p.stdout.split()
check("-I" + in_dest(path_of("includedir")) in flags,
      f"--cflags names the installed include dir: {flags}")
check("-L" + in_dest(path_of("libdir")) in flags and "-lcorral" in flags,
      f"--libs names the installed library: {flags}")

# Build examples/embed.c as a user would, with this build's compiler and
# sanitizers (a sanitized libcorral needs their runtime).
targets = introspect("--targets")
cc = next(t["target_sources"][0]["compiler"] for t in targets
          if t["name"] == "corral" and t["type"] == "executable")
extra = []
if opts.get("b_sanitize", "none") != "none":
    extra.append("-fsanitize=" + opts["b_sanitize"])
embed = os.path.join(tmp, "embed")
p = run(cc + extra + [os.path.join(SOURCE, "examples", "embed.c"), "-o",
                      embed] + flags)
check_eq(p.returncode, 0, f"cc examples/embed.c $(pkg-config ...): "
         f"{p.stderr}")
p = run([embed], timeout=60)
check(p.returncode == 0 and "compute calls: 1" in p.stdout,
      f"embed prints compute calls: 1: {p.stdout}{p.stderr}")

# The systemd unit, with the paths of this installation.
units = [v for k, v in installed.items() if k.endswith("corral.service")]
check_eq(len(units), 1, "one corral.service is installed")
unit = in_dest(units[0])
check(os.path.isfile(unit), f"{unit} is installed")
with open(unit) as f:
    text = f.read()
binary = path_of("bindir", "corral")
config = path_of("sysconfdir", "corral", "corral.json")
lines = text.splitlines()
for want in (f"ExecStartPre={binary} --check -c {config}",
             f"ExecStart={binary} -c {config}",
             "ExecReload=/bin/kill -HUP $MAINPID", "Type=simple",
             "KillSignal=SIGTERM", "KillMode=mixed", "Restart=on-failure",
             "DynamicUser=yes", "ProtectSystem=strict", "ProtectHome=yes",
             "PrivateTmp=yes", "PrivateDevices=yes", "NoNewPrivileges=yes",
             "ProtectKernelTunables=yes", "ProtectKernelModules=yes",
             "ProtectKernelLogs=yes", "ProtectControlGroups=yes",
             "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
             "RestrictNamespaces=yes", "LockPersonality=yes",
             "SystemCallArchitectures=native", "CapabilityBoundingSet=",
             "LogsDirectory=corral", "LimitNOFILE=65536"):
    check(want in lines, f"the unit has {want}")
check(not any(l.startswith("MemoryDenyWriteExecute") for l in lines),
      "no MemoryDenyWriteExecute (PCRE2's JIT needs W+X memory)")
check(re.search(r"@[A-Z_]+@", text) is None, "no @VAR@ left unfilled")

# systemd-analyze verify wants the binary at its path: a copy of the unit
# that runs the DESTDIR's binary and config, with the DESTDIR's man pages
# for Documentation=.
analyze = tool("systemd-analyze")
if analyze:
    udir = os.path.join(tmp, "units")
    os.mkdir(udir)
    copy = os.path.join(udir, "corral.service")
    with open(copy, "w") as f:
        f.write(text.replace(binary, in_dest(binary))
                .replace(config, in_dest(config)))
    env = {"SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""}
    if mandir:
        env["MANPATH"] = mandir
    p = run([analyze, "verify"] + ([] if mandir else ["--man=no"]) + [copy],
            env)
    out = p.stdout + p.stderr
    if p.returncode != 0 and "Failed to initialize manager" in out:
        cannot_run(f"systemd-analyze verify: {out.strip()}")
    else:
        ours = [l for l in out.splitlines() if "corral" in l]
        check(p.returncode == 0 and not ours,
              f"systemd-analyze verify accepts the unit: {out}")

done("install")
