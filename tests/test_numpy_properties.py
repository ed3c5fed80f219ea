"""Property test for issue 20: random compositions of the newly supported numpy
functions with older ones, checked for values (numpy on floats), first
derivatives (symjac.jacobian) and second derivatives (symjac.hessian) against
central differences of the original function.

Kinks and jumps (max, sort, %, floor ...) make differences meaningless near
them; an example whose difference quotients with steps h and h/2 disagree is
near one and is rejected (``assume``), never loosened into a pass.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import symjac
from oracles import central_difference_jacobian

N = 4
_W = np.array([0.7, -1.3, 0.4, 1.1])

# (name, layer): each layer maps a traced (or float) vector of shape (4,) to shape (4,)
NEW = [
    ("sort", lambda y: np.sort(y)),
    ("shift_by_max", lambda y: y - np.max(y)),
    ("times_min", lambda y: y * np.min(y)),
    ("max_pairs", lambda y: np.repeat(np.max(y.reshape(2, 2), axis=1), 2)),
    ("remainder", lambda y: np.remainder(y, 1.7)),
    ("mod_negative", lambda y: (2.5 * y) % -1.9),
    ("fmod", lambda y: np.fmod(y, 1.3)),
    ("var", lambda y: np.var(y) + y),
    ("std_ddof", lambda y: np.std(y, ddof=1) * y),
    ("logaddexp2", lambda y: np.logaddexp2(y, y[::-1])),
    ("floor", lambda y: np.floor(y) + y),
    ("rint", lambda y: 0.5 * np.rint(y) + y),
    ("nan_to_num", lambda y: np.nan_to_num(y)),
    ("real_imag", lambda y: np.real(y) + np.imag(y)),
    ("partition", lambda y: np.partition(y, 1)),
    ("linspace", lambda y: np.linspace(y[0], y[1], N)),
    ("gradient", lambda y: np.gradient(y, 0.7)),
    ("select", lambda y: np.select([y > 0.2], [y ** 2], y)),
    ("median", lambda y: np.median(y) * y),
    ("r_", lambda y: np.r_[y[:2], y[2:]] * 1.5),
    ("mean_list", lambda y: np.mean([y[0], y[1]]) + y),
    ("maximum_reduce", lambda y: y + np.maximum.reduce(y)),
]
OLD = [
    ("sin", np.sin),
    ("tanh", np.tanh),
    ("square", lambda y: y ** 2 * 0.5),
    ("affine", lambda y: y * 1.3 + 0.2),
    ("exp", lambda y: np.exp(0.3 * y)),
    ("cumsum", np.cumsum),
    ("matmul", lambda y: np.array([[0.5, -0.2, 0.1, 0.3], [0.2, 0.9, -0.4, 0.0],
                                   [-0.3, 0.1, 0.7, 0.2], [0.0, 0.4, 0.2, -0.6]]) @ y),
    ("maximum", lambda y: np.maximum(y, 0.1 * y)),
]


def _compose(layers):
    def f(x):
        y = x
        for _, layer in layers:
            y = layer(y)
        return np.sum(y * _W)

    return f


def _stable_difference(f, x, h):
    """Central differences with steps h and h/2, or None where they disagree (a kink is near)."""
    a = central_difference_jacobian(f, [x], 0, h=h)
    b = central_difference_jacobian(f, [x], 0, h=h / 2)
    scale = max(1.0, float(np.max(np.abs(a))))
    if not (np.all(np.isfinite(a)) and np.allclose(a, b, rtol=1e-4, atol=1e-4 * scale)):
        return None
    return b


def _stable_derivatives(f, x):
    """First and second central differences of ``f`` at ``x``; the example is
    rejected where either is unstable (near a kink, or a repeated eigen- or
    singular value, where the derivative is undefined)."""
    gradient = _stable_difference(f, x, 1e-6)
    assume(gradient is not None)
    hessian = _stable_difference(lambda y: central_difference_jacobian(f, [y], 0, h=1e-5), x, 1e-4)
    assume(hessian is not None)
    return gradient, hessian


@settings(max_examples=30, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(
    new=st.lists(st.sampled_from(NEW), min_size=1, max_size=2),
    old=st.lists(st.sampled_from(OLD), min_size=0, max_size=2),
    order=st.randoms(use_true_random=False),
    x=st.lists(st.floats(-2.0, 2.0, allow_nan=False), min_size=N, max_size=N),
)
def test_compositions_values_and_derivatives(new, old, order, x):
    layers = list(new) + list(old)
    order.shuffle(layers)
    f = _compose(layers)
    x = np.array(x) + np.array([0.0, 0.31, -0.57, 0.83])
    with np.errstate(all="ignore"):
        value = f(x)
        # std/var-like layers are not differentiable where all their inputs
        # are equal: keep every intermediate vector spread out
        y = x
        for _, layer in layers:
            assume(np.ptp(y) > 0.05)
            y = layer(y)
    assume(np.isfinite(value) and abs(value) < 1e6)
    gradient, hessian = _stable_derivatives(f, x)

    jac = symjac.jacobian(f, x=N, backend="numpy", kernels=("jacobian", "function"))
    np.testing.assert_allclose(jac.function(x), value, rtol=1e-10, atol=1e-10)
    scale = max(1.0, float(np.max(np.abs(gradient))))
    np.testing.assert_allclose(jac(x), gradient, rtol=1e-5, atol=1e-5 * scale)
    H = symjac.hessian(f, x=N, backend="numpy")(x)
    scale = max(1.0, float(np.max(np.abs(hessian))))
    np.testing.assert_allclose(H, hessian, rtol=1e-3, atol=1e-3 * scale)


def _matrix(y):
    """A well-conditioned 2x2 matrix from a traced (4,) vector."""
    return y.reshape(2, 2) + 3.0 * np.eye(2)


def _spd(y):
    M = y.reshape(2, 2)
    return M @ M.T + np.eye(2)


# np.linalg layers, (4,) -> (4,): the array form only (the scalar form names it)
LINALG = [
    ("inv", lambda y: np.linalg.inv(_matrix(y)).ravel()),
    ("solve", lambda y: np.linalg.solve(_matrix(y), y.reshape(2, 2)).ravel()),
    ("det", lambda y: np.linalg.det(_matrix(y)) * y),
    ("slogdet", lambda y: np.linalg.slogdet(_matrix(y))[1] + y),
    ("cholesky", lambda y: np.linalg.cholesky(_spd(y)).ravel()),
    ("eigvalsh", lambda y: np.repeat(np.linalg.eigvalsh(_spd(y)), 2)),
    ("eigh_vectors", lambda y: np.abs(np.linalg.eigh(_spd(y))[1]).ravel()),
    ("svd_values", lambda y: np.concatenate([np.linalg.svd(_matrix(y), compute_uv=False), y[:2]])),
    ("pinv", lambda y: np.linalg.pinv(_matrix(y)).ravel()),
    ("nuclear_norm", lambda y: np.linalg.norm(_matrix(y), "nuc") * y),
    ("p_norm", lambda y: np.linalg.norm(y, 3) + y),
]
ARRAY_OLD = [layer for layer in OLD if layer[0] != "cumsum"]  # no cumsum in the array form


@settings(max_examples=25, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(
    new=st.lists(st.sampled_from(LINALG), min_size=1, max_size=2),
    old=st.lists(st.sampled_from(ARRAY_OLD), min_size=0, max_size=2),
    order=st.randoms(use_true_random=False),
    x=st.lists(st.floats(-1.0, 1.0, allow_nan=False), min_size=N, max_size=N),
)
def test_linalg_compositions_in_the_array_form(new, old, order, x):
    layers = list(new) + list(old)
    order.shuffle(layers)
    f = _compose(layers)
    x = 0.5 * np.array(x) + np.array([0.0, 0.31, -0.57, 0.83])
    with np.errstate(all="ignore"):
        value = f(x)
    assume(np.isfinite(value) and abs(value) < 1e6)
    gradient, hessian = _stable_derivatives(f, x)

    jac = symjac.jacobian(f, x=N, form="array")
    scale = max(1.0, float(np.max(np.abs(gradient))))
    np.testing.assert_allclose(jac(x), gradient, rtol=1e-5, atol=1e-5 * scale)
    H = symjac.hessian(f, x=N, form="array")(x)
    scale = max(1.0, float(np.max(np.abs(hessian))))
    np.testing.assert_allclose(H, hessian, rtol=1e-3, atol=1e-3 * scale)
    np.testing.assert_allclose(symjac.gradient(f, x=N, form="array")(x), gradient.ravel(), rtol=1e-5,
                               atol=1e-5 * scale)
