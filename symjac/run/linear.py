"""Matrix-free Jacobians: ``Jacobian.linear_operator`` as a scipy LinearOperator.

It builds the J v and uᵀJ kernels of the same function once per Jacobian
(``Compiled.derive``: with the Jacobian's options), then wraps them for one
point. J is never
formed: ``matvec`` and ``rmatvec`` are one kernel call each. scipy is
imported here only.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError

__all__ = ["linear_operator"]


def _products(jacobian):
    """(jvp, vjp) of the function behind ``jacobian``, built on first use."""
    products = jacobian.__dict__.get("_products")
    if products is None:
        wrt = jacobian.wrt[0]
        products = (jacobian.derive("jvp", wrt), jacobian.derive("vjp", wrt))
        jacobian.__dict__["_products"] = products
    return products


def linear_operator(jacobian, args):
    """The Jacobian at the point ``args`` as a LinearOperator (m x n)."""
    from scipy.sparse.linalg import LinearOperator

    signature = jacobian.signature
    if len(jacobian.wrt) != 1 or isinstance(signature.layouts["jacobian"][1], tuple):
        raise ValueError("linear_operator needs one output and one wrt argument")
    if len(args) != len(signature.names):
        raise TypeError(f"expected {len(signature.names)} arguments ({', '.join(signature.names)}), got {len(args)}")
    for value, name, shape in zip(args, signature.names, signature.shapes):
        if np.shape(value) != shape:
            raise ShapeError(f"linear_operator takes one point: argument {name!r} must have shape {shape}, "
                             f"got {np.shape(value)}")
    jvp, vjp = _products(jacobian)
    args = tuple(np.ascontiguousarray(value, dtype=np.float64) for value in args)
    block_shape = signature.buffer_shapes("jacobian")[0]
    in_shape = signature.shapes[signature.names.index(jacobian.wrt[0])]
    out_shape = block_shape[:len(block_shape) - len(in_shape)]
    m, n = int(np.prod(out_shape, dtype=np.int64)), int(np.prod(in_shape, dtype=np.int64))

    def matvec(v):
        return jvp(*args, np.reshape(v, in_shape)).reshape(-1)

    def rmatvec(u):
        return vjp(*args, np.reshape(u, out_shape)).reshape(-1)

    return LinearOperator((m, n), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)
