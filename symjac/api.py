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
:class:`~symjac.front.trace.Traced`, or a compiled derivative built in this process
(its :meth:`~symjac.runtime.Compiled.traced` form: a derivative is a function
and can be differentiated again).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

from .emit.backends import BACKENDS, source_language
from .build import warm
from .build.builder import load
from .build.cache import cache_dir, private_dir
from .derive.derivatives import DERIVATIVES
from .derive.diff import Derivative
from .errors import ShapeError
from .progress import Reporter
from .emit.render import render
from .emit.source import Source
from .options import Options
from .run.runtime import RESULTS, Compiled
from .derive.kinds import kernel_spec
from .build.sources import cached_source, source_key, store_source
from .emit.simplify import CHUNK_OPERATIONS, CHUNK_STATEMENTS, Program, count_operations, simplify
from .build.templates import use_template_cache
from .build.toolchain import compiler_works
from .derive.array_calculus import derive as derive_array
from .emit.array_printing import scalar_cost
from .emit.array_render import render_array
from .errors import TracingError
from .front.array_program import LINALG, ArrayFormError, ArrayProgram
from .front.array_trace import trace_array
from .front.fast_floats import fast_float_zero
from .front.trace import Traced, resolve_shapes, trace

log = logging.getLogger("symjac.api")

__all__ = ["ENTRY_POINTS", "ArrayForm", "array_form", "Generated", "as_traced", "compile_derivative", "function", "generate", "gradient", "hessian",
           "jacobian", "jvp", "resolve_wrt", "vjp"]


def as_traced(function, shapes=(), named_shapes=None) -> Traced:
    """The traced form of ``function``: traced here, or already symbolic."""
    if isinstance(function, (Traced, Compiled)):
        if shapes or named_shapes:
            raise ShapeError("shapes are known for a traced function or a derivative: give none")
        return function if isinstance(function, Traced) else function.traced()
    return trace(function, *shapes, **(named_shapes or {}))


def resolve_wrt(traced: Traced, wrt) -> tuple[tuple[int, ...], bool]:
    """``wrt`` (name, index or tuple of them; None = first argument) -> indices."""
    return wrt_indices([argument.name for argument in traced.arguments], traced.function_name, wrt)


def wrt_indices(names, function_name: str, wrt) -> tuple[tuple[int, ...], bool]:
    """``wrt`` against the argument ``names`` of ``function_name`` -> (indices, is a tuple)."""
    names = list(names)
    if wrt is None:
        return (0,), False
    is_tuple = isinstance(wrt, (tuple, list))
    indices = []
    for item in (wrt if is_tuple else (wrt,)):
        if isinstance(item, str):
            if item not in names:
                raise ShapeError(f"wrt={item!r} names no argument of {function_name} (arguments: {', '.join(names)})")
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
    return DERIVATIVES[what].transform(traced, indices, wrt_is_tuple), wrt_is_tuple


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
    with reporter.stage("traced") as report, fast_float_zero():
        traced = as_traced(function, shapes, named_shapes)
        indices, wrt_is_tuple = resolve_wrt(traced, wrt)
        inputs = sum(a.size for a in traced.arguments)
        outputs = sum(output.size for output in traced.outputs)
        report.append(f"{outputs} outputs, {inputs} inputs")
        reporter.traced = traced  # for the hints of a long compile's estimate (build/toolchain.py)
    return traced, indices, wrt_is_tuple


def _generate_traced(traced, indices, wrt_is_tuple, *, backend, kinds, what, reporter, standalone) -> Generated:
    """The stages after tracing: differentiate, simplify, render."""
    with fast_float_zero():  # the symbolic stages build many sympy numbers (front/fast_floats.py)
        return _derive_and_render(traced, indices, wrt_is_tuple, backend=backend, kinds=kinds, what=what,
                                  reporter=reporter, standalone=standalone)


