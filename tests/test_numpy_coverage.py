"""numpy functions added for issue 20, each checked against independent oracles.

Every case builds the Jacobian (and the function kernel) with the numpy
backend, compares the function value with numpy's own on floats, and the
Jacobian with central differences (and complex step where numpy's function
is complex-analytic). Points are drawn away from kinks and jumps; the
conventions *at* ties and jumps (issue 20: numpy's argmax / stable sort / JAX)
have tests of their own. A few cases are compiled with Cython too.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import sympy

import symjac
from oracles import central_difference_jacobian, complex_step_jacobian

CD = dict(rtol=1e-6, atol=1e-7)
CS = dict(rtol=1e-10, atol=1e-12)


def _rng(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def away_from_integers(values, margin=0.05):
    return bool(np.all(np.abs(values - np.round(values)) > margin))


def distinct(values, margin=0.05):
    v = np.sort(np.ravel(values))
    return bool(np.all(np.diff(v) > margin))


# name: (function, shape of x, point generator, complex-step analytic?)
CASES = {
    # statistics
    "var": (lambda x: np.var(x), 5, None, False),
    "var_axis_ddof_keepdims": (lambda x: np.var(x.reshape(2, 3), axis=1, ddof=1, keepdims=True), 6, None, False),
    "var_method_correction": (lambda x: x.reshape(2, 3).var(axis=0) + np.var(x, correction=2), 6, None, False),
    "std": (lambda x: np.std(x.reshape(3, 2), axis=0, ddof=1), 6, None, False),
    "std_method_keepdims": (lambda x: x.reshape(2, 3).std(axis=(0, 1), keepdims=True) * x, 6, None, False),
    "median_even_odd": (lambda x: np.median(x) + np.median(x[:5]) * x, 6, distinct, False),
    # elementwise
    "remainder_negative": (lambda x: np.remainder(x, -1.3) + np.mod(x, 0.7) + x % 2.1, 6,
                           lambda x: away_from_integers(x / 1.3) and away_from_integers(x / 0.7)
                           and away_from_integers(x / 2.1), False),
    "remainder_traced_divisor": (lambda x: x % x[::-1] + 3.1 % x, 6,
                                 lambda x: away_from_integers(x / x[::-1]) and away_from_integers(3.1 / x)
                                 and np.all(np.abs(x) > 0.3), False),
    "fmod": (lambda x: np.fmod(x, x[::-1]) + np.fmod(x, -0.9), 6,
             lambda x: away_from_integers(x / x[::-1]) and away_from_integers(x / 0.9) and np.all(np.abs(x) > 0.3),
             False),
    "floor_ceil_trunc_rint": (lambda x: np.floor(x) * x + np.ceil(x) + np.trunc(x) * x ** 2 + np.rint(x) + x // 0.3
                              + np.fix(x), 6, lambda x: away_from_integers(2 * x) and away_from_integers(x / 0.3),
                              False),
    "round_decimals": (lambda x: np.round(x, 1) * x + np.around(x * 30, -1), 6,
                       lambda x: away_from_integers(10 * x + 0.5) and away_from_integers(3 * x + 0.5), False),
    "logaddexp2": (lambda x: np.logaddexp2(x, x[::-1] ** 2), 6, None, False),
    "real_imag_angle": (lambda x: np.real(x) * x + np.imag(x) + np.angle(x) + np.angle(x, deg=True) * x
                        + np.real_if_close(x) ** 2, 6, lambda x: np.all(np.abs(x) > 0.1), False),
    "nan_to_num": (lambda x: np.nan_to_num(np.log(x ** 2)) + np.nan_to_num(x, posinf=1.0), 6, None, False),
    # array functions
    "sort": (lambda x: np.sort(x) * np.arange(1.0, 7.0), 6, distinct, False),
    "sort_axis": (lambda x: np.sort(x.reshape(2, 3), axis=0) ** 2 + np.sort(x.reshape(2, 3), axis=None)[:3], 6,
                  distinct, False),
    "sort_method": (lambda x: _sorted_copy(x) ** 3, 6, distinct, False),
    "partition": (lambda x: np.partition(x, 2)[2] * np.partition(x, (0, 4))[[0, 4]], 6, distinct, False),
    "linspace": (lambda x: np.linspace(x[0], x[1], 5) ** 2 + np.linspace(0.0, x[2], 4, endpoint=False).sum(), 6,
                 None, True),
    "linspace_arrays_retstep": (lambda x: _linspace_retstep(x), 6, None, True),
    "gradient": (lambda x: np.gradient(x ** 3, 0.5) + np.gradient(np.sin(x), x[0], edge_order=2), 6, None, True),
    "gradient_axes": (lambda x: np.stack(np.gradient((x ** 2).reshape(2, 3), 0.5, 2.0)), 6, None, True),
    "rollaxis": (lambda x: np.rollaxis(x.reshape(1, 2, 3), 2) * np.sin(x.reshape(3, 1, 2)), 6, None, True),
    "select": (lambda x: np.select([x > 0.5, x < -0.5], [x ** 2, np.sin(x)], x ** 3), 6,
               lambda x: np.all(np.abs(np.abs(x) - 0.5) > 0.05), False),
    "dsplit": (lambda x: np.dsplit(x.reshape(1, 2, 3), 3)[1] * x[0], 6, None, True),
    "r_": (lambda x: np.r_[x[0], x[1:3], 7.0, np.sin(x[3:])] ** 2, 6, None, True),
    "c_": (lambda x: np.c_[x[:3], np.exp(x[3:]), x[:3] * x[3:]], 6, None, True),
    "lists": (lambda x: np.mean([x[0], x[1] ** 2]) + np.append([[x[0], 1.0]], [[x[1], x[2]]])
              + np.linalg.norm([x[3], x[4]]) + np.sum([x, x ** 2], axis=0)[:4], 6, None, False),
    # max / min
    "max_min_axis_keepdims": (lambda x: np.max(x.reshape(2, 3), axis=1, keepdims=True) * np.min(x.reshape(2, 3), axis=0)
                              + np.amax(x) - np.amin(x), 6, distinct, False),
    "max_methods_reduce": (lambda x: x.reshape(2, 3).max(axis=0) + x.min() + np.maximum.reduce(x.reshape(2, 3))
                           + np.minimum.reduce(x.reshape(3, 2), axis=1).sum() + np.fmax.reduce(x), 6, distinct, False),
    "softmax_shifted": (lambda x: _softmax(x), 7, None, False),
    "max_pool": (lambda x: np.sin(x).reshape(2, 2, 2, 2).max(axis=(1, 3)), 16, distinct, False),
    "chained_maximum": (lambda x: np.maximum(np.maximum(np.maximum(x[0], x[1]), np.minimum(x[2], x[3])), x[4] * x[5]),
                        6, distinct, False),
    # np.linalg, fixed small sizes
    "linalg_small": (lambda x: np.linalg.det(x[:9].reshape(3, 3)) + np.linalg.inv(x[:4].reshape(2, 2)).sum()
                     + np.linalg.solve(x[:9].reshape(3, 3), x[9:]).sum() + np.linalg.det(x[:8].reshape(2, 2, 2)), 12,
                     None, True),
    "linalg_batched_inv_solve": (lambda x: np.linalg.inv(x[:12].reshape(3, 2, 2)) @ x[12:14]
                                 + np.linalg.solve(x[:12].reshape(3, 2, 2), x[12:].reshape(3, 2, 1))[..., 0], 18,
                                 None, True),
}


def _sorted_copy(x):
    y = x * 1.0
    y.sort()
    return y


def _linspace_retstep(x):
    points, step = np.linspace(x[:2], x[2:4], 3, retstep=True, axis=1)
    return points * step[:, None]


def _softmax(x):
    z = np.exp(x - np.max(x))
    return z / np.sum(z)


def _point(name, n, ok):
    rng = _rng(name)
    for _ in range(10_000):
        x = rng.uniform(-2.0, 2.0, n)
        if ok is None or ok(x):
            return x
    raise RuntimeError("no point")


@pytest.mark.parametrize("name", sorted(CASES))
def test_value_and_jacobian(name):
    f, n, ok, analytic = CASES[name]
    x = _point(name, n, ok)
    jac = symjac.jacobian(f, x=n, backend="numpy", kernels=("jacobian", "function"))
    np.testing.assert_allclose(jac.function(x), f(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jac(x), central_difference_jacobian(f, [x], 0), **CD)
    if analytic:
        np.testing.assert_allclose(jac(x), complex_step_jacobian(f, [x], 0), **CS)


COMPILED = ["remainder_traced_divisor", "floor_ceil_trunc_rint", "nan_to_num", "sort", "max_pool", "std",
            "linalg_small", "round_decimals"]


@pytest.mark.parametrize("name", COMPILED)
def test_compiled_matches(name):
    f, n, ok, _ = CASES[name]
    x = _point(name, n, ok)
    jac = symjac.jacobian(f, x=n, backend="cython", kernels=("jacobian", "function"))
    np.testing.assert_allclose(jac.function(x), f(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jac(x), central_difference_jacobian(f, [x], 0), **CD)


def test_nan_to_num_replaces_like_numpy():
    f = lambda x: np.nan_to_num(np.log(x), nan=-7.0, posinf=5.0) + np.nan_to_num(1.0 / x)  # noqa: E731
    x = np.array([0.0, -1.0, 2.0])
    for backend in ("numpy", "cython"):
        jac = symjac.jacobian(f, x=3, backend=backend, kernels=("jacobian", "function"))
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(jac.function(x), f(x))


# --------------------------------------------------------------------------
# conventions at ties and jumps


def test_max_min_ties_select_the_first_like_argmax():
    x = np.array([1.0, 3.0, 0.5, 3.0, 3.0, -2.0, -2.0])
    for backend in ("numpy", "cython"):
        g_max = symjac.gradient(lambda x: np.max(x), x=7, backend=backend)
        g_min = symjac.gradient(lambda x: np.min(x), x=7, backend=backend)
        np.testing.assert_array_equal(g_max(x), np.eye(7)[np.argmax(x)])
        np.testing.assert_array_equal(g_min(x), np.eye(7)[np.argmin(x)])


def test_max_gradient_is_argmax_on_integer_data():
    """Many ties: whole numbers from a small range, several sizes (odd ones make
    unbalanced trees)."""
    rng = np.random.default_rng(5)
    for n in (2, 3, 5, 8, 13, 33):
        g = symjac.gradient(lambda x: np.max(x), x=n, backend="numpy")
        h = symjac.gradient(lambda x: np.min(x), x=n, backend="numpy")
        X = rng.integers(0, 4, size=(50, n)).astype(float)
        np.testing.assert_array_equal(g(X), np.eye(n)[np.argmax(X, axis=1)])
        np.testing.assert_array_equal(h(X), np.eye(n)[np.argmin(X, axis=1)])


def test_maximum_ufunc_ties_select_the_first_argument():
    jac = symjac.jacobian(lambda x: np.array([np.maximum(x[0], x[1]), np.minimum(x[1], x[0])]), x=2,
                          backend="numpy")
    np.testing.assert_array_equal(jac(np.array([2.0, 2.0])), [[1.0, 0.0], [0.0, 1.0]])


def test_sort_ties_follow_the_stable_sort():
    x = np.array([1.0, 3.0, 1.0, 2.0, 3.0, 1.0])
    for backend in ("numpy", "cython"):
        jac = symjac.jacobian(lambda x: np.sort(x), x=6, backend=backend, kernels=("jacobian", "function"))
        np.testing.assert_array_equal(jac.function(x), np.sort(x))
        np.testing.assert_array_equal(jac(x), np.eye(6)[np.argsort(x, kind="stable")])


def test_sort_jacobian_is_a_permutation_on_random_ties():
    rng = np.random.default_rng(11)
    jac = symjac.jacobian(lambda x: np.sort(x), x=7, backend="numpy")
    X = rng.integers(0, 3, size=(40, 7)).astype(float)
    expected = np.eye(7)[np.argsort(X, axis=1, kind="stable")]
    np.testing.assert_array_equal(jac(X), expected)
    # sum(sort(x)) = sum(x): gradient 1 everywhere, also at ties
    g = symjac.gradient(lambda x: np.sum(np.sort(x) * 2.0), x=7, backend="numpy")
    np.testing.assert_array_equal(g(X), np.full((40, 7), 2.0))


def test_remainder_derivative_at_the_jumps_follows_jax():
    """d(a % b)/da = 1, d/db = -floor(a/b), also where a is a multiple of b;
    fmod: d/db = -trunc(a/b)."""
    f = lambda v: np.array([v[0] % v[1], np.fmod(v[0], v[1])])  # noqa: E731
    jac = symjac.jacobian(f, v=2, backend="numpy", kernels=("jacobian", "function"))
    for a, b in [(6.0, 2.0), (-6.0, 2.0), (6.0, -2.0), (0.0, 3.0), (-7.5, 2.0), (7.5, -2.0)]:
        v = np.array([a, b])
        np.testing.assert_array_equal(jac.function(v), [np.remainder(a, b), np.fmod(a, b)])
        np.testing.assert_array_equal(jac(v), [[1.0, -np.floor(a / b)], [1.0, -np.trunc(a / b)]])


def test_rounding_derivatives_are_zero_at_the_jumps():
    f = lambda x: np.floor(x) + np.ceil(x) + np.trunc(x) + np.rint(x) + x // 1.0  # noqa: E731
    jac = symjac.jacobian(f, x=4, backend="numpy", kernels=("jacobian", "function"))
    x = np.array([1.0, -2.0, 0.5, 2.5])
    np.testing.assert_array_equal(jac.function(x), f(x))
    np.testing.assert_array_equal(jac(x), np.zeros((4, 4)))


# --------------------------------------------------------------------------
# bug 1 (exponential max) and bug 2 (gradient of max did not render)


def _dag_nodes(exprs):
    seen, stack = set(), list(exprs)
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(node.args)
    return len(seen)


def test_max_of_ten_thousand_is_linear():
    """Benchmark note (not asserted): 0.2 s to trace on a loaded 2-core machine."""
    n = 10_000
    traced = symjac.trace(lambda x: np.max(x) + np.min(x), x=n)
    assert _dag_nodes([traced.outputs[0][()]]) < 4 * n
    values = np.random.default_rng(2).normal(size=n)
    known = dict(zip(traced.arguments[0].symbols, values))
    assert _evaluate(traced.outputs[0][()], known) == values.max() + values.min()


def _evaluate(expr, known):
    """Python floats over the DAG, independent of symjac's printers."""
    from symjac.front.functions import maximum, minimum

    rules = {maximum: max, minimum: min, sympy.Add: lambda *a: sum(a)}
    stack = [expr]
    while stack:
        node = stack[-1]
        if node in known:
            stack.pop()
            continue
        missing = [arg for arg in node.args if arg not in known]
        if missing:
            stack.extend(missing)
            continue
        known[node] = rules[node.func](*(known[arg] for arg in node.args))
        stack.pop()
    return known[expr]


