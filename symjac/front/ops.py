"""The tracer's rule tables: how each numpy operation becomes sympy.

``tracer.TracerArray`` forwards numpy's protocol calls here:
:func:`apply_ufunc` for ``__array_ufunc__`` and :func:`apply_function` for
``__array_function__``. Rules work on object ndarrays of sympy expressions
and return them wrapped as TracerArrays. An operation with no rule raises
:class:`~symjac.TracingError` naming it.

Sums and products are built with one ``sympy.Add``/``sympy.Mul`` per entry
(never by repeated ``+``), so reductions and matrix products cost time linear
in their number of terms. Max/min reductions are balanced trees of binary
selection nodes (``functions.maximum``: linear, first maximum at ties);
sorting selects by stable ranks (:func:`_sorted`: O(n²), ties as a stable
sort). Conventions where a derivative is undefined on a set of measure zero
are listed in ``_CONVENTIONS`` (printed in the README).

What numpy's protocols cannot see (``np.r_[...]``, Python lists of traced
values handed to numpy functions, ``np.mean([a, b])``) is handled by
replacements installed while tracing (``tracer.patch_while_tracing``).
:func:`supported_operations` lists the rule tables; the README's list is
generated from it.
"""

from __future__ import annotations

import math

import numpy as np
import sympy
from sympy.codegen import cfunctions

from .einsum import einsum as _einsum_values, einsum_arguments
from ..errors import ShapeError, TracingError
from .functions import cbrt, fmod, maximum, minimum, nan_to_num, pick, rint, stable_rank, trunc
from .norms import SINGULAR_VALUE_ORDERS, norm
from .tracer import RULES, TracerArray, as_values, constant, holds_tracer, patch_while_tracing, scalar_array, unsupported, wrap

__all__ = ["apply_function", "apply_ufunc", "FUNCTIONS", "UFUNCS", "supported_operations"]


# --------------------------------------------------------------------------
# elementwise rules: ufunc -> function of sympy scalars


def _select(pairs, default):
    """Piecewise with numeric conditions resolved right away."""
    return sympy.Piecewise(*pairs, (default, True))


# np.maximum/np.minimum: one node each, not a Piecewise: a Piecewise inside a
# later comparison (max of a max) makes sympy rewrite that condition into
# all combinations of the inner conditions, exponential along a chain.
_maximum = maximum.new


def _shifted_log_sum(a, b, exp, log):
    """``log(exp(a) + exp(b))`` as numpy computes it, shifted by ``m = max(a, b)``
    so that nothing overflows: ``m + log(exp(a - m) + exp(b - m))``. The
    derivative of ``m`` cancels (exactly, also at a tie), leaving the
    softmax weights ``exp(a - m) / (exp(a - m) + exp(b - m))``."""
    m = _maximum(a, b)
    return m + log(exp(a - m) + exp(b - m))
_minimum = minimum.new


def _remainder(a, b):
    """numpy's remainder (sign of the divisor) from C's fmod, as numpy computes
    it: fmod, plus b where fmod is non-zero and its sign differs from b's.
    Derivatives: 1 for a, -floor(a/b) for b (fmod's -trunc(a/b), plus 1 in
    the adjusted branch), also at the jumps, as JAX's ``jnp.remainder``."""
    rest = fmod(a, b)
    return _select([(rest + b, sympy.And(sympy.Ne(rest, 0), sympy.Xor(sympy.Lt(b, 0), sympy.Lt(rest, 0))))], rest)


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
    np.logaddexp: lambda a, b: _shifted_log_sum(a, b, sympy.exp, sympy.log),
    np.logaddexp2: lambda a, b: _shifted_log_sum(a, b, cfunctions.exp2, cfunctions.log2),
    np.remainder: _remainder,
    np.fmod: fmod,
    np.floor_divide: lambda a, b: sympy.floor(a / b),
    np.floor: sympy.floor,
    np.ceil: sympy.ceiling,
    np.trunc: trunc,
    np.rint: rint,
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
    reduce_options = {}
    if method == "reduce":  # numpy passes everything but the array as keywords
        reduce_options = {"axis": kwargs.pop("axis", 0), "keepdims": kwargs.pop("keepdims", False)}
    if kwargs:
        unsupported(f"{name} with {', '.join(sorted(kwargs))}=", "Drop those keyword arguments.")
    if method == "reduce" and ufunc in (np.add, np.multiply, np.maximum, np.minimum, np.fmax, np.fmin):
        result = _REDUCERS[ufunc](inputs[0], **reduce_options)
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


