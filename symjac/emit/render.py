"""Stage 4 — render: straight-line programs -> module source text.

Takes the :class:`~symjac.simplify.Program` of each kernel plus the traced
signature; produces a :class:`Source`, consumed by ``build.py``. Expression
text comes from the backend's printer (``printing.py``); everything else a
template needs is handed over as a typed :class:`ModuleContext` of names,
counts, tables and already-printed expressions, and all C and Python syntax
lives in the Jinja templates of the top-level ``templates/`` directory. This
module only prints: program transformations (CSE, chunking) happen in
``simplify.py``.

Each program becomes one *point body* that writes entry ``e`` of output
buffer ``b`` to ``buffer[at[e]]``, and drivers that loop over the batch and
pass the position tables: the dense table (flat indices into the full block)
for the kind's dense layout, the packing's slots for its packed values
(``KIND_values``, see ``kinds.py``). The expression code is thus emitted and
compiled once for both layouts; small bodies are inlined so the tables fold
into constant indices.

Output is deterministic: the same programs give the same bytes. The module
docstring carries a content hash: the SHA-256 of the text rendered with an
empty hash field (the one line golden tests may mask).
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2
import numpy as np

from .. import __version__
from .backends import BACKENDS, Backend, get_backend
from ..derive.diff import Derivative
from ..derive.kinds import KINDS
from ..front.names import InvalidNameError, check_identifier
from .printing import symbol_names
from .simplify import Program, chunk, count_operations, needs_chunks

__all__ = ["BACKENDS", "ModuleContext", "Source", "render", "runtime_source", "template_dir"]

# Bodies with more operations than this are compiled once, not inlined into
# each driver: compile time matters more than an indirect store there.
INLINE_OPERATIONS = 4000
# libm functions with vector versions in glibc's libmvec on x86-64:
# name -> (arity, added in glibc 2.35); the others came with 2.22.
VECTOR_LIBM = {
    **{name: (1, False) for name in ("exp", "log", "sin", "cos")}, "pow": (2, False),
    **{name: (1, True) for name in ("tan", "tanh", "sinh", "cosh", "asin", "acos", "atan", "asinh", "acosh",
                                    "atanh", "exp2", "expm1", "log2", "log10", "log1p", "cbrt", "erf", "erfc")},
    "atan2": (2, True), "hypot": (2, True),
}
_CALL = re.compile(r"\b([a-z][a-z0-9]*)\(")
# Kernels computing at least this many operations per element they read or store run
# their batch loop in SIMD lanes (see runs_in_lanes).
LANE_OPERATIONS_PER_ELEMENT = 4
LIBM_CALL_COST = 20  # a scalar exp or tanh takes about as long as 20 multiplications
# A batch is split across threads only when it holds at least this many
# operations in total (about 20-40 us of work per thread).
PARALLEL_MIN_OPERATIONS = 50_000


@dataclass(frozen=True)
class Source:
    """Generated module text for one backend (plus C files for big kernels)."""

    backend: str
    text: str
    content_hash: str
    kinds: tuple[str, ...]
    parts: tuple[tuple[str, str], ...] = ()  # extra C files: (name suffix, text)
    # A kernel library (C text, loaded by the shared kernel runtime) carries
    # its module metadata here, as Python text; a full module has it inline.
    metadata: str = ""

    @property
    def is_library(self) -> bool:
        return bool(self.metadata)

    @property
    def suffix(self) -> str:
        return ".c" if self.is_library else get_backend(self.backend).suffix

    def __str__(self) -> str:
        return self.text


# --------------------------------------------------------------------------
# the template context: what templates see, all text already printed


@dataclass(frozen=True)
class ArgumentContext:
    name: str
    size: int
    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def row_dims(self) -> str:
        """C array dimensions after the first (``"[3]"`` for shape (2, 3)): a
        pointer to such rows lets kernels write ``W[1][0]``."""
        return "".join(f"[{extent}]" for extent in self.shape[1:])


@dataclass(frozen=True)
class BufferContext:
    name: str
    size: int
    nonzeros: int  # entries the kernel computes
    dense: str  # their flat indices, printed as rows of numbers


@dataclass(frozen=True)
class TargetContext:
    """Where a driver sends a kernel buffer: output ``out`` through table ``table``."""

    out: int
    table: str


@dataclass(frozen=True)
class DriverContext:
    kind: str  # the public name: "jacobian", "jacobian_values", ...
    kernel_kind: str  # the kernel's kind: "jacobian" for both of those
    c_name: str
    docs: str
    layout: str  # "dense" or "packed"
    out_sizes: tuple[int, ...]  # per output buffer of this driver
    targets: tuple[TargetContext, ...]  # per kernel buffer
    out_shape: tuple[int, ...] | None  # the output's shape when there is one, not nested in a tuple
    kernel_zeroes: tuple[int, ...]  # outputs whose structural zeros the kernel clears
    caller_zeroes: tuple[bool, ...]  # per output: must the caller hand it over zeroed?

    @property
    def single(self) -> bool:
        return self.out_shape is not None


@dataclass(frozen=True)
class StatementContext:
    """One statement of a chunk function: a local temporary (``name``), a
    temporary shared through the scratch array (``slot``), or entry ``entry``
    of output ``buffer`` (with the element's index as ``comment``)."""

    text: str
    name: str = ""
    slot: int | None = None
    buffer: str = ""
    entry: int = 0
    comment: str = ""


@dataclass(frozen=True)
class ChunkContext:
    functions: tuple[tuple[str, tuple[StatementContext, ...]], ...]  # (C name, statements)
    files: tuple[tuple[int, ...], ...]  # function numbers per C file
    scratch: int  # temporaries shared between chunks


@dataclass(frozen=True)
class KernelContext:
    kind: str
    c_name: str
    docs: str
    inline: bool
    operations: int
    buffers: tuple[BufferContext, ...]
    temporaries: tuple[tuple[str, str], ...]  # (name, text)
    results: tuple[tuple[str, int, str, str], ...]  # (buffer, entry, element comment, text)
    chunks: ChunkContext | None
    drivers: tuple[DriverContext, ...]
    tables: tuple[tuple[str, int, str], ...]  # extra C position tables: (name, length, rows)
    lanes: bool = False  # a lane body (statements spelled for lane _l) and lane drivers


@dataclass(frozen=True)
class HeaderContext:
    title: str
    function: str
    arguments: tuple[tuple[str, tuple[int, ...], bool], ...]  # (name, shape, differentiated)
    output_shapes: tuple[str, ...]
    kinds: tuple[str, ...]
    version: str
    backend: str
    standalone: bool
    alias: str | None = None
    content_hash: str = ""


@dataclass(frozen=True)
class ModuleContext:
    header: HeaderContext
    kernels: tuple[KernelContext, ...]
    arguments: tuple[ArgumentContext, ...]
    max_outs: int
    max_entries: int
    identity: str
    metadata: str
    packed_tables: tuple[tuple[str, str, int, str], ...]  # (packed kind, C table of NONZEROS, length, rows)
    runtime: str | None
    vector_functions: tuple[tuple[str, int, bool], ...]  # see _vector_functions

    @property
    def lanes(self) -> bool:
        return any(kernel.lanes for kernel in self.kernels)

    @property
    def drivers(self) -> tuple[DriverContext, ...]:
        return tuple(driver for kernel in self.kernels for driver in kernel.drivers)


# --------------------------------------------------------------------------
# templates


def template_dir() -> Path:
    """The Jinja templates: inside the installed package, or the source checkout's."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "_header.j2").is_file():
            return candidate
    raise FileNotFoundError("symjac's templates/ directory was not found next to the package")


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def number_rows(numbers, indent: str, per_row: int = 16) -> str:
    """Integers as comma-separated rows, for array initialisers."""
    numbers = [str(int(number)) for number in numbers]
    rows = [", ".join(numbers[start:start + per_row]) for start in range(0, len(numbers), per_row)]
    return (",\n" + indent).join(rows)


def _multi_index(flat: int, shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(int(i)) for i in np.unravel_index(flat, shape)) + "]" if shape else "[]"


# --------------------------------------------------------------------------
# building the context


def _chunk_context(program: Program, entry_of: dict, printer_type, symbols: dict, spell) -> ChunkContext:
    chunks = chunk(program)
    # shared temporaries print as scratch slots; the templates spell the statements
    printer = printer_type({**symbols, **{symbol: f"_t[{k}]" for symbol, k in chunks.slots.items()}})
    functions = []
    for number, run in enumerate(chunks.runs):
        statements = []
        for statement in run:
            if statement[0] == "temporary":
                _, symbol, expr = statement
                statements.append(StatementContext(spell(printer.doprint(expr)), name=symbol.name,
                                                   slot=chunks.slots.get(symbol)))
            else:
                _, b, flat, expr = statement
                buffer = program.buffers[b]
                statements.append(StatementContext(spell(printer.doprint(expr)), buffer=buffer.name,
                                                   entry=entry_of[(b, flat)], comment=_multi_index(flat, buffer.shape)))
        functions.append((f"_symjac_{program.kind}_chunk{number}", tuple(statements)))
    return ChunkContext(tuple(functions), tuple(tuple(r) for r in chunks.files), len(chunks.slots))


def _dense_driver(program: Program, c_name: str) -> DriverContext:
    def zeroes(buffer):  # structural zeros in this buffer at all, and very sparse?
        return len(buffer.positions) < buffer.size, 4 * len(buffer.positions) < buffer.size

    return DriverContext(
        kind=program.kind, kernel_kind=program.kind, c_name=f"_symjac_{program.kind}", docs=KINDS[program.kind].docs,
        layout="dense",
        out_sizes=tuple(buffer.size for buffer in program.buffers),
        targets=tuple(TargetContext(b, f"{c_name}_dense{b}") for b in range(len(program.buffers))),
        out_shape=program.buffers[0].shape if program.structure == 0 else None,
        # Dense buffers with some structural zeros are cleared row by row by the
        # kernel; the caller hands sparser ones over already zeroed (np.zeros is
        # lazily zeroed memory: nothing is written for the zeros at all).
        kernel_zeroes=tuple(b for b, buffer in enumerate(program.buffers) if zeroes(buffer) == (True, False)),
        caller_zeroes=tuple(zeroes(buffer)[1] for buffer in program.buffers),
    )


def _packed_driver(program: Program, c_name: str) -> tuple[DriverContext, list]:
    packing = program.packing
    kind = KINDS[program.kind]
    tables, targets = [], []
    for b, (out, slots) in enumerate(packing.targets):
        if list(slots) == list(range(len(slots))):
            targets.append(TargetContext(out, "_symjac_identity"))
        else:
            name = f"{c_name}_slots{b}"
            tables.append((name, len(slots), number_rows(slots, " " * 8)))
            targets.append(TargetContext(out, name))
    sizes = tuple(len(indices) for indices in packing.nonzeros)
    driver = DriverContext(
        kind=kind.packed_name, kernel_kind=program.kind, c_name=f"_symjac_{kind.packed_name}", docs=kind.packed_docs,
        layout="packed", out_sizes=sizes, targets=tuple(targets),
        out_shape=(sizes[0],) if packing.structure == 0 else None,
        kernel_zeroes=(), caller_zeroes=(False,) * len(sizes),
    )
    return driver, tables


def _vector_functions(kernels) -> tuple[tuple[str, int, bool], ...]:
    """(name, arity, needs glibc 2.35) of each libm function the lane
    bodies call that glibc's libmvec has in vector form."""
    called = set()
    for kernel in kernels:
        if kernel.lanes:
            texts = [text for _, text in kernel.temporaries] + [result[3] for result in kernel.results]
            if kernel.chunks:
                texts += [line.text for _, statements in kernel.chunks.functions for line in statements]
            for text in texts:
                called.update(_CALL.findall(text))
    return tuple((name, *VECTOR_LIBM[name]) for name in sorted(called & VECTOR_LIBM.keys()))


def lane_spelling(names):
    """Respell a C point body's argument elements for lane ``_l`` of a lane
    body: ``W[1][0]`` -> ``W[1][0][_l]`` (and, for chunks, scratch slots
    ``_t[3]`` -> ``_t[3][_l]``). User names are validated identifiers
    starting with a letter and symjac's own start with ``_``, so such a name
    followed by ``[digits]`` is always an element."""
    if not names:
        return lambda text: text
    pattern = re.compile(r"(?<![A-Za-z0-9_])(?:%s)(?:\[\d+\])+" % "|".join(map(re.escape, names)))
    return lambda text: pattern.sub(lambda match: match.group(0) + "[_l]", text)


def runs_in_lanes(program: Program, argument_elements: int) -> bool:
    """Whether the batch loop of ``program`` runs across SIMD lanes: when it
    computes enough per element it moves. A lane block transposes each
    point's arguments in and its values out (about a load and a store per
    element), which a cheap body does not win back: Robertson's Jacobian does
    about one operation per element and is bound by memory either way,
    a tanh MLP's does dozens. A libm call counts as ``LIBM_CALL_COST``
    operations (see benchmarks/lanes.py)."""
    stored = sum(len(buffer.positions) for buffer in program.buffers)
    exprs = [expr for _, expr in program.temporaries] + [expr for _, _, expr in program.results]
    cost = count_operations(exprs, call_cost=LIBM_CALL_COST)
    return cost >= LANE_OPERATIONS_PER_ELEMENT * (stored + argument_elements)


def _kernel_context(program: Program, backend: Backend, symbols: dict, printer, arguments) -> KernelContext:
    c_name = f"_symjac_{program.kind}"
    entry_of = {(b, flat): e for b, buffer in enumerate(program.buffers) for e, flat in enumerate(buffer.positions)}
    operations = program.operations
    lanes = backend.lanes and runs_in_lanes(program, sum(argument.size for argument in arguments))
    names = [argument.name for argument in arguments]
    spell = lane_spelling(names) if lanes else (lambda text: text)
    chunks = _chunk_context(program, entry_of, backend.printer, symbols,
                            lane_spelling([*names, "_t"]) if lanes else spell) \
        if backend.chunks and needs_chunks(program) else None
    drivers, tables = [_dense_driver(program, c_name)], []
    if program.packing is not None:
        packed, tables = _packed_driver(program, c_name)
        drivers.append(packed)
    return KernelContext(
        kind=program.kind, c_name=c_name, docs=KINDS[program.kind].docs,
        inline=operations <= INLINE_OPERATIONS and chunks is None, operations=operations,
        buffers=tuple(BufferContext(buffer.name, buffer.size, len(buffer.positions),
                                    number_rows(buffer.positions, " " * 8))
                      for buffer in program.buffers),
        temporaries=() if chunks else tuple((printer.doprint(s), spell(printer.doprint(e)))
                                            for s, e in program.temporaries),
        results=() if chunks else tuple(
            (program.buffers[b].name, entry_of[(b, flat)], _multi_index(flat, program.buffers[b].shape),
             spell(printer.doprint(expr)))
            for b, flat, expr in program.results),
        chunks=chunks, drivers=tuple(drivers), tables=tuple(tables), lanes=lanes,
    )


def _safe_function_name(name: str) -> str:
    try:
        return check_identifier(name, "function name")
    except InvalidNameError:
        return "function"


def _layouts(programs) -> tuple[dict, dict, dict, dict]:
    """Per driver kind: (buffer shapes, structure); per packed kind: the
    non-zeros, full shapes and sparse shapes of its buffers."""
    layouts, nonzeros, full_shapes, sparse_shapes = {}, {}, {}, {}
    for program in programs:
        layouts[program.kind] = (tuple(buffer.shape for buffer in program.buffers), program.structure)
        if program.packing is not None:
            name = KINDS[program.kind].packed_name
            layouts[name] = (tuple((len(i),) for i in program.packing.nonzeros), program.packing.structure)
            nonzeros[name] = program.packing.nonzeros
            full_shapes[name] = program.packing.full_shapes
            sparse_shapes[name] = program.packing.sparse_shapes
    return layouts, nonzeros, full_shapes, sparse_shapes


def _metadata(derivative: Derivative, content_hash: str, parallel_min_points: int, backend: Backend,
              programs, drivers) -> str:
    traced = derivative.traced
    layouts, nonzeros, full_shapes, sparse_shapes = _layouts(programs)
    lines = [
        f"SYMJAC_VERSION = {__version__!r}",
        f"CONTENT_HASH = {content_hash!r}",
        f"FUNCTION_NAME = {_safe_function_name(traced.function_name)!r}",
        f"ARGUMENT_NAMES = {tuple(argument.name for argument in traced.arguments)!r}",
        f"ARGUMENT_SHAPES = {tuple(argument.shape for argument in traced.arguments)!r}",
        f"WRT = {derivative.wrt!r}",
        f"OUTPUT_SHAPES = {traced.output_shapes!r}",
        f"OUTPUT_IS_TUPLE = {traced.output_is_tuple!r}",
        f"WRT_IS_TUPLE = {derivative.wrt_is_tuple!r}",
        "# Batches smaller than this run on one thread (threads cost more than they save).",
        f"PARALLEL_MIN_POINTS = {parallel_min_points}",
        "# Per kernel, the output buffers the caller must zero (very sparse dense blocks).",
        "CALLER_ZEROES = {" + ", ".join(f"{d.kind!r}: {d.caller_zeroes!r}" for d in drivers) + "}",
        "# Per kernel: the core shape of each buffer it writes, and how results nest them.",
        "LAYOUTS = {" + ", ".join(f"{kind!r}: {layout!r}" for kind, layout in layouts.items()) + "}",
        "# Per packed kernel: the full array each buffer's values come from, and its (rows, cols) as a matrix.",
        "FULL_SHAPES = {" + ", ".join(f"{kind!r}: {shapes!r}" for kind, shapes in full_shapes.items()) + "}",
        "SPARSE_SHAPES = {" + ", ".join(f"{kind!r}: {shapes!r}" for kind, shapes in sparse_shapes.items()) + "}",
        "# Per packed kernel: the flat (C-order) index of each packed value in its full array;",
        "# for a Jacobian, blocks ordered output 0 / WRT[0], output 0 / WRT[1], ...",
    ]
    if backend.compiled:  # big literals are slow for Cython and the C compiler: read the C tables
        lines.append("NONZEROS = _nonzero_tables()")
    else:
        lines.append("NONZEROS = {")
        for kind, tables in nonzeros.items():
            lines.append(f"    {kind!r}: (")
            lines += [f"        ({number_rows(indices, ' ' * 12)}{',' if len(indices) == 1 else ''})," for indices in tables]
            lines.append("    ),")
        lines.append("}")
    return "\n".join(lines)


def _runtime_text() -> str:
    """``_calling.py`` without its module docstring and imports, for embedding
    (the generated module imports what it needs once, at its top)."""
    text = (Path(__file__).resolve().parent.parent / "run" / "calling.py").read_text()
    body = ast.parse(text).body
    first = next(node for node in body[1:] if not isinstance(node, (ast.Import, ast.ImportFrom)))
    return "\n".join(text.splitlines()[first.lineno - 1:]).strip("\n")


def _packed_tables(programs) -> tuple[tuple[str, str, int, str], ...]:
    """(packed kind, C table, length, rows) per packed buffer: NONZEROS of compiled modules."""
    return tuple(
        (KINDS[program.kind].packed_name, f"_symjac_{KINDS[program.kind].packed_name}_nonzeros{p}", len(indices),
         number_rows(indices, " " * 8))
        for program in programs if program.packing is not None
        for p, indices in enumerate(program.packing.nonzeros))


def render(
    derivative: Derivative,
    programs: tuple[Program, ...],
    backend: str,
    *,
    standalone: bool = False,
    title: str = "Jacobian",
    alias: str | None = None,
) -> Source:
    """Render the module of ``programs`` for ``backend`` (see ``backends.py``).

    ``standalone`` embeds the call convention (``_calling.py``) and a public
    interface, so that the module works without symjac installed. ``title``
    names what the module computes in its docstring ("Jacobian", "Hessian" ...);
    ``alias`` is a second public name of a standalone module's ``function``
    ("gradient", "jvp", "vjp": it computes that derivative).
    """
    chosen = get_backend(backend)
    arguments = derivative.traced.arguments
    symbols = symbol_names(arguments, chosen.element)
    printer = chosen.printer(symbols)
    kernels = tuple(_kernel_context(program, chosen, symbols, printer, arguments) for program in programs)
    main_operations = max(kernel.operations for kernel in kernels) if kernels else 1
    parallel_min_points = max(1, -(-PARALLEL_MIN_OPERATIONS // max(main_operations, 1)))
    drivers = tuple(driver for kernel in kernels for driver in kernel.drivers)
    header = HeaderContext(
        title=title,
        function=_safe_function_name(derivative.traced.function_name),
        arguments=tuple((a.name, a.shape, number in derivative.wrt) for number, a in enumerate(arguments)),
        output_shapes=tuple(str(shape) for shape in derivative.traced.output_shapes),
        kinds=tuple(driver.kind for driver in drivers),
        version=__version__, backend=backend, standalone=standalone, alias=alias,
    )
    max_entries = max([buffer.nonzeros for kernel in kernels for buffer in kernel.buffers] + [1])
    vector_functions = _vector_functions(kernels)
    library = not standalone and chosen.kernel_template is not None
    template = _environment().get_template(chosen.kernel_template if library else chosen.template)
    index_type = "ptrdiff_t" if library else "Py_ssize_t"

    def context(content_hash: str) -> ModuleContext:
        return ModuleContext(
            header=HeaderContext(**{**header.__dict__, "content_hash": content_hash}),
            kernels=kernels,
            arguments=tuple(ArgumentContext(a.name, a.size, a.shape) for a in arguments),
            max_outs=max(max(len(d.out_sizes), len(d.targets)) for d in drivers),
            max_entries=max_entries,
            identity=number_rows(range(max_entries), " " * 4),
            metadata=_metadata(derivative, content_hash, parallel_min_points, chosen, programs, drivers),
            packed_tables=_packed_tables(programs),
            runtime=_runtime_text() if standalone else None,
            vector_functions=vector_functions,
        )

    def text_with(content_hash: str) -> str:
        return template.render(module=context(content_hash))

    chunk_template = _environment().get_template("c_chunks.c.j2")
    unhashed = context("")
    parts = tuple(
        (f"_{kernel.kind}_{number}.c", chunk_template.render(
            header=header, kernel=kernel, arguments=unhashed.arguments, idx=index_type,
            vector_functions=vector_functions,
            functions=[kernel.chunks.functions[f] for f in functions]))
        for kernel in kernels if kernel.chunks
        for number, functions in enumerate(kernel.chunks.files)
    )
    digest = hashlib.sha256(text_with("").encode())
    for name, text in parts:
        digest.update(f"\0{name}\0{text}".encode())
    if library:
        digest.update(b"\0metadata\0" + unhashed.metadata.encode())
    content_hash = digest.hexdigest()
    return Source(backend, text_with(content_hash), content_hash, header.kinds, parts,
                  context(content_hash).metadata if library else "")


@lru_cache(maxsize=1)
def runtime_source() -> str:
    """The Cython text of the kernel runtime (the same for every model)."""
    return _environment().get_template("kernel_runtime.pyx.j2").render()
