"""symjac Hessians and gradients against their peers: the same problems, the same points, one thread each.

    python benchmarks/hessians.py [--quick] [--problems lj,rosen,mlp,grad] [--peers symjac,jax,...]
                                  [--sympy-budget 120] [--repeats 7] [--timeout 900]

Run by hand, never by the test suite. Optional peers: benchmarks/requirements.txt;
a peer that is not installed is reported as "skipped: not installed".

Problems (x is the only argument; everything else is a constant in the function)
-------------------------------------------------------------------------------
lj     Lennard-Jones energy of 8 atoms, x (24,): sum over the 28 pairs of
       4 (r^-12 - r^-6), r^2 the squared distance, written vectorized (pair
       index arrays from np.triu_indices, one expression over all pairs). Dense 24x24 Hessian, N = 1,000
       points: a 2x2x2 lattice (spacing 1.12) perturbed by U(-0.1, 0.1), so no two
       atoms come closer than ~0.9.
rosen  Extended Rosenbrock, x (1000,): sum_{i<n-1} 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2.
       Tridiagonal Hessian: 2,998 non-zeros (1,999 in the lower triangle).
       Sparse output at N = 1,000: symjac H.values (lower triangle), CasADi its
       sparse lower triangle (casadi.tril), SymEngine/SymPy the list of lower-
       triangle non-zero expressions. JAX and torch have no sparse Hessian: they
       return the dense (N, 1000, 1000) Hessian, run at N = 10 (the table says so).
mlp    tanh MLP objective 8 -> 16 -> 8, f(x) = sum((W2 tanh(W1 x + b1) + b2)^2),
       weights fixed constants from a seeded rng. Dense 8x8 Hessian, N = 1,000.
grad   Gradient of the extended Rosenbrock at n = 10,000, N = 1,000 points:
       symjac.gradient and JAX jit(vmap(grad)), each divided by the time of the
       function itself. The function is evaluated (a) by numpy, vectorized over
       the batch (the model as one numpy expression on the (N, n) array), and
       (b) by a plain C loop compiled with gcc -O3 (the strict baseline); JAX's
       gradient is also divided by its own jit(vmap(f)). Target: symjac
       gradient / function <= 4.

Peers (each in its own fresh Python process per problem, one after another)
--------------------------------------------------------------------------
symjac     symjac.hessian(f, x=n, wrt="x", backend="cython"), called with num_threads=1;
           SYMJAC_CACHE_DIR is a new directory for every process (a cold build) holding
           only the one-time entries of a machine that has built a model before (the
           compiled Jinja templates; the kernel runtime is installed): filled once per run
           by a tiny Hessian. --empty-cache starts from nothing (+0.06-0.1 s of templates).
           H(X) on the dense problems, H.values(X) on rosen.
jax        jax.jit(jax.vmap(jax.hessian(f))), float64, CPU.
torch      torch.func.vmap(torch.func.hessian(f)), CPU float64, torch.set_num_threads(1).
casadi     CasADi SX: casadi.hessian, one casadi.Function, batched with
           Function.map(N, "serial") called once from Python on DM(X.T); the
           result is CasADi's sparse DM (densifying it is not timed).
casadi-c   the same Function through CasADi's CodeGenerator, gcc -O3, and a C loop
           over the points (ctypes); dense problems scatter the non-zeros into a
           zero-filled (N, n, n) array, rosen writes the (N, nnz) values directly.
symengine  SymEngine: gradient by diff, then each gradient entry differentiated
           by the variables it depends on (lower triangle); Lambdify(..., backend="llvm",
           cse=True) on one (N, n) array. Dense problems: the full symmetric matrix
           (mirrored entries are the same expression objects).
sympy      SymPy: the same construction, lambdify(cse=True, modules="numpy") on
           columns, non-zeros written into np.zeros((N, n, n)) (dense problems) or
           an (N, nnz) array (rosen). Its setup is cut off after --sympy-budget
           seconds (also applied to symengine), then the row says so.

SymPy/SymEngine build their expressions by running the same function source on
numpy object arrays of symbols (no symjac involved). JAX, torch and CasADi run it
on their own arrays through a tiny namespace (sum, tanh, constants, index arrays).

What is measured
----------------
- import s   importing the peer's packages in the fresh process (not in setup).
- setup s    cold: everything before the first batched result: tracing or building
             the symbolic form, differentiating, generating/compiling code, and the
             first call on the benchmark batch (for JAX this includes jit
             compilation for that batch shape). Converting the points into the
             peer's preferred input format is not timed.
- us/pt      one call on the whole batch (already in memory in the peer's format),
             divided by N: best of --repeats repeats (7; --quick 3), each repeat a
             loop calibrated to >= 50 ms (20 ms with --quick), time.perf_counter,
             gc disabled while timing.
- ratio      symjac time / peer time (as in benchmarks/peers.py): below 1 means
             symjac is faster than that peer. On rosen, JAX/torch ratios compare
             symjac's sparse values at N = 1,000 with their dense Hessian at N = 10.
- check      the Hessians of the first 3 points (as a full symmetric dense matrix)
             against symjac's (or JAX's when symjac did not run): max|H - H_ref| /
             max|H_ref|, and "MISMATCH" (printed loudly) unless
             allclose(rtol=1e-8, atol=1e-12 max|H_ref|). Gradients are checked
             against the hand-derived Rosenbrock gradient.

Threads: OMP/MKL/OpenBLAS_NUM_THREADS=1, SYMJAC_NUM_THREADS=1, XLA_FLAGS without
multi-threaded Eigen and intra-op parallelism 1 (set in the environment of each
worker before any import), torch.set_num_threads(1)/set_num_interop_threads(1),
symjac calls with num_threads=1.

--quick: N = 200 (rosen dense peers stay at N = 10, grad N = 100), 3 repeats of
>= 20 ms, SymPy/SymEngine setup budget 30 s; aims at ~5 minutes on an idle
machine (longer if symjac's own cold builds are slow).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

SEED = 20240607
CHECK_POINTS = 3
ATOMS = 8
ROSEN_N = 1000
GRAD_N = 10000
DENSE_N_SPARSE_PROBLEM = 10  # batch size for peers that only have a dense Hessian on rosen
RTOL = 1e-8

PEERS = ("symjac", "jax", "torch", "casadi", "casadi-c", "symengine", "sympy")
PEER_MODULES = {
    "symjac": ("symjac",), "jax": ("jax", "jax.numpy"), "torch": ("torch", "torch.func"),
    "casadi": ("casadi",), "casadi-c": ("casadi",), "symengine": ("symengine",), "sympy": ("sympy",),
}
GRAD_PEERS = ("symjac", "jax", "function")
GRAD_MODULES = {"symjac": ("symjac",), "jax": ("jax", "jax.numpy"), "function": ()}
PROBLEMS = ("lj", "rosen", "mlp")
ALL_SECTIONS = PROBLEMS + ("grad",)


# --------------------------------------------------------------------------- problems
#
# Each model is written once against a small namespace ``xp`` (sum, tanh,
# const, index); numpy's namespace is plain numpy, so symjac traces an ordinary numpy
# function.


def lj_function(xp):
    i, j = np.triu_indices(ATOMS, 1)
    (Ix, Iy, Iz), (Jx, Jy, Jz) = [xp.index(3 * i + d) for d in range(3)], [xp.index(3 * j + d) for d in range(3)]

    def lennard_jones(x):
        r2 = (x[Ix] - x[Jx]) ** 2 + (x[Iy] - x[Jy]) ** 2 + (x[Iz] - x[Jz]) ** 2  # the 28 pairs
        inv6 = 1.0 / r2**3
        return xp.sum(4.0 * (inv6 * inv6 - inv6))

    return lennard_jones


def rosen_function(xp):
    def rosenbrock(x):
        return xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    return rosenbrock


def mlp_weights():
    rng = np.random.default_rng([SEED, 99])
    return (rng.normal(size=(16, 8)) / np.sqrt(8.0), 0.5 * rng.normal(size=16),
            rng.normal(size=(8, 16)) / 4.0, 0.5 * rng.normal(size=8))


def mlp_function(xp):
    W1, b1, W2, b2 = (xp.const(w) for w in mlp_weights())

    def mlp_objective(x):
        return xp.sum((W2 @ xp.tanh(W1 @ x + b1) + b2) ** 2)

    return mlp_objective


@dataclass
class Problem:
    name: str
    title: str
    n: int
    make: object  # xp -> f
    sample: object  # (rng, N) -> (N, n)
    sparse: bool = False

    def function(self, xp):
        return self.make(xp)

    def points(self, N):
        return np.ascontiguousarray(self.sample(np.random.default_rng([SEED, PROBLEMS.index(self.name)]), N))


def _lj_points(rng, N):
    lattice = 1.12 * np.array([(i, j, k) for i in range(2) for j in range(2) for k in range(2)], dtype=float)
    return lattice.ravel() + rng.uniform(-0.1, 0.1, size=(N, 3 * ATOMS))


def make_problem(name) -> Problem:
    if name == "lj":
        return Problem("lj", f"Lennard-Jones energy, {ATOMS} atoms, x (24,); dense 24x24 Hessian", 3 * ATOMS,
                       lj_function, _lj_points)
    if name == "rosen":
        return Problem("rosen", f"extended Rosenbrock, x ({ROSEN_N},); sparse Hessian, 2998 non-zeros "
                       f"(1999 in the lower triangle)", ROSEN_N, rosen_function,
                       lambda rng, N: rng.normal(1.0, 0.5, size=(N, ROSEN_N)), sparse=True)
    if name == "mlp":
        return Problem("mlp", "tanh MLP objective 8 -> 16 -> 8, sum of squared outputs, fixed weights; "
                       "dense 8x8 Hessian", 8, mlp_function, lambda rng, N: rng.normal(size=(N, 8)))
    raise SystemExit(f"unknown problem {name!r}")


def numpy_ns():
    return types.SimpleNamespace(sum=np.sum, tanh=np.tanh, const=np.asarray, index=np.asarray)


# --------------------------------------------------------------------------- helpers


class Skip(Exception):
    """This peer cannot run this problem (the message says why)."""


class Unavailable(Exception):
    """symjac does not have the API yet."""


class BudgetExceeded(Exception):
    pass


def best_of(fn, repeats, min_time):
    """Seconds per call: best of ``repeats`` loops, each calibrated to >= min_time."""
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    number = max(1, math.ceil(min_time / max(once, 1e-7)))
    best = math.inf
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            best = min(best, (time.perf_counter() - start) / number)
    finally:
        if enabled:
            gc.enable()
    return best


def symmetric_from_lower(L):
    """(k, n, n) lower triangles (diagonal included) -> full symmetric matrices."""
    diag = np.einsum("kii->ki", L)
    full = L + L.transpose(0, 2, 1)
    idx = np.arange(L.shape[1])
    full[:, idx, idx] = diag
    return full


def scatter_lower(values, rows, cols, n):
    """(k, nnz) lower-triangle values at (rows, cols) -> (k, n, n) full symmetric."""
    out = np.zeros((values.shape[0], n, n))
    out[:, rows, cols] = values
    out[:, cols, rows] = values
    return out


def compile_shared(c_path: Path, so_path: Path):
    cmd = ["gcc", "-O3", "-shared", "-fPIC", "-o", str(so_path), str(c_path), "-lm"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@dataclass
class Impl:
    batch: object  # prepared -> result (native type)
    prepare: object = lambda X: X  # (N, n) float64 -> the peer's preferred input (not timed)
    dense: object = None  # (result, k) -> (k, n, n) full symmetric ndarray of the first k points
    N: int | None = None  # batch size if not the problem's default
    output: str = "dense"
    notes: list = field(default_factory=list)


# --------------------------------------------------------------------------- peers


def peer_symjac(problem, N):
    import symjac

    try:
        hessian = symjac.hessian
    except AttributeError:
        raise Unavailable("not available yet (AttributeError)") from None
    f = problem.function(numpy_ns())
    H = hessian(f, x=problem.n, wrt="x", backend="cython")
    n = problem.n
    if problem.sparse:
        rows, cols = (np.asarray(a) for a in H.indices())
        return Impl(batch=lambda X: H.values(X, num_threads=1),
                    dense=lambda r, k: scatter_lower(np.asarray(r[:k]), rows, cols, n),
                    output=f"values ({rows.size})", notes=[f"H.values(X, num_threads=1): {rows.size} lower-triangle "
                                                           "non-zeros per point"])
    return Impl(batch=lambda X: H(X, num_threads=1), dense=lambda r, k: np.asarray(r[:k]),
                notes=["H(X, num_threads=1) -> (N, n, n)"])


def _jax():
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    return jax, jnp


def peer_jax(problem, N):
    jax, jnp = _jax()
    f = problem.function(types.SimpleNamespace(sum=jnp.sum, tanh=jnp.tanh, const=jnp.asarray, index=np.asarray))
    batched = jax.jit(jax.vmap(jax.hessian(f)))
    impl = Impl(batch=lambda X: batched(X).block_until_ready(), prepare=lambda X: jax.device_put(jnp.asarray(X)),
                dense=lambda r, k: np.asarray(r[:k]),
                notes=["jax.jit(jax.vmap(jax.hessian(f))); setup includes jit compilation for the batch shape"])
    if problem.sparse:
        impl.N, impl.output = DENSE_N_SPARSE_PROBLEM, "dense"
        impl.notes.append(f"no sparse Hessian in JAX: dense (N, n, n) at N = {DENSE_N_SPARSE_PROBLEM}")
    return impl


def peer_torch(problem, N):
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    f = problem.function(types.SimpleNamespace(sum=torch.sum, tanh=torch.tanh, index=torch.as_tensor,
                                               const=lambda a: torch.tensor(a, dtype=torch.float64)))
    batched = torch.func.vmap(torch.func.hessian(f))
    impl = Impl(batch=batched, prepare=torch.from_numpy, dense=lambda r, k: r[:k].detach().numpy().copy(),
                notes=["torch.func.vmap(torch.func.hessian(f)), torch.from_numpy input (zero-copy)"])
    if problem.sparse:
        impl.N, impl.output = DENSE_N_SPARSE_PROBLEM, "dense"
        impl.notes.append(f"no sparse Hessian in torch.func: dense (N, n, n) at N = {DENSE_N_SPARSE_PROBLEM}")
    return impl


def _casadi_function(problem):
    import casadi as ca

    x = ca.SX.sym("x", problem.n)
    f = problem.function(types.SimpleNamespace(sum=ca.sum1, tanh=ca.tanh, const=ca.DM,
                                                  index=lambda a: [int(k) for k in a]))(x)
    H, _ = ca.hessian(f, x)
    if problem.sparse:
        H = ca.tril(H)
    return ca, ca.Function("hx", [x], [H])


def peer_casadi(problem, N):
    ca, F = _casadi_function(problem)
    mapped = F.map(N, "serial")
    n = problem.n

    def dense(result, k):
        block = np.asarray(result[:, : k * n].full()).reshape(n, k, n).transpose(1, 0, 2)
        return symmetric_from_lower(block) if problem.sparse else block

    nnz = F.sparsity_out(0).nnz()
    return Impl(batch=mapped, prepare=lambda X: ca.DM(X.T), dense=dense,
                output=f"sparse DM ({nnz})" if problem.sparse else "sparse DM",
                notes=[f"batched with Function.map(N, 'serial') (built in setup), one call on DM(X.T); "
                       f"returns its sparse DM, {nnz} non-zeros per point"
                       + (" (casadi.tril: lower triangle)" if problem.sparse else "")])


_CASADI_DRIVER = r"""
#include <stdlib.h>
CASADI_SYMBOL_EXPORT void batch_hess(long long n_points, const double *X, long long x_stride, long long nnz,
                                     const long long *index, long long out_stride, double *out)
{
    const casadi_real *arg[%(sz_arg)d + 1];
    casadi_real *res[%(sz_res)d + 1];
    casadi_int *iw = (casadi_int *)malloc(sizeof(casadi_int) * (%(sz_iw)d + 1));
    casadi_real *w = (casadi_real *)malloc(sizeof(casadi_real) * (%(sz_w)d + 1));
    double *buf = index ? (double *)malloc(sizeof(double) * (nnz + 1)) : 0;
    for (long long i = 0; i < n_points; ++i) {
        arg[0] = X + i * x_stride;
        res[0] = index ? buf : out + i * out_stride;
        hx(arg, res, iw, w, 0);
        if (index) {
            double *o = out + i * out_stride;
            for (long long k = 0; k < nnz; ++k) o[index[k]] = buf[k];
        }
    }
    free(buf); free(w); free(iw);
}
"""


def peer_casadi_c(problem, N):
    if shutil.which("gcc") is None:
        raise Skip("no gcc")
    ca, F = _casadi_function(problem)
    workdir = Path(tempfile.mkdtemp(prefix=f"casadi-hess-{problem.name}-"))
    generator = ca.CodeGenerator("hess_cas.c", {"with_header": False})
    generator.add(F)
    generator.generate(str(workdir) + os.sep)
    c_path, so_path = workdir / "hess_cas.c", workdir / "hess_cas.so"
    sizes = {"sz_arg": F.sz_arg(), "sz_res": F.sz_res(), "sz_iw": F.sz_iw(), "sz_w": F.sz_w()}
    c_path.write_text(c_path.read_text() + _CASADI_DRIVER % sizes)
    compile_shared(c_path, so_path)
    fn = ctypes.CDLL(str(so_path)).batch_hess
    fn.restype = None
    fn.argtypes = [ctypes.c_longlong, ctypes.c_void_p, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_void_p,
                   ctypes.c_longlong, ctypes.c_void_p]
    sparsity = F.sparsity_out(0)
    rows = np.array(sparsity.row(), dtype=np.int64)
    cols = np.repeat(np.arange(problem.n), np.diff(np.array(sparsity.colind())))
    nnz, n = rows.size, problem.n
    if problem.sparse:
        def batch(X):
            out = np.empty((X.shape[0], nnz))
            fn(X.shape[0], X.ctypes.data, n, nnz, None, nnz, out.ctypes.data)
            return out

        return Impl(batch=batch, dense=lambda r, k: scatter_lower(r[:k], rows, cols, n), output=f"values ({nnz})",
                    notes=[f"CasADi CCS lower-triangle values, {nnz} per point, written straight into (N, nnz)"])
    index = np.ascontiguousarray(rows * n + cols, dtype=np.int64)

    def batch(X):
        out = np.zeros((X.shape[0], n, n))
        fn(X.shape[0], X.ctypes.data, n, nnz, index.ctypes.data, n * n, out.ctypes.data)
        return out

    return Impl(batch=batch, dense=lambda r, k: r[:k].copy(),
                notes=[f"{nnz} non-zeros scattered in C into a zero-filled dense (N, n, n)"])


def _symbolic_hessian(problem, sym, xs, add, tanh):
    """Lower-triangle entries [(i, j, expr)] of the Hessian, built from the gradient."""
    f = problem.function(types.SimpleNamespace(sum=lambda v: add(*np.asarray(v).ravel()),
                                               tanh=np.frompyfunc(tanh, 1, 1), const=np.asarray,
                                               index=np.asarray))(xs)
    f = sym(f)
    position = {s: i for i, s in enumerate(xs)}
    entries = []
    for i, s in enumerate(xs):
        gi = f.diff(s)
        for j in sorted(position[t] for t in gi.free_symbols if t in position and position[t] <= i):
            e = gi.diff(xs[j])
            if e != 0:
                entries.append((i, j, e))
    return entries


def peer_symengine(problem, N):
    import symengine as se

    xs = np.array(se.symbols([f"x{i}" for i in range(problem.n)]), dtype=object)
    entries = _symbolic_hessian(problem, se.sympify, xs, se.Add, se.tanh)
    n = problem.n
    if problem.sparse:
        exprs = [e for _, _, e in entries]
    else:
        matrix = [[0] * n for _ in range(n)]
        for i, j, e in entries:
            matrix[i][j] = matrix[j][i] = e
        exprs = se.DenseMatrix(matrix)
    try:
        fn = se.Lambdify(list(xs), exprs, backend="llvm", cse=True)
        backend = "llvm"
    except Exception as error:  # noqa: BLE001 - symengine built without LLVM
        fn = se.Lambdify(list(xs), exprs, backend="lambda", cse=True)
        backend = f"lambda (llvm unavailable: {type(error).__name__})"
    notes = [f"Lambdify(backend={backend!r}, cse=True) on one (N, n) array; {len(entries)} lower-triangle "
             "entries from diff of the gradient by the variables each entry depends on"]
    if problem.sparse:
        rows = np.array([i for i, _, _ in entries])
        cols = np.array([j for _, j, _ in entries])
        return Impl(batch=fn, dense=lambda r, k: scatter_lower(np.asarray(r[:k]), rows, cols, n),
                    output=f"values ({len(entries)})", notes=notes)
    return Impl(batch=fn, dense=lambda r, k: np.asarray(r[:k]), notes=notes)


def peer_sympy(problem, N):
    import sympy

    xs = np.array(sympy.symbols(f"x0:{problem.n}"), dtype=object)
    entries = _symbolic_hessian(problem, sympy.sympify, xs, sympy.Add, sympy.tanh)
    fn = sympy.lambdify(list(xs), [e for _, _, e in entries], modules="numpy", cse=True)
    n = problem.n
    rows = np.array([i for i, _, _ in entries])
    cols = np.array([j for _, j, _ in entries])
    prepare = lambda X: [np.ascontiguousarray(X[:, j]) for j in range(n)]  # noqa: E731
    notes = [f"lambdify(cse=True, modules='numpy') of {len(entries)} lower-triangle entries, "
             "called on one array per input column"]
    if problem.sparse:
        def batch(columns):
            out = np.empty((columns[0].shape[0], len(entries)))
            for k, value in enumerate(fn(*columns)):
                out[:, k] = value
            return out

        return Impl(batch=batch, prepare=prepare, dense=lambda r, k: scatter_lower(r[:k], rows, cols, n),
                    output=f"values ({len(entries)})", notes=notes)

    def batch(columns):
        out = np.zeros((columns[0].shape[0], n, n))
        for (i, j), value in zip(zip(rows, cols), fn(*columns)):
            out[:, i, j] = value
            out[:, j, i] = value
        return out

    notes.append("written into np.zeros((N, n, n)), both triangles")
    return Impl(batch=batch, prepare=prepare, dense=lambda r, k: r[:k].copy(), notes=notes)


FACTORIES = {"symjac": peer_symjac, "jax": peer_jax, "torch": peer_torch, "casadi": peer_casadi,
             "casadi-c": peer_casadi_c, "symengine": peer_symengine, "sympy": peer_sympy}
BUDGETED = ("sympy", "symengine")


# --------------------------------------------------------------------------- gradient section


def rosen_batch_numpy(X):
    return np.sum(100.0 * (X[:, 1:] - X[:, :-1] ** 2) ** 2 + (1.0 - X[:, :-1]) ** 2, axis=1)


def rosen_gradient_hand(x):
    g = np.zeros_like(x)
    t = x[1:] - x[:-1] ** 2
    g[:-1] = -400.0 * x[:-1] * t - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * t
    return g


_ROSEN_C = r"""
void rosen_batch(long long n_points, long long n, const double *X, double *out)
{
    for (long long p = 0; p < n_points; ++p) {
        const double *x = X + p * n;
        double s = 0.0;
        for (long long i = 0; i + 1 < n; ++i) {
            double t = x[i + 1] - x[i] * x[i], u = 1.0 - x[i];
            s += 100.0 * t * t + u * u;
        }
        out[p] = s;
    }
}
"""


def grad_points(N):
    return np.ascontiguousarray(np.random.default_rng([SEED, 7]).normal(1.0, 0.5, size=(N, GRAD_N)))


def grad_check(G, X):
    ref = np.stack([rosen_gradient_hand(x) for x in X[:CHECK_POINTS]])
    G = np.asarray(G[:CHECK_POINTS])
    err = float(np.max(np.abs(G - ref)) / np.max(np.abs(ref)))
    ok = bool(np.allclose(G, ref, rtol=RTOL, atol=1e-12 * np.max(np.abs(ref))))
    return err, ok


def grad_worker(peer, opts, record):
    N = opts.grad_points
    X = grad_points(N)
    f = rosen_function(numpy_ns())
    if peer == "function":
        record["f_numpy_us"] = best_of(lambda: rosen_batch_numpy(X), opts.repeats, opts.min_time) / N * 1e6
        record["notes"].append("numpy: one vectorized expression over the (N, n) batch")
        if shutil.which("gcc"):
            workdir = Path(tempfile.mkdtemp(prefix="rosen-c-"))
            (workdir / "rosen.c").write_text(_ROSEN_C)
            compile_shared(workdir / "rosen.c", workdir / "rosen.so")
            fn = ctypes.CDLL(str(workdir / "rosen.so")).rosen_batch
            fn.restype = None
            fn.argtypes = [ctypes.c_longlong, ctypes.c_longlong, ctypes.c_void_p, ctypes.c_void_p]

            def call():
                out = np.empty(N)
                fn(N, GRAD_N, X.ctypes.data, out.ctypes.data)
                return out

            if not np.allclose(call(), rosen_batch_numpy(X), rtol=1e-12):
                record["notes"].append("!!! C function disagrees with numpy !!!")
            record["f_c_us"] = best_of(call, opts.repeats, opts.min_time) / N * 1e6
            record["notes"].append("C: plain loop, gcc -O3 (no -ffast-math), ctypes, output np.empty(N)")
        return record
    start = time.perf_counter()
    if peer == "symjac":
        import symjac

        try:
            gradient = symjac.gradient
        except AttributeError:
            raise Unavailable("not available yet (AttributeError)") from None
        g = gradient(f, x=GRAD_N, wrt="x", backend="cython")
        run = lambda: g(X, num_threads=1)  # noqa: E731
        G = run()
        record["setup_s"] = time.perf_counter() - start
        record["notes"].append("symjac.gradient(f, x=10000, backend='cython'), g(X, num_threads=1)")
    else:  # jax
        jax, jnp = _jax()
        fj = rosen_function(types.SimpleNamespace(sum=jnp.sum))
        gb = jax.jit(jax.vmap(jax.grad(fj)))
        fb = jax.jit(jax.vmap(fj))
        prepared = jax.device_put(jnp.asarray(X))
        start = time.perf_counter()  # device_put is input conversion, not setup
        G = gb(prepared).block_until_ready()
        record["setup_s"] = time.perf_counter() - start
        fb(prepared).block_until_ready()
        run = lambda: gb(prepared).block_until_ready()  # noqa: E731
        record["f_jax_us"] = best_of(lambda: fb(prepared).block_until_ready(), opts.repeats, opts.min_time) / N * 1e6
        record["notes"].append("jax.jit(jax.vmap(jax.grad(f))); f: jax.jit(jax.vmap(f)); setup = jit of grad at N")
    record["check_err"], record["check_ok"] = grad_check(np.asarray(G), X)
    record["us_per_point"] = best_of(run, opts.repeats, opts.min_time) / N * 1e6
    record["N"] = N
    return record


# --------------------------------------------------------------------------- worker


def _alarm(signum, frame):
    raise BudgetExceeded


def worker_main(opts):
    peer, section = opts.worker
    record = {"peer": peer, "problem": section, "status": "ok", "notes": []}
    modules = (GRAD_MODULES if section == "grad" else PEER_MODULES)[peer]
    missing = [m for m in modules if "." not in m and importlib.util.find_spec(m) is None]
    if missing:
        record.update(status="skipped", reason=f"not installed ({', '.join(missing)})")
        print(json.dumps(record), flush=True)
        return
    try:
        start = time.perf_counter()
        if peer == "jax":
            _jax()
        for module in modules:
            importlib.import_module(module)
        record["import_s"] = time.perf_counter() - start
        if section == "grad":
            grad_worker(peer, opts, record)
        else:
            hessian_worker(peer, make_problem(section), opts, record)
    except Unavailable as error:
        record.update(status="unavailable", reason=str(error))
    except Skip as error:
        record.update(status="skipped", reason=str(error))
    except BudgetExceeded:
        record.update(status="skipped", reason=f"setup exceeded the {opts.sympy_budget:g} s budget")
    except Exception as error:  # noqa: BLE001 - report, keep going
        traceback.print_exc()
        text = str(error).splitlines()[0][:200] if str(error) else ""
        record.update(status="error", reason=f"{type(error).__name__}: {text}")
    print(json.dumps(record), flush=True)


def hessian_worker(peer, problem, opts, record):
    N = opts.points
    X_all = problem.points(N)
    budget = opts.sympy_budget if peer in BUDGETED else 0
    gc.collect()
    if budget:
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(int(math.ceil(budget)))
    try:
        start = time.perf_counter()
        impl = FACTORIES[peer](problem, N if problem.name != "rosen" or peer not in ("jax", "torch")
                               else DENSE_N_SPARSE_PROBLEM)
        built = time.perf_counter() - start
        N = impl.N or N
        X = np.ascontiguousarray(X_all[:N])
        prepared = impl.prepare(X)
        start = time.perf_counter()
        result = impl.batch(prepared)
        first = time.perf_counter() - start
    finally:
        if budget:
            signal.alarm(0)
    record.update(setup_s=built + first, N=N, output=impl.output, notes=impl.notes)
    dense = np.ascontiguousarray(impl.dense(result, CHECK_POINTS), dtype=np.float64)
    del result
    if dense.shape != (CHECK_POINTS, problem.n, problem.n):
        raise RuntimeError(f"check Hessians have shape {dense.shape}")
    path = Path(opts.check_dir) / f"{problem.name}-{peer}.npy"
    np.save(path, dense)
    record["check_file"] = str(path)
    del dense
    record["us_per_point"] = best_of(lambda: impl.batch(prepared), opts.repeats, opts.min_time) / N * 1e6


# --------------------------------------------------------------------------- parent


def worker_env(cache_dir):
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        SYMJAC_CACHE_DIR=cache_dir,
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", SYMJAC_NUM_THREADS="1",
        XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
        JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
    )
    return env


MACHINE_KINDS = ("runtime", "templates")  # cache entries built once per machine and symjac version, not per model


def machine_cache(directory):
    """A cache holding what a machine keeps after its first model (one tiny Hessian built)."""
    code = "import symjac; symjac.hessian(lambda x: (x ** 2).sum() * x[0], x=2, backend='cython')"
    subprocess.run([sys.executable, "-c", code], env=worker_env(directory), check=True, capture_output=True)
    return directory


def run_worker(peer, section, opts, check_dir):
    with tempfile.TemporaryDirectory(prefix="symjac-hess-cache-") as cache:
        if opts.machine_cache is not None:
            from symjac.build.cache import entry_kind

            os.mkdir(os.path.join(cache, "c"), 0o700)
            for entry in Path(opts.machine_cache).iterdir():
                if entry_kind(entry) in MACHINE_KINDS:
                    shutil.copytree(entry, os.path.join(cache, "c", entry.name))
        cmd = [sys.executable, __file__, "--worker", peer, section, "--check-dir", check_dir,
               "--points", str(opts.points), "--grad-points", str(opts.grad_points), "--repeats", str(opts.repeats),
               "--min-time", str(opts.min_time), "--sympy-budget", str(opts.sympy_budget)]
        t = time.perf_counter()
        try:
            done = subprocess.run(cmd, env=worker_env(os.path.join(cache, "c")), capture_output=True, text=True,
                                  timeout=opts.timeout)
            stdout, stderr, code = done.stdout, done.stderr, done.returncode
        except subprocess.TimeoutExpired as expired:
            stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
            stderr = expired.stderr.decode() if isinstance(expired.stderr, bytes) else (expired.stderr or "")
            code = f"timeout after {opts.timeout:g} s"
    record = None
    for line in stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
    if record is None:
        record = {"peer": peer, "problem": section, "status": "error", "reason": f"worker exited ({code})"}
    print(f"[{section}/{peer}: {time.perf_counter() - t:.0f} s, {record['status']}]", file=sys.stderr, flush=True)
    if record["status"] == "error" and stderr.strip():
        tail = "\n".join(stderr.strip().splitlines()[-12:])
        print(f"--- {section}/{peer} stderr (last lines) ---\n{tail}", file=sys.stderr, flush=True)
    return record


def fmt_us(us):
    if us is None:
        return "-"
    if us >= 1e4:
        return f"{us:.3g}"
    if us >= 100:
        return f"{us:.0f}"
    if us >= 10:
        return f"{us:.1f}"
    return f"{us:.2f}"


def fmt_s(s):
    return "-" if s is None else (f"{s:.2f}" if s < 100 else f"{s:.0f}")


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    r = a / b
    return f"{r:.2g}" if r < 10 else f"{r:.0f}"


def check_against_reference(name, records):
    """Compare every peer's check Hessians with symjac's (else JAX's, else the first that ran)."""
    ok = {r["peer"]: r for r in records if r["status"] == "ok" and r.get("check_file")}
    ref_peer = next((p for p in ("symjac", "jax") if p in ok), next(iter(ok), None))
    mismatches = []
    if ref_peer is None:
        return ref_peer, mismatches
    ref = np.load(ok[ref_peer]["check_file"])
    scale = float(np.max(np.abs(ref)))
    for peer, record in ok.items():
        if peer == ref_peer:
            record["check"] = "reference"
            continue
        H = np.load(record["check_file"])
        err = float(np.max(np.abs(H - ref))) / scale
        good = bool(np.allclose(H, ref, rtol=RTOL, atol=1e-12 * scale))
        record["check"] = f"ok {err:.1e}" if good else f"MISMATCH {err:.1e}"
        if not good:
            mismatches.append((peer, err))
    return ref_peer, mismatches


def print_hessian_table(problem, records, ref_peer, mismatches, opts):
    base = next((r for r in records if r["peer"] == "symjac" and r["status"] == "ok"), None)
    print()
    print("=" * 112)
    print(f"{problem.name}: {problem.title}")
    print(f"check reference: {ref_peer or 'none'} (first {CHECK_POINTS} points, rtol {RTOL:g})")
    print("=" * 112)
    print(f"{'peer':11s}{'N':>6s}  {'output':17s}{'import s':>9s}{'setup s':>9s}{'us/pt':>10s}"
          f"{'ratio us':>10s}{'ratio setup':>12s}  check")
    for r in records:
        peer = r["peer"]
        if r["status"] != "ok":
            label = {"unavailable": "", "skipped": "skipped: ", "error": "error: "}[r["status"]]
            print(f"{peer:11s}  {label}{r['reason']}")
            continue
        line = f"{peer:11s}{r['N']:>6d}  {r['output']:17s}{fmt_s(r.get('import_s')):>9s}{fmt_s(r['setup_s']):>9s}"
        line += f"{fmt_us(r['us_per_point']):>10s}"
        if base is not None and peer != "symjac":
            line += f"{fmt_ratio(base['us_per_point'], r['us_per_point']):>10s}"
            line += f"{fmt_ratio(base['setup_s'], r['setup_s']):>12s}"
        else:
            line += f"{'-':>10s}{'-':>12s}"
        line += f"  {r.get('check', '-')}"
        print(line)
    print("ratio = symjac time / peer time (below 1: symjac faster); us/pt = microseconds per point of one "
          "batched call")
    for peer, err in mismatches:
        print(f"!!!!!!!! MISMATCH: {peer} Hessian differs from {ref_peer}'s on {problem.name}: "
              f"max|dH|/max|H| = {err:.2e} (rtol {RTOL:g}) !!!!!!!!")
    notes = [(r["peer"], note) for r in records if r["status"] == "ok" for note in r.get("notes", [])]
    if notes:
        print("notes:")
        for peer, note in notes:
            print(f"  {peer}: {note}")
    sys.stdout.flush()


def print_grad_table(records, opts):
    by = {r["peer"]: r for r in records}
    fr = by.get("function", {})
    f_np, f_c = fr.get("f_numpy_us"), fr.get("f_c_us")
    print()
    print("=" * 112)
    print(f"grad: gradient of the extended Rosenbrock, n = {GRAD_N}, N = {opts.grad_points} points "
          f"(target: symjac gradient / function <= 4)")
    print(f"function per point: numpy (vectorized over the batch) {fmt_us(f_np)} us; "
          f"C loop (gcc -O3) {fmt_us(f_c)} us"
          + ("" if fr.get("status", "ok") == "ok" else f"  [function worker: {fr.get('reason')}]"))
    print("=" * 112)
    print(f"{'peer':11s}{'N':>6s}{'import s':>9s}{'setup s':>9s}{'grad us/pt':>11s}{'/numpy f':>9s}{'/C f':>7s}"
          f"{'/own f':>8s}{'ratio us':>10s}{'ratio setup':>12s}  check vs hand gradient")
    base = by.get("symjac") if by.get("symjac", {}).get("status") == "ok" else None
    for peer in ("symjac", "jax"):
        r = by.get(peer)
        if r is None:
            continue
        if r["status"] != "ok":
            label = {"unavailable": "", "skipped": "skipped: ", "error": "error: "}[r["status"]]
            print(f"{peer:11s}  {label}{r['reason']}")
            continue
        us = r["us_per_point"]
        line = f"{peer:11s}{r['N']:>6d}{fmt_s(r.get('import_s')):>9s}{fmt_s(r['setup_s']):>9s}{fmt_us(us):>11s}"
        line += f"{fmt_ratio(us, f_np):>9s}{fmt_ratio(us, f_c):>7s}{fmt_ratio(us, r.get('f_jax_us')):>8s}"
        if base is not None and peer != "symjac":
            line += f"{fmt_ratio(base['us_per_point'], us):>10s}{fmt_ratio(base['setup_s'], r['setup_s']):>12s}"
        else:
            line += f"{'-':>10s}{'-':>12s}"
        check = f"ok {r['check_err']:.1e}" if r["check_ok"] else f"MISMATCH {r['check_err']:.1e}"
        print(line + f"  {check}")
        if not r["check_ok"]:
            print(f"!!!!!!!! MISMATCH: {peer} gradient differs from the hand-derived gradient: "
                  f"max|dg|/max|g| = {r['check_err']:.2e} !!!!!!!!")
    if "jax" in by and by["jax"].get("f_jax_us"):
        print(f"jax own f: jax.jit(jax.vmap(f)) {fmt_us(by['jax']['f_jax_us'])} us/pt")
    print("/numpy f, /C f, /own f = gradient time / function time per point; "
          "ratio = symjac time / peer time (below 1: symjac faster)")
    for r in records:
        for note in r.get("notes", []):
            print(f"  {r['peer']}: {note}")
    sys.stdout.flush()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N = 200, 3 repeats, 30 s SymPy budget (~5 min)")
    parser.add_argument("--problems", default=",".join(ALL_SECTIONS),
                        help=f"comma-separated from {','.join(ALL_SECTIONS)} (default all)")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated from {','.join(PEERS)}")
    parser.add_argument("--points", type=int, default=None, help="batch size N (default 1000, --quick 200)")
    parser.add_argument("--grad-points", type=int, default=None, help="N for grad (default 1000, --quick 100)")
    parser.add_argument("--repeats", type=int, default=None, help="best of this many (default 7, --quick 3)")
    parser.add_argument("--min-time", type=float, default=None, help="s per repeat (default 0.05, --quick 0.02)")
    parser.add_argument("--sympy-budget", type=float, default=None,
                        help="SymPy/SymEngine setup cut-off in s (default 120, --quick 30)")
    parser.add_argument("--timeout", type=float, default=None, help="hard per-worker timeout in s "
                        "(default 1200, --quick 600)")
    parser.add_argument("--empty-cache", action="store_true",
                        help="symjac starts from an empty cache (first use on a machine: compiles its templates too)")
    parser.add_argument("--worker", nargs=2, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--check-dir", default=None, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    q = opts.quick
    opts.points = opts.points or (200 if q else 1000)
    opts.grad_points = opts.grad_points or (100 if q else 1000)
    opts.repeats = opts.repeats or (3 if q else 7)
    opts.min_time = opts.min_time or (0.02 if q else 0.05)
    opts.sympy_budget = opts.sympy_budget or (30.0 if q else 120.0)
    opts.timeout = opts.timeout or (600.0 if q else 1200.0)
    opts.problems = [p for p in opts.problems.split(",") if p]
    opts.peers = [p for p in opts.peers.split(",") if p]
    for p in opts.problems:
        if p not in ALL_SECTIONS:
            parser.error(f"unknown problem {p!r}")
    for p in opts.peers:
        if p not in PEERS:
            parser.error(f"unknown peer {p!r}")
    return opts


def versions():
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("symjac", "numpy", "jax", "jaxlib", "torch", "casadi", "symengine", "sympy", "Cython"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def main(argv=None):
    opts = parse_args(argv)
    if opts.worker:
        return worker_main(opts)
    started = time.perf_counter()
    print(f"symjac Hessian/gradient benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"command: python benchmarks/hessians.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    cpu = "?"
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    print(f"machine: {platform.machine()} {cpu}, {os.cpu_count()} cores; python {platform.python_version()}; "
          "one thread per peer, one fresh process per peer and problem")
    print("versions: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in versions().items()))
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        dirty = [line for line in subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "symjac",
                                                  "templates"], capture_output=True, text=True).stdout.split("\n")
                 if line.strip()]
        print(f"symjac tree: git {head}" + (f" + {len(dirty)} uncommitted change(s) in symjac/, templates/"
                                             if dirty else " (clean)"))
    except OSError:
        pass
    print(f"N = {opts.points} (rosen dense-only peers: {DENSE_N_SPARSE_PROBLEM}; grad: {opts.grad_points}); "
          f"best of {opts.repeats}, >= {opts.min_time * 1e3:.0f} ms per repeat; SymPy/SymEngine setup budget "
          f"{opts.sympy_budget:g} s; seed {SEED}")
    sys.stdout.flush()
    print("symjac cache: " + ("empty (first use on a machine)" if opts.empty_cache else
                              "the one-time entries of a used machine (compiled templates)"))
    with tempfile.TemporaryDirectory(prefix="symjac-hess-check-") as check_dir:
        opts.machine_cache = None if opts.empty_cache else machine_cache(os.path.join(check_dir, "machine"))
        for section in opts.problems:
            if section == "grad":
                peers = [p for p in GRAD_PEERS if p == "function" or p in opts.peers]
                records = [run_worker(peer, "grad", opts, check_dir) for peer in peers]
                print_grad_table(records, opts)
                continue
            problem = make_problem(section)
            records = [run_worker(peer, section, opts, check_dir) for peer in opts.peers]
            ref_peer, mismatches = check_against_reference(section, records)
            print_hessian_table(problem, records, ref_peer, mismatches, opts)
    print()
    print(f"total wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
