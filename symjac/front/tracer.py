"""The tracer type: an array of sympy expressions that records numpy calls.

Used by ``trace.py`` (which runs the user's function on TracerArrays) and by
``ops.py`` (the rule tables, which build and return TracerArrays). This module
knows nothing about individual numpy operations: ``ops.py`` registers its two
dispatch functions in :data:`RULES` when it is imported, so the dependency
runs one way only (ops -> tracer) and no import happens inside a numpy call.

Also here: turning constants and nested lists into object arrays of exact
sympy numbers, and the thread-local replacement of ``np.array``/``np.asarray``
while a function is traced (numpy's protocols cannot intercept those).
"""

from __future__ import annotations

import functools
import os
import sys
import threading

import numpy as np
import sympy

from ..errors import DeclaredShapeError, ShapeError, TracingError

__all__ = ["RULES", "TracerArray", "TracingContext", "as_values", "constant", "contains_tracer", "holds_tracer",
           "patch_while_tracing", "scalar_array", "tracing", "unsupported", "wrap"]

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # symjac/
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__))


class _Rules:
    """Where ``ops.py`` registers ``apply_ufunc`` and ``apply_function``."""

    def apply_ufunc(self, ufunc, method, inputs, kwargs):
        raise RuntimeError("symjac.ops has not registered its rules (import symjac.trace first)")

    apply_function = apply_ufunc

    def register(self, apply_ufunc, apply_function) -> None:
        self.apply_ufunc = apply_ufunc
        self.apply_function = apply_function


RULES = _Rules()


# --------------------------------------------------------------------------
# constants and conversion to object arrays of sympy expressions


