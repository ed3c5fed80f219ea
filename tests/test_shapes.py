"""Shape conventions of ``symjac.jacobian``, for both backends.

The contract (DESIGN.md): output shape followed by input shape, as in
torch.autograd.functional.jacobian; tuple outputs / tuple ``wrt`` give tuples
(``J[i][j]`` = d output i / d input j); extra leading dimensions are batch
dimensions broadcast across arguments like a numpy gufunc; ``out=`` writes
into a preallocated array; wrong trailing shapes are a ``ValueError`` naming
the argument and both shapes.

Expected values here are analytic (hand-written derivatives) or the unbatched
Jacobian evaluated point by point, so these tests do not lean on the oracles.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import symjac

BACKENDS = ["numpy", "cython"]
backends = pytest.mark.parametrize("backend", BACKENDS)

_BUILT: dict = {}


def build(f, *shapes, backend, **kwargs):
    """``symjac.jacobian`` memoised per test session (a Cython build costs ~2 s)."""
    key = (f.__name__, repr(shapes), repr(sorted(kwargs.items())), backend)
    if key not in _BUILT:
        _BUILT[key] = symjac.jacobian(f, *shapes, backend=backend, **kwargs)
    return _BUILT[key]


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name: fixed, and independent of test order."""
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


Y0 = np.array([0.8, 2.5e-5, 0.2])
K0 = np.array([0.04, 3.0e7, 1.0e4])


# --------------------------------------------------------------------------- #
# functions and their analytic Jacobians
# --------------------------------------------------------------------------- #
def rober(y, k):
    return np.array(
        [
            -k[0] * y[0] + k[2] * y[1] * y[2],
            k[0] * y[0] - k[1] * y[1] ** 2 - k[2] * y[1] * y[2],
            k[1] * y[1] ** 2,
        ]
    )


def rober_dy(y, k):
    return np.array(
        [
            [-k[0], k[2] * y[2], k[2] * y[1]],
            [k[0], -2 * k[1] * y[1] - k[2] * y[2], -k[2] * y[1]],
            [0.0, 2 * k[1] * y[1], 0.0],
        ]
    )


def rober_dk(y, k):
    return np.array(
        [
            [-y[0], 0.0, y[1] * y[2]],
            [y[0], -y[1] ** 2, -y[1] * y[2]],
            [0.0, y[1] ** 2, 0.0],
        ]
    )


def two_outputs(y, k):  # -> (scalar, (2,))
    return y[0] * k[1] + y[2], np.array([y[1] * k[0], y[2] ** 2 * k[2]])


def two_outputs_jac(y, k):
    ds_dy = np.array([k[1], 0.0, 1.0])
    ds_dk = np.array([0.0, y[0], 0.0])
    dv_dy = np.array([[0.0, k[0], 0.0], [0.0, 0.0, 2 * y[2] * k[2]]])
    dv_dk = np.array([[y[1], 0.0, 0.0], [0.0, 0.0, y[2] ** 2]])
    return ((ds_dy, ds_dk), (dv_dy, dv_dk))


def curve(t):  # () -> (2,)
    return np.array([np.sin(t), t**2])


def curve_jac(t):
    return np.array([np.cos(t), 2 * t])


def sq_norm(x):  # (3,) -> ()
    return np.sum(x**2)


def cube(t):  # () -> ()
    return t**3


def gram(M):  # (2, 3) -> (3, 3)
    return M.T @ M


def gram_jac(M):
    # d (M^T M)_ij / d M_kl = delta_jl M_ki + delta_il M_kj
    J = np.zeros((3, 3, 2, 3))
    for i in range(3):
        for j in range(3):
            for k in range(2):
                for l in range(3):
                    J[i, j, k, l] = (j == l) * M[k, i] + (i == l) * M[k, j]
    return J


def flow(state, rates):  # distinctive argument names for the error messages
    return rober(state, rates)


