"""Unit tests of ``symjac.printing``: every printer case as an inline expected string.

Both printers are built from a plain dict mapping argument symbols to their
text, so these tests do not depend on how symjac names arguments elsewhere.
The C printer writes one point of a kernel (``x[0]``); the numpy printer
writes batch columns (``x[:, 0]``).
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import sympy
from sympy.codegen import cfunctions

from symjac.front.functions import cbrt
from symjac.emit.printing import CPrinter, NumpyPrinter
from symjac.errors import PrinterError

x = sympy.Symbol("x", real=True)
y = sympy.Symbol("y", real=True)
t0 = sympy.Symbol("_t0", real=True)  # a temporary (CSE) symbol: not in the dict, printed by name

C = CPrinter({x: "x[0]", y: "y[1]"})
NP = NumpyPrinter({x: "x[:, 0]", y: "y[:, 1]"})


def both(expr) -> tuple[str, str]:
    return C.doprint(expr), NP.doprint(expr)


# --------------------------------------------------------------------------
# symbols


def test_argument_symbols_print_through_the_given_dict():
    assert both(x) == ("x[0]", "x[:, 0]")
    assert both(y * x) == ("x[0]*y[1]", "x[:, 0]*y[:, 1]")
    other = CPrinter({x: "state[7]"})
    assert other.doprint(x + 1) == "state[7] + 1"


def test_symbols_outside_the_dict_print_by_name():
    assert both(t0 + x) == ("_t0 + x[0]", "_t0 + x[:, 0]")


def test_the_dict_is_matched_by_symbol_not_by_name():
    """A symbol with the same name but other assumptions is a different symbol."""
    plain_x = sympy.Symbol("x")
    assert C.doprint(plain_x) == "x"


# --------------------------------------------------------------------------
# functions numpy and C99 have but sympy would rewrite


@pytest.mark.parametrize(
    "expr, c_text, numpy_text",
    [
        (cbrt(x), "cbrt(x[0])", "numpy.cbrt(x[:, 0])"),
        (cfunctions.expm1(x), "expm1(x[0])", "numpy.expm1(x[:, 0])"),
        (cfunctions.log1p(x), "log1p(x[0])", "numpy.log1p(x[:, 0])"),
        (cfunctions.exp2(x), "exp2(x[0])", "numpy.exp2(x[:, 0])"),
        (cfunctions.log2(x), "log2(x[0])", "numpy.log2(x[:, 0])"),
        (cfunctions.log10(x), "log10(x[0])", "numpy.log10(x[:, 0])"),
        (cfunctions.hypot(x, y), "hypot(x[0], y[1])", "numpy.hypot(x[:, 0], y[:, 1])"),
        (sympy.exp(x), "exp(x[0])", "numpy.exp(x[:, 0])"),
        (sympy.log(x), "log(x[0])", "numpy.log(x[:, 0])"),
        (sympy.atan2(y, x), "atan2(y[1], x[0])", "numpy.arctan2(y[:, 1], x[:, 0])"),
        (sympy.tanh(x), "tanh(x[0])", "numpy.tanh(x[:, 0])"),
        (sympy.Abs(x), "fabs(x[0])", "abs(x[:, 0])"),
        (cbrt(x + y) * 2, "2*cbrt(x[0] + y[1])", "2*numpy.cbrt(x[:, 0] + y[:, 1])"),
    ],
    ids=["cbrt", "expm1", "log1p", "exp2", "log2", "log10", "hypot", "exp", "log", "atan2", "tanh", "abs",
         "cbrt-nested"],
)
def test_functions(expr, c_text, numpy_text):
    assert both(expr) == (c_text, numpy_text)


def test_cbrt_is_the_real_cube_root_not_a_power():
    """symjac's cbrt prints as cbrt(), so negative arguments stay real (pow(x, 1/3) would be NaN)."""
    assert "pow" not in C.doprint(cbrt(x)) and "**" not in NP.doprint(cbrt(x))
    text = NP.doprint(cbrt(x))
    assert eval(text, {"numpy": np, "x": np.array([[-8.0]])}) == -2.0


# --------------------------------------------------------------------------
# numbers


@pytest.mark.parametrize(
    "value, text",
    [
        (0.1, "0.1"),
        (1e-300, "1e-300"),
        (2.5e20, "2.5e+20"),
        (1.0 / 3.0, "0.3333333333333333"),
        (5e-324, "5e-324"),  # the smallest subnormal
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (123456789012345678.0, "1.2345678901234568e+17"),
        (1.0, "1.0"),
        (-3.0, "-3.0"),
        (-0.25, "-0.25"),
    ],
)
def test_floats_print_as_the_shortest_round_trip_text(value, text):
    assert both(sympy.Float(value)) == (text, text)
    assert float(text) == value