def constant(value) -> sympy.Basic:
    """A numeric (or boolean) Python/numpy scalar as an exact sympy number."""
    if isinstance(value, sympy.Basic):
        return value
    if isinstance(value, (bool, np.bool_)):
        return sympy.true if value else sympy.false
    if isinstance(value, (int, np.integer)):
        return sympy.Integer(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if value.is_integer() and abs(value) < 2**53:
            return sympy.Integer(int(value))
        return sympy.Float(value)
    if isinstance(value, (complex, np.complexfloating)):
        raise TracingError(
            f"complex constant {value!r}: symjac traces real-valued functions only"
        )
    raise TracingError(f"cannot use a {type(value).__name__} value inside a traced function")


_constant_array = np.frompyfunc(constant, 1, 1)


def as_values(value) -> np.ndarray:
    """Any traced or constant array-like as an object ndarray of sympy exprs."""
    if isinstance(value, TracerArray):
        return value._values
    if isinstance(value, sympy.MatrixBase):
        rows = np.array(value.tolist(), dtype=object).reshape(value.shape)
        return rows[:, 0] if value.shape[1] == 1 else rows
    if isinstance(value, sympy.Basic):
        return scalar_array(value)
    if isinstance(value, (list, tuple)):
        return _nested_values(value)
    array = np.asarray(value) if not isinstance(value, np.ndarray) else value
    if array.dtype == object:
        result = np.empty(array.shape, dtype=object)
        for index, item in np.ndenumerate(array):
            if isinstance(item, sympy.Basic):
                result[index] = item
                continue
            item_values = as_values(item)
            if item_values.ndim:
                raise TracingError("object arrays of arrays cannot be traced")
            result[index] = item_values[()]
        return result
    if array.dtype.kind not in "biuf":
        raise TracingError(f"cannot use an array of dtype {array.dtype} inside a traced function")
    return np.asarray(_constant_array(array), dtype=object).reshape(array.shape)


def scalar_array(expr) -> np.ndarray:
    result = np.empty((), dtype=object)
    result[()] = expr
    return result


def _nested_values(items) -> np.ndarray:
    """np.array semantics for (nested) lists mixing traced and constant items."""
    parts = [as_values(item) for item in items]
    shapes = {part.shape for part in parts}
    if len(shapes) > 1:
        raise ShapeError(f"cannot build an array from parts of different shapes {sorted(shapes)}")
    inner = shapes.pop() if parts else (0,)
    result = np.empty((len(parts),) + inner, dtype=object)
    for position, part in enumerate(parts):
        result[position] = part if part.ndim else part[()]
    return result


def contains_tracer(value) -> bool:
    if isinstance(value, TracerArray):
        return True
    if isinstance(value, (list, tuple)):
        return any(contains_tracer(item) for item in value)
    if isinstance(value, np.ndarray) and value.dtype == object:
        return any(contains_tracer(item) for item in value.flat)
    return isinstance(value, sympy.Expr) and bool(value.free_symbols)


def wrap(values):
    """Wrap object ndarrays (possibly inside lists/tuples) as TracerArrays."""
    if isinstance(values, np.ndarray):
        return TracerArray(values)
    if isinstance(values, (list, tuple)):
        return type(values)(wrap(item) for item in values)
    return values


# --------------------------------------------------------------------------
# the tracer type


def unsupported(what: str, fix: str):
    raise TracingError(f"{what} cannot be traced. {fix}{_user_location()}")


class TracerArray:
    """A numpy-like array of sympy expressions that records numpy calls.

    Only numpy's dispatch protocols and the usual array methods are provided;
    anything that would need a concrete number (``if``, ``float()``,
    ``math.sin``) raises :class:`~symjac.TracingError` with the fix.
    """

    __array_priority__ = 1000.0
    __slots__ = ("_values", "_argument")

    def __init__(self, values: np.ndarray, argument: str | None = None) -> None:
        self._values = values
        self._argument = argument  # the argument's name when this is an argument as the function received it

    # -- array attributes ------------------------------------------------
    shape = property(lambda self: self._values.shape)
    ndim = property(lambda self: self._values.ndim)
    size = property(lambda self: self._values.size)
    dtype = property(lambda self: np.dtype(np.float64))
    T = property(lambda self: TracerArray(self._values.T))
    mT = property(lambda self: TracerArray(np.swapaxes(self._values, -1, -2)))

    def __len__(self) -> int:
        if not self.ndim:
            raise TypeError("len() of a 0-d traced array")
        return len(self._values)

    def __iter__(self):
        if not self.ndim:
            raise TypeError("iteration over a 0-d traced array")
        return (TracerArray(np.asarray(row, dtype=object).reshape(self.shape[1:])) for row in self._values)

    def __getitem__(self, index):
        if contains_tracer(index):
            unsupported("Indexing with a traced value", "Indices must be constants; use np.where to select values.")
        try:
            result = self._values[index]
        except IndexError as error:
            what = f"argument {self._argument!r}, declared with shape" if self._argument else "a traced array of shape"
            raise DeclaredShapeError(
                f"{error} in {what} {self.shape}: declare the shape the function indexes "
                f"(e.g. {self._argument or 'y'}={_enough(self.shape, index)}){_user_location()}") from None
        if not isinstance(result, np.ndarray):
            result = scalar_array(result)
        return TracerArray(result)

    def __setitem__(self, index, value) -> None:
        if contains_tracer(index):
            unsupported("Indexing with a traced value", "Indices must be constants; use np.where to select values.")
        values = as_values(value)
        self._values[index] = values if values.ndim else values[()]

    def __repr__(self) -> str:
        body = self._values[()] if not self.ndim else self._values.tolist()
        return f"TracerArray(shape={self.shape}, {body})"

    def _sympy_(self):
        """Lets sympy functions (``sympy.sin(x[0])``) take traced values."""
        if self.ndim == 0:
            return self._values[()]
        if self.ndim <= 2:
            return sympy.ImmutableMatrix(np.atleast_2d(self._values).tolist())
        raise TracingError(f"a traced array of shape {self.shape} cannot become a sympy object")

    # -- conversions that need a number ------------------------------------
    def __bool__(self):
        unsupported(
            "Python control flow (if/while/and/or/not) on a traced value",
            "Write branches with np.where(condition, a, b) (or np.maximum/np.minimum/np.clip).",
        )

    def _needs_number(self, *args, **kwargs):
        unsupported(
            "Converting a traced value to a Python number (float(), int(), math.* functions)",
            "Use numpy functions instead, e.g. np.sin(x) rather than math.sin(x); to fill an array "
            "element by element, create it with np.zeros_like(x) rather than np.zeros/np.empty.",
        )

    __float__ = __int__ = __index__ = __complex__ = _needs_number
    item = tolist = _needs_number

    def __array__(self, dtype=None, copy=None):
        unsupported(
            "Converting a traced array to a plain numpy array (e.g. storing it into an array made by np.zeros/np.empty)",
            "Create the array from the traced input instead, e.g. out = np.zeros_like(x), or build it with np.array([...]).",
        )

    # -- numpy protocols --------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return RULES.apply_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return RULES.apply_function(func, args, kwargs)

    # -- operators (all go through the ufunc rules) -------------------------
    def __add__(self, other): return np.add(self, other)
    def __radd__(self, other): return np.add(other, self)
    def __sub__(self, other): return np.subtract(self, other)
    def __rsub__(self, other): return np.subtract(other, self)
    def __mul__(self, other): return np.multiply(self, other)
    def __rmul__(self, other): return np.multiply(other, self)
    def __truediv__(self, other): return np.true_divide(self, other)
    def __rtruediv__(self, other): return np.true_divide(other, self)
    def __pow__(self, other): return np.power(self, other)
    def __rpow__(self, other): return np.power(other, self)
    def __matmul__(self, other): return np.matmul(self, other)
    def __rmatmul__(self, other): return np.matmul(other, self)
    def __neg__(self): return np.negative(self)
    def __pos__(self): return self
    def __abs__(self): return np.absolute(self)
    def __lt__(self, other): return np.less(self, other)
    def __le__(self, other): return np.less_equal(self, other)
    def __gt__(self, other): return np.greater(self, other)
    def __ge__(self, other): return np.greater_equal(self, other)
    def __eq__(self, other): return np.equal(self, other)
    def __ne__(self, other): return np.not_equal(self, other)
    def __and__(self, other): return np.logical_and(self, other)
    def __or__(self, other): return np.logical_or(self, other)
    def __invert__(self): return np.logical_not(self)
    def __floordiv__(self, other): return np.floor_divide(self, other)
    def __mod__(self, other): return np.remainder(self, other)
    def __rmod__(self, other): return np.remainder(other, self)
    def __rfloordiv__(self, other): return np.floor_divide(other, self)

    # In-place operators write through, so they also update the array a view
    # was taken from (``tail = out[1:]; tail += x[1:]``), as numpy does.
    def _in_place(self, ufunc, other):
        self._values[...] = as_values(ufunc(self, other))
        return self

    def __iadd__(self, other): return self._in_place(np.add, other)
    def __isub__(self, other): return self._in_place(np.subtract, other)
    def __imul__(self, other): return self._in_place(np.multiply, other)
    def __itruediv__(self, other): return self._in_place(np.true_divide, other)
    def __ipow__(self, other): return self._in_place(np.power, other)
    def __imatmul__(self, other): return self._in_place(np.matmul, other)

    __hash__ = None  # mutable, like ndarray

    # -- array methods -----------------------------------------------------
    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return TracerArray(self._values.reshape(shape, order=order))

    def transpose(self, *axes):
        return np.transpose(self, axes or None)

    def ravel(self, order="C"):
        return TracerArray(self._values.ravel(order))

    def flatten(self, order="C"):
        return TracerArray(self._values.flatten(order))

    def copy(self, order="C"):
        return TracerArray(self._values.copy(order))

    def squeeze(self, axis=None):
        return TracerArray(self._values.squeeze(axis))

    def swapaxes(self, a, b):
        return TracerArray(self._values.swapaxes(a, b))

    def astype(self, dtype, *args, **kwargs):
        if np.dtype(dtype).kind != "f":
            unsupported(f"astype({np.dtype(dtype)})", "Traced values are real floating-point numbers.")
        return self

    def sum(self, axis=None, keepdims=False, **kwargs):
        return np.sum(self, axis=axis, keepdims=keepdims, **kwargs)

    def prod(self, axis=None, keepdims=False, **kwargs):
        return np.prod(self, axis=axis, keepdims=keepdims, **kwargs)

    def mean(self, axis=None, keepdims=False, **kwargs):
        return np.mean(self, axis=axis, keepdims=keepdims, **kwargs)

    def max(self, axis=None, out=None, keepdims=False, **kwargs):
        return np.max(self, axis=axis, out=out, keepdims=keepdims, **kwargs)

    def min(self, axis=None, out=None, keepdims=False, **kwargs):
        return np.min(self, axis=axis, out=out, keepdims=keepdims, **kwargs)

    def var(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kwargs):
        return np.var(self, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims, **kwargs)

    def std(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kwargs):
        return np.std(self, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims, **kwargs)

    def cumsum(self, axis=None):
        return np.cumsum(self, axis=axis)

    def cumprod(self, axis=None):
        return np.cumprod(self, axis=axis)

    def sort(self, axis=-1, kind=None, order=None):
        """In place, as ndarray.sort."""
        self._values[...] = np.sort(self, axis=axis)._values

    def round(self, decimals=0):
        return np.round(self, decimals)

    def conj(self):
        return self

    conjugate = conj
    real = property(lambda self: self)
    imag = property(lambda self: np.zeros_like(self))

    def dot(self, other):
        return np.dot(self, other)

    def clip(self, a_min=None, a_max=None):
        return np.clip(self, a_min, a_max)


# --------------------------------------------------------------------------
# np.array / np.asarray while tracing

_tracing = threading.local()
_ORIGINALS = {name: getattr(np, name) for name in ("array", "asarray", "asanyarray", "ascontiguousarray")}


def _traced_constructor(name: str):
    original = _ORIGINALS[name]

    @functools.wraps(original)
    def constructor(obj, *args, **kwargs):
        if getattr(_tracing, "active", False) and holds_tracer(obj):
            dtype = kwargs.get("dtype", args[0] if args else None)
            if dtype is not None and np.dtype(dtype).kind not in "f":
                unsupported(f"np.{name}(..., dtype={np.dtype(dtype)})", "Traced values are real floats; drop the dtype.")
            return TracerArray(as_values(obj).copy())
        return original(obj, *args, **kwargs)

    return constructor


def tracing() -> bool:
    """Whether this thread is tracing a function now."""
    return getattr(_tracing, "active", False)


def holds_tracer(obj) -> bool:
    """A TracerArray, or a (nested) list/tuple with one inside; ndarrays never
    (numpy's own Python code calls np.asarray on object arrays and must get
    numpy's behaviour)."""
    if isinstance(obj, TracerArray):
        return True
    return isinstance(obj, (list, tuple)) and any(holds_tracer(item) for item in obj)


# (module, attribute) -> (numpy's original, the replacement while tracing)
_PATCHES = {(np, name): (original, _traced_constructor(name)) for name, original in _ORIGINALS.items()}


def patch_while_tracing(module, name: str, replacement) -> None:
    """Install ``replacement`` as ``module.name`` while any thread traces.

    For what numpy's protocols cannot intercept: ``np.r_[...]`` and numpy
    functions handed a Python list of traced values (``np.mean([a, b])``:
    numpy converts the list before dispatching). A replacement must behave
    exactly like the original when :func:`tracing` is false (other threads)."""
    _PATCHES[(module, name)] = (getattr(module, name), replacement)
_install_lock = threading.Lock()
_install_count = 0


class TracingContext:
    """Marks this thread as tracing and installs the np.array replacements."""

    def __enter__(self):
        global _install_count
        with _install_lock:
            if _install_count == 0:
                for (module, name), (_, replacement) in _PATCHES.items():
                    setattr(module, name, replacement)
            _install_count += 1
        _tracing.active = True
        return self

    def __exit__(self, *exc):
        global _install_count
        _tracing.active = False
        with _install_lock:
            _install_count -= 1
            if _install_count == 0:
                for (module, name), (original, _) in _PATCHES.items():
                    setattr(module, name, original)
        return False


def _enough(shape, index) -> str:
    """A shape suggestion that an integer ``index`` would fit (the declared one when none can be given)."""
    items = index if isinstance(index, tuple) else (index,)
    if len(items) > len(shape) or not all(isinstance(item, (int, np.integer)) for item in items):
        return str(shape[0] if len(shape) == 1 else shape)
    grown = tuple(max(extent, item + 1 if item >= 0 else -item) for extent, item in zip(shape, items)) + shape[len(items):]
    return str(grown[0] if len(grown) == 1 else grown)


def _user_location() -> str:
    """' (at file:line in function)' for the innermost frame of user code."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not (filename.startswith(_PACKAGE_DIR) or filename.startswith(_NUMPY_DIR) or "sympy" in filename):
            if not filename.startswith("<frozen"):
                return f" (at {frame.f_code.co_filename}:{frame.f_lineno}, in {frame.f_code.co_name})"
        frame = frame.f_back
    return ""