def _derive_and_render(traced, indices, wrt_is_tuple, *, backend, kinds, what, reporter, standalone) -> Generated:
    kind = DERIVATIVES[what]
    outputs = sum(output.size for output in traced.outputs)
    with reporter.stage("differentiated") as report:
        derivative = kind.transform(traced, indices, wrt_is_tuple)
        columns = sum(traced.arguments[j].size for j in indices)
        if derivative.order:
            report.append(f"{derivative.nonzeros} non-zeros of {outputs} x {columns}"
                          + ("" if derivative.order == 1 else f" x {columns}"))
        else:
            report.append(f"{what}: {sum(o.size for o in derivative.traced.outputs)} outputs")
    with reporter.stage("simplified") as report:
        kinds = tuple(kinds or kind.kernels)
        programs = tuple(simplify(derivative, kernel) for kernel in kinds)
        reporter.operations = sum(program.operations for program in programs)
        if reporter.enabled:
            for program in programs:
                before = count_operations(expr for output in kernel_spec(derivative, program.kind).outputs
                                          for _, expr in output.entries)
                report.append(f"{program.kind}: {before} -> {program.operations} operations, "
                              f"{len(program.temporaries)} temporaries")
    with reporter.stage("rendered") as report:
        source = render(derivative, programs, backend, standalone=standalone, title=kind.title,
                        alias=what if derivative.order == 0 else None)
        report.append(f"{source.text.count(chr(10))} lines of {source_language(source)}")
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


def _check_kernels(kind, kernels) -> tuple[str, ...] | None:
    """A caller's ``kernels=``: the derivative's own plus any of its optional ones."""
    if kernels is None:
        return None
    kernels = tuple(kernels)
    if not set(kind.kernels) <= set(kernels) or not set(kernels) <= set(kind.all_kernels):
        raise ValueError(f"kernels must include {kind.kernels!r} and be taken from {kind.all_kernels!r}, "
                         f"got {kernels!r}")
    return kernels


def compile_derivative(what: str, function, shapes=(), named_shapes=None, *, wrt=None, kernels=None,
                       options: Options = Options()) -> Compiled:
    """Build derivative ``what`` (a :data:`~symjac.derive.derivatives.DERIVATIVES`
    name) of ``function`` with ``options``: what every entry point and adapter
    calls. ``kernels``: the kernel kinds to compile (default: the derivative's)."""
    kind = DERIVATIVES[what]
    reporter = Reporter.for_build(options.verbose, kind.title, function)
    array = array_form(what, function, shapes, named_shapes, wrt=wrt, kernels=kernels, options=options,
                       target="numpy", reporter=reporter)
    if array is not None:
        with reporter.stage("loaded"):
            module = load(array.source)
        return RESULTS[what](module, array.source, options.with_(form="array"), rebuild=_rebuild, array=array)
    backend = _choose_backend(options.backend)
    options = options.with_(backend=backend, form="scalar")
    build_options = options.build_options()
    kinds = tuple(kernels or kind.kernels)
    # Warm start (build/warm.py): a function keyed by its code, closure, globals and callees loads without tracing.
    warm_key = warm.function_key(what, function, shapes, named_shapes, wrt, kinds, options) \
        if BACKENDS[backend].compiled else None
    hit = warm.lookup(private_dir(build_options.cache_dir or cache_dir()), warm_key) if warm_key else None
    if hit is not None:
        derive = hit.derive_later(lambda: _trace_stage(function, shapes, named_shapes or {}, wrt, Reporter(False)),
                                  kind.transform, lambda *traced: source_key(*traced, what, kinds, backend))
        with reporter.stage("loaded without tracing"):
            module = load(hit.source, build_options)
        return RESULTS[what](module, hit.source, options, derive=derive, rebuild=_rebuild)
    traced, indices, wrt_is_tuple = _trace_stage(function, shapes, named_shapes or {}, wrt, reporter)
    # Compiled backends keep the rendered source of each traced program in
    # the build cache (sources.py): a hit skips differentiate, simplify and
    # render; the derivative is then computed only if someone asks for it.
    remembered = BACKENDS[backend].compiled
    source = derivative = key = root = None
    if remembered:
        with reporter.stage("looked up") as report:
            root = private_dir(build_options.cache_dir or cache_dir())
            use_template_cache(root)  # compiled templates from earlier processes (build/templates.py)
            key = source_key(traced, indices, wrt_is_tuple, what, kinds, backend)
            source = cached_source(root, key)
            report.append("rendered source found in the cache" if source else "not built before")
    if source is None:
        generated = _generate_traced(traced, indices, wrt_is_tuple, backend=backend, kinds=kinds, what=what,
                                     reporter=reporter, standalone=False)
        source, derivative = generated.source, generated.derivative
    with reporter.stage("compiled" if remembered else "loaded"):
        module = load(source, build_options)
    if remembered and derivative is not None:
        store_source(root, key, source)
    warm.remember(root, warm_key, key)  # warm start: this function -> this source (a no-op without a key)
    derive = None if derivative is not None else (lambda: kind.transform(traced, indices, wrt_is_tuple))
    return RESULTS[what](module, source, options, derivative, derive=derive, rebuild=_rebuild)