def _tree(terms, pick):
    """``pick`` over ``terms`` as a balanced binary tree, earlier terms on the
    left: n - 1 nodes, depth log2(n) (see ``functions._Selection``)."""
    while len(terms) > 1:
        paired = [pick(terms[i], terms[i + 1]) for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            paired.append(terms[-1])
        terms = paired
    return terms[0]


def _extreme(name, pick):
    def reduce(a, axis=None, out=None, keepdims=False, initial=None, where=None):
        _no_extras(name, out=out, where=where)
        values = as_values(a)
        if values.size == 0 and initial is None:
            raise ShapeError(f"np.{name} of an empty array needs initial=")

        def combine(terms):
            best = _tree(terms, pick) if terms else constant(initial)
            return best if initial is None or not terms else pick(best, constant(initial))

        return _reduce(values, axis, keepdims, combine)

    return reduce


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


_REDUCERS = {
    np.add: lambda a, axis=0, keepdims=False: _sum(a, axis, keepdims=keepdims),
    np.multiply: lambda a, axis=0, keepdims=False: _prod(a, axis, keepdims=keepdims),
    np.maximum: lambda a, axis=0, keepdims=False: _extreme("maximum.reduce", maximum.new)(a, axis, keepdims=keepdims),
    np.minimum: lambda a, axis=0, keepdims=False: _extreme("minimum.reduce", minimum.new)(a, axis, keepdims=keepdims),
    np.fmax: lambda a, axis=0, keepdims=False: _extreme("fmax.reduce", maximum.new)(a, axis, keepdims=keepdims),
    np.fmin: lambda a, axis=0, keepdims=False: _extreme("fmin.reduce", minimum.new)(a, axis, keepdims=keepdims),
}


# --------------------------------------------------------------------------
# statistics and sorting


def _var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=None, mean=None, correction=None):
    """np.var: the mean of squared deviations, divided by n - ddof instead of n."""
    _no_extras("var", out=out, where=where, mean=mean)
    if correction is not None:
        ddof = correction
    values = as_values(a)
    axes = _axes(axis, values.ndim)
    count = int(np.prod([values.shape[d] for d in axes], dtype=np.int64))
    if count - ddof <= 0:
        raise ShapeError(f"np.var/np.std over {count} elements with ddof={ddof}: n - ddof must be positive")
    centre = _mean(values, axis=tuple(axes), keepdims=True)
    squares = elementwise(lambda v, m: (v - m) ** 2, values, centre)
    scale = sympy.Rational(1, count - int(ddof)) if float(ddof).is_integer() else 1 / constant(count - ddof)
    return _reduce(squares, tuple(axes), keepdims, lambda terms: scale * _add_all(terms))


def _std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=None, mean=None, correction=None):
    return elementwise(sympy.sqrt, _var(a, axis, dtype, out, ddof, keepdims, where=where, mean=mean,
                                        correction=correction))


def _sorted(terms):
    """The values of ``terms`` in increasing order, as a stable sort orders them.

    Values are symbols, so the order is written with comparisons. Output k is
    ``sum_j pick(rank_j, k, x_j)`` (x_j where rank_j == k), rank_j the stable rank of x_j (a
    :class:`~symjac.front.functions.stable_rank` node): n ranks of n
    comparisons and n outputs of n selections, O(n²) nodes, never
    exponential. A sorting network (n log² n min/max nodes) would be smaller
    but is not stable: at a tie it can hand a later element to an earlier
    position, and the derivative would follow the permutation it made. With
    ranks, the element selected at each position is exactly the one numpy's
    stable sort (and JAX's sort) puts there, ties in original order: the
    Jacobian is that permutation, also at ties; the ranks themselves are flat.
    """
    n = len(terms)
    if n == 1:
        return list(terms)
    if all(term.is_Number for term in terms):
        return sorted(terms, key=float)
    ranks = [stable_rank.new(sympy.Integer(j), *terms) for j in range(n)]
    return [sympy.Add(*[pick.new(ranks[j], sympy.Integer(k), terms[j]) for j in range(n)]) for k in range(n)]


