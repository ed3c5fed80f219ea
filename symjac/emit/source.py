"""What ``emit`` hands to ``build``: the :class:`Source` of a module, and the
Jinja environment every template is rendered with.

Kept apart from ``render.py`` so that ``build`` and ``run`` depend on this
small data object and on the templates, not on the renderer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2

__all__ = ["Source", "calling_source", "environment", "number_rows", "runtime_source", "template_dir"]


@dataclass(frozen=True)
class Source:
    """Generated module text for one backend (plus C files for big kernels).

    What the text is, and so how ``build`` loads it, is its suffix
    (``backends.source_suffix``): ``.c`` a kernel library run by the shared
    kernel runtime, ``.pyx`` a Cython extension module, ``.py`` a Python module.
    """

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

    def __str__(self) -> str:
        return self.text


def template_dir() -> Path:
    """The Jinja templates: inside the installed package, or the source checkout's."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "templates", package.parent / "templates"):
        if (candidate / "_header.j2").is_file():
            return candidate
    raise FileNotFoundError("symjac's templates/ directory was not found next to the package")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The house settings: strict undefined names, no autoescape, templates
    that control their own whitespace."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["pyrepr"] = repr
    return env


def number_rows(numbers, indent: str, per_row: int = 16) -> str:
    """Integers as comma-separated rows, for array initialisers."""
    numbers = [str(int(number)) for number in numbers]
    rows = [", ".join(numbers[start:start + per_row]) for start in range(0, len(numbers), per_row)]
    return (",\n" + indent).join(rows)


@lru_cache(maxsize=1)
def runtime_source() -> str:
    """The Cython text of the kernel runtime (the same for every model)."""
    return environment().get_template("kernel_runtime.pyx.j2").render()


def calling_source() -> str:
    """The call convention (``run/calling.py``), embedded verbatim in standalone modules."""
    return (Path(__file__).resolve().parent.parent / "run" / "calling.py").read_text().strip("\n")