@dataclass(frozen=True, eq=False)
class ArrayForm:
    """A derivative in the array form: the traced and derived array programs and their source."""

    traced: ArrayProgram
    derived: ArrayProgram
    source: Source
    wrt: tuple[str, ...]  # names of the differentiated arguments


# form="auto" takes the array form for dense linear algebra (the traced
# program contracts an index: matmul, einsum, tensordot) when the scalar form
# would compile at least this many operations (scalar_cost of the derived
# program). benchmarks/form_crossover.py, decoders k -> 2k -> k, batch 256,
# one run (load 3.4): at k = 8 the scalar form evaluates 4.3x faster and
# builds in 5.5 s; at k = 12 2.8x and 21 s; at k = 16 only 1.4x faster but
# builds in 72 s against 0.04 s; at k = 32 the issue measured it 7x slower
# than the closed form. Past about 8,000 operations a minute of building is
# not repaid by what is left of the scalar form's lead, so the array form is
# taken from there. Again with contraction orders costed for a batch
# (array_program.BATCH_HINT) and the numpy module's matrix products on weights
# as one GEMM (one run, load 1.6, scalar builds cached): k = 8 (2,304
# operations) 1.6x faster in the scalar form, k = 12 (7,440) 1.08x faster in
# the array form, k = 16 (17,280) 2x.
AUTO_ARRAY_MIN_OPERATIONS = 8_000

# symjac.torch (target "torch") trains through the result, and there the
# scalar form's custom operator pays a fixed call plus its compiled forward and
# backward (second-derivative) kernels, while each operation of the array form
# costs torch a few microseconds forward and backward whatever its size. So
# auto takes the array form from this many scalar operations per array
# operation. Measured (one run, load 1.1-2.0, float64, one thread, training
# step of J then (J**2).sum().backward(), batches 1 and 256): decoders
# k -> 2k -> k (8 array operations) are even at k = 2 (7.5 per operation) and
# faster in the array form from k = 4 (42) at every batch, 1.8x at k = 8;
# ten elementwise operations per layer after a 3x3 matmul (43 array
# operations, 3.4 per operation) run 1.7-2.3x faster in the scalar form, and at
# 16 inputs (33 per operation) the array form wins at batch 256, the scalar
# form at batch 1.
AUTO_TORCH_OPERATIONS_PER_ARRAY_OPERATION = 32


def _contracts(program: ArrayProgram) -> bool:
    """Whether ``program`` is dense linear algebra: some einsum sums over an index."""
    for eqn in program.eqns:
        if eqn.prim == "einsum":
            operands, output = dict(eqn.params)["spec"]
            if {label for labels in operands for label in labels} - set(output):
                return True
    return False


