"""Unit tests of stage 2, ``symjac.diff``: each differentiation rule on its own.

``differentiate(trace(f, n), (0,))`` is checked three ways:

- inline expected derivatives for the small cases (exact sympy equality after
  ``sympy.simplify`` of the difference, so a rewrite of the same value passes);
- sympy's own ``sympy.diff`` of the very output expressions the tracer made,
  compared numerically at fixed random points (``sympy.lambdify``): symjac's
  memoised differentiator must agree with the reference implementation;
- complex-step or central differences of the original numpy function
  (``tests/oracles.py``), which know nothing of sympy or symjac.

The sparsity contract is checked throughout: a block has an entry for an
(output, input) pair exactly when the output's expression contains that
input's symbol and the derivative is not identically zero; piecewise-constant
functions (sign, heaviside, floor, ceiling) give no entry at all.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy

from oracles import central_difference_jacobian, complex_step_jacobian
from symjac.derive.diff import Block, Derivative, differentiate
from symjac.front.functions import cbrt
from symjac.front.trace import Traced, trace

SEED = 20240611
_LAMBDIFY_MODULES = [{"cbrt": np.cbrt}, "numpy"]  # symjac's real cube root, numerically


# --------------------------------------------------------------------------
# helpers


def _symbols(traced: Traced, argument: int = 0) -> list[sympy.Symbol]:
    return list(traced.arguments[argument].symbols.flat)


def _evaluate(expr, symbols, point) -> float:
    return float(sympy.lambdify(symbols, expr, modules=_LAMBDIFY_MODULES)(*point))


def _entries(derivative: Derivative, output: int = 0, argument: int = 0) -> dict[int, sympy.Expr]:
    block = derivative.blocks[output * len(derivative.wrt) + argument]
    indices = [index for index, _ in block.entries]
    assert indices == sorted(set(indices)), "entries must be in increasing, distinct index order"
    return dict(block.entries)


def _dense(derivative: Derivative, point, output: int = 0, argument: int = 0) -> np.ndarray:
    """The block evaluated at ``point`` (values of argument 0), structural zeros included."""
    block = derivative.blocks[output * len(derivative.wrt) + argument]
    symbols = _symbols(derivative.traced)
    values = np.zeros(block.size)
    for index, expr in block.entries:
        values[index] = _evaluate(expr, symbols, point)
    return values.reshape(block.shape)


def _assert_same(expr, expected) -> None:
    assert sympy.simplify(expr - expected) == 0, f"{expr} is not {expected}"


def _check_against_sympy_and_sparsity(derivative: Derivative, points) -> None:
    """Every block entry vs sympy.diff at ``points``; entries exactly where sympy.diff is not 0."""
    traced = derivative.traced
    symbols = _symbols(traced)
    for out_number, output in enumerate(traced.outputs):
        entries = _entries(derivative, out_number)
        size = len(symbols)
        for out_flat, expr in enumerate(output.flat):
            contained = expr.free_symbols & set(symbols)
            for in_flat, symbol in enumerate(symbols):
                index = out_flat * size + in_flat
                reference = sympy.diff(expr, symbol)
                if symbol not in contained:
                    assert index not in entries, f"entry for {symbol}, which output {out_flat} does not contain"
                    continue
                if reference == 0:
                    assert index not in entries, f"an entry for d({expr})/d{symbol}, which is identically 0"
                    continue
                assert index in entries, f"no entry for d({expr})/d{symbol} = {reference}"
                for point in points:
                    got = _evaluate(entries[index], symbols, point)
                    want = _evaluate(reference, symbols, point)
                    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-300,
                                               err_msg=f"d({expr})/d{symbol} at {point}")


# --------------------------------------------------------------------------
# product, quotient and power rules, with the expected derivatives inline


def test_product_rule():
    traced = trace(lambda x: x[0] * x[1] * np.sin(x[2]), 3)
    x0, x1, x2 = _symbols(traced)
    entries = _entries(differentiate(traced, (0,)))
    assert sorted(entries) == [0, 1, 2]
    _assert_same(entries[0], x1 * sympy.sin(x2))
    _assert_same(entries[1], x0 * sympy.sin(x2))
    _assert_same(entries[2], x0 * x1 * sympy.cos(x2))


def test_quotient_rule():
    traced = trace(lambda x: (x[0] + x[2]) / (x[1] * x[2]), 3)
    x0, x1, x2 = _symbols(traced)
    entries = _entries(differentiate(traced, (0,)))
    assert sorted(entries) == [0, 1, 2]
    _assert_same(entries[0], 1 / (x1 * x2))
    _assert_same(entries[1], -(x0 + x2) / (x1**2 * x2))
    _assert_same(entries[2], 1 / (x1 * x2) - (x0 + x2) / (x1 * x2**2))


@pytest.mark.parametrize(
    "f, expected",
    [
        (lambda x: x[0] ** 3, lambda x0: 3 * x0**2),
        (lambda x: x[0] ** -2, lambda x0: -2 / x0**3),
        (lambda x: x[0] ** 2.5, lambda x0: 2.5 * x0**1.5),
        (lambda x: np.sqrt(x[0]), lambda x0: 1 / (2 * sympy.sqrt(x0))),
        (lambda x: 1.0 / x[0], lambda x0: -1 / x0**2),
        (lambda x: np.square(x[0]), lambda x0: 2 * x0),
    ],
    ids=["cube", "inverse-square", "2.5", "sqrt", "reciprocal", "square"],
)
def test_power_with_constant_exponent(f, expected):
    traced = trace(f, 1)
    (x0,) = _symbols(traced)
    entries = _entries(differentiate(traced, (0,)))
    assert list(entries) == [0]
    _assert_same(entries[0], expected(x0))
    point = np.array([1.7])
    np.testing.assert_allclose(_dense(differentiate(traced, (0,)), point),
                               complex_step_jacobian(f, (point,), 0), rtol=1e-14)


def test_power_with_symbolic_exponent_wrt_base_and_exponent():
    f = lambda x: x[0] ** x[1]  # noqa: E731
    traced = trace(f, 2)
    x0, x1 = _symbols(traced)
    derivative = differentiate(traced, (0,))
    entries = _entries(derivative)
    assert sorted(entries) == [0, 1]
    _assert_same(entries[0], x1 * x0 ** (x1 - 1))
    _assert_same(entries[1], x0**x1 * sympy.log(x0))
    rng = np.random.default_rng(SEED)
    points = [np.array([rng.uniform(0.2, 3.0), rng.uniform(-2.0, 2.0)]) for _ in range(5)]
    _check_against_sympy_and_sparsity(derivative, points)
    for point in points:
        np.testing.assert_allclose(_dense(derivative, point), complex_step_jacobian(f, (point,), 0), rtol=1e-13)


def test_exponent_only_symbolic():
    """A constant base with a traced exponent: d(2.5**x) = 2.5**x * log(2.5)."""
    traced = trace(lambda x: 2.5 ** x[0], 1)
    (x0,) = _symbols(traced)
    entries = _entries(differentiate(traced, (0,)))
    np.testing.assert_allclose(_evaluate(entries[0], [x0], [0.7]), 2.5**0.7 * np.log(2.5), rtol=1e-14)


# --------------------------------------------------------------------------
# the chain rule through every elementary function, against both oracles

CHAIN = {
    # name: (function of x with shape (2,), is it complex-analytic in numpy, for the complex step?)
    "exp": (lambda x: np.exp(x[0] * x[1]), True),
    "log": (lambda x: np.log(x[0] ** 2 + x[1]), True),
    "tanh": (lambda x: np.tanh(x[0] - 2 * x[1]), True),
    "expm1": (lambda x: np.expm1(x[0] * x[1]), True),
    "log1p": (lambda x: np.log1p(x[0] * x[1]), True),
    "atan2": (lambda x: np.arctan2(x[0] * x[1], x[0] - x[1]), False),
    "hypot": (lambda x: np.hypot(x[0] * x[1], x[1] + 1.0), False),
    "cbrt": (lambda x: np.cbrt(x[0] - x[1]), False),
    "nested": (lambda x: np.exp(np.tanh(np.log1p(x[0] ** 2) * x[1])), True),
}


def _chain_points(name: str):
    rng = np.random.default_rng(SEED)
    points = []
    while len(points) < 6:
        x = rng.uniform(0.1, 2.0, size=2) * rng.choice([-1.0, 1.0], size=2)
        if name == "log" and x[0] ** 2 + x[1] <= 0.1:
            continue
        if name == "log1p" and x[0] * x[1] <= -0.9:
            continue
        if name == "cbrt" and abs(x[0] - x[1]) < 0.1:
            continue  # cbrt' is infinite at 0
        if name == "atan2" and abs(x[0] - x[1]) < 0.1 and x[0] * x[1] < 0.1:
            continue
        points.append(x)
    return points


@pytest.mark.parametrize("name", list(CHAIN))
def test_chain_rule(name):
    f, analytic = CHAIN[name]
    traced = trace(f, 2)
    derivative = differentiate(traced, (0,))
    points = _chain_points(name)
    _check_against_sympy_and_sparsity(derivative, points)
    assert sorted(_entries(derivative)) == [0, 1]
    for point in points:
        if analytic:
            expected = complex_step_jacobian(f, (point,), 0)
            rtol, atol = 1e-13, 1e-15
        else:
            expected = central_difference_jacobian(f, (point,), 0)
            rtol, atol = 1e-7, 1e-8
        np.testing.assert_allclose(_dense(derivative, point), expected, rtol=rtol, atol=atol, err_msg=str(point))


def test_chain_rule_keeps_the_precise_functions():
    """expm1/log1p/cbrt stay themselves in the function; their derivatives are the exact formulas."""
    traced = trace(lambda x: np.array([np.expm1(x[0]), np.log1p(x[0]), np.cbrt(x[0]), np.hypot(x[0], 3.0)]), 1)
    (x0,) = _symbols(traced)
    entries = _entries(differentiate(traced, (0,)))
    _assert_same(entries[0], sympy.exp(x0))
    _assert_same(entries[1], 1 / (x0 + 1))
    _assert_same(entries[2], 1 / (3 * cbrt(x0) ** 2))
    np.testing.assert_allclose(_evaluate(entries[3], [x0], [4.0]), 4.0 / 5.0, rtol=1e-15)


# --------------------------------------------------------------------------
# piecewise functions: the derivative of the branch taken, on each side


PIECEWISE = {
    # name: (function of x with shape (2,), [(point, expected d f / d x)])
    "where": (
        lambda x: np.where(x[0] > x[1], x[0] ** 2, 3.0 * x[1]),
        [([2.0, 1.0], [4.0, 0.0]), ([-1.5, 0.5], [0.0, 3.0])],
    ),
    "maximum": (
        lambda x: np.maximum(x[0] * x[1], x[1]),
        [([2.0, 1.5], [1.5, 2.0]), ([0.5, 1.5], [0.0, 1.0])],
    ),
    "minimum": (
        lambda x: np.minimum(x[0], 2.0 * x[1]),
        [([0.5, 1.0], [1.0, 0.0]), ([3.0, 1.0], [0.0, 2.0])],
    ),
    "clip": (
        lambda x: np.clip(x[0], -1.0, 2.0) * x[1],
        [([0.5, 3.0], [3.0, 0.5]), ([-4.0, 3.0], [0.0, -1.0]), ([5.0, 3.0], [0.0, 2.0])],
    ),
    "abs": (
        lambda x: np.abs(x[0]) * x[1] + np.abs(x[1] - 1.0),
        [([2.0, 3.0], [3.0, 3.0]), ([-2.0, 3.0], [-3.0, 3.0]), ([-2.0, 0.5], [-0.5, 1.0])],
    ),
}


@pytest.mark.parametrize("name", list(PIECEWISE))
def test_piecewise_gives_the_branch_derivative_on_each_side(name):
    f, cases = PIECEWISE[name]
    traced = trace(f, 2)
    derivative = differentiate(traced, (0,))
    points = [np.array(point) for point, _ in cases]
    _check_against_sympy_and_sparsity(derivative, points)
    for point, expected in cases:
        point = np.array(point)
        got = _dense(derivative, point)
        np.testing.assert_array_equal(got, expected, err_msg=f"{name} at {point}")  # exact: every value here is
        np.testing.assert_allclose(got, central_difference_jacobian(f, (point,), 0), rtol=1e-8, atol=1e-9)


# --------------------------------------------------------------------------
# piecewise-constant functions: zero almost everywhere, so no entry at all


@pytest.mark.parametrize(
    "f",
    [lambda x: np.sign(x[0] - x[1]), lambda x: np.heaviside(x[0], 0.5), lambda x: np.heaviside(x[0] * x[1], 0.0),
     lambda x: np.sign(np.sin(x[0])) + np.heaviside(x[1] - 1.0, 1.0)],
    ids=["sign", "heaviside", "heaviside-product", "sum-of-flat"],
)
def test_flat_numpy_functions_give_no_entry(f):
    traced = trace(f, 2)
    assert traced.outputs[0][()].free_symbols  # the output does depend on x ...
    derivative = differentiate(traced, (0,))
    assert derivative.blocks[0].entries == ()  # ... but its derivative is a structural zero
    assert derivative.nonzeros == 0


def test_flat_factor_keeps_the_other_factors_entry():
    traced = trace(lambda x: np.sign(x[0]) * x[1] ** 2, 2)
    x0, x1 = _symbols(traced)
    entries = _entries(differentiate(traced, (0,)))
    assert list(entries) == [1]  # nothing for x0: d sign / dx0 = 0 almost everywhere (no DiracDelta)
    _assert_same(entries[1], 2 * x1 * sympy.sign(x0))
    assert not entries[1].has(sympy.DiracDelta)


def _traced_with_outputs(expressions) -> Traced:
    """Traced by hand from sympy.floor/sympy.ceiling, independent of the tracer's rules for np.floor/np.ceil."""
    base = trace(lambda x: x * 1.0, 2)
    outputs = np.empty(len(expressions), dtype=object)
    for number, expression in enumerate(expressions):
        outputs[number] = expression(*_symbols(base))
    return Traced(base.function_name, base.arguments, (outputs,), False)


