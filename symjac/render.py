"""Stage 4 — render: straight-line programs -> module source text.

Takes the :class:`~symjac.simplify.Program` of each kernel plus the traced
signature; produces a :class:`Source`, consumed by ``build.py``. Expression
text comes from ``printing.py``; the Jinja templates in the top-level
``templates/`` directory only see already-printed lines, names and counts.

Each program becomes one *point body* that writes the k-th non-zero of an
output buffer to ``buffer[at[k]]``, and one or more *drivers* that loop over
the batch and pass position tables: the dense table (flat indices into the
full block) for ``jacobian``, the identity for ``jacobian_values`` (the
packed non-zero values, for sparse results). The expression code is thus
emitted and compiled once for both layouts; small bodies are inlined so the
tables fold into constant indices.

Output is deterministic: the same programs give the same bytes. The module
docstring carries a content hash: the SHA-256 of the text rendered with an
empty hash field (the one line golden tests may mask).
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2
import numpy as np

from . import __version__
from .diff import Derivative
from .names import InvalidNameError, check_identifier
from .printing import CPrinter, NumpyPrinter, symbol_names
from .simplify import Program, count_operations

__all__ = ["BACKENDS", "Source", "render", "template_dir"]

BACKENDS = ("cython", "numpy")
_TEMPLATES = {"cython": "cython_module.pyx.j2", "numpy": "numpy_module.py.j2"}
_SUFFIX = {"cython": ".pyx", "numpy": ".py"}
_KIND_DOCS = {
    "jacobian": "Jacobian: writes the non-zero entries of every block d output / d argument.",
    "jacobian_values": "Packed Jacobian: the non-zero values of every block, in NONZEROS order.",
    "function": "Function: writes the non-zero entries of every output.",
    "function_and_jacobian": "Function and Jacobian in one pass, sharing subexpressions.",
}
# Bodies with more operations than this are compiled once, not inlined into
# each driver: compile time matters more than an indirect store there.
INLINE_OPERATIONS = 4000
# Programs with more statements or operations than this are split into chunk
# functions in separate C files (see _chunks); smaller ones stay one function
# in the .pyx.
CHUNK_THRESHOLD = 1500
CHUNK_THRESHOLD_OPERATIONS = 20_000
CHUNK_STATEMENTS = 200
CHUNK_OPERATIONS = 2_000
CHUNKS_PER_FILE = 15
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

    @property
    def suffix(self) -> str:
        return _SUFFIX[self.backend]

    def __str__(self) -> str:
        return self.text


def template_dir() -> Path:
    """The Jinja templates: inside the installed package, or the source checkout's."""
    here = Path(__file__).resolve().parent
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


def _positions(program: Program):
    """Per buffer, the dense flat indices of its entries in entry order, and
    the entry number of each (buffer, flat index)."""
    positions, entry_of = [], {}
    for number in range(len(program.buffers)):
        indices = sorted(flat for b, flat, _ in program.results if b == number)
        positions.append(indices)
        entry_of.update({(number, flat): k for k, flat in enumerate(indices)})
    return positions, entry_of


