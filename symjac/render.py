"""Stage 4 — render: straight-line programs -> module source text.

Takes the :class:`~symjac.simplify.Program` of each kernel plus the traced
signature; produces a :class:`Source`, consumed by ``build.py``. Expression
text comes from ``printing.py``; the Jinja templates in the top-level
``templates/`` directory only see already-printed lines, names and counts.

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

from . import __version__
from .diff import Derivative
from .names import InvalidNameError, check_identifier
from .printing import CPrinter, NumpyPrinter, symbol_names
from .simplify import Program

__all__ = ["BACKENDS", "Source", "render", "template_dir"]

BACKENDS = ("cython", "numpy")
_TEMPLATES = {"cython": "cython_module.pyx.j2", "numpy": "numpy_module.py.j2"}
_SUFFIX = {"cython": ".pyx", "numpy": ".py"}
_KIND_DOCS = {
    "jacobian": "Jacobian: writes the non-zero entries of every block d output / d argument.",
    "function": "Function: writes the non-zero entries of every output.",
    "function_and_jacobian": "Function and Jacobian in one pass, sharing subexpressions.",
}


@dataclass(frozen=True)
class Source:
    """Generated module text for one backend."""

    backend: str
    text: str
    content_hash: str
    kinds: tuple[str, ...]

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


def _kernel_context(program: Program, arguments, printer) -> dict:
    used = set()
    for _, expr in program.temporaries:
        used |= expr.free_symbols
    for _, _, expr in program.results:
        used |= expr.free_symbols
    used_arguments = [
        (argument.name, number)
        for number, argument in enumerate(arguments)
        if any(symbol in used for symbol in argument.symbols.flat)
    ]
    return {
        "kind": program.kind,
        "c_name": f"_symjac_{program.kind}",
        "docs": _KIND_DOCS[program.kind],
        "arguments": used_arguments,
        "argument_names": [argument.name for argument in arguments],
        "buffers": [(buffer.name, buffer.size) for buffer in program.buffers],
        "temporaries": [(printer.doprint(symbol), printer.doprint(expr)) for symbol, expr in program.temporaries],
        "results": [(program.buffers[b].name, index, printer.doprint(expr)) for b, index, expr in program.results],
    }


def _safe_function_name(name: str) -> str:
    try:
        return check_identifier(name, "function name")
    except InvalidNameError:
        return "function"


def _metadata(derivative: Derivative, content_hash: str, wrt_is_tuple: bool) -> str:
    traced = derivative.traced
    lines = [
        f"SYMJAC_VERSION = {__version__!r}",
        f"CONTENT_HASH = {content_hash!r}",
        f"ARGUMENT_NAMES = {tuple(argument.name for argument in traced.arguments)!r}",
        f"ARGUMENT_SHAPES = {tuple(argument.shape for argument in traced.arguments)!r}",
        f"WRT = {derivative.wrt!r}",
        f"OUTPUT_SHAPES = {traced.output_shapes!r}",
        f"OUTPUT_IS_TUPLE = {traced.output_is_tuple!r}",
        f"WRT_IS_TUPLE = {wrt_is_tuple!r}",
    ]
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

    ``standalone`` embeds the call convention (``_calling.py``) so that the
    module works without symjac installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    arguments = derivative.traced.arguments
    element = "{name}[{flat}]" if backend == "cython" else "{name}[:, {flat}]"
    printer_type = CPrinter if backend == "cython" else NumpyPrinter
    printer = printer_type(symbol_names(arguments, element))
    kernels = [_kernel_context(program, arguments, printer) for program in programs]
    header = {
        "function": _safe_function_name(derivative.traced.function_name),
        "arguments": [(a.name, a.shape, number in derivative.wrt) for number, a in enumerate(arguments)],
        "output_shapes": [str(shape) for shape in derivative.traced.output_shapes],
        "kinds": [program.kind for program in programs],
        "version": __version__,
        "backend": backend,
        "standalone": standalone,
    }
    template = _environment().get_template(_TEMPLATES[backend])

    def text_with(content_hash: str) -> str:
        return template.render(
            header={**header, "content_hash": content_hash},
            kernels=kernels,
            arg_sizes=[argument.size for argument in arguments],
            max_outs=max(len(kernel["buffers"]) for kernel in kernels),
            metadata=_metadata(derivative, content_hash, wrt_is_tuple),
            runtime=_runtime_text() if standalone else None,
            sparsity=[[index for index, _ in block.entries] for row in derivative.blocks for block in row],
        )

    content_hash = hashlib.sha256(text_with("").encode()).hexdigest()
    return Source(backend, text_with(content_hash), content_hash, tuple(header["kinds"]))
