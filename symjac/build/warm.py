"""Warm starts: a Python function's own fingerprint -> its rendered source, without tracing.

Sits in front of ``trace`` in ``api.compile_derivative``. The rendered-source
cache (``sources.py``) is keyed by the *traced* program, so a new process
must trace before it can look anything up: for a big model the trace is most
of a warm start. This module keys an entry by the *function* instead, as
numba's cache does (numba: code object and source stamp), and maps it to
the key of the rendered source it built; a hit loads that source and the
derivative object traces only if someone asks for its symbolic form.

What a function key covers (:func:`function_key`), each part because it can
change what the trace produces:

- the code: bytecode, constants (nested code objects — lambdas,
  comprehensions — recursively), the names it uses, argument and variable
  names, flags, exception table, ``__name__`` (printed into the module);
- default and keyword-only default arguments;
- closure cell values;
- every global the code (or its nested code) reads, looked up as Python
  would: the function's module globals, else builtins;
- values by content: None, bools, ints, floats (exact, ``float.hex``),
  complex, strings, bytes, tuples, lists, dicts, sets of plain values,
  numpy arrays (exact type ``ndarray``: dtype, shape and bytes; not object
  arrays), numpy scalars and dtypes, sympy expressions (``srepr``),
  ``functools.partial``;
- functions recursively by the same rules (a helper it calls, a helper's
  globals, ...), cycles by reference;
- modules, functions, classes and ufuncs of *installed* packages (found
  under a site-packages directory, or in the standard library) by name and
  version: numpy's functions are numpy's version's; anything in a module
  outside site-packages (the user's own modules, editable installs, a
  development checkout) is described by content instead: the module's
  attributes that the code names;
- the request: positional and named shapes, ``wrt``, the derivative, its
  kernels, the build options (all but ``verbose``);
- the symjac, numpy, sympy and Python versions, symjac's code fingerprint
  and the code-shaping thresholds (as in ``sources.source_key``).

Anything else — an object of a type not listed (a class instance, a bound
method of one, a user-defined class, a generator), a function that assigns
globals or reads names by string (``getattr``, ``globals()``, ``eval``) —
makes the function *un-keyable*: it is traced as before, so an unknown input
can cost a trace but never give a wrong hit. Like numba and JAX, a warm
start assumes the function is a function of its inputs and of the code it
names: one that draws random numbers, reads files or ``os.environ`` while
traced, or an installed package whose module state was patched at run time,
gets the program of its first build.

Entries live in the build cache as ``warm-<key>`` (a small JSON file naming
the source key, with the cache's trust rules: private directory, SHA-256
checked, atomic writes). A hit whose source entry is gone is a miss. The
object built from a hit traces lazily when ``.derivative`` or ``.traced()``
is asked for, and checks that the trace still gives the program it was
built from (the function may have changed since).
"""

from __future__ import annotations

import contextlib
import dis
import functools
import hashlib
import json
import logging
import site
import sys
import sysconfig
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy
import sympy

from .. import __version__
from . import cache
from .builder import _enable_debug_log
from .sources import _settings, cached_source, code_fingerprint
from ..emit.source import Source

__all__ = ["Hit", "Unkeyable", "describe", "function_key", "lookup", "remember"]

log = logging.getLogger("symjac.build")

FILE = "warm.json"


class Unkeyable(Exception):
    """Raised inside :func:`describe` for a value it cannot hash reliably."""


# --------------------------------------------------------------------------
# which modules are trusted by version


