"""Backends: the one registry of the ways a program becomes runnable code.

Read by ``render.py`` (printer, templates, policies: see ``backend.py``),
``build`` (how a source is loaded follows from :func:`source_suffix`), the
command line and the API (the names). Adding a backend is one
:data:`BACKENDS` entry, its printer, its templates and its tests
(tests/test_backends.py walks this registry and fails on an entry that
misses a piece).

    name         form    prints                                   API source     standalone
    cython       scalar  C point bodies + batch drivers           C kernel lib   Cython module
    numpy        scalar  one numpy expression per element         Python module  the same
    numpy-array  array   whole-array numpy (BLAS contractions)    Python module  the same
    torch-array  array   whole-array torch ops (any device)       Python module  -

Scalar backends render with ``render.render`` (a Program per kernel),
array backends with ``array_render.render_array`` (an ArrayProgram).
"""

from __future__ import annotations

from .array_printing import ArrayPrinter
from .backend import Backend
from .c_backend import CBackend
from .printing import CPrinter, NumpyPrinter

__all__ = ["BACKENDS", "Backend", "get_backend", "source_language", "source_suffix"]


def _c_element(name: str, index: tuple[int, ...]) -> str:
    """``y[1]``, ``W[1][0]`` (arguments arrive as pointers to arrays), ``s[0]`` for a scalar."""
    return name + "".join(f"[{i}]" for i in (index or (0,)))


def _numpy_element(name: str, index: tuple[int, ...]) -> str:
    """``y[:, 1]``, ``W[:, 1, 0]`` (the batch axis first), ``s[:, 0]`` for a scalar."""
    return f"{name}[:, {', '.join(map(str, index or (0,)))}]"


BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (
    CBackend("cython", "cython_module.pyx.j2", ".pyx", CPrinter, _c_element, compiled=True,
             library_template="c_kernels.c.j2", c_tables=True),
    Backend("numpy", "numpy_module.py.j2", ".py", NumpyPrinter, _numpy_element, compiled=False),
    Backend("numpy-array", "array_module.py.j2", ".py", ArrayPrinter, _numpy_element, compiled=False, form="array"),
    Backend("torch-array", "array_module.py.j2", ".py", ArrayPrinter, _numpy_element, compiled=False, form="array"),
)}


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {name!r}") from None


def source_suffix(source) -> str:
    """What a :class:`~symjac.emit.source.Source`'s text is: ``.c`` for a
    kernel library, else its backend's module suffix (``.pyx``, ``.py``)."""
    return ".c" if source.is_library else get_backend(source.backend).suffix


def source_language(source) -> str:
    """What a Source is written in, for people: "C" (a kernel library, also
    the "cython" backend's), "Cython" or "Python"."""
    return {".c": "C", ".pyx": "Cython", ".py": "Python"}[source_suffix(source)]
