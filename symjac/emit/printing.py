"""Expression printers used by ``render.py``: sympy expression -> C or numpy text.

All expression text in generated code comes from these printers (sympy's code
printers with a few methods overridden), never from pasting strings:

- symbols of the traced arguments print as element accesses, indexed like
  the symbols are named (C: ``y[1]``, ``W[1][0]``; numpy: ``y[:, 1]``,
  ``W[:, 1, 0]``, see ``emit/backends.py``);
- floats print as the shortest text that round-trips the same double;
- integer powers up to the 8th print as parenthesised products (``(x*x)``),
  not ``pow`` calls: the parentheses keep them correct inside sympy's own Mul
  printing, which takes a Pow to bind tighter than ``*`` and ``/``;
- ``strict`` printing refuses anything it cannot print exactly;
- ``ITE`` (if-then-else conditions) prints as a selection directly;
- functions of ``front/functions.py`` print themselves (``_ccode``,
  ``_numpycode``: sympy's printer hooks), next to their definitions.
"""

from __future__ import annotations

import numpy as np
import sympy
from sympy.printing.c import C99CodePrinter
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.precedence import PRECEDENCE, precedence

from ..errors import PrinterError

__all__ = ["CPrinter", "NumpyPrinter", "symbol_names"]


def symbol_names(arguments, element) -> dict:
    """Map each argument symbol to its text: ``element(name, index)``, e.g. ``W[1][0]``."""
    return {
        symbol: element(argument.name, index)
        for argument in arguments
        for index, symbol in np.ndenumerate(argument.symbols)
    }


def _float_text(value: float) -> str:
    text = repr(float(value))
    return text if any(c in text for c in ".eEn") else text + ".0"


_ADD, _MUL, _POW, _ATOM = (PRECEDENCE[name] for name in ("Add", "Mul", "Pow", "Atom"))


def _negative(number) -> bool:
    """Whether a sympy Number is below zero, without the assumption system."""
    if number.is_Rational:
        return number.p < 0
    if number.is_Float:
        return number._mpf_[0] == 1  # mpmath's sign bit: every negative Float, never nan or 0
    return bool(number.is_extended_negative)  # -oo


def _fast_precedence(expr) -> int:
    """sympy's ``precedence`` for the common node types, without its cost:
    for a product sympy builds ``-expr`` (a new, evaluated Mul) to ask
    whether a minus sign comes out; here the leading coefficient says so,
    as it does in sympy's own ``Mul.could_extract_minus_sign``."""
    if expr.is_Add:
        return _ADD
    if expr.is_Mul:
        first = expr.args[0]
        return _ADD if first.is_Number and _negative(first) else _MUL
    if expr.is_Pow:
        return _POW
    if expr.is_Symbol:
        return _ATOM
    if expr.is_Number:
        if expr.is_Integer or expr.is_Float:
            return _ADD if _negative(expr) else _ATOM
        if expr.is_Rational:
            return _ADD if expr.p < 0 else _MUL
    return precedence(expr)