def test_float_round_trip_is_exact_for_random_doubles():
    rng = np.random.default_rng(11)
    bits = rng.integers(0, 2**63 - 1, size=2000, dtype=np.int64)  # positive, every exponent
    values = [struct.unpack("<d", struct.pack("<q", int(b)))[0] for b in bits]
    values = [v for v in values if math.isfinite(v)] + [float(v) for v in rng.normal(size=200) * 10.0 ** rng.integers(-20, 20, 200)]
    for value in values:
        c_text, numpy_text = both(sympy.Float(value))
        assert c_text == numpy_text == repr(value)
        assert float(c_text) == value, (value, c_text)
        assert any(ch in c_text for ch in ".en"), c_text  # a C double literal, never an int


def test_integers_and_rationals():
    assert both(sympy.Integer(3)) == ("3", "3")
    assert both(x + 3) == ("x[0] + 3", "x[:, 0] + 3")
    assert both(2 * x) == ("2*x[0]", "2*x[:, 0]")
    # C would divide integers as integers: rationals print with double literals there
    assert both(sympy.Rational(1, 3)) == ("1.0/3.0", "1/3")
    assert both(x / 3) == ("(1.0/3.0)*x[0]", "(1/3)*x[:, 0]")
    assert both(sympy.Rational(-5, 2) * x) == ("-5.0/2.0*x[0]", "-5/2*x[:, 0]")  # (-5.0/2.0)*x: left to right


def test_rational_inside_a_piecewise_branch_is_a_double_in_c():
    expr = sympy.Piecewise((sympy.Rational(1, 2), x > 0), (2, True))
    assert C.doprint(expr) == "((x[0] > 0) ? (1.0/2.0) : (2))"


def test_constants():
    assert both(sympy.pi) == ("M_PI", "numpy.pi")
    assert both(sympy.E) == ("M_E", "numpy.e")
    assert both(sympy.oo) == ("INFINITY", "numpy.inf")
    assert both(sympy.nan) == ("NAN", "numpy.nan")


# --------------------------------------------------------------------------
# powers


@pytest.mark.parametrize(
    "expr, c_text, numpy_text",
    [
        (x**2, "(x[0]*x[0])", "x[:, 0]**2"),
        (x**3, "(x[0]*x[0]*x[0])", "x[:, 0]**3"),
        (x**4, "(x[0]*x[0]*x[0]*x[0])", "x[:, 0]**4"),
        (x**5, "((x[0]*x[0])*(x[0]*x[0])*x[0])", "x[:, 0]**5"),
        (x**8, "((x[0]*x[0]*x[0]*x[0])*(x[0]*x[0]*x[0]*x[0]))", "x[:, 0]**8"),
        (x**9, "pow(x[0], 9)", "x[:, 0]**9"),
        ((x + y) ** 2, "((x[0] + y[1])*(x[0] + y[1]))", "(x[:, 0] + y[:, 1])**2"),
        (sympy.sin(x) ** 3, "(sin(x[0])*sin(x[0])*sin(x[0]))", "numpy.sin(x[:, 0])**3"),
        (x**-1, "(1.0/x[0])", "x[:, 0]**(-1.0)"),
        (x**-2, "(1.0/(x[0]*x[0]))", "x[:, 0]**(-2.0)"),
        (x**-3, "(1.0/(x[0]*x[0]*x[0]))", "x[:, 0]**(-3.0)"),
        (x**-4, "(1.0/(x[0]*x[0]*x[0]*x[0]))", "x[:, 0]**(-4.0)"),
        (x**-5, "(1.0/((x[0]*x[0])*(x[0]*x[0])*x[0]))", "x[:, 0]**(-5.0)"),
        (x**-9, "pow(x[0], -9)", "x[:, 0]**(-9.0)"),
        ((x + y) ** -1, "(1.0/(x[0] + y[1]))", "(x[:, 0] + y[:, 1])**(-1.0)"),
        (sympy.sqrt(x), "sqrt(x[0])", "numpy.sqrt(x[:, 0])"),
        (x ** sympy.Rational(-1, 2), "(1.0/sqrt(x[0]))", "1/numpy.sqrt(x[:, 0])"),
        (x**y, "pow(x[0], y[1])", "x[:, 0]**y[:, 1]"),
        (x**2.5, "pow(x[0], 2.5)", "x[:, 0]**2.5"),
        (x ** sympy.Rational(1, 3), "pow(x[0], 1.0/3.0)", "x[:, 0]**(1/3)"),
        (2**x, "pow(2, x[0])", "2**x[:, 0]"),
    ],
    ids=["x2", "x3", "x4", "x5", "x8", "x9", "sum2", "sin3", "x-1", "x-2", "x-3", "x-4", "x-5", "x-9", "sum-1", "sqrt", "rsqrt",
         "x^y", "x^2.5", "x^1/3", "2^x"],
)
def test_powers(expr, c_text, numpy_text):
    assert both(expr) == (c_text, numpy_text)


