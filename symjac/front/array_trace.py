"""Array-form tracing: run a numpy-style function on shaped tracers, record an ArrayProgram.

Feeds :mod:`symjac.derive.array_calculus` and :mod:`symjac.emit.array_printing`
with a :class:`~symjac.front.array_program.ArrayProgram`. Unlike the scalar
tracer, nothing here looks at array elements: a ``(784, 1024)`` weight is one
variable, ``W @ h`` one equation, so tracing costs time in the number of
operations, not in the widths.

:class:`ArrayTracer` implements numpy's ``__array_ufunc__`` and
``__array_function__`` protocols; the rule tables :data:`UFUNCS` and
:data:`FUNCTIONS` map numpy callables to IR primitives. Anything without a
rule raises :class:`ArrayFormError` (a ``TracingError``) naming the operation,
so callers can fall back to the scalar form.
"""

from __future__ import annotations

import collections
import math
import re

import numpy as np

from ..errors import ShapeError, TracingError
from .names import check_identifier
from .norms import norm
from .array_program import ArrayFormError, ArrayProgram, Builder, Var, broadcast_shapes, normalize_axes

__all__ = ["ArrayFormError", "ArrayTracer", "FUNCTIONS", "LINALG_FUNCTIONS", "UFUNCS", "trace_array"]

_HINT = "use form=\"scalar\" for this function"


def _unsupported(what: str, fix: str = "") -> ArrayFormError:
    return ArrayFormError(f"{what} is not supported in the array form; {fix + '; ' if fix else ''}{_HINT}")


