"""Stage 3 — simplify: one straight-line program per kernel.

Takes a :class:`~symjac.diff.Derivative`; produces a :class:`Program`,
consumed by ``render.py``. Common subexpressions are eliminated over all the
non-zero entries a kernel writes at once (the Jacobian entries, the function
values, or both for ``function_and_jacobian``), so shared work is done once
per point. Structural zeros are never part of a program: programs compute
only non-zero entries, and the rendered drivers fill the zeros of dense rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy

from .diff import Derivative

__all__ = ["Buffer", "Program", "KINDS", "simplify", "count_operations"]

KINDS = ("jacobian", "function", "function_and_jacobian")


@dataclass(frozen=True)
class Buffer:
    """One output array of a kernel: function value ``output`` or block (output, argument)."""

    name: str  # identifier in generated code, e.g. "_f0" or "_jac0_1"
    shape: tuple[int, ...]
    output: int
    argument: int | None = None  # None for a function value

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True, eq=False)
class Program:
    """Temporaries, then assignments ``buffers[b][index] = expr``."""

    kind: str
    buffers: tuple[Buffer, ...]
    temporaries: tuple[tuple[sympy.Symbol, sympy.Expr], ...]
    results: tuple[tuple[int, int, sympy.Expr], ...]  # (buffer number, flat index, expr)

    def __str__(self) -> str:
        lines = [f"program {self.kind}: {len(self.temporaries)} temporaries, {len(self.results)} results"]
        lines += [f"  {symbol} = {expr}" for symbol, expr in self.temporaries]
        lines += [f"  {self.buffers[b].name}[{index}] = {expr}" for b, index, expr in self.results]
        return "\n".join(lines)


def count_operations(exprs) -> int:
    """Operations needed to evaluate ``exprs`` as written, without sharing.

    An n-ary Add or Mul counts n - 1, every other operation or function call
    one. Sizes of repeated subtrees are memoised, so counting an expression
    whose tree is exponentially larger than its DAG stays cheap.
    """
    sizes: dict = {}

    def size(node) -> int:
        known = sizes.get(node)
        if known is not None:
            return known
        if not node.args or node.is_Atom:
            result = 0
        else:
            own = len(node.args) - 1 if isinstance(node, (sympy.Add, sympy.Mul)) else 1
            result = own + sum(size(arg) for arg in node.args)
        sizes[node] = result
        return result

    return sum(size(expr) for expr in exprs)


def _buffers_and_entries(derivative: Derivative, kind: str):
    buffers, entries = [], []
    if kind in ("function", "function_and_jacobian"):
        for number, output in enumerate(derivative.traced.outputs):
            buffers.append(Buffer(f"_f{number}", output.shape, number))
            entries.append([(flat, expr) for flat, expr in enumerate(output.flat) if expr != 0])
    if kind in ("jacobian", "function_and_jacobian"):
        for row in derivative.blocks:
            for block in row:
                buffers.append(Buffer(f"_jac{block.output}_{block.argument}", block.shape, block.output, block.argument))
                entries.append(list(block.entries))
    return buffers, entries


# Up to this many distinct subexpressions, sympy's own cse runs: it also
# factors common arguments out of sums and products (10-30 % fewer operations)
# but its cost grows fast (8.6 s for the 4,000-state Brusselator, where the
# one-pass elimination below takes 0.6 s).
FULL_CSE_NODES = 8_000


def eliminate_common_subexpressions(exprs):
    """``(temporaries, reduced)``: every non-trivial subexpression occurring
    more than once across ``exprs`` is computed once, into ``_t<k>``.

    Small programs go through ``sympy.cse`` (see :data:`FULL_CSE_NODES`).
    Large ones get exact matching of whole subexpressions in one pass over
    the expression DAG: occurrences are counted by hash (sympy expressions
    are hash-consed by value), then each expression is rebuilt bottom-up with
    memoisation. Only arithmetic expressions become temporaries there:
    conditions of Piecewise stay in place, so every temporary is a real.
    """
    counts: dict = {}
    order: list = []  # distinct composite nodes, children before parents
    for root in exprs:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if not node.args or node.is_Atom:
                continue
            seen = counts.get(node)
            counts[node] = (seen or 0) + 1
            if seen is None:
                stack.append((node, True))
                stack.extend((arg, False) for arg in reversed(node.args))
    if len(order) <= FULL_CSE_NODES:
        return sympy.cse(exprs, symbols=sympy.numbered_symbols("_t", real=True), optimizations=None, order="none")
    repeated = {node for node in order if counts[node] > 1 and isinstance(node, sympy.Expr)
                and not (node.is_Mul and len(node.args) == 2 and node.args[0] is sympy.S.NegativeOne
                         and not node.args[1].args)}
    names = sympy.numbered_symbols("_t", real=True)
    rebuilt: dict = {}
    temporaries = []
    for node in order:  # children first, so arguments are rebuilt already
        args = [rebuilt.get(arg, arg) for arg in node.args]
        new = node if all(a is b for a, b in zip(args, node.args)) else node.func(*args)
        if node in repeated:
            symbol = next(names)
            temporaries.append((symbol, new))
            new = symbol
        rebuilt[node] = new
    return temporaries, [rebuilt.get(expr, expr) for expr in exprs]


def simplify(derivative: Derivative, kind: str = "jacobian") -> Program:
    """Build the straight-line program for one kernel ``kind`` (see :data:`KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    buffers, entries = _buffers_and_entries(derivative, kind)
    targets = [(b, flat) for b, found in enumerate(entries) for flat, _ in found]
    exprs = [expr for found in entries for _, expr in found]
    temporaries, reduced = eliminate_common_subexpressions(exprs)
    results = tuple((b, flat, expr) for (b, flat), expr in zip(targets, reduced))
    return Program(kind, tuple(buffers), tuple(temporaries), results)
