"""Stage 6 — runtime: the callable that users hold.

Takes a loaded module (from ``build.py``) and the derivative's metadata;
the call convention itself (validation, broadcasting, allocation, ``out=``)
lives in ``_calling.py``, shared with standalone generated modules.
"""

from __future__ import annotations

import numpy as np

from . import _calling
from .diff import Derivative
from .render import Source

__all__ = ["Jacobian"]


class Jacobian:
    """A compiled Jacobian: ``jac(*args, out=None)``.

    Attributes: ``sparsity`` (bool array, output shape + input shape; nested in
    tuples like the result), ``source`` (generated text), ``backend``,
    ``argument_names``, ``wrt`` (names of the differentiated arguments).
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
        )
        self.source = source.text
        self.backend = source.backend
        self.content_hash = source.content_hash
        self.argument_names = self.signature.names
        self.wrt = tuple(self.signature.names[j] for j in derivative.wrt)
        self.sparsity = self.signature.nest("jacobian", [block.sparsity for row in derivative.blocks for block in row])
        self.nonzeros = derivative.nonzeros
        self.__name__ = f"jacobian_of_{traced.function_name}"
        self.__doc__ = f"Jacobian of {traced.function_name} with respect to {', '.join(self.wrt)}."

    def __call__(self, *args, out=None):
        return _calling.call(self._kernels["jacobian"], self.signature, "jacobian", args, out)

    def function(self, *args, out=None):
        """The traced function's value, computed by the generated code."""
        return _calling.call(self._kernel("function"), self.signature, "function", args, out)

    def function_and_jacobian(self, *args, out=None):
        """``(value, jacobian)`` in one pass sharing subexpressions."""
        return _calling.call(self._kernel("function_and_jacobian"), self.signature, "function_and_jacobian", args, out)

    def _kernel(self, kind):
        try:
            return self._kernels[kind]
        except KeyError:
            raise AttributeError(f"this Jacobian was built without the {kind!r} kernel") from None

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}={s}" for n, s in zip(self.signature.names, self.signature.shapes))
        return f"<symjac.Jacobian of {self.__name__[12:]}({shapes}) wrt {', '.join(self.wrt)}, {self.backend}, {self.nonzeros} non-zeros>"

    @property
    def dense_sparsity(self) -> np.ndarray:
        """The sparsity of a single-block Jacobian as a bool array (error for tuples)."""
        if not isinstance(self.sparsity, np.ndarray):
            raise TypeError("this Jacobian has several blocks; index .sparsity instead")
        return self.sparsity
