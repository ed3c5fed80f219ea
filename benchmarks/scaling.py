"""How symjac's pipeline scales with model size, stage by stage.

    python benchmarks/scaling.py [--models bruss1d bruss2d network pendulum mlp]
                                 [--sizes N ...] [--quick] [--timeout 600]

Each (model, size) runs in a fresh subprocess with a fresh, empty
SYMJAC_CACHE_DIR, which times each stage separately:

    setup     build the model (for the pendulum: the sympy.physics.mechanics
              derivation, cached per n within a process but not across runs)
    trace     symjac.trace
    diff      symjac.derive.diff.differentiate (each output entry in its own symbols)
    simplify  symjac.emit.simplify.simplify(derivative, "jacobian"): sympy.cse
    render    symjac.emit.render.render(derivative, (program,), "cython")
    cython    Cython .pyx -> .c: zero now (models are plain C kernel libraries;
              the shared kernel runtime is built once, before the stages, untimed)
    cc        C compiler .c -> kernel library (subprocess, inside symjac.build.builder.load)

and prints per size: states (length of the differentiated input(s)), non-zeros,
operation counts before/after CSE (sympy.count_ops, timed separately and not
part of the total; skipped above --ops-max non-zeros), seconds per stage, the
total, microseconds of pipeline time per non-zero, the size of the generated
.pyx, peak memory (ru_maxrss of the run itself after the build, and of the C
compiler, measured through a small wrapper set as $CC) and, for sizes up to --verify-max states, the maximum relative
difference to central differences of the model (plus one evaluation's time).

A run that exceeds --timeout seconds is killed and reported with the stage it
was in. Models and the meaning of "size":

    bruss1d   1-D Brusselator, size = grid points n (2n states)
    bruss2d   2-D periodic Brusselator, size = m (m x m grid, 2 m^2 states)
    network   random mass-action network, size = reactions (size // 2 species)
    pendulum  n-link pendulum residual M(q) ud - F(q, u), size = n, wrt (q, u, ud)
    mlp       tanh MLP size -> 2 size -> size, wrt x, weights are parameters
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SIZES = {
    "bruss1d": [50, 100, 500, 1000, 2000],
    "bruss2d": [8, 16, 32, 64],
    "network": [50, 100, 300],
    "pendulum": [5, 10, 20],
    "mlp": [32],
}
QUICK_SIZES = {"bruss1d": [50, 100], "bruss2d": [8], "network": [50], "pendulum": [5], "mlp": [8]}
STAGES = ("setup", "trace", "diff", "simplify", "render", "cython", "cc")
PIPELINE = ("trace", "diff", "simplify", "render", "cython", "cc")


# --------------------------------------------------------------------------
# the models: (function, shapes, wrt, point) with a numeric reference


def make_model(name: str, size: int):
    """``(function, shapes, wrt, point, reference)``; reference(args, wrt_index) -> Jacobian block."""
    import numpy as np

    rng = np.random.default_rng(0)
    if name == "bruss1d":
        from symjac.examples.brusselator import P_DEFAULT, initial_value, make_brusselator

        f = make_brusselator(size)
        point = (initial_value(size) + rng.normal(0, 0.1, 2 * size), P_DEFAULT)
        return f, (2 * size, 3), "u", point, f
    if name == "bruss2d":
        from symjac.examples.brusselator2d import P_DEFAULT, initial_value, make_brusselator_2d

        f = make_brusselator_2d(size)
        point = (initial_value(size) + rng.uniform(0.1, 0.5, 2 * size * size), P_DEFAULT)
        return f, (2 * size * size, 3), "u", point, f
    if name == "network":
        from symjac.examples.reaction_network import initial_value, make_mass_action_network

        n_species = max(2, size // 2)
        f, k = make_mass_action_network(n_species, size, seed=0)
        return f, (n_species, size), "c", (initial_value(n_species), k), f
    if name == "pendulum":
        from symjac.examples.pendulum import default_parameters, make_pendulum_residual, numeric_residual

        f = make_pendulum_residual(size)
        point = (rng.normal(0, 0.5, size), rng.normal(0, 0.5, size), rng.normal(0, 1, size), default_parameters(size))
        return f, (size, size, size, 2 * size + 1), ("q", "u", "ud"), point, numeric_residual(size)
    if name == "mlp":
        from symjac.examples.mlp import mlp, random_weights

        weights = random_weights(size, 2 * size, size, seed=0)
        shapes = (size, (2 * size, size), 2 * size, (size, 2 * size), size)
        return mlp, shapes, "x", (rng.normal(size=size), *weights), mlp
    raise ValueError(f"unknown model {name!r}")


# --------------------------------------------------------------------------
# the worker: one (model, size) in this process


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


RSS_SCALE = 1 / 1024 if sys.platform != "darwin" else 1 / 1024**2  # ru_maxrss: KiB on Linux, bytes on macOS

# The C compiler runs under this wrapper (CC="python wrapper.py gcc"): Linux
# carries a forked child's inherited peak RSS across exec, so RUSAGE_CHILDREN
# of the (large) worker would report the worker's own peak, not the compiler's.
# The wrapper is small when it forks, so its RUSAGE_CHILDREN is the compiler's.
CC_WRAPPER = """
import os, resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
with open(os.environ["SCALING_CC_RSS"], "a") as out:
    out.write("%d\\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


def peak_mb() -> tuple[float, float | None]:
    """Peak RSS of this process and of the C compiler (from the wrapper's file), MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RSS_SCALE
    try:
        compiler = max(int(line) for line in Path(os.environ["SCALING_CC_RSS"]).read_text().split()) * RSS_SCALE
    except (KeyError, OSError, ValueError):
        compiler = None
    return own, compiler


def worker(model: str, size: int, ops_max: int, verify_max: int) -> None:
    import numpy as np

    from symjac.build import builder as build
    from symjac.build import cache
    from symjac.build import toolchain
    from symjac.api import resolve_wrt
    from symjac.derive.diff import differentiate
    from symjac.emit.render import render
    from symjac.run.runtime import Jacobian
    from symjac.emit.simplify import count_operations, simplify
    from symjac.front.trace import trace

    def stage(name, action):
        emit({"start": name})
        started = time.perf_counter()
        result = action()
        emit({"stage": name, "seconds": time.perf_counter() - started})
        return result

    # The kernel runtime is built once per machine, not per model: build it
    # (untimed) before the stages, so each run times the model alone.
    build.kernel_runtime(cache.private_dir(cache.cache_dir()))
    for name in ("cythonize", "compile_extension"):  # time the compile inside build.load
        original = getattr(toolchain, name)
        label = "cython" if name == "cythonize" else "cc"

        def timed(*args, _original=original, _label=label):
            emit({"start": _label})
            started = time.perf_counter()
            _original(*args)
            emit({"stage": _label, "seconds": time.perf_counter() - started})

        setattr(toolchain, name, timed)

    f, shapes, wrt, point, reference = stage("setup", lambda: make_model(model, size))
    if model == "pendulum":
        from symjac.examples.pendulum import derivation_seconds

        emit({"derivation_seconds": derivation_seconds(size)})
    traced = stage("trace", lambda: trace(f, *shapes))
    indices, wrt_is_tuple = resolve_wrt(traced, wrt)
    derivative = stage("diff", lambda: differentiate(traced, indices, wrt_is_tuple))
    states = sum(traced.arguments[i].size for i in indices)
    emit({"states": states, "nonzeros": derivative.nonzeros})
    if derivative.nonzeros <= ops_max:
        emit({"start": "count_ops (before CSE, not a pipeline stage)"})
        started = time.perf_counter()
        before = count_operations(expr for block in derivative.blocks for _, expr in block.entries)
        emit({"ops_before": before, "ops_seconds": time.perf_counter() - started})
    program = stage("simplify", lambda: simplify(derivative, "jacobian"))
    emit({"temporaries": len(program.temporaries)})
    if derivative.nonzeros <= ops_max:
        emit({"start": "count_ops (after CSE, not a pipeline stage)"})
        after = count_operations([expr for _, expr in program.temporaries] + [expr for _, _, expr in program.results])
        emit({"ops_after": after})
    source = stage("render", lambda: render(derivative, (program,), "cython"))
    emit({"pyx_bytes": len(source.text.encode())})
    module = build.load(source, build.BuildOptions())
    own, children = peak_mb()
    emit({"peak_mb": own, "peak_children_mb": children})

    jac = Jacobian(module, source, build.BuildOptions(), derivative)
    if states <= verify_max:
        J = jac(*point)
        started = time.perf_counter()
        calls = 0
        while calls < 3 or time.perf_counter() - started < 0.2:
            jac(*point)
            calls += 1
        emit({"call_us": (time.perf_counter() - started) / calls * 1e6})
        blocks = J if isinstance(J, tuple) else (J,)
        wrt_names = wrt if isinstance(wrt, tuple) else (wrt,)
        errors = []
        for block, name in zip(blocks, wrt_names):
            position = [a.name for a in traced.arguments].index(name)
            estimate = central_difference(reference, point, position)
            errors.append(np.max(np.abs(block - estimate)) / max(np.max(np.abs(estimate)), 1e-300))
        emit({"fd_relative_error": float(max(errors))})
    emit({"done": True})


def central_difference(f, point, position, h=1e-6):
    """d f / d point[position] by central differences, (out, in)."""
    import numpy as np

    args = [np.array(a, dtype=float) for a in point]
    x = args[position]
    columns = []
    for j in range(x.size):
        plus, minus = x.copy(), x.copy()
        plus[j] += h
        minus[j] -= h
        step = plus[j] - minus[j]
        fp = np.asarray(f(*args[:position], plus, *args[position + 1:]), dtype=float)
        fm = np.asarray(f(*args[:position], minus, *args[position + 1:]), dtype=float)
        columns.append((fp - fm) / step)
    return np.stack(columns, axis=-1)


# --------------------------------------------------------------------------
# the driver: one subprocess per (model, size)


def run_one(model: str, size: int, args) -> dict:
    result = {"model": model, "size": size, "stages": {}}
    with tempfile.TemporaryDirectory(prefix="symjac-scaling-") as directory:
        wrapper = Path(directory) / "cc_wrapper.py"
        wrapper.write_text(CC_WRAPPER)
        real_cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
        env = {**os.environ, "SYMJAC_CACHE_DIR": os.path.join(directory, "cache"),
               "CC": f"{shlex.quote(sys.executable)} {shlex.quote(str(wrapper))} {real_cc}",
               "SCALING_CC_RSS": os.path.join(directory, "cc_rss.txt"),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        log = Path(directory) / "worker.out"
        command = [sys.executable, __file__, "--worker", model, str(size),
                   "--ops-max", str(args.ops_max), "--verify-max", str(args.verify_max)]
        started = time.perf_counter()
        with open(log, "w") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, text=True, env=env,
                                       start_new_session=True)
            try:
                _, stderr = process.communicate(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the worker and its compiler
                _, stderr = process.communicate()
                result["timeout"] = True
        result["wall"] = time.perf_counter() - started
        current = None
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if "start" in record:
                current = record["start"]
            elif "stage" in record:
                result["stages"][record["stage"]] = record["seconds"]
                current = None
            else:
                result.update(record)
        if not result.get("done"):
            result["failed_in"] = current or "?"
            if not result.get("timeout"):
                result["error"] = (stderr or "").strip().splitlines()[-1:] or ["exit code %s" % process.returncode]
    return result


COLUMNS = [
    ("model", "{:<9}", "{:<9}"), ("size", "{:>5}", "{:>5}"), ("states", "{:>6}", "{:>6}"),
    ("nnz", "{:>6}", "{:>6}"), ("ops", "{:>7}", "{:>7}"), ("ops_cse", "{:>7}", "{:>7}"),
    ("tmps", "{:>6}", "{:>6}"),
    *[(name, "{:>8}", "{:>8.2f}") for name in STAGES],
    ("total", "{:>8}", "{:>8.2f}"), ("us/nnz", "{:>7}", "{:>7.0f}"), ("pyx_kB", "{:>7}", "{:>7.0f}"),
    ("MB", "{:>6}", "{:>6.0f}"), ("cc_MB", "{:>6}", "{:>6.0f}"), ("call_us", "{:>8}", "{:>8.1f}"),
    ("fd_err", "{:>8}", "{:>8.1e}"),
]


def row(result: dict) -> str:
    stages = result["stages"]
    total = sum(stages.get(name, 0.0) for name in PIPELINE)
    nnz = result.get("nonzeros")
    values = {
        "model": result["model"], "size": result["size"], "states": result.get("states"), "nnz": nnz,
        "ops": result.get("ops_before"), "ops_cse": result.get("ops_after"), "tmps": result.get("temporaries"),
        **{name: stages.get(name) for name in STAGES},
        "total": total if result.get("done") else None,
        "us/nnz": total / nnz * 1e6 if nnz and result.get("done") else None,
        "pyx_kB": result["pyx_bytes"] / 1024 if "pyx_bytes" in result else None,
        "MB": result.get("peak_mb"), "cc_MB": result.get("peak_children_mb"),
        "call_us": result.get("call_us"), "fd_err": result.get("fd_relative_error"),
    }
    cells = []
    for name, head, fmt in COLUMNS:
        value = values[name]
        cells.append(head.format("-") if value is None else fmt.format(value))
    line = " ".join(cells)
    if not result.get("done"):
        why = f"TIMEOUT after {result['wall']:.0f} s" if result.get("timeout") else f"FAILED ({' '.join(result.get('error', []))})"
        line += f"   <- {why} in stage {result.get('failed_in')}"
    if "derivation_seconds" in result:
        line += f"   (mechanics derivation {result['derivation_seconds']:.1f} s, in setup)"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(SIZES), default=list(SIZES))
    parser.add_argument("--sizes", nargs="+", type=int, help="sizes for every chosen model (default: per model)")
    parser.add_argument("--quick", action="store_true", help="only the smallest sizes")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per (model, size) run")
    parser.add_argument("--ops-max", type=int, default=20000, help="count operations up to this many non-zeros")
    parser.add_argument("--verify-max", type=int, default=2100, help="compare with finite differences up to this many states")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.ops_max, args.verify_max)
        return

    import platform

    import numpy
    import sympy

    print(f"symjac scaling benchmark, {time.strftime('%Y-%m-%d %H:%M')}, python {platform.python_version()}, "
          f"sympy {sympy.__version__}, numpy {numpy.__version__}, {os.cpu_count()} CPUs, timeout {args.timeout:.0f} s")
    print("seconds per stage; total = trace..cc (setup excluded); ops = sympy.count_ops before/after CSE; "
          "MB = peak RSS of the run, cc_MB of the C compiler; fd_err = max |J - central diff| / max |J|")
    print(" ".join(head.format(name) for name, head, _ in COLUMNS), flush=True)
    for model in args.models:
        sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)[model]
        for size in sizes:
            print(row(run_one(model, size, args)), flush=True)


if __name__ == "__main__":
    main()
