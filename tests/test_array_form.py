"""The array form: trace -> array calculus -> numpy/torch printers.

Every number is compared with an independent oracle: central differences of
the user's numpy function, or a hand-written closed form; never with the code
under test.
"""

from __future__ import annotations

import inspect

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st

from symjac.derive.array_calculus import derive
from symjac.emit.array_printing import load_module, print_module, scalar_cost
from symjac.errors import InvalidNameError, ShapeError, TracingError
from symjac.front.array_program import ArrayFormError
from symjac.front.array_trace import trace_array

RNG = np.random.default_rng(20261202)

try:
    import torch
except ImportError:  # the torch tests below skip; the numpy ones still run
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def build(f, shapes, wrt=(0,), what="jacobian", target="numpy", wrt_is_tuple=False):
    names = tuple(inspect.signature(f).parameters)
    program = trace_array(f, names, tuple(tuple(s) for s in shapes))
    derived = derive(program, wrt, wrt_is_tuple, what)
    return load_module(print_module(derived, target, what.capitalize()), target).kernel


def central(f, args, j, eps=1e-6):
    """d f / d args[j] by central differences: out.shape + args[j].shape."""
    args = [np.array(a, dtype=np.float64) for a in args]
    base = np.asarray(f(*args), dtype=np.float64)
    J = np.zeros(base.shape + args[j].shape)
    for index in np.ndindex(*args[j].shape):
        up = [a.copy() for a in args]
        down = [a.copy() for a in args]
        up[j][index] += eps
        down[j][index] -= eps
        J[(...,) + index] = (np.asarray(f(*up)) - np.asarray(f(*down))) / (2 * eps)
    return J


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def decoder(h, W1, b1, W2, b2):
    return W2 @ np.tanh(W1 @ h + b1) + b2


def decoder_closed_form(h, W1, b1, W2, b2):
    t = np.tanh(np.einsum("...ij,...j->...i", W1, h) + b1)
    return np.einsum("...oi,...i,...ij->...oj", W2, 1 - t**2, W1)


def decoder_args(k, hidden, n, batch=()):
    return [RNG.normal(size=batch + (k,)), RNG.normal(size=(hidden, k)) / np.sqrt(k), RNG.normal(size=hidden),
            RNG.normal(size=(n, hidden)) / np.sqrt(hidden), RNG.normal(size=n)]


# --------------------------------------------------------------------------
# the seed's decoder


def test_decoder_jacobian_full_width_batched():
    shapes = ((32,), (1024, 32), (1024,), (784, 1024), (784,))
    kernel = build(decoder, shapes)
    args = decoder_args(32, 1024, 784, batch=(6,))
    J = kernel(*args)
    assert J.shape == (6, 784, 32) and J.dtype == np.float64
    np.testing.assert_allclose(J, decoder_closed_form(*args), rtol=1e-10, atol=1e-12)
    J32 = kernel(*(a.astype(np.float32) for a in args))
    assert J32.dtype == np.float32
    np.testing.assert_allclose(J32, decoder_closed_form(*args), rtol=1e-3, atol=1e-4)


def test_decoder_batch_of_weights_broadcasts_against_batch_of_inputs():
    kernel = build(decoder, ((4,), (7, 4), (7,), (5, 7), (5,)))
    h = RNG.normal(size=(3, 1, 4))  # batch (3, 1)
    W1 = RNG.normal(size=(2, 7, 4))  # batch (2,)
    b1, W2, b2 = RNG.normal(size=(1, 7)), RNG.normal(size=(5, 7)), RNG.normal(size=5)
    J = kernel(h, W1, b1, W2, b2)
    assert J.shape == (3, 2, 5, 4)
    expected = decoder_closed_form(np.broadcast_to(h, (3, 2, 4)), np.broadcast_to(W1, (3, 2, 7, 4)), b1, W2, b2)
    np.testing.assert_allclose(J, expected, rtol=1e-12, atol=1e-12)
    # a parameter only batch (weights batched, input not)
    J2 = kernel(h[0, 0], W1, b1, W2, b2)
    assert J2.shape == (2, 5, 4)
    np.testing.assert_allclose(J2, J[0], rtol=1e-12, atol=1e-12)


def test_decoder_source_is_the_closed_form():
    program = trace_array(decoder, ("h", "W1", "b1", "W2", "b2"), ((32,), (1024, 32), (1024,), (784, 1024), (784,)))
    derived = derive(program, (0,), False, "jacobian")
    text = print_module(derived, "numpy", "Jacobian")
    assert text == print_module(derive(program, (0,), False, "jacobian"), "numpy", "Jacobian")  # same bytes
    assert "numpy.tanh" in text and "eye" not in text and "diag" not in text.split("def kernel")[1]
    assert max(eqn.out.size for eqn in derived.eqns) == 1024 * 32  # d[:, None] * W1, never 784 x 1024
    assert text.count("numpy.tanh(") == 1  # the forward tanh feeds 1 - t**2
    assert "symjac" in text.splitlines()[0] and "symjac-content-hash" in text
    assert scalar_cost(derived) > 784 * 1024 * 32


def _depends_on(program, name):
    """Names of the variables of ``program`` computed from input ``name``."""
    found = {name}
    for eqn in program.eqns:
        if any(v.name in found for v in eqn.inputs):
            found.add(eqn.out.name)
    return found