@pytest.mark.parametrize(
    "expr, c_text",
    [
        (y * x**2, "y[1]*(x[0]*x[0])"),
        (y / x, "y[1]/x[0]"),
        (y / x**2, "y[1]/(x[0]*x[0])"),
        (y * x ** sympy.Rational(-1, 2), "y[1]/sqrt(x[0])"),
        (y / x**5, "y[1]/((x[0]*x[0])*(x[0]*x[0])*x[0])"),
        (y / x**9, "y[1]/pow(x[0], 9)"),
        (x**3 * y**3, "(x[0]*x[0]*x[0])*(y[1]*y[1]*y[1])"),
    ],
)
def test_powers_inside_products_keep_their_parentheses_in_c(expr, c_text):
    assert C.doprint(expr) == c_text


def test_printed_powers_evaluate_to_the_same_numbers():
    """The numpy texts, evaluated, against sympy's own evaluation of each power."""
    X = np.array([[0.3], [1.7], [4.0]])
    Y = np.array([[-1.2, 0.5], [2.0, -0.7], [0.9, 3.0]])
    for expr in (x**2, x**3, x**4, x**-1, x**-2, x**-3, x**-4, x ** sympy.Rational(-1, 2), x**y, (x + y) ** -3):
        got = eval(NP.doprint(expr), {"numpy": np, "x": X, "y": Y})
        want = sympy.lambdify((x, y), expr, "math")
        np.testing.assert_allclose(got, [want(a, b) for a, b in zip(X[:, 0], Y[:, 1])], rtol=1e-15)


# --------------------------------------------------------------------------
# Piecewise and booleans


def test_piecewise_two_branches():
    expr = sympy.Piecewise((x, x > y), (y, True))
    assert both(expr) == (
        "((x[0] > y[1]) ? (x[0]) : (y[1]))",
        "numpy.where(numpy.greater(x[:, 0], y[:, 1]), x[:, 0], y[:, 1])",
    )


def test_piecewise_three_branches_nest_in_order():
    expr = sympy.Piecewise((x, x > 0), (y**2, y < 1), (0, True))
    assert both(expr) == (
        "((x[0] > 0) ? (x[0]) : (((y[1] < 1) ? ((y[1]*y[1])) : (0))))",
        "numpy.where(numpy.greater(x[:, 0], 0), x[:, 0], numpy.where(numpy.less(y[:, 1], 1), y[:, 1]**2, 0))",
    )


def test_piecewise_evaluates_like_sympy():
    expr = sympy.Piecewise((x * y, x > y), (sympy.sin(y), y < 0.5), (x + 1, True))
    X = np.array([[2.0], [-1.0], [-2.0]])
    Y = np.array([[0.0, 1.0], [0.0, 0.25], [0.0, 3.0]])  # one point per branch
    got = eval(NP.doprint(expr), {"numpy": np, "x": X, "y": Y})
    want = [float(expr.subs({x: a, y: b})) for a, b in zip(X[:, 0], Y[:, 1])]
    np.testing.assert_allclose(got, want, rtol=1e-15)  # numpy's sin vs mpmath's: within an ulp


def test_piecewise_without_default_branch_is_refused():
    expr = sympy.Piecewise((x, x > 0))
    for printer in (C, NP):
        with pytest.raises(ValueError, match="Piecewise without a default branch"):
            printer.doprint(expr)


