"""Stage 2 — differentiate: exact partial derivatives, sparsity for free.

Takes a :class:`~symjac.front.trace.Traced` and the indices of the arguments to
differentiate with respect to; produces a :class:`Derivative`, consumed by
``simplify.py``. Each output entry is differentiated only with respect to the
symbols it contains, so an entry's structural zeros are never even formed:
the sparsity pattern is the set of (output, input) pairs kept. Derivatives of
shared subexpressions are computed once (see ``_Differentiator``), so the work
grows with the size of the expression DAG, not of its unfolded trees.

A :class:`Derivative` of any order (:func:`second_derivative` gives Hessian
blocks, differentiating only the lower triangle) turns back into a traced
function with :meth:`Derivative.as_traced`, so it can be differentiated or
transformed again (``derivatives.py``): a derivative is a function.

Derivatives are taken almost everywhere: the Dirac deltas that sympy returns
for ``sign`` and ``heaviside`` are dropped (they are zero away from a point of
measure zero, and numpy's functions are flat there too).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import sympy
from sympy.core.parameters import distribute, global_parameters

from ..front.trace import Traced

__all__ = ["Block", "Derivative", "differentiate", "nest_numbers", "second_derivative"]


@dataclass(frozen=True, eq=False)
class Block:
    """d output[output] / d argument[arguments[0]] / d argument[arguments[1]] ...

    ``entries`` are its non-zero ``(flat index, expression)`` pairs in
    increasing index order; the flat index runs over ``shape`` (output shape
    followed by each argument's shape) in C order.
    """

    output: int
    arguments: tuple[int, ...]
    shape: tuple[int, ...]
    entries: tuple[tuple[int, sympy.Expr], ...]

    @property
    def argument(self) -> int:
        """The argument of the last differentiation."""
        return self.arguments[-1]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def dense(self) -> np.ndarray:
        """The block as an object array of expressions, zeros included."""
        values = np.full(self.size, sympy.S.Zero, dtype=object)
        for index, expr in self.entries:
            values[index] = expr
        return values.reshape(self.shape)


def nest_numbers(levels: tuple[bool, ...], counts: tuple[int, ...]):
    """Nested tuples of 0, 1, 2, ... in C order: one level per ``counts`` entry,
    a tuple where ``levels`` says so, else the single item itself.

    >>> nest_numbers((True, False), (2, 1))
    (0, 1)
    """
    numbers = iter(range(int(np.prod(counts, dtype=np.int64))))

    def build(depth):
        if depth == len(counts):
            return next(numbers)
        items = tuple(build(depth + 1) for _ in range(counts[depth]))
        return items if levels[depth] else items[0]

    return build(0)


@dataclass(frozen=True, eq=False)
class Derivative:
    """Derivatives of order ``order`` of ``traced`` with respect to ``wrt``.

    ``blocks`` are in C order over (output, wrt, ..., wrt); ``structure``
    nests their numbers the way callers see them, as
    ``torch.autograd.functional.jacobian`` / ``hessian`` do: a tuple level for
    a tuple of outputs and, per differentiation, for a tuple ``wrt``.
    """

    traced: Traced
    wrt: tuple[int, ...]
    blocks: tuple[Block, ...]
    order: int = 1
    wrt_is_tuple: bool = False

    @property
    def nonzeros(self) -> int:
        return sum(len(block.entries) for block in self.blocks)

    @property
    def structure(self):
        levels = (self.traced.output_is_tuple,) + (self.wrt_is_tuple,) * self.order
        return nest_numbers(levels, (len(self.traced.outputs),) + (len(self.wrt),) * self.order)

    def as_traced(self) -> Traced:
        """This derivative as a function of the same arguments whose outputs are
        its blocks (a tuple of them where the caller sees more than one), so it
        can be differentiated, compiled or transformed again like any traced
        function."""
        names = "/".join(self.traced.arguments[j].name for j in self.wrt)
        outputs = tuple(block.dense() for block in self.blocks)
        return Traced(f"d{self.order}_{self.traced.function_name}_d_{names.replace('/', '_')}",
                      self.traced.arguments, outputs, len(outputs) > 1)

    def __str__(self) -> str:
        lines = [f"order-{self.order} derivative of {self.traced.function_name}, {self.nonzeros} non-zeros"]
        for block in self.blocks:
            names = " d ".join(self.traced.arguments[j].name for j in block.arguments)
            lines.append(f"  d output {block.output} / d {names}, shape {block.shape}:")
            lines += [f"    [{index}] = {expr}" for index, expr in block.entries]
        return "\n".join(lines)


def _almost_everywhere(expr: sympy.Expr) -> sympy.Expr:
    if expr.has(sympy.DiracDelta):
        expr = expr.replace(sympy.DiracDelta, lambda *args: sympy.S.Zero)
    return expr


# Piecewise-constant functions: derivative zero almost everywhere.
_FLAT = (sympy.sign, sympy.Heaviside, sympy.floor, sympy.ceiling)
_NONE = frozenset()
# Where numbers are not distributed over sums (second derivatives), a
# number times a sum of at most this many terms still is when that merges
# like terms (see _sum).
_SMALL_SUM = 4


def _plain_factor(expr) -> bool:
    """A factor that ``Mul.flatten`` keeps as it is: a sum, a symbol, or a
    function that is its own base (not ``exp``: ``E**x``)."""
    return expr.is_commutative and (expr.is_Add or expr.is_Symbol or (
        isinstance(expr, sympy.Function) and type(expr).as_base_exp is sympy.Expr.as_base_exp))


def _nonzero_float(number) -> bool:
    return number.is_Float and not number.is_zero  # a Float knows (fast_floats answers it from the number)


def _scaled(number, expr):
    """``sympy.Mul(number, expr)`` in the two cases that second derivatives
    build most, where numbers are not distributed: a weight times a shared
    sum, or times a weighted factor. ``Mul.flatten`` then puts the product of
    the numbers first and the factor after it; here that is done without its
    general machinery (an MLP Hessian builds 2,300 of them; a test holds the
    results to sympy's). None in every other case: the caller asks sympy."""
    if global_parameters.distribute or not _nonzero_float(number):
        return None
    if expr.is_Add and expr.is_commutative:
        return _product(number, expr)
    if expr.is_Mul and len(expr.args) == 2 and expr.args[0].is_Number and _plain_factor(expr.args[1]):
        coeff = number * expr.args[0]  # as flatten multiplies them
        if _nonzero_float(coeff):
            return _product(coeff, expr.args[1])
    return None


def _product(coeff, factor):
    return sympy.Mul._exec_constructor_postprocessors(sympy.Mul._from_args((coeff, factor), True))


def _scaled_sum(term):
    """(number, sum) when ``term`` is a number times a small sum, else None."""
    if term.is_Mul and len(term.args) == 2 and term.args[0].is_Number and term.args[1].is_Add \
            and len(term.args[1].args) <= _SMALL_SUM:
        return term.args
    return None


def _sum(terms):
    """The sum of ``terms``. When sympy does not distribute numbers over
    sums (``distribute(False)``, see :func:`second_derivative`), a number
    times a small sum is still opened up where one of its terms merges with
    another term of this sum (Rosenbrock's ``800 x^2 - 400 (x1 - x^2)``
    becomes ``1200 x^2 - 400 x1``); otherwise it stays whole, shared."""
    total = sympy.Add(*terms)
    if global_parameters.distribute or not total.is_Add:
        return total
    scaled = {term: _scaled_sum(term) for term in total.args}
    if not any(scaled.values()):
        return total
    cores = {term.as_coeff_Mul()[1] for term in total.args if not scaled[term]}
    opened = []
    for term in total.args:
        pair = scaled[term]
        if pair and any(inner.as_coeff_Mul()[1] in cores for inner in pair[1].args):
            opened += [pair[0] * inner for inner in pair[1].args]
        else:
            opened.append(term)
    return sympy.Add(*opened) if len(opened) != len(total.args) else total


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
        if not node.args:  # a leaf: not memoised (hashing a sympy Float costs more than this)
            return self._wanted & {node} if node.is_Symbol else _NONE
        found = self._symbols.get(node)
        if found is None:
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
            return _sum([d(arg, symbol) for arg in node.args])
        if node.is_Mul:
            args = node.args
            if len(args) == 2 and args[0].is_Number:  # a number times one factor: the most common product
                factor = d(args[1], symbol)
                if factor is sympy.S.Zero:
                    return factor
                product = _scaled(args[0], factor)
                return _sum([sympy.Mul(args[0], factor) if product is None else product])
            terms = []
            for i, arg in enumerate(args):
                factor = d(arg, symbol)
                if factor is not sympy.S.Zero:
                    terms.append(sympy.Mul(*args[:i], factor, *args[i + 1:]))
            return _sum(terms)
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
            from .reverse import _almost_everywhere as _drop_deltas, _find

            # Partials are searched for Derivative and DiracDelta without looking
            # inside the node's own arguments (known to hold neither: their
            # derivatives are built here): those can be whole subtrees, and a
            # tree walk (``expr.has``) of a max-tree's partials is quadratic.
            own = set(node.args)
            own.add(node)
            terms = []
            for number, arg in enumerate(node.args, start=1):
                inner = d(arg, symbol)
                if inner is sympy.S.Zero:
                    continue
                try:
                    outer = node.fdiff(number)
                except sympy.core.function.ArgumentIndexError:  # no formula: sympy's diff leaves a Derivative
                    break
                if _find(outer, (sympy.Derivative, sympy.Subs), own):
                    break
                outer = _drop_deltas(outer, own)
                product = _scaled(inner, outer)
                terms.append(outer * inner if product is None else product)
            else:
                return _sum(terms)
        return _almost_everywhere(node.diff(symbol))


class _DeepRecursion:
    """Deep expression trees recurse deeply: raise the limit for a while."""

    def __enter__(self):
        self._limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(self._limit, 20_000))

    def __exit__(self, *exc):
        sys.setrecursionlimit(self._limit)


def differentiate(traced: Traced, wrt: tuple[int, ...], wrt_is_tuple: bool = False) -> Derivative:
    """Differentiate every output of ``traced`` with respect to the ``wrt`` arguments."""
    position = {}  # symbol -> (argument index, flat index)
    for number in wrt:
        for flat, symbol in enumerate(traced.arguments[number].symbols.flat):
            position[symbol] = (number, flat)
    d = _Differentiator(position)
    blocks = []
    with _DeepRecursion():
        for out_number, output in enumerate(traced.outputs):
            found = {number: [] for number in wrt}
            for out_flat, expr in enumerate(output.flat):
                for symbol in d.symbols(expr):
                    number, in_flat = position[symbol]
                    derivative = d(expr, symbol)
                    if derivative != 0:
                        in_size = traced.arguments[number].size
                        found[number].append((out_flat * in_size + in_flat, derivative))
            blocks += [
                Block(out_number, (number,), output.shape + traced.arguments[number].shape,
                      tuple(sorted(found[number], key=lambda entry: entry[0])))
                for number in wrt
            ]
    return Derivative(traced, tuple(wrt), tuple(blocks), 1, bool(wrt_is_tuple))


def _first_derivatives(traced: Traced, output: np.ndarray, symbols: list, d: _Differentiator) -> list[list]:
    """Per output entry, its derivative in every symbol (zeros included).

    A scalar output goes through one reverse sweep (``reverse.py``): its
    gradient costs a small multiple of the function, whatever the number of
    inputs. Larger outputs are differentiated forward, entry by entry, in
    the symbols each entry contains."""
    if output.size == 1:
        from .reverse import vjp_expressions

        return [vjp_expressions([output.flat[0]], [sympy.S.One], symbols)]
    rows = []
    for expr in output.flat:
        rows.append([d(expr, symbol) for symbol in symbols])
    return rows


def second_derivative(traced: Traced, wrt: tuple[int, ...], wrt_is_tuple: bool = False) -> Derivative:
    """Second derivatives of every output with respect to the ``wrt`` arguments.

    Symmetry is used, not just reported: over the concatenated ``wrt``
    symbols, only the lower triangle (row >= col) is differentiated; each
    entry above the diagonal is the same expression as its mirror, so a
    kernel computes it once.

    Numbers are not distributed over sums here (sympy's ``2*(a + b)`` ->
    ``2*a + 2*b``): a gradient entry is a sum of shared adjoints scaled by
    constants (an MLP's weights), and distributing each product rule's
    factors copies those sums into every term, a tree of millions of
    operations (10 s for an 8 -> 16 -> 8 MLP, 0.6 s without)."""
    symbols = [symbol for number in wrt for symbol in traced.arguments[number].symbols.flat]
    index = {symbol: k for k, symbol in enumerate(symbols)}
    owner = [(number, flat) for number in wrt for flat in range(traced.arguments[number].size)]
    d = _Differentiator(index)
    blocks = []
    with _DeepRecursion(), distribute(False):
        for out_number, output in enumerate(traced.outputs):
            found = {(a, b): [] for a in wrt for b in wrt}
            for out_flat, gradient in enumerate(_first_derivatives(traced, output, symbols, d)):
                for row, first in enumerate(gradient):
                    a, r = owner[row]
                    for symbol in d.symbols(first):
                        column = index[symbol]
                        if column > row:
                            continue
                        second = d(first, symbol)
                        if second == 0:
                            continue
                        b, c = owner[column]
                        size_a, size_b = traced.arguments[a].size, traced.arguments[b].size
                        found[(a, b)].append(((out_flat * size_a + r) * size_b + c, second))
                        if column != row:
                            found[(b, a)].append(((out_flat * size_b + c) * size_a + r, second))
            for a in wrt:
                for b in wrt:
                    shape = output.shape + traced.arguments[a].shape + traced.arguments[b].shape
                    blocks.append(Block(out_number, (a, b), shape, tuple(sorted(found[(a, b)], key=lambda e: e[0]))))
    return Derivative(traced, tuple(wrt), tuple(blocks), 2, bool(wrt_is_tuple))
