"""The L1 budget counts what is stored, and a JSON body of 16 KB is kept
as its gzip (and br) forms only, not its identity bytes: the same budget
holds more keys than it would identity bodies. A client that takes no
coding still gets the exact bytes: decoded for the first such client of
a value, and kept with it in L1 for the ones that follow."""
import json

from harness import World, check, check_eq, done

w = World()
origin = w.start_origin()
BUDGET = 1 << 20
corral = w.start_corral({
    "l1": {"max_bytes": str(BUDGET)},
    "upstreams": {"o": {"base": origin.base(), "timeout": "10s"}},
    "routes": [{"path": "/j/{p}", "upstream": "o", "fetch": "/j/{p}",
                "strategy": "1h"}],
}, admin=True)

rows, i = [], 0
while len(json.dumps(rows)) < 16 * 1024:
    rows.append({"id": f"coin-{i}", "symbol": f"c{i % 97}",
                 "current_price": round(1000 / (i + 1), 4),
                 "market_cap_rank": i + 1,
                 "last_updated": "2026-12-06T10:11:12.000Z"})
    i += 1
body = json.dumps(rows).encode()
origin.behave("*", body=body.decode())
# Identity bodies alone would fit at most this many keys.
before = BUDGET // len(body)
KEYS = 3 * before
for k in range(KEYS):
    check_eq(corral.get(f"/j/k{k}", headers={"Accept-Encoding": "gzip"}).status,
             200, f"fill k{k}")
m = corral.metrics()
entries = m[("corral_l1_entries", frozenset())]
used = m[("corral_l1_bytes", frozenset())]
print(f"note: {int(entries)} keys of {len(body)} B in {BUDGET} B "
      f"({int(used)} B charged); identity alone: {before}")
check(entries > before, f"more keys than identity bodies: {entries} > {before}")
check(used <= BUDGET, f"within the budget: {used}")
check_eq(entries, KEYS, "every key kept")
calls = origin.total()


def identity_bytes():
    return corral.metrics()[("corral_l1_form_bytes",
                             frozenset({("coding", "identity")}))]


check_eq(identity_bytes(), 0, "no identity bytes kept")
IDENT = 10
for k in range(IDENT):
    for n in range(2):
        r = corral.get(f"/j/k{k}")
        check_eq(r.status, 200, f"hit k{k}")
        check(r.body == body, f"k{k}: identity bytes, decoded")
        check("content-encoding" not in r.headers, f"k{k}: no coding asked")
        check_eq(identity_bytes(), (k + 1) * len(body),
                 f"k{k}: identity kept once its first client asked ({n})")
check_eq(origin.total(), calls, "all hits")

# The metrics say what is kept, how it was answered, and what it cost.
m = corral.metrics()
def sample(name, coding=None):
    labels = frozenset({("coding", coding)}) if coding else frozenset()
    return m.get((name, labels))
check_eq(sample("corral_l1_form_bytes", "identity"), IDENT * len(body),
         "identity bytes of the values asked for them")
check(sample("corral_l1_form_bytes", "gzip") > 0, "gzip bytes kept")
check_eq(sample("corral_answers_by_coding_total", "gzip"), KEYS,
         "the fills answered gzip")
check_eq(sample("corral_answers_by_coding_total", "identity"), 2 * IDENT,
         "the hits identity")
ratio = (sample("corral_compression_input_bytes_total", "gzip") /
         sample("corral_compression_output_bytes_total", "gzip"))
check(ratio > 3, f"gzip's ratio: {ratio:.2f}")
check(sample("corral_compression_cpu_seconds_total") > 0, "CPU counted")
print(f"note: gzip ratio {ratio:.2f}, "
      f"{sample('corral_compression_cpu_seconds_total')} s compressing")
done("encoding_budget")