def test_floor_and_ceiling_give_no_entry():
    traced = _traced_with_outputs([
        lambda x0, x1: sympy.floor(x0),
        lambda x0, x1: sympy.ceiling(x0 * x1),
        lambda x0, x1: sympy.floor(x0) * x1,
        lambda x0, x1: sympy.ceiling(x1) + x0**2,
    ])
    x0, x1 = _symbols(traced)
    derivative = differentiate(traced, (0,))
    entries = _entries(derivative)
    # output k, input j -> flat index 2 k + j
    assert sorted(entries) == [5, 6]
    _assert_same(entries[5], sympy.floor(x0))
    _assert_same(entries[6], 2 * x0)


# --------------------------------------------------------------------------
# sparsity: entries exactly for the symbols an output contains


def test_entries_exist_exactly_for_the_contained_symbols():
    def f(x):
        return np.array([
            [x[0] * x[1], np.sin(x[2])],
            [x[3] + 1.0, 2.0],
            [x[0] - x[0], np.exp(x[4] * x[1]) * x[4]],
        ])

    traced = trace(f, 5)
    symbols = _symbols(traced)
    derivative = differentiate(traced, (0,))
    block = derivative.blocks[0]
    assert isinstance(block, Block) and block.shape == (3, 2, 5) and block.size == 30
    assert (block.output, block.argument) == (0, 0)
    expected = {
        (0, 0): [0, 1], (0, 1): [2],
        (1, 0): [3], (1, 1): [],
        (2, 0): [], (2, 1): [1, 4],  # x0 - x0 folds to 0 while tracing: no symbols, no entries
    }
    assert [index for index, _ in block.entries] == [
        np.ravel_multi_index(out + (j,), block.shape) for out, columns in sorted(expected.items()) for j in columns
    ]
    for out, columns in expected.items():
        contained = {symbols.index(s) for s in traced.outputs[0][out].free_symbols}
        assert contained == set(columns), out
    assert derivative.nonzeros == 6
    rng = np.random.default_rng(SEED)
    points = [rng.normal(size=5) for _ in range(4)]
    _check_against_sympy_and_sparsity(derivative, points)
    for point in points:
        np.testing.assert_allclose(_dense(derivative, point), complex_step_jacobian(f, (point,), 0),
                                   rtol=1e-13, atol=1e-15)