def _chunks(program: Program, positions, arguments, printer_type, symbols: dict) -> dict:
    """Split a large program into chunk functions spread over C files.

    Statements (temporaries, then results) are cut into runs of at most
    ``CHUNK_STATEMENTS`` statements and ``CHUNK_OPERATIONS`` operations; each
    run becomes one C function, and every
    ``CHUNKS_PER_FILE`` functions one file, so the compiler's time and memory
    grow linearly and files compile in parallel. A temporary used only in the
    chunk that defines it stays a local; one used later lives in the per-thread
    scratch array ``_t[]``.
    """
    _, entry_of = positions
    statements = [("temporary", symbol, expr) for symbol, expr in program.temporaries]
    statements += [("result", b, flat, expr) for b, flat, expr in program.results]
    runs, run, weight = [], [], 0
    for statement in statements:
        cost = 1 + count_operations([statement[-1]])
        if run and (len(run) >= CHUNK_STATEMENTS or weight + cost > CHUNK_OPERATIONS):
            runs.append(run)
            run, weight = [], 0
        run.append(statement)
        weight += cost
    runs.append(run)
    defined_in = {}
    for number, run in enumerate(runs):
        for statement in run:
            if statement[0] == "temporary":
                defined_in[statement[1]] = number
    shared = set()
    for number, run in enumerate(runs):
        for statement in run:
            for symbol in statement[-1].free_symbols:
                if defined_in.get(symbol, number) != number:
                    shared.add(symbol)
    slots = {symbol: k for k, symbol in enumerate(sorted(shared, key=lambda symbol: int(symbol.name[2:])))}
    printer = printer_type({**symbols, **{symbol: f"_t[{k}]" for symbol, k in slots.items()}})
    parameters = ", ".join(f"const double *restrict {a.name}" for a in arguments) + ", double *restrict _t,\n    " + \
        ", ".join(f"double *restrict {buffer.name}, const Py_ssize_t *restrict {buffer.name}_at" for buffer in program.buffers)
    functions = []
    for number, run in enumerate(runs):
        lines = []
        for statement in run:
            if statement[0] == "temporary":
                _, symbol, expr = statement
                target = f"_t[{slots[symbol]}]" if symbol in slots else f"const double {symbol.name}"
                lines.append(f"{target} = {printer.doprint(expr)};")
            else:
                _, b, flat, expr = statement
                buffer = program.buffers[b]
                entry = entry_of[(b, flat)]
                lines.append(f"{buffer.name}[{buffer.name}_at[{entry}]] = {printer.doprint(expr)};  "
                             f"/* {_multi_index(flat, buffer.shape)} */")
        functions.append({"name": f"_symjac_{program.kind}_chunk{number}", "lines": lines})
    files = [functions[start:start + CHUNKS_PER_FILE] for start in range(0, len(functions), CHUNKS_PER_FILE)]
    call_arguments = ", ".join(a.name for a in arguments) + ", _t, " + ", ".join(
        f"{buffer.name}, {buffer.name}_at" for buffer in program.buffers)
    return {"parameters": parameters, "functions": functions, "files": files, "scratch": len(slots),
            "call_arguments": call_arguments}


def _driver_shape(program: Program, layout: str, positions) -> tuple[int, ...]:
    """Shape of the first buffer as a driver of ``layout`` fills it."""
    return program.buffers[0].shape if layout == "dense" else (len(positions[0]),)


