"""np.linalg in the array form: inv, solve, det, slogdet, cholesky, eigh/eigvalsh.

Every derivative is compared with central differences of the user's numpy
function (or a hand-written closed form), on well-conditioned random inputs
with fixed seeds: single matrices, stacks of matrices in the traced shape,
extra run-time batch dimensions, and numpy's broadcasting of stacks.
"""

from __future__ import annotations

import numpy as np
import pytest

from symjac.errors import ShapeError
from symjac.front.array_program import ArrayFormError
from symjac.front.array_trace import trace_array

from test_array_form import build, central

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

RNG = np.random.default_rng(20261202)


def general(n, batch=()):
    """Well-conditioned, not symmetric, positive determinant."""
    return RNG.normal(size=batch + (n, n)) / np.sqrt(n) + 3.0 * np.eye(n)


def spd(n, batch=()):
    """Symmetric positive definite with well-separated eigenvalues."""
    B = RNG.normal(size=batch + (n, n)) / np.sqrt(n)
    return B @ np.swapaxes(B, -1, -2) + np.diag(np.arange(1.0, n + 1.0))


def check_jacobian(f, args, wrt=0, rtol=1e-6, atol=1e-7):
    shapes = tuple(np.shape(a) for a in args)
    kernel = build(f, shapes, wrt=(wrt,))
    J = kernel(*args)
    np.testing.assert_allclose(J, central(f, args, wrt), rtol=rtol, atol=atol)
    return kernel


# --------------------------------------------------------------------------
# Jacobians, one function at a time