def _along(values: np.ndarray, axis, rows) -> np.ndarray:
    """Apply ``rows`` (list of exprs -> list of exprs, same length) along ``axis``."""
    if axis is None:
        values, axis = values.ravel(), 0
    if values.ndim == 0:
        raise ShapeError("cannot sort a 0-d array")
    moved = np.moveaxis(values, axis, -1)
    result = np.empty(moved.shape, dtype=object)
    for index in np.ndindex(*moved.shape[:-1]):
        result[index] = np.array(rows(list(moved[index])) + [None], dtype=object)[:-1]
    return np.moveaxis(result, -1, axis)


def _sort(a, axis=-1, kind=None, order=None, *, stable=None):
    _no_extras("sort", order=order)
    return TracerArray(_along(as_values(a), axis, _sorted))


def _partition(a, kth, axis=-1, kind="introselect", order=None):
    """np.partition: the whole array sorted, which is one valid partition
    (numpy leaves the order inside each part unspecified)."""
    _no_extras("partition", order=order)
    values = as_values(a)
    length = values.size if axis is None else values.shape[axis]
    for k in np.atleast_1d(kth):
        if not -length <= int(k) < length:
            raise ShapeError(f"kth {int(k)} out of bounds for an axis of length {length}")
    return TracerArray(_along(values, axis, _sorted))


def _median(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    _no_extras("median", out=out)
    values = as_values(a)

    def middle(terms):
        ordered = _sorted(terms)
        n = len(ordered)
        return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2

    return _reduce(values, axis, keepdims, middle)


def _value_dependent(name):
    def refuse(*args, **kwargs):
        unsupported(f"np.{name} of traced values",
                    "Its result is an index that depends on the values. Use np.sort / np.max / np.min for "
                    "the values themselves, or np.where to select.")
    return refuse


# --------------------------------------------------------------------------
# real-valued views of complex functions, rounding, clean-up


def _real(a):
    return TracerArray(as_values(a).copy())


def _imag(a):
    return _filled_like(sympy.S.Zero)(a)


def _angle(z, deg=False):
    """The phase of a real number: pi for negatives, 0 otherwise (derivative 0)."""
    half_turn = sympy.Integer(180) if deg else sympy.pi
    return elementwise(lambda v: _select([(half_turn, sympy.Lt(v, 0))], sympy.S.Zero), z)


def _real_if_close(a, tol=100):
    return _real(a)


_LARGEST = constant(np.finfo(np.float64).max)


def _nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    high = _LARGEST if posinf is None else constant(posinf)
    low = -_LARGEST if neginf is None else constant(neginf)
    return elementwise(lambda v: nan_to_num(v, constant(nan), high, low), x)


def _round(a, decimals=0, out=None):
    """np.round: rint(a * 10**d) / 10**d as numpy computes it; derivative 0."""
    _no_extras("round", out=out)
    if decimals == 0:
        return elementwise(rint, a)
    scale = constant(10.0 ** abs(decimals))
    if decimals > 0:
        return elementwise(lambda v: rint(v * scale) / scale, a)
    return elementwise(lambda v: rint(v / scale) * scale, a)


# --------------------------------------------------------------------------
# array construction and finite differences


def _linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0, *, device=None):
    """np.linspace with traced end points: start + i * (stop - start) / div, the last one stop."""
    if num < 0:
        raise ShapeError(f"np.linspace: num must be non-negative, got {num}")
    start, stop = as_values(start), as_values(stop)
    shape = np.broadcast_shapes(start.shape, stop.shape)
    start, stop = np.broadcast_to(start, shape), np.broadcast_to(stop, shape)
    div = (num - 1) if endpoint else num
    result = np.empty((num,) + shape, dtype=object)
    step = np.empty(shape, dtype=object)
    for index in np.ndindex(*shape):
        delta = stop[index] - start[index]
        step[index] = delta / div if div > 0 else sympy.nan
        for i in range(num):
            result[(i,) + index] = start[index] + (delta * sympy.Rational(i, div) if div > 0 else 0)
        if endpoint and num > 1:
            result[(num - 1,) + index] = stop[index]
    result = np.moveaxis(result, 0, axis)
    return (TracerArray(result), TracerArray(step)) if retstep else TracerArray(result)


