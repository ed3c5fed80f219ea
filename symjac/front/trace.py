"""Stage 1 — trace: run the user's numpy function on symbolic arrays.

Each argument becomes a :class:`~symjac.tracer.TracerArray`: an object-dtype
array of sympy symbols wrapped in a small type that implements numpy's
``__array_ufunc__`` and ``__array_function__`` protocols (``tracer.py``).
Ordinary numpy code run on it builds sympy expressions instead of numbers; the
per-operation rules live in ``ops.py``, imported here so they are registered.

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

import inspect
from dataclasses import dataclass

import numpy as np
import sympy

from . import ops  # noqa: F401 - registers the numpy rules with the tracer
from ..errors import ShapeError, TracingError
from .names import check_identifier
from .tracer import TracerArray, TracingContext, as_values

__all__ = ["Argument", "Traced", "TracerArray", "trace", "normalize_shape"]

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
    tracers = [TracerArray(argument.symbols.copy(), argument.name) for argument in arguments]
    with TracingContext():
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


def _has_undefined(expr, seen: set) -> bool:
    """Complex infinity or NaN anywhere in ``expr`` (a constant division by zero),
    walking the expression DAG once: ``expr.has`` walks the tree, which for
    repeatedly shared subexpressions is exponentially larger. ``seen`` holds
    nodes already found clean (shared between the output elements)."""
    stack = [expr]
    while stack:
        node = stack.pop()
        if node is sympy.S.ComplexInfinity or node is sympy.S.NaN:
            return True
        if node.args and node not in seen:
            seen.add(node)
            stack.extend(node.args)
    return False


def _output_values(value) -> np.ndarray:
    values = as_values(value)
    clean: set = set()
    for index, item in np.ndenumerate(values):
        if not isinstance(item, sympy.Expr):
            raise TracingError(
                f"output element {list(index)} is {item!r} (a {type(item).__name__}), not a number or expression"
            )
        if _has_undefined(item, clean):
            raise TracingError(
                f"output element {list(index)} is {item}: a division by a constant zero (or another undefined "
                "constant) was traced; guard it with np.where or change the constant"
            )
    return values
