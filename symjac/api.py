"""The public entry points: ``jacobian()`` ties the pipeline together.

    trace -> differentiate -> simplify -> render -> build -> runtime

:func:`generate` runs the symbolic half and rendering (shared with the codegen
command); :func:`jacobian` adds building and wraps the module for calling.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from .build import BuildOptions, compiler_works, load
from .diff import Derivative, differentiate
from .errors import ShapeError
from .progress import Reporter
from .render import BACKENDS, CHUNK_OPERATIONS, CHUNK_STATEMENTS, Source, render
from .runtime import Jacobian
from .simplify import KINDS, Program, count_operations, simplify
from .trace import Traced, trace

__all__ = ["Generated", "build_derivative", "generate", "jacobian", "resolve_wrt"]


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


@dataclass(frozen=True, eq=False)
class Generated:
    """Everything up to the rendered source, for building or writing out."""

    derivative: Derivative
    wrt_is_tuple: bool
    programs: tuple[Program, ...]
    source: Source


def generate(function, shapes, named_shapes, *, wrt, backend, kinds, reporter=None, standalone=False) -> Generated:
    """Trace, differentiate, simplify and render, reporting each stage."""
    reporter = reporter or Reporter(enabled=False)
    with reporter.stage("traced") as report:
        traced = trace(function, *shapes, **named_shapes)
        indices, wrt_is_tuple = resolve_wrt(traced, wrt)
        inputs = sum(a.size for a in traced.arguments)
        outputs = sum(output.size for output in traced.outputs)
        report.append(f"{outputs} outputs, {inputs} inputs")
    with reporter.stage("differentiated") as report:
        derivative = differentiate(traced, indices)
        columns = sum(traced.arguments[j].size for j in indices)
        report.append(f"{derivative.nonzeros} non-zeros of {outputs} x {columns}")
    with reporter.stage("simplified") as report:
        programs = tuple(simplify(derivative, kind) for kind in KINDS if kind in kinds)
        if reporter.enabled:
            for program in programs:
                before = count_operations(expr for _, _, expr in _entries(derivative, program))
                after = count_operations([e for _, e in program.temporaries] + [e for _, _, e in program.results])
                report.append(f"{program.kind}: {before} -> {after} operations, {len(program.temporaries)} temporaries")
    with reporter.stage("rendered") as report:
        source = render(derivative, programs, backend, wrt_is_tuple=wrt_is_tuple, standalone=standalone)
        report.append(f"{source.text.count(chr(10))} lines of {backend}")
        if source.parts:
            lines = sum(text.count(chr(10)) for _, text in source.parts)
            report.append(f"large kernels split into {len(source.parts)} C files ({lines} lines) of "
                          f"chunk functions of at most {CHUNK_STATEMENTS} statements, {CHUNK_OPERATIONS} operations")
    return Generated(derivative, wrt_is_tuple, programs, source)


def _entries(derivative: Derivative, program: Program):
    """The unsimplified expressions a program computes, for operation counts."""
    for buffer in program.buffers:
        if buffer.argument is None:
            yield from ((buffer, i, e) for i, e in enumerate(derivative.traced.outputs[buffer.output].flat) if e != 0)
        else:
            block = derivative.blocks[buffer.output][derivative.wrt.index(buffer.argument)]
            yield from ((buffer, i, e) for i, e in block.entries)


def _choose_backend(backend):
    if backend is None:
        if compiler_works():
            return "cython"
        warnings.warn("no working C compiler found: symjac falls back to the numpy backend", RuntimeWarning, stacklevel=3)
        return "numpy"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    return backend


def jacobian(
    function,
    *shapes,
    wrt=None,
    backend=None,
    kernels=("jacobian",),
    flags=None,
    native=False,
    verbose=False,
    **named_shapes,
) -> Jacobian:
    """Compile the exact Jacobian of a numpy-style ``function``.

    Shapes are given positionally or by parameter name (``y=3, k=3``): an int
    ``n`` means ``(n,)``, a tuple is a shape, ``()`` a scalar. ``wrt`` is an
    argument name, index, or a tuple of them (default: the first argument);
    the other arguments are runtime parameters. ``backend`` is "cython",
    "numpy" or None (Cython where a C compiler works, else numpy with a
    warning). ``kernels`` lists the kernels to compile: "jacobian" and any of
    "function", "function_and_jacobian" (then ``jac.function(...)`` and
    ``jac.function_and_jacobian(...)`` work). ``flags`` replaces the default C
    compiler flags (``("-O3",)``) and ``native=True`` adds ``-march=native``;
    both are part of the cache key.
    ``verbose=True`` reports each stage on stderr.

    The returned :class:`~symjac.runtime.Jacobian` is called with the
    function's arguments; leading batch dimensions broadcast like a gufunc.
    """
    backend = _choose_backend(backend)
    kinds = tuple(kernels)
    if not kinds or any(kind not in KINDS for kind in kinds) or "jacobian" not in kinds:
        raise ValueError(f"kernels must include 'jacobian' and be taken from {KINDS}, got {kernels!r}")
    reporter = Reporter(enabled=bool(verbose))
    generated = generate(function, shapes, named_shapes, wrt=wrt, backend=backend, kinds=kinds, reporter=reporter)
    options = BuildOptions(flags=tuple(flags) if flags is not None else BuildOptions.flags, native=bool(native))
    with reporter.stage("loaded" if backend == "numpy" else "compiled"):
        module = load(generated.source, options)
    return Jacobian(module, generated.source, generated.derivative, generated.wrt_is_tuple)