def _gradient(f, *varargs, axis=None, edge_order=1):
    """np.gradient with uniform spacings (a scalar per axis, constant or traced):
    second-order central differences inside, one-sided ones of order
    ``edge_order`` at the edges, as numpy computes them."""
    values = as_values(f)
    axes = _axes(axis, values.ndim)
    if len(varargs) == 0:
        spacings = [sympy.S.One] * len(axes)
    elif len(varargs) == 1:
        spacings = [varargs[0]] * len(axes)
    elif len(varargs) == len(axes):
        spacings = list(varargs)
    else:
        raise ShapeError(f"np.gradient: {len(varargs)} spacings for {len(axes)} axes")
    steps = []
    for spacing in spacings:
        step = as_values(spacing)
        if step.ndim:
            unsupported("np.gradient with coordinate arrays", "Give one uniform spacing per axis.")
        steps.append(step[()])
    if edge_order not in (1, 2):
        raise ShapeError("np.gradient: edge_order must be 1 or 2")
    results = []
    for d, h in zip(axes, steps):
        n = values.shape[d]
        if n < edge_order + 1:
            raise ShapeError(f"np.gradient needs at least {edge_order + 1} points along axis {d}, got {n}")
        moved = np.moveaxis(values, d, 0)
        out = np.empty(moved.shape, dtype=object)
        for i in range(1, n - 1):
            out[i] = (moved[i + 1] - moved[i - 1]) / (2 * h)
        if edge_order == 1:
            out[0] = (moved[1] - moved[0]) / h
            out[-1] = (moved[-1] - moved[-2]) / h
        else:
            out[0] = (-3 * moved[0] + 4 * moved[1] - moved[2]) / (2 * h)
            out[-1] = (3 * moved[-1] - 4 * moved[-2] + moved[-3]) / (2 * h)
        results.append(TracerArray(np.moveaxis(out, 0, d)))
    return results[0] if len(results) == 1 else tuple(results)


def _select_arrays(condlist, choicelist, default=0):
    """np.select: the first choice whose condition holds, else default."""
    if len(condlist) != len(choicelist):
        raise ShapeError("np.select: condlist and choicelist must be of the same length")
    if not condlist:
        raise ShapeError("np.select: select with an empty condition list is not possible")
    count = len(condlist)

    def pick(*items):
        conditions, choices, fallback = items[:count], items[count:2 * count], items[-1]
        return _select(list(zip(choices, conditions)), fallback)

    return elementwise(pick, *condlist, *choicelist, default)


# --------------------------------------------------------------------------
# np.linalg for small fixed sizes: exact symbolic expansion


_SMALL_LINALG = 3


def _square_stack(a, name):
    values = as_values(a)
    if values.ndim < 2 or values.shape[-1] != values.shape[-2]:
        raise ShapeError(f"np.linalg.{name}: the last two dimensions must be square, got shape {values.shape}")
    if values.shape[-1] > _SMALL_LINALG:
        unsupported(f"np.linalg.{name} of a {values.shape[-1]}x{values.shape[-1]} matrix in the scalar form",
                    f"The scalar form expands np.linalg.{name} symbolically up to 3x3; "
                    "use form=\"array\" for larger matrices.")
    return values


def _det2(m) -> sympy.Expr:
    n = m.shape[0]
    if n == 1:
        return m[0, 0]
    if n == 2:
        return m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    return (m[0, 0] * (m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1])
            - m[0, 1] * (m[1, 0] * m[2, 2] - m[1, 2] * m[2, 0])
            + m[0, 2] * (m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0]))


def _det(a):
    """np.linalg.det up to 3x3: the Leibniz expansion (exact, smooth); larger
    matrices need the array form (form="array")."""
    values = _square_stack(a, "det")
    result = np.empty(values.shape[:-2], dtype=object)
    for index in np.ndindex(*values.shape[:-2]):
        result[index] = _det2(values[index])
    return TracerArray(result)


def _inv2(m) -> np.ndarray:
    n = m.shape[0]
    det = _det2(m)
    adjugate = np.empty((n, n), dtype=object)
    for i in range(n):
        for j in range(n):
            minor = np.delete(np.delete(m, j, axis=0), i, axis=1)
            adjugate[i, j] = (-1) ** (i + j) * (_det2(minor) if n > 1 else sympy.S.One)
    inverse = 1 / det
    return np.frompyfunc(lambda entry: entry * inverse, 1, 1)(adjugate)


def _inv(a):
    """np.linalg.inv up to 3x3: adjugate over determinant; larger matrices need
    the array form (form="array")."""
    values = _square_stack(a, "inv")
    result = np.empty(values.shape, dtype=object)
    for index in np.ndindex(*values.shape[:-2]):
        result[index] = _inv2(values[index])
    return TracerArray(result)


