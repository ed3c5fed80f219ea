"""Sympy functions that numpy has but sympy lacks in the form symjac needs.

The tracer (``ops.py``) builds them. Each prints itself through sympy's
printer extension hooks (``_ccode`` for the C printer, ``_numpycode`` for the
numpy printer, both in ``emit/printing.py``) as the matching C99 / numpy call,
so precision is not lost by rewriting (``np.expm1(x)`` stays ``expm1(x)``,
never ``exp(x) - 1``) and a new function is one class here. expm1, log1p,
exp2, log2, log10 and hypot come from ``sympy.codegen.cfunctions``; this
module adds the real cube root, binary max/min selections, ``fmod``,
``trunc``, ``rint``, ``nan_to_num`` and the stable rank used by sorting.

Conventions for derivatives that are undefined on a set of measure zero
(numpy has no derivatives; these follow JAX where JAX defines one):

- ``floor``, ``ceil``, ``trunc``, ``rint``, ``sign``, ranks: derivative 0
  everywhere, also at the jumps (JAX: zero).
- ``fmod(a, b)``: d/da = 1, d/db = -trunc(a/b), also at the jumps (JAX's
  ``lax.rem``); ``np.remainder``/``%`` built on it gives d/db = -floor(a/b).
- ``maximum(a, b)`` / ``minimum(a, b)``: at a tie the *first* argument is
  selected (derivative 1 for it, 0 for the other). A max/min reduction is a
  left-biased tree of them, so it selects the first maximal element, the one
  ``np.argmax`` returns. (JAX splits the derivative evenly between tied
  elements instead; a selection keeps every derivative a derivative of one
  smooth branch, which second derivatives and sort need.)
- sorting: the element a stable sort puts at a position is the one
  selected there (ties in original order, as ``np.sort(kind="stable")``
  and JAX's sort).
"""

from __future__ import annotations

import math

import sympy
from sympy.core.logic import fuzzy_and

__all__ = ["cbrt", "eq_step", "fmod", "ge_step", "le_step", "pick", "maximum", "minimum", "nan_to_num", "rint", "stable_rank", "trunc"]

_ZERO, _ONE = sympy.S.Zero, sympy.S.One


def _number(value: float) -> sympy.Expr:
    return sympy.Integer(int(value)) if float(value).is_integer() else sympy.Float(value)


class cbrt(sympy.Function):  # noqa: N801 - named like numpy's and C's function
    """Real cube root, negative for negative arguments (numpy.cbrt, C99 cbrt).

    sympy's own ``cbrt(x)`` is the principal (complex) root ``x**(1/3)``.
    """

    @classmethod
    def eval(cls, arg):
        if arg.is_Number:
            return sympy.real_root(arg, 3)
        return None

    def fdiff(self, argindex=1):
        return 1 / (3 * cbrt(self.args[0]) ** 2)


class _Selection(sympy.Function):
    """``maximum(a, b)`` / ``minimum(a, b)``: one of two arguments, chosen by
    a comparison; the first one at a tie.

    Why binary nodes and not one n-ary ``Max(x_0, ..., x_n-1)`` node: the
    partial derivative of a node with respect to one argument is built and
    inspected by both differentiators (``derive/diff.py``, ``reverse.py``)
    once per argument; for an n-ary max it would be "is x_k the first
    maximum", a selector over all n arguments, so the gradient alone would
    cost n² work. A binary node's partial is one comparison. A reduction over
    n elements is a balanced tree of n - 1 of them (``ops._tree``): linear in
    n, depth log2(n), each partial O(1); the reverse-mode gradient is linear,
    a forward Jacobian row n log n. Since every node prefers its left
    (earlier) operand at a tie, the tree selects the first maximal element:
    if the maximum occurs in the left half, the left half's maximum equals
    it and wins; otherwise the right half holds it strictly above the left.
    Printed as C99 ``fmax``/``fmin`` and numpy ``fmax``/``fmin`` (a NaN
    operand is ignored there, where numpy's ``max`` would propagate it).
    """

    nargs = 2
    _c_name = ""

    @classmethod
    def _first_wins(cls, a, b):
        raise NotImplementedError

    @classmethod
    def new(cls, a, b):
        """``cls(a, b)`` without sympy's per-call ``nargs`` set (a third of the
        cost of a max over many elements); same result, same evaluation."""
        a, b = sympy.sympify(a), sympy.sympify(b)
        evaluated = cls.eval(a, b)
        return evaluated if evaluated is not None else sympy.Expr.__new__(cls, a, b)

    @classmethod
    def eval(cls, a, b):
        if a == b:
            return a
        if a.is_Number and b.is_Number:
            return a if cls._first_wins(a, b) else b
        return None

    def _eval_is_extended_real(self):
        return fuzzy_and(arg.is_extended_real for arg in self.args)

    def _eval_is_real(self):
        return fuzzy_and(arg.is_real for arg in self.args)

    def fdiff(self, argindex=1):
        a, b = self.args
        first = self._step(a, b)
        return first if argindex == 1 else 1 - first

    def _ccode(self, printer):
        return f"{self._c_name}({printer._print(self.args[0])}, {printer._print(self.args[1])})"

    def _numpycode(self, printer):
        return f"numpy.{self._c_name}({printer._print(self.args[0])}, {printer._print(self.args[1])})"


