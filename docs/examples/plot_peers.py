"""
symjac and its peers
====================

Time per point of a batched Jacobian for N = 10,000 points and the latency
of a single point, from one recorded run of ``benchmarks/peers.py`` on a
2-core AMD EPYC, every peer on one thread
(``benchmarks/results/peers-simd-1thread-2026-11-30.txt``). The chart is
drawn from that file; nothing is re-run here. "scalar C loop" is symjac's
own CSE'd program in a plain C loop (gcc ``-O3 -march=native``); "C-API
floor" is that loop behind a minimal numpy C-API extension, the fixed cost
of any call from Python.
"""

import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

RESULTS = Path("../../benchmarks/results/peers-simd-1thread-2026-11-30.txt")
if not RESULTS.exists():                       # run from the repository root
    RESULTS = Path("benchmarks/results/peers-simd-1thread-2026-11-30.txt")
PEERS = {"symjac-cython": "symjac", "hand-c": "scalar C loop", "c-api": "C-API floor",
         "symengine": "SymEngine (LLVM)", "casadi-c": "CasADi (C)", "jax-jacfwd": "JAX",
         "torch-func": "torch.func"}


def parse(path):
    """{problem: {peer: {column: µs or None}}} from the 'times' tables of a peers.py report."""
    problems, problem, header = {}, None, None
    lines = path.read_text().splitlines()
    for before, line in zip([""] + lines, lines):
        # a problem opens with a rule, its title, notes and a rule; its tables start with "times:"
        framed = before.startswith("=====") and not line.startswith("times:")
        title = re.match(r"^(\w+): (.*?)(?:;|$)", line) if framed else None
        if title:
            problem = title.group(1)
            problems[problem] = {"title": title.group(2)}
        elif line.startswith("peer ") and "1-pt us" in line:
            header = re.split(r"\s{2,}", line.strip())
        elif line.startswith("--") or not line.strip():
            header = None
        elif header and problem and line.split()[0] in PEERS:
            cells = re.split(r"\s+", line.strip())
            row = dict(zip(["peer", "import s", "setup s", "cached s", "1-pt us", "N=1", "N=100",
                            "N=1e4", "N=1e6"], cells))

            def number(text):
                try:
                    return float(text)
                except ValueError:
                    return None                # "-" or "-[1]": not run at that size
            problems[problem][row["peer"]] = {key: number(row[key]) for key in ("1-pt us", "N=1e4")}
    return problems


problems = parse(RESULTS)
names = list(problems)
print(f"{len(names)} problems from {RESULTS.name}: {', '.join(names)}")
for name in names:
    print(f"  {name:12s} symjac {problems[name]['symjac-cython']['N=1e4']} µs/point at N=1e4")

fig, axes = plt.subplots(1, 2, figsize=(11, 5.5), sharey=True)
y = np.arange(len(names))
height = 0.8 / len(PEERS)
for ax, column, label in [(axes[0], "N=1e4", "µs per point, N = 10,000 (log)"),
                          (axes[1], "1-pt us", "µs per call, one point (log)")]:
    for i, (peer, peer_label) in enumerate(PEERS.items()):
        values = [problems[name].get(peer, {}).get(column) for name in names]
        ax.barh(y + i * height, [v if v is not None else np.nan for v in values], height, label=peer_label)
    ax.set_xscale("log")
    ax.set_xlabel(label)
axes[0].set_yticks(y + 0.4 - height / 2,
                   [problems[name]["title"].split(",")[0].split(" M(q)")[0] for name in names])
axes[0].invert_yaxis()
fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=len(PEERS), fontsize=8)
fig.suptitle("Jacobians, one thread: symjac and its peers (shorter is faster)")
fig.tight_layout(rect=(0, 0.06, 1, 1))
plt.show()
