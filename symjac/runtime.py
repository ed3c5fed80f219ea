"""Stage 6 — runtime: the callable that users hold.

Takes a loaded module (from ``build.py``) and the derivative's metadata.
The call convention itself (validation, broadcasting, allocation, ``out=``,
threads) lives in ``_calling.py``, shared with standalone generated modules;
a single point whose arguments are already C-contiguous float64 arrays of
the exact shapes takes the module's compiled fast path (``make_entry``).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from . import _calling
from .diff import Derivative
from .render import Source

__all__ = ["Jacobian"]


class Jacobian:
    """A compiled Jacobian: ``jac(*args, out=None, num_threads=None)``.

    Attributes: ``sparsity`` (read-only bool arrays, output shape + input
    shape, nested like the result), ``source`` (generated text), ``backend``,
    ``argument_names``, ``wrt`` (names of the differentiated arguments),
    ``nonzeros`` (structural non-zeros in all blocks).
    """

    def __init__(self, module, source: Source, derivative: Derivative, wrt_is_tuple: bool) -> None:
        traced = derivative.traced
        self._module = module
        self._kernels = module.KERNELS
        self.signature = _calling.Signature(
            [a.name for a in traced.arguments],
            [a.shape for a in traced.arguments],
            derivative.wrt,
            traced.output_shapes,
            traced.output_is_tuple,
            wrt_is_tuple,
            module.NONZEROS,
            module.PARALLEL_MIN_POINTS,
            module.CALLER_ZEROES,
        )
        nested = traced.output_is_tuple or wrt_is_tuple
        if not nested and "jacobian" in module.POINT_KINDS:
            # Calls go straight to the compiled entry (single-point fast path,
            # else self._general): a per-instance subclass whose __call__ is
            # that entry saves the Python frame of a method on every call.
            entry = module.make_entry("jacobian", self._general)
            self.__class__ = type("Jacobian", (Jacobian,), {"__call__": staticmethod(entry), "__module__": __name__})
        self.source = source.text
        self.backend = source.backend
        self.content_hash = source.content_hash
        self.argument_names = self.signature.names
        self.wrt = tuple(self.signature.names[j] for j in derivative.wrt)
        self.nonzeros = derivative.nonzeros
        self._function_name = traced.function_name
        self.__doc__ = f"Jacobian of {traced.function_name} with respect to {', '.join(self.wrt)}."

    def __call__(self, *args, out=None, num_threads=None):
        return self._general(args, out, num_threads)

    def _general(self, args, out, num_threads):
        return _calling.call(self._kernels["jacobian"], self.signature, "jacobian", args, out, num_threads)

    def values(self, *args, out=None, num_threads=None):
        """Only the structural non-zeros: per block, batch shape + (nnz,), in ``indices()`` order."""
        return _calling.call(self._kernels["jacobian_values"], self.signature, "jacobian_values", args, out, num_threads)

    def sparse(self, *args, format="csr"):
        """The Jacobian at one point as ``scipy.sparse`` arrays (csr, csc or coo).

        Each block is a matrix of (output size) x (argument size); nothing
        dense is allocated. Needs scipy.
        """
        return _calling.sparse_matrices(self.signature, self.values(*args), format)

    def indices(self):
        """(rows, cols) of each block's non-zeros, in ``values()`` order, nested like the result."""
        pairs = [self.signature.sparse_structure(block)[:2] for block in range(len(self.signature.nonzeros))]
        return self.signature.nest("jacobian_values", pairs)

    def sparsity_matrix(self, format="csr"):
        """The structural pattern as scipy sparse arrays of ones, for
        ``solve_ivp(jac_sparsity=...)`` and ``least_squares(jac_sparsity=...)``."""
        ones = [np.ones(len(indices)) for indices in self.signature.nonzeros]
        return _calling.sparse_matrices(self.signature, self.signature.nest("jacobian_values", ones), format)

    @cached_property
    def sparsity(self):
        patterns = _calling.sparsity_patterns(self.signature)
        for pattern in self.signature.flatten("jacobian", patterns):
            pattern.flags.writeable = False
        return patterns

    def function(self, *args, out=None, num_threads=None):
        """The traced function's value, computed by the generated code."""
        return _calling.call(self._kernel("function"), self.signature, "function", args, out, num_threads)

    def function_and_jacobian(self, *args, out=None, num_threads=None):
        """``(value, jacobian)`` in one pass sharing subexpressions."""
        return _calling.call(self._kernel("function_and_jacobian"), self.signature, "function_and_jacobian",
                             args, out, num_threads)

    def _kernel(self, kind):
        try:
            return self._kernels[kind]
        except KeyError:
            raise AttributeError(f"this Jacobian was built without the {kind!r} kernel; "
                                 f"pass kernels=('jacobian', {kind!r}) to symjac.jacobian") from None

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}={s}" for n, s in zip(self.signature.names, self.signature.shapes))
        return (f"<symjac.Jacobian of {self._function_name}({shapes}) wrt {', '.join(self.wrt)}, "
                f"{self.backend}, {self.nonzeros} non-zeros>")
