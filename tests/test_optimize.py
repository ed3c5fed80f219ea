"""symjac's derivatives inside real scipy solves.

- trust-constr with 500 variables, given the sparse Hessian of a Lagrangian
  (σ∇²f + Σλᵢ∇²gᵢ, σ and λ runtime parameters), checked against the KKT
  conditions (an oracle independent of the solver and of symjac's Hessian);
- cyipopt's triplet layout: hessianstructure()/hessian() from indices()/values();
- a Newton–Krylov solve of the 2-D Brusselator steady state with 10,368
  unknowns, whose linear systems gmres solves through jac.linear_operator.
"""

import numpy as np
import scipy.optimize
import scipy.sparse
import scipy.sparse.linalg

import symjac
from symjac.examples.brusselator2d import P_DEFAULT, make_brusselator_2d

N = 500  # variables
M = N // 2  # constraints


def objective(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def constraints(x):
    """Pairs of variables inside discs: x[2i]^2 + x[2i+1]^2 <= 1.5 (some active at the optimum)."""
    return x[0::2] ** 2 + x[1::2] ** 2


def lagrangian(x, sigma, lam):
    return sigma * objective(x) + np.sum(lam * constraints(x))


def test_trust_constr_with_the_sparse_hessian_of_a_lagrangian():
    H = symjac.hessian(lagrangian, x=N, sigma=(), lam=M, wrt="x")
    g = symjac.gradient(objective, x=N)
    J = symjac.jacobian(constraints, x=N)
    rows, cols = H.indices()
    assert len(rows) == 2 * N - 1  # tridiagonal lower triangle: tight, and the same for any σ, λ
    nonzero_lam = np.full(M, 0.5)

    def hess_objective(x):
        return H.sparse(x, 1.0, np.zeros(M))

    def hess_constraints(x, v):
        return H.sparse(x, 0.0, v)

    limit = scipy.optimize.NonlinearConstraint(constraints, -np.inf, 1.5, jac=lambda x: J.sparse(x),
                                               hess=hess_constraints)
    x0 = np.full(N, 0.3)
    result = scipy.optimize.minimize(objective, x0, jac=g, hess=hess_objective, method="trust-constr",
                                     constraints=[limit], options={"gtol": 1e-9, "xtol": 1e-12, "maxiter": 3000})
    assert result.success, result.message
    assert result.constr_violation < 1e-8
    x, lam = result.x, result.v[0]
    # KKT: stationarity of the Lagrangian with the solver's multipliers, by the compiled gradient
    stationarity = g(x) + J.sparse(x).T @ lam
    assert np.abs(stationarity).max() < 1e-6
    # the Hessian the solver used is the Hessian of the Lagrangian (σ = 1, λ = multipliers)
    full = H.sparse(x, 1.0, lam).toarray()
    numeric = np.array([(g(x + 1e-6 * e) + J.sparse(x + 1e-6 * e).T @ lam
                         - g(x - 1e-6 * e) - J.sparse(x - 1e-6 * e).T @ lam) / 2e-6 for e in np.eye(N)[:20]])
    np.testing.assert_allclose(full[:20], numeric, rtol=1e-6, atol=1e-4)
    # the other KKT conditions: dual feasibility and complementary slackness
    assert np.all(lam >= -1e-8)
    assert np.abs(lam * (constraints(x) - 1.5)).max() < 1e-6
    assert (constraints(x) > 1.5 - 1e-6).any() and (constraints(x) < 1.5 - 1e-3).any()  # some active, some not
    assert H.values(x, 1.0, nonzero_lam).shape == (len(rows),)


def test_cyipopt_triplet_layout():
    """hessianstructure() = H.indices(), hessian(x, lam, sigma) = H.values(x, sigma, lam):
    the lower triangle, row by row, the values in the same order."""
    H = symjac.hessian(lagrangian, x=N, sigma=(), lam=M, wrt="x", backend="numpy")
    rows, cols = H.indices()
    assert rows.dtype.kind == "i" and np.all(rows >= cols)
    assert np.all(np.diff(rows * N + cols) > 0)  # strictly increasing: row by row, no duplicates
    rng = np.random.default_rng(5)
    x, lam, sigma = rng.normal(size=N), rng.uniform(size=M), 0.7
    values = H.values(x, sigma, lam)
    lower = scipy.sparse.coo_array((values, (rows, cols)), shape=(N, N)).toarray()
    full = H(x, sigma, lam)
    np.testing.assert_array_equal(np.tril(full), lower)
    np.testing.assert_array_equal(full, full.T)


def test_newton_krylov_on_a_2d_reaction_diffusion_system():
    m = 72
    f = make_brusselator_2d(m)
    n = 2 * m * m
    assert n >= 10_000
    jac = symjac.jacobian(f, u=n, p=3)
    A, B = P_DEFAULT[0], P_DEFAULT[1]
    steady = np.concatenate([np.full(m * m, A), np.full(m * m, B / A)])
    rng = np.random.default_rng(11)
    u = steady * (1.0 + 0.05 * rng.standard_normal(n))
    residuals = []
    for _ in range(20):
        r = f(u, P_DEFAULT)
        residuals.append(np.abs(r).max())
        if residuals[-1] < 1e-9:
            break
        operator = jac.linear_operator(u, P_DEFAULT)
        assert isinstance(operator, scipy.sparse.linalg.LinearOperator) and operator.shape == (n, n)
        step, info = scipy.sparse.linalg.gmres(operator, -r, rtol=1e-10, restart=200, maxiter=50)
        assert info == 0
        u = u + step
    assert residuals[-1] < 1e-9, residuals
    assert len(residuals) <= 8  # Newton: quadratic convergence
    np.testing.assert_allclose(u, steady, rtol=1e-8)
    # the operator agrees with the sparse Jacobian at the same point, forwards and transposed
    v = rng.standard_normal(n)
    operator = jac.linear_operator(u, P_DEFAULT)
    sparse = jac.sparse(u, P_DEFAULT)
    scale = 1e-12 * 6 * np.abs(sparse.data).max() * np.abs(v).max()  # rounding of sums of 6 products
    np.testing.assert_allclose(operator.matvec(v), sparse @ v, rtol=1e-12, atol=scale)
    np.testing.assert_allclose(operator.rmatvec(v), sparse.T @ v, rtol=1e-12, atol=scale)
