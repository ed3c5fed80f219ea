"""Every traced operation, checked numerically against an independent oracle.

One table of small numpy functions, each exercising one traced operation (or
one family of them).  For every case and both backends the Jacobian built by
``symjac.jacobian`` is compared with a complex-step oracle (where numpy's
function is complex-analytic) or with central differences (abs, maximum,
where, clip, hypot, arctan2, cbrt, norm: points are drawn away from kinks).

Each Jacobian is built once per (case, backend) and shared by the tests below
through a module-level cache: a Cython build costs about two seconds.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest

import symjac
from oracles import central_difference_jacobian, complex_step_jacobian

BACKENDS = ["numpy", "cython"]

# Tolerances: complex step is exact to rounding; central differences with
# h = 1e-6 are good to roughly 1e-9 relative for O(1) values and derivatives.
TOL = {
    "cs": dict(rtol=1e-9, atol=1e-11),
    "cd": dict(rtol=1e-6, atol=1e-7),
}
# An oracle entry larger than this is a non-zero the sparsity pattern must cover.
NONZERO = {"cs": 1e-12, "cd": 1e-6}


# --------------------------------------------------------------------------- #
# point generators (all seeded from the case name, so fixed and reproducible)
# --------------------------------------------------------------------------- #
def uniform(lo: float, hi: float, shape) -> Callable[[np.random.Generator], np.ndarray]:
    return lambda rng: rng.uniform(lo, hi, size=shape)


def signed(shape, lo: float = 0.3, hi: float = 1.5) -> Callable[[np.random.Generator], np.ndarray]:
    """Magnitudes in [lo, hi] with random signs: away from zero, both signs."""
    return lambda rng: rng.uniform(lo, hi, size=shape) * rng.choice([-1.0, 1.0], size=shape)


def rejecting(gen: Callable, ok: Callable[..., bool], tries: int = 10_000) -> Callable:
    """Redraw ``gen`` (which returns a list of arguments) until ``ok(*args)``."""

    def draw(rng):
        for _ in range(tries):
            args = gen(rng)
            if ok(*args):
                return args
        raise RuntimeError("point generator could not satisfy its constraint")

    return draw


def args_of(*gens) -> Callable[[np.random.Generator], list]:
    return lambda rng: [g(rng) for g in gens]


def far(a, b, margin: float = 0.05) -> bool:
    return bool(np.all(np.abs(np.asarray(a) - np.asarray(b)) > margin))


# --------------------------------------------------------------------------- #
# the traced functions
# --------------------------------------------------------------------------- #
def f_arith_vector(x):  # (3,) -> (3,)
    return (x + x[::-1]) * x - x / (x + 3.0) + 2.0 * x - (-x) ** 2 / 4 + 1 / x - (x - 0.5)


def f_arith_scalars(x):  # (4,) -> (13,)   np.array of traced scalars, reflected operators
    a, b, c, d = x[0], x[1], x[2], x[3]
    return np.array(
        [
            a + b,
            a - c,
            b * d,
            a / d,
            -c,
            2.5 + a,
            3.0 - b,
            2 * c,
            d / 4,
            1 / a,
            -(a * b) + c,
            np.sqrt(2.0) * b,  # numpy float64 scalar on the left
            a * b / (c - d),
        ]
    )


def f_pow_constant_exponent(x):  # (3,), x > 0 -> (10, 3)
    return np.stack(
        [
            x**2,
            x**3,
            x**-2,
            x**0,
            x**1,
            x**0.5,
            x**2.5,
            x ** (-1.5),
            2.0**x,
            np.power(x, 3),
        ]
    )


def f_pow_negative_base(x):  # (3,), both signs -> (6, 3)
    return np.stack([x**2.0, x**3, x**-1, x**-3.0, np.power(x, 4.0), np.square(x) * x])


def f_pow_traced_vector(v):  # (6,), v > 0 -> (3,): base and exponent both traced
    return v[:3] ** v[3:]


def f_pow_xy(x, y):  # (3,), (3,) -> (3,)
    return x**y


def f_trig(x):  # (3,), |x| < 1 -> (6, 3)
    return np.stack([np.sin(x), np.cos(x), np.tan(x), np.arcsin(x), np.arccos(x), np.arctan(x)])


def f_hyperbolic(x):  # (3,), |x| < 1 -> (6, 3)
    return np.stack(
        [np.sinh(x), np.cosh(x), np.tanh(x), np.arcsinh(x), np.arccosh(x + 2.0), np.arctanh(x)]
    )


def f_exp_log(x):  # (3,), x > 0 -> (10, 3)
    return np.stack(
        [
            np.exp(x),
            np.expm1(x),
            np.exp2(x),
            np.log(x),
            np.log1p(x),
            np.log2(x),
            np.log10(x),
            np.sqrt(x),
            np.square(x),
            np.reciprocal(x),
        ]
    )


def f_cbrt(x):  # (4,), both signs -> (2, 4)
    return np.stack([np.cbrt(x), np.cbrt(x) * x])


def f_abs(x):  # (4,), both signs -> (3, 4)
    return np.stack([np.abs(x), abs(x) * x, abs(x[::-1] - 0.5 * x)])


def f_hypot_arctan2(x):  # (4,), both signs -> (4, 2)
    a, b = x[:2], x[2:]
    return np.stack([np.hypot(a, b), np.arctan2(a, b), np.arctan2(b, -a), np.hypot(a, 1.0)])


def f_maximum_minimum(x):  # (4,) -> (4, 2)
    a, b = x[:2], x[2:]
    return np.stack([np.maximum(a, b), np.minimum(a, b), np.maximum(a, 0.0), np.minimum(0.5, b)])


def f_where(x, y):  # (3,), (3,) -> (4, 3)
    return np.stack(
        [
            np.where(x > 0, x**2, -x),
            np.where(x <= y, x * y, x + y),
            np.where(x < 0.5, 1.0, x),
            # the guard idiom: the branch not taken is NaN (and so is its derivative)
            np.where(x > 0, np.sqrt(x), 0.0),
        ]
    )


def f_clip(x):  # (5,) -> (2, 5)
    return np.stack([np.clip(x, -0.5, 0.5), np.clip(x**2, 0.1, 1.0)])


_B = np.array([[0.5, -1.0], [2.0, 0.0], [0.0, 1.5]])  # (3, 2) constant


def f_matvec(M, v):  # (2, 3), (3,) -> (2,)
    return M @ v


def f_vecmat(M, u):  # (2, 3), (2,) -> (3,)
    return u @ M


def f_matmat(M):  # (2, 3) -> (2, 2)
    return M @ M.T + 2.0 * (M @ _B)


def f_dot(M, v):  # (2, 3), (3,) -> (2,)
    return np.dot(M, v) * np.dot(v, v) + np.dot(M[:, 0], M[:, 1])


def f_sum(M):  # (2, 3) -> (2, 3)
    return (
        2.0 * np.sum(M, axis=0)
        + 3.0 * np.sum(M, axis=1, keepdims=True)
        + 5.0 * np.sum(M)
        + 7.0 * np.sum(M, axis=None, keepdims=True)
        + 11.0 * np.sum(M**2, axis=-1, keepdims=True)
    )


def f_prod(M):  # (2, 3) -> (2, 3)
    return (
        2.0 * np.prod(M, axis=0)
        + 3.0 * np.prod(M, axis=1, keepdims=True)
        + 5.0 * np.prod(M, axis=None)
        + 7.0 * np.prod(M, keepdims=True)
    )


def f_mean(M):  # (2, 3) -> (2, 3)
    return (
        2.0 * np.mean(M, axis=0)
        + 3.0 * np.mean(M**2, axis=1, keepdims=True)
        + 5.0 * np.mean(M)
        + 7.0 * np.mean(M**3, axis=0, keepdims=True)
    )


_C2 = np.array([1.5, -0.5])


def f_outer(x):  # (3,) -> (3, 2)
    return np.outer(x, x[:2] ** 2) + np.outer(x**2, _C2)


def f_reshape(x):  # (6,) -> (6,)
    a = x.reshape(2, 3)
    b = np.reshape(a * np.arange(1.0, 7.0).reshape(2, 3), (3, 2))
    return a.reshape(-1) * x[0] + b.reshape(6)[::-1] + np.reshape(b**2, -1)


def f_transpose(M):  # (2, 3) -> (3, 2)
    return M.T * np.arange(1.0, 7.0).reshape(3, 2) + np.transpose(M) ** 2 + np.transpose(M**3, (1, 0))


def f_index_1d(x):  # (6,) -> (8, 3)
    return np.stack(
        [
            x[::2],
            x[1::2],
            x[-3:],
            x[::-1][:3],
            x[5:0:-2],
            x[1:4],
            x[-1] * x[:3],
            x[-4:-1] ** 2,
        ]
    )


def f_shift_reverse(x):  # (6,) -> (5,)   x[1:], x[:-1], x[::-1]
    return x[1:] * x[:-1] - x[::-1][1:] + x[::-1][:-1] ** 2


def f_index_2d(M):  # (3, 4) -> (8, 3)
    return np.stack(
        [
            M[:, 1],
            M[:, -1],
            M[::-1, 0],
            M[1, :3],
            M[-1, :0:-1],
            M[0, 1:],
            M[2, 3] * M[:, 2],
            M[:, 2:].T[1] ** 2 + np.concatenate([M[0, :1], M[-2:, -1]]),
        ]
    )


def f_np_array(x):  # (3,) -> (2, 2), one constant entry
    return np.array([[x[0] * x[1], 2.0], [x[2], x[0] ** 2]])


def f_stack(x):  # (4,) -> (2, 2)
    a, b = x[:2], x[2:]
    return (
        np.stack([a, b])
        + 2.0 * np.stack([a * b, a], axis=1)
        + 3.0 * np.vstack([b, a**2])
        + 5.0 * np.stack([x[0], x[3]])  # 0-d tracers -> (2,), broadcast along rows
    )


def f_concatenate(x):  # (4,) -> (17,)
    a, b = x[:2], x[2:]
    m = np.concatenate([np.stack([a, b]), np.stack([b * a, a])], axis=1)  # (2, 4)
    v = np.concatenate([x, a**2])  # (6,)
    h = np.hstack([b, a[:1] * 3.0])  # (3,)
    return np.concatenate([m[0], m[1] ** 2, v, h])


def f_norm(x):  # (3,) -> ()
    return np.linalg.norm(x)


def f_normalize(x):  # (3,) -> (3,)
    return x / np.linalg.norm(x) + np.linalg.norm(x[:2]) * x


def f_inplace(x):  # (4,) -> (4,)
    out = np.zeros_like(x)
    out[0] = x[0] * x[1]
    out[1:] = x[1:] ** 2 - x[:-1]
    out[3] += np.sin(x[0])
    return out


def f_inplace_view(x):  # (4,) -> (4,)   augmented assignment through a view writes into `out`
    out = np.zeros_like(x)
    out[0] = x[0] * x[1]
    tail = out[1:]
    tail[:2] = x[:2] ** 2
    tail += x[1:] * 3.0
    return out


def f_scalar_extract(x):  # (2,) -> ()
    return np.sin(x[0]) * x[1]


_A = np.array([[1.5, 0.0, -2.0], [0.0, 0.0, 0.0], [0.25, 3.0, 0.0]])
_c = np.array([0.5, -1.25, 2.0])


def f_const_matvec(x):  # (3,) -> (3,)
    return _A @ x


def f_const_vector(x):  # (3,) -> (6, 3)
    return np.stack([x + _c, _c * x, x - _c, _c / x, _c - x, x @ _A + np.dot(_A, x)])


def f_tuple_output(x):  # (3,) -> ((), (3,))
    return x[0] * x[1], np.sin(x) * x[2]


def f_scalar_output(x):  # (3,) -> ()
    return np.sum(x**2) + x[0] * x[2]


def f_scalar_input(t):  # () -> ()
    return np.sin(t) * t**2 + np.exp(-t)


# --------------------------------------------------------------------------- #
# the table
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Case:
    name: str
    f: Callable
    shapes: tuple  # positional shapes, as passed to symjac.jacobian
    point: Callable[[np.random.Generator], list]
    oracle: str  # "cs" (complex step) or "cd" (central differences)
    wrt: int = 0
    extra_checks: tuple = field(default=())

    def args(self) -> list[Any]:
        rng = np.random.default_rng(zlib.crc32(self.name.encode()))
        return self.point(rng)


def _const_matvec_exact(J, sparsity, args):
    # A captured constant matrix: the Jacobian is exactly A, zeros included.
    assert np.array_equal(J, _A), f"expected exactly _A, got {J!r}"


CASES = [
    Case("arith_vector", f_arith_vector, (3,), args_of(uniform(0.2, 2.0, 3)), "cs"),
    Case("arith_scalars", f_arith_scalars, (4,), args_of(uniform(0.5, 2.0, 4)), "cs"),
    Case("pow_constant_exponent", f_pow_constant_exponent, (3,), args_of(uniform(0.3, 2.0, 3)), "cs"),
    Case(
        "pow_negative_base",
        f_pow_negative_base,
        (3,),
        rejecting(args_of(signed(3)), lambda x: (x < 0).any() and (x > 0).any()),
        "cs",
    ),
    Case("pow_traced_vector", f_pow_traced_vector, (6,), args_of(uniform(0.3, 2.0, 6)), "cs"),
    Case("pow_xy_wrt_base", f_pow_xy, (3, 3), args_of(uniform(0.3, 2.0, 3), uniform(-2.0, 2.0, 3)), "cs"),
    Case(
        "pow_xy_wrt_exponent",
        f_pow_xy,
        (3, 3),
        args_of(uniform(0.3, 2.0, 3), uniform(-2.0, 2.0, 3)),
        "cs",
        wrt=1,
    ),
    Case("trig", f_trig, (3,), args_of(uniform(-0.8, 0.8, 3)), "cs"),
    Case("hyperbolic", f_hyperbolic, (3,), args_of(uniform(-0.8, 0.8, 3)), "cs"),
    Case("exp_log", f_exp_log, (3,), args_of(uniform(0.2, 2.0, 3)), "cs"),
    Case(
        "cbrt",
        f_cbrt,
        (4,),
        rejecting(args_of(signed(4)), lambda x: (x < 0).any() and (x > 0).any()),
        "cd",
    ),
    Case(
        "abs",
        f_abs,
        (4,),
        rejecting(
            args_of(signed(4)),
            lambda x: (x < 0).any() and (x > 0).any() and far(x[::-1] - 0.5 * x, 0.0),
        ),
        "cd",
    ),
    Case(
        "hypot_arctan2",
        f_hypot_arctan2,
        (4,),
        rejecting(args_of(signed(4)), lambda x: (x[2:] < 0).any() and (x[2:] > 0).any()),
        "cd",
    ),
    Case(
        "maximum_minimum",
        f_maximum_minimum,
        (4,),
        rejecting(
            args_of(signed(4)),
            lambda x: far(x[:2], x[2:]) and far(x[2:], 0.5) and (x[:2] > 0).any() and (x[:2] < 0).any()
            and (x[:2] > x[2:]).any() and (x[:2] < x[2:]).any(),
        ),
        "cd",
    ),
    Case(
        "where",
        f_where,
        (3, 3),
        rejecting(
            args_of(signed(3), signed(3)),
            lambda x, y: far(x, y) and far(x, 0.5) and (x > 0).any() and (x < 0).any()
            and (x <= y).any() and (x > y).any(),
        ),
        "cd",
    ),
    Case(
        "clip",
        f_clip,
        (5,),
        rejecting(
            args_of(uniform(-1.5, 1.5, 5)),
            lambda x: far(np.abs(x), 0.5) and far(x**2, 0.1) and far(x**2, 1.0)
            and (x > 0.5).any() and (x < -0.5).any() and (np.abs(x) < 0.5).any(),
        ),
        "cd",
    ),
    Case("matvec", f_matvec, ((2, 3), 3), args_of(uniform(-1, 1, (2, 3)), uniform(-1, 1, 3)), "cs"),
    Case(
        "matvec_wrt_vector",
        f_matvec,
        ((2, 3), 3),
        args_of(uniform(-1, 1, (2, 3)), uniform(-1, 1, 3)),
        "cs",
        wrt=1,
    ),
    Case("vecmat", f_vecmat, ((2, 3), 2), args_of(uniform(-1, 1, (2, 3)), uniform(-1, 1, 2)), "cs"),
    Case("matmat", f_matmat, ((2, 3),), args_of(uniform(-1, 1, (2, 3))), "cs"),
    Case("dot", f_dot, ((2, 3), 3), args_of(uniform(-1, 1, (2, 3)), uniform(-1, 1, 3)), "cs"),
    Case("sum", f_sum, ((2, 3),), args_of(uniform(-1, 1, (2, 3))), "cs"),
    Case("prod", f_prod, ((2, 3),), args_of(uniform(0.5, 1.5, (2, 3))), "cs"),
    Case("mean", f_mean, ((2, 3),), args_of(uniform(-1, 1, (2, 3))), "cs"),
    Case("outer", f_outer, (3,), args_of(uniform(-1, 1, 3)), "cs"),
    Case("reshape", f_reshape, (6,), args_of(uniform(-1, 1, 6)), "cs"),
    Case("transpose", f_transpose, ((2, 3),), args_of(uniform(-1, 1, (2, 3))), "cs"),
    Case("index_1d", f_index_1d, (6,), args_of(uniform(-1, 1, 6)), "cs"),
    Case("shift_reverse", f_shift_reverse, (6,), args_of(uniform(-1, 1, 6)), "cs"),
    Case("index_2d", f_index_2d, ((3, 4),), args_of(uniform(-1, 1, (3, 4))), "cs"),
    Case("np_array", f_np_array, (3,), args_of(uniform(-1, 1, 3)), "cs"),
    Case("stack", f_stack, (4,), args_of(uniform(-1, 1, 4)), "cs"),
    Case("concatenate", f_concatenate, (4,), args_of(uniform(-1, 1, 4)), "cs"),
    Case("norm", f_norm, (3,), args_of(signed(3)), "cd"),
    Case("normalize", f_normalize, (3,), args_of(signed(3)), "cd"),
    Case("inplace_setitem", f_inplace, (4,), args_of(uniform(-1, 1, 4)), "cs"),
    Case("inplace_view", f_inplace_view, (4,), args_of(uniform(-1, 1, 4)), "cs"),
    Case("scalar_extract", f_scalar_extract, (2,), args_of(uniform(-1, 1, 2)), "cs"),
    Case(
        "const_matvec",
        f_const_matvec,
        (3,),
        args_of(uniform(-1, 1, 3)),
        "cs",
        extra_checks=(_const_matvec_exact,),
    ),
    Case("const_vector", f_const_vector, (3,), args_of(uniform(0.5, 2.0, 3)), "cs"),
    Case("tuple_output", f_tuple_output, (3,), args_of(uniform(-1, 1, 3)), "cs"),
    Case("scalar_output", f_scalar_output, (3,), args_of(uniform(-1, 1, 3)), "cs"),
    Case("scalar_input", f_scalar_input, ((),), lambda rng: [rng.uniform(0.2, 2.0)], "cs"),
]

CASE_BY_NAME = {c.name: c for c in CASES}
assert len(CASE_BY_NAME) == len(CASES), "duplicate case names"


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
_BUILT: dict[tuple[str, str], Any] = {}
_ORACLE: dict[str, Any] = {}


def build(case: Case, backend: str):
    """The case's Jacobian for ``backend``, built once per test session."""
    key = (case.name, backend)
    if key not in _BUILT:
        kwargs = {"backend": backend}
        if case.wrt != 0:
            kwargs["wrt"] = case.wrt
        try:
            _BUILT[key] = symjac.jacobian(case.f, *case.shapes, **kwargs)
        except Exception as exc:  # remember the failure, do not retry the build
            _BUILT[key] = exc
    built = _BUILT[key]
    if isinstance(built, Exception):
        raise built
    return built


