"""The public entry points: ``jacobian()`` ties the pipeline together.

    trace -> differentiate -> simplify -> render -> build -> runtime
"""

from __future__ import annotations

import warnings

from .build import BuildOptions, compiler_works, load
from .diff import Derivative, differentiate
from .errors import ShapeError
from .render import BACKENDS, render
from .runtime import Jacobian
from .simplify import KINDS, simplify
from .trace import Traced, trace

__all__ = ["jacobian", "resolve_wrt", "build_derivative"]


def resolve_wrt(traced: Traced, wrt) -> tuple[tuple[int, ...], bool]:
    """``wrt`` (name, index or tuple of them; None = first argument) -> indices."""
    names = [argument.name for argument in traced.arguments]
    if wrt is None:
        return (0,), False
    is_tuple = isinstance(wrt, (tuple, list))
    indices = []
    for item in (wrt if is_tuple else (wrt,)):
        if isinstance(item, str):
            if item not in names:
                raise ShapeError(f"wrt={item!r} names no argument of {traced.function_name} (arguments: {', '.join(names)})")
            indices.append(names.index(item))
        elif isinstance(item, int) and not isinstance(item, bool):
            if not -len(names) <= item < len(names):
                raise ShapeError(f"wrt={item} is out of range for {len(names)} arguments")
            indices.append(item % len(names))
        else:
            raise ShapeError(f"wrt must be an argument name, an index or a tuple of them, got {item!r}")
    if not indices:
        raise ShapeError("wrt must name at least one argument")
    if len(set(indices)) != len(indices):
        raise ShapeError(f"wrt names an argument twice: {wrt!r}")
    return tuple(indices), is_tuple


def build_derivative(function, shapes, named_shapes, wrt) -> tuple[Derivative, bool]:
    """Trace and differentiate: the symbolic half of the pipeline."""
    traced = trace(function, *shapes, **named_shapes)
    indices, wrt_is_tuple = resolve_wrt(traced, wrt)
    return differentiate(traced, indices), wrt_is_tuple


def _choose_backend(backend):
    if backend is None:
        if compiler_works():
            return "cython"
        warnings.warn("no working C compiler found: symjac falls back to the numpy backend", RuntimeWarning, stacklevel=3)
        return "numpy"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    return backend


def jacobian(function, *shapes, wrt=None, backend=None, kernels=("jacobian",), flags=None, **named_shapes) -> Jacobian:
    """Compile the exact Jacobian of a numpy-style ``function``.

    Shapes are given positionally or by parameter name (``y=3, k=3``): an int
    ``n`` means ``(n,)``, a tuple is a shape, ``()`` a scalar. ``wrt`` is an
    argument name, index, or a tuple of them (default: the first argument);
    the other arguments are runtime parameters. ``backend`` is "cython",
    "numpy" or None (Cython where a C compiler works, else numpy with a
    warning). ``kernels`` lists what to compile besides nothing else: any of
    "jacobian", "function", "function_and_jacobian". ``flags`` replaces the
    default C compiler flags (``("-O3",)``); they are part of the cache key.

    The returned :class:`~symjac.runtime.Jacobian` is called with the
    function's arguments; leading batch dimensions broadcast like a gufunc.
    """
    backend = _choose_backend(backend)
    kinds = tuple(kernels)
    if not kinds or any(kind not in KINDS for kind in kinds) or "jacobian" not in kinds:
        raise ValueError(f"kernels must include 'jacobian' and be taken from {KINDS}, got {kernels!r}")
    derivative, wrt_is_tuple = build_derivative(function, shapes, named_shapes, wrt)
    programs = tuple(simplify(derivative, kind) for kind in KINDS if kind in kinds)
    source = render(derivative, programs, backend, wrt_is_tuple=wrt_is_tuple)
    options = BuildOptions() if flags is None else BuildOptions(flags=tuple(flags))
    module = load(source, options)
    return Jacobian(module, source, derivative, wrt_is_tuple)
