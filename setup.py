"""Build symjac's kernel runtime with the package, as Cython projects do.

pyproject.toml holds the project's metadata; this file adds one compiled
extension, ``symjac._runtime``: the kernel runtime (templates/
kernel_runtime.pyx.j2, the same for every model) that ``symjac.build.builder``
otherwise compiles into the user's cache on first use. The .pyx is rendered
from the templates by the very function the package uses at run time
(``symjac.emit.source.runtime_source``, loaded by path: the package's own
dependencies need not be importable here), the SHA-256 of that text is
appended as ``__symjac_runtime_sha256__`` (``builder.installed_runtime``
loads the extension only when it equals the hash of the text the running
package renders), Cython translates it and setuptools compiles it.

Works for ``pip install .``, ``pip install -e .`` (setuptools then builds
the extension next to the sources) and wheels. The extension is optional:
without a C compiler the install still succeeds and symjac builds the runtime
on demand, or runs the numpy backend, as before.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError

ROOT = Path(__file__).resolve().parent
RUNTIME = "symjac._runtime"
# builder.RUNTIME_FLAGS: argument checks and pointer loops, nothing -ffast-math or -march could change.
RUNTIME_FLAGS = ["-O2"]


def runtime_text() -> str:
    """The runtime's Cython text, rendered as ``symjac.emit.source.runtime_source`` renders it."""
    name = "_symjac_source_for_setup"
    spec = importlib.util.spec_from_file_location(name, ROOT / "symjac" / "emit" / "source.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        return module.runtime_source()
    finally:
        del sys.modules[name]


class BuildRuntime(build_ext):
    """build_ext that first renders and cythonizes the kernel runtime."""

    def build_extension(self, ext: Extension) -> None:
        if ext.name == RUNTIME:
            self._cythonize_runtime(ext)
        super().build_extension(ext)

    def _cythonize_runtime(self, ext: Extension) -> None:
        try:
            import numpy
            from Cython.Compiler.Main import CompilationOptions, compile_single, default_options
        except ImportError as error:
            raise CompileError(f"building symjac's kernel runtime needs Cython and numpy: {error}") from error
        text = runtime_text()
        digest = hashlib.sha256(text.encode()).hexdigest()
        workdir = Path(self.build_temp).resolve() / "symjac_runtime"
        workdir.mkdir(parents=True, exist_ok=True)
        pyx, c_file = workdir / "_runtime.pyx", workdir / "_runtime.c"
        pyx.write_text(text + f"\n\n__symjac_runtime_sha256__ = {digest!r}\n")
        options = CompilationOptions(default_options, output_file=str(c_file), language_level=3)
        result = compile_single(str(pyx), options, full_module_name=RUNTIME)
        if result.num_errors:
            raise CompileError(f"Cython reported {result.num_errors} error(s) in {pyx}")
        ext.sources = [str(c_file)]
        ext.include_dirs = [*ext.include_dirs, numpy.get_include()]


setup(
    ext_modules=[Extension(
        RUNTIME,
        sources=["templates/kernel_runtime.pyx.j2"],  # replaced by the rendered, cythonized file
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=RUNTIME_FLAGS,
        optional=True,  # no compiler: install anyway, build on demand (or use the numpy backend)
    )],
    cmdclass={"build_ext": BuildRuntime},
)
