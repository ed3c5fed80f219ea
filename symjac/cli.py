"""The ``symjac`` command line (also ``python -m symjac``).

    symjac codegen TARGET [--arg NAME=SHAPE ...] [--wrt NAME,...]
                   [--kind jacobian,hessian,gradient,jvp,vjp]
                   [--backend cython|numpy] [--name MODULE] [--out DIR]
                   [--no-build] [--quiet]
    symjac cache info|clear

TARGET is ``path/to/file.py:function``, ``package.module:function``, or a
file or module alone, which generates every function in it declared with
``@symjac.spec``. SHAPE is ``3``, ``2x3`` or ``()``. Each ``--kind`` gives
one module: the Jacobian's (or a single kind's with ``--name`` or a declared
name) is named after the function or that name, the others get
``_hessian``, ``_gradient``, ``_jvp`` or ``_vjp`` appended. Errors are one
line on stderr and exit status 1 (2 for usage errors), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path

from . import __version__
from .derive.derivatives import DERIVATIVES
from .emit.backends import BACKENDS
from .errors import BuildError, SymjacError
from .front.names import check_identifier
from .progress import Reporter
from .front.spec import ATTRIBUTE, Spec

__all__ = ["main"]


class CommandError(Exception):
    """A user error the command reports as one line."""


def parse_shape(text: str, name: str):
    """``"3"`` -> 3, ``"2x3"`` -> (2, 3), ``"()"`` -> ()."""
    text = text.strip()
    if text in ("()", ""):
        return ()
    parts = text.lower().split("x")
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise CommandError(f"bad shape {text!r} for argument {name!r}: use N, AxB (e.g. 2x3) or ()")
    dims = tuple(int(part) for part in parts)
    return dims[0] if len(dims) == 1 else dims


def parse_args_option(items) -> dict:
    shapes = {}
    for item in items or ():
        name, equals, shape = item.partition("=")
        if not equals or not name:
            raise CommandError(f"--arg takes NAME=SHAPE, got {item!r}")
        shapes[name.strip()] = parse_shape(shape, name.strip())
    return shapes


def _load_file(path: Path):
    if not path.is_file():
        raise CommandError(f"target file {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"_symjac_target_{abs(hash(str(path.resolve())))}", path)
    if spec is None or spec.loader is None:
        raise CommandError(f"cannot load {str(path)!r} as Python")
    module = importlib.util.module_from_spec(spec)
    module.__symjac_target__ = str(path)  # what messages call it: the user's file, not the internal name
    # Like `python file.py`: the file's directory is importable while it runs.
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def _described(module) -> str:
    """The user's name for ``module``: the file given on the command line, or the module's import name."""
    return getattr(module, "__symjac_target__", None) or module.__name__


def load_target(target: str):
    """Return (module, function name or None)."""
    location, colon, function = target.rpartition(":") if ":" in target else (target, "", "")
    if location.endswith(".py") or "/" in location or "\\" in location:
        module = _load_file(Path(location))
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as error:
            raise CommandError(f"cannot import {location!r}: {error}") from None
    return module, (function or None)


def _targets(module, function_name, args):
    """(function, Spec) pairs to generate."""
    if function_name is not None:
        function = getattr(module, function_name, None)
        if not callable(function):
            defined = sorted(name for name, value in vars(module).items()
                             if callable(value) and getattr(value, "__module__", None) == module.__name__)
            raise CommandError(f"{function_name!r} is not a function in {_described(module)!r}"
                               + (f" (its functions: {', '.join(defined)})" if defined else ""))
        declared = getattr(function, ATTRIBUTE, None)
        if args.arg:
            declared = Spec((), parse_args_option(args.arg), None, None, declared.kind if declared else "jacobian")
        elif declared is None:
            raise CommandError(f"give the shapes of {function_name!r} with --arg NAME=SHAPE, or declare them with @symjac.spec")
        return [(function, declared)]
    found = [(value, getattr(value, ATTRIBUTE)) for _, value in sorted(vars(module).items()) if callable(value) and hasattr(value, ATTRIBUTE)]
    if not found:
        raise CommandError(f"no function in {_described(module)!r} is declared with @symjac.spec; name one as FILE:FUNCTION")
    if args.arg or args.name:
        raise CommandError("--arg and --name need a single FILE:FUNCTION target")
    return found


def codegen(args) -> int:
    from .codegen import write_module

    reporter = Reporter(enabled=not args.quiet)
    module, function_name = load_target(args.target)
    for function, declared in _targets(module, function_name, args):
        wrt = declared.wrt
        if args.wrt:
            names = [name.strip() for name in args.wrt.split(",") if name.strip()]
            wrt = tuple(names) if len(names) > 1 else names[0]
        base = check_identifier(args.name or declared.name or getattr(function, "__name__", None), "module name")
        kinds = parse_kinds(args.kind or declared.kind)
        for what in kinds:
            named = what == "jacobian" or len(kinds) == 1 and (args.name or declared.name)
            name = check_identifier(base if named else f"{base}_{what}", "module name")
            reporter.note(f"symjac codegen: {name} ({what}, {args.backend}) -> {args.out}")
            path, _ = write_module(
                function, declared.shapes, declared.named_shapes, wrt=wrt, backend=args.backend, what=what,
                name=name, out_dir=args.out, build=not args.no_build, native=args.native, reporter=reporter,
                form=args.form,
            )
            reporter.note(f"wrote {path}")
    return 0


def parse_kinds(text: str) -> list[str]:
    """``"hessian,gradient"`` -> ``["hessian", "gradient"]``, checked against the derivatives symjac has."""
    kinds = [kind.strip() for kind in (text or "jacobian").split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in DERIVATIVES]
    if unknown or not kinds:
        raise CommandError(f"--kind takes a comma-separated list of {', '.join(DERIVATIVES)}; got {text!r}")
    return list(dict.fromkeys(kinds))


def cache(args) -> int:
    from .build import builder as build

    root = build.cache_dir()
    entries = build.cache_entries(root)
    kinds = [build.cache.entry_kind(path) for path, _ in entries]
    others = (f"(plus {kinds.count('runtime')} kernel runtime(s), {kinds.count('source')} rendered source(s), "
              f"{kinds.count('warm')} warm-start key(s), {kinds.count('templates')} compiled template(s))")
    leftovers = build.cache.cache_leftovers(root)
    abandoned = [(path, size) for path, size, gone in leftovers if gone]
    running = len(leftovers) - len(abandoned)
    if args.action == "clear":
        build.clear_cache(root)
        print(f"removed {kinds.count('model')} entries {others} and {len(abandoned)} leftover folder(s) of "
              f"interrupted builds from {root}" + (f"; kept {running} build(s) still running" if running else ""))
        return 0
    total = sum(size for _, size in entries) + sum(size for _, size, _ in leftovers)
    left_size = sum(size for _, size in abandoned)
    print(f"cache directory: {root}\nentries: {kinds.count('model')} {others}\n"
          f"leftovers: {len(abandoned)} folder(s) of interrupted builds, {left_size / 2**20:.1f} MiB "
          f"('symjac cache clear' removes them)" + (f"; {running} build(s) running now" if running else "")
          + f"\nsize: {total / 2**20:.1f} MiB")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="symjac", description="Exact, fast Jacobians of numpy-style Python functions.")
    parser.add_argument("--version", action="version", version=f"symjac {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    gen = commands.add_parser(
        "codegen",
        help="write a standalone module computing a function's Jacobian",
        description="Generate a standalone module (imports only numpy) with jacobian(), function() and "
        "function_and_jacobian() for a numpy-style function, and build it in place.",
    )
    gen.add_argument("target", help="path/to/file.py:function, package.module:function, or a file/module whose "
                     "@symjac.spec functions are all generated")
    gen.add_argument("--arg", action="append", metavar="NAME=SHAPE", help="shape of an argument: 3, 2x3 or (); repeat per argument")
    gen.add_argument("--wrt", metavar="NAME[,NAME...]", help="arguments to differentiate (default: the first)")
    gen.add_argument("--kind", metavar="KIND[,KIND...]",
                     help=f"derivatives to generate, one module each: {', '.join(DERIVATIVES)} "
                     "(default: as declared with @symjac.spec, else jacobian)")
    gen.add_argument("--backend", choices=tuple(name for name, backend in BACKENDS.items() if backend.form == "scalar"),
                     default="cython", help="module kind of the scalar form (default: cython)")
    gen.add_argument("--form", choices=("scalar", "array", "auto"), default="scalar",
                     help="scalar: one expression per element (default); array: the array form, a numpy module of "
                     "matmul/einsum (dense linear algebra, any width); auto: as symjac.jacobian picks")
    gen.add_argument("--name", metavar="MODULE", help="module name (default: the function's name)")
    gen.add_argument("--out", metavar="DIR", default="generated", help="output directory (default: generated)")
    gen.add_argument("--no-build", action="store_true", help="write the source only; do not compile it")
    gen.add_argument("--native", action="store_true",
                     help="compile for this machine's CPU (-march=native: its widest SIMD lanes); the built module "
                     "may then fault on another CPU (default: portable)")
    gen.add_argument("--quiet", action="store_true", help="no progress on stderr")
    cache_command = commands.add_parser("cache", help="show or empty the build cache",
                                        description="Show (info) or empty (clear) symjac's build cache "
                                        "($SYMJAC_CACHE_DIR, default ~/.cache/symjac).")
    cache_command.add_argument("action", choices=("info", "clear"))
    return parser


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return cache(args) if args.command == "cache" else codegen(args)
    except BuildError as error:
        summary = str(error).splitlines()[0]
        where = getattr(error, "log_path", None)
        print(f"symjac: error: {summary}" + (f"; compiler log: {where}" if where else ""), file=sys.stderr)
    except (SymjacError, CommandError, ValueError, TypeError) as error:
        print(f"symjac: error: {' '.join(str(error).split())}", file=sys.stderr)
    except Exception as error:  # a failure inside the user's model file
        if os.environ.get("SYMJAC_DEBUG"):
            raise
        print(f"symjac: error: {type(error).__name__}: {' '.join(str(error).split())} "
              "(set SYMJAC_DEBUG=1 for the traceback)", file=sys.stderr)
    return 1
