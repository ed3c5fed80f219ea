"""The build cache: one private directory per key, verified before every load.

Used by ``build/builder.py``. The cache (``SYMJAC_CACHE_DIR``, default
``$XDG_CACHE_HOME/symjac`` or ``~/.cache/symjac``) holds one directory per
key; the caller (``build/builder.py``) decides what goes into the key. An entry is
built in a private temporary directory and moved into place with one atomic rename; its
``manifest.json`` records the SHA-256 of the extension, checked before every
load: a missing, truncated or tampered entry is a miss and is rebuilt, never
loaded; an entry that another user owns or can write to is refused with a
:class:`~symjac.CacheError`.

Leftovers: a build that was killed leaves its ``.build-*`` directory (an
interrupted removal a ``.trash-*`` one). :func:`cache_leftovers` finds them
for ``symjac cache info``, and :func:`clear_cache` removes them — but never
a build still running, here or in another process: a build holds an
exclusive ``flock`` on ``.lock`` in its directory while it compiles, which
the kernel releases when the process dies, so a directory whose lock can be
taken is abandoned. Where there is no lock to test (no ``fcntl``, or the
instant before the lock exists) only a directory untouched for
:data:`LEFTOVER_AGE` seconds counts as abandoned.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import BuildError, CacheError

__all__ = ["cache_dir", "cache_entries", "cache_leftovers", "cache_key", "clear_cache", "entry_kind", "entry_path", "extension_for", "lookup", "private_dir",
           "verified_extension"]

try:
    import fcntl
except ImportError:  # not on Windows: leftovers are then recognised by age alone
    fcntl = None

log = logging.getLogger("symjac.build")

MANIFEST = "manifest.json"
LOCK = ".lock"  # held by the build working in a .build-* directory
LEFTOVER_AGE = 3600.0  # seconds without a change after which an unlocked .build-* directory is abandoned
LEFTOVER_PREFIXES = (".build-", ".trash-")


def cache_dir() -> Path:
    """The cache root: ``SYMJAC_CACHE_DIR`` or the user's cache directory."""
    configured = os.environ.get("SYMJAC_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "symjac"


def private_dir(path: Path) -> Path:
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


def cache_key(material: dict) -> str:
    """SHA-256 of ``material`` (JSON-able: everything that can change the built file)."""
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def _tree_size(path: Path) -> int:
    size = 0
    for item in path.rglob("*"):
        with contextlib.suppress(OSError):
            if item.is_file():
                size += item.stat().st_size
    return size


def _abandoned(path: Path) -> bool:
    """Whether no build works in ``path`` any more (see the module docstring)."""
    if path.name.startswith(".trash-"):
        return True
    lock = path / LOCK
    if fcntl is not None:
        try:
            handle = os.open(lock, os.O_RDWR)
        except OSError:
            handle = None  # no lock yet (or any more): judge by age
        if handle is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True  # nobody holds it: the build's process is gone
            except OSError:
                return False
            finally:
                os.close(handle)  # closing releases the lock taken here
    try:
        newest = max([path.stat().st_mtime] + [item.stat().st_mtime for item in path.iterdir()])
    except OSError:
        return False
    return time.time() - newest > LEFTOVER_AGE


def cache_leftovers(root: Path | None = None) -> list[tuple[Path, int, bool]]:
    """(directory, size in bytes, abandoned) of every temporary directory in
    the cache: builds running now (abandoned False) and what killed builds
    or interrupted removals left behind (True)."""
    root = root or cache_dir()
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        if path.name.startswith(LEFTOVER_PREFIXES) and path.is_dir() and not path.is_symlink():
            found.append((path, _tree_size(path), _abandoned(path)))
    return found


@contextlib.contextmanager
def _building(workdir: Path):
    """Hold the lock that tells :func:`clear_cache` this build is running."""
    if fcntl is None:
        yield
        return
    handle = os.open(workdir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
        os.unlink(workdir / LOCK)  # the entry keeps no lock file; the directory is young, so still kept
    finally:
        os.close(handle)


def entry_kind(entry: Path) -> str:
    """"model" (a model's kernels), "runtime" (the shared kernel runtime),
    "source" (the rendered source of a traced program), "warm" (a
    function's key -> its source's, ``warm.py``) or "templates" (a compiled
    Jinja template, ``templates.py``), by the entry's name."""
    for prefix in ("runtime", "source", "warm", "templates"):
        if entry.name.startswith(prefix + "-"):
            return prefix
    return "model"


def clear_cache(root: Path | None = None) -> int:
    """Remove every entry and every abandoned temporary directory (never a
    build still running); return how many entries went."""
    root = root or cache_dir()
    if not root.is_dir():
        return 0
    removed = 0
    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            if entry.name.startswith("."):
                if entry.name.startswith(LEFTOVER_PREFIXES) and not _abandoned(entry):
                    continue  # a build in progress (here or in another process)
            else:
                removed += 1
            _discard(entry, root)
    return removed


def verified_extension(entry: Path) -> Path | None:
    """The extension in ``entry`` if its manifest and hash check out, else None."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        extension = entry / manifest["file"]
        if Path(manifest["file"]).name != manifest["file"]:
            return None
        if extension.stat().st_mode & 0o022 or _file_sha256(extension) != manifest["sha256"]:
            return None
        return extension
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _discard(path: Path, root: Path) -> None:
    """Move ``path`` aside atomically, then delete it."""
    try:
        trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=root))
    except OSError as error:
        raise CacheError(f"cannot remove {path} from the symjac cache directory {root} ({error}); "
                         "make the directory writable, or set SYMJAC_CACHE_DIR to another one") from None
    with contextlib.suppress(OSError):
        os.rename(path, trash / "entry")
    shutil.rmtree(trash, ignore_errors=True)


def entry_path(root: Path, key: str, prefix: str = "") -> Path:
    """Where entry ``key`` lives under ``root``: ``prefix + key[:32]``, with no
    prefix for a model's kernels, ``runtime-`` for the kernel runtime and
    ``source-`` for rendered sources."""
    return root / (prefix + key[:32])


def lookup(root: Path, key: str, prefix: str = "") -> Path | None:
    """The verified file of entry ``key``, or None when the entry is missing
    or damaged (a miss: the caller rebuilds it). An entry that another user
    owns or may write to raises :class:`~symjac.CacheError`."""
    entry = entry_path(root, key, prefix)
    if not (entry.exists() or entry.is_symlink()):
        return None
    _refuse_if_shared(entry)
    return verified_extension(entry)


def extension_for(root: Path, key: str, build: Callable[[Path], Path], prefix: str = "") -> Path:
    """The verified file of entry ``key`` under ``root`` (see :func:`lookup`),
    built first if it is missing or damaged: ``build(workdir)`` writes into
    ``workdir`` (a fresh private directory) and returns the file's path there."""
    entry = entry_path(root, key, prefix)
    extension = lookup(root, key, prefix)
    if extension is not None:
        log.debug("cache hit %s", entry)
        return extension
    log.debug("cache miss %s", entry)
    try:
        workdir = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    except OSError as error:
        raise CacheError(f"cannot build in the symjac cache directory {root} ({error}); "
                         "make it writable or set SYMJAC_CACHE_DIR") from None
    try:
        with _building(workdir):
            built = build(workdir)
        os.chmod(built, built.stat().st_mode & ~0o022)  # private whatever the umask
        manifest = {"key": key, "file": built.name, "sha256": _file_sha256(built)}
        (workdir / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    if entry.exists() and verified_extension(entry) is None:  # a corrupt entry
        _discard(entry, root)
    try:
        os.rename(workdir, entry)
    except OSError:  # another process won the race: use its entry, drop ours
        shutil.rmtree(workdir, ignore_errors=True)
    extension = verified_extension(entry)
    if extension is None:
        raise BuildError(f"the cache entry {entry} could not be written or verified")
    return extension