def _solve(a, b):
    """np.linalg.solve up to 3x3: inv(a) @ b (b a vector or a stack of columns, numpy's rules);
    larger matrices need the array form (form="array")."""
    inverse = as_values(_inv(a))
    return TracerArray(matmul(inverse, as_values(b)))  # numpy 2: a 1-d b is a vector, else columns


# --------------------------------------------------------------------------
# np.r_ / np.c_ and Python lists of traced values


def _concatenator_items(key):
    items = key if isinstance(key, tuple) else (key,)
    parts = []
    for item in items:
        if isinstance(item, str):
            unsupported("np.r_/np.c_ with a string directive", "Use np.concatenate / np.stack with axis=.")
        if isinstance(item, slice):
            item = _ORIGINAL_R[item]
        parts.append(as_values(item))
    return parts


class _Concatenator:
    """np.r_ / np.c_ while tracing: numpy's own unless a traced value is inside."""

    def __init__(self, original, columns: bool):
        self._original = original
        self._columns = columns

    def __getitem__(self, key):
        from .tracer import tracing

        if not (tracing() and holds_tracer(key if isinstance(key, tuple) else (key,))):
            return self._original[key]
        parts = _concatenator_items(key)
        if self._columns:  # np.c_: 1-d parts become columns, concatenated along the last axis
            parts = [part.reshape(1, 1) if part.ndim == 0 else part[:, None] if part.ndim == 1 else part
                     for part in parts]
            return TracerArray(np.concatenate(parts, axis=-1))
        parts = [part.reshape(1) if part.ndim == 0 else part for part in parts]
        return TracerArray(np.concatenate(parts, axis=0))

    def __len__(self):
        return 0


_ORIGINAL_R = np.r_


def _lists_as_arrays(original):
    """A numpy function that turns lists holding traced values into traced
    arrays before numpy sees them (numpy would convert them itself, without
    dispatching to the tracer); numpy's own function otherwise."""
    from .tracer import tracing

    def convert(value):
        if isinstance(value, (list, tuple)) and holds_tracer(value):
            return TracerArray(as_values(value))
        return value

    def call(*args, **kwargs):
        if tracing():
            args = [convert(arg) for arg in args]
            kwargs = {key: convert(value) for key, value in kwargs.items()}
        return original(*args, **kwargs)

    call.__name__ = getattr(original, "__name__", "function")
    call.__doc__ = getattr(original, "__doc__", None)
    call.__wrapped__ = original
    return call


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
    np.split, np.array_split, np.hsplit, np.vsplit, np.dsplit, np.pad, np.rollaxis, np.take_along_axis,
    np.cross, np.diff, np.cumsum, np.cumprod, np.trace, np.kron,
]

FUNCTIONS = {func: _passthrough(func) for func in _PASSTHROUGH}
FUNCTIONS.update({
    np.sum: _sum,
    np.prod: _prod,
    np.mean: _mean,
    np.max: _extreme("max", maximum.new),
    np.min: _extreme("min", minimum.new),
    np.amax: _extreme("amax", maximum.new),
    np.amin: _extreme("amin", minimum.new),
    np.dot: _dot,
    np.inner: _inner,
    np.vdot: _vdot,
    np.outer: _outer,
    np.tensordot: _tensordot,
    np.einsum: _einsum,
    np.linalg.norm: norm,
    np.where: _where,
    np.clip: _clip,
    np.zeros_like: _filled_like(sympy.S.Zero),
    np.empty_like: _filled_like(sympy.S.Zero),
    np.ones_like: _filled_like(sympy.S.One),
    np.full_like: _full_like,
    np.shape: lambda a: a.shape,
    np.ndim: lambda a: a.ndim,
    np.size: lambda a, axis=None: a.size if axis is None else a.shape[axis],
    np.var: _var,
    np.std: _std,
    np.median: _median,
    np.sort: _sort,
    np.partition: _partition,
    np.argsort: _value_dependent("argsort"),
    np.argmax: _value_dependent("argmax"),
    np.argmin: _value_dependent("argmin"),
    np.argpartition: _value_dependent("argpartition"),
    np.real: _real,
    np.imag: _imag,
    np.angle: _angle,
    np.real_if_close: _real_if_close,
    np.nan_to_num: _nan_to_num,
    np.round: _round,
    np.around: _round,
    np.fix: lambda x, out=None: (_no_extras("fix", out=out), elementwise(trunc, x))[1],
    np.linspace: _linspace,
    np.gradient: _gradient,
    np.select: _select_arrays,
    np.linalg.det: _det,
    np.linalg.inv: _inv,
    np.linalg.solve: _solve,
})

