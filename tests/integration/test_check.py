"""corral --check names the file, the key and the reason of the first
error in a broken config, and exits non-zero; a good config passes."""
import os
import subprocess

from harness import CORRAL, World, check, check_eq, done

w = World()
HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(HERE, "..", "configs")


def run_check(path, env=None):
    p = subprocess.run([CORRAL, "--check", "-c", path], capture_output=True,
                       text=True, env={**os.environ, **(env or {})},
                       timeout=10)
    return p.returncode, p.stdout + p.stderr


BASE = ('"listen": "127.0.0.1:8080", "upstreams": {"o": {"base": '
        '"http://127.0.0.1:9"}}, ')
broken = {
    "syntax": ('{"listen": "127.0.0.1:8080",,}', ["invalid JSON"]),
    "unknown key": ("{" + BASE + '"routes": [{"path": "/a", "upstream": '
                    '"o", "fetch": "/a", "strategyy": "short"}]}',
                    ["routes[0].strategyy", "unknown key"]),
    "bad duration": ("{" + BASE + '"routes": [{"path": "/a", "upstream": '
                     '"o", "fetch": "/a", "strategy": "10 minutes"}]}',
                     ["routes[0].strategy"]),
    "undefined upstream": ("{" + BASE + '"routes": [{"path": "/a", '
                           '"upstream": "nope", "fetch": "/a"}]}',
                           ["routes[0].upstream", "nope"]),
    "bad regex": ("{" + BASE + '"routes": [{"path": "/a/{x}", "upstream": '
                  '"o", "fetch": "/a/{x}", "params": {"x": "([a-z"}}]}',
                  ["routes[0].params.x"]),
    "duplicate path": ("{" + BASE + '"routes": [{"path": "/a", "upstream": '
                       '"o", "fetch": "/a"}, {"path": "/a", "upstream": '
                       '"o", "fetch": "/b"}]}', ["routes[1].path",
                                                 "duplicate"]),
    "unset variable": ("{" + BASE + '"routes": [{"path": "/a", "upstream": '
                       '"o", "fetch": "/a?k=${CORRAL_TEST_UNSET}"}]}',
                       ["CORRAL_TEST_UNSET"]),
    "bad size": ('{"listen": "127.0.0.1:8080", "l1": {"max_bytes": "lots"}, '
                 '"upstreams": {"o": {"base": "http://127.0.0.1:9"}}, '
                 '"routes": [{"path": "/a", "upstream": "o", "fetch": "/a"}]}',
                 ["l1.max_bytes"]),
    "header corral sets": ("{" + BASE.replace('"base"', '"headers": {"TE": '
                           '"trailers"}, "base"') + '"routes": [{"path": '
                           '"/a", "upstream": "o", "fetch": "/a"}]}',
                           ["upstreams.o.headers.TE"]),
    "bad base": ('{"listen": "127.0.0.1:8080", "upstreams": {"o": {"base": '
                 '"ftp://x"}}, "routes": [{"path": "/a", "upstream": "o", '
                 '"fetch": "/a"}]}', ["upstreams.o.base"]),
    "redis and sentinel": ("{" + BASE + '"l2": {"redis": "127.0.0.1:6379",'
                           '\n"sentinel": {"master": "m", "nodes": '
                           '["127.0.0.1:26379"]}}, "routes": [{"path": '
                           '"/a", "upstream": "o", "fetch": "/a"}]}',
                           [":2: l2.sentinel", "mutually exclusive"]),
}
for what, (text, needles) in broken.items():
    path = w.write_config(text, what.replace(" ", "-") + ".json")
    rc, out = run_check(path)
    check(rc != 0, f"{what}: exit status {rc}")
    check(path in out, f"{what}: names the file: {out}")
    for n in needles:
        check(n in out, f"{what}: says {n!r}: {out}")

# A secret expanded from the environment never shows in an error.
secret = "s3cr3t-value-42"
path = w.write_config("{" + BASE + '"routes": [{"path": "/a", "upstream": '
                      '"o", "fetch": "/a?k=${CORRAL_TEST_SECRET}", '
                      '"strategy": "nope"}]}', "secret.json")
rc, out = run_check(path, {"CORRAL_TEST_SECRET": secret})
check(rc != 0, "secret config fails on strategy")
check(secret not in out, f"the secret stays out of errors: {out}")

for name in sorted(n for n in os.listdir(CONFIGS) if n.endswith(".json")):
    rc, out = run_check(os.path.join(CONFIGS, name),
                        {"CORRAL_TEST_TOKEN": "t", "CORRAL_TEST_KEY": "k",
                         "CORRAL_TEST_CA": "/etc/ssl/certs/ca-certificates.crt"})
    if name.startswith("bad-"):
        check(rc != 0 and name in out, f"{name}: {out}")
    else:
        check_eq(rc, 0, f"{name}: {out}")

rc, out = run_check(os.path.join(HERE, "..", "..", "conf", "demo.json"))
check_eq(rc, 0, f"conf/demo.json: {out}")
p = subprocess.run([CORRAL, "--version"], capture_output=True, text=True)
check(p.returncode == 0 and p.stdout.startswith("corral "), "--version")
p = subprocess.run([CORRAL, "-h"], capture_output=True, text=True)
check(p.returncode == 0 and "--check" in p.stdout, "-h")
p = subprocess.run([CORRAL], capture_output=True, text=True)
check(p.returncode != 0 and "usage" in p.stderr, "no arguments")

# The error log says the level: as a word on a terminal or a file, as a
# syslog priority for the journal (JOURNAL_STREAM set, as systemd does).
bad = w.write_config('{"listen": "127.0.0.1:8080",,}', "bad-level.json")
for env, prefix in (({}, "corral: error: "), ({"JOURNAL_STREAM": "8:1"},
                                              "<3>corral: ")):
    clean = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    p = subprocess.run([CORRAL, "-c", bad], capture_output=True, text=True,
                       env={**clean, **env}, timeout=10)
    check(p.returncode == 1 and p.stderr.startswith(prefix) and
          "invalid JSON" in p.stderr, f"error log level {env}: {p.stderr}")
done("check")
