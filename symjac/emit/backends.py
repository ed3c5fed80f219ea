"""Backends: the one registry of the ways a program becomes runnable code.

Read by ``render.py`` (template, printer, how an argument element is
written, whether large kernels are split into C files), ``build.py`` (how a
source becomes a module) and the command line (the names). Adding a backend
is one :data:`BACKENDS` entry, a template and a printer. A backend may also
name a kernel-library template and loader: the Python API then renders and
loads that (for "cython": plain C run by the shared kernel runtime), while
standalone modules (``symjac codegen``) keep the full template.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .printing import CPrinter, NumpyPrinter

__all__ = ["BACKENDS", "Backend", "get_backend"]


def _c_element(name: str, index: tuple[int, ...]) -> str:
    """``y[1]``, ``W[1][0]`` (arguments arrive as pointers to arrays), ``s[0]`` for a scalar."""
    return name + "".join(f"[{i}]" for i in (index or (0,)))


def _numpy_element(name: str, index: tuple[int, ...]) -> str:
    """``y[:, 1]``, ``W[:, 1, 0]`` (the batch axis first), ``s[:, 0]`` for a scalar."""
    return f"{name}[:, {', '.join(map(str, index or (0,)))}]"


@dataclass(frozen=True)
class Backend:
    name: str
    template: str  # in templates/
    suffix: str  # of the generated module's file
    printer: type  # expression printer (printing.py)
    element: Callable[[str, tuple[int, ...]], str]  # argument name, element index -> text
    chunks: bool  # large programs become chunk functions in separate C files
    compiled: bool  # needs a C compiler
    loader: str  # the function of build.py that turns a Source into a module
    # For the Python API (not standalone): a kernel library template and the
    # build.py function that loads such a library (None: always the module).
    kernel_template: str | None = None
    kernel_loader: str | None = None
    lanes: bool = False  # batch loops run point bodies across SIMD lanes (render.runs_in_lanes)

    def load(self, source, options):
        from ..build import builder as build

        return getattr(build, self.kernel_loader if source.is_library else self.loader)(source, options)


BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (
    Backend("cython", "cython_module.pyx.j2", ".pyx", CPrinter, _c_element, True, True, "load_compiled",
            "c_kernels.c.j2", "load_kernels", lanes=True),
    Backend("numpy", "numpy_module.py.j2", ".py", NumpyPrinter, _numpy_element, False, False, "execute"),
)}


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {name!r}") from None