UNARY = {
    "inv": (lambda a: np.linalg.inv(a), general),
    "det": (lambda a: np.linalg.det(a), general),
    "slogdet": (lambda a: np.linalg.slogdet(a)[1], general),
    "slogdet_negative": (lambda a: np.linalg.slogdet(-a[..., :3, :3])[1], general),  # det < 0
    "cholesky": (lambda a: np.linalg.cholesky(a), spd),
    "cholesky_upper": (lambda a: np.linalg.cholesky(a, upper=True), spd),
    "eigvalsh": (lambda a: np.linalg.eigvalsh(a), spd),
    "eigh_values": (lambda a: np.linalg.eigh(a).eigenvalues, spd),
    "eigh_values_upper": (lambda a: np.linalg.eigh(a, UPLO="U")[0], spd),
    "eigh_vectors": (lambda a: np.linalg.eigh(a)[1] ** 2, spd),  # sign-free
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_jacobian_single_matrix(name):
    f, draw = UNARY[name]
    check_jacobian(f, [draw(4)])


@pytest.mark.parametrize("name", ["inv", "det", "slogdet", "cholesky", "eigvalsh", "eigh_vectors"])
def test_jacobian_stacked_matrices(name):
    f, draw = UNARY[name]
    check_jacobian(f, [draw(3, (2,))])


@pytest.mark.parametrize("name", ["inv", "slogdet", "cholesky", "eigvalsh"])
def test_runtime_batch(name):
    """Extra leading dimensions at run time: the same Jacobian per batch entry."""
    f, draw = UNARY[name]
    kernel = build(f, ((3, 3),))
    A = draw(3, (2, 2))
    J = kernel(A)
    for index in np.ndindex(2, 2):
        np.testing.assert_allclose(J[index], central(f, [A[index]], 0), rtol=1e-6, atol=1e-7)


def test_cholesky_and_eigh_read_one_triangle():
    """numpy reads the lower (UPLO) triangle; the derivative is that function's, for
    non-symmetric input too (the upper triangle has derivative zero)."""
    A = spd(4) + np.triu(RNG.normal(size=(4, 4)), 1)
    for f in (lambda a: np.linalg.cholesky(a), lambda a: np.linalg.eigvalsh(a)):
        J = check_jacobian(f, [A])(A)
        assert np.all(J[..., np.triu_indices(4, 1)[0], np.triu_indices(4, 1)[1]] == 0.0)
    check_jacobian(lambda a: np.linalg.eigvalsh(a, UPLO="U"), [A.T])


# --------------------------------------------------------------------------
# solve: matrix and vector right-hand sides, broadcast stacks


@pytest.mark.parametrize("shapes", [
    ((4, 4), (4,)),          # vector
    ((4, 4), (4, 2)),        # matrix
    ((2, 4, 4), (4,)),       # a stack of matrices, one vector
    ((2, 4, 4), (4, 3)),     # a stack of matrices, one matrix
    ((4, 4), (2, 4, 3)),     # one matrix, a stack of right-hand sides
    ((2, 1, 4, 4), (3, 4, 2)),  # stacks broadcast against each other
])
def test_solve_both_arguments(shapes):
    f = lambda a, b: np.linalg.solve(a, b)
    args = [general(4, shapes[0][:-2]), RNG.normal(size=shapes[1])]
    np.testing.assert_allclose(build(f, shapes, what="function")(*args), f(*args), rtol=1e-12)
    check_jacobian(f, args, wrt=0)
    check_jacobian(f, args, wrt=1)


def test_solve_vector_with_runtime_batch():
    """b of core shape (n,) with batch dimensions at run time stays a vector."""
    f = lambda a, b: np.linalg.solve(a, b)
    kernel = build(f, ((4, 4), (4,)), wrt=(1,))
    A, b = general(4), RNG.normal(size=(5, 4))
    J = kernel(A, b)
    assert J.shape == (5, 4, 4)
    np.testing.assert_allclose(J, np.broadcast_to(np.linalg.inv(A), (5, 4, 4)), rtol=1e-12, atol=1e-12)
    values = build(f, ((4, 4), (4,)), what="function")(A, b)
    np.testing.assert_allclose(values, np.linalg.solve(A, b[..., None])[..., 0], rtol=1e-12)


# --------------------------------------------------------------------------
# gradients and Hessians of scalar objectives (reverse mode, forward over reverse)


def logdet_update(A, x):
    return np.linalg.slogdet(A + np.outer(x, x))[1]


def logdet_update_gradient(A, x):
    M = A + np.outer(x, x)
    return (np.linalg.inv(M) + np.linalg.inv(M).T) @ x


def quadratic(A, x):
    return x @ np.linalg.solve(A, x)


@pytest.mark.parametrize("f, gradient", [
    (logdet_update, logdet_update_gradient),
    (quadratic, lambda A, x: (np.linalg.inv(A) + np.linalg.inv(A).T) @ x),
])
def test_gradient_and_hessian(f, gradient):
    A, x = general(4), RNG.normal(size=4)
    g = build(f, ((4, 4), (4,)), wrt=(1,), what="gradient")(A, x)
    np.testing.assert_allclose(g, gradient(A, x), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g, central(f, [A, x], 1), rtol=1e-6, atol=1e-8)
    gA = build(f, ((4, 4), (4,)), wrt=(0,), what="gradient")(A, x)
    np.testing.assert_allclose(gA, central(f, [A, x], 0), rtol=1e-6, atol=1e-8)
    H = build(f, ((4, 4), (4,)), wrt=(1,), what="hessian")(A, x)
    np.testing.assert_allclose(H, central(gradient, [A, x], 1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(H, H.T, atol=1e-10)
    # the mixed block d/dA (d/dx f): forward over the reverse sweep through solve and inv
    mixed = build(f, ((4, 4), (4,)), wrt=(1, 0), what="hessian", wrt_is_tuple=True)(A, x)[0][1]
    np.testing.assert_allclose(mixed, central(gradient, [A, x], 0), rtol=1e-6, atol=1e-7)


def test_gradient_of_every_function_reverse_mode():
    objectives = [
        (lambda a: np.sum(np.linalg.inv(a) * np.arange(16.0).reshape(4, 4)), general),
        (lambda a: np.linalg.det(a) ** 2, general),
        (lambda a: np.sum(np.linalg.cholesky(a) ** 3), spd),
        (lambda a: np.linalg.eigvalsh(a) @ np.arange(1.0, 5.0), spd),
        (lambda a: np.sum(np.linalg.eigh(a)[1][:, 0] ** 2 * np.arange(4.0)), spd),
        (lambda a: np.sum(np.linalg.solve(a, a[:, :2] ** 2)), general),
    ]
    for f, draw in objectives:
        A = draw(4)
        g = build(f, ((4, 4),), what="gradient")(A)
        np.testing.assert_allclose(g, central(f, [A], 0), rtol=1e-6, atol=1e-7)


def test_stacked_objective_gradient_and_vjp_jvp():
    f = lambda a, x: np.sum(np.linalg.slogdet(a)[1]) + np.sum(np.linalg.solve(a, x[..., None]) ** 2)
    A, x = general(3, (2,)), RNG.normal(size=(2, 3))
    for j in (0, 1):
        g = build(f, ((2, 3, 3), (2, 3)), wrt=(j,), what="gradient")(A, x)
        np.testing.assert_allclose(g, central(f, [A, x], j), rtol=1e-6, atol=1e-7)
    h = lambda a: np.linalg.inv(a)
    u, v = RNG.normal(size=(2, 3, 3)), RNG.normal(size=(2, 3, 3))
    J = central(h, [A], 0)
    vjp = build(h, ((2, 3, 3),), what="vjp")(A, u)
    np.testing.assert_allclose(vjp, np.tensordot(u, J, axes=3), rtol=1e-6, atol=1e-7)
    jvp = build(h, ((2, 3, 3),), what="jvp")(A, v)
    np.testing.assert_allclose(jvp, np.tensordot(J, v, axes=3), rtol=1e-6, atol=1e-7)


def test_sign_of_slogdet_has_zero_derivative():
    f = lambda a: np.linalg.slogdet(a)[0] * 2.0
    J = build(f, ((3, 3),))(general(3))
    np.testing.assert_array_equal(J, np.zeros((3, 3)))


def test_no_inverse_in_the_reverse_sweep_through_solve():
    program = trace_array(quadratic, ("A", "x"), ((4, 4), (4,)))
    from symjac.derive.array_calculus import derive
    gradient = derive(program, (1,), False, "gradient")
    assert "inv" not in {e.prim for e in gradient.eqns}
    assert [e.prim for e in gradient.eqns].count("solve") == 2


# --------------------------------------------------------------------------
# errors


def test_errors_name_the_operation():
    with pytest.raises(ShapeError, match="square"):
        trace_array(lambda a: np.linalg.inv(a), ("a",), ((3, 4),))
    with pytest.raises(ShapeError, match="solve"):
        trace_array(lambda a, b: np.linalg.solve(a, b), ("a", "b"), ((3, 3), (4,)))
    for f, name in ((lambda a: np.linalg.eig(a), "eig"), (lambda a: np.linalg.svd(a), "svd"),
                    (lambda a: np.linalg.pinv(a), "pinv"), (lambda a: np.linalg.qr(a), "qr")):
        with pytest.raises(ArrayFormError, match=f"np.linalg.{name}"):
            trace_array(f, ("a",), ((3, 3),))


# --------------------------------------------------------------------------
# torch target


@needs_torch
def test_torch_values_match_numpy():
    functions = [(UNARY[n][0], UNARY[n][1]) for n in ("inv", "det", "slogdet", "cholesky", "eigvalsh", "eigh_vectors")]
    for f, draw in functions:
        A = draw(3, (2,))
        expected = build(f, ((3, 3),))(A)
        got = build(f, ((3, 3),), target="torch")(torch.tensor(A))
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    f = lambda a, b: np.linalg.solve(a, b)
    A, b = general(4, (4,)), RNG.normal(size=(4, 4))  # b (4, 4) next to a stack of 4: never a vector
    for what in ("function", "jacobian"):
        expected = build(f, ((4, 4), (4,)), what=what)(A, b)
        got = build(f, ((4, 4), (4,)), what=what, target="torch")(torch.tensor(A), torch.tensor(b))
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)


@needs_torch
def test_torch_gradient_kernel_passes_gradcheck():
    """The torch gradient kernel is itself differentiable by torch's autograd:
    gradcheck of the gradient (a Hessian-vector product) against differences."""
    kernel = build(logdet_update, ((4, 4), (4,)), wrt=(1,), what="gradient", target="torch")
    A = torch.tensor(general(4), requires_grad=True)
    x = torch.tensor(RNG.normal(size=4), requires_grad=True)
    assert torch.autograd.gradcheck(kernel, (A, x))
    np.testing.assert_allclose(kernel(A, x).detach().numpy(), logdet_update_gradient(A.detach().numpy(),
                                                                                   x.detach().numpy()), rtol=1e-10)


# --------------------------------------------------------------------------
# form="auto"


def test_auto_form_takes_the_array_form_for_linalg_the_scalar_form_lacks():
    import symjac

    A = general(5)
    J = symjac.jacobian(lambda a: np.linalg.slogdet(a)[1], (5, 5))
    assert J.form == "array"
    np.testing.assert_allclose(J(A), np.linalg.inv(A).T, rtol=1e-12)
    assert symjac.jacobian(lambda a: np.linalg.det(a), (2, 2)).form == "scalar"  # expanded exactly


@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (3, 5), (2, 4, 3)])
def test_singular_values(shape):
    f = lambda a: np.linalg.svd(a, compute_uv=False)
    A = RNG.normal(size=shape)
    check_jacobian(f, [A])
    g = lambda a: np.sum(np.linalg.svd(a, compute_uv=False) ** 2)  # = |A|_F²
    np.testing.assert_allclose(build(g, (shape,), what="gradient")(A), 2 * A, rtol=1e-10)
    if torch is not None:
        got = build(f, (shape,), target="torch")(torch.tensor(A)).numpy()
        np.testing.assert_allclose(got, build(f, (shape,))(A), rtol=1e-10, atol=1e-12)
    with pytest.raises(ArrayFormError, match="compute_uv=True"):
        trace_array(lambda a: np.linalg.svd(a), ("a",), (shape,))
