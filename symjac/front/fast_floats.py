"""Faster answers to the questions sympy asks most about numbers while symjac builds.

Every product sympy builds asks whether its numeric coefficient is zero
(``Mul.flatten``: ``coeff.is_zero``), and ``tanh(a + b)`` asks whether its
argument's terms are negative. A Float made by arithmetic (the product of
two weights of an MLP) is a new object, and its first assumption query runs
sympy's general fact deduction: about 0.1 ms, 3,856 times in the second
derivatives of an 8 -> 16 -> 8 MLP, a third of that stage. Inside
:func:`fast_float_zero`, ``Float.is_zero`` and ``Float.is_extended_negative``
are answered from the number itself, as sympy's own ``Float._eval_is_zero``
(``_mpf_ == fzero``) and ``_eval_is_extended_negative`` (the sign of the
number, -oo included, nan not) do: the same answers, without the
deduction. ``Float.__hash__`` (every cache lookup, dict and set of
expressions hashes the numbers in them) converts the number to a Python
float each time; inside, the same hash is remembered on the Float (in
``Basic``'s own ``_mhash`` slot, which Float leaves unused).

Elementwise functions ask whether their argument is zero (``tanh(arg)``:
``arg.is_zero``); for a sum, sympy answers by deducing the signs of its
terms: 4 ms for each ``W1[k] @ x + b1[k]`` of an MLP layer. Inside, the sum
of a number and of numbers times distinct symbols that are only ``real``
(traced arguments: ``trace.py``) is answered at once: it is not zero
everywhere and not non-zero everywhere (it is a non-constant affine
function of unbounded reals), so sympy's answer is None, which is returned
without asking. Any other sum is asked as before.

Used by ``api.py`` around the symbolic stages of a build; outside, sympy is
left as it was.
"""

from __future__ import annotations

import contextlib
import threading

import sympy
from mpmath.libmp import fzero

__all__ = ["fast_float_zero"]

_lock = threading.Lock()
_depth = 0  # nested or concurrent users of the context


def _is_zero(self) -> bool:
    return self._mpf_ == fzero


def _is_extended_negative(self) -> bool:
    return self._mpf_[0] == 1  # mpmath's sign bit: set for every negative number and -inf, never for nan or 0


_REAL = sympy.Symbol("x", real=True).assumptions0  # what a traced argument's symbols know
_basic_is_zero = sympy.Basic.is_zero  # sympy's property: the cached fact, else its deduction
_UNASKED = object()


def _real_number(term) -> bool:
    return (term.is_Float or term.is_Rational) and term.is_finite  # finite: not nan, not +-oo


def _affine_symbol(term):
    """The symbol of ``c*x`` or ``x`` (x real, nothing else known), else None."""
    if term.is_Mul and len(term.args) == 2 and _real_number(term.args[0]):
        term = term.args[1]  # a canonical product's number is not 0
    if term.is_Symbol and term.assumptions0 == _REAL:
        return term
    return None


def _add_is_zero(self):
    known = self._assumptions.get("zero", _UNASKED)
    if known is not _UNASKED:
        return known
    symbols = set()
    for term in self.args:
        if not term.is_Number:
            symbol = _affine_symbol(term)
            if symbol is None or symbol in symbols:
                return _basic_is_zero.fget(self)
            symbols.add(symbol)
        elif not _real_number(term):
            return _basic_is_zero.fget(self)
    return None if symbols else _basic_is_zero.fget(self)


_float_hash = sympy.Float.__hash__  # sympy's own: hash(float(self)), or Basic's for infinities


def _remembered_hash(self) -> int:
    value = self._mhash
    if value is None:
        value = self._mhash = _float_hash(self)  # a Float never changes: neither does its hash
    return value


@contextlib.contextmanager
def fast_float_zero():
    """Within the block, ``is_zero`` and ``is_extended_negative`` of a sympy Float skip the assumption
    system and its hash is computed once; so does ``is_zero`` of an affine sum of real symbols."""
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1:
            sympy.Float.is_zero = property(_is_zero)
            sympy.Float.is_extended_negative = property(_is_extended_negative)
            sympy.Float.__hash__ = _remembered_hash
            sympy.Add.is_zero = property(_add_is_zero)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                del sympy.Float.is_zero  # the inherited assumption properties again
                del sympy.Float.is_extended_negative
                sympy.Float.__hash__ = _float_hash
                del sympy.Add.is_zero
