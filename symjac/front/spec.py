"""``@symjac.spec``: declare a model's shapes in code for ``symjac codegen``.

    @symjac.spec(y=3, k=3, wrt="y")
    def rober(y, k): ...

The decorator returns the function unchanged, with the declaration stored as
``function.__symjac_spec__``; ``symjac codegen models.py`` generates a module
for every declared function in ``models.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .names import check_identifier

__all__ = ["Spec", "spec", "ATTRIBUTE"]

ATTRIBUTE = "__symjac_spec__"


@dataclass(frozen=True)
class Spec:
    """Shapes (positional and by name), ``wrt`` and the generated module's name."""

    shapes: tuple = ()
    named_shapes: dict = field(default_factory=dict)
    wrt: object = None
    name: str | None = None
    kind: str = "jacobian"  # the derivative(s) to generate, e.g. "hessian" or "hessian,gradient"


def spec(*shapes, wrt=None, name=None, kind="jacobian", **named_shapes):
    """Attach shapes, ``wrt``, the derivative ``kind`` (as ``--kind``) and an
    optional module ``name`` to a function."""
    if name is not None:
        check_identifier(name, "module name")

    def declare(function):
        setattr(function, ATTRIBUTE, Spec(tuple(shapes), dict(named_shapes), wrt, name, kind))
        return function

    return declare
