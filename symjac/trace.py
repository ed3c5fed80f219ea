"""Stage 1 — trace: run the user's numpy function on symbolic arrays.

Each argument becomes a :class:`TracerArray`: an object-dtype array of sympy
symbols wrapped in a small type that implements numpy's ``__array_ufunc__`` and
``__array_function__`` protocols. Ordinary numpy code run on it builds sympy
expressions instead of numbers; the per-operation rules live in ``ops.py``.

Produces a :class:`Traced` (arguments, their symbols, the output expressions),
consumed by ``diff.py``. Nothing downstream of this module sees the user's
function.

Decisions worth knowing:
- A Python ``tuple`` returned by the function means several outputs; a list
  (or nested lists) is one array output, as ``np.array`` would read it.
- A sympy ``Matrix`` with a single column is a vector output, as in
  ``Matrix.jacobian``.
- ``np.array``/``np.asarray`` cannot be intercepted through numpy's protocols,
  so while a function is traced in *this thread* they are replaced by versions
  that build a TracerArray when a traced value is inside; other threads, and
  calls without traced values, get numpy's own functions unchanged.
- Constants (captured numpy arrays, Python floats) are folded in exactly:
  integral floats become sympy Integers, other floats sympy Floats holding the
  same binary double.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import threading
from dataclasses import dataclass

import numpy as np
import sympy

from .errors import ShapeError, TracingError
from .names import check_identifier

__all__ = ["Argument", "Traced", "TracerArray", "trace", "normalize_shape"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__))


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
        return _scalar_array(value)
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


def _scalar_array(expr) -> np.ndarray:
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


def _unsupported(what: str, fix: str):
    raise TracingError(f"{what} cannot be traced. {fix}{_user_location()}")


class TracerArray:
    """A numpy-like array of sympy expressions that records numpy calls.

    Only numpy's dispatch protocols and the usual array methods are provided;
    anything that would need a concrete number (``if``, ``float()``,
    ``math.sin``) raises :class:`~symjac.TracingError` with the fix.
    """

    __array_priority__ = 1000.0
    __slots__ = ("_values",)

    def __init__(self, values: np.ndarray) -> None:
        self._values = values

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
            _unsupported("Indexing with a traced value", "Indices must be constants; use np.where to select values.")
        result = self._values[index]
        if not isinstance(result, np.ndarray):
            result = _scalar_array(result)
        return TracerArray(result)

    def __setitem__(self, index, value) -> None:
        if contains_tracer(index):
            _unsupported("Indexing with a traced value", "Indices must be constants; use np.where to select values.")
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
        _unsupported(
            "Python control flow (if/while/and/or/not) on a traced value",
            "Write branches with np.where(condition, a, b) (or np.maximum/np.minimum/np.clip).",
        )

    def _needs_number(self, *args, **kwargs):
        _unsupported(
            "Converting a traced value to a Python number (float(), int(), math.* functions)",
            "Use numpy functions instead, e.g. np.sin(x) rather than math.sin(x); to fill an array "
            "element by element, create it with np.zeros_like(x) rather than np.zeros/np.empty.",
        )

    __float__ = __int__ = __index__ = __complex__ = _needs_number
    item = tolist = _needs_number

    def __array__(self, dtype=None, copy=None):
        _unsupported(
            "Converting a traced array to a plain numpy array (e.g. storing it into an array made by np.zeros/np.empty)",
            "Create the array from the traced input instead, e.g. out = np.zeros_like(x), or build it with np.array([...]).",
        )

    # -- numpy protocols --------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from . import ops

        return ops.apply_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from . import ops

        return ops.apply_function(func, args, kwargs)

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
            _unsupported(f"astype({np.dtype(dtype)})", "Traced values are real floating-point numbers.")
        return self

    def sum(self, axis=None, keepdims=False, **kwargs):
        return np.sum(self, axis=axis, keepdims=keepdims, **kwargs)

    def prod(self, axis=None, keepdims=False, **kwargs):
        return np.prod(self, axis=axis, keepdims=keepdims, **kwargs)

    def mean(self, axis=None, keepdims=False, **kwargs):
        return np.mean(self, axis=axis, keepdims=keepdims, **kwargs)

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
        if getattr(_tracing, "active", False) and _holds_tracer(obj):
            dtype = kwargs.get("dtype", args[0] if args else None)
            if dtype is not None and np.dtype(dtype).kind not in "f":
                _unsupported(f"np.{name}(..., dtype={np.dtype(dtype)})", "Traced values are real floats; drop the dtype.")
            return TracerArray(as_values(obj).copy())
        return original(obj, *args, **kwargs)

    return constructor


def _holds_tracer(obj) -> bool:
    """A TracerArray, or a (nested) list/tuple with one inside; ndarrays never
    (numpy's own Python code calls np.asarray on object arrays and must get
    numpy's behaviour)."""
    if isinstance(obj, TracerArray):
        return True
    return isinstance(obj, (list, tuple)) and any(_holds_tracer(item) for item in obj)


_REPLACEMENTS = {name: _traced_constructor(name) for name in _ORIGINALS}
_install_lock = threading.Lock()
_install_count = 0


class _TracingContext:
    """Marks this thread as tracing and installs the np.array replacements."""

    def __enter__(self):
        global _install_count
        with _install_lock:
            if _install_count == 0:
                for name, replacement in _REPLACEMENTS.items():
                    setattr(np, name, replacement)
            _install_count += 1
        _tracing.active = True
        return self

    def __exit__(self, *exc):
        global _install_count
        _tracing.active = False
        with _install_lock:
            _install_count -= 1
            if _install_count == 0:
                for name, original in _ORIGINALS.items():
                    setattr(np, name, original)
        return False


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


# --------------------------------------------------------------------------
# the stage's data objects


def normalize_shape(spec, name: str = "argument") -> tuple[int, ...]:
    """``3`` -> ``(3,)``, ``(2, 3)`` -> ``(2, 3)``, ``()`` -> ``()``."""
    if isinstance(spec, (bool, np.bool_)):
        raise ShapeError(f"shape of {name} must be an int or a tuple of ints, got {spec!r}")
    if isinstance(spec, (int, np.integer)):
        spec = (int(spec),)
    if not isinstance(spec, (tuple, list)) or not all(
        isinstance(n, (int, np.integer)) and not isinstance(n, (bool, np.bool_)) for n in spec
    ):
        raise ShapeError(f"shape of {name} must be an int or a tuple of ints, got {spec!r}")
    shape = tuple(int(n) for n in spec)
    if any(n < 1 for n in shape):
        raise ShapeError(f"shape of {name} must have positive dimensions, got {shape}")
    return shape


@dataclass(frozen=True, eq=False)
class Argument:
    """One argument of the traced function: its name, shape and symbols."""

    name: str
    shape: tuple[int, ...]
    symbols: np.ndarray  # object array of sympy Symbols with this shape

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True, eq=False)
class Traced:
    """What the function computes: output expressions in terms of the arguments."""

    function_name: str
    arguments: tuple[Argument, ...]
    outputs: tuple[np.ndarray, ...]  # object arrays of sympy expressions
    output_is_tuple: bool

    @property
    def output_shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(output.shape for output in self.outputs)

    def __str__(self) -> str:
        lines = [f"traced {self.function_name}(" + ", ".join(f"{a.name}: {a.shape}" for a in self.arguments) + ")"]
        for number, output in enumerate(self.outputs):
            lines.append(f"  output {number}, shape {output.shape}:")
            for index, expr in np.ndenumerate(output):
                lines.append(f"    {list(index)} = {expr}")
        return "\n".join(lines)


