"""The array form through the public API: form="array" | "scalar" | "auto" on
every derivative kind, both forms against each other and against central
differences, batches, pickling, torch (any device, autograd through it)."""

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import symjac
import symjac.torch
from oracles import central_difference_jacobian
from symjac.front.array_program import ArrayFormError

RNG = np.random.default_rng(7)


def decoder(h, W1, b1, W2, b2):
    return W2 @ np.tanh(W1 @ h + b1) + b2


def weights(k, hidden, rng=RNG):
    return (rng.normal(size=(hidden, k)) / np.sqrt(k), rng.normal(size=hidden),
            rng.normal(size=(k, hidden)) / np.sqrt(hidden), rng.normal(size=k))


def logistic(w, X, y):
    return np.sum(np.logaddexp(0, -y * (X @ w)))


def closed_form_jacobian(h, W1, b1, W2, b2):
    t = np.tanh(h @ W1.T + b1)
    return np.einsum("oj,...j,jk->...ok", W2, 1 - t ** 2, W1)


def test_auto_picks_the_array_form_for_dense_linear_algebra_and_scalar_for_small():
    small = symjac.jacobian(decoder, h=2, W1=(3, 2), b1=3, W2=(2, 3), b2=2, wrt="h", backend="numpy")
    wide = symjac.jacobian(decoder, h=32, W1=(256, 32), b1=256, W2=(32, 256), b2=32, wrt="h")
    assert small.form == "scalar" and small.backend == "numpy"
    assert wide.form == "array" and wide.backend == "numpy-array" and "array form" in repr(wide)
    h = RNG.normal(size=(4, 32))
    W = weights(32, 256)
    np.testing.assert_allclose(wide(h, *W), closed_form_jacobian(h, *W), rtol=1e-12, atol=1e-13)


def test_auto_takes_the_array_form_for_a_max_over_many_elements_except_in_hessians():
    def objective(x):
        return np.max(x) + np.sum(x ** 2)

    n = 10_000  # the scalar form built this gradient in 33 s, one comparison per element
    gradient = symjac.gradient(objective, x=n)
    assert gradient.form == "array"
    x = RNG.normal(size=(3, n))
    x[1, 17] = x[1, 4000] = 9.0  # a tie: numpy's argmax convention, the first one
    expected = 2 * x
    expected[np.arange(3), np.argmax(x, axis=1)] += 1
    np.testing.assert_array_equal(gradient(x), expected)
    assert symjac.gradient(objective, x=symjac.api.AUTO_ARRAY_MIN_SELECTED - 1).form == "scalar"
    assert symjac.hessian(objective, x=100, backend="numpy").form == "scalar"  # sparse, not a dense n x n


def test_array_form_hessian_source_does_not_grow_with_the_square_of_its_size():
    def cubes(x):
        return np.sum(x ** 3) + x[0] * x[1]

    sizes = {n: len(symjac.hessian(cubes, x=n, form="array").source) for n in (50, 2000)}
    assert sizes[2000] < 1.1 * sizes[50]  # the packed indices are made at import, not printed
    hessian = symjac.hessian(cubes, x=2000, form="array")
    x = RNG.normal(size=2000)
    rows, columns = np.tril_indices(2000)
    np.testing.assert_array_equal(hessian.values(x), hessian(x)[rows, columns])
    assert hessian(x)[1, 0] == 1 and hessian(x)[5, 5] == 6 * x[5]


SMALL = dict(h=3, W1=(4, 3), b1=4, W2=(3, 4), b2=3)


@pytest.mark.parametrize("wrt", ["h", ("h", "W1"), ("W2", "b2")])
def test_jacobians_of_both_forms_and_differences_agree(wrt):
    arrays = symjac.jacobian(decoder, wrt=wrt, form="array", **SMALL)
    scalars = symjac.jacobian(decoder, wrt=wrt, form="scalar", backend="numpy", **SMALL)
    args = [RNG.normal(size=(2,) + tuple(np.atleast_1d(SMALL[name]))) for name in SMALL]
    got, expected = arrays(*args), scalars(*args)
    names = list(SMALL)
    for index, name in enumerate(wrt if isinstance(wrt, tuple) else (wrt,)):
        a = got[index] if isinstance(wrt, tuple) else got
        s = expected[index] if isinstance(wrt, tuple) else expected
        np.testing.assert_allclose(a, s, rtol=1e-12, atol=1e-13)
        for point in range(2):
            point_args = [arg[point] for arg in args]
            numeric = central_difference_jacobian(decoder, point_args, names.index(name))
            np.testing.assert_allclose(a[point], numeric, rtol=1e-6, atol=1e-7)


