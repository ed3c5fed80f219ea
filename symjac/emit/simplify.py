"""Stage 3 — simplify: one straight-line program per kernel.

Takes a :class:`~symjac.derive.diff.Derivative` and a kernel kind (``kinds.py`` says
which entries the kind writes); produces a :class:`Program`, consumed by
``render.py``. Common subexpressions are eliminated over all the non-zero
entries a kernel writes at once (the Jacobian entries, the function values,
or both for ``function_and_jacobian``), so shared work is done once per
point. Structural zeros are never part of a program: programs compute only
non-zero entries, and the rendered drivers fill the zeros of dense rows.

Two clean-ups follow elimination: temporaries that cost nothing (``-u[1]``)
are substituted back, and every non-trivial base of a small integer power
gets a temporary, so each libm call is evaluated once per point. Programs too
large for one C function are cut into chunks here too (:func:`chunk`): the
transformations of a program live next to it; ``render`` only prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import sympy

from ..derive.diff import Derivative
from ..derive.kinds import KernelSpec, Packing, kernel_spec
from .printing import MAX_PRODUCT_POWER

__all__ = ["Buffer", "Chunks", "Program", "chunk", "count_operations", "needs_chunks", "simplify", "simplify_spec"]



@dataclass(frozen=True)
class Buffer:
    """One output array of a kernel and the flat indices of the entries it computes."""

    name: str  # identifier in generated code, e.g. "_f0" or "_jac0_1"
    shape: tuple[int, ...]
    positions: tuple[int, ...]  # flat (C-order) index of each computed entry, increasing

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True, eq=False)
class Program:
    """Temporaries, then assignments ``buffers[b][flat index] = expr``."""

    kind: str
    buffers: tuple[Buffer, ...]
    temporaries: tuple[tuple[sympy.Symbol, sympy.Expr], ...]
    results: tuple[tuple[int, int, sympy.Expr], ...]  # (buffer number, flat index, expr)
    structure: object = 0  # how callers see the buffers (see kinds.py)
    packing: Packing | None = None
    mirrors: tuple[tuple[int, int, int, int], ...] = ()  # copies the dense drivers make (see kinds.KernelSpec)

    def __str__(self) -> str:
        lines = [f"program {self.kind}: {len(self.temporaries)} temporaries, {len(self.results)} results"]
        lines += [f"  {symbol} = {expr}" for symbol, expr in self.temporaries]
        lines += [f"  {self.buffers[b].name}[{index}] = {expr}" for b, index, expr in self.results]
        return "\n".join(lines)

    @cached_property  # asked for by several stages; a frozen dataclass may cache in its __dict__
    def operations(self) -> int:
        return count_operations([e for _, e in self.temporaries] + [e for _, _, e in self.results])


def count_operations(exprs, call_cost: int = 1, sizes: dict | None = None) -> int:
    """Operations needed to evaluate ``exprs`` as written, without sharing.

    An n-ary Add or Mul counts n - 1, a function call or a power that is not
    a small integer one (a libm call) ``call_cost``, every other operation
    one. Sizes of repeated subtrees are memoised (in ``sizes``, which calls
    with the same ``call_cost`` may share), so counting an expression whose
    tree is exponentially larger than its DAG stays cheap. Leaves are not
    memoised: hashing a sympy Float costs more than recognising it.
    """
    sizes = {} if sizes is None else sizes

    def size(node) -> int:
        if not node.args or node.is_Atom:
            return 0
        known = sizes.get(node)
        if known is not None:
            return known
        own = call_cost if _calls_libm(node) else len(node.args) - 1 if node.is_Add or node.is_Mul else 1
        result = own + sum(size(arg) for arg in node.args)
        sizes[node] = result
        return result

    return sum(size(expr) for expr in exprs)


def _calls_libm(node) -> bool:
    """A function call, or a power that prints as ``pow()`` (not as products)."""
    if node.is_Pow:
        return not (node.exp.is_Integer and abs(int(node.exp)) <= MAX_PRODUCT_POWER)
    return isinstance(node, sympy.Function) and not node.is_Piecewise


# Up to this many distinct subexpressions, sympy's own cse runs: it also
# factors common arguments out of sums and products (10-30 % fewer operations)
# but its cost grows fast (8.6 s for the 4,000-state Brusselator, where the
# one-pass elimination below takes 0.6 s).
FULL_CSE_NODES = 8_000


def eliminate_common_subexpressions(exprs, full: bool = True):
    """``(temporaries, reduced)``: every non-trivial subexpression occurring
    more than once across ``exprs`` is computed once, into ``_t<k>``.

    Small programs go through ``sympy.cse`` when ``full`` (see :data:`FULL_CSE_NODES`).
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
    if full and len(order) <= FULL_CSE_NODES:
        return sympy.cse(exprs, symbols=sympy.numbered_symbols("_t", real=True), optimizations=None, order="none")
    repeated = {node for node in order if counts[node] > 1 and isinstance(node, sympy.Expr)
                and not (node.is_Mul and len(node.args) == 2 and node.args[0] is sympy.S.NegativeOne
                         and not node.args[1].args)}
    names = sympy.numbered_symbols("_t", real=True)
    rebuilt: dict = {}
    temporaries = []
    for node in order:  # children first, so arguments are rebuilt already
        args = [rebuilt.get(arg, arg) for arg in node.args]
        if all(a is b for a, b in zip(args, node.args)):
            new = node
        elif node.is_Add or node.is_Mul:
            # The arguments of a canonical node, some now distinct symbols:
            # nothing to merge, and re-evaluating (sorting, assumptions) costs
            # more than the rest of the elimination.
            new = node.func._from_args(args, node.is_commutative)
        elif node.is_Pow:
            new = node.func(*args, evaluate=False)
        else:
            new = node.func(*args)
        if node in repeated:
            symbol = next(names)
            temporaries.append((symbol, new))
            new = symbol
        rebuilt[node] = new
    return temporaries, [rebuilt.get(expr, expr) for expr in exprs]


