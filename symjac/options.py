"""The options of a build: one object, carried by every compiled derivative.

Every entry point (``symjac.jacobian``, ``symjac.torch.jacobian``, ...) turns
its keywords into one :class:`Options`; the object it returns keeps it as
``.options``, and every derivative built from that object — the J v and uᵀJ
behind ``Jacobian.linear_operator``, the backward of a torch operator, a
derivative of a derivative — is built with the same options. A leaf module:
it imports only the build stage's compiler options.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from .build.builder import DEFAULT_FLAGS, BuildOptions

__all__ = ["FORMS", "OPTION_NAMES", "Options"]

FORMS = ("auto", "scalar", "array")


@dataclass(frozen=True)
class Options:
    """How a derivative is built.

    ``backend``: "cython", "numpy" or None (Cython where a C compiler works,
    else numpy with a warning). ``form``: "auto", "scalar" or "array" (see
    the array form in the README). ``flags`` replace the default C compiler
    flags (``DEFAULT_FLAGS``; None keeps them). ``native``: build for this
    machine's CPU (``-march=native``; the cache key names the CPU).
    ``vector_math``: SIMD lanes may call glibc's vector libm (within 4 ulp).
    ``verbose``: report each stage on stderr: None (the default) reports
    only a build that takes more than about two seconds (``SYMJAC_QUIET=1``
    silences that), True every build, False none (see ``progress.py``).
    All but ``verbose`` change what is built and are part of its cache key.
    """

    backend: str | None = None
    form: str = "auto"
    flags: tuple[str, ...] | None = None
    native: bool = True
    vector_math: bool = True
    verbose: bool | None = None

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {self.form!r}")
        if self.flags is not None:
            if isinstance(self.flags, str) or not all(isinstance(flag, str) for flag in self.flags):
                raise TypeError(f"flags must be a sequence of strings, got {self.flags!r}")
            object.__setattr__(self, "flags", tuple(self.flags))
        for name in ("native", "vector_math"):
            object.__setattr__(self, name, bool(getattr(self, name)))
        if self.verbose is not None:
            object.__setattr__(self, "verbose", bool(self.verbose))

    @classmethod
    def split(cls, keywords: dict) -> tuple["Options", dict]:
        """An entry point's keywords -> (the options among them, the rest: the
        named shapes). Every entry point takes the options this way, so their
        names and defaults are written here only."""
        rest = dict(keywords)
        return cls(**{name: rest.pop(name) for name in OPTION_NAMES if name in rest}), rest

    def build_options(self) -> BuildOptions:
        """The compiler's share of these options."""
        return BuildOptions(flags=self.flags if self.flags is not None else DEFAULT_FLAGS, native=self.native,
                            vector_math=self.vector_math)

    def with_(self, **changes) -> "Options":
        """A copy with ``changes`` (unknown names are a TypeError)."""
        return replace(self, **changes)


OPTION_NAMES = tuple(field.name for field in fields(Options))  # the keywords every entry point takes
