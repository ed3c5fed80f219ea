"""Stage 4, build: turn a rendered module into an imported module.

Takes a :class:`~symjac.emit.source.Source`; returns a module, consumed by
``run/runtime.py``. How a source becomes a module is its backend's business
(``emit/backends.py``): numpy sources are executed in a fresh module object (no
compiler, no disk); the Cython backend's sources for the Python API are
*kernel libraries* (:func:`load_kernels`): one plain C file per model,
compiled by the C compiler alone (no Cython, no Python headers) into a shared
library kept in the build cache (``build/cache.py``), opened by the *kernel
runtime* (:func:`kernel_runtime`): one Cython extension, built with the
package at install (``setup.py``: ``symjac/_runtime``) and otherwise on
first use and cached under its own key (its text, compiler, Python, Cython,
numpy), that checks buffers, releases the GIL and holds the compiled common call
for every model. Full Cython modules (``load_compiled``) are still built the
old way. Extensions are loaded by path with importlib (never via
``sys.path`` or ``chdir``); a module is loaded once per process and key.

The cache key hashes everything that can change the built file: the source
text and C parts, the compiler command, its version and flags, Python version
and ABI, Cython, numpy and symjac versions. The module is named after the
key, so two processes asking for the same module share one entry. Set
``SYMJAC_DEBUG=1`` (or configure the ``symjac`` logger) to see hits, misses
and compile commands.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import sys
import sysconfig
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from . import cache, toolchain
from .cache import cache_dir, cache_entries, clear_cache, verified_extension  # noqa: F401 - re-exported
from ..errors import BuildError
from ..emit.backends import source_suffix
from ..emit.source import Source, runtime_source
from .toolchain import compiler_works  # noqa: F401 - re-exported

__all__ = ["DEFAULT_FLAGS", "BuildOptions", "cache_dir", "cache_key", "compiler_works", "load", "toolchain_fingerprint"]

log = logging.getLogger("symjac.build")

# -fno-math-errno lets the compiler use the sqrt instruction and vector
# libm calls (errno is never read by a kernel; no result changes).
# -ffp-contract=off: every expression is computed as written, one rounding
# per operation, so chunking, SIMD lanes, inlining and threads change no
# bit of a result (-march=native would otherwise fuse some a*b + c into FMAs
# depending on the shape of the code around them).
DEFAULT_FLAGS = ("-O3", "-fno-math-errno", "-ffp-contract=off")
# The lane loops' `#pragma omp simd` needs only -fopenmp-simd (no runtime).
SIMD_FLAGS = ("-fopenmp-simd",)
# Vector libm (templates/_vector_math.j2, linked with -lmvec). gcc merges
# sin(x) and cos(x) into one sincos call, which has no vector version and
# would keep the whole lane loop scalar: the -fno-builtin flags prevent it.
VECTOR_MATH_FLAGS = ("-DSYMJAC_VECTOR_MATH", "-fno-builtin-sin", "-fno-builtin-cos")
# Where a kernel build first tries vector libm without probing for it.
VECTOR_MATH_LIKELY = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")
_loaded: dict[str, types.ModuleType] = {}
_loaded_lock = threading.Lock()


@dataclass(frozen=True)
class BuildOptions:
    """How to compile, and where the cache lives.

    ``flags`` replace the default optimisation flags. ``native`` adds
    ``-march=native``: code for this machine's CPU, with its widest vectors
    (AVX2: 4 doubles per lane block; see ``templates/_kernels.c.j2``); the
    cache key then names the CPU's model and feature flags, so a cache shared
    by different machines never loads a module another CPU cannot run. The
    Python API builds native, ``symjac codegen`` portable. ``vector_math``
    lets the lane loops call glibc's vector libm (libmvec, within 4 ulp;
    where it is missing the build goes on without). ``openmp`` compiles the
    batch loop with ``-fopenmp`` where the compiler supports it. All of them
    are part of the cache key. No ``-ffast-math`` unless put in flags.
    """

    flags: tuple[str, ...] = DEFAULT_FLAGS
    native: bool = False
    openmp: bool = True
    vector_math: bool = True
    cache_dir: Path | None = None

    def compiler_flags(self, openmp: bool | None = None, vector_math: bool | None = None) -> tuple[str, ...]:
        """The flags to compile with; ``openmp=True`` and ``vector_math=True``
        add ``-fopenmp`` and vector libm (when asked for) without first
        probing the compiler for them (a probe is a compile and a link)."""
        extra = ("-march=native",) if self.native else ()
        extra += SIMD_FLAGS
        if self._vector_math(vector_math):
            extra += VECTOR_MATH_FLAGS
        if self.openmp and (openmp if openmp is not None else toolchain.openmp_works()):
            extra += ("-fopenmp",)
        return tuple(self.flags) + extra

    def libraries(self, vector_math: bool | None = None) -> tuple[str, ...]:
        """Link flags after the objects: libmvec for vector math."""
        return ("-lmvec",) if self._vector_math(vector_math) else ()

    def _vector_math(self, assumed: bool | None) -> bool:
        return self.vector_math and (assumed if assumed is not None else toolchain.vector_math_works())


def toolchain_fingerprint() -> dict:
    """Everything outside the source that can change a built file: the
    compiler command and version, Python and its ABI, the platform, and the
    Cython, numpy and symjac versions. Part of every key of a built file."""
    command = toolchain.compiler_command()
    return {
        "compiler": command,
        "compiler_version": toolchain.compiler_identity(tuple(command)),
        "python": sys.version,
        "abi": sysconfig.get_config_var("EXT_SUFFIX"),
        "platform": sysconfig.get_platform(),
        "cython": toolchain.cython_version(),
        "numpy": importlib.metadata.version("numpy"),
        "symjac": __version__,
    }


def cache_key(source: Source, options: BuildOptions) -> str:
    """The key of the extension built from ``source`` with ``options``."""
    return cache.cache_key({
        "source": source.text,
        "parts": [list(part) for part in source.parts],
        "metadata": source.metadata,
        "flags": list(options.flags),
        "native": options.native,
        "cpu": toolchain.host_cpu() if options.native else "portable",
        "openmp": options.openmp,
        "vector_math": options.vector_math,
        "recipe": [*SIMD_FLAGS, *VECTOR_MATH_FLAGS],  # flags added to options.flags
        **toolchain_fingerprint(),
    })


def _load_once(key: str, load: Callable[[], types.ModuleType]) -> types.ModuleType:
    """The module of ``key``, made by ``load()`` the first time this process
    asks for it. ``load`` runs outside the lock (a build may take minutes and
    other keys must not wait); when two threads race, both build (the cache
    makes that safe) and the first module stored is the one every caller gets."""
    with _loaded_lock:
        if key in _loaded:
            return _loaded[key]
    module = load()
    with _loaded_lock:
        return _loaded.setdefault(key, module)


def _import_by_path(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise BuildError(f"cannot load the extension {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as error:
        raise BuildError(f"loading the extension {path} failed: {error}") from error
    return module


def _enable_debug_log() -> None:
    """``SYMJAC_DEBUG=1``: log to stderr, configured on first use, never at import."""
    logger = logging.getLogger("symjac")
    if os.environ.get("SYMJAC_DEBUG") and not logger.handlers:
        logger.addHandler(logging.StreamHandler())
        logger.setLevel(logging.DEBUG)


def load_compiled(source: Source, options: BuildOptions) -> types.ModuleType:
    """Compile ``source`` (or find it in the cache) and import it."""
    _enable_debug_log()
    root = cache.private_dir(options.cache_dir or cache_dir())  # refused even when loaded already
    key = cache_key(source, options)
    module_name = f"_symjac_{key[:32]}"

    def compile_into(workdir: Path) -> Path:
        return toolchain.compile_module(source.text, module_name, workdir, options.compiler_flags(), source.parts,
                                        options.libraries())

    return _load_once(key, lambda: _import_by_path(module_name, cache.extension_for(root, key, compile_into)))


# The kernel runtime is compiled with these flags whatever a model's flags
# are: it holds argument checks and loops over pointers, no arithmetic that
# -ffast-math or -march could change.
RUNTIME_FLAGS = ("-O2",)


def runtime_key() -> str:
    """The key of the kernel runtime: its text and everything that builds it."""
    return cache.cache_key({"runtime": runtime_source(), "flags": list(RUNTIME_FLAGS), **toolchain_fingerprint()})


def installed_runtime_path() -> Path:
    """Where ``setup.py`` puts the kernel runtime it builds with the package:
    ``symjac/_runtime`` + this interpreter's extension suffix (so a file built
    for another Python ABI or platform is simply not found)."""
    return Path(__file__).resolve().parent.parent / f"_runtime{toolchain.extension_suffix()}"


def installed_runtime() -> types.ModuleType | None:
    """The kernel runtime built with the package, or None when there is none
    that matches this process (then :func:`kernel_runtime` builds it on demand).

    It matches when (1) it exists under this interpreter's extension suffix
    (Python version, ABI and platform), (2) it imports — numpy's own check at
    import refuses a numpy whose C ABI it was not built for, as for any
    installed Cython extension — and (3) the SHA-256 of the runtime text it
    was built from (``__symjac_runtime_sha256__``, set by setup.py) equals that
    of the text this package renders now: an editable install whose templates
    changed since the build, or a runtime from another symjac, is never used.
    The rest of the on-demand key (compiler, flags, Cython and numpy versions)
    names what could make a *cached* file stale or foreign; an installed file
    was built for this environment by its installer and is trusted like any
    installed code, and the kernel libraries it opens are checked against its
    ABI when they load (``templates/_abi.h``)."""
    def load() -> types.ModuleType | None:
        path = installed_runtime_path()
        if not path.is_file():
            log.debug("no installed kernel runtime at %s", path)
            return None
        try:
            module = _import_by_path("symjac._runtime", path)
        except Exception as error:  # a broken install is a miss, as a damaged cache entry is
            log.debug("the installed kernel runtime does not load: %s", error)
            return None
        expected = hashlib.sha256(runtime_source().encode()).hexdigest()
        if getattr(module, "__symjac_runtime_sha256__", None) != expected:
            log.debug("the installed kernel runtime %s was built from another runtime text", path)
            return None
        log.debug("using the installed kernel runtime %s", path)
        return module

    return _load_once("runtime-installed", load)


def kernel_runtime(root: Path) -> types.ModuleType:
    """The kernel runtime extension (templates/kernel_runtime.pyx.j2): the one
    built with the package when it matches (:func:`installed_runtime`), else
    built on first use into the cache entry ``runtime-<key>`` and shared by
    every model built with the same toolchain."""
    installed = installed_runtime()
    if installed is not None:
        return installed
    key = runtime_key()
    module_name = f"_symjac_runtime_{key[:32]}"

    def compile_into(workdir: Path) -> Path:
        return toolchain.compile_runtime(runtime_source(), module_name, workdir, RUNTIME_FLAGS)

    return _load_once(key, lambda: _import_by_path(
        module_name, cache.extension_for(root, key, compile_into, prefix="runtime-")))


def load_kernels(source: Source, options: BuildOptions) -> types.ModuleType:
    """Compile a kernel library (or find it in the cache), open it with the
    kernel runtime and return a module object like a generated Cython
    module's: the metadata, ``KERNELS``, ``POINT_KINDS``, ``make_entry``."""
    _enable_debug_log()
    root = cache.private_dir(options.cache_dir or cache_dir())  # refused even when loaded already
    key = cache_key(source, options)
    name = f"_symjac_{key[:32]}"

    def compile_into(workdir: Path) -> Path:
        # Try -fopenmp and vector libm first: probing the compiler for them
        # costs a compile and a link each, every process (a third of a small
        # model's cold build). Only when that fails are the probes asked
        # what to build without (the outcome depends on the toolchain alone,
        # which the key names). Vector libm exists on glibc x86-64 only.
        vector_math = VECTOR_MATH_LIKELY or None  # None: probe for it now
        try:
            return toolchain.compile_kernels(
                source.text, name, workdir, options.compiler_flags(openmp=True, vector_math=vector_math),
                source.parts, options.libraries(vector_math))
        except BuildError:
            openmp, vector_math = toolchain.openmp_works(), toolchain.vector_math_works()
            if (openmp or not options.openmp) and (vector_math or not options.vector_math):
                raise  # not the toolchain: the source itself
        return toolchain.compile_kernels(source.text, name, workdir, options.compiler_flags(openmp, vector_math),
                                         source.parts, options.libraries(vector_math))

    def open_library() -> types.ModuleType:
        path = cache.extension_for(root, key, compile_into)
        runtime = kernel_runtime(root)
        try:
            model = runtime.Model(str(path))
        except ImportError as error:
            raise BuildError(f"loading the kernel library {path} failed: {error}") from error
        module = types.ModuleType(name, f"Kernels of {source.content_hash[:16]}, run by symjac's kernel runtime.")
        module.__file__ = str(path)
        namespace = module.__dict__
        namespace["_nonzero_tables"] = lambda: model.nonzeros
        exec(compile(source.metadata, f"<symjac metadata {source.content_hash[:16]}>", "exec"), namespace)
        del namespace["_nonzero_tables"]
        namespace.update(MODEL=model, KERNELS=model.kernels, POINT_KINDS=model.point_kinds,
                         make_entry=model.make_entry)
        return module

    return _load_once(key, open_library)


def execute(source: Source, options: BuildOptions | None = None) -> types.ModuleType:
    """Run a pure-Python (numpy backend) source in a fresh module object,
    once per process and source (an unpickled object reuses it)."""
    key = "numpy:" + hashlib.sha256(source.text.encode()).hexdigest()  # of the text that runs

    def run() -> types.ModuleType:
        module = types.ModuleType(f"_symjac_numpy_{source.content_hash[:16]}")
        exec(compile(source.text, f"<symjac numpy module {source.content_hash[:16]}>", "exec"), module.__dict__)
        return module

    return _load_once(key, run)


def load(source: Source, options: BuildOptions | None = None) -> types.ModuleType:
    """Return the module for ``source``, loaded the way its text needs:
    a kernel library with the kernel runtime, a Cython module compiled, a
    Python module executed."""
    loader = {".c": load_kernels, ".pyx": load_compiled, ".py": execute}[source_suffix(source)]
    return loader(source, options or BuildOptions())