class _KernelPrinting:
    """What both printers share: argument symbols as element accesses, exact
    floats, and Piecewise as nested selections (``_select`` gives the form).

    Sums and products print as sympy's printers print them, with one
    difference that makes printing a large program several times faster:
    terms and factors come in the order the expression holds them (sympy's
    canonical order: deterministic, the numbers of a sum moved to its end)
    instead of being sorted again by sympy's monomial order, which expands
    each term into powers and coefficients to compare them. Printing was
    the slowest stage of a Hessian build (2 s of an 8 -> 16 -> 8 MLP's)."""

    def doprint(self, expr, assign_to=None):
        # sympy's doprint first walks and rebuilds the whole tree (to strip
        # re() around UnevaluatedExpr, which traced code never holds); a
        # plain expression prints directly, anything else the way sympy does.
        if assign_to is not None or not isinstance(expr, sympy.Expr) or isinstance(expr, sympy.UnevaluatedExpr):
            return super().doprint(expr, assign_to)
        self._not_supported, self._number_symbols = set(), set()
        text = self._print(expr)
        if self._not_supported or self._number_symbols or "\n" in text:
            return super().doprint(expr)
        return text

    def parenthesize(self, item, level, strict=False):
        prec = _fast_precedence(item)
        if prec < level or (not strict and prec <= level):
            return f"({self._print(item)})"
        return self._print(item)

    def _print_Add(self, expr, order=None):
        args = expr.args
        terms = [term for term in args if not term.is_Number] + [term for term in args if term.is_Number]
        parts = []
        for term in terms:
            text = self._print(term)
            if text.startswith("-") and not term.is_Add:
                sign, text = "-", text[1:]
            else:
                sign = "+"
            parts += (sign, f"({text})" if term.is_Add or _fast_precedence(term) < _ADD else text)
        sign = parts.pop(0)
        return ("" if sign == "+" else sign) + " ".join(parts)

    def _print_Mul(self, expr):
        """sympy's CodePrinter._print_Mul: a sign, then the numerator's
        factors and the denominator's (negative rational powers)."""
        macros = getattr(self, "math_macros", None)  # C's M_SQRT2 and the like
        if macros and expr in macros:
            return super()._print_Mul(expr)
        factors = list(expr.args)
        sign = ""
        if factors[0].is_Number:
            coefficient = factors.pop(0)
            if _negative(coefficient):
                sign, coefficient = "-", -coefficient
            if coefficient is not sympy.S.One:
                factors.insert(0, coefficient)
        level = _ADD if sign else _MUL  # sympy parenthesizes at the product's own precedence
        numerator, denominator = [], []
        for factor in factors:
            if factor.is_Pow and factor.exp.is_Rational and factor.exp.p < 0:
                denominator.append(factor.base if factor.exp is sympy.S.NegativeOne
                                   else sympy.Pow(factor.base, -factor.exp, evaluate=False))
            else:
                numerator.append(factor)
        numerator = numerator or [sympy.S.One]
        if len(numerator) == 1 and sign:
            top = [self.parenthesize(numerator[0], (_POW + _MUL) / 2)]
        else:
            top = [self.parenthesize(factor, level) for factor in numerator]
        # A product in the denominator keeps its parentheses (sympy issue 14160).
        bottom = [f"({self._print(factor)})" if factor.is_Mul and _fast_precedence(factor) > level
                  else self.parenthesize(factor, level) for factor in denominator]
        if not bottom:
            return sign + "*".join(top)
        if len(bottom) == 1:
            return sign + "*".join(top) + "/" + bottom[0]
        return sign + "*".join(top) + "/(" + "*".join(bottom) + ")"

    def _print_Symbol(self, expr):
        return self._symbol_text.get(expr, expr.name)

    def _print_Float(self, expr):
        return _float_text(expr)

    def _print_not_supported(self, expr):
        # sympy's refusal advises its 'strict' printer option, which symjac
        # users never set: say instead which function and what to do.
        if not self._settings.get("strict"):
            return super()._print_not_supported(expr)
        name = getattr(expr, "func", type(expr)).__name__
        language = "C" if isinstance(self, C99CodePrinter) else "numpy"
        if isinstance(expr, (sympy.Derivative, sympy.Subs)):
            inner = getattr(expr.expr, "func", type(expr.expr)).__name__
            raise PrinterError(
                f"symjac cannot differentiate {inner}: sympy knows no formula for its derivative here ({str(expr)[:80]}). "
                f"Write {inner} with functions whose derivatives are known (np.exp, np.log, np.sin, ...), or keep it "
                "out of what is differentiated and pass its value as an argument")
        raise PrinterError(
            f"symjac cannot write {name}(...) in {language}: generated code has no equivalent of the sympy function "
            f"{name} (in {str(expr)[:80]}). Write it with functions numpy and C have (np.exp, np.log, np.sin, "
            "np.sqrt, np.arctan2, np.where, ...), e.g. a series or rational approximation; where it does not depend on "
            f"what is differentiated, compute {name} outside and pass its value as an argument")

    def _print_ComplexInfinity(self, expr):
        if not self._settings.get("strict"):
            return super()._print_not_supported(expr)
        language = "C" if isinstance(self, C99CodePrinter) else "numpy"
        raise PrinterError(f"symjac cannot write ComplexInfinity(...) in {language}: the traced expressions divide "
                           "by an exact zero (sympy's zoo); check the function at the point where it was folded")

    def _print_Piecewise(self, expr):
        if expr.args[-1].cond != True:  # noqa: E712 - sympy's true
            raise ValueError("Piecewise without a default branch cannot be printed")
        text = self._print(expr.args[-1].expr)
        for piece in reversed(expr.args[:-1]):
            text = self._select(self._print(piece.cond), self._print(piece.expr), text)
        return text

    def _print_ITE(self, expr):
        # sympy's own ITE printing rewrites to Piecewise first, which fails on
        # an ITE nested in And/Or (a boolean Piecewise is not a Boolean): the
        # conditions sympy builds for chained np.maximum/np.where/np.clip.
        condition, then, otherwise = expr.args
        return self._select(self._print(condition), self._print(then), self._print(otherwise))


