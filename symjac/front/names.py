"""Validation of the names that become identifiers in generated code.

A user-supplied name (function, argument or module name) reaches generated
source only through :func:`check_identifier`. The rule is deliberately narrow:
ASCII letters, digits and underscores, starting with a letter, at most 64
characters, and none of the words that would shadow something the generated
Cython, C or numpy code relies on. Names starting with an underscore are
reserved for symjac's own generated identifiers (``_t0``, ``_i`` ...), so a
user name can never collide with them.
"""

from __future__ import annotations

import keyword
import re

from ..errors import InvalidNameError

MAX_LENGTH = 64
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")

_C_KEYWORDS = frozenset(
    """auto break case char const continue default do double else enum extern
    float for goto if inline int long register restrict return short signed
    sizeof static struct switch typedef union unsigned void volatile while
    _Bool _Complex _Imaginary bool true false NULL""".split()
)
# Names the generated kernels call (math.h, numpy alias, Cython/Python helpers).
_USED_BY_GENERATED_CODE = frozenset(
    """np numpy math cython acos acosh asin asinh atan atan2 atanh cbrt ceil
    copysign cos cosh erf erfc exp exp2 expm1 fabs floor fma fmax fmin fmod
    hypot log log10 log1p log2 pow round sin sinh sqrt tan tanh trunc isnan
    isinf abs max min sum range len tuple list dict int float object print
    cimport cdef cpdef ctypedef nogil gil include def self Py_ssize_t
    jacobian function function_and_jacobian""".split()
)
RESERVED = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | _C_KEYWORDS | _USED_BY_GENERATED_CODE


def check_identifier(name: object, what: str = "name") -> str:
    """Return ``name`` if it is a safe identifier for generated code, else raise.

    >>> check_identifier("y", "argument name")
    'y'
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"{what} must be a string, got {type(name).__name__}")
    shown = name if len(name) <= 80 else name[:77] + "..."
    if len(name) > MAX_LENGTH:
        raise InvalidNameError(f"{what} {shown!r} is longer than {MAX_LENGTH} characters")
    if not _IDENTIFIER.match(name):
        raise InvalidNameError(
            f"{what} {shown!r} is not allowed: use ASCII letters, digits and underscores, "
            "starting with a letter (names starting with '_' are reserved for generated code)"
        )
    if name in RESERVED:
        raise InvalidNameError(
            f"{what} {name!r} is a keyword or a name the generated code uses; rename it"
        )
    return name
