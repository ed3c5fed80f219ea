"""The tracer's rule tables: how each numpy operation becomes sympy.

``tracer.TracerArray`` forwards numpy's protocol calls here:
:func:`apply_ufunc` for ``__array_ufunc__`` and :func:`apply_function` for
``__array_function__``. Rules work on object ndarrays of sympy expressions
and return them wrapped as TracerArrays. An operation with no rule raises
:class:`~symjac.TracingError` naming it.

Sums and products are built with one ``sympy.Add``/``sympy.Mul`` per entry
(never by repeated ``+``), so reductions and matrix products cost time linear
in their number of terms.
"""

from __future__ import annotations

import math

import numpy as np
import sympy
from sympy.codegen import cfunctions

from .einsum import einsum as _einsum_values, einsum_arguments
from ..errors import ShapeError, TracingError
from .functions import cbrt
from .tracer import RULES, TracerArray, as_values, constant, scalar_array, unsupported, wrap

__all__ = ["apply_function", "apply_ufunc", "FUNCTIONS", "UFUNCS"]


# --------------------------------------------------------------------------
# elementwise rules: ufunc -> function of sympy scalars


def _select(pairs, default):
    """Piecewise with numeric conditions resolved right away."""
    return sympy.Piecewise(*pairs, (default, True))


def _maximum(a, b):
    return _select([(a, sympy.Ge(a, b))], b)


def _minimum(a, b):
    return _select([(a, sympy.Le(a, b))], b)


def _heaviside(x, h0):
    return _select([(sympy.Integer(0), sympy.Lt(x, 0)), (h0, sympy.Eq(x, 0))], sympy.Integer(1))


_DEGREE = constant(math.pi / 180.0)

UFUNCS = {
    np.add: lambda a, b: a + b,
    np.subtract: lambda a, b: a - b,
    np.multiply: lambda a, b: a * b,
    np.true_divide: lambda a, b: a / b,
    np.negative: lambda a: -a,
    np.positive: lambda a: a,
    np.conjugate: lambda a: a,
    np.power: lambda a, b: a**b,
    np.float_power: lambda a, b: a**b,
    np.square: lambda a: a**2,
    np.reciprocal: lambda a: 1 / a,
    np.sqrt: sympy.sqrt,
    np.cbrt: cbrt,
    np.exp: sympy.exp,
    np.exp2: cfunctions.exp2,
    np.expm1: cfunctions.expm1,
    np.log: sympy.log,
    np.log2: cfunctions.log2,
    np.log10: cfunctions.log10,
    np.log1p: cfunctions.log1p,
    np.logaddexp: lambda a, b: sympy.log(sympy.exp(a) + sympy.exp(b)),
    np.sin: sympy.sin,
    np.cos: sympy.cos,
    np.tan: sympy.tan,
    np.arcsin: sympy.asin,
    np.arccos: sympy.acos,
    np.arctan: sympy.atan,
    np.arctan2: sympy.atan2,
    np.hypot: cfunctions.hypot,
    np.sinh: sympy.sinh,
    np.cosh: sympy.cosh,
    np.tanh: sympy.tanh,
    np.arcsinh: sympy.asinh,
    np.arccosh: sympy.acosh,
    np.arctanh: sympy.atanh,
    np.deg2rad: lambda a: a * _DEGREE,
    np.radians: lambda a: a * _DEGREE,
    np.rad2deg: lambda a: a / _DEGREE,
    np.degrees: lambda a: a / _DEGREE,
    np.absolute: sympy.Abs,
    np.fabs: sympy.Abs,
    np.sign: sympy.sign,
    np.heaviside: _heaviside,
    np.maximum: _maximum,
    np.minimum: _minimum,
    np.fmax: _maximum,
    np.fmin: _minimum,
    np.greater: sympy.Gt,
    np.greater_equal: sympy.Ge,
    np.less: sympy.Lt,
    np.less_equal: sympy.Le,
    np.equal: sympy.Eq,
    np.not_equal: sympy.Ne,
    np.logical_and: sympy.And,
    np.logical_or: sympy.Or,
    np.logical_xor: sympy.Xor,
    np.logical_not: sympy.Not,
}


def elementwise(rule, *operands) -> TracerArray:
    """Apply a scalar rule with numpy broadcasting over the operands."""
    values = [as_values(operand) for operand in operands]
    result = np.frompyfunc(rule, len(values), 1)(*values)
    if not isinstance(result, np.ndarray):
        result = scalar_array(result)
    return TracerArray(result)


