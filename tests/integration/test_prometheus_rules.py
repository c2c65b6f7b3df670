"""contrib/prometheus: promtool accepts the rules (promtool check rules)
and every unit test in contrib/prometheus/tests/ passes (promtool test
rules: input series, the recorded values and the alerts expected, firing
or not). Skipped (77) without promtool. The metric names they use are
checked against a live scrape by test_contrib_metrics.py."""
import glob
import os
import shutil
import subprocess
import sys

from harness import check, check_eq, done

HERE = os.path.dirname(os.path.abspath(__file__))
PROM = os.path.normpath(os.path.join(HERE, "..", "..", "contrib",
                                     "prometheus"))
promtool = shutil.which("promtool")
if promtool is None:
    print("SKIP prometheus_rules: promtool is not installed")
    sys.exit(77)


def run(*args):
    p = subprocess.run([promtool, *args], capture_output=True, text=True,
                       timeout=120, cwd=PROM)
    return p.returncode, p.stdout + p.stderr


rc, out = run("check", "rules", "corral.rules.yml")
check_eq(rc, 0, f"promtool check rules corral.rules.yml: {out}")
check("SUCCESS" in out, f"promtool check rules says SUCCESS: {out}")
tests = sorted(os.path.relpath(t, PROM)
               for t in glob.glob(os.path.join(PROM, "tests", "*.yml")))
check(tests, "contrib/prometheus/tests/ has test files")
for t in tests:
    rc, out = run("test", "rules", t)
    check_eq(rc, 0, f"promtool test rules {t}: {out}")
    check("SUCCESS" in out, f"promtool test rules {t} says SUCCESS: {out}")

done("prometheus_rules")
