"""The public entry points: one per derivative kind, all built the same way.

    trace -> differentiate (derivatives.py) -> simplify -> render -> build -> runtime

For compiled backends, the rendered source of each traced program is kept in
the build cache (``sources.py``): when the traced program was built before,
differentiate, simplify and render are skipped and the derivative object
computes its symbolic derivative only when asked (``.derivative``,
``.traced()``).

:func:`generate` runs the symbolic half and rendering (shared with the codegen
command); :func:`jacobian`, :func:`hessian`, :func:`gradient`, :func:`jvp` and
:func:`vjp` add building and wrap the module for calling. The first argument
may be a numpy-style function (then shapes are given), a
:class:`~symjac.trace.Traced`, or a compiled derivative built in this process
(its :meth:`~symjac.runtime.Compiled.traced` form: a derivative is a function
and can be differentiated again).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from .emit.backends import BACKENDS
from .build.builder import BuildOptions, load
from .build.cache import cache_dir, private_dir
from .derive.derivatives import DERIVATIVES
from .derive.diff import Derivative
from .errors import ShapeError
from .progress import Reporter
from .emit.render import render
from .emit.source import Source
from .run.runtime import JVP, VJP, Compiled, Gradient, Hessian, Jacobian
from .derive.kinds import kernel_spec
from .build.sources import cached_source, source_key, store_source
from .emit.simplify import CHUNK_OPERATIONS, CHUNK_STATEMENTS, KINDS, Program, count_operations, simplify
from .build.toolchain import compiler_works
from .front.trace import Traced, trace

__all__ = ["Generated", "as_traced", "generate", "gradient", "hessian", "jacobian", "jvp", "resolve_wrt", "vjp"]


def as_traced(function, shapes=(), named_shapes=None) -> Traced:
    """The traced form of ``function``: traced here, or already symbolic."""
    if isinstance(function, (Traced, Compiled)):
        if shapes or named_shapes:
            raise ShapeError("shapes are known for a traced function or a derivative: give none")
        return function if isinstance(function, Traced) else function.traced()
    return trace(function, *shapes, **(named_shapes or {}))


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


def build_derivative(function, shapes, named_shapes, wrt, what="jacobian") -> tuple[Derivative, bool]:
    """Trace and differentiate: the symbolic half of the pipeline."""
    traced = as_traced(function, shapes, named_shapes)
    indices, wrt_is_tuple = resolve_wrt(traced, wrt)
    return DERIVATIVES[what][0](traced, indices, wrt_is_tuple), wrt_is_tuple


@dataclass(frozen=True, eq=False)
class Generated:
    """Everything up to the rendered source, for building or writing out."""

    derivative: Derivative
    programs: tuple[Program, ...]
    source: Source


def generate(function, shapes, named_shapes, *, wrt, backend, kinds=None, what="jacobian", reporter=None,
             standalone=False) -> Generated:
    """Trace, differentiate, simplify and render, reporting each stage.

    ``what`` names the derivative (see ``derivatives.py``); ``kinds`` the
    kernels to compile, by default the ones that derivative needs."""
    reporter = reporter or Reporter(enabled=False)
    traced, indices, wrt_is_tuple = _trace_stage(function, shapes, named_shapes, wrt, reporter)
    return _generate_traced(traced, indices, wrt_is_tuple, backend=backend, kinds=kinds, what=what,
                            reporter=reporter, standalone=standalone)


def _trace_stage(function, shapes, named_shapes, wrt, reporter):
    with reporter.stage("traced") as report:
        traced = as_traced(function, shapes, named_shapes)
        indices, wrt_is_tuple = resolve_wrt(traced, wrt)
        inputs = sum(a.size for a in traced.arguments)
        outputs = sum(output.size for output in traced.outputs)
        report.append(f"{outputs} outputs, {inputs} inputs")
    return traced, indices, wrt_is_tuple


def _generate_traced(traced, indices, wrt_is_tuple, *, backend, kinds, what, reporter, standalone) -> Generated:
    """The stages after tracing: differentiate, simplify, render."""
    transform, default_kinds, title = DERIVATIVES[what]
    outputs = sum(output.size for output in traced.outputs)
    with reporter.stage("differentiated") as report:
        derivative = transform(traced, indices, wrt_is_tuple)
        columns = sum(traced.arguments[j].size for j in indices)
        if derivative.order:
            report.append(f"{derivative.nonzeros} non-zeros of {outputs} x {columns}"
                          + ("" if derivative.order == 1 else f" x {columns}"))
        else:
            report.append(f"{what}: {sum(o.size for o in derivative.traced.outputs)} outputs")
    with reporter.stage("simplified") as report:
        kinds = tuple(kinds or default_kinds)
        programs = tuple(simplify(derivative, kind) for kind in kinds)
        if reporter.enabled:
            for program in programs:
                before = count_operations(expr for output in kernel_spec(derivative, program.kind).outputs
                                          for _, expr in output.entries)
                report.append(f"{program.kind}: {before} -> {program.operations} operations, "
                              f"{len(program.temporaries)} temporaries")
    with reporter.stage("rendered") as report:
        source = render(derivative, programs, backend, standalone=standalone, title=title,
                        alias=what if derivative.order == 0 else None)
        report.append(f"{source.text.count(chr(10))} lines of {backend}")
        if source.parts:
            lines = sum(text.count(chr(10)) for _, text in source.parts)
            report.append(f"large kernels split into {len(source.parts)} C files ({lines} lines) of chunk "
                          f"functions of at most {CHUNK_STATEMENTS} statements, {CHUNK_OPERATIONS} operations")
    return Generated(derivative, programs, source)


def _choose_backend(backend):
    if backend is None:
        if compiler_works():
            return "cython"
        warnings.warn("no working C compiler found: symjac falls back to the numpy backend", RuntimeWarning, stacklevel=4)
        return "numpy"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {tuple(BACKENDS)} or None, got {backend!r}")
    return backend


def _compile(cls, what, function, shapes, named_shapes, *, wrt, backend, kinds, flags, native, vector_math,
             verbose) -> Compiled:
    backend = _choose_backend(backend)
    reporter = Reporter(enabled=bool(verbose))
    options = BuildOptions(flags=tuple(flags) if flags is not None else BuildOptions.flags, native=bool(native),
                           vector_math=bool(vector_math))
    traced, indices, wrt_is_tuple = _trace_stage(function, shapes, named_shapes, wrt, reporter)
    transform, default_kinds, _ = DERIVATIVES[what]
    kinds = tuple(kinds or default_kinds)
    # Compiled backends keep the rendered source of each traced program in
    # the build cache (sources.py): a hit skips differentiate, simplify and
    # render; the derivative is then computed only if someone asks for it.
    remembered = BACKENDS[backend].compiled
    source = derivative = key = root = None
    if remembered:
        with reporter.stage("looked up") as report:
            root = private_dir(options.cache_dir or cache_dir())
            key = source_key(traced, indices, wrt_is_tuple, what, kinds, backend)
            source = cached_source(root, key)
            report.append("rendered source found in the cache" if source else "not built before")
    if source is None:
        generated = _generate_traced(traced, indices, wrt_is_tuple, backend=backend, kinds=kinds, what=what,
                                     reporter=reporter, standalone=False)
        source, derivative = generated.source, generated.derivative
    with reporter.stage("compiled" if BACKENDS[backend].compiled else "loaded"):
        module = load(source, options)
    if remembered and derivative is not None:
        store_source(root, key, source)
    derive = None if derivative is not None else (lambda: transform(traced, indices, wrt_is_tuple))
    return cls(module, source, options, derivative, derive=derive)


_COMMON_DOCS = """
    Shapes are given positionally or by parameter name (``y=3, k=3``): an int
    ``n`` means ``(n,)``, a tuple is a shape, ``()`` a scalar; none when
    ``function`` is a traced function or a derivative built by symjac. ``wrt``
    is an argument name, index, or a tuple of them (default: the first
    argument); the other arguments are runtime parameters. ``backend`` is
    "cython", "numpy" or None (Cython where a C compiler works, else numpy
    with a warning). ``flags`` replaces the default C compiler flags
    (``("-O3", "-fno-math-errno", "-ffp-contract=off")``). ``native=True`` (the default) builds
    for this machine's CPU and its widest SIMD lanes (``-march=native``; the
    cache key names the CPU); ``native=False`` builds portable code.
    ``vector_math=False`` keeps the batch loop's SIMD lanes on scalar libm
    (glibc's vector libm differs by up to 4 ulp). All are part of the cache
    key. ``verbose=True`` reports each stage on stderr. Calls take the
    function's arguments; leading batch dimensions broadcast like a gufunc,
    ``out=`` takes preallocated results, ``num_threads=`` limits threads.
"""


def jacobian(function, *shapes, wrt=None, backend=None, kernels=("jacobian",), flags=None, native=True,
             vector_math=True, verbose=False, **named_shapes) -> Jacobian:
    """Compile the exact Jacobian of a numpy-style ``function``.

    ``kernels`` lists the kernels to compile: "jacobian" and any of
    "function", "function_and_jacobian" (then ``jac.function(...)`` and
    ``jac.function_and_jacobian(...)`` work).
    """
    kinds = tuple(kernels)
    if not kinds or any(kind not in KINDS for kind in kinds) or "jacobian" not in kinds:
        raise ValueError(f"kernels must include 'jacobian' and be taken from {KINDS}, got {kernels!r}")
    return _compile(Jacobian, "jacobian", function, shapes, named_shapes, wrt=wrt, backend=backend, kinds=kinds,
                    flags=flags, native=native, vector_math=vector_math, verbose=verbose)


def hessian(function, *shapes, wrt=None, backend=None, flags=None, native=True, vector_math=True, verbose=False,
            **named_shapes) -> Hessian:
    """Compile the exact, symmetric Hessian of ``function``: output shape +
    x.shape + x.shape; nested blocks ``H[i][j]`` for a tuple ``wrt``."""
    return _compile(Hessian, "hessian", function, shapes, named_shapes, wrt=wrt, backend=backend, kinds=None,
                    flags=flags, native=native, vector_math=vector_math, verbose=verbose)


def gradient(function, *shapes, wrt=None, backend=None, flags=None, native=True, vector_math=True, verbose=False,
             **named_shapes) -> Gradient:
    """Compile the gradient of a scalar ``function`` by reverse mode: shaped
    like ``wrt`` (a tuple of arrays for a tuple ``wrt``)."""
    return _compile(Gradient, "gradient", function, shapes, named_shapes, wrt=wrt, backend=backend, kinds=None,
                    flags=flags, native=native, vector_math=vector_math, verbose=verbose)


def jvp(function, *shapes, wrt=None, backend=None, flags=None, native=True, vector_math=True, verbose=False,
        **named_shapes) -> JVP:
    """Compile J v: ``jvp(*args, v)`` with ``v`` shaped like ``wrt`` (one
    tangent per argument for a tuple ``wrt``), shaped like the output."""
    return _compile(JVP, "jvp", function, shapes, named_shapes, wrt=wrt, backend=backend, kinds=None,
                    flags=flags, native=native, vector_math=vector_math, verbose=verbose)


def vjp(function, *shapes, wrt=None, backend=None, flags=None, native=True, vector_math=True, verbose=False,
        **named_shapes) -> VJP:
    """Compile uᵀJ by reverse mode: ``vjp(*args, u)`` with ``u`` shaped like
    the output (one per output for a tuple of outputs), shaped like ``wrt``."""
    return _compile(VJP, "vjp", function, shapes, named_shapes, wrt=wrt, backend=backend, kinds=None,
                    flags=flags, native=native, vector_math=vector_math, verbose=verbose)


for _entry in (jacobian, hessian, gradient, jvp, vjp):
    _entry.__doc__ += _COMMON_DOCS
