"""symjac.torch: compiled kernels as differentiable torch operators.

Oracles: torch's own autograd on the same function written in torch
(torch.autograd.functional.jacobian, with create_graph=True for gradients of
a Jacobian penalty), symjac's numpy results, gradcheck / gradgradcheck and
torch.library.opcheck. Compiled objects are built once per module (the
decoder with the Cython backend, the rest with the numpy backend, which
needs no compiler), so the file costs a handful of builds.
"""

import functools

import numpy as np
import pytest
import torch

import symjac.torch
from symjac.examples import jacobian_penalty
from symjac.examples.jacobian_penalty import decoder

K, M = 3, 5  # decoder K -> M -> K; jacobian_penalty's test run uses the same sizes (shared builds)
SHAPES = {"h": K, "W1": (M, K), "b1": M, "W2": (K, M), "b2": K}


def decoder_t(h, W1, b1, W2, b2):
    return torch.tanh(h @ W1.T + b1) @ W2.T + b2


def physics(x, k):
    """A small model with several outputs and parameters (numpy)."""
    return np.array([np.sin(x[0]) * x[1] * k[0], x[0] ** 2 + k[1] * np.exp(x[1] / 4), x[1] * k[0] - x[0]])


def physics_t(x, k):
    return torch.stack([torch.sin(x[..., 0]) * x[..., 1] * k[..., 0],
                        x[..., 0] ** 2 + k[..., 1] * torch.exp(x[..., 1] / 4),
                        x[..., 1] * k[..., 0] - x[..., 0]], -1)


@functools.cache
def decoder_jacobian():
    return symjac.torch.jacobian(decoder, wrt="h", **SHAPES)  # default backend: Cython


@functools.cache
def decoder_jacobian_numpy():
    return symjac.torch.jacobian(decoder, wrt="h", backend="numpy", **SHAPES)


@functools.cache
def physics_function():
    return symjac.torch.function(physics, x=2, k=2, backend="numpy")


@functools.cache
def physics_function_and_jacobian():
    return symjac.torch.function_and_jacobian(physics, x=2, k=2, wrt=("x", "k"), backend="numpy")


def weights(batch=(4,), dtype=torch.float64, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    shapes = [batch + (K,), (M, K), (M,), (K, M), (K,)]
    return [torch.randn(shape, generator=g, dtype=dtype).requires_grad_(requires_grad) for shape in shapes]


def reference_jacobians(h, W1, b1, W2, b2, create_graph=False):
    """torch.autograd.functional.jacobian, one sample at a time: (N, K, K)."""
    return torch.stack([torch.autograd.functional.jacobian(lambda x: decoder_t(x, W1, b1, W2, b2), row,
                                                           create_graph=create_graph) for row in h])


def relative_error(got, want):
    return ((got - want).abs().max() / want.abs().max()).item()


# ---------------------------------------------------------------- values

def test_jacobian_values_match_torch_and_symjac():
    jac = decoder_jacobian()
    args = weights()
    J = jac(*args)
    assert J.shape == (4, K, K) and J.dtype == torch.float64
    assert relative_error(J, reference_jacobians(*args)) < 1e-13
    numpy_result = jac.compiled(*(a.detach().numpy() for a in args))
    assert np.array_equal(J.detach().numpy(), numpy_result)
    one = jac(args[0][0], *args[1:])                           # a single point: no batch dimensions
    assert one.shape == (K, K) and torch.allclose(one, J[0], rtol=0, atol=1e-15)


def test_results_share_memory_with_the_kernel_output():
    jac = decoder_jacobian()
    J = jac(*weights(requires_grad=False))
    assert J.is_contiguous() and J.numpy().flags.c_contiguous and J.numpy().base is not None


# ---------------------------------------------------------------- gradients

def test_penalty_gradients_match_autograd_functional_jacobian():
    jac = decoder_jacobian()
    args = weights(batch=(6,))
    eye = torch.eye(K, dtype=torch.float64)
    loss = ((jac(*args) - eye) ** 2).sum()
    got = torch.autograd.grad(loss, args, allow_unused=True)
    reference = ((reference_jacobians(*args, create_graph=True) - eye) ** 2).sum()
    want = torch.autograd.grad(reference, args[:4])             # J does not depend on b2
    assert abs(loss.item() - reference.item()) <= 1e-12 * abs(reference.item())
    for name, g, w in zip("h W1 b1 W2".split(), got, want):
        assert relative_error(g, w) < 1e-10, name
    assert torch.count_nonzero(got[4]) == 0                     # b2: zero, not missing


def test_gradcheck_jacobian():
    args = weights(batch=(2,))
    assert torch.autograd.gradcheck(decoder_jacobian(), args)


def test_gradgradcheck_jacobian():
    # second order of the Jacobian operator (third derivatives of the decoder)
    args = weights(batch=(2,), seed=1)
    assert torch.autograd.gradgradcheck(decoder_jacobian_numpy(), args)


def test_function_values_gradients_and_double_backward():
    f = physics_function()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(f(x, k), physics_t(x, k), rtol=1e-14, atol=0)
    assert torch.autograd.gradcheck(f, (x, k))
    assert torch.autograd.gradgradcheck(f, (x, k))


def test_function_inside_a_torch_model():
    # a symjac-compiled model between torch layers; gradients reach the torch layers' weights
    f = physics_function()
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 2).double()
    k = torch.tensor([0.7, -0.3], dtype=torch.float64, requires_grad=True)
    data = torch.randn(8, 4, dtype=torch.float64)
    ours = f(layer(data), k).pow(2).sum()
    ours_grads = torch.autograd.grad(ours, [layer.weight, layer.bias, k])
    theirs = physics_t(layer(data), k).pow(2).sum()
    theirs_grads = torch.autograd.grad(theirs, [layer.weight, layer.bias, k])
    for got, want in zip(ours_grads, theirs_grads):
        assert relative_error(got, want) < 1e-12


