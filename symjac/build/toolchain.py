"""The C toolchain: find the compiler, translate Cython, compile and link.

Used by ``build/builder.py`` (cached builds: kernel libraries, plain C compiled by
the C compiler alone, and the one kernel runtime extension that runs them)
and ``codegen.py`` (in-place builds of standalone Cython modules). Nothing here knows about the cache: a build is
"source text in, extension file out" in a directory the caller owns. Compiler
failures raise :class:`~symjac.BuildError` carrying the command and the
compiler's whole output.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import re
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import lru_cache
from pathlib import Path

from .. import progress
from ..errors import BuildError

__all__ = ["compile_kernels", "compile_module", "compile_runtime", "compiler_command", "compiler_identity", "compiler_works", "cython_version",
           "extension_suffix", "openmp_works"]

log = logging.getLogger("symjac.build")


def compiler_command() -> list[str]:
    """The C compiler: ``$CC`` or the one Python was built with."""
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


@lru_cache(maxsize=None)
def compiler_identity(command: tuple[str, ...]) -> str:
    try:
        completed = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        return f"unavailable: {error}"
    return completed.stdout.strip() if completed.returncode == 0 else f"unavailable: exit {completed.returncode}"


def compiler_works() -> bool:
    """True when a C compiler and the Python headers are available."""
    if compiler_identity(tuple(compiler_command())).startswith("unavailable"):
        return False
    return (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file()


def _links(command: tuple[str, ...], text: str, flags: tuple[str, ...]) -> bool:
    """Whether C ``text`` compiles and links into a program with ``flags``."""
    with tempfile.TemporaryDirectory() as directory:
        probe = Path(directory) / "probe.c"
        probe.write_text(text)
        try:
            done = subprocess.run([*command, str(probe), "-o", str(Path(directory) / "probe"), *flags],
                                  capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            return False
    return done.returncode == 0


@lru_cache(maxsize=None)
def _openmp_works_with(command: tuple[str, ...]) -> bool:
    return _links(command, "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n",
                  ("-fopenmp",))


def openmp_works() -> bool:
    """True when the C compiler accepts -fopenmp (checked once per process, at build time)."""
    return _openmp_works_with(tuple(compiler_command()))


@lru_cache(maxsize=None)
def _vector_math_works_with(command: tuple[str, ...]) -> bool:
    return _links(command, _VECTOR_MATH_PROBE, ("-O2", "-fopenmp-simd", "-lmvec", "-lm"))


# A lane loop calling vector libm as the kernels declare it (templates/
# _vector_math.j2), compiled and linked: fails where libmvec is missing.
_VECTOR_MATH_PROBE = """#include <math.h>
#if !defined(__GLIBC__) || !defined(__x86_64__) || defined(__clang__)
#error "no libmvec"
#endif
#pragma omp declare simd notinbranch
double exp(double);
double a[8];
int main(void) {
    int i;
    #pragma omp simd
    for (i = 0; i < 8; ++i) a[i] = exp(a[i]);
    return 0;
}
"""


def vector_math_works() -> bool:
    """True when the kernels can declare glibc's vector libm and link -lmvec
    (checked once per process, at build time)."""
    return _vector_math_works_with(tuple(compiler_command()))


@lru_cache(maxsize=None)
def host_cpu() -> str:
    """What ``-march=native`` compiles for: this CPU's model and feature flags."""
    if sys.platform.startswith("linux"):
        try:
            lines = Path("/proc/cpuinfo").read_text().splitlines()
        except OSError:
            lines = []
        wanted = ("model name", "flags", "Features", "CPU part", "cpu family", "model\t", "vendor_id")
        found = {}
        for line in lines:
            if not line.strip():
                break  # the first processor is enough
            if line.startswith(wanted):
                key, _, value = line.partition(":")
                found[key.strip()] = " ".join(value.split())
        if found:
            return "; ".join(f"{key}: {value}" for key, value in sorted(found.items()))
    if sys.platform == "darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string", "machdep.cpu.features",
                                   "hw.optional.arm64"], capture_output=True, text=True, timeout=30)
            if done.stdout.strip():
                return " ".join(done.stdout.split())
    return f"{platform.machine()} {platform.processor()}"


def numpy_include_dir() -> str:
    """numpy's C headers: the fast single-point path uses numpy's C API."""
    import numpy

    return numpy.get_include()


def cython_version() -> str:
    try:
        from Cython import __version__ as version
    except ImportError:
        return "missing"
    return version


def _run(command: list[str], what: str, cwd: Path) -> None:
    log.debug("running %s", shlex.join(command))
    try:
        completed = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    except OSError as error:
        raise BuildError(f"{what} could not be started: {error}", command=command) from None
    if completed.returncode != 0:
        raise BuildError(f"{what} failed with exit code {completed.returncode}", command=command,
                         log=completed.stdout + completed.stderr)


