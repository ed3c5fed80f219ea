"""np.linalg in the array form: inv, solve, det, slogdet, cholesky, eigh/eigvalsh,
eig/eigvals (real eigenvalues), svd (values, thin and square full vectors), pinv
and norm (the singular-value norms 'nuc', 2, -2; matrix 1, inf; vector p-norms).

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
from symjac.front.norms import SINGULAR_VALUE_ORDERS

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


def real_eigen(n, batch=()):
    """Not symmetric, real eigenvalues 1.5, 3, 4.5, ... (well separated)."""
    B = RNG.normal(size=batch + (n, n)) + 2.0 * np.eye(n)
    return B @ (1.5 * np.arange(1.0, n + 1.0) * np.eye(n)) @ np.linalg.inv(B)


def generic(n, batch=()):
    """Random: distinct, nonzero singular values."""
    return RNG.normal(size=batch + (n, n))


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
    "eigvals": (lambda a: np.linalg.eigvals(a), real_eigen),
    "eig_values": (lambda a: np.linalg.eig(a).eigenvalues, real_eigen),
    "eig_vectors": (lambda a: np.linalg.eig(a)[1] ** 2, real_eigen),
    "svd_vectors": (lambda a: np.linalg.svd(a)[0] ** 2 + np.linalg.svd(a).Vh ** 2, generic),  # full = thin
    "pinv": (lambda a: np.linalg.pinv(a), general),
    "norm_nuc": (lambda a: np.linalg.norm(a, "nuc", axis=(-2, -1)), generic),
    "norm_2": (lambda a: np.linalg.norm(a, 2, axis=(-2, -1)), generic),
    "norm_minus_2": (lambda a: np.linalg.norm(a, -2, axis=(-2, -1)), generic),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_jacobian_single_matrix(name):
    f, draw = UNARY[name]
    A = draw(4)
    np.testing.assert_allclose(build(f, ((4, 4),), what="function")(A), f(A), rtol=1e-12, atol=1e-13)
    check_jacobian(f, [A])


@pytest.mark.parametrize("name", ["inv", "det", "slogdet", "cholesky", "eigvalsh", "eigh_vectors", "eig_values",
                                  "eig_vectors", "svd_vectors", "pinv", "norm_nuc"])
def test_jacobian_stacked_matrices(name):
    f, draw = UNARY[name]
    check_jacobian(f, [draw(3, (2,))])


@pytest.mark.parametrize("name", ["inv", "slogdet", "cholesky", "eigvalsh", "eig_vectors", "svd_vectors", "pinv",
                                  "norm_2"])
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
        np.testing.assert_allclose(g, central(f, [A], 0), rtol=1e-6, atol=1e-8 * np.abs(g).max())  # det² is large


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
    for f, name in ((lambda a: np.linalg.qr(a), "qr"), (lambda a: np.linalg.matrix_power(a, 2), "matrix_power")):
        with pytest.raises(ArrayFormError, match=f"np.linalg.{name}"):
            trace_array(f, ("a",), ((3, 3),))
    with pytest.raises(ShapeError, match="is a matrix norm"):
        trace_array(lambda a: np.linalg.norm(a, "nuc"), ("a",), ((3,),))
    with pytest.raises(ShapeError, match="1-d or 2-d"):
        trace_array(lambda a: np.linalg.norm(a, 2), ("a",), ((2, 3, 3),))  # numpy's rule: give axis=


def test_full_svd_of_non_square_matrices_has_values_and_no_vector_derivative():
    """numpy's default full_matrices=True: the extra singular vectors are any
    orthonormal basis of a complement, so (as in JAX) they have no derivative."""
    A = RNG.normal(size=(5, 3))
    f = lambda a: np.linalg.svd(a)
    values = build(f, ((5, 3),), what="function")(A)
    for got, expected in zip(values, np.linalg.svd(A)):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)
    check_jacobian(lambda a: np.linalg.svd(a)[1], [A])  # the singular values have one
    for g in (lambda a: np.linalg.svd(a)[0], lambda a: np.linalg.svd(a.T)[2]):
        with pytest.raises(ArrayFormError, match="full_matrices=False"):
            build(g, ((5, 3),))


def test_complex_eigenvalues_are_an_error_at_run_time():
    rotation = np.array([[0.0, -1.0], [1.0, 0.0]])
    for f in (lambda a: np.linalg.eigvals(a), lambda a: np.linalg.eig(a)[1]):
        kernel = build(f, ((2, 2),))
        kernel(np.diag([1.0, 2.0]))
        with pytest.raises(ValueError, match="complex eigenvalues"):
            kernel(rotation)
        if torch is not None:
            with pytest.raises(ValueError, match="complex eigenvalues"):
                build(f, ((2, 2),), target="torch")(torch.tensor(rotation))


def test_the_scalar_form_names_the_array_form():
    import symjac

    for f in (lambda a: np.linalg.pinv(a), lambda a: np.linalg.eig(a)[0], lambda a: np.linalg.norm(a, "nuc")):
        with pytest.raises(symjac.TracingError, match='form="array"'):
            symjac.trace(f, a=(3, 3))
        assert symjac.jacobian(f, a=(3, 3), backend="numpy").form == "array"  # form="auto" takes it


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
def test_torch_values_match_numpy_new_functions():
    for name in ("eig_values", "eig_vectors", "svd_vectors", "pinv", "norm_nuc", "norm_2"):
        f, draw = UNARY[name]
        A = draw(3, (2,))
        for what in ("function", "jacobian"):
            expected = build(f, ((3, 3),), what=what)(A)
            got = build(f, ((3, 3),), what=what, target="torch")(torch.tensor(A))
            np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12, err_msg=name)
    thin = lambda a: np.linalg.svd(a, full_matrices=False)[2] ** 2 + np.linalg.pinv(a).T ** 2
    A = RNG.normal(size=(2, 3, 5))
    expected = build(thin, ((3, 5),))(A)
    np.testing.assert_allclose(build(thin, ((3, 5),), target="torch")(torch.tensor(A)).numpy(), expected,
                               rtol=1e-10, atol=1e-12)


@needs_torch
def test_symjac_torch_pinv_and_nuclear_norm_any_device_and_double_backward():
    """Through symjac.torch (form "auto" takes the array form): values, torch's
    autograd through the printed Jacobian (twice), no CPU-only call (meta tensors)."""
    import symjac.torch

    def f(a):
        return np.linalg.norm(a, "nuc", axis=(-2, -1)) * np.linalg.pinv(a)

    tj = symjac.torch.jacobian(f, a=(4, 3))
    assert tj.form == "array"
    A = torch.tensor(RNG.normal(size=(2, 4, 3)), requires_grad=True)
    np.testing.assert_allclose(tj(A).detach().numpy(), build(f, ((4, 3),))(A.detach().numpy()), rtol=1e-10)
    assert torch.autograd.gradcheck(tj, (A,))
    assert torch.autograd.gradgradcheck(lambda a: tj(a).sum(dim=(-2, -1)), (A,))
    meta = tj(torch.ones(2, 4, 3, dtype=torch.float64, device="meta"))
    assert meta.device.type == "meta" and meta.shape == (2, 3, 4, 4, 3)


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


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (2, 4, 3), (2, 3, 4)])
def test_singular_vectors(shape):
    """Thin U and Vh of tall and wide matrices (the complement terms), checked
    sign-free: squared entries, and the rank-one parts σ_i u_i v_iᵀ."""
    A = RNG.normal(size=shape)
    thin = lambda a: np.linalg.svd(a, full_matrices=False)
    for got, expected in zip(build(thin, (shape,), what="function")(A), thin(A)):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)
    check_jacobian(lambda a: thin(a).U ** 2, [A])
    check_jacobian(lambda a: thin(a).Vh ** 2, [A])
    check_jacobian(lambda a: thin(a)[0][..., :, 1:2] * thin(a)[2][..., 1:2, :], [A])
    f = lambda a: np.sum(thin(a)[0][..., :, 0] ** 3) + np.sum(thin(a)[2][..., 0, :] ** 3)
    np.testing.assert_allclose(build(f, (shape,), what="gradient")(A), central(f, [A], 0), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4), (2, 5, 3)])
def test_pinv(shape):
    A = RNG.normal(size=shape)
    f = lambda a: np.linalg.pinv(a)
    np.testing.assert_allclose(build(f, (shape,), what="function")(A), f(A), rtol=1e-12, atol=1e-13)
    check_jacobian(f, [A])
    g = lambda a: np.sum(np.linalg.pinv(a) ** 2)
    np.testing.assert_allclose(build(g, (shape,), what="gradient")(A), central(g, [A], 0), rtol=1e-6, atol=1e-7)


def test_pinv_options():
    """rcond/rtol drop small singular values as numpy does; hermitian=True reads the
    lower triangle (numpy calls eigh), in pinv and svd."""
    A = RNG.normal(size=(4, 2)) @ RNG.normal(size=(2, 3))  # rank 2
    for f in (lambda a: np.linalg.pinv(a, rcond=1e-10), lambda a: np.linalg.pinv(a, rtol=None)):
        np.testing.assert_allclose(build(f, ((4, 3),), what="function")(A), f(A), rtol=1e-10, atol=1e-12)
    S = spd(4) + np.triu(RNG.normal(size=(4, 4)), 1)
    for f in (lambda a: np.linalg.pinv(a, hermitian=True), lambda a: np.linalg.svd(a, hermitian=True)[1]):
        np.testing.assert_allclose(build(f, ((4, 4),), what="function")(S), f(S), rtol=1e-10, atol=1e-12)
        check_jacobian(f, [S])


def test_pinv_of_constant_rank_matrices():
    """At constant rank the derivative exists (JAX's rule); perturbations that keep
    the rank, A(t) = B(t) C(t), are checked."""
    B, C = RNG.normal(size=(4, 2)), RNG.normal(size=(2, 3))
    f = lambda b, c: np.linalg.pinv(b @ c, rcond=1e-10)
    for j in (0, 1):
        check_jacobian(f, [B, C], wrt=j)


MATRIX_ORDERS = ["nuc", 2, -2, 1, -1, np.inf, -np.inf, "fro", None]


@pytest.mark.parametrize("ord", MATRIX_ORDERS, ids=str)
def test_matrix_norms(ord):
    A = RNG.normal(size=(4, 3))
    f = lambda a: np.linalg.norm(a, ord)
    np.testing.assert_allclose(build(f, ((4, 3),), what="function")(A), f(A), rtol=1e-12)
    check_jacobian(f, [A])
    stacked = lambda a: np.linalg.norm(a, ord, axis=(2, 0), keepdims=True)  # over a pair of axes, in that order
    B = RNG.normal(size=(3, 2, 4))
    np.testing.assert_allclose(build(stacked, ((3, 2, 4),), what="function")(B), stacked(B), rtol=1e-12)
    check_jacobian(stacked, [B])
    if ord not in SINGULAR_VALUE_ORDERS:  # the scalar form has these too
        import symjac

        jac = symjac.jacobian(stacked, a=(3, 2, 4), form="scalar", backend="numpy")
        np.testing.assert_allclose(jac(B), central(stacked, [B], 0), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("ord", [3, 4, 0.5, -1.5, 1, 2, None, np.inf, -np.inf, 0], ids=str)
@pytest.mark.parametrize("form", ["array", "scalar"])
def test_vector_norms_in_both_forms(ord, form):
    import symjac

    x = RNG.normal(size=(3, 5))
    f = lambda x: np.linalg.norm(x, ord, axis=-1)
    jac = symjac.jacobian(f, x=(3, 5), form=form, backend="numpy")
    np.testing.assert_allclose(jac(x), central(f, [x], 0), rtol=1e-6, atol=1e-7)
    value = symjac.function(f, x=(3, 5), form=form, backend="numpy")(x)
    np.testing.assert_allclose(value, f(x), rtol=1e-12)


def test_broadcast_stacks_and_batches():
    """Stacks in the traced shapes and run-time batch dimensions broadcast like numpy's."""
    f = lambda a, b: np.linalg.pinv(a) @ b + np.linalg.norm(a, "nuc", axis=(-2, -1))[..., None]
    kernel = build(f, ((2, 5, 3), (5,)), wrt=(0,))
    A, b = RNG.normal(size=(4, 1, 2, 5, 3)), RNG.normal(size=(3, 5))
    J = kernel(A, b)
    assert J.shape == (4, 3, 2, 3, 2, 5, 3)
    for index in np.ndindex(4, 3):
        np.testing.assert_allclose(J[index], central(f, [A[index[0], 0], b[index[1]]], 0), rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------
# second order: forward over the reverse sweep through the new rules


@pytest.mark.parametrize("name, f, draw", [
    ("pinv", lambda a: np.sum(np.linalg.pinv(a) * np.arange(15.0).reshape(3, 5)), lambda: RNG.normal(size=(5, 3))),
    ("pinv_wide", lambda a: np.sum(np.linalg.pinv(a) ** 2), lambda: RNG.normal(size=(3, 5))),
    ("nuclear_norm", lambda a: np.linalg.norm(a, "nuc"), lambda: RNG.normal(size=(5, 3))),
    ("spectral_norm", lambda a: np.linalg.norm(a, 2) * np.linalg.norm(a, -2), lambda: RNG.normal(size=(3, 4))),
    ("singular_vectors", lambda a: np.sum(np.linalg.svd(a, full_matrices=False)[0][:, 0] ** 2 * np.arange(5.0))
     + np.sum(np.linalg.svd(a, full_matrices=False)[2] ** 3), lambda: RNG.normal(size=(5, 3))),
    ("eig", lambda a: np.linalg.eigvals(a) @ np.arange(1.0, 5.0) + np.sum(np.linalg.eig(a)[1] ** 4),
     lambda: real_eigen(4)),
    ("p_norm", lambda a: np.linalg.norm(a, 3), lambda: RNG.normal(size=(6,))),
])
def test_hessians(name, f, draw):
    A = draw()
    gradient = build(f, (A.shape,), what="gradient")
    np.testing.assert_allclose(gradient(A), central(f, [A], 0), rtol=1e-6, atol=1e-7)
    H = build(f, (A.shape,), what="hessian")(A)
    expected = central(gradient, [A], 0, eps=1e-5)
    np.testing.assert_allclose(H, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    H = H.reshape(A.size, A.size)
    np.testing.assert_allclose(H, H.T, rtol=1e-8, atol=1e-10 * np.abs(H).max())


def test_vjp_and_jvp_through_svd_and_pinv():
    f = lambda a: (np.linalg.svd(a, full_matrices=False)[0] ** 2, np.linalg.pinv(a))
    A = RNG.normal(size=(5, 3))
    u = (RNG.normal(size=(5, 3)), RNG.normal(size=(3, 5)))
    v = RNG.normal(size=(5, 3))
    J = [central(lambda a, k=k: f(a)[k], [A], 0) for k in range(2)]
    vjp = build(f, ((5, 3),), what="vjp")(A, *u)
    np.testing.assert_allclose(vjp, sum(np.tensordot(uk, Jk, axes=2) for uk, Jk in zip(u, J)), rtol=1e-6, atol=1e-7)
    for got, Jk in zip(build(f, ((5, 3),), what="jvp")(A, v), J):
        np.testing.assert_allclose(got, np.tensordot(Jk, v, axes=2), rtol=1e-6, atol=1e-7)