# Integer powers up to this exponent print as products: without -ffast-math
# C compilers keep pow(x, 6) a libm call, several times slower than products.
MAX_PRODUCT_POWER = 8


def _power_product(factor: str, n: int) -> str:
    """``factor`` to the ``n``-th power as products: ``x*x*x*x`` up to 4, then by
    squaring (``(x*x*x)*(x*x*x)``; the compiler computes the repeated half once)."""
    if n <= 4:
        return "*".join([factor] * n)
    half = _power_product(factor, n // 2)
    return f"({half})*({half})" + (f"*{factor}" if n % 2 else "")


class CPrinter(_KernelPrinting, C99CodePrinter):
    """C99 printer for kernel bodies."""

    def __init__(self, symbols: dict, settings=None):
        super().__init__({"strict": True, **(settings or {})})
        self._symbol_text = symbols

    @staticmethod
    def _select(condition, then, otherwise):
        return f"(({condition}) ? ({then}) : ({otherwise}))"

    def _print_Pow(self, expr):
        base, exponent = expr.args
        if exponent.is_Integer and 2 <= abs(int(exponent)) <= MAX_PRODUCT_POWER:
            factor = self.parenthesize(base, sympy.printing.precedence.PRECEDENCE["Mul"] + 1)
            product = _power_product(factor, abs(int(exponent)))
            return f"({product})" if exponent > 0 else f"(1.0/({product}))"
        if exponent == -1:
            return f"(1.0/{self.parenthesize(base, sympy.printing.precedence.PRECEDENCE['Mul'] + 1)})"
        if exponent == sympy.S.Half:
            return f"sqrt({self._print(base)})"
        if exponent == -sympy.S.Half:
            return f"(1.0/sqrt({self._print(base)}))"
        return f"pow({self._print(base)}, {self._print(exponent)})"

    def _print_BooleanTrue(self, expr):
        return "1"

    def _print_BooleanFalse(self, expr):
        return "0"

    def _print_cbrt(self, expr):
        return f"cbrt({self._print(expr.args[0])})"


class NumpyPrinter(_KernelPrinting, NumPyPrinter):
    """numpy printer for batch-vectorised kernels: every value is an array over points."""

    def __init__(self, symbols: dict, settings=None):
        super().__init__({"strict": True, "fully_qualified_modules": True, **(settings or {})})
        self._symbol_text = symbols

    @staticmethod
    def _select(condition, then, otherwise):
        return f"numpy.where({condition}, {then}, {otherwise})"

    def _print_cbrt(self, expr):
        return f"numpy.cbrt({self._print(expr.args[0])})"