class ArrayTracer:
    """A traced array: a variable of the program being recorded."""

    __array_priority__ = 1000
    __slots__ = ("_builder", "_var")

    def __init__(self, builder: Builder, var: Var) -> None:
        self._builder = builder
        self._var = var

    # -- numpy-like attributes ---------------------------------------------
    shape = property(lambda self: self._var.shape)
    ndim = property(lambda self: self._var.ndim)
    size = property(lambda self: self._var.size)
    dtype = property(lambda self: np.dtype(bool) if self._var.dtype == "b" else np.dtype(np.float64))
    T = property(lambda self: self.transpose())

    def __repr__(self) -> str:
        return f"ArrayTracer({self._var})"

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a traced scalar")
        return self.shape[0]

    def __iter__(self):
        for k in range(len(self)):
            yield self[k]

    def _concrete(self, what):
        raise TracingError(
            f"{what} of a traced array: its value is not known while tracing. Use np.where for "
            "branches and keep values as arrays (no float(), no Python if on traced values)")

    def __bool__(self):
        self._concrete("bool()")

    def __float__(self):
        self._concrete("float()")

    def __int__(self):
        self._concrete("int()")

    def __index__(self):
        self._concrete("use as an index")

    def __array__(self, *args, **kwargs):
        raise ArrayFormError("converting a traced array to a numpy array (np.array/np.asarray of traced "
                             "values) is not supported in the array form; build arrays with np.stack or "
                             f"np.concatenate, or {_HINT}")

    # -- numpy protocols -------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if kwargs.get("out") is not None:
            raise _unsupported(f"np.{ufunc.__name__}(..., out=...)", "assign the result instead")
        kwargs.pop("out", None)
        if method == "reduce" and ufunc in (np.add, np.maximum, np.minimum):
            prim = {np.add: "sum", np.maximum: "amax", np.minimum: "amin"}[ufunc]
            return _reduce(prim, inputs[0], kwargs.get("axis", 0), kwargs.get("keepdims", False))
        if method != "__call__" or kwargs:
            raise _unsupported(f"np.{ufunc.__name__}.{method}" if method != "__call__"
                               else f"np.{ufunc.__name__} with {', '.join(kwargs)}=")
        rule = UFUNCS.get(ufunc)
        if rule is None:
            raise _unsupported(f"np.{ufunc.__name__}")
        return rule(*inputs)

    def __array_function__(self, func, types, args, kwargs):
        rule = FUNCTIONS.get(func)
        if rule is None:
            name = getattr(func, "__name__", repr(func))
            module = getattr(func, "__module__", "numpy") or "numpy"
            raise _unsupported(f"{module.replace('numpy', 'np')}.{name}")
        return rule(*args, **kwargs)

    # -- operators -------------------------------------------------------------
    __add__ = lambda self, other: _ew("add", self, other)
    __radd__ = lambda self, other: _ew("add", other, self)
    __sub__ = lambda self, other: _ew("sub", self, other)
    __rsub__ = lambda self, other: _ew("sub", other, self)
    __mul__ = lambda self, other: _ew("mul", self, other)
    __rmul__ = lambda self, other: _ew("mul", other, self)
    __truediv__ = lambda self, other: _ew("div", self, other)
    __rtruediv__ = lambda self, other: _ew("div", other, self)
    __pow__ = lambda self, other: _ew("pow", self, other)
    __rpow__ = lambda self, other: _ew("pow", other, self)
    __neg__ = lambda self: _ew("neg", self)
    __pos__ = lambda self: self
    __abs__ = lambda self: _ew("abs", self)
    __gt__ = lambda self, other: _ew("gt", self, other)
    __ge__ = lambda self, other: _ew("ge", self, other)
    __lt__ = lambda self, other: _ew("lt", self, other)
    __le__ = lambda self, other: _ew("le", self, other)
    __eq__ = lambda self, other: _ew("eq", self, other)
    __ne__ = lambda self, other: _ew("ne", self, other)
    __and__ = lambda self, other: _ew("and", self, other)
    __or__ = lambda self, other: _ew("or", self, other)
    __xor__ = lambda self, other: _ew("xor", self, other)
    __invert__ = lambda self: _ew("not", self)
    __matmul__ = lambda self, other: _matmul(self, other)
    __rmatmul__ = lambda self, other: _matmul(other, self)
    __hash__ = object.__hash__

    def __getitem__(self, key):
        return _getitem(self, key)

    # -- methods ---------------------------------------------------------------
    def sum(self, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
        return _sum(self, axis, dtype, out, keepdims, **kwargs)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
        return _mean(self, axis, dtype, out, keepdims, **kwargs)

    def max(self, axis=None, out=None, keepdims=False, **kwargs):
        return _extreme("amax")(self, axis, out, keepdims, **kwargs)

    def min(self, axis=None, out=None, keepdims=False, **kwargs):
        return _extreme("amin")(self, axis, out, keepdims, **kwargs)

    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        return _reshape(self, shape, order)

    def transpose(self, *axes):
        if len(axes) == 1 and axes[0] is not None and not isinstance(axes[0], (int, np.integer)):
            axes = tuple(axes[0])
        return _transpose(self, axes or None)

    def ravel(self, order="C"):
        return _reshape(self, (-1,), order)

    flatten = ravel

    def squeeze(self, axis=None):
        return _squeeze(self, axis)

    def swapaxes(self, a, b):
        return _swapaxes(self, a, b)

    def dot(self, other):
        return _dot(self, other)

    def astype(self, dtype, **kwargs):
        if np.dtype(dtype).kind == "f":
            return self if self._var.dtype == "f" else _wrap(self._builder, self._builder.call("cast", self._var))
        raise _unsupported(f"astype({dtype!r})")

    def copy(self):
        return self


# --------------------------------------------------------------------------
# operands


def _builder_of(*values) -> Builder:
    for value in values:
        if isinstance(value, ArrayTracer):
            return value._builder
        if isinstance(value, (list, tuple)):
            try:
                return _builder_of(*value)
            except LookupError:
                continue
    raise LookupError("no traced operand")


def _wrap(builder: Builder, var: Var) -> ArrayTracer:
    return ArrayTracer(builder, var)


def _as_var(builder: Builder, value) -> Var:
    if isinstance(value, ArrayTracer):
        return value._var
    if isinstance(value, (list, tuple)) and any(isinstance(v, ArrayTracer) for v in value):
        return _stack(value, 0)._var
    if isinstance(value, (complex, np.complexfloating)) or np.iscomplexobj(value):
        raise TracingError(f"complex constant {value!r}: the array form traces real-valued functions only")
    try:
        array = np.asarray(value)
    except Exception:
        raise TracingError(f"cannot use a {type(value).__name__} value inside a traced function") from None
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise TracingError(f"cannot use a {type(value).__name__} value inside a traced function")
    if array.dtype.kind in "iu":
        array = array.astype(np.float64)
    return builder.constant(array)


def _ew(prim: str, *operands) -> ArrayTracer:
    builder = _builder_of(*operands)
    return _wrap(builder, builder.call(prim, *(_as_var(builder, v) for v in operands)))


def _unary_rule(prim):
    return lambda a, **kw: _no_kwargs(prim, kw) or _ew(prim, a)


def _binary_rule(prim):
    return lambda a, b, **kw: _no_kwargs(prim, kw) or _ew(prim, a, b)


def _no_kwargs(name, kwargs):
    given = [k for k, v in kwargs.items() if v is not None]
    if given:
        raise _unsupported(f"np.{name} with {', '.join(given)}=")
    return None


def _scaled(factor):
    return lambda a: _ew("mul", a, float(factor))


UFUNCS = {
    np.add: _binary_rule("add"), np.subtract: _binary_rule("sub"), np.multiply: _binary_rule("mul"),
    np.true_divide: _binary_rule("div"), np.power: _binary_rule("pow"), np.float_power: _binary_rule("pow"),
    np.negative: _unary_rule("neg"), np.positive: lambda a: a, np.conjugate: lambda a: a,
    np.square: _unary_rule("square"), np.reciprocal: _unary_rule("reciprocal"),
    np.sqrt: _unary_rule("sqrt"), np.cbrt: _unary_rule("cbrt"), np.exp: _unary_rule("exp"),
    np.exp2: _unary_rule("exp2"), np.expm1: _unary_rule("expm1"), np.log: _unary_rule("log"),
    np.log2: _unary_rule("log2"), np.log10: _unary_rule("log10"), np.log1p: _unary_rule("log1p"),
    np.logaddexp: _binary_rule("logaddexp"), np.sin: _unary_rule("sin"), np.cos: _unary_rule("cos"),
    np.tan: _unary_rule("tan"), np.arcsin: _unary_rule("arcsin"), np.arccos: _unary_rule("arccos"),
    np.arctan: _unary_rule("arctan"), np.arctan2: _binary_rule("arctan2"), np.hypot: _binary_rule("hypot"),
    np.sinh: _unary_rule("sinh"), np.cosh: _unary_rule("cosh"), np.tanh: _unary_rule("tanh"),
    np.arcsinh: _unary_rule("arcsinh"), np.arccosh: _unary_rule("arccosh"), np.arctanh: _unary_rule("arctanh"),
    np.deg2rad: _scaled(math.pi / 180.0), np.radians: _scaled(math.pi / 180.0),
    np.rad2deg: _scaled(180.0 / math.pi), np.degrees: _scaled(180.0 / math.pi),
    np.absolute: _unary_rule("abs"), np.fabs: _unary_rule("abs"), np.sign: _unary_rule("sign"),
    np.heaviside: _binary_rule("heaviside"), np.maximum: _binary_rule("maximum"),
    np.minimum: _binary_rule("minimum"), np.fmax: _binary_rule("maximum"), np.fmin: _binary_rule("minimum"),
    np.greater: _binary_rule("gt"), np.greater_equal: _binary_rule("ge"), np.less: _binary_rule("lt"),
    np.less_equal: _binary_rule("le"), np.equal: _binary_rule("eq"), np.not_equal: _binary_rule("ne"),
    np.logical_and: _binary_rule("and"), np.logical_or: _binary_rule("or"),
    np.logical_xor: _binary_rule("xor"), np.logical_not: _unary_rule("not"),
    np.matmul: lambda a, b: _matmul(a, b),
}


# --------------------------------------------------------------------------
# contractions


def _einsum_var(builder, operands, labels, out) -> ArrayTracer:
    """Contract with numpy broadcasting of size-1 axes resolved first."""
    sizes = {}
    for var, ls in zip(operands, labels):
        if len(ls) != var.ndim:
            raise ShapeError(f"einsum: operand of shape {var.shape} given {len(ls)} indices")
        for label, size in zip(ls, var.shape):
            if sizes.get(label, 1) != size and size != 1:
                if sizes.get(label, 1) != 1:
                    raise ShapeError(f"einsum: index {label!r} has sizes {sizes[label]} and {size}")
            sizes[label] = max(sizes.get(label, 1), size)
    fixed = []
    for var, ls in zip(operands, labels):
        target = tuple(sizes[l] for l in ls)
        fixed.append(builder.broadcast(var, target) if target != var.shape else var)
    return _wrap(builder, builder.contract(fixed, labels, out, sizes))


def _matmul(a, b) -> ArrayTracer:
    builder = _builder_of(a, b)
    a, b = _as_var(builder, a), _as_var(builder, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError("matmul: operands must not be scalars (use *)")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} do not match")
    if a.ndim == 1 and b.ndim == 1:
        return _einsum_var(builder, (a, b), ((0,), (0,)), ())
    if a.ndim == 1:
        stack = tuple(range(10, 10 + b.ndim - 2))
        return _einsum_var(builder, (a, b), ((0,), stack + (0, 1)), stack + (1,))
    if b.ndim == 1:
        stack = tuple(range(10, 10 + a.ndim - 2))
        return _einsum_var(builder, (a, b), (stack + (2, 0), (0,)), stack + (2,))
    rank = max(a.ndim, b.ndim) - 2
    stack = tuple(range(10, 10 + rank))
    la = stack[rank - (a.ndim - 2):] + (2, 0)
    lb = stack[rank - (b.ndim - 2):] + (0, 1)
    return _einsum_var(builder, (a, b), (la, lb), stack + (2, 1))


def _parse_subscripts(subscripts: str, shapes):
    subscripts = subscripts.replace(" ", "")
    if "->" in subscripts:
        inputs, output = subscripts.split("->")
    else:
        inputs, output = subscripts, None
    terms = inputs.split(",")
    if len(terms) != len(shapes):
        raise ShapeError(f"einsum: {len(terms)} subscripts for {len(shapes)} operands")
    ellipsis_rank = max((len(s) - len(t.replace("...", "")) for t, s in zip(terms, shapes) if "..." in t), default=0)
    free = [chr(c) for c in range(ord("A"), ord("Z") + 1) if chr(c) not in subscripts]
    fill = free[:ellipsis_rank]
    labels = []
    for term, shape in zip(terms, shapes):
        if "..." in term:
            left, right = term.split("...")
            count = len(shape) - len(left) - len(right)
            term = left + "".join(fill[ellipsis_rank - count:]) + right
        if not term.isalpha() and term:
            raise _unsupported(f"np.einsum subscripts {subscripts!r}")
        labels.append(tuple(term))
    if output is None:
        counts = {}
        for ls in labels:
            for l in ls:
                counts[l] = counts.get(l, 0) + 1
        out = tuple(fill) + tuple(sorted(l for l, c in counts.items() if c == 1 and l not in fill))
    else:
        out = tuple(output.replace("...", "".join(fill)))
    return labels, out


def _einsum(*operands, out=None, optimize=False, dtype=None, order="K", casting="safe"):
    if out is not None or (dtype is not None and np.dtype(dtype).kind != "f"):
        raise _unsupported("np.einsum with out= or dtype=")
    if not operands or not isinstance(operands[0], str):
        raise _unsupported("np.einsum in the interleaved (operand, indices) form", "pass a subscripts string")
    subscripts, arrays = operands[0], operands[1:]
    builder = _builder_of(*arrays)
    variables = [_as_var(builder, a) for a in arrays]
    labels, result = _parse_subscripts(subscripts, [v.shape for v in variables])
    return _einsum_var(builder, variables, labels, result)


def _tensordot(a, b, axes=2):
    builder = _builder_of(a, b)
    a, b = _as_var(builder, a), _as_var(builder, b)
    if isinstance(axes, (int, np.integer)):
        axes_a, axes_b = list(range(a.ndim - axes, a.ndim)), list(range(axes))
    else:
        axes_a, axes_b = axes
        axes_a = [axes_a] if isinstance(axes_a, (int, np.integer)) else list(axes_a)
        axes_b = [axes_b] if isinstance(axes_b, (int, np.integer)) else list(axes_b)
    axes_a = [k % a.ndim for k in axes_a]
    axes_b = [k % b.ndim for k in axes_b]
    la = [100 + k for k in range(a.ndim)]
    lb = [200 + k for k in range(b.ndim)]
    for i, j in zip(axes_a, axes_b):
        if a.shape[i] != b.shape[j]:
            raise ShapeError(f"tensordot: shape mismatch {a.shape} and {b.shape} over axes {axes}")
        lb[j] = la[i]
    out = [l for k, l in enumerate(la) if k not in axes_a] + [l for k, l in enumerate(lb) if k not in axes_b]
    return _wrap(builder, builder.contract((a, b), (tuple(la), tuple(lb)), tuple(out),
                                           {**dict(zip(la, a.shape)), **dict(zip(lb, b.shape))}))


def _dot(a, b, out=None):
    if out is not None:
        raise _unsupported("np.dot with out=")
    builder = _builder_of(a, b)
    va, vb = _as_var(builder, a), _as_var(builder, b)
    if va.ndim == 0 or vb.ndim == 0:
        return _ew("mul", a, b)
    if vb.ndim == 1:
        return _tensordot(a, b, ([-1], [0]))
    return _tensordot(a, b, ([-1], [-2]))


def _inner(a, b):
    builder = _builder_of(a, b)
    va, vb = _as_var(builder, a), _as_var(builder, b)
    if va.ndim == 0 or vb.ndim == 0:
        return _ew("mul", a, b)
    return _tensordot(a, b, ([-1], [-1]))


def _outer(a, b, out=None):
    builder = _builder_of(a, b)
    va, vb = _as_var(builder, a), _as_var(builder, b)
    va, vb = builder.reshape(va, (va.size,)), builder.reshape(vb, (vb.size,))
    return _ew("mul", _wrap(builder, builder.reshape(va, (va.size, 1))), _wrap(builder, vb))


# --------------------------------------------------------------------------
# reductions


def _check_reduce_kwargs(name, dtype=None, out=None, **kwargs):
    if out is not None:
        raise _unsupported(f"np.{name}(..., out=...)")
    if dtype is not None and np.dtype(dtype).kind != "f":
        raise _unsupported(f"np.{name}(..., dtype={dtype!r})")
    given = [k for k, v in kwargs.items() if v is not None and k != "keepdims"]
    if given:
        raise _unsupported(f"np.{name} with {', '.join(given)}=")


def _reduce(prim, a, axis, keepdims) -> ArrayTracer:
    builder = _builder_of(a)
    var = _as_var(builder, a)
    axes = normalize_axes(axis, var.ndim)
    return _wrap(builder, builder.reduce(prim, var, axes, bool(keepdims)))


def _sum(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
    _check_reduce_kwargs("sum", dtype, out, initial=initial, where=where)
    return _reduce("sum", a, axis, keepdims)


def _mean(a, axis=None, dtype=None, out=None, keepdims=False, where=None):
    _check_reduce_kwargs("mean", dtype, out, where=where)
    builder = _builder_of(a)
    var = _as_var(builder, a)
    count = math.prod(var.shape[k] for k in normalize_axes(axis, var.ndim))
    return _reduce("sum", a, axis, keepdims) * (1.0 / count)


def _extreme(prim):
    def reduce(a, axis=None, out=None, keepdims=False, initial=None, where=None):
        _check_reduce_kwargs(prim, None, out, initial=initial, where=where)
        return _reduce(prim, a, axis, keepdims)
    return reduce


# --------------------------------------------------------------------------
# shapes


def _reshape(a, shape, order="C"):
    if order != "C":
        raise _unsupported(f"reshape with order={order!r}")
    builder = _builder_of(a)
    var = _as_var(builder, a)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    if shape.count(-1) > 1:
        raise ShapeError("reshape: only one dimension may be -1")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known == 0 or var.size % known:
            raise ShapeError(f"cannot reshape an array of shape {var.shape} into shape {shape}")
        shape = tuple(var.size // known if s == -1 else s for s in shape)
    return _wrap(builder, builder.reshape(var, shape))


def _transpose(a, axes=None):
    builder = _builder_of(a)
    var = _as_var(builder, a)
    perm = tuple(reversed(range(var.ndim))) if axes is None else tuple(int(k) % var.ndim for k in axes)
    return _wrap(builder, builder.transpose(var, perm))


def _swapaxes(a, axis1, axis2):
    builder = _builder_of(a)
    n = _as_var(builder, a).ndim
    perm = list(range(n))
    i, j = axis1 % n, axis2 % n
    perm[i], perm[j] = perm[j], perm[i]
    return _transpose(a, perm)


def _moveaxis(a, source, destination):
    builder = _builder_of(a)
    n = _as_var(builder, a).ndim
    source = [source] if isinstance(source, (int, np.integer)) else list(source)
    destination = [destination] if isinstance(destination, (int, np.integer)) else list(destination)
    source, destination = [s % n for s in source], [d % n for d in destination]
    order = [k for k in range(n) if k not in source]
    for dest, src in sorted(zip(destination, source)):
        order.insert(dest, src)
    return _transpose(a, order)


def _squeeze(a, axis=None):
    builder = _builder_of(a)
    var = _as_var(builder, a)
    axes = tuple(k for k, s in enumerate(var.shape) if s == 1) if axis is None else normalize_axes(axis, var.ndim)
    if any(var.shape[k] != 1 for k in axes):
        raise ShapeError("squeeze: cannot select an axis whose size is not one")
    return _reshape(a, tuple(s for k, s in enumerate(var.shape) if k not in axes))


def _expand_dims(a, axis):
    builder = _builder_of(a)
    var = _as_var(builder, a)
    axes = normalize_axes(axis, var.ndim + (1 if isinstance(axis, (int, np.integer)) else len(axis)))
    shape, rest = [], iter(var.shape)
    for k in range(var.ndim + len(axes)):
        shape.append(1 if k in axes else next(rest))
    return _reshape(a, tuple(shape))


def _broadcast_to(a, shape, subok=False):
    builder = _builder_of(a)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    return _wrap(builder, builder.broadcast(_as_var(builder, a), shape))


def _getitem(tracer: ArrayTracer, key):
    builder, var = tracer._builder, tracer._var
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        used = sum(1 for k in key if k is not None and k is not Ellipsis)
        key = key[:at] + (slice(None),) * (var.ndim - used) + key[at + 1:]
    index, axis = [], 0
    for entry in key:
        if entry is None:
            index.append(("n",))
            continue
        if axis >= var.ndim:
            raise ShapeError(f"too many indices for an array of shape {var.shape}")
        size = var.shape[axis]
        if isinstance(entry, slice):
            start, stop, step = entry.indices(size)
            if step < 0:
                raise _unsupported("slicing with a negative step", "use np.flip-free code or reverse afterwards")
            index.append(("s", start, max(stop, start), step))
        elif isinstance(entry, (int, np.integer)) and not isinstance(entry, bool):
            k = int(entry)
            if not -size <= k < size:
                raise ShapeError(f"index {k} is out of bounds for axis {axis} with size {size}")
            index.append(("i", k % size))
        else:
            raise _unsupported(f"indexing with a {type(entry).__name__}",
                               "only integers, slices, None and ... are supported (no fancy or boolean indexing)")
        axis += 1
    index += [("s", 0, var.shape[k], 1) for k in range(axis, var.ndim)]
    return _wrap(builder, builder.getitem(var, tuple(index)))


def _concatenate(arrays, axis=0, out=None, dtype=None, casting="same_kind"):
    if out is not None or dtype is not None:
        raise _unsupported("np.concatenate with out= or dtype=")
    arrays = list(arrays)
    builder = _builder_of(*arrays)
    variables = [_as_var(builder, a) for a in arrays]
    if axis is None:
        variables = [builder.reshape(v, (v.size,)) for v in variables]
        axis = 0
    ndim = variables[0].ndim
    if ndim == 0 or any(v.ndim != ndim for v in variables):
        raise ShapeError("concatenate: arrays must have the same number of dimensions (at least 1)")
    axis = normalize_axes(axis, ndim)[0]
    for v in variables:
        if any(s != t for k, (s, t) in enumerate(zip(v.shape, variables[0].shape)) if k != axis):
            raise ShapeError(f"concatenate: shapes {', '.join(str(x.shape) for x in variables)} do not match")
    return _wrap(builder, builder.concat(variables, axis))


def _stack(arrays, axis=0, out=None, dtype=None, casting="same_kind"):
    if out is not None or dtype is not None:
        raise _unsupported("np.stack with out= or dtype=")
    arrays = list(arrays)
    builder = _builder_of(*arrays)
    variables = [_as_var(builder, a) for a in arrays]
    shape = broadcast_shapes(*(v.shape for v in variables), what="np.stack operands")
    if any(v.shape != shape for v in variables) and not all(v.ndim == 0 for v in variables):
        shapes = ", ".join(str(v.shape) for v in variables)
        raise ShapeError(f"stack: all arrays must have the same shape, got {shapes}")
    axis = normalize_axes(axis, len(shape) + 1)[0]
    new_shape = shape[:axis] + (1,) + shape[axis:]
    parts = [builder.reshape(builder.broadcast(v, shape), new_shape) for v in variables]
    return _wrap(builder, builder.concat(parts, axis))


def _where(condition, x=None, y=None):
    if x is None or y is None:
        raise _unsupported("np.where(condition) with one argument", "give both branches: np.where(c, a, b)")
    return _ew("where", condition, x, y)


def _clip(a, a_min=None, a_max=None, out=None, **kwargs):
    if out is not None or kwargs:
        raise _unsupported("np.clip with out= or other keywords")
    result = a
    if a_min is not None:
        result = _ew("maximum", result, a_min)
    if a_max is not None:
        result = _ew("minimum", result, a_max)
    return result


def _filled(value):
    def like(a, dtype=None, order="K", subok=True, shape=None):
        builder = _builder_of(a)
        shape = _as_var(builder, a).shape if shape is None else tuple(np.atleast_1d(shape))
        return _wrap(builder, builder.broadcast(builder.literal(value), shape))
    return like


def _full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None):
    builder = _builder_of(a)
    shape = _as_var(builder, a).shape if shape is None else tuple(np.atleast_1d(shape))
    return _wrap(builder, builder.broadcast(_as_var(builder, fill_value), shape))


# --------------------------------------------------------------------------
# np.linalg on stacked matrices (core axes last, stacks broadcast like numpy)

SlogdetResult = collections.namedtuple("SlogdetResult", "sign logabsdet")
EighResult = collections.namedtuple("EighResult", "eigenvalues eigenvectors")
EigResult = collections.namedtuple("EigResult", "eigenvalues eigenvectors")
SVDResult = collections.namedtuple("SVDResult", "U S Vh")
_NOT_GIVEN = object()


def _matrices(builder, a, name) -> Var:
    var = _as_var(builder, a)
    if var.ndim < 2 or var.shape[-1] != var.shape[-2]:
        raise ShapeError(f"np.linalg.{name}: the last two dimensions must be square, got shape {var.shape}")
    return var


def _swap_last(builder, var: Var) -> Var:
    return builder.transpose(var, tuple(range(var.ndim - 2)) + (var.ndim - 1, var.ndim - 2))


def _symmetrized(builder, var: Var, uplo: str) -> Var:
    """The symmetric matrix that LAPACK reads from one triangle of ``var``
    (numpy's ``cholesky`` and ``eigh`` ignore the other triangle; so do their
    derivatives here, which are then exact for non-symmetric input too)."""
    n = var.shape[-1]
    if uplo not in ("L", "U"):
        raise ShapeError(f"UPLO must be 'L' or 'U', got {uplo!r}")
    lower = uplo == "L"
    keep = np.tril(np.ones((n, n))) if lower else np.triu(np.ones((n, n)))
    strict = keep - np.eye(n)
    if n == 1:
        return var
    part = builder.mul(var, builder.constant(keep))
    mirrored = _swap_last(builder, builder.mul(var, builder.constant(strict)))
    return builder.add(part, mirrored)


def _linalg_inv(a):
    builder = _builder_of(a)
    return _wrap(builder, builder.linalg("inv", _matrices(builder, a, "inv")))


def _linalg_solve(a, b):
    builder = _builder_of(a, b)
    A, B = _matrices(builder, a, "solve"), _as_var(builder, b)
    n = A.shape[-1]
    vector = B.ndim == 1  # numpy >= 2: b is a vector only when it is 1-d
    if vector:
        if B.shape[0] != n:
            raise ShapeError(f"np.linalg.solve: b of shape {B.shape} for matrices of shape {A.shape}")
        B = builder.reshape(B, (n, 1))
    if B.ndim < 2 or B.shape[-2] != n:
        raise ShapeError(f"np.linalg.solve: b of shape {B.shape} for matrices of shape {A.shape}")
    batch = broadcast_shapes(A.shape[:-2], B.shape[:-2], what="np.linalg.solve stacks")
    A = builder.broadcast(A, batch + A.shape[-2:])
    B = builder.broadcast(B, batch + B.shape[-2:])
    X = builder.linalg("solve", A, B)
    if vector:
        X = builder.reshape(X, batch + (n,))
    return _wrap(builder, X)


def _linalg_det(a):
    builder = _builder_of(a)
    return _wrap(builder, builder.linalg("det", _matrices(builder, a, "det")))


def _linalg_slogdet(a):
    builder = _builder_of(a)
    A = _matrices(builder, a, "slogdet")
    return SlogdetResult(_wrap(builder, builder.linalg("slogdet_sign", A)), _wrap(builder, builder.linalg("slogdet", A)))


def _linalg_cholesky(a, upper=False):
    builder = _builder_of(a)
    # numpy reads the lower triangle, or the upper one for upper=True
    L = builder.linalg("cholesky", _symmetrized(builder, _matrices(builder, a, "cholesky"), "U" if upper else "L"))
    return _wrap(builder, _swap_last(builder, L) if upper else L)


def _linalg_eigh(a, UPLO="L"):
    builder = _builder_of(a)
    S = _symmetrized(builder, _matrices(builder, a, "eigh"), UPLO)
    return EighResult(_wrap(builder, builder.linalg("eigh_values", S)), _wrap(builder, builder.linalg("eigh_vectors", S)))


def _linalg_eigvalsh(a, UPLO="L"):
    builder = _builder_of(a)
    S = _symmetrized(builder, _matrices(builder, a, "eigvalsh"), UPLO)
    return _wrap(builder, builder.linalg("eigh_values", S))


def _linalg_svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    """U, S, Vh (or S): numpy's SVD. With full_matrices=True a non-square matrix has
    extra singular vectors (any orthonormal basis of a complement): their values
    are numpy's, a derivative through them is an error (as in JAX)."""
    builder = _builder_of(a)
    A = _as_var(builder, a)
    if A.ndim < 2:
        raise ShapeError(f"np.linalg.svd: needs matrices (..., m, n), got shape {A.shape}")
    if hermitian:  # numpy then reads the lower triangle (it calls eigh)
        A = _symmetrized(builder, _matrices(builder, a, "svd"), "L")
    S = _wrap(builder, builder.linalg("svd_values", A))
    if not compute_uv:
        return S
    full = "_full" if full_matrices and A.shape[-1] != A.shape[-2] else ""
    return SVDResult(_wrap(builder, builder.linalg("svd_u" + full, A)), S,
                     _wrap(builder, builder.linalg("svd_vh" + full, A)))


def _linalg_pinv(a, rcond=None, hermitian=False, *, rtol=_NOT_GIVEN):
    """numpy's pseudo-inverse; singular values below rcond times the largest are dropped
    (numpy's default rcond 1e-15; rtol=None means max(m, n) machine epsilons)."""
    builder = _builder_of(a)
    A = _as_var(builder, a)
    if A.ndim < 2:
        raise ShapeError(f"np.linalg.pinv: needs matrices (..., m, n), got shape {A.shape}")
    if rcond is None:
        if rtol is _NOT_GIVEN:
            rcond = 1e-15
        else:
            rcond = max(A.shape[-2:]) * np.finfo(np.float64).eps if rtol is None else rtol
    if isinstance(rcond, ArrayTracer) or np.ndim(rcond) != 0:
        raise _unsupported("np.linalg.pinv with a traced or array rcond/rtol", "give one number")
    if hermitian:
        A = _symmetrized(builder, _matrices(builder, a, "pinv"), "L")
    return _wrap(builder, builder.linalg("pinv", A, params=(("rcond", float(rcond)),)))


def _linalg_eig(a):
    """Eigenvalues and unit eigenvectors of real matrices whose eigenvalues are
    real (numpy's order); complex eigenvalues are an error at run time."""
    builder = _builder_of(a)
    A = _matrices(builder, a, "eig")
    return EigResult(_wrap(builder, builder.linalg("eig_values", A)), _wrap(builder, builder.linalg("eig_vectors", A)))


def _linalg_eigvals(a):
    builder = _builder_of(a)
    return _wrap(builder, builder.linalg("eig_values", _matrices(builder, a, "eigvals")))


LINALG_FUNCTIONS = {
    np.linalg.inv: _linalg_inv, np.linalg.solve: _linalg_solve, np.linalg.det: _linalg_det,
    np.linalg.slogdet: _linalg_slogdet, np.linalg.cholesky: _linalg_cholesky, np.linalg.eigh: _linalg_eigh,
    np.linalg.eigvalsh: _linalg_eigvalsh, np.linalg.eig: _linalg_eig, np.linalg.eigvals: _linalg_eigvals,
    np.linalg.svd: _linalg_svd, np.linalg.pinv: _linalg_pinv,
}


FUNCTIONS = {
    **LINALG_FUNCTIONS,
    np.sum: _sum, np.mean: _mean, np.max: _extreme("amax"), np.min: _extreme("amin"),
    np.amax: _extreme("amax"), np.amin: _extreme("amin"),
    np.dot: _dot, np.inner: _inner, np.outer: _outer, np.tensordot: _tensordot, np.einsum: _einsum,
    np.matmul: _matmul, np.reshape: _reshape, np.transpose: _transpose, np.swapaxes: _swapaxes,
    np.moveaxis: _moveaxis, np.squeeze: _squeeze, np.expand_dims: _expand_dims,
    np.ravel: lambda a, order="C": _reshape(a, (-1,), order),
    np.broadcast_to: _broadcast_to, np.concatenate: _concatenate, np.stack: _stack,
    np.where: _where, np.clip: _clip, np.linalg.norm: norm,
    np.zeros_like: _filled(0.0), np.ones_like: _filled(1.0), np.full_like: _full_like,
    np.shape: lambda a: a.shape, np.ndim: lambda a: a.ndim,
    np.size: lambda a, axis=None: a.size if axis is None else a.shape[axis],
    np.copy: lambda a, order="K", subok=False: a,
}


# --------------------------------------------------------------------------
# the entry point


def _dead_code_eliminated(eqns, outputs):
    needed = {v.name for v in outputs}
    kept = []
    for eqn in reversed(eqns):
        if eqn.out.name in needed:
            kept.append(eqn)
            needed.update(v.name for v in eqn.inputs)
    return tuple(reversed(kept))


def program_from(name: str, builder: Builder, inputs, outputs, structure, output_is_tuple) -> ArrayProgram:
    """A program of ``builder``'s equations that the ``outputs`` need, in order."""
    return ArrayProgram(name, tuple(inputs), _dead_code_eliminated(builder.eqns, outputs), tuple(outputs),
                        structure, bool(output_is_tuple))


def trace_array(function, names: tuple[str, ...], shapes: tuple[tuple[int, ...], ...]) -> ArrayProgram:
    """Run ``function`` on array tracers of ``shapes`` and record its ArrayProgram.

    Raises :class:`ArrayFormError` for an operation the array form cannot
    handle, :class:`~symjac.errors.TracingError` for untraceable code.
    """
    names = tuple(check_identifier(n, "argument name") for n in names)
    if len(names) != len(shapes) or len(set(names)) != len(names):
        raise ShapeError("trace_array needs one distinct name per shape")
    builder = Builder()
    inputs = tuple(Var(n, tuple(int(s) for s in shape)) for n, shape in zip(names, shapes))
    result = function(*(ArrayTracer(builder, v) for v in inputs))
    is_tuple = isinstance(result, (tuple, list))
    items = list(result) if is_tuple else [result]
    if is_tuple and not items:
        raise ShapeError("the traced function returned an empty tuple")
    outputs = []
    for item in items:
        if isinstance(item, ArrayTracer):
            var = item._var
        else:
            var = _as_var(builder, item)
        if var.dtype == "b":
            raise ArrayFormError("the traced function returns a boolean array; derivatives need float outputs")
        outputs.append(var)
    structure = tuple(range(len(outputs))) if is_tuple else 0
    raw = getattr(function, "__name__", "function")
    name = raw if isinstance(raw, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", raw) else "function"
    return program_from(name, builder, inputs, outputs, structure, is_tuple)