def oracle(case: Case):
    if case.name not in _ORACLE:
        fn = complex_step_jacobian if case.oracle == "cs" else central_difference_jacobian
        with np.errstate(invalid="ignore"):  # np.where(x > 0, np.sqrt(x), 0.0) at x < 0
            _ORACLE[case.name] = fn(case.f, case.args(), case.wrt)
    return _ORACLE[case.name]


def leaves(x) -> list:
    """The arrays of a (possibly nested) tuple result, in order."""
    if isinstance(x, tuple):
        out = []
        for item in x:
            out.extend(leaves(item))
        return out
    return [x]


def structure(x):
    """Nested-tuple structure, with None at the leaves."""
    if isinstance(x, tuple):
        return tuple(structure(item) for item in x)
    return None


def shape_of(x) -> tuple:
    return tuple(np.shape(x))


def in_shape(case: Case) -> tuple:
    s = case.shapes[case.wrt]
    return (s,) if isinstance(s, int) else tuple(s)


params = pytest.mark.parametrize(
    "case,backend",
    [pytest.param(c, b, id=f"{c.name}-{b}") for c in CASES for b in BACKENDS],
)


# --------------------------------------------------------------------------- #
# tests
# --------------------------------------------------------------------------- #
@params
def test_shape(case: Case, backend: str):
    jac = build(case, backend)
    J = jac(*case.args())
    expected = oracle(case)
    assert structure(J) == structure(expected), f"tuple structure: got {structure(J)}, oracle {structure(expected)}"
    for got, exp in zip(leaves(J), leaves(expected)):
        # the oracle's shape is out_shape + in_shape, by construction
        assert shape_of(got) == shape_of(exp), f"shape {shape_of(got)} != out_shape + in_shape {shape_of(exp)}"
        assert shape_of(got)[len(shape_of(got)) - len(in_shape(case)):] == in_shape(case)
        assert np.asarray(got).dtype == np.float64