def apply_ufunc(ufunc, method, inputs, kwargs):
    """``__array_ufunc__``: apply a ufunc (or its reduce) to traced operands."""
    name = f"np.{ufunc.__name__}"
    out = kwargs.pop("out", None)
    kwargs.pop("dtype", None)
    kwargs.pop("casting", None)
    if kwargs:
        unsupported(f"{name} with {', '.join(sorted(kwargs))}=", "Drop those keyword arguments.")
    if method == "reduce" and ufunc in (np.add, np.multiply):
        result = _sum(inputs[0], *inputs[1:]) if ufunc is np.add else _prod(inputs[0], *inputs[1:])
    elif method != "__call__":
        unsupported(f"{name}.{method}", "Only plain ufunc calls (and np.add/np.multiply.reduce) are supported.")
    elif ufunc is np.matmul:
        result = TracerArray(matmul(as_values(inputs[0]), as_values(inputs[1])))
    elif ufunc in UFUNCS:
        result = elementwise(UFUNCS[ufunc], *inputs)
    else:
        unsupported(f"{name}", f"{name} has no derivative rule in symjac; rewrite it with supported numpy functions.")
    if out is None:
        return result
    return _store_into(out, result, name)


def _store_into(out, result, name):
    """Support ``x += ...`` style in-place ufuncs on traced arrays only."""
    target = out[0] if isinstance(out, tuple) else out
    if not isinstance(target, TracerArray):
        unsupported(
            f"{name} writing into a plain numpy array (out= or an in-place operator)",
            "Make the target traced, e.g. out = np.zeros_like(x), or assign a new variable.",
        )
    target._values[...] = result._values
    return target


# --------------------------------------------------------------------------
# products and reductions


def _add_all(terms):
    return sympy.Add(*[term for term in terms if term is not sympy.S.Zero])


