"""Start-up costs: the first use on a machine, and warm starts in a new process.

    python benchmarks/startup.py [--repeat 3] [--checkout DIR] [--before DIR] [--first-use PYTHON ...] [--skip-warm]

Run by hand, alone on the machine if possible: every figure is printed with
the load average at the time (``os.getloadavg``), flagged "BUSY" above 3.

first use   the README's first command, ``python -m symjac.examples.rober``,
            with an empty cache (SYMJAC_CACHE_DIR in a fresh directory), wall
            time of the whole process, for each ``--first-use PYTHON`` (the
            python of a venv with symjac installed, e.g. a fresh clone's
            ``.venv/bin/python`` after ``pip install -e .``). The kernel
            runtime was compiled in that run when the debug log says so
            ("built _symjac_runtime_..."); with the runtime built at install
            it says "using the installed kernel runtime".
warm start  ``symjac.jacobian(...)`` timed in a new process whose cache
            already holds the build (imports not timed; they are printed
            apart), for the 2-layer 8/64/64 decoder closing over its weights
            (z (8,) -> W2 @ tanh(W1 @ z + b1) + b2, (64,); form="scalar", as
            form="auto" builds it in the array form, which has no trace to skip) and the 1-D
            Brusselator with 1,000 states (symjac.examples.brusselator,
            500 grid points; form="scalar" too), against the trace alone (symjac.trace in the
            same kind of process). Targets: decoder <= 0.3 s; Brusselator
            <= trace + 0.2 s. ``--before CHECKOUT`` repeats the warm starts
            with another checkout on PYTHONPATH (e.g. a worktree of the
            commit before warm starts) and prints the ratios.

The cold builds that fill each cache are timed and printed too, but they
are not what this benchmark is about.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MODELS = '''
import numpy as np

def make_decoder(k=8, hidden=64, out=64, seed=0):
    rng = np.random.default_rng(seed)
    W1, b1 = rng.normal(size=(hidden, k)) / np.sqrt(k), rng.normal(size=hidden) * 0.1
    W2, b2 = rng.normal(size=(out, hidden)) / np.sqrt(hidden), rng.normal(size=out) * 0.1

    def decoder(z):
        return W2 @ np.tanh(W1 @ z + b1) + b2
    # form="scalar": the traced, compiled form whose warm start re-traced (form="auto"
    # takes the array form for this model: no trace to skip, nothing compiled)
    return decoder, {"z": k}, {"form": "scalar"}

def make_bruss(states=1000):
    from symjac.examples.brusselator import make_brusselator
    return make_brusselator(states // 2), {"u": states, "p": 3}, {"wrt": "u", "form": "scalar"}

MODELS = {"decoder 8/64/64, closure weights": make_decoder, "Brusselator 1,000 states": make_bruss}
'''

RUN = MODELS + '''
import json, sys, time
started = time.perf_counter()
import symjac
imported = time.perf_counter() - started
function, shapes, keywords = MODELS[sys.argv[2]]()
started = time.perf_counter()
if sys.argv[1] == "trace":
    symjac.trace(function, **shapes)
else:
    jac = symjac.jacobian(function, **keywords, **shapes)
    assert jac.form == "scalar", jac.form
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "import": imported, "symjac": symjac.__file__}))
'''


def load() -> str:
    one = os.getloadavg()[0]
    return f"load {one:.2f}" + (" BUSY" if one > 3 else "")


def run_python(python: str, args: list[str], env: dict) -> tuple[dict, str]:
    # cwd: a directory without a symjac/ (``python -c`` puts the cwd first on sys.path)
    done = subprocess.run([python, *args], env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        raise SystemExit(f"{python} {' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")
    return done, load()


def first_use(python: str) -> float:
    with tempfile.TemporaryDirectory(prefix="symjac-first-use-") as cache:
        env = {**os.environ, "SYMJAC_CACHE_DIR": cache, "SYMJAC_DEBUG": "1"}
        env.pop("PYTHONPATH", None)
        before = load()
        started = time.perf_counter()
        done, after = run_python(python, ["-m", "symjac.examples.rober"], env)
        seconds = time.perf_counter() - started
    log = done.stderr
    runtime = ("installed runtime" if "using the installed kernel runtime" in log else
               "runtime compiled" if re.search(r"built _symjac_runtime_", log) else "runtime from ?")
    print(f"  {python}\n    README first command, cold cache: {seconds:6.2f} s   ({runtime}; {before} -> {after})")
    return seconds


def warm_starts(checkout: Path, repeat: int, label: str) -> dict:
    results = {}
    with tempfile.TemporaryDirectory(prefix="symjac-warm-") as cache:
        env = {**os.environ, "SYMJAC_CACHE_DIR": cache, "PYTHONPATH": str(checkout)}
        env.pop("SYMJAC_DEBUG", None)
        print(f"\n{label}: PYTHONPATH={checkout}")
        for name in ("decoder 8/64/64, closure weights", "Brusselator 1,000 states"):
            done, state = run_python(sys.executable, ["-c", RUN, "build", name], env)
            cold = json.loads(done.stdout)
            if not Path(cold["symjac"]).resolve().is_relative_to(checkout.resolve()):
                raise SystemExit(f"symjac was imported from {cold['symjac']}, not from {checkout}")
            print(f"  {name}\n    cold build (fills the cache)   {cold['seconds']:8.3f} s   ({state})")
            traces, warms, imports, loads = [], [], [], []
            for _ in range(repeat):
                done, state = run_python(sys.executable, ["-c", RUN, "trace", name], env)
                traces.append(json.loads(done.stdout)["seconds"])
                loads.append(state)
                done, state = run_python(sys.executable, ["-c", RUN, "build", name], env)
                warm = json.loads(done.stdout)
                warms.append(warm["seconds"])
                imports.append(warm["import"])
                loads.append(state)
            trace, warm = statistics.median(traces), statistics.median(warms)
            print(f"    trace alone, new process       {trace:8.3f} s   (median of {repeat})")
            print(f"    warm start, new process        {warm:8.3f} s   (median of {repeat}: "
                  f"{', '.join(f'{w:.3f}' for w in warms)}); warm - trace = {warm - trace:+.3f} s")
            print(f"    import symjac                  {statistics.median(imports):8.3f} s   (not in the above)")
            print(f"    loads: {'; '.join(loads)}")
            results[name] = {"trace": trace, "warm": warm}
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    parser.add_argument("--before", type=Path, help="another checkout to compare warm starts with")
    parser.add_argument("--first-use", action="append", default=[], metavar="PYTHON",
                        help="a venv's python with symjac installed (repeatable)")
    parser.add_argument("--skip-warm", action="store_true")
    args = parser.parse_args(argv)
    print(f"startup benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, {load()}")
    if args.first_use:
        print("\nfirst use on a machine")
        seconds = [first_use(python) for python in args.first_use]
        if len(seconds) > 1:
            print(f"  ratio first / last: {seconds[0] / seconds[-1]:.1f}x")
    if args.skip_warm:
        return
    after = warm_starts(args.checkout.resolve(), args.repeat, "warm starts, this checkout")
    if args.before:
        before = warm_starts(args.before.resolve(), args.repeat, "warm starts, before")
        print("\nratios (before / this checkout, warm start in a new process)")
        for name, figures in after.items():
            print(f"  {name:36s} {before[name]['warm']:8.3f} s -> {figures['warm']:8.3f} s   "
                  f"{before[name]['warm'] / figures['warm']:6.1f}x faster")
    print("\ntargets")
    decoder = after["decoder 8/64/64, closure weights"]["warm"]
    bruss = after["Brusselator 1,000 states"]
    print(f"  decoder warm start {decoder:.3f} s (target <= 0.3 s: {'met' if decoder <= 0.3 else 'missed'})")
    print(f"  Brusselator warm start {bruss['warm']:.3f} s = trace {bruss['trace']:.3f} s "
          f"{bruss['warm'] - bruss['trace']:+.3f} s (target <= trace + 0.2 s: "
          f"{'met' if bruss['warm'] <= bruss['trace'] + 0.2 else 'missed'})")


if __name__ == "__main__":
    main()
