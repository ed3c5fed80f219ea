"""The exceptions symjac raises, all in one place.

    SymjacError                      base of everything below
    ├── TracingError (TypeError)     the function cannot be traced (stage: trace)
    ├── InvalidNameError (ValueError) a name cannot become an identifier in generated code
    ├── ShapeError (ValueError)      bad shape specification or call arguments of the wrong shape
    │   └── DeclaredShapeError (ShapeError, IndexError)
    │                                the traced function indexes past an argument's declared shape
    ├── ArgumentError (TypeError)    a call names an argument that does not exist, or one twice
    ├── PrinterError (NotImplementedError)
    │                                generated code cannot express a function the traced code calls
    └── BuildError (RuntimeError)    compiling or loading a generated module failed;
                                     carries the command and the compiler's whole log
    CacheError (SymjacError, PermissionError)
                                     the build cache is unusable or not private to this user

Each class also inherits the builtin exception a caller would naturally catch,
so ``except ValueError`` keeps working around symjac calls.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "BuildError",
    "CacheError",
    "DeclaredShapeError",
    "InvalidNameError",
    "PrinterError",
    "ShapeError",
    "SymjacError",
    "TracingError",
]


class SymjacError(Exception):
    """Base class of every error symjac raises on purpose."""


class TracingError(SymjacError, TypeError):
    """An operation in the traced function cannot be turned into sympy.

    The message names the operation, suggests the fix and, where it can be
    found, the line of the user's function that triggered it.
    """


class InvalidNameError(SymjacError, ValueError):
    """A function, argument or module name is not a safe identifier."""


class ShapeError(SymjacError, ValueError):
    """A shape specification or a call argument has the wrong shape."""


class DeclaredShapeError(ShapeError, IndexError):
    """The traced function indexes an argument beyond the shape it was declared
    with (``y=2`` for code that reads ``y[2]``). The message names the
    argument, its declared shape and the line of the user's function."""


class ArgumentError(SymjacError, TypeError):
    """A call of a compiled object names an argument that does not exist,
    gives one twice, or leaves one out. The message lists the arguments."""


class PrinterError(SymjacError, NotImplementedError):
    """Generated code cannot express a function that the traced code calls
    (e.g. a sympy function without a C or numpy equivalent). The message
    names the function and what to use instead."""


class BuildError(SymjacError, RuntimeError):
    """Generating C, compiling or loading the extension failed.

    ``command`` is the failing command (a list of strings, or a description),
    ``log`` the complete output of the tool that failed.
    """

    def __init__(self, message: str, *, command=None, log: str = "") -> None:
        self.command = command
        self.log = log
        details = message
        if command is not None:
            shown = " ".join(command) if isinstance(command, (list, tuple)) else str(command)
            details += f"\ncommand: {shown}"
        if log:
            details += f"\n--- log ---\n{log.rstrip()}"
        super().__init__(details)


class CacheError(SymjacError, PermissionError):
    """The cache directory cannot be created, or is not private to this user."""