def test_every_derivative_kind_in_the_array_form():
    X, y = RNG.normal(size=(30, 5)), np.sign(RNG.normal(size=30))
    w = RNG.normal(size=5) / 3
    s = 1 / (1 + np.exp(-y * (X @ w)))
    grad = symjac.gradient(logistic, w=5, X=(30, 5), y=30, form="array")
    hess = symjac.hessian(logistic, w=5, X=(30, 5), y=30, form="array")
    value = symjac.function(logistic, w=5, X=(30, 5), y=30, form="array")
    np.testing.assert_allclose(value(w, X, y), np.sum(np.log1p(np.exp(-y * (X @ w)))), rtol=1e-13)
    np.testing.assert_allclose(grad(w, X, y), X.T @ (-y * (1 - s)), rtol=1e-12, atol=1e-13)
    closed = X.T @ ((s * (1 - s))[:, None] * X)
    np.testing.assert_allclose(hess(w, X, y), closed, rtol=1e-12, atol=1e-13)
    rows, cols = hess.indices()
    np.testing.assert_allclose(hess.values(w, X, y), closed[rows, cols], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(hess.sparse(w, X, y).toarray(), closed, rtol=1e-12, atol=1e-13)
    jvp = symjac.jvp(decoder, wrt="h", form="array", **SMALL)
    vjp = symjac.vjp(decoder, wrt="h", form="array", **SMALL)
    args = [RNG.normal(size=np.atleast_1d(SMALL[name])) for name in SMALL]
    J = central_difference_jacobian(decoder, args, 0)
    v, u = RNG.normal(size=3), RNG.normal(size=3)
    np.testing.assert_allclose(jvp(*args, v), J @ v, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(vjp(*args, u), u @ J, rtol=1e-6, atol=1e-8)
    for obj in (grad, hess, value, jvp, vjp):
        assert obj.form == "array"


def test_hessian_blocks_for_a_tuple_wrt_match_the_scalar_form():
    def quadratic(x, A, z):
        return x @ A @ x + np.sin(z) @ (A @ x)

    shapes = dict(x=3, A=(3, 3), z=3)
    arrays = symjac.hessian(quadratic, wrt=("x", "z"), form="array", **shapes)
    scalars = symjac.hessian(quadratic, wrt=("x", "z"), form="scalar", backend="numpy", **shapes)
    args = (RNG.normal(size=3), RNG.normal(size=(3, 3)), RNG.normal(size=3))
    for a_row, s_row in zip(arrays(*args), scalars(*args)):
        for a, s in zip(a_row, s_row):
            np.testing.assert_allclose(a, s, rtol=1e-12, atol=1e-13)
    # the packed lower triangle is laid out like the scalar form's wherever the scalar one has a value
    full = arrays.sparse(*args).toarray()
    np.testing.assert_allclose(full, scalars.sparse(*args).toarray(), rtol=1e-12, atol=1e-13)


def test_batches_broadcast_across_arguments_out_and_shape_errors():
    jac = symjac.jacobian(decoder, wrt="h", form="array", **SMALL)
    W = [np.stack([w, 2 * w]) for w in weights(3, 4)]  # a batch of two weight sets
    h = RNG.normal(size=(5, 1, 3))  # against five inputs each
    J = jac(h, *W)
    assert J.shape == (5, 2, 3, 3)
    for i in range(5):
        for j in range(2):
            np.testing.assert_allclose(J[i, j], closed_form_jacobian(h[i, 0], *[w[j] for w in W]), rtol=1e-12)
    out = np.empty((5, 2, 3, 3))
    assert jac(h, *W, out=out) is out and np.array_equal(out, J)
    with pytest.raises(ValueError, match=r"'W1' must have shape \(4, 3\)"):
        jac(h, np.ones((4, 4)), *W[1:])


def test_form_array_names_what_it_cannot_do_and_auto_falls_back():
    def cumulative(x):
        return np.cumsum(x) * x[0]

    with pytest.raises(ArrayFormError, match=r"cumsum.*form=\"scalar\""):
        symjac.jacobian(cumulative, x=4, form="array")
    assert symjac.jacobian(cumulative, x=4, backend="numpy").form == "scalar"
    with pytest.raises(ArrayFormError, match="only the jacobian kernel"):
        symjac.jacobian(decoder, wrt="h", form="array", kernels=("jacobian", "function"), **SMALL)


def test_array_objects_pickle_differentiate_again_and_give_linear_operators():
    jac = symjac.jacobian(decoder, wrt="h", form="array", **SMALL)
    args = [RNG.normal(size=np.atleast_1d(SMALL[name])) for name in SMALL]
    twin = pickle.loads(pickle.dumps(jac))
    assert twin.form == "array" and np.array_equal(twin(*args), jac(*args))
    operator = jac.linear_operator(*args)
    v = RNG.normal(size=3)
    np.testing.assert_allclose(operator.matvec(v), jac(*args) @ v, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(operator.rmatvec(v), v @ jac(*args), rtol=1e-13, atol=1e-14)
    second = symjac.jacobian(jac, wrt="h")  # d J / d h in the array form
    assert second.form == "array" and second(*args).shape == (3, 3, 3)
    numeric = central_difference_jacobian(lambda *a: jac(*a), args, 0)
    np.testing.assert_allclose(second(*args), numeric, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------
# both forms agree on random programs (hypothesis)

UNARY = [np.tanh, np.sin, np.exp, lambda z: np.maximum(z, 0.1 * z), lambda z: np.logaddexp(0, z), np.square]


@st.composite
def programs(draw):
    layers = draw(st.lists(st.tuples(st.integers(0, len(UNARY) - 1), st.booleans()), min_size=1, max_size=3))
    reduce = draw(st.sampled_from(["none", "sum", "softmax"]))

    def f(x, W):
        z = x
        for op, mix in layers:
            z = UNARY[op](W @ z if mix else z) * 0.5
        if reduce == "sum":
            return np.sum(z * z, axis=0, keepdims=True)
        if reduce == "softmax":
            e = np.exp(z - np.max(z))
            return e / np.sum(e)
        return z

    return f


@settings(max_examples=12, derandomize=True, database=None, deadline=None)
@given(programs())
def test_random_programs_agree_in_both_forms_and_with_differences(f):
    arrays = symjac.jacobian(f, x=3, W=(3, 3), form="array")
    scalars = symjac.jacobian(f, x=3, W=(3, 3), form="scalar", backend="numpy")
    rng = np.random.default_rng(3)
    x, W = rng.normal(size=3), rng.normal(size=(3, 3)) / 2
    np.testing.assert_allclose(arrays(x, W), scalars(x, W), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(arrays(x, W), central_difference_jacobian(f, [x, W], 0), rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------
# symjac.torch in the array form


def _torch_weights(k, hidden, dtype):
    return [torch.as_tensor(w, dtype=dtype) for w in weights(k, hidden, np.random.default_rng(1))]


def test_torch_array_form_dtypes_autograd_devices_and_pickling(tmp_path):
    tj = symjac.torch.jacobian(decoder, wrt="h", form="array", **SMALL)
    assert isinstance(tj, symjac.torch.TorchArrayFunction) and tj.form == "array"
    W = _torch_weights(3, 4, torch.float64)
    h = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    J = tj(h, *W)
    np.testing.assert_allclose(J.detach().numpy(), closed_form_jacobian(h.detach().numpy(), *[w.numpy() for w in W]),
                               rtol=1e-12, atol=1e-13)
    assert tj(h.float(), *[w.float() for w in W]).dtype == torch.float32
    assert torch.autograd.gradcheck(lambda x, W1: tj(x, W1, *W[1:]), (h, W[0].clone().requires_grad_()))
    assert torch.autograd.gradgradcheck(lambda x: tj(x, *W), (h,))
    meta = tj(*(t.to("meta") for t in (h, *W)))  # no CPU-only call anywhere in the generated code
    assert meta.device.type == "meta" and meta.shape == (2, 3, 3)
    script = textwrap.dedent("""
        import pickle, sys, torch
        tj = pickle.loads(sys.stdin.buffer.read())
        W = [torch.ones(4, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.float64),
             torch.ones(3, 4, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)]
        print(float(tj(torch.zeros(3, dtype=torch.float64), *W).sum()))
    """)
    env = {**os.environ, "SYMJAC_CACHE_DIR": str(tmp_path / "empty-cache")}
    done = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(tj), capture_output=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert float(done.stdout) == pytest.approx(36.0)  # J = W2 W1 at t = 0: nine entries of 4


def test_torch_array_form_argument_errors():
    tj = symjac.torch.jacobian(decoder, wrt="h", form="array", **SMALL)
    W = _torch_weights(3, 4, torch.float64)
    h = torch.randn(3, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"argument 'W1' .* must be a torch\.Tensor, got ndarray"):
        tj(h, W[0].numpy(), *W[1:])
    with pytest.raises(TypeError, match=r"argument 'h' .* has dtype torch\.int64; .*floating-point"):
        tj(h.long(), *W)
    with pytest.raises(TypeError, match=r"takes 5 arguments \(h, W1, b1, W2, b2\), got 4"):
        tj(h, *W[:3])
    with pytest.raises(symjac.ArgumentError, match="twice"):
        tj(h, *W, h=h)
    torch.testing.assert_close(tj(b2=W[3], h=h, W1=W[0], b1=W[1], W2=W[2]), tj(h, *W))
    with pytest.raises(ValueError, match=r"argument W1 must have shape \(4, 3\)"):
        tj(h, W[0].T, *W[1:])


def test_torch_auto_takes_the_array_form_from_small_decoders():
    """symjac.torch trains through the result: auto takes the array form from the
    4 -> 8 -> 4 decoder (api.AUTO_TORCH_OPERATIONS_PER_ARRAY_OPERATION)."""
    def shapes(k):
        return dict(h=k, W1=(2 * k, k), b1=2 * k, W2=(k, 2 * k), b2=k)

    assert symjac.torch.jacobian(decoder, wrt="h", backend="numpy", **shapes(2)).form == "scalar"
    for k in (4, 8):
        assert symjac.torch.jacobian(decoder, wrt="h", **shapes(k)).form == "array"
        assert symjac.jacobian(decoder, wrt="h", backend="numpy", **shapes(k)).form == "scalar"  # numpy: by size


def test_torch_compile_sees_plain_operations():
    tj = symjac.torch.jacobian(decoder, wrt="h", form="array", **SMALL)
    W = _torch_weights(3, 4, torch.float64)
    compiled = torch.compile(lambda x: tj(x, *W), fullgraph=True, backend="aot_eager")
    h = torch.randn(3, 3, dtype=torch.float64)
    torch.testing.assert_close(compiled(h), tj(h, *W))


def test_codegen_writes_the_array_form_as_a_standalone_numpy_module(tmp_path):
    from symjac.codegen import write_module

    path, _ = write_module(decoder, (), SMALL, wrt="h", form="array", name="wide_decoder", out_dir=tmp_path)
    assert path.suffix == ".py" and "numpy-array" not in path.read_text().splitlines()[0]
    script = textwrap.dedent("""
        import sys, numpy as np
        sys.path.insert(0, sys.argv[1])
        import wide_decoder as m
        rng = np.random.default_rng(0)
        args = [rng.normal(size=s) for s in [(2, 3), (4, 3), (4,), (3, 4), (3,)]]
        t = np.tanh(args[0] @ args[1].T + args[2])
        closed = np.einsum("oj,bj,jk->bok", args[3], 1 - t ** 2, args[1])
        assert np.abs(m.jacobian(*args) - closed).max() < 1e-13
        assert m.jacobian(h=args[0][0], W1=args[1], b1=args[2], W2=args[3], b2=args[4]).shape == (3, 3)
        assert m.sparsity().all() and m.jacobian_values(*args).shape == (2, 9)
        print("sympy" in sys.modules, "symjac" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
