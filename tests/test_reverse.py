"""Tests for ``symjac.reverse``: vector-Jacobian products by one adjoint sweep.

Oracles: ``sympy.diff`` (evaluated numerically at random points), complex-step
and central differences of the original numpy functions (``oracles.py``), and
operation counts after the same CSE as the function (the cheap-gradient
principle: the gradient costs at most 4 times the function).
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import sympy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sympy.codegen.cfunctions import exp2, expm1, hypot, log1p, log2, log10

import symjac
from symjac.front.functions import cbrt
from symjac.derive.reverse import vjp_expressions
import symjac.emit.simplify
from symjac.emit.simplify import count_operations, eliminate_common_subexpressions

from oracles import central_difference_jacobian, complex_step_jacobian

x, y, z = XYZ = sympy.symbols("x y z", real=True)
p = sympy.Symbol("p", real=True)  # a parameter: not differentiated
RNG_SEED = 20240611

_FLAT = (sympy.sign, sympy.Heaviside, sympy.floor, sympy.ceiling)


def reference_gradient(expr, wrt):
    """sympy.diff, with piecewise-constant functions held constant (derivative
    zero almost everywhere, as symjac takes it)."""
    frozen = {node: sympy.Dummy() for node in sympy.preorder_traversal(expr) if isinstance(node, _FLAT)}
    thawed = {dummy: node for node, dummy in frozen.items()}
    return [sympy.diff(expr.xreplace(frozen), symbol).xreplace(thawed) for symbol in wrt]


def evaluate(exprs, symbols, points):
    """Values of ``exprs`` at each row of ``points``, shape (len(points), len(exprs))."""
    function = sympy.lambdify(symbols, list(exprs), modules=["numpy", "math"])
    return np.array([np.broadcast_to(np.asarray(function(*point), dtype=float), (len(exprs),))
                     for point in points])


def random_points(count, low=0.3, high=1.7, width=3):
    return np.random.default_rng(RNG_SEED).uniform(low, high, size=(count, width))


def operations_after_cse(exprs) -> int:
    temporaries, reduced = eliminate_common_subexpressions(list(exprs))
    return count_operations([expr for _, expr in temporaries] + list(reduced))


def dag_size(exprs) -> int:
    """Edges of the expression DAG (arguments of distinct nodes), counted without recursion."""
    seen, stack, edges = set(), list(exprs), 0
    while stack:
        node = stack.pop()
        if node.args and node not in seen:
            seen.add(node)
            edges += len(node.args)
            stack.extend(node.args)
    return edges


_NUMPY = {sympy.sin: np.sin, sympy.cos: np.cos, sympy.exp: np.exp}


def evaluate_dag(exprs, point):
    """Float values of ``exprs`` (Add, Mul, Pow, sin, cos, exp of ``point``'s
    symbols), each distinct node once and without recursion: deep and shared."""
    values: dict = {}
    stack = [(expr, False) for expr in exprs]
    while stack:
        node, ready = stack.pop()
        if node in values:
            continue
        if node.is_Symbol:
            values[node] = float(point[node])
        elif node.is_Number:
            values[node] = float(node)
        elif not ready:
            stack.append((node, True))
            stack.extend((arg, False) for arg in node.args)
        else:
            args = [values[arg] for arg in node.args]
            values[node] = (sum(args) if node.is_Add else float(np.prod(args)) if node.is_Mul
                            else args[0] ** args[1] if node.is_Pow else _NUMPY[node.func](*args))
    return [values[expr] for expr in exprs]


def with_deep_stack(function, *args):
    """Run ``function`` where deep recursion is safe (count_operations and
    sympy.cse recurse once per level of a 5,000-deep expression)."""
    result, old_limit, old_size = [], sys.getrecursionlimit(), threading.stack_size()
    sys.setrecursionlimit(max(old_limit, 200_000))
    threading.stack_size(512 * 2**20)
    try:
        thread = threading.Thread(target=lambda: result.append(function(*args)))
        thread.start()
        thread.join()
    finally:
        threading.stack_size(old_size)
        sys.setrecursionlimit(old_limit)
    assert result, "the deep-stack call raised (see the thread's traceback above)"
    return result[0]


# ---------------------------------------------------------------------------
# every rule against sympy.diff

RULES = {
    "add": x + 2 * y - z + 3 + p,
    "mul2": x * y,
    "mul_many": 3 * p * x * y * z * sympy.sin(x) * sympy.cos(y) * sympy.exp(z),
    "mul_shared": x * sympy.sin(x) * x ** 2 * sympy.tan(x),
    "div": x / (y * z + 1),
    "pow_int": (x + y) ** 3 - (y * z) ** 2,
    "pow_negative": 1 / (x * y) + (x + z) ** -3,
    "pow_rational": sympy.sqrt(x + z) + (x * y) ** sympy.Rational(2, 3) + x ** -2.5,
    "pow_parameter": (x + y) ** p,
    "pow_symbolic": x ** y + (x + 1) ** (y * z) + 2 ** x,
    "pow_self": x ** x,
    "exp_log": sympy.exp(x * y) + sympy.log(x + z) * sympy.exp(-z),
    "trig": sympy.sin(x) * sympy.cos(y) + sympy.tan(z) + sympy.atan(x * y) + sympy.asin(x / 2),
    "hyperbolic": sympy.tanh(x * y) + sympy.sinh(z) * sympy.cosh(x) + sympy.asinh(y),
    "atan2": sympy.atan2(y - 1, x - 1) * z,
    "cfunctions": expm1(x * y) + log1p(z) + exp2(x) + log2(y) + log10(x + z) + hypot(x - 1, y),
    "cbrt": cbrt(x - 1) * y + cbrt(x * y * z),
    "abs": sympy.Abs(x - 1) * y + sympy.Abs(y - z),
    "erf": sympy.erf(x * y) + sympy.erfc(z),
    "max_min": sympy.Max(x, y) * z + sympy.Min(x * z, y),
    "flat": sympy.sign(x - 1) * x + sympy.Heaviside(y - 1) * y ** 2 + sympy.floor(3 * x) * z
            + sympy.ceiling(2 * y) * x,
    "piecewise": sympy.Piecewise((x ** 2 * y, x > y), (sympy.sin(x * y), z > 1), (sympy.exp(z), True)),
    "piecewise_where": sympy.Piecewise((x, x > 1), (y, True)) * sympy.Piecewise((z, sympy.And(x > 0.5, y < 1)), (x * y, True)),
    "piecewise_shared_branch": sympy.Piecewise((x * y, x > 1), (x * y, y > 1), (z, True)),
    "nested": sympy.exp(sympy.sin(x * y) / (1 + z ** 2)) * sympy.log(1 + (x + y) ** 2),
}


@pytest.mark.parametrize("name", sorted(RULES))
def test_each_rule_matches_sympy_diff(name):
    expr = RULES[name]
    gradient = vjp_expressions([expr], [sympy.S.One], XYZ)
    expected = reference_gradient(expr, XYZ)
    for got, want in zip(gradient, expected):
        assert not got.has(sympy.DiracDelta)
        assert (got == 0) == (want == 0), (got, want)
    points = np.column_stack([random_points(12), np.full(12, 1.3)])  # x, y, z, p
    symbols = [*XYZ, p]
    np.testing.assert_allclose(evaluate(gradient, symbols, points), evaluate(expected, symbols, points),
                               rtol=1e-12, atol=1e-12)


def test_no_dependence_gives_exact_zero():
    w = sympy.Symbol("w", real=True)
    assert vjp_expressions([x * p + sympy.sin(p)], [1], [w, x, p]) == [0, p, x + sympy.cos(p)]
    assert vjp_expressions([sympy.Integer(3), p], [1, 1], [x]) == [sympy.S.Zero]
    assert vjp_expressions([x * y], [0], [x, y]) == [0, 0]
    assert vjp_expressions([sympy.Heaviside(x), x > y, sympy.And(x > 0, y < 1)], [1, 1, 1], [x]) == [0]


def test_zero_factor_stays_exact():
    factors = sympy.symbols("a0:6", real=True)
    product = sympy.Mul(*factors) * sympy.sin(factors[0])
    gradient = vjp_expressions([product], [1], factors)
    point = {symbol: value for symbol, value in zip(factors, [0.5, 0, 2, 3, 0, 7])}
    values = [float(expr.xreplace(point)) for expr in gradient]  # no 0/0 anywhere
    expected = [float(sympy.diff(product, symbol).xreplace(point)) for symbol in factors]
    assert values == expected


def test_unevaluated_derivative_falls_back_to_sympy_diff():
    f = sympy.Function("f")
    t = sympy.Symbol("t", real=True)
    for expr in [f(x * y) * z, sympy.Mod(3 * x, y + 1) * z, sympy.Integral(t * x ** 2, (t, 0, y))]:
        gradient = vjp_expressions([expr], [1], XYZ)
        for got, want in zip(gradient, (sympy.diff(expr, symbol) for symbol in XYZ)):
            assert sympy.simplify((got - want).doit()) == 0


# ---------------------------------------------------------------------------
# several outputs, symbolic cotangents


def test_symbolic_cotangents_combine_outputs():
    u = sympy.symbols("u0:4", real=True)
    shared = sympy.tanh(x * y + z)
    outputs = [shared * x, shared ** 2 + sympy.exp(y), x, shared * x]  # x itself; a repeated output
    gradient = vjp_expressions(outputs, u, XYZ)
    expected = [sum(ui * sympy.diff(out, symbol) for ui, out in zip(u, outputs)) for symbol in XYZ]
    points = np.column_stack([random_points(8), np.random.default_rng(RNG_SEED + 1).normal(size=(8, 4))])
    symbols = [*XYZ, *u]
    np.testing.assert_allclose(evaluate(gradient, symbols, points), evaluate(expected, symbols, points),
                               rtol=1e-12, atol=1e-12)
    for k, out in enumerate(outputs):  # a unit cotangent picks one output's gradient
        unit = [sympy.S.One if i == k else sympy.S.Zero for i in range(len(outputs))]
        single = vjp_expressions(outputs, unit, XYZ)
        np.testing.assert_allclose(evaluate(single, XYZ, points[:, :3]),
                                   evaluate(reference_gradient(out, XYZ), XYZ, points[:, :3]), rtol=1e-12)


def test_argument_errors():
    with pytest.raises(ValueError, match="2 outputs but 1 cotangents"):
        vjp_expressions([x, y], [1], [x])
    with pytest.raises(TypeError, match="wrt must hold sympy Symbols"):
        vjp_expressions([x], [1], [x + 1])
    with pytest.raises(ValueError, match="distinct"):
        vjp_expressions([x], [1], [x, x])


# ---------------------------------------------------------------------------
# numeric oracles on traced numpy functions


def network(v, W):
    hidden = np.tanh(W @ v)
    return np.array([np.sum(np.sin(hidden) ** 2) + np.exp(v[0] * v[1]), np.log(1 + hidden @ hidden) / (1 + v[2] ** 2)])


def kinked(v):
    return np.array([np.where(v[0] > v[1], v[0] * v[2], np.sin(v[1])) + np.abs(v[2] - 1),
                     np.maximum(v[0], v[2]) ** 2 + np.hypot(v[1], v[2]) * np.arctan2(v[0], v[1])])


def vjp_of_traced(traced, cotangent, wrt_number=0):
    outputs = list(traced.outputs[0].flat)
    symbols = list(traced.arguments[wrt_number].symbols.flat)
    return vjp_expressions(outputs, [sympy.Float(c) for c in cotangent], symbols), [
        s for argument in traced.arguments for s in argument.symbols.flat]


def test_traced_network_against_complex_step():
    rng = np.random.default_rng(RNG_SEED)
    traced = symjac.trace(network, v=3, W=(4, 3))
    for _ in range(3):
        v, W, cotangent = rng.normal(size=3), rng.normal(size=(4, 3)), rng.normal(size=2)
        gradient, symbols = vjp_of_traced(traced, cotangent)
        got = evaluate(gradient, symbols, [np.concatenate([v, W.ravel()])])[0]
        np.testing.assert_allclose(got, cotangent @ complex_step_jacobian(network, (v, W), 0), rtol=1e-12, atol=1e-14)


def test_traced_kinked_function_against_central_differences():
    rng = np.random.default_rng(RNG_SEED)
    traced = symjac.trace(kinked, v=3)
    for v in ([0.3, 1.2, 2.0], [1.5, 0.4, 0.2], [-0.7, 0.9, 1.6]):
        cotangent = rng.normal(size=2)
        gradient, symbols = vjp_of_traced(traced, cotangent)
        got = evaluate(gradient, symbols, [v])[0]
        expected = cotangent @ central_difference_jacobian(kinked, (np.array(v),), 0, h=1e-6)
        np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-8)


# ---------------------------------------------------------------------------
# size: linear DAGs, cheap gradients


@pytest.fixture
def one_pass_cse(monkeypatch):
    """CSE by exact matching for every size. ``sympy.cse`` (used below
    FULL_CSE_NODES) rebuilds each product evaluated, flattening nested ones:
    the shared adjoints and prefix products of reverse mode then cost it
    quadratic time and more (minutes for a 1,000-factor product)."""
    monkeypatch.setattr(symjac.emit.simplify, "FULL_CSE_NODES", 0)


def rosenbrock(n):
    v = sympy.symbols(f"x0:{n}", real=True)
    return sympy.Add(*[100 * (v[i + 1] - v[i] ** 2) ** 2 + (1 - v[i]) ** 2 for i in range(n - 1)]), v


def test_long_sum_rosenbrock_gradient_is_cheap(one_pass_cse):
    f, v = rosenbrock(2000)
    gradient = vjp_expressions([f], [1], v)
    assert dag_size(gradient) <= 8 * dag_size([f])  # binary products: 2 edges a multiplication, n-ary: 1
    assert operations_after_cse(gradient) <= 4 * operations_after_cse([f])
    point = {symbol: value for symbol, value in zip(v, random_points(1, width=len(v))[0])}
    for k in (0, 1, 1000, 1999):
        assert float(gradient[k].xreplace(point)) == pytest.approx(float(sympy.diff(f, v[k]).xreplace(point)), rel=1e-12)


def test_deep_chain_gradient_is_cheap(one_pass_cse):
    chain = x
    for k in range(5000):
        chain = sympy.sin(chain) * XYZ[k % 3]  # nothing shared: the adjoints form one long product chain
    gradient = vjp_expressions([chain], [1], XYZ)
    assert dag_size(gradient) <= 8 * dag_size([chain])
    function_ops = with_deep_stack(operations_after_cse, [chain])
    gradient_ops = with_deep_stack(operations_after_cse, gradient)
    assert function_ops == 10_000
    assert gradient_ops <= 4 * function_ops
    # numerically: the chain rule run forward along the same chain, in floats
    point = {x: 0.9, y: 1.1, z: 0.8}
    value, tangent = point[x], np.eye(3)[0]
    for k in range(5000):
        factor = point[XYZ[k % 3]]
        tangent = np.cos(value) * factor * tangent + np.sin(value) * np.eye(3)[k % 3]
        value = np.sin(value) * factor
    np.testing.assert_allclose(evaluate_dag(gradient, point), tangent, rtol=1e-9)


def test_product_of_many_inputs_gradient_is_cheap(one_pass_cse):
    v = sympy.symbols("v0:1000", real=True)
    f = sympy.Mul(*[sympy.sin(s) for s in v]) * sympy.Mul(*v[:500])
    gradient = vjp_expressions([f], [1], v)
    assert dag_size(gradient) <= 8 * dag_size([f])  # binary products: 2 edges a multiplication, n-ary: 1
    assert with_deep_stack(operations_after_cse, gradient) <= 4 * operations_after_cse([f])
    values = np.random.default_rng(RNG_SEED).uniform(0.9, 1.1, size=len(v))
    own = np.sin(values) * np.where(np.arange(len(v)) < 500, values, 1)  # the factors holding v[k]
    d_own = np.cos(values) * np.where(np.arange(len(v)) < 500, values, 1) + np.where(np.arange(len(v)) < 500, np.sin(values), 0)
    expected = np.prod(own) / own * d_own  # no zero factors here: dividing is safe in the oracle
    np.testing.assert_allclose(evaluate_dag(gradient, dict(zip(v, values))), expected, rtol=1e-11)


# ---------------------------------------------------------------------------
# property: random smooth expressions


def _expressions():
    leaves = st.sampled_from([x, y, z, sympy.Integer(2), sympy.Rational(1, 3), sympy.Float(0.7)])

    def extend(children):
        unary = st.sampled_from([
            sympy.exp, sympy.sin, sympy.tanh, lambda e: sympy.log(1 + e ** 2),
            lambda e: e ** 2, lambda e: e ** 3, lambda e: (1 + e ** 2) ** sympy.Rational(-3, 2)])
        binary = st.sampled_from([
            lambda a, b: a + b, lambda a, b: a * b, lambda a, b: a / (1 + b ** 2), lambda a, b: a - 2 * b])
        return st.one_of(st.builds(lambda f, e: f(e), unary, children),
                         st.builds(lambda f, a, b: f(a, b), binary, children, children))

    return st.recursive(leaves, extend, max_leaves=10)


@settings(derandomize=True, database=None, deadline=None, max_examples=60,
          suppress_health_check=[HealthCheck.too_slow])
@given(first=_expressions(), second=_expressions(),
       cotangent=st.tuples(st.floats(-2, 2), st.floats(-2, 2)))
def test_random_smooth_expressions_match_sympy_diff(first, second, cotangent):
    outputs = [first, second * first + sympy.sin(second)]
    cotangents = [sympy.Float(c) for c in cotangent]
    gradient = vjp_expressions(outputs, cotangents, XYZ)
    expected = [sum(c * sympy.diff(out, s) for c, out in zip(cotangents, outputs)) for s in XYZ]
    points = np.random.default_rng(RNG_SEED).uniform(-1, 1, size=(4, 3))
    with np.errstate(all="ignore"):
        got, want = evaluate(gradient, XYZ, points), evaluate(expected, XYZ, points)
    finite = np.isfinite(want) & (np.abs(want) < 1e12)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-9, atol=1e-9)
