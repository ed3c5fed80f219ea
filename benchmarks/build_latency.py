"""Build latency: cold builds, warm starts and peers, measured in one run.

    python benchmarks/build_latency.py [--repeat 3] [--skip-large] [--casadi-python PATH]

Every measurement runs in a new process (imports are not timed; the timed
call is the whole setup: trace ... compile ... load). Printed, with ratios:

    kernel runtime  the first model on a machine: an empty cache, so the
                    one-time entries too (the kernel runtime, unless it was
                    built at install; the compiled Jinja templates)
    cold small      symjac.jacobian() of Robertson and Lorenz with an empty
                    cache except those one-time entries (a new model on a
                    machine that has built one before), against "sympy + gcc -O3 on
                    one plain C file" (symjac.trace, sympy's jacobian, cse and
                    ccode, gcc -O3 -shared, ctypes) in the same run
    warm start      the same call in a new process with the cache warm,
                    against the trace alone: target trace + 0.2 s
    cold large      1-D Brusselator with 1,000 states and Broyden banded with
                    1,000 unknowns (both written with Python-level indexing),
                    against CasADi's generate-C-and-compile path (SX jacobian,
                    CodeGenerator, gcc -O3 -shared; run with --casadi-python,
                    default: this Python; benchmarks/requirements.txt installs
                    casadi), and the evaluation
                    time of jac.values over a batch against the hand-written
                    C loop (symjac's CSE'd program in one plain C function,
                    gcc -O3), one thread each.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASADI_PYTHON = sys.executable

# The large models, in plain Python indexing; `np` is numpy for symjac and a
# CasADi shim for CasADi (np.array -> vertcat).
MODELS = '''
def bruss(y, p):
    N = y.shape[0] // 2
    A, B, alpha = p[0], p[1], p[2]
    du, dv = [], []
    for i in range(N):
        ul = y[i - 1] if i > 0 else 1.0
        ur = y[i + 1] if i < N - 1 else 1.0
        vl = y[N + i - 1] if i > 0 else 3.0
        vr = y[N + i + 1] if i < N - 1 else 3.0
        u, v = y[i], y[N + i]
        du.append(A + u * u * v - (B + 1) * u + alpha * (ul - 2 * u + ur))
        dv.append(B * u - u * u * v + alpha * (vl - 2 * v + vr))
    return np.array(du + dv)


def broyden(x, p):
    n = x.shape[0]
    out = []
    for i in range(n):
        s = 0
        for j in range(max(0, i - 5), min(n, i + 2)):
            if j != i:
                s = s + x[j] * (1 + x[j])
        out.append(x[i] * (p[0] + p[1] * x[i] ** 2) + 1 - s)
    return np.array(out)
'''
LARGE = {"bruss": (1000, [1.0, 3.0, 0.02]), "broyden": (1000, [2.0, 5.0])}

SYMJAC_COLD = """
import json, sys, time
import numpy as np, symjac
from symjac.examples.rober import rober
from symjac.examples.lorenz import lorenz
exec(MODELS)
name = sys.argv[1]
functions = {"rober": (rober, {"y": 3, "k": 3}), "lorenz": (lorenz, {"u": 3, "p": 3})}
for model, (n, p) in LARGE.items():
    functions[model] = (globals()[model], {"x" if model == "broyden" else "y": n, "p": len(p)})
function, shapes = functions[name]
if len(sys.argv) > 2 and sys.argv[2] == "trace-only":  # the trace alone, in a new process
    t = time.perf_counter()
    symjac.trace(function, **shapes)
    print(json.dumps({"trace": time.perf_counter() - t}))
    sys.exit(0)
t = time.perf_counter()
jac = symjac.jacobian(function, **shapes)
total = time.perf_counter() - t
result = {"jacobian": total}
if name in LARGE and len(sys.argv) > 2:  # evaluate, save the values for comparison
    n, p = LARGE[name]
    rng = np.random.default_rng(0)
    Y = 1.0 + 0.1 * rng.normal(size=(200, n))
    p = np.array(p)
    out = np.empty((200, jac.nonzeros))
    times = []
    for _ in range(15):
        t = time.perf_counter(); jac.values(Y, p, out=out, num_threads=1); times.append(time.perf_counter() - t)
    result["eval"] = min(times)
    np.save(sys.argv[2], out)
