"""debian/ builds the packages from a clean checkout: the tracked files
(git ls-files) copied to a temp dir, dpkg-buildpackage -us -uc -b there
(it writes the .debs to the copy's parent, never next to the source),
lintian with no error and no warning left unexplained, the file lists
(dpkg -c) and the control data (dpkg-deb -I) of corral and libcorral-dev,
and the packaged binary, extracted into a throwaway root, reports its
version and checks the shipped configs. Skipped (77) without
dpkg-buildpackage or git. Slow: a whole build, minutes on a busy machine.
"""
import atexit
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

from harness import cannot_run, check, check_eq, done, require, tool

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.normpath(os.path.join(HERE, "..", ".."))

if shutil.which("dpkg-buildpackage") is None or shutil.which("git") is None:
    print("SKIP debian: dpkg-buildpackage or git is not installed")
    sys.exit(77)
p = subprocess.run(["git", "-C", SOURCE, "ls-files", "-z"],
                   capture_output=True, timeout=60)
if p.returncode != 0:
    print(f"SKIP debian: not a git checkout: {p.stderr.decode().strip()}")
    sys.exit(77)
files = [f for f in p.stdout.decode().split("\0") if f]

tmp = tempfile.mkdtemp(prefix="corral-deb-")
atexit.register(shutil.rmtree, tmp, ignore_errors=True)
src = os.path.join(tmp, "corral")
for f in files:
    path = os.path.join(SOURCE, f)
    if not os.path.lexists(path):  # deleted in the work tree
        continue
    os.makedirs(os.path.dirname(os.path.join(src, f)), exist_ok=True)
    shutil.copy2(path, os.path.join(src, f), follow_symlinks=False)
require(os.path.isfile(os.path.join(src, "debian", "rules")),
        "debian/rules is tracked")

with open(os.path.join(SOURCE, "meson.build")) as f:
    m = re.search(r"version\s*:\s*'([^']+)'", f.read())
require(m is not None, "meson.build names the project's version")
upstream = m.group(1)
with open(os.path.join(src, "debian", "changelog")) as f:
    m = re.match(r"corral \(([^)]+)\)", f.readline())
require(m is not None, "debian/changelog starts with corral (VERSION)")
version = m.group(1)
check_eq(version.rsplit("-", 1)[0], upstream,
         "debian/changelog's upstream version is meson.build's")


def run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, capture_output=True, text=True,
                          timeout=timeout, **kw)


# The unit tests run in the suite already: the package build skips them
# (debian/rules runs them when nocheck is not set).
env = {k: v for k, v in os.environ.items()
       if not k.startswith(("MESON", "ASAN", "UBSAN", "LSAN"))}
env["DEB_BUILD_OPTIONS"] = "nocheck parallel=2"
p = run(["dpkg-buildpackage", "-us", "-uc", "-b"], timeout=1500, cwd=src,
        env=env)
log = p.stdout + p.stderr
check_eq(p.returncode, 0, f"dpkg-buildpackage -us -uc -b:\n{log[-3000:]}")
print("# dpkg-buildpackage: " + "; ".join(
    l.strip() for l in log.splitlines()
    if "building package" in l or "binary-only upload" in l))

debs = {os.path.basename(d).split("_")[0]: d
        for d in glob.glob(os.path.join(tmp, "*.deb"))}
arch = run(["dpkg-architecture", "-qDEB_HOST_ARCH"]).stdout.strip()
multiarch = run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"]).stdout.strip()
for name in ("corral", "libcorral-dev"):
    check(name in debs, f"{name}_*.deb is built: {sorted(debs)}")
    check_eq(os.path.basename(debs.get(name, "")),
             f"{name}_{version}_{arch}.deb", f"{name}'s file name")
check(not any(n.startswith("libcorral0") for n in debs),
      "no libcorral0: libcorral is a static library only")
check(not glob.glob(os.path.join(SOURCE, "..", f"corral_{version}_*")),
      "nothing is written next to the source tree")

changes = glob.glob(os.path.join(tmp, "*.changes"))
check_eq(len(changes), 1, "one .changes file")

# lintian: no error, and every warning fixed or overridden (with a reason
# in debian/*.lintian-overrides).
if tool("lintian") and changes:
    p = run(["lintian", "--fail-on", "none", changes[0]], timeout=600)
    tags = [l for l in p.stdout.splitlines() if re.match(r"[EW]: ", l)]
    print("# lintian: " + (f"{len(tags)} tags" if tags else
                           "no errors, no warnings"))
    check(not [t for t in tags if t.startswith("E: ")],
          "lintian reports no error: " + "\n".join(tags))
    check(not tags, "lintian reports no warning: " + "\n".join(tags))


def contents(deb):
    p = run(["dpkg", "-c", deb])
    check_eq(p.returncode, 0, f"dpkg -c {deb}: {p.stderr}")
    return {l.split()[-1].lstrip(".") for l in p.stdout.splitlines()
            if l.split()}


def field(deb, name):
    p = run(["dpkg-deb", "-f", deb, name])
    check_eq(p.returncode, 0, f"dpkg-deb -f {deb} {name}: {p.stderr}")
    return p.stdout.strip()


