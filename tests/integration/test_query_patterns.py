#!/usr/bin/env python3
"""Issue 19, item 2: forwarded query values have patterns, so a route's
key space is bounded by its config ("query": {"currency": "^[a-z]{3}$"};
the array form checks the default pattern of a path parameter). A value
that fails is a 400 and no upstream call: 50 random values used to make
50 calls."""
import random
import string

from harness import World, check, check_eq, done

w = World()
origin = w.start_origin()
c = w.start_corral({
    "upstreams": {"o": {"base": origin.base()}},
    "routes": [
        {"path": "/fx", "upstream": "o", "fetch": "/fx",
         "query": {"currency": "^[a-z]{3}$"}},
        {"path": "/any", "upstream": "o", "fetch": "/any",
         "query": ["currency"]},
    ],
})


def rnd(n):
    return "".join(random.choice(string.ascii_letters + string.digits)
                   for _ in range(n))


r = c.get("/fx?currency=usd")
check_eq(r.status, 200, "a value that fits")
check_eq(r.json()["query"], "currency=usd", "forwarded")
bad = [f"/fx?currency={rnd(random.choice([1, 2, 4, 5, 8]))}" for _ in range(25)]
bad += [f"/fx?currency={rnd(3).upper()}1" for _ in range(25)]
answers = c.many(None, len(bad), paths=bad)
check_eq({a.status for a in answers}, {400}, "50 random values: all 400")
check("currency" in answers[0].json()["error"], "the error names it")
check_eq(origin.calls("/fx"), 1, "and no call for any of them")
# The array form: the default pattern of a path parameter.
check_eq(c.get("/any?currency=eur").status, 200, "array form: a value")
for v in ["a%20b", "a+b", "BTC%2FUSDT", "x" * 129, "%00"]:
    check_eq(c.get(f"/any?currency={v}").status, 400, f"array form: {v}")
check_eq(origin.calls("/any"), 1, "array form: one call")

check(c.alive(), "corral still running")
done("query_patterns")
