"""Hessians, gradients, J v and uᵀJ on both backends, against independent oracles.

Oracles: complex-step differentiation of the exact gradient (Hessians),
complex step of the numpy function (gradients), the dense Jacobian (J v and
uᵀJ), central differences of the compiled Jacobian kernel (Hessians).
"""

import pickle

import numpy as np
import pytest
import scipy.sparse

import symjac
from oracles import central_difference_jacobian, complex_step_jacobian

RNG_SEED = 20261130


def lennard_jones(x):
    """Energy of 4 atoms in 3-D (x: 12 coordinates): dense Hessian."""
    p = x.reshape(4, 3)
    energy = 0.0
    for i in range(4):
        for j in range(i):
            r2 = np.sum((p[i] - p[j]) ** 2)
            energy = energy + 4.0 * (r2 ** -6 - r2 ** -3)
    return energy


def lennard_jones_gradient(x):  # analytic, complex-safe: the Hessian oracle differentiates it
    p = x.reshape(4, 3)
    g = np.zeros_like(p)
    for i in range(4):
        for j in range(i):
            d = p[i] - p[j]
            r2 = np.sum(d * d)
            dE_dr2 = 4.0 * (-6.0 * r2 ** -7 + 3.0 * r2 ** -4)
            g[i] = g[i] + 2.0 * dE_dr2 * d
            g[j] = g[j] - 2.0 * dE_dr2 * d
    return g.reshape(-1)


def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rosenbrock_gradient(x):
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2.0 * (1.0 - x[:-1])
    g[1:] = g[1:] + 200.0 * (x[1:] - x[:-1] ** 2)
    return g


def mixed(x, p):
    """Vector output with a parameter: Hessian S + x + x."""
    return np.array([np.exp(p[0] * x[0]) * x[1], np.sin(x[0] * x[2]) + p[1] * x[1] ** 3])


def lattice(rng, atoms=4):
    grid = np.array([[0, 0, 0], [1.1, 0, 0], [0, 1.1, 0], [0, 0, 1.1]])[:atoms]
    return (grid + 0.05 * rng.normal(size=grid.shape)).reshape(-1)


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(RNG_SEED)


_BUILT = {}


def built(what, f, backend, **shapes):
    key = (what, f.__name__, backend, tuple(sorted(shapes.items())))
    if key not in _BUILT:
        _BUILT[key] = getattr(symjac, what)(f, backend=backend, **shapes)
    return _BUILT[key]


