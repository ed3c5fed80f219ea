"""Compiled Jinja templates in the build cache, so a new process does not compile them again.

Jinja turns each template into Python code the first time a process renders
it: about 0.1 s for a model's templates, a tenth of a small Hessian's whole
build. :class:`TemplateCache` is a Jinja bytecode cache whose buckets are
build-cache entries (``templates-<key>``, ``build/cache.py``): written
atomically, verified before each load; a missing or damaged one is a miss
(Jinja compiles the template as if there were no cache). The key names the
template, its source's checksum, Jinja's version and Python's bytecode magic.
``api.py`` attaches it before rendering for a compiled backend.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
from pathlib import Path

import jinja2

from . import cache
from ..emit.source import environment
from ..errors import BuildError, CacheError

__all__ = ["TemplateCache", "use_template_cache"]

log = logging.getLogger("symjac.build")

PREFIX = "templates-"
FILE = "template.bytecode"


class TemplateCache(jinja2.BytecodeCache):
    """Jinja's compiled templates as entries of the build cache under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @staticmethod
    def _key(bucket) -> str:
        material = f"{bucket.key}\0{bucket.checksum}\0{jinja2.__version__}\0{importlib.util.MAGIC_NUMBER.hex()}"
        return hashlib.sha256(material.encode()).hexdigest()

    def load_bytecode(self, bucket) -> None:
        try:
            path = cache.lookup(self.root, self._key(bucket), PREFIX)
            if path is not None:
                with open(path, "rb") as handle:
                    bucket.load_bytecode(handle)  # checks Jinja's magic and the source checksum itself
        except (OSError, EOFError, ValueError, TypeError, CacheError) as error:
            log.debug("compiled template not loaded (%s): compiling it", error)
            bucket.reset()

    def dump_bytecode(self, bucket) -> None:
        def write(workdir: Path) -> Path:
            path = workdir / FILE
            with open(path, "wb") as handle:
                bucket.write_bytecode(handle)
            return path

        with contextlib.suppress(OSError, BuildError, CacheError):  # not storing it only costs time later
            cache.extension_for(self.root, self._key(bucket), write, prefix=PREFIX)


def use_template_cache(root: Path) -> None:
    """Let the templates of this process be loaded from (and stored in) the cache under ``root``."""
    env = environment()
    current = env.bytecode_cache
    if not (isinstance(current, TemplateCache) and current.root == root):
        env.bytecode_cache = TemplateCache(root)