class maximum(_Selection):  # noqa: N801 - named like numpy's function
    """The larger of two values; the first at a tie (see :class:`_Selection`)."""

    _c_name = "fmax"

    @classmethod
    def _first_wins(cls, a, b):
        return a >= b

    @staticmethod
    def _step(a, b):
        return ge_step.new(a, b)


class minimum(_Selection):  # noqa: N801 - named like numpy's function
    """The smaller of two values; the first at a tie (see :class:`_Selection`)."""

    _c_name = "fmin"

    @classmethod
    def _first_wins(cls, a, b):
        return a <= b

    @staticmethod
    def _step(a, b):
        return le_step.new(a, b)


class _Step(sympy.Function):
    """1 where a comparison of two values holds, else 0: the partial
    derivatives of :class:`maximum`/:class:`minimum`. A function node, not a
    Piecewise of a Relational: sympy's Relational and Piecewise constructors
    query assumptions and canonicalise conditions, which for n selections in
    a tree costs seconds; this node costs what any function call does.
    Derivative 0."""

    nargs = 2
    _operator = ""
    _numpy_name = ""

    @classmethod
    def new(cls, a, b):
        evaluated = cls.eval(a, b)
        return evaluated if evaluated is not None else sympy.Expr.__new__(cls, a, b)

    @classmethod
    def eval(cls, a, b):
        if a.is_Number and b.is_Number:
            return _ONE if cls._holds(a, b) else _ZERO
        return None

    def fdiff(self, argindex=1):
        return _ZERO

    def _eval_is_real(self):
        return True

    def _eval_is_integer(self):
        return True

    def _eval_is_nonnegative(self):
        return True

    def _ccode(self, printer):
        return f"((double)({printer._print(self.args[0])} {self._operator} {printer._print(self.args[1])}))"

    def _numpycode(self, printer):
        return f"(1.0*numpy.{self._numpy_name}({printer._print(self.args[0])}, {printer._print(self.args[1])}))"


class ge_step(_Step):  # noqa: N801
    """``ge_step(a, b)``: 1 if a >= b else 0."""

    _operator, _numpy_name = ">=", "greater_equal"

    @staticmethod
    def _holds(a, b):
        return bool(a >= b)


class le_step(_Step):  # noqa: N801
    """``le_step(a, b)``: 1 if a <= b else 0."""

    _operator, _numpy_name = "<=", "less_equal"

    @staticmethod
    def _holds(a, b):
        return bool(a <= b)


class eq_step(_Step):  # noqa: N801
    """``eq_step(a, b)``: 1 if a == b else 0."""

    _operator, _numpy_name = "==", "equal"

    @staticmethod
    def _holds(a, b):
        return bool(a == b)


class pick(sympy.Function):  # noqa: N801
    """``pick(r, k, x)``: x where r == k, else 0 (a sorted position's share of
    ``x``, ``r`` its stable rank). Not ``x * eq_step(r, k)``: an infinite x
    would give inf * 0 = NaN at the other positions. Derivative
    ``eq_step(r, k)`` with respect to x, 0 for the rank."""

    nargs = 3

    @classmethod
    def new(cls, r, k, x):
        evaluated = cls.eval(r, k, x)
        return evaluated if evaluated is not None else sympy.Expr.__new__(cls, r, k, x)

    @classmethod
    def eval(cls, r, k, x):
        if r.is_Number and k.is_Number:
            return x if r == k else _ZERO
        return None

    def fdiff(self, argindex=3):
        return eq_step.new(self.args[0], self.args[1]) if argindex == 3 else _ZERO

    def _eval_is_real(self):
        return self.args[2].is_real

    def _ccode(self, printer):
        r, k, x = (printer._print(arg) for arg in self.args)
        return f"(({r} == {k}) ? ({x}) : 0.0)"

    def _numpycode(self, printer):
        r, k, x = (printer._print(arg) for arg in self.args)
        return f"numpy.where(numpy.equal({r}, {k}), {x}, 0.0)"


class trunc(sympy.Function):  # noqa: N801 - named like numpy's and C's function
    """Rounding toward zero (numpy.trunc, C99 trunc); derivative 0, also at the jumps."""

    nargs = 1

    @classmethod
    def eval(cls, arg):
        if arg.is_Number and arg.is_finite:
            return sympy.Integer(math.trunc(float(arg))) if not arg.is_Integer else arg
        return None

    def fdiff(self, argindex=1):
        return _ZERO

    def _eval_is_real(self):
        return self.args[0].is_real

    def _ccode(self, printer):
        return f"trunc({printer._print(self.args[0])})"

    def _numpycode(self, printer):
        return f"numpy.trunc({printer._print(self.args[0])})"