def test_hessian_of_scalar_against_complex_step_of_exact_gradient(backend, rng):
    H = built("hessian", lennard_jones, backend, x=12)
    x = lattice(rng)
    expected = complex_step_jacobian(lennard_jones_gradient, [x], 0)
    np.testing.assert_allclose(H(x), expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    assert H(x).shape == (12, 12)
    np.testing.assert_array_equal(H(x), H(x).T)  # symmetry is exact: one expression per pair


def test_hessian_batched_and_out(backend, rng):
    H = built("hessian", lennard_jones, backend, x=12)
    X = np.stack([lattice(rng) for _ in range(5)]).reshape(5, 12)
    out = np.empty((5, 12, 12))
    result = H(X, out=out)
    assert result is out
    for k in range(5):
        np.testing.assert_allclose(out[k], H(X[k]), rtol=1e-14, atol=0)


def test_hessian_against_differences_of_the_jacobian_kernel(backend, rng):
    H = built("hessian", mixed, backend, x=3, p=2)
    grad_kernel = built("jacobian", mixed, backend, x=3, p=2)
    x, p = rng.normal(size=3), rng.normal(size=2)
    expected = central_difference_jacobian(lambda x_, p_: grad_kernel(x_, p_), [x, p], 0, h=1e-5)
    result = H(x, p)
    assert result.shape == (2, 3, 3)
    np.testing.assert_allclose(result, expected, rtol=1e-7, atol=1e-7)


def test_sparse_hessian_values_indices_and_full_matrix(backend, rng):
    n = 30
    H = built("hessian", rosenbrock, backend, x=n)
    x = rng.normal(size=n)
    dense = complex_step_jacobian(rosenbrock_gradient, [x], 0)
    rows, cols = H.indices()
    assert np.all(rows >= cols)
    assert list(zip(rows, cols)) == sorted(zip(rows, cols))  # row by row: cyipopt's layout
    assert len(rows) == 2 * n - 1  # tridiagonal: the pattern is tight
    values = H.values(x)
    np.testing.assert_allclose(values, dense[rows, cols], rtol=1e-9, atol=1e-9)
    full = H.sparse(x)
    assert isinstance(full, scipy.sparse.sparray)
    np.testing.assert_allclose(full.toarray(), dense, rtol=1e-9, atol=1e-9)
    pattern = H.sparsity
    np.testing.assert_array_equal(pattern, pattern.T)
    np.testing.assert_array_equal(pattern, dense != 0)
    assert H.values(np.stack([x, x])).shape == (2, len(rows))


def test_hessian_with_tuple_wrt_gives_nested_blocks(backend, rng):
    def f(x, y):
        return x[0] * np.sin(y[0]) + x[1] ** 2 * y[1] + np.exp(y[0] * y[1])

    H = symjac.hessian(f, x=2, y=2, wrt=("x", "y"), backend=backend)
    x, y = rng.normal(size=2), rng.normal(size=2)
    blocks = H(x, y)
    assert len(blocks) == 2 and all(len(row) == 2 for row in blocks)

    def full_gradient(z):
        x_, y_ = z[:2], z[2:]
        return np.array([np.sin(y_[0]), 2 * x_[1] * y_[1],
                         x_[0] * np.cos(y_[0]) + y_[1] * np.exp(y_[0] * y_[1]),
                         x_[1] ** 2 + y_[0] * np.exp(y_[0] * y_[1])])

    expected = complex_step_jacobian(full_gradient, [np.concatenate([x, y])], 0)
    np.testing.assert_allclose(np.block([[blocks[0][0], blocks[0][1]], [blocks[1][0], blocks[1][1]]]),
                               expected, rtol=1e-12, atol=1e-12)
    rows, cols = H.indices()
    np.testing.assert_allclose(H.values(x, y), expected[rows, cols], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(H.sparsity[0][1], H.sparsity[1][0].T)


@pytest.mark.parametrize("lanes", [False, True], ids=["point", "lanes"])
@pytest.mark.parametrize("chunks", [False, True], ids=["one-body", "chunked"])
def test_hessian_upper_triangle_is_mirrored_on_every_driver_path(backend, rng, monkeypatch, lanes, chunks):
    """Kernels compute the lower triangle; the dense drivers copy the upper
    one (across blocks too, for a tuple wrt). Every driver layout: point by
    point or in SIMD lanes, one body or chunk functions in several files;
    a batch that is no multiple of the lane count; values against complex
    step of the exact gradient, symmetry exact."""
    from symjac.emit import c_backend, simplify

    monkeypatch.setattr(c_backend, "runs_in_lanes", lambda program, elements: lanes)
    if chunks:
        monkeypatch.setattr(simplify, "CHUNK_THRESHOLD", 10)
    scale = 4.0 + 0.5 * lanes + 0.25 * chunks  # one function per layout: no warm start from another layout

    def energy(a, b):
        return lennard_jones(np.concatenate([a, b])) * scale / 4.0

    H = symjac.hessian(energy, a=6, b=6, wrt=("a", "b"), backend=backend)
    Z = np.stack([lattice(rng) for _ in range(7)])
    blocks = H(Z[:, :6], Z[:, 6:])
    full = np.block([[blocks[0][0], blocks[0][1]], [blocks[1][0], blocks[1][1]]])
    assert full.shape == (7, 12, 12)
    rows, cols = H.indices()
    values = H.values(Z[:, :6], Z[:, 6:])
    for k in range(7):
        expected = complex_step_jacobian(lambda z: lennard_jones_gradient(z) * scale / 4.0, [Z[k]], 0)
        np.testing.assert_allclose(full[k], expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
        np.testing.assert_array_equal(full[k], full[k].T)
        np.testing.assert_array_equal(values[k], full[k][rows, cols])


def test_gradient_by_reverse_mode_against_complex_step(backend, rng):
    g = built("gradient", rosenbrock, backend, x=50)
    x = rng.normal(size=50)
    np.testing.assert_allclose(g(x), complex_step_jacobian(rosenbrock, [x], 0), rtol=1e-12, atol=1e-12)
    X = rng.normal(size=(4, 50))
    np.testing.assert_allclose(g(X)[2], g(X[2]), rtol=1e-15, atol=0)


def test_gradient_with_parameters_and_tuple_wrt(backend, rng):
    def energy(x, k):
        return np.sum(k * np.tanh(x) ** 2) + x[0] * k[1]

    g = symjac.gradient(energy, x=3, k=3, wrt=("x", "k"), backend=backend)
    x, k = rng.normal(size=3), rng.normal(size=3)
    gx, gk = g(x, k)
    np.testing.assert_allclose(gx, complex_step_jacobian(energy, [x, k], 0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gk, complex_step_jacobian(energy, [x, k], 1), rtol=1e-12, atol=1e-12)


def test_jvp_and_vjp_against_the_dense_jacobian(backend, rng):
    def f(y, k):
        return np.array([-k[0] * y[0] + k[2] * y[1] * y[2], np.tanh(y[0] * y[1]) * k[1], y[2] ** 3])

    J = built("jacobian", f, backend, y=3, k=3)
    jvp = built("jvp", f, backend, y=3, k=3)
    vjp = built("vjp", f, backend, y=3, k=3)
    Y, k = rng.normal(size=(6, 3)), rng.normal(size=3)
    V, U = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    dense = J(Y, k)
    np.testing.assert_allclose(jvp(Y, k, V), np.einsum("nij,nj->ni", dense, V), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(vjp(Y, k, U), np.einsum("ni,nij->nj", U, dense), rtol=1e-12, atol=1e-12)
    assert jvp.argument_names == ("y", "k", "v") and vjp.argument_names == ("y", "k", "u")


def test_linear_operator_matvec_and_rmatvec(rng):
    def f(y, k):
        return np.array([k[0] * y[0] * y[1], np.sin(y[1]) + y[2], y[0] ** 2 * k[1]])

    J = symjac.jacobian(f, y=3, k=2, backend="numpy")
    y, k = rng.normal(size=3), rng.normal(size=2)
    operator = J.linear_operator(y, k)
    v, u = rng.normal(size=3), rng.normal(size=3)
    np.testing.assert_allclose(operator.matvec(v), J(y, k) @ v, rtol=1e-13)
    np.testing.assert_allclose(operator.rmatvec(u), u @ J(y, k), rtol=1e-13)
    with pytest.raises(ValueError, match="one point"):
        J.linear_operator(np.ones((2, 3)), k)


def test_second_derivative_in_parameters_through_the_jacobian(backend, rng):
    def rates(y, k):
        return np.array([-k[0] * y[0] + k[2] * y[1] * y[2], k[0] * y[0] - k[1] * y[1] ** 2])

    J = built("jacobian", rates, backend, y=3, k=3)
    dJ_dk = symjac.jacobian(J, wrt="k", backend=backend)
    y, k = rng.normal(size=3), rng.normal(size=3)
    expected = central_difference_jacobian(J, [y, k], 1, h=1e-6)  # J is linear in k: differences are exact
    np.testing.assert_allclose(dJ_dk(y, k), expected, rtol=1e-7, atol=1e-8)
    assert dJ_dk(y, k).shape == (2, 3, 3)


def test_derivatives_pickle_and_work_after(backend, rng):
    H = built("hessian", lennard_jones, backend, x=12)
    clone = pickle.loads(pickle.dumps(H))
    x = lattice(rng)
    np.testing.assert_array_equal(clone(x), H(x))
    assert type(clone).__name__ == "Hessian" and isinstance(clone, symjac.Hessian)
    with pytest.raises(ValueError, match="unpickled"):
        symjac.jacobian(clone)


def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(symjac.ShapeError, match="one scalar output"):
        symjac.gradient(lambda x: x * 2, x=3, backend="numpy")
    jvp = symjac.jvp(lambda x: np.sin(x), x=3, backend="numpy")
    with pytest.raises(ValueError, match="'v' must have shape"):
        jvp(np.ones(3), np.ones(4))
    with pytest.raises(symjac.ShapeError, match="twice"):
        symjac.hessian(lambda x, k: np.sum(x * k), x=2, k=2, wrt=("k", "k"), backend="numpy")
    with pytest.raises(symjac.ShapeError, match="give none"):
        symjac.jacobian(symjac.trace(lambda x: x, 2), 2, backend="numpy")


def test_hessian_of_functions_of_sums_with_minus_signs(backend, rng):
    """Functions whose sympy evaluation pulls a minus sign out of their
    argument (tanh, sin, sinh), of sums with more negative terms than
    positive, under the second derivative's construction without
    distributing numbers over sums."""
    def f(x):
        return (np.tanh(-x[0] - 2.0 * x[1] + x[2] - x[3]) + np.sin(-x[0] - x[1]) * x[2]
                + np.sinh(x[2] - x[0] - x[1] - 0.5 * x[3]) ** 2 + np.exp(-x[0] - x[1] - x[2]) * np.cosh(x[3] - x[1]))

    def gradient(x):
        a = -x[0] - 2.0 * x[1] + x[2] - x[3]
        b = -x[0] - x[1]
        c = x[2] - x[0] - x[1] - 0.5 * x[3]
        e = np.exp(-x[0] - x[1] - x[2])
        ch, sh = np.cosh(x[3] - x[1]), np.sinh(x[3] - x[1])
        da = 1.0 - np.tanh(a) ** 2
        dc = 2.0 * np.sinh(c) * np.cosh(c)
        return np.array([-da - np.cos(b) * x[2] - dc - e * ch,
                         -2.0 * da - np.cos(b) * x[2] - dc - e * ch - e * sh,
                         da + np.sin(b) + dc - e * ch,
                         -da - 0.5 * dc + e * sh])

    H = symjac.hessian(f, x=4, backend=backend)
    for x in rng.normal(scale=0.5, size=(3, 4)):
        expected = complex_step_jacobian(gradient, [x], 0)
        np.testing.assert_allclose(H(x), expected, rtol=1e-10, atol=1e-10)