# Functions that take one array: a Python list holding traced values is that
# array (np.mean([a, b])). Not those taking sequences of arrays
# (np.concatenate, np.block, ...): numpy dispatches on their items already.
_LIST_ARGUMENTS = [
    np.sum, np.prod, np.mean, np.max, np.min, np.amax, np.amin, np.var, np.std, np.median, np.sort,
    np.partition, np.append, np.insert, np.cumsum, np.cumprod, np.diff, np.dot, np.inner, np.outer, np.vdot,
    np.where, np.clip, np.reshape, np.ravel, np.transpose, np.flip, np.roll, np.repeat, np.tile, np.diag,
    np.trace, np.cross, np.kron, np.real, np.imag, np.angle, np.nan_to_num, np.round, np.around, np.gradient,
    np.linalg.norm, np.linalg.det, np.linalg.inv, np.linalg.solve, np.tensordot, np.pad, np.squeeze,
    np.expand_dims, np.atleast_1d, np.atleast_2d, np.atleast_3d, np.broadcast_to,
]
for _function in _LIST_ARGUMENTS:
    _module = np.linalg if _function.__module__.startswith("numpy.linalg") else np
    patch_while_tracing(_module, _function.__name__, _lists_as_arrays(_function))
for _name, _columns in (("r_", False), ("c_", True)):
    patch_while_tracing(np, _name, _Concatenator(getattr(np, _name), _columns))


# --------------------------------------------------------------------------
# what the tracer supports (README's list is generated from this)

_OPERATORS = ["+", "-", "*", "/", "//", "%", "**", "@", "unary -", "abs()", "<", "<=", ">", ">=", "==", "!=",
              "&", "|", "~", "+=", "-=", "*=", "/=", "**=", "@=", "indexing and slicing with constant indices",
              "index assignment"]
_METHODS = sorted(name for name in dir(TracerArray)
                  if not name.startswith("_") and name not in ("item", "tolist"))  # those two refuse


def _public_names(obj) -> list[str]:
    for prefix, module in (("np.linalg.", np.linalg), ("np.", np)):
        names = sorted(name for name in dir(module) if not name.startswith("_") and getattr(module, name, None) is obj)
        if names:
            return [prefix + name for name in names]
    return [f"np.{getattr(obj, '__name__', obj)}"]


def supported_operations() -> dict[str, list[str]]:
    """What the scalar-form tracer supports, from its rule tables: numpy
    ufuncs, numpy functions, the ufunc reductions, operators and array
    methods. Refusals (``np.argsort`` ...) are left out."""
    refused = {func for func, rule in FUNCTIONS.items() if getattr(rule, "__name__", "") == "refuse"}
    ufuncs = sorted({name for ufunc in list(UFUNCS) + [np.matmul] for name in _public_names(ufunc)})
    functions = sorted({name for func in FUNCTIONS if func not in refused for name in _public_names(func)}
                       | {"np.array", "np.asarray", "np.asanyarray", "np.ascontiguousarray", "np.r_", "np.c_"})
    reductions = sorted(f"{name}.reduce" for ufunc in _REDUCERS for name in _public_names(ufunc))
    return {"ufuncs": ufuncs, "functions": functions, "reductions": reductions,
            "operators": list(_OPERATORS), "methods": list(_METHODS)}


def apply_function(func, args, kwargs):
    """``__array_function__``: run the rule for a numpy function."""
    rule = FUNCTIONS.get(func)
    if rule is None:
        from .array_trace import LINALG_FUNCTIONS

        if func in LINALG_FUNCTIONS:
            also = " (np.linalg.norm of matrices with ord='nuc', 2 or -2 calls it)" if func is np.linalg.svd else ""
            unsupported(f"np.linalg.{func.__name__} in the scalar form",
                        f"np.linalg.{func.__name__}{also} is computed in the array form only: use "
                        "form=\"array\" (form=\"auto\" takes it).")
        module = getattr(func, "__module__", "numpy") or "numpy"
        module = "np" if module in ("numpy", "numpy.core.fromnumeric") or module.startswith("numpy._core") else module
        unsupported(
            f"{module}.{func.__name__}",
            f"{module}.{func.__name__} is not supported by symjac's tracer; rewrite it with supported numpy operations.",
        )
    return rule(*args, **kwargs)


