"""np.einsum and np.tensordot in traced functions, against numpy and oracles.

Values: each traced expression is evaluated at random numbers (sympy
``xreplace``, no symjac code involved) and compared with numpy's own
``einsum``/``tensordot`` on the same numbers. Jacobians: ``symjac.jacobian``
against the complex-step oracle (every function here is complex-analytic).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import sympy

import symjac
from oracles import complex_step_jacobian
from symjac.front.einsum import einsum

# One traced function per operand count: tracing needs named parameters.
_CALLERS = {
    1: lambda sub, **kw: (lambda a: np.einsum(sub, a, **kw)),
    2: lambda sub, **kw: (lambda a, b: np.einsum(sub, a, b, **kw)),
    3: lambda sub, **kw: (lambda a, b, c: np.einsum(sub, a, b, c, **kw)),
    4: lambda sub, **kw: (lambda a, b, c, d: np.einsum(sub, a, b, c, d, **kw)),
}

EINSUM_CASES = [
    ("ij,jk->ik", (2, 3), (3, 4)),  # matrix product
    ("ij,jk", (2, 3), (3, 4)),  # implicit mode
    ("ij,j->i", (3, 4), (4,)),  # matrix-vector
    ("bij,bjk->bik", (2, 2, 3), (2, 3, 2)),  # batched matmul
    ("ij->ji", (2, 3)),  # transpose
    ("ji", (2, 3)),  # implicit transpose: output is 'ij'
    ("ii", (3, 3)),  # trace, implicit
    ("ii->", (3, 3)),  # trace, explicit
    ("ii->i", (3, 3)),  # diagonal
    ("iij->ji", (2, 2, 3)),  # diagonal of a stack
    ("iji->ij", (3, 2, 3)),  # repeated index, not adjacent
    ("i,j->ij", (2,), (3,)),  # outer
    ("i,i", (4,), (4,)),  # inner
    ("ij->", (2, 3)),  # total sum
    ("ij->j", (2, 3)),  # column sums
    ("i,ij,j->", (3,), (3, 3), (3,)),  # bilinear form
    ("ij,jk,kl->il", (2, 3), (3, 2), (2, 4)),  # chain of three
    ("ij,jk,kl,lm->mi", (2, 3), (3, 2), (2, 4), (4, 2)),  # chain of four, permuted output
    ("i,i,i", (3,), (3,), (3,)),  # three-way inner product
    ("ij,k->", (2, 3), (4,)),  # indices private to one operand
    ("", ()),  # scalar
    (",i->i", (), (3,)),  # scalar times vector
    (",", (), ()),  # scalar product
    ("ij,ij->ij", (2, 1), (1, 3)),  # size-1 broadcasting
    ("ij,ik->jk", (1, 3), (4, 2)),  # size-1 index summed over the other's length
    ("ij,jk->ijk", (2, 3), (3, 2)),  # no summation at all
    ("Ba", (2, 3)),  # implicit order is ASCII: uppercase first
    ("i j -> j i", (2, 3)),  # spaces are ignored
    ("...ij,...jk", (5, 2, 3), (3, 4)),  # ellipsis, broadcast stacks
    ("i...,i...", (2, 3), (2, 1)),  # ellipsis at the end
    ("ij...->...ij", (2, 3, 4)),
    ("...i->...", (2, 3)),
    ("a...b,b...c->...ac", (2, 3, 4), (4, 1, 5)),
]


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def _evaluate(traced: symjac.Traced, arrays) -> list[np.ndarray]:
    """The traced outputs at ``arrays``, by plain sympy substitution."""
    subs = {}
    for argument, array in zip(traced.arguments, arrays):
        subs.update(zip(argument.symbols.flat, (sympy.Float(float(v)) for v in np.asarray(array).flat)))
    return [
        np.array([float(expr.xreplace(subs)) for expr in output.flat]).reshape(output.shape)
        for output in traced.outputs
    ]


def _check_values(f, shapes, name):
    arrays = [_rng(name).standard_normal(shape) for shape in shapes]
    want = f(*arrays)
    (got,) = _evaluate(symjac.trace(f, *shapes), arrays)
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(
    "subscripts, shapes", [(c[0], c[1:]) for c in EINSUM_CASES], ids=[repr(c[0]) for c in EINSUM_CASES]
)
def test_einsum_values(subscripts, shapes):
    _check_values(_CALLERS[len(shapes)](subscripts), shapes, subscripts)


def test_einsum_zero_length_index_sums_to_zero():
    empty = np.empty((2, 0), dtype=object)
    assert einsum("ij->", empty) == 0
    assert (einsum("ij,jk->ik", empty, np.empty((0, 3), dtype=object)) == 0).all()


def test_einsum_interleaved_form():
    f = lambda a, b: np.einsum(a, [0, 1], b, [1, 27], [27, 0])  # noqa: E731
    _check_values(f, [(2, 3), (3, 4)], "interleaved")
    g = lambda a: np.einsum(a, [27, 0])  # noqa: E731  implicit: 'A' (0) sorts before 'b' (27)
    _check_values(g, [(2, 3)], "interleaved-implicit")
    h = lambda a, b: np.einsum(a, [Ellipsis, 0, 1], b, [1])  # noqa: E731
    _check_values(h, [(4, 2, 3), (3,)], "interleaved-ellipsis")


def test_einsum_keywords_accepted():
    f = lambda a, b: np.einsum("ij,j", a, b, optimize="greedy", dtype=float, order="C")  # noqa: E731
    _check_values(f, [(2, 3), (3,)], "keywords")


def test_einsum_with_constant_operand_skips_zero_terms():
    eye = np.eye(3)
    traced = symjac.trace(lambda x: np.einsum("ij,j->i", eye, x), 3)
    x = traced.arguments[0].symbols
    assert list(traced.outputs[0]) == list(x)  # identity: no 0*x terms survive


def test_einsum_entries_are_one_add():
    traced = symjac.trace(lambda a, b: np.einsum("ij,jk->ik", a, b), (2, 5), (5, 2))
    a, b = (argument.symbols for argument in traced.arguments)
    entry = traced.outputs[0][1, 0]
    assert isinstance(entry, sympy.Add) and len(entry.args) == 5
    assert entry == sympy.Add(*[a[1, j] * b[j, 0] for j in range(5)])


def test_einsum_chain_is_contracted_pairwise():
    # 'ij,jk,kl->il' is (A B) C: each entry sums 4 products over k, not 3*4 over (j, k).
    traced = symjac.trace(lambda a, b, c: np.einsum("ij,jk,kl->il", a, b, c), (2, 3), (3, 4), (4, 2))
    entry = traced.outputs[0][0, 0]
    assert isinstance(entry, sympy.Add) and len(entry.args) == 4


# --------------------------------------------------------------------------- #
# Jacobians
# --------------------------------------------------------------------------- #
def decoder(h, W1, b1, W2):
    return W2 @ np.tanh(np.einsum("ij,j->i", W1, h) + b1)


def quadratic_form(x, A):
    return np.einsum("i,ij,j->", x, A, x)


def diagonal_and_trace(X):
    return np.einsum("ii->i", X) * np.einsum("ij,ij", X, X) + np.einsum("ii", X)


def batched(W, x):
    return np.sin(np.einsum("bij,bj->bi", W, x))


def stacked_ellipsis(M, v):
    return np.einsum("...ij,j->...i", M, v) ** 2


JACOBIAN_CASES = {
    "decoder": (decoder, dict(h=3, W1=(4, 3), b1=4, W2=(2, 4)), "h"),
    "decoder_wrt_weights": (decoder, dict(h=3, W1=(4, 3), b1=4, W2=(2, 4)), ("W1", "b1")),
    "quadratic_form": (quadratic_form, dict(x=3, A=(3, 3)), "x"),
    "quadratic_form_wrt_both": (quadratic_form, dict(x=3, A=(3, 3)), ("x", "A")),
    "diagonal_and_trace": (diagonal_and_trace, dict(X=(3, 3)), "X"),
    "batched": (batched, dict(W=(2, 3, 2), x=(2, 2)), ("W", "x")),
    "stacked_ellipsis": (stacked_ellipsis, dict(M=(2, 3, 2), v=2), ("M", "v")),
}


def _check_jacobian(name, f, shapes, wrt, backend):
    rng = _rng(name)
    args = [rng.uniform(-1, 1, shape) for shape in shapes.values()]
    names = list(shapes)
    jac = symjac.jacobian(f, wrt=wrt, backend=backend, **shapes)
    got = jac(*args)
    wrts = wrt if isinstance(wrt, tuple) else (wrt,)
    for position, item in enumerate(wrts):
        want = complex_step_jacobian(f, args, names.index(item))
        actual = got[position] if isinstance(wrt, tuple) else got
        np.testing.assert_allclose(actual, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(JACOBIAN_CASES))
def test_einsum_jacobian_numpy_backend(name):
    _check_jacobian(name, *JACOBIAN_CASES[name], backend="numpy")


@pytest.mark.parametrize("name", ["decoder", "quadratic_form_wrt_both"])
def test_einsum_jacobian_compiled(name):
    _check_jacobian(name, *JACOBIAN_CASES[name], backend="cython")


# --------------------------------------------------------------------------- #
# errors
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "subscripts, shapes, error, words",
    [
        ("ij,jk->ik", [(2, 3), (4, 5)], symjac.ShapeError, ["index 'j'", "length 3", "but 4"]),
        ("ii->i", [(2, 3)], symjac.ShapeError, ["repeats index 'i'", "2 != 3"]),
        ("ij", [(3,)], symjac.ShapeError, ["1 dimension", "name 2"]),
        ("i", [(2, 3)], symjac.ShapeError, ["2 dimension", "name 1", "no ..."]),
        ("ij,jk", [(2, 3)], symjac.TracingError, ["2 operand", "1 were given"]),
        ("i", [(2,), (2,)], symjac.TracingError, ["1 operand", "2 were given"]),
        ("i->k", [(2,)], symjac.TracingError, ["'k'", "appears in no input"]),
        ("i->ii", [(2,)], symjac.TracingError, ["'i'", "more than once"]),
        ("i1", [(2, 2)], symjac.TracingError, ["'1'", "not a letter"]),
        ("i.j", [(2, 2)], symjac.TracingError, ["'.'", "'...'"]),
        ("i->i->i", [(2,)], symjac.TracingError, ["'->'"]),
        ("...i->i", [(2, 3)], symjac.TracingError, ["'...'", "add '...' to the output"]),
    ],
)
def test_einsum_bad_subscripts(subscripts, shapes, error, words):
    with pytest.raises(error, match="np.einsum") as info:
        symjac.trace(_CALLERS[len(shapes)](subscripts), *shapes)
    for word in words:
        assert word in str(info.value)
    with pytest.raises(ValueError):  # numpy refuses the same call
        np.einsum(subscripts, *[np.ones(shape) for shape in shapes])


def test_einsum_out_refused():
    def f(x):
        return np.einsum("i->i", x, out=np.empty(2))

    with pytest.raises(symjac.TracingError, match=r"np\.einsum with out="):
        symjac.trace(f, 2)


def test_einsum_dtype_refused():
    with pytest.raises(symjac.TracingError, match=r"np\.einsum with dtype=.*float32"):
        symjac.trace(_CALLERS[1]("i->", dtype=np.float32), 2)


def test_einsum_bad_sublist_refused():
    with pytest.raises(symjac.TracingError, match=r"np\.einsum.*int in \[0, 52\)"):
        symjac.trace(lambda a: np.einsum(a, [0, 99]), (2, 2))


# --------------------------------------------------------------------------- #
# np.tensordot
# --------------------------------------------------------------------------- #
TENSORDOT_CASES = [
    ((2, 3, 4), (3, 4, 5), 2),  # default
    ((2, 3), (3, 4), 1),
    ((2, 3), (4, 5), 0),  # outer product
    ((3,), (3,), 1),
    ((2, 3, 4), (4, 3, 5), ([1, 2], [1, 0])),  # (list, list)
    ((2, 3, 4), (4, 3, 5), [[2], [0]]),  # list of lists
    ((2, 3, 4), (4, 3, 5), (2, 0)),  # (int, int)
    ((2, 3, 4), (4, 3, 5), (-1, 0)),  # negative axis
    ((2, 3, 4), (4, 3, 5), ([-2, -1], [-2, 0])),  # negative axes in lists
    ((2, 3), (3, 2), (np.array([0, 1]), np.array([1, 0]))),  # full contraction, arrays of axes
]


@pytest.mark.parametrize("shape_a, shape_b, axes", TENSORDOT_CASES, ids=[str(c[2]) for c in TENSORDOT_CASES])
def test_tensordot_values(shape_a, shape_b, axes):
    _check_values(lambda a, b: np.tensordot(a, b, axes=axes), [shape_a, shape_b], f"tensordot{axes}")


def test_tensordot_positional_axes():
    _check_values(lambda a, b: np.tensordot(a, b, 1), [(2, 3), (3,)], "tensordot-positional")


def test_tensordot_shape_mismatch():
    with pytest.raises(symjac.ShapeError, match="not aligned"):
        symjac.trace(lambda a, b: np.tensordot(a, b, axes=(1, 1)), (2, 3), (3, 4))


def test_tensordot_jacobian():
    def f(T, M):
        return np.tanh(np.tensordot(T, M, axes=([1, 2], [1, 0])))

    _check_jacobian("tensordot", f, dict(T=(2, 3, 2), M=(2, 3)), ("T", "M"), "numpy")