@pytest.mark.parametrize(
    "expr, c_text, numpy_text",
    [
        (sympy.true, "1", "True"),
        (sympy.false, "0", "False"),
        (x > y, "x[0] > y[1]", "numpy.greater(x[:, 0], y[:, 1])"),
        (x >= 0, "x[0] >= 0", "numpy.greater_equal(x[:, 0], 0)"),
        (x < y, "x[0] < y[1]", "numpy.less(x[:, 0], y[:, 1])"),
        (x <= y, "x[0] <= y[1]", "numpy.less_equal(x[:, 0], y[:, 1])"),
        (sympy.Eq(x, y), "x[0] == y[1]", "numpy.equal(x[:, 0], y[:, 1])"),
        (sympy.Ne(x, y), "x[0] != y[1]", "numpy.not_equal(x[:, 0], y[:, 1])"),
        (sympy.And(x > 0, y < 1), "x[0] > 0 && y[1] < 1",
         "numpy.logical_and.reduce((numpy.greater(x[:, 0], 0),numpy.less(y[:, 1], 1)))"),
        (sympy.Or(x >= 0, sympy.Eq(y, 1)), "y[1] == 1 || x[0] >= 0",
         "numpy.logical_or.reduce((numpy.equal(y[:, 1], 1),numpy.greater_equal(x[:, 0], 0)))"),
        (sympy.Not(x > 0, evaluate=False), "!(x[0] > 0)", "numpy.logical_not(numpy.greater(x[:, 0], 0))"),
        (sympy.Not(sympy.And(x > 0, y < 1), evaluate=False), "!(x[0] > 0 && y[1] < 1)",
         "numpy.logical_not(numpy.logical_and.reduce((numpy.greater(x[:, 0], 0),numpy.less(y[:, 1], 1))))"),
    ],
    ids=["true", "false", "gt", "ge", "lt", "le", "eq", "ne", "and", "or", "not", "not-and"],
)
def test_booleans_and_relationals(expr, c_text, numpy_text):
    assert both(expr) == (c_text, numpy_text)


def test_boolean_constants_as_piecewise_conditions():
    """An ITE condition (np.clip's derivative has one) prints with sympy's true/false as C ints."""
    expr = sympy.Piecewise((0, sympy.ITE(x < -1, sympy.false, x > 2)), (1, True))
    assert both(expr) == (
        "((((x[0] < -1) ? (0) : (x[0] > 2))) ? (0) : (1))",
        "numpy.where(numpy.where(numpy.less(x[:, 0], -1), False, numpy.greater(x[:, 0], 2)), 0, 1)",
    )


# --------------------------------------------------------------------------
# strict mode: what cannot be printed is refused, never half-printed


@pytest.mark.parametrize(
    "expr, name",
    [
        (sympy.Function("f")(x), "f"),
        (sympy.zeta(x), "zeta"),
        (sympy.besselj(0, x), "besselj"),
        (sympy.zoo, "ComplexInfinity"),
    ],
    ids=["undefined-function", "zeta", "besselj", "zoo"],
)
def test_strict_c_printer_refuses_what_it_cannot_print(expr, name):
    with pytest.raises(PrinterError, match=rf"symjac cannot write {name}\(\.\.\.\) in C"):
        C.doprint(expr)


@pytest.mark.parametrize(
    "expr, name",
    [(sympy.Function("f")(x), "f"), (sympy.zeta(x), "zeta"), (sympy.besselj(0, x), "besselj")],
    ids=["undefined-function", "zeta", "besselj"],
)
def test_strict_numpy_printer_refuses_what_it_cannot_print(expr, name):
    with pytest.raises(PrinterError, match=rf"symjac cannot write {name}\(\.\.\.\) in numpy"):
        NP.doprint(expr)


def test_strict_refusal_inside_a_larger_expression():
    with pytest.raises(NotImplementedError, match="zeta"):
        C.doprint(x**2 + sympy.exp(y) * sympy.zeta(x))
    with pytest.raises(NotImplementedError, match="zeta"):
        NP.doprint(sympy.Piecewise((sympy.zeta(x), x > 2), (0, True)))


def test_settings_are_merged_not_replaced():
    """Extra settings keep the printers strict unless strict is given."""
    lenient = CPrinter({x: "x[0]"}, settings={"strict": False})
    assert "f" in lenient.doprint(sympy.Function("f")(x))
    still_strict = NumpyPrinter({x: "x[:, 0]"}, settings={"precision": 17})
    with pytest.raises(PrinterError, match="symjac cannot write zeta"):
        still_strict.doprint(sympy.zeta(x))
    assert still_strict.doprint(x**2) == "x[:, 0]**2"  # and still fully qualified
    assert still_strict.doprint(sympy.sin(x)) == "numpy.sin(x[:, 0])"
