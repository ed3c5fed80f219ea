"""symjac against its peers: the same Jacobians, the same points, one table per problem.

    python benchmarks/peers.py [--quick] [--problems lorenz,rober,...|all] [--sizes 1,100,...,1e6]
                               [--peers symjac-cython,jax-jacfwd,...] [--threads K] [--mem-gb 0.6]

Run by hand, never by the test suite. Optional peers: benchmarks/requirements.txt;
a peer that is not installed is reported as "skipped: not installed".

Problems (symjac/examples): lorenz (3x3), rober (3x3), hires (8x8, HIRES),
pollu (20x20, POLLU air pollution, 25 reactions: 82 non-zeros), bruss40 and
bruss100 (1-D Brusselator, 40 / 100 grid points: 80x80 / 200x200, sparse),
bruss2000 (4000x4000, opt-in: gcc -O3 takes minutes on its 16k-statement
kernel; N=1 only, the dense result is 128 MB per point), mlp (tanh MLP 8 -> 16
-> 8, weights as runtime parameters: 8x8), pendulum10 (10-link pendulum
residual M(q) ud - F(q, u) from sympy.physics.mechanics, d/dq only: 10x10 dense;
u, ud and p are fixed parameter arguments shared by every point). pendulumK
and bruss<K> work for any K. The pendulum model is written in sympy, not numpy,
so the peers that re-run numpy source (JAX, torch, CasADi) skip it, and its
reference is complex step of the same residual lambdified for numpy (there is
no hand Jacobian); the mechanics derivation (~4 s) is part of building the
problem, not of any peer's setup.

Floors, measured in the same run, one process each, beside the peers (they
compute no Jacobian: max|err| is "-"):
- memset       out.fill(0.0) on a preallocated, already touched (N, m, n)
               float64 array: writing the result once, at memory bandwidth.
- copy         np.copyto(out, other), both preallocated: read + write once.
- alloc+fill   np.empty((N, m, n)).fill(0.0): a fresh result as every peer
               returns one, page faults included.
numpy runs these on one thread whatever --threads says.

What is measured, for every peer the same way
---------------------------------------------
Each peer runs in its own fresh Python process (one process per peer, all
problems in turn), one peer after another, so that setup times are cold, peak
memory is the peer's own, and a crash stays contained. Every process gets
--threads K threads (default 1): OMP/MKL/OpenBLAS_NUM_THREADS=K,
SYMJAC_NUM_THREADS=K for symjac's OpenMP batch loop, torch.set_num_threads(K),
XLA_FLAGS with multi-threaded Eigen only when K > 1, CasADi Function.map
"thread" with K threads (K > 1), and for K > 1 the C loops of hand-c, c-api and
casadi-c compiled with -fopenmp and an "omp parallel for" over the points that
starts at symjac's own threshold (50,000 operations per call). SymPy,
SymEngine, scipy-fd and the numpy floors stay single-threaded.

- import s     importing the peer's packages in the fresh process (not in setup).
- setup s      everything before the first result: building the symbolic or
               traced form, differentiating, generating and compiling code,
               plus the first call on one point (for JAX this includes jit
               compilation at N=1; a new N compiles again in its warm-up call,
               which is not timed). symjac rows: jacobian() with an empty
               SYMJAC_CACHE_DIR. SymPy/SymEngine rows include tracing the
               numpy function into sympy with symjac.trace (they have no tracer).
- cached s     symjac only: jacobian() in a *new* process with the disk cache
               already warm (symbolic stages + hash check + load, no compiler);
               not measured with --quick.
- 1-pt us      single-point latency: one call on one point through the peer's
               natural single-point API (unbatched), median of many repeats
               (timeit; the loop count is calibrated to >= 5 ms per repeat).
- us/pt N=...  throughput: one call on a batch of N points, divided by N. The
               batch is already in memory in the peer's preferred format
               (conversion not timed: DM for CasADi, jax/torch arrays, a
               (N, n+params) array for SymEngine, columns for SymPy). One warm-up
               call, then the median of 5 repeats (3 when a call takes > 0.5 s),
               each repeat calibrated to >= 50 ms (20 ms with --quick).
               Every peer returns a fresh dense (N, m, n) result except CasADi's
               Function/map, which returns its sparse DM (densifying it is not
               timed) and torch.autograd, which returns a permuted view.
- call MB      peak resident-set growth during one warm call at the largest N
               run: VmHWM after resetting it via /proc/self/clear_refs, minus
               VmRSS before the call, after gc and glibc malloc_trim(0) (so it
               counts the returned result; memory that JAX/torch allocators keep
               cached between calls is not counted again). Not tracemalloc: that
               misses jax/torch/casadi. "setup MB": the same over the setup.
- max|err|     max abs difference from the reference on the N=100 batch (or the
               largest N <= 100 that ran), rel = max|err| / max|J_ref|.
               Reference: the hand-derived Jacobian in symjac/examples
               (jacobian_<model>), evaluated point by point in numpy; it is
               independent of symjac. pendulumK: complex step (h = 1e-20) of
               the residual lambdified for numpy (sympy.lambdify, no symjac).
- ratio        symjac_cython_time / peer_time per column: below 1 means symjac
               (cython backend) is faster than that peer; against a floor, how
               many times the bare write of the result symjac takes.
- GFlop/s      for the peers that run symjac's CSE'd program (symjac-cython,
               symjac-portable, hand-c, c-api) at the largest N each ran:
               flops per point x N / time. Flops are counted on the CSE'd
               program as printed to C: each + - * / is 1 flop (an n-ary sum or
               product n - 1; a factor -1 is free inside a sum, where it makes a
               subtraction, else 1 flop, a negation, and a sum of negated terms
               only costs one more; x**k as the multiplications the printer
               writes, 1/x one division), each call of a transcendental function (sqrt, exp,
               tanh, sin, pow, ...) also 1 flop. So an FMA counts 2, like the
               peak printed in the header: 16 flop/cycle per core (AVX2: 4
               doubles x 2 flops per FMA x 2 FMA units, as on this AMD Zen 3
               core) x the clock /proc/cpuinfo reports as "cpu MHz" (a VM's
               nominal clock: boost is not seen).

Points: numpy.random.default_rng([seed, N]) for each problem and N, so every
peer sees exactly the same points. Sizes whose dense result (N x m x n
doubles) exceeds --mem-gb are not run for any peer (the cell says why); a size
whose estimated call time exceeds --max-call seconds (from the previous size's
per-point time) is skipped for that peer.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SEED = 20240607
DEFAULT_SIZES = (1, 100, 10**4, 10**6)  # --sizes 1,100,1e4,1e6 with --quick too
QUICK_SIZES = (1, 100, 10**4)
ERR_N = 100

PEERS = {
    # key: (label, short description)
    "symjac-cython": "symjac, cython backend (symjac.jacobian(..., backend='cython')), symjac's default build options",
    "symjac-portable": "symjac, cython backend, native=False (portable code: no -march=native)",
    "symjac-numpy": "symjac, numpy backend (every temporary one array over the batch)",
    "hand-c": "hand-written C limit: symjac's CSE'd program in a plain scalar C loop, gcc -O3 -march=native, ctypes",
    "c-api": "the same C loop as hand-c behind a minimal numpy C-API extension (gcc -O3 -march=native): "
             "the per-call overhead floor",
    "sympy": "SymPy Matrix.jacobian + lambdify(cse=True, numpy), columns broadcast over the batch",
    "symengine": "SymEngine DenseMatrix.jacobian + Lambdify(cse=True), LLVM backend if available",
    "casadi": "CasADi SX jacobian, Function.map(N) evaluated from Python (returns sparse DM)",
    "casadi-c": "CasADi generated C (CodeGenerator) + C batch loop, gcc -O3, ctypes",
    "jax-jacfwd": "JAX jit(vmap(jacfwd(f))), float64",
    "jax-jacrev": "JAX jit(vmap(jacrev(f))), float64",
    "torch-func": "torch.func.vmap(torch.func.jacrev(f)), CPU float64",
    "torch-autograd": "torch.autograd.functional.jacobian(vmap(f) summed over the batch, vectorize=True)",
    "scipy-fd": "scipy.optimize.approx_fprime (forward differences), Python loop over points",
}
FLOORS = {
    "memset": "floor: out.fill(0.0) on a preallocated (N, m, n) result (numpy, one thread)",
    "copy": "floor: np.copyto(out, other), both preallocated (N, m, n) (numpy, one thread)",
    "alloc+fill": "floor: np.empty((N, m, n)).fill(0.0), a fresh result (numpy, one thread)",
}
# Peers that run the model's numpy source on another array library: they
# cannot run a model written in sympy (the pendulum).
NUMPY_SOURCE_PEERS = ("casadi", "casadi-c", "jax-jacfwd", "jax-jacrev", "torch-func", "torch-autograd")
# Peers that run symjac's CSE'd program, so its flop count applies (GFlop/s column).
PROGRAM_PEERS = ("symjac-cython", "symjac-portable", "hand-c", "c-api")
C_FLAGS = ("-O3", "-march=native")  # hand-c and c-api: the "scalar C loop (gcc -O3 -march=native)"
BASELINE = "symjac-cython"


# --------------------------------------------------------------------------- problems


@dataclass
class Problem:
    name: str
    title: str
    function: object
    shapes: dict  # argument name -> shape tuple, in argument order; the first is differentiated
    params: tuple  # numpy values of the other arguments
    sample: object  # (rng, N) -> (N, n)
    hand: object  # single-point hand Jacobian (y, *params) -> (m, n)
    reference: str
    n: int = 0
    m: int = 0
    notes: list = field(default_factory=list)
    numeric: object = None  # the model as a plain numpy function (default: ``function``)
    numpy_source: bool = True  # False: ``function`` is not numpy code (JAX/torch/CasADi cannot re-run it)

    @property
    def evaluate(self):
        return self.numeric or self.function

    @property
    def wrt(self):
        return next(iter(self.shapes))

    def points(self, N):
        return np.ascontiguousarray(self.sample(np.random.default_rng([SEED, N]), N), dtype=np.float64)

    def point(self):
        return self.sample(np.random.default_rng([SEED, 0]), 1)[0].copy()


def make_problem(name: str) -> Problem:
    if name == "lorenz":
        from symjac.examples import lorenz as mod
        p = Problem(name, "Lorenz-63, u (3,) -> (3,)", mod.lorenz, {"u": (3,), "p": (3,)}, (mod.P_DEFAULT,),
                    lambda rng, N: rng.normal(0.0, 10.0, size=(N, 3)), mod.jacobian_lorenz,
                    "symjac.examples.lorenz.jacobian_lorenz")
    elif name == "rober":
        from symjac.examples import rober as mod
        y0 = np.array([0.9, 2e-5, 0.1])
        p = Problem(name, "Robertson stiff kinetics, y (3,) -> (3,)", mod.rober, {"y": (3,), "k": (3,)},
                    (mod.K_DEFAULT,), lambda rng, N: y0 * rng.uniform(0.5, 1.5, size=(N, 3)),
                    mod.jacobian_rober, "symjac.examples.rober.jacobian_rober")
    elif name == "hires":
        from symjac.examples import hires as mod
        y0 = np.array([0.7, 0.15, 0.05, 0.1, 0.02, 0.3, 0.01, 0.005])
        p = Problem(name, "HIRES stiff photochemistry, y (8,), k (12,) -> (8,)", mod.hires,
                    {"y": (8,), "k": (12,)}, (mod.K_DEFAULT,),
                    lambda rng, N: y0 * rng.uniform(0.5, 1.5, size=(N, 8)), mod.jacobian_hires,
                    "symjac.examples.hires.jacobian_hires")
    elif name == "pollu":
        from symjac.examples import pollu as mod
        p = Problem(name, "POLLU air pollution, 20 species, 25 reactions, y (20,), k (25,) -> (20,)", mod.pollu,
                    {"y": (20,), "k": (25,)}, (mod.K_DEFAULT,), mod.sample_states, mod.jacobian_pollu,
                    "symjac.examples.pollu.jacobian_pollu")
    elif name.startswith("pendulum"):
        links = int(name[len("pendulum"):])
        p = _pendulum_problem(name, links)
    elif name.startswith("bruss"):
        from symjac.examples import brusselator as mod
        grid = int(name[len("bruss"):])
        u0 = mod.initial_value(grid)
        p = Problem(name, f"1-D Brusselator, {grid} grid points, u ({2 * grid},) -> ({2 * grid},)",
                    mod.make_brusselator(grid), {"u": (2 * grid,), "p": (3,)}, (mod.P_DEFAULT,),
                    lambda rng, N: u0 + rng.normal(0.0, 0.1, size=(N, 2 * grid)),
                    mod.jacobian_brusselator, "symjac.examples.brusselator.jacobian_brusselator")
    elif name == "mlp":
        from symjac.examples import mlp as mod
        weights = mod.random_weights(8, 16, 8, seed=0)
        p = Problem(name, "tanh MLP 8 -> 16 -> 8, x (8,), weights as parameters", mod.mlp,
                    {"x": (8,), "W1": (16, 8), "b1": (16,), "W2": (8, 16), "b2": (8,)}, weights,
                    lambda rng, N: rng.normal(size=(N, 8)), mod.jacobian_mlp,
                    "symjac.examples.mlp.jacobian_mlp")
    else:
        raise SystemExit(f"unknown problem {name!r}")
    p.n = int(np.prod(p.shapes[p.wrt]))
    p.m = int(np.asarray(p.evaluate(p.point(), *p.params)).size)
    return p


def numpy_source(name):
    """Whether problem ``name`` is numpy code (known without building it)."""
    return not name.startswith("pendulum")


def _pendulum_problem(name, links):
    """The n-link pendulum residual, d/dq; u, ud, p fixed (shared by all points)."""
    import sympy

    from symjac.examples import pendulum as mod

    n = links
    rng = np.random.default_rng([SEED, n, 1])
    u, ud = rng.normal(0.0, 1.0, n), rng.normal(0.0, 1.0, n)
    params = (u, ud, mod.default_parameters(n))
    q_sym, u_sym, ud_sym, p_sym, R = mod.residual_expression(n)
    lambdified = sympy.lambdify((q_sym, u_sym, ud_sym, p_sym), list(R), modules="numpy")

    def reference(q, u, ud, p, h=1e-20):
        """Complex step of the lambdified residual: (n, n), exact to rounding."""
        J = np.empty((n, n))
        for j in range(n):
            qc = q.astype(np.complex128)
            qc[j] += 1j * h
            J[:, j] = np.imag(np.array(lambdified(qc, u, ud, p), dtype=np.complex128)) / h
        return J

    p = Problem(name, f"{n}-link pendulum residual M(q) ud - F(q, u), d/dq; q, u, ud ({n},), p ({2 * n + 1},) "
                      f"-> ({n},)", mod.make_pendulum_residual(n),
                {"q": (n,), "u": (n,), "ud": (n,), "p": (2 * n + 1,)}, params,
                lambda rng, N: rng.normal(0.0, 1.0, size=(N, n)), reference,
                "complex step (h = 1e-20) of the residual lambdified for numpy (no hand Jacobian)",
                numeric=mod.numeric_residual(n), numpy_source=False)
    p.notes.append(f"model built with sympy.physics.mechanics in {mod.derivation_seconds(n):.1f} s "
                   "(not in any setup); u, ud, p fixed parameter arguments")
    return p


ALL_PROBLEMS = ("lorenz", "rober", "hires", "pollu", "bruss40", "bruss100", "bruss2000", "mlp", "pendulum10")
# bruss2000 is opt-in (--problems ...,bruss2000 or --problems all): its Jacobian
# program has ~16,000 statements and gcc -O3 needs minutes for it, once for
# symjac-cython and once for hand-c, which alone exceeds the ~10 minute budget
# of the default run. At 4,000 states the dense result is 128 MB per point, so
# every peer runs it at N=1 only.
DEFAULT_PROBLEMS = ("lorenz", "rober", "hires", "pollu", "bruss40", "bruss100", "mlp", "pendulum10")


def hand_reference(problem, Y):
    return np.stack([problem.hand(y, *problem.params) for y in Y])


# --------------------------------------------------------------------------- helpers


class Skip(Exception):
    """This peer cannot run this problem (the message says why)."""


def rebind(function, namespace):
    """The same Python function with its module's ``np`` replaced by ``namespace``.

    Helpers defined in the same module (e.g. the Brusselator's second
    difference) are rebound too, so the unchanged model source runs on
    jax.numpy, torch or CasADi symbols.
    """
    scope = dict(function.__globals__)
    scope["np"] = namespace
    for key, value in list(scope.items()):
        if isinstance(value, types.FunctionType) and value.__module__ == function.__module__:
            scope[key] = types.FunctionType(value.__code__, scope, value.__name__, value.__defaults__, value.__closure__)
    return types.FunctionType(function.__code__, scope, function.__name__, function.__defaults__, function.__closure__)


def _status_kb(field_name):
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field_name}:\s+(\d+)\s+kB", text, re.M)
    return int(found.group(1)) if found else None


def _malloc_trim():
    """Hand memory freed by earlier calls back to the OS (glibc), so that it is counted again."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_call_mb(fn):
    """Peak RSS growth (MB) during one call of ``fn`` (VmHWM reset via clear_refs)."""
    gc.collect()
    _malloc_trim()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    before = _status_kb("VmRSS")
    result = fn()
    peak = _status_kb("VmHWM")
    del result
    if before is None or peak is None:
        return None
    return max(0.0, (peak - before) / 1024.0)


