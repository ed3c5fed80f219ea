"""Stage 4 — render: straight-line programs -> module source text.

Takes the :class:`~symjac.emit.simplify.Program` of each kernel plus the traced
signature; produces a :class:`Source`, consumed by ``build/builder.py``. Expression
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

import hashlib
from dataclasses import dataclass

import numpy as np

from .. import __version__
from ..derive.diff import Derivative
from ..derive.kinds import KINDS
from ..front.names import InvalidNameError, check_identifier
from .backends import Backend, get_backend
from .printing import symbol_names
from .simplify import Program, chunk
from .source import Source, calling_source, environment, number_rows

__all__ = ["ModuleContext", "render"]


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
class MirrorContext:
    """Copies a dense driver makes after the kernel: ``count`` entries of
    output ``out`` (at the flat indices of table ``to``) equal to entries of
    buffer ``source`` (table ``source_at``: entry numbers of the kernel
    buffer in a lane driver, flat indices of the output row otherwise)."""

    out: int
    source: int
    count: int
    to: str
    source_at: str


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
    mirrors: tuple[MirrorContext, ...] = ()  # entries copied from others (symmetric Hessians)

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
    packed: bool = False  # some driver writes packed (sparse) values
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


def _multi_index(flat: int, shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(int(i)) for i in np.unravel_index(flat, shape)) + "]" if shape else "[]"


# --------------------------------------------------------------------------
# building the context


def _chunk_context(program: Program, entry_of: dict, printer_type, symbols: dict, lanes: bool) -> ChunkContext:
    chunks = chunk(program)
    # shared temporaries print as scratch slots, one per lane in a lane body
    lane = "[_l]" if lanes else ""
    printer = printer_type({**symbols, **{symbol: f"_t[{k}]{lane}" for symbol, k in chunks.slots.items()}})
    functions = []
    for number, run in enumerate(chunks.runs):
        statements = []
        for statement in run:
            if statement[0] == "temporary":
                _, symbol, expr = statement
                statements.append(StatementContext(printer.doprint(expr), name=symbol.name,
                                                   slot=chunks.slots.get(symbol)))
            else:
                _, b, flat, expr = statement
                buffer = program.buffers[b]
                statements.append(StatementContext(printer.doprint(expr), buffer=buffer.name,
                                                   entry=entry_of[(b, flat)], comment=_multi_index(flat, buffer.shape)))
        functions.append((f"_symjac_{program.kind}_chunk{number}", tuple(statements)))
    return ChunkContext(tuple(functions), tuple(tuple(r) for r in chunks.files), len(chunks.slots))


def _mirror_tables(program: Program, c_name: str, lanes: bool, entry_of: dict) -> tuple[list, list]:
    """The dense driver's copies of ``program.mirrors``, one table pair per
    (output, source buffer), and those tables: (name, length, rows)."""
    groups: dict = {}
    for out, flat, source, source_flat in program.mirrors:
        to, source_at = groups.setdefault((out, source), ([], []))
        to.append(flat)
        source_at.append(entry_of[(source, source_flat)] if lanes else source_flat)
    mirrors, tables = [], []
    for number, ((out, source), (to, source_at)) in enumerate(groups.items()):
        names = f"{c_name}_mirror{number}_to", f"{c_name}_mirror{number}_from"
        mirrors.append(MirrorContext(out, source, len(to), *names))
        tables += [(name, len(values), number_rows(values, " " * 8)) for name, values in zip(names, (to, source_at))]
    return mirrors, tables


def _dense_driver(program: Program, c_name: str, lanes: bool, entry_of: dict) -> tuple[DriverContext, list]:
    written = [len(buffer.positions) for buffer in program.buffers]
    for out, *_ in program.mirrors:
        written[out] += 1

    def zeroes(b):  # structural zeros in this buffer at all, and very sparse?
        return written[b] < program.buffers[b].size, 4 * written[b] < program.buffers[b].size

    mirrors, tables = _mirror_tables(program, c_name, lanes, entry_of)
    driver = DriverContext(
        kind=program.kind, kernel_kind=program.kind, c_name=f"_symjac_{program.kind}", docs=KINDS[program.kind].docs,
        layout="dense",
        out_sizes=tuple(buffer.size for buffer in program.buffers),
        targets=tuple(TargetContext(b, f"{c_name}_dense{b}") for b in range(len(program.buffers))),
        out_shape=program.buffers[0].shape if program.structure == 0 else None,
        # Dense buffers with some structural zeros are cleared row by row by the
        # kernel; the caller hands sparser ones over already zeroed (np.zeros is
        # lazily zeroed memory: nothing is written for the zeros at all).
        kernel_zeroes=tuple(b for b in range(len(program.buffers)) if zeroes(b) == (True, False)),
        caller_zeroes=tuple(zeroes(b)[1] for b in range(len(program.buffers))),
        mirrors=tuple(mirrors),
    )
    return driver, tables


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


def _kernel_context(program: Program, backend: Backend, arguments) -> KernelContext:
    c_name = f"_symjac_{program.kind}"
    entry_of = {(b, flat): e for b, buffer in enumerate(program.buffers) for e, flat in enumerate(buffer.positions)}
    operations = program.operations
    lanes = backend.lanes(program, sum(argument.size for argument in arguments))
    # A lane body reads every argument element of its lane: a printer setting.
    symbols = symbol_names(arguments, backend.lane_element if lanes else backend.element)
    printer = backend.printer(symbols)
    chunks = _chunk_context(program, entry_of, backend.printer, symbols, lanes) if backend.chunked(program) else None
    dense, tables = _dense_driver(program, c_name, lanes, entry_of)
    drivers = [dense]
    if program.packing is not None:
        packed, packed_tables = _packed_driver(program, c_name)
        drivers.append(packed)
        tables += packed_tables
    return KernelContext(
        kind=program.kind, c_name=c_name, docs=KINDS[program.kind].docs,
        inline=backend.inline(operations) and chunks is None, operations=operations,
        buffers=tuple(BufferContext(buffer.name, buffer.size, len(buffer.positions),
                                    number_rows(buffer.positions, " " * 8))
                      for buffer in program.buffers),
        temporaries=() if chunks else tuple((printer.doprint(s), printer.doprint(e)) for s, e in program.temporaries),
        results=() if chunks else tuple(
            (program.buffers[b].name, entry_of[(b, flat)], _multi_index(flat, program.buffers[b].shape),
             printer.doprint(expr))
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


def _metadata(derivative: Derivative, content_hash: str, parallel_min_points: int, c_tables: bool,
              programs, drivers) -> str:
    """The module's metadata as Python text (``templates/_metadata.py.j2``)."""
    traced = derivative.traced
    layouts, nonzeros, full_shapes, sparse_shapes = _layouts(programs)
    return environment().get_template("_metadata.py.j2").render(
        version=__version__, content_hash=content_hash, function=_safe_function_name(traced.function_name),
        names=tuple(argument.name for argument in traced.arguments),
        shapes=tuple(argument.shape for argument in traced.arguments),
        wrt=derivative.wrt, output_shapes=traced.output_shapes, output_is_tuple=traced.output_is_tuple,
        wrt_is_tuple=derivative.wrt_is_tuple, parallel_min_points=parallel_min_points,
        caller_zeroes={driver.kind: driver.caller_zeroes for driver in drivers}, layouts=layouts,
        full_shapes=full_shapes, sparse_shapes=sparse_shapes,
        nonzeros=None if c_tables else {kind: [number_rows(indices, " " * 12) + ("," if len(indices) == 1 else "")
                                              for indices in tables] for kind, tables in nonzeros.items()},
    ).rstrip("\n")


