"""A derivative is a function: the symbolic transformations behind each kind.

Each transformation takes a :class:`~symjac.front.trace.Traced` (a traced user
function, or a derivative turned back into one with
:meth:`~symjac.derive.diff.Derivative.as_traced`) and the indices of the ``wrt``
arguments, and returns a :class:`~symjac.derive.diff.Derivative` that ``simplify``
compiles with the kernel kinds it names. Nothing here touches ``trace.py``.

    what        derivative                               kernel kinds       mode
    function    f itself (order 0)                       function           -
    jacobian    d f / d wrt                              jacobian (+ ...)   forward
    hessian     d2 f / d wrt d wrt                       hessian            reverse for scalar outputs, then forward
    gradient    a function: d f / d wrt, f scalar        function           reverse
    jvp         a function of (*args, v): J v            function           forward
    vjp         a function of (*args, u): u^T J          function           reverse

Forward mode differentiates each output entry in the symbols it contains and
shares the derivatives of shared subexpressions: cheapest when outputs are
many or each depends on few inputs (Jacobians of ODE right-hand sides).
Reverse mode sweeps the expression DAG once from the outputs: a gradient
costs a small multiple of the function whatever the number of inputs, where
forward mode on one long sum is quadratic in its length.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy

from .diff import Derivative, _Differentiator, differentiate, second_derivative
from ..errors import ShapeError
from .reverse import vjp_expressions
from ..front.trace import Argument, Traced, make_symbols

__all__ = ["DERIVATIVES", "DerivativeKind", "function", "gradient", "hessian", "jacobian", "jvp", "vjp"]


def _function_of(traced: Traced, wrt: tuple[int, ...], name: str, outputs, output_is_tuple: bool,
                 extra: tuple[Argument, ...] = ()) -> Derivative:
    """A derivative that is compiled as a plain function (order 0) of the
    arguments and ``extra`` ones; ``name`` stays the original function's."""
    function = Traced(name, traced.arguments + extra, tuple(outputs), output_is_tuple)
    return Derivative(function, tuple(wrt), (), 0, False)


def _shaped_like(traced: Traced, wrt, flat: list) -> list[np.ndarray]:
    """Split expressions over the concatenated ``wrt`` arguments into one array per argument."""
    arrays, start = [], 0
    for j in wrt:
        argument = traced.arguments[j]
        values = np.empty(argument.size, dtype=object)
        values[:] = flat[start:start + argument.size]
        arrays.append(values.reshape(argument.shape))
        start += argument.size
    return arrays


def _fresh_name(base: str, taken) -> str:
    name, number = base, 2
    while name in taken:
        name, number = f"{base}{number}", number + 1
    return name


def function(traced: Traced, wrt, wrt_is_tuple: bool) -> Derivative:
    """The function itself, compiled as a kernel of its own (order 0)."""
    return _function_of(traced, wrt, traced.function_name, traced.outputs, traced.output_is_tuple)


def jacobian(traced: Traced, wrt, wrt_is_tuple: bool) -> Derivative:
    return differentiate(traced, wrt, wrt_is_tuple)


def hessian(traced: Traced, wrt, wrt_is_tuple: bool) -> Derivative:
    return second_derivative(traced, wrt, wrt_is_tuple)


def gradient(traced: Traced, wrt, wrt_is_tuple: bool) -> Derivative:
    """The gradient of a scalar function, shaped like ``wrt`` (a tuple if it is one)."""
    if traced.output_is_tuple or traced.outputs[0].size != 1:
        raise ShapeError(f"gradient needs a function with one scalar output; {traced.function_name} returns "
                         f"shape(s) {', '.join(map(str, traced.output_shapes))} (use symjac.jacobian or symjac.vjp)")
    symbols = [symbol for j in wrt for symbol in traced.arguments[j].symbols.flat]
    flat = vjp_expressions([traced.outputs[0].flat[0]], [sympy.S.One], symbols)
    return _function_of(traced, wrt, traced.function_name, _shaped_like(traced, wrt, flat), wrt_is_tuple)