def test_max_of_many_builds_and_differentiates():
    n = 600
    x = np.random.default_rng(3).normal(size=n)
    x[[17, 400]] = 9.0
    g = symjac.gradient(lambda x: np.max(x) - 2.0 * np.min(x), x=n, backend="numpy")
    expected = np.zeros(n)
    expected[17] = 1.0
    expected[np.argmin(x)] = -2.0
    np.testing.assert_array_equal(g(x), expected)
    jac = symjac.jacobian(lambda x: np.max(x.reshape(20, 30), axis=1), x=n, backend="cython")
    J = jac(x)
    np.testing.assert_array_equal(J, np.eye(n)[np.argmax(x.reshape(20, 30), axis=1) + 30 * np.arange(20)])


@pytest.mark.parametrize("n", [5, 9])
def test_gradient_of_max_renders(n):
    x = np.random.default_rng(n).normal(size=n)
    for backend in ("numpy", "cython"):
        g = symjac.gradient(lambda x: np.max(x), x=n, backend=backend)
        np.testing.assert_array_equal(g(x), np.eye(n)[np.argmax(x)])


def test_gradient_of_nested_where_and_clip_renders():
    """ITE conditions nested in And/Or (sympy folds Piecewise inside comparisons)
    print as selections (bug 2's render failure, without the max)."""
    def f(x):
        y = np.where(x[0] > x[1], x[0], x[1])
        z = np.where(y > x[2], y, x[2])
        w = np.where(z > x[3], z, x[3])
        return np.clip(w, -1.0, 1.5) * np.where(w > x[4], w, x[4])

    x = np.array([0.3, -0.2, 0.9, 0.1, 0.4])
    for backend in ("numpy", "cython"):
        g = symjac.gradient(f, x=5, backend=backend)
        np.testing.assert_allclose(g(x), central_difference_jacobian(f, [x], 0), **CD)