class rint(sympy.Function):  # noqa: N801 - named like numpy's and C's function
    """Rounding to the nearest integer, halves to even (numpy.rint, C99 rint in
    the default rounding mode); derivative 0, also at the jumps."""

    nargs = 1

    @classmethod
    def eval(cls, arg):
        if arg.is_Number and arg.is_finite:
            return arg if arg.is_Integer else sympy.Integer(round(float(arg)))
        return None

    def fdiff(self, argindex=1):
        return _ZERO

    def _eval_is_real(self):
        return self.args[0].is_real

    def _ccode(self, printer):
        return f"rint({printer._print(self.args[0])})"

    def _numpycode(self, printer):
        return f"numpy.rint({printer._print(self.args[0])})"


class fmod(sympy.Function):  # noqa: N801 - named like numpy's and C's function
    """C's remainder of truncated division, sign of the dividend (numpy.fmod).

    d/da = 1 and d/db = -trunc(a/b), also at the jumps (JAX's ``lax.rem``).
    """

    nargs = 2

    @classmethod
    def eval(cls, a, b):
        if a.is_Number and b.is_Number and b != 0 and a.is_finite and b.is_finite:
            return _number(math.fmod(float(a), float(b)))
        return None

    def fdiff(self, argindex=1):
        a, b = self.args
        return _ONE if argindex == 1 else -trunc(a / b)

    def _eval_is_real(self):
        return fuzzy_and(arg.is_real for arg in self.args)

    def _ccode(self, printer):
        return f"fmod({printer._print(self.args[0])}, {printer._print(self.args[1])})"

    def _numpycode(self, printer):
        return f"numpy.fmod({printer._print(self.args[0])}, {printer._print(self.args[1])})"


class nan_to_num(sympy.Function):  # noqa: N801 - named like numpy's function
    """``nan_to_num(x, nan, posinf, neginf)``: x with NaN and infinities replaced
    by the constants; derivative 1 with respect to x (where x is finite, the
    only place a derivative means anything)."""

    nargs = 4

    @classmethod
    def eval(cls, x, nan, posinf, neginf):
        if x.is_Number and x.is_finite:
            return x
        return None

    def fdiff(self, argindex=1):
        return _ONE if argindex == 1 else _ZERO

    def _eval_is_real(self):
        return True

    def _ccode(self, printer):
        x, nan, posinf, neginf = (printer._print(arg) for arg in self.args)
        return f"(isnan({x}) ? ({nan}) : (isinf({x}) ? (({x}) > 0 ? ({posinf}) : ({neginf})) : ({x})))"

    def _numpycode(self, printer):
        x, nan, posinf, neginf = (printer._print(arg) for arg in self.args)
        return f"numpy.nan_to_num({x}, nan={nan}, posinf={posinf}, neginf={neginf})"


class stable_rank(sympy.Function):  # noqa: N801
    """``stable_rank(j, x_0, ..., x_n-1)``: the position a stable sort gives
    ``x_j``: the number of ``x_i`` with ``i < j, x_i <= x_j`` or
    ``i > j, x_i < x_j``. Piecewise constant: derivative 0.

    A node of its own so that ``rank == k`` stays one comparison: written
    as a sum of sympy Piecewise indicators, sympy expands such a condition
    into all combinations of the indicators' conditions (exponential).
    """

    @classmethod
    def new(cls, j, *values):
        """``cls(j, *values)`` without sympy's per-call argument processing."""
        evaluated = cls.eval(j, *values)
        return evaluated if evaluated is not None else sympy.Expr.__new__(cls, j, *values)

    @classmethod
    def eval(cls, j, *values):
        if all(value.is_Number for value in values):
            index = int(j)
            x = values[index]
            return sympy.Integer(sum(1 for i, value in enumerate(values)
                                     if (value <= x if i < index else value < x) and i != index))
        return None

    def fdiff(self, argindex=1):
        return _ZERO

    def _eval_is_integer(self):
        return True

    def _terms(self, printer, compare):
        j = int(self.args[0])
        values = self.args[1:]
        x = printer._print(values[j])
        return [compare(printer._print(value), x, i < j) for i, value in enumerate(values) if i != j]

    def _ccode(self, printer):
        terms = self._terms(printer, lambda v, x, before: f"({v} {'<=' if before else '<'} {x})")
        return "(" + " + ".join(terms or ["0"]) + ")"

    def _numpycode(self, printer):
        terms = self._terms(printer, lambda v, x, before:
                            f"numpy.{'less_equal' if before else 'less'}({v}, {x})")
        return "(" + " + ".join(f"1.0*{term}" for term in terms or ["0"]) + ")"