@params
def test_matches_oracle(case: Case, backend: str):
    jac = build(case, backend)
    args = case.args()
    J = jac(*args)
    expected = oracle(case)
    assert structure(J) == structure(expected)
    for k, (got, exp) in enumerate(zip(leaves(J), leaves(expected))):
        np.testing.assert_allclose(
            np.asarray(got),
            exp,
            **TOL[case.oracle],
            err_msg=f"{case.name} [{backend}] output {k} at {args!r}",
        )
    for check in case.extra_checks:
        check(J, jac.sparsity, args)


@params
def test_sparsity_covers_oracle(case: Case, backend: str):
    jac = build(case, backend)
    expected = oracle(case)
    sparsity = jac.sparsity
    assert structure(sparsity) == structure(expected), "sparsity must have the same tuple structure as the Jacobian"
    J = jac(*case.args())
    for k, (sp, exp, got) in enumerate(zip(leaves(sparsity), leaves(expected), leaves(J))):
        sp = np.asarray(sp)
        assert sp.dtype == np.bool_
        assert sp.shape == exp.shape
        missing = (np.abs(exp) > NONZERO[case.oracle]) & ~sp
        assert not missing.any(), f"output {k}: non-zeros outside sparsity at {np.argwhere(missing).tolist()}"
        # ... and everything outside the pattern is an exact zero
        assert np.all(np.asarray(got)[~sp] == 0.0), f"output {k}: non-zero value outside the sparsity pattern"


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_backends_agree(case: Case):
    args = case.args()
    J_c = build(case, "cython")(*args)
    J_n = build(case, "numpy")(*args)
    for got_c, got_n in zip(leaves(J_c), leaves(J_n)):
        np.testing.assert_allclose(got_c, got_n, rtol=1e-12, atol=1e-14)


def test_const_matvec_sparsity_is_exact():
    """Zeros of a captured constant matrix are structural zeros of the Jacobian."""
    for backend in BACKENDS:
        jac = build(CASE_BY_NAME["const_matvec"], backend)
        np.testing.assert_array_equal(np.asarray(jac.sparsity), _A != 0)


def test_case_points_are_domain_safe():
    """Guard for the table itself: every point evaluates to finite values in plain numpy."""
    for case in CASES:
        with np.errstate(invalid="ignore"):
            out = case.f(*case.args())
        for leaf in leaves(out):
            assert np.all(np.isfinite(leaf)), case.name
