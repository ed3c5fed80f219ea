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
``Basic``'s own ``_mhash`` slot, which Float leaves unused). Used by
``api.py`` around the symbolic stages of a build; outside, sympy is left as
it was.
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


_float_hash = sympy.Float.__hash__  # sympy's own: hash(float(self)), or Basic's for infinities


def _remembered_hash(self) -> int:
    value = self._mhash
    if value is None:
        value = self._mhash = _float_hash(self)  # a Float never changes: neither does its hash
    return value


@contextlib.contextmanager
def fast_float_zero():
    """Within the block, ``is_zero`` and ``is_extended_negative`` of a sympy Float skip the assumption
    system and its hash is computed once."""
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1:
            sympy.Float.is_zero = property(_is_zero)
            sympy.Float.is_extended_negative = property(_is_extended_negative)
            sympy.Float.__hash__ = _remembered_hash
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                del sympy.Float.is_zero  # the inherited assumption properties again
                del sympy.Float.is_extended_negative
                sympy.Float.__hash__ = _float_hash