def test_tuple_outputs_and_several_arguments_give_one_block_each():
    def f(y, k):
        return y[0] * k[1], np.array([y[1] ** 2, k[0]])

    traced = trace(f, 2, 2)
    y0, y1 = _symbols(traced, 0)
    k0, k1 = _symbols(traced, 1)
    derivative = differentiate(traced, (0, 1), wrt_is_tuple=True)
    assert derivative.wrt == (0, 1)
    assert [(b.output, b.argument, b.shape) for b in derivative.blocks] == [
        (0, 0, (2,)), (0, 1, (2,)), (1, 0, (2, 2)), (1, 1, (2, 2)),
    ]
    assert derivative.structure == ((0, 1), (2, 3))  # blocks in C order over (output, wrt), nested for callers
    b00, b01, b10, b11 = derivative.blocks
    assert [i for i, _ in b00.entries] == [0] and b00.entries[0][1] == k1
    assert [i for i, _ in b01.entries] == [1] and b01.entries[0][1] == y0
    assert [i for i, _ in b10.entries] == [1] and b10.entries[0][1] == 2 * y1
    assert [i for i, _ in b11.entries] == [2] and b11.entries[0][1] == 1
    assert derivative.nonzeros == 4
    only_k = differentiate(traced, (1,))
    assert [b.argument for b in only_k.blocks] == [1, 1]
    assert only_k.nonzeros == 2


