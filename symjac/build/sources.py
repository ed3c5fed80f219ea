"""The rendered-source cache: a traced program -> its rendered Source.

Sits between ``trace`` and ``build`` in ``api.py``: a cache hit skips
differentiate, simplify and render, so a new process that asks for a model
it has built before pays the trace, one hash and the load. The key is a hash
of the TRACED program, never of the Python function: every output
expression (walked as a DAG, shared subexpressions once), the argument
names and shapes, the function name, ``wrt``, the derivative, the kernels,
the backend, the thresholds that shape the generated code (CSE, chunking,
inlining, threading), the symjac, sympy and numpy versions and a
fingerprint of symjac's own code and templates. Two functions that trace to
the same program share an entry; a changed body, closure constant or
version misses.

Entries live in the build cache (``build/cache.py``) as ``source-<key>``, with the
same trust rules as built modules: private directory, SHA-256 checked before
use, written atomically, a damaged entry is a miss and is rewritten. The
stored JSON holds the Source fields only: it is read as data, never executed
here (the metadata text is executed by ``build.load_kernels`` like the
module text it belongs to).
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import lru_cache
from pathlib import Path

import numpy
import sympy

from .. import __version__
from . import cache
from ..emit.source import Source, template_dir
from ..front.trace import Traced

__all__ = ["cached_source", "source_key", "store_source"]

log = logging.getLogger("symjac.build")

FILE = "source.json"


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 over symjac's modules and templates: a development checkout
    changes generated code without changing the version."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent
    modules = [path for path in package.rglob("*.py") if "examples" not in path.relative_to(package).parts]
    for path in sorted(modules) + sorted(template_dir().glob("*")):
        if path.is_file():
            name = path.relative_to(package).as_posix() if path.suffix == ".py" else path.name
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _settings() -> dict:
    """Module-level thresholds that change the generated code (tests and
    users may change them at run time, so they are read at each call)."""
    from ..emit import backend, c_backend, simplify

    return {name: getattr(simplify, name) for name in (
        "FULL_CSE_NODES", "CHUNK_THRESHOLD", "CHUNK_THRESHOLD_OPERATIONS", "CHUNK_STATEMENTS",
        "CHUNK_OPERATIONS", "CHUNKS_PER_FILE", "FILE_OPERATIONS", "MIN_FILES", "MAX_FILES")} | {
        name: getattr(c_backend, name) for name in ("INLINE_OPERATIONS", "LANE_OPERATIONS_PER_ELEMENT",
                                                  "LIBM_CALL_COST")} | {
        "PARALLEL_MIN_OPERATIONS": backend.PARALLEL_MIN_OPERATIONS}


def _leaf(node) -> str:
    """An exact, process-independent token for a leaf: ``srepr``'s content,
    spelled directly for the common leaves (``srepr`` is slow on thousands)."""
    if node.is_Symbol and type(node) is sympy.Symbol:
        return f"Symbol({node.name!r}, {sorted(node.assumptions0.items())})"
    if node.is_Integer:
        return f"Integer({node.p})"
    if node.is_Rational:
        return f"Rational({node.p}, {node.q})"
    if node.is_Float:
        return f"Float({node._mpf_!r}, {node._prec})"
    return sympy.srepr(node)


def _update_with_program(digest, outputs) -> None:
    """Feed the expression DAG of ``outputs`` to ``digest``: each distinct
    node once, as its class and the numbers of its arguments; leaves as
    their ``srepr`` (symbol names and assumptions, exact numbers)."""
    numbers: dict = {}

    def visit(root) -> int:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if node in numbers:
                continue
            if node.args and not expanded:
                stack.append((node, True))
                stack.extend((arg, False) for arg in reversed(node.args) if arg not in numbers)
                continue
            if node.args:
                kind = type(node)
                token = f"{kind.__module__}.{kind.__qualname__}({','.join(str(numbers[a]) for a in node.args)})"
            else:
                token = _leaf(node)
            numbers[node] = len(numbers)
            digest.update(token.encode() + b"\n")
        return numbers[root]

    for number, output in enumerate(outputs):
        digest.update(f"output {number} {output.shape}\n".encode())
        roots = [visit(sympy.sympify(expr)) for expr in output.flat]
        digest.update((" ".join(map(str, roots)) + "\n").encode())


def source_key(traced: Traced, wrt: tuple[int, ...], wrt_is_tuple: bool, what: str, kinds, backend: str) -> str:
    """The key of the Source that the pipeline would render for this request."""
    digest = hashlib.sha256()
    digest.update(json.dumps({
        "function": traced.function_name,
        "arguments": [[argument.name, list(argument.shape)] for argument in traced.arguments],
        "symbols": [str(symbol) for argument in traced.arguments for symbol in argument.symbols.flat],
        "output_is_tuple": traced.output_is_tuple,
        "wrt": list(wrt), "wrt_is_tuple": wrt_is_tuple, "what": what, "kinds": list(kinds), "backend": backend,
        "settings": _settings(),
        "symjac": __version__, "sympy": sympy.__version__, "numpy": numpy.__version__,
        "code": code_fingerprint(),
    }, sort_keys=True).encode())
    _update_with_program(digest, traced.outputs)
    return digest.hexdigest()


def cached_source(root: Path, key: str) -> Source | None:
    """The Source stored under ``key``, or None (missing, damaged or foreign-looking
    entries are misses; an entry others may write to is refused, see ``build/cache.py``)."""
    entry = cache.entry_path(root, key, "source-")
    path = cache.lookup(root, key, "source-")
    try:
        if path is None:
            raise ValueError("missing or unverified")
        fields = json.loads(path.read_text())
        if fields.pop("key") != key:
            raise ValueError("another key")
        source = Source(backend=fields["backend"], text=fields["text"], content_hash=fields["content_hash"],
                        kinds=tuple(fields["kinds"]), parts=tuple((str(a), str(b)) for a, b in fields["parts"]),
                        metadata=fields["metadata"])
    except (OSError, ValueError, KeyError, TypeError):
        log.debug("source cache miss %s", entry)
        return None
    log.debug("source cache hit %s", entry)
    return source


def store_source(root: Path, key: str, source: Source) -> None:
    """Store ``source`` under ``key`` (atomically; a damaged entry is replaced)."""
    def write(workdir: Path) -> Path:
        path = workdir / FILE
        path.write_text(json.dumps({
            "key": key, "backend": source.backend, "text": source.text, "content_hash": source.content_hash,
            "kinds": list(source.kinds), "parts": [list(part) for part in source.parts], "metadata": source.metadata,
        }))
        return path

    cache.extension_for(root, key, write, prefix="source-")