def _inline_trivial(temporaries, results):
    """Substitute temporaries that cost nothing (``_t0 = -u[1]``, a bare
    symbol or number): sympy's cse leaves some, and they only add lines."""
    replace, kept = {}, []
    for symbol, expr in temporaries:
        expr = expr.xreplace(replace) if replace else expr
        if expr.is_Atom or (expr.is_Mul and len(expr.args) == 2 and expr.args[0] is sympy.S.NegativeOne
                            and expr.args[1].is_Atom):
            replace[symbol] = expr
        else:
            kept.append((symbol, expr))
    if replace:
        results = [(b, flat, expr.xreplace(replace)) for b, flat, expr in results]
    return kept, results


def _is_small_power(node) -> bool:
    """Powers the printers expand into products (see printing.CPrinter)."""
    return node.is_Pow and node.exp.is_Integer and 2 <= abs(int(node.exp)) <= MAX_PRODUCT_POWER


def _hoist_power_bases(temporaries, results, first: int):
    """Give each non-trivial base of a small integer power its own temporary.

    ``tanh(a)**2`` prints as ``tanh(a)*tanh(a)``; C compilers cannot merge the
    two calls (libm may set errno), so the base becomes a temporary computed
    once, named ``_t<first>``, ``_t<first + 1>``, ... and placed right before
    its first use. Rewrites are memoised per node: the work is linear in the
    size of the expression DAG."""
    names = iter(sympy.numbered_symbols("_t", start=first, real=True))
    hoisted: dict = {}
    rewritten: dict = {}
    statements = []

    def rewrite(expr):
        new_temporaries = []

        def visit(node):
            if not node.args or node.is_Atom:
                return node
            known = rewritten.get(node)
            if known is not None:
                return known
            args = [visit(arg) for arg in node.args]
            rebuilt = node if all(a is b for a, b in zip(args, node.args)) else node.func(*args)
            if _is_small_power(rebuilt) and not rebuilt.base.is_Atom:
                base = rebuilt.base
                symbol = hoisted.get(base)
                if symbol is None:
                    symbol = hoisted[base] = next(names)
                    new_temporaries.append((symbol, base))
                rebuilt = sympy.Pow(symbol, rebuilt.exp, evaluate=False)
            rewritten[node] = rebuilt
            return rebuilt

        return visit(expr), new_temporaries

    for symbol, expr in temporaries:
        expr, new = rewrite(expr)
        statements += new + [(symbol, expr)]
    new_results = []
    for b, flat, expr in results:
        expr, new = rewrite(expr)
        statements += new
        new_results.append((b, flat, expr))
    return statements, new_results


def simplify_spec(spec: KernelSpec, full_cse: bool = True) -> Program:
    """Build the straight-line program for one kernel from its spec.

    ``full_cse=False`` always takes the one-pass exact elimination: reverse
    mode's output holds long chained products that sympy's cse re-evaluates
    level by level (quadratic or worse; 333 s for a 200-deep chain)."""
    buffers = tuple(Buffer(output.name, output.shape, tuple(flat for flat, _ in output.entries))
                    for output in spec.outputs)
    targets = [(b, flat) for b, output in enumerate(spec.outputs) for flat, _ in output.entries]
    exprs = [expr for output in spec.outputs for _, expr in output.entries]
    temporaries, reduced = eliminate_common_subexpressions(exprs, full=full_cse)
    results = [(b, flat, expr) for (b, flat), expr in zip(targets, reduced)]
    count = len(temporaries)  # CSE named them _t0 ... _t<count - 1>
    temporaries, results = _hoist_power_bases(*_inline_trivial(temporaries, results), count)
    return Program(spec.kind, buffers, tuple(temporaries), tuple(results), spec.structure, spec.packing,
                   spec.mirrors)