def _kernel_context(program: Program, positions, arguments, printer, operations: int, chunks=None) -> dict:
    """What the templates need of one program, all text already printed."""
    positions, entry_of = positions
    drivers = [(program.kind, "dense")] + ([("jacobian_values", "packed")] if program.kind == "jacobian" else [])
    c_parameters = ", ".join(f"const double *{argument.name}" for argument in arguments) + (
        ", double *_t" if chunks is not None else "") + ",\n        " + ", ".join(
        f"double *{buffer.name}, const Py_ssize_t *{buffer.name}_at" for buffer in program.buffers)
    c_inputs = ", ".join(f"_args[{j}] + _i * _arg_strides[{j}]" for j in range(len(arguments)))
    if chunks is not None:
        c_inputs += ", _t"

    def c_arguments(kind, layout):
        outputs = ", ".join(
            f"_outs[{b}] + _i * _symjac_{kind}_out_sizes[{b}], "
            + (f"_symjac_{program.kind}_dense{b}" if layout == "dense" else "_symjac_identity")
            for b in range(len(program.buffers)))
        return f"{c_inputs},\n                {outputs}"

    def kernel_zeroes(layout):
        """Dense buffers with some structural zeros, which the kernel clears row
        by row; the caller hands sparser ones over already zeroed (np.zeros is
        lazily zeroed memory: nothing is written for the zeros at all)."""
        return [b for b, buffer in enumerate(program.buffers)
                if layout == "dense" and len(positions[b]) < buffer.size and 4 * len(positions[b]) >= buffer.size]

    def caller_zeroes(layout):
        return [layout == "dense" and 4 * len(positions[b]) < buffer.size for b, buffer in enumerate(program.buffers)]

    def c_zero_fill(layout):
        return [f"memset(_outs[{b}] + _i * {program.buffers[b].size}, 0, {program.buffers[b].size} * sizeof(double));"
                for b in kernel_zeroes(layout)]

    return {
        "kind": program.kind,
        "c_name": f"_symjac_{program.kind}",
        "docs": _KIND_DOCS[program.kind],
        "inline": operations <= INLINE_OPERATIONS and chunks is None,
        "chunks": chunks,
        "operations": operations,
        "c_parameters": c_parameters,
        "drivers": [{"kind": kind, "c_name": f"_symjac_{kind}", "docs": _KIND_DOCS[kind], "layout": layout,
                     "single": len(program.buffers) == 1, "buffers": len(program.buffers),
                     "out_ndim": len(_driver_shape(program, layout, positions)),
                     "out_dims": ", ".join(map(str, _driver_shape(program, layout, positions) or (0,))),
                     "c_arguments": c_arguments(kind, layout),
                     "c_zero_fill": c_zero_fill(layout), "kernel_zeroes": kernel_zeroes(layout),
                     "caller_zeroes": caller_zeroes(layout)}
                    for kind, layout in drivers],
        "buffers": [
            {"name": buffer.name, "size": buffer.size, "nonzeros": len(positions[b]),
             "dense": number_rows(positions[b], " " * 8)}
            for b, buffer in enumerate(program.buffers)
        ],
        "temporaries": [] if chunks else [(printer.doprint(symbol), printer.doprint(expr))
                                          for symbol, expr in program.temporaries],
        "results": [] if chunks else [
            (program.buffers[b].name, entry_of[(b, flat)], _multi_index(flat, program.buffers[b].shape), printer.doprint(expr))
            for b, flat, expr in program.results
        ],
    }


def _safe_function_name(name: str) -> str:
    try:
        return check_identifier(name, "function name")
    except InvalidNameError:
        return "function"


def _metadata(derivative: Derivative, content_hash: str, wrt_is_tuple: bool, parallel_min_points: int,
              backend: str, drivers) -> str:
    traced = derivative.traced
    nonzeros = tuple(tuple(index for index, _ in block.entries) for row in derivative.blocks for block in row)
    lines = [
        f"SYMJAC_VERSION = {__version__!r}",
        f"CONTENT_HASH = {content_hash!r}",
        f"ARGUMENT_NAMES = {tuple(argument.name for argument in traced.arguments)!r}",
        f"ARGUMENT_SHAPES = {tuple(argument.shape for argument in traced.arguments)!r}",
        f"WRT = {derivative.wrt!r}",
        f"OUTPUT_SHAPES = {traced.output_shapes!r}",
        f"OUTPUT_IS_TUPLE = {traced.output_is_tuple!r}",
        f"WRT_IS_TUPLE = {wrt_is_tuple!r}",
        "# Batches smaller than this run on one thread (threads cost more than they save).",
        f"PARALLEL_MIN_POINTS = {parallel_min_points}",
        "# Per kernel, the output buffers the caller must zero (very sparse dense blocks).",
        "CALLER_ZEROES = {" + ", ".join(f"{d['kind']!r}: {tuple(d['caller_zeroes'])!r}" for d in drivers) + "}",
        "# Flat (C-order) indices of the structural non-zeros of each Jacobian block, in the order",
        "# jacobian_values() returns them; blocks ordered output 0 / WRT[0], output 0 / WRT[1], ...",
    ]
    if backend == "cython":  # big literals are slow for Cython and the C compiler: read the C tables
        lines.append("NONZEROS = _nonzero_tables()")
    else:
        lines += ["NONZEROS = (",
                  *[f"    ({number_rows(indices, ' ' * 8)}{',' if len(indices) == 1 else ''})," for indices in nonzeros],
                  ")"]
    return "\n".join(lines)