def matrix_arg(M):  # (2, 3) -> (2,)
    return np.sum(M**2, axis=1)


def layer(x, W1):
    return W1 @ x


W1_CONST = np.array([[0.3, -1.7], [2.2, 0.0]])


def layer_const(x):
    return W1_CONST @ x


def batched_reference(jac, *args_per_point):
    return np.array([jac(*a) for a in args_per_point])


# --------------------------------------------------------------------------- #
# basic conventions
# --------------------------------------------------------------------------- #
@backends
def test_vector_in_vector_out(backend):
    jac = build(rober, 3, 3, backend=backend)
    J = jac(Y0, K0)
    assert isinstance(J, np.ndarray)
    assert J.shape == (3, 3)
    assert J.dtype == np.float64
    np.testing.assert_allclose(J, rober_dy(Y0, K0), rtol=1e-13, atol=0)
    assert jac.backend == backend
    assert isinstance(jac.source, str) and jac.source
    sp = np.asarray(jac.sparsity)
    assert sp.dtype == np.bool_ and sp.shape == (3, 3)
    np.testing.assert_array_equal(sp, rober_dy(np.ones(3), np.ones(3)) != 0)


@backends
def test_shapes_by_name(backend):
    jac = build(rober, backend=backend, y=3, k=3, wrt="y")
    np.testing.assert_allclose(jac(Y0, K0), rober_dy(Y0, K0), rtol=1e-13, atol=0)


@backends
def test_shapes_as_tuples(backend):
    jac = build(rober, (3,), (3,), backend=backend)
    np.testing.assert_allclose(jac(Y0, K0), rober_dy(Y0, K0), rtol=1e-13, atol=0)


@backends
def test_scalar_input(backend):
    jac = build(curve, (), backend=backend)
    J = jac(0.7)
    assert np.shape(J) == (2,)
    np.testing.assert_allclose(J, curve_jac(0.7), rtol=1e-14)
    J = jac(np.float64(0.7))
    np.testing.assert_allclose(J, curve_jac(0.7), rtol=1e-14)
    # a batch of scalars
    t = np.linspace(0.1, 2.0, 5)
    Jb = jac(t)
    assert Jb.shape == (5, 2)
    np.testing.assert_allclose(Jb, np.array([curve_jac(ti) for ti in t]), rtol=1e-14)


@backends
def test_scalar_output(backend, rng):
    jac = build(sq_norm, 3, backend=backend)
    x = np.array([0.5, -1.0, 2.0])
    J = jac(x)
    assert np.shape(J) == (3,)
    np.testing.assert_allclose(J, 2 * x, rtol=1e-14)
    X = rng.normal(size=(4, 3))
    Jb = jac(X)
    assert Jb.shape == (4, 3)
    np.testing.assert_allclose(Jb, 2 * X, rtol=1e-14)


@backends
def test_scalar_input_scalar_output(backend):
    jac = build(cube, (), backend=backend)
    J = jac(1.5)
    assert np.shape(J) == ()
    np.testing.assert_allclose(J, 3 * 1.5**2, rtol=1e-14)
    t = np.array([0.5, 1.0, -2.0])
    Jb = jac(t)
    assert np.shape(Jb) == (3,)
    np.testing.assert_allclose(Jb, 3 * t**2, rtol=1e-14)


@backends
def test_matrix_input_matrix_output(backend, rng):
    jac = build(gram, (2, 3), backend=backend)
    M = rng.normal(size=(2, 3))
    J = jac(M)
    assert J.shape == (3, 3, 2, 3)
    np.testing.assert_allclose(J, gram_jac(M), rtol=1e-13, atol=1e-15)
    assert np.asarray(jac.sparsity).shape == (3, 3, 2, 3)
    Mb = rng.normal(size=(4, 2, 3))
    Jb = jac(Mb)
    assert Jb.shape == (4, 3, 3, 2, 3)
    np.testing.assert_allclose(Jb, np.array([gram_jac(m) for m in Mb]), rtol=1e-13, atol=1e-15)


