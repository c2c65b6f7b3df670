"""The Grafana dashboard (contrib/grafana/corral.json) and the Prometheus
rules (contrib/prometheus/corral.rules.yml, and the series their promtool
tests feed in) use only metric names a running corral exports: each name
in a panel's or a variable's query, a rule's expression or a test's input
series is checked against a live /metrics scrape of a corral with an L2
(so the L2 families are there) after one fill. A family with no sample
yet counts when its # HELP / # TYPE lines are there; a histogram's
_bucket, _sum and _count count for its family. The dashboard also has a
panel for every area it promises."""
import json
import os
import re

from harness import World, check, check_eq, done, require

HERE = os.path.dirname(os.path.abspath(__file__))
CONTRIB = os.path.normpath(os.path.join(HERE, "..", "..", "contrib"))
# corral_ names, not the level:corral_name:operation of a recording rule.
NAME = re.compile(r"(?<![:\w])corral_[a-z0-9_]+(?![:\w])")

w = World()
origin = w.start_origin()
redis = w.start_redis()
cfg = {"l2": {"redis": f"127.0.0.1:{redis.port}", "prefix": "t:"},
       "upstreams": {"u": {"base": origin.base(), "rate": "10/s"}},
       "routes": [{"path": "/api/{name}", "upstream": "u",
                   "fetch": "/json/{name}", "strategy": "realtime"}]}
corral = w.start_corral(cfg, admin=True)
require(corral.wait_l2("up"), "corral sees Redis")
for _ in range(3):
    check_eq(corral.get("/api/a").status, 200, "a request through corral")
scrape = corral.admin("GET", "/metrics", token=None).body.decode()

samples, families = set(), {}
for line in scrape.splitlines():
    m = re.match(r"# (HELP|TYPE) (\S+)(?: (\S+))?", line)
    if m:
        if m.group(1) == "TYPE":
            families[m.group(2)] = m.group(3)
        else:
            families.setdefault(m.group(2), None)
    elif line and not line.startswith("#"):
        samples.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
require("corral_l2_up" in families, "the scrape has the L2 families")


def exported(name):
    if name in samples or name in families:
        return True
    m = re.fullmatch(r"(.+)_(bucket|sum|count)", name)
    return bool(m) and families.get(m.group(1)) == "histogram"


def check_names(where, names):
    check(names, f"{where} names some corral_ metrics")
    for name in sorted(names):
        check(exported(name), f"{where}: {name} is in corral's /metrics")


# ---- the dashboard ----
with open(os.path.join(CONTRIB, "grafana", "corral.json")) as f:
    dash = json.load(f)


def queries(node):
    """Every query string of the dashboard: panel targets' expr, the
    variables' query and definition."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "query", "definition") and isinstance(v, str):
                yield v
            else:
                yield from queries(v)
    elif isinstance(node, list):
        for v in node:
            yield from queries(v)


exprs = list(queries(dash))
used = {n for e in exprs for n in NAME.findall(e)}
check_names("contrib/grafana/corral.json", used)

panels = [p for p in dash["panels"] if p.get("type") != "row"]
ids = [p["id"] for p in dash["panels"]]
check_eq(len(ids), len(set(ids)), "every panel has its own id")
for p in panels:
    targets = p.get("targets", [])
    check(targets and all(t.get("expr") for t in targets),
          f"panel {p.get('title')!r} has queries")
for want in ("corral_requests_total", "corral_upstream_calls_total",
             "corral_upstream_calls_saved_total",
             "corral_rate_limit_waits_total", "corral_upstream_pauses_total",
             "corral_upstream_breaker_state", "corral_fills_in_flight",
             "corral_waiters_collapsed_total", "corral_l1_bytes",
             "corral_l1_evictions_total", "corral_l2_up",
             "corral_l2_operations_total", "corral_l2_errors_total",
             "corral_upstream_call_duration_seconds_bucket",
             "corral_l2_reply_duration_seconds_bucket", "corral_route_info",
             "corral_client_connections"):
    check(want in used, f"the dashboard shows {want}")
heat = [p for p in panels if p["type"] == "heatmap"]
check(heat and "corral_upstream_call_duration_seconds_bucket" in
      heat[0]["targets"][0]["expr"] and
      heat[0]["targets"][0].get("format") == "heatmap",
      "an upstream latency heatmap over the histogram's buckets")

# ---- the rules and their tests ----
rules_path = os.path.join(CONTRIB, "prometheus", "corral.rules.yml")
with open(rules_path) as f:
    rules = f.read()
check_names("contrib/prometheus/corral.rules.yml", set(NAME.findall(rules)))
recorded = set(re.findall(r"^\s*- record: (\S+)", rules, re.M))
for name in re.findall(r"[a-z_]+:corral_[a-z0-9_]+:[a-z0-9_]+", rules):
    check(name in recorded, f"the rules record {name} that they use")
alerts = set(re.findall(r"^\s*- alert: (\S+)", rules, re.M))
check_eq(alerts, {"CorralL2Down", "CorralUpstreamBreakerOpen",
                  "CorralUpstreamPaused", "CorralRateBudgetExhausted",
                  "CorralErrorRatioHigh", "CorralFillsPilingUp",
                  "CorralWorkerRestarted"}, "the alerts")
tests = os.path.join(CONTRIB, "prometheus", "tests")
for name in sorted(os.listdir(tests)):
    with open(os.path.join(tests, name)) as f:
        text = f.read()
    series = re.findall(r"series: '([a-z_:]+)\{", text)
    check_names(f"contrib/prometheus/tests/{name}",
                {s for s in series if NAME.fullmatch(s)})

done("contrib_metrics")
