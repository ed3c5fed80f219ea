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


class _KernelPrinting:
    """What both printers share: argument symbols as element accesses, exact
    floats, and Piecewise as nested selections (``_select`` gives the form)."""

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
