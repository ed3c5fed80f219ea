"""Sympy functions that numpy has but sympy lacks in the form symjac needs.

The tracer (``ops.py``) builds them and the printers (``printing.py``) print
them as the matching C99 / numpy call, so precision is not lost by rewriting
(``np.expm1(x)`` stays ``expm1(x)``, never ``exp(x) - 1``). expm1, log1p,
exp2, log2, log10 and hypot come from ``sympy.codegen.cfunctions``; this
module adds the real cube root.
"""

from __future__ import annotations

import sympy

__all__ = ["cbrt"]


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
