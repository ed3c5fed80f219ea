"""Models shared by the pickling and Dask tests (tests/test_pickle.py,
tests/test_dask.py): small, so that building them in a fresh process with an
empty cache stays quick, and shaped to reach every derivative kind and every
nesting of results (tuple outputs, tuple ``wrt``).

The builders are cached per process, so the two test modules share one build
of each (and one cache entry, through the shared test cache directory).
"""

from functools import lru_cache

import numpy as np

import symjac

K_ROBER = np.array([0.04, 3e7, 1e4])
P_ENERGY = np.array([0.7, -1.3])
P_PAIR = np.array([2.0, 0.5])


def rober(y, k):
    return np.array([-k[0] * y[0] + k[2] * y[1] * y[2],
                     k[0] * y[0] - k[1] * y[1] ** 2 - k[2] * y[1] * y[2],
                     k[1] * y[1] ** 2])


def energy(x, y, p):
    """A scalar of two vectors: nested Hessian blocks H[i][j], a gradient."""
    return p[0] * np.sum(x ** 2 * y[0]) + np.sin(x[0] * y[1]) + p[1] * np.exp(x[1] * y[0]) / (1 + y[1] ** 2)


def pair(x, p):
    """Two outputs: results nested as J[output][wrt]."""
    return x * p[0] + x[::-1] ** 2, np.array([x[0] * x[1] * p[1], np.cos(x[2])])


ALL_KERNELS = ("jacobian", "function", "function_and_jacobian")


@lru_cache(maxsize=None)
def objects(backend="cython"):
    """Every derivative kind, by name: (object, arguments at one point, their extra batch-able args)."""
    return {
        "jacobian": symjac.jacobian(rober, y=3, k=3, wrt="y", kernels=ALL_KERNELS, backend=backend),
        "hessian": symjac.hessian(energy, x=2, y=2, p=2, wrt=("x", "y"), backend=backend),
        "gradient": symjac.gradient(energy, x=2, y=2, p=2, wrt="x", backend=backend),
        "jvp": symjac.jvp(rober, y=3, k=3, wrt="y", backend=backend),
        "vjp": symjac.vjp(rober, y=3, k=3, wrt="y", backend=backend),
    }


@lru_cache(maxsize=None)
def pair_jacobian(backend="numpy"):
    return symjac.jacobian(pair, x=3, p=2, wrt=("x", "p"), kernels=ALL_KERNELS, backend=backend)


def sample_arguments(name, batch=(), seed=0):
    """Arguments of object ``name`` with leading ``batch`` dimensions on the
    differentiated (state) arguments and none on the parameters."""
    rng = np.random.default_rng(seed)
    if name in ("jacobian", "jvp", "vjp"):
        args = [rng.uniform(0.1, 1.0, batch + (3,)), K_ROBER]
        if name != "jacobian":
            args.append(rng.standard_normal(batch + (3,)))
        return args
    if name in ("hessian", "gradient"):
        return [rng.uniform(-1, 1, batch + (2,)), rng.uniform(-1, 1, batch + (2,)), P_ENERGY]
    if name == "pair":
        return [rng.uniform(-1, 1, batch + (3,)), P_PAIR]
    raise KeyError(name)


def calls(name):
    """The call kinds of object ``name``: (label, method name or None for __call__)."""
    if name in ("jacobian", "pair"):
        return [("call", None), ("values", "values"), ("function", "function"),
                ("function_and_jacobian", "function_and_jacobian")]
    if name == "hessian":
        return [("call", None), ("values", "values")]
    return [("call", None)]


def invoke(obj, method, args, **options):
    return (getattr(obj, method) if method else obj)(*args, **options)


def flat(result):
    """Nested tuples of arrays as a flat list."""
    if isinstance(result, tuple):
        return [item for inner in result for item in flat(inner)]
    return [result]