RULES.register(apply_ufunc, apply_function)


_CONVENTIONS = """\
Derivatives where numpy's function is not differentiable (a set of measure
zero) follow numpy's selection rules and JAX:

- `np.max`/`np.min` (and `amax`, `.max()`, `np.maximum.reduce`): the derivative
  of the first maximal (minimal) element, the one `np.argmax` (`np.argmin`)
  returns; `np.maximum(a, b)`/`np.minimum(a, b)` select `a` at a tie. (JAX
  splits the derivative evenly between tied elements; a selection keeps every
  derivative, also the second, that of one smooth branch.)
- `np.sort`, `np.partition`, `np.median`: the element a stable sort puts at
  each position (ties in original order), as JAX's sort; `np.partition`
  returns the fully sorted array, one valid partition.
- `np.floor`, `np.ceil`, `np.trunc`, `np.rint`, `np.round`, `//`, `np.sign`,
  `np.angle`: derivative 0, also at the jumps.
- `np.remainder`/`np.mod`/`%`: 1 with respect to the dividend, `-floor(a/b)`
  with respect to the divisor; `np.fmod`: 1 and `-trunc(a/b)` (JAX's rules),
  also at the jumps.
- Compiled `max`/`min` use C's `fmax`/`fmin` (numpy: `np.fmax`/`np.fmin`): a NaN
  element is skipped where `np.max` would return NaN. `np.logaddexp` and
  `np.logaddexp2` are shifted by the larger argument, as numpy's: no overflow.
- `np.linalg` (array form; the rules of M. Giles 2008, as JAX's): eigenvectors
  (`eigh`, `eig`) and singular vectors (`svd`) have no derivative where
  eigenvalues or singular values repeat, nor the singular vectors of a
  non-square matrix at a zero singular value (the rules divide by the gaps:
  inf or nan there, as in JAX); each vector keeps the sign numpy returns.
  `pinv`: the derivative at constant rank. `norm` with `ord=2`/`-2`: that of
  the largest/smallest singular value. `eig` needs real eigenvalues (complex
  ones are a `ValueError` at run time); `svd(a)` of a non-square matrix
  (`full_matrices=True`) computes values, its derivative is an error: the
  extra vectors are any basis of a complement (use `full_matrices=False`).

Not supported, and why:

- complex numbers: traced values are real (`np.real`, `np.imag`, `np.angle`,
  `np.real_if_close` accept real input);
- indices that depend on values (`np.argmax`, `np.argsort`, `x[np.argmax(x)]`,
  boolean masks of traced values): the program would change with the point;
  use `np.where`, `np.max`, `np.sort`;
- in the scalar form, `np.linalg` beyond `det`/`inv`/`solve` of matrices up
  to 3×3 (expanded exactly) and `norm` without singular values: larger
  matrices, the factorizations, `pinv` and `norm` with `ord='nuc'`, `2`, `-2`
  of matrices belong to the array form (`form="array"`, listed above);
- sorting is written with comparisons, O(n²) nodes: fine for tens to a few
  hundred traced values, slow beyond.
"""


def supported_operations_markdown() -> str:
    """The README's "Supported numpy operations" section body, generated from
    the rule tables (``tests/test_numpy_coverage.py`` holds the README to it)."""
    table = supported_operations()
    titles = {"ufuncs": "ufuncs (elementwise, with broadcasting)", "functions": "functions",
              "reductions": "ufunc reductions", "operators": "operators", "methods": "array methods and attributes"}
    lines = []
    for key, title in titles.items():
        names = ", ".join(f"`{name}`" for name in table[key])
        lines.append(f"- **{title}**: {names}")
    from .array_trace import LINALG_FUNCTIONS  # the array form's own rule table

    linalg = ", ".join(sorted(f"`np.linalg.{f.__name__}`" for f in LINALG_FUNCTIONS))
    orders = ", ".join(f"`{order!r}`" for order in SINGULAR_VALUE_ORDERS)
    lines.append(f"- **array form only** (`form=\"array\"`; any matrix size, stacked and broadcast like "
                 f"numpy; derivatives by the matrix rules of M. Giles 2008): {linalg}; `np.linalg.norm` of "
                 f"matrices with `ord` {orders}")
    return "\n".join(lines) + "\n\n" + _CONVENTIONS
