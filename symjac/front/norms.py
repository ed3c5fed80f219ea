"""np.linalg.norm written with numpy calls, so that both tracers run it.

Used as the ``np.linalg.norm`` rule by the scalar tracer (:mod:`symjac.front.ops`)
and by the array tracer (:mod:`symjac.front.array_trace`): each numpy call
below dispatches to the tracer's own rules. Matrix norms built on singular
values (``ord='nuc'``, ``2``, ``-2``) call ``np.linalg.svd``, which only the
array form has (the scalar form says so).

The cases and their formulas are numpy's (``numpy/linalg/_linalg.py``):

    vector   None, 2: sqrt(Σ x²)   1: Σ|x|   inf/-inf: max/min |x|   0: count of x ≠ 0
             any other p: (Σ |x|^p)^(1/p)
    matrix   None, 'fro': sqrt(Σ x²)   'nuc': Σ σ   2/-2: largest/smallest σ
             1/-1: max/min column sum of |x|   inf/-inf: max/min row sum of |x|

Derivatives follow the functions these are written with: ``|x|`` has
derivative ``sign(x)`` (0 at 0), a max or min selects the first extremum,
singular values need distinct singular values (see the array calculus).
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError

__all__ = ["SINGULAR_VALUE_ORDERS", "norm"]

SINGULAR_VALUE_ORDERS = ("nuc", 2, -2)  # matrix norms of the singular values: array form only


def norm(x, ord=None, axis=None, keepdims=False):
    """``np.linalg.norm`` of a traced array (either tracer)."""
    ndim = np.ndim(x)
    if axis is None:
        if ord is None:
            return _keep(np.sqrt(np.sum(np.square(x))), tuple(range(ndim)), keepdims)
        if ndim not in (1, 2):
            raise ShapeError(f"np.linalg.norm(ord={ord!r}) without axis needs a 1-d or 2-d array, got {ndim}-d")
        axis = tuple(range(ndim))
    elif isinstance(axis, (int, np.integer)):
        axis = (axis,)
    axes = tuple(_axis(a, ndim) for a in axis)
    if len(axes) == 1:
        return _vector(x, ord, axes[0], keepdims)
    if len(axes) != 2 or axes[0] == axes[1]:
        raise ShapeError(f"np.linalg.norm: axis must be an int or a pair of distinct axes, got {axis!r}")
    matrices = np.moveaxis(x, axes, (-2, -1))
    return _keep(_matrix(matrices, ord), axes, keepdims)


def _axis(a, ndim):
    if not -ndim <= a < ndim:
        raise ShapeError(f"np.linalg.norm: axis {a} is out of range for an array of {ndim} dimensions")
    return int(a) % ndim


def _keep(result, axes, keepdims):
    return np.expand_dims(result, tuple(sorted(axes))) if keepdims and axes else result


def _vector(x, ord, axis, keepdims):
    if ord is None or ord == 2:
        return np.sqrt(np.sum(np.square(x), axis=axis, keepdims=keepdims))
    if isinstance(ord, str):
        raise ShapeError(f"np.linalg.norm: ord={ord!r} is a matrix norm; the vector norms take numbers")
    if ord == 1:
        return np.sum(np.abs(x), axis=axis, keepdims=keepdims)
    if ord == np.inf:
        return np.max(np.abs(x), axis=axis, keepdims=keepdims)
    if ord == -np.inf:
        return np.min(np.abs(x), axis=axis, keepdims=keepdims)
    if ord == 0:
        return np.sum(np.where(x != 0, 1.0, 0.0), axis=axis, keepdims=keepdims)
    p = float(ord)
    return np.sum(np.abs(x) ** p, axis=axis, keepdims=keepdims) ** (1.0 / p)


def _matrix(a, ord):
    """The norm of the matrices on ``a``'s last two axes."""
    if ord is None or ord in ("fro", "f"):
        return np.sqrt(np.sum(np.square(a), axis=(-2, -1)))
    if ord in SINGULAR_VALUE_ORDERS:
        values = np.linalg.svd(a, compute_uv=False)  # descending
        return np.sum(values, axis=-1) if ord == "nuc" else values[..., 0] if ord == 2 else values[..., -1]
    if ord in (1, -1, np.inf, -np.inf):
        sums = np.sum(np.abs(a), axis=-2 if ord in (1, -1) else -1)
        return np.max(sums, axis=-1) if ord > 0 else np.min(sums, axis=-1)
    raise ShapeError(f"np.linalg.norm: invalid norm order {ord!r} for matrices")