def make_symbols(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Real sympy symbols named like the array elements they stand for: ``y[0]``, ``W[1, 2]``."""
    symbols = np.empty(shape, dtype=object)
    for index in np.ndindex(*shape):
        label = name if not shape else f"{name}[{', '.join(map(str, index))}]"
        symbols[index] = sympy.Symbol(label, real=True)
    return symbols


def parameter_names(function) -> list[str]:
    """The positional parameter names of ``function``, in order."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as error:
        raise TracingError(f"cannot read the signature of {function!r}: {error}") from None
    names = []
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            names.append(parameter.name)
        elif parameter.kind is parameter.VAR_POSITIONAL:
            raise TracingError("functions with *args cannot be traced: give each argument a name")
    return names


def resolve_shapes(function, positional: tuple, named: dict) -> dict[str, tuple[int, ...]]:
    """Match shape specifications to the function's parameters, by position or name."""
    names = parameter_names(function)
    if len(positional) > len(names):
        raise ShapeError(f"{len(positional)} shapes given but the function takes {len(names)} arguments")
    specs = dict(zip(names, positional))
    for name, spec in named.items():
        if name not in names:
            raise ShapeError(f"shape given for {name!r}, which is not an argument of the function (arguments: {', '.join(names)})")
        if name in specs:
            raise ShapeError(f"shape of {name!r} given twice")
        specs[name] = spec
    missing = [name for name in names if name not in specs]
    if missing:
        raise ShapeError(f"no shape given for argument(s) {', '.join(missing)}")
    return {name: normalize_shape(specs[name], f"argument {name!r}") for name in names}


def trace(function, *shapes, **named_shapes) -> Traced:
    """Run ``function`` on symbolic arrays and return its expressions.

    Shapes are given positionally or by parameter name: an int ``n`` means
    ``(n,)``, a tuple is a shape and ``()`` a scalar.

    >>> import numpy as np
    >>> traced = trace(lambda x: np.sin(x[0]) * x[1], 2)
    >>> traced.outputs[0][()]
    x[1]*sin(x[0])
    """
    resolved = resolve_shapes(function, shapes, named_shapes)
    arguments = tuple(
        Argument(check_identifier(name, "argument name"), shape, make_symbols(name, shape))
        for name, shape in resolved.items()
    )
    tracers = [TracerArray(argument.symbols.copy()) for argument in arguments]
    with _TracingContext():
        try:
            result = function(*tracers)
        except TracingError:
            raise
        except Exception as error:
            # numpy wraps some of our errors (e.g. float() of a tracer while
            # storing into a float array) in its own ValueError: unwrap them.
            cause = error.__cause__ or error.__context__
            if isinstance(cause, TracingError):
                raise TracingError(str(cause)) from None
            raise
    output_is_tuple = isinstance(result, tuple)
    outputs = tuple(_output_values(item) for item in (result if output_is_tuple else (result,)))
    if not outputs:
        raise TracingError("the function returned an empty tuple: nothing to differentiate")
    name = getattr(function, "__name__", "function")
    return Traced(name if isinstance(name, str) else "function", arguments, outputs, output_is_tuple)


def _output_values(value) -> np.ndarray:
    values = as_values(value)
    for index, item in np.ndenumerate(values):
        if not isinstance(item, sympy.Expr):
            raise TracingError(
                f"output element {list(index)} is {item!r} (a {type(item).__name__}), not a number or expression"
            )
    return values