def _needs_array_linalg(program: ArrayProgram) -> bool:
    """Whether ``program`` has np.linalg the scalar form cannot expand (it does
    det/inv/solve up to 3x3 only): form="auto" then takes the array form."""
    return any(eqn.prim in LINALG and (eqn.prim not in ("inv", "solve", "det") or eqn.inputs[0].shape[-1] > 3)
               for eqn in program.eqns)


# form="auto" takes the array form for a max or min over at least this many
# elements: the scalar form differentiates it into one comparison per element
# and output, which builds slowly (gradient of max(x) + sum(x**2), one run,
# load 2: 64 elements 1.09 s against 0.06 s in the array form; 256 elements
# 7.3 s against 0.03 s; 10,000 elements 33 s) and runs no faster (1,000
# points: 3.5 ms against 0.23 ms at 64 elements). Not for Hessians: the array
# form's Hessian is dense (n x n), the scalar form keeps the zero second
# derivative of a max sparse.
AUTO_ARRAY_MIN_SELECTED = 64


def _selects_among_many(program: ArrayProgram) -> bool:
    """Whether ``program`` takes a max or min over many elements."""
    return any(eqn.prim in ("amax", "amin")
               and math.prod(eqn.inputs[0].shape[k] for k in dict(eqn.params)["axes"]) >= AUTO_ARRAY_MIN_SELECTED
               for eqn in program.eqns)


def array_form(what: str, function, shapes=(), named_shapes=None, *, wrt=None, kernels=None,
               options: Options = Options(), target: str = "numpy", reporter=None,
               standalone: bool = False) -> ArrayForm | None:
    """Derivative ``what`` of ``function`` in the array form for ``target``, or
    None where ``options.form`` is "scalar", or "auto" and the scalar form fits
    better (logged under SYMJAC_DEBUG). With ``form="array"`` whatever the
    array form cannot do is an error that names it and suggests form="scalar"."""
    # an array program (or an array-form derivative) has no scalar form to fall back on
    given_array = isinstance(function, ArrayProgram) or (isinstance(function, Compiled) and function.form == "array")
    if options.form == "scalar" and not given_array:
        return None
    forced = options.form == "array" or given_array
    reporter = reporter or Reporter(enabled=False)
    kind = DERIVATIVES[what]

    def decline(reason: str, error: Exception | None = None):
        if forced:
            if isinstance(error, ArrayFormError):
                raise error
            raise ArrayFormError(f"{reason}; use form=\"scalar\"") from error
        log.debug("form='auto' takes the scalar form for %s: %s", what, reason)
        return None

    if kernels is not None and tuple(kernels) != kind.kernels:
        return decline(f"the array form compiles only the {', '.join(kind.kernels)} kernel, not {kernels!r}")
    if isinstance(function, Compiled):
        if function.form != "array":
            return decline("a scalar-form derivative is differentiated in the scalar form")
        if shapes or named_shapes:
            raise ShapeError("shapes are known for a derivative: give none")
        traced = function.array.derived
    elif isinstance(function, ArrayProgram):
        traced = function
    elif isinstance(function, Traced):
        return decline("a traced sympy function is differentiated in the scalar form")
    else:
        with reporter.stage("traced (array form)") as report:
            try:
                resolved = resolve_shapes(function, shapes, named_shapes or {})
                traced = trace_array(function, tuple(resolved), tuple(resolved.values()))
            except (TracingError, ShapeError, TypeError, ValueError, IndexError) as error:
                return decline(f"tracing to an array program failed: {error}", error)
            report.append(f"{len(traced.eqns)} array operations")
    indices, wrt_is_tuple = wrt_indices([var.name for var in traced.inputs], traced.name, wrt)
    with reporter.stage("differentiated (array form)") as report:
        derived = derive_array(traced, indices, wrt_is_tuple, what)
        cost = scalar_cost(derived)
        report.append(f"{len(derived.eqns)} array operations; the scalar form would do about {cost:,}")
    forced = forced or _needs_array_linalg(traced) or (what != "hessian" and _selects_among_many(traced))
    if not forced and not _contracts(traced):
        return decline("no matrix products or contractions: elementwise and indexing code keeps its sparsity "
                       "in the scalar form")
    if target == "torch":
        operations = sum(eqn.prim != "literal" for eqn in derived.eqns)
        threshold = AUTO_TORCH_OPERATIONS_PER_ARRAY_OPERATION * operations
    else:
        threshold = AUTO_ARRAY_MIN_OPERATIONS
    if not forced and cost < threshold:
        return decline(f"about {cost:,} scalar operations, below {threshold:,}")
    with reporter.stage("rendered (array form)"):
        source = render_array(traced, derived, what, indices, wrt_is_tuple, target, standalone=standalone)
    return ArrayForm(traced, derived, source, tuple(traced.inputs[j].name for j in indices))