def test_hessians_of_new_functions():
    def f(x):
        return np.var(x, ddof=1) * np.max(x) + np.sum(np.sort(x) ** 3 * np.arange(5)) + np.std(x) ** 3 \
            + np.sum(x % 1.3 * x)

    x = np.array([0.3, -1.1, 0.8, 1.6, -0.4])
    H = symjac.hessian(f, x=5, backend="numpy")(x)
    g = lambda y: central_difference_jacobian(f, [y], 0, h=1e-5)  # noqa: E731
    np.testing.assert_allclose(H, central_difference_jacobian(g, [x], 0, h=1e-4), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("call", [lambda x: np.argsort(x), lambda x: np.argmax(x), lambda x: np.argmin(x),
                                  lambda x: x[np.argmax(x)]])
def test_value_dependent_indices_are_errors(call):
    with pytest.raises(symjac.TracingError, match="depends on the values"):
        symjac.trace(call, x=4)


def test_large_linalg_says_use_the_array_form():
    with pytest.raises(symjac.TracingError, match='form="array"'):
        symjac.trace(lambda a: np.linalg.inv(a), a=(4, 4))
    with pytest.raises(symjac.TracingError, match='form="array"'):
        symjac.trace(lambda a: np.linalg.det(a), a=(5, 5))


def test_var_with_too_large_ddof_is_a_shape_error():
    with pytest.raises(symjac.ShapeError, match="ddof"):
        symjac.trace(lambda x: np.var(x, ddof=3), x=3)


# --------------------------------------------------------------------------
# the README's list is the tracer's


def test_readme_lists_the_supported_operations():
    from pathlib import Path

    from symjac.front.ops import supported_operations, supported_operations_markdown

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    start, end = "<!-- supported-operations:start -->\n", "<!-- supported-operations:end -->"
    assert readme[readme.index(start) + len(start):readme.index(end)] == supported_operations_markdown()
    table = supported_operations()
    for name in ("np.var", "np.std", "np.sort", "np.linspace", "np.gradient", "np.r_", "np.remainder", "np.mod",
                 "np.floor", "np.logaddexp2", "np.nan_to_num", "np.max", "np.linalg.det"):
        assert name in table["ufuncs"] + table["functions"]
    assert "np.argsort" not in table["functions"]  # refused: value-dependent


def test_every_listed_function_has_a_rule():
    """Each listed name traces (is in a rule table), so the list cannot claim more than the tracer does."""
    from symjac.front.ops import FUNCTIONS, UFUNCS, supported_operations

    table = supported_operations()
    for name in table["ufuncs"] + table["functions"]:
        if name in ("np.array", "np.asarray", "np.asanyarray", "np.ascontiguousarray", "np.r_", "np.c_"):
            continue
        module = np.linalg if name.startswith("np.linalg.") else np
        obj = getattr(module, name.rsplit(".", 1)[1])
        assert obj in UFUNCS or obj in FUNCTIONS or obj is np.matmul, name