# --------------------------------------------------------------------------- #
# wrt
# --------------------------------------------------------------------------- #
@backends
@pytest.mark.parametrize("wrt", ["y", 0])
def test_wrt_first_argument(backend, wrt):
    jac = build(rober, 3, 3, backend=backend, wrt=wrt)
    np.testing.assert_allclose(jac(Y0, K0), rober_dy(Y0, K0), rtol=1e-13, atol=0)


@backends
@pytest.mark.parametrize("wrt", ["k", 1])
def test_wrt_second_argument(backend, wrt):
    jac = build(rober, 3, 3, backend=backend, wrt=wrt)
    J = jac(Y0, K0)
    assert J.shape == (3, 3)
    np.testing.assert_allclose(J, rober_dk(Y0, K0), rtol=1e-13, atol=0)


@backends
@pytest.mark.parametrize("wrt", [("y", "k"), (0, "k"), (0, 1)])
def test_wrt_tuple(backend, wrt):
    jac = build(rober, 3, 3, backend=backend, wrt=wrt)
    J = jac(Y0, K0)
    assert isinstance(J, tuple) and len(J) == 2
    np.testing.assert_allclose(J[0], rober_dy(Y0, K0), rtol=1e-13, atol=0)
    np.testing.assert_allclose(J[1], rober_dk(Y0, K0), rtol=1e-13, atol=0)
    sp = jac.sparsity
    assert isinstance(sp, tuple) and len(sp) == 2


@backends
def test_wrt_tuple_order_is_kept(backend):
    jac = build(rober, 3, 3, backend=backend, wrt=("k", "y"))
    J = jac(Y0, K0)
    assert isinstance(J, tuple) and len(J) == 2
    np.testing.assert_allclose(J[0], rober_dk(Y0, K0), rtol=1e-13, atol=0)
    np.testing.assert_allclose(J[1], rober_dy(Y0, K0), rtol=1e-13, atol=0)


@backends
def test_wrt_one_tuple_gives_a_tuple(backend):
    jac = build(rober, 3, 3, backend=backend, wrt=("y",))
    J = jac(Y0, K0)
    assert isinstance(J, tuple) and len(J) == 1
    np.testing.assert_allclose(J[0], rober_dy(Y0, K0), rtol=1e-13, atol=0)


@backends
def test_tuple_outputs_single_wrt(backend, rng):
    jac = build(two_outputs, 3, 3, backend=backend)
    y, k = rng.normal(size=3), rng.normal(size=3)
    J = jac(y, k)
    (ds_dy, _), (dv_dy, _) = two_outputs_jac(y, k)
    assert isinstance(J, tuple) and len(J) == 2
    assert np.shape(J[0]) == (3,) and np.shape(J[1]) == (2, 3)
    np.testing.assert_allclose(J[0], ds_dy, rtol=1e-14)
    np.testing.assert_allclose(J[1], dv_dy, rtol=1e-14)


@backends
def test_tuple_outputs_tuple_wrt(backend, rng):
    jac = build(two_outputs, 3, 3, backend=backend, wrt=("y", "k"))
    y, k = rng.normal(size=3), rng.normal(size=3)
    J = jac(y, k)
    expected = two_outputs_jac(y, k)
    assert isinstance(J, tuple) and len(J) == 2
    for i in range(2):
        assert isinstance(J[i], tuple) and len(J[i]) == 2
        for j in range(2):
            assert np.shape(J[i][j]) == expected[i][j].shape, (i, j)
            np.testing.assert_allclose(J[i][j], expected[i][j], rtol=1e-14, err_msg=f"J[{i}][{j}]")
    # batched: every leaf gets the batch shape in front
    Y, K = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    Jb = jac(Y, K)
    for i in range(2):
        for j in range(2):
            ref = np.array([two_outputs_jac(Y[n], K[n])[i][j] for n in range(5)])
            assert np.shape(Jb[i][j]) == (5,) + expected[i][j].shape
            np.testing.assert_allclose(Jb[i][j], ref, rtol=1e-14, err_msg=f"batched J[{i}][{j}]")


