"""Kernel kinds: the one registry that says what each kind of kernel writes.

A kernel kind turns a :class:`~symjac.derive.diff.Derivative` into a
:class:`KernelSpec`: the output buffers it fills (shape and non-zero entries),
how the caller sees them nested (``structure``: nested tuples of buffer
numbers, any depth) and, for kinds with sparse results, a :class:`Packing`:
where each entry lands in the packed non-zero values. ``simplify`` turns a
spec into a program, ``render`` emits one dense driver per kind plus a packed
driver (named ``KIND_values``) where there is a packing, and the call
convention, the runtime and the codegen command read the layouts from the
generated module. Adding a kind is one :data:`KINDS` entry.

    kind                    writes                                     packed
    function                the traced outputs                         -
    jacobian                d output_i / d wrt_j blocks                jacobian_values: each block's non-zeros
    function_and_jacobian   both, sharing subexpressions               -
    hessian                 d2 output_i / d wrt_j d wrt_k blocks       hessian_values: lower triangle
                            (computes the lower triangle; the upper    (row >= col) over the concatenated wrt
                            is mirrored by the dense driver)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy

from .diff import Derivative, nest_numbers

__all__ = ["KINDS", "KernelKind", "KernelSpec", "Output", "Packing", "kernel_spec", "shift"]


@dataclass(frozen=True, eq=False)
class Output:
    """One buffer a kernel fills: its shape and non-zero (flat index, expr) entries."""

    name: str  # identifier in generated code, e.g. "_f0", "_jac0_1" or "_hess0_1_1"
    shape: tuple[int, ...]
    entries: tuple[tuple[int, sympy.Expr], ...]


@dataclass(frozen=True)
class Packing:
    """The packed layout of a kernel's results: only the structural non-zeros.

    Packed buffer ``p`` holds ``len(nonzeros[p])`` values: entry ``k`` is the
    element at flat index ``nonzeros[p][k]`` of an array of ``full_shapes[p]``,
    which reads as a matrix of ``sparse_shapes[p]`` (rows, cols). Entry ``e``
    of the kernel's buffer ``b`` goes to packed buffer ``targets[b][0]`` at
    ``targets[b][1][e]``.
    """

    nonzeros: tuple[tuple[int, ...], ...]
    full_shapes: tuple[tuple[int, ...], ...]
    sparse_shapes: tuple[tuple[int, int], ...]
    targets: tuple[tuple[int, tuple[int, ...]], ...]
    structure: object


@dataclass(frozen=True, eq=False)
class KernelSpec:
    """What one kernel computes: ``kind``, its buffers and how callers see them."""

    kind: str
    outputs: tuple[Output, ...]
    structure: object
    packing: Packing | None = None
    # Entries not computed because they equal another by symmetry: (buffer,
    # flat index, source buffer, source flat index). Dense drivers copy them;
    # a packing holds only the computed entries.
    mirrors: tuple[tuple[int, int, int, int], ...] = ()


@dataclass(frozen=True)
class KernelKind:
    """A registry entry: the kind's name, one line of docs, and its builder."""

    name: str
    docs: str
    build: Callable[[Derivative], KernelSpec]
    packed_docs: str = ""  # docs of the packed variant, for kinds with a packing

    @property
    def packed_name(self) -> str:
        return f"{self.name}_values"


def shift(structure, by: int):
    """``structure`` with every buffer number increased by ``by``."""
    if isinstance(structure, tuple):
        return tuple(shift(item, by) for item in structure)
    return structure + by


def _size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _function(derivative: Derivative) -> KernelSpec:
    traced = derivative.traced
    outputs = tuple(
        Output(f"_f{number}", output.shape, tuple((flat, e) for flat, e in enumerate(output.flat) if e != 0))
        for number, output in enumerate(traced.outputs))
    structure = nest_numbers((traced.output_is_tuple,), (len(outputs),))
    return KernelSpec("function", outputs, structure)


def _blocks(derivative: Derivative) -> tuple[Output, ...]:
    prefix = {1: "_jac", 2: "_hess"}.get(derivative.order, f"_d{derivative.order}_")
    return tuple(Output(prefix + "_".join(map(str, (block.output, *block.arguments))), block.shape, block.entries)
                 for block in derivative.blocks)


