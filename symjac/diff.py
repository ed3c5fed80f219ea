"""Stage 2 — differentiate: exact partial derivatives, sparsity for free.

Takes a :class:`~symjac.trace.Traced` and the indices of the arguments to
differentiate with respect to; produces a :class:`Derivative`, consumed by
``simplify.py``. Each output entry is differentiated only with respect to the
symbols it contains, so an entry's structural zeros are never even formed:
the sparsity pattern is the set of (output, input) pairs kept.

Derivatives are taken almost everywhere: the Dirac deltas that sympy returns
for ``sign`` and ``heaviside`` are dropped (they are zero away from a point of
measure zero, and numpy's functions are flat there too).
"""

from __future__ import annotations

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

    @property
    def sparsity(self) -> np.ndarray:
        pattern = np.zeros(self.size, dtype=bool)
        pattern[[index for index, _ in self.entries]] = True
        return pattern.reshape(self.shape)


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


def differentiate(traced: Traced, wrt: tuple[int, ...]) -> Derivative:
    """Differentiate every output of ``traced`` with respect to the ``wrt`` arguments."""
    position = {}  # symbol -> (argument index, flat index)
    for number, argument in enumerate(traced.arguments):
        for flat, symbol in enumerate(argument.symbols.flat):
            position[symbol] = (number, flat)
    blocks = []
    for out_number, output in enumerate(traced.outputs):
        found = {number: [] for number in wrt}
        for out_flat, expr in enumerate(output.flat):
            for symbol in expr.free_symbols:
                number, in_flat = position.get(symbol, (None, None))
                if number not in found:
                    continue
                derivative = _almost_everywhere(expr.diff(symbol))
                if derivative != 0:
                    in_size = traced.arguments[number].size
                    found[number].append((out_flat * in_size + in_flat, derivative))
        blocks.append(tuple(
            Block(out_number, number, output.shape + traced.arguments[number].shape, tuple(sorted(found[number], key=lambda e: e[0])))
            for number in wrt
        ))
    return Derivative(traced, tuple(wrt), tuple(blocks))
