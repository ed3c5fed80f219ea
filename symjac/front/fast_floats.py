"""A faster answer to the question sympy asks most while symjac builds.

Every product sympy builds asks whether its numeric coefficient is zero
(``Mul.flatten``: ``coeff.is_zero``). A Float made by arithmetic (the
product of two weights of an MLP) is a new object, and its first assumption
query runs sympy's general fact deduction: about 0.1 ms, 3,856 times in the
second derivatives of an 8 -> 16 -> 8 MLP, a third of that stage. Inside
:func:`fast_float_zero`, ``Float.is_zero`` is answered from the number
itself, as sympy's own ``Float._eval_is_zero`` does (``_mpf_ == fzero``):
the same answer, without the deduction. Used by ``api.py`` around the
symbolic stages of a build; outside, sympy is left as it was.
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


@contextlib.contextmanager
def fast_float_zero():
    """Within the block, ``sympy.Float(...).is_zero`` skips the assumption system."""
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1:
            sympy.Float.is_zero = property(_is_zero)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                del sympy.Float.is_zero  # the inherited assumption property again