def median_time(fn, min_time, repeats=None):
    """Seconds per call: calibrated loop count, median of repeats (timeit, gc off)."""
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    number = max(1, int(min_time / max(once, 1e-7)))
    if repeats is None:
        repeats = 5 if once < 0.5 else 3
    times = timeit.Timer(fn).repeat(repeat=repeats, number=number)
    return statistics.median(times) / number


def compile_shared(c_path: Path, so_path: Path, flags=("-O3",), include=()):
    """gcc ``flags`` -shared; a failure raises CalledProcessError carrying gcc's whole output."""
    cmd = ["gcc", *flags, "-shared", "-fPIC", *(f"-I{d}" for d in include), "-o", str(so_path), str(c_path), "-lm"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return " ".join(flags)


def openmp_flags(opts):
    return ("-fopenmp",) if opts.threads > 1 else ()


def parallel_min_points(operations):
    """The batch size from which symjac runs its OpenMP loop, for a kernel of ``operations``."""
    try:  # symjac starts its loop at this many operations per call
        from symjac.emit.backend import PARALLEL_MIN_OPERATIONS as per_call
    except ImportError:
        per_call = 50_000
    return max(2, -(-per_call // max(operations, 1)))


def count_flops(exprs):
    """Flops to evaluate ``exprs`` as printed to C (see the module docstring, "GFlop/s").

    Each + - * / is 1 (an n-ary Add or Mul n - 1; a -1 factor is free inside a
    sum, where it makes a subtraction, and 1 flop, a negation, elsewhere), x**k the
    multiplications symjac's C printer writes (plus 1 division when k < 0),
    every other function or power 1 (one call). The program is already CSE'd,
    so the expression trees are walked as written, without further sharing.
    """
    import sympy

    def products(k):  # multiplications in symjac.emit.printing._power_product(x, k)
        return k - 1 if k <= 4 else products(k // 2) + 1 + k % 2

    def flops(e, in_sum=False):
        if not e.args or e.is_Atom:
            return 0
        inner = sum(flops(a, isinstance(e, sympy.Add)) for a in e.args)
        if isinstance(e, sympy.Add):  # -a - b: one negation besides the subtraction
            negative = all(a.could_extract_minus_sign() for a in e.args)
            return inner + len(e.args) - 1 + (1 if negative else 0)
        if isinstance(e, sympy.Mul):
            negated = any(a == -1 for a in e.args)
            return inner + len(e.args) - 1 - (1 if negated and in_sum else 0)
        if isinstance(e, sympy.Pow):
            exponent = e.args[1]
            if exponent.is_Integer and 2 <= abs(int(exponent)) <= 8:
                return inner + products(abs(int(exponent))) + (1 if exponent < 0 else 0)
            if exponent == -1:
                return inner + 1
            if exponent == -sympy.S.Half:
                return inner + 2  # 1.0/sqrt(x)
            return inner + 1
        return inner + 1

    return sum(flops(e) for e in exprs)


def program_flops(program):
    return count_flops([e for _, e in program.temporaries] + [e for _, _, e in program.results])


# --------------------------------------------------------------------------- peers
#
# A peer factory builds everything for one problem and returns an Impl. The
# worker times ``factory + first batch call at N=1`` as the setup.


@dataclass
class Impl:
    single: object  # y (n,) -> result at one point (native type)
    prepare: object  # Y (N, n) float64 -> batch in the peer's preferred format (not timed)
    batch: object  # prepared -> result over the batch (native type)
    to_numpy: object  # (result, N) -> (N, m, n) ndarray
    notes: list = field(default_factory=list)
    cached_s: float | None = None


def _dense(result, N, problem):
    return np.asarray(result, dtype=np.float64).reshape(N, problem.m, problem.n)


def peer_symjac(problem, backend, opts, **options):
    """symjac.jacobian with ``backend`` and the build ``options`` (none: symjac's defaults)."""
    import symjac

    jac = symjac.jacobian(problem.function, **problem.shapes, wrt=problem.wrt, backend=backend, **options)
    params = problem.params
    impl = Impl(single=lambda y: jac(y, *params), prepare=lambda Y: Y, batch=lambda Y: jac(Y, *params),
                to_numpy=lambda r, N: _dense(r, N, problem))
    impl.notes.append(f"{jac.nonzeros} structural non-zeros of {problem.m * problem.n}; "
                      f"build options {_symjac_build_options(options)}")
    impl.cached_s = None if opts.quick else _cached_probe(problem.name, backend, options)
    if backend == "cython":
        impl.flops = lambda: _symjac_program_flops(problem)
    return impl


def _symjac_build_options(options):
    """The flags and native setting symjac.jacobian uses with ``options`` (its defaults filled in)."""
    import inspect

    import symjac
    from symjac.build.builder import BuildOptions

    defaults = inspect.signature(symjac.jacobian).parameters
    flags = options.get("flags") or BuildOptions.flags
    native = options.get("native", defaults["native"].default if "native" in defaults else None)
    return f"flags={' '.join(flags)}, native={native}"


def _symjac_program_flops(problem):
    """Flops per point of symjac's CSE'd Jacobian program (rebuilt, after the timings)."""
    from symjac.api import build_derivative
    from symjac.emit.simplify import simplify

    derivative, _ = build_derivative(problem.function, (), problem.shapes, problem.wrt)
    return program_flops(simplify(derivative, "jacobian"))


def _cached_probe(problem_name, backend, options):
    """symjac.jacobian() in a new process, disk cache warm (same SYMJAC_CACHE_DIR)."""
    done = subprocess.run([sys.executable, __file__, "--cached-probe", problem_name, json.dumps([backend, options])],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=1800)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        return None
    return float(done.stdout.strip().splitlines()[-1])


def cached_probe_main(problem_name, how):
    import symjac

    problem = make_problem(problem_name)
    backend, options = json.loads(how)
    start = time.perf_counter()
    symjac.jacobian(problem.function, **problem.shapes, wrt=problem.wrt, backend=backend, **options)
    print(time.perf_counter() - start)


def _hand_c_loop(problem, opts):
    """symjac's CSE'd Jacobian program as one plain C batch loop (the hand-c kernel).

    Returns ``(c_source, program, arguments)``: ``jacobian_batch(n, arg0, stride0,
    ..., out)`` writes the non-zeros of point i into ``out + i*m*n`` (the caller
    zero-fills ``out``). Parameters are passed with stride 0. With --threads K > 1
    the loop is an OpenMP parallel for from symjac's own threshold on.
    """
    if shutil.which("gcc") is None:
        raise Skip("no gcc")
    from symjac.api import build_derivative
    from symjac.emit.printing import CPrinter, symbol_names
    from symjac.emit.simplify import simplify

    derivative, _ = build_derivative(problem.function, (), problem.shapes, problem.wrt)
    program = simplify(derivative, "jacobian")
    if len(program.buffers) != 1:
        raise Skip("more than one Jacobian block")
    arguments = derivative.traced.arguments
    shapes = {a.name: a.shape for a in arguments}  # flat pointers here: W[1, 0] prints as W[3]
    printer = CPrinter(symbol_names(arguments, lambda name, index: f"{name}[{np.ravel_multi_index(index, shapes[name]) if index else 0}]"))
    buffer = program.buffers[0]
    size = buffer.size
    signature = ", ".join(f"const double *restrict {a.name}__all, long {a.name}__stride" for a in arguments)
    lines = ["#include <math.h>", "",
             f"void jacobian_batch(long _n, {signature}, double *restrict _out)", "{"]
    if opts.threads > 1:
        lines.append(f"    #pragma omp parallel for num_threads({opts.threads}) schedule(static) "
                     f"if(_n >= {parallel_min_points(program.operations)})")
    lines.append("    for (long _i = 0; _i < _n; ++_i) {")
    lines += [f"        const double *{a.name} = {a.name}__all + _i * {a.name}__stride;" for a in arguments]
    lines.append(f"        double *{buffer.name} = _out + _i * {size}L;")
    lines += [f"        const double {printer.doprint(s)} = {printer.doprint(e)};" for s, e in program.temporaries]
    lines += [f"        {buffer.name}[{index}] = {printer.doprint(e)};" for _, index, e in program.results]
    lines += ["    }", "}", ""]
    return "\n".join(lines), program, arguments


def peer_hand_c(problem, opts):
    source, program, arguments = _hand_c_loop(problem, opts)
    workdir = Path(tempfile.mkdtemp(prefix=f"handc-{problem.name}-"))
    c_path, so_path = workdir / "jac.c", workdir / "jac.so"
    c_path.write_text(source)
    flags = compile_shared(c_path, so_path, C_FLAGS + openmp_flags(opts))
    lib = ctypes.CDLL(str(so_path))
    fn = lib.jacobian_batch
    fn.restype = None
    fn.argtypes = [ctypes.c_long] + [ctypes.c_void_p, ctypes.c_long] * len(arguments) + [ctypes.c_void_p]
    params = [np.ascontiguousarray(p, dtype=np.float64) for p in problem.params]
    param_args = [x for p in params for x in (p.ctypes.data, 0)]
    m, n = problem.m, problem.n

    def batch(prepared):
        Y, pointer = prepared
        N = Y.shape[0]
        out = np.zeros((N, m, n))
        fn(N, pointer, n, *param_args, out.ctypes.data)
        return out

    def single(y):
        out = np.zeros((m, n))
        fn(1, y.ctypes.data, n, *param_args, out.ctypes.data)
        return out

    impl = Impl(single=single, prepare=lambda Y: (Y, Y.ctypes.data), batch=batch,
                to_numpy=lambda r, N: _dense(r, N, problem))
    impl.flops = lambda: program_flops(program)
    impl.notes.append(f"{len(program.temporaries)} temporaries, {len(program.results)} results; gcc {flags}; "
                      "caller zero-fills np.zeros((N, m, n)) like symjac")
    return impl


_C_API_MODULE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

%(loop)s

#define NARGS %(nargs)d
static const npy_intp SIZES[NARGS] = {%(sizes)s};

/* jacobian(y, *params): y (n,) -> (m, n) or y (N, n) -> (N, m, n); parameters
   of exactly their size, shared by every point. Any input is converted to a
   C-contiguous float64 array (no copy when it already is one). */
static PyObject *jacobian(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyArrayObject *a[NARGS] = {NULL};
    PyObject *out = NULL;
    (void)self;
    if (nargs != NARGS) {
        PyErr_Format(PyExc_TypeError, "jacobian() takes %%d arguments (%%zd given)", NARGS, nargs);
        return NULL;
    }
    for (int k = 0; k < NARGS; ++k) {
        a[k] = (PyArrayObject *)PyArray_FROM_OTF(args[k], NPY_DOUBLE, NPY_ARRAY_IN_ARRAY);
        if (a[k] == NULL) goto done;
        if (k > 0 && PyArray_SIZE(a[k]) != SIZES[k]) {
            PyErr_Format(PyExc_ValueError, "argument %%d: expected %%zd values", k, (Py_ssize_t)SIZES[k]);
            goto done;
        }
    }
    int single = PyArray_NDIM(a[0]) == 1 && PyArray_DIM(a[0], 0) == SIZES[0];
    if (!single && !(PyArray_NDIM(a[0]) == 2 && PyArray_DIM(a[0], 1) == SIZES[0])) {
        PyErr_Format(PyExc_ValueError, "argument 0: expected shape (%%zd,) or (N, %%zd)",
                     (Py_ssize_t)SIZES[0], (Py_ssize_t)SIZES[0]);
        goto done;
    }
    npy_intp points = single ? 1 : PyArray_DIM(a[0], 0);
    npy_intp dims[3] = {points, %(m)d, %(n)d};
    out = single ? PyArray_ZEROS(2, dims + 1, NPY_DOUBLE, 0) : PyArray_ZEROS(3, dims, NPY_DOUBLE, 0);
    if (out == NULL) goto done;
    Py_BEGIN_ALLOW_THREADS
    jacobian_batch((long)points, %(call_args)s, (double *)PyArray_DATA((PyArrayObject *)out));
    Py_END_ALLOW_THREADS
done:
    for (int k = 0; k < NARGS; ++k) Py_XDECREF(a[k]);
    return out;
}

static PyMethodDef methods[] = {
    {"jacobian", (PyCFunction)(void (*)(void))jacobian, METH_FASTCALL, "jacobian(y, *params)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "%(name)s", NULL, -1, methods};

PyMODINIT_FUNC PyInit_%(name)s(void)
{
    import_array();
    return PyModule_Create(&module);
}
"""


def peer_c_api(problem, opts):
    """hand-c's loop behind a minimal numpy C-API extension, loaded by path (importlib)."""
    import importlib.machinery
    import importlib.util
    import sysconfig

    source, program, arguments = _hand_c_loop(problem, opts)
    sizes = [int(np.prod(a.shape)) if a.shape else 1 for a in arguments]
    strides = [f"{sizes[0]}"] + ["0"] * (len(arguments) - 1)
    call_args = ", ".join(f"(const double *)PyArray_DATA(a[{k}]), {stride}" for k, stride in enumerate(strides))
    name = "_capi_" + re.sub(r"\W", "_", problem.name)
    text = _C_API_MODULE % {"loop": source.replace("void jacobian_batch", "static void jacobian_batch"),
                            "nargs": len(arguments), "sizes": ", ".join(map(str, sizes)), "m": problem.m,
                            "n": problem.n, "call_args": call_args, "name": name}
    workdir = Path(tempfile.mkdtemp(prefix=f"capi-{problem.name}-"))
    c_path = workdir / f"{name}.c"
    so_path = workdir / (name + sysconfig.get_config_var("EXT_SUFFIX"))
    c_path.write_text(text)
    flags = compile_shared(c_path, so_path, C_FLAGS + openmp_flags(opts),
                           include=(sysconfig.get_paths()["include"], np.get_include()))
    spec = importlib.util.spec_from_file_location(
        name, so_path, loader=importlib.machinery.ExtensionFileLoader(name, str(so_path)))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    jac = module.jacobian
    params = [np.ascontiguousarray(p, dtype=np.float64) for p in problem.params]
    impl = Impl(single=lambda y: jac(y, *params), prepare=lambda Y: Y, batch=lambda Y: jac(Y, *params),
                to_numpy=lambda r, N: _dense(r, N, problem))
    impl.flops = lambda: program_flops(program)
    impl.notes.append(f"METH_FASTCALL, PyArray_FROM_OTF per argument, PyArray_ZEROS result, GIL released "
                      f"around the loop; gcc {flags}")
    return impl


def _trace_sympy(problem):
    import symjac

    traced = symjac.trace(problem.function, **problem.shapes)
    outputs = list(traced.outputs[0].flat)
    wrt_symbols = list(traced.arguments[0].symbols.flat)
    all_symbols = [s for a in traced.arguments for s in a.symbols.flat]
    return outputs, wrt_symbols, all_symbols


def _too_dense_for_symbolic(problem):
    if problem.m * problem.n > 10**6:
        raise Skip(f"dense symbolic {problem.m}x{problem.n} Jacobian matrix "
                   f"({problem.m * problem.n / 1e6:.0f}M entries) is impractical")


def peer_sympy(problem, opts):
    import sympy

    _too_dense_for_symbolic(problem)
    outputs, wrt_symbols, all_symbols = _trace_sympy(problem)
    matrix = sympy.Matrix(outputs).jacobian(wrt_symbols)
    nonzero = [(i, e) for i, e in enumerate(matrix) if e != 0]
    fn = sympy.lambdify(all_symbols, [e for _, e in nonzero], modules="numpy", cse=True)
    pvals = [float(v) for p in problem.params for v in np.asarray(p).flat]
    index = [i for i, _ in nonzero]
    m, n = problem.m, problem.n

    def batch(columns):
        N = columns[0].shape[0]
        out = np.zeros((N, m * n))
        for i, value in zip(index, fn(*columns, *pvals)):
            out[:, i] = value
        return out.reshape(N, m, n)

    def single(y):
        out = np.zeros(m * n)
        out[index] = fn(*y.tolist(), *pvals)
        return out.reshape(m, n)

    impl = Impl(single=single, prepare=lambda Y: [np.ascontiguousarray(Y[:, j]) for j in range(n)],
                batch=batch, to_numpy=lambda r, N: _dense(r, N, problem))
    impl.notes.append("setup includes symjac.trace (SymPy has no numpy tracer); "
                      "batch = one array per input column, constants broadcast into np.zeros")
    return impl


def peer_symengine(problem, opts):
    import symengine as se

    _too_dense_for_symbolic(problem)
    outputs, wrt_symbols, all_symbols = _trace_sympy(problem)
    f = se.DenseMatrix([se.sympify(e) for e in outputs])
    J = f.jacobian(se.DenseMatrix([se.sympify(s) for s in wrt_symbols]))
    args = [se.sympify(s) for s in all_symbols]
    try:
        fn = se.Lambdify(args, J, backend="llvm", cse=True)
        backend = "llvm"
    except Exception as error:  # noqa: BLE001 - symengine built without LLVM
        fn = se.Lambdify(args, J, backend="lambda", cse=True)
        backend = f"lambda (llvm unavailable: {type(error).__name__})"
    pflat = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in problem.params])
    n = problem.n

    def prepare(Y):
        A = np.empty((Y.shape[0], n + pflat.size))
        A[:, :n] = Y
        A[:, n:] = pflat
        return A

    impl = Impl(single=lambda y: fn(np.concatenate((y, pflat))), prepare=prepare, batch=fn,
                to_numpy=lambda r, N: _dense(r, N, problem))
    impl.notes.append(f"Lambdify backend: {backend}; setup includes symjac.trace; "
                      "batch input is one (N, n + n_params) array (building it is not timed)")
    return impl


class _CasadiNumpy:
    """The few numpy names the example models use, on CasADi SX."""

    def __init__(self, ca):
        self.ca = ca

    def array(self, items):
        return self.ca.vertcat(*items)

    def concatenate(self, items):
        return self.ca.vertcat(*items)

    def tanh(self, x):
        return self.ca.tanh(x)


def _casadi_function(problem):
    import casadi as ca

    symbols = [ca.SX.sym(name, *(shape if len(shape) == 2 else (shape[0], 1)))
               for name, shape in problem.shapes.items()]
    f = rebind(problem.function, _CasadiNumpy(ca))(*symbols)
    J = ca.jacobian(f, symbols[0])
    F = ca.Function("J", symbols, [J])
    # CasADi matrices are column-major: pass parameters flattened in Fortran order.
    params = [np.asarray(p, dtype=np.float64) for p in problem.params]
    return ca, F, params


def _casadi_to_numpy(result, N, problem):
    dense = np.asarray(result.full())  # (m, N * n): the per-point blocks side by side
    return dense.reshape(problem.m, N, problem.n).transpose(1, 0, 2)


def peer_casadi(problem, opts):
    ca, F, params = _casadi_function(problem)
    pdm = [ca.DM(p) for p in params]
    maps = {}
    parallel = ("serial",) if opts.threads == 1 else ("thread", opts.threads)

    def prepare(Y):
        N = Y.shape[0]
        if N not in maps:
            maps[N] = F.map(N, *parallel)
        return maps[N], ca.DM(Y.T)

    impl = Impl(single=lambda ydm: F(ydm, *pdm), prepare=prepare,
                batch=lambda prepared: prepared[0](prepared[1], *pdm),
                to_numpy=lambda r, N: _casadi_to_numpy(r, N, problem))
    impl.single_prepare = ca.DM
    impl.notes.append(f"{F.sparsity_out(0).nnz()} non-zeros; Function.map(N, {', '.join(map(repr, parallel))}) "
                      "built per N (not timed); "
                      "input DM(Y.T) (not timed); result is the sparse DM (densifying not timed)")
    return impl


_CASADI_DRIVER = r"""
#include <stdlib.h>
CASADI_SYMBOL_EXPORT void batch_J(long long n_points, const double *Y, long long y_stride,
                                  const double **params, long long n_params, long long nnz,
                                  const long long *index, long long out_size, double *out)
{
    %(pragma_parallel)s
    {
    const casadi_real *arg[%(sz_arg)d + 1];
    casadi_real *res[%(sz_res)d + 1];
    casadi_int *iw = (casadi_int *)malloc(sizeof(casadi_int) * (%(sz_iw)d + 1));
    casadi_real *w = (casadi_real *)malloc(sizeof(casadi_real) * (%(sz_w)d + 1));
    double *buf = (double *)malloc(sizeof(double) * (nnz + 1));
    for (long long k = 0; k < n_params; ++k) arg[1 + k] = params[k];
    res[0] = buf;
    %(pragma_for)s
    for (long long i = 0; i < n_points; ++i) {
        arg[0] = Y + i * y_stride;
        J(arg, res, iw, w, 0);
        double *o = out + i * out_size;
        for (long long k = 0; k < nnz; ++k) o[index[k]] = buf[k];
    }
    free(buf); free(w); free(iw);
    }
}
"""


def peer_casadi_c(problem, opts):
    if shutil.which("gcc") is None:
        raise Skip("no gcc")
    ca, F, params = _casadi_function(problem)
    workdir = Path(tempfile.mkdtemp(prefix=f"casadi-{problem.name}-"))
    generator = ca.CodeGenerator("jac_cas.c", {"with_header": False})
    generator.add(F)
    generator.generate(str(workdir) + os.sep)
    c_path, so_path = workdir / "jac_cas.c", workdir / "jac_cas.so"
    sizes = {"sz_arg": F.sz_arg(), "sz_res": F.sz_res(), "sz_iw": F.sz_iw(), "sz_w": F.sz_w(),
             "pragma_parallel": "", "pragma_for": ""}
    if opts.threads > 1:  # work arrays per thread; symjac's threshold, on CasADi's own operation count
        sizes["pragma_parallel"] = (f"#pragma omp parallel num_threads({opts.threads}) "
                                    f"if(n_points >= {parallel_min_points(F.n_instructions())})")
        sizes["pragma_for"] = "#pragma omp for schedule(static)"
    c_path.write_text(c_path.read_text() + _CASADI_DRIVER % sizes)
    flags = compile_shared(c_path, so_path, ("-O3",) + openmp_flags(opts))
    lib = ctypes.CDLL(str(so_path))
    fn = lib.batch_J
    fn.restype = None
    fn.argtypes = [ctypes.c_longlong, ctypes.c_void_p, ctypes.c_longlong, ctypes.c_void_p, ctypes.c_longlong,
                   ctypes.c_longlong, ctypes.c_void_p, ctypes.c_longlong, ctypes.c_void_p]
    sparsity = F.sparsity_out(0)
    rows, colind = np.array(sparsity.row()), np.array(sparsity.colind())
    cols = np.repeat(np.arange(problem.n), np.diff(colind))
    index = np.ascontiguousarray(rows * problem.n + cols, dtype=np.int64)  # CCS -> row-major dense
    fortran = [np.ascontiguousarray(p.ravel(order="F")) for p in params]
    pointers = (ctypes.c_void_p * max(1, len(fortran)))(*[p.ctypes.data for p in fortran])
    m, n, nnz = problem.m, problem.n, index.size

    def batch(prepared):
        Y, pointer = prepared
        N = Y.shape[0]
        out = np.zeros((N, m, n))
        fn(N, pointer, n, pointers, len(fortran), nnz, index.ctypes.data, m * n, out.ctypes.data)
        return out

    def single(y):
        out = np.zeros((m, n))
        fn(1, y.ctypes.data, n, pointers, len(fortran), nnz, index.ctypes.data, m * n, out.ctypes.data)
        return out

    impl = Impl(single=single, prepare=lambda Y: (Y, Y.ctypes.data), batch=batch,
                to_numpy=lambda r, N: _dense(r, N, problem))
    impl.notes.append(f"{nnz} non-zeros, CCS scattered into a zero-filled dense row-major output in C; gcc {flags}")
    return impl


def _jax_setup():
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    return jax, jnp


def peer_jax(problem, mode, opts):
    jax, jnp = _jax_setup()
    f = rebind(problem.function, jnp)
    transform = jax.jacfwd if mode == "fwd" else jax.jacrev
    in_axes = (0,) + (None,) * len(problem.params)
    batched = jax.jit(jax.vmap(transform(f), in_axes=in_axes))
    single_fn = jax.jit(transform(f))
    params = [jnp.asarray(p) for p in problem.params]
    impl = Impl(single=lambda y: single_fn(y, *params).block_until_ready(),
                prepare=lambda Y: jax.device_put(jnp.asarray(Y)),
                batch=lambda Y: batched(Y, *params).block_until_ready(),
                to_numpy=lambda r, N: _dense(np.asarray(r), N, problem))
    impl.single_prepare = lambda y: jnp.asarray(y)
    impl.notes.append("same model source run on jax.numpy; setup = jit trace+compile at N=1; "
                      "each new N recompiles in its untimed warm-up call")
    return impl


class _TorchNumpy:
    """The few numpy names the example models use, on torch tensors."""

    def __init__(self, torch):
        self.torch = torch

    def _tensor(self, value):
        t = self.torch
        return value if t.is_tensor(value) else t.tensor(value, dtype=t.float64)

    def array(self, items):
        if isinstance(items, (list, tuple)) and any(self.torch.is_tensor(v) for v in items):
            return self.torch.stack([self._tensor(v) for v in items])
        return self.torch.tensor(items, dtype=self.torch.float64)

    def concatenate(self, items):
        return self.torch.cat([self._tensor(v) for v in items])

    def tanh(self, x):
        return self.torch.tanh(x)


def _torch_setup(problem, opts):
    import torch

    torch.set_num_threads(opts.threads)
    f = rebind(problem.function, _TorchNumpy(torch))
    params = [torch.from_numpy(np.ascontiguousarray(p, dtype=np.float64)) for p in problem.params]
    return torch, f, params


def peer_torch_func(problem, opts):
    torch, f, params = _torch_setup(problem, opts)
    in_dims = (0,) + (None,) * len(params)
    batched = torch.func.vmap(torch.func.jacrev(f), in_dims=in_dims)
    single_fn = torch.func.jacrev(f)
    impl = Impl(single=lambda y: single_fn(y, *params), prepare=lambda Y: torch.from_numpy(Y),
                batch=lambda Y: batched(Y, *params),
                to_numpy=lambda r, N: _dense(r.detach().numpy(), N, problem))
    impl.single_prepare = torch.from_numpy
    impl.notes.append("same model source run on torch; torch.from_numpy input (zero-copy)")
    return impl


def peer_torch_autograd(problem, opts):
    torch, f, params = _torch_setup(problem, opts)
    from torch.autograd.functional import jacobian

    in_dims = (0,) + (None,) * len(params)
    batched_f = torch.func.vmap(f, in_dims=in_dims)

    def batch(Y):
        # Points are independent, so d(sum_i f(y_i))/dY holds every per-point Jacobian.
        J = jacobian(lambda Z: batched_f(Z, *params).sum(0), Y, vectorize=True)  # (m, N, n)
        return J.permute(1, 0, 2)

    impl = Impl(single=lambda y: jacobian(lambda z: f(z, *params), y, vectorize=True),
                prepare=lambda Y: torch.from_numpy(Y), batch=batch,
                to_numpy=lambda r, N: _dense(r.detach().numpy(), N, problem))
    impl.single_prepare = torch.from_numpy
    impl.notes.append("batch: jacobian of vmap(f) summed over points -> (m, N, n), returned as a permuted view")
    return impl


def peer_scipy_fd(problem, opts):
    from scipy.optimize import approx_fprime

    f, params = problem.evaluate, problem.params
    m, n = problem.m, problem.n
    eps = np.sqrt(np.finfo(float).eps)

    def batch(Y):
        out = np.empty((Y.shape[0], m, n))
        for i, y in enumerate(Y):
            out[i] = approx_fprime(y, f, eps, *params)
        return out

    impl = Impl(single=lambda y: approx_fprime(y, f, eps, *params), prepare=lambda Y: Y, batch=batch,
                to_numpy=lambda r, N: _dense(r, N, problem))
    impl.notes.append("forward differences, step sqrt(machine eps) (absolute), the numpy model in a Python loop")
    return impl


def floor(kind):
    """A floor: write the (N, m, n) result once, no Jacobian (see the module docstring)."""

    def factory(problem, opts):
        m, n = problem.m, problem.n

        def prepare(Y):
            out = np.empty((Y.shape[0], m, n))
            out.fill(1.0)  # touched: its pages exist before timing
            if kind == "copy":
                return out, np.full_like(out, 2.0)
            return out, Y.shape[0]

        if kind == "memset":
            batch = lambda prepared: prepared[0].fill(0.0)  # noqa: E731
        elif kind == "copy":
            batch = lambda prepared: np.copyto(prepared[0], prepared[1])  # noqa: E731
        else:
            def batch(prepared):
                out = np.empty((prepared[1], m, n))
                out.fill(0.0)
                return out
        point = prepare(np.empty((1, n)))
        single_out = (point[0][0], point[1][0]) if kind == "copy" else (point[0][0], 1)
        impl = Impl(single=lambda y: batch(single_out), prepare=prepare, batch=batch, to_numpy=None)
        impl.notes.append(f"{FLOORS[kind]}; {m * n * 8} bytes written per point")
        return impl

    return factory


FACTORIES = {
    "symjac-cython": lambda p, o: peer_symjac(p, "cython", o),
    "symjac-portable": lambda p, o: peer_symjac(p, "cython", o, native=False),
    "symjac-numpy": lambda p, o: peer_symjac(p, "numpy", o),
    "hand-c": peer_hand_c,
    "c-api": peer_c_api,
    "sympy": peer_sympy,
    "symengine": peer_symengine,
    "casadi": peer_casadi,
    "casadi-c": peer_casadi_c,
    "jax-jacfwd": lambda p, o: peer_jax(p, "fwd", o),
    "jax-jacrev": lambda p, o: peer_jax(p, "rev", o),
    "torch-func": peer_torch_func,
    "torch-autograd": peer_torch_autograd,
    "scipy-fd": peer_scipy_fd,
    **{kind: floor(kind) for kind in FLOORS},
}
REQUIRES = {
    "symjac-cython": ("symjac",), "symjac-portable": ("symjac",), "symjac-numpy": ("symjac",), "hand-c": ("symjac",),
    "c-api": ("symjac",), **{kind: ("numpy",) for kind in FLOORS},
    "sympy": ("sympy",), "symengine": ("symengine", "sympy"), "casadi": ("casadi",), "casadi-c": ("casadi",),
    "jax-jacfwd": ("jax", "jaxlib"), "jax-jacrev": ("jax", "jaxlib"),
    "torch-func": ("torch",), "torch-autograd": ("torch",), "scipy-fd": ("scipy",),
}


def versions(modules):
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in modules:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            if name == "symjac":
                import symjac
                found[name] = symjac.__version__
            else:
                found[name] = None
    return found


# --------------------------------------------------------------------------- worker


def problem_info(problem):
    return {"title": problem.title, "m": problem.m, "n": problem.n, "reference": problem.reference,
            "problem_notes": problem.notes}


def run_peer_on_problem(peer, problem, opts):
    record = {"peer": peer, "problem": problem.name, "status": "ok", "per_point_us": {}, "size_notes": {},
              "notes": [], "info": problem_info(problem)}
    gc.collect()
    start = time.perf_counter()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    rss0 = _status_kb("VmRSS")
    try:
        impl = FACTORIES[peer](problem, opts)
        first = impl.batch(impl.prepare(problem.points(1)))
        del first
    except Skip as skip:
        record.update(status="skipped", reason=str(skip))
        return record
    except Exception as error:  # noqa: BLE001 - report, keep going
        traceback.print_exc()
        record.update(status="error", reason=f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}")
        return record
    record["setup_s"] = time.perf_counter() - start
    peak = _status_kb("VmHWM")
    record["setup_mb"] = None if rss0 is None or peak is None else max(0.0, (peak - rss0) / 1024.0)
    record["cached_s"] = impl.cached_s
    record["notes"] = impl.notes
    if getattr(impl, "flops", None) is not None:
        try:  # after the setup timing: counting is not part of anyone's setup
            record["flops"] = impl.flops()
        except Exception as error:  # noqa: BLE001
            record["notes"].append(f"flop count failed: {type(error).__name__}: {error}"[:200])

    try:
        y0 = problem.point()
        y0n = getattr(impl, "single_prepare", lambda y: y)(y0)
        single = lambda: impl.single(y0n)  # noqa: E731
        single()
        start = time.perf_counter()
        single()
        once = time.perf_counter() - start
        repeats = 21 if once < 0.01 else (7 if once < 0.3 else 3)
        if opts.quick:
            repeats = min(repeats, 11)
        record["latency_us"] = median_time(single, 0.005, repeats) * 1e6
    except Exception as error:  # noqa: BLE001
        traceback.print_exc()
        record["latency_error"] = f"{type(error).__name__}: {error}"[:200]

    previous_pp = None
    for N in opts.sizes:
        out_gb = N * problem.m * problem.n * 8 / 1e9
        if out_gb > opts.mem_gb:
            record["size_notes"][str(N)] = f"dense result {out_gb:.1f} GB > --mem-gb {opts.mem_gb}"
            continue
        if previous_pp is not None and previous_pp * N > opts.max_call:
            record["size_notes"][str(N)] = f"est. {previous_pp * N:.0f} s/call > --max-call {opts.max_call:g}"
            continue
        try:
            Y = problem.points(N)
            prepared = impl.prepare(Y)
            run = lambda: impl.batch(prepared)  # noqa: E731
            result = run()  # warm-up (JAX: compiles for this N)
            if N <= ERR_N and impl.to_numpy is not None:
                J = impl.to_numpy(result, N)
                ref = hand_reference(problem, Y)
                err = float(np.max(np.abs(J - ref)))
                record.update(err_abs=err, err_rel=err / float(np.max(np.abs(ref))), err_n=N)
                del J, ref
            del result
            seconds = median_time(run, opts.min_time)
            record["per_point_us"][str(N)] = seconds / N * 1e6
            previous_pp = seconds / N
            record["mem_mb"] = peak_call_mb(run)
            record["mem_n"] = N
            del prepared, Y
        except MemoryError:
            record["size_notes"][str(N)] = "MemoryError"
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            record["size_notes"][str(N)] = f"{type(error).__name__}: {str(error)[:120]}"
        gc.collect()
    return record


IMPORTS = {
    "symjac-cython": ("symjac", "sympy"), "symjac-portable": ("symjac", "sympy"), "symjac-numpy": ("symjac", "sympy"),
    "hand-c": ("symjac", "sympy"), "c-api": ("symjac", "sympy"), **{kind: ("numpy",) for kind in FLOORS},
    "sympy": ("symjac", "sympy"), "symengine": ("symjac", "sympy", "symengine"), "casadi": ("casadi",),
    "casadi-c": ("casadi",), "jax-jacfwd": ("jax", "jax.numpy"), "jax-jacrev": ("jax", "jax.numpy"),
    "torch-func": ("torch", "torch.func"), "torch-autograd": ("torch", "torch.func"), "scipy-fd": ("scipy.optimize",),
}


def worker_main(opts):
    import importlib

    peer = opts.worker
    start = time.perf_counter()
    missing = [m for m, v in versions(REQUIRES[peer]).items() if v is None]
    import_s = None
    if not missing:
        # Import outside the timed setup (the first problem would otherwise pay it).
        if peer.startswith("jax"):
            _jax_setup()
        for module in IMPORTS[peer]:
            importlib.import_module(module)
        import_s = time.perf_counter() - start
    for name in opts.problems:
        if missing:
            record = {"peer": peer, "problem": name, "status": "skipped",
                      "reason": f"not installed ({', '.join(missing)})"}
        elif peer in NUMPY_SOURCE_PEERS and not numpy_source(name):
            record = {"peer": peer, "problem": name, "status": "skipped",
                      "reason": "model written in sympy (xreplace on sympy.physics.mechanics expressions), "
                                "not numpy: no source to re-run on this library"}
        else:
            t = time.perf_counter()
            record = run_peer_on_problem(peer, make_problem(name), opts)
            record["wall_s"] = time.perf_counter() - t
            record["import_s"] = import_s
        print(json.dumps(record), flush=True)


# --------------------------------------------------------------------------- parent


def fmt_time(us):
    if us is None:
        return "-"
    if us >= 1e5:
        return f"{us / 1e3:.0f}ms"
    if us >= 100:
        return f"{us:.0f}"
    if us >= 10:
        return f"{us:.1f}"
    if us >= 1:
        return f"{us:.2f}"
    return f"{us:.3f}"


def fmt_s(s):
    if s is None:
        return "-"
    return f"{s:.2f}" if s < 100 else f"{s:.0f}"


def fmt_ratio(a, b):
    if a is None or b is None:
        return "-"
    r = a / b
    return f"{r:.2g}" if r < 10 else f"{r:.0f}"


def fmt_mb(mb, n):
    if mb is None:
        return "-"
    size = f"{n:.0e}".replace("e+0", "e") if n and n >= 1000 else f"{n}"
    return f"{mb:.1f}@{size}" if mb < 10 else f"{mb:.0f}@{size}"


def size_label(N):
    return {1: "N=1", 100: "N=100", 10**4: "N=1e4", 10**6: "N=1e6"}.get(N, f"N={N:g}")


def print_tables(problems, peers, results, sizes, out, peak=None, threads=1):
    def p(line=""):
        print(line, file=out)

    for name in problems:
        rows = [results.get((peer, name)) for peer in peers]
        base = results.get((BASELINE, name))
        info = next((r["info"] for r in rows if r and r.get("info")), None)
        p()
        p("=" * 118)
        if info is None:
            p(f"{name}: (no peer built this problem)")
        else:
            p(f"{name}: {info['title']}; Jacobian {info['m']}x{info['n']}")
            kind = "" if info["reference"].startswith("complex step") else " (hand-derived, numpy, point by point)"
            p(f"reference for max|err|: {info['reference']}{kind}")
            for note in info.get("problem_notes", []):
                p(f"problem: {note}")
        p("=" * 118)
        head = f"{'peer':16s}{'import s':>9s}{'setup s':>9s}{'cached s':>9s}{'1-pt us':>9s}"
        head += "".join(f"{size_label(N):>9s}" for N in sizes)
        head += f"{'call MB@N':>12s}{'setup MB':>9s}{'max|err|':>10s}{'rel err':>9s}"
        p("times: setup in s; 1-pt latency in us/call; N=... columns in us per point")
        p(head)
        footnotes = []
        for peer, r in zip(peers, rows):
            if peer in FLOORS and peer == next(q for q in peers if q in FLOORS):
                p("-- floors: write the (N, m, n) float64 result once, no Jacobian (numpy, one thread) --")
            if r is None:
                p(f"{peer:16s}  (no result: worker failed, see stderr)")
                continue
            if r["status"] != "ok":
                p(f"{peer:16s}  {r['status']}: {r['reason']}")
                continue
            line = f"{peer:16s}{fmt_s(r.get('import_s')):>9s}{fmt_s(r.get('setup_s')):>9s}{fmt_s(r.get('cached_s')):>9s}"
            line += f"{fmt_time(r.get('latency_us')):>9s}"
            for N in sizes:
                value = r["per_point_us"].get(str(N))
                cell = fmt_time(value)
                if value is None and str(N) in r["size_notes"]:
                    note = r["size_notes"][str(N)]
                    if note not in footnotes:
                        footnotes.append(note)
                    cell = f"-[{footnotes.index(note) + 1}]"
                line += f"{cell:>9s}"
            line += f"{fmt_mb(r.get('mem_mb'), r.get('mem_n')):>12s}"
            setup_mb = r.get("setup_mb")
            line += "{:>9s}".format("-" if setup_mb is None else f"{setup_mb:.0f}")
            err, rel = r.get("err_abs"), r.get("err_rel")
            line += "{:>10s}".format("-" if err is None else f"{err:.1e}")
            line += "{:>9s}".format("-" if rel is None else f"{rel:.1e}")
            p(line)
        for number, note in enumerate(footnotes, 1):
            p(f"  [{number}] not run: {note}")
        if base and base.get("status") == "ok":
            p()
            p(f"ratio symjac-cython time / peer time (below 1 = symjac faster)")
            p(f"{'peer':16s}{'1-pt':>9s}" + "".join(f"{size_label(N):>9s}" for N in sizes) + f"{'setup':>9s}")
            for peer, r in zip(peers, rows):
                if peer == BASELINE or r is None or r["status"] != "ok":
                    continue
                line = f"{peer:16s}{fmt_ratio(base.get('latency_us'), r.get('latency_us')):>9s}"
                for N in sizes:
                    line += f"{fmt_ratio(base['per_point_us'].get(str(N)), r['per_point_us'].get(str(N))):>9s}"
                line += f"{'-' if peer in FLOORS else fmt_ratio(base.get('setup_s'), r.get('setup_s')):>9s}"
                p(line)
        flops = next((r["flops"] for peer, r in zip(peers, rows) if r and r.get("flops")), None)
        gflop_rows = [(peer, r) for peer, r in zip(peers, rows)
                      if peer in PROGRAM_PEERS and r and r["status"] == "ok" and r["per_point_us"]]
        if flops and gflop_rows:
            p()
            ceiling = "" if peak is None else f"; peak {peak[2] * threads:.1f} GFlop/s for {threads} thread(s)"
            p(f"GFlop/s at the largest N run: {flops} flops per point (symjac's CSE'd program; + - * / and each "
              f"function call = 1 flop){ceiling}")
            p(f"{'peer':16s}{'N':>9s}{'us/pt':>9s}{'GFlop/s':>9s}{'% peak':>9s}")
            for peer, r in gflop_rows:
                N = max(int(k) for k in r["per_point_us"])
                us = r["per_point_us"][str(N)]
                gflops = flops / (us * 1e3)
                share = "-" if peak is None else f"{100 * gflops / (peak[2] * threads):.1f}"
                p(f"{peer:16s}{size_label(N)[2:]:>9s}{fmt_time(us):>9s}{gflops:>9.2f}{share:>9s}")
        floor_rows = [(peer, r) for peer, r in zip(peers, rows)
                      if peer in FLOORS and r and r["status"] == "ok" and r["per_point_us"] and info]
        if floor_rows:
            p()
            p("floor bandwidth at the largest N run (bytes of the result / time; copy also reads as many):")
            for peer, r in floor_rows:
                N = max(int(k) for k in r["per_point_us"])
                us = r["per_point_us"][str(N)]
                p(f"  {peer:14s}{size_label(N):>7s}: {info['m'] * info['n'] * 8 / (us * 1e3):.1f} GB/s written")
        notes = [(peer, note) for peer, r in zip(peers, rows) if r and r["status"] == "ok" for note in r["notes"]]
        if notes:
            p()
            p("notes:")
            for peer, note in notes:
                p(f"  {peer}: {note}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="sizes up to 1e4, shorter timing")
    parser.add_argument("--problems", default=",".join(DEFAULT_PROBLEMS),
                        help=f"comma-separated, from {','.join(ALL_PROBLEMS)} (brussN = N grid points) "
                             f"or 'all'; default {','.join(DEFAULT_PROBLEMS)} (bruss2000 is opt-in: slow to compile)")
    parser.add_argument("--sizes", default=None,
                        help="comma-separated batch sizes, e.g. 1,100,1e4,1e6 (default 1,100,1e4,1e6; --quick: up to 1e4)")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, from {','.join(PEERS)}")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads per peer (default 1; see the module docstring for what each peer gets)")
    parser.add_argument("--no-floors", action="store_true",
                        help=f"leave out the floor rows ({', '.join(FLOORS)}), which run by default")
    parser.add_argument("--mem-gb", type=float, default=0.6,
                        help="skip sizes whose dense result exceeds this many GB (default 0.6)")
    parser.add_argument("--max-call", type=float, default=None,
                        help="skip a size whose estimated call time exceeds this (s; default 4, --quick 1)")
    parser.add_argument("--timeout", type=float, default=900, help="per-peer worker timeout (s)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cached-probe", nargs=2, default=None, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    opts.problems = list(ALL_PROBLEMS) if opts.problems == "all" else [p for p in opts.problems.split(",") if p]
    opts.peers = [p for p in opts.peers.split(",") if p]
    for peer in opts.peers:
        if peer not in PEERS and peer not in FLOORS:
            parser.error(f"unknown peer {peer!r}")
    if opts.worker is None and not opts.no_floors:
        opts.peers += [kind for kind in FLOORS if kind not in opts.peers]
    if opts.threads < 1:
        parser.error("--threads must be at least 1")
    if opts.sizes is None:
        opts.sizes = list(QUICK_SIZES if opts.quick else DEFAULT_SIZES)
    else:
        opts.sizes = [int(float(s)) for s in opts.sizes.split(",") if s]
    if opts.max_call is None:
        opts.max_call = 1.0 if opts.quick else 4.0
    opts.min_time = 0.02 if opts.quick else 0.05
    return opts


def worker_env(cache_dir, threads=1):
    env = dict(os.environ)
    k = str(threads)
    env.update(
        PYTHONPATH=str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        SYMJAC_CACHE_DIR=cache_dir,
        OMP_NUM_THREADS=k, MKL_NUM_THREADS=k, OPENBLAS_NUM_THREADS=k, SYMJAC_NUM_THREADS=k,
        XLA_FLAGS=(f"--xla_cpu_multi_thread_eigen={'false' if threads == 1 else 'true'} "
                   f"intra_op_parallelism_threads={k}"),
        JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
    )
    return env


def cpu_peak():
    """(MHz, flops per cycle, GFlop/s) of one core, or None; see the docstring ("GFlop/s")."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        mhz = float(re.search(r"cpu MHz\s*:\s*([\d.]+)", text).group(1))
        flags = re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split()
    except (OSError, AttributeError, ValueError):
        return None
    if "avx512f" in flags:
        per_cycle = 32  # 8 doubles x 2 (FMA) x 2 units (assumed)
    elif "avx2" in flags and "fma" in flags:
        per_cycle = 16  # 4 doubles x 2 (FMA) x 2 units: Zen 3, Haswell and later
    else:
        per_cycle = 4
    return mhz, per_cycle, mhz * per_cycle / 1e3


def main(argv=None):
    opts = parse_args(argv)
    if opts.cached_probe:
        return cached_probe_main(*opts.cached_probe)
    if opts.worker:
        return worker_main(opts)

    out = sys.stdout
    started = time.perf_counter()
    print(f"symjac peer benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}", file=out)
    print(f"command: python benchmarks/peers.py {' '.join(sys.argv[1:] if argv is None else argv)}", file=out)
    cpu = "?"
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    print(f"machine: {platform.machine()} {cpu}, {os.cpu_count()} cores; python {platform.python_version()}; "
          f"{opts.threads} thread(s) per peer (--threads {opts.threads}: OMP/MKL/OPENBLAS/SYMJAC_NUM_THREADS, "
          f"torch.set_num_threads, XLA_FLAGS" + (", casadi map 'thread', OpenMP in the C loops" if opts.threads > 1 else "")
          + ")", file=out)
    peak = cpu_peak()
    if peak:
        mhz, per_cycle, gflops = peak
        print(f"core peak: {per_cycle} flop/cycle (double, FMA = 2 flops) x {mhz:.0f} MHz (/proc/cpuinfo 'cpu MHz') "
              f"= {gflops:.1f} GFlop/s per core, {gflops * opts.threads:.1f} for {opts.threads} thread(s)", file=out)
    installed = versions(["symjac", "numpy", "sympy", "symengine", "casadi", "jax", "jaxlib", "torch", "scipy", "Cython"])
    print("versions: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in installed.items()), file=out)
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "symjac", "templates"],
                               capture_output=True, text=True).stdout.split("\n")
        dirty = [line for line in dirty if line.strip()]
        print(f"symjac tree: git {head}" + (f" + {len(dirty)} uncommitted change(s) in symjac/, templates/"
                                             if dirty else " (clean)"), file=out)
    except OSError:
        pass
    print(f"sizes: {opts.sizes}; problems: {opts.problems}; seed {SEED}; --mem-gb {opts.mem_gb}; "
          f"--max-call {opts.max_call:g} s", file=out)
    print("peers:", file=out)
    for peer in opts.peers:
        print(f"  {peer:16s}{PEERS.get(peer) or FLOORS[peer]}", file=out)
    out.flush()

    results = {}
    for peer in opts.peers:
        with tempfile.TemporaryDirectory(prefix="symjac-peers-cache-") as cache:
            cmd = [sys.executable, __file__, "--worker", peer, "--problems", ",".join(opts.problems),
                   "--sizes", ",".join(map(str, opts.sizes)), "--mem-gb", str(opts.mem_gb),
                   "--max-call", str(opts.max_call), "--threads", str(opts.threads)] + (["--quick"] if opts.quick else [])
            t = time.perf_counter()
            try:
                done = subprocess.run(cmd, env=worker_env(os.path.join(cache, "c"), opts.threads), capture_output=True,
                                      text=True, timeout=opts.timeout)
                stdout, stderr, code = done.stdout, done.stderr, done.returncode
            except subprocess.TimeoutExpired as expired:
                stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
                stderr = expired.stderr.decode() if isinstance(expired.stderr, bytes) else (expired.stderr or "")
                code = f"timeout after {opts.timeout:g} s"
            got = 0
            for line in stdout.splitlines():
                if line.startswith("{"):
                    record = json.loads(line)
                    results[(record["peer"], record["problem"])] = record
                    got += 1
            for name in opts.problems:
                if (peer, name) not in results:
                    results[(peer, name)] = {"peer": peer, "problem": name, "status": "error",
                                             "reason": f"worker exited ({code}) before finishing this problem"}
            status = "ok" if code == 0 else f"exit {code}"
            print(f"[{peer}: {time.perf_counter() - t:.0f} s, {status}]", file=sys.stderr, flush=True)
            if stderr.strip():
                tail = "\n".join(stderr.strip().splitlines()[-15:])
                print(f"--- {peer} stderr (last lines) ---\n{tail}", file=sys.stderr, flush=True)

    print_tables(opts.problems, opts.peers, results, opts.sizes, out, peak=cpu_peak(), threads=opts.threads)
    print(file=out)
    skipped = sorted({r["reason"] for r in results.values() if r["status"] == "skipped" and "not installed" in r["reason"]})
    for peer in opts.peers:
        reasons = {r["reason"] for (p, _), r in results.items() if p == peer and r["status"] != "ok"}
        if reasons and all("not installed" in reason for reason in reasons) and len(reasons) == 1:
            print(f"{peer}: skipped: not installed", file=out)
    del skipped
    print(f"total wall time {time.perf_counter() - started:.0f} s", file=out)


if __name__ == "__main__":
    main()