@backends
def test_parameters_are_not_differentiated(backend):
    jac = build(rober, 3, 3, backend=backend)  # wrt defaults to y; k is a parameter
    k1 = np.array([1.0, 2.0, 3.0])
    J0, J1 = jac(Y0, K0), jac(Y0, k1)
    assert J0.shape == J1.shape == (3, 3)
    np.testing.assert_allclose(J0, rober_dy(Y0, K0), rtol=1e-13, atol=0)
    np.testing.assert_allclose(J1, rober_dy(Y0, k1), rtol=1e-13, atol=0)
    assert np.asarray(jac.sparsity).shape == (3, 3)


# --------------------------------------------------------------------------- #
# batches
# --------------------------------------------------------------------------- #
@backends
def test_batch_one_dim(backend, rng):
    jac = build(rober, 3, 3, backend=backend)
    Y = rng.uniform(0.1, 1.0, size=(7, 3))
    J = jac(Y, K0)  # parameter without batch dim, broadcast against the batch
    assert J.shape == (7, 3, 3)
    np.testing.assert_allclose(J, np.array([rober_dy(y, K0) for y in Y]), rtol=1e-13, atol=0)


@backends
def test_batch_two_dims(backend, rng):
    jac = build(rober, 3, 3, backend=backend)
    Y = rng.uniform(0.1, 1.0, size=(4, 5, 3))
    J = jac(Y, K0)
    assert J.shape == (4, 5, 3, 3)
    ref = np.array([[rober_dy(Y[i, j], K0) for j in range(5)] for i in range(4)])
    np.testing.assert_allclose(J, ref, rtol=1e-13, atol=0)


@backends
def test_batch_dims_broadcast_across_arguments(backend, rng):
    jac = build(rober, 3, 3, backend=backend)
    Y = rng.uniform(0.1, 1.0, size=(4, 1, 3))
    K = rng.uniform(0.1, 1.0, size=(5, 3))
    J = jac(Y, K)
    assert J.shape == (4, 5, 3, 3)
    ref = np.array([[rober_dy(Y[i, 0], K[j]) for j in range(5)] for i in range(4)])
    np.testing.assert_allclose(J, ref, rtol=1e-13, atol=0)


@backends
def test_batched_parameter_unbatched_input(backend, rng):
    jac = build(rober, 3, 3, backend=backend)
    K = rng.uniform(0.1, 1.0, size=(6, 3))
    J = jac(Y0, K)
    assert J.shape == (6, 3, 3)
    np.testing.assert_allclose(J, np.array([rober_dy(Y0, k) for k in K]), rtol=1e-13, atol=0)


@backends
def test_batch_both_arguments_same_batch(backend, rng):
    jac = build(rober, 3, 3, backend=backend)
    Y = rng.uniform(0.1, 1.0, size=(6, 3))
    K = rng.uniform(0.1, 1.0, size=(6, 3))
    J = jac(Y, K)
    assert J.shape == (6, 3, 3)
    np.testing.assert_allclose(J, np.array([rober_dy(y, k) for y, k in zip(Y, K)]), rtol=1e-13, atol=0)


@backends
def test_empty_batch(backend):
    jac = build(rober, 3, 3, backend=backend)
    J = jac(np.zeros((0, 3)), K0)
    assert J.shape == (0, 3, 3)