def jvp(traced: Traced, wrt, wrt_is_tuple: bool) -> Derivative:
    """J v: one tangent argument per ``wrt`` argument (``v``, or ``v_<name>``
    for a tuple ``wrt``), one output per output of the function."""
    taken = {argument.name for argument in traced.arguments}
    tangents = []
    for j in wrt:
        argument = traced.arguments[j]
        name = _fresh_name("v" if not wrt_is_tuple else f"v_{argument.name}", taken)
        taken.add(name)
        tangents.append(Argument(name, argument.shape, make_symbols(name, argument.shape)))
    position = {symbol: (k, flat) for k, j in enumerate(wrt)
                for flat, symbol in enumerate(traced.arguments[j].symbols.flat)}
    d = _Differentiator(position)
    outputs = []
    for output in traced.outputs:
        values = np.empty(output.shape, dtype=object)
        for index, expr in np.ndenumerate(output):
            values[index] = sympy.Add(*[d(expr, symbol) * tangents[position[symbol][0]].symbols.flat[position[symbol][1]]
                                        for symbol in sorted(d.symbols(expr), key=lambda s: position[s])])
        outputs.append(values)
    return _function_of(traced, wrt, traced.function_name, outputs, traced.output_is_tuple, tuple(tangents))


def vjp(traced: Traced, wrt, wrt_is_tuple: bool) -> Derivative:
    """uᵀJ by one reverse sweep: one cotangent argument per output (``u``, or
    ``u0``, ``u1``, ... for a tuple of outputs), results shaped like ``wrt``."""
    taken = {argument.name for argument in traced.arguments}
    cotangents = []
    for number, output in enumerate(traced.outputs):
        name = _fresh_name(f"u{number}" if traced.output_is_tuple else "u", taken)
        taken.add(name)
        cotangents.append(Argument(name, output.shape, make_symbols(name, output.shape)))
    exprs = [expr for output in traced.outputs for expr in output.flat]
    seeds = [symbol for argument in cotangents for symbol in argument.symbols.flat]
    symbols = [symbol for j in wrt for symbol in traced.arguments[j].symbols.flat]
    flat = vjp_expressions(exprs, seeds, symbols)
    return _function_of(traced, wrt, traced.function_name, _shaped_like(traced, wrt, flat), wrt_is_tuple,
                        tuple(cotangents))


@dataclass(frozen=True)
class DerivativeKind:
    """One derivative symjac builds, described once.

    The public entry point ``symjac.<name>``, the command line's ``--kind``,
    the result class (the ``run`` stage's class whose ``DERIVATIVE`` is this
    name) and the adapters are all derived from this entry: adding a
    derivative is one :data:`DERIVATIVES` entry, its result class and its tests.
    """

    name: str  # the entry point, the CLI's --kind, the result class's DERIVATIVE
    title: str  # what it computes, in docs, reprs and generated module docstrings
    transform: Callable[[Traced, tuple, bool], Derivative]  # (traced, wrt indices, wrt is a tuple) -> Derivative
    kernels: tuple[str, ...]  # the kernel kinds (kinds.py) compiled by default
    summary: str  # one line: docstrings and --help
    optional_kernels: tuple[str, ...] = ()  # kernel kinds a caller may add (``kernels=``)

    @property
    def all_kernels(self) -> tuple[str, ...]:
        """Every kernel kind this derivative can be compiled with (standalone modules hold them all)."""
        return self.kernels + self.optional_kernels


DERIVATIVES: dict[str, DerivativeKind] = {kind.name: kind for kind in (
    DerivativeKind("function", "Function", function, ("function",),
                   "The function itself, compiled: batches without a Python loop."),
    DerivativeKind("jacobian", "Jacobian", jacobian, ("jacobian",),
                   "The exact Jacobian: output shape + wrt shape, sparse results from its structural non-zeros.",
                   optional_kernels=("function", "function_and_jacobian")),
    DerivativeKind("hessian", "Hessian", hessian, ("hessian",),
                   "The exact, symmetric Hessian: output shape + x.shape + x.shape, lower-triangle values."),
    DerivativeKind("gradient", "Gradient", gradient, ("function",),
                   "The gradient of a scalar function by reverse mode, shaped like wrt."),
    DerivativeKind("jvp", "Jacobian-vector product", jvp, ("function",),
                   "J v for a tangent v shaped like wrt, without forming J."),
    DerivativeKind("vjp", "Vector-Jacobian product", vjp, ("function",),
                   "uᵀJ by reverse mode for a cotangent u shaped like the output, without forming J."),
)}