def _jacobian(derivative: Derivative) -> KernelSpec:
    outputs = _blocks(derivative)
    arguments = derivative.traced.arguments
    packing = Packing(
        nonzeros=tuple(tuple(flat for flat, _ in output.entries) for output in outputs),
        full_shapes=tuple(output.shape for output in outputs),
        sparse_shapes=tuple((_size(output.shape) // arguments[block.argument].size, arguments[block.argument].size)
                            for output, block in zip(outputs, derivative.blocks)),
        targets=tuple((b, tuple(range(len(output.entries)))) for b, output in enumerate(outputs)),
        structure=derivative.structure,
    )
    return KernelSpec("jacobian", outputs, derivative.structure, packing)


def _function_and_jacobian(derivative: Derivative) -> KernelSpec:
    function, jacobian = _function(derivative), _jacobian(derivative)
    return KernelSpec("function_and_jacobian", function.outputs + jacobian.outputs,
                      (function.structure, shift(jacobian.structure, len(function.outputs))))


def _hessian(derivative: Derivative) -> KernelSpec:
    """Blocks H[i][j][k]; packed: per output, the lower triangle (row >= col)
    of the Hessian over the concatenated ``wrt`` arguments, row by row: the
    layout of cyipopt's ``hessianstructure()`` for a scalar objective.

    The kernel computes the lower triangle only; each entry above the
    diagonal is a :attr:`KernelSpec.mirrors` copy of its mirror image, made
    by the dense drivers (the packed layout holds the lower triangle alone)."""
    if derivative.order != 2:
        raise ValueError("the hessian kind needs a second derivative")
    traced = derivative.traced
    sizes = [traced.arguments[j].size for j in derivative.wrt]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    total = int(offsets[-1])
    blocks = _blocks(derivative)
    coordinates = []  # per block and entry: (output flat index, global row, global col)
    for block in derivative.blocks:
        a, b = (derivative.wrt.index(j) for j in block.arguments)
        flats = np.array([flat for flat, _ in block.entries], dtype=np.int64)
        out_flat, rest = np.divmod(flats, sizes[a] * sizes[b])
        row, col = np.divmod(rest, sizes[b])
        coordinates.append((out_flat.tolist(), (row + offsets[a]).tolist(), (col + offsets[b]).tolist()))
    computed = {}  # (output, output flat index, row, col), row >= col -> (block number, flat index in the block)
    for number, (block, (out_flats, rows, cols)) in enumerate(zip(derivative.blocks, coordinates)):
        for (flat, _), out_flat, row, col in zip(block.entries, out_flats, rows, cols):
            if row >= col:
                computed[(block.output, out_flat, row, col)] = (number, flat)
    outputs, mirrors = [], []
    for number, (output, block, (out_flats, rows, cols)) in enumerate(zip(blocks, derivative.blocks, coordinates)):
        entries = []
        for entry, out_flat, row, col in zip(output.entries, out_flats, rows, cols):
            if row >= col:
                entries.append(entry)
            else:
                mirrors.append((number, entry[0], *computed[(block.output, out_flat, col, row)]))
        outputs.append(Output(output.name, output.shape, tuple(entries)))
    lower = {}  # output number -> sorted flat indices over output shape + (total, total)
    flat_of = []  # per block: the packed flat index of each computed entry
    for block, (out_flats, rows, cols) in zip(derivative.blocks, coordinates):
        flats = [(out_flat * total + row) * total + col for out_flat, row, col in zip(out_flats, rows, cols)
                 if row >= col]
        lower.setdefault(block.output, set()).update(flats)
        flat_of.append(flats)
    nonzeros = tuple(tuple(sorted(lower.get(o, ()))) for o in range(len(traced.outputs)))
    slot_of = [{flat: k for k, flat in enumerate(indices)} for indices in nonzeros]
    packing = Packing(
        nonzeros=nonzeros,
        full_shapes=tuple(output.shape + (total, total) for output in traced.outputs),
        sparse_shapes=tuple((_size(output.shape) * total, total) for output in traced.outputs),
        targets=tuple((block.output, tuple(slot_of[block.output][flat] for flat in flats))
                      for block, flats in zip(derivative.blocks, flat_of)),
        structure=nest_numbers((traced.output_is_tuple,), (len(traced.outputs),)),
    )
    return KernelSpec("hessian", tuple(outputs), derivative.structure, packing, tuple(mirrors))


KINDS: dict[str, KernelKind] = {kind.name: kind for kind in (
    KernelKind("function", "Function: writes the non-zero entries of every output.", _function),
    KernelKind("jacobian", "Jacobian: writes the non-zero entries of every block d output / d argument.", _jacobian,
               "Packed Jacobian: the non-zero values of every block, in NONZEROS order."),
    KernelKind("function_and_jacobian", "Function and Jacobian in one pass, sharing subexpressions.",
               _function_and_jacobian),
    KernelKind("hessian", "Hessian: every block d2 output / d argument d argument, each symmetric pair computed once.",
               _hessian, "Packed Hessian: per output, the lower triangle (row >= col), in NONZEROS order."),
)}


def kernel_spec(derivative: Derivative, kind: str) -> KernelSpec:
    """The :class:`KernelSpec` of ``kind`` for ``derivative``."""
    try:
        entry = KINDS[kind]
    except KeyError:
        raise ValueError(f"kind must be one of {tuple(KINDS)}, got {kind!r}") from None
    return entry.build(derivative)