# --------------------------------------------------------------------------- #
# out=, dtypes, memory layouts
# --------------------------------------------------------------------------- #
@backends
def test_out_is_written_and_returned(backend, rng):
    jac = build(rober, 3, 3, backend=backend)
    buf = np.full((3, 3), np.nan)
    res = jac(Y0, K0, out=buf)
    assert res is buf
    np.testing.assert_allclose(buf, rober_dy(Y0, K0), rtol=1e-13, atol=0)
    Y = rng.uniform(0.1, 1.0, size=(7, 3))
    bufb = np.full((7, 3, 3), np.nan)
    res = jac(Y, K0, out=bufb)
    assert res is bufb
    np.testing.assert_allclose(bufb, np.array([rober_dy(y, K0) for y in Y]), rtol=1e-13, atol=0)


@backends
def test_out_with_wrong_shape_raises(backend):
    jac = build(rober, 3, 3, backend=backend)
    with pytest.raises(ValueError, match=r"out= must have shape \(3, 3\), got \(3, 4\)"):
        jac(Y0, K0, out=np.empty((3, 4)))


@backends
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_out_with_wrong_dtype_raises(backend, dtype):
    jac = build(rober, 3, 3, backend=backend)
    with pytest.raises(TypeError, match=f"out= must have dtype float64, got {np.dtype(dtype)}"):
        jac(Y0, K0, out=np.empty((3, 3), dtype=dtype))


@backends
def test_non_contiguous_out_is_refused_and_left_untouched(backend):
    """A strided out= is refused (_calling._check_out wants C-contiguous), and nothing is written."""
    jac = build(rober, 3, 3, backend=backend)
    base = np.zeros((3, 6))
    view = base[:, ::2]
    assert view.shape == (3, 3) and not view.flags.c_contiguous
    with pytest.raises(ValueError, match="C-contiguous"):
        jac(Y0, K0, out=view)
    assert not base.any(), "a refused out= was written"
    # the same for a batch, whose buffers go through the general path only
    bases = np.zeros((4, 3, 6))
    with pytest.raises(ValueError, match="C-contiguous"):
        jac(np.tile(Y0, (4, 1)), K0, out=bases[:, :, ::2])
    assert not bases.any(), "a refused out= was written"


@backends
def test_results_are_not_aliased_between_calls(backend):
    jac = build(rober, 3, 3, backend=backend)
    J0 = jac(Y0, K0)
    kept = J0.copy()
    jac(Y0 * 2, K0 * 3)
    np.testing.assert_array_equal(J0, kept)


@backends
def test_integer_inputs_accepted(backend):
    jac = build(rober, 3, 3, backend=backend)
    y, k = np.array([1, 2, 3]), np.array([4, 5, 6])
    J = jac(y, k)
    assert J.dtype == np.float64
    np.testing.assert_array_equal(J, jac(y.astype(float), k.astype(float)))
    np.testing.assert_allclose(J, rober_dy(y.astype(float), k.astype(float)), rtol=1e-14)
    # plain Python lists and ints are array-likes too
    np.testing.assert_array_equal(jac([1, 2, 3], [4, 5, 6]), J)


@backends
def test_float32_inputs_accepted(backend):
    jac = build(rober, 3, 3, backend=backend)
    y32 = np.array([0.8, 0.3, 0.2], dtype=np.float32)
    k32 = np.array([0.04, 3.0, 1.5], dtype=np.float32)
    J = jac(y32, k32)
    assert J.dtype == np.float64
    # float32 -> float64 is exact, so the result equals the float64 evaluation
    np.testing.assert_allclose(J, jac(y32.astype(np.float64), k32.astype(np.float64)), rtol=1e-15, atol=0)


