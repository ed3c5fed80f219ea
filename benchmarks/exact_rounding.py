"""What computing every point as written costs kernels without lanes.

Before gcc 14, gcc's basic-block vectorizer fuses a*b + c, a*b - c pairs
into one multiply-add-subtract despite -ffp-contract=off, so a point could
round differently as a single point than inside a batch. The kernels switch
that pass off in the point loops of kernels without lanes
(``SYMJAC_EXACT``, templates/_kernels.c.j2). This builds each kernel twice,
as shipped and with ``-DSYMJAC_EXACT=`` (the pass kept), and prints for each:
the batched and single-point time of both (best of 5 x 3, alternating, one
thread) and how many single-point calls differ from their row of the batch.

    python benchmarks/exact_rounding.py
"""

import time

import numpy as np

import symjac
from symjac.build.builder import DEFAULT_FLAGS
from symjac.examples.lorenz import lorenz
from symjac.examples.rober import rober

BUILDS = {"as shipped": DEFAULT_FLAGS, "pass kept": DEFAULT_FLAGS + ("-DSYMJAC_EXACT=",)}
POINTS = 100_000


def cases(rng):
    Y, V = rng.uniform(0.1, 1.0, (POINTS, 3)), rng.standard_normal((POINTS, 3))
    K, P = np.array([0.04, 3e7, 1e4]), np.array([10.0, 28.0, 8.0 / 3.0])
    for label, flags in BUILDS.items():
        yield "Robertson Jacobian", label, symjac.jacobian(rober, y=3, k=3, wrt="y", flags=flags), (Y, K)
        yield "Robertson J v", label, symjac.jvp(rober, y=3, k=3, wrt="y", flags=flags), (Y, K, V)
        yield "Lorenz Jacobian", label, symjac.jacobian(lorenz, u=3, p=3, flags=flags), (Y, P)


def best(call, repeats, rounds=5):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            call()
        times.append((time.perf_counter() - start) / repeats)
    return min(times)


def single_points(function, arguments, count=2000):
    """Single-point calls that differ from their row of the batch."""
    batch = function(*(a[:count] if a.ndim == 2 else a for a in arguments), num_threads=1)
    singles = np.array([function(*(a[i] if a.ndim == 2 else a for a in arguments)) for i in range(count)])
    return int((singles != batch).reshape(count, -1).any(axis=1).sum())


def main():
    table = {}
    for name, label, function, arguments in cases(np.random.default_rng(0)):
        table.setdefault(name, {})[label] = (function, arguments)
    print(f"# kernels without lanes, {POINTS:,} points per batch, one thread, best of 5 x 3 alternating")
    print(f"{'kernel':20s} {'build':11s} {'batch us':>9s} {'1 point us':>11s} {'singles != batch':>17s}")
    for name, builds in table.items():
        timing = {label: [float("inf"), float("inf")] for label in builds}
        for _ in range(3):
            for label, (function, arguments) in builds.items():
                one = tuple(a[0] if a.ndim == 2 else a for a in arguments)
                timing[label][0] = min(timing[label][0], best(lambda: function(*arguments, num_threads=1), 20))
                timing[label][1] = min(timing[label][1], best(lambda: function(*one), 20000))
        for label, (function, arguments) in builds.items():
            batch, point = timing[label]
            print(f"{name:20s} {label:11s} {batch * 1e6:9.1f} {point * 1e6:11.3f} "
                  f"{single_points(function, arguments):>11d} of 2000")
        shipped, kept = timing["as shipped"], timing["pass kept"]
        print(f"{'':20s} as shipped / pass kept: batch {shipped[0] / kept[0]:.2f}x, one point {shipped[1] / kept[1]:.2f}x")


if __name__ == "__main__":
    main()
