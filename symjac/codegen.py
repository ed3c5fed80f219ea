"""Write standalone generated modules (the engine of ``symjac codegen``).

Runs the pipeline through ``render`` with ``standalone=True`` (the module
embeds the call convention and needs only numpy at import), writes
``DIR/NAME.pyx`` or ``DIR/NAME.py`` atomically and, for Cython, builds the
extension in place next to it. A failed build leaves no extension behind that
could be imported with stale contents; its compiler log is written to
``DIR/NAME.build.log``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .api import ArrayForm, Generated, array_form, generate
from .options import Options
from .build.builder import BuildOptions
from .emit.backends import source_suffix
from .errors import BuildError
from .front.names import check_identifier
from .progress import Reporter
from .derive.derivatives import DERIVATIVES
from .build.toolchain import compile_module, extension_suffix

__all__ = ["write_module", "build_in_place"]


def _atomic_write(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def build_in_place(pyx: Path, name: str, flags=None, parts=(), native=False) -> Path:
    """Compile ``pyx`` (and its C ``parts``) into ``NAME<EXT_SUFFIX>`` beside
    it; return that path. Portable unless ``native`` (``-march=native``)."""
    target = pyx.parent / f"{name}{extension_suffix()}"
    log_path = pyx.parent / f"{name}.build.log"
    workdir = Path(tempfile.mkdtemp(prefix=f".{name}-build-", dir=pyx.parent))
    try:
        options = BuildOptions(native=native) if flags is None else BuildOptions(flags=tuple(flags), native=native)
        extension = compile_module(pyx.read_text(), name, workdir, options.compiler_flags(), parts, options.libraries())
        os.replace(extension, target)
        log_path.unlink(missing_ok=True)
    except BuildError as error:
        target.unlink(missing_ok=True)  # never leave a stale extension importable
        log_path.write_text(f"{error}\n")
        error.log_path = log_path
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return target


def write_module(
    function,
    shapes=(),
    named_shapes=None,
    *,
    wrt=None,
    backend="cython",
    what="jacobian",
    name=None,
    out_dir=".",
    build=True,
    flags=None,
    native=False,
    reporter=None,
    form="scalar",
) -> tuple[Path, Generated | ArrayForm]:
    """Generate the standalone module for ``function``; return its path and the pipeline's result.

    ``what`` is the derivative (``"jacobian"``, with its function and
    function_and_jacobian kernels, ``"hessian"``, ``"gradient"``, ``"jvp"``
    or ``"vjp"``). The module is built portable unless ``native``.
    ``form="array"`` writes the array form as a numpy module (whatever the
    backend: it needs no compiler); "auto" picks as ``symjac.jacobian`` does."""
    reporter = reporter or Reporter(enabled=False)
    name = check_identifier(name if name is not None else getattr(function, "__name__", ""), "module name")
    generated = array_form(what, function, shapes, named_shapes or {}, wrt=wrt, options=Options(form=form),
                           target="numpy", reporter=reporter, standalone=True)
    if generated is None:
        generated = generate(
            function, shapes, named_shapes or {}, wrt=wrt, backend=backend,
            kinds=DERIVATIVES[what].all_kernels, what=what, reporter=reporter, standalone=True
        )
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = source_suffix(generated.source)
    path = directory / f"{name}{suffix}"
    _atomic_write(path, generated.source.text)
    for part_suffix, text in generated.source.parts:  # C files of large kernels
        _atomic_write(directory / f"{name}{part_suffix}", text)
    if suffix == ".pyx" and build:  # a Cython extension module
        with reporter.stage("compiled") as report:
            extension = build_in_place(path, name, flags, generated.source.parts, native)
            report.append(str(extension))
    return path, generated
