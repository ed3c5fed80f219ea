"""Stage 2 — differentiate: exact partial derivatives, sparsity for free.

Takes a :class:`~symjac.trace.Traced` and the indices of the arguments to
differentiate with respect to; produces a :class:`Derivative`, consumed by
``simplify.py``. Each output entry is differentiated only with respect to the
symbols it contains, so an entry's structural zeros are never even formed:
the sparsity pattern is the set of (output, input) pairs kept. Derivatives of
shared subexpressions are computed once (see ``_Differentiator``), so the work
grows with the size of the expression DAG, not of its unfolded trees.

Derivatives are taken almost everywhere: the Dirac deltas that sympy returns
for ``sign`` and ``heaviside`` are dropped (they are zero away from a point of
measure zero, and numpy's functions are flat there too).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import sympy

from .trace import Traced

__all__ = ["Block", "Derivative", "differentiate"]


@dataclass(frozen=True, eq=False)
class Block:
    """d output[output] / d argument[argument]: its non-zero entries.

    ``entries`` are ``(flat index, expression)`` pairs in increasing index
    order, where the flat index runs over ``shape`` in C order.
    """

    output: int
    argument: int
    shape: tuple[int, ...]
    entries: tuple[tuple[int, sympy.Expr], ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))



@dataclass(frozen=True, eq=False)
class Derivative:
    """The traced function plus its Jacobian blocks ``blocks[i][j]``."""

    traced: Traced
    wrt: tuple[int, ...]
    blocks: tuple[tuple[Block, ...], ...]

    @property
    def nonzeros(self) -> int:
        return sum(len(block.entries) for row in self.blocks for block in row)

    def __str__(self) -> str:
        lines = [f"derivative of {self.traced.function_name}, {self.nonzeros} non-zeros"]
        for row in self.blocks:
            for block in row:
                name = self.traced.arguments[block.argument].name
                lines.append(f"  d output {block.output} / d {name}, shape {block.shape}:")
                lines += [f"    [{index}] = {expr}" for index, expr in block.entries]
        return "\n".join(lines)


def _almost_everywhere(expr: sympy.Expr) -> sympy.Expr:
    if expr.has(sympy.DiracDelta):
        expr = expr.replace(sympy.DiracDelta, lambda *args: sympy.S.Zero)
    return expr


# Piecewise-constant functions: derivative zero almost everywhere.
_FLAT = (sympy.sign, sympy.Heaviside, sympy.floor, sympy.ceiling)


class _Differentiator:
    """Memoised symbolic differentiation over the expression DAG.

    sympy's ``expr.diff(x)`` builds a ``Derivative`` object and queries
    assumptions on every call and caches nothing across calls, so outputs
    sharing a subexpression (every output of an MLP shares the hidden layer)
    differentiate it again and again. Here each (subexpression, symbol) pair
    is differentiated once: the chain, product and quotient rules over
    sympy's own node types, with each function's ``fdiff`` for its partial
    derivatives. Anything unfamiliar falls back to ``sympy.diff``.
    """

    def __init__(self, wanted) -> None:
        self._wanted = frozenset(wanted)
        self._symbols: dict = {}
        self._derivatives: dict = {}

    def symbols(self, node) -> frozenset:
        """The wanted symbols ``node`` depends on."""
        found = self._symbols.get(node)
        if found is None:
            if node.is_Symbol:
                found = self._wanted & {node}
            elif not node.args:
                found = frozenset()
            else:
                found = frozenset().union(*(self.symbols(arg) for arg in node.args))
            self._symbols[node] = found
        return found

    def __call__(self, node, symbol):
        if symbol not in self.symbols(node):
            return sympy.S.Zero
        key = (node, symbol)
        derivative = self._derivatives.get(key)
        if derivative is None:
            derivative = self._derive(node, symbol)
            self._derivatives[key] = derivative
        return derivative

    def _derive(self, node, symbol):
        d = self
        if node.is_Symbol:
            return sympy.S.One
        if node.is_Add:
            return sympy.Add(*[d(arg, symbol) for arg in node.args])
        if node.is_Mul:
            args = node.args
            terms = []
            for i, arg in enumerate(args):
                factor = d(arg, symbol)
                if factor is not sympy.S.Zero:
                    terms.append(sympy.Mul(*args[:i], factor, *args[i + 1:]))
            return sympy.Add(*terms)
        if node.is_Pow:
            base, exponent = node.args
            if symbol not in self.symbols(exponent):
                return exponent * base ** (exponent - 1) * d(base, symbol)
            return node * (d(exponent, symbol) * sympy.log(base) + exponent * d(base, symbol) / base)
        if isinstance(node, sympy.Piecewise):
            return sympy.Piecewise(*[(d(expr, symbol), cond) for expr, cond in node.args])
        if isinstance(node, _FLAT) or isinstance(node, (sympy.logic.boolalg.Boolean, sympy.core.relational.Relational)):
            return sympy.S.Zero
        if isinstance(node, sympy.Function) and not isinstance(node, sympy.core.function.AppliedUndef):
            terms = []
            for number, arg in enumerate(node.args, start=1):
                inner = d(arg, symbol)
                if inner is sympy.S.Zero:
                    continue
                outer = node.fdiff(number)
                if outer.has(sympy.Derivative):
                    break
                terms.append(outer * inner)
            else:
                return _almost_everywhere(sympy.Add(*terms))
        return _almost_everywhere(node.diff(symbol))


def differentiate(traced: Traced, wrt: tuple[int, ...]) -> Derivative:
    """Differentiate every output of ``traced`` with respect to the ``wrt`` arguments."""
    position = {}  # symbol -> (argument index, flat index)
    for number in wrt:
        for flat, symbol in enumerate(traced.arguments[number].symbols.flat):
            position[symbol] = (number, flat)
    d = _Differentiator(position)
    blocks = []
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))  # deep expression trees recurse deeply
    try:
        for out_number, output in enumerate(traced.outputs):
            found = {number: [] for number in wrt}
            for out_flat, expr in enumerate(output.flat):
                for symbol in d.symbols(expr):
                    number, in_flat = position[symbol]
                    derivative = d(expr, symbol)
                    if derivative != 0:
                        in_size = traced.arguments[number].size
                        found[number].append((out_flat * in_size + in_flat, derivative))
            blocks.append(tuple(
                Block(out_number, number, output.shape + traced.arguments[number].shape,
                      tuple(sorted(found[number], key=lambda entry: entry[0])))
                for number in wrt
            ))
    finally:
        sys.setrecursionlimit(limit)
    return Derivative(traced, tuple(wrt), tuple(blocks))