def info(deb, member):
    p = run(["dpkg-deb", "-I", deb, member])
    return p.stdout if p.returncode == 0 else None


corral_deb = debs.get("corral")
dev_deb = debs.get("libcorral-dev")
require(corral_deb and dev_deb, "both packages are built")

# corral: the daemon, its man pages, the configs, the unit; no library.
have = contents(corral_deb)
for want in ("/usr/bin/corral", "/etc/corral/corral.json",
             "/lib/systemd/system/corral.service",
             "/usr/share/man/man8/corral.8.gz",
             "/usr/share/man/man5/corral.json.5.gz",
             "/usr/share/corral/examples/demo.json",
             "/usr/share/doc/corral/copyright"):
    check(want in have, f"corral ships {want}")
check(not [f for f in have if "/include/" in f or f.endswith((".a", ".pc"))],
      "corral ships no headers or libraries")
check_eq(field(corral_deb, "Package"), "corral", "corral's Package")
check_eq(field(corral_deb, "Version"), version, "corral's Version")
check_eq(field(corral_deb, "Architecture"), arch, "corral's Architecture")
depends = field(corral_deb, "Depends")
for lib in ("libevent-core", "libcurl4", "libhiredis", "libyajl",
            "libpcre2-8", "libdeflate", "libbrotli", "libssl"):
    check(lib in depends, f"corral depends on {lib}: {depends}")
conffiles = info(corral_deb, "conffiles") or ""
check_eq(conffiles.split(), ["/etc/corral/corral.json"],
         "the config is corral's one conffile")
postinst = info(corral_deb, "postinst") or ""
# dh_installsystemd --no-enable: an install enables nothing (only a unit
# that was enabled before keeps its links); start and restart go through
# deb-systemd-invoke, which starts no disabled unit that is not running.
check("deb-systemd-helper debian-installed 'corral.service'" in postinst and
      "deb-systemd-invoke $_dh_action 'corral.service'" in postinst,
      f"postinst enables nothing, restarts a running corral: {postinst}")
prerm = info(corral_deb, "prerm") or ""
check("deb-systemd-invoke stop 'corral.service'" in prerm,
      f"prerm stops corral on removal: {prerm}")

# libcorral-dev: headers, the static library and its pkg-config file.
have = contents(dev_deb)
for want in ("/usr/include/corral/cache.h", "/usr/include/corral/value.h",
             "/usr/include/corral/version.h",
             f"/usr/lib/{multiarch}/libcorral.a",
             f"/usr/lib/{multiarch}/pkgconfig/libcorral.pc"):
    check(want in have, f"libcorral-dev ships {want}")
check(not [f for f in have if ".so" in f], "libcorral-dev ships no .so")
check_eq(field(dev_deb, "Section"), "libdevel", "libcorral-dev's Section")
check_eq(field(dev_deb, "Multi-Arch"), "same", "libcorral-dev's Multi-Arch")
depends = field(dev_deb, "Depends")
for dev in ("libevent-dev", "libhiredis-dev"):  # libcorral.pc's Requires
    check(dev in depends, f"libcorral-dev depends on {dev}: {depends}")

# The packaged corral, unpacked into a throwaway root, runs.
root = os.path.join(tmp, "root")
for deb in (corral_deb, dev_deb):
    p = run(["dpkg-deb", "-x", deb, root])
    check_eq(p.returncode, 0, f"dpkg-deb -x {deb}: {p.stderr}")
corral = os.path.join(root, "usr", "bin", "corral")
p = run([corral, "--version"], timeout=30)
check_eq((p.returncode, p.stdout.strip()), (0, f"corral {upstream}"),
         "the packaged corral --version")
conf = os.path.join(root, "etc", "corral", "corral.json")
p = run([corral, "--check", "-c", conf], timeout=30,
        env={**os.environ, "TAAPI_KEY": "package-test"})
check(p.returncode == 0 and "ok (3 upstreams, 6 routes)" in p.stdout,
      f"the packaged corral --check on its corral.json: {p.stdout}{p.stderr}")
demo = os.path.join(root, "usr", "share", "corral", "examples", "demo.json")
p = run([corral, "--check", "-c", demo], timeout=30)
check(p.returncode == 0 and " ok (" in p.stdout,
      f"the packaged corral --check on demo.json: {p.stdout}{p.stderr}")
with open(os.path.join(root, "lib", "systemd", "system",
                       "corral.service")) as f:
    unit = f.read().splitlines()
for want in ("ExecStart=/usr/bin/corral -c /etc/corral/corral.json",
             "ExecStartPre=/usr/bin/corral --check -c "
             "/etc/corral/corral.json",
             "EnvironmentFile=-/etc/corral/corral.env", "DynamicUser=yes"):
    check(want in unit, f"the packaged unit has {want}")
with open(os.path.join(root, "usr", "lib", multiarch, "pkgconfig",
                       "libcorral.pc")) as f:
    pc = f.read()
check("prefix=/usr" in pc and "-lcorral" in pc,
      f"libcorral.pc points at /usr: {pc}")

done("debian")