print(json.dumps(result))
"""

SYMPY_C = """
import ctypes, json, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np, sympy, symjac
from symjac.examples.rober import rober
from symjac.examples.lorenz import lorenz
function, shapes = {"rober": (rober, {"y": 3, "k": 3}), "lorenz": (lorenz, {"u": 3, "p": 3})}[sys.argv[1]]
t = time.perf_counter()
traced = symjac.trace(function, **shapes)
outputs = list(traced.outputs[0].flat)
wrt = list(traced.arguments[0].symbols.flat)
names = {s: f"a{j}[{i}]" for j, a in enumerate(traced.arguments) for i, s in enumerate(a.symbols.flat)}
J = sympy.Matrix(outputs).jacobian(wrt)
temps, (reduced,) = sympy.cse([J])
subs = {s: sympy.Symbol(v) for s, v in names.items()}
lines = ["#include <math.h>", "void jac(" + ", ".join(f"const double *a{j}" for j in range(len(traced.arguments)))
         + ", double *out) {"]
lines += [f"    const double {sympy.ccode(s)} = {sympy.ccode(e.xreplace(subs))};" for s, e in temps]
lines += [f"    out[{k}] = {sympy.ccode(e.xreplace(subs))};" for k, e in enumerate(reduced) if e != 0]
lines.append("}")
work = Path(tempfile.mkdtemp())
(work / "jac.c").write_text("\\n".join(lines) + "\\n")
subprocess.run(["gcc", "-O3", "-shared", "-fPIC", str(work / "jac.c"), "-o", str(work / "jac.so"), "-lm"], check=True)
ctypes.CDLL(str(work / "jac.so")).jac
print(json.dumps({"total": time.perf_counter() - t}))
"""

HAND_C = """
import ctypes, json, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
from symjac.api import build_derivative
from symjac.emit.backends import _c_element
from symjac.emit.printing import CPrinter, symbol_names
from symjac.emit.simplify import simplify
exec(MODELS)
name = sys.argv[1]
n, p = LARGE[name]
shapes = {"x" if name == "broyden" else "y": n, "p": len(p)}
derivative, _ = build_derivative(globals()[name], (), shapes, None)
program = simplify(derivative, "jacobian")
arguments = derivative.traced.arguments
printer = CPrinter(symbol_names(arguments, _c_element))
buffer = program.buffers[0]
slot = {flat: k for k, flat in enumerate(buffer.positions)}
lines = ["#include <math.h>", "void values(long _n, const double *restrict Y, const double *restrict p, double *restrict _out)",
         "{", "    for (long _i = 0; _i < _n; ++_i) {",
         f"        const double *{arguments[0].name} = Y + _i * {n}L;",
         f"        double *o = _out + _i * {len(buffer.positions)}L;"]
lines += [f"        const double {printer.doprint(s)} = {printer.doprint(e)};" for s, e in program.temporaries]
lines += [f"        o[{slot[index]}] = {printer.doprint(e)};" for _, index, e in program.results]
lines += ["    }", "}", ""]
work = Path(tempfile.mkdtemp())
(work / "hand.c").write_text("\\n".join(lines))
subprocess.run(["gcc", "-O3", "-shared", "-fPIC", str(work / "hand.c"), "-o", str(work / "hand.so"), "-lm"], check=True)
fn = ctypes.CDLL(str(work / "hand.so")).values
rng = np.random.default_rng(0)
Y = np.ascontiguousarray(1.0 + 0.1 * rng.normal(size=(200, n)))
p = np.array(p)
out = np.empty((200, len(buffer.positions)))
times = []
for _ in range(15):
    t = time.perf_counter()
    fn(ctypes.c_long(200), ctypes.c_void_p(Y.ctypes.data), ctypes.c_void_p(p.ctypes.data), ctypes.c_void_p(out.ctypes.data))
    times.append(time.perf_counter() - t)
np.save(sys.argv[2], out)
print(json.dumps({"eval": min(times)}))
"""

CASADI_C = """
import json, os, subprocess, sys, tempfile, time, ctypes
from pathlib import Path
import casadi as ca
class _Shim:
    @staticmethod
    def array(items):
        return ca.vertcat(*items)