def cythonize(pyx: Path, c_file: Path, module_name: str) -> None:
    """Translate ``pyx`` to ``c_file`` with Cython, in this process."""
    try:
        from Cython.Compiler.Main import CompilationOptions, compile_single, default_options
    except ImportError as error:
        raise BuildError(f"Cython is not installed ({error}); install cython or use backend='numpy'") from None
    options = CompilationOptions(default_options, output_file=str(c_file), language_level=3)
    output = io.StringIO()
    try:
        with contextlib.redirect_stderr(output), contextlib.redirect_stdout(output):
            result = compile_single(str(pyx), options, full_module_name=module_name)
    except Exception as error:  # Cython reports internal failures as many types
        raise BuildError(f"Cython failed on {pyx}: {error}", command=f"cython {pyx}", log=output.getvalue()) from error
    if result.num_errors:
        raise BuildError(f"Cython reported {result.num_errors} error(s) in {pyx}", command=f"cython {pyx}",
                         log=output.getvalue())


def part_flags(flags, parts=()) -> tuple[str, ...]:
    """Compiler flags for the chunk files of a kernel: ``flags`` with the
    optimisation level lowered to -O1. A kernel is chunked when it is large
    (``simplify.CHUNK_THRESHOLD_OPERATIONS``); on its short straight-line
    chunk functions gcc's -O2/-O3 passes cost 1.5-2x the time of -O1 and
    gain nothing measurable (an MLP's Hessian in 2,000-operation chunks:
    0.273 us/pt at -O3, 0.275 at -O1; Lennard-Jones' 0.307 at both)."""
    return tuple("-O1" if flag in ("-O2", "-O3", "-Ofast") else flag for flag in flags)


def compile_extension(c_files: list[Path], extension: Path, flags, parts_flags=None, libraries=()) -> None:
    """Compile C files (in parallel, one process per core) and link them
    into a shared object: a Python extension module or a kernel library. The
    first file is the main one; the others, if any, are kernel chunk files
    compiled with ``parts_flags``."""
    _compile_and_link(c_files, extension, flags, parts_flags, libraries)


def _compile_and_link(c_files: list[Path], extension: Path, flags, parts_flags=None, libraries=()) -> None:
    link = ["-bundle", "-undefined", "dynamic_lookup"] if sys.platform == "darwin" else ["-shared"]
    include = f"-I{sysconfig.get_paths()['include']}"
    numpy_include = [f"-I{numpy_include_dir()}", "-DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION"]
    workdir = c_files[0].parent
    if len(c_files) == 1:
        command = [*compiler_command(), *link, "-fPIC", *flags, include, *numpy_include, str(c_files[0]),
                   "-o", str(extension), *libraries, "-lm"]
        _run(command, "the C compiler", cwd=workdir)
        return
    objects = [c_file.with_suffix(".o") for c_file in c_files]
    commands = [[*compiler_command(), "-c", "-fPIC", *(flags if number == 0 else parts_flags or flags),
                 include, *(numpy_include if number == 0 else []), str(c_file), "-o", str(obj)]
                for number, (c_file, obj) in enumerate(zip(c_files, objects))]
    commands = [commands[0], *sorted(commands[1:], key=lambda command: -Path(command[-3]).stat().st_size)]
    reporter = progress.current()  # the build's reporter (worker threads do not inherit it)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = [pool.submit(_run, command, "the C compiler", workdir) for command in commands]
        for done, future in enumerate(as_completed(futures), 1):
            future.result()
            reporter.progress("compiled C files:", done, len(commands))
    _run([*compiler_command(), *link, *flags, *map(str, objects), "-o", str(extension), *libraries, "-lm"],
         "the linker", cwd=workdir)


def extension_suffix() -> str:
    return sysconfig.get_config_var("EXT_SUFFIX")


def _write_sources(workdir: Path, name: str, main: str, text: str, parts) -> list[Path]:
    """Write the main file ``NAME + main`` and each C part ``NAME + suffix``
    into ``workdir``; return their paths, the main file first."""
    files = [workdir / f"{name}{main}", *(workdir / f"{name}{suffix}" for suffix, _ in parts)]
    for path, content in zip(files, [text, *(part_text for _, part_text in parts)]):
        path.write_text(content)
    return files


# The compile-time estimate: gcc on straight-line kernel code takes about
# this many seconds per megabyte of C at each optimisation level, plus a
# start-up cost per file; files compile in parallel, one per core. Measured
# on generated kernels (a Brusselator, 1.7 MB in 9 files: 35 s; an MLP's
# dense Jacobian, 0.8 MB in 3 files: 38 s) on a busy 2-core x86-64 machine:
# a rough rule, right within a factor of about two.
SECONDS_PER_MB = {"-O0": 8.0, "-O1": 25.0, "-O2": 50.0, "-O3": 60.0}
SECONDS_PER_FILE = 0.15


