"""Stage 5 — build: compile a rendered module and cache it on disk.

Takes a :class:`~symjac.render.Source`; returns an imported module, consumed
by ``runtime.py``. numpy sources are executed in a fresh module object (no
compiler, no disk). Cython sources are translated to C in-process, compiled
with the C compiler into an extension and loaded by path with importlib
(never via ``sys.path`` or ``chdir``).

The cache (``SYMJAC_CACHE_DIR``, default ``$XDG_CACHE_HOME/symjac`` or
``~/.cache/symjac``) holds one directory per key. The key hashes everything
that can change the built file: the source text, compiler command, version
and flags, Python version and ABI, Cython and symjac versions. The module is
named after the key, so two processes asking for the same Jacobian share one
entry. An entry is built in a private temporary directory and moved into place
with one atomic rename; its ``manifest.json`` records the SHA-256 of the
extension, checked before every load: a missing, truncated or tampered entry
is a miss and is rebuilt, never loaded; an entry that another user owns or
can write to is refused with a :class:`~symjac.CacheError`. ``symjac cache
info`` and ``symjac cache clear`` show and empty the cache. Set
``SYMJAC_DEBUG=1`` (or configure
the ``symjac.build`` logger) to see hits, misses and compile commands.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from . import __version__
from .errors import BuildError, CacheError
from .render import Source

__all__ = ["DEFAULT_FLAGS", "BuildOptions", "cache_dir", "compiler_works", "load"]

log = logging.getLogger("symjac.build")
if os.environ.get("SYMJAC_DEBUG"):
    logging.basicConfig()
    log.setLevel(logging.DEBUG)

DEFAULT_FLAGS = ("-O3",)
_MANIFEST = "manifest.json"
_loaded: dict[str, types.ModuleType] = {}
_loaded_lock = threading.Lock()


@dataclass(frozen=True)
class BuildOptions:
    """How to compile, and where the cache lives.

    ``flags`` are portable by default; ``native`` adds ``-march=native``
    (fast, but the extension may not run on another CPU); ``openmp`` compiles
    the batch loop with ``-fopenmp`` where the compiler supports it. All of
    them are part of the cache key. No ``-ffast-math`` unless put in flags.
    """

    flags: tuple[str, ...] = DEFAULT_FLAGS
    native: bool = False
    openmp: bool = True
    cache_dir: Path | None = None

    def compiler_flags(self) -> tuple[str, ...]:
        extra = ("-march=native",) if self.native else ()
        if self.openmp and openmp_works():
            extra += ("-fopenmp",)
        return tuple(self.flags) + extra


def cache_dir() -> Path:
    """The cache root: ``SYMJAC_CACHE_DIR`` or the user's cache directory."""
    configured = os.environ.get("SYMJAC_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "symjac"


def _private_dir(path: Path) -> Path:
    """Create ``path`` (0700) if needed and refuse it if others could write to it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError as error:
        raise CacheError(f"cannot use {path} as the symjac cache directory ({error}); "
                         "set SYMJAC_CACHE_DIR to a writable directory") from None
    if not path.is_dir():
        raise CacheError(f"symjac cache path {path} is not a directory; set SYMJAC_CACHE_DIR")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise CacheError(f"symjac cache directory {path} belongs to another user; set SYMJAC_CACHE_DIR to a directory of yours")
    if info.st_mode & 0o022:
        raise CacheError(
            f"symjac cache directory {path} is writable by other users (mode {oct(info.st_mode & 0o777)}); "
            f"run 'chmod 700 {path}' or set SYMJAC_CACHE_DIR"
        )
    return path


def compiler_command() -> list[str]:
    """The C compiler: ``$CC`` or the one Python was built with."""
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


@lru_cache(maxsize=None)
def _compiler_identity(command: tuple[str, ...]) -> str:
    try:
        completed = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        return f"unavailable: {error}"
    return completed.stdout.strip() if completed.returncode == 0 else f"unavailable: exit {completed.returncode}"


def compiler_works() -> bool:
    """True when a C compiler and the Python headers are available."""
    if _compiler_identity(tuple(compiler_command())).startswith("unavailable"):
        return False
    return (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file()


@lru_cache(maxsize=None)
def _openmp_works_with(command: tuple[str, ...]) -> bool:
    with tempfile.TemporaryDirectory() as directory:
        probe = Path(directory) / "probe.c"
        probe.write_text("#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        try:
            done = subprocess.run([*command, "-fopenmp", str(probe), "-o", str(Path(directory) / "probe")],
                                  capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            return False
    return done.returncode == 0


def openmp_works() -> bool:
    """True when the C compiler accepts -fopenmp (checked once per process, at build time)."""
    return _openmp_works_with(tuple(compiler_command()))


def numpy_include_dir() -> str:
    """numpy's C headers: the fast single-point path uses numpy's C API."""
    import numpy

    return numpy.get_include()


def _cython_version() -> str:
    try:
        from Cython import __version__ as version
    except ImportError:
        return "missing"
    return version


def cache_key(source: Source, options: BuildOptions) -> str:
    material = {
        "source": source.text,
        "parts": [list(part) for part in source.parts],
        "flags": list(options.flags),
        "native": options.native,
        "openmp": options.openmp,
        "compiler": compiler_command(),
        "compiler_version": _compiler_identity(tuple(compiler_command())),
        "python": sys.version,
        "abi": sysconfig.get_config_var("EXT_SUFFIX"),
        "platform": sysconfig.get_platform(),
        "cython": _cython_version(),
        "numpy": importlib.metadata.version("numpy"),
        "symjac": __version__,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def _refuse_if_shared(entry: Path) -> None:
    """An entry that another user owns or may write to could have been
    tampered with: refuse it, loudly, rather than load or silently replace it."""
    for path in (entry, *entry.iterdir()):
        info = path.lstat()
        foreign = hasattr(os, "getuid") and info.st_uid != os.getuid()
        if foreign or info.st_mode & 0o022 or path.is_symlink():
            raise CacheError(
                f"refusing to load {path}: it is a link, belongs to another user, or other users may write to it; "
                "remove the entry (symjac cache clear) and build again"
            )


def cache_entries(root: Path | None = None) -> list[tuple[Path, int]]:
    """(entry directory, size in bytes) of every entry in the cache."""
    root = root or cache_dir()
    if not root.is_dir():
        return []
    entries = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and not entry.name.startswith("."):
            entries.append((entry, sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())))
    return entries


def clear_cache(root: Path | None = None) -> int:
    """Remove every entry (and leftover temporary directory); return how many entries went."""
    root = root or cache_dir()
    if not root.is_dir():
        return 0
    removed = 0
    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            removed += not entry.name.startswith(".")
            _discard(entry, root)
    return removed


def _verified_extension(entry: Path) -> Path | None:
    """The extension in ``entry`` if its manifest and hash check out, else None."""
    try:
        manifest = json.loads((entry / _MANIFEST).read_text())
        extension = entry / manifest["file"]
        if Path(manifest["file"]).name != manifest["file"]:
            return None
        if extension.stat().st_mode & 0o022 or _file_sha256(extension) != manifest["sha256"]:
            return None
        return extension
    except (OSError, ValueError, KeyError, TypeError):
        return None


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


# Chunk files of kernels larger than this (bytes of C, in all) compile at
# -O1: gcc's -O2/-O3 passes cost about twice the time on straight-line code
# for a few percent of speed, and a big model would wait minutes.
LARGE_KERNEL_BYTES = 1_000_000


def part_flags(flags, parts) -> tuple[str, ...]:
    """Compiler flags for the chunk files of a kernel: ``flags``, with the
    optimisation level lowered to -O1 for very large kernels."""
    if sum(len(text) for _, text in parts) <= LARGE_KERNEL_BYTES:
        return tuple(flags)
    return tuple("-O1" if flag in ("-O2", "-O3", "-Ofast") else flag for flag in flags)


def compile_extension(c_files: list[Path], extension: Path, flags, parts_flags=None) -> None:
    """Compile C files (in parallel, one process per core) and link them
    into a Python extension module. The first file is Cython's output; the
    others, if any, are kernel chunk files compiled with ``parts_flags``."""
    link = ["-bundle", "-undefined", "dynamic_lookup"] if sys.platform == "darwin" else ["-shared"]
    include = f"-I{sysconfig.get_paths()['include']}"
    numpy_include = [f"-I{numpy_include_dir()}", "-DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION"]
    workdir = c_files[0].parent
    if len(c_files) == 1:
        command = [*compiler_command(), *link, "-fPIC", *flags, include, *numpy_include, str(c_files[0]),
                   "-o", str(extension), "-lm"]
        _run(command, "the C compiler", cwd=workdir)
        return
    objects = [c_file.with_suffix(".o") for c_file in c_files]
    commands = [[*compiler_command(), "-c", "-fPIC", *(flags if number == 0 else parts_flags or flags),
                 include, *(numpy_include if number == 0 else []), str(c_file), "-o", str(obj)]
                for number, (c_file, obj) in enumerate(zip(c_files, objects))]
    commands = [commands[0], *sorted(commands[1:], key=lambda command: -Path(command[-3]).stat().st_size)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(lambda command: _run(command, "the C compiler", cwd=workdir), commands))
    _run([*compiler_command(), *link, *flags, *map(str, objects), "-o", str(extension), "-lm"], "the linker", cwd=workdir)


def extension_suffix() -> str:
    return sysconfig.get_config_var("EXT_SUFFIX")


def compile_module(text: str, module_name: str, workdir: Path, flags, parts=()) -> Path:
    """Cython source text (plus C ``parts``: (name suffix, text) pairs) ->
    extension module ``module_name`` built in ``workdir``."""
    workdir = workdir.resolve()
    pyx = workdir / f"{module_name}.pyx"
    c_file = workdir / f"{module_name}.c"
    extension = workdir / f"{module_name}{extension_suffix()}"
    pyx.write_text(text)
    part_files = []
    for suffix, part_text in parts:
        part_files.append(workdir / f"{module_name}{suffix}")
        part_files[-1].write_text(part_text)
    started = time.perf_counter()
    cythonize(pyx, c_file, module_name)
    compile_extension([c_file, *part_files], extension, flags, part_flags(flags, parts))
    log.debug("built %s in %.2f s", module_name, time.perf_counter() - started)
    return extension


def _build_entry(source: Source, options: BuildOptions, root: Path, key: str, module_name: str) -> Path:
    """Build into a fresh temporary directory under ``root``; return it."""
    workdir = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        extension = compile_module(source.text, module_name, workdir, options.compiler_flags(), source.parts)
        manifest = {"key": key, "module": module_name, "file": extension.name, "sha256": _file_sha256(extension)}
        (workdir / _MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        return workdir
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _discard(path: Path, root: Path) -> None:
    """Move ``path`` aside atomically, then delete it."""
    trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=root))
    with contextlib.suppress(OSError):
        os.rename(path, trash / "entry")
    shutil.rmtree(trash, ignore_errors=True)


def _load_cython(source: Source, options: BuildOptions) -> types.ModuleType:
    root = _private_dir(options.cache_dir or cache_dir())
    key = cache_key(source, options)
    module_name = f"_symjac_{key[:32]}"
    with _loaded_lock:
        if key in _loaded:
            return _loaded[key]
    entry = root / key[:32]
    if entry.exists() or entry.is_symlink():
        _refuse_if_shared(entry)
    extension = _verified_extension(entry) if entry.exists() else None
    if extension is not None:
        log.debug("cache hit %s", entry)
    else:
        log.debug("cache miss %s", entry)
        built = _build_entry(source, options, root, key, module_name)
        if entry.exists():  # a corrupt entry, or another process finished first
            if _verified_extension(entry) is None:
                _discard(entry, root)
        try:
            os.rename(built, entry)
        except OSError:  # another process won the race: use its entry, drop ours
            shutil.rmtree(built, ignore_errors=True)
        extension = _verified_extension(entry)
        if extension is None:
            raise BuildError(f"the cache entry {entry} could not be written or verified")
    module = _import_by_path(module_name, extension)
    with _loaded_lock:
        return _loaded.setdefault(key, module)


def _load_numpy(source: Source) -> types.ModuleType:
    module = types.ModuleType(f"_symjac_numpy_{source.content_hash[:16]}")
    code = compile(source.text, f"<symjac numpy module {source.content_hash[:16]}>", "exec")
    exec(code, module.__dict__)
    return module


def load(source: Source, options: BuildOptions | None = None) -> types.ModuleType:
    """Return the module for ``source``: executed (numpy) or compiled and cached (cython)."""
    if source.backend == "numpy":
        return _load_numpy(source)
    return _load_cython(source, options or BuildOptions())
