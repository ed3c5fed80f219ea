"""Calls by keyword (issue 21): every compiled object and method takes its
arguments by position, by name, or both, on both backends, with the same
numbers as the positional call; standalone modules too."""

import numpy as np
import pytest

import symjac
from symjac.examples.lorenz import lorenz

U, P = np.array([1.0, 2.0, 3.0]), np.array([10.0, 28.0, 8 / 3])
KERNELS = ("jacobian", "function", "function_and_jacobian")


def _scalar(x, c):
    return (c[0] * x ** 3).sum() + c[1] * x[0] * x[1]


def _same(a, b):
    for got, want in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        np.testing.assert_array_equal(got, want)


def test_jacobian_and_its_methods_take_keywords(backend):
    jac = symjac.jacobian(lorenz, u=3, p=3, backend=backend, kernels=KERNELS)
    expected = jac(U, P)
    _same(jac(u=U, p=P), expected)
    _same(jac(p=P, u=U), expected)
    _same(jac(U, p=P), expected)
    _same(jac(u=np.stack([U, U]), p=P)[1], expected)  # batch dimensions as usual
    out = np.empty((3, 3))
    assert jac(u=U, p=P, out=out, num_threads=1) is out
    _same(out, expected)
    _same(jac.values(U, p=P), jac.values(U, P))
    _same(jac.function(p=P, u=U), jac.function(U, P))
    _same(jac.function_and_jacobian(u=U, p=P), jac.function_and_jacobian(U, P))
    _same(jac.sparse(u=U, p=P).toarray(), expected)
    np.testing.assert_allclose(jac.linear_operator(u=U, p=P).matvec(np.ones(3)), expected @ np.ones(3), rtol=1e-14)


def test_every_derivative_kind_takes_keywords(backend):
    x, c = np.array([0.5, -1.0, 2.0]), np.array([1.5, 0.3])
    hessian = symjac.hessian(_scalar, x=3, c=2, backend=backend)
    _same(hessian(c=c, x=x), hessian(x, c))
    _same(hessian.values(x=x, c=c), hessian.values(x, c))
    _same(hessian.sparse(x, c=c).toarray(), hessian.sparse(x, c).toarray())
    gradient = symjac.gradient(_scalar, x=3, c=2, backend=backend)
    _same(gradient(x=x, c=c), gradient(x, c))
    jvp = symjac.jvp(lorenz, u=3, p=3, backend=backend)
    vjp = symjac.vjp(lorenz, u=3, p=3, backend=backend)
    v = np.array([0.1, 0.2, -0.3])
    vector_names = jvp.argument_names[-1], vjp.argument_names[-1]
    _same(jvp(U, P, **{vector_names[0]: v}), jvp(U, P, v))
    _same(vjp(**dict(zip(vjp.argument_names, (U, P, v)))), vjp(U, P, v))


def test_positional_calls_still_take_no_unknown_keywords(backend):
    jac = symjac.jacobian(lorenz, u=3, p=3, backend=backend)
    with pytest.raises(TypeError, match="unexpected keyword argument 'U'; its arguments are u, p"):
        jac(U=U, p=P)


def test_torch_objects_take_keywords():
    import torch
    import symjac.torch

    tj = symjac.torch.jacobian(lorenz, u=3, p=3, backend="numpy")
    u, p = torch.tensor(U), torch.tensor(P)
    assert torch.equal(tj(p=p, u=u), tj(u, p))
    with pytest.raises(symjac.ArgumentError, match="its arguments are u, p"):
        tj(u, q=p)
