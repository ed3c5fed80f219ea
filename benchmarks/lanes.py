"""SIMD lanes against the scalar batch loop, kernel by kernel, in one run.

    python benchmarks/lanes.py [--sizes 10000,1000000] [--models rober,hires,...] [--repeats 7]
                               [--flags "-O3"]

Run by hand, never by the test suite. For each model it builds the same
kernels twice in this process: with lanes (the default) and with the
scalar point loop (``c_backend.LANE_OPERATIONS_PER_ELEMENT`` raised so no kernel
runs in lanes), both native, one thread. It then times the bare kernel call
(``module.KERNELS[kind](args, outs, n, 1)``: buffers prepared once, no
Python-level checks), alternating the variants repetition by repetition so
that machine drift hits both alike, and prints ns per point (minimum over
repetitions), the ratio scalar / lanes, GFlop/s of the lanes kernel
(operations of the CSE'd program, each + - * / and libm call counted as
one), and, for reference, the time to write the output once (``out.fill``)
in the same run. ``--flags`` adds a third variant, lanes built with those
flags instead of the defaults (e.g. ``"-O3"`` without ``-fno-math-errno``),
and its time as a ratio to the default lanes build. It also prints each kernel's operations per element it reads or stores,
the quantity ``c_backend.runs_in_lanes`` decides by.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

import symjac  # noqa: E402

MAX_BYTES = 4e9  # outputs of one size, both variants
from symjac.emit import c_backend  # noqa: E402


def models():
    from symjac.examples import hires, lorenz, mlp, rober
    from symjac.examples.brusselator import make_brusselator
    from symjac.examples.objectives import lennard_jones
    from symjac.examples.pendulum import make_pendulum_residual

    def mlp_shapes(n_in, n_hidden, n_out):
        return dict(x=n_in, W1=(n_hidden, n_in), b1=n_hidden, W2=(n_out, n_hidden), b2=n_out)

    return {
        "lorenz": (symjac.jacobian, lorenz.lorenz, dict(u=3, p=3), "u"),
        "rober": (symjac.jacobian, rober.rober, dict(y=3, k=3), "y"),
        "hires": (symjac.jacobian, hires.hires, hires.SHAPES, hires.WRT),
        "bruss40": (symjac.jacobian, make_brusselator(40), dict(u=80, p=3), "u"),
        "mlp8": (symjac.jacobian, mlp.mlp, mlp_shapes(8, 16, 8), "x"),
        "pendulum10": (symjac.jacobian, make_pendulum_residual(10), dict(q=10, u=10, ud=10, p=21), "q"),
        "lj_hessian": (symjac.hessian, lennard_jones, dict(x=24), "x"),
    }


def build(entry, lanes: bool, flags=None):
    make, function, shapes, wrt = entry
    saved = c_backend.LANE_OPERATIONS_PER_ELEMENT
    if not lanes:
        c_backend.LANE_OPERATIONS_PER_ELEMENT = float("inf")
    try:
        return make(function, wrt=wrt, flags=flags, **shapes)
    finally:
        c_backend.LANE_OPERATIONS_PER_ELEMENT = saved


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--models", default="lorenz,rober,hires,bruss40,mlp8,pendulum10,lj_hessian")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--flags", help="also build the lanes with these compiler flags, e.g. '-O3'")
    opts = parser.parse_args(argv)
    sizes = [int(float(s)) for s in opts.sizes.split(",")]
    table = models()
    rng = np.random.default_rng(0)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.2f}; "
          f"python {sys.version.split()[0]}; one thread; ns per point (min of {opts.repeats})")
    mhz = _clock_mhz()
    if mhz:
        print(f"# clock {mhz:.0f} MHz: one core's peak is 16 flop/cycle (AVX2, 2 FMA units) = "
              f"{16 * mhz / 1000:.1f} GFlop/s; a scalar loop's is 4 flop/cycle = {4 * mhz / 1000:.1f} GFlop/s")
    print(f"{'model':12} {'kind':10} {'ops/elem':>9} {'N':>8} {'write':>8} {'scalar':>9} {'lanes':>9} "
          f"{'scalar/lanes':>12} {'GFlop/s':>8}" + (f" {'flags/lanes':>11}" if opts.flags else ""))
    for name in opts.models.split(","):
        entry = table[name]
        variants = {"lanes": build(entry, True), "scalar": build(entry, False)}
        if opts.flags:
            variants["flags"] = build(entry, True, tuple(opts.flags.split()))
        module = variants["lanes"]._module
        kind = "jacobian" if "jacobian" in module.KERNELS else "hessian"
        sizes_of = [np.prod(s, dtype=int) for s in module.ARGUMENT_SHAPES]
        shapes, _ = module.LAYOUTS[kind]
        out_sizes = [int(np.prod(s, dtype=int)) for s in shapes]
        program_ops = _operations(variants["lanes"], kind)
        moved = _stored(variants["lanes"], kind) + sum(sizes_of)
        for n in sizes:
            if n * sum(out_sizes) * 8 * 2 > MAX_BYTES:  # both variants' outputs
                print(f"{name:12} {kind:10} {'':9} {n:8d}  skipped: outputs over {MAX_BYTES / 1e9:.0f} GB")
                continue
            # parameters after the first differentiated argument are broadcast, as in real use
            args = tuple(rng.uniform(0.5, 1.5, (n if k == 0 else 1, size)) for k, size in enumerate(sizes_of))
            outs = tuple(np.zeros((n, size)) for size in out_sizes)
            best = dict.fromkeys([*variants, "write"], np.inf)
            calls = {v: variants[v]._module.KERNELS[kind] for v in variants}
            for _ in range(opts.repeats):
                for variant, call in calls.items():
                    started = time.perf_counter()
                    call(args, outs, n, 1)
                    best[variant] = min(best[variant], time.perf_counter() - started)
                started = time.perf_counter()
                for out in outs:
                    out.fill(0.0)
                best["write"] = min(best["write"], time.perf_counter() - started)
            ns = {k: v / n * 1e9 for k, v in best.items()}
            gflops = program_ops / ns["lanes"]
            print(f"{name:12} {kind:10} {program_ops / max(moved, 1):9.1f} {n:8d} {ns['write']:8.2f} "
                  f"{ns['scalar']:9.2f} {ns['lanes']:9.2f} {ns['scalar'] / ns['lanes']:12.2f} {gflops:8.2f}"
                  + (f" {ns['flags'] / ns['lanes']:11.2f}" if opts.flags else ""))
    return 0


def _clock_mhz() -> float | None:
    try:
        lines = open("/proc/cpuinfo").read().splitlines()
    except OSError:
        return None
    values = [float(line.split(":")[1]) for line in lines if line.startswith("cpu MHz")]
    return max(values) if values else None


def _operations(compiled, kind) -> int:
    return _program(compiled, kind).operations


def _stored(compiled, kind) -> int:
    return sum(len(buffer.positions) for buffer in _program(compiled, kind).buffers)


def _program(compiled, kind):
    from symjac.emit.simplify import simplify

    return simplify(compiled.derivative, kind)


if __name__ == "__main__":
    sys.exit(main())