def estimate_compile_seconds(text: str, parts, flags) -> float:
    """Expected seconds to compile ``text`` and its C ``parts`` with ``flags`` (see SECONDS_PER_MB)."""
    def rate(file_flags) -> float:
        levels = [flag for flag in file_flags if flag in SECONDS_PER_MB]
        return SECONDS_PER_MB[levels[-1]] if levels else SECONDS_PER_MB["-O0"]

    per_file = [SECONDS_PER_FILE + len(text) / 1e6 * rate(flags)]
    chunk_flags = part_flags(flags, parts)
    per_file += [SECONDS_PER_FILE + len(part) / 1e6 * rate(chunk_flags) for _, part in parts]
    cores = max(1, min(os.cpu_count() or 1, len(per_file)))
    return max(max(per_file), sum(per_file) / cores)


def speed_hints(traced) -> list[str]:
    """What would make the build of ``traced`` (a traced function, or None) faster."""
    hints = []
    arguments = getattr(traced, "arguments", ())
    matrices = [argument for argument in arguments if len(argument.shape) >= 2 and argument.size >= 64]
    if matrices:
        shown = ", ".join(f"{argument.name} {argument.shape}" for argument in matrices[:3])
        hints.append(f"form=\"array\" keeps dense linear algebra ({shown}) at array level: its build "
                     "time does not grow with the widths")
    return hints


def _closed_over_constants(text: str, parts) -> int:
    """Numeric literals with many digits in the C text: typically weights the function closes over."""
    pattern = re.compile(r"\d\.\d{8,}")
    return len(pattern.findall(text)) + sum(len(pattern.findall(part)) for _, part in parts)


def _announce(text: str, parts, flags) -> None:
    """Tell the build's reporter what a compile will cost, and what would make it cheaper."""
    reporter = progress.current()
    if not reporter.enabled:
        return
    seconds = estimate_compile_seconds(text, parts, flags)
    if seconds < 1.0:  # not worth a line
        return
    size = (len(text) + sum(len(part) for _, part in parts)) / 1e6
    operations = f"{reporter.operations:,} operations, " if reporter.operations else ""
    lines = [f"  estimate: {operations}{size:.1f} MB of C in {1 + len(parts)} file(s): compiling takes "
             f"about {seconds:.0f} s here"]
    hints = speed_hints(reporter.traced)
    constants = _closed_over_constants(text, parts)
    if constants >= 200:
        hints.append(f"the code spells out {constants:,} numeric constants: if the function closes over weights, "
                     "pass them as arguments (a shape per weight) and the kernel reads them instead")
    lines += [f"    faster: {hint}" for hint in hints]
    for line in lines[:-1]:
        reporter.note(line)
    reporter.estimate(lines[-1], seconds)


def compile_kernels(text: str, name: str, workdir: Path, flags, parts=(), libraries=()) -> Path:
    """A kernel library (plain C ``text`` plus C ``parts``) -> ``NAME.so``
    built in ``workdir`` with the C compiler alone: no Cython."""
    workdir = workdir.resolve()
    _announce(text, parts, flags)
    library = workdir / f"{name}.so"
    c_files = _write_sources(workdir, name, ".c", text, parts)
    started = time.perf_counter()
    compile_extension(c_files, library, flags, part_flags(flags, parts), libraries)
    log.debug("built %s in %.2f s", name, time.perf_counter() - started)
    return library


def compile_module(text: str, module_name: str, workdir: Path, flags, parts=(), libraries=(), *, _link=None) -> Path:
    """Cython source text (plus C ``parts``: (name suffix, text) pairs) ->
    extension module ``module_name`` built in ``workdir``. ``_link`` replaces
    :func:`compile_extension` (see :func:`compile_runtime`)."""
    workdir = workdir.resolve()
    pyx, *part_files = _write_sources(workdir, module_name, ".pyx", text, parts)
    c_file = workdir / f"{module_name}.c"
    extension = workdir / f"{module_name}{extension_suffix()}"
    started = time.perf_counter()
    if _link is None:  # a model (the runtime's own build is the same every time)
        _announce(text, parts, flags)
    cythonize(pyx, c_file, module_name)
    (_link or compile_extension)([c_file, *part_files], extension, flags, part_flags(flags, parts), libraries)
    log.debug("built %s in %.2f s", module_name, time.perf_counter() - started)
    return extension


def compile_runtime(text: str, module_name: str, workdir: Path, flags) -> Path:
    """The kernel runtime (Cython ``text``) -> extension ``module_name`` in
    ``workdir``: a Cython module without C parts, built once per machine and
    toolchain, not once per model. It is linked without going through
    :func:`compile_extension`, which therefore sees model builds only (the
    build tests count those by wrapping it)."""
    return compile_module(text, module_name, workdir, flags, _link=_compile_and_link)
