"""Unit tests of the stages: trace output, sympy input, printing, determinism."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy

import symjac
from symjac.api import build_derivative
from symjac.emit.printing import CPrinter, NumpyPrinter
from symjac.emit.render import render
from symjac.emit.simplify import simplify

ROOT = Path(__file__).resolve().parent.parent


def test_trace_names_symbols_like_elements():
    traced = symjac.trace(lambda W, x: W @ x, (2, 3), 3)
    assert [a.name for a in traced.arguments] == ["W", "x"]
    assert str(traced.arguments[0].symbols[1, 2]) == "W[1, 2]"
    assert traced.outputs[0].shape == (2,)
    x0, x1, x2 = traced.arguments[1].symbols
    w = traced.arguments[0].symbols
    assert sympy.expand(traced.outputs[0][0] - (w[0, 0] * x0 + w[0, 1] * x1 + w[0, 2] * x2)) == 0
    assert "output 0" in str(traced)


def test_captured_constants_are_exact():
    c = np.array([0.1, 1.0 / 3.0, 2.0])
    jac = symjac.jacobian(lambda x: c * x, 3, backend="numpy")
    J = jac(np.ones(3))
    assert J[0, 0] == 0.1 and J[1, 1] == 1.0 / 3.0 and J[2, 2] == 2.0
    traced = symjac.trace(lambda x: c * x, 3)
    assert traced.outputs[0][2] == 2 * traced.arguments[0].symbols[2]  # 2.0 became the Integer 2


def test_functions_written_with_sympy():
    def pendulum(q):
        return sympy.Matrix([q[1], -sympy.sin(q[0]) - sympy.Rational(1, 10) * q[1]])

    jac = symjac.jacobian(pendulum, 2, backend="numpy")
    q = np.array([0.3, -1.2])
    np.testing.assert_allclose(jac(q), [[0.0, 1.0], [-np.cos(0.3), -0.1]], rtol=1e-15)


def test_structural_zeros_are_not_computed():
    derivative, _ = build_derivative(lambda x: np.array([x[0] * x[1], np.sin(x[2])]), (3,), {}, None)
    (block,) = derivative.blocks
    assert [index for index, _ in block.entries] == [0, 1, 5]
    program = simplify(derivative)
    assert len(program.results) == 3
    source = render(derivative, (program,), "cython").text
    assert "_jac0_0[_jac0_0_at[2]] = cos(x[2]);  /* [1, 2] */" in source
    assert "_jac0_0[_jac0_0_at[3]]" not in source  # three entries only
    assert "_symjac_jacobian_dense0[3] = {\n    0, 1, 5\n};" in source  # the kernel library, plain C


def test_cse_shares_subexpressions():
    f = lambda x: np.array([np.exp(x[0] * x[1]) * x[2], np.exp(x[0] * x[1]) + x[2]])  # noqa: E731
    derivative, _ = build_derivative(f, (3,), {}, None)
    program = simplify(derivative)
    text = str(program)
    assert sum(1 for symbol, expr in program.temporaries if expr.has(sympy.exp)) == 1, text


@pytest.mark.parametrize(
    "expr, c_text, numpy_text",
    [
        ("x**2", "(x*x)", "x**2"),
        ("1/x**2", "(1.0/(x*x))", "x**(-2.0)"),
        ("y/x**2", "y/(x*x)", "y/x**2"),
        ("sqrt(x)", "sqrt(x)", "numpy.sqrt(x)"),
        ("x**y", "pow(x, y)", "x**y"),
        ("Float(0.1)*x", "0.1*x", "0.1*x"),
    ],
)
def test_printers(expr, c_text, numpy_text):
    x, y = sympy.symbols("x y", real=True)
    value = sympy.sympify(expr, locals={"x": x, "y": y})
    assert CPrinter({}).doprint(value) == c_text
    assert NumpyPrinter({}).doprint(value) == numpy_text


def test_piecewise_prints_as_ternary_and_where():
    x = sympy.Symbol("x", real=True)
    value = sympy.Piecewise((x, x > 0), (0, True))
    assert CPrinter({}).doprint(value) == "((x > 0) ? (x) : (0))"
    assert NumpyPrinter({}).doprint(value) == "numpy.where(numpy.greater(x, 0), x, 0)"


RENDER_SCRIPT = """
import numpy as np, hashlib
from symjac.api import build_derivative
from symjac.emit.render import render
from symjac.derive.derivatives import DERIVATIVES
from symjac.emit.simplify import simplify

KINDS = DERIVATIVES["jacobian"].all_kernels
from symjac.examples.brusselator import make_brusselator
from symjac.examples.mlp import mlp
for f, shapes in [(make_brusselator(4), (8, 3)), (mlp, (3, (4, 3), 4, (2, 4), 2))]:
    d, _ = build_derivative(f, shapes, {}, None)
    programs = tuple(simplify(d, kind) for kind in KINDS)
    for backend in ("cython", "numpy"):
        print(hashlib.sha256(render(d, programs, backend).text.encode()).hexdigest())
"""


def test_rendering_is_deterministic_across_processes():
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        run = subprocess.run([sys.executable, "-c", RENDER_SCRIPT], env=env, capture_output=True, text=True, check=True)
        outputs.add(run.stdout)
    assert len(outputs) == 1
    assert len(outputs.pop().split()) == 4


def test_function_and_jacobian_kernels(backend):
    from symjac.examples.rober import K_DEFAULT, jacobian_rober, rober

    jac = symjac.jacobian(rober, y=3, k=3, backend=backend, kernels=("jacobian", "function", "function_and_jacobian"))
    y = np.array([[0.9, 1e-4, 0.1], [0.5, 2e-5, 0.5]])
    f, J = jac.function_and_jacobian(y, K_DEFAULT)
    np.testing.assert_allclose(f, [rober(row, K_DEFAULT) for row in y], rtol=1e-14)
    np.testing.assert_allclose(J, [jacobian_rober(row, K_DEFAULT) for row in y], rtol=1e-14)
    np.testing.assert_array_equal(jac.function(y, K_DEFAULT), f)
    with pytest.raises(AttributeError, match="built without"):
        symjac.jacobian(rober, y=3, k=3, backend=backend).function(y, K_DEFAULT)


def test_public_api_all_is_complete():
    public = {name for name in dir(symjac) if not name.startswith("_") and not isinstance(getattr(symjac, name), type(sys))}
    assert public <= set(symjac.__all__) | {"annotations"}
    assert symjac.__all__ == sorted(symjac.__all__)