def test_function_and_jacobian():
    fj = physics_function_and_jacobian()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 2, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    value, (Jx, Jk) = fj(x, k)
    assert torch.allclose(value, physics_t(x, k), rtol=1e-14, atol=0)
    want = torch.autograd.functional.jacobian(physics_t, (x[1], k))
    assert torch.allclose(Jx[1], want[0], rtol=1e-13, atol=1e-15)
    assert torch.allclose(Jk[1], want[1], rtol=1e-13, atol=1e-15)
    assert torch.autograd.gradcheck(lambda x, k: torch.cat([t.flatten() for t in
                                                            (lambda v, j: (v, *j))(*fj(x, k))]), (x, k))


# ---------------------------------------------------------------- dtypes and batches

def test_float32_in_float32_out():
    jac = decoder_jacobian()
    args64 = weights(batch=(3,))
    args32 = [a.detach().float().requires_grad_() for a in args64]
    J32 = jac(*args32)
    assert J32.dtype == torch.float32
    assert torch.allclose(J32.double(), jac(*args64), rtol=1e-5, atol=1e-6)
    J32.sum().backward()
    assert all(a.grad.dtype == torch.float32 for a in args32)
    grads64 = torch.autograd.grad(jac(*args64).sum(), args64)
    for a, g in zip(args32, grads64):
        assert torch.allclose(a.grad.double(), g, rtol=1e-4, atol=1e-5)


def test_batch_dimensions_broadcast_and_gradients_reduce():
    jac = decoder_jacobian()
    g = torch.Generator().manual_seed(4)
    h = torch.randn(2, 3, K, generator=g, dtype=torch.float64, requires_grad=True)
    W1 = torch.randn(3, M, K, generator=g, dtype=torch.float64, requires_grad=True)  # one W1 per column
    b1, W2, b2 = (torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True) for s in ((M,), (K, M), (K,)))
    J = jac(h, W1, b1, W2, b2)
    assert J.shape == (2, 3, K, K)
    for i in range(2):
        for j in range(3):
            want = torch.autograd.functional.jacobian(lambda x: decoder_t(x, W1[j], b1, W2, b2), h[i, j])
            assert torch.allclose(J[i, j], want, rtol=1e-13, atol=1e-15)
    (J ** 2).sum().backward()
    assert h.grad.shape == h.shape and W1.grad.shape == W1.shape and W2.grad.shape == W2.shape
    loss = sum((torch.autograd.functional.jacobian(lambda x: decoder_t(x, W1[j], b1, W2, b2), h[i, j],
                                                   create_graph=True) ** 2).sum()
               for i in range(2) for j in range(3))
    want = torch.autograd.grad(loss, [h, W1, b1, W2])
    for got, w in zip([h.grad, W1.grad, b1.grad, W2.grad], want):
        assert relative_error(got, w) < 1e-10


# ---------------------------------------------------------------- torch.compile, vmap, registration

def test_torch_compile_fullgraph():
    jac = decoder_jacobian()
    eye = torch.eye(K, dtype=torch.float64)

    def loss(*args):
        return ((jac(*args) - eye) ** 2).sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    for batch in ((4,), (7,)):
        args = weights(batch=batch, seed=5)
        got = compiled(*args)
        got_grads = torch.autograd.grad(got, args[:4])
        want = loss(*args)
        want_grads = torch.autograd.grad(want, args[:4])
        assert torch.allclose(got, want, rtol=1e-14, atol=0)
        for g, w in zip(got_grads, want_grads):
            assert torch.allclose(g, w, rtol=1e-13, atol=1e-15)