def simplify(derivative: Derivative, kind: str = "jacobian") -> Program:
    """Build the straight-line program for one kernel ``kind`` (see ``kinds.py``).

    Derivatives that went through reverse mode (gradients, vjp, Hessians: not
    order 1) use the linear-time elimination at every size."""
    return simplify_spec(kernel_spec(derivative, kind), full_cse=derivative.order == 1)


# --------------------------------------------------------------------------
# chunking: large programs become several C functions in several files

CHUNK_THRESHOLD = 1_500  # statements: larger programs are split into chunks
# or operations. gcc's time on one straight-line function grows faster than
# its length (register allocation over a body of SIMD lanes dominates):
# Lennard-Jones' 24x24 Hessian (3,071 operations) compiles in 1.3 s of CPU
# at -O3 as one function, 0.9 s as two chunk functions at -O1, and
# evaluates as fast (benchmarks/hessians.py, one run, load 1.4).
CHUNK_THRESHOLD_OPERATIONS = 2_000
CHUNK_STATEMENTS = 200  # at most this many statements per chunk function
CHUNK_OPERATIONS = 2_000  # and about this many operations
CHUNKS_PER_FILE = 15  # chunk functions per C file (files compile in parallel)
# Chunk files: a power of two of them (so that they share the cores of
# common machines evenly), at least MIN_FILES, about FILE_OPERATIONS
# operations each, at most MAX_FILES. Each file costs gcc about 0.03 s
# before its first statement, and the main file (the drivers) compiles
# alongside them. On 2 cores (benchmarks/hessians.py, cold builds):
# Lennard-Jones' Hessian (3,071 operations) builds in 0.95 s in 2 files,
# 1.3 s in one; an MLP's (8,716) compiles in 0.79 s in 2, 0.90 s in 4.
FILE_OPERATIONS = 5_000
MIN_FILES = 2
MAX_FILES = 16


@dataclass(frozen=True, eq=False)
class Chunks:
    """A program cut into runs of statements, one C function each, and the
    runs grouped into C files (``files``: consecutive run numbers per file).

    Statements are ``("temporary", symbol, expr)`` or ``("result", b, flat,
    expr)``. A temporary used only in the run that defines it stays local; one
    used in a later run lives in the per-thread scratch array, at ``slots[symbol]``.
    """

    runs: tuple[tuple[tuple, ...], ...]
    slots: dict
    files: tuple[range, ...]


def _group_files(weights: list[int]) -> tuple[range, ...]:
    """Consecutive runs (operation counts ``weights``) in files of about equal
    weight: a power of two of them, at least MIN_FILES (while there are as
    many runs), of about FILE_OPERATIONS operations each (at most MAX_FILES
    of them) and at most CHUNKS_PER_FILE runs each."""
    wanted = max(MIN_FILES, min(-(-sum(weights) // FILE_OPERATIONS), MAX_FILES), -(-len(weights) // CHUNKS_PER_FILE))
    count = 1
    while count < wanted:
        count *= 2
    count = min(count, len(weights))
    total, files, start, done = sum(weights), [], 0, 0
    for number, weight in enumerate(weights):
        if number > start and len(files) < count - 1:
            target = total * (len(files) + 1) / count  # where this file should end
            rest = len(weights) - number <= count - 1 - len(files)  # each later file needs a run
            if rest or number - start >= CHUNKS_PER_FILE or done + weight - target > target - done:
                files.append(range(start, number))
                start = number
        done += weight
    files.append(range(start, len(weights)))
    return tuple(files)


def needs_chunks(program: Program) -> bool:
    statements = len(program.temporaries) + len(program.results)
    return statements > CHUNK_THRESHOLD or (statements > 1 and program.operations > CHUNK_THRESHOLD_OPERATIONS)


def chunk(program: Program) -> Chunks:
    """Cut ``program`` into runs of at most ``CHUNK_STATEMENTS`` statements and
    about ``CHUNK_OPERATIONS`` operations, so the compiler's time and memory
    grow linearly and files compile in parallel."""
    statements = [("temporary", symbol, expr) for symbol, expr in program.temporaries]
    statements += [("result", b, flat, expr) for b, flat, expr in program.results]
    runs, weights, run, weight, sizes = [], [], [], 0, {}
    for statement in statements:
        cost = 1 + count_operations([statement[-1]], sizes=sizes)
        if run and (len(run) >= CHUNK_STATEMENTS or weight + cost > CHUNK_OPERATIONS):
            runs.append(tuple(run))
            weights.append(weight)
            run, weight = [], 0
        run.append(statement)
        weight += cost
    runs.append(tuple(run))
    weights.append(weight)
    defined_in = {statement[1]: number for number, run in enumerate(runs)
                  for statement in run if statement[0] == "temporary"}
    order = {symbol: k for k, (symbol, _) in enumerate(program.temporaries)}
    shared = {symbol for number, run in enumerate(runs) for statement in run
              for symbol in statement[-1].free_symbols if defined_in.get(symbol, number) != number}
    slots = {symbol: k for k, symbol in enumerate(sorted(shared, key=order.__getitem__))}
    return Chunks(tuple(runs), slots, _group_files(weights))