def _matmul2d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    rows, inner = a.shape
    cols = b.shape[1]
    result = np.empty((rows, cols), dtype=object)
    for i in range(rows):
        for j in range(cols):
            result[i, j] = _add_all(
                a[i, t] * b[t, j] for t in range(inner) if a[i, t] is not sympy.S.Zero and b[t, j] is not sympy.S.Zero
            )
    return result


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.matmul semantics (1-D promotion, broadcast stacks) on object arrays."""
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError("matmul: operands must not be scalars (use * for scalars)")
    left = a[None, :] if a.ndim == 1 else a
    right = b[:, None] if b.ndim == 1 else b
    if left.shape[-1] != right.shape[-2]:
        raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} are not aligned")
    stack = np.broadcast_shapes(left.shape[:-2], right.shape[:-2])
    left = np.broadcast_to(left, stack + left.shape[-2:])
    right = np.broadcast_to(right, stack + right.shape[-2:])
    result = np.empty(stack + (left.shape[-2], right.shape[-1]), dtype=object)
    for index in np.ndindex(*stack):
        result[index] = _matmul2d(left[index], right[index])
    if a.ndim == 1:
        result = result[..., 0, :]
    if b.ndim == 1:
        result = result[..., 0]
    return result


def _contract(a: np.ndarray, b: np.ndarray, axes_a, axes_b) -> np.ndarray:
    """tensordot: sum over axes_a of a paired with axes_b of b."""
    free_a = [d for d in range(a.ndim) if d not in axes_a]
    free_b = [d for d in range(b.ndim) if d not in axes_b]
    if [a.shape[d] for d in axes_a] != [b.shape[d] for d in axes_b]:
        raise ShapeError(f"shapes {a.shape} and {b.shape} are not aligned for this product")
    inner = int(np.prod([a.shape[d] for d in axes_a], dtype=np.int64))
    left = np.transpose(a, free_a + list(axes_a)).reshape(-1, inner)
    right = np.transpose(b, list(axes_b) + free_b).reshape(inner, -1)
    shape = tuple(a.shape[d] for d in free_a) + tuple(b.shape[d] for d in free_b)
    return _matmul2d(left, right).reshape(shape)


def _dot(a, b, out=None):
    a, b = as_values(a), as_values(b)
    if a.ndim == 0 or b.ndim == 0:
        return elementwise(UFUNCS[np.multiply], a, b)
    return TracerArray(_contract(a, b, [a.ndim - 1], [0 if b.ndim == 1 else b.ndim - 2]))


def _inner(a, b):
    a, b = as_values(a), as_values(b)
    if a.ndim == 0 or b.ndim == 0:
        return elementwise(UFUNCS[np.multiply], a, b)
    return TracerArray(_contract(a, b, [a.ndim - 1], [b.ndim - 1]))


def _vdot(a, b):
    return _inner(as_values(a).ravel(), as_values(b).ravel())


def _outer(a, b, out=None):
    return elementwise(UFUNCS[np.multiply], as_values(a).ravel()[:, None], as_values(b).ravel()[None, :])


def _tensordot(a, b, axes=2):
    a, b = as_values(a), as_values(b)
    if isinstance(axes, (int, np.integer)):
        axes_a, axes_b = list(range(a.ndim - axes, a.ndim)), list(range(axes))
    else:
        axes_a, axes_b = ([axes[0]] if np.ndim(axes[0]) == 0 else list(axes[0])), (
            [axes[1]] if np.ndim(axes[1]) == 0 else list(axes[1])
        )
        axes_a = [d % a.ndim for d in axes_a]
        axes_b = [d % b.ndim for d in axes_b]
    return TracerArray(_contract(a, b, axes_a, axes_b))


def _einsum(*args, out=None, dtype=None, order="K", casting="safe", optimize=False):
    """np.einsum in either calling form; ``optimize``, ``order``, ``casting`` change nothing here."""
    _no_extras("einsum", out=out)
    if dtype is not None and np.dtype(dtype) != np.float64:
        unsupported(f"np.einsum with dtype={dtype!r}", "Traced values are float64: drop dtype= or pass float.")
    subscripts, operands = einsum_arguments(args)
    return TracerArray(_einsum_values(subscripts, *[as_values(operand) for operand in operands]))


def _axes(axis, ndim: int) -> list[int]:
    if axis is None:
        return list(range(ndim))
    axes = [axis] if isinstance(axis, (int, np.integer)) else list(axis)
    normalized = []
    for d in axes:
        if not -ndim <= d < ndim:
            raise ShapeError(f"axis {d} is out of bounds for an array of dimension {ndim}")
        normalized.append(int(d) % ndim)
    return normalized


def _reduce(a, axis, keepdims, combine) -> TracerArray:
    values = as_values(a)
    axes = _axes(axis, values.ndim)
    kept = [d for d in range(values.ndim) if d not in axes]
    kept_shape = tuple(values.shape[d] for d in kept)
    moved = np.transpose(values, kept + axes).reshape(kept_shape + (-1,))
    result = np.empty(kept_shape, dtype=object)
    for index in np.ndindex(*kept_shape):
        result[index] = combine(list(moved[index]))
    if keepdims:
        result = result.reshape(tuple(1 if d in axes else values.shape[d] for d in range(values.ndim)))
    return TracerArray(result)


def _no_extras(name, **extras):
    given = [key for key, value in extras.items() if value is not None]
    if given:
        unsupported(f"np.{name} with {', '.join(given)}=", "Drop those keyword arguments.")


def _sum(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
    _no_extras("sum", out=out, initial=initial, where=where)
    return _reduce(a, axis, keepdims, _add_all)


def _prod(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
    _no_extras("prod", out=out, initial=initial, where=where)
    return _reduce(a, axis, keepdims, lambda terms: sympy.Mul(*terms))


def _mean(a, axis=None, dtype=None, out=None, keepdims=False, where=None):
    _no_extras("mean", out=out, where=where)
    values = as_values(a)
    count = int(np.prod([values.shape[d] for d in _axes(axis, values.ndim)], dtype=np.int64))
    return _reduce(values, axis, keepdims, lambda terms: sympy.Rational(1, count) * _add_all(terms))


def _extreme(name, pick):
    def reduce(a, axis=None, out=None, keepdims=False, initial=None, where=None):
        _no_extras(name, out=out, initial=initial, where=where)

        def combine(terms):
            best = terms[0]
            for term in terms[1:]:
                best = pick(best, term)
            return best

        return _reduce(a, axis, keepdims, combine)

    return reduce


def _norm(x, ord=None, axis=None, keepdims=False):
    values = as_values(x)
    if ord in (None, 2, "fro") and (ord != 2 or values.ndim == 1 or axis is not None):
        squares = elementwise(UFUNCS[np.square], values)
        return elementwise(sympy.sqrt, _reduce(squares, axis, keepdims, _add_all))
    if ord == 1 and (values.ndim == 1 or isinstance(axis, (int, np.integer))):
        return _reduce(elementwise(sympy.Abs, values), axis, keepdims, _add_all)
    unsupported(f"np.linalg.norm(ord={ord!r})", "Vector 2-norm, 1-norm and the Frobenius norm are supported.")


# --------------------------------------------------------------------------
# selection and array creation


def _where(condition, x=None, y=None):
    if x is None or y is None:
        unsupported("np.where(condition) with one argument", "Give both branches: np.where(condition, a, b).")
    return elementwise(lambda c, a, b: _select([(a, c)], b), condition, x, y)


def _clip(a, a_min=None, a_max=None, out=None, **kwargs):
    _no_extras("clip", out=out)
    a_min = kwargs.pop("min", a_min)
    a_max = kwargs.pop("max", a_max)
    result = a
    if a_min is not None:
        result = elementwise(lambda v, low: _select([(low, sympy.Lt(v, low))], v), result, a_min)
    if a_max is not None:
        result = elementwise(lambda v, high: _select([(high, sympy.Gt(v, high))], v), result, a_max)
    return result if isinstance(result, TracerArray) else TracerArray(as_values(result))


def _filled_like(fill):
    def like(a, dtype=None, order="K", subok=True, shape=None, **kwargs):
        target_shape = np.shape(a) if shape is None else shape
        if isinstance(a, TracerArray) and shape is None:
            target_shape = a.shape
        result = np.empty(target_shape, dtype=object)
        result[...] = fill
        return TracerArray(result)

    return like


def _full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None):
    return TracerArray(np.broadcast_to(as_values(fill_value), np.shape(a) if shape is None else shape).copy())


def _passthrough(func):
    """Structural numpy functions: run numpy itself on the object arrays.

    They only move, copy or add elements, which works for sympy objects;
    constants that numpy inserts (padding zeros, say) become sympy numbers.
    """

    def apply(*args, **kwargs):
        plain = [_unwrap(arg) for arg in args]
        result = func(*plain, **{key: _unwrap(value) for key, value in kwargs.items()})
        return wrap(_to_sympy(result))

    return apply


def _unwrap(value):
    if isinstance(value, TracerArray):
        return value._values
    if isinstance(value, (list, tuple)) and any(isinstance(item, TracerArray) for item in value):
        return type(value)(_unwrap(item) for item in value)
    return value


def _to_sympy(result):
    if isinstance(result, (list, tuple)):
        return type(result)(_to_sympy(item) for item in result)
    if isinstance(result, np.ndarray):
        return as_values(result)
    if isinstance(result, (sympy.Basic, int, float, np.number)):
        return scalar_array(constant(result))
    return result


_PASSTHROUGH = [
    np.reshape, np.transpose, np.moveaxis, np.swapaxes, np.squeeze, np.expand_dims, np.ravel,
    np.concatenate, np.stack, np.hstack, np.vstack, np.dstack, np.column_stack, np.block,
    np.atleast_1d, np.atleast_2d, np.atleast_3d, np.broadcast_to, np.broadcast_arrays,
    np.flip, np.fliplr, np.flipud, np.roll, np.rot90, np.repeat, np.tile, np.take,
    np.diag, np.diagonal, np.diagflat, np.tril, np.triu, np.copy, np.append, np.insert, np.delete,
    np.split, np.array_split, np.hsplit, np.vsplit, np.pad,
    np.cross, np.diff, np.cumsum, np.cumprod, np.trace, np.kron,
]

FUNCTIONS = {func: _passthrough(func) for func in _PASSTHROUGH}
FUNCTIONS.update({
    np.sum: _sum,
    np.prod: _prod,
    np.mean: _mean,
    np.max: _extreme("max", UFUNCS[np.maximum]),
    np.min: _extreme("min", UFUNCS[np.minimum]),
    np.amax: _extreme("amax", UFUNCS[np.maximum]),
    np.amin: _extreme("amin", UFUNCS[np.minimum]),
    np.dot: _dot,
    np.inner: _inner,
    np.vdot: _vdot,
    np.outer: _outer,
    np.tensordot: _tensordot,
    np.einsum: _einsum,
    np.linalg.norm: _norm,
    np.where: _where,
    np.clip: _clip,
    np.zeros_like: _filled_like(sympy.S.Zero),
    np.empty_like: _filled_like(sympy.S.Zero),
    np.ones_like: _filled_like(sympy.S.One),
    np.full_like: _full_like,
    np.shape: lambda a: a.shape,
    np.ndim: lambda a: a.ndim,
    np.size: lambda a, axis=None: a.size if axis is None else a.shape[axis],
})


def apply_function(func, args, kwargs):
    """``__array_function__``: run the rule for a numpy function."""
    rule = FUNCTIONS.get(func)
    if rule is None:
        module = getattr(func, "__module__", "numpy") or "numpy"
        module = "np" if module in ("numpy", "numpy.core.fromnumeric") or module.startswith("numpy._core") else module
        unsupported(
            f"{module}.{func.__name__}",
            f"{module}.{func.__name__} is not supported by symjac's tracer; rewrite it with supported numpy operations.",
        )
    return rule(*args, **kwargs)


RULES.register(apply_ufunc, apply_function)