def _packed_tables(programs) -> tuple[tuple[str, str, int, str], ...]:
    """(packed kind, C table, length, rows) per packed buffer: NONZEROS of compiled modules."""
    return tuple(
        (KINDS[program.kind].packed_name, f"_symjac_{KINDS[program.kind].packed_name}_nonzeros{p}", len(indices),
         number_rows(indices, " " * 8))
        for program in programs if program.packing is not None
        for p, indices in enumerate(program.packing.nonzeros))


# Stands for the content hash while a module is rendered (see render).
_HASH_PLACEHOLDER = "@symjac-content-hash@"


def render(
    derivative: Derivative,
    programs: tuple[Program, ...],
    backend: str,
    *,
    standalone: bool = False,
    title: str = "Jacobian",
    alias: str | None = None,
) -> Source:
    """Render the module of ``programs`` for a scalar-form ``backend`` (see ``emit/backends.py``).

    ``standalone`` embeds the call convention (``run/calling.py``) and a
    public interface, so that the module works without symjac installed.
    ``title`` names what the module computes in its docstring ("Jacobian",
    "Hessian" ...); ``alias`` is a second public name of a standalone
    module's ``function`` ("gradient", "jvp", "vjp": it computes that derivative).
    """
    chosen = get_backend(backend)
    arguments = derivative.traced.arguments
    kernels = tuple(_kernel_context(program, chosen, arguments) for program in programs)
    main_operations = max(kernel.operations for kernel in kernels) if kernels else 1
    parallel_min_points = chosen.parallel_min_points(main_operations)
    drivers = tuple(driver for kernel in kernels for driver in kernel.drivers)
    header = HeaderContext(
        title=title,
        function=_safe_function_name(derivative.traced.function_name),
        arguments=tuple((a.name, a.shape, number in derivative.wrt) for number, a in enumerate(arguments)),
        output_shapes=tuple(str(shape) for shape in derivative.traced.output_shapes),
        kinds=tuple(driver.kind for driver in drivers),
        version=__version__, backend=backend, standalone=standalone, alias=alias,
        packed=any(driver.layout == "packed" for driver in drivers),
    )
    max_entries = max([buffer.nonzeros for kernel in kernels for buffer in kernel.buffers] + [1])
    vector_functions = chosen.vector_functions(kernels)
    library = not standalone and chosen.library_template is not None
    template = environment().get_template(chosen.library_template if library else chosen.template)

    # Rendered once, with a placeholder where the hash goes: the text with
    # the placeholder removed is what the hash covers, the text with the
    # hash in its place is the module (templates print the hash verbatim).
    full = ModuleContext(
        header=HeaderContext(**{**header.__dict__, "content_hash": _HASH_PLACEHOLDER}),
        kernels=kernels,
        arguments=tuple(ArgumentContext(a.name, a.size, a.shape) for a in arguments),
        max_outs=max(max(len(d.out_sizes), len(d.targets)) for d in drivers),
        max_entries=max_entries,
        identity=number_rows(range(max_entries), " " * 4),
        metadata=_metadata(derivative, _HASH_PLACEHOLDER, parallel_min_points, chosen.c_tables, programs, drivers),
        packed_tables=_packed_tables(programs),
        runtime=calling_source() if standalone else None,
        vector_functions=vector_functions,
    )
    text = template.render(module=full)
    parts = tuple(
        (f"_{kernel.kind}_{number}.c", environment().get_template("c_chunks.c.j2").render(
            header=header, kernel=kernel, arguments=full.arguments, library=library,
            vector_functions=vector_functions, functions=[kernel.chunks.functions[f] for f in functions]))
        for kernel in kernels if kernel.chunks
        for number, functions in enumerate(kernel.chunks.files)
    )
    digest = hashlib.sha256(text.replace(_HASH_PLACEHOLDER, "").encode())
    for name, part in parts:
        digest.update(f"\0{name}\0{part}".encode())
    if library:
        digest.update(b"\0metadata\0" + full.metadata.replace(_HASH_PLACEHOLDER, "").encode())
    content_hash = digest.hexdigest()
    return Source(backend, text.replace(_HASH_PLACEHOLDER, content_hash), content_hash, header.kinds, parts,
                  full.metadata.replace(_HASH_PLACEHOLDER, content_hash) if library else "")