@backends
def test_non_contiguous_views_accepted(backend, rng):
    jac = build(rober, 3, 3, backend=backend)
    big = rng.uniform(0.1, 1.0, size=(3, 4))
    y = big[:, 1]  # strided
    k = np.array([0.5, 0.0, 2.0, 0.0, 3.0, 0.0])[::2]  # strided
    J = jac(y, k)
    np.testing.assert_allclose(J, rober_dy(y.copy(), k.copy()), rtol=1e-13, atol=0)
    J = jac(y[::-1], k)  # negative stride
    np.testing.assert_allclose(J, rober_dy(y[::-1].copy(), k.copy()), rtol=1e-13, atol=0)
    # batched: a transposed (Fortran-ordered) batch and a stepped batch
    Yt = rng.uniform(0.1, 1.0, size=(3, 7)).T
    assert not Yt.flags.c_contiguous
    np.testing.assert_allclose(jac(Yt, K0), np.array([rober_dy(r, K0) for r in Yt]), rtol=1e-13, atol=0)
    Ys = rng.uniform(0.1, 1.0, size=(10, 3))[::3]
    np.testing.assert_allclose(jac(Ys, K0), np.array([rober_dy(r, K0) for r in Ys]), rtol=1e-13, atol=0)


# --------------------------------------------------------------------------- #
# wrong shapes
# --------------------------------------------------------------------------- #
@backends
def test_wrong_trailing_shape_of_input(backend):
    jac = build(flow, backend=backend, state=3, rates=3)
    with pytest.raises(ValueError, match=r"argument 'state' must have shape") as info:
        jac(np.ones(4), K0)
    msg = str(info.value)
    assert "state" in msg and "(3,)" in msg and "(4,)" in msg, msg


@backends
def test_wrong_trailing_shape_of_parameter(backend):
    jac = build(flow, backend=backend, state=3, rates=3)
    with pytest.raises(ValueError, match=r"argument 'rates' must have shape") as info:
        jac(Y0, np.ones(2))
    msg = str(info.value)
    assert "rates" in msg and "(3,)" in msg and "(2,)" in msg, msg


@backends
def test_wrong_trailing_shape_batched(backend):
    jac = build(flow, backend=backend, state=3, rates=3)
    with pytest.raises(ValueError, match=r"argument 'state' must have shape") as info:
        jac(np.ones((5, 4)), K0)
    msg = str(info.value)
    assert "state" in msg and "(3,)" in msg and ("(4,)" in msg or "(5, 4)" in msg), msg


@backends
def test_wrong_matrix_shape(backend):
    jac = build(matrix_arg, (2, 3), backend=backend)
    with pytest.raises(ValueError, match=r"argument 'M' must have shape") as info:
        jac(np.ones((3, 2)))
    msg = str(info.value)
    assert "M" in msg and "(2, 3)" in msg and "(3, 2)" in msg, msg


@backends
def test_non_broadcastable_batches(backend):
    jac = build(rober, 3, 3, backend=backend)
    with pytest.raises(ValueError, match=r"batch dimensions .* do not broadcast"):
        jac(np.ones((4, 3)), np.ones((5, 3)))


# --------------------------------------------------------------------------- #
# the motivating case: the Jacobian of a linear layer is its weight matrix
# --------------------------------------------------------------------------- #
@backends
def test_linear_layer_parameter_is_exact(backend, rng):
    jac = build(layer, 2, (2, 2), backend=backend)
    W1 = rng.normal(size=(2, 2))
    J = jac(np.array([0.3, -0.7]), W1)
    assert np.array_equal(J, W1), (J, W1)
    # batched input, shared weights
    X = rng.normal(size=(6, 2))
    Jb = jac(X, W1)
    assert Jb.shape == (6, 2, 2)
    assert np.array_equal(Jb, np.broadcast_to(W1, (6, 2, 2)))
    # batched weights
    W = rng.normal(size=(6, 2, 2))
    assert np.array_equal(jac(X, W), W)


@backends
def test_linear_layer_captured_constant_is_exact(backend, rng):
    jac = build(layer_const, 2, backend=backend)
    J = jac(np.array([0.3, -0.7]))
    assert np.array_equal(J, W1_CONST), (J, W1_CONST)
    np.testing.assert_array_equal(np.asarray(jac.sparsity), W1_CONST != 0)
    X = rng.normal(size=(3, 2))
    assert np.array_equal(jac(X), np.broadcast_to(W1_CONST, (3, 2, 2)))
