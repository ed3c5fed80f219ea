"""The large example models at small sizes, numpy backend only (no compiler: fast).

Each model goes through ``symjac.jacobian(..., backend="numpy")`` and is
compared with an independent finite-difference Jacobian of the model itself
(complex step where the model is complex-analytic, else central differences).
The big sizes are exercised by ``benchmarks/scaling.py``, not here.
"""

import re

import numpy as np
import pytest

import symjac
from symjac.examples.brusselator2d import P_DEFAULT as BRUSS_P
from symjac.examples.brusselator2d import initial_value as bruss_initial
from symjac.examples.brusselator2d import make_brusselator_2d, nonzeros
from symjac.examples.mlp import mlp, random_weights
from symjac.examples.pendulum import default_parameters, make_pendulum_residual, numeric_residual, pendulum_equations
from symjac.examples.reaction_network import initial_value as network_initial
from symjac.examples.reaction_network import make_mass_action_network

from oracles import central_difference_jacobian, complex_step_jacobian

RTOL = 1e-12  # complex step is exact to rounding
FD_RTOL = 1e-6  # central differences


def close(actual, expected, rtol):
    scale = max(np.max(np.abs(expected)), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


def test_brusselator_2d_m3():
    m = 3
    f = make_brusselator_2d(m)
    jac = symjac.jacobian(f, u=2 * m * m, p=3, backend="numpy")
    u0 = bruss_initial(m) + np.random.default_rng(1).uniform(0.1, 0.5, 2 * m * m)
    J = jac(u0, BRUSS_P)
    assert J.shape == (2 * m * m, 2 * m * m)
    close(J, complex_step_jacobian(f, (u0, BRUSS_P), 0), RTOL)
    assert jac.sparsity.sum() == nonzeros(m) == 12 * m * m
    # batch of two points broadcasts like a gufunc
    U = np.stack([u0, 2 * u0])
    assert np.allclose(jac(U, BRUSS_P)[1], complex_step_jacobian(f, (2 * u0, BRUSS_P), 0))


def test_brusselator_2d_periodic_stencil():
    """Every cell couples to its four periodic neighbours (m=4: all distinct)."""
    m = 4
    f = make_brusselator_2d(m)
    traced = symjac.trace(f, u=2 * m * m, p=3)
    corner = traced.outputs[0][0]  # du at cell (0, 0)
    names = {str(s) for s in corner.free_symbols}
    expected = {f"u[{k}]" for k in (0, 1, 3, 4, 12)} | {f"u[{m * m}]"} | {"p[0]", "p[1]", "p[2]"}
    assert names == expected


def test_mass_action_network_10_reactions():
    f, k = make_mass_action_network(6, 10, seed=3)
    c0 = network_initial(6, seed=3)
    jac = symjac.jacobian(f, c=6, k=10, backend="numpy")
    close(jac(c0, k), complex_step_jacobian(f, (c0, k), 0), RTOL)
    # w.r.t. the rate constants too: dc/dt is linear in k, d/dk = S * monomials
    jk = symjac.jacobian(f, c=6, k=10, wrt="k", backend="numpy")
    close(jk(c0, k), complex_step_jacobian(f, (c0, k), 1), RTOL)


def test_mass_action_network_is_reproducible_and_conserves_structure():
    f1, k1 = make_mass_action_network(8, 12, seed=7)
    f2, k2 = make_mass_action_network(8, 12, seed=7)
    f3, _ = make_mass_action_network(8, 12, seed=8)
    assert np.array_equal(f1.stoichiometry, f2.stoichiometry) and np.array_equal(k1, k2)
    assert not np.array_equal(f1.stoichiometry, f3.stoichiometry)
    reactants = f1.reactants
    assert reactants.shape == (12, 2) and np.all(reactants[:, 0] >= 0)  # 1 or 2 reactants each
    assert np.all(np.abs(f1.stoichiometry).sum(axis=0) > 0)  # every reaction changes something
    # the vectorised model agrees with a per-reaction loop
    c = network_initial(8, seed=7)
    rates = np.array([k1[r] * np.prod([c[s] for s in reactants[r] if s >= 0]) for r in range(12)])
    np.testing.assert_allclose(f1(c, k1), f1.stoichiometry @ rates, rtol=1e-14)


def test_pendulum_n2_residual_and_jacobians():
    n = 2
    residual = make_pendulum_residual(n)
    reference = numeric_residual(n)
    jac = symjac.jacobian(residual, n, n, n, 2 * n + 1, wrt=("q", "u", "ud"), backend="numpy")
    rng = np.random.default_rng(0)
    q, u, ud = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    p = default_parameters(n)
    J_q, J_u, J_ud = jac(q, u, ud, p)
    for position, J in enumerate((J_q, J_u, J_ud)):
        assert J.shape == (n, n)
        close(J, central_difference_jacobian(reference, (q, u, ud, p), position), FD_RTOL)
    # d residual / d ud is the mass matrix, symmetric positive definite
    assert np.allclose(J_ud, J_ud.T) and np.all(np.linalg.eigvalsh(J_ud) > 0)


def test_pendulum_n2_physics():
    """Hanging at rest is an equilibrium; the 1-link case is m l^2 q'' = -m g l sin q."""
    q, u, ud, p, M, F, seconds = pendulum_equations(1)
    assert seconds >= 0
    one = numeric_residual(1)
    m, l, g = 2.0, 0.5, 9.81
    for angle in (0.0, 0.3, -1.2):
        value = one([angle], [0.7], [0.0], [m, l, g])
        np.testing.assert_allclose(value, [m * g * l * np.sin(angle)], rtol=1e-12)
    two = numeric_residual(2)
    np.testing.assert_allclose(two(np.zeros(2), np.zeros(2), np.zeros(2), default_parameters(2)), 0.0, atol=1e-14)


def test_mlp_4_5_3():
    weights = random_weights(4, 5, 3, seed=2)
    x0 = np.random.default_rng(2).normal(size=4)
    shapes = dict(x=4, W1=(5, 4), b1=5, W2=(3, 5), b2=3)
    jac = symjac.jacobian(mlp, **shapes, backend="numpy")
    J = jac(x0, *weights)
    assert J.shape == (3, 4)
    close(J, complex_step_jacobian(mlp, (x0, *weights), 0), RTOL)


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_constructors_reject_bad_sizes(bad):
    with pytest.raises(ValueError, match=f"positive int grid size, got {re.escape(repr(bad))}"):
        make_brusselator_2d(bad)
    with pytest.raises(ValueError, match=f"positive int n_species, got {re.escape(repr(bad))}"):
        make_mass_action_network(bad, 3)
    with pytest.raises(ValueError, match=f"positive int n_reactions, got {re.escape(repr(bad))}"):
        make_mass_action_network(3, bad)
