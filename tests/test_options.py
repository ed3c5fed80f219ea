"""One options object: every compiled object keeps it, every derivative built
from one inherits it (jvp/vjp behind linear_operator, the torch backward)."""

import pickle

import numpy as np
import pytest
import torch

import symjac
import symjac.torch
from symjac import Options
from symjac.examples.lorenz import lorenz


def test_options_are_kept_and_checked():
    jac = symjac.jacobian(lorenz, u=3, p=3, backend="numpy", vector_math=False, native=False)
    assert jac.options == Options(backend="numpy", form="scalar", vector_math=False, native=False)
    assert pickle.loads(pickle.dumps(jac)).options == jac.options
    with pytest.raises(ValueError, match="form must be one of"):
        symjac.jacobian(lorenz, u=3, p=3, form="tensor")
    with pytest.raises(TypeError, match="flags must be a sequence of strings"):
        symjac.jacobian(lorenz, u=3, p=3, flags="-O2")


def test_linear_operator_products_inherit_the_jacobians_options():
    jac = symjac.jacobian(lorenz, u=3, p=3, backend="numpy", vector_math=False, flags=("-O1",))
    u, p = np.array([1.0, 2.0, 3.0]), np.array([10.0, 28.0, 8 / 3])
    operator = jac.linear_operator(u, p)
    jvp, vjp = jac.__dict__["_products"]
    for product in (jvp, vjp):
        assert product.options == jac.options
        assert product.options.vector_math is False and product.options.flags == ("-O1",)
    J = jac(u, p)
    v = np.array([0.3, -1.0, 2.0])
    np.testing.assert_allclose(operator.matvec(v), J @ v, rtol=1e-14)
    np.testing.assert_allclose(operator.rmatvec(v), v @ J, rtol=1e-14)


def _decoder(h, W):
    return np.tanh(W @ h)


def test_torch_backward_inherits_options_and_reports_its_build(capfd):
    tj = symjac.torch.jacobian(_decoder, h=2, W=(3, 2), backend="numpy", vector_math=False, verbose=True)
    err = capfd.readouterr().err
    assert tj.compiled.options.verbose and tj.backward.options == tj.compiled.options
    # two builds reported: the Jacobian's and its backward's (a vector-Jacobian product)
    assert err.count("traced") >= 2, err
    h = torch.randn(2, dtype=torch.float64, requires_grad=True)
    W = torch.randn(3, 2, dtype=torch.float64)
    J = tj(h, W)
    (J ** 2).sum().backward()
    assert h.grad is not None and torch.isfinite(h.grad).all()


def test_silent_builds_report_nothing(capfd):
    symjac.torch.jacobian(_decoder, h=2, W=(3, 2), backend="numpy", verbose=False)
    assert capfd.readouterr().err == ""