def _rebuild(what: str, compiled: Compiled, wrt) -> Compiled:
    """Derivative ``what`` of what ``compiled``'s function computes, with its
    options and in its form (handed to every compiled object, so that ``run``
    builds without importing ``api``)."""
    function = compiled.array.traced if compiled.form == "array" else compiled._symbolic().traced
    return compile_derivative(what, function, wrt=wrt, options=compiled.options)


_COMMON_DOCS = """
    Shapes are given positionally or by parameter name (``y=3, k=3``): an int
    ``n`` means ``(n,)``, a tuple is a shape, ``()`` a scalar; none when
    ``function`` is a traced function or a derivative built by symjac. ``wrt``
    is an argument name, index, or a tuple of them (default: the first
    argument); the other arguments are runtime parameters. The build options
    (``symjac.Options``): ``backend`` is "cython", "numpy" or None (Cython
    where a C compiler works, else numpy with a warning). ``form`` is "auto"
    (the array form for dense linear algebra that would scalarize into many
    operations), "scalar" or "array"; ``obj.form`` says which was taken. ``flags`` replaces
    the default C compiler flags (``("-O3", "-fno-math-errno",
    "-ffp-contract=off")``). ``native=True`` (the default) builds for this
    machine's CPU and its widest SIMD lanes (``-march=native``; the cache key
    names the CPU); ``native=False`` builds portable code.
    ``vector_math=False`` keeps the batch loop's SIMD lanes on scalar libm
    (glibc's vector libm differs by up to 4 ulp). All are part of the cache
    key. ``verbose``: None (default) reports a build that takes more than about
    two seconds on stderr, True every build, False none. The result keeps them
    as ``.options``, and derivatives built from it inherit them. Calls take
    the function's arguments; leading batch dimensions broadcast like a
    gufunc, ``out=`` takes preallocated results, ``num_threads=`` limits threads.
"""


def _entry_point(kind):
    """The public entry point ``symjac.<kind.name>`` of a derivative description."""
    def entry(function, *shapes, wrt=None, **keywords):
        options, named_shapes = Options.split(keywords)
        kernels = _check_kernels(kind, named_shapes.pop("kernels", None) if kind.optional_kernels else None)
        return compile_derivative(kind.name, function, shapes, named_shapes, wrt=wrt, kernels=kernels,
                                  options=options)

    entry.__name__ = entry.__qualname__ = kind.name
    entry.__module__ = "symjac"
    kernels_doc = (f"\n\n    ``kernels`` lists the kernels to compile: {kind.kernels!r} plus any of "
                   f"{kind.optional_kernels!r}.\n") if kind.optional_kernels else "\n"
    entry.__doc__ = f"Compile the {kind.title.lower()} of a numpy-style ``function``: {kind.summary}" \
        + kernels_doc + _COMMON_DOCS
    return entry


ENTRY_POINTS = {name: _entry_point(kind) for name, kind in DERIVATIVES.items()}
function = ENTRY_POINTS["function"]
jacobian = ENTRY_POINTS["jacobian"]
hessian = ENTRY_POINTS["hessian"]
gradient = ENTRY_POINTS["gradient"]
jvp = ENTRY_POINTS["jvp"]
vjp = ENTRY_POINTS["vjp"]
