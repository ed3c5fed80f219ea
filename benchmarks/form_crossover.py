"""Where form="auto" switches from the scalar to the array form (run by hand).

For decoders k -> 2k -> k (the Jacobian penalty's shape), builds the
Jacobian d decoder / d h in both forms, times one Jacobian of a batch of 256
(float64, one thread) and prints each form's build time, the array form's
``scalar_cost`` estimate (what ``api.AUTO_ARRAY_MIN_OPERATIONS`` is compared
with) and the ratio of evaluation times, all measured in the same run.

    python benchmarks/form_crossover.py                 # k = 4, 8, 12, 16
    python benchmarks/form_crossover.py --k 4 8 16 32   # 32 builds the scalar form for minutes
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import symjac  # noqa: E402
from symjac import api  # noqa: E402
from symjac.emit.array_printing import scalar_cost  # noqa: E402


def decoder(h, W1, b1, W2, b2):
    return W2 @ np.tanh(W1 @ h + b1) + b2


def best_of(call, repeats=20):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[4, 8, 12, 16])
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.1f}; AUTO_ARRAY_MIN_OPERATIONS = {api.AUTO_ARRAY_MIN_OPERATIONS:,}")
    print(f"{'decoder':>14} {'scalar_cost':>12} {'build scalar':>13} {'build array':>12} "
          f"{'J scalar':>10} {'J array':>10} {'array/scalar':>13}  auto")
    rng = np.random.default_rng(0)
    for k in args.k:
        hidden = 2 * k
        shapes = dict(h=k, W1=(hidden, k), b1=hidden, W2=(k, hidden), b2=k)
        values = [rng.normal(size=(args.batch, k)), rng.normal(size=(hidden, k)) / np.sqrt(k),
                  rng.normal(size=hidden), rng.normal(size=(k, hidden)) / np.sqrt(hidden), rng.normal(size=k)]
        built, seconds = {}, {}
        for form in ("scalar", "array"):
            start = time.perf_counter()
            built[form] = symjac.jacobian(decoder, wrt="h", form=form, verbose=False, **shapes)
            seconds[form] = time.perf_counter() - start
        cost = scalar_cost(built["array"].array.derived)
        timed = {form: best_of(lambda form=form: built[form](*values, num_threads=1)) for form in built}
        auto = symjac.jacobian(decoder, wrt="h", verbose=False, **shapes).form
        print(f"{k:>4} -> {hidden:>3} -> {k:<3} {cost:>12,} {seconds['scalar']:>11.2f} s {seconds['array']:>10.2f} s "
              f"{timed['scalar'] * 1e3:>7.3f} ms {timed['array'] * 1e3:>7.3f} ms {timed['array'] / timed['scalar']:>12.2f}x"
              f"  {auto}")


if __name__ == "__main__":
    main()