def _runtime_text() -> str:
    """``_calling.py`` without its module docstring, for embedding."""
    text = Path(__file__).with_name("_calling.py").read_text()
    docstring = ast.parse(text).body[0]
    return "\n".join(text.splitlines()[docstring.end_lineno:]).strip("\n")


def render(
    derivative: Derivative,
    programs: tuple[Program, ...],
    backend: str,
    *,
    wrt_is_tuple: bool = False,
    standalone: bool = False,
) -> Source:
    """Render the module for ``backend`` ("cython" or "numpy").

    ``standalone`` embeds the call convention (``_calling.py``) and a public
    interface, so that the module works without symjac installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    arguments = derivative.traced.arguments
    element = "{name}[{flat}]" if backend == "cython" else "{name}[:, {flat}]"
    printer_type = CPrinter if backend == "cython" else NumpyPrinter
    symbols = symbol_names(arguments, element)
    printer = printer_type(symbols)
    kernels = []
    for program in programs:
        positions = _positions(program)
        statements = len(program.temporaries) + len(program.results)
        operations = count_operations([e for _, e in program.temporaries] + [e for _, _, e in program.results])
        chunks = None
        large = statements > CHUNK_THRESHOLD or (statements > 1 and operations > CHUNK_THRESHOLD_OPERATIONS)
        if backend == "cython" and large:
            chunks = _chunks(program, positions, arguments, printer_type, symbols)
        kernels.append(_kernel_context(program, positions, arguments, printer, operations, chunks))
    jacobian_operations = max([k["operations"] for k in kernels if k["kind"] == "jacobian"] or [1])
    parallel_min_points = max(1, -(-PARALLEL_MIN_OPERATIONS // max(jacobian_operations, 1)))
    drivers = [driver for kernel in kernels for driver in kernel["drivers"]]
    header = {
        "function": _safe_function_name(derivative.traced.function_name),
        "arguments": [(a.name, a.shape, number in derivative.wrt) for number, a in enumerate(arguments)],
        "output_shapes": [str(shape) for shape in derivative.traced.output_shapes],
        "kinds": [driver["kind"] for driver in drivers],
        "version": __version__,
        "backend": backend,
        "standalone": standalone,
    }
    max_entries = max([buffer["nonzeros"] for kernel in kernels for buffer in kernel["buffers"]] + [1])
    template = _environment().get_template(_TEMPLATES[backend])

    def text_with(content_hash: str) -> str:
        return template.render(
            header={**header, "content_hash": content_hash},
            kernels=kernels,
            drivers=drivers,
            arguments=[{"name": a.name, "size": a.size, "ndim": len(a.shape),
                        "shape": number_rows(a.shape or (0,), "")} for a in arguments],
            max_outs=max(len(kernel["buffers"]) for kernel in kernels),
            identity=number_rows(range(max_entries), " " * 4),
            max_entries=max_entries,
            metadata=_metadata(derivative, content_hash, wrt_is_tuple, parallel_min_points, backend, drivers),
            jacobian=next(kernel for kernel in kernels if kernel["kind"] == "jacobian"),
            runtime=_runtime_text() if standalone else None,
        )

    chunk_template = _environment().get_template("c_chunks.c.j2")
    parts = tuple(
        (f"_{kernel['kind']}_{number}.c", chunk_template.render(
            header=header, kernel=kernel, functions=functions, parameters=kernel["chunks"]["parameters"]))
        for kernel in kernels if kernel["chunks"]
        for number, functions in enumerate(kernel["chunks"]["files"])
    )
    digest = hashlib.sha256(text_with("").encode())
    for name, text in parts:
        digest.update(f"\0{name}\0{text}".encode())
    content_hash = digest.hexdigest()
    return Source(backend, text_with(content_hash), content_hash, tuple(header["kinds"]), parts)