def test_vmap_matches_batched_call():
    jac = decoder_jacobian()
    args = weights(batch=(3, 2), requires_grad=False)
    batched = jac(*args)
    mapped = torch.func.vmap(jac, in_dims=(1, None, None, None, None))(*args)   # vmapped over dim 1 of h
    assert torch.allclose(mapped, batched.transpose(0, 1), rtol=0, atol=0)
    W1s = torch.stack([args[1], 2 * args[1]])
    both = torch.func.vmap(jac, in_dims=(None, 0, None, None, None))(args[0], W1s, *args[2:])
    assert both.shape == (2, 3, 2, K, K)
    assert torch.allclose(both[1], jac(args[0], 2 * args[1], *args[2:]), rtol=0, atol=0)


def test_torch_func_differentiation_fails_clearly():
    f = physics_function()
    x = torch.randn(2, dtype=torch.float64)
    k = torch.randn(2, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"torch\.func\.grad.*cannot differentiate.*torch\.autograd"):
        torch.func.jacrev(f)(x, k)


def test_ops_are_registered_once_with_valid_unique_names():
    jac = decoder_jacobian()
    again = symjac.torch.jacobian(decoder, wrt="h", **SHAPES)          # same kernel: same operator
    assert again.op is jac.op
    names = {jac.op_name, decoder_jacobian_numpy().op_name, physics_function().op_name}
    assert len(names) == 3
    for name in names:
        namespace, _, op = name.partition("::")
        assert namespace == "symjac" and op.isidentifier()
        assert hasattr(torch.ops.symjac, op)


def test_opcheck():
    # schema, fake (meta) implementation, autograd registration and the dispatcher, checked by torch
    torch.library.opcheck(decoder_jacobian().op, tuple(weights(batch=(2,))))
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(physics_function().op, (x, torch.randn(2, dtype=torch.float64)))


# ---------------------------------------------------------------- bad input

def test_device_other_than_cpu_is_refused():
    args = weights(requires_grad=False)
    args[1] = torch.empty(M, K, dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match=r"'W1'.*device meta.*CPU only.*copies nothing"):
        decoder_jacobian()(*args)


@pytest.mark.parametrize("dtype, words", [(torch.complex128, "complex"), (torch.int64, "integer"),
                                          (torch.float16, "float32 or float64")])
def test_bad_dtypes(dtype, words):
    args = weights(requires_grad=False)
    args[2] = torch.ones(M, dtype=dtype)
    with pytest.raises(TypeError, match=rf"'b1'.*{words}"):
        decoder_jacobian()(*args)


def test_mixed_float32_and_float64():
    args = weights(requires_grad=False)
    args[3] = args[3].float()
    with pytest.raises(TypeError, match=r"'W2'.*float32.*'h'.*float64.*mixed"):
        decoder_jacobian()(*args)


def test_wrong_trailing_shape():
    args = weights(requires_grad=False)
    args[1] = torch.ones(M, K + 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"'W1'.*must have shape \(5, 3\).*leading batch dimensions.*got shape \(5, 4\)"):
        decoder_jacobian()(*args)


def test_batch_dimensions_that_do_not_broadcast():
    args = weights(batch=(4,), requires_grad=False)
    args[2] = torch.ones(3, M, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"batch dimensions.*do not broadcast.*h \(4,\).*b1 \(3,\)"):
        decoder_jacobian()(*args)


def test_not_a_tensor_and_wrong_count():
    args = weights(requires_grad=False)
    with pytest.raises(TypeError, match=r"'h'.*must be a torch\.Tensor.*ndarray"):
        decoder_jacobian()(args[0].numpy(), *args[1:])
    with pytest.raises(TypeError, match=r"takes 5 arguments \(h, W1, b1, W2, b2\), got 4"):
        decoder_jacobian()(*args[:4])


# ---------------------------------------------------------------- the example

def test_jacobian_penalty_example_runs(capsys):
    jacobian_penalty.main(["--steps", "6", "--check-every", "3", "--timing-steps", "2", "--k", str(K),
                           "--hidden", str(M), "--batch", "16"])
    out = capsys.readouterr().out
    assert "gradients agree" in out and "ms/step" in out and "step     6" in out


def test_jacobian_penalty_example_trains_in_the_array_form(capsys):
    jacobian_penalty.main(["--steps", "3", "--check-every", "3", "--timing-steps", "1", "--k", "4",
                           "--hidden", "8", "--batch", "16", "--form", "array"])
    out = capsys.readouterr().out
    assert "array form" in out and "gradients agree" in out and "step     3" in out