@pytest.mark.parametrize("target", ["numpy", "torch"])
def test_decoder_jacobian_contracts_the_weights_first_for_a_batch(target):
    """k < BATCH_HINT: J = s @ (W2 ⊗ W1), one GEMM over the batch; nothing computed
    from the batched h is larger than the hidden layer or J (no (batch, 64, 16))."""
    if target == "torch" and torch is None:
        pytest.skip("torch is not installed")
    k, m = 16, 64
    shapes = ((k,), (m, k), (m,), (k, m), (k,))
    program = trace_array(decoder, ("h", "W1", "b1", "W2", "b2"), shapes)
    derived = derive(program, (0,), False, "jacobian")
    batched = _depends_on(derived, "h")
    assert max(eqn.out.size for eqn in derived.eqns if eqn.out.name in batched) == max(m, k * k)
    kernel = load_module(print_module(derived, target, "Jacobian"), target).kernel
    args = decoder_args(k, m, k, batch=(5, 2))
    expected = decoder_closed_form(*args)
    if target == "torch":
        got = kernel(*map(torch.as_tensor, args))
        assert got.is_contiguous()
        got = got.numpy()
    else:
        got = kernel(*args)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("target", ["numpy", "torch"])
def test_matrix_times_a_batch_of_matrices(target):
    """_matmul(A, X) with X batched (and, for torch, a transposed view): (Xᵀ Aᵀ)ᵀ."""
    if target == "torch" and torch is None:
        pytest.skip("torch is not installed")
    kernel = load_module(print_module(trace_array(lambda A, X: A @ X, ("A", "X"), ((2, 3), (3, 4))), target,
                                      "Function"), target).kernel
    A, X = RNG.normal(size=(2, 3)), RNG.normal(size=(5, 3, 3, 4))
    expected = np.einsum("ij,...jk->...ik", A, X)
    if target == "torch":
        Xt = torch.as_tensor(np.ascontiguousarray(np.swapaxes(X, -1, -2))).mT
        for given in (torch.as_tensor(X), Xt):
            np.testing.assert_allclose(kernel(torch.as_tensor(A), given).numpy(), expected, rtol=1e-13, atol=1e-14)
    else:
        np.testing.assert_allclose(kernel(A, X), expected, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(kernel(A, np.swapaxes(np.swapaxes(X, -1, -2).copy(), -1, -2)), expected,
                                   rtol=1e-13, atol=1e-14)


@needs_torch
@pytest.mark.parametrize("spec, shapes", [("ai,ajk->aijk", ((3, 2), (3, 4, 5))), ("ij,k->ijk", ((2, 3), (4,))),
                                          ("ai,aj->aji", ((3, 2), (3, 4))), ("ai,aj->iaj", ((3, 2), (3, 4)))])
def test_torch_outer_products_as_matmuls(spec, shapes):
    """Broadcast products with an own axis on each side print as matmuls with an inner axis of 1."""
    kernel = load_module(print_module(trace_array(lambda x, Y: np.einsum(spec, x, Y), ("x", "Y"), shapes),
                                      "torch", "Function"), "torch").kernel
    inputs, output = spec.split("->")
    batched = "...{},...{}->...{}".format(*inputs.split(","), output)
    for bx, by in [((), ()), ((6,), ()), ((), (6,)), ((2, 1), (5,))]:
        x, Y = RNG.normal(size=bx + shapes[0]), RNG.normal(size=by + shapes[1])
        got = kernel(torch.as_tensor(x), torch.as_tensor(Y)).numpy()
        np.testing.assert_allclose(got, np.einsum(batched, x, Y), rtol=1e-14, atol=1e-15)


def test_decoder_tuple_wrt_weights():
    shapes = ((3,), (5, 3), (5,), (4, 5), (4,))
    kernel = build(decoder, shapes, wrt=(1, 2), wrt_is_tuple=True)
    args = decoder_args(3, 5, 4)
    JW1, Jb1 = kernel(*args)
    assert JW1.shape == (4, 5, 3) and Jb1.shape == (4, 5)
    np.testing.assert_allclose(JW1, central(decoder, args, 1), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(Jb1, central(decoder, args, 2), rtol=1e-6, atol=1e-8)
    # a tuple of outputs and a tuple wrt: J[i][j]
    both = build(lambda h, W1, b1, W2, b2: (decoder(h, W1, b1, W2, b2), np.sum(W1 @ h)), shapes, wrt=(0, 2),
                 wrt_is_tuple=True)
    nested = both(*args)
    assert [[b.shape for b in row] for row in nested] == [[(4, 3), (4, 5)], [(3,), (5,)]]
    np.testing.assert_allclose(nested[1][0], args[1].sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(nested[1][1], 0.0)


def mlp(x, W1, b1, W2, b2, W3, b3, W4, b4):
    a = np.maximum(W1 @ x + b1, 0.0)
    s = 1.0 / (1.0 + np.exp(-(W2 @ a + b2)))
    t = np.tanh(W3 @ s + b3)
    return W4 @ t + b4


def test_four_layer_mlp():
    sizes = [16, 128, 128, 128, 8]
    shapes = [(16,)]
    for m, n in zip(sizes[:-1], sizes[1:]):
        shapes += [(n, m), (n,)]
    kernel = build(mlp, shapes)
    params = []
    for m, n in zip(sizes[:-1], sizes[1:]):
        params += [RNG.normal(size=(n, m)) / np.sqrt(m), RNG.normal(size=n)]
    X = RNG.normal(size=(4, 16))
    J = kernel(X, *params)
    W1, b1, W2, b2, W3, b3, W4, b4 = params
    for x, Jx in zip(X, J):  # the closed form, one sample at a time
        z1 = W1 @ x + b1
        a = np.maximum(z1, 0)
        s = sigmoid(W2 @ a + b2)
        t = np.tanh(W3 @ s + b3)
        expected = W4 @ np.diag(1 - t**2) @ W3 @ np.diag(s * (1 - s)) @ W2 @ np.diag((z1 >= 0) * 1.0) @ W1
        np.testing.assert_allclose(Jx, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(J[0], central(mlp, [X[0], *params], 0), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------
# objectives: gradients and Hessians


def logistic(w, X, y):
    return np.sum(np.logaddexp(0, -y * (X @ w)))


def test_logistic_regression_gradient_and_hessian_closed_form():
    n, d = 300, 6
    X, y, w = RNG.normal(size=(n, d)), np.sign(RNG.normal(size=n)), RNG.normal(size=d) * 0.3
    s = sigmoid(y * (X @ w))
    grad = build(logistic, ((d,), (n, d), (n,)), what="gradient")(w, X, y)
    np.testing.assert_allclose(grad, X.T @ (-y * (1 - s)), rtol=1e-10, atol=1e-12)
    program = trace_array(logistic, ("w", "X", "y"), ((d,), (n, d), (n,)))
    hessian = derive(program, (0,), False, "hessian")
    assert max(eqn.out.size for eqn in hessian.eqns) <= n * d  # closed form: no n x n intermediate
    H = load_module(print_module(hessian, "numpy", "Hessian"), "numpy").kernel(w, X, y)
    np.testing.assert_allclose(H, X.T @ ((s * (1 - s))[:, None] * X), rtol=1e-10, atol=1e-12)
    # batch of weight vectors
    W = RNG.normal(size=(3, d))
    Hb = load_module(print_module(hessian, "numpy", "Hessian"), "numpy").kernel(W, X, y)
    sb = sigmoid(y * (W @ X.T))
    np.testing.assert_allclose(Hb, np.einsum("ni,bn,nj->bij", X, sb * (1 - sb), X), rtol=1e-10, atol=1e-12)


def test_quadratic_form_hessian_and_gradient():
    A, x = RNG.normal(size=(5, 5)), RNG.normal(size=5)
    f = lambda x, A: x @ A @ x  # noqa: E731
    H = build(f, ((5,), (5, 5)), what="hessian")(x, A)
    np.testing.assert_allclose(H, A + A.T, rtol=1e-12)
    g = build(f, ((5,), (5, 5)), what="gradient")(x, A)
    np.testing.assert_allclose(g, (A + A.T) @ x, rtol=1e-12)
    HA = build(f, ((5,), (5, 5)), what="hessian", wrt=(0, 1), wrt_is_tuple=True)(x, A)
    assert [[b.shape for b in row] for row in HA] == [[(5, 5), (5, 5, 5)], [(5, 5, 5), (5, 5, 5, 5)]]
    grad_f = lambda x, A: np.concatenate([(A + A.T) @ x, np.outer(x, x).ravel()])  # noqa: E731
    dx = central(grad_f, [x, A], 0)
    np.testing.assert_allclose(HA[1][0], dx[5:].reshape(5, 5, 5), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(HA[1][1], 0.0)


def test_hessian_of_vector_output_and_elementwise_diagonal():
    f = lambda x: np.sin(x) * x[0]  # noqa: E731
    x = RNG.normal(size=3)
    H = build(f, ((3,),), what="hessian")(x)
    assert H.shape == (3, 3, 3)
    grad = lambda x: central(f, [x], 0)  # noqa: E731
    np.testing.assert_allclose(H, central(lambda x: grad(x), [x], 0, eps=1e-4), rtol=1e-4, atol=1e-5)


def attention(Q, K, V):
    s = Q @ K.T / np.sqrt(4.0)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return (e / np.sum(e, axis=-1, keepdims=True)) @ V


def test_softmax_attention_wrt_queries():
    shapes = ((3, 4), (5, 4), (5, 2))
    Q, K, V = (RNG.normal(size=s) for s in shapes)
    J = build(attention, shapes)(Q, K, V)
    np.testing.assert_allclose(J, central(attention, [Q, K, V], 0), rtol=1e-6, atol=1e-8)
    H = build(lambda Q, K, V: np.sum(attention(Q, K, V) ** 2), shapes, what="hessian")(Q, K, V)
    g = lambda Q, K, V: central(lambda Q: np.sum(attention(Q, K, V) ** 2), [Q], 0)  # noqa: E731
    np.testing.assert_allclose(H, central(g, [Q, K, V], 0, eps=1e-4), rtol=1e-4, atol=1e-5)


def test_logsumexp_as_users_write_it():
    def lse(x):
        m = np.max(x)
        return m + np.log(np.sum(np.exp(x - m)))
    x = RNG.normal(size=6)
    g = build(lse, ((6,),), what="gradient")(x)
    np.testing.assert_allclose(g, np.exp(x) / np.exp(x).sum(), rtol=1e-12)


# --------------------------------------------------------------------------
# jvp / vjp


def test_jvp_and_vjp_match_central_differences():
    shapes = ((3,), (5, 3), (5,), (4, 5), (4,))
    args = decoder_args(3, 5, 4)
    J = central(decoder, args, 0)
    v, u = RNG.normal(size=3), RNG.normal(size=4)
    np.testing.assert_allclose(build(decoder, shapes, what="jvp")(*args, v), J @ v, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(build(decoder, shapes, what="vjp")(*args, u), u @ J, rtol=1e-6, atol=1e-8)
    # tuple wrt: v_<name>, tuple of outputs: u0, u1
    two = lambda h, W1, b1, W2, b2: (decoder(h, W1, b1, W2, b2), np.tanh(W1 @ h))  # noqa: E731
    vW = RNG.normal(size=(5, 3))
    jvp = build(two, shapes, wrt=(0, 1), what="jvp", wrt_is_tuple=True)(*args, v, vW)
    J1 = [central(lambda *a: two(*a)[i], args, 0) for i in range(2)]
    JW = [central(lambda *a: two(*a)[i], args, 1) for i in range(2)]
    for i in range(2):
        expected = J1[i] @ v + np.tensordot(JW[i], vW, axes=2)
        np.testing.assert_allclose(jvp[i], expected, rtol=1e-6, atol=1e-8)
    u1 = RNG.normal(size=5)
    vjp = build(two, shapes, wrt=(0, 1), what="vjp", wrt_is_tuple=True)(*args, u, u1)
    np.testing.assert_allclose(vjp[0], u @ J1[0] + u1 @ J1[1], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(vjp[1], np.tensordot(u, JW[0], 1) + np.tensordot(u1, JW[1], 1), rtol=1e-6, atol=1e-8)


def test_jvp_vjp_batched():
    shapes = ((3,), (5, 3), (5,), (4, 5), (4,))
    args = decoder_args(3, 5, 4, batch=(7,))
    v, u = RNG.normal(size=(7, 3)), RNG.normal(size=(7, 4))
    J = decoder_closed_form(*args)
    np.testing.assert_allclose(build(decoder, shapes, what="jvp")(*args, v), np.einsum("bij,bj->bi", J, v),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(build(decoder, shapes, what="vjp")(*args, u), np.einsum("bi,bij->bj", u, J),
                               rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# max / min: the selected element, ties as numpy.argmax (first)


def test_max_min_ties_pick_the_first():
    x = np.array([1.0, 3.0, 0.5, 3.0, -2.0, -2.0])
    gmax = build(lambda x: np.max(x), ((6,),), what="gradient")(x)
    gmin = build(lambda x: x.min(), ((6,),), what="gradient")(x)
    np.testing.assert_array_equal(gmax, np.eye(6)[np.argmax(x)])
    np.testing.assert_array_equal(gmin, np.eye(6)[np.argmin(x)])
    X = np.array([[1.0, 2.0, 2.0], [5.0, 5.0, 0.0]])
    J = build(lambda X: X.max(axis=1), ((2, 3),))(X)
    expected = np.zeros((2, 2, 3))
    expected[0, 0, 1] = expected[1, 1, 0] = 1.0
    np.testing.assert_array_equal(J, expected)
    # np.maximum: ties go to the first operand, as in the scalar form
    Jm = build(lambda a, b: np.maximum(a, b), ((2,), (2,)), wrt=(0, 1), wrt_is_tuple=True)(
        np.array([1.0, 2.0]), np.array([1.0, 3.0]))
    np.testing.assert_array_equal(Jm[0], np.diag([1.0, 0.0]))
    np.testing.assert_array_equal(Jm[1], np.diag([0.0, 1.0]))


# --------------------------------------------------------------------------
# every supported operation against central differences

POSITIVE = {"sqrt", "log", "log2", "log10", "log1p", "arccosh", "power", "cbrt", "reciprocal"}
UNIT = {"arcsin", "arccos", "arctanh"}

OPS = {
    "exp": lambda x, y: np.exp(x), "log": lambda x, y: np.log(x), "log1p": lambda x, y: np.log1p(x),
    "expm1": lambda x, y: np.expm1(x), "exp2": lambda x, y: np.exp2(x), "log2": lambda x, y: np.log2(x),
    "log10": lambda x, y: np.log10(x), "logaddexp": lambda x, y: np.logaddexp(x, y),
    "tanh": lambda x, y: np.tanh(x), "sin": lambda x, y: np.sin(x), "cos": lambda x, y: np.cos(x),
    "tan": lambda x, y: np.tan(x), "sqrt": lambda x, y: np.sqrt(x), "cbrt": lambda x, y: np.cbrt(x),
    "power": lambda x, y: np.power(x, y), "pow_const": lambda x, y: x ** 3 + 2.0 ** x,
    "abs": lambda x, y: np.abs(x), "square": lambda x, y: np.square(x),
    "reciprocal": lambda x, y: np.reciprocal(x), "arcsin": lambda x, y: np.arcsin(x),
    "arccos": lambda x, y: np.arccos(x), "arctan": lambda x, y: np.arctan(x),
    "arctan2": lambda x, y: np.arctan2(x, y), "hypot": lambda x, y: np.hypot(x, y),
    "sinh": lambda x, y: np.sinh(x), "cosh": lambda x, y: np.cosh(x), "arcsinh": lambda x, y: np.arcsinh(x),
    "arccosh": lambda x, y: np.arccosh(x + 1.5), "arctanh": lambda x, y: np.arctanh(x),
    "div": lambda x, y: x / (y + 3.0) - 1.0 / (x + 3.0), "neg_sub": lambda x, y: -(x - 2 * y),
    "maximum": lambda x, y: np.maximum(x, y), "minimum": lambda x, y: np.minimum(x, 0.1),
    "where": lambda x, y: np.where(x > y, x * y, np.sin(y)), "clip": lambda x, y: np.clip(x * y, -0.5, 0.5),
    "deg2rad": lambda x, y: np.deg2rad(x), "mean": lambda x, y: np.mean(x * y),
    "sum_axis": lambda x, y: np.sum(np.outer(x, y), axis=0), "max_axis": lambda x, y: np.outer(x, y).max(axis=1),
    "min_keepdims": lambda x, y: np.outer(x, y).min(axis=0, keepdims=True),
    "broadcast": lambda x, y: x[:, None] * y[None, :] + 1.0,
    "reshape": lambda x, y: (np.outer(x, y).reshape(2, 8) ** 2),
    "transpose": lambda x, y: np.outer(x, y**2).T, "slice": lambda x, y: x[1:3] * y[::2] + x[-1],
    "slice_2d": lambda x, y: np.outer(x, y)[1:, :2] * np.outer(x, y)[0, 1],
    "concatenate": lambda x, y: np.concatenate([x * 2, np.sin(y)]),
    "stack": lambda x, y: np.stack([x, y], axis=1) ** 2,
    "einsum": lambda x, y: np.einsum("i,j,j->i", x, y, y),
    "tensordot": lambda x, y: np.tensordot(np.outer(x, y), y, axes=1),
    "dot": lambda x, y: np.dot(x, y) * x, "matmul_const": lambda x, y: np.arange(8.0).reshape(2, 4) @ (x * y),
    "softmax": lambda x, y: np.exp(x - x.max()) / np.sum(np.exp(x - x.max())),
    "sigmoid": lambda x, y: 1.0 / (1.0 + np.exp(-x)), "relu": lambda x, y: np.maximum(x * y, 0.0),
    "expand_squeeze": lambda x, y: np.squeeze(np.expand_dims(x, 0) * y, axis=0),
    "norm_like": lambda x, y: np.sqrt(np.sum(x**2)) * y,
    "linalg_norm": lambda x, y: np.linalg.norm(x) * y + np.linalg.norm(np.outer(x, y), axis=1)
    + np.linalg.norm(y, ord=1) + np.linalg.norm(np.outer(x, y)),
    "constant_array": lambda x, y: np.array([1.0, -2.0, 0.5, 3.0]) * x,
    "heaviside_sign": lambda x, y: np.heaviside(x, 0.5) * y + np.sign(x) * x * y,
    "logical": lambda x, y: np.where((x > 0) & ~(y < 0.7) | (x < -1.5), x * y, np.cos(x)),
    "fmax_fmin_float_power": lambda x, y: np.fmax(x, y * 0.1) + np.fmin(x, 0.2) + np.float_power(y, x),
    "sum_keepdims_mean_axis": lambda x, y: np.outer(x, y).sum(axis=0, keepdims=True) / np.outer(y, x).mean(axis=1),
    "boolean_arithmetic": lambda x, y: (x > 0) * x + np.sum(y > 1.0) * y + np.outer(x > 0, y) @ y,
    "ellipsis_einsum": lambda x, y: np.einsum("...i,...i->...", np.outer(y, x), np.outer(y, x) + 1.0),
    "matmul_transpose": lambda x, y: (np.outer(x, y) @ np.outer(y, x).T).sum(axis=1),
    "inner_outer": lambda x, y: np.inner(x, y) * np.outer(x, y)[0],
    "swap_moveaxis": lambda x, y: np.moveaxis(np.outer(x, y).reshape(2, 2, 4), 0, -1).swapaxes(0, 1).sum(axis=2),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_each_operation_against_central_differences(name):
    f = OPS[name]
    x = RNG.uniform(0.2, 0.9, size=4) if name in POSITIVE | UNIT else RNG.normal(size=4)
    y = RNG.uniform(0.5, 1.5, size=4)
    kernel = build(f, ((4,), (4,)), wrt=(0, 1), wrt_is_tuple=True)
    J = kernel(x, y)
    np.testing.assert_allclose(J[0], central(f, [x, y], 0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(J[1], central(f, [x, y], 1), rtol=1e-6, atol=1e-7)
    # a batch of x against one y, and the torch target on the same batch
    x2 = x[::-1] * 0.9
    batched = kernel(np.stack([x, x2]), y)
    single = kernel(x2, y)
    for j in range(2):
        np.testing.assert_allclose(batched[j][0], J[j], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(batched[j][1], single[j], rtol=1e-12, atol=1e-12)
    if torch is not None:
        on_torch = build(f, ((4,), (4,)), wrt=(0, 1), wrt_is_tuple=True, target="torch")(
            torch.tensor(np.stack([x, x2])), torch.tensor(y))
        for j in range(2):
            np.testing.assert_allclose(on_torch[j].numpy(), batched[j], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# errors


def test_outputs_never_alias_the_arguments():
    x = np.arange(3.0)
    y = build(lambda x: x, ((3,),), what="function")(x)
    y[0] = 7.0
    assert x[0] == 0.0


def test_errors_name_the_operation():
    with pytest.raises(ArrayFormError, match="np.cumsum"):
        trace_array(lambda x: np.cumsum(x), ("x",), ((3,),))
    assert issubclass(ArrayFormError, TracingError)
    with pytest.raises(ArrayFormError, match="fancy"):
        trace_array(lambda x: x[np.array([0, 2])], ("x",), ((3,),))
    with pytest.raises(TracingError, match="np.where"):
        trace_array(lambda x: x if x[0] > 0 else -x, ("x",), ((3,),))
    with pytest.raises(ShapeError, match="scalar output"):
        derive(trace_array(lambda x: x * 2, ("x",), ((3,),)), (0,), False, "gradient")
    with pytest.raises(InvalidNameError):
        trace_array(lambda x: x, ("import",), ((3,),))
    with pytest.raises(InvalidNameError, match="torch"):
        print_module(trace_array(lambda torch: torch * 2, ("torch",), ((3,),)), "torch", "Function")
    with pytest.raises(ShapeError):
        trace_array(lambda x, A: A @ x, ("x", "A"), ((3,), (2, 4)))
    kernel = build(decoder, ((3,), (5, 3), (5,), (4, 5), (4,)))
    args = decoder_args(3, 5, 4)
    with pytest.raises(ValueError, match="argument W1"):
        kernel(args[0], args[1].T, *args[2:])


# --------------------------------------------------------------------------
# torch target


@needs_torch
def test_torch_float32_in_float32_out_and_values():
    shapes = ((32,), (256, 32), (256,), (64, 256), (64,))
    kernel = build(decoder, shapes, target="torch")
    args = decoder_args(32, 256, 64, batch=(3,))
    J = kernel(*(torch.tensor(a, dtype=torch.float32) for a in args))
    assert J.dtype == torch.float32 and tuple(J.shape) == (3, 64, 32)
    np.testing.assert_allclose(J.numpy(), decoder_closed_form(*args), rtol=1e-3, atol=1e-4)
    J64 = kernel(*(torch.tensor(a) for a in args))
    np.testing.assert_allclose(J64.numpy(), decoder_closed_form(*args), rtol=1e-10, atol=1e-12)


@needs_torch
def test_torch_gradcheck_and_gradgradcheck_through_the_jacobian():
    kernel = build(decoder, ((3,), (4, 3), (4,), (2, 4), (2,)), target="torch")
    args = tuple(torch.tensor(a, requires_grad=True) for a in decoder_args(3, 4, 2, batch=(2,)))
    penalty = lambda *a: ((kernel(*a) - 0.1) ** 2).sum()  # noqa: E731
    assert torch.autograd.gradcheck(penalty, args)
    assert torch.autograd.gradgradcheck(lambda *a: kernel(*a), args)
    # max, concatenate, slices, where, softmax and captured constants
    mixed_jacobian = build(mixed, ((3,), (2, 3)), wrt=(0, 1), wrt_is_tuple=True, target="torch")
    inputs = (torch.tensor(RNG.normal(size=(2, 3)), requires_grad=True),
              torch.tensor(RNG.normal(size=(2, 3)), requires_grad=True))
    assert torch.autograd.gradcheck(lambda *a: mixed_jacobian(*a), inputs)


@needs_torch
def test_torch_every_kind_on_the_meta_device():
    shapes = ((3, 4), (5, 4), (5, 2))
    for what, extra in (("jacobian", ()), ("jvp", ((3, 4),)), ("vjp", ((3, 2),))):
        kernel = build(attention, shapes, what=what, target="torch")
        args = [torch.empty((7,) + s, device="meta") for s in shapes] + [torch.empty(s, device="meta") for s in extra]
        result = kernel(*args)
        assert result.device.type == "meta" and result.dtype == torch.float32
    H = build(lambda w, X, y: np.sum(np.logaddexp(0, -y * (X @ w))), ((3,), (10, 3), (10,)), what="hessian",
              target="torch")
    out = H(torch.empty(2, 3, device="meta", dtype=torch.float64), torch.empty(10, 3, device="meta",
            dtype=torch.float64), torch.empty(10, device="meta", dtype=torch.float64))
    assert out.device.type == "meta" and tuple(out.shape) == (2, 3, 3) and out.dtype == torch.float64
    # values of a max / concat / slice program on the CPU
    f = lambda x: np.concatenate([x[1:] * x.max(), np.maximum(x, 0.0)])  # noqa: E731
    x = RNG.normal(size=4)
    J = build(f, ((4,),), target="torch")(torch.tensor(x))
    np.testing.assert_allclose(J.numpy(), central(f, [x], 0), rtol=1e-6, atol=1e-8)


C_CONST = np.array([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]])


def mixed(x, W):
    z = np.tanh(C_CONST @ x) * x.max() + np.concatenate([x[2:], W @ x])[1:]
    e = np.exp(z - z.max())
    return np.where(z > 0, e / e.sum(), z ** 2)


@needs_torch
def test_torch_compile_fullgraph():
    kernel = build(mixed, ((3,), (2, 3)), wrt=(0, 1), wrt_is_tuple=True, target="torch")
    compiled = torch.compile(kernel, fullgraph=True, backend="aot_eager")
    x, W = RNG.normal(size=(4, 3)), RNG.normal(size=(2, 3))
    result = compiled(torch.tensor(x), torch.tensor(W))
    for got, j in zip(result, (0, 1)):
        for b in range(4):
            np.testing.assert_allclose(got[b].numpy(), central(mixed, [x[b], W], j), rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------
# property: random compositions of supported operations


UNARY = [np.tanh, np.sin, lambda z: 1.0 / (1.0 + np.exp(-z)), lambda z: np.log1p(z * z),
         lambda z: np.exp(np.tanh(z)), lambda z: np.maximum(z, 0.1), lambda z: np.tanh(z) ** 2]  # bounded


@hypothesis.settings(derandomize=True, database=None, deadline=None, max_examples=12)
@hypothesis.given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, len(UNARY) - 1)), min_size=1, max_size=5),
                  st.integers(0, 10_000))
def test_random_compositions_against_central_differences(steps, seed):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(3, 3)) / 2

    def f(x, W):
        z = x
        for kind, u in steps:
            g = UNARY[u]
            if kind == 0:
                z = g(W @ z)
            elif kind == 1:
                z = g(z) * z[1:].sum()
            elif kind == 2:
                z = np.concatenate([g(z[:2]), z[2:] * A[0, 0]])
            elif kind == 3:
                e = np.exp(z - z.max())
                z = e / e.sum() + z
            elif kind == 4:
                z = np.einsum("ij,j->i", A, g(z)) + np.outer(z, z).sum(axis=1)
            elif kind == 5:
                z = np.where(z > 0, g(z), z * W[0, 1])
            else:  # a residual connection: two paths that meet again
                z = z + g(W.T @ z) * z[0]
        return z

    x, W = rng.normal(size=3), rng.normal(size=(3, 3)) / 2
    J = build(f, ((3,), (3, 3)), wrt=(0, 1), wrt_is_tuple=True)(x, W)
    Jx, JW = central(f, [x, W], 0), central(f, [x, W], 1)
    np.testing.assert_allclose(J[0], Jx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(J[1], JW, rtol=1e-5, atol=1e-6)
    u, v = rng.normal(size=3), rng.normal(size=3)
    np.testing.assert_allclose(build(f, ((3,), (3, 3)), what="vjp")(x, W, u), u @ Jx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(build(f, ((3,), (3, 3)), what="jvp")(x, W, v), Jx @ v, rtol=1e-5, atol=1e-6)


def test_gradients_run_in_reverse_order_and_share_the_backward_vectors():
    def loss(x, W1, b1, W2, b2, W3, b3):
        return np.sum((W3 @ np.tanh(W2 @ np.maximum(W1 @ x + b1, 0.0) + b2) + b3) ** 2)
    shapes = ((16,), (128, 16), (128,), (128, 128), (128,), (8, 128), (8,))
    program = trace_array(loss, ("x", "W1", "b1", "W2", "b2", "W3", "b3"), shapes)
    for wrt in ((0,), (1, 3)):
        derived = derive(program, wrt, len(wrt) > 1, "gradient")
        contractions = [eqn for eqn in derived.eqns if eqn.prim == "einsum"]
        # vector-matrix products only: no matrix-matrix product of weights
        assert all(eqn.out.ndim <= 1 or eqn.out.shape in {s for j in wrt for s in [shapes[j]]}
                   for eqn in contractions), [str(e) for e in contractions]
    shapes = ((4,), (6, 4), (6,), (6, 6), (6,), (3, 6), (3,))
    args = [RNG.normal(size=s) / 2 for s in shapes]
    g = build(loss, shapes, wrt=(1, 3), what="gradient", wrt_is_tuple=True)(*args)
    np.testing.assert_allclose(g[0], central(loss, args, 1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g[1], central(loss, args, 3), rtol=1e-6, atol=1e-7)


def test_many_paths_are_contracted_into_a_dense_factor():
    def f(x, A, B):
        z = x
        for _ in range(6):  # every step doubles the paths from x
            z = (A @ z) * np.tanh(B @ z) + z
        return z
    shapes = ((3,), (3, 3), (3, 3))
    args = [RNG.normal(size=s) / 2 for s in shapes]
    J = build(f, shapes, wrt=(0, 1), wrt_is_tuple=True)(*args)
    np.testing.assert_allclose(J[0], central(f, args, 0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(J[1], central(f, args, 1), rtol=1e-6, atol=1e-8)
    H = build(lambda x, A, B: np.sum(f(x, A, B)), shapes, what="hessian")(*args)
    g = lambda x, A, B: central(lambda x: np.sum(f(x, A, B)), [x], 0)  # noqa: E731
    np.testing.assert_allclose(H, central(g, args, 0, eps=1e-4), rtol=1e-4, atol=1e-5)


def test_program_and_printed_lines_read_like_the_math():
    program = trace_array(lambda x, W: np.tanh(W @ x), ("x", "W"), ((3,), (2, 3)))
    assert str(program) == (
        "{ lambda ; x:f[3] W:f[2,3]. let\n"
        "    _t0:f[2] = einsum[spec=(((0, 1), (1,)), (0,))] W x\n"
        "    _t1:f[2] = tanh _t0\n"
        "  in _t1 }")
    text = print_module(derive(program, (0,), False, "jacobian"), "torch", "Jacobian")
    body = text.split("_batch = ")[1].splitlines()[1:]
    assert body == [
        "    _t0 = _matvec(W, x)  # einsum ab,b->a [2]",
        "    _t1 = torch.tanh(_t0)  # tanh [2]",
        "    _t3 = torch.square(_t1)  # square [2]",
        "    _t4 = 1.0 - _t3  # sub [2]",
        "    _t5 = W * _t4[..., :, None]  # einsum ab,a->ab [2, 3]",
        "    return _out(_t5, _batch + (2, 3))",
    ]
    with pytest.raises(ValueError, match="title"):
        print_module(program, "numpy", 'x"""; import os')


def test_derivative_of_a_derivative():
    """The backward of a Jacobian penalty: vjp of the decoder Jacobian with respect to W1."""
    names, shapes = ("h", "W1", "b1", "W2", "b2"), ((3,), (5, 3), (5,), (4, 5), (4,))
    jacobian = derive(trace_array(decoder, names, shapes), (0,), False, "jacobian")
    backward = derive(jacobian, (1,), False, "vjp")
    assert [v.name for v in backward.inputs] == [*names, "u"]
    kernel = load_module(print_module(backward, "numpy", "Backward"), "numpy").kernel
    args = decoder_args(3, 5, 4)
    u = RNG.normal(size=(4, 3))
    dJ = central(lambda *a: decoder_closed_form(*a), args, 1)  # (4, 3) + (5, 3)
    np.testing.assert_allclose(kernel(*args, u), np.tensordot(u, dJ, axes=2), rtol=1e-6, atol=1e-8)
    H = derive(trace_array(decoder, names, shapes), (0,), False, "hessian")
    Hh = load_module(print_module(H, "numpy", "Hessian"), "numpy").kernel(*args)
    np.testing.assert_allclose(Hh, central(lambda *a: decoder_closed_form(*a), args, 0), rtol=1e-6, atol=1e-8)


@needs_torch
def test_captured_arrays_small_and_large():
    big = RNG.normal(size=(40, 30))
    mask = RNG.normal(size=30) > 0
    f = lambda x: np.tanh(big @ np.where(mask, x, 2.0 * x)) * np.array([1.0, 2.0, 3.0, 4.0, 5.0] * 8)  # noqa: E731
    x = RNG.normal(size=30)
    expected = central(f, [x], 0)
    for target in ("numpy", "torch"):
        kernel = build(f, ((30,),), target=target)
        J = kernel(x if target == "numpy" else torch.tensor(x))
        np.testing.assert_allclose(np.asarray(J), expected, rtol=1e-6, atol=1e-8)


def test_build_does_not_grow_with_width():
    """The same equations at hidden 64 and 4096: only the shapes change (no timing assert)."""
    texts = []
    for hidden in (64, 4096):
        shapes = ((32,), (hidden, 32), (hidden,), (784, hidden), (784,))
        program = trace_array(decoder, ("h", "W1", "b1", "W2", "b2"), shapes)
        derived = derive(program, (0,), False, "jacobian")
        texts.append([line for line in print_module(derived, "numpy", "Jacobian").split("def kernel")[1]
                      .replace(str(hidden), "H").splitlines() if "_t" in line])
    assert texts[0] == texts[1]


def test_flattening_the_input_is_a_view_not_an_identity_matrix():
    f = lambda x, W: np.tanh(W @ x.reshape(-1))  # noqa: E731
    shapes = ((4, 5), (3, 20))
    program = trace_array(f, ("x", "W"), shapes)
    x, W = RNG.normal(size=(4, 5)), RNG.normal(size=(3, 20)) / 4
    for what, extra in (("jacobian", ()), ("jvp", ((4, 5),)), ("vjp", ((3,),))):
        derived = derive(program, (0,), False, what)
        assert not {eqn.prim for eqn in derived.eqns} & {"eye", "diag_embed"}
        args = [x, W] + [RNG.normal(size=s) for s in extra]
        got = load_module(print_module(derived, "numpy", what), "numpy").kernel(*args)
        J = central(f, [x, W], 0)
        if what == "jacobian":
            expected = J
        elif what == "jvp":
            expected = np.tensordot(J, args[-1], axes=2)
        else:
            expected = np.tensordot(args[-1], J, axes=1)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)
    g = lambda x, W: np.sum(f(x, W) ** 2)  # noqa: E731
    H = build(g, shapes, what="hessian")(x, W)
    t = np.tanh(W @ x.ravel())
    closed = W.T @ ((2 * (1 - t**2) * (1 - 3 * t**2))[:, None] * W)  # d2/dx2 sum(tanh(W x)^2)
    np.testing.assert_allclose(H, closed.reshape(4, 5, 4, 5), rtol=1e-10, atol=1e-12)


def test_scalar_arguments_with_batches():
    f = lambda x, s: np.exp(s) * x + s ** 2  # noqa: E731
    x, s = RNG.normal(size=(5, 3)), RNG.normal(size=5)
    for target in ("numpy",) + (("torch",) if torch is not None else ()):
        kernel = build(f, ((3,), ()), wrt=(0, 1), wrt_is_tuple=True, target=target)
        got = kernel(*((x, s) if target == "numpy" else (torch.tensor(x), torch.tensor(s))))
        assert tuple(got[0].shape) == (5, 3, 3) and tuple(got[1].shape) == (5, 3)
        for b in range(5):
            np.testing.assert_allclose(np.asarray(got[0][b]), central(f, [x[b], s[b]], 0), rtol=1e-6, atol=1e-8)
            np.testing.assert_allclose(np.asarray(got[1][b]), central(f, [x[b], s[b]], 1), rtol=1e-6, atol=1e-8)


def test_same_bytes_in_every_process():
    import os
    import subprocess
    import sys

    script = (
        "import hashlib, numpy as np\n"
        "from symjac.front.array_trace import trace_array\n"
        "from symjac.derive.array_calculus import derive\n"
        "from symjac.emit.array_printing import print_module\n"
        "def f(Q, K, V):\n"
        "    s = Q @ K.T\n"
        "    e = np.exp(s - s.max(axis=-1, keepdims=True))\n"
        "    return np.concatenate([(e / e.sum(axis=-1, keepdims=True)) @ V, Q[:, :1]], axis=1)\n"
        "p = derive(trace_array(f, ('Q', 'K', 'V'), ((3, 4), (5, 4), (5, 2))), (0, 1), True, 'hessian')\n"
        "print(hashlib.sha256(print_module(p, 'torch', 'Hessian').encode()).hexdigest())\n")
    digests = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        digests.add(subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True,
                                   text=True).stdout)
    assert len(digests) == 1


def self_attention(X, Wq, Wk, Wv):
    Q, K, V = X @ Wq, X @ Wk, X @ Wv
    s = Q @ K.T
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)) @ V


def test_gradient_of_two_attention_layers_is_one_backward_sweep():
    f = lambda X, Wq, Wk, Wv: np.sum(self_attention(self_attention(X, Wq, Wk, Wv), Wq, Wk, Wv) ** 2)  # noqa: E731
    wide = ((64, 32), (32, 32), (32, 32), (32, 32))
    gradient = derive(trace_array(f, ("X", "Wq", "Wk", "Wv"), wide), (0, 1), True, "gradient")
    assert max(eqn.out.size for eqn in gradient.eqns) <= 64 * 64  # never a Jacobian-sized intermediate
    shapes = ((5, 3), (3, 3), (3, 3), (3, 3))
    args = [RNG.normal(size=s) / 2 for s in shapes]
    g = build(f, shapes, wrt=(0, 1), what="gradient", wrt_is_tuple=True)(*args)
    np.testing.assert_allclose(g[0], central(f, args, 0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g[1], central(f, args, 1), rtol=1e-6, atol=1e-8)
    u = RNG.normal(size=(5, 3))
    vjp = build(self_attention, shapes, wrt=(0,), what="vjp")(*args, u)
    np.testing.assert_allclose(vjp, np.tensordot(u, central(self_attention, args, 0), axes=2), rtol=1e-6, atol=1e-8)


def test_residual_paths_merge_instead_of_doubling():
    def resnet(x, W):
        z = x
        for _ in range(12):  # 2**12 paths from x to the output
            z = z + np.tanh(W @ z)
        return z
    program = trace_array(resnet, ("x", "W"), ((3,), (3, 3)))
    derived = derive(program, (0,), False, "jacobian")
    assert len(derived.eqns) < 200
    x, W = RNG.normal(size=3), RNG.normal(size=(3, 3)) / 3
    J = load_module(print_module(derived, "numpy", "Jacobian"), "numpy").kernel(x, W)
    np.testing.assert_allclose(J, central(resnet, [x, W], 0), rtol=1e-6, atol=1e-8)
    JW = build(resnet, ((3,), (3, 3)), wrt=(1,))(x, W)
    np.testing.assert_allclose(JW, central(resnet, [x, W], 1), rtol=1e-6, atol=1e-8)