def test_shared_subexpressions_differentiate_consistently():
    """The memoised differentiator reuses d(shared)/dx across outputs: each use must still be right."""
    def f(x):
        hidden = np.tanh(x[0] * x[1] + x[2])
        return np.array([hidden * x[0], hidden ** 2, np.exp(hidden) + x[2]])

    traced = trace(f, 3)
    derivative = differentiate(traced, (0,))
    rng = np.random.default_rng(SEED)
    points = [rng.normal(size=3) for _ in range(4)]
    _check_against_sympy_and_sparsity(derivative, points)
    for point in points:
        np.testing.assert_allclose(_dense(derivative, point), complex_step_jacobian(f, (point,), 0),
                                   rtol=1e-13, atol=1e-15)


def test_differentiate_does_not_mutate_its_input():
    traced = trace(lambda x: np.array([x[0] * x[1], np.sin(x[1])]), 2)
    before = [expr for expr in traced.outputs[0].flat]
    first = differentiate(traced, (0,))
    second = differentiate(traced, (0,))
    assert list(traced.outputs[0].flat) == before
    assert first.blocks[0].entries == second.blocks[0].entries
    assert first.traced is traced


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_logaddexp_neither_overflows_nor_loses_its_derivatives(backend):
    import symjac

    def f(x):
        return np.array([np.logaddexp(x[0], x[1]), np.logaddexp2(x[0], x[1])])

    jac = symjac.jacobian(f, x=2, backend=backend, kernels=("jacobian", "function"))
    hessian = symjac.hessian(lambda x: np.logaddexp(x[0], x[1]), x=2, backend=backend)
    X = np.array([[1000.0, 999.0], [-1000.0, -1001.5], [0.3, 0.3], [2000.0, 3000.0], [1100.0, -5.0]])
    np.testing.assert_allclose(jac.function(X), np.stack([f(x) for x in X]), rtol=1e-15)
    # analytic: the softmax weights of (a, b), in base e and base 2, and their derivative w(1 - w)
    with np.errstate(over="ignore"):  # exp(1000) is inf: the weight is 0
        w = 1 / (1 + np.exp(X[:, 1] - X[:, 0]))
        w2 = 1 / (1 + np.exp2(X[:, 1] - X[:, 0]))
    expected = np.stack([np.stack([w, 1 - w], -1), np.stack([w2, 1 - w2], -1)], 1)
    np.testing.assert_allclose(jac(X), expected, rtol=1e-14, atol=1e-300)
    s = w * (1 - w)
    np.testing.assert_allclose(hessian(X), np.stack([[s, -s], [-s, s]]).transpose(2, 0, 1), rtol=1e-12, atol=1e-300)
    x = np.array([0.4, -1.1])  # and against differences where nothing overflows
    np.testing.assert_allclose(jac(x), central_difference_jacobian(f, [x], 0), rtol=1e-8)