@functools.lru_cache(maxsize=1)
def _installed_roots() -> tuple[Path, ...]:
    """The site-packages directories: code found there is an installed package's."""
    roots = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    roots.append(site.getusersitepackages())
    roots += [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    return tuple(Path(root).resolve() for root in dict.fromkeys(roots) if root)


def _stamp(file) -> str:
    """numba's source stamp of a file: modification time and size."""
    try:
        info = Path(file).stat()
    except (OSError, TypeError, ValueError):
        return "no file"
    return f"{info.st_mtime_ns} {info.st_size}"


@functools.lru_cache(maxsize=None)
def module_version(name: str) -> str | None:
    """What stands for the code of module ``name``: Python's version for the
    standard library; for a package installed under site-packages its
    version plus the source stamp of the module's file (a reinstall without
    a new version changes it); None for anything else (described by content)."""
    top = name.partition(".")[0]
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if top in sys.stdlib_module_names or top == "builtins":
        stdlib = [Path(sysconfig.get_paths()[kind]).resolve() for kind in ("stdlib", "platstdlib")]
        if not file or any(Path(file).resolve().is_relative_to(root) for root in stdlib):
            return f"python {sys.version}"
        return None  # a local module shadowing the standard library's name
    if not file:
        return None
    path = Path(file).resolve()
    if not any(path.is_relative_to(root) for root in _installed_roots()):
        return None
    version = getattr(sys.modules.get(top), "__version__", None)
    if not isinstance(version, str):
        try:
            import importlib.metadata

            version = importlib.metadata.version(top)
        except Exception:  # no distribution of that name: describe by content
            return None
    return f"{top} {version} {_stamp(path)}"


def _by_reference(obj) -> tuple | None:
    """(module, qualname, version) when ``obj`` is reachable by name in a
    versioned module (an installed package's function, class or ufunc)."""
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if not isinstance(module_name, str) or not isinstance(qualname, str):
        return None
    version = module_version(module_name)
    module = sys.modules.get(module_name)
    if version is None or module is None:
        return None
    found = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return (module_name, qualname, version) if found is obj else None


# --------------------------------------------------------------------------
# the describer


@functools.lru_cache(maxsize=4096)
def _code_names(code: types.CodeType) -> tuple[frozenset, frozenset]:
    """(globals read, all names) of ``code`` and its nested code objects;
    raises Unkeyable for a function that assigns or deletes globals."""
    globals_read, names = set(), set(code.co_names)
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"):
            if instruction.argval in DYNAMIC_LOOKUPS:
                raise Unkeyable(f"{code.co_name} calls {instruction.argval}(): names read by value, not by code")
            globals_read.add(instruction.argval)
        elif instruction.opname in ("STORE_GLOBAL", "DELETE_GLOBAL", "STORE_NAME", "DELETE_NAME"):
            raise Unkeyable(f"{code.co_qualname if hasattr(code, 'co_qualname') else code.co_name} assigns globals")
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            inner_globals, inner_names = _code_names(constant)
            globals_read |= inner_globals
            names |= inner_names
    return frozenset(globals_read), frozenset(names)


# Builtins that read names given as strings (getattr(module, "W"),
# globals()["W"], eval): what they read is not in the code's names, so a
# function that uses them is traced every time.
DYNAMIC_LOOKUPS = frozenset({"getattr", "globals", "vars", "locals", "eval", "exec", "compile", "__import__"})

_CODE_FIELDS = ("co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_flags", "co_names", "co_varnames",
                "co_freevars", "co_cellvars", "co_name", "co_qualname")

_MISSING = object()


class _Describer:
    """Feeds an unambiguous, tagged pre-order serialisation of values to a
    SHA-256: each token is its tag, its payload's length and the payload."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        # Functions, containers and modules being described (id -> depth): a
        # cycle becomes a back-reference token. Finished objects are described
        # again where they recur, so the token stream never depends on which
        # equal objects happen to be the same object in this process.
        self.active: dict[int, int] = {}

    def token(self, tag: str, payload: bytes | str = b"") -> None:
        if isinstance(payload, str):
            payload = payload.encode("utf-8", "surrogatepass")
        self.digest.update(tag.encode() + b":" + str(len(payload)).encode() + b":" + payload + b";")

    @contextlib.contextmanager
    def entering(self, value):
        """Yields True while ``value`` is described, False (after a
        back-reference token) when it is already being described: a cycle."""
        depth = self.active.get(id(value))
        if depth is not None:
            self.token("cycle", str(depth))
            yield False
            return
        self.active[id(value)] = len(self.active)
        try:
            yield True
        finally:
            del self.active[id(value)]

    def value(self, value, names: frozenset = frozenset()) -> None:
        kind = type(value)
        if value is None or value is Ellipsis or value is NotImplemented:
            self.token("const", repr(value))
        elif kind in (bool, int):
            self.token(kind.__name__, repr(value))
        elif kind is float:
            self.token("float", value.hex())
        elif kind is complex:
            self.token("complex", f"{value.real.hex()} {value.imag.hex()}")
        elif kind is str:
            self.token("str", value)
        elif kind is bytes:
            self.token("bytes", value)
        elif kind in (tuple, list):
            with self.entering(value) as first:
                if first:
                    self.token(kind.__name__, str(len(value)))
                    for item in value:
                        self.value(item, names)
        elif kind is dict:
            with self.entering(value) as first:
                if not first:
                    return
                self.token("dict", str(len(value)))
                for key, item in value.items():
                    self.value(key, names)
                    self.value(item, names)
        elif kind in (set, frozenset):
            if not all(type(item) in (bool, int, float, str, bytes) for item in value):
                raise Unkeyable(f"a {kind.__name__} of values other than numbers and strings")
            self.token(kind.__name__, repr(sorted(value, key=lambda item: (type(item).__name__, repr(item)))))
        elif kind is numpy.ndarray:
            if value.dtype.hasobject:
                raise Unkeyable("a numpy array of Python objects")
            self.token("ndarray", f"{value.dtype.str} {value.dtype.descr!r} {value.shape}")
            self.token("data", numpy.ascontiguousarray(value).tobytes())
        elif isinstance(value, numpy.generic) and kind.__module__ == "numpy":
            if value.dtype.hasobject:
                raise Unkeyable("a numpy object scalar")
            self.token("npscalar", f"{value.dtype.str} {value.dtype.descr!r}")
            self.token("data", value.tobytes())
        elif kind is numpy.dtype or isinstance(value, numpy.dtype):
            self.token("dtype", repr(value))
        elif isinstance(value, sympy.Basic):
            self.token("sympy", sympy.srepr(value))
        elif kind is types.ModuleType:
            self.module(value, names)
        elif kind is types.FunctionType:
            self.function(value)
        elif kind is functools.partial:
            self.token("partial")
            self.value(value.func, names)
            self.value(value.args, names)
            self.value(value.keywords, names)
        elif kind is types.MethodType:
            self.token("method")
            self.value(value.__func__, names)
            self.value(value.__self__, names)
        elif isinstance(value, (type, numpy.ufunc, types.BuiltinFunctionType)) or callable(value):
            reference = _by_reference(value)
            if reference is None:
                raise Unkeyable(f"{value!r} is neither a plain function nor found by name in an installed package")
            self.token("ref", " ".join(reference))
        else:
            raise Unkeyable(f"a value of type {kind.__module__}.{kind.__qualname__}")

    def module(self, module: types.ModuleType, names: frozenset) -> None:
        version = module_version(module.__name__)
        if version is not None:
            self.token("module", f"{module.__name__} {version}")
            return
        # A module not installed as a package: what the code may read from it.
        with self.entering(module) as first:
            if first:
                self.token("local module", module.__name__)
                for name in sorted(names):
                    attribute = getattr(module, name, _MISSING)
                    if attribute is not _MISSING:
                        self.token("attribute", name)
                        self.value(attribute, names)

    def code(self, code: types.CodeType) -> None:
        self.token("code")
        for field in _CODE_FIELDS:
            self.token(field, repr(getattr(code, field, None)))
        self.token("co_code", code.co_code)
        self.token("co_exceptiontable", getattr(code, "co_exceptiontable", b""))
        self.token("co_consts", str(len(code.co_consts)))
        for constant in code.co_consts:
            if isinstance(constant, types.CodeType):
                self.code(constant)
            else:
                self.value(constant)

    def function(self, function: types.FunctionType) -> None:
        reference = _by_reference(function)
        if reference is not None:  # an installed package's function: its version stands for its code
            self.token("ref", " ".join(reference))
            return
        with self.entering(function) as first:
            if first:
                self._function_body(function)

    def _function_body(self, function: types.FunctionType) -> None:
        if getattr(function, "__signature__", None) is not None:
            raise Unkeyable(f"{function.__qualname__} carries a __signature__")
        code = function.__code__
        globals_read, names = _code_names(code)
        self.token("function", f"{function.__name__}")
        self.code(code)
        self.token("defaults")
        self.value(function.__defaults__, names)
        self.value(function.__kwdefaults__, names)
        self.token("closure", str(len(function.__closure__ or ())))
        for name, cell in zip(code.co_freevars, function.__closure__ or ()):
            self.token("cell", name)
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                self.token("empty")
                continue
            self.value(contents, names)
        namespace = function.__globals__
        builtins = namespace.get("__builtins__", {})
        builtins = builtins.__dict__ if isinstance(builtins, types.ModuleType) else builtins
        for name in sorted(globals_read):
            self.token("global", name)
            if name in namespace:
                self.value(namespace[name], names)
            elif name in builtins:
                real = getattr(sys.modules["builtins"], name, _MISSING)
                if builtins[name] is real:
                    self.token("builtin", name)
                else:
                    self.value(builtins[name], names)
            else:
                self.token("undefined", name)
        wrapped = getattr(function, "__wrapped__", None)  # inspect.signature follows it
        if wrapped is not None:
            self.token("wrapped")
            self.value(wrapped, names)


def describe(value) -> str:
    """SHA-256 of ``value`` by the rules above; raises :class:`Unkeyable`."""
    describer = _Describer()
    describer.value(value)
    return describer.digest.hexdigest()


# --------------------------------------------------------------------------
# keys and entries


def _shape(spec):
    """A shape as the key spells it: ``3`` and ``(3,)`` alike (anything else as given, by content)."""
    if isinstance(spec, (int, numpy.integer)) and not isinstance(spec, (bool, numpy.bool_)):
        return [int(spec)]
    if isinstance(spec, (tuple, list)) and all(isinstance(n, (int, numpy.integer)) and not isinstance(n, bool)
                                                for n in spec):
        return [int(n) for n in spec]
    raise Unkeyable(f"shape {spec!r}")


def function_key(what: str, function, shapes, named_shapes, wrt, kinds, options) -> str | None:
    """The key of this request for a plain Python ``function``, or None when
    it cannot be keyed reliably (then the caller traces, as without this module)."""
    if type(function) is not types.FunctionType:
        return None
    try:
        function_hash = describe(function)
        request = {
            "function": function_hash,
            "shapes": [_shape(spec) for spec in shapes],
            "named_shapes": {str(name): _shape(spec) for name, spec in sorted((named_shapes or {}).items())},
            "wrt": describe(wrt),
            "what": what, "kinds": list(kinds),
            "options": {name: getattr(options, name) for name in sorted(vars(options)) if name != "verbose"},
            "versions": {"symjac": __version__, "numpy": numpy.__version__, "sympy": sympy.__version__,
                         "python": sys.version},
            "code": code_fingerprint(),
            "settings": _settings(),
        }
        return cache.cache_key(request)
    except Unkeyable as reason:
        log.debug("warm start: %s cannot be keyed (%s); tracing it", getattr(function, "__qualname__", function),
                  reason)
        return None
    except (TypeError, ValueError, RecursionError) as error:  # anything odd: trace, never guess
        log.debug("warm start: keying %r failed (%s); tracing it", function, error)
        return None


@dataclass(frozen=True)
class Hit:
    """A warm-start hit: the stored source and the key of the traced program it came from."""

    source: Source
    source_key: str

    def derive_later(self, trace: Callable, transform: Callable, source_key_of: Callable) -> Callable:
        """``derive=`` for the compiled object: trace now (``trace()`` ->
        (traced, indices, wrt_is_tuple)), check that the function still traces to
        the program that was built, then differentiate."""
        def derive():
            traced, indices, wrt_is_tuple = trace()
            if source_key_of(traced, indices, wrt_is_tuple) != self.source_key:
                raise ValueError(f"{traced.function_name} no longer traces to the program it was built from "
                                 "(a value it reads changed since): build it again")
            return transform(traced, indices, wrt_is_tuple)
        return derive


def lookup(root: Path, key: str | None) -> Hit | None:
    """The hit for function key ``key``: its entry and its source entry, both
    verified; anything missing or damaged is a miss."""
    if key is None:
        return None
    _enable_debug_log()
    path = cache.lookup(root, key, "warm-")
    try:
        if path is None:
            raise ValueError("missing or unverified")
        fields = json.loads(path.read_text())
        if fields["key"] != key:
            raise ValueError("another key")
        source_key = str(fields["source_key"])
    except (OSError, ValueError, KeyError, TypeError):
        log.debug("warm start miss %s", cache.entry_path(root, key, "warm-"))
        return None
    source = cached_source(root, source_key)
    if source is None:
        return None
    log.debug("warm start hit %s", cache.entry_path(root, key, "warm-"))
    return Hit(source, source_key)


def remember(root: Path, key: str | None, source_key: str) -> None:
    """Record that function key ``key`` renders the source stored under ``source_key``."""
    if key is None:
        return

    def write(workdir: Path) -> Path:
        path = workdir / FILE
        path.write_text(json.dumps({"key": key, "source_key": source_key}))
        return path

    cache.extension_for(root, key, write, prefix="warm-")
