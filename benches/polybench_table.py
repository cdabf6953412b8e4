#!/usr/bin/env python3
"""The table of benches/polybench.sh: reads its results file (a header line
`kernel check COLUMN...`, then one line per kernel with each column's run
times separated by spaces, or FAIL), and prints the minimum time of each
column, the ratios between columns and their geomeans.

Usage: polybench_table.py RESULTS.tsv DATASET BOUNDS RUNS [METRIC]

METRIC: time (seconds, the default), cpu (CPU seconds of the kernel,
from polybench.sh METRIC=cpu) or instructions (millions of instructions
of the kernel, from polybench.sh METRIC=instructions).
"""
import math
import sys

path, dataset, bounds, runs, *rest = sys.argv[1:]
metric = rest[0] if rest else "time"


def best(field):
    vals = field.split()
    if not vals or "FAIL" in vals:
        return None
    return min(float(v) for v in vals)


lines = open(path).read().splitlines()
cols = lines[0].split("\t")[2:]
rows = []
for line in lines[1:]:
    name, check, *fields = line.split("\t")
    rows.append((name, check, dict(zip(cols, (best(f) for f in fields)))))

# (label, numerator, denominator): only those whose columns were run.
RATIOS = [
    ("f/wasmtime", "faaslet", "wasmtime"),
    ("f+deadline/wt", "faaslet+deadline", "wasmtime"),
    ("f+checks/wt", "faaslet+checks", "wasmtime"),
    ("checks cost", "faaslet+checks", "faaslet+deadline"),
    ("f/native", "faaslet", "native"),
    ("guard cost", "faaslet", "no-guard"),
    ("f/base", "faaslet", "base"),
]
RATIOS = [r for r in RATIOS if r[1] in cols and r[2] in cols]
unit = {"time": "s", "cpu": "cpu s"}.get(metric, "Minstr")
head = ["kernel", "check"] + [f"{c} {unit}" for c in cols] + [r[0] for r in RATIOS]
logs = {r[0]: [] for r in RATIOS}
worst = (0.0, "")
table = []
for name, check, t in rows:
    prec = 1 if metric == "instructions" else 4
    cells = [name, check] + [f"{t[c]:.{prec}f}" if t[c] is not None else "FAIL" for c in cols]
    for label, a, b in RATIOS:
        if t[a] is not None and t[b]:
            r = t[a] / t[b]
            logs[label].append(math.log(r))
            cells.append(f"{r:.2f}x")
            if label == "f/wasmtime" and r > worst[0]:
                worst = (r, name)
        else:
            cells.append("-")
    table.append(cells)
geo = ["geomean", ""] + [""] * len(cols)
for label, _, _ in RATIOS:
    v = logs[label]
    geo.append(f"{math.exp(sum(v) / len(v)):.2f}x" if v else "-")
widths = [max(len(r[i]) for r in [head] + table + [geo]) for i in range(len(head))]


def fmt(r):
    return "  ".join(
        c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
    )


if metric == "time":
    print(
        f"PolyBench/C {dataset} dataset, faaslet --bounds {bounds}, min of {runs} run(s), "
        "kernel time only (PolyBench's timer), seconds"
    )
elif metric == "cpu":
    print(
        f"PolyBench/C {dataset} dataset, faaslet --bounds {bounds}, min of {runs} run(s), "
        f"CPU seconds (user+system) of the kernel: a run at {dataset} minus a run at MINI"
    )
else:
    print(
        f"PolyBench/C, faaslet --bounds {bounds}: millions of instructions of the kernel "
        f"(cachegrind: a run at {dataset} minus a run at MINI)"
    )
print(fmt(head))
for r in table:
    print(fmt(r))
print(fmt(geo))
if worst[1]:
    print(f"worst faaslet/wasmtime: {worst[0]:.2f}x ({worst[1]})")
mism = [r[0] for r in rows if r[1] != "same"]
print(
    "results: wasmtime and faaslet printed the same arrays for every kernel"
    if not mism
    else f"results DIFFER for: {' '.join(mism)}"
)