def _scaled_cases():
    x, y = sympy.symbols("x y", real=True)
    z = sympy.Symbol("z")
    numbers = [sympy.Float(0.3), sympy.Float(-2.5), sympy.Float(1.0), sympy.Float(0.0), sympy.Float("1e-300"),
               sympy.Float("0.1", 30), sympy.Integer(2), sympy.Rational(1, 3), sympy.S.One, sympy.S.NegativeOne,
               sympy.oo]
    with sympy.core.parameters.distribute(False):
        factors = [x + y, 2.5 * x + 1, sympy.Float(0.5) * (x + y), sympy.Rational(1, 2) * (x + y), 3 * x,
                   sympy.Float(0.25) * sympy.tanh(x), sympy.Float(-4.0) * sympy.tanh(x + y), sympy.Float(0.5) * z,
                   sympy.Float(0.5) * sympy.exp(x), sympy.Float(0.5) * x**2, sympy.Float(2.0) * sympy.sqrt(x),
                   2 * sympy.I, sympy.oo * x, sympy.Float(2.0) * sympy.I * x, x, sympy.tanh(x), x * y, -x,
                   sympy.Float(0.5) * x * y, sympy.Float(1e300) * (x + 1), sympy.Float(0.5) * sympy.Abs(x),
                   sympy.Float(0.5) * sympy.Piecewise((x, x > 0), (y, True))]
    return numbers, factors


@pytest.mark.parametrize("distributed", [False, True])
def test_scaled_products_are_sympys(distributed):
    """diff._scaled builds some products directly: the same expressions as sympy.Mul, or None."""
    from symjac.derive.diff import _scaled

    numbers, factors = _scaled_cases()
    built = 0
    with sympy.core.parameters.distribute(distributed):
        for number in numbers:
            for factor in factors:
                product = _scaled(number, factor)
                if product is None:
                    continue
                expected = sympy.Mul(number, factor)
                assert type(product) is type(expected) and product.args == expected.args, (number, factor)
                assert product == expected and hash(product) == hash(expected)
                built += 1
    assert built == (0 if distributed else 60)  # 5 non-zero Floats times 12 factors