np = _Shim()
exec(MODELS)
name = sys.argv[1]
n, p = LARGE[name]
t = time.perf_counter()
x, q = ca.SX.sym("x", n), ca.SX.sym("p", len(p))
J = ca.jacobian(globals()[name](x, q), x)
F = ca.Function("J", [x, q], [J])
work = Path(tempfile.mkdtemp())
generator = ca.CodeGenerator("jac_cas.c", {"with_header": False})
generator.add(F)
generator.generate(str(work) + os.sep)
subprocess.run(["gcc", "-O3", "-shared", "-fPIC", str(work / "jac_cas.c"), "-o", str(work / "jac_cas.so"), "-lm"], check=True)
ctypes.CDLL(str(work / "jac_cas.so")).J
print(json.dumps({"total": time.perf_counter() - t, "nnz": F.sparsity_out(0).nnz()}))
"""


def run(script, *args, python=sys.executable, cache=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SYMJAC_DEBUG", None)
    if cache is not None:
        env["SYMJAC_CACHE_DIR"] = str(cache)
    prelude = f"MODELS = {MODELS!r}\nLARGE = {LARGE!r}\n"
    done = subprocess.run([python, "-c", prelude + script, *map(str, args)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


MACHINE_KINDS = ("runtime", "templates")  # cache entries built once per machine and symjac version, not per model


def cache_with_machine_entries(template: Path, directory: Path) -> Path:
    from symjac.build.cache import entry_kind

    cache = directory / "cache"
    cache.mkdir(mode=0o700)
    for entry in template.iterdir():
        if entry_kind(entry) in MACHINE_KINDS:
            shutil.copytree(entry, cache / entry.name)
    return cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--casadi-python", default=CASADI_PYTHON)
    opts = parser.parse_args()
    median = statistics.median
    with tempfile.TemporaryDirectory() as top:
        top = Path(top)
        first = top / "first"
        first.mkdir(mode=0o700)
        runtime = run(SYMJAC_COLD, "lorenz", cache=first / "cache")["jacobian"]
        print(f"first model on the machine, empty cache (runtime if not installed, templates): {runtime:.2f} s\n")

        print(f"{'cold small (median of ' + str(opts.repeat) + ')':34s}{'symjac s':>10s}{'sympy+gcc s':>13s}{'ratio':>8s}"
              f"{'  target <= 3'}")
        for name in () if opts.skip_small else ("rober", "lorenz"):
            ours, peer = [], []
            for number in range(opts.repeat):
                work = top / f"{name}{number}"
                work.mkdir()
                cache = cache_with_machine_entries(first / "cache", work)
                ours.append(run(SYMJAC_COLD, name, cache=cache))
                peer.append(run(SYMPY_C, name)["total"])
            cold = median(r["jacobian"] for r in ours)
            print(f"{name:34s}{cold:10.3f}{median(peer):13.3f}{cold / median(peer):8.2f}")
            warm = [run(SYMJAC_COLD, name, cache=cache) for _ in range(opts.repeat)]
            traces = [run(SYMJAC_COLD, name, "trace-only") for _ in range(opts.repeat)]
            w, t = median(r["jacobian"] for r in warm), median(r["trace"] for r in traces)
            print(f"{'  warm start, new process':34s}{w:10.3f}   trace {t:.3f}, "
                  f"warm - trace = {w - t:.3f} s (target <= 0.2)")

        if opts.skip_large:
            return
        print(f"\n{'cold large':34s}{'symjac s':>10s}{'CasADi-C s':>13s}{'ratio':>8s}{'  target < 1'}")
        for name in LARGE:
            work = top / f"large-{name}"
            work.mkdir()
            cache = cache_with_machine_entries(first / "cache", work)
            ours = run(SYMJAC_COLD, name, work / "ours.npy", cache=cache)
            try:
                casadi = run(CASADI_C, name, python=opts.casadi_python)["total"]
            except (SystemExit, FileNotFoundError) as error:
                print(f"  CasADi failed: {error}")
                casadi = float("nan")
            hand = run(HAND_C, name, work / "hand.npy")
            import numpy as np  # only the parent compares the two results

            same = np.allclose(np.load(work / "ours.npy"), np.load(work / "hand.npy"), rtol=1e-12, atol=1e-12)
            print(f"{name + ' (1,000)':34s}{ours['jacobian']:10.3f}{casadi:13.3f}{ours['jacobian'] / casadi:8.2f}")
            warm = run(SYMJAC_COLD, name, cache=cache)
            trace = run(SYMJAC_COLD, name, "trace-only")["trace"]
            print(f"{'  warm start, new process':34s}{warm['jacobian']:10.3f}   trace {trace:.3f}, "
                  f"warm - trace = {warm['jacobian'] - trace:.3f} s (target <= 0.2)")
            print(f"{'  eval 200 points, values, 1 thread':34s}{ours['eval'] * 1e3:9.2f}ms  hand-C "
                  f"{hand['eval'] * 1e3:.2f} ms, ratio {ours['eval'] / hand['eval']:.2f} (target <= 1.10), "
                  f"same numbers: {same}")


if __name__ == "__main__":
    main()
